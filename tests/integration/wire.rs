//! Proof on the wire: the outputs are loaded as the README says into a "client" network
//! namespace joined by veth to a "net" namespace that holds, on its loopback, the first and last
//! address of every listed CIDR and the addresses just before and after it, with TCP and UDP
//! listeners (IPv4 and IPv6) on every listed port, the ports around them and a few unlisted ones.
//! Real packets from the client then either reach their listener or are refused by the kernel,
//! and each verdict is compared with the oracle's reading of the fixture (tests/integration/
//! oracle.rs, which shares no code with the crate).
//!
//! Modes (each in a fresh client namespace, the net namespace shared):
//! - control: no firewall; every listener must answer, so a later "drop" is the firewall's.
//! - iptables: OUTPUT policy DROP plus loopback and established, iptables.rules and
//!   ip6tables.rules with `--noflush`, the hook from the files' headers.
//! - nftables: a base chain with `policy drop` in `table inet filter`, `nft -f nftables.nft`,
//!   the jump from the file's header.
//! - squid: a real squid with squid.conf included before `http_access deny all`, names resolved
//!   through its `hosts_file`, curl GET and CONNECT through it.
//! - dnsmasq+nftset, dnsmasq+ipset: a dnsmasq in the client, listening on 127.0.0.1 with
//!   dnsmasq.conf as a drop-in and an upstream dnsmasq in net that gives every probed name
//!   addresses of its own; nftables.nft, or ipset.rules with the iptables files. A name's
//!   addresses pass on its listed ports only once it was resolved through the client's dnsmasq.
//!
//! Each mode loads list A, probes, loads the changed list B on top as a user would, and probes
//! again against B. Verdicts come from the kernel (EPERM from a send that OUTPUT dropped) or from
//! an explicit answer (the listener's echo, squid's 403), never from timing; every wait is
//! bounded. A further mode can be added as one more function that sets up a client namespace,
//! loads files and returns its probes.
//!
//! The listeners and probes are tests/wire/wire.py, run with `ip netns exec`.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

use crate::oracle::{parse_net, parse_port_range, Expected, Family, Ports, Proto};
use crate::support;

/// Set to `1` to skip (with a note) when a program or root is missing, instead of failing.
const SKIP_VAR: &str = "WECOM_ALLOWLIST_SKIP_REAL_TOOLS";

/// Where names resolve to for squid (its `hosts_file`): outside every listed CIDR, so a name's
/// verdict depends on the name rules alone.
const NAMES_ADDR: &str = "203.205.254.1";

/// An address that no list mentions, whose reverse name (squid's hosts_file) lies below a listed
/// wildcard, as if its owner had set its PTR record so: squid must not let a request that names
/// it through by that name (a `dstdomain` ACL without `-n` would).
const PTR_ADDR: &str = "203.205.254.2";

/// Ports that no list mentions, probed on every address.
const UNLISTED_PORTS: [u16; 2] = [22, 6000];

const SQUID_PORT: u16 = 3128;

fn wire_py() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/wire/wire.py")
}

fn wire_fixture(name: &str) -> PathBuf {
    support::fixtures().join("wire").join(name)
}

// ---------------------------------------------------------------------------------------------
// Gating

fn on_path(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(name))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Whether everything in `tools` is here and we are root. What's missing fails the test unless
/// WECOM_ALLOWLIST_SKIP_REAL_TOOLS=1, which skips it with a note: a silent skip would hide a
/// regression wherever the tools are missing by accident.
fn require(tools: &[&str]) -> bool {
    let mut missing: Vec<String> = tools
        .iter()
        .filter(|t| !on_path(t))
        .map(|t| format!("{t} is not on PATH"))
        .collect();
    if !is_root() {
        missing.push("the wire test needs root (network namespaces)".into());
    }
    if missing.is_empty() {
        return true;
    }
    let problem = missing.join("; ");
    if std::env::var(SKIP_VAR).is_ok_and(|v| v == "1") {
        note(&format!("wire: skipped ({SKIP_VAR}=1): {problem}"));
        return false;
    }
    panic!("{problem} (set {SKIP_VAR}=1 to skip the real-tool tests)");
}

