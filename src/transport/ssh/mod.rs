//! The `ssh` transport: russh for the session, one exec channel for the whole job, russh-sftp
//! as the fallback for listing, fetching and removing files.
//!
//! One TCP connection per host carries every step. A sweep's staged run is one script in one
//! exec channel (`script`): it lists the result directory, hashes the checker, takes the push
//! on its stdin when the client says so (after the journal intent), runs the checker, and
//! sends back the listing after the run, the new result files and the removal's outcome. The
//! SFTP session is opened only when that cannot finish (a run killed at its timeout, a record
//! out of step, history to fetch) and for the other commands (`contain`, `cleanup`).
//!
//! Host keys are checked against a known_hosts file before authentication:
//! an unknown key fails the host unless `--accept-new-host-keys`, a changed
//! key always fails. Secrets (password, key material) stay in memory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use russh::client::{self, AuthResult, Handle};
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use russh::{ChannelMsg, Disconnect};
use russh_sftp::client::RawSftpSession;
use russh_sftp::protocol::{FileAttributes, FileType, OpenFlags, StatusCode};

mod entry;
mod script;

use super::known_hosts;
use super::workdir::{home_relative, prove_function, prove_lines, sh_word};
use super::{
    push_capped, sh_quote, Begun, CommandSpec, Connection, Credentials, EntryKind, ExecOutcome,
    Finished, PinnedFile, RemoteEntry, RunPlan, Staged, TResult, TransportError,
};
use crate::model::HostClass;
pub use entry::{password_auth, ENTRY, PASSWORD_AUTH_VAR};

/// Most entries we accept from one remote directory listing.
const MAX_LIST_ENTRIES: usize = 10_000;
/// The SFTP listing's other bounds: the longest name, all names together, and the whole
/// listing's time (each request has its own 60 s besides). The entry cap alone would let a
/// host send 10,000 names of 256 KiB, or answer each request just before its timeout.
const MAX_LIST_NAME: usize = 4096;
const MAX_LIST_NAME_BYTES: usize = 8 << 20;
const LIST_TIMEOUT: Duration = Duration::from_secs(120);
/// Bytes asked for per SFTP read of a result file.
const READ_CHUNK: u32 = 64 * 1024;
/// Marker the run wrapper prints on stderr so we can kill the process group.
const PID_MARKER: &str = "PUSHSCAN_PID=";

/// Where to connect and as whom.
#[derive(Debug, Clone)]
pub struct SshTarget {
    pub address: String,
    pub port: u16,
    pub user: String,
    pub key_file: Option<PathBuf>,
    /// The inventory opts this host in to password authentication
    /// (`pushscan_ssh_password_auth`); without it the password is never offered.
    pub password_auth: bool,
    /// This host's own password from a vaulted inventory variable (`ansible_password`,
    /// `ansible_ssh_pass`): offered to this host only, after its host key was verified,
    /// whatever `password_auth` says (the inventory named it for this very host).
    pub password: Option<secrecy::SecretString>,
}

/// Shared by every SSH connection of a sweep: client config, credentials and
/// a cache of decoded private keys (decoding a key per host would cost CPU
/// for nothing at fleet size).
pub struct SshConnector {
    config: Arc<client::Config>,
    creds: Credentials,
    keys: Mutex<HashMap<PathBuf, Arc<PrivateKey>>>,
    /// known_hosts, parsed once for the whole sweep (see `known_hosts`).
    known: Arc<known_hosts::Cache>,
}

impl SshConnector {
    pub fn new(creds: Credentials) -> SshConnector {
        let known_hosts = creds
            .known_hosts
            .clone()
            .or_else(|| dirs::home_dir().map(|h| h.join(".ssh").join("known_hosts")));
        SshConnector {
            config: Arc::new(client_config(None)),
            creds,
            keys: Mutex::new(HashMap::new()),
            known: Arc::new(known_hosts::Cache::new(known_hosts)),
        }
    }

    /// The client config for `host:port`: the shared one, unless known_hosts knows the host
    /// under key types the default order does not ask for first. Then those types go first
    /// (as OpenSSH orders its host key algorithms), so that a host holding both an ed25519
    /// and a known RSA key shows the RSA one; any other key it showed would be a changed key.
    fn config_for(&self, host: &str, port: u16) -> Arc<client::Config> {
        let known = self.known.algorithms(host, port);
        let default = &self.config.preferred.key;
        let first_known = default
            .iter()
            .position(|a| known.iter().any(|k| same_key_type(a, k)));
        match first_known {
            // Nothing known (the check decides) or the default already asks for a known type
            // first.
            None | Some(0) => self.config.clone(),
            Some(_) => {
                let (mut order, rest): (Vec<_>, Vec<_>) = default
                    .iter()
                    .cloned()
                    .partition(|a| known.iter().any(|k| same_key_type(a, k)));
                order.extend(rest);
                Arc::new(client_config(Some(order)))
            }
        }
    }

    fn load_key(&self, path: &Path) -> Result<Arc<PrivateKey>, String> {
        if let Ok(cache) = self.keys.lock() {
            if let Some(k) = cache.get(path) {
                return Ok(k.clone());
            }
        }
        let key = russh::keys::load_secret_key(path, None)
            .map_err(|e| format!("cannot load key {}: {e}", path.display()))?;
        let key = Arc::new(key);
        if let Ok(mut cache) = self.keys.lock() {
            cache.insert(path.to_path_buf(), key.clone());
        }
        Ok(key)
    }

