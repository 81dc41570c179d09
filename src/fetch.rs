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
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backon::{BackoffBuilder, ExponentialBuilder};
use reqwest::{header, StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

use crate::endpoint::ListName;
use crate::errcode::{self, Action};
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

/// The shortest Secret or token accepted. WeCom's Secrets are 43 characters and its tokens
/// longer; anything this short is a typo or a cut paste, and hiding it in messages would blank
/// out ordinary words and show, by what vanished, what it is.
pub const MIN_SECRET_CHARS: usize = 16;

/// WeCom's tokens live 7200 s. An answer that claims longer is not believed: the cache keeps the
/// token at most this long (and `now + expires_in` can't overflow).
const MAX_TOKEN_SECS: u64 = 7200;

const GETTOKEN: &str = "gettoken";

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

/// Where the token in use came from, to know whether another source is left to try.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    Given,
    Cache,
    Fresh,
}

impl Origin {
    fn describe(self) -> &'static str {
        match self {
            Origin::Given => "from WECOM_ACCESS_TOKEN",
            Origin::Cache => "from the cache",
            Origin::Fresh => "just fetched",
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
    /// The proxy the environment routes the API through (`scheme://host:port`, no user name
    /// or password), to name it when it fails.
    proxy: Option<String>,
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
            proxy: None,
        };
        if let Some(proxy) = env_proxy(&config.api_base) {
            // A proxy's error page may echo the Proxy-Authorization it was sent.
            if let Some(auth) = proxy.basic_auth().and_then(|v| v.to_str().ok()) {
                let encoded = auth.trim_start_matches("Basic ").to_owned();
                session.hide(&encoded);
            }
            let uri = proxy.uri();
            session.proxy = Some(match (uri.scheme_str(), uri.authority()) {
                (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
                _ => "from the environment".into(),
            });
        }
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
        let (mut token, mut origin) = match &config.credentials.token {
            Some(token) => {
                info!("using the access token from WECOM_ACCESS_TOKEN");
                (token.clone(), Origin::Given)
            }
            None => self.token(None).await?,
        };
        // A refused token gives way to the next source (the cache, then gettoken); a token from
        // gettoken is replaced once. Each step is taken at most once, so this ends.
        let mut fresh_refused = false;
        loop {
            match self.get_list(&token).await {
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
                    (token, origin) = self.token(Some(&token)).await?;
                }
                result => return result,
            }
        }
    }

    /// A token from the cache, or a new one from gettoken. The cache is dropped only when its
    /// own token is the one WeCom just `refused`: a refused WECOM_ACCESS_TOKEN says nothing
    /// about it.
    async fn token(&mut self, refused: Option<&Secret>) -> Result<(Secret, Origin)> {
        let config = self.config;
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
                    self.redact(&cached);
                    return Ok((cached, Origin::Cache));
                }
                None => {}
            }
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

    async fn get_list(&self, token: &Secret) -> Result<Value> {
        let list = self.config.list;
        let url = self.url(list.path(), &[("access_token", token.expose())])?;
        Ok(self.scrub_json(self.call(list.call(), &url).await?))
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
                    quote(&self.scrub(content_type)),
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
                    quote(&self.scrub(content_type)),
                    self.snippet(body)
                ),
                false,
            )
        })?;
        // A key given twice (`"errcode":45009,"errcode":0`) makes the answer ambiguous.
        if let Err(e) = crate::wecom::parse_json(body) {
            return Err(Failure {
                error: Error::Input(format!(
                    "{call}: the answer is not valid JSON: {}",
                    self.scrub(&e.to_string())
                )),
                retry: false,
            });
        }
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
                retry: errcode::action(errcode) == Action::Retry,
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
        let host = match &self.proxy {
            Some(proxy) => format!("{host} through the proxy {proxy}"),
            None => host,
        };
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

    /// Hides `secret` from every message and log line from now on, raw and percent-encoded.
    fn redact(&mut self, secret: &Secret) {
        self.hide(secret.expose());
        let mut probe = self.config.api_base.clone();
        probe
            .query_pairs_mut()
            .clear()
            .append_pair("v", secret.expose());
        if let Some(encoded) = probe.query().and_then(|q| q.strip_prefix("v=")) {
            let encoded = encoded.to_owned();
            self.hide(&encoded);
        }
    }

    fn hide(&mut self, text: &str) {
        if text.is_empty() || self.hidden.iter().any(|h| h == text) {
            return;
        }
        self.hidden.push(text.to_owned());
        if let Ok(mut all) = LOG_HIDDEN.lock() {
            all.push(text.to_owned());
        }
    }

    fn scrub(&self, text: &str) -> String {
        scrub_words(&self.hidden, text)
    }

    /// The list's document with every credential scrubbed from its strings, keys included: a
    /// token echoed in `errmsg` would otherwise be saved by `fetch -o`.
    fn scrub_json(&self, value: Value) -> Value {
        match value {
            Value::String(s) => Value::String(self.scrub(&s)),
            Value::Array(items) => items.into_iter().map(|v| self.scrub_json(v)).collect(),
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| (self.scrub(&k), self.scrub_json(v)))
                    .collect(),
            ),
            other => other,
        }
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

/// Every credential this process has seen, for `ScrubbedStderr`: reqwest and hyper log through
/// `log` with text of their own, out of reach of `Session::scrub`.
static LOG_HIDDEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Standard error for log lines, with every credential the fetch knows scrubbed. The log layer
/// writes each event in one piece, so a credential never straddles two writes.
pub struct ScrubbedStderr;

