//! NTLM (HTTP Negotiate) acceptor of the WinRM simulator and the MS-WSMV
//! message-sealing framing.
//!
//! The NTLMv2 handshake and the sealing (RC4 + HMAC-MD5 signatures with
//! extended session security and key exchange) come from the `sspi` crate
//! (Devolutions), used as an acceptor: `acquire_credentials_handle` with the
//! host's account as inbound credentials, `accept_security_context` for the
//! NEGOTIATE and AUTHENTICATE messages, `complete_auth_token`, then
//! `encrypt_message` / `decrypt_message`. sspi checks the NTLMv2 response
//! against the password whatever user name the client sends, so the user name
//! is compared here (case-insensitively, domain ignored). Every sspi call is
//! wrapped in `catch_unwind`: a panic on a hostile token ends that context
//! as an authentication failure, never the server.
//!
//! Framing (MS-WSMV 2.2.9.1.1, as Windows writes it): a
//! `multipart/encrypted;protocol="application/HTTP-SPNEGO-session-encrypted";
//! boundary="Encrypted Boundary"` body made of
//! `--Encrypted Boundary\r\n\tContent-Type: application/HTTP-SPNEGO-session-encrypted\r\n
//! \tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=N\r\n
//! --Encrypted Boundary\r\n\tContent-Type: application/octet-stream\r\n`, then a
//! 4-byte little-endian signature length (16), the 16-byte NTLM signature,
//! the N sealed bytes, and `--Encrypted Boundary--\r\n` (no line break before
//! it). Requests are read using the Length (a line break before the closing
//! boundary is tolerated).

use std::panic::{catch_unwind, AssertUnwindSafe};

use sspi::{
    AuthIdentity, BufferType, CredentialUse, DataRepresentation, EncryptionFlags, Ntlm,
    SecurityBuffer, SecurityBufferRef, SecurityStatus, ServerRequestFlags, Sspi, SspiImpl,
    Username,
};

/// Content-Type of a sealed message.
pub const SEALED_CONTENT_TYPE: &str = "multipart/encrypted;protocol=\"application/HTTP-SPNEGO-session-encrypted\";boundary=\"Encrypted Boundary\"";

const BOUNDARY: &[u8] = b"--Encrypted Boundary";
const PROTOCOL: &str = "application/HTTP-SPNEGO-session-encrypted";
const SIGNATURE_LEN: usize = 16;

/// NTLM message type of a raw token (1, 2 or 3), if it is one.
pub fn message_type(token: &[u8]) -> Option<u32> {
    if token.len() < 12 || &token[..8] != b"NTLMSSP\0" {
        return None;
    }
    Some(u32::from_le_bytes([
        token[8], token[9], token[10], token[11],
    ]))
}

/// Result of feeding a client token to the acceptor.
#[derive(Debug)]
pub enum Step {
    /// Send this CHALLENGE token in a 401 and wait for AUTHENTICATE.
    Challenge(Vec<u8>),
    /// Authenticated; sealing keys are ready.
    Done,
}

/// Why the handshake or a sealed message was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NtlmError(pub String);

impl std::fmt::Display for NtlmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, sspi::Error>) -> Result<T, NtlmError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(NtlmError(format!("{what}: {e}"))),
        Err(_) => Err(NtlmError(format!("{what}: sspi panicked on the input"))),
    }
}

/// One server-side NTLM security context (one per TCP connection).
pub struct Acceptor {
    ntlm: Ntlm,
    creds: Option<sspi::AuthIdentityBuffers>,
    user: String,
    password: String,
    server_challenge: Option<[u8; 8]>,
    done: bool,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("user", &self.user)
            .field("done", &self.done)
            .finish()
    }
}

impl Acceptor {
    /// A context that accepts `user` with `password`.
    pub fn new(user: &str, password: &str) -> Result<Self, NtlmError> {
        let mut ntlm = Ntlm::new();
        let username =
            Username::new(user, None).map_err(|e| NtlmError(format!("bad user name: {e}")))?;
        let identity = AuthIdentity {
            username,
            password: password.to_string().into(),
        };
        let creds = guarded("acquire_credentials_handle", || {
            let r = ntlm
                .acquire_credentials_handle()
                .with_credential_use(CredentialUse::Inbound)
                .with_auth_data(&identity)
                .execute(&mut ntlm)?;
            Ok(r.credentials_handle)
        })?;
        Ok(Acceptor {
            ntlm,
            creds,
            user: user.to_string(),
            password: password.to_string(),
            server_challenge: None,
            done: false,
        })
    }

