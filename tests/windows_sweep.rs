//! End to end against the Windows lab: a 44-host fleet (real Samba for SMB, the WinRM
//! simulator for execution; see lab/README.md) mixing every scenario, swept twice by the real
//! `pushscan` binary. Checks every host's class and fields, that pushed binaries carry the
//! pinned hash, that the second sweep pushes nothing, that nothing but the kept checker and
//! reports remains in the host trees, that the password appears in no process's argv, no log,
//! the journal or any report, and that CredSSP and Basic over HTTP are refused before any
//! connection. Needs root and Samba (`scripts/test` installs it).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use common::port_or_free;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod common;

use pushscan_lab::fleet::{self, Lab, LabHost, UpOptions};
use pushscan_lab::spec::{ScenarioKind, Spec};
use serde_json::Value;
use sha2::{Digest, Sha256};

const PUSHSCAN: &str = env!("CARGO_BIN_EXE_pushscan");
const SAMBA_MISSING: &str =
    "install it with `apt-get update && apt-get install -y --no-install-recommends \
    samba smbclient` (scripts/test does this)";

/// The lab's own executable (its `serve` process), built by cargo if needed: it belongs
/// to another package, so cargo does not hand us its path.
fn lab_exe() -> PathBuf {
    common::lab_exe(PUSHSCAN)
}

struct TestLab {
    lab: Lab,
    dir: tempfile::TempDir,
}

fn start_lab(base: Ipv4Addr, hosts: usize) -> TestLab {
    start_lab_with(base, hosts, |_| {})
}

fn start_lab_with(base: Ipv4Addr, hosts: usize, tweak: impl FnOnce(&mut Spec)) -> TestLab {
    for tool in ["smbd", "smbpasswd"] {
        assert!(
            pushscan_lab::fleet::sys::find_binary(tool).is_some(),
            "`{tool}` not found: {SAMBA_MISSING}"
        );
    }
    // The shipped spec: every scenario kind, en/ja/fr reports, CP932 paths.
    let mut spec = Spec::shipped();
    spec.hosts = hosts;
    spec.base_address = base;
    spec.smb.port = port_or_free(base, 445, &[]);
    spec.winrm.http_port = port_or_free(base, 5985, &[spec.smb.port]);
    spec.winrm.https_port = None;
    tweak(&mut spec);
    let dir = tempfile::Builder::new()
        .prefix("pushscan-win-test-")
        .tempdir()
        .unwrap();
    let mut opts = UpOptions::new(dir.path().join("lab"), spec);
    opts.exe = lab_exe();
    let lab = fleet::up(opts).unwrap_or_else(|e| panic!("lab up failed: {e:#}"));
    TestLab { lab, dir }
}

