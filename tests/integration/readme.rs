//! The README's deployment instructions, run as written. Each block marked
//! `<!-- tested: NAME -->` is read from README.md and run by `sh -e` as real root in new mount
//! and network namespaces (`unshare -mn`) whose /etc is a private overlay (nothing reaches the
//! host's /etc or its firewall), inside a folder built from a list; then what the programs hold
//! is checked. `systemctl` and `apt-get`, which only a booted system answers, are stand-ins that
//! do here what the real ones would: run the unit's own ExecStart, check that the packages
//! named are installed. A marked block that no test runs, or an unmarked shell block under
//! "Targets and how to apply them", fails. The hook blocks (`<!-- hook:iptables -->`,
//! `<!-- hook:nft -->`) are run by `real_tools` (twice, above a drop, reached by a connection).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::real_tools::{require_root, require_tool};
use crate::support::{fixture, readme_block, readme_block_after, run, stderr};

/// Every marked block of README.md. `ip6tables-nd` runs in the wire test's base policy.
const TESTED: [&str; 10] = [
    "install",
    "ipset-groups",
    "ip6tables-nd",
    "netfilter-persistent",
    "nftables-conf",
    "nftables-boot",
    "dnsmasq",
    "dnsmasq-ipset",
    "pfsense-import",
    "squid-debian",
];

#[test]
fn every_deployment_block_is_marked_and_every_marker_is_tested() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let markers: BTreeSet<&str> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("<!-- tested: "))
        .filter_map(|l| l.strip_suffix(" -->"))
        .collect();
    assert_eq!(markers, TESTED.into_iter().collect::<BTreeSet<_>>());
    for name in TESTED {
        assert!(!readme_block(name).trim().is_empty(), "{name} is empty");
    }
    let start = readme
        .find("\n## Targets and how to apply them\n")
        .expect("the targets section");
    let end = readme[start..]
        .find("\n## How it is tested\n")
        .map(|e| start + e)
        .expect("the section after it");
    let lines: Vec<&str> = readme[start..end].lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if *line == "```sh" {
            assert!(
                i > 0
                    && (lines[i - 1].starts_with("<!-- tested: ")
                        || ["<!-- hook:iptables -->", "<!-- hook:nft -->"].contains(&lines[i - 1])),
                "a shell block under \"Targets and how to apply them\" is not marked as tested: {:?}",
                lines.get(i + 1)
            );
        }
    }
}

/// A build folder, stand-ins for systemctl and apt-get, and a mount point for the overlay.
struct Lab {
    dir: tempfile::TempDir,
}

impl Lab {
    /// Builds `input` with `args` into `build/` and writes the stand-ins; `systemctl` is a
    /// shell `case` on its arguments (each test says what its unit does), logged to
    /// `$SCRATCH/systemctl.log`.
    fn new(input: &Path, args: &[&str], systemctl: &str) -> Lab {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("a temporary folder");
        // Squid drops root for its own user, which must still read the files here.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let build = dir.path().join("build");
        let mut all = vec![
            "build",
            "--quiet",
            "--input",
            input.to_str().expect("UTF-8"),
            "--out-dir",
            build.to_str().expect("UTF-8"),
        ];
        all.extend_from_slice(args);
        let out = run(&all, None);
        assert!(out.status.success(), "build: {}", stderr(&out));
        let shims = dir.path().join("shims");
        std::fs::create_dir_all(&shims).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("ov")).expect("mkdir");
        for (name, body) in [
            (
                "systemctl",
                format!(
                    "#!/bin/sh\nset -e\necho \"systemctl $*\" >> \"$SCRATCH/systemctl.log\"\n\
                     unit=/lib/systemd/system/$2.service\ncase \"$*\" in\n{systemctl}\n\
                     *) echo \"systemctl $*: not expected here\" >&2; exit 1 ;;\nesac\n"
                ),
            ),
            (
                "apt-get",
                "#!/bin/sh\nset -e\n[ \"$1\" = install ] || { echo \"apt-get $*\" >&2; exit 1; }\n\
                 shift\ndpkg -s \"$@\" > /dev/null\n"
                    .to_owned(),
            ),
        ] {
            let path = shims.join(name);
            std::fs::write(&path, body).expect("a stand-in is written");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        Lab { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).expect("a file of the lab")
    }

