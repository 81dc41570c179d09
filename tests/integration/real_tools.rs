//! Every target's output, for every fixture, fed to the real program that consumes it, and what
//! that program really holds afterwards compared with the `oracle`.
//!
//! Snapshots only show that the text didn't change; a parser only shows that it is well formed.
//! These tests catch a file the tool rejects or reads differently, a reload that doubles or keeps
//! rules, and a rule that allows more or less than WeCom's list. nft and iptables run only in a
//! throw-away user and network namespace (`unshare -rn`): never against the host's firewall.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

use crate::oracle::{
    check_same_addrs, check_same_names, normalize_name, parse_addr, parse_net, parse_port_range,
    AddrBuilder, AddrRelation, Expected, Family, NameRelation, Ports, Proto, Selection, Span,
    ALL_PORTS,
};
use crate::support::{fixtures, render};

/// The names the CLI uses by default, which these tests render with.
const IPT_CHAIN: &str = "WECOM_ALLOW";
const NFT_TABLE: &str = "filter";
const NFT_CHAIN: &str = "wecom_allow";
const PF_INTERFACE: &str = "lan";

/// Every fixture, sorted; an empty folder fails rather than passing vacuously.
fn fixture_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .expect("tests/fixtures is readable")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.json in {}", fixtures().display());
    files
}

