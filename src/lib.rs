//! wecom-allowlist: WeCom's published server list, validated and turned into firewall allowlists.
//!
//! The pipeline, one module a stage: `fetch` (the live API, when no saved response is given) ->
//! `wecom` (parse and validate a response) -> `normalize` (filter, group, aggregate) -> `render`
//! (templates per `target`) -> `output` (atomic files).

pub mod cli;
pub mod error;
pub mod fetch;
pub mod model;
pub mod normalize;
pub mod output;
pub mod render;
pub mod target;
pub mod text;
pub mod wecom;

pub use error::{Error, Result};
pub use target::Target;

/// Renders each target from one validated response; nothing is written here, so a caller can
/// refuse to write anything when any target fails.
pub fn generate(
    response: &wecom::Response,
    targets: &[Target],
    opts: &normalize::Options,
    settings: &render::Settings,
) -> Result<Vec<(Target, String)>> {
    settings.names.validate()?;
    let entries = normalize::select(response.entries.clone(), opts)?;
    let env = render::environment();
    targets
        .iter()
        .map(|&t| {
            let policy = normalize::normalize(&entries, opts, t.wildcards())?;
            Ok((t, render::render(&env, t, &policy, settings)?))
        })
        .collect()
}
