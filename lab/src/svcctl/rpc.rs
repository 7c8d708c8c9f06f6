//! Connection-oriented DCE/RPC (C706 chapter 12, MS-RPCE) as a server needs it for one
//! interface: PDU headers, bind / alter-context and their acks, requests reassembled from
//! fragments, responses cut into fragments, fault PDUs, and a bounded NDR20 reader and
//! writer for the stubs. Every length and count read from the wire is checked against what
//! is left of the PDU before it is used.

/// `ptype` values.
pub const PTYPE_REQUEST: u8 = 0;
pub const PTYPE_RESPONSE: u8 = 2;
pub const PTYPE_FAULT: u8 = 3;
pub const PTYPE_BIND: u8 = 11;
pub const PTYPE_BIND_ACK: u8 = 12;
pub const PTYPE_BIND_NAK: u8 = 13;
pub const PTYPE_ALTER_CONTEXT: u8 = 14;
pub const PTYPE_ALTER_CONTEXT_RESP: u8 = 15;
pub const PTYPE_AUTH3: u8 = 16;

/// `pfc_flags`.
pub const PFC_FIRST_FRAG: u8 = 0x01;
pub const PFC_LAST_FRAG: u8 = 0x02;
pub const PFC_OBJECT_UUID: u8 = 0x80;

/// Size of the common header.
pub const HEADER_LEN: usize = 16;
/// Largest fragment this server sends or accepts (Windows' default `max_recv_frag`).
pub const MAX_FRAG: usize = 4280;
/// Largest request stub reassembled from fragments.
pub const MAX_STUB: usize = 256 * 1024;

/// Fault statuses (C706 appendix E, MS-RPCE 2.2.2.3).
pub const NCA_S_OP_RNG_ERROR: u32 = 0x1c01_0002;
pub const NCA_S_UNKNOWN_IF: u32 = 0x1c01_0003;
pub const NCA_S_PROTO_ERROR: u32 = 0x1c01_000b;
pub const FAULT_ACCESS_DENIED: u32 = 5;
pub const RPC_X_BAD_STUB_DATA: u32 = 0x06f7;

/// NDR 2.0 transfer syntax 8a885d04-1ceb-11c9-9fe8-08002b104860 v2, as on the wire.
pub const NDR20: [u8; 20] = [
    0x04, 0x5d, 0x88, 0x8a, 0xeb, 0x1c, 0xc9, 0x11, 0x9f, 0xe8, 0x08, 0x00, 0x2b, 0x10, 0x48, 0x60,
    0x02, 0x00, 0x00, 0x00,
];

/// The common header of a PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub ptype: u8,
    pub flags: u8,
    pub frag_len: usize,
    pub auth_len: usize,
    pub call_id: u32,
}

/// Why a PDU was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoError(pub String);

impl std::fmt::Display for ProtoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, ProtoError> {
    Err(ProtoError(msg.into()))
}

/// Reads the common header of the PDU at the start of `b` (at least 16 bytes), checking the
/// version, the data representation (little-endian, ASCII, IEEE) and the lengths.
pub fn header(b: &[u8]) -> Result<Header, ProtoError> {
    if b.len() < HEADER_LEN {
        return err("short PDU header");
    }
    if b[0] != 5 || b[1] != 0 {
        return err(format!("RPC version {}.{} (5.0 expected)", b[0], b[1]));
    }
    if b[4] != 0x10 {
        return err("only little-endian NDR with ASCII and IEEE floats is served");
    }
    let frag_len = usize::from(u16::from_le_bytes([b[8], b[9]]));
    let auth_len = usize::from(u16::from_le_bytes([b[10], b[11]]));
    if frag_len < HEADER_LEN || frag_len > u16::MAX as usize {
        return err(format!("fragment length {frag_len}"));
    }
    if auth_len > 0 && auth_len + 8 + HEADER_LEN > frag_len {
        return err(format!(
            "auth length {auth_len} past the fragment ({frag_len})"
        ));
    }
    Ok(Header {
        ptype: b[2],
        flags: b[3],
        frag_len,
        auth_len,
        call_id: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
    })
}

/// The authentication trailer of a PDU (`sec_trailer` and the token after it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    pub auth_type: u8,
    pub level: u8,
    pub pad_len: usize,
    pub context_id: u32,
    pub token: Vec<u8>,
}

