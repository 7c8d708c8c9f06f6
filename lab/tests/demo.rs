//! `pushscan-lab demo`, the README's first command, run as a newcomer runs it: the report
//! must show detections (one Japanese with CP932 paths), clean hosts, a host with no result,
//! and the unreachable, auth_failed and timeout hosts; the demo exits 0 and leaves nothing
//! running. Both ways of serving the fleet are run: the WinRM-only path (simulator in
//! process, no Samba, also as an unprivileged user) and the real SMB path (root + Samba;
//! a missing Samba fails the test with the install command). The two PCs whose WinRM is
//! closed are swept over SMB alone on the SMB path (and leave no service and no file there,
//! read from the lab's own state) and are unreachable on the WinRM-only path.
//!
//! Each test uses an address range of its own (`--base-address`, hidden) so they run in
//! parallel; the README test runs the command exactly as written (127.0.20.x). The demo runs
//! the `pushscan` binary this workspace builds for its tests (`PUSHSCAN_EXE`), so its own
//! `cargo build -p pushscan` (a different feature set) does not replace the binary other
//! tests are running.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pushscan_lab::demo::{demo_spec, DemoOptions, Transfer};
use pushscan_lab::spec::{HostPlan, ScenarioKind, WinrmAvailability};

const EXE: &str = env!("CARGO_BIN_EXE_pushscan-lab");
const README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
const SAMBA_MISSING: &str =
    "install it with `apt-get update && apt-get install -y --no-install-recommends \
    samba smbclient` (scripts/test does this)";

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The workspace's `pushscan`, built as `cargo test --workspace` builds it.
fn pushscan_exe() -> PathBuf {
    static PUSHSCAN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PUSHSCAN
        .get_or_init(|| pushscan_testkit::cargo::workspace_exe(Path::new(EXE), "pushscan"))
        .clone()
}

fn demo(args: &[&str]) -> (String, String) {
    let out = Command::new(EXE)
        .env("PUSHSCAN_EXE", pushscan_exe())
        .arg("demo")
        .args(args)
        .output()
        .expect("run pushscan-lab demo");
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "demo {args:?} failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    (stdout, stderr)
}

/// The demo fleet as the lab plans it (host names do not depend on the base address).
fn fleet(base: &str) -> Vec<HostPlan> {
    let opts = DemoOptions {
        base_address: base.parse().expect("base address"),
        ..DemoOptions::default()
    };
    demo_spec(&opts)
        .expect("demo spec")
        .plan()
        .expect("demo plan")
}

/// The hosts whose WinRM is closed (an infected and a clean PC).
fn winrm_closed(plan: &[HostPlan]) -> Vec<&HostPlan> {
    plan.iter()
        .filter(|h| h.scenario.winrm == WinrmAvailability::Closed)
        .collect()
}

/// Which path the demo says it took (its first line).
fn transfer_of(stdout: &str) -> Transfer {
    let first = stdout.lines().next().unwrap_or("");
    if first.contains("files over SMB (a real Samba smbd") {
        Transfer::Smb
    } else {
        assert!(first.contains("files over WinRM only"), "{stdout}");
        Transfer::WinrmOnly
    }
}

/// The report of the 14-host demo fleet served over `transfer`: the two PCs with WinRM
/// closed count as one detection and one clean host over SMB, as two more unreachable hosts
/// on the WinRM-only path.
fn assert_report(stdout: &str, stderr: &str, transfer: Transfer) {
    let ctx = format!("--- stdout\n{stdout}\n--- stderr\n{stderr}");
    let count = |class: &str| -> Option<usize> {
        stdout.lines().find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(class)).then(|| w.next()?.parse().ok())?
        })
    };
    let (detected, clean, unreachable) = match transfer {
        Transfer::Smb => (5, 5, 1),
        Transfer::WinrmOnly => (4, 4, 3),
    };
    for (class, n) in [
        ("detected", detected),
        ("not_detected", clean),
        ("no_result", 1),
        ("unreachable", unreachable),
        ("auth_failed", 1),
        ("timeout", 1),
    ] {
        assert_eq!(count(class), Some(n), "{class}\n{ctx}");
    }
    assert!(stdout.contains(&format!("DETECTED ({detected})")), "{ctx}");
    assert!(stdout.contains("NO RESULT FOUND (1)"), "{ctx}");
    assert!(
        stdout.contains(&format!("NOT CHECKED ({})", unreachable + 2)),
        "{ctx}"
    );
    let plan = fleet("127.0.20.1");
    let closed = winrm_closed(&plan);
    assert_eq!(closed.len(), 2, "{closed:?}");
    for h in &closed {
        // The intro names them; on the WinRM-only path the report lists them as unreachable,
        // with pushscan's reason (nothing answers on their WinRM port).
        let named = stdout
            .lines()
            .any(|l| l.starts_with("  WinRM closed on ") && l.contains(&h.name));
        assert!(named, "{} not named in the intro\n{ctx}", h.name);
        let not_checked = format!("  {}  unreachable  connect: winrm:", h.name);
        match transfer {
            Transfer::WinrmOnly => assert!(stdout.contains(&not_checked), "{}\n{ctx}", h.name),
            Transfer::Smb => {
                assert!(!stdout.contains(&not_checked), "{}\n{ctx}", h.name);
                // Its progress line carries the reason pushscan gives.
                let over_smb = stderr.lines().any(|l| {
                    l.contains(&format!("] {} ", h.name))
                        && l.contains("[commands over SMB (WinRM: ")
                });
                assert!(over_smb, "{} not swept over SMB\n{ctx}", h.name);
            }
        }
    }
    if transfer == Transfer::Smb {
        assert!(
            stdout.contains("The 2 with WinRM closed were swept over SMB alone"),
            "{ctx}"
        );
    } else {
        assert!(
            stdout.contains("The 2 with WinRM closed are unreachable on this path, as designed"),
            "{ctx}"
        );
    }
    // The Japanese host's CP932 report, decoded.
    assert!(stdout.contains("ソフト更新.exe  PID 5120"), "{ctx}");
    assert!(
        stdout.contains(r"C:\Users\鈴木\AppData\Local\ソフト\ソフト更新.exe"),
        "{ctx}"
    );
    // The crashed checker's cut report keeps its detection and says why (progress lines).
    assert!(
        stderr.contains("exit 139); invalid JSON recovered; truncated"),
        "{ctx}"
    );
    assert!(
        stdout.contains("checker still running at the timeout"),
        "{ctx}"
    );
    assert!(stdout.contains("What you just saw"), "{ctx}");
    assert!(
        stdout.contains("pushscan's exit code for this sweep is 1"),
        "{ctx}"
    );
    assert!(
        !stderr.contains("did not end as their scenario says"),
        "{ctx}"
    );
}

