//! The access token: where it comes from (WECOM_ACCESS_TOKEN, the cache, gettoken) and the
//! cache file, which is keyed to the app and never holds the Secret.

use std::fs;
use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

use super::client::Client;
use super::credentials::{Secret, MIN_SECRET_CHARS};
use super::redact::Redactor;
use super::Config;
use crate::error::{Error, Result};

/// A cached token is used only with more than this left, so it can't expire mid-run
/// (well-kept SDKs refresh 60 to 200 s ahead).
const CACHE_MARGIN_SECS: u64 = 300;

/// WeCom's tokens live 7200 s. An answer that claims longer is not believed: the cache keeps the
/// token at most this long (and `now + expires_in` can't overflow).
const MAX_TOKEN_SECS: u64 = 7200;

const GETTOKEN: &str = "gettoken";

/// Where the token in use came from, to know whether another source is left to try.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    Given,
    Cache,
    Fresh,
}

impl Origin {
    pub(super) fn describe(self) -> &'static str {
        match self {
            Origin::Given => "from WECOM_ACCESS_TOKEN",
            Origin::Cache => "from the cache",
            Origin::Fresh => "just fetched",
        }
    }
}

/// A token from the cache, or a new one from gettoken. The cache is dropped only when its own
/// token is the one WeCom just `refused`: a refused WECOM_ACCESS_TOKEN says nothing about it.
pub(super) async fn get(
    config: &Config,
    client: &Client,
    redactor: &mut Redactor,
    refused: Option<&Secret>,
) -> Result<(Secret, Origin)> {
    let Some((corp_id, secret)) = &config.credentials.app else {
        return Err(Error::Credentials(
            "no corp id and secret to get an access token with".into(),
        ));
    };
    let cache = config.token_cache.as_deref();
    if let Some(path) = cache {
        match load_cache(path, corp_id, secret) {
            Some(cached) if Some(&cached) == refused => discard_cache(path),
            Some(cached) => {
                redactor.redact(&cached);
                return Ok((cached, Origin::Cache));
            }
            None => {}
        }
    }
    let (token, expires_in) = gettoken(client, redactor, corp_id, secret).await?;
    if let Some(path) = cache {
        save_cache(
            path,
            corp_id,
            secret,
            &token,
            now().saturating_add(expires_in),
        );
    }
    Ok((token, Origin::Fresh))
}

/// A new token from WeCom, hidden from then on, and how many seconds it lives.
async fn gettoken(
    client: &Client,
    redactor: &mut Redactor,
    corp_id: &str,
    secret: &Secret,
) -> Result<(Secret, u64)> {
    let url = client.url(
        "cgi-bin/gettoken",
        &[("corpid", corp_id), ("corpsecret", secret.expose())],
    )?;
    let answer = client.call(GETTOKEN, &url, redactor).await?;
    let token = answer
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(Secret::new)
        .ok_or_else(|| Error::Fetch(format!("{GETTOKEN}: the answer has no access_token")))?;
    redactor.redact(&token);
    if token.expose().chars().count() < MIN_SECRET_CHARS {
        return Err(Error::Fetch(format!(
            "{GETTOKEN}: the answer's access_token is shorter than {MIN_SECRET_CHARS} \
             characters: is --api-base the WeCom API?"
        )));
    }
    let claimed = answer.get("expires_in").and_then(Value::as_u64);
    let expires_in = claimed.unwrap_or(MAX_TOKEN_SECS).min(MAX_TOKEN_SECS);
    if claimed.is_some_and(|c| c > MAX_TOKEN_SECS) {
        warn!(
            "{GETTOKEN}: expires_in {} is longer than WeCom's tokens live; the token is \
             cached for {MAX_TOKEN_SECS} s at most",
            claimed.unwrap_or_default()
        );
    }
    info!("{GETTOKEN}: got a new access token, valid for {expires_in} s");
    Ok((token, expires_in))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The token cache file. It is keyed by the corp id and a hash of the secret, so a changed
/// secret or another app never reuses a token, and the file never holds the secret itself.
#[derive(Serialize, Deserialize)]
struct CachedToken {
    corp_id: String,
    secret_sha256: String,
    access_token: String,
    /// Seconds since the Unix epoch.
    expires_at: u64,
}

fn secret_sha256(secret: &Secret) -> String {
    format!("{:x}", Sha256::digest(secret.expose().as_bytes()))
}

/// A cached token for this app with more than `CACHE_MARGIN_SECS` left. A cache that can't be
/// used is only a reason to get a new token, never to fail; its content is never printed.
fn load_cache(path: &Path, corp_id: &str, secret: &Secret) -> Option<Secret> {
    let bytes = match read_private(path) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return None,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            debug!("token cache {}: none yet", path.display());
            return None;
        }
        Err(e) => {
            warn!(
                "cannot read the token cache {}: {e}; getting a new token",
                path.display()
            );
            return None;
        }
    };
    let Ok(cached) = serde_json::from_slice::<CachedToken>(&bytes) else {
        warn!(
            "{} is not a token cache; getting a new token",
            path.display()
        );
        return None;
    };
    match check(cached, corp_id, secret, now()) {
        Ok((token, left)) => {
            info!("using the cached access token, valid for another {left} s");
            Some(token)
        }
        Err(Unusable::OtherApp) => {
            info!(
                "the token cache holds a token for another corp id or secret; getting a new token"
            );
            None
        }
        Err(Unusable::Expiring(left)) => {
            info!("the cached access token expires in {left} s; getting a new one");
            None
        }
        Err(Unusable::Implausible) => {
            warn!(
                "the token cache {} holds a token no WeCom answer gives (too long-lived or too \
                 short); getting a new token",
                path.display()
            );
            None
        }
    }
}

