//! Fetching the list live from the WeCom API: the access token (and its optional cache), the
//! call itself, retries with backoff, and failures turned into messages that say what to do.
//!
//! The corp secret and the token travel in query strings, so a URL is never logged or shown
//! whole (only its path), reqwest errors lose their URL, and text that came from the server is
//! scrubbed of both before it reaches a message: a proxy's error page may echo the request.

use std::error::Error as StdError;
use std::fmt;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backon::{BackoffBuilder, ExponentialBuilder};
use reqwest::{header, StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::text::{quote, quote_max};

pub const DEFAULT_API_BASE: &str = "https://qyapi.weixin.qq.com";

/// The list is a few kilobytes: an answer past this is not the API talking, and reading it
/// whole could exhaust memory.
const MAX_BODY_BYTES: usize = 16 << 20;

/// WeCom's docs advise at most 3 retries on errcode -1.
const MAX_RETRIES: usize = 3;

/// Delays before each retry: 200 ms, 400 ms, 800 ms, each plus up to 100 % jitter so that many
/// CI jobs started together don't retry in step; short enough that a run still fails fast.
const BACKOFF: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(200))
    .with_factor(2.0)
    .with_max_delay(Duration::from_secs(5))
    .with_max_times(MAX_RETRIES)
    .with_jitter();

/// The whole fetch (token, list, retries, one token refresh) gives up after this many times
/// `--timeout`, so a flapping API can't hold a CI job for long.
const DEADLINE_FACTOR: u32 = 3;

/// Connecting gets at most this long, whatever `--timeout` says: a host that doesn't answer
/// SYN in 10 s won't later.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A cached token is used only with more than this left, so it can't expire mid-run
/// (well-kept SDKs refresh 60 to 200 s ahead).
const CACHE_MARGIN_SECS: u64 = 300;

/// How much of a body that is not JSON to quote in a message.
const SNIPPET_CHARS: usize = 200;

const GETTOKEN: &str = "gettoken";
const GET_LIST: &str = "get_server_domain_ip";

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
    app: Option<(String, Secret)>,
    /// A ready token (WECOM_ACCESS_TOKEN), tried first; with `app` it can be replaced when
    /// WeCom says it expired.
    token: Option<Secret>,
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

/// Everything a live fetch needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub api_base: Url,
    /// Per request; the whole fetch gets `DEADLINE_FACTOR` times this.
    pub timeout: Duration,
    pub credentials: Credentials,
    pub token_cache: Option<PathBuf>,
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
    Session::new(config)?.run().await
}

/// One failed attempt, and whether another one may go better.
struct Failure {
    error: Error,
    retry: bool,
}

impl Failure {
    fn fetch(call: &str, message: String, retry: bool) -> Self {
        Failure {
            error: Error::Fetch(format!("{call}: {message}")),
            retry,
        }
    }
}

struct Session<'a> {
    config: &'a Config,
    client: reqwest::Client,
    deadline: Instant,
    /// Every credential seen so far, raw and percent-encoded, to scrub from text the server
    /// sent before it is shown.
    hidden: Vec<String>,
}

