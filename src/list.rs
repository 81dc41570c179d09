//! The normalized list as one catalog: every destination once, in a fixed order, with what
//! its entries say. `build` writes it as `source.json` in the API's own shape (so any command
//! can read it back as input), its digest goes into every file's header, and `diff` and the
//! shrink guard compare two of them by walking both in order.
//!
//! It is lossless: a destination keeps, per (is_necessary, description), the services of the
//! entries that said so. Merging them would change what `--necessary-only` keeps and what the
//! comments say, so building from `source.json` would not give the files its digest vouches for.
//!
//! It is compact: sorted vectors, not maps, so that a list of a million entries costs one sort,
//! and `source.json` is written straight from it, never held whole in memory.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::io::{self, Write};

use serde::ser::Serializer;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::endpoint::{ListName, MARK};
use crate::model::{ipv4_text, Dest, Entry, Hostname, ListKind, Note, PortSet, Protocol, Text};
use crate::output;

/// What identifies a destination across two lists.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub list: ListKind,
    pub dest: Dest,
    pub universal: Option<Hostname>,
}

/// Protocols and their ports: at most one port set per protocol.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Services {
    tcp: Option<PortSet>,
    udp: Option<PortSet>,
}

impl Services {
    pub fn get(&self, protocol: Protocol) -> Option<&PortSet> {
        match protocol {
            Protocol::Tcp => self.tcp.as_ref(),
            Protocol::Udp => self.udp.as_ref(),
        }
    }

    /// Each protocol that has ports, in protocol order.
    pub fn iter(&self) -> impl Iterator<Item = (Protocol, &PortSet)> {
        let tcp = self.tcp.as_ref().map(|p| (Protocol::Tcp, p));
        let udp = self.udp.as_ref().map(|p| (Protocol::Udp, p));
        tcp.into_iter().chain(udp)
    }

    pub fn is_empty(&self) -> bool {
        self.tcp.is_none() && self.udp.is_none()
    }

    /// Adds `ports` to what `protocol` allows.
    pub fn add(&mut self, protocol: Protocol, ports: &PortSet) {
        let slot = match protocol {
            Protocol::Tcp => &mut self.tcp,
            Protocol::Udp => &mut self.udp,
        };
        *slot = Some(match slot.take() {
            Some(old) if old.contains_set(ports) => old,
            Some(old) => old.union(ports),
            None => ports.clone(),
        });
    }

    /// The entries of `source.json` these services make: protocols on the same ports joined
    /// (`TCP/UDP`), in the order of their port sets.
    fn api_rows(&self) -> impl Iterator<Item = (&PortSet, &'static str)> {
        let rows = match (&self.tcp, &self.udp) {
            (Some(t), Some(u)) if t == u => [Some((t, "TCP/UDP")), None],
            (Some(t), Some(u)) if u < t => [Some((u, "UDP")), Some((t, "TCP"))],
            (t, u) => [
                t.as_ref().map(|t| (t, "TCP")),
                u.as_ref().map(|u| (u, "UDP")),
            ],
        };
        rows.into_iter().flatten()
    }
}

/// `tcp 80,443; udp 3478`.
pub fn services_text(services: &Services) -> String {
    let parts: Vec<String> = services
        .iter()
        .map(|(p, ports)| format!("{} {ports}", p.as_str()))
        .collect();
    parts.join("; ")
}

/// Everything the entries of one destination say, kept apart by (is_necessary, description),
/// in that order: a view into the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub by_note: &'a [(Note, Services)],
}

impl Record<'_> {
    /// What the destination allows, whatever WeCom says is necessary.
    pub fn services(&self) -> Services {
        self.services_where(|_| true)
    }

    /// What it allows under `--necessary-only`.
    pub fn necessary_services(&self) -> Services {
        self.services_where(|n| n.necessary)
    }

    fn services_where(&self, keep: impl Fn(&Note) -> bool) -> Services {
        let mut out = Services::default();
        for (note, services) in self.by_note {
            if keep(note) {
                for (p, ports) in services.iter() {
                    out.add(p, ports);
                }
            }
        }
        out
    }

    /// True when some entry of the destination is marked necessary.
    pub fn any_necessary(&self) -> bool {
        self.by_note.iter().any(|(n, _)| n.necessary)
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

/// The catalog: destinations in `Key` order, each with its notes in `Note` order. The order
/// is `source.json`'s, so the file is written by walking it once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct List {
    keys: Vec<Key>,
    /// Where each key's notes start in `notes`; they end where the next key's start.
    starts: Vec<usize>,
    notes: Vec<(Note, Services)>,
}

