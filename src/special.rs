//! Address blocks that are not publicly reachable, for the guard that refuses them in WeCom's
//! list: WeCom's servers are on the public internet, so an allow rule for a private, loopback or
//! link-local address (169.254.169.254, the cloud metadata service) would only ever open a hole.
//!
//! The table is written once, here, from IANA's registries as of 2025:
//! - IPv4 Special-Purpose Address Registry (iana-ipv4-special-registry): every block whose
//!   "Globally Reachable" is False or N/A, with the True exceptions inside them;
//! - IPv4 Multicast Address Space Registry (224.0.0.0/4);
//! - IPv6 Special-Purpose Address Registry (iana-ipv6-special-registry), the same way, except
//!   that 64:ff9b::/96 counts as non-public although IANA marks it reachable: on a NAT64
//!   network it stands for all of IPv4, so it would bypass the IPv4 rules;
//! - IPv6 Address Space registry (iana-ipv6-address-space): only 2000::/3 is global unicast.

use std::sync::OnceLock;

use ipnet::IpNet;

/// A block and what it is, as messages name it.
#[derive(Debug)]
pub struct Block {
    pub net: IpNet,
    pub name: &'static str,
}

/// Non-public blocks, the most specific first so that a message names the most telling one.
const NON_PUBLIC: &[(&str, &str)] = &[
    ("0.0.0.0/8", "\"this network\", RFC 791"),
    ("10.0.0.0/8", "private use, RFC 1918"),
    ("100.64.0.0/10", "shared address space (CGNAT), RFC 6598"),
    ("127.0.0.0/8", "loopback, RFC 1122"),
    ("169.254.0.0/16", "link-local, RFC 3927"),
    ("172.16.0.0/12", "private use, RFC 1918"),
    ("192.0.0.0/24", "IETF protocol assignments, RFC 6890"),
    ("192.0.2.0/24", "documentation (TEST-NET-1), RFC 5737"),
    (
        "192.88.99.0/24",
        "6to4 relay anycast (deprecated), RFC 7526",
    ),
    ("192.168.0.0/16", "private use, RFC 1918"),
    ("198.18.0.0/15", "benchmarking, RFC 2544"),
    ("198.51.100.0/24", "documentation (TEST-NET-2), RFC 5737"),
    ("203.0.113.0/24", "documentation (TEST-NET-3), RFC 5737"),
    ("224.0.0.0/4", "multicast, RFC 5771"),
    ("255.255.255.255/32", "limited broadcast, RFC 919"),
    ("240.0.0.0/4", "reserved, RFC 1112"),
    ("::/128", "unspecified address, RFC 4291"),
    ("::1/128", "loopback, RFC 4291"),
    ("::ffff:0:0/96", "IPv4-mapped addresses, RFC 4291"),
    ("::/96", "IPv4-compatible addresses (deprecated), RFC 4291"),
    ("64:ff9b::/96", "NAT64 IPv4/IPv6 translation, RFC 6052"),
    (
        "64:ff9b:1::/48",
        "local-use IPv4/IPv6 translation, RFC 8215",
    ),
    ("100::/64", "discard-only, RFC 6666"),
    ("100:0:0:1::/64", "dummy prefix, RFC 9780"),
    ("2001::/32", "Teredo, RFC 4380"),
    ("2001:2::/48", "benchmarking, RFC 5180"),
    ("2001::/23", "IETF protocol assignments, RFC 2928"),
    ("2001:db8::/32", "documentation, RFC 3849"),
    ("2002::/16", "6to4 (stands for IPv4 addresses), RFC 3056"),
    ("3fff::/20", "documentation, RFC 9637"),
    ("5f00::/16", "segment routing (SRv6) SIDs, RFC 9602"),
    ("fc00::/7", "unique local, RFC 4193"),
    ("fe80::/10", "link-local, RFC 4291"),
    ("fec0::/10", "site-local (deprecated), RFC 3879"),
    ("ff00::/8", "multicast, RFC 4291"),
    // The rest of the space outside 2000::/3 is not global unicast.
    ("::/3", "outside the global unicast space 2000::/3"),
    ("4000::/2", "outside the global unicast space 2000::/3"),
    ("8000::/1", "outside the global unicast space 2000::/3"),
];

