//! From validated entries to a `Policy`: filter, expand, group by (family, protocol, ports),
//! aggregate CIDRs and drop every value another one already covers, in a deterministic order.
//!
//! The invariant every step keeps: the set of (address or name, protocol, port) that the policy
//! allows is exactly the set the selected entries list. Only the spelling gets shorter.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use ipnet::IpNet;

use crate::error::{Error, Result};
use crate::model::{Dest, Entry, Family, Hostname, Note, PortSet, Protocol, Text};

pub mod ranges;

use ranges::{AddrSet, RangeSet};

/// The user's choices that change what is allowed, not how it is spelled.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub necessary_only: bool,
    pub exact_domains: bool,
    pub allow_empty: bool,
    pub allow_broad: bool,
    /// Let WeCom's list hold addresses that are not publicly reachable (see `special`).
    pub allow_nonpublic: bool,
    /// The protocols to keep; empty keeps all.
    pub protocols: Vec<Protocol>,
    /// The families to keep (`Dns` for names); empty keeps all.
    pub families: Vec<Family>,
    pub exclude: Exclude,
}

/// Destinations taken out of the list whatever it says.
#[derive(Debug, Clone, Default)]
pub struct Exclude {
    /// `Dest::Exact` takes out one name, `Dest::Wildcard` a name and all below it.
    pub names: Vec<Dest>,
    /// Addresses: an entry inside one is dropped, an entry around one is split around it.
    pub nets: Vec<IpNet>,
}

/// One rule's worth of destinations: all share the family, the protocol and the port set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub family: Family,
    pub protocol: Protocol,
    pub ports: PortSet,
    pub members: Vec<Member>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub dest: Dest,
    /// Every entry that contributed, for comments and pfSense details.
    pub notes: Notes,
}

/// A member's notes, sorted, each once. A list has few distinct sets of notes and many
/// members, so each set is made once per policy and its members share it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Notes(Arc<[Note]>);

impl Notes {
    pub fn iter(&self) -> std::slice::Iter<'_, Note> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The same set as `other`, shared (not merely equal): a reader may keep what it makes of
    /// a set by this identity.
    pub fn same(&self, other: &Notes) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// An identity for `same`, to key a map with while the set lives.
    pub fn id(&self) -> usize {
        Arc::as_ptr(&self.0).cast::<Note>() as usize
    }

    /// The notes of both.
    pub fn union(&self, other: &Notes) -> Notes {
        if self.same(other) || other.is_empty() {
            return self.clone();
        }
        if self.is_empty() {
            return other.clone();
        }
        self.iter().chain(other.iter()).cloned().collect()
    }
}

impl FromIterator<Note> for Notes {
    fn from_iter<I: IntoIterator<Item = Note>>(notes: I) -> Notes {
        let mut notes: Vec<Note> = notes.into_iter().collect();
        notes.sort_unstable();
        notes.dedup();
        Notes(notes.into())
    }
}

impl<'a> IntoIterator for &'a Notes {
    type Item = &'a Note;
    type IntoIter = std::slice::Iter<'a, Note>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Sorted by (family, protocol, ports); none is empty.
    pub groups: Vec<Group>,
    /// Wildcards the target can't express, sorted: they are reported, not enforced.
    pub inexpressible: Vec<Hostname>,
}

/// The shortest prefixes that are still allowed without `--allow-broad`.
const MIN_PREFIX_V4: u8 = 8;
const MIN_PREFIX_V6: u8 = 16;

/// Applies the filters, the exclusions and the guards that concern the list as a whole, once
/// for every target.
pub fn select(entries: Vec<Entry>, opts: &Options) -> Result<Vec<Entry>> {
    let listed = entries.len();
    // The config's extra addresses are the user's own, and so is a listed address inside one:
    // a source.json holds the extras, and building from it with the same config must work.
    let own: Vec<IpNet> = entries
        .iter()
        .filter(|e| e.extra)
        .filter_map(|e| match e.dest {
            Dest::Net(n) => Some(n),
            _ => None,
        })
        .collect();
    let excluded = AddrSet::from_nets(&opts.exclude.nets);
    // Entries stay in place, in their order. An address split around exclusions keeps its
    // first piece there; the others wait in `split` for their place after it.
    let mut entries = entries;
    let mut failed = None;
    let mut kept = 0;
    let mut split: Vec<(usize, Vec<IpNet>)> = Vec::new();
    entries.retain_mut(|e| {
        if failed.is_some() || (opts.necessary_only && !e.necessary) {
            return false;
        }
        if !opts.protocols.is_empty() {
            e.protocols.retain(|p| opts.protocols.contains(p));
            if e.protocols.is_empty() {
                return false;
            }
        }
        if !opts.families.is_empty() && !opts.families.contains(&e.dest.family()) {
            return false;
        }
        match wildcard_scope(e, opts).and_then(|()| exclude(e, opts, &excluded)) {
            Err(error) => {
                failed = Some(error);
                false
            }
            Ok(None) => false,
            Ok(Some(rest)) => {
                if !rest.is_empty() {
                    split.push((kept, rest));
                }
                kept += 1;
                true
            }
        }
    });
    if let Some(error) = failed {
        return Err(error);
    }
    let selected = if split.is_empty() {
        entries
    } else {
        let pieces: usize = split.iter().map(|(_, rest)| rest.len()).sum();
        let mut out = Vec::with_capacity(entries.len() + pieces);
        let mut split = split.into_iter().peekable();
        for (i, e) in entries.into_iter().enumerate() {
            let rest = split.next_if(|(at, _)| *at == i).map(|(_, rest)| rest);
            let pieces: Vec<Entry> = rest
                .unwrap_or_default()
                .into_iter()
                .map(|n| Entry {
                    dest: Dest::Net(n),
                    ..e.clone()
                })
                .collect();
            out.push(e);
            out.extend(pieces);
        }
        out
    };
    if selected.is_empty() && !opts.allow_empty {
        let why = if listed == 0 {
            "the list has no entries".to_owned()
        } else {
            format!("the allowlist is empty after filtering its {listed} entries")
        };
        return Err(Error::Guard(format!(
            "{why}; applying it would block WeCom entirely (--allow-empty to proceed)"
        )));
    }
    if !opts.allow_broad {
        let survey = Survey::of(&selected);
        if let Some(e) = survey.broad.map(|i| &selected[i]) {
            return Err(Error::Guard(format!(
                "{}.ip: {} is broader than /{MIN_PREFIX_V4} (IPv4) or /{MIN_PREFIX_V6} (IPv6) (--allow-broad to proceed)",
                e.location(),
                e.dest
            )));
        }
        if !survey.few_ports {
            too_many_ports(&selected, opts)?;
        }
        if survey.may_hold_a_block(&selected) {
            broad_union(&selected)?;
        }
    }
    if !opts.allow_nonpublic {
        for e in &selected {
            let Dest::Net(n) = &e.dest else { continue };
            if own.iter().any(|o| o.contains(n)) {
                continue;
            }
            if let Some(block) = crate::special::non_public(n) {
                let shown = if n.prefix_len() == n.max_prefix_len() {
                    n.addr().to_string()
                } else {
                    n.to_string()
                };
                return Err(Error::Guard(format!(
                    "{}.ip: {} {} {} ({}), which is not publicly reachable; WeCom lists public addresses only (--allow-nonpublic to proceed; an address of your own belongs under [[extra.ip_list]] in the config)",
                    e.location(),
                    crate::text::quote(&shown),
                    if block.net.contains(n) { "lies inside" } else { "overlaps" },
                    block.net,
                    block.name
                )));
            }
        }
    }
    Ok(selected)
}

/// True when `name` is on the Public Suffix List (`com.cn`, `co.uk`, `github.io`): names
/// below it belong to unrelated owners, so a wildcard over it allows strangers' hosts.
pub fn is_public_suffix(name: &Hostname) -> bool {
    use psl::Psl;
    psl::List
        .suffix(name.as_str().as_bytes())
        .is_some_and(|s| s.as_bytes() == name.as_str().as_bytes())
}

/// Refuses a wildcard over a public suffix (`*.com.cn`, or `universal_domian` `com.cn`) and a
/// `universal_domian` that is neither the entry's domain nor a parent of it (`evil.org` for
/// `a.example.com`): either would allow names the entry doesn't stand for. The config's extra
/// entries are held to the same rule, since such a wildcard is as much a hole there. Runs
/// before the exclusions, which may name any zone.
fn wildcard_scope(e: &Entry, opts: &Options) -> Result<()> {
    let public = |field: &str, shown: String, wildcard: &Hostname| {
        Error::Guard(format!(
            "{}.{field}: {} is a public suffix: the wildcard .{wildcard} would allow every name registered under it",
            e.location(),
            crate::text::quote(&shown)
        ))
    };
    if let Dest::Wildcard(w) = &e.dest {
        if is_public_suffix(w) {
            return Err(public("domain", format!("*.{w}"), w));
        }
    }
    let Some(u) = universal(e, opts) else {
        return Ok(());
    };
    if is_public_suffix(u) {
        return Err(public("universal_domian", u.to_string(), u));
    }
    if let Dest::Exact(d) | Dest::Wildcard(d) = &e.dest {
        if !d.is_within(u) {
            return Err(Error::Guard(format!(
                "{}.universal_domian: {} is neither the domain {} nor a parent of it: the wildcard .{u} would allow names the entry doesn't stand for (--exact-domains ignores universal_domian)",
                e.location(),
                crate::text::quote(u.as_str()),
                crate::text::quote(d.as_str())
            )));
        }
    }
    Ok(())
}

