//! What changed between two lists, for people (text), pull requests (markdown) and programs
//! (JSON). Destinations added or removed, and destinations whose entries changed: what they
//! allow (protocols and ports, with and without `--necessary-only`) or only their descriptions.
//! A description is a comment in every file and a field of `source.json`, so a change to it alone
//! is a change here too, as it is for `build --check`: the two never disagree.

use std::cmp::Ordering;

use serde_json::{json, Value};

use crate::list::{services_text, Key, List, Record, Services};
use crate::model::{Dest, ListKind};
use crate::text::quote_max;

#[derive(Debug, Default)]
pub struct Summary<'a> {
    pub added: Vec<(&'a Key, Record<'a>)>,
    pub removed: Vec<(&'a Key, Record<'a>)>,
    pub changed: Vec<(&'a Key, Record<'a>, Record<'a>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Markdown,
    Json,
}

/// One walk over both lists in their order: a key only in the old one was removed, one only
/// in the new one added, one in both changed when its records differ.
pub fn summarize<'a>(old: &'a List, new: &'a List) -> Summary<'a> {
    let mut s = Summary::default();
    let (mut before, mut after) = (old.records().peekable(), new.records().peekable());
    loop {
        let order = match (before.peek(), after.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((b, _)), Some((a, _))) => b.cmp(a),
        };
        match order {
            Ordering::Less => s.removed.extend(before.next()),
            Ordering::Greater => s.added.extend(after.next()),
            Ordering::Equal => {
                if let (Some((key, b)), Some((_, a))) = (before.next(), after.next()) {
                    if b != a {
                        s.changed.push((key, b, a));
                    }
                }
            }
        }
    }
    s
}

fn kind(key: &Key) -> &'static str {
    match key.list {
        ListKind::Ip => "ip",
        ListKind::Domain => "domain",
    }
}

/// The destination as the API writes it, with its wildcard family if it has one.
fn destination(key: &Key) -> String {
    let dest = match &key.dest {
        Dest::Wildcard(h) => format!("*.{h}"),
        other => other.to_string(),
    };
    match &key.universal {
        Some(u) => format!("{dest} (*.{u})"),
        None => dest,
    }
}

/// `tcp 443 (necessary)`, `tcp 443 (optional)`, or for a mix `tcp 80,443 (necessary: tcp 443)`.
fn effect(r: &Record) -> String {
    let (all, necessary) = (r.services(), r.necessary_services());
    let which = if necessary.is_empty() {
        "optional".to_owned()
    } else if necessary == all {
        "necessary".to_owned()
    } else {
        format!("necessary: {}", services_text(&necessary))
    };
    format!("{} ({which})", services_text(&all))
}

/// The descriptions of a destination, quoted and escaped (free text is hostile; an invisible
/// character shows as its escape, so two descriptions that look alike never print the same).
/// With more than one, each says which services it covers (and, with `necessary`, whether it
/// is marked necessary).
fn descriptions(r: &Record, necessary: bool) -> String {
    let whole = |d: &str| quote_max(d, usize::MAX);
    if r.by_note.len() == 1 {
        return r
            .by_note
            .iter()
            .map(|(n, _)| whole(&n.description))
            .collect();
    }
    let mut parts: Vec<String> = r
        .by_note
        .iter()
        .map(|(n, services)| {
            let necessary = if necessary && n.necessary {
                ", necessary"
            } else {
                ""
            };
            format!(
                "{} ({}{necessary})",
                whole(&n.description),
                services_text(services)
            )
        })
        .collect();
    // By text, so that the order says nothing about which one is necessary.
    parts.sort_unstable();
    parts.join(", ")
}

/// The descriptions before and after, when they differ. When nothing else changed, something
/// about them did: which of them is marked necessary, if not their text or services.
fn description_change(before: &Record, after: &Record) -> Option<(String, String)> {
    let (b, a) = (descriptions(before, false), descriptions(after, false));
    if b != a {
        Some((b, a))
    } else if before.same_effect(after) {
        Some((descriptions(before, true), descriptions(after, true)))
    } else {
        None
    }
}

/// Markdown text that renders as itself: every ASCII punctuation character backslash-escaped
/// (CommonMark allows it for all of them), so a description can't close a table cell, open a
/// link or an HTML tag, or start a code span.
fn markdown_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_punctuation() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One line of a summary: what happened to a destination, with its state before and after.
struct Row<'a> {
    change: &'static str,
    key: &'a Key,
    before: Option<Record<'a>>,
    after: Option<Record<'a>>,
}

