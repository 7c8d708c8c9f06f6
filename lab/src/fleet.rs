//! The fleet: `up`, `down`, `status` and the background `serve` process of the lab.
//!
//! [`up`] plans the hosts from the spec, makes each host's `C:\` tree
//! (`<lab>/hosts/<ip>/C/...`), adds the SMB addresses to `lo`, starts ONE Samba `smbd` for the
//! fleet ([`crate::samba`]) and the WinRM simulator in a detached process
//! (`pushscan-lab serve --dir <lab>`, own session, log in `<lab>/log/serve.log`), waits until
//! every address listens, and writes `inventory.yml`, `lab.env` (mode 0600),
//! `emocheck-lab.exe` (the stand-in checker) with `emocheck-lab.yml` (its playbook, pinned),
//! and `lab.json` (the state: pids, addresses, ports). It returns a [`Lab`] whose `Drop` runs
//! [`down`] (tests); the CLI calls [`Lab::leave_running`].
//!
//! [`down`] stops everything the lab started, by pid (the processes recorded in `lab.json`
//! whose command line still matches, their whole process trees, and any process carrying the
//! lab's environment marker `PUSHSCAN_LAB_INSTANCE=<lab>` or its smbd config / serve command
//! line), checks that no lab address still listens on a lab port, removes the addresses it
//! added to `lo` and the runtime state, and keeps the host trees unless asked to purge. A lab
//! whose processes were killed (stale `lab.json`, stale pids) is cleaned the same way by the
//! next `up` before it starts anything.

pub mod sys;

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::samba::{self, SambaConfig, SambaPaths};
use crate::spec::{self, HostPlan, ScenarioKind, SmbEncryption, Spec, SvcctlMode};
use crate::svcctl;
use crate::wine::{self, WineHost, WineSetup};
use crate::winrm;

/// Environment variable naming the default lab directory.
pub const LAB_DIR_ENV: &str = "PUSHSCAN_LAB_DIR";
/// The default lab directory when neither `--dir` nor `$PUSHSCAN_LAB_DIR` is given.
pub const DEFAULT_LAB_DIR: &str = "lab-run";
/// Environment marker set on every process the lab starts (`<name>=<absolute lab dir>`);
/// their children inherit it, so `down` finds them even after a crash re-parented them.
pub const INSTANCE_ENV: &str = "PUSHSCAN_LAB_INSTANCE";
/// The stand-in checker, built into the binary (`playbooks/checkers/emocheck-sim.sh`).
pub const CHECKER_SCRIPT: &[u8] = pushscan_testkit::emocheck::SCRIPT_BYTES;
/// How long `up` waits for the WinRM simulator to listen everywhere.
pub const SERVE_READY_TIMEOUT: Duration = Duration::from_secs(60);

const STATE_FILE: &str = "lab.json";
const SERVE_PLAN_FILE: &str = "serve.json";
const LOCK_FILE: &str = ".lock";

/// `$PUSHSCAN_LAB_DIR`, else `./lab-run`.
pub fn default_dir() -> PathBuf {
    std::env::var_os(LAB_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_LAB_DIR))
}

/// How to start a lab.
#[derive(Clone, Debug)]
pub struct UpOptions {
    /// The lab directory (created if missing).
    pub dir: PathBuf,
    pub spec: Spec,
    /// Overrides `spec.hosts`.
    pub hosts: Option<usize>,
    /// Overrides `spec.smb.port`.
    pub smb_port: Option<u16>,
    /// Overrides `spec.winrm.http_port`.
    pub winrm_port: Option<u16>,
    /// The `pushscan-lab` executable run as `serve` (default: the running executable; tests
    /// pass `env!("CARGO_BIN_EXE_pushscan-lab")`).
    pub exe: PathBuf,
}

impl UpOptions {
    /// Options for `spec` in `dir`, the running executable as the serve process.
    pub fn new(dir: impl Into<PathBuf>, spec: Spec) -> UpOptions {
        UpOptions {
            dir: dir.into(),
            spec,
            hosts: None,
            smb_port: None,
            winrm_port: None,
            exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("pushscan-lab")),
        }
    }
}

/// One host of a running lab.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LabHost {
    pub name: String,
    pub address: Ipv4Addr,
    pub ou: String,
    /// Inventory groups besides `windows` and `ou_<ou>`.
    pub groups: Vec<String>,
    pub scenario: ScenarioKind,
    /// Whether SMB / WinRM answer on the address.
    pub smb: bool,
    pub winrm: bool,
    /// What its `\\PIPE\\svcctl` does (served, denied, missing).
    #[serde(default)]
    pub svcctl: SvcctlMode,
    /// The host's `C:\` (`<lab>/hosts/<ip>/C`).
    pub root: PathBuf,
    /// The switches the simulator passes to the stand-in checker.
    pub checker_args: Vec<String>,
    /// Latency added to WinRM answers, in ms.
    pub latency_ms: u64,
    /// A Wine-backed host (`docs/lab-wine.md`): its prefix, user, malware, wineserver.
    #[serde(default)]
    pub wine: Option<WineHost>,
}

/// `lab.json`: what a running lab consists of.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabState {
    pub version: u32,
    pub dir: PathBuf,
    /// Seconds since the epoch when `up` finished.
    pub started: u64,
    pub smbd_pid: Option<u32>,
    /// samba-dcerpcd, which serves every pipe but svcctl behind smbd.
    #[serde(default)]
    pub dcerpcd_pid: Option<u32>,
    pub serve_pid: Option<u32>,
    pub smbd_conf: PathBuf,
    pub smb_port: u16,
    pub smb_encryption: SmbEncryption,
    pub winrm_http_port: u16,
    pub winrm_https_port: Option<u16>,
    pub username: String,
    /// Addresses `up` added to `lo` (removed again by `down`).
    pub added_addresses: Vec<Ipv4Addr>,
    pub hosts: Vec<LabHost>,
    /// Wine's programs, the lab's compiled Windows programs and the template prefix (when the
    /// fleet has Wine hosts).
    #[serde(default)]
    pub wine: Option<WineSetup>,
}

impl LabState {
    /// Addresses that serve SMB.
    pub fn smb_addresses(&self) -> Vec<Ipv4Addr> {
        self.hosts
            .iter()
            .filter(|h| h.smb)
            .map(|h| h.address)
            .collect()
    }

    /// Addresses that serve WinRM.
    pub fn winrm_addresses(&self) -> Vec<Ipv4Addr> {
        self.hosts
            .iter()
            .filter(|h| h.winrm)
            .map(|h| h.address)
            .collect()
    }

