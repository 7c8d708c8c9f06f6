//! The `winrm` transport, for Windows hosts: commands over WinRM
//! (`winrm-rs`), files over SMB (`smb2`) through the administrative shares,
//! and, when SMB is closed or refused, files through the WinRM shell alone.
//!
//! Why two protocols: WinRM is the only agentless way to start a process on
//! Windows without PowerShell remoting or a service install, but moving a
//! binary through it means base64 in SOAP envelopes; SMB moves files at wire
//! speed with one round trip per small read. So each host gets one SMB
//! session (reused for every file step) and one WinRM shell (reused for
//! every command). The fallback is per host and said in the host's reason.
//!
//! Security choices, all deliberate: NTLMv2 with message sealing over HTTP by
//! default; HTTPS verifies certificates (a private CA with `--ca-cert`);
//! Basic only inside HTTPS whose certificate is verified (Basic hands the
//! password itself to whoever answers, so an unverified peer is refused
//! before any connection); CredSSP is refused (it hands the operator's
//! password to a host that may be compromised). The password lives in a
//! `SecretString` and in the two clients' memory; it is never on a command
//! line, in a log, the journal or a report.

pub mod credentials;
// Items the SMB execution path has not called yet are kept: they are its protocol.
#[allow(dead_code)]
mod dcerpc;
mod entry;
mod exec;
mod private;
#[allow(dead_code)]
mod scmr;
// Not yet reached from `WinConnection`: the SMB-only execution path's mechanism.
mod shellfs;
#[allow(dead_code)]
mod smbexec;
mod smbfs;

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use winrm_rs::{AuthMethod, EncryptionMode, WinrmClient, WinrmConfig, WinrmCredentials};

use super::{cmd, HostInfo};
use super::{CommandSpec, Connection, ExecOutcome, RemoteEntry, TResult, TransportError};
use crate::model::HostClass;
pub use entry::ENTRY;
pub use smbfs::ShareMode;

/// How a host authenticates over WinRM (`ansible_winrm_transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WinAuth {
    Ntlm,
    Basic,
    Kerberos,
}

/// The account and password for one host. Built per host from the
/// credential store; the password is zeroized when dropped.
#[derive(Clone)]
pub struct WinLogin {
    pub user: String,
    pub domain: String,
    pub password: SecretString,
}

impl std::fmt::Debug for WinLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WinLogin")
            .field("user", &self.user)
            .field("domain", &self.domain)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Whether SMB is used for files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmbUse {
    /// SMB when it answers, else files through WinRM (said in the report).
    Auto,
    /// Files through WinRM only.
    Off,
}

/// How commands reach the host (`pushscan_exec`, `--exec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecUse {
    /// WinRM when it answers; over SMB (a one-shot service) when its port is closed.
    Auto,
    WinRm,
    /// Over SMB only: WinRM is not contacted.
    Smb,
}

/// Everything about reaching one Windows host, from its inventory vars.
#[derive(Debug, Clone)]
pub struct WinTarget {
    pub address: String,
    pub port: u16,
    pub https: bool,
    pub auth: WinAuth,
    /// `ansible_winrm_server_cert_validation: ignore` turns this off.
    pub verify_tls: bool,
    pub share: ShareMode,
    pub smb_port: u16,
    pub smb: SmbUse,
    pub exec: ExecUse,
}

