//! GitOps use: byte-stable builds, `--check`, the shrink guard, `diff`, the config file and
//! custom templates. A build folder must change only when the list does, visibly.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use crate::support::{fixture, run, stderr, stdout};

/// Every file in `dir` with its bytes, those of subfolders (`lists/`) as `lists/NAME`, to
/// prove a failed run changed nothing.
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_dir() {
            for (inner, bytes) in contents(&e.path()) {
                out.insert(format!("{name}/{inner}"), bytes);
            }
        } else {
            out.insert(name, fs::read(e.path()).unwrap());
        }
    }
    out
}

fn build(input: &Path, dir: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "build",
        "-i",
        input.to_str().unwrap(),
        "--out-dir",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(&args, None)
}

/// The seed with one more IP: a small, realistic change.
fn seed_plus_one(dir: &Path) -> std::path::PathBuf {
    let mut doc: serde_json::Value =
        serde_json::from_slice(&fs::read(fixture("seed.json")).unwrap()).unwrap();
    doc["ip_list"].as_array_mut().unwrap().push(serde_json::json!({
        "ip": "101.51.100.7", "protocol": "TCP", "port": [443], "is_necessary": 1, "description": "new node"
    }));
    let path = dir.join("next.json");
    fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
    path
}

#[test]
fn headers_carry_version_and_digest_of_source_json() {
    let dir = tempfile::tempdir().unwrap();
    assert!(build(&fixture("rich.json"), dir.path(), &[])
        .status
        .success());
    let files = contents(dir.path());
    let source = String::from_utf8(files["source.json"].clone()).unwrap();
    use sha2::Digest;
    let digest: String = sha2::Sha256::digest(source.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    for (name, bytes) in &files {
        if name == "source.json" || name.starts_with("lists/") {
            continue;
        }
        let text = String::from_utf8_lossy(bytes);
        let head: String = text.lines().take(4).collect::<Vec<_>>().join("\n");
        assert!(head.contains(&format!("sha256:{digest}")), "{name}: {head}");
        assert!(
            head.contains(concat!("wecom-allowlist ", env!("CARGO_PKG_VERSION"))),
            "{name}: {head}"
        );
    }
    // The plain lists hold nothing but values: their index cites the digest and version.
    let index: serde_json::Value = serde_json::from_slice(&files["lists/index.json"]).unwrap();
    assert_eq!(index["digest"], format!("sha256:{digest}"));
    assert_eq!(index["version"], env!("CARGO_PKG_VERSION"));
    // source.json is itself an input: building from it gives the same files.
    let again = tempfile::tempdir().unwrap();
    assert!(build(&dir.path().join("source.json"), again.path(), &[])
        .status
        .success());
    assert_eq!(contents(again.path()), files);
}

#[test]
fn check_reports_nothing_when_up_to_date_and_the_diff_when_not() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let seed = fixture("seed.json");
    let first = build(&seed, &out, &["--check"]);
    assert_eq!(
        first.status.code(),
        Some(1),
        "a missing folder is out of date"
    );
    assert!(!out.exists(), "--check wrote something");

    assert!(build(&seed, &out, &[]).status.success());
    let before = contents(&out);
    let same = build(&seed, &out, &["--check"]);
    assert_eq!(same.status.code(), Some(0), "{}", stderr(&same));
    assert!(same.stdout.is_empty());

    let next = seed_plus_one(dir.path());
    let changed = build(&next, &out, &["--check"]);
    assert_eq!(changed.status.code(), Some(1), "{}", stderr(&changed));
    let report = stdout(&changed);
    assert!(
        report.contains(&format!("+++ b/{}", out.join("iptables.rules").display())),
        "{report}"
    );
    assert!(
        report.contains("+-A WECOM_ALLOW -d 101.51.100.7/32 -p tcp -m tcp --dport 443"),
        "{report}"
    );
    assert!(
        report.contains("+ ip 101.51.100.7/32: tcp 443 (necessary)\n1 added, 0 removed, 0 changed"),
        "{report}"
    );
    assert_eq!(contents(&out), before, "--check wrote something");

    assert!(build(&next, &out, &[]).status.success());
    assert_eq!(build(&next, &out, &["--check"]).status.code(), Some(0));
}