/// Why a cached token is not used.
#[derive(Debug, PartialEq, Eq)]
enum Unusable {
    /// Another corp id or Secret got it.
    OtherApp,
    /// Seconds left, no more than `CACHE_MARGIN_SECS`.
    Expiring(u64),
    /// Longer-lived or shorter than any token WeCom gives: not a file this tool wrote.
    Implausible,
}

/// The cached token and its seconds left, if it is this app's and usable at `now`.
fn check(
    cached: CachedToken,
    corp_id: &str,
    secret: &Secret,
    now: u64,
) -> Result<(Secret, u64), Unusable> {
    if cached.corp_id != corp_id || cached.secret_sha256 != secret_sha256(secret) {
        return Err(Unusable::OtherApp);
    }
    let left = cached.expires_at.saturating_sub(now);
    if left <= CACHE_MARGIN_SECS {
        return Err(Unusable::Expiring(left));
    }
    if left > MAX_TOKEN_SECS || cached.access_token.chars().count() < MIN_SECRET_CHARS {
        return Err(Unusable::Implausible);
    }
    Ok((Secret::new(cached.access_token), left))
}

/// The cache's bytes, unless group or others may access it: then its token may have been read
/// by someone else, so it is not used (`Ok(None)`), and the mode is set to 0600 at once (the new
/// token replaces the file anyway, privately).
fn read_private(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let mut file = fs::File::open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata()?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            let fixed = match file.set_permissions(fs::Permissions::from_mode(0o600)) {
                Ok(()) => "set to 0600".to_owned(),
                Err(e) => format!("cannot be set to 0600: {e}"),
            };
            warn!(
                "the token cache {} has mode {mode:04o}: others may have read its token, so it \
                 is not used (mode {fixed}); getting a new token",
                path.display()
            );
            return Ok(None);
        }
    }
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut file, &mut bytes)?;
    Ok(Some(bytes))
}

/// Writes the cache atomically, mode 0600. A failure costs only a gettoken call next time, so
/// it is a warning.
fn save_cache(path: &Path, corp_id: &str, secret: &Secret, token: &Secret, expires_at: u64) {
    let cached = CachedToken {
        corp_id: corp_id.to_owned(),
        secret_sha256: secret_sha256(secret),
        access_token: token.expose().to_owned(),
        expires_at,
    };
    let written = serde_json::to_vec_pretty(&cached)
        .map_err(|e| Error::Input(e.to_string()))
        .and_then(|bytes| crate::output::write_private_file(path, &bytes));
    match written {
        Ok(()) => debug!("token cache {}: saved", path.display()),
        Err(e) => warn!("cannot save the token cache: {e}"),
    }
}

/// Drops a token WeCom refused, so that no later run tries it again.
fn discard_cache(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => info!("token cache {}: discarded", path.display()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => warn!("cannot discard the token cache {}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_is_used_only_for_the_same_app_with_time_left() {
        let secret = Secret::new("sec-secret-secret");
        let token = Secret::new("tok-token-token-token");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.json");
        assert!(load_cache(&path, "ww1", &secret).is_none());
        save_cache(&path, "ww1", &secret, &token, now() + 7200);
        assert_eq!(load_cache(&path, "ww1", &secret), Some(token.clone()));
        assert!(load_cache(&path, "ww2", &secret).is_none());
        assert!(load_cache(&path, "ww1", &Secret::new("other")).is_none());
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains("sec-secret"),
            "the secret itself is stored: {text}"
        );
        save_cache(&path, "ww1", &secret, &token, now() + CACHE_MARGIN_SECS);
        assert!(load_cache(&path, "ww1", &secret).is_none());
        fs::write(&path, "not json").unwrap();
        assert!(load_cache(&path, "ww1", &secret).is_none());
        discard_cache(&path);
        assert!(!path.exists());
        // A cache that claims a token lives longer than WeCom's do is not believed.
        save_cache(&path, "ww1", &secret, &token, now() + 10 * MAX_TOKEN_SECS);
        assert!(load_cache(&path, "ww1", &secret).is_none());
    }

    #[test]
    fn a_cached_token_needs_more_than_the_margin_left() {
        let secret = Secret::new("sec-secret-secret");
        let cached = |expires_at| CachedToken {
            corp_id: "ww1".into(),
            secret_sha256: secret_sha256(&secret),
            access_token: "tok-token-token-token".into(),
            expires_at,
        };
        let now = 1_000_000;
        assert_eq!(
            check(cached(now + CACHE_MARGIN_SECS), "ww1", &secret, now).unwrap_err(),
            Unusable::Expiring(CACHE_MARGIN_SECS)
        );
        let (token, left) =
            check(cached(now + CACHE_MARGIN_SECS + 1), "ww1", &secret, now).unwrap();
        assert_eq!(
            (token.expose(), left),
            ("tok-token-token-token", CACHE_MARGIN_SECS + 1)
        );
        assert_eq!(
            check(cached(now + MAX_TOKEN_SECS + 1), "ww1", &secret, now).unwrap_err(),
            Unusable::Implausible
        );
        assert_eq!(
            check(cached(now + 7200), "ww2", &secret, now).unwrap_err(),
            Unusable::OtherApp
        );
    }
}
