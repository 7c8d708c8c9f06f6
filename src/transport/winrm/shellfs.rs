//! Files through the WinRM shell alone, for hosts where SMB is closed or the
//! admin share refused: no PowerShell, only `cmd` built-ins and `certutil`,
//! which every Windows since Vista has.
//!
//! * push: the file is sent as base64 lines appended to a `.b64` file, many
//!   lines per command (cmd's 8,191-character line limit is the bound), then
//!   `certutil -f -decode`, `certutil -hashfile` to verify, `move /y`;
//! * read: `type`, with the output capped at the size cap + 1;
//! * list: `dir /b /a-d` (names only: this path has no sizes or times, so
//!   recency comes from the report names).
//!
//! Every path and name is checked by [`cmd::check`](crate::transport::cmd::check) before it is put on
//! a command line: a hostile file name cannot become a command.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;

use super::exec::Remote;
use crate::transport::cmd::quote_path;
use crate::transport::{EntryKind, RemoteEntry, TResult, TransportError};

/// Bound of one file operation command.
const OP_TIMEOUT: Duration = Duration::from_secs(120);
/// Output kept from a file operation.
const OP_CAP: usize = 64 * 1024;
/// cmd.exe refuses longer lines (8,191 characters); stay below with margin.
const MAX_LINE: usize = 8_000;
/// Base64 characters per echoed line (a multiple of 4).
const B64_LINE: usize = 1_900;
/// At most this many entries of a remote directory are considered.
const MAX_ENTRIES: usize = 10_000;

pub(super) async fn sha256(r: &Remote, path: &str) -> TResult<Option<String>> {
    let q = quote_path("path", path)?;
    let out = r
        .run(
            &format!("certutil -hashfile {q} SHA256"),
            OP_TIMEOUT,
            OP_CAP,
        )
        .await?;
    let text = String::from_utf8_lossy(&out.stdout);
    if out.exit_code == Some(0) {
        // Line 2 is the hash; Windows 7's certutil separates bytes by blanks.
        let hex: String = text
            .lines()
            .nth(1)
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_lowercase();
        if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(Some(hex));
        }
        return Err(TransportError::error(
            "certutil -hashfile: unexpected output",
        ));
    }
    // 0x80070002 file not found, 0x80070003 path not found.
    if text.contains("0x80070002") || text.contains("0x80070003") {
        return Ok(None);
    }
    Err(TransportError::error(format!(
        "certutil -hashfile: {}",
        crate::sanitize::display(text.trim(), 200)
    )))
}

/// The base64 staging file a push through the WinRM shell writes beside `tmp` (removed once
/// decoded): a push cut short may leave it.
pub(super) fn staging_name(tmp: &str) -> String {
    format!("{tmp}.b64")
}

pub(super) async fn install(
    r: &Remote,
    local: &Path,
    tmp: &str,
    dest: &str,
    pin: &str,
) -> TResult<()> {
    let data = crate::transport::checker_bytes(local)
        .await
        .map_err(|e| TransportError::error(format!("read {}: {e}", local.display())))?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(data.as_slice());
    let b64_path = staging_name(tmp);
    let qb = quote_path("path", &b64_path)?;
    let qt = quote_path("path", tmp)?;
    let qd = quote_path("path", dest)?;
    let result = async {
        // Start from an empty file, then append as many lines per command as
        // the line limit allows (redirection first: a line ending in a digit
        // must not read as `2>>`).
        run_ok(r, &format!("del /f /q {qb} 2>nul & exit /b 0"), "push").await?;
        let prefix = format!(">>{qb} echo ");
        let per_cmd = ((MAX_LINE / (B64_LINE + prefix.len() + 3)).max(1)) * B64_LINE;
        for chunk in b64.as_bytes().chunks(per_cmd) {
            let mut line = String::with_capacity(MAX_LINE);
            for (i, piece) in chunk.chunks(B64_LINE).enumerate() {
                if i > 0 {
                    line.push_str(" & ");
                }
                line.push_str(&prefix);
                line.push_str(std::str::from_utf8(piece).unwrap_or_default());
            }
            run_ok(r, &line, "push").await?;
        }
        run_ok(
            r,
            &format!("certutil -f -decode {qb} {qt}"),
            "push (certutil -decode)",
        )
        .await?;
        match sha256(r, tmp).await? {
            Some(h) if h == pin => {}
            other => {
                return Err(TransportError::error(format!(
                    "pushed copy has SHA-256 {}, expected {pin}; removed",
                    other.unwrap_or_else(|| "(missing)".into())
                )))
            }
        }
        run_ok(r, &format!("move /y {qt} {qd}"), "push (move)").await?;
        Ok(())
    }
    .await;
    let _ = r
        .run(&format!("del /f /q {qb} {qt} 2>nul"), OP_TIMEOUT, OP_CAP)
        .await;
    result
}

