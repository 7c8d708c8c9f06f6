//! The PostgreSQL store: the same records and journal rules as the SQLite store, in a
//! database that several jump hosts can reach.
//!
//! Writer: one connection owned by one task on our runtime. Every write is an operation
//! ([`Op`]) queued to that task in order; the task takes what is queued (up to a bound), runs
//! it in one transaction and commits once (group commit, as the SQLite writer does), then
//! answers each awaited operation. An awaited write (an intent) has returned only once its
//! transaction is committed, so a crash at any instant leaves a journal that says what of ours
//! may exist on each host. When a batch fails, its operations are run again one per
//! transaction, so one bad operation fails alone.
//!
//! Reader: [`StoreReader`](super::StoreReader) is a synchronous trait (report, runs, history
//! and the alert decisions call it from plain functions, some of them inside async code).
//! The reader keeps its own connection and waits for each query on the calling thread.
//!
//! Both own a small runtime (one worker thread) where their connection's driver and the
//! writer task run, so the store neither needs nor disturbs the caller's runtime: it works the
//! same from the binary's multi-thread runtime, a current-thread one, or synchronous code.
//!
//! Schema: numbered migrations in `meta.schema_version`, applied once, all in one
//! transaction that first takes a transaction-scoped advisory lock, so two jump hosts that
//! open a new database at once do not both migrate. A database written by a newer pushscan
//! is refused untouched.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Transaction};

use super::{
    ActionRecord, ActionResult, HistoryItem, HostFinish, HostRecord, Lease, NewAction,
    NewContainment, NewNotification, NewReport, NewRun, NotificationRecord, RecentResult,
    ReportRecord, RunInfo, RunSources, StepRecord,
};
use crate::model::{processes_of, Finding, HostClass, Severity};

// ---------------------------------------------------------------- where and how to connect

/// How the TLS of the connection is checked, as libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS at all.
    Disable,
    /// TLS, the server's certificate not checked (unless a CA file is given: then as
    /// `verify-ca`, as libpq does).
    Require,
    /// TLS, the certificate chains to the CA; its name is not checked.
    VerifyCa,
    /// TLS, the certificate chains to the CA and names the host (the default).
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<SslMode> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => bail!(
                "sslmode={other} is not supported: use disable, require, verify-ca or \
                 verify-full (the default)"
            ),
        })
    }
}

/// Where the password comes from. It is never part of the URL.
#[derive(Clone, Default)]
pub struct PasswordSource {
    /// A file readable by its owner only (`PUSHSCAN_STORE_PASSWORD_FILE`, or `passfile=` in
    /// the URL, which wins).
    pub file: Option<PathBuf>,
    /// The value of `PGPASSWORD`, taken out of the environment at start.
    pub env: Option<String>,
}

/// Says where the password comes from, never what it is.
impl std::fmt::Debug for PasswordSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordSource")
            .field("file", &self.file)
            .field("env", &self.env.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// A parsed `postgres://` store location (no password in it).
#[derive(Debug, Clone)]
pub struct Target {
    pub user: String,
    pub host: String,
    pub hostaddr: Option<String>,
    pub port: u16,
    pub dbname: String,
    pub sslmode: SslMode,
    pub sslrootcert: Option<String>,
    pub connect_timeout: std::time::Duration,
    pub password: PasswordSource,
}

/// Whether `s` names a PostgreSQL store rather than a state dir.
pub fn is_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

impl Target {
    /// Parses `postgres://user@host:port/db?sslmode=...&sslrootcert=...`. A password in the
    /// URL is refused: the URL is in argv (visible to every local user in `ps`) and in shell
    /// history.
    pub fn parse(s: &str, password: PasswordSource) -> Result<Target> {
        let url = url::Url::parse(s).map_err(|e| anyhow::anyhow!("store URL: {e}"))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            bail!(
                "store URL: the scheme must be postgres:// (got {}://)",
                url.scheme()
            );
        }
        if url.password().is_some() {
            bail!(
                "store URL: a password in the URL is refused (it would be visible in the process \
                 list and kept in shell history); put it in a file of mode 0600 named by \
                 PUSHSCAN_STORE_PASSWORD_FILE (or passfile=FILE in the URL), in PGPASSWORD, or \
                 type it at the prompt"
            );
        }
        let decode = |v: &str| -> Result<String> {
            percent_encoding::percent_decode_str(v)
                .decode_utf8()
                .map(|d| d.into_owned())
                .context("store URL: a user or database name that is not UTF-8 once decoded")
        };
        let host = match url.host() {
            Some(url::Host::Ipv6(a)) => a.to_string(),
            Some(h) => h.to_string(),
            None => bail!("store URL: no host (postgres://USER@HOST:PORT/DATABASE)"),
        };
        let user = match url.username() {
            "" => std::env::var("USER").unwrap_or_else(|_| "postgres".into()),
            u => decode(u)?,
        };
        let dbname = match url.path().trim_start_matches('/') {
            "" => user.clone(),
            d => decode(d)?,
        };
        let mut t = Target {
            user,
            host,
            hostaddr: None,
            port: url.port().unwrap_or(5432),
            dbname,
            sslmode: SslMode::VerifyFull,
            sslrootcert: None,
            connect_timeout: std::time::Duration::from_secs(10),
            password,
        };
        for (k, v) in url.query_pairs() {
            match &*k {
                "sslmode" => t.sslmode = SslMode::parse(&v)?,
                "sslrootcert" => t.sslrootcert = Some(v.into_owned()),
                "hostaddr" => t.hostaddr = Some(v.into_owned()),
                "passfile" => t.password.file = Some(PathBuf::from(&*v)),
                "connect_timeout" => {
                    let secs: u64 = v
                        .parse()
                        .with_context(|| format!("store URL: connect_timeout={v}"))?;
                    t.connect_timeout = std::time::Duration::from_secs(secs.max(1));
                }
                "password" => bail!(
                    "store URL: a password in the URL is refused; put it in a file of mode \
                     0600 named by PUSHSCAN_STORE_PASSWORD_FILE (or passfile=FILE in the URL), in \
                     PGPASSWORD, or type it at the prompt"
                ),
                other => bail!(
                    "store URL: parameter {other:?} is not supported (known: sslmode, \
                     sslrootcert, passfile, hostaddr, connect_timeout)"
                ),
            }
        }
        Ok(t)
    }

    /// `postgres://user@host:port/db`, for the operator.
    pub fn display(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!(
            "postgres://{}@{host}:{}/{}",
            self.user, self.port, self.dbname
        )
    }
}

/// The most a password file may hold: a password is a line, not a file.
const MAX_PASSWORD_FILE: u64 = 4096;

/// Reads the password file: refused when its group or others may read it (libpq's rule for
/// `~/.pgpass`), when another user owns it (as the other secret files), or when it is a
/// link. The first line is the password.
pub fn read_password_file(path: &Path) -> Result<String> {
    use std::io::Read as _;
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        o.custom_flags(libc::O_NOFOLLOW);
    }
    let f = o
        .open(path)
        .with_context(|| format!("cannot open store password file {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let meta = f.metadata()?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            bail!(
                "store password file {} belongs to uid {}, not to the user running pushscan \
                 (uid {me}); refused",
                path.display(),
                meta.uid()
            );
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "store password file {} has mode {mode:04o}: group or others may read it; \
                 refused (chmod 600 {})",
                path.display(),
                path.display()
            );
        }
    }
    let mut text = String::new();
    f.take(MAX_PASSWORD_FILE + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read store password file {}", path.display()))?;
    if text.len() as u64 > MAX_PASSWORD_FILE {
        bail!(
            "store password file {} is larger than {MAX_PASSWORD_FILE} bytes",
            path.display()
        );
    }
    Ok(text.lines().next().unwrap_or_default().to_string())
}

/// The most a CA file may hold.
const MAX_CA_FILE: u64 = 1 << 20;

