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
pub mod endpoint;
pub mod errcode;
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

use std::io::Write;
use std::sync::OnceLock;

use config::Config;
use endpoint::ListName;
use list::List;
use model::{Entry, Family};
use normalize::Policy;
use render::{Settings, Templates};

/// A validated, filtered list, ready to render into any target. Nothing is written here, so a
/// caller can refuse to write anything when any target fails. It is shared by the threads
/// that render targets side by side.
pub struct Prepared {
    /// `None` once `release_entries` let them go: no policy can be made any more. Behind a
    /// lock so that `build` lets go of them on the thread that made the policies, while
    /// `source.json` is still written on the other.
    entries: std::sync::Mutex<Option<Vec<Entry>>>,
    options: normalize::Options,
    pub list: List,
    /// How the files are made, but for the digest of `source.json`, which waits for it.
    base: Settings,
    /// `base` with the digest: set when `write_source` streams `source.json`, or on first use.
    /// `source.json` itself is never held: at a million entries it is 170 MB.
    settings: OnceLock<Settings>,
    /// Config exclusions that match no entry of the list (or its extras): likely typos.
    pub unused_exclusions: Vec<model::Dest>,
    /// The policies, made on first use: a policy depends on the list and on whether the
    /// target can express wildcards, not on the target, so `build` makes at most two.
    policies: [OnceLock<Policy>; 2],
    /// No wildcard counts in the list, so both capabilities get the same policy: the first
    /// slot serves both, and it is made once.
    one_policy: bool,
}

/// Merges the config's extra entries into the response's, applies filters, exclusions and the
/// whole-list guards.
pub fn prepare(response: wecom::Response, config: &Config) -> Result<Prepared> {
    prepare_list(response, config, ListName::Server)
}

/// `prepare` for any of WeCom's lists. The config's extra entries (in the server list's
/// shape, each with its own ports) and name exclusions belong to the server list; a plain
/// list's `source.json` is its answer's shape, and its `List` (what `diff` and the shrink
/// guard compare) counts every address on TCP 443, as reading that file back does.
pub fn prepare_list(
    response: wecom::Response,
    config: &Config,
    name: ListName,
) -> Result<Prepared> {
    let mut entries = response.entries;
    let mut options = config.options.clone();
    if name == ListName::Server {
        entries.extend(config.extra.entries.iter().cloned());
    } else {
        options.exclude.names.clear();
    }
    let unused_exclusions = normalize::unused_exclusions(&entries, &options.exclude);
    let entries = normalize::select(entries, &options)?;
    let one_policy = !normalize::wildcards_matter(&entries, &options);
    // A large list that has one policy whatever the targets gets it made beside its catalog,
    // on the other core, rather than after it. An error is left for when the policy is asked
    // for, so that it is reported where it always was. A small list starts no thread: that
    // would cost more than the policy.
    let (list, early) = if one_policy && entries.len() >= EARLY_POLICY_MIN {
        side_by_side(
            || catalog(&entries, name),
            || normalize::normalize(&entries, &options, false).ok(),
        )
    } else {
        (catalog(&entries, name), None)
    };
    let base = Settings {
        names: config.names_for(name).clone(),
        necessary_only: options.necessary_only,
        exact_domains: options.exact_domains,
        digest: String::new(),
        dnsmasq: config.dnsmasq.clone(),
        rules: config.rules.clone(),
        list: name,
        callback_ports: config.callback_ports.ranges().to_vec(),
    };
    Ok(Prepared {
        entries: std::sync::Mutex::new(Some(entries)),
        options,
        list,
        base,
        settings: OnceLock::new(),
        unused_exclusions,
        policies: [
            early.map_or_else(OnceLock::new, OnceLock::from),
            OnceLock::new(),
        ],
        one_policy,
    })
}

/// From this many entries, a list's one policy is made beside its catalog (`prepare_list`).
const EARLY_POLICY_MIN: usize = 50_000;

/// The catalog of a list's entries. A plain list's counts every address on TCP 443, as
/// reading its `source.json` back does.
fn catalog(entries: &[Entry], name: ListName) -> List {
    if name == ListName::Server {
        return List::from_entries(entries);
    }
    let api_ports = wecom::api_ports();
    let canonical: Vec<Entry> = entries
        .iter()
        .map(|e| Entry {
            ports: api_ports.clone(),
            ..e.clone()
        })
        .collect();
    List::from_entries(&canonical)
}

/// How many threads can run at once here (1 when that can't be known). Asked once: the
/// answer takes a system call and reading cgroup files, and every large stage asks.
pub(crate) fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES
        .get_or_init(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get))
}

