//! What every fuzz target checks: the pipeline never panics, a built-in template never fails
//! (exit 70 is a bug), and every output the tool accepts is well-formed for its target. These
//! checks read the outputs as text, with no code of the crate's renderers.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use wecom_allowlist::config::Config;
use wecom_allowlist::render::Templates;
use wecom_allowlist::{wecom, Error, Target};

/// The option sets each input goes through: the defaults, and every filter on.
pub fn option_sets() -> Vec<Config> {
    let mut all_on = Config::default();
    let o = &mut all_on.options;
    o.necessary_only = true;
    o.exact_domains = true;
    o.allow_empty = true;
    o.allow_broad = true;
    o.allow_nonpublic = true;
    vec![Config::default(), all_on]
}

/// Parses a response strictly, or when that fails skipping invalid entries, and runs what is
/// accepted through every target with every option set.
pub fn check_response(bytes: &[u8], templates: &Templates) {
    let parsed = wecom::parse(bytes, false).or_else(|_| wecom::parse(bytes, true));
    if let Ok(response) = parsed {
        for config in option_sets() {
            check_build(response.clone(), &config, templates);
        }
    }
}

/// Prepares and renders every target; checks whatever is accepted.
pub fn check_build(response: wecom::Response, config: &Config, templates: &Templates) {
    let Ok(prepared) = wecom_allowlist::prepare(response, config) else {
        return;
    };
    for target in Target::SERVER {
        match prepared.render(target, templates) {
            Ok(text) => check_output(target, &text),
            Err(e @ Error::Render { .. }) => {
                panic!("{}: built-in template failed: {e}", target.name())
            }
            Err(_) => {}
        }
        if let Ok(context) = prepared.context_json(target) {
            check_context(target, &context);
        }
    }
}

/// One target's file: line lengths, and its own grammar as far as a line-level reading goes.
pub fn check_output(target: Target, text: &str) {
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{}: no final newline",
        target.name()
    );
    // The library's own limit, under what each loader reads (target-facts.md).
    if let Some(max) = target.max_line_bytes() {
        for (n, line) in text.lines().enumerate() {
            assert!(
                line.len() <= max,
                "{}: line {} is {} bytes, over {max}",
                target.name(),
                n + 1,
                line.len()
            );
        }
    }
    match target {
        Target::Iptables | Target::Ip6tables => check_iptables(text),
        Target::Nftables => check_nftables(text),
        Target::Pfsense => check_pfsense(text),
        Target::Squid => check_squid(text),
        Target::Dnsmasq => check_dnsmasq(text),
        Target::Ipset => check_ipset(text),
        // The callback list's target: the server list never reaches it.
        Target::Nginx => {}
    }
}

/// dnsmasq drop-in: only comments and `nftset=`/`ipset=` lines of one name each, each name once
/// (dnsmasq uses only the first line of a repeated name).
fn check_dnsmasq(text: &str) {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let rest = line
            .strip_prefix("nftset=/")
            .or_else(|| line.strip_prefix("ipset=/"))
            .unwrap_or_else(|| panic!("dnsmasq: unexpected line {line:?}"));
        let parts: Vec<&str> = rest.split('/').collect();
        assert!(parts.len() == 2, "dnsmasq: not one name: {line:?}");
        assert!(
            names.insert(parts[0].to_owned()),
            "dnsmasq: {} twice",
            parts[0]
        );
    }
}

/// ipset restore input: only comments and `create` lines, each set once, names under 32 bytes.
fn check_ipset(text: &str) {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name = line
            .strip_prefix("create ")
            .and_then(|r| r.split(' ').next())
            .unwrap_or_else(|| panic!("ipset: unexpected line {line:?}"));
        assert!(name.len() <= 31, "ipset: name {name} too long");
        assert!(names.insert(name.to_owned()), "ipset: set {name} twice");
    }
}

/// iptables-restore input: only comments, a table, chain declarations (each once), rules and
/// COMMIT; a line of free text anywhere else would be a rule injected.
fn check_iptables(text: &str) {
    let mut chains = BTreeSet::new();
    for line in text.lines() {
        if let Some(chain) = line.strip_prefix(':') {
            let name = chain.split(' ').next().unwrap_or_default();
            assert!(
                chains.insert(name.to_owned()),
                "iptables: chain {name} declared twice"
            );
            continue;
        }
        assert!(
            line.is_empty()
                || line.starts_with('#')
                || line.starts_with("*filter")
                || line.starts_with("-A ")
                || line.starts_with("-F ")
                || line.starts_with("-N ")
                || line == "COMMIT",
            "iptables: unexpected line {line:?}"
        );
    }
}

/// nft: each named set is declared once, and every quoted string ends on its line (nft strings
/// have no escape, so an odd count means free text broke out).
fn check_nftables(text: &str) {
    let mut sets = BTreeMap::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        assert!(
            trimmed.matches('"').count() % 2 == 0 || trimmed.starts_with('#'),
            "nftables: unbalanced quotes in {line:?}"
        );
        // `add set FAMILY TABLE NAME { ... }`
        if let Some(rest) = trimmed.strip_prefix("add set ") {
            if let Some(name) = rest.split(' ').nth(2) {
                *sets.entry(name.to_owned()).or_insert(0) += 1;
            }
        }
    }
    for (name, count) in sets {
        assert!(count == 1, "nftables: set {name} declared {count} times");
    }
}

/// pfSense: the XML parses, and alias names are unique.
fn check_pfsense(text: &str) {
    let doc = match roxmltree::Document::parse(text) {
        Ok(doc) => doc,
        Err(e) => panic!("pfsense: not XML: {e}"),
    };
    let mut names = BTreeSet::new();
    for alias in doc.descendants().filter(|n| n.has_tag_name("alias")) {
        if let Some(name) = alias
            .children()
            .find(|n| n.has_tag_name("name"))
            .and_then(|n| n.text())
        {
            assert!(names.insert(name.to_owned()), "pfsense: alias {name} twice");
        }
    }
}

/// squid.conf snippet: only comments, ACLs and http_access lines.
fn check_squid(text: &str) {
    for line in text.lines() {
        assert!(
            line.is_empty()
                || line.starts_with('#')
                || line.starts_with("acl ")
                || line.starts_with("http_access "),
            "squid: unexpected line {line:?}"
        );
    }
}

/// The template context: each group's slug is unique, and one port slug stands for one
/// (protocol, ports) only.
pub fn check_context(target: Target, context: &str) {
    let doc: Value = match serde_json::from_str(context) {
        Ok(doc) => doc,
        Err(e) => panic!("{}: the context is not JSON: {e}", target.name()),
    };
    let groups = doc["groups"].as_array().cloned().unwrap_or_default();
    let mut slugs = BTreeSet::new();
    let mut port_slugs: BTreeMap<String, (Value, Value)> = BTreeMap::new();
    for g in &groups {
        let slug = g["slug"].as_str().unwrap_or_default().to_owned();
        assert!(
            slugs.insert(slug.clone()),
            "{}: group slug {slug} twice",
            target.name()
        );
        let port_slug = g["port_slug"].as_str().unwrap_or_default().to_owned();
        let what = (g["protocol"].clone(), g["ports"].clone());
        if let Some(seen) = port_slugs.insert(port_slug.clone(), what.clone()) {
            assert!(
                seen == what,
                "{}: port slug {port_slug} names {seen:?} and {what:?}",
                target.name()
            );
        }
    }
}
