//! Two lists, split at the first NUL byte, through `diff` in every format; and a list against
//! its own source.json, which must show no change.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wecom_allowlist::diff::{summarize, Format};
use wecom_allowlist::list::List;
use wecom_allowlist::wecom;

fn list(bytes: &[u8]) -> Option<List> {
    wecom::parse(bytes, false)
        .ok()
        .map(|r| List::from_entries(&r.entries))
}

fuzz_target!(|data: &[u8]| {
    let (old, new) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, data),
    };
    let (Some(old), Some(new)) = (list(old), list(new)) else {
        return;
    };
    let summary = summarize(&old, &new);
    for format in [Format::Text, Format::Markdown, Format::Json] {
        let text = summary.render(format);
        if format == Format::Json {
            serde_json::from_str::<serde_json::Value>(&text).expect("diff --format json is JSON");
        }
    }
    assert!(
        summarize(&old, &old).is_empty(),
        "a list differs from itself"
    );
    let again = list(old.to_json().as_bytes()).expect("a source.json parses");
    assert!(
        summarize(&old, &again).is_empty(),
        "a list differs from its own source.json"
    );
});