    /// True once AUTHENTICATE was accepted.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Feed a NEGOTIATE or AUTHENTICATE token.
    pub fn step(&mut self, token: &[u8]) -> Result<Step, NtlmError> {
        if self.done {
            return Err(NtlmError("context already established".into()));
        }
        if message_type(token) == Some(3) {
            // sspi only checks the MIC, which a client may omit: verify the
            // NTLMv2 response against the password here.
            let challenge = self
                .server_challenge
                .ok_or_else(|| NtlmError("AUTHENTICATE before NEGOTIATE".into()))?;
            verify_ntlmv2(token, &challenge, &self.user, &self.password)?;
        }
        let ntlm = &mut self.ntlm;
        let creds = &mut self.creds;
        let (status, out) = guarded("accept_security_context", || {
            let mut input = vec![SecurityBuffer::new(token.to_vec(), BufferType::Token)];
            let mut output = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
            let builder = ntlm
                .accept_security_context()
                .with_credentials_handle(creds)
                .with_context_requirements(ServerRequestFlags::ALLOCATE_MEMORY)
                .with_target_data_representation(DataRepresentation::Native)
                .with_input(&mut input)
                .with_output(&mut output);
            let result = ntlm
                .accept_security_context_impl(builder)?
                .resolve_to_result()?;
            let out = output
                .into_iter()
                .next()
                .map(|b| b.buffer)
                .unwrap_or_default();
            Ok((result.status, out))
        })?;
        match status {
            SecurityStatus::ContinueNeeded => {
                let challenge: [u8; 8] = out
                    .get(24..32)
                    .and_then(|c| c.try_into().ok())
                    .ok_or_else(|| NtlmError("short CHALLENGE message".into()))?;
                self.server_challenge = Some(challenge);
                Ok(Step::Challenge(out))
            }
            SecurityStatus::CompleteNeeded
            | SecurityStatus::CompleteAndContinue
            | SecurityStatus::Ok => {
                guarded("complete_auth_token", || {
                    let mut none: Vec<SecurityBuffer> = Vec::new();
                    ntlm.complete_auth_token(&mut none)
                })?;
                let names = guarded("query_context_names", || ntlm.query_context_names())?;
                let wire = names.username.account_name().to_string();
                if !same_user(&wire, &self.user) {
                    return Err(NtlmError(format!("user {wire:?} is not {:?}", self.user)));
                }
                self.done = true;
                Ok(Step::Done)
            }
            other => Err(NtlmError(format!("unexpected status {other:?}"))),
        }
    }

    /// Seal a reply: returns (signature, sealed bytes).
    pub fn seal(&mut self, plain: &[u8]) -> Result<(Vec<u8>, Vec<u8>), NtlmError> {
        if !self.done {
            return Err(NtlmError("not authenticated".into()));
        }
        let ntlm = &mut self.ntlm;
        guarded("encrypt_message", || {
            let mut token = vec![0u8; SIGNATURE_LEN];
            let mut data = plain.to_vec();
            let mut bufs = [
                SecurityBufferRef::token_buf(&mut token),
                SecurityBufferRef::data_buf(&mut data),
            ];
            ntlm.encrypt_message(EncryptionFlags::empty(), &mut bufs)?;
            Ok((bufs[0].data().to_vec(), bufs[1].data().to_vec()))
        })
    }

    /// Unseal a request (signature + sealed bytes), verifying the signature.
    pub fn unseal(&mut self, signature: &[u8], sealed: &[u8]) -> Result<Vec<u8>, NtlmError> {
        if !self.done {
            return Err(NtlmError("not authenticated".into()));
        }
        if signature.len() != SIGNATURE_LEN {
            return Err(NtlmError("bad signature length".into()));
        }
        let ntlm = &mut self.ntlm;
        guarded("decrypt_message", || {
            let mut sig = signature.to_vec();
            let mut data = sealed.to_vec();
            let mut bufs = [
                SecurityBufferRef::token_buf(&mut sig),
                SecurityBufferRef::data_buf(&mut data),
            ];
            ntlm.decrypt_message(&mut bufs)?;
            Ok(bufs[1].data().to_vec())
        })
    }
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn hmac_md5(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    use hmac::{KeyInit, Mac};
    let mut mac = match <hmac::Hmac<md5::Md5> as KeyInit>::new_from_slice(key) {
        Ok(m) => m,
        // HMAC accepts keys of any length; keep a total function anyway.
        Err(_) => return [0u8; 16],
    };
    for p in parts {
        mac.update(p);
    }
    let mut out = [0u8; 16];
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

/// NTOWFv2 (MS-NLMP 3.3.2): HMAC_MD5(MD4(UNICODE(password)), UNICODE(UPPER(user) + domain)).
pub fn ntowf_v2(password: &str, user: &str, domain: &str) -> [u8; 16] {
    use md4::Digest;
    let nt_hash = md4::Md4::digest(utf16le(password));
    let who = utf16le(&(user.to_uppercase() + domain));
    hmac_md5(&nt_hash, &[&who])
}

/// One security buffer (length, offset) of an NTLM message.
fn field(msg: &[u8], at: usize) -> Result<&[u8], NtlmError> {
    let bad = || NtlmError("malformed AUTHENTICATE message".into());
    let hdr = msg.get(at..at + 8).ok_or_else(bad)?;
    let len = u16::from_le_bytes([hdr[0], hdr[1]]) as usize;
    let off = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]) as usize;
    msg.get(off..off.checked_add(len).ok_or_else(bad)?)
        .ok_or_else(bad)
}