fn root_store(t: &Target) -> Result<rustls::RootCertStore> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::CertificateDer;
    use std::io::Read as _;
    let mut roots = rustls::RootCertStore::empty();
    if t.sslrootcert.as_deref() == Some("system") {
        let found = rustls_native_certs::load_native_certs();
        for c in found.certs {
            let _ = roots.add(c);
        }
        if roots.is_empty() {
            bail!("sslrootcert=system: no CA certificates found on this system");
        }
        return Ok(roots);
    }
    let path = match &t.sslrootcert {
        Some(p) => PathBuf::from(p),
        // libpq's default CA file.
        None => dirs::home_dir()
            .map(|h| h.join(".postgresql/root.crt"))
            .filter(|p| p.exists())
            .with_context(|| {
                format!(
                    "sslmode={:?} needs the CA that signed the server's certificate: add \
                     sslrootcert=FILE (or sslrootcert=system) to the store URL, or put it in \
                     ~/.postgresql/root.crt",
                    t.sslmode
                )
            })?,
    };
    let mut pem = Vec::new();
    std::fs::File::open(&path)
        .with_context(|| format!("cannot open sslrootcert {}", path.display()))?
        .take(MAX_CA_FILE)
        .read_to_end(&mut pem)
        .with_context(|| format!("cannot read sslrootcert {}", path.display()))?;
    for c in CertificateDer::pem_slice_iter(&pem) {
        let c = c.with_context(|| format!("sslrootcert {}: bad PEM", path.display()))?;
        roots
            .add(c)
            .with_context(|| format!("sslrootcert {}: bad certificate", path.display()))?;
    }
    if roots.is_empty() {
        bail!("sslrootcert {}: no certificate in it", path.display());
    }
    Ok(roots)
}

/// `verify-ca`: the chain is checked by webpki; only a name mismatch is accepted.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error};
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `require` without a CA: encrypted, the certificate not checked (libpq's meaning; it
/// protects against passive listening only). The handshake signatures are still checked.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_config(t: &Target) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?;
    let mode = match (t.sslmode, &t.sslrootcert) {
        (SslMode::Require, Some(_)) => SslMode::VerifyCa,
        (m, _) => m,
    };
    let config = match mode {
        SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
            .with_no_client_auth(),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let roots = Arc::new(root_store(t)?);
            let webpki =
                rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .context("TLS verifier")?;
            if mode == SslMode::VerifyCa {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
                    .with_no_client_auth()
            } else {
                builder.with_webpki_verifier(webpki).with_no_client_auth()
            }
        }
        SslMode::Disable => bail!("no TLS configuration for sslmode=disable"),
    };
    Ok(config)
}

fn config(t: &Target, password: Option<&str>) -> tokio_postgres::Config {
    let mut c = tokio_postgres::Config::new();
    c.user(&t.user)
        .host(&t.host)
        .port(t.port)
        .dbname(&t.dbname)
        .application_name("pushscan")
        .connect_timeout(t.connect_timeout)
        .ssl_mode(if t.sslmode == SslMode::Disable {
            tokio_postgres::config::SslMode::Disable
        } else {
            tokio_postgres::config::SslMode::Require
        });
    if let Some(a) = &t.hostaddr {
        if let Ok(ip) = a.parse() {
            c.hostaddr(ip);
        }
    }
    if let Some(p) = password {
        c.password(p);
    }
    c
}

/// One connection, its driver spawned on `handle`.
async fn connect_once(t: &Target, password: Option<&str>, handle: &Handle) -> Result<Client> {
    if let Some(a) = &t.hostaddr {
        a.parse::<std::net::IpAddr>()
            .with_context(|| format!("store URL: hostaddr={a} is not an IP address"))?;
    }
    let cfg = config(t, password);
    let what = || format!("cannot connect to the store {}", t.display());
    if t.sslmode == SslMode::Disable {
        let (client, conn) = cfg
            .connect(tokio_postgres::NoTls)
            .await
            .with_context(what)?;
        handle.spawn(async move {
            if let Err(e) = conn.await {
                tracing::warn!("store connection: {e}");
            }
        });
        Ok(client)
    } else {
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(t)?);
        let (client, conn) = cfg.connect(tls).await.with_context(what)?;
        handle.spawn(async move {
            if let Err(e) = conn.await {
                tracing::warn!("store connection: {e}");
            }
        });
        Ok(client)
    }
}

/// The password typed at the prompt, for the store's later connections in this process (a
/// sweep opens its writer and readers separately): asked once, not once per connection.
static PROMPTED: Mutex<Option<(String, zeroize::Zeroizing<String>)>> = Mutex::new(None);

/// Connects with the password from the file, the environment, or (only when the server
/// asks for one and a terminal is there) a prompt.
async fn connect(t: &Target, handle: &Handle) -> Result<Client> {
    let remembered = || -> Option<zeroize::Zeroizing<String>> {
        let p = PROMPTED.lock().ok()?;
        p.as_ref()
            .filter(|(at, _)| *at == t.display())
            .map(|(_, pw)| pw.clone())
    };
    let given = match (&t.password.file, &t.password.env) {
        (Some(f), _) => Some(zeroize::Zeroizing::new(read_password_file(f)?)),
        (None, Some(p)) => Some(zeroize::Zeroizing::new(p.clone())),
        (None, None) => remembered(),
    };
    let first = connect_once(t, given.as_ref().map(|p| p.as_str()), handle).await;
    match first {
        Err(e) if given.is_none() && format!("{e:#}").contains("password missing") => {
            if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                bail!(
                    "the store {} asks for a password: name a file of mode 0600 with \
                     PUSHSCAN_STORE_PASSWORD_FILE (or passfile=FILE in the URL), or set PGPASSWORD",
                    t.display()
                );
            }
            let p = zeroize::Zeroizing::new(
                rpassword::prompt_password(format!("Password for {}: ", t.display()))
                    .context("cannot read the store password")?,
            );
            let client = connect_once(t, Some(&p), handle).await?;
            if let Ok(mut slot) = PROMPTED.lock() {
                *slot = Some((t.display(), p));
            }
            Ok(client)
        }
        other => other,
    }
}

/// The runtime the store's connections live on: its own (one worker thread), whatever runtime
/// the caller runs on, or none. The writer task and every connection's driver run there; a
/// caller only exchanges messages with them, so the store works the same from the binary's
/// multi-thread runtime, a test's current-thread one, or plain synchronous code.
struct StoreRuntime(Option<tokio::runtime::Runtime>);

impl StoreRuntime {
    fn new() -> Result<StoreRuntime> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pushscan-store")
            .enable_all()
            .build()
            .context("cannot start the store's runtime")?;
        Ok(StoreRuntime(Some(rt)))
    }

    fn handle(&self) -> Result<Handle> {
        self.0
            .as_ref()
            .map(|rt| rt.handle().clone())
            .context("the store's runtime has stopped")
    }

    /// Runs `f` on the store's runtime and waits for it from synchronous code.
    fn run<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T> {
        let job = self.handle()?.spawn(f);
        block(job).map_err(|e| anyhow::anyhow!("store task failed: {e}"))
    }
}

