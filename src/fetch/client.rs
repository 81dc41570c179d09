//! The HTTP side of a live fetch: one client, calls retried with backoff within one deadline,
//! and each answer judged: the document, or a failure that says whether another try may help.
//! Text from the server reaches a message only through the `Redactor`.

use std::error::Error as StdError;
use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use reqwest::{header, StatusCode, Url};
use serde_json::Value;
use tracing::{debug, warn};

use super::redact::Redactor;
use super::Config;
use crate::errcode::{self, Action};
use crate::error::{Error, Result};
use crate::text::quote;

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

/// The HTTP side of a fetch: one client, the API base, and the deadline of the whole fetch.
pub(super) struct Client {
    http: reqwest::Client,
    api_base: Url,
    /// Per request.
    timeout: Duration,
    deadline: Instant,
    /// The proxy the environment routes the API through (`scheme://host:port`, no user name
    /// or password), to name it when it fails.
    proxy: Option<String>,
}

impl Client {
    /// The client for `config`; a proxy's credentials join what `redactor` hides.
    pub(super) fn new(config: &Config, redactor: &mut Redactor) -> Result<Self> {
        // reqwest is built without a default crypto provider (aws-lc-rs's C build is slow);
        // an error here only means a provider is installed already, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Certificates are checked against the operating system's trust store
        // (rustls-platform-verifier), where enterprises put their own CAs; HTTPS_PROXY,
        // HTTP_PROXY, ALL_PROXY and NO_PROXY are honoured. Redirects are not followed: the API
        // doesn't redirect, and a proxy that does is better reported than obeyed.
        let http = reqwest::Client::builder()
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
        let proxy = env_proxy(&config.api_base).map(|proxy| {
            // A proxy's error page may echo the Proxy-Authorization it was sent.
            if let Some(auth) = proxy.basic_auth().and_then(|v| v.to_str().ok()) {
                redactor.hide(auth.trim_start_matches("Basic "));
            }
            let uri = proxy.uri();
            match (uri.scheme_str(), uri.authority()) {
                (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
                _ => "from the environment".into(),
            }
        });
        Ok(Client {
            http,
            api_base: config.api_base.clone(),
            timeout: config.timeout,
            deadline: Instant::now() + config.timeout * DEADLINE_FACTOR,
            proxy,
        })
    }

    /// `path` below the API base, with `query`.
    pub(super) fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<Url> {
        let mut url = self
            .api_base
            .join(path)
            .map_err(|e| Error::Option(format!("--api-base: cannot append {path}: {e}")))?;
        url.query_pairs_mut().extend_pairs(query);
        Ok(url)
    }

    /// Calls until an answer is good, a failure is final, the retries are used up or the
    /// deadline is near.
    pub(super) async fn call(
        &self,
        call: &'static str,
        url: &Url,
        redactor: &Redactor,
    ) -> Result<Value> {
        let mut delays = BACKOFF.build();
        let mut attempt = 1;
        loop {
            let failure = match self.attempt(call, url, attempt, redactor).await {
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
        redactor: &Redactor,
    ) -> Result<Value, Failure> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let message = format!(
                "out of time: the whole fetch gets {} ({DEADLINE_FACTOR} x --timeout)",
                seconds(self.timeout * DEADLINE_FACTOR)
            );
            return Err(Failure::fetch(call, message, false));
        }
        let timeout = self.timeout.min(left);
        debug!(attempt, path = url.path(), "{call}: GET");
        let started = Instant::now();
        let response = self
            .http
            .get(url.clone())
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| self.transport_failure(call, url, e, timeout, redactor))?;
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
            BodyError::Transport(e) => self.transport_failure(call, url, e, timeout, redactor),
        })?;
        debug!(
            status = status.as_u16(),
            bytes = body.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "{call}: answer"
        );
        judge(
            call,
            status,
            &content_type,
            location.as_deref(),
            &body,
            redactor,
        )
    }

    fn transport_failure(
        &self,
        call: &str,
        url: &Url,
        error: reqwest::Error,
        timeout: Duration,
        redactor: &Redactor,
    ) -> Failure {
        let error = error.without_url();
        let host = match (url.host_str(), url.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            _ => "the server".into(),
        };
        let detail = redactor.scrub(&chain(&error));
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
}

/// Turns an HTTP answer into the document or a failure. WeCom answers HTTP 200 even for
/// its own errors, so any other status came from something in between, or from a wrong
/// `--api-base`.
fn judge(
    call: &'static str,
    status: StatusCode,
    content_type: &str,
    location: Option<&str>,
    body: &[u8],
    redactor: &Redactor,
) -> Result<Value, Failure> {
    if status.is_redirection() {
        // The query of a redirect target may echo the credentials: show the rest.
        let to = location
            .map(|l| {
                format!(
                    " to {}",
                    quote(&redactor.scrub(l.split('?').next().unwrap_or("")))
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
                quote(&redactor.scrub(content_type)),
                redactor.snippet(body)
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
                quote(&redactor.scrub(content_type)),
                redactor.snippet(body)
            ),
            false,
        )
    })?;
    // A key given twice (`"errcode":45009,"errcode":0`) makes the answer ambiguous.
    if let Err(e) = crate::wecom::parse_json(body) {
        return Err(Failure {
            error: Error::Input(format!(
                "{call}: the answer is not valid JSON: {}",
                redactor.scrub(&e.to_string())
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
                    quote(&redactor.scrub(&v.to_string()))
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
                errmsg: redactor.scrub(errmsg),
            },
            retry: errcode::action(errcode) == Action::Retry,
        });
    }
    Ok(doc)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

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
}
