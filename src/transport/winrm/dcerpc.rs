//! DCE/RPC over an SMB named pipe (MS-RPCE connection-oriented PDUs, NDR 2.0
//! little-endian), only what the service-control calls need: BIND / BIND_ACK /
//! BIND_NAK, REQUEST split into fragments of the negotiated size, RESPONSE
//! reassembled from its fragments, FAULT.
//!
//! No RPC-level authentication: the pipe is opened inside an SMB session that
//! already authenticated the user (and signs or encrypts every frame), which is
//! what Windows and Samba accept for `\PIPE\svcctl` at auth level
//! "none/connect".
//!
//! Everything the server sends is hostile. A PDU's `frag_length` must fit the
//! message it came in, `auth_length` must fit the PDU, a reply's stubs together
//! stay under [`MAX_STUB`] and its fragments under [`MAX_FRAGMENTS`], a pipe
//! message is read up to [`MAX_MESSAGE`] bytes; NDR counts are checked against
//! the bytes actually there before anything is allocated.

use async_trait::async_trait;

use crate::transport::TResult;

/// The fragment size we offer and accept (the usual Windows value).
pub(super) const MAX_FRAG: u16 = 4280;
/// The largest reply stub accepted after reassembly. SCMR replies are a few
/// hundred bytes (QueryServiceConfigW's is bounded by its 8 KiB buffer).
pub(super) const MAX_STUB: usize = 64 * 1024;
/// At most this many fragments make one reply (a server answering a byte at a
/// time is cut off after a bounded number of round trips).
pub(super) const MAX_FRAGMENTS: usize = 64;
/// The most bytes read for one pipe message (a PDU's length is 16 bits).
pub(super) const MAX_MESSAGE: usize = 65_535;

const HEADER: usize = 16;
const PTYPE_REQUEST: u8 = 0;
const PTYPE_RESPONSE: u8 = 2;
const PTYPE_FAULT: u8 = 3;
const PTYPE_BIND: u8 = 11;
const PTYPE_BIND_ACK: u8 = 12;
const PTYPE_BIND_NAK: u8 = 13;
const PFC_FIRST: u8 = 0x01;
const PFC_LAST: u8 = 0x02;

/// An interface or transfer syntax: UUID and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Syntax {
    pub uuid: [u8; 16],
    pub major: u16,
    pub minor: u16,
}

impl Syntax {
    /// From the textual UUID's fields (the wire form is little-endian for the
    /// first three).
    pub const fn new(d1: u32, d2: u16, d3: u16, d4: [u8; 8], major: u16, minor: u16) -> Syntax {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        Syntax {
            uuid: [
                a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4],
                d4[5], d4[6], d4[7],
            ],
            major,
            minor,
        }
    }

    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.uuid);
        out.extend_from_slice(&self.major.to_le_bytes());
        out.extend_from_slice(&self.minor.to_le_bytes());
    }
}

/// NDR 2.0: `8a885d04-1ceb-11c9-9fe8-08002b104860` v2.
pub(super) const NDR20: Syntax = Syntax::new(
    0x8a88_5d04,
    0x1ceb,
    0x11c9,
    [0x9f, 0xe8, 0x08, 0x00, 0x2b, 0x10, 0x48, 0x60],
    2,
    0,
);

/// What went wrong in an RPC exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RpcError {
    /// The server answered with a FAULT PDU carrying this status
    /// (`0x1c010002` `nca_s_op_rng_error`: the operation does not exist;
    /// `5`: access denied).
    Fault(u32),
    /// The server refused the bind (BIND_NAK reason, or the context's result).
    BindRefused(String),
    /// A malformed or unexpected answer.
    Protocol(String),
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RpcError::Fault(0x1c01_0002) => write!(f, "rpc fault nca_s_op_rng_error"),
            RpcError::Fault(5) => write!(f, "rpc fault: access denied"),
            RpcError::Fault(s) => write!(f, "rpc fault 0x{s:08x}"),
            RpcError::BindRefused(why) => write!(f, "rpc bind refused: {why}"),
            RpcError::Protocol(why) => write!(f, "rpc: {why}"),
        }
    }
}

