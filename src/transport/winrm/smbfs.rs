//! Files over SMB (the `smb2` crate): the administrative shares of a
//! Windows host, `ADMIN$` (= `%windir%`, assumed `C:\Windows`) for paths
//! under it and `C$`, `D$`, ... for the rest (or always, when configured).
//!
//! One SMB session per host, one tree per share, opened on first use.
//!
//! Everything the server says is hostile, sizes included. A read is bounded
//! by our cap, never by the size the server reports: the file is refused at
//! its open when the server calls it larger than the cap, the bytes come in
//! chunks that are counted against the cap as they arrive, and the number of
//! READ answers is bounded so a server answering in slivers cannot hold the
//! host. A listing stops reading the directory at [`MAX_ENTRIES`].

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};
use smb2::{ClientConfig, ErrorKind, SmbClient, Tree};

use crate::model::HostClass;
use crate::transport::{EntryKind, RemoteEntry, TResult, TransportError};

/// At most this many entries of a remote directory are read; the directory
/// is not read further.
const MAX_ENTRIES: usize = 10_000;
/// A streamed read accepts at most one READ answer per this many bytes of the
/// file (plus [`READ_ANSWER_SLACK`]): a real server answers each READ in full
/// (512 KiB, or at least 64 KiB when credits are short), a hostile one that
/// answers a byte at a time is cut off after a bounded number of round trips.
const READ_GRAIN: u64 = 64 * 1024;
const READ_ANSWER_SLACK: u64 = 16;
/// The largest file [`SmbFiles::sha256`] hashes (a checker is a few MiB): a
/// server calling a file larger is refused rather than streamed for hours.
const MAX_HASHED: u64 = 1 << 30;
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
        // Chunk by chunk into the hash: a checker is never held whole in memory per host.
        let mut hash = Sha256::new();
        match self
            .stream(path, MAX_HASHED, |chunk| hash.update(chunk))
            .await?
        {
            None => Ok(None),
            Some(_) => Ok(Some(hex::encode(hash.finalize()))),
        }
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
        // One QUERY_DIRECTORY answer at a time, and no more once the cap is
        // reached: a directory of a million entries (or a server that never
        // says "no more files") costs what 10,000 entries cost.
        let mut reader = match client.open_directory_reader(tree, &rel).await {
            Ok(r) => r,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(smb_error("smb list", &e)),
        };
        let mut out = Vec::new();
        while out.len() < MAX_ENTRIES {
            let batch = match reader.next_batch().await {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(e) => return Err(smb_error("smb list", &e)),
            };
            let room = MAX_ENTRIES - out.len();
            out.extend(
                batch
                    .into_iter()
                    .filter(|e| e.name != "." && e.name != "..")
                    .take(room)
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
                    }),
            );
        }
        // A listing stopped at the cap drops the reader, which closes the
        // directory handle without waiting for the answer.
        Ok(out)
    }

    pub async fn read_file(&mut self, path: &str, cap: u64) -> TResult<Vec<u8>> {
        let max_read = self
            .client
            .params()
            .map(|p| u64::from(p.max_read_size))
            .unwrap_or(65_536);
        if cap <= max_read {
            let (share, rel) = self.map(path)?;
            let (client, tree) = self.tree(&share).await?;
            // One CREATE+READ+CLOSE asking for at most `cap` bytes; a file the
            // CREATE calls larger is refused by the crate, not truncated.
            let conn = client.connection_mut();
            let data = tree
                .read_file_compound_sized(conn, &rel, cap.max(1))
                .await
                .map_err(|e| match e {
                    smb2::Error::FileTooLargeForSingleRead { .. } => {
                        TransportError::error(format!("over the {cap}-byte cap; not fetched"))
                    }
                    _ => smb_error("smb read", &e),
                })?;
            // The READ answer is the server's word too: more than was asked
            // for is refused, not trimmed.
            if data.len() as u64 > cap {
                return Err(TransportError::error(format!(
                    "the server sent {} bytes for a read of at most {cap}; not fetched",
                    data.len()
                )));
            }
            return Ok(data);
        }
        let mut data = Vec::new();
        match self
            .stream(path, cap, |chunk| data.extend_from_slice(chunk))
            .await?
        {
            Some(_) => Ok(data),
            None => Err(TransportError::error("smb read: no such file")),
        }
    }

    /// `path`'s content, at most `cap` bytes; `Ok(None)` when there is no such file.
    pub async fn read_if_exists(&mut self, path: &str, cap: u64) -> TResult<Option<Vec<u8>>> {
        let mut data = Vec::new();
        Ok(self
            .stream(path, cap, |chunk| data.extend_from_slice(chunk))
            .await?
            .map(|_| data))
    }

    /// Reads `path` chunk by chunk into `sink`: `Ok(None)` when there is no
    /// such file, else the number of bytes read, at most `cap`. The size the
    /// server gives at the open is checked against `cap` before any READ,
    /// each answer is counted against it as it lands (never more than was
    /// asked for, so at most `cap` bytes pass), and the answers are bounded
    /// in number ([`READ_GRAIN`]). The open handle is read, so a file that
    /// grows after the open is read as it was then; nothing is sized by a
    /// separate stat.
    async fn stream(
        &mut self,
        path: &str,
        cap: u64,
        mut sink: impl FnMut(&[u8]),
    ) -> TResult<Option<u64>> {
        let (share, rel) = self.map(path)?;
        let (client, tree) = self.tree(&share).await?;
        let mut download = match client.download(tree, &rel).await {
            Ok(d) => d,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(smb_error("smb read", &e)),
        };
        let size = download.size();
        if size > cap {
            // Dropping the download closes the handle; nothing was read.
            return Err(TransportError::error(format!(
                "{size} bytes, over the {cap}-byte cap; not fetched"
            )));
        }
        let max_answers = size.div_ceil(READ_GRAIN).saturating_add(READ_ANSWER_SLACK);
        let (mut total, mut answers) = (0u64, 0u64);
        while let Some(chunk) = download.next_chunk().await {
            let chunk = chunk.map_err(|e| smb_error("smb read", &e))?;
            answers += 1;
            total = total.saturating_add(chunk.len() as u64);
            if total > cap {
                return Err(TransportError::error(format!(
                    "more than the {cap}-byte cap arrived; discarded"
                )));
            }
            if answers > max_answers {
                return Err(TransportError::error(format!(
                    "the server answered {answers} READs for {size} bytes; read abandoned"
                )));
            }
            sink(&chunk);
        }
        Ok(Some(total))
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

/// One named pipe on `IPC$`, in message mode: what DCE/RPC runs over.
pub(super) struct SmbPipe {
    conn: smb2::client::connection::Connection,
    tree: smb2::types::TreeId,
    file: smb2::types::FileId,
    name: String,
}

impl SmbFiles {
    /// Opens `\PIPE\<name>` on `IPC$` (the tree stays open with the others).
    /// A pipe the server does not serve is `STATUS_OBJECT_NAME_NOT_FOUND`.
    pub async fn open_pipe(&mut self, name: &str) -> TResult<SmbPipe> {
        use smb2::msg::create::{
            CreateDisposition, CreateRequest, CreateResponse, ImpersonationLevel, ShareAccess,
        };
        use smb2::pack::{ReadCursor, Unpack};
        use smb2::types::flags::FileAccessMask;
        use smb2::types::{Command, OplockLevel};
        let (client, tree) = self.tree("IPC$").await?;
        let conn = client.connection().clone();
        let tree_id = tree.tree_id;
        let req = CreateRequest {
            requested_oplock_level: OplockLevel::None,
            impersonation_level: ImpersonationLevel::Impersonation,
            desired_access: FileAccessMask::new(
                FileAccessMask::FILE_READ_DATA | FileAccessMask::FILE_WRITE_DATA,
            ),
            file_attributes: 0,
            share_access: ShareAccess(ShareAccess::FILE_SHARE_READ | ShareAccess::FILE_SHARE_WRITE),
            create_disposition: CreateDisposition::FileOpen,
            create_options: 0,
            name: name.to_string(),
            create_contexts: vec![],
        };
        let frame = conn
            .execute(Command::Create, &req, Some(tree_id))
            .await
            .map_err(|e| smb_error(&format!("smb pipe {name}"), &e))?;
        if frame.header.status != smb2::types::status::NtStatus::SUCCESS {
            return Err(TransportError::error(format!(
                "smb pipe {name}: the server refused to open it ({:?})",
                frame.header.status
            )));
        }
        let resp = CreateResponse::unpack(&mut ReadCursor::new(&frame.body))
            .map_err(|e| smb_error(&format!("smb pipe {name}"), &e))?;
        Ok(SmbPipe {
            conn,
            tree: tree_id,
            file: resp.file_id,
            name: name.to_string(),
        })
    }
}

impl SmbPipe {
    fn fail(&self, step: &str, e: &smb2::Error) -> TransportError {
        smb_error(&format!("smb pipe {} {step}", self.name), e)
    }

    /// Appends the rest of a message the server flagged `STATUS_BUFFER_OVERFLOW`,
    /// READ by READ, to at most `max` bytes in all.
    async fn rest_of_message(&mut self, mut msg: Vec<u8>, max: usize) -> TResult<Vec<u8>> {
        use smb2::msg::read::{ReadRequest, ReadResponse, SMB2_CHANNEL_NONE};
        use smb2::pack::{ReadCursor, Unpack};
        use smb2::types::status::NtStatus;
        use smb2::types::Command;
        loop {
            let left = max.saturating_sub(msg.len());
            if left == 0 {
                return Err(TransportError::error(format!(
                    "smb pipe {}: a message longer than {max} bytes",
                    self.name
                )));
            }
            let req = ReadRequest {
                padding: 0x50,
                flags: 0,
                length: u32::try_from(left).unwrap_or(u32::MAX),
                offset: 0,
                file_id: self.file,
                minimum_count: 0,
                channel: SMB2_CHANNEL_NONE,
                remaining_bytes: 0,
                read_channel_info: vec![],
            };
            let frame = self
                .conn
                .execute(Command::Read, &req, Some(self.tree))
                .await
                .map_err(|e| self.fail("read", &e))?;
            let status = frame.header.status;
            if !status.is_success_or_partial() {
                return Err(TransportError::error(format!(
                    "smb pipe {} read: {status:?}",
                    self.name
                )));
            }
            let resp = ReadResponse::unpack(&mut ReadCursor::new(&frame.body))
                .map_err(|e| self.fail("read", &e))?;
            if resp.data.len() > left {
                return Err(TransportError::error(format!(
                    "smb pipe {}: the server answered more than asked",
                    self.name
                )));
            }
            let empty = resp.data.is_empty();
            msg.extend_from_slice(&resp.data);
            if status != NtStatus::BUFFER_OVERFLOW {
                return Ok(msg);
            }
            if empty {
                return Err(TransportError::error(format!(
                    "smb pipe {}: more data announced, none sent",
                    self.name
                )));
            }
        }
    }

    /// Closes the pipe's handle (best effort: the session's end closes it too).
    pub async fn close(self) {
        use smb2::msg::close::CloseRequest;
        use smb2::types::Command;
        let req = CloseRequest {
            flags: 0,
            file_id: self.file,
        };
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            self.conn.execute(Command::Close, &req, Some(self.tree)),
        )
        .await;
    }
}

