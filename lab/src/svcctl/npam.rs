//! Samba's "named pipe auth" handshake (`librpc/idl/named_pipe_auth.idl`): what smbd sends
//! on a unix socket of `external_rpc_pipe:socket_dir` before the first byte of a pipe, and
//! the reply it accepts; then the message-mode framing of the pipe's reads and writes.
//!
//! The request is a 4-byte big-endian length, `NPAM`, the level (little-endian u32, 7 on
//! Samba 4.17, 5 on 4.18.0, 8 from 4.20) repeated as the union's discriminant, then the
//! `named_pipe_auth_req_info<level>` structure in NDR: `uint8 transport`, unique pointers
//! to the remote client name and address, the remote port, unique pointers to the local
//! server name and address, the local port, a unique pointer to the session info; the
//! strings follow in that order. Only the addresses are read here: the session info is
//! the user SMB already authenticated, and its layout is what changes between levels.
//!
//! The reply (same level) declares a message-mode pipe: file type 2, device state 0x05ff,
//! allocation size 4096, status 0. After it, every message is a 2-byte little-endian length
//! and that many bytes, both ways.

use std::net::IpAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest handshake request read (smbd's are a few hundred bytes to a few KiB with a
/// large token).
pub const MAX_REQUEST: usize = 256 * 1024;

/// What the handshake says about the client's connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipeAuth {
    pub level: u32,
    pub remote_addr: Option<IpAddr>,
    pub local_addr: Option<IpAddr>,
}

fn u32_le(b: &[u8], pos: &mut usize) -> Option<u32> {
    *pos = pos.checked_add((4 - *pos % 4) % 4)?;
    let s = b.get(*pos..pos.checked_add(4)?)?;
    *pos += 4;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u16_le(b: &[u8], pos: &mut usize) -> Option<u16> {
    *pos += *pos % 2;
    let s = b.get(*pos..pos.checked_add(2)?)?;
    *pos += 2;
    Some(u16::from_le_bytes([s[0], s[1]]))
}

/// An NDR `[string] uint8*` pointee (conformant varying, NUL included).
fn string(b: &[u8], pos: &mut usize) -> Option<String> {
    let max = u32_le(b, pos)? as usize;
    let offset = u32_le(b, pos)?;
    let actual = u32_le(b, pos)? as usize;
    if offset != 0 || actual > max || actual > 1024 {
        return None;
    }
    let s = b.get(*pos..pos.checked_add(actual)?)?;
    *pos += actual;
    Some(
        String::from_utf8_lossy(s)
            .trim_end_matches('\0')
            .to_string(),
    )
}

fn address(s: Option<String>) -> Option<IpAddr> {
    let s = s?;
    let ip: IpAddr = s.parse().ok()?;
    Some(match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    })
}

/// Parses the request after its 4-byte length.
pub fn parse(b: &[u8]) -> Result<PipeAuth, String> {
    if b.get(..4) != Some(b"NPAM") {
        return Err("not a named pipe auth request (no NPAM magic)".into());
    }
    let mut pos = 4;
    let level = u32_le(b, &mut pos).ok_or("short request")?;
    let discriminant = u32_le(b, &mut pos).ok_or("short request")?;
    if discriminant != level {
        return Err(format!("level {level} with union arm {discriminant}"));
    }
    if !(5..=8).contains(&level) {
        return Err(format!(
            "named pipe auth level {level} is not one Samba 4.17-4.23 sends"
        ));
    }
    let short = || "short request".to_string();
    // transport (u8), then pointers and ports.
    pos += 1;
    let p_remote_name = u32_le(b, &mut pos).ok_or_else(short)?;
    let p_remote_addr = u32_le(b, &mut pos).ok_or_else(short)?;
    let _remote_port = u16_le(b, &mut pos).ok_or_else(short)?;
    let p_local_name = u32_le(b, &mut pos).ok_or_else(short)?;
    let p_local_addr = u32_le(b, &mut pos).ok_or_else(short)?;
    let _local_port = u16_le(b, &mut pos).ok_or_else(short)?;
    let _p_session = u32_le(b, &mut pos).ok_or_else(short)?;
    let mut next = |present: u32| -> Result<Option<String>, String> {
        if present == 0 {
            return Ok(None);
        }
        string(b, &mut pos).map(Some).ok_or_else(short)
    };
    let _remote_name = next(p_remote_name)?;
    let remote_addr = next(p_remote_addr)?;
    let _local_name = next(p_local_name)?;
    let local_addr = next(p_local_addr)?;
    Ok(PipeAuth {
        level,
        remote_addr: address(remote_addr),
        local_addr: address(local_addr),
    })
}

