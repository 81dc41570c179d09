//! An oracle for what a fixture allows, independent of the crate: it reads the fixture JSON with
//! serde_json itself and never calls the library's parser or normalizer, so a bug shared by the
//! generator and its own helpers can't hide. The `real_tools` tests compare what each firewall
//! really loaded against it.
//!
//! Addresses are compared in a canonical form (per family and protocol: elementary port
//! intervals, each with its merged address ranges), so that two spellings of one relation (a /23
//! or two /24s, a host inside its network) compare equal and a difference is exactly what one
//! side allows and the other doesn't. Names are compared by probing, since a wildcard stands for
//! infinitely many names.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];

    pub fn bits(self) -> u32 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    /// The whole address space of the family, for a rule that names no destination.
    pub fn everything(self) -> Span {
        let end = match self {
            Family::V4 => u128::from(u32::MAX),
            Family::V6 => u128::MAX,
        };
        Span { start: 0, end }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        }
    }

    fn show(self, addr: u128) -> String {
        match self {
            // Addresses of a V4 span never exceed u32::MAX (see `parse_addr`).
            Family::V4 => Ipv4Addr::from(addr as u32).to_string(),
            Family::V6 => Ipv6Addr::from(addr).to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub const BOTH: [Proto; 2] = [Proto::Tcp, Proto::Udp];

    /// `tcp` or `udp`, in any case.
    pub fn parse(word: &str) -> Result<Proto, String> {
        match word.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            _ => Err(format!("{word:?} is not tcp or udp")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// An inclusive range of addresses of one family, as integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    pub start: u128,
    pub end: u128,
}

impl Span {
    pub fn contains(&self, other: &Span) -> bool {
        self.start <= other.start && other.end <= self.end
    }
}

/// An inclusive port range.
pub type Ports = (u16, u16);

/// What a rule without a port match allows.
pub const ALL_PORTS: Ports = (0, u16::MAX);

/// An address: `10.0.0.1`, `2001:db8::1`.
pub fn parse_addr(s: &str) -> Result<(Family, u128), String> {
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => Ok((Family::V4, u128::from(u32::from(a)))),
        Ok(IpAddr::V6(a)) => Ok((Family::V6, u128::from(a))),
        Err(_) => Err(format!("{s:?} is not an IPv4 or IPv6 address")),
    }
}

/// An address or a CIDR: `10.0.0.1`, `10.0.0.0/8`, `2001:db8::/32`. Host bits are ignored.
pub fn parse_net(s: &str) -> Result<(Family, Span), String> {
    let (addr, len) = match s.split_once('/') {
        Some((addr, len)) => (addr, Some(len)),
        None => (s, None),
    };
    let (family, value) = parse_addr(addr)?;
    let bits = family.bits();
    let len = match len {
        None => bits,
        Some(len) => digits(len)
            .and_then(|l| u32::try_from(l).ok())
            .filter(|&l| l <= bits)
            .ok_or_else(|| format!("{s:?} has an invalid prefix length"))?,
    };
    let host_bits = bits - len;
    let host = if host_bits == 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    let start = value & !host;
    Ok((
        family,
        Span {
            start,
            end: start | host,
        },
    ))
}

/// `parse_net` for a list's own values: host bits set (`10.0.0.1/8`) are an error, since the
/// list may mean the host or the network.
pub fn parse_net_strict(s: &str) -> Result<(Family, Span), String> {
    let (family, span) = parse_net(s)?;
    let (_, addr) = parse_addr(s.split_once('/').map_or(s, |(a, _)| a))?;
    if addr != span.start {
        return Err(format!("{s:?} has host bits set"));
    }
    Ok((family, span))
}

/// Plain decimal digits only (no sign, no space), as u64.
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A port number written in decimal.
pub fn parse_port(s: &str) -> Result<u16, String> {
    digits(s)
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| format!("{s:?} is not a port number"))
}

/// `80` or `8000<sep>8100`.
pub fn parse_port_range(s: &str, sep: char) -> Result<Ports, String> {
    let (a, b) = match s.split_once(sep) {
        Some((a, b)) => (parse_port(a)?, parse_port(b)?),
        None => {
            let p = parse_port(s)?;
            (p, p)
        }
    };
    if a > b {
        return Err(format!("{s:?} is an empty port range"));
    }
    Ok((a, b))
}

/// Sorted, with overlapping and adjacent spans merged.
pub fn merge_spans(mut spans: Vec<Span>) -> Vec<Span> {
    spans.sort_unstable();
    let mut out: Vec<Span> = Vec::with_capacity(spans.len());
    for s in spans {
        match out.last_mut() {
            Some(last) if s.start <= last.end.saturating_add(1) => last.end = last.end.max(s.end),
            _ => out.push(s),
        }
    }
    out
}

/// `a` minus `b`, both merged.
fn subtract_spans(a: &[Span], b: &[Span]) -> Vec<Span> {
    let mut out = Vec::new();
    for s in a {
        let mut next = s.start;
        let mut rest = true;
        for t in b.iter().filter(|t| t.end >= s.start && t.start <= s.end) {
            if t.start > next {
                out.push(Span {
                    start: next,
                    end: t.start - 1,
                });
            }
            if t.end >= s.end {
                rest = false;
                break;
            }
            next = next.max(t.end + 1);
        }
        if rest {
            out.push(Span {
                start: next,
                end: s.end,
            });
        }
    }
    out
}

/// The fewest CIDRs that spell `span`, for readable messages.
pub fn span_cidrs(family: Family, span: Span) -> Vec<String> {
    let bits = family.bits();
    let mut out = Vec::new();
    let mut start = span.start;
    loop {
        let aligned = start.trailing_zeros().min(bits);
        let count_minus_one = span.end - start;
        let fits = if count_minus_one == u128::MAX {
            128
        } else {
            127 - (count_minus_one + 1).leading_zeros()
        };
        let k = aligned.min(fits);
        out.push(format!("{}/{}", family.show(start), bits - k));
        let block_end = if k == 128 {
            u128::MAX
        } else {
            start + ((1u128 << k) - 1)
        };
        if block_end >= span.end {
            return out;
        }
        start = block_end + 1;
    }
}

fn show_ports(ports: Ports) -> String {
    if ports.0 == ports.1 {
        ports.0.to_string()
    } else {
        format!("{}-{}", ports.0, ports.1)
    }
}

/// One elementary port interval of a (family, protocol), with the addresses allowed on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    pub ports: Ports,
    pub addrs: Vec<Span>,
}