/// The part of an entry's sort order that needs no pointer: its list, then the family and
/// number of its network. Names get no number and are told apart by `entry_order`.
fn sort_prefix(e: &Entry) -> (u8, u128, u8) {
    let list = match e.list {
        ListKind::Ip => 0,
        ListKind::Domain => 3,
    };
    match &e.dest {
        Dest::Net(ipnet::IpNet::V4(n)) => (list, u128::from(u32::from(n.addr())), n.prefix_len()),
        Dest::Net(ipnet::IpNet::V6(n)) => (list + 1, u128::from(n.addr()), n.prefix_len()),
        Dest::Exact(_) | Dest::Wildcard(_) => (list + 2, 0, 0),
    }
}

/// `sort_prefix` in one integer, in the same order, where it fits: the class (list and
/// family), then for IPv4 the address and the prefix length. An IPv6 network or a name gets
/// its class alone and is placed among its class by `sort_prefix` and `entry_order`.
fn sort_word(e: &Entry) -> u64 {
    let (class, number, len) = sort_prefix(e);
    let v4 = match &e.dest {
        Dest::Net(ipnet::IpNet::V4(_)) => (number as u64) << 8 | u64::from(len),
        Dest::Net(ipnet::IpNet::V6(_)) | Dest::Exact(_) | Dest::Wildcard(_) => 0,
    };
    u64::from(class) << 40 | v4
}

/// The catalog's order of entries: `Key`'s, then `Note`'s.
fn entry_order(a: &Entry, b: &Entry) -> Ordering {
    (a.list, &a.dest, &a.universal, a.necessary, &a.description).cmp(&(
        b.list,
        &b.dest,
        &b.universal,
        b.necessary,
        &b.description,
    ))
}

/// The entries' indexes in the catalog's order. Most of a large list is IPv4 addresses, each
/// placed by its `sort_word` alone: one sort of small integers, without reading an entry
/// (the entries of a million-entry list are scattered over memory). Entries of one word (the
/// same IPv4 network, or the IPv6 networks and names of one list) are then ordered among
/// themselves by the whole order.
fn catalog_order(entries: &[Entry]) -> Vec<usize> {
    let halves = entries.len() >= HALVES_MIN && crate::cores() > 1;
    let words = sorted_words(entries, halves);
    let mut order: Vec<usize> = words.iter().map(|&w| w as u64 as usize).collect();
    let mut start = 0;
    while start < words.len() {
        let word = words[start] >> 64;
        let mut end = start + 1;
        while words.get(end).is_some_and(|&w| w >> 64 == word) {
            end += 1;
        }
        if end - start > 1 {
            order[start..end].sort_unstable_by(|&a, &b| {
                let (a, b) = (&entries[a], &entries[b]);
                sort_prefix(a)
                    .cmp(&sort_prefix(b))
                    .then_with(|| entry_order(a, b))
            });
        }
        start = end;
    }
    order
}

/// Lists shorter than this are sorted on one thread: a thread costs more than it saves.
const HALVES_MIN: usize = 32 * 1024;

/// Each entry's `sort_word` above its index, sorted: with `halves`, each half of the entries
/// on a thread of its own, then merged.
fn sorted_words(entries: &[Entry], halves: bool) -> Vec<u128> {
    let words = |from: usize, entries: &[Entry]| {
        let mut words: Vec<u128> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| u128::from(sort_word(e)) << 64 | (from + i) as u128)
            .collect();
        words.sort_unstable();
        words
    };
    if !halves {
        return words(0, entries);
    }
    let mid = entries.len() / 2;
    let (a, b) = crate::side_by_side(|| words(0, &entries[..mid]), || words(mid, &entries[mid..]));
    merge(&a, &b)
}