/// Straight to stderr, past the test harness's capture, so CI logs show it.
fn note(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

// ---------------------------------------------------------------------------------------------
// Namespaces and processes

fn run_cmd(cmd: &mut Command, stdin: Option<&[u8]>) -> Result<String, String> {
    let shown = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{shown} can't start: {e}"))?;
    if let Some(bytes) = stdin {
        let _ = child.stdin.take().map(|mut s| s.write_all(bytes));
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{shown}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{shown} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// `ip ARGS`, or panics with its error.
fn ip(args: &[&str]) {
    run_cmd(Command::new("ip").args(args), None).unwrap_or_else(|e| panic!("{e}"));
}

/// A named network namespace with the processes started in it. Dropping it (also while a panic
/// unwinds) kills them and every other process still in the namespace, then deletes it, which
/// also removes its end of the veth pair and so the pair.
struct Netns {
    name: String,
    children: Vec<Child>,
}

impl Netns {
    fn new(name: String) -> Netns {
        ip(&["netns", "add", &name]);
        let ns = Netns {
            name,
            children: Vec::new(),
        };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    fn command(&self, argv: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(argv);
        for name in [
            "http_proxy",
            "https_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
        ] {
            cmd.env_remove(name);
        }
        cmd
    }

    /// Runs `argv` in the namespace; Err with its output on failure.
    fn exec(&self, argv: &[&str], stdin: Option<&[u8]>) -> Result<String, String> {
        run_cmd(&mut self.command(argv), stdin)
    }

    fn must(&self, argv: &[&str]) {
        self.exec(argv, None).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts `argv` in the background; it is killed when the namespace is dropped.
    fn spawn(&mut self, argv: &[&str], stdout: Stdio) -> &mut Child {
        let child = self
            .command(argv)
            .stdin(Stdio::piped())
            .stdout(stdout)
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{argv:?} can't start: {e}"));
        self.children.push(child);
        self.children.last_mut().expect("just pushed")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Whatever our children started (squid's own helpers): only processes in this
        // namespace, which exists for this run alone.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Unique per process and per lab, so parallel tests and runs never share a name.
fn unique_id() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------------------------------------
// What the lists mention, and the probe points around it

/// What a fixture mentions, read leniently: only to choose where to probe. Verdicts come from
/// the oracle.
#[derive(Default)]
struct Mentioned {
    cidrs: BTreeSet<(Family, u128, u128)>,
    ports: BTreeSet<(Proto, Ports)>,
    exact: BTreeSet<String>,
    wild: BTreeSet<String>,
}

impl Mentioned {
    fn read(&mut self, path: &Path) {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let doc: Value = serde_json::from_str(&text).expect("the wire fixture is JSON");
        let items = |key: &str| doc[key].as_array().cloned().unwrap_or_default();
        let protos = |item: &Value| {
            let p = item["protocol"].as_str().unwrap_or("").to_ascii_lowercase();
            [Proto::Tcp, Proto::Udp]
                .into_iter()
                .filter(|x| p.contains(x.name()))
                .collect::<Vec<_>>()
        };
        let ports = |item: &Value| {
            item["port"]
                .as_array()
                .expect("a port list")
                .iter()
                .map(|p| match p {
                    Value::Number(n) => {
                        let n = u16::try_from(n.as_u64().expect("a port")).expect("a port");
                        (n, n)
                    }
                    Value::String(s) => parse_port_range(s, '-').expect("a port range"),
                    other => panic!("not a port: {other}"),
                })
                .collect::<Vec<Ports>>()
        };
        for item in items("ip_list") {
            let (family, span) = parse_net(item["ip"].as_str().expect("ip")).expect("a CIDR");
            self.cidrs.insert((family, span.start, span.end));
            for proto in protos(&item) {
                self.ports
                    .extend(ports(&item).into_iter().map(|p| (proto, p)));
            }
        }
        for item in items("domain_list") {
            let name = item["domain"]
                .as_str()
                .expect("domain")
                .to_ascii_lowercase();
            match name.strip_prefix("*.") {
                Some(apex) => self.wild.insert(apex.to_owned()),
                None => self.exact.insert(name),
            };
            if let Some(u) = item["universal_domian"].as_str().filter(|u| !u.is_empty()) {
                self.wild.insert(u.to_ascii_lowercase());
            }
            for proto in protos(&item) {
                self.ports
                    .extend(ports(&item).into_iter().map(|p| (proto, p)));
            }
        }
    }

    /// The first and last address of every CIDR and the addresses just outside it, and the
    /// address the names resolve to.
    fn addresses(&self) -> Vec<IpAddr> {
        let mut out = BTreeSet::new();
        for &(family, start, end) in &self.cidrs {
            let max = match family {
                Family::V4 => u128::from(u32::MAX),
                Family::V6 => u128::MAX,
            };
            let mut points = vec![start, end];
            if start > 0 {
                points.push(start - 1);
            }
            if end < max {
                points.push(end + 1);
            }
            for p in points {
                out.insert(match family {
                    // `p` <= u32::MAX for V4 (see `max`).
                    Family::V4 => IpAddr::V4(Ipv4Addr::from(p as u32)),
                    Family::V6 => IpAddr::V6(Ipv6Addr::from(p)),
                });
            }
        }
        out.insert(NAMES_ADDR.parse().expect("an address"));
        out.insert(PTR_ADDR.parse().expect("an address"));
        out.into_iter().collect()
    }

    /// Every listed port range's ends and the ports just outside, of `protos`, and the unlisted
    /// ports.
    fn ports(&self, protos: &[Proto]) -> Vec<u16> {
        let mut out: BTreeSet<u16> = UNLISTED_PORTS.into_iter().collect();
        for &(proto, (a, b)) in &self.ports {
            if protos.contains(&proto) {
                out.extend([a.saturating_sub(1).max(1), a, b, b.saturating_add(1)]);
            }
        }
        out.into_iter().collect()
    }

    /// Each listed name, each wildcard's apex, a name below it and a look-alike beside it
    /// (`notwork.weixin.qq.com`), a name below an exact name, and a name nothing lists.
    fn names(&self) -> Vec<String> {
        let mut out = BTreeSet::from(["unlisted.wire.invalid".to_owned()]);
        for name in &self.exact {
            out.insert(name.clone());
            out.insert(format!("sub.{name}"));
        }
        for apex in &self.wild {
            out.insert(apex.clone());
            out.insert(format!("zzprobe.{apex}"));
            out.insert(format!("not{apex}"));
        }
        out.into_iter().collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Probes

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pass,
    Drop,
}

impl Verdict {
    fn of(allowed: bool) -> Verdict {
        if allowed {
            Verdict::Pass
        } else {
            Verdict::Drop
        }
    }

    fn word(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Drop => "drop",
        }
    }
}

/// One line for wire.py and the verdict the list calls for.
struct Probe {
    line: String,
    expect: Verdict,
}

fn family_of(addr: IpAddr) -> (Family, u128) {
    match addr {
        IpAddr::V4(a) => (Family::V4, u128::from(u32::from(a))),
        IpAddr::V6(a) => (Family::V6, u128::from(a)),
    }
}

/// Every address on every port, TCP and UDP; expected as `allowed` says.
fn packet_probes(points: &Mentioned, allowed: impl Fn(Proto, IpAddr, u16) -> bool) -> Vec<Probe> {
    let mut out = Vec::new();
    for addr in points.addresses() {
        for port in points.ports(&Proto::BOTH) {
            for proto in Proto::BOTH {
                out.push(Probe {
                    line: format!("{} {addr} {port}", proto.name()),
                    expect: Verdict::of(allowed(proto, addr, port)),
                });
            }
        }
    }
    out
}

/// What the list allows for packets: its addresses only (names are not enforced at L3).
fn packet_oracle(expected: &Expected) -> impl Fn(Proto, IpAddr, u16) -> bool + '_ {
    move |proto, addr, port| {
        let (family, n) = family_of(addr);
        expected.addrs.allows(family, proto, n, port)
    }
}

/// GET and CONNECT through squid to every name and address on every TCP port.
fn proxy_probes(points: &Mentioned, expected: &Expected) -> Vec<Probe> {
    let tcp_names = expected.names(Proto::Tcp);
    let ports = points.ports(&[Proto::Tcp]);
    let mut out = Vec::new();
    for method in ["get", "connect"] {
        for name in points.names() {
            for &port in &ports {
                let allowed = tcp_names
                    .allowed(&name)
                    .iter()
                    .any(|&(a, b)| a <= port && port <= b);
                out.push(Probe {
                    line: format!("{method} {name} {port} {NAMES_ADDR}"),
                    expect: Verdict::of(allowed),
                });
            }
        }
        // NAMES_ADDR's reverse name is a listed name (hosts_file), which a `dstdomain` ACL
        // matches when a request names the address: squid's rule, not the list's.
        let addresses = points.addresses().into_iter();
        for addr in addresses.filter(|a| a.to_string() != NAMES_ADDR) {
            let (family, n) = family_of(addr);
            for &port in &ports {
                out.push(Probe {
                    line: format!("{method} {addr} {port} {addr}"),
                    expect: Verdict::of(expected.addrs.allows(family, Proto::Tcp, n, port)),
                });
            }
        }
    }
    out
}

/// Runs `probes` from `client`; returns a line for each verdict that differs from the list.
fn run_probes(client: &Netns, what: &str, probes: &[Probe], env: &[(&str, &str)]) -> Vec<String> {
    let py = wire_py();
    let input: String = probes.iter().map(|p| format!("{}\n", p.line)).collect();
    let mut cmd = client.command(&["python3", py.to_str().expect("UTF-8 path"), "probe"]);
    cmd.envs(env.iter().copied());
    let out = run_cmd(&mut cmd, Some(input.as_bytes())).unwrap_or_else(|e| panic!("{e}"));
    let verdicts: Vec<&str> = out.lines().collect();
    assert_eq!(
        verdicts.len(),
        probes.len(),
        "{what}: wire.py gave {} verdicts for {} probes:\n{out}",
        verdicts.len(),
        probes.len()
    );
    probes
        .iter()
        .zip(verdicts)
        .filter(|(p, got)| *got != p.expect.word())
        .map(|(p, got)| format!("{what}: {}: listed {}, got {got}", p.line, p.expect.word()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The lab

/// The built outputs of one list.
struct Outputs {
    dir: PathBuf,
    expected: Expected,
}

impl Outputs {
    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.file(name))
            .unwrap_or_else(|e| panic!("cannot read {name}: {e}"))
    }
}

/// `build` of a fixture into `dir`; with `--allow-nonpublic` when the binary knows it (the
/// namespaces are private test hosts, whatever the addresses look like).
fn build(fixture: &Path, dir: &Path) -> Outputs {
    let help = support::stdout(&support::run(&["build", "--help"], None));
    let mut args = vec![
        "build",
        "--input",
        fixture.to_str().expect("UTF-8 path"),
        "--out-dir",
        dir.to_str().expect("UTF-8 path"),
    ];
    if help.contains("--allow-nonpublic") {
        args.push("--allow-nonpublic");
    }
    let out = support::run(&args, None);
    assert!(
        out.status.success(),
        "build {} failed: {}",
        fixture.display(),
        support::stderr(&out)
    );
    Outputs {
        dir: dir.to_owned(),
        expected: Expected::from_fixture(fixture),
    }
}

/// The net namespace with its addresses and listeners, and a scratch dir.
struct Lab {
    id: String,
    net: Netns,
    points: Mentioned,
    clients: usize,
    scratch: tempfile::TempDir,
}

impl Lab {
    /// A lab for probing the lists `fixtures`; returns it with each list built.
    fn new(fixtures: &[&str]) -> (Lab, Vec<Outputs>) {
        let id = unique_id();
        let scratch = tempfile::tempdir().expect("a temporary folder");
        let mut points = Mentioned::default();
        let mut lists = Vec::new();
        for name in fixtures {
            let fixture = wire_fixture(name);
            points.read(&fixture);
            lists.push(build(&fixture, &scratch.path().join(name)));
        }

        let mut net = Netns::new(format!("wire-net-{id}"));
        let batch: String = points
            .addresses()
            .iter()
            .map(|addr| match addr {
                IpAddr::V4(a) => format!("address add {a}/32 dev lo\n"),
                IpAddr::V6(a) => format!("address add {a}/128 dev lo nodad\n"),
            })
            .collect();
        let batch_file = scratch.path().join("net.batch");
        std::fs::write(&batch_file, batch).expect("the batch file is written");
        ip(&[
            "-n",
            &net.name,
            "-batch",
            batch_file.to_str().expect("UTF-8"),
        ]);

        let ports: Vec<String> = points
            .ports(&Proto::BOTH)
            .iter()
            .map(u16::to_string)
            .collect();
        let py = wire_py();
        let mut argv = vec!["python3", py.to_str().expect("UTF-8 path"), "listen"];
        argv.extend(ports.iter().map(String::as_str));
        let listener = net.spawn(&argv, Stdio::piped());
        let mut ready = String::new();
        let stdout = listener.stdout.take().expect("piped stdout");
        // Blocks until the listener has bound every socket or died (then the line is empty).
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut ready)
            .expect("the listener's output");
        assert_eq!(ready.trim(), "ready", "the listeners did not start");

        let lab = Lab {
            id,
            net,
            points,
            clients: 0,
            scratch,
        };
        (lab, lists)
    }

    /// A fresh client namespace, linked to net by a new veth pair, with default routes to it.
    fn client(&mut self) -> Netns {
        self.clients += 1;
        let k = self.clients;
        let client = Netns::new(format!("wire-client-{}-{k}", self.id));
        // Interface names: at most 15 bytes; the namespaces keep them apart from the host's.
        let (c, n) = (format!("wc{k}"), format!("wn{}", k));
        let (c4, n4) = (format!("10.254.{k}.1"), format!("10.254.{k}.2"));
        let (c6, n6) = (format!("fd00:77:{k}::1"), format!("fd00:77:{k}::2"));
        let (cn, nn) = (client.name.as_str(), self.net.name.as_str());
        ip(&[
            "-n", cn, "link", "add", &c, "type", "veth", "peer", "name", &n, "netns", nn,
        ]);
        ip(&["-n", cn, "link", "set", &c, "up"]);
        ip(&["-n", nn, "link", "set", &n, "up"]);
        ip(&["-n", cn, "address", "add", &format!("{c4}/30"), "dev", &c]);
        ip(&["-n", nn, "address", "add", &format!("{n4}/30"), "dev", &n]);
        ip(&[
            "-n",
            cn,
            "address",
            "add",
            &format!("{c6}/64"),
            "dev",
            &c,
            "nodad",
        ]);
        ip(&[
            "-n",
            nn,
            "address",
            "add",
            &format!("{n6}/64"),
            "dev",
            &n,
            "nodad",
        ]);
        ip(&["-n", cn, "route", "add", "default", "via", &n4]);
        ip(&["-n", cn, "-6", "route", "add", "default", "via", &n6]);
        client
    }

    fn scratch(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }
}

// ---------------------------------------------------------------------------------------------
// Modes

/// The hook a file's header tells the user to run for egress from this host: the header line
/// `#   TOOL ... OUTPUT|output ...`, without its trailing comment, as `sh -c` argv (it is a
/// shell line: a check, `||`, the insert). The one place that knows how the hooks are found.
fn hook_command(file_text: &str, tool: &str) -> Vec<String> {
    file_text
        .lines()
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| l.trim_start_matches('#').split(" #").next())
        .map(str::trim)
        .find(|cmd| {
            cmd.split_whitespace().next() == Some(tool)
                && cmd
                    .split_whitespace()
                    .any(|w| w.eq_ignore_ascii_case("output"))
        })
        .map(|cmd| vec!["sh".to_owned(), "-c".to_owned(), cmd.to_owned()])
        .unwrap_or_else(|| panic!("no {tool} ... OUTPUT hook in the header:\n{file_text}"))
}

fn argv(words: &[String]) -> Vec<&str> {
    words.iter().map(String::as_str).collect()
}

/// The result of one mode: how many probes, and the wrong verdicts.
#[derive(Default)]
struct Report {
    probes: usize,
    wrong: Vec<String>,
}

impl Report {
    fn add(&mut self, probes: &[Probe], wrong: Vec<String>) {
        self.probes += probes.len();
        self.wrong.extend(wrong);
    }
}

/// A mode: sets up a fresh client namespace, loads the first list's files, probes, loads each
/// further list on top, probes again.
type Mode = fn(&mut Lab, &Outputs, &[&Outputs]) -> Report;

/// Control: no firewall, so every probe must reach its listener.
fn control(lab: &mut Lab, _: &Outputs, _: &[&Outputs]) -> Report {
    let client = lab.client();
    let probes = packet_probes(&lab.points, |_, _, _| true);
    let wrong = run_probes(&client, "control", &probes, &[]);
    Report {
        probes: probes.len(),
        wrong,
    }
}

/// Loads one list's iptables.rules and ip6tables.rules as the README says.
fn iptables_load(client: &Netns, out: &Outputs) -> Result<(), String> {
    // iptables.rules matches the DNS-fed sets of ipset.rules, which its header says to restore first.
    client.exec(
        &["ipset", "restore", "-exist"],
        Some(out.read("ipset.rules").as_bytes()),
    )?;
    for (tool, file) in [
        ("iptables", "iptables.rules"),
        ("ip6tables", "ip6tables.rules"),
    ] {
        client.exec(
            &[&format!("{tool}-restore"), "--noflush"],
            Some(out.read(file).as_bytes()),
        )?;
    }
    Ok(())
}

/// The user's own policy: OUTPUT policy DROP with loopback and replies accepted.
fn iptables_base(client: &Netns) {
    // IPv6 needs neighbour discovery, which a drop policy in OUTPUT blocks too: the lines the
    // README gives for it, so that the IPv6 probes show they are enough.
    let nd = crate::support::readme_block("ip6tables-nd");
    client.must(&["sh", "-ec", &nd]);
    for tool in ["iptables", "ip6tables"] {
        client.must(&[tool, "-P", "OUTPUT", "DROP"]);
        client.must(&[tool, "-A", "OUTPUT", "-o", "lo", "-j", "ACCEPT"]);
        client.must(&[
            tool,
            "-A",
            "OUTPUT",
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED,RELATED",
            "-j",
            "ACCEPT",
        ]);
    }
}

/// OUTPUT policy DROP with loopback and replies accepted, the files of `first`, the hooks, probes;
/// then each of `then`'s files on top, probes again.
fn iptables_mode(lab: &mut Lab, first: &Outputs, then: &[&Outputs]) -> Report {
    let client = lab.client();
    iptables_base(&client);
    iptables_load(&client, first).unwrap_or_else(|e| panic!("{e}"));
    for (tool, file) in [
        ("iptables", "iptables.rules"),
        ("ip6tables", "ip6tables.rules"),
    ] {
        client.must(&argv(&hook_command(&first.read(file), tool)));
    }
    let mut report = Report::default();
    for (i, out) in std::iter::once(first)
        .chain(then.iter().copied())
        .enumerate()
    {
        if i > 0 {
            iptables_load(&client, out).unwrap_or_else(|e| panic!("{e}"));
        }
        let probes = packet_probes(&lab.points, packet_oracle(&out.expected));
        let what = format!("iptables, list {}", i + 1);
        let wrong = run_probes(&client, &what, &probes, &[]);
        report.add(&probes, wrong);
    }
    report
}

/// The user's own ruleset: a base chain that drops what nothing accepted.
const NFT_BASE: &str = "table inet filter {
    chain output {
        type filter hook output priority filter; policy drop;
        oif \"lo\" accept
        icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept
        ct state established,related accept
    }
}
";

fn nftables_mode(lab: &mut Lab, first: &Outputs, then: &[&Outputs]) -> Report {
    let client = lab.client();
    let base = lab.scratch(&format!("base-{}.nft", lab.clients));
    std::fs::write(&base, NFT_BASE).expect("the base ruleset is written");
    client.must(&["nft", "-f", base.to_str().expect("UTF-8")]);
    let mut report = Report::default();
    for (i, out) in std::iter::once(first)
        .chain(then.iter().copied())
        .enumerate()
    {
        let file = out.file("nftables.nft");
        client.must(&["nft", "-f", file.to_str().expect("UTF-8")]);
        if i == 0 {
            client.must(&argv(&hook_command(&out.read("nftables.nft"), "nft")));
        }
        let probes = packet_probes(&lab.points, packet_oracle(&out.expected));
        let what = format!("nftables, list {}", i + 1);
        let wrong = run_probes(&client, &what, &probes, &[]);
        report.add(&probes, wrong);
    }
    report
}

/// A squid in `client` with `snippet` included before `http_access deny all`; returns once it
/// accepts connections.
fn start_squid(client: &mut Netns, dir: &Path, snippet: &str, hosts: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).expect("the squid folder");
    // Squid drops root for its own user, which must still read and write here.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let path = |name: &str| dir.join(name).to_str().expect("UTF-8").to_owned();
    std::fs::write(path("wecom.conf"), snippet).expect("the snippet is written");
    std::fs::write(path("hosts"), hosts).expect("the hosts file is written");
    let conf = format!(
        "http_port 127.0.0.1:{SQUID_PORT}
visible_hostname wire-test
pid_filename {pid}
cache_log {log}
access_log none
cache deny all
cache_mem 8 MB
hosts_file {hosts}
dns_nameservers 127.0.0.1
shutdown_lifetime 0 seconds
include {snippet}
http_access deny all
",
        pid = path("squid.pid"),
        log = path("cache.log"),
        hosts = path("hosts"),
        snippet = path("wecom.conf"),
    );
    std::fs::write(path("squid.conf"), conf).expect("squid.conf is written");
    let py = wire_py();
    let squid = client.spawn(&["squid", "-N", "-f", &path("squid.conf")], Stdio::null());
    // `ip netns exec` execs squid: this is squid's own pid.
    let pid = squid.id().to_string();
    let waited = client.exec(
        &[
            "python3",
            py.to_str().expect("UTF-8"),
            "wait-port",
            "127.0.0.1",
            &SQUID_PORT.to_string(),
            &pid,
        ],
        None,
    );
    if let Err(e) = waited {
        let log = std::fs::read_to_string(path("cache.log")).unwrap_or_default();
        panic!("squid did not start: {e}\ncache.log:\n{log}");
    }
}

/// Stops the squid that `start_squid` started last, and waits for it to exit.
fn stop_squid(client: &mut Netns) {
    if let Some(mut child) = client.children.pop() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// squid's hosts_file: every probed name on NAMES_ADDR; a reverse name below the first listed
/// wildcard for PTR_ADDR; a name that nothing lists for every other probed address. Without
/// one, a `dstdomain` ACL makes squid look a requested address up in DNS, which would wait for
/// a DNS server that isn't there.
fn squid_hosts(points: &Mentioned) -> String {
    let names = points
        .names()
        .into_iter()
        .map(|n| format!("{NAMES_ADDR} {n}\n"));
    let ptr = points
        .wild
        .iter()
        .take(1)
        .map(|w| format!("{PTR_ADDR} ptr.{w}\n"));
    let addrs = points
        .addresses()
        .into_iter()
        .filter(|a| ![NAMES_ADDR, PTR_ADDR].contains(&a.to_string().as_str()))
        .enumerate()
        .map(|(i, a)| format!("{a} address-{i}.wire.invalid\n"));
    names.chain(ptr).chain(addrs).collect()
}

fn squid_mode(lab: &mut Lab, first: &Outputs, then: &[&Outputs]) -> Report {
    let mut client = lab.client();
    let hosts = squid_hosts(&lab.points);
    let proxy = format!("http://127.0.0.1:{SQUID_PORT}");
    let mut report = Report::default();
    for (i, out) in std::iter::once(first)
        .chain(then.iter().copied())
        .enumerate()
    {
        if i > 0 {
            stop_squid(&mut client);
        }
        let dir = lab.scratch(&format!("squid-{}-{i}", lab.clients));
        start_squid(&mut client, &dir, &out.read("squid.conf"), &hosts);
        let probes = proxy_probes(&lab.points, &out.expected);
        let what = format!("squid, list {}", i + 1);
        let wrong = run_probes(&client, &what, &probes, &[("WIRE_PROXY", &proxy)]);
        report.add(&probes, wrong);
    }
    report
}

/// Which kind of set dnsmasq fills: nftables sets (nftables.nft) or ipsets (ipset.rules with
/// iptables.rules and ip6tables.rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetBackend {
    Nftset,
    Ipset,
}

/// Each probed name with an IPv4 and an IPv6 address of its own in "net", outside every listed
/// CIDR: one address shared by several names would pass as soon as any allowed name resolved
/// to it, and a name's verdict must come from its own lookup.
fn name_hosts(points: &Mentioned) -> Vec<(String, IpAddr, IpAddr)> {
    points
        .names()
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let i = u16::try_from(i + 1).expect("fewer than 65535 probed names");
            let [hi, lo] = i.to_be_bytes();
            let v4 = IpAddr::V4(Ipv4Addr::new(198, 18, hi, lo));
            let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0, 0, 0, 0, i));
            (name, v4, v6)
        })
        .collect()
}

