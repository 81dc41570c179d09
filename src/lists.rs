//! Plain lists (`lists/` in a build folder): one text file per group, one value a line, and an
//! index that names each file's family, protocol and ports. Firewalls that fetch a list from a
//! URL (pfSense and OPNsense URL tables, Palo Alto external dynamic lists, FortiGate threat
//! feeds, MikroTik scripts) take these as they are, with no comment or header to strip: the
//! index carries the digest of `source.json` instead.
//!
//! A file's name is its group's slug (`v4_tcp_443.txt`, `dns_tcp_80_443.txt`), the same in
//! every build of a list whose group keeps its protocol and ports.

use serde_json::json;

use crate::model::{Dest, Family};
use crate::normalize::Policy;

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

/// Every file of `DIR` (name, bytes), the index last. A wildcard `.example.com` (the name and
/// every name below it) is written as two lines, `example.com` and `*.example.com`: Palo Alto's
/// and FortiGate's `*.` covers the names below the apex, not the apex itself.
pub fn render(policy: &Policy, slugs: &[String], digest: &str) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::with_capacity(policy.groups.len() + 1);
    let mut index = Vec::with_capacity(policy.groups.len());
    for (g, slug) in policy.groups.iter().zip(slugs) {
        let name = format!("{slug}.txt");
        let mut text = String::new();
        for m in &g.members {
            match &m.dest {
                Dest::Net(n) => text.push_str(&format!("{n}\n")),
                Dest::Exact(h) => text.push_str(&format!("{h}\n")),
                Dest::Wildcard(h) => text.push_str(&format!("{h}\n*.{h}\n")),
            }
        }
        index.push(json!({
            "file": name,
            "family": match g.family {
                Family::Ipv4 => "ipv4",
                Family::Ipv6 => "ipv6",
                Family::Dns => "dns",
            },
            "protocol": g.protocol.as_str(),
            "ports": g.ports.api_values(),
            "lines": text.lines().count(),
        }));
        files.push((name, text.into_bytes()));
    }
    let doc = json!({
        "tool": env!("CARGO_PKG_NAME"),
        "version": env!("CARGO_PKG_VERSION"),
        "digest": digest,
        "files": index,
    });
    // A `Value` always serializes.
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    files.push((INDEX.to_owned(), text.into_bytes()));
    files
}

#[cfg(test)]
mod tests {
    use super::*;

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
