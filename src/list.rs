//! The normalized list: what normalization consumes, in a fixed order. `build` writes it as
//! `source.json` in the API's own shape (so any command can read it back as input), its digest
//! goes into every file's header, and `diff` and the shrink guard compare two of them.
//!
//! It is lossless: a destination keeps, per (is_necessary, description), the services of the
//! entries that said so. Merging them would change what `--necessary-only` keeps and what the
//! comments say, so building from `source.json` would not give the files its digest vouches for.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::endpoint::{ListName, MARK};
use crate::model::{Dest, Entry, Hostname, ListKind, Note, PortSet, PortValue, Protocol};

/// What identifies a destination across two lists.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub list: ListKind,
    pub dest: Dest,
    pub universal: Option<Hostname>,
}

/// Protocols and their ports.
pub type Services = BTreeMap<Protocol, PortSet>;

/// Everything the entries of one destination say, kept apart by (is_necessary, description).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub by_note: BTreeMap<Note, Services>,
}

fn merge(into: &mut Services, protocol: Protocol, ports: &PortSet) {
    let merged = match into.get(&protocol) {
        Some(old) => old.union(ports),
        None => ports.clone(),
    };
    into.insert(protocol, merged);
}

/// `tcp 80,443; udp 3478`.
pub fn services_text(services: &Services) -> String {
    let parts: Vec<String> = services
        .iter()
        .map(|(p, ports)| format!("{} {ports}", p.as_str()))
        .collect();
    parts.join("; ")
}

impl Record {
    /// What the destination allows, whatever WeCom says is necessary.
    pub fn services(&self) -> Services {
        self.services_where(|_| true)
    }

    /// What it allows under `--necessary-only`.
    pub fn necessary_services(&self) -> Services {
        self.services_where(|n| n.necessary)
    }

    fn services_where(&self, keep: impl Fn(&Note) -> bool) -> Services {
        let mut out = Services::new();
        for (note, services) in &self.by_note {
            if keep(note) {
                for (&p, ports) in services {
                    merge(&mut out, p, ports);
                }
            }
        }
        out
    }

    /// True when some entry of the destination is marked necessary.
    pub fn any_necessary(&self) -> bool {
        self.by_note.keys().any(|n| n.necessary)
    }

    /// `tcp 80,443; udp 3478` for messages.
    pub fn services_text(&self) -> String {
        services_text(&self.services())
    }