/// Each fixture paired with the next one (the last with the first): every fixture is loaded
/// once over another list and once under one.
fn fixture_pairs() -> Vec<(PathBuf, PathBuf)> {
    let files = fixture_files();
    (0..files.len())
        .map(|i| (files[i].clone(), files[(i + 1) % files.len()].clone()))
        .collect()
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn on_path(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(name))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Why `unshare -rn true` can't run here, if it can't; probed once.
fn namespace_problem() -> Option<&'static str> {
    static PROBLEM: OnceLock<Option<String>> = OnceLock::new();
    PROBLEM
        .get_or_init(
            || match Command::new("unshare").args(["-rn", "true"]).output() {
                Ok(out) if out.status.success() => None,
                Ok(out) => Some(format!(
                    "`unshare -rn true` failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                Err(e) => Some(format!("`unshare -rn true` can't start: {e}")),
            },
        )
        .as_deref()
}

/// Whether `name` can run here; `unshare` also needs `unshare -rn true` to work. A missing tool
/// fails the test: a silent skip would hide a regression. Only an explicit
/// `WECOM_ALLOWLIST_SKIP_REAL_TOOLS=1` skips instead, and says so on stderr.
pub(crate) fn require_tool(name: &str) -> bool {
    let problem = if !on_path(name) {
        Some(format!("{name} is not on PATH"))
    } else if name == "unshare" {
        namespace_problem().map(str::to_owned)
    } else {
        None
    };
    let Some(problem) = problem else { return true };
    if std::env::var_os(SKIP_VAR).is_some_and(|v| v == "1") {
        eprintln!("skipped because {SKIP_VAR}=1: {problem}");
        return false;
    }
    panic!(
        "{problem}: these tests load every output into the real programs (install them as \
         .ci/run does, or set {SKIP_VAR}=1 to skip them knowingly)"
    );
}

/// The one way to skip the real-tool tests on a machine without the tools.
const SKIP_VAR: &str = "WECOM_ALLOWLIST_SKIP_REAL_TOOLS";

/// A missing program fails the test that needs it, whatever CI says; only the explicit
/// variable turns that into a skip.
#[test]
fn a_missing_tool_fails_unless_skipping_is_asked_for() {
    let skipping = std::env::var_os(SKIP_VAR).is_some_and(|v| v == "1");
    let result = std::panic::catch_unwind(|| require_tool("wecom-allowlist-no-such-tool"));
    match (skipping, result) {
        (true, Ok(false)) | (false, Err(_)) => {}
        (skipping, result) => panic!(
            "with {SKIP_VAR} {}, a missing tool gave {:?}",
            if skipping { "=1" } else { "unset" },
            result.map_err(|_| "a panic")
        ),
    }
}

/// Whether the tests run as real root, which `unshare -mn` and a large nft batch need; like a
/// missing tool, anything else fails unless the real-tool tests are skipped explicitly.
pub(crate) fn require_root(why: &str) -> bool {
    let root = Command::new("id").arg("-u").output().map(|o| o.stdout);
    if root.is_ok_and(|o| o == b"0\n") {
        return true;
    }
    if std::env::var_os(SKIP_VAR).is_some_and(|v| v == "1") {
        eprintln!("skipped because {SKIP_VAR}=1: not root, and {why}");
        return false;
    }
    panic!("this test needs root: {why} (or set {SKIP_VAR}=1 to skip it knowingly)");
}

/// A scratch folder for one check's files.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new() -> Scratch {
        Scratch(tempfile::tempdir().expect("a temporary folder"))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).expect("the scratch file is written");
        path
    }

    fn read(&self, name: &str) -> String {
        let path = self.path(name);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
    }

    /// Runs `sh -c script` in a new user and network namespace, with `args` as `$1`, `$2` ...
    fn in_namespace(&self, script: &str, args: &[&str]) -> Result<(), String> {
        let paths: Vec<PathBuf> = args.iter().map(|a| self.path(a)).collect();
        let out = Command::new("unshare")
            .args(["-rn", "sh", "-c", script, "sh"])
            .args(&paths)
            // Only the legacy iptables backend takes a lock; it must be somewhere writable.
            .env("XTABLES_LOCKFILE", self.path("xtables.lock"))
            .output()
            .map_err(|e| format!("unshare can't start: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "`{script}` failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

/// Every problem of one test, reported together with the fixture and target it concerns.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn check(&mut self, what: &str, result: Result<(), String>) {
        if let Err(e) = result {
            self.0.push(format!("{what}: {e}"));
        }
    }

    fn assert_none(self) {
        assert!(
            self.0.is_empty(),
            "{} failure(s):\n\n{}",
            self.0.len(),
            self.0.join("\n\n")
        );
    }
}

/// Joins the errors of several independent checks.
fn all(results: impl IntoIterator<Item = Result<(), String>>) -> Result<(), String> {
    let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}

fn once<T>(slot: &mut Option<T>, value: T, what: &str) -> Result<(), String> {
    if slot.replace(value).is_some() {
        return Err(format!("{what} appears twice"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// iptables / ip6tables

fn xtables(family: Family) -> &'static str {
    match family {
        Family::V4 => "iptables",
        Family::V6 => "ip6tables",
    }
}

fn xtables_tools(family: Family) -> bool {
    let cmd = xtables(family);
    require_tool("unshare")
        && require_tool("ipset")
        && require_tool(&format!("{cmd}-restore"))
        && require_tool(&format!("{cmd}-save"))
}

/// `iptables-save` output without its `#` lines (they carry a timestamp).
fn without_comments(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Words as iptables-restore splits them: only double quotes group, and inside them a backslash
/// escapes the next character.
fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let (mut in_word, mut quoted) = (false, false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => word.push(chars.next().ok_or("a backslash ends the line")?),
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// One `-A` rule's words after the chain name, added to `out`. Every option must be known.
fn parse_xtables_rule(
    family: Family,
    words: &[String],
    out: &mut AddrBuilder,
    set_rules: &mut SetRules,
) -> Result<(), String> {
    let (mut dst, mut proto, mut ports, mut target) = (None, None, None, None);
    let mut set: Option<String> = None;
    let mut it = words.iter();
    while let Some(option) = it.next() {
        let mut value = || {
            it.next()
                .map(String::as_str)
                .ok_or_else(|| format!("{option} has no value"))
        };
        match option.as_str() {
            "-d" => {
                let raw = value()?;
                let (f, span) = parse_net(raw)?;
                if f != family {
                    return Err(format!("-d {raw} is not {}", family.name()));
                }
                once(&mut dst, span, "-d")?;
            }
            "-p" => once(&mut proto, Proto::parse(value()?)?, "-p")?,
            "-m" => match value()? {
                "tcp" | "udp" | "multiport" | "comment" | "set" => {}
                other => return Err(format!("unknown match -m {other}")),
            },
            "--dport" => once(
                &mut ports,
                vec![parse_port_range(value()?, ':')?],
                "a port match",
            )?,
            "--dports" => {
                let list = value()?
                    .split(',')
                    .map(|r| parse_port_range(r, ':'))
                    .collect::<Result<Vec<Ports>, _>>()?;
                once(&mut ports, list, "a port match")?;
            }
            "--comment" => {
                value()?;
            }
            "--match-set" => {
                once(&mut set, value()?.to_owned(), "--match-set")?;
                if value()? != "dst" {
                    return Err("--match-set does not match the destination".into());
                }
            }
            "-j" => {
                once(&mut target, value()?.to_owned(), "-j")?;
                if it.len() > 0 {
                    return Err("-j must end the rule".into());
                }
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    if target.as_deref() != Some("ACCEPT") {
        return Err("the rule does not end in -j ACCEPT".into());
    }
    let proto = proto.ok_or("no -p: the rule matches every protocol")?;
    if let Some(name) = set {
        if dst.is_some() {
            return Err("a rule with both -d and --match-set".into());
        }
        let entry = set_rules.entry(name).or_default();
        for p in ports.unwrap_or_else(|| vec![ALL_PORTS]) {
            entry.push((family, proto, p));
        }
        return Ok(());
    }
    let dst = dst.unwrap_or_else(|| family.everything());
    for p in ports.unwrap_or_else(|| vec![ALL_PORTS]) {
        out.add(family, proto, dst, p);
    }
    Ok(())
}

/// What the rules allow for the addresses of each named set (nftables or ipset): the set's
/// family, protocol and ports, per rule that matches it.
type SetRules = BTreeMap<String, Vec<(Family, Proto, Ports)>>;

/// What `iptables-save` shows the allowlist chain allowing. Fails on a rule anywhere else, on a
/// built-in chain whose policy isn't ACCEPT, and on anything unknown.
fn parse_xtables_save(family: Family, text: &str) -> Result<AddrRelation, String> {
    parse_xtables_save_sets(family, text).map(|(addrs, _)| addrs)
}

/// `parse_xtables_save`, with what the rules allow for the addresses of each ipset set.
fn parse_xtables_save_sets(family: Family, text: &str) -> Result<(AddrRelation, SetRules), String> {
    let mut set_rules = SetRules::new();
    const BUILT_IN: [&str; 5] = ["INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING"];
    let mut out = AddrBuilder::default();
    let mut table: Option<&str> = None;
    let mut chain_declared = false;
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            table = Some(name);
            continue;
        }
        if line == "COMMIT" {
            table = None;
            continue;
        }
        let table = table.ok_or_else(|| format!("a line outside any table: {line}"))?;
        if let Some(decl) = line.strip_prefix(':') {
            let mut words = decl.split_whitespace();
            let (name, policy) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            if BUILT_IN.contains(&name) && policy != "ACCEPT" {
                return Err(format!(
                    "built-in chain {name} of table {table} has policy {policy}"
                ));
            }
            chain_declared |= table == "filter" && name == IPT_CHAIN;
            continue;
        }
        if let Some(rule) = line.strip_prefix("-A ") {
            let words = split_words(rule).map_err(|e| format!("{e}: {line}"))?;
            if table != "filter" || words.first().map(String::as_str) != Some(IPT_CHAIN) {
                return Err(format!("a rule outside filter/{IPT_CHAIN}: {line}"));
            }
            parse_xtables_rule(family, &words[1..], &mut out, &mut set_rules)
                .map_err(|e| format!("{e}: {line}"))?;
            continue;
        }
        return Err(format!("an unknown line: {line}"));
    }
    if !chain_declared {
        return Err(format!("chain {IPT_CHAIN} does not exist after loading"));
    }
    Ok((out.build(), set_rules))
}

/// Loads a fixture's rules twice; the ruleset must not change and must allow exactly the list.
fn xtables_load_twice(family: Family, fixture: &Path) -> Result<(), String> {
    let cmd = xtables(family);
    let scratch = Scratch::new();
    scratch.write("rules", &render(cmd, fixture, &[]));
    // The rules of the name groups match the sets of ipset.rules, which load first.
    scratch.write("ipset", &render("ipset", fixture, &[]));
    scratch.in_namespace(
        &format!(
            r#"ipset restore -exist < "$4" && {cmd}-restore --noflush < "$1" && {cmd}-save > "$2" && {cmd}-restore --noflush < "$1" && {cmd}-save > "$3""#
        ),
        &["rules", "first", "second", "ipset"],
    )?;
    let (first, second) = (
        without_comments(&scratch.read("first")),
        without_comments(&scratch.read("second")),
    );
    if first != second {
        return Err(format!(
            "loading twice changed the ruleset:\n--- after one load\n{first}--- after two\n{second}"
        ));
    }
    let expected = Expected::from_fixture(fixture)
        .addrs
        .only(|f, _| f == family);
    check_same_addrs(&parse_xtables_save(family, &first)?, &expected)
}

/// Loads `first`'s rules, then `second`'s: only `second`'s list may remain.
fn xtables_replace(family: Family, first: &Path, second: &Path) -> Result<(), String> {
    let cmd = xtables(family);
    let scratch = Scratch::new();
    scratch.write("first", &render(cmd, first, &[]));
    scratch.write("second", &render(cmd, second, &[]));
    scratch.write("ipset1", &render("ipset", first, &[]));
    scratch.write("ipset2", &render("ipset", second, &[]));
    scratch.in_namespace(
        &format!(r#"ipset restore -exist < "$4" && {cmd}-restore --noflush < "$1" && ipset restore -exist < "$5" && {cmd}-restore --noflush < "$2" && {cmd}-save > "$3""#),
        &["first", "second", "saved", "ipset1", "ipset2"],
    )?;
    let expected = Expected::from_fixture(second)
        .addrs
        .only(|f, _| f == family);
    check_same_addrs(
        &parse_xtables_save(family, &scratch.read("saved"))?,
        &expected,
    )
}

fn xtables_loads(family: Family) {
    if !xtables_tools(family) {
        return;
    }
    let mut failures = Failures::default();
    for fixture in fixture_files() {
        let what = format!("{} {}", xtables(family), file_name(&fixture));
        failures.check(&what, xtables_load_twice(family, &fixture));
    }
    failures.assert_none();
}

fn xtables_replaces(family: Family) {
    if !xtables_tools(family) {
        return;
    }
    let mut failures = Failures::default();
    for (first, second) in fixture_pairs() {
        let what = format!(
            "{} {} then {}",
            xtables(family),
            file_name(&first),
            file_name(&second)
        );
        failures.check(&what, xtables_replace(family, &first, &second));
    }
    failures.assert_none();
}

#[test]
fn iptables_loads_idempotently_and_allows_exactly_the_list() {
    xtables_loads(Family::V4);
}

#[test]
fn ip6tables_loads_idempotently_and_allows_exactly_the_list() {
    xtables_loads(Family::V6);
}

#[test]
fn iptables_reload_of_another_list_replaces_the_first() {
    xtables_replaces(Family::V4);
}

#[test]
fn ip6tables_reload_of_another_list_replaces_the_first() {
    xtables_replaces(Family::V6);
}

// ---------------------------------------------------------------------------------------------
// nftables

fn nft_tools() -> bool {
    require_tool("unshare") && require_tool("nft")
}

/// The one key of a JSON object such as `{"rule": {...}}`.
fn single_key(v: &Value) -> Result<(&str, &Value), String> {
    match v.as_object() {
        Some(obj) if obj.len() == 1 => obj
            .iter()
            .next()
            .map(|(k, v)| (k.as_str(), v))
            .ok_or_else(|| "an empty object".into()),
        _ => Err(format!("not a one-key object: {v}")),
    }
}

/// An address value: `"10.0.0.1"`, `{"prefix": {"addr", "len"}}` or `{"range": [a, b]}`.
fn nft_addr(v: &Value) -> Result<(Family, Span), String> {
    if let Some(s) = v.as_str() {
        return parse_net(s);
    }
    match single_key(v)? {
        ("prefix", p) => {
            let addr = p["addr"]
                .as_str()
                .ok_or_else(|| format!("a prefix without addr: {v}"))?;
            let len = p["len"]
                .as_u64()
                .ok_or_else(|| format!("a prefix without len: {v}"))?;
            parse_net(&format!("{addr}/{len}"))
        }
        ("range", Value::Array(ends)) if ends.len() == 2 => {
            let end = |i: usize| {
                ends[i]
                    .as_str()
                    .ok_or_else(|| format!("a range of non-addresses: {v}"))
            };
            let ((fa, a), (fb, b)) = (parse_addr(end(0)?)?, parse_addr(end(1)?)?);
            if fa != fb || a > b {
                return Err(format!("an invalid address range: {v}"));
            }
            Ok((fa, Span { start: a, end: b }))
        }
        _ => Err(format!("an unknown address expression: {v}")),
    }
}

/// A port value: `443`, `{"range": [a, b]}`.
fn nft_ports(v: &Value) -> Result<Ports, String> {
    let port = |v: &Value| {
        v.as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| format!("not a port: {v}"))
    };
    if v.is_number() {
        let p = port(v)?;
        return Ok((p, p));
    }
    match single_key(v)? {
        ("range", Value::Array(ends)) if ends.len() == 2 => Ok((port(&ends[0])?, port(&ends[1])?)),
        _ => Err(format!("an unknown port expression: {v}")),
    }
}

/// The elements of an anonymous set `{"set": [...]}`, or the value itself. An element with a
/// comment is wrapped: `{"elem": {"val": ..., "comment": ...}}`.
fn nft_values(v: &Value) -> Vec<&Value> {
    fn unwrap(e: &Value) -> &Value {
        match e.get("elem").and_then(|inner| inner.get("val")) {
            Some(val) if e.as_object().is_some_and(|o| o.len() == 1) => val,
            _ => e,
        }
    }
    match v.get("set").and_then(Value::as_array) {
        Some(items) if v.as_object().is_some_and(|o| o.len() == 1) => {
            items.iter().map(unwrap).collect()
        }
        _ => vec![unwrap(v)],
    }
}

/// A named set of addresses: its family and merged-or-not element spans.
fn nft_set(body: &Value) -> Result<(String, Family, Vec<Span>), String> {
    let name = body["name"].as_str().ok_or("a set without a name")?;
    let family = match body["type"].as_str() {
        Some("ipv4_addr") => Family::V4,
        Some("ipv6_addr") => Family::V6,
        _ => return Err(format!("set {name} has type {}", body["type"])),
    };
    let mut spans = Vec::new();
    for elem in body
        .get("elem")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        // An element with a comment is wrapped: {"elem": {"val": ..., "comment": ...}}.
        let value = match elem.get("elem") {
            Some(inner) => inner
                .get("val")
                .ok_or_else(|| format!("an element without val: {elem}"))?,
            None => elem,
        };
        let (f, span) = nft_addr(value)?;
        if f != family {
            return Err(format!("set {name} ({}) holds {value}", family.name()));
        }
        spans.push(span);
    }
    Ok((name.to_owned(), family, spans))
}

/// One rule of the allowlist chain: `match` expressions on ip/ip6 daddr and tcp/udp dport, then
/// `accept`. Anything else fails.
fn nft_rule(
    rule: &Value,
    sets: &HashMap<String, (Family, Vec<Span>)>,
    out: &mut AddrBuilder,
) -> Result<(), String> {
    let exprs = rule["expr"].as_array().ok_or("a rule without expr")?;
    let (last, matches) = exprs.split_last().ok_or("a rule without expressions")?;
    if last != &serde_json::json!({"accept": null}) {
        return Err(format!("the rule ends in {last}, not accept"));
    }
    let mut dst: Option<(Family, Vec<Span>)> = None;
    let mut l4: Option<(Proto, Vec<Ports>)> = None;
    for expr in matches {
        let m = match single_key(expr)? {
            ("match", m) if m["op"] == "==" => m,
            // Counts what the rule matches; changes nothing it allows.
            ("counter", _) => continue,
            _ => return Err(format!("an unknown expression: {expr}")),
        };
        let payload = &m["left"]["payload"];
        let (protocol, field) = (payload["protocol"].as_str(), payload["field"].as_str());
        let right = &m["right"];
        match (protocol, field) {
            (Some(p @ ("ip" | "ip6")), Some("daddr")) => {
                let family = if p == "ip" { Family::V4 } else { Family::V6 };
                let spans = match right.as_str().and_then(|s| s.strip_prefix('@')) {
                    Some(name) => match sets.get(name) {
                        Some((f, spans)) if *f == family => spans.clone(),
                        Some(_) => {
                            return Err(format!(
                                "{p} daddr looks up set {name} of the other family"
                            ))
                        }
                        None => return Err(format!("a lookup in a missing set {name}")),
                    },
                    None => nft_values(right)
                        .into_iter()
                        .map(|v| match nft_addr(v)? {
                            (f, span) if f == family => Ok(span),
                            _ => Err(format!("{p} daddr compared with {v}")),
                        })
                        .collect::<Result<_, String>>()?,
                };
                once(&mut dst, (family, spans), "a daddr match")?;
            }
            (Some(p @ ("tcp" | "udp")), Some("dport")) => {
                let ports = nft_values(right)
                    .into_iter()
                    .map(nft_ports)
                    .collect::<Result<_, _>>()?;
                once(&mut l4, (Proto::parse(p)?, ports), "a dport match")?;
            }
            _ => return Err(format!("an unknown match: {expr}")),
        }
    }
    let (proto, ports) = l4.ok_or("no dport match: the rule matches every protocol")?;
    let dsts: Vec<(Family, Span)> = match dst {
        Some((family, spans)) => spans.into_iter().map(|s| (family, s)).collect(),
        None => Family::BOTH.iter().map(|&f| (f, f.everything())).collect(),
    };
    for (family, span) in dsts {
        for &p in &ports {
            out.add(family, proto, span, p);
        }
    }
    Ok(())
}

/// What `nft -j list ruleset` shows the allowlist chain allowing. Only the rules of the chain
/// count (an unreferenced set is harmless); a base chain, another table or chain, or anything
/// unknown fails.
fn parse_nft_json(text: &str) -> Result<AddrRelation, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("nft -j is not JSON: {e}"))?;
    let items = doc["nftables"].as_array().ok_or("no nftables list")?;
    let mine =
        |body: &Value, table_key: &str| body["family"] == "inet" && body[table_key] == NFT_TABLE;
    let mut sets = HashMap::new();
    let mut rules = Vec::new();
    let mut chain_found = false;
    for item in items {
        match single_key(item)? {
            ("metainfo", _) => {}
            ("table", body) if mine(body, "name") => {}
            ("chain", body) if mine(body, "table") && body["name"] == NFT_CHAIN => {
                if body.get("hook").is_some() {
                    return Err(format!("{NFT_CHAIN} is a base chain: {body}"));
                }
                chain_found = true;
            }
            ("set", body) if mine(body, "table") => {
                let (name, family, spans) = nft_set(body)?;
                sets.insert(name, (family, spans));
            }
            ("rule", body) if mine(body, "table") && body["chain"] == NFT_CHAIN => rules.push(body),
            _ => return Err(format!("something the file must not create: {item}")),
        }
    }
    if !chain_found {
        return Err(format!(
            "chain inet {NFT_TABLE} {NFT_CHAIN} does not exist after loading"
        ));
    }
    let mut out = AddrBuilder::default();
    for rule in rules {
        nft_rule(rule, &sets, &mut out).map_err(|e| format!("{e}\nin rule {rule}"))?;
    }
    Ok(out.build())
}

/// Checks and loads a fixture's script twice: same ruleset each time, exactly the list allowed.
fn nft_load_twice(fixture: &Path) -> Result<(), String> {
    let scratch = Scratch::new();
    scratch.write("script.nft", &render("nftables", fixture, &[]));
    scratch.in_namespace(
        r#"nft -c -f "$1" && nft -f "$1" && nft list ruleset > "$2" && nft -f "$1" && nft list ruleset > "$3" && nft -j list ruleset > "$4""#,
        &["script.nft", "first", "second", "json"],
    )?;
    let (first, second) = (scratch.read("first"), scratch.read("second"));
    if first != second {
        return Err(format!(
            "loading twice changed the ruleset:\n--- after one load\n{first}--- after two\n{second}"
        ));
    }
    let expected = Expected::from_fixture(fixture).addrs;
    check_same_addrs(&parse_nft_json(&scratch.read("json"))?, &expected)
}

/// `nft list ruleset` text as its set blocks (sorted) and the other lines, blank lines left
/// out: nft lists sets in creation order, which differs after an earlier list made some.
fn set_blocks_and_rest(text: &str) -> (BTreeMap<String, String>, String) {
    let (mut sets, mut rest) = (BTreeMap::new(), String::new());
    let mut current: Option<(String, String)> = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some((name, block)) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
            if line == "\t}" {
                sets.insert(name.clone(), std::mem::take(block));
                current = None;
            }
            continue;
        }
        if let Some(name) = line
            .strip_prefix("\tset ")
            .and_then(|l| l.strip_suffix(" {"))
        {
            current = Some((name.to_owned(), format!("{line}\n")));
            continue;
        }
        rest.push_str(line);
        rest.push('\n');
    }
    (sets, rest)
}

/// `after` as `fresh` would read it if the sets it holds that `fresh` doesn't were gone.
fn without_sets_missing_from(after: &str, fresh: &str) -> String {
    let (mut sets, rest) = set_blocks_and_rest(after);
    let (fresh_sets, _) = set_blocks_and_rest(fresh);
    sets.retain(|name, _| fresh_sets.contains_key(name));
    format!("{}{rest}", sets.into_values().collect::<String>())
}

/// `fresh` in the form `without_sets_missing_from` gives.
fn sets_sorted(fresh: &str) -> String {
    let (sets, rest) = set_blocks_and_rest(fresh);
    format!("{}{rest}", sets.into_values().collect::<String>())
}

/// Loads `first`'s script, then `second`'s: only `second`'s list may be allowed, and the ruleset
/// must be exactly what `second`'s script makes on a fresh host (no element or rule of the
/// first list left behind; only its DNS-fed sets, which dnsmasq owns, and which no rule uses).
fn nft_replace(first: &Path, second: &Path) -> Result<(), String> {
    let scratch = Scratch::new();
    scratch.write("first.nft", &render("nftables", first, &[]));
    scratch.write("second.nft", &render("nftables", second, &[]));
    scratch.in_namespace(
        r#"nft -f "$1" && nft -f "$2" && nft -j list ruleset > "$3" && nft list ruleset > "$4""#,
        &["first.nft", "second.nft", "json", "after"],
    )?;
    scratch.in_namespace(
        r#"nft -f "$1" && nft list ruleset > "$2""#,
        &["second.nft", "fresh"],
    )?;
    let (after, fresh) = (scratch.read("after"), scratch.read("fresh"));
    // The sets dnsmasq fills outlive a list by design; no rule may use them any more.
    let (after, fresh) = (
        without_sets_missing_from(&after, &fresh),
        sets_sorted(&fresh),
    );
    let same = if after == fresh {
        Ok(())
    } else {
        Err(format!(
            "the first list left something behind:\n--- after both\n{after}--- the second alone\n{fresh}"
        ))
    };
    let expected = Expected::from_fixture(second).addrs;
    all([
        same,
        check_same_addrs(&parse_nft_json(&scratch.read("json"))?, &expected),
    ])
}

#[test]
fn nftables_checks_loads_idempotently_and_allows_exactly_the_list() {
    if !nft_tools() {
        return;
    }
    let mut failures = Failures::default();
    for fixture in fixture_files() {
        failures.check(
            &format!("nftables {}", file_name(&fixture)),
            nft_load_twice(&fixture),
        );
    }
    failures.assert_none();
}

#[test]
fn nftables_reload_of_another_list_replaces_the_first() {
    if !nft_tools() {
        return;
    }
    let mut failures = Failures::default();
    for (first, second) in fixture_pairs() {
        let what = format!("nftables {} then {}", file_name(&first), file_name(&second));
        failures.check(&what, nft_replace(&first, &second));
    }
    failures.assert_none();
}

// ---------------------------------------------------------------------------------------------
// Counters

/// A destination of seed.json (TCP 80 and 443) that the counter tests connect to. In the
/// namespace it is an address of `lo`, so the SYN passes the output hook once and the kernel
/// refuses it at once: no packet leaves the namespace.
const PROBE: (&str, u16) = ("115.238.203.110", 443);

/// Shell that puts PROBE on `lo` and tries one TCP connection to it (for at most 3 s: a chain
/// that drops the kernel's reset leaves the connection trying).
fn probe_script() -> String {
    let (ip, port) = PROBE;
    format!(
        "ip link set lo up && ip addr add {ip}/32 dev lo && \
         {{ timeout 3 bash -c 'exec 3<>/dev/tcp/{ip}/{port}' 2>/dev/null; true; }}"
    )
}

fn probe_addr() -> u128 {
    parse_addr(PROBE.0).expect("PROBE is an address").1
}

/// Each rule of `nft -j list chain` with its counter's packets, and whether it allows PROBE
/// (read by `nft_rule`). A rule without exactly one counter fails.
fn nft_counted_rules(json: &str) -> Result<Vec<(u64, bool)>, String> {
    let doc: Value = serde_json::from_str(json).map_err(|e| format!("nft -j is not JSON: {e}"))?;
    let items = doc["nftables"].as_array().ok_or("no nftables list")?;
    let mut out = Vec::new();
    for rule in items.iter().filter_map(|i| i.get("rule")) {
        let exprs = rule["expr"].as_array().ok_or("a rule without expr")?;
        let counters: Vec<&Value> = exprs.iter().filter_map(|e| e.get("counter")).collect();
        let [counter] = counters[..] else {
            return Err(format!("{} counters in rule {rule}", counters.len()));
        };
        let packets = counter["packets"]
            .as_u64()
            .ok_or_else(|| format!("a counter without packets: {rule}"))?;
        let mut allowed = AddrBuilder::default();
        nft_rule(rule, &HashMap::new(), &mut allowed).or_else(|e| {
            // A rule on a DNS-fed set (empty here) can't be read without its set.
            if e.contains("missing set") {
                Ok(())
            } else {
                Err(format!("{e}\nin rule {rule}"))
            }
        })?;
        let hit = allowed
            .build()
            .allows(Family::V4, Proto::Tcp, probe_addr(), PROBE.1);
        out.push((packets, hit));
    }
    if out.is_empty() {
        return Err("the chain holds no rule".into());
    }
    Ok(out)
}

/// Fails unless exactly the rules that allow PROBE counted (one packet or more) and every other
/// rule counted nothing, or, when `after_reload`, every rule is back at zero.
fn check_counts(rules: &[(u64, bool)], after_reload: bool) -> Result<(), String> {
    let wrong: Vec<String> = rules
        .iter()
        .enumerate()
        .filter(|(_, &(packets, hit))| {
            if after_reload || !hit {
                packets != 0
            } else {
                packets == 0
            }
        })
        .map(|(i, (packets, hit))| {
            format!(
                "rule #{} (allows the probe: {hit}) counted {packets}",
                i + 1
            )
        })
        .collect();
    let hits = rules.iter().filter(|(_, hit)| *hit).count();
    if hits != 1 {
        return Err(format!("{hits} rules allow the probe, not one"));
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("\n"))
    }
}

#[test]
fn nft_counter_counts_what_each_rule_passes_and_a_reload_resets_it() {
    if !nft_tools() || !require_tool("ip") || !require_tool("bash") {
        return;
    }
    let fixture = crate::support::fixture("seed.json");
    let scratch = Scratch::new();
    scratch.write(
        "script.nft",
        &render("nftables", &fixture, &["--nft-counter"]),
    );
    let list = format!("nft -j list chain inet {NFT_TABLE} {NFT_CHAIN}");
    scratch
        .in_namespace(
            &format!(
                r#"nft -f "$1" && nft -j list ruleset > "$4" && \
                 nft add chain inet {NFT_TABLE} out '{{ type filter hook output priority 0; }}' && \
                 nft add rule inet {NFT_TABLE} out jump {NFT_CHAIN} && {probe} && \
                 {list} > "$2" && nft -f "$1" && {list} > "$3""#,
                probe = probe_script()
            ),
            &["script.nft", "counted", "reloaded", "ruleset"],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let mut failures = Failures::default();
    failures.check(
        "the counted script allows exactly the list",
        parse_nft_json(&scratch.read("ruleset"))
            .and_then(|actual| check_same_addrs(&actual, &Expected::from_fixture(&fixture).addrs)),
    );
    failures.check(
        "after one connection",
        nft_counted_rules(&scratch.read("counted")).and_then(|r| check_counts(&r, false)),
    );
    failures.check(
        "after a reload",
        nft_counted_rules(&scratch.read("reloaded")).and_then(|r| check_counts(&r, true)),
    );
    failures.assert_none();
}

/// Each `[packets:bytes] -A WECOM_ALLOW ...` line of `iptables-save -c`, with whether the rule
/// allows PROBE (read by `parse_xtables_rule`).
fn xtables_counted_rules(text: &str) -> Result<Vec<(u64, bool)>, String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((counts, rule)) = line.strip_prefix('[').and_then(|l| l.split_once("] ")) else {
            continue;
        };
        let Some(rule) = rule.strip_prefix(&format!("-A {IPT_CHAIN} ")) else {
            continue;
        };
        let packets = counts
            .split_once(':')
            .and_then(|(p, _)| p.parse::<u64>().ok())
            .ok_or_else(|| format!("no [packets:bytes]: {line}"))?;
        let words = split_words(rule).map_err(|e| format!("{e}: {line}"))?;
        let mut allowed = AddrBuilder::default();
        parse_xtables_rule(Family::V4, &words, &mut allowed, &mut SetRules::new())
            .map_err(|e| format!("{e}: {line}"))?;
        let hit = allowed
            .build()
            .allows(Family::V4, Proto::Tcp, probe_addr(), PROBE.1);
        out.push((packets, hit));
    }
    if out.is_empty() {
        return Err(format!("no counted rule of {IPT_CHAIN} in:\n{text}"));
    }
    Ok(out)
}