    /// Runs `script` with `sh -e` in the build folder, as root in new mount and network
    /// namespaces, /etc overlaid, loopback up; its standard output, or why it failed.
    fn run(&self, script: &str) -> String {
        let prelude = r#"
            mount -t tmpfs tmpfs "$SCRATCH/ov"
            mkdir "$SCRATCH/ov/u" "$SCRATCH/ov/w"
            mount -t overlay overlay \
                -o "lowerdir=/etc,upperdir=$SCRATCH/ov/u,workdir=$SCRATCH/ov/w" /etc
            ip link set lo up
            cd "$SCRATCH/build"
        "#;
        let path = format!(
            "{}:{}",
            self.path("shims").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new("unshare")
            .args(["-mn", "sh", "-ec", &format!("{prelude}\n{script}")])
            .env("SCRATCH", self.dir.path())
            .env("PATH", path)
            .output()
            .expect("unshare starts");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "the script failed ({}):\n{script}\n--- stdout:\n{stdout}\n--- stderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

/// The lines of `out` after `--- NAME` up to the next `--- ` line.
fn section<'a>(out: &'a str, name: &str) -> Vec<&'a str> {
    out.lines()
        .skip_while(|l| *l != format!("--- {name}"))
        .skip(1)
        .take_while(|l| !l.starts_with("--- "))
        .collect()
}

fn tools(names: &[&str]) -> bool {
    names.iter().all(|t| require_tool(t)) && require_root("it mounts over /etc in a namespace")
}

/// Where `wanted` stands in `lines` (trimmed, matched by prefix), each time it does.
fn positions(lines: &[&str], wanted: &str) -> Vec<usize> {
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.trim().starts_with(wanted))
        .map(|(i, _)| i)
        .collect()
}

/// Loaded and hooked as the README says, saved by netfilter-persistent, then restored by it
/// in a fresh network namespace (a reboot): the same rules and sets, sets first.
#[test]
fn netfilter_persistent_restores_what_was_saved() {
    if !tools(&[
        "unshare",
        "iptables",
        "ip6tables",
        "ipset",
        "netfilter-persistent",
        "dpkg",
    ]) {
        return;
    }
    let lab = Lab::new(&fixture("seed.json"), &[], "");
    let (load, persist) = (
        readme_block_after("<!-- hook:iptables -->"),
        readme_block("netfilter-persistent"),
    );
    // What a ruleset holds: the saved rules without comments and counters, and the sets.
    std::fs::write(
        lab.path("show.sh"),
        "iptables-save | grep -v '^#' | sed 's/\\[[0-9]*:[0-9]*\\]//'\n\
         ip6tables-save | grep -v '^#' | sed 's/\\[[0-9]*:[0-9]*\\]//'\n\
         ipset list -n | sort\n",
    )
    .expect("show.sh");
    let out = lab.run(&format!(
        "for t in iptables ip6tables; do $t -A OUTPUT -o lo -j ACCEPT; $t -A OUTPUT -j REJECT; done\n\
         {load}\n{persist}\n\
         echo '--- live'; sh -e \"$SCRATCH/show.sh\"\n\
         ls /etc/iptables > \"$SCRATCH/saved\"\n\
         unshare -n sh -ec 'netfilter-persistent start >&2; echo \"--- boot\"; sh -e \"$SCRATCH/show.sh\"'\n"
    ));
    let (live, boot) = (section(&out, "live"), section(&out, "boot"));
    assert!(
        live.iter()
            .any(|l| l.starts_with("-A OUTPUT -j WECOM_ALLOW"))
            && live.iter().any(|l| l.starts_with("w4_tcp_80_443")),
        "{out}"
    );
    assert_eq!(live, boot, "a reboot restored something else");
    assert_eq!(lab.read("saved"), "ipsets\nrules.v4\nrules.v6\n");
}

