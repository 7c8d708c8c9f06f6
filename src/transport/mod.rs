//! Transports: how pushscan reaches a host.
//!
//! A transport is a plug-in seam of pushscan (parsers and store backends are the others).
//! Each transport is one module here, registered by name in [`REGISTRY`], and owns everything
//! about reaching its hosts: the `ansible_connection` values it answers to and the inventory
//! variables it reads ([`Entry`]), what it checks of a host before any connection and how
//! `pushscan plan` shows it ([`HostTarget`]), the command-line flags it reads and the
//! credentials it resolves ([`Options`]), how it connects ([`Connector`]) and the shell its
//! command lines run in ([`Shell`]). The engine only holds [`Transport`] handles and these
//! traits, so adding a transport is one module plus one line in [`REGISTRY`].
//!
//! The per-host pipeline only speaks to the [`Connection`] trait. One `Connection` is opened
//! per host and reused for every step, which is where most of pushscan's speed comes from.
//!
//! Everything a connection returns (names, sizes, output) comes from a host
//! that may be compromised: implementations bound every read, and callers
//! treat the results as untrusted text.

pub mod cmd;
mod flags;
pub mod known_hosts;
pub mod local;
mod registry;
pub mod ssh;
pub mod winrm;
pub mod workdir;

pub use flags::ConnArgs;
pub use registry::{
    by_name, choices, is_flag_var, names, parse, spoken, var_role, Access, Connector, Described,
    Entry, HostInfo, HostTarget, InventoryVars, Options, Sessions, Shell, Transport, VarRole,
};

/// Every transport pushscan speaks, by name; error messages list them in this order, and
/// their options are read from the command line in this order.
pub const REGISTRY: &[Entry] = &[ssh::ENTRY, local::ENTRY, winrm::ENTRY];

/// The transport of a host whose inventory sets no `ansible_connection` (Ansible's default).
pub const ANSIBLE_DEFAULT: &str = "ssh";

/// The transport of hosts read from Active Directory when its configuration names none
/// (Windows computers).
pub const DIRECTORY_DEFAULT: &str = "winrm";

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;

use crate::model::HostClass;

/// A transport failure, already sorted into the class the host will end in.
#[derive(Debug, Clone)]
pub struct TransportError {
    pub class: HostClass,
    pub message: String,
}

impl TransportError {
    pub fn new(class: HostClass, message: impl Into<String>) -> TransportError {
        TransportError {
            class,
            message: message.into(),
        }
    }
    pub fn error(message: impl Into<String>) -> TransportError {
        TransportError::new(HostClass::Error, message)
    }
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TransportError {}

pub type TResult<T> = Result<T, TransportError>;

/// What kind of directory entry a remote name is. Symlinks are reported as
/// such (never followed), so callers can refuse them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// One entry of a remote directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteEntry {
    /// The name exactly as the host sent it: untrusted.
    pub name: String,
    pub kind: EntryKind,
    pub size: u64,
    /// Modification time, seconds since the epoch, when the host gives one.
    pub mtime: Option<u64>,
}

/// A command to run: a program and its arguments, quoted by the transport
/// for the remote shell. Never a string pasted together by the caller.
#[derive(Debug, Clone)]
pub struct CommandSpec {
    pub program: String,
    pub args: Vec<String>,
    pub cwd: String,
    pub timeout: Duration,
    /// At most this many bytes of stdout and of stderr are kept.
    pub output_cap: usize,
    /// Start only once the host's clock is past this second (waiting at
    /// most 2 s): result files written by this run then have a newer mtime
    /// than any file that was there before, even at 1-second resolution.
    pub not_before: Option<u64>,
}

pub use crate::model::ExecOutcome;

/// What `begin_run` found on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Staged {
    /// The checker on the host already has the pinned hash: no push.
    Current,
    /// The checker is missing or different: push it before running.
    NeedsPush,
}

/// Where the checker leaves its result files, for transports that list and fetch them in the
/// same remote session as the run.
#[derive(Debug, Clone)]
pub struct ResultSpec {
    /// The result directory on the host.
    pub dir: String,
    /// Which names are results (`*` and `?` wildcards).
    pub glob: String,
    /// Larger files are never transferred.
    pub cap: u64,
    /// At most this many result files are sent back with the run.
    pub max_files: usize,
}

