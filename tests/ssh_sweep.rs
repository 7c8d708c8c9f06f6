//! End to end over a real OpenSSH fleet: 34 "hosts" on distinct loopback
//! addresses, each with its own remote directory, swept by the real
//! `pushscan` binary with the EmoCheck stand-in. Asserts each host's class
//! and fields, the journal, exit codes, what is left on the hosts, the
//! second-sweep hash skip, host-key rejection, and that hostile names never
//! escape the evidence directory.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::sshd::SshFleet;
use serde_json::Value;

const CHECKER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/playbooks/checkers/emocheck-sim.sh"
);

fn sha256_hex(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(std::fs::read(path).expect("read checker")))
}

struct Lab {
    fleet: SshFleet,
    root: tempfile::TempDir,
    /// host name -> (address, scenario)
    hosts: BTreeMap<String, (String, String)>,
}

impl Lab {
    fn remote_dir(&self, host: &str) -> PathBuf {
        self.root.path().join("hosts").join(host)
    }
    fn state(&self) -> PathBuf {
        self.root.path().join("state")
    }
    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }
}

/// Scenario of each host; several of the common ones, one of each rare one.
fn scenarios() -> Vec<(&'static str, &'static str)> {
    let mut v = Vec::new();
    for _ in 0..14 {
        v.push(("clean", "text"));
    }
    for _ in 0..4 {
        v.push(("clean", "json"));
    }
    for _ in 0..3 {
        v.push(("detected", "text"));
    }
    v.push(("detected", "json"));
    v.push(("detected2", "text"));
    v.push(("detected", "ja"));
    v.push(("clean", "fr"));
    v.push(("noreport", "text"));
    v.push(("hang", "text"));
    v.push(("crash", "text"));
    v.push(("huge", "text"));
    v.push(("hostile", "text"));
    v
}