/// Debian's way: /etc/nftables.conf as the README shows it (flush ruleset, the include, the
/// base chain), the files put in place and the service enabled and started as it says. The
/// update step and a reload keep one jump; a fresh namespace (a reboot) loads the same. With
/// the include after the table that jumps to it, the file fails as the README says.
#[test]
fn debian_nftables_conf_loads_with_the_include_first() {
    if !tools(&["unshare", "nft"]) {
        return;
    }
    let lab = Lab::new(
        &fixture("seed.json"),
        &[],
        "\"enable nftables\") test -f \"$unit\" ;;\n\
         \"restart nftables\") eval \"$(sed -n 's/^ExecStart=//p' \"$unit\")\" ;;\n\
         \"reload nftables\") eval \"$(sed -n 's/^ExecReload=//p' \"$unit\")\" ;;",
    );
    let (conf, boot) = (readme_block("nftables-conf"), readme_block("nftables-boot"));
    let out = lab.run(&format!(
        "cat > /etc/nftables.conf <<'EOF'\n{conf}EOF\n{boot}\n\
         echo '--- first'; nft list ruleset\n\
         nft -f /etc/nftables.d/wecom.nft\n\
         echo '--- update'; nft list chain inet filter output\n\
         systemctl reload nftables\n\
         echo '--- again'; nft list ruleset\n\
         unshare -n sh -ec \"nft -f /etc/nftables.conf; echo '--- boot'; nft list ruleset\"\n\
         grep -v '^include' /etc/nftables.conf > \"$SCRATCH/late.conf\"\n\
         grep '^include' /etc/nftables.conf >> \"$SCRATCH/late.conf\"\n\
         echo '--- late'; nft -c -f \"$SCRATCH/late.conf\" 2>&1 || echo refused\n"
    ));
    let first = section(&out, "first");
    assert_eq!(positions(&first, "jump wecom_allow").len(), 1, "{out}");
    assert!(first.iter().any(|l| l.contains("115.238.203.110")), "{out}");
    assert_eq!(
        positions(&section(&out, "update"), "jump wecom_allow").len(),
        1,
        "{out}"
    );
    assert_eq!(
        first,
        section(&out, "again"),
        "a reload changed the ruleset"
    );
    assert_eq!(
        first,
        section(&out, "boot"),
        "a reboot loads something else"
    );
    let late = section(&out, "late").join("\n");
    assert!(
        late.contains("No such file or directory") && late.ends_with("refused"),
        "{late}"
    );
    assert_eq!(
        lab.read("systemctl.log"),
        "systemctl enable nftables\nsystemctl restart nftables\nsystemctl reload nftables\n"
    );
}

/// The single-host dnsmasq block: the sets and the jump (once, above the drop), the drop-in
/// where Debian's dnsmasq reads it, and dnsmasq accepting the folder as it would on restart.
#[test]
fn dnsmasq_block_loads_the_sets_and_the_drop_in() {
    if !tools(&["unshare", "nft", "dnsmasq"]) {
        return;
    }
    let lab = Lab::new(
        &fixture("seed.json"),
        &[],
        // What Debian's dnsmasq checks before it restarts: the configuration, with its folder.
        "\"restart dnsmasq\") dnsmasq --test --conf-file=/dev/null --conf-dir=/etc/dnsmasq.d,.dpkg-dist,.dpkg-old,.dpkg-new ;;",
    );
    let block = readme_block("dnsmasq");
    let out = lab.run(&format!(
        "mkdir -p /etc/dnsmasq.d   # the dnsmasq package's folder\n\
         nft -f - <<'EOF'\ntable inet filter {{\n  chain output {{\n    type filter hook output \
         priority filter; policy accept;\n    drop\n  }}\n}}\nEOF\n\
         {block}\n{block}\n\
         echo '--- output'; nft list chain inet filter output\n\
         echo '--- sets'; nft list sets | grep -o 'set wecom_allow_[0-9a-z_]*' | sort -u\n\
         cmp dnsmasq.conf /etc/dnsmasq.d/wecom.conf && echo '--- same'\n"
    ));
    let lines = section(&out, "output");
    let (jumps, drops) = (
        positions(&lines, "jump wecom_allow"),
        positions(&lines, "drop"),
    );
    assert!(
        jumps.len() == 1 && drops.len() == 1 && jumps[0] < drops[0],
        "{lines:#?}"
    );
    // The sets nftables.nft declares, as its `add set` lines name them.
    let declared: Vec<String> = lab
        .read("build/nftables.nft")
        .lines()
        .filter_map(|l| l.strip_prefix("add set inet filter "))
        .filter_map(|l| l.split_whitespace().next())
        .map(|name| format!("set {name}"))
        .collect();
    assert_eq!(
        declared.len(),
        2,
        "the seed has one name group, two families"
    );
    assert_eq!(section(&out, "sets"), declared);
    assert!(out.contains("--- same"), "{out}");
    assert_eq!(
        lab.read("systemctl.log"),
        "systemctl restart dnsmasq\nsystemctl restart dnsmasq\n"
    );
}

