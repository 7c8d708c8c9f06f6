//! Windows hosts without WinRM, swept over SMB alone against the lab's service control
//! manager (`\PIPE\svcctl` behind the real smbd): each host in its class, and afterwards no
//! service and no file of ours on any host, read from the lab's own state.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::port_or_free;

use pushscan_lab::fleet::{self, UpOptions};
use pushscan_lab::spec::{ScenarioKind, Spec};
use serde_json::Value;

const PUSHSCAN: &str = env!("CARGO_BIN_EXE_pushscan");

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every file under `root` whose name starts with `pushscan-` (our services' files).
fn ours(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if e.file_name().to_string_lossy().starts_with("pushscan-") {
                out.push(p);
            }
        }
    }
    out
}

/// A lab of `hosts` Windows hosts from `spec_yaml` (addresses from `base`), and its playbook
/// with the checker's timeout set to `timeout`.
struct SmbLab {
    dir: tempfile::TempDir,
    lab_dir: PathBuf,
    lab: fleet::Lab,
    playbook: PathBuf,
}

fn smb_lab(spec_yaml: &str, hosts: usize, base: Ipv4Addr, timeout: &str) -> SmbLab {
    for tool in ["smbd", "smbpasswd"] {
        assert!(
            pushscan_lab::fleet::sys::find_binary(tool).is_some(),
            "`{tool}` not found: apt-get install -y samba"
        );
    }
    let mut spec = Spec::parse(spec_yaml, Path::new("smb-exec.yml")).expect("spec");
    spec.hosts = hosts;
    spec.base_address = base;
    spec.smb.port = port_or_free(base, 445, &[]);
    spec.winrm.http_port = port_or_free(base, 5985, &[spec.smb.port]);
    spec.winrm.https_port = None;
    let dir = tempfile::Builder::new()
        .prefix("pushscan-smbexec-test-")
        .tempdir()
        .expect("tempdir");
    let lab_dir = dir.path().join("lab");
    let mut opts = UpOptions::new(lab_dir.clone(), spec);
    opts.exe = common::lab_exe(PUSHSCAN);
    let lab = fleet::up(opts).unwrap_or_else(|e| panic!("lab up failed: {e:#}"));

    let pb_text = std::fs::read_to_string(&lab.playbook).expect("playbook");
    let pb_text: String = pb_text
        .lines()
        .map(|l| {
            if l.starts_with("timeout:") {
                format!("timeout: {timeout}")
            } else if l.starts_with("  path:") {
                format!("  path: {}", lab.checker.display())
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let playbook = dir.path().join("pb.yml");
    std::fs::write(&playbook, pb_text).expect("write playbook");
    SmbLab {
        dir,
        lab_dir,
        lab,
        playbook,
    }
}

#[test]
fn hosts_without_winrm_are_swept_over_smb_and_nothing_of_ours_stays() {
    let SmbLab {
        dir,
        lab_dir,
        lab,
        playbook: pb,
    } = smb_lab(
        "scenarios:\n  - kind: infected\n    winrm: closed\n  - kind: clean\n    winrm: closed\n  \
         - kind: noreport\n    winrm: closed\n  - kind: hang\n    winrm: closed\n  \
         - kind: clean\n    winrm: closed\n    svcctl: denied\nsvcctl:\n  start_timeout_ms: 250\n",
        5,
        Ipv4Addr::new(127, 0, 64, 1),
        "8s",
    );
    let state = dir.path().join("state");
    let out = Command::new(PUSHSCAN)
        .args(["sweep", "-i"])
        .arg(&lab.inventory)
        .arg("-p")
        .arg(&pb)
        .arg("--state-dir")
        .arg(&state)
        .args(["--progress", "lines", "--forks", "5"])
        .env("PUSHSCAN_USER", &lab.username)
        .env("PUSHSCAN_PASSWORD", &lab.password)
        .env_remove("RUST_LOG")
        .output()
        .expect("run pushscan");
    let sweep_out = text(&out);
    let rep = Command::new(PUSHSCAN)
        .args(["report", "--format", "json", "--state-dir"])
        .arg(&state)
        .output()
        .expect("report");
    let report: Value = serde_json::from_slice(&rep.stdout)
        .unwrap_or_else(|e| panic!("report json: {e}\n{}\n{sweep_out}", text(&rep)));
    let hosts = report["hosts"].as_array().expect("hosts");
    for h in lab.hosts() {
        let r = hosts
            .iter()
            .find(|x| x["host"] == h.name.as_str())
            .unwrap_or_else(|| panic!("{} not in the report\n{sweep_out}", h.name));
        let want = match (h.scenario, h.svcctl) {
            (_, pushscan_lab::spec::SvcctlMode::Denied) => "auth_failed",
            (ScenarioKind::Infected, _) => "detected",
            (ScenarioKind::Clean, _) => "not_detected",
            (ScenarioKind::Noreport, _) => "no_result",
            (ScenarioKind::Hang, _) => "timeout",
            (k, _) => panic!("no expectation for {k:?}"),
        };
        assert_eq!(r["status"], want, "{}: {r}\n{sweep_out}", h.name);
        if want != "auth_failed" {
            let reason = r["reason"].as_str().unwrap_or("");
            assert!(reason.contains("commands over SMB"), "{}: {reason}", h.name);
        }
        let left = pushscan_lab::svcctl::services(&lab_dir, h.address).expect("services");
        assert!(
            left.iter().all(|s| !s.name.starts_with("pushscan-")),
            "{}: services left {left:?}",
            h.name
        );
        let files = ours(&h.root);
        assert!(files.is_empty(), "{}: files left {files:?}", h.name);
    }
    drop(lab);
}

/// A `kill -9` of pushscan while its checkers run over SMB leaves the wrapper's files (and
/// possibly a service) on the hosts; `pushscan cleanup` then removes every one of them, as the
/// lab's own state shows, and a second cleanup finds nothing left to do.
#[test]
fn cleanup_after_a_kill_removes_what_a_crashed_smb_sweep_left() {
    let SmbLab {
        dir,
        lab_dir,
        lab,
        playbook,
    } = smb_lab(
        "scenarios:\n  - kind: hang\n    winrm: closed\nsvcctl:\n  start_timeout_ms: 250\n",
        3,
        Ipv4Addr::new(127, 0, 65, 1),
        "10m",
    );
    let state = dir.path().join("state");
    let mut sweep = Command::new(PUSHSCAN)
        .args(["sweep", "-i"])
        .arg(&lab.inventory)
        .arg("-p")
        .arg(&playbook)
        .arg("--state-dir")
        .arg(&state)
        .args(["--progress", "lines", "--forks", "3"])
        .env("PUSHSCAN_USER", &lab.username)
        .env("PUSHSCAN_PASSWORD", &lab.password)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run pushscan");

    // Every host's checker runs (its wrapper's output file exists): the sweep is mid-run.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !lab.hosts().iter().all(|h| !ours(&h.root).is_empty()) {
        assert!(
            sweep.try_wait().expect("wait").is_none(),
            "the sweep ended before every checker ran"
        );
        assert!(
            Instant::now() < deadline,
            "the checkers did not all start within 120 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    sweep.kill().expect("kill -9");
    sweep.wait().expect("reap");
    let left_before: usize = lab.hosts().iter().map(|h| ours(&h.root).len()).sum();
    assert!(left_before > 0, "the crash left nothing to clean up");

    let cleanup = |what: &str| {
        let out = Command::new(PUSHSCAN)
            .arg("cleanup")
            .arg("--state-dir")
            .arg(&state)
            .env("PUSHSCAN_USER", &lab.username)
            .env("PUSHSCAN_PASSWORD", &lab.password)
            .env_remove("RUST_LOG")
            .output()
            .expect("run cleanup");
        assert_eq!(out.status.code(), Some(0), "{what}:\n{}", text(&out));
        text(&out)
    };
    let first = cleanup("cleanup after the kill");
    for h in lab.hosts() {
        let services = pushscan_lab::svcctl::services(&lab_dir, h.address).expect("services");
        assert!(
            services.iter().all(|s| !s.name.starts_with("pushscan-")),
            "{}: services left after cleanup {services:?}\n{first}",
            h.name
        );
        let files = ours(&h.root);
        assert!(
            files.is_empty(),
            "{}: files left after cleanup {files:?}\n{first}",
            h.name
        );
    }
    let second = cleanup("second cleanup");
    assert!(
        !second.contains(": cleaned"),
        "a second cleanup still found work:\n{second}"
    );
    drop(lab);
}