/// Nothing of a demo on `prefix` (e.g. "127.0.21.") still listens or sits on `lo`.
fn assert_gone(prefix: &str) {
    use pushscan_lab::fleet::sys;
    let listening: Vec<String> = sys::listening_v4()
        .iter()
        .map(|s| s.to_string())
        .filter(|s| s.starts_with(prefix))
        .collect();
    assert!(
        listening.is_empty(),
        "demo sockets still listen: {listening:?}"
    );
    let on_lo: Vec<String> = sys::lo_addresses()
        .unwrap_or_default()
        .iter()
        .map(|a| a.to_string())
        .filter(|a| a.starts_with(prefix))
        .collect();
    assert!(on_lo.is_empty(), "demo addresses left on lo: {on_lo:?}");
}

fn first_command(readme: &str) -> String {
    let quick = readme
        .split("## Quick start")
        .nth(1)
        .expect("README has a Quick start section");
    let block = quick
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("Quick start has a ```sh block");
    block.trim().to_string()
}

#[test]
fn readme_first_command_is_the_demo_and_shows_every_class() {
    let readme = std::fs::read_to_string(README).expect("README.md");
    let cmd = first_command(&readme);
    assert_eq!(
        cmd, "cargo run -p pushscan-lab -- demo",
        "README's first command"
    );
    // Exactly two set-up commands: the demo and the tests.
    let quick = readme.split("## Quick start").nth(1).unwrap();
    let quick = quick.split("\n## ").next().unwrap();
    let blocks: Vec<&str> = quick
        .split("```sh\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .map(str::trim)
        .collect();
    assert_eq!(
        blocks,
        [cmd.as_str(), "scripts/test"],
        "Quick start commands"
    );
    // What `cargo run -p pushscan-lab -- demo` runs, as written.
    let (stdout, stderr) = demo(&[]);
    assert_report(&stdout, &stderr, transfer_of(&stdout));
    assert_gone("127.0.20.");
}

#[test]
fn winrm_only_path_runs_the_simulator_in_process() {
    let (stdout, stderr) = demo(&["--no-smb", "--base-address", "127.0.21.1"]);
    assert!(
        stdout
            .lines()
            .next()
            .unwrap_or("")
            .contains("the WinRM simulator runs in this process")
            && stdout.contains("files over WinRM only (no SMB: --no-smb)"),
        "{stdout}"
    );
    assert!(stdout.contains("[files over WinRM (SMB off)]"), "{stdout}");
    assert!(
        !stderr.contains("smb connect"),
        "no host tried SMB: {stderr}"
    );
    assert_report(&stdout, &stderr, Transfer::WinrmOnly);
    assert_gone("127.0.21.");
}

#[test]
fn smb_path_uses_a_real_samba() {
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "the SMB path of the demo needs root (it adds loopback addresses and a system account)"
    );
    for tool in ["smbd", "smbpasswd"] {
        assert!(
            pushscan_lab::fleet::sys::find_binary(tool).is_some(),
            "`{tool}` not found: {SAMBA_MISSING}"
        );
    }
    // Kept, so the hosts' state can be read afterwards from the lab's own files. Samba's
    // account traverses the directory (a tempdir is 0700).
    let parent = tempfile::Builder::new()
        .prefix("pushscan-demo-test-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let dir = parent.path().join("demo");
    let dir_arg = dir.to_str().expect("utf-8 temp path");
    let (stdout, stderr) = demo(&[
        "--smb",
        "--base-address",
        "127.0.23.1",
        "--keep",
        "--dir",
        dir_arg,
    ]);
    assert!(
        stdout
            .lines()
            .next()
            .unwrap_or("")
            .contains("files over SMB (a real Samba smbd serving ADMIN$"),
        "{stdout}"
    );
    // The smb_down host falls back to WinRM-only files, and says so (progress lines).
    assert!(stderr.contains("files over WinRM (smb connect"), "{stderr}");
    assert_report(&stdout, &stderr, Transfer::Smb);
    assert_gone("127.0.23.");
    assert_nothing_left(&dir, &fleet("127.0.23.1"));
}

/// Every file under `root` whose path (below `root`) contains "pushscan", relative and with
/// `/` separators.
fn ours(root: &Path) -> Vec<String> {
    pushscan_testkit::files_under(root)
        .iter()
        .map(|p| {
            p.strip_prefix(root)
                .unwrap_or(p)
                .to_string_lossy()
                .into_owned()
        })
        .filter(|rel| rel.to_ascii_lowercase().contains("pushscan"))
        .collect()
}

/// After a kept SMB demo in `dir`, read from the lab's own state (its svcctl database, its
/// System-log events and the host trees), not from pushscan's report: the WinRM-closed
/// hosts ran pushscan's commands as services, none of which is left; no host kept a service
/// or a wrapper file (`pushscan-<id>.out` / `.rc`); the hosts whose WinRM answers got no
/// service at all.
fn assert_nothing_left(dir: &Path, plan: &[HostPlan]) {
    use pushscan_lab::svcctl;
    for h in plan {
        let closed = h.scenario.winrm == WinrmAvailability::Closed;
        let services = svcctl::services(dir, h.address).expect("the lab's service database");
        assert!(
            services.iter().all(|s| !s.name.starts_with("pushscan-")),
            "{}: services left {services:?}",
            h.name
        );
        let events = svcctl::events(dir, h.address).expect("the lab's System log");
        let installed: Vec<&str> = events
            .iter()
            .filter(|e| e.id == 7045)
            .map(|e| e.service.as_str())
            .collect();
        if closed {
            // The directory proof and the checker, at least: one service each.
            assert!(
                installed.len() >= 2 && installed.iter().all(|s| s.starts_with("pushscan-")),
                "{}: services installed {installed:?}",
                h.name
            );
        } else {
            assert!(
                installed.is_empty(),
                "{}: services installed {installed:?}",
                h.name
            );
        }
        let root = pushscan_lab::fleet::host_root(dir, h.address);
        let files = ours(&root);
        assert!(
            files
                .iter()
                .all(|f| !f.rsplit('/').next().unwrap_or(f).starts_with("pushscan-")),
            "{}: wrapper files left {files:?}",
            h.name
        );
        if closed {
            // What stays is what the lab playbook's `cleanup:` keeps on every host it checks
            // (checker and report, for evidence), and nothing else of ours.
            let report = format!("Windows/pushscan/reports/{}_", h.name);
            let kept = files.iter().all(|f| {
                f == "Windows/pushscan/emocheck.exe"
                    || (f.starts_with(&report) && f.ends_with("_emocheck.json"))
            });
            assert!(
                kept && files.len() == 2,
                "{}: files of ours {files:?}",
                h.name
            );
        }
    }
    let kinds: Vec<ScenarioKind> = winrm_closed(plan).iter().map(|h| h.scenario.kind).collect();
    assert!(
        kinds.contains(&ScenarioKind::Infected) && kinds.contains(&ScenarioKind::Clean),
        "{kinds:?}"
    );
}

#[test]
fn the_demo_runs_without_root() {
    let args = [
        "demo",
        "--base-address",
        "127.0.22.1",
        "--progress",
        "lines",
    ];
    let out = if unsafe { libc::geteuid() } == 0 {
        // As `nobody`, when it can reach the binary (a target dir under /root cannot).
        let pushscan = pushscan_exe();
        let reach = Command::new("runuser")
            .args(["-u", "nobody", "--", "test", "-x", EXE])
            .status();
        if !matches!(reach, Ok(s) if s.success()) {
            eprintln!(
                "note: `runuser -u nobody` cannot run {EXE}: the unprivileged run is not tested"
            );
            return;
        }
        Command::new("runuser")
            .args(["-u", "nobody", "--", EXE])
            .args(args)
            .env("PUSHSCAN_EXE", &pushscan)
            .current_dir("/")
            .env("TMPDIR", "/tmp")
            .output()
            .expect("runuser")
    } else {
        Command::new(EXE)
            .args(args)
            .env("PUSHSCAN_EXE", pushscan_exe())
            .output()
            .expect("run the demo")
    };
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("files over WinRM only (no SMB: not root)"),
        "{stdout}"
    );
    assert_report(&stdout, &stderr, Transfer::WinrmOnly);
    assert_gone("127.0.22.");
}
