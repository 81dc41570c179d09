//! WeCom's answers: strict validation of every field into `model::Entry` (`errcode` words the
//! error codes). `get_server_domain_ip` answers with objects; `get_api_domain_ip`
//! and `getcallbackip` with an `ip_list` of plain strings, and a document of one list is
//! never taken for another (see `endpoint`).
//!
//! A document is read in one streaming pass over its bytes (serde visitors over borrowed
//! strings, no `serde_json::Value` tree): each entry is validated as it is read, so that a
//! 1M-entry answer costs its `Entry`s and little more. Every field is checked by hand rather
//! than by derived types, so that an error names the list, the entry, the field and the
//! value, and `--skip-invalid` can drop one entry while keeping the rest. Problems of the
//! document itself (bad JSON, a duplicate key anywhere) win over those of an entry, and the
//! top level (errcode, the list's mark and shape) over both lists' entries, whatever the order
//! of the keys.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

use ipnet::IpNet;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::endpoint::{ListName, MARK};
use crate::error::{Error, Result};
use crate::model::{
    Dest, Entry, Hostname, Interner, ListKind, PortRange, PortSet, Protocol, Protocols,
};
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
    read(
        bytes,
        Want::Is(ListName::Server),
        &api_ports(),
        skip_invalid,
    )
    .map(|(_, r)| r)
}

/// A JSON document, refusing a key that appears twice in one object anywhere in it: serde_json
/// keeps the last, so `"errcode":45009,"errcode":0` or a second, empty `"ip_list"` would
/// silently replace what a reader of the file sees first.
pub fn parse_json(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<UniqueKeys>(bytes)?;
    serde_json::from_slice(bytes)
}

/// Deserializes any JSON value, keeping nothing, and fails on a duplicate key in any object.
struct UniqueKeys;

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueKeys)
    }
}

impl<'de> Visitor<'de> for UniqueKeys {
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

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        let mut seen = Seen::default();
        while let Some(Key(key)) = map.next_key()? {
            seen.insert::<A::Error>(key)?;
            map.next_value::<UniqueKeys>()?;
        }
        Ok(UniqueKeys)
    }
}

/// The keys of one object so far. Few objects have more than a handful, so a short list is
/// searched until it grows; a hostile object of many keys then costs a hash set, not a square.
#[derive(Default)]
struct Seen<'de> {
    few: Vec<Cow<'de, str>>,
    many: Option<HashSet<Cow<'de, str>>>,
}

impl<'de> Seen<'de> {
    /// Adds `key`; fails (as bad JSON) if the object already had it.
    fn insert<E: de::Error>(&mut self, key: Cow<'de, str>) -> Result<(), E> {
        self.fresh(key).map_err(|key| twice(&key, None))
    }

    /// Adds `key`, or gives it back if the object already had it.
    fn fresh(&mut self, key: Cow<'de, str>) -> Result<(), Cow<'de, str>> {
        if self.many.is_none() && self.few.len() == 16 {
            self.many = Some(self.few.drain(..).collect());
        }
        let again = match &self.many {
            Some(many) => many.contains(&key),
            None => self.few.contains(&key),
        };
        if again {
            return Err(key);
        }
        match &mut self.many {
            Some(many) => {
                many.insert(key);
            }
            None => self.few.push(key),
        }
        Ok(())
    }
}

/// An object's key, borrowed from the input unless it has escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(KeyVisitor)
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
    read_as(bytes, want, ports, skip_invalid).map(|(_, r)| r)
}

/// `parse_as`, also saying what the document says it is (a raw plain answer doesn't say
/// which list it holds: the caller warns).
pub fn read_as(
    bytes: &[u8],
    want: ListName,
    ports: &PortSet,
    skip_invalid: bool,
) -> Result<(Found, Response)> {
    read(bytes, Want::Is(want), ports, skip_invalid)
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
    read(bytes, Want::Any, &api_ports(), false)
}

/// TCP 443 alone: the api list's port, and the one plain lists are compared on.
pub fn api_ports() -> PortSet {
    PortSet::new(vec![PortRange {
        start: crate::endpoint::API_PORT,
        end: crate::endpoint::API_PORT,
    }])
    .unwrap_or_else(|| unreachable!("one port is a set"))
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
    let list = |key: &str| {
        top.get(key).map(|v| Read {
            kind: Kind::of(v),
            first: v.as_array().and_then(|a| a.first()).map(Kind::of),
            ..Read::default()
        })
    };
    let mark = top.get(MARK).map(Json::from_value);
    shape(
        list("domain_list").as_ref(),
        list("ip_list").as_ref(),
        mark.as_ref(),
    )
}

/// `found` over what a read saw of the document: each list's kind and first item, the mark.
fn shape(domain: Option<&Read>, ip: Option<&Read>, mark: Option<&Json>) -> Result<Found> {
    if domain.is_none() && ip.is_none() {
        return Err(Error::Input(
            "neither domain_list nor ip_list is present: is this a WeCom list (get_server_domain_ip, get_api_domain_ip or getcallbackip)?"
                .into(),
        ));
    }
    let mark = match mark {
        None | Some(Json::Null) => None,
        Some(Json::Str(s)) => Some(ListName::from_name(s).ok_or_else(|| {
            Error::Input(format!(
                "{MARK}: {} is not server, api or callback",
                quote(s)
            ))
        })?),
        Some(other) => {
            return Err(Error::Input(format!(
                "{MARK}: must be a string, found {}",
                other.kind().text()
            )))
        }
    };
    let first_ip = ip.and_then(|l| l.first);
    let shape = if domain.is_some_and(|l| l.kind != Kind::Null) || first_ip == Some(Kind::Object) {
        Found::Is(ListName::Server)
    } else if first_ip == Some(Kind::String) {
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
/// pass the very checks a saved file does, through the same reader. The entries of a plain
/// list get `ports` (TCP).
pub fn validate_as(
    doc: &Value,
    want: ListName,
    ports: &PortSet,
    skip_invalid: bool,
) -> Result<Response> {
    let interner = RefCell::default();
    let seed = DocSeed {
        want: Want::Is(want),
        ports,
        skip_invalid,
        interner: &interner,
        half: None,
    };
    let top = seed.deserialize(doc).map_err(not_json)?;
    finish(top, Want::Is(want)).map(|(_, r)| r)
}

/// Which list a read expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Is(ListName),
    /// Whichever the document holds (a plain one read as the api list without description).
    Any,
}

/// Reads and validates a document in one pass over its bytes.
fn read(
    bytes: &[u8],
    want: Want,
    ports: &PortSet,
    skip_invalid: bool,
) -> Result<(Found, Response)> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::Input("the input is empty".into()));
    }
    let interner = RefCell::default();
    let seed = DocSeed {
        want,
        ports,
        skip_invalid,
        interner: &interner,
        half: None,
    };
    // UTF-8 is checked once for the whole document rather than string by string. A document
    // that is not UTF-8 is read as bytes, for serde_json's own message naming where.
    let top = match std::str::from_utf8(bytes) {
        Ok(text) => match find_cut(text, want).and_then(|cut| read_split(text, cut, seed)) {
            Some(top) => Ok(top),
            None => read_all(serde_json::Deserializer::from_str(text), seed),
        },
        Err(_) => read_all(serde_json::Deserializer::from_slice(bytes), seed),
    };
    finish(top.map_err(not_json)?, want)
}

/// The whole document through `seed`, and nothing after it.
fn read_all<'de, R: serde_json::de::Read<'de>>(
    mut de: serde_json::Deserializer<R>,
    seed: DocSeed<'_, 'de>,
) -> serde_json::Result<Top<'de>> {
    let top = seed.deserialize(&mut de)?;
    de.end()?;
    Ok(top)
}