    /// Connects, verifies the host key, authenticates.
    pub async fn connect(&self, target: &SshTarget) -> TResult<SshConnection> {
        let verdict = Arc::new(Mutex::new(KeyVerdict::NotSeen));
        let handler = Checker {
            host: target.address.clone(),
            port: target.port,
            known: self.known.clone(),
            accept_new: self.creds.accept_new_host_keys,
            verdict: verdict.clone(),
        };
        let addr = (target.address.as_str(), target.port);
        let config = self.config_for(&target.address, target.port);
        let connect = client::connect(config, addr, handler);
        let timeout = if self.creds.connect_timeout.is_zero() {
            Duration::from_secs(10)
        } else {
            self.creds.connect_timeout
        };
        let mut handle = match tokio::time::timeout(timeout, connect).await {
            Err(_) => {
                return Err(TransportError::new(
                    HostClass::Unreachable,
                    format!("no SSH answer within {}s", timeout.as_secs()),
                ))
            }
            Ok(Err(e)) => {
                let v = verdict
                    .lock()
                    .map(|v| v.clone())
                    .unwrap_or(KeyVerdict::NotSeen);
                return Err(match v {
                    KeyVerdict::Unknown(fp) => TransportError::new(
                        HostClass::HostKeyRejected,
                        format!(
                            "host key {fp} is not in known_hosts; verify it and add it, \
                             or run with --accept-new-host-keys"
                        ),
                    ),
                    KeyVerdict::Changed(fp, line) => TransportError::new(
                        HostClass::HostKeyRejected,
                        format!(
                            "HOST KEY CHANGED: host presents {fp}, known_hosts line {line} \
                             says otherwise (possible man-in-the-middle; a key of another \
                             type than the known one counts as changed)"
                        ),
                    ),
                    KeyVerdict::Error(msg) => TransportError::new(
                        HostClass::HostKeyRejected,
                        format!("cannot check host key: {msg}"),
                    ),
                    KeyVerdict::NotSeen | KeyVerdict::Accepted => {
                        TransportError::new(HostClass::Unreachable, connect_error(&e))
                    }
                });
            }
            Ok(Ok(h)) => h,
        };
        // A host that stalls during authentication must not hold a fork.
        match tokio::time::timeout(timeout, self.authenticate(&mut handle, target)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(TransportError::new(
                    HostClass::Unreachable,
                    format!(
                        "authentication did not finish within {}s",
                        timeout.as_secs()
                    ),
                ))
            }
        }
        Ok(SshConnection {
            handle,
            sftp: None,
            pending: None,
        })
    }

    async fn authenticate(&self, handle: &mut Handle<Checker>, t: &SshTarget) -> TResult<()> {
        let mut tried = Vec::new();
        let key_files: Vec<PathBuf> = match &t.key_file {
            Some(k) => vec![k.clone()],
            None => self
                .creds
                .default_key_files
                .iter()
                .filter(|p| p.exists())
                .cloned()
                .collect(),
        };
        let auth_err = |e: russh::Error| {
            TransportError::new(
                HostClass::Unreachable,
                format!("connection lost during authentication: {e}"),
            )
        };
        for path in &key_files {
            let key = match self.load_key(path) {
                Ok(k) => k,
                Err(msg) if t.key_file.is_some() => {
                    return Err(TransportError::new(HostClass::AuthFailed, msg))
                }
                Err(_) => continue,
            };
            let hash = if key.algorithm().is_rsa() {
                handle
                    .best_supported_rsa_hash()
                    .await
                    .map_err(auth_err)?
                    .flatten()
                    .or(Some(HashAlg::Sha256))
            } else {
                None
            };
            let res = handle
                .authenticate_publickey(&t.user, PrivateKeyWithHashAlg::new(key, hash))
                .await
                .map_err(auth_err)?;
            if res.success() {
                return Ok(());
            }
            tried.push(format!("key {}", path.display()));
        }
        if self.creds.use_agent && t.key_file.is_none() {
            if let Some(done) = self.try_agent(handle, &t.user, &mut tried).await {
                return done;
            }
        }
        // One password at most: the host's own (a vaulted inventory variable, named for this
        // very host), else the operator's shared one, and that only to hosts the inventory
        // opts in: offered as a fallback, it would reach any host whose key is known and that
        // refuses our keys, a compromised one included.
        let offer = match (&t.password, &self.creds.ssh_password) {
            (Some(own), _) => Some((
                secrecy::ExposeSecret::expose_secret(own).to_string(),
                "the inventory's vaulted password",
            )),
            (None, Some(shared)) if t.password_auth => Some((shared.clone(), "password")),
            (None, Some(_)) => {
                tried.push(format!(
                    "not the password (offered only to hosts with {}: true)",
                    PASSWORD_AUTH_VAR
                ));
                None
            }
            (None, None) => None,
        };
        if let Some((pw, what)) = offer {
            let res = handle
                .authenticate_password(&t.user, pw)
                .await
                .map_err(auth_err)?;
            if matches!(res, AuthResult::Success) {
                return Ok(());
            }
            tried.push(what.into());
        }
        let tried = if tried.is_empty() {
            "no key, agent or password available (see --help: -k/--private-key, \
             SSH_AUTH_SOCK, PUSHSCAN_SSH_PASSWORD, --ask-pass)"
                .to_string()
        } else {
            format!("tried {}", tried.join(", "))
        };
        Err(TransportError::new(
            HostClass::AuthFailed,
            format!("authentication as {} refused: {tried}", t.user),
        ))
    }

    #[cfg(unix)]
    async fn try_agent(
        &self,
        handle: &mut Handle<Checker>,
        user: &str,
        tried: &mut Vec<String>,
    ) -> Option<TResult<()>> {
        use russh::keys::agent::client::AgentClient;
        use russh::keys::agent::AgentIdentity;
        let mut agent = AgentClient::connect_env().await.ok()?;
        let ids = agent.request_identities().await.ok()?;
        for id in ids {
            let AgentIdentity::PublicKey { key, .. } = id else {
                continue;
            };
            let hash = if key.algorithm().is_rsa() {
                Some(HashAlg::Sha256)
            } else {
                None
            };
            match handle
                .authenticate_publickey_with(user, key, hash, &mut agent)
                .await
            {
                Ok(AuthResult::Success) => return Some(Ok(())),
                Ok(_) => tried.push("agent key".into()),
                Err(_) => tried.push("agent key (agent refused to sign)".into()),
            }
        }
        None
    }

    #[cfg(not(unix))]
    async fn try_agent(
        &self,
        _handle: &mut Handle<Checker>,
        _user: &str,
        _tried: &mut Vec<String>,
    ) -> Option<TResult<()>> {
        // Pageant support would go here; keys and passwords work on Windows.
        None
    }
}