/// Runs `a` and `b` side by side (`b` on a thread of its own, if there is a core for it).
pub(crate) fn side_by_side<A, B: Send>(
    a: impl FnOnce() -> A,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    if cores() < 2 {
        return (a(), b());
    }
    std::thread::scope(|scope| {
        let b = scope.spawn(b);
        let a = a();
        match b.join() {
            Ok(b) => (a, b),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

impl Prepared {
    /// Which of WeCom's lists this is.
    pub fn list_name(&self) -> ListName {
        self.base.list
    }

    /// Streams `source.json` into `out`, and makes its digest the one every file's header
    /// cites.
    pub fn write_source(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let mut out = output::Digesting::new(out);
        self.write_source_json(&mut out)?;
        let digest = out.digest();
        self.settings.get_or_init(|| Settings {
            digest,
            ..self.base.clone()
        });
        Ok(())
    }

    fn write_source_json(&self, out: &mut dyn Write) -> std::io::Result<()> {
        match self.base.list {
            ListName::Server => self.list.write_json(out),
            name => list::write_plain_json(&self.list, name, out),
        }
    }

    /// `source.json`, whole.
    pub fn source_json(&self) -> String {
        let mut bytes = Vec::new();
        // Writing into a `Vec` can't fail; `source.json` is valid UTF-8.
        let _ = self.write_source_json(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The settings with the digest, which is made here unless `write_source` made it.
    fn settings(&self) -> &Settings {
        if let Some(settings) = self.settings.get() {
            return settings;
        }
        // Hashing into nothing can't fail.
        let _ = self.write_source(&mut std::io::sink());
        self.settings.get_or_init(|| self.base.clone())
    }

    /// `sha256:<hex>` of `source.json`.
    pub fn digest(&self) -> &str {
        &self.settings().digest
    }

    /// The policy for one target; refuses an nftables table family that can't hold the list.
    pub fn policy(&self, target: Target) -> Result<Policy> {
        self.shared_policy(target).cloned()
    }

    /// The policy for targets that can (or can't) express wildcards, made once.
    fn capability_policy(&self, wildcards: bool) -> Result<&Policy> {
        let cell = &self.policies[usize::from(wildcards && !self.one_policy)];
        if let Some(policy) = cell.get() {
            return Ok(policy);
        }
        let entries = self.entries();
        // Another thread may have made it meanwhile.
        if let Some(policy) = cell.get() {
            return Ok(policy);
        }
        let Some(entries) = entries.as_deref() else {
            return Err(Error::Option(
                "internal error: a policy was asked for after the entries were let go".into(),
            ));
        };
        let policy = normalize::normalize(entries, &self.options, wildcards)?;
        Ok(cell.get_or_init(|| policy))
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Option<Vec<Entry>>> {
        // Nothing panics halfway through a change of the entries: they are only read, or
        // taken whole.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Lets go of the entries once every policy a build needs is made (`check_policies`, and
    /// `lists`): the rendering that comes next can use their memory. `explain` and a policy
    /// not made by then need them. They are returned, for the caller to drop where it
    /// costs least.
    pub fn release_entries(&self) -> Option<Vec<Entry>> {
        self.entries().take()
    }

    /// `policy`, borrowed from the one its capability shares.
    fn shared_policy(&self, target: Target) -> Result<&Policy> {
        if let Some(why) = target.refuses(self.base.list) {
            return Err(Error::Option(format!(
                "{} doesn't apply to {}: {why}",
                target.name(),
                self.base.list.describe()
            )));
        }
        let policy = self.capability_policy(target.wildcards())?;
        if target == Target::Nftables {
            let family = self.base.names.nft_family.as_str();
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
        templates.render(target, self.shared_policy(target)?, self.settings())
    }

    /// `render` into a writer; on an error it may hold part of the file.
    pub fn render_to(
        &self,
        target: Target,
        templates: &Templates,
        out: &mut dyn Write,
    ) -> Result<()> {
        templates.render_to(target, self.shared_policy(target)?, self.settings(), out)
    }

    /// Makes every target's policy, with the guards they hold, so that `build` can refuse
    /// before it renders any.
    pub fn check_policies(&self, targets: &[Target]) -> Result<()> {
        targets
            .iter()
            .try_for_each(|&t| self.shared_policy(t).map(|_| ()))
    }

    /// Makes the policy of `lists/`; false when it can't be made (the error is `lists`'s).
    /// Unlike `lists`, it doesn't wait for the digest: a build makes the policies while
    /// `source.json`, and with it the digest, is written beside them.
    pub fn check_lists(&self) -> bool {
        self.capability_policy(true).is_ok()
    }

    /// The files of `lists/`. Names are matched with their subdomains where a wildcard says
    /// so, as Squid does, so a name a wildcard covers is left out.
    pub fn lists(&self) -> Result<lists::Files<'_>> {
        let policy = self.capability_policy(true)?;
        let slugs = render::group_slugs(&policy.groups);
        Ok(lists::Files::new(policy, slugs, self.digest()))
    }

    /// Whether each of `targets` allows what `query` asks, from the policy each renders.
    pub fn explain(
        &self,
        query: &explain::Query,
        targets: &[Target],
    ) -> Result<Vec<explain::Answer>> {
        // Every policy first: making one takes the entries' lock, which `cx` holds.
        let policies = targets
            .iter()
            .map(|&t| self.shared_policy(t))
            .collect::<Result<Vec<_>>>()?;
        let entries = self.entries();
        let cx = explain::Context {
            entries: entries.as_deref().unwrap_or_default(),
            exact_domains: self.options.exact_domains,
            dns_sets: self.base.dnsmasq.sets,
            pfsense_source_family: self.base.rules.pfsense_source.family,
        };
        Ok(targets
            .iter()
            .zip(policies)
            .map(|(&t, policy)| {
                let slugs = render::target_slugs(t, policy, &self.base);
                explain::explain(t, policy, &slugs, query, &cx)
            })
            .collect())
    }

    /// What `target`'s template receives, as JSON, for writing custom templates.
    pub fn context_json(&self, target: Target) -> Result<String> {
        render::context_json(target, self.shared_policy(target)?, self.settings())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    fn prepared(doc: &str) -> Prepared {
        let response = wecom::parse(doc.as_bytes(), false).unwrap();
        prepare(response, &Config::default()).unwrap()
    }

    /// Both capabilities share one policy when no wildcard counts, and get their own when one
    /// does.
    #[test]
    fn a_list_without_wildcards_makes_one_policy_for_both_capabilities() {
        let entry = |dest: &str| {
            format!(r#"{{{dest}, "protocol": "TCP", "port": [443], "is_necessary": 1}}"#)
        };
        let doc = |ips: &[&str], domains: &[&str]| {
            format!(
                r#"{{"errcode": 0, "ip_list": [{}], "domain_list": [{}]}}"#,
                ips.join(","),
                domains.join(",")
            )
        };
        let ip = entry(r#""ip": "101.91.0.0/24""#);
        let name = entry(r#""domain": "a.example.com""#);
        let wildcard = entry(r#""domain": "*.example.com""#);
        let universal = entry(r#""domain": "b.example.com", "universal_domian": "example.com""#);
        let cases = [
            (doc(&[&ip], &[]), true),
            (doc(&[&ip], &[&name]), true),
            (doc(&[&ip], &[&name, &wildcard]), false),
            (doc(&[], &[&name, &universal]), false),
        ];
        for (doc, shared) in cases {
            let p = prepared(&doc);
            let with = p.capability_policy(true).unwrap();
            let without = p.capability_policy(false).unwrap();
            assert_eq!(std::ptr::eq(with, without), shared, "{doc}");
            assert_eq!(with == without, shared, "{doc}");
        }
    }

    /// A large list's one policy is made beside its catalog, in the slot asking for it later
    /// reads, and is the policy asking would make.
    #[test]
    fn a_large_lists_policy_made_early_is_the_one_made_when_asked() {
        let ips: Vec<String> = (0..EARLY_POLICY_MIN)
            .map(|i| {
                format!(
                    r#"{{"ip": "101.{}.{}.{}", "protocol": "TCP", "port": [443], "is_necessary": 1}}"#,
                    i >> 16,
                    (i >> 8) & 255,
                    i & 255
                )
            })
            .collect();
        let doc = format!(r#"{{"errcode": 0, "ip_list": [{}]}}"#, ips.join(","));
        let config = Config::default();
        let read = || wecom::parse(doc.as_bytes(), false).unwrap();
        let early = prepare(read(), &config).unwrap();
        assert!(early.policies[0].get().is_some(), "not made early");
        let mut late = prepare(read(), &config).unwrap();
        late.policies = Default::default();
        assert_eq!(
            early.capability_policy(false).unwrap(),
            late.capability_policy(false).unwrap()
        );
    }

    /// `build` checks the lists' policy while `source.json` is written on another core: the
    /// check must not serialize and hash the whole list a second time for the digest.
    #[test]
    fn checking_the_lists_policy_leaves_the_digest_to_source_json() {
        let p = prepared(
            r#"{"errcode": 0, "ip_list": [{"ip": "101.91.0.0/24", "protocol": "TCP", "port": [443], "is_necessary": 1}]}"#,
        );
        assert!(p.check_lists());
        assert!(p.settings.get().is_none(), "the digest was made");
        let mut source = Vec::new();
        p.write_source(&mut source).unwrap();
        assert_eq!(
            p.digest(),
            format!("sha256:{:x}", sha2::Sha256::digest(&source)),
            "the digest is source.json's"
        );
    }

    /// A `source.json` made in many pieces, on two cores, is hashed whole: the digest is that
    /// of every byte written, in the order written, and those bytes are `source_json`'s.
    #[test]
    fn the_digest_of_a_large_source_json_is_its_bytes() {
        let rows: Vec<String> = (0..20_000u32)
            .map(|i| {
                format!(
                    r#"{{"ip": "{}", "protocol": "TCP", "port": [443], "is_necessary": 1, "description": "d{}"}}"#,
                    std::net::Ipv4Addr::from(0x6500_0000 + i * 3),
                    i / 1000
                )
            })
            .collect();
        let p = prepared(&format!(
            r#"{{"errcode": 0, "ip_list": [{}]}}"#,
            rows.join(",")
        ));
        let mut source = Vec::new();
        p.write_source(&mut source).unwrap();
        assert!(source.len() > 2_000_000, "{}", source.len());
        assert!(
            source == p.source_json().as_bytes(),
            "not the bytes of source.json"
        );
        assert_eq!(
            p.digest(),
            format!("sha256:{:x}", sha2::Sha256::digest(&source)),
            "the digest is source.json's"
        );
    }
}