fn bad(why: impl Into<String>) -> RpcError {
    RpcError::Protocol(why.into())
}

/// The transport under RPC: one named pipe in message mode.
#[async_trait]
pub(super) trait PipeIo: Send {
    /// Writes `data` as one message and returns the answer message
    /// (FSCTL_PIPE_TRANSCEIVE), at most `max` bytes of it.
    async fn transceive(&mut self, data: &[u8], max: usize) -> TResult<Vec<u8>>;
    /// Writes `data` as one message.
    async fn write(&mut self, data: &[u8]) -> TResult<()>;
    /// Reads the next message, at most `max` bytes of it.
    async fn read(&mut self, max: usize) -> TResult<Vec<u8>>;
}

/// Errors of a call: the pipe's or the protocol's.
#[derive(Debug)]
pub(super) enum CallError {
    Pipe(crate::transport::TransportError),
    Rpc(RpcError),
}

impl From<RpcError> for CallError {
    fn from(e: RpcError) -> Self {
        CallError::Rpc(e)
    }
}

impl From<crate::transport::TransportError> for CallError {
    fn from(e: crate::transport::TransportError) -> Self {
        CallError::Pipe(e)
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Pipe(e) => write!(f, "{}", e.message),
            CallError::Rpc(e) => write!(f, "{e}"),
        }
    }
}

/// The common header of a PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PduHeader {
    ptype: u8,
    flags: u8,
    frag_len: usize,
    auth_len: usize,
    call_id: u32,
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, RpcError> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| bad(format!("PDU cut short at byte {at}")))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, RpcError> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| bad(format!("PDU cut short at byte {at}")))
}

/// Reads the header of the PDU at the start of `b`, checking that the PDU
/// fits in `b` and that its auth trailer fits in the PDU.
fn header(b: &[u8]) -> Result<PduHeader, RpcError> {
    if b.len() < HEADER {
        return Err(bad(format!(
            "PDU of {} bytes, shorter than a header",
            b.len()
        )));
    }
    if b[0] != 5 || b[1] != 0 {
        return Err(bad(format!("RPC version {}.{}, not 5.0", b[0], b[1])));
    }
    // Only little-endian integers, ASCII characters, IEEE floats (what we
    // offered and every Windows or Samba server sends).
    if b[4] & 0xf0 != 0x10 {
        return Err(bad(format!(
            "data representation 0x{:02x} is not little-endian",
            b[4]
        )));
    }
    let frag_len = usize::from(u16_at(b, 8)?);
    let auth_len = usize::from(u16_at(b, 10)?);
    if frag_len < HEADER || frag_len > b.len() {
        return Err(bad(format!(
            "frag_length {frag_len} does not fit the {} bytes received",
            b.len()
        )));
    }
    // An auth trailer is 8 bytes of sec_trailer plus auth_len bytes.
    if auth_len > 0 && auth_len + 8 > frag_len - HEADER {
        return Err(bad(format!(
            "auth_length {auth_len} does not fit frag_length {frag_len}"
        )));
    }
    Ok(PduHeader {
        ptype: b[2],
        flags: b[3],
        frag_len,
        auth_len,
        call_id: u32_at(b, 12)?,
    })
}

/// The PDUs in one pipe message (a server may put more than one in a message).
fn split_pdus(msg: &[u8]) -> Result<Vec<&[u8]>, RpcError> {
    let mut out = Vec::new();
    let mut rest = msg;
    while !rest.is_empty() {
        let h = header(rest)?;
        out.push(&rest[..h.frag_len]);
        rest = &rest[h.frag_len..];
        if out.len() > MAX_FRAGMENTS {
            return Err(bad("too many PDUs in one message"));
        }
    }
    if out.is_empty() {
        return Err(bad("empty answer"));
    }
    Ok(out)
}

