//! The WinRM endpoint simulator. Being written.
//!
//! Agreed public face (used by `fleet`):
//!
//! ```ignore
//! pub struct SimHost { name, address: Ipv4Addr, root: PathBuf, checker_args: Vec<String>,
//!                      username: String, password: String, latency: Duration, enabled: bool }
//! pub struct ServerConfig { hosts: Vec<SimHost>, http_port: u16, https_port: Option<u16>,
//!                           tls: Option<TlsFiles>, allow_basic_over_http: bool,
//!                           max_shells_per_user: usize, max_processes_per_shell: usize,
//!                           idle_timeout: Duration }
//! pub async fn serve(cfg: ServerConfig, shutdown: tokio::sync::watch::Receiver<bool>) -> anyhow::Result<()>;
//! ```
