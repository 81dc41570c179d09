//! `explain DEST[:PORT[/PROTO]]`: whether each target allows a destination, by which group,
//! and which entries of the list put it there, for "why is this blocked" (as Capirca's
//! aclcheck does for its policies).
//!
//! Each target is judged on its own policy and the way it matches: pfSense has no wildcards,
//! Squid proxies TCP only and matches names exactly, and at L3 a name reaches iptables,
//! ip6tables and nftables through dnsmasq, whose `/name/` matches every name below it too.

use ipnet::IpNet;

use crate::model::{Dest, Entry, Family, Hostname, PortRange, PortSet, Protocol};
use crate::normalize::ranges::AddrSet;
use crate::normalize::Policy;
use crate::render::DnsSets;
use crate::target::Target;

/// What is asked: a destination, and the port and protocol if given (else any will do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub dest: Dest,
    pub port: Option<u16>,
    pub protocol: Option<Protocol>,
}

/// Reads `DEST[:PORT[/PROTO]]`: `1.2.3.4`, `1.2.3.0/24:443/tcp`, `[2001:db8::1]:443/udp`,
/// `a.example.com:80`, `*.example.com` (the name and every name below it). An IPv6 address
/// with a port takes brackets.
pub fn parse_query(s: &str) -> Result<Query, String> {
    let (dest, rest) = if let Some(inner) = s.strip_prefix('[') {
        let (dest, after) = inner
            .split_once(']')
            .ok_or_else(|| format!("{s:?}: a '[' without its ']'"))?;
        match after {
            "" => (dest, None),
            _ => match after.strip_prefix(':') {
                Some(rest) => (dest, Some(rest)),
                None => return Err(format!("{s:?}: expected :PORT after ']'")),
            },
        }
    } else if s.matches(':').count() == 1 {
        let (dest, rest) = s.split_once(':').unwrap_or((s, ""));
        (dest, Some(rest))
    } else {
        (s, None)
    };
    let (port, protocol) = match rest {
        None => (None, None),
        Some(rest) => {
            let (port, proto) = match rest.split_once('/') {
                Some((port, proto)) => (port, Some(proto)),
                None => (rest, None),
            };
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|p| *p >= 1 && !port.starts_with('0') && !port.starts_with('+'))
                .ok_or_else(|| format!("{port:?} is not a port (1-65535)"))?;
            let protocol = match proto.map(str::to_ascii_lowercase).as_deref() {
                None => None,
                Some("tcp") => Some(Protocol::Tcp),
                Some("udp") => Some(Protocol::Udp),
                Some(_) => {
                    return Err(format!(
                        "{:?} is not a protocol (tcp or udp)",
                        proto.unwrap_or_default()
                    ))
                }
            };
            (Some(port), protocol)
        }
    };
    Ok(Query {
        dest: parse_dest(dest)?,
        port,
        protocol,
    })
}

fn parse_dest(s: &str) -> Result<Dest, String> {
    if let Ok(addr) = s.parse::<std::net::IpAddr>() {
        return Ok(Dest::Net(IpNet::from(addr)));
    }
    if s.contains('/') {
        let net: IpNet = s
            .parse()
            .map_err(|_| format!("{s:?} is not an address, a CIDR or a name"))?;
        if net.trunc() != net {
            return Err(format!(
                "{s:?} has host bits set: write {} for the network or {} for the host",
                net.trunc(),
                net.addr()
            ));
        }
        return Ok(Dest::Net(net));
    }
    let (wildcard, name) = match s.strip_prefix("*.").or_else(|| s.strip_prefix('.')) {
        Some(name) => (true, name),
        None => (false, s),
    };
    let host = Hostname::parse(name)
        .map_err(|why| format!("{s:?} is not an address, a CIDR or a name: as a name it {why}"))?;
    Ok(if wildcard {
        Dest::Wildcard(host)
    } else {
        Dest::Exact(host)
    })
}

/// A target's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// All of the destination, on the port (or some port) and protocol asked.
    Allowed,
    /// Some of it (a CIDR partly covered, names below a wildcard asked), or on other ports.
    Partly,
    NotAllowed,
    /// The target can't say: why.
    DoesNotApply(&'static str),
}

