//! The command line: clap definitions, then a `run` that calls the library and maps its errors
//! to exit codes (see `Error::exit_code`, documented in README.md).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Args, CommandFactory, Parser, Subcommand};

use crate::config::Config;
use crate::diff::{summarize, Format};
use crate::endpoint::ListName;
use crate::error::{Error, Result};
use crate::fetch;
use crate::list::{self, List};
use crate::output::{
    commit_file, commit_files, lock_folder, read_input, remove_leftovers, removed_files,
    write_file, Finished, OutFile, State,
};
use crate::render::{DnsSets, Templates};
use crate::target::Target;
use crate::wecom;

/// The file `build` writes beside the targets' files: the normalized list they were built from.
pub const SOURCE_FILE: &str = "source.json";

#[derive(Debug, Parser)]
#[command(name = "wecom-allowlist", version, about, long_about = None)]
#[command(
    after_help = "Exit codes: 0 success (no change for --check and diff); 1 changes found \
(--check, diff); 2 invalid input, config or usage; 3 a WeCom API error, a network error or missing \
credentials; 4 a safety guard refused; 70 an internal template error (a bug)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub log: LogArgs,
}

impl Cli {
    /// Whether the command can log: only fetching (any command without --input, and `fetch`)
    /// and writing files (`build`, `-o`) do. Setting up the logger costs more than a small
    /// render, so the others go without.
    fn logs(&self) -> bool {
        match &self.command {
            Command::Render(a) => a.source.input.is_none() || a.output.is_some(),
            Command::Explain(a) => a.source.input.is_none(),
            Command::Build(_) | Command::Fetch(_) => true,
            Command::Diff(_) | Command::Targets | Command::Completions(_) | Command::Man => false,
        }
    }
}

/// `-v`, on its own so that `parse` can build the top command without every subcommand.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log on standard error: -v what the fetch does, -vv every request. Only fetching logs:
    /// for diff, targets, completions, man, and render, build or explain with --input, it adds
    /// nothing.
    /// RUST_LOG (e.g. `hyper_util=debug`) sets the levels of other crates. Secrets are never
    /// logged.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Render one target to standard output or to a file.
    Render(RenderArgs),
    /// Render every target (or those named) and source.json into a folder; on any error no file
    /// there changes. A second build into the same folder waits for the first.
    #[command(mut_args(target_help(
        "Only these targets (repeat the option, or separate \
them with commas: squid,nftables). Default: all that apply to the list. Refused (exit 4) when \
another target's file in DIR would then cite another source.json"
    )))]
    Build(BuildArgs),
    /// Show which domains and IPs were added, removed or changed between two lists (responses
    /// or source.json files). Exit 0 when nothing changed, 1 when something did. A changed
    /// description alone is a change, listed with the old and new text, as it is for
    /// `build --check` (descriptions are comments in the files).
    Diff(DiffArgs),
    /// List the targets, each with its file name and what it holds.
    Targets,
    /// Fetch the list from the WeCom API, check it as `render` would, and save it as received
    /// (pretty JSON); an invalid or error answer is never saved.
    Fetch(FetchCommandArgs),
    /// Print a completion script for SHELL on standard output, e.g.
    /// `source <(wecom-allowlist completions bash)`.
    Completions(CompletionsArgs),
    /// Print the manual page (roff) on standard output, e.g. `wecom-allowlist man | man -l -`.
    Man,
    /// Say whether each target allows a destination, by which group, and which entries of the
    /// list put it there.
    ///
    /// Exit 0 when every target that applies allows all of DEST, 1 when one allows it only
    /// partly (a part of a CIDR, some of the names below a wildcard) or not at all, or
    /// when no target applies.
    #[command(mut_args(target_help(
        "Only these targets (repeat the option, or separate \
them with commas). Default: all; dnsmasq and ipset only fill sets, so they never apply"
    )))]
    Explain(ExplainArgs),
}

// The options of each command, each in a struct of its own so that `parse` can build one
// command without the others. Their help is their command's (the variant's doc comment).

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The target to render (see `wecom-allowlist targets`).
    #[arg(value_enum)]
    target: Target,
    #[command(flatten)]
    source: SourceArgs,
    /// Write to FILE atomically instead of standard output; on any error FILE is left as it was.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Print the JSON context the target's template receives instead of rendering it.
    #[arg(long)]
    dump_context: bool,
    #[command(flatten)]
    policy: PolicyArgs,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// The folder to write iptables.rules, ip6tables.rules, nftables.nft, pfsense.xml,
    /// squid.conf, dnsmasq.conf, ipset.rules and source.json into (created if missing); the
    /// api and callback lists write only the targets that apply to them (the callback list
    /// nginx.conf too), each list into a folder of its own.
    #[arg(long, value_name = "DIR")]
    out_dir: PathBuf,
    #[command(flatten)]
    targets: TargetArgs,
    /// Write nothing: exit 0 when DIR is up to date, 1 with a unified diff of each file that
    /// would change and a summary of the list's changes when it is not. A changed
    /// description alone is a change (it is a comment in the files), as it is for `diff`.
    #[arg(long)]
    check: bool,
    /// Refuse (exit 4) when the new list takes away more than PCT percent of what DIR's
    /// previous source.json allowed: each of its (destination, protocol) pairs weighs the
    /// same and counts by the share of its ports no longer allowed (a wider network or a
    /// wildcard that covers it counts as allowed); 100 turns the guard off.
    #[arg(long, value_name = "PCT", default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=100))]
    max_shrink: u8,
    /// Don't list on standard error which files were written and which were unchanged.
    /// Warnings (such as removed leftovers of an interrupted run) and errors still show.
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    policy: PolicyArgs,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The older list.
    old: PathBuf,
    /// The newer list.
    new: PathBuf,
    /// How to print the changes: text for a terminal, markdown for a pull request, json for
    /// programs.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

#[derive(Debug, Args)]
pub struct FetchCommandArgs {
    #[command(flatten)]
    fetch: FetchArgs,
    /// Write to FILE atomically instead of standard output; on any error FILE is left as it was.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// An address, a CIDR or a name (`*.example.com`: the name and every name below it),
    /// with a port and a protocol if wanted: 1.2.3.4:443/tcp, [2001:db8::1]:443,
    /// a.example.com:80. Without PORT any port will do, without PROTO either protocol.
    #[arg(value_name = "DEST[:PORT[/PROTO]]", value_parser = crate::explain::parse_query)]
    query: crate::explain::Query,
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    targets: TargetArgs,
    #[command(flatten)]
    policy: PolicyArgs,
}

/// `--target`, for the commands that work on several targets; each says in its own help what
/// the default is.
#[derive(Debug, Args)]
pub struct TargetArgs {
    #[arg(
        long = "target",
        value_enum,
        value_name = "TARGET",
        value_delimiter = ','
    )]
    targets: Vec<Target>,
}

