//! The SSH transport against hosts that work against it: a real OpenSSH sshd that shows a
//! host key of another type than the one known_hosts holds for it.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::sshd::{FleetOptions, SshFleet};
use serde_json::Value;

const CHECKER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/lab/checker/emocheck-sim.sh");

/// `ssh-keygen -t <kind>` without passphrase at `path`.
fn keygen(path: &Path, kind: &str) {
    let keygen = common::sshd::client_binary("ssh-keygen");
    let out = Command::new(keygen)
        .args(["-q", "-t", kind, "-N", "", "-C", "pushscan-hostile", "-f"])
        .arg(path)
        .output()
        .expect("cannot run ssh-keygen");
    assert!(
        out.status.success(),
        "ssh-keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// Sweeps of real sshd hosts with the pushscan binary.
// ---------------------------------------------------------------------------------------------

struct Sweep {
    root: tempfile::TempDir,
}

impl Sweep {
    /// A sweep directory with the EmoCheck stand-in playbook and `inventory` (INI).
    fn new(inventory: &str) -> Sweep {
        let root = tempfile::tempdir().expect("tempdir");
        let inv = inventory.replace("@ROOT@", &root.path().display().to_string());
        std::fs::write(root.path().join("hosts.ini"), inv).expect("inventory");
        let pb = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/playbooks/emocheck-ssh.yml"
        ))
        .expect("playbook")
        .replace("../lab/checker/emocheck-sim.sh", CHECKER);
        std::fs::write(root.path().join("pb.yml"), pb).expect("write playbook");
        Sweep { root }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    fn command(&self, sub: &str) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_pushscan"));
        c.arg(sub)
            .arg("-i")
            .arg(self.path("hosts.ini"))
            .arg("-p")
            .arg(self.path("pb.yml"))
            .env_remove("PUSHSCAN_SSH_PASSWORD")
            .env_remove("SSH_AUTH_SOCK");
        c
    }

    /// Runs `pushscan sweep` with `extra` arguments; the exit code and each host's report.
    fn sweep(&self, known_hosts: &Path, extra: &[&str], password: Option<&str>) -> Swept {
        let mut c = self.command("sweep");
        c.arg("--state-dir")
            .arg(self.path("state"))
            .arg("--known-hosts")
            .arg(known_hosts)
            .args(["--no-agent", "--progress", "quiet", "--report-json"])
            .arg(self.path("r.json"))
            .args(extra);
        if let Some(p) = password {
            c.env("PUSHSCAN_SSH_PASSWORD", p);
        }
        let out = c.output().expect("run pushscan");
        let report: Value =
            serde_json::from_slice(&std::fs::read(self.path("r.json")).unwrap_or_else(|e| {
                panic!(
                    "no report ({e}); stderr:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            }))
            .expect("report JSON");
        let hosts = report["hosts"]
            .as_array()
            .expect("hosts in the report")
            .iter()
            .map(|h| {
                (
                    h["host"].as_str().unwrap_or_default().to_string(),
                    h.clone(),
                )
            })
            .collect();
        Swept {
            code: out.status.code(),
            hosts,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

struct Swept {
    code: Option<i32>,
    hosts: BTreeMap<String, Value>,
    stderr: String,
}

/// known_hosts holds the host's ed25519 key; the host (a real sshd) shows only an RSA key.
/// That is a changed key, refused even with --accept-new-host-keys, and nothing is recorded.
/// The other way round, a host that holds both types and whose RSA key is the known one is
/// asked for its RSA key and accepted.
#[test]
fn a_host_key_of_another_type_is_a_changed_key() {
    let keys = tempfile::tempdir().expect("tempdir");
    let rsa = keys.path().join("host_rsa");
    keygen(&rsa, "rsa");
    let rsa_pub = std::fs::read_to_string(rsa.with_extension("pub")).expect("rsa pub");
    let rsa_only = SshFleet::start_with(FleetOptions {
        extra_config: vec![
            format!("HostKey {}", rsa.display()),
            "HostKeyAlgorithms rsa-sha2-512,rsa-sha2-256".into(),
        ],
        ..FleetOptions::hosts(1)
    });
    let both = SshFleet::start_with(FleetOptions {
        base_address: std::net::Ipv4Addr::new(127, 0, 3, 1),
        extra_config: vec![format!("HostKey {}", rsa.display())],
        ..FleetOptions::hosts(1)
    });
    let inventory = format!(
        "[fleet]\nrsaonly ansible_host={a} ansible_port={pa} pushscan_dir=@ROOT@/a\n\
         both ansible_host={b} ansible_port={pb} pushscan_dir=@ROOT@/b\n",
        a = rsa_only.addresses[0],
        pa = rsa_only.port,
        b = both.addresses[0],
        pb = both.port
    );
    let sweep = Sweep::new(&inventory);
    // rsaonly: its ed25519 key, as the fleet wrote it; both: its RSA key only.
    let mut rsa_fields = rsa_pub.split_whitespace();
    let known = format!(
        "{}[{}]:{} {} {}\n",
        std::fs::read_to_string(&rsa_only.known_hosts).expect("known_hosts"),
        both.addresses[0],
        both.port,
        rsa_fields.next().expect("type"),
        rsa_fields.next().expect("key")
    );
    let kh = sweep.path("known_hosts");
    std::fs::write(&kh, &known).expect("write known_hosts");

    let r = sweep.sweep(
        &kh,
        &[
            "-k",
            &rsa_only.client_key.display().to_string(),
            "-k",
            &both.client_key.display().to_string(),
            "--accept-new-host-keys",
        ],
        None,
    );
    let host = &r.hosts["rsaonly"];
    assert_eq!(host["status"], "host_key_rejected", "{host}");
    let reason = host["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("CHANGED") && reason.contains("ssh-rsa"),
        "{reason}"
    );
    assert_eq!(
        std::fs::read_to_string(&kh).expect("known_hosts"),
        known,
        "nothing recorded in known_hosts"
    );
    assert_eq!(
        r.hosts["both"]["status"], "not_detected",
        "the known RSA key is asked for and accepted: {}",
        r.hosts["both"]
    );
    assert_eq!(r.code, Some(2));
}
