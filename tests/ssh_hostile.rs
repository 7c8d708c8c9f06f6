//! The SSH transport against hosts that work against it: a hostile SFTP server that never
//! ends a directory listing (started here on loopback, russh's server side), a real OpenSSH
//! sshd that accepts only passwords, and a real sshd that shows a host key of another type
//! than the one known_hosts holds for it.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::sshd::{FleetOptions, SshFleet};
use serde_json::Value;

use pushscan::transport::ssh::{SshConnector, SshTarget};
use pushscan::transport::{Connection as _, Credentials};

const CHECKER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/playbooks/checkers/emocheck-sim.sh"
);

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

/// Peak resident memory of this process so far (`VmHWM`), in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// A hostile SFTP server: accepts any key, then serves a directory that never ends.
// ---------------------------------------------------------------------------------------------

/// Names the hostile server puts in each SFTP reply.
const PER_REPLY: u64 = 500;
/// Entries the hostile directory holds before it says "end" (the review's 3,000,000).
const HOSTILE_ENTRIES: u64 = 3_000_000;

#[derive(Clone)]
struct HostileSsh {
    served: Arc<AtomicU64>,
    channels: Arc<std::sync::Mutex<HashMap<russh::ChannelId, russh::Channel<russh::server::Msg>>>>,
}

impl russh::server::Handler for HostileSsh {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        _user: &str,
        _key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<russh::server::Auth, Self::Error> {
        Ok(russh::server::Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: russh::Channel<russh::server::Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut russh::server::Session,
    ) -> Result<(), Self::Error> {
        if let Ok(mut c) = self.channels.lock() {
            c.insert(channel.id(), channel);
        }
        reply.accept().await;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        id: russh::ChannelId,
        name: &str,
        session: &mut russh::server::Session,
    ) -> Result<(), Self::Error> {
        let channel = self.channels.lock().ok().and_then(|mut c| c.remove(&id));
        match channel {
            Some(ch) if name == "sftp" => {
                session.channel_success(id)?;
                let sftp = EndlessDir {
                    served: self.served.clone(),
                };
                tokio::spawn(russh_sftp::server::run(ch.into_stream(), sftp));
            }
            _ => session.channel_failure(id)?,
        }
        Ok(())
    }
}

struct EndlessDir {
    served: Arc<AtomicU64>,
}

impl russh_sftp::server::Handler for EndlessDir {
    type Error = russh_sftp::protocol::StatusCode;

    fn unimplemented(&self) -> Self::Error {
        russh_sftp::protocol::StatusCode::OpUnsupported
    }

    async fn init(
        &mut self,
        _version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<russh_sftp::protocol::Version, Self::Error> {
        Ok(russh_sftp::protocol::Version::new())
    }

    async fn opendir(
        &mut self,
        id: u32,
        path: String,
    ) -> Result<russh_sftp::protocol::Handle, Self::Error> {
        Ok(russh_sftp::protocol::Handle { id, handle: path })
    }

    async fn readdir(
        &mut self,
        id: u32,
        _handle: String,
    ) -> Result<russh_sftp::protocol::Name, Self::Error> {
        let start = self.served.fetch_add(PER_REPLY, Ordering::SeqCst);
        if start >= HOSTILE_ENTRIES {
            return Err(russh_sftp::protocol::StatusCode::Eof);
        }
        let files = (start..start + PER_REPLY)
            .map(|i| russh_sftp::protocol::File {
                filename: format!("r{i:08}_emocheck.txt"),
                longname: String::new(),
                attrs: russh_sftp::protocol::FileAttributes {
                    size: Some(100),
                    permissions: Some(0o100600),
                    mtime: Some(1_700_000_000),
                    ..Default::default()
                },
            })
            .collect();
        Ok(russh_sftp::protocol::Name { id, files })
    }

    async fn close(
        &mut self,
        id: u32,
        _handle: String,
    ) -> Result<russh_sftp::protocol::Status, Self::Error> {
        Ok(russh_sftp::protocol::Status {
            id,
            status_code: russh_sftp::protocol::StatusCode::Ok,
            error_message: "Ok".into(),
            language_tag: "en-US".into(),
        })
    }
}

/// The SFTP fallback's listing stops at the entry cap against a host whose directory
/// never ends: it asks for no more than one reply past the cap, and its time and memory do
/// not grow with what the host offers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_listing_stops_at_the_cap_against_a_hostile_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host_key = dir.path().join("host_ed25519");
    let client_key = dir.path().join("client_ed25519");
    keygen(&host_key, "ed25519");
    keygen(&client_key, "ed25519");
    let host_private = russh::keys::load_secret_key(&host_key, None).expect("host key");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let port = listener.local_addr().expect("local addr").port();
    let host_pub = std::fs::read_to_string(host_key.with_extension("pub")).expect("host pub");
    let mut parts = host_pub.split_whitespace();
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(
        &known_hosts,
        format!(
            "[127.0.0.1]:{port} {} {}\n",
            parts.next().expect("key type"),
            parts.next().expect("key")
        ),
    )
    .expect("write known_hosts");

    let served = Arc::new(AtomicU64::new(0));
    let handler = HostileSsh {
        served: served.clone(),
        channels: Arc::default(),
    };
    let config = Arc::new(russh::server::Config {
        keys: vec![host_private],
        auth_rejection_time: Duration::from_millis(10),
        ..Default::default()
    });
    tokio::spawn(async move {
        if let Ok((stream, _)) = listener.accept().await {
            if let Ok(session) = russh::server::run_stream(config, stream, handler).await {
                let _ = session.await;
            }
        }
    });