impl Drop for StoreRuntime {
    /// Without waiting: dropping a runtime inside async code would panic, and what the store
    /// must finish (the writer's queue) is waited for by `close` before this.
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Waits for `f` on the calling thread. The futures waited for here only exchange messages
/// with tasks on the store's runtime (a query with its connection's driver, a join), so no
/// reactor is needed on this thread. On a worker of a multi-thread runtime the wait is
/// announced (`block_in_place`) so that worker's other tasks move to another worker.
fn block<F: std::future::Future>(f: F) -> F::Output {
    let on_worker = Handle::try_current()
        .map(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
        .unwrap_or(false);
    if on_worker {
        tokio::task::block_in_place(|| futures_executor::block_on(f))
    } else {
        futures_executor::block_on(f)
    }
}

// ---------------------------------------------------------------- schema

/// The schema version this pushscan writes: the number of the last migration.
pub const SCHEMA_VERSION: u32 = 1;

/// Key of the advisory lock migrations take ("pushscan" in ASCII).
const MIGRATION_LOCK: i64 = 0x7075_7368_7363_616e;

/// Every schema change, numbered; each applied once, in order.
const MIGRATIONS: &[(u32, &str)] = &[(
    1,
    r#"
CREATE TABLE runs(
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL,
    operator TEXT,
    controller TEXT,
    pushscan_version TEXT,
    playbook_path TEXT,
    playbook_name TEXT,
    playbook_text TEXT,
    inventory_path TEXT,
    inventory_text TEXT,
    limit_pattern TEXT,
    forks BIGINT,
    checker_path TEXT,
    checker_sha256 TEXT,
    checker_size BIGINT,
    hosts_targeted BIGINT,
    exit_code BIGINT,
    rollout TEXT,
    halt_reason TEXT
);
CREATE TABLE hosts(
    run_id BIGINT NOT NULL REFERENCES runs(id),
    host TEXT NOT NULL,
    seq BIGINT NOT NULL,
    address TEXT,
    port BIGINT,
    transport TEXT,
    groups TEXT,
    group_paths TEXT,
    state TEXT NOT NULL,
    class TEXT,
    reason TEXT,
    started_at TEXT,
    finished_at TEXT,
    duration_ms BIGINT,
    pushed BOOLEAN,
    exit_code BIGINT,
    primary_report BIGINT,
    wave BIGINT,
    wave_partition TEXT,
    PRIMARY KEY(run_id, host)
);
CREATE INDEX hosts_by_host ON hosts(host, run_id);
CREATE TABLE steps(
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    run_id BIGINT NOT NULL,
    host TEXT NOT NULL,
    step TEXT NOT NULL,
    phase TEXT NOT NULL,
    target TEXT,
    detail TEXT,
    at TEXT NOT NULL
);
CREATE INDEX steps_by_host ON steps(run_id, host);
CREATE TABLE reports(
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    run_id BIGINT NOT NULL,
    host TEXT NOT NULL,
    remote_name TEXT NOT NULL,
    remote_path TEXT NOT NULL,
    local_path TEXT,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    raw BYTEA NOT NULL,
    fetched_at TEXT NOT NULL,
    status TEXT NOT NULL,
    hostname TEXT,
    scan_time TEXT,
    checker_version TEXT,
    format TEXT,
    warnings TEXT,
    origin TEXT NOT NULL DEFAULT 'run',
    parser TEXT
);
CREATE INDEX reports_by_host ON reports(host, run_id);
CREATE TABLE findings(
    report_id BIGINT NOT NULL REFERENCES reports(id),
    idx BIGINT NOT NULL,
    kind TEXT NOT NULL,
    title TEXT NOT NULL,
    location TEXT NOT NULL,
    severity TEXT NOT NULL,
    identity TEXT NOT NULL,
    attributes TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY(report_id, idx)
);
CREATE TABLE leases(
    host TEXT PRIMARY KEY,
    run_id BIGINT NOT NULL,
    owner TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE TABLE notifications(
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    run_id BIGINT,
    kind TEXT NOT NULL,
    channel TEXT NOT NULL,
    target TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    error TEXT,
    hosts TEXT NOT NULL DEFAULT '[]',
    at TEXT NOT NULL
);
CREATE INDEX notifications_by_run ON notifications(run_id, channel);
CREATE TABLE containments(
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    kind TEXT NOT NULL,
    source_run BIGINT,
    operator TEXT NOT NULL,
    controller TEXT NOT NULL,
    actions TEXT NOT NULL,
    hosts TEXT NOT NULL DEFAULT '[]',
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL,
    recheck_run BIGINT
);
CREATE TABLE actions(
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    containment_id BIGINT NOT NULL REFERENCES containments(id),
    run_id BIGINT,
    host TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    command TEXT NOT NULL,
    operator TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    phase TEXT NOT NULL,
    exit_code BIGINT,
    output_sha256 TEXT,
    verified BOOLEAN,
    message TEXT,
    evidence_path TEXT
);
CREATE INDEX actions_by_host ON actions(host, id);
CREATE INDEX actions_by_run ON actions(run_id);
"#,
)];

/// The database's schema version (0: no pushscan schema yet).
async fn schema_version<C: tokio_postgres::GenericClient>(c: &C) -> Result<u32> {
    let row = c
        .query_one("SELECT to_regclass('meta') IS NOT NULL", &[])
        .await?;
    if !row.try_get::<_, bool>(0)? {
        return Ok(0);
    }
    let v: Option<String> = c
        .query_opt("SELECT value FROM meta WHERE key='schema_version'", &[])
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
    match v {
        None => Ok(0),
        Some(v) => v
            .trim()
            .parse()
            .with_context(|| format!("schema_version {v:?} is not a number")),
    }
}

fn refuse_newer(version: u32, location: &str) -> Result<()> {
    if version > SCHEMA_VERSION {
        bail!(
            "the store {location} has schema version {version}, written by a newer pushscan \
             (this one knows up to {SCHEMA_VERSION}); use that pushscan or a newer one"
        );
    }
    Ok(())
}

/// Brings the database to [`SCHEMA_VERSION`] in one transaction, under an advisory lock.
async fn migrate(client: &mut Client, location: &str) -> Result<()> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        .await?;
    let current = schema_version(&tx).await?;
    refuse_newer(current, location)?;
    for (version, sql) in MIGRATIONS {
        if *version > current {
            tx.batch_execute(sql)
                .await
                .with_context(|| format!("schema migration {version}"))?;
            tx.execute(
                "INSERT INTO meta(key, value) VALUES('schema_version', $1)
                 ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                &[&version.to_string()],
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

// ---------------------------------------------------------------- the writer

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// One write (or writer-side read) of the store, run by the writer task.
enum Op {
    StartRun(NewRun),
    FinishRun(i64, String, i32),
    HostStarted(i64, String),
    Steps(i64, String, Vec<(String, String, String, String)>),
    AddReport(NewReport),
    FinishHost(i64, String, HostFinish),
    KnownReportNames(String),
    AcquireLease(i64, String, u64),
    ReleaseLease(String),
    ReopenRun(i64),
    Prune(u64),
    SetHaltReason(i64, String),
    RecordNotification(NewNotification),
    HostWaves(i64),
    MarkNotStarted(i64, String),
    StartContainment(NewContainment),
    FinishContainment(i64, Option<i64>, String),
    ActionIntent(NewAction),
    ActionResult(i64, ActionResult),
}

type Waves = HashMap<String, (Option<i64>, Option<String>)>;

enum Answer {
    Unit,
    Id(i64),
    Names(Vec<String>),
    Lease(Lease),
    Waves(Waves),
}

struct Job {
    op: Op,
    ack: Option<oneshot::Sender<Result<Answer, String>>>,
}

enum Msg {
    // Boxed: an operation carries a whole run or report, Stop nothing.
    Job(Box<Job>),
    Stop,
}

/// The PostgreSQL writer: a handle to the writer task.
pub struct Writer {
    tx: mpsc::UnboundedSender<Msg>,
    stopped: Mutex<Option<oneshot::Receiver<()>>>,
    location: String,
    // Last: dropped after the writer task is told to stop.
    _runtime: StoreRuntime,
}

impl Writer {
    /// Connects, migrates, and starts the writer task.
    pub fn open(t: &Target) -> Result<Writer> {
        let runtime = StoreRuntime::new()?;
        let handle = runtime.handle()?;
        let location = t.display();
        let (target, loc) = (t.clone(), location.clone());
        let client = runtime.run(async move {
            let mut client = connect(&target, &handle).await?;
            migrate(&mut client, &loc)
                .await
                .with_context(|| format!("store {loc}"))?;
            anyhow::Ok(client)
        })??;
        let (tx, rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = oneshot::channel();
        runtime.handle()?.spawn(async move {
            writer_loop(client, rx).await;
            let _ = done_tx.send(());
        });
        Ok(Writer {
            tx,
            stopped: Mutex::new(Some(done_rx)),
            location,
            _runtime: runtime,
        })
    }

    /// Tells the writer task to commit what is queued and end, and waits for it.
    fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
        let stopped = self.stopped.lock().ok().and_then(|mut s| s.take());
        if let Some(rx) = stopped {
            let _ = block(rx);
        }
    }

    async fn call(&self, op: Op) -> Result<Answer> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Msg::Job(Box::new(Job { op, ack: Some(ack) })))
            .map_err(|_| anyhow::anyhow!("store writer has stopped"))?;
        done.await
            .map_err(|_| anyhow::anyhow!("store writer has stopped"))?
            .map_err(|e| anyhow::anyhow!("store write failed: {e}"))
    }

    async fn call_id(&self, op: Op) -> Result<i64> {
        match self.call(op).await? {
            Answer::Id(id) => Ok(id),
            _ => bail!("store writer: unexpected answer"),
        }
    }

    async fn call_unit(&self, op: Op) -> Result<()> {
        self.call(op).await.map(|_| ())
    }

    fn later(&self, op: Op) {
        let _ = self.tx.send(Msg::Job(Box::new(Job { op, ack: None })));
    }
}

async fn writer_loop(mut client: Client, mut rx: mpsc::UnboundedReceiver<Msg>) {
    const MAX_BATCH: usize = 256;
    let mut stopping = false;
    while !stopping {
        let first = match rx.recv().await {
            Some(Msg::Job(j)) => *j,
            Some(Msg::Stop) | None => break,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Msg::Job(j)) => batch.push(*j),
                Ok(Msg::Stop) => {
                    stopping = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let results = match run_batch(&mut client, &batch).await {
            Ok(answers) => answers.into_iter().map(Ok).collect::<Vec<_>>(),
            // One bad operation aborts a PostgreSQL transaction: run each alone, so only it
            // fails (the batch's work was rolled back, nothing is applied twice).
            Err(_) if batch.len() > 1 => {
                let mut out = Vec::with_capacity(batch.len());
                for job in &batch {
                    out.push(
                        run_batch(&mut client, std::slice::from_ref(job))
                            .await
                            .map(|mut a| a.pop().unwrap_or(Answer::Unit)),
                    );
                }
                out
            }
            Err(e) => vec![Err(e)],
        };
        for (job, res) in batch.into_iter().zip(results) {
            let res = res.map_err(|e| format!("{e:#}"));
            if let Err(e) = &res {
                tracing::error!("store write failed: {e}");
            }
            if let Some(ack) = job.ack {
                let _ = ack.send(res);
            }
        }
    }
}

async fn run_batch(client: &mut Client, batch: &[Job]) -> Result<Vec<Answer>> {
    let tx = client.transaction().await?;
    let mut answers = Vec::with_capacity(batch.len());
    for job in batch {
        answers.push(apply(&tx, &job.op).await?);
    }
    tx.commit().await?;
    Ok(answers)
}

async fn insert_step(
    tx: &Transaction<'_>,
    run_id: i64,
    host: &str,
    step: &str,
    phase: &str,
    target: &str,
    detail: &str,
) -> Result<()> {
    tx.execute(
        "INSERT INTO steps(run_id, host, step, phase, target, detail, at)
         VALUES($1,$2,$3,$4,$5,$6,$7)",
        &[&run_id, &host, &step, &phase, &target, &detail, &now()],
    )
    .await?;
    Ok(())
}

fn json<T: serde::Serialize>(v: &T, empty: &str) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| empty.into())
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

async fn apply(tx: &Transaction<'_>, op: &Op) -> Result<Answer> {
    Ok(match op {
        Op::StartRun(run) => {
            let row = tx
                .query_one(
                    "INSERT INTO runs(started_at, status, operator, controller, pushscan_version,
                        playbook_path, playbook_name, playbook_text, inventory_path, inventory_text,
                        limit_pattern, forks, checker_path, checker_sha256, checker_size,
                        hosts_targeted, rollout)
                     VALUES($1,'running',$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16)
                     RETURNING id",
                    &[
                        &now(),
                        &run.operator,
                        &run.controller,
                        &env!("CARGO_PKG_VERSION"),
                        &run.playbook_path,
                        &run.playbook_name,
                        &run.playbook_text,
                        &run.inventory_path,
                        &run.inventory_text,
                        &run.limit,
                        &i64_of(run.forks as u64),
                        &run.checker_path,
                        &run.checker_sha256,
                        &i64_of(run.checker_size),
                        &i64_of(run.hosts.len() as u64),
                        &run.rollout,
                    ],
                )
                .await?;
            let run_id: i64 = row.try_get(0)?;
            let stmt = tx
                .prepare(
                    "INSERT INTO hosts(run_id, host, seq, address, port, transport, groups,
                        group_paths, state, wave, wave_partition)
                     VALUES($1,$2,$3,$4,$5,$6,$7,$8,'pending',$9,$10)",
                )
                .await?;
            for (seq, h) in run.hosts.iter().enumerate() {
                tx.execute(
                    &stmt,
                    &[
                        &run_id,
                        &h.name,
                        &i64_of(seq as u64),
                        &h.address,
                        &h.port.map(i64::from),
                        &h.transport,
                        &json(&h.groups, "[]"),
                        &json(&h.group_paths, "[]"),
                        &h.wave.map(|w| i64_of(w as u64)),
                        &h.wave_partition,
                    ],
                )
                .await?;
            }
            Answer::Id(run_id)
        }
        Op::FinishRun(run_id, status, code) => {
            tx.execute(
                "UPDATE runs SET finished_at=$1, status=$2, exit_code=$3 WHERE id=$4",
                &[&now(), status, &i64::from(*code), run_id],
            )
            .await?;
            Answer::Unit
        }
        Op::HostStarted(run_id, host) => {
            tx.execute(
                "UPDATE hosts SET state='running', started_at=$1 WHERE run_id=$2 AND host=$3",
                &[&now(), run_id, host],
            )
            .await?;
            Answer::Unit
        }
        Op::Steps(run_id, host, rows) => {
            for (step, phase, target, detail) in rows {
                insert_step(tx, *run_id, host, step, phase, target, detail).await?;
            }
            Answer::Unit
        }
        Op::AddReport(r) => {
            let row = tx
                .query_one(
                    "INSERT INTO reports(run_id, host, remote_name, remote_path, local_path, size,
                        sha256, raw, fetched_at, status, hostname, scan_time, checker_version,
                        format, warnings, origin, parser)
                     VALUES($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17)
                     RETURNING id",
                    &[
                        &r.run_id,
                        &r.host,
                        &r.remote_name,
                        &r.remote_path,
                        &r.local_path,
                        &i64_of(r.raw.len() as u64),
                        &r.sha256,
                        &r.raw,
                        &now(),
                        &r.parsed.status.as_str(),
                        &r.parsed.hostname,
                        &r.parsed.scan_time,
                        &r.parsed.checker_version,
                        &r.parsed.format,
                        &json(&r.parsed.warnings, "[]"),
                        &if r.history { "history" } else { "run" },
                        &r.parser,
                    ],
                )
                .await?;
            let id: i64 = row.try_get(0)?;
            let stmt = tx
                .prepare(
                    "INSERT INTO findings(report_id, idx, kind, title, location, severity,
                        identity, attributes)
                     VALUES($1,$2,$3,$4,$5,$6,$7,$8)",
                )
                .await?;
            for (i, f) in r.parsed.findings.iter().enumerate() {
                tx.execute(
                    &stmt,
                    &[
                        &id,
                        &i64_of(i as u64),
                        &f.kind,
                        &f.title,
                        &f.location,
                        &f.severity.as_str(),
                        &f.identity,
                        &json(&f.attributes, "{}"),
                    ],
                )
                .await?;
            }
            Answer::Id(id)
        }
        Op::FinishHost(run_id, host, fin) => {
            // The result and the release of this process's lease in one transaction: a kill
            // between the two would leave a lease on a host that is done.
            tx.execute(
                "DELETE FROM leases WHERE host=$1 AND owner=$2",
                &[host, &super::sqlite::lease_owner()],
            )
            .await?;
            tx.execute(
                "UPDATE hosts SET state='done', class=$1, reason=$2, finished_at=$3,
                    duration_ms=$4, pushed=$5, exit_code=$6, primary_report=$7
                 WHERE run_id=$8 AND host=$9",
                &[
                    &fin.class.as_str(),
                    &fin.reason,
                    &now(),
                    &i64_of(fin.duration_ms),
                    &fin.pushed,
                    &fin.exit_code,
                    &fin.primary_report,
                    run_id,
                    host,
                ],
            )
            .await?;
            Answer::Unit
        }
        Op::KnownReportNames(host) => {
            let rows = tx
                .query(
                    "SELECT DISTINCT remote_name FROM reports WHERE host=$1",
                    &[host],
                )
                .await?;
            Answer::Names(
                rows.iter()
                    .map(|r| r.try_get(0))
                    .collect::<Result<_, _>>()?,
            )
        }
        Op::AcquireLease(run_id, host, ttl) => {
            let me = super::sqlite::lease_owner();
            let now = chrono::Utc::now().timestamp();
            let expires = now.saturating_add(i64_of(*ttl));
            // Insert first: a concurrent insert of the same host waits on ours (or we on it),
            // so two sweeps never both see "free".
            let inserted = tx
                .execute(
                    "INSERT INTO leases(host, run_id, owner, expires_at) VALUES($1,$2,$3,$4)
                     ON CONFLICT(host) DO NOTHING",
                    &[host, run_id, &me, &expires],
                )
                .await?;
            if inserted == 1 {
                return Ok(Answer::Lease(Lease::Acquired));
            }
            let held = tx
                .query_opt(
                    "SELECT run_id, owner, expires_at FROM leases WHERE host=$1 FOR UPDATE",
                    &[host],
                )
                .await?;
            if let Some(row) = held {
                let other_run: i64 = row.try_get(0)?;
                let owner: String = row.try_get(1)?;
                let until: i64 = row.try_get(2)?;
                if owner != me && until > now && !super::sqlite::owner_is_dead(&owner) {
                    return Ok(Answer::Lease(Lease::Busy {
                        run_id: other_run,
                        owner,
                    }));
                }
            }
            tx.execute(
                "INSERT INTO leases(host, run_id, owner, expires_at) VALUES($1,$2,$3,$4)
                 ON CONFLICT(host) DO UPDATE SET run_id=excluded.run_id, owner=excluded.owner,
                    expires_at=excluded.expires_at",
                &[host, run_id, &me, &expires],
            )
            .await?;
            Answer::Lease(Lease::Acquired)
        }
        Op::ReleaseLease(host) => {
            tx.execute(
                "DELETE FROM leases WHERE host=$1 AND owner=$2",
                &[host, &super::sqlite::lease_owner()],
            )
            .await?;
            Answer::Unit
        }
        Op::ReopenRun(run_id) => {
            const OPEN: &str =
                "(state<>'done' OR class IS NULL OR class IN ('not_started','busy'))";
            let rows = tx
                .query(
                    &format!("SELECT host FROM hosts WHERE run_id=$1 AND {OPEN} ORDER BY seq"),
                    &[run_id],
                )
                .await?;
            let hosts = rows
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<Vec<String>, _>>()?;
            tx.execute(
                &format!(
                    "UPDATE hosts SET state='pending', class=NULL, reason=NULL, finished_at=NULL
                     WHERE run_id=$1 AND {OPEN}"
                ),
                &[run_id],
            )
            .await?;
            tx.execute(
                "UPDATE runs SET status='running', finished_at=NULL, exit_code=NULL,
                    halt_reason=NULL WHERE id=$1",
                &[run_id],
            )
            .await?;
            insert_step(
                tx,
                *run_id,
                "",
                "resume",
                "done",
                "",
                &super::sqlite::lease_owner(),
            )
            .await?;
            Answer::Names(hosts)
        }
        Op::Prune(keep_days) => {
            let cutoff = (chrono::Utc::now() - chrono::Duration::days(i64_of(*keep_days)))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let rows = tx
                .query(
                    "SELECT id FROM runs WHERE started_at < $1 AND status <> 'running'",
                    &[&cutoff],
                )
                .await?;
            let ids = rows
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<Vec<i64>, _>>()?;
            for id in &ids {
                tx.execute(
                    "DELETE FROM findings WHERE report_id IN (SELECT id FROM reports WHERE run_id=$1)",
                    &[id],
                )
                .await?;
                for table in ["reports", "steps", "hosts", "notifications"] {
                    tx.execute(&format!("DELETE FROM {table} WHERE run_id=$1"), &[id])
                        .await?;
                }
                tx.execute("DELETE FROM runs WHERE id=$1", &[id]).await?;
            }
            Answer::Names(ids.iter().map(|i| i.to_string()).collect())
        }
        Op::SetHaltReason(run_id, reason) => {
            tx.execute(
                "UPDATE runs SET halt_reason=$1 WHERE id=$2",
                &[reason, run_id],
            )
            .await?;
            Answer::Unit
        }
        Op::RecordNotification(n) => {
            let row = tx
                .query_one(
                    "INSERT INTO notifications(run_id, kind, channel, target, status, attempts,
                        error, hosts, at)
                     VALUES($1,$2,$3,$4,$5,$6,$7,$8,$9) RETURNING id",
                    &[
                        &n.run_id,
                        &n.kind,
                        &n.channel,
                        &n.target,
                        &n.status,
                        &n.attempts,
                        &n.error,
                        &json(&n.hosts, "[]"),
                        &now(),
                    ],
                )
                .await?;
            Answer::Id(row.try_get(0)?)
        }
        Op::HostWaves(run_id) => {
            let rows = tx
                .query(
                    "SELECT host, wave, wave_partition FROM hosts WHERE run_id=$1",
                    &[run_id],
                )
                .await?;
            let mut out = Waves::new();
            for r in rows {
                out.insert(r.try_get(0)?, (r.try_get(1)?, r.try_get(2)?));
            }
            Answer::Waves(out)
        }
        Op::MarkNotStarted(run_id, reason) => {
            tx.execute(
                "UPDATE hosts SET state='done', class='not_started', reason=$1, finished_at=$2
                 WHERE run_id=$3 AND state='pending'",
                &[reason, &now(), run_id],
            )
            .await?;
            Answer::Unit
        }
        Op::StartContainment(c) => {
            let row = tx
                .query_one(
                    "INSERT INTO containments(kind, source_run, operator, controller, actions,
                        hosts, started_at, status)
                     VALUES($1,$2,$3,$4,$5,$6,$7,'running') RETURNING id",
                    &[
                        &c.kind,
                        &c.source_run,
                        &c.operator,
                        &c.controller,
                        &c.actions,
                        &json(&c.hosts, "[]"),
                        &now(),
                    ],
                )
                .await?;
            Answer::Id(row.try_get(0)?)
        }
        Op::FinishContainment(id, recheck, status) => {
            tx.execute(
                "UPDATE containments SET finished_at=$1, status=$2, recheck_run=$3 WHERE id=$4",
                &[&now(), status, recheck, id],
            )
            .await?;
            Answer::Unit
        }
        Op::ActionIntent(a) => {
            let row = tx
                .query_one(
                    "INSERT INTO actions(containment_id, run_id, host, action, target, command,
                        operator, started_at, phase, message)
                     VALUES($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) RETURNING id",
                    &[
                        &a.containment_id,
                        &a.run_id,
                        &a.host,
                        &a.action,
                        &a.target,
                        &a.command,
                        &a.operator,
                        &now(),
                        &a.phase,
                        &a.message,
                    ],
                )
                .await?;
            Answer::Id(row.try_get(0)?)
        }
        Op::ActionResult(id, r) => {
            tx.execute(
                "UPDATE actions SET finished_at=$1, phase=$2, exit_code=$3, output_sha256=$4,
                    verified=$5, message=$6, command=$7, evidence_path=$8
                 WHERE id=$9",
                &[
                    &now(),
                    &r.phase,
                    &r.exit_code,
                    &r.output_sha256,
                    &r.verified,
                    &r.message,
                    &r.command,
                    &r.evidence_path,
                    id,
                ],
            )
            .await?;
            Answer::Unit
        }
    })
}