/// Every name's addresses on every port of each protocol. A name's address passes when the list
/// allows it by address, or when the name was `resolved` through the client's dnsmasq and the
/// list allows it, read as dnsmasq's `/name/` reads it (a name and everything below it). With
/// `drops_only`, only the probes the list drops (what must not pass whatever the sets hold).
///
/// Every drop of the list is probed. With `earlier` (the list loaded before, whose names were
/// all resolved), a name this list allows on a port that the earlier list allowed it on too may
/// pass before its new lookup: when its group kept its names, its set (and the address in it)
/// is the same. That probe is the list's pass, not a drop, so it isn't asserted before the
/// lookup; it is counted in the second value returned.
fn name_probes(
    points: &Mentioned,
    hosts: &[(String, IpAddr, IpAddr)],
    expected: &Expected,
    resolved: &BTreeSet<String>,
    drops_only: bool,
    earlier: Option<&Expected>,
) -> (Vec<Probe>, usize) {
    let covers = |ports: &[Ports], port: u16| ports.iter().any(|&(a, b)| a <= port && port <= b);
    let by_addr = packet_oracle(expected);
    let mut out = Vec::new();
    let mut either = 0;
    for proto in Proto::BOTH {
        let zones = expected.names(proto).as_zones();
        let before = earlier.map(|e| e.names(proto).as_zones());
        for (name, v4, v6) in hosts {
            let ports = zones.allowed(name);
            for port in points.ports(&[proto]) {
                let by_name = resolved.contains(name) && covers(&ports, port);
                let carried = !by_name
                    && covers(&ports, port)
                    && before
                        .as_ref()
                        .is_some_and(|b| covers(&b.allowed(name), port));
                for addr in [*v4, *v6] {
                    let allowed = by_name || by_addr(proto, addr, port);
                    if drops_only && allowed {
                        continue;
                    }
                    if carried && !allowed {
                        either += 1;
                        continue;
                    }
                    out.push(Probe {
                        // wire.py reads the first three words; the name is for the reader.
                        line: format!("{} {addr} {port} {name}", proto.name()),
                        expect: Verdict::of(allowed),
                    });
                }
            }
        }
    }
    (out, either)
}