/// What a ruleset allows by address: (family, protocol) -> port slices. Always canonical (built
/// by `AddrBuilder`), so `==` means "allows exactly the same packets".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddrRelation(BTreeMap<(Family, Proto), Vec<Slice>>);

/// Collects (family, protocol, addresses, ports) in any spelling; `build` makes it canonical.
#[derive(Debug, Default)]
pub struct AddrBuilder(Vec<(Family, Proto, Span, Ports)>);

impl AddrBuilder {
    pub fn add(&mut self, family: Family, proto: Proto, addrs: Span, ports: Ports) {
        self.0.push((family, proto, addrs, ports));
    }

    pub fn build(self) -> AddrRelation {
        let mut by_key: BTreeMap<(Family, Proto), Vec<(Span, Ports)>> = BTreeMap::new();
        for (family, proto, span, ports) in self.0 {
            by_key
                .entry((family, proto))
                .or_default()
                .push((span, ports));
        }
        let mut out = BTreeMap::new();
        for (key, items) in by_key {
            // Every range boundary cuts the port space; between two cuts, each item either
            // covers the whole interval or none of it.
            let mut cuts: Vec<u32> = items
                .iter()
                .flat_map(|(_, (a, b))| [u32::from(*a), u32::from(*b) + 1])
                .collect();
            cuts.sort_unstable();
            cuts.dedup();
            let mut slices: Vec<Slice> = Vec::new();
            for w in cuts.windows(2) {
                let (lo, hi) = (w[0], w[1] - 1);
                let addrs = merge_spans(
                    items
                        .iter()
                        .filter(|(_, (a, b))| u32::from(*a) <= lo && lo <= u32::from(*b))
                        .map(|(span, _)| *span)
                        .collect(),
                );
                if addrs.is_empty() {
                    continue;
                }
                // Both ends are port numbers: `hi` < the largest cut <= 65536.
                let (lo, hi) = (lo as u16, hi as u16);
                match slices.last_mut() {
                    Some(last)
                        if u32::from(last.ports.1) + 1 == u32::from(lo) && last.addrs == addrs =>
                    {
                        last.ports.1 = hi;
                    }
                    _ => slices.push(Slice {
                        ports: (lo, hi),
                        addrs,
                    }),
                }
            }
            if !slices.is_empty() {
                out.insert(key, slices);
            }
        }
        AddrRelation(out)
    }
}

impl AddrRelation {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Only the (family, protocol) pairs `keep` accepts.
    pub fn only(&self, keep: impl Fn(Family, Proto) -> bool) -> AddrRelation {
        AddrRelation(
            self.0
                .iter()
                .filter(|((f, p), _)| keep(*f, *p))
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
        )
    }

    fn addrs_at(&self, key: (Family, Proto), port: u32) -> &[Span] {
        self.0
            .get(&key)
            .and_then(|slices| {
                slices
                    .iter()
                    .find(|s| u32::from(s.ports.0) <= port && port <= u32::from(s.ports.1))
            })
            .map_or(&[], |s| &s.addrs)
    }

