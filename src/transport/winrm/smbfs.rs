//! Files over SMB (the `smb2` crate): the administrative shares of a
//! Windows host, `ADMIN$` (= `%windir%`, assumed `C:\Windows`) for paths
//! under it and `C$`, `D$`, ... for the rest (or always, when configured).
//!
//! One SMB session per host, one tree per share, opened on first use. Reads
//! are bounded before any data moves: a capped read asks the server for at
//! most `cap` bytes and fails if the file is larger.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};
use smb2::{ClientConfig, ErrorKind, SmbClient, Tree};

use crate::model::HostClass;
use crate::transport::{EntryKind, RemoteEntry, TResult, TransportError};

/// At most this many entries of a remote directory are considered.
const MAX_ENTRIES: usize = 10_000;
/// Bytes handed to the SMB writer at a time (it splits them by the server's write size).
const WRITE_CHUNK: usize = 1024 * 1024;
/// Seconds between 1601-01-01 (FILETIME) and 1970-01-01.
const FILETIME_UNIX_OFFSET: u64 = 11_644_473_600;

/// Which share a Windows path goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareMode {
    /// `ADMIN$` for `C:\Windows\...`, the drive share for other paths.
    Admin,
    /// Always the drive share (`C$`).
    Drive,
}

pub(super) struct SmbFiles {
    client: SmbClient,
    trees: HashMap<String, Tree>,
    mode: ShareMode,
    /// Whether the session encrypts (SMB 3 with encryption turned on).
    pub encrypted: bool,
}

pub(super) struct SmbLogin<'a> {
    pub addr: String,
    pub user: &'a str,
    pub domain: &'a str,
    pub password: &'a str,
    pub timeout: Duration,
    pub require_encryption: bool,
}

impl SmbFiles {
    /// Connects, authenticates and opens the share that `probe` (a path the
    /// sweep will use) maps to, so a refused share is found here, where the
    /// caller can still fall back to WinRM-only transfers.
    pub async fn connect(login: SmbLogin<'_>, mode: ShareMode, probe: &str) -> TResult<SmbFiles> {
        let config = ClientConfig {
            addr: login.addr.clone(),
            timeout: login.timeout,
            username: login.user.to_string(),
            password: login.password.to_string(),
            domain: login.domain.to_string(),
            auto_reconnect: false,
            compression: false,
            dfs_enabled: false,
            response_timeout: Some(login.timeout.max(Duration::from_secs(30))),
            // Encrypt whenever the server can (SMB 3), not only when it
            // demands it; `Required` refuses a session that would be clear.
            encryption: if login.require_encryption {
                smb2::EncryptionMode::Required
            } else {
                smb2::EncryptionMode::Desired
            },
            ..Default::default()
        };
        let client = tokio::time::timeout(login.timeout * 2, SmbClient::connect(config))
            .await
            .map_err(|_| {
                TransportError::new(
                    HostClass::Unreachable,
                    format!(
                        "smb: no answer from {} within {}s",
                        login.addr,
                        (login.timeout * 2).as_secs()
                    ),
                )
            })?
            .map_err(|e| smb_error("smb connect", &e))?;
        let encrypted = client.is_encrypted();
        let mut files = SmbFiles {
            client,
            trees: HashMap::new(),
            mode,
            encrypted,
        };
        let (share, _) = files.map(probe)?;
        files.tree(&share).await?;
        Ok(files)
    }

    /// `C:\Windows\Temp\x` → (`ADMIN$`, `Temp/x`) or (`C$`, `Windows/Temp/x`).
    fn map(&self, path: &str) -> TResult<(String, String)> {
        let p = path.replace('/', "\\");
        let bytes = p.as_bytes();
        if bytes.len() < 3 || !bytes[0].is_ascii_alphabetic() || &p[1..3] != ":\\" {
            return Err(TransportError::error(format!(
                "smb: {} is not an absolute Windows path (X:\\...)",
                crate::sanitize::display(path, 120)
            )));
        }
        let rest: Vec<&str> = p[3..].split('\\').filter(|c| !c.is_empty()).collect();
        if rest.iter().any(|c| *c == ".." || *c == ".") {
            return Err(TransportError::error("smb: path with '.' or '..' refused"));
        }
        let drive = p[..1].to_ascii_uppercase();
        if self.mode == ShareMode::Admin
            && drive == "C"
            && rest
                .first()
                .is_some_and(|c| c.eq_ignore_ascii_case("windows"))
        {
            return Ok(("ADMIN$".into(), rest[1..].join("/")));
        }
        Ok((format!("{drive}$"), rest.join("/")))
    }