/// Gives `--target` the help of the command it belongs to (`TargetArgs` has none of its own).
/// `mut_args`, unlike `mut_arg`, keeps the option in its place in completions.
fn target_help(help: &'static str) -> impl FnMut(clap::Arg) -> clap::Arg {
    move |arg| {
        if arg.get_id() == "targets" {
            arg.help(help)
        } else {
            arg
        }
    }
}

#[derive(Debug, Args)]
pub struct SourceArgs {
    /// A saved get_server_domain_ip response (JSON, exactly as the API returns it, or a
    /// source.json); `-` reads standard input. Without it the list is fetched live (see the
    /// fetch options).
    #[arg(short, long, value_name = "FILE|-")]
    pub input: Option<PathBuf>,
    /// Drop invalid entries with a warning each on standard error, instead of failing.
    #[arg(long)]
    pub skip_invalid: bool,
    #[command(flatten)]
    pub fetch: FetchArgs,
}

const FETCH_HEADING: &str = "Fetching live (fetch; render, build and explain without --input)";

/// Where and how to fetch the list live. The app's Secret is read from WECOM_CORP_SECRET or
/// --corp-secret-file, never from a flag value, which `ps` would show.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The corp id (企业ID). With it: the app's Secret in the environment variable
    /// WECOM_CORP_SECRET or in --corp-secret-file. Or, instead of both, a ready token in
    /// WECOM_ACCESS_TOKEN.
    #[arg(help_heading = FETCH_HEADING, long, value_name = "ID", env = "WECOM_CORP_ID")]
    pub corp_id: Option<String>,
    /// A file that holds the app's Secret (instead of WECOM_CORP_SECRET).
    #[arg(help_heading = FETCH_HEADING, long, value_name = "PATH")]
    pub corp_secret_file: Option<PathBuf>,
    /// The API's address: for private deployments, proxies and tests.
    #[arg(help_heading = FETCH_HEADING, long, value_name = "URL", env = "WECOM_API_BASE", default_value = fetch::DEFAULT_API_BASE)]
    pub api_base: String,
    /// Seconds to wait for each request; the whole fetch, retries included, gives up after
    /// three times this.
    #[arg(help_heading = FETCH_HEADING, long, value_name = "SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
    /// Keep the access token in FILE (mode 0600) and reuse it while it has more than 5 minutes
    /// left: WeCom asks callers not to get tokens often.
    #[arg(help_heading = FETCH_HEADING, long, value_name = "FILE")]
    pub token_cache: Option<PathBuf>,
    /// Which of WeCom's lists: server (get_server_domain_ip, egress; the default), api
    /// (get_api_domain_ip: WeCom's API that your servers call, egress TCP 443) or callback
    /// (getcallbackip: where WeCom's callbacks to your servers come from, ingress). For render,
    /// build and explain it overrides the config's [list] name. A saved answer of another list is
    /// refused.
    #[arg(long, value_enum, value_name = "LIST")]
    pub list: Option<ListName>,
}

impl FetchArgs {
    /// Checks everything, credentials included, before any request is sent.
    fn config(&self, list: ListName) -> Result<fetch::Config> {
        Ok(fetch::Config {
            list,
            api_base: fetch::api_base(&self.api_base)?,
            timeout: Duration::from_secs(self.timeout),
            credentials: fetch::Credentials::from_env(
                self.corp_id.clone(),
                self.corp_secret_file.as_deref(),
            )?,
            token_cache: self.token_cache.clone(),
        })
    }
}

/// What to allow and where the rules go. Flags override the config file.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// A TOML config file: names per target, filters, extra and excluded destinations
    /// (see README.md).
    #[arg(long, value_name = "FILE", env = CONFIG_ENV)]
    pub config: Option<PathBuf>,
    /// A folder of templates that replace the built-in ones of the same file name
    /// (iptables.rules, nftables.nft, pfsense.xml, squid.conf, dnsmasq.conf, ipset.rules,
    /// nginx.conf, and for the callback list iptables.callback.rules, nftables.callback.nft,
    /// pfsense.callback.xml).
    #[arg(long, value_name = "DIR")]
    pub templates: Option<PathBuf>,
    /// Keep only the entries WeCom marks as necessary (is_necessary = 1).
    #[arg(long)]
    pub necessary_only: bool,
    /// Don't turn universal_domian into a wildcard: allow only the domains listed.
    #[arg(long)]
    pub exact_domains: bool,
    /// Write an allowlist even when it is empty after filtering (it would block WeCom).
    #[arg(long)]
    pub allow_empty: bool,
    /// Allow prefixes shorter than /8 (IPv4) or /16 (IPv6), 0.0.0.0/0 and ::/0 included.
    #[arg(long)]
    pub allow_broad: bool,
    /// Allow addresses in WeCom's list that are not publicly reachable (private, loopback,
    /// link-local, documentation ...). The config's extra entries never need it.
    #[arg(long)]
    pub allow_nonpublic: bool,
    #[command(flatten)]
    pub iptables: IptablesFlags,
    #[command(flatten)]
    pub nft: NftFlags,
    #[command(flatten)]
    pub pfsense: PfsenseFlags,
    #[command(flatten)]
    pub squid: SquidFlags,
    #[command(flatten)]
    pub dnsmasq: DnsmasqFlags,
    /// The callback list: the port(s) your callback URL listens on, which the rules open to
    /// WeCom's sources (repeat the option, or separate with commas; default 443, or the
    /// config's [callback] ports).
    #[arg(
        help_heading = "Callback list options",
        long = "callback-port",
        value_name = "PORT",
        value_delimiter = ',',
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub callback_ports: Vec<u16>,
}

// Each target's flags, under a heading of the target's in the help. The config file's
// section of the same target sets the same (see `PolicyArgs::config`).

#[derive(Debug, Args)]
#[command(next_help_heading = "iptables and ip6tables options")]
pub struct IptablesFlags {
    /// iptables/ip6tables: the chain that holds the rules (default WECOM_ALLOW; never a
    /// built-in chain).
    #[arg(long, value_name = "NAME")]
    pub chain: Option<String>,
    /// iptables and ip6tables: one rule per address group, matching a `hash:net` set that
    /// ipset.rules fills (and swaps in on a reload), instead of one rule per address.
    #[arg(long)]
    pub ipset: bool,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "nftables options")]
pub struct NftFlags {
    /// nftables: the table that holds the chain and the sets (default filter); your own chain
    /// that jumps to the allowlist must be in the same table.
    #[arg(long = "nft-table", value_name = "NAME")]
    pub table: Option<String>,
    /// nftables: the regular chain that holds the rules (default wecom_allow).
    #[arg(id = "nft_chain", long = "nft-chain", value_name = "NAME")]
    pub chain: Option<String>,
    /// nftables: a `counter` on every rule, so that `nft list chain` shows what each one
    /// passed (iptables and ip6tables count every rule anyway).
    #[arg(long = "nft-counter")]
    pub counter: bool,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "pfSense options")]
