//! `--store DIR` / `PUSHSCAN_STORE`: the SQLite journal in another directory than the state
//! dir, which keeps the reports on disk and evidence; and a location that is neither a
//! directory nor a postgres:// URL refused as a usage error.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pushscan"));
    c.env_remove("PUSHSCAN_STORE").stdin(Stdio::null());
    c
}

fn playbook(dir: &Path) -> PathBuf {
    let checker = Path::new(ROOT).join("playbooks/checkers/emocheck-sim.sh");
    let pin = common::sha256_hex(&std::fs::read(&checker).unwrap());
    let pb = format!(
        "name: store\nchecker:\n  path: {}\n  sha256: \"{pin}\"\n  platform: linux\n  remote_name: emocheck-sim.sh\n\
         work_dir: \"{{{{ pushscan_dir }}}}\"\nrun_dir: \"{{{{ work_dir }}}}/reports\"\n\
         args: [\"/quiet\", \"/output\", \"{{{{ run_dir }}}}\", \"/host\", \"{{{{ inventory_hostname }}}}\"]\n\
         timeout: 20s\nresults:\n  glob: \"*_emocheck.*\"\n  parser: emocheck\n  max_file_size: 1MiB\n",
        checker.display()
    );
    let path = dir.join("pb.yml");
    std::fs::write(&path, pb).unwrap();
    path
}

#[test]
fn store_dir_holds_the_journal_and_the_state_dir_the_rest() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let inv = dir.join("inv.yml");
    std::fs::write(
        &inv,
        format!(
            "all:\n  hosts:\n    l1:\n      ansible_connection: local\n      pushscan_dir: {}\n",
            dir.join("hosts/l1").display()
        ),
    )
    .unwrap();
    let pb = playbook(dir);
    let (state, store) = (dir.join("state"), dir.join("journal-here"));
    let out = bin()
        .arg("sweep")
        .arg("-i")
        .arg(&inv)
        .arg("-p")
        .arg(&pb)
        .args(["--progress", "quiet", "--report-json"])
        .arg(dir.join("run.json"))
        .arg("--state-dir")
        .arg(&state)
        .arg("--store")
        .arg(&store)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", common::text(&out));
    assert!(store.join("journal.sqlite").exists());
    assert!(!state.join("journal.sqlite").exists());

    // Through the environment, as through the flag.
    let out = bin()
        .args(["runs", "--json", "--state-dir"])
        .arg(&state)
        .env("PUSHSCAN_STORE", &store)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::text(&out));
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs[0]["id"], 1, "{runs:#}");
    // Without it, the state dir has no journal.
    let out = bin()
        .args(["runs", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(74), "{}", common::text(&out));

    let out = bin()
        .args(["runs", "--store", "mysql://db/x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", common::text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("postgres://"),
        "{}",
        common::text(&out)
    );
}