#[async_trait::async_trait]
impl super::Store for Writer {
    async fn start_run(&self, run: NewRun) -> Result<i64> {
        self.call_id(Op::StartRun(run)).await
    }
    async fn finish_run(&self, run_id: i64, status: &str, exit_code: i32) -> Result<()> {
        self.call_unit(Op::FinishRun(run_id, status.into(), exit_code))
            .await
    }
    fn host_started(&self, run_id: i64, host: &str) {
        self.later(Op::HostStarted(run_id, host.into()))
    }
    async fn intent(&self, run_id: i64, host: &str, step: &str, target: &str) -> Result<()> {
        let row = (step.into(), "intent".into(), target.into(), String::new());
        self.call_unit(Op::Steps(run_id, host.into(), vec![row]))
            .await
    }
    async fn intents(&self, run_id: i64, host: &str, steps: &[(&str, String)]) -> Result<()> {
        let rows = steps
            .iter()
            .map(|(s, t)| (s.to_string(), "intent".into(), t.clone(), String::new()))
            .collect();
        self.call_unit(Op::Steps(run_id, host.into(), rows)).await
    }
    fn outcome(&self, run_id: i64, host: &str, step: &str, ok: bool, target: &str, detail: &str) {
        let phase = if ok { "done" } else { "failed" };
        let row = (step.into(), phase.into(), target.into(), detail.into());
        self.later(Op::Steps(run_id, host.into(), vec![row]))
    }
    fn not_started(&self, run_id: i64, host: &str, step: &str, target: &str, detail: &str) {
        let row = (
            step.into(),
            "not_started".into(),
            target.into(),
            detail.into(),
        );
        self.later(Op::Steps(run_id, host.into(), vec![row]))
    }
    async fn add_report(&self, r: NewReport) -> Result<i64> {
        self.call_id(Op::AddReport(r)).await
    }
    async fn finish_host(&self, run_id: i64, host: &str, fin: HostFinish) -> Result<()> {
        self.call_unit(Op::FinishHost(run_id, host.into(), fin))
            .await
    }
    async fn known_report_names(&self, host: &str) -> Result<Vec<String>> {
        match self.call(Op::KnownReportNames(host.into())).await? {
            Answer::Names(n) => Ok(n),
            _ => bail!("store writer: unexpected answer"),
        }
    }
    async fn acquire_lease(&self, run_id: i64, host: &str, ttl_secs: u64) -> Result<Lease> {
        match self
            .call(Op::AcquireLease(run_id, host.into(), ttl_secs))
            .await?
        {
            Answer::Lease(l) => Ok(l),
            _ => bail!("store writer: unexpected answer"),
        }
    }
    fn release_lease(&self, host: &str) {
        self.later(Op::ReleaseLease(host.into()))
    }
    async fn reopen_run(&self, run_id: i64) -> Result<Vec<String>> {
        match self.call(Op::ReopenRun(run_id)).await? {
            Answer::Names(n) => Ok(n),
            _ => bail!("store writer: unexpected answer"),
        }
    }
    async fn prune(&self, keep_days: u64) -> Result<Vec<i64>> {
        match self.call(Op::Prune(keep_days)).await? {
            Answer::Names(n) => Ok(n.iter().filter_map(|i| i.parse().ok()).collect()),
            _ => bail!("store writer: unexpected answer"),
        }
    }
    async fn set_halt_reason(&self, run_id: i64, reason: &str) -> Result<()> {
        self.call_unit(Op::SetHaltReason(run_id, reason.into()))
            .await
    }
    async fn record_notification(&self, n: NewNotification) -> Result<i64> {
        self.call_id(Op::RecordNotification(n)).await
    }
    async fn host_waves(&self, run_id: i64) -> Result<Waves> {
        match self.call(Op::HostWaves(run_id)).await? {
            Answer::Waves(w) => Ok(w),
            _ => bail!("store writer: unexpected answer"),
        }
    }
    async fn mark_not_started(&self, run_id: i64, reason: &str) -> Result<()> {
        self.call_unit(Op::MarkNotStarted(run_id, reason.into()))
            .await
    }
    async fn start_containment(&self, c: NewContainment) -> Result<i64> {
        self.call_id(Op::StartContainment(c)).await
    }
    async fn finish_containment(
        &self,
        id: i64,
        recheck_run: Option<i64>,
        status: &str,
    ) -> Result<()> {
        self.call_unit(Op::FinishContainment(id, recheck_run, status.into()))
            .await
    }
    async fn action_intent(&self, a: NewAction) -> Result<i64> {
        self.call_id(Op::ActionIntent(a)).await
    }
    async fn action_result(&self, id: i64, r: ActionResult) -> Result<()> {
        self.call_unit(Op::ActionResult(id, r)).await
    }
    fn location(&self) -> String {
        self.location.clone()
    }
    /// Flushes what is queued and waits until it is committed.
    fn close(&self) {
        self.stop();
    }
}

