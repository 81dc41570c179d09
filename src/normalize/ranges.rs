//! Sets of addresses as sorted integer ranges, one family at a time: `u32` for IPv4, `u128` for
//! IPv6. One representation serves aggregation, exclusion, coverage and splitting back into
//! CIDRs: building a set is one sort and a merge, and every operation after that is a merge of
//! sorted lists or a binary search, with no allocation per address.
//!
//! Ranges are inclusive (`start..=end`), so a range can reach a family's last address without
//! an end that overflows.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// An address family's integers.
pub trait Addr: Copy + Ord + std::fmt::Debug {
    /// How many bits an address has.
    const BITS: u32;
    /// The address after this one; `None` after the family's last.
    fn next(self) -> Option<Self>;
    /// The address before this one; `None` before the first.
    fn prev(self) -> Option<Self>;
    fn widen(self) -> u128;
    /// The low `BITS` bits of `x` (callers pass values that fit).
    fn narrow(x: u128) -> Self;
    /// The prefix of length `len` that starts at `self` (`self` aligned, `len <= BITS`).
    fn net(self, len: u8) -> IpNet;
}

/// The families' integers differ only in their types.
macro_rules! addr {
    ($int:ty, $family:ident, $net:ident, $addr:ident) => {
        impl Addr for $int {
            const BITS: u32 = <$int>::BITS;
            fn next(self) -> Option<Self> {
                self.checked_add(1)
            }
            fn prev(self) -> Option<Self> {
                self.checked_sub(1)
            }
            fn widen(self) -> u128 {
                u128::from(self)
            }
            fn narrow(x: u128) -> Self {
                x as $int
            }
            fn net(self, len: u8) -> IpNet {
                IpNet::$family($net::new($addr::from(self), len).unwrap_or_default())
            }
        }
    };
}

addr!(u32, V4, Ipv4Net, Ipv4Addr);
addr!(u128, V6, Ipv6Net, Ipv6Addr);

/// True when a range that ends at `end` and one that starts at `start` (not before the first's
/// start) overlap or touch, so that they merge into one.
pub(crate) fn joins<A: Addr>(end: A, start: A) -> bool {
    end.next().is_none_or(|after| start <= after)
}

/// The last address of the block of `2^host` addresses that starts at the aligned `start`.
pub(crate) fn block_end(start: u128, host: u32) -> u128 {
    if host >= 128 {
        u128::MAX
    } else {
        start | ((1u128 << host) - 1)
    }
}

/// Addresses of one family as sorted, disjoint, non-adjacent inclusive ranges: equal sets have
/// equal ranges, whatever prefixes or order they were built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet<A> {
    ranges: Vec<(A, A)>,
}

impl<A> Default for RangeSet<A> {
    fn default() -> Self {
        RangeSet { ranges: Vec::new() }
    }
}

impl<A: Addr> RangeSet<A> {
    /// The set of any inclusive ranges: one sort, then a merge in place.
    pub fn from_ranges(mut ranges: Vec<(A, A)>) -> Self {
        ranges.sort_unstable();
        let mut kept = 0;
        for i in 0..ranges.len() {
            let (start, end) = ranges[i];
            if kept > 0 && joins(ranges[kept - 1].1, start) {
                ranges[kept - 1].1 = ranges[kept - 1].1.max(end);
            } else {
                ranges[kept] = (start, end);
                kept += 1;
            }
        }
        ranges.truncate(kept);
        RangeSet { ranges }
    }