pub struct PfsenseFlags {
    /// pfSense: the interface the pass rules go on (internal name: lan, opt1 ...; default lan).
    #[arg(long, value_name = "NAME")]
    pub interface: Option<String>,
    /// pfSense: where the pass rules take traffic from: any (the default), an interface's
    /// subnet (lan, opt1 ...) or address (lanip ...), an IPv4 or IPv6 address or network, or
    /// the name of an alias on the firewall.
    #[arg(long = "pfsense-source", value_name = "SOURCE")]
    pub source: Option<String>,
    /// pfSense: log what each pass rule passes (Status > System Logs > Firewall).
    #[arg(long = "pfsense-log")]
    pub log: bool,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Squid options")]
pub struct SquidFlags {
    /// Squid: serve only these sources (addresses or CIDRs, repeated or comma-separated): each
    /// http_access allow line gets a src ACL. Replaces the config's [squid] clients.
    #[arg(long = "squid-clients", value_name = "CIDR", value_delimiter = ',', value_parser = client_net)]
    pub clients: Vec<ipnet::IpNet>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "dnsmasq options")]
pub struct DnsmasqFlags {
    /// dnsmasq.conf: fill the nftables sets of nftables.nft (nftset, the default) or the
    /// ipset sets of ipset.rules, which iptables.rules and ip6tables.rules match (ipset).
    #[arg(long = "dnsmasq-sets", value_enum, value_name = "SETS")]
    pub sets: Option<DnsSets>,
}

impl PolicyArgs {
    /// The config file, if any, with the flags laid over it, and the list the run is about
    /// (`--list`, else the config's `[list] name`, else server). The name flags set the names
    /// of that list's files.
    fn config(&self, list: Option<ListName>) -> Result<(Config, ListName)> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        let list = list.or(config.list).unwrap_or_default();
        if !self.callback_ports.is_empty() {
            let ranges = self
                .callback_ports
                .iter()
                .filter_map(|&p| crate::model::PortRange::new(p, p))
                .collect();
            if let Some(ports) = crate::model::PortSet::new(ranges) {
                config.callback_ports = ports;
            }
        }
        let o = &mut config.options;
        o.necessary_only |= self.necessary_only;
        o.exact_domains |= self.exact_domains;
        o.allow_empty |= self.allow_empty;
        o.allow_broad |= self.allow_broad;
        o.allow_nonpublic |= self.allow_nonpublic;
        let n = config.names_for_mut(list);
        for (slot, flag) in [
            (&mut n.iptables_chain, &self.iptables.chain),
            (&mut n.nft_table, &self.nft.table),
            (&mut n.nft_chain, &self.nft.chain),
            (&mut n.pfsense_interface, &self.pfsense.interface),
        ] {
            if let Some(v) = flag {
                slot.clone_from(v);
            }
        }
        if !self.squid.clients.is_empty() {
            n.squid_clients = crate::render::squid_clients(&self.squid.clients);
        }
        n.validate()?;
        config.rules.nft_counter |= self.nft.counter;
        config.rules.pfsense_log |= self.pfsense.log;
        if let Some(raw) = &self.pfsense.source {
            if list == ListName::Callback {
                return Err(Error::Option(
                    "--pfsense-source doesn't apply to the callback list: its rules take WeCom's callback servers (their alias) as the source".into(),
                ));
            }
            config.rules.pfsense_source = crate::render::PfSource::parse(raw)?;
        }
        config.rules.ipset |= self.iptables.ipset;
        if config.rules.ipset && list != ListName::Server {
            // Only the server list has ipset.rules, which would hold the sets.
            return Err(Error::Option(format!(
                "--ipset (or [iptables] ipset) applies to the server list only: the {} list has no \
                 ipset.rules to hold the sets; build it without --ipset",
                list.name()
            )));
        }
        if let Some(sets) = self.dnsmasq.sets {
            config.dnsmasq.sets = sets;
        }
        Ok((config, list))
    }

    /// What render, build and explain start from, made in the order their errors are reported:
    /// the config, the templates, what `check` makes of the list's name (the targets), and the
    /// prepared list of `source`.
    fn setup<T>(
        &self,
        source: &SourceArgs,
        check: impl FnOnce(ListName) -> Result<T>,
    ) -> Result<(Config, Templates, T, crate::Prepared)> {
        let (config, list) = self.config(source.fetch.list)?;
        let templates = Templates::new(self.templates.as_deref())?;
        let checked = check(list)?;
        let prepared = prepare(source, &config, list)?;
        Ok((config, templates, checked, prepared))
    }
}

/// A `--squid-clients` value, checked as the list's addresses are (no host bits, no
/// IPv4-mapped IPv6).
fn client_net(raw: &str) -> std::result::Result<ipnet::IpNet, String> {
    wecom::parse_ip(raw)
}