    /// Whether one packet to `addr` (an integer of `family`) on `proto`/`port` is allowed.
    pub fn allows(&self, family: Family, proto: Proto, addr: u128, port: u16) -> bool {
        self.addrs_at((family, proto), u32::from(port))
            .iter()
            .any(|s| s.start <= addr && addr <= s.end)
    }

    /// What `self` allows and `other` doesn't.
    pub fn minus(&self, other: &AddrRelation) -> AddrRelation {
        let mut out = AddrBuilder::default();
        for (&key, slices) in &self.0 {
            let mut cuts: Vec<u32> = slices
                .iter()
                .chain(other.0.get(&key).into_iter().flatten())
                .flat_map(|s| [u32::from(s.ports.0), u32::from(s.ports.1) + 1])
                .collect();
            cuts.sort_unstable();
            cuts.dedup();
            for w in cuts.windows(2) {
                let left = subtract_spans(self.addrs_at(key, w[0]), other.addrs_at(key, w[0]));
                for span in left {
                    out.add(key.0, key.1, span, (w[0] as u16, (w[1] - 1) as u16));
                }
            }
        }
        out.build()
    }
}

impl fmt::Display for AddrRelation {
    /// One line per slice: `v4 tcp 80: 10.20.0.0/23 10.30.0.0/16`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return writeln!(f, "  (nothing)");
        }
        for ((family, proto), slices) in &self.0 {
            for s in slices {
                let addrs: Vec<String> = s
                    .addrs
                    .iter()
                    .flat_map(|span| span_cidrs(*family, *span))
                    .collect();
                writeln!(
                    f,
                    "  {} {} {}: {}",
                    family.name(),
                    proto.name(),
                    show_ports(s.ports),
                    addrs.join(" ")
                )?;
            }
        }
        Ok(())
    }
}

/// Ok when both allow the same; else what one allows and the other doesn't.
pub fn check_same_addrs(actual: &AddrRelation, expected: &AddrRelation) -> Result<(), String> {
    if actual == expected {
        return Ok(());
    }
    Err(format!(
        "the addresses allowed differ from the list.\nallowed but not listed:\n{}listed but not allowed:\n{}",
        actual.minus(expected),
        expected.minus(actual)
    ))
}

/// Sorted, with overlapping and adjacent ranges merged.
fn merge_ports(mut ports: Vec<Ports>) -> Vec<Ports> {
    ports.sort_unstable();
    let mut out: Vec<Ports> = Vec::with_capacity(ports.len());
    for p in ports {
        match out.last_mut() {
            Some(last) if u32::from(p.0) <= u32::from(last.1) + 1 => last.1 = last.1.max(p.1),
            _ => out.push(p),
        }
    }
    out
}

/// Lowercase, without a trailing dot: how DNS compares names.
pub fn normalize_name(name: &str) -> String {
    let name = name.to_ascii_lowercase();
    name.strip_suffix('.').map(str::to_owned).unwrap_or(name)
}

/// Which names a ruleset allows on which ports, for one protocol: exact names, and wildcards
/// (`w` stands for `.w`: w itself and every name below it).
#[derive(Debug, Clone, Default)]
pub struct NameRelation {
    exact: BTreeMap<String, Vec<Ports>>,
    wild: BTreeMap<String, Vec<Ports>>,
}

impl NameRelation {
    pub fn add_exact(&mut self, name: &str, ports: Ports) {
        self.exact
            .entry(normalize_name(name))
            .or_default()
            .push(ports);
    }

    pub fn add_wildcard(&mut self, apex: &str, ports: Ports) {
        self.wild
            .entry(normalize_name(apex))
            .or_default()
            .push(ports);
    }

    pub fn has_wildcards(&self) -> bool {
        !self.wild.is_empty()
    }

    /// What a resolver that matches a name with everything below it (dnsmasq's `/name/`)
    /// makes of the list: every exact name becomes a wildcard too.
    pub fn as_zones(&self) -> NameRelation {
        let mut wild = self.wild.clone();
        for (name, ports) in &self.exact {
            wild.entry(name.clone())
                .or_default()
                .extend(ports.iter().copied());
        }
        NameRelation {
            exact: BTreeMap::new(),
            wild,
        }
    }

    /// Every name listed, exact or a wildcard's apex.
    pub fn listed(&self) -> BTreeSet<String> {
        self.exact.keys().chain(self.wild.keys()).cloned().collect()
    }

    /// The same without its wildcards (what a target that can't express them must still allow).
    pub fn exact_only(&self) -> NameRelation {
        NameRelation {
            exact: self.exact.clone(),
            wild: BTreeMap::new(),
        }
    }