impl Drop for Writer {
    /// Queued writes (outcomes, releases) are committed before the runtime they run on stops,
    /// as the SQLite writer drains its queue when the last handle goes.
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------- the reader

/// Read side: its own connection, waited on synchronously (see the module doc).
pub struct Reader {
    client: Client,
    // After the client: the connection's driver stops once the client is gone.
    _runtime: StoreRuntime,
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

impl Reader {
    /// Connects; never creates or migrates (a database without pushscan's schema is
    /// refused, one from a newer pushscan too).
    pub fn open(t: &Target) -> Result<Reader> {
        let runtime = StoreRuntime::new()?;
        let handle = runtime.handle()?;
        let target = t.clone();
        let client = runtime.run(async move { connect(&target, &handle).await })??;
        let version = block(schema_version(&client))
            .with_context(|| format!("cannot read the store {}", t.display()))?;
        if version == 0 {
            bail!(
                "no pushscan store in {} (no sweep has written to it yet)",
                t.display()
            );
        }
        refuse_newer(version, &t.display())?;
        Ok(Reader {
            client,
            _runtime: runtime,
        })
    }

    fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>> {
        Ok(block(self.client.query(sql, params))?)
    }

    fn query_opt(&self, sql: &str, params: Params<'_>) -> Result<Option<Row>> {
        Ok(block(self.client.query_opt(sql, params))?)
    }