/// The lab's playbook with a short timeout (so the hanging host costs seconds) and a
/// second, "x86" build of the checker (the stand-in plus a comment line: another hash).
/// Returns the playbook and the x86 build's pin.
fn playbook(t: &TestLab) -> (PathBuf, String) {
    let mut x86 = std::fs::read(&t.lab.checker).unwrap();
    x86.extend_from_slice(b"\n# the x86 build\n");
    let x86_path = t.dir.path().join("emocheck-x86.exe");
    std::fs::write(&x86_path, &x86).unwrap();
    let x86_pin = hex::encode(Sha256::digest(&x86));
    let text = std::fs::read_to_string(&t.lab.playbook).unwrap();
    let text = text
        .lines()
        .map(|l| {
            if l.starts_with("timeout:") {
                "timeout: 8s".to_string()
            } else if l.starts_with("  path:") {
                format!("  path: {}", t.lab.checker.display())
            } else if l.starts_with("  remote_name:") {
                format!(
                    "{l}\n  x86:\n    path: {}\n    sha256: \"{x86_pin}\"",
                    x86_path.display()
                )
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let p = t.dir.path().join("emocheck-test.yml");
    std::fs::write(&p, text).unwrap();
    (p, x86_pin)
}

fn pushscan(t: &TestLab, args: &[&str]) -> Output {
    Command::new(PUSHSCAN)
        .args(args)
        .env("PUSHSCAN_USER", &t.lab.username)
        .env("PUSHSCAN_PASSWORD", &t.lab.password)
        .env_remove("RUST_LOG")
        .output()
        .expect("run pushscan")
}

/// `pushscan sweep` of the lab's inventory with `playbook`, its journal in `state`, files
/// over `smb` (`--smb auto|off`); a lab sweep ends with a detection or an unchecked host
/// (exit 1 or 2), anything else fails the test.
fn sweep_lab(t: &TestLab, playbook: &Path, state: &Path, smb: &str) {
    let o = pushscan(
        t,
        &[
            "sweep",
            "-i",
            t.lab.inventory.to_str().unwrap(),
            "-p",
            playbook.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--smb",
            smb,
            "--progress",
            "quiet",
        ],
    );
    assert!(matches!(o.status.code(), Some(1) | Some(2)), "{}", text(&o));
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn report_json(state: &Path) -> Value {
    let o = Command::new(PUSHSCAN)
        .args(["report", "--format", "json", "--state-dir"])
        .arg(state)
        .output()
        .unwrap();
    // `report` exits as the run did: 1 with detections, 2 with unchecked hosts.
    assert!(matches!(o.status.code(), Some(0..=2)), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn by_host(report: &Value) -> BTreeMap<String, Value> {
    report["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["host"].as_str().unwrap().to_string(), h.clone()))
        .collect()
}

/// The lab's hosts whose scenario is Clean (at least one, or the test fails).
fn clean_hosts(t: &TestLab) -> Vec<&LabHost> {
    let clean: Vec<&LabHost> = t
        .lab
        .state
        .hosts
        .iter()
        .filter(|h| h.scenario == ScenarioKind::Clean)
        .collect();
    assert!(!clean.is_empty(), "the lab has no Clean host");
    clean
}

/// Every file (relative path) under a host's tree.
fn files(root: &Path) -> BTreeSet<String> {
    common::files_under(root)
        .iter()
        .map(|p| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
        .collect()
}

/// The value following `switch` in a host's stand-in checker arguments.
fn arg<'a>(h: &'a LabHost, switch: &str) -> Option<&'a str> {
    h.checker_args
        .iter()
        .position(|a| a == switch)
        .and_then(|i| h.checker_args.get(i + 1))
        .map(String::as_str)
}

/// Watches every process's argv while a sweep runs; returns the ones holding `secret`.
fn watch_argv(secret: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut scans = 0u64;
        while !stop.load(Ordering::Relaxed) {
            if let Ok(rd) = std::fs::read_dir("/proc") {
                for e in rd.flatten() {
                    if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
                        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                        if cmd.contains(&secret) {
                            seen.push(cmd);
                        }
                    }
                }
            }
            scans += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(scans > 5, "the argv watcher barely ran ({scans} scans)");
        seen
    })
}

#[test]
fn windows_fleet_sweep_end_to_end() {
    let t = start_lab(Ipv4Addr::new(127, 0, 60, 1), 44);
    let hosts = t.lab.state.hosts.clone();
    let kinds: std::collections::HashSet<ScenarioKind> = hosts.iter().map(|h| h.scenario).collect();
    for k in [
        ScenarioKind::Clean,
        ScenarioKind::Infected,
        ScenarioKind::Hang,
        ScenarioKind::Crash,
        ScenarioKind::Noreport,
        ScenarioKind::WrongPassword,
        ScenarioKind::PortClosed,
        ScenarioKind::SmbDown,
        ScenarioKind::Slow,
    ] {
        assert!(kinds.contains(&k), "the fleet has no {k:?} host");
    }
    let before: BTreeMap<String, BTreeSet<String>> = hosts
        .iter()
        .map(|h| (h.name.clone(), files(&h.root)))
        .collect();
    let (pb, x86_pin) = playbook(&t);
    let state = t.dir.path().join("state");
    let inv = t.lab.inventory.to_str().unwrap().to_string();
    let pb_s = pb.to_str().unwrap().to_string();
    let state_s = state.to_str().unwrap().to_string();
    let sweep_args = [
        "sweep",
        "-i",
        &inv,
        "-p",
        &pb_s,
        "--state-dir",
        &state_s,
        "--progress",
        "lines",
        "-vv",
        "--forks",
        "16",
    ];

    // ---- first sweep, argv watched ----
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_argv(t.lab.password.clone(), stop.clone());
    let first = pushscan(&t, &sweep_args);
    stop.store(true, Ordering::Relaxed);
    let leaked_argv = watcher.join().unwrap();
    assert!(
        leaked_argv.is_empty(),
        "password on a command line: {leaked_argv:?}"
    );
    let first_out = text(&first);
    assert_eq!(
        first.status.code(),
        Some(1),
        "detections exit 1:\n{first_out}"
    );

    let rep = by_host(&report_json(&state));
    assert_eq!(rep.len(), hosts.len());
    let pin = t.lab.checker_sha256.clone();
    let checker_rel = "Windows/pushscan/emocheck.exe";
    let mut x86_hosts = 0;
    for h in &hosts {
        let r = &rep[&h.name];
        let status = r["status"].as_str().unwrap();
        let reason = r["reason"].as_str().unwrap();
        let ctx = format!("{} ({:?}): {r}", h.name, h.scenario);
        let reached = !matches!(
            h.scenario,
            ScenarioKind::WrongPassword | ScenarioKind::PortClosed
        );
        // 32-bit Windows (no SysWOW64) gets the x86 build.
        let x86 = !h.root.join("Windows/SysWOW64").exists();
        let want = if x86 { &x86_pin } else { &pin };
        x86_hosts += usize::from(x86);
        if reached {
            assert_eq!(r["pushed"], Value::Bool(true), "{ctx}");
            let bytes = std::fs::read(h.root.join(checker_rel)).unwrap();
            assert_eq!(&hex::encode(Sha256::digest(&bytes)), want, "{ctx}");
        } else {
            assert!(!h.root.join(checker_rel).exists(), "{ctx}");
        }
        match h.scenario {
            ScenarioKind::Clean | ScenarioKind::Slow | ScenarioKind::SmbDown => {
                assert_eq!(status, "not_detected", "{ctx}");
                assert!(
                    r["report_file"]
                        .as_str()
                        .unwrap()
                        .ends_with("_emocheck.json"),
                    "{ctx}"
                );
                assert!(r["scan_time"].is_string(), "{ctx}");
                let evidence = r["evidence_path"].as_str().unwrap();
                assert!(Path::new(evidence).starts_with(&state), "{ctx}");
                assert!(Path::new(evidence).is_file(), "{ctx}");
                if h.scenario == ScenarioKind::SmbDown {
                    assert!(reason.contains("files over WinRM"), "{ctx}");
                } else {
                    assert!(!reason.contains("files over WinRM"), "{ctx}");
                }
            }
            ScenarioKind::Infected => {
                assert_eq!(status, "detected", "{ctx}");
                let p = &r["processes"][0];
                let user = arg(h, "/user").unwrap_or("tanaka");
                let name = arg(h, "/process").unwrap_or("wfsrvhost.exe");
                let pid: u64 = arg(h, "/pid").map(|p| p.parse().unwrap()).unwrap_or(4312);
                assert_eq!(p["name"], name, "{ctx}");
                assert_eq!(p["pid"], pid, "{ctx}");
                let image = arg(h, "/image").map(str::to_string).unwrap_or_else(|| {
                    format!("C:\\Users\\{user}\\AppData\\Local\\wfsrvhost\\wfsrvhost.exe")
                });
                assert_eq!(p["image_path"], image.as_str(), "{ctx}");
                if let Some(k) = arg(h, "/runkey") {
                    assert_eq!(p["registry_key"], k, "{ctx}");
                }
                assert!(r["scan_time"].is_string(), "{ctx}");
            }
            ScenarioKind::Hang => {
                assert_eq!(status, "timeout", "{ctx}");
            }
            ScenarioKind::Crash => {
                // Half a report that names a process: kept as a detection, with the crash.
                assert_eq!(status, "detected", "{ctx}");
                assert!(reason.contains("exit 139"), "{ctx}");
            }
            ScenarioKind::Noreport => {
                assert_eq!(status, "no_result", "{ctx}");
                assert!(reason.contains("No EmoCheck result found"), "{ctx}");
            }
            ScenarioKind::WrongPassword => {
                assert_eq!(status, "auth_failed", "{ctx}");
            }
            ScenarioKind::PortClosed => {
                assert_eq!(status, "unreachable", "{ctx}");
                assert!(reason.contains("Connection refused"), "{ctx}");
            }
        }
    }

    assert!(x86_hosts >= 1, "the fleet has no 32-bit host");

    // ---- nothing of ours left but the kept checker and reports ----
    for h in &hosts {
        let now = files(&h.root);
        let new: Vec<&String> = now.difference(&before[&h.name]).collect();
        for f in &new {
            let kept = f.as_str() == checker_rel
                || (f.starts_with("Windows/pushscan/reports/") && f.ends_with("_emocheck.json"));
            assert!(kept, "{}: left behind: {f} (all new: {new:?})", h.name);
        }
    }

    // ---- second sweep: nothing pushed; a tampered copy is replaced ----
    let tampered = hosts
        .iter()
        .find(|h| h.scenario == ScenarioKind::Clean && h.root.join("Windows/SysWOW64").exists())
        .unwrap();
    std::fs::write(tampered.root.join(checker_rel), b"not the pinned checker").unwrap();
    let second = pushscan(&t, &sweep_args);
    let second_out = text(&second);
    assert_eq!(second.status.code(), Some(1), "{second_out}");
    let rep2 = by_host(&report_json(&state));
    for h in &hosts {
        let r = &rep2[&h.name];
        let ctx = format!("{} ({:?}) second sweep: {r}", h.name, h.scenario);
        match h.scenario {
            ScenarioKind::WrongPassword | ScenarioKind::PortClosed => {
                assert!(r["pushed"].is_null(), "{ctx}")
            }
            _ if h.name == tampered.name => {
                assert_eq!(r["pushed"], Value::Bool(true), "{ctx}");
                let bytes = std::fs::read(h.root.join(checker_rel)).unwrap();
                assert_eq!(hex::encode(Sha256::digest(&bytes)), pin, "{ctx}");
            }
            _ => assert_eq!(r["pushed"], Value::Bool(false), "{ctx}"),
        }
    }

    // ---- the password appears nowhere ----
    let secret = t.lab.password.as_bytes();
    let contains = |hay: &[u8]| hay.windows(secret.len()).any(|w| w == secret);
    for (what, out) in [("first sweep", &first), ("second sweep", &second)] {
        assert!(
            !contains(&out.stdout) && !contains(&out.stderr),
            "password in the {what}'s output"
        );
    }
    assert!(
        first_out.contains("DEBUG") || first_out.contains("debug"),
        "-vv produced no debug log to check"
    );
    let mut checked = 0;
    let mut stack = vec![state.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                assert!(!contains(&bytes), "password in {}", p.display());
                checked += 1;
            }
        }
    }
    assert!(checked > hosts.len(), "only {checked} state files checked");
    for fmt in ["json", "csv", "table"] {
        let o = Command::new(PUSHSCAN)
            .args(["report", "--format", fmt, "--state-dir", &state_s])
            .output()
            .unwrap();
        assert!(!contains(&o.stdout), "password in the {fmt} report");
    }
}

/// A Windows playbook whose checker is a one-byte stub: for tests that end before any push.
fn stub_playbook(dir: &Path) -> PathBuf {
    let checker = dir.join("c.exe");
    std::fs::write(&checker, b"x").unwrap();
    let pin = hex::encode(Sha256::digest(b"x"));
    let pb = dir.join("pb.yml");
    std::fs::write(
        &pb,
        format!(
            "name: t\nchecker:\n  path: {}\n  sha256: \"{pin}\"\n  platform: windows\n\
             work_dir: 'C:\\Windows\\pushscan'\nargs: [\"/quiet\"]\ntimeout: 5s\n\
             results:\n  parser: emocheck\n",
            checker.display()
        ),
    )
    .unwrap();
    pb
}

/// CredSSP and Basic over HTTP are refused for what they are, before any host is touched.
#[test]
fn credssp_and_basic_over_http_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pb = stub_playbook(dir.path());
    // Nothing listens on this address: a refusal must come before any connection.
    for (vars, expect) in [
        ("ansible_winrm_transport: credssp", "credssp is refused"),
        (
            "ansible_winrm_transport: basic\n      ansible_winrm_scheme: http",
            "Basic authentication over HTTP is refused",
        ),
    ] {
        let inv = dir.path().join("inv.yml");
        std::fs::write(
            &inv,
            format!(
                "all:\n  hosts:\n    w1:\n      ansible_host: 127.0.61.1\n      \
                 ansible_connection: winrm\n      {vars}\n"
            ),
        )
        .unwrap();
        let o = Command::new(PUSHSCAN)
            .args(["sweep", "-i"])
            .arg(&inv)
            .arg("-p")
            .arg(&pb)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .env("PUSHSCAN_USER", "u")
            .env("PUSHSCAN_PASSWORD", "p")
            .output()
            .unwrap();
        let out = text(&o);
        assert_eq!(o.status.code(), Some(65), "{out}");
        assert!(out.contains(expect), "{expect:?} not in:\n{out}");
        assert!(
            !dir.path().join("state").join("journal.sqlite").exists() || !out.contains("run "),
            "a run was started:\n{out}"
        );
    }
}

/// Basic towards a listener whose certificate is not verified (`--insecure-skip-tls-verify`, or
/// `ansible_winrm_server_cert_validation: ignore`) is refused before anything is sent: a real
/// TLS listener on loopback, with a self-signed certificate pushscan has no reason to trust and
/// a 401 asking for Basic, never sees a connection, let alone an `Authorization` header.
#[test]
fn basic_without_a_verified_certificate_never_reaches_the_listener() {
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let ip = Ipv4Addr::new(127, 0, 61, 7);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tls = pushscan_lab::winrm::self_signed(&dir.path().join("tls"), &[ip]).unwrap();
    let acceptor = pushscan_lab::winrm::http::tls_acceptor(&tls).unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind((ip, 0))).unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let authorization = Arc::new(AtomicBool::new(false));
    {
        let (connections, authorization) = (connections.clone(), authorization.clone());
        rt.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                connections.fetch_add(1, Ordering::SeqCst);
                let (acceptor, authorization) = (acceptor.clone(), authorization.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while head.len() < 65_536 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    if String::from_utf8_lossy(&head)
                        .to_ascii_lowercase()
                        .contains("\nauthorization:")
                    {
                        authorization.store(true, Ordering::SeqCst);
                    }
                    let _ = tls
                        .write_all(
                            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"w\"\r\n\
                              Content-Length: 0\r\nConnection: close\r\n\r\n",
                        )
                        .await;
                    let _ = tls.shutdown().await;
                });
            }
        });
    }
    let pb = stub_playbook(dir.path());
    let basic = "ansible_winrm_transport: basic\n      ansible_winrm_scheme: https";
    for (vars, flag) in [
        (
            format!("{basic}\n      ansible_winrm_server_cert_validation: ignore"),
            None,
        ),
        (basic.to_string(), Some("--insecure-skip-tls-verify")),
    ] {
        let inv = dir.path().join("inv.yml");
        std::fs::write(
            &inv,
            format!(
                "all:\n  hosts:\n    w1:\n      ansible_host: {ip}\n      ansible_port: {port}\n      \
                 ansible_connection: winrm\n      {vars}\n"
            ),
        )
        .unwrap();
        let mut cmd = Command::new(PUSHSCAN);
        cmd.args(["sweep", "-i"])
            .arg(&inv)
            .arg("-p")
            .arg(&pb)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(["--smb", "off"])
            .env("PUSHSCAN_USER", "u")
            .env("PUSHSCAN_PASSWORD", "basic-secret-pw");
        if let Some(f) = flag {
            cmd.arg(f);
        }
        let o = cmd.output().unwrap();
        let out = text(&o);
        assert!(
            !authorization.load(Ordering::SeqCst),
            "{vars} {flag:?}: an Authorization header reached the unverified listener:\n{out}"
        );
        assert_eq!(
            connections.load(Ordering::SeqCst),
            0,
            "{vars} {flag:?}: pushscan connected to the unverified listener:\n{out}"
        );
        assert_ne!(o.status.code(), Some(0), "{out}");
        assert!(
            out.contains("without certificate validation is refused"),
            "{vars} {flag:?}: no refusal in:\n{out}"
        );
    }
}

