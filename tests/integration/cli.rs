//! The command line as CI jobs and engineers meet it: exit codes, messages, files left intact.

use std::fs;

use crate::support::{fixture, run, stderr, stdout, TARGETS};

const GOOD_ENTRY: &str = r#"{"ip":"101.0.2.1","protocol":"TCP","port":[443],"is_necessary":1}"#;

fn doc_with_ip_entry(entry: &str) -> String {
    format!(r#"{{"errcode":0,"errmsg":"ok","ip_list":[{GOOD_ENTRY},{entry}]}}"#)
}

/// Runs `render squid --input -` on `doc` and checks the failure contract: the exit code, a
/// message on stderr, and nothing at all on stdout.
fn refused(doc: &str, extra: &[&str], code: i32, message: &str) {
    let mut args = vec!["render", "squid", "--input", "-"];
    args.extend_from_slice(extra);
    let out = run(&args, Some(doc.as_bytes()));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "input {doc:?}: {err}");
    assert!(out.stdout.is_empty(), "stdout not empty for {doc:?}");
    assert!(
        err.contains(message),
        "stderr for {doc:?} lacks {message:?}: {err}"
    );
}

/// The file names README.md documents, written here independently of the code.
fn target_file(target: &str) -> &'static str {
    match target {
        "iptables" => "iptables.rules",
        "ip6tables" => "ip6tables.rules",
        "nftables" => "nftables.nft",
        "pfsense" => "pfsense.xml",
        "squid" => "squid.conf",
        "dnsmasq" => "dnsmasq.conf",
        "ipset" => "ipset.rules",
        other => panic!("unknown target {other}"),
    }
}

#[test]
fn targets_lists_every_target_with_its_file() {
    let out = run(&["targets"], None);
    assert!(out.status.success());
    let text = stdout(&out);
    for t in TARGETS {
        let file = target_file(t);
        assert!(
            text.lines().any(|l| l.starts_with(t) && l.contains(file)),
            "{t} missing: {text}"
        );
    }
}

#[test]
fn build_writes_every_target_byte_identical_to_render() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let seed = fixture("rich.json");
    let args = [
        "build",
        "--input",
        seed.to_str().unwrap(),
        "--out-dir",
        out_dir.to_str().unwrap(),
    ];
    assert!(run(&args, None).status.success());
    let first: Vec<(String, Vec<u8>)> = TARGETS
        .iter()
        .map(|t| {
            (
                t.to_string(),
                fs::read(out_dir.join(target_file(t))).unwrap(),
            )
        })
        .collect();
    // Every target, source.json and lists/, nothing else (no temporary files left behind).
    assert_eq!(
        fs::read_dir(&out_dir).unwrap().count(),
        TARGETS.len() + 2,
        "stray files in the output folder"
    );
    // Same input and options, same bytes; and `render` gives what `build` wrote.
    assert!(run(&args, None).status.success());
    for (target, bytes) in &first {
        let rendered = run(&["render", target, "--input", seed.to_str().unwrap()], None);
        assert_eq!(&rendered.stdout, bytes, "{target}: render and build differ");
    }
    for (target, bytes) in &first {
        let path = out_dir.join(target_file(target));
        assert_eq!(
            &fs::read(path).unwrap(),
            bytes,
            "{target}: second build differs"
        );
    }
}

