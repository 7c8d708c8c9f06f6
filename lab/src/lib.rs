//! pushscan-lab: a fleet of simulated Windows hosts on loopback addresses.
//!
//! Real parts: Samba `smbd` serves each host's `ADMIN$` and `C$` shares.
//! Simulated parts: the WinRM endpoint (WS-Management / Windows Remote
//! Shell over HTTP(S), NTLM with sealing) and command execution (a stand-in
//! checker and a small `cmd /c` subset run on this machine against each
//! host's directory tree). Wine-backed hosts ([`wine`]) run every command
//! through Wine's real `cmd.exe` in a WINEPREFIX of their own, with a few
//! stub programs emulated (`docs/lab-wine.md`). See `lab/README.md`.

pub mod demo;
pub mod fleet;
pub mod samba;
pub mod spec;
pub mod wine;
pub mod winrm;

/// `cargo` (`$CARGO` when cargo runs us) without the variables cargo sets for a test or a
/// build script (`CARGO_PKG_*`, `CARGO_BIN_*`, `CARGO_MANIFEST_DIR`, ...), for a test that
/// builds another binary of the workspace. A dependency's build script watches some of those
/// variables, so a build with them differs from one without, and each would rebuild what the
/// other built (measured: ~50-80 s each time).
pub fn cargo_command() -> std::process::Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_BIN_")
            || matches!(
                k.as_ref(),
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_PRIMARY_PACKAGE"
            )
        {
            cmd.env_remove(&key);
        }
    }
    cmd
}