/// Documents smaller than this are read on one thread: a thread costs more than it saves.
const SPLIT_MIN: usize = 512 * 1024;

/// A guess at where a large document may be read in two halves at once: between two objects
/// of the list `list`, at the comma `at`, the next one starting at `next`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cut {
    at: usize,
    next: usize,
    list: ListKind,
}

/// What the first half of a split read left when its input ran out at the cut.
#[derive(Default)]
struct Half<'de> {
    /// The list being read, and what it had read.
    reached: RefCell<Option<Reached>>,
    /// The top level read so far (without that list).
    doc: RefCell<Option<Doc<'de>>>,
}

/// A list whose read ran out of input between two items.
struct Reached {
    list: ListKind,
    read: Read,
    /// How many items it had read.
    items: usize,
    /// Its items were read as objects.
    server: bool,
}

/// Where to cut a document of a server list, when it is worth two threads: near the middle,
/// between two objects (`}`, `,`, `{` with only whitespace between), in the list whose key
/// comes last before there, that list being the document's last value (`...]}`). All of
/// this is only a guess from the bytes (the comma may stand in a string, or in a list of
/// some other key): `read_split` checks it.
fn find_cut(text: &str, want: Want) -> Option<Cut> {
    let bytes = text.as_bytes();
    if bytes.len() < SPLIT_MIN || !matches!(want, Want::Is(ListName::Server) | Want::Any) {
        return None;
    }
    let end = before_ws(bytes, bytes.len())?;
    if bytes[end] != b'}' || before_ws(bytes, end).map(|b| bytes[b]) != Some(b']') {
        return None;
    }
    if crate::cores() < 2 {
        return None;
    }
    let mid = bytes.len() / 2;
    memchr::memchr_iter(b'{', &bytes[mid..])
        .take(64)
        .find_map(|i| cut_at(bytes, mid + i))
}

/// The cut before the `{` at `next`, if whitespace, a comma and whitespace stand between it
/// and a `}`.
fn cut_at(bytes: &[u8], next: usize) -> Option<Cut> {
    let at = before_ws(bytes, next)?;
    if bytes[at] != b',' || bytes[before_ws(bytes, at)?] != b'}' {
        return None;
    }
    let head = &bytes[..at];
    let ip = memchr::memmem::find(head, b"\"ip_list\"");
    let domain = memchr::memmem::find(head, b"\"domain_list\"");
    let list = match (ip, domain) {
        (Some(ip), Some(domain)) if domain > ip => ListKind::Domain,
        (Some(_), _) => ListKind::Ip,
        (None, Some(_)) => ListKind::Domain,
        (None, None) => return None,
    };
    Some(Cut { at, next, list })
}

/// JSON's whitespace, as serde_json skips it.
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\t' | b'\r')
}

/// The last byte before `end` that is not whitespace.
fn before_ws(bytes: &[u8], end: usize) -> Option<usize> {
    bytes[..end].iter().rposition(|&b| !is_ws(b))
}

/// Reads `text` on two threads, cut at `cut`: this one reads the document up to the cut as
/// `seed` would, another the items after it to the end. The result is the one a read in one
/// pass gives, or `None` (then the caller reads in one pass) when the guess was wrong or
/// either half found anything amiss but a bad entry: then which problem wins, and where
/// serde_json says it stands, are the one pass's to say.
fn read_split<'de>(text: &'de str, cut: Cut, seed: DocSeed<'_, 'de>) -> Option<Top<'de>> {
    let stop = AtomicBool::new(false);
    let skip_invalid = seed.skip_invalid;
    let first = || {
        let half = Half::default();
        let first = read_all(
            serde_json::Deserializer::from_str(&text[..cut.at]),
            DocSeed {
                half: Some(&half),
                ..seed
            },
        );
        match (first, half.reached.into_inner(), half.doc.into_inner()) {
            (Err(e), Some(r), Some(doc))
                if e.is_eof() && r.list == cut.list && r.server && r.items > 0 =>
            {
                Some((r, doc))
            }
            _ => {
                stop.store(true, Ordering::Relaxed);
                None
            }
        }
    };
    let (reached, rest) = crate::side_by_side(first, || {
        read_rest(text, cut.next, cut.list, skip_invalid, &stop)
    });
    join_halves(reached?, rest?).map(|doc| Top::Object(Box::new(doc)))
}

/// The top level of a split read: the first half's, with its list's items followed by the
/// second half's (whose indexes, in entries and in messages, start at 0).
fn join_halves<'de>((first, mut doc): (Reached, Doc<'de>), rest: Rest) -> Option<Doc<'de>> {
    let (list, offset) = (first.list, first.items);
    let mut read = first.read;
    let renumber = |(index, msg): (usize, String)| {
        let tail = msg.strip_prefix(&crate::model::location(list, false, index))?;
        Some(format!(
            "{}{tail}",
            crate::model::location(list, false, offset + index)
        ))
    };
    // Every index of the joined list fits: the second half's move up without a check each.
    u32::try_from(offset.checked_add(rest.items)?).ok()?;
    let shift = u32::try_from(offset).ok()?;
    // A list with an error gives no entries (`finish`): the second half's needn't join.
    if read.error.is_none() {
        read.entries
            .extend(rest.entries.into_iter().map(|mut entry| {
                entry.index += shift;
                entry
            }));
    }
    for skipped in rest.skipped {
        read.skipped.push(renumber(skipped)?);
    }
    if let Some(error) = rest.error.filter(|_| read.error.is_none()) {
        read.error = Some(renumber(error)?);
    }
    match list {
        ListKind::Domain => doc.domain = Some(read),
        ListKind::Ip => doc.ip = Some(read),
    }
    Some(doc)
}

/// What the second half of a split read found: its items numbered from 0.
#[derive(Default)]
struct Rest {
    entries: Vec<Entry>,
    skipped: Vec<(usize, String)>,
    error: Option<(usize, String)>,
    items: usize,
}

/// The second half of a split read: the objects of `list` from `next` on, as `ListSeed`
/// reads them, then the end of the list and of the document. `None` when anything but an
/// entry is wrong (bad JSON, the list or the document going on otherwise), or when `stop`
/// says the first half found the cut was no cut.
fn read_rest(
    text: &str,
    mut next: usize,
    list: ListKind,
    skip_invalid: bool,
    stop: &AtomicBool,
) -> Option<Rest> {
    let interner = RefCell::default();
    let mut rest = Rest::default();
    let bytes = text.as_bytes();
    loop {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        // Each item on its own deserializer (serde_json reads no list from its middle),
        // which says where the item ended.
        let mut de = serde_json::Deserializer::from_str(&text[next..]);
        if rest.error.is_none() || skip_invalid {
            let seed = ItemSeed {
                list,
                extra: false,
                index: rest.items,
                how: How::Server,
                interner: &interner,
            };
            match seed.deserialize(&mut de).ok()?.1 {
                Ok(entry) => rest.entries.push(entry),
                Err(msg) if skip_invalid => rest.skipped.push((rest.items, msg)),
                Err(msg) => rest.error = Some((rest.items, msg)),
            }
        } else {
            <UniqueKeys as serde::Deserialize>::deserialize(&mut de).ok()?;
        }
        let end = next + de.into_iter::<de::IgnoredAny>().byte_offset();
        // In the document an item stands two levels deeper than here, nearer serde_json's
        // limit of nesting: an item that could come near it is left to the one pass.
        let item = &bytes[next..end];
        if item.len() > 200 && memchr::memchr2_iter(b'[', b'{', item).count() > 100 {
            return None;
        }
        rest.items += 1;
        let after = end + bytes[end..].iter().position(|&b| !is_ws(b))?;
        match bytes[after] {
            b',' => next = after + 1,
            b']' => {
                let close = after + 1 + bytes[after + 1..].iter().position(|&b| !is_ws(b))?;
                let tail = &bytes[close..];
                return (tail[0] == b'}' && tail[1..].iter().all(|&b| is_ws(b))).then_some(rest);
            }
            _ => return None,
        }
    }
}