fn put_header(out: &mut Vec<u8>, ptype: u8, flags: u8, call_id: u32) {
    out.extend_from_slice(&[5, 0, ptype, flags, 0x10, 0, 0, 0]);
    out.extend_from_slice(&[0, 0]); // frag_length, set by `finish`
    out.extend_from_slice(&[0, 0]); // auth_length
    out.extend_from_slice(&call_id.to_le_bytes());
}

fn finish(mut pdu: Vec<u8>) -> Vec<u8> {
    // Every PDU we build is at most MAX_FRAG long (checked by the callers).
    let len = u16::try_from(pdu.len()).unwrap_or(u16::MAX);
    pdu[8..10].copy_from_slice(&len.to_le_bytes());
    pdu
}

/// A BIND offering `iface` over NDR 2.0 in presentation context 0.
pub(super) fn bind_pdu(call_id: u32, iface: &Syntax) -> Vec<u8> {
    let mut p = Vec::with_capacity(72);
    put_header(&mut p, PTYPE_BIND, PFC_FIRST | PFC_LAST, call_id);
    p.extend_from_slice(&MAX_FRAG.to_le_bytes());
    p.extend_from_slice(&MAX_FRAG.to_le_bytes());
    p.extend_from_slice(&0u32.to_le_bytes()); // assoc_group_id: a new one
    p.extend_from_slice(&[1, 0, 0, 0]); // one context item
    p.extend_from_slice(&0u16.to_le_bytes()); // context id 0
    p.extend_from_slice(&[1, 0]); // one transfer syntax
    iface.put(&mut p);
    NDR20.put(&mut p);
    finish(p)
}

/// What the server agreed to in its BIND_ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Bound {
    /// The largest fragment the server accepts from us.
    pub max_xmit: u16,
}

/// Reads a BIND_ACK (or BIND_NAK / FAULT) for `call_id`.
pub(super) fn parse_bind_answer(msg: &[u8], call_id: u32) -> Result<Bound, RpcError> {
    let pdus = split_pdus(msg)?;
    let b = pdus[0];
    let h = header(b)?;
    if h.call_id != call_id {
        return Err(bad(format!(
            "bind answer for call {}, not {call_id}",
            h.call_id
        )));
    }
    match h.ptype {
        PTYPE_BIND_ACK => {}
        PTYPE_BIND_NAK => {
            let reason = u16_at(b, 16).unwrap_or(0);
            return Err(RpcError::BindRefused(format!("BIND_NAK reason {reason}")));
        }
        PTYPE_FAULT => return Err(RpcError::Fault(u32_at(b, 24)?)),
        other => {
            return Err(bad(format!(
                "PDU type {other} where a BIND_ACK was expected"
            )))
        }
    }
    let body = &b[..h.frag_len];
    // The server's max_recv_frag is how large our fragments may be.
    let their_recv = u16_at(body, 18)?;
    let sec_len = usize::from(u16_at(body, 24)?);
    // sec_addr (sec_len bytes) then padding to a 4-byte boundary of the PDU.
    let mut at = 26 + sec_len;
    at = at.div_ceil(4) * 4;
    let n = *body
        .get(at)
        .ok_or_else(|| bad("BIND_ACK cut short before its results"))?;
    if n == 0 {
        return Err(bad("BIND_ACK with no result"));
    }
    // Each result: result u16, reason u16, transfer syntax (20 bytes).
    let first = at + 4;
    let result = u16_at(body, first)?;
    let reason = u16_at(body, first + 2)?;
    if result != 0 {
        return Err(RpcError::BindRefused(format!(
            "presentation context result {result}, reason {reason}"
        )));
    }
    let syntax = body
        .get(first + 4..first + 24)
        .ok_or_else(|| bad("BIND_ACK cut short in its transfer syntax"))?;
    let mut ndr = Vec::new();
    NDR20.put(&mut ndr);
    if syntax != ndr.as_slice() {
        return Err(bad("BIND_ACK accepted a transfer syntax we did not offer"));
    }
    // A fragment must hold at least the request header and some stub.
    if their_recv < 64 {
        return Err(bad(format!("max_recv_frag {their_recv} is too small")));
    }
    Ok(Bound {
        max_xmit: their_recv.min(MAX_FRAG),
    })
}