impl io::Write for ScrubbedStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let clean = scrub_log(&String::from_utf8_lossy(buf));
        io::stderr().write_all(clean.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// A log line without any credential seen so far.
fn scrub_log(text: &str) -> String {
    match LOG_HIDDEN.lock() {
        Ok(hidden) => scrub_words(&hidden, text),
        // A panic while holding the lock left the list as it was: still usable.
        Err(poisoned) => scrub_words(&poisoned.into_inner(), text),
    }
}

/// Characters that make up a token, a Secret or their percent-encoded forms.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '-' | '_' | '%')
}

/// `text` with each word (run of `is_word_char`) that contains one of `hidden` replaced by
/// `[redacted]`: whole words only, so no part of a credential glued to other characters
/// survives and no ordinary word is cut in two. A value shorter than `MIN_SECRET_CHARS` (a
/// proxy's encoded password, say) hides only words equal to it, lest it blank out every word
/// that happens to contain it.
fn scrub_words(hidden: &[String], text: &str) -> String {
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for secret in hidden.iter().filter(|s| !s.is_empty()) {
        for (at, found) in text.match_indices(secret.as_str()) {
            let start = text[..at]
                .char_indices()
                .rev()
                .take_while(|&(_, c)| is_word_char(c))
                .last()
                .map_or(at, |(i, _)| i);
            let end = at + found.len();
            let end = end
                + text[end..]
                    .chars()
                    .take_while(|&c| is_word_char(c))
                    .map(char::len_utf8)
                    .sum::<usize>();
            if secret.len() >= MIN_SECRET_CHARS || (start, end) == (at, at + found.len()) {
                spans.push((start, end));
            }
        }
    }
    if spans.is_empty() {
        return text.to_owned();
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut done = 0;
    for (start, end) in spans {
        if end <= done {
            continue;
        }
        if start >= done {
            out.push_str(&text[done..start]);
            out.push_str("[redacted]");
        }
        done = end;
    }
    out.push_str(&text[done..]);
    out
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

/// The proxy reqwest takes for `url` from HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY (the
/// same matcher, hyper-util's, so the two can't disagree).
fn env_proxy(url: &Url) -> Option<hyper_util::client::proxy::matcher::Intercept> {
    let uri: http::Uri = url.as_str().parse().ok()?;
    hyper_util::client::proxy::matcher::Matcher::from_system().intercept(&uri)
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
    if cached.corp_id != corp_id || cached.secret_sha256 != secret_sha256(secret) {
        info!("the token cache holds a token for another corp id or secret; getting a new token");
        return None;
    }
    let left = cached.expires_at.saturating_sub(now());
    if left <= CACHE_MARGIN_SECS {
        info!("the cached access token expires in {left} s; getting a new one");
        return None;
    }
    if left > MAX_TOKEN_SECS || cached.access_token.chars().count() < MIN_SECRET_CHARS {
        warn!(
            "the token cache {} holds a token no WeCom answer gives (too long-lived or too \
             short); getting a new token",
            path.display()
        );
        return None;
    }
    info!("using the cached access token, valid for another {left} s");
    Some(Secret::new(cached.access_token))
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
            list: crate::endpoint::ListName::Server,
            api_base: api_base("http://127.0.0.1:1").unwrap(),
            timeout: Duration::from_secs(1),
            credentials: Credentials::new(
                Some("ww1".into()),
                Some(Secret::new("a+b/c-secret-secret")),
                Some(Secret::new("tok-token-token-token")),
            )
            .unwrap(),
            token_cache: None,
        };
        let session = Session::new(&config).unwrap();
        let page = b"<h1>403</h1> GET /cgi-bin/gettoken?corpid=ww1&corpsecret=a%2Bb%2Fc-secret-secret a+b/c-secret-secret tok-token-token-token";
        let shown = session.snippet(page);
        assert!(
            !shown.contains("a%2Bb") && !shown.contains("a+b") && !shown.contains("tok-"),
            "{shown}"
        );
        assert_eq!(session.snippet(b"  \n"), "the answer is empty");
        // Log lines of other crates, which never pass through the session, are scrubbed too.
        assert_eq!(
            scrub_log(
                "GET /x?access_token=tok-token-token-token&corpsecret=a%2Bb%2Fc-secret-secret"
            ),
            "GET /x?access_token=[redacted]&corpsecret=[redacted]"
        );
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
        let secret = Secret::new("sec-secret-secret");
        let token = Secret::new("tok-token-token-token");
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
    fn scrubbing_hides_whole_words_only() {
        let hidden = ["S3cretS3cretS3cret".to_owned(), "ok".to_owned()];
        // Glued to other characters, the whole word goes; ordinary words are never cut.
        assert_eq!(
            scrub_words(
                &hidden,
                "x=S3cretS3cretS3cret&y=abcS3cretS3cretS3cretdef. ok, book, okay"
            ),
            "x=[redacted]&y=[redacted]. [redacted], book, okay"
        );
        assert_eq!(scrub_words(&hidden, "nothing here"), "nothing here");
        assert_eq!(
            scrub_words(&hidden, "企业S3cretS3cretS3cret企业 end"),
            "[redacted] end"
        );
    }
}