/// The sorted union of two sorted lists of distinct words.
fn merge(a: &[u128], b: &[u128]) -> Vec<u128> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while let (Some(&x), Some(&y)) = (a.get(i), b.get(j)) {
        if x < y {
            out.push(x);
            i += 1;
        } else {
            out.push(y);
            j += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// How many entries `touch` reads ahead of the walk.
const AHEAD: usize = 32;

/// Reads a little of each of the next entries of `order`, so that their cache lines are on
/// their way together: in a large list taken in sorted order each entry is a cache miss, and
/// the walk itself (whose shared-count increments are locked instructions) lets only one
/// miss run at a time.
fn touch(entries: &[Entry], order: &[usize]) {
    let mut sum = 0usize;
    for &i in order.iter().take(AHEAD) {
        let e = &entries[i];
        sum ^=
            e.index as usize ^ e.ports.ranges().as_ptr() as usize ^ e.description.as_ptr() as usize;
    }
    std::hint::black_box(sum);
}

impl List {
    /// One sort of the entries, then one walk that merges those of the same destination and
    /// note.
    pub fn from_entries(entries: &[Entry]) -> List {
        let order = catalog_order(entries);
        let mut list = List {
            keys: Vec::with_capacity(entries.len()),
            starts: Vec::with_capacity(entries.len()),
            notes: Vec::with_capacity(entries.len()),
        };
        let mut previous: Option<&Entry> = None;
        for (k, &i) in order.iter().enumerate() {
            if k % AHEAD == 0 {
                touch(entries, &order[k..]);
            }
            let e = &entries[i];
            let same_key = previous.is_some_and(|p| {
                p.list == e.list && p.dest == e.dest && p.universal == e.universal
            });
            let same_note = same_key
                && previous
                    .is_some_and(|p| p.necessary == e.necessary && p.description == e.description);
            if !same_key {
                list.keys.push(Key {
                    list: e.list,
                    dest: e.dest.clone(),
                    universal: e.universal.clone(),
                });
                list.starts.push(list.notes.len());
            }
            if !same_note {
                let note = Note {
                    necessary: e.necessary,
                    description: e.description.clone(),
                };
                list.notes.push((note, Services::default()));
            }
            if let Some((_, services)) = list.notes.last_mut() {
                for p in e.protocols {
                    services.add(p, &e.ports);
                }
            }
            previous = Some(e);
        }
        list.keys.shrink_to_fit();
        list.starts.shrink_to_fit();
        list.notes.shrink_to_fit();
        list
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The destinations, in order.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// The record of the `i`th destination.
    pub fn record(&self, i: usize) -> Record<'_> {
        let end = self.starts.get(i + 1).copied().unwrap_or(self.notes.len());
        Record {
            by_note: &self.notes[self.starts[i]..end],
        }
    }

    /// Every destination with its record, in order.
    pub fn records(&self) -> impl ExactSizeIterator<Item = (&Key, Record<'_>)> + Clone {
        self.keys
            .iter()
            .enumerate()
            .map(|(i, key)| (key, self.record(i)))
    }

    /// `source.json`: pretty JSON in the shape of a get_server_domain_ip response, one entry per
    /// (destination, is_necessary, description, port set), protocols on the same ports joined.
    pub fn to_json(&self) -> String {
        let mut bytes = Vec::new();
        // Writing into memory can't fail, and serde_json writes UTF-8.
        let _ = self.write_json(&mut bytes);
        String::from_utf8(bytes).unwrap_or_default()
    }

    /// `to_json`, written as it is made: nothing but a few buffers is held in memory.
    ///
    /// Written by hand in serde_json's pretty layout (two-space indents, `": "`, `[]` for an
    /// empty list), its strings escaped by serde_json itself: this file is most of the bytes
    /// `build` writes for a large list, and serde's pretty serializer took a tenth of the
    /// time. `source_json_is_serde_jsons_pretty_layout` holds it to serde_json's own output.
    ///
    /// The entries are made in pieces of `PIECE` records, on two cores when there are many
    /// (`output::pieces_in_order`), and written in order: the bytes are the same either way.
    pub fn write_json(&self, out: &mut dyn Write) -> io::Result<()> {
        // Ip sorts before Domain: the ip_list is the front of the catalog; domain_list is
        // written first.
        let split = self.keys.partition_point(|k| k.list == ListKind::Ip);
        let lists = [split..self.len(), 0..split];
        let mut pieces = Vec::new();
        for (list, range) in lists.iter().enumerate() {
            for start in range.clone().step_by(PIECE) {
                pieces.push((list, start..(start + PIECE).min(range.end)));
            }
        }
        let mut w = io::BufWriter::with_capacity(1 << 16, out);
        w.write_all(b"{\n  \"errcode\": 0,\n  \"errmsg\": \"ok\",\n  \"generator\": ")?;
        json_str(&mut w, GENERATOR)?;
        w.write_all(b",\n  \"domain_list\": [")?;
        // The list being written, and whether it has an entry yet.
        let mut at = 0;
        let mut any = false;
        let close = |w: &mut io::BufWriter<_>, any: bool| -> io::Result<()> {
            w.write_all(if any { b"\n  ]" } else { b"]" })
        };
        let to_ip_list = |w: &mut io::BufWriter<_>, any: bool| -> io::Result<()> {
            close(w, any)?;
            w.write_all(b",\n  \"ip_list\": [")
        };
        output::pieces_in_order(
            pieces.len(),
            4,
            |i, buf| self.write_rows(buf, pieces[i].1.clone()),
            |i, rows| {
                if pieces[i].0 != at {
                    to_ip_list(&mut w, any)?;
                    (at, any) = (pieces[i].0, false);
                }
                if !rows.is_empty() {
                    if any {
                        w.write_all(b",")?;
                    }
                    w.write_all(rows)?;
                    any = true;
                }
                Ok(())
            },
        )?;
        if at == 0 {
            to_ip_list(&mut w, any)?;
            any = false;
        }
        close(&mut w, any)?;
        w.write_all(b"\n}\n")?;
        w.flush()
    }

    /// The entries of the records `range`, a comma between two, each on its own lines at the
    /// depth of a top-level list's items (without the comma before the first, nor the list's
    /// brackets).
    fn write_rows(&self, w: &mut Vec<u8>, range: std::ops::Range<usize>) -> io::Result<()> {
        let mut first = true;
        // The last description and its JSON: neighbours mostly share one.
        let mut described: Option<&Text> = None;
        let mut description = Vec::new();
        let mut dest = Vec::new();
        for i in range {
            let key = &self.keys[i];
            dest.clear();
            dest.extend_from_slice(match key.dest {
                Dest::Net(_) => b"\n    {\n      \"ip\": ",
                Dest::Exact(_) | Dest::Wildcard(_) => b"\n    {\n      \"domain\": ",
            });
            match &key.dest {
                // Digits, dots and a slash: nothing to escape.
                Dest::Net(ipnet::IpNet::V4(n)) => {
                    dest.push(b'"');
                    dest.extend_from_slice(api_ipv4(n, &mut [0; 20]).as_bytes());
                    dest.push(b'"');
                }
                _ => serde_json::to_writer(&mut dest, &ApiDest(&key.dest))?,
            }
            if let Some(u) = &key.universal {
                dest.extend_from_slice(b",\n      \"universal_domian\": ");
                json_str(&mut dest, u.as_str())?;
            }
            for (note, services) in self.record(i).by_note {
                if described != Some(&note.description) {
                    description.clear();
                    json_str(&mut description, &note.description)?;
                    described = Some(&note.description);
                }
                for (ports, protocol) in services.api_rows() {
                    if !first {
                        w.push(b',');
                    }
                    first = false;
                    w.extend_from_slice(&dest);
                    w.extend_from_slice(b",\n      \"protocol\": \"");
                    w.extend_from_slice(protocol.as_bytes());
                    w.extend_from_slice(b"\",\n      \"port\": [");
                    for (k, r) in ports.ranges().iter().enumerate() {
                        w.extend_from_slice(if k == 0 {
                            b"\n        "
                        } else {
                            b",\n        "
                        });
                        if r.is_single() {
                            w.extend_from_slice(number_text(r.start, &mut [0; 5]));
                        } else {
                            w.push(b'"');
                            w.extend_from_slice(number_text(r.start, &mut [0; 5]));
                            w.push(b'-');
                            w.extend_from_slice(number_text(r.end, &mut [0; 5]));
                            w.push(b'"');
                        }
                    }
                    w.extend_from_slice(b"\n      ],\n      \"is_necessary\": ");
                    w.push(if note.necessary { b'1' } else { b'0' });
                    w.extend_from_slice(b",\n      \"description\": ");
                    w.extend_from_slice(&description);
                    w.extend_from_slice(b"\n    }");
                }
            }
        }
        Ok(())
    }
}

/// How many records `write_json` makes at a time: a piece of a few hundred KiB.
const PIECE: usize = 2048;

/// `s` as a JSON string, escaped as serde_json escapes it.
fn json_str(w: &mut impl Write, s: &str) -> io::Result<()> {
    Ok(serde_json::to_writer(w, s)?)
}

/// A port's decimal digits.
fn number_text(n: u16, buf: &mut [u8; 5]) -> &[u8] {
    let mut at = buf.len();
    let mut n = n;
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

const GENERATOR: &str =
    "wecom-allowlist: the normalized list the files beside this one were built from";

/// `value` as pretty JSON and a newline, through a buffer: the serializer's many small writes
/// don't each reach `out`.
fn write_pretty(value: &impl Serialize, out: &mut dyn Write) -> io::Result<()> {
    let mut buffered = io::BufWriter::with_capacity(1 << 16, out);
    value.serialize(&mut serde_json::Serializer::pretty(&mut buffered))?;
    buffered.write_all(b"\n")?;
    buffered.flush()
}

/// `source.json` of a plain list (api, callback): its answer's own shape, an `ip_list` of
/// addresses and CIDRs, with the mark that says which list it is. The ports are options of the
/// build (`[callback] ports`), like the chain names, so they are not part of the list.
pub fn write_plain_json(list: &List, name: ListName, out: &mut dyn Write) -> io::Result<()> {
    #[derive(Serialize)]
    struct PlainDoc<'a> {
        errcode: u8,
        errmsg: &'static str,
        generator: &'static str,
        #[serde(rename = "list")]
        mark: &'static str,
        ip_list: PlainIps<'a>,
    }
    struct PlainIps<'a>(&'a List);
    impl Serialize for PlainIps<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(self.0.keys.iter().filter_map(|key| match &key.dest {
                Dest::Net(_) => Some(ApiDest(&key.dest)),
                Dest::Exact(_) | Dest::Wildcard(_) => None,
            }))
        }
    }
    // The mark's field name is fixed by `MARK`; serde's rename needs a literal.
    debug_assert_eq!(MARK, "list");
    let doc = PlainDoc {
        errcode: 0,
        errmsg: "ok",
        generator: GENERATOR,
        mark: name.name(),
        ip_list: PlainIps(list),
    };
    write_pretty(&doc, out)
}