    /// Opens the share's tree on first use; returns the client and the tree
    /// (disjoint borrows, as every smb2 call needs both).
    async fn tree(&mut self, share: &str) -> TResult<(&mut SmbClient, &mut Tree)> {
        if !self.trees.contains_key(share) {
            let t = self
                .client
                .connect_share(share)
                .await
                .map_err(|e| smb_error(&format!("smb share {share}"), &e))?;
            self.trees.insert(share.to_string(), t);
        }
        let tree = self
            .trees
            .get_mut(share)
            .ok_or_else(|| TransportError::error("smb: share vanished"))?;
        Ok((&mut self.client, tree))
    }

    pub async fn sha256(&mut self, path: &str) -> TResult<Option<String>> {
        let (share, rel) = self.map(path)?;
        let (client, tree) = self.tree(&share).await?;
        // Chunk by chunk into the hash: a checker is never held whole in memory per host.
        let mut download = match client.download(tree, &rel).await {
            Ok(d) => d,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(smb_error("smb read", &e)),
        };
        let mut hash = Sha256::new();
        while let Some(chunk) = download.next_chunk().await {
            let chunk = chunk.map_err(|e| smb_error("smb read", &e))?;
            hash.update(&chunk);
        }
        Ok(Some(hex::encode(hash.finalize())))
    }