fn not_json(e: serde_json::Error) -> Error {
    Error::Input(format!("not valid JSON: {e}"))
}

/// The checks of the top level, in the order a reader of the file would make them: errcode,
/// then which list it is, then each list's entries (domain_list first).
fn finish(top: Top, want: Want) -> Result<(Found, Response)> {
    let doc = match top {
        Top::Object(doc) => *doc,
        Top::Not(kind) => {
            return Err(Error::Input(format!(
                "the top level must be a JSON object, found {}",
                kind.text()
            )))
        }
    };
    let mut codes = Map::new();
    for (key, value) in [("errcode", &doc.errcode), ("errmsg", &doc.errmsg)] {
        if let Some(value) = value {
            codes.insert(key.into(), value.to_value());
        }
    }
    check_errcode(&codes)?;
    let found = shape(doc.domain.as_ref(), doc.ip.as_ref(), doc.mark.as_ref())?;
    let want = match (want, found) {
        (Want::Is(want), Found::Is(list)) if list == want => want,
        (Want::Is(want), Found::Plain) if want.is_plain() => want,
        (Want::Is(want), Found::Any) => want,
        (Want::Is(want), other) => return Err(mixup(other, want)),
        (Want::Any, Found::Is(list)) => list,
        (Want::Any, Found::Plain) => ListName::Api,
        (Want::Any, Found::Any) => ListName::Server,
    };
    let mut out = Response::default();
    let lists = if want.is_plain() {
        [None, doc.ip]
    } else {
        [doc.domain, doc.ip]
    };
    for (list, read) in [ListKind::Domain, ListKind::Ip].into_iter().zip(lists) {
        let Some(read) = read else { continue };
        match read.kind {
            Kind::Null => continue,
            Kind::List => {}
            other => {
                return Err(Error::Input(format!(
                    "{}: must be a list, found {}",
                    list.as_str(),
                    other.text()
                )))
            }
        }
        // An answer of either kind was read as the kind its first item suggested, and the
        // top level then said otherwise: that first item is where the list goes wrong.
        if let Some(first) = read.first.filter(|_| read.plain != want.is_plain()) {
            return Err(Error::Input(wrong_item(
                list,
                false,
                0,
                want.is_plain(),
                first,
            )));
        }
        if let Some(msg) = read.error {
            return Err(Error::Input(msg));
        }
        if out.entries.is_empty() {
            out.entries = read.entries;
        } else {
            out.entries.extend(read.entries);
        }
        out.skipped.extend(read.skipped);
    }
    Ok((found, out))
}

/// What a read found at the top level.
enum Top<'de> {
    Object(Box<Doc<'de>>),
    /// Not an object: the kind it was.
    Not(Kind),
}

/// The top level's keys that matter, as read.
#[derive(Default)]
struct Doc<'de> {
    errcode: Option<Json<'de>>,
    errmsg: Option<Json<'de>>,
    mark: Option<Json<'de>>,
    domain: Option<Read>,
    ip: Option<Read>,
}

/// A seed that reads any JSON value through its own visitor.
macro_rules! any_value_seed {
    ($de:lifetime, $seed:ty, $value:ty) => {
        impl<$de> DeserializeSeed<$de> for $seed {
            type Value = $value;

            fn deserialize<D: Deserializer<$de>>(self, d: D) -> Result<$value, D::Error> {
                d.deserialize_any(self)
            }
        }
    };
}

/// The visitor methods for JSON's scalars but strings (booleans, numbers, null), of a seed
/// that takes none of them: each returns `$not` with the value's `Kind`, for the caller to
/// report with its place. (And `expecting`, which serde_json never calls: such a seed takes
/// any value.)
macro_rules! wrong_scalars {
    ($value:ty, |$this:pat, $kind:ident| $not:expr) => {
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_unit<E>(self) -> Result<$value, E> {
            let ($this, $kind) = (self, Kind::Null);
            Ok($not)
        }
        wrong_scalars!(@each $value, |$this, $kind| $not, [
            visit_bool: bool => Bool,
            visit_i64: i64 => Number,
            visit_u64: u64 => Number,
            visit_f64: f64 => Number
        ]);
    };
    (@each $value:ty, |$this:pat, $kind:ident| $not:expr, [$($visit:ident: $arg:ty => $is:ident),*]) => {
        $(
            fn $visit<E>(self, _: $arg) -> Result<$value, E> {
                let ($this, $kind) = (self, Kind::$is);
                Ok($not)
            }
        )*
    };
}

/// Reads a document's top level; each list is validated as it streams by.
#[derive(Clone, Copy)]
struct DocSeed<'p, 'de> {
    want: Want,
    ports: &'p PortSet,
    skip_invalid: bool,
    interner: &'p RefCell<Interner>,
    /// Where the first half of a split read leaves what it read (see `read_split`).
    half: Option<&'p Half<'de>>,
}

any_value_seed!('de, DocSeed<'_, 'de>, Top<'de>);

impl<'de> DocSeed<'_, 'de> {
    /// A list's value through `seed`. When the input ran out between two of its items (the
    /// cut of a split read), the top level read so far is left for the split read.
    fn list<A: MapAccess<'de>>(
        self,
        map: &mut A,
        seed: ListSeed,
        doc: &mut Doc<'de>,
    ) -> Result<Read, A::Error> {
        map.next_value_seed(seed).inspect_err(|_| {
            if let Some(half) = self.half.filter(|h| h.reached.borrow().is_some()) {
                *half.doc.borrow_mut() = Some(std::mem::take(doc));
            }
        })
    }
}

impl<'de> Visitor<'de> for DocSeed<'_, 'de> {
    type Value = Top<'de>;

    wrong_scalars!(Top<'de>, |_, kind| Top::Not(kind));
    fn visit_str<E>(self, _: &str) -> Result<Top<'de>, E> {
        Ok(Top::Not(Kind::String))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Top<'de>, A::Error> {
        UniqueKeys.visit_seq(seq)?;
        Ok(Top::Not(Kind::List))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top<'de>, A::Error> {
        let mut doc = Doc::default();
        let mut seen = Seen::default();
        let plain = match self.want {
            Want::Is(list) => list.is_plain(),
            Want::Any => false,
        };
        while let Some(Key(key)) = map.next_key()? {
            seen.insert::<A::Error>(key.clone())?;
            let list = |list, how| ListSeed {
                list,
                how,
                skip_invalid: self.skip_invalid,
                interner: self.interner,
                cut: self.half.map(|h| &h.reached),
            };
            match key.as_ref() {
                "errcode" => doc.errcode = Some(map.next_value()?),
                "errmsg" => doc.errmsg = Some(map.next_value()?),
                k if k == MARK => doc.mark = Some(map.next_value()?),
                // A plain list's answer has no domain_list: only whether one is there counts.
                "domain_list" => {
                    let how = if plain { How::Skip } else { How::Server };
                    let read = self.list(&mut map, list(ListKind::Domain, how), &mut doc)?;
                    doc.domain = Some(read);
                }
                "ip_list" => {
                    let how = match self.want {
                        Want::Is(ListName::Server) => How::Server,
                        Want::Is(list) => How::Plain {
                            ports: self.ports,
                            description: match list {
                                ListName::Api => "WeCom API (qyapi.weixin.qq.com)",
                                _ => "WeCom callback",
                            },
                        },
                        Want::Any => How::Any { ports: self.ports },
                    };
                    let read = self.list(&mut map, list(ListKind::Ip, how), &mut doc)?;
                    doc.ip = Some(read);
                }
                _ => {
                    map.next_value::<UniqueKeys>()?;
                }
            }
        }
        Ok(Top::Object(Box::new(doc)))
    }
}

