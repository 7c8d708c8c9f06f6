//! The WinRM endpoint simulator: for every simulated Windows host, an HTTP
//! (5985) and optionally HTTPS (5986) listener on the host's loopback address
//! serving `/wsman` as Windows does (MS-WSMV / Windows Remote Shell), with
//! NTLMv2 (HTTP Negotiate) and message sealing, Basic where Windows would
//! allow it, Windows' quotas, and commands run for real on the host's
//! directory tree (`C:\` = `<root>/C`).
//!
//! Public face (used by `fleet` and the tests):
//!
//! ```text
//! let server = Server::bind(ServerConfig { hosts, ..ServerConfig::default() }).await?;
//! for e in server.endpoints() { /* host, address, tls */ }
//! server.run(shutdown_rx).await?;          // or: serve(cfg, shutdown_rx).await?
//! let tls = self_signed(dir, &[addr1, addr2])?;   // cert + key PEM for 5986
//! ```
//!
//! Which host a request is for is told by the local address of the accepted
//! socket. Only loopback addresses (127.0.0.0/8) are accepted. See the
//! submodules: [`soap`] (envelopes and faults), [`ntlm`] (NTLM acceptor and
//! sealing framing), [`http`] (connections and authentication), [`shell`]
//! (shells, commands, quotas, execution), [`cmd`] (Windows argument rules and
//! the `cmd` subset), [`paths`] (Windows paths mapped into the host tree).

pub mod acl;
pub mod cmd;
pub mod http;
pub mod ntlm;
pub mod paths;
pub mod shell;
pub mod soap;
pub mod wine;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use shell::{HostState, Limits};

/// One simulated Windows host as the WinRM simulator sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SimHost {
    /// Computer name (`hostname`, fault `Machine`, EmoCheck `/host`).
    pub name: String,
    /// Loopback address the host listens on (127.0.0.0/8 only).
    pub address: Ipv4Addr,
    /// Directory of the host: its `C:\` is `root/C` (created when missing).
    pub root: PathBuf,
    /// Arguments appended to every `.exe` run on this host (the fleet puts
    /// the stand-in checker's scenario switches here, e.g.
    /// `/scenario detected /host PC-1 /lang ja`).
    pub checker_args: Vec<String>,
    /// The local account WinRM accepts (compared case-insensitively).
    pub username: String,
    /// Its password.
    pub password: String,
    /// Added before every reply (a slow host).
    pub latency: Duration,
    /// False: nothing listens for this host (port closed / unreachable).
    pub enabled: bool,
    /// A Wine host: every command line runs through Wine's real `cmd.exe` in its prefix
    /// ([`wine`]); None: the simulator's own `cmd` subset on `root`.
    pub wine: Option<wine::WineExec>,
}

/// Certificate and private key (PEM files) of the HTTPS listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, PEM.
    pub cert_pem: PathBuf,
    /// Private key (PKCS#8, SEC1 or PKCS#1), PEM.
    pub key_pem: PathBuf,
}

/// Configuration of the whole simulator.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The hosts; those with `enabled == false` get no listener.
    pub hosts: Vec<SimHost>,
    /// HTTP port of every host (5985). 0: an ephemeral port per host, see
    /// [`Server::endpoints`].
    pub http_port: u16,
    /// HTTPS port of every host (5986), None for no HTTPS. 0: ephemeral.
    pub https_port: Option<u16>,
    /// Certificate of the HTTPS listeners (required with `https_port`).
    pub tls: Option<TlsFiles>,
    /// Accept Basic authentication over plain HTTP (Windows: Basic=true and
    /// AllowUnencrypted=true). Default false: Basic only over HTTPS.
    pub allow_basic_over_http: bool,
    /// Accept unsealed SOAP bodies after Negotiate on plain HTTP (Windows'
    /// AllowUnencrypted). Default false: such requests get a 401, as from a
    /// default Windows configuration.
    pub allow_unencrypted: bool,
    /// MaxShellsPerUser (Windows default 30).
    pub max_shells_per_user: usize,
    /// MaxProcessesPerShell (Windows default 25), counted as running commands.
    pub max_processes_per_shell: usize,
    /// Idle timeout of a shell (Windows default 2 hours); a client may ask
    /// for less with `rsp:IdleTimeOut`.
    pub idle_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            hosts: Vec::new(),
            http_port: 5985,
            https_port: None,
            tls: None,
            allow_basic_over_http: false,
            allow_unencrypted: false,
            max_shells_per_user: 30,
            max_processes_per_shell: 25,
            idle_timeout: Duration::from_secs(7200),
        }
    }
}

/// One listening socket of the simulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Name of the host it serves.
    pub host: String,
    /// Bound address (with the actual port).
    pub address: SocketAddr,
    /// HTTPS rather than HTTP.
    pub tls: bool,
}

/// Counters of one host (a snapshot).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Host name.
    pub host: String,
    /// HTTP requests received.
    pub requests: u64,
    /// Authentications refused.
    pub auth_failures: u64,
    /// NTLM AUTHENTICATE messages refused because they came on another
    /// connection than their NEGOTIATE (part of `auth_failures`).
    pub ntlm_split_legs: u64,
    /// Sealed (`multipart/encrypted`) bodies unsealed and served.
    pub sealed_requests: u64,
    /// Sealed bodies that came on a connection without an NTLM session
    /// (refused with 401; not counted in `auth_failures`, since no
    /// credentials were presented).
    pub sealed_without_session: u64,
    /// Receives answered with the `w:TimedOut` fault.
    pub receive_timeouts: u64,
    /// Shells created.
    pub shells_created: u64,
    /// Commands started.
    pub commands_started: u64,
    /// Shells open now.
    pub open_shells: usize,
}