/// The client config of every connection; `host_keys`: the host key algorithms to ask for,
/// in order (`None`: russh's default order).
fn client_config(host_keys: Option<Vec<russh::keys::Algorithm>>) -> client::Config {
    // AES-GCM first: with AES-NI it costs a fraction of ChaCha20-Poly1305 per byte
    // (a profile of 50 hosts x 1 MiB pushes had poly1305 alone at 11 % of the
    // controller's CPU); ChaCha20 stays for servers without GCM.
    let mut preferred = russh::Preferred {
        cipher: std::borrow::Cow::Borrowed(&[
            russh::cipher::AES_256_GCM,
            russh::cipher::AES_128_GCM,
            russh::cipher::CHACHA20_POLY1305,
            russh::cipher::AES_256_CTR,
            russh::cipher::AES_192_CTR,
            russh::cipher::AES_128_CTR,
        ]),
        ..Default::default()
    };
    if let Some(keys) = host_keys {
        preferred.key = std::borrow::Cow::Owned(keys);
    }
    client::Config {
        preferred,
        nodelay: true,
        inactivity_timeout: Some(Duration::from_secs(600)),
        keepalive_interval: Some(Duration::from_secs(30)),
        ..Default::default()
    }
}

/// Whether two algorithms name the same kind of key (RSA whatever the signature hash).
fn same_key_type(a: &russh::keys::Algorithm, b: &russh::keys::Algorithm) -> bool {
    a == b
        || (matches!(a, russh::keys::Algorithm::Rsa { .. })
            && matches!(b, russh::keys::Algorithm::Rsa { .. }))
}

fn connect_error(e: &russh::Error) -> String {
    match e {
        russh::Error::IO(io) => format!("cannot connect: {io}"),
        other => format!("SSH handshake failed: {other}"),
    }
}

#[derive(Debug, Clone)]
enum KeyVerdict {
    NotSeen,
    Accepted,
    Unknown(String),
    Changed(String, usize),
    Error(String),
}

/// The russh handler: its only job is the host key decision.
struct Checker {
    host: String,
    port: u16,
    known: Arc<known_hosts::Cache>,
    accept_new: bool,
    verdict: Arc<Mutex<KeyVerdict>>,
}

impl Checker {
    fn decide(&self, key: &PublicKey) -> KeyVerdict {
        let fp = format!("{} {}", key.algorithm(), key.fingerprint(HashAlg::Sha256));
        match self.known.check(&self.host, self.port, key) {
            Ok(known_hosts::Verdict::Known) => KeyVerdict::Accepted,
            Ok(known_hosts::Verdict::Unknown) if self.accept_new => {
                match self.known.learn(&self.host, self.port, key) {
                    Ok(()) => KeyVerdict::Accepted,
                    Err(e) => KeyVerdict::Error(e),
                }
            }
            Ok(known_hosts::Verdict::Unknown) => KeyVerdict::Unknown(fp),
            Ok(known_hosts::Verdict::Changed(line)) => KeyVerdict::Changed(fp, line),
            Ok(known_hosts::Verdict::Revoked(line)) => KeyVerdict::Error(format!(
                "host key {fp} is marked @revoked in {} line {line}",
                self.known
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            )),
            Err(e) => KeyVerdict::Error(e),
        }
    }
}

impl client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let v = match key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => self.decide(key),
            russh::keys::PublicKeyOrCertificate::Certificate(_) => KeyVerdict::Error(
                "host certificates are not supported yet; list the host key in known_hosts".into(),
            ),
        };
        let ok = matches!(v, KeyVerdict::Accepted);
        if let Ok(mut slot) = self.verdict.lock() {
            *slot = v;
        }
        Ok(ok)
    }
}

/// One authenticated SSH session to a host.
pub struct SshConnection {
    handle: Handle<Checker>,
    /// The SFTP fallback, spoken request by request so that every reply the host sends is
    /// bounded by our caps (russh-sftp's `read_dir` keeps every entry until the host says
    /// the directory ended).
    sftp: Option<RawSftpSession>,
    /// The staged run between `begin_run` and `finish_run`.
    pending: Option<RunChannel>,
}

/// How long the preparation and push phases of a staged run may take.
const PREP_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the listing and result files sent after the run may take beyond the checker's
/// own timeout.
const POST_GRACE: Duration = Duration::from_secs(120);

fn run_tail_prefix() -> &'static str {
    "umask 077"
}

/// The end of every run script: announce the PID (the process group to kill
/// on timeout), enter the working dir, become the checker. The checker gets
/// no stdin, so one that waits for a key press sees EOF at once.
fn run_tail(cmd: &CommandSpec) -> String {
    let wait = match cmd.not_before {
        Some(nb) => format!(
            "i=0; while [ \"$(date +%s)\" -le {nb} ] && [ $i -lt 10 ]; do sleep 0.2 2>/dev/null || sleep 1; i=$((i+1)); done\n"
        ),
        None => String::new(),
    };
    let mut line = format!(
        "{wait}echo {PID_MARKER}$$ $(date +%s) >&2\ncd -- {} || {{ echo PUSHSCAN_FAIL=cd >&2; exit 126; }}\nexec {}",
        sh_word(&cmd.cwd),
        sh_word(&cmd.program)
    );
    for a in &cmd.args {
        line.push(' ');
        line.push_str(&sh_word(a));
    }
    line.push_str(" </dev/null");
    line
}

/// One exec channel running a pushscan script. While `in_markers`, stderr is read as records
/// (`script::Reader`: markers, listing entries; other lines are the script's own errors);
/// after the PID marker, stderr is the checker's until the end line of a one-session run
/// (`script::EndScanner`), and records again after it (`Post`).
struct RunChannel {
    ch: russh::Channel<client::Msg>,
    cap: usize,
    in_markers: bool,
    prep: script::Reader,
    /// The result directory before the run, as the script listed it.
    before: Vec<RemoteEntry>,
    script_err: Vec<u8>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    dropped: u64,
    exit_code: Option<u32>,
    exit_signal: Option<String>,
    pid: Option<u32>,
    started_at: Option<u64>,
    closed: bool,
    timed_out: bool,
    eof_sent: bool,
    /// Finds the end of the checker's stderr (one-session runs only).
    end: Option<script::EndScanner>,
    /// What the script sent after the run.
    post: Option<Post>,
    /// Largest result file accepted and most files (one-session runs).
    file_cap: u64,
    max_files: usize,
}