/// An entry of the list that put (part of) the destination into a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// `ip_list[3]`, `extra.domain_list[0]`.
    pub location: String,
    pub necessary: bool,
    pub description: String,
}

/// A group of the target's policy that allows (part of) the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMatch {
    pub protocol: Protocol,
    pub ports: PortSet,
    /// `v4_tcp_443`: the group's name in every file.
    pub slug: String,
    /// The group's values that meet the destination.
    pub members: Vec<Dest>,
    pub sources: Vec<Source>,
}

#[derive(Debug)]
pub struct Answer {
    pub target: Target,
    pub verdict: Verdict,
    pub groups: Vec<GroupMatch>,
    /// What the user should know about how this target matches (dnsmasq's subdomains,
    /// pfSense's missing wildcards).
    pub notes: Vec<String>,
}

/// Everything `explain` needs besides the target's policy.
pub struct Context<'a> {
    pub entries: &'a [Entry],
    pub exact_domains: bool,
    pub dns_sets: DnsSets,
    /// The family of pfSense's source when it is an address or network: its rules reach only
    /// that family's addresses.
    pub pfsense_source_family: Option<Family>,
}

/// How much of the asked destination a value allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cover {
    Full,
    Part,
}

/// Whether names reach the target through dnsmasq's sets, which match every name below.
fn through_dnsmasq(target: Target) -> bool {
    matches!(
        target,
        Target::Iptables | Target::Ip6tables | Target::Nftables
    )
}

/// How much of `q` the value `v` allows, matched as the target matches it.
fn cover(v: &Dest, q: &Dest, l3: bool) -> Option<Cover> {
    match (v, q) {
        (Dest::Net(v), Dest::Net(q)) => {
            if v.contains(q) {
                Some(Cover::Full)
            } else if q.contains(v) {
                Some(Cover::Part)
            } else {
                None
            }
        }
        (Dest::Net(_), _) | (_, Dest::Net(_)) => None,
        (Dest::Wildcard(w), Dest::Exact(n) | Dest::Wildcard(n)) if n.is_within(w) => {
            Some(Cover::Full)
        }
        (Dest::Exact(e), Dest::Exact(n)) if e == n || (l3 && n.is_within(e)) => Some(Cover::Full),
        (Dest::Exact(e), Dest::Wildcard(w)) if l3 && w.is_within(e) => Some(Cover::Full),
        (Dest::Exact(v) | Dest::Wildcard(v), Dest::Wildcard(w)) if v.is_within(w) => {
            Some(Cover::Part)
        }
        _ => None,
    }
}

/// The protocols the target can judge the query on, or why it can't.
fn protocols(target: Target, q: &Query, cx: &Context) -> Result<Vec<Protocol>, &'static str> {
    let (family, dns_sets) = (q.dest.family(), cx.dns_sets);
    match (target, family) {
        (Target::Pfsense, Family::Ipv6) if cx.pfsense_source_family == Some(Family::Ipv4) => {
            return Err("its rules come from an IPv4 source (--pfsense-source), which no rule can take to an IPv6 address")
        }
        (Target::Pfsense, Family::Ipv4) if cx.pfsense_source_family == Some(Family::Ipv6) => {
            return Err("its rules come from an IPv6 source (--pfsense-source), which no rule can take to an IPv4 address")
        }
        (Target::Dnsmasq | Target::Ipset, _) => {
            return Err(
                "it only fills or holds the DNS-fed sets; iptables, ip6tables and nftables match them",
            )
        }
        (Target::Iptables, Family::Ipv6) => return Err("an IPv6 destination (see ip6tables)"),
        (Target::Ip6tables, Family::Ipv4) => return Err("an IPv4 destination (see iptables)"),
        (Target::Iptables | Target::Ip6tables, Family::Dns) if dns_sets != DnsSets::Ipset => {
            return Err(
                "it matches names only through the ipset sets that dnsmasq fills with --dnsmasq-sets ipset",
            )
        }
        (Target::Nftables, Family::Dns) if dns_sets != DnsSets::Nftset => {
            return Err(
                "it matches names only through the nftables sets that dnsmasq fills with --dnsmasq-sets nftset",
            )
        }
        _ => {}
    }
    let mut protos = match q.protocol {
        Some(p) => vec![p],
        None => vec![Protocol::Tcp, Protocol::Udp],
    };
    if target == Target::Squid {
        protos.retain(|p| *p == Protocol::Tcp);
        if protos.is_empty() {
            return Err("Squid proxies TCP only");
        }
    }
    Ok(protos)
}