/// The most ports one destination may be allowed on without `--allow-broad`: WeCom lists the
/// ports of its services, and a range of thousands (or all of them) is a hole, not a service.
pub const MAX_PORTS: u32 = 1024;

/// Refuses a destination allowed on more than `MAX_PORTS` ports of one protocol, counting
/// every entry that names it.
fn too_many_ports(entries: &[Entry], opts: &Options) -> Result<()> {
    let mut union: BTreeMap<(Protocol, Dest), PortSet> = BTreeMap::new();
    for e in entries {
        let universal = universal(e, opts).map(|u| Dest::Wildcard(u.clone()));
        for dest in std::iter::once(e.dest.clone()).chain(universal) {
            for p in e.protocols {
                let ports = match union.get(&(p, dest.clone())) {
                    Some(ports) => ports.union(&e.ports),
                    None => e.ports.clone(),
                };
                let n = ports.count();
                if n > MAX_PORTS {
                    return Err(Error::Guard(format!(
                        "{}.port: {dest} would be allowed on {n} {} ports ({ports}), more than {MAX_PORTS} (--allow-broad to proceed)",
                        e.location(),
                        p.as_str()
                    )));
                }
                union.insert((p, dest.clone()), ports);
            }
        }
    }
    Ok(())
}

/// Refuses a list whose networks add up, on some port of some protocol, to a block broader
/// than the minimum prefix, even when they sit in groups with different port sets (256 /8s,
/// each with 443 and a port of its own, would allow 0.0.0.0/0 on 443).
///
/// Every single network is at least the minimum prefix (checked before), so such a union
/// exists exactly when some block one bit shorter (a /7, a /15) is fully covered on a port.
/// A sweep over the ports adds and removes networks in a segment tree of covered lengths:
/// O(n log n) for n port ranges, whatever the shape of the port sets.
fn broad_union(entries: &[Entry]) -> Result<()> {
    let mut by_key: BTreeMap<(Family, Protocol), Vec<(IpNet, &PortSet)>> = BTreeMap::new();
    for e in entries {
        if let Dest::Net(n) = &e.dest {
            for p in e.protocols {
                by_key
                    .entry((e.dest.family(), p))
                    .or_default()
                    .push((*n, &e.ports));
            }
        }
    }
    for ((family, protocol), nets) in by_key {
        let min = match family {
            Family::Ipv4 => MIN_PREFIX_V4,
            _ => MIN_PREFIX_V6,
        };
        // A block covered on one port is covered by all the networks together: when they
        // cover none, whatever their ports, the sweep has nothing to find.
        let covers_a_block = match family {
            Family::Ipv4 => holds_block(&AddrSet::from_nets(nets.iter().map(|(n, _)| n)).v4, min),
            _ => holds_block(&AddrSet::from_nets(nets.iter().map(|(n, _)| n)).v6, min),
        };
        if !covers_a_block {
            continue;
        }
        // Each network as [start, end) on a line of u128, with the block it lies in. The very
        // last address has no exclusive end; it is left out of every length alike.
        let span = |n: &IpNet| {
            let (start, last) = match n {
                IpNet::V4(n) => (
                    u128::from(u32::from(n.network())),
                    u128::from(u32::from(n.broadcast())),
                ),
                IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
            };
            (start, last.saturating_add(1))
        };
        let block = |n: &IpNet| -> IpNet {
            // The network is at least `min` long, so the supernet exists.
            let len = min - 1;
            match n {
                IpNet::V4(v) => IpNet::V4(
                    ipnet::Ipv4Net::new(v.network(), len)
                        .map(|b| b.trunc())
                        .unwrap_or(*v),
                ),
                IpNet::V6(v) => IpNet::V6(
                    ipnet::Ipv6Net::new(v.network(), len)
                        .map(|b| b.trunc())
                        .unwrap_or(*v),
                ),
            }
        };
        let mut coords: Vec<u128> = Vec::with_capacity(nets.len() * 4);
        for (n, _) in &nets {
            let (a, b) = span(n);
            let (c, d) = span(&block(n));
            coords.extend([a, b, c, d]);
        }
        coords.sort_unstable();
        coords.dedup();
        let index = |x: u128| coords.partition_point(|&c| c < x);
        let mut tree = CoverTree::new(&coords);
        let mut events: Vec<(u32, i32, usize)> = Vec::new();
        for (i, (_, ports)) in nets.iter().enumerate() {
            for r in ports.ranges() {
                events.push((u32::from(r.start), 1, i));
                events.push((u32::from(r.end) + 1, -1, i));
            }
        }
        events.sort_unstable();
        let mut k = 0;
        while k < events.len() {
            let port = events[k].0;
            let mut added = Vec::new();
            while k < events.len() && events[k].0 == port {
                let (_, delta, i) = events[k];
                let (a, b) = span(&nets[i].0);
                tree.add(index(a), index(b), delta);
                if delta > 0 {
                    added.push(i);
                }
                k += 1;
            }
            for i in added {
                let b = block(&nets[i].0);
                let (c, d) = span(&b);
                if tree.covered(index(c), index(d)) == d - c {
                    return Err(Error::Guard(format!(
                        "the listed networks add up to {b} or more on {} port {port}, across entries with different ports: broader than /{MIN_PREFIX_V4} (IPv4) or /{MIN_PREFIX_V6} (IPv6) (--allow-broad to proceed)",
                        protocol.as_str()
                    )));
                }
            }
        }
    }
    Ok(())
}

/// What the whole-list guards need to know first, from one pass over the selected entries,
/// so that each guard runs only when it may fire.
struct Survey {
    /// The first network broader than the minimum prefix.
    broad: Option<usize>,
    /// All the ports of the list together are at most `MAX_PORTS`: then no destination is
    /// allowed on more.
    few_ports: bool,
    /// How many addresses the networks hold, counted once per entry, per family.
    sizes: [u128; 2],
}

impl Survey {
    fn of(entries: &[Entry]) -> Survey {
        let mut broad = None;
        let mut sizes = [0u128; 2];
        // Most entries repeat a few port sets, so the union grows only now and then.
        let mut ports: Option<PortSet> = None;
        let mut few_ports = true;
        for (i, e) in entries.iter().enumerate() {
            if let Dest::Net(n) = &e.dest {
                if broad.is_none() && is_broad(n) {
                    broad = Some(i);
                }
                let (sum, host) = match n {
                    IpNet::V4(n) => (&mut sizes[0], 32 - u32::from(n.prefix_len())),
                    IpNet::V6(n) => (&mut sizes[1], 128 - u32::from(n.prefix_len())),
                };
                *sum = sum.saturating_add(1u128.checked_shl(host).unwrap_or(u128::MAX));
            }
            if few_ports {
                let union = match ports.take() {
                    Some(all) if all.contains_set(&e.ports) => all,
                    Some(all) => all.union(&e.ports),
                    None => e.ports.clone(),
                };
                few_ports = union.count() <= MAX_PORTS;
                ports = Some(union);
            }
        }
        Survey {
            broad,
            few_ports,
            sizes,
        }
    }

    /// Whether the networks of all entries together, whatever their protocols and ports, may
    /// hold a block one bit shorter than the minimum prefix: when they don't, no protocol's
    /// and port's networks do. First the sizes (no block without that many addresses), then
    /// the union, one sort per family.
    fn may_hold_a_block(&self, entries: &[Entry]) -> bool {
        // A block the sweep finds may lack the very last address (see `holds_block`).
        let least = |bits: u32, min: u8| (1u128 << (bits - u32::from(min) + 1)) - 1;
        if self.sizes[0] < least(32, MIN_PREFIX_V4) && self.sizes[1] < least(128, MIN_PREFIX_V6) {
            return false;
        }
        let all = AddrSet::from_nets(entries.iter().filter_map(|e| match &e.dest {
            Dest::Net(n) => Some(n),
            _ => None,
        }));
        holds_block(&all.v4, MIN_PREFIX_V4) || holds_block(&all.v6, MIN_PREFIX_V6)
    }
}

/// Whether `set` holds a whole block one bit shorter than `min`, aligned on its size.
fn holds_block<A: ranges::Addr>(set: &RangeSet<A>, min: u8) -> bool {
    let size = 1u128 << (A::BITS - u32::from(min) + 1);
    set.ranges().iter().any(|&(start, end)| {
        let (start, end) = (start.widen(), end.widen());
        // The sweep leaves the very last address out; so may this check.
        let end = if end == u128::MAX - 1 { u128::MAX } else { end };
        start
            .checked_next_multiple_of(size)
            .is_some_and(|first| first.checked_add(size - 1).is_some_and(|l| l <= end))
    })
}

/// A segment tree over the elementary intervals between sorted coordinates, counting how many
/// networks cover each, for the covered length of any range of them.
struct CoverTree<'a> {
    coords: &'a [u128],
    count: Vec<u32>,
    len: Vec<u128>,
}

impl<'a> CoverTree<'a> {
    fn new(coords: &'a [u128]) -> Self {
        let leaves = coords.len().saturating_sub(1).max(1);
        CoverTree {
            coords,
            count: vec![0; 4 * leaves],
            len: vec![0; 4 * leaves],
        }
    }

    fn leaves(&self) -> usize {
        self.coords.len().saturating_sub(1).max(1)
    }

    /// Adds `delta` networks over the elementary intervals `[l, r)`.
    fn add(&mut self, l: usize, r: usize, delta: i32) {
        let n = self.leaves();
        self.update(1, 0, n, l, r, delta);
    }

