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
        let checker =
            std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("checker/emocheck-sim.sh"))
                .expect("read lab/checker/emocheck-sim.sh");
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