/// An IPv4 network as the API spells it: an address without `/32`.
fn api_ipv4<'b>(n: &ipnet::Ipv4Net, buf: &'b mut [u8; 20]) -> &'b str {
    ipv4_text(n.addr(), Some(n.prefix_len()).filter(|&len| len < 32), buf)
}

/// A destination as the API spells it: an address without `/32`, a network as CIDR, a
/// wildcard as `*.name`. Written by serde_json's escaping, without a string of its own.
struct ApiDest<'a>(&'a Dest);

impl Serialize for ApiDest<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Dest::Net(ipnet::IpNet::V4(n)) => s.serialize_str(api_ipv4(n, &mut [0; 20])),
            Dest::Net(n) if n.prefix_len() == n.max_prefix_len() => s.collect_str(&n.addr()),
            Dest::Net(n) => s.collect_str(n),
            Dest::Exact(h) => s.serialize_str(h.as_str()),
            Dest::Wildcard(h) => s.collect_str(&format_args!("*.{h}")),
        }
    }
}

/// A destination as the shrink guard walks it: a network, or a name that is exact or a
/// wildcard (a listed one, or a `universal_domian`). Ordered as `Dest` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Point<'a> {
    Net(ipnet::IpNet),
    Name { name: &'a Hostname, exact: bool },
}