/// Blocks inside the ones above that IANA marks globally reachable: anycast services.
const PUBLIC_INSIDE: &[&str] = &[
    "192.0.0.9/32",
    "192.0.0.10/32",
    "2001:1::1/128",
    "2001:1::2/128",
    "2001:1::3/128",
    "2001:3::/32",
    "2001:4:112::/48",
    "2001:20::/28",
    "2001:30::/28",
];

fn tables() -> &'static (Vec<Block>, Vec<IpNet>) {
    static TABLES: OnceLock<(Vec<Block>, Vec<IpNet>)> = OnceLock::new();
    TABLES.get_or_init(|| {
        // The strings are constants, checked by the tests below; a typo is a bug, not input.
        let parse = |s: &str| s.parse::<IpNet>().expect("a valid prefix in the table");
        let blocks = NON_PUBLIC
            .iter()
            .map(|&(net, name)| Block {
                net: parse(net),
                name,
            })
            .collect();
        (blocks, PUBLIC_INSIDE.iter().map(|s| parse(s)).collect())
    })
}

/// The first non-public block that `net` lies in, contains or otherwise overlaps (prefixes
/// overlap only by nesting); `None` for a publicly reachable one.
pub fn non_public(net: &IpNet) -> Option<&'static Block> {
    let (blocks, public) = tables();
    if public.iter().any(|p| p.contains(net)) {
        return None;
    }
    blocks
        .iter()
        .find(|b| b.net.contains(net) || net.contains(&b.net))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_parses_and_holds_networks_only() {
        let (blocks, public) = tables();
        assert_eq!(blocks.len(), NON_PUBLIC.len());
        for net in blocks.iter().map(|b| b.net).chain(public.iter().copied()) {
            assert_eq!(net, net.trunc(), "{net} has host bits");
        }
        for p in public {
            assert!(
                blocks.iter().any(|b| b.net.contains(p)),
                "{p} is in no block"
            );
        }
    }

    #[test]
    fn non_public_inside_around_and_public() {
        let check = |s: &str| non_public(&s.parse().unwrap()).map(|b| b.net.to_string());
        for (net, block) in [
            ("10.1.2.3/32", "10.0.0.0/8"),
            ("8.0.0.0/6", "10.0.0.0/8"),
            ("0.0.0.0/0", "0.0.0.0/8"),
            ("169.254.169.254/32", "169.254.0.0/16"),
            ("100.64.0.1/32", "100.64.0.0/10"),
            ("198.19.0.0/16", "198.18.0.0/15"),
            ("239.1.1.1/32", "224.0.0.0/4"),
            ("255.255.255.255/32", "255.255.255.255/32"),
            ("192.0.0.8/29", "192.0.0.0/24"),
            ("::1/128", "::1/128"),
            ("64:ff9b::a00:1/128", "64:ff9b::/96"),
            ("64:ff9b:1::/48", "64:ff9b:1::/48"),
            ("fd00::1/128", "fc00::/7"),
            ("fe80::1/128", "fe80::/10"),
            ("2001:db8::/48", "2001:db8::/32"),
            ("3fff:1::/32", "3fff::/20"),
            ("2001::/16", "2001::/32"),
            ("100::/64", "100::/64"),
            ("4000::1/128", "4000::/2"),
        ] {
            assert_eq!(check(net).as_deref(), Some(block), "{net}");
        }
        for net in [
            "115.238.203.109/32",
            "101.0.0.0/8",
            "11.0.0.0/8",
            "192.0.0.9/32",
            "192.31.196.0/24",
            "2402:4e00::/32",
            "240e:ff:e020::1/128",
            "2001:4:112::/48",
        ] {
            assert_eq!(check(net), None, "{net}");
        }
    }
}
