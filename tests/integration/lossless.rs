//! `source.json` is lossless: building from it gives, byte for byte, the files built from the
//! list it came from, for every target, with and without the filters that read what it keeps
//! (`--necessary-only` reads is_necessary, `--exact-domains` reads universal_domian), and the
//! comments that read descriptions. Checked on random lists where one destination has entries
//! that differ in all of these.

use proptest::prelude::*;
use serde_json::{json, Value};

use wecom_allowlist::config::Config;
use wecom_allowlist::render::Templates;
use wecom_allowlist::{prepare, wecom, Target};

fn ports() -> impl Strategy<Value = Vec<Value>> {
    let port = prop_oneof![
        prop::sample::select(vec![80u16, 443, 3478, 8080]).prop_map(|p| json!(p)),
        (8000u16..8004, 0u16..3).prop_map(|(a, n)| json!(format!("{a}-{}", a + n))),
    ];
    prop::collection::vec(port, 1..4)
}

/// The fields every entry has, from small pools so that one destination gets several entries
/// that differ in protocol, ports, is_necessary and description.
fn common() -> impl Strategy<Value = (&'static str, Vec<Value>, u8, Option<&'static str>)> {
    (
        prop::sample::select(vec!["TCP", "UDP", "TCP/UDP"]),
        ports(),
        0u8..2,
        prop::sample::select(vec![None, Some(""), Some("core"), Some("calls; media")]),
    )
}

fn entry(
    mut obj: serde_json::Map<String, Value>,
    common: (&str, Vec<Value>, u8, Option<&str>),
) -> Value {
    let (protocol, ports, necessary, description) = common;
    obj.insert("protocol".into(), json!(protocol));
    obj.insert("port".into(), json!(ports));
    obj.insert("is_necessary".into(), json!(necessary));
    if let Some(d) = description {
        obj.insert("description".into(), json!(d));
    }
    Value::Object(obj)
}

fn document() -> impl Strategy<Value = String> {
    let ip = prop::sample::select(vec![
        "101.0.112.1",
        "101.0.112.0/30",
        "101.0.112.2",
        "101.0.113.0/24",
        "2402:4e00::1",
        "2402:4e00::/126",
    ]);
    let ip_entry = (ip, common()).prop_map(|(ip, c)| {
        let mut obj = serde_json::Map::new();
        obj.insert("ip".into(), json!(ip));
        entry(obj, c)
    });
    let name = prop::sample::select(vec![
        "a.work.example.com",
        "work.example.com",
        "*.work.example.com",
        "b.example.org",
    ]);
    // None, the domain's own zone or its parent: a universal domain is always the domain or a
    // parent of it, or the list is refused.
    let universal = 0u8..3;
    let domain_entry = (name, universal, common()).prop_map(|(d, pick, c)| {
        let apex = d.strip_prefix("*.").unwrap_or(d);
        let parent = apex
            .split_once('.')
            .map(|(_, p)| p)
            .filter(|p| p.contains('.'))
            .unwrap_or(apex);
        let u = [None, Some(apex), Some(parent)][usize::from(pick)];
        let mut obj = serde_json::Map::new();
        obj.insert("domain".into(), json!(d));
        if let Some(u) = u {
            obj.insert("universal_domian".into(), json!(u));
        }
        entry(obj, c)
    });
    (
        prop::collection::vec(ip_entry, 0..10),
        prop::collection::vec(domain_entry, 0..8),
    )
        .prop_map(|(ips, domains)| {
            json!({"errcode": 0, "errmsg": "ok", "domain_list": domains, "ip_list": ips})
                .to_string()
        })
}

/// Every target's file, or the error that stopped it; and the source.json of the run.
fn build(doc: &[u8], config: &Config, templates: &Templates) -> Option<(Vec<String>, String)> {
    let prepared = prepare(wecom::parse(doc, false).expect("a valid list"), config).ok()?;
    let files = Target::SERVER
        .iter()
        .map(|&t| {
            prepared
                .render(t, templates)
                .unwrap_or_else(|e| format!("error: {e}"))
        })
        .collect();
    Some((files, prepared.source_json()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn building_from_source_json_gives_the_same_bytes(
        doc in document(),
        necessary_only in any::<bool>(),
        exact_domains in any::<bool>(),
    ) {
        let templates = Templates::new(None).expect("built-in templates");
        let mut config = Config::default();
        config.options.necessary_only = necessary_only;
        config.options.exact_domains = exact_domains;
        // A list that the filters leave empty is refused before anything is written.
        let Some((files, source)) = build(doc.as_bytes(), &config, &templates) else {
            return Ok(());
        };
        let (again, source_again) =
            build(source.as_bytes(), &config, &templates).expect("source.json builds");
        prop_assert_eq!(&source_again, &source, "source.json is not a fixed point");
        for ((t, a), b) in Target::SERVER.iter().zip(&files).zip(&again) {
            prop_assert_eq!(a, b, "{} differs when built from source.json:\n{}", t.name(), source);
        }
    }
}
