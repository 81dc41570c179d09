//! The one table of targets. Adding a target is a variant here, a template in `templates/`
//! and a set of fixtures; the compiler points at every `match` that needs a row.

use crate::endpoint::{Direction, ListName};
use crate::model::Family;
use crate::text::{sanitize_line, truncate_bytes};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Target {
    Iptables,
    Ip6tables,
    Nftables,
    Pfsense,
    Squid,
    Dnsmasq,
    Ipset,
    Nginx,
}

/// How free text is quoted in a target's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// iptables-restore: inside double quotes a backslash escapes the next character.
    Iptables,
    /// nft: a quoted string ends at the next `"`, with no escape at all.
    Nftables,
    Xml,
    /// Squid: free text only ever reaches `#` comment lines.
    Squid,
}

impl Target {
    pub const ALL: [Target; 8] = [
        Target::Iptables,
        Target::Ip6tables,
        Target::Nftables,
        Target::Pfsense,
        Target::Squid,
        Target::Dnsmasq,
        Target::Ipset,
        Target::Nginx,
    ];

    /// The targets of the server list, the default one: `for_list(ListName::Server)` as a
    /// constant, for arrays sized by it. It won't compile if `refuses` disagrees with its length.
    pub const SERVER: [Target; 7] = {
        let mut out = [Target::Iptables; 7];
        let (mut i, mut n) = (0, 0);
        while i < Target::ALL.len() {
            if Target::ALL[i].refuses(ListName::Server).is_none() {
                out[n] = Target::ALL[i];
                n += 1;
            }
            i += 1;
        }
        assert!(
            n == out.len(),
            "Target::SERVER's length is not the server list's count"
        );
        out
    };

