//! WeCom's answers: strict validation of every field into `model::Entry` (`errcode` words the
//! error codes). `get_server_domain_ip` answers with objects; `get_api_domain_ip`
//! and `getcallbackip` with an `ip_list` of plain strings, and a document of one list is
//! never taken for another (see `endpoint`).
//!
//! Entries are read field by field from `serde_json::Value` rather than derived with serde, so that
//! an error names the list, the entry, the field and the value, and `--skip-invalid` can drop
//! one entry while keeping the rest.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde_json::{Map, Value};

use crate::endpoint::{ListName, MARK};
use crate::error::{Error, Result};
use crate::model::{Dest, Entry, Hostname, ListKind, PortRange, PortSet, Protocol};
use crate::text::quote;

/// A response that passed validation.
#[derive(Debug, Clone, Default)]
pub struct Response {
    pub entries: Vec<Entry>,
    /// One line per entry dropped under `--skip-invalid`.
    pub skipped: Vec<String>,
}

/// Parses a saved server list. With `skip_invalid`, a bad entry is reported in `skipped` instead
/// of failing the whole input; a bad document always fails.
pub fn parse(bytes: &[u8], skip_invalid: bool) -> Result<Response> {
    validate(&parse_bytes(bytes)?, skip_invalid)
}

/// A JSON document, refusing a key that appears twice in one object anywhere in it: serde_json
/// keeps the last, so `"errcode":45009,"errcode":0` or a second, empty `"ip_list"` would
/// silently replace what a reader of the file sees first.
pub fn parse_json(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<UniqueKeys>(bytes)?;
    serde_json::from_slice(bytes)
}

/// Deserializes any JSON value and fails on a duplicate key in any object.
struct UniqueKeys;

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueKeys)
    }
}

impl<'de> serde::de::Visitor<'de> for UniqueKeys {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(UniqueKeys)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(UniqueKeys)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(UniqueKeys)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(UniqueKeys)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(UniqueKeys)
    }
    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(UniqueKeys)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!(
                    "the key {} appears twice in one object",
                    quote(&key)
                )));
            }
            map.next_value::<UniqueKeys>()?;
        }
        Ok(UniqueKeys)
    }
}

/// Validates a server list already read as JSON: a live fetch has the document in hand and
/// must pass the very checks a saved file does.
pub fn validate(doc: &Value, skip_invalid: bool) -> Result<Response> {
    validate_as(doc, ListName::Server, &api_ports(), skip_invalid)
}

/// Parses a saved answer (or `source.json`) of the list `want`; the entries of a plain list
/// get `ports` (TCP). A document of another list is refused.
pub fn parse_as(
    bytes: &[u8],
    want: ListName,
    ports: &PortSet,
    skip_invalid: bool,
) -> Result<Response> {
    validate_as(&parse_bytes(bytes)?, want, ports, skip_invalid)
}

/// A document's JSON, refusing an empty input and duplicate keys.
pub fn parse_bytes(bytes: &[u8]) -> Result<Value> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::Input("the input is empty".into()));
    }
    parse_json(bytes).map_err(|e| Error::Input(format!("not valid JSON: {e}")))
}

/// What a document says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// The shape or the mark says which list.
    Is(ListName),
    /// An `ip_list` of plain strings without a mark: the api or the callback list, whose raw
    /// answers look alike.
    Plain,
    /// Nothing tells: no domain_list, an empty ip_list, no mark.
    Any,
}

/// Reads any list: a server list, or a plain one (its entries on TCP 443 without description,
/// the same for both sides of a comparison). For `diff` and the shrink guard.
pub fn parse_any(bytes: &[u8]) -> Result<(Found, Response)> {
    let doc = parse_bytes(bytes)?;
    let top = top_object(&doc)?;
    check_errcode(top)?;
    let found = found(top)?;
    let want = match found {
        Found::Is(list) => list,
        Found::Plain => ListName::Api,
        Found::Any => ListName::Server,
    };
    let mut response = validate_as(&doc, want, &api_ports(), false)?;
    // A raw plain answer is read as the api list: the description, which names the list, must
    // not make it differ from the same addresses read as the callback list.
    if want.is_plain() {
        for entry in &mut response.entries {
            entry.description.clear();
        }
    }
    Ok((found, response))
}