/// The records a one-session run prints after the checker ended.
struct Post {
    reader: script::Reader,
    exit: Option<i64>,
    after: Vec<RemoteEntry>,
    overflow: bool,
    files: Vec<(RemoteEntry, Vec<u8>)>,
    removed: Option<Result<(), String>>,
    done: bool,
    /// Why reading stopped early: the pipeline then lists and fetches on its own.
    broken: Option<String>,
}

impl Post {
    fn feed(&mut self, data: &[u8], max_files: usize) {
        if self.broken.is_some() || self.done {
            return;
        }
        self.reader.push(data);
        loop {
            let rec = match self.reader.next() {
                Ok(Some(r)) => r,
                Ok(None) => return,
                Err(e) => {
                    self.broken = Some(e);
                    self.reader.take_rest();
                    return;
                }
            };
            match rec {
                script::Rec::Marker(m) => {
                    if let Some(rc) = m.strip_prefix("PUSHSCAN_X=") {
                        self.exit = rc.trim().parse().ok();
                    } else if m == "PUSHSCAN_LIST=overflow" {
                        self.overflow = true;
                    } else if m == "PUSHSCAN_R=ok" {
                        self.removed = Some(Ok(()));
                    } else if m == "PUSHSCAN_R=fail" {
                        self.removed = Some(Err("the host could not remove the checker".into()));
                    } else if m == "PUSHSCAN_DONE" {
                        self.done = true;
                        self.reader.take_rest();
                        return;
                    } else {
                        self.broken = Some(format!(
                            "unexpected record {:?}",
                            crate::sanitize::display(&m, 80)
                        ));
                    }
                }
                script::Rec::Entry(e) => {
                    if self.after.len() >= MAX_LIST_ENTRIES {
                        self.overflow = true;
                    } else {
                        self.after.push(e);
                    }
                }
                script::Rec::File(e, bytes) => {
                    if self.files.len() < max_files {
                        self.files.push((e, bytes));
                    }
                }
                script::Rec::Text(t) => {
                    self.broken = Some(format!(
                        "unexpected text {:?}",
                        crate::sanitize::display(&String::from_utf8_lossy(&t), 80)
                    ));
                }
            }
            if self.broken.is_some() {
                self.reader.take_rest();
                return;
            }
        }
    }
}

impl RunChannel {
    fn new(ch: russh::Channel<client::Msg>, cap: usize) -> RunChannel {
        RunChannel {
            ch,
            cap,
            in_markers: true,
            prep: script::Reader::new(0),
            before: Vec::new(),
            script_err: Vec::new(),
            stdout: Vec::new(),
            stderr: Vec::new(),
            dropped: 0,
            exit_code: None,
            exit_signal: None,
            pid: None,
            started_at: None,
            closed: false,
            timed_out: false,
            eof_sent: false,
            end: None,
            post: None,
            file_cap: 0,
            max_files: 0,
        }
    }

    async fn send_eof(&mut self) -> TResult<()> {
        self.eof_sent = true;
        self.ch.eof().await.map_err(SshConnection::lost)
    }

    /// The checker's stderr: kept (capped) up to the end line, records after it.
    fn push_stderr(&mut self, data: &[u8]) {
        if let Some(post) = &mut self.post {
            post.feed(data, self.max_files);
            return;
        }
        let (keep, after) = match &mut self.end {
            Some(scan) => scan.feed(data),
            None => (data.to_vec(), None),
        };
        push_capped(&mut self.stderr, &keep, self.cap, &mut self.dropped);
        if let Some(after) = after {
            let mut post = Post {
                reader: script::Reader::new(self.file_cap),
                exit: None,
                after: Vec::new(),
                overflow: false,
                files: Vec::new(),
                removed: None,
                done: false,
                broken: None,
            };
            post.feed(&after, self.max_files);
            self.post = Some(post);
        }
    }

    /// Next marker line, `None` when the channel closed (or the deadline
    /// passed: then `timed_out` is set). Listing entries met on the way are kept in `before`.
    async fn next_marker(&mut self, deadline: tokio::time::Instant) -> TResult<Option<String>> {
        loop {
            loop {
                match self.prep.next() {
                    Ok(Some(script::Rec::Marker(m))) => return Ok(Some(m)),
                    Ok(Some(script::Rec::Entry(e))) => {
                        if self.before.len() >= MAX_LIST_ENTRIES {
                            return Err(TransportError::error(format!(
                                "the result directory holds more than {MAX_LIST_ENTRIES} entries; refusing to list it"
                            )));
                        }
                        self.before.push(e);
                    }
                    Ok(Some(script::Rec::Text(t))) => {
                        push_capped(&mut self.script_err, &t, 4096, &mut self.dropped)
                    }
                    Ok(Some(script::Rec::File(..))) => {
                        return Err(TransportError::error("the host sent a file before the run"))
                    }
                    Ok(None) => break,
                    Err(e) => {
                        return Err(TransportError::error(format!(
                            "the host's answer is out of step: {e}"
                        )))
                    }
                }
            }
            if self.closed {
                return Ok(None);
            }
            match tokio::time::timeout_at(deadline, self.ch.wait()).await {
                Err(_) => {
                    self.timed_out = true;
                    return Ok(None);
                }
                Ok(None) => {
                    self.closed = true;
                }
                Ok(Some(msg)) => self.absorb(msg),
            }
        }
    }

    /// Reads until the channel closes or the deadline passes. Once the checker has ended and
    /// the script sends what it found, that transfer gets `POST_GRACE` of its own past the
    /// checker's deadline.
    async fn collect(&mut self, deadline: tokio::time::Instant) {
        let mut post_started = None;
        while !self.closed {
            let mut deadline = deadline;
            if let Some(post) = &self.post {
                if !post.done {
                    let since = *post_started.get_or_insert_with(tokio::time::Instant::now);
                    deadline = deadline.max(since + POST_GRACE);
                }
            }
            match tokio::time::timeout_at(deadline, self.ch.wait()).await {
                Err(_) => {
                    self.timed_out = true;
                    return;
                }
                Ok(None) => self.closed = true,
                Ok(Some(msg)) => self.absorb(msg),
            }
        }
    }

