//! Policies into text through the minijinja templates in `templates/`, embedded in the binary.
//!
//! Every value a template prints goes through the target's escaping (a custom auto-escape
//! formatter), so forgetting a filter can't let free text break a line or a quote. Comments with
//! a byte limit use the `comment(limit)` filter, which cuts at a character boundary.

mod members;

use members::{LineCheck, Lines, Members};
use minijinja::value::{ArgType, Value, ViaDeserialize};
use minijinja::{
    AutoEscape, Environment, Error as TemplateError, ErrorKind, State, UndefinedBehavior,
};
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::endpoint::{Direction, ListName};
use crate::error::{Error, Result};
use crate::model::{join_ranges, Dest, Family, PortRange, PortSet, Protocol};
use crate::normalize::{Group, Member, Policy};
use crate::target::{Syntax, Target};
use crate::text::{quote, truncate_bytes};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Built-in templates by file name.
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "iptables.rules",
        include_str!("../templates/iptables.rules"),
    ),
    ("nftables.nft", include_str!("../templates/nftables.nft")),
    ("pfsense.xml", include_str!("../templates/pfsense.xml")),
    ("squid.conf", include_str!("../templates/squid.conf")),
    ("dnsmasq.conf", include_str!("../templates/dnsmasq.conf")),
    ("ipset.rules", include_str!("../templates/ipset.rules")),
    (
        "iptables.callback.rules",
        include_str!("../templates/iptables.callback.rules"),
    ),
    (
        "nftables.callback.nft",
        include_str!("../templates/nftables.callback.nft"),
    ),
    (
        "pfsense.callback.xml",
        include_str!("../templates/pfsense.callback.xml"),
    ),
    ("nginx.conf", include_str!("../templates/nginx.conf")),
];

/// Which sets dnsmasq fills with the addresses it resolves for the listed names.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum DnsSets {
    /// nftables sets, which nftables.nft creates (`nftset=`).
    #[default]
    Nftset,
    /// ipset sets, which ipset.rules creates (`ipset=`).
    Ipset,
}

/// How the DNS-fed sets are filled and how long an address stays in them.
#[derive(Debug, Clone, Serialize)]
pub struct DnsmasqSettings {
    pub sets: DnsSets,
    /// Seconds an address stays in a set after dnsmasq last added it.
    pub timeout: u64,
}

/// A week: longer would keep addresses that moved; the ipset names hold at most six digits.
pub const MAX_DNS_TIMEOUT: u64 = 604_800;

impl Default for DnsmasqSettings {
    fn default() -> Self {
        DnsmasqSettings {
            sets: DnsSets::Nftset,
            timeout: 3600,
        }
    }
}

impl DnsmasqSettings {
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_DNS_TIMEOUT).contains(&self.timeout) {
            return Err(Error::Option(format!(
                "dnsmasq timeout {}: use 1..{MAX_DNS_TIMEOUT} seconds",
                self.timeout
            )));
        }
        Ok(())
    }
}

/// Where the rules go: names the user may change, each checked against its target's rules.
#[derive(Debug, Clone, Serialize)]
pub struct Names {
    pub iptables_chain: String,
    /// `inet` (both families), `ip` or `ip6`.
    pub nft_family: String,
    pub nft_table: String,
    pub nft_chain: String,
    pub pfsense_interface: String,
    pub pfsense_alias_prefix: String,
    pub pfsense_tracker_base: u64,
    pub squid_acl_prefix: String,
    /// The sources each Squid `http_access allow` line serves (a `src` ACL), aggregated;
    /// empty: every source that reaches the snippet's lines.
    pub squid_clients: Vec<String>,
}

impl Default for Names {
    fn default() -> Self {
        Names {
            iptables_chain: "WECOM_ALLOW".into(),
            nft_family: "inet".into(),
            nft_table: "filter".into(),
            nft_chain: "wecom_allow".into(),
            pfsense_interface: "lan".into(),
            pfsense_alias_prefix: "WECOM_".into(),
            // Far above the Unix timestamps pfSense uses as trackers (about 1.7e9 today), and
            // below 2^32, pf's limit for a rule identifier.
            pfsense_tracker_base: 4_200_000_000,
            squid_acl_prefix: "wecom_".into(),
            squid_clients: Vec::new(),
        }
    }
}

impl Names {
    /// Refuses a name that its target would reject, misread, or that would touch a built-in chain.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, value: &str, why: &str| {
            Err(Error::Option(format!("{what} {}: {why}", quote(value))))
        };
        // A name of at most `max` bytes: a letter, then letters, digits or `extra`.
        let ident = |what: &str, s: &str, extra: &[u8], max: usize, why: &str| {
            let fits = !s.is_empty()
                && s.len() <= max
                && s.as_bytes()[0].is_ascii_alphabetic()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b));
            if fits {
                Ok(())
            } else {
                bad(what, s, why)
            }
        };
        let chain = &self.iptables_chain;
        ident(
            "iptables chain",
            chain,
            b"_-",
            28,
            "use 1-28 letters, digits, '_' or '-', starting with a letter",
        )?;
        const RESERVED: [&str; 11] = [
            "INPUT",
            "OUTPUT",
            "FORWARD",
            "PREROUTING",
            "POSTROUTING",
            "ACCEPT",
            "DROP",
            "REJECT",
            "RETURN",
            "QUEUE",
            "LOG",
        ];
        if RESERVED.contains(&chain.to_ascii_uppercase().as_str()) {
            return bad(
                "iptables chain",
                chain,
                "is a built-in chain or target; the allowlist needs a chain of its own",
            );
        }
        if !["inet", "ip", "ip6"].contains(&self.nft_family.as_str()) {
            return bad(
                "nftables family",
                &self.nft_family,
                "use inet (both families), ip or ip6",
            );
        }
        for (what, v) in [
            ("nftables table", &self.nft_table),
            ("nftables chain", &self.nft_chain),
        ] {
            ident(
                what,
                v,
                b"_",
                64,
                "use 1-64 letters, digits or '_', starting with a letter",
            )?;
            if is_nft_keyword(v) {
                return bad(
                    what,
                    v,
                    "is an nft keyword, which nft can't read as a name; choose another",
                );
            }
        }
        let chain = &self.nft_chain;
        if NFT_HOOKS.iter().any(|h| h.eq_ignore_ascii_case(chain)) {
            return bad(
                "nftables chain",
                chain,
                "is a hook's name, usually your own base chain: the script flushes its chain, \
                 which would wipe your rules; use a chain of the allowlist's own (default wecom_allow)",
            );
        }
        let table = &self.nft_table;
        if self.nft_family != "inet"
            && IPTABLES_NFT_TABLES
                .iter()
                .any(|t| t.eq_ignore_ascii_case(table))
        {
            return bad(
                "nftables table",
                table,
                &format!(
                    "belongs to iptables-nft in family {}, which rewrites it on every \
                     iptables-restore; use family inet, or a table of your own",
                    self.nft_family
                ),
            );
        }
        ident(
            "Squid ACL prefix",
            &self.squid_acl_prefix,
            b"_",
            32,
            "use 1-32 letters, digits or '_', starting with a letter",
        )?;
        ident(
            "pfSense interface",
            &self.pfsense_interface,
            b"_",
            32,
            "use the interface's internal name, such as lan or opt1",
        )?;
        let base = self.pfsense_tracker_base;
        let last = base.saturating_add(TRACKER_SPAN - 1);
        if !TRACKER_ZONES
            .iter()
            .any(|&(lo, hi)| lo <= base && last <= hi)
        {
            return Err(Error::Option(format!(
                "pfSense tracker base {base}: the rules' trackers take {base}..{last}, which must lie \
                 within 100000..999999999 or 4000000000..4294967295 (pfSense numbers its own rules \
                 10000-13000 and by creation time from 1000000000 up; a tracker is 32 bits)"
            )));
        }
        let sample = format!("{}P_{}", self.pfsense_alias_prefix, "x".repeat(SLUG_MAX));
        if let Err(why) = pfsense_alias_name(&sample) {
            return bad("pfSense alias prefix", &self.pfsense_alias_prefix, &why);
        }
        Ok(())
    }
}

/// Squid's `src` values for `clients`: merged where they touch and with no network inside
/// another (Squid warns about, or drops, a value another covers), the same addresses matched.
pub fn squid_clients(nets: &[ipnet::IpNet]) -> Vec<String> {
    ipnet::IpNet::aggregate(&nets.to_vec())
        .iter()
        .map(|n| match n {
            ipnet::IpNet::V4(v4) if v4.prefix_len() == 32 => v4.addr().to_string(),
            ipnet::IpNet::V6(v6) if v6.prefix_len() == 128 => v6.addr().to_string(),
            n => n.to_string(),
        })
        .collect()
}

