//! The normalized list: one record per destination, in a fixed order. `build` writes it as
//! `source.json` in the API's own shape (so any command can read it back as input), its digest
//! goes into every file's header, and `diff` and the shrink guard compare two of them.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::model::{Dest, Entry, Hostname, ListKind, PortSet, Protocol};

/// What identifies a destination across two lists.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub list: ListKind,
    pub dest: Dest,
    pub universal: Option<Hostname>,
}

/// What a destination is allowed, merged over every entry that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub services: BTreeMap<Protocol, PortSet>,
    pub necessary: bool,
    pub descriptions: BTreeSet<String>,
}

impl Record {
    /// `tcp 80,443; udp 3478` for messages.
    pub fn services_text(&self) -> String {
        let parts: Vec<String> = self
            .services
            .iter()
            .map(|(p, ports)| format!("{} {ports}", p.as_str()))
            .collect();
        parts.join("; ")
    }

    /// Equal for what the firewall does: descriptions don't count.
    pub fn same_effect(&self, other: &Record) -> bool {
        self.services == other.services && self.necessary == other.necessary
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
            let record = records.entry(key).or_insert_with(|| Record {
                services: BTreeMap::new(),
                necessary: false,
                descriptions: BTreeSet::new(),
            });
            for &p in &e.protocols {
                let merged = match record.services.get(&p) {
                    Some(ports) => ports.union(&e.ports),
                    None => e.ports.clone(),
                };
                record.services.insert(p, merged);
            }
            record.necessary |= e.necessary;
            if !e.description.is_empty() {
                record.descriptions.insert(e.description.clone());
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

    /// `source.json`: pretty JSON in the shape of a get_server_domain_ip response.
    pub fn to_json(&self) -> String {
        let mut domains = Vec::new();
        let mut ips = Vec::new();
        for (key, record) in &self.records {
            // One entry per distinct port set: TCP and UDP on the same ports share one.
            let mut by_ports: BTreeMap<&PortSet, Vec<&str>> = BTreeMap::new();
            for (p, ports) in &record.services {
                by_ports.entry(ports).or_default().push(match p {
                    Protocol::Tcp => "TCP",
                    Protocol::Udp => "UDP",
                });
            }
            for (ports, protocols) in by_ports {
                let mut entry = Map::new();
                match &key.dest {
                    Dest::Net(n) if n.prefix_len() == n.max_prefix_len() => {
                        entry.insert("ip".into(), json!(n.addr().to_string()));
                    }
                    Dest::Net(n) => {
                        entry.insert("ip".into(), json!(n.to_string()));
                    }
                    Dest::Exact(h) => {
                        entry.insert("domain".into(), json!(h.as_str()));
                    }
                    Dest::Wildcard(h) => {
                        entry.insert("domain".into(), json!(format!("*.{h}")));
                    }
                }
                if let Some(u) = &key.universal {
                    entry.insert("universal_domian".into(), json!(u.as_str()));
                }
                entry.insert("protocol".into(), json!(protocols.join("/")));
                let port_values: Vec<Value> = ports
                    .ranges()
                    .iter()
                    .map(|r| {
                        if r.is_single() {
                            json!(r.start)
                        } else {
                            json!(format!("{}-{}", r.start, r.end))
                        }
                    })
                    .collect();
                entry.insert("port".into(), Value::Array(port_values));
                entry.insert("is_necessary".into(), json!(u8::from(record.necessary)));
                let descriptions: Vec<&str> =
                    record.descriptions.iter().map(String::as_str).collect();
                entry.insert("description".into(), json!(descriptions.join("; ")));
                match key.list {
                    ListKind::Domain => domains.push(Value::Object(entry)),
                    ListKind::Ip => ips.push(Value::Object(entry)),
                }
            }
        }
        let doc = json!({
            "errcode": 0,
            "errmsg": "ok",
            "generator": "wecom-allowlist: the normalized list the files beside this one were built from",
            "domain_list": domains,
            "ip_list": ips,
        });
        let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        text.push('\n');
        text
    }
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
        assert_eq!(again.len(), list.len());
        for ((k1, r1), (k2, r2)) in list.records.iter().zip(&again.records) {
            assert_eq!(k1, k2);
            assert!(r1.same_effect(r2), "{k1:?}");
        }
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
        assert!(r.necessary);
        assert_eq!(r.descriptions.len(), 2);
    }
}