    fn absorb(&mut self, msg: ChannelMsg) {
        match msg {
            ChannelMsg::Data { data } => {
                push_capped(&mut self.stdout, &data, self.cap, &mut self.dropped)
            }
            ChannelMsg::ExtendedData { data, .. } => {
                if self.in_markers {
                    self.prep.push(&data);
                } else {
                    self.push_stderr(&data);
                }
            }
            ChannelMsg::ExitStatus { exit_status } => self.exit_code = Some(exit_status),
            ChannelMsg::ExitSignal { signal_name, .. } => {
                self.exit_signal = Some(format!("{signal_name:?}"))
            }
            ChannelMsg::Close => self.closed = true,
            _ => {}
        }
    }

    /// The error for a script that stopped before the expected marker.
    fn prep_failure(&self, step: &str, marker: Option<String>) -> TransportError {
        let detail = match &marker {
            Some(m) => m.trim_start_matches("PUSHSCAN_FAIL=").to_string(),
            None if self.timed_out => format!("no answer from the host during {step}"),
            None => format!("script ended (exit {:?})", self.exit_code),
        };
        let err = text(&self.script_err);
        let msg = if err.is_empty() {
            detail
        } else {
            format!("{detail}: {}", crate::sanitize::display(&err, 300))
        };
        TransportError::error(msg)
    }

    fn into_finished(mut self) -> Finished {
        if self.in_markers {
            let rest = self.prep.take_rest();
            push_capped(&mut self.stderr, &rest, self.cap, &mut self.dropped);
        } else if self.post.is_none() {
            if let Some(scan) = &mut self.end {
                let rest = scan.finish();
                push_capped(&mut self.stderr, &rest, self.cap, &mut self.dropped);
            }
        }
        let mut fin = Finished::default();
        let mut exit_code = if self.exit_signal.is_some() {
            None
        } else {
            self.exit_code.map(i64::from)
        };
        if let Some(post) = self.post {
            if let Some(rc) = post.exit {
                exit_code = Some(rc);
            }
            if let Some(why) = &post.broken {
                tracing::debug!("one-session run: records stopped: {why}");
            }
            if post.done && post.broken.is_none() && !post.overflow {
                fin.after = Some(post.after);
            }
            fin.files = post.files;
            fin.removed = post.removed;
        }
        fin.exec = ExecOutcome {
            exit_code,
            exit_signal: self.exit_signal,
            timed_out: self.timed_out,
            stdout: self.stdout,
            stderr: self.stderr,
            truncated_bytes: self.dropped,
            started_at: self.started_at,
        };
        fin
    }
}

/// Output of a short helper command (not the checker run).
struct Small {
    code: Option<u32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// How many checker bytes may be handed to SSH sessions and not yet received by their hosts,
/// over the whole sweep. russh encrypts a channel's data as fast as the host's window allows
/// (OpenSSH opens 2 MiB), so with 1,000 hosts in flight a 1 MiB checker sat in the sessions'
/// send buffers up to 1,000 times over when the hosts read slowly: 678 MiB of RSS in the
/// 10,000-host benchmark. A push holds its share of this budget until the host says it has
/// every byte (`PUSHSCAN_RECEIVED`, before it hashes the copy): at most 32 MiB of pushes are
/// under way, whatever `--forks` is. The send buffers give their room back once written out
/// (the vendored russh patch, `vendor/README.md`).
const PUSH_BUDGET_KIB: u32 = 32 * 1024;

/// A share of the push budget for `len` bytes (`None` only if the budget were closed, which
/// the static semaphore never is: the push then goes ahead unbudgeted rather than failing).
async fn push_permit(len: usize) -> Option<tokio::sync::SemaphorePermit<'static>> {
    static BUDGET: tokio::sync::Semaphore =
        tokio::sync::Semaphore::const_new(PUSH_BUDGET_KIB as usize);
    let kib = u32::try_from(len.div_ceil(1024))
        .unwrap_or(u32::MAX)
        .clamp(1, PUSH_BUDGET_KIB);
    BUDGET.acquire_many(kib).await.ok()
}

/// The checker's bytes (read once per sweep and shared, see `checker_bytes`) as `Bytes`:
/// russh cuts them into packets by slicing, without a copy per host. Streaming the file
/// instead cost a blocking-pool hop and an 8 KiB packet per read (tokio's copy buffer): about
/// 7 ms of controller CPU per host for a 1 MiB checker, against ~1 ms now.
async fn shared_checker(local: &Path) -> TResult<bytes::Bytes> {
    struct Shared(Arc<Vec<u8>>);
    impl AsRef<[u8]> for Shared {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }
    let data = super::checker_bytes(local)
        .await
        .map_err(|e| TransportError::error(format!("cannot read {}: {e}", local.display())))?;
    Ok(bytes::Bytes::from_owner(Shared(data)))
}

impl SshConnection {
    fn lost(e: impl std::fmt::Display) -> TransportError {
        TransportError::error(format!("SSH channel failed: {e}"))
    }