/// Hook names: a chain named so is, in most rulesets, the user's base chain at that hook.
const NFT_HOOKS: [&str; 7] = [
    "input",
    "output",
    "forward",
    "prerouting",
    "postrouting",
    "ingress",
    "egress",
];

/// The tables iptables-nft creates and rewrites in families `ip` and `ip6`.
const IPTABLES_NFT_TABLES: [&str; 5] = ["filter", "nat", "mangle", "raw", "security"];

/// Every keyword of nft's scanner (`src/scanner.l` of nftables 1.0.6 and of later releases)
/// that looks like a name (letters and digits, starting with a letter) and is a keyword
/// everywhere: nft reads it as such, so a table or chain named so fails to parse. Keywords of
/// one scope only (`saddr` after `ip`, `filter` ...) are plain strings where names stand.
pub const NFT_KEYWORDS: &str = "\
    accept add ah all and arp bridge cgroup chain comment comp constant continue counter \
    cpu create ct day dccp define delete describe destroy device devices dnat drop dst dup \
    dynamic ecn element elements eq esp ether exists expires export exthdr fib flags flow \
    flowtable flush frag fwd ge geneve get goto gre gretap gt handle hbh hook hour ibriport \
    ibrname icmp icmpv6 igmp iif iifgroup iifname iiftype import include index inet insert \
    interval ip ip6 ipsec jhash jump last le limit list log lshift lt map mark masquerade \
    meta meter mh missing monitor ne netdev nftrace not notrack numgen obriport obrname \
    offload oif oifgroup oifname oiftype or osf pkttype policy position priority queue \
    quota random redefine redirect reject rename replace reset return rshift rt rt0 rt2 \
    rtclassid rule ruleset sctp secmark set size skgid skuid snat socket srh symhash \
    synproxy table tcp th time timeout tproxy tunnel type typeof udp udplite undefine \
    update vlan vmap vni vxlan xor xt";

/// Compared without case: a keyword in capitals is a legal name to nft, but too close to one.
/// Found as a whole word of `NFT_KEYWORDS` by a substring search, which takes a fraction of
/// the time a walk over its words does (every name of every list is checked at start-up).
fn is_nft_keyword(name: &str) -> bool {
    if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
        return false;
    }
    let name = name.to_ascii_lowercase();
    let words = NFT_KEYWORDS.as_bytes();
    let apart = |b: Option<&u8>| b.is_none_or(u8::is_ascii_whitespace);
    NFT_KEYWORDS.match_indices(&name).any(|(i, _)| {
        apart(i.checked_sub(1).and_then(|j| words.get(j))) && apart(words.get(i + name.len()))
    })
}

/// Checks a pfSense alias name the way pfSense's GUI does; an XML restore doesn't check.
pub fn pfsense_alias_name(name: &str) -> Result<(), String> {
    const RESERVED: [&str; 24] = [
        "port",
        "pass",
        "tcp",
        "udp",
        "icmp",
        "http",
        "https",
        "ssh",
        "ftp",
        "dns",
        "any",
        "all",
        "self",
        "bogons",
        "bogonsv6",
        "sshguard",
        "snort2c",
        "virusprot",
        "vpn_networks",
        "negate_networks",
        "tonatsubnets",
        "block",
        "match",
        "table",
    ];
    if name.len() >= 32 {
        return Err(format!("alias name {name} is 32 characters or more"));
    }
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!(
            "alias name {name} may hold only letters, digits and '_'"
        ));
    }
    if name.bytes().all(|b| b.is_ascii_digit() || b == b'_') {
        return Err(format!("alias name {name} is all digits or underscores"));
    }
    if RESERVED.contains(&name.to_ascii_lowercase().as_str())
        || name.to_ascii_lowercase().starts_with("pkg_")
    {
        return Err(format!("alias name {name} is reserved by pfSense"));
    }
    Ok(())
}

/// How a filtered run was made, for the headers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Settings {
    pub names: Names,
    pub necessary_only: bool,
    pub exact_domains: bool,
    /// `sha256:...` of source.json, the normalized list the files are built from.
    pub digest: String,
    pub dnsmasq: DnsmasqSettings,
    /// Which of WeCom's lists: its call names the source in headers, its direction picks the
    /// templates.
    pub list: ListName,
    /// The callback list's destination ports, for the headers of the files that can't match
    /// a port (nginx).
    pub callback_ports: Vec<PortRange>,
    pub rules: RuleOptions,
}

/// What every rule of a target carries beyond its match and verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RuleOptions {
    /// nftables: a `counter` on every rule. iptables counts every rule anyway.
    pub nft_counter: bool,
    /// pfSense: `<log>` on every pass rule, so that pfSense logs what each one passes.
    pub pfsense_log: bool,
    /// pfSense: where the pass rules take traffic from.
    pub pfsense_source: PfSource,
    /// iptables and ip6tables: one rule per address group matching its `hash:net` set of
    /// ipset.rules, instead of one rule per address (`--ipset`).
    pub ipset: bool,
}

/// The source of pfSense's pass rules, in the two forms a rule's `<source>` takes besides
/// `<any>`: `<network>` (an interface's subnet, `lan`, or its address, `lanip`) and
/// `<address>` (an address, a network or an alias).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PfSource {
    /// `any`, `network` or `address`: the element `<source>` holds.
    pub kind: &'static str,
    /// `lan`, `10.0.0.0/8`, `192.0.2.7` (a host without its /32, as pfSense stores it) or an
    /// alias name; empty for `any`.
    pub value: String,
    /// An address or network has one family; pfSense refuses it in a rule of the other family
    /// and in an IPv4+IPv6 rule.
    pub family: Option<Family>,
}

impl Default for PfSource {
    fn default() -> Self {
        PfSource {
            kind: "any",
            value: String::new(),
            family: None,
        }
    }
}

impl PfSource {
    /// `any`; an interface (`wan`, `lan`, `optN`: its subnet; with `ip` after it, its
    /// address); an IPv4 or IPv6 address or network; or the name of an alias on the firewall.
    pub fn parse(raw: &str) -> Result<PfSource> {
        if raw == "any" {
            return Ok(PfSource::default());
        }
        let interface = |s: &str| {
            s == "wan"
                || s == "lan"
                || s.strip_prefix("opt").is_some_and(|n| {
                    (1..=4).contains(&n.len())
                        && !n.starts_with('0')
                        && n.bytes().all(|b| b.is_ascii_digit())
                })
        };
        if interface(raw.strip_suffix("ip").unwrap_or(raw)) {
            return Ok(PfSource {
                kind: "network",
                value: raw.to_owned(),
                family: None,
            });
        }
        let why = match crate::wecom::parse_ip(raw) {
            Ok(net) => {
                let value = if net.prefix_len() == net.max_prefix_len() {
                    net.addr().to_string()
                } else {
                    net.to_string()
                };
                let family = if net.addr().is_ipv4() {
                    Family::Ipv4
                } else {
                    Family::Ipv6
                };
                return Ok(PfSource {
                    kind: "address",
                    value,
                    family: Some(family),
                });
            }
            Err(why) if raw.contains(['.', ':', '/']) => why,
            Err(_) => match pfsense_alias_name(raw) {
                Ok(()) => {
                    return Ok(PfSource {
                        kind: "address",
                        value: raw.to_owned(),
                        family: None,
                    })
                }
                Err(_) => "is not an interface, an address, a network or a valid alias name".into(),
            },
        };
        Err(Error::Option(format!(
            "pfSense source {} {why}: use any, an interface's subnet (lan, opt1 ...) or address \
             (lanip, opt1ip ...), an IPv4 or IPv6 address or network, or an alias name",
            quote(raw)
        )))
    }
}

#[derive(Serialize)]
struct Context<'a> {
    tool: &'static str,
    version: &'static str,
    target: &'static str,
    /// `server`, `api` or `callback`.
    list: ListName,
    /// The API call the list came from: `get_server_domain_ip` ...
    call: &'static str,
    /// `egress` (the members are destinations) or `ingress` (they are sources).
    direction: Direction,
    /// The callback list's destination ports (also each group's `ports`).
    callback_ports: &'a [PortRange],
    /// `ipv4` or `ipv6` for the targets that hold one family.
    family: Option<Family>,
    names: &'a Names,
    digest: &'a str,
    necessary_only: bool,
    exact_domains: bool,
    groups: Vec<GroupContext>,
    /// Wildcards the target can't express, without the leading dot.
    inexpressible: Vec<String>,
    /// The most addresses one statement (rule, ACL line, alias) may hold: `Target::chunk`.
    chunk: usize,
    /// pfSense only: the family whose address groups got no alias and no rule, because the
    /// source is an address or network of the other family.
    left_out: Option<Family>,
    /// pfSense: the entries of every address and host alias, each a pf table entry (a host
    /// alias at least one per name), for the header's minimum of Maximum Table Entries.
    table_entries: usize,
    dnsmasq: &'a DnsmasqSettings,
    rules: &'a RuleOptions,
    /// dnsmasq only: one line per listed name, with the sets of every group that covers it.
    dns_lines: Vec<DnsLine>,
}