    fn findings(&self, id: i64) -> Result<Vec<Finding>> {
        let rows = self.query(
            "SELECT kind, title, location, severity, identity, attributes FROM findings
             WHERE report_id=$1 ORDER BY idx",
            &[&id],
        )?;
        rows.iter()
            .map(|r| {
                let severity: String = r.try_get(3)?;
                let attributes: String = r.try_get(5)?;
                Ok(Finding {
                    kind: r.try_get(0)?,
                    title: r.try_get(1)?,
                    location: r.try_get(2)?,
                    severity: Severity::parse(&severity).unwrap_or_default(),
                    identity: r.try_get(4)?,
                    attributes: serde_json::from_str(&attributes).unwrap_or_default(),
                })
            })
            .collect()
    }

    fn actions_where(
        &self,
        cond: &str,
        arg: &(dyn ToSql + Sync),
        limit: usize,
    ) -> Result<Vec<ActionRecord>> {
        let limit = i64_of(limit as u64);
        let rows = self.query(
            &format!(
                "SELECT a.id, a.containment_id, c.kind, a.run_id, a.host, a.action, a.target,
                        a.command, a.operator, a.started_at, a.finished_at, a.phase, a.exit_code,
                        a.output_sha256, a.verified, a.message, a.evidence_path, c.recheck_run
                 FROM actions a JOIN containments c ON c.id = a.containment_id
                 WHERE {cond} ORDER BY a.id DESC LIMIT $2"
            ),
            &[arg, &limit],
        )?;
        rows.iter()
            .map(|r| {
                Ok(ActionRecord {
                    id: r.try_get(0)?,
                    containment_id: r.try_get(1)?,
                    kind: r.try_get(2)?,
                    run_id: r.try_get(3)?,
                    host: r.try_get(4)?,
                    action: r.try_get(5)?,
                    target: r.try_get(6)?,
                    command: r.try_get(7)?,
                    operator: r.try_get(8)?,
                    started_at: r.try_get(9)?,
                    finished_at: r.try_get(10)?,
                    phase: r.try_get(11)?,
                    exit_code: r.try_get(12)?,
                    output_sha256: r.try_get(13)?,
                    verified: r.try_get(14)?,
                    message: r.try_get(15)?,
                    evidence_path: r.try_get(16)?,
                    recheck_run: r.try_get(17)?,
                })
            })
            .collect()
    }
}

const RUN_COLUMNS: &str = "SELECT id, started_at, finished_at, status, operator, controller,
    pushscan_version, playbook_path, playbook_name, inventory_path, limit_pattern, forks,
    checker_path, checker_sha256, hosts_targeted, exit_code, halt_reason FROM runs";

fn run_from_row(r: &Row) -> Result<RunInfo> {
    Ok(RunInfo {
        id: r.try_get(0)?,
        started_at: r.try_get(1)?,
        finished_at: r.try_get(2)?,
        status: r.try_get(3)?,
        operator: r.try_get(4)?,
        controller: r.try_get(5)?,
        pushscan_version: r.try_get(6)?,
        playbook: r.try_get(7)?,
        playbook_name: r.try_get(8)?,
        inventory: r.try_get(9)?,
        limit: r.try_get(10)?,
        forks: r.try_get(11)?,
        checker_path: r.try_get(12)?,
        checker_sha256: r.try_get(13)?,
        hosts_targeted: r.try_get(14)?,
        exit_code: r.try_get(15)?,
        halt_reason: r.try_get(16)?,
        counts: Default::default(),
        complete: false,
    })
}

impl super::StoreReader for Reader {
    fn runs(&self, limit: usize) -> Result<Vec<RunInfo>> {
        self.runs_through(i64::MAX, limit)
    }

