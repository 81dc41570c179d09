//! The normalizer's one promise, checked on random lists: after grouping, aggregation and
//! dropping covered values, exactly the same (destination, protocol, port) are allowed as the
//! list says. The expectation comes from the independent `oracle`, not from the library.

use proptest::prelude::*;
use serde_json::{json, Value};

use wecom_allowlist::model::{Dest, Family as F, Protocol};
use wecom_allowlist::normalize::{normalize, Options, Policy};

use crate::oracle::{
    check_same_addrs, check_same_names, parse_net, AddrBuilder, AddrRelation, Expected,
    NameRelation, Proto,
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

/// Addresses crowded into a few small networks, so that overlap, adjacency and containment
/// across groups are the rule rather than the exception.
fn ip() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u32..64, 26u8..=32).prop_map(|(h, len)| {
            let net = ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(0x0A00_0000 | h), len).unwrap();
            net.trunc().to_string()
        }),
        (0u128..64, 122u8..=128).prop_map(|(h, len)| {
            let net =
                ipnet::Ipv6Net::new(std::net::Ipv6Addr::from(0x2001_0db8_u128 << 96 | h), len)
                    .unwrap();
            net.trunc().to_string()
        }),
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "a.example.com",
        "b.a.example.com",
        "example.com",
        "c.example.com",
        "x.example.org",
        "*.a.example.com",
        "*.example.com",
    ])
    .prop_map(str::to_owned)
}

fn document() -> impl Strategy<Value = String> {
    let ip_entry = (ip(), common()).prop_map(
        |(ip, (p, ports, n))| json!({"ip": ip, "protocol": p, "port": ports, "is_necessary": n}),
    );
    let universal = prop::option::of(prop::sample::select(vec![
        "example.com",
        "a.example.com",
        "example.org",
    ]));
    let domain_entry = (name(), universal, common()).prop_map(|(d, u, (p, ports, n))| {
        json!({"domain": d, "universal_domian": u, "protocol": p, "port": ports, "is_necessary": n})
    });
    (
        prop::collection::vec(ip_entry, 0..12),
        prop::collection::vec(domain_entry, 0..6),
    )
        .prop_map(|(ips, domains)| {
            json!({"errcode": 0, "ip_list": ips, "domain_list": domains}).to_string()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn normalizing_allows_exactly_what_the_list_says(doc in document()) {
        let expected = Expected::from_json(&doc).expect("the oracle reads it");
        let entries = wecom_allowlist::wecom::parse(doc.as_bytes(), false).expect("valid").entries;
        let opts = Options { allow_broad: true, ..Options::default() };

        // A target with wildcards (Squid) allows the full list.
        let (addrs, names) = allowed(&normalize(&entries, &opts, true).expect("normalizes"));
        check_same_addrs(&addrs, &expected.addrs).map_err(TestCaseError::fail)?;
        for (rel, p) in names.iter().zip([Proto::Tcp, Proto::Udp]) {
            check_same_names(rel, &expected.names(p)).map_err(TestCaseError::fail)?;
        }

        // One without (pfSense) allows every exact name and reports the wildcards instead.
        let policy = normalize(&entries, &opts, false).expect("normalizes");
        let (addrs, names) = allowed(&policy);
        check_same_addrs(&addrs, &expected.addrs).map_err(TestCaseError::fail)?;
        for (rel, p) in names.iter().zip([Proto::Tcp, Proto::Udp]) {
            check_same_names(rel, &expected.names(p).exact_only()).map_err(TestCaseError::fail)?;
        }
        let has_wildcards = doc.contains("*.") || doc.contains("\"universal_domian\":\"");
        prop_assert_eq!(!policy.inexpressible.is_empty(), has_wildcards);
    }
}