/// One `nftset=`/`ipset=` line: dnsmasq fills, for an answer, only the sets of the one line
/// whose name matches longest, so every set that the name needs must be on its line.
#[derive(Serialize)]
struct DnsLine {
    /// Without a leading dot: dnsmasq's `/name/` matches the name and every name below it.
    domain: String,
    /// `4#inet#filter#set,6#inet#filter#set6` or `set4,set6`.
    sets: String,
}

/// A DNS-fed set of one name group and one address family.
#[derive(Serialize, Clone)]
struct DnsSet {
    /// `ipv4` or `ipv6`.
    family: Family,
    /// `ip` or `ip6` (nft's address match), `inet` or `inet6` (ipset's family).
    nft_family: &'static str,
    ipset_family: &'static str,
    name: String,
}

#[derive(Serialize)]
struct GroupContext {
    family: Family,
    /// `tcp`, `udp`, or for pfSense `tcp/udp` (a TCP and a UDP group with the same ports and
    /// destinations, in one rule).
    protocol: &'static str,
    ports: Vec<PortRange>,
    /// `v4_tcp_80_443`: unique per group, stable across runs, short enough for every target.
    slug: String,
    /// `tcp_80_443`: unique per (protocol, ports).
    port_slug: String,
    /// A sequence of members, each with `value`, `short`, `wildcard`, `necessary` and `note`,
    /// made as the template reads them.
    members: Value,
    /// pfSense only: the address alias of each chunk of `chunk` members (`WECOM_V4_TCP_443`,
    /// or `..._1`, `..._2` when the group needs several), each a valid alias name.
    aliases: Vec<String>,
    /// pfSense only: the port alias (`WECOM_P_TCP_80_443`), used when there are several ports.
    port_alias: String,
    /// pfSense only: the rule tracker of each chunk, derived from the group's identity.
    trackers: Vec<u64>,
    /// Name groups only: the nftables sets that dnsmasq fills, per family the nft table holds.
    nft_sets: Vec<DnsSet>,
    /// Name groups only: the ipset sets that dnsmasq fills, both families.
    ipsets: Vec<DnsSet>,
    /// Address groups with `--ipset`: the group's `hash:net` set, the set that ipset.rules
    /// fills and swaps with it, and their sizes.
    address_set: Option<AddressSet>,
}

/// The `hash:net` set of one address group (`--ipset`). A reload fills a temporary set and
/// swaps it with this one, so that a packet sees either the old or the new members.
#[derive(Serialize)]
struct AddressSet {
    /// `w4_n_tcp_443_16`: the group's port slug and log2 of `maxelem`.
    name: String,
    /// `w4_t_tcp_443_16`.
    temp: String,
    /// `inet` or `inet6`.
    family: &'static str,
    maxelem: usize,
    hashsize: usize,
}

/// The longest slug, so that every prefixed name fits pfSense's 31 characters.
const SLUG_MAX: usize = 22;

fn port_words(ports: &PortSet) -> String {
    join_ranges(ports.ranges(), "_", "to")
}

fn short_hash(ports: &PortSet) -> String {
    let mut hex = format!("{:x}", Sha256::digest(ports.to_string().as_bytes()));
    hex.truncate(8);
    hex
}

/// `proto` is `tcp`, `udp` or `tcpudp`.
fn slugs_of(family: Family, proto: &str, ports: &PortSet) -> (String, String) {
    let words = port_words(ports);
    let mut port_slug = format!("{proto}_{words}");
    if port_slug.len() > SLUG_MAX - 4 {
        port_slug = format!("{proto}_h{}", short_hash(ports));
    }
    (format!("{}_{port_slug}", family.short()), port_slug)
}

/// Slugs for every group (family, protocol as `slugs_of` takes it, ports), unique whatever the input: a short hash can collide (ports
/// `1001,3000,27160` and `1001,3000,62483` share one), and two groups under one name would merge
/// in every target. A port set whose slug is taken by another gets `_2`, `_3` ..., in the
/// groups' sorted order, so the result is deterministic.
fn unique_slugs_of<'a>(
    groups: impl IntoIterator<Item = (Family, &'a str, &'a PortSet)>,
) -> Vec<(String, String)> {
    let mut owner: BTreeMap<String, (&str, &PortSet)> = BTreeMap::new();
    let mut chosen: BTreeMap<(&str, &PortSet), String> = BTreeMap::new();
    groups
        .into_iter()
        .map(|(family, proto, ports)| {
            let key = (proto, ports);
            let port_slug = match chosen.get(&key) {
                Some(slug) => slug.clone(),
                None => {
                    let (_, base) = slugs_of(family, proto, ports);
                    let mut slug = base.clone();
                    let mut n = 1;
                    while owner.get(&slug).is_some_and(|k| *k != key) {
                        n += 1;
                        slug = format!("{base}_{n}");
                    }
                    owner.insert(slug.clone(), key);
                    chosen.insert(key, slug.clone());
                    slug
                }
            };
            (format!("{}_{port_slug}", family.short()), port_slug)
        })
        .collect()
}

/// `unique_slugs_of` the policy's groups, each with its own protocol.
fn unique_slugs(groups: &[Group]) -> Vec<(String, String)> {
    unique_slugs_of(
        groups
            .iter()
            .map(|g| (g.family, g.protocol.as_str(), &g.ports)),
    )
}

/// Each group's slug (`v4_tcp_443`), as the templates get it: the plain lists name their
/// files after it.
pub fn group_slugs(groups: &[Group]) -> Vec<String> {
    unique_slugs(groups)
        .into_iter()
        .map(|(slug, _)| slug)
        .collect()
}

/// How many trackers the generated rules may take from `pfsense_tracker_base` on.
const TRACKER_SPAN: u64 = 10_000_000;

/// Where a tracker range may lie: clear of pfSense's automatic rules (10000-13000, and
/// 1000000000 + n in recent releases) and of the creation times (`time()`, about 1.8e9 today,
/// 4e9 in 2096) it gives new rules, and inside pf's 32-bit rule identifier.
const TRACKER_ZONES: [(u64, u64); 2] = [(100_000, 999_999_999), (4_000_000_000, u32::MAX as u64)];

/// A rule's tracker from its group's identity (family, protocol, ports, chunk), so that it stays
/// the same when other groups come and go; a collision takes the next free value.
fn tracker(base: u64, identity: &str, used: &mut BTreeSet<u64>) -> u64 {
    let digest = Sha256::digest(identity.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    let mut offset = u64::from_be_bytes(bytes) % TRACKER_SPAN;
    while !used.insert(base + offset) {
        offset = (offset + 1) % TRACKER_SPAN;
    }
    base + offset
}

/// A group as a target shows it.
struct Shown<'a> {
    /// The policy's groups it shows (two for a pfSense `tcp/udp` group).
    origin: Vec<usize>,
    family: Family,
    /// `tcp`, `udp` or `tcp/udp`.
    protocol: &'static str,
    ports: &'a PortSet,
    /// Borrowed from the policy unless two groups were merged.
    members: std::borrow::Cow<'a, [Member]>,
}

/// The groups as the target shows them. pfSense: a TCP and a UDP group of one family with the
/// same ports and the same destinations become one `tcp/udp` group (one alias, one rule); and
/// when the source is an address or network, the address groups of the other family are left
/// out, since no rule can take that source to them (the family left out is returned).
fn shown_groups<'a>(
    target: Target,
    policy: &'a Policy,
    settings: &Settings,
) -> (Vec<Shown<'a>>, Option<Family>) {
    let pf = target == Target::Pfsense;
    let source_family = if pf {
        settings.rules.pfsense_source.family
    } else {
        None
    };
    let same_dests = |a: &Group, b: &Group| {
        a.members.len() == b.members.len()
            && a.members
                .iter()
                .zip(&b.members)
                .all(|(x, y)| x.dest == y.dest)
    };
    let mut merged = BTreeSet::new();
    // The union of each pair of note sets, made once and shared by the members that have
    // that pair, as the policy's members share their sets.
    let mut unions: HashMap<(usize, usize), crate::normalize::Notes> = HashMap::new();
    let mut left_out = None;
    let mut shown = Vec::with_capacity(policy.groups.len());
    for (i, g) in policy.groups.iter().enumerate() {
        if merged.contains(&i) {
            continue;
        }
        if source_family.is_some_and(|f| g.family != Family::Dns && g.family != f) {
            left_out = Some(g.family);
            continue;
        }
        let twin = policy.groups.iter().enumerate().find(|(_, h)| {
            pf && g.protocol == Protocol::Tcp
                && h.protocol == Protocol::Udp
                && h.family == g.family
                && h.ports == g.ports
                && same_dests(g, h)
        });
        shown.push(match twin {
            Some((j, h)) => {
                merged.insert(j);
                Shown {
                    origin: vec![i, j],
                    family: g.family,
                    protocol: "tcp/udp",
                    ports: &g.ports,
                    members: std::borrow::Cow::Owned(
                        g.members
                            .iter()
                            .zip(&h.members)
                            .map(|(a, b)| Member {
                                dest: a.dest.clone(),
                                notes: unions
                                    .entry((a.notes.id(), b.notes.id()))
                                    .or_insert_with(|| a.notes.union(&b.notes))
                                    .clone(),
                            })
                            .collect(),
                    ),
                }
            }
            None => Shown {
                origin: vec![i],
                family: g.family,
                protocol: g.protocol.as_str(),
                ports: &g.ports,
                members: std::borrow::Cow::Borrowed(&g.members),
            },
        });
    }
    (shown, left_out)
}