/// Files over WinRM only (`--smb off`): the same verdicts through the shell path, with a
/// pushed, verified checker and nothing left but the kept files.
#[test]
fn winrm_only_transfers() {
    let t = start_lab(Ipv4Addr::new(127, 0, 62, 1), 12);
    let hosts = t.lab.state.hosts.clone();
    let before: BTreeMap<String, BTreeSet<String>> = hosts
        .iter()
        .map(|h| (h.name.clone(), files(&h.root)))
        .collect();
    let (pb, x86_pin) = playbook(&t);
    let state = t.dir.path().join("state");
    let inv = t.lab.inventory.to_str().unwrap().to_string();
    let args = [
        "sweep",
        "-i",
        &inv,
        "-p",
        pb.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--smb",
        "off",
        "--progress",
        "quiet",
    ];
    let o = pushscan(&t, &args);
    assert!(matches!(o.status.code(), Some(1) | Some(2)), "{}", text(&o));
    let rep = by_host(&report_json(&state));
    let checker_rel = "Windows/pushscan/emocheck.exe";
    let mut through_shell = 0;
    for h in &hosts {
        let r = &rep[&h.name];
        let ctx = format!("{} ({:?}): {r}", h.name, h.scenario);
        let status = r["status"].as_str().unwrap();
        match h.scenario {
            ScenarioKind::Clean | ScenarioKind::Slow | ScenarioKind::SmbDown => {
                assert_eq!(status, "not_detected", "{ctx}");
                assert!(
                    r["reason"].as_str().unwrap().contains("files over WinRM"),
                    "{ctx}"
                );
                let bytes = std::fs::read(h.root.join(checker_rel)).unwrap();
                let want = if h.root.join("Windows/SysWOW64").exists() {
                    &t.lab.checker_sha256
                } else {
                    &x86_pin
                };
                assert_eq!(&hex::encode(Sha256::digest(&bytes)), want, "{ctx}");
                through_shell += 1;
            }
            ScenarioKind::Infected | ScenarioKind::Crash => assert_eq!(status, "detected", "{ctx}"),
            ScenarioKind::Noreport => assert_eq!(status, "no_result", "{ctx}"),
            _ => {}
        }
        let now = files(&h.root);
        for f in now.difference(&before[&h.name]) {
            assert!(
                f == checker_rel
                    || (f.starts_with("Windows/pushscan/reports/")
                        && f.ends_with("_emocheck.json")),
                "{}: left behind: {f}",
                h.name
            );
        }
    }
    assert!(through_shell >= 3, "only {through_shell} clean hosts");
    // Second sweep over the shell path, the account from a credentials file (0600, no
    // environment): the hash check finds the copy, no push.
    let creds = t.dir.path().join("creds.yml");
    std::fs::write(
        &creds,
        format!(
            "default: lab\ncredentials:\n  lab:\n    user: '{}'\n    password: '{}'\n",
            t.lab.username, t.lab.password
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644)).unwrap();
    let with_file = |args: &[&str]| {
        Command::new(PUSHSCAN)
            .args(args)
            .arg("--credentials")
            .arg(&creds)
            .env_remove("PUSHSCAN_USER")
            .env_remove("PUSHSCAN_PASSWORD")
            .output()
            .unwrap()
    };
    let o = with_file(&args);
    assert_eq!(
        o.status.code(),
        Some(65),
        "a 0644 credentials file: {}",
        text(&o)
    );
    assert!(text(&o).contains("chmod 600"), "{}", text(&o));
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = with_file(&args);
    assert!(matches!(o.status.code(), Some(1) | Some(2)), "{}", text(&o));
    let rep = by_host(&report_json(&state));
    for h in hosts.iter().filter(|h| h.scenario == ScenarioKind::Clean) {
        assert_eq!(rep[&h.name]["pushed"], Value::Bool(false), "{}", h.name);
    }
}

