//! Shared setup of the WinRM simulator integration tests: a few simulated
//! hosts on loopback addresses with ephemeral ports, their directory trees
//! (the stand-in checker pushed as `C:\Windows\Temp\emocheck.exe`, a
//! `waiter.exe` that waits for a flag file), a self-signed certificate for
//! HTTPS, and the server running in the test's tokio runtime.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pushscan_lab::winrm::{self, Endpoint, Server, ServerConfig, SimHost, StatsHandle, TlsFiles};
use tokio::sync::watch;

/// Lab account of every simulated host.
pub const USER: &str = "labadmin";
/// Its password.
pub const PASSWORD: &str = "Lab-Passw0rd!";

/// A running simulator.
pub struct Lab {
    /// Temporary directory holding the host trees and the certificate.
    pub dir: tempfile::TempDir,
    /// The hosts.
    pub hosts: Vec<SimHost>,
    /// Listening sockets.
    pub endpoints: Vec<Endpoint>,
    /// Certificate of the HTTPS listeners.
    pub tls: TlsFiles,
    /// Counters.
    pub stats: StatsHandle,
    shutdown: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// The tree path of a Windows path below `C:\` of host `h`.
pub fn tree_path(h: &SimHost, rel: &str) -> PathBuf {
    let mut p = h.root.join("C");
    for c in rel.split('\\').filter(|c| !c.is_empty()) {
        p.push(c);
    }
    p
}

fn write_exe(path: &Path, content: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, content).expect("write exe");
}

impl Lab {
    /// Start hosts `127.0.<net>.1..` with one scenario each (stand-in
    /// checker `/scenario`, `/lang` as given in `specs`: `(scenario, lang)`).
    pub async fn start(
        net: u8,
        specs: &[(&str, &str)],
        tweak: impl FnOnce(&mut ServerConfig),
    ) -> Lab {
        let dir = tempfile::tempdir().expect("tempdir");
        let checker = pushscan_testkit::emocheck::SCRIPT_BYTES.to_vec();
        let mut hosts = Vec::new();
        for (i, (scenario, lang)) in specs.iter().enumerate() {
            let name = format!("PC-{}", i + 1);
            let host = SimHost {
                name: name.clone(),
                address: Ipv4Addr::new(127, 0, net, (i + 1) as u8),
                root: dir.path().join("hosts").join(&name),
                checker_args: ["/scenario", scenario, "/host", &name, "/lang", lang]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                username: USER.into(),
                password: PASSWORD.into(),
                latency: Duration::ZERO,
                enabled: true,
                wine: None,
            };
            write_exe(&tree_path(&host, r"Windows\Temp\emocheck.exe"), &checker);
            write_exe(
                &tree_path(&host, r"Windows\Temp\waiter.exe"),
                b"while [ ! -e \"$1\" ]; do sleep 0.05; done\necho released\n",
            );
            hosts.push(host);
        }
        let addrs: Vec<Ipv4Addr> = hosts.iter().map(|h| h.address).collect();
        let tls =
            winrm::self_signed(&dir.path().join("tls"), &addrs).expect("self-signed certificate");
        let mut cfg = ServerConfig {
            hosts: hosts.clone(),
            http_port: 0,
            https_port: Some(0),
            tls: Some(tls.clone()),
            ..ServerConfig::default()
        };
        tweak(&mut cfg);
        let server = Server::bind(cfg).await.expect("bind the simulator");
        let endpoints = server.endpoints();
        let stats = server.stats_handle();
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(server.run(rx));
        Lab {
            dir,
            hosts,
            endpoints,
            tls,
            stats,
            shutdown,
            task: Some(task),
        }
    }

    fn endpoint(&self, i: usize, tls: bool) -> SocketAddr {
        self.endpoints
            .iter()
            .find(|e| e.host == self.hosts[i].name && e.tls == tls)
            .map(|e| e.address)
            .expect("endpoint")
    }

    /// HTTP address of host `i`.
    pub fn http(&self, i: usize) -> SocketAddr {
        self.endpoint(i, false)
    }

    /// HTTPS address of host `i`.
    pub fn https(&self, i: usize) -> SocketAddr {
        self.endpoint(i, true)
    }

    /// Stop the server and wait for it (every process it started is killed).
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server result");
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Bytes one [`Tap`] connection carried, per direction.
#[derive(Debug, Clone, Default)]
pub struct TapConn {
    /// Client to server.
    pub up: Vec<u8>,
    /// Server to client.
    pub down: Vec<u8>,
}

/// A loopback TCP relay that records every byte it forwards: the client
/// connects to [`Tap::address`], each connection is relayed one to one to
/// `target` (so a session bound to a TCP connection, NTLM's, survives).
pub struct Tap {
    /// Where clients connect.
    pub address: SocketAddr,
    conns: std::sync::Arc<std::sync::Mutex<Vec<TapConn>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Tap {
    /// Listen on `listen` (port 0: ephemeral) and relay to `target`.
    pub async fn start(listen: Ipv4Addr, target: SocketAddr) -> Tap {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind((listen, 0))
            .await
            .expect("bind the tap");
        let address = listener.local_addr().expect("tap address");
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::<TapConn>::new()));
        let record = std::sync::Arc::clone(&conns);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                let index = {
                    let mut c = record.lock().expect("tap lock");
                    c.push(TapConn::default());
                    c.len() - 1
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = std::sync::Arc::clone(&record);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n @ 1..) = cr.read(&mut buf).await {
                        up.lock().expect("tap lock")[index]
                            .up
                            .extend_from_slice(&buf[..n]);
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = sw.shutdown().await;
                });
                let down = std::sync::Arc::clone(&record);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n @ 1..) = sr.read(&mut buf).await {
                        down.lock().expect("tap lock")[index]
                            .down
                            .extend_from_slice(&buf[..n]);
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = cw.shutdown().await;
                });
            }
        });
        Tap {
            address,
            conns,
            task,
        }
    }

    /// What every connection carried so far.
    pub fn connections(&self) -> Vec<TapConn> {
        self.conns.lock().expect("tap lock").clone()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}