/// How a list's items are read.
#[derive(Clone, Copy)]
enum How<'p> {
    /// Objects (the server list, the config's extra entries).
    Server,
    /// Plain addresses, each on `ports` with `description` (every entry of a plain list is
    /// alike: the description says which list, for comments).
    Plain {
        ports: &'p PortSet,
        description: &'static str,
    },
    /// As the first item suggests: plain addresses (without description) or objects.
    Any { ports: &'p PortSet },
    /// Only checked as JSON.
    Skip,
}

/// What a read saw of one list.
#[derive(Default)]
struct Read {
    /// The list's own kind (a list, or what stood in its place).
    kind: Kind,
    /// The kind of its first item.
    first: Option<Kind>,
    /// Its items were read as plain addresses.
    plain: bool,
    entries: Vec<Entry>,
    skipped: Vec<String>,
    /// The first bad entry, without `--skip-invalid`: the rest is then only checked as JSON.
    error: Option<String>,
}

impl Read {
    fn take(&mut self, entry: Result<Entry, String>, skip_invalid: bool) {
        match entry {
            Ok(entry) => self.entries.push(entry),
            Err(msg) if skip_invalid => self.skipped.push(msg),
            Err(msg) => self.error = Some(msg),
        }
    }
}

/// Reads one of the document's lists, validating each item as it comes.
struct ListSeed<'p> {
    list: ListKind,
    how: How<'p>,
    skip_invalid: bool,
    interner: &'p RefCell<Interner>,
    /// Where to leave what was read when the input runs out between two items (the first half
    /// of a split read).
    cut: Option<&'p RefCell<Option<Reached>>>,
}

any_value_seed!('de, ListSeed<'_>, Read);

impl ListSeed<'_> {
    /// `next`, an item or the list's end. A failure before any item was asked for came
    /// between two items: if the input was cut there, what was read is left at the cut.
    fn at_cut<T, E>(
        &self,
        next: Result<Option<T>, E>,
        asked: &Cell<bool>,
        read: &mut Read,
        items: usize,
        how: How,
    ) -> Result<Option<T>, E> {
        if let Some(cut) = self.cut.filter(|_| next.is_err() && !asked.get()) {
            *cut.borrow_mut() = Some(Reached {
                list: self.list,
                read: std::mem::take(read),
                items,
                server: matches!(how, How::Server),
            });
        }
        asked.set(false);
        next
    }
}

/// A seed that notes that it was asked for a value.
struct Noted<'c, S>(&'c Cell<bool>, S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Noted<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.0.set(true);
        self.1.deserialize(d)
    }
}

impl<'de> Visitor<'de> for ListSeed<'_> {
    type Value = Read;

    wrong_scalars!(Read, |_, kind| Read::not(kind));
    fn visit_str<E>(self, _: &str) -> Result<Read, E> {
        Ok(Read::not(Kind::String))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Read, A::Error> {
        UniqueKeys.visit_map(map)?;
        Ok(Read::not(Kind::Object))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Read, A::Error> {
        let mut read = Read::not(Kind::List);
        let mut how = self.how;
        let mut index = 0;
        let asked = Cell::new(false);
        while !matches!(how, How::Skip) && (read.error.is_none() || self.skip_invalid) {
            let seed = ItemSeed {
                list: self.list,
                extra: false,
                index,
                how,
                interner: self.interner,
            };
            let next = seq.next_element_seed(Noted(&asked, seed));
            let Some((kind, entry)) = self.at_cut(next, &asked, &mut read, index, how)? else {
                return Ok(read);
            };
            if index == 0 {
                read.first = Some(kind);
                if let How::Any { ports } = how {
                    how = match kind {
                        Kind::String => How::Plain {
                            ports,
                            description: "",
                        },
                        _ => How::Server,
                    };
                }
                read.plain = matches!(how, How::Plain { .. });
            }
            read.take(entry, self.skip_invalid);
            index += 1;
        }
        loop {
            let next = seq.next_element_seed(Noted(&asked, PhantomData::<UniqueKeys>));
            if self.at_cut(next, &asked, &mut read, index, how)?.is_none() {
                return Ok(read);
            }
            index += 1;
        }
    }
}

impl Read {
    fn not(kind: Kind) -> Read {
        Read {
            kind,
            ..Read::default()
        }
    }
}

/// An item's error when it is not what its list holds.
fn wrong_item(list: ListKind, extra: bool, index: usize, plain: bool, kind: Kind) -> String {
    let location = crate::model::location(list, extra, index);
    if plain {
        format!(
            "{location}: must be a string (an address or a CIDR), found {}",
            kind.text()
        )
    } else {
        format!("{location}: must be an object, found {}", kind.text())
    }
}

/// Reads one item of a list and validates it where it stands, so that nothing of it outlives
/// the read but its `Entry`: its kind, and the entry or why it is none
/// (`domain_list[2].port: "x" is not ...`).
#[derive(Clone, Copy)]
struct ItemSeed<'p> {
    list: ListKind,
    extra: bool,
    index: usize,
    /// `Skip` never comes here; `Any` reads a string as a plain address, the rest as objects.
    how: How<'p>,
    /// Where the entries' descriptions and port sets are shared.
    interner: &'p RefCell<Interner>,
}

type Checked = (Kind, Result<Entry, String>);

impl ItemSeed<'_> {
    fn location(self) -> String {
        crate::model::location(self.list, self.extra, self.index)
    }

    fn wrong(self, kind: Kind) -> Checked {
        let plain = matches!(self.how, How::Plain { .. });
        let why = wrong_item(self.list, self.extra, self.index, plain, kind);
        (kind, Err(why))
    }

    fn text(self, raw: &str) -> Checked {
        let plain = |ports, description| {
            let description = self.interner.borrow_mut().text(description);
            plain_entry(self.index, raw, ports, description)
        };
        let entry = match self.how {
            How::Plain { ports, description } => plain(ports, description),
            How::Any { ports } => plain(ports, ""),
            How::Server | How::Skip => return self.wrong(Kind::String),
        };
        (Kind::String, entry)
    }
}

any_value_seed!('de, ItemSeed<'_>, Checked);

impl<'de> Visitor<'de> for ItemSeed<'_> {
    type Value = Checked;

    wrong_scalars!(Checked, |this, kind| this.wrong(kind));
    fn visit_str<E>(self, s: &str) -> Result<Checked, E> {
        Ok(self.text(s))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Checked, A::Error> {
        UniqueKeys.visit_seq(seq)?;
        Ok(self.wrong(Kind::List))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        if let How::Plain { .. } = self.how {
            UniqueKeys.visit_map(map)?;
            return Ok(self.wrong(Kind::Object));
        }
        let mut raw = RawEntry::default();
        // Keys this list doesn't know: only checked as JSON (the config's extra entries
        // refuse the first one, after the whole entry is read).
        let mut others = Seen::default();
        while let Some(Key(key)) = map.next_key()? {
            let slot = match (key.as_ref(), self.list) {
                ("ip", ListKind::Ip) | ("domain", ListKind::Domain) => &mut raw.dest,
                ("universal_domian", ListKind::Domain) => &mut raw.typo,
                ("universal_domain", ListKind::Domain) => &mut raw.fixed,
                ("protocol", _) => &mut raw.protocol,
                ("is_necessary", _) => &mut raw.necessary,
                ("description", _) => &mut raw.description,
                ("port", _) => {
                    if raw.port.is_some() {
                        return Err(twice(&key, Some(self.location())));
                    }
                    let buffer = self.interner.borrow_mut().buffer();
                    raw.port = Some(map.next_value_seed(PortsSeed(buffer))?);
                    continue;
                }
                _ => {
                    if self.extra && raw.unknown.is_none() {
                        raw.unknown = Some(key.clone());
                    }
                    others
                        .fresh(key)
                        .map_err(|key| twice(&key, Some(self.location())))?;
                    map.next_value::<UniqueKeys>()?;
                    continue;
                }
            };
            if slot.is_some() {
                return Err(twice(&key, Some(self.location())));
            }
            *slot = Some(map.next_value()?);
        }
        let entry = raw.entry(
            self.list,
            self.extra,
            self.index,
            &mut self.interner.borrow_mut(),
        );
        Ok((Kind::Object, entry))
    }
}