    fn update(&mut self, node: usize, lo: usize, hi: usize, l: usize, r: usize, delta: i32) {
        if r <= lo || hi <= l {
            return;
        }
        if l <= lo && hi <= r {
            self.count[node] = self.count[node].saturating_add_signed(delta);
        } else {
            let mid = (lo + hi) / 2;
            self.update(2 * node, lo, mid, l, r, delta);
            self.update(2 * node + 1, mid, hi, l, r, delta);
        }
        self.len[node] = if self.count[node] > 0 {
            self.width(lo, hi)
        } else if hi - lo == 1 {
            0
        } else {
            self.len[2 * node].saturating_add(self.len[2 * node + 1])
        };
    }

    fn width(&self, lo: usize, hi: usize) -> u128 {
        match (self.coords.get(lo), self.coords.get(hi)) {
            (Some(a), Some(b)) => b - a,
            _ => 0,
        }
    }

    /// How much of the elementary intervals `[l, r)` is covered.
    fn covered(&self, l: usize, r: usize) -> u128 {
        self.query(1, 0, self.leaves(), l, r)
    }

    fn query(&self, node: usize, lo: usize, hi: usize, l: usize, r: usize) -> u128 {
        if r <= lo || hi <= l {
            return 0;
        }
        if self.count[node] > 0 {
            return self.width(lo.max(l), hi.min(r));
        }
        if l <= lo && hi <= r {
            return self.len[node];
        }
        if hi - lo == 1 {
            return 0;
        }
        let mid = (lo + hi) / 2;
        self.query(2 * node, lo, mid, l, r)
            .saturating_add(self.query(2 * node + 1, mid, hi, l, r))
    }
}

/// What is left of an entry once the exclusions are taken out, in place: `None` when nothing
/// is, else the entry, and for an address range around excluded ones, the fewest prefixes
/// around them: the first in the entry, the others returned. `nets` holds the excluded
/// addresses. A name can't be cut out of a wildcard in any target, so that is an error rather
/// than a silent no-op.
fn exclude(e: &mut Entry, opts: &Options, nets: &AddrSet) -> Result<Option<Vec<IpNet>>> {
    let ex = &opts.exclude;
    let carve_error = |inside: &Dest, wildcard: &Hostname, universal: bool| {
        Error::Option(format!(
            "exclude {inside} lies inside the wildcard .{wildcard} of {}: no target can cut a name out of a wildcard; exclude *.{wildcard} instead{}",
            e.location(),
            if universal { " (or use exact domains, which ignore universal_domian)" } else { "" }
        ))
    };
    match &e.dest {
        Dest::Net(n) => {
            if !nets.intersects(n) {
                return Ok(Some(Vec::new()));
            }
            let left = AddrSet::from_nets([n]).subtract(nets);
            let mut pieces = left.prefixes();
            let Some(first) = pieces.next() else {
                return Ok(None);
            };
            let rest = pieces.collect();
            e.dest = Dest::Net(first);
            Ok(Some(rest))
        }
        Dest::Exact(_) | Dest::Wildcard(_) => {
            let universal = universal(e, opts)
                .map(|u| exclude_wildcard(u, &ex.names).map_err(|x| carve_error(&x, u, true)))
                .transpose()?;
            let kept = match &e.dest {
                Dest::Wildcard(h) => exclude_wildcard(h, &ex.names)
                    .map_err(|x| carve_error(&x, h, false))?
                    .is_some(),
                Dest::Exact(h) => !ex.names.iter().any(|x| match x {
                    Dest::Exact(x) => x == h,
                    Dest::Wildcard(w) => h.is_within(w),
                    Dest::Net(_) => false,
                }),
                Dest::Net(_) => true,
            };
            // A universal wildcard is the domain or a parent of it (checked before), so when
            // the domain is out, its wildcard is either out too or was a carve error above.
            if !kept {
                return Ok(None);
            }
            if let Some(universal) = universal {
                e.universal = universal;
            }
            Ok(Some(Vec::new()))
        }
    }
}

/// The wildcard `.w` after the exclusions: kept, gone (a wider exclusion covers it), or an
/// exclusion strictly inside it, which can't be expressed. A covering exclusion wins over one
/// inside, whatever their order: `*.example.com` takes `x.work.example.com` out with the rest.
fn exclude_wildcard(w: &Hostname, names: &[Dest]) -> Result<Option<Hostname>, Dest> {
    let covered = names
        .iter()
        .any(|x| matches!(x, Dest::Wildcard(x) if w.is_within(x)));
    if covered {
        return Ok(None);
    }
    let inside = names.iter().find_map(|x| match x {
        Dest::Wildcard(x) | Dest::Exact(x) if x.is_within(w) => Some(Dest::Exact(x.clone())),
        _ => None,
    });
    match inside {
        Some(x) => Err(x),
        None => Ok(Some(w.clone())),
    }
}

/// The exclusions that touch no entry: each would take nothing out, which is usually a typo
/// that must not pass for a working exclusion. Checked against every entry, before the
/// filters, so an exclusion of an entry that a filter drops too is not reported.
pub fn unused_exclusions(entries: &[Entry], ex: &Exclude) -> Vec<Dest> {
    // A listed name or wildcard (`wildcard` says which) against an excluded one.
    let meets = |x: &Dest, h: &Hostname, wildcard: bool| match (x, wildcard) {
        (Dest::Exact(x), false) => x == h,
        // A name under a listed wildcard (an error later) or a wildcard over a listed name or
        // wildcard: either way the two meet.
        (Dest::Exact(x) | Dest::Wildcard(x), true) => x.is_within(h) || h.is_within(x),
        (Dest::Wildcard(w), false) => h.is_within(w),
        _ => false,
    };
    let names = ex.names.iter().filter(|x| {
        !entries.iter().any(|e| {
            let own = match &e.dest {
                Dest::Exact(h) => meets(x, h, false),
                Dest::Wildcard(h) => meets(x, h, true),
                Dest::Net(_) => false,
            };
            own || e.universal.as_ref().is_some_and(|u| meets(x, u, true))
        })
    });
    // Two prefixes meet exactly when one holds the other, so an excluded network touches an
    // entry when it shares an address with all the listed networks together.
    let listed = if ex.nets.is_empty() {
        AddrSet::default()
    } else {
        AddrSet::from_nets(entries.iter().filter_map(|e| match &e.dest {
            Dest::Net(n) => Some(n),
            _ => None,
        }))
    };
    let nets = ex.nets.iter().filter(|x| !listed.intersects(x));
    names.cloned().chain(nets.map(|n| Dest::Net(*n))).collect()
}

/// The addresses of `outer` that are not in `inner`, as the fewest prefixes, sorted.
pub fn subtract(outer: IpNet, inner: IpNet) -> Vec<IpNet> {
    AddrSet::from_nets([&outer])
        .subtract(&AddrSet::from_nets([&inner]))
        .prefixes()
        .collect()
}

fn is_broad(net: &IpNet) -> bool {
    match net {
        IpNet::V4(n) => n.prefix_len() < MIN_PREFIX_V4,
        IpNet::V6(n) => n.prefix_len() < MIN_PREFIX_V6,
    }
}

/// The universal domain of `e` that makes a wildcard: none with exact domains, which ignore
/// it, so that it opens nothing.
fn universal<'e>(e: &'e Entry, opts: &Options) -> Option<&'e Hostname> {
    e.universal.as_ref().filter(|_| !opts.exact_domains)
}

/// Whether the policies with and without wildcards may differ for `entries` (selected, under
/// `opts`): only a wildcard tells them apart, the entry's own or its universal domain's.
/// Without one, both are the same, and a caller needs to make only one.
pub fn wildcards_matter(entries: &[Entry], opts: &Options) -> bool {
    entries
        .iter()
        .any(|e| matches!(e.dest, Dest::Wildcard(_)) || universal(e, opts).is_some())
}

/// An IPv4 row's sort key, one integer: protocol, network and prefix length, in that order.
fn v4_key(protocol: Protocol, n: &ipnet::Ipv4Net) -> u64 {
    (protocol as u64) << 40 | u64::from(u32::from(n.network())) << 8 | u64::from(n.prefix_len())
}

/// What `v4_key` put in. `Protocol::ALL` is in the order of the numbers `as` gives.
fn v4_unkey(key: u64) -> (Protocol, u32, u8) {
    (
        Protocol::ALL[(key >> 40) as usize],
        (key >> 8) as u32,
        key as u8,
    )
}