    /// Runs a helper shell command, optionally streaming a local file to its
    /// stdin, and collects a bounded amount of output.
    async fn run_small(&mut self, command: &str, stdin: Option<&Path>) -> TResult<Small> {
        let mut ch = self
            .handle
            .channel_open_session()
            .await
            .map_err(Self::lost)?;
        ch.exec(true, command).await.map_err(Self::lost)?;
        let mut _permit = None;
        if let Some(path) = stdin {
            let bytes = shared_checker(path).await?;
            _permit = push_permit(bytes.len()).await;
            ch.data_bytes(bytes).await.map_err(Self::lost)?;
        }
        ch.eof().await.map_err(Self::lost)?;
        let mut out = Small {
            code: None,
            stdout: Vec::new(),
            stderr: Vec::new(),
        };
        let mut dropped = 0;
        while let Some(msg) = ch.wait().await {
            match msg {
                ChannelMsg::Data { data } => {
                    push_capped(&mut out.stdout, &data, 64 * 1024, &mut dropped)
                }
                ChannelMsg::ExtendedData { data, .. } => {
                    push_capped(&mut out.stderr, &data, 16 * 1024, &mut dropped)
                }
                ChannelMsg::ExitStatus { exit_status } => out.code = Some(exit_status),
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        Ok(out)
    }

    async fn sftp(&mut self) -> TResult<&RawSftpSession> {
        if self.sftp.is_none() {
            let ch = self
                .handle
                .channel_open_session()
                .await
                .map_err(Self::lost)?;
            ch.request_subsystem(true, "sftp")
                .await
                .map_err(Self::lost)?;
            // russh-sftp's 10 s per request is too short for a host that is merely busy
            // (1,000 hosts in flight on a loaded fleet took longer to start SFTP); the
            // host's watchdog still bounds the whole host.
            let cfg = russh_sftp::client::Config {
                request_timeout_secs: 60,
                ..Default::default()
            };
            let s = RawSftpSession::new_with_config(ch.into_stream(), cfg);
            s.init()
                .await
                .map_err(|e| TransportError::error(format!("SFTP start failed: {e}")))?;
            self.sftp = Some(s);
        }
        self.sftp
            .as_ref()
            .ok_or_else(|| TransportError::error("SFTP session unavailable"))
    }

    async fn open_run(&mut self, script: String, cap: usize) -> TResult<RunChannel> {
        let ch = self
            .handle
            .channel_open_session()
            .await
            .map_err(Self::lost)?;
        ch.exec(true, script).await.map_err(Self::lost)?;
        Ok(RunChannel::new(ch, cap))
    }

    /// Waits for the PID marker, then collects the checker's output until it
    /// ends or the timeout kills its process group.
    async fn complete_run(&mut self, mut run: RunChannel, cmd: &CommandSpec) -> TResult<Finished> {
        let deadline = tokio::time::Instant::now() + cmd.timeout;
        if !run.eof_sent {
            run.send_eof().await?;
        }
        match run.next_marker(deadline).await? {
            Some(m) if m.starts_with(PID_MARKER) => {
                let mut fields = m[PID_MARKER.len()..].split_whitespace();
                run.pid = fields.next().and_then(|p| p.parse().ok());
                run.started_at = fields.next().and_then(|t| t.parse().ok());
                run.in_markers = false;
                let tail = run.prep.take_rest();
                run.push_stderr(&tail);
            }
            None if run.timed_out => {}
            other => return Err(run.prep_failure("run", other)),
        }
        if !run.timed_out {
            run.collect(deadline).await;
        }
        if run.timed_out {
            let _ = run.ch.close().await;
            if let Some(p) = run.pid {
                self.kill_group(p).await;
            }
        }
        Ok(run.into_finished())
    }

    /// Kills the process group `pgid` on the host: TERM, then KILL.
    async fn kill_group(&mut self, pgid: u32) {
        let cmd = format!(
            "kill -TERM -- -{pgid} 2>/dev/null; sleep 1; kill -KILL -- -{pgid} 2>/dev/null; true"
        );
        let _ = tokio::time::timeout(Duration::from_secs(15), self.run_small(&cmd, None)).await;
    }
}

/// Reads an open SFTP directory `handle` until the host says it ended, failing as soon as
/// the entries pass `MAX_LIST_ENTRIES` or a name or all names pass their caps: what is held
/// is bounded by our caps whatever the host sends, and nothing past the cap is asked for.
async fn read_listing(sftp: &RawSftpSession, handle: &str, dir: &str) -> TResult<Vec<RemoteEntry>> {
    let mut out = Vec::new();
    let mut name_bytes = 0usize;
    // Every name received counts, `.` and `..` too: skipped ones must not make an endless
    // stream of them free.
    let mut received = 0usize;
    loop {
        let batch = match sftp.readdir(handle).await {
            Ok(name) => name.files,
            Err(e) if is_status(&e, StatusCode::Eof) => return Ok(out),
            Err(e) => return Err(TransportError::error(format!("cannot list {dir}: {e}"))),
        };
        // SFTP answers a read with one name or more; an empty answer would repeat forever.
        if batch.is_empty() {
            return Err(TransportError::error(format!(
                "listing {dir}: the host answered with no entry and no end; abandoned"
            )));
        }
        for f in batch {
            received += 1;
            if out.len() >= MAX_LIST_ENTRIES || received > MAX_LIST_ENTRIES + 2 {
                return Err(TransportError::error(format!(
                    "{dir} holds more than {MAX_LIST_ENTRIES} entries; refusing to list it"
                )));
            }
            name_bytes += f.filename.len();
            if f.filename.len() > MAX_LIST_NAME || name_bytes > MAX_LIST_NAME_BYTES {
                return Err(TransportError::error(format!(
                    "{dir}: a name over {MAX_LIST_NAME} bytes or names over \
                     {MAX_LIST_NAME_BYTES} bytes in all; refusing to list it"
                )));
            }
            if f.filename == "." || f.filename == ".." {
                continue;
            }
            let kind = match f.attrs.file_type() {
                FileType::File => EntryKind::File,
                FileType::Dir => EntryKind::Dir,
                FileType::Symlink => EntryKind::Symlink,
                FileType::Other => EntryKind::Other,
            };
            out.push(RemoteEntry {
                kind,
                size: f.attrs.size.unwrap_or(0),
                mtime: f.attrs.mtime.map(u64::from),
                name: f.filename,
            });
        }
    }
}

/// Reads the open file `handle` (`size` bytes by its lstat) to its end, failing once more
/// than `cap` bytes came: a host that lied about the size, or grows the file, or answers
/// with more than it was asked for, costs at most `cap` plus one reply.
async fn read_capped(
    sftp: &RawSftpSession,
    handle: &str,
    path: &str,
    size: u64,
    cap: u64,
) -> TResult<Vec<u8>> {
    // Re-check on the open handle: a name swapped for a symlink between lstat and open
    // shows up as a different file here.
    if let Ok(a) = sftp.fstat(handle).await {
        let m = a.attrs;
        if !matches!(m.file_type(), FileType::File) || m.size.unwrap_or(0) > cap {
            return Err(TransportError::error(format!(
                "{path} changed while being opened; not read"
            )));
        }
    }
    let mut buf: Vec<u8> = Vec::with_capacity(size.min(cap) as usize);
    loop {
        let data = match sftp.read(handle, buf.len() as u64, READ_CHUNK).await {
            Ok(d) => d.data,
            Err(e) if is_status(&e, StatusCode::Eof) => break,
            Err(e) => return Err(TransportError::error(format!("cannot read {path}: {e}"))),
        };
        if data.is_empty() {
            return Err(TransportError::error(format!(
                "reading {path}: the host answered with no data and no end; abandoned"
            )));
        }
        buf.extend_from_slice(&data);
        if buf.len() as u64 > cap {
            return Err(TransportError::error(format!(
                "{path} grew past the {cap}-byte cap while being read; discarded"
            )));
        }
    }
    Ok(buf)
}

fn is_status(e: &russh_sftp::client::error::Error, code: StatusCode) -> bool {
    matches!(e, russh_sftp::client::error::Error::Status(s) if s.status_code == code)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}

/// The per-file letters of a `PUSHSCAN_STATE=push` line (`p` push, `c` current).
fn staged_letters(letters: &str) -> Option<Vec<Staged>> {
    letters
        .chars()
        .map(|c| match c {
            'p' => Some(Staged::NeedsPush),
            'c' => Some(Staged::Current),
            _ => None,
        })
        .collect()
}

/// The hash step: absent, symlink or non-regular files count as missing
/// (a symlink planted by the host must never be mistaken for our binary).
fn sha256_script(path: &str) -> String {
    let p = sh_word(path);
    format!(
        "if [ -f {p} ] && [ ! -L {p} ]; then \
           (sha256sum < {p} 2>/dev/null || shasum -a 256 < {p}) | cut -c1-64; \
         else echo ABSENT; fi"
    )
}

/// A path for SFTP: a leading `~/` (the login's home, which the shell scripts expand) becomes
/// a relative path, which the SFTP server resolves from the session's start directory, the
/// home.
fn sftp_path(path: &str) -> String {
    match home_relative(path) {
        Some("") => ".".into(),
        Some(rest) => rest.to_string(),
        None => path.to_string(),
    }
}

/// A script (run by `/bin/sh`, whatever the login shell) that creates (`create`) and proves
/// `dirs` private, exiting 97 with a `PUSHSCAN_FAIL=` reason when one is not, then runs `then`.
fn dirs_script(dirs: &[String], create: bool, then: &str) -> String {
    let body = format!(
        "umask 077\nnl='\n'\n{}{}{then}\n",
        prove_function(),
        prove_lines(dirs, create, 97)
    );
    format!("exec /bin/sh -c {}", sh_quote(&body))
}

/// The error of a failed [`dirs_script`]: its reason when it gave one.
fn dirs_failure(code: Option<u32>, out: &Small) -> TransportError {
    let err = text(&out.stderr);
    match err.lines().find_map(|l| l.strip_prefix("PUSHSCAN_FAIL=")) {
        Some(reason) => TransportError::error(crate::sanitize::display(reason, 400)),
        None => TransportError::error(format!(
            "cannot create or prove the work directories (exit {code:?}): {}",
            crate::sanitize::display(&err, 300)
        )),
    }
}

fn parse_sha(out: &Small, path: &str) -> TResult<Option<String>> {
    let s = text(&out.stdout);
    let last = s.lines().last().unwrap_or_default().trim().to_string();
    if last == "ABSENT" {
        return Ok(None);
    }
    if last.len() == 64 && last.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(Some(last.to_ascii_lowercase()));
    }
    Err(TransportError::error(format!(
        "cannot hash {path} on host (exit {:?}): {}",
        out.code,
        text(&out.stderr)
    )))
}

#[async_trait]
impl Connection for SshConnection {
    async fn mkdirs(&mut self, dirs: &[String]) -> TResult<()> {
        if dirs.is_empty() {
            return Ok(());
        }
        let out = self.run_small(&dirs_script(dirs, true, ""), None).await?;
        match out.code {
            Some(0) => Ok(()),
            code => Err(dirs_failure(code, &out)),
        }
    }

