//! The lab's service control manager: MS-SCMR over `\PIPE\svcctl`, served behind the lab's
//! real smbd, so that a client can create, start and delete services on a lab host over SMB
//! alone (as PsExec, Impacket's `smbexec.py` and pushscan's SMB execution do on Windows).
//!
//! How a pipe gets here: smb.conf says `rpc start on demand helpers = no` and
//! `external_rpc_pipe:socket_dir = <lab>/samba/rpc`, so smbd connects to
//! `<lab>/samba/rpc/np/<pipe>` for every pipe a client opens on `IPC$`, sends the named
//! pipe auth handshake ([`npam`]: which address the client connected to, as whom) and then
//! passes the pipe's messages. `svcctl` is served here; every other pipe smbd asks for
//! (`srvsvc`, `wkssvc`, `lsarpc`, ...) is forwarded byte for byte, handshake included, to
//! the `samba-dcerpcd` the lab starts, so those keep Samba's own implementation.
//!
//! The host is the local address of the SMB connection. Per host:
//! * `<lab>/hosts/<ip>/svcctl.json`: the services (name, display name, binary path, type,
//!   start type, error control, state), written after every change; read with [`services`].
//! * `<lab>/hosts/<ip>/events.jsonl`: the System-log events Windows writes, one JSON object
//!   per line: `{"id":7045,"service":..,"image":..}` when a service is installed,
//!   `{"id":7009,"service":..,"timeout_ms":..}` when it did not answer the SCM in time and
//!   `{"id":7000,"service":..,"error":1053}` for the failed start; read with [`events`].
//!
//! DCE/RPC ([`rpc`]): bind and alter context with NDR20 (other transfer syntaxes are
//! rejected per context), fragments reassembled up to 256 KiB, responses fragmented to the
//! client's `max_recv_frag` (at most 4280), faults for unknown opnums (`nca_s_op_rng_error`)
//! and bad stubs (`RPC_X_BAD_STUB_DATA`). Authentication level none, or connect with NTLM
//! (what Impacket sends): the NTLMv2 response is checked against the host's account with
//! the WinRM simulator's acceptor, and a failed AUTH3 makes every call fault with access
//! denied. Higher levels and other authentication types get a bind nak.
//!
//! MS-SCMR opnums served: 0 RCloseServiceHandle, 1 RControlService (stop), 2
//! RDeleteService, 6 RQueryServiceStatus, 12 RCreateServiceW, 15 ROpenSCManagerW, 16
//! ROpenServiceW, 17 RQueryServiceConfigW, 19 RStartServiceW, with Windows' error codes: 5
//! access denied, 6 invalid handle, 122 insufficient buffer, 123 invalid name, 1053 start
//! timeout, 1056 already running, 1060 no such service, 1062 not active, 1072 marked for
//! delete, 1073 service exists. A deleted service stays (marked for delete) until its last
//! handle is closed, as on Windows.
//!
//! RStartServiceW runs the binary path as the service's process on the host
//! ([`crate::winrm::shell::HostState::start_service_process`]: the lab's cmd subset, or Wine's
//! real `cmd.exe` on a Wine host), detached. No lab program is a real service (none calls
//! `StartServiceCtrlDispatcher`), so, as Windows does with `cmd.exe` as a service, the call
//! returns 1053 when the process ends or when `svcctl.start_timeout_ms` passes (Windows: 30
//! s), and then the service's own process is killed; what it started with `start "" /b`
//! keeps running.
//!
//! Per host (spec `svcctl:`): `denied` answers ROpenSCManagerW with 5 (the account is not an
//! administrator of the host), `missing` fails the handshake with
//! `NT_STATUS_OBJECT_NAME_NOT_FOUND` (smbd then fails the pipe, as when the service is
//! absent).

pub mod npam;
pub mod rpc;
mod scm;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use crate::spec::SvcctlMode;
use crate::winrm::shell::HostState;

/// The lab's start timeout unless the spec says otherwise (Windows: 30 s).
pub const DEFAULT_START_TIMEOUT_MS: u64 = 1000;

/// One service of a host, as persisted in `svcctl.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceRecord {
    pub name: String,
    pub display_name: String,
    pub binary_path: String,
    pub service_type: u32,
    pub start_type: u32,
    pub error_control: u32,
    /// `stopped`, `start_pending` or `running`.
    pub state: String,
    /// Deleted while handles were open: gone once the last one is closed.
    #[serde(default)]
    pub marked_for_delete: bool,
}

/// One System-log event of a host (`events.jsonl`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Event {
    pub id: u32,
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<u32>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Db {
    services: Vec<ServiceRecord>,
}

/// `<lab>/hosts/<ip>`.
pub fn host_dir(lab_dir: &Path, ip: Ipv4Addr) -> PathBuf {
    lab_dir.join("hosts").join(ip.to_string())
}

/// Longest state or event file read back.
const MAX_STATE_FILE: u64 = 16 << 20;

fn read_bounded(path: &Path) -> Result<Option<Vec<u8>>> {
    use std::io::Read as _;
    match std::fs::File::open(path) {
        Ok(f) => {
            let mut buf = Vec::new();
            f.take(MAX_STATE_FILE)
                .read_to_end(&mut buf)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Ok(Some(buf))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The services of host `ip` of the lab in `lab_dir` (none when the host never had one).
pub fn services(lab_dir: &Path, ip: Ipv4Addr) -> Result<Vec<ServiceRecord>> {
    let path = host_dir(lab_dir, ip).join("svcctl.json");
    match read_bounded(&path)? {
        Some(b) => {
            let db: Db = serde_json::from_slice(&b)
                .with_context(|| format!("{} is not a service database", path.display()))?;
            Ok(db.services)
        }
        None => Ok(Vec::new()),
    }
}

/// The events written on host `ip`, oldest first.
pub fn events(lab_dir: &Path, ip: Ipv4Addr) -> Result<Vec<Event>> {
    let path = host_dir(lab_dir, ip).join("events.jsonl");
    let Some(b) = read_bounded(&path)? else {
        return Ok(Vec::new());
    };
    let text = String::from_utf8_lossy(&b);
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}:{}: not an event", path.display(), i + 1))
        })
        .collect()
}