/// A pinned file pushed beside the checker (a playbook input): where it goes on the host,
/// its fresh temp name, its pin, and the local file.
#[derive(Debug, Clone)]
pub struct PinnedFile {
    pub local: std::path::PathBuf,
    pub dest: String,
    pub tmp: String,
    pub pin: String,
}

/// The whole staged run of one host, as the pipeline asks for it: directories, hash check,
/// the push if needed, the run, and, where the transport can, the listing and fetching of the
/// result files and the removal of the checker in the same remote session. Every remote side
/// effect here has its journal intent committed before `begin_run`.
#[derive(Debug, Clone)]
pub struct RunPlan {
    pub dirs: Vec<String>,
    pub checker: String,
    pub tmp: String,
    pub pin: String,
    /// The playbook's inputs, hashed, pushed and verified like the checker (not executable).
    pub inputs: Vec<PinnedFile>,
    /// The run (`not_before` is decided by the transport from the snapshot).
    pub cmd: CommandSpec,
    /// The result files, when the parser reads any.
    pub results: Option<ResultSpec>,
    /// Files to remove once the run ended and its results were listed (the checker, when
    /// the playbook cleans it up).
    pub remove_after: Vec<String>,
}

/// What `begin_run` learnt before the run.
#[derive(Debug, Clone)]
pub struct Begun {
    /// The checker's state.
    pub staged: Staged,
    /// Each input's state, in the plan's order.
    pub inputs: Vec<Staged>,
    /// The result directory before the run (empty when there is none or no results are read).
    pub before: Vec<RemoteEntry>,
}

/// How the staged run ended, with what the transport gathered in the same session.
#[derive(Debug, Clone, Default)]
pub struct Finished {
    pub exec: ExecOutcome,
    /// The result directory after the run, when the transport listed it (else the caller
    /// lists it).
    pub after: Option<Vec<RemoteEntry>>,
    /// Result files the host sent with the run, each within the cap: the entry as listed and
    /// its bytes. Untrusted like everything else; the caller still checks each entry.
    pub files: Vec<(RemoteEntry, Vec<u8>)>,
    /// `remove_after` done in the session (`Ok`), failed (`Err`), or not attempted (`None`:
    /// the caller removes them).
    pub removed: Option<Result<(), String>>,
}

/// An open connection to one host. Every step of the pipeline goes through
/// one of these; it is closed once at the end.
#[async_trait]
pub trait Connection: Send {
    /// Creates directories (and parents) if missing, private to the login account, and
    /// proves every one private before it is used: one that someone else owns or may write
    /// to, or whose parents someone else may rename, is refused with the reason (see
    /// [`workdir`] for Unix hosts; the `winrm` module for Windows).
    async fn mkdirs(&mut self, dirs: &[String]) -> TResult<()>;

    /// Proves existing directories private as [`mkdirs`](Connection::mkdirs) does, creating
    /// none (a missing directory holds nothing of ours). `cleanup` calls it before removing
    /// anything.
    async fn prove_dirs(&mut self, dirs: &[String]) -> TResult<()>;

    /// Creates the directories and returns the checker's current SHA-256.
    async fn prepare(&mut self, dirs: &[String], checker: &str) -> TResult<Option<String>> {
        self.mkdirs(dirs).await?;
        self.sha256(checker).await
    }

    // ---- the staged run: the three calls every sweep makes per host ----
    //
    // `begin_run` snapshots the result directory, creates the directories and checks the
    // checker's hash; when it reports `NeedsPush`, the caller journals the push intent and
    // calls `push_staged`; then `finish_run` runs the checker. The default implementations
    // compose the primitives below. A transport may instead do all of it in one remote
    // session (SSH does: one exec channel per host per sweep carries the snapshot, the push,
    // the run, the listing and the result files, which is what makes a sweep cost little
    // more than a login).

