//! Keeping the corp secret and the tokens out of everything shown: messages, saved answers and
//! log lines. Whatever may echo a credential (a server's text, a proxy's error page, another
//! crate's log line) passes through here first.

use std::io;
use std::sync::Mutex;

use reqwest::Url;
use serde_json::Value;

use super::credentials::{Credentials, Secret, MIN_SECRET_CHARS};
use crate::text::quote_max;

/// How much of a body that is not JSON to quote in a message.
const SNIPPET_CHARS: usize = 200;

/// Every credential a fetch has seen, raw and percent-encoded, to scrub from text the server
/// sent before it is shown.
#[derive(Default)]
pub(super) struct Redactor {
    hidden: Vec<String>,
}

impl Redactor {
    /// One that hides the credentials given.
    pub(super) fn new(credentials: &Credentials) -> Self {
        let mut redactor = Redactor::default();
        if let Some((_, secret)) = &credentials.app {
            redactor.redact(secret);
        }
        if let Some(token) = &credentials.token {
            redactor.redact(token);
        }
        redactor
    }

    /// Hides `secret` from every message and log line from now on, raw and percent-encoded.
    pub(super) fn redact(&mut self, secret: &Secret) {
        self.hide(secret.expose());
        if let Some(encoded) = percent_encoded(secret.expose()) {
            self.hide(&encoded);
        }
    }

    /// Hides `text` as it stands (a proxy's encoded credentials, say).
    pub(super) fn hide(&mut self, text: &str) {
        if text.is_empty() || self.hidden.iter().any(|h| h == text) {
            return;
        }
        self.hidden.push(text.to_owned());
        if let Ok(mut all) = LOG_HIDDEN.lock() {
            all.push(text.to_owned());
        }
    }

    pub(super) fn scrub(&self, text: &str) -> String {
        scrub_words(&self.hidden, text)
    }

    /// A JSON document with every credential scrubbed from its strings, keys included.
    pub(super) fn scrub_json(&self, value: Value) -> Value {
        match value {
            Value::String(s) => Value::String(self.scrub(&s)),
            Value::Array(items) => items.into_iter().map(|v| self.scrub_json(v)).collect(),
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| (self.scrub(&k), self.scrub_json(v)))
                    .collect(),
            ),
            other => other,
        }
    }

    /// The start of a body for a message, escaped, with every credential scrubbed before it is
    /// cut (so that no half of one survives).
    pub(super) fn snippet(&self, body: &[u8]) -> String {
        let text = String::from_utf8_lossy(body);
        if text.trim().is_empty() {
            return "the answer is empty".into();
        }
        format!(
            "it starts with {}",
            quote_max(&self.scrub(&text), SNIPPET_CHARS)
        )
    }
}

/// `value` as a query string carries it (`+` as `%2B`, a space as `+`): the form a proxy's
/// page or a log line echoes the request in.
fn percent_encoded(value: &str) -> Option<String> {
    let mut probe = Url::parse("http://localhost/").ok()?;
    probe.query_pairs_mut().append_pair("v", value);
    probe.query()?.strip_prefix("v=").map(str::to_owned)
}

/// Every credential this process has seen, for `ScrubbedStderr`: reqwest and hyper log through
/// `log` with text of their own, out of reach of `Redactor::scrub`.
static LOG_HIDDEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Standard error for log lines, with every credential the fetch knows scrubbed. The log layer
/// writes each event in one piece, so a credential never straddles two writes.
pub struct ScrubbedStderr;

impl io::Write for ScrubbedStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let clean = scrub_log(&String::from_utf8_lossy(buf));
        io::stderr().write_all(clean.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// A log line without any credential seen so far.
fn scrub_log(text: &str) -> String {
    match LOG_HIDDEN.lock() {
        Ok(hidden) => scrub_words(&hidden, text),
        // A panic while holding the lock left the list as it was: still usable.
        Err(poisoned) => scrub_words(&poisoned.into_inner(), text),
    }
}

/// Characters that make up a token, a Secret or their percent-encoded forms.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '-' | '_' | '%')
}

/// `text` with each word (run of `is_word_char`) that contains one of `hidden` replaced by
/// `[redacted]`: whole words only, so no part of a credential glued to other characters
/// survives and no ordinary word is cut in two. A value shorter than `MIN_SECRET_CHARS` (a
/// proxy's encoded password, say) hides only words equal to it, lest it blank out every word
/// that happens to contain it.
fn scrub_words(hidden: &[String], text: &str) -> String {
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for secret in hidden.iter().filter(|s| !s.is_empty()) {
        for (at, found) in text.match_indices(secret.as_str()) {
            let start = text[..at]
                .char_indices()
                .rev()
                .take_while(|&(_, c)| is_word_char(c))
                .last()
                .map_or(at, |(i, _)| i);
            let end = at + found.len();
            let end = end
                + text[end..]
                    .chars()
                    .take_while(|&c| is_word_char(c))
                    .map(char::len_utf8)
                    .sum::<usize>();
            if secret.len() >= MIN_SECRET_CHARS || (start, end) == (at, at + found.len()) {
                spans.push((start, end));
            }
        }
    }
    if spans.is_empty() {
        return text.to_owned();
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut done = 0;
    for (start, end) in spans {
        if end <= done {
            continue;
        }
        if start >= done {
            out.push_str(&text[done..start]);
            out.push_str("[redacted]");
        }
        done = end;
    }
    out.push_str(&text[done..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubbing_covers_raw_and_encoded_forms() {
        let credentials = Credentials::new(
            Some("ww1".into()),
            Some(Secret::new("a+b/c-secret-secret")),
            Some(Secret::new("tok-token-token-token")),
        )
        .unwrap();
        let redactor = Redactor::new(&credentials);
        let page = b"<h1>403</h1> GET /cgi-bin/gettoken?corpid=ww1&corpsecret=a%2Bb%2Fc-secret-secret a+b/c-secret-secret tok-token-token-token";
        let shown = redactor.snippet(page);
        assert!(
            !shown.contains("a%2Bb") && !shown.contains("a+b") && !shown.contains("tok-"),
            "{shown}"
        );
        assert_eq!(redactor.snippet(b"  \n"), "the answer is empty");
        // Log lines of other crates, which never pass through the redactor, are scrubbed too.
        assert_eq!(
            scrub_log(
                "GET /x?access_token=tok-token-token-token&corpsecret=a%2Bb%2Fc-secret-secret"
            ),
            "GET /x?access_token=[redacted]&corpsecret=[redacted]"
        );
        assert!(redactor.snippet(&[b'x'; 500]).ends_with("\"..."));
    }

    #[test]
    fn scrubbing_hides_whole_words_only() {
        let hidden = ["S3cretS3cretS3cret".to_owned(), "ok".to_owned()];
        // Glued to other characters, the whole word goes; ordinary words are never cut.
        assert_eq!(
            scrub_words(
                &hidden,
                "x=S3cretS3cretS3cret&y=abcS3cretS3cretS3cretdef. ok, book, okay"
            ),
            "x=[redacted]&y=[redacted]. [redacted], book, okay"
        );
        assert_eq!(scrub_words(&hidden, "nothing here"), "nothing here");
        assert_eq!(
            scrub_words(&hidden, "企业S3cretS3cretS3cret企业 end"),
            "[redacted] end"
        );
    }
}
