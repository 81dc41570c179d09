//! The command line: clap definitions, then a `run` that calls the library and maps its errors
//! to exit codes (see `Error::exit_code`, documented in README.md).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::error::{Error, Result};
use crate::normalize::Options;
use crate::output::{read_input, write_file, write_files};
use crate::render::{Names, Settings};
use crate::target::Target;
use crate::wecom;

#[derive(Debug, Parser)]
#[command(name = "wecom-allowlist", version, about, long_about = None)]
#[command(
    after_help = "Exit codes: 0 success; 2 invalid input or usage; 3 the response carries a \
WeCom error; 4 a safety guard refused; 70 an internal template error (a bug)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
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
}

#[derive(Debug, Args)]
pub struct SourceArgs {
    /// A saved get_server_domain_ip response (JSON, exactly as the API returns it); `-` reads
    /// standard input.
    #[arg(short, long, value_name = "FILE|-")]
    pub input: PathBuf,
    /// Drop invalid entries with a warning each on standard error, instead of failing.
    #[arg(long)]
    pub skip_invalid: bool,
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

fn load(source: &SourceArgs) -> Result<wecom::Response> {
    let response = wecom::parse(&read_input(&source.input)?, source.skip_invalid)?;
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

/// The binary's whole `main`.
pub fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wecom-allowlist: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