    /// The ports allowed to `name`, merged.
    pub fn allowed(&self, name: &str) -> Vec<Ports> {
        let exact = self.exact.get(name).into_iter().flatten();
        let wild = self
            .wild
            .iter()
            .filter(|(w, _)| {
                name == w.as_str()
                    || name
                        .strip_suffix(w.as_str())
                        .is_some_and(|head| head.ends_with('.'))
            })
            .flat_map(|(_, ports)| ports);
        merge_ports(exact.chain(wild).copied().collect())
    }

    /// Every name either side mentions, each wildcard's apex and a name below it, and a name
    /// that nothing matches.
    fn probes<'a>(relations: impl IntoIterator<Item = &'a NameRelation>) -> BTreeSet<String> {
        let mut probes = BTreeSet::from(["zzprobe-matches-nothing.invalid".to_owned()]);
        for r in relations {
            probes.extend(r.exact.keys().cloned());
            for w in r.wild.keys() {
                probes.insert(w.clone());
                probes.insert(format!("zzprobe.{w}"));
            }
        }
        probes
    }
}

fn show_port_list(ports: &[Ports]) -> String {
    if ports.is_empty() {
        return "no port".into();
    }
    ports
        .iter()
        .map(|&p| show_ports(p))
        .collect::<Vec<_>>()
        .join(",")
}

/// Ok when every probe name gets the same ports on both sides.
pub fn check_same_names(actual: &NameRelation, expected: &NameRelation) -> Result<(), String> {
    let diffs: Vec<String> = NameRelation::probes([actual, expected])
        .into_iter()
        .filter_map(|name| {
            let (a, e) = (actual.allowed(&name), expected.allowed(&name));
            (a != e).then(|| {
                format!(
                    "  {name}: allowed {}, listed {}",
                    show_port_list(&a),
                    show_port_list(&e)
                )
            })
        })
        .collect();
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the names allowed differ from the list:\n{}",
            diffs.join("\n")
        ))
    }
}

/// What a user selects on top of the list, as the config file spells it: filters and
/// exclusions. Empty `protocols` or `families` keep everything.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub necessary_only: bool,
    pub exact_domains: bool,
    pub protocols: Vec<Proto>,
    /// `ipv4`, `ipv6`, `dns`.
    pub families: Vec<&'static str>,
    /// `a.example.com` for one name, `*.example.com` or `.example.com` for a zone.
    pub exclude_domains: Vec<String>,
    /// Addresses and CIDRs, without host bits.
    pub exclude_cidrs: Vec<String>,
}

impl Selection {
    fn keeps_family(&self, family: &str) -> bool {
        self.families.is_empty() || self.families.contains(&family)
    }

    fn keeps_proto(&self, proto: Proto) -> bool {
        self.protocols.is_empty() || self.protocols.contains(&proto)
    }
}

/// The public suffixes (of at least two labels: one label is no valid name) that the tests'
/// lists use, written out by hand from the Public Suffix List rather than read from a crate.
const PUBLIC_SUFFIXES: &[&str] = &["com.cn", "co.uk", "github.io", "net.cn", "org.uk"];

/// True when `name` is `apex` or lies below it.
fn within(name: &str, apex: &str) -> bool {
    name == apex
        || name
            .strip_suffix(apex)
            .is_some_and(|head| head.ends_with('.'))
}

/// The excluded names: (name, true for a zone).
fn excluded_names(sel: &Selection) -> Vec<(String, bool)> {
    sel.exclude_domains
        .iter()
        .map(|d| {
            let d = normalize_name(d);
            match d.strip_prefix("*.").or_else(|| d.strip_prefix('.')) {
                Some(apex) => (apex.to_owned(), true),
                None => (d, false),
            }
        })
        .collect()
}

/// What is left of one name destination after the exclusions: `Ok(true)` kept, `Ok(false)`
/// excluded, `Err` when an exclusion lies inside a kept wildcard, which no target can express.
fn name_survives(name: &str, wildcard: bool, excluded: &[(String, bool)]) -> Result<bool, String> {
    if wildcard {
        if excluded.iter().any(|(x, zone)| *zone && within(name, x)) {
            return Ok(false);
        }
        if let Some((x, _)) = excluded.iter().find(|(x, _)| within(x, name)) {
            return Err(format!(
                "the exclusion {x} lies inside the wildcard .{name}"
            ));
        }
        return Ok(true);
    }
    Ok(!excluded
        .iter()
        .any(|(x, zone)| if *zone { within(name, x) } else { name == x }))
}

/// What a fixture allows, read straight from its JSON.
#[derive(Debug, Default)]
pub struct Expected {
    pub addrs: AddrRelation,
    names: BTreeMap<Proto, NameRelation>,
}