#[async_trait::async_trait]
impl super::dcerpc::PipeIo for SmbPipe {
    async fn transceive(&mut self, data: &[u8], max: usize) -> TResult<Vec<u8>> {
        use smb2::msg::ioctl::{
            IoctlRequest, IoctlResponse, FSCTL_PIPE_TRANSCEIVE, SMB2_0_IOCTL_IS_FSCTL,
        };
        use smb2::pack::{ReadCursor, Unpack};
        use smb2::types::status::NtStatus;
        use smb2::types::Command;
        let req = IoctlRequest {
            ctl_code: FSCTL_PIPE_TRANSCEIVE,
            file_id: self.file,
            max_input_response: 0,
            max_output_response: u32::try_from(max).unwrap_or(u32::MAX),
            flags: SMB2_0_IOCTL_IS_FSCTL,
            input_data: data.to_vec(),
        };
        let frame = self
            .conn
            .execute(Command::Ioctl, &req, Some(self.tree))
            .await
            .map_err(|e| self.fail("transceive", &e))?;
        let status = frame.header.status;
        if !status.is_success_or_partial() {
            return Err(TransportError::error(format!(
                "smb pipe {} transceive: {status:?}",
                self.name
            )));
        }
        let resp = IoctlResponse::unpack(&mut ReadCursor::new(&frame.body))
            .map_err(|e| self.fail("transceive", &e))?;
        if resp.output_data.len() > max {
            return Err(TransportError::error(format!(
                "smb pipe {}: the server answered more than asked",
                self.name
            )));
        }
        if status == NtStatus::BUFFER_OVERFLOW {
            return self.rest_of_message(resp.output_data, max).await;
        }
        Ok(resp.output_data)
    }