    /// The set's ranges, sorted, none overlapping or touching another.
    pub fn ranges(&self) -> &[(A, A)] {
        &self.ranges
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Index of the first range that ends at or after `a`: the only one that can hold `a`.
    fn first_ending_from(&self, a: A) -> usize {
        self.ranges.partition_point(|r| r.1 < a)
    }

    /// The first range that ends at or after `start`: the only one that can hold `start`, and
    /// the first to hold an address after it.
    fn holder(&self, start: A) -> Option<(A, A)> {
        self.ranges.get(self.first_ending_from(start)).copied()
    }

    /// True when every address of `start..=end` is in the set.
    pub fn covers(&self, start: A, end: A) -> bool {
        covered((start, end), self.holder(start))
    }

    /// True when some address of `start..=end` is in the set.
    pub fn intersects(&self, start: A, end: A) -> bool {
        touched((start, end), self.holder(start))
    }

    /// Every address in either set: one merge of the two sorted lists.
    pub fn union(&self, other: &Self) -> Self {
        let mut out: Vec<(A, A)> = Vec::with_capacity(self.ranges.len() + other.ranges.len());
        let (mut a, mut b) = (
            self.ranges.iter().peekable(),
            other.ranges.iter().peekable(),
        );
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x.0 <= y.0 => a.next(),
                (Some(_), Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, _) => b.next(),
            };
            let Some(&(start, end)) = next else { break };
            match out.last_mut() {
                Some(last) if joins(last.1, start) => last.1 = last.1.max(end),
                _ => out.push((start, end)),
            }
        }
        RangeSet { ranges: out }
    }

    /// The addresses of `self` that are not in `other`: one walk over both sorted lists.
    pub fn subtract(&self, other: &Self) -> Self {
        let mut out = Vec::with_capacity(self.ranges.len());
        let mut cut = other.ranges.iter().peekable();
        for &(start, end) in &self.ranges {
            // Cuts that end before this range can't touch it, nor any later one.
            while cut.next_if(|c| c.1 < start).is_some() {}
            let mut from = Some(start);
            while let (Some(f), Some(&&(cs, ce))) = (from, cut.peek()) {
                if cs > end {
                    break;
                }
                if cs > f {
                    // `cs > f >= 0`, so `cs` has a predecessor.
                    out.push((f, cs.prev().unwrap_or(cs)));
                }
                from = ce.next().filter(|&n| n <= end);
                if ce > end {
                    // The cut reaches into the next range too: keep it for that one.
                    break;
                }
                cut.next();
            }
            if let Some(f) = from {
                out.push((f, end));
            }
        }
        RangeSet { ranges: out }
    }

    /// The fewest prefixes that hold exactly the set's addresses, in address order: each time
    /// the largest block that starts where the last one ended, is aligned on its size and fits.
    pub fn prefixes(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.ranges.iter().flat_map(|&(start, end)| Prefixes::<A> {
            next: Some(start.widen()),
            end: end.widen(),
            _family: std::marker::PhantomData,
        })
    }
}

/// The prefixes of the range from `start` to `end` (inclusive, addresses of family `A`,
/// widened), first to last.
pub fn prefixes_between<A: Addr>(start: u128, end: u128) -> impl Iterator<Item = IpNet> {
    Prefixes::<A> {
        next: Some(start),
        end,
        _family: std::marker::PhantomData,
    }
}

/// The prefixes of one range, first to last.
struct Prefixes<A> {
    next: Option<u128>,
    end: u128,
    _family: std::marker::PhantomData<A>,
}

impl<A: Addr> Iterator for Prefixes<A> {
    type Item = IpNet;

    fn next(&mut self) -> Option<IpNet> {
        let start = self.next?;
        let aligned = if start == 0 {
            A::BITS
        } else {
            start.trailing_zeros().min(A::BITS)
        };
        // How many addresses follow `start` in the range; the block may hold at most one more.
        let left = self.end - start;
        let fits = if left == u128::MAX {
            128
        } else {
            127 - (left + 1).leading_zeros()
        };
        let host = aligned.min(fits);
        let last = block_end(start, host);
        self.next = (last < self.end).then(|| last + 1);
        // `host <= BITS <= 128`, so the length fits a u8.
        Some(A::narrow(start).net((A::BITS - host) as u8))
    }
}

/// A prefix's first and last address.
pub fn v4_span(n: &Ipv4Net) -> (u32, u32) {
    (u32::from(n.network()), u32::from(n.broadcast()))
}

pub fn v6_span(n: &Ipv6Net) -> (u128, u128) {
    (u128::from(n.network()), u128::from(n.broadcast()))
}

/// The first and last address of `n`, widened: for a walk over both families at once.
pub fn span(n: &IpNet) -> (u128, u128) {
    match n {
        IpNet::V4(n) => {
            let (s, e) = v4_span(n);
            (u128::from(s), u128::from(e))
        }
        IpNet::V6(n) => v6_span(n),
    }
}

/// Whether `held`, the one range that can hold `span`'s first address, holds all of `span`.
fn covered<T: Ord>((start, end): (T, T), held: Option<(T, T)>) -> bool {
    held.is_some_and(|r| r.0 <= start && end <= r.1)
}

/// Whether `held`, the one range that can hold an address of `span` from its first on, holds
/// one: it ends at or after the first, so it need only start by the last.
fn touched<T: Ord>((_, end): (T, T), held: Option<(T, T)>) -> bool {
    held.is_some_and(|r| r.0 <= end)
}

/// Addresses of both families.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddrSet {
    pub v4: RangeSet<u32>,
    pub v6: RangeSet<u128>,
}

