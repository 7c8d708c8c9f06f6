//! The `local` transport: the same pipeline on the controller itself.
//!
//! Used for first runs (the README's demo sweep), for tests, and to scan the
//! jump host. It follows the same rules as a remote host: work directories are
//! proven private before use ([`workdir`](super::workdir)), the checker's copy is
//! created new without following a link, no symlink is followed when reading
//! results, reads are capped, a timed-out checker is killed with its whole
//! process group, and the checker gets an allow-listed environment
//! ([`child_env`](crate::child_env)), never the controller's secrets.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use async_trait::async_trait;
use secrecy::SecretString;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::workdir::expand_local;
use super::{
    push_capped, CommandSpec, ConnArgs, Connection, Connector, Described, Entry, EntryKind,
    ExecOutcome, HostInfo, HostTarget, InventoryVars, Options, RemoteEntry, Shell, TResult,
    TransportError,
};
use crate::digest::sha256_file;
use crate::exit::Fail;

pub const ENTRY: Entry = Entry {
    name: "local",
    answers_to: &["local"],
    listed_as: "local",
    // Ansible's local plugin reads the SSH names; pushscan uses none of them to connect.
    vars: InventoryVars {
        host: &["ansible_host", "ansible_ssh_host"],
        port: &["ansible_port", "ansible_ssh_port"],
        user: &["ansible_user", "ansible_ssh_user"],
        password: &[
            "ansible_password",
            "ansible_ssh_pass",
            "ansible_ssh_password",
        ],
        flags: &[],
    },
    shell: Shell::Posix,
    target: plan_target,
    options,
};

/// The plan of a local host: nothing to decide before running.
#[derive(Debug)]
struct LocalPlan;

impl HostTarget for LocalPlan {
    fn describe(&self) -> Described {
        Described {
            transport: ENTRY.name,
            port: None,
            files: None,
            password_auth: false,
        }
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

fn plan_target(_host: &dyn HostInfo) -> Result<Arc<dyn HostTarget>, String> {
    Ok(Arc::new(LocalPlan))
}

/// No settings: the local machine is reached as the operator.
#[derive(Debug)]
struct LocalOptions;

fn options(_a: &ConnArgs, _prompted: Option<&SecretString>) -> Result<Arc<dyn Options>, Fail> {
    Ok(Arc::new(LocalOptions))
}

impl Options for LocalOptions {
    fn connector(
        &self,
        hosts: &[(usize, &dyn HostInfo)],
    ) -> (Arc<dyn Connector>, Vec<(usize, String)>) {
        // A vaulted password no vault password opened is a mistake in the inventory: the
        // run stops before touching any host, as for every transport.
        (
            Arc::new(LocalOptions),
            super::registry::unopened_vaults(hosts),
        )
    }
}

#[async_trait]
impl Connector for LocalOptions {
    async fn connect(
        &self,
        _host: &dyn HostInfo,
        _target: &dyn HostTarget,
        _probe: &str,
    ) -> TResult<Box<dyn Connection>> {
        Ok(Box::new(LocalConnection))
    }
}

/// A "connection" to the local machine.
#[derive(Debug, Default)]
pub struct LocalConnection;

fn io_err(what: &str, path: &str, e: std::io::Error) -> TransportError {
    TransportError::error(format!("{what} {path}: {e}"))
}

async fn drain<R: AsyncRead + Unpin>(mut r: R, cap: usize) -> (Vec<u8>, u64) {
    let mut buf = Vec::new();
    let mut dropped = 0;
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => push_capped(&mut buf, &chunk[..n], cap, &mut dropped),
        }
    }
    (buf, dropped)
}

/// Creates (`create`) and proves `dirs` private, in order (a parent before its child).
async fn prove_all(dirs: &[String], create: bool) -> TResult<()> {
    let dirs: Vec<PathBuf> = dirs
        .iter()
        .map(|d| PathBuf::from(expand_local(d)))
        .collect();
    let res =
        tokio::task::spawn_blocking(move || dirs.iter().try_for_each(|d| prove_one(d, create)))
            .await
            .map_err(|e| TransportError::error(format!("directory task failed: {e}")))?;
    res.map_err(TransportError::error)
}

#[cfg(unix)]
fn prove_one(dir: &Path, create: bool) -> Result<(), String> {
    super::workdir::prove_local(dir, create)
}