fn setup() -> Lab {
    let list = scenarios();
    // Two more addresses than scenario hosts: one for an unknown host key,
    // one for a changed host key.
    let fleet = SshFleet::start(list.len() + 2);
    let root = tempfile::tempdir().expect("tempdir");
    let mut hosts = BTreeMap::new();
    let mut yaml = String::from("all:\n  vars:\n    ansible_connection: ssh\n  children:\n");
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (i, (scenario, lang)) in list.iter().enumerate() {
        let name = format!("pc{:02}-{scenario}-{lang}", i + 1);
        groups
            .entry(format!("sc_{scenario}"))
            .or_default()
            .push(format!(
                "        {name}:\n          ansible_host: {}\n          ansible_port: {}\n          scenario: {scenario}\n          lang: {lang}\n          pushscan_dir: {}\n",
                fleet.addresses[i],
                fleet.port,
                root.path().join("hosts").join(&name).display()
            ));
        hosts.insert(name, (fleet.addresses[i].clone(), scenario.to_string()));
    }
    for (g, entries) in &groups {
        yaml.push_str(&format!("    {g}:\n      hosts:\n"));
        for e in entries {
            yaml.push_str(e);
        }
    }
    // Hosts that must never be trusted: unknown key, changed key, auth
    // refused, nothing listening.
    let n = list.len();
    let extra = [
        ("unknownkey", fleet.addresses[n].clone(), fleet.port, None),
        (
            "changedkey",
            fleet.addresses[n + 1].clone(),
            fleet.port,
            None,
        ),
        (
            "badauth",
            fleet.addresses[0].clone(),
            fleet.port,
            Some("nosuchuser"),
        ),
        ("nothere", "127.0.3.250".to_string(), fleet.port, None),
    ];
    yaml.push_str("    broken:\n      hosts:\n");
    for (name, addr, port, user) in &extra {
        yaml.push_str(&format!(
            "        {name}:\n          ansible_host: {addr}\n          ansible_port: {port}\n          pushscan_dir: {}\n",
            root.path().join("hosts").join(name).display()
        ));
        if let Some(u) = user {
            yaml.push_str(&format!("          ansible_user: {u}\n"));
        }
        hosts.insert(name.to_string(), (addr.clone(), "broken".into()));
    }
    std::fs::write(root.path().join("inventory.yml"), yaml).unwrap();

    // known_hosts: everything but `unknownkey`; a wrong key for `changedkey`.
    let kh = std::fs::read_to_string(&fleet.known_hosts).unwrap();
    let unknown = format!("[{}]:{}", fleet.addresses[n], fleet.port);
    let changed = format!("[{}]:{}", fleet.addresses[n + 1], fleet.port);
    let mut out = String::new();
    for line in kh.lines() {
        if line.starts_with(&unknown) {
            continue;
        }
        if line.starts_with(&changed) {
            // A different (valid) ed25519 key: the client key's public half.
            let other = std::fs::read_to_string(fleet.client_key.with_extension("pub")).unwrap();
            let mut parts = other.split_whitespace();
            out.push_str(&format!(
                "{changed} {} {}\n",
                parts.next().unwrap(),
                parts.next().unwrap()
            ));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    std::fs::write(root.path().join("known_hosts"), out).unwrap();

    let playbook = format!(
        "name: e2e\nchecker:\n  path: {CHECKER}\n  sha256: {}\n  platform: linux\n  remote_name: emocheck-sim.sh\n\
         work_dir: \"{{{{ pushscan_dir }}}}\"\nrun_dir: \"{{{{ work_dir }}}}/reports\"\n\
         args: [\"/quiet\", \"/output\", \"{{{{ run_dir }}}}\", \"/host\", \"{{{{ inventory_hostname }}}}\", \"/scenario\", \"{{{{ scenario | default('clean') }}}}\", \"/lang\", \"{{{{ lang | default('en') }}}}\"]\n\
         timeout: 4s\nresults:\n  glob: \"*_emocheck.*\"\n  parser: emocheck\n  max_file_size: 1MiB\n",
        sha256_hex(Path::new(CHECKER))
    );
    // The JSON hosts need /json: the stand-in reads /lang json as text, so
    // give them their own argument through a host var instead.
    let playbook = playbook.replace(
        "\"/quiet\", ",
        "\"/quiet\", \"{{ json_flag | default('/quiet') }}\", ",
    );
    std::fs::write(root.path().join("playbook.yml"), playbook).unwrap();
    // json hosts: set json_flag=/json and lang=en.
    let inv = std::fs::read_to_string(root.path().join("inventory.yml")).unwrap();
    let inv = inv
        .replace(
            "          lang: json\n",
            "          lang: en\n          json_flag: /json\n",
        )
        .replace("          lang: text\n", "          lang: en\n");
    std::fs::write(root.path().join("inventory.yml"), inv).unwrap();
    Lab { fleet, root, hosts }
}

fn pushscan(lab: &Lab, extra: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pushscan"));
    cmd.arg("sweep")
        .arg("-i")
        .arg(lab.path("inventory.yml"))
        .arg("-p")
        .arg(lab.path("playbook.yml"))
        .arg("--state-dir")
        .arg(lab.state())
        .arg("--known-hosts")
        .arg(lab.path("known_hosts"))
        .arg("-k")
        .arg(&lab.fleet.client_key)
        .arg("--no-agent")
        .arg("--progress")
        .arg("lines")
        .arg("--connect-timeout")
        .arg("3s")
        .args(extra)
        .env_remove("PUSHSCAN_SSH_PASSWORD");
    cmd.output().expect("run pushscan")
}

fn report_json(lab: &Lab, run: Option<i64>) -> Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pushscan"));
    cmd.arg("report")
        .arg("--format")
        .arg("json")
        .arg("--state-dir")
        .arg(lab.state());
    if let Some(r) = run {
        cmd.arg("--run").arg(r.to_string());
    }
    let out = cmd.output().expect("report");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "report is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn by_host(report: &Value) -> BTreeMap<String, Value> {
    report["hosts"]
        .as_array()
        .expect("hosts array")
        .iter()
        .map(|h| (h["host"].as_str().unwrap().to_string(), h.clone()))
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            let ft = e.file_type().unwrap();
            out.push(p.clone());
            if ft.is_dir() {
                walk(&p, out);
            }
        }
    }
}