#[test]
fn failed_builds_leave_every_file_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    assert!(build(&fixture("v6_udp.json"), &out, &[]).status.success());
    let before = contents(&out);

    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        fs::write(&p, text).unwrap();
        p
    };
    let broken = write("broken.json", "{\"errcode\":0,\"ip_list\":[");
    let empty = write(
        "empty.json",
        r#"{"errcode":0,"ip_list":[],"domain_list":[]}"#,
    );
    let api_error = write(
        "error.json",
        r#"{"errcode":60020,"errmsg":"from ip: 192.0.2.1, x"}"#,
    );
    // Keeps 1 of the 47 destinations: far past the default 50 %.
    let shrunk = write(
        "shrunk.json",
        r#"{"ip_list":[{"ip":"2402:4e00::/32","protocol":"TCP","port":[443],"is_necessary":1}]}"#,
    );
    for (input, code, message) in [
        (&broken, 2, "not valid JSON"),
        (&empty, 4, "the list has no entries"),
        (&api_error, 3, "60020"),
        (&shrunk, 4, "--max-shrink 50%"),
    ] {
        for check in [false, true] {
            let extra: &[&str] = if check { &["--check"] } else { &[] };
            let res = build(input, &out, extra);
            assert_eq!(
                res.status.code(),
                Some(code),
                "{}: {}",
                input.display(),
                stderr(&res)
            );
            assert!(stderr(&res).contains(message), "{}", stderr(&res));
            assert!(res.stdout.is_empty());
            assert_eq!(
                contents(&out),
                before,
                "{} changed the folder",
                input.display()
            );
        }
    }
    let res = build(&shrunk, &out, &[]);
    assert!(
        stderr(&res).contains("101.0.113.3/32 (tcp 443), 101.0.113.6/32 (tcp 443)"),
        "the guard names what would go: {}",
        stderr(&res)
    );
    let res = build(&shrunk, &out, &["--max-shrink", "100"]);
    assert!(res.status.success(), "{}", stderr(&res));
    assert_ne!(contents(&out), before);
}

#[test]
fn an_unwritable_folder_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    fs::write(&file, "x").unwrap();
    for out in [file.join("out"), file.clone()] {
        let res = build(&fixture("seed.json"), &out, &[]);
        assert_eq!(res.status.code(), Some(2), "{}", stderr(&res));
        assert!(stderr(&res).contains("cannot write"), "{}", stderr(&res));
        assert!(res.stdout.is_empty());
    }
    assert_eq!(fs::read(&file).unwrap(), b"x");
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "temporary files left behind"
    );
}

#[test]
fn diff_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let seed = fixture("seed.json");
    let next = seed_plus_one(dir.path());
    let (s, n) = (seed.to_str().unwrap(), next.to_str().unwrap());

    let same = run(&["diff", s, s], None);
    assert_eq!(same.status.code(), Some(0));
    assert_eq!(stdout(&same), "0 added, 0 removed, 0 changed\n");

    let text = run(&["diff", s, n], None);
    assert_eq!(text.status.code(), Some(1));
    assert_eq!(
        stdout(&text),
        "+ ip 101.51.100.7/32: tcp 443 (necessary)\n1 added, 0 removed, 0 changed\n"
    );

    let md = stdout(&run(&["diff", n, s, "--format", "markdown"], None));
    assert!(
        md.contains("| removed | ip | `101.51.100.7/32` | tcp 443 (necessary) |  |"),
        "{md}"
    );

    let json: serde_json::Value =
        serde_json::from_slice(&run(&["diff", s, n, "--format", "json"], None).stdout).unwrap();
    assert_eq!(json["added"][0]["destination"], "101.51.100.7/32");
    assert_eq!(
        json["added"][0]["after"]["services"]["tcp"],
        serde_json::json!([443])
    );
    assert_eq!(json["removed"].as_array().unwrap().len(), 0);

    // A built folder's source.json compares with a raw response.
    let out = dir.path().join("out");
    assert!(build(&seed, &out, &[]).status.success());
    let res = run(
        &["diff", out.join("source.json").to_str().unwrap(), n],
        None,
    );
    assert_eq!(res.status.code(), Some(1));
    let res = run(
        &["diff", out.join("source.json").to_str().unwrap(), s],
        None,
    );
    assert_eq!(res.status.code(), Some(0), "{}", stdout(&res));

    let bad = run(&["diff", s, "/no/such.json"], None);
    assert_eq!(bad.status.code(), Some(2));
}