/// TCP 443 alone: the api list's port, and the one plain lists are compared on.
pub fn api_ports() -> PortSet {
    PortSet::new(vec![PortRange {
        start: crate::endpoint::API_PORT,
        end: crate::endpoint::API_PORT,
    }])
    .unwrap_or_else(|| unreachable!("one port is a set"))
}

fn top_object(doc: &Value) -> Result<&Map<String, Value>> {
    match doc {
        Value::Object(top) => Ok(top),
        _ => Err(Error::Input(format!(
            "the top level must be a JSON object, found {}",
            kind(doc)
        ))),
    }
}

fn check_errcode(top: &Map<String, Value>) -> Result<()> {
    let errcode = match top.get("errcode") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_i64()
            .ok_or_else(|| Error::Input(format!("errcode: {} is not an integer", shown(v))))?,
    };
    if errcode != 0 {
        let errmsg = top.get("errmsg").and_then(Value::as_str).unwrap_or("");
        return Err(Error::Api {
            call: None,
            errcode,
            errmsg: errmsg.to_owned(),
        });
    }
    Ok(())
}

/// Which list a document holds, from its mark and its shape; they must agree.
pub fn found(top: &Map<String, Value>) -> Result<Found> {
    if !top.contains_key("domain_list") && !top.contains_key("ip_list") {
        return Err(Error::Input(
            "neither domain_list nor ip_list is present: is this a WeCom list (get_server_domain_ip, get_api_domain_ip or getcallbackip)?"
                .into(),
        ));
    }
    let mark = match top.get(MARK) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(ListName::from_name(s).ok_or_else(|| {
            Error::Input(format!(
                "{MARK}: {} is not server, api or callback",
                quote(s)
            ))
        })?),
        Some(other) => {
            return Err(Error::Input(format!(
                "{MARK}: must be a string, found {}",
                kind(other)
            )))
        }
    };
    let first_ip = top
        .get("ip_list")
        .and_then(Value::as_array)
        .and_then(|items| items.first());
    let shape = if top.get("domain_list").is_some_and(|v| !v.is_null())
        || first_ip.is_some_and(Value::is_object)
    {
        Found::Is(ListName::Server)
    } else if first_ip.is_some_and(Value::is_string) {
        Found::Plain
    } else {
        Found::Any
    };
    Ok(match (mark, shape) {
        (None, shape) => shape,
        (Some(m), Found::Any) => Found::Is(m),
        (Some(m), Found::Is(ListName::Server)) if m == ListName::Server => Found::Is(m),
        (Some(m), Found::Plain) if m.is_plain() => Found::Is(m),
        (Some(m), _) => {
            return Err(Error::Input(format!(
                "{MARK}: says {}, but the entries have the shape of {}: the file was edited or mixed up",
                m.describe(),
                if m.is_plain() {
                    "the server list (objects)"
                } else {
                    "the api or callback list (plain addresses)"
                }
            )))
        }
    })
}

/// Why `found` can't be used as `want`.
fn mixup(found: Found, want: ListName) -> Error {
    let is = match found {
        Found::Is(list) => list.describe(),
        _ => "the api or the callback list (an ip_list of plain addresses; a raw answer doesn't say which)".into(),
    };
    let advice = match found {
        Found::Is(list) => format!("pass --list {}", list.name()),
        _ => "pass --list api or --list callback, whichever call it came from".into(),
    };
    let harm = match found {
        Found::Is(list) if list.direction() != want.direction() => format!(
            ": an {} list rendered as an {} allowlist is a wrong firewall",
            list.direction().name(),
            want.direction().name()
        ),
        _ => String::new(),
    };
    Error::Input(format!(
        "the input is {is}, not {}{harm}; {advice}",
        want.describe()
    ))
}