/// The list's JSON document from the API. The async runtime is built here, only when a fetch
/// is needed: runs from a file never start one.
fn fetch_live(args: &FetchArgs, list: ListName) -> Result<serde_json::Value> {
    let config = args.config(list)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Fetch(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(fetch::fetch(&config))
}

/// The list, validated as `list`; a plain list's entries get its ports (the api list's 443,
/// the callback list's own). A saved answer of another list is refused; a raw api or
/// callback answer, which doesn't say which it is, is taken as `list` with a warning.
fn load(source: &SourceArgs, list: ListName, config: &Config) -> Result<wecom::Response> {
    let ports = match list {
        ListName::Callback => config.callback_ports.clone(),
        _ => wecom::api_ports(),
    };
    let response = match &source.input {
        Some(path) => {
            let (found, response) =
                wecom::read_as(&read_input(path)?, list, &ports, source.skip_invalid)?;
            if found == wecom::Found::Plain {
                eprintln!(
                    "wecom-allowlist: warning: {} doesn't say which list it holds (a raw answer of get_api_domain_ip and one of getcallbackip look alike): taking it as {}, as --list says; `fetch --list {}` saves answers marked",
                    path.display(),
                    list.describe(),
                    list.name()
                );
            }
            response
        }
        None => wecom::validate_as(
            &fetch_live(&source.fetch, list)?,
            list,
            &ports,
            source.skip_invalid,
        )?,
    };
    for skipped in &response.skipped {
        eprintln!("wecom-allowlist: warning: skipped {skipped}");
    }
    Ok(response)
}

/// Validates and filters the list; warns about each exclusion that takes nothing out.
fn prepare(source: &SourceArgs, config: &Config, list: ListName) -> Result<crate::Prepared> {
    let prepared = crate::prepare_list(load(source, list, config)?, config, list)?;
    for x in &prepared.unused_exclusions {
        let (key, shown) = match x {
            crate::model::Dest::Net(n) => ("exclude.cidrs", n.to_string()),
            crate::model::Dest::Wildcard(h) => ("exclude.domains", format!("*.{h}")),
            crate::model::Dest::Exact(h) => ("exclude.domains", h.to_string()),
        };
        eprintln!(
            "wecom-allowlist: warning: {key} {} matches no entry of the list: it excludes nothing (a typo?)",
            crate::text::quote(&shown)
        );
    }
    Ok(prepared)
}

/// Reads a list for `diff`: a response or a source.json, of any of WeCom's lists.
fn load_list(path: &Path) -> Result<(wecom::Found, List)> {
    let (found, response) = wecom::parse_any(&read_input(path)?).map_err(|e| match e {
        Error::Input(msg) => Error::Input(format!("{}: {msg}", path.display())),
        other => other,
    })?;
    Ok((found, List::from_entries(&response.entries)))
}

/// True when two documents may hold the same list: a raw api or callback answer may be either.
fn same_list(a: wecom::Found, b: wecom::Found) -> bool {
    use wecom::Found::{Any, Is, Plain};
    match (a, b) {
        (Any, _) | (_, Any) | (Plain, Plain) => true,
        (Plain, Is(l)) | (Is(l), Plain) => l.is_plain(),
        (Is(x), Is(y)) => x == y,
    }
}

/// What a document holds, for messages.
fn found_text(found: wecom::Found) -> String {
    match found {
        wecom::Found::Is(list) => list.describe(),
        wecom::Found::Plain => "the api or the callback list".into(),
        wecom::Found::Any => "an empty list".into(),
    }
}

/// True when the process was started with standard output closed (`>&-`). Rust's runtime then
/// opens /dev/null read-write in its place, where every write "succeeds": that /dev/null,
/// opened read-write (a shell's `>/dev/null` opens it write-only), is how it shows.
#[cfg(unix)]
fn stdout_was_closed() -> bool {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let fd = std::io::stdout().as_raw_fd();
    // SAFETY: F_GETFL only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || flags & libc::O_ACCMODE != libc::O_RDWR {
        return false;
    }
    let (Ok(out), Ok(null)) = (
        std::fs::metadata(format!("/proc/self/fd/{fd}")),
        std::fs::metadata("/dev/null"),
    ) else {
        return false;
    };
    out.rdev() == null.rdev() && out.dev() == null.dev() && out.ino() == null.ino()
}

#[cfg(not(unix))]
fn stdout_was_closed() -> bool {
    false
}