#[test]
fn build_can_limit_the_targets() {
    let dir = tempfile::tempdir().unwrap();
    let seed = fixture("seed.json");
    let out = run(
        &[
            "build",
            "-i",
            seed.to_str().unwrap(),
            "--out-dir",
            dir.path().to_str().unwrap(),
            "--target",
            "squid",
            "--target",
            "nftables",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["lists", "nftables.nft", "source.json", "squid.conf"]
    );
}

#[test]
fn invalid_fields_name_the_entry_the_field_and_the_escaped_value() {
    let cases = [
        (
            r#"{"ip":"192.0.2.9","protocol":"TCP","port":["44\n3"],"is_necessary":1}"#,
            r#"ip_list[1].port: "44\n3" is not a port"#,
        ),
        (
            r#"{"ip":"192.0.2.9","protocol":"TCP","port":[0],"is_necessary":1}"#,
            "ip_list[1].port: 0 is not a port",
        ),
        (
            r#"{"ip":"192.0.2.9","protocol":"TCP","port":[70000],"is_necessary":1}"#,
            "ip_list[1].port: 70000",
        ),
        (
            r#"{"ip":"192.0.2.9","protocol":"TCP","port":[-1],"is_necessary":1}"#,
            "ip_list[1].port: -1",
        ),
        (
            r#"{"ip":"192.0.2.9","protocol":"TCP","port":[],"is_necessary":1}"#,
            "ip_list[1].port: is empty",
        ),
        (
            r#"{"ip":"192.0.2.9","protocol":"ICMP","port":[1],"is_necessary":1}"#,
            r#"ip_list[1].protocol: "ICMP" is not TCP or UDP"#,
        ),
        (
            r#"{"ip":"192.0.2.9","protocol":"TCP; rm -rf /","port":[1],"is_necessary":1}"#,
            "ip_list[1].protocol:",
        ),
        (
            r#"{"ip":"192.0.2.300","protocol":"TCP","port":[1],"is_necessary":1}"#,
            r#"ip_list[1].ip: "192.0.2.300" is not"#,
        ),
        (
            r#"{"ip":"192.0.2.9\"; flush ruleset","protocol":"TCP","port":[1],"is_necessary":1}"#,
            r#"ip_list[1].ip: "192.0.2.9\"; flush ruleset""#,
        ),
        (
            r#"{"ip":"example.com","protocol":"TCP","port":[1],"is_necessary":1}"#,
            "ip_list[1].ip:",
        ),
        (
            r#"{"ip":"10.0.0.1/8","protocol":"TCP","port":[1],"is_necessary":1}"#,
            "did you mean 10.0.0.0/8",
        ),
        (
            r#"{"ip":"192.0.2.9","protocol":"TCP","port":[1],"is_necessary":"yes"}"#,
            "ip_list[1].is_necessary:",
        ),
        (
            r#"{"ip":"192.0.2.9","protocol":"TCP","port":[1]}"#,
            "ip_list[1].is_necessary: is missing",
        ),
        (
            r#"{"protocol":"TCP","port":[1],"is_necessary":1}"#,
            "ip_list[1].ip: is missing",
        ),
        (r#""just a string""#, "ip_list[1]: must be an object"),
    ];
    for (entry, message) in cases {
        refused(&doc_with_ip_entry(entry), &[], 2, message);
    }
    let bad_domain = r#"{"domain_list":[{"domain":"evil.com\n*","protocol":"TCP","port":[1],"is_necessary":1}]}"#;
    refused(
        bad_domain,
        &[],
        2,
        r#"domain_list[0].domain: "evil.com\n*""#,
    );
    let bad_universal = r#"{"domain_list":[{"domain":"a.qq.com","universal_domian":"com","protocol":"TCP","port":[1],"is_necessary":1}]}"#;
    refused(bad_universal, &[], 2, "domain_list[0].universal_domian:");
    for (field, value, shown) in [
        (
            "domain",
            "a.example.com</name><name>x",
            r#""a.example.com</name><name>x""#,
        ),
        (
            "domain",
            "a.example.com; reboot",
            r#""a.example.com; reboot""#,
        ),
        ("domain", "a .example.com", r#""a .example.com""#),
        (
            "universal_domian",
            "example.com\n.evil.com",
            r#""example.com\n.evil.com""#,
        ),
        (
            "universal_domian",
            "$(id).example.com",
            r#""$(id).example.com""#,
        ),
    ] {
        let mut entry = serde_json::json!({"domain": "ok.example.com", "protocol": "TCP", "port": [443], "is_necessary": 1});
        entry[field] = serde_json::json!(value);
        let doc = serde_json::json!({"domain_list": [entry]}).to_string();
        refused(&doc, &[], 2, &format!("domain_list[0].{field}: {shown}"));
    }
}

#[test]
fn broken_documents_are_refused() {
    for (doc, message) in [
        ("", "the input is empty"),
        ("{\"errcode\":0,\"ip_list\":[", "not valid JSON"),
        (
            "<html><body>502 Bad Gateway</body></html>",
            "not valid JSON",
        ),
        ("[]", "must be a JSON object"),
        (
            "{\"errcode\":0,\"errmsg\":\"ok\"}",
            "neither domain_list nor ip_list",
        ),
        ("{\"ip_list\":\"1.2.3.4\"}", "ip_list: must be a list"),
    ] {
        refused(doc, &[], 2, message);
    }
}

#[test]
fn wecom_errors_exit_3_with_advice() {
    for (doc, message) in [
        (
            r#"{"errcode":60020,"errmsg":"not allow to access from your ip, hint: [1], from ip: 198.51.100.4, more info at https://open.work.weixin.qq.com/devtool/query?e=60020","ip_list":[]}"#,
            "add 198.51.100.4 to the app's trusted IPs",
        ),
        (
            r#"{"errcode":48002,"errmsg":"api forbidden"}"#,
            "可调用API的应用",
        ),
        (
            r#"{"errcode":42001,"errmsg":"access_token expired\n"}"#,
            r#"errcode 42001 ("access_token expired\n")"#,
        ),
        (r#"{"errcode":-1,"errmsg":"system busy"}"#, "retry later"),
    ] {
        refused(doc, &[], 3, message);
    }
}

#[test]
fn guards_exit_4_unless_overridden() {
    let empty = r#"{"errcode":0,"errmsg":"ok","domain_list":[],"ip_list":[]}"#;
    refused(empty, &[], 4, "the list has no entries");
    let optional_only =
        r#"{"ip_list":[{"ip":"192.0.2.1","protocol":"TCP","port":[443],"is_necessary":0}]}"#;
    refused(
        optional_only,
        &["--necessary-only"],
        4,
        "the allowlist is empty after filtering",
    );
    let out = run(
        &["render", "nftables", "-i", "-", "--allow-empty"],
        Some(empty.as_bytes()),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("flush chain inet filter wecom_allow"));

    for broad in ["0.0.0.0/0", "::/0", "10.0.0.0/7", "2000::/15"] {
        let doc = doc_with_ip_entry(&format!(
            r#"{{"ip":"{broad}","protocol":"TCP","port":[443],"is_necessary":1}}"#
        ));
        refused(&doc, &[], 4, &format!("ip_list[1].ip: {broad} is broader"));
        // Each of these holds non-public addresses too, a guard of its own.
        refused(
            &doc,
            &["--allow-broad"],
            4,
            &format!("ip_list[1].ip: \"{broad}\" overlaps"),
        );
        let out = run(
            &[
                "render",
                "iptables",
                "-i",
                "-",
                "--allow-broad",
                "--allow-nonpublic",
            ],
            Some(doc.as_bytes()),
        );
        assert!(out.status.success(), "{broad}: {}", stderr(&out));
    }
}

#[test]
fn skip_invalid_warns_once_per_dropped_entry() {
    let doc = format!(
        r#"{{"ip_list":[{GOOD_ENTRY},{{"ip":"bad"}},{{"ip":"192.0.2.2","protocol":"TCP","port":[0],"is_necessary":1}}]}}"#
    );
    let out = run(
        &["render", "iptables", "-i", "-", "--skip-invalid"],
        Some(doc.as_bytes()),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.matches("warning: skipped").count(), 2, "{err}");
    assert!(
        err.contains("ip_list[1].ip") && err.contains("ip_list[2].port"),
        "{err}"
    );
    let text = stdout(&out);
    assert!(
        text.contains("-d 101.0.2.1/32") && !text.contains("192.0.2.2"),
        "{text}"
    );
}

#[test]
fn a_failed_run_leaves_existing_files_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("squid.conf");
    fs::write(&file, "precious\n").unwrap();
    for doc in [
        "{\"errcode\":0,\"ip_list\":[",
        r#"{"errcode":40001,"errmsg":"bad secret"}"#,
        r#"{"ip_list":[]}"#,
    ] {
        let out = run(
            &["render", "squid", "-i", "-", "-o", file.to_str().unwrap()],
            Some(doc.as_bytes()),
        );
        assert!(!out.status.success());
        assert_eq!(fs::read_to_string(&file).unwrap(), "precious\n");
        let out = run(
            &[
                "build",
                "-i",
                "-",
                "--out-dir",
                dir.path().to_str().unwrap(),
            ],
            Some(doc.as_bytes()),
        );
        assert!(!out.status.success());
        assert_eq!(fs::read_to_string(&file).unwrap(), "precious\n");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temporary files left behind"
        );
    }
    // And a good run replaces it in one step.
    let seed = fixture("seed.json");
    let out = run(
        &[
            "render",
            "squid",
            "-i",
            seed.to_str().unwrap(),
            "-o",
            file.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success() && out.stdout.is_empty());
    assert!(fs::read_to_string(&file)
        .unwrap()
        .contains("http_access allow"));
}

#[test]
fn names_that_would_touch_built_in_chains_are_refused() {
    let seed = fixture("seed.json");
    let seed = seed.to_str().unwrap();
    for (flag, value) in [
        ("--chain", "OUTPUT"),
        ("--chain", "x\ny"),
        ("--nft-table", "a b"),
        ("--interface", "lan</interface>"),
    ] {
        let out = run(&["render", "iptables", "-i", seed, flag, value], None);
        assert_eq!(out.status.code(), Some(2), "{flag} {value:?}");
        assert!(out.stdout.is_empty());
        assert!(stderr(&out).contains("invalid option"), "{}", stderr(&out));
    }
    let out = run(
        &["render", "iptables", "-i", seed, "--chain", "EGRESS_WECOM"],
        None,
    );
    assert!(stdout(&out).contains(":EGRESS_WECOM - [0:0]"));
}

#[test]
fn a_bad_pfsense_source_is_refused_with_the_value_escaped() {
    let seed = fixture("seed.json");
    let seed = seed.to_str().unwrap();
    for (value, shown) in [
        ("10.0.0.1/8", r#""10.0.0.1/8" has host bits set"#),
        ("lan</source>", r#""lan</source>""#),
        ("a\nb", r#""a\nb""#),
        ("300.1.1.0/24", r#""300.1.1.0/24""#),
    ] {
        let out = run(
            &["render", "pfsense", "-i", seed, "--pfsense-source", value],
            None,
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{value:?}: {err}");
        assert!(out.stdout.is_empty(), "{value:?}");
        assert!(
            err.contains(&format!("pfSense source {shown}")),
            "{value:?}: {err}"
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    // (`render squid` without --input fetches live: see fetch.rs.)
    for args in [&["render", "cisco", "-i", "x"][..], &["frobnicate"]] {
        let out = run(args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty());
    }
    let out = run(&["render", "squid", "-i", "/no/such/file.json"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot read /no/such/file.json"));
}

/// Writes `text` as a config file in `dir` and returns its path.
fn config_file(dir: &std::path::Path, text: &str) -> String {
    let path = dir.join("wecom-allowlist.toml");
    fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn exclusions_do_not_depend_on_their_order() {
    let dir = tempfile::tempdir().unwrap();
    // rich.json lists the wildcard *.wecom.example.com.
    let seed = fixture("rich.json");
    let mut outputs = Vec::new();
    for domains in [
        r#"["x.wecom.example.com", "*.example.com"]"#,
        r#"["*.example.com", "x.wecom.example.com"]"#,
    ] {
        let config = config_file(dir.path(), &format!("[exclude]\ndomains = {domains}\n"));
        let out = run(
            &[
                "render",
                "squid",
                "-i",
                seed.to_str().unwrap(),
                "--config",
                &config,
            ],
            None,
        );
        assert!(out.status.success(), "{domains}: {}", stderr(&out));
        let text = stdout(&out);
        let rules = text.lines().filter(|l| !l.starts_with('#'));
        assert!(
            !rules.clone().any(|l| l.contains("example.com")) && rules.count() > 2,
            "{domains}: {text}"
        );
        outputs.push(text);
    }
    assert_eq!(outputs[0], outputs[1]);
}

#[test]
fn extra_entries_refuse_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let seed = fixture("seed.json");
    for (entry, message) in [
        (
            "[[extra.ip_list]]\nip = \"115.238.203.1\"\nprotocol = \"TCP\"\nport = [443]\nis_necessary = 1\ndescripton = \"typo\"\n",
            r#"extra.ip_list[0]: unknown key "descripton""#,
        ),
        (
            "[[extra.domain_list]]\ndomain = \"a.example.com\"\nuniversal_domian = \"example.com\"\nuniversal_domain = \"other.example.com\"\nprotocol = \"TCP\"\nport = [443]\nis_necessary = 1\n",
            "extra.domain_list[0].universal_domain:",
        ),
    ] {
        let config = config_file(dir.path(), entry);
        let out = run(
            &[
                "render",
                "squid",
                "-i",
                seed.to_str().unwrap(),
                "--config",
                &config,
            ],
            None,
        );
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(out.stdout.is_empty());
        assert!(stderr(&out).contains(message), "{}", stderr(&out));
    }
}

#[test]
fn non_public_addresses_are_a_guard_unless_allowed_or_the_users_own() {
    for (ip, says) in [
        ("169.254.169.254", "lies inside 169.254.0.0/16 (link-local"),
        ("127.0.0.1", "lies inside 127.0.0.0/8 (loopback"),
        ("10.0.0.0/8", "lies inside 10.0.0.0/8 (private use"),
        ("192.168.1.1", "lies inside 192.168.0.0/16 (private use"),
        (
            "100.64.0.0/10",
            "lies inside 100.64.0.0/10 (shared address space",
        ),
        ("100.0.0.0/8", "overlaps 100.64.0.0/10"),
        ("224.0.0.251", "lies inside 224.0.0.0/4 (multicast"),
        ("198.18.0.1", "lies inside 198.18.0.0/15 (benchmarking"),
        ("0.0.0.0", "lies inside 0.0.0.0/8"),
        ("fd00::1", "lies inside fc00::/7 (unique local"),
        ("fe80::1", "lies inside fe80::/10 (link-local"),
        ("2001:db8::/32", "lies inside 2001:db8::/32 (documentation"),
        ("64:ff9b::a00:1", "lies inside 64:ff9b::/96 (NAT64"),
        ("64:ff9b:1::/48", "lies inside 64:ff9b:1::/48"),
    ] {
        let doc = doc_with_ip_entry(&format!(
            r#"{{"ip":"{ip}","protocol":"TCP","port":[443],"is_necessary":1}}"#
        ));
        refused(&doc, &[], 4, &format!("ip_list[1].ip: \"{ip}\" {says}"));
        refused(&doc, &[], 4, "--allow-nonpublic to proceed");
        let out = run(
            &["render", "nftables", "-i", "-", "--allow-nonpublic"],
            Some(doc.as_bytes()),
        );
        assert!(out.status.success(), "{ip}: {}", stderr(&out));
    }
    // An IPv4-mapped IPv6 value is never right: it is refused as invalid, whatever the flags.
    for (ip, says) in [
        ("::ffff:1.2.3.4", "write the IPv4 address 1.2.3.4 instead"),
        (
            "::ffff:10.0.0.0/120",
            "write the IPv4 network 10.0.0.0/24 instead",
        ),
    ] {
        let doc = doc_with_ip_entry(&format!(
            r#"{{"ip":"{ip}","protocol":"TCP","port":[443],"is_necessary":1}}"#
        ));
        refused(
            &doc,
            &["--allow-nonpublic", "--allow-broad"],
            2,
            &format!("ip_list[1].ip: \"{ip}\" is an IPv4-mapped IPv6"),
        );
        refused(&doc, &[], 2, says);
    }

    // The config's extras are the user's own, and building from the source.json that holds
    // them, with the same config, works too.
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        "[[extra.ip_list]]\nip = \"10.8.0.0/16\"\nprotocol = \"TCP\"\nport = [443]\nis_necessary = 1\n",
    );
    let seed = fixture("seed.json");
    let out_dir = dir.path().join("out");
    let build = |input: &str, with_config: bool| {
        let mut args = vec!["build", "-i", input, "--out-dir", out_dir.to_str().unwrap()];
        if with_config {
            args.extend(["--config", config.as_str()]);
        }
        run(&args, None)
    };
    let out = build(seed.to_str().unwrap(), true);
    assert!(out.status.success(), "{}", stderr(&out));
    let source = out_dir.join("source.json");
    let source_text = fs::read_to_string(&source).unwrap();
    assert!(source_text.contains("10.8.0.0/16"), "{source_text}");
    let copy = dir.path().join("source-copy.json");
    fs::copy(&source, &copy).unwrap();
    let out = build(copy.to_str().unwrap(), true);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = build(copy.to_str().unwrap(), false);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(r#".ip: "10.8.0.0/16" lies inside 10.0.0.0/8"#),
        "{}",
        stderr(&out)
    );
}

#[test]
fn duplicate_keys_and_leading_zeros_are_refused() {
    for (doc, message) in [
        (
            r#"{"errcode":45009,"errcode":0,"ip_list":[]}"#,
            r#"not valid JSON: the key "errcode" appears twice"#,
        ),
        (
            &format!(r#"{{"ip_list":[{GOOD_ENTRY}],"ip_list":[]}}"#),
            r#"the key "ip_list" appears twice"#,
        ),
        (
            r#"{"ip_list":[{"ip":"101.0.2.1","ip":"0.0.0.0/0","protocol":"TCP","port":[443],"is_necessary":1}]}"#,
            r#"the key "ip" appears twice"#,
        ),
        (
            &doc_with_ip_entry(
                r#"{"ip":"101.0.2.9","protocol":"TCP","port":["00443"],"is_necessary":1}"#,
            ),
            r#"ip_list[1].port: "00443" is not a port"#,
        ),
        (
            &doc_with_ip_entry(
                r#"{"ip":"101.0.0.0/08","protocol":"TCP","port":[443],"is_necessary":1}"#,
            ),
            r#"ip_list[1].ip: "101.0.0.0/08" has a prefix length with a leading zero"#,
        ),
    ] {
        refused(doc, &[], 2, message);
    }
}

#[cfg(unix)]
#[test]
fn dash_o_refuses_a_fifo_and_a_closed_stdout_is_an_error() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let seed = fixture("seed.json");
    let out = run(
        &[
            "render",
            "squid",
            "-i",
            seed.to_str().unwrap(),
            "-o",
            fifo.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not a regular file") && stderr(&out).contains("omit -o"),
        "{}",
        stderr(&out)
    );
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);

    // `>&-`: nothing can be written, and the exit code must say so. `>/dev/null` is fine.
    let bin = env!("CARGO_BIN_EXE_wecom-allowlist");
    let sh = |redirect: &str| {
        std::process::Command::new("sh")
            .args([
                "-c",
                &format!("exec \"$0\" render squid -i \"$1\" {redirect}"),
            ])
            .arg(bin)
            .arg(&seed)
            .output()
            .unwrap()
    };
    let closed = sh(">&-");
    assert_eq!(closed.status.code(), Some(2), "{}", stderr(&closed));
    assert!(
        stderr(&closed).contains("standard output is closed"),
        "{}",
        stderr(&closed)
    );
    let null = sh(">/dev/null");
    assert!(null.status.success(), "{}", stderr(&null));
}

#[test]
fn broad_unions_across_port_groups_and_wide_port_ranges_are_guards() {
    // 100.0.0.0/8 and 101.0.0.0/8 sit in different port groups but both allow 443.
    let doc = r#"{"ip_list":[
        {"ip":"100.0.0.0/8","protocol":"TCP","port":[443,1000],"is_necessary":1},
        {"ip":"101.0.0.0/8","protocol":"TCP","port":[443,1001],"is_necessary":1}]}"#;
    refused(
        doc,
        &["--allow-nonpublic"],
        4,
        "add up to 100.0.0.0/7 or more on tcp port 443",
    );
    for ports in [r#"["1-65535"]"#, r#"["2000-3024"]"#] {
        let doc = doc_with_ip_entry(&format!(
            r#"{{"ip":"101.0.2.9","protocol":"UDP","port":{ports},"is_necessary":1}}"#
        ));
        refused(
            &doc,
            &[],
            4,
            "ip_list[1].port: 101.0.2.9/32 would be allowed on",
        );
        let out = run(
            &["render", "nftables", "-i", "-", "--allow-broad"],
            Some(doc.as_bytes()),
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

#[test]
fn dnsmasq_sets_flag_picks_the_backend_and_overrides_the_config() {
    let seed = fixture("seed.json");
    let seed = seed.to_str().unwrap();
    let default = stdout(&run(&["render", "dnsmasq", "--input", seed], None));
    assert!(
        default.contains("\nnftset=/work.weixin.qq.com/4#inet#filter#"),
        "{default}"
    );
    let ipset = stdout(&run(
        &[
            "render",
            "dnsmasq",
            "--input",
            seed,
            "--dnsmasq-sets",
            "ipset",
        ],
        None,
    ));
    assert!(
        ipset.contains(
            "\nipset=/work.weixin.qq.com/w4_tcp_80_443_5055106f_3600,w6_tcp_80_443_5055106f_3600\n"
        ),
        "{ipset}"
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "[dnsmasq]\nsets = \"ipset\"\ntimeout = 600\n").unwrap();
    let config = config.to_str().unwrap();
    let from_config = stdout(&run(
        &["render", "dnsmasq", "--input", seed, "--config", config],
        None,
    ));
    assert!(from_config.contains("\nipset=/work.weixin.qq.com/w4_tcp_80_443_5055106f_600,"));
    let flag_wins = stdout(&run(
        &[
            "render",
            "dnsmasq",
            "--input",
            seed,
            "--config",
            config,
            "--dnsmasq-sets",
            "nftset",
        ],
        None,
    ));
    assert!(
        flag_wins.contains("\nnftset=/work.weixin.qq.com/"),
        "{flag_wins}"
    );
    let bad = run(
        &["render", "dnsmasq", "--input", seed, "--dnsmasq-sets", "pf"],
        None,
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(bad.stdout.is_empty());
}

/// Runs `script` with `program -c`, the binary's path in `$BIN`; returns its stdout, or panics
/// with its stderr.
fn shell(program: &str, args: &[&str], script: &str) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .arg("-c")
        .arg(script)
        .env("BIN", env!("CARGO_BIN_EXE_wecom-allowlist"))
        .env_remove("WECOM_ALLOWLIST_CONFIG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    assert!(
        out.status.success(),
        "{program} -c {script:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn completions_for_every_shell_are_generated_and_loaded_by_bash_zsh_and_fish() {
    for sh in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = run(&["completions", sh], None);
        assert!(out.status.success(), "{sh}: {}", stderr(&out));
        let script = stdout(&out);
        // Every command is offered, whatever the shell.
        for cmd in [
            "render",
            "build",
            "diff",
            "targets",
            "fetch",
            "completions",
            "man",
        ] {
            assert!(script.contains(cmd), "{sh} completion lacks {cmd}");
        }
    }
    let bad = run(&["completions", "tcsh"], None);
    assert_eq!(bad.status.code(), Some(2));
    assert!(bad.stdout.is_empty());

    // Loaded, then asked to complete `wecom-allowlist bu`: each shell must answer `build`.
    if crate::real_tools::require_tool("bash") {
        let got = shell(
            "bash",
            &["--norc", "--noprofile"],
            r#"source <("$BIN" completions bash) && spec=$(complete -p wecom-allowlist) &&
               f=${spec##*-F } && f=${f%% *} &&
               COMP_WORDS=(wecom-allowlist bu) COMP_CWORD=1 COMP_LINE='wecom-allowlist bu' COMP_POINT=18 &&
               "$f" wecom-allowlist bu wecom-allowlist && printf '%s\n' "${COMPREPLY[@]}""#,
        );
        assert!(got.lines().any(|l| l == "build"), "bash offered {got:?}");
    }
    if crate::real_tools::require_tool("zsh") {
        let got = shell(
            "zsh",
            &["-f"],
            r#"autoload -U compinit && compinit -u -D && source <("$BIN" completions zsh) &&
               print -r -- "$_comps[wecom-allowlist]" && (( $+functions[_wecom-allowlist] )) && print defined"#,
        );
        assert_eq!(got, "_wecom-allowlist\ndefined\n", "zsh registered {got:?}");
    }
    if crate::real_tools::require_tool("fish") {
        let got = shell(
            "fish",
            &["--no-config"],
            r#""$BIN" completions fish | source; complete -C 'wecom-allowlist bu'"#,
        );
        assert!(
            got.lines().any(|l| l.split('\t').next() == Some("build")),
            "fish offered {got:?}"
        );
    }
}

#[test]
fn man_prints_a_page_that_groff_and_man_read_without_a_warning() {
    let out = run(&["man"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let page = stdout(&out);
    assert!(page.starts_with(".ie \\n(.g .ds Aq \\(aq") || page.contains(".TH wecom-allowlist 1"));
    // One section per command, holding its options.
    for cmd in [
        "render",
        "build",
        "diff",
        "explain",
        "targets",
        "fetch",
        "completions",
        "man",
    ] {
        assert!(
            page.contains(&format!(".SH \"wecom-allowlist {cmd}\"")),
            "no section for {cmd}"
        );
    }
    assert!(page.contains("\\-\\-out\\-dir") && page.contains("\\-\\-format"));
    if crate::real_tools::require_tool("groff") {
        let mut child = std::process::Command::new("groff")
            .args(["-k", "-man", "-Tutf8", "-ww", "-z"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("groff starts");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("piped");
            stdin.write_all(page.as_bytes()).expect("groff reads");
        }
        let done = child.wait_with_output().expect("groff runs");
        let warnings = String::from_utf8_lossy(&done.stderr);
        assert!(done.status.success() && warnings.is_empty(), "{warnings}");
    }
    if crate::real_tools::require_tool("man") {
        let text = shell(
            "bash",
            &["--norc", "--noprofile"],
            r#"set -o pipefail; "$BIN" man | LANG=C.UTF-8 MANWIDTH=100 man -l -"#,
        );
        assert!(text.contains("wecom-allowlist build"), "{text}");
        let warnings = shell(
            "bash",
            &["--norc", "--noprofile"],
            r#"set -o pipefail; "$BIN" man | LANG=C.UTF-8 MANWIDTH=100 man -l - 2>&1 >/dev/null"#,
        );
        assert_eq!(warnings, "");
    }
}

#[test]
fn build_says_which_files_it_wrote_and_quiet_silences_it() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let seed = fixture("seed.json");
    let rich = fixture("rich.json");
    let build = |input: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "build",
            "--input",
            input.to_str().unwrap(),
            "--out-dir",
            out_dir.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = run(&args, None);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(out.stdout.is_empty());
        stderr(&out)
    };
    let path = |name: &str| out_dir.join(name).display().to_string();
    let first = build(&seed, &[]);
    for t in TARGETS {
        let line = format!("wecom-allowlist: wrote {} (new)", path(target_file(t)));
        assert!(first.lines().any(|l| l == line), "{line:?} not in {first}");
    }
    // Every target's file, source.json and the plain lists.
    let lists = fs::read_dir(out_dir.join("lists")).unwrap().count();
    let files = TARGETS.len() + 1 + lists;
    let all_new = format!("wecom-allowlist: {files} written, 0 unchanged\n");
    assert!(first.ends_with(&all_new), "{first}");
    let again = build(&seed, &[]);
    assert!(
        again.contains(&format!(
            "wecom-allowlist: unchanged {}\n",
            path("squid.conf")
        )),
        "{again}"
    );
    let none = format!("wecom-allowlist: 0 written, {files} unchanged\n");
    assert!(again.ends_with(&none), "{again}");
    let changed = build(&rich, &["--max-shrink", "100"]);
    assert!(
        changed.contains(&format!(
            "wecom-allowlist: wrote {} (changed)\n",
            path("source.json")
        )),
        "{changed}"
    );
    assert_eq!(build(&seed, &["--max-shrink", "100", "--quiet"]), "");
    assert_eq!(build(&seed, &["-q"]), "");
}

#[test]
fn targets_take_commas_and_the_config_comes_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let seed = fixture("seed.json");
    let out = run(
        &[
            "build",
            "--input",
            seed.to_str().unwrap(),
            "--out-dir",
            out_dir.to_str().unwrap(),
            "--target",
            "squid,nftables",
            "--target",
            "pfsense",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mut names: Vec<String> = fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "lists",
            "nftables.nft",
            "pfsense.xml",
            "source.json",
            "squid.conf"
        ]
    );

    let config = config_file(dir.path(), "[iptables]\nchain = \"FROM_ENV\"\n");
    let render = |env: &[(&str, &str)], extra: &[&str]| {
        let mut args = vec!["render", "iptables", "--input", seed.to_str().unwrap()];
        args.extend_from_slice(extra);
        crate::support::run_env(&args, None, env)
    };
    let out = render(&[("WECOM_ALLOWLIST_CONFIG", &config)], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(":FROM_ENV - [0:0]"),
        "{}",
        stdout(&out)
    );
    // --config wins over the variable; an empty variable counts as unset.
    let flag_dir = dir.path().join("flag");
    fs::create_dir(&flag_dir).unwrap();
    let other = config_file(&flag_dir, "[iptables]\nchain = \"FROM_FLAG\"\n");
    let out = render(
        &[("WECOM_ALLOWLIST_CONFIG", &config)],
        &["--config", &other],
    );
    assert!(
        stdout(&out).contains(":FROM_FLAG - [0:0]"),
        "{}",
        stderr(&out)
    );
    let out = render(&[("WECOM_ALLOWLIST_CONFIG", "")], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(":WECOM_ALLOW - [0:0]"));
    let out = render(
        &[("WECOM_ALLOWLIST_CONFIG", "/nonexistent/wecom.toml")],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/nonexistent/wecom.toml"),
        "{}",
        stderr(&out)
    );
}

/// Every argument of every command, walked in clap's own tree: none without a description.
#[test]
fn every_option_of_every_command_has_help() {
    use clap::CommandFactory;
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path} {}", arg.get_id()));
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
    let mut cmd = wecom_allowlist::cli::Cli::command();
    cmd.build();
    let mut missing = Vec::new();
    walk(&cmd, "wecom-allowlist", &mut missing);
    assert!(missing.is_empty(), "arguments without help: {missing:?}");
}

/// The help text of every command, reviewed: a change to what users read shows in review.
#[test]
fn help_text_of_every_command() {
    for cmd in [
        "",
        "render",
        "build",
        "diff",
        "explain",
        "targets",
        "fetch",
        "completions",
        "man",
    ] {
        let mut args = vec!["help"];
        if !cmd.is_empty() {
            args.push(cmd);
        }
        // A fixed width: clap wraps help to the terminal's (COLUMNS here).
        let out = crate::support::run_env(&args, None, &[("COLUMNS", "100")]);
        assert!(out.status.success(), "{}", stderr(&out));
        let name = if cmd.is_empty() { "top" } else { cmd };
        insta::assert_snapshot!(format!("help_{name}"), stdout(&out));
    }
}

#[test]
fn clap_and_the_tool_print_errors_with_one_prefix() {
    let seed = fixture("seed.json");
    for args in [
        vec!["bogus"],
        vec!["render", "nosuchtarget"],
        vec!["build", "--input", seed.to_str().unwrap()],
        vec!["diff", "--format", "yaml", "a", "b"],
        vec!["render", "squid", "--input", "/nonexistent.json"],
    ] {
        let out = run(&args, None);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(out.stdout.is_empty());
        assert!(
            err.starts_with("wecom-allowlist: error: "),
            "{args:?}: {err:?}"
        );
        assert!(!err.contains("\x1b["), "colours in {err:?}");
    }
    // Help and version are not errors.
    for args in [["--help"], ["--version"]] {
        let out = run(&args, None);
        assert!(out.status.success());
        assert!(!stdout(&out).is_empty());
    }
}

#[test]
fn a_file_as_out_dir_and_dash_o_into_a_missing_folder_get_plain_messages() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    fs::write(&file, "keep").unwrap();
    let seed = fixture("seed.json");
    let seed = seed.to_str().unwrap();
    for extra in [&[][..], &["--check"][..]] {
        let mut args = vec![
            "build",
            "--input",
            seed,
            "--out-dir",
            file.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = run(&args, None);
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(
            stderr(&out),
            format!(
                "wecom-allowlist: error: cannot write {}: it is a file, not a folder: --out-dir takes a folder\n",
                file.display()
            )
        );
        assert_eq!(fs::read(&file).unwrap(), b"keep");
    }
    let missing = dir.path().join("missing");
    let target = missing.join("squid.conf");
    let out = run(
        &[
            "render",
            "squid",
            "--input",
            seed,
            "-o",
            target.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!(
            "wecom-allowlist: error: cannot write {}: the folder {} does not exist\n",
            target.display(),
            missing.display()
        )
    );
    let inside_file = file.join("squid.conf");
    let out = run(
        &[
            "render",
            "squid",
            "--input",
            seed,
            "-o",
            inside_file.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        !err.contains(".wecom-allowlist-") && err.contains("is not a folder"),
        "{err}"
    );
}

#[test]
fn exclusions_that_match_nothing_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    // One of each kind that matches (a wildcard over listed names, a listed name, a network
    // around a listed address) and one of each that doesn't.
    let config = config_file(
        dir.path(),
        r#"[exclude]
domains = ["*.wrok.weixin.qq.com", "*.work.weixin.qq.com", "zzz.example.com", "short.qq.com"]
cidrs = ["203.0.113.0/24", "101.0.0.0/8"]
"#,
    );
    let rich = fixture("rich.json");
    let out = run(
        &[
            "render",
            "squid",
            "--input",
            rich.to_str().unwrap(),
            "--config",
            &config,
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let warned: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("matches no entry"))
        .collect();
    assert_eq!(
        warned,
        [
            "wecom-allowlist: warning: exclude.domains \"*.wrok.weixin.qq.com\" matches no entry of the list: it excludes nothing (a typo?)",
            "wecom-allowlist: warning: exclude.domains \"zzz.example.com\" matches no entry of the list: it excludes nothing (a typo?)",
            "wecom-allowlist: warning: exclude.cidrs \"203.0.113.0/24\" matches no entry of the list: it excludes nothing (a typo?)",
        ],
        "{err}"
    );
}

#[test]
fn diff_json_gives_ports_as_numbers_or_ranges_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.json");
    let new = dir.path().join("new.json");
    fs::write(
        &old,
        r#"{"errcode":0,"errmsg":"ok","ip_list":[
        {"ip":"101.0.2.1","protocol":"TCP","port":[443],"is_necessary":1},
        {"ip":"101.0.2.2","protocol":"TCP","port":[443],"is_necessary":1}]}"#,
    )
    .unwrap();
    fs::write(
        &new,
        r#"{"errcode":0,"errmsg":"ok","ip_list":[
        {"ip":"101.0.2.1","protocol":"TCP","port":[80,443,"8000-8100"],"is_necessary":1},
        {"ip":"101.0.2.3","protocol":"UDP","port":[3478],"is_necessary":0}]}"#,
    )
    .unwrap();
    let out = run(
        &[
            "diff",
            old.to_str().unwrap(),
            new.to_str().unwrap(),
            "--format",
            "json",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["counts"],
        serde_json::json!({"added": 1, "removed": 1, "changed": 1})
    );
    assert_eq!(
        json["changed"][0]["after"]["services"]["tcp"],
        serde_json::json!([80, 443, "8000-8100"])
    );
    assert_eq!(
        json["changed"][0]["before"]["services"]["tcp"],
        serde_json::json!([443])
    );
    assert_eq!(
        json["added"][0]["after"]["services"]["udp"],
        serde_json::json!([3478])
    );
}

/// A wildcard over a public suffix, or a `universal_domian` that is not the domain or a parent
/// of it, would allow names nobody listed: a guard, in WeCom's list and in the config's extras.
#[test]
fn wildcards_over_public_suffixes_or_unrelated_zones_are_a_guard() {
    let doc = |entry: &str| {
        format!(
            r#"{{"errcode":0,"ip_list":[{GOOD_ENTRY}],"domain_list":[{{"domain":"a.example.com","protocol":"TCP","port":[443],"is_necessary":1}},{entry}]}}"#
        )
    };
    for (entry, message) in [
        (
            r#"{"domain":"*.com.cn","protocol":"TCP","port":[443],"is_necessary":1}"#,
            r#"domain_list[1].domain: "*.com.cn" is a public suffix"#,
        ),
        (
            r#"{"domain":"*.co.uk","protocol":"TCP","port":[443],"is_necessary":1}"#,
            r#"domain_list[1].domain: "*.co.uk" is a public suffix"#,
        ),
        (
            r#"{"domain":"a.b.com.cn","universal_domian":"com.cn","protocol":"TCP","port":[443],"is_necessary":1}"#,
            r#"domain_list[1].universal_domian: "com.cn" is a public suffix"#,
        ),
        (
            r#"{"domain":"a.example.com","universal_domian":"evil.org","protocol":"TCP","port":[443],"is_necessary":1}"#,
            r#"domain_list[1].universal_domian: "evil.org" is neither the domain "a.example.com" nor a parent of it"#,
        ),
    ] {
        refused(&doc(entry), &[], 4, message);
    }
    // Exact domains ignore universal_domian, so the list builds.
    let unrelated = doc(
        r#"{"domain":"a.example.com","universal_domian":"evil.org","protocol":"TCP","port":[443],"is_necessary":1}"#,
    );
    let out = run(
        &["render", "squid", "--input", "-", "--exact-domains"],
        Some(unrelated.as_bytes()),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stdout(&out).contains("evil.org"));

    // The user's own wildcard over a public suffix is as much a hole.
    let dir = tempfile::tempdir().unwrap();
    let seed = fixture("seed.json");
    let config = config_file(
        dir.path(),
        "[[extra.domain_list]]\ndomain = \"*.co.uk\"\nprotocol = \"TCP\"\nport = [443]\nis_necessary = 1\n",
    );
    let out = run(
        &[
            "render",
            "squid",
            "-i",
            seed.to_str().unwrap(),
            "--config",
            &config,
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains(r#"extra.domain_list[0].domain: "*.co.uk" is a public suffix"#),
        "{}",
        stderr(&out)
    );
}

/// `[squid] clients` and `--squid-clients`: bad networks are refused naming the entry and the
/// escaped value (exit 2, nothing on stdout); an empty list is refused rather than read as
/// "nobody" or "everybody"; the flag replaces the config's list.
#[test]
fn squid_clients_are_validated_and_the_flag_wins() {
    let dir = tempfile::tempdir().unwrap();
    let seed = fixture("seed.json");
    let seed = seed.to_str().unwrap();
    for (toml, message) in [
        (
            "[squid]\nclients = [\"10.0.0.0/8\", \"10.0.0.1/8\"]\n",
            "squid.clients[1]: \"10.0.0.1/8\" has host bits set",
        ),
        (
            "[squid]\nclients = [\"lan\\n\"]\n",
            "squid.clients[0]: \"lan\\n\" is not an IPv4/IPv6 address or CIDR",
        ),
        ("[squid]\nclients = []\n", "squid.clients is empty"),
    ] {
        let config = config_file(dir.path(), toml);
        let out = run(
            &["render", "squid", "--input", seed, "--config", &config],
            None,
        );
        assert_eq!(out.status.code(), Some(2), "{toml}: {}", stderr(&out));
        assert!(out.stdout.is_empty());
        assert!(stderr(&out).contains(message), "{toml}: {}", stderr(&out));
    }
    let out = run(
        &[
            "render",
            "squid",
            "--input",
            seed,
            "--squid-clients",
            "10.0.0.0/33",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).starts_with("wecom-allowlist: error: ")
            && stderr(&out).contains("'10.0.0.0/33'")
            && stderr(&out).contains("is not an IPv4/IPv6 address or CIDR"),
        "{}",
        stderr(&out)
    );

    let config = config_file(
        dir.path(),
        "[squid]\nclients = [\"192.168.0.0/16\", \"fd00::/8\"]\n",
    );
    let from_config = stdout(&run(
        &["render", "squid", "--input", seed, "--config", &config],
        None,
    ));
    assert!(
        from_config.contains("\nacl wecom_clients src 192.168.0.0/16 fd00::/8\n"),
        "{from_config}"
    );
    let flag = stdout(&run(
        &[
            "render",
            "squid",
            "--input",
            seed,
            "--config",
            &config,
            "--squid-clients",
            "10.1.2.3",
        ],
        None,
    ));
    assert!(
        flag.contains("\nacl wecom_clients src 10.1.2.3\n") && !flag.contains("192.168."),
        "{flag}"
    );
    // Without clients, no src ACL and the allow lines are as before.
    let open = stdout(&run(&["render", "squid", "--input", seed], None));
    assert!(!open.contains("src ") && open.contains("\nhttp_access allow wecom_"));
}

/// `--templates` names the files a folder may replace: every built-in template, read here
/// from `templates/`, not from the code.
#[test]
fn templates_help_names_every_built_in_template() {
    let out = run(&["render", "--help"], None);
    let help = stdout(&out)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
    for entry in std::fs::read_dir(dir).expect("templates/") {
        let name = entry.expect("an entry").file_name();
        let name = name.to_str().expect("UTF-8");
        assert!(help.contains(name), "render --help doesn't name {name}");
    }
}
