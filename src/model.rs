//! Validated values. Once a value is one of these types it is safe to print into any target:
//! templates never see a raw string from the input except free-text descriptions.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Serialize, Serializer};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// Every protocol, in protocol order.
    pub const ALL: [Protocol; 2] = [Protocol::Tcp, Protocol::Udp];

    fn bit(self) -> u8 {
        match self {
            Protocol::Tcp => 1,
            Protocol::Udp => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A set of protocols in one byte, iterated in protocol order: an entry's protocols, kept
/// without a heap allocation per entry.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Protocols(u8);

impl Protocols {
    pub fn contains(&self, p: &Protocol) -> bool {
        self.0 & p.bit() != 0
    }

    pub fn insert(&mut self, p: Protocol) {
        self.0 |= p.bit();
    }

    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    pub fn len(&self) -> usize {
        self.0.count_ones() as usize
    }

    /// Keeps the protocols `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&Protocol) -> bool) {
        for p in Protocol::ALL {
            if !keep(&p) {
                self.0 &= !p.bit();
            }
        }
    }

    /// The protocols, in protocol order.
    pub fn iter(&self) -> ProtocolsIter {
        self.into_iter()
    }
}

impl FromIterator<Protocol> for Protocols {
    fn from_iter<I: IntoIterator<Item = Protocol>>(iter: I) -> Self {
        let mut set = Protocols::default();
        for p in iter {
            set.insert(p);
        }
        set
    }
}

impl IntoIterator for Protocols {
    type Item = Protocol;
    type IntoIter = ProtocolsIter;

    fn into_iter(self) -> ProtocolsIter {
        ProtocolsIter { bits: self.0 }
    }
}

impl IntoIterator for &Protocols {
    type Item = Protocol;
    type IntoIter = ProtocolsIter;

    fn into_iter(self) -> ProtocolsIter {
        (*self).into_iter()
    }
}

/// The protocols of a `Protocols`, in protocol order.
#[derive(Debug, Clone)]
pub struct ProtocolsIter {
    /// The protocols not yet yielded.
    bits: u8,
}

impl Iterator for ProtocolsIter {
    type Item = Protocol;

    fn next(&mut self) -> Option<Protocol> {
        let p = Protocol::ALL
            .into_iter()
            .find(|p| self.bits & p.bit() != 0)?;
        self.bits &= !p.bit();
        Some(p)
    }
}

impl fmt::Debug for Protocols {
    /// As the list it stands for: `[Tcp, Udp]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq<[Protocol]> for Protocols {
    /// Equal to a list of the same protocols in protocol order, each once.
    fn eq(&self, other: &[Protocol]) -> bool {
        self.iter().eq(other.iter().copied())
    }
}

impl<const N: usize> PartialEq<[Protocol; N]> for Protocols {
    fn eq(&self, other: &[Protocol; N]) -> bool {
        *self == other[..]
    }
}

impl PartialEq<Vec<Protocol>> for Protocols {
    fn eq(&self, other: &Vec<Protocol>) -> bool {
        *self == other[..]
    }
}

/// What a destination is matched by. `Dns` groups hold names, which Squid and pfSense enforce, and the L3 targets through dnsmasq's sets.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
    Dns,
}

impl Family {
    pub fn short(self) -> &'static str {
        match self {
            Family::Ipv4 => "v4",
            Family::Ipv6 => "v6",
            Family::Dns => "dns",
        }
    }
}

/// An inclusive port range; a single port has `start == end`. `start >= 1` always holds.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl PortRange {
    pub fn new(start: u16, end: u16) -> Option<Self> {
        (start >= 1 && start <= end).then_some(PortRange { start, end })
    }

    pub fn is_single(&self) -> bool {
        self.start == self.end
    }
}

/// A port as the API spells it: a number, or a range as a string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum PortValue {
    One(u16),
    Range(String),
}

/// A non-empty set of ports kept as sorted, merged (non-overlapping, non-adjacent) ranges,
/// so that equal sets compare equal whatever order or overlap the input used. Shared: the
/// entries of a list that have the same ports hold one set (see `Interner`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortSet(Arc<[PortRange]>);

impl Serialize for PortSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.ranges().serialize(s)
    }
}