/// Standard output that treats a closed pipe (`| head`) as success, and a closed standard
/// output as the error it is: the result would be lost without a word.
fn print(text: &str) -> Result<()> {
    if stdout_was_closed() {
        return Err(Error::Write {
            path: "<stdout>".into(),
            source: std::io::Error::other(
                "standard output is closed: redirect it to a file, or use -o where the command has it",
            ),
        });
    }
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::Write {
            path: "<stdout>".into(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// A command's whole output: into FILE atomically (`-o`), else on standard output.
fn emit(output: Option<&Path>, text: &str) -> Result<()> {
    match output {
        Some(path) => write_file(path, text.as_bytes()),
        None => print(text),
    }
}

/// How a successful run ended: `Changed` is exit code 1 for `--check` and `diff`, and for
/// `explain` when a target that applies doesn't allow all that was asked.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Changed,
}

/// Refuses a build that would take away more than `max_pct` percent of what the previous list
/// allowed, measured as `list::shrinkage` defines it.
fn shrink_guard(
    previous: &List,
    next: &List,
    max_pct: u8,
    exact_domains: bool,
    source: &Path,
) -> Result<()> {
    if max_pct >= 100 || previous.is_empty() {
        return Ok(());
    }
    let shrink = list::shrinkage(previous, next, exact_domains);
    if shrink.percent <= f64::from(max_pct) {
        return Ok(());
    }
    let mut names: Vec<String> = shrink
        .lost
        .iter()
        .take(20)
        .map(|(dest, p, ports)| format!("{dest} ({} {ports})", p.as_str()))
        .collect();
    if shrink.lost.len() > names.len() {
        names.push(format!("and {} more", shrink.lost.len() - names.len()));
    }
    Err(Error::Guard(format!(
        "the new list takes away {:.1}% of what {} allowed ({} of its {} (destination, protocol) pairs lose ports), more than --max-shrink {max_pct}%: {} (check the source; --max-shrink 100 to proceed)",
        shrink.percent,
        source.display(),
        shrink.lost.len(),
        shrink.pairs,
        names.join(", ")
    )))
}

/// The targets a command works on: those named with `--target` (each must hold `list`), or
/// every target of `list`; sorted, each once.
fn targets_for(TargetArgs { mut targets }: TargetArgs, list: ListName) -> Result<Vec<Target>> {
    if let Some((t, why)) = targets.iter().find_map(|t| Some((t, t.refuses(list)?))) {
        return Err(Error::Option(format!(
            "--target {} doesn't apply to {}: {why}",
            t.name(),
            list.describe(),
        )));
    }
    if targets.is_empty() {
        targets = Target::for_list(list);
    }
    targets.sort_unstable();
    targets.dedup();
    Ok(targets)
}

/// `None` for a path that isn't there: no folder yet, or a file in the folder's place, which
/// writing reports. Any other failure to read is an error.
fn if_present<T>(read: std::io::Result<T>, path: &Path) -> Result<Option<T>> {
    match read {
        Ok(value) => Ok(Some(value)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(source) => Err(Error::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The list in a build folder's `source.json`, or an empty one if there is none. A file that
/// is there but isn't a list (damaged, hand-edited, an API error saved over it) stops the build
/// with what to do about it: the shrink guard can't work without it.
fn previous_list(source_path: &Path, list: ListName) -> Result<List> {
    let Some(bytes) = if_present(std::fs::read(source_path), source_path)? else {
        return Ok(List::default());
    };
    let why = match wecom::parse_any(&bytes) {
        Ok((found, _)) if !same_list(found, wecom::Found::Is(list)) => {
            return Err(Error::Input(format!(
                "{} holds {}, not {}: build each list into a folder of its own (the files beside it are another list's, and this build would replace them)",
                source_path.display(),
                found_text(found),
                list.describe()
            )))
        }
        Ok((_, response)) => return Ok(List::from_entries(&response.entries)),
        Err(Error::Api { errcode, .. }) => {
            format!("it holds a WeCom error answer (errcode {errcode}), not a list")
        }
        Err(e) => e.to_string(),
    };
    Err(Error::Input(format!(
        "{p} is damaged: {why}. It is the list the files beside it were built from: restore it from version control (git checkout -- {p}), or remove it to start over (the shrink guard then has nothing to compare with)",
        p = source_path.display()
    )))
}

/// The first `sha256:<64 hex>` in a file: the digest its header cites.
fn cited_digest(text: &str) -> Option<&str> {
    text.match_indices("sha256:").find_map(|(i, _)| {
        let hex = text.get(i + 7..i + 7 + 64)?;
        hex.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            .then(|| &text[i..i + 7 + 64])
    })
}

/// The digest a file cites, read a line at a time (a digest has no line break in it), so
/// that a large file is not read whole for its header.
fn first_digest(path: &Path) -> Result<Option<String>> {
    use std::io::BufRead;
    let err = |source| Error::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = std::io::BufReader::new(std::fs::File::open(path).map_err(err)?);
    let mut line = Vec::new();
    loop {
        line.clear();
        if file.read_until(b'\n', &mut line).map_err(err)? == 0 {
            return Ok(None);
        }
        if let Some(digest) = cited_digest(&String::from_utf8_lossy(&line)) {
            return Ok(Some(digest.to_owned()));
        }
    }
}

/// Refuses a build of some targets that would leave the files of the others citing another
/// source.json than the one written: their headers would vouch for a list they weren't built
/// from. They can't be re-rendered here (their options aren't known), so the user must.
fn refuse_stale_others(out_dir: &Path, targets: &[Target], digest: &str) -> Result<()> {
    let mut stale = Vec::new();
    for t in Target::ALL.iter().filter(|t| !targets.contains(t)) {
        let path = out_dir.join(t.file_name());
        if !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            continue;
        }
        if first_digest(&path)?.as_deref() != Some(digest) {
            stale.push((*t, path));
        }
    }
    if stale.is_empty() {
        return Ok(());
    }
    let files: Vec<String> = stale.iter().map(|(_, p)| p.display().to_string()).collect();
    let more: Vec<String> = stale
        .iter()
        .map(|(t, _)| format!("--target {}", t.name()))
        .collect();
    Err(Error::Guard(format!(
        "this build would leave {} citing another source.json than the one it writes: build every target (omit --target, with the options those files were built with), or add {}, or remove the stale files",
        files.join(", "),
        more.join(" ")
    )))
}

/// `build` once the folder is locked (or, for `--check`, as it is): guards, then rendering,
/// then writing all files or none. Also returns what it did to each file, for standard error.
///
/// Each file is written as it is rendered, into a temporary file beside it (for `--check`,
/// only compared with the file there), and the targets are rendered side by side; the first
/// error, in the order of the files, is the one reported.
fn build_into(
    mut prepared: crate::Prepared,
    templates: &Templates,
    out_dir: &Path,
    targets: &[Target],
    check: bool,
    max_shrink: u8,
    exact_domains: bool,
) -> Result<(Outcome, String)> {
    let open = |path: PathBuf| {
        if check {
            OutFile::check(path)
        } else {
            OutFile::stage(path, true)
        }
    };
    // Every guard that can refuse runs before the (costly) rendering, in this order. The
    // policies (with their guards) are made meanwhile, on another core.
    let source_path = out_dir.join(SOURCE_FILE);
    let (guarded, policies) = crate::side_by_side(
        || -> Result<_> {
            let previous = previous_list(&source_path, prepared.list_name())?;
            shrink_guard(
                &previous,
                &prepared.list,
                max_shrink,
                exact_domains,
                &source_path,
            )?;
            // source.json first: its digest is what every other file cites.
            let mut source = open(source_path.clone());
            prepared
                .write_source(&mut source)
                .map_err(|e| Error::Write {
                    path: source_path.clone(),
                    source: e,
                })?;
            refuse_stale_others(out_dir, targets, prepared.digest())?;
            Ok((previous, source.finish()))
        },
        // So do the guards of each target's policy: none is rendered before all are made. The
        // lists' policy comes after the targets' files: an error of its is left for then.
        // Once all are made the entries go, while `source.json` is still being written.
        || {
            prepared.check_policies(targets)?;
            if prepared.check_lists() {
                let entries = prepared.release_entries().unwrap_or_default();
                drop_aside(entries.len() >= LARGE, entries);
            }
            Ok::<_, Error>(())
        },
    );
    let (previous, source) = guarded?;
    policies?;
    // What only `--check` needs afterwards goes, for rendering to use its memory: on a
    // thread of its own when it is large, beside the rendering.
    let previous = if check {
        previous
    } else {
        let list = std::mem::take(&mut prepared.list);
        drop_aside(list.len() + previous.len() >= LARGE, (list, previous));
        List::default()
    };
    let prepared = &prepared;
    let lists_dir = out_dir.join(crate::lists::DIR);
    // One job per target, and the lists last.
    let jobs = in_parallel(targets.len() + 1, |i| match targets.get(i) {
        Some(&t) => {
            let mut out = open(out_dir.join(t.file_name()));
            prepared.render_to(t, templates, &mut out)?;
            Ok(Job::Target(out.finish()))
        }
        None => build_lists(prepared, &lists_dir, check).map(Job::Lists),
    });
    let mut files = Vec::with_capacity(targets.len() + 1);
    let mut lists = None;
    let mut failure = None;
    for job in jobs {
        match job {
            Ok(Job::Target(file)) => files.push(file),
            Ok(Job::Lists(done)) => lists = Some(done),
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    let lists_created = lists.as_ref().is_some_and(|l| l.created);
    let written = failure.map_or(Ok(()), Err).and_then(|()| {
        let Some(lists) = lists else {
            return Err(Error::Write {
                path: lists_dir.clone(),
                source: std::io::Error::other("the lists were not written"),
            });
        };
        files.push(source);
        files.extend(lists.files);
        finish_build(files, &lists.remove, check, &previous, prepared)
    });
    if written.is_err() && lists_created {
        // A failed first build leaves no empty lists folder behind.
        let _ = std::fs::remove_dir(&lists_dir);
    }
    written
}

/// How many entries make a list whose memory is freed on a thread of its own.
const LARGE: usize = 100_000;

/// Drops `garbage` on a thread of its own when it is `large`: freeing a million entries, or
/// their catalog, takes tens of milliseconds, which the next stage needn't wait for.
fn drop_aside<T: Send + 'static>(large: bool, garbage: T) {
    if large {
        // Without a thread, it is dropped here.
        let _ = std::thread::Builder::new().spawn(move || drop(garbage));
    }
}

/// What a job of `build_into` made.
enum Job {
    Target(Finished),
    Lists(ListFiles),
}

/// The files of `lists/`, and those it no longer holds.
struct ListFiles {
    files: Vec<Finished>,
    remove: Vec<PathBuf>,
    /// The folder was made by this build.
    created: bool,
}

/// Writes (or, for `--check`, compares) the files of `lists/`.
fn build_lists(prepared: &crate::Prepared, lists_dir: &Path, check: bool) -> Result<ListFiles> {
    let lists = prepared.lists()?;
    let names = lists.names();
    let remove = gone_lists(lists_dir, &names)?;
    let mut created = false;
    if !check {
        created = !lists_dir.exists();
        std::fs::create_dir_all(lists_dir).map_err(|source| Error::Write {
            path: lists_dir.to_owned(),
            source,
        })?;
        let cleared = remove_leftovers(lists_dir);
        if cleared.is_err() && created {
            let _ = std::fs::remove_dir(lists_dir);
        }
        for path in cleared? {
            tracing::warn!("removed {}, left by an interrupted run", path.display());
        }
    }
    let files = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let path = lists_dir.join(name);
            let mut out = if check {
                OutFile::check(path)
            } else {
                OutFile::stage(path, true)
            };
            // An `OutFile` takes every write.
            let _ = lists.write(i, &mut out);
            out.finish()
        })
        .collect();
    Ok(ListFiles {
        files,
        remove,
        created,
    })
}

/// Runs `job(0..n)`, on as many threads as there are cores (or jobs); the results are in the
/// order of the jobs, so the output and the error reported don't depend on which finished
/// first.
fn in_parallel<T: Send>(n: usize, job: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let threads = crate::cores().min(n);
    if threads <= 1 {
        return (0..n).map(job).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut done: Vec<(usize, T)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= n {
                            break done;
                        }
                        done.push((i, job(i)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| match w.join() {
                Ok(done) => done,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    });
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, t)| t).collect()
}

/// The end of a build whose files are all rendered: for `--check`, the diff; else the report
/// of what changes, and every file put in place (or none).
fn finish_build(
    files: Vec<Finished>,
    remove: &[PathBuf],
    check: bool,
    previous: &List,
    prepared: &crate::Prepared,
) -> Result<(Outcome, String)> {
    if check {
        let mut stale = Vec::new();
        for file in files {
            stale.extend(file.diff()?);
        }
        stale.extend(removed_files(remove)?);
        if stale.is_empty() {
            return Ok((Outcome::Done, String::new()));
        }
        let mut report: String = stale.concat();
        report.push('\n');
        report.push_str(&summarize(previous, &prepared.list).text());
        print(&report)?;
        return Ok((Outcome::Changed, String::new()));
    }
    let report = what_changes(&files, remove);
    commit_files(files, remove)?;
    Ok((Outcome::Done, report))
}

/// The group files in `lists/` that the new build doesn't write: their groups are gone (or
/// moved to other ports), and a firewall still fetching one must not keep getting a list that
/// no longer holds. Only names this tool gives its files are touched.
fn gone_lists(lists_dir: &Path, lists: &[String]) -> Result<Vec<PathBuf>> {
    let Some(entries) = if_present(std::fs::read_dir(lists_dir), lists_dir)? else {
        return Ok(Vec::new());
    };
    let mut gone = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::Read {
            path: lists_dir.to_owned(),
            source,
        })?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if crate::lists::is_group_file(name)
            && !lists.iter().any(|kept| kept == name)
            && entry.file_type().is_ok_and(|t| t.is_file())
        {
            gone.push(entry.path());
        }
    }
    gone.sort();
    Ok(gone)
}

/// What a build is about to do to each file, for standard error: an engineer at the terminal
/// sees which files a build touched (and that a no-op build was one).
fn what_changes(files: &[Finished], remove: &[PathBuf]) -> String {
    let (mut written, mut unchanged) = (0, 0);
    let mut report = String::new();
    for file in files {
        let path = &file.path;
        let state = match file.state() {
            State::Unchanged => None,
            State::Changed => Some("changed"),
            State::New => Some("new"),
            State::Replaced => Some("replaced"),
        };
        match state {
            Some(state) => {
                written += 1;
                report.push_str(&format!(
                    "wecom-allowlist: wrote {} ({state})\n",
                    path.display()
                ));
            }
            None => {
                unchanged += 1;
                report.push_str(&format!("wecom-allowlist: unchanged {}\n", path.display()));
            }
        }
    }
    for path in remove {
        report.push_str(&format!("wecom-allowlist: removed {}\n", path.display()));
    }
    let removed = if remove.is_empty() {
        String::new()
    } else {
        format!(", {} removed", remove.len())
    };
    report.push_str(&format!(
        "wecom-allowlist: {written} written, {unchanged} unchanged{removed}\n"
    ));
    report
}

/// Said once when another run holds the folder, so a waiting build doesn't look hung.
fn waiting(dir: &Path) {
    eprintln!(
        "wecom-allowlist: waiting for another run that is writing {} to finish",
        dir.display()
    );
}

pub fn run(cli: Cli) -> Result<Outcome> {
    match cli.command {
        Command::Targets => {
            let text: String = Target::ALL
                .iter()
                .map(|t| format!("{:<10} {:<16} {}\n", t.name(), t.file_name(), t.summary()))
                .collect();
            print(&text)?;
        }
        Command::Fetch(FetchCommandArgs { fetch, output }) => {
            let list = fetch.list.unwrap_or_default();
            let mut doc = fetch_live(&fetch, list)?;
            wecom::validate_as(&doc, list, &wecom::api_ports(), false)?;
            // The api and callback answers look alike: the mark says which one this is, so
            // that rendering it as the other list is refused later.
            if list.is_plain() {
                if let Some(top) = doc.as_object_mut() {
                    top.insert(
                        crate::endpoint::MARK.into(),
                        serde_json::Value::from(list.name()),
                    );
                }
            }
            // serde_json keeps the key order (preserve_order): the file reads as WeCom sent it.
            let mut text = serde_json::to_string_pretty(&doc)
                .map_err(|e| Error::Input(format!("cannot write the answer as JSON: {e}")))?;
            text.push('\n');
            emit(output.as_deref(), &text)?;
        }
        Command::Render(RenderArgs {
            target,
            source,
            output,
            dump_context,
            policy,
        }) => {
            let (_, templates, (), prepared) = policy.setup(&source, |list| {
                target.refuses(list).map_or(Ok(()), |why| {
                    Err(Error::Option(format!(
                        "{} doesn't apply to {}: {why}",
                        target.name(),
                        list.describe()
                    )))
                })
            })?;
            if let (Some(path), false) = (&output, dump_context) {
                let mut out = OutFile::stage(path.clone(), false);
                prepared.render_to(target, &templates, &mut out)?;
                return commit_file(out.finish()).map(|()| Outcome::Done);
            }
            // Standard output gets the file only once it is complete: nothing on an error.
            let text = if dump_context {
                prepared.context_json(target)?
            } else {
                prepared.render(target, &templates)?
            };
            emit(output.as_deref(), &text)?;
        }
        Command::Build(BuildArgs {
            source,
            out_dir,
            targets,
            check,
            max_shrink,
            quiet,
            policy,
        }) => {
            let (config, templates, targets, prepared) =
                policy.setup(&source, |list| targets_for(targets, list))?;
            let exact_domains = config.options.exact_domains;
            let build = move |out_dir: &Path| {
                build_into(
                    prepared,
                    &templates,
                    out_dir,
                    &targets,
                    check,
                    max_shrink,
                    exact_domains,
                )
                .map(|(outcome, report)| {
                    if !quiet {
                        eprint!("{report}");
                    }
                    outcome
                })
            };
            if out_dir.exists() && !out_dir.is_dir() {
                return Err(Error::Write {
                    path: out_dir,
                    source: std::io::Error::other(
                        "it is a file, not a folder: --out-dir takes a folder",
                    ),
                });
            }
            if check {
                // Read under a shared lock, so a build running now is seen whole or not at all.
                let _lock = if out_dir.is_dir() {
                    Some(lock_folder(&out_dir, false, || waiting(&out_dir))?)
                } else {
                    None
                };
                return build(&out_dir);
            }
            let created = !out_dir.exists();
            std::fs::create_dir_all(&out_dir).map_err(|source| Error::Write {
                path: out_dir.clone(),
                source,
            })?;
            let result = lock_folder(&out_dir, true, || waiting(&out_dir)).and_then(|lock| {
                for path in remove_leftovers(&out_dir)? {
                    tracing::warn!("removed {}, left by an interrupted run", path.display());
                }
                let outcome = build(&out_dir);
                drop(lock);
                outcome
            });
            if result.is_err() && created {
                // A failed first build leaves no empty folder behind (a folder with files stays).
                let _ = std::fs::remove_dir(&out_dir);
            }
            return result;
        }
        Command::Explain(explain) => return explain.run(),
        Command::Completions(CompletionsArgs { shell }) => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), BIN, &mut script);
            print(&String::from_utf8_lossy(&script))?;
        }
        Command::Man => {
            let page = man_page().map_err(|source| Error::Write {
                path: "<stdout>".into(),
                source,
            })?;
            print(&page)?;
        }
        Command::Diff(DiffArgs { old, new, format }) => {
            let ((old_found, old), (new_found, new)) = (load_list(&old)?, load_list(&new)?);
            if !same_list(old_found, new_found) {
                return Err(Error::Input(format!(
                    "the old file holds {} and the new one {}: a diff across lists would show every address as changed",
                    found_text(old_found),
                    found_text(new_found)
                )));
            }
            let summary = summarize(&old, &new);
            print(&summary.render(format))?;
            if !summary.is_empty() {
                return Ok(Outcome::Changed);
            }
        }
    }
    Ok(Outcome::Done)
}