/// The trailer of `pdu` (whole fragment) when `auth_len` is not 0.
pub fn auth_trailer(pdu: &[u8], h: &Header) -> Result<Option<Auth>, ProtoError> {
    if h.auth_len == 0 {
        return Ok(None);
    }
    let start = h.frag_len - h.auth_len - 8;
    let t = &pdu[start..h.frag_len];
    Ok(Some(Auth {
        auth_type: t[0],
        level: t[1],
        pad_len: usize::from(t[2]),
        context_id: u32::from_le_bytes([t[4], t[5], t[6], t[7]]),
        token: t[8..].to_vec(),
    }))
}

/// The body of a PDU: what follows the header, up to the auth trailer (and its padding).
pub fn body<'a>(pdu: &'a [u8], h: &Header) -> Result<&'a [u8], ProtoError> {
    let mut end = h.frag_len;
    if h.auth_len > 0 {
        let pad = usize::from(pdu[h.frag_len - h.auth_len - 8 + 2]);
        end = h
            .frag_len
            .checked_sub(h.auth_len + 8 + pad)
            .filter(|e| *e >= HEADER_LEN)
            .ok_or_else(|| ProtoError("auth padding past the body".into()))?;
    }
    Ok(&pdu[HEADER_LEN..end])
}

fn put_header(out: &mut Vec<u8>, ptype: u8, flags: u8, call_id: u32) {
    out.extend_from_slice(&[5, 0, ptype, flags, 0x10, 0, 0, 0]);
    out.extend_from_slice(&[0, 0, 0, 0]); // frag_len, auth_len: set by finish()
    out.extend_from_slice(&call_id.to_le_bytes());
}

fn finish(mut out: Vec<u8>, auth_len: usize) -> Vec<u8> {
    let len = out.len() as u16;
    out[8..10].copy_from_slice(&len.to_le_bytes());
    out[10..12].copy_from_slice(&(auth_len as u16).to_le_bytes());
    out
}

/// One presentation context of a bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub id: u16,
    /// Interface UUID and version as on the wire (20 bytes).
    pub abstract_syntax: [u8; 20],
    pub transfer_syntaxes: Vec<[u8; 20]>,
}

/// A bind or alter-context body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub max_xmit: u16,
    pub max_recv: u16,
    pub assoc_group: u32,
    pub contexts: Vec<Context>,
}

/// Parses a bind / alter-context body.
pub fn parse_bind(b: &[u8]) -> Result<Bind, ProtoError> {
    let mut r = Reader::new(b);
    let max_xmit = r.u16()?;
    let max_recv = r.u16()?;
    let assoc_group = r.u32()?;
    let n = r.u8()?;
    r.skip(3)?;
    let mut contexts = Vec::new();
    for _ in 0..n {
        let id = r.u16()?;
        let nt = r.u8()?;
        r.skip(1)?;
        let abstract_syntax = r.array20()?;
        let mut transfer_syntaxes = Vec::new();
        for _ in 0..nt {
            transfer_syntaxes.push(r.array20()?);
        }
        contexts.push(Context {
            id,
            abstract_syntax,
            transfer_syntaxes,
        });
    }
    Ok(Bind {
        max_xmit,
        max_recv,
        assoc_group,
        contexts,
    })
}

/// The result of one presentation context in a bind ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextResult {
    /// Accepted with this transfer syntax.
    Accept([u8; 20]),
    /// Provider rejection with a reason (1: abstract syntax not supported, 2: transfer
    /// syntaxes not supported).
    Reject(u16),
}

