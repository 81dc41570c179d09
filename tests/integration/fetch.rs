//! Fetching live against a stand-in WeCom server on 127.0.0.1 (wiremock): the token flow,
//! retries, refusals that say what to do, files left intact, and the promise that no secret or
//! token is ever printed. Every run is at `-vv` with RUST_LOG=trace and its whole output is
//! scanned for the credentials.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{fixture, run_env, stderr, stdout};

const CORP_ID: &str = "ww0123456789abcdef";
const SECRET: &str = "Sec4f9d2c7e1b8a6f3d0c5e9b2a7d4f1c8e3b6a9d2xz";
const TOKEN: &str = "TokA7Yx2kQ9mVb4Ln8Rp1Zs6Wd3Jc5Hf0GaUe";
const TOKEN2: &str = "TokB3Kd8Pq1Xm6Vn9Bz2Lr5Ty7Wc4Hs0FeQi";
const GETTOKEN: &str = "/cgi-bin/gettoken";
const LIST: &str = "/cgi-bin/security/get_server_domain_ip";

fn seed() -> Value {
    serde_json::from_slice(&fs::read(fixture("seed.json")).unwrap()).unwrap()
}

fn seed_answer() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(seed())
}

fn token_answer(token: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(
        json!({"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": 7200}),
    )
}

fn wecom_error(errcode: i64, errmsg: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"errcode": errcode, "errmsg": errmsg}))
}

/// gettoken for the test app's credentials only.
fn gettoken(answer: ResponseTemplate) -> Mock {
    Mock::given(method("GET"))
        .and(path(GETTOKEN))
        .and(query_param("corpid", CORP_ID))
        .and(query_param("corpsecret", SECRET))
        .respond_with(answer)
}

/// get_server_domain_ip for one token only.
fn list(token: &str, answer: ResponseTemplate) -> Mock {
    Mock::given(method("GET"))
        .and(path(LIST))
        .and(query_param("access_token", token))
        .respond_with(answer)
}

/// Mounts `answers` for one endpoint to be given in turn, each exactly once.
async fn in_turn(
    server: &MockServer,
    endpoint: impl Fn(ResponseTemplate) -> Mock,
    answers: Vec<ResponseTemplate>,
) {
    for (turn, answer) in (1u8..).zip(answers) {
        endpoint(answer)
            .with_priority(turn)
            .up_to_n_times(1)
            .expect(1)
            .mount(server)
            .await;
    }
}

/// A server that hands out TOKEN and answers the seed list for it.
async fn happy_server() -> MockServer {
    let server = MockServer::start().await;
    gettoken(token_answer(TOKEN)).mount(&server).await;
    list(TOKEN, seed_answer()).mount(&server).await;
    server
}

/// Every credential of these tests, and a stretch from inside each: a leak of part of one
/// counts too.
fn assert_no_secrets(out: &Output) {
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for secret in [SECRET, TOKEN, TOKEN2] {
        for needle in [secret, &secret[6..22]] {
            assert!(!text.contains(needle), "{needle} leaked:\n{text}");
        }
    }
}

/// Runs the binary against `server` at the most verbose level, with the app's credentials in
/// the environment unless `env` overrides them, and checks that nothing leaked.
fn wecom(server: &MockServer, args: &[&str], env: &[(&str, &str)]) -> Output {
    wecom_at(&server.uri(), args, env)
}

/// `wecom` with any API base.
fn wecom_at(base: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut all = args.to_vec();
    all.extend(["-vv", "--api-base", base]);
    let mut vars = vec![
        ("WECOM_CORP_ID", CORP_ID),
        ("WECOM_CORP_SECRET", SECRET),
        ("RUST_LOG", "trace"),
    ];
    vars.extend_from_slice(env);
    let out = run_env(&all, None, &vars);
    assert_no_secrets(&out);
    out
}

/// The one error line a failed run ends with.
fn error_line(out: &Output) -> String {
    let err = stderr(out);
    err.lines()
        .find(|l| l.starts_with("wecom-allowlist: error: "))
        .unwrap_or_else(|| panic!("no error line in:\n{err}"))
        .to_owned()
}

/// Runs `fetch -o FILE` over an existing FILE and checks the failure contract: the exit code,
/// an error line holding each of `messages`, nothing on standard output, FILE untouched and no
/// temporary file left beside it. Returns the error line.
fn fetch_fails(
    server: &MockServer,
    args: &[&str],
    env: &[(&str, &str)],
    code: i32,
    messages: &[&str],
) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wecom.json");
    fs::write(&file, "precious\n").unwrap();
    let mut all = vec!["fetch", "-o", file.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = wecom(server, &all, env);
    assert_eq!(out.status.code(), Some(code), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "stdout: {}", stdout(&out));
    let line = error_line(&out);
    for message in messages {
        assert!(line.contains(message), "{message:?} missing from: {line}");
    }
    assert_eq!(fs::read_to_string(&file).unwrap(), "precious\n");
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "a temporary file was left"
    );
    line
}

fn pretty(doc: &Value) -> String {
    serde_json::to_string_pretty(doc).unwrap() + "\n"
}

