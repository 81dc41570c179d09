//! Typed errors of the library, and the one place that maps them to exit codes.

use std::path::PathBuf;

/// Everything that can stop a run. Each variant carries what the user needs to act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input is not what the API returns: bad JSON, a bad field, a missing list.
    #[error("invalid input: {0}")]
    Input(String),

    /// WeCom answered with an error code: in a saved response (`call` is `None`) or live, from
    /// the call named.
    #[error("{}", crate::errcode::describe(*call, *errcode, errmsg))]
    Api {
        call: Option<&'static str>,
        errcode: i64,
        errmsg: String,
    },

    /// The API could not be reached or gave no usable answer: network, TLS, HTTP status, a body
    /// that is not JSON. The text never holds the secret or the token.
    #[error("cannot fetch the list: {0}")]
    Fetch(String),

    /// Credentials missing or unreadable, found before any request is sent.
    #[error("credentials: {0}")]
    Credentials(String),

    /// A safety guard refused to produce an allowlist that would cut WeCom off or open a hole.
    #[error("refused: {0}")]
    Guard(String),

    /// A name (chain, table, interface) that the target would reject or misread.
    #[error("invalid option: {0}")]
    Option(String),

    /// The config file is not TOML, has an unknown key or a bad value.
    #[error("invalid config: {0}")]
    Config(String),

    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A template from `--templates` failed to compile or render.
    #[error("custom template {template}: {source:#}")]
    CustomTemplate {
        template: String,
        source: minijinja::Error,
    },

    /// A built-in template failed to render: a bug, never the user's fault.
    #[error("template {template}: {source:#}")]
    Render {
        template: String,
        source: minijinja::Error,
    },
}

impl Error {
    /// The exit code documented in README.md.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Input(_)
            | Error::Option(_)
            | Error::Config(_)
            | Error::CustomTemplate { .. }
            | Error::Read { .. }
            | Error::Write { .. } => 2,
            Error::Api { .. } | Error::Fetch(_) | Error::Credentials(_) => 3,
            Error::Guard(_) => 4,
            Error::Render { .. } => 70,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