/// The gateway's ipset block: the sets, then the chains that match them.
#[test]
fn dnsmasq_ipset_block_loads_sets_then_rules() {
    if !tools(&["unshare", "iptables", "ip6tables", "ipset"]) {
        return;
    }
    let lab = Lab::new(&fixture("seed.json"), &["--dnsmasq-sets", "ipset"], "");
    let block = readme_block("dnsmasq-ipset");
    let out = lab.run(&format!(
        "{block}\n{block}\necho '--- sets'; ipset list -n | sort\n\
         echo '--- rules'; iptables -S WECOM_ALLOW; ip6tables -S WECOM_ALLOW\n"
    ));
    let created = created_sets(&lab);
    assert_eq!(
        created.len(),
        2,
        "the seed has one name group, two families"
    );
    assert_eq!(section(&out, "sets"), created);
    assert_sets_matched(&section(&out, "rules"), created.iter());
}

/// The sets ipset.rules creates, as its `create` lines name them, but the temporary sets a
/// reload fills and swaps; sorted, once each.
fn created_sets(lab: &Lab) -> Vec<String> {
    let mut created: Vec<String> = lab
        .read("build/ipset.rules")
        .lines()
        .filter_map(|l| l.strip_prefix("create "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| !name.contains("_t_"))
        .map(str::to_owned)
        .collect();
    created.sort();
    created.dedup();
    created
}

/// Every one of `sets` is matched (as destination) by some rule of `rules`.
fn assert_sets_matched<'a>(rules: &[&str], sets: impl Iterator<Item = &'a String>) {
    for set in sets {
        assert!(
            rules
                .iter()
                .any(|l| l.contains(&format!("--match-set {set} dst"))),
            "{set}: {rules:#?}"
        );
    }
}

/// The `--ipset` block, run twice (a reload swaps the sets): the sets of ipset.rules, then
/// chains whose rules match them and no address of their own.
#[test]
fn ipset_groups_block_loads_sets_then_rules() {
    if !tools(&["unshare", "iptables", "ip6tables", "ipset"]) {
        return;
    }
    let lab = Lab::new(&fixture("seed.json"), &["--ipset"], "");
    let block = readme_block("ipset-groups");
    let out = lab.run(&format!(
        "{block}\n{block}\necho '--- sets'; ipset list -n | sort\n\
         echo '--- rules'; iptables -S WECOM_ALLOW; ip6tables -S WECOM_ALLOW\n"
    ));
    let created = created_sets(&lab);
    assert!(!created.is_empty(), "ipset.rules creates no set");
    assert_eq!(section(&out, "sets"), created, "{out}");
    let rules = section(&out, "rules");
    assert!(
        rules.iter().all(|l| !l.contains("115.238.203.110")),
        "an address outside the sets: {rules:#?}"
    );
    assert_sets_matched(&rules, created.iter().filter(|n| n.contains("_n_")));
}

/// The Import helper prints the alias's addresses, one a line: the seed's two TCP 80,443 hosts.
#[test]
fn pfsense_import_lines_are_the_alias_addresses() {
    if !tools(&["unshare", "xmllint"]) {
        return;
    }
    let lab = Lab::new(&fixture("seed.json"), &[], "");
    let out = lab.run(&readme_block("pfsense-import"));
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["115.238.203.109/32", "115.238.203.110/32"]
    );
}