pub(super) async fn list_dir(r: &Remote, dir: &str) -> TResult<Vec<RemoteEntry>> {
    let q = quote_path("directory", dir)?;
    let out = r
        .run(&format!("dir /b /a-d {q}"), OP_TIMEOUT, 4 * 1024 * 1024)
        .await?;
    if out.exit_code != Some(0) {
        // "File Not Found" (empty or missing directory).
        return Ok(Vec::new());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty())
        .take(MAX_ENTRIES)
        .map(|name| RemoteEntry {
            name: name.to_string(),
            kind: EntryKind::File,
            size: 0,
            mtime: None,
        })
        .collect())
}

pub(super) async fn read_file(r: &Remote, path: &str, cap: u64) -> TResult<Vec<u8>> {
    let q = quote_path("path", path)?;
    let keep = usize::try_from(cap.saturating_add(1)).unwrap_or(usize::MAX);
    let out = r.run(&format!("type {q}"), OP_TIMEOUT, keep).await?;
    if out.exit_code != Some(0) {
        return Err(TransportError::error(format!(
            "type: {}",
            crate::sanitize::display(String::from_utf8_lossy(&out.stderr).trim(), 200)
        )));
    }
    if out.stdout.len() as u64 > cap || out.truncated_bytes > 0 {
        return Err(TransportError::error(format!(
            "over the {cap}-byte cap; not fetched"
        )));
    }
    Ok(out.stdout)
}

/// Whether `path` is a directory: `dir /b /ad` of its parent with its name
/// as the pattern lists it only then (and exits 1 with "File Not Found").
pub(super) async fn is_dir(r: &Remote, path: &str) -> TResult<bool> {
    let name = path.rsplit('\\').next().unwrap_or(path);
    let q = quote_path("path", &format!("{path}*"))?;
    let out = r
        .run(&format!("dir /b /ad {q}"), OP_TIMEOUT, OP_CAP)
        .await?;
    Ok(out.exit_code == Some(0)
        && String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.trim_end().eq_ignore_ascii_case(name)))
}

pub(super) async fn remove_file(r: &Remote, path: &str) -> TResult<()> {
    let q = quote_path("path", path)?;
    run_ok(r, &format!("del /f /q {q} 2>nul & exit /b 0"), "del").await?;
    Ok(())
}

pub(super) async fn remove_dir_if_empty(r: &Remote, path: &str) -> TResult<bool> {
    let q = quote_path("directory", path)?;
    let out = r.run(&format!("rmdir {q}"), OP_TIMEOUT, OP_CAP).await?;
    Ok(out.exit_code == Some(0))
}

async fn run_ok(r: &Remote, line: &str, what: &str) -> TResult<Vec<u8>> {
    let out = r.run(line, OP_TIMEOUT, OP_CAP).await?;
    if out.timed_out {
        return Err(TransportError::error(format!("{what}: timed out")));
    }
    if out.exit_code != Some(0) {
        let msg = if out.stderr.is_empty() {
            &out.stdout
        } else {
            &out.stderr
        };
        return Err(TransportError::error(format!(
            "{what}: exit {:?}: {}",
            out.exit_code,
            crate::sanitize::display(String::from_utf8_lossy(msg).trim(), 200)
        )));
    }
    Ok(out.stdout)
}