fn from_utf16le(b: &[u8]) -> Result<String, NtlmError> {
    if !b.len().is_multiple_of(2) {
        return Err(NtlmError("odd UTF-16 length".into()));
    }
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16(&units).map_err(|_| NtlmError("bad UTF-16".into()))
}

/// Check the NTLMv2 response of an AUTHENTICATE message (MS-NLMP 3.3.2):
/// NTProofStr = HMAC_MD5(NTOWFv2, ServerChallenge + blob). Only NTLMv2
/// with Unicode names is accepted, for `expected_user`.
pub fn verify_ntlmv2(
    msg: &[u8],
    server_challenge: &[u8; 8],
    expected_user: &str,
    password: &str,
) -> Result<(), NtlmError> {
    if message_type(msg) != Some(3) {
        return Err(NtlmError("not an AUTHENTICATE message".into()));
    }
    let flags = msg
        .get(60..64)
        .map(|f| u32::from_le_bytes([f[0], f[1], f[2], f[3]]))
        .ok_or_else(|| NtlmError("malformed AUTHENTICATE message".into()))?;
    if flags & 1 == 0 {
        return Err(NtlmError("OEM (non-Unicode) names are not accepted".into()));
    }
    let nt = field(msg, 20)?;
    let domain = from_utf16le(field(msg, 28)?)?;
    let user = from_utf16le(field(msg, 36)?)?;
    if nt.len() < 16 + 28 {
        return Err(NtlmError(
            "not an NTLMv2 response (NTLMv1 and anonymous are refused)".into(),
        ));
    }
    if !same_user(&user, expected_user) {
        return Err(NtlmError(format!("user {user:?} is not {expected_user:?}")));
    }
    let key = ntowf_v2(password, &user, &domain);
    let proof = hmac_md5(&key, &[server_challenge, &nt[16..]]);
    let diff = proof
        .iter()
        .zip(&nt[..16])
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff != 0 {
        return Err(NtlmError("wrong password".into()));
    }
    Ok(())
}

/// Windows compares account names case-insensitively; `DOMAIN\user` and
/// `user@domain` forms name the same local account here.
pub fn same_user(given: &str, expected: &str) -> bool {
    let bare = given.rsplit('\\').next().unwrap_or(given);
    let bare = bare.split('@').next().unwrap_or(bare);
    bare.to_lowercase() == expected.to_lowercase()
}

/// True when a Content-Type announces an SPNEGO-sealed message.
pub fn is_sealed_content_type(ct: &str) -> bool {
    let lower = ct.to_ascii_lowercase();
    lower.starts_with("multipart/encrypted") && lower.contains(&PROTOCOL.to_ascii_lowercase())
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// The parts of a sealed request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedParts {
    /// The NTLM signature.
    pub signature: Vec<u8>,
    /// The sealed SOAP message (exactly `Length` bytes).
    pub sealed: Vec<u8>,
}