/// An upstream dnsmasq in "net", listening on `listen`, that answers every probed name (listed,
/// below a wildcard, look-alike, unlisted) with its own addresses, which it puts on net's
/// loopback beside the listeners.
fn start_upstream(lab: &mut Lab, hosts: &[(String, IpAddr, IpAddr)], listen: &str) {
    let batch: String = hosts
        .iter()
        .map(|(_, v4, v6)| {
            format!("address replace {v4}/32 dev lo\naddress replace {v6}/128 dev lo nodad\n")
        })
        .collect();
    let batch_file = lab.scratch(&format!("names-{}.batch", lab.clients));
    std::fs::write(&batch_file, batch).expect("the batch file is written");
    ip(&[
        "-n",
        &lab.net.name,
        "-batch",
        batch_file.to_str().expect("UTF-8"),
    ]);
    let records: String = hosts
        .iter()
        .map(|(name, v4, v6)| format!("host-record={name},{v4},{v6}\n"))
        .collect();
    let conf = lab.scratch(&format!("upstream-{}.conf", lab.clients));
    let pid = lab.scratch(&format!("upstream-{}.pid", lab.clients));
    std::fs::write(
        &conf,
        format!(
            "no-resolv\nno-hosts\nlocal-ttl=600\nlisten-address={listen}\nbind-interfaces\n\
             user=root\npid-file={}\n{records}",
            pid.display()
        ),
    )
    .expect("the upstream's configuration is written");
    let arg = format!("--conf-file={}", conf.display());
    lab.net
        .spawn(&["dnsmasq", "--keep-in-foreground", &arg], Stdio::null());
}

