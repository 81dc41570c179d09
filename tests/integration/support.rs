//! Running the binary, and where the fixtures are.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use wecom_allowlist::Target;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

/// Variables of the machine running the tests that would change what the binary does: its
/// credentials, API base, log levels, proxies and trusted CAs. Every run starts without them.
const HOST_ENV: [&str; 16] = [
    "WECOM_ALLOWLIST_CONFIG",
    "WECOM_CORP_ID",
    "WECOM_CORP_SECRET",
    "WECOM_ACCESS_TOKEN",
    "WECOM_API_BASE",
    "RUST_LOG",
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// Runs the binary with `args`, feeding `stdin` if given.
pub fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    run_env(args, stdin, &[])
}

/// `run` with environment variables set (a later pair wins over an earlier one).
pub fn run_env(args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wecom-allowlist"));
    for name in HOST_ENV {
        cmd.env_remove(name);
    }
    cmd.envs(env.iter().copied());
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("the binary starts");
    if let Some(bytes) = stdin {
        use std::io::Write;
        // A process that exits early closes its stdin: that is its answer, not a test failure.
        let _ = child.stdin.take().expect("piped stdin").write_all(bytes);
    }
    child.wait_with_output().expect("the binary runs")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Renders `target` from a fixture with extra `args`; panics with stderr on failure.
pub fn render(target: &str, fixture_path: &Path, args: &[&str]) -> String {
    let path = fixture_path.to_str().expect("UTF-8 path");
    let mut all = vec!["render", target, "--input", path];
    all.extend_from_slice(args);
    let out = run(&all, None);
    assert!(
        out.status.success(),
        "render {target} {path} failed: {}",
        stderr(&out)
    );
    stdout(&out)
}

/// Every target of the server list, from the crate's own table: a new target can't miss a
/// test.
pub const TARGETS: [&str; Target::SERVER.len()] = {
    let mut names = [""; Target::SERVER.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = Target::SERVER[i].name();
        i += 1;
    }
    names
};

/// README.md's block marked `<!-- tested: NAME -->` (the fenced block right after the marker),
/// so that tests run the instructions exactly as the README gives them.
pub fn readme_block(name: &str) -> String {
    readme_block_after(&format!("<!-- tested: {name} -->"))
}

/// README.md's fenced block right after the line `marker`, which must be there once.
pub fn readme_block_after(marker: &str) -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md is readable");
    let marker = format!("{marker}\n");
    let mut found = readme.match_indices(&marker);
    let (at, _) = found
        .next()
        .unwrap_or_else(|| panic!("README.md has no {marker:?}"));
    assert!(found.next().is_none(), "README.md has {marker:?} twice");
    let rest = &readme[at + marker.len()..];
    let body = rest
        .strip_prefix("```")
        .and_then(|r| r.split_once('\n'))
        .map(|(_, body)| body)
        .unwrap_or_else(|| panic!("{marker:?} is not right before a fenced block"));
    let end = body
        .find("\n```\n")
        .unwrap_or_else(|| panic!("the block after {marker:?} never ends"));
    body[..=end].to_owned()
}