/// A bind ack (or alter-context response when `ptype` says so).
#[allow(clippy::too_many_arguments)]
pub fn bind_ack(
    ptype: u8,
    call_id: u32,
    max_xmit: u16,
    max_recv: u16,
    assoc_group: u32,
    sec_addr: &str,
    results: &[ContextResult],
    auth: Option<&Auth>,
) -> Vec<u8> {
    let mut out = Vec::new();
    put_header(&mut out, ptype, PFC_FIRST_FRAG | PFC_LAST_FRAG, call_id);
    out.extend_from_slice(&max_xmit.to_le_bytes());
    out.extend_from_slice(&max_recv.to_le_bytes());
    out.extend_from_slice(&assoc_group.to_le_bytes());
    if ptype == PTYPE_BIND_ACK {
        let addr_len = sec_addr.len() + 1;
        out.extend_from_slice(&(addr_len as u16).to_le_bytes());
        out.extend_from_slice(sec_addr.as_bytes());
        out.push(0);
    } else {
        out.extend_from_slice(&[0, 0]);
    }
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(&[results.len() as u8, 0, 0, 0]);
    for r in results {
        match r {
            ContextResult::Accept(ts) => {
                out.extend_from_slice(&[0, 0, 0, 0]);
                out.extend_from_slice(ts);
            }
            ContextResult::Reject(reason) => {
                out.extend_from_slice(&2u16.to_le_bytes());
                out.extend_from_slice(&reason.to_le_bytes());
                out.extend_from_slice(&[0; 20]);
            }
        }
    }
    let auth_len = match auth {
        Some(a) => {
            let pad = (4 - out.len() % 4) % 4;
            out.extend(std::iter::repeat_n(0, pad));
            out.extend_from_slice(&[a.auth_type, a.level, pad as u8, 0]);
            out.extend_from_slice(&a.context_id.to_le_bytes());
            out.extend_from_slice(&a.token);
            a.token.len()
        }
        None => 0,
    };
    finish(out, auth_len)
}

/// A bind nak with `reason` (0: not specified, 4: protocol version not supported, 8:
/// authentication type not recognized).
pub fn bind_nak(call_id: u32, reason: u16) -> Vec<u8> {
    let mut out = Vec::new();
    put_header(
        &mut out,
        PTYPE_BIND_NAK,
        PFC_FIRST_FRAG | PFC_LAST_FRAG,
        call_id,
    );
    out.extend_from_slice(&reason.to_le_bytes());
    out.extend_from_slice(&[1, 5, 0, 0]);
    finish(out, 0)
}

/// A fault PDU.
pub fn fault(call_id: u32, context_id: u16, status: u32) -> Vec<u8> {
    let mut out = Vec::new();
    put_header(
        &mut out,
        PTYPE_FAULT,
        PFC_FIRST_FRAG | PFC_LAST_FRAG,
        call_id,
    );
    out.extend_from_slice(&0u32.to_le_bytes()); // alloc_hint
    out.extend_from_slice(&context_id.to_le_bytes());
    out.extend_from_slice(&[0, 0]); // cancel_count, reserved
    out.extend_from_slice(&status.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    finish(out, 0)
}

/// A response stub cut into fragments of at most `max_frag` bytes.
pub fn responses(call_id: u32, context_id: u16, stub: &[u8], max_frag: usize) -> Vec<Vec<u8>> {
    // 24 bytes of header and response fields; stub pieces stay 8-aligned.
    let piece = (max_frag.clamp(64, MAX_FRAG) - 24) & !7;
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let end = (offset + piece).min(stub.len());
        let mut flags = 0;
        if offset == 0 {
            flags |= PFC_FIRST_FRAG;
        }
        if end == stub.len() {
            flags |= PFC_LAST_FRAG;
        }
        let mut pdu = Vec::with_capacity(24 + end - offset);
        put_header(&mut pdu, PTYPE_RESPONSE, flags, call_id);
        pdu.extend_from_slice(&((stub.len() - offset) as u32).to_le_bytes());
        pdu.extend_from_slice(&context_id.to_le_bytes());
        pdu.extend_from_slice(&[0, 0]);
        pdu.extend_from_slice(&stub[offset..end]);
        out.push(finish(pdu, 0));
        offset = end;
        if offset >= stub.len() {
            break;
        }
    }
    out
}

/// The fields of a request fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub context_id: u16,
    pub opnum: u16,
    pub stub: &'a [u8],
}

/// Parses a request body (after the header, before any auth trailer).
pub fn parse_request<'a>(b: &'a [u8], flags: u8) -> Result<Request<'a>, ProtoError> {
    if b.len() < 8 {
        return err("short request");
    }
    let context_id = u16::from_le_bytes([b[4], b[5]]);
    let opnum = u16::from_le_bytes([b[6], b[7]]);
    let mut start = 8;
    if flags & PFC_OBJECT_UUID != 0 {
        start += 16;
        if b.len() < start {
            return err("short request object UUID");
        }
    }
    Ok(Request {
        context_id,
        opnum,
        stub: &b[start..],
    })
}

/// A bounded NDR20 (little-endian) reader over one stub.
#[derive(Debug)]
pub struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

/// Longest string (in UTF-16 units) a stub may carry.
pub const MAX_WSTR: usize = 32 * 1024;

