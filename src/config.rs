//! The optional TOML config file: names and placement per target, filters, extra and excluded
//! destinations. Every key is checked: an unknown key is an error that names it, since a typo
//! must not silently change a firewall.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::endpoint::ListName;
use crate::error::{Error, Result};
use crate::model::{Dest, Family, Hostname, ListKind, PortSet, Protocol};
use crate::normalize::{Exclude, Options};
use crate::render::{DnsSets, DnsmasqSettings, Names, PfSource, RuleOptions};
use crate::text::quote;
use crate::wecom::{self, Response};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    iptables: IptablesSection,
    #[serde(default)]
    nftables: NftablesSection,
    #[serde(default)]
    pfsense: PfsenseSection,
    #[serde(default)]
    squid: SquidSection,
    #[serde(default)]
    dnsmasq: DnsmasqSection,
    #[serde(default)]
    filters: FiltersSection,
    #[serde(default)]
    extra: ExtraSection,
    #[serde(default)]
    exclude: ExcludeSection,
    #[serde(default)]
    list: ListSection,
    #[serde(default)]
    api: ApiSection,
    #[serde(default)]
    callback: CallbackSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListSection {
    name: Option<ListName>,
}

/// The api list's own names: its rules sit beside the server list's, never over them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiSection {
    chain: Option<String>,
    nft_chain: Option<String>,
    interface: Option<String>,
    alias_prefix: Option<String>,
    acl_prefix: Option<String>,
}