    /// Step 1: snapshot of the result directory, directories, hash check.
    async fn begin_run(&mut self, plan: &RunPlan) -> TResult<Begun> {
        let before = match &plan.results {
            Some(r) => self.list_dir(&r.dir).await?,
            None => Vec::new(),
        };
        let staged = match self.prepare(&plan.dirs, &plan.checker).await? {
            Some(h) if h == plan.pin => Staged::Current,
            _ => Staged::NeedsPush,
        };
        let mut inputs = Vec::with_capacity(plan.inputs.len());
        for f in &plan.inputs {
            inputs.push(match self.sha256(&f.dest).await? {
                Some(h) if h == f.pin => Staged::Current,
                _ => Staged::NeedsPush,
            });
        }
        Ok(Begun {
            staged,
            inputs,
            before,
        })
    }

    /// Step 2 (only after a `NeedsPush`): the verified push of exactly the files `begin_run`
    /// found missing or different, in the plan's order (the checker first), each as
    /// `install`.
    async fn push_staged(&mut self, files: &[PinnedFile]) -> TResult<()> {
        for f in files {
            self.install(&f.local, &f.tmp, &f.dest, &f.pin).await?;
        }
        Ok(())
    }

    /// Step 3: run the checker (`cmd` is the plan's, with `not_before` set from the
    /// snapshot), as `exec`.
    async fn finish_run(&mut self, cmd: &CommandSpec) -> TResult<Finished> {
        Ok(Finished {
            exec: self.exec(cmd).await?,
            ..Default::default()
        })
    }

    /// SHA-256 (lower-case hex) of a remote regular file; `None` if absent.
    async fn sha256(&mut self, path: &str) -> TResult<Option<String>>;

    /// Copies `local` to `tmp` on the host, checks the copy's SHA-256 against
    /// `sha256`, makes it executable and renames it to `dest`. On a hash
    /// mismatch `tmp` is removed and an error returned: `dest` is never a
    /// partial or wrong file.
    async fn install(&mut self, local: &Path, tmp: &str, dest: &str, sha256: &str) -> TResult<()>;

    /// Runs a command with a timeout; on timeout the remote process tree is
    /// killed and `timed_out` set.
    async fn exec(&mut self, cmd: &CommandSpec) -> TResult<ExecOutcome>;

    /// Runs one command line in the host's own shell, as the caller wrote it: `cmd.exe`
    /// on Windows (WinRM), `/bin/sh -c` elsewhere (this default, through [`exec`]).
    /// For `contain`, whose commands are shell syntax (`if exist`, `case`); the caller
    /// validates and quotes every value in the line for that shell.
    ///
    /// [`exec`]: Connection::exec
    async fn exec_line(
        &mut self,
        line: &str,
        timeout: Duration,
        output_cap: usize,
    ) -> TResult<ExecOutcome> {
        self.exec(&CommandSpec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), line.into()],
            cwd: "/".into(),
            timeout,
            output_cap,
            not_before: None,
        })
        .await
    }

    /// Lists a directory without following symlinks. A missing directory
    /// lists as empty.
    async fn list_dir(&mut self, dir: &str) -> TResult<Vec<RemoteEntry>>;

    /// Reads a regular file of at most `cap` bytes. Refuses symlinks and
    /// larger files without transferring their content.
    async fn read_file(&mut self, path: &str, cap: u64) -> TResult<Vec<u8>>;

    /// Removes a file; absent is success.
    async fn remove_file(&mut self, path: &str) -> TResult<()>;

    /// Removes a directory if it is empty; returns whether it is gone.
    async fn remove_dir_if_empty(&mut self, path: &str) -> TResult<bool>;

    /// Whether the host runs a 64-bit OS, where the transport can tell
    /// (`None`: unknown; the main build is used).
    async fn is_64bit(&mut self) -> TResult<Option<bool>> {
        Ok(None)
    }

    /// Facts about how this host was reached that belong in its reason
    /// line (e.g. "files over WinRM (SMB port closed)").
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }

    /// What this connection may itself create on the host besides the caller's paths, as
    /// journal intents `(step, target)` to commit before its first command: a Windows host
    /// reached over SMB alone runs each command as a service with files of its own.
    fn own_intents(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// Which of [`own_intents`](Connection::own_intents) this connection has itself removed
    /// and checked gone so far (each command over SMB deletes its service and files): the
    /// caller journals them done, so `cleanup` need not visit the host for them. A command
    /// that failed or timed out may have left something; its intent is not in the list.
    fn own_removed(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// Removes what an earlier connection's [`own_intents`](Connection::own_intents) named
    /// for `step` (`targets`, from the journal) and checks that it is gone. `running` names
    /// the programs that connection's commands ran (the checker): one a crash left running
    /// is ended first, so nothing of it is written after the removal.
    async fn remove_own(
        &mut self,
        _step: &str,
        _targets: &[String],
        _running: &[String],
    ) -> TResult<()> {
        Ok(())
    }

    /// Closes the connection politely.
    async fn close(&mut self);
}

/// The journal step of what a connection makes on a host for its own use (a Windows host
/// reached over SMB alone: the services that run its commands): the step of
/// [`Connection::own_intents`], which `cleanup` hands back to [`Connection::remove_own`].
pub const OWN_STEP: &str = "service";

/// Credentials and trust settings shared by every connection of a sweep.
/// Secrets live here only in memory: never on a command line, never logged.
#[derive(Clone, Default)]
pub struct Credentials {
    pub ssh_password: Option<String>,
    pub known_hosts: Option<std::path::PathBuf>,
    pub accept_new_host_keys: bool,
    pub default_key_files: Vec<std::path::PathBuf>,
    pub use_agent: bool,
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field(
                "ssh_password",
                &self.ssh_password.as_ref().map(|_| "<redacted>"),
            )
            .field("known_hosts", &self.known_hosts)
            .field("accept_new_host_keys", &self.accept_new_host_keys)
            .field("default_key_files", &self.default_key_files)
            .field("use_agent", &self.use_agent)
            .finish()
    }
}

