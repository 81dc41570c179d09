//! Validated values. Once a value is one of these types it is safe to print into any target:
//! templates never see a raw string from the input except free-text descriptions.

use std::fmt;

use ipnet::IpNet;
use serde::Serialize;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
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
/// so that equal sets compare equal whatever order or overlap the input used.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct PortSet(Vec<PortRange>);

impl PortSet {
    /// Builds the canonical set; `None` when `ranges` is empty (an empty port list would mean
    /// "any port" in several targets, so it is never representable).
    pub fn new(mut ranges: Vec<PortRange>) -> Option<Self> {
        if ranges.is_empty() {
            return None;
        }
        ranges.sort_unstable();
        // Merged in place: a set is built for every entry of a list.
        ranges.dedup_by(|r, last| {
            let joins = u32::from(r.start) <= u32::from(last.end) + 1;
            if joins {
                last.end = last.end.max(r.end);
            }
            joins
        });
        Some(PortSet(ranges))
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
        let all = self.0.iter().chain(&other.0).copied().collect();
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
pub struct Hostname(String);

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
        Ok(Hostname(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when `self` is `parent` or lies below it.
    pub fn is_within(&self, parent: &Hostname) -> bool {
        self.0 == parent.0
            || (self.0.len() > parent.0.len()
                && self.0.ends_with(parent.0.as_str())
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

/// One validated entry of the response. `dests` holds the entry's own destination, then the
/// wildcard of its `universal_domian` if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub list: ListKind,
    /// From the config file's `extra` lists rather than from the response.
    pub extra: bool,
    pub index: usize,
    pub dest: Dest,
    pub universal: Option<Hostname>,
    pub protocols: Vec<Protocol>,
    pub ports: PortSet,
    pub necessary: bool,
    pub description: String,
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
        location(self.list, self.extra, self.index)
    }
}

/// What an entry contributes to a destination's notes (comments, pfSense details).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Note {
    pub necessary: bool,
    pub description: String,
}

/// An IPv4 address, with `/len` when given, as `Display` writes it: most of a large output is
/// addresses, and `fmt` takes longer than the rest of an entry or a member's line.
pub fn ipv4_text(addr: std::net::Ipv4Addr, len: Option<u8>, buf: &mut [u8; 18]) -> &str {
    let mut at = 0;
    for (i, number) in addr.octets().into_iter().chain(len).enumerate() {
        if i > 0 {
            buf[at] = if i == 4 { b'/' } else { b'.' };
            at += 1;
        }
        if number >= 100 {
            buf[at] = b'0' + number / 100;
            at += 1;
        }
        if number >= 10 {
            buf[at] = b'0' + number / 10 % 10;
            at += 1;
        }
        buf[at] = b'0' + number % 10;
        at += 1;
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
    fn ipv4_text_is_what_display_writes() {
        let mut x: u32 = 0x9E37_79B9;
        let mut addrs = vec![0, u32::MAX, 0x0A00_0001, 0x6400_0A09, 0x0909_6363];
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            addrs.push(x);
        }
        for (i, &a) in addrs.iter().enumerate() {
            let addr = std::net::Ipv4Addr::from(a);
            assert_eq!(ipv4_text(addr, None, &mut [0; 18]), addr.to_string());
            let len = (i % 33) as u8;
            let net = ipnet::Ipv4Net::new(addr, len).unwrap();
            assert_eq!(ipv4_text(addr, Some(len), &mut [0; 18]), net.to_string());
        }
    }
}