impl Borrow<[PortRange]> for PortSet {
    fn borrow(&self) -> &[PortRange] {
        &self.0
    }
}

/// Sorts and merges `ranges` in place into a set's canonical form.
fn canonical(ranges: &mut Vec<PortRange>) {
    ranges.sort_unstable();
    ranges.dedup_by(|r, last| {
        let joins = u32::from(r.start) <= u32::from(last.end) + 1;
        if joins {
            last.end = last.end.max(r.end);
        }
        joins
    });
}

impl PortSet {
    /// Builds the canonical set; `None` when `ranges` is empty (an empty port list would mean
    /// "any port" in several targets, so it is never representable).
    pub fn new(mut ranges: Vec<PortRange>) -> Option<Self> {
        if ranges.is_empty() {
            return None;
        }
        canonical(&mut ranges);
        Some(PortSet(ranges.into()))
    }

    pub fn ranges(&self) -> &[PortRange] {
        &self.0
    }

    /// The ports as the API writes them (a number, or `"a-b"` for a range), so a program
    /// reading `source.json`, `diff --format json` or `lists/index.json` parses no joined string.
    pub fn api_values(&self) -> Vec<PortValue> {
        self.0
            .iter()
            .map(|r| {
                if r.is_single() {
                    PortValue::One(r.start)
                } else {
                    PortValue::Range(format!("{}-{}", r.start, r.end))
                }
            })
            .collect()
    }

    /// How many ports the set holds (at most 65,535).
    pub fn count(&self) -> u32 {
        self.0
            .iter()
            .map(|r| u32::from(r.end) - u32::from(r.start) + 1)
            .sum()
    }

    pub fn union(&self, other: &PortSet) -> PortSet {
        let all = self.0.iter().chain(other.0.iter()).copied().collect();
        PortSet::new(all).unwrap_or_else(|| self.clone())
    }

    /// True when every port of `other` is in `self`. One walk over both sorted lists: the
    /// range of `self` that can hold `o` is the first one that ends at or after `o.start`.
    pub fn contains_set(&self, other: &PortSet) -> bool {
        let mut mine = self.0.iter().peekable();
        other.0.iter().all(|o| {
            while mine.next_if(|s| s.end < o.start).is_some() {}
            mine.peek()
                .is_some_and(|s| s.start <= o.start && o.end <= s.end)
        })
    }
}

impl fmt::Display for PortSet {
    /// `80,443,8000-8100`: stable and readable, used in names and messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&join_ranges(&self.0, ",", "-"))
    }
}

/// Ports as text: `sep` between ranges, `range_sep` inside one (`80,443,8000-8100`); each
/// target's syntax is one choice of the two.
pub fn join_ranges(ranges: &[PortRange], sep: &str, range_sep: &str) -> String {
    let words: Vec<String> = ranges
        .iter()
        .map(|r| {
            if r.is_single() {
                r.start.to_string()
            } else {
                format!("{}{range_sep}{}", r.start, r.end)
            }
        })
        .collect();
    words.join(sep)
}

/// A lowercase DNS name of at least two labels, letters, digits and inner hyphens only.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hostname(Box<str>);