#[test]
fn ssh_fleet_end_to_end() {
    let lab = setup();
    let first = pushscan(&lab, &["--forks", "16"]);
    let stdout = String::from_utf8_lossy(&first.stdout).to_string();
    let stderr = String::from_utf8_lossy(&first.stderr).to_string();
    assert_eq!(
        first.status.code(),
        Some(1),
        "a fleet with detections exits 1\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );

    let report = report_json(&lab, None);
    let hosts = by_host(&report);
    assert_eq!(
        hosts.len(),
        lab.hosts.len(),
        "every targeted host is in the report"
    );

    // ---- one session per host: listing, fetch and removal ride on the run's channel ----
    // Only the hung host, whose run was killed before it could list its results, needs an
    // SFTP session to list and fetch afterwards (sshd logs "Starting session: subsystem
    // 'sftp' ..." for each at INFO).
    let sftp_sessions = lab.fleet.sshd_log().matches("subsystem 'sftp'").count();
    assert_eq!(
        sftp_sessions,
        1,
        "SFTP sessions in the first sweep (only the timed-out host should need one); sshd log:\n{}",
        lab.fleet
            .sshd_log()
            .lines()
            .filter(|l| l.contains("Starting session"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // ---- every host's class ----
    for (name, (_, scenario)) in &lab.hosts {
        let h = &hosts[name];
        let status = h["status"].as_str().unwrap();
        let expected = match (name.as_str(), scenario.as_str()) {
            ("unknownkey", _) | ("changedkey", _) => "host_key_rejected",
            ("badauth", _) => "auth_failed",
            ("nothere", _) => "unreachable",
            (_, "clean") => "not_detected",
            (_, "detected") | (_, "detected2") | (_, "hostile") | (_, "crash") => "detected",
            (_, "noreport") => "no_result",
            (_, "hang") => "timeout",
            (_, "huge") => "checker_failed",
            other => panic!("unexpected scenario {other:?}"),
        };
        assert_eq!(status, expected, "host {name}: {h}");
        assert!(
            h["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "host {name} has a reason: {h}"
        );
    }

    // ---- fields of detections ----
    let det = hosts
        .iter()
        .find(|(n, _)| n.ends_with("-detected-text"))
        .unwrap()
        .1;
    assert!(det["scan_time"].as_str().unwrap().len() == 19, "{det}");
    let rf = det["report_file"].as_str().unwrap();
    assert!(
        rf.ends_with("_emocheck.txt") && rf.starts_with(det["host"].as_str().unwrap()),
        "{rf}"
    );
    assert_eq!(det["checker_version"], "2.4.0");
    let p = &det["processes"][0];
    assert_eq!(p["name"], "wfsrvhost.exe");
    assert_eq!(p["pid"], 4312);
    assert_eq!(
        p["image_path"],
        "C:\\Users\\tanaka\\AppData\\Local\\wfsrvhost\\wfsrvhost.exe"
    );
    assert_eq!(
        p["registry_key"],
        "HKEY_CURRENT_USER\\Software\\Microsoft\\Windows\\CurrentVersion\\Run\\wfsrvhost"
    );
    let det_json = hosts
        .iter()
        .find(|(n, _)| n.ends_with("-detected-json"))
        .unwrap()
        .1;
    assert!(det_json["report_file"]
        .as_str()
        .unwrap()
        .ends_with("_emocheck.json"));
    assert_eq!(det_json["processes"][0]["pid"], 4312);
    let det2 = hosts
        .iter()
        .find(|(n, _)| n.contains("-detected2-"))
        .unwrap()
        .1;
    assert_eq!(det2["processes"].as_array().unwrap().len(), 2);
    let ja = hosts
        .iter()
        .find(|(n, _)| n.ends_with("-detected-ja"))
        .unwrap()
        .1;
    assert_eq!(ja["processes"][0]["name"], "wfsrvhost.exe");
    let crash = hosts.iter().find(|(n, _)| n.contains("-crash-")).unwrap().1;
    assert!(crash["reason"].as_str().unwrap().contains("139"), "{crash}");
    let huge = hosts.iter().find(|(n, _)| n.contains("-huge-")).unwrap().1;
    assert!(huge["reason"].as_str().unwrap().contains("cap"), "{huge}");
    let clean_json = hosts
        .iter()
        .find(|(n, _)| n.ends_with("-clean-json"))
        .unwrap()
        .1;
    assert!(clean_json["report_file"]
        .as_str()
        .unwrap()
        .ends_with(".json"));
    assert!(clean_json["scan_time"].is_string());

    // ---- hostile host: strings kept verbatim in JSON, escaped on the terminal ----
    let hostile = hosts
        .iter()
        .find(|(n, _)| n.contains("-hostile-"))
        .unwrap()
        .1;
    let pname = hostile["processes"][0]["name"].as_str().unwrap();
    assert!(
        pname.starts_with("<script>alert(1)</script>\u{1b}[31m"),
        "{pname:?}"
    );
    assert!(
        !stdout.contains('\u{1b}'),
        "no raw ESC reaches the terminal report"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "no raw ESC reaches the progress lines"
    );
    assert!(
        stdout.contains("\\x1b[31m"),
        "ESC is shown escaped:\n{stdout}"
    );

    // ---- evidence stays inside the evidence dir, names sanitized, no links ----
    let evidence = lab.state().join("evidence");
    let mut files = Vec::new();
    walk(&lab.state(), &mut files);
    for f in &files {
        let meta = std::fs::symlink_metadata(f).unwrap();
        assert!(
            !meta.file_type().is_symlink(),
            "no symlink in the state dir: {f:?}"
        );
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
            "sanitized local name: {name:?}"
        );
        if meta.is_file() && !name.starts_with("journal.sqlite") {
            assert!(f.starts_with(&evidence), "{f:?} outside evidence dir");
        }
    }
    let hostile_dir = std::fs::read_dir(
        evidence
            .join("run-1")
            .join(hostile["host"].as_str().unwrap()),
    )
    .unwrap()
    .count();
    assert!(
        hostile_dir >= 2,
        "the hostile host's regular files were kept as evidence"
    );
    assert!(
        !files.iter().any(|f| std::fs::read(f)
            .map(|b| b.starts_with(b"root:"))
            .unwrap_or(false)),
        "the /etc/passwd symlink was never followed"
    );

    // ---- the journal ----
    let db = rusqlite::Connection::open(lab.state().join("journal.sqlite")).unwrap();
    let (status, code): (String, i64) = db
        .query_row("SELECT status, exit_code FROM runs WHERE id=1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((status.as_str(), code), ("finished", 1));
    let unfinished: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM hosts WHERE run_id=1 AND (state!='done' OR class IS NULL)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(unfinished, 0, "every host ends in a class");
    // Every push and run has its intent recorded before its outcome.
    let mut stmt = db
        .prepare("SELECT host, step, phase FROM steps WHERE run_id=1 AND step IN ('push','run') ORDER BY id")
        .unwrap();
    let rows: Vec<(String, String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (host, step, phase) in &rows {
        if phase == "done"
            && !(step == "push"
                && rows
                    .iter()
                    .all(|(h, s, p)| !(h == host && s == "push" && p == "intent")))
        {
            let intent = rows
                .iter()
                .position(|(h, s, p)| h == host && s == step && p == "intent");
            let done = rows
                .iter()
                .position(|(h, s, p)| h == host && s == step && p == phase);
            assert!(
                intent.is_some() && intent < done,
                "{host} {step}: intent before outcome"
            );
        }
    }
    let pushes: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM steps WHERE run_id=1 AND step='push' AND phase='intent'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        pushes as usize,
        scenarios().len(),
        "first sweep pushes to every reachable host"
    );
    // Raw reports are stored with their SHA-256.
    let mut stmt = db
        .prepare("SELECT raw, sha256 FROM reports WHERE run_id=1")
        .unwrap();
    let reports: Vec<(Vec<u8>, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        reports.len() >= scenarios().len() - 3,
        "reports stored: {}",
        reports.len()
    );
    for (raw, sha) in &reports {
        use sha2::{Digest, Sha256};
        assert_eq!(&hex::encode(Sha256::digest(raw)), sha);
    }

    // ---- nothing but the keepers left on the hosts ----
    for (name, (_, scenario)) in &lab.hosts {
        if scenario == "broken" {
            assert!(
                !lab.remote_dir(name).exists(),
                "{name}: nothing created on a host we never reached"
            );
            continue;
        }
        let dir = lab.remote_dir(name);
        let mut top: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        top.sort();
        assert_eq!(
            top,
            vec!["emocheck-sim.sh", "reports"],
            "{name}: only the checker and the reports dir"
        );
        for e in std::fs::read_dir(dir.join("reports")).unwrap() {
            let n = e.unwrap().file_name().to_string_lossy().to_string();
            assert!(
                n.contains("_emocheck."),
                "{name}: unexpected leftover {n:?}"
            );
        }
    }
    // The hung checker's whole process tree is gone.
    let hang = lab.hosts.keys().find(|n| n.contains("-hang-")).unwrap();
    let pg = Command::new("pgrep")
        .arg("-f")
        .arg(format!("pushscan-sim-hang-{hang}"))
        .output()
        .expect("pgrep (apt-get install procps)");
    assert!(
        pg.stdout.is_empty(),
        "hung checker processes left: {}",
        String::from_utf8_lossy(&pg.stdout)
    );

    // ---- second sweep: no push where the hash matches ----
    let second = pushscan(&lab, &["--limit", "sc_clean:sc_detected"]);
    assert_eq!(
        second.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let report2 = report_json(&lab, Some(2));
    for h in report2["hosts"].as_array().unwrap() {
        assert_eq!(h["pushed"], false, "second sweep skips the push: {h}");
    }
    let intents: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM steps WHERE run_id=2 AND step='push' AND phase='intent'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(intents, 0);
    // Reports accumulate on the host (EmoCheck keeps history), and only the
    // new one is this run's.
    let clean = lab
        .hosts
        .keys()
        .find(|n| n.ends_with("-clean-text"))
        .unwrap();
    let n_reports = std::fs::read_dir(lab.remote_dir(clean).join("reports"))
        .unwrap()
        .count();
    assert!(n_reports >= 1);

    // ---- `runs` lists both ----
    let runs = Command::new(env!("CARGO_BIN_EXE_pushscan"))
        .args(["runs", "--json", "--state-dir"])
        .arg(lab.state())
        .output()
        .unwrap();
    let runs: Value = serde_json::from_slice(&runs.stdout).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 2);
}

#[test]
fn unknown_host_key_needs_explicit_acceptance_and_changed_key_always_fails() {
    let fleet = SshFleet::start(2);
    let root = tempfile::tempdir().unwrap();
    let kh = root.path().join("known_hosts");
    // Host 1 unknown; host 2 with a different key.
    let other = std::fs::read_to_string(fleet.client_key.with_extension("pub")).unwrap();
    let mut parts = other.split_whitespace();
    std::fs::write(
        &kh,
        format!(
            "[{}]:{} {} {}\n",
            fleet.addresses[1],
            fleet.port,
            parts.next().unwrap(),
            parts.next().unwrap()
        ),
    )
    .unwrap();
    let inv = format!(
        "[fleet]\nnew ansible_host={} ansible_port={port} pushscan_dir={d}/new\nchanged ansible_host={} ansible_port={port} pushscan_dir={d}/changed\n",
        fleet.addresses[0],
        fleet.addresses[1],
        port = fleet.port,
        d = root.path().display()
    );
    std::fs::write(root.path().join("hosts.ini"), inv).unwrap();
    let pb = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/playbooks/emocheck-ssh.yml"
    ))
    .unwrap()
    .replace("checkers/emocheck-sim.sh", CHECKER);
    std::fs::write(root.path().join("pb.yml"), pb).unwrap();
    let run = |accept: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_pushscan"));
        c.arg("sweep")
            .arg("-i")
            .arg(root.path().join("hosts.ini"))
            .arg("-p")
            .arg(root.path().join("pb.yml"))
            .arg("--state-dir")
            .arg(root.path().join("state"))
            .arg("--known-hosts")
            .arg(&kh)
            .arg("-k")
            .arg(&fleet.client_key)
            .args(["--no-agent", "--progress", "quiet", "--report-json"])
            .arg(root.path().join("r.json"));
        if accept {
            c.arg("--accept-new-host-keys");
        }
        let out = c.output().unwrap();
        let v: Value =
            serde_json::from_slice(&std::fs::read(root.path().join("r.json")).unwrap()).unwrap();
        (out.status.code(), by_host(&v))
    };
    let (code, hosts) = run(false);
    assert_eq!(code, Some(2), "hosts not checked: exit 2");
    assert_eq!(hosts["new"]["status"], "host_key_rejected");
    assert!(hosts["new"]["reason"]
        .as_str()
        .unwrap()
        .contains("--accept-new-host-keys"));
    assert_eq!(hosts["changed"]["status"], "host_key_rejected");
    assert!(hosts["changed"]["reason"]
        .as_str()
        .unwrap()
        .contains("CHANGED"));

    let (code, hosts) = run(true);
    assert_eq!(hosts["new"]["status"], "not_detected", "{:?}", hosts["new"]);
    assert_eq!(
        hosts["changed"]["status"], "host_key_rejected",
        "a changed key is never accepted"
    );
    assert_eq!(code, Some(2));
    let recorded = std::fs::read_to_string(&kh).unwrap();
    assert!(
        recorded.contains(&fleet.addresses[0]),
        "the new key was recorded:\n{recorded}"
    );
}

/// A sweep of `inventory` (in `root`, with the shipped SSH playbook on the stand-in) where no
/// key and no agent can log in: only a password can.
fn password_only_sweep(root: &Path, fleet: &SshFleet, inventory: &str) -> Command {
    let pb = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/playbooks/emocheck-ssh.yml"
    ))
    .unwrap()
    .replace("checkers/emocheck-sim.sh", CHECKER);
    std::fs::write(root.join("pb.yml"), pb).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_pushscan"));
    c.arg("sweep")
        .arg("-i")
        .arg(root.join(inventory))
        .arg("-p")
        .arg(root.join("pb.yml"))
        .arg("--state-dir")
        .arg(root.join("state"))
        .arg("--known-hosts")
        .arg(&fleet.known_hosts)
        .arg("-k")
        .arg(root.join("no-such-key"))
        .args(["--no-agent", "--progress", "lines", "-vv"])
        .env_remove("PUSHSCAN_SSH_PASSWORD")
        .env_remove("ANSIBLE_VAULT_PASSWORD_FILE");
    c
}