/// The callback list's own names and the callback URL's port(s).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallbackSection {
    ports: Option<Vec<serde_json::Value>>,
    chain: Option<String>,
    nft_chain: Option<String>,
    interface: Option<String>,
    alias_prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IptablesSection {
    chain: Option<String>,
    ipset: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NftablesSection {
    family: Option<String>,
    table: Option<String>,
    chain: Option<String>,
    counter: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PfsenseSection {
    interface: Option<String>,
    alias_prefix: Option<String>,
    tracker_base: Option<u64>,
    source: Option<String>,
    log: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SquidSection {
    acl_prefix: Option<String>,
    /// Source networks each `http_access allow` line is restricted to.
    clients: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DnsmasqSection {
    sets: Option<DnsSets>,
    timeout: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FiltersSection {
    #[serde(default)]
    necessary_only: bool,
    #[serde(default)]
    exact_domains: bool,
    #[serde(default)]
    protocols: Vec<Protocol>,
    #[serde(default)]
    families: Vec<Family>,
}

/// Entries in the API's own shape, validated by the same parser as the response.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtraSection {
    #[serde(default)]
    ip_list: Vec<serde_json::Value>,
    #[serde(default)]
    domain_list: Vec<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExcludeSection {
    /// `name.example.com` takes out that name; `*.example.com` the name and all below it.
    #[serde(default)]
    domains: Vec<String>,
    #[serde(default)]
    cidrs: Vec<String>,
}

/// Everything a config file sets, merged over the defaults.
#[derive(Debug, Clone)]
pub struct Config {
    pub names: Names,
    /// Which sets dnsmasq.conf fills, and their timeout.
    pub dnsmasq: DnsmasqSettings,
    /// Statements every rule carries (counters, logging).
    pub rules: RuleOptions,
    pub options: Options,
    /// Validated `extra` entries, to add to the response's.
    pub extra: Response,
    /// `[list] name`: which list, unless `--list` says.
    pub list: Option<ListName>,
    /// The names each list's files use: the server list's come from the target sections,
    /// the others' from `[api]` and `[callback]`, so that no list's chain replaces another's.
    pub list_names: BTreeMap<ListName, Names>,
    /// `[callback] ports`: where the callback URL listens (default 443).
    pub callback_ports: PortSet,
}

impl Default for Config {
    fn default() -> Self {
        // What an empty file gives, without reading TOML: every section has its default.
        Config::from_file(File::default())
            .unwrap_or_else(|e| unreachable!("the empty config is valid: {e}"))
    }
}

impl Config {
    /// The names `list`'s files use.
    pub fn names_for(&self, list: ListName) -> &Names {
        self.list_names.get(&list).unwrap_or(&self.names)
    }

    pub fn names_for_mut(&mut self, list: ListName) -> &mut Names {
        if !self.list_names.contains_key(&list) {
            self.list_names.insert(list, self.names.clone());
        }
        self.list_names
            .get_mut(&list)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text).map_err(|e| match e {
            Error::Config(msg) => Error::Config(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Config> {
        Config::from_file(toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?)
    }

    fn from_file(file: File) -> Result<Config> {
        let mut names = Names::default();
        let set = |slot: &mut String, value: Option<String>| {
            if let Some(v) = value {
                *slot = v;
            }
        };
        set(&mut names.iptables_chain, file.iptables.chain);
        set(&mut names.nft_family, file.nftables.family);
        set(&mut names.nft_table, file.nftables.table);
        set(&mut names.nft_chain, file.nftables.chain);
        set(&mut names.pfsense_interface, file.pfsense.interface);
        set(&mut names.pfsense_alias_prefix, file.pfsense.alias_prefix);
        set(&mut names.squid_acl_prefix, file.squid.acl_prefix);
        if let Some(clients) = &file.squid.clients {
            if clients.is_empty() {
                return Err(Error::Config(
                    "squid.clients is empty: list the source networks the allow lines serve, \
                     or leave the key out to serve every source"
                        .into(),
                ));
            }
            names.squid_clients =
                crate::render::squid_clients(&each("squid.clients", clients, wecom::parse_ip)?);
        }
        if let Some(base) = file.pfsense.tracker_base {
            names.pfsense_tracker_base = base;
        }
        names.validate()?;
        let mut dnsmasq = DnsmasqSettings::default();
        if let Some(sets) = file.dnsmasq.sets {
            dnsmasq.sets = sets;
        }
        if let Some(timeout) = file.dnsmasq.timeout {
            dnsmasq.timeout = timeout;
        }
        dnsmasq.validate()?;
        let rules = RuleOptions {
            nft_counter: file.nftables.counter.unwrap_or(false),
            pfsense_log: file.pfsense.log.unwrap_or(false),
            pfsense_source: match &file.pfsense.source {
                Some(raw) => PfSource::parse(raw)?,
                None => PfSource::default(),
            },
            ipset: file.iptables.ipset.unwrap_or(false),
        };

        let mut extra = Response::default();
        let in_config = |e: Error| match e {
            Error::Input(msg) => Error::Config(msg),
            other => other,
        };
        wecom::parse_list(
            ListKind::Domain,
            true,
            &file.extra.domain_list,
            false,
            &mut extra,
        )
        .map_err(in_config)?;
        wecom::parse_list(ListKind::Ip, true, &file.extra.ip_list, false, &mut extra)
            .map_err(in_config)?;

        let exclude = Exclude {
            names: each("exclude.domains", &file.exclude.domains, exclude_name)?,
            nets: each("exclude.cidrs", &file.exclude.cidrs, wecom::parse_ip)?,
        };
        let mut list_names = BTreeMap::new();
        let mut api = names.clone();
        api.iptables_chain = file.api.chain.unwrap_or_else(|| "WECOM_API".into());
        api.nft_chain = file.api.nft_chain.unwrap_or_else(|| "wecom_api".into());
        set(&mut api.pfsense_interface, file.api.interface);
        api.pfsense_alias_prefix = file.api.alias_prefix.unwrap_or_else(|| "WCAPI_".into());
        api.squid_acl_prefix = file.api.acl_prefix.unwrap_or_else(|| "wecom_api_".into());
        api.validate().map_err(in_section("api"))?;
        list_names.insert(ListName::Api, api);
        let mut callback = names.clone();
        callback.iptables_chain = file
            .callback
            .chain
            .unwrap_or_else(|| "WECOM_CALLBACK".into());
        callback.nft_chain = file
            .callback
            .nft_chain
            .unwrap_or_else(|| "wecom_callback".into());
        callback.pfsense_interface = file.callback.interface.unwrap_or_else(|| "wan".into());
        callback.pfsense_alias_prefix =
            file.callback.alias_prefix.unwrap_or_else(|| "WCCB_".into());
        callback.validate().map_err(in_section("callback"))?;
        list_names.insert(ListName::Callback, callback);
        let callback_ports = match &file.callback.ports {
            None => wecom::api_ports(),
            Some(ports) => wecom::parse_ports(&serde_json::Value::Array(ports.clone()))
                .map_err(|why| Error::Config(format!("callback.ports: {why}")))?,
        };
        Ok(Config {
            list: file.list.name,
            list_names,
            callback_ports,
            names,
            dnsmasq,
            rules,
            options: Options {
                necessary_only: file.filters.necessary_only,
                exact_domains: file.filters.exact_domains,
                protocols: file.filters.protocols,
                families: file.filters.families,
                exclude,
                ..Options::default()
            },
            extra,
        })
    }
}

/// Names a section in a name's error: `[api]: invalid option: iptables chain ...`.
fn in_section(section: &'static str) -> impl Fn(Error) -> Error {
    move |e| Error::Config(format!("[{section}]: {e}"))
}

/// Parses every value of a list, naming the first bad one: `exclude.cidrs[2]: "x" is not ...`.
fn each<T, E: std::fmt::Display>(
    what: &str,
    values: &[String],
    parse: impl Fn(&str) -> Result<T, E>,
) -> Result<Vec<T>> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            parse(v).map_err(|why| Error::Config(format!("{what}[{i}]: {} {why}", quote(v))))
        })
        .collect()
}

fn exclude_name(raw: &str) -> Result<Dest, &'static str> {
    match raw.strip_prefix("*.").or_else(|| raw.strip_prefix('.')) {
        Some(rest) => Hostname::parse(rest).map(Dest::Wildcard),
        None => Hostname::parse(raw).map(Dest::Exact),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_config_is_read() {
        let c = Config::parse(
            r#"
            [iptables]
            chain = "EGRESS_WECOM"
            [nftables]
            family = "inet"
            table = "fw"
            chain = "wecom"
            counter = true
            [pfsense]
            interface = "opt1"
            alias_prefix = "WC_"
            tracker_base = 100000
            source = "10.0.0.0/8"
            log = true
            [squid]
            acl_prefix = "wc_"
            [filters]
            necessary_only = true
            protocols = ["tcp"]
            families = ["ipv4", "dns"]
            [[extra.ip_list]]
            ip = "203.0.113.0/24"
            protocol = "TCP"
            port = [443]
            is_necessary = 1
            description = "from WeCom's static list"
            [exclude]
            domains = ["*.example.com", "a.example.org"]
            cidrs = ["10.0.0.0/8", "192.0.2.1"]
            "#,
        )
        .unwrap();
        assert_eq!(c.names.iptables_chain, "EGRESS_WECOM");
        assert_eq!(c.names.pfsense_tracker_base, 100_000);
        assert!(c.rules.nft_counter);
        assert!(c.rules.pfsense_log);
        assert_eq!(
            (
                c.rules.pfsense_source.kind,
                c.rules.pfsense_source.value.as_str()
            ),
            ("address", "10.0.0.0/8")
        );
        assert!(!Config::parse("").unwrap().rules.nft_counter);
        assert!(
            Config::parse("[iptables]\nipset = true")
                .unwrap()
                .rules
                .ipset
        );
        assert!(!Config::parse("").unwrap().rules.ipset);
        assert!(c.options.necessary_only);
        assert_eq!(c.options.protocols, [Protocol::Tcp]);
        assert_eq!(c.options.families, [Family::Ipv4, Family::Dns]);
        assert_eq!(c.extra.entries.len(), 1);
        assert!(c.extra.entries[0].extra);
        assert_eq!(c.options.exclude.names.len(), 2);
        assert_eq!(c.options.exclude.nets[1].to_string(), "192.0.2.1/32");
    }

    /// `text` is refused as invalid config (exit 2), with `needle` in the message.
    fn refused(text: &str, needle: &str) {
        let e = Config::parse(text).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{text}");
        assert!(e.to_string().contains(needle), "{text}: {e}");
    }

    #[test]
    fn typos_and_bad_values_are_named() {
        for (text, needle) in [
            ("[iptables]\nchian = \"X\"", "chian"),
            ("[filter]\nnecessary_only = true", "filter"),
            ("[filters]\nprotocols = [\"icmp\"]", "icmp"),
            ("[filters]\nfamilies = [\"ipv5\"]", "ipv5"),
            ("[iptables]\nchain = \"OUTPUT\"", "OUTPUT"),
            ("[nftables]\nfamily = \"bridge\"", "bridge"),
            ("[nftables]\ncounter = \"yes\"", "counter"),
            ("[pfsense]\nsource = \"10.0.0.1/8\"", "10.0.0.1/8"),
            ("[pfsense]\nlog = 1", "log"),
            ("[pfsense]\nalias_prefix = \"pkg_\"", "pkg_"),
            ("[[extra.ip_list]]\nip = \"1.2.3.4\"\nprotocol = \"TCP\"\nport = [0]\nis_necessary = 1", "extra.ip_list[0].port"),
            ("[[extra.ip_list]]\nip = \"1.2.3.4\"\nprotocol = \"TCP\"\nport = [1]\nis_necessary = 1\ndescripton = \"x\"", "extra.ip_list[0]: unknown key \"descripton\""),
            ("[[extra.domain_list]]\ndomain = \"a.example.com\"\nuniversal_domian = \"example.com\"\nuniversal_domain = \"a.example.com\"\nprotocol = \"TCP\"\nport = [1]\nis_necessary = 1", "extra.domain_list[0].universal_domain"),
            ("[exclude]\ncidrs = [\"10.0.0.1/8\"]", "exclude.cidrs[0]"),
            ("[exclude]\ncidrs = [\"10.0.0.0/08\"]", "exclude.cidrs[0]"),
            ("[iptables]\nchain = \"A\"\nchain = \"B\"", "duplicate key"),
            ("[filters]\nnecessary_only = true\n[filters]\nexact_domains = true", "filters"),
            ("[[extra.ip_list]]\nip = \"1.2.3.4\"\nip = \"5.6.7.8\"\nprotocol = \"TCP\"\nport = [1]\nis_necessary = 1", "duplicate key"),
            ("[exclude]\ndomains = [\"com\"]", "exclude.domains[0]"),
        ] {
            refused(text, needle);
        }
    }

    /// The defaults, made without reading TOML, are what an empty file gives.
    #[test]
    fn the_default_config_is_the_empty_file() {
        let empty = Config::parse("").unwrap();
        assert_eq!(format!("{:?}", Config::default()), format!("{empty:?}"));
    }

    #[test]
    fn the_dnsmasq_section_is_read_and_checked() {
        let c = Config::parse("[dnsmasq]\nsets = \"ipset\"\ntimeout = 600").unwrap();
        assert_eq!(c.dnsmasq.sets, DnsSets::Ipset);
        assert_eq!(c.dnsmasq.timeout, 600);
        let d = Config::parse("").unwrap();
        assert_eq!((d.dnsmasq.sets, d.dnsmasq.timeout), (DnsSets::Nftset, 3600));
        for (text, needle) in [
            ("[dnsmasq]\nsets = \"iptables\"", "iptables"),
            ("[dnsmasq]\ntimeout = 0", "dnsmasq timeout 0"),
            ("[dnsmasq]\ntimeout = 604801", "dnsmasq timeout 604801"),
            ("[dnsmasq]\ntimout = 60", "timout"),
        ] {
            refused(text, needle);
        }
    }

    #[test]
    fn extra_entries_take_either_spelling_of_universal_domain() {
        let c = Config::parse(
            "[[extra.domain_list]]\ndomain = \"a.work.example.com\"\nuniversal_domain = \"work.example.com\"\nprotocol = \"TCP\"\nport = [443]\nis_necessary = 1",
        )
        .unwrap();
        assert_eq!(
            c.extra.entries[0].universal.as_ref().map(|h| h.as_str()),
            Some("work.example.com")
        );
    }
}