/// Validates a document of the list `want`: a live fetch has the document in hand and must
/// pass the very checks a saved file does. The entries of a plain list get `ports` (TCP).
pub fn validate_as(
    doc: &Value,
    want: ListName,
    ports: &PortSet,
    skip_invalid: bool,
) -> Result<Response> {
    let top = top_object(doc)?;
    check_errcode(top)?;
    match found(top)? {
        Found::Is(list) if list == want => {}
        Found::Plain if want.is_plain() => {}
        Found::Any => {}
        other => return Err(mixup(other, want)),
    }
    let mut out = Response::default();
    if want.is_plain() {
        let items = match top.get("ip_list") {
            None | Some(Value::Null) => return Ok(out),
            Some(Value::Array(items)) => items,
            Some(other) => {
                return Err(Error::Input(format!(
                    "ip_list: must be a list, found {}",
                    kind(other)
                )))
            }
        };
        // Every entry of a list is alike: the description says which list, for comments.
        let description = match want {
            ListName::Api => "WeCom API (qyapi.weixin.qq.com)",
            _ => "WeCom callback",
        };
        for (index, item) in items.iter().enumerate() {
            match plain_entry(index, item, ports, description) {
                Ok(entry) => out.entries.push(entry),
                Err(msg) if skip_invalid => out.skipped.push(msg),
                Err(msg) => return Err(Error::Input(msg)),
            }
        }
        return Ok(out);
    }
    for list in [ListKind::Domain, ListKind::Ip] {
        let items = match top.get(list.as_str()) {
            None | Some(Value::Null) => continue,
            Some(Value::Array(items)) => items,
            Some(other) => {
                return Err(Error::Input(format!(
                    "{}: must be a list, found {}",
                    list.as_str(),
                    kind(other)
                )))
            }
        };
        parse_list(list, false, items, skip_invalid, &mut out)?;
    }
    Ok(out)
}

/// One address of a plain list: `ip_list[3]: "x" is not ...`. WeCom marks nothing as optional
/// there, so every entry counts as necessary.
fn plain_entry(
    index: usize,
    item: &Value,
    ports: &PortSet,
    description: &str,
) -> Result<Entry, String> {
    let location = crate::model::location(ListKind::Ip, false, index);
    let Value::String(raw) = item else {
        return Err(format!(
            "{location}: must be a string (an address or a CIDR), found {}",
            kind(item)
        ));
    };
    let net = parse_ip(raw).map_err(|w| format!("{location}: {} {w}", quote(raw)))?;
    Ok(Entry {
        list: ListKind::Ip,
        extra: false,
        index,
        dest: Dest::Net(net),
        universal: None,
        protocols: vec![Protocol::Tcp],
        ports: ports.clone(),
        necessary: true,
        description: description.to_owned(),
    })
}

/// Validates the entries of one list into `out`. `extra` marks entries that come from the
/// config file rather than the response; their messages say `extra.ip_list[0]`.
pub fn parse_list(
    list: ListKind,
    extra: bool,
    items: &[Value],
    skip_invalid: bool,
    out: &mut Response,
) -> Result<()> {
    for (index, item) in items.iter().enumerate() {
        match parse_entry(list, extra, index, item) {
            Ok(entry) => out.entries.push(entry),
            Err(msg) if skip_invalid => out.skipped.push(msg),
            Err(msg) => return Err(Error::Input(msg)),
        }
    }
    Ok(())
}