    /// Equal for what the firewall does, with or without `--necessary-only`: descriptions
    /// don't count.
    pub fn same_effect(&self, other: &Record) -> bool {
        self.services() == other.services()
            && self.necessary_services() == other.necessary_services()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct List {
    pub records: BTreeMap<Key, Record>,
}

impl List {
    pub fn from_entries(entries: &[Entry]) -> List {
        let mut records: BTreeMap<Key, Record> = BTreeMap::new();
        for e in entries {
            let key = Key {
                list: e.list,
                dest: e.dest.clone(),
                universal: e.universal.clone(),
            };
            let note = Note {
                necessary: e.necessary,
                description: e.description.clone(),
            };
            let services = records
                .entry(key)
                .or_default()
                .by_note
                .entry(note)
                .or_default();
            for &p in &e.protocols {
                merge(services, p, &e.ports);
            }
        }
        List { records }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// `source.json`: pretty JSON in the shape of a get_server_domain_ip response, one entry per
    /// (destination, is_necessary, description, port set), protocols on the same ports joined.
    pub fn to_json(&self) -> String {
        let mut domains = Vec::new();
        let mut ips = Vec::new();
        for (key, record) in &self.records {
            for (note, services) in &record.by_note {
                let mut by_ports: BTreeMap<&PortSet, Vec<&str>> = BTreeMap::new();
                for (p, ports) in services {
                    by_ports.entry(ports).or_default().push(match p {
                        Protocol::Tcp => "TCP",
                        Protocol::Udp => "UDP",
                    });
                }
                for (ports, protocols) in by_ports {
                    let entry = entry_json(key, note, ports, &protocols);
                    match key.list {
                        ListKind::Domain => domains.push(entry),
                        ListKind::Ip => ips.push(entry),
                    }
                }
            }
        }
        let doc = SourceDoc {
            errcode: 0,
            errmsg: "ok",
            generator:
                "wecom-allowlist: the normalized list the files beside this one were built from",
            domain_list: domains,
            ip_list: ips,
        };
        let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        text.push('\n');
        text
    }
}

/// `source.json` of a plain list (api, callback): its answer's own shape, an `ip_list` of
/// addresses and CIDRs, with the mark that says which list it is. The ports are options of the
/// build (`[callback] ports`), like the chain names, so they are not part of the list.
pub fn plain_json(list: &List, name: ListName) -> String {
    let ips: Vec<Value> = list
        .records
        .keys()
        .filter_map(|key| match &key.dest {
            Dest::Net(n) if n.prefix_len() == n.max_prefix_len() => {
                Some(json!(n.addr().to_string()))
            }
            Dest::Net(n) => Some(json!(n.to_string())),
            Dest::Exact(_) | Dest::Wildcard(_) => None,
        })
        .collect();
    let mut doc = Map::new();
    doc.insert("errcode".into(), json!(0));
    doc.insert("errmsg".into(), json!("ok"));
    doc.insert(
        "generator".into(),
        json!("wecom-allowlist: the normalized list the files beside this one were built from"),
    );
    doc.insert(MARK.into(), json!(name.name()));
    doc.insert("ip_list".into(), Value::Array(ips));
    let mut text = serde_json::to_string_pretty(&Value::Object(doc)).unwrap_or_default();
    text.push('\n');
    text
}

/// `source.json` as written: typed and borrowed, so that a large list isn't copied into a
/// tree of JSON values first. The fields are in the order the file shows them.
#[derive(Serialize)]
struct SourceDoc<'a> {
    errcode: u8,
    errmsg: &'static str,
    generator: &'static str,
    domain_list: Vec<SourceEntry<'a>>,
    ip_list: Vec<SourceEntry<'a>>,
}

#[derive(Serialize)]
struct SourceEntry<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    domain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    universal_domian: Option<&'a str>,
    protocol: String,
    port: Vec<PortValue>,
    is_necessary: u8,
    description: &'a str,
}

/// One entry of `source.json`, as the API spells it.
fn entry_json<'a>(
    key: &'a Key,
    note: &'a Note,
    ports: &PortSet,
    protocols: &[&str],
) -> SourceEntry<'a> {
    let (ip, domain) = match &key.dest {
        Dest::Net(n) if n.prefix_len() == n.max_prefix_len() => (Some(n.addr().to_string()), None),
        Dest::Net(n) => (Some(n.to_string()), None),
        Dest::Exact(h) => (None, Some(h.as_str().to_owned())),
        Dest::Wildcard(h) => (None, Some(format!("*.{h}"))),
    };
    SourceEntry {
        ip,
        domain,
        universal_domian: key.universal.as_ref().map(|u| u.as_str()),
        protocol: protocols.join("/"),
        port: ports.api_values(),
        is_necessary: u8::from(note.necessary),
        description: &note.description,
    }
}

/// What a destination allows on one protocol, each listed destination and each
/// `universal_domian` wildcard (unless exact domains) on its own, as normalization sees them.
fn allowances(list: &List, exact_domains: bool) -> BTreeMap<(Dest, Protocol), PortSet> {
    let mut out: BTreeMap<(Dest, Protocol), PortSet> = BTreeMap::new();
    for (key, record) in &list.records {
        let universal = key
            .universal
            .iter()
            .filter(|_| !exact_domains)
            .map(|h| Dest::Wildcard(h.clone()));
        for dest in std::iter::once(key.dest.clone()).chain(universal) {
            for (p, ports) in record.services() {
                let merged = match out.get(&(dest.clone(), p)) {
                    Some(old) => old.union(&ports),
                    None => ports,
                };
                out.insert((dest.clone(), p), merged);
            }
        }
    }
    out
}

/// Every destination that allows at least what `dest` names: itself, the networks around an
/// address (of the prefix lengths in `lens`, the ones the other list has), the wildcards of a
/// name and of its parents.
fn coverers(dest: &Dest, lens: &BTreeSet<(bool, u8)>) -> Vec<Dest> {
    match dest {
        Dest::Net(n) => {
            let v4 = matches!(n, ipnet::IpNet::V4(_));
            lens.range((v4, 0)..=(v4, n.prefix_len()))
                .filter_map(|&(_, len)| ipnet::IpNet::new(n.addr(), len).ok())
                .map(|m| Dest::Net(m.trunc()))
                .collect()
        }
        Dest::Exact(h) | Dest::Wildcard(h) => {
            let mut out = vec![dest.clone(), Dest::Wildcard(h.clone())];
            out.extend(
                h.parents()
                    .filter_map(|p| Hostname::parse(p).ok())
                    .map(Dest::Wildcard),
            );
            out.dedup();
            out
        }
    }
}