fn secret_sha256(secret: &str) -> String {
    format!("{:x}", Sha256::digest(secret.as_bytes()))
}

fn write_cache(path: &Path, token: &str, expires_in: u64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let cache = json!({
        "corp_id": CORP_ID,
        "secret_sha256": secret_sha256(SECRET),
        "access_token": token,
        "expires_at": now + expires_in,
    });
    fs::write(path, cache.to_string()).unwrap();
    // As the tool writes it: a cache others can read is not used.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_flow_saves_the_answer_as_received() {
    let server = MockServer::start().await;
    gettoken(token_answer(TOKEN)).expect(1).mount(&server).await;
    list(TOKEN, seed_answer()).expect(1).mount(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wecom.json");
    fs::write(&file, "old\n").unwrap();
    let out = wecom(&server, &["fetch", "-o", file.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let saved = fs::read_to_string(&file).unwrap();
    // Pretty JSON of what was sent, keys in the order WeCom sent them.
    assert_eq!(saved, pretty(&seed()));
    assert!(saved.starts_with("{\n  \"errcode\": 0,\n  \"errmsg\": \"ok\",\n  \"domain_list\""));
    // -vv logs each request by its path, never its query.
    let err = stderr(&out);
    assert!(err.contains(LIST) && err.contains(GETTOKEN), "{err}");
    assert!(
        !err.contains("corpsecret=") && !err.contains("access_token="),
        "{err}"
    );
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn render_and_build_fetch_live_without_input() {
    let server = happy_server().await;
    let seed_path = fixture("seed.json");
    let seed_path = seed_path.to_str().unwrap();

    let out = wecom(&server, &["fetch"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), pretty(&seed()));

    let live = wecom(&server, &["render", "squid"], &[]);
    assert!(live.status.success(), "{}", stderr(&live));
    let saved = run_env(&["render", "squid", "--input", seed_path], None, &[]);
    assert_eq!(stdout(&live), stdout(&saved));
    assert!(stdout(&live).contains("http_access allow"));

    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("live"), dir.path().join("saved"));
    let out = wecom(
        &server,
        &[
            "build",
            "--out-dir",
            a.to_str().unwrap(),
            "--target",
            "nftables",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run_env(
        &[
            "build",
            "-i",
            seed_path,
            "--out-dir",
            b.to_str().unwrap(),
            "--target",
            "nftables",
        ],
        None,
        &[],
    );
    assert!(out.status.success());
    assert_eq!(
        fs::read(a.join("nftables.nft")).unwrap(),
        fs::read(b.join("nftables.nft")).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_api_is_retried() {
    let server = MockServer::start().await;
    gettoken(token_answer(TOKEN)).expect(1).mount(&server).await;
    // -1 (system busy), then 45033 (too many concurrent calls), then the list.
    let answers = vec![
        wecom_error(-1, "system busy"),
        wecom_error(45033, "api concurrent out of limit"),
        seed_answer(),
    ];
    in_turn(&server, |a| list(TOKEN, a), answers).await;
    let out = wecom(&server, &["fetch"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), pretty(&seed()));
    let err = stderr(&out);
    assert_eq!(err.matches("retrying in").count(), 2, "{err}");
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http_503_and_429_are_retried() {
    let server = MockServer::start().await;
    let unavailable = ResponseTemplate::new(503).set_body_string("upstream unavailable");
    in_turn(&server, gettoken, vec![unavailable, token_answer(TOKEN)]).await;
    let too_many = ResponseTemplate::new(429);
    in_turn(&server, |a| list(TOKEN, a), vec![too_many, seed_answer()]).await;
    let out = wecom(&server, &["fetch"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("HTTP 503 Service Unavailable"), "{err}");
    assert!(err.contains("HTTP 429 Too Many Requests"), "{err}");
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_stays_down_is_given_up_on() {
    let server = MockServer::start().await;
    gettoken(ResponseTemplate::new(502).set_body_string("bad gateway"))
        .expect(4)
        .mount(&server)
        .await;
    let line = fetch_fails(
        &server,
        &[],
        &[],
        3,
        &["gettoken: HTTP 502 Bad Gateway", "\"bad gateway\""],
    );
    assert!(line.contains("cannot fetch the list"), "{line}");
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_cached_token_is_replaced_once() {
    let server = MockServer::start().await;
    list(TOKEN, wecom_error(42001, "access_token expired"))
        .expect(1)
        .mount(&server)
        .await;
    gettoken(token_answer(TOKEN2))
        .expect(1)
        .mount(&server)
        .await;
    list(TOKEN2, seed_answer()).expect(1).mount(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("token.json");
    write_cache(&cache, TOKEN, 7200);
    let out = wecom(
        &server,
        &["fetch", "--token-cache", cache.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), pretty(&seed()));
    // The cache now holds the new token, privately, and never the secret.
    let text = fs::read_to_string(&cache).unwrap();
    let cached: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(cached["access_token"], TOKEN2);
    assert_eq!(cached["corp_id"], CORP_ID);
    assert_eq!(cached["secret_sha256"], secret_sha256(SECRET));
    assert!(!text.contains(SECRET));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&cache).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_refused_again_after_the_refresh_fails() {
    let server = MockServer::start().await;
    gettoken(token_answer(TOKEN)).expect(2).mount(&server).await;
    list(TOKEN, wecom_error(40014, "invalid access_token"))
        .expect(2)
        .mount(&server)
        .await;
    fetch_fails(
        &server,
        &[],
        &[],
        3,
        &[
            "get_server_domain_ip: WeCom returned errcode 40014",
            "fetch a new one",
        ],
    );
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ready_token_is_used_as_is() {
    let server = MockServer::start().await;
    gettoken(token_answer(TOKEN2))
        .expect(0)
        .mount(&server)
        .await;
    list(TOKEN, seed_answer()).expect(1).mount(&server).await;
    let no_app = [
        ("WECOM_CORP_ID", ""),
        ("WECOM_CORP_SECRET", ""),
        ("WECOM_ACCESS_TOKEN", TOKEN),
    ];
    let out = wecom(&server, &["fetch"], &no_app);
    assert!(out.status.success(), "{}", stderr(&out));
    server.verify().await;

    // Without an app to get a new one, an expired ready token is final.
    let server = MockServer::start().await;
    list(TOKEN, wecom_error(42001, "access_token expired"))
        .expect(1)
        .mount(&server)
        .await;
    fetch_fails(
        &server,
        &[],
        &no_app,
        3,
        &[
            "errcode 42001",
            "a stale WECOM_ACCESS_TOKEN must be replaced",
        ],
    );
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_cache_saves_gettoken_calls() {
    let server = MockServer::start().await;
    gettoken(token_answer(TOKEN)).expect(1).mount(&server).await;
    list(TOKEN, seed_answer()).expect(2).mount(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("token.json");
    let args = ["fetch", "--token-cache", cache.to_str().unwrap()];
    for _ in 0..2 {
        let out = wecom(&server, &args, &[]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    server.verify().await;

    // A token about to expire is not used: the next run gets a new one.
    write_cache(&cache, TOKEN, 60);
    let server = MockServer::start().await;
    gettoken(token_answer(TOKEN2))
        .expect(1)
        .mount(&server)
        .await;
    list(TOKEN2, seed_answer()).expect(1).mount(&server).await;
    let out = wecom(&server, &args, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let cached: Value = serde_json::from_slice(&fs::read(&cache).unwrap()).unwrap();
    assert_eq!(cached["access_token"], TOKEN2);
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn configuration_errors_fail_fast_with_advice() {
    let from_ip =
        "not allow to access from your ip, hint: [1700000000_1_abc], from ip: 203.0.113.9, \
                   more info at https://open.work.weixin.qq.com/devtool/query?e=60020";
    let cases: [(&str, i64, &str, &[&str]); 4] = [
        (
            GETTOKEN,
            40001,
            "invalid credential",
            &[
                "gettoken: WeCom returned errcode 40001",
                "the corp secret is invalid",
            ],
        ),
        (
            GETTOKEN,
            40013,
            "invalid corpid",
            &[
                "gettoken: WeCom returned errcode 40013",
                "the corp id is invalid",
            ],
        ),
        (
            LIST,
            60020,
            from_ip,
            &[
                "get_server_domain_ip: WeCom returned errcode 60020",
                "add 203.0.113.9 to the app's trusted IPs (企业可信IP)",
            ],
        ),
        (
            LIST,
            48002,
            "api forbidden",
            &[
                "get_server_domain_ip: WeCom returned errcode 48002",
                "我的企业 - 设置 - 域名IP - 可调用API的应用",
            ],
        ),
    ];
    for (endpoint, errcode, errmsg, messages) in cases {
        let server = MockServer::start().await;
        let (tokens, lists) = if endpoint == GETTOKEN { (1, 0) } else { (1, 1) };
        let token = if endpoint == GETTOKEN {
            wecom_error(errcode, errmsg)
        } else {
            token_answer(TOKEN)
        };
        gettoken(token).expect(tokens).mount(&server).await;
        list(TOKEN, wecom_error(errcode, errmsg))
            .expect(lists)
            .mount(&server)
            .await;
        let started = Instant::now();
        fetch_fails(&server, &[], &[], 3, messages);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "errcode {errcode} took {:?}",
            started.elapsed()
        );
        server.verify().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_page_that_is_not_json_is_reported_as_such() {
    // A proxy's block page that echoes the request, secret included.
    let page = format!(
        "<html>\n<head><title>Access denied</title></head>\n<body>GET {GETTOKEN}?corpid={CORP_ID}&corpsecret={SECRET} is blocked</body></html>"
    );
    let server = MockServer::start().await;
    gettoken(ResponseTemplate::new(200).set_body_raw(page.clone(), "text/html; charset=utf-8"))
        .expect(1)
        .mount(&server)
        .await;
    let line = fetch_fails(
        &server,
        &[],
        &[],
        3,
        &[
            "gettoken: HTTP 200 OK",
            "content-type \"text/html; charset=utf-8\"",
            "the answer is not JSON",
            r#""<html>\n<head><title>Access denied</title></head>\n<body>GET /cgi-bin/gettoken"#,
        ],
    );
    assert!(line.contains("corpsecret=[redacted]"), "{line}");
    server.verify().await;

    // The same page with a 403 is not retried either.
    let server = MockServer::start().await;
    gettoken(ResponseTemplate::new(403).set_body_raw(page, "text/html"))
        .expect(1)
        .mount(&server)
        .await;
    fetch_fails(
        &server,
        &[],
        &[],
        3,
        &["gettoken: HTTP 403 Forbidden", "<html>"],
    );
    server.verify().await;

    // Nor is a redirect followed: its query, which may carry the token, is not shown.
    let server = MockServer::start().await;
    gettoken(token_answer(TOKEN)).mount(&server).await;
    list(
        TOKEN,
        ResponseTemplate::new(302).insert_header(
            "location",
            format!("http://127.0.0.1:9/elsewhere?access_token={TOKEN}").as_str(),
        ),
    )
    .expect(1)
    .mount(&server)
    .await;
    fetch_fails(
        &server,
        &[],
        &[],
        3,
        &["HTTP 302 Found, a redirect to \"http://127.0.0.1:9/elsewhere\""],
    );
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_slower_than_the_timeout() {
    let server = MockServer::start().await;
    gettoken(token_answer(TOKEN)).mount(&server).await;
    list(
        TOKEN,
        ResponseTemplate::new(200)
            .set_body_json(seed())
            .set_delay(Duration::from_secs(3)),
    )
    .mount(&server)
    .await;
    let started = Instant::now();
    fetch_fails(
        &server,
        &["--timeout", "1"],
        &[],
        3,
        &[
            "get_server_domain_ip: no answer from 127.0.0.1:",
            "(--timeout)",
        ],
    );
    // Retries stop at the deadline (3 x --timeout), well before one slow answer would land
    // twice.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(6), "took {took:?}");
    assert!(
        server.received_requests().await.unwrap().len() >= 3,
        "the timed-out call was not retried"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_or_invalid_answer_is_never_saved() {
    let server = MockServer::start().await;
    gettoken(token_answer(TOKEN)).mount(&server).await;
    list(
        TOKEN,
        ResponseTemplate::new(200).set_body_raw(vec![b' '; 17 << 20], "application/json"),
    )
    .expect(1)
    .mount(&server)
    .await;
    fetch_fails(&server, &[], &[], 3, &["larger than 16 MiB"]);
    server.verify().await;

    // errcode 0 but a bad entry: the parser `render` uses refuses it (exit 2, invalid input).
    let server = MockServer::start().await;
    gettoken(token_answer(TOKEN)).mount(&server).await;
    let bad = json!({"errcode": 0, "errmsg": "ok", "ip_list": [
        {"ip": "192.0.2.1", "protocol": "TCP", "port": [0], "is_necessary": 1}
    ]});
    list(TOKEN, ResponseTemplate::new(200).set_body_json(bad))
        .mount(&server)
        .await;
    fetch_fails(&server, &[], &[], 2, &["ip_list[0].port: 0 is not a port"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_credentials_fail_before_any_request() {
    let server = MockServer::start().await;
    for (env, message) in [
        (
            &[("WECOM_CORP_ID", ""), ("WECOM_CORP_SECRET", "")][..],
            "credentials: none given",
        ),
        (
            &[("WECOM_CORP_SECRET", "")][..],
            "the app's Secret is missing",
        ),
        (&[("WECOM_CORP_ID", "")][..], "the corp id is missing"),
    ] {
        fetch_fails(&server, &[], env, 3, &[message]);
        let out = wecom(&server, &["render", "squid"], env);
        assert_eq!(out.status.code(), Some(3));
        assert!(error_line(&out).contains(message));
    }
    let out = wecom(
        &server,
        &["fetch", "--corp-secret-file", "/no/such/secret"],
        &[],
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(error_line(&out).contains("cannot read the corp secret file /no/such/secret"));
    assert!(server.received_requests().await.unwrap().is_empty());

    // The secret is never a flag value (it would show in `ps`).
    let out = wecom(&server, &["fetch", "--corp-secret", SECRET], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_secret_can_come_from_a_file() {
    let server = MockServer::start().await;
    gettoken(token_answer(TOKEN)).expect(1).mount(&server).await;
    list(TOKEN, seed_answer()).expect(1).mount(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    fs::write(&file, format!("{SECRET}\n")).unwrap();
    let out = wecom(
        &server,
        &[
            "fetch",
            "--corp-secret-file",
            file.to_str().unwrap(),
            "--corp-id",
            CORP_ID,
        ],
        &[("WECOM_CORP_ID", ""), ("WECOM_CORP_SECRET", "")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn proxies_from_the_environment_are_honoured() {
    // Nothing listens on 127.0.0.2:9; the stand-in server plays the proxy, so a success means
    // the request went through it.
    let proxy = happy_server().await;
    let (base, args) = ("http://127.0.0.2:9", ["fetch", "--timeout", "2"]);
    let proxy_url = proxy.uri();
    let mut env = vec![("HTTP_PROXY", proxy_url.as_str())];
    let out = wecom_at(base, &args, &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let seen = proxy.received_requests().await.unwrap();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|r| r.url.host_str() == Some("127.0.0.2")));

    // NO_PROXY sends it straight to 127.0.0.2:9, where nothing answers.
    env.push(("NO_PROXY", "127.0.0.2"));
    let out = wecom_at(base, &args, &env);
    assert_eq!(out.status.code(), Some(3));
    assert!(error_line(&out).contains("cannot connect to 127.0.0.2:9"));
    assert_eq!(proxy.received_requests().await.unwrap().len(), 2);
}

/// An HTTPS stand-in: a CA and a certificate for 127.0.0.1 made on the spot, and a server that
/// answers gettoken with TOKEN and anything else with the seed list.
struct TlsServer {
    addr: SocketAddr,
    /// The CA's certificate (PEM), for SSL_CERT_FILE.
    ca_file: tempfile::NamedTempFile,
    /// TLS connections that completed a handshake, and those attempted.
    handshakes: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
}

async fn tls_server() -> TlsServer {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "wecom-allowlist test CA");
    let ca = ca.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let connections = Arc::new(AtomicUsize::new(0));
    let (shakes, conns) = (handshakes.clone(), connections.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            conns.fetch_add(1, Ordering::SeqCst);
            let (acceptor, shakes) = (acceptor.clone(), shakes.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                shakes.fetch_add(1, Ordering::SeqCst);
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = if head.starts_with(format!("GET {GETTOKEN}?").as_bytes()) {
                    json!({"errcode": 0, "errmsg": "ok", "access_token": TOKEN, "expires_in": 7200})
                } else {
                    seed()
                }
                .to_string();
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    let mut ca_file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut ca_file, ca.pem().as_bytes()).unwrap();
    TlsServer {
        addr,
        ca_file,
        handshakes,
        connections,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn https_is_verified_against_the_system_trust_store() {
    let server = tls_server().await;
    let base = format!("https://{}", server.addr);

    // A CA the system store doesn't hold: refused at once, with what to do, and not retried.
    let out = wecom_at(&base, &["fetch"], &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let line = error_line(&out);
    assert!(
        line.contains(&format!("gettoken: TLS with {} failed", server.addr)),
        "{line}"
    );
    assert!(
        line.contains("UnknownIssuer") && line.contains("trust store"),
        "{line}"
    );
    assert_eq!(server.connections.load(Ordering::SeqCst), 1, "retried");
    assert_eq!(server.handshakes.load(Ordering::SeqCst), 0);

    // The same CA added to the store (SSL_CERT_FILE is how OpenSSL-style stores are pointed
    // elsewhere; rustls-native-certs reads it as the system store).
    let ca = server.ca_file.path().to_str().unwrap();
    let out = wecom_at(&base, &["fetch"], &[("SSL_CERT_FILE", ca)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), pretty(&seed()));
    assert_eq!(server.handshakes.load(Ordering::SeqCst), 2);
}

/// A CONNECT proxy that tunnels every request to `upstream`, whatever it was asked for, and
/// records what it was asked for.
async fn connect_proxy(upstream: SocketAddr) -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = asked.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match client.read(&mut byte).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => head.push(byte[0]),
                    }
                }
                let line = String::from_utf8_lossy(&head)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned();
                seen.lock().unwrap().push(line);
                let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                if client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .is_ok()
                {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (addr, asked)
}

#[tokio::test(flavor = "multi_thread")]
async fn https_goes_through_https_proxy() {
    let server = tls_server().await;
    let (proxy, asked) = connect_proxy(server.addr).await;
    let proxy_url = format!("http://{proxy}");
    let env = [
        ("SSL_CERT_FILE", server.ca_file.path().to_str().unwrap()),
        ("HTTPS_PROXY", &proxy_url),
    ];
    // Nothing listens on port 1: only the proxy can reach the server.
    let out = wecom_at("https://127.0.0.1:1", &["fetch"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), pretty(&seed()));
    let asked = asked.lock().unwrap().clone();
    assert!(
        !asked.is_empty() && asked.iter().all(|l| l.starts_with("CONNECT 127.0.0.1:1 ")),
        "{asked:?}"
    );
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_expires_in_is_capped_in_the_cache() {
    for expires_in in [json!(u64::MAX), json!(1_000_000_000u64)] {
        let server = MockServer::start().await;
        let answer =
            json!({"errcode": 0, "errmsg": "ok", "access_token": TOKEN, "expires_in": expires_in});
        gettoken(ResponseTemplate::new(200).set_body_json(answer))
            .expect(1)
            .mount(&server)
            .await;
        list(TOKEN, seed_answer()).expect(1).mount(&server).await;
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("token.json");
        let before = now_secs();
        let out = wecom(
            &server,
            &["fetch", "--token-cache", cache.to_str().unwrap()],
            &[],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stderr(&out).contains("cached for 7200 s at most"));
        let cached: Value = serde_json::from_slice(&fs::read(&cache).unwrap()).unwrap();
        let expires_at = cached["expires_at"].as_u64().unwrap();
        assert!(
            (before + 7200..=now_secs() + 7200).contains(&expires_at),
            "{expires_at}"
        );
        server.verify().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_ready_token_leaves_the_cache_alone() {
    // WECOM_ACCESS_TOKEN is refused; the cache holds another, good token: it is used, and kept.
    let server = MockServer::start().await;
    list(TOKEN, wecom_error(42001, "access_token expired"))
        .expect(1)
        .mount(&server)
        .await;
    list(TOKEN2, seed_answer()).expect(1).mount(&server).await;
    gettoken(token_answer(TOKEN)).expect(0).mount(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("token.json");
    write_cache(&cache, TOKEN2, 7200);
    let written = fs::read(&cache).unwrap();
    let out = wecom(
        &server,
        &["fetch", "--token-cache", cache.to_str().unwrap()],
        &[("WECOM_ACCESS_TOKEN", TOKEN)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), pretty(&seed()));
    assert!(stderr(&out).contains("the access token from WECOM_ACCESS_TOKEN was refused"));
    assert_eq!(fs::read(&cache).unwrap(), written, "the cache changed");
    server.verify().await;

    // When the cached token is refused in turn, it is the one dropped, and gettoken gives a
    // new one.
    let server = MockServer::start().await;
    list(TOKEN, wecom_error(42001, "access_token expired"))
        .expect(1)
        .mount(&server)
        .await;
    list(TOKEN2, wecom_error(40014, "invalid access_token"))
        .expect(1)
        .mount(&server)
        .await;
    const TOKEN3: &str = "TokC9Zr4Mw2Qe7Ty5Ui1Op8As3Df6Gh0JkLx";
    gettoken(token_answer(TOKEN3))
        .expect(1)
        .mount(&server)
        .await;
    list(TOKEN3, seed_answer()).expect(1).mount(&server).await;
    let out = wecom(
        &server,
        &["fetch", "--token-cache", cache.to_str().unwrap()],
        &[("WECOM_ACCESS_TOKEN", TOKEN)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let cached: Value = serde_json::from_slice(&fs::read(&cache).unwrap()).unwrap();
    assert_eq!(cached["access_token"], TOKEN3);
    server.verify().await;
}

/// Runs the binary against `server` WITHOUT -v, with RUST_LOG as given, checking nothing leaked.
fn quiet(server: &MockServer, rust_log: &str) -> Output {
    let base = server.uri();
    let vars = [
        ("WECOM_CORP_ID", CORP_ID),
        ("WECOM_CORP_SECRET", SECRET),
        ("RUST_LOG", rust_log),
    ];
    let out = run_env(&["fetch", "--api-base", &base], None, &vars);
    assert_no_secrets(&out);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn our_warnings_show_whatever_rust_log_says_of_other_crates() {
    let server = MockServer::start().await;
    gettoken(token_answer(TOKEN)).mount(&server).await;
    let busy = || wecom_error(-1, "system busy");
    for (rust_log, shown) in [
        ("", true),
        ("hyper_util=debug", true),
        ("error", true),
        ("off", true),
        ("reqwest=info,hyper_util=off", true),
        // Naming this crate is the one way to quieten it.
        ("wecom_allowlist=error", false),
        ("hyper_util=debug,wecom_allowlist=off", false),
    ] {
        server.reset().await;
        gettoken(token_answer(TOKEN)).mount(&server).await;
        in_turn(&server, |a| list(TOKEN, a), vec![busy(), seed_answer()]).await;
        let out = quiet(&server, rust_log);
        assert!(out.status.success(), "{}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(
            err.contains("retrying in"),
            shown,
            "RUST_LOG={rust_log:?}: {err}"
        );
        assert!(!err.contains(" INFO "), "RUST_LOG={rust_log:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reqwest_records_reach_the_log_scrubbed() {
    let server = happy_server().await;
    let out = wecom(&server, &["fetch"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    // reqwest logs through `log`; its records show next to ours (and were scanned above).
    let err = stderr(&out);
    assert!(err.contains("reqwest::connect"), "{err}");
    assert!(err.contains("wecom_allowlist::fetch"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_that_are_too_short_are_refused_before_any_request() {
    let server = MockServer::start().await;
    for (env, message) in [
        (
            &[("WECOM_CORP_SECRET", "x7")][..],
            "the app's Secret is 2 characters long, too short",
        ),
        (
            &[
                ("WECOM_CORP_ID", ""),
                ("WECOM_CORP_SECRET", ""),
                ("WECOM_ACCESS_TOKEN", "tok3n"),
            ][..],
            "WECOM_ACCESS_TOKEN is 5 characters long, too short",
        ),
    ] {
        let line = fetch_fails(&server, &[], env, 3, &[message, "at least 16"]);
        assert!(!line.contains("x7") && !line.contains("tok3n"), "{line}");
    }
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn server_text_is_scrubbed_headers_included() {
    // A content type that echoes the request, secret included, on an answer that is not JSON
    // (final at once) and on a 503 (retried, so quoted in each warning too).
    let echo = format!("text/plain; url={GETTOKEN}?corpid={CORP_ID}&corpsecret={SECRET}");
    for status in [200, 503] {
        let server = MockServer::start().await;
        gettoken(
            ResponseTemplate::new(status)
                .set_body_raw("blocked", &echo)
                .insert_header("content-type", echo.as_str()),
        )
        .mount(&server)
        .await;
        let line = fetch_fails(
            &server,
            &[],
            &[],
            3,
            &["corpsecret=[redacted]", "\"blocked\""],
        );
        assert!(line.contains(&format!("HTTP {status}")), "{line}");
    }

    // A token echoed inside a successful answer is not saved by `fetch -o`.
    let server = MockServer::start().await;
    gettoken(token_answer(TOKEN)).mount(&server).await;
    let mut doc = seed();
    doc["errmsg"] = json!(format!("ok, access_token={TOKEN}"));
    list(TOKEN, ResponseTemplate::new(200).set_body_json(doc))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wecom.json");
    let out = wecom(&server, &["fetch", "-o", file.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let saved: Value = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
    assert_eq!(saved["errmsg"], "ok, access_token=[redacted]");
    assert_eq!(saved["domain_list"], seed()["domain_list"]);
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn a_token_cache_others_can_read_is_not_used() {
    use std::os::unix::fs::PermissionsExt;
    let server = MockServer::start().await;
    list(TOKEN, seed_answer()).expect(0).mount(&server).await;
    gettoken(token_answer(TOKEN2))
        .expect(1)
        .mount(&server)
        .await;
    list(TOKEN2, seed_answer()).expect(1).mount(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("token.json");
    write_cache(&cache, TOKEN, 7200);
    fs::set_permissions(&cache, fs::Permissions::from_mode(0o644)).unwrap();
    let out = wecom(
        &server,
        &["fetch", "--token-cache", cache.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("has mode 0644: others may have read its token, so it is not used"),
        "{err}"
    );
    assert_eq!(mode(&cache), 0o600);
    let cached: Value = serde_json::from_slice(&fs::read(&cache).unwrap()).unwrap();
    assert_eq!(cached["access_token"], TOKEN2);
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proxy_that_is_down_is_named_without_its_password() {
    // Nothing listens on 127.0.0.1:1, the proxy; the API base is never reached directly.
    let password = "Pr0xyPassw0rdSecret";
    let proxy = format!("http://agent:{password}@127.0.0.1:1");
    let out = wecom_at(
        "http://127.0.0.2:9",
        &["fetch", "--timeout", "2"],
        &[("HTTP_PROXY", &proxy)],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let line = error_line(&out);
    assert!(
        line.contains("cannot connect to 127.0.0.2:9 through the proxy http://127.0.0.1:1:"),
        "{line}"
    );
    let err = stderr(&out);
    assert!(!err.contains(password) && !err.contains("agent:"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_with_a_key_given_twice_is_refused() {
    // serde_json would keep the last errcode: a rate-limit error would read as success.
    let server = MockServer::start().await;
    gettoken(token_answer(TOKEN)).mount(&server).await;
    list(
        TOKEN,
        ResponseTemplate::new(200).set_body_raw(
            br#"{"errcode":45009,"errmsg":"api freq out of limit","errcode":0,"ip_list":[]}"#
                .to_vec(),
            "application/json",
        ),
    )
    .expect(1)
    .mount(&server)
    .await;
    fetch_fails(
        &server,
        &[],
        &[],
        2,
        &[r#"the key "errcode" appears twice in one object"#],
    );
    server.verify().await;
}

/// The api and callback calls, each answering for one token only.
fn plain_list(endpoint: &str, token: &str, answer: ResponseTemplate) -> Mock {
    Mock::given(method("GET"))
        .and(path(endpoint))
        .and(query_param("access_token", token))
        .respond_with(answer)
}

const API_LIST: &str = "/cgi-bin/get_api_domain_ip";
const CALLBACK_LIST: &str = "/cgi-bin/getcallbackip";

#[tokio::test(flavor = "multi_thread")]
async fn the_api_and_callback_lists_are_fetched_marked_and_built() {
    for (list, endpoint, fixture_name) in [
        ("api", API_LIST, "api.json"),
        ("callback", CALLBACK_LIST, "callback.json"),
    ] {
        let answer: Value = serde_json::from_slice(
            &fs::read(crate::endpoints::list_fixture(fixture_name)).unwrap(),
        )
        .unwrap();
        let server = MockServer::start().await;
        gettoken(token_answer(TOKEN)).mount(&server).await;
        plain_list(
            endpoint,
            TOKEN,
            ResponseTemplate::new(200).set_body_json(answer.clone()),
        )
        .mount(&server)
        .await;
        // The server list's call is never made.
        Mock::given(path(LIST))
            .respond_with(seed_answer())
            .expect(0)
            .mount(&server)
            .await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("list.json");
        let out = wecom(
            &server,
            &["fetch", "--list", list, "-o", file.to_str().unwrap()],
            &[],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stderr(&out).contains(endpoint), "{}", stderr(&out));
        // As received, plus the mark that says which list it is.
        let mut want = answer.clone();
        want.as_object_mut()
            .unwrap()
            .insert("list".into(), json!(list));
        assert_eq!(fs::read_to_string(&file).unwrap(), pretty(&want));
        // The saved answer builds as its list, and only as its list.
        let saved = file.to_str().unwrap();
        let out = run_env(
            &["render", "nftables", "--list", list, "-i", saved],
            None,
            &[],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stderr(&out), "");
        let other = if list == "api" { "callback" } else { "api" };
        let out = run_env(
            &["render", "nftables", "--list", other, "-i", saved],
            None,
            &[],
        );
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        // Live, without --input: the same bytes as from the saved answer.
        let live = wecom(&server, &["render", "nftables", "--list", list], &[]);
        assert!(live.status.success(), "{}", stderr(&live));
        assert_eq!(
            stdout(&live),
            stdout(&out_of(&[
                "render", "nftables", "--list", list, "-i", saved
            ]))
        );
        server.verify().await;
    }
}

fn out_of(args: &[&str]) -> Output {
    let out = run_env(args, None, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_list_errors_name_the_call_and_say_what_to_do() {
    for (list, endpoint, call) in [
        ("api", API_LIST, "get_api_domain_ip"),
        ("callback", CALLBACK_LIST, "getcallbackip"),
    ] {
        // WeCom's documented error answer carries an empty ip_list.
        let server = MockServer::start().await;
        gettoken(token_answer(TOKEN)).mount(&server).await;
        plain_list(
            endpoint,
            TOKEN,
            ResponseTemplate::new(200).set_body_json(json!({
                "ip_list": [],
                "errcode": 60020,
                "errmsg": "not allow to access from your ip, hint: [1576065934_28], from ip: 203.0.113.7, more info at https://open.work.weixin.qq.com/devtool/query?e=60020"
            })),
        )
        .mount(&server)
        .await;
        fetch_fails(
            &server,
            &["--list", list],
            &[],
            3,
            &[
                call,
                "errcode 60020",
                "add 203.0.113.7 to the app's trusted IPs",
            ],
        );
        // An expired token is replaced, as for the server list.
        let server = MockServer::start().await;
        in_turn(
            &server,
            gettoken,
            vec![token_answer(TOKEN), token_answer(TOKEN2)],
        )
        .await;
        plain_list(
            endpoint,
            TOKEN,
            ResponseTemplate::new(200).set_body_json(
                json!({"ip_list": [], "errcode": 42001, "errmsg": "access_token expired"}),
            ),
        )
        .mount(&server)
        .await;
        plain_list(
            endpoint,
            TOKEN2,
            ResponseTemplate::new(200).set_body_json(
                json!({"errcode": 0, "errmsg": "ok", "ip_list": ["182.254.11.176"]}),
            ),
        )
        .mount(&server)
        .await;
        let out = wecom(&server, &["fetch", "--list", list], &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains("182.254.11.176"));
        assert!(
            stderr(&out).contains(&format!(
                "{call}: the access token just fetched was refused (errcode 42001)"
            )),
            "{}",
            stderr(&out)
        );
        // Malformed answers are never saved: a bad address, a server-shaped list, not JSON.
        for (body, code, message) in [
            (
                json!({"errcode": 0, "errmsg": "ok", "ip_list": ["182.254.11.176", "1.2.3.4/33"]}),
                2,
                r#"ip_list[1]: "1.2.3.4/33" is not an IPv4/IPv6 address or CIDR"#,
            ),
            (seed(), 2, "the server list (get_server_domain_ip)"),
            (
                json!({"errcode": 0, "errmsg": "ok", "ip_list": ["10.1.2.0/24"]}),
                4,
                "10.1.2.0/24",
            ),
        ] {
            let server = MockServer::start().await;
            gettoken(token_answer(TOKEN)).mount(&server).await;
            plain_list(
                endpoint,
                TOKEN,
                ResponseTemplate::new(200).set_body_json(body),
            )
            .mount(&server)
            .await;
            // The non-public guard runs where the list is used (render/build), as for the server
            // list; fetch saves what validates.
            if code == 4 {
                let out = wecom(&server, &["render", "nftables", "--list", list], &[]);
                assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
                assert!(error_line(&out).contains(message), "{}", stderr(&out));
                assert!(out.stdout.is_empty());
                continue;
            }
            fetch_fails(&server, &["--list", list], &[], code, &[message]);
        }
        let server = MockServer::start().await;
        gettoken(token_answer(TOKEN)).mount(&server).await;
        plain_list(
            endpoint,
            TOKEN,
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/html")
                .set_body_string("<html>bad gateway</html>"),
        )
        .mount(&server)
        .await;
        fetch_fails(
            &server,
            &["--list", list],
            &[],
            3,
            &[call, "<html>bad gateway</html>"],
        );
    }
}
