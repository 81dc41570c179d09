//! The plain lists (`lists/` in a build folder): read back, they allow exactly what the list
//! does (by the independent oracle), their index names every file, a group that disappears
//! takes its file with it, and `--check` sees all of it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::oracle::{
    check_same_addrs, check_same_names, parse_net_strict, parse_port_range, AddrBuilder, Expected,
    NameRelation, Proto,
};
use crate::support::{fixture, run, stderr, stdout};

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

/// The index, checked for its shape: every key, and every file it names is there.
fn read_index(lists: &Path) -> Vec<Value> {
    let index: Value = serde_json::from_slice(&fs::read(lists.join("index.json")).unwrap())
        .expect("index.json is JSON");
    let keys: BTreeSet<&str> = index
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["tool", "version", "digest", "files"]),
        "{index}"
    );
    assert_eq!(index["tool"], "wecom-allowlist");
    assert!(index["digest"].as_str().unwrap().starts_with("sha256:"));
    let files = index["files"].as_array().unwrap().clone();
    for f in &files {
        let keys: BTreeSet<&str> = f.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            BTreeSet::from(["file", "family", "protocol", "ports", "lines"]),
            "{f}"
        );
        let name = f["file"].as_str().unwrap();
        let family = f["family"].as_str().unwrap();
        assert!(["ipv4", "ipv6", "dns"].contains(&family), "{f}");
        let prefix = match family {
            "ipv4" => "v4_",
            "ipv6" => "v6_",
            _ => "dns_",
        };
        assert!(
            name.starts_with(prefix) && name.ends_with(".txt"),
            "{name} for {family}"
        );
        let text = fs::read_to_string(lists.join(name)).unwrap();
        assert_eq!(f["lines"], text.lines().count(), "{name}");
        assert!(text.ends_with('\n') && !text.contains("\n\n"), "{name}");
        assert!(!f["ports"].as_array().unwrap().is_empty(), "{f}");
    }
    // Nothing in the folder that the index doesn't name.
    let mut on_disk: Vec<String> = fs::read_dir(lists)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "index.json")
        .collect();
    on_disk.sort();
    let mut named: Vec<String> = files
        .iter()
        .map(|f| f["file"].as_str().unwrap().to_owned())
        .collect();
    named.sort();
    assert_eq!(on_disk, named, "files in lists/ and in its index differ");
    files
}

/// What the lists allow, read as a firewall would: each address file on its protocol and
/// ports; each name file with `*.x` for the names below x (whose apex must have a line of its
/// own, since `*.` doesn't cover it in the firewalls that read these).
fn read_back(lists: &Path) -> (crate::oracle::AddrRelation, BTreeMap<Proto, NameRelation>) {
    let mut addrs = AddrBuilder::default();
    let mut names: BTreeMap<Proto, NameRelation> = BTreeMap::new();
    for f in read_index(lists) {
        let name = f["file"].as_str().unwrap();
        let proto = Proto::parse(f["protocol"].as_str().unwrap()).unwrap();
        let ports: Vec<(u16, u16)> = f["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| match p {
                Value::Number(n) => {
                    let p = u16::try_from(n.as_u64().unwrap()).unwrap();
                    (p, p)
                }
                Value::String(s) => parse_port_range(s, '-').unwrap(),
                other => panic!("{name}: port {other}"),
            })
            .collect();
        let text = fs::read_to_string(lists.join(name)).unwrap();
        let lines: BTreeSet<&str> = text.lines().collect();
        assert_eq!(lines.len(), text.lines().count(), "{name}: a line repeats");
        for line in text.lines() {
            if f["family"] == "dns" {
                let rel = names.entry(proto).or_default();
                match line.strip_prefix("*.") {
                    Some(apex) => {
                        assert!(lines.contains(apex), "{name}: {line} without {apex}");
                        for &p in &ports {
                            rel.add_wildcard(apex, p);
                        }
                    }
                    None => {
                        for &p in &ports {
                            rel.add_exact(line, p);
                        }
                    }
                }
            } else {
                assert!(line.contains('/'), "{name}: {line} is not a CIDR");
                let (family, span) = parse_net_strict(line).unwrap();
                let want = if f["family"] == "ipv4" { "v4" } else { "v6" };
                assert_eq!(family.name(), want, "{name}: {line}");
                for &p in &ports {
                    addrs.add(family, proto, span, p);
                }
            }
        }
    }
    (addrs.build(), names)
}

#[test]
fn plain_lists_read_back_equal_the_list() {
    for name in ["seed.json", "rich.json", "v6_udp.json", "hostile.json"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let res = build(&fixture(name), &out, &[]);
        assert!(res.status.success(), "{name}: {}", stderr(&res));
        let (addrs, names) = read_back(&out.join("lists"));
        let expected = Expected::from_fixture(&fixture(name));
        if let Err(e) = check_same_addrs(&addrs, &expected.addrs) {
            panic!("{name}: {e}");
        }
        for proto in Proto::BOTH {
            let got = names.get(&proto).cloned().unwrap_or_default();
            if let Err(e) = check_same_names(&got, &expected.names(proto)) {
                panic!("{name} {}: {e}", proto.name());
            }
        }
    }
}