impl<'a> Point<'a> {
    fn of(dest: &'a Dest) -> Self {
        match dest {
            Dest::Net(n) => Point::Net(*n),
            Dest::Exact(name) => Point::Name { name, exact: true },
            Dest::Wildcard(name) => Point::Name { name, exact: false },
        }
    }

    fn dest(self) -> Dest {
        match self {
            Point::Net(n) => Dest::Net(n),
            Point::Name { name, exact: true } => Dest::Exact(name.clone()),
            Point::Name { name, exact: false } => Dest::Wildcard(name.clone()),
        }
    }

    /// True when allowing `self` allows all that `other` names: a network around it, a
    /// wildcard of its name or of a parent, or itself.
    fn covers(self, other: Point) -> bool {
        match (self, other) {
            (Point::Net(a), Point::Net(b)) => a.contains(&b),
            (
                Point::Name {
                    name: a,
                    exact: false,
                },
                Point::Name { name: b, .. },
            ) => b.is_within(a),
            (
                Point::Name {
                    name: a,
                    exact: true,
                },
                Point::Name {
                    name: b,
                    exact: true,
                },
            ) => a == b,
            _ => false,
        }
    }
}

impl Ord for Point<'_> {
    /// `Dest`'s order: addresses numerically, names zone by zone, a wildcard first.
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Point::Net(a), Point::Net(b)) => a.cmp(b),
            (Point::Net(_), Point::Name { .. }) => Ordering::Less,
            (Point::Name { .. }, Point::Net(_)) => Ordering::Greater,
            (Point::Name { name: a, exact: x }, Point::Name { name: b, exact: y }) => {
                a.labels_from_top().cmp(b.labels_from_top()).then(x.cmp(y))
            }
        }
    }
}

