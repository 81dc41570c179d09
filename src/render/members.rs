//! A group's members as the templates see them, without a map of values per member: a list of
//! 100,000 addresses would otherwise cost the template engine several microseconds a member.
//!
//! `g.members` is a lazy sequence over data shared by every view of the group; `m.value`,
//! `m.short`, `m.note` ... are made only when a template reads them. The built-in templates
//! print their per-member lines with `{{ g.members|each(line) }}`: the template still writes
//! the line's text, and Rust fills in each member's fields, escaped for the target, and writes
//! the lines straight into the output.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::io;
use std::sync::Arc;

use ipnet::IpNet;

use minijinja::value::{Enumerator, Kwargs, Object, ObjectRepr, Value};
use minijinja::{Error as TemplateError, ErrorKind, State};

use crate::model::{ipv4_text, Dest};
use crate::normalize::{Member, Notes};
use crate::target::Syntax;

/// A member's note, kept once for every member with the same notes: notes repeat a lot.
#[derive(Debug)]
struct NoteText {
    /// `required: 描述; other` - free text, printed only through the target's escaping.
    text: Arc<str>,
    necessary: bool,
}

impl NoteText {
    fn of(notes: &Notes) -> NoteText {
        let necessary = notes.iter().any(|n| n.necessary);
        let mut descriptions: Vec<&str> = notes
            .iter()
            .map(|n| n.description.as_str())
            .filter(|d| !d.trim().is_empty())
            .collect();
        descriptions.sort_unstable();
        descriptions.dedup();
        let mut text = String::from(if necessary { "required" } else { "optional" });
        if !descriptions.is_empty() {
            text.push_str(": ");
            text.push_str(&descriptions.join("; "));
        }
        NoteText {
            text: text.into(),
            necessary,
        }
    }
}

/// A member's destination, in 8 bytes: an IPv4 network (most of a large list) as it is,
/// anything else by its place in `MemberData::others`. Each target's view copies its groups'
/// destinations, so at a million members their size is the copy's cost.
#[derive(Debug, Clone, Copy)]
enum Slot {
    V4(ipnet::Ipv4Net),
    Other(u32),
}

/// The members of one group: destinations, and per member the index of its note.
#[derive(Debug)]
struct MemberData {
    dests: Vec<Slot>,
    /// The destinations that are not IPv4 networks.
    others: Vec<Dest>,
    note_ids: Vec<u32>,
    notes: Vec<NoteText>,
}

impl MemberData {
    /// The `i`th member's destination.
    fn dest(&self, i: usize) -> std::borrow::Cow<'_, Dest> {
        match self.dests[i] {
            Slot::V4(n) => std::borrow::Cow::Owned(Dest::Net(IpNet::V4(n))),
            Slot::Other(k) => std::borrow::Cow::Borrowed(&self.others[k as usize]),
        }
    }
}

/// `g.members`, or a part of it (`chunks`): a sequence of member views.
#[derive(Debug, Clone)]
pub struct Members {
    data: Arc<MemberData>,
    start: usize,
    end: usize,
}

impl Members {
    pub fn new(members: &[Member]) -> Members {
        let mut dests = Vec::with_capacity(members.len());
        let mut others = Vec::new();
        let mut note_ids = Vec::with_capacity(members.len());
        let mut notes = Vec::new();
        // By the set's identity: members share their set of notes (see `Notes`), and an
        // equal set that is not shared only costs its text twice.
        let mut ids: HashMap<usize, u32> = HashMap::new();
        // Neighbours often share their notes (a run of addresses from one entry).
        let mut last: Option<(&Notes, u32)> = None;
        for m in members {
            let id = match last {
                Some((set, id)) if set.same(&m.notes) => id,
                _ => {
                    let id = *ids.entry(m.notes.id()).or_insert_with(|| {
                        notes.push(NoteText::of(&m.notes));
                        // Fewer notes than members, and a group holds far fewer than 2^32.
                        u32::try_from(notes.len() - 1).unwrap_or(u32::MAX)
                    });
                    last = Some((&m.notes, id));
                    id
                }
            };
            dests.push(match &m.dest {
                Dest::Net(IpNet::V4(n)) => Slot::V4(*n),
                other => {
                    others.push(other.clone());
                    // A group holds far fewer than 2^32 members.
                    Slot::Other(u32::try_from(others.len() - 1).unwrap_or(u32::MAX))
                }
            });
            note_ids.push(id);
        }
        let end = dests.len();
        Members {
            data: Arc::new(MemberData {
                dests,
                others,
                note_ids,
                notes,
            }),
            start: 0,
            end,
        }
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Parts of at most `size` members, in order.
    pub fn chunks(&self, size: usize) -> Vec<Value> {
        (self.start..self.end)
            .step_by(size.max(1))
            .map(|start| {
                Value::from_object(Members {
                    data: Arc::clone(&self.data),
                    start,
                    end: (start + size).min(self.end),
                })
            })
            .collect()
    }

    fn note(&self, i: usize) -> &NoteText {
        &self.data.notes[self.data.note_ids[i] as usize]
    }
}

impl Object for Members {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let i = key.as_usize()?;
        (i < self.len()).then(|| {
            Value::from_object(MemberView {
                members: Members::clone(self),
                index: self.start + i,
            })
        })
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Seq(self.len())
    }
}