/// The set of one port (`None` for port 0, which `parse_query` never gives).
fn single(port: u16) -> Option<PortSet> {
    PortSet::new(PortRange::new(port, port).into_iter().collect())
}

fn overlaps(a: &PortSet, b: &PortSet) -> bool {
    a.ranges().iter().any(|x| {
        b.ranges()
            .iter()
            .any(|y| x.start <= y.end && y.start <= x.end)
    })
}

fn add(set: &mut Option<PortSet>, ports: &PortSet) {
    *set = Some(match set.take() {
        Some(s) => s.union(ports),
        None => ports.clone(),
    });
}

/// The ports on which every address of `q` is allowed, given each matching group's ports and
/// how its members cover `q`.
fn fully_covered_ports(q: &IpNet, matched: &[(&PortSet, Vec<(Dest, Cover)>)]) -> Option<PortSet> {
    let mut cuts: Vec<u32> = matched
        .iter()
        .flat_map(|(ports, _)| ports.ranges().iter())
        .flat_map(|r| [u32::from(r.start), u32::from(r.end) + 1])
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut full = Vec::new();
    for w in cuts.windows(2) {
        let (lo, hi) = (w[0], w[1] - 1);
        let pieces: Vec<IpNet> = matched
            .iter()
            .filter(|(ports, _)| {
                ports
                    .ranges()
                    .iter()
                    .any(|r| u32::from(r.start) <= lo && lo <= u32::from(r.end))
            })
            .flat_map(|(_, members)| members.iter())
            .filter_map(|(d, c)| match (d, c) {
                (_, Cover::Full) => Some(*q),
                (Dest::Net(n), Cover::Part) => Some(*n),
                _ => None,
            })
            .collect();
        // Every piece lies inside `q`, so covering it means making it up exactly.
        if AddrSet::from_nets(&pieces).covers(q) {
            // Both are port numbers: `hi` < the largest cut <= 65536.
            full.extend(PortRange::new(lo as u16, hi as u16));
        }
    }
    PortSet::new(full)
}

/// Whether the value `v` (an entry's destination) lies in the group member `m`.
fn within_member(v: &Dest, m: &Dest, l3: bool) -> bool {
    match (m, v) {
        (Dest::Net(m), Dest::Net(v)) => m.contains(v),
        (Dest::Wildcard(w), Dest::Exact(h) | Dest::Wildcard(h)) => h.is_within(w),
        (Dest::Exact(e), Dest::Exact(h)) => e == h || (l3 && h.is_within(e)),
        (Dest::Exact(e), Dest::Wildcard(h)) => l3 && h.is_within(e),
        _ => false,
    }
}

