//! `pushscan-lab demo`: one command that shows what pushscan does, with nothing to set up.
//!
//! It starts a small lab fleet (a fixed, deterministic mix of scenarios: clean hosts,
//! detections in English, Japanese with CP932 paths and French, a host that leaves no
//! report, a crashing and a hanging checker, a wrong password, a closed port, SMB down, and
//! an infected and a clean PC whose WinRM is closed, as Windows 10 and 11 ship),
//! sweeps it with the real `pushscan` binary (`pushscan sweep`, which prints the consolidated
//! report; see [`pushscan_exe`] for where the binary comes from), checks in the JSON report it
//! writes that every host ended in the class its scenario calls for, prints a short footer,
//! and removes everything it started and wrote. The lab does not link pushscan's library: it
//! drives the program as an operator does.
//!
//! Two ways to serve the fleet, chosen at start and said in one line before the report:
//!
//! - **SMB** (root, and Samba's `smbd` installed): [`fleet::up`], the same lab as
//!   `pushscan-lab up` (a private Samba serving `ADMIN$`/`C$`, the WinRM simulator and the
//!   lab's `\PIPE\svcctl` in a detached process), stopped with `down` at the end, on errors,
//!   on Ctrl-C during the start, and when the process exits early (an `atexit` hook). pushscan
//!   reaches the hosts whose WinRM is closed over SMB alone (`pushscan_exec: auto`, its
//!   default: a service per command through svcctl).
//! - **WinRM only** (otherwise, or `--no-smb`): the host trees and the WinRM simulator run in
//!   this process; no Samba, no root (binding 127.0.0.0/8 addresses needs no privilege on
//!   Linux). The inventory says `pushscan_smb: off` and the sweep runs with `--smb off`, so
//!   every host uses pushscan's WinRM-only transfer path, and the hosts whose WinRM is closed
//!   cannot be reached at all: their expected class is `unreachable` ([`expected_class`]).
//!
//! Ctrl-C and SIGTERM during the sweep go to pushscan (it runs in a process group of its own,
//! so a terminal's Ctrl-C reaches it once, through this process): pushscan stops the sweep
//! gracefully (a second Ctrl-C: at once), then the demo stops its fleet and cleans up.
//!
//! The demo exits 0 when the sweep came out as designed (pushscan's own exit code for it is
//! 1, "detections", and is printed); anything else is a real failure.

use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use sha2::{Digest as _, Sha256};

use serde_json::Value;

use crate::fleet::{self, LabHost, LabState, ServeHost, ServePlan, UpOptions};
use crate::samba;
use crate::spec::{self, HostPlan, Scenario, ScenarioKind, Spec, WinrmAvailability};
use crate::winrm;

/// The demo fleet. Fourteen hosts, one per scenario entry (clean has weight 3), so every
/// class of the report shows up; `--hosts N` scales the mix.
pub const DEMO_SPEC_YAML: &str = r#"
hosts: 14
base_address: 127.0.20.1
name_pattern: "PC-{ou}-{n:03}"
seed: 7
ous:
  - {name: SALES, weight: 2, groups: [wave1]}
  - {name: DEV, weight: 1, groups: [wave2]}
  - {name: TOKYO, weight: 1, groups: [wave2]}
scenarios:
  - {kind: clean, weight: 3}
  - {kind: infected}
  - kind: infected
    locale: ja
    encoding: cp932
    process: "ソフト更新.exe"
    pid: 5120
    image: 'C:\Users\鈴木\AppData\Local\ソフト\ソフト更新.exe'
    runkey: 'HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Run\ソフト'
  - {kind: infected, locale: fr, user: dupont}
  - {kind: noreport}
  - {kind: crash}
  - {kind: hang}
  - {kind: wrong_password}
  - {kind: port_closed}
  - {kind: smb_down}
  - {kind: infected, winrm: closed, user: sato}
  - {kind: clean, winrm: closed}
winrm:
  https_port: null
"#;

/// The first address of the demo fleet (a range of its own: a `pushscan-lab up` lab on
/// 127.0.10.x may run at the same time).
pub const DEMO_BASE_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 20, 1);

/// The playbook's timeout: the hanging host is killed after it, so the demo stays short.
pub const DEMO_TIMEOUT: &str = "5s";

/// Whether to serve files over SMB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmbChoice {
    /// SMB when root and Samba is installed, else WinRM only.
    Auto,
    /// SMB or fail (with the reason and the install command).
    Required,
    /// WinRM only.
    Off,
}

/// pushscan's `--progress` (on stderr).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// A bar on a terminal, else lines.
    Auto,
    Lines,
    Quiet,
}

impl Progress {
    fn arg(self) -> &'static str {
        match self {
            Progress::Auto => "auto",
            Progress::Lines => "lines",
            Progress::Quiet => "quiet",
        }
    }
}

/// pushscan's exit codes the demo tells apart (`pushscan --help`).
pub mod exit {
    /// Every host checked, nothing detected.
    pub const OK: i32 = 0;
    /// At least one detection.
    pub const DETECTED: i32 = 1;
    /// Some hosts not checked.
    pub const INCOMPLETE: i32 = 2;
}