    fn runs_through(&self, last: i64, limit: usize) -> Result<Vec<RunInfo>> {
        let limit = i64_of(limit as u64);
        let rows = self.query(
            &format!("{RUN_COLUMNS} WHERE id <= $1 ORDER BY id DESC LIMIT $2"),
            &[&last, &limit],
        )?;
        let mut runs = rows.iter().map(run_from_row).collect::<Result<Vec<_>>>()?;
        for run in &mut runs {
            for (class, n) in self.class_counts(run.id)? {
                run.counts
                    .insert(class.unwrap_or_else(|| "unfinished".into()), n);
            }
            run.complete = run.status == "finished"
                && !run
                    .counts
                    .keys()
                    .any(|k| matches!(k.as_str(), "unfinished" | "not_started" | "busy"));
        }
        Ok(runs)
    }

    fn run(&self, id: Option<i64>) -> Result<RunInfo> {
        let found = match id {
            Some(id) => self.query_opt(&format!("{RUN_COLUMNS} WHERE id=$1"), &[&id])?,
            None => self.query_opt(&format!("{RUN_COLUMNS} ORDER BY id DESC LIMIT 1"), &[])?,
        };
        match (found, id) {
            (Some(r), _) => run_from_row(&r),
            (None, Some(id)) => bail!("no run {id} in the store (see `pushscan runs`)"),
            (None, None) => bail!("the store has no runs yet"),
        }
    }

    fn last_unfinished_run(&self) -> Result<Option<i64>> {
        self.query_opt(
            "SELECT id FROM runs WHERE status <> 'finished' ORDER BY id DESC LIMIT 1",
            &[],
        )?
        .map(|r| r.try_get(0))
        .transpose()
        .map_err(Into::into)
    }

    fn run_sources(&self, id: i64) -> Result<RunSources> {
        let r = self
            .query_opt(
                "SELECT playbook_path, playbook_text, inventory_path, inventory_text,
                        limit_pattern, forks, checker_sha256, rollout FROM runs WHERE id=$1",
                &[&id],
            )?
            .with_context(|| format!("no run {id} in the store (see `pushscan runs`)"))?;
        Ok(RunSources {
            playbook_path: r.try_get::<_, Option<String>>(0)?.unwrap_or_default(),
            playbook_text: r.try_get::<_, Option<String>>(1)?.unwrap_or_default(),
            inventory_path: r.try_get::<_, Option<String>>(2)?.unwrap_or_default(),
            inventory_text: r.try_get::<_, Option<String>>(3)?.unwrap_or_default(),
            limit: r.try_get(4)?,
            forks: usize::try_from(r.try_get::<_, Option<i64>>(5)?.unwrap_or(50).max(1))
                .unwrap_or(50),
            checker_sha256: r.try_get::<_, Option<String>>(6)?.unwrap_or_default(),
            rollout: r.try_get(7)?,
        })
    }

    fn run_report_paths(&self, run_id: i64, host: &str) -> Result<Vec<String>> {
        self.query(
            "SELECT remote_path FROM reports WHERE run_id=$1 AND host=$2 AND origin='run'",
            &[&run_id, &host],
        )?
        .iter()
        .map(|r| r.try_get(0).map_err(Into::into))
        .collect()
    }

    fn previous_check(&self, host: &str, before_run: i64) -> Result<Option<HostClass>> {
        let c: Option<String> = self
            .query_opt(
                "SELECT class FROM hosts WHERE host=$1 AND run_id<$2
                   AND class IN ('detected','not_detected') ORDER BY run_id DESC LIMIT 1",
                &[&host, &before_run],
            )?
            .map(|r| r.try_get(0))
            .transpose()?;
        Ok(c.as_deref().and_then(HostClass::parse))
    }

    fn previous_finding_identities(&self, host: &str, before_run: i64) -> Result<HashSet<String>> {
        let report: Option<i64> = self
            .query_opt(
                "SELECT primary_report FROM hosts WHERE host=$1 AND run_id<$2
                   AND class IN ('detected','not_detected') ORDER BY run_id DESC LIMIT 1",
                &[&host, &before_run],
            )?
            .map(|r| r.try_get::<_, Option<i64>>(0))
            .transpose()?
            .flatten();
        Ok(match report {
            None => Default::default(),
            Some(id) => self.findings(id)?.into_iter().map(|f| f.identity).collect(),
        })
    }

    fn last_clean_run(&self, host: &str, before_run: i64) -> Result<Option<i64>> {
        let r = self.query_opt(
            "SELECT MAX(run_id) FROM hosts WHERE host=$1 AND run_id<$2 AND class='not_detected'",
            &[&host, &before_run],
        )?;
        Ok(r.map(|r| r.try_get::<_, Option<i64>>(0))
            .transpose()?
            .flatten())
    }

