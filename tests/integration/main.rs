//! Integration tests, one binary, one module per area. They drive the real `wecom-allowlist`
//! binary, as users and CI do.

mod catalog_props;
mod cli;
mod endpoints;
mod explain;
mod fetch;
mod gitops;
mod lists;
mod lossless;
mod normalize_props;
mod oracle;
mod readme;
mod real_tools;
mod snapshots;
mod support;
mod wire;