#[test]
fn iptables_counts_what_each_rule_passes_and_a_reload_resets_it() {
    if !xtables_tools(Family::V4) || !require_tool("ip") || !require_tool("bash") {
        return;
    }
    let fixture = crate::support::fixture("seed.json");
    let scratch = Scratch::new();
    scratch.write("rules", &render("iptables", &fixture, &[]));
    scratch.write("ipset", &render("ipset", &fixture, &[]));
    scratch
        .in_namespace(
            &format!(
                r#"ipset restore -exist < "$4" && iptables-restore --noflush < "$1" && \
                 iptables -A OUTPUT -j {IPT_CHAIN} && {probe} && iptables-save -c > "$2" && \
                 iptables-restore --noflush < "$1" && iptables-save -c > "$3""#,
                probe = probe_script()
            ),
            &["rules", "counted", "reloaded", "ipset"],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let mut failures = Failures::default();
    failures.check(
        "after one connection",
        xtables_counted_rules(&scratch.read("counted")).and_then(|r| check_counts(&r, false)),
    );
    failures.check(
        "after a reload",
        xtables_counted_rules(&scratch.read("reloaded")).and_then(|r| check_counts(&r, true)),
    );
    failures.assert_none();
}

// ---------------------------------------------------------------------------------------------
// The hooks the README gives

/// The README's iptables lines, run twice in a namespace whose OUTPUT chains already end in a
/// DROP rule: one jump per family, above the DROP, and a connection to a listed address is
/// counted by the allowlist's rule that allows it.
#[test]
fn the_readme_iptables_hook_goes_above_the_drop_once_and_is_reached() {
    if !xtables_tools(Family::V4)
        || !xtables_tools(Family::V6)
        || !require_tool("ip")
        || !require_tool("bash")
    {
        return;
    }
    let fixture = crate::support::fixture("seed.json");
    let scratch = Scratch::new();
    for target in ["iptables", "ip6tables", "ipset"] {
        scratch.write(&format!("{target}.rules"), &render(target, &fixture, &[]));
    }
    scratch.write("hook.sh", &readme_sh_after("<!-- hook:iptables -->"));
    scratch
        .in_namespace(
            &format!(
                r#"cd "$(dirname "$1")" && iptables -A OUTPUT -j DROP && \
                 ip6tables -A OUTPUT -j DROP && sh hook.sh && sh hook.sh && {probe} && \
                 iptables-save -c > "$2" && ip6tables-save > "$3""#,
                probe = probe_script()
            ),
            &["hook.sh", "v4", "v6"],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let mut failures = Failures::default();
    for (file, text) in [("v4", scratch.read("v4")), ("v6", scratch.read("v6"))] {
        let output: Vec<&str> = text
            .lines()
            .map(|l| match l.strip_prefix('[') {
                Some(rest) => rest.split_once("] ").map_or(l, |(_, rule)| rule),
                None => l,
            })
            .filter(|l| l.starts_with("-A OUTPUT "))
            .collect();
        failures.check(
            &format!("{file}: OUTPUT holds the jump once, above the DROP"),
            if output
                == [
                    format!("-A OUTPUT -j {IPT_CHAIN}").as_str(),
                    "-A OUTPUT -j DROP",
                ]
            {
                Ok(())
            } else {
                Err(format!("{output:#?}"))
            },
        );
    }
    failures.check(
        "the connection reached the allowlist",
        xtables_counted_rules(&scratch.read("v4")).and_then(|r| check_counts(&r, false)),
    );
    for cmd in ["iptables", "ip6tables"] {
        failures.check(
            &format!("{cmd}.rules gives the README's hook"),
            header_gives_hook(
                &scratch.read(&format!("{cmd}.rules")),
                &scratch.read("hook.sh"),
                &format!("{cmd} -C "),
            ),
        );
    }
    failures.assert_none();
}

/// The README block's line that starts with `start` is also a line of the file's header.
fn header_gives_hook(file: &str, block: &str, start: &str) -> Result<(), String> {
    let line = block
        .lines()
        .find(|l| l.starts_with(start))
        .ok_or_else(|| format!("no line starting {start:?} in the README block:\n{block}"))?;
    if file.lines().any(|l| l == format!("#   {line}")) {
        Ok(())
    } else {
        Err(format!("the header lacks `#   {line}`"))
    }
}

/// The README's nft lines, run twice in a namespace whose output base chain already ends in a
/// drop rule: one jump, first, and a connection to a listed address is counted by the
/// allowlist's rule that allows it.
#[test]
fn the_readme_nft_hook_goes_above_the_drop_once_and_is_reached() {
    if !nft_tools() || !require_tool("ip") || !require_tool("bash") {
        return;
    }
    let fixture = crate::support::fixture("seed.json");
    let scratch = Scratch::new();
    scratch.write(
        "nftables.nft",
        &render("nftables", &fixture, &["--nft-counter"]),
    );
    scratch.write("hook.sh", &readme_sh_after("<!-- hook:nft -->"));
    scratch
        .in_namespace(
            &format!(
                r#"cd "$(dirname "$1")" && nft add table inet {NFT_TABLE} && \
                 nft add chain inet {NFT_TABLE} output '{{ type filter hook output priority 0; }}' && \
                 nft add rule inet {NFT_TABLE} output drop && sh hook.sh && sh hook.sh && \
                 {probe} && nft -j list chain inet {NFT_TABLE} output > "$2" && \
                 nft -j list chain inet {NFT_TABLE} {NFT_CHAIN} > "$3""#,
                probe = probe_script()
            ),
            &["hook.sh", "output", "allow"],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let doc: Value = serde_json::from_str(&scratch.read("output")).expect("nft -j is JSON");
    let rules: Vec<&Value> = doc["nftables"]
        .as_array()
        .expect("an nftables list")
        .iter()
        .filter_map(|i| i.get("rule"))
        .map(|r| &r["expr"])
        .collect();
    let jump = serde_json::json!([{"jump": {"target": NFT_CHAIN}}]);
    let drop = serde_json::json!([{"drop": null}]);
    let mut failures = Failures::default();
    failures.check(
        "output holds the jump once, above the drop",
        if rules == [&jump, &drop] {
            Ok(())
        } else {
            Err(format!("{rules:#?}"))
        },
    );
    failures.check(
        "the connection reached the allowlist",
        nft_counted_rules(&scratch.read("allow")).and_then(|r| check_counts(&r, false)),
    );
    failures.check(
        "nftables.nft gives the README's hook",
        header_gives_hook(
            &scratch.read("nftables.nft"),
            &scratch.read("hook.sh"),
            "nft list chain ",
        ),
    );
    failures.assert_none();
}

/// The keywords of the installed nft, read from its library: bison keeps every token's
/// spelling (`"accept"`) in libnftables. Independent of the crate's own list.
fn installed_nft_tokens() -> Option<BTreeSet<String>> {
    let dirs = ["/usr/lib", "/usr/lib64", "/lib", "/usr/local/lib"];
    let mut libs: Vec<PathBuf> = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let candidates = if path.is_dir() {
                std::fs::read_dir(&path)
                    .map(|e| e.flatten().map(|e| e.path()).collect())
                    .unwrap_or_default()
            } else {
                vec![path]
            };
            libs.extend(candidates.into_iter().filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("libnftables.so"))
            }));
        }
    }
    let bytes = libs.iter().find_map(|p| std::fs::read(p).ok())?;
    let mut tokens = BTreeSet::new();
    for piece in bytes.split(|&b| b == 0) {
        if let Some(word) = piece
            .strip_prefix(b"\"")
            .and_then(|p| p.strip_suffix(b"\""))
        {
            if !word.is_empty()
                && word
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
            {
                tokens.insert(String::from_utf8_lossy(word).into_owned());
            }
        }
    }
    (!tokens.is_empty()).then_some(tokens)
}

/// Renders the seed with `name` as nft table and chain (each where the crate accepts it), for
/// `nft -c`. `None` when no role accepts it.
fn nft_render_named(scratch: &Scratch, i: usize, name: &str) -> Option<(String, PathBuf)> {
    use wecom_allowlist::render::Names;
    let accepts = |names: Names| names.validate().is_ok();
    let roles: Vec<(&str, String)> = [
        (
            "table",
            accepts(Names {
                nft_table: name.into(),
                ..Names::default()
            }),
        ),
        (
            "chain",
            accepts(Names {
                nft_chain: name.into(),
                ..Names::default()
            }),
        ),
    ]
    .into_iter()
    .filter(|(_, ok)| *ok)
    .map(|(role, _)| (role, format!("{role} = \"{name}\"\n")))
    .collect();
    if roles.is_empty() {
        return None;
    }
    let config = format!(
        "[nftables]\n{}",
        roles.iter().map(|(_, l)| l.as_str()).collect::<String>()
    );
    let config = scratch.write(&format!("{i}.toml"), &config);
    let seed = crate::support::fixture("seed.json");
    let text = render(
        "nftables",
        &seed,
        &["--config", config.to_str().expect("UTF-8 path")],
    );
    let what = roles.iter().map(|(r, _)| *r).collect::<Vec<_>>().join("+");
    Some((
        format!("{name} as {what}"),
        scratch.write(&format!("{i}.nft"), &text),
    ))
}

/// `nft -c` never fails on a name the crate accepts (sampled: every keyword of the installed
/// nft, hook and table names, short words), and the names that wipe a user's chain or clash
/// with nft's syntax are refused.
#[test]
fn nftables_parses_every_accepted_name_and_refuses_keywords_and_hooks() {
    use wecom_allowlist::render::Names;
    if !nft_tools() {
        return;
    }
    let Some(tokens) = installed_nft_tokens() else {
        if std::env::var_os(SKIP_VAR).is_some_and(|v| v == "1") {
            eprintln!("skipped because {SKIP_VAR}=1: libnftables not found");
            return;
        }
        panic!("libnftables (nft's library) not found under /usr/lib or /lib");
    };
    // What the issue names, and a hook in capitals (iptables-nft's chains).
    let must_refuse = [
        "input",
        "output",
        "forward",
        "prerouting",
        "postrouting",
        "ingress",
        "egress",
        "OUTPUT",
        "drop",
        "accept",
        "counter",
        "table",
        "chain",
        "set",
        "ip",
        "ip6",
        "inet",
        "jump",
        "flush",
    ];
    let mut failures = Failures::default();
    for name in must_refuse {
        let names = Names {
            nft_chain: name.into(),
            ..Names::default()
        };
        failures.check(
            &format!("--nft-chain {name}"),
            match names.validate() {
                Ok(()) => Err("accepted".into()),
                Err(_) => Ok(()),
            },
        );
    }
    for (family, table, refused) in [
        ("ip", "filter", true),
        ("ip6", "NAT", true),
        ("ip", "security", true),
        ("inet", "filter", false),
        ("ip", "wecom", false),
    ] {
        let accepted = Names {
            nft_family: family.into(),
            nft_table: table.into(),
            ..Names::default()
        }
        .validate()
        .is_ok();
        failures.check(
            &format!("table {family} {table}"),
            if accepted == refused {
                Err(format!("accepted: {accepted}"))
            } else {
                Ok(())
            },
        );
    }
    let mut sample: BTreeSet<String> = tokens;
    sample.extend(must_refuse.iter().map(|s| (*s).to_owned()));
    sample.extend(["filter", "nat", "mangle", "raw", "security", "wecom_allow"].map(String::from));
    sample.extend(('a'..='z').map(String::from));
    sample.extend(["ms", "s1", "x0", "inet6", "d1h", "Accept", "Table"].map(String::from));
    let scratch = Scratch::new();
    let mut files = Vec::new();
    for (i, name) in sample.iter().enumerate() {
        if let Some(file) = nft_render_named(&scratch, i, name) {
            files.push(file);
        }
    }
    assert!(files.len() > 100, "too few names accepted: {}", files.len());
    let list: String = files
        .iter()
        .map(|(_, p)| format!("{}\n", p.display()))
        .collect();
    scratch.write("files", &list);
    // One namespace for every file; each failing file is named on stdout.
    let result = scratch.in_namespace(
        r#"while read -r f; do nft -c -f "$f" >/dev/null 2>&1 || echo "$f" >> "$2"; done < "$1"; touch "$2""#,
        &["files", "failed"],
    );
    failures.check("nft -c over every accepted name", result);
    let failed = std::fs::read_to_string(scratch.path("failed")).unwrap_or_default();
    for (what, path) in &files {
        if failed.lines().any(|l| Path::new(l) == path.as_path()) {
            failures.check(what, Err("accepted, but nft -c fails on the render".into()));
        }
    }
    failures.assert_none();
}

// ---------------------------------------------------------------------------------------------
// Squid

/// A parsed snippet: each ACL's type and values (repeated `acl` lines append), and the ACL
/// names of each `http_access allow` line.
#[derive(Debug, Default)]
struct SquidConfig {
    acls: BTreeMap<String, (String, Vec<String>)>,
    allows: Vec<Vec<String>>,
}

fn parse_squid(text: &str) -> Result<SquidConfig, String> {
    let mut conf = SquidConfig::default();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["acl", name, kind, rest @ ..] => {
                // Without -n, Squid matches a request for a bare address by its reverse name.
                let values = match (*kind, rest) {
                    ("dstdomain", ["-n", values @ ..]) => values,
                    ("dstdomain", _) => {
                        return Err(format!("ACL {name}: dstdomain without -n: {line}"))
                    }
                    (_, values) => values,
                };
                if values.is_empty() || values.iter().any(|v| v.starts_with('-')) {
                    return Err(format!("ACL {name}: no values, or an unknown flag: {line}"));
                }
                let (known, list) = conf
                    .acls
                    .entry((*name).to_owned())
                    .or_insert_with(|| ((*kind).to_owned(), Vec::new()));
                if known != kind {
                    return Err(format!("ACL {name} is both {known} and {kind}"));
                }
                list.extend(values.iter().map(|v| (*v).to_owned()));
            }
            ["http_access", "allow", names @ ..] if !names.is_empty() => {
                if let Some(missing) = names.iter().find(|n| !conf.acls.contains_key(**n)) {
                    return Err(format!(
                        "http_access uses ACL {missing} before it is defined"
                    ));
                }
                conf.allows
                    .push(names.iter().map(|n| (*n).to_owned()).collect());
            }
            _ => return Err(format!("a line the snippet should not hold: {line}")),
        }
    }
    Ok(conf)
}

/// A `dstdomain` value: (name, is a wildcard).
fn squid_domain(value: &str) -> (String, bool) {
    match value.strip_prefix('.') {
        Some(apex) => (normalize_name(apex), true),
        None => (normalize_name(value), false),
    }
}