    fn alerted(&self, channel: &str, host: &str, after_run: i64, upto_run: i64) -> Result<bool> {
        let rows = self.query(
            "SELECT hosts FROM notifications WHERE channel=$1 AND status='ok'
               AND kind='new_detection' AND run_id>$2 AND run_id<=$3",
            &[&channel, &after_run, &upto_run],
        )?;
        for r in rows {
            let hosts: String = r.try_get(0)?;
            let hosts: Vec<String> = serde_json::from_str(&hosts).unwrap_or_default();
            if hosts.iter().any(|h| h == host) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn notifications(&self, run: Option<i64>) -> Result<Vec<NotificationRecord>> {
        let rows = self.query(
            "SELECT id, run_id, kind, channel, target, status, attempts, error, hosts, at
             FROM notifications WHERE ($1::bigint IS NULL OR run_id=$1) ORDER BY id",
            &[&run],
        )?;
        rows.iter()
            .map(|r| {
                let hosts: String = r.try_get(8)?;
                Ok(NotificationRecord {
                    id: r.try_get(0)?,
                    run_id: r.try_get(1)?,
                    kind: r.try_get(2)?,
                    channel: r.try_get(3)?,
                    target: r.try_get(4)?,
                    status: r.try_get(5)?,
                    attempts: r.try_get(6)?,
                    error: r.try_get(7)?,
                    hosts: serde_json::from_str(&hosts).unwrap_or_default(),
                    at: r.try_get(9)?,
                })
            })
            .collect()
    }

    fn host_actions(&self, host: &str, limit: usize) -> Result<Vec<ActionRecord>> {
        self.actions_where("a.host=$1", &host, limit)
    }

    fn run_actions(&self, run_id: i64) -> Result<Vec<ActionRecord>> {
        let mut v = self.actions_where(
            "(a.run_id=$1 OR c.recheck_run=$1)",
            &run_id,
            usize::MAX >> 1,
        )?;
        v.reverse();
        Ok(v)
    }

    fn last_success(&self, host: &str) -> Result<Option<String>> {
        self.query_opt(
            "SELECT finished_at FROM hosts WHERE host=$1
               AND class IN ('detected','not_detected')
             ORDER BY finished_at DESC LIMIT 1",
            &[&host],
        )?
        .map(|r| r.try_get::<_, Option<String>>(0))
        .transpose()
        .map(Option::flatten)
        .map_err(Into::into)
    }

    fn host_history(
        &self,
        host: &str,
        limit: usize,
    ) -> Result<(Vec<HistoryItem>, Vec<ReportRecord>)> {
        let limit = i64_of(limit as u64);
        let rows = self.query(
            "SELECT h.run_id, r.started_at, h.class, h.reason, h.finished_at, h.primary_report
             FROM hosts h JOIN runs r ON r.id = h.run_id
             WHERE h.host=$1 AND h.class IS NOT NULL ORDER BY h.run_id DESC LIMIT $2",
            &[&host, &limit],
        )?;
        let mut items = Vec::new();
        for r in rows {
            let report: Option<i64> = r.try_get(5)?;
            items.push(HistoryItem {
                run_id: r.try_get(0)?,
                run_started_at: r.try_get(1)?,
                class: r.try_get(2)?,
                reason: r.try_get(3)?,
                finished_at: r.try_get(4)?,
                report: match report {
                    Some(id) => self.report(id)?,
                    None => None,
                },
            });
        }
        let rows = self.query(
            // Byte order, as SQLite's: the database's collation may be a language's.
            "SELECT id FROM reports WHERE host=$1 AND origin='history'
             ORDER BY remote_name COLLATE \"C\" DESC LIMIT $2",
            &[&host, &limit],
        )?;
        let mut found = Vec::new();
        for r in rows {
            if let Some(rep) = self.report(r.try_get(0)?)? {
                found.push(rep);
            }
        }
        Ok((items, found))
    }

    fn class_counts(&self, run_id: i64) -> Result<Vec<(Option<String>, i64)>> {
        self.query(
            "SELECT class, COUNT(*) FROM hosts WHERE run_id=$1 GROUP BY class",
            &[&run_id],
        )?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
    }

    fn hosts(&self, run_id: i64) -> Result<Vec<HostRecord>> {
        let rows = self.query(
            "SELECT host, address, port, transport, groups, group_paths, class, reason,
                    started_at, finished_at, duration_ms, pushed, exit_code, primary_report,
                    wave, wave_partition
             FROM hosts WHERE run_id=$1 ORDER BY seq",
            &[&run_id],
        )?;
        let mut out = Vec::new();
        for r in rows {
            let groups: Option<String> = r.try_get(4)?;
            let paths: Option<String> = r.try_get(5)?;
            let class: Option<String> = r.try_get(6)?;
            let report: Option<i64> = r.try_get(13)?;
            out.push(HostRecord {
                host: r.try_get(0)?,
                address: r.try_get(1)?,
                port: r.try_get(2)?,
                transport: r.try_get(3)?,
                groups: groups
                    .and_then(|g| serde_json::from_str(&g).ok())
                    .unwrap_or_default(),
                group_paths: paths
                    .and_then(|g| serde_json::from_str(&g).ok())
                    .unwrap_or_default(),
                class: class.as_deref().and_then(HostClass::parse),
                reason: r.try_get(7)?,
                started_at: r.try_get(8)?,
                finished_at: r.try_get(9)?,
                duration_ms: r.try_get(10)?,
                pushed: r.try_get(11)?,
                exit_code: r.try_get(12)?,
                wave: r.try_get(14)?,
                wave_partition: r.try_get(15)?,
                report: match report {
                    Some(id) => self.report(id)?,
                    None => None,
                },
            });
        }
        Ok(out)
    }

    fn report(&self, id: i64) -> Result<Option<ReportRecord>> {
        let Some(r) = self.query_opt(
            "SELECT id, remote_name, local_path, sha256, size, status, hostname, scan_time,
                    checker_version, format, warnings, parser
             FROM reports WHERE id=$1",
            &[&id],
        )?
        else {
            return Ok(None);
        };
        let warnings: Option<String> = r.try_get(10)?;
        let findings = self.findings(id)?;
        Ok(Some(ReportRecord {
            id: r.try_get(0)?,
            remote_name: r.try_get(1)?,
            local_path: r.try_get(2)?,
            sha256: r.try_get(3)?,
            size: r.try_get(4)?,
            status: r.try_get(5)?,
            hostname: r.try_get(6)?,
            scan_time: r.try_get(7)?,
            checker_version: r.try_get(8)?,
            format: r.try_get(9)?,
            warnings: warnings
                .and_then(|w| serde_json::from_str(&w).ok())
                .unwrap_or_default(),
            parser: r.try_get(11)?,
            processes: processes_of(&findings),
            findings,
        }))
    }

    fn report_raw_prefix(&self, id: i64, max: usize) -> Result<Option<(Vec<u8>, i64)>> {
        // substring() counts in int4.
        let max = i32::try_from(max).unwrap_or(i32::MAX);
        let Some(r) = self.query_opt(
            "SELECT substring(raw FROM 1 FOR $2), octet_length(raw) FROM reports WHERE id=$1",
            &[&id, &max],
        )?
        else {
            return Ok(None);
        };
        let prefix: Option<Vec<u8>> = r.try_get(0)?;
        let size: i32 = r.try_get(1)?;
        Ok(Some((prefix.unwrap_or_default(), i64::from(size))))
    }

    fn recent_results(
        &self,
        run_id: i64,
        per_host: usize,
    ) -> Result<HashMap<String, Vec<RecentResult>>> {
        let mut out: HashMap<String, Vec<RecentResult>> = HashMap::new();
        if per_host == 0 {
            return Ok(out);
        }
        let per_host = i64_of(per_host as u64);
        let rows = self.query(
            "SELECT host, run_id, started_at, class FROM (
                SELECT h.host, h.run_id, r.started_at, h.class,
                       ROW_NUMBER() OVER (PARTITION BY h.host ORDER BY h.run_id DESC) AS rn
                FROM hosts h JOIN runs r ON r.id = h.run_id
                WHERE h.run_id <= $1 AND h.host IN (SELECT host FROM hosts WHERE run_id = $1)
             ) AS recent WHERE rn <= $2 ORDER BY host, run_id",
            &[&run_id, &per_host],
        )?;
        for r in rows {
            let host: String = r.try_get(0)?;
            out.entry(host).or_default().push(RecentResult {
                run_id: r.try_get(1)?,
                started_at: r.try_get(2)?,
                class: r.try_get(3)?,
            });
        }
        Ok(out)
    }

    fn report_raw(&self, id: i64) -> Result<Option<Vec<u8>>> {
        self.query_opt("SELECT raw FROM reports WHERE id=$1", &[&id])?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(Into::into)
    }

    fn steps(&self, run_id: i64, host: Option<&str>) -> Result<Vec<StepRecord>> {
        let rows = self.query(
            "SELECT host, step, phase, target, detail, at FROM steps
             WHERE run_id=$1 AND ($2::text IS NULL OR host=$2) ORDER BY id",
            &[&run_id, &host],
        )?;
        rows.iter()
            .map(|r| {
                Ok(StepRecord {
                    host: r.try_get(0)?,
                    step: r.try_get(1)?,
                    phase: r.try_get(2)?,
                    target: r.try_get(3)?,
                    detail: r.try_get(4)?,
                    at: r.try_get(5)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Target> {
        Target::parse(
            s,
            PasswordSource {
                file: None,
                env: None,
            },
        )
    }

    #[test]
    fn a_url_gives_its_parts_with_libpq_defaults() {
        let t = parse("postgres://scan%40corp@db.example/push%20scan").expect("parses");
        assert_eq!(t.user, "scan@corp");
        assert_eq!(t.dbname, "push scan");
        assert_eq!(t.host, "db.example");
        assert_eq!(t.port, 5432);
        assert!(matches!(t.sslmode, SslMode::VerifyFull));
        assert_eq!(
            t.display(),
            "postgres://scan@corp@db.example:5432/push scan"
        );
        let t = parse(
            "postgresql://u@[::1]:6432/d?sslmode=verify-ca&sslrootcert=/ca.pem&passfile=/pw&connect_timeout=0",
        )
        .expect("parses");
        assert_eq!((t.host.as_str(), t.port), ("::1", 6432));
        assert!(matches!(t.sslmode, SslMode::VerifyCa));
        assert_eq!(t.sslrootcert.as_deref(), Some("/ca.pem"));
        assert_eq!(t.password.file.as_deref(), Some(Path::new("/pw")));
        assert_eq!(t.connect_timeout, std::time::Duration::from_secs(1));
    }

    #[test]
    fn passwords_unknown_parameters_and_bad_names_are_refused() {
        for (url, says) in [
            ("postgres://u:secret@h/d", "password in the URL is refused"),
            (
                "postgres://u@h/d?password=secret",
                "password in the URL is refused",
            ),
            ("postgres://u@h/d?options=-c", "not supported"),
            ("postgres://u@h/d?sslmode=prefer", "sslmode"),
            ("postgres://u@h/%ff", "not UTF-8"),
            ("postgres:///d", "no host"),
        ] {
            let e = format!(
                "{:#}",
                parse(url).err().unwrap_or_else(|| panic!("{url} parsed"))
            );
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains("secret"), "{url}: the password is echoed: {e}");
        }
    }
}
