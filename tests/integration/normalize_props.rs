//! The pipeline's one promise, checked on random lists and random selections: after the
//! filters, the exclusions, grouping, aggregation and dropping covered values, exactly the
//! (destination, protocol, port) are allowed that the list says, once the selection is applied;
//! and what the tool refuses, the oracle refuses too. The expectation comes from the independent
//! `oracle`, not from the library.

use proptest::prelude::*;
use serde_json::{json, Value};

use wecom_allowlist::config::Config;
use wecom_allowlist::model::{Dest, Family as F, Protocol};
use wecom_allowlist::normalize::{self, Policy};
use wecom_allowlist::Target;

use crate::oracle::{
    check_same_addrs, check_same_names, parse_net, AddrBuilder, AddrRelation, Expected,
    NameRelation, Proto, Selection,
};

fn proto(p: Protocol) -> Proto {
    match p {
        Protocol::Tcp => Proto::Tcp,
        Protocol::Udp => Proto::Udp,
    }
}

/// What the policy allows, in the oracle's terms.
fn allowed(policy: &Policy) -> (AddrRelation, [NameRelation; 2]) {
    let mut addrs = AddrBuilder::default();
    let mut names = [NameRelation::default(), NameRelation::default()];
    for g in &policy.groups {
        for m in &g.members {
            for r in g.ports.ranges() {
                let ports = (r.start, r.end);
                let rel = &mut names[usize::from(g.protocol == Protocol::Udp)];
                match (&m.dest, g.family) {
                    (Dest::Net(n), F::Ipv4 | F::Ipv6) => {
                        let (family, span) = parse_net(&n.to_string()).expect("a valid prefix");
                        addrs.add(family, proto(g.protocol), span, ports);
                    }
                    (Dest::Exact(h), F::Dns) => rel.add_exact(h.as_str(), ports),
                    (Dest::Wildcard(h), F::Dns) => rel.add_wildcard(h.as_str(), ports),
                    (d, f) => panic!("{d} in a {f:?} group"),
                }
            }
        }
    }
    (addrs.build(), names)
}

fn port() -> impl Strategy<Value = Value> {
    prop_oneof![
        (1u16..12).prop_map(|p| json!(p)),
        (1u16..12).prop_map(|p| json!(p.to_string())),
        (1u16..12, 0u16..4).prop_map(|(a, n)| json!(format!("{a}-{}", a + n))),
    ]
}

fn common() -> impl Strategy<Value = (String, Vec<Value>, u8)> {
    (
        prop::sample::select(vec!["TCP", "udp", "TCP/UDP"]),
        prop::collection::vec(port(), 1..4),
        0u8..2,
    )
        .prop_map(|(p, ports, n)| (p.to_string(), ports, n))
}

/// Public addresses crowded into a few small networks, so that overlap, adjacency and
/// containment across groups are the rule rather than the exception. Now and then a CIDR with
/// host bits set, which both sides must refuse.
fn ip() -> impl Strategy<Value = String> {
    prop_oneof![
        20 => (0u32..64, 26u8..=32).prop_map(|(h, len)| v4(h, len)),
        20 => (0u128..64, 122u8..=128).prop_map(|(h, len)| v6(h, len)),
        1 => (0u32..64, 26u8..=31).prop_map(|(h, len)| format!(
            "{}/{len}",
            std::net::Ipv4Addr::from(0x6500_0000 | h | 1)
        )),
    ]
}

/// `101.0.0.h/len`, without host bits.
fn v4(h: u32, len: u8) -> String {
    let net = ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(0x6500_0000 | h), len).unwrap();
    net.trunc().to_string()
}

/// `2001:da8::h/len`, without host bits.
fn v6(h: u128, len: u8) -> String {
    let net =
        ipnet::Ipv6Net::new(std::net::Ipv6Addr::from(0x2001_0da8_u128 << 96 | h), len).unwrap();
    net.trunc().to_string()
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        20 => prop::sample::select(vec![
            "a.example.com",
            "b.a.example.com",
            "example.com",
            "c.example.com",
            "x.example.org",
            "*.a.example.com",
            "*.example.com",
        ]),
        // Under a public suffix: fine as a name, refused as a wildcard over the suffix.
        1 => prop::sample::select(vec!["a.com.cn", "*.com.cn"]),
    ]
    .prop_map(str::to_owned)
}

