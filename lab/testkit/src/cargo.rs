//! Building another binary of the workspace from a test or from the lab (`pushscan-lab demo`
//! runs the real `pushscan` binary).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (the directory of the top-level Cargo.toml).
pub const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// `cargo` (`$CARGO` when cargo runs us) without the variables cargo sets for a test or a
/// build script (`CARGO_PKG_*`, `CARGO_BIN_*`, `CARGO_MANIFEST_DIR`, ...), for a test that
/// builds another binary of the workspace. A dependency's build script watches some of those
/// variables, so a build with them differs from one without, and each would rebuild what the
/// other built (measured: ~50-80 s each time).
pub fn cargo_command() -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
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

/// The workspace's executable `name` (`pushscan`, `pushscan-lab`), built by cargo if needed,
/// in the directory of `sibling` (a binary of the same build, e.g.
/// `env!("CARGO_BIN_EXE_pushscan")`).
///
/// Built as `cargo test --workspace` builds (every package's binaries and tests: the same
/// feature unification) and without the variables cargo sets for a test
/// ([`cargo_command`]): with either difference each build undid the other's, ~50-80 s of
/// rebuild per test file. Under `scripts/test` this is a no-op.
pub fn workspace_exe(sibling: &Path, name: &str) -> PathBuf {
    let out = cargo_command()
        .args(["build", "-q", "--workspace", "--bins", "--tests"])
        .current_dir(WORKSPACE)
        .output()
        .expect("cannot run cargo to build the workspace's binaries");
    assert!(
        out.status.success(),
        "building the workspace's binaries failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exe = sibling.with_file_name(name);
    assert!(exe.is_file(), "{} missing after the build", exe.display());
    exe
}
