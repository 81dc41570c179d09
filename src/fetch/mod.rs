//! Fetching the list live from the WeCom API: the access token (and its optional cache), the
//! call itself, retries with backoff, and failures turned into messages that say what to do.
//!
//! The corp secret and the token travel in query strings, so a URL is never logged or shown
//! whole (only its path), reqwest errors lose their URL, and text that came from the server is
//! scrubbed of both before it reaches a message: a proxy's error page may echo the request.
//!
//! Three parts, each knowing one thing: `client` (HTTP, retries, answers judged), `token` (the
//! token's sources and its cache) and `redact` (what must never be shown); this module only
//! chains them: a token, then the list, and another token when WeCom refuses one.

mod client;
mod credentials;
mod redact;
mod token;

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;
use serde_json::Value;
use tracing::{info, warn};

use crate::endpoint::ListName;
use crate::errcode::{self, Action};
use crate::error::{Error, Result};
use crate::text::quote;

use client::Client;
pub use credentials::{Credentials, Secret, MIN_SECRET_CHARS};
use redact::Redactor;
pub use redact::ScrubbedStderr;
use token::Origin;

pub const DEFAULT_API_BASE: &str = "https://qyapi.weixin.qq.com";

/// Everything a live fetch needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub api_base: Url,
    /// Per request; the whole fetch gets `DEADLINE_FACTOR` times this.
    pub timeout: Duration,
    pub credentials: Credentials,
    pub token_cache: Option<PathBuf>,
    /// Which list to get: each has its own call, with the same token.
    pub list: ListName,
}

/// Checks `--api-base` and gives it the trailing slash that makes `join` append, so that a
/// private deployment under a path prefix keeps it.
pub fn api_base(raw: &str) -> Result<Url> {
    let bad = |why: &str| Error::Option(format!("--api-base {}: {why}", quote(raw)));
    let mut url = Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must be an https:// (or http://) URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must have no query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "must carry no user name or password (a proxy's go in HTTPS_PROXY)",
        ));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// Gets a token, then the list; returns the list's JSON document, whose errcode is 0. The
/// caller validates the entries, exactly as for a saved response.
pub async fn fetch(config: &Config) -> Result<Value> {
    let mut redactor = Redactor::new(&config.credentials);
    let client = Client::new(config, &mut redactor)?;
    let (mut token, mut origin) = match &config.credentials.token {
        Some(token) => {
            info!("using the access token from WECOM_ACCESS_TOKEN");
            (token.clone(), Origin::Given)
        }
        None => token::get(config, &client, &mut redactor, None).await?,
    };
    // A refused token gives way to the next source (the cache, then gettoken); a token from
    // gettoken is replaced once. Each step is taken at most once, so this ends.
    let mut fresh_refused = false;
    loop {
        match get_list(config.list, &client, &redactor, &token).await {
            Err(Error::Api { errcode, .. })
                if errcode::action(errcode) == Action::RefreshToken
                    && !(origin == Origin::Fresh && fresh_refused)
                    && config.credentials.app.is_some() =>
            {
                fresh_refused |= origin == Origin::Fresh;
                warn!(
                    "{}: the access token {} was refused (errcode {errcode}); \
                     getting another one",
                    config.list.call(),
                    origin.describe()
                );
                (token, origin) = token::get(config, &client, &mut redactor, Some(&token)).await?;
            }
            result => return result,
        }
    }
}

/// The list's document, every credential scrubbed from it: a token echoed in `errmsg` would
/// otherwise be saved by `fetch -o`.
async fn get_list(
    list: ListName,
    client: &Client,
    redactor: &Redactor,
    token: &Secret,
) -> Result<Value> {
    let url = client.url(list.path(), &[("access_token", token.expose())])?;
    Ok(redactor.scrub_json(client.call(list.call(), &url, redactor).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_base_keeps_its_path_prefix() {
        let base = api_base("https://gw.example.com/wecom").unwrap();
        assert_eq!(
            base.join("cgi-bin/gettoken").unwrap().as_str(),
            "https://gw.example.com/wecom/cgi-bin/gettoken"
        );
        let base = api_base(DEFAULT_API_BASE).unwrap();
        assert_eq!(
            base.join("cgi-bin/gettoken").unwrap().as_str(),
            "https://qyapi.weixin.qq.com/cgi-bin/gettoken"
        );
        for bad in [
            "qyapi.weixin.qq.com",
            "ftp://x.example",
            "https://x.example/?a=1",
            "https://u:p@x.example/",
        ] {
            let e = api_base(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}: {e}");
        }
    }
}