/// A description is a comment in every file and a field of source.json: when only it changes,
/// `build --check` finds the folder out of date, so `diff` must count it as a change too (exit 1,
/// listed), with the hostile text escaped in every format.
#[test]
fn diff_and_check_agree_that_a_description_alone_is_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let seed = fixture("seed.json");
    let out = dir.path().join("out");
    assert!(build(&seed, &out, &[]).status.success());

    let mut doc: serde_json::Value = serde_json::from_slice(&fs::read(&seed).unwrap()).unwrap();
    doc["ip_list"][1]["description"] = serde_json::json!("HTTPDNS | <b>`x`</b>\n\u{202e}");
    let next = dir.path().join("reworded.json");
    fs::write(&next, serde_json::to_vec(&doc).unwrap()).unwrap();
    let (s, n) = (
        out.join("source.json").to_str().unwrap().to_owned(),
        next.to_str().unwrap().to_owned(),
    );

    let check = build(&next, &out, &["--check"]);
    assert_eq!(check.status.code(), Some(1), "{}", stderr(&check));
    let line = "~ ip 115.238.203.110/32: tcp 80,443 (necessary); description \
                \"企业微信客户端HTTPDNS解析\" -> \"HTTPDNS | <b>`x`</b>\\n\\u{202e}\"\n\
                0 added, 0 removed, 1 changed\n";
    assert!(stdout(&check).ends_with(line), "{}", stdout(&check));

    let text = run(&["diff", &s, &n], None);
    assert_eq!(text.status.code(), Some(1), "{}", stderr(&text));
    assert_eq!(stdout(&text), line);

    let md = run(&["diff", &s, &n, "--format", "markdown"], None);
    assert_eq!(md.status.code(), Some(1));
    assert!(
        stdout(&md).contains(
            "| changed | ip | `115.238.203.110/32` | tcp 80,443 (necessary); description \
             \\\"企业微信客户端HTTPDNS解析\\\" | tcp 80,443 (necessary); description \
             \\\"HTTPDNS \\| \\<b\\>\\`x\\`\\<\\/b\\>\\\\n\\\\u\\{202e\\}\\\" |\n"
        ),
        "{}",
        stdout(&md)
    );

    let json = run(&["diff", &s, &n, "--format", "json"], None);
    assert_eq!(json.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        json["counts"],
        serde_json::json!({"added": 0, "removed": 0, "changed": 1})
    );
    assert_eq!(
        json["changed"][0]["after"]["descriptions"],
        serde_json::json!([{
            "description": "HTTPDNS | <b>`x`</b>\n\u{202e}",
            "is_necessary": true,
            "services": {"tcp": [80, 443]},
        }])
    );

    // Built, the folder is up to date and the lists are the same for both.
    assert!(build(&next, &out, &[]).status.success());
    assert_eq!(build(&next, &out, &["--check"]).status.code(), Some(0));
    assert_eq!(run(&["diff", &s, &n], None).status.code(), Some(0));
}