/// No value of an ACL may be covered by another value of it: Squid drops or refuses those.
fn squid_no_covered_values(conf: &SquidConfig) -> Result<(), String> {
    let mut problems = Vec::new();
    for (name, (kind, values)) in &conf.acls {
        for (i, a) in values.iter().enumerate() {
            for (j, b) in values.iter().enumerate().filter(|(j, _)| *j != i) {
                let covered = match kind.as_str() {
                    "dst" => match (parse_net(a), parse_net(b)) {
                        (Ok((fa, sa)), Ok((fb, sb))) => {
                            fa == fb && sb.contains(&sa) && (sa != sb || i > j)
                        }
                        _ => false,
                    },
                    "dstdomain" => {
                        let (da, (nb, wb)) = (squid_domain(a), squid_domain(b));
                        let below =
                            da.0 == nb || da.0.strip_suffix(&nb).is_some_and(|h| h.ends_with('.'));
                        // A repeated value counts once; the apex `x.com` is covered by `.x.com`.
                        (da == (nb.clone(), wb) && i > j) || (da != (nb, wb) && wb && below)
                    }
                    _ => false,
                };
                if covered {
                    problems.push(format!("ACL {name}: {a} is covered by {b}"));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// What the `http_access allow` lines allow: addresses and names, TCP only.
fn squid_relation(conf: &SquidConfig) -> Result<(AddrRelation, NameRelation), String> {
    let mut addrs = AddrBuilder::default();
    let mut names = NameRelation::default();
    for line in &conf.allows {
        let (mut ports, mut dst, mut domains) = (None, None, None);
        for acl in line {
            let (kind, values) = &conf.acls[acl];
            match kind.as_str() {
                "port" => {
                    let list = values
                        .iter()
                        .map(|v| parse_port_range(v, '-'))
                        .collect::<Result<Vec<_>, _>>()?;
                    once(&mut ports, list, "a port ACL")?;
                }
                "dst" => {
                    let list = values
                        .iter()
                        .map(|v| parse_net(v))
                        .collect::<Result<Vec<_>, _>>()?;
                    once(&mut dst, list, "a dst ACL")?;
                }
                "dstdomain" => {
                    once(
                        &mut domains,
                        values.iter().map(|v| squid_domain(v)).collect::<Vec<_>>(),
                        "a dstdomain ACL",
                    )?;
                }
                other => return Err(format!("ACL {acl} has an unexpected type {other}")),
            }
        }
        let ports = ports.unwrap_or_else(|| vec![ALL_PORTS]);
        match (dst, domains) {
            (Some(dst), None) => {
                for (family, span) in dst {
                    for &p in &ports {
                        addrs.add(family, Proto::Tcp, span, p);
                    }
                }
            }
            (None, Some(domains)) => {
                for (name, wildcard) in domains {
                    for &p in &ports {
                        if wildcard {
                            names.add_wildcard(&name, p);
                        } else {
                            names.add_exact(&name, p);
                        }
                    }
                }
            }
            _ => {
                return Err(format!(
                    "http_access allow {} needs one dst or one dstdomain ACL",
                    line.join(" ")
                ))
            }
        }
    }
    Ok((addrs.build(), names))
}

fn squid_check(fixture: &Path) -> Result<(), String> {
    let scratch = Scratch::new();
    let text = render("squid", fixture, &[]);
    let path = scratch.write("squid.conf", &text);
    let out = Command::new("squid")
        .args(["-k", "parse", "-f"])
        .arg(&path)
        .output()
        .map_err(|e| format!("squid can't start: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| ["WARNING", "ERROR", "FATAL"].iter().any(|w| l.contains(w)))
        .collect();
    let parsed = if out.status.success() && complaints.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "squid -k parse ({}) complained:\n{}\n--- its whole stderr:\n{stderr}",
            out.status,
            complaints.join("\n")
        ))
    };
    let expected = Expected::from_fixture(fixture);
    let read = parse_squid(&text).and_then(|conf| {
        let (addrs, names) = squid_relation(&conf)?;
        all([
            squid_no_covered_values(&conf),
            check_same_addrs(&addrs, &expected.addrs.only(|_, p| p == Proto::Tcp)),
            check_same_names(&names, &expected.names(Proto::Tcp)),
        ])
    });
    all([parsed, read])
}

/// Runs `script` as real root in new mount and network namespaces (`unshare -mn`), with `args`
/// as `$1`, `$2` ...: a daemon that drops to its own unprivileged user (Squid) needs real user
/// ids, which a user namespace of one mapped id lacks. The network holds only loopback.
fn in_root_namespace(dir: &Path, script: &str, args: &[&Path]) -> Result<String, String> {
    let out = Command::new("unshare")
        .args(["-mn", "sh", "-c", script, "sh"])
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("unshare can't start: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "`{script}` failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A real Squid, serving on 127.0.0.1 inside a namespace, with the seed's snippet included:
/// a CONNECT to an unlisted address whose reverse name falls under a listed wildcard is refused
/// (403), and listed destinations are not (Squid then fails to connect: 503), which shows the
/// ACLs ran. Names come from a hosts_file, so no DNS is involved.
#[test]
fn squid_refuses_a_bare_address_whose_reverse_name_is_listed() {
    if !(require_tool("unshare") && require_tool("squid") && require_tool("curl")) {
        return;
    }
    if !require_root("it runs Squid in a network namespace") {
        return;
    }
    let scratch = Scratch::new();
    {
        use std::os::unix::fs::PermissionsExt;
        // Squid writes its log after dropping to its own user.
        std::fs::set_permissions(scratch.0.path(), std::fs::Permissions::from_mode(0o777))
            .expect("the scratch folder's mode is set");
    }
    let seed = crate::support::fixture("seed.json");
    scratch.write("wecom.conf", &render("squid", &seed, &[]));
    // x.work.weixin.qq.com is under the seed's wildcard; 198.51.100.7 is in no list.
    scratch.write(
        "hosts",
        "198.51.100.7 x.work.weixin.qq.com\n198.51.100.9 unlisted.example.org\n",
    );
    let dir = scratch.0.path().display().to_string();
    scratch.write(
        "squid.conf",
        &format!(
            "http_port 127.0.0.1:3128\npid_filename {dir}/squid.pid\ncache_log {dir}/cache.log\n\
             access_log none\ncache deny all\ncache_mem 1 MB\npinger_enable off\n\
             shutdown_lifetime 0 seconds\ncoredump_dir {dir}\nhosts_file {dir}/hosts\n\
             dns_nameservers 127.0.0.1\ninclude {dir}/wecom.conf\nhttp_access deny all\n"
        ),
    );
    // Squid's shared memory goes to a private /dev/shm; readiness is bounded by a count.
    let script = r#"
        mount -t tmpfs tmpfs /dev/shm && ip link set lo up || exit 1
        squid -N -f "$1" & pid=$!
        i=0
        until curl -s -o /dev/null http://127.0.0.1:3128/; do
            i=$((i + 1)); [ $i -le 600 ] || { kill $pid; echo "squid never listened"; exit 1; }
            sleep 0.1
        done
        for dest in 198.51.100.7 x.work.weixin.qq.com 115.238.203.110 unlisted.example.org; do
            code=$(curl -s -o /dev/null -w '%{http_connect}' --max-time 120 -p \
                -x http://127.0.0.1:3128 "https://$dest/")
            echo "$dest $code"
        done
        kill $pid; wait $pid
        exit 0
    "#;
    let out = in_root_namespace(scratch.0.path(), script, &[&scratch.path("squid.conf")])
        .unwrap_or_else(|e| panic!("{e}"));
    let codes: BTreeMap<&str, &str> = out.lines().filter_map(|l| l.split_once(' ')).collect();
    let log = std::fs::read_to_string(scratch.path("cache.log")).unwrap_or_default();
    let verdict = |dest: &str| codes.get(dest).copied().unwrap_or("none");
    let mut failures = Failures::default();
    for (dest, denied) in [
        ("198.51.100.7", true),
        ("unlisted.example.org", true),
        ("x.work.weixin.qq.com", false),
        ("115.238.203.110", false),
    ] {
        let code = verdict(dest);
        let ok = if denied {
            code == "403"
        } else {
            code != "403" && code != "000" && code != "none"
        };
        failures.check(
            &format!("CONNECT {dest}:443"),
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "answered {code}, expected {}\n--- cache.log:\n{log}",
                    if denied {
                        "403"
                    } else {
                        "an answer other than 403"
                    }
                ))
            },
        );
    }
    failures.assert_none();
}

/// `--squid-clients` (and `[squid] clients`): a real Squid in a namespace refuses (403) a
/// CONNECT to a listed destination from a source outside the clients, and serves the same
/// request from a client; networks that touch are merged, so `squid -k parse` stays clean.
#[test]
fn squid_serves_only_the_listed_clients() {
    if !(require_tool("unshare") && require_tool("squid") && require_tool("curl")) {
        return;
    }
    if !require_root("it runs Squid in a network namespace") {
        return;
    }
    let scratch = Scratch::new();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(scratch.0.path(), std::fs::Permissions::from_mode(0o777))
            .expect("the scratch folder's mode is set");
    }
    let seed = crate::support::fixture("seed.json");
    let snippet = render(
        "squid",
        &seed,
        &[
            "--squid-clients",
            "127.0.0.2,10.0.0.0/9",
            "--squid-clients",
            "10.128.0.0/9",
        ],
    );
    assert!(
        snippet.contains("\nacl wecom_clients src 10.0.0.0/8 127.0.0.2\n"),
        "{snippet}"
    );
    let allows: Vec<&str> = snippet
        .lines()
        .filter(|l| l.starts_with("http_access"))
        .collect();
    assert!(
        !allows.is_empty()
            && allows
                .iter()
                .all(|l| l.starts_with("http_access allow wecom_clients ")),
        "{allows:?}"
    );
    let wecom = scratch.write("wecom.conf", &snippet);
    squid_parses(&wecom).unwrap_or_else(|e| panic!("{e}"));
    let dir = scratch.0.path().display().to_string();
    scratch.write(
        "squid.conf",
        &format!(
            "http_port 127.0.0.1:3128\npid_filename {dir}/squid.pid\ncache_log {dir}/cache.log\n\
             access_log none\ncache deny all\ncache_mem 1 MB\npinger_enable off\n\
             shutdown_lifetime 0 seconds\ncoredump_dir {dir}\n\
             dns_nameservers 127.0.0.1\ninclude {dir}/wecom.conf\nhttp_access deny all\n"
        ),
    );
    // 127.0.0.2 is on loopback too: curl --interface picks the source address.
    let script = r#"
        mount -t tmpfs tmpfs /dev/shm && ip link set lo up || exit 1
        squid -N -f "$1" & pid=$!
        i=0
        until curl -s -o /dev/null http://127.0.0.1:3128/; do
            i=$((i + 1)); [ $i -le 600 ] || { kill $pid; echo "squid never listened"; exit 1; }
            sleep 0.1
        done
        for src in 127.0.0.1 127.0.0.2; do
            code=$(curl -s -o /dev/null -w '%{http_connect}' --max-time 120 -p \
                --interface $src -x http://127.0.0.1:3128 "https://115.238.203.110/")
            echo "$src $code"
        done
        kill $pid; wait $pid
        exit 0
    "#;
    let out = in_root_namespace(scratch.0.path(), script, &[&scratch.path("squid.conf")])
        .unwrap_or_else(|e| panic!("{e}"));
    let codes: BTreeMap<&str, &str> = out.lines().filter_map(|l| l.split_once(' ')).collect();
    let log = std::fs::read_to_string(scratch.path("cache.log")).unwrap_or_default();
    assert_eq!(
        codes.get("127.0.0.1").copied(),
        Some("403"),
        "a source outside the clients was not refused: {out}\n--- cache.log:\n{log}"
    );
    let client = codes.get("127.0.0.2").copied().unwrap_or("none");
    assert!(
        !["403", "000", "none"].contains(&client),
        "the client got {client}: {out}\n--- cache.log:\n{log}"
    );
}

#[test]
fn squid_parses_cleanly_and_allows_exactly_the_tcp_list() {
    if !require_tool("squid") {
        return;
    }
    let mut failures = Failures::default();
    for fixture in fixture_files() {
        failures.check(
            &format!("squid {}", file_name(&fixture)),
            squid_check(&fixture),
        );
    }
    failures.assert_none();
}

// ---------------------------------------------------------------------------------------------
// pfSense

/// Why pfSense's GUI would refuse an alias name, written here independently of the generator.
fn pfsense_name_problem(name: &str) -> Option<&'static str> {
    const RESERVED: [&str; 15] = [
        "port",
        "pass",
        "tcp",
        "udp",
        "http",
        "https",
        "ssh",
        "bogons",
        "bogonsv6",
        "sshguard",
        "snort2c",
        "virusprot",
        "vpn_networks",
        "negate_networks",
        "tonatsubnets",
    ];
    let lower = name.to_ascii_lowercase();
    if name.is_empty() || name.len() >= 32 {
        Some("is empty or 32 characters or more")
    } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Some("holds a character other than letters, digits and '_'")
    } else if name.bytes().all(|b| b.is_ascii_digit() || b == b'_') {
        Some("is all digits and underscores")
    } else if RESERVED.contains(&lower.as_str()) || lower.starts_with("pkg_") {
        Some("is reserved")
    } else {
        None
    }
}

fn element<'a, 'i>(
    node: roxmltree::Node<'a, 'i>,
    tag: &str,
) -> Result<roxmltree::Node<'a, 'i>, String> {
    let mut found = node.children().filter(|c| c.has_tag_name(tag));
    match (found.next(), found.next()) {
        (Some(one), None) => Ok(one),
        _ => Err(format!(
            "<{}> needs exactly one <{tag}>",
            node.tag_name().name()
        )),
    }
}

fn text_of(node: roxmltree::Node, tag: &str) -> Result<String, String> {
    Ok(element(node, tag)?.text().unwrap_or("").to_owned())
}

/// Fails unless every child element of `node` is one of `allowed`.
fn only_children(node: roxmltree::Node, allowed: &[&str]) -> Result<(), String> {
    match node
        .children()
        .filter(|c| c.is_element())
        .find(|c| !allowed.contains(&c.tag_name().name()))
    {
        Some(c) => Err(format!(
            "<{}> holds an unexpected <{}>",
            node.tag_name().name(),
            c.tag_name().name()
        )),
        None => Ok(()),
    }
}

struct Alias {
    kind: String,
    entries: Vec<String>,
}

/// A port field: a port alias, `443` or `8000-8100`.
fn pfsense_ports(value: &str, aliases: &BTreeMap<String, Alias>) -> Result<Vec<Ports>, String> {
    match aliases.get(value) {
        Some(alias) if alias.kind == "port" => alias
            .entries
            .iter()
            .map(|e| parse_port_range(e, ':'))
            .collect(),
        Some(_) => Err(format!("port {value} is an alias but not a port alias")),
        None => Ok(vec![parse_port_range(value, '-')?]),
    }
}

fn pfsense_aliases(
    root: roxmltree::Node,
    problems: &mut Vec<String>,
) -> Result<BTreeMap<String, Alias>, String> {
    let mut aliases = BTreeMap::new();
    for node in element(root, "aliases")?
        .children()
        .filter(|c| c.is_element())
    {
        if !node.has_tag_name("alias") {
            return Err(format!("<aliases> holds <{}>", node.tag_name().name()));
        }
        only_children(node, &["name", "type", "address", "descr", "detail"])?;
        let name = text_of(node, "name")?;
        let kind = text_of(node, "type")?;
        let entries: Vec<String> = text_of(node, "address")?
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let notes = text_of(node, "detail")?.split("||").count();
        if let Some(why) = pfsense_name_problem(&name) {
            problems.push(format!("alias name {name} {why}"));
        }
        if entries.is_empty() || notes != entries.len() {
            problems.push(format!(
                "alias {name}: {} entries but {notes} notes in detail",
                entries.len()
            ));
        }
        for entry in &entries {
            let bad = match kind.as_str() {
                "network" => parse_net(entry).err(),
                "port" => parse_port_range(entry, ':').err(),
                "host" => {
                    let fqdn = parse_addr(entry).is_err()
                        && entry.contains('.')
                        && !entry.starts_with('.')
                        && entry.split('.').all(|l| {
                            !l.is_empty()
                                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        });
                    (!fqdn).then(|| {
                        format!("{entry:?} is not a fully qualified name (no wildcards in pfSense)")
                    })
                }
                other => Some(format!("unexpected alias type {other}")),
            };
            if let Some(bad) = bad {
                problems.push(format!("alias {name}: {bad}"));
            }
        }
        if aliases
            .insert(name.clone(), Alias { kind, entries })
            .is_some()
        {
            problems.push(format!("alias name {name} is used twice"));
        }
    }
    Ok(aliases)
}

/// What a pfSense file allows, and every problem found on the way.
#[derive(Default)]
struct PfSense {
    addrs: AddrBuilder,
    names: BTreeMap<Proto, NameRelation>,
    trackers: BTreeSet<u64>,
    /// Per rule of one protocol: (ipprotocol, protocol, its destinations, its ports), to find a
    /// TCP and a UDP rule that should have been one `tcp/udp` rule.
    single: Vec<(String, Proto, BTreeSet<String>, BTreeSet<Ports>)>,
    problems: Vec<String>,
}

/// What every rule's `<source>` and `<log>` must be, written out from the options a test
/// renders with.
struct PfExpect {
    /// The one element `<source>` holds and its text: `("any", "")`, `("network", "lan")`,
    /// `("address", "10.0.0.0/8")`.
    source: (&'static str, String),
    /// The family of an address or network source: only that family can be allowed.
    family: Option<Family>,
    log: bool,
}

impl Default for PfExpect {
    fn default() -> Self {
        PfExpect {
            source: ("any", String::new()),
            family: None,
            log: false,
        }
    }
}

/// One pass rule: it may only reference what exists, and adds what it allows to `pf`.
fn pfsense_rule(
    rule: roxmltree::Node,
    aliases: &BTreeMap<String, Alias>,
    pf: &mut PfSense,
    expect: &PfExpect,
) -> Result<(), String> {
    if !rule.has_tag_name("rule") {
        return Err(format!("<filter> holds <{}>", rule.tag_name().name()));
    }
    only_children(
        rule,
        &[
            "tracker",
            "type",
            "interface",
            "ipprotocol",
            "protocol",
            "source",
            "destination",
            "log",
            "descr",
        ],
    )?;
    let logs = rule.children().filter(|c| c.has_tag_name("log")).count();
    match (logs, expect.log) {
        (0, false) => {}
        (1, true) if element(rule, "log")?.children().next().is_none() => {}
        _ => {
            return Err(format!(
                "{logs} <log> elements, expected logging: {}",
                expect.log
            ))
        }
    }
    let tracker = text_of(rule, "tracker")?;
    match tracker.parse::<u64>() {
        Ok(t) if pf.trackers.insert(t) => {}
        Ok(_) => return Err("its tracker is used twice".into()),
        Err(_) => return Err("its tracker is not an integer".into()),
    }
    let (kind, interface) = (text_of(rule, "type")?, text_of(rule, "interface")?);
    if kind != "pass" || interface != PF_INTERFACE {
        return Err(format!(
            "type {kind} on {interface}, not pass on {PF_INTERFACE}"
        ));
    }
    let source: Vec<(&str, &str)> = element(rule, "source")?
        .children()
        .filter(|c| c.is_element())
        .map(|c| (c.tag_name().name(), c.text().unwrap_or("")))
        .collect();
    let wanted = (expect.source.0, expect.source.1.as_str());
    if source != [wanted] {
        return Err(format!("the source is {source:?}, not {wanted:?}"));
    }
    let protos: Vec<Proto> = match text_of(rule, "protocol")?.as_str() {
        "tcp/udp" => Proto::BOTH.to_vec(),
        p => vec![Proto::parse(p)?],
    };
    let ipprotocol = text_of(rule, "ipprotocol")?;
    let families: &[Family] = match ipprotocol.as_str() {
        "inet" => &[Family::V4],
        "inet6" => &[Family::V6],
        "inet46" => &Family::BOTH,
        other => return Err(format!("ipprotocol {other}")),
    };
    // pfSense refuses an address of one family in a rule of the other, or of both.
    if let Some(f) = expect.family {
        if families != [f] {
            return Err(format!(
                "ipprotocol {ipprotocol} with {} source {}",
                f.name(),
                expect.source.1
            ));
        }
    }
    let destination = element(rule, "destination")?;
    only_children(destination, &["address", "port"])?;
    let address = text_of(destination, "address")?;
    let ports = pfsense_ports(&text_of(destination, "port")?, aliases)?;
    let alias = aliases
        .get(&address)
        .ok_or_else(|| format!("the destination {address} is not an alias"))?;
    if let [proto] = protos[..] {
        pf.single.push((
            ipprotocol.clone(),
            proto,
            alias.entries.iter().cloned().collect(),
            ports.iter().copied().collect(),
        ));
    }
    match alias.kind.as_str() {
        "network" => {
            // Entries that don't parse were reported with the alias.
            for (family, span) in alias.entries.iter().filter_map(|e| parse_net(e).ok()) {
                if !families.contains(&family) {
                    return Err(format!(
                        "{address} holds {} addresses, which {ipprotocol} can't match",
                        family.name()
                    ));
                }
                for &proto in &protos {
                    for &p in &ports {
                        pf.addrs.add(family, proto, span, p);
                    }
                }
            }
        }
        "host" => {
            // Names resolve to both families: a rule for them covers every family the source
            // can send from.
            let whole = match expect.family {
                Some(f) => families == [f],
                None => ipprotocol == "inet46",
            };
            if !whole {
                return Err(format!(
                    "the names of {address} under {ipprotocol} miss a family"
                ));
            }
            for &proto in &protos {
                let rel = pf.names.entry(proto).or_default();
                for entry in &alias.entries {
                    for &p in &ports {
                        rel.add_exact(entry, p);
                    }
                }
            }
        }
        other => return Err(format!("the destination {address} is a {other} alias")),
    }
    Ok(())
}

/// `xmllint --noout`: libxml2, the parser pfSense itself uses, accepts the document.
fn xmllint(text: &str) -> Result<(), String> {
    let scratch = Scratch::new();
    let path = scratch.write("pfsense.xml", text);
    let out = Command::new("xmllint")
        .arg("--noout")
        .arg(&path)
        .output()
        .map_err(|e| format!("xmllint can't start: {e}"))?;
    if out.status.success() && out.stderr.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "xmllint --noout ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Aliases valid for pfSense's GUI, rules that only reference what exists, and what the rules
/// allow (addresses; exact host names per protocol) compared with the list.
fn pfsense_check(fixture: &Path) -> Result<(), String> {
    pfsense_check_text(
        &render("pfsense", fixture, &[]),
        &Expected::from_fixture(fixture),
        &PfExpect::default(),
    )
}

/// `pfsense_check` of a rendered text, against what the list allows and the options expect.
fn pfsense_check_text(text: &str, expected: &Expected, expect: &PfExpect) -> Result<(), String> {
    xmllint(text)?;
    let doc = roxmltree::Document::parse(text).map_err(|e| format!("not XML: {e}"))?;
    let root = doc.root_element();
    if !root.has_tag_name("pfsense") {
        return Err(format!("the root is <{}>", root.tag_name().name()));
    }
    only_children(root, &["aliases", "filter"])?;
    let mut pf = PfSense::default();
    let aliases = pfsense_aliases(root, &mut pf.problems)?;
    for (i, rule) in element(root, "filter")?
        .children()
        .filter(|c| c.is_element())
        .enumerate()
    {
        if let Err(e) = pfsense_rule(rule, &aliases, &mut pf, expect) {
            pf.problems
                .push(format!("rule #{} of <filter>: {e}", i + 1));
        }
    }
    for (af, proto, dests, ports) in &pf.single {
        let twin = pf.single.iter().any(|(af2, proto2, dests2, ports2)| {
            *proto == Proto::Tcp
                && *proto2 == Proto::Udp
                && (af2, dests2, ports2) == (af, dests, ports)
        });
        if twin {
            pf.problems.push(format!(
                "a TCP and a UDP rule ({af}) with the same destinations {dests:?} and ports: \
                 pfSense takes them as one tcp/udp rule"
            ));
        }
    }
    let problems = if pf.problems.is_empty() {
        Ok(())
    } else {
        Err(pf.problems.join("\n"))
    };
    let names = Proto::BOTH.map(|proto| {
        let actual = pf.names.get(&proto).cloned().unwrap_or_default();
        check_same_names(&actual, &expected.names(proto).exact_only())
            .map_err(|e| format!("{}: {e}", proto.name()))
    });
    let addrs = expected
        .addrs
        .only(|f, _| expect.family.is_none_or(|source| source == f));
    all([problems, check_same_addrs(&pf.addrs.build(), &addrs)]
        .into_iter()
        .chain(names))
}

#[test]
fn pfsense_aliases_and_rules_allow_exactly_the_list() {
    if !require_tool("xmllint") {
        return;
    }
    let mut failures = Failures::default();
    for fixture in fixture_files() {
        failures.check(
            &format!("pfsense {}", file_name(&fixture)),
            pfsense_check(&fixture),
        );
    }
    failures.assert_none();
}

/// A list whose TCP and UDP entries match pairwise (addresses of both families and names, on
/// the same ports), beside a UDP entry that only shares ports with a TCP one.
const TWINS: &str = r#"{"errcode": 0, "errmsg": "ok",
  "ip_list": [
    {"ip": "101.60.0.0/28", "protocol": "TCP", "port": [53, 443], "is_necessary": 1, "description": "tcp side"},
    {"ip": "101.60.0.0/28", "protocol": "UDP", "port": [443, 53], "is_necessary": 0, "description": "udp side"},
    {"ip": "240e:ff:e020::/48", "protocol": "TCP", "port": [8000], "is_necessary": 1},
    {"ip": "240e:ff:e020::/48", "protocol": "UDP", "port": [8000], "is_necessary": 1},
    {"ip": "101.70.0.1", "protocol": "TCP", "port": [3478], "is_necessary": 1},
    {"ip": "101.70.0.2", "protocol": "UDP", "port": [3478], "is_necessary": 1}
  ],
  "domain_list": [
    {"domain": "a.wecom.example.com", "protocol": "TCP", "port": [443], "is_necessary": 1},
    {"domain": "a.wecom.example.com", "protocol": "UDP", "port": [443], "is_necessary": 1}
  ]}"#;

/// Each source option with the `<source>` it must give and the family it limits rules to,
/// written out by hand.
fn pf_sources() -> Vec<(&'static str, PfExpect)> {
    let with = |kind: &'static str, text: &str, family: Option<Family>| PfExpect {
        source: (kind, text.to_owned()),
        family,
        log: false,
    };
    vec![
        ("any", PfExpect::default()),
        ("lan", with("network", "lan", None)),
        ("opt1ip", with("network", "opt1ip", None)),
        ("MY_CLIENTS", with("address", "MY_CLIENTS", None)),
        (
            "10.0.0.0/8",
            with("address", "10.0.0.0/8", Some(Family::V4)),
        ),
        ("192.0.2.7", with("address", "192.0.2.7", Some(Family::V4))),
        (
            "2001:db8::/32",
            with("address", "2001:db8::/32", Some(Family::V6)),
        ),
    ]
}

#[test]
fn pfsense_sources_log_and_tcp_udp_rules_allow_exactly_the_list() {
    if !require_tool("xmllint") {
        return;
    }
    let scratch = Scratch::new();
    let twins = scratch.write("twins.json", TWINS);
    let mut lists = fixture_files();
    lists.push(twins.clone());
    let mut failures = Failures::default();
    for list in &lists {
        let expected = Expected::from_fixture(list);
        for (source, mut expect) in pf_sources() {
            for log in [false, true] {
                expect.log = log;
                let mut args = vec!["--pfsense-source", source];
                if log {
                    args.push("--pfsense-log");
                }
                let text = render("pfsense", list, &args);
                failures.check(
                    &format!("pfsense {} {}", file_name(list), args.join(" ")),
                    pfsense_check_text(&text, &expected, &expect),
                );
            }
        }
    }
    // The twins merge: IPv4, IPv6 and names; the UDP entry with other addresses stays apart.
    let text = render("pfsense", &twins, &[]);
    assert_eq!(
        text.matches("<protocol>tcp/udp</protocol>").count(),
        3,
        "{text}"
    );
    assert_eq!(
        text.matches("<protocol>udp</protocol>").count(),
        1,
        "{text}"
    );
    failures.assert_none();
}

/// The reader above must see each way an output can go wrong: a merged rule that lost a
/// protocol, twins left as two rules, another source, a missing `<log>`, a rule of the wrong
/// family for the source.
#[test]
fn the_pfsense_reader_refuses_broken_outputs() {
    if !require_tool("xmllint") {
        return;
    }
    let scratch = Scratch::new();
    let twins = scratch.write("twins.json", TWINS);
    let expected = Expected::from_fixture(&twins);
    let good = render(
        "pfsense",
        &twins,
        &["--pfsense-source", "lan", "--pfsense-log"],
    );
    let expect = PfExpect {
        source: ("network", "lan".into()),
        family: None,
        log: true,
    };
    pfsense_check_text(&good, &expected, &expect).unwrap_or_else(|e| panic!("{e}\n{good}"));
    let merged = "<protocol>tcp/udp</protocol>";
    // The merged rule written out as a TCP rule and a UDP rule (another tracker): what it
    // allows is the same, but it is not one rule.
    let split = {
        let at = good.find(merged).expect("a tcp/udp rule");
        let start = good[..at].rfind("<rule>").expect("its <rule>");
        let end = at + good[at..].find("</rule>").expect("its </rule>") + "</rule>".len();
        let block = &good[start..end];
        let tracker = block
            .split("<tracker>")
            .nth(1)
            .and_then(|t| t.split("</tracker>").next())
            .expect("its tracker");
        let udp = block
            .replace(merged, "<protocol>udp</protocol>")
            .replace(tracker, "7");
        let tcp = block.replace(merged, "<protocol>tcp</protocol>");
        format!("{}{tcp}\n\t\t{udp}{}", &good[..start], &good[end..])
    };
    let broken = [
        (
            "a merged rule without UDP",
            good.replacen(merged, "<protocol>tcp</protocol>", 1),
        ),
        (
            "a merged rule without TCP",
            good.replacen(merged, "<protocol>udp</protocol>", 1),
        ),
        ("twins as two rules", split),
        (
            "another source",
            good.replacen("<network>lan</network>", "<any></any>", 1),
        ),
        ("a rule without <log>", good.replacen("<log></log>", "", 1)),
    ];
    for (what, text) in &broken {
        assert_ne!(text, &good, "{what}: the mutation changed nothing");
        assert!(
            pfsense_check_text(text, &expected, &expect).is_err(),
            "{what} passed the reader:\n{text}"
        );
    }
    // An IPv4 source: the IPv6 twins get no rule; a rule of them put back is refused.
    let v4 = PfExpect {
        source: ("address", "10.0.0.0/8".into()),
        family: Some(Family::V4),
        log: false,
    };
    let only_v4 = render("pfsense", &twins, &["--pfsense-source", "10.0.0.0/8"]);
    pfsense_check_text(&only_v4, &expected, &v4).unwrap_or_else(|e| panic!("{e}\n{only_v4}"));
    let with_v6 = render("pfsense", &twins, &["--pfsense-source", "lan"])
        .replace("<network>lan</network>", "<address>10.0.0.0/8</address>");
    assert!(pfsense_check_text(&with_v6, &expected, &v4).is_err());
}

// ---------------------------------------------------------------------------------------------
// A large list

/// A response of `n` entries (a quarter each: names, IPv4, IPv6, and names on UDP), generated
/// the same way every time: public-looking addresses, several port sets, long descriptions.
fn large_list(n: usize) -> String {
    let ports = [
        "[443]",
        "[443, 80]",
        "[8080, 8443]",
        "[5222, 5223, 5224]",
        "[3478]",
    ];
    let description = |i: usize| {
        serde_json::Value::from(format!(
            "企业微信 entry {i}: 客户端长连接，消息收发等功能;短连接，登录、拉组织架构等功能"
        ))
    };
    let mut domains = Vec::new();
    let mut ips = Vec::new();
    for i in 0..n {
        let p = ports[i % ports.len()];
        let necessary = i % 3 == 0;
        match i % 4 {
            0 | 3 => {
                let zone = format!("z{}.wecom-large.example.com", i % 97);
                let domain = format!("h{i}.{zone}");
                let universal = if i % 5 == 0 { zone } else { String::new() };
                domains.push(format!(
                    r#"{{"domain":"{domain}","universal_domian":"{universal}","protocol":"{}","port":{p},"is_necessary":{},"description":{}}}"#,
                    if i % 4 == 3 { "UDP" } else { "TCP" },
                    u8::from(necessary),
                    description(i)
                ));
            }
            1 => {
                // 20.x.y.z/32 and, every 7th, a /28.
                let ip = if i % 7 == 0 {
                    format!(
                        "20.{}.{}.{}/28",
                        (i >> 12) % 200,
                        (i >> 4) % 256,
                        (i % 16) * 16
                    )
                } else {
                    format!("20.{}.{}.{}", 200 + (i >> 16) % 50, (i >> 8) % 256, i % 256)
                };
                ips.push(format!(
                    r#"{{"ip":"{ip}","protocol":"{}","port":{p},"is_necessary":{},"description":{}}}"#,
                    if i % 8 == 1 { "UDP" } else { "TCP" },
                    u8::from(necessary),
                    description(i)
                ));
            }
            _ => {
                let ip = format!("2400:cb00:{:x}::{:x}", i >> 16, i & 0xffff);
                ips.push(format!(
                    r#"{{"ip":"{ip}","protocol":"{}","port":{p},"is_necessary":{},"description":{}}}"#,
                    if i % 8 == 2 { "UDP" } else { "TCP" },
                    u8::from(necessary),
                    description(i)
                ));
            }
        }
    }
    format!(
        r#"{{"errcode":0,"errmsg":"ok","domain_list":[{}],"ip_list":[{}]}}"#,
        domains.join(",\n"),
        ips.join(",\n")
    )
}

/// 25,000 entries: every target is built, no line is longer than the target's loader reads (the
/// limit from the crate's own table), and every real program loads its file.
#[test]
fn a_list_of_25000_entries_loads_into_every_real_tool() {
    if !(nft_tools()
        && xtables_tools(Family::V4)
        && xtables_tools(Family::V6)
        && require_tool("squid")
        && require_tool("xmllint")
        && require_root("nft batches of this size need a socket buffer only real root may set"))
    {
        return;
    }
    let scratch = Scratch::new();
    let input = scratch.write("large.json", &large_list(25_000));
    let out = scratch.path("out");
    let res = crate::support::run(
        &[
            "build",
            "--input",
            input.to_str().expect("UTF-8 path"),
            "--out-dir",
            out.to_str().expect("UTF-8 path"),
        ],
        None,
    );
    assert!(
        res.status.success(),
        "build failed: {}",
        crate::support::stderr(&res)
    );
    let mut failures = Failures::default();
    for target in wecom_allowlist::Target::SERVER {
        let path = out.join(target.file_name());
        let text = std::fs::read_to_string(&path).expect("the build wrote every target");
        if let Some(max) = target.max_line_bytes() {
            let long = text
                .lines()
                .enumerate()
                .find(|(_, l)| l.len() > max)
                .map(|(i, l)| format!("line {} is {} bytes", i + 1, l.len()));
            failures.check(
                &format!("{} line limit {max}", target.name()),
                long.map_or(Ok(()), Err),
            );
        }
    }
    let file = |t: wecom_allowlist::Target| {
        out.join(t.file_name())
            .to_str()
            .expect("UTF-8 path")
            .to_owned()
    };
    use wecom_allowlist::Target as T;
    let script = r#"nft -f "$1" && ipset restore -exist < "$4" && iptables-restore --noflush < "$2" && ip6tables-restore --noflush < "$3""#;
    let out_files = [
        file(T::Nftables),
        file(T::Iptables),
        file(T::Ip6tables),
        file(T::Ipset),
    ];
    // Real root in a new network namespace: inside a user namespace nft can't raise its socket
    // buffer, and a transaction of this size fails there with "Message too long".
    let status = Command::new("unshare")
        .args(["-n", "sh", "-c", script, "sh"])
        .args(&out_files)
        .env("XTABLES_LOCKFILE", scratch.path("xtables.lock"))
        .output()
        .map_err(|e| format!("unshare can't start: {e}"))
        .and_then(|o| {
            if o.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{}: {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr)
                ))
            }
        });
    failures.check("nft -f, iptables-restore, ip6tables-restore", status);
    let squid = squid_parses(Path::new(&file(T::Squid)));
    failures.check("squid -k parse", squid);
    let pfsense = std::fs::read_to_string(file(T::Pfsense)).expect("pfsense.xml is read");
    failures.check("xmllint", xmllint(&pfsense));
    failures.assert_none();
}

