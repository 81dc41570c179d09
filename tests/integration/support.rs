//! Running the binary, and where the fixtures are.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

/// Runs the binary with `args`, feeding `stdin` if given.
pub fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wecom-allowlist"));
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

pub const TARGETS: [&str; 5] = ["iptables", "ip6tables", "nftables", "pfsense", "squid"];