/// How the hosts' files travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transfer {
    /// Real Samba (`fleet::up`), files over SMB (`smb_down` hosts fall back to WinRM).
    Smb,
    /// The WinRM simulator in this process, files over WinRM only.
    WinrmOnly,
}

/// Options of [`run`].
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Number of hosts (default: the demo spec's 14).
    pub hosts: Option<usize>,
    /// The demo directory: absent or empty (default: a new temporary directory).
    pub dir: Option<PathBuf>,
    /// Keep the directory (host trees, inventory, journal) at the end.
    pub keep: bool,
    pub smb: SmbChoice,
    /// First host address (tests use ranges of their own).
    pub base_address: Ipv4Addr,
    /// The `pushscan-lab` executable run as the serve process of the SMB path.
    pub exe: PathBuf,
    /// The `pushscan` executable that sweeps (default: see [`pushscan_exe`]).
    pub pushscan: Option<PathBuf>,
    pub progress: Progress,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            hosts: None,
            dir: None,
            keep: false,
            smb: SmbChoice::Auto,
            base_address: DEMO_BASE_ADDRESS,
            exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("pushscan-lab")),
            pushscan: None,
            progress: Progress::Auto,
        }
    }
}

/// What a demo run did.
#[derive(Clone, Debug)]
pub struct DemoOutcome {
    pub transfer: Transfer,
    /// pushscan's exit code for the sweep (1: detections, as designed).
    pub sweep_exit_code: i32,
    /// The exit code the fleet calls for (1 unless `--hosts` is too small for a detection).
    pub expected_exit_code: i32,
    /// Hosts whose class differs from what their scenario calls for (empty: as designed).
    pub unexpected: Vec<String>,
    /// The demo directory, when kept.
    pub kept: Option<PathBuf>,
    pub elapsed: Duration,
}

impl DemoOutcome {
    /// Whether the demo came out as designed.
    pub fn ok(&self) -> bool {
        self.unexpected.is_empty() && self.sweep_exit_code == self.expected_exit_code
    }
}

/// pushscan's exit code for a sweep of `plan` over `transfer` where every host ends as
/// designed.
pub fn expected_exit_code(plan: &[HostPlan], transfer: Transfer) -> i32 {
    let classes: Vec<&str> = plan
        .iter()
        .map(|h| expected_class(&h.scenario, transfer))
        .collect();
    if classes.contains(&"detected") {
        exit::DETECTED
    } else if classes.iter().any(|c| *c != "not_detected") {
        exit::INCOMPLETE
    } else {
        exit::OK
    }
}

/// The class pushscan must give a host of `scenario` when the fleet is served over
/// `transfer`.
pub fn expected_class(scenario: &Scenario, transfer: Transfer) -> &'static str {
    // A host whose WinRM is closed is reached over SMB alone (service control over
    // `\PIPE\svcctl`); the WinRM-only path serves no SMB, so nothing answers for it there.
    if scenario.winrm == WinrmAvailability::Closed && transfer == Transfer::WinrmOnly {
        return "unreachable";
    }
    match scenario.kind {
        ScenarioKind::Clean | ScenarioKind::SmbDown | ScenarioKind::Slow => "not_detected",
        // The crashing stand-in leaves a detected report cut inside the process block:
        // pushscan keeps the detection (a cut report is never read as clean) and says
        // "exit 139; truncated" in the reason.
        ScenarioKind::Infected | ScenarioKind::Crash => "detected",
        ScenarioKind::Noreport => "no_result",
        ScenarioKind::Hang => "timeout",
        ScenarioKind::WrongPassword => "auth_failed",
        ScenarioKind::PortClosed => "unreachable",
    }
}

/// The demo spec for `opts` (host count, base address; ports are chosen at start).
pub fn demo_spec(opts: &DemoOptions) -> Result<Spec> {
    let mut spec = Spec::parse(DEMO_SPEC_YAML, Path::new("<demo spec>"))?;
    if let Some(n) = opts.hosts {
        if n == 0 {
            bail!("--hosts must be at least 1");
        }
        spec.hosts = n;
    }
    spec.base_address = opts.base_address;
    Ok(spec)
}

/// Which path `choice` gives on this machine, or why SMB cannot be used.
pub fn choose_transfer(choice: SmbChoice) -> Result<(Transfer, &'static str)> {
    if choice == SmbChoice::Off {
        return Ok((Transfer::WinrmOnly, "--no-smb"));
    }
    let root = unsafe { libc::geteuid() } == 0;
    let missing = ["smbd", "smbpasswd"]
        .iter()
        .find_map(|t| samba::binary(t).err());
    match (root, missing, choice) {
        (true, None, _) => Ok((Transfer::Smb, "root, Samba installed")),
        (false, _, SmbChoice::Required) => bail!(
            "the SMB path needs root (it adds loopback addresses and a system account for Samba)"
        ),
        (true, Some(e), SmbChoice::Required) => Err(e),
        (false, _, _) => Ok((Transfer::WinrmOnly, "not root")),
        (true, Some(_), _) => Ok((Transfer::WinrmOnly, "Samba is not installed")),
    }
}