    async fn write(&mut self, data: &[u8]) -> TResult<()> {
        use smb2::msg::write::WriteRequest;
        use smb2::types::status::NtStatus;
        use smb2::types::Command;
        let req = WriteRequest {
            data_offset: 0x70,
            offset: 0,
            file_id: self.file,
            channel: 0,
            remaining_bytes: 0,
            write_channel_info_offset: 0,
            write_channel_info_length: 0,
            flags: 0,
            data: data.to_vec(),
        };
        let frame = self
            .conn
            .execute(Command::Write, &req, Some(self.tree))
            .await
            .map_err(|e| self.fail("write", &e))?;
        if frame.header.status != NtStatus::SUCCESS {
            return Err(TransportError::error(format!(
                "smb pipe {} write: {:?}",
                self.name, frame.header.status
            )));
        }
        Ok(())
    }

    async fn read(&mut self, max: usize) -> TResult<Vec<u8>> {
        self.rest_of_message(Vec::new(), max).await
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

/// Against real Samba (the lab's `smbd`, on a loopback address of these tests' own): the
/// attacks of a host that reports sizes it does not keep to, and of a directory larger than
/// any listing should read.
#[cfg(all(test, unix))]
pub(super) mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    use pushscan_lab::fleet::sys;
    use pushscan_lab::samba;
    use pushscan_lab::spec::SmbEncryption;

    pub(in crate::transport::winrm) const USER: &str = pushscan_lab::spec::DEFAULT_USERNAME;
    pub(in crate::transport::winrm) const PASSWORD: &str = "Lab-Passw0rd!smbfs";

    /// A private smbd serving `ADMIN$`/`C$` of one host tree; killed on drop.
    pub(in crate::transport::winrm) struct TestSamba {
        pid: u32,
        pub ip: Ipv4Addr,
        /// Whether `ip` was added to `lo` for this smbd (Samba binds only an
        /// address an interface carries), so it is removed again.
        added_ip: bool,
        pub port: u16,
        /// The host's `C:\`.
        pub c: PathBuf,
        _dir: tempfile::TempDir,
    }

    impl Drop for TestSamba {
        fn drop(&mut self) {
            sys::kill_tree(&[self.pid], Duration::from_secs(3));
            if self.added_ip {
                let _ = sys::remove_lo_addresses(&[self.ip]);
            }
        }
    }

    fn free_port(ip: Ipv4Addr) -> u16 {
        if TcpListener::bind(SocketAddrV4::new(ip, 445)).is_ok() {
            return 445;
        }
        TcpListener::bind(SocketAddrV4::new(ip, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port")
    }

    /// Samba answers its own RPC pipes here (srvsvc, svcctl: what `scmr`'s tests hold the
    /// client to), whatever the lab's config says about handing pipes to the lab.
    pub(in crate::transport::winrm) fn start_samba(ip: Ipv4Addr) -> TestSamba {
        for tool in ["smbd", "smbpasswd"] {
            assert!(
                sys::find_binary(tool).is_some(),
                "`{tool}` not found: {}",
                samba::INSTALL_HINT
            );
        }
        samba::ensure_system_user(USER).expect("lab account (needs root)");
        let added_ip = !sys::lo_addresses().expect("lo addresses").contains(&ip);
        if added_ip {
            sys::add_lo_addresses(&[ip]).expect("add the address to lo (needs root)");
        }
        let dir = tempfile::Builder::new()
            .prefix("pushscan-smbfs-")
            .tempdir()
            .expect("temporary directory");
        let cfg = samba::SambaConfig {
            lab_dir: dir.path().to_path_buf(),
            addresses: vec![ip],
            wrong_password: Vec::new(),
            port: free_port(ip),
            encryption: SmbEncryption::Off,
            username: USER.into(),
            wine_drives: Vec::new(),
        };
        let paths = samba::write_config(&cfg).expect("smb.conf");
        let conf = std::fs::read_to_string(&paths.conf).expect("smb.conf");
        let own_rpc: String = conf
            .lines()
            .filter(|l| {
                !l.contains("rpc start on demand helpers") && !l.contains("external_rpc_pipe")
            })
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&paths.conf, own_rpc).expect("smb.conf");
        samba::set_password(&paths, USER, PASSWORD).expect("smbpasswd");
        let smbd = samba::start(&cfg, &paths, &[]).expect("smbd starts");
        let c = dir.path().join("hosts").join(ip.to_string()).join("C");
        std::fs::create_dir_all(c.join("Windows/Temp/pushscan")).expect("host tree");
        TestSamba {
            pid: smbd.pid,
            ip,
            added_ip,
            port: cfg.port,
            c,
            _dir: dir,
        }
    }

    pub(in crate::transport::winrm) async fn login(addr: String) -> SmbFiles {
        SmbFiles::connect(
            SmbLogin {
                addr,
                user: USER,
                domain: "",
                password: PASSWORD,
                timeout: Duration::from_secs(10),
                require_encryption: false,
            },
            ShareMode::Admin,
            r"C:\Windows\Temp\pushscan",
        )
        .await
        .expect("SMB login to the test smbd")
    }

    /// The peak resident memory of this process so far, in MiB.
    fn peak_rss_mib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
            .map_or(0, |kb| kb / 1024)
    }

    /// A local user makes a result file 8 TiB (sparse) and small again, over and over, while
    /// pushscan reads it with the 64 MiB evidence cap (above the server's MaxReadSize, so the
    /// chunked path). Sized by what the server said at one moment and read at another, a read
    /// allocated the size seen at the open: 8 TiB, and the whole process aborted. Now every
    /// read is the small file or a refusal naming the cap, and memory stays flat.
    ///
    /// Peak RSS belongs to the whole process, and the other unit tests of this binary run
    /// beside this one (together they once peaked at 512 MiB while this test alone stays near
    /// 20 MiB), so the test runs itself again, alone, in a process of its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_swelling_between_size_and_read_is_refused_not_allocated() {
        const ALONE: &str = "PUSHSCAN_TEST_SWELLING_ALONE";
        if std::env::var_os(ALONE).is_none() {
            let name =
                "transport::winrm::smbfs::tests::a_file_swelling_between_size_and_read_is_refused_not_allocated";
            let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
                .args(["--exact", name, "--nocapture", "--test-threads", "1"])
                .env(ALONE, "1")
                .output()
                .expect("run the test in a process of its own");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            eprint!("{stderr}");
            assert!(
                out.status.success() && stdout.contains("1 passed"),
                "the test alone failed: {:?}\n{stdout}\n{stderr}",
                out.status
            );
            return;
        }
        let smb = start_samba(Ipv4Addr::new(127, 0, 87, 1));
        let local = smb.c.join("Windows/Temp/pushscan/result.txt");
        std::fs::write(&local, b"small result text").expect("result file");
        let mut files = login(format!("{}:{}", smb.ip, smb.port)).await;
        let cap: u64 = 64 << 20;
        assert!(
            files
                .client
                .params()
                .is_some_and(|p| u64::from(p.max_read_size) < cap),
            "the cap must be above MaxReadSize for the chunked path"
        );

        let stop = Arc::new(AtomicBool::new(false));
        let swells = Arc::new(AtomicU64::new(0));
        let toggler = {
            let (stop, swells, local) = (stop.clone(), swells.clone(), local.clone());
            std::thread::spawn(move || {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&local)
                    .expect("open the result file");
                // 8 TiB: within ext4's largest file, far over any memory.
                f.set_len(1 << 43).expect("a sparse 8 TiB file");
                while !stop.load(Ordering::Relaxed) {
                    let _ = f.set_len(1 << 43);
                    let _ = f.set_len(17);
                    swells.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let started = Instant::now();
        let (mut small, mut refused) = (0u32, 0u32);
        let path = r"C:\Windows\Temp\pushscan\result.txt";
        while started.elapsed() < Duration::from_secs(8) && small + refused < 2_000 {
            match files.read_file(path, cap).await {
                Ok(data) => {
                    assert!(
                        data.len() as u64 <= cap,
                        "{} bytes passed the cap",
                        data.len()
                    );
                    small += 1;
                }
                Err(e) => {
                    assert!(e.message.contains("cap"), "unexpected error: {}", e.message);
                    refused += 1;
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        toggler.join().expect("toggler");
        let peak = peak_rss_mib();
        eprintln!(
            "swelling file: {} reads in {:.1}s ({small} read small, {refused} refused over the \
             cap), {} size flips, peak RSS {peak} MiB",
            small + refused,
            started.elapsed().as_secs_f64(),
            swells.load(Ordering::Relaxed)
        );
        assert!(
            refused > 0,
            "the race was never hit: the test proves nothing"
        );
        assert!(peak < 512, "peak RSS {peak} MiB");
        // The session is still good for the next file.
        std::fs::write(&local, b"after").expect("rewrite");
        assert_eq!(files.read_file(path, cap).await.expect("read"), b"after");
        files.close().await;
    }

    /// A directory of 30,000 entries: the listing stops reading at 10,000 (one server answer
    /// past it at most), so what crosses the wire is bounded by the cap, not by the directory.
    /// A loopback relay between pushscan and smbd counts the bytes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_listing_stops_reading_the_directory_at_the_cap() {
        let smb = start_samba(Ipv4Addr::new(127, 0, 87, 2));
        let dir = smb.c.join("Windows/Temp/pushscan/many");
        std::fs::create_dir_all(&dir).expect("dir");
        const N: usize = 30_000;
        for i in 0..N {
            std::fs::write(dir.join(format!("f{i:06}.txt")), b"").expect("entry");
        }
        // Relay: counts what the server sends.
        let from_server = Arc::new(AtomicU64::new(0));
        let relay = tokio::net::TcpListener::bind((smb.ip, 0))
            .await
            .expect("relay bind");
        let relay_addr = relay.local_addr().expect("relay addr");
        let upstream = SocketAddrV4::new(smb.ip, smb.port);
        let counted = from_server.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = relay.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.split();
                    let (mut sr, mut sw) = server.split();
                    let up = tokio::io::copy(&mut cr, &mut sw);
                    let down = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match tokio::io::AsyncReadExt::read(&mut sr, &mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            counted.fetch_add(n as u64, Ordering::Relaxed);
                            if tokio::io::AsyncWriteExt::write_all(&mut cw, &buf[..n])
                                .await
                                .is_err()
                            {
                                break;
                            }
                        }
                    };
                    let _ = tokio::join!(up, down);
                });
            }
        });
        let mut files = login(relay_addr.to_string()).await;
        let before = from_server.load(Ordering::Relaxed);
        let started = Instant::now();
        let listed = files
            .list_dir(r"C:\Windows\Temp\pushscan\many")
            .await
            .expect("list");
        let took = started.elapsed();
        let bytes = from_server.load(Ordering::Relaxed) - before;
        // FileBothDirectoryInformation: 94 bytes + the UTF-16 name (11 characters), padded
        // to 8: 120 bytes an entry; the whole directory would be 3.6 MB.
        let whole = (N as u64) * 120;
        eprintln!(
            "listing a {N}-entry directory: {} entries kept, {bytes} bytes from the server \
             (the whole directory is ~{whole}), {:.0} ms",
            listed.len(),
            took.as_secs_f64() * 1000.0
        );
        assert_eq!(listed.len(), MAX_ENTRIES);
        assert!(
            bytes < (MAX_ENTRIES as u64) * 120 + 256 * 1024,
            "{bytes} bytes read for a capped listing (the whole directory is ~{whole})"
        );
        files.close().await;
    }
}