/// Split a `multipart/encrypted` body into signature and sealed bytes.
pub fn parse_sealed(body: &[u8]) -> Result<SealedParts, NtlmError> {
    let bad = |m: &str| NtlmError(format!("bad encrypted message: {m}"));
    let mut pos = find(body, BOUNDARY, 0).ok_or_else(|| bad("no boundary"))?;
    pos += BOUNDARY.len();
    let second = find(body, BOUNDARY, pos).ok_or_else(|| bad("no second boundary"))?;
    let header = std::str::from_utf8(&body[pos..second]).map_err(|_| bad("header not text"))?;
    if !header
        .to_ascii_lowercase()
        .contains(&PROTOCOL.to_ascii_lowercase())
    {
        return Err(bad("wrong protocol"));
    }
    let length: usize = header
        .split("Length=")
        .nth(1)
        .map(|s| {
            s.chars()
                .take_while(|c| c.is_ascii_digit())
                .collect::<String>()
        })
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no Length"))?;
    let marker = b"application/octet-stream\r\n";
    let data_start =
        find(body, marker, second).ok_or_else(|| bad("no octet-stream part"))? + marker.len();
    let rest = &body[data_start..];
    if rest.len() < 4 {
        return Err(bad("truncated"));
    }
    let sig_len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    if sig_len != SIGNATURE_LEN {
        return Err(bad("signature length is not 16"));
    }
    let rest = &rest[4..];
    let end = sig_len
        .checked_add(length)
        .ok_or_else(|| bad("length overflow"))?;
    if rest.len() < end {
        return Err(bad("shorter than Length"));
    }
    let trailer = &rest[end..];
    let trailer = trailer.strip_prefix(b"\r\n").unwrap_or(trailer);
    if !trailer.starts_with(b"--Encrypted Boundary--") {
        return Err(bad("no closing boundary after Length bytes"));
    }
    Ok(SealedParts {
        signature: rest[..sig_len].to_vec(),
        sealed: rest[sig_len..end].to_vec(),
    })
}