    async fn prove_dirs(&mut self, dirs: &[String]) -> TResult<()> {
        let out = self.run_small(&dirs_script(dirs, false, ""), None).await?;
        match out.code {
            Some(0) => Ok(()),
            code => Err(dirs_failure(code, &out)),
        }
    }

    async fn prepare(&mut self, dirs: &[String], checker: &str) -> TResult<Option<String>> {
        let cmd = dirs_script(dirs, true, &sha256_script(checker));
        let out = self.run_small(&cmd, None).await?;
        if out.code == Some(97) {
            return Err(dirs_failure(out.code, &out));
        }
        parse_sha(&out, checker)
    }

    async fn sha256(&mut self, path: &str) -> TResult<Option<String>> {
        let out = self.run_small(&sha256_script(path), None).await?;
        parse_sha(&out, path)
    }

    async fn install(&mut self, local: &Path, tmp: &str, dest: &str, sha256: &str) -> TResult<()> {
        let (t, d) = (sh_word(tmp), sh_word(dest));
        // Stream to a temp name, verify on the host, then rename: `dest` is
        // either absent, the old file, or the verified new one. The directory was proven
        // private by `prepare`/`mkdirs` on this connection; the temp file is still created
        // new (`set -C`: O_EXCL, a planted name makes the write fail, never followed).
        let cmd = format!(
            "umask 077; rm -f -- {t}; set -C; cat > {t} || exit 90; set +C; \
             h=$( (sha256sum < {t} 2>/dev/null || shasum -a 256 < {t}) | cut -c1-64); \
             if [ \"$h\" != {sha} ]; then rm -f -- {t}; echo \"hash mismatch: $h\" >&2; exit 91; fi; \
             chmod 700 {t} && mv -f -- {t} {d}",
            sha = sh_quote(sha256)
        );
        let out = self.run_small(&cmd, Some(local)).await?;
        match out.code {
            Some(0) => Ok(()),
            Some(91) => Err(TransportError::error(format!(
                "pushed copy failed verification on host ({}); removed",
                text(&out.stderr)
            ))),
            code => Err(TransportError::error(format!(
                "push failed (exit {code:?}): {}",
                text(&out.stderr)
            ))),
        }
    }

    async fn exec(&mut self, cmd: &CommandSpec) -> TResult<ExecOutcome> {
        let script = format!("{}\n{}", run_tail_prefix(), run_tail(cmd));
        let mut run = self.open_run(script, cmd.output_cap).await?;
        run.send_eof().await?;
        Ok(self.complete_run(run, cmd).await?.exec)
    }