impl Summary<'_> {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    fn counts(&self) -> String {
        format!(
            "{} added, {} removed, {} changed",
            self.added.len(),
            self.removed.len(),
            self.changed.len()
        )
    }

    /// Added, then removed, then changed, each in the lists' order.
    fn rows(&self) -> impl Iterator<Item = Row<'_>> {
        let added = self.added.iter().map(|&(key, r)| Row {
            change: "added",
            key,
            before: None,
            after: Some(r),
        });
        let removed = self.removed.iter().map(|&(key, r)| Row {
            change: "removed",
            key,
            before: Some(r),
            after: None,
        });
        let changed = self.changed.iter().map(|&(key, b, a)| Row {
            change: "changed",
            key,
            before: Some(b),
            after: Some(a),
        });
        added.chain(removed).chain(changed)
    }

    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Text => self.text(),
            Format::Markdown => self.markdown(),
            Format::Json => {
                let mut text = serde_json::to_string_pretty(&self.json()).unwrap_or_default();
                text.push('\n');
                text
            }
        }
    }

    /// `+ ip 192.0.2.1/32: tcp 443 (necessary)`, `-` for removed, `~ ...: before -> after`.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for row in self.rows() {
            let head = format!("{} {}", kind(row.key), destination(row.key));
            let line = match (row.before, row.after) {
                (None, Some(a)) => format!("+ {head}: {}", effect(&a)),
                (Some(b), None) => format!("- {head}: {}", effect(&b)),
                (Some(b), Some(a)) => {
                    let services = if b.same_effect(&a) {
                        effect(&a)
                    } else {
                        format!("{} -> {}", effect(&b), effect(&a))
                    };
                    match description_change(&b, &a) {
                        Some((db, da)) => format!("~ {head}: {services}; description {db} -> {da}"),
                        None => format!("~ {head}: {services}"),
                    }
                }
                (None, None) => continue,
            };
            out.push_str(&line);
            out.push('\n');
        }
        out.push_str(&self.counts());
        out.push('\n');
        out
    }

    pub fn markdown(&self) -> String {
        let mut out = format!("### WeCom allowlist changes\n\n{}\n", self.counts());
        if self.is_empty() {
            return out;
        }
        out.push_str("\n| change | kind | destination | before | after |\n|---|---|---|---|---|\n");
        // Destinations and services are validated values: no markdown can ride in on them.
        // Descriptions are free text, escaped.
        for row in self.rows() {
            let notes = match (row.before, row.after) {
                (Some(b), Some(a)) => description_change(&b, &a),
                _ => None,
            };
            let cell = |r: Option<Record>, note: Option<&String>| {
                let mut cell = r.map(|r| effect(&r)).unwrap_or_default();
                if let Some(d) = note {
                    cell.push_str("; description ");
                    cell.push_str(&markdown_text(d));
                }
                cell
            };
            out.push_str(&format!(
                "| {} | {} | `{}` | {} | {} |\n",
                row.change,
                kind(row.key),
                destination(row.key),
                cell(row.before, notes.as_ref().map(|n| &n.0)),
                cell(row.after, notes.as_ref().map(|n| &n.1)),
            ));
        }
        out
    }

    pub fn json(&self) -> Value {
        let services = |s: &Services| -> serde_json::Map<String, Value> {
            s.iter()
                .map(|(p, ports)| (p.as_str().to_owned(), json!(ports.api_values())))
                .collect()
        };
        // `is_necessary`: some entry is; `necessary_services`: what --necessary-only keeps;
        // `descriptions`: each description with whether it is necessary and what it covers.
        let record = |r: &Record| {
            let notes: Vec<Value> = r
                .by_note
                .iter()
                .map(|(n, s)| {
                    json!({
                        "description": n.description,
                        "is_necessary": n.necessary,
                        "services": services(s),
                    })
                })
                .collect();
            json!({
                "services": services(&r.services()),
                "is_necessary": r.any_necessary(),
                "necessary_services": services(&r.necessary_services()),
                "descriptions": notes,
            })
        };
        let mut out = json!({
            "counts": {
                "added": self.added.len(),
                "removed": self.removed.len(),
                "changed": self.changed.len(),
            },
            "added": [],
            "removed": [],
            "changed": [],
        });
        for row in self.rows() {
            let mut item = json!({
                "list": row.key.list.as_str(),
                "destination": match &row.key.dest {
                    Dest::Wildcard(h) => format!("*.{h}"),
                    d => d.to_string(),
                },
                "universal_domian": row.key.universal.as_ref().map(|u| u.as_str()),
            });
            if let Some(b) = row.before {
                item["before"] = record(&b);
            }
            if let Some(a) = row.after {
                item["after"] = record(&a);
            }
            if let Some(list) = out[row.change].as_array_mut() {
                list.push(item);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::list::tests::list;

    #[test]
    fn added_removed_and_changed() {
        let old = list(
            r#"{"ip_list":[
            {"ip":"192.0.2.1","protocol":"TCP","port":[443],"is_necessary":0,"description":"kept"},
            {"ip":"192.0.2.2","protocol":"TCP","port":[443],"is_necessary":0},
            {"ip":"192.0.2.3","protocol":"TCP","port":[443],"is_necessary":0}]}"#,
        );
        let new = list(
            r#"{"ip_list":[
            {"ip":"192.0.2.1","protocol":"TCP","port":[443],"is_necessary":0,"description":"new text"},
            {"ip":"192.0.2.3","protocol":"TCP","port":[80,443],"is_necessary":1},
            {"ip":"198.51.100.0/24","protocol":"UDP","port":["8000-8100"],"is_necessary":1}]}"#,
        );
        let s = summarize(&old, &new);
        assert_eq!(
            s.text(),
            "+ ip 198.51.100.0/24: udp 8000-8100 (necessary)\n\
             - ip 192.0.2.2/32: tcp 443 (optional)\n\
             ~ ip 192.0.2.1/32: tcp 443 (optional); description \"kept\" -> \"new text\"\n\
             ~ ip 192.0.2.3/32: tcp 443 (optional) -> tcp 80,443 (necessary)\n\
             1 added, 1 removed, 2 changed\n"
        );
        assert!(s.markdown().contains(
            "| changed | ip | `192.0.2.3/32` | tcp 443 (optional) | tcp 80,443 (necessary) |"
        ));
        let j = s.json();
        assert_eq!(j["removed"][0]["destination"], "192.0.2.2/32");
        assert_eq!(
            j["changed"][1]["after"]["services"]["tcp"],
            json!([80, 443])
        );
        assert_eq!(
            j["added"][0]["after"]["services"]["udp"],
            json!(["8000-8100"])
        );
        assert_eq!(j["counts"], json!({"added": 1, "removed": 1, "changed": 2}));
        assert_eq!(
            j["changed"][0]["after"]["descriptions"],
            json!([{"description": "new text", "is_necessary": false, "services": {"tcp": [443]}}])
        );
        assert!(summarize(&new, &new).is_empty());
    }

    #[test]
    fn necessary_moving_between_services_is_a_change_and_so_are_descriptions() {
        let old = list(
            r#"{"ip_list":[
            {"ip":"192.0.2.1","protocol":"TCP","port":[443],"is_necessary":1,"description":"a"},
            {"ip":"192.0.2.1","protocol":"UDP","port":[3478],"is_necessary":0,"description":"b"}]}"#,
        );
        let new = list(
            r#"{"ip_list":[
            {"ip":"192.0.2.1","protocol":"TCP","port":[443],"is_necessary":0,"description":"a"},
            {"ip":"192.0.2.1","protocol":"UDP","port":[3478],"is_necessary":1,"description":"b"}]}"#,
        );
        let s = summarize(&old, &new);
        assert_eq!(
            s.text(),
            "~ ip 192.0.2.1/32: tcp 443; udp 3478 (necessary: tcp 443) -> tcp 443; udp 3478 (necessary: udp 3478)\n\
             0 added, 0 removed, 1 changed\n"
        );
        assert_eq!(
            s.json()["changed"][0]["after"]["necessary_services"]["udp"],
            json!([3478])
        );
        let reworded = list(
            r#"{"ip_list":[
            {"ip":"192.0.2.1","protocol":"TCP","port":[443],"is_necessary":1,"description":"new"},
            {"ip":"192.0.2.1","protocol":"UDP","port":[3478],"is_necessary":0}]}"#,
        );
        assert_eq!(
            summarize(&old, &reworded).text(),
            "~ ip 192.0.2.1/32: tcp 443; udp 3478 (necessary: tcp 443); description \
             \"a\" (tcp 443), \"b\" (udp 3478) -> \"\" (udp 3478), \"new\" (tcp 443)\n\
             0 added, 0 removed, 1 changed\n"
        );
        // Only which description is necessary changed: the firewall allows the same, the
        // comments say otherwise.
        let swap = |a: u8, b: u8| {
            list(&format!(
                r#"{{"ip_list":[
                {{"ip":"192.0.2.1","protocol":"TCP","port":[443],"is_necessary":{a},"description":"a"}},
                {{"ip":"192.0.2.1","protocol":"TCP","port":[443],"is_necessary":{b},"description":"b"}}]}}"#
            ))
        };
        assert_eq!(
            summarize(&swap(1, 0), &swap(0, 1)).text(),
            "~ ip 192.0.2.1/32: tcp 443 (necessary); description \
             \"a\" (tcp 443, necessary), \"b\" (tcp 443) -> \"a\" (tcp 443), \"b\" (tcp 443, necessary)\n\
             0 added, 0 removed, 1 changed\n"
        );
    }
}