/// An entry's error: `domain_list[2].port: "x" is not ...`.
fn parse_entry(list: ListKind, extra: bool, index: usize, item: &Value) -> Result<Entry, String> {
    let location = crate::model::location(list, extra, index);
    let at = |field: &str| format!("{location}.{field}");
    let Value::Object(obj) = item else {
        return Err(format!(
            "{location}: must be an object, found {}",
            kind(item)
        ));
    };
    // The user's own entries are held to the config's rule: a misspelt key (`descripton`)
    // must not vanish. WeCom's answers may grow fields, so theirs are ignored.
    if extra {
        let known = known_keys(list);
        if let Some(key) = obj.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(format!(
                "{location}: unknown key {} (known: {})",
                quote(key),
                known.join(", ")
            ));
        }
    }
    let (dest, universal) = match list {
        ListKind::Ip => {
            let raw = required_str(obj, "ip").map_err(|w| format!("{}: {w}", at("ip")))?;
            let net = parse_ip(raw).map_err(|w| format!("{}: {} {w}", at("ip"), quote(raw)))?;
            (Dest::Net(net), None)
        }
        ListKind::Domain => {
            let raw = required_str(obj, "domain").map_err(|w| format!("{}: {w}", at("domain")))?;
            let dest = match raw.strip_prefix("*.") {
                Some(rest) => Dest::Wildcard(
                    Hostname::parse(rest)
                        .map_err(|w| format!("{}: {} {w}", at("domain"), quote(raw)))?,
                ),
                None => Dest::Exact(
                    Hostname::parse(raw)
                        .map_err(|w| format!("{}: {} {w}", at("domain"), quote(raw)))?,
                ),
            };
            let universal = universal_domain(obj, &at)?;
            (dest, universal)
        }
    };

    let protocols = parse_protocols(obj.get("protocol").unwrap_or(&Value::Null))
        .map_err(|w| format!("{}: {w}", at("protocol")))?;
    let ports = parse_ports(obj.get("port").unwrap_or(&Value::Null))
        .map_err(|w| format!("{}: {w}", at("port")))?;
    let necessary = parse_necessary(obj.get("is_necessary").unwrap_or(&Value::Null))
        .map_err(|w| format!("{}: {w}", at("is_necessary")))?;
    let description = match obj.get("description") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(format!(
                "{}: must be a string, found {}",
                at("description"),
                kind(other)
            ))
        }
    };

    Ok(Entry {
        list,
        extra,
        index,
        dest,
        universal,
        protocols,
        ports,
        necessary,
        description,
    })
}

/// The keys an entry of `list` may have.
fn known_keys(list: ListKind) -> &'static [&'static str] {
    match list {
        ListKind::Ip => &["ip", "protocol", "port", "is_necessary", "description"],
        ListKind::Domain => &[
            "domain",
            "universal_domian",
            "universal_domain",
            "protocol",
            "port",
            "is_necessary",
            "description",
        ],
    }
}

/// `universal_domian` (the API's spelling) or `universal_domain` (in case WeCom fixes the
/// typo); with both, they must agree, since either reading could be the one WeCom meant.
fn universal_domain(
    obj: &Map<String, Value>,
    at: &dyn Fn(&str) -> String,
) -> Result<Option<Hostname>, String> {
    let read =
        |field: &str| parse_universal(obj.get(field)).map_err(|w| format!("{}: {w}", at(field)));
    let typo = read("universal_domian")?;
    if !obj.contains_key("universal_domain") {
        return Ok(typo);
    }
    let fixed = read("universal_domain")?;
    if obj.contains_key("universal_domian") && typo != fixed {
        return Err(format!(
            "{}: {} differs from universal_domian {}: give one, or the same value in both",
            at("universal_domain"),
            shown(obj.get("universal_domain").unwrap_or(&Value::Null)),
            shown(obj.get("universal_domian").unwrap_or(&Value::Null)),
        ));
    }
    Ok(fixed)
}

fn required_str<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<&'a str, String> {
    match obj.get(name) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err("is missing".into()),
        Some(other) => Err(format!("must be a string, found {}", kind(other))),
    }
}

/// An address is a host route; a CIDR must have no host bits set, since `10.0.0.1/8` may mean
/// the host or the network and guessing wrong either opens a hole or cuts a service off.
pub fn parse_ip(raw: &str) -> Result<IpNet, String> {
    let net = if let Some((_, len)) = raw.split_once('/') {
        if len.len() > 1 && len.starts_with('0') {
            return Err("has a prefix length with a leading zero".to_string());
        }
        let net =
            IpNet::from_str(raw).map_err(|_| "is not an IPv4/IPv6 address or CIDR".to_string())?;
        if net.trunc() != net {
            return Err(format!("has host bits set (did you mean {}?)", net.trunc()));
        }
        net
    } else {
        IpAddr::from_str(raw)
            .map(IpNet::from)
            .map_err(|_| "is not an IPv4/IPv6 address or CIDR".to_string())?
    };
    match ipv4_mapped(&net) {
        Some(v4) if v4.prefix_len() == 32 => Err(format!(
            "is an IPv4-mapped IPv6 address: write the IPv4 address {} instead",
            v4.addr()
        )),
        Some(v4) => Err(format!(
            "is an IPv4-mapped IPv6 network: write the IPv4 network {v4} instead"
        )),
        None => Ok(net),
    }
}