/// Debian's stock squid.conf, running, with the snippet put where the README says: the include
/// is there once, above `deny !Safe_ports`; `squid -k parse` is clean; a CONNECT to a listed
/// address on its listed port 8443 is served (Squid answers 503: the namespace reaches
/// nothing), while the same address on an unlisted port and an unlisted address on 8443 still
/// meet Debian's `SSL_ports` rule (403).
#[test]
fn squid_on_debian_serves_listed_ports_other_than_443() {
    if !tools(&["unshare", "squid", "curl"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary folder");
    let input = dir.path().join("list.json");
    std::fs::write(
        &input,
        r#"{"errcode":0,"errmsg":"ok","ip_list":[
            {"ip":"115.238.203.110","protocol":"TCP","port":[8443],"is_necessary":1,"description":"x"}],
           "domain_list":[
            {"domain":"a.work.weixin.qq.com","protocol":"TCP","port":[443],"is_necessary":1}]}"#,
    )
    .expect("the list is written");
    let lab = Lab::new(
        &input,
        &["--squid-clients", "127.0.0.0/8,::1"],
        "\"reload squid\") squid -k reconfigure ;;",
    );
    let block = readme_block("squid-debian");
    // Private /run, /dev/shm and Squid's folders; readiness and reconfiguration are awaited by
    // bounded counts.
    let out = lab.run(&format!(
        r#"
        for d in /dev/shm /run /var/log/squid /var/spool/squid /var/cache/squid; do
            [ -d "$d" ] || continue
            mount -t tmpfs tmpfs "$d"; chown proxy:proxy "$d"
        done
        squid -N -f /etc/squid/squid.conf & pid=$!
        i=0
        until curl -s -o /dev/null http://127.0.0.1:3128/; do
            i=$((i + 1)); [ $i -le 600 ] || {{ kill $pid; echo "squid never listened"; exit 1; }}
            sleep 0.1
        done
        # Run twice, each time once the reconfiguration it asked for is done.
        for n in 2 3; do
            {block}
            i=0
            until [ "$(grep -c 'Accepting HTTP Socket connections' /var/log/squid/cache.log)" -ge $n ]; do
                i=$((i + 1)); [ $i -le 600 ] || {{ kill $pid; echo "squid never reconfigured"; exit 1; }}
                sleep 0.1
            done
        done
        echo '--- parse'; squid -k parse 2>&1 | grep -E 'WARNING|ERROR|FATAL' || true
        echo '--- codes'
        for dest in 115.238.203.110:8443 115.238.203.110:8444 198.51.100.9:8443; do
            code=$(curl -s -o /dev/null -w '%{{http_connect}}' --max-time 60 -p \
                -x http://127.0.0.1:3128 "https://$dest/" || true)
            echo "$dest $code"
        done
        echo '--- conf'; grep -n -e '^include' -e '^http_access deny !Safe_ports' /etc/squid/squid.conf
        kill $pid; wait $pid || true
        "#
    ));
    assert_eq!(section(&out, "parse"), Vec::<&str>::new(), "{out}");
    assert_eq!(
        section(&out, "codes"),
        [
            "115.238.203.110:8443 503",
            "115.238.203.110:8444 403",
            "198.51.100.9:8443 403"
        ],
        "{out}"
    );
    let conf = section(&out, "conf");
    let at = |what: &str| {
        conf.iter()
            .filter(|l| l.ends_with(what))
            .filter_map(|l| l.split(':').next()?.parse::<usize>().ok())
            .collect::<Vec<_>>()
    };
    let (mine, deny) = (
        at(":include /etc/squid/wecom.conf"),
        at(":http_access deny !Safe_ports"),
    );
    assert!(
        mine.len() == 1 && deny.len() == 1 && mine[0] < deny[0],
        "{conf:#?}"
    );
}

/// `rust-version` in Cargo.toml is at least what every locked dependency declares, so cargo
/// refuses an older toolchain instead of failing in a dependency. (clippy's
/// `incompatible_msrv`, run with `-D warnings`, checks the crate's own use of the standard
/// library against it.)
#[test]
fn rust_version_covers_every_locked_dependency() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .expect("Cargo.toml");
    let ours = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("rust-version in Cargo.toml");
    // 1.88 and 1.88.0 are the same version.
    let version = |v: &str| -> Vec<u32> {
        let mut parts: Vec<u32> = v.split('.').map(|p| p.parse().unwrap_or(0)).collect();
        parts.resize(3, 0);
        parts
    };
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--locked", "--offline", "--format-version", "1"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let newer: Vec<String> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter_map(|p| {
            let v = p["rust_version"].as_str()?;
            (version(v) > version(ours)).then(|| format!("{} {v}", p["name"]))
        })
        .collect();
    assert!(newer.is_empty(), "need a newer Rust than {ours}: {newer:?}");
}

