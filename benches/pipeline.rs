//! How the pipeline scales: synthetic lists of growing size through parse, normalize and every
//! renderer. Run with `cargo bench --bench pipeline`. The last column divides the time by
//! n·log2(n): it stays roughly flat when the cost grows as n log n.

use std::hint::black_box;
use std::time::{Duration, Instant};

use wecom_allowlist::config::Config;
use wecom_allowlist::render::Templates;
use wecom_allowlist::{prepare, wecom, Target};

/// A deterministic list of `n` IP entries and `n / 10` domain entries, with overlapping
/// networks, shared port sets and wildcards, like WeCom's own list but larger.
fn synthetic(n: usize) -> String {
    let mut ips = Vec::with_capacity(n);
    let mut x: u32 = 0x2545_F491;
    for i in 0..n {
        // xorshift: cheap, deterministic, well spread.
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let len = [32, 32, 32, 28, 24][i % 5];
        let addr = std::net::Ipv4Addr::from((x & 0x00FF_FFFF) | 0x6500_0000);
        let net = ipnet::Ipv4Net::new(addr, len)
            .expect("valid length")
            .trunc();
        let ports = ["[443]", "[80,443]", "[8080,\"8000-8100\"]"][i % 3];
        let proto = ["TCP", "UDP", "TCP/UDP"][i % 3];
        ips.push(format!(
            r#"{{"ip":"{net}","protocol":"{proto}","port":{ports},"is_necessary":{},"description":"节点 {i}"}}"#,
            i % 2
        ));
    }
    let domains: Vec<String> = (0..n / 10)
        .map(|i| {
            format!(
                r#"{{"domain":"n{i}.z{}.example.com","universal_domian":"{}","protocol":"TCP","port":[443],"is_necessary":1,"description":"d"}}"#,
                i % 97,
                if i % 3 == 0 { format!("z{}.example.com", i % 97) } else { String::new() }
            )
        })
        .collect();
    format!(
        r#"{{"errcode":0,"errmsg":"ok","ip_list":[{}],"domain_list":[{}]}}"#,
        ips.join(","),
        domains.join(",")
    )
}

/// `n` hosts with nested port sets {1}, {1,3}, {1,3,5} ...: every group's ports hold the ports
/// of every smaller one, the worst shape for comparing groups pairwise.
fn nested(n: usize) -> String {
    let ips: Vec<String> = (0..n)
        .map(|i| {
            let ports: Vec<String> = (0..=i).map(|k| (2 * k + 1).to_string()).collect();
            format!(
                r#"{{"ip":"101.{}.{}.1","protocol":"TCP","port":[{}],"is_necessary":1}}"#,
                i / 256,
                i % 256,
                ports.join(",")
            )
        })
        .collect();
    format!(r#"{{"errcode":0,"ip_list":[{}]}}"#, ips.join(","))
}

fn run_once(doc: &[u8], templates: &Templates, config: &Config) -> usize {
    let response = wecom::parse(doc, false).expect("valid synthetic list");
    let prepared = prepare(response, config).expect("prepares");
    Target::SERVER
        .iter()
        .map(|&t| prepared.render(t, templates).expect("renders").len())
        .sum()
}

fn main() {
    let templates = Templates::new(None).expect("built-in templates");
    let config = Config::default();
    println!(
        "{:>8} {:>12} {:>14} {:>16}",
        "entries", "median", "output bytes", "ns / (n log2 n)"
    );
    for n in [1_000, 4_000, 16_000, 64_000] {
        let doc = synthetic(n);
        let mut times: Vec<Duration> = Vec::new();
        let mut bytes = 0;
        let runs = if n >= 64_000 { 3 } else { 7 };
        for _ in 0..runs {
            let start = Instant::now();
            bytes = black_box(run_once(doc.as_bytes(), &templates, &config));
            times.push(start.elapsed());
        }
        times.sort();
        let median = times[times.len() / 2];
        let nlogn = n as f64 * (n as f64).log2();
        println!(
            "{n:>8} {:>10.1}ms {bytes:>14} {:>16.1}",
            median.as_secs_f64() * 1e3,
            median.as_nanos() as f64 / nlogn
        );
    }
    println!("\nnested port sets {{1}}, {{1,3}}, {{1,3,5}} ...");
    println!(
        "{:>8} {:>12} {:>14} {:>18}",
        "entries", "all targets", "output bytes", "normalize (squid)"
    );
    for n in [250, 500, 1_000] {
        let doc = nested(n);
        let start = Instant::now();
        let bytes = black_box(run_once(doc.as_bytes(), &templates, &config));
        let all = start.elapsed();
        // The normalize step alone, for one target and without rendering: where the cost of
        // comparing port groups lives. Parsing and preparing stay outside the timing.
        let response = wecom::parse(doc.as_bytes(), false).expect("valid synthetic list");
        let prepared = prepare(response, &config).expect("prepares");
        let normalize = median_of(5, || {
            black_box(prepared.policy(Target::Squid).expect("normalizes"));
        });
        println!(
            "{n:>8} {:>10.1}ms {bytes:>14} {:>16.1}ms",
            all.as_secs_f64() * 1e3,
            normalize.as_secs_f64() * 1e3
        );
    }
}

/// The median of `runs` timed calls of `f`.
fn median_of(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort_unstable();
    times[runs / 2]
}