/// One host the endpoint serves.
#[derive(Clone)]
pub struct SvcHost {
    pub address: Ipv4Addr,
    /// Where its processes run (its `C:` tree or Wine prefix).
    pub exec: Arc<HostState>,
    pub mode: SvcctlMode,
    /// The account connect-level NTLM is checked against.
    pub username: String,
    pub password: String,
}

/// What the endpoint serves.
#[derive(Clone)]
pub struct Config {
    pub lab_dir: PathBuf,
    /// `external_rpc_pipe:socket_dir` of the lab's smbd: sockets go to `<dir>/np/`.
    pub socket_dir: PathBuf,
    /// samba-dcerpcd's socket directory (`<ncalrpc dir>/np`): every other pipe goes there.
    pub forward_dir: Option<PathBuf>,
    pub hosts: Vec<SvcHost>,
    pub start_timeout: Duration,
}

/// The per-host state shared by every connection.
pub(crate) struct HostScm {
    pub host: SvcHost,
    pub dir: PathBuf,
    pub start_timeout: Duration,
    /// The service database; the lock is held across a whole call, as the SCM serialises
    /// changes to it.
    pub db: tokio::sync::Mutex<ScmDb>,
}

pub(crate) struct ScmDb {
    pub services: Vec<ServiceRecord>,
    /// Open handles per service name (lower case).
    pub open: HashMap<String, usize>,
    /// The process of each started service (lower-case name).
    pub processes: HashMap<String, Arc<crate::winrm::shell::Command>>,
}

impl HostScm {
    pub fn save(&self, db: &ScmDb) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let path = self.dir.join("svcctl.json");
        let tmp = self.dir.join("svcctl.json.tmp");
        let text = serde_json::to_vec_pretty(&Db {
            services: db.services.clone(),
        })?;
        std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
    }

    pub fn event(&self, e: &Event) -> Result<()> {
        use std::io::Write as _;
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let path = self.dir.join("events.jsonl");
        let mut line = serde_json::to_vec(e)?;
        line.push(b'\n');
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(&line))
            .with_context(|| format!("cannot append to {}", path.display()))
    }
}

/// Serves until `shutdown` turns true: the `svcctl` socket and one forwarding socket per
/// pipe samba-dcerpcd serves.
pub async fn serve(cfg: Config, mut shutdown: watch::Receiver<bool>) -> Result<()> {
    let np = cfg.socket_dir.join("np");
    std::fs::create_dir_all(&np).with_context(|| format!("cannot create {}", np.display()))?;
    let mut hosts: HashMap<Ipv4Addr, Arc<HostScm>> = HashMap::new();
    for h in &cfg.hosts {
        let dir = host_dir(&cfg.lab_dir, h.address);
        let services = services(&cfg.lab_dir, h.address)?;
        hosts.insert(
            h.address,
            Arc::new(HostScm {
                host: h.clone(),
                dir,
                start_timeout: cfg.start_timeout,
                db: tokio::sync::Mutex::new(ScmDb {
                    services,
                    open: HashMap::new(),
                    processes: HashMap::new(),
                }),
            }),
        );
    }
    let hosts = Arc::new(hosts);
    let mut tasks = tokio::task::JoinSet::new();
    let svcctl = bind(&np.join("svcctl"))?;
    {
        let hosts = Arc::clone(&hosts);
        tasks.spawn(async move {
            loop {
                let Ok((stream, _)) = svcctl.accept().await else {
                    continue;
                };
                let hosts = Arc::clone(&hosts);
                tokio::spawn(async move {
                    if let Err(e) = scm::connection(stream, hosts).await {
                        eprintln!("pushscan-lab svcctl: {e:#}");
                    }
                });
            }
        });
    }
    if let Some(fwd) = &cfg.forward_dir {
        for name in pipe_names(fwd)? {
            if name == "svcctl" {
                continue;
            }
            let listener = bind(&np.join(&name))?;
            let target = fwd.join(&name);
            tasks.spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let target = target.clone();
                    tokio::spawn(async move {
                        let _ = forward(stream, &target).await;
                    });
                }
            });
        }
    }
    loop {
        if *shutdown.borrow() || shutdown.changed().await.is_err() {
            break;
        }
    }
    tasks.shutdown().await;
    for h in hosts.values() {
        h.host.exec.delete_all();
    }
    Ok(())
}

fn bind(path: &Path) -> Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))
}

/// The pipe sockets in samba-dcerpcd's directory.
pub fn pipe_names(dir: &Path) -> Result<Vec<String>> {
    use std::os::unix::fs::FileTypeExt as _;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_socket() {
            if let Some(name) = entry.file_name().to_str() {
                out.push(name.to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

async fn forward(mut from: UnixStream, target: &Path) -> std::io::Result<()> {
    let mut to = UnixStream::connect(target).await?;
    tokio::io::copy_bidirectional(&mut from, &mut to).await?;
    Ok(())
}

/// The IPv4 address of a handshake's local address.
pub(crate) fn local_v4(a: &npam::PipeAuth) -> Option<Ipv4Addr> {
    match a.local_addr? {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    }
}