    /// The whole job in one exec channel (see `script`): the listing before the run comes
    /// with the hash check; the push, if asked, goes down the same channel; the run's end
    /// brings the listing after it, the new result files and the checker's removal.
    async fn begin_run(&mut self, plan: &RunPlan) -> TResult<Begun> {
        let nonce = script::nonce();
        let text = script::staged_script(plan, &nonce);
        let mut run = self.open_run(text, plan.cmd.output_cap).await?;
        run.end = Some(script::EndScanner::new(script::end_needle(&nonce)));
        if let Some(r) = &plan.results {
            run.file_cap = r.cap;
            run.max_files = r.max_files;
        }
        let deadline = tokio::time::Instant::now() + PREP_TIMEOUT;
        let files = 1 + plan.inputs.len();
        let states = match run.next_marker(deadline).await? {
            Some(m) if m == "PUSHSCAN_STATE=current" => {
                run.send_eof().await?;
                vec![Staged::Current; files]
            }
            Some(m) => match m.strip_prefix("PUSHSCAN_STATE=push ").map(staged_letters) {
                Some(Some(v)) if v.len() == files => v,
                _ => return Err(run.prep_failure("prepare", Some(m))),
            },
            other => return Err(run.prep_failure("prepare", other)),
        };
        let before = std::mem::take(&mut run.before);
        self.pending = Some(run);
        Ok(Begun {
            staged: states[0],
            inputs: states[1..].to_vec(),
            before,
        })
    }

    async fn push_staged(&mut self, files: &[PinnedFile]) -> TResult<()> {
        let Some(run) = self.pending.as_mut() else {
            // Not staged by begin_run: the plain verified install.
            for f in files {
                self.install(&f.local, &f.tmp, &f.dest, &f.pin).await?;
            }
            return Ok(());
        };
        let mut all = Vec::with_capacity(files.len());
        for f in files {
            all.push(shared_checker(&f.local).await?);
        }
        // Held until the host has received every byte (the first marker below): by then
        // the session has written them out and its send buffer is empty again.
        let permit = push_permit(all.iter().map(bytes::Bytes::len).sum()).await;
        // Each file as the script reads it: `push SIZE`, then exactly SIZE bytes.
        for bytes in all {
            run.ch
                .data_bytes(bytes::Bytes::from(format!("push {}\n", bytes.len())))
                .await
                .map_err(Self::lost)?;
            run.ch.data_bytes(bytes).await.map_err(Self::lost)?;
        }
        run.send_eof().await?;
        let deadline = tokio::time::Instant::now() + PREP_TIMEOUT;
        let mut marker = run.next_marker(deadline).await?;
        if marker.as_deref() == Some("PUSHSCAN_RECEIVED") {
            drop(permit);
            marker = run.next_marker(deadline).await?;
        }
        match marker {
            Some(m) if m == "PUSHSCAN_PUSHED=ok" => Ok(()),
            other => {
                let e = run.prep_failure("push", other);
                self.pending = None;
                Err(e)
            }
        }
    }

    async fn finish_run(&mut self, cmd: &CommandSpec) -> TResult<Finished> {
        match self.pending.take() {
            Some(run) => self.complete_run(run, cmd).await,
            None => Ok(Finished {
                exec: self.exec(cmd).await?,
                ..Default::default()
            }),
        }
    }

    async fn list_dir(&mut self, dir: &str) -> TResult<Vec<RemoteEntry>> {
        let dir = &sftp_path(dir);
        let sftp = self.sftp().await?;
        let handle = match sftp.opendir(dir).await {
            Ok(h) => h.handle,
            Err(e) if is_status(&e, StatusCode::NoSuchFile) => return Ok(Vec::new()),
            Err(e) => return Err(TransportError::error(format!("cannot list {dir}: {e}"))),
        };
        let listed = tokio::time::timeout(LIST_TIMEOUT, read_listing(sftp, &handle, dir)).await;
        let _ = sftp.close(handle).await;
        match listed {
            Ok(r) => r,
            Err(_) => Err(TransportError::error(format!(
                "listing {dir} took more than {}s; abandoned",
                LIST_TIMEOUT.as_secs()
            ))),
        }
    }

    async fn read_file(&mut self, path: &str, cap: u64) -> TResult<Vec<u8>> {
        let path = &sftp_path(path);
        let sftp = self.sftp().await?;
        let meta = sftp
            .lstat(path)
            .await
            .map_err(|e| TransportError::error(format!("cannot stat {path}: {e}")))?
            .attrs;
        if !matches!(meta.file_type(), FileType::File) {
            return Err(TransportError::error(format!(
                "{path} is not a regular file (symlink or special); not read"
            )));
        }
        let size = meta.size.unwrap_or(0);
        if size > cap {
            return Err(TransportError::error(format!(
                "{path} is {size} bytes, over the {cap}-byte cap; not fetched"
            )));
        }
        let handle = sftp
            .open(path, OpenFlags::READ, FileAttributes::empty())
            .await
            .map_err(|e| TransportError::error(format!("cannot open {path}: {e}")))?
            .handle;
        let read = read_capped(sftp, &handle, path, size, cap).await;
        let _ = sftp.close(handle).await;
        read
    }

    async fn remove_file(&mut self, path: &str) -> TResult<()> {
        let path = &sftp_path(path);
        let sftp = self.sftp().await?;
        match sftp.remove(path).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, StatusCode::NoSuchFile) => Ok(()),
            Err(e) => Err(TransportError::error(format!("cannot remove {path}: {e}"))),
        }
    }

    async fn remove_dir_if_empty(&mut self, path: &str) -> TResult<bool> {
        let path = &sftp_path(path);
        let sftp = self.sftp().await?;
        match sftp.rmdir(path).await {
            Ok(_) => Ok(true),
            Err(e) if is_status(&e, StatusCode::NoSuchFile) => Ok(true),
            Err(_) => Ok(false),
        }
    }

    async fn close(&mut self) {
        if let Some(s) = self.sftp.take() {
            let _ = s.close_session();
        }
        let _ = self
            .handle
            .disconnect(Disconnect::ByApplication, "", "en")
            .await;
    }
}