/// The fields of a member, in the order `--dump-context` shows them.
const FIELDS: &[&str] = &["value", "short", "wildcard", "necessary", "note"];

/// One member, as `m` in `{% for m in g.members %}`.
#[derive(Debug)]
struct MemberView {
    members: Members,
    index: usize,
}

impl Object for MemberView {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.get_value_by_str(key.as_str()?)
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<Value> {
        let dest = &*self.members.data.dest(self.index);
        let mut text = String::new();
        Some(match key {
            // `1.2.3.4/32`, `2001:db8::/32`, `i.work.weixin.qq.com` or `.work.weixin.qq.com`.
            "value" => {
                push_dest(&mut text, dest, false);
                Value::from(text)
            }
            // `1.2.3.4` for a host route, else the same as `value`.
            "short" => {
                push_dest(&mut text, dest, true);
                Value::from(text)
            }
            "wildcard" => Value::from(matches!(dest, Dest::Wildcard(_))),
            "necessary" => Value::from(self.members.note(self.index).necessary),
            "note" => Value::from(Arc::clone(&self.members.note(self.index).text)),
            _ => return None,
        })
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(FIELDS)
    }
}

/// A destination as the templates print it; `short` drops a host route's prefix length.
fn push_dest(out: &mut String, dest: &Dest, short: bool) {
    match dest {
        Dest::Net(IpNet::V4(n)) => {
            let len = Some(n.prefix_len()).filter(|&len| !(short && len == 32));
            out.push_str(ipv4_text(n.addr(), len, &mut [0; 20]));
        }
        // Writing to a String can't fail.
        Dest::Net(n) if short && n.prefix_len() == n.max_prefix_len() => {
            let _ = write!(out, "{}", n.addr());
        }
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

/// A piece of an `each` format.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Value,
    Short,
    Note,
    /// `line` only: the part's members.
    Items,
}

/// Splits a format at its placeholders. `{` not followed by a known name and `}` is text
/// (`{ 80, 443 }` in nft), but a `{name}` of letters that names no field is refused, so that a
/// misspelt placeholder isn't printed as it stands.
fn parse_format(format: &str, items: bool) -> Result<Vec<Piece>, TemplateError> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut rest = format;
    while let Some(open) = rest.find('{') {
        text.push_str(&rest[..open]);
        rest = &rest[open..];
        let name_len = rest[1..]
            .bytes()
            .take_while(|b| b.is_ascii_lowercase() || *b == b'_')
            .count();
        let closed = name_len > 0 && rest.as_bytes().get(1 + name_len) == Some(&b'}');
        if !closed {
            text.push('{');
            rest = &rest[1..];
            continue;
        }
        let piece = match &rest[1..=name_len] {
            "value" => Piece::Value,
            "short" => Piece::Short,
            "note" => Piece::Note,
            "items" if items => Piece::Items,
            other => {
                return Err(TemplateError::new(
                    ErrorKind::InvalidOperation,
                    format!(
                        "each: unknown placeholder {{{other}}} (use {})",
                        if items {
                            "{items}"
                        } else {
                            "{value}, {short} or {note}"
                        }
                    ),
                ))
            }
        };
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
        }
        pieces.push(piece);
        rest = &rest[name_len + 2..];
    }
    text.push_str(rest);
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

/// The output of `each`: written into the template's output when printed.
#[derive(Debug)]
pub struct Lines {
    members: Members,
    item: Vec<Piece>,
    sep: String,
    /// Members per line, and the line's format around them (`{items}`).
    line: Option<(usize, Vec<Piece>)>,
    /// Each note the members use, escaped once, by note index.
    notes: Vec<Option<String>>,
    syntax: Syntax,
}