/// SMB3 encryption end to end: against a server that requires it the sweep's files go over
/// (encrypted) SMB; with `--smb-encryption required` against a server that cannot encrypt,
/// that host's files go through WinRM instead, and its reason says why.
#[test]
fn smb_encryption_required_and_refused() {
    use pushscan_lab::spec::{Scenario, SmbEncryption};
    for (enc, fallback) in [(SmbEncryption::Required, false), (SmbEncryption::Off, true)] {
        let base = if fallback {
            Ipv4Addr::new(127, 0, 63, 1)
        } else {
            Ipv4Addr::new(127, 0, 64, 1)
        };
        let t = start_lab_with(base, 2, |s| {
            s.scenarios = vec![Scenario::new(ScenarioKind::Clean)];
            s.smb.encryption = enc;
        });
        let (pb, _) = playbook(&t);
        let state = t.dir.path().join("state");
        let o = pushscan(
            &t,
            &[
                "sweep",
                "-i",
                t.lab.inventory.to_str().unwrap(),
                "-p",
                pb.to_str().unwrap(),
                "--state-dir",
                state.to_str().unwrap(),
                "--smb-encryption",
                "required",
                "--progress",
                "quiet",
            ],
        );
        assert_eq!(o.status.code(), Some(0), "{enc:?}: {}", text(&o));
        for (name, r) in by_host(&report_json(&state)) {
            let reason = r["reason"].as_str().unwrap();
            assert_eq!(r["status"], "not_detected", "{name} {enc:?}: {r}");
            if fallback {
                assert!(
                    reason.contains("files over WinRM") && reason.contains("encrypt"),
                    "{name} {enc:?}: {reason}"
                );
            } else {
                assert!(
                    !reason.contains("files over WinRM"),
                    "{name} {enc:?}: {reason}"
                );
            }
        }
    }
}