#[test]
fn config_sets_names_filters_extra_and_exclusions() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wecom.toml");
    fs::write(
        &config,
        r#"
[iptables]
chain = "EGRESS_WECOM"
[nftables]
table = "fw"
chain = "wecom"
[pfsense]
interface = "opt1"
alias_prefix = "WC_"
tracker_base = 100000
[squid]
acl_prefix = "wc_"
[filters]
protocols = ["tcp"]
[[extra.ip_list]]
ip = "203.0.113.0/24"
protocol = "TCP"
port = [443]
is_necessary = 1
description = "from the static list"
[exclude]
domains = ["*.work.weixin.qq.com"]
cidrs = ["115.238.203.109"]
"#,
    )
    .unwrap();
    let out = dir.path().join("out");
    let res = build(
        &fixture("seed.json"),
        &out,
        &["--config", config.to_str().unwrap()],
    );
    assert!(res.status.success(), "{}", stderr(&res));
    let read = |f: &str| fs::read_to_string(out.join(f)).unwrap();
    let ipt = read("iptables.rules");
    assert!(
        ipt.contains(":EGRESS_WECOM - [0:0]") && ipt.contains("-d 203.0.113.0/24"),
        "{ipt}"
    );
    assert!(
        !ipt.contains("115.238.203.109") && ipt.contains("115.238.203.110"),
        "{ipt}"
    );
    let nft = read("nftables.nft");
    assert!(
        nft.contains("add chain inet fw wecom")
            && nft.contains("add rule inet fw wecom ip daddr {"),
        "{nft}"
    );
    let pf = read("pfsense.xml");
    assert!(
        pf.contains("<interface>opt1</interface>") && pf.contains("<name>WC_V4_TCP_443</name>"),
        "{pf}"
    );
    let trackers: Vec<u64> = pf
        .split("<tracker>")
        .skip(1)
        .filter_map(|s| s.split('<').next()?.parse().ok())
        .collect();
    assert!(
        !trackers.is_empty() && trackers.iter().all(|t| (100_000..10_100_000).contains(t)),
        "{pf}"
    );
    let squid = read("squid.conf");
    assert!(
        squid.contains("acl wc_v4_tcp_443 dst 203.0.113.0/24"),
        "{squid}"
    );
    assert!(
        !squid.contains("weixin"),
        "excluded names are gone: {squid}"
    );
    // Flags win over the file.
    let res = run(
        &[
            "render",
            "iptables",
            "-i",
            fixture("seed.json").to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--chain",
            "FROM_FLAG",
        ],
        None,
    );
    assert!(stdout(&res).contains(":FROM_FLAG - [0:0]"));
}

#[test]
fn config_typos_are_rejected_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    for (text, needle) in [
        ("[iptables]\nchian = \"X\"\n", "chian"),
        ("[filters]\nnecessary = true\n", "necessary"),
        (
            "[nftables]\nfamily = \"ip\"\ntable = \"wecom\"\n",
            "can't hold the list's IPv6",
        ),
        ("not toml at all", "invalid config"),
    ] {
        let config = dir.path().join("c.toml");
        fs::write(&config, text).unwrap();
        let res = build(
            &fixture("rich.json"),
            &out,
            &["--config", config.to_str().unwrap()],
        );
        assert_eq!(res.status.code(), Some(2), "{text}: {}", stderr(&res));
        assert!(stderr(&res).contains(needle), "{text}: {}", stderr(&res));
        assert!(!out.exists());
    }
}

#[test]
fn custom_templates_replace_built_in_ones_and_keep_the_filters() {
    let dir = tempfile::tempdir().unwrap();
    let templates = dir.path().join("templates");
    fs::create_dir(&templates).unwrap();
    fs::write(
        templates.join("squid.conf"),
        "# custom {{ digest }}\n{% for g in groups if g.protocol == \"tcp\" %}{% for m in g.members %}# {{ m.note|comment(12) }}\nacl mine {{ \"dstdomain\" if g.family == \"dns\" else \"dst\" }} {{ m.short }}\n{% endfor %}{% endfor %}",
    )
    .unwrap();
    let hostile = fixture("hostile.json");
    let (hostile, dir_arg) = (hostile.to_str().unwrap(), templates.to_str().unwrap());
    let render = |target: &str| {
        run(
            &["render", target, "-i", hostile, "--templates", dir_arg],
            None,
        )
    };
    let res = render("squid");
    let text = stdout(&res);
    assert!(res.status.success(), "{}", stderr(&res));
    assert!(text.starts_with("# custom sha256:"), "{text}");
    // The comment filter still sanitizes and cuts: no line of the hostile notes escapes.
    assert!(
        text.lines()
            .all(|l| l.starts_with('#') || l.starts_with("acl mine ")),
        "{text}"
    );
    assert!(text.contains("# optional: li\n"), "{text}");
    // Other targets keep the built-in template.
    assert!(stdout(&render("iptables")).contains(":WECOM_ALLOW - [0:0]"));

    // A misnamed file or a broken template is the user's error: exit 2.
    fs::write(templates.join("squid.cfg"), "x").unwrap();
    let res = render("squid");
    assert_eq!(res.status.code(), Some(2));
    assert!(
        stderr(&res).contains("replaces no built-in template"),
        "{}",
        stderr(&res)
    );
    fs::remove_file(templates.join("squid.cfg")).unwrap();
    fs::write(templates.join("squid.conf"), "{{ no_such_variable }}").unwrap();
    let res = render("squid");
    assert_eq!(res.status.code(), Some(2), "{}", stderr(&res));
    assert!(
        stderr(&res).contains("custom template squid.conf"),
        "{}",
        stderr(&res)
    );
}