/// The README's install command, as written, into a folder of the test's (`--root`), from
/// the crates already downloaded (`--offline`) and unoptimized (`--debug`, for time); the
/// installed program runs.
#[test]
fn install_as_the_readme_says() {
    let block = readme_block("install");
    let command = block
        .lines()
        .map(|l| l.split(" #").next().unwrap_or("").trim())
        .find(|l| l.starts_with("cargo install"))
        .expect("a cargo install line");
    let root = tempfile::tempdir().expect("a temporary folder");
    // The test binary's own target folder: what is built already is reused.
    let target = Path::new(env!("CARGO_BIN_EXE_wecom-allowlist"))
        .parent()
        .and_then(Path::parent)
        .expect("the target folder");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{command} --root \"$ROOT\" --offline --debug --quiet"
        ))
        .env("ROOT", root.path())
        .env("CARGO_TARGET_DIR", target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let installed = Command::new(root.path().join("bin/wecom-allowlist"))
        .arg("--version")
        .output()
        .expect("the installed program runs");
    assert_eq!(
        String::from_utf8_lossy(&installed.stdout),
        format!("wecom-allowlist {}\n", env!("CARGO_PKG_VERSION"))
    );
}

/// The blocks under "Completions and the man page", each run as written by its own shell, as
/// root in a new mount namespace where /usr/local/share is a private overlay and HOME an empty
/// folder: then each shell, started afresh, completes from what its block installed, and
/// `man -w` finds the installed page (through Debian's /usr/local/man link). The host's /usr/local/share is checked to be untouched.
#[test]
fn the_readme_completion_and_man_lines_work_as_written() {
    if !(require_root("the completion blocks write under /usr/local/share")
        && ["bash", "zsh", "fish", "man", "unshare"]
            .into_iter()
            .all(require_tool))
    {
        return;
    }
    let page = Path::new("/usr/local/share/man/man1/wecom-allowlist.1");
    let zsh_file = Path::new("/usr/local/share/zsh/site-functions/_wecom-allowlist");
    let host_had = (page.exists(), zsh_file.exists());
    let dir = tempfile::tempdir().expect("a temporary folder");
    for shell in ["bash", "zsh", "fish", "man"] {
        let block = readme_block_after(&format!("<!-- shell: {shell} -->"));
        std::fs::write(dir.path().join(format!("{shell}.block")), block).expect("write");
    }
    for sub in ["up", "work", "home"] {
        std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
    }
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_wecom-allowlist"))
        .parent()
        .expect("the binary's folder");
    let script = r#"
        mount -t overlay overlay -o "lowerdir=/usr/local/share,upperdir=$T/up,workdir=$T/work" /usr/local/share
        unset XDG_CONFIG_HOME XDG_DATA_HOME MANPATH
        export HOME="$T/home" PATH="$BIN_DIR:$PATH" MANPAGER=cat PAGER=cat
        echo "== bash"
        bash --norc --noprofile -c "$(cat "$T/bash.block")
complete -p wecom-allowlist"
        echo "== zsh"
        zsh -f -c "$(cat "$T/zsh.block")"
        zsh -f -c 'autoload -U compinit && compinit -u -D && print -r -- "$_comps[wecom-allowlist]"'
        echo "== fish"
        fish -c "$(cat "$T/fish.block")"
        fish -c "complete -C 'wecom-allowlist bu'"
        echo "== man"
        sh -e "$T/man.block" > "$T/man.out"
        readlink -f "$(man -w wecom-allowlist)"
    "#;
    let out = Command::new("unshare")
        .args(["-m", "sh", "-ec", script])
        .env("T", dir.path())
        .env("BIN_DIR", bin_dir)
        .output()
        .expect("unshare starts");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let section = |name: &str| -> Vec<&str> {
        text.split(&format!("== {name}\n"))
            .nth(1)
            .unwrap_or_default()
            .split("== ")
            .next()
            .unwrap_or_default()
            .lines()
            .collect()
    };
    assert!(
        section("bash")
            .iter()
            .any(|l| l.starts_with("complete ") && l.ends_with(" wecom-allowlist")),
        "bash registered no completion: {text}"
    );
    assert_eq!(section("zsh"), ["_wecom-allowlist"], "{text}");
    assert!(
        section("fish")
            .iter()
            .any(|l| l.split('\t').next() == Some("build")),
        "fish offered no build: {text}"
    );
    assert_eq!(section("man"), [page.to_str().expect("UTF-8")], "{text}");
    let read = std::fs::read_to_string(dir.path().join("man.out")).expect("man's output");
    assert!(
        read.contains("wecom-allowlist"),
        "man -l - printed {read:?}"
    );
    assert_eq!(
        (page.exists(), zsh_file.exists()),
        host_had,
        "the host's /usr/local/share changed"
    );
}