    let connector = SshConnector::new(Credentials {
        known_hosts: Some(known_hosts),
        default_key_files: vec![client_key],
        connect_timeout: Duration::from_secs(10),
        ..Default::default()
    });
    let target = SshTarget {
        password: None,
        address: "127.0.0.1".into(),
        port,
        user: "pushscan".into(),
        key_file: None,
        password_auth: false,
    };
    let mut conn = connector
        .connect(&target)
        .await
        .expect("connect to the hostile server");

    let rss_before = peak_rss_kib();
    let start = Instant::now();
    let listed = tokio::time::timeout(Duration::from_secs(60), conn.list_dir("/tmp/reports")).await;
    let elapsed = start.elapsed();
    let rss_after = peak_rss_kib();
    let served = served.load(Ordering::SeqCst);
    eprintln!(
        "hostile SFTP listing: {:.2}s, {served} entries served, peak RSS {rss_before} -> {rss_after} KiB",
        elapsed.as_secs_f64()
    );
    let listed = listed.unwrap_or_else(|_| {
        panic!(
            "the listing did not stop within 60 s ({served} of {HOSTILE_ENTRIES} entries \
             served): it is reading past the cap"
        )
    });
    let err = match listed {
        Ok(v) => panic!(
            "a directory of {HOSTILE_ENTRIES} entries was listed ({} entries kept)",
            v.len()
        ),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("more than 10000 entries"),
        "refused at the cap: {err}"
    );
    assert!(
        served <= 10_000 + 2 * PER_REPLY,
        "no request past the cap: {served} entries served"
    );
    assert!(
        elapsed < Duration::from_secs(15),
        "bounded time: {elapsed:?}"
    );
    assert!(
        rss_after.saturating_sub(rss_before) < 64 * 1024,
        "bounded memory: peak RSS grew {rss_before} -> {rss_after} KiB"
    );
    conn.close().await;
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
        .replace("checkers/emocheck-sim.sh", CHECKER);
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

/// sshd's record of password attempts: it logs every one, right or wrong, at its default
/// level ("Accepted password for ..." / "Failed password for ...").
fn password_requests(fleet: &SshFleet) -> usize {
    fleet
        .sshd_log()
        .lines()
        .filter(|l| l.contains("password for"))
        .count()
}

/// A host that refuses public keys is not sent the password unless the inventory opts it in
/// (`pushscan_ssh_password_auth: true`), as the real sshd's log proves; `pushscan plan` says
/// which hosts get it.
#[test]
fn password_goes_only_to_hosts_the_inventory_opts_in() {
    let secret = "Pw-hostile-test-5521";
    let fleet = SshFleet::start_with(FleetOptions {
        password: Some(secret.to_string()),
        extra_config: vec!["PubkeyAuthentication no".into()],
        ..FleetOptions::hosts(2)
    });
    let inventory = format!(
        "[fleet]\nkeysonly ansible_host={a} ansible_port={port} pushscan_dir=@ROOT@/k\n\
         optedin ansible_host={b} ansible_port={port} pushscan_dir=@ROOT@/o pushscan_ssh_password_auth=true\n",
        a = fleet.addresses[0],
        b = fleet.addresses[1],
        port = fleet.port
    );
    let sweep = Sweep::new(&inventory);

    let plan = sweep.command("plan").output().expect("run pushscan plan");
    let plan_text = String::from_utf8_lossy(&plan.stdout);
    assert!(plan.status.success(), "plan: {plan_text}");
    let line = |host: &str| {
        plan_text
            .lines()
            .find(|l| l.trim_start().starts_with(host))
            .unwrap_or_else(|| panic!("{host} in the plan:\n{plan_text}"))
            .to_string()
    };
    assert!(line("optedin").contains("password offered"), "{plan_text}");
    assert!(!line("keysonly").contains("password"), "{plan_text}");

    // Only the host not opted in: its key is known, it refuses our key, the password is set.
    let before = password_requests(&fleet);
    let r = sweep.sweep(
        &fleet.known_hosts,
        &[
            "-k",
            &fleet.client_key.display().to_string(),
            "--limit",
            "keysonly",
        ],
        Some(secret),
    );
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    let host = &r.hosts["keysonly"];
    assert_eq!(host["status"], "auth_failed", "{host}");
    assert!(
        host["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("pushscan_ssh_password_auth"),
        "the reason names the opt-in: {host}"
    );
    let log = fleet.sshd_log();
    assert!(
        log.contains(&format!("on {} port {}", fleet.addresses[0], fleet.port)),
        "the sweep reached the host's sshd:\n{log}"
    );
    assert_eq!(
        password_requests(&fleet),
        before,
        "the password never reached the host that was not opted in:\n{log}"
    );

    // The opted-in host gets it (and only through the one attempt).
    let r = sweep.sweep(
        &fleet.known_hosts,
        &[
            "-k",
            &fleet.client_key.display().to_string(),
            "--limit",
            "optedin",
        ],
        Some(secret),
    );
    assert_eq!(r.hosts["optedin"]["status"], "not_detected", "{}", r.stderr);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(password_requests(&fleet), before + 1);
    assert!(!fleet.sshd_log().contains(secret));
}

/// A bad value for the opt-in is refused when the inventory is read, before any connection.
#[test]
fn password_auth_opt_in_must_be_a_boolean() {
    let sweep = Sweep::new(
        "h ansible_host=127.0.0.1 ansible_port=1 pushscan_ssh_password_auth=sometimes\n",
    );
    let out = sweep.command("plan").output().expect("run pushscan plan");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("pushscan_ssh_password_auth") && err.contains("true or false"),
        "{err}"
    );
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