/// Builds the policy for a target. `wildcards` says whether the target can match a name and
/// all its subdomains; where it can't, no exact name may be dropped in favour of a wildcard.
pub fn normalize(entries: &[Entry], opts: &Options, wildcards: bool) -> Result<Policy> {
    let mut inexpressible = BTreeSet::new();
    let mut inexpressible_wildcard = |h: &Hostname| {
        if !inexpressible.contains(h) {
            inexpressible.insert(h.clone());
        }
    };
    let mut table = Interned::new(entries);
    // Step 1: every (destination, protocol) an entry lists, sorted once: addresses by their
    // integers (an IPv4 row is one u64 key), names (borrowed; only a universal wildcard is
    // made) by `Dest`'s order. An address carries its entry's port set and note, so that no
    // entry is read in address order, all over memory.
    let mut v4: Vec<(u64, u32, u32)> = Vec::new();
    let mut v6: Vec<(Protocol, u128, u8, u32, u32)> = Vec::new();
    let mut names: Vec<(Protocol, Cow<'_, Dest>, usize)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let universal = universal(e, opts);
        if !wildcards {
            if let Dest::Wildcard(h) = &e.dest {
                inexpressible_wildcard(h);
            }
            if let Some(h) = universal {
                inexpressible_wildcard(h);
            }
        }
        let universal = universal
            .filter(|_| wildcards)
            .map(|h| Dest::Wildcard(h.clone()));
        for protocol in e.protocols {
            match &e.dest {
                Dest::Net(IpNet::V4(n)) => {
                    if v4.capacity() == 0 {
                        v4.reserve(entries.len());
                    }
                    v4.push((v4_key(protocol, n), table.port_of[i], table.note_of[i]));
                }
                Dest::Net(IpNet::V6(n)) => v6.push((
                    protocol,
                    u128::from(n.network()),
                    n.prefix_len(),
                    table.port_of[i],
                    table.note_of[i],
                )),
                Dest::Wildcard(_) if !wildcards => {}
                d => names.push((protocol, Cow::Borrowed(d), i)),
            }
            if let Some(u) = &universal {
                names.push((protocol, Cow::Owned(u.clone()), i));
            }
        }
    }
    v4.sort_unstable_by_key(|r| r.0);
    v6.sort_unstable();
    names.sort_unstable_by(|a, b| (a.0, &*a.1, a.2).cmp(&(b.0, &*b.1, b.2)));

    // Step 2: one port set per (family, protocol, destination), from each run of equal keys,
    // and the runs of each (family, protocol, ports), in address order.
    let v4 = net_runs(
        &mut table,
        v4.into_iter().map(|(key, port, note)| {
            let (protocol, network, len) = v4_unkey(key);
            (protocol, network, len, port, note)
        }),
    );
    let v6 = net_runs(&mut table, v6.into_iter());
    // Names: `notes` holds the notes of every run's entries, run after run.
    let mut notes: Vec<u32> = Vec::with_capacity(names.len());
    let mut runs: Vec<Run<'_>> = Vec::with_capacity(names.len());
    let mut names = names.into_iter().peekable();
    while let Some((protocol, dest, first)) = names.next() {
        let mut rows = vec![first];
        while let Some((.., i)) = names.next_if(|(p, d, _)| (*p, &**d) == (protocol, &*dest)) {
            rows.push(i);
        }
        let from = notes.len();
        notes.extend(rows.iter().map(|&i| table.note_of[i]));
        let ports: Vec<u32> = rows.iter().map(|&i| table.port_of[i]).collect();
        runs.push(Run {
            protocol,
            ports: table.union(ports.into_iter()),
            dest,
            notes: from..notes.len(),
        });
    }

    // The runs of each (family, protocol, ports), in the runs' order. Neighbours mostly share
    // their key, so a key is looked up only when it changes.
    let mut keys: Vec<(Family, Protocol, u32)> = Vec::new();
    let mut bodies: Vec<Body<'_, '_>> = Vec::new();
    for (protocol, ports, runs) in v4 {
        keys.push((Family::Ipv4, protocol, ports));
        bodies.push(Body::V4(runs));
    }
    for (protocol, ports, runs) in v6 {
        keys.push((Family::Ipv6, protocol, ports));
        bodies.push(Body::V6(runs));
    }
    let mut key_index: HashMap<(Family, Protocol, u32), usize> = HashMap::new();
    let mut last: Option<usize> = None;
    for r in &runs {
        let key = (Family::Dns, r.protocol, r.ports);
        let k = match last {
            Some(k) if keys[k] == key => k,
            _ => *key_index.entry(key).or_insert_with(|| {
                keys.push(key);
                bodies.push(Body::Names(Vec::new()));
                keys.len() - 1
            }),
        };
        if let Body::Names(in_key) = &mut bodies[k] {
            in_key.push(r);
        }
        last = Some(k);
    }
    let mut keyed: Vec<_> = keys.into_iter().zip(bodies).collect();
    keyed.sort_unstable_by(|((fa, pa, sa), _), ((fb, pb, sb), _)| {
        (fa, pa, &table.sets[*sa as usize]).cmp(&(fb, pb, &table.sets[*sb as usize]))
    });

    // Step 3: inside each group, aggregate addresses and drop names a wildcard covers.
    let mut groups: Vec<Group> = Vec::with_capacity(keyed.len());
    let mut scratch = Vec::new();
    for ((family, protocol, ports), body) in keyed {
        let members = match body {
            Body::Names(same) => drop_covered_names(
                same.iter()
                    .map(|r| Member {
                        dest: r.dest.clone().into_owned(),
                        notes: table.notes(notes[r.notes.clone()].iter().copied(), &mut scratch),
                    })
                    .collect(),
            ),
            Body::V4(runs) => aggregate_runs(&mut table, &runs),
            Body::V6(runs) => aggregate_runs(&mut table, &runs),
        };
        groups.push(Group {
            family,
            protocol,
            ports: table.sets[ports as usize].clone(),
            members,
        });
    }

    // Step 4: drop what a group with a strictly larger port set already allows.
    drop_covered_across_groups(&mut groups);
    groups.retain(|g| !g.members.is_empty());

    if !opts.allow_broad {
        let broad = groups
            .iter()
            .flat_map(|g| &g.members)
            .find(|m| matches!(&m.dest, Dest::Net(n) if is_broad(n)));
        if let Some(m) = broad {
            return Err(Error::Guard(format!(
                "the listed networks add up to {}, broader than /{MIN_PREFIX_V4} (IPv4) or /{MIN_PREFIX_V6} (IPv6) (--allow-broad to proceed)",
                m.dest
            )));
        }
    }
    Ok(Policy {
        groups,
        inexpressible: inexpressible.into_iter().collect(),
    })
}

/// One (protocol, name), its port set (the union of its entries'), and where
/// its entries' notes are in the list of all runs' notes.
struct Run<'a> {
    protocol: Protocol,
    ports: u32,
    dest: Cow<'a, Dest>,
    notes: std::ops::Range<usize>,
}

/// Every entry's port set and note as a small number, made in one pass in the entries'
/// order: a list has few distinct ones, and neighbours mostly repeat them.
struct Interned<'a> {
    /// The distinct port sets, and the number of each.
    sets: Vec<PortSet>,
    set_ids: HashMap<PortSet, u32>,
    /// Each entry's port set and note.
    port_of: Vec<u32>,
    note_of: Vec<u32>,
    /// The distinct notes, as (necessary, description).
    note_list: Vec<(bool, &'a Text)>,
    /// The sets of notes members hold, each made once: of one note, by the note's number;
    /// of more, by their sorted numbers.
    one_note: Vec<Option<Notes>>,
    note_sets: HashMap<Box<[u32]>, Notes>,
}

impl<'a> Interned<'a> {
    fn new(entries: &'a [Entry]) -> Self {
        let mut t = Interned {
            sets: Vec::new(),
            set_ids: HashMap::new(),
            port_of: Vec::with_capacity(entries.len()),
            note_of: Vec::with_capacity(entries.len()),
            note_list: Vec::new(),
            one_note: Vec::new(),
            note_sets: HashMap::new(),
        };
        let mut note_ids: HashMap<(bool, &str), u32> = HashMap::new();
        let mut last: Option<(&Entry, u32, u32)> = None;
        for e in entries {
            let (ports, note) = match last {
                Some((l, p, n)) => (
                    if l.ports == e.ports {
                        p
                    } else {
                        t.intern(&e.ports)
                    },
                    if (l.necessary, &l.description) == (e.necessary, &e.description) {
                        n
                    } else {
                        t.note_id(&mut note_ids, e)
                    },
                ),
                None => (t.intern(&e.ports), t.note_id(&mut note_ids, e)),
            };
            t.port_of.push(ports);
            t.note_of.push(note);
            last = Some((e, ports, note));
        }
        t
    }

    fn intern(&mut self, set: &PortSet) -> u32 {
        if let Some(&id) = self.set_ids.get(set) {
            return id;
        }
        let id = self.sets.len() as u32;
        self.sets.push(set.clone());
        self.set_ids.insert(set.clone(), id);
        id
    }

