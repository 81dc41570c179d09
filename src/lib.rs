//! wecom-allowlist: WeCom's published server list, validated and turned into firewall allowlists.
//!
//! The pipeline, one module a stage: `fetch` (the live API, when no saved response is given) ->
//! `wecom` (parse and validate a response) -> `normalize` (filter, group, aggregate) -> `render`
//! (templates per `target`) -> `output` (atomic files, `--check`). `config` holds the user's
//! choices, `list` and `diff` the normalized list that ties a build folder to its source and
//! shows what changed.

pub mod cli;
pub mod config;
pub mod diff;
pub mod error;
pub mod explain;
pub mod fetch;
pub mod list;
pub mod lists;
pub mod model;
pub mod normalize;
pub mod output;
pub mod render;
pub mod special;
pub mod target;
pub mod text;
pub mod wecom;

pub use error::{Error, Result};
pub use target::Target;

use config::Config;
use list::List;
use model::{Entry, Family};
use normalize::Policy;
use render::{Settings, Templates};

/// A validated, filtered list, ready to render into any target. Nothing is written here, so a
/// caller can refuse to write anything when any target fails.
pub struct Prepared {
    entries: Vec<Entry>,
    options: normalize::Options,
    pub list: List,
    /// `source.json`, whose digest every file's header carries.
    pub source_json: String,
    settings: Settings,
    /// Config exclusions that match no entry of the list (or its extras): likely typos.
    pub unused_exclusions: Vec<model::Dest>,
}

/// Merges the config's extra entries into the response's, applies filters, exclusions and the
/// whole-list guards.
pub fn prepare(response: wecom::Response, config: &Config) -> Result<Prepared> {
    let mut entries = response.entries;
    entries.extend(config.extra.entries.iter().cloned());
    let unused_exclusions = normalize::unused_exclusions(&entries, &config.options.exclude);
    let entries = normalize::select(entries, &config.options)?;
    let list = List::from_entries(&entries);
    let source_json = list.to_json();
    let settings = Settings {
        names: config.names.clone(),
        necessary_only: config.options.necessary_only,
        exact_domains: config.options.exact_domains,
        digest: list::digest(&source_json),
        dnsmasq: config.dnsmasq.clone(),
        rules: config.rules.clone(),
    };
    Ok(Prepared {
        entries,
        options: config.options.clone(),
        list,
        source_json,
        settings,
        unused_exclusions,
    })
}

impl Prepared {
    /// The policy for one target; refuses an nftables table family that can't hold the list.
    pub fn policy(&self, target: Target) -> Result<Policy> {
        let policy = normalize::normalize(&self.entries, &self.options, target.wildcards())?;
        if target == Target::Nftables {
            let family = self.settings.names.nft_family.as_str();
            let clash = policy.groups.iter().find(|g| {
                (family == "ip" && g.family == Family::Ipv6)
                    || (family == "ip6" && g.family == Family::Ipv4)
            });
            if let Some(g) = clash {
                return Err(Error::Option(format!(
                    "the nftables table family {family} can't hold the list's {} destinations: use family inet, or filter the families",
                    if g.family == Family::Ipv6 { "IPv6" } else { "IPv4" }
                )));
            }
        }
        Ok(policy)
    }

    pub fn render(&self, target: Target, templates: &Templates) -> Result<String> {
        templates.render(target, &self.policy(target)?, &self.settings)
    }

    /// Renders a policy that `policy(target)` made: `build` makes every target's policy, with
    /// the guards they hold, before it renders any.
    pub fn render_policy(
        &self,
        target: Target,
        policy: &Policy,
        templates: &Templates,
    ) -> Result<String> {
        templates.render(target, policy, &self.settings)
    }

    /// The files of `lists/` (name, bytes), the index last. Names are matched with their
    /// subdomains where a wildcard says so, as Squid does, so a name a wildcard covers is
    /// left out.
    pub fn lists(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let policy = normalize::normalize(&self.entries, &self.options, true)?;
        let slugs = render::group_slugs(&policy.groups);
        Ok(lists::render(&policy, &slugs, &self.settings.digest))
    }

    /// Whether each of `targets` allows what `query` asks, from the policy each renders.
    pub fn explain(
        &self,
        query: &explain::Query,
        targets: &[Target],
    ) -> Result<Vec<explain::Answer>> {
        let cx = explain::Context {
            entries: &self.entries,
            exact_domains: self.options.exact_domains,
            dns_sets: self.settings.dnsmasq.sets,
        };
        targets
            .iter()
            .map(|&t| {
                let policy = self.policy(t)?;
                let slugs = render::group_slugs(&policy.groups);
                Ok(explain::explain(t, &policy, &slugs, query, &cx))
            })
            .collect()
    }

    /// What `target`'s template receives, as JSON, for writing custom templates.
    pub fn context_json(&self, target: Target) -> Result<String> {
        render::context_json(target, &self.policy(target)?, &self.settings)
    }
}