/// The universal domain of `domain`: none, or the domain itself or one of its parents (the
/// `pick`-th), and now and then a `bad` one that the tool and the oracle must both refuse
/// when it counts: an unrelated zone, a child, a public suffix.
fn universal_for(domain: &str, pick: Option<usize>, bad: Option<&str>) -> Option<String> {
    if let Some(bad) = bad {
        return Some(bad.to_owned());
    }
    let apex = domain.strip_prefix("*.").unwrap_or(domain);
    let mut candidates = vec![apex];
    candidates.extend(
        apex.match_indices('.')
            .map(|(i, _)| &apex[i + 1..])
            .filter(|p| p.contains('.')),
    );
    pick.map(|i| candidates[i % candidates.len()].to_owned())
}

fn document() -> impl Strategy<Value = String> {
    let ip_entry = (ip(), common()).prop_map(
        |(ip, (p, ports, n))| json!({"ip": ip, "protocol": p, "port": ports, "is_necessary": n}),
    );
    let pick = prop::option::of(any::<usize>());
    let bad = prop_oneof![
        30 => Just(None),
        1 => prop::sample::select(vec!["example.org", "b.a.example.com", "com.cn"]).prop_map(Some),
    ];
    // Either spelling of the universal domain: the API's typo, or the word WeCom may switch to.
    let key = prop::sample::select(vec!["universal_domian", "universal_domain"]);
    let domain_entry =
        (name(), pick, bad, key, common()).prop_map(|(d, pick, bad, key, (p, ports, n))| {
            let u = universal_for(&d, pick, bad);
            let mut entry = json!({"domain": d, "protocol": p, "port": ports, "is_necessary": n});
            entry[key] = json!(u);
            entry
        });
    (
        prop::collection::vec(ip_entry, 0..12),
        prop::collection::vec(domain_entry, 0..6),
    )
        .prop_map(|(ips, domains)| {
            json!({"errcode": 0, "ip_list": ips, "domain_list": domains}).to_string()
        })
}

/// Filters and exclusions, over the same few names and networks as the lists.
fn selection() -> impl Strategy<Value = Selection> {
    let subset = |all: Vec<&'static str>| prop::sample::subsequence(all.clone(), 0..=all.len());
    let excluded_name = prop::sample::select(vec![
        "a.example.com",
        "*.a.example.com",
        ".a.example.com",
        "x.b.a.example.com",
        "example.com",
        "*.example.com",
        "c.example.com",
        "*.example.org",
        "x.example.org",
    ]);
    let excluded_net = prop_oneof![
        (0u32..64, 26u8..=32).prop_map(|(h, len)| v4(h, len)),
        (0u128..64, 122u8..=128).prop_map(|(h, len)| v6(h, len)),
    ];
    (
        any::<bool>(),
        any::<bool>(),
        subset(vec!["tcp", "udp"]),
        subset(vec!["ipv4", "ipv6", "dns"]),
        prop::collection::vec(excluded_name, 0..3),
        prop::collection::vec(excluded_net, 0..3),
    )
        .prop_map(
            |(necessary_only, exact_domains, protocols, families, names, nets)| Selection {
                necessary_only,
                exact_domains,
                protocols: protocols
                    .iter()
                    .map(|p| Proto::parse(p).expect("tcp or udp"))
                    .collect(),
                families,
                exclude_domains: names.into_iter().map(str::to_owned).collect(),
                exclude_cidrs: nets,
            },
        )
}

/// The selection as the tool's config file says it.
fn config_toml(sel: &Selection) -> String {
    let list = |items: Vec<String>| {
        let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
        format!("[{}]", quoted.join(", "))
    };
    format!(
        "[filters]\nnecessary_only = {}\nexact_domains = {}\nprotocols = {}\nfamilies = {}\n\
         [exclude]\ndomains = {}\ncidrs = {}\n",
        sel.necessary_only,
        sel.exact_domains,
        list(sel.protocols.iter().map(|p| p.name().to_owned()).collect()),
        list(sel.families.iter().map(|f| f.to_string()).collect()),
        list(sel.exclude_domains.clone()),
        list(sel.exclude_cidrs.clone()),
    )
}