    fn note_id(&mut self, ids: &mut HashMap<(bool, &'a str), u32>, e: &'a Entry) -> u32 {
        let key = (e.necessary, e.description.as_str());
        *ids.entry(key).or_insert_with(|| {
            self.note_list.push((e.necessary, &e.description));
            (self.note_list.len() - 1) as u32
        })
    }

    /// The port sets `ids` together.
    fn union(&mut self, mut ids: impl Iterator<Item = u32>) -> u32 {
        let Some(first) = ids.next() else { return 0 };
        let mut others = Vec::new();
        others.extend(ids.filter(|&p| p != first));
        if others.is_empty() {
            return first;
        }
        let all = std::iter::once(first)
            .chain(others)
            .flat_map(|p| self.sets[p as usize].ranges())
            .copied()
            .collect();
        match PortSet::new(all) {
            Some(set) => self.intern(&set),
            None => first,
        }
    }

    /// The notes `ids` (any order, repeats allowed) as a member holds them: the set shared
    /// by every member with the same notes. `scratch` is room for the numbers.
    fn notes(&mut self, mut ids: impl Iterator<Item = u32>, scratch: &mut Vec<u32>) -> Notes {
        let Some(first) = ids.next() else {
            return Notes::default();
        };
        scratch.clear();
        scratch.extend(ids.filter(|&id| id != first));
        if scratch.is_empty() {
            if self.one_note.len() <= first as usize {
                self.one_note.resize(self.note_list.len(), None);
            }
            let note_list = &self.note_list;
            return self.one_note[first as usize]
                .get_or_insert_with(|| notes_of(note_list, &[first]))
                .clone();
        }
        scratch.push(first);
        scratch.sort_unstable();
        scratch.dedup();
        if let Some(set) = self.note_sets.get(scratch.as_slice()) {
            return set.clone();
        }
        let set = notes_of(&self.note_list, scratch);
        self.note_sets
            .insert(scratch.as_slice().into(), set.clone());
        set
    }
}

/// The notes numbered `ids` in `note_list`, as a set.
fn notes_of(note_list: &[(bool, &Text)], ids: &[u32]) -> Notes {
    ids.iter()
        .map(|&id| {
            let (necessary, description) = note_list[id as usize];
            Note {
                necessary,
                description: description.clone(),
            }
        })
        .collect()
}

/// The fewest prefixes that match exactly the same addresses, sorted: the addresses as
/// integer ranges, sorted once, merged, and split back into prefixes.
pub fn aggregate(nets: &[IpNet]) -> Vec<IpNet> {
    AddrSet::from_nets(nets).prefixes().collect()
}

/// The addresses of one (family, protocol, ports), in address order: each distinct network
/// (address, prefix length) once, with where its entries' notes end in `notes` (they start
/// where the previous network's end).
struct NetRuns<A> {
    runs: Vec<(A, u8, u32)>,
    notes: Vec<u32>,
}

/// A key's runs, before they become a group's members.
enum Body<'r, 'a> {
    Names(Vec<&'r Run<'a>>),
    V4(NetRuns<u32>),
    V6(NetRuns<u128>),
}

/// The networks of one family from its rows (protocol, address, length, port set, note),
/// sorted: one run per distinct (protocol, network), its port set the union of its rows', put
/// in the runs of its (protocol, port set). Neighbours mostly share their key, so a key is
/// looked up only when it changes.
fn net_runs<A: ranges::Addr>(
    table: &mut Interned<'_>,
    rows: impl Iterator<Item = (Protocol, A, u8, u32, u32)>,
) -> Vec<(Protocol, u32, NetRuns<A>)> {
    let mut out: Vec<(Protocol, u32, NetRuns<A>)> = Vec::new();
    let mut index: HashMap<(Protocol, u32), usize> = HashMap::new();
    let mut last: Option<usize> = None;
    let mut rows = rows.peekable();
    let (mut ports, mut notes) = (Vec::new(), Vec::new());
    while let Some((protocol, addr, len, port, note)) = rows.next() {
        ports.clear();
        notes.clear();
        ports.push(port);
        notes.push(note);
        while let Some((.., port, note)) =
            rows.next_if(|r| (r.0, r.1, r.2) == (protocol, addr, len))
        {
            if port != ports[0] {
                ports.push(port);
            }
            notes.push(note);
        }
        let port = table.union(ports.iter().copied());
        let k = match last {
            Some(k) if (out[k].0, out[k].1) == (protocol, port) => k,
            _ => *index.entry((protocol, port)).or_insert_with(|| {
                out.push((
                    protocol,
                    port,
                    NetRuns {
                        runs: Vec::new(),
                        notes: Vec::new(),
                    },
                ));
                out.len() - 1
            }),
        };
        let key = &mut out[k].2;
        key.notes.extend_from_slice(&notes);
        // A list holds far fewer than 2^32 notes (an entry's index is a u32).
        let end = u32::try_from(key.notes.len()).unwrap_or(u32::MAX);
        key.runs.push((addr, len, end));
        last = Some(k);
    }
    out
}

/// The last address of the network at `start` with prefix length `len`.
fn last_address<A: ranges::Addr>(start: A, len: u8) -> u128 {
    ranges::block_end(start.widen(), A::BITS - u32::from(len))
}

/// One group's members from its runs (in address order): the runs' networks aggregated, each
/// prefix with the notes of every entry inside it. Networks in address order (a network
/// before those inside it) are merged into ranges as they come, and a run's network lies in
/// exactly one of its range's prefixes, which come in address order too: one walk, no sort.
fn aggregate_runs<A: ranges::Addr>(table: &mut Interned<'_>, key: &NetRuns<A>) -> Vec<Member> {
    let runs = &key.runs;
    let notes_of = |i: usize| {
        let from = if i == 0 { 0 } else { runs[i - 1].2 as usize };
        &key.notes[from..runs[i].2 as usize]
    };
    let mut out = Vec::with_capacity(runs.len());
    let mut scratch = Vec::new();
    let mut i = 0;
    while let Some(&(start, len, _)) = runs.get(i) {
        // The range from this run on: every following network that overlaps or touches it.
        let mut end = last_address(start, len);
        let mut j = i + 1;
        while let Some(&(next, len, _)) = runs.get(j) {
            if !ranges::joins(end, next.widen()) {
                break;
            }
            end = end.max(last_address(next, len));
            j += 1;
        }
        for prefix in ranges::prefixes_between::<A>(start.widen(), end) {
            let last = ranges::span(&prefix).1;
            let from = i;
            while runs.get(i).is_some_and(|r| i < j && r.0.widen() <= last) {
                i += 1;
            }
            let ids = (from..i).flat_map(|r| notes_of(r).iter().copied());
            out.push(Member {
                dest: Dest::Net(prefix),
                notes: table.notes(ids, &mut scratch),
            });
        }
        i = j;
    }
    out
}

/// True when a wildcard in `wildcards` matches `name` (the wildcard itself or a parent of it).
fn covered_by(name: &Hostname, wildcards: &HashSet<&str>) -> bool {
    wildcards.contains(name.as_str()) || name.parents().any(|p| wildcards.contains(p))
}

fn drop_covered_names(members: Vec<Member>) -> Vec<Member> {
    let keep: Vec<bool> = {
        let wildcards: HashSet<&str> = members
            .iter()
            .filter_map(|m| match &m.dest {
                Dest::Wildcard(h) => Some(h.as_str()),
                _ => None,
            })
            .collect();
        if wildcards.is_empty() {
            return members;
        }
        members
            .iter()
            .map(|m| match &m.dest {
                Dest::Exact(h) => !covered_by(h, &wildcards),
                Dest::Wildcard(h) => !h.parents().any(|p| wildcards.contains(p)),
                Dest::Net(_) => true,
            })
            .collect()
    };
    let mut keep = keep.into_iter();
    members
        .into_iter()
        .filter(|_| keep.next().unwrap_or(true))
        .collect()
}

/// Drops every value that a group of the same family and protocol with a strictly larger port
/// set already allows. Groups are sorted by (family, protocol, ports), so the groups that may
/// cover each other are neighbours, and a family and protocol with one group is skipped.
/// Values are looked up, not groups compared pairwise (nested port sets {1}, {1,3}, {1,3,5}
/// ... used to cost the square of the groups): see `covered_nets` and `covered_names`.
fn drop_covered_across_groups(groups: &mut [Group]) {
    // Decide everything against the groups as they are before any removal: a value removed
    // here is covered by one that is either kept or covered in turn by a still larger group.
    let mut covered: Vec<Vec<bool>> = groups
        .iter()
        .map(|g| vec![false; g.members.len()])
        .collect();
    let mut start = 0;
    while let Some(first) = groups.get(start) {
        let len = groups[start..]
            .iter()
            .take_while(|g| (g.family, g.protocol) == (first.family, first.protocol))
            .count();
        let bucket = &groups[start..start + len];
        let flags = &mut covered[start..start + len];
        if len > 1 {
            match first.family {
                Family::Dns => covered_names(bucket, flags),
                Family::Ipv4 | Family::Ipv6 => covered_nets(bucket, flags),
            }
        }
        start += len;
    }
    for (g, covered) in groups.iter_mut().zip(covered) {
        if covered.contains(&true) {
            let mut flags = covered.into_iter();
            g.members.retain(|_| !flags.next().unwrap_or(false));
        }
    }
}

/// True when group `c`'s ports strictly hold group `g`'s.
fn larger(groups: &[Group], c: usize, g: usize) -> bool {
    groups[c].ports != groups[g].ports && groups[c].ports.contains_set(&groups[g].ports)
}

/// Flags the networks of `groups` (one family and protocol) that a network of a group with
/// larger ports holds. Prefixes either nest or are disjoint, so in address order (a prefix
/// before those inside it) a stack holds exactly the prefixes around the current one: one
/// sort, then a walk.
fn covered_nets(groups: &[Group], flags: &mut [Vec<bool>]) {
    let mut items: Vec<(u128, u128, usize, usize)> = Vec::new();
    for (gi, g) in groups.iter().enumerate() {
        for (mi, m) in g.members.iter().enumerate() {
            let Dest::Net(n) = &m.dest else { continue };
            let span = ranges::span(n);
            items.push((span.0, span.1, gi, mi));
        }
    }
    items.sort_unstable_by(|a, b| (a.0, b.1, a.2).cmp(&(b.0, a.1, b.2)));
    let mut around: Vec<usize> = Vec::new();
    let mut i = 0;
    while let Some(&(start, end, ..)) = items.get(i) {
        let len = items[i..]
            .iter()
            .take_while(|x| (x.0, x.1) == (start, end))
            .count();
        while around.last().is_some_and(|&t| items[t].1 < start) {
            around.pop();
        }
        // Equal prefixes in other groups hold each other, whichever comes first.
        for &(.., g, m) in &items[i..i + len] {
            flags[g][m] = around
                .iter()
                .copied()
                .chain(i..i + len)
                .any(|c| larger(groups, items[c].2, g));
        }
        around.extend(i..i + len);
        i += len;
    }
}

/// Flags the names and wildcards of `groups` (one protocol) that a wildcard of a group with
/// larger ports matches: the wildcard itself or one over a parent.
fn covered_names(groups: &[Group], flags: &mut [Vec<bool>]) {
    let mut wildcards: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, g) in groups.iter().enumerate() {
        for m in &g.members {
            if let Dest::Wildcard(h) = &m.dest {
                wildcards.entry(h.as_str()).or_default().push(i);
            }
        }
    }
    if wildcards.is_empty() {
        return;
    }
    for (gi, g) in groups.iter().enumerate() {
        for (mi, m) in g.members.iter().enumerate() {
            if let Dest::Exact(h) | Dest::Wildcard(h) = &m.dest {
                flags[gi][mi] = std::iter::once(h.as_str())
                    .chain(h.parents())
                    .filter_map(|name| wildcards.get(name))
                    .flatten()
                    .any(|&c| larger(groups, c, gi));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ListKind;
    use crate::wecom::Response;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    #[test]
    fn an_ipv4_key_gives_back_what_went_in() {
        for protocol in [Protocol::Udp, Protocol::Tcp] {
            for (addr, len) in [
                ([0, 0, 0, 0], 0),
                ([255, 255, 255, 255], 32),
                ([10, 1, 0, 0], 16),
            ] {
                let n = ipnet::Ipv4Net::new(Ipv4Addr::from(addr), len).unwrap();
                assert_eq!(
                    v4_unkey(v4_key(protocol, &n)),
                    (protocol, u32::from(n.network()), len)
                );
            }
        }
    }

    /// `select`'s error for `entries`, which must say `says`.
    fn refusal(entries: Vec<Entry>, opts: &Options, says: &str) -> Error {
        let e = select(entries, opts).unwrap_err();
        assert!(e.to_string().contains(says), "{e}");
        e
    }

    /// The addresses a list of IPv4 prefixes matches, as merged inclusive ranges.
    fn ranges(nets: &[IpNet]) -> Vec<(u32, u32)> {
        let mut r: Vec<(u32, u32)> = nets
            .iter()
            .map(|n| match n {
                IpNet::V4(n) => (u32::from(n.network()), u32::from(n.broadcast())),
                IpNet::V6(_) => unreachable!("v4 only in this test"),
            })
            .collect();
        r.sort_unstable();
        let mut out: Vec<(u32, u32)> = Vec::new();
        for (s, e) in r {
            match out.last_mut() {
                Some(last) if u64::from(s) <= u64::from(last.1) + 1 => last.1 = last.1.max(e),
                _ => out.push((s, e)),
            }
        }
        out
    }

    fn net_strategy() -> impl Strategy<Value = IpNet> {
        // A small corner of the address space, so that overlaps and adjacency are common.
        (0u32..4096, 20u8..=32).prop_map(|(host, len)| {
            let addr = Ipv4Addr::from(0x0A00_0000 | host);
            IpNet::V4(ipnet::Ipv4Net::new(addr, len).unwrap().trunc())
        })
    }

    proptest! {
        #[test]
        fn aggregation_matches_the_same_addresses(nets in prop::collection::vec(net_strategy(), 0..40)) {
            let out = aggregate(&nets);
            prop_assert_eq!(ranges(&out), ranges(&nets));
            // Disjoint and sorted, so that nftables interval sets and Squid accept them.
            for w in out.windows(2) {
                prop_assert!(w[0] < w[1]);
                prop_assert!(!w[0].contains(&w[1].network()) && !w[1].contains(&w[0].network()));
            }
            // Nothing left to merge: no two prefixes are siblings.
            for w in out.windows(2) {
                prop_assert!(w[0].supernet().is_none() || w[0].supernet() != w[1].supernet()
                    || w[0].prefix_len() != w[1].prefix_len());
            }
        }
    }

    /// The integer ranges reach both ends of each family's space without overflowing, and
    /// give the prefixes ipnet's own aggregation gives.
    #[test]
    fn aggregation_reaches_the_ends_of_both_families() {
        let nets =
            |list: &[&str]| -> Vec<IpNet> { list.iter().map(|n| n.parse().unwrap()).collect() };
        for list in [
            vec!["0.0.0.0/0"],
            vec!["::/0"],
            vec!["0.0.0.0/1", "128.0.0.0/1", "::/1", "8000::/1"],
            vec!["255.255.255.255/32", "255.255.255.254/32", "0.0.0.0/32"],
            vec![
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128",
                "ffff::/16",
                "::/128",
                "::1/128",
            ],
            vec![
                "10.0.0.1/32",
                "10.0.0.2/31",
                "10.0.0.4/30",
                "10.0.0.8/29",
                "10.0.0.16/32",
            ],
            vec![
                "2001:db8::/33",
                "2001:db8:8000::/33",
                "10.0.0.0/8",
                "11.0.0.0/8",
            ],
        ] {
            let list = nets(&list);
            let mut expected = IpNet::aggregate(&list);
            expected.sort_unstable();
            assert_eq!(aggregate(&list), expected, "{list:?}");
        }
    }

    /// The quick check before the port sweep must not skip a block the sweep would find: the
    /// sweep ignores the very last IPv6 address, and so a list that covers all of ffff::/15 but
    /// that address is broad.
    #[test]
    fn a_block_covered_up_to_the_last_address_is_still_broad() {
        let mut nets = vec![IpNet::V6("fffe::/16".parse().unwrap())];
        let mut start: u128 = 0xffff << 112;
        for len in 17..=128u8 {
            let net = ipnet::Ipv6Net::new(std::net::Ipv6Addr::from(start), len).unwrap();
            nets.push(IpNet::V6(net));
            start += 1u128 << (128 - u32::from(len));
        }
        // The last prefix added is the address just before the last one.
        assert_eq!(start, u128::MAX);
        let items: Vec<String> = nets
            .iter()
            .map(|n| format!(r#"{{"ip":"{n}","protocol":"TCP","port":[443],"is_necessary":1}}"#))
            .collect();
        let doc = format!(r#"{{"ip_list":[{}]}}"#, items.join(","));
        let entries = crate::wecom::parse(doc.as_bytes(), false).unwrap().entries;
        let opts = Options {
            allow_nonpublic: true,
            ..Options::default()
        };
        refusal(entries, &opts, "fffe::/15");
    }

    #[test]
    fn a_host_inside_a_larger_port_group_is_dropped() {
        let doc = br#"{"ip_list":[
            {"ip":"10.0.0.0/24","protocol":"TCP","port":[80,443],"is_necessary":1},
            {"ip":"10.0.0.5","protocol":"TCP","port":[443],"is_necessary":0},
            {"ip":"10.0.1.5","protocol":"TCP","port":[443],"is_necessary":0}]}"#;
        let entries = crate::wecom::parse(doc, false).unwrap().entries;
        let p = normalize(&entries, &Options::default(), true).unwrap();
        let shown: Vec<(String, String)> = p
            .groups
            .iter()
            .flat_map(|g| {
                g.members
                    .iter()
                    .map(|m| (g.ports.to_string(), m.dest.to_string()))
            })
            .collect();
        assert_eq!(
            shown,
            [
                ("80,443".into(), "10.0.0.0/24".into()),
                ("443".into(), "10.0.1.5/32".into())
            ]
        );
    }

    proptest! {
        /// Each member holds the notes of every entry inside it, sorted and each once (what a
        /// `BTreeSet` of them holds), and members with the same notes share one set.
        #[test]
        fn members_hold_their_entries_notes_and_share_equal_sets(
            rows in prop::collection::vec((0u32..64, 28u8..=32, 0usize..4, any::<bool>()), 1..40)
        ) {
            let descriptions = ["a", "b", "", "c; d"];
            let items: Vec<String> = rows
                .iter()
                .map(|&(host, len, d, necessary)| {
                    let addr = Ipv4Addr::from(0x6500_0000 | host);
                    let net = ipnet::Ipv4Net::new(addr, len).unwrap().trunc();
                    format!(
                        r#"{{"ip":"{net}","protocol":"TCP","port":[443],"is_necessary":{},"description":"{}"}}"#,
                        u8::from(necessary),
                        descriptions[d]
                    )
                })
                .collect();
            let doc = format!(r#"{{"ip_list":[{}]}}"#, items.join(","));
            let entries = crate::wecom::parse(doc.as_bytes(), false).unwrap().entries;
            let p = normalize(&entries, &Options::default(), true).unwrap();
            let members: Vec<&Member> = p.groups.iter().flat_map(|g| &g.members).collect();
            for m in &members {
                let Dest::Net(outer) = m.dest else { unreachable!("addresses only") };
                let expected: BTreeSet<Note> = entries
                    .iter()
                    .filter(|e| matches!(e.dest, Dest::Net(n) if outer.contains(&n)))
                    .map(|e| Note {
                        necessary: e.necessary,
                        description: e.description.clone(),
                    })
                    .collect();
                let held: Vec<&Note> = m.notes.iter().collect();
                prop_assert_eq!(held, expected.iter().collect::<Vec<_>>());
            }
            for a in &members {
                for b in &members {
                    prop_assert_eq!(a.notes == b.notes, a.notes.same(&b.notes));
                }
            }
        }

        /// `union` and `collect` hold what a `BTreeSet` of the same notes holds, in its order.
        #[test]
        fn notes_union_is_the_sorted_set_union(
            a in prop::collection::vec((any::<bool>(), 0usize..4), 0..6),
            b in prop::collection::vec((any::<bool>(), 0usize..4), 0..6),
        ) {
            let note = |&(necessary, d): &(bool, usize)| Note {
                necessary,
                description: ["x", "a", "", "b"][d].into(),
            };
            let sa: Notes = a.iter().map(note).collect();
            let sb: Notes = b.iter().map(note).collect();
            let model: BTreeSet<Note> = a.iter().chain(&b).map(note).collect();
            let union = sa.union(&sb);
            prop_assert_eq!(union.iter().collect::<Vec<_>>(), model.iter().collect::<Vec<_>>());
            let only_a: BTreeSet<Note> = a.iter().map(note).collect();
            prop_assert_eq!(sa.iter().collect::<Vec<_>>(), only_a.iter().collect::<Vec<_>>());
            prop_assert!(sa.union(&sa).same(&sa));
        }
    }

    #[test]
    fn wildcards_cover_names_only_where_the_target_can_express_them() {
        let doc = br#"{"domain_list":[
            {"domain":"i.work.weixin.qq.com","universal_domian":"work.weixin.qq.com","protocol":"TCP","port":[443],"is_necessary":1},
            {"domain":"work.weixin.qq.com","protocol":"TCP","port":[443],"is_necessary":1},
            {"domain":"*.weixin.qq.com","protocol":"TCP","port":[443,80],"is_necessary":1},
            {"domain":"other.example.com","protocol":"TCP","port":[443],"is_necessary":1}]}"#;
        let entries = crate::wecom::parse(doc, false).unwrap().entries;
        let names = |p: &Policy| -> Vec<String> {
            p.groups
                .iter()
                .flat_map(|g| g.members.iter().map(|m| m.dest.to_string()))
                .collect()
        };
        let squid = normalize(&entries, &Options::default(), true).unwrap();
        assert_eq!(names(&squid), [".weixin.qq.com", "other.example.com"]);
        let pf = normalize(&entries, &Options::default(), false).unwrap();
        assert_eq!(
            names(&pf),
            [
                "other.example.com",
                "work.weixin.qq.com",
                "i.work.weixin.qq.com"
            ]
        );
        assert_eq!(
            pf.inexpressible
                .iter()
                .map(|h| h.as_str())
                .collect::<Vec<_>>(),
            ["weixin.qq.com", "work.weixin.qq.com"]
        );
    }

    #[test]
    fn subtraction_leaves_exactly_the_rest() {
        let outer: IpNet = "10.0.0.0/8".parse().unwrap();
        let inner: IpNet = "10.1.0.0/16".parse().unwrap();
        let rest = subtract(outer, inner);
        assert_eq!(rest.len(), 8);
        let mut all = rest.clone();
        all.push(inner);
        assert_eq!(aggregate(&all), vec![outer]);
        assert!(rest
            .iter()
            .all(|r| !r.contains(&inner) && !inner.contains(r)));
    }

    #[test]
    fn filters_and_exclusions() {
        let doc = br#"{"ip_list":[
            {"ip":"101.0.0.0/8","protocol":"TCP/UDP","port":[443],"is_necessary":1},
            {"ip":"2001:da8::/32","protocol":"TCP","port":[443],"is_necessary":1}],
            "domain_list":[
            {"domain":"a.work.example.com","universal_domian":"work.example.com","protocol":"TCP","port":[443],"is_necessary":1},
            {"domain":"b.example.com","protocol":"TCP","port":[443],"is_necessary":1}]}"#;
        let entries = crate::wecom::parse(doc, false).unwrap().entries;
        let name = |s: &str| Hostname::parse(s).unwrap();
        let opts = Options {
            protocols: vec![Protocol::Tcp],
            families: vec![Family::Ipv4, Family::Dns],
            exclude: Exclude {
                names: vec![
                    Dest::Exact(name("b.example.com")),
                    Dest::Wildcard(name("work.example.com")),
                ],
                nets: vec!["101.1.0.0/16".parse().unwrap()],
            },
            ..Options::default()
        };
        let kept = select(entries.clone(), &opts).unwrap();
        assert!(kept.iter().all(|e| e.protocols == [Protocol::Tcp]));
        let shown: Vec<String> = kept.iter().map(|e| e.dest.to_string()).collect();
        assert_eq!(shown.len(), 8, "{shown:?}");
        assert!(
            shown.contains(&"101.128.0.0/9".to_string())
                && !shown.iter().any(|s| s.starts_with("2001"))
        );
        // a.work.example.com lies under the excluded wildcard, b.example.com is excluded itself.
        assert!(kept.iter().all(|e| e.dest.family() != Family::Dns));

        // An exact name under a universal wildcard can't be cut out of it.
        let opts = Options {
            exclude: Exclude {
                names: vec![Dest::Exact(name("x.work.example.com"))],
                nets: vec![],
            },
            ..Options::default()
        };
        refusal(entries.clone(), &opts, "domain_list[0]");
        let opts = Options {
            exact_domains: true,
            ..opts
        };
        assert_eq!(select(entries, &opts).unwrap().len(), 4);
    }

    #[test]
    fn exclusions_give_the_same_result_in_any_order() {
        let doc = br#"{"domain_list":[
            {"domain":"a.work.example.com","universal_domian":"work.example.com","protocol":"TCP","port":[443],"is_necessary":1},
            {"domain":"*.work.example.com","protocol":"TCP","port":[80],"is_necessary":1},
            {"domain":"b.example.org","protocol":"TCP","port":[443],"is_necessary":1}]}"#;
        let entries = crate::wecom::parse(doc, false).unwrap().entries;
        let name = |s: &str| Hostname::parse(s).unwrap();
        let inside = Dest::Exact(name("x.work.example.com"));
        let around = Dest::Wildcard(name("example.com"));
        for names in [
            vec![inside.clone(), around.clone()],
            vec![around.clone(), inside.clone()],
        ] {
            let opts = Options {
                exclude: Exclude {
                    names: names.clone(),
                    nets: vec![],
                },
                ..Options::default()
            };
            let kept = select(entries.clone(), &opts).unwrap();
            let shown: Vec<String> = kept.iter().map(|e| e.dest.to_string()).collect();
            assert_eq!(shown, ["b.example.org"], "{names:?}");
        }
    }

    #[test]
    fn a_wildcard_domains_universal_wildcard_is_excluded_too() {
        let doc = br#"{"domain_list":[
            {"domain":"*.a.example.com","universal_domian":"example.com","protocol":"TCP","port":[443],"is_necessary":1}]}"#;
        let entries = crate::wecom::parse(doc, false).unwrap().entries;
        let with = |names: &[&str]| Options {
            exclude: Exclude {
                names: names
                    .iter()
                    .map(|n| match n.strip_prefix("*.") {
                        Some(w) => Dest::Wildcard(Hostname::parse(w).unwrap()),
                        None => Dest::Exact(Hostname::parse(n).unwrap()),
                    })
                    .collect(),
                nets: vec![],
            },
            allow_empty: true,
            ..Options::default()
        };
        let shown = |names: &[&str]| -> Vec<String> {
            select(entries.clone(), &with(names))
                .unwrap()
                .iter()
                .map(|e| format!("{} {:?}", e.dest, e.universal.as_ref().map(|u| u.as_str())))
                .collect()
        };
        assert!(shown(&["*.example.com"]).is_empty());
        refusal(
            entries.clone(),
            &with(&["*.a.example.com"]),
            "wildcard .example.com",
        );
        refusal(
            entries.clone(),
            &with(&["x.example.com"]),
            "wildcard .example.com",
        );
    }

    /// The guard looks at the entry as listed: excluding its domain doesn't make an unrelated
    /// `universal_domian` acceptable; exact domains, which ignore it, do.
    #[test]
    fn an_excluded_name_with_an_unrelated_wildcard_is_still_refused() {
        let doc = br#"{"domain_list":[
            {"domain":"a.example.org","universal_domian":"work.example.com","protocol":"TCP","port":[443],"is_necessary":1}]}"#;
        let entries = crate::wecom::parse(doc, false).unwrap().entries;
        let opts = Options {
            exclude: Exclude {
                names: vec![Dest::Exact(Hostname::parse("a.example.org").unwrap())],
                nets: vec![],
            },
            ..Options::default()
        };
        let e = refusal(entries.clone(), &opts, "domain_list[0].universal_domian: \"work.example.com\" is neither the domain \"a.example.org\" nor a parent of it");
        assert_eq!(e.exit_code(), 4, "{e}");
        let opts = Options {
            exact_domains: true,
            allow_empty: true,
            ..opts
        };
        assert!(select(entries, &opts).unwrap().is_empty());
    }

    fn refused(doc: &str, opts: &Options) -> Option<String> {
        let entries = crate::wecom::parse(doc.as_bytes(), false).unwrap().entries;
        match select(entries, opts) {
            Ok(_) => None,
            Err(e) => {
                assert_eq!(e.exit_code(), 4, "{e}");
                Some(e.to_string())
            }
        }
    }

    fn domain(domain: &str, universal: &str) -> String {
        format!(
            r#"{{"domain_list":[{{"domain":"a.example.com","protocol":"TCP","port":[1],"is_necessary":1}},
               {{"domain":{domain:?},"universal_domian":{universal:?},"protocol":"TCP","port":[443],"is_necessary":1}}]}}"#
        )
    }

    #[test]
    fn wildcards_over_public_suffixes_are_refused() {
        let opts = Options::default();
        for (d, u, field, shown) in [
            ("*.com.cn", "", "domain", r#""*.com.cn""#),
            ("*.co.uk", "", "domain", r#""*.co.uk""#),
            ("*.github.io", "", "domain", r#""*.github.io""#),
            ("a.b.com.cn", "com.cn", "universal_domian", r#""com.cn""#),
            (
                "x.example.co.uk",
                "*.co.uk",
                "universal_domian",
                r#""co.uk""#,
            ),
        ] {
            let e = refused(&domain(d, u), &opts).unwrap_or_else(|| panic!("{d} {u} accepted"));
            assert!(
                e.contains(&format!(
                    "domain_list[1].{field}: {shown} is a public suffix"
                )),
                "{e}"
            );
        }
        // A registrable name under a suffix, and a wildcard over it, are fine.
        for (d, u) in [
            ("*.example.com.cn", ""),
            ("a.example.co.uk", "example.co.uk"),
            ("a.example.com", "example.com"),
            ("a.example.com", "a.example.com"),
            ("*.work.example.com", "work.example.com"),
            ("*.a.work.example.com", "example.com"),
        ] {
            assert_eq!(refused(&domain(d, u), &opts), None, "{d} {u}");
        }
        // Exact domains ignore universal_domian, so it opens nothing; a wildcard domain stays.
        let exact = Options {
            exact_domains: true,
            ..Options::default()
        };
        assert_eq!(refused(&domain("a.b.com.cn", "com.cn"), &exact), None);
        assert!(refused(&domain("*.com.cn", ""), &exact).is_some());
    }

    #[test]
    fn universal_domain_must_be_the_domain_or_a_parent() {
        let opts = Options::default();
        for (d, u) in [
            ("a.example.com", "evil.org"),
            ("a.example.com", "b.a.example.com"),
            ("a.example.com", "ample.com"),
            ("*.a.example.com", "b.a.example.com"),
        ] {
            let e = refused(&domain(d, u), &opts).unwrap_or_else(|| panic!("{d} {u} accepted"));
            assert!(
                e.contains(&format!(
                    "domain_list[1].universal_domian: {u:?} is neither the domain"
                )),
                "{e}"
            );
        }
        let exact = Options {
            exact_domains: true,
            ..Options::default()
        };
        assert_eq!(refused(&domain("a.example.com", "evil.org"), &exact), None);
        // A filtered-out entry allows nothing, so it isn't judged.
        let doc = domain("a.example.com", "evil.org").replace(
            r#""port":[443],"is_necessary":1"#,
            r#""port":[443],"is_necessary":0"#,
        );
        let necessary = Options {
            necessary_only: true,
            ..Options::default()
        };
        assert_eq!(refused(&doc, &necessary), None);
    }

    #[test]
    fn non_public_addresses_are_a_guard_except_the_users_own() {
        let entries = |doc: &str| crate::wecom::parse(doc.as_bytes(), false).unwrap().entries;
        let listed = entries(
            r#"{"ip_list":[{"ip":"115.238.203.109","protocol":"TCP","port":[443],"is_necessary":1},
                           {"ip":"169.254.169.254","protocol":"TCP","port":[80],"is_necessary":1},
                           {"ip":"100.0.0.0/8","protocol":"TCP","port":[443],"is_necessary":1}]}"#,
        );
        let e = refusal(
            listed.clone(),
            &Options::default(),
            r#"ip_list[1].ip: "169.254.169.254" lies inside 169.254.0.0/16 (link-local"#,
        );
        assert_eq!(e.exit_code(), 4);
        let without_1: Vec<Entry> = listed.iter().filter(|e| e.index != 1).cloned().collect();
        refusal(
            without_1,
            &Options::default(),
            r#"ip_list[2].ip: "100.0.0.0/8" overlaps 100.64.0.0/10 (shared address space"#,
        );
        let opts = Options {
            allow_nonpublic: true,
            ..Options::default()
        };
        assert_eq!(select(listed.clone(), &opts).unwrap().len(), 3);

        // The config's extras are exempt, and so is a listed address inside one of them.
        let mut extra = Response::default();
        crate::wecom::parse_list(
            ListKind::Ip,
            true,
            &[serde_json::json!({"ip":"169.254.0.0/16","protocol":"TCP","port":[80],"is_necessary":1})],
            false,
            &mut extra,
        )
        .unwrap();
        let mut with_extra: Vec<Entry> = listed.into_iter().filter(|e| e.index != 2).collect();
        with_extra.extend(extra.entries);
        assert_eq!(select(with_extra, &Options::default()).unwrap().len(), 3);
    }

    #[test]
    fn networks_that_add_up_across_port_groups_are_broad() {
        let entries = |ips: &[(&str, &str)]| {
            let items: Vec<String> = ips
                .iter()
                .map(|(ip, ports)| {
                    format!(r#"{{"ip":"{ip}","protocol":"TCP","port":{ports},"is_necessary":1}}"#)
                })
                .collect();
            let doc = format!(r#"{{"ip_list":[{}]}}"#, items.join(","));
            crate::wecom::parse(doc.as_bytes(), false).unwrap().entries
        };
        let refused = |ips: &[(&str, &str)]| select(entries(ips), &Options::default()).unwrap_err();
        let e = refused(&[("100.0.0.0/8", "[443,1000]"), ("101.0.0.0/8", "[443,1001]")]);
        assert!(
            e.to_string()
                .contains("add up to 100.0.0.0/7 or more on tcp port 443"),
            "{e}"
        );
        // Halves of halves fill the block too, whatever their ports around 443.
        let e = refused(&[
            ("101.0.0.0/8", "[\"400-500\"]"),
            ("100.128.0.0/9", "[443]"),
            ("100.64.0.0/10", "[\"443-444\"]"),
            ("100.0.0.0/10", "[1,443]"),
        ]);
        assert!(e.to_string().contains("on tcp port 443"), "{e}");
        let e = refused(&[("2400::/16", "[443,1]"), ("2401::/16", "[443,2]")]);
        assert!(e.to_string().contains("2400::/15"), "{e}");
        // Neighbours on different ports, or a block with a gap, are fine.
        let ok = |ips: &[(&str, &str)]| {
            let opts = Options {
                allow_nonpublic: true,
                ..Options::default()
            };
            select(entries(ips), &opts).unwrap()
        };
        ok(&[("100.0.0.0/8", "[443]"), ("101.0.0.0/8", "[444]")]);
        ok(&[("101.0.0.0/8", "[443]"), ("102.0.0.0/8", "[443]")]);
        ok(&[
            ("100.0.0.0/8", "[443]"),
            ("101.0.0.0/9", "[443]"),
            ("101.128.0.0/10", "[443]"),
        ]);
        let opts = Options {
            allow_broad: true,
            allow_nonpublic: true,
            ..Options::default()
        };
        select(
            entries(&[("100.0.0.0/8", "[443,1000]"), ("101.0.0.0/8", "[443,1001]")]),
            &opts,
        )
        .unwrap();
    }

    #[test]
    fn more_than_1024_ports_for_one_destination_is_broad() {
        let parse = |doc: &str| crate::wecom::parse(doc.as_bytes(), false).unwrap().entries;
        let ip = |ports: &str| {
            format!(r#"{{"ip":"101.0.0.1","protocol":"UDP","port":{ports},"is_necessary":1}}"#)
        };
        for ports in [r#"["1-65535"]"#, r#"["1-1025"]"#, r#"[1,"3-1026"]"#] {
            let e = select(
                parse(&format!(r#"{{"ip_list":[{}]}}"#, ip(ports))),
                &Options::default(),
            )
            .unwrap_err();
            assert_eq!(e.exit_code(), 4);
            assert!(
                e.to_string()
                    .contains("ip_list[0].port: 101.0.0.1/32 would be allowed on"),
                "{e}"
            );
        }
        select(
            parse(&format!(r#"{{"ip_list":[{}]}}"#, ip(r#"["1-1024"]"#))),
            &Options::default(),
        )
        .unwrap();
        // Two entries for one destination count together; a name's wildcard counts too.
        let doc = format!(
            r#"{{"ip_list":[{},{}]}}"#,
            ip(r#"["1-600"]"#),
            ip(r#"["601-1200"]"#)
        );
        refusal(
            parse(&doc),
            &Options::default(),
            "ip_list[1].port: 101.0.0.1/32 would be allowed on 1200 udp ports",
        );
        let doc = r#"{"domain_list":[
            {"domain":"a.example.com","universal_domian":"example.com","protocol":"TCP","port":["1-600"],"is_necessary":1},
            {"domain":"b.example.com","universal_domian":"example.com","protocol":"TCP","port":["601-1200"],"is_necessary":1}]}"#;
        refusal(
            parse(doc),
            &Options::default(),
            "domain_list[1].port: .example.com would be allowed on 1200 tcp ports",
        );
        let opts = Options {
            exact_domains: true,
            ..Options::default()
        };
        select(parse(doc), &opts).unwrap();
        let opts = Options {
            allow_broad: true,
            ..Options::default()
        };
        select(parse(doc), &opts).unwrap();
    }

    #[test]
    fn guards_refuse_empty_and_broad_lists() {
        let doc =
            br#"{"ip_list":[{"ip":"0.0.0.0/0","protocol":"TCP","port":[443],"is_necessary":0}]}"#;
        let entries = crate::wecom::parse(doc, false).unwrap().entries;
        refusal(
            entries.clone(),
            &Options::default(),
            "ip_list[0].ip: 0.0.0.0/0 is broader",
        );
        let opts = Options {
            necessary_only: true,
            ..Options::default()
        };
        assert_eq!(select(entries.clone(), &opts).unwrap_err().exit_code(), 4);
        let opts = Options {
            necessary_only: true,
            allow_empty: true,
            ..Options::default()
        };
        assert!(select(entries, &opts).unwrap().is_empty());

        // Two /8s are fine alone but add up to a /7.
        let doc = br#"{"ip_list":[{"ip":"10.0.0.0/8","protocol":"TCP","port":[443],"is_necessary":0},
                                  {"ip":"11.0.0.0/8","protocol":"TCP","port":[443],"is_necessary":0}]}"#;
        let entries = crate::wecom::parse(doc, false).unwrap().entries;
        let e = normalize(&entries, &Options::default(), true).unwrap_err();
        assert!(e.to_string().contains("10.0.0.0/7"), "{e}");
    }
}