/// The slugs of the groups as the target shows them.
fn shown_slugs(shown: &[Shown]) -> Vec<(String, String)> {
    unique_slugs_of(shown.iter().map(|g| {
        let proto = if g.protocol == "tcp/udp" {
            "tcpudp"
        } else {
            g.protocol
        };
        (g.family, proto, g.ports)
    }))
}

/// Each policy group's slug as `target`'s file shows it: pfSense's `tcp/udp` group
/// `v4_tcpudp_53` for both the TCP and the UDP group it merges. A group the file leaves out
/// keeps its own slug.
pub fn target_slugs(target: Target, policy: &Policy, settings: &Settings) -> Vec<String> {
    let mut slugs = group_slugs(&policy.groups);
    let (shown, _) = shown_groups(target, policy, settings);
    for (g, (slug, _)) in shown.iter().zip(shown_slugs(&shown)) {
        for &i in &g.origin {
            slugs[i].clone_from(&slug);
        }
    }
    slugs
}

fn context<'a>(target: Target, policy: &Policy, settings: &'a Settings) -> Result<Context<'a>> {
    let names = &settings.names;
    let mut used = BTreeSet::new();
    let (shown, left_out) = shown_groups(target, policy, settings);
    let mut groups = Vec::with_capacity(shown.len());
    for (g, (slug, port_slug)) in shown.iter().zip(shown_slugs(&shown)) {
        let (mut aliases, mut port_alias, mut trackers) = (Vec::new(), String::new(), Vec::new());
        if target == Target::Pfsense {
            let p = &names.pfsense_alias_prefix;
            let parts = g.members.len().div_ceil(target.chunk());
            let upper = slug.to_ascii_uppercase();
            for i in 1..=parts {
                let name = if parts > 1 {
                    format!("{p}{upper}_{i}")
                } else {
                    format!("{p}{upper}")
                };
                // The prefix was checked for the usual names; a long list adds a suffix.
                pfsense_alias_name(&name).map_err(|why| {
                    Error::Option(format!(
                        "pfSense alias prefix {}: the list needs an alias named {name}, but {why}; use a shorter prefix",
                        quote(p)
                    ))
                })?;
                aliases.push(name);
                let mut identity = format!("{}/{}/{}/{i}", g.family.short(), g.protocol, g.ports);
                // The lists' rules sit side by side on one firewall: their trackers differ.
                if settings.list != ListName::Server {
                    identity = format!("{}/{identity}", settings.list.name());
                }
                trackers.push(tracker(names.pfsense_tracker_base, &identity, &mut used));
            }
            port_alias = format!("{p}P_{}", port_slug.to_ascii_uppercase());
        }
        let (nft_sets, ipsets) = if g.family == Family::Dns {
            dns_sets(names, &g.members, &port_slug, settings.dnsmasq.timeout)?
        } else {
            (Vec::new(), Vec::new())
        };
        let address_set = if settings.rules.ipset && g.family != Family::Dns {
            Some(address_set(g.family, &g.members, &port_slug)?)
        } else {
            None
        };
        groups.push(GroupContext {
            family: g.family,
            protocol: g.protocol,
            ports: g.ports.ranges().to_vec(),
            slug,
            port_slug,
            members: Value::from_object(Members::new(&g.members)),
            aliases,
            port_alias,
            trackers,
            nft_sets,
            ipsets,
            address_set,
        });
    }
    let dns_lines = if target == Target::Dnsmasq {
        dns_lines(policy, &groups, settings)
    } else {
        Vec::new()
    };
    let table_entries = shown.iter().map(|g| g.members.len()).sum();
    Ok(Context {
        tool: env!("CARGO_PKG_NAME"),
        version: env!("CARGO_PKG_VERSION"),
        target: target.name(),
        list: settings.list,
        call: settings.list.call(),
        direction: settings.list.direction(),
        callback_ports: &settings.callback_ports,
        family: target.family(),
        names: &settings.names,
        digest: &settings.digest,
        necessary_only: settings.necessary_only,
        exact_domains: settings.exact_domains,
        groups,
        inexpressible: policy.inexpressible.iter().map(|h| h.to_string()).collect(),
        chunk: target.chunk(),
        left_out,
        table_entries,
        dnsmasq: &settings.dnsmasq,
        rules: &settings.rules,
        dns_lines,
    })
}

/// The longest ipset name: ipset refuses 32 characters or more.
const IPSET_NAME_MAX: usize = 31;

/// The sets of one name group, named after the group's protocol, ports and members (a digest of
/// its sorted names): a set holds what dnsmasq resolved for those names, so a group that loses a
/// name must match a fresh, empty set, never the old one with the dropped name's addresses.
/// nftables: `<chain>_4_<ports>_<digest>`, beside the chain that matches them; a changed timeout
/// updates the set in place. ipset: `w4_<ports>_<digest>_<timeout>` (`w4_<longer digest>_<timeout>`
/// when that passes ipset's 31 characters), because `ipset restore -exist` refuses to re-create a
/// set with another timeout, so a changed timeout makes new sets.
fn dns_sets(
    names: &Names,
    members: &[Member],
    port_slug: &str,
    timeout: u64,
) -> Result<(Vec<DnsSet>, Vec<DnsSet>)> {
    let families: &[Family] = match names.nft_family.as_str() {
        "ip" => &[Family::Ipv4],
        "ip6" => &[Family::Ipv6],
        _ => &[Family::Ipv4, Family::Ipv6],
    };
    let digit = |f: Family| if f == Family::Ipv6 { 6 } else { 4 };
    let set = |f: Family, name: String| DnsSet {
        family: f,
        nft_family: if f == Family::Ipv6 { "ip6" } else { "ip" },
        ipset_family: if f == Family::Ipv6 { "inet6" } else { "inet" },
        name,
    };
    let digest = members_digest(members);
    let nft = families
        .iter()
        .map(|&f| {
            let name = format!(
                "{}_{}_{port_slug}_{}",
                names.nft_chain,
                digit(f),
                &digest[..8]
            );
            set(f, name)
        })
        .collect();
    let mut ipsets = Vec::new();
    for f in [Family::Ipv4, Family::Ipv6] {
        let mut name = format!("w{}_{port_slug}_{}_{timeout}", digit(f), &digest[..8]);
        if name.len() > IPSET_NAME_MAX {
            // Hex digits only: never equal to a name that starts with the protocol.
            let long = format!("{:x}", Sha256::digest(format!("{port_slug}\n{digest}")));
            name = format!("w{}_{}_{timeout}", digit(f), &long[..16]);
        }
        if name.len() > IPSET_NAME_MAX {
            return Err(Error::Option(format!(
                "the ipset name {name} is longer than ipset's {IPSET_NAME_MAX} characters"
            )));
        }
        ipsets.push(set(f, name));
    }
    Ok((nft, ipsets))
}