/// The REQUEST PDUs carrying `stub` for `opnum`, each at most `max_frag` long.
pub(super) fn request_pdus(call_id: u32, opnum: u16, stub: &[u8], max_frag: u16) -> Vec<Vec<u8>> {
    const REQ_HEADER: usize = HEADER + 8;
    // Each fragment but the last carries a multiple of 8 stub bytes, as
    // Windows clients cut them (NDR's largest alignment).
    let room = (usize::from(max_frag).max(REQ_HEADER + 8) - REQ_HEADER) / 8 * 8;
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let end = (offset + room).min(stub.len());
        let mut flags = 0;
        if offset == 0 {
            flags |= PFC_FIRST;
        }
        if end == stub.len() {
            flags |= PFC_LAST;
        }
        let mut p = Vec::with_capacity(REQ_HEADER + end - offset);
        put_header(&mut p, PTYPE_REQUEST, flags, call_id);
        let hint = u32::try_from(stub.len() - offset).unwrap_or(u32::MAX);
        p.extend_from_slice(&hint.to_le_bytes()); // alloc_hint: what is left
        p.extend_from_slice(&0u16.to_le_bytes()); // context id
        p.extend_from_slice(&opnum.to_le_bytes());
        p.extend_from_slice(&stub[offset..end]);
        out.push(finish(p));
        offset = end;
        if offset >= stub.len() {
            return out;
        }
    }
}

/// A reply being put together from RESPONSE fragments.
#[derive(Debug)]
pub(super) struct Reply {
    call_id: u32,
    stub: Vec<u8>,
    fragments: usize,
    done: bool,
}

impl Reply {
    pub fn new(call_id: u32) -> Reply {
        Reply {
            call_id,
            stub: Vec::new(),
            fragments: 0,
            done: false,
        }
    }

    /// Adds the PDUs of one pipe message; `Ok(true)` once the last fragment
    /// arrived. A FAULT ends the call with its status.
    pub fn push(&mut self, msg: &[u8]) -> Result<bool, RpcError> {
        for pdu in split_pdus(msg)? {
            if self.done {
                return Err(bad("data after the last fragment"));
            }
            let h = header(pdu)?;
            if h.call_id != self.call_id {
                return Err(bad(format!(
                    "answer for call {}, not {}",
                    h.call_id, self.call_id
                )));
            }
            match h.ptype {
                PTYPE_RESPONSE => {}
                PTYPE_FAULT => return Err(RpcError::Fault(u32_at(pdu, 24)?)),
                other => {
                    return Err(bad(format!(
                        "PDU type {other} where a RESPONSE was expected"
                    )))
                }
            }
            if (self.fragments == 0) != (h.flags & PFC_FIRST != 0) {
                return Err(bad("fragments out of order (first-fragment flag)"));
            }
            self.fragments += 1;
            if self.fragments > MAX_FRAGMENTS {
                return Err(bad(format!("more than {MAX_FRAGMENTS} fragments")));
            }
            let end = if h.auth_len > 0 {
                h.frag_len - h.auth_len - 8
            } else {
                h.frag_len
            };
            let stub = pdu
                .get(HEADER + 8..end)
                .ok_or_else(|| bad("RESPONSE shorter than its header"))?;
            if self.stub.len() + stub.len() > MAX_STUB {
                return Err(bad(format!("reply larger than {MAX_STUB} bytes")));
            }
            self.stub.extend_from_slice(stub);
            if h.flags & PFC_LAST != 0 {
                self.done = true;
            }
        }
        Ok(self.done)
    }

    pub fn into_stub(self) -> Vec<u8> {
        self.stub
    }
}

/// One bound interface on one pipe.
pub(super) struct RpcClient<P: PipeIo> {
    pipe: P,
    next_call: u32,
    max_xmit: u16,
}

