//! The command line: clap definitions, then a `run` that calls the library and maps its errors
//! to exit codes (see `Error::exit_code`, documented in README.md).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand};

use crate::error::{Error, Result};
use crate::fetch;
use crate::normalize::Options;
use crate::output::{read_input, write_file, write_files};
use crate::render::{Names, Settings};
use crate::target::Target;
use crate::wecom;

#[derive(Debug, Parser)]
#[command(name = "wecom-allowlist", version, about, long_about = None)]
#[command(
    after_help = "Exit codes: 0 success; 2 invalid input or usage; 3 a WeCom API error, a network \
error or missing credentials; 4 a safety guard refused; 70 an internal template error (a bug)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log on standard error: -v what the fetch does, -vv every request. RUST_LOG (e.g.
    /// `hyper_util=debug`) sets the levels of other crates. Secrets are never logged.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Render one target to standard output or to a file.
    Render {
        /// The target to render (see `wecom-allowlist targets`).
        #[arg(value_enum)]
        target: Target,
        #[command(flatten)]
        source: SourceArgs,
        /// Write to FILE atomically instead of standard output; on any error FILE is left as it was.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Render every target (or those named) into a folder; on any error no file there changes.
    Build {
        #[command(flatten)]
        source: SourceArgs,
        /// The folder to write iptables.rules, ip6tables.rules, nftables.nft, pfsense.xml and
        /// squid.conf into (created if missing).
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
        /// Only these targets (repeat the option for several). Default: all.
        #[arg(long = "target", value_enum, value_name = "TARGET")]
        targets: Vec<Target>,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// List the targets, each with its file name and what it holds.
    Targets,
    /// Fetch the list from the WeCom API, check it as `render` would, and save it as received
    /// (pretty JSON); an invalid or error answer is never saved.
    Fetch {
        #[command(flatten)]
        fetch: FetchArgs,
        /// Write to FILE atomically instead of standard output; on any error FILE is left as it was.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct SourceArgs {
    /// A saved get_server_domain_ip response (JSON, exactly as the API returns it); `-` reads
    /// standard input. Without it the list is fetched live (see the fetch options).
    #[arg(short, long, value_name = "FILE|-")]
    pub input: Option<PathBuf>,
    /// Drop invalid entries with a warning each on standard error, instead of failing.
    #[arg(long)]
    pub skip_invalid: bool,
    #[command(flatten)]
    pub fetch: FetchArgs,
}

const FETCH_HEADING: &str = "Fetching live (fetch; render and build without --input)";

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
}

impl FetchArgs {
    /// Checks everything, credentials included, before any request is sent.
    fn config(&self) -> Result<fetch::Config> {
        Ok(fetch::Config {
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

#[derive(Debug, Args)]
pub struct PolicyArgs {
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
    /// iptables/ip6tables: the chain that holds the rules (never a built-in chain).
    #[arg(long, value_name = "NAME", default_value = "WECOM_ALLOW")]
    pub chain: String,
    /// nftables: the inet table that holds the chain and the sets; your own chain that jumps
    /// to the allowlist must be in the same table.
    #[arg(long, value_name = "NAME", default_value = "filter")]
    pub nft_table: String,
    /// nftables: the regular chain that holds the rules.
    #[arg(long, value_name = "NAME", default_value = "wecom_allow")]
    pub nft_chain: String,
    /// pfSense: the interface the pass rules go on (internal name: lan, opt1 ...).
    #[arg(long, value_name = "NAME", default_value = "lan")]
    pub interface: String,
}

impl PolicyArgs {
    fn options(&self) -> Options {
        Options {
            necessary_only: self.necessary_only,
            exact_domains: self.exact_domains,
            allow_empty: self.allow_empty,
            allow_broad: self.allow_broad,
        }
    }

    fn settings(&self) -> Settings {
        Settings {
            names: Names {
                iptables_chain: self.chain.clone(),
                nft_table: self.nft_table.clone(),
                nft_chain: self.nft_chain.clone(),
                pfsense_interface: self.interface.clone(),
                ..Names::default()
            },
            necessary_only: self.necessary_only,
            exact_domains: self.exact_domains,
        }
    }
}

/// The list's JSON document from the API. The async runtime is built here, only when a fetch
/// is needed: runs from a file never start one.
fn fetch_live(args: &FetchArgs) -> Result<serde_json::Value> {
    let config = args.config()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Fetch(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(fetch::fetch(&config))
}

fn load(source: &SourceArgs) -> Result<wecom::Response> {
    let response = match &source.input {
        Some(path) => wecom::parse(&read_input(path)?, source.skip_invalid)?,
        None => wecom::validate(&fetch_live(&source.fetch)?, source.skip_invalid)?,
    };
    for skipped in &response.skipped {
        eprintln!("wecom-allowlist: warning: skipped {skipped}");
    }
    Ok(response)
}

/// Standard output that treats a closed pipe (`| head`) as success.
fn print(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::Write {
            path: "<stdout>".into(),
            source: e,
        }),
        _ => Ok(()),
    }
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Targets => {
            let text: String = Target::ALL
                .iter()
                .map(|t| format!("{:<10} {:<16} {}\n", t.name(), t.file_name(), t.summary()))
                .collect();
            print(&text)
        }
        Command::Fetch { fetch, output } => {
            let doc = fetch_live(&fetch)?;
            wecom::validate(&doc, false)?;
            // serde_json keeps the key order (preserve_order): the file reads as WeCom sent it.
            let mut text = serde_json::to_string_pretty(&doc)
                .map_err(|e| Error::Input(format!("cannot write the answer as JSON: {e}")))?;
            text.push('\n');
            match output {
                Some(path) => write_file(&path, text.as_bytes()),
                None => print(&text),
            }
        }
        Command::Render {
            target,
            source,
            output,
            policy,
        } => {
            let response = load(&source)?;
            let mut files =
                crate::generate(&response, &[target], &policy.options(), &policy.settings())?;
            let (_, text) = files
                .pop()
                .ok_or_else(|| Error::Option("no target".into()))?;
            match output {
                Some(path) => write_file(&path, text.as_bytes()),
                None => print(&text),
            }
        }
        Command::Build {
            source,
            out_dir,
            mut targets,
            policy,
        } => {
            let response = load(&source)?;
            if targets.is_empty() {
                targets = Target::ALL.to_vec();
            }
            targets.sort_unstable();
            targets.dedup();
            let files =
                crate::generate(&response, &targets, &policy.options(), &policy.settings())?;
            std::fs::create_dir_all(&out_dir).map_err(|source| Error::Write {
                path: out_dir.clone(),
                source,
            })?;
            let files: Vec<(PathBuf, Vec<u8>)> = files
                .into_iter()
                .map(|(t, text)| (out_dir.join(t.file_name()), text.into_bytes()))
                .collect();
            write_files(&files)
        }
    }
}

/// Logs go to standard error only, so standard output stays the result. Without RUST_LOG and
/// -v only this crate's warnings show (retries, an unusable token cache).
fn init_logging(verbose: u8) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;

    let ours = match verbose {
        0 => LevelFilter::WARN,
        1 => LevelFilter::INFO,
        _ => LevelFilter::TRACE,
    };
    let crate_name = env!("CARGO_CRATE_NAME");
    let mut filter = Targets::new().with_target(crate_name, ours);
    match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => match spec.parse::<Targets>() {
            Ok(targets) if verbose > 0 => filter = targets.with_target(crate_name, ours),
            Ok(targets) => filter = targets,
            Err(e) => eprintln!("wecom-allowlist: warning: RUST_LOG ignored: {e}"),
        },
        _ => {}
    }
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    // Fails only if a subscriber is set already, and then logs still go somewhere.
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(filter)
        .try_init();
}

/// The binary's whole `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wecom-allowlist: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
