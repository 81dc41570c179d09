//! Plain lists (`lists/` in a build folder): one text file per group, one value a line, and an
//! index that names each file's family, protocol and ports. Firewalls that fetch a list from a
//! URL (pfSense and OPNsense URL tables, Palo Alto external dynamic lists, FortiGate threat
//! feeds, MikroTik scripts) take these as they are, with no comment or header to strip: the
//! index carries the digest of `source.json` instead.
//!
//! A file's name is its group's slug (`v4_tcp_443.txt`, `dns_tcp_80_443.txt`), the same in
//! every build of a list whose group keeps its protocol and ports.

use std::fmt::Write as _;
use std::io::Write;

use ipnet::IpNet;
use serde_json::json;

use crate::model::{ipv4_text, Dest, Family};
use crate::normalize::{Group, Policy};

/// The folder, inside a build folder, that holds the lists and their index.
pub const DIR: &str = "lists";

/// The index, inside `DIR`.
pub const INDEX: &str = "index.json";

/// True for a name that a build writes into `DIR` for a group: such a file that the new build
/// doesn't write belonged to a group that is gone, and is removed with the build.
pub fn is_group_file(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".txt") else {
        return false;
    };
    ["v4_", "v6_", "dns_"].iter().any(|p| {
        stem.strip_prefix(p).is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
    })
}

/// The files of `DIR` for a policy: one per group, the index last. A wildcard `.example.com`
/// (the name and every name below it) is written as two lines, `example.com` and
/// `*.example.com`: Palo Alto's and FortiGate's `*.` covers the names below the apex, not the
/// apex itself. Each file is written into a writer, so that none is held whole.
pub struct Files<'a> {
    policy: &'a Policy,
    slugs: Vec<String>,
    digest: &'a str,
}

impl<'a> Files<'a> {
    pub fn new(policy: &'a Policy, slugs: Vec<String>, digest: &'a str) -> Files<'a> {
        Files {
            policy,
            slugs,
            digest,
        }
    }

    /// Every file's name, the index last.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.slugs.iter().map(|s| format!("{s}.txt")).collect();
        names.push(INDEX.to_owned());
        names
    }

    /// Writes the file `names()[i]`.
    pub fn write(&self, i: usize, out: &mut dyn Write) -> std::io::Result<()> {
        match self.policy.groups.get(i) {
            Some(g) => write_group(g, out),
            None => out.write_all(self.index().as_bytes()),
        }
    }

    fn index(&self) -> String {
        let index: Vec<_> = self
            .policy
            .groups
            .iter()
            .zip(&self.slugs)
            .map(|(g, slug)| {
                json!({
                    "file": format!("{slug}.txt"),
                    "family": match g.family {
                        Family::Ipv4 => "ipv4",
                        Family::Ipv6 => "ipv6",
                        Family::Dns => "dns",
                    },
                    "protocol": g.protocol.as_str(),
                    "ports": g.ports.api_values(),
                    "lines": line_count(g),
                })
            })
            .collect();
        let doc = json!({
            "tool": env!("CARGO_PKG_NAME"),
            "version": env!("CARGO_PKG_VERSION"),
            "digest": self.digest,
            "files": index,
        });
        // A `Value` always serializes.
        let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        text.push('\n');
        text
    }
}

/// A group's file: one value a line, written in pieces of about 64 KiB. Most of a large list
/// is IPv4 networks, written without `fmt` (see `ipv4_text`).
fn write_group(g: &Group, out: &mut dyn Write) -> std::io::Result<()> {
    const PIECE: usize = 1 << 16;
    let mut text = String::with_capacity(PIECE + 512);
    for m in &g.members {
        match &m.dest {
            Dest::Net(IpNet::V4(n)) => {
                text.push_str(ipv4_text(n.addr(), Some(n.prefix_len()), &mut [0; 20]));
            }
            // Writing into a String can't fail.
            Dest::Net(n) => {
                let _ = write!(text, "{n}");
            }
            Dest::Exact(h) => text.push_str(h.as_str()),
            Dest::Wildcard(h) => {
                text.push_str(h.as_str());
                text.push_str("\n*.");
                text.push_str(h.as_str());
            }
        }
        text.push('\n');
        if text.len() >= PIECE {
            out.write_all(text.as_bytes())?;
            text.clear();
        }
    }
    out.write_all(text.as_bytes())
}

/// How many lines `write_group` writes: a wildcard takes two.
fn line_count(g: &Group) -> usize {
    g.members
        .iter()
        .map(|m| match m.dest {
            Dest::Wildcard(_) => 2,
            Dest::Net(_) | Dest::Exact(_) => 1,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Hostname, PortRange, PortSet, Protocol};
    use crate::normalize::Member;

    /// Each member's line(s) as `Display` writes the value, in pieces or not.
    #[test]
    fn a_group_file_is_what_display_writes() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut members = Vec::new();
        for i in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let dest = match i % 5 {
                0..=2 => {
                    let len = (x >> 32) as u8 % 33;
                    let n = ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(x as u32), len).unwrap();
                    Dest::Net(IpNet::V4(n.trunc()))
                }
                3 => {
                    let len = (x >> 40) as u8 % 129;
                    let addr = std::net::Ipv6Addr::from(u128::from(x) << 64 | u128::from(i));
                    Dest::Net(IpNet::V6(ipnet::Ipv6Net::new(addr, len).unwrap().trunc()))
                }
                _ => {
                    let h = Hostname::parse(&format!("h{}.example.com", x % 1000)).unwrap();
                    if x.is_multiple_of(2) {
                        Dest::Exact(h)
                    } else {
                        Dest::Wildcard(h)
                    }
                }
            };
            members.push(Member {
                dest,
                notes: Default::default(),
            });
        }
        let group = Group {
            family: Family::Ipv4,
            protocol: Protocol::Tcp,
            ports: PortSet::new(vec![PortRange::new(443, 443).unwrap()]).unwrap(),
            members,
        };
        let mut expected = String::new();
        for m in &group.members {
            match &m.dest {
                Dest::Wildcard(h) => expected.push_str(&format!("{h}\n*.{h}\n")),
                d => expected.push_str(&format!("{d}\n")),
            }
        }
        let mut written = Vec::new();
        write_group(&group, &mut written).unwrap();
        assert_eq!(String::from_utf8(written).unwrap(), expected);
    }

    #[test]
    fn group_files_are_told_from_other_files() {
        for name in [
            "v4_tcp_443.txt",
            "v6_udp_h0a1b2c3d.txt",
            "dns_tcp_80_443_2.txt",
        ] {
            assert!(is_group_file(name), "{name}");
        }
        for name in [
            "index.json",
            "v4_.txt",
            "v4_tcp_443.txt.bak",
            "notes.txt",
            "V4_TCP_443.txt",
            "v4_tcp 443.txt",
            ".wecom-allowlist-x.tmp",
        ] {
            assert!(!is_group_file(name), "{name}");
        }
    }
}