// ---------------------------------------------------------------------------------------------
// Every option that changes an output

/// Squid's verdict on a file: `squid -k parse` succeeds without a warning.
fn squid_parses(path: &Path) -> Result<(), String> {
    let out = Command::new("squid")
        .args(["-k", "parse", "-f"])
        .arg(path)
        .output()
        .map_err(|e| format!("squid can't start: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let bad: Vec<&str> = stderr
        .lines()
        .filter(|l| ["WARNING", "ERROR", "FATAL"].iter().any(|w| l.contains(w)))
        .take(5)
        .collect();
    if out.status.success() && bad.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "squid -k parse ({}): {}",
            out.status,
            bad.join("\n")
        ))
    }
}

/// Each option (and config setting) that changes what a target writes, on every fixture: the
/// build succeeds and every real program loads its file (nft twice, after `nft -c`). Where the
/// names are the defaults, what the programs then hold is compared with the oracle's reading of
/// the fixture under the same selection.
#[test]
fn every_option_that_changes_an_output_loads_into_the_real_tools() {
    if !(nft_tools()
        && require_tool("dnsmasq")
        && xtables_tools(Family::V4)
        && xtables_tools(Family::V6)
        && require_tool("squid")
        && require_tool("xmllint"))
    {
        return;
    }
    let scratch = Scratch::new();
    let configs = [
        (
            "extras-and-exclusions",
            r#"
[[extra.ip_list]]
ip = "44.31.0.0/28"
protocol = "TCP"
port = [443]
is_necessary = 1
description = "extra network"
[[extra.domain_list]]
domain = "wework.qpic.cn"
protocol = "TCP"
port = [443, 80]
is_necessary = 1
description = "extra name"
[exclude]
domains = ["*.example.org"]
cidrs = ["101.20.0.0/25", "101.0.2.5", "240e:ff:e020::2/128"]
"#,
        ),
        (
            "nft-family-ip",
            "[nftables]\nfamily = \"ip\"\ntable = \"wecom4\"\n[filters]\nfamilies = [\"ipv4\", \"dns\"]\n",
        ),
        (
            "nft-family-ip6",
            "[nftables]\nfamily = \"ip6\"\ntable = \"wecom6\"\n[filters]\nfamilies = [\"ipv6\", \"dns\"]\n",
        ),
        (
            "dnsmasq-ipset",
            "[dnsmasq]\nsets = \"ipset\"\ntimeout = 86400\n",
        ),
        (
            "custom-names",
            "[iptables]\nchain = \"EGRESS_WECOM\"\n[nftables]\ntable = \"fw\"\nchain = \"wecom\"\ncounter = true\n\
             [pfsense]\ninterface = \"opt1\"\nalias_prefix = \"WC_\"\ntracker_base = 100000\n\
             source = \"opt1\"\nlog = true\n\
             [squid]\nacl_prefix = \"wc_\"\n",
        ),
    ];
    // What the default-named outputs must allow, for the independent reading: the selection,
    // and the extra entries in the API's shape.
    let extras_and_exclusions = (
        Selection {
            exclude_domains: vec!["*.example.org".into()],
            exclude_cidrs: ["101.20.0.0/25", "101.0.2.5", "240e:ff:e020::2/128"]
                .map(String::from)
                .to_vec(),
            ..Selection::default()
        },
        vec![
            (
                "ip_list",
                serde_json::json!({"ip": "44.31.0.0/28", "protocol": "TCP", "port": [443],
                    "is_necessary": 1, "description": "extra network"}),
            ),
            (
                "domain_list",
                serde_json::json!({"domain": "wework.qpic.cn", "protocol": "TCP", "port": [443, 80],
                    "is_necessary": 1, "description": "extra name"}),
            ),
        ],
    );
    type Semantics = Option<(Selection, Vec<(&'static str, Value)>)>;
    let mut options: Vec<(String, Vec<String>, Semantics)> = vec![
        (
            "--necessary-only".into(),
            vec!["--necessary-only".into()],
            Some((
                Selection {
                    necessary_only: true,
                    ..Selection::default()
                },
                vec![],
            )),
        ),
        (
            "--exact-domains".into(),
            vec!["--exact-domains".into()],
            Some((
                Selection {
                    exact_domains: true,
                    ..Selection::default()
                },
                vec![],
            )),
        ),
    ];
    for (name, text) in configs {
        let path = scratch.write(&format!("{name}.toml"), text);
        let semantics = (name == "extras-and-exclusions").then(|| extras_and_exclusions.clone());
        options.push((
            name.to_owned(),
            vec!["--config".into(), path.display().to_string()],
            semantics,
        ));
    }
    use wecom_allowlist::Target as T;
    let mut failures = Failures::default();
    for fixture in fixture_files() {
        for (i, (what, args, semantics)) in options.iter().enumerate() {
            let label = format!("{} {what}", file_name(&fixture));
            let dir = scratch.path(&format!("{}-{i}", file_name(&fixture)));
            let mut all_args = vec![
                "build".to_owned(),
                "--input".to_owned(),
                fixture.display().to_string(),
                "--out-dir".to_owned(),
                dir.display().to_string(),
            ];
            all_args.extend(args.iter().cloned());
            let refs: Vec<&str> = all_args.iter().map(String::as_str).collect();
            let res = crate::support::run(&refs, None);
            if !res.status.success() {
                failures.check(
                    &label,
                    Err(format!("build failed: {}", crate::support::stderr(&res))),
                );
                continue;
            }
            let file = |t: T| dir.join(t.file_name());
            let loaded = Command::new("unshare")
                .args([
                    "-rn",
                    "sh",
                    "-c",
                    r#"nft -c -f "$1" && nft -f "$1" && nft -f "$1" && nft -j list ruleset > "$4" && ipset restore -exist < "$7" && iptables-restore --noflush < "$2" && ip6tables-restore --noflush < "$3" && iptables-save > "$5" && ip6tables-save > "$6""#,
                    "sh",
                ])
                .arg(file(T::Nftables))
                .arg(file(T::Iptables))
                .arg(file(T::Ip6tables))
                .arg(dir.join("nft.json"))
                .arg(dir.join("v4.save"))
                .arg(dir.join("v6.save"))
                .arg(file(T::Ipset))
                .env("XTABLES_LOCKFILE", scratch.path("xtables.lock"))
                .output()
                .map_err(|e| format!("unshare can't start: {e}"))
                .and_then(|o| {
                    if o.status.success() {
                        Ok(())
                    } else {
                        Err(format!("{}: {}", o.status, String::from_utf8_lossy(&o.stderr)))
                    }
                });
            let pfsense = std::fs::read_to_string(file(T::Pfsense))
                .map_err(|e| format!("pfsense.xml: {e}"))
                .and_then(|text| xmllint(&text));
            let loaded_ok = loaded.is_ok();
            let dnsmasq = Command::new("dnsmasq")
                .arg("--test")
                .arg(format!("--conf-file={}", file(T::Dnsmasq).display()))
                .output()
                .map_err(|e| format!("dnsmasq can't start: {e}"))
                .and_then(|o| {
                    if o.status.success() {
                        Ok(())
                    } else {
                        Err(format!(
                            "dnsmasq --test: {}",
                            String::from_utf8_lossy(&o.stderr)
                        ))
                    }
                });
            failures.check(
                &label,
                all([loaded, squid_parses(&file(T::Squid)), pfsense, dnsmasq]),
            );
            if let (Some((selection, extras)), true) = (semantics, loaded_ok) {
                failures.check(
                    &format!("{label}: what the loaded rules allow"),
                    option_semantics(&fixture, &dir, selection, extras),
                );
            }
        }
    }
    failures.assert_none();
}

/// What nft, iptables, ip6tables and Squid hold after loading `dir`'s files, against the
/// oracle's reading of the fixture with the extra entries added and `selection` applied.
fn option_semantics(
    fixture: &Path,
    dir: &Path,
    selection: &Selection,
    extras: &[(&str, Value)],
) -> Result<(), String> {
    let text = std::fs::read_to_string(fixture).map_err(|e| e.to_string())?;
    let mut doc: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    for (list, entry) in extras {
        doc[*list]
            .as_array_mut()
            .ok_or_else(|| format!("{} has no {list}", fixture.display()))?
            .push(entry.clone());
    }
    let expected = Expected::selected(&doc.to_string(), selection)?;
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).map_err(|e| e.to_string());
    let squid_text = read("squid.conf")?;
    let squid = parse_squid(&squid_text).and_then(|conf| {
        let (addrs, names) = squid_relation(&conf)?;
        all([
            check_same_addrs(&addrs, &expected.addrs.only(|_, p| p == Proto::Tcp)),
            check_same_names(&names, &expected.names(Proto::Tcp)),
        ])
    });
    all([
        parse_nft_json(&read("nft.json")?)
            .and_then(|a| check_same_addrs(&a, &expected.addrs))
            .map_err(|e| format!("nft: {e}")),
        parse_xtables_save(Family::V4, &read("v4.save")?)
            .and_then(|a| check_same_addrs(&a, &expected.addrs.only(|f, _| f == Family::V4)))
            .map_err(|e| format!("iptables: {e}")),
        parse_xtables_save(Family::V6, &read("v6.save")?)
            .and_then(|a| check_same_addrs(&a, &expected.addrs.only(|f, _| f == Family::V6)))
            .map_err(|e| format!("ip6tables: {e}")),
        squid.map_err(|e| format!("squid: {e}")),
    ])
}

// ---------------------------------------------------------------------------------------------
// DNS-fed sets: dnsmasq.conf, the sets of nftables.nft and ipset.rules, and the rules that
// match them

/// One `nftset=` or `ipset=` line of dnsmasq.conf: its names, and its sets (with the family
/// the line gives, for nftset; ipset's sets carry their own).
struct DnsmasqLine {
    names: Vec<String>,
    sets: Vec<(Option<Family>, String)>,
}

/// Reads dnsmasq.conf as dnsmasq does, for the options it may hold: only `kind=` lines
/// (`nftset` or `ipset`) besides comments; nftset sets must lie in `table`.
fn parse_dnsmasq(text: &str, kind: &str, table: &str) -> Result<Vec<DnsmasqLine>, String> {
    let mut lines = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let rest = line
            .strip_prefix(kind)
            .and_then(|r| r.strip_prefix("=/"))
            .ok_or_else(|| format!("a line other than {kind}=: {line}"))?;
        let mut parts: Vec<&str> = rest.split('/').collect();
        let specs = parts.pop().ok_or("no sets")?;
        let names: Vec<String> = parts.iter().map(|n| normalize_name(n)).collect();
        if names.is_empty() || names.iter().any(|n| n.is_empty() || n.contains(' ')) {
            return Err(format!("bad names: {line}"));
        }
        let mut sets = Vec::new();
        for spec in specs.split(',') {
            if kind == "ipset" {
                sets.push((None, spec.to_owned()));
                continue;
            }
            let words: Vec<&str> = spec.split('#').collect();
            let [digit, fam, tbl, name] = words[..] else {
                return Err(format!("not family#table#set: {spec}"));
            };
            let family = match digit {
                "4" => Family::V4,
                "6" => Family::V6,
                _ => return Err(format!("no address family 4 or 6: {spec}")),
            };
            if fam != "inet" || tbl != table {
                return Err(format!("a set outside inet {table}: {spec}"));
            }
            sets.push((Some(family), name.to_owned()));
        }
        lines.push(DnsmasqLine { names, sets });
    }
    Ok(lines)
}