/// The IPv4 network that an IPv6 one inside `::ffff:0:0/96` stands for. Such a value would
/// land in the IPv6 rules, where some targets read it as IPv4 (Squid then allows every IPv4
/// destination for `::ffff:10.0.0.0/120`) and others never match it, so it is refused.
fn ipv4_mapped(net: &IpNet) -> Option<ipnet::Ipv4Net> {
    let IpNet::V6(v6) = net else { return None };
    let v4 = v6.addr().to_ipv4_mapped()?;
    let len = v6.prefix_len().checked_sub(96)?;
    ipnet::Ipv4Net::new(v4, len).ok()
}

fn parse_universal(v: Option<&Value>) -> Result<Option<Hostname>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => {
            let bare = s
                .strip_prefix("*.")
                .or_else(|| s.strip_prefix('.'))
                .unwrap_or(s);
            Hostname::parse(bare)
                .map(Some)
                .map_err(|w| format!("{} {w}", quote(s)))
        }
        Some(other) => Err(format!("must be a string, found {}", kind(other))),
    }
}

/// `TCP`, `udp`, `TCP/UDP`, `tcp,udp` or a list of those.
fn parse_protocols(v: &Value) -> Result<Vec<Protocol>, String> {
    let words: Vec<&str> = match v {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .ok_or_else(|| format!("{} is not a protocol name", shown(i)))
            })
            .collect::<Result<_, _>>()?,
        Value::Null => return Err("is missing".into()),
        other => return Err(format!("must be a string, found {}", kind(other))),
    };
    let mut protocols = Vec::new();
    for word in &words {
        for token in word.split(['/', ',']) {
            let p = match token.to_ascii_lowercase().as_str() {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                _ => return Err(format!("{} is not TCP or UDP", quote(word))),
            };
            protocols.push(p);
        }
    }
    protocols.sort_unstable();
    protocols.dedup();
    if protocols.is_empty() {
        return Err("is empty".into());
    }
    Ok(protocols)
}

/// A list of ports: integers, numeric strings or `"a-b"` ranges, each within 1-65535.
/// An empty list is refused: to several targets no port means every port.
pub fn parse_ports(v: &Value) -> Result<PortSet, String> {
    let items: Vec<&Value> = match v {
        Value::Array(items) => items.iter().collect(),
        Value::Null => return Err("is missing".into()),
        single @ (Value::Number(_) | Value::String(_)) => vec![single],
        other => return Err(format!("must be a list of ports, found {}", kind(other))),
    };
    let mut ranges = Vec::with_capacity(items.len());
    for item in items {
        let bad = || {
            format!(
                "{} is not a port (1-65535, or \"a-b\" for a range)",
                shown(item)
            )
        };
        let range = match item {
            Value::Number(n) => n
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .and_then(|p| PortRange::new(p, p)),
            Value::String(s) => match s.split_once('-') {
                Some((a, b)) => port_number(a)
                    .zip(port_number(b))
                    .and_then(|(a, b)| PortRange::new(a, b)),
                None => port_number(s).and_then(|p| PortRange::new(p, p)),
            },
            _ => None,
        };
        ranges.push(range.ok_or_else(bad)?);
    }
    PortSet::new(ranges)
        .ok_or_else(|| "is empty (an empty port list would allow every port)".into())
}

/// Plain decimal digits only: no sign, no spaces, no `0x`, no leading zero (`00443` is how
/// some tools write octal; `010.1.1.1` is refused for the same reason).
fn port_number(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) || s.starts_with('0') {
        return None;
    }
    s.parse().ok()
}

