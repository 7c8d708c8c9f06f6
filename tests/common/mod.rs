//! Shared helpers for the integration tests: each test file that needs them says `mod common;`.
//! Everything here starts real services on loopback (never mocks); see `sshd` for the OpenSSH
//! fleet.
#![allow(dead_code)]

pub mod sshd;

/// The lab's own executable (`pushscan-lab`, its `serve` process), built by cargo if needed,
/// next to `pushscan_exe` (`env!("CARGO_BIN_EXE_pushscan")`).
///
/// Built as `cargo test --workspace` builds (both packages' binaries and tests: the same
/// feature unification) and without the variables cargo sets for a test
/// ([`pushscan_lab::cargo_command`]): with either difference each build undid the other's,
/// ~50-80 s of rebuild per test file. Under `scripts/test` this is a no-op.
pub fn lab_exe(pushscan_exe: &str) -> std::path::PathBuf {
    let mut build = pushscan_lab::cargo_command();
    let out = build
        .args([
            "build",
            "-q",
            "-p",
            "pushscan",
            "-p",
            "pushscan-lab",
            "--bins",
            "--tests",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cannot run cargo to build pushscan-lab");
    assert!(
        out.status.success(),
        "building pushscan-lab failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exe = std::path::Path::new(pushscan_exe).with_file_name("pushscan-lab");
    assert!(exe.is_file(), "{} missing after the build", exe.display());
    exe
}