    /// Every `address:port` the lab listens on when it runs.
    pub fn sockets(&self) -> Vec<SocketAddrV4> {
        let mut out = Vec::new();
        for ip in self.smb_addresses() {
            out.push(SocketAddrV4::new(ip, self.smb_port));
        }
        for ip in self.winrm_addresses() {
            out.push(SocketAddrV4::new(ip, self.winrm_http_port));
            if let Some(p) = self.winrm_https_port {
                out.push(SocketAddrV4::new(ip, p));
            }
        }
        out
    }

    fn save(&self, dir: &Path) -> Result<()> {
        write_private(
            &dir.join(STATE_FILE),
            serde_json::to_string_pretty(self)?.as_bytes(),
        )
    }

    /// Reads `<dir>/lab.json` (None when there is none).
    pub fn load(dir: &Path) -> Result<Option<LabState>> {
        let path = dir.join(STATE_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .with_context(|| format!("{} is not a lab state file", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }
}

/// What the serve process runs (`serve.json`, mode 0600: it holds the passwords).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServePlan {
    pub http_port: u16,
    pub https_port: Option<u16>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub allow_basic_over_http: bool,
    pub max_shells_per_user: usize,
    pub max_processes_per_shell: usize,
    pub idle_timeout_secs: u64,
    pub hosts: Vec<ServeHost>,
    /// RStartServiceW's wait for a service process (spec `svcctl.start_timeout_ms`).
    #[serde(default = "default_start_timeout_ms")]
    pub svcctl_start_timeout_ms: u64,
}

fn default_start_timeout_ms() -> u64 {
    crate::svcctl::DEFAULT_START_TIMEOUT_MS
}

/// One host of the serve plan (see `winrm::SimHost`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServeHost {
    pub name: String,
    pub address: Ipv4Addr,
    pub root: PathBuf,
    pub checker_args: Vec<String>,
    pub username: String,
    pub password: String,
    pub latency_ms: u64,
    pub enabled: bool,
    /// A Wine host: how the simulator runs its commands.
    #[serde(default)]
    pub wine: Option<winrm::wine::WineExec>,
    /// SMB (and so svcctl) is served on the address.
    #[serde(default)]
    pub smb: bool,
    #[serde(default)]
    pub svcctl: SvcctlMode,
}

impl ServePlan {
    /// The svcctl endpoint's configuration for the lab in `dir`: every host that serves
    /// SMB, running service processes the way the WinRM simulator runs commands.
    pub fn svcctl_config(&self, dir: &Path) -> Result<svcctl::Config> {
        let sim = self.server_config();
        let limits = winrm::shell::Limits {
            max_shells_per_user: sim.max_shells_per_user,
            max_processes_per_shell: sim.max_processes_per_shell,
            idle_timeout: sim.idle_timeout,
        };
        let mut hosts = Vec::new();
        for (plan, h) in self.hosts.iter().zip(sim.hosts) {
            if !plan.smb {
                continue;
            }
            let name = h.name.clone();
            let exec = winrm::shell::HostState::new(h, limits.clone())
                .with_context(|| format!("host {name}: preparing its directory tree"))?;
            hosts.push(svcctl::SvcHost {
                address: plan.address,
                exec: std::sync::Arc::new(exec),
                mode: plan.svcctl,
                username: plan.username.clone(),
                password: plan.password.clone(),
            });
        }
        let paths = SambaPaths::new(dir);
        Ok(svcctl::Config {
            lab_dir: dir.to_path_buf(),
            socket_dir: paths.rpc,
            forward_dir: Some(paths.dcerpcd_np),
            hosts,
            start_timeout: Duration::from_millis(self.svcctl_start_timeout_ms),
        })
    }

    /// The simulator's configuration.
    pub fn server_config(&self) -> winrm::ServerConfig {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(winrm::TlsFiles {
                cert_pem: cert.clone(),
                key_pem: key.clone(),
            }),
            _ => None,
        };
        winrm::ServerConfig {
            hosts: self
                .hosts
                .iter()
                .map(|h| winrm::SimHost {
                    name: h.name.clone(),
                    address: h.address,
                    // The simulator's root holds the drive: its `C:\` is
                    // `root/C`, while `h.root` is the drive itself. (A Wine host's drive is
                    // its prefix's drive_c, reached through Wine; its root is the host
                    // directory.)
                    root: match &h.wine {
                        Some(w) => w
                            .prefix
                            .parent()
                            .map(Path::to_path_buf)
                            .unwrap_or_else(|| h.root.clone()),
                        None => h
                            .root
                            .parent()
                            .map(Path::to_path_buf)
                            .unwrap_or_else(|| h.root.clone()),
                    },
                    checker_args: h.checker_args.clone(),
                    username: h.username.clone(),
                    password: h.password.clone(),
                    latency: Duration::from_millis(h.latency_ms),
                    enabled: h.enabled,
                    wine: h.wine.clone(),
                })
                .collect(),
            http_port: self.http_port,
            https_port: self.https_port,
            tls,
            allow_basic_over_http: self.allow_basic_over_http,
            max_shells_per_user: self.max_shells_per_user,
            max_processes_per_shell: self.max_processes_per_shell,
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            // Windows' default: no plaintext SOAP over HTTP after auth.
            allow_unencrypted: false,
        }
    }
}

/// A running lab. Dropping it runs [`down`] (errors are printed to stderr), unless
/// [`Lab::leave_running`] was called.
#[derive(Debug)]
pub struct Lab {
    /// The lab directory (absolute).
    pub dir: PathBuf,
    pub state: LabState,
    /// The lab account and its password (as in `lab.env`).
    pub username: String,
    pub password: String,
    pub inventory: PathBuf,
    pub env_file: PathBuf,
    pub playbook: PathBuf,
    /// The stand-in checker `<lab>/emocheck-lab.exe` and its SHA-256 (hex).
    pub checker: PathBuf,
    pub checker_sha256: String,
    /// The HTTPS certificate (PEM) when the spec has an HTTPS port.
    pub tls_cert: Option<PathBuf>,
    /// With Wine hosts: the Windows build of the lab checker `<lab>/emocheck-wine.exe` and its
    /// playbook `<lab>/emocheck-wine.yml` (pinned), which a sweep of the Wine hosts uses.
    pub wine_checker: Option<PathBuf>,
    pub wine_playbook: Option<PathBuf>,
    /// How long `up` took.
    pub startup: Duration,
    armed: bool,
}

impl Lab {
    /// The hosts.
    pub fn hosts(&self) -> &[LabHost] {
        &self.state.hosts
    }

    /// The first host of a scenario kind.
    pub fn host_of(&self, kind: ScenarioKind) -> Option<&LabHost> {
        self.state.hosts.iter().find(|h| h.scenario == kind)
    }

    /// The first Wine host of a scenario kind.
    pub fn wine_host_of(&self, kind: ScenarioKind) -> Option<&LabHost> {
        self.state
            .hosts
            .iter()
            .find(|h| h.scenario == kind && h.wine.is_some())
    }