impl Lines {
    fn push_member(&self, out: &mut String, i: usize) {
        let data = &self.members.data;
        for piece in &self.item {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Value | Piece::Short => {
                    let dest = &*data.dest(i);
                    match dest {
                        // An address or network is digits, hex letters, '.', ':' and '/',
                        // which no target's escaping changes.
                        Dest::Net(_) => push_dest(out, dest, *piece == Piece::Short),
                        Dest::Exact(_) | Dest::Wildcard(_) => {
                            let mut text = String::new();
                            push_dest(&mut text, dest, false);
                            out.push_str(&self.syntax.escape(&text));
                        }
                    }
                }
                Piece::Note => {
                    let id = data.note_ids[i] as usize;
                    out.push_str(self.notes[id].as_deref().unwrap_or_default());
                }
                Piece::Items => {}
            }
        }
    }

    /// Writes the members from `start` to `end`, `sep` between them.
    fn push_members(
        &self,
        out: &mut String,
        f: &mut fmt::Formatter<'_>,
        start: usize,
        end: usize,
    ) -> fmt::Result {
        for i in start..end {
            if i > start {
                out.push_str(&self.sep);
            }
            self.push_member(out, i);
            // Written in pieces of about 64 KiB: the output streams, and few calls go through
            // the template engine's writer.
            if out.len() >= 1 << 16 {
                f.write_str(out)?;
                out.clear();
            }
        }
        Ok(())
    }
}

impl Object for Lines {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (start, end) = (self.members.start, self.members.end);
        // Room for the pieces below, or for a few members' lines: a small render asking for
        // 128 KiB gets it from mmap, and gives it back, with a page fault for each page used.
        let mut out = String::with_capacity((end - start).saturating_mul(64).min(1 << 17));
        match &self.line {
            None => self.push_members(&mut out, f, start, end)?,
            Some((size, line)) => {
                for part in (start..end).step_by(*size) {
                    for piece in line {
                        match piece {
                            Piece::Text(t) => out.push_str(t),
                            Piece::Items => {
                                self.push_members(&mut out, f, part, (part + size).min(end))?
                            }
                            // Refused when the format was read.
                            Piece::Value | Piece::Short | Piece::Note => {}
                        }
                    }
                }
            }
        }
        f.write_str(&out)
    }
}

/// `{{ g.members|each(line, sep, note=macro, chunk=n, line=format) }}`: every member's `line`,
/// `sep` (default none) between two, with `{value}`, `{short}` and `{note}` replaced by the
/// member's fields escaped for the target, as `{{ m.value }}` would print them. `note=` names
/// a macro that prints a note (`{% macro n(text) %}{{ text|comment(255) }}{% endmacro %}`):
/// it runs once per distinct note. With `chunk=n`, the members go `n` at a time into `line=`'s
/// `{items}`. The formats are template text, printed as they are: build them from literals
/// and `{{ }}` output (a `{% set %}` block), never from free text.
pub fn each_filter(
    state: &State,
    members: Value,
    item: &str,
    sep: Option<&str>,
    kwargs: Kwargs,
) -> Result<Value, TemplateError> {
    let Some(members) = members.downcast_object_ref::<Members>() else {
        return Err(TemplateError::new(
            ErrorKind::InvalidOperation,
            "each: takes a group's members (g.members, or a part of them from chunks)",
        ));
    };
    let syntax = super::syntax_of(state)?;
    let line = match kwargs.get::<Option<usize>>("chunk")? {
        Some(0) => {
            return Err(TemplateError::new(
                ErrorKind::InvalidOperation,
                "each: chunk=0",
            ))
        }
        Some(size) => Some((size, parse_format(kwargs.get::<&str>("line")?, true)?)),
        None => None,
    };
    let note_macro: Option<Value> = kwargs.get("note")?;
    kwargs.assert_all_used()?;
    let item = parse_format(item, false)?;
    let data = &members.data;
    let mut notes = vec![None; data.notes.len()];
    if item.contains(&Piece::Note) {
        for &id in &data.note_ids[members.start..members.end] {
            let slot = &mut notes[id as usize];
            if slot.is_none() {
                let text = &data.notes[id as usize].text;
                *slot = Some(match &note_macro {
                    None => syntax.escape(text),
                    Some(m) => {
                        let shown = m.call(state, &[Value::from(Arc::clone(text))])?;
                        if shown.is_safe() {
                            shown.to_string()
                        } else {
                            syntax.escape(&shown.to_string())
                        }
                    }
                });
            }
        }
    }
    Ok(Value::from_object(Lines {
        members: members.clone(),
        item,
        sep: sep.unwrap_or_default().to_owned(),
        line,
        notes,
        syntax,
    }))
}

/// The writer a render goes through: it refuses a line longer than the target's loader reads
/// as the line is written, without holding the text. It counts an overlong line to its end
/// (the message says how long it is), then stops the render; the caller discards what was
/// written.
pub struct LineCheck<'w> {
    out: &'w mut dyn io::Write,
    max: Option<usize>,
    /// 1-based number of the line being written, and its bytes so far.
    line: usize,
    len: usize,
    /// The last byte written was `\r`: a `\r\n` ends a line without the `\r`, as `str::lines`
    /// reads it.
    cr: bool,
    too_long: Option<(usize, usize)>,
    /// An error of the writer itself.
    pub failed: Option<io::Error>,
}