/// Windows controllers: directories are created, and refused when they are reparse points
/// (links, junctions); their ACL is not checked here (the `winrm` transport's proof is for
/// remote hosts). Scan the jump host itself from a directory only administrators can write.
#[cfg(not(unix))]
fn prove_one(dir: &Path, create: bool) -> Result<(), String> {
    if create {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => Err(format!(
            "unsafe work directory {}: it is a link or junction",
            dir.display()
        )),
        Ok(m) if !m.is_dir() => Err(format!("{} is not a directory", dir.display())),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => Ok(()),
        Err(e) => Err(format!("cannot stat {}: {e}", dir.display())),
    }
}

/// Copies `src` to the new file `dst` (mode 0700 on Unix): fails if `dst` exists, whatever
/// it is, so a link planted at the name is never written through.
fn copy_new(src: &Path, dst: &Path) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o700).custom_flags(libc::O_NOFOLLOW);
    }
    // A stale copy of ours from an interrupted push: removed, not opened.
    match std::fs::remove_file(dst) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut out = opts.open(dst)?;
    let mut input = std::fs::File::open(src)?;
    std::io::copy(&mut input, &mut out)?;
    out.sync_all()
}

#[cfg(unix)]
fn kill_group(pid: u32) {
    // SAFETY: kill(2) with a negative pid signals a process group; it has no
    // memory-safety preconditions.
    unsafe {
        libc::kill(-(pid as i32), libc::SIGKILL);
    }
}

#[async_trait]
impl Connection for LocalConnection {
    async fn mkdirs(&mut self, dirs: &[String]) -> TResult<()> {
        prove_all(dirs, true).await
    }

    async fn prove_dirs(&mut self, dirs: &[String]) -> TResult<()> {
        prove_all(dirs, false).await
    }

    async fn sha256(&mut self, path: &str) -> TResult<Option<String>> {
        let path = expand_local(path);
        match tokio::fs::symlink_metadata(&path).await {
            Ok(m) if m.file_type().is_file() => {}
            _ => return Ok(None),
        }
        let p = path.clone();
        let res = tokio::task::spawn_blocking(move || sha256_file(Path::new(&p)))
            .await
            .map_err(|e| TransportError::error(format!("hash task failed: {e}")))?;
        res.map(|(h, _)| Some(h))
            .map_err(|e| io_err("cannot hash", &path, e))
    }