    pub fn smb_port(&self) -> u16 {
        self.state.smb_port
    }

    pub fn winrm_port(&self) -> u16 {
        self.state.winrm_http_port
    }

    /// Where a host's `ADMIN$` lives on this machine.
    pub fn admin_share_dir(&self, host: &LabHost) -> PathBuf {
        host.root.join("Windows")
    }

    /// Keeps the lab running after this handle is gone (the CLI's `up`).
    pub fn leave_running(mut self) -> LabState {
        self.armed = false;
        self.state.clone()
    }

    /// Stops the lab now (what `Drop` does), reporting errors.
    pub fn down(mut self) -> Result<DownReport> {
        self.armed = false;
        down(&self.dir, false)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = down(&self.dir, false) {
                eprintln!(
                    "pushscan-lab: stopping the lab in {}: {e:#}",
                    self.dir.display()
                );
            }
        }
    }
}

/// Starts a lab as described by `opts`; see the module doc. A lab already running (or
/// crashed) in the same directory is stopped first.
pub fn up(opts: UpOptions) -> Result<Lab> {
    let started = Instant::now();
    let mut spec = opts.spec.clone();
    if let Some(n) = opts.hosts {
        spec.hosts = n;
    }
    if let Some(p) = opts.smb_port {
        spec.smb.port = p;
    }
    if let Some(p) = opts.winrm_port {
        spec.winrm.http_port = p;
    }
    let plan = spec.plan().context("invalid lab spec")?;

    fs::create_dir_all(&opts.dir)
        .with_context(|| format!("cannot create the lab directory {}", opts.dir.display()))?;
    let dir = fs::canonicalize(&opts.dir)
        .with_context(|| format!("cannot resolve {}", opts.dir.display()))?;
    let _lock = sys::LockFile::acquire(&dir.join(LOCK_FILE))?;

    // Everything the lab needs, before anything is touched.
    for tool in ["smbd", "smbpasswd"] {
        samba::binary(tool)?;
    }
    let has_wine = plan.iter().any(|h| h.scenario.wine);
    let wine_tools = if has_wine {
        Some(wine::WineTools::find()?)
    } else {
        None
    };
    if !opts.exe.is_file() {
        bail!(
            "the pushscan-lab executable {} (run as the serve process) does not exist",
            opts.exe.display()
        );
    }

    if LabState::load(&dir)?.is_some() || !leftover_processes(&dir, None).is_empty() {
        eprintln!(
            "pushscan-lab: a previous lab in {} is still running or crashed: stopping it first",
            dir.display()
        );
        down_locked(&dir, false).context("cannot clean up the previous lab")?;
    }

    let password = match &spec.account.password {
        Some(p) => p.clone(),
        None => spec::generate_password()?,
    };
    let username = spec.account.username.clone();
    let hosts: Vec<LabHost> = plan.iter().map(|h| lab_host(&dir, h)).collect();
    let mut state = LabState {
        version: 1,
        dir: dir.clone(),
        started: 0,
        smbd_pid: None,
        dcerpcd_pid: None,
        serve_pid: None,
        smbd_conf: SambaPaths::new(&dir).conf,
        smb_port: spec.smb.port,
        smb_encryption: spec.smb.encryption,
        winrm_http_port: spec.winrm.http_port,
        winrm_https_port: spec.winrm.https_port,
        username: username.clone(),
        added_addresses: Vec::new(),
        hosts,
        wine: None,
    };

    // The Wine template and programs (cached; minutes at most the first time) before anything
    // starts, so a missing compiler fails `up` cleanly.
    if let Some(tools) = wine_tools {
        let cache = wine::cache_dir();
        let programs = wine::build_programs(&cache)?;
        let version = tools.version()?;
        let (template, took) = wine::template(&tools, &cache)?;
        state.wine = Some(WineSetup {
            tools,
            programs,
            version,
            template,
            template_secs: took.as_secs_f64(),
        });
    }

    // From here on a failure stops what was started.
    let result = start_all(&opts, &spec, &plan, &dir, &mut state, &password);
    match result {
        Ok((tls_cert, checker_sha256)) => {
            state.started = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            state.save(&dir)?;
            Ok(Lab {
                inventory: dir.join("inventory.yml"),
                env_file: dir.join("lab.env"),
                playbook: dir.join("emocheck-lab.yml"),
                checker: dir.join("emocheck-lab.exe"),
                checker_sha256,
                tls_cert,
                wine_checker: state.wine.as_ref().map(|_| dir.join(WINE_CHECKER)),
                wine_playbook: state.wine.as_ref().map(|_| dir.join(WINE_PLAYBOOK)),
                dir,
                state,
                username,
                password,
                startup: started.elapsed(),
                armed: true,
            })
        }
        Err(e) => {
            if let Err(cleanup) = down_locked(&dir, false) {
                eprintln!("pushscan-lab: cleaning up after a failed start: {cleanup:#}");
            }
            Err(e)
        }
    }
}

pub(crate) fn lab_host(dir: &Path, h: &HostPlan) -> LabHost {
    let wine = h.scenario.wine.then(|| {
        let host_dir = dir.join("hosts").join(h.address.to_string());
        WineHost {
            prefix: host_dir.join("wine"),
            user: wine::WINE_USER.to_string(),
            sid: None,
            malware: (h.scenario.kind == ScenarioKind::Infected)
                .then(|| wine::Malware::new(&h.scenario.wine_process(), wine::WINE_USER)),
            firewall_store: host_dir.join("firewall.json"),
            server_pid: None,
        }
    });
    LabHost {
        name: h.name.clone(),
        address: h.address,
        ou: h.ou.clone(),
        groups: h.groups.clone(),
        scenario: h.scenario.kind,
        smb: h.scenario.kind.serves_smb(),
        winrm: h.scenario.serves_winrm(),
        svcctl: h.scenario.svcctl,
        root: match &wine {
            Some(w) => w.prefix.join("drive_c"),
            None => host_root(dir, h.address),
        },
        // The Windows checker finds for itself; the stand-in's switches are for sh hosts.
        checker_args: if wine.is_some() {
            Vec::new()
        } else {
            h.scenario.checker_args(&h.name)
        },
        latency_ms: h.scenario.latency().as_millis() as u64,
        wine,
    }
}

/// The Windows build of the lab checker and its playbook, in the lab directory.
pub const WINE_CHECKER: &str = "emocheck-wine.exe";
pub const WINE_PLAYBOOK: &str = "emocheck-wine.yml";

/// `<lab>/hosts/<ip>/C`.
pub fn host_root(dir: &Path, ip: Ipv4Addr) -> PathBuf {
    dir.join("hosts").join(ip.to_string()).join("C")
}