#[test]
fn dump_context_shows_what_templates_receive() {
    let res = run(
        &[
            "render",
            "pfsense",
            "-i",
            fixture("rich.json").to_str().unwrap(),
            "--dump-context",
        ],
        None,
    );
    assert!(res.status.success());
    let ctx: serde_json::Value = serde_json::from_slice(&res.stdout).unwrap();
    assert_eq!(ctx["target"], "pfsense");
    assert!(ctx["digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(ctx["names"]["pfsense_interface"], "lan");
    let group = &ctx["groups"][0];
    for key in [
        "family",
        "protocol",
        "ports",
        "slug",
        "port_slug",
        "members",
    ] {
        assert!(!group[key].is_null(), "{key} missing: {group}");
    }
    assert_eq!(ctx["inexpressible"][0], "wecom.example.com");
}

#[test]
fn the_example_config_is_valid() {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/wecom-allowlist.toml");
    let res = run(
        &[
            "render",
            "squid",
            "-i",
            fixture("seed.json").to_str().unwrap(),
            "--config",
            example.to_str().unwrap(),
        ],
        None,
    );
    assert!(res.status.success(), "{}", stderr(&res));
    assert!(stdout(&res).contains("wework.qpic.cn"));
}

/// Every entry of `names` on TCP `ports`, with `universal` as universal_domian if given.
fn names_list(
    dir: &Path,
    file: &str,
    names: &[&str],
    universal: Option<&str>,
    ports: &[u16],
) -> std::path::PathBuf {
    let entries: Vec<serde_json::Value> = names
        .iter()
        .map(|n| {
            serde_json::json!({
                "domain": n, "universal_domian": universal, "protocol": "TCP", "port": ports, "is_necessary": 1
            })
        })
        .collect();
    let path = dir.join(file);
    fs::write(
        &path,
        serde_json::json!({"errcode": 0, "domain_list": entries}).to_string(),
    )
    .unwrap();
    path
}

#[test]
fn the_shrink_guard_counts_what_is_allowed_not_entries() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let names = [
        "a.work.example.com",
        "b.work.example.com",
        "c.work.example.com",
    ];
    let plain = names_list(dir.path(), "plain.json", &names, None, &[443]);
    assert!(build(&plain, &out, &[]).status.success());

    // WeCom adds a universal_domian to every name: the list grows, nothing is lost.
    let grown = names_list(
        dir.path(),
        "grown.json",
        &names,
        Some("work.example.com"),
        &[443],
    );
    let res = build(&grown, &out, &["--check"]);
    assert_eq!(res.status.code(), Some(1), "{}", stderr(&res));
    let res = build(&grown, &out, &[]);
    assert!(res.status.success(), "{}", stderr(&res));

    // Every entry stays but moves to port 1: everything they allowed is gone.
    let before = contents(&out);
    let moved = names_list(
        dir.path(),
        "moved.json",
        &names,
        Some("work.example.com"),
        &[1],
    );
    for extra in [&[][..], &["--check"][..]] {
        let res = build(&moved, &out, extra);
        assert_eq!(res.status.code(), Some(4), "{}", stderr(&res));
        let err = stderr(&res);
        assert!(
            err.contains("takes away 100.0% of what")
                && err.contains(".work.example.com (tcp 443)"),
            "{err}"
        );
        assert_eq!(contents(&out), before);
    }
    // Losing one port of two on every name is half: refused above 50 only with a lower limit.
    let two = names_list(
        dir.path(),
        "two.json",
        &names,
        Some("work.example.com"),
        &[80, 443],
    );
    assert!(build(&two, &out, &["--max-shrink", "100"]).status.success());
    let one = names_list(
        dir.path(),
        "one.json",
        &names,
        Some("work.example.com"),
        &[443],
    );
    assert_eq!(
        build(&one, &out, &["--max-shrink", "49"]).status.code(),
        Some(4)
    );
    assert!(build(&one, &out, &["--max-shrink", "50"]).status.success());
}

/// Every entry of `dir` with its bytes (or `None` for a folder), to compare a folder that
/// holds a subfolder.
fn entries(dir: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let bytes = e
                .file_type()
                .unwrap()
                .is_file()
                .then(|| fs::read(e.path()).unwrap());
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect()
}

#[test]
fn a_build_that_fails_while_writing_changes_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    assert!(build(&fixture("seed.json"), &out, &[]).status.success());
    // pfsense.xml is written after iptables, ip6tables and nftables: a folder in its place used
    // to let those three be replaced before the build failed.
    fs::remove_file(out.join("pfsense.xml")).unwrap();
    fs::create_dir(out.join("pfsense.xml")).unwrap();
    let before = entries(&out);
    let next = seed_plus_one(dir.path());
    let seed = fixture("seed.json");
    for (input, extra) in [(&next, &[][..]), (&seed, &["--target", "pfsense"][..])] {
        let res = build(input, &out, extra);
        assert_eq!(res.status.code(), Some(2), "{}", stderr(&res));
        assert!(
            stderr(&res).contains("pfsense.xml: it is a folder, not a regular file"),
            "{}",
            stderr(&res)
        );
        assert!(res.stdout.is_empty());
        assert_eq!(entries(&out), before, "a failed build changed the folder");
    }
}

