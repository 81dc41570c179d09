//! Integration tests, one binary, one module per area. They drive the real `wecom-allowlist`
//! binary, as users and CI do.

mod cli;
mod fetch;
mod snapshots;
mod support;