/// The sets dnsmasq 2.90 fills for an answer about `name`: those of the one line whose name
/// matches longest (`/d/` matches d and every name below it), the first line on a tie.
fn dnsmasq_sets_for<'a>(lines: &'a [DnsmasqLine], name: &str) -> &'a [(Option<Family>, String)] {
    let mut best: Option<(usize, &DnsmasqLine)> = None;
    for line in lines {
        for d in &line.names {
            let hit = name == d
                || name
                    .strip_suffix(d.as_str())
                    .is_some_and(|h| h.ends_with('.'));
            if hit && best.is_none_or(|(len, _)| d.len() > len) {
                best = Some((d.len(), line));
            }
        }
    }
    best.map_or(&[], |(_, l)| &l.sets)
}

/// For every listed name, a name below it and a name nothing matches: the ports each
/// (family, protocol) reaches once dnsmasq resolved the name (its line's sets, through the
/// rules that match them) equal what the list allows the name, read as dnsmasq reads
/// names (an exact name admits its subdomains).
fn check_dns_enforcement(
    lines: &[DnsmasqLine],
    set_rules: &SetRules,
    set_family: &BTreeMap<String, Family>,
    expected: &Expected,
    families: &[Family],
) -> Result<(), String> {
    let mut probes = BTreeSet::from(["zzprobe-matches-nothing.invalid".to_owned()]);
    for proto in Proto::BOTH {
        for name in expected.names(proto).listed() {
            probes.insert(format!("zzprobe.{name}"));
            probes.insert(name);
        }
    }
    for line in lines {
        probes.extend(line.names.iter().cloned());
    }
    let mut diffs = Vec::new();
    for probe in &probes {
        let sets = dnsmasq_sets_for(lines, probe);
        for &family in families {
            for proto in Proto::BOTH {
                let mut got: Vec<Ports> = Vec::new();
                for (line_family, set) in sets {
                    let Some(&f) = set_family.get(set) else {
                        diffs.push(format!("  {probe}: set {set} does not exist"));
                        continue;
                    };
                    if line_family.is_some_and(|lf| lf != f) {
                        diffs.push(format!("  {probe}: set {set} is not {}", f.name()));
                    }
                    if f != family {
                        continue;
                    }
                    for &(rf, rp, ports) in set_rules.get(set).into_iter().flatten() {
                        if rf == family && rp == proto {
                            got.push(ports);
                        }
                    }
                }
                got.sort_unstable();
                let want = expected.names(proto).as_zones().allowed(probe);
                let mut reach = NameRelation::default();
                for p in got {
                    reach.add_wildcard(probe, p);
                }
                let got = reach.allowed(probe);
                if got != want {
                    diffs.push(format!(
                        "  {probe} {} {}: reaches {got:?}, listed {want:?}",
                        family.name(),
                        proto.name()
                    ));
                }
            }
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "DNS-fed enforcement differs from the list:\n{}",
            diffs.join("\n")
        ))
    }
}

/// nft's named sets: each one's family and timeout.
type NftSets = BTreeMap<String, (Family, Option<u64>)>;

/// nft's named sets of the table, each with its family and (flags timeout) timeout; and what
/// the chain's rules allow for each set's addresses.
fn nft_dns_sets(json: &str) -> Result<(NftSets, SetRules), String> {
    let doc: Value = serde_json::from_str(json).map_err(|e| format!("nft -j is not JSON: {e}"))?;
    let items = doc["nftables"].as_array().ok_or("no nftables list")?;
    let mut sets = BTreeMap::new();
    let mut rules = SetRules::new();
    for item in items {
        match single_key(item)? {
            ("set", body) if body["table"] == NFT_TABLE => {
                let (name, family, _) = nft_set(body)?;
                sets.insert(name, (family, body["timeout"].as_u64()));
            }
            ("rule", body) if body["chain"] == NFT_CHAIN => {
                let exprs = body["expr"].as_array().ok_or("a rule without expr")?;
                let mut set = None;
                let mut l4 = None;
                for expr in exprs {
                    let Some(m) = expr.get("match") else { continue };
                    let payload = &m["left"]["payload"];
                    match (payload["protocol"].as_str(), payload["field"].as_str()) {
                        (Some(p @ ("ip" | "ip6")), Some("daddr")) => {
                            if let Some(name) =
                                m["right"].as_str().and_then(|s| s.strip_prefix('@'))
                            {
                                let f = if p == "ip" { Family::V4 } else { Family::V6 };
                                set = Some((f, name.to_owned()));
                            }
                        }
                        (Some(p @ ("tcp" | "udp")), Some("dport")) => {
                            let ports = nft_values(&m["right"])
                                .into_iter()
                                .map(nft_ports)
                                .collect::<Result<Vec<_>, _>>()?;
                            l4 = Some((Proto::parse(p)?, ports));
                        }
                        _ => {}
                    }
                }
                if let (Some((f, name)), Some((proto, ports))) = (set, l4) {
                    let entry = rules.entry(name).or_default();
                    entry.extend(ports.into_iter().map(|p| (f, proto, p)));
                }
            }
            _ => {}
        }
    }
    Ok((sets, rules))
}

fn dnsmasq_tools() -> bool {
    require_tool("dnsmasq") && require_tool("ipset") && nft_tools()
}

/// `dnsmasq --test` on dnsmasq.conf of every fixture, with either backend: it must say the
/// syntax is OK, and the file must hold nothing but comments and `nftset=`/`ipset=` lines.
#[test]
fn dnsmasq_test_passes_on_every_fixture_with_both_backends() {
    if !require_tool("dnsmasq") {
        return;
    }
    let scratch = Scratch::new();
    let mut failures = Failures::default();
    for fixture in fixture_files() {
        for kind in ["nftset", "ipset"] {
            let what = format!("dnsmasq {kind} {}", file_name(&fixture));
            let text = render("dnsmasq", &fixture, &["--dnsmasq-sets", kind]);
            let path = scratch.write("dnsmasq.conf", &text);
            let out = Command::new("dnsmasq")
                .arg("--test")
                .arg(format!("--conf-file={}", path.display()))
                .output()
                .expect("dnsmasq starts");
            let stderr = String::from_utf8_lossy(&out.stderr);
            let ok = if out.status.success() && stderr.contains("syntax check OK") {
                Ok(())
            } else {
                Err(format!("dnsmasq --test ({}): {stderr}", out.status))
            };
            let lines = parse_dnsmasq(&text, kind, NFT_TABLE).map(|_| ());
            failures.check(&what, all([ok, lines]));
        }
    }
    failures.assert_none();
}

/// nftables.nft and dnsmasq.conf (nftset) of every fixture, loaded by nft: every name, a name
/// below it and an unlisted name reach, once resolved, exactly the (family, protocol, ports)
/// the list gives them; every set has the default timeout.
#[test]
fn nftset_sets_and_rules_allow_every_name_as_dnsmasq_fills_them() {
    if !dnsmasq_tools() {
        return;
    }
    let mut failures = Failures::default();
    for fixture in fixture_files() {
        let what = format!("nftset {}", file_name(&fixture));
        let scratch = Scratch::new();
        scratch.write("script.nft", &render("nftables", &fixture, &[]));
        let conf = render("dnsmasq", &fixture, &[]);
        let result = scratch
            .in_namespace(
                r#"nft -f "$1" && nft -j list ruleset > "$2""#,
                &["script.nft", "json"],
            )
            .and_then(|()| nft_dns_sets(&scratch.read("json")))
            .and_then(|(sets, rules)| {
                let lines = parse_dnsmasq(&conf, "nftset", NFT_TABLE)?;
                let mut family = BTreeMap::new();
                for (name, (f, timeout)) in &sets {
                    family.insert(name.clone(), *f);
                    let used = lines.iter().any(|l| l.sets.iter().any(|(_, s)| s == name));
                    if used && *timeout != Some(3600) {
                        return Err(format!("set {name} has timeout {timeout:?}, not 3600"));
                    }
                }
                check_dns_enforcement(
                    &lines,
                    &rules,
                    &family,
                    &Expected::from_fixture(&fixture),
                    &Family::BOTH,
                )
            });
        failures.check(&what, result);
    }
    failures.assert_none();
}

/// The fields of `ipset save`'s `create` lines: name, family, timeout.
fn parse_ipset_save(text: &str) -> Result<BTreeMap<String, (Family, u64)>, String> {
    let mut sets = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("create ")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let after = |key: &str| {
            words
                .iter()
                .position(|w| *w == key)
                .and_then(|i| words.get(i + 1))
                .copied()
                .ok_or_else(|| format!("no {key}: {line}"))
        };
        if words.get(2) != Some(&"hash:ip") {
            return Err(format!("not hash:ip: {line}"));
        }
        let family = match after("family")? {
            "inet" => Family::V4,
            "inet6" => Family::V6,
            other => return Err(format!("family {other}: {line}")),
        };
        let timeout = after("timeout")?
            .parse()
            .map_err(|e| format!("timeout: {e}: {line}"))?;
        sets.insert(words[1].to_owned(), (family, timeout));
    }
    Ok(sets)
}