/// The ports of `old` that `new` lacks, and how many of `old`'s ports they are.
fn lost_ports(old: &PortSet, new: &PortSet) -> (Option<PortSet>, u32) {
    let mut lost = Vec::new();
    for r in old.ranges() {
        let mut start = u32::from(r.start);
        let end = u32::from(r.end);
        for n in new.ranges() {
            let (ns, ne) = (u32::from(n.start), u32::from(n.end));
            if ne < start || ns > end {
                continue;
            }
            if ns > start {
                lost.push((start, ns - 1));
            }
            start = start.max(ne + 1);
            if start > end {
                break;
            }
        }
        if start <= end {
            lost.push((start, end));
        }
    }
    let count = lost.iter().map(|(a, b)| b - a + 1).sum();
    let ranges = lost
        .into_iter()
        .filter_map(|(a, b)| {
            crate::model::PortRange::new(u16::try_from(a).ok()?, u16::try_from(b).ok()?)
        })
        .collect();
    (PortSet::new(ranges), count)
}

/// How much of what a previous list allowed a new one no longer allows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shrinkage {
    /// The previous list's (destination, protocol) pairs.
    pub pairs: usize,
    /// Each pair that lost ports, with the ports it lost.
    pub lost: Vec<(Dest, Protocol, PortSet)>,
    /// The loss in percent: every previous (destination, protocol) pair weighs the same, and
    /// counts by the share of its ports that nothing in the new list allows any more.
    pub percent: f64,
}

/// Compares what `previous` allowed with what `next` allows, in (destination, protocol, port)
/// terms: a destination that only gains (a `universal_domian`, more ports, a wider network
/// around it) loses nothing, and one whose entries all move to other ports loses everything.
pub fn shrinkage(previous: &List, next: &List, exact_domains: bool) -> Shrinkage {
    let before = allowances(previous, exact_domains);
    let after: HashMap<(Dest, Protocol), PortSet> =
        allowances(next, exact_domains).into_iter().collect();
    let lens: BTreeSet<(bool, u8)> = after
        .keys()
        .filter_map(|(d, _)| match d {
            Dest::Net(n) => Some((matches!(n, ipnet::IpNet::V4(_)), n.prefix_len())),
            _ => None,
        })
        .collect();
    let mut out = Shrinkage {
        pairs: before.len(),
        ..Shrinkage::default()
    };
    let mut share = 0.0;
    for ((dest, protocol), ports) in &before {
        let mut still: Option<PortSet> = None;
        for c in coverers(dest, &lens) {
            if let Some(p) = after.get(&(c, *protocol)) {
                still = Some(match still {
                    Some(s) => s.union(p),
                    None => p.clone(),
                });
            }
        }
        let (gone, count) = match &still {
            Some(s) => lost_ports(ports, s),
            None => (Some(ports.clone()), ports.count()),
        };
        if let Some(gone) = gone {
            share += f64::from(count) / f64::from(ports.count());
            out.lost.push((dest.clone(), *protocol, gone));
        }
    }
    if out.pairs > 0 {
        out.percent = share * 100.0 / out.pairs as f64;
    }
    out
}