/// One target's answer, from its own policy (as `render` makes it for that target).
pub fn explain(
    target: Target,
    policy: &Policy,
    slugs: &[String],
    q: &Query,
    cx: &Context,
) -> Answer {
    let mut answer = Answer {
        target,
        verdict: Verdict::NotAllowed,
        groups: Vec::new(),
        notes: Vec::new(),
    };
    let protos = match protocols(target, q, cx) {
        Ok(p) => p,
        Err(why) => {
            answer.verdict = Verdict::DoesNotApply(why);
            return answer;
        }
    };
    let l3 = through_dnsmasq(target);
    let asked = match q.port.map(single) {
        Some(None) => return answer,
        Some(Some(set)) => Some(set),
        None => None,
    };
    let fits = |set: &Option<PortSet>| match (set, &asked) {
        (None, _) => false,
        (Some(set), Some(port)) => set.contains_set(port),
        (Some(_), None) => true,
    };
    let (mut allowed, mut partly) = (false, false);
    // Groups that hold the destination on other ports than the one asked.
    let mut elsewhere: Vec<String> = Vec::new();
    for &p in &protos {
        let mut matched: Vec<(usize, Vec<(Dest, Cover)>)> = Vec::new();
        for (i, g) in policy.groups.iter().enumerate() {
            if g.protocol != p || g.family != q.dest.family() {
                continue;
            }
            let members: Vec<(Dest, Cover)> = g
                .members
                .iter()
                .filter_map(|m| cover(&m.dest, &q.dest, l3).map(|c| (m.dest.clone(), c)))
                .collect();
            if !members.is_empty() {
                matched.push((i, members));
            }
        }
        let mut any: Option<PortSet> = None;
        for (i, _) in &matched {
            add(&mut any, &policy.groups[*i].ports);
        }
        let full = match &q.dest {
            Dest::Net(net) => {
                let by_ports: Vec<(&PortSet, Vec<(Dest, Cover)>)> = matched
                    .iter()
                    .map(|(i, m)| (&policy.groups[*i].ports, m.clone()))
                    .collect();
                fully_covered_ports(net, &by_ports)
            }
            _ => {
                let mut full = None;
                for (i, m) in &matched {
                    if m.iter().any(|(_, c)| *c == Cover::Full) {
                        add(&mut full, &policy.groups[*i].ports);
                    }
                }
                full
            }
        };
        allowed |= fits(&full);
        partly |= fits(&any);
        for (i, members) in matched {
            let g = &policy.groups[i];
            if asked
                .as_ref()
                .is_some_and(|port| !g.ports.contains_set(port))
            {
                elsewhere.push(format!(
                    "{} {} (group {})",
                    p.as_str(),
                    g.ports,
                    slugs.get(i).map_or("", String::as_str)
                ));
                continue;
            }
            let members: Vec<Dest> = members.into_iter().map(|(d, _)| d).collect();
            let on = asked.as_ref().unwrap_or(&g.ports);
            let sources = sources(cx, p, on, &members, &q.dest, l3);
            answer.groups.push(GroupMatch {
                protocol: p,
                ports: g.ports.clone(),
                slug: slugs.get(i).cloned().unwrap_or_default(),
                members,
                sources,
            });
        }
    }
    answer.verdict = if allowed {
        Verdict::Allowed
    } else if partly {
        Verdict::Partly
    } else {
        Verdict::NotAllowed
    };
    if !elsewhere.is_empty() {
        answer.notes.push(format!(
            "listed on other ports only: {}",
            elsewhere.join(", ")
        ));
    }
    if l3 && answer.groups.iter().flat_map(|g| &g.members).any(|m| {
        matches!((m, &q.dest), (Dest::Exact(e), Dest::Exact(n) | Dest::Wildcard(n)) if e != n && n.is_within(e))
    }) {
        answer.notes.push(
            "dnsmasq's /name/ matches the names below a listed name too, so at L3 they pass with it"
                .to_owned(),
        );
    }
    // Only worth saying where it is the reason for a "no".
    if let (Dest::Exact(n) | Dest::Wildcard(n), false) =
        (&q.dest, answer.verdict == Verdict::Allowed)
    {
        let lost: Vec<&Hostname> = policy
            .inexpressible
            .iter()
            .filter(|w| n.is_within(w) || w.is_within(n))
            .collect();
        for w in lost {
            answer.notes.push(format!(
                "the list's wildcard .{w} is not in {}: it can't express wildcards, only exact names",
                target.file_name()
            ));
        }
    }
    answer
}

/// The entries of the list that put a part of the destination into a group: on its protocol
/// and on `ports` (the port asked, or the group's), inside one of its matching members, and
/// meeting the destination asked.
fn sources(
    cx: &Context,
    p: Protocol,
    ports: &PortSet,
    members: &[Dest],
    q: &Dest,
    l3: bool,
) -> Vec<Source> {
    let mut out: Vec<Source> = Vec::new();
    for e in cx.entries {
        if !e.protocols.contains(&p) || !overlaps(&e.ports, ports) {
            continue;
        }
        let universal = e
            .universal
            .iter()
            .filter(|_| !cx.exact_domains)
            .map(|u| Dest::Wildcard(u.clone()));
        let meets = std::iter::once(e.dest.clone()).chain(universal).any(|d| {
            cover(&d, q, l3).is_some() && members.iter().any(|m| within_member(&d, m, l3))
        });
        if meets {
            let source = Source {
                location: e.location(),
                necessary: e.necessary,
                description: e.description.to_string(),
            };
            if !out.contains(&source) {
                out.push(source);
            }
        }
    }
    out
}

