//! A response, as bytes, through the parser, the selection and every renderer.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wecom_allowlist::render::Templates;

fn templates() -> &'static Templates {
    static TEMPLATES: OnceLock<Templates> = OnceLock::new();
    TEMPLATES.get_or_init(|| Templates::new(None).expect("the built-in templates compile"))
}

fuzz_target!(|data: &[u8]| {
    checks::check_response(data, templates());
});