fn parse_necessary(v: &Value) -> Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::Number(n) if n.as_u64() == Some(0) => Ok(false),
        Value::Number(n) if n.as_u64() == Some(1) => Ok(true),
        Value::Null => Err("is missing".into()),
        other => Err(format!("{} is not 0 or 1", shown(other))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A JSON value in a message: strings quoted and escaped, the rest as compact JSON, cut short.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => quote(s),
        other => {
            let json = other.to_string();
            if json.len() > 120 {
                format!("{}...", crate::text::truncate_bytes(&json, 120))
            } else {
                json
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(entry: &str) -> Result<Response> {
        parse(
            format!(r#"{{"errcode":0,"ip_list":[{entry}]}}"#).as_bytes(),
            false,
        )
    }

    fn err(entry: &str) -> String {
        match one(entry) {
            Err(Error::Input(m)) => m,
            other => panic!("expected an input error, got {other:?}"),
        }
    }

    #[test]
    fn accepts_the_documented_shapes() {
        let r = one(r#"{"ip":"10.1.0.0/16","protocol":"tcp/UDP","port":[443,"80","8000-8100"],"is_necessary":true}"#)
            .unwrap();
        let e = &r.entries[0];
        assert_eq!(e.protocols, vec![Protocol::Tcp, Protocol::Udp]);
        assert_eq!(e.ports.to_string(), "80,443,8000-8100");
        assert!(e.necessary);
        assert_eq!(e.description, "");
    }

    #[test]
    fn names_list_index_field_and_escaped_value() {
        let m = err(r#"{"ip":"1.2.3.4","protocol":"TCP","port":["44\n3"],"is_necessary":1}"#);
        assert_eq!(
            m,
            r#"ip_list[0].port: "44\n3" is not a port (1-65535, or "a-b" for a range)"#
        );
        let m = err(r#"{"ip":"10.0.0.1/8","protocol":"TCP","port":[1],"is_necessary":1}"#);
        assert!(m.contains("did you mean 10.0.0.0/8"), "{m}");
        for (ip, says) in [
            (
                "::ffff:1.2.3.4",
                "IPv4-mapped IPv6 address: write the IPv4 address 1.2.3.4",
            ),
            ("::FFFF:102:304", "write the IPv4 address 1.2.3.4"),
            (
                "::ffff:10.0.0.0/120",
                "IPv4-mapped IPv6 network: write the IPv4 network 10.0.0.0/24",
            ),
            ("::ffff:0:0/96", "write the IPv4 network 0.0.0.0/0"),
        ] {
            let m = err(&format!(
                r#"{{"ip":"{ip}","protocol":"TCP","port":[1],"is_necessary":1}}"#
            ));
            assert!(
                m.starts_with(&format!("ip_list[0].ip: \"{ip}\" is an ")),
                "{m}"
            );
            assert!(m.contains(says), "{m}");
        }
        for (bad, field) in [
            (
                r#""ip":"1.2.3.4","protocol":"ICMP","port":[1],"is_necessary":1"#,
                "protocol",
            ),
            (
                r#""ip":"1.2.3.4","protocol":"TCP","port":[0],"is_necessary":1"#,
                "port",
            ),
            (
                r#""ip":"1.2.3.4","protocol":"TCP","port":[65536],"is_necessary":1"#,
                "port",
            ),
            (
                r#""ip":"1.2.3.4","protocol":"TCP","port":["9-8"],"is_necessary":1"#,
                "port",
            ),
            (
                r#""ip":"1.2.3.4","protocol":"TCP","port":[" 80"],"is_necessary":1"#,
                "port",
            ),
            (
                r#""ip":"1.2.3.4","protocol":"TCP","port":[80.5],"is_necessary":1"#,
                "port",
            ),
            (
                r#""ip":"1.2.3.4","protocol":"TCP","port":[],"is_necessary":1"#,
                "port",
            ),
            (
                r#""ip":"1.2.3.4","protocol":"TCP","port":[1],"is_necessary":2"#,
                "is_necessary",
            ),
            (
                r#""ip":"1.2.3.4","protocol":"TCP","port":[1]"#,
                "is_necessary",
            ),
            (
                r#""ip":"1.2.3.4 ","protocol":"TCP","port":[1],"is_necessary":1"#,
                "ip",
            ),
            (
                r#""ip":"1.2.3","protocol":"TCP","port":[1],"is_necessary":1"#,
                "ip",
            ),
            (
                r#""ip":"1.2.3.4","protocol":"TCP","port":[1],"is_necessary":1,"description":7"#,
                "description",
            ),
        ] {
            let m = err(&format!("{{{bad}}}"));
            assert!(m.starts_with(&format!("ip_list[0].{field}: ")), "{m}");
        }
    }

    #[test]
    fn leading_zeros_are_refused_in_ports_and_prefixes() {
        for (bad, field) in [
            (r#""ip":"1.2.3.4","port":["00443"]"#, "port"),
            (r#""ip":"1.2.3.4","port":["080-443"]"#, "port"),
            (r#""ip":"1.2.3.4","port":["0"]"#, "port"),
            (r#""ip":"10.0.0.0/08","port":[443]"#, "ip"),
            (r#""ip":"2001:da8::/032","port":[443]"#, "ip"),
        ] {
            let m = err(&format!(r#"{{{bad},"protocol":"TCP","is_necessary":1}}"#));
            assert!(m.starts_with(&format!("ip_list[0].{field}: ")), "{m}");
        }
        assert!(one(
            r#"{"ip":"10.0.0.0/8","protocol":"TCP","port":["443","80-90"],"is_necessary":1}"#
        )
        .is_ok());
    }

    #[test]
    fn duplicate_keys_are_refused_anywhere() {
        for doc in [
            r#"{"errcode":45009,"errcode":0,"ip_list":[]}"#,
            r#"{"ip_list":[{"ip":"1.2.3.4","protocol":"TCP","port":[1],"is_necessary":1}],"ip_list":[]}"#,
            r#"{"ip_list":[{"ip":"1.2.3.4","ip":"5.6.7.8","protocol":"TCP","port":[1],"is_necessary":1}]}"#,
            r#"{"ip_list":[],"x":[{"a":{"b":1,"b":2}}]}"#,
        ] {
            let e = parse(doc.as_bytes(), false).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{doc}");
            assert!(
                e.to_string().contains("appears twice in one object"),
                "{doc}: {e}"
            );
        }
        // The same key in two objects is fine.
        parse(
            br#"{"ip_list":[{"ip":"1.2.3.4","protocol":"TCP","port":[1],"is_necessary":1},{"ip":"1.2.3.5","protocol":"TCP","port":[1],"is_necessary":1}]}"#,
            false,
        )
        .unwrap();
    }

    #[test]
    fn domains_are_validated_and_lowercased() {
        let r = parse(
            br#"{"errcode":0,"domain_list":[{"domain":"I.Work.Weixin.QQ.com.","universal_domian":"","protocol":"TCP","port":[443],"is_necessary":0}]}"#,
            false,
        )
        .unwrap();
        assert_eq!(
            r.entries[0].dest,
            Dest::Exact(Hostname::parse("i.work.weixin.qq.com").unwrap())
        );
        assert_eq!(r.entries[0].universal, None);
        for bad in [
            "com",
            "a..b.com",
            "-a.com",
            "a_b.com",
            "1.2.3.4",
            "a b.com",
            "例子.com",
        ] {
            let doc = format!(
                r#"{{"domain_list":[{{"domain":{},"protocol":"TCP","port":[1],"is_necessary":1}}]}}"#,
                serde_json::to_string(bad).unwrap()
            );
            assert!(parse(doc.as_bytes(), false).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn universal_domain_is_a_second_spelling_that_must_agree() {
        let with = |fields: &str| {
            parse(
                format!(r#"{{"domain_list":[{{"domain":"a.work.example.com",{fields}"protocol":"TCP","port":[443],"is_necessary":1}}]}}"#)
                    .as_bytes(),
                false,
            )
        };
        let work = Some(Hostname::parse("work.example.com").unwrap());
        for fields in [
            r#""universal_domain":"work.example.com","#,
            r#""universal_domian":"work.example.com","#,
            r#""universal_domian":"work.example.com","universal_domain":"Work.Example.com.","#,
        ] {
            assert_eq!(with(fields).unwrap().entries[0].universal, work, "{fields}");
        }
        for fields in [
            r#""universal_domian":"work.example.com","universal_domain":"example.com","#,
            r#""universal_domian":"","universal_domain":"work.example.com","#,
        ] {
            let e = with(fields).unwrap_err().to_string();
            assert!(e.contains("domain_list[0].universal_domain: "), "{e}");
            assert!(e.contains("differs from universal_domian"), "{e}");
        }
        let e = with(r#""universal_domain":"a b","#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(r#"domain_list[0].universal_domain: "a b""#),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_are_refused_in_extra_entries_only() {
        let entry = serde_json::json!({"ip":"1.2.3.4","protocol":"TCP","port":[1],"is_necessary":1,"descripton":"x"});
        let mut out = Response::default();
        parse_list(
            ListKind::Ip,
            false,
            std::slice::from_ref(&entry),
            false,
            &mut out,
        )
        .unwrap();
        let e = parse_list(ListKind::Ip, true, &[entry], false, &mut out).unwrap_err();
        assert!(
            e.to_string()
                .contains(r#"extra.ip_list[0]: unknown key "descripton""#),
            "{e}"
        );
        let entry = serde_json::json!({"domain":"a.example.com","ip":"1.2.3.4","protocol":"TCP","port":[1],"is_necessary":1});
        let e = parse_list(ListKind::Domain, true, &[entry], false, &mut out).unwrap_err();
        assert!(e.to_string().contains(r#"unknown key "ip""#), "{e}");
    }

    #[test]
    fn skip_invalid_keeps_the_good_entries() {
        let doc = br#"{"ip_list":[{"ip":"1.2.3.4","protocol":"TCP","port":[1],"is_necessary":1},{"ip":"x"}]}"#;
        assert!(parse(doc, false).is_err());
        let r = parse(doc, true).unwrap();
        assert_eq!(r.entries.len(), 1);
        assert_eq!(r.skipped.len(), 1);
        assert!(r.skipped[0].starts_with("ip_list[1].ip: \"x\""));
    }

    #[test]
    fn api_errors_carry_advice() {
        let e = parse(br#"{"errcode":60020,"errmsg":"not allow to access from your ip, hint: [x], from ip: 203.0.113.7, more info at https://x"}"#, false).unwrap_err();
        assert_eq!(e.exit_code(), 3);
        assert!(
            e.to_string()
                .contains("add 203.0.113.7 to the app's trusted IPs"),
            "{e}"
        );
        let e = parse(br#"{"errcode":48002,"errmsg":"api forbidden"}"#, false).unwrap_err();
        assert!(e.to_string().contains("可调用API的应用"), "{e}");
        // The api and callback calls need no such permission: the advice says so.
        for call in ["get_api_domain_ip", "getcallbackip"] {
            let text = crate::errcode::describe(Some(call), 48002, "api forbidden");
            assert!(
                text.starts_with(&format!("{call}: WeCom returned errcode 48002")),
                "{text}"
            );
            assert!(
                text.contains(&format!("WeCom's page for {call} names no permission")),
                "{text}"
            );
        }
        let text = crate::errcode::describe(Some("get_server_domain_ip"), 48002, "");
        assert!(!text.contains("names no permission"), "{text}");
    }

    #[test]
    fn documents_that_are_not_responses_are_refused() {
        for doc in [
            "",
            "  ",
            "[]",
            "{",
            "null",
            "{\"errcode\":0}",
            "{\"ip_list\":{}}",
            "{\"errcode\":\"0\"}",
        ] {
            let e = parse(doc.as_bytes(), false).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{doc}: {e}");
        }
    }
}
