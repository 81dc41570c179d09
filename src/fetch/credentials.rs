//! What the tool authenticates with: the app's corp id and Secret, or a ready access token,
//! read from the environment or a file and checked before any request is sent.

use std::fmt;
use std::fs;
use std::path::Path;

use crate::error::{Error, Result};

/// The shortest Secret or token accepted. WeCom's Secrets are 43 characters and its tokens
/// longer; anything this short is a typo or a cut paste, and hiding it in messages would blank
/// out ordinary words and show, by what vanished, what it is.
pub const MIN_SECRET_CHARS: usize = 16;

/// The corp secret or an access token. It prints as `[redacted]` however it is formatted, so
/// no `{:?}` of a config or an error can leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the one place it belongs: a query string.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// What the tool may authenticate with, checked before any request is sent.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The corp id and the app's secret, for gettoken.
    pub(super) app: Option<(String, Secret)>,
    /// A ready token (WECOM_ACCESS_TOKEN), tried first; with `app` it can be replaced when
    /// WeCom says it expired.
    pub(super) token: Option<Secret>,
}

impl Credentials {
    /// Empty values count as missing: CI systems pass an undefined secret as an empty string.
    pub fn new(
        corp_id: Option<String>,
        secret: Option<Secret>,
        token: Option<Secret>,
    ) -> Result<Self> {
        let corp_id = corp_id.filter(|c| !c.trim().is_empty());
        let secret = secret.filter(|s| !s.expose().trim().is_empty());
        let token = token.filter(|t| !t.expose().trim().is_empty());
        let app = match (corp_id, secret) {
            (Some(id), Some(secret)) => Some((id.trim().to_owned(), secret)),
            (None, None) => None,
            _ if token.is_some() => None,
            (Some(_), None) => {
                return Err(Error::Credentials(
                    "the corp id is set but the app's Secret is missing or empty: set \
                     WECOM_CORP_SECRET or --corp-secret-file (in CI: is the secret defined for \
                     this job?)"
                        .into(),
                ))
            }
            (None, Some(_)) => {
                return Err(Error::Credentials(
                    "the app's Secret is set but the corp id is missing or empty: set \
                     WECOM_CORP_ID or --corp-id (我的企业 - 企业信息 - 企业ID)"
                        .into(),
                ))
            }
        };
        if let Some((_, secret)) = &app {
            too_short("the app's Secret", secret)?;
        }
        if let Some(token) = &token {
            too_short("WECOM_ACCESS_TOKEN", token)?;
        }
        if app.is_none() && token.is_none() {
            return Err(Error::Credentials(
                "none given: set WECOM_CORP_ID and WECOM_CORP_SECRET (the app's Secret; or \
                 --corp-id and --corp-secret-file), or WECOM_ACCESS_TOKEN; or pass --input FILE \
                 to use a saved response"
                    .into(),
            ));
        }
        Ok(Credentials { app, token })
    }

    /// From the flags and the environment. The secret is never a flag value: that would show in
    /// `ps` and in shell history.
    pub fn from_env(corp_id: Option<String>, secret_file: Option<&Path>) -> Result<Self> {
        let secret = match secret_file {
            Some(path) => Some(read_secret_file(path)?),
            None => env_secret("WECOM_CORP_SECRET")?,
        };
        Self::new(corp_id, secret, env_secret("WECOM_ACCESS_TOKEN")?)
    }
}

/// Refuses a credential shorter than `MIN_SECRET_CHARS`, saying how long it is but nothing of it.
fn too_short(what: &str, secret: &Secret) -> Result<()> {
    let chars = secret.expose().chars().count();
    if chars >= MIN_SECRET_CHARS {
        return Ok(());
    }
    Err(Error::Credentials(format!(
        "{what} is {chars} characters long, too short to be real (WeCom's Secrets are 43, \
         tokens longer; at least {MIN_SECRET_CHARS} are required): is the whole value set?"
    )))
}

fn env_secret(name: &str) -> Result<Option<Secret>> {
    match std::env::var(name) {
        Ok(value) => Ok(Some(Secret::new(value.trim()))),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(Error::Credentials(format!("{name} is not valid UTF-8")))
        }
    }
}

/// A secret file may end with a newline (`echo "$S" > file`): surrounding white space is not
/// part of a WeCom secret.
fn read_secret_file(path: &Path) -> Result<Secret> {
    let text = fs::read_to_string(path).map_err(|e| {
        Error::Credentials(format!(
            "cannot read the corp secret file {}: {e}",
            path.display()
        ))
    })?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(Error::Credentials(format!(
            "the corp secret file {} is empty",
            path.display()
        )));
    }
    Ok(Secret::new(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("s3cr3t-s3cr3t-s3cr3t");
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
        let c = Credentials::new(Some("ww1".into()), Some(s.clone()), Some(s)).unwrap();
        assert!(!format!("{c:?}").contains("s3cr3t"), "{c:?}");
    }

    #[test]
    fn credentials_need_an_app_or_a_token() {
        let s = || Some(Secret::new("x".repeat(MIN_SECRET_CHARS)));
        assert!(Credentials::new(Some("ww1".into()), s(), None).is_ok());
        assert!(Credentials::new(None, None, s()).is_ok());
        // A ready token stands on its own even with half an app.
        assert!(Credentials::new(Some("ww1".into()), None, s()).is_ok());
        for (id, secret, message) in [
            (None, None, "none given"),
            (Some("ww1"), None, "Secret is missing or empty"),
            (Some("ww1"), Some(""), "Secret is missing or empty"),
            (None, Some("x"), "corp id is missing"),
            (Some("  "), Some("x"), "corp id is missing"),
            (
                Some("ww1"),
                Some("x"),
                "the app's Secret is 1 characters long",
            ),
            (
                Some("ww1"),
                Some("0123456789abcde"),
                "is 15 characters long",
            ),
        ] {
            let e =
                Credentials::new(id.map(Into::into), secret.map(Secret::new), None).unwrap_err();
            assert_eq!(e.exit_code(), 3);
            assert!(e.to_string().contains(message), "{e}");
        }
    }
}