impl WinTarget {
    /// Reads the Ansible WinRM variables of `host`. Refusals (CredSSP,
    /// Basic over HTTP or over HTTPS without certificate validation, unknown
    /// values) are errors before any connection.
    pub fn from_host(host: &dyn HostInfo) -> Result<WinTarget, String> {
        let var = |k: &str| -> Option<String> {
            host.vars().get(k).map(|v| match v {
                serde_json::Value::String(s) => s.trim().to_string(),
                other => other.to_string(),
            })
        };
        let scheme = var("ansible_winrm_scheme").map(|s| s.to_ascii_lowercase());
        let https = match scheme.as_deref() {
            Some("https") => true,
            Some("http") => false,
            Some(other) => {
                return Err(format!("ansible_winrm_scheme {other:?}: use http or https"))
            }
            None => host.port() == Some(5986),
        };
        let port = host.port().unwrap_or(if https { 5986 } else { 5985 });
        let transport = var("ansible_winrm_transport")
            .map(|s| {
                // Ansible accepts a list ("ntlm,kerberos"): the first is used.
                s.trim_matches(['[', ']'])
                    .split(',')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .trim_matches(['"', '\''])
                    .to_ascii_lowercase()
            })
            .unwrap_or_else(|| "ntlm".into());
        let auth = match transport.as_str() {
            "ntlm" | "negotiate" => WinAuth::Ntlm,
            "kerberos" => WinAuth::Kerberos,
            "basic" | "plaintext" => WinAuth::Basic,
            "credssp" => {
                return Err("ansible_winrm_transport credssp is refused: CredSSP delegates \
                            your password to the host, which may be compromised; use ntlm or kerberos"
                    .into())
            }
            other => {
                return Err(format!(
                    "ansible_winrm_transport {other:?} is not supported (ntlm, kerberos, basic)"
                ))
            }
        };
        if auth == WinAuth::Basic && !https {
            return Err(
                "Basic authentication over HTTP is refused: it sends the password \
                        in clear; use ansible_winrm_scheme: https or ntlm"
                    .into(),
            );
        }
        let verify_tls = match var("ansible_winrm_server_cert_validation")
            .map(|s| s.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("validate") => true,
            Some("ignore") => false,
            Some(other) => {
                return Err(format!(
                    "ansible_winrm_server_cert_validation {other:?}: use validate or ignore"
                ))
            }
        };
        if auth == WinAuth::Basic && !verify_tls {
            return Err(BASIC_UNVERIFIED.into());
        }
        let share = match var("pushscan_smb_share")
            .map(|s| s.to_ascii_uppercase())
            .as_deref()
        {
            None | Some("ADMIN$") => ShareMode::Admin,
            Some("C$") => ShareMode::Drive,
            Some(other) => return Err(format!("pushscan_smb_share {other:?}: use ADMIN$ or C$")),
        };
        let smb_port = match var("pushscan_smb_port") {
            None => 445,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("pushscan_smb_port {p:?} is not a port"))?,
        };
        let smb = match var("pushscan_smb")
            .map(|s| s.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("auto") | Some("true") => SmbUse::Auto,
            Some("off") | Some("false") => SmbUse::Off,
            Some(other) => return Err(format!("pushscan_smb {other:?}: use auto or off")),
        };
        let exec = match var("pushscan_exec")
            .map(|s| s.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("auto") => ExecUse::Auto,
            Some("winrm") => ExecUse::WinRm,
            Some("smb") => ExecUse::Smb,
            Some(other) => return Err(format!("pushscan_exec {other:?}: use auto, winrm or smb")),
        };
        if exec == ExecUse::Smb && smb == SmbUse::Off {
            return Err("pushscan_exec smb needs SMB: pushscan_smb is off".into());
        }
        Ok(WinTarget {
            address: host.address().to_string(),
            port,
            https,
            auth,
            verify_tls,
            share,
            smb_port,
            smb,
            exec,
        })
    }
}

/// Why Basic is refused over HTTPS whose certificate is not checked: Basic
/// sends the password itself (base64) in every request, and without a
/// verified certificate "every request" goes to whoever answers the address.
const BASIC_UNVERIFIED: &str = "Basic authentication over HTTPS without certificate \
     validation is refused: it sends the password to whatever answers; verify the \
     certificate (ansible_winrm_server_cert_validation: validate, --ca-cert for a private CA, \
     no --insecure-skip-tls-verify) or use ntlm or kerberos";

/// Sweep-wide WinRM/SMB settings (from the command line).
#[derive(Debug, Clone)]
pub struct WinrmOptions {
    /// PEM of the CA that HTTPS listener certificates chain to.
    pub ca_pem: Option<String>,
    /// `--insecure-skip-tls-verify`: no certificate check for any host.
    pub insecure: bool,
    pub connect_timeout: Duration,
    /// SMB for files unless `Off` (then WinRM only for every host).
    pub smb: SmbUse,
    /// Refuse SMB sessions the server does not encrypt.
    pub smb_require_encryption: bool,
    /// `--exec`: `Auto` leaves it to each host's `pushscan_exec`.
    pub exec: ExecUse,
}

impl Default for WinrmOptions {
    fn default() -> Self {
        WinrmOptions {
            ca_pem: None,
            insecure: false,
            connect_timeout: Duration::from_secs(10),
            smb: SmbUse::Auto,
            smb_require_encryption: false,
            exec: ExecUse::Auto,
        }
    }
}

/// Opens [`WinConnection`]s.
pub struct WinrmConnector {
    opts: WinrmOptions,
}

impl WinrmConnector {
    pub fn new(opts: WinrmOptions) -> WinrmConnector {
        WinrmConnector { opts }
    }