impl Hostname {
    /// Validates `raw`; the error says why in a few words.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let name = raw.strip_suffix('.').unwrap_or(raw).to_ascii_lowercase();
        if name.is_empty() {
            return Err("is empty");
        }
        if name.len() > 253 {
            return Err("is longer than 253 characters");
        }
        let labels: Vec<&str> = name.split('.').collect();
        if labels.len() < 2 {
            return Err("needs at least two labels (a bare top-level name would match too much)");
        }
        for label in &labels {
            if label.is_empty() {
                return Err("has an empty label");
            }
            if label.len() > 63 {
                return Err("has a label longer than 63 characters");
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err("may hold only letters, digits, hyphens and dots");
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err("has a label that starts or ends with a hyphen");
            }
        }
        if labels
            .last()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err("ends in a numeric label (an IP address belongs in ip_list)");
        }
        Ok(Hostname(name.into_boxed_str()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when `self` is `parent` or lies below it.
    pub fn is_within(&self, parent: &Hostname) -> bool {
        self.0 == parent.0
            || (self.0.len() > parent.0.len()
                && self.0.ends_with(&*parent.0)
                && self.0.as_bytes()[self.0.len() - parent.0.len() - 1] == b'.')
    }

    /// Labels from the top down (`com`, `qq`, `weixin` ...): sorting by this keeps a zone together.
    pub fn labels_from_top(&self) -> std::str::RSplit<'_, char> {
        self.0.rsplit('.')
    }

    /// Every proper parent with at least two labels: `a.b.c.com` gives `b.c.com`, `c.com`.
    pub fn parents(&self) -> impl Iterator<Item = &str> {
        self.0
            .match_indices('.')
            .map(|(i, _)| &self.0[i + 1..])
            .filter(|rest| rest.contains('.'))
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One destination as the targets see it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dest {
    Net(IpNet),
    /// Exactly this name.
    Exact(Hostname),
    /// This name and every name below it (Squid's `.example.com`).
    Wildcard(Hostname),
}

impl Dest {
    pub fn family(&self) -> Family {
        match self {
            Dest::Net(IpNet::V4(_)) => Family::Ipv4,
            Dest::Net(IpNet::V6(_)) => Family::Ipv6,
            Dest::Exact(_) | Dest::Wildcard(_) => Family::Dns,
        }
    }
}

impl Ord for Dest {
    /// Addresses numerically, names zone by zone, a wildcard before the names it would cover.
    /// Compares labels in place: sorting a large list must not allocate a key per comparison.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        match (self, other) {
            (Dest::Net(a), Dest::Net(b)) => a.cmp(b),
            (Dest::Net(_), _) => Ordering::Less,
            (_, Dest::Net(_)) => Ordering::Greater,
            (Dest::Wildcard(a) | Dest::Exact(a), Dest::Wildcard(b) | Dest::Exact(b)) => a
                .labels_from_top()
                .cmp(b.labels_from_top())
                .then_with(|| matches!(self, Dest::Exact(_)).cmp(&matches!(other, Dest::Exact(_)))),
        }
    }
}

impl PartialOrd for Dest {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Dest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dest::Net(n) => write!(f, "{n}"),
            Dest::Exact(h) => write!(f, "{h}"),
            Dest::Wildcard(h) => write!(f, ".{h}"),
        }
    }
}

/// Which list of the response an entry came from; errors name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum ListKind {
    #[serde(rename = "ip_list")]
    Ip,
    #[serde(rename = "domain_list")]
    Domain,
}

impl ListKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ListKind::Ip => "ip_list",
            ListKind::Domain => "domain_list",
        }
    }
}

/// One validated entry of the response. Small and without a heap allocation of its own for
/// an address: a list may hold a million of them, and the texts and port sets its entries
/// repeat are shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub list: ListKind,
    /// From the config file's `extra` lists rather than from the response.
    pub extra: bool,
    pub necessary: bool,
    pub protocols: Protocols,
    pub index: u32,
    pub dest: Dest,
    pub universal: Option<Hostname>,
    pub ports: PortSet,
    pub description: Text,
}

/// Where an entry stands, as messages name it: `ip_list[3]` or `extra.domain_list[0]`.
pub fn location(list: ListKind, extra: bool, index: usize) -> String {
    format!(
        "{}{}[{index}]",
        if extra { "extra." } else { "" },
        list.as_str()
    )
}

impl Entry {
    pub fn location(&self) -> String {
        location(self.list, self.extra, self.index as usize)
    }
}

/// What an entry contributes to a destination's notes (comments, pfSense details).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Note {
    pub necessary: bool,
    pub description: Text,
}

/// Free text from the input (a description), shared by everything that holds it: a list
/// repeats a few texts over many entries.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Text(Arc<str>);

impl Text {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Text(s.into())
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

/// One `Text` per distinct description and one `PortSet` per distinct port set, for the
/// entries of one read. Neighbours mostly repeat the last one, which is checked first,
/// without hashing.
#[derive(Debug, Default)]
pub struct Interner {
    texts: HashSet<Text>,
    sets: HashSet<PortSet>,
    last_text: Option<Text>,
    last_set: Option<PortSet>,
    /// The buffer `ports` was last given, for the next set to be read into.
    spare: Vec<PortRange>,
}

impl Interner {
    /// The shared text equal to `s`.
    pub fn text(&mut self, s: &str) -> Text {
        if let Some(last) = self.last_text.as_ref().filter(|t| t.as_str() == s) {
            return last.clone();
        }
        let text = match self.texts.get(s) {
            Some(text) => text.clone(),
            None => {
                let text = Text::from(s);
                self.texts.insert(text.clone());
                text
            }
        };
        self.last_text = Some(text.clone());
        text
    }

