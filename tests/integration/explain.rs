//! `explain DEST[:PORT[/PROTO]]` through the binary: allowed, not allowed and partly allowed,
//! each target judged as it really matches (dnsmasq's `/name/` covers the names below at L3,
//! Squid and pfSense stay exact, pfSense has no wildcards, Squid no UDP), and its verdicts
//! agree with the independent oracle.

use std::process::Output;

use crate::oracle::{parse_addr, Expected, Proto};
use crate::support::{fixture, readme_block_after, run, stderr, stdout};

fn explain(query: &str, extra: &[&str]) -> Output {
    let rich = fixture("rich.json");
    let mut args = vec!["explain", query, "--input", rich.to_str().unwrap()];
    args.extend_from_slice(extra);
    run(&args, None)
}

/// The verdict line of `target` (`allowed`, `partly allowed`, `not allowed`, `does not apply:
/// ...`).
fn verdict(out: &Output, target: &str) -> String {
    let text = stdout(out);
    let prefix = format!("{target}: ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no line for {target} in {text}"))
        .to_owned()
}

/// The block of lines that answers for `target`.
fn block(out: &Output, target: &str) -> String {
    let text = stdout(out);
    let mut lines = text
        .lines()
        .skip_while(|l| !l.starts_with(&format!("{target}: ")));
    let first = lines.next().unwrap_or_default().to_owned();
    let rest: Vec<&str> = lines.take_while(|l| l.starts_with("  ")).collect();
    std::iter::once(first.as_str())
        .chain(rest)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn an_allowed_address_names_its_group_and_entries() {
    let out = explain("101.20.0.5:443/tcp", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
    for target in ["iptables", "nftables", "pfsense", "squid"] {
        assert_eq!(
            block(&out, target),
            format!(
                "{target}: allowed\n  tcp 80,443 (group v4_tcp_80_443): 101.20.0.0/23\n    \
                 ip_list[0] necessary: \"adjacent /24 a\""
            )
        );
    }
    // On port 80 the host entry, which lists only that port, is one of the reasons too.
    let on_80 = explain("101.20.0.5:80/tcp", &["--target", "squid"]);
    assert_eq!(
        block(&on_80, "squid"),
        "squid: allowed\n  tcp 80,443 (group v4_tcp_80_443): 101.20.0.0/23\n    \
         ip_list[0] necessary: \"adjacent /24 a\"\n    ip_list[3]: \"host inside, fewer ports\""
    );
    assert!(verdict(&out, "ip6tables").starts_with("does not apply: an IPv4 destination"));
    assert!(verdict(&out, "dnsmasq").starts_with("does not apply"));
    // Without a port, any port will do; without a protocol, either.
    assert_eq!(explain("101.20.0.5", &[]).status.code(), Some(0));
}

#[test]
fn not_allowed_says_where_the_destination_is_listed_instead() {
    let out = explain("198.51.100.1:443/tcp", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(verdict(&out, "squid"), "not allowed");
    let out = explain("101.20.0.5:22/tcp", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        block(&out, "nftables"),
        "nftables: not allowed\n  note: listed on other ports only: tcp 80,443 (group v4_tcp_80_443)"
    );
    // The protocol counts: 101.20.0.0/23 is listed on TCP only.
    let out = explain("101.20.0.5:443/udp", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(verdict(&out, "nftables"), "not allowed");
    assert!(verdict(&out, "squid").starts_with("does not apply: Squid proxies TCP only"));
}

#[test]
fn a_cidr_only_partly_covered_is_partly_allowed() {
    let out = explain("101.20.0.0/16:443/tcp", &[]);
    assert_eq!(out.status.code(), Some(1));
    for target in ["iptables", "nftables", "pfsense", "squid"] {
        assert_eq!(verdict(&out, target), "partly allowed");
    }
    // 101.20.0.0/23 is all allowed, made of two adjacent /24s and more.
    let out = explain("101.20.0.0/23:80/tcp", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    for entry in ["ip_list[0]", "ip_list[1]", "ip_list[2]", "ip_list[3]"] {
        assert!(block(&out, "squid").contains(entry), "{}", stdout(&out));
    }
}

#[test]
fn names_are_judged_as_each_target_matches_them() {
    // Under the universal_domian wildcard: Squid and nftables (through dnsmasq) allow it;
    // pfSense can't express wildcards, and says so. Allowed by some, not all: exit 1.
    let out = explain("a.work.weixin.qq.com:443/tcp", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(verdict(&out, "squid"), "allowed");
    assert_eq!(verdict(&out, "nftables"), "allowed");
    assert_eq!(
        block(&out, "pfsense"),
        "pfsense: not allowed\n  note: the list's wildcard .work.weixin.qq.com is not in pfsense.xml: it can't express wildcards, only exact names"
    );
    assert!(block(&out, "squid")
        .contains("(group dns_tcp_80_443): .work.weixin.qq.com\n    domain_list[0] necessary: "));
    let only = explain(
        "a.work.weixin.qq.com:443/tcp",
        &["--target", "squid,nftables"],
    );
    assert_eq!(only.status.code(), Some(0), "{}", stdout(&only));

    // short.qq.com is an exact name: below it, only dnsmasq's /short.qq.com/ lets a name pass.
    let out = explain("x.short.qq.com:80/tcp", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(verdict(&out, "squid"), "not allowed");
    assert_eq!(verdict(&out, "pfsense"), "not allowed");
    let nft = block(&out, "nftables");
    assert!(
        nft.starts_with("nftables: allowed\n  tcp 80,443 (group dns_tcp_80_443): short.qq.com\n"),
        "{nft}"
    );
    assert!(
        nft.contains("note: dnsmasq's /name/ matches the names below"),
        "{nft}"
    );
    // The name itself passes everywhere.
    let out = explain("short.qq.com:80/tcp", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));

    // The name sets iptables matches are filled only in dnsmasq's ipset mode.
    assert!(verdict(&out, "iptables")
        .starts_with("does not apply: it matches names only through the ipset sets"));
    let out = explain("x.short.qq.com:80/tcp", &["--dnsmasq-sets", "ipset"]);
    assert_eq!(verdict(&out, "iptables"), "allowed");
    assert_eq!(verdict(&out, "ip6tables"), "allowed");
    assert!(verdict(&out, "nftables").starts_with("does not apply"));

    // A wildcard asked: all of it where the list's wildcard is, part of it where only names
    // below it are (pfSense keeps the exact a.b.wecom.example.com).
    let out = explain(
        "*.wecom.example.com:443/tcp",
        &["--target", "squid,pfsense"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(verdict(&out, "squid"), "allowed");
    assert_eq!(verdict(&out, "pfsense"), "partly allowed");
}

#[test]
fn ipv6_ports_and_protocols() {
    let out = explain("[2001:da8::1]:443/tcp", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(
        block(&out, "ip6tables"),
        "ip6tables: allowed\n  tcp 443 (group v6_tcp_443): 2001:da8::1/128\n    ip_list[10] necessary: \"IPv6 host\""
    );
    assert!(verdict(&out, "iptables").starts_with("does not apply: an IPv6 destination"));
    assert_eq!(explain("[2001:da8::1]:80/tcp", &[]).status.code(), Some(1));
    assert_eq!(explain("2001:da8::/32", &[]).status.code(), Some(1));
    // UDP: Squid can't carry it, the others allow it on the listed ports only.
    let out = explain("rtc.wecom.example.com:3478/udp", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(verdict(&out, "squid").starts_with("does not apply"));
    assert!(block(&out, "pfsense").contains("udp 3478,8000-8100"));
    assert_eq!(
        explain("rtc.wecom.example.com:8100/udp", &[]).status.code(),
        Some(0)
    );
    assert_eq!(
        explain("rtc.wecom.example.com:8101/udp", &[]).status.code(),
        Some(1)
    );
    assert_eq!(
        explain("rtc.wecom.example.com:3478/tcp", &[]).status.code(),
        Some(1)
    );
}

#[test]
fn the_filters_of_render_apply() {
    // ip_list[1] (101.20.1.0/24) is not necessary.
    assert_eq!(explain("101.20.1.5:443/tcp", &[]).status.code(), Some(0));
    let out = explain("101.20.1.5:443/tcp", &["--necessary-only"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(verdict(&out, "squid"), "not allowed");
    // Exact domains: no wildcard, so the name below work.weixin.qq.com is out for Squid.
    let out = explain(
        "a.work.weixin.qq.com:443/tcp",
        &["--exact-domains", "--target", "squid"],
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn a_bad_destination_is_a_usage_error() {
    for bad in [
        "10.0.0.1/8",
        "a.example.com:0",
        "a.example.com:443/icmp",
        "nodots",
        "[::1",
    ] {
        let out = explain(bad, &[]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        assert!(out.stdout.is_empty());
        assert!(
            stderr(&out).starts_with("wecom-allowlist: error: "),
            "{}",
            stderr(&out)
        );
    }
    let out = explain("10.0.0.1/8", &[]);
    assert!(
        stderr(&out).contains("write 10.0.0.0/8 for the network or 10.0.0.1 for the host"),
        "{}",
        stderr(&out)
    );
}

/// The answers agree with what the oracle reads from the list itself: Squid's for TCP
/// (exact names exact), nftables' in both protocols (names as dnsmasq zones).
#[test]
fn explain_agrees_with_the_oracle() {
    let expected = Expected::from_fixture(&fixture("rich.json"));
    let addr_probes = [
        ("101.20.0.0", Proto::Tcp, 80),
        ("101.20.1.255", Proto::Tcp, 443),
        ("101.20.2.0", Proto::Tcp, 443),
        ("101.30.200.1", Proto::Tcp, 80),
        ("101.40.0.7", Proto::Udp, 3478),
        ("101.40.0.7", Proto::Tcp, 3478),
        ("101.60.0.1", Proto::Udp, 53),
        ("2001:da8::1", Proto::Tcp, 443),
        ("2001:da8:0:1::9", Proto::Tcp, 443),
        ("2001:da8:ff:1::1", Proto::Tcp, 80),
        ("2001:da8::2", Proto::Tcp, 443),
    ];
    for (addr, proto, port) in addr_probes {
        let (family, value) = parse_addr(addr).unwrap();
        let want = expected.addrs.allows(family, proto, value, port);
        let shown = if addr.contains(':') {
            format!("[{addr}]:{port}/{}", proto.name())
        } else {
            format!("{addr}:{port}/{}", proto.name())
        };
        let out = explain(&shown, &["--target", "nftables"]);
        let got = verdict(&out, "nftables") == "allowed";
        assert_eq!(got, want, "{shown}: {}", stdout(&out));
    }
    let name_probes = [
        ("i.work.weixin.qq.com", 80),
        ("work.weixin.qq.com", 443),
        ("deep.x.work.weixin.qq.com", 443),
        ("short.qq.com", 443),
        ("x.short.qq.com", 443),
        ("wecom.example.com", 443),
        ("a.b.wecom.example.com", 443),
        ("dl.example.net", 8080),
        ("dl.example.net", 80),
        ("sub.dl.example.net", 443),
        ("qq.com", 443),
    ];
    for (name, port) in name_probes {
        let query = format!("{name}:{port}/tcp");
        let out = explain(&query, &["--target", "squid,nftables"]);
        let allows = |ports: Vec<(u16, u16)>| ports.iter().any(|&(a, b)| a <= port && port <= b);
        let squid = allows(expected.names(Proto::Tcp).allowed(name));
        let l3 = allows(expected.names(Proto::Tcp).as_zones().allowed(name));
        assert_eq!(
            verdict(&out, "squid") == "allowed",
            squid,
            "{query} squid: {}",
            stdout(&out)
        );
        assert_eq!(
            verdict(&out, "nftables") == "allowed",
            l3,
            "{query} nftables: {}",
            stdout(&out)
        );
    }
}

#[test]
fn hostile_descriptions_stay_on_their_line() {
    let hostile = fixture("hostile.json");
    for query in ["101.0.2.1:443/tcp", "101.0.2.11:443/tcp"] {
        let out = run(
            &[
                "explain",
                query,
                "--input",
                hostile.to_str().unwrap(),
                "--target",
                "squid",
            ],
            None,
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let text = stdout(&out);
        // A verdict line, a group line, one entry line.
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
    }
    let out = run(
        &[
            "explain",
            "101.0.2.1:443/tcp",
            "--input",
            hostile.to_str().unwrap(),
            "--target",
            "squid",
        ],
        None,
    );
    assert!(
        stdout(&out).ends_with("    ip_list[0]: \"line one -A OUTPUT -j ACCEPT COMMIT\"\n"),
        "{}",
        stdout(&out)
    );
}

/// pfSense's answer follows its file: a TCP and a UDP group merged into one `tcp/udp` rule
/// are named as the file names them, and an address source of one family reaches no address of
/// the other.
#[test]
fn pfsense_answers_follow_its_tcp_udp_rules_and_its_source() {
    let out = explain("101.60.0.1:53/udp", &["--target", "pfsense"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let answer = block(&out, "pfsense");
    assert!(answer.contains("(group v4_tcpudp_53)"), "{answer}");
    let rich = fixture("rich.json");
    let xml = crate::support::render("pfsense", &rich, &[]);
    assert!(xml.contains("<name>WECOM_V4_TCPUDP_53</name>"), "{xml}");

    let v6 = "2001:da8::1";
    assert_eq!(
        verdict(&explain(v6, &["--target", "pfsense"]), "pfsense"),
        "allowed"
    );
    let out = explain(
        v6,
        &["--target", "pfsense", "--pfsense-source", "10.0.0.0/8"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        verdict(&out, "pfsense").starts_with("does not apply: its rules come from an IPv4 source"),
        "{}",
        stdout(&out)
    );
    // The IPv4 destinations stay allowed from an IPv4 source; an IPv6 source reaches none.
    let out = explain(
        "101.60.0.1:53/udp",
        &["--target", "pfsense", "--pfsense-source", "10.0.0.0/8"],
    );
    assert_eq!(verdict(&out, "pfsense"), "allowed");
    let out = explain(
        "101.60.0.1:53/udp",
        &["--target", "pfsense", "--pfsense-source", "2001:db8::/32"],
    );
    assert!(
        verdict(&out, "pfsense").starts_with("does not apply"),
        "{}",
        stdout(&out)
    );
}

/// The README's `explain` example, run as written from the crate's folder, prints what the
/// README shows.
#[test]
fn the_readme_example_prints_what_the_readme_shows() {
    let block = readme_block_after("<!-- example: explain -->");
    let (command, shown) = block
        .split_once('\n')
        .expect("a command line, then its output");
    let args: Vec<&str> = command
        .strip_prefix("$ wecom-allowlist ")
        .expect("the block starts with the command")
        .split_whitespace()
        .collect();
    let out = run(&args, None);
    assert_eq!(stderr(&out), "");
    assert_eq!(stdout(&out), shown);
    assert_eq!(out.status.code(), Some(0));
}