impl<P: PipeIo> RpcClient<P> {
    /// Binds `iface` on `pipe`.
    pub async fn bind(mut pipe: P, iface: &Syntax) -> Result<RpcClient<P>, CallError> {
        let answer = pipe.transceive(&bind_pdu(1, iface), MAX_MESSAGE).await?;
        let bound = parse_bind_answer(&answer, 1)?;
        Ok(RpcClient {
            pipe,
            next_call: 2,
            max_xmit: bound.max_xmit,
        })
    }

    /// Calls `opnum` with `stub`; returns the reply's stub.
    pub async fn call(&mut self, opnum: u16, stub: &[u8]) -> Result<Vec<u8>, CallError> {
        let call_id = self.next_call;
        self.next_call = self.next_call.wrapping_add(1).max(1);
        let mut pdus = request_pdus(call_id, opnum, stub, self.max_xmit);
        // All but the last fragment are plain writes; the last one is sent
        // with the transceive that brings the first answer back.
        let last = pdus.pop().ok_or_else(|| bad("no request fragment"))?;
        for p in &pdus {
            self.pipe.write(p).await?;
        }
        let mut reply = Reply::new(call_id);
        let mut msg = self.pipe.transceive(&last, MAX_MESSAGE).await?;
        while !reply.push(&msg)? {
            msg = self.pipe.read(MAX_MESSAGE).await?;
        }
        Ok(reply.into_stub())
    }

    pub fn into_pipe(self) -> P {
        self.pipe
    }
}

/// Writes NDR 2.0 (little-endian) for the types the SCMR calls use.
#[derive(Debug, Default)]
pub(super) struct NdrWriter {
    pub buf: Vec<u8>,
    next_ref: u32,
}

impl NdrWriter {
    pub fn new() -> NdrWriter {
        NdrWriter {
            buf: Vec::new(),
            next_ref: 0x0002_0000,
        }
    }

    fn align(&mut self, n: usize) {
        while !self.buf.len().is_multiple_of(n) {
            self.buf.push(0);
        }
    }

    pub fn u32(&mut self, v: u32) {
        self.align(4);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A context handle: 20 opaque bytes.
    pub fn handle(&mut self, h: &[u8; 20]) {
        self.align(4);
        self.buf.extend_from_slice(h);
    }

    /// A referent id for a non-null unique pointer.
    fn referent(&mut self) {
        let r = self.next_ref;
        self.next_ref += 4;
        self.u32(r);
    }

    /// A null unique pointer.
    pub fn null(&mut self) {
        self.u32(0);
    }

    /// `[string] wchar_t*` behind a reference pointer: a conformant varying
    /// array of UTF-16 code units with the terminating NUL.
    pub fn wstr(&mut self, s: &str) {
        let units: Vec<u16> = s.encode_utf16().chain(std::iter::once(0)).collect();
        let n = u32::try_from(units.len()).unwrap_or(u32::MAX);
        self.u32(n); // max count
        self.u32(0); // offset
        self.u32(n); // actual count
        for u in units {
            self.buf.extend_from_slice(&u.to_le_bytes());
        }
    }

    /// `[string, unique] wchar_t*`.
    pub fn unique_wstr(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.referent();
                self.wstr(s);
            }
            None => self.null(),
        }
    }
}

