//! WeCom's api and callback lists (`get_api_domain_ip`, `getcallbackip`): a list's kind travels
//! with it and a mix-up is refused; the same validation, guards and GitOps features as the
//! server list; the callback list's ingress files, and only the targets that apply to a list.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use sha2::{Digest, Sha256};
use wecom_allowlist::endpoint::ListName;
use wecom_allowlist::Target;

use crate::support::{fixture, render, run, stderr, stdout};

pub fn list_fixture(name: &str) -> PathBuf {
    fixture("endpoints").join(name)
}

/// A fixture's text with the mark `fetch` adds, as `"list": kind`.
fn marked(fixture_name: &str, kind: &str) -> String {
    let mut doc: serde_json::Value =
        serde_json::from_slice(&fs::read(list_fixture(fixture_name)).unwrap()).unwrap();
    doc.as_object_mut()
        .unwrap()
        .insert("list".into(), serde_json::Value::from(kind));
    serde_json::to_string_pretty(&doc).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, text).unwrap();
    path
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Checks the failure contract: the exit code, nothing on standard output, an error that
/// holds every needle. Returns standard error.
fn fails(out: &Output, code: i32, needles: &[&str]) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(out.stdout.is_empty(), "stdout on failure: {}", stdout(out));
    let error = &err[err
        .find("wecom-allowlist: error: ")
        .unwrap_or_else(|| panic!("no error line in {err}"))..];
    for needle in needles {
        assert!(error.contains(needle), "{needle:?} not in {error}");
    }
    err
}

/// Every file of a folder by name, those of its sub-folders (`lists/`) as `lists/NAME`.
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

#[test]
fn every_target_of_each_list_is_snapshotted() {
    for (list, file) in [
        (ListName::Api, "api.json"),
        (ListName::Callback, "callback.json"),
    ] {
        for t in Target::for_list(list) {
            let text = render(t.name(), &list_fixture(file), &["--list", list.name()]);
            insta::assert_snapshot!(format!("{}_{}", list.name(), t.name()), text);
        }
    }
    // Two callback ports: multiport, an nft set of ports, a pfSense port alias.
    for t in ["iptables", "nftables", "pfsense"] {
        let text = render(
            t,
            &list_fixture("callback.json"),
            &["--list", "callback", "--callback-port", "443,8443"],
        );
        insta::assert_snapshot!(format!("callback_two_ports_{t}"), text);
    }
}

