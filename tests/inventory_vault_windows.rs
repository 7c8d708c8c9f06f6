//! A vaulted WinRM password, end to end against the Windows lab (real Samba
//! for SMB, the WinRM simulator for execution; see lab/README.md): the lab's
//! inventory gets `group_vars/windows/vault.yml`, made by the real
//! `ansible-vault encrypt` with a vault ID, holding `ansible_user` and
//! `ansible_password`; `pushscan sweep --vault-id` with no other credential
//! must log in and scan every host, and the password must appear in no
//! output, log, journal or report. Without the vault password the sweep is
//! refused before anything is touched. Needs root, Samba and ansible-core
//! (`scripts/test` installs them).

use std::net::Ipv4Addr;

use common::port_or_free;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

use pushscan_lab::fleet::{self, UpOptions};
use pushscan_lab::spec::Spec;
use serde_json::Value;

const PUSHSCAN: &str = env!("CARGO_BIN_EXE_pushscan");

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every file under `root`, read as bytes.
fn all_bytes(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    common::files_under(root)
        .into_iter()
        .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
        .collect()
}

#[test]
fn vaulted_winrm_password_sweeps_the_windows_lab() {
    for tool in ["smbd", "smbpasswd"] {
        assert!(
            fleet::sys::find_binary(tool).is_some(),
            "`{tool}` not found: install it with `apt-get update && apt-get install -y \
             --no-install-recommends samba smbclient` (scripts/test does this)"
        );
    }
    let base = Ipv4Addr::new(127, 0, 93, 1);
    let mut spec = Spec::shipped();
    spec.hosts = 4;
    spec.base_address = base;
    spec.scenarios = vec![
        serde_json::from_value(serde_json::json!({"kind": "clean", "weight": 3})).unwrap(),
        serde_json::from_value(serde_json::json!({"kind": "infected", "weight": 1})).unwrap(),
    ];
    spec.smb.port = port_or_free(base, 445, &[]);
    spec.winrm.http_port = port_or_free(base, 5985, &[spec.smb.port]);
    spec.winrm.https_port = None;
    let dir = tempfile::Builder::new()
        .prefix("pushscan-vault-test-")
        .tempdir()
        .unwrap();
    let mut opts = UpOptions::new(dir.path().join("lab"), spec);
    opts.exe = common::lab_exe(PUSHSCAN);
    let lab = fleet::up(opts).unwrap_or_else(|e| panic!("lab up failed: {e:#}"));

    // The vault, beside the lab's inventory, as an ops team keeps it.
    let inv_dir = lab.inventory.parent().unwrap().to_path_buf();
    let vault = inv_dir.join("group_vars/windows/vault.yml");
    std::fs::create_dir_all(vault.parent().unwrap()).unwrap();
    std::fs::write(
        &vault,
        format!(
            "ansible_user: '{}'\nansible_password: '{}'\n",
            lab.username, lab.password
        ),
    )
    .unwrap();
    let pw = dir.path().join("vault.pw");
    std::fs::write(&pw, "lab-vault-pass\n").unwrap();
    let id = format!("lab@{}", pw.display());
    let out = common::ansible::tool(
        "ansible-vault",
        &["encrypt", "--vault-id", &id, vault.to_str().unwrap()],
    );
    assert!(out.status.success(), "ansible-vault: {}", text(&out));
    let vault_text = std::fs::read_to_string(&vault).unwrap();
    assert!(vault_text.starts_with("$ANSIBLE_VAULT;1.2;AES256;lab"));

    let playbook = lab.playbook.to_str().unwrap().to_string();
    let inv = lab.inventory.to_str().unwrap().to_string();
    let state = dir.path().join("state");
    let run = |extra: &[&str]| {
        Command::new(PUSHSCAN)
            .args(["sweep", "-i", &inv, "-p", &playbook, "--state-dir"])
            .arg(&state)
            .args(["--progress", "lines", "-vv"])
            .args(extra)
            .env_remove("PUSHSCAN_USER")
            .env_remove("PUSHSCAN_PASSWORD")
            .env_remove("ANSIBLE_VAULT_PASSWORD_FILE")
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };

    // Without the vault password: refused before any connection, naming the file.
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(65), "{}", text(&o));
    assert!(text(&o).contains("vault.yml"), "{}", text(&o));
    assert!(!state.join("journal.sqlite").exists() || !text(&o).contains("run "));

    let o = run(&["--vault-id", &id]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let report = Command::new(PUSHSCAN)
        .args(["report", "--format", "json", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    let rep: Value = serde_json::from_slice(&report.stdout).unwrap();
    let hosts = rep["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 4, "{rep}");
    for h in hosts {
        let status = h["status"].as_str().unwrap();
        assert!(
            status == "not_detected" || status == "detected",
            "{} not scanned: {h}\n{out}",
            h["host"]
        );
    }
    assert!(hosts.iter().any(|h| h["status"] == "detected"));
    // The password is nowhere: output, logs, the journal, the state dir.
    let secret = lab.password.as_bytes();
    assert!(!out.contains(&lab.password), "the password was printed");
    assert!(!String::from_utf8_lossy(&report.stdout).contains(&lab.password));
    for (p, bytes) in all_bytes(&state) {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret),
            "{} holds the password",
            p.display()
        );
    }
}
