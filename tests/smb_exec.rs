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
    common::files_under(root)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("pushscan-"))
        })
        .collect()
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
    // The journal agrees: a host whose every command removed its own service and files has
    // them journaled done, so `cleanup` would not visit it; a host whose command timed out
    // or failed (its wrapper may write late) is left to `cleanup`, which checks.
    let dry = pushscan_on(&lab, &state, &["cleanup", "--dry-run"]);
    let dry_text = text(&dry);
    for h in lab.hosts() {
        let listed = dry_text.contains(&format!(" {}:", h.name));
        let unsure =
            h.scenario == ScenarioKind::Hang || h.svcctl == pushscan_lab::spec::SvcctlMode::Denied;
        assert_eq!(listed, unsure, "{} ({:?}):\n{dry_text}", h.name, h.scenario);
    }
    drop(lab);
}

/// Starts a sweep of `lab` into `state` and `kill -9`s it once every host's checker runs
/// (its wrapper's output file exists); asserts the crash left something of ours behind.
fn sweep_then_kill(lab: &fleet::Lab, playbook: &Path, state: &Path) {
    let mut sweep = Command::new(PUSHSCAN)
        .args(["sweep", "-i"])
        .arg(&lab.inventory)
        .arg("-p")
        .arg(playbook)
        .arg("--state-dir")
        .arg(state)
        .args(["--progress", "lines", "--forks", "3"])
        .env("PUSHSCAN_USER", &lab.username)
        .env("PUSHSCAN_PASSWORD", &lab.password)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run pushscan");
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
}

/// Runs `pushscan <args> --state-dir state` with the lab's credentials.
fn pushscan_on(lab: &fleet::Lab, state: &Path, args: &[&str]) -> Output {
    Command::new(PUSHSCAN)
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .env("PUSHSCAN_USER", &lab.username)
        .env("PUSHSCAN_PASSWORD", &lab.password)
        .env_remove("RUST_LOG")
        .output()
        .expect("run pushscan")
}

/// No service and no file of ours on any host of `lab`, by the lab's own state.
fn assert_nothing_of_ours(lab: &fleet::Lab, lab_dir: &Path, after: &str, log: &str) {
    for h in lab.hosts() {
        let services = pushscan_lab::svcctl::services(lab_dir, h.address).expect("services");
        assert!(
            services.iter().all(|s| !s.name.starts_with("pushscan-")),
            "{}: services left after {after} {services:?}\n{log}",
            h.name
        );
        let files = ours(&h.root);
        assert!(
            files.is_empty(),
            "{}: files left after {after} {files:?}\n{log}",
            h.name
        );
    }
}

/// A lab spec whose every host has WinRM closed and a checker that hangs (so a `kill -9`
/// finds it running), with a quick service start timeout.
const HANGING_WITHOUT_WINRM: &str =
    "scenarios:\n  - kind: hang\n    winrm: closed\nsvcctl:\n  start_timeout_ms: 250\n";

/// A `kill -9` of pushscan while its checkers run over SMB leaves the wrapper's files (and
/// possibly a service) on the hosts, and the checkers running; `pushscan cleanup` then ends
/// those checkers and removes every file and service, as the lab's own state shows, and a
/// second cleanup finds nothing left to do.
#[test]
fn cleanup_after_a_kill_removes_what_a_crashed_smb_sweep_left() {
    let SmbLab {
        dir,
        lab_dir,
        lab,
        playbook,
    } = smb_lab(
        HANGING_WITHOUT_WINRM,
        3,
        Ipv4Addr::new(127, 0, 65, 1),
        "10m",
    );
    let state = dir.path().join("state");
    sweep_then_kill(&lab, &playbook, &state);
    let cleanup = |what: &str| {
        let out = pushscan_on(&lab, &state, &["cleanup"]);
        assert_eq!(out.status.code(), Some(0), "{what}:\n{}", text(&out));
        text(&out)
    };
    let first = cleanup("cleanup after the kill");
    assert_nothing_of_ours(&lab, &lab_dir, "cleanup", &first);
    // The crashed checkers were ended before the removal: their wrappers wrote nothing
    // after it.
    std::thread::sleep(Duration::from_secs(2));
    assert_nothing_of_ours(&lab, &lab_dir, "cleanup and 2 s", &first);
    let second = cleanup("second cleanup");
    assert!(
        !second.contains(": cleaned"),
        "a second cleanup still found work:\n{second}"
    );
    drop(lab);
}

/// `pushscan resume` after a `kill -9` mid-run: before each interrupted host is redone, what
/// the crashed attempt left over SMB (its wrapper's files, its still running checker) is
/// taken away over the same connection; the redone hosts end in their class, nothing of
/// ours is on any host afterwards (by the lab's state) without any `cleanup`, and the journal
/// agrees: a dry-run cleanup lists no service of the crashed attempt.
#[test]
fn resume_after_a_kill_removes_what_the_crashed_attempt_left() {
    let SmbLab {
        dir,
        lab_dir,
        lab,
        playbook,
    } = smb_lab(HANGING_WITHOUT_WINRM, 2, Ipv4Addr::new(127, 0, 68, 1), "6s");
    let state = dir.path().join("state");
    sweep_then_kill(&lab, &playbook, &state);
    let crashed: Vec<PathBuf> = lab.hosts().iter().flat_map(|h| ours(&h.root)).collect();
    let resumed = pushscan_on(&lab, &state, &["resume", "--progress", "lines"]);
    let log = text(&resumed);
    assert!(resumed.status.code().is_some(), "resume died: {log}");
    assert_nothing_of_ours(&lab, &lab_dir, "resume", &log);
    for f in &crashed {
        assert!(
            !f.exists(),
            "{} of the crashed attempt is still there",
            f.display()
        );
    }
    let rep = pushscan_on(&lab, &state, &["report", "--format", "json"]);
    let report: Value = serde_json::from_slice(&rep.stdout)
        .unwrap_or_else(|e| panic!("report json: {e}\n{}\n{log}", text(&rep)));
    for h in report["hosts"].as_array().expect("hosts") {
        assert_eq!(h["status"], "timeout", "{h}\n{log}");
        let reason = h["reason"].as_str().unwrap_or("");
        assert!(!reason.contains("leftovers remain"), "{reason}");
    }
    let dry = pushscan_on(&lab, &state, &["cleanup", "--dry-run"]);
    let dry_text = text(&dry);
    for f in &crashed {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
        // `pushscan-<seed>-<n>.out`: the crashed connection's name is `pushscan-<seed>`.
        let seed = name.rsplit_once('-').map(|(s, _)| s).unwrap_or(name);
        assert!(
            !dry_text.contains(seed),
            "cleanup still lists {seed} of the crashed attempt:\n{dry_text}"
        );
    }
    drop(lab);
}