/// `sha256:<hex>` of a text: what headers print to tie a file to its source.json.
pub fn digest(text: &str) -> String {
    format!("sha256:{:x}", Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wecom::parse;

    #[test]
    fn source_json_reads_back_as_the_same_list() {
        let fixture = include_bytes!("../tests/fixtures/rich.json");
        let list = List::from_entries(&parse(fixture, false).unwrap().entries);
        let text = list.to_json();
        let again = List::from_entries(&parse(text.as_bytes(), false).unwrap().entries);
        assert_eq!(again, list);
        // And it is a fixed point: the same bytes the second time.
        assert_eq!(again.to_json(), text);
    }

    #[test]
    fn duplicates_merge_per_protocol() {
        let doc = br#"{"ip_list":[
            {"ip":"192.0.2.1","protocol":"TCP","port":[443],"is_necessary":0,"description":"a"},
            {"ip":"192.0.2.1","protocol":"UDP","port":[3478],"is_necessary":1,"description":"b"},
            {"ip":"192.0.2.1","protocol":"TCP","port":[80],"is_necessary":0,"description":"a"}]}"#;
        let list = List::from_entries(&parse(doc, false).unwrap().entries);
        assert_eq!(list.len(), 1);
        let r = list.records.values().next().unwrap();
        assert_eq!(r.services_text(), "tcp 80,443; udp 3478");
        assert!(r.any_necessary());
        assert_eq!(services_text(&r.necessary_services()), "udp 3478");
        assert_eq!(r.by_note.len(), 2);
    }

    #[test]
    fn source_json_keeps_necessary_and_descriptions_apart() {
        let doc = br#"{"domain_list":[
            {"domain":"a.example.com","protocol":"TCP","port":[443],"is_necessary":1,"description":"core"},
            {"domain":"a.example.com","protocol":"UDP","port":[3478],"is_necessary":0,"description":"calls"}]}"#;
        let text = List::from_entries(&parse(doc, false).unwrap().entries).to_json();
        let back = parse(text.as_bytes(), false).unwrap().entries;
        let mut seen: Vec<(bool, &str, Vec<Protocol>)> = back
            .iter()
            .map(|e| (e.necessary, e.description.as_str(), e.protocols.clone()))
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            vec![
                (false, "calls", vec![Protocol::Udp]),
                (true, "core", vec![Protocol::Tcp])
            ],
            "{text}"
        );
    }

    fn list(doc: &str) -> List {
        List::from_entries(&parse(doc.as_bytes(), false).unwrap().entries)
    }

    #[test]
    fn gaining_a_wildcard_or_a_wider_network_loses_nothing() {
        let old = list(
            r#"{"domain_list":[
            {"domain":"a.work.example.com","protocol":"TCP","port":[443],"is_necessary":1},
            {"domain":"b.work.example.com","protocol":"TCP","port":[443],"is_necessary":1}],
            "ip_list":[{"ip":"192.0.2.7","protocol":"UDP","port":[3478],"is_necessary":0}]}"#,
        );
        let new = list(
            r#"{"domain_list":[
            {"domain":"a.work.example.com","universal_domian":"work.example.com","protocol":"TCP","port":[443],"is_necessary":1},
            {"domain":"b.work.example.com","universal_domian":"work.example.com","protocol":"TCP","port":[443,80],"is_necessary":1}],
            "ip_list":[{"ip":"192.0.2.0/24","protocol":"UDP","port":["3000-4000"],"is_necessary":0}]}"#,
        );
        let s = shrinkage(&old, &new, false);
        assert_eq!((s.pairs, s.lost.len(), s.percent), (3, 0, 0.0));
        // With exact domains the wildcard doesn't count, and the names are still there.
        assert_eq!(shrinkage(&old, &new, true).percent, 0.0);
        // The other way round: the wildcard and the /24 are gone, b loses port 80 of two.
        let back = shrinkage(&new, &old, false);
        assert_eq!((back.pairs, back.lost.len()), (4, 3), "{back:?}");
        assert_eq!(back.percent, (1.0 + 1.0 + 0.5) * 100.0 / 4.0);
    }

    #[test]
    fn moving_to_other_ports_is_a_loss() {
        let old = list(
            r#"{"ip_list":[
            {"ip":"192.0.2.1","protocol":"TCP","port":[443],"is_necessary":1},
            {"ip":"192.0.2.2","protocol":"TCP","port":[80,443],"is_necessary":1}]}"#,
        );
        let new = list(
            r#"{"ip_list":[
            {"ip":"192.0.2.1","protocol":"TCP","port":[1],"is_necessary":1},
            {"ip":"192.0.2.2","protocol":"TCP","port":[1,443],"is_necessary":1}]}"#,
        );
        let s = shrinkage(&old, &new, false);
        assert_eq!(s.pairs, 2);
        // 192.0.2.1 loses all its ports, 192.0.2.2 half of them: (1 + 0.5) / 2.
        assert_eq!(s.percent, 75.0);
        assert_eq!(s.lost[1].2.to_string(), "80");
        let (gone, n) = lost_ports(
            &PortSet::new(vec![crate::model::PortRange::new(1, 100).unwrap()]).unwrap(),
            &PortSet::new(vec![
                crate::model::PortRange::new(10, 20).unwrap(),
                crate::model::PortRange::new(50, 200).unwrap(),
            ])
            .unwrap(),
        );
        assert_eq!((gone.unwrap().to_string(), n), ("1-9,21-49".to_owned(), 38));
    }
}