/// NT_STATUS_OBJECT_NAME_NOT_FOUND: what a pipe nobody serves answers to an open.
pub const STATUS_OBJECT_NAME_NOT_FOUND: u32 = 0xC000_0034;

/// The reply accepting the pipe, at `level`: a message-mode pipe.
pub fn reply(level: u32) -> Vec<u8> {
    reply_status(level, 0)
}

/// The reply at `level` with `status` (not 0: smbd fails the open with it).
pub fn reply_status(level: u32, status: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(36);
    out.extend_from_slice(&32u32.to_be_bytes());
    out.extend_from_slice(b"NPAM");
    out.extend_from_slice(&level.to_le_bytes());
    out.extend_from_slice(&level.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes()); // FILE_TYPE_MESSAGE_MODE_PIPE
    out.extend_from_slice(&0x05ffu16.to_le_bytes()); // device state
    out.extend_from_slice(&[0; 4]); // alignment of the hyper
    out.extend_from_slice(&4096u64.to_le_bytes()); // allocation size
    out.extend_from_slice(&status.to_le_bytes());
    out
}

/// Reads the handshake request (length-prefixed, bounded).
pub async fn read_request<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_REQUEST {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("named pipe auth request of {len} bytes"),
        ));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Reads one pipe message (2-byte little-endian length, then the bytes); None at the end.
pub async fn read_message<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut buf = vec![0u8; usize::from(u16::from_le_bytes(len))];
    r.read_exact(&mut buf).await?;
    Ok(Some(buf))
}

/// Writes one pipe message (at most 65535 bytes).
pub async fn write_message<W: AsyncWrite + Unpin>(w: &mut W, data: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(data.len()).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "pipe message over 64 KiB")
    })?;
    let mut frame = Vec::with_capacity(2 + data.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(data);
    w.write_all(&frame).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_level_7_reply_is_the_one_smbd_accepts() {
        let want = hex::decode(
            "000000204e50414d07000000070000000200ff05000000000010000000000000\
             00000000",
        )
        .unwrap();
        assert_eq!(reply(7), want);
        assert_eq!(&reply(8)[8..16], &[8, 0, 0, 0, 8, 0, 0, 0]);
    }

    #[test]
    fn addresses_come_out_of_a_request() {
        // NPAM, level 7 twice, transport 0, four string pointers and two ports, no session.
        let mut b = b"NPAM".to_vec();
        b.extend_from_slice(&7u32.to_le_bytes());
        b.extend_from_slice(&7u32.to_le_bytes());
        b.extend_from_slice(&[0, 0, 0, 0]);
        for (p, port) in [(1u32, None), (2, Some(50000u16)), (3, None), (4, Some(445))] {
            b.extend_from_slice(&p.to_le_bytes());
            if let Some(port) = port {
                b.extend_from_slice(&port.to_le_bytes());
                b.extend_from_slice(&[0, 0]);
            }
        }
        b.extend_from_slice(&0u32.to_le_bytes());
        for s in ["client", "127.0.0.1", "server", "127.0.10.3"] {
            let z = format!("{s}\0");
            for v in [z.len() as u32, 0, z.len() as u32] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.extend_from_slice(z.as_bytes());
            while !b.len().is_multiple_of(4) {
                b.push(0);
            }
        }
        let a = parse(&b).unwrap();
        assert_eq!(a.level, 7);
        assert_eq!(a.local_addr, Some("127.0.10.3".parse().unwrap()));
        assert_eq!(a.remote_addr, Some("127.0.0.1".parse().unwrap()));
        assert!(parse(&b[..30]).is_err());
        assert!(parse(b"NPAX").is_err());
    }
}