/// The error of a key given twice in one object (reported as bad JSON, where it stands; in a
/// file of a million entries on one line, the entry it is in says more than a column).
fn twice<E: de::Error>(key: &str, entry: Option<String>) -> E {
    let entry = entry.map(|at| format!("{at}: ")).unwrap_or_default();
    E::custom(format!(
        "{entry}the key {} appears twice in one object",
        quote(key)
    ))
}

/// The fields of an entry its list knows, as read; `Some(Json::Null)` is a field given as null.
#[derive(Default)]
struct RawEntry<'de> {
    /// `ip` or `domain`.
    dest: Option<Json<'de>>,
    /// `universal_domian`, the API's spelling.
    typo: Option<Json<'de>>,
    /// `universal_domain`.
    fixed: Option<Json<'de>>,
    protocol: Option<Json<'de>>,
    port: Option<PortsRead<'de>>,
    necessary: Option<Json<'de>>,
    description: Option<Json<'de>>,
    /// The first key the list doesn't know (kept for the config's extra entries only).
    unknown: Option<Cow<'de, str>>,
}

impl RawEntry<'_> {
    /// Validates the entry. Its location is only spelled out for an error.
    fn entry(
        self,
        list: ListKind,
        extra: bool,
        index: usize,
        interner: &mut Interner,
    ) -> Result<Entry, String> {
        let location = || crate::model::location(list, extra, index);
        let at = |field: &str| format!("{}.{field}", location());
        // The user's own entries are held to the config's rule: a misspelt key (`descripton`)
        // must not vanish. WeCom's answers may grow fields, so theirs are ignored.
        if let Some(key) = &self.unknown {
            return Err(format!(
                "{}: unknown key {} (known: {})",
                location(),
                quote(key),
                known_keys(list).join(", ")
            ));
        }
        let (dest, universal) = match list {
            ListKind::Ip => {
                let raw =
                    required_str(self.dest.as_ref()).map_err(|w| format!("{}: {w}", at("ip")))?;
                let net = parse_ip(raw).map_err(|w| format!("{}: {} {w}", at("ip"), quote(raw)))?;
                (Dest::Net(net), None)
            }
            ListKind::Domain => {
                let raw = required_str(self.dest.as_ref())
                    .map_err(|w| format!("{}: {w}", at("domain")))?;
                let bad = |w| format!("{}: {} {w}", at("domain"), quote(raw));
                let dest = match raw.strip_prefix("*.") {
                    Some(rest) => Dest::Wildcard(Hostname::parse(rest).map_err(bad)?),
                    None => Dest::Exact(Hostname::parse(raw).map_err(bad)?),
                };
                let universal = universal_domain(self.typo.as_ref(), self.fixed.as_ref(), &at)?;
                (dest, universal)
            }
        };
        let protocols = parse_protocols(self.protocol.as_ref().unwrap_or(&Json::Null))
            .map_err(|w| format!("{}: {w}", at("protocol")))?;
        let ports = ports_of(self.port, interner).map_err(|w| format!("{}: {w}", at("port")))?;
        let necessary = parse_necessary(self.necessary.as_ref().unwrap_or(&Json::Null))
            .map_err(|w| format!("{}: {w}", at("is_necessary")))?;
        let description = match self.description {
            None | Some(Json::Null) => interner.text(""),
            Some(Json::Str(s)) => interner.text(&s),
            Some(other) => {
                return Err(format!(
                    "{}: must be a string, found {}",
                    at("description"),
                    other.kind().text()
                ))
            }
        };
        Ok(Entry {
            list,
            extra,
            index: entry_index(index, location)?,
            dest,
            universal,
            protocols,
            ports,
            necessary,
            description,
        })
    }
}

/// One address of a plain list: `ip_list[3]: "x" is not ...`. WeCom marks nothing as optional
/// there, so every entry counts as necessary.
fn plain_entry(
    index: usize,
    raw: &str,
    ports: &PortSet,
    description: crate::model::Text,
) -> Result<Entry, String> {
    let location = || crate::model::location(ListKind::Ip, false, index);
    let net = parse_ip(raw).map_err(|w| format!("{}: {} {w}", location(), quote(raw)))?;
    Ok(Entry {
        list: ListKind::Ip,
        extra: false,
        index: entry_index(index, location)?,
        dest: Dest::Net(net),
        universal: None,
        protocols: Protocols::from_iter([Protocol::Tcp]),
        ports: ports.clone(),
        necessary: true,
        description,
    })
}

/// An entry's index as `Entry` keeps it: a list of more than 4,294,967,295 entries (a
/// document of tens of gigabytes) is refused rather than numbered wrong.
fn entry_index(index: usize, location: impl Fn() -> String) -> Result<u32, String> {
    u32::try_from(index).map_err(|_| format!("{}: the list has too many entries", location()))
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
    let interner = RefCell::default();
    for (index, item) in items.iter().enumerate() {
        let seed = ItemSeed {
            list,
            extra,
            index,
            how: How::Server,
            interner: &interner,
        };
        let (_, entry) = seed.deserialize(item).map_err(not_json)?;
        match entry {
            Ok(entry) => out.entries.push(entry),
            Err(msg) if skip_invalid => out.skipped.push(msg),
            Err(msg) => return Err(Error::Input(msg)),
        }
    }
    Ok(())
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
    typo: Option<&Json>,
    fixed: Option<&Json>,
    at: &dyn Fn(&str) -> String,
) -> Result<Option<Hostname>, String> {
    let read = |field: &str, v| parse_universal(v).map_err(|w| format!("{}: {w}", at(field)));
    let typo_name = read("universal_domian", typo)?;
    let Some(fixed) = fixed else {
        return Ok(typo_name);
    };
    let fixed_name = read("universal_domain", Some(fixed))?;
    if let Some(typo) = typo.filter(|_| typo_name != fixed_name) {
        return Err(format!(
            "{}: {} differs from universal_domian {}: give one, or the same value in both",
            at("universal_domain"),
            fixed.shown(),
            typo.shown(),
        ));
    }
    Ok(fixed_name)
}

fn required_str<'a>(v: Option<&'a Json>) -> Result<&'a str, String> {
    match v {
        Some(Json::Str(s)) => Ok(s),
        None | Some(Json::Null) => Err("is missing".into()),
        Some(other) => Err(format!("must be a string, found {}", other.kind().text())),
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

fn parse_universal(v: Option<&Json>) -> Result<Option<Hostname>, String> {
    match v {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Str(s)) if s.is_empty() => Ok(None),
        Some(Json::Str(s)) => {
            let bare = s
                .strip_prefix("*.")
                .or_else(|| s.strip_prefix('.'))
                .unwrap_or(s);
            Hostname::parse(bare)
                .map(Some)
                .map_err(|w| format!("{} {w}", quote(s)))
        }
        Some(other) => Err(format!("must be a string, found {}", other.kind().text())),
    }
}