/// What the tool makes of the list under `sel`: the policies for a target with wildcards
/// (Squid) and one without (pfSense), or the error it refuses with.
fn run_tool(doc: &str, sel: &Selection) -> Result<(Policy, Policy), String> {
    let mut config = Config::parse(&config_toml(sel)).map_err(|e| e.to_string())?;
    // The guards about the list as a whole are tested elsewhere; here the lists may be empty
    // after filtering.
    config.options.allow_empty = true;
    let response =
        wecom_allowlist::wecom::parse(doc.as_bytes(), false).map_err(|e| e.to_string())?;
    let prepared = wecom_allowlist::prepare(response, &config).map_err(|e| e.to_string())?;
    let squid = prepared.policy(Target::Squid).map_err(|e| e.to_string())?;
    let pfsense = prepared
        .policy(Target::Pfsense)
        .map_err(|e| e.to_string())?;
    Ok((squid, pfsense))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn the_pipeline_allows_exactly_what_the_selected_list_says(doc in document(), sel in selection()) {
        let (expected, (squid, pfsense)) = match (Expected::selected(&doc, &sel), run_tool(&doc, &sel)) {
            (Err(_), Err(_)) => return Ok(()),
            (Ok(_), Err(e)) => return Err(TestCaseError::fail(format!("the tool refused a list the oracle reads: {e}"))),
            (Err(e), Ok(_)) => return Err(TestCaseError::fail(format!("the tool accepted a list the oracle refuses: {e}"))),
            (Ok(expected), Ok(policies)) => (expected, policies),
        };
        // A target with wildcards (Squid) allows the full selection.
        let (addrs, names) = allowed(&squid);
        check_same_addrs(&addrs, &expected.addrs).map_err(TestCaseError::fail)?;
        for (rel, p) in names.iter().zip([Proto::Tcp, Proto::Udp]) {
            check_same_names(rel, &expected.names(p)).map_err(TestCaseError::fail)?;
        }
        // One without (pfSense) allows every exact name and reports the wildcards instead.
        let (addrs, names) = allowed(&pfsense);
        check_same_addrs(&addrs, &expected.addrs).map_err(TestCaseError::fail)?;
        for (rel, p) in names.iter().zip([Proto::Tcp, Proto::Udp]) {
            check_same_names(rel, &expected.names(p).exact_only()).map_err(TestCaseError::fail)?;
        }
        prop_assert_eq!(!pfsense.inexpressible.is_empty(), expected.has_wildcards());
    }

    /// The exclusions are a set: their order never changes what is built, nor whether it is
    /// refused.
    #[test]
    fn the_order_of_exclusions_does_not_matter(doc in document(), sel in selection()) {
        let mut reversed = sel.clone();
        reversed.exclude_domains.reverse();
        reversed.exclude_cidrs.reverse();
        let (a, b) = (run_tool(&doc, &sel), run_tool(&doc, &reversed));
        prop_assert_eq!(a.is_ok(), b.is_ok(), "{:?} / {:?}", a.as_ref().err(), b.as_ref().err());
        if let (Ok(a), Ok(b)) = (a, b) {
            prop_assert_eq!(a, b);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// A list in which no wildcard counts (no names at all, or only exact ones) gives the same
    /// policy, or the same refusal, to targets with and without wildcards: the tool then makes
    /// only one. Compared on the two policies made separately.
    #[test]
    fn without_wildcards_both_capabilities_get_the_same_policy(doc in document(), sel in selection()) {
        let Ok(mut config) = Config::parse(&config_toml(&sel)) else { return Ok(()) };
        config.options.allow_empty = true;
        let Ok(response) = wecom_allowlist::wecom::parse(doc.as_bytes(), false) else { return Ok(()) };
        let Ok(entries) = normalize::select(response.entries, &config.options) else { return Ok(()) };
        let made = |wildcards| {
            normalize::normalize(&entries, &config.options, wildcards).map_err(|e| e.to_string())
        };
        let (with, without) = (made(true), made(false));
        if normalize::wildcards_matter(&entries, &config.options) {
            return Ok(());
        }
        prop_assert_eq!(with, without);
    }
}