    /// An empty buffer to read a port list into, then given to `ports`: reading a list of a
    /// million entries allocates no buffer per entry.
    pub fn buffer(&mut self) -> Vec<PortRange> {
        let mut buffer = std::mem::take(&mut self.spare);
        buffer.clear();
        buffer
    }

    /// The shared set of `ranges` (any order, overlaps allowed); `None` when empty, as
    /// `PortSet::new`. Keeps `ranges` as the next buffer.
    pub fn ports(&mut self, mut ranges: Vec<PortRange>) -> Option<PortSet> {
        if ranges.is_empty() {
            return None;
        }
        canonical(&mut ranges);
        let set = match &self.last_set {
            Some(last) if *last.0 == *ranges => last.clone(),
            _ => {
                let set = match self.sets.get(&ranges[..]) {
                    Some(set) => set.clone(),
                    None => {
                        let set = PortSet(ranges[..].into());
                        self.sets.insert(set.clone());
                        set
                    }
                };
                self.last_set = Some(set.clone());
                set
            }
        };
        self.spare = ranges;
        Some(set)
    }
}

/// Each number 0..=255 in decimal, its digits padded to three, and how many there are.
const DECIMAL: [([u8; 3], u8); 256] = {
    let mut table = [([0; 3], 0); 256];
    let mut n = 0;
    while n < 256 {
        let digits = [
            b'0' + (n / 100) as u8,
            b'0' + (n / 10 % 10) as u8,
            b'0' + (n % 10) as u8,
        ];
        table[n] = match n {
            0..=9 => ([digits[2], 0, 0], 1),
            10..=99 => ([digits[1], digits[2], 0], 2),
            _ => (digits, 3),
        };
        n += 1;
    }
    table
};

/// An IPv4 address, with `/len` when given, as `Display` writes it: most of a large output is
/// addresses, and `fmt` takes longer than the rest of an entry or a member's line. Each number
/// is copied from a table, three bytes at a time, without a branch on its digits (random
/// addresses make such branches mispredict).
pub fn ipv4_text(addr: std::net::Ipv4Addr, len: Option<u8>, buf: &mut [u8; 20]) -> &str {
    let mut at = 0;
    for (i, number) in addr.octets().into_iter().chain(len).enumerate() {
        if i > 0 {
            buf[at] = if i == 4 { b'/' } else { b'.' };
            at += 1;
        }
        // At most `255.255.255.255/` (16 bytes) is written before the last three.
        let (digits, count) = DECIMAL[usize::from(number)];
        buf[at..at + 3].copy_from_slice(&digits);
        at += usize::from(count);
    }
    // Digits, dots and a slash: ASCII.
    std::str::from_utf8(&buf[..at]).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ranges: &[(u16, u16)]) -> PortSet {
        PortSet::new(
            ranges
                .iter()
                .map(|&(a, b)| PortRange::new(a, b).unwrap())
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn contains_set_walks_both_lists() {
        let big = set(&[(1, 1), (3, 5), (80, 90), (443, 443)]);
        assert!(big.contains_set(&set(&[(1, 1), (4, 5), (85, 85), (443, 443)])));
        assert!(big.contains_set(&big));
        assert!(!big.contains_set(&set(&[(2, 2)])));
        assert!(!big.contains_set(&set(&[(5, 6)])));
        assert!(!big.contains_set(&set(&[(1, 1), (444, 444)])));
        assert!(!set(&[(3, 5)]).contains_set(&set(&[(1, 1), (3, 3)])));
        assert!(set(&[(1, 65535)]).contains_set(&big));
    }

    #[test]
    fn protocols_are_a_set_iterated_in_protocol_order() {
        let both: Protocols = [Protocol::Udp, Protocol::Tcp, Protocol::Udp]
            .into_iter()
            .collect();
        assert_eq!(
            both.iter().collect::<Vec<_>>(),
            [Protocol::Tcp, Protocol::Udp]
        );
        assert_eq!(both, vec![Protocol::Tcp, Protocol::Udp]);
        assert_ne!(both, [Protocol::Udp, Protocol::Tcp]);
        assert_ne!(both, [Protocol::Tcp]);
        assert_eq!(both.len(), 2);
        assert_eq!(format!("{both:?}"), "[Tcp, Udp]");
        let udp: Protocols = [Protocol::Udp].into_iter().collect();
        assert!(udp.contains(&Protocol::Udp) && !udp.contains(&Protocol::Tcp));
        assert_eq!(udp, [Protocol::Udp]);
        let mut kept = both;
        kept.retain(|p| *p == Protocol::Udp);
        assert_eq!(kept, udp);
        kept.retain(|p| *p == Protocol::Udp);
        assert_eq!(kept, udp);
        kept.retain(|p| *p == Protocol::Tcp);
        assert!(kept.is_empty() && kept.iter().next().is_none());
        assert_eq!(kept, Vec::new());
        let mut tcp = Protocols::default();
        tcp.insert(Protocol::Tcp);
        assert_eq!((&tcp).into_iter().collect::<Vec<_>>(), [Protocol::Tcp]);
    }

    #[test]
    fn the_interner_shares_equal_values_and_only_those() {
        let mut i = Interner::default();
        let a = i.text("core");
        let b = i.text("calls");
        // Not the last one: found by hashing.
        let a2 = i.text("core");
        assert!(std::ptr::eq(a.as_str(), a2.as_str()));
        // Right after it, a text as long.
        assert_eq!(i.text("cord"), "cord");
        assert!(!std::ptr::eq(a.as_str(), b.as_str()));
        assert_eq!((a2.as_str(), i.text("calls").as_str()), ("core", "calls"));
        assert_eq!(i.text(""), "");

        let r = |a, b| PortRange::new(a, b).unwrap();
        let mut ports = |ranges: &[PortRange]| {
            let mut buffer = i.buffer();
            assert!(buffer.is_empty());
            buffer.extend_from_slice(ranges);
            i.ports(buffer)
        };
        let web = ports(&[r(443, 443), r(80, 80)]).unwrap();
        let same = ports(&[r(80, 80), r(443, 443), r(80, 80)]).unwrap();
        assert!(std::ptr::eq(web.ranges(), same.ranges()));
        assert_eq!(web, set(&[(80, 80), (443, 443)]));
        // Right after it, a set of as many ranges.
        assert_eq!(
            ports(&[r(80, 80), r(8443, 8443)]).unwrap(),
            set(&[(80, 80), (8443, 8443)])
        );
        // A subset, a superset and a merge are sets of their own.
        assert_eq!(ports(&[r(80, 80)]).unwrap(), set(&[(80, 80)]));
        let more = ports(&[r(80, 80), r(443, 443), r(8080, 8080)]).unwrap();
        assert_eq!(more, set(&[(80, 80), (443, 443), (8080, 8080)]));
        let merged = ports(&[r(3, 8), r(1, 5), r(9, 9)]).unwrap();
        assert_eq!(merged.ranges(), [r(1, 9)]);
        let again = ports(&[r(443, 443), r(80, 80)]).unwrap();
        assert!(std::ptr::eq(web.ranges(), again.ranges()));
        assert_eq!(ports(&[]), None);
    }

    #[test]
    fn ipv4_text_is_what_display_writes() {
        let mut x: u32 = 0x9E37_79B9;
        let mut addrs = vec![0, u32::MAX, 0x0A00_0001, 0x6400_0A09, 0x0909_6363];
        // Every number in every place.
        addrs.extend((0..=255u32).map(|n| n * 0x0101_0101));
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            addrs.push(x);
        }
        for (i, &a) in addrs.iter().enumerate() {
            let addr = std::net::Ipv4Addr::from(a);
            assert_eq!(ipv4_text(addr, None, &mut [0; 20]), addr.to_string());
            let len = (i % 33) as u8;
            let net = ipnet::Ipv4Net::new(addr, len).unwrap();
            assert_eq!(ipv4_text(addr, Some(len), &mut [0; 20]), net.to_string());
        }
    }
}
