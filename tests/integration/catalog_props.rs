//! The catalog's walks checked against a plain reading of the entries: on random pairs of
//! lists, `diff`'s summary and the shrink guard's measure come out as a quadratic comparison
//! of every destination with every other says. The expectation is computed from the generated
//! entries themselves, not from anything the library parsed or built.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use serde_json::{json, Value};

use wecom_allowlist::diff::summarize;
use wecom_allowlist::list::{shrinkage, List};
use wecom_allowlist::model::{Dest, Protocol};
use wecom_allowlist::wecom;

/// A destination in the oracle's terms.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum ODest {
    /// Family (4 or 6), first address, prefix length.
    Net(u8, u128, u8),
    /// Name, and whether it stands for every name below it too.
    Name(String, bool),
}

impl ODest {
    /// How the library prints a destination (`Dest`'s Display).
    fn shown(&self) -> String {
        match self {
            ODest::Net(4, a, len) => format!("{}/{len}", Ipv4Addr::from(*a as u32)),
            ODest::Net(_, a, len) => format!("{}/{len}", Ipv6Addr::from(*a)),
            ODest::Name(n, false) => n.clone(),
            ODest::Name(n, true) => format!(".{n}"),
        }
    }

    /// True when allowing `self` allows everything `other` names.
    fn covers(&self, other: &ODest) -> bool {
        match (self, other) {
            (ODest::Net(f, a, la), ODest::Net(g, b, lb)) => {
                let bits = if *f == 4 { 32 } else { 128 };
                let shift = bits - u32::from(*la);
                f == g && la <= lb && (shift == 128 || a >> shift == b >> shift)
            }
            (ODest::Name(a, true), ODest::Name(b, _)) => a == b || b.ends_with(&format!(".{a}")),
            (ODest::Name(a, false), ODest::Name(b, false)) => a == b,
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
struct OEntry {
    dest: ODest,
    universal: Option<String>,
    tcp: bool,
    udp: bool,
    ports: BTreeSet<u16>,
    necessary: bool,
    description: String,
}

impl OEntry {
    fn protocols(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.tcp {
            out.push("tcp");
        }
        if self.udp {
            out.push("udp");
        }
        out
    }

    /// The entry as the API writes it.
    fn json(&self) -> Value {
        let protocol = match (self.tcp, self.udp) {
            (true, true) => "TCP/UDP",
            (true, false) => "TCP",
            _ => "UDP",
        };
        let ports: Vec<u16> = self.ports.iter().copied().collect();
        let mut e = json!({
            "protocol": protocol,
            "port": ports,
            "is_necessary": u8::from(self.necessary),
            "description": self.description,
        });
        match &self.dest {
            ODest::Net(..) => e["ip"] = json!(self.dest.shown()),
            ODest::Name(n, wild) => {
                e["domain"] = json!(if *wild { format!("*.{n}") } else { n.clone() });
                if let Some(u) = &self.universal {
                    e["universal_domian"] = json!(u);
                }
            }
        }
        e
    }

    /// What identifies its destination, as the test prints the library's keys.
    fn key(&self) -> String {
        let list = match self.dest {
            ODest::Net(..) => "ip_list",
            ODest::Name(..) => "domain_list",
        };
        format!("{list} {} {:?}", self.dest.shown(), self.universal)
    }
}

const NAMES: [&str; 7] = [
    "example.com",
    "a.example.com",
    "b.a.example.com",
    "c.a.example.com",
    "x.b.a.example.com",
    "example.org",
    "a.example.org",
];

fn dest() -> impl Strategy<Value = ODest> {
    let v4 = (0u128..24, 28u8..=32).prop_map(|(h, len)| {
        let a = (0x6500_0000 | h) & !((1u128 << (32 - len)) - 1);
        ODest::Net(4, a, len)
    });
    let v6 = (0u128..24, 124u8..=128).prop_map(|(h, len)| {
        let a = ((0x2400_cb00u128 << 96) | h) & !((1u128 << (128 - len)) - 1);
        ODest::Net(6, a, len)
    });
    let name = (0..NAMES.len(), any::<bool>()).prop_map(|(i, w)| ODest::Name(NAMES[i].into(), w));
    prop_oneof![3 => v4, 1 => v6, 3 => name]
}

fn entry() -> impl Strategy<Value = OEntry> {
    (
        dest(),
        prop::option::weighted(0.3, 0..NAMES.len()),
        0u8..3,
        prop::collection::btree_set(1u16..10, 1..4),
        any::<bool>(),
        prop::sample::select(vec!["", "a", "b"]),
    )
        .prop_map(|(dest, universal, p, ports, necessary, d)| OEntry {
            universal: universal
                .filter(|_| matches!(dest, ODest::Name(..)))
                .map(|i| NAMES[i].to_owned()),
            dest,
            tcp: p != 1,
            udp: p != 0,
            ports,
            necessary,
            description: d.to_owned(),
        })
}

fn entries() -> impl Strategy<Value = Vec<OEntry>> {
    prop::collection::vec(entry(), 0..30)
}

/// A second list that shares much with the first: some of its entries, changed a little.
fn pair() -> impl Strategy<Value = (Vec<OEntry>, Vec<OEntry>)> {
    (entries(), entries(), prop::collection::vec(0u8..4, 30)).prop_map(|(old, extra, fate)| {
        let mut new: Vec<OEntry> = Vec::new();
        for (e, f) in old.iter().zip(&fate) {
            match f {
                0 => {}
                1 => {
                    let mut e = e.clone();
                    e.ports.insert(7);
                    new.push(e);
                }
                2 => {
                    let mut e = e.clone();
                    e.necessary = !e.necessary;
                    new.push(e);
                }
                _ => new.push(e.clone()),
            }
        }
        new.extend(extra.into_iter().take(8));
        (old, new)
    })
}

fn list(entries: &[OEntry]) -> List {
    let ip: Vec<Value> = entries
        .iter()
        .filter(|e| matches!(e.dest, ODest::Net(..)))
        .map(OEntry::json)
        .collect();
    let domain: Vec<Value> = entries
        .iter()
        .filter(|e| matches!(e.dest, ODest::Name(..)))
        .map(OEntry::json)
        .collect();
    let doc = json!({"errcode": 0, "ip_list": ip, "domain_list": domain}).to_string();
    let response = wecom::parse(doc.as_bytes(), false).expect("a valid generated list");
    List::from_entries(&response.entries)
}

/// Per destination, every (necessary, description, protocol, port) its entries say.
fn records(entries: &[OEntry]) -> BTreeMap<String, BTreeSet<(bool, String, &'static str, u16)>> {
    let mut out: BTreeMap<String, BTreeSet<_>> = BTreeMap::new();
    for e in entries {
        let record = out.entry(e.key()).or_default();
        for p in e.protocols() {
            for &port in &e.ports {
                record.insert((e.necessary, e.description.clone(), p, port));
            }
        }
    }
    out
}

/// Per (destination, protocol), the ports the list allows: each entry's destination, and the
/// wildcard of its universal_domian unless domains are exact.
fn allowed(entries: &[OEntry], exact: bool) -> BTreeMap<(ODest, &'static str), BTreeSet<u16>> {
    let mut out: BTreeMap<_, BTreeSet<u16>> = BTreeMap::new();
    for e in entries {
        let mut dests = vec![e.dest.clone()];
        if let Some(u) = e.universal.as_ref().filter(|_| !exact) {
            dests.push(ODest::Name(u.clone(), true));
        }
        for d in dests {
            for p in e.protocols() {
                out.entry((d.clone(), p)).or_default().extend(&e.ports);
            }
        }
    }
    out
}

/// What lost ports: (destination as the library shows it, protocol, ports).
type Lost = BTreeSet<(String, &'static str, Vec<u16>)>;

/// The shrink guard's measure, every previous pair against every next one: the pairs, what
/// each lost (shown as the library shows it) and the loss in percent.
fn expected_shrinkage(old: &[OEntry], new: &[OEntry], exact: bool) -> (usize, Lost, f64) {
    let (before, after) = (allowed(old, exact), allowed(new, exact));
    let mut lost = BTreeSet::new();
    let mut share = 0.0;
    for ((d, p), ports) in &before {
        let mut still = BTreeSet::new();
        for ((d2, p2), ports2) in &after {
            if p2 == p && d2.covers(d) {
                still.extend(ports2);
            }
        }
        let gone: Vec<u16> = ports.difference(&still).copied().collect();
        if !gone.is_empty() {
            share += gone.len() as f64 / ports.len() as f64;
            lost.insert((d.shown(), *p, gone));
        }
    }
    let percent = if before.is_empty() {
        0.0
    } else {
        share * 100.0 / before.len() as f64
    };
    (before.len(), lost, percent)
}

fn shown_key(key: &wecom_allowlist::list::Key) -> String {
    format!(
        "{} {} {:?}",
        key.list.as_str(),
        key.dest,
        key.universal.as_ref().map(|u| u.as_str())
    )
}

fn ports_of(set: &wecom_allowlist::model::PortSet) -> Vec<u16> {
    set.ranges().iter().flat_map(|r| r.start..=r.end).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn shrinkage_is_what_a_pairwise_comparison_finds((old, new) in pair(), exact in any::<bool>()) {
        let s = shrinkage(&list(&old), &list(&new), exact);
        let (pairs, lost, percent) = expected_shrinkage(&old, &new, exact);
        let got: Lost = s
            .lost
            .iter()
            .map(|(d, p, ports)| (d.to_string(), p.as_str(), ports_of(ports)))
            .collect();
        prop_assert_eq!(s.pairs, pairs);
        prop_assert_eq!(s.lost.len(), got.len());
        prop_assert_eq!(got, lost);
        prop_assert!((s.percent - percent).abs() < 1e-9, "{} != {}", s.percent, percent);
        // In the order of the destinations, as the refusal lists them.
        let order: Vec<(&Dest, Protocol)> = s.lost.iter().map(|(d, p, _)| (d, *p)).collect();
        prop_assert!(order.windows(2).all(|w| w[0] < w[1]), "{:?}", order);
    }

    #[test]
    fn diff_is_what_a_pairwise_comparison_finds((old, new) in pair()) {
        let (a, b) = (list(&old), list(&new));
        let s = summarize(&a, &b);
        let (before, after) = (records(&old), records(&new));
        let removed: Vec<&String> = before.keys().filter(|k| !after.contains_key(*k)).collect();
        let added: Vec<&String> = after.keys().filter(|k| !before.contains_key(*k)).collect();
        let changed: Vec<&String> = before
            .iter()
            .filter(|(k, r)| after.get(*k).is_some_and(|r2| r2 != *r))
            .map(|(k, _)| k)
            .collect();
        let keys = |v: Vec<String>| v.into_iter().collect::<BTreeSet<String>>();
        let got_removed = keys(s.removed.iter().map(|(k, _)| shown_key(k)).collect());
        let got_added = keys(s.added.iter().map(|(k, _)| shown_key(k)).collect());
        let got_changed = keys(s.changed.iter().map(|(k, _, _)| shown_key(k)).collect());
        prop_assert_eq!(
            (s.removed.len(), s.added.len(), s.changed.len()),
            (removed.len(), added.len(), changed.len())
        );
        prop_assert_eq!(got_removed, removed.into_iter().cloned().collect::<BTreeSet<_>>());
        prop_assert_eq!(got_added, added.into_iter().cloned().collect::<BTreeSet<_>>());
        prop_assert_eq!(got_changed, changed.into_iter().cloned().collect::<BTreeSet<_>>());
        // Each part in the lists' order.
        prop_assert!(s.removed.windows(2).all(|w| w[0].0 < w[1].0));
        prop_assert!(s.added.windows(2).all(|w| w[0].0 < w[1].0));
        prop_assert!(s.changed.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn source_json_reads_back_as_the_same_catalog_and_streams_its_digest(entries in entries()) {
        let l = list(&entries);
        let text = l.to_json();
        let mut bytes = Vec::new();
        let mut hashing = wecom_allowlist::output::Digesting::new(&mut bytes);
        l.write_json(&mut hashing).expect("writes into memory");
        prop_assert_eq!(hashing.digest(), wecom_allowlist::list::digest(&text));
        prop_assert_eq!(bytes, text.as_bytes().to_vec());
        // Lossless: read back, the same catalog.
        let again = wecom::parse(text.as_bytes(), false).expect("source.json reads back");
        prop_assert_eq!(List::from_entries(&again.entries), l);
    }
}