/// ipset.rules, iptables.rules, ip6tables.rules and dnsmasq.conf (ipset) of every fixture,
/// restored in that order: every name reaches, once resolved, exactly what the list allows it.
#[test]
fn ipset_sets_and_xtables_rules_allow_every_name_as_dnsmasq_fills_them() {
    if !(dnsmasq_tools() && xtables_tools(Family::V4) && xtables_tools(Family::V6)) {
        return;
    }
    let mut failures = Failures::default();
    for fixture in fixture_files() {
        let what = format!("ipset {}", file_name(&fixture));
        let scratch = Scratch::new();
        scratch.write("ipset.rules", &render("ipset", &fixture, &[]));
        scratch.write("v4", &render("iptables", &fixture, &[]));
        scratch.write("v6", &render("ip6tables", &fixture, &[]));
        let conf = render("dnsmasq", &fixture, &["--dnsmasq-sets", "ipset"]);
        let result = scratch
            .in_namespace(
                r#"ipset restore -exist < "$1" && iptables-restore --noflush < "$2" && ip6tables-restore --noflush < "$3" && ipset save > "$4" && iptables-save > "$5" && ip6tables-save > "$6""#,
                &["ipset.rules", "v4", "v6", "sets", "save4", "save6"],
            )
            .and_then(|()| {
                let sets = parse_ipset_save(&scratch.read("sets"))?;
                let (_, mut rules) = parse_xtables_save_sets(Family::V4, &scratch.read("save4"))?;
                let (_, rules6) = parse_xtables_save_sets(Family::V6, &scratch.read("save6"))?;
                for (name, r) in rules6 {
                    rules.entry(name).or_default().extend(r);
                }
                let mut family = BTreeMap::new();
                for (name, (f, timeout)) in &sets {
                    if *timeout != 3600 {
                        return Err(format!("set {name} has timeout {timeout}, not 3600"));
                    }
                    family.insert(name.clone(), *f);
                }
                for (name, r) in &rules {
                    if r.iter().any(|(f, _, _)| family.get(name) != Some(f)) {
                        return Err(format!("a rule matches set {name} of another family"));
                    }
                }
                let lines = parse_dnsmasq(&conf, "ipset", NFT_TABLE)?;
                check_dns_enforcement(
                    &lines,
                    &rules,
                    &family,
                    &Expected::from_fixture(&fixture),
                    &Family::BOTH,
                )
            });
        failures.check(&what, result);
    }
    failures.assert_none();
}

/// The first `add set` of an nft script whose type is `ipv4_addr`: a DNS-fed set.
fn first_v4_set(script: &str) -> Option<String> {
    script
        .lines()
        .find(|l| l.starts_with("add set ") && l.contains("type ipv4_addr"))
        .and_then(|l| l.split_whitespace().nth(4))
        .map(str::to_owned)
}

/// The sets belong to dnsmasq: reloading nftables.nft keeps an address it added, a changed
/// timeout loads (and applies to the set), and a list without the name group leaves no rule
/// that matches its set. ipset.rules: restoring again keeps the address, and a changed timeout
/// still restores (into new sets).
#[test]
fn dns_sets_keep_dnsmasq_addresses_across_reloads_and_timeout_changes() {
    if !dnsmasq_tools() {
        return;
    }
    let scratch = Scratch::new();
    let seed = crate::support::fixture("seed.json");
    let short = scratch.write("short.toml", "[dnsmasq]\ntimeout = 600\n");
    let short_args = ["--config", short.to_str().expect("UTF-8 path")];
    let no_names = scratch.write(
        "no-names.json",
        r#"{"errcode":0,"errmsg":"ok","domain_list":[],"ip_list":[{"ip":"115.238.203.109","protocol":"TCP","port":[443],"is_necessary":1}]}"#,
    );
    let s1 = render("nftables", &seed, &[]);
    let set = first_v4_set(&s1).expect("the seed has a name group");
    scratch.write("s1.nft", &s1);
    scratch.write("s2.nft", &render("nftables", &seed, &short_args));
    scratch.write("s3.nft", &render("nftables", &no_names, &[]));
    let mut failures = Failures::default();
    let nft = scratch.in_namespace(
        &format!(
            r#"nft -f "$1" && nft add element inet {NFT_TABLE} {set} '{{ 1.2.3.4 timeout 1h }}' && nft -f "$1" && nft -j list set inet {NFT_TABLE} {set} > "$4" && nft -f "$2" && nft -j list set inet {NFT_TABLE} {set} > "$5" && nft -f "$3" && nft -j list chain inet {NFT_TABLE} {NFT_CHAIN} > "$6""#
        ),
        &["s1.nft", "s2.nft", "s3.nft", "reloaded", "retimed", "chain"],
    );
    failures.check("nft reloads", nft);
    if failures.0.is_empty() {
        let reloaded = scratch.read("reloaded");
        let retimed = scratch.read("retimed");
        let chain = scratch.read("chain");
        failures.check(
            "nft reload keeps the address",
            if reloaded.contains("1.2.3.4") {
                Ok(())
            } else {
                Err(reloaded)
            },
        );
        failures.check(
            "nft new timeout applies and keeps the address",
            if retimed.contains("1.2.3.4") && retimed.contains(r#""timeout": 600"#) {
                Ok(())
            } else {
                Err(retimed)
            },
        );
        failures.check(
            "a list without the group leaves no rule on its set",
            if chain.contains(&format!("@{set}")) || !chain.contains("115.238.203.109") {
                Err(chain)
            } else {
                Ok(())
            },
        );
    }

    let r1 = render("ipset", &seed, &[]);
    let ipset = r1
        .lines()
        .find(|l| l.starts_with("create ") && l.contains("family inet "))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("the seed has an IPv4 set")
        .to_owned();
    scratch.write("r1", &r1);
    scratch.write("r2", &render("ipset", &seed, &short_args));
    let restored = scratch.in_namespace(
        &format!(
            r#"ipset restore -exist < "$1" && ipset add {ipset} 1.2.3.4 && ipset restore -exist < "$1" && ipset restore -exist < "$2" && ipset save > "$3""#
        ),
        &["r1", "r2", "saved"],
    );
    failures.check("ipset restores", restored);
    if failures.0.is_empty() {
        let saved = scratch.read("saved");
        let sets = parse_ipset_save(&saved);
        let kept = saved.contains(&format!("add {ipset} 1.2.3.4"));
        let retimed = sets.is_ok_and(|s| s.values().any(|&(_, t)| t == 600));
        failures.check(
            "ipset keeps the address and takes the new timeout",
            if kept && retimed { Ok(()) } else { Err(saved) },
        );
    }
    failures.assert_none();
}

/// The shell block that follows `<!-- cleanup:KIND -->` in README.md, as the user copies it.
fn readme_block(kind: &str) -> String {
    readme_sh_after(&format!("<!-- cleanup:{kind} -->"))
}

/// The shell block that follows `marker` in README.md.
fn readme_sh_after(marker: &str) -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let after = readme
        .split_once(marker)
        .unwrap_or_else(|| panic!("README.md has no {marker}"))
        .1;
    let body = after
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .unwrap_or_else(|| panic!("no sh block after {marker}"))
        .0;
    body.lines()
        .map(str::trim_start)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The words after `keyword` at the start of a line: the set names a script creates.
fn created_sets(script: &str, keyword: &str, at: usize) -> BTreeSet<String> {
    script
        .lines()
        .filter(|l| l.starts_with(keyword))
        .filter_map(|l| l.split_whitespace().nth(at))
        .map(str::to_owned)
        .collect()
}

/// A name dropped from a group that keeps its protocol and ports (the wire lists A then B) gives
/// the group new sets; the README's cleanup commands then delete exactly the sets no rule uses
/// any more, and the sets list B's rules match stay.
#[test]
fn a_changed_name_group_gets_new_sets_and_the_readme_cleanup_deletes_only_unused_ones() {
    if !dnsmasq_tools() {
        return;
    }
    let scratch = Scratch::new();
    let (a, b) = (
        fixtures().join("wire/a.json"),
        fixtures().join("wire/b.json"),
    );
    let mut failures = Failures::default();

    let (nft_a, nft_b) = (render("nftables", &a, &[]), render("nftables", &b, &[]));
    let (sets_a, sets_b) = (
        created_sets(&nft_a, "add set ", 4),
        created_sets(&nft_b, "add set ", 4),
    );
    let tcp443 = |sets: &BTreeSet<String>| {
        sets.iter()
            .filter(|s| s.starts_with(&format!("{NFT_CHAIN}_4_tcp_443_")))
            .cloned()
            .collect::<Vec<_>>()
    };
    failures.check(
        "dropping dldir1.qq.com renames the TCP 443 group's set",
        match (tcp443(&sets_a).as_slice(), tcp443(&sets_b).as_slice()) {
            ([x], [y]) if x != y => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    scratch.write("a.nft", &nft_a);
    scratch.write("b.nft", &nft_b);
    scratch.write("clean.sh", &readme_block("nft"));
    let nft = scratch.in_namespace(
        r#"nft -f "$1" && nft -f "$2" && nft list sets table inet filter > "$4" && sh "$3" && nft list sets table inet filter > "$5""#,
        &["a.nft", "b.nft", "clean.sh", "before", "after"],
    );
    failures.check("nft loads A, B and cleans up", nft);
    if failures.0.is_empty() {
        let listed = |text: &str| created_sets(text, "\tset ", 1);
        let before = listed(&scratch.read("before"));
        let after = listed(&scratch.read("after"));
        let all: BTreeSet<String> = sets_a.union(&sets_b).cloned().collect();
        failures.check(
            "nft: A's and B's sets before the cleanup, B's after",
            if before == all && after == sets_b && sets_a != sets_b {
                Ok(())
            } else {
                Err(format!(
                    "A {sets_a:?}\nB {sets_b:?}\nbefore {before:?}\nafter {after:?}"
                ))
            },
        );
    }

    let mut files = Vec::new();
    for (tag, list) in [("a", &a), ("b", &b)] {
        for (target, file) in [
            ("ipset", "ipset"),
            ("iptables", "iptables"),
            ("ip6tables", "ip6tables"),
        ] {
            let name = format!("{tag}.{file}");
            scratch.write(&name, &render(target, list, &[]));
            files.push(name);
        }
    }
    let (ipsets_a, ipsets_b) = (
        created_sets(&scratch.read("a.ipset"), "create ", 1),
        created_sets(&scratch.read("b.ipset"), "create ", 1),
    );
    scratch.write("clean-ipset.sh", &readme_block("ipset"));
    let mut args: Vec<&str> = files.iter().map(String::as_str).collect();
    args.extend(["clean-ipset.sh", "before", "after"]);
    let ipset = scratch.in_namespace(
        r#"ipset restore -exist < "$1" && iptables-restore --noflush < "$2" && ip6tables-restore --noflush < "$3" && ipset restore -exist < "$4" && iptables-restore --noflush < "$5" && ip6tables-restore --noflush < "$6" && ipset list -n > "$8" && sh "$7" && ipset list -n > "$9""#,
        &args,
    );
    failures.check("ipset restores A, B and cleans up", ipset);
    if failures.0.is_empty() {
        let listed = |text: String| text.lines().map(str::to_owned).collect::<BTreeSet<_>>();
        let before = listed(scratch.read("before"));
        let after = listed(scratch.read("after"));
        let all: BTreeSet<String> = ipsets_a.union(&ipsets_b).cloned().collect();
        failures.check(
            "ipset: A's and B's sets before the cleanup, B's after",
            if before == all && after == ipsets_b && ipsets_a != ipsets_b {
                Ok(())
            } else {
                Err(format!(
                    "A {ipsets_a:?}\nB {ipsets_b:?}\nbefore {before:?}\nafter {after:?}"
                ))
            },
        );
    }
    failures.assert_none();
}

// ---------------------------------------------------------------------------------------------
// The api and callback lists

/// What a plain list (an `ip_list` of strings) allows, read straight from the fixture: every
/// address on TCP at each of `ports`. As `who` it stands for destinations (api) or sources
/// (callback).
fn plain_expected(fixture: &Path, ports: &[Ports]) -> AddrRelation {
    let doc: Value = serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
    let mut out = AddrBuilder::default();
    for v in doc["ip_list"].as_array().expect("an ip_list") {
        let (family, span) = parse_net(v.as_str().expect("a string")).expect("an address");
        for &p in ports {
            out.add(family, Proto::Tcp, span, p);
        }
    }
    out.build()
}

const CALLBACK_CHAIN: &str = "WECOM_CALLBACK";
const CALLBACK_NFT_CHAIN: &str = "wecom_callback";

/// What `iptables-save` shows WECOM_CALLBACK accepting, as (source, TCP port). A rule without a
/// source, with a destination, on another chain, or anything unknown fails.
fn parse_xtables_ingress(family: Family, text: &str) -> Result<AddrRelation, String> {
    let mut out = AddrBuilder::default();
    let mut declared = false;
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') || line.starts_with('*') || line == "COMMIT" {
            continue;
        }
        if let Some(decl) = line.strip_prefix(':') {
            let mut words = decl.split_whitespace();
            let (name, policy) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            if name != CALLBACK_CHAIN && policy != "ACCEPT" {
                return Err(format!("chain {name} has policy {policy}"));
            }
            declared |= name == CALLBACK_CHAIN;
            continue;
        }
        let rule = line
            .strip_prefix(&format!("-A {CALLBACK_CHAIN} "))
            .ok_or_else(|| format!("a line outside {CALLBACK_CHAIN}: {line}"))?;
        let words = split_words(rule)?;
        let (mut src, mut proto, mut ports, mut target) = (None, None, None, None);
        let mut it = words.iter();
        while let Some(option) = it.next() {
            let mut value = || {
                it.next()
                    .map(String::as_str)
                    .ok_or_else(|| format!("{option} has no value: {line}"))
            };
            match option.as_str() {
                "-s" => {
                    let (f, span) = parse_net(value()?)?;
                    if f != family {
                        return Err(format!("-s of the other family: {line}"));
                    }
                    once(&mut src, span, "-s")?;
                }
                "-p" => once(&mut proto, Proto::parse(value()?)?, "-p")?,
                "-m" => match value()? {
                    "tcp" | "multiport" | "comment" => {}
                    other => return Err(format!("unknown match -m {other}: {line}")),
                },
                "--dport" => once(&mut ports, vec![parse_port_range(value()?, ':')?], "ports")?,
                "--dports" => once(
                    &mut ports,
                    value()?
                        .split(',')
                        .map(|r| parse_port_range(r, ':'))
                        .collect::<Result<Vec<_>, _>>()?,
                    "ports",
                )?,
                "--comment" => {
                    value()?;
                }
                "-j" => once(&mut target, value()?.to_owned(), "-j")?,
                other => return Err(format!("unknown option {other}: {line}")),
            }
        }
        if target.as_deref() != Some("ACCEPT") {
            return Err(format!("not an ACCEPT: {line}"));
        }
        let src = src.ok_or_else(|| format!("a rule for every source: {line}"))?;
        let proto = proto.ok_or_else(|| format!("a rule for every protocol: {line}"))?;
        for p in ports.ok_or_else(|| format!("a rule for every port: {line}"))? {
            out.add(family, proto, src, p);
        }
    }
    if !declared {
        return Err(format!(
            "chain {CALLBACK_CHAIN} does not exist after loading"
        ));
    }
    Ok(out.build())
}

/// What `nft -j list ruleset` shows wecom_callback accepting, as (source, TCP port).
fn parse_nft_ingress(text: &str) -> Result<AddrRelation, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("nft -j is not JSON: {e}"))?;
    let mut out = AddrBuilder::default();
    let mut chain = false;
    for item in doc["nftables"].as_array().ok_or("no nftables list")? {
        let body = match single_key(item)? {
            ("metainfo", _) => continue,
            ("table", b) if b["family"] == "inet" && b["name"] == NFT_TABLE => continue,
            ("chain", b) if b["table"] == NFT_TABLE && b["name"] == CALLBACK_NFT_CHAIN => {
                if b.get("hook").is_some() {
                    return Err("the chain is a base chain".into());
                }
                chain = true;
                continue;
            }
            ("rule", b) if b["table"] == NFT_TABLE && b["chain"] == CALLBACK_NFT_CHAIN => b,
            _ => return Err(format!("something the file must not create: {item}")),
        };
        let exprs = body["expr"].as_array().ok_or("a rule without expr")?;
        let (last, matches) = exprs.split_last().ok_or("an empty rule")?;
        if last != &serde_json::json!({"accept": null}) {
            return Err(format!("the rule ends in {last}"));
        }
        let (mut src, mut ports) = (None, None);
        for expr in matches {
            let m = match single_key(expr)? {
                ("match", m) if m["op"] == "==" => m,
                _ => return Err(format!("an unknown expression: {expr}")),
            };
            let payload = &m["left"]["payload"];
            match (payload["protocol"].as_str(), payload["field"].as_str()) {
                (Some(p @ ("ip" | "ip6")), Some("saddr")) => {
                    let family = if p == "ip" { Family::V4 } else { Family::V6 };
                    let spans = nft_values(&m["right"])
                        .into_iter()
                        .map(|v| match nft_addr(v)? {
                            (f, span) if f == family => Ok((f, span)),
                            _ => Err(format!("{p} saddr compared with {v}")),
                        })
                        .collect::<Result<Vec<_>, String>>()?;
                    once(&mut src, spans, "a saddr match")?;
                }
                (Some("tcp"), Some("dport")) => {
                    let list = nft_values(&m["right"])
                        .into_iter()
                        .map(nft_ports)
                        .collect::<Result<Vec<_>, _>>()?;
                    once(&mut ports, list, "a dport match")?;
                }
                _ => return Err(format!("an unknown match: {expr}")),
            }
        }
        let src = src.ok_or("a rule for every source")?;
        let ports = ports.ok_or("a rule for every protocol and port")?;
        for (family, span) in src {
            for &p in &ports {
                out.add(family, Proto::Tcp, span, p);
            }
        }
    }
    if !chain {
        return Err(format!(
            "chain {CALLBACK_NFT_CHAIN} does not exist after loading"
        ));
    }
    Ok(out.build())
}