#[cfg(unix)]
#[test]
fn new_files_follow_the_umask_and_old_files_keep_their_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("iptables.rules"), "old").unwrap();
    fs::set_permissions(
        out.join("iptables.rules"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let res = std::process::Command::new("sh")
        .args(["-c", "umask 027 && exec \"$@\"", "sh"])
        .arg(env!("CARGO_BIN_EXE_wecom-allowlist"))
        .args(["build", "-i"])
        .arg(fixture("seed.json"))
        .arg("--out-dir")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let mode = |name: &str| fs::metadata(out.join(name)).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode("iptables.rules"),
        0o600,
        "an existing file keeps its mode"
    );
    for name in [
        "ip6tables.rules",
        "nftables.nft",
        "pfsense.xml",
        "squid.conf",
        "dnsmasq.conf",
        "ipset.rules",
        "source.json",
    ] {
        assert_eq!(mode(name), 0o640, "{name} ignores the umask");
    }
    assert_eq!(
        fs::read_dir(&out).unwrap().count(),
        9,
        "temporary files left"
    );
}

#[test]
fn a_partial_build_never_leaves_other_files_citing_another_list() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let seed = fixture("seed.json");
    assert!(build(&seed, &out, &[]).status.success());
    let before = contents(&out);
    // The same list: the other files still cite the source.json written.
    let res = build(&seed, &out, &["--target", "squid"]);
    assert!(res.status.success(), "{}", stderr(&res));
    assert_eq!(contents(&out), before);

    let next = seed_plus_one(dir.path());
    for extra in [
        &["--target", "squid"][..],
        &["--target", "squid", "--check"][..],
    ] {
        let res = build(&next, &out, extra);
        assert_eq!(res.status.code(), Some(4), "{}", stderr(&res));
        let err = stderr(&res);
        for name in [
            "iptables.rules",
            "ip6tables.rules",
            "nftables.nft",
            "pfsense.xml",
        ] {
            assert!(err.contains(&out.join(name).display().to_string()), "{err}");
        }
        assert!(!err.contains("squid.conf"), "{err}");
        assert!(
            err.contains("omit --target") && err.contains("--target iptables"),
            "{err}"
        );
        assert!(res.stdout.is_empty());
        assert_eq!(contents(&out), before);
    }
    // Naming every stale target too is a full build.
    let all = [
        "--target",
        "squid",
        "--target",
        "iptables",
        "--target",
        "ip6tables",
        "--target",
        "nftables",
        "--target",
        "pfsense",
        "--target",
        "dnsmasq",
        "--target",
        "ipset",
    ];
    let res = build(&next, &out, &all);
    assert!(res.status.success(), "{}", stderr(&res));
    // A file without a digest (a custom template, a hand edit) can't be vouched for either.
    fs::write(out.join("nftables.nft"), "# hand-made\n").unwrap();
    let res = build(&next, &out, &["--target", "squid"]);
    assert_eq!(res.status.code(), Some(4), "{}", stderr(&res));
    assert!(build(&next, &out, &[]).status.success());
}