/// Build a sealed reply body as Windows does.
pub fn build_sealed(signature: &[u8], sealed: &[u8], plain_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(sealed.len() + 256);
    out.extend_from_slice(BOUNDARY);
    out.extend_from_slice(b"\r\n\tContent-Type: ");
    out.extend_from_slice(PROTOCOL.as_bytes());
    out.extend_from_slice(
        format!(
            "\r\n\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length={plain_len}\r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(BOUNDARY);
    out.extend_from_slice(b"\r\n\tContent-Type: application/octet-stream\r\n");
    out.extend_from_slice(&(signature.len() as u32).to_le_bytes());
    out.extend_from_slice(signature);
    out.extend_from_slice(sealed);
    out.extend_from_slice(BOUNDARY);
    out.extend_from_slice(b"--\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_round_trip_and_tolerance() {
        let sig = [7u8; 16];
        let body = build_sealed(&sig, b"abcdef", 6);
        let parts = parse_sealed(&body).unwrap();
        assert_eq!(parts.signature, sig);
        assert_eq!(parts.sealed, b"abcdef");
        assert!(body.ends_with(b"abcdef--Encrypted Boundary--\r\n"));

        // A CRLF before the closing boundary (winrm-rs writes one) is tolerated.
        let mut crlf = body[..body.len() - 24].to_vec();
        crlf.extend_from_slice(b"\r\n--Encrypted Boundary--\r\n");
        assert_eq!(parse_sealed(&crlf).unwrap().sealed, b"abcdef");
    }

    #[test]
    fn framing_refuses_garbage() {
        let good = build_sealed(&[1u8; 16], b"xyz", 3);
        for cut in 0..good.len() - 24 {
            assert!(parse_sealed(&good[..cut]).is_err(), "cut {cut}");
        }
        let lying = build_sealed(&[1u8; 16], b"xyz", 300);
        assert!(parse_sealed(&lying).is_err());
        let short = build_sealed(&[1u8; 16], b"xyz", 0);
        assert!(parse_sealed(&short).is_err());
        let overflow = String::from_utf8_lossy(&good)
            .replace("Length=3", "Length=18446744073709551615")
            .into_bytes();
        assert!(parse_sealed(&overflow).is_err());
        assert!(parse_sealed(b"").is_err());
    }

    #[test]
    fn tokens_and_users() {
        assert_eq!(message_type(b"NTLMSSP\0\x01\0\0\0rest"), Some(1));
        assert_eq!(message_type(b"NTLMSSP\0\x03"), None);
        assert_eq!(message_type(b"\x60\x82garbage-spnego"), None);
        assert!(same_user("LabUser", "labuser"));
        assert!(same_user("PC-1\\labuser", "labuser"));
        assert!(same_user("labuser@lab", "labuser"));
        assert!(!same_user("other", "labuser"));
        assert!(is_sealed_content_type(SEALED_CONTENT_TYPE));
        assert!(!is_sealed_content_type(
            "application/soap+xml;charset=UTF-8"
        ));
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn ntlmv2_matches_ms_nlmp_vectors() {
        // MS-NLMP 4.2.4.1.1: NTOWFv2("Password", "User", "Domain").
        assert_eq!(
            ntowf_v2("Password", "User", "Domain").to_vec(),
            hex("0c868a403bfd7a93a3001ef22ef02e3f")
        );
        // MS-NLMP 4.2.4.2.2: NTProofStr over the server challenge and the temp blob.
        let temp = hex(concat!(
            "0101000000000000",
            "0000000000000000",
            "aaaaaaaaaaaaaaaa",
            "00000000",
            "02000c0044006f006d00610069006e00",
            "01000c00530065007200760065007200",
            "00000000",
            "00000000",
        ));
        let proof = hmac_md5(
            &ntowf_v2("Password", "User", "Domain"),
            &[&hex("0123456789abcdef"), &temp],
        );
        assert_eq!(proof.to_vec(), hex("68cd0ab851e51c96aabc927bebef6a1c"));
    }

    fn authenticate(user: &str, domain: &str, nt: &[u8]) -> Vec<u8> {
        let mut m = b"NTLMSSP\0\x03\0\0\0".to_vec();
        let payload_at = 64u32;
        let d = utf16le(domain);
        let u = utf16le(user);
        let mut payload = Vec::new();
        let mut fields = Vec::new();
        for part in [&[][..], nt, &d, &u, &[], &[]] {
            fields.push(((part.len() as u16), payload_at + payload.len() as u32));
            payload.extend_from_slice(part);
        }
        for (len, off) in fields {
            m.extend_from_slice(&len.to_le_bytes());
            m.extend_from_slice(&len.to_le_bytes());
            m.extend_from_slice(&off.to_le_bytes());
        }
        m.extend_from_slice(&1u32.to_le_bytes());
        m.extend_from_slice(&payload);
        m
    }

    #[test]
    fn ntlmv2_verification_refuses_wrong_passwords_without_a_mic() {
        let challenge = [1, 2, 3, 4, 5, 6, 7, 8];
        let blob = [0x01u8; 40];
        let good = hmac_md5(&ntowf_v2("pw", "LabUser", "WS"), &[&challenge, &blob]);
        let nt: Vec<u8> = good.iter().chain(blob.iter()).copied().collect();
        assert_eq!(
            verify_ntlmv2(
                &authenticate("LabUser", "WS", &nt),
                &challenge,
                "labuser",
                "pw"
            ),
            Ok(())
        );
        assert!(verify_ntlmv2(
            &authenticate("LabUser", "WS", &nt),
            &challenge,
            "labuser",
            "other"
        )
        .is_err());
        assert!(
            verify_ntlmv2(&authenticate("Eve", "WS", &nt), &challenge, "labuser", "pw").is_err()
        );
        assert!(verify_ntlmv2(
            &authenticate("LabUser", "WS", &nt),
            &[0; 8],
            "labuser",
            "pw"
        )
        .is_err());
        assert!(verify_ntlmv2(
            &authenticate("LabUser", "WS", &nt[..24]),
            &challenge,
            "labuser",
            "pw"
        )
        .is_err());
        let mut truncated = authenticate("LabUser", "WS", &nt);
        truncated.truncate(70);
        assert!(verify_ntlmv2(&truncated, &challenge, "labuser", "pw").is_err());
    }

    #[test]
    fn hostile_tokens_fail_cleanly() {
        let mut a = Acceptor::new("labuser", "pw").unwrap();
        assert!(a.step(b"").is_err());
        let mut a = Acceptor::new("labuser", "pw").unwrap();
        assert!(a.step(b"NTLMSSP\0\x03\0\0\0\xff\xff\xff\xff").is_err());
        let mut a = Acceptor::new("labuser", "pw").unwrap();
        let mut neg = b"NTLMSSP\0\x01\0\0\0".to_vec();
        neg.extend_from_slice(&0xe208_8297u32.to_le_bytes());
        neg.extend_from_slice(&[0u8; 24]); // domain, workstation, version
        assert!(matches!(a.step(&neg), Ok(Step::Challenge(_))));
        for junk in [
            &b"NTLMSSP\0\x03\0\0\0"[..],
            &[0xffu8; 200][..],
            &b"NTLMSSP\0\x03\0\0\0\xff\xff\xff\x7f\xff\xff\xff\x7f\xff\xff\xff\x7f"[..],
        ] {
            let mut b = Acceptor::new("labuser", "pw").unwrap();
            let _ = b.step(&neg);
            assert!(b.step(junk).is_err());
        }
        assert!(a.seal(b"x").is_err());
        assert!(a.unseal(&[0u8; 16], b"x").is_err());
    }
}