/// pfSense's callback rules: pass on wan, TCP, source a network alias, destination any on the
/// callback port(s); what they admit as (source, port).
fn parse_pfsense_ingress(text: &str) -> Result<AddrRelation, String> {
    let doc = roxmltree::Document::parse(text).map_err(|e| format!("not XML: {e}"))?;
    let root = doc.root_element();
    only_children(root, &["aliases", "filter"])?;
    let mut problems = Vec::new();
    let aliases = pfsense_aliases(root, &mut problems)?;
    let mut out = AddrBuilder::default();
    for rule in element(root, "filter")?
        .children()
        .filter(|c| c.is_element())
    {
        let (kind, interface) = (text_of(rule, "type")?, text_of(rule, "interface")?);
        if kind != "pass" || interface != "wan" || text_of(rule, "protocol")? != "tcp" {
            problems.push(format!(
                "a rule that is not pass tcp on wan: {kind} {interface}"
            ));
            continue;
        }
        let source = text_of(element(rule, "source")?, "address")?;
        let destination = element(rule, "destination")?;
        only_children(destination, &["any", "port"])?;
        let ports = pfsense_ports(&text_of(destination, "port")?, &aliases)?;
        match aliases.get(&source) {
            Some(alias) if alias.kind == "network" => {
                for (family, span) in alias.entries.iter().filter_map(|e| parse_net(e).ok()) {
                    for &p in &ports {
                        out.add(family, Proto::Tcp, span, p);
                    }
                }
            }
            _ => problems.push(format!("the source {source} is not a network alias")),
        }
    }
    if problems.is_empty() {
        Ok(out.build())
    } else {
        Err(problems.join("\n"))
    }
}

/// nginx's allow lines, as (source, each of `ports`): nginx can't match ports, the server
/// block's listen does. Anything but `allow ADDRESS;` lines and a final `deny all;` fails.
fn parse_nginx(text: &str, ports: &[Ports]) -> Result<AddrRelation, String> {
    let mut out = AddrBuilder::default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    let (last, allows) = lines.split_last().ok_or("an empty file")?;
    if *last != "deny all;" {
        return Err(format!("the file ends in {last:?}, not deny all;"));
    }
    for line in allows {
        let addr = line
            .strip_prefix("allow ")
            .and_then(|l| l.strip_suffix(';'))
            .ok_or_else(|| format!("not an allow line: {line:?}"))?;
        let (family, span) = parse_net(addr)?;
        for &p in ports {
            out.add(family, Proto::Tcp, span, p);
        }
    }
    Ok(out.build())
}

/// Where the README's `location` example includes the snippet from.
const README_NGINX_SNIPPET: &str = "/etc/nginx/snippets/wecom-callback.conf";

/// `nginx -t` on a throw-away main config (its own prefix, pid, logs and temporary folders)
/// whose server holds the README's `location` example, including the snippet, inside a new
/// user and network namespace (as its root: nginx chowns its temporary folders to its user,
/// and only root is mapped).
fn nginx_check(scratch: &Scratch, snippet: &str) -> Result<(), String> {
    let snippet_path = scratch.write("wecom-callback.conf", snippet);
    let location = crate::support::readme_block_after("<!-- example: nginx-location -->");
    assert!(
        location.contains(README_NGINX_SNIPPET),
        "README's nginx location no longer includes {README_NGINX_SNIPPET}:\n{location}"
    );
    let location = location.replace(
        README_NGINX_SNIPPET,
        snippet_path.to_str().expect("a UTF-8 path"),
    );
    let dir = scratch.path("");
    let dir = dir.to_str().expect("a UTF-8 path");
    scratch.write(
        "nginx.conf",
        &format!(
            "user root root;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n  fastcgi_temp_path {dir}/fastcgi;\n  uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n  server {{\n    listen 127.0.0.1:8443;\n{location}\n  }}\n}}\n"
        ),
    );
    scratch.in_namespace(
        r#"nginx -t -q -p "$1" -c "$2" -e "$3""#,
        &["", "nginx.conf", "error.log"],
    )
}

#[test]
fn the_callback_list_loads_as_ingress_rules_into_every_tool_that_applies() {
    if !(xtables_tools(Family::V4)
        && xtables_tools(Family::V6)
        && nft_tools()
        && require_tool("xmllint")
        && require_tool("nginx"))
    {
        return;
    }
    let fixture = crate::endpoints::list_fixture("callback.json");
    let mut failures = Failures::default();
    for ports in [&["443"][..], &["443", "8443", "9000"][..]] {
        let joined = ports.join(",");
        let args = ["--list", "callback", "--callback-port", joined.as_str()];
        let port_ranges: Vec<Ports> = ports
            .iter()
            .map(|p| parse_port_range(p, '-').unwrap())
            .collect();
        let expected = plain_expected(&fixture, &port_ranges);
        for family in Family::BOTH {
            let cmd = xtables(family);
            let scratch = Scratch::new();
            scratch.write("rules", &render(cmd, &fixture, &args));
            let loaded = scratch.in_namespace(
                &format!(r#"{cmd}-restore --noflush < "$1" && {cmd}-restore --noflush < "$1" && {cmd}-save > "$2""#),
                &["rules", "saved"],
            );
            failures.check(
                &format!("{cmd} callback ports {joined}"),
                loaded.and_then(|()| {
                    check_same_addrs(
                        &parse_xtables_ingress(family, &scratch.read("saved"))?,
                        &expected.only(|f, _| f == family),
                    )
                }),
            );
        }
        let scratch = Scratch::new();
        scratch.write("script.nft", &render("nftables", &fixture, &args));
        let loaded = scratch.in_namespace(
            r#"nft -c -f "$1" && nft -f "$1" && nft -f "$1" && nft -j list ruleset > "$2""#,
            &["script.nft", "json"],
        );
        failures.check(
            &format!("nftables callback ports {joined}"),
            loaded.and_then(|()| {
                check_same_addrs(&parse_nft_ingress(&scratch.read("json"))?, &expected)
            }),
        );
        let pf = render("pfsense", &fixture, &args);
        failures.check(
            &format!("pfsense callback ports {joined}"),
            xmllint(&pf).and_then(|()| check_same_addrs(&parse_pfsense_ingress(&pf)?, &expected)),
        );
        let nginx = render("nginx", &fixture, &args);
        failures.check(
            &format!("nginx callback ports {joined}"),
            nginx_check(&Scratch::new(), &nginx)
                .and_then(|()| check_same_addrs(&parse_nginx(&nginx, &port_ranges)?, &expected)),
        );
    }
    // nginx -t is a real check: a broken snippet fails it.
    failures.check(
        "nginx -t refuses a broken snippet",
        match nginx_check(&Scratch::new(), "allow 1.2.3.4/33;\ndeny all;\n") {
            Ok(()) => Err("nginx -t accepted allow 1.2.3.4/33".into()),
            Err(_) => Ok(()),
        },
    );
    failures.assert_none();
}

#[test]
fn the_api_list_loads_as_egress_rules_on_tcp_443_into_every_tool_that_applies() {
    if !(xtables_tools(Family::V4)
        && xtables_tools(Family::V6)
        && nft_tools()
        && require_tool("xmllint")
        && require_tool("squid"))
    {
        return;
    }
    let fixture = crate::endpoints::list_fixture("api.json");
    let expected = plain_expected(&fixture, &[(443, 443)]);
    // The egress readers know the server list's chain names: render into them.
    let args = [
        "--list",
        "api",
        "--chain",
        IPT_CHAIN,
        "--nft-chain",
        NFT_CHAIN,
    ];
    let mut failures = Failures::default();
    for family in Family::BOTH {
        let cmd = xtables(family);
        let scratch = Scratch::new();
        scratch.write("rules", &render(cmd, &fixture, &args));
        let loaded = scratch.in_namespace(
            &format!(r#"{cmd}-restore --noflush < "$1" && {cmd}-restore --noflush < "$1" && {cmd}-save > "$2""#),
            &["rules", "saved"],
        );
        failures.check(
            &format!("{cmd} api"),
            loaded.and_then(|()| {
                check_same_addrs(
                    &parse_xtables_save(family, &scratch.read("saved"))?,
                    &expected.only(|f, _| f == family),
                )
            }),
        );
    }
    let scratch = Scratch::new();
    scratch.write("script.nft", &render("nftables", &fixture, &args));
    let loaded = scratch.in_namespace(
        r#"nft -c -f "$1" && nft -f "$1" && nft -f "$1" && nft -j list ruleset > "$2""#,
        &["script.nft", "json"],
    );
    failures.check(
        "nftables api",
        loaded.and_then(|()| check_same_addrs(&parse_nft_json(&scratch.read("json"))?, &expected)),
    );
    let scratch = Scratch::new();
    let squid = render("squid", &fixture, &args);
    let path = scratch.write("squid.conf", &squid);
    failures.check(
        "squid api",
        squid_parses(&path).and_then(|()| {
            let (addrs, names) = squid_relation(&parse_squid(&squid)?)?;
            if !names.listed().is_empty() {
                return Err("the api list has no names".into());
            }
            check_same_addrs(&addrs, &expected)
        }),
    );
    let pf = render("pfsense", &fixture, &args);
    failures.check(
        "pfsense api",
        xmllint(&pf).and_then(|()| {
            let doc = roxmltree::Document::parse(&pf).map_err(|e| format!("not XML: {e}"))?;
            let root = doc.root_element();
            let mut state = PfSense::default();
            let aliases = pfsense_aliases(root, &mut state.problems)?;
            for rule in element(root, "filter")?
                .children()
                .filter(|c| c.is_element())
            {
                pfsense_rule(rule, &aliases, &mut state, &PfExpect::default())?;
            }
            if !state.problems.is_empty() {
                return Err(state.problems.join("\n"));
            }
            check_same_addrs(&state.addrs.build(), &expected)
        }),
    );
    failures.assert_none();
}

/// What `iptables-save` and `ipset save` show the allowlist chain allowing when its rules
/// match `hash:net` sets (`--ipset`): each rule's protocol and ports over each member of its
/// set, plus any `-d` rule. Also returns the number of rules in the chain and the sets left.
fn parse_xtables_with_ipsets(
    family: Family,
    save: &str,
    ipsets: &str,
) -> Result<(AddrRelation, usize, BTreeSet<String>), String> {
    let mut members: BTreeMap<String, Vec<Span>> = BTreeMap::new();
    let mut kinds: BTreeMap<String, String> = BTreeMap::new();
    for line in ipsets.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["create", name, kind, ..] => {
                kinds.insert((*name).to_owned(), (*kind).to_owned());
            }
            ["add", name, member, ..] => {
                let (f, span) = parse_net(member)?;
                if f == family {
                    members.entry((*name).to_owned()).or_default().push(span);
                }
            }
            _ => return Err(format!("an unknown line of ipset save: {line}")),
        }
    }
    let mut out = AddrBuilder::default();
    let mut set_rules = SetRules::new();
    let mut rules = 0;
    let prefix = format!("-A {IPT_CHAIN} ");
    for line in save.lines() {
        if let Some(rule) = line.strip_prefix(&prefix) {
            let words = split_words(rule).map_err(|e| format!("{e}: {line}"))?;
            parse_xtables_rule(family, &words, &mut out, &mut set_rules)
                .map_err(|e| format!("{e}: {line}"))?;
            rules += 1;
        }
    }
    for (set, uses) in &set_rules {
        let kind = kinds
            .get(set)
            .ok_or_else(|| format!("a rule matches set {set}, which doesn't exist"))?;
        if kind != "hash:net" {
            continue; // A DNS-fed set: dnsmasq fills it, the other tests check it.
        }
        for &(f, proto, ports) in uses {
            for &span in members.get(set).into_iter().flatten() {
                out.add(f, proto, span, ports);
            }
        }
    }
    Ok((out.build(), rules, kinds.into_keys().collect()))
}

/// Restores `--ipset` outputs in one namespace, `lists` in turn (ipset.rules, then the rules
/// file), the last one twice; compares what the chain allows with the last list's oracle.
fn ipset_mode_check(family: Family, lists: &[&Path]) -> Result<(), String> {
    let cmd = xtables(family);
    let scratch = Scratch::new();
    let mut args = Vec::new();
    let mut script = Vec::new();
    for (i, list) in lists.iter().enumerate() {
        let (sets, rules) = (format!("ipset{i}"), format!("rules{i}"));
        scratch.write(&sets, &render("ipset", list, &["--ipset"]));
        scratch.write(&rules, &render(cmd, list, &["--ipset"]));
        let n = args.len();
        script.push(format!(
            r#"ipset restore -exist < "${}" && {cmd}-restore --noflush < "${}""#,
            n + 1,
            n + 2
        ));
        args.push(sets);
        args.push(rules);
    }
    if let Some(again) = script.last().cloned() {
        script.push(again);
    }
    let n = args.len();
    script.push(format!(
        r#"{cmd}-save > "${}" && ipset save > "${}""#,
        n + 1,
        n + 2
    ));
    args.extend(["saved".to_owned(), "sets".to_owned()]);
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    scratch.in_namespace(&script.join(" && "), &arg_refs)?;
    let (got, rules, sets) =
        parse_xtables_with_ipsets(family, &scratch.read("saved"), &scratch.read("sets"))?;
    let last = lists.last().ok_or("no list")?;
    let expected = Expected::from_fixture(last).addrs.only(|f, _| f == family);
    let rendered = render(cmd, last, &["--ipset"]);
    let want_rules = rendered.lines().filter(|l| l.starts_with("-A ")).count();
    let per_address = rendered
        .lines()
        .filter(|l| l.starts_with("-A ") && l.contains(" -d "))
        .count();
    all([
        check_same_addrs(&got, &expected),
        if rules == want_rules && per_address == 0 {
            Ok(())
        } else {
            Err(format!(
                "{rules} rules loaded, {want_rules} in the file, {per_address} with -d"
            ))
        },
        match sets.iter().find(|s| s.contains("_t_")) {
            Some(s) => Err(format!("temporary set {s} left behind")),
            None => Ok(()),
        },
    ])
}

/// `--ipset`: ipset.rules then the rules file, restored twice, allow exactly the list, with no
/// rule per address and no temporary set left.
#[test]
fn ipset_address_sets_load_idempotently_and_allow_exactly_the_list() {
    let mut failures = Failures::default();
    for family in [Family::V4, Family::V6] {
        if !xtables_tools(family) {
            return;
        }
        for fixture in fixture_files() {
            let what = format!("--ipset {} {}", xtables(family), file_name(&fixture));
            failures.check(&what, ipset_mode_check(family, &[&fixture]));
        }
    }
    failures.assert_none();
}

/// `--ipset`: restoring a changed list on top swaps every group's members: only the second
/// list's addresses remain allowed (the wire lists A then B, and each pair of fixtures).
#[test]
fn ipset_address_sets_reload_of_a_changed_list_swaps_the_members() {
    let mut failures = Failures::default();
    let wire = (
        fixtures().join("wire/a.json"),
        fixtures().join("wire/b.json"),
    );
    let mut pairs = fixture_pairs();
    pairs.push(wire);
    for family in [Family::V4, Family::V6] {
        if !xtables_tools(family) {
            return;
        }
        for (first, second) in &pairs {
            let what = format!(
                "--ipset {} {} then {}",
                xtables(family),
                file_name(first),
                file_name(second)
            );
            failures.check(&what, ipset_mode_check(family, &[first, second]));
        }
    }
    failures.assert_none();
}

/// pfSense's header names the least "Firewall Maximum Table Entries": twice the entries of the
/// file's address and host aliases, counted here from the XML itself, for every fixture, the
/// callback list and a list large enough to need several aliases per group.
#[test]
fn pfsense_header_states_the_table_entries_the_aliases_need() {
    let scratch = Scratch::new();
    let large = scratch.write("large.json", &large_list(12_000));
    let mut cases: Vec<(PathBuf, Vec<&str>)> =
        fixture_files().into_iter().map(|f| (f, vec![])).collect();
    cases.push((large, vec![]));
    cases.push((
        crate::endpoints::list_fixture("callback.json"),
        vec!["--list", "callback"],
    ));
    let mut failures = Failures::default();
    for (fixture, args) in &cases {
        let xml = render("pfsense", fixture, args);
        let counted = roxmltree::Document::parse(&xml)
            .map_err(|e| format!("not XML: {e}"))
            .map(|doc| {
                doc.descendants()
                    .filter(|n| n.has_tag_name("alias"))
                    .filter(|a| {
                        a.children()
                            .any(|c| c.has_tag_name("type") && c.text() != Some("port"))
                    })
                    .flat_map(|a| a.children().filter(|c| c.has_tag_name("address")))
                    .map(|addr| addr.text().unwrap_or("").split_whitespace().count())
                    .sum::<usize>()
            });
        failures.check(
            &format!("pfsense {}", file_name(fixture)),
            counted.and_then(|n| {
                let header = xml.split("-->").next().unwrap_or("");
                let want = format!("set it to at least {}", 2 * n);
                let flat = header.split_whitespace().collect::<Vec<_>>().join(" ");
                if n > 0 && flat.contains(&want) {
                    Ok(())
                } else {
                    Err(format!("{n} entries; the header doesn't say {want:?}"))
                }
            }),
        );
    }
    failures.assert_none();
}