#[test]
fn plain_lists_are_byte_stable_and_named_after_their_group() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for out in [&a, &b] {
        assert!(build(&fixture("rich.json"), out, &[]).status.success());
    }
    let read = |d: &Path| -> BTreeMap<String, Vec<u8>> {
        fs::read_dir(d.join("lists"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    fs::read(e.path()).unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(read(&a), read(&b));
    let files = read(&a);
    // rich.json allows 101.20.0.0/23 and 101.30.0.0/16 on TCP 80 and 443, and the zone
    // work.weixin.qq.com with short.qq.com on the same ports.
    assert_eq!(
        String::from_utf8_lossy(&files["v4_tcp_80_443.txt"]),
        "101.20.0.0/23\n101.30.0.0/16\n"
    );
    assert_eq!(
        String::from_utf8_lossy(&files["dns_tcp_80_443.txt"]),
        "short.qq.com\nwork.weixin.qq.com\n*.work.weixin.qq.com\n"
    );
    let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
    let entry = index["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["file"] == "v4_tcp_80_443.txt")
        .unwrap();
    assert_eq!(
        entry,
        &serde_json::json!({"file": "v4_tcp_80_443.txt", "family": "ipv4", "protocol": "tcp", "ports": [80, 443], "lines": 2})
    );
}

#[test]
fn a_group_that_disappears_takes_its_list_file_along_and_check_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let lists = out.join("lists");
    let (rich, seed) = (fixture("rich.json"), fixture("seed.json"));
    assert!(build(&rich, &out, &[]).status.success());
    let names = |d: &Path| -> BTreeSet<String> {
        fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let before = names(&lists);
    // A file of the user's own in lists/ is never the tool's to remove.
    fs::write(lists.join("notes.txt"), "mine\n").unwrap();

    // --check sees the files that would go, as diffs to /dev/null, and removes nothing.
    let check = build(&seed, &out, &["--check", "--max-shrink", "100"]);
    assert_eq!(check.status.code(), Some(1), "{}", stderr(&check));
    let report = stdout(&check);
    let seed_dir = dir.path().join("seed");
    assert!(build(&seed, &seed_dir, &[]).status.success());
    let seed_names = names(&seed_dir.join("lists"));
    let gone: Vec<&String> = before.difference(&seed_names).collect();
    assert!(!gone.is_empty(), "the fixtures share every group");
    for name in &gone {
        let header = format!("--- a/{}\n+++ /dev/null\n", lists.join(name).display());
        assert!(report.contains(&header), "{header:?} not in {report}");
    }
    assert!(!report.contains("notes.txt"), "{report}");
    assert!(names(&lists).is_superset(&before), "--check removed a file");

    // The build removes them, says so, and leaves the user's file.
    let res = build(&seed, &out, &["--max-shrink", "100"]);
    assert!(res.status.success(), "{}", stderr(&res));
    for name in &gone {
        let line = format!("wecom-allowlist: removed {}\n", lists.join(name).display());
        assert!(
            stderr(&res).contains(&line),
            "{line:?} not in {}",
            stderr(&res)
        );
    }
    assert!(
        stderr(&res).ends_with(&format!(" {} removed\n", gone.len())),
        "{}",
        stderr(&res)
    );
    let mut want = seed_names.clone();
    want.insert("notes.txt".into());
    assert_eq!(names(&lists), want);
    assert_eq!(
        fs::read_to_string(lists.join("notes.txt")).unwrap(),
        "mine\n"
    );
    // And --check now agrees that nothing is left to do.
    let check = build(&seed, &out, &["--check"]);
    assert_eq!(check.status.code(), Some(0), "{}", stdout(&check));
}

#[test]
fn a_failed_build_keeps_the_list_files_it_would_have_removed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    assert!(build(&fixture("rich.json"), &out, &[]).status.success());
    let read_all = |d: &Path| -> BTreeMap<String, Vec<u8>> {
        fs::read_dir(d)
            .unwrap()
            .filter_map(|e| {
                let e = e.unwrap();
                e.file_type().unwrap().is_file().then(|| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        fs::read(e.path()).unwrap(),
                    )
                })
            })
            .collect()
    };
    // The index is written last of all; a folder in its place fails the build after every
    // other file was staged.
    let index = out.join("lists/index.json");
    fs::remove_file(&index).unwrap();
    fs::create_dir(&index).unwrap();
    let (top, lists) = (read_all(&out), read_all(&out.join("lists")));
    let res = build(&fixture("seed.json"), &out, &["--max-shrink", "100"]);
    assert_eq!(res.status.code(), Some(2), "{}", stderr(&res));
    assert!(res.stdout.is_empty());
    assert_eq!(read_all(&out), top, "a failed build changed a file");
    assert_eq!(
        read_all(&out.join("lists")),
        lists,
        "a failed build changed or removed a list"
    );
}