    /// Why the target can't hold `list`, or `None` when it can. A target that can't is said so
    /// rather than emitted: a Squid snippet for inbound traffic would look like protection and
    /// be none.
    pub const fn refuses(self, list: ListName) -> Option<&'static str> {
        match (self, list.direction()) {
            (Target::Squid, Direction::Ingress) => Some(
                "Squid is a forward proxy for outbound requests: it can't filter who connects to your callback URL (use iptables, nftables, pfSense or nginx)",
            ),
            (Target::Dnsmasq | Target::Ipset, Direction::Ingress) => Some(
                "the DNS-fed sets serve names your clients resolve; WeCom's callback sources are addresses, which the packet filters and nginx match directly",
            ),
            (Target::Dnsmasq | Target::Ipset, Direction::Egress)
                if matches!(list, ListName::Api) =>
            {
                Some("the DNS-fed sets serve names; the api list holds only addresses, which the packet filters and Squid match directly")
            }
            (Target::Nginx, Direction::Egress) => Some(
                "nginx.conf allows the sources of inbound requests: it holds the callback list only (use --list callback)",
            ),
            _ => None,
        }
    }

    /// The targets that can hold `list`, in the table's order.
    pub fn for_list(list: ListName) -> Vec<Target> {
        Target::ALL
            .into_iter()
            .filter(|t| t.refuses(list).is_none())
            .collect()
    }

    pub const fn name(self) -> &'static str {
        match self {
            Target::Iptables => "iptables",
            Target::Ip6tables => "ip6tables",
            Target::Nftables => "nftables",
            Target::Pfsense => "pfsense",
            Target::Squid => "squid",
            Target::Dnsmasq => "dnsmasq",
            Target::Ipset => "ipset",
            Target::Nginx => "nginx",
        }
    }

    /// The file `build` writes.
    pub fn file_name(self) -> &'static str {
        match self {
            Target::Iptables => "iptables.rules",
            Target::Ip6tables => "ip6tables.rules",
            Target::Nftables => "nftables.nft",
            Target::Pfsense => "pfsense.xml",
            Target::Squid => "squid.conf",
            Target::Dnsmasq => "dnsmasq.conf",
            Target::Ipset => "ipset.rules",
            Target::Nginx => "nginx.conf",
        }
    }

    pub fn summary(self) -> &'static str {
        match self {
            Target::Iptables => {
                "IPv4 rules for iptables-restore --noflush, in a chain of their own"
            }
            Target::Ip6tables => {
                "IPv6 rules for ip6tables-restore --noflush, in a chain of their own"
            }
            Target::Nftables => {
                "an nft -f script: a regular chain whose rules hold their addresses, and the sets dnsmasq fills for the names; both families"
            }
            Target::Pfsense => "pfSense config.xml sections: aliases and pass rules",
            Target::Squid => {
                "a Squid snippet to include: dstdomain/dst/port ACLs and http_access lines"
            }
            Target::Dnsmasq => {
                "a dnsmasq drop-in that adds the addresses of the listed names to the DNS-fed sets"
            }
            Target::Ipset => {
                "ipset sets (both families) that dnsmasq fills, for ipset restore -exist"
            }
            Target::Nginx => {
                "callback list only: allow lines and deny all, to include in the callback URL's location"
            }
        }
    }

    /// The template that renders it for egress: named after the file it writes, except that
    /// ip6tables shares iptables'.
    pub fn template(self) -> &'static str {
        match self {
            Target::Ip6tables => Target::Iptables.file_name(),
            other => other.file_name(),
        }
    }

    /// The template for a list's direction: ingress rules match sources, on chains and rules
    /// of their own.
    pub fn template_for(self, list: ListName) -> &'static str {
        match (list.direction(), self) {
            (Direction::Ingress, Target::Iptables | Target::Ip6tables) => "iptables.callback.rules",
            (Direction::Ingress, Target::Nftables) => "nftables.callback.nft",
            (Direction::Ingress, Target::Pfsense) => "pfsense.callback.xml",
            _ => self.template(),
        }
    }

    /// The only address family the target's file holds, if it is limited to one.
    pub fn family(self) -> Option<Family> {
        match self {
            Target::Iptables => Some(Family::Ipv4),
            Target::Ip6tables => Some(Family::Ipv6),
            Target::Nftables
            | Target::Pfsense
            | Target::Squid
            | Target::Dnsmasq
            | Target::Ipset
            | Target::Nginx => None,
        }
    }

    /// Whether the target matches a name with all its subdomains. Where it doesn't, a name
    /// that a wildcard covers elsewhere must keep its own entry.
    pub fn wildcards(self) -> bool {
        match self {
            // Names reach these through dnsmasq's sets, whose `/name/` covers every name below.
            Target::Iptables | Target::Ip6tables | Target::Nftables => true,
            Target::Squid => true,
            // dnsmasq's `/name/` matches the name and every name below it.
            Target::Dnsmasq | Target::Ipset => true,
            Target::Pfsense => false,
            // Addresses only.
            Target::Nginx => false,
        }
    }

    /// The longest line, in bytes without its newline, that the target's loader reads whole,
    /// with a margin: iptables-restore fails the whole file on a line over about 10,240 bytes,
    /// Squid cuts a line over about 8,190 bytes and fails to parse it, dnsmasq misreads a line
    /// over 1,024 bytes. `None`: no limit that a
    /// generated line could reach (nft reads any length; XML has no lines; nginx reads one
    /// address a line).
    pub fn max_line_bytes(self) -> Option<usize> {
        match self {
            Target::Iptables | Target::Ip6tables => Some(10_000),
            Target::Squid => Some(8_000),
            Target::Dnsmasq => Some(1_000),
            Target::Nftables | Target::Pfsense | Target::Ipset | Target::Nginx => None,
        }
    }

    /// The most addresses (or names) one statement holds: nft without full root (a container,
    /// `unshare -rn`) fails a statement of about 5,500 set elements with "Message too long";
    /// pfSense's GUI caps an alias at 5,000 entries; a Squid ACL line stays short enough to
    /// read. iptables holds one address a rule.
    pub fn chunk(self) -> usize {
        match self {
            Target::Iptables
            | Target::Ip6tables
            | Target::Dnsmasq
            | Target::Ipset
            | Target::Nginx => 1,
            Target::Nftables => 1_000,
            Target::Pfsense => 5_000,
            Target::Squid => 16,
        }
    }

    pub fn syntax(self) -> Syntax {
        match self {
            // ipset.rules: no free text at all; `.rules` files are quoted as iptables' are.
            Target::Iptables | Target::Ip6tables | Target::Ipset => Syntax::Iptables,
            Target::Nftables => Syntax::Nftables,
            Target::Pfsense => Syntax::Xml,
            // Free text reaches only `#` comment lines in these.
            Target::Squid | Target::Dnsmasq | Target::Nginx => Syntax::Squid,
        }
    }
}