/// The client's dnsmasq as dnsmasq.conf's header asks: listening on 127.0.0.1, `server=` the
/// upstream, the header's cache limits in the main configuration, and dnsmasq.conf as a drop-in.
fn start_client_dnsmasq(client: &mut Netns, dir: &Path, drop_in: &Path, upstream: &str) {
    std::fs::create_dir_all(dir).expect("the dnsmasq folder");
    let header = std::fs::read_to_string(drop_in).expect("dnsmasq.conf");
    let limits: Vec<&str> = header
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| l.trim_start_matches('#').trim())
        .filter(|l| l.starts_with("max-cache-ttl=") || l.starts_with("max-ttl="))
        .collect();
    assert_eq!(
        limits.len(),
        2,
        "dnsmasq.conf's header names max-cache-ttl= and max-ttl=:\n{header}"
    );
    let conf = dir.join("dnsmasq-main.conf");
    std::fs::write(
        &conf,
        format!(
            "no-resolv\nno-hosts\nlisten-address=127.0.0.1\nbind-interfaces\nserver={upstream}\n\
             user=root\npid-file={}\n{}\nconf-file={}\n",
            dir.join("dnsmasq.pid").display(),
            limits.join("\n"),
            drop_in.display()
        ),
    )
    .expect("the client's dnsmasq configuration is written");
    let arg = format!("--conf-file={}", conf.display());
    client.spawn(&["dnsmasq", "--keep-in-foreground", &arg], Stdio::null());
}

/// Resolves `names` through the client's dnsmasq (which fills the sets as it forwards the
/// answers); panics unless each gets exactly its own addresses.
fn resolve(client: &Netns, names: &[&(String, IpAddr, IpAddr)]) {
    let py = wire_py();
    let mut argv = vec![
        "python3",
        py.to_str().expect("UTF-8 path"),
        "resolve",
        "127.0.0.1",
    ];
    argv.extend(names.iter().map(|(n, _, _)| n.as_str()));
    let out = client.exec(&argv, None).unwrap_or_else(|e| panic!("{e}"));
    let got: Vec<&str> = out.lines().collect();
    let want: Vec<String> = names
        .iter()
        .map(|(n, v4, v6)| format!("{n} {v4} {v6}"))
        .collect();
    assert_eq!(got, want, "the client's dnsmasq answered otherwise");
}

/// dnsmasq.conf of `out`'s list built with `--dnsmasq-sets ipset`, from its source.json.
fn build_ipset_drop_in(out: &Outputs, dir: &Path) -> PathBuf {
    let help = support::stdout(&support::run(&["build", "--help"], None));
    let input = out.file("source.json");
    let mut args = vec![
        "build",
        "--input",
        input.to_str().expect("UTF-8 path"),
        "--out-dir",
        dir.to_str().expect("UTF-8 path"),
        "--target",
        "dnsmasq",
        "--dnsmasq-sets",
        "ipset",
    ];
    if help.contains("--allow-nonpublic") {
        args.push("--allow-nonpublic");
    }
    let run = support::run(&args, None);
    assert!(
        run.status.success(),
        "build --dnsmasq-sets ipset failed: {}",
        support::stderr(&run)
    );
    dir.join("dnsmasq.conf")
}

/// dnsmasq fills the sets of `backend`: the user's drop policy (which lets the client's dnsmasq
/// reach its upstream), the files loaded as their headers say, the client's dnsmasq with
/// dnsmasq.conf. Each list: half the names resolved, probes, the rest resolved, probes. A further
/// list is loaded on top (files reloaded, dnsmasq restarted with its new dnsmasq.conf); before
/// any lookup, whatever it drops must drop although the sets still hold earlier addresses.
fn dnsmasq_mode(lab: &mut Lab, first: &Outputs, then: &[&Outputs], backend: SetBackend) -> Report {
    let hosts = name_hosts(&lab.points);
    let mut client = lab.client();
    let k = lab.clients;
    let upstream = format!("10.254.{k}.2");
    start_upstream(lab, &hosts, &upstream);
    match backend {
        SetBackend::Nftset => {
            let base = lab.scratch(&format!("base-{k}.nft"));
            std::fs::write(&base, NFT_BASE).expect("the base ruleset is written");
            client.must(&["nft", "-f", base.to_str().expect("UTF-8")]);
            client.must(&[
                "nft", "add", "rule", "inet", "filter", "output", "ip", "daddr", &upstream, "meta",
                "l4proto", "{", "tcp,", "udp", "}", "th", "dport", "53", "accept",
            ]);
        }
        SetBackend::Ipset => {
            iptables_base(&client);
            for proto in ["udp", "tcp"] {
                client.must(&[
                    "iptables", "-A", "OUTPUT", "-d", &upstream, "-p", proto, "--dport", "53",
                    "-j", "ACCEPT",
                ]);
            }
        }
    }
    let lists: Vec<&Outputs> = std::iter::once(first).chain(then.iter().copied()).collect();
    let mut report = Report::default();
    for (i, out) in lists.iter().copied().enumerate() {
        let drop_in = match backend {
            SetBackend::Nftset => {
                let file = out.file("nftables.nft");
                client.must(&["nft", "-f", file.to_str().expect("UTF-8")]);
                if i == 0 {
                    client.must(&argv(&hook_command(&out.read("nftables.nft"), "nft")));
                }
                out.file("dnsmasq.conf")
            }
            SetBackend::Ipset => {
                iptables_load(&client, out).unwrap_or_else(|e| panic!("{e}"));
                if i == 0 {
                    for (tool, file) in [
                        ("iptables", "iptables.rules"),
                        ("ip6tables", "ip6tables.rules"),
                    ] {
                        client.must(&argv(&hook_command(&out.read(file), tool)));
                    }
                }
                build_ipset_drop_in(out, &lab.scratch(&format!("ipset-conf-{k}-{i}")))
            }
        };
        if i > 0 {
            // The previous list's dnsmasq (the client's only process).
            if let Some(mut old) = client.children.pop() {
                let _ = old.kill();
                let _ = old.wait();
            }
        }
        let dir = lab.scratch(&format!("dnsmasq-{k}-{i}"));
        start_client_dnsmasq(&mut client, &dir, &drop_in, &upstream);
        let what = |step: &str| format!("dnsmasq+{backend:?}, list {}, {step}", i + 1);
        let earlier = (i > 0).then(|| &lists[i - 1].expected);
        if i > 0 {
            // As if every name were resolved: what the list drops whatever dnsmasq adds, every
            // drop included, although the sets of the list before still hold its addresses.
            let all = hosts.iter().map(|(n, _, _)| n.clone()).collect();
            let (probes, _) = name_probes(&lab.points, &hosts, &out.expected, &all, true, None);
            let wrong = run_probes(&client, &what("before lookups"), &probes, &[]);
            report.add(&probes, wrong);
        }
        let mut resolved = BTreeSet::new();
        let mut either = 0;
        let (even, odd): (Vec<_>, Vec<_>) = hosts.iter().enumerate().partition(|(j, _)| j % 2 == 0);
        for (step, half) in [("half resolved", even), ("all resolved", odd)] {
            let half: Vec<_> = half.into_iter().map(|(_, h)| h).collect();
            resolve(&client, &half);
            resolved.extend(half.iter().map(|(n, _, _)| n.clone()));
            let (probes, n) = name_probes(
                &lab.points,
                &hosts,
                &out.expected,
                &resolved,
                false,
                earlier,
            );
            let wrong = run_probes(&client, &what(step), &probes, &[]);
            report.add(&probes, wrong);
            either += n;
        }
        if either > 0 {
            note(&format!(
                "wire: {}: {either} probe(s) of names both lists allow on the port, before their \
                 new lookup, not asserted (pass if their group kept its names); every drop probed",
                what("all steps")
            ));
        }
    }
    report
}