/// The `hash:net` set of an address group. `maxelem` must be the same when `ipset restore
/// -exist` meets an existing set (the kernel compares it; `hashsize` it ignores), so the name
/// holds log2 of `maxelem`: a group that outgrows it gets a new set, and iptables.rules, built
/// from the same list, matches that one.
fn address_set(family: Family, members: &[Member], port_slug: &str) -> Result<AddressSet> {
    let count = members.len();
    let maxelem = count.next_power_of_two().max(65_536);
    let hashsize = count.next_power_of_two().clamp(1_024, 1 << 22);
    let digit = if family == Family::Ipv6 { 6 } else { 4 };
    let bits = maxelem.trailing_zeros();
    let name = format!("w{digit}_n_{port_slug}_{bits}");
    if name.len() > IPSET_NAME_MAX {
        return Err(Error::Option(format!(
            "the ipset name {name} is longer than ipset's {IPSET_NAME_MAX} characters"
        )));
    }
    if let Some(m) = members
        .iter()
        .find(|m| matches!(&m.dest, Dest::Net(n) if n.prefix_len() == 0))
    {
        return Err(Error::Option(format!(
            "--ipset: a hash:net set can't hold {}; build without --ipset",
            m.dest
        )));
    }
    Ok(AddressSet {
        temp: format!("w{digit}_t_{port_slug}_{bits}"),
        name,
        family: if family == Family::Ipv6 {
            "inet6"
        } else {
            "inet"
        },
        maxelem,
        hashsize,
    })
}

/// Hex SHA-256 of a name group's members (`.wildcard` or `name`), sorted, one per line.
fn members_digest(members: &[Member]) -> String {
    let mut members: Vec<String> = members.iter().map(|m| m.dest.to_string()).collect();
    members.sort_unstable();
    let mut text = members.join("\n");
    text.push('\n');
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

/// One line per listed name (exact or wildcard: to dnsmasq both are `/name/`), with the sets of
/// every group that lists the name or any name above it, in the groups' order.
fn dns_lines(policy: &Policy, groups: &[GroupContext], settings: &Settings) -> Vec<DnsLine> {
    let mut by_name: BTreeMap<&str, BTreeSet<usize>> = BTreeMap::new();
    for (i, g) in policy.groups.iter().enumerate() {
        for m in &g.members {
            if let Dest::Exact(h) | Dest::Wildcard(h) = &m.dest {
                by_name.entry(h.as_str()).or_default().insert(i);
            }
        }
    }
    let names = &settings.names;
    by_name
        .keys()
        .map(|&domain| {
            // Every listed name equal to or above this one: the name and each suffix that
            // starts after a dot (names are validated host names), looked up, not searched.
            let covering: BTreeSet<usize> = std::iter::once(domain)
                .chain(domain.match_indices('.').map(|(i, _)| &domain[i + 1..]))
                .filter_map(|d| by_name.get(d))
                .flatten()
                .copied()
                .collect();
            let sets: Vec<String> = covering
                .into_iter()
                .flat_map(|i| match settings.dnsmasq.sets {
                    DnsSets::Nftset => groups[i]
                        .nft_sets
                        .iter()
                        .map(|s| {
                            format!(
                                "{}#{}#{}#{}",
                                if s.family == Family::Ipv6 { 6 } else { 4 },
                                names.nft_family,
                                names.nft_table,
                                s.name
                            )
                        })
                        .collect::<Vec<_>>(),
                    DnsSets::Ipset => groups[i].ipsets.iter().map(|s| s.name.clone()).collect(),
                })
                .collect();
            DnsLine {
                domain: domain.to_owned(),
                sets: sets.join(","),
            }
        })
        .collect()
}

/// The target's syntax, from the auto-escape mode of the template being rendered.
fn syntax_of(state: &State) -> Result<Syntax, TemplateError> {
    match state.auto_escape() {
        AutoEscape::Custom(name) => Syntax::from_name(name),
        _ => None,
    }
    .ok_or_else(|| TemplateError::new(ErrorKind::InvalidOperation, "template has no target syntax"))
}

/// `{{ text|comment(128) }}`: sanitized, cut to `limit` stored bytes, quoted for the target.
fn comment_filter(state: &State, text: &str, limit: usize) -> Result<Value, TemplateError> {
    Ok(Value::from_safe_string(
        syntax_of(state)?.comment(text, limit),
    ))
}

/// `{{ ranges|ports(", ", "-") }}`: a port list with the target's separators.
fn ports_filter(ranges: ViaDeserialize<Vec<PortRange>>, sep: &str, range_sep: &str) -> Value {
    Value::from_safe_string(join_ranges(&ranges, sep, range_sep))
}

/// `{% for chunk in ranges|port_chunks(15) %}`: iptables multiport takes 15 ports a rule,
/// a range counting as two.
fn port_chunks_filter(ranges: ViaDeserialize<Vec<PortRange>>, max_weight: usize) -> Value {
    Value::from_serialize(port_chunks(ranges.0, max_weight))
}

fn port_chunks(ranges: Vec<PortRange>, max_weight: usize) -> Vec<Vec<PortRange>> {
    let mut chunks: Vec<Vec<PortRange>> = Vec::new();
    let mut weight = 0;
    for r in ranges {
        let w = if r.is_single() { 1 } else { 2 };
        if chunks.is_empty() || weight + w > max_weight {
            chunks.push(Vec::new());
            weight = 0;
        }
        weight += w;
        if let Some(last) = chunks.last_mut() {
            last.push(r);
        }
    }
    chunks
}

/// `{% for part in items|chunks(5000) %}`: pfSense's GUI caps an alias at 5000 entries. A
/// group's members are cut into views of the same members, not copied.
fn chunks_filter(items: Value, size: usize) -> Result<Value, TemplateError> {
    if size == 0 {
        return Err(TemplateError::new(ErrorKind::InvalidOperation, "chunks(0)"));
    }
    if let Some(members) = items.downcast_object_ref::<Members>() {
        return Ok(Value::from(members.chunks(size)));
    }
    let items = <Vec<Value> as ArgType>::from_value(Some(&items))?;
    Ok(Value::from(
        items
            .chunks(size)
            .map(|part| Value::from(part.to_vec()))
            .collect::<Vec<_>>(),
    ))
}

/// Comment lines that list destinations are wrapped at this many bytes: readable, and far
/// below every target's `max_line_bytes`.
const COMMENT_WIDTH: usize = 100;

/// `{{ text|wrap("#   ", "#     ") }}`: the text escaped for the target, on as many comment
/// lines as it needs, the first starting with `first` and the others with `next`. A word longer
/// than a line is cut.
fn wrap_filter(state: &State, text: &str, first: &str, next: &str) -> Result<Value, TemplateError> {
    let text = syntax_of(state)?.escape(text);
    let mut lines: Vec<String> = Vec::new();
    let mut line = first.to_owned();
    let mut empty = true;
    for word in text.split(' ') {
        let mut word = word;
        while !word.is_empty() {
            let room = COMMENT_WIDTH.saturating_sub(line.len() + usize::from(!empty));
            if word.len() <= room {
                if !empty {
                    line.push(' ');
                }
                line.push_str(word);
                empty = false;
                break;
            }
            if empty {
                // Alone on its line and still too long: cut it where the line ends (at least
                // one character, so that the loop ends).
                let mut piece = truncate_bytes(word, room);
                if piece.is_empty() {
                    piece = word.chars().next().map_or("", |c| &word[..c.len_utf8()]);
                }
                line.push_str(piece);
                word = &word[piece.len()..];
            }
            lines.push(std::mem::replace(&mut line, next.to_owned()));
            empty = true;
        }
    }
    if !empty || lines.is_empty() {
        lines.push(line);
    }
    Ok(Value::from_safe_string(lines.join("\n")))
}

/// `{{ text|xml_comment }}`: inside `<!-- -->`, where `--` may not appear.
fn xml_comment_filter(state: &State, text: &str) -> Result<Value, TemplateError> {
    let mut s = syntax_of(state)?.escape(text);
    while s.contains("--") {
        s = s.replace("--", "- -");
    }
    if s.ends_with('-') {
        s.push(' ');
    }
    Ok(Value::from_safe_string(s))
}

fn pfsense_alias_filter(name: &str) -> Result<Value, TemplateError> {
    pfsense_alias_name(name)
        .map(|()| Value::from_safe_string(name.to_owned()))
        .map_err(|why| TemplateError::new(ErrorKind::InvalidOperation, why))
}

/// The environment, built once: templates, strict undefined handling, per-target escaping.
/// The built-in templates can be overridden by file name from `overrides`.
pub struct Templates {
    env: Environment<'static>,
    /// Names of the templates that came from the user, whose errors are the user's to fix.
    custom: Vec<String>,
}

impl Templates {
    pub fn new(overrides: Option<&Path>) -> Result<Templates> {
        // A user's template may use any of minijinja's filters, tests and functions; the
        // built-in ones use a few, and making all the others would cost more than a small
        // render.
        let mut env = match overrides {
            Some(_) => Environment::new(),
            None => {
                use minijinja::filters;
                let mut env = Environment::empty();
                env.add_filter("join", filters::join);
                env.add_filter("length", filters::length);
                env.add_filter("list", filters::list);
                env.add_filter("replace", filters::replace);
                env.add_filter("selectattr", filters::selectattr);
                env.add_filter("unique", filters::unique);
                env.add_test("eq", minijinja::tests::is_eq);
                env.add_test("endingwith", minijinja::tests::is_endingwith);
                env
            }
        };
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(true);
        env.set_auto_escape_callback(|name| {
            let syntax = match name.rsplit('.').next() {
                Some("rules") => Syntax::Iptables,
                Some("nft") => Syntax::Nftables,
                Some("xml") => Syntax::Xml,
                _ => Syntax::Squid,
            };
            AutoEscape::Custom(syntax.name())
        });
        env.set_formatter(|out, state, value| {
            if value.is_safe() || value.is_none() {
                return minijinja::escape_formatter(out, state, value);
            }
            if value.downcast_object_ref::<Lines>().is_some() {
                // `each` escaped every field it filled in.
                return write!(out, "{value}").map_err(|e| {
                    TemplateError::new(ErrorKind::WriteFailure, "write failed").with_source(e)
                });
            }
            let text = value.to_string();
            out.write_str(&syntax_of(state)?.escape(&text))
                .map_err(|e| {
                    TemplateError::new(ErrorKind::WriteFailure, "write failed").with_source(e)
                })
        });
        env.add_filter("comment", comment_filter);
        env.add_filter("ports", ports_filter);
        env.add_filter("port_chunks", port_chunks_filter);
        env.add_filter("chunks", chunks_filter);
        env.add_filter("each", members::each_filter);
        env.add_filter("xml_comment", xml_comment_filter);
        env.add_filter("wrap", wrap_filter);
        env.add_filter("pfsense_alias", pfsense_alias_filter);

        let custom = match overrides {
            Some(dir) => read_overrides(dir)?,
            None => Vec::new(),
        };
        // Overrides are compiled now, so a broken one is refused before anything is written;
        // built-ins are compiled on first use, so a command pays only for the templates it renders.
        for (name, source) in &custom {
            env.add_template_owned(name.clone(), source.clone())
                .map_err(|source| template_error(name, true, source))?;
        }
        env.set_loader(|name| {
            Ok(TEMPLATES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, source)| (*source).to_owned()))
        });
        Ok(Templates {
            env,
            custom: custom.into_iter().map(|(n, _)| n).collect(),
        })
    }

    /// Renders one target's file. A line longer than the target's loader reads is an error
    /// here, so such a file is never written.
    pub fn render(&self, target: Target, policy: &Policy, settings: &Settings) -> Result<String> {
        let mut out = Vec::new();
        self.render_to(target, policy, settings, &mut out)?;
        // minijinja writes only `str`s.
        Ok(String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }

    /// Renders one target's file into `out` as the template runs, with the same checks as
    /// `render`. On an error `out` holds part of the file: the caller writes into a temporary
    /// file and keeps it only on success.
    pub fn render_to(
        &self,
        target: Target,
        policy: &Policy,
        settings: &Settings,
        out: &mut dyn std::io::Write,
    ) -> Result<()> {
        let template = target.template_for(settings.list);
        let custom = self.custom.iter().any(|c| c == template);
        let context = context(target, policy, settings)?;
        let compiled = self
            .env
            .get_template(template)
            .map_err(|source| template_error(template, custom, source))?;
        let mut check = LineCheck::new(out, target.max_line_bytes());
        let rendered = compiled.render_captured_to(context, &mut check).map(drop);
        // The first failure in the file's order: a line that stopped the render, the writer's
        // own error, the template's error, and last the file's last line.
        let too_long = match &rendered {
            Ok(()) => check.too_long(),
            Err(_) => check.stopped_at(),
        };
        if let Some((line, len)) = too_long {
            let max = target.max_line_bytes().unwrap_or_default();
            let why = format!(
                "line {line} is {len} bytes long; {} reads at most {max}",
                target.name()
            );
            return Err(template_error(
                template,
                custom,
                TemplateError::new(ErrorKind::InvalidOperation, why),
            ));
        }
        if let Some(source) = check.failed {
            return Err(Error::Write {
                path: target.file_name().into(),
                source,
            });
        }
        rendered.map_err(|source| template_error(template, custom, source))
    }
}