    async fn install(&mut self, local: &Path, tmp: &str, dest: &str, sha256: &str) -> TResult<()> {
        let (tmp, dest) = (expand_local(tmp), expand_local(dest));
        // The work directory is proven private (mkdirs); the copy is still created new
        // (O_EXCL, O_NOFOLLOW): a name planted there is never written through.
        let (src, dst) = (local.to_path_buf(), PathBuf::from(&tmp));
        let copied = tokio::task::spawn_blocking(move || copy_new(&src, &dst))
            .await
            .map_err(|e| TransportError::error(format!("copy task failed: {e}")))?;
        copied.map_err(|e| io_err("cannot copy checker to", &tmp, e))?;
        match self.sha256(&tmp).await? {
            Some(h) if h == sha256 => {}
            other => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(TransportError::error(format!(
                    "copy at {tmp} has hash {other:?}, expected {sha256}; removed"
                )));
            }
        }
        tokio::fs::rename(&tmp, &dest)
            .await
            .map_err(|e| io_err("cannot rename to", &dest, e))
    }

    async fn exec(&mut self, cmd: &CommandSpec) -> TResult<ExecOutcome> {
        let now_secs = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        };
        if let Some(nb) = cmd.not_before {
            let limit = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while now_secs() <= nb && std::time::Instant::now() < limit {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
        let mut command = tokio::process::Command::new(expand_local(&cmd.program));
        command
            .args(cmd.args.iter().map(|a| expand_local(a)))
            .current_dir(expand_local(&cmd.cwd))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        crate::child_env::restrict(command.as_std_mut());
        #[cfg(unix)]
        command.process_group(0);
        let mut child = spawn_when_not_busy(&mut command).await.map_err(|e| {
            TransportError::new(
                crate::model::HostClass::CheckerFailed,
                format!("cannot start {}: {e}", cmd.program),
            )
        })?;
        let pid = child.id();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let cap = cmd.output_cap;
        let out_task = tokio::spawn(async move {
            match stdout {
                Some(s) => drain(s, cap).await,
                None => (Vec::new(), 0),
            }
        });
        let err_task = tokio::spawn(async move {
            match stderr {
                Some(s) => drain(s, cap).await,
                None => (Vec::new(), 0),
            }
        });
        let mut out = ExecOutcome {
            started_at: Some(now_secs()),
            ..Default::default()
        };
        match tokio::time::timeout(cmd.timeout, child.wait()).await {
            Ok(Ok(status)) => {
                out.exit_code = status.code().map(i64::from);
                #[cfg(unix)]
                {
                    use std::os::unix::process::ExitStatusExt;
                    out.exit_signal = status.signal().map(|s| format!("signal {s}"));
                }
            }
            Ok(Err(e)) => return Err(TransportError::error(format!("wait failed: {e}"))),
            Err(_) => {
                out.timed_out = true;
                #[cfg(unix)]
                if let Some(p) = pid {
                    kill_group(p);
                }
                #[cfg(not(unix))]
                let _ = pid;
                let _ = child.kill().await;
            }
        }
        // Grandchildren may hold the pipes open; do not wait on them forever.
        let grace = std::time::Duration::from_secs(2);
        if let Ok(Ok((b, d))) = tokio::time::timeout(grace, out_task).await {
            out.stdout = b;
            out.truncated_bytes += d;
        }
        if let Ok(Ok((b, d))) = tokio::time::timeout(grace, err_task).await {
            out.stderr = b;
            out.truncated_bytes += d;
        }
        Ok(out)
    }

    async fn list_dir(&mut self, dir: &str) -> TResult<Vec<RemoteEntry>> {
        let dir = &expand_local(dir);
        let mut rd = match tokio::fs::read_dir(dir).await {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("cannot list", dir, e)),
        };
        let mut out = Vec::new();
        while let Some(entry) = rd
            .next_entry()
            .await
            .map_err(|e| io_err("cannot list", dir, e))?
        {
            // DirEntry::metadata does not follow symlinks.
            let Ok(meta) = entry.metadata().await else {
                continue;
            };
            let ft = meta.file_type();
            let kind = if ft.is_symlink() {
                EntryKind::Symlink
            } else if ft.is_file() {
                EntryKind::File
            } else if ft.is_dir() {
                EntryKind::Dir
            } else {
                EntryKind::Other
            };
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs());
            out.push(RemoteEntry {
                name: entry.file_name().to_string_lossy().into_owned(),
                kind,
                size: meta.len(),
                mtime,
            });
        }
        Ok(out)
    }

    async fn read_file(&mut self, path: &str, cap: u64) -> TResult<Vec<u8>> {
        let path = &expand_local(path);
        let meta = tokio::fs::symlink_metadata(path)
            .await
            .map_err(|e| io_err("cannot stat", path, e))?;
        if !meta.file_type().is_file() {
            return Err(TransportError::error(format!(
                "{path} is not a regular file (symlink or special); not read"
            )));
        }
        if meta.len() > cap {
            return Err(TransportError::error(format!(
                "{path} is {} bytes, over the {cap}-byte cap; not fetched",
                meta.len()
            )));
        }
        let mut opts = tokio::fs::OpenOptions::new();
        opts.read(true);
        #[cfg(unix)]
        opts.custom_flags(libc::O_NOFOLLOW);
        let file = opts
            .open(path)
            .await
            .map_err(|e| io_err("cannot open", path, e))?;
        let mut buf = Vec::new();
        file.take(cap + 1)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| io_err("cannot read", path, e))?;
        if buf.len() as u64 > cap {
            return Err(TransportError::error(format!(
                "{path} grew past the {cap}-byte cap while being read; discarded"
            )));
        }
        Ok(buf)
    }

    async fn remove_file(&mut self, path: &str) -> TResult<()> {
        let path = &expand_local(path);
        match tokio::fs::remove_file(path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("cannot remove", path, e)),
        }
    }

    async fn remove_dir_if_empty(&mut self, path: &str) -> TResult<bool> {
        let path = &expand_local(path);
        match tokio::fs::remove_dir(path).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
            Err(_) => Ok(false),
        }
    }

    async fn close(&mut self) {}
}

/// Spawns `command`, retrying while the kernel answers "text file busy".
///
/// Hosts run side by side in one process: while one host's checker copy is being written
/// (its descriptor open for writing), another host's spawn forks, and the forked child holds
/// that descriptor until its own `exec` closes it. Executing the finished copy in that
/// window fails with ETXTBSY although nothing is wrong with it. The window is a fork-to-exec
/// gap (microseconds), so a few short, bounded retries end it; a file that stays busy is
/// reported as before.
async fn spawn_when_not_busy(
    command: &mut tokio::process::Command,
) -> std::io::Result<tokio::process::Child> {
    let mut delay = std::time::Duration::from_millis(5);
    for _ in 0..8 {
        match command.spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            other => return other,
        }
    }
    command.spawn()
}