/// `secret` is in neither output of the sweep `out`, nor its journal (`root/state`), nor the
/// fleet's sshd log.
fn assert_password_never_shown(out: &Output, root: &Path, fleet: &SshFleet, secret: &str) {
    for o in [&out.stdout, &out.stderr] {
        assert!(!text(o).contains(secret), "the password is never printed");
    }
    let journal = std::fs::read(root.join("state/journal.sqlite")).unwrap();
    assert!(
        !journal
            .windows(secret.len())
            .any(|w| w == secret.as_bytes()),
        "the password is never journaled"
    );
    assert!(!fleet.sshd_log().contains(secret));
}

#[test]
fn password_from_environment_authenticates_and_never_reaches_argv_or_logs() {
    use common::sshd::FleetOptions;
    let secret = "Pw-for-pushscan-test-7731";
    let fleet = SshFleet::start_with(FleetOptions {
        password: Some(secret.to_string()),
        ..FleetOptions::hosts(1)
    });
    let root = tempfile::tempdir().unwrap();
    std::fs::write(
        root.path().join("hosts.ini"),
        format!(
            "pw ansible_host={} ansible_port={} pushscan_dir={}/pw pushscan_ssh_password_auth=true\n",
            fleet.addresses[0],
            fleet.port,
            root.path().display()
        ),
    )
    .unwrap();
    let run = |password: Option<&str>| {
        let mut c = password_only_sweep(root.path(), &fleet, "hosts.ini");
        if let Some(p) = password {
            c.env("PUSHSCAN_SSH_PASSWORD", p);
        }
        c.output().unwrap()
    };
    let bad = run(Some("wrong-password"));
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stdout).contains("auth_failed"));
    let good = run(Some(secret));
    assert_eq!(
        good.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert_password_never_shown(&good, root.path(), &fleet, secret);
}