/// `TCP`, `udp`, `TCP/UDP`, `tcp,udp` or a list of those.
fn parse_protocols(v: &Json) -> Result<Protocols, String> {
    let words = match v {
        Json::Str(_) => std::slice::from_ref(v),
        Json::List(items) => {
            if let Some(bad) = items.iter().find(|i| i.as_str().is_none()) {
                return Err(format!("{} is not a protocol name", bad.shown()));
            }
            items
        }
        Json::Null => return Err("is missing".into()),
        other => return Err(format!("must be a string, found {}", other.kind().text())),
    };
    let mut protocols = Protocols::default();
    for word in words.iter().filter_map(Json::as_str) {
        for token in word.split(['/', ',']) {
            let p = if token.eq_ignore_ascii_case("tcp") {
                Protocol::Tcp
            } else if token.eq_ignore_ascii_case("udp") {
                Protocol::Udp
            } else {
                return Err(format!("{} is not TCP or UDP", quote(word)));
            };
            protocols.insert(p);
        }
    }
    if protocols.is_empty() {
        return Err("is empty".into());
    }
    Ok(protocols)
}

/// A list of ports: integers, numeric strings or `"a-b"` ranges, each within 1-65535.
/// An empty list is refused: to several targets no port means every port.
pub fn parse_ports(v: &Value) -> Result<PortSet, String> {
    let read = PortsSeed(Vec::new())
        .deserialize(v)
        .map_err(|e| e.to_string())?;
    ports_of(Some(read), &mut Interner::default())
}

/// A `port` field's set, or why it is none (`None`: the field is missing).
fn ports_of(read: Option<PortsRead>, interner: &mut Interner) -> Result<PortSet, String> {
    match read {
        None | Some(PortsRead::Not(Kind::Null)) => Err("is missing".into()),
        Some(PortsRead::Not(kind)) => {
            Err(format!("must be a list of ports, found {}", kind.text()))
        }
        Some(PortsRead::Bad(item)) => Err(format!(
            "{} is not a port (1-65535, or \"a-b\" for a range)",
            item.shown()
        )),
        Some(PortsRead::Ranges(ranges)) => interner
            .ports(ranges)
            .ok_or_else(|| "is empty (an empty port list would allow every port)".into()),
    }
}

/// What a `port` field held: a list of ports (or one, not in a list), read straight into
/// ranges.
enum PortsRead<'de> {
    Ranges(Vec<PortRange>),
    /// The first item that is no port.
    Bad(Json<'de>),
    /// Neither a list, a number nor a string.
    Not(Kind),
}

/// Reads a `port` field into the buffer it holds (see `Interner::buffer`).
struct PortsSeed(Vec<PortRange>);

impl<'de> DeserializeSeed<'de> for PortsSeed {
    type Value = PortsRead<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<PortsRead<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

/// One port, not in a list.
fn single(port: Result<PortRange, Json>) -> PortsRead {
    match port {
        Ok(range) => PortsRead::Ranges(vec![range]),
        Err(bad) => PortsRead::Bad(bad),
    }
}

impl<'de> Visitor<'de> for PortsSeed {
    type Value = PortsRead<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<PortsRead<'de>, E> {
        Ok(PortsRead::Not(Kind::Bool))
    }
    fn visit_unit<E>(self) -> Result<PortsRead<'de>, E> {
        Ok(PortsRead::Not(Kind::Null))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<PortsRead<'de>, A::Error> {
        UniqueKeys.visit_map(map)?;
        Ok(PortsRead::Not(Kind::Object))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<PortsRead<'de>, E> {
        PortSeed.visit_i64(n).map(single)
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<PortsRead<'de>, E> {
        PortSeed.visit_u64(n).map(single)
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<PortsRead<'de>, E> {
        PortSeed.visit_f64(n).map(single)
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<PortsRead<'de>, E> {
        PortSeed.visit_borrowed_str(s).map(single)
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<PortsRead<'de>, E> {
        PortSeed.visit_str(s).map(single)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PortsRead<'de>, A::Error> {
        let mut ranges = self.0;
        while let Some(port) = seq.next_element_seed(PortSeed)? {
            match port {
                Ok(range) => ranges.push(range),
                Err(bad) => {
                    while seq.next_element::<UniqueKeys>()?.is_some() {}
                    return Ok(PortsRead::Bad(bad));
                }
            }
        }
        Ok(PortsRead::Ranges(ranges))
    }
}

/// One port or range, or the value that is none.
struct PortSeed;

impl<'de> DeserializeSeed<'de> for PortSeed {
    type Value = Result<PortRange, Json<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PortSeed {
    type Value = Result<PortRange, Json<'de>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
        let port = u16::try_from(n).ok().and_then(|p| PortRange::new(p, p));
        Ok(port.ok_or_else(|| Json::Num(n.into())))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
        match u64::try_from(n) {
            Ok(n) => self.visit_u64(n),
            Err(_) => Ok(Err(Json::Num(n.into()))),
        }
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Self::Value, E> {
        JsonVisitor.visit_f64(n).map(Err)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
        Ok(Err(Json::Bool(b)))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Err(Json::Null))
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(port_text(s).ok_or(Json::Str(Cow::Borrowed(s))))
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(port_text(s).ok_or_else(|| Json::Str(Cow::Owned(s.to_owned()))))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        JsonVisitor.visit_seq(seq).map(Err)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        JsonVisitor.visit_map(map).map(Err)
    }
}

/// `443` or `8000-8100`.
fn port_text(s: &str) -> Option<PortRange> {
    match s.split_once('-') {
        Some((a, b)) => port_number(a)
            .zip(port_number(b))
            .and_then(|(a, b)| PortRange::new(a, b)),
        None => port_number(s).and_then(|p| PortRange::new(p, p)),
    }
}

/// Plain decimal digits only: no sign, no spaces, no `0x`, no leading zero (`00443` is how
/// some tools write octal; `010.1.1.1` is refused for the same reason).
fn port_number(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) || s.starts_with('0') {
        return None;
    }
    s.parse().ok()
}

fn parse_necessary(v: &Json) -> Result<bool, String> {
    match v {
        Json::Bool(b) => Ok(*b),
        Json::Num(n) if n.as_u64() == Some(0) => Ok(false),
        Json::Num(n) if n.as_u64() == Some(1) => Ok(true),
        Json::Null => Err("is missing".into()),
        other => Err(format!("{} is not 0 or 1", other.shown())),
    }
}

/// A JSON value's kind, as messages name it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Kind {
    #[default]
    Null,
    Bool,
    Number,
    String,
    List,
    Object,
}

impl Kind {
    fn of(v: &Value) -> Kind {
        match v {
            Value::Null => Kind::Null,
            Value::Bool(_) => Kind::Bool,
            Value::Number(_) => Kind::Number,
            Value::String(_) => Kind::String,
            Value::Array(_) => Kind::List,
            Value::Object(_) => Kind::Object,
        }
    }

    fn text(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool => "a boolean",
            Kind::Number => "a number",
            Kind::String => "a string",
            Kind::List => "a list",
            Kind::Object => "an object",
        }
    }
}