impl PartialOrd for Point<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// What one destination allows on one protocol.
struct Allowance<'a> {
    point: Point<'a>,
    protocol: Protocol,
    ports: Cow<'a, PortSet>,
}

/// What a destination allows on one protocol, each listed destination and each
/// `universal_domian` wildcard (unless exact domains) on its own, as normalization sees them:
/// in (destination, protocol) order, each pair once. The catalog's order is the destinations'
/// order, so the sort only places the wildcards (and the other protocol of a name listed with
/// and without a `universal_domian`).
fn allowances(list: &List, exact_domains: bool) -> Vec<Allowance<'_>> {
    let mut out: Vec<Allowance> = Vec::with_capacity(list.len());
    let mut universal = Vec::new();
    for (key, record) in list.records() {
        // One note's services are borrowed; several are merged.
        let services: Vec<(Protocol, Cow<PortSet>)> = match record.by_note {
            [(_, only)] => only.iter().map(|(p, s)| (p, Cow::Borrowed(s))).collect(),
            _ => {
                let merged = record.services();
                merged
                    .iter()
                    .map(|(p, s)| (p, Cow::Owned(s.clone())))
                    .collect()
            }
        };
        for (protocol, ports) in services {
            if let Some(name) = key.universal.as_ref().filter(|_| !exact_domains) {
                universal.push(Allowance {
                    point: Point::Name { name, exact: false },
                    protocol,
                    ports: ports.clone(),
                });
            }
            out.push(Allowance {
                point: Point::of(&key.dest),
                protocol,
                ports,
            });
        }
    }
    out.append(&mut universal);
    // Stable and adaptive: runs already in order cost one pass.
    out.sort_by(|a, b| (a.point, a.protocol).cmp(&(b.point, b.protocol)));
    out.dedup_by(|a, kept| {
        let same = (a.point, a.protocol) == (kept.point, kept.protocol);
        if same && !kept.ports.contains_set(&a.ports) {
            kept.ports = Cow::Owned(kept.ports.union(&a.ports));
        }
        same
    });
    out
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
    let after = allowances(next, exact_domains);
    let mut out = Shrinkage {
        pairs: before.len(),
        ..Shrinkage::default()
    };
    let mut share = 0.0;
    // One walk over both lists in order. `chain` holds the allowances of `next` seen so far
    // that cover the current destination, each covering the one after it (networks around
    // an address, then the network itself; wildcards of a name's zones from the top): one
    // that no longer covers the current destination covers none of the later ones.
    let mut chain: Vec<&Allowance> = Vec::new();
    let mut ahead = after.iter().peekable();
    for b in &before {
        while let Some(a) = ahead.next_if(|a| a.point <= b.point) {
            while chain.last().is_some_and(|c| !c.point.covers(a.point)) {
                chain.pop();
            }
            chain.push(a);
        }
        while chain.last().is_some_and(|c| !c.point.covers(b.point)) {
            chain.pop();
        }
        let mut still: Option<Cow<PortSet>> = None;
        for c in chain.iter().filter(|c| c.protocol == b.protocol) {
            still = Some(match still {
                Some(s) => Cow::Owned(s.union(&c.ports)),
                None => Cow::Borrowed(&*c.ports),
            });
        }
        let (gone, count) = match &still {
            Some(s) => lost_ports(&b.ports, s),
            None => (Some(b.ports.clone().into_owned()), b.ports.count()),
        };
        if let Some(gone) = gone {
            share += f64::from(count) / f64::from(b.ports.count());
            out.lost.push((b.point.dest(), b.protocol, gone));
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
pub(crate) mod tests {
    use super::*;
    use crate::wecom::parse;

    /// The words sorted in two halves and merged are the words sorted at once, however the
    /// halves' networks interleave (and whatever the halves' lengths).
    #[test]
    fn words_sorted_in_halves_are_sorted() {
        for n in [0, 1, 2, 3, 10, 1001] {
            let items: Vec<String> = (0..n)
                .map(|i: u32| {
                    let a = i.wrapping_mul(2_654_435_761) % 97;
                    let ip = match i % 5 {
                        0 => format!("2001:db8::{a:x}"),
                        1 => format!("10.0.{a}.0/24"),
                        _ => format!("10.0.{}.{a}", i % 3),
                    };
                    format!(
                        r#"{{"ip":"{ip}","protocol":"TCP","port":[{}],"is_necessary":1}}"#,
                        1 + i % 4
                    )
                })
                .collect();
            let doc = format!(r#"{{"ip_list":[{}]}}"#, items.join(","));
            let entries = parse(doc.as_bytes(), false).unwrap().entries;
            let once = sorted_words(&entries, false);
            assert!(once.windows(2).all(|w| w[0] < w[1]));
            assert_eq!(sorted_words(&entries, true), once, "{n}");
        }
    }

    #[test]
    fn source_json_is_serde_jsons_pretty_layout() {
        let hostile = "q\\\"uote\\\\ \\n\\t\\u0001\\u001f\\u007f \\u2028 é 企业 </script> /";
        let doc = format!(
            r#"{{"errcode":0,"ip_list":[
            {{"ip":"10.0.0.0/8","protocol":"TCP/UDP","port":[443,"8000-8100",1,65535],"is_necessary":1,"description":"{hostile}"}},
            {{"ip":"10.0.0.0/8","protocol":"UDP","port":[3478],"is_necessary":0,"description":"{hostile}"}},
            {{"ip":"255.255.255.255","protocol":"TCP","port":[80],"is_necessary":0,"description":""}},
            {{"ip":"0.0.0.0/1","protocol":"TCP","port":[80],"is_necessary":0,"description":""}},
            {{"ip":"2001:db8::1","protocol":"UDP","port":["1-9"],"is_necessary":1,"description":"a"}},
            {{"ip":"2001:db8::/32","protocol":"TCP","port":[99],"is_necessary":1,"description":"a"}}],
            "domain_list":[
            {{"domain":"*.example.com","protocol":"TCP","port":[443],"is_necessary":1,"description":"b"}},
            {{"domain":"a.example.org","universal_domian":"example.org","protocol":"UDP","port":[1,2,3],"is_necessary":1,"description":"b"}}]}}"#
        );
        let lists = [
            List::from_entries(&parse(doc.as_bytes(), false).unwrap().entries),
            List::from_entries(&parse(br#"{"errcode":0,"ip_list":[{"ip":"1.2.3.4","protocol":"TCP","port":[1],"is_necessary":1}]}"#, false).unwrap().entries),
            List::default(),
        ];
        for list in lists {
            let text = list.to_json();
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(serde_json::to_string_pretty(&value).unwrap() + "\n", text);
            let again = List::from_entries(&parse(text.as_bytes(), false).unwrap().entries);
            assert_eq!(again, list);
        }
    }

    /// A list of many pieces, in one list or both, comes out as its catalog in order: each
    /// record's entry where the catalog puts it (an oracle of its own: the input's entry of
    /// that destination, as serde_json prints it), commas and brackets where serde_json puts
    /// them.
    #[test]
    fn source_json_in_pieces_is_the_catalog_in_order() {
        for (ips, names) in [
            (3 * PIECE + 17, PIECE + 5),
            (4 * PIECE, 0),
            (0, 2 * PIECE + 1),
        ] {
            let mut by_dest = std::collections::BTreeMap::new();
            let mut ip_list = Vec::new();
            let mut domain_list = Vec::new();
            for i in 0..ips.max(names) {
                let row = |dest_field: &str, dest: String| {
                    let mut row = serde_json::Map::new();
                    row.insert(dest_field.into(), dest.into());
                    row.insert("protocol".into(), ["TCP", "UDP"][i % 2].into());
                    row.insert(
                        "port".into(),
                        [
                            serde_json::json!([443]),
                            serde_json::json!([80, "8000-8100"]),
                        ][i % 3 / 2]
                            .clone(),
                    );
                    row.insert("is_necessary".into(), (i % 5 / 3).into());
                    row.insert("description".into(), format!("d{}", i / 700).into());
                    serde_json::Value::Object(row)
                };
                if i < ips {
                    // Given out of order: the catalog sorts them.
                    let addr =
                        std::net::Ipv4Addr::from(0x0A00_0000 + ((i as u32 * 7919) % 100_003));
                    let net = ipnet::IpNet::from(std::net::IpAddr::V4(addr));
                    let row = row("ip", addr.to_string());
                    by_dest.insert(Dest::Net(net), row.clone());
                    ip_list.push(row);
                }
                if i < names {
                    let name = format!("h{i}.example.com");
                    let row = row("domain", name.clone());
                    by_dest.insert(Dest::Exact(Hostname::parse(&name).unwrap()), row.clone());
                    domain_list.push(row);
                }
            }
            let doc =
                serde_json::json!({"errcode": 0, "ip_list": ip_list, "domain_list": domain_list});
            let list = list(&doc.to_string());
            assert_eq!(list.len(), ips + names);
            let rows = |kind: ListKind| -> Vec<serde_json::Value> {
                list.keys()
                    .iter()
                    .filter(|k| k.list == kind)
                    .map(|k| by_dest[&k.dest].clone())
                    .collect()
            };
            let expected = serde_json::json!({
                "errcode": 0,
                "errmsg": "ok",
                "generator": GENERATOR,
                "domain_list": rows(ListKind::Domain),
                "ip_list": rows(ListKind::Ip),
            });
            let text = list.to_json();
            assert!(
                text == serde_json::to_string_pretty(&expected).unwrap() + "\n",
                "{ips} addresses, {names} names"
            );
        }
    }

    #[test]
    fn catalog_order_is_the_whole_order() {
        let mut x: u32 = 0x2545_F491;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        let mut items = Vec::new();
        for _ in 0..3000 {
            let r = next();
            // Few addresses, so that networks repeat with other lengths, notes and ports.
            let addr =
                std::net::Ipv4Addr::from((r & 0x0F0F_0003) | [0, 0x8000_0000][r as usize >> 31]);
            let len = [32, 32, 31, 24, 16, 8, 1][(r >> 4) as usize % 7];
            let net = ipnet::Ipv4Net::new(addr, len).unwrap().trunc();
            let ip = match (r >> 8) % 9 {
                0 => format!("2001:db8::{:x}", r % 5),
                1 => "::".into(),
                _ => net.to_string(),
            };
            items.push(format!(
                r#"{{"ip":"{ip}","protocol":"{}","port":[{}],"is_necessary":{},"description":"{}"}}"#,
                ["TCP", "UDP"][(r >> 12) as usize % 2],
                1 + (r >> 13) % 3,
                (r >> 16) % 2,
                ["", "a", "b"][(r >> 17) as usize % 3]
            ));
        }
        let domains = r#"{"domain":"b.example.com","protocol":"TCP","port":[443],"is_necessary":1},
            {"domain":"*.example.com","protocol":"TCP","port":[443],"is_necessary":0},
            {"domain":"a.example.com","universal_domian":"example.org","protocol":"TCP","port":[443],"is_necessary":1},
            {"domain":"a.example.com","protocol":"TCP","port":[80],"is_necessary":1}"#;
        let doc = format!(
            r#"{{"errcode":0,"ip_list":[{}],"domain_list":[{domains}]}}"#,
            items.join(",")
        );
        let entries = parse(doc.as_bytes(), false).unwrap().entries;
        let mut expected: Vec<&Entry> = entries.iter().collect();
        expected.sort_by(|a, b| {
            sort_prefix(a)
                .cmp(&sort_prefix(b))
                .then_with(|| entry_order(a, b))
        });
        let got: Vec<&Entry> = catalog_order(&entries)
            .iter()
            .map(|&i| &entries[i])
            .collect();
        assert_eq!(got.len(), entries.len());
        // Entries equal in the order may come in any order among themselves.
        let place = |e: &&Entry| {
            (
                sort_prefix(e),
                e.list,
                e.dest.clone(),
                e.universal.clone(),
                e.necessary,
                e.description.clone(),
            )
        };
        let got: Vec<_> = got.iter().map(place).collect();
        let expected: Vec<_> = expected.iter().map(place).collect();
        assert_eq!(got, expected);
    }

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
        let r = list.record(0);
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
            .map(|e| {
                (
                    e.necessary,
                    e.description.as_str(),
                    e.protocols.iter().collect(),
                )
            })
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

    /// The catalog of a response document (shared with `diff`'s tests).
    pub(crate) fn list(doc: &str) -> List {
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