fn dnsmasq_nftset_mode(lab: &mut Lab, first: &Outputs, then: &[&Outputs]) -> Report {
    dnsmasq_mode(lab, first, then, SetBackend::Nftset)
}

fn dnsmasq_ipset_mode(lab: &mut Lab, first: &Outputs, then: &[&Outputs]) -> Report {
    dnsmasq_mode(lab, first, then, SetBackend::Ipset)
}

const TOOLS: [&str; 11] = [
    "ip",
    "ipset",
    "dnsmasq",
    "python3",
    "iptables",
    "ip6tables",
    "iptables-restore",
    "ip6tables-restore",
    "nft",
    "squid",
    "curl",
];

/// Every mode, list A then the changed list B on top; every verdict as the lists say.
#[test]
fn packets_pass_or_drop_as_the_list_says() {
    if !require(&TOOLS) {
        return;
    }
    let (mut lab, lists) = Lab::new(&["a.json", "b.json"]);
    let (a, b) = (&lists[0], &lists[1]);
    let modes: [(&str, Mode); 6] = [
        ("control", control),
        ("iptables", iptables_mode),
        ("nftables", nftables_mode),
        ("squid", squid_mode),
        ("dnsmasq+nftset", dnsmasq_nftset_mode),
        ("dnsmasq+ipset", dnsmasq_ipset_mode),
    ];
    let mut failures = Vec::new();
    for (name, mode) in modes {
        let started = std::time::Instant::now();
        let report = mode(&mut lab, a, &[b]);
        // The time is information for whoever reads the log, never a verdict.
        note(&format!(
            "wire: {name} {} probes, {} wrong ({:.1} s)",
            report.probes,
            report.wrong.len(),
            started.elapsed().as_secs_f64()
        ));
        // Without a firewall every listener must answer: otherwise a "drop" below could be a
        // missing listener.
        assert!(
            name != "control" || report.wrong.is_empty(),
            "without a firewall, {} probe(s) did not reach their listener:\n{}",
            report.wrong.len(),
            report.wrong.join("\n")
        );
        failures.extend(report.wrong);
    }
    assert!(
        failures.is_empty(),
        "{} wrong verdict(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// One change to a built file: the statement whose line holds `anchor` (which must be in
/// exactly one line) is removed (`edit` is None), or that line has `from` replaced by `to`.
struct Tamper {
    what: &'static str,
    mode: Mode,
    file: &'static str,
    anchor: &'static str,
    edit: Option<(&'static str, &'static str)>,
    /// A wrong verdict that must be among those reported.
    caught: &'static str,
}

impl Tamper {
    fn apply(&self, text: &str) -> String {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let hits: Vec<usize> = (0..lines.len())
            .filter(|&i| lines[i].contains(self.anchor))
            .collect();
        let [at] = hits[..] else {
            panic!(
                "{}: {:?} is in {} lines of {}, not one: the output changed, update this case",
                self.what,
                self.anchor,
                hits.len(),
                self.file
            )
        };
        match self.edit {
            Some((from, to)) => {
                assert!(
                    lines[at].contains(from),
                    "{}: {from:?} not in {:?}",
                    self.what,
                    lines[at]
                );
                lines[at] = lines[at].replacen(from, to, 1);
            }
            None => {
                // The whole statement: back to the line that starts it (a statement's further
                // lines start with white space or a closing brace).
                let start = (0..=at)
                    .rev()
                    .find(|&i| lines[i].starts_with(|c: char| !c.is_whitespace() && c != '}'))
                    .unwrap_or(at);
                lines.drain(start..=at);
            }
        }
        lines.iter().map(|l| format!("{l}\n")).collect()
    }
}

const TAMPERS: [Tamper; 13] = [
    Tamper {
        what: "iptables: a rule dropped",
        mode: iptables_mode,
        file: "iptables.rules",
        anchor: "-d 109.244.172.8/30 ",
        edit: None,
        caught: "tcp 109.244.172.8 8080: listed pass, got drop",
    },
    Tamper {
        what: "iptables: a port widened",
        mode: iptables_mode,
        file: "iptables.rules",
        anchor: "-d 109.244.172.8/30 ",
        edit: Some(("--dport 8080 ", "--dport 8080:8081 ")),
        caught: "tcp 109.244.172.11 8081: listed drop, got pass",
    },
    Tamper {
        what: "ip6tables: an address added",
        mode: iptables_mode,
        file: "ip6tables.rules",
        anchor: "-d 2402:4e00:8010::/126 ",
        edit: Some(("/126 ", "/125 ")),
        caught: "tcp 2402:4e00:8010::4 8080: listed drop, got pass",
    },
    Tamper {
        what: "nftables: a rule dropped",
        mode: nftables_mode,
        file: "nftables.nft",
        anchor: "udp dport 5000 accept",
        edit: None,
        caught: "udp 115.238.203.109 5000: listed pass, got drop",
    },
    Tamper {
        what: "nftables: a port widened",
        mode: nftables_mode,
        file: "nftables.nft",
        anchor: "udp dport { 3478, 8000-8010 }",
        edit: Some(("8000-8010", "8000-8011")),
        caught: "udp 183.3.235.64 8011: listed drop, got pass",
    },
    Tamper {
        what: "nftables: an address added",
        mode: nftables_mode,
        file: "nftables.nft",
        anchor: "\t101.91.36.0/28 ",
        edit: Some(("\t", "\t101.91.36.16,\n\t")),
        caught: "tcp 101.91.36.16 443: listed drop, got pass",
    },
    Tamper {
        what: "squid: a rule dropped",
        mode: squid_mode,
        file: "squid.conf",
        anchor: "http_access allow wecom_dns_tcp_443_ports ",
        edit: None,
        caught: "connect dldir1.qq.com 443 203.205.254.1: listed pass, got drop",
    },
    Tamper {
        what: "squid: a port widened",
        mode: squid_mode,
        file: "squid.conf",
        anchor: "_dns_tcp_8080_ports port 8080",
        edit: Some(("port 8080", "port 8080-8081")),
        caught: "get zzprobe.wecom.qpic.cn 8081 203.205.254.1: listed drop, got pass",
    },
    Tamper {
        what: "squid: a name added",
        mode: squid_mode,
        file: "squid.conf",
        anchor: "dstdomain -n .work.weixin.qq.com",
        edit: Some((
            ".work.weixin.qq.com",
            ".work.weixin.qq.com notwork.weixin.qq.com",
        )),
        caught: "connect notwork.weixin.qq.com 443 203.205.254.1: listed drop, got pass",
    },
    Tamper {
        what: "squid: dstdomain without -n (reverse lookups)",
        mode: squid_mode,
        file: "squid.conf",
        anchor: "dstdomain -n .wecom.qpic.cn",
        edit: Some(("dstdomain -n", "dstdomain")),
        caught: "connect 203.205.254.2 8080 203.205.254.2: listed drop, got pass",
    },
    Tamper {
        what: "dnsmasq (nftset): a name's line dropped",
        mode: dnsmasq_nftset_mode,
        file: "dnsmasq.conf",
        anchor: "nftset=/dldir1.qq.com/",
        edit: None,
        caught: "tcp 198.18.0.1 443 dldir1.qq.com: listed pass, got drop",
    },
    Tamper {
        what: "dnsmasq (nftset): a look-alike name added",
        mode: dnsmasq_nftset_mode,
        file: "dnsmasq.conf",
        anchor: "nftset=/wecom.qpic.cn/",
        edit: Some(("/wecom.qpic.cn/", "/wecom.qpic.cn/notwork.weixin.qq.com/")),
        caught: "tcp 198.18.0.4 8080 notwork.weixin.qq.com: listed drop, got pass",
    },
    Tamper {
        what: "iptables (ipset): a name group's port widened",
        mode: dnsmasq_ipset_mode,
        file: "iptables.rules",
        anchor: "--match-set w4_tcp_443_",
        edit: Some(("--dport 443 ", "--dport 443:444 ")),
        caught: "tcp 198.18.0.1 444 dldir1.qq.com: listed drop, got pass",
    },
];

/// The probes can fail: each tampering of list A's outputs (a rule dropped, a port widened,
/// an address or name added) yields the wrong verdict it must.
#[test]
fn tampered_outputs_are_caught() {
    if !require(&TOOLS) {
        return;
    }
    let (mut lab, lists) = Lab::new(&["a.json"]);
    let mut missed = Vec::new();
    for (i, t) in TAMPERS.iter().enumerate() {
        let dir = lab.scratch(&format!("tampered-{i}"));
        std::fs::create_dir_all(&dir).expect("a folder for the tampered files");
        for entry in std::fs::read_dir(&lists[0].dir).expect("the built files") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                // lists/: no firewall here loads it.
                continue;
            }
            let name = path.file_name().expect("a file name").to_owned();
            std::fs::copy(&path, dir.join(name)).expect("a copy");
        }
        let text = lists[0].read(t.file);
        std::fs::write(dir.join(t.file), t.apply(&text)).expect("the tampered file");
        let tampered = Outputs {
            dir,
            expected: Expected::from_fixture(&wire_fixture("a.json")),
        };
        let report = (t.mode)(&mut lab, &tampered, &[]);
        note(&format!(
            "wire: tampered ({}): {} probes, {} wrong",
            t.what,
            report.probes,
            report.wrong.len()
        ));
        if !report.wrong.iter().any(|w| w.ends_with(t.caught)) {
            missed.push(format!(
                "{}: no wrong verdict ends in {:?}; wrong verdicts:\n{}",
                t.what,
                t.caught,
                report.wrong.join("\n")
            ));
        }
    }
    assert!(missed.is_empty(), "{}", missed.join("\n\n"));
}