/// Keeps at most `cap` bytes in `buf`, counting what is dropped.
pub(crate) fn push_capped(buf: &mut Vec<u8>, data: &[u8], cap: usize, dropped: &mut u64) {
    let room = cap.saturating_sub(buf.len());
    let take = room.min(data.len());
    buf.extend_from_slice(&data[..take]);
    *dropped += (data.len() - take) as u64;
}

/// POSIX shell single-quoting: safe for any byte string but NUL.
pub fn sh_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// The checker's bytes, read once and shared by every host's push while any push holds them:
/// a 1 MiB EmoCheck pushed to 64 hosts at once is 1 MiB in memory, not 64. Held weakly, so
/// nothing stays in memory between sweeps and a replaced file is read again (a changed file
/// is caught anyway: every pushed copy is hashed on the host against the pin).
pub(crate) async fn checker_bytes(local: &Path) -> std::io::Result<std::sync::Arc<Vec<u8>>> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock, Weak};
    type Cache = Mutex<HashMap<std::path::PathBuf, Weak<Vec<u8>>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let cached = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(local)
        .and_then(Weak::upgrade);
    if let Some(bytes) = cached {
        return Ok(bytes);
    }
    let bytes = Arc::new(tokio::fs::read(local).await?);
    let mut map = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    map.retain(|_, w| w.strong_count() > 0);
    map.insert(local.to_path_buf(), Arc::downgrade(&bytes));
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_hostile_text() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
        assert_eq!(sh_quote("$(rm -rf /)"), "'$(rm -rf /)'");
    }

    #[test]
    fn capped_push_counts_drops() {
        let mut b = Vec::new();
        let mut d = 0;
        push_capped(&mut b, b"hello", 3, &mut d);
        push_capped(&mut b, b"xy", 3, &mut d);
        assert_eq!(b, b"hel");
        assert_eq!(d, 4);
    }

    #[test]
    fn crash_detection() {
        let mut o = ExecOutcome {
            exit_code: Some(139),
            ..Default::default()
        };
        assert!(o.crashed());
        o.exit_code = Some(1);
        assert!(!o.crashed());
        o.exit_code = Some(0xC000_0005);
        assert!(o.crashed());
    }
}