/// The `pushscan` executable the demo runs: `opts.pushscan`, else `$PUSHSCAN_EXE`, else, in
/// a checkout of the workspace with cargo at hand (under `cargo run` or `cargo test`, or a
/// `cargo` on `PATH`), the one `cargo build -p pushscan --bin pushscan` builds (with
/// `--release` when this program is a release build), else a `pushscan` next to this program.
pub fn pushscan_exe(opts: &DemoOptions) -> Result<PathBuf> {
    if let Some(p) = &opts.pushscan {
        return Ok(p.clone());
    }
    if let Some(p) = std::env::var_os("PUSHSCAN_EXE").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let sibling = opts.exe.with_file_name("pushscan");
    let workspace = Path::new(pushscan_testkit::cargo::WORKSPACE);
    let under_cargo = std::env::var_os("CARGO").is_some();
    if workspace.join("Cargo.toml").is_file() && (under_cargo || !sibling.is_file()) {
        return build_pushscan(workspace, &opts.exe);
    }
    if sibling.is_file() {
        return Ok(sibling);
    }
    bail!(
        "no pushscan executable: build it (cargo build -p pushscan) or name it with \
         PUSHSCAN_EXE=/path/to/pushscan"
    )
}

/// `cargo build -p pushscan --bin pushscan` in `workspace`, in the profile `lab_exe` was built
/// in; the path cargo reports for the binary. Cargo's own progress goes to stderr.
fn build_pushscan(workspace: &Path, lab_exe: &Path) -> Result<PathBuf> {
    let release = lab_exe
        .parent()
        .and_then(|d| d.file_name())
        .is_some_and(|n| n == "release");
    let mut cmd = pushscan_testkit::cargo::cargo_command();
    cmd.args([
        "build",
        "-p",
        "pushscan",
        "--bin",
        "pushscan",
        "--message-format=json-render-diagnostics",
    ]);
    if release {
        cmd.arg("--release");
    }
    let out = cmd
        .current_dir(workspace)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run cargo to build pushscan (or name it with PUSHSCAN_EXE)")?;
    if !out.status.success() {
        bail!("cargo build -p pushscan failed ({})", out.status);
    }
    // One JSON message a line; the binary is the `executable` of pushscan's bin artifact.
    let exe = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "pushscan")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from));
    exe.ok_or_else(|| anyhow!("cargo build -p pushscan named no pushscan executable"))
}

/// Runs the demo (see the module doc): prints the path line, the report and the footer.
pub fn run(opts: DemoOptions) -> Result<DemoOutcome> {
    let t0 = Instant::now();
    let (transfer, why) = choose_transfer(opts.smb)?;
    let pushscan = pushscan_exe(&opts)?;
    let spec = demo_spec(&opts)?;
    let plan = spec.plan().context("invalid demo spec")?;

    let (dir, temp) = match &opts.dir {
        Some(d) => {
            if d.exists()
                && fs::read_dir(d)
                    .with_context(|| format!("cannot list {}", d.display()))?
                    .next()
                    .is_some()
            {
                bail!(
                    "{} is not empty: the demo removes its directory at the end, so it only \
                     uses a new or empty one",
                    d.display()
                );
            }
            fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            (fs::canonicalize(d)?, None)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("pushscan-demo-")
                .tempdir()
                .context("cannot create a temporary directory")?;
            // Other users may need to traverse it (Samba's account on the SMB path).
            fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755))?;
            (fs::canonicalize(t.path())?, Some(t))
        }
    };
    let _guard = ExitGuard::arm(&dir, transfer == Transfer::Smb, !opts.keep);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(run_async(
        &opts, &pushscan, transfer, why, spec, &plan, &dir,
    ));
    runtime.shutdown_timeout(Duration::from_secs(5));

    let kept = if opts.keep {
        if let Some(t) = temp {
            let _ = t.keep();
        }
        Some(dir.clone())
    } else {
        drop(temp);
        if opts.dir.is_some() {
            let _ = fs::remove_dir_all(&dir);
        }
        None
    };
    let (sweep_exit_code, unexpected) = result?;
    Ok(DemoOutcome {
        transfer,
        sweep_exit_code,
        expected_exit_code: expected_exit_code(&plan, transfer),
        unexpected,
        kept,
        elapsed: t0.elapsed(),
    })
}