impl Expected {
    /// Reads a fixture; panics with the file and the reason on anything unexpected.
    pub fn from_fixture(path: &Path) -> Expected {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        Expected::from_json(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    pub fn from_json(text: &str) -> Result<Expected, String> {
        Expected::selected(text, &Selection::default())
    }

    /// What the list allows once `sel` is applied; `Err` for a list or a selection the tool
    /// must refuse (a bad field, host bits, an exclusion inside a wildcard).
    pub fn selected(text: &str, sel: &Selection) -> Result<Expected, String> {
        let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let mut addrs = AddrBuilder::default();
        let mut names: BTreeMap<Proto, NameRelation> = BTreeMap::new();
        for (i, item) in list(&doc, "ip_list")?.iter().enumerate() {
            let at = |e: String| format!("ip_list[{i}]: {e}");
            let (family, span) = parse_net_strict(string(item, "ip").map_err(at)?).map_err(at)?;
            let (protos, ports, necessary) = protocols_and_ports(item).map_err(at)?;
            let family_name = match family {
                Family::V4 => "ipv4",
                Family::V6 => "ipv6",
            };
            if (sel.necessary_only && !necessary) || !sel.keeps_family(family_name) {
                continue;
            }
            for &proto in protos.iter().filter(|p| sel.keeps_proto(**p)) {
                for &p in &ports {
                    addrs.add(family, proto, span, p);
                }
            }
        }
        let excluded = excluded_names(sel);
        let mut carve: Option<String> = None;
        for (i, item) in list(&doc, "domain_list")?.iter().enumerate() {
            let at = |e: String| format!("domain_list[{i}]: {e}");
            let domain = normalize_name(string(item, "domain").map_err(at)?);
            let universal = universal(item).map_err(at)?;
            let (protos, ports, necessary) = protocols_and_ports(item).map_err(at)?;
            if (sel.necessary_only && !necessary) || !sel.keeps_family("dns") {
                continue;
            }
            let protos: Vec<Proto> = protos.into_iter().filter(|p| sel.keeps_proto(*p)).collect();
            if protos.is_empty() {
                continue;
            }
            // A wildcard stands for one owner's zone: not over a public suffix, and a universal
            // domain only for the domain itself or a parent of it (ignored with exact domains).
            let apex = domain.strip_prefix("*.");
            if let Some(apex) = apex.filter(|a| PUBLIC_SUFFIXES.contains(a)) {
                return Err(at(format!("the wildcard *.{apex} is over a public suffix")));
            }
            if let (Some(u), false) = (&universal, sel.exact_domains) {
                if PUBLIC_SUFFIXES.contains(&u.as_str()) {
                    return Err(at(format!("universal {u} is a public suffix")));
                }
                if !within(apex.unwrap_or(&domain), u) {
                    return Err(at(format!("universal {u} is not {domain} nor a parent")));
                }
            }
            let mut dests = vec![match domain.strip_prefix("*.") {
                Some(apex) => (apex.to_owned(), true),
                None => (domain.clone(), false),
            }];
            if let (Some(apex), false) = (universal, sel.exact_domains) {
                dests.push((apex, true));
            }
            for (name, wildcard) in dests {
                match name_survives(&name, wildcard, &excluded) {
                    Ok(false) => {}
                    Ok(true) => {
                        for &proto in &protos {
                            let rel = names.entry(proto).or_default();
                            for &p in &ports {
                                if wildcard {
                                    rel.add_wildcard(&name, p);
                                } else {
                                    rel.add_exact(&name, p);
                                }
                            }
                        }
                    }
                    Err(e) => {
                        carve.get_or_insert(at(e));
                    }
                }
            }
        }
        // Checked after every entry was read: a bad field anywhere is reported first.
        if let Some(e) = carve {
            return Err(e);
        }
        let mut out = AddrBuilder::default();
        for cidr in &sel.exclude_cidrs {
            let (family, span) = parse_net_strict(cidr).map_err(|e| format!("exclude: {e}"))?;
            for proto in Proto::BOTH {
                out.add(family, proto, span, ALL_PORTS);
            }
        }
        Ok(Expected {
            addrs: addrs.build().minus(&out.build()),
            names,
        })
    }

    /// The names allowed over `proto`.
    pub fn names(&self, proto: Proto) -> NameRelation {
        self.names.get(&proto).cloned().unwrap_or_default()
    }

    /// True when some name is allowed through a wildcard.
    pub fn has_wildcards(&self) -> bool {
        self.names.values().any(NameRelation::has_wildcards)
    }
}

/// `universal_domian` (sic, the API's spelling) or `universal_domain`: the apex of a wildcard,
/// or none when missing, null or empty. Both present must agree.
fn universal(item: &Value) -> Result<Option<String>, String> {
    let read = |key: &str| -> Result<Option<String>, String> {
        match item.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => {
                let s = normalize_name(s);
                let bare = s
                    .strip_prefix("*.")
                    .or_else(|| s.strip_prefix('.'))
                    .unwrap_or(&s);
                Ok(Some(bare.to_owned()))
            }
            Some(other) => Err(format!("{key} {other} is not a string")),
        }
    };
    let (typo, fixed) = (read("universal_domian")?, read("universal_domain")?);
    match (item.get("universal_domian"), item.get("universal_domain")) {
        (Some(_), Some(_)) if typo != fixed => Err(format!(
            "universal_domian {typo:?} and universal_domain {fixed:?} differ"
        )),
        (_, Some(_)) => Ok(fixed),
        _ => Ok(typo),
    }
}

fn list<'a>(doc: &'a Value, key: &str) -> Result<&'a [Value], String> {
    match doc.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(format!("{key} is not a list: {other}")),
    }
}

