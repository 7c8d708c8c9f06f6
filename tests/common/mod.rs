//! Shared helpers for the integration tests: each test file that needs them says `mod common;`.
//! They live in the test kit (`lab/testkit`, shared with the benchmarks and the lab); this
//! module only names them for the test files. Everything there starts real services on
//! loopback (never mocks).
#![allow(dead_code, unused_imports)]

pub mod ansible;
pub mod hook;
pub mod postgres;

pub use pushscan_testkit::{emocheck, files_under, install_exe, port_or_free, sshd, write_exe};

/// The lab's own executable (`pushscan-lab`, its `serve` process), built by cargo if needed,
/// next to `pushscan_exe` (`env!("CARGO_BIN_EXE_pushscan")`); see
/// [`pushscan_testkit::cargo::workspace_exe`].
pub fn lab_exe(pushscan_exe: &str) -> std::path::PathBuf {
    pushscan_testkit::cargo::workspace_exe(std::path::Path::new(pushscan_exe), "pushscan-lab")
}

/// SHA-256 of `bytes` in lower-case hex (a checker's pin).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A finished command's exit code, stdout and stderr, for assertion messages.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The version of YARA-X's `yr` the tests run (`scripts/test` installs it).
pub const YR_VERSION: &str = "1.22.1";

/// The `yr` binary: `PUSHSCAN_TEST_YR`, else the cache `scripts/test` installs into. Missing,
/// the test fails with the command that installs it.
pub fn yr() -> std::path::PathBuf {
    use std::path::PathBuf;
    if let Some(p) = std::env::var_os("PUSHSCAN_TEST_YR") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .expect("HOME or XDG_CACHE_HOME is set");
    let root = cache.join(format!("pushscan-test/yara-x-cli-{YR_VERSION}"));
    let bin = root.join("bin/yr");
    assert!(
        bin.is_file(),
        "yr (YARA-X) is missing at {}: install it with\n  cargo install yara-x-cli --version {YR_VERSION} --locked --root \"{}\"\n(scripts/test does), or set PUSHSCAN_TEST_YR",
        bin.display(),
        root.display()
    );
    bin
}
