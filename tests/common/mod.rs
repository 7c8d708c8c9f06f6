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

/// Puts an executable at `dest` with `mode` without this process ever holding it open for
/// writing: `install` (a child) writes it. Tests run side by side in one process; a file this
/// process wrote could still be open in a child another test is forking at that moment, and
/// executing it then fails with "Text file busy". A copy made by a child that has exited
/// cannot be.
pub fn install_exe(src: &std::path::Path, dest: &std::path::Path, mode: u32) {
    let out = std::process::Command::new("install")
        .arg("-m")
        .arg(format!("{mode:o}"))
        .arg(src)
        .arg(dest)
        .output()
        .expect("cannot run install (coreutils)");
    assert!(
        out.status.success(),
        "install {} -> {}: {}",
        src.display(),
        dest.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes an executable script at `dest` (see [`install_exe`] for why a child writes it);
/// the text goes first to `dest` + ".src", which is never executed.
pub fn write_exe(dest: &std::path::Path, text: &str, mode: u32) {
    let mut src = dest.as_os_str().to_owned();
    src.push(".src");
    let src = std::path::PathBuf::from(src);
    std::fs::write(&src, text).expect("write the script's text");
    install_exe(&src, dest, mode);
}