fn template_error(template: &str, custom: bool, source: TemplateError) -> Error {
    let template = template.to_owned();
    if custom {
        Error::CustomTemplate { template, source }
    } else {
        Error::Render { template, source }
    }
}

/// The context a target's template receives, as pretty JSON (`render --dump-context`).
pub fn context_json(target: Target, policy: &Policy, settings: &Settings) -> Result<String> {
    let mut text = serde_json::to_string_pretty(&context(target, policy, settings)?)
        .unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()));
    text.push('\n');
    Ok(text)
}

/// The user's templates: every file in `dir` must replace a built-in one, so that a misnamed
/// file is an error instead of a silently ignored override.
fn read_overrides(dir: &Path) -> Result<Vec<(String, String)>> {
    let read_err = |source| Error::Read {
        path: dir.to_owned(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !TEMPLATES.iter().any(|(n, _)| *n == name) {
            let known: Vec<&str> = TEMPLATES.iter().map(|(n, _)| *n).collect();
            return Err(Error::Option(format!(
                "{}: {} replaces no built-in template (expected one of {})",
                dir.display(),
                quote(&name),
                known.join(", ")
            )));
        }
        let source = std::fs::read_to_string(&path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        out.push((name, source));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiport_chunks_count_a_range_as_two() {
        let r = |s, e| PortRange::new(s, e).unwrap();
        let mut ranges: Vec<PortRange> = (1..=14).map(|p| r(p, p)).collect();
        ranges.push(r(100, 200));
        ranges.push(r(300, 300));
        let chunks = port_chunks(ranges, 15);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].len(), 14);
        assert_eq!(chunks[1], vec![r(100, 200), r(300, 300)]);
    }

    #[test]
    fn names_are_checked() {
        assert!(Names::default().validate().is_ok());
        for chain in [
            "OUTPUT",
            "accept",
            "",
            "A".repeat(29).as_str(),
            "x y",
            "1abc",
        ] {
            let names = Names {
                iptables_chain: chain.into(),
                ..Names::default()
            };
            assert!(names.validate().is_err(), "{chain:?} accepted");
        }
        let names = Names {
            pfsense_alias_prefix: "A_VERY_LONG_PREFIX_".into(),
            ..Names::default()
        };
        assert!(names.validate().is_err());
        for bad in [
            "port",
            "bogons",
            "pkg_x",
            "123",
            "__",
            "a-b",
            &"a".repeat(32),
        ] {
            assert!(pfsense_alias_name(bad).is_err(), "{bad} accepted");
        }
        assert!(pfsense_alias_name("WECOM_V4_TCP_80_443").is_ok());
    }

    /// Start-up compiles no built-in template; rendering one target compiles only its own.
    #[test]
    fn built_in_templates_are_compiled_on_first_use() {
        let templates = Templates::new(None).expect("built-in templates");
        assert_eq!(templates.env.templates().count(), 0);
        templates
            .render(Target::Squid, &Policy::default(), &Settings::default())
            .expect("squid renders");
        let loaded: Vec<&str> = templates.env.templates().map(|(n, _)| n).collect();
        assert_eq!(loaded, ["squid.conf"]);
    }

    /// The built-in templates run in an environment that has only the filters and tests they
    /// use: every filter (`|name`) and test (`is name`, `selectattr(attr, "name", ...)`) a
    /// built-in template names must be there, as in minijinja's full environment.
    #[test]
    fn every_filter_and_test_the_built_in_templates_name_is_there() {
        let templates = Templates::new(None).expect("built-in templates");
        let ident = |s: &str| -> String {
            s.trim_start()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        };
        let (mut filters, mut tests) = (BTreeSet::new(), BTreeSet::new());
        for (name, source) in TEMPLATES {
            // The code of the template: what stands between {{ }} and between {% %}.
            for (open, close) in [("{{", "}}"), ("{%", "%}")] {
                for block in source.split(open).skip(1) {
                    let code = block.split(close).next().unwrap_or_default();
                    for call in code.split("selectattr(").skip(1) {
                        let quoted: Vec<&str> = call.split('"').collect();
                        if quoted.len() > 4 && quoted[2].trim() == "," {
                            tests.insert((quoted[3].to_owned(), *name));
                        }
                    }
                    // Outside string literals, which may hold `|`.
                    let bare: String = code.split('"').step_by(2).collect();
                    for after in bare.split('|').skip(1) {
                        filters.insert((ident(after), *name));
                    }
                    for after in bare.split(" is ").skip(1) {
                        let after = after.trim_start();
                        tests.insert((ident(after.strip_prefix("not ").unwrap_or(after)), *name));
                    }
                }
            }
        }
        assert!(
            filters.iter().any(|(f, _)| f == "selectattr"),
            "{filters:?}"
        );
        assert!(tests.iter().any(|(t, _)| t == "eq"), "{tests:?}");
        let uses = filters
            .iter()
            .map(|(f, t)| ("filter", format!("none|{f}"), ErrorKind::UnknownFilter, t))
            .chain(
                tests
                    .iter()
                    .map(|(f, t)| ("test", format!("none is {f}"), ErrorKind::UnknownTest, t)),
            );
        for (what, expr, unknown, template) in uses {
            let tried = templates.env.render_str(&format!("{{{{ {expr} }}}}"), ());
            assert!(
                !tried.is_err_and(|e| e.kind() == unknown),
                "{template} uses the {what} in `{expr}`, which the environment lacks"
            );
        }
    }

    /// `render_to` writes exactly what `render` returns, for every target.
    #[test]
    fn render_to_writes_what_render_returns() {
        let templates = Templates::new(None).expect("built-in templates");
        let settings = Settings::default();
        let group = name_group(Family::Dns, &[443], 3);
        let policy = Policy {
            groups: vec![group],
            inexpressible: vec![],
        };
        for target in Target::ALL {
            let text = templates.render(target, &policy, &settings).unwrap();
            let mut out = Vec::new();
            templates
                .render_to(target, &policy, &settings, &mut out)
                .unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), text, "{}", target.name());
        }
    }

    /// Renders `source` as the Squid template over an empty policy.
    fn render_custom_squid(source: &str) -> Result<String> {
        let dir = tempfile::tempdir().map_err(|source| Error::Read {
            path: "tempdir".into(),
            source,
        })?;
        std::fs::write(dir.path().join("squid.conf"), source).map_err(|source| Error::Write {
            path: "squid.conf".into(),
            source,
        })?;
        Templates::new(Some(dir.path()))?.render(
            Target::Squid,
            &Policy::default(),
            &Settings::default(),
        )
    }

    #[test]
    fn comment_lines_wrap_and_an_overlong_line_is_refused() {
        let words = "abc.example.com ".repeat(2000);
        let text = render_custom_squid(&format!(
            "{{{{ {words:?}|wrap(\"#   \", \"#     \") }}}}\n{{{{ {:?}|wrap(\"# \", \"# \") }}}}\n",
            "x".repeat(250)
        ))
        .unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.iter().all(|l| l.len() <= COMMENT_WIDTH), "{text}");
        assert!(lines[0].starts_with("#   abc") && lines[1].starts_with("#     abc"));
        let joined: Vec<&str> = lines
            .iter()
            .flat_map(|l| l.trim_start_matches('#').split_whitespace())
            .collect();
        assert_eq!(
            joined.iter().filter(|w| **w == "abc.example.com").count(),
            2000
        );
        // A word longer than a line is cut, never lost.
        let cut: String = lines
            .iter()
            .filter(|l| l.starts_with("# x"))
            .map(|l| l.trim_start_matches("# "))
            .collect();
        assert_eq!(cut, "x".repeat(250));

        let long = format!("{}\n", "y".repeat(8001));
        match render_custom_squid(&long) {
            Err(Error::CustomTemplate { source, .. }) => {
                assert!(source.to_string().contains("8001 bytes"), "{source}")
            }
            other => panic!("an overlong line passed: {:?}", other.map(|t| t.len())),
        }
    }

    /// `each` fills in only the placeholders it knows: a misspelt one is the template's error,
    /// and text from the members (a note holding `{value}`) is never read as a placeholder.
    #[test]
    fn each_fills_known_placeholders_only() {
        let group = Group {
            family: Family::Ipv4,
            protocol: Protocol::Tcp,
            ports: ports(&[443]),
            members: ["192.0.2.1/32", "192.0.2.8/29"]
                .iter()
                .map(|net| Member {
                    dest: Dest::Net(net.parse().unwrap()),
                    notes: crate::normalize::Notes::from_iter([crate::model::Note {
                        necessary: true,
                        description: "{value} \"x\"\n{short}".into(),
                    }]),
                })
                .collect(),
        };
        let policy = Policy {
            groups: vec![group],
            inexpressible: vec![],
        };
        let render = |template: &str| -> Result<String> {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("iptables.rules"), template).unwrap();
            Templates::new(Some(dir.path()))?.render(
                Target::Iptables,
                &policy,
                &Settings::default(),
            )
        };
        let text = render(
            "{% for g in groups %}{{ g.members|each(\"{value} {short} {note} { x } {\", \"|\") }}{% endfor %}",
        )
        .unwrap();
        assert_eq!(
            text,
            r#"192.0.2.1/32 192.0.2.1 required: {value} \"x\" {short} { x } {|192.0.2.8/29 192.0.2.8/29 required: {value} \"x\" {short} { x } {"#
        );
        let text = render(
            "{% for g in groups %}{{ g.members|each(\"{short}\", \",\", chunk=1, line=\"[{items}]\") }}{% endfor %}",
        )
        .unwrap();
        assert_eq!(text, "[192.0.2.1][192.0.2.8/29]");
        for bad in [
            "{{ groups[0].members|each(\"{vaule}\") }}",
            "{{ groups[0].members|each(\"{items}\") }}",
            "{{ groups[0].members|each(\"x\", chunk=0, line=\"{items}\") }}",
            "{{ groups[0].members|each(\"x\", colour=1) }}",
            "{{ [1, 2]|each(\"{value}\") }}",
        ] {
            match render(bad) {
                Err(Error::CustomTemplate { .. }) => {}
                other => panic!("{bad}: {:?}", other.map(|t| t.len())),
            }
        }
    }

    /// The substring search finds whole keywords only, as a walk over the words does: every
    /// keyword in any case, and none of their parts, joins or neighbours.
    #[test]
    fn nft_keywords_are_whole_words() {
        let words: Vec<&str> = NFT_KEYWORDS.split_ascii_whitespace().collect();
        let walk = |name: &str| words.iter().any(|k| k.eq_ignore_ascii_case(name));
        let mut names: Vec<String> = vec!["".into(), " ".into(), "accept add".into()];
        for pair in words.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            for n in 1..a.len() {
                names.push(a[..n].into());
                names.push(a[n..].into());
            }
            names.extend([
                a.into(),
                a.to_ascii_uppercase(),
                format!("{a}{b}"),
                format!("{a} {b}"),
                format!("{a}_"),
                format!("x{a}"),
            ]);
        }
        for name in &names {
            assert_eq!(is_nft_keyword(name), walk(name), "{name:?}");
        }
    }

    #[test]
    fn nft_keywords_hooks_and_iptables_nft_tables_are_refused() {
        let words: Vec<&str> = NFT_KEYWORDS.split_ascii_whitespace().collect();
        assert!(words.len() > 100 && words.contains(&"drop") && words.contains(&"counter"));
        for word in words
            .iter()
            .copied()
            .chain(["Drop", "OUTPUT", "input", "egress"])
        {
            let chain = Names {
                nft_chain: word.into(),
                ..Names::default()
            };
            assert!(chain.validate().is_err(), "chain {word} accepted");
        }
        for word in words {
            let table = Names {
                nft_table: word.into(),
                ..Names::default()
            };
            assert!(table.validate().is_err(), "table {word} accepted");
        }
        let table = |family: &str, table: &str| Names {
            nft_family: family.into(),
            nft_table: table.into(),
            ..Names::default()
        };
        for t in ["filter", "nat", "mangle", "raw", "security", "Filter"] {
            assert!(table("ip", t).validate().is_err(), "ip {t} accepted");
            assert!(table("ip6", t).validate().is_err(), "ip6 {t} accepted");
        }
        assert!(table("inet", "filter").validate().is_ok());
        assert!(table("ip", "wecom").validate().is_ok());
    }

    fn slugs(g: &Group) -> (String, String) {
        slugs_of(g.family, g.protocol.as_str(), &g.ports)
    }

    fn ports(v: &[u16]) -> PortSet {
        PortSet::new(v.iter().map(|&p| PortRange::new(p, p).unwrap()).collect()).unwrap()
    }

    fn name_group(family: Family, ports_: &[u16], names: usize) -> Group {
        Group {
            family,
            protocol: Protocol::Tcp,
            ports: ports(ports_),
            members: (0..names)
                .map(|i| Member {
                    dest: Dest::Exact(
                        crate::model::Hostname::parse(&format!("h{i}.example.com")).unwrap(),
                    ),
                    notes: Default::default(),
                })
                .collect(),
        }
    }

    /// A pfSense `tcp/udp` group's members that have the same TCP and UDP notes share one
    /// set of both, as the policy's members share theirs.
    #[test]
    fn merged_members_with_the_same_notes_share_them() {
        let notes = |text: &str| -> crate::normalize::Notes {
            std::iter::once(crate::model::Note {
                necessary: true,
                description: text.into(),
            })
            .collect()
        };
        let (tcp_notes, udp_notes) = (notes("signalling"), notes("media"));
        let group = |protocol, notes: &crate::normalize::Notes| {
            let mut g = name_group(Family::Ipv4, &[443], 0);
            g.protocol = protocol;
            g.members = ["10.0.0.1/32", "10.0.0.2/32", "10.0.0.3/32"]
                .iter()
                .map(|n| Member {
                    dest: Dest::Net(n.parse().unwrap()),
                    notes: notes.clone(),
                })
                .collect();
            g
        };
        let policy = Policy {
            groups: vec![
                group(Protocol::Tcp, &tcp_notes),
                group(Protocol::Udp, &udp_notes),
            ],
            inexpressible: vec![],
        };
        let (shown, _) = shown_groups(Target::Pfsense, &policy, &Settings::default());
        let [merged] = &shown[..] else {
            panic!("{} groups shown", shown.len())
        };
        let first = &merged.members[0].notes;
        assert_eq!(first.len(), 2);
        assert!(merged.members.iter().all(|m| m.notes.same(first)));
    }

    fn pf_trackers(groups: Vec<Group>) -> BTreeMap<String, Vec<u64>> {
        let policy = Policy {
            groups,
            inexpressible: vec![],
        };
        let settings = Settings::default();
        context(Target::Pfsense, &policy, &settings)
            .unwrap()
            .groups
            .into_iter()
            .map(|g| (g.slug, g.trackers))
            .collect()
    }

    #[test]
    fn pfsense_trackers_follow_the_group_not_its_position() {
        let a = name_group(Family::Dns, &[443], 2);
        let b = name_group(Family::Dns, &[8080], 1);
        let c = name_group(Family::Dns, &[80], 1);
        let before = pf_trackers(vec![a.clone(), b.clone()]);
        // A group sorted before the others comes: theirs don't move.
        let after = pf_trackers(vec![c, a, b]);
        for (slug, trackers) in &before {
            assert_eq!(after.get(slug), Some(trackers), "{slug} moved");
        }
        let all: Vec<u64> = after.values().flatten().copied().collect();
        let distinct: BTreeSet<u64> = all.iter().copied().collect();
        assert_eq!(all.len(), distinct.len());
        let base = Names::default().pfsense_tracker_base;
        assert!(all.iter().all(|t| (base..base + TRACKER_SPAN).contains(t)));
        // A collision takes the next free value.
        let mut used = BTreeSet::from([base + 5]);
        let first = tracker(base, "x", &mut BTreeSet::new());
        used.insert(first);
        assert_ne!(tracker(base, "x", &mut used), first);
    }

    #[test]
    fn pfsense_sources_are_read_as_pfsense_stores_them() {
        let parsed = |raw: &str| {
            let s = PfSource::parse(raw).unwrap();
            (s.kind, s.value, s.family)
        };
        assert_eq!(parsed("any"), ("any", String::new(), None));
        for net in ["lan", "wan", "opt1", "opt12", "lanip", "opt3ip"] {
            assert_eq!(parsed(net), ("network", net.to_owned(), None));
        }
        assert_eq!(
            parsed("10.0.0.0/8"),
            ("address", "10.0.0.0/8".into(), Some(Family::Ipv4))
        );
        // A host is stored without its prefix length, as pfSense's GUI stores it.
        assert_eq!(
            parsed("192.0.2.7/32"),
            ("address", "192.0.2.7".into(), Some(Family::Ipv4))
        );
        assert_eq!(
            parsed("2001:db8::/32"),
            ("address", "2001:db8::/32".into(), Some(Family::Ipv6))
        );
        assert_eq!(parsed("MY_CLIENTS"), ("address", "MY_CLIENTS".into(), None));
        for bad in [
            "",
            "10.0.0.1/8",
            "10.0.0.0/08",
            "::ffff:10.0.0.0/104",
            "a b",
            "x<y",
            "pkg_x",
            "port",
            "1234",
            "lan/24",
        ] {
            let e = PfSource::parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
            assert!(e.to_string().contains(&quote(bad)), "{bad:?}: {e}");
        }
    }

    #[test]
    fn pfsense_tracker_base_is_checked() {
        let with = |base: u64| Names {
            pfsense_tracker_base: base,
            ..Names::default()
        };
        for bad in [
            0,
            12_000,
            1_000_000_000,
            1_800_000_000,
            3_000_000_000,
            4_290_000_000,
            1 << 32,
            u64::MAX,
        ] {
            assert!(with(bad).validate().is_err(), "{bad} accepted");
        }
        for good in [100_000, 990_000_000, 4_000_000_000, 4_200_000_000] {
            assert!(with(good).validate().is_ok(), "{good} refused");
        }
    }

    #[test]
    fn a_prefix_too_long_for_a_chunked_alias_is_an_option_error() {
        // A 7-character prefix passes for every unchunked name; a group of names with a long
        // port slug split into ten aliases needs `_10`, one character too many.
        let names = Names {
            pfsense_alias_prefix: "WECOM7_".into(),
            ..Names::default()
        };
        assert!(names.validate().is_ok());
        let settings = Settings {
            names,
            ..Settings::default()
        };
        let group = name_group(Family::Dns, &[1001, 2716, 3000], 45_001);
        let policy = Policy {
            groups: vec![group],
            inexpressible: vec![],
        };
        match context(Target::Pfsense, &policy, &settings) {
            Err(Error::Option(msg)) => assert!(msg.contains("WECOM7_"), "{msg}"),
            Err(other) => panic!("not an option error: {other}"),
            Ok(_) => panic!("an alias name over 31 characters passed"),
        }
    }

    #[test]
    fn colliding_port_hashes_still_give_distinct_slugs() {
        let a = name_group(Family::Ipv4, &[1001, 3000, 27160], 1);
        let b = name_group(Family::Ipv4, &[1001, 3000, 62483], 1);
        assert_eq!(slugs(&a), slugs(&b), "the hashes are known to collide");
        let unique = unique_slugs(&[a.clone(), b.clone(), a]);
        assert_ne!(unique[0], unique[1]);
        assert_eq!(unique[0], unique[2], "one port set keeps one slug");
        assert!(unique
            .iter()
            .all(|(s, p)| s.len() <= SLUG_MAX + 2 && p.len() < s.len()));
    }

    #[test]
    fn dns_set_names_follow_the_members_and_fit_ipset() {
        let names = Names::default();
        let a = name_group(Family::Dns, &[443], 3);
        let mut b = a.clone();
        b.members.pop();
        let (nft_a, ip_a) = dns_sets(&names, &a.members, "tcp_443", 3600).unwrap();
        let (nft_b, ip_b) = dns_sets(&names, &b.members, "tcp_443", 3600).unwrap();
        let (nft_a2, _) = dns_sets(&names, &a.clone().members, "tcp_443", 3600).unwrap();
        assert_eq!(nft_a[0].name, nft_a2[0].name, "deterministic");
        assert_ne!(
            nft_a[0].name, nft_b[0].name,
            "a dropped name gives a new set"
        );
        assert_ne!(ip_a[0].name, ip_b[0].name);
        assert!(nft_a[0].name.starts_with("wecom_allow_4_tcp_443_"));
        // A long, de-duplicated port slug and a week's timeout: the short form.
        let (_, long) = dns_sets(&names, &a.members, "udp_hc3f26461_2", MAX_DNS_TIMEOUT).unwrap();
        let (_, other) = dns_sets(&names, &a.members, "udp_hc3f26461", MAX_DNS_TIMEOUT).unwrap();
        for s in long.iter().chain(&other) {
            assert!(s.name.len() <= IPSET_NAME_MAX, "{}", s.name);
        }
        assert_ne!(long[0].name, other[0].name);
        assert_ne!(long[0].name, long[1].name);
    }

    #[test]
    fn slugs_stay_short_and_distinct() {
        let ports = |v: &[u16]| {
            PortSet::new(v.iter().map(|&p| PortRange::new(p, p).unwrap()).collect()).unwrap()
        };
        let g = |p: PortSet| Group {
            family: Family::Ipv6,
            protocol: crate::model::Protocol::Udp,
            ports: p,
            members: vec![],
        };
        let (a, _) = slugs(&g(ports(&[80, 443])));
        assert_eq!(a, "v6_udp_80_443");
        let (b, pb) = slugs(&g(ports(&(1..=20).collect::<Vec<_>>())));
        let (c, _) = slugs(&g(ports(&(2..=21).collect::<Vec<_>>())));
        assert!(b.len() <= SLUG_MAX && pb.len() <= SLUG_MAX - 3, "{b}");
        assert_ne!(b, c);
    }
}