/// Staged by OU on the Windows lab: `plan` (no connection) names each host's WinRM port, SMB
/// share and remote checker path, and the waves per OU with a canary each; the sweep then runs
/// exactly those waves, one after the other.
#[test]
fn staged_by_ou_on_the_windows_lab_runs_the_planned_waves() {
    // Without the scenarios that cost seconds per wave (a hanging checker, SMB fallback).
    let t = start_lab_with(Ipv4Addr::new(127, 0, 66, 1), 16, |spec| {
        spec.scenarios.retain(|s| {
            !matches!(
                s.kind,
                ScenarioKind::Hang | ScenarioKind::SmbDown | ScenarioKind::Slow
            )
        })
    });
    let (pb, _) = playbook(&t);
    let state = t.dir.path().join("state");
    let inv = t.lab.inventory.to_str().unwrap().to_string();
    let pb_s = pb.to_str().unwrap().to_string();
    let rollout = [
        "--by",
        "ou",
        "--waves",
        "1,50%",
        "--max-fail-percentage",
        "100",
    ];
    let mut plan_args = vec!["plan", "-i", &inv, "-p", &pb_s, "--format", "json"];
    plan_args.extend(rollout);
    let plan = pushscan(&t, &plan_args);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
    assert!(!state.exists(), "plan touched the state dir");
    let plan: Value = serde_json::from_slice(&plan.stdout).expect("plan JSON");

    // Waves per OU, in the order of each OU's first host, a canary first.
    let mut ous: Vec<String> = Vec::new();
    for h in t.lab.hosts() {
        if !ous.contains(&h.ou) {
            ous.push(h.ou.clone());
        }
    }
    let waves = plan["waves"].as_array().unwrap();
    let mut planned: BTreeMap<String, i64> = BTreeMap::new();
    let mut seen_ous: Vec<String> = Vec::new();
    for w in waves {
        let ou = w["partition"].as_str().unwrap().to_string();
        let hosts = w["hosts"].as_array().unwrap();
        if !seen_ous.contains(&ou) {
            seen_ous.push(ou.clone());
            assert_eq!(w["canary"], true, "first wave of {ou} is its canary");
            assert_eq!(hosts.len(), 1);
        }
        for h in hosts {
            let name = h["name"].as_str().unwrap();
            let lab_host = t.lab.hosts().iter().find(|x| x.name == name).unwrap();
            assert_eq!(lab_host.ou, ou, "{name} planned in another OU");
            assert_eq!(h["transport"], "winrm");
            assert_eq!(h["port"].as_u64(), Some(u64::from(t.lab.winrm_port())));
            assert_eq!(
                h["files"].as_str().unwrap(),
                format!(
                    "smb {}:{} ADMIN$ (winrm if closed)",
                    lab_host.address,
                    t.lab.smb_port()
                )
            );
            assert!(h["checker_path"]
                .as_str()
                .unwrap()
                .starts_with(r"C:\Windows\pushscan\"));
            assert_eq!(h["build"], "x64/x86 by architecture");
            planned.insert(name.to_string(), w["number"].as_i64().unwrap());
        }
    }
    assert_eq!(seen_ous, ous);
    assert_eq!(planned.len(), 16);

    let state_s = state.to_str().unwrap().to_string();
    let mut sweep_args = vec![
        "sweep",
        "-i",
        &inv,
        "-p",
        &pb_s,
        "--state-dir",
        &state_s,
        "--progress",
        "lines",
        "--forks",
        "16",
    ];
    sweep_args.extend(rollout);
    let out = pushscan(&t, &sweep_args);
    let all = text(&out);
    assert!(matches!(out.status.code(), Some(1) | Some(2)), "{all}");
    assert!(all.contains("[canary]: 1 host(s)"), "{all}");
    let rep = by_host(&report_json(&state));
    for (name, wave) in &planned {
        assert_eq!(rep[name]["wave"].as_i64(), Some(*wave), "{name}\n{all}");
        assert_ne!(rep[name]["status"], "not_started", "{name}\n{all}");
    }
}

/// A work directory someone else made first is never used: on one host it is owned by
/// another account, on one its ACL lets Users write, on one it is a link to a directory of
/// the attacker's choosing. Each such host ends in `error` with a reason naming the owner,
/// the ACL entry or the link found, and nothing is written in (or through) the directory.
/// On a fourth host the directory is private but a link to another file waits at the temp
/// copy's old fixed name: the push neither follows nor touches it. The proof is the same
/// whichever way files go, so the sweep runs once over SMB and once over WinRM only.
#[test]
fn work_dir_someone_else_made_is_refused_and_untouched() {
    use pushscan_lab::winrm::acl;
    let t = start_lab(Ipv4Addr::new(127, 0, 87, 1), 16);
    let clean: Vec<&LabHost> = t
        .lab
        .state
        .hosts
        .iter()
        .filter(|h| h.scenario == ScenarioKind::Clean && h.smb && h.winrm)
        .collect();
    assert!(clean.len() >= 5, "only {} clean hosts", clean.len());
    let (owned, open, linked, planted) = (clean[0], clean[1], clean[2], clean[3]);
    let work = |h: &LabHost| h.root.join("Windows/pushscan");
    // Owned by an unprivileged account (it created the folder before the sweep).
    std::fs::create_dir_all(work(owned)).unwrap();
    std::fs::write(work(owned).join("notes.txt"), b"eve's").unwrap();
    acl::set(
        &work(owned),
        Some(r"WS01\eve"),
        Some(&[r"WS01\eve:(OI)(CI)(F)".to_string()]),
    )
    .unwrap();
    // Owned by Administrators, but Users may write in it.
    std::fs::create_dir_all(work(open)).unwrap();
    acl::set(
        &work(open),
        None,
        Some(&[
            r"NT AUTHORITY\SYSTEM:(OI)(CI)(F)".to_string(),
            r"BUILTIN\Administrators:(OI)(CI)(F)".to_string(),
            r"BUILTIN\Users:(OI)(CI)(F)".to_string(),
        ]),
    )
    .unwrap();
    // A link (a junction on Windows) to a directory the attacker chose.
    let bait = linked.root.join("Users/Public/bait");
    std::fs::create_dir_all(&bait).unwrap();
    std::fs::create_dir_all(linked.root.join("Windows")).unwrap();
    std::os::unix::fs::symlink("../Users/Public/bait", work(linked)).unwrap();
    // Private (the defaults of a folder under C:\Windows), with a link at the temp copy's
    // old fixed name pointing at another file.
    std::fs::create_dir_all(work(planted)).unwrap();
    let victim = planted.root.join("Windows/victim.txt");
    std::fs::write(&victim, b"victim").unwrap();
    std::os::unix::fs::symlink(
        "../victim.txt",
        work(planted).join(".emocheck.exe.pushscan-tmp"),
    )
    .unwrap();
    let before_owned = files(&work(owned));
    let before_open = files(&work(open));

    let (pb, _) = playbook(&t);
    for smb in ["auto", "off"] {
        let state = t.dir.path().join(format!("state-{smb}"));
        sweep_lab(&t, &pb, &state, smb);
        let rep = by_host(&report_json(&state));
        let reason = |h: &LabHost| rep[&h.name]["reason"].as_str().unwrap().to_string();
        for (h, want) in [
            (owned, r"owned by WS01\eve"),
            (open, r"BUILTIN\Users:(OI)(CI)(F)"),
            (linked, "SYMLINKD"),
        ] {
            let r = &rep[&h.name];
            assert_eq!(r["status"], "error", "--smb {smb}, {}: {r}", h.name);
            assert!(
                reason(h).contains("work directory not private") && reason(h).contains(want),
                "--smb {smb}, {}: {r}",
                h.name
            );
            assert_ne!(
                r["pushed"],
                Value::Bool(true),
                "--smb {smb}, {}: {r}",
                h.name
            );
        }
        assert_eq!(files(&work(owned)), before_owned, "--smb {smb}");
        assert_eq!(files(&work(open)), before_open, "--smb {smb}");
        assert!(files(&bait).is_empty(), "--smb {smb}: {:?}", files(&bait));
        // The planted link is neither followed nor replaced; the host is swept.
        let r = &rep[&planted.name];
        assert_eq!(r["status"], "not_detected", "--smb {smb}: {r}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"victim", "--smb {smb}");
        assert!(
            std::fs::symlink_metadata(work(planted).join(".emocheck.exe.pushscan-tmp"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        // A host without anything planted is swept as before, in a directory pushscan
        // made with a protected DACL.
        let h = clean[4];
        assert_eq!(rep[&h.name]["status"], "not_detected", "{}", rep[&h.name]);
        let dacl = acl::aces(&work(h), &["Windows".into(), "pushscan".into()]);
        assert_eq!(
            dacl,
            [
                r"NT AUTHORITY\SYSTEM:(OI)(CI)(F)",
                r"BUILTIN\Administrators:(OI)(CI)(F)"
            ],
            "{}",
            h.name
        );
    }
}

/// A playbook input on the Windows lab, over SMB and over WinRM only: pushed beside the
/// checker and verified, skipped when current (the journal's push step says so and the file
/// is not rewritten), pushed again when changed on the host, removed by a cleaning playbook.
#[test]
fn inputs_are_pushed_skipped_repushed_and_cleaned_over_smb_and_winrm_only() {
    let t = start_lab(Ipv4Addr::new(127, 0, 67, 1), 4);
    let (pb, _) = playbook(&t);
    let input = t.dir.path().join("lab-input.cfg");
    std::fs::write(&input, "rules = incident\n").unwrap();
    let pin = hex::encode(Sha256::digest(std::fs::read(&input).unwrap()));
    let with_inputs = |cleanup: bool| {
        let text = std::fs::read_to_string(&pb).unwrap();
        let mut text = text.replacen(
            "work_dir:",
            &format!(
                "inputs:\n  - name: cfg\n    path: {}\n    sha256: \"{pin}\"\nwork_dir:",
                input.display()
            ),
            1,
        );
        if cleanup {
            let at = text
                .find("cleanup:")
                .expect("the lab playbook has a cleanup block");
            text.truncate(at);
            text.push_str("cleanup:\n  inputs: true\n");
        }
        let p = t
            .dir
            .path()
            .join(if cleanup { "clean.yml" } else { "inputs.yml" });
        std::fs::write(&p, text).unwrap();
        p
    };
    let (keep, clean) = (with_inputs(false), with_inputs(true));
    let state = t.dir.path().join("state");
    let sweep = |pb: &Path, smb: &str| {
        sweep_lab(&t, pb, &state, smb);
    };
    let clean_hosts = clean_hosts(&t);
    let details = |run: i64| -> BTreeMap<String, String> {
        let db = rusqlite::Connection::open(state.join("journal.sqlite")).unwrap();
        let mut st = db
            .prepare("SELECT host, detail FROM steps WHERE run_id = ?1 AND step = 'push' AND phase = 'done'")
            .unwrap();
        let rows = st
            .query_map([run], |r| {
                Ok((
                    r.get(0)?,
                    r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                ))
            })
            .unwrap();
        rows.map(Result::unwrap).collect()
    };
    let rel = "Windows/pushscan/lab-input.cfg";
    let mut run = 0;
    for smb in ["auto", "off"] {
        run += 1;
        sweep(&keep, smb);
        for h in &clean_hosts {
            let bytes = std::fs::read(h.root.join(rel)).unwrap();
            assert_eq!(
                hex::encode(Sha256::digest(&bytes)),
                pin,
                "{} ({smb})",
                h.name
            );
            let d = &details(run)[&h.name];
            if run == 1 {
                assert!(d.contains("verified and renamed: checker"), "{d}");
                assert!(d.contains(&format!("input cfg {pin}")), "{d}");
            } else {
                assert!(d.starts_with("skipped: hash matches pin"), "{smb}: {d}");
            }
            // Changed on the host: the next sweep puts the pinned bytes back.
            std::fs::write(h.root.join(rel), "rules = none\n").unwrap();
        }
        run += 1;
        sweep(&keep, smb);
        for h in &clean_hosts {
            let d = &details(run)[&h.name];
            assert!(
                d.starts_with(&format!("verified and renamed: input cfg {pin}; skipped")),
                "{} ({smb}): {d}",
                h.name
            );
            let bytes = std::fs::read(h.root.join(rel)).unwrap();
            assert_eq!(
                hex::encode(Sha256::digest(&bytes)),
                pin,
                "{} ({smb})",
                h.name
            );
        }
    }
    sweep(&clean, "off");
    for h in &clean_hosts {
        assert!(
            !h.root.join(rel).exists(),
            "{}: the input was removed",
            h.name
        );
        assert!(
            h.root.join("Windows/pushscan/emocheck.exe").exists(),
            "{}: the checker stays (cleanup.inputs only)",
            h.name
        );
    }
}

/// A playbook for the lab running `stand_in` (a script of playbooks/checkers, pinned) as
/// `remote_name` with `args`, read by `parser`, plus `results_extra` lines.
fn stand_in_playbook(
    t: &TestLab,
    stand_in: &str,
    remote_name: &str,
    work_dir: &str,
    args: &str,
    results: &str,
) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("playbooks/checkers")
        .join(stand_in);
    let bytes = std::fs::read(&src).unwrap();
    let exe = t.dir.path().join(remote_name);
    std::fs::write(&exe, &bytes).unwrap();
    let text = format!(
        "name: {stand_in} on the lab\nchecker:\n  path: {}\n  sha256: \"{}\"\n  platform: windows\n  \
         remote_name: {remote_name}\nwork_dir: '{work_dir}'\nrun_dir: '{work_dir}\\out'\nargs: {args}\n\
         timeout: 8s\nresults:\n{results}cleanup:\n  checker: false\n  results: false\n  dirs: false\n",
        exe.display(),
        hex::encode(Sha256::digest(&bytes)),
    );
    let p = t.dir.path().join(format!("{stand_in}.yml"));
    std::fs::write(&p, text).unwrap();
    p
}

/// The lab's Windows hosts run the YARA-X and Hayabusa stand-ins (their output formats,
/// playbooks/checkers/yara-x-sim.sh and hayabusa-sim.sh): every scenario ends in the class
/// the parser gives it, the findings carry the checker's identity, and the report's HTML
/// has the findings table of each checker.
#[test]
fn yara_x_and_hayabusa_stand_ins_on_the_windows_lab() {
    let t = start_lab(Ipv4Addr::new(127, 0, 67, 1), 16);
    let hosts = t.lab.state.hosts.clone();
    let kinds: BTreeSet<String> = hosts.iter().map(|h| format!("{:?}", h.scenario)).collect();
    for k in ["Infected", "Clean"] {
        assert!(
            kinds.contains(k),
            "the 16-host lab has no {k} host: {kinds:?}"
        );
    }
    let inv = t.lab.inventory.to_str().unwrap().to_string();
    let sweep = |pb: &Path, state: &Path| {
        let o = pushscan(
            &t,
            &[
                "sweep",
                "-i",
                &inv,
                "-p",
                pb.to_str().unwrap(),
                "--state-dir",
                state.to_str().unwrap(),
                "--progress",
                "quiet",
            ],
        );
        assert!(matches!(o.status.code(), Some(1) | Some(2)), "{}", text(&o));
        by_host(&report_json(state))
    };
    let image = |h: &LabHost| {
        arg(h, "/image")
            .unwrap_or(r"C:\Users\tanaka\AppData\Local\wfsrvhost\wfsrvhost.exe")
            .to_string()
    };

    // YARA-X: yr's standard output is the report.
    let pb = stand_in_playbook(
        &t,
        "yara-x-sim.sh",
        "yr.exe",
        r"C:\Windows\pushscan\yara",
        r#"["scan", "--output-format", "ndjson", "-e", "-m", "-g", "-s", "-r", "rules.yar", '{{ work_dir }}']"#,
        "  parser: yara_x\n  max_file_size: 4MiB\n",
    );
    let state = t.dir.path().join("state-yara");
    let rep = sweep(&pb, &state);
    let mut detected = 0;
    for h in &hosts {
        let r = &rep[&h.name];
        let ctx = format!("{} ({:?}): {r}", h.name, h.scenario);
        let status = r["status"].as_str().unwrap();
        match h.scenario {
            ScenarioKind::Infected | ScenarioKind::Crash => {
                assert_eq!(status, "detected", "{ctx}");
                assert_eq!(r["checker"], "YARA-X", "{ctx}");
                let f = &r["findings"][0];
                assert_eq!(f["kind"], "yara_match", "{ctx}");
                assert_eq!(f["title"], "Emotet_Loader", "{ctx}");
                assert_eq!(f["severity"], "critical", "{ctx}");
                assert_eq!(f["attributes"]["path"], image(h).as_str(), "{ctx}");
                assert_eq!(f["attributes"]["strings"], r"$mz@0x0: MZ\x90\x00", "{ctx}");
                assert_eq!(
                    f["identity"],
                    format!("yara|Emotet_Loader|{}", image(h)).as_str(),
                    "{ctx}"
                );
                assert_eq!(r["report_file"], "yr-scan.ndjson", "{ctx}");
                if h.scenario == ScenarioKind::Crash {
                    let w = r["report_warnings"].to_string();
                    assert!(w.contains("incomplete: yr ended with exit 101"), "{ctx}");
                }
                detected += 1;
            }
            ScenarioKind::Clean | ScenarioKind::Slow | ScenarioKind::SmbDown => {
                assert_eq!(status, "not_detected", "{ctx}");
                assert!(
                    r["reason"].as_str().unwrap().starts_with("no rule matched"),
                    "{ctx}"
                );
            }
            ScenarioKind::Noreport => {
                assert_eq!(status, "checker_failed", "{ctx}");
                assert!(
                    r["reason"]
                        .as_str()
                        .unwrap()
                        .contains("did not cover its target"),
                    "{ctx}"
                );
            }
            ScenarioKind::Hang => assert_eq!(status, "timeout", "{ctx}"),
            _ => {}
        }
    }
    assert!(detected > 0);
    let html = Command::new(PUSHSCAN)
        .args(["report", "--format", "html", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    let page = String::from_utf8_lossy(&html.stdout);
    assert!(page.contains("Findings by checker</h2>"), "{page}");
    assert!(
        page.contains("<h3>YARA-X <span class=\"muted\">yara_match</span>"),
        "{page}"
    );

    // Hayabusa: a JSONL timeline in run_dir, 4.0 form on en hosts, 3.5 form on the others.
    let pb = stand_in_playbook(
        &t,
        "hayabusa-sim.sh",
        "hayabusa.exe",
        r"C:\Windows\pushscan\hayabusa",
        r#"["json-timeline", "-l", "-L", "-o", '{{ run_dir }}\{{ inventory_hostname }}_hayabusa.jsonl', "-w", "-q", "-m", "low"]"#,
        "  glob: \"*_hayabusa.jsonl\"\n  parser: hayabusa\n  min_level: medium\n",
    );
    let state = t.dir.path().join("state-hayabusa");
    let rep = sweep(&pb, &state);
    let mut forms = BTreeSet::new();
    for h in &hosts {
        let r = &rep[&h.name];
        let ctx = format!("{} ({:?}): {r}", h.name, h.scenario);
        let status = r["status"].as_str().unwrap();
        match h.scenario {
            ScenarioKind::Infected | ScenarioKind::Crash => {
                assert_eq!(status, "detected", "{ctx}");
                assert_eq!(r["checker"], "Hayabusa", "{ctx}");
                let f = &r["findings"].as_array().unwrap();
                assert_eq!(f.len(), 1, "info and low are below medium: {ctx}");
                assert_eq!(f[0]["kind"], "event", "{ctx}");
                assert_eq!(f[0]["title"], "Emotet Loader Process Creation", "{ctx}");
                assert_eq!(f[0]["severity"], "high", "{ctx}");
                assert_eq!(
                    f[0]["identity"],
                    format!("hayabusa|Emotet Loader Process Creation|{}|4101", h.name).as_str(),
                    "{ctx}"
                );
                assert_eq!(
                    f[0]["attributes"]["details"],
                    format!("Proc: {}", image(h)).as_str(),
                    "{ctx}"
                );
                forms.insert(f[0]["attributes"]["mitre_tags"].is_string());
            }
            ScenarioKind::Clean | ScenarioKind::Slow | ScenarioKind::SmbDown => {
                assert_eq!(status, "not_detected", "{ctx}");
                let reason = r["reason"].as_str().unwrap();
                let want = "nothing at or above medium (jsonl (2 line(s), 2 below medium))";
                assert!(reason.starts_with(want), "{ctx}");
            }
            ScenarioKind::Noreport => assert_eq!(status, "no_result", "{ctx}"),
            ScenarioKind::Hang => assert_eq!(status, "timeout", "{ctx}"),
            _ => {}
        }
    }
    // The second sweep: the same detections, nothing new.
    let rep2 = sweep(&pb, &state);
    for h in hosts
        .iter()
        .filter(|h| h.scenario == ScenarioKind::Infected)
    {
        let r = &rep2[&h.name];
        assert_eq!(r["change"], "still_detected", "{}: {r}", h.name);
        assert_eq!(r["new_findings"], serde_json::json!([]), "{}: {r}", h.name);
    }
    // Both of Hayabusa's forms were read: 4.0 (verbose, MITRE tags) and 3.5 (standard).
    assert_eq!(
        forms,
        BTreeSet::from([false, true]),
        "the lab's locales changed?"
    );
}

/// A proxy set in the environment for the operator's web traffic never sees a WinRM
/// request: the NTLM exchange goes straight to each host. The "proxy" here is a loopback
/// listener that counts the connections it is offered; each Clean host still ends
/// `not_detected`, so its commands did run over WinRM.
#[test]
fn proxy_environment_variables_never_receive_the_winrm_exchange() {
    let t = start_lab(Ipv4Addr::new(127, 0, 126, 1), 4);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy listener");
    listener.set_nonblocking(true).expect("nonblocking");
    let proxy = format!("http://{}", listener.local_addr().expect("proxy address"));
    let stop = Arc::new(AtomicBool::new(false));
    let offered = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok(_) => n += 1,
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            n
        })
    };
    let (pb, _) = playbook(&t);
    let state = t.dir.path().join("state");
    let mut cmd = Command::new(PUSHSCAN);
    cmd.args(["sweep", "-i"])
        .arg(&t.lab.inventory)
        .arg("-p")
        .arg(&pb)
        .arg("--state-dir")
        .arg(&state)
        .args(["--progress", "quiet"])
        .env("PUSHSCAN_USER", &t.lab.username)
        .env("PUSHSCAN_PASSWORD", &t.lab.password)
        .env_remove("RUST_LOG")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
    for var in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env(var, &proxy);
    }
    let o = cmd.output().expect("run pushscan");
    stop.store(true, Ordering::Relaxed);
    let offered = offered.join().expect("proxy thread");
    assert!(matches!(o.status.code(), Some(1) | Some(2)), "{}", text(&o));
    assert_eq!(offered, 0, "the proxy was offered {offered} connection(s)");
    let rep = by_host(&report_json(&state));
    for h in clean_hosts(&t) {
        assert_eq!(
            rep[&h.name]["status"].as_str(),
            Some("not_detected"),
            "{}: {}",
            h.name,
            rep[&h.name]
        );
    }
}