impl ExplainArgs {
    /// `explain`: the answers on standard output; `Changed` unless every target that applies
    /// allows all of the query (and one does).
    fn run(self) -> Result<Outcome> {
        let ExplainArgs {
            query,
            source,
            targets,
            policy,
        } = self;
        // The templates are checked as render checks them, though explain renders nothing.
        let (_, _, targets, prepared) = policy.setup(&source, |list| targets_for(targets, list))?;
        let answers = prepared.explain(&query, &targets)?;
        let text: String = answers.iter().map(crate::explain::Answer::text).collect();
        print(&text)?;
        let mut applies = answers
            .iter()
            .filter(|a| !matches!(a.verdict, crate::explain::Verdict::DoesNotApply(_)))
            .peekable();
        // No target that applies can't allow it.
        if applies.peek().is_none() {
            return Ok(Outcome::Changed);
        }
        if applies.all(|a| a.verdict == crate::explain::Verdict::Allowed) {
            Ok(Outcome::Done)
        } else {
            Ok(Outcome::Changed)
        }
    }
}

/// One man page for the whole tool: the top command's sections, then a section per command
/// with its synopsis, description and options, so that `man` answers what `help CMD` does.
fn man_page() -> std::io::Result<String> {
    let mut cmd = Cli::command();
    cmd.build();
    let mut page = Vec::new();
    let top = clap_mangen::Man::new(cmd.clone());
    top.render_title(&mut page)?;
    top.render_name_section(&mut page)?;
    top.render_synopsis_section(&mut page)?;
    top.render_description_section(&mut page)?;
    top.render_options_section(&mut page)?;
    // Not clap_mangen's list of commands: it points to a page per command, which isn't there.
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let man = clap_mangen::Man::new(sub.clone());
        let mut part = Vec::new();
        man.render_synopsis_section(&mut part)?;
        man.render_description_section(&mut part)?;
        if sub.get_arguments().any(|a| !a.is_hide_set()) {
            man.render_options_section(&mut part)?;
        }
        let part = String::from_utf8_lossy(&part);
        page.extend_from_slice(format!(".SH \"{BIN} {}\"\n", sub.get_name()).as_bytes());
        // The command's own sections become subsections of its section.
        for line in part.lines() {
            let line = line
                .strip_prefix(".SH ")
                .map_or_else(|| line.to_owned(), |title| format!(".SS {title}"));
            page.extend_from_slice(line.as_bytes());
            page.push(b'\n');
        }
    }
    top.render_extra_section(&mut page)?;
    top.render_version_section(&mut page)?;
    String::from_utf8(page).map_err(std::io::Error::other)
}