impl<'a> Reader<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Reader { b, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or_else(|| ProtoError(format!("stub too short ({n} bytes at {})", self.pos)))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub fn skip(&mut self, n: usize) -> Result<(), ProtoError> {
        self.take(n).map(|_| ())
    }

    pub fn align(&mut self, n: usize) -> Result<(), ProtoError> {
        let pad = (n - self.pos % n) % n;
        self.skip(pad)
    }

    pub fn u8(&mut self) -> Result<u8, ProtoError> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, ProtoError> {
        self.align(2)?;
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }

    pub fn u32(&mut self) -> Result<u32, ProtoError> {
        self.align(4)?;
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn array20(&mut self) -> Result<[u8; 20], ProtoError> {
        let s = self.take(20)?;
        let mut a = [0u8; 20];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// A context handle (20 bytes).
    pub fn handle(&mut self) -> Result<[u8; 20], ProtoError> {
        self.align(4)?;
        self.array20()
    }

    /// A `[string] wchar_t*` pointee: conformant varying array of UTF-16 units; the
    /// terminating NUL is dropped.
    pub fn wstr(&mut self) -> Result<String, ProtoError> {
        let max = self.u32()? as usize;
        let offset = self.u32()? as usize;
        let actual = self.u32()? as usize;
        if offset != 0 || actual > max || actual > MAX_WSTR {
            return err(format!(
                "string of {actual} units (max {max}, offset {offset})"
            ));
        }
        let bytes = self.take(actual * 2)?;
        let mut units: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        while units.last() == Some(&0) {
            units.pop();
        }
        String::from_utf16(&units).map_err(|_| ProtoError("string is not UTF-16".into()))
    }

    /// A `[unique, string] wchar_t*`: a referent id, then the string when it is not 0.
    pub fn unique_wstr(&mut self) -> Result<Option<String>, ProtoError> {
        let referent = self.u32()?;
        if referent == 0 {
            return Ok(None);
        }
        self.wstr().map(Some)
    }
}

/// An NDR20 writer.
#[derive(Debug, Default)]
pub struct Writer {
    pub out: Vec<u8>,
    referent: u32,
}

impl Writer {
    pub fn new() -> Self {
        Writer {
            out: Vec::new(),
            referent: 0x0002_0000,
        }
    }

    pub fn align(&mut self, n: usize) {
        while !self.out.len().is_multiple_of(n) {
            self.out.push(0);
        }
    }

    pub fn u32(&mut self, v: u32) {
        self.align(4);
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    pub fn handle(&mut self, h: &[u8; 20]) {
        self.align(4);
        self.out.extend_from_slice(h);
    }

    /// A non-null unique pointer's referent id.
    pub fn referent(&mut self) {
        self.referent += 4;
        let r = self.referent;
        self.u32(r);
    }

    /// A `[string] wchar_t*` pointee, NUL-terminated.
    pub fn wstr(&mut self, s: &str) {
        let units: Vec<u16> = s.encode_utf16().chain(std::iter::once(0)).collect();
        self.u32(units.len() as u32);
        self.u32(0);
        self.u32(units.len() as u32);
        for u in units {
            self.out.extend_from_slice(&u.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_bounds() {
        let mut w = Writer::new();
        w.referent();
        w.wstr("svc");
        w.u32(7);
        let mut r = Reader::new(&w.out);
        assert_eq!(r.unique_wstr().unwrap().as_deref(), Some("svc"));
        assert_eq!(r.u32().unwrap(), 7);
        assert!(r.u32().is_err());
        // A count larger than the stub is refused, not allocated.
        let mut bad = Vec::new();
        for v in [0x7fff_ffffu32, 0, 0x7fff_ffff] {
            bad.extend_from_slice(&v.to_le_bytes());
        }
        assert!(Reader::new(&bad).wstr().is_err());
    }

    #[test]
    fn responses_are_fragmented_within_the_limit() {
        let stub: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let frags = responses(9, 0, &stub, 1024);
        assert!(frags.len() > 1);
        let mut joined = Vec::new();
        for (i, f) in frags.iter().enumerate() {
            let h = header(f).unwrap();
            assert!(h.frag_len <= 1024);
            assert_eq!(h.flags & PFC_FIRST_FRAG != 0, i == 0);
            assert_eq!(h.flags & PFC_LAST_FRAG != 0, i == frags.len() - 1);
            joined.extend_from_slice(&f[24..]);
        }
        assert_eq!(joined, stub);
    }
}