async fn run_async(
    opts: &DemoOptions,
    pushscan: &Path,
    transfer: Transfer,
    why: &str,
    mut spec: Spec,
    plan: &[HostPlan],
    dir: &Path,
) -> Result<(i32, Vec<String>)> {
    // Ctrl-C / SIGTERM while the fleet starts: finish starting, then stop it and give up.
    // (During the sweep they go to pushscan, see `sweep`.)
    let interrupted = Arc::new(AtomicBool::new(false));
    let watcher = {
        let flag = Arc::clone(&interrupted);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot catch SIGTERM")?;
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::spawn(async move {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            flag.store(true, Ordering::SeqCst);
        })
    };
    let addresses: Vec<Ipv4Addr> = plan.iter().map(|h| h.address).collect();
    let first = addresses.first().copied().unwrap_or(spec.base_address);
    let last = addresses.last().copied().unwrap_or(first);
    let mix = scenario_mix(plan);
    let timeout_note = format!("playbook timeout {DEMO_TIMEOUT}");
    let closed = winrm_closed(plan);

    match transfer {
        Transfer::Smb => {
            let smb: Vec<Ipv4Addr> = plan
                .iter()
                .filter(|h| h.scenario.kind.serves_smb())
                .map(|h| h.address)
                .collect();
            spec.smb.port = free_port(&smb, 445, &[])?;
            spec.winrm.http_port = free_port(&addresses, 5985, &[spec.smb.port])?;
            let mut up = UpOptions::new(dir, spec);
            up.exe = opts.exe.clone();
            let lab = tokio::task::spawn_blocking(move || fleet::up(up))
                .await
                .context("the lab start panicked")??;
            if interrupted.load(Ordering::SeqCst) {
                let _ = tokio::task::spawn_blocking(move || lab.down()).await;
                bail!("interrupted while the demo fleet started; it is stopped again");
            }
            watcher.abort();
            set_timeout(&lab.playbook)?;
            println!(
                "pushscan-lab demo: {} simulated Windows hosts on {first}..{last} ({why}): files \
                 over SMB (a real Samba smbd serving ADMIN$, port {}), commands over the WinRM \
                 simulator (port {}); {timeout_note}",
                plan.len(),
                lab.smb_port(),
                lab.winrm_port()
            );
            println!("  scenarios: {mix}");
            if !closed.is_empty() {
                println!(
                    "  WinRM closed on {}: pushscan runs their commands over SMB alone (a \
                     service per command through the lab's \\PIPE\\svcctl, deleted after it)",
                    closed.join(", ")
                );
            }
            println!();
            let access = Access {
                username: &lab.username,
                password: &lab.password,
                smb: "auto",
            };
            let swept = sweep(
                pushscan,
                dir,
                &lab.inventory,
                &lab.playbook,
                access,
                opts.progress,
            )
            .await;
            let down = tokio::task::spawn_blocking(move || lab.down())
                .await
                .context("stopping the lab panicked")?;
            let code = swept?;
            down.context("cannot stop the demo fleet")?;
            finish(dir, plan, code, transfer, opts.keep)
        }
        Transfer::WinrmOnly => {
            let username = spec.account.username.clone();
            let password = match &spec.account.password {
                Some(p) => p.clone(),
                None => spec::generate_password()?,
            };
            let http_port = free_port(&addresses, 5985, &[])?;
            let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
            fleet::make_host_trees(dir, plan, &username, uid, gid)?;
            let state = LabState {
                version: 1,
                dir: dir.to_path_buf(),
                started: 0,
                smbd_pid: None,
                dcerpcd_pid: None,
                serve_pid: None,
                smbd_conf: PathBuf::new(),
                smb_port: spec.smb.port,
                smb_encryption: spec.smb.encryption,
                winrm_http_port: http_port,
                winrm_https_port: None,
                username: username.clone(),
                added_addresses: Vec::new(),
                hosts: plan.iter().map(|h| fleet::lab_host(dir, h)).collect(),
                wine: None,
            };
            let files = write_lab_files(dir, &state, &password)?;
            let serve = ServePlan {
                http_port,
                https_port: None,
                tls_cert: None,
                tls_key: None,
                allow_basic_over_http: false,
                max_shells_per_user: spec.winrm.max_shells_per_user,
                max_processes_per_shell: spec.winrm.max_processes_per_shell,
                idle_timeout_secs: spec.winrm.idle_timeout_secs,
                hosts: state
                    .hosts
                    .iter()
                    .map(|h| serve_host(h, &username, &password))
                    .collect(),
                svcctl_start_timeout_ms: spec.svcctl.start_timeout_ms,
            };
            let server = winrm::Server::bind(serve.server_config())
                .await
                .context("cannot start the WinRM simulator")?;
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let server = tokio::spawn(server.run(stop_rx));
            if interrupted.load(Ordering::SeqCst) {
                let _ = stop_tx.send(true);
                let _ = server.await;
                bail!("interrupted while the demo fleet started");
            }
            watcher.abort();
            println!(
                "pushscan-lab demo: {} simulated Windows hosts on {first}..{last}: the WinRM \
                 simulator runs in this process (port {http_port}), files over WinRM only (no \
                 SMB: {why}); {timeout_note}",
                plan.len()
            );
            println!("  scenarios: {mix}");
            if !closed.is_empty() {
                println!(
                    "  WinRM closed on {}: pushscan reaches such hosts over SMB alone, which this \
                     path does not serve, so they end unreachable here, as designed (as root \
                     with Samba installed the demo sweeps them over SMB)",
                    closed.join(", ")
                );
            }
            println!();
            let access = Access {
                username: &username,
                password: &password,
                smb: "off",
            };
            let swept = sweep(pushscan, dir, &files.0, &files.1, access, opts.progress).await;
            let _ = stop_tx.send(true);
            let stopped = server.await;
            let code = swept?;
            stopped
                .context("the WinRM simulator panicked")?
                .context("the WinRM simulator failed")?;
            finish(dir, plan, code, transfer, opts.keep)
        }
    }
}