/// The value of one field of an entry (or of errcode, errmsg, the mark), its strings borrowed
/// from the input; objects keep their keys in order and were checked for duplicates.
#[derive(Debug, Clone, PartialEq)]
enum Json<'de> {
    Null,
    Bool(bool),
    Num(Number),
    Str(Cow<'de, str>),
    List(Vec<Json<'de>>),
    Object(Vec<(Cow<'de, str>, Json<'de>)>),
}

impl<'de> Json<'de> {
    fn from_value(v: &'de Value) -> Json<'de> {
        match v {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Number(n) => Json::Num(n.clone()),
            Value::String(s) => Json::Str(Cow::Borrowed(s)),
            Value::Array(items) => Json::List(items.iter().map(Json::from_value).collect()),
            Value::Object(map) => Json::Object(
                map.iter()
                    .map(|(k, v)| (Cow::Borrowed(k.as_str()), Json::from_value(v)))
                    .collect(),
            ),
        }
    }

    fn to_value(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Num(n) => Value::Number(n.clone()),
            Json::Str(s) => Value::String(s.clone().into_owned()),
            Json::List(items) => Value::Array(items.iter().map(Json::to_value).collect()),
            Json::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone().into_owned(), v.to_value()))
                    .collect(),
            ),
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Json::Null => Kind::Null,
            Json::Bool(_) => Kind::Bool,
            Json::Num(_) => Kind::Number,
            Json::Str(_) => Kind::String,
            Json::List(_) => Kind::List,
            Json::Object(_) => Kind::Object,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value in a message, as `shown` writes it.
    fn shown(&self) -> String {
        match self {
            Json::Str(s) => quote(s),
            other => shown(&other.to_value()),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Json<'de>, E> {
        Ok(Json::Num(n.into()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Json<'de>, E> {
        Ok(Json::Num(n.into()))
    }
    /// As serde_json's own `Value` reads a float.
    fn visit_f64<E>(self, n: f64) -> Result<Json<'de>, E> {
        Ok(Number::from_f64(n).map_or(Json::Null, Json::Num))
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E>(self, s: String) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(s)))
    }
    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut fields = Vec::new();
        let mut seen = Seen::default();
        while let Some(Key(key)) = map.next_key()? {
            seen.insert::<A::Error>(key.clone())?;
            fields.push((key, map.next_value()?));
        }
        Ok(Json::Object(fields))
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
        // A good entry with one field given the value (`None`: left out).
        for (field, value) in [
            ("protocol", Some(r#""ICMP""#)),
            ("port", Some("[0]")),
            ("port", Some("[65536]")),
            ("port", Some(r#"["9-8"]"#)),
            ("port", Some(r#"[" 80"]"#)),
            ("port", Some("[80.5]")),
            ("port", Some("[]")),
            ("is_necessary", Some("2")),
            ("is_necessary", None),
            ("ip", Some(r#""1.2.3.4 ""#)),
            ("ip", Some(r#""1.2.3""#)),
            ("description", Some("7")),
        ] {
            let good = [
                ("ip", r#""1.2.3.4""#),
                ("protocol", r#""TCP""#),
                ("port", "[1]"),
                ("is_necessary", "1"),
            ];
            let fields: Vec<String> = good
                .into_iter()
                .filter(|(key, _)| *key != field)
                .chain(value.map(|v| (field, v)))
                .map(|(key, v)| format!(r#""{key}":{v}"#))
                .collect();
            let m = err(&format!("{{{}}}", fields.join(",")));
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

    /// The document is read in one pass, each entry validated as it streams by: a key given
    /// twice in the 39,999th entry still refuses the whole input (even under
    /// --skip-invalid: it is bad JSON, not a bad entry), and the message names the entry.
    #[test]
    fn a_duplicate_key_deep_in_a_large_list_is_refused_naming_its_entry() {
        let good = r#"{"ip":"1.2.3.4","protocol":"TCP","port":[443],"is_necessary":1}"#;
        for (twice, key) in [
            (
                r#"{"ip":"1.2.3.5","protocol":"TCP","port":[443],"is_necessary":1,"port":[1]}"#,
                "port",
            ),
            (
                r#"{"ip":"1.2.3.5","x":1,"protocol":"TCP","port":[443],"is_necessary":1,"x":2}"#,
                "x",
            ),
            (
                r#"{"ip":"1.2.3.5","protocol":"TCP","port":[443],"is_necessary":1,"\u0069p":"1.2.3.6"}"#,
                "ip",
            ),
        ] {
            let mut doc = String::from(r#"{"errcode":0,"ip_list":["#);
            for i in 0..40_000 {
                if i > 0 {
                    doc.push(',');
                }
                doc.push_str(if i == 39_998 { twice } else { good });
            }
            doc.push_str("]}");
            for skip_invalid in [false, true] {
                let e = parse(doc.as_bytes(), skip_invalid).unwrap_err();
                assert_eq!(e.exit_code(), 2, "{e}");
                let want = format!(
                    r#"not valid JSON: ip_list[39998]: the key "{key}" appears twice in one object at line 1 column "#
                );
                assert!(e.to_string().contains(&want), "{e}");
            }
        }
        // Deeper inside an entry, the key is still refused where it stands.
        let e = parse(
            br#"{"domain_list":[{"domain":"a.example.com","protocol":"TCP","port":[443],"is_necessary":1,"x":[{"a":1,"a":2}]}]}"#,
            false,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains(r#"the key "a" appears twice in one object at line 1 column 104"#),
            "{e}"
        );
    }

    /// Errors are judged in the order of the checks, not of the keys in the file: bad JSON
    /// anywhere, then errcode, then which list it is, then domain_list's entries, then
    /// ip_list's.
    #[test]
    fn the_top_level_is_judged_before_entries_whatever_the_key_order() {
        let e = parse(br#"{"ip_list":[{"ip":"x"}],"errcode":45009}"#, false).unwrap_err();
        assert_eq!(e.exit_code(), 3, "{e}");
        let e = parse(
            br#"{"ip_list":[{"ip":"x"},{"ip":"1.2.3.4","ip":"1.2.3.4"}]}"#,
            false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("appears twice"), "{e}");
        let doc = br#"{"ip_list":[{"ip":"x"}],"domain_list":[{"domain":"com"}]}"#;
        let e = parse(doc, false).unwrap_err().to_string();
        assert!(
            e.starts_with("invalid input: domain_list[0].domain: "),
            "{e}"
        );
        let r = parse(doc, true).unwrap();
        assert!(
            r.skipped[0].starts_with("domain_list[0]."),
            "{:?}",
            r.skipped
        );
        assert!(r.skipped[1].starts_with("ip_list[0]."), "{:?}", r.skipped);
        // An ip_list of addresses is a plain list's until a domain_list after it says
        // otherwise, and a mark after it can make a plain list of it.
        let e = parse_any(br#"{"ip_list":["1.2.3.4"],"domain_list":[]}"#).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("ip_list[0]: must be an object, found a string"),
            "{e}"
        );
        let e = parse_any(br#"{"ip_list":[5,"1.2.3.4"],"list":"api"}"#).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("ip_list[0]: must be a string (an address or a CIDR), found a number"),
            "{e}"
        );
        let (found, r) = parse_any(br#"{"ip_list":["1.2.3.4"],"list":"callback"}"#).unwrap();
        assert_eq!(found, Found::Is(ListName::Callback));
        assert_eq!(r.entries[0].description, "");
        assert_eq!(r.entries[0].ports, api_ports());
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

/// A split read (see `read_split`) against the one pass, at every place a document could be
/// cut: the same entries, skipped lines and error, or no split at all.
#[cfg(test)]
mod split_tests {
    use super::*;
    use proptest::prelude::*;

    fn seed<'p, 'de>(
        want: Want,
        ports: &'p PortSet,
        skip_invalid: bool,
        interner: &'p RefCell<Interner>,
    ) -> DocSeed<'p, 'de> {
        DocSeed {
            want,
            ports,
            skip_invalid,
            interner,
            half: None,
        }
    }

    fn one_pass(text: &str, want: Want, skip_invalid: bool) -> String {
        let (ports, interner) = (api_ports(), RefCell::default());
        let seed = seed(want, &ports, skip_invalid, &interner);
        let r = read_all(serde_json::Deserializer::from_str(text), seed)
            .map_err(not_json)
            .and_then(|top| finish(top, want));
        format!("{r:?}")
    }

    fn split(text: &str, cut: Cut, want: Want, skip_invalid: bool) -> Option<String> {
        let (ports, interner) = (api_ports(), RefCell::default());
        let top = read_split(text, cut, seed(want, &ports, skip_invalid, &interner))?;
        Some(format!("{:?}", finish(top, want)))
    }

    /// Compares the split read at each cut `cut_at` finds (and with the other list guessed)
    /// with the one pass; returns how many cuts were read split.
    fn check(text: &str) -> usize {
        let mut split_reads = 0;
        for next in memchr::memchr_iter(b'{', text.as_bytes()) {
            let Some(cut) = cut_at(text.as_bytes(), next) else {
                continue;
            };
            for list in [ListKind::Ip, ListKind::Domain] {
                for want in [Want::Is(ListName::Server), Want::Any] {
                    for skip_invalid in [false, true] {
                        let cut = Cut { list, ..cut };
                        if let Some(got) = split(text, cut, want, skip_invalid) {
                            let one = one_pass(text, want, skip_invalid);
                            assert_eq!(got, one, "{cut:?} {want:?} {skip_invalid}\n{text}");
                            split_reads += 1;
                        }
                    }
                }
            }
        }
        split_reads
    }

    const GOOD: &str = r#"{"ip":"1.2.3.4","protocol":"TCP","port":[443],"is_necessary":1}"#;

    /// Items that make a document hard to cut: commas between objects inside strings and
    /// inner lists, escapes, bad entries, a key twice, items that are no object.
    fn item() -> impl Strategy<Value = String> {
        let description = prop_oneof![
            Just("plain"),
            Just("a},{b"),
            Just(r#"q\"},{\"r"#),
            Just(r"back\\},{"),
            Just(r"\u007d,{x"),
            Just("é ünï"),
        ];
        let necessary = prop_oneof![Just("1"), Just("0"), Just("2")];
        let ip = prop_oneof![
            Just("10.0.0.1"),
            Just("10.0.1.0/24"),
            Just("2001:db8::/32"),
            Just("x"),
            Just("10.0.0.1/8"),
        ];
        let object = (ip, description, necessary, 0..6u8).prop_map(|(ip, d, n, extra)| {
            let more = match extra {
                0 => r#","x":[{"a":1},{"b":2}]"#,
                1 => r#","ip":"10.9.9.9""#,
                2 => r#","y":{"a":1,"a":2}"#,
                3 => r#","\u0070ort":[1]"#,
                _ => "",
            };
            format!(
                r#"{{"ip":"{ip}","protocol":"TCP","port":[443,"80"],"is_necessary":{n},"description":"{d}"{more}}}"#
            )
        });
        prop_oneof![
            6 => object,
            1 => Just(GOOD.to_string()),
            1 => Just("7".to_string()),
            1 => Just(r#""1.2.3.4""#.to_string()),
            1 => Just("[{},{}]".to_string()),
        ]
    }

    /// A document around `items`: the list at the end or not, the other list before or after
    /// it, a key after the list (or the list's own key again), whitespace, and maybe one byte
    /// taken out anywhere.
    fn document() -> impl Strategy<Value = String> {
        let items = prop::collection::vec(item(), 0..8);
        let seps = prop::collection::vec(
            prop_oneof![Just(","), Just(", "), Just(",\n  "), Just(" ,")],
            8,
        );
        (items, seps, 0..4u8, 0..5u8, prop::option::of(any::<prop::sample::Index>()))
            .prop_map(|(items, seps, before, after, cut_out)| {
                let mut list = String::from("[");
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        list.push_str(seps[i]);
                    }
                    list.push_str(item);
                }
                list.push(']');
                let domains = r#"[{"domain":"a.example.com","protocol":"TCP","port":[443],"is_necessary":1},{"domain":"com"}]"#;
                let head = match before {
                    0 => String::from(r#"{"errcode":0,"errmsg":"ok","domain_list":[],"#),
                    1 => format!(r#"{{"domain_list":{domains},"#),
                    2 => String::from(r#"{"errcode":45009,"#),
                    _ => String::from("{ "),
                };
                let tail = match after {
                    0 => "}",
                    1 => "}\n",
                    2 => r#","list":"server"}"#,
                    3 => r#","ip_list":[]}"#,
                    _ => "} x",
                };
                let mut doc = format!(r#"{head}"ip_list":{list}{tail}"#);
                if let Some(at) = cut_out {
                    let at = at.index(doc.len());
                    if doc.is_char_boundary(at) && doc.is_char_boundary(at + 1) {
                        doc.remove(at);
                    }
                }
                doc
            })
    }

    proptest! {
        #[test]
        fn a_split_read_is_the_one_pass(doc in document()) {
            check(&doc);
        }
    }

    /// A domain_list as the last value is cut as well.
    #[test]
    fn a_domain_list_at_the_end_is_cut() {
        let domain = r#"{"domain":"a.example.com","protocol":"TCP","port":[443],"is_necessary":1}"#;
        let doc = format!(r#"{{"ip_list":[{GOOD}],"domain_list":[{domain},{domain},{domain}]}}"#);
        assert_eq!(check(&doc), 2 * 2 * 2);
    }

    /// The problems a split read must judge as the one pass does, each at every cut: a key
    /// twice (in either half) wins over a bad entry in the other, the first bad entry wins,
    /// and the skipped lines of the second half are numbered on from the first's.
    #[test]
    fn problems_in_either_half_are_judged_as_in_one_pass() {
        let bad = r#"{"ip":"x","protocol":"TCP","port":[443],"is_necessary":1}"#;
        let twice =
            r#"{"ip":"1.2.3.5","ip":"1.2.3.6","protocol":"TCP","port":[443],"is_necessary":1}"#;
        let deep = format!(
            r#"{{"ip":"1.2.3.7","protocol":"TCP","port":[443],"is_necessary":1,"x":{}1{}}}"#,
            "[".repeat(125),
            "]".repeat(125)
        );
        let no_comma = format!("{GOOD}{GOOD}");
        // Good in either list, differently.
        let both = r#"{"ip":"1.2.3.4","domain":"a.example.com","protocol":"TCP","port":[443],"is_necessary":1}"#;
        for items in [
            vec![GOOD, bad, GOOD, GOOD, bad, GOOD],
            vec![bad, GOOD, GOOD, twice, GOOD],
            vec![GOOD, twice, GOOD, bad, GOOD],
            vec![GOOD, GOOD, GOOD, "{", GOOD],
            vec![GOOD, GOOD, GOOD, &deep],
            vec![GOOD, &no_comma, GOOD, GOOD],
            vec![both, both, both],
        ] {
            let doc = format!(r#"{{"errcode":0,"ip_list":[{}]}}"#, items.join(","));
            check(&doc);
        }
        // A clean list is read split at every cut, whatever it is read as.
        let doc = format!(r#"{{"errcode":0,"ip_list":[{}]}}"#, [GOOD; 5].join(",\n "));
        assert_eq!(check(&doc), 4 * 2 * 2);
    }

    /// The cut is found near the middle of a large document, and a small one is read in one
    /// pass.
    #[test]
    fn only_a_large_list_is_cut() {
        let doc = format!(
            r#"{{"errcode":0,"ip_list":[{}]}}"#,
            [GOOD; 10_000].join(", ")
        );
        assert!(doc.len() > SPLIT_MIN);
        let want = Want::Is(ListName::Server);
        if crate::cores() > 1 {
            let cut = find_cut(&doc, want).unwrap();
            assert!(cut.at.abs_diff(doc.len() / 2) < 2 * GOOD.len(), "{cut:?}");
            assert_eq!(cut.list, ListKind::Ip);
            assert_eq!(
                split(&doc, cut, want, false),
                Some(one_pass(&doc, want, false))
            );
        }
        let small = format!(r#"{{"errcode":0,"ip_list":[{}]}}"#, [GOOD; 10].join(", "));
        assert_eq!(find_cut(&small, want), None);
        assert_eq!(find_cut(&doc, Want::Is(ListName::Api)), None);
    }
}