impl Answer {
    /// The answer as text: a verdict line, then each group and the entries behind it.
    pub fn text(&self) -> String {
        let verdict = match &self.verdict {
            Verdict::Allowed => "allowed".to_owned(),
            Verdict::Partly => "partly allowed".to_owned(),
            Verdict::NotAllowed => "not allowed".to_owned(),
            Verdict::DoesNotApply(why) => format!("does not apply: {why}"),
        };
        let mut out = format!("{}: {verdict}\n", self.target.name());
        for g in &self.groups {
            let members: Vec<String> = g.members.iter().map(ToString::to_string).collect();
            out.push_str(&format!(
                "  {} {} (group {}): {}\n",
                g.protocol.as_str(),
                g.ports,
                g.slug,
                members.join(" ")
            ));
            for s in &g.sources {
                let description = crate::text::sanitize_line(&s.description);
                out.push_str(&format!(
                    "    {}{}{}\n",
                    s.location,
                    if s.necessary { " necessary" } else { "" },
                    if description.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", crate::text::quote(&description))
                    }
                ));
            }
        }
        for n in &self.notes {
            out.push_str(&format!("  note: {n}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_in_every_spelling() {
        let q = parse_query("101.20.0.0/23:443/TCP").unwrap();
        assert_eq!(q.dest.to_string(), "101.20.0.0/23");
        assert_eq!((q.port, q.protocol), (Some(443), Some(Protocol::Tcp)));
        let q = parse_query("[2001:da8::1]:53/udp").unwrap();
        assert_eq!(q.dest.to_string(), "2001:da8::1/128");
        assert_eq!((q.port, q.protocol), (Some(53), Some(Protocol::Udp)));
        let q = parse_query("2001:da8::/32").unwrap();
        assert_eq!((q.dest.to_string(), q.port), ("2001:da8::/32".into(), None));
        let q = parse_query("*.Work.Example.com:80").unwrap();
        assert_eq!(q.dest.to_string(), ".work.example.com");
        assert_eq!((q.port, q.protocol), (Some(80), None));
        assert_eq!(
            parse_query("a.example.com").unwrap().dest.to_string(),
            "a.example.com"
        );
        for bad in [
            "10.0.0.1/8",
            "a.example.com:0",
            "a.example.com:65536",
            "a.example.com:443/icmp",
            "a.example.com:0443",
            "[2001:db8::1",
            "[2001:db8::1]443",
            "localhost",
            "a b.example.com",
            "a.example.com:",
        ] {
            assert!(parse_query(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn covering_follows_each_targets_matching() {
        let name = |s: &str| Hostname::parse(s).unwrap();
        let exact = |s: &str| Dest::Exact(name(s));
        let wild = |s: &str| Dest::Wildcard(name(s));
        // dnsmasq's /a.example.com/ covers b.a.example.com at L3; Squid's exact name doesn't.
        assert_eq!(
            cover(&exact("a.example.com"), &exact("b.a.example.com"), true),
            Some(Cover::Full)
        );
        assert_eq!(
            cover(&exact("a.example.com"), &exact("b.a.example.com"), false),
            None
        );
        assert_eq!(
            cover(&wild("example.com"), &exact("example.com"), false),
            Some(Cover::Full)
        );
        assert_eq!(
            cover(&exact("a.example.com"), &wild("example.com"), false),
            Some(Cover::Part)
        );
        assert_eq!(
            cover(&wild("a.example.com"), &wild("example.com"), true),
            Some(Cover::Part)
        );
        assert_eq!(cover(&exact("ax.com"), &exact("x.com"), true), None);
    }
}