impl AddrSet {
    /// The addresses of any prefixes: one sort per family.
    pub fn from_nets<'a>(nets: impl IntoIterator<Item = &'a IpNet>) -> Self {
        let nets = nets.into_iter();
        let (mut v4, mut v6) = (Vec::with_capacity(nets.size_hint().0), Vec::new());
        for n in nets {
            match n {
                IpNet::V4(n) => v4.push(v4_span(n)),
                IpNet::V6(n) => v6.push(v6_span(n)),
            }
        }
        AddrSet {
            v4: RangeSet::from_ranges(v4),
            v6: RangeSet::from_ranges(v6),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// True when every address of `n` is in the set.
    pub fn covers(&self, n: &IpNet) -> bool {
        covered(span(n), self.holder(n))
    }

    /// True when some address of `n` is in the set.
    pub fn intersects(&self, n: &IpNet) -> bool {
        touched(span(n), self.holder(n))
    }

    /// The one range of `n`'s family that can hold its first address (`RangeSet::holder`),
    /// widened: both families answer with one comparison.
    fn holder(&self, n: &IpNet) -> Option<(u128, u128)> {
        fn widened<A: Addr>(set: &RangeSet<A>, start: A) -> Option<(u128, u128)> {
            set.holder(start).map(|r| (r.0.widen(), r.1.widen()))
        }
        match n {
            IpNet::V4(n) => widened(&self.v4, v4_span(n).0),
            IpNet::V6(n) => widened(&self.v6, v6_span(n).0),
        }
    }

    pub fn subtract(&self, other: &AddrSet) -> AddrSet {
        AddrSet {
            v4: self.v4.subtract(&other.v4),
            v6: self.v6.subtract(&other.v6),
        }
    }

    /// The fewest prefixes that hold exactly these addresses: IPv4 first, each family in
    /// address order (the order of `IpNet`'s `Ord` for disjoint prefixes).
    pub fn prefixes(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.v4.prefixes().chain(self.v6.prefixes())
    }
}

#[cfg(test)]
mod tests {
    //! Each operation against a naive model: the set of its addresses, one by one, in two
    //! windows of 64 addresses, at each end of a family's space (where the overflows are).

    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    const WINDOW: u128 = 64;

    fn last<A: Addr>() -> u128 {
        if A::BITS == 128 {
            u128::MAX
        } else {
            (1u128 << A::BITS) - 1
        }
    }

    /// A range in the low or the high window, from offsets in it.
    fn range<A: Addr>((high, a, b): (bool, u8, u8)) -> (A, A) {
        let base = if high { last::<A>() - (WINDOW - 1) } else { 0 };
        let (a, b) = (u128::from(a.min(b)), u128::from(a.max(b)));
        (A::narrow(base + a), A::narrow(base + b))
    }

    fn ranges_strategy() -> impl Strategy<Value = Vec<(bool, u8, u8)>> {
        prop::collection::vec((any::<bool>(), 0u8..64, 0u8..64), 0..8)
    }

    /// The model: every address, one by one.
    fn model<A: Addr>(ranges: &[(A, A)]) -> BTreeSet<u128> {
        ranges
            .iter()
            .flat_map(|&(s, e)| s.widen()..=e.widen())
            .collect()
    }

    fn set_of<A: Addr>(raw: &[(bool, u8, u8)]) -> (RangeSet<A>, BTreeSet<u128>) {
        let ranges: Vec<(A, A)> = raw.iter().map(|&r| range(r)).collect();
        let m = model(&ranges);
        (RangeSet::from_ranges(ranges), m)
    }

    /// Sorted, disjoint, not touching, and holding exactly the model's addresses.
    fn check_canonical<A: Addr>(
        set: &RangeSet<A>,
        m: &BTreeSet<u128>,
    ) -> Result<(), TestCaseError> {
        for w in set.ranges().windows(2) {
            prop_assert!(w[0].1.widen() + 1 < w[1].0.widen(), "{:?}", set);
        }
        for r in set.ranges() {
            prop_assert!(r.0 <= r.1);
        }
        prop_assert_eq!(&model(set.ranges()), m);
        Ok(())
    }

    /// The prefixes the model's addresses make: every aligned block inside a window that is
    /// all in the set and whose parent block isn't.
    fn model_prefixes<A: Addr>(m: &BTreeSet<u128>) -> Vec<(u128, u32)> {
        let full = |start: u128, host: u32| (0..1u128 << host).all(|k| m.contains(&(start + k)));
        let mut out = Vec::new();
        for base in [0, last::<A>() - (WINDOW - 1)] {
            for host in 0..=6u32 {
                for start in (base..=base + (WINDOW - 1)).step_by(1 << host) {
                    let parent = start & !((1u128 << (host + 1)) - 1);
                    let parent_in_window = host < 6;
                    if full(start, host) && !(parent_in_window && full(parent, host + 1)) {
                        out.push((start, A::BITS - host));
                    }
                }
            }
        }
        out.sort_unstable();
        out
    }

    fn prefixes_of<A: Addr>(set: &RangeSet<A>) -> Vec<(u128, u32)> {
        set.prefixes()
            .map(|n| {
                let start = match n {
                    IpNet::V4(n) => u128::from(u32::from(n.network())),
                    IpNet::V6(n) => u128::from(n.network()),
                };
                (start, u32::from(n.prefix_len()))
            })
            .collect()
    }

    fn check_all<A: Addr>(
        a: &[(bool, u8, u8)],
        b: &[(bool, u8, u8)],
        probe: (bool, u8, u8),
        (high, at, host): (bool, u8, u32),
    ) -> Result<(), TestCaseError> {
        let (x, mx) = set_of::<A>(a);
        let (y, my) = set_of::<A>(b);
        check_canonical(&x, &mx)?;
        let union: BTreeSet<u128> = mx.union(&my).copied().collect();
        check_canonical(&x.union(&y), &union)?;
        let diff: BTreeSet<u128> = mx.difference(&my).copied().collect();
        check_canonical(&x.subtract(&y), &diff)?;
        let (s, e) = range::<A>(probe);
        let probe: Vec<u128> = (s.widen()..=e.widen()).collect();
        prop_assert_eq!(x.covers(s, e), probe.iter().all(|a| mx.contains(a)));
        prop_assert_eq!(x.intersects(s, e), probe.iter().any(|a| mx.contains(a)));
        prop_assert_eq!(prefixes_of(&x), model_prefixes::<A>(&mx));
        // The same questions asked of a prefix, of a set of both families.
        let block = 1u128 << host;
        let start = range::<A>((high, at, at)).0.widen() & !(block - 1);
        let net = A::narrow(start).net((A::BITS - host) as u8);
        let other: IpNet = if A::BITS == 32 { "::/0" } else { "0.0.0.0/0" }
            .parse()
            .unwrap();
        let both = AddrSet::from_nets(x.prefixes().chain([other]).collect::<Vec<_>>().iter());
        let addrs: Vec<u128> = (0..block).map(|k| start + k).collect();
        prop_assert_eq!(
            both.covers(&net),
            addrs.iter().all(|a| mx.contains(a)),
            "{}",
            net
        );
        prop_assert_eq!(
            both.intersects(&net),
            addrs.iter().any(|a| mx.contains(a)),
            "{}",
            net
        );
        Ok(())
    }

    proptest! {
        #[test]
        fn ipv4_ranges_match_the_model(a in ranges_strategy(), b in ranges_strategy(), p in (any::<bool>(), 0u8..64, 0u8..64), q in (any::<bool>(), 0u8..64, 0u32..7)) {
            check_all::<u32>(&a, &b, p, q)?;
        }

        #[test]
        fn ipv6_ranges_match_the_model(a in ranges_strategy(), b in ranges_strategy(), p in (any::<bool>(), 0u8..64, 0u8..64), q in (any::<bool>(), 0u8..64, 0u32..7)) {
            check_all::<u128>(&a, &b, p, q)?;
        }
    }

    /// The edges proptest may not pick: ranges that touch at a range end, the whole space,
    /// and the last address alone.
    #[test]
    fn edges_of_the_space() {
        let all = RangeSet::from_ranges(vec![(0u32, 5), (6, u32::MAX)]);
        assert_eq!(all.ranges(), [(0, u32::MAX)]);
        assert_eq!(
            all.prefixes().collect::<Vec<_>>(),
            ["0.0.0.0/0".parse::<IpNet>().unwrap()]
        );
        let top = RangeSet::from_ranges(vec![(u128::MAX, u128::MAX)]);
        assert_eq!(
            top.prefixes().map(|n| n.to_string()).collect::<Vec<_>>(),
            ["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"]
        );
        let whole = RangeSet::from_ranges(vec![(0u128, u128::MAX)]);
        assert!(whole.subtract(&whole).is_empty());
        assert_eq!(whole.subtract(&top).ranges(), [(0, u128::MAX - 1)]);
        assert_eq!(
            whole
                .subtract(&RangeSet::from_ranges(vec![(0, 0)]))
                .ranges(),
            [(1, u128::MAX)]
        );
        // Two ranges one address apart stay two; touching ones merge.
        let apart = RangeSet::from_ranges(vec![(10u32, 19), (21, 30)]);
        assert_eq!(apart.ranges(), [(10, 19), (21, 30)]);
        let touching = apart.union(&RangeSet::from_ranges(vec![(20, 20)]));
        assert_eq!(touching.ranges(), [(10, 30)]);
        assert!(!apart.covers(19, 21) && apart.covers(21, 30));
        assert!(!apart.intersects(20, 20) && apart.intersects(20, 21) && apart.intersects(19, 20));
    }
}