    /// Connects WinRM (authenticating and opening the shell) and SMB at the
    /// same time; SMB trouble other than a refused password falls back to
    /// WinRM-only file transfers for this host. `probe` is a remote path the
    /// sweep will use (its share is opened as part of the check).
    pub async fn connect(
        &self,
        t: &WinTarget,
        login: &WinLogin,
        probe: &str,
    ) -> TResult<WinConnection> {
        let exec = self.exec_use(t);
        let want_smb = t.smb == SmbUse::Auto && self.opts.smb == SmbUse::Auto;
        let smb = async {
            if !want_smb {
                return Err(TransportError::error(
                    "SMB not used for this host (configured)",
                ));
            }
            let password = login.password.expose_secret();
            smbfs::SmbFiles::connect(
                smbfs::SmbLogin {
                    addr: format!("{}:{}", smb_host(&t.address), t.smb_port),
                    user: &login.user,
                    domain: &login.domain,
                    password,
                    timeout: self.opts.connect_timeout,
                    require_encryption: self.opts.smb_require_encryption,
                },
                t.share,
                probe,
            )
            .await
        };
        if exec == ExecUse::Smb {
            if !want_smb {
                return Err(TransportError::error(
                    "commands over SMB (--exec smb / pushscan_exec smb) but SMB is off",
                ));
            }
            let files = smb.await?;
            return WinConnection::over_smb(files, "commands over SMB (configured)".into());
        }
        let client = self.client(t, login)?;
        let host = t.address.clone();
        let limit = self.opts.connect_timeout + Duration::from_secs(30);
        let winrm = exec::Remote::open(client, host, limit);
        let (remote, files) = tokio::join!(winrm, smb);
        let remote = match remote {
            Ok(r) => r,
            // WinRM's port closed or silent, SMB open: the host is swept over SMB alone.
            Err(e) if exec == ExecUse::Auto && e.class == HostClass::Unreachable => {
                return match files {
                    Ok(f) => WinConnection::over_smb(
                        f,
                        format!("commands over SMB (WinRM: {})", e.message),
                    ),
                    Err(_) => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
        let mut notes = Vec::new();
        let files = match files {
            Ok(f) => {
                if !f.encrypted {
                    tracing::debug!(host = %t.address, "SMB session signed, not encrypted");
                }
                Some(f)
            }
            Err(e) => {
                if want_smb {
                    notes.push(format!("files over WinRM ({})", e.message));
                } else {
                    notes.push("files over WinRM (SMB off)".into());
                }
                None
            }
        };
        if t.https && (!t.verify_tls || self.opts.insecure) {
            notes.push("TLS certificate NOT verified".into());
        }
        Ok(WinConnection {
            remote: Some(remote),
            seed: String::new(),
            smb_commands: 0,
            smb_unsure: false,
            files,
            notes,
            proven: Vec::new(),
            refused: Vec::new(),
        })
    }

    /// `--exec winrm|smb` applies to every host; `--exec auto` leaves it to `pushscan_exec`.
    fn exec_use(&self, t: &WinTarget) -> ExecUse {
        match self.opts.exec {
            ExecUse::Auto => t.exec,
            forced => forced,
        }
    }

    fn client(&self, t: &WinTarget, login: &WinLogin) -> TResult<WinrmClient> {
        let verified_tls = t.https && t.verify_tls && !self.opts.insecure;
        let auth_method = match t.auth {
            WinAuth::Ntlm => AuthMethod::Ntlm,
            // Checked here too, where `--insecure-skip-tls-verify` is known,
            // so no path builds a Basic client towards an unverified peer.
            WinAuth::Basic if !verified_tls => {
                return Err(TransportError::error(if t.https {
                    BASIC_UNVERIFIED
                } else {
                    "Basic authentication over HTTP is refused: it sends the password in clear"
                }))
            }
            WinAuth::Basic => AuthMethod::Basic,
            WinAuth::Kerberos => {
                if cfg!(feature = "kerberos") {
                    AuthMethod::Kerberos
                } else {
                    return Err(TransportError::error(
                        "kerberos: this build has no Kerberos support; rebuild with \
                         `cargo build --release --features kerberos` (see README)",
                    ));
                }
            }
        };
        let config = WinrmConfig {
            port: t.port,
            use_tls: t.https,
            accept_invalid_certs: t.https && (self.opts.insecure || !t.verify_tls),
            connect_timeout_secs: self.opts.connect_timeout.as_secs().max(1),
            // Each Receive is held at most this long by the host: a long
            // checker run is a series of polls, each well inside HTTP limits.
            operation_timeout_secs: 20,
            auth_method,
            // Windows' default MaxEnvelopeSizekb is 500: large envelopes mean
            // fewer round trips for output and WinRM-only transfers.
            max_envelope_size: 512_000,
            encryption: EncryptionMode::Auto,
            ca_cert_pem: self.opts.ca_pem.clone(),
            // We never hand a proxy our NTLM exchange: neither one configured
            // nor one the environment names for the operator's web traffic.
            proxy: None,
            no_env_proxy: true,
            ..WinrmConfig::default()
        };
        let creds = WinrmCredentials {
            username: login.user.clone(),
            password: login.password.clone(),
            domain: login.domain.clone(),
        };
        WinrmClient::builder(config)
            .credentials(creds)
            .build()
            .map_err(|e| exec::classify("winrm client", &e))
    }
}

/// An IPv6 literal needs brackets in `host:port`.
fn smb_host(address: &str) -> String {
    if address.contains(':') && !address.starts_with('[') {
        format!("[{address}]")
    } else {
        address.to_string()
    }
}

/// One Windows host: a WinRM shell and, when available, an SMB session; or,
/// when commands run over SMB ([`ExecUse`]), the SMB session alone.
pub struct WinConnection {
    /// `None`: commands run as one-shot services over SMB (`smbexec`).
    remote: Option<exec::Remote>,
    /// Over SMB: the connection's random name; its commands' services and files are
    /// `pushscan-<seed>-<n>...` for n below [`MAX_SMB_COMMANDS`], which is what `cleanup`
    /// looks for once `pushscan-<seed>` is in the journal.
    seed: String,
    /// Commands run over SMB so far.
    smb_commands: usize,
    /// A command over SMB failed or timed out: its service or files may still be on the
    /// host (its wrapper may write its exit-code file late), so only `cleanup` may call
    /// this connection's footprint gone.
    smb_unsure: bool,
    files: Option<smbfs::SmbFiles>,
    notes: Vec<String>,
    /// Directories shown private in this session (see [`private`]); nothing is written,
    /// renamed or removed in any other.
    proven: Vec<String>,
    /// Directories shown not private: left alone for the rest of the session.
    refused: Vec<String>,
}

/// Bound of one proof command.
const PROOF_TIMEOUT: Duration = Duration::from_secs(120);
/// Output kept from a proof command (a few short listings and ACLs).
const PROOF_CAP: usize = 256 * 1024;

impl WinConnection {
    fn over_smb(files: smbfs::SmbFiles, note: String) -> TResult<WinConnection> {
        Ok(WinConnection {
            remote: None,
            seed: smbexec::random_hex()?,
            smb_commands: 0,
            smb_unsure: false,
            files: Some(files),
            notes: vec![note],
            proven: Vec::new(),
            refused: Vec::new(),
        })
    }

    /// The footprint of each command a connection with `seed` may have run over SMB.
    fn footprints(seed: &str) -> impl Iterator<Item = smbexec::Footprint> + '_ {
        (0..MAX_SMB_COMMANDS).map(move |n| smbexec::Footprint::new(&format!("{seed}-{n}")))
    }
}

/// The most commands one connection runs over SMB (a sweep runs a few: the directory
/// proofs and the checker); `cleanup` checks this many names per journaled connection.
const MAX_SMB_COMMANDS: usize = 32;

/// The journal step naming a connection's services over SMB (`pushscan-<seed>`).
const SMB_SERVICE_STEP: &str = super::OWN_STEP;

/// Where commands over SMB run when the caller gives no directory.
const WINDIR: &str = r"C:\Windows";

impl WinConnection {
    /// The WinRM shell, for the transfers that go through it.
    fn shell(&self) -> TResult<&exec::Remote> {
        self.remote
            .as_ref()
            .ok_or_else(|| TransportError::error("no WinRM shell on this host (commands over SMB)"))
    }

    /// Runs a cmd line: in the WinRM shell, or as a one-shot service over SMB.
    async fn run_line(
        &mut self,
        cwd: &str,
        line: &str,
        image: Option<&str>,
        timeout: Duration,
        cap: usize,
    ) -> TResult<ExecOutcome> {
        if let Some(r) = &self.remote {
            return r.run(line, timeout, cap).await;
        }
        let files = self
            .files
            .as_mut()
            .ok_or_else(|| TransportError::error("neither WinRM nor SMB on this host"))?;
        // A trailing `exit /b 0` (the directory proof's: its status is in its output)
        // would end the wrapper's cmd before it writes the exit-code file.
        let line = line.strip_suffix(" & exit /b 0").unwrap_or(line);
        let n = self.smb_commands;
        if n >= MAX_SMB_COMMANDS {
            return Err(TransportError::error(format!(
                "more than {MAX_SMB_COMMANDS} commands over SMB in one connection"
            )));
        }
        self.smb_commands += 1;
        let fp = smbexec::Footprint::new(&format!("{}-{n}", self.seed));
        let job = smbexec::Job {
            line,
            cwd,
            image,
            timeout,
            output_cap: cap,
        };
        // `pushscan-<seed>`, which names every service and file of this connection, was
        // journaled before the first command (`own_intents`).
        let out = smbexec::run(files, &job, &fp, || async { Ok(()) }).await;
        if !matches!(&out, Ok(o) if !o.timed_out) {
            self.smb_unsure = true;
        }
        out
    }

    fn is_proven(&self, dir: &str) -> bool {
        let d = dir.replace('/', "\\");
        let d = d.trim_end_matches('\\');
        self.proven.iter().any(|p| p.eq_ignore_ascii_case(d))
    }

    /// Runs the proof of `dirs`, creating those of `create` that are missing, and records
    /// the private ones. Returns the missing ones; an unsafe one is an error naming what
    /// the host showed.
    async fn prove(&mut self, dirs: &[String], create: &[String]) -> TResult<Vec<String>> {
        let line = private::command(dirs, create)?;
        let out = self
            .run_line(WINDIR, &line, None, PROOF_TIMEOUT, PROOF_CAP)
            .await?;
        if out.timed_out || out.truncated_bytes > 0 {
            return Err(private::refusal(
                "the host's answer to the proof was cut short",
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut missing = Vec::new();
        for (d, state) in private::states(dirs, &text)? {
            match state {
                private::DirState::Private => {
                    if !self.is_proven(&d) {
                        self.proven.push(d);
                    }
                }
                private::DirState::Missing => missing.push(d),
                private::DirState::Unsafe(why) => {
                    self.refused.push(d);
                    return Err(private::refusal(&why));
                }
            }
        }
        Ok(missing)
    }

    /// Whether the directory holding `path` may be written in: proven in this session, or
    /// proven now (without creating it). `Ok(false)`: it does not exist.
    async fn parent_private(&mut self, path: &str) -> TResult<bool> {
        let p = path.replace('/', "\\");
        let Some((parent, _)) = p.trim_end_matches('\\').rsplit_once('\\') else {
            return Err(TransportError::error("not an absolute Windows path"));
        };
        if self.is_proven(parent) {
            return Ok(true);
        }
        if self.refused.iter().any(|r| r.eq_ignore_ascii_case(parent)) {
            return Err(TransportError::error(format!(
                "{} left alone: its directory is not private",
                crate::sanitize::display(path, 120)
            )));
        }
        let dirs = [parent.to_string()];
        Ok(self.prove(&dirs, &[]).await?.is_empty())
    }
}

#[async_trait]
impl Connection for WinConnection {
    /// Creates the missing directories with a protected DACL and proves every one private
    /// (owner, ACL, no reparse point on the path), over the WinRM shell whichever way files
    /// go: SMB cannot show an owner or an ACL in the form the proof reads.
    async fn mkdirs(&mut self, dirs: &[String]) -> TResult<()> {
        let mut create = dirs.to_vec();
        // Each round creates at least the first missing directory; a directory missing
        // below one that already existed needs a round of its own (see `private::command`).
        for _ in 0..=dirs.len() {
            let missing = self.prove(dirs, &create).await?;
            if missing.is_empty() {
                return Ok(());
            }
            if missing.first() == create.first() {
                return Err(TransportError::error(format!(
                    "mkdir {}: not created",
                    crate::sanitize::display(&missing[0], 120)
                )));
            }
            create = missing;
        }
        Err(TransportError::error("mkdir: directories not created"))
    }

    /// The same proof, creating nothing (a missing directory holds nothing of ours).
    async fn prove_dirs(&mut self, dirs: &[String]) -> TResult<()> {
        self.prove(dirs, &[]).await.map(|_| ())
    }

    async fn sha256(&mut self, path: &str) -> TResult<Option<String>> {
        match &mut self.files {
            Some(f) => f.sha256(path).await,
            None => shellfs::sha256(self.shell()?, path).await,
        }
    }

    async fn install(&mut self, local: &Path, tmp: &str, dest: &str, pin: &str) -> TResult<()> {
        for p in [tmp, dest] {
            if !self.parent_private(p).await? {
                return Err(TransportError::error(format!(
                    "{}: its directory does not exist",
                    crate::sanitize::display(p, 120)
                )));
            }
        }
        match &mut self.files {
            Some(f) => f.install(local, tmp, dest, pin).await,
            None => shellfs::install(self.shell()?, local, tmp, dest, pin).await,
        }
    }

    async fn exec(&mut self, cmd: &CommandSpec) -> TResult<ExecOutcome> {
        let line = cmd::command_line(&cmd.program, &cmd.args)?;
        self.run_line(
            &cmd.cwd,
            &line,
            Some(&cmd.program),
            cmd.timeout,
            cmd.output_cap,
        )
        .await
    }

    /// The line goes to the host's cmd.exe shell as it is (the caller quoted it).
    async fn exec_line(
        &mut self,
        line: &str,
        timeout: Duration,
        output_cap: usize,
    ) -> TResult<ExecOutcome> {
        self.run_line(WINDIR, line, None, timeout, output_cap).await
    }

    async fn list_dir(&mut self, dir: &str) -> TResult<Vec<RemoteEntry>> {
        match &mut self.files {
            Some(f) => f.list_dir(dir).await,
            None => shellfs::list_dir(self.shell()?, dir).await,
        }
    }

    async fn read_file(&mut self, path: &str, cap: u64) -> TResult<Vec<u8>> {
        match &mut self.files {
            Some(f) => f.read_file(path, cap).await,
            None => shellfs::read_file(self.shell()?, path, cap).await,
        }
    }

    /// Only in a directory proven private: a link planted in anyone else's could turn a
    /// delete into the deletion of what it points to.
    async fn remove_file(&mut self, path: &str) -> TResult<()> {
        if !self.parent_private(path).await? {
            return Ok(());
        }
        match &mut self.files {
            Some(f) => f.remove_file(path).await,
            None => shellfs::remove_file(self.shell()?, path).await,
        }
    }

    async fn remove_dir_if_empty(&mut self, path: &str) -> TResult<bool> {
        if !self.is_proven(path) && !self.parent_private(&format!("{path}\\x")).await? {
            return Ok(true);
        }
        match &mut self.files {
            Some(f) => f.remove_dir_if_empty(path).await,
            None => shellfs::remove_dir_if_empty(self.shell()?, path).await,
        }
    }

    /// 64-bit Windows has `%windir%\SysWOW64` (the 32-bit subsystem).
    async fn is_64bit(&mut self) -> TResult<Option<bool>> {
        match &mut self.files {
            Some(f) => f.is_dir(r"C:\Windows\SysWOW64").await.map(Some),
            None => shellfs::is_dir(self.shell()?, r"C:\Windows\SysWOW64")
                .await
                .map(Some),
        }
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    fn own_intents(&self) -> Vec<(&'static str, String)> {
        if self.remote.is_some() {
            return Vec::new();
        }
        vec![(
            SMB_SERVICE_STEP,
            format!("{}{}", smbexec::SERVICE_PREFIX, self.seed),
        )]
    }

    fn own_removed(&self) -> Vec<(&'static str, String)> {
        if self.smb_unsure {
            return Vec::new();
        }
        self.own_intents()
    }

    /// Deletes every service (checking ROpenServiceW answers 1060) and file that a connection
    /// journaled as `pushscan-<seed>` may have left, over SMB whichever way this one runs
    /// commands.
    async fn remove_own(
        &mut self,
        step: &str,
        targets: &[String],
        running: &[String],
    ) -> TResult<()> {
        if step != SMB_SERVICE_STEP || targets.is_empty() {
            return Ok(());
        }
        let Some(files) = self.files.as_mut() else {
            return Err(TransportError::error(
                "the services of commands over SMB need SMB to be removed",
            ));
        };
        let mut seeds = Vec::new();
        for t in targets {
            match t.strip_prefix(smbexec::SERVICE_PREFIX) {
                Some(seed) if !seed.is_empty() && seed.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    seeds.push(seed.to_string())
                }
                _ => {
                    return Err(TransportError::error(format!(
                        "journal: {} is not a name pushscan gives services",
                        crate::sanitize::display(t, 80)
                    )))
                }
            }
        }
        let mut scm = smbexec::bind(files).await?;
        let mgr = match smbexec::open_manager(&mut scm, scmr::SC_MANAGER_CONNECT).await {
            Ok(m) => m,
            Err(e) => {
                scm.into_pipe().close().await;
                return Err(e);
            }
        };
        // A crashed run's checker may still run, and its wrapper would write its exit-code
        // file after the removal below: it is ended first.
        let fps: Vec<smbexec::Footprint> = seeds
            .iter()
            .flat_map(|s| WinConnection::footprints(s))
            .collect();
        let mut errors = smbexec::end_orphans(files, &mut scm, &fps, running).await;
        for seed in &seeds {
            for fp in WinConnection::footprints(seed) {
                for name in fp.services() {
                    if let Err(e) = smbexec::remove_service(&mut scm, &mgr, name).await {
                        errors.push(e.message);
                    }
                }
                for f in fp.files() {
                    // %windir% itself: only administrators create files there, so
                    // no proof is needed before a delete.
                    if let Err(e) = files.remove_file(f).await {
                        errors.push(e.message);
                    }
                }
            }
        }
        let _ = scm.close(&mgr).await;
        scm.into_pipe().close().await;
        if errors.is_empty() {
            Ok(())
        } else {
            Err(TransportError::error(errors.join("; ")))
        }
    }

    async fn close(&mut self) {
        if let Some(f) = &mut self.files {
            f.close().await;
        }
        if let Some(r) = &self.remote {
            r.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(vars: &str) -> Result<WinTarget, String> {
        let text = format!(
            "all:\n  hosts:\n    w1:\n      ansible_host: 127.0.0.1\n      \
             ansible_connection: winrm\n{vars}"
        );
        let inv = crate::inventory::parse_yaml(&text, Path::new("inv.yml"))
            .map_err(|e| format!("inventory: {e:?}"))?;
        let host = inv.hosts.first().ok_or("no host")?;
        WinTarget::from_host(host)
    }

    #[test]
    fn basic_needs_https_with_a_verified_certificate() {
        let basic = "      ansible_winrm_transport: basic\n      ansible_winrm_scheme: https\n";
        let t = target(basic).expect("Basic over verified HTTPS is allowed");
        assert_eq!(
            (t.auth, t.https, t.verify_tls),
            (WinAuth::Basic, true, true)
        );
        let ignore = format!("{basic}      ansible_winrm_server_cert_validation: ignore\n");
        let e = target(&ignore).expect_err("Basic with cert validation ignored");
        assert!(
            e.contains("without certificate validation is refused"),
            "{e}"
        );
        // NTLM keeps working without validation (it never sends the password).
        let ntlm = "      ansible_winrm_scheme: https\n      \
                    ansible_winrm_server_cert_validation: ignore\n";
        assert_eq!(target(ntlm).expect("ntlm").auth, WinAuth::Ntlm);
    }

    /// `--insecure-skip-tls-verify` is not in the inventory: the connector refuses a Basic
    /// client itself, before building anything that could connect.
    #[test]
    fn the_connector_builds_no_basic_client_without_verification() {
        let t = target("      ansible_winrm_transport: basic\n      ansible_winrm_scheme: https\n")
            .expect("target");
        let login = WinLogin {
            user: "u".into(),
            domain: String::new(),
            password: SecretString::from("p"),
        };
        let insecure = WinrmConnector::new(WinrmOptions {
            insecure: true,
            ..WinrmOptions::default()
        });
        let e = insecure.client(&t, &login).err().expect("refused");
        assert!(
            e.message
                .contains("without certificate validation is refused"),
            "{e}"
        );
        let mut unverified = t.clone();
        unverified.verify_tls = false;
        let verified = WinrmConnector::new(WinrmOptions::default());
        assert!(verified.client(&unverified, &login).is_err());
        assert!(verified.client(&t, &login).is_ok(), "verified HTTPS builds");
    }

    #[test]
    fn pushscan_exec_chooses_how_commands_reach_the_host() {
        assert_eq!(target("").unwrap().exec, ExecUse::Auto);
        for (v, want) in [
            ("auto", ExecUse::Auto),
            ("winrm", ExecUse::WinRm),
            ("SMB", ExecUse::Smb),
        ] {
            let t = target(&format!("      pushscan_exec: {v}\n")).unwrap();
            assert_eq!(t.exec, want, "{v}");
        }
        let e = target("      pushscan_exec: psexec\n").unwrap_err();
        assert!(e.contains("use auto, winrm or smb"), "{e}");
        let e = target("      pushscan_exec: smb\n      pushscan_smb: off\n").unwrap_err();
        assert!(e.contains("pushscan_smb is off"), "{e}");
        let forced = WinrmConnector::new(WinrmOptions {
            exec: ExecUse::Smb,
            ..WinrmOptions::default()
        });
        assert_eq!(forced.exec_use(&target("").unwrap()), ExecUse::Smb);
        let auto = WinrmConnector::new(WinrmOptions::default());
        let t = target("      pushscan_exec: winrm\n").unwrap();
        assert_eq!(auto.exec_use(&t), ExecUse::WinRm);
    }

    /// A host whose WinRM port is closed but whose SMB answers (a real smbd) is reached over
    /// SMB alone, says so in its notes, and its commands go to the service control manager:
    /// Samba's refuses a plain account the right to create services, which is the host's
    /// `auth_failed`, not `unreachable`. With `pushscan_exec: winrm` the same host is
    /// unreachable.
    #[cfg(unix)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_host_without_winrm_is_reached_over_smb() {
        use crate::transport::winrm::smbfs::tests::{start_samba, PASSWORD, USER};
        let smb = start_samba(std::net::Ipv4Addr::new(127, 0, 87, 23));
        // A port nothing listens on: bound, then released.
        let closed = std::net::TcpListener::bind((smb.ip, 0))
            .and_then(|l| l.local_addr())
            .expect("a port")
            .port();
        let vars = |exec: &str| {
            let text = format!(
                "all:\n  hosts:\n    w1:\n      ansible_host: {}\n      ansible_port: {closed}\n      \
                 ansible_connection: winrm\n      pushscan_smb_port: {}\n      pushscan_exec: {exec}\n",
                smb.ip, smb.port
            );
            let inv = crate::inventory::parse_yaml(&text, Path::new("inv.yml")).expect("inventory");
            WinTarget::from_host(inv.hosts.first().expect("host")).expect("target")
        };
        let login = WinLogin {
            user: USER.into(),
            domain: String::new(),
            password: SecretString::from(PASSWORD),
        };
        let connector = WinrmConnector::new(WinrmOptions {
            connect_timeout: Duration::from_secs(5),
            ..WinrmOptions::default()
        });
        let probe = r"C:\Windows\Temp\pushscan";
        let mut conn = connector
            .connect(&vars("auto"), &login, probe)
            .await
            .expect("reached over SMB");
        assert!(conn.remote.is_none());
        let notes = conn.notes();
        assert!(
            notes
                .iter()
                .any(|n| n.starts_with("commands over SMB (WinRM: ")),
            "{notes:?}"
        );
        let spec = CommandSpec {
            program: r"C:\Windows\Temp\pushscan\emocheck_x64.exe".into(),
            args: vec!["/quiet".into()],
            cwd: probe.into(),
            timeout: Duration::from_secs(5),
            output_cap: 1024,
            not_before: None,
        };
        let e = conn
            .exec(&spec)
            .await
            .expect_err("Samba lets no plain account create");
        assert_eq!(e.class, HostClass::AuthFailed, "{}", e.message);
        conn.close().await;

        let e = connector
            .connect(&vars("winrm"), &login, probe)
            .await
            .err()
            .expect("no WinRM");
        assert_eq!(e.class, HostClass::Unreachable, "{}", e.message);
    }

    /// `cleanup`'s side of commands over SMB, against a real smbd: from the journaled name
    /// `pushscan-<seed>` alone, another connection checks every service name the first
    /// could have used (Samba answers 1060 for each) and deletes the output and exit-code
    /// files it left in `%windir%` (planted here, read back from the share's directory, not
    /// from pushscan's word). A name pushscan does not give is refused.
    #[cfg(unix)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_later_connection_removes_what_one_over_smb_journaled() {
        use crate::transport::winrm::smbfs::tests::{start_samba, PASSWORD, USER};
        let smb = start_samba(std::net::Ipv4Addr::new(127, 0, 87, 24));
        let text = format!(
            "all:\n  hosts:\n    w1:\n      ansible_host: {}\n      ansible_connection: winrm\n      \
             pushscan_smb_port: {}\n      pushscan_exec: smb\n",
            smb.ip, smb.port
        );
        let inv = crate::inventory::parse_yaml(&text, Path::new("inv.yml")).expect("inventory");
        let t = WinTarget::from_host(inv.hosts.first().expect("host")).expect("target");
        let login = WinLogin {
            user: USER.into(),
            domain: String::new(),
            password: SecretString::from(PASSWORD),
        };
        let connector = WinrmConnector::new(WinrmOptions::default());
        let probe = r"C:\Windows\Temp\pushscan";
        let first = connector
            .connect(&t, &login, probe)
            .await
            .expect("over SMB");
        let own = first.own_intents();
        assert_eq!(own.len(), 1, "{own:?}");
        assert_eq!(own[0].0, SMB_SERVICE_STEP);
        let name = own[0].1.clone();
        assert!(name.starts_with("pushscan-") && name.len() == 25, "{name}");
        let windir = smb.c.join("Windows");
        let planted = [
            windir.join(format!("{name}-0.out")),
            windir.join(format!("{name}-0.rc")),
            windir.join(format!("{name}-{}.out", MAX_SMB_COMMANDS - 1)),
        ];
        for p in &planted {
            std::fs::write(p, b"left by a killed run").expect("plant");
        }
        // A file of someone else's beside them stays.
        let other = windir.join("pushscan-other.out");
        std::fs::write(&other, b"not ours").expect("plant");

        let mut later = connector
            .connect(&t, &login, probe)
            .await
            .expect("over SMB");
        later
            .remove_own(SMB_SERVICE_STEP, std::slice::from_ref(&name), &[])
            .await
            .expect("nothing of ours left");
        for p in &planted {
            assert!(!p.exists(), "{} is still there", p.display());
        }
        assert!(
            other.exists(),
            "a file not of this connection's names was removed"
        );
        let e = later
            .remove_own(SMB_SERVICE_STEP, &["pushscan-..\\x".to_string()], &[])
            .await
            .expect_err("not a name of ours");
        assert!(
            e.message.contains("not a name pushscan gives"),
            "{}",
            e.message
        );
        later.close().await;
    }
}