// ---------------------------------------------------------------------------------------------
// Ingress: the callback list

/// The callback URL's ports in the ingress mode: one single port and one beside a probed
/// neighbour, so a rule one port too wide shows.
const CALLBACK_PORTS: [u16; 2] = [443, 8443];

/// One built callback list: its folder, and what it admits, read from the fixture by the
/// oracle: every listed source on TCP to each callback port.
struct Ingress {
    dir: PathBuf,
    allowed: crate::oracle::AddrRelation,
}

impl Ingress {
    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name))
            .unwrap_or_else(|e| panic!("cannot read {name}: {e}"))
    }
}

/// Builds a callback fixture as the README says, and notes its sources in `points`.
fn build_ingress(fixture: &Path, dir: &Path, points: &mut Mentioned) -> Ingress {
    let ports: Vec<String> = CALLBACK_PORTS.iter().map(u16::to_string).collect();
    let joined = ports.join(",");
    let out = support::run(
        &[
            "build",
            "--list",
            "callback",
            "--callback-port",
            &joined,
            "--input",
            fixture.to_str().expect("UTF-8 path"),
            "--out-dir",
            dir.to_str().expect("UTF-8 path"),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "build failed: {}",
        support::stderr(&out)
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(fixture).expect("the fixture"))
        .expect("JSON");
    let mut allowed = crate::oracle::AddrBuilder::default();
    for v in doc["ip_list"].as_array().expect("an ip_list") {
        let (family, span) = parse_net(v.as_str().expect("a string")).expect("a CIDR");
        points.cidrs.insert((family, span.start, span.end));
        for p in CALLBACK_PORTS {
            points.ports.insert((Proto::Tcp, (p, p)));
            allowed.add(family, Proto::Tcp, span, (p, p));
        }
    }
    Ingress {
        dir: dir.to_owned(),
        allowed: allowed.build(),
    }
}

/// The hook a file's header gives for a callback server on this host (`INPUT`, `input`), as
/// `sh -c` argv (a shell line: a check, `||`, the insert).
fn input_hook(file_text: &str, tool: &str) -> Vec<String> {
    file_text
        .lines()
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| l.trim_start_matches('#').split(" #").next())
        .map(str::trim)
        .find(|cmd| {
            cmd.split_whitespace().next() == Some(tool)
                && cmd
                    .split_whitespace()
                    .any(|w| w.eq_ignore_ascii_case("input"))
        })
        .map(|cmd| vec!["sh".to_owned(), "-c".to_owned(), cmd.to_owned()])
        .unwrap_or_else(|| panic!("no {tool} ... INPUT hook in the header:\n{file_text}"))
}

/// How the callback server's input chain is set up and the list loaded into it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum IngressTool {
    /// No firewall: every probe must reach its listener.
    Control,
    Iptables,
    Nftables,
}

/// The user's own input policy: drop, with loopback, neighbour discovery and replies accepted;
/// the allowlist's files and the hook from their headers; then, last, a TCP reset for the rest,
/// so that a refused connection is an answer, never a timeout.
fn ingress_setup(server: &Netns, scratch: &Path, tool: IngressTool, first: &Ingress) {
    match tool {
        IngressTool::Control => {}
        IngressTool::Iptables => {
            for (cmd, icmp) in [("iptables", None), ("ip6tables", Some("ipv6-icmp"))] {
                server.must(&[cmd, "-P", "INPUT", "DROP"]);
                server.must(&[cmd, "-A", "INPUT", "-i", "lo", "-j", "ACCEPT"]);
                if let Some(icmp) = icmp {
                    for kind in ["neighbour-solicitation", "neighbour-advertisement"] {
                        server.must(&[
                            cmd,
                            "-A",
                            "INPUT",
                            "-p",
                            icmp,
                            "--icmpv6-type",
                            kind,
                            "-j",
                            "ACCEPT",
                        ]);
                    }
                }
                server.must(&[
                    cmd,
                    "-A",
                    "INPUT",
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "ESTABLISHED,RELATED",
                    "-j",
                    "ACCEPT",
                ]);
            }
            ingress_load(server, tool, first).unwrap_or_else(|e| panic!("{e}"));
            for (cmd, file) in [
                ("iptables", "iptables.rules"),
                ("ip6tables", "ip6tables.rules"),
            ] {
                server.must(&argv(&input_hook(&first.read(file), cmd)));
                server.must(&[
                    cmd,
                    "-A",
                    "INPUT",
                    "-p",
                    "tcp",
                    "-j",
                    "REJECT",
                    "--reject-with",
                    "tcp-reset",
                ]);
            }
        }
        IngressTool::Nftables => {
            let base = scratch.join("ingress-base.nft");
            std::fs::write(
                &base,
                "table inet filter {
    chain input {
        type filter hook input priority filter; policy drop;
        iif \"lo\" accept
        icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept
        ct state established,related accept
    }
}
",
            )
            .expect("the base ruleset is written");
            server.must(&["nft", "-f", base.to_str().expect("UTF-8")]);
            ingress_load(server, tool, first).unwrap_or_else(|e| panic!("{e}"));
            server.must(&argv(&input_hook(&first.read("nftables.nft"), "nft")));
            server.must(&[
                "nft", "add", "rule", "inet", "filter", "input", "meta", "l4proto", "tcp",
                "reject", "with", "tcp", "reset",
            ]);
        }
    }
}