/// Reads NDR 2.0 from a reply stub; every count is checked against the bytes
/// left before it is used.
#[derive(Debug)]
pub(super) struct NdrReader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> NdrReader<'a> {
    pub fn new(b: &'a [u8]) -> NdrReader<'a> {
        NdrReader { b, at: 0 }
    }

    fn align(&mut self, n: usize) {
        self.at = self.at.div_ceil(n) * n;
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], RpcError> {
        let s = self
            .at
            .checked_add(n)
            .and_then(|end| self.b.get(self.at..end))
            .ok_or_else(|| bad(format!("reply cut short at byte {} (wanted {n})", self.at)))?;
        self.at += n;
        Ok(s)
    }

    pub fn u32(&mut self) -> Result<u32, RpcError> {
        self.align(4);
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    pub fn handle(&mut self) -> Result<[u8; 20], RpcError> {
        self.align(4);
        let s = self.take(20)?;
        let mut h = [0u8; 20];
        h.copy_from_slice(s);
        Ok(h)
    }

    /// The deferred body of a `[string] wchar_t*`: at most `cap` code units,
    /// the trailing NUL dropped, unpaired surrogates replaced.
    pub fn wstr(&mut self, cap: usize) -> Result<String, RpcError> {
        let max = self.u32()? as usize;
        let offset = self.u32()? as usize;
        let actual = self.u32()? as usize;
        if offset != 0 || actual > max {
            return Err(bad(format!(
                "string with offset {offset}, {actual} of {max} units"
            )));
        }
        if actual > cap {
            return Err(bad(format!(
                "string of {actual} units, over the cap of {cap}"
            )));
        }
        let raw = self.take(actual * 2)?;
        let mut units: Vec<u16> = raw
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        if units.last() == Some(&0) {
            units.pop();
        }
        Ok(String::from_utf16_lossy(&units))
    }

    /// Whether everything was read (trailing alignment allowed).
    pub fn rest(&self) -> usize {
        self.b.len().saturating_sub(self.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IFACE: Syntax = Syntax::new(
        0x367a_bb81,
        0x9844,
        0x35f1,
        [0xad, 0x32, 0x98, 0xf0, 0x38, 0x00, 0x10, 0x03],
        2,
        0,
    );

    fn response(call_id: u32, flags: u8, stub: &[u8]) -> Vec<u8> {
        let mut p = Vec::new();
        put_header(&mut p, PTYPE_RESPONSE, flags, call_id);
        p.extend_from_slice(&(stub.len() as u32).to_le_bytes());
        p.extend_from_slice(&[0, 0, 0, 0]);
        p.extend_from_slice(stub);
        finish(p)
    }

    fn bind_ack(call_id: u32, recv: u16, result: u16) -> Vec<u8> {
        let mut p = Vec::new();
        put_header(&mut p, PTYPE_BIND_ACK, PFC_FIRST | PFC_LAST, call_id);
        p.extend_from_slice(&4280u16.to_le_bytes());
        p.extend_from_slice(&recv.to_le_bytes());
        p.extend_from_slice(&0x1234u32.to_le_bytes());
        // sec_addr "\PIPE\svcctl\0" (13 bytes), then pad to 4.
        let sec = b"\\PIPE\\svcctl\0";
        p.extend_from_slice(&(sec.len() as u16).to_le_bytes());
        p.extend_from_slice(sec);
        while !p.len().is_multiple_of(4) {
            p.push(0);
        }
        p.extend_from_slice(&[1, 0, 0, 0]);
        p.extend_from_slice(&result.to_le_bytes());
        p.extend_from_slice(&0u16.to_le_bytes());
        NDR20.put(&mut p);
        finish(p)
    }

    #[test]
    fn the_bind_is_the_wire_form_of_svcctl_over_ndr20() {
        let p = bind_pdu(1, &IFACE);
        assert_eq!(p.len(), 72);
        assert_eq!(&p[..4], &[5, 0, 11, 3]);
        assert_eq!(u16::from_le_bytes([p[8], p[9]]), 72);
        // svcctl's UUID as Windows puts it on the wire.
        assert_eq!(
            &p[32..48],
            &[
                0x81, 0xbb, 0x7a, 0x36, 0x44, 0x98, 0xf1, 0x35, 0xad, 0x32, 0x98, 0xf0, 0x38, 0x00,
                0x10, 0x03
            ]
        );
        assert_eq!(&p[48..52], &[2, 0, 0, 0]);
        assert_eq!(&p[52..56], &[0x04, 0x5d, 0x88, 0x8a]);
    }

    #[test]
    fn a_bind_ack_gives_the_fragment_size_and_refusals_are_errors() {
        assert_eq!(
            parse_bind_answer(&bind_ack(1, 4280, 0), 1),
            Ok(Bound { max_xmit: 4280 })
        );
        // A server accepting smaller fragments gets smaller fragments; one
        // offering larger ones still gets ours.
        assert_eq!(
            parse_bind_answer(&bind_ack(1, 1024, 0), 1)
                .unwrap()
                .max_xmit,
            1024
        );
        assert_eq!(
            parse_bind_answer(&bind_ack(1, 65000, 0), 1)
                .unwrap()
                .max_xmit,
            4280
        );
        assert!(matches!(
            parse_bind_answer(&bind_ack(1, 4280, 2), 1),
            Err(RpcError::BindRefused(_))
        ));
        assert!(matches!(
            parse_bind_answer(&bind_ack(7, 4280, 0), 1),
            Err(RpcError::Protocol(_))
        ));
        assert!(matches!(
            parse_bind_answer(&bind_ack(1, 16, 0), 1),
            Err(RpcError::Protocol(_))
        ));
        let mut nak = Vec::new();
        put_header(&mut nak, PTYPE_BIND_NAK, 3, 1);
        nak.extend_from_slice(&[4, 0]);
        assert!(matches!(
            parse_bind_answer(&finish(nak), 1),
            Err(RpcError::BindRefused(why)) if why.contains("reason 4")
        ));
    }

    #[test]
    fn a_long_request_is_cut_into_fragments_that_carry_all_of_it() {
        let stub: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let pdus = request_pdus(9, 12, &stub, 1024);
        assert!(pdus.len() > 9, "{} fragments", pdus.len());
        let mut joined = Vec::new();
        for (i, p) in pdus.iter().enumerate() {
            let h = header(p).unwrap();
            assert!(p.len() <= 1024);
            assert_eq!(h.frag_len, p.len());
            assert_eq!(h.call_id, 9);
            assert_eq!(h.flags & PFC_FIRST != 0, i == 0);
            assert_eq!(h.flags & PFC_LAST != 0, i == pdus.len() - 1);
            assert_eq!(u16::from_le_bytes([p[22], p[23]]), 12, "opnum");
            let hint = u32::from_le_bytes([p[16], p[17], p[18], p[19]]) as usize;
            assert_eq!(hint, stub.len() - joined.len(), "alloc_hint = what is left");
            joined.extend_from_slice(&p[24..]);
        }
        assert_eq!(joined, stub);
        // A short one is a single fragment with both flags.
        let one = request_pdus(3, 15, &[1, 2, 3, 4], 4280);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0][3], PFC_FIRST | PFC_LAST);
        // An empty stub still makes one PDU.
        assert_eq!(request_pdus(3, 0, &[], 4280).len(), 1);
    }

    #[test]
    fn a_reply_is_put_together_from_its_fragments() {
        let mut r = Reply::new(4);
        assert_eq!(r.push(&response(4, PFC_FIRST, b"abcd")), Ok(false));
        assert_eq!(r.push(&response(4, 0, b"efgh")), Ok(false));
        assert_eq!(r.push(&response(4, PFC_LAST, b"ij")), Ok(true));
        assert_eq!(r.into_stub(), b"abcdefghij");
        // Two PDUs in one message.
        let mut both = response(5, PFC_FIRST, b"12");
        both.extend(response(5, PFC_LAST, b"34"));
        let mut r = Reply::new(5);
        assert_eq!(r.push(&both), Ok(true));
        assert_eq!(r.into_stub(), b"1234");
    }

    #[test]
    fn faults_and_foreign_or_disordered_fragments_end_the_call() {
        let mut fault = Vec::new();
        put_header(&mut fault, PTYPE_FAULT, 3, 2);
        fault.extend_from_slice(&[0; 8]);
        fault.extend_from_slice(&0x1c01_0002u32.to_le_bytes());
        fault.extend_from_slice(&[0; 4]);
        assert_eq!(
            Reply::new(2).push(&finish(fault)),
            Err(RpcError::Fault(0x1c01_0002))
        );
        assert!(
            Reply::new(2).push(&response(3, 3, b"x")).is_err(),
            "call id"
        );
        assert!(
            Reply::new(2).push(&response(2, PFC_LAST, b"x")).is_err(),
            "no first"
        );
        let mut r = Reply::new(2);
        r.push(&response(2, PFC_FIRST, b"x")).unwrap();
        assert!(
            r.push(&response(2, PFC_FIRST, b"y")).is_err(),
            "second first"
        );
        let mut r = Reply::new(2);
        r.push(&response(2, 3, b"x")).unwrap();
        assert!(r.push(&response(2, 3, b"y")).is_err(), "after the last");
    }

    #[test]
    fn hostile_lengths_are_refused_not_followed() {
        let good = response(2, 3, b"abcd");
        // frag_length past the message.
        let mut long = good.clone();
        long[8..10].copy_from_slice(&1000u16.to_le_bytes());
        assert!(Reply::new(2).push(&long).is_err());
        // frag_length shorter than a header.
        let mut short = good.clone();
        short[8..10].copy_from_slice(&8u16.to_le_bytes());
        assert!(Reply::new(2).push(&short).is_err());
        // auth_length larger than the PDU.
        let mut auth = good.clone();
        auth[10..12].copy_from_slice(&60000u16.to_le_bytes());
        assert!(Reply::new(2).push(&auth).is_err());
        // Cut in the middle of a header, wrong version, big-endian.
        assert!(Reply::new(2).push(&good[..10]).is_err());
        let mut v4 = good.clone();
        v4[0] = 4;
        assert!(Reply::new(2).push(&v4).is_err());
        let mut be = good.clone();
        be[4] = 0x00;
        assert!(Reply::new(2).push(&be).is_err());
        assert!(Reply::new(2).push(&[]).is_err());
        // A reply growing past the stub cap, and one in too many slivers.
        let big = vec![0u8; 4000];
        let mut r = Reply::new(2);
        let mut res = r.push(&response(2, PFC_FIRST, &big));
        for _ in 0..20 {
            if res.is_err() {
                break;
            }
            res = r.push(&response(2, 0, &big));
        }
        assert!(matches!(res, Err(RpcError::Protocol(m)) if m.contains("larger than")));
        let mut r = Reply::new(2);
        let mut res = r.push(&response(2, PFC_FIRST, b"x"));
        for _ in 0..MAX_FRAGMENTS + 1 {
            if res.is_err() {
                break;
            }
            res = r.push(&response(2, 0, b"x"));
        }
        assert!(matches!(res, Err(RpcError::Protocol(m)) if m.contains("fragments")));
    }

    #[test]
    fn ndr_strings_and_hostile_counts() {
        let mut w = NdrWriter::new();
        w.unique_wstr(Some("ab"));
        w.unique_wstr(None);
        w.u32(7);
        assert_eq!(
            w.buf,
            [
                0, 0, 2, 0, 3, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, b'a', 0, b'b', 0, 0, 0, 0, 0, 0, 0,
                0, 0, 7, 0, 0, 0
            ]
        );
        let mut r = NdrReader::new(&w.buf[4..]);
        assert_eq!(r.wstr(10).unwrap(), "ab");
        assert!(NdrReader::new(&w.buf[4..]).wstr(1).is_err(), "over the cap");
        // A count claiming more than the bytes there is an error, not an allocation.
        let mut lie = Vec::new();
        for v in [0x7fff_ffffu32, 0, 0x7fff_ffff] {
            lie.extend_from_slice(&v.to_le_bytes());
        }
        assert!(NdrReader::new(&lie).wstr(usize::MAX / 4).is_err());
        // actual > max, and a non-zero offset.
        let mut odd = Vec::new();
        for v in [1u32, 0, 2] {
            odd.extend_from_slice(&v.to_le_bytes());
        }
        assert!(NdrReader::new(&odd).wstr(10).is_err());
        odd[4] = 1;
        assert!(NdrReader::new(&odd).wstr(10).is_err());
        assert!(NdrReader::new(&[0; 19]).handle().is_err());
    }
}