#[test]
fn a_damaged_source_json_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let seed = fixture("seed.json");
    assert!(build(&seed, &out, &[]).status.success());
    let source = out.join("source.json");
    for (text, why) in [
        ("{\"errcode\":0,\"ip_list\":[", "not valid JSON"),
        (
            "{\"errcode\":40014,\"errmsg\":\"invalid access_token\"}",
            "holds a WeCom error answer (errcode 40014)",
        ),
    ] {
        fs::write(&source, text).unwrap();
        let before = contents(&out);
        for extra in [&[][..], &["--max-shrink", "100"][..], &["--check"][..]] {
            let res = build(&seed, &out, extra);
            assert_eq!(res.status.code(), Some(2), "{}", stderr(&res));
            let err = stderr(&res);
            assert!(
                err.contains(&format!("{} is damaged", source.display())),
                "{err}"
            );
            assert!(err.contains(why), "{err}");
            assert!(
                err.contains("restore it from version control")
                    && err.contains("remove it to start over"),
                "{err}"
            );
            assert!(
                !err.contains("access_token") || !err.contains("gettoken"),
                "{err}"
            );
            assert_eq!(contents(&out), before);
        }
    }
    fs::remove_file(&source).unwrap();
    assert!(build(&seed, &out, &[]).status.success());
}

#[test]
fn building_from_source_json_keeps_what_each_entry_says() {
    let dir = tempfile::tempdir().unwrap();
    // One name: necessary on TCP, optional on UDP, each with its own description.
    let list = dir.path().join("list.json");
    fs::write(
        &list,
        r#"{"errcode":0,"domain_list":[
        {"domain":"a.example.com","protocol":"TCP","port":[443],"is_necessary":1,"description":"core"},
        {"domain":"a.example.com","protocol":"UDP","port":[3478],"is_necessary":0,"description":"calls"}]}"#,
    )
    .unwrap();
    for extra in [&[][..], &["--necessary-only"][..]] {
        let (first, second) = (dir.path().join("first"), dir.path().join("second"));
        let _ = fs::remove_dir_all(&first);
        let _ = fs::remove_dir_all(&second);
        assert!(build(&list, &first, extra).status.success());
        let res = build(&first.join("source.json"), &second, extra);
        assert!(res.status.success(), "{}", stderr(&res));
        assert_eq!(contents(&first), contents(&second), "{extra:?}");
    }
}

#[cfg(unix)]
#[test]
fn a_second_build_waits_until_the_first_is_done() {
    use std::io::BufRead;
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    assert!(build(&fixture("seed.json"), &out, &[]).status.success());
    let before = contents(&out);
    // Another build holds the folder, as the tool itself does.
    let held = fs::File::open(&out).unwrap();
    // SAFETY: flock only reads the descriptor, which `held` keeps open.
    assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wecom-allowlist"))
        .args(["build", "-i"])
        .arg(seed_plus_one(dir.path()))
        .arg("--out-dir")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr_lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let first = stderr_lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(
        first.contains(&format!(
            "waiting for another run that is writing {}",
            out.display()
        )),
        "the second build didn't wait: {first:?}"
    );
    assert_eq!(contents(&out), before, "it wrote while the folder was held");
    drop(held);
    assert!(child.wait().unwrap().success());
    assert_ne!(contents(&out), before);
}

#[test]
fn a_build_removes_what_a_killed_build_left() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();
    let leftover = out.join(".wecom-allowlist-Xy12ab.tmp");
    fs::write(&leftover, vec![b'#'; 100_000]).unwrap();
    // Not ours: another name, or a folder.
    fs::write(out.join("notes.tmp"), "mine").unwrap();
    fs::create_dir(out.join(".wecom-allowlist-dir.tmp")).unwrap();
    let res = build(&fixture("seed.json"), &out, &[]);
    assert!(res.status.success(), "{}", stderr(&res));
    assert!(!leftover.exists(), "the leftover is still there");
    assert!(
        stderr(&res).contains(&format!("removed {}", leftover.display())),
        "{}",
        stderr(&res)
    );
    assert!(out.join("notes.tmp").exists() && out.join(".wecom-allowlist-dir.tmp").is_dir());
}