impl Syntax {
    /// The name minijinja's auto-escape setting carries for this syntax.
    pub fn name(self) -> &'static str {
        match self {
            Syntax::Iptables => "iptables",
            Syntax::Nftables => "nftables",
            Syntax::Xml => "xml",
            Syntax::Squid => "squid",
        }
    }

    pub fn from_name(name: &str) -> Option<Syntax> {
        [
            Syntax::Iptables,
            Syntax::Nftables,
            Syntax::Xml,
            Syntax::Squid,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }

    /// Makes any text safe where the template prints it: on one line, and unable to end the
    /// quoted string or element it stands in.
    pub fn escape(self, text: &str) -> String {
        self.comment(text, usize::MAX)
    }

    /// Text for a comment whose stored form may hold at most `limit` bytes. The cut happens on
    /// the text as the target stores it (after its parser removed the quoting), at a character
    /// boundary; quoting is added afterwards.
    pub fn comment(self, text: &str, limit: usize) -> String {
        let line = sanitize_line(text);
        let cut = |s: &str| truncate_bytes(s, limit).trim_end().to_owned();
        match self {
            Syntax::Iptables => {
                let mut out = String::new();
                for c in cut(&line).chars() {
                    if matches!(c, '"' | '\\') {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out
            }
            Syntax::Nftables => cut(&line.replace('"', "'")),
            Syntax::Xml => xml_escape(&cut(&line)),
            Syntax::Squid => cut(&line),
        }
    }
}

/// XML 1.0's `Char`: anything else (U+FFFE, U+FFFF, most C0 controls) is fatal to a parser,
/// even written as a character reference.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Escapes markup, and replaces a character that XML can't hold with U+FFFD.
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            c if !is_xml_char(c) => out.push('\u{FFFD}'),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_has_a_distinct_file() {
        let mut files: Vec<_> = Target::ALL.iter().map(|t| t.file_name()).collect();
        files.sort();
        files.dedup();
        assert_eq!(files.len(), Target::ALL.len());
    }

    #[test]
    fn each_list_gets_the_targets_of_its_direction() {
        use Target::*;
        assert_eq!(
            Target::SERVER,
            [Iptables, Ip6tables, Nftables, Pfsense, Squid, Dnsmasq, Ipset]
        );
        assert_eq!(Target::for_list(ListName::Server), Target::SERVER);
        assert_eq!(
            Target::for_list(ListName::Api),
            [Iptables, Ip6tables, Nftables, Pfsense, Squid]
        );
        assert_eq!(
            Target::for_list(ListName::Callback),
            [Iptables, Ip6tables, Nftables, Pfsense, Nginx]
        );
        assert_eq!(Iptables.template_for(ListName::Api), "iptables.rules");
        assert_eq!(
            Ip6tables.template_for(ListName::Callback),
            "iptables.callback.rules"
        );
    }

    #[test]
    fn quoting_per_syntax() {
        let hostile = "a\"b\\c\n<x>&'";
        assert_eq!(Syntax::Iptables.escape(hostile), r#"a\"b\\c <x>&'"#);
        assert_eq!(Syntax::Nftables.escape(hostile), r"a'b\c <x>&'");
        assert_eq!(
            Syntax::Xml.escape(hostile),
            "a&quot;b\\c &lt;x&gt;&amp;&apos;"
        );
        assert_eq!(Syntax::Squid.escape(hostile), "a\"b\\c <x>&'");
    }

    #[test]
    fn xml_never_holds_a_character_outside_xml_chars() {
        let text = "a\u{FFFE}b\u{FFFF}c\u{1}\u{1F}d\u{E000}\u{10FFFF}\u{D7FF}";
        for escaped in [Syntax::Xml.escape(text), xml_escape(text)] {
            assert!(escaped.chars().all(is_xml_char), "{escaped:?}");
            assert!(
                escaped.contains("\u{E000}\u{10FFFF}\u{D7FF}"),
                "{escaped:?}"
            );
        }
        assert_eq!(xml_escape("\u{FFFE}x\u{FFFF}"), "\u{FFFD}x\u{FFFD}");
    }

    #[test]
    fn comment_limits_count_stored_bytes() {
        // 43 CJK characters are 129 bytes: nft takes 128, so 42 characters remain.
        let cjk = "企".repeat(43);
        assert_eq!(Syntax::Nftables.comment(&cjk, 128).chars().count(), 42);
        // The escaping backslashes are not stored, so they don't count against the limit.
        let quotes = "\"".repeat(300);
        let c = Syntax::Iptables.comment(&quotes, 255);
        assert_eq!(c.len(), 510);
        assert_eq!(c.matches('"').count(), 255);
    }
}