fn serve_host(h: &LabHost, username: &str, password: &str) -> ServeHost {
    ServeHost {
        name: h.name.clone(),
        address: h.address,
        root: h.root.clone(),
        checker_args: h.checker_args.clone(),
        username: username.to_string(),
        password: if h.scenario == ScenarioKind::WrongPassword {
            format!("{password}-but-not-on-this-host")
        } else {
            password.to_string()
        },
        latency_ms: h.latency_ms,
        enabled: h.winrm,
        wine: None,
        // This WinRM-only view of the fleet runs no smbd, so no svcctl either.
        smb: false,
        svcctl: h.svcctl,
    }
}

/// Writes what `fleet::up` writes for pushscan (checker, playbook, inventory with
/// `pushscan_smb: off`, `lab.env`); returns (inventory, playbook).
fn write_lab_files(dir: &Path, state: &LabState, password: &str) -> Result<(PathBuf, PathBuf)> {
    let checker = dir.join("emocheck-lab.exe");
    fs::write(&checker, fleet::CHECKER_SCRIPT)
        .with_context(|| format!("cannot write {}", checker.display()))?;
    fs::set_permissions(&checker, fs::Permissions::from_mode(0o755))?;
    let sha = hex::encode(Sha256::digest(fleet::CHECKER_SCRIPT));
    let playbook = dir.join("emocheck-lab.yml");
    fs::write(&playbook, fleet::playbook_yaml(&sha))
        .with_context(|| format!("cannot write {}", playbook.display()))?;
    set_timeout(&playbook)?;
    let inventory = dir.join("inventory.yml");
    let text = fleet::inventory_yaml(state);
    let anchor = format!("        pushscan_smb_port: {}\n", state.smb_port);
    if !text.contains(&anchor) {
        bail!("the lab inventory has no windows vars to add `pushscan_smb: off` to");
    }
    let text = text.replacen(
        &anchor,
        &format!("{anchor}        pushscan_smb: 'off'  # files over WinRM only (no Samba)\n"),
        1,
    );
    fs::write(&inventory, text).with_context(|| format!("cannot write {}", inventory.display()))?;
    fleet::write_private(
        &dir.join("lab.env"),
        format!(
            "# The pushscan demo lab account (a wrong_password host refuses it).\n\
             PUSHSCAN_USER={}\nPUSHSCAN_PASSWORD={}\n",
            fleet::shell_quote(&state.username),
            fleet::shell_quote(password)
        )
        .as_bytes(),
    )?;
    Ok((inventory, playbook))
}

/// Sets the lab playbook's timeout to [`DEMO_TIMEOUT`].
fn set_timeout(playbook: &Path) -> Result<()> {
    let text = fs::read_to_string(playbook)
        .with_context(|| format!("cannot read {}", playbook.display()))?;
    let mut found = false;
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("timeout:") {
                found = true;
                format!("timeout: {DEMO_TIMEOUT}")
            } else {
                l.to_string()
            }
        })
        .collect();
    if !found {
        bail!("{} has no `timeout:` line", playbook.display());
    }
    fs::write(playbook, out.join("\n") + "\n")
        .with_context(|| format!("cannot write {}", playbook.display()))
}

/// The lab account and the SMB choice, as pushscan gets them.
struct Access<'a> {
    username: &'a str,
    password: &'a str,
    /// `--smb`: auto or off.
    smb: &'static str,
}

/// Where pushscan writes the run's JSON report, which the footer and the check read.
const REPORT_JSON: &str = "report.json";

/// The sweep, as an operator runs it: `pushscan sweep` (prints the report), the lab account
/// in `PUSHSCAN_USER` / `PUSHSCAN_PASSWORD` (the environment, never the command line), no
/// ssh-agent, no alerts, no credentials file; pushscan's exit code. Ctrl-C and SIGTERM that
/// reach this process meanwhile are passed on to pushscan (see the module doc).
async fn sweep(
    pushscan: &Path,
    dir: &Path,
    inventory: &Path,
    playbook: &Path,
    access: Access<'_>,
    progress: Progress,
) -> Result<i32> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut cmd = tokio::process::Command::new(pushscan);
    cmd.arg("sweep")
        .arg("-i")
        .arg(inventory)
        .arg("-p")
        .arg(playbook)
        .args(["--forks", "50", "--no-agent", "--connect-timeout", "10s"])
        .args([
            "--smb",
            access.smb,
            "--no-notify",
            "--progress",
            progress.arg(),
        ])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--report-json")
        .arg(dir.join(REPORT_JSON))
        .env("PUSHSCAN_USER", access.username)
        .env("PUSHSCAN_PASSWORD", access.password)
        .env_remove("PUSHSCAN_CREDENTIALS")
        .env_remove("PUSHSCAN_NOTIFY_CONFIG")
        .stdin(std::process::Stdio::null())
        // A terminal's Ctrl-C reaches this process only; it is passed on once (below).
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", pushscan.display()))?;
    let pid = child.id().map(|p| p as libc::pid_t);
    let mut int = signal(SignalKind::interrupt()).context("cannot catch SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("cannot catch SIGTERM")?;
    let status = loop {
        let sig = tokio::select! {
            status = child.wait() => break status.context("waiting for pushscan")?,
            _ = int.recv() => libc::SIGINT,
            _ = term.recv() => libc::SIGTERM,
        };
        if let Some(pid) = pid {
            // SAFETY: kill(2) on our own child, which has not been waited for yet.
            unsafe { libc::kill(pid, sig) };
        }
    };
    match status.code() {
        Some(code @ (exit::OK | exit::DETECTED | exit::INCOMPLETE)) => Ok(code),
        Some(code) => bail!("the sweep failed (pushscan exit code {code})"),
        None => bail!("the sweep failed: pushscan ended by a signal ({status})"),
    }
}