/// Write a self-signed certificate (`winrm-cert.pem`) and its key
/// (`winrm-key.pem`, mode 0600) into `dir`. Its subject alternative names
/// are the given addresses and `localhost`, so a client can verify the
/// server with this certificate as its only trust anchor.
pub fn self_signed(dir: &Path, addresses: &[Ipv4Addr]) -> anyhow::Result<TlsFiles> {
    let mut names = vec!["localhost".to_string()];
    names.extend(addresses.iter().map(|a| a.to_string()));
    let mut params = rcgen::CertificateParams::new(names).context("certificate parameters")?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "pushscan-lab WinRM");
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate().context("generating the key")?;
    let cert = params
        .self_signed(&key)
        .context("signing the certificate")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let files = TlsFiles {
        cert_pem: dir.join("winrm-cert.pem"),
        key_pem: dir.join("winrm-key.pem"),
    };
    std::fs::write(&files.cert_pem, cert.pem())
        .with_context(|| format!("writing {}", files.cert_pem.display()))?;
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&files.key_pem)
            .with_context(|| format!("writing {}", files.key_pem.display()))?;
        f.write_all(key.serialize_pem().as_bytes())?;
    }
    Ok(files)
}

/// A bound simulator, ready to [`run`](Server::run).
pub struct Server {
    hosts: Vec<Arc<HostState>>,
    listeners: Vec<(Arc<HostState>, TcpListener, bool)>,
    settings: Arc<http::Settings>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("endpoints", &self.endpoints())
            .finish()
    }
}

impl Server {
    /// Check the configuration and bind every listener (nothing is served
    /// until [`run`](Server::run)).
    pub async fn bind(cfg: ServerConfig) -> anyhow::Result<Server> {
        let tls = match (cfg.https_port, &cfg.tls) {
            (Some(_), Some(files)) => Some(http::tls_acceptor(files)?),
            (Some(_), None) => bail!("https_port is set but no TLS certificate is configured"),
            (None, _) => None,
        };
        let limits = Limits {
            max_shells_per_user: cfg.max_shells_per_user,
            max_processes_per_shell: cfg.max_processes_per_shell,
            idle_timeout: cfg.idle_timeout,
        };
        let settings = Arc::new(http::Settings {
            allow_basic_over_http: cfg.allow_basic_over_http,
            allow_unencrypted: cfg.allow_unencrypted,
            tls,
        });
        let mut hosts = Vec::new();
        let mut listeners = Vec::new();
        for h in cfg.hosts.into_iter().filter(|h| h.enabled) {
            if !h.address.is_loopback() {
                bail!("host {}: {} is not a loopback address", h.name, h.address);
            }
            let name = h.name.clone();
            let address = h.address;
            let state = Arc::new(
                HostState::new(h, limits.clone())
                    .with_context(|| format!("host {name}: preparing its directory tree"))?,
            );
            let http = TcpListener::bind((address, cfg.http_port))
                .await
                .with_context(|| format!("host {name}: binding {address}:{}", cfg.http_port))?;
            listeners.push((Arc::clone(&state), http, false));
            if let Some(port) = cfg.https_port {
                let https = TcpListener::bind((address, port))
                    .await
                    .with_context(|| format!("host {name}: binding {address}:{port}"))?;
                listeners.push((Arc::clone(&state), https, true));
            }
            hosts.push(state);
        }
        Ok(Server {
            hosts,
            listeners,
            settings,
        })
    }

    /// The listening sockets.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.listeners
            .iter()
            .filter_map(|(h, l, tls)| {
                l.local_addr().ok().map(|address| Endpoint {
                    host: h.host.name.clone(),
                    address,
                    tls: *tls,
                })
            })
            .collect()
    }

    /// A handle to read the counters while the server runs.
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle {
            hosts: self.hosts.clone(),
        }
    }

    /// Serve until `shutdown` becomes true (or its sender is dropped); then
    /// stop listening, close connections and kill every process started.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let mut tasks = JoinSet::new();
        for (host, listener, tls) in self.listeners {
            let settings = Arc::clone(&self.settings);
            tasks.spawn(http::accept_loop(listener, host, settings, tls));
        }
        let reaper_hosts = self.hosts.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                for h in &reaper_hosts {
                    h.reap_idle();
                }
            }
        });
        loop {
            if *shutdown.borrow() {
                break;
            }
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        tasks.shutdown().await;
        for h in &self.hosts {
            h.delete_all();
        }
        Ok(())
    }
}

/// Reads the counters of a running [`Server`].
#[derive(Debug, Clone)]
pub struct StatsHandle {
    hosts: Vec<Arc<HostState>>,
}

impl StatsHandle {
    /// One snapshot per enabled host.
    pub fn snapshot(&self) -> Vec<Stats> {
        self.hosts
            .iter()
            .map(|h| Stats {
                host: h.host.name.clone(),
                requests: h.stats.requests.load(Ordering::Relaxed),
                auth_failures: h.stats.auth_failures.load(Ordering::Relaxed),
                ntlm_split_legs: h.stats.ntlm_split_legs.load(Ordering::Relaxed),
                sealed_requests: h.stats.sealed_requests.load(Ordering::Relaxed),
                sealed_without_session: h.stats.sealed_without_session.load(Ordering::Relaxed),
                receive_timeouts: h.stats.receive_timeouts.load(Ordering::Relaxed),
                shells_created: h.stats.shells_created.load(Ordering::Relaxed),
                commands_started: h.stats.commands_started.load(Ordering::Relaxed),
                open_shells: h.shell_count(),
            })
            .collect()
    }
}

/// Bind and serve until `shutdown` becomes true (see [`Server`]).
pub async fn serve(cfg: ServerConfig, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    Server::bind(cfg).await?.run(shutdown).await
}