fn string<'a>(item: &'a Value, key: &str) -> Result<&'a str, String> {
    item.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{key} is missing or not a string"))
}

/// `protocol` ("TCP", "udp", "TCP/UDP"), `port` (ints, numeric strings, "a-b") and
/// `is_necessary` (0, 1, true, false).
fn protocols_and_ports(item: &Value) -> Result<(Vec<Proto>, Vec<Ports>, bool), String> {
    let words: Vec<&str> = match item.get("protocol") {
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| format!("protocol {v} is not a string"))
            })
            .collect::<Result<_, _>>()?,
        other => return Err(format!("protocol {other:?} is not a string")),
    };
    let mut protos: Vec<Proto> = words
        .iter()
        .flat_map(|w| w.split(['/', ',']))
        .map(Proto::parse)
        .collect::<Result<_, _>>()?;
    protos.sort_unstable();
    protos.dedup();

    let items: Vec<&Value> = match item.get("port") {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(single @ (Value::Number(_) | Value::String(_))) => vec![single],
        other => return Err(format!("port {other:?} is not a list")),
    };
    let ports: Vec<Ports> = items
        .into_iter()
        .map(|v| match v {
            Value::Number(n) => n
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .map(|p| (p, p))
                .ok_or_else(|| format!("port {n} is not a port number")),
            Value::String(s) => parse_port_range(s, '-'),
            other => Err(format!("port {other} is not a port")),
        })
        .collect::<Result<_, _>>()?;
    if protos.is_empty() || ports.is_empty() || ports.iter().any(|p| p.0 == 0) {
        return Err("needs a protocol and ports within 1-65535".into());
    }

    let necessary = match item.get("is_necessary") {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) if matches!(n.as_u64(), Some(0 | 1)) => n.as_u64() == Some(1),
        other => return Err(format!("is_necessary {other:?} is not 0, 1, true or false")),
    };
    Ok((protos, ports, necessary))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relation(items: &[(&str, Proto, Ports)]) -> AddrRelation {
        let mut b = AddrBuilder::default();
        for &(net, proto, ports) in items {
            let (family, span) = parse_net(net).unwrap();
            b.add(family, proto, span, ports);
        }
        b.build()
    }

    const TCP: Proto = Proto::Tcp;

    #[test]
    fn two_adjacent_halves_equal_the_whole() {
        assert_eq!(
            relation(&[
                ("10.0.0.0/25", TCP, (443, 443)),
                ("10.0.0.128/25", TCP, (443, 443))
            ]),
            relation(&[("10.0.0.0/24", TCP, (443, 443))])
        );
        assert_eq!(
            relation(&[
                ("2001:db8::/33", TCP, (1, 9)),
                ("2001:db8:8000::/33", TCP, (1, 9))
            ]),
            relation(&[("2001:db8::/32", TCP, (1, 9))])
        );
    }

    #[test]
    fn a_host_inside_a_network_with_the_same_ports_disappears() {
        assert_eq!(
            relation(&[("10.0.0.0/24", TCP, (80, 80)), ("10.0.0.5", TCP, (80, 80))]),
            relation(&[("10.0.0.0/24", TCP, (80, 80))])
        );
        // With fewer ports too: the network already allows them.
        assert_eq!(
            relation(&[
                ("10.0.0.0/24", TCP, (80, 443)),
                ("10.0.0.5", TCP, (100, 100))
            ]),
            relation(&[("10.0.0.0/24", TCP, (80, 443))])
        );
    }

    #[test]
    fn different_ports_protocols_and_families_stay_distinct() {
        let base = relation(&[("10.0.0.0/24", TCP, (80, 80))]);
        assert_ne!(base, relation(&[("10.0.0.0/24", TCP, (443, 443))]));
        assert_ne!(base, relation(&[("10.0.0.0/24", TCP, (80, 81))]));
        assert_ne!(base, relation(&[("10.0.0.0/24", Proto::Udp, (80, 80))]));
        assert_ne!(base, relation(&[("10.0.0.0/23", TCP, (80, 80))]));
        // ::a00:0/120 has the same integers as 10.0.0.0/24, in the other family.
        assert_ne!(base, relation(&[("::a00:0/120", TCP, (80, 80))]));
        assert_ne!(
            relation(&[("10.0.0.1", TCP, (80, 80)), ("10.0.0.2", TCP, (443, 443))]),
            relation(&[("10.0.0.1", TCP, (443, 443)), ("10.0.0.2", TCP, (80, 80))])
        );
    }

    #[test]
    fn port_lists_and_ranges_in_any_spelling_compare_equal() {
        let split = relation(&[
            ("10.0.0.1", TCP, (80, 80)),
            ("10.0.0.1", TCP, (81, 90)),
            ("10.0.0.2", TCP, (85, 100)),
        ]);
        let regrouped = relation(&[
            ("10.0.0.1", TCP, (80, 84)),
            ("10.0.0.1", TCP, (85, 90)),
            ("10.0.0.2", TCP, (85, 90)),
            ("10.0.0.2", TCP, (91, 100)),
            ("10.0.0.2", TCP, (88, 88)),
        ]);
        assert_eq!(split, regrouped);
        assert_eq!(
            split.to_string(),
            "  v4 tcp 80-84: 10.0.0.1/32\n  v4 tcp 85-90: 10.0.0.1/32 10.0.0.2/32\n  v4 tcp 91-100: 10.0.0.2/32\n"
        );
        // 10.0.0.0/31 holds 10.0.0.0 too: another relation.
        let wider = relation(&[
            ("10.0.0.1", TCP, (80, 84)),
            ("10.0.0.0/31", TCP, (85, 90)),
            ("10.0.0.2", TCP, (85, 100)),
        ]);
        assert_ne!(split, wider);
    }

    #[test]
    fn the_difference_is_what_one_side_allows_alone() {
        let wide = relation(&[("10.0.0.0/24", TCP, (0, 65535))]);
        let narrow = relation(&[("10.0.0.0/25", TCP, (443, 443))]);
        assert!(narrow.minus(&wide).is_empty());
        let extra = wide.minus(&narrow);
        assert_eq!(
            extra.to_string(),
            "  v4 tcp 0-442: 10.0.0.0/24\n  v4 tcp 443: 10.0.0.128/25\n  v4 tcp 444-65535: 10.0.0.0/24\n"
        );
        let all = relation(&[("::/0", Proto::Udp, ALL_PORTS)]);
        assert_eq!(all.to_string(), "  v6 udp 0-65535: ::/0\n");
        assert!(check_same_addrs(&all, &all).is_ok());
        assert!(check_same_addrs(&wide, &narrow).is_err());
    }

    #[test]
    fn spans_print_as_the_fewest_cidrs() {
        let (f, s) = parse_net("10.0.0.0/23").unwrap();
        assert_eq!(span_cidrs(f, s), ["10.0.0.0/23"]);
        let odd = Span {
            start: s.start + 1,
            end: s.start + 6,
        };
        assert_eq!(
            span_cidrs(f, odd),
            ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]
        );
        assert_eq!(
            span_cidrs(Family::V4, Family::V4.everything()),
            ["0.0.0.0/0"]
        );
    }

    #[test]
    fn names_compare_by_probing() {
        let mut wild = NameRelation::default();
        wild.add_wildcard("x.com", (443, 443));
        let mut spelled = NameRelation::default();
        spelled.add_wildcard("X.com.", (443, 443));
        spelled.add_exact("x.com", (443, 443));
        spelled.add_exact("a.x.com", (443, 443));
        assert!(check_same_names(&wild, &spelled).is_ok());

        // The exact names alone miss the rest of the zone.
        let err = check_same_names(&wild.exact_only(), &spelled.exact_only()).unwrap_err();
        assert!(
            err.contains("a.x.com: allowed no port, listed 443"),
            "{err}"
        );
        let mut exact = NameRelation::default();
        exact.add_exact("x.com", (443, 443));
        let err = check_same_names(&exact, &wild).unwrap_err();
        assert!(
            err.contains("zzprobe.x.com: allowed no port, listed 443"),
            "{err}"
        );
        // `ax.com` is not below `x.com`.
        assert_eq!(wild.allowed("ax.com"), []);
        let mut other_port = NameRelation::default();
        other_port.add_wildcard("x.com", (80, 80));
        assert!(check_same_names(&wild, &other_port).is_err());
    }

    #[test]
    fn a_selection_filters_excludes_and_refuses_what_no_target_can_express() {
        let doc = r#"{"ip_list":[
            {"ip":"101.0.0.0/24","protocol":"TCP/UDP","port":[443],"is_necessary":1},
            {"ip":"101.0.1.1","protocol":"TCP","port":[80],"is_necessary":0}],
            "domain_list":[
            {"domain":"a.work.example.com","universal_domain":"work.example.com","protocol":"TCP","port":[443],"is_necessary":1},
            {"domain":"b.example.org","protocol":"UDP","port":[3478],"is_necessary":0}]}"#;
        let e = Expected::selected(
            doc,
            &Selection {
                necessary_only: true,
                protocols: vec![Proto::Tcp],
                exclude_cidrs: vec!["101.0.0.128/25".into()],
                ..Selection::default()
            },
        )
        .unwrap();
        assert_eq!(e.addrs.to_string(), "  v4 tcp 443: 101.0.0.0/25\n");
        let tcp = e.names(Proto::Tcp);
        assert_eq!(tcp.allowed("x.work.example.com"), [(443, 443)]);
        assert!(e.has_wildcards() && e.names(Proto::Udp).allowed("b.example.org").is_empty());

        let only = |exclude: &[&str], exact_domains: bool| {
            Expected::selected(
                doc,
                &Selection {
                    exact_domains,
                    families: vec!["dns"],
                    exclude_domains: exclude.iter().map(|d| d.to_string()).collect(),
                    ..Selection::default()
                },
            )
        };
        // A name inside a kept wildcard can't be cut out, in either order of the exclusions.
        assert!(only(&["x.work.example.com"], false).is_err());
        assert!(only(&["x.work.example.com", "*.example.com"], false).is_ok());
        assert!(only(&["*.example.com", "x.work.example.com"], false).is_ok());
        let e = only(&["a.work.example.com"], true).unwrap();
        assert!(e.addrs.is_empty() && !e.has_wildcards());
        assert_eq!(e.names(Proto::Udp).allowed("b.example.org"), [(3478, 3478)]);
        assert!(e.names(Proto::Tcp).allowed("a.work.example.com").is_empty());

        for bad in [
            r#"{"ip_list":[{"ip":"101.0.0.1/24","protocol":"TCP","port":[1],"is_necessary":1}]}"#,
            r#"{"domain_list":[{"domain":"a.example.com","universal_domian":"example.com","universal_domain":"a.example.com","protocol":"TCP","port":[1],"is_necessary":1}]}"#,
        ] {
            assert!(Expected::from_json(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_the_documented_shapes() {
        let e = Expected::from_json(
            r#"{"errcode":0,
            "ip_list":[{"ip":"10.0.0.0/24","protocol":"TCP/UDP","port":[443,"80","8000-8100"],"is_necessary":true},
                       {"ip":"2001:DB8::1","protocol":"udp","port":[53],"is_necessary":0}],
            "domain_list":[{"domain":"A.Example.COM.","universal_domian":"example.com","protocol":"TCP","port":[443],"is_necessary":1},
                           {"domain":"*.wild.example.net","universal_domian":null,"protocol":"tcp","port":[80],"is_necessary":false},
                           {"domain":"b.example.org","universal_domian":"","protocol":"UDP","port":["3478"],"is_necessary":1}]}"#,
        )
        .unwrap();
        assert_eq!(
            e.addrs.to_string(),
            "  v4 tcp 80: 10.0.0.0/24\n  v4 tcp 443: 10.0.0.0/24\n  v4 tcp 8000-8100: 10.0.0.0/24\n  \
             v4 udp 80: 10.0.0.0/24\n  v4 udp 443: 10.0.0.0/24\n  v4 udp 8000-8100: 10.0.0.0/24\n  \
             v6 udp 53: 2001:db8::1/128\n"
        );
        let tcp = e.names(Proto::Tcp);
        assert_eq!(tcp.allowed("a.example.com"), [(443, 443)]);
        assert_eq!(tcp.allowed("example.com"), [(443, 443)]);
        assert_eq!(tcp.allowed("wild.example.net"), [(80, 80)]);
        assert_eq!(tcp.allowed("b.example.org"), []);
        assert_eq!(tcp.exact_only().allowed("example.com"), []);
        assert_eq!(e.names(Proto::Udp).allowed("b.example.org"), [(3478, 3478)]);
        for bad in [
            r#"{"ip_list":[{"ip":"10.0.0.0/33","protocol":"TCP","port":[1],"is_necessary":1}]}"#,
            r#"{"ip_list":[{"ip":"10.0.0.1","protocol":"ICMP","port":[1],"is_necessary":1}]}"#,
            r#"{"ip_list":[{"ip":"10.0.0.1","protocol":"TCP","port":[],"is_necessary":1}]}"#,
            r#"{"ip_list":[{"ip":"10.0.0.1","protocol":"TCP","port":["9-8"],"is_necessary":1}]}"#,
            r#"{"ip_list":[{"ip":"10.0.0.1","protocol":"TCP","port":[1],"is_necessary":2}]}"#,
        ] {
            assert!(Expected::from_json(bad).is_err(), "{bad}");
        }
    }
}