/// pushscan's JSON report of the run, read within a cap (its own output, still bounded).
fn read_report(dir: &Path) -> Result<Value> {
    use std::io::Read as _;
    const CAP: u64 = 64 << 20;
    let path = dir.join(REPORT_JSON);
    let mut text = Vec::new();
    fs::File::open(&path)
        .with_context(|| format!("pushscan wrote no report at {}", path.display()))?
        .take(CAP + 1)
        .read_to_end(&mut text)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if text.len() as u64 > CAP {
        bail!("{} is larger than {CAP} bytes", path.display());
    }
    serde_json::from_slice(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// Compares every host's class with its scenario and prints the footer.
fn finish(
    dir: &Path,
    plan: &[HostPlan],
    code: i32,
    transfer: Transfer,
    keep: bool,
) -> Result<(i32, Vec<String>)> {
    let report = read_report(dir)?;
    if report["run"]["status"] == "interrupted" {
        bail!(
            "the sweep was interrupted; the demo fleet is stopped{}",
            if keep {
                format!(" (its directory is kept: {})", dir.display())
            } else {
                " and its directory removed (nothing to resume)".to_string()
            }
        );
    }
    let hosts: &[Value] = report["hosts"].as_array().map_or(&[], Vec::as_slice);
    let field = |e: &Value, name: &str| e[name].as_str().unwrap_or("").to_string();
    let mut unexpected = Vec::new();
    for h in plan {
        let want = expected_class(&h.scenario, transfer);
        let closed = h.scenario.winrm == WinrmAvailability::Closed;
        match hosts.iter().find(|e| e["host"] == h.name.as_str()) {
            // Only SMB reaches a host whose WinRM is closed: its class alone does not show
            // that the SMB path ran the checker, its reason does.
            Some(e)
                if e["status"] == want
                    && closed
                    && transfer == Transfer::Smb
                    && !field(e, "reason").contains("[commands over SMB (") =>
            {
                unexpected.push(format!(
                    "{} (scenario {}, WinRM closed): {want}, but its reason does not say \
                     \"commands over SMB\": {}",
                    h.name,
                    h.scenario.kind,
                    field(e, "reason")
                ))
            }
            Some(e) if e["status"] == want => {}
            Some(e) => unexpected.push(format!(
                "{} (scenario {}): {} instead of {want}: {}",
                h.name,
                h.scenario.kind,
                field(e, "status"),
                field(e, "reason")
            )),
            None => unexpected.push(format!("{}: not in the report", h.name)),
        }
    }
    let count = |class: &str| hosts.iter().filter(|e| e["status"] == class).count();
    let not_checked = hosts.len() - count("detected") - count("not_detected") - count("no_result");
    let files = match transfer {
        Transfer::Smb => "files over SMB",
        Transfer::WinrmOnly => "files over WinRM only",
    };
    println!();
    let meaning = match code {
        0 => "nothing detected",
        1 => "at least one detection",
        2 => "some hosts not checked",
        _ => "an error",
    };
    let closed = winrm_closed(plan);
    let closed_note = match (closed.len(), transfer) {
        (0, _) => String::new(),
        (n, Transfer::Smb) => format!(
            " The {n} with WinRM closed were swept over SMB alone (a service per command, \
             deleted after it; their reason says \"commands over SMB\")."
        ),
        (n, Transfer::WinrmOnly) => format!(
            " The {n} with WinRM closed are unreachable on this path, as designed: pushscan \
             reaches such hosts over SMB alone, which needs the SMB path (root, Samba installed)."
        ),
    };
    println!(
        "What you just saw: pushscan swept {} simulated Windows hosts (WinRM, {files}): {} \
         detected, {} clean, {} with no result, {} not checked, each with its reason.\
         {closed_note} pushscan's exit code for this sweep is {code} ({meaning}); the demo's is \
         0 when every host ended as its scenario says.",
        hosts.len(),
        count("detected"),
        count("not_detected"),
        count("no_result"),
        not_checked,
    );
    if keep {
        println!(
            "Kept in {0}: inventory.yml, emocheck-lab.yml, lab.env, hosts/, and the journal: \
             cargo run -- report --state-dir {0}/state --format json (or runs, history HOST).",
            dir.display()
        );
    } else {
        println!(
            "Everything it started and wrote is gone again (--keep keeps the inventory, \
             playbook, host trees and journal; pushscan-lab up --hosts 20 runs a lab that stays)."
        );
    }
    println!(
        "Next, your own fleet: cargo run --release -- sweep -i YOUR-INVENTORY.yml -p \
         playbooks/emocheck.yml (Windows: PUSHSCAN_USER / PUSHSCAN_PASSWORD; see README.md)."
    );
    if !unexpected.is_empty() {
        eprintln!(
            "pushscan-lab demo: {} host(s) did not end as their scenario says:",
            unexpected.len()
        );
        for u in &unexpected {
            eprintln!("  {u}");
        }
    }
    Ok((code, unexpected))
}

/// The names of the hosts whose WinRM is closed.
fn winrm_closed(plan: &[HostPlan]) -> Vec<&str> {
    plan.iter()
        .filter(|h| h.scenario.winrm == WinrmAvailability::Closed)
        .map(|h| h.name.as_str())
        .collect()
}

/// "clean 3, infected 3 (en, ja/cp932, fr), ..., WinRM closed 2 (infected, clean)": the
/// hosts whose WinRM is closed are counted apart.
fn scenario_mix(plan: &[HostPlan]) -> String {
    let mut counts: Vec<(ScenarioKind, Vec<String>)> = Vec::new();
    let mut closed: Vec<&str> = Vec::new();
    for h in plan {
        if h.scenario.winrm == WinrmAvailability::Closed {
            closed.push(h.scenario.kind.as_str());
            continue;
        }
        let note = match (h.scenario.locale.as_str(), h.scenario.encoding) {
            (l, spec::PathEncoding::Cp932) => format!("{l}/cp932"),
            (l, _) => l.to_string(),
        };
        match counts.iter_mut().find(|(k, _)| *k == h.scenario.kind) {
            Some((_, notes)) => notes.push(note),
            None => counts.push((h.scenario.kind, vec![note])),
        }
    }
    counts
        .iter()
        .map(|(k, notes)| {
            let mut locales: Vec<&str> = Vec::new();
            for n in notes {
                if !locales.contains(&n.as_str()) {
                    locales.push(n);
                }
            }
            if *k == ScenarioKind::Infected {
                format!("{k} {} ({})", notes.len(), locales.join(", "))
            } else {
                format!("{k} {}", notes.len())
            }
        })
        .chain(
            (!closed.is_empty())
                .then(|| format!("WinRM closed {} ({})", closed.len(), closed.join(", "))),
        )
        .collect::<Vec<_>>()
        .join(", ")
}

/// `preferred` when it can be bound on every address (and is not in `avoid`), else a port
/// free on all of them.
fn free_port(addresses: &[Ipv4Addr], preferred: u16, avoid: &[u16]) -> Result<u16> {
    let free_everywhere = |port: u16| {
        !avoid.contains(&port)
            && addresses
                .iter()
                .all(|ip| TcpListener::bind(SocketAddrV4::new(*ip, port)).is_ok())
    };
    if addresses.is_empty() || free_everywhere(preferred) {
        return Ok(preferred);
    }
    for _ in 0..50 {
        let l = TcpListener::bind(SocketAddrV4::new(addresses[0], 0))
            .context("cannot bind a loopback port")?;
        let port = l.local_addr()?.port();
        drop(l);
        if free_everywhere(port) {
            return Ok(port);
        }
    }
    bail!(
        "no TCP port is free on all of {} demo addresses",
        addresses.len()
    )
}

/// What to clean if this process ends through `exit` before the demo's own cleanup ran: the
/// lab (SMB path) and the demo directory.
struct ExitGuard;

struct PendingCleanup {
    dir: PathBuf,
    lab: bool,
    remove: bool,
}

static PENDING: Mutex<Option<PendingCleanup>> = Mutex::new(None);

extern "C" fn cleanup_at_exit() {
    let Ok(mut pending) = PENDING.try_lock() else {
        return;
    };
    let Some(p) = pending.take() else {
        return;
    };
    // The process is exiting with work still running (its threads would print the errors of
    // hosts whose lab goes away): silence stdout and stderr, keep our own line.
    let mut err = silence_std_streams();
    use std::io::Write as _;
    let _ = writeln!(
        err,
        "pushscan-lab demo: stopping the demo fleet{}",
        if p.remove {
            format!(" and removing {}", p.dir.display())
        } else {
            String::new()
        }
    );
    if p.lab {
        if let Err(e) = fleet::down(&p.dir, false) {
            let _ = writeln!(err, "pushscan-lab demo: stopping the lab: {e:#}");
        }
    }
    if p.remove {
        let _ = fs::remove_dir_all(&p.dir);
    }
}

/// Points fds 1 and 2 at /dev/null; returns the original stderr.
fn silence_std_streams() -> Box<dyn std::io::Write> {
    use std::os::fd::FromRawFd as _;
    unsafe {
        let saved = libc::dup(2);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
        if saved < 0 || null < 0 {
            return Box::new(std::io::stderr());
        }
        libc::dup2(null, 1);
        libc::dup2(null, 2);
        libc::close(null);
        Box::new(fs::File::from_raw_fd(saved))
    }
}

impl ExitGuard {
    fn arm(dir: &Path, lab: bool, remove: bool) -> ExitGuard {
        static REGISTERED: std::sync::Once = std::sync::Once::new();
        REGISTERED.call_once(|| unsafe {
            libc::atexit(cleanup_at_exit);
        });
        if let Ok(mut p) = PENDING.lock() {
            *p = Some(PendingCleanup {
                dir: dir.to_path_buf(),
                lab,
                remove,
            });
        }
        ExitGuard
    }
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        if let Ok(mut p) = PENDING.lock() {
            *p = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_fleet_has_every_scenario_once_and_is_deterministic() {
        let opts = DemoOptions::default();
        let plan = demo_spec(&opts).unwrap().plan().unwrap();
        assert_eq!(plan.len(), 14);
        for kind in [
            ScenarioKind::Infected,
            ScenarioKind::Noreport,
            ScenarioKind::Crash,
            ScenarioKind::Hang,
            ScenarioKind::WrongPassword,
            ScenarioKind::PortClosed,
            ScenarioKind::SmbDown,
        ] {
            assert!(plan.iter().any(|h| h.scenario.kind == kind), "{kind}");
        }
        let infected = plan
            .iter()
            .filter(|h| h.scenario.kind == ScenarioKind::Infected)
            .count();
        assert_eq!(infected, 4);
        // One infected and one clean PC with WinRM closed (reached over SMB alone).
        let mut closed: Vec<ScenarioKind> = plan
            .iter()
            .filter(|h| h.scenario.winrm == WinrmAvailability::Closed)
            .map(|h| h.scenario.kind)
            .collect();
        closed.sort_by_key(|k| k.as_str());
        assert_eq!(closed, [ScenarioKind::Clean, ScenarioKind::Infected]);
        assert_eq!(winrm_closed(&plan).len(), 2);
        assert_eq!(plan, demo_spec(&opts).unwrap().plan().unwrap());
        let mix = scenario_mix(&plan);
        assert!(mix.contains("infected 3 ("), "{mix}");
        assert!(mix.contains("clean 3,"), "{mix}");
        assert!(mix.ends_with(", WinRM closed 2 (clean, infected)"), "{mix}");
    }

    #[test]
    fn hosts_with_winrm_closed_are_unreachable_only_without_smb() {
        let plan = demo_spec(&DemoOptions::default()).unwrap().plan().unwrap();
        let class = |h: &HostPlan| {
            (
                expected_class(&h.scenario, Transfer::Smb),
                expected_class(&h.scenario, Transfer::WinrmOnly),
            )
        };
        for h in &plan {
            let (smb, winrm_only) = class(h);
            match (h.scenario.winrm, h.scenario.kind) {
                (WinrmAvailability::Closed, ScenarioKind::Infected) => {
                    assert_eq!((smb, winrm_only), ("detected", "unreachable"), "{}", h.name)
                }
                (WinrmAvailability::Closed, ScenarioKind::Clean) => {
                    assert_eq!(
                        (smb, winrm_only),
                        ("not_detected", "unreachable"),
                        "{}",
                        h.name
                    )
                }
                (WinrmAvailability::Closed, k) => panic!("{}: no expectation for {k}", h.name),
                (WinrmAvailability::Open, _) => assert_eq!(smb, winrm_only, "{}", h.name),
            }
        }
        let count = |t: Transfer, c: &str| {
            plan.iter()
                .filter(|h| expected_class(&h.scenario, t) == c)
                .count()
        };
        assert_eq!(count(Transfer::Smb, "detected"), 5);
        assert_eq!(count(Transfer::Smb, "not_detected"), 5);
        assert_eq!(count(Transfer::Smb, "unreachable"), 1);
        assert_eq!(count(Transfer::WinrmOnly, "detected"), 4);
        assert_eq!(count(Transfer::WinrmOnly, "not_detected"), 4);
        assert_eq!(count(Transfer::WinrmOnly, "unreachable"), 3);
        assert_eq!(expected_exit_code(&plan, Transfer::Smb), exit::DETECTED);
        assert_eq!(
            expected_exit_code(&plan, Transfer::WinrmOnly),
            exit::DETECTED
        );
        // Without a detection, the closed hosts alone make the WinRM-only sweep incomplete.
        let clean_closed: Vec<HostPlan> = plan
            .iter()
            .filter(|h| {
                h.scenario.winrm == WinrmAvailability::Closed
                    && h.scenario.kind == ScenarioKind::Clean
            })
            .cloned()
            .collect();
        assert_eq!(expected_exit_code(&clean_closed, Transfer::Smb), exit::OK);
        assert_eq!(
            expected_exit_code(&clean_closed, Transfer::WinrmOnly),
            exit::INCOMPLETE
        );
    }

    #[test]
    fn the_demo_playbook_timeout_is_short() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pb.yml");
        fs::write(&p, fleet::playbook_yaml("00")).unwrap();
        set_timeout(&p).unwrap();
        let text = fs::read_to_string(&p).unwrap();
        assert!(text.contains("\ntimeout: 5s\n"), "{text}");
        assert!(!text.contains("2m"), "{text}");
    }
}