impl<'a> Session<'a> {
    fn new(config: &'a Config) -> Result<Self> {
        // reqwest is built without a default crypto provider (aws-lc-rs's C build is slow);
        // an error here only means a provider is installed already, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Certificates are checked against the operating system's trust store
        // (rustls-platform-verifier), where enterprises put their own CAs; HTTPS_PROXY,
        // HTTP_PROXY, ALL_PROXY and NO_PROXY are honoured. Redirects are not followed: the API
        // doesn't redirect, and a proxy that does is better reported than obeyed.
        let client = reqwest::Client::builder()
            .connect_timeout(config.timeout.min(CONNECT_TIMEOUT))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("wecom-allowlist/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                Error::Fetch(format!(
                    "cannot set up the HTTP client: {}",
                    chain(&e.without_url())
                ))
            })?;
        if config.api_base.scheme() == "http" && !is_loopback(&config.api_base) {
            warn!("--api-base uses plain HTTP: the secret and the token cross the network unencrypted");
        }
        let mut session = Session {
            config,
            client,
            deadline: Instant::now() + config.timeout * DEADLINE_FACTOR,
            hidden: Vec::new(),
        };
        if let Some((_, secret)) = &config.credentials.app {
            session.redact(secret);
        }
        if let Some(token) = &config.credentials.token {
            session.redact(token);
        }
        Ok(session)
    }

    async fn run(&mut self) -> Result<Value> {
        let config = self.config;
        let mut token = match &config.credentials.token {
            Some(token) => {
                info!("using the access token from WECOM_ACCESS_TOKEN");
                token.clone()
            }
            None => self.token(false).await?,
        };
        let mut refreshed = false;
        loop {
            match self.get_list(&token).await {
                Err(Error::Api {
                    errcode: errcode @ (40014 | 42001),
                    ..
                }) if !refreshed && config.credentials.app.is_some() => {
                    warn!("{GET_LIST}: the access token was refused (errcode {errcode}); getting a new one");
                    token = self.token(true).await?;
                    refreshed = true;
                }
                result => return result,
            }
        }
    }

    /// A token from the cache, or a new one from gettoken (always a new one when the last was
    /// refused: `stale`).
    async fn token(&mut self, stale: bool) -> Result<Secret> {
        let config = self.config;
        let Some((corp_id, secret)) = &config.credentials.app else {
            return Err(Error::Credentials(
                "no corp id and secret to get an access token with".into(),
            ));
        };
        let cache = config.token_cache.as_deref();
        match cache {
            Some(path) if stale => discard_cache(path),
            Some(path) => {
                if let Some(token) = load_cache(path, corp_id, secret) {
                    self.redact(&token);
                    return Ok(token);
                }
            }
            None => {}
        }
        let url = self.url(
            "cgi-bin/gettoken",
            &[("corpid", corp_id), ("corpsecret", secret.expose())],
        )?;
        let answer = self.call(GETTOKEN, &url).await?;
        let token = answer
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(Secret::new)
            .ok_or_else(|| Error::Fetch(format!("{GETTOKEN}: the answer has no access_token")))?;
        self.redact(&token);
        let expires_in = answer
            .get("expires_in")
            .and_then(Value::as_u64)
            .unwrap_or(7200);
        info!("{GETTOKEN}: got a new access token, valid for {expires_in} s");
        if let Some(path) = cache {
            save_cache(path, corp_id, secret, &token, now() + expires_in);
        }
        Ok(token)
    }

    async fn get_list(&self, token: &Secret) -> Result<Value> {
        let url = self.url(
            "cgi-bin/security/get_server_domain_ip",
            &[("access_token", token.expose())],
        )?;
        self.call(GET_LIST, &url).await
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<Url> {
        let mut url = self
            .config
            .api_base
            .join(path)
            .map_err(|e| Error::Option(format!("--api-base: cannot append {path}: {e}")))?;
        url.query_pairs_mut().extend_pairs(query);
        Ok(url)
    }

    /// Calls until an answer is good, a failure is final, the retries are used up or the
    /// deadline is near.
    async fn call(&self, call: &'static str, url: &Url) -> Result<Value> {
        let mut delays = BACKOFF.build();
        let mut attempt = 1;
        loop {
            let failure = match self.attempt(call, url, attempt).await {
                Ok(doc) => return Ok(doc),
                Err(failure) => failure,
            };
            if !failure.retry {
                return Err(failure.error);
            }
            let delay = match delays.next() {
                Some(delay) if Instant::now() + delay < self.deadline => delay,
                _ => {
                    warn!("{call}: giving up after {attempt} attempts");
                    return Err(failure.error);
                }
            };
            warn!(
                "{}; retrying in {} ms (retry {attempt} of {MAX_RETRIES})",
                failure.error,
                delay.as_millis(),
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    async fn attempt(
        &self,
        call: &'static str,
        url: &Url,
        attempt: usize,
    ) -> Result<Value, Failure> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let message = format!(
                "out of time: the whole fetch gets {} ({DEADLINE_FACTOR} x --timeout)",
                seconds(self.config.timeout * DEADLINE_FACTOR)
            );
            return Err(Failure::fetch(call, message, false));
        }
        let timeout = self.config.timeout.min(left);
        debug!(attempt, path = url.path(), "{call}: GET");
        let started = Instant::now();
        let response = self
            .client
            .get(url.clone())
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| self.transport_failure(call, url, e, timeout))?;
        let status = response.status();
        let get_header = |name| {
            response
                .headers()
                .get(name)
                .map(|v: &header::HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let content_type = get_header(header::CONTENT_TYPE).unwrap_or_else(|| "none".into());
        let location = get_header(header::LOCATION);
        let body = read_body(response).await.map_err(|e| match e {
            BodyError::TooLarge => Failure::fetch(
                call,
                format!(
                    "the answer is larger than {} MiB: is --api-base the WeCom API?",
                    MAX_BODY_BYTES >> 20
                ),
                false,
            ),
            BodyError::Transport(e) => self.transport_failure(call, url, e, timeout),
        })?;
        debug!(
            status = status.as_u16(),
            bytes = body.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "{call}: answer"
        );
        self.judge(call, status, &content_type, location.as_deref(), &body)
    }

    /// Turns an HTTP answer into the document or a failure. WeCom answers HTTP 200 even for
    /// its own errors, so any other status came from something in between, or from a wrong
    /// `--api-base`.
    fn judge(
        &self,
        call: &'static str,
        status: StatusCode,
        content_type: &str,
        location: Option<&str>,
        body: &[u8],
    ) -> Result<Value, Failure> {
        if status.is_redirection() {
            // The query of a redirect target may echo the credentials: show the rest.
            let to = location
                .map(|l| {
                    format!(
                        " to {}",
                        quote(&self.scrub(l.split('?').next().unwrap_or("")))
                    )
                })
                .unwrap_or_default();
            return Err(Failure::fetch(
                call,
                format!("HTTP {status}, a redirect{to}: point --api-base at the API itself"),
                false,
            ));
        }
        if !status.is_success() {
            let retry = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
            return Err(Failure::fetch(
                call,
                format!(
                    "HTTP {status}, content-type {}: {}",
                    quote(content_type),
                    self.snippet(body)
                ),
                retry,
            ));
        }
        let doc: Value = serde_json::from_slice(body).map_err(|_| {
            Failure::fetch(
                call,
                format!(
                    "HTTP {status}, content-type {}: the answer is not JSON (a proxy's or a \
                     gateway's page?): {}",
                    quote(content_type),
                    self.snippet(body)
                ),
                false,
            )
        })?;
        let errcode = match doc.get("errcode") {
            None | Some(Value::Null) => 0,
            Some(v) => v.as_i64().ok_or_else(|| {
                Failure::fetch(
                    call,
                    format!(
                        "errcode {} is not an integer",
                        quote(&self.scrub(&v.to_string()))
                    ),
                    false,
                )
            })?,
        };
        if errcode != 0 {
            let errmsg = doc.get("errmsg").and_then(Value::as_str).unwrap_or("");
            return Err(Failure {
                error: Error::Api {
                    call: Some(call),
                    errcode,
                    errmsg: self.scrub(errmsg),
                },
                // -1: system busy; 45033: too many concurrent calls. Everything else is
                // configuration (retrying can't fix it) or a limit (retrying makes it worse).
                retry: matches!(errcode, -1 | 45033),
            });
        }
        Ok(doc)
    }

    fn transport_failure(
        &self,
        call: &str,
        url: &Url,
        error: reqwest::Error,
        timeout: Duration,
    ) -> Failure {
        let error = error.without_url();
        let host = match (url.host_str(), url.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            _ => "the server".into(),
        };
        let detail = self.scrub(&chain(&error));
        if error.is_timeout() {
            let message = format!(
                "no answer from {host} within {} (--timeout)",
                seconds(timeout)
            );
            return Failure::fetch(call, message, true);
        }
        if is_tls_error(&error) {
            let message = format!(
                "TLS with {host} failed: {detail}; if a proxy inspects HTTPS, add its CA \
                 certificate to the operating system's trust store"
            );
            return Failure::fetch(call, message, false);
        }
        if error.is_connect() {
            let message = format!(
                "cannot connect to {host}: {detail} (check --api-base, the network, and \
                 HTTPS_PROXY/NO_PROXY)"
            );
            return Failure::fetch(call, message, true);
        }
        // A connection reset or closed mid-answer is as transient as a refused one.
        let retry = error.is_request() || error.is_body();
        Failure::fetch(call, format!("request to {host} failed: {detail}"), retry)
    }

    fn redact(&mut self, secret: &Secret) {
        let raw = secret.expose();
        if raw.is_empty() {
            return;
        }
        let mut probe = self.config.api_base.clone();
        probe.query_pairs_mut().clear().append_pair("v", raw);
        if let Some(encoded) = probe.query().and_then(|q| q.strip_prefix("v=")) {
            if encoded != raw {
                self.hidden.push(encoded.to_owned());
            }
        }
        self.hidden.push(raw.to_owned());
    }

    fn scrub(&self, text: &str) -> String {
        self.hidden.iter().fold(text.to_owned(), |text, secret| {
            text.replace(secret, "[redacted]")
        })
    }

    /// The start of a body for a message, escaped, with every credential scrubbed before it is
    /// cut (so that no half of one survives).
    fn snippet(&self, body: &[u8]) -> String {
        let text = String::from_utf8_lossy(body);
        if text.trim().is_empty() {
            return "the answer is empty".into();
        }
        format!(
            "it starts with {}",
            quote_max(&self.scrub(&text), SNIPPET_CHARS)
        )
    }
}

enum BodyError {
    TooLarge,
    Transport(reqwest::Error),
}

/// Reads a body chunk by chunk, refusing it once it passes `MAX_BODY_BYTES`.
async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, BodyError> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY_BYTES as u64)
    {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An error and its causes on one line; a cause already in the text is not repeated.
fn chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        next = cause.source();
    }
    text
}