/// Logs go to standard error only, so standard output stays the result. This crate's warnings
/// (retries, an unusable token cache) always show, whatever RUST_LOG says about other crates,
/// unless RUST_LOG names this crate itself (and no -v overrides it). Records of crates that log
/// through `log` (reqwest) are bridged in, and every line is scrubbed of the credentials.
/// A command that can't log (`Cli::logs`) only has RUST_LOG checked, as every command does.
fn init_logging(verbose: u8, logs: bool) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;

    let mut ours = match verbose {
        0 => LevelFilter::WARN,
        1 => LevelFilter::INFO,
        _ => LevelFilter::TRACE,
    };
    let crate_name = env!("CARGO_CRATE_NAME");
    let mut filter = Targets::new();
    let mut named = false;
    match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => match spec.parse::<Targets>() {
            Ok(targets) => {
                named = verbose == 0 && targets.iter().any(|(target, _)| target == crate_name);
                // `RUST_LOG=debug` turns everything up, this crate included.
                ours = ours.max(targets.default_level().unwrap_or(LevelFilter::OFF));
                filter = targets;
            }
            Err(e) => eprintln!("wecom-allowlist: warning: RUST_LOG ignored: {e}"),
        },
        _ => {}
    }
    if !logs {
        return;
    }
    if !named {
        filter = filter.with_target(crate_name, ours);
    }
    let logs = tracing_subscriber::fmt::layer().with_writer(|| fetch::ScrubbedStderr);
    // Fails only if a subscriber (or a `log` logger) is set already, and then logs still go
    // somewhere.
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(filter)
        .try_init();
}