/// `pushscan plan --probe` knocks on each Windows host's WinRM and SMB ports and shows the
/// way the sweep will take: WinRM where it answers, commands over SMB (`smb-exec` on the SMB
/// port) where only SMB answers and `pushscan_exec` is `auto`, and unreachable where nothing
/// answers or where `pushscan_exec: winrm` forbids the SMB path. Without `--probe` the same
/// hosts all show WinRM. The ports are real listeners on loopback addresses of this test.
#[test]
fn plan_probe_shows_which_hosts_run_commands_over_smb() {
    use std::net::TcpListener;
    let ip = |n: u8| Ipv4Addr::new(127, 0, 69, n);
    let listen = |n: u8, port: u16| {
        TcpListener::bind((ip(n), port)).unwrap_or_else(|e| panic!("bind {}:{port}: {e}", ip(n)))
    };
    // Ports above 1024 of our own: the probe takes the ports from the inventory.
    let (winrm, smb) = (45985, 44445);
    let _open = [
        listen(1, winrm),
        listen(1, smb),
        listen(2, smb),
        listen(4, smb),
        listen(5, winrm),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let checker = dir.path().join("checker.exe");
    std::fs::write(&checker, b"MZ stand-in").expect("checker");
    let sha = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(b"MZ stand-in"))
    };
    let pb = dir.path().join("pb.yml");
    std::fs::write(
        &pb,
        format!(
            "name: probe\nchecker:\n  path: {}\n  sha256: \"{sha}\"\n  platform: windows\n\
             work_dir: 'C:\\Windows\\pushscan'\nrun_dir: 'C:\\Windows\\pushscan\\reports'\n\
             args: [\"/quiet\"]\ntimeout: 1m\nresults:\n  glob: \"*_emocheck.*\"\n  parser: emocheck\n",
            checker.display()
        ),
    )
    .expect("playbook");
    let host = |name: &str, n: u8, extra: &str| {
        format!(
            "    {name}:\n      ansible_host: {}\n      ansible_port: {winrm}\n      \
             pushscan_smb_port: {smb}\n{extra}",
            ip(n)
        )
    };
    let inv = dir.path().join("inv.yml");
    std::fs::write(
        &inv,
        format!(
            "all:\n  vars:\n    ansible_connection: winrm\n  hosts:\n{}{}{}{}{}",
            host("both", 1, ""),
            host("smb-only", 2, ""),
            host("silent", 3, ""),
            host("winrm-only-policy", 4, "      pushscan_exec: winrm\n"),
            host("no-smb", 5, ""),
        ),
    )
    .expect("inventory");
    let plan = |probe: bool| -> Value {
        let mut cmd = Command::new(PUSHSCAN);
        cmd.args(["plan", "--format", "json", "-i"])
            .arg(&inv)
            .arg("-p")
            .arg(&pb);
        if probe {
            cmd.arg("--probe");
        }
        let out = cmd.output().expect("run plan");
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
    };
    let line = |plan: &Value, name: &str| -> (String, u64, Option<String>) {
        let h = plan["waves"]
            .as_array()
            .expect("waves")
            .iter()
            .flat_map(|w| w["hosts"].as_array().cloned().unwrap_or_default())
            .find(|h| h["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in the plan: {plan}"));
        (
            h["transport"].as_str().unwrap_or("").to_string(),
            h["port"].as_u64().unwrap_or(0),
            h["probe"].as_str().map(str::to_string),
        )
    };
    let unprobed = plan(false);
    for name in ["both", "smb-only", "silent", "winrm-only-policy", "no-smb"] {
        let (t, port, note) = line(&unprobed, name);
        assert_eq!(
            (t.as_str(), port, note),
            ("winrm", winrm as u64, None),
            "{name}"
        );
    }
    let probed = plan(true);
    let expect = [
        ("both", "winrm", winrm, "WinRM answers"),
        (
            "smb-only",
            "smb-exec",
            smb,
            "WinRM does not answer, SMB does: commands over SMB",
        ),
        ("silent", "winrm", winrm, "neither WinRM nor SMB answers: unreachable"),
        (
            "winrm-only-policy",
            "winrm",
            winrm,
            "WinRM does not answer: unreachable (pushscan_exec: winrm; auto would run commands over SMB)",
        ),
        ("no-smb", "winrm", winrm, "WinRM answers, SMB does not: files over WinRM"),
    ];
    for (name, t, port, note) in expect {
        assert_eq!(
            line(&probed, name),
            (t.to_string(), port as u64, Some(note.to_string())),
            "{name}"
        );
    }
}