/// Whether rustls refused the handshake (an untrusted or wrong certificate, say): retrying
/// can't help. `io::Error` hides what it wraps from `source()` (and tokio-rustls's error is an
/// `io::Error` inside another), hence `get_ref`.
fn is_tls_error(error: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(cause) = next {
        if cause.is::<rustls::Error>() {
            return true;
        }
        next = match cause
            .downcast_ref::<io::Error>()
            .and_then(io::Error::get_ref)
        {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => cause.source(),
        };
    }
    false
}

fn is_loopback(url: &Url) -> bool {
    match url.host_str() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
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
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
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
    if cached.corp_id != corp_id || cached.secret_sha256 != secret_sha256(secret) {
        info!("the token cache holds a token for another corp id or secret; getting a new token");
        return None;
    }
    let left = cached.expires_at.saturating_sub(now());
    if left <= CACHE_MARGIN_SECS {
        info!("the cached access token expires in {left} s; getting a new one");
        return None;
    }
    info!("using the cached access token, valid for another {left} s");
    Some(Secret::new(cached.access_token))
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
    fn secrets_never_print() {
        let s = Secret::new("s3cr3t");
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
        let c = Credentials::new(Some("ww1".into()), Some(s.clone()), Some(s)).unwrap();
        assert!(!format!("{c:?}").contains("s3cr3t"), "{c:?}");
    }

    #[test]
    fn credentials_need_an_app_or_a_token() {
        let s = || Some(Secret::new("x"));
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
        ] {
            let e =
                Credentials::new(id.map(Into::into), secret.map(Secret::new), None).unwrap_err();
            assert_eq!(e.exit_code(), 3);
            assert!(e.to_string().contains(message), "{e}");
        }
    }

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

    #[test]
    fn scrubbing_covers_raw_and_encoded_forms() {
        let config = Config {
            api_base: api_base("http://127.0.0.1:1").unwrap(),
            timeout: Duration::from_secs(1),
            credentials: Credentials::new(
                Some("ww1".into()),
                Some(Secret::new("a+b/c")),
                Some(Secret::new("tok")),
            )
            .unwrap(),
            token_cache: None,
        };
        let session = Session::new(&config).unwrap();
        let page = b"<h1>403</h1> GET /cgi-bin/gettoken?corpid=ww1&corpsecret=a%2Bb%2Fc a+b/c tok";
        let shown = session.snippet(page);
        assert!(
            !shown.contains("a%2Bb") && !shown.contains("a+b") && !shown.contains("tok"),
            "{shown}"
        );
        assert_eq!(session.snippet(b"  \n"), "the answer is empty");
        assert!(session.snippet(&[b'x'; 500]).ends_with("\"..."));
    }

    #[test]
    fn a_refused_certificate_is_found_inside_nested_io_errors() {
        #[derive(Debug)]
        struct Outer(io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("client error (Connect)")
            }
        }
        impl StdError for Outer {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let nested = Outer(io::Error::other(io::Error::new(
            io::ErrorKind::InvalidData,
            tls,
        )));
        assert!(is_tls_error(&nested));
        assert!(!is_tls_error(&Outer(io::Error::other(io::Error::from(
            io::ErrorKind::ConnectionRefused
        )))));
    }

    #[test]
    fn the_backoff_is_three_short_jittered_delays() {
        let delays: Vec<Duration> = BACKOFF.build().collect();
        assert_eq!(delays.len(), 3);
        for (d, base) in delays.iter().zip([200, 400, 800]) {
            let ms = d.as_millis();
            assert!((base..=2 * base).contains(&ms), "{ms} ms for {base}");
        }
    }

    #[test]
    fn the_cache_is_used_only_for_the_same_app_with_time_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.json");
        let secret = Secret::new("sec");
        let token = Secret::new("tok");
        assert!(load_cache(&path, "ww1", &secret).is_none());
        save_cache(&path, "ww1", &secret, &token, now() + 7200);
        assert_eq!(load_cache(&path, "ww1", &secret), Some(token.clone()));
        assert!(load_cache(&path, "ww2", &secret).is_none());
        assert!(load_cache(&path, "ww1", &Secret::new("other")).is_none());
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains("\"sec\""),
            "the secret itself is stored: {text}"
        );
        save_cache(&path, "ww1", &secret, &token, now() + CACHE_MARGIN_SECS);
        assert!(load_cache(&path, "ww1", &secret).is_none());
        fs::write(&path, "not json").unwrap();
        assert!(load_cache(&path, "ww1", &secret).is_none());
        discard_cache(&path);
        assert!(!path.exists());
    }
}