/// `ansible-vault encrypt_string` of `secret` as `name`, with the vault password in `pw_file`.
fn vault_string(pw_file: &Path, name: &str, secret: &str) -> String {
    let pw = pw_file.display().to_string();
    let out = common::ansible::tool(
        "ansible-vault",
        &[
            "encrypt_string",
            "--vault-password-file",
            &pw,
            "--name",
            name,
            secret,
        ],
    );
    assert!(out.status.success(), "ansible-vault: {}", text(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_vaulted_inventory_password_logs_in_to_its_host_and_is_never_shown() {
    use common::sshd::FleetOptions;
    let secret = "Vaulted-pw-for-pushscan-5521";
    let fleet = SshFleet::start_with(FleetOptions {
        password: Some(secret.to_string()),
        ..FleetOptions::hosts(1)
    });
    let root = tempfile::tempdir().unwrap();
    let pw_file = root.path().join("vault-pass");
    std::fs::write(&pw_file, "the vault password\n").unwrap();
    let vaulted = vault_string(&pw_file, "ansible_password", secret);
    let mut inv = format!(
        "all:\n  hosts:\n    pw:\n      ansible_host: {}\n      ansible_port: {}\n      \
         pushscan_dir: {}/pw\n",
        fleet.addresses[0],
        fleet.port,
        root.path().display()
    );
    for line in vaulted.lines() {
        inv.push_str(&format!("      {line}\n"));
    }
    std::fs::write(root.path().join("hosts.yml"), &inv).unwrap();
    let run = |vault: bool| {
        let mut c = password_only_sweep(root.path(), &fleet, "hosts.yml");
        if vault {
            c.arg("--vault-password-file").arg(&pw_file);
        }
        c.output().unwrap()
    };
    let locked = run(false);
    assert_eq!(locked.status.code(), Some(65), "{}", text(&locked.stderr));
    assert!(
        text(&locked.stderr).contains("vault-encrypted"),
        "{}",
        text(&locked.stderr)
    );
    assert!(
        !fleet.sshd_log().contains("password for"),
        "no host was tried"
    );

    let good = run(true);
    assert_eq!(good.status.code(), Some(0), "{}", text(&good.stderr));
    assert!(fleet
        .sshd_log()
        .contains(&format!("Accepted password for {}", fleet.user)));
    assert_password_never_shown(&good, root.path(), &fleet, secret);
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