    pub async fn install(&mut self, local: &Path, tmp: &str, dest: &str, pin: &str) -> TResult<()> {
        let data = crate::transport::checker_bytes(local)
            .await
            .map_err(|e| TransportError::error(format!("read {}: {e}", local.display())))?;
        let (share, rel_tmp) = self.map(tmp)?;
        let (dshare, rel_dest) = self.map(dest)?;
        if share != dshare {
            return Err(TransportError::error(
                "smb: temp and final path on different shares",
            ));
        }
        // Create-new (`FILE_CREATE`): a name that exists, a planted link included, is
        // refused by the server, never opened or written through; the temp name is the
        // run's own, so a collision is not ours and is left alone.
        let (client, tree) = self.tree(&share).await?;
        let mut writer = match client.create_file_writer_exclusive(tree, &rel_tmp).await {
            Ok(w) => w,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                return Err(TransportError::error(format!(
                    "smb write: {} already exists (not ours); not written",
                    crate::sanitize::display(tmp, 120)
                )))
            }
            Err(e) => return Err(smb_error("smb write", &e)),
        };
        let mut written = Ok(());
        for chunk in data.chunks(WRITE_CHUNK) {
            written = writer.write_chunk(chunk).await;
            if written.is_err() {
                break;
            }
        }
        let written = match written {
            Ok(()) => writer.finish().await.map(|_| ()),
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        };
        if let Err(e) = written {
            let _ = self.remove_file(tmp).await;
            return Err(smb_error("smb write", &e));
        }
        // Verify what the host has, not what we sent.
        let back = match self.sha256(tmp).await {
            Ok(h) => h,
            Err(e) => {
                let _ = self.remove_file(tmp).await;
                return Err(e);
            }
        };
        if back.as_deref() != Some(pin) {
            let _ = self.remove_file(tmp).await;
            return Err(TransportError::error(format!(
                "pushed copy has SHA-256 {}, expected {pin}; removed",
                back.unwrap_or_else(|| "(missing)".into())
            )));
        }
        let (client, tree) = self.tree(&share).await?;
        let opts = smb2::RenameOptions::new().replace_if_exists(true);
        if let Err(e) = client.rename_with(tree, &rel_tmp, &rel_dest, opts).await {
            let _ = self.remove_file(tmp).await;
            return Err(smb_error("smb rename", &e));
        }
        Ok(())
    }

    pub async fn list_dir(&mut self, dir: &str) -> TResult<Vec<RemoteEntry>> {
        let (share, rel) = self.map(dir)?;
        let (client, tree) = self.tree(&share).await?;
        let entries = match client.list_directory(tree, &rel).await {
            Ok(v) => v,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(smb_error("smb list", &e)),
        };
        Ok(entries
            .into_iter()
            .filter(|e| e.name != "." && e.name != "..")
            .take(MAX_ENTRIES)
            .map(|e| RemoteEntry {
                kind: if e.is_link() {
                    EntryKind::Symlink
                } else if e.is_directory {
                    EntryKind::Dir
                } else {
                    EntryKind::File
                },
                size: e.size,
                mtime: filetime_secs(e.modified.0),
                name: e.name,
            })
            .collect())
    }

    pub async fn read_file(&mut self, path: &str, cap: u64) -> TResult<Vec<u8>> {
        let (share, rel) = self.map(path)?;
        let max_read = self
            .client
            .params()
            .map(|p| u64::from(p.max_read_size))
            .unwrap_or(65_536);
        let (client, tree) = self.tree(&share).await?;
        if cap <= max_read {
            // One CREATE+READ+CLOSE asking for at most `cap` bytes; a larger
            // file is refused by the crate, not truncated.
            let conn = client.connection_mut();
            return tree
                .read_file_compound_sized(conn, &rel, cap.max(1))
                .await
                .map_err(|e| match e.kind() {
                    _ if matches!(e, smb2::Error::FileTooLargeForSingleRead { .. }) => {
                        TransportError::error(format!("over the {cap}-byte cap; not fetched"))
                    }
                    _ => smb_error("smb read", &e),
                });
        }
        let info = client
            .stat(tree, &rel)
            .await
            .map_err(|e| smb_error("smb stat", &e))?;
        if info.size > cap {
            return Err(TransportError::error(format!(
                "{} bytes, over the {cap}-byte cap; not fetched",
                info.size
            )));
        }
        let (client, tree) = self.tree(&share).await?;
        let data = client
            .read_file_pipelined(tree, &rel)
            .await
            .map_err(|e| smb_error("smb read", &e))?;
        if data.len() as u64 > cap {
            return Err(TransportError::error(format!(
                "grew over the {cap}-byte cap while read"
            )));
        }
        Ok(data)
    }

    pub async fn is_dir(&mut self, path: &str) -> TResult<bool> {
        let (share, rel) = self.map(path)?;
        let (client, tree) = self.tree(&share).await?;
        match client.stat(tree, &rel).await {
            Ok(info) => Ok(info.is_directory),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(smb_error("smb stat", &e)),
        }
    }

    pub async fn remove_file(&mut self, path: &str) -> TResult<()> {
        let (share, rel) = self.map(path)?;
        let (client, tree) = self.tree(&share).await?;
        match client.delete_file(tree, &rel).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(smb_error("smb delete", &e)),
        }
    }

    pub async fn remove_dir_if_empty(&mut self, path: &str) -> TResult<bool> {
        let (share, rel) = self.map(path)?;
        let (client, tree) = self.tree(&share).await?;
        match client.delete_directory(tree, &rel).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(true),
            Err(_) => Ok(false),
        }
    }

    pub async fn close(&mut self) {
        for (_, t) in self.trees.drain() {
            let _ = tokio::time::timeout(Duration::from_secs(5), self.client.disconnect_share(&t))
                .await;
        }
    }
}

fn filetime_secs(ticks: u64) -> Option<u64> {
    if ticks == 0 {
        return None;
    }
    (ticks / 10_000_000).checked_sub(FILETIME_UNIX_OFFSET)
}

fn smb_error(step: &str, e: &smb2::Error) -> TransportError {
    let class = match e.kind() {
        ErrorKind::AuthRequired => HostClass::AuthFailed,
        ErrorKind::TimedOut => HostClass::Unreachable,
        _ => HostClass::Error,
    };
    let text = e.to_string();
    let class = if class == HostClass::Error
        && (text.contains("Connection refused") || text.contains("connect"))
    {
        HostClass::Unreachable
    } else {
        class
    };
    TransportError::new(
        class,
        crate::sanitize::display(&format!("{step}: {text}"), 300),
    )
}
