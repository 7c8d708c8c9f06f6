//! Shared helpers for the integration tests: each test file that needs them says `mod common;`.
//! They live in the test kit (`lab/testkit`, shared with the benchmarks and the lab); this
//! module only names them for the test files. Everything there starts real services on
//! loopback (never mocks).
#![allow(dead_code, unused_imports)]

pub mod ansible;
pub mod hook;
pub mod postgres;

pub use pushscan_testkit::{emocheck, install_exe, port_or_free, sshd, write_exe};

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