#[test]
fn a_list_of_another_kind_is_refused_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let seed = fixture("seed.json");
    let callback = write(dir.path(), "cb.json", &marked("callback.json", "callback"));
    let api = write(dir.path(), "api.json", &marked("api.json", "api"));
    let raw = list_fixture("callback.json");
    for (args, needles) in [
        (
            vec!["render", "iptables", "--list", "callback", "-i", s(&seed)],
            vec![
                "the server list (get_server_domain_ip), not the callback list (getcallbackip)",
                "an egress list rendered as an ingress allowlist is a wrong firewall",
                "pass --list server",
            ],
        ),
        (
            vec!["render", "iptables", "--list", "api", "-i", s(&callback)],
            vec![
                "the callback list (getcallbackip), not the api list (get_api_domain_ip)",
                "an ingress list rendered as an egress allowlist is a wrong firewall",
                "pass --list callback",
            ],
        ),
        (
            vec!["render", "iptables", "-i", s(&api)],
            vec![
                "the api list (get_api_domain_ip), not the server list",
                "pass --list api",
            ],
        ),
        (
            vec!["render", "nftables", "--list", "callback", "-i", s(&api)],
            vec!["the api list", "not the callback list", "wrong firewall"],
        ),
        (
            vec![
                "build",
                "-i",
                s(&raw),
                "--out-dir",
                s(&dir.path().join("o")),
            ],
            vec![
                "the api or the callback list",
                "not the server list",
                "pass --list api or --list callback",
            ],
        ),
    ] {
        fails(&run(&args, None), 2, &needles);
    }
    assert!(!dir.path().join("o").exists());
    // A mark that contradicts the entries, or that names no list.
    for (doc, needle) in [
        (
            r#"{"errcode":0,"list":"callback","ip_list":[{"ip":"1.2.3.4","protocol":"TCP","port":[443],"is_necessary":1}]}"#,
            "list: says the callback list (getcallbackip), but the entries have the shape of the server list",
        ),
        (
            r#"{"errcode":0,"list":"server","ip_list":["1.2.3.4"]}"#,
            "list: says the server list",
        ),
        (
            r#"{"errcode":0,"list":"egress\n","ip_list":["1.2.3.4"]}"#,
            r#"list: "egress\n" is not server, api or callback"#,
        ),
        (r#"{"errcode":0,"list":7,"ip_list":["1.2.3.4"]}"#, "list: must be a string"),
    ] {
        let out = run(
            &["render", "iptables", "--list", "callback", "-i", "-"],
            Some(doc.as_bytes()),
        );
        fails(&out, 2, &[needle]);
    }
    // A raw answer is taken as --list says, with a warning; a marked one without.
    let out = run(
        &["render", "nginx", "--list", "callback", "-i", s(&raw)],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("doesn't say which list it holds"),
        "{}",
        stderr(&out)
    );
    let out = run(
        &["render", "nginx", "--list", "callback", "-i", s(&callback)],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
}

#[test]
fn targets_that_do_not_apply_are_refused_with_the_reason() {
    let cb = list_fixture("callback.json");
    let api = list_fixture("api.json");
    for (target, list, file, needle) in [
        (
            "squid",
            "callback",
            &cb,
            "Squid is a forward proxy for outbound requests",
        ),
        ("dnsmasq", "callback", &cb, "the DNS-fed sets serve names"),
        ("ipset", "callback", &cb, "the DNS-fed sets serve names"),
        ("dnsmasq", "api", &api, "the api list holds only addresses"),
        ("ipset", "api", &api, "the api list holds only addresses"),
        ("nginx", "api", &api, "it holds the callback list only"),
        (
            "nginx",
            "server",
            &fixture("seed.json"),
            "it holds the callback list only",
        ),
    ] {
        let out = run(&["render", target, "--list", list, "-i", s(file)], None);
        fails(
            &out,
            2,
            &[
                &format!("{target} doesn't apply to the {list} list"),
                needle,
            ],
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("cb");
    let out = run(
        &[
            "build",
            "--list",
            "callback",
            "-i",
            s(&cb),
            "--out-dir",
            s(&out_dir),
            "--target",
            "nftables,squid",
        ],
        None,
    );
    fails(
        &out,
        2,
        &["--target squid doesn't apply to the callback list"],
    );
    assert!(!out_dir.exists());
}

#[test]
fn build_writes_only_the_targets_of_the_list_and_a_source_json_of_its_shape() {
    let dir = tempfile::tempdir().unwrap();
    for (list, file, files) in [
        (
            "callback",
            "callback.json",
            [
                "ip6tables.rules",
                "iptables.rules",
                "nftables.nft",
                "nginx.conf",
                "pfsense.xml",
                "source.json",
            ],
        ),
        (
            "api",
            "api.json",
            [
                "ip6tables.rules",
                "iptables.rules",
                "nftables.nft",
                "pfsense.xml",
                "source.json",
                "squid.conf",
            ],
        ),
    ] {
        let out_dir = dir.path().join(list);
        let input = list_fixture(file);
        let out = run(
            &[
                "build",
                "--list",
                list,
                "-i",
                s(&input),
                "--out-dir",
                s(&out_dir),
            ],
            None,
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let built = contents(&out_dir);
        let (lists, top): (Vec<&str>, Vec<&str>) = built
            .keys()
            .map(String::as_str)
            .partition(|n| n.starts_with("lists/"));
        assert_eq!(top, files);
        // The plain lists of the addresses, one per family, as for the server list.
        assert_eq!(
            lists,
            [
                "lists/index.json",
                "lists/v4_tcp_443.txt",
                "lists/v6_tcp_443.txt"
            ]
        );
        let source = String::from_utf8(built["source.json"].clone()).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&source).unwrap();
        assert_eq!(doc["list"], list, "{source}");
        let input_doc: serde_json::Value =
            serde_json::from_slice(&fs::read(&input).unwrap()).unwrap();
        // Every address as the answer gave it (not aggregated: the list, not the rules).
        let mut want: Vec<&str> = input_doc["ip_list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let mut got: Vec<&str> = doc["ip_list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        want.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, want, "{source}");
        let digest = format!("sha256:{:x}", Sha256::digest(source.as_bytes()));
        for (name, bytes) in &built {
            if name != "source.json" && !name.ends_with(".txt") {
                let text = String::from_utf8_lossy(bytes);
                assert!(text.contains(&digest), "{name} doesn't cite {digest}");
                let call = if list == "api" {
                    "get_api_domain_ip"
                } else {
                    "getcallbackip"
                };
                if !name.starts_with("lists/") {
                    assert!(text.contains(&format!("WeCom's {call} list")), "{name}");
                }
            }
        }
        // Built again from its own source.json: the same bytes, and --check agrees.
        let again = dir.path().join(format!("{list}-again"));
        let source_path = out_dir.join("source.json");
        let out = run(
            &[
                "build",
                "--list",
                list,
                "-i",
                s(&source_path),
                "--out-dir",
                s(&again),
            ],
            None,
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(contents(&again), built);
        let out = run(
            &[
                "build",
                "--list",
                list,
                "-i",
                s(&input),
                "--out-dir",
                s(&out_dir),
                "--check",
            ],
            None,
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
}

#[test]
fn check_diff_and_the_shrink_guard_work_on_the_callback_list() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("cb");
    let old = list_fixture("callback.json");
    let out = run(
        &[
            "build",
            "--list",
            "callback",
            "-i",
            s(&old),
            "--out-dir",
            s(&out_dir),
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let before = contents(&out_dir);
    let new = write(
        dir.path(),
        "new.json",
        r#"{"errcode":0,"errmsg":"ok","list":"callback","ip_list":["101.226.103.0/24","182.254.11.176","58.251.80.106","81.69.103.205","240e:97c:2f::/56","121.51.130.85"]}"#,
    );
    let out = run(
        &[
            "build",
            "--list",
            "callback",
            "-i",
            s(&new),
            "--out-dir",
            s(&out_dir),
            "--check",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = stdout(&out);
    assert!(report.contains("+allow 121.51.130.85;"), "{report}");
    assert!(report.contains("121.51.130.85"), "{report}");
    let out = run(&["diff", s(&out_dir.join("source.json")), s(&new)], None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stdout(&out).contains("121.51.130.85"), "{}", stdout(&out));
    // Five of six sources gone: refused, every file as it was.
    let shrunk = write(
        dir.path(),
        "shrunk.json",
        r#"{"errcode":0,"errmsg":"ok","list":"callback","ip_list":["182.254.11.176"]}"#,
    );
    let out = run(
        &[
            "build",
            "--list",
            "callback",
            "-i",
            s(&shrunk),
            "--out-dir",
            s(&out_dir),
        ],
        None,
    );
    fails(&out, 4, &["--max-shrink 50%"]);
    assert_eq!(contents(&out_dir), before);
    // Another port is an option of the build, not a change of the list.
    let out = run(
        &[
            "build",
            "--list",
            "callback",
            "-i",
            s(&old),
            "--out-dir",
            s(&out_dir),
            "--callback-port",
            "8443",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::read(out_dir.join("source.json")).unwrap(),
        before["source.json"]
    );
    assert!(fs::read_to_string(out_dir.join("iptables.rules"))
        .unwrap()
        .contains("--dport 8443"));
}

#[test]
fn one_folder_holds_one_list_and_diff_compares_one_list() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let seed = fixture("seed.json");
    let out = run(&["build", "-i", s(&seed), "--out-dir", s(&out_dir)], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = contents(&out_dir);
    let cb = write(dir.path(), "cb.json", &marked("callback.json", "callback"));
    let out = run(
        &[
            "build",
            "--list",
            "callback",
            "-i",
            s(&cb),
            "--out-dir",
            s(&out_dir),
        ],
        None,
    );
    fails(
        &out,
        2,
        &[
            "holds the server list (get_server_domain_ip), not the callback list",
            "build each list into a folder of its own",
        ],
    );
    assert_eq!(contents(&out_dir), before);
    let out = run(&["diff", s(&seed), s(&cb)], None);
    fails(
        &out,
        2,
        &["the old file holds the server list (get_server_domain_ip) and the new one the callback list"],
    );
    let api = write(dir.path(), "api.json", &marked("api.json", "api"));
    fails(&run(&["diff", s(&api), s(&cb)], None), 2, &["the api list"]);
    // A raw answer may be either plain list.
    let out = run(&["diff", s(&list_fixture("callback.json")), s(&cb)], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn plain_lists_are_validated_as_strictly_as_the_server_list() {
    for (doc, code, needles) in [
        (
            r#"{"errcode":0,"ip_list":["182.254.11.176","1.2.3.999"]}"#,
            2,
            vec![r#"ip_list[1]: "1.2.3.999" is not an IPv4/IPv6 address or CIDR"#],
        ),
        (
            r#"{"errcode":0,"ip_list":["101.226.103.1/25"]}"#,
            2,
            vec![
                "ip_list[0]",
                "has host bits set (did you mean 101.226.103.0/25?)",
            ],
        ),
        (
            "{\"errcode\":0,\"ip_list\":[\"1.2.3.4\\n\\u001b[31m\"]}",
            2,
            vec![r#""1.2.3.4\n\u{1b}[31m""#],
        ),
        (
            r#"{"errcode":0,"list":"callback","ip_list":["1.2.3.4",{"ip":"5.6.7.8"}]}"#,
            2,
            vec!["ip_list[1]: must be a string (an address or a CIDR), found an object"],
        ),
        (r#"{"errcode":0,"ip_list":"1.2.3.4"}"#, 2, vec!["ip_list"]),
        (
            r#"{"errcode":0,"ip_list":["1.2.3.4","1.2.3.4"],"ip_list":[]}"#,
            2,
            vec!["appears twice"],
        ),
        (
            r#"{"errcode":0,"ip_list":["182.254.11.176","10.0.0.0/8"]}"#,
            4,
            vec!["10.0.0.0/8"],
        ),
        (
            r#"{"errcode":0,"ip_list":["0.0.0.0/0"]}"#,
            4,
            vec!["--allow-broad"],
        ),
        (
            r#"{"errcode":0,"list":"callback","ip_list":[]}"#,
            4,
            vec!["empty"],
        ),
        (
            r#"{"ip_list":[],"errcode":42001,"errmsg":"access_token expired, hint: [1576065934_28_e0f], from ip: 9.30.0.138, more info at https://open.work.weixin.qq.com/devtool/query?e=42001"}"#,
            3,
            vec!["errcode 42001", "fetch a new one"],
        ),
        (
            r#"{"ip_list":[],"errcode":60020,"errmsg":"not allow to access from your ip, hint: [x], from ip: 203.0.113.9, more info at https://x"}"#,
            3,
            vec!["add 203.0.113.9 to the app's trusted IPs"],
        ),
    ] {
        let out = run(
            &["render", "nginx", "--list", "callback", "-i", "-"],
            Some(doc.as_bytes()),
        );
        fails(&out, code, &needles);
    }
    // The guards' flags apply as to the server list; --skip-invalid drops a bad entry.
    let out = run(
        &[
            "render",
            "nginx",
            "--list",
            "callback",
            "-i",
            "-",
            "--allow-nonpublic",
        ],
        Some(br#"{"errcode":0,"ip_list":["182.254.11.176","10.0.0.0/8"]}"#),
    );
    assert!(
        stdout(&out).contains("allow 10.0.0.0/8;"),
        "{}",
        stderr(&out)
    );
    let out = run(
        &[
            "render",
            "nginx",
            "--list",
            "callback",
            "-i",
            "-",
            "--skip-invalid",
        ],
        Some(br#"{"errcode":0,"ip_list":["182.254.11.176","x"]}"#),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(r#"skipped ip_list[1]: "x""#),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).ends_with("allow 182.254.11.176;\ndeny all;\n"));
}

#[test]
fn config_picks_the_list_its_ports_and_its_names() {
    let dir = tempfile::tempdir().unwrap();
    let conf = write(
        dir.path(),
        "c.toml",
        "[list]\nname = \"callback\"\n[callback]\nports = [8443, \"9000-9001\"]\nchain = \"CB_IN\"\n[iptables]\nchain = \"EGRESS\"\n",
    );
    let cb = list_fixture("callback.json");
    let ipt = render("iptables", &cb, &["--config", s(&conf)]);
    assert!(
        ipt.contains("-A CB_IN -s 182.254.11.176/32 -p tcp -m multiport --dports 8443,9000:9001 "),
        "{ipt}"
    );
    let ipt = render(
        "iptables",
        &cb,
        &[
            "--config",
            s(&conf),
            "--callback-port",
            "9443",
            "--chain",
            "CB2",
        ],
    );
    assert!(
        ipt.contains("-A CB2 -s 182.254.11.176/32 -p tcp -m tcp --dport 9443 "),
        "{ipt}"
    );
    // --list wins over [list]; the api list keeps its own chain, not [iptables]'s.
    let ipt = render(
        "iptables",
        &list_fixture("api.json"),
        &["--config", s(&conf), "--list", "api"],
    );
    assert!(
        ipt.contains("-A WECOM_API -d 182.254.11.176/32 -p tcp -m tcp --dport 443 "),
        "{ipt}"
    );
    // Defaults: each list's chains, sets and aliases have names of their own.
    let nft = render("nftables", &cb, &["--list", "callback"]);
    assert!(
        nft.contains("add chain inet filter wecom_callback\n"),
        "{nft}"
    );
    assert!(nft.contains("ip saddr {"), "{nft}");
    let pf = render("pfsense", &cb, &["--list", "callback"]);
    assert!(pf.contains("<interface>wan</interface>"), "{pf}");
    assert!(pf.contains("<name>WCCB_V4_TCP_443</name>"), "{pf}");
    let pf = render("pfsense", &cb, &["--list", "callback", "--pfsense-log"]);
    assert_eq!(pf.matches("<log></log>").count(), 2, "{pf}");
    let out = run(
        &[
            "render",
            "pfsense",
            "--list",
            "callback",
            "-i",
            s(&cb),
            "--pfsense-source",
            "lan",
        ],
        None,
    );
    fails(
        &out,
        2,
        &["--pfsense-source doesn't apply to the callback list"],
    );
    let nft = render("nftables", &list_fixture("api.json"), &["--list", "api"]);
    assert!(nft.contains("add chain inet filter wecom_api\n"), "{nft}");
    for (text, needle) in [
        ("[callback]\nports = [0]", "callback.ports"),
        ("[callback]\nports = []", "callback.ports"),
        ("[callback]\nport = [443]", "port"),
        ("[api]\nchain = \"OUTPUT\"", "[api]"),
        ("[callback]\nnft_chain = \"input\"", "[callback]"),
        ("[list]\nname = \"egress\"", "egress"),
    ] {
        let bad = write(dir.path(), "bad.toml", text);
        let out = run(
            &[
                "render",
                "nginx",
                "--list",
                "callback",
                "-i",
                s(&cb),
                "--config",
                s(&bad),
            ],
            None,
        );
        fails(&out, 2, &[needle]);
    }
    let out = run(
        &[
            "render",
            "nginx",
            "--list",
            "callback",
            "-i",
            s(&cb),
            "--callback-port",
            "0",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
}

/// The three-list CI example's build commands, run as written (the answers laid where its
/// fetch step saves them, marked as `fetch` marks them): each list lands in its own folder
/// with only its targets.
#[test]
fn the_three_list_ci_example_builds_each_list_into_its_folder() {
    let example = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/github-actions-three-lists.yml"),
    )
    .unwrap();
    let step = example
        .split("- name: Build every list")
        .nth(1)
        .and_then(|rest| rest.split("- name:").next())
        .expect("the build step");
    let script = step
        .replace("\\\n", " ")
        .replace("${{ vars.CALLBACK_PORT || '443' }}", "443");
    let commands: Vec<Vec<String>> = script
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("wecom-allowlist "))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .map(|w| w.trim_matches('"').to_owned())
                .collect()
        })
        .collect();
    assert_eq!(commands.len(), 3, "{step}");
    let dir = tempfile::tempdir().unwrap();
    for (list, call, text) in [
        (
            "server",
            "get_server_domain_ip",
            fs::read_to_string(fixture("seed.json")).unwrap(),
        ),
        ("api", "get_api_domain_ip", marked("api.json", "api")),
        (
            "callback",
            "getcallbackip",
            marked("callback.json", "callback"),
        ),
    ] {
        let folder = dir.path().join("allowlist").join(list);
        fs::create_dir_all(&folder).unwrap();
        fs::write(folder.join(format!("{call}.json")), text).unwrap();
    }
    for args in &commands {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wecom-allowlist"));
        let out = cmd.args(args).current_dir(dir.path()).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let names = |list: &str| -> Vec<String> {
        contents(&dir.path().join("allowlist").join(list))
            .into_keys()
            .filter(|n| !n.starts_with("lists/") && (!n.ends_with(".json") || n == "source.json"))
            .collect()
    };
    for list in [ListName::Server, ListName::Api, ListName::Callback] {
        let mut want: Vec<String> = Target::for_list(list)
            .iter()
            .map(|t| t.file_name().to_owned())
            .collect();
        want.push("source.json".into());
        want.sort();
        assert_eq!(names(list.name()), want, "{}", list.name());
    }
}

#[test]
fn explain_takes_the_list_and_its_targets() {
    let dir = tempfile::tempdir().unwrap();
    let cb = write(dir.path(), "cb.json", &marked("callback.json", "callback"));
    let out = run(
        &[
            "explain",
            "101.226.103.5:443",
            "--list",
            "callback",
            "-i",
            s(&cb),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("nginx: allowed"), "{}", stdout(&out));
    assert!(!stdout(&out).contains("squid"), "{}", stdout(&out));
    let out = run(
        &[
            "explain",
            "101.226.104.5:443",
            "--list",
            "callback",
            "-i",
            s(&cb),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = run(
        &[
            "explain",
            "101.226.103.5:443",
            "--list",
            "callback",
            "-i",
            s(&cb),
            "--target",
            "squid",
        ],
        None,
    );
    fails(
        &out,
        2,
        &["--target squid doesn't apply to the callback list"],
    );
    // The server list's explain is as before: no nginx.
    let out = run(
        &[
            "explain",
            "i.work.weixin.qq.com:443",
            "-i",
            s(&fixture("seed.json")),
        ],
        None,
    );
    assert!(!stdout(&out).contains("nginx"), "{}", stdout(&out));
}

/// `--ipset` needs ipset.rules, which only the server list has: with the api or callback list
/// it is refused (exit 2), rather than writing rules that match sets nothing creates.
#[test]
fn ipset_address_sets_are_refused_for_the_api_and_callback_lists() {
    for (list, fixture) in [("api", "api.json"), ("callback", "callback.json")] {
        let path = list_fixture(fixture);
        let out = crate::support::run(
            &[
                "render",
                "iptables",
                "--list",
                list,
                "--ipset",
                "-i",
                path.to_str().expect("UTF-8 path"),
            ],
            None,
        );
        let err = crate::support::stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{list}: {err}");
        assert!(out.stdout.is_empty(), "{list}: something on stdout");
        assert!(
            err.contains("--ipset") && err.contains(list),
            "{list}: {err}"
        );
    }
}