#[test]
fn the_folder_guards_refuse_before_anything_is_rendered() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    assert!(build(&fixture("seed.json"), &out, &[]).status.success());
    // A template that fails only when rendered: whichever error comes first shows the order.
    let templates = dir.path().join("templates");
    fs::create_dir(&templates).unwrap();
    fs::write(templates.join("squid.conf"), "{{ no_such_variable }}").unwrap();
    let t = templates.to_str().unwrap();
    let shrunk = names_list(dir.path(), "shrunk.json", &["a.example.com"], None, &[443]);
    let res = build(&shrunk, &out, &["--templates", t]);
    assert_eq!(res.status.code(), Some(4), "{}", stderr(&res));
    assert!(
        stderr(&res).contains("--max-shrink 50%"),
        "{}",
        stderr(&res)
    );
    let next = seed_plus_one(dir.path());
    let res = build(&next, &out, &["--templates", t, "--target", "squid"]);
    assert_eq!(res.status.code(), Some(4), "{}", stderr(&res));
    assert!(
        stderr(&res).contains("citing another source.json"),
        "{}",
        stderr(&res)
    );
    // With the guards satisfied, the template's error is what stops the build.
    let res = build(&next, &out, &["--templates", t]);
    assert_eq!(res.status.code(), Some(2), "{}", stderr(&res));
    assert!(
        stderr(&res).contains("custom template squid.conf"),
        "{}",
        stderr(&res)
    );
    // What one target's policy refuses (here nftables, made after iptables) comes first too.
    fs::write(templates.join("iptables.rules"), "{{ no_such_variable }}").unwrap();
    let config = dir.path().join("ip6-only.toml");
    fs::write(&config, "[nftables]\nfamily = \"ip6\"\ntable = \"wecom\"\n").unwrap();
    let c = config.to_str().unwrap();
    let res = build(&next, &out, &["--templates", t, "--config", c]);
    assert_eq!(res.status.code(), Some(2), "{}", stderr(&res));
    assert!(
        stderr(&res).contains("can't hold the list's IPv4"),
        "{}",
        stderr(&res)
    );
}

#[test]
fn a_template_error_midway_through_a_file_changes_no_file_and_names_the_first_target() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    assert!(build(&fixture("seed.json"), &out, &[]).status.success());
    let (before, lists_before) = (entries(&out), entries(&out.join("lists")));
    let templates = dir.path().join("templates");
    fs::create_dir(&templates).unwrap();
    // nftables.nft, the third file, fails after half a megabyte is written; squid.conf, a later
    // one, fails at once, so it fails first when the targets are rendered side by side.
    fs::write(
        templates.join("nftables.nft"),
        "{% for i in range(50000) %}# line {{ i }}\n{% endfor %}{{ no_such_variable }}",
    )
    .unwrap();
    fs::write(templates.join("squid.conf"), "{{ no_such_variable }}").unwrap();
    let next = seed_plus_one(dir.path());
    for extra in [&[][..], &["--check"][..]] {
        let mut args = vec!["--templates", templates.to_str().unwrap()];
        args.extend_from_slice(extra);
        let res = build(&next, &out, &args);
        assert_eq!(res.status.code(), Some(2), "{}", stderr(&res));
        let err = stderr(&res);
        assert!(err.contains("custom template nftables.nft"), "{err}");
        assert!(!err.contains("squid.conf"), "{err}");
        assert!(res.stdout.is_empty());
        assert_eq!(entries(&out), before, "a failed build changed the folder");
        assert_eq!(entries(&out.join("lists")), lists_before);
    }
    // `render -o` leaves its file as it was, and no temporary file beside it.
    let file = out.join("nftables.nft");
    let res = run(
        &[
            "render",
            "nftables",
            "-i",
            next.to_str().unwrap(),
            "--templates",
            templates.to_str().unwrap(),
            "-o",
            file.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(res.status.code(), Some(2), "{}", stderr(&res));
    assert_eq!(entries(&out), before, "a failed render changed the folder");
}