impl<'w> LineCheck<'w> {
    pub fn new(out: &'w mut dyn io::Write, max: Option<usize>) -> LineCheck<'w> {
        LineCheck {
            out,
            max,
            line: 1,
            len: 0,
            cr: false,
            too_long: None,
            failed: None,
        }
    }

    /// The overlong line that stopped the render: its number and length in bytes.
    pub fn stopped_at(&self) -> Option<(usize, usize)> {
        self.too_long
    }

    /// After the whole file: the first line longer than the limit.
    pub fn too_long(&self) -> Option<(usize, usize)> {
        match (self.too_long, self.max) {
            (Some(found), _) => Some(found),
            // The last line, without a newline.
            (None, Some(max)) if self.len > max => Some((self.line, self.len)),
            _ => None,
        }
    }

    fn stop() -> io::Error {
        io::Error::other("the output was refused")
    }
}

impl io::Write for LineCheck<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.too_long.is_some() || self.failed.is_some() {
            return Err(LineCheck::stop());
        }
        if let Some(max) = self.max {
            let mut rest = buf;
            while let Some(nl) = memchr::memchr(b'\n', rest) {
                let cr = if nl > 0 {
                    rest[nl - 1] == b'\r'
                } else {
                    self.cr
                };
                let len = self.len + nl - usize::from(cr);
                if len > max {
                    self.too_long = Some((self.line, len));
                    return Err(LineCheck::stop());
                }
                self.line += 1;
                self.len = 0;
                self.cr = false;
                rest = &rest[nl + 1..];
            }
            self.len += rest.len();
            if let Some(&last) = rest.last() {
                self.cr = last == b'\r';
            }
        }
        match self.out.write_all(buf) {
            Ok(()) => Ok(buf.len()),
            Err(e) => {
                self.failed = Some(e);
                Err(LineCheck::stop())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::net::Ipv4Addr;

    #[test]
    fn addresses_are_written_as_their_display_writes_them() {
        let mut nets: Vec<IpNet> = Vec::new();
        for octets in [
            [0, 0, 0, 0],
            [1, 2, 3, 4],
            [9, 10, 99, 100],
            [199, 200, 250, 255],
        ] {
            for len in [0, 8, 9, 10, 24, 31, 32] {
                nets.push(IpNet::V4(
                    ipnet::Ipv4Net::new(Ipv4Addr::from(octets), len).unwrap(),
                ));
            }
        }
        nets.push("2001:db8::1/128".parse().unwrap());
        nets.push("2001:db8::/32".parse().unwrap());
        for net in nets {
            let dest = Dest::Net(net);
            let (mut value, mut short) = (String::new(), String::new());
            push_dest(&mut value, &dest, false);
            push_dest(&mut short, &dest, true);
            assert_eq!(value, net.to_string());
            let host = net.prefix_len() == net.max_prefix_len();
            let expected = if host {
                net.addr().to_string()
            } else {
                net.to_string()
            };
            assert_eq!(short, expected);
        }
    }

    /// The lines `str::lines` gives, the last one without its newline, with their lengths.
    fn first_long_line(text: &str, max: usize) -> Option<(usize, usize)> {
        text.lines()
            .enumerate()
            .find(|(_, l)| l.len() > max)
            .map(|(i, l)| (i + 1, l.len()))
    }

    /// The check finds the line `str::lines` finds, however the text is cut into writes,
    /// with `\r\n` and a lone `\r` counted as `str::lines` counts them.
    #[test]
    fn line_check_agrees_with_str_lines() {
        let texts = [
            "short\nlonger line\nx\n",
            "12345\r\n123456\n",
            "12345\r\n",
            "1234\r5\n",
            "123456",
            "12345\r",
            "a\n\r\nb\n123456\r\n",
            "",
            "\n\n\n",
        ];
        for text in texts {
            for step in 1..=text.len().max(1) {
                let mut sink = Vec::new();
                let mut check = LineCheck::new(&mut sink, Some(5));
                let mut failed = false;
                for piece in text.as_bytes().chunks(step) {
                    if check.write_all(piece).is_err() {
                        failed = true;
                        break;
                    }
                }
                let found = if failed {
                    check.stopped_at()
                } else {
                    check.too_long()
                };
                assert_eq!(
                    found,
                    first_long_line(text, 5),
                    "{text:?} in writes of {step}"
                );
            }
        }
    }
}