/// Loads one callback list's files as their headers say (on top of what is there).
fn ingress_load(server: &Netns, tool: IngressTool, list: &Ingress) -> Result<(), String> {
    match tool {
        IngressTool::Control => Ok(()),
        IngressTool::Iptables => {
            for (cmd, file) in [
                ("iptables", "iptables.rules"),
                ("ip6tables", "ip6tables.rules"),
            ] {
                server.exec(
                    &[&format!("{cmd}-restore"), "--noflush"],
                    Some(list.read(file).as_bytes()),
                )?;
            }
            Ok(())
        }
        IngressTool::Nftables => server
            .exec(
                &["nft", "-f", "-"],
                Some(list.read("nftables.nft").as_bytes()),
            )
            .map(|_| ()),
    }
}

/// Runs one ingress mode: a fresh server namespace with listeners on every probed port, the
/// firewall set up with the first list, probes from every source in net to every port; then
/// each further list loaded on top and probed again.
fn ingress_mode(lab: &mut Lab, tool: IngressTool, lists: &[&Ingress]) -> Report {
    let k = lab.clients + 1;
    let mut server = lab.client();
    let (c4, c6) = (format!("10.254.{k}.1"), format!("fd00:77:{k}::1"));
    let ports: Vec<String> = lab
        .points
        .ports(&[Proto::Tcp])
        .iter()
        .map(u16::to_string)
        .collect();
    let py = wire_py();
    let mut listen = vec!["python3", py.to_str().expect("UTF-8 path"), "listen"];
    listen.extend(ports.iter().map(String::as_str));
    let listener = server.spawn(&listen, Stdio::piped());
    let mut ready = String::new();
    let stdout = listener.stdout.take().expect("piped stdout");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut ready)
        .expect("the listener's output");
    assert_eq!(ready.trim(), "ready", "the listeners did not start");
    ingress_setup(&server, lab.scratch.path(), tool, lists[0]);
    let mut report = Report::default();
    for (i, list) in lists.iter().enumerate() {
        if i > 0 {
            ingress_load(&server, tool, list).unwrap_or_else(|e| panic!("{e}"));
        }
        let mut probes = Vec::new();
        for src in lab.points.addresses() {
            let (family, n) = family_of(src);
            let dst = if family == Family::V4 { &c4 } else { &c6 };
            for port in lab.points.ports(&[Proto::Tcp]) {
                let allowed = tool == IngressTool::Control
                    || list.allowed.allows(family, Proto::Tcp, n, port);
                probes.push(Probe {
                    line: format!("from {src} tcp {dst} {port}"),
                    expect: Verdict::of(allowed),
                });
            }
        }
        let what = format!("callback list {}", i + 1);
        let wrong = run_probes(&lab.net, &what, &probes, &[]);
        report.add(&probes, wrong);
    }
    drop(server);
    report
}

/// A lab whose "net" namespace holds the callback fixtures' sources (each CIDR's ends and the
/// addresses just outside, and two unlisted addresses) on its loopback; no listener there: the
/// listeners run in each mode's server namespace.
fn ingress_lab(fixtures: &[&str]) -> (Lab, Vec<Ingress>) {
    let id = unique_id();
    let scratch = tempfile::tempdir().expect("a temporary folder");
    let mut points = Mentioned::default();
    let lists: Vec<Ingress> = fixtures
        .iter()
        .map(|name| build_ingress(&wire_fixture(name), &scratch.path().join(name), &mut points))
        .collect();
    let net = Netns::new(format!("wire-net-{id}"));
    let batch: String = points
        .addresses()
        .iter()
        .map(|addr| match addr {
            IpAddr::V4(a) => format!("address add {a}/32 dev lo\n"),
            IpAddr::V6(a) => format!("address add {a}/128 dev lo nodad\n"),
        })
        .collect();
    let batch_file = scratch.path().join("net.batch");
    std::fs::write(&batch_file, batch).expect("the batch file is written");
    ip(&[
        "-n",
        &net.name,
        "-batch",
        batch_file.to_str().expect("UTF-8"),
    ]);
    let lab = Lab {
        id,
        net,
        points,
        clients: 0,
        scratch,
    };
    (lab, lists)
}

/// Ingress: connections from each listed source (and the addresses just outside each listed
/// network, and unlisted ones) to a callback server, on the callback ports, the ports beside
/// them and unlisted ones. Only listed sources on the callback ports pass, with iptables and
/// with nftables, for list A and for the changed list B loaded on top; a control pass without
/// firewall proves every listener answers. A tampered file (a port widened, a source added) is
/// caught.
#[test]
fn callback_sources_reach_only_the_callback_port() {
    if !require(&[
        "ip",
        "python3",
        "iptables",
        "ip6tables",
        "iptables-restore",
        "ip6tables-restore",
        "nft",
    ]) {
        return;
    }
    let (mut lab, lists) = ingress_lab(&["callback_a.json", "callback_b.json"]);
    let (a, b) = (&lists[0], &lists[1]);
    let mut failures = Vec::new();
    for (name, tool) in [
        ("control", IngressTool::Control),
        ("callback-iptables", IngressTool::Iptables),
        ("callback-nftables", IngressTool::Nftables),
    ] {
        let report = ingress_mode(&mut lab, tool, &[a, b]);
        note(&format!(
            "wire: {name} {} probes, {} wrong",
            report.probes,
            report.wrong.len()
        ));
        assert!(
            tool != IngressTool::Control || report.wrong.is_empty(),
            "without a firewall, {} probe(s) did not reach their listener:\n{}",
            report.wrong.len(),
            report.wrong.join("\n")
        );
        failures.extend(report.wrong);
    }
    assert!(
        failures.is_empty(),
        "{} wrong verdict(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Tampering: the same probes must catch a widened port and an added source.
    let tampered = lab.scratch.path().join("tampered");
    std::fs::create_dir_all(&tampered).expect("a folder");
    for (file, from, to) in [
        (
            "iptables.rules",
            "--dports 443,8443",
            "--dports 443,8442:8443",
        ),
        (
            "nftables.nft",
            "58.251.80.106",
            "58.251.80.106,\n\t58.251.80.107",
        ),
    ] {
        for name in ["iptables.rules", "ip6tables.rules", "nftables.nft"] {
            let text = a.read(name);
            let text = if name == file {
                assert!(text.contains(from), "{from} is not in {name}:\n{text}");
                text.replace(from, to)
            } else {
                text
            };
            std::fs::write(tampered.join(name), text).expect("the tampered file");
        }
        let bad = Ingress {
            dir: tampered.clone(),
            allowed: a.allowed.clone(),
        };
        let tool = if file == "nftables.nft" {
            IngressTool::Nftables
        } else {
            IngressTool::Iptables
        };
        let report = ingress_mode(&mut lab, tool, &[&bad]);
        assert!(
            !report.wrong.is_empty(),
            "{file}: {from} -> {to} was not caught by {} probes",
            report.probes
        );
    }
}