/// The name the binary is installed as, which completions and the man page use.
const BIN: &str = "wecom-allowlist";

/// The variable that names the config file when --config doesn't.
const CONFIG_ENV: &str = "WECOM_ALLOWLIST_CONFIG";

/// The binary's whole `main`.
pub fn main() -> ExitCode {
    // An empty variable counts as unset, as for the credentials (CI passes an undefined
    // secret or variable as ""); clap would call it a missing value. Nothing else runs yet.
    if std::env::var_os(CONFIG_ENV).is_some_and(|v| v.is_empty()) {
        std::env::remove_var(CONFIG_ENV);
    }
    let cli = match parse(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    init_logging(cli.log.verbose, cli.logs());
    match run(cli) {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Changed) => ExitCode::from(1),
        Err(e) => {
            eprintln!("wecom-allowlist: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// The command line, as `Cli::try_parse_from` reads it. Building every command's options costs
/// more than running a small one, so a command line that starts with a command's name is
/// first parsed by a tree that has only that command (with the same options); anything it
/// refuses, help and usage errors included, is parsed again by the whole tree, whose messages
/// list every command.
pub fn parse(args: Vec<std::ffi::OsString>) -> std::result::Result<Cli, clap::Error> {
    if let Some(cli) = parse_one(&args) {
        return Ok(cli);
    }
    Cli::try_parse_from(args)
}

/// `args` parsed by a tree of the top command's options and the one command `args[1]` names;
/// `None` for another first word, or anything that tree refuses.
fn parse_one(args: &[std::ffi::OsString]) -> Option<Cli> {
    use clap::Command as C;
    use clap::FromArgMatches;
    let sub = match args.get(1)?.to_str()? {
        "render" => RenderArgs::augment_args(C::new("render")),
        "build" => BuildArgs::augment_args(C::new("build")),
        "diff" => DiffArgs::augment_args(C::new("diff")),
        "fetch" => FetchCommandArgs::augment_args(C::new("fetch")),
        "completions" => CompletionsArgs::augment_args(C::new("completions")),
        "explain" => ExplainArgs::augment_args(C::new("explain")),
        "targets" => C::new("targets"),
        "man" => C::new("man"),
        _ => return None,
    };
    let top = LogArgs::augment_args(C::new(BIN)).subcommand(sub);
    let mut matches = top.try_get_matches_from(args).ok()?;
    Cli::from_arg_matches_mut(&mut matches).ok()
}

/// Clap's own output: help and version as clap prints them, and its errors with the same
/// `wecom-allowlist: error:` prefix as the tool's, so scripts and people match one form.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
    }
    // Plain text (no colours): `render()`'s Display drops the styling.
    let text = e.render().to_string();
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    eprint!("{BIN}: error: {text}");
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Command lines of every command: valid ones, and ones clap refuses or answers with help.
    fn command_lines() -> Vec<Vec<&'static str>> {
        let seed = "tests/fixtures/seed.json";
        let lines: &[&[&str]] = &[
            &["render", "nftables", "--input", seed],
            &[
                "render",
                "-v",
                "nftables",
                "-i",
                seed,
                "--nft-counter",
                "-vv",
            ],
            &[
                "render",
                "squid",
                "--squid-clients",
                "10.0.0.0/8,fd00::/8",
                "-o",
                "x",
            ],
            &[
                "render",
                "iptables",
                "--list",
                "callback",
                "--callback-port",
                "8443,443",
            ],
            &[
                "render",
                "nftables",
                "--input",
                seed,
                "--dump-context",
                "--config",
                "c.toml",
            ],
            &[
                "render",
                "pfsense",
                "--pfsense-source",
                "lan",
                "--interface",
                "opt1",
            ],
            &[
                "render",
                "nftables",
                "--timeout",
                "5",
                "--api-base",
                "http://x",
                "--corp-id",
                "i",
            ],
            &[
                "build",
                "--out-dir",
                "o",
                "--target",
                "squid,nftables",
                "--target",
                "ipset",
            ],
            &[
                "build",
                "-i",
                "-",
                "--out-dir",
                "o",
                "--check",
                "--max-shrink",
                "100",
                "-q",
            ],
            &[
                "explain",
                "1.2.3.4:443/tcp",
                "--input",
                seed,
                "--target",
                "squid",
            ],
            &[
                "explain",
                "*.example.com",
                "--exact-domains",
                "--allow-broad",
            ],
            &["diff", "a.json", "b.json", "--format", "json"],
            &[
                "fetch",
                "--list",
                "api",
                "-o",
                "f.json",
                "--token-cache",
                "t",
            ],
            &["completions", "zsh"],
            &["targets"],
            &["man"],
            &["render"],
            &["render", "nft"],
            &["render", "nftables", "--bogus"],
            &["render", "nftables", "--timeout", "0"],
            &["render", "--help"],
            &["build"],
            &["build", "-h"],
            &["explain", "bad::"],
            &["diff", "a.json"],
            &["targets", "extra"],
            &["man", "--version"],
            &["completions", "tcsh"],
            &["fetch", "--corp-secret-file"],
            &["-v", "render", "nftables"],
            &["help", "render"],
            &["rendr"],
            &["--version"],
            &[],
        ];
        lines.iter().map(|l| l.to_vec()).collect()
    }

    /// The tree of one command reads every command line it accepts as the whole tree does, and
    /// accepts every valid line that starts with a command's name.
    #[test]
    fn one_command_parses_as_the_whole_tree() {
        let mut fast = std::collections::BTreeSet::new();
        for line in command_lines() {
            let args: Vec<std::ffi::OsString> = std::iter::once(BIN)
                .chain(line.clone())
                .map(Into::into)
                .collect();
            let whole = Cli::try_parse_from(&args);
            match (parse_one(&args), &whole) {
                (Some(one), Ok(whole)) => {
                    assert_eq!(format!("{one:?}"), format!("{whole:?}"), "{line:?}");
                    fast.insert(line[0]);
                }
                (Some(one), Err(e)) => panic!("{line:?}: {one:?}, but the whole tree says {e}"),
                (None, Ok(_)) if line[0] != "-v" => panic!("{line:?} is parsed twice"),
                (None, _) => {}
            }
        }
        let mut all: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .collect();
        all.sort();
        assert_eq!(fast.into_iter().collect::<Vec<_>>(), all);
    }
}