/// The steps of `up` that start things; `state` is saved after each start so a failure (or
/// a crash) can be cleaned up.
fn start_all(
    opts: &UpOptions,
    spec: &Spec,
    plan: &[HostPlan],
    dir: &Path,
    state: &mut LabState,
    password: &str,
) -> Result<(Option<PathBuf>, String)> {
    let (uid, gid) = ensure_user(&state.username)?;
    let native: Vec<HostPlan> = plan.iter().filter(|h| !h.scenario.wine).cloned().collect();
    make_host_trees(dir, &native, &state.username, uid, gid)?;
    if let Some(setup) = &state.wine {
        // A fresh prefix per host at every `up` (a previous lab's prefix is replaced).
        for h in state.hosts.iter().filter_map(|h| h.wine.as_ref()) {
            remove_path(&h.prefix)?;
            remove_path(&h.firewall_store)?;
            if let Some(parent) = h.prefix.parent() {
                fs::create_dir_all(parent.join("run"))
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            wine::clone_prefix(&setup.template, &h.prefix)?;
        }
    }

    // Samba binds only addresses an interface carries.
    let smb_addresses = state.smb_addresses();
    let present = sys::lo_addresses()?;
    let to_add: Vec<Ipv4Addr> = smb_addresses
        .iter()
        .copied()
        .filter(|a| !present.contains(a))
        .collect();
    state.added_addresses = to_add.clone();
    state.save(dir)?;
    sys::add_lo_addresses(&to_add)?;

    samba::check_port_free(
        &smb_addresses,
        state.smb_port,
        "the SMB",
        "--smb-port / smb.port",
    )?;
    let winrm_addresses = state.winrm_addresses();
    for port in [Some(state.winrm_http_port), state.winrm_https_port]
        .into_iter()
        .flatten()
    {
        samba::check_port_free(
            &winrm_addresses,
            port,
            "the WinRM",
            "--winrm-port / winrm.http_port / winrm.https_port",
        )?;
    }

    // SMB.
    let wrong_password: Vec<Ipv4Addr> = state
        .hosts
        .iter()
        .filter(|h| h.smb && h.scenario == ScenarioKind::WrongPassword)
        .map(|h| h.address)
        .collect();
    let samba_cfg = SambaConfig {
        lab_dir: dir.to_path_buf(),
        addresses: smb_addresses,
        wrong_password,
        port: state.smb_port,
        encryption: spec.smb.encryption,
        username: state.username.clone(),
        wine_drives: state
            .hosts
            .iter()
            .filter(|h| h.smb)
            .filter_map(|h| {
                h.wine
                    .as_ref()
                    .map(|w| (h.address, w.prefix.join("drive_c")))
            })
            .collect(),
    };
    let paths = samba::write_config(&samba_cfg)?;
    samba::set_password(&paths, &state.username, password)?;
    let marker_env = [(INSTANCE_ENV, dir.to_str().unwrap_or_default())];
    let smbd = samba::start(&samba_cfg, &paths, &marker_env)?;
    state.smbd_pid = Some(smbd.pid);
    state.save(dir)?;
    state.dcerpcd_pid = Some(samba::start_dcerpcd(&paths, &marker_env)?);
    state.save(dir)?;

    // Wine hosts: wineservers, services, computer names, malware (before the simulator, which
    // runs commands in the prefixes).
    start_wine_hosts(dir, state)?;

    // WinRM.
    let tls = match state.winrm_https_port {
        Some(_) => Some(make_tls(dir, &winrm_addresses)?),
        None => None,
    };
    let serve_plan = ServePlan {
        http_port: state.winrm_http_port,
        https_port: state.winrm_https_port,
        tls_cert: tls.as_ref().map(|t| t.0.clone()),
        tls_key: tls.as_ref().map(|t| t.1.clone()),
        allow_basic_over_http: spec.winrm.allow_basic_over_http,
        max_shells_per_user: spec.winrm.max_shells_per_user,
        max_processes_per_shell: spec.winrm.max_processes_per_shell,
        idle_timeout_secs: spec.winrm.idle_timeout_secs,
        hosts: state
            .hosts
            .iter()
            .map(|h| ServeHost {
                name: h.name.clone(),
                address: h.address,
                root: h.root.clone(),
                checker_args: h.checker_args.clone(),
                username: state.username.clone(),
                password: if h.scenario == ScenarioKind::WrongPassword {
                    format!("{password}-but-not-on-this-host")
                } else {
                    password.to_string()
                },
                latency_ms: h.latency_ms,
                enabled: h.winrm,
                wine: match (&state.wine, &h.wine) {
                    (Some(setup), Some(w)) => Some(wine::exec_for(setup, w, dir)),
                    _ => None,
                },
                smb: h.smb,
                svcctl: h.svcctl,
            })
            .collect(),
        svcctl_start_timeout_ms: spec.svcctl.start_timeout_ms,
    };
    write_private(
        &dir.join(SERVE_PLAN_FILE),
        serde_json::to_string_pretty(&serve_plan)?.as_bytes(),
    )?;
    let serve_log = dir.join("log").join("serve.log");
    let _ = fs::remove_file(&serve_log);
    let mut cmd = Command::new(&opts.exe);
    cmd.arg("serve")
        .arg("--dir")
        .arg(dir)
        .env(INSTANCE_ENV, dir);
    let serve_pid = sys::spawn_detached(cmd, &serve_log)
        .with_context(|| format!("cannot start {} serve", opts.exe.display()))?;
    state.serve_pid = Some(serve_pid);
    state.save(dir)?;
    wait_serving(serve_pid, &winrm_addresses, state, &serve_log)?;

    // Files for pushscan.
    let checker = dir.join("emocheck-lab.exe");
    fs::write(&checker, CHECKER_SCRIPT)
        .with_context(|| format!("cannot write {}", checker.display()))?;
    fs::set_permissions(&checker, fs::Permissions::from_mode(0o755))?;
    let sha = hex::encode(Sha256::digest(CHECKER_SCRIPT));
    write_file(
        &dir.join("emocheck-lab.yml"),
        playbook_yaml(&sha).as_bytes(),
    )?;
    if let Some(setup) = &state.wine {
        let bytes = fs::read(&setup.programs.checker)
            .with_context(|| format!("cannot read {}", setup.programs.checker.display()))?;
        let path = dir.join(WINE_CHECKER);
        fs::write(&path, &bytes).with_context(|| format!("cannot write {}", path.display()))?;
        let sha = hex::encode(Sha256::digest(&bytes));
        write_file(
            &dir.join(WINE_PLAYBOOK),
            wine_playbook_yaml(&sha).as_bytes(),
        )?;
    }
    write_file(&dir.join("inventory.yml"), inventory_yaml(state).as_bytes())?;
    write_private(
        &dir.join("lab.env"),
        format!(
            "# The pushscan lab account (written by pushscan-lab up; a wrong_password host \
             refuses it).\nPUSHSCAN_USER={}\nPUSHSCAN_PASSWORD={}\n",
            shell_quote(&state.username),
            shell_quote(password)
        )
        .as_bytes(),
    )?;
    Ok((tls.map(|t| t.0), sha))
}

/// Starts every Wine host (in parallel, one thread each: most of the time is Wine booting a
/// prefix), recording the wineserver and malware pids in `state` (saved).
fn start_wine_hosts(dir: &Path, state: &mut LabState) -> Result<()> {
    let Some(setup) = state.wine.clone() else {
        return Ok(());
    };
    let log_dir = dir.join("log");
    fs::create_dir_all(&log_dir).with_context(|| format!("cannot create {}", log_dir.display()))?;
    let jobs: Vec<(usize, String, Ipv4Addr, WineHost)> = state
        .hosts
        .iter()
        .enumerate()
        .filter_map(|(i, h)| h.wine.clone().map(|w| (i, h.name.clone(), h.address, w)))
        .collect();
    let results: Vec<(usize, Result<wine::Started>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|(i, name, address, w)| {
                let setup = &setup;
                let log = log_dir.join(format!("wine-{address}.log"));
                (
                    *i,
                    scope.spawn(move || {
                        wine::start_host(
                            &setup.tools,
                            &setup.programs,
                            &w.prefix,
                            name,
                            w.malware.as_ref(),
                            (INSTANCE_ENV, dir),
                            &log,
                        )
                        .with_context(|| format!("Wine host {name} ({address})"))
                    }),
                )
            })
            .collect();
        handles
            .into_iter()
            .map(|(i, h)| {
                (
                    i,
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("starting a Wine host panicked"))),
                )
            })
            .collect()
    });
    let mut first_error = None;
    for (i, r) in results {
        match r {
            Ok(started) => {
                if let Some(w) = state.hosts[i].wine.as_mut() {
                    w.server_pid = Some(started.server_pid);
                    w.sid = started.sid;
                    if started.malware.is_some() {
                        w.malware = started.malware;
                    }
                }
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    state.save(dir)?;
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The system account, created if missing; serialized within this process (parallel tests).
fn ensure_user(username: &str) -> Result<(u32, u32)> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut last = None;
    for _ in 0..5 {
        match samba::ensure_system_user(username) {
            Ok(ids) => return Ok(ids),
            Err(e) => {
                // useradd fails while another process holds /etc/passwd's lock: retry.
                last = Some(e);
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("cannot create the lab account")))
}

/// Creates each host's `C:\` skeleton (existing content is kept) and hands it to the lab
/// account.
pub(crate) fn make_host_trees(
    dir: &Path,
    plan: &[HostPlan],
    username: &str,
    uid: u32,
    gid: u32,
) -> Result<()> {
    let hosts_dir = dir.join("hosts");
    fs::create_dir_all(&hosts_dir)
        .with_context(|| format!("cannot create {}", hosts_dir.display()))?;
    for h in plan {
        let c = host_root(dir, h.address);
        let mut dirs = vec![
            c.join("Windows").join("Temp"),
            c.join("Windows").join("System32"),
            c.join("Users").join("Public"),
            c.join("Users")
                .join(username)
                .join("AppData")
                .join("Local")
                .join("Temp"),
            c.join("ProgramData"),
            c.join("Program Files"),
        ];
        if h.scenario.arch == crate::spec::Arch::X64 {
            dirs.push(c.join("Windows").join("SysWOW64"));
        }
        let image = (h.scenario.kind == ScenarioKind::Infected)
            .then(|| {
                h.scenario
                    .image
                    .as_deref()
                    .and_then(|p| windows_to_host(&c, p))
            })
            .flatten();
        if let Some(parent) = image.as_ref().and_then(|p| p.parent()) {
            dirs.push(parent.to_path_buf());
        }
        for d in &dirs {
            fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        if let Some(image) = image {
            // The "malware" the checker reports: a file at its image path, as on the host.
            if !image.exists() {
                fs::write(&image, b"MZ pushscan lab: not a program\r\n")
                    .with_context(|| format!("cannot write {}", image.display()))?;
            }
        }
        chown_tree(c.parent().unwrap_or(&c), uid, gid)?;
    }
    Ok(())
}

/// `C:\a\b` -> `<c>/a/b` (other drives and relative paths: None).
fn windows_to_host(c: &Path, path: &str) -> Option<PathBuf> {
    let rest = path
        .strip_prefix("C:\\")
        .or_else(|| path.strip_prefix("c:\\"))?;
    let mut out = c.to_path_buf();
    for part in rest.split('\\').filter(|p| !p.is_empty()) {
        if part == ".." || part == "." || part.contains('/') {
            return None;
        }
        out.push(part);
    }
    Some(out)
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .with_context(|| format!("cannot chown {}", path.display()))?;
    let meta = fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for entry in
            fs::read_dir(path).with_context(|| format!("cannot list {}", path.display()))?
        {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// A self-signed certificate (EC P-256) for every WinRM address; returns (cert, key).
fn make_tls(dir: &Path, addresses: &[Ipv4Addr]) -> Result<(PathBuf, PathBuf)> {
    let tls_dir = dir.join("tls");
    fs::create_dir_all(&tls_dir).with_context(|| format!("cannot create {}", tls_dir.display()))?;
    let cert = tls_dir.join("cert.pem");
    let key = tls_dir.join("key.pem");
    let openssl = sys::find_binary("openssl")
        .context(
            "`openssl` not found (it makes the HTTPS certificate): install it with `apt-get update && apt-get install -y --no-install-recommends openssl`",
        )?;
    let mut san: Vec<String> = vec!["DNS:localhost".into()];
    san.extend(addresses.iter().map(|a| format!("IP:{a}")));
    let out = Command::new(&openssl)
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "3650",
            "-subj",
            "/CN=pushscan-lab",
        ])
        .arg("-addext")
        .arg(format!("subjectAltName={}", san.join(",")))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", openssl.display()))?;
    if !out.status.success() {
        bail!(
            "openssl could not make the lab's HTTPS certificate: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600))?;
    Ok((cert, key))
}

/// Waits until the serve process listens on every WinRM socket and the first and last
/// address accept a connection.
fn wait_serving(pid: u32, addresses: &[Ipv4Addr], state: &LabState, log: &Path) -> Result<()> {
    let ports: Vec<u16> = [Some(state.winrm_http_port), state.winrm_https_port]
        .into_iter()
        .flatten()
        .collect();
    let deadline = Instant::now() + SERVE_READY_TIMEOUT;
    loop {
        if !sys::alive(pid) {
            bail!(
                "the WinRM simulator (pid {pid}) exited while starting; {}:\n{}",
                log.display(),
                sys::tail(log, 30)
            );
        }
        let listening = sys::listening_v4();
        let all = addresses.iter().all(|ip| {
            ports
                .iter()
                .all(|p| listening.contains(&SocketAddrV4::new(*ip, *p)))
        });
        let probe = |ip: Option<&Ipv4Addr>| ip.is_none_or(|ip| sys::accepts(*ip, ports[0]));
        if all && probe(addresses.first()) && probe(addresses.last()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the WinRM simulator (pid {pid}) did not listen on all {} addresses (ports \
                 {ports:?}) within {:?}; {}:\n{}",
                addresses.len(),
                SERVE_READY_TIMEOUT,
                log.display(),
                sys::tail(log, 30)
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// What `down` did.
#[derive(Clone, Debug, Default)]
pub struct DownReport {
    /// Pids that were running and were stopped.
    pub killed: Vec<u32>,
    /// Addresses removed from `lo`.
    pub removed_addresses: usize,
    /// Whether the host trees and every lab file were removed (`--purge`).
    pub purged: bool,
}

impl fmt::Display for DownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stopped {} process(es), removed {} loopback address(es){}",
            self.killed.len(),
            self.removed_addresses,
            if self.purged {
                ", purged the lab directory"
            } else {
                ""
            }
        )
    }
}

/// Stops the lab in `dir` (see the module doc). `purge` also removes the host trees and every
/// file the lab wrote. Stopping a lab that is not running is not an error.
pub fn down(dir: &Path, purge: bool) -> Result<DownReport> {
    if !dir.exists() {
        return Ok(DownReport::default());
    }
    let dir = fs::canonicalize(dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
    let _lock = sys::LockFile::acquire(&dir.join(LOCK_FILE))?;
    down_locked(&dir, purge)
}

/// Processes that belong to the lab in `dir`: the recorded pids whose command line still
/// matches (a pid may have been reused), and any process carrying the lab's marker or its
/// smbd config / serve command line.
fn leftover_processes(dir: &Path, state: Option<&LabState>) -> Vec<u32> {
    let belongs = |pid: u32| belongs_to_lab(dir, pid);
    let mut out: Vec<u32> = Vec::new();
    if let Some(state) = state {
        out.extend(
            [state.smbd_pid, state.dcerpcd_pid, state.serve_pid]
                .into_iter()
                .flatten()
                .filter(|&p| belongs(p)),
        );
        for w in state.hosts.iter().filter_map(|h| h.wine.as_ref()) {
            let malware = w.malware.as_ref().and_then(|m| m.linux_pid);
            out.extend(
                [w.server_pid, malware]
                    .into_iter()
                    .flatten()
                    .filter(|&p| belongs(p) && !out.contains(&p))
                    .collect::<Vec<_>>(),
            );
        }
    }
    for pid in sys::all_pids() {
        if !out.contains(&pid) && belongs(pid) {
            out.push(pid);
        }
    }
    out
}

/// Whether live process `pid` is one of the lab's in `dir`: its smbd (by config path), its
/// serve process (by command line), or anything carrying its environment marker.
fn belongs_to_lab(dir: &Path, pid: u32) -> bool {
    if pid == std::process::id() || !sys::alive(pid) {
        return false;
    }
    let Some(args) = sys::cmdline(pid) else {
        return false;
    };
    let conf = SambaPaths::new(dir).conf;
    let conf = conf.to_string_lossy();
    let dir_text = dir.to_string_lossy();
    let smbd = args.iter().any(|a| *a == conf);
    let serve = args.iter().any(|a| a == "serve")
        && args.windows(2).any(|w| w[0] == "--dir" && w[1] == dir_text);
    smbd || serve || sys::environ_has(pid, &format!("{INSTANCE_ENV}={dir_text}"))
}

fn down_locked(dir: &Path, purge: bool) -> Result<DownReport> {
    let state = match LabState::load(dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pushscan-lab: {e:#}: stopping what can be found without it");
            None
        }
    };
    let mut report = DownReport::default();

    // Wine hosts first: `wineserver -k` ends every Windows process of a prefix the way Wine
    // does; the sweep below kills whatever is left by pid.
    if let Some(state) = &state {
        if let Some(setup) = &state.wine {
            for w in state.hosts.iter().filter_map(|h| h.wine.as_ref()) {
                wine::stop_host(&setup.tools, &w.prefix, w.server_pid);
            }
        }
    }

    // Kill: recorded roots first (their trees), then anything else marked as ours.
    for round in 0..3 {
        let procs = leftover_processes(dir, state.as_ref());
        if procs.is_empty() {
            break;
        }
        report.killed.extend(procs.iter().copied());
        let left = sys::kill_tree(&procs, Duration::from_secs(5));
        if round == 2 && !left.is_empty() {
            bail!("processes of the lab survive SIGKILL: {left:?}");
        }
    }
    report.killed.sort_unstable();
    report.killed.dedup();

    if let Some(state) = &state {
        // Nothing of the lab may still listen on a lab socket. A socket held by a process
        // that is not the lab's (say, a system smbd on 0.0.0.0 is not in this list, but a
        // service on one of the lab's addresses would be) is reported, not fought over.
        let sockets = state.sockets();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let listening = sys::listening_v4_inodes();
            let left: Vec<(SocketAddrV4, u64)> = sockets
                .iter()
                .filter_map(|s| listening.get(s).map(|inode| (*s, *inode)))
                .collect();
            let inodes: HashSet<u64> = left.iter().map(|(_, i)| *i).collect();
            let owners = sys::socket_owners(&inodes);
            let mut ours = Vec::new();
            let mut foreign = Vec::new();
            for (socket, inode) in &left {
                let pids = owners.get(inode).cloned().unwrap_or_default();
                if !pids.is_empty() && pids.iter().all(|p| !belongs_to_lab(dir, *p)) {
                    foreign.push(format!("{socket} (pid {pids:?}, not the lab's)"));
                } else {
                    ours.push(format!("{socket} (pid {pids:?})"));
                }
            }
            if ours.is_empty() {
                if !foreign.is_empty() {
                    eprintln!(
                        "pushscan-lab: note: lab addresses/ports held by other programs: {}",
                        foreign.join(", ")
                    );
                }
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "lab sockets still listen after every lab process was stopped: {}",
                    ours.join(", ")
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        sys::remove_lo_addresses(&state.added_addresses)?;
        report.removed_addresses = state.added_addresses.len();
    }

    // State (the config, passdb, logs, lab.env and host trees stay).
    let paths = SambaPaths::new(dir);
    for d in paths.runtime_dirs() {
        remove_path(d)?;
    }
    remove_path(&paths.rpc)?;
    remove_path(&dir.join(SERVE_PLAN_FILE))?;
    remove_path(&dir.join(STATE_FILE))?;
    if purge {
        for name in [
            "hosts",
            "samba",
            "log",
            "tls",
            "inventory.yml",
            "lab.env",
            "emocheck-lab.yml",
            "emocheck-lab.exe",
            WINE_CHECKER,
            WINE_PLAYBOOK,
            LOCK_FILE,
        ] {
            remove_path(&dir.join(name))?;
        }
        let _ = fs::remove_dir(dir); // only if now empty
        report.purged = true;
    }
    Ok(report)
}

fn remove_path(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            fs::remove_dir_all(path).with_context(|| format!("cannot remove {}", path.display()))
        }
        Ok(_) => fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display())),
        Err(_) => Ok(()),
    }
}

/// The state of a lab directory.
#[derive(Clone, Debug)]
pub struct Status {
    pub dir: PathBuf,
    pub state: Option<LabState>,
    pub smbd_alive: bool,
    pub serve_alive: bool,
    /// Resident memory of the serve process (KiB).
    pub serve_rss_kib: Option<u64>,
    /// Listening SMB / WinRM sockets out of the expected ones.
    pub smb_listening: (usize, usize),
    pub winrm_listening: (usize, usize),
    /// Wine hosts whose wineserver runs, out of the Wine hosts.
    pub wineservers_alive: (usize, usize),
}

impl Status {
    /// Everything the lab started is up.
    pub fn running(&self) -> bool {
        self.state.is_some()
            && self.smbd_alive
            && self.serve_alive
            && self.smb_listening.0 == self.smb_listening.1
            && self.winrm_listening.0 == self.winrm_listening.1
            && self.wineservers_alive.0 == self.wineservers_alive.1
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(state) = &self.state else {
            return writeln!(f, "no lab in {} (no lab.json)", self.dir.display());
        };
        let pid = |p: Option<u32>, alive: bool| match p {
            Some(p) if alive => format!("pid {p}, running"),
            Some(p) => format!("pid {p}, NOT running"),
            None => "not started".to_string(),
        };
        writeln!(
            f,
            "lab {}: {}",
            self.dir.display(),
            if self.running() {
                "running"
            } else {
                "DEGRADED"
            }
        )?;
        writeln!(f, "  hosts: {}", state.hosts.len())?;
        writeln!(
            f,
            "  smbd: {}; SMB port {} listening on {}/{} addresses; encryption {}",
            pid(state.smbd_pid, self.smbd_alive),
            state.smb_port,
            self.smb_listening.0,
            self.smb_listening.1,
            state.smb_encryption.as_str()
        )?;
        writeln!(
            f,
            "  WinRM simulator: {}{}; ports {}{} listening {}/{}",
            pid(state.serve_pid, self.serve_alive),
            self.serve_rss_kib
                .map(|k| format!(", {} MiB resident", k / 1024))
                .unwrap_or_default(),
            state.winrm_http_port,
            state
                .winrm_https_port
                .map(|p| format!("+{p}"))
                .unwrap_or_default(),
            self.winrm_listening.0,
            self.winrm_listening.1
        )?;
        let mut counts: Vec<(ScenarioKind, usize)> = Vec::new();
        for h in &state.hosts {
            match counts.iter_mut().find(|(k, _)| *k == h.scenario) {
                Some((_, n)) => *n += 1,
                None => counts.push((h.scenario, 1)),
            }
        }
        let mix: Vec<String> = counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
        writeln!(f, "  scenarios: {}", mix.join(", "))?;
        if self.wineservers_alive.1 > 0 {
            writeln!(
                f,
                "  Wine hosts: {}, wineservers running {}/{}",
                self.wineservers_alive.1, self.wineservers_alive.0, self.wineservers_alive.1
            )?;
        }
        Ok(())
    }
}

/// The state of the lab in `dir`.
pub fn status(dir: &Path) -> Result<Status> {
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let state = LabState::load(&dir)?;
    let listening = sys::listening_v4();
    let mut st = Status {
        dir: dir.clone(),
        state: None,
        smbd_alive: false,
        serve_alive: false,
        serve_rss_kib: None,
        smb_listening: (0, 0),
        winrm_listening: (0, 0),
        wineservers_alive: (0, 0),
    };
    if let Some(state) = state {
        let alive = |p: Option<u32>| p.is_some_and(sys::alive);
        st.smbd_alive = alive(state.smbd_pid);
        st.serve_alive = alive(state.serve_pid);
        st.serve_rss_kib = state
            .serve_pid
            .filter(|_| st.serve_alive)
            .and_then(sys::rss_kib);
        let smb = state.smb_addresses();
        st.smb_listening = (
            smb.iter()
                .filter(|ip| listening.contains(&SocketAddrV4::new(**ip, state.smb_port)))
                .count(),
            smb.len(),
        );
        let winrm = state.winrm_addresses();
        st.winrm_listening = (
            winrm
                .iter()
                .filter(|ip| listening.contains(&SocketAddrV4::new(**ip, state.winrm_http_port)))
                .count(),
            winrm.len(),
        );
        let servers: Vec<Option<u32>> = state
            .hosts
            .iter()
            .filter_map(|h| h.wine.as_ref().map(|w| w.server_pid))
            .collect();
        st.wineservers_alive = (servers.iter().filter(|p| alive(**p)).count(), servers.len());
        st.state = Some(state);
    }
    Ok(st)
}

/// The serve process: runs the WinRM simulator and the svcctl endpoint (`crate::svcctl`) for
/// the lab in `dir` until SIGTERM/SIGINT.
pub fn serve(dir: &Path) -> Result<()> {
    let path = dir.join(SERVE_PLAN_FILE);
    let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let plan: ServePlan = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a serve plan", path.display()))?;
    let enabled = plan.hosts.iter().filter(|h| h.enabled).count();
    eprintln!(
        "pushscan-lab serve: pid {}, {} hosts ({enabled} with WinRM), ports {}{}",
        std::process::id(),
        plan.hosts.len(),
        plan.http_port,
        plan.https_port.map(|p| format!("+{p}")).unwrap_or_default()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot catch SIGTERM")?;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            eprintln!("pushscan-lab serve: stopping");
            let _ = tx.send(true);
        });
        let svcctl = plan.svcctl_config(dir);
        let winrm = start_winrm(plan.server_config(), rx.clone());
        let svcctl = async move {
            match svcctl {
                Ok(cfg) => svcctl::serve(cfg, rx)
                    .await
                    .context("the svcctl endpoint failed"),
                Err(e) => Err(e),
            }
        };
        // Either failing ends the serve process (`up` then reports it).
        tokio::try_join!(winrm, svcctl).map(|_| ())
    })
}

/// The one call into the WinRM simulator.
pub async fn start_winrm(
    cfg: winrm::ServerConfig,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    winrm::serve(cfg, shutdown)
        .await
        .context("the WinRM simulator failed")
}

/// Writes a file readable by its owner only (0600), replacing it.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    drop(f);
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// `'text'` for sh (a `'` becomes `'\''`).
pub(crate) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A YAML single-quoted scalar.
fn yaml_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The Ansible-style inventory of the fleet.
pub fn inventory_yaml(state: &LabState) -> String {
    let mut out = String::from(
        "# The pushscan lab fleet (written by pushscan-lab up). Credentials: lab.env.\n\
         # Groups: windows > ou_<ou> > hosts; each OU's extra groups list their hosts too.\n\
         # lab_scenario says what a host does (see lab/README.md).\n\
         all:\n  children:\n    windows:\n      vars:\n",
    );
    out.push_str("        ansible_connection: winrm\n");
    out.push_str(&format!(
        "        ansible_port: {}\n",
        state.winrm_http_port
    ));
    out.push_str("        ansible_winrm_transport: ntlm\n");
    out.push_str("        ansible_winrm_scheme: http\n");
    out.push_str(&format!("        pushscan_smb_port: {}\n", state.smb_port));
    out.push_str("      children:\n");
    let mut ous: Vec<&str> = Vec::new();
    for h in &state.hosts {
        if !ous.contains(&h.ou.as_str()) {
            ous.push(&h.ou);
        }
    }
    for ou in &ous {
        out.push_str(&format!(
            "        ou_{}:\n          vars:\n            ou: {}\n          hosts:\n",
            spec::group_name(ou),
            yaml_quote(ou)
        ));
        for h in state.hosts.iter().filter(|h| h.ou == *ou) {
            out.push_str(&format!(
                "            {}:\n              ansible_host: {}\n              ansible_port: {}\n\
                 \x20             ansible_connection: winrm\n              ou: {}\n\
                 \x20             lab_scenario: {}\n",
                yaml_quote(&h.name),
                h.address,
                state.winrm_http_port,
                yaml_quote(&h.ou),
                h.scenario
            ));
            if h.wine.is_some() {
                out.push_str("              lab_wine: true\n");
            }
        }
    }
    let mut groups: Vec<String> = Vec::new();
    for h in &state.hosts {
        for g in &h.groups {
            let g = spec::group_name(g);
            if !groups.contains(&g) {
                groups.push(g);
            }
        }
    }
    let taken: HashSet<String> = ous
        .iter()
        .map(|o| format!("ou_{}", spec::group_name(o)))
        .chain(["windows".to_string(), "all".to_string()])
        .collect();
    for g in groups.iter().filter(|g| !taken.contains(*g)) {
        out.push_str(&format!("    {g}:\n      hosts:\n"));
        for h in &state.hosts {
            if h.groups.iter().any(|x| spec::group_name(x) == *g) {
                out.push_str(&format!("        {}:\n", yaml_quote(&h.name)));
            }
        }
    }
    // The Wine hosts, for `--limit wine` with emocheck-wine.yml (unless an OU group took the
    // name).
    if state.hosts.iter().any(|h| h.wine.is_some())
        && !taken.contains("wine")
        && !groups.iter().any(|g| g == "wine")
    {
        out.push_str("    wine:\n      hosts:\n");
        for h in state.hosts.iter().filter(|h| h.wine.is_some()) {
            out.push_str(&format!("        {}:\n", yaml_quote(&h.name)));
        }
    }
    out
}

/// The EmoCheck playbook for the lab: the stand-in checker next to it, pinned.
pub fn playbook_yaml(sha256: &str) -> String {
    format!(
        "# EmoCheck on the pushscan lab's simulated Windows hosts (written by pushscan-lab up).\n\
         # The checker is the lab's stand-in (playbooks/checkers/emocheck-sim.sh), pinned below; the\n\
         # WinRM simulator runs it with each host's scenario switches appended.\n\
         name: EmoCheck (pushscan lab)\n\
         description: Find running Emotet with the EmoCheck stand-in on the lab fleet.\n\
         checker:\n\
         \x20 path: emocheck-lab.exe\n\
         \x20 sha256: \"{sha256}\"\n\
         \x20 platform: windows\n\
         \x20 remote_name: emocheck.exe\n\
         work_dir: 'C:\\Windows\\pushscan'\n\
         run_dir: 'C:\\Windows\\pushscan\\reports'\n\
         # Never run EmoCheck without arguments: it then waits for a key press.\n\
         args: [\"/quiet\", \"/json\", \"/output\", \"{{{{ run_dir }}}}\"]\n\
         timeout: 2m\n\
         results:\n\
         \x20 glob: \"*_emocheck.*\"\n\
         \x20 parser: emocheck\n\
         \x20 max_file_size: 1MiB\n\
         cleanup:\n\
         \x20 checker: false\n\
         \x20 results: false\n\
         \x20 dirs: false\n"
    )
}

/// The EmoCheck playbook for the lab's Wine hosts: the Windows build of the lab checker next to
/// it, pinned. Use it with `--limit wine` (the other hosts run the sh stand-in).
pub fn wine_playbook_yaml(sha256: &str) -> String {
    format!(
        "# EmoCheck on the pushscan lab's Wine hosts (written by pushscan-lab up).\n\
         # The checker is the Windows build of the lab checker (lab/wine/emocheck.c, mingw),\n\
         # pinned below; it runs in Wine and finds processes started from a Run value.\n\
         # Sweep with --limit wine: the other lab hosts need emocheck-lab.yml.\n\
         name: EmoCheck (pushscan lab, Wine hosts)\n\
         description: Find the lab's fake Emotet on Wine hosts with the Windows stand-in.\n\
         checker:\n\
         \x20 path: {WINE_CHECKER}\n\
         \x20 sha256: \"{sha256}\"\n\
         \x20 platform: windows\n\
         \x20 remote_name: emocheck.exe\n\
         work_dir: 'C:\\Windows\\pushscan'\n\
         run_dir: 'C:\\Windows\\pushscan\\reports'\n\
         # Never run EmoCheck without arguments: it then waits for a key press.\n\
         args: [\"/quiet\", \"/json\", \"/output\", \"{{{{ run_dir }}}}\"]\n\
         timeout: 2m\n\
         results:\n\
         \x20 glob: \"*_emocheck.*\"\n\
         \x20 parser: emocheck\n\
         \x20 max_file_size: 1MiB\n\
         cleanup:\n\
         \x20 checker: false\n\
         \x20 results: false\n\
         \x20 dirs: false\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_paths_map_into_the_tree() {
        let c = Path::new("/lab/hosts/127.0.10.1/C");
        assert_eq!(
            windows_to_host(c, r"C:\Users\鈴木\AppData\x.exe").unwrap(),
            c.join("Users/鈴木/AppData/x.exe")
        );
        assert!(windows_to_host(c, r"D:\x.exe").is_none());
        assert!(windows_to_host(c, r"C:\..\x.exe").is_none());
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
        assert_eq!(yaml_quote("a'b"), "'a''b'");
    }
}
