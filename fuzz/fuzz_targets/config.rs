//! A config file, as text, through the config parser, then with the seed list through every
//! renderer: names and options it accepts must give well-formed files.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wecom_allowlist::config::Config;
use wecom_allowlist::render::Templates;
use wecom_allowlist::wecom;

fn setup() -> &'static (Templates, wecom::Response) {
    static SETUP: OnceLock<(Templates, wecom::Response)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let seed = include_bytes!("../../tests/fixtures/seed.json");
        (
            Templates::new(None).expect("the built-in templates compile"),
            wecom::parse(seed, false).expect("the seed list parses"),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::parse(text) else {
        return;
    };
    let (templates, seed) = setup();
    checks::check_build(seed.clone(), &config, templates);
});
