//! SMB3 encryption as the spec selects it (`smb.encryption`), held to smbclient and to the
//! `smb2` crate (vendored with its encryption fix, `vendor/README.md`):
//! - `required`: smbclient asking for encryption works, an SMB 2.1 client (which cannot
//!   encrypt) is refused, and `smb2` logs in, puts, lists, gets and deletes a file on
//!   `ADMIN$` encrypted; Samba's `smbstatus` lists the session as encrypted;
//! - `desired`: SMB 2.1 and smbclient get in, and `smb2` is encrypted without asking;
//! - `if_required` (Samba's and Windows' default): `smb2` stays in clear by default and
//!   encrypts on its own with `EncryptionMode::Desired`;
//! - `off`: `smb2` with `EncryptionMode::Required` is refused with a clear error, before any
//!   request after SESSION_SETUP.
//!
//! Every `smb2` session here runs through a loopback tap that records both directions, so the
//! tests prove on the wire that after SESSION_SETUP every frame is an SMB2 TRANSFORM_HEADER
//! (0xFD 'S' 'M' 'B') for the session, and that the file's content, its name and the share
//! name never pass in clear; the unencrypted sessions are the control (the content is seen).

mod fleet_common;

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use fleet_common::{smbclient, start_with, text, TestLab, SAMBA_MISSING};
use pushscan_lab::fleet::LabHost;
use pushscan_lab::spec::{ScenarioKind, SmbEncryption};
use smb2::{ClientConfig, EncryptionMode};

const TRANSFORM: &[u8; 4] = b"\xfdSMB";
const PLAIN: &[u8; 4] = b"\xfeSMB";
const NEGOTIATE: u16 = 0;
const SESSION_SETUP: u16 = 1;

#[test]
fn required_encryption_serves_smb2_encrypted_and_refuses_smb21() {
    let lab = start_with(
        Ipv4Addr::new(127, 0, 44, 1),
        3,
        &[],
        SmbEncryption::Required,
    );
    let host = lab.host_of(ScenarioKind::Clean).unwrap().clone();
    let conf = fs::read_to_string(&lab.state.smbd_conf).unwrap();
    assert!(conf.contains("server smb encrypt = required"), "{conf}");

    let local = lab.dir.path().join("f.txt");
    fs::write(&local, b"encrypted all the way").unwrap();
    let out = smbclient(
        &lab,
        &host,
        "ADMIN$",
        &lab.password,
        &["--client-protection=encrypt"],
        &format!("put {} Temp\\enc.txt; ls Temp\\enc.txt", local.display()),
    );
    assert!(out.status.success(), "encrypting client:\n{}", text(&out));
    assert_eq!(
        fs::read(host.root.join("Windows/Temp/enc.txt")).unwrap(),
        b"encrypted all the way"
    );

    // SMB 2.1 has no encryption: the session is refused.
    let out = smbclient(
        &lab,
        &host,
        "ADMIN$",
        &lab.password,
        &["-m", "SMB2_10"],
        "ls",
    );
    assert!(!out.status.success(), "SMB 2.1 got in:\n{}", text(&out));
    assert!(
        text(&out).contains("NT_STATUS_ACCESS_DENIED"),
        "{}",
        text(&out)
    );

    // smb2 with its default mode: the server demands encryption, the client encrypts.
    let run = round_trip(&lab, &host, EncryptionMode::IfServerRequires, "req");
    assert!(run.encrypted, "smb2 under `required` is not encrypted");
    assert_encrypted_after_session_setup(&run);
    assert!(
        run.smbstatus.contains("AES-"),
        "smbstatus lists the session encrypted:\n{}",
        run.smbstatus
    );

    // And a client that itself requires encryption gets in too.
    let run = round_trip(&lab, &host, EncryptionMode::Required, "req2");
    assert!(run.encrypted);
    assert_encrypted_after_session_setup(&run);
}

#[test]
fn desired_encryption_serves_smb21_and_encrypts_smb2() {
    let lab = start_with(Ipv4Addr::new(127, 0, 45, 1), 2, &[], SmbEncryption::Desired);
    let host = lab.host_of(ScenarioKind::Clean).unwrap().clone();
    let out = smbclient(
        &lab,
        &host,
        "ADMIN$",
        &lab.password,
        &["-m", "SMB2_10"],
        "ls",
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = smbclient(
        &lab,
        &host,
        "ADMIN$",
        &lab.password,
        &["--client-protection=encrypt"],
        "ls",
    );
    assert!(out.status.success(), "{}", text(&out));

    // The server turns encryption on for every client that announces it.
    let run = round_trip(&lab, &host, EncryptionMode::IfServerRequires, "des");
    assert!(run.encrypted, "smb2 under `desired` is not encrypted");
    assert_encrypted_after_session_setup(&run);
}

#[test]
fn if_required_encryption_is_the_clients_choice() {
    let lab = start_with(
        Ipv4Addr::new(127, 0, 53, 1),
        2,
        &[],
        SmbEncryption::IfRequired,
    );
    let host = lab.host_of(ScenarioKind::Clean).unwrap().clone();
    let conf = fs::read_to_string(&lab.state.smbd_conf).unwrap();
    assert!(conf.contains("server smb encrypt = if_required"), "{conf}");

    // Nobody asks: signed, in clear. The control of the tap: the content is on the wire.
    let run = round_trip(&lab, &host, EncryptionMode::IfServerRequires, "ifr");
    assert!(!run.encrypted);
    assert!(
        contains(&run.to_server, &run.payload),
        "the unencrypted upload crosses the tap in clear"
    );
    assert!(contains(&run.to_client, &run.payload));
    assert!(!frames(&run.to_server)
        .iter()
        .any(|f| f.starts_with(TRANSFORM)));

    // The client asks: it encrypts on its own initiative and Samba answers encrypted.
    for mode in [EncryptionMode::Desired, EncryptionMode::Required] {
        let run = round_trip(&lab, &host, mode, "ifr2");
        assert!(run.encrypted, "{mode:?}");
        assert_encrypted_after_session_setup(&run);
    }
}

#[test]
fn off_refuses_a_client_that_requires_encryption() {
    let lab = start_with(Ipv4Addr::new(127, 0, 54, 1), 2, &[], SmbEncryption::Off);
    let host = lab.host_of(ScenarioKind::Clean).unwrap().clone();
    let rt = runtime();
    let connect = |mode| {
        rt.block_on(smb2::SmbClient::connect(ClientConfig {
            addr: format!("{}:{}", host.address, lab.smb_port()),
            username: lab.username.clone(),
            password: lab.password.clone(),
            encryption: mode,
            ..Default::default()
        }))
    };

    let err = match connect(EncryptionMode::Required) {
        Err(e) => e,
        Ok(_) => panic!("a client requiring encryption got a session with `off`"),
    };
    assert_eq!(err.kind(), smb2::ErrorKind::EncryptionUnavailable, "{err}");
    assert!(
        matches!(err, smb2::Error::EncryptionUnavailable { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "encryption is required, and the SMB 3.1.1 session with this server would not be \
         encrypted: the server does not support encryption"
    );

    // Desired settles for a signed session; the default never asked.
    for mode in [EncryptionMode::Desired, EncryptionMode::IfServerRequires] {
        let client = connect(mode).unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        assert!(!client.is_encrypted(), "{mode:?}");
        assert!(client.session().should_sign, "{mode:?}");
    }
}

/// What one `smb2` session through the tap did and what crossed the wire.
struct Run {
    encrypted: bool,
    session_id: u64,
    /// What `smbstatus` said while the session was up.
    smbstatus: String,
    payload: Vec<u8>,
    /// Strings that must not cross the wire in clear when the session is encrypted.
    secrets: Vec<Vec<u8>>,
    to_server: Vec<u8>,
    to_client: Vec<u8>,
}

/// Logs in with `mode` through a tap, puts `Temp\pushscan-<tag>.txt` on `ADMIN$`, checks it
/// landed in the host's tree, lists `Temp`, reads it back, deletes it, and disconnects.
fn round_trip(lab: &TestLab, host: &LabHost, mode: EncryptionMode, tag: &str) -> Run {
    let tap = Tap::start(SocketAddrV4::new(host.address, lab.smb_port()));
    let name = format!("pushscan-{tag}.txt");
    let payload: Vec<u8> = format!("pushscan plaintext canary {tag} ")
        .repeat(500)
        .into_bytes();
    let landed = host.root.join("Windows/Temp").join(&name);
    let rt = runtime();
    let (encrypted, session_id, smbstatus) = rt
        .block_on(async {
            let mut client = smb2::SmbClient::connect(ClientConfig {
                addr: tap.addr(),
                username: lab.username.clone(),
                password: lab.password.clone(),
                encryption: mode,
                ..Default::default()
            })
            .await?;
            let mut share = client.connect_share("ADMIN$").await?;
            let path = format!("Temp/{name}");
            client.write_file(&share, &path, &payload).await?;
            assert_eq!(fs::read(&landed).unwrap(), payload, "{}", landed.display());
            let listed = client.list_directory(&mut share, "Temp").await?;
            assert!(
                listed
                    .iter()
                    .any(|e| e.name == name && e.size == payload.len() as u64),
                "{name} listed"
            );
            assert_eq!(client.read_file(&mut share, &path).await?, payload);
            let smbstatus = smbstatus(&lab.state.smbd_conf);
            client.delete_file(&share, &path).await?;
            assert!(!landed.exists(), "{} deleted", landed.display());
            client.disconnect_share(&share).await?;
            Ok::<_, smb2::Error>((client.is_encrypted(), client.session_id().0, smbstatus))
        })
        .unwrap_or_else(|e| panic!("smb2 round trip ({mode:?}): {e}"));
    drop(rt);
    let (to_server, to_client) = tap.finish();
    Run {
        encrypted,
        session_id,
        smbstatus,
        secrets: vec![
            b"pushscan plaintext canary".to_vec(),
            utf16(&name),
            utf16("ADMIN$"),
        ],
        payload,
        to_server,
        to_client,
    }
}

/// After SESSION_SETUP, every frame each way is a TRANSFORM_HEADER for the session; before,
/// only NEGOTIATE and SESSION_SETUP pass in clear; no secret ever does.
#[track_caller]
fn assert_encrypted_after_session_setup(run: &Run) {
    for (way, stream) in [("to server", &run.to_server), ("to client", &run.to_client)] {
        let frames = frames(stream);
        let first = frames
            .iter()
            .position(|f| f.starts_with(TRANSFORM))
            .unwrap_or_else(|| panic!("{way}: no encrypted frame"));
        for f in &frames[..first] {
            assert!(f.starts_with(PLAIN), "{way}: not SMB2: {:02x?}", &f[..4]);
            let command = u16::from_le_bytes([f[12], f[13]]);
            assert!(
                command == NEGOTIATE || command == SESSION_SETUP,
                "{way}: command {command:#x} in clear"
            );
        }
        assert!(
            frames[first..].len() >= 8,
            "{way}: {} encrypted frames",
            frames[first..].len()
        );
        for f in &frames[first..] {
            assert!(
                f.starts_with(TRANSFORM),
                "{way}: a frame in clear after SESSION_SETUP: {:02x?}",
                &f[..f.len().min(16)]
            );
            // TRANSFORM_HEADER: ProtocolId, Signature (16), Nonce (16), OriginalMessageSize (4),
            // Reserved (2), Flags (2) = 1 (encrypted), SessionId (8).
            assert_eq!(u16::from_le_bytes([f[42], f[43]]), 1, "{way}: Flags");
            let session = u64::from_le_bytes(f[44..52].try_into().unwrap());
            assert_eq!(session, run.session_id, "{way}: SessionId");
        }
        for secret in &run.secrets {
            assert!(
                !contains(stream, secret),
                "{way}: {:?} crossed the wire in clear",
                String::from_utf8_lossy(secret)
            );
        }
    }
}

/// The SMB2 messages of one direction of a connection (4-byte Direct TCP transport header:
/// a zero byte and a 24-bit length).
fn frames(stream: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        assert!(at + 4 <= stream.len(), "truncated transport header");
        assert_eq!(stream[at], 0, "transport header");
        let len = u32::from_be_bytes([0, stream[at + 1], stream[at + 2], stream[at + 3]]) as usize;
        let frame = &stream[at + 4..at + 4 + len];
        assert!(frame.len() >= 64, "short frame");
        out.push(frame);
        at += 4 + len;
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `smbstatus -b` (sessions) against the lab's private config.
fn smbstatus(conf: &Path) -> String {
    let bin = pushscan_lab::fleet::sys::find_binary("smbstatus")
        .unwrap_or_else(|| panic!("`smbstatus` not found: {SAMBA_MISSING}"));
    let out = Command::new(bin)
        .arg("-s")
        .arg(conf)
        .arg("-b")
        .output()
        .expect("cannot run smbstatus");
    text(&out)
}

/// A loopback TCP relay for one connection that records what passes each way.
struct Tap {
    addr: SocketAddrV4,
    to_server: Arc<Mutex<Vec<u8>>>,
    to_client: Arc<Mutex<Vec<u8>>>,
    relay: JoinHandle<()>,
}

impl Tap {
    fn start(upstream: SocketAddrV4) -> Tap {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the tap");
        let addr = match listener.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            other => panic!("{other}"),
        };
        let to_server = Arc::new(Mutex::new(Vec::new()));
        let to_client = Arc::new(Mutex::new(Vec::new()));
        let (up, down) = (Arc::clone(&to_server), Arc::clone(&to_client));
        let relay = std::thread::spawn(move || {
            let (client, _) = listener.accept().expect("the client connects to the tap");
            let server = TcpStream::connect(upstream).expect("the tap connects to smbd");
            let spawn = |from: TcpStream, to: TcpStream, record: Arc<Mutex<Vec<u8>>>| {
                std::thread::spawn(move || pump(from, to, &record))
            };
            let a = spawn(client.try_clone().unwrap(), server.try_clone().unwrap(), up);
            let b = spawn(server, client, down);
            a.join().unwrap();
            b.join().unwrap();
        });
        Tap {
            addr,
            to_server,
            to_client,
            relay,
        }
    }

    fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Waits until both sides closed; what went to the server, what came back.
    fn finish(self) -> (Vec<u8>, Vec<u8>) {
        self.relay.join().expect("tap relay");
        let take = |m: &Mutex<Vec<u8>>| std::mem::take(&mut *m.lock().unwrap());
        (take(&self.to_server), take(&self.to_client))
    }
}

/// Copies `from` to `to`, recording, until `from` ends; then ends `to`'s write side.
fn pump(mut from: TcpStream, mut to: TcpStream, record: &Mutex<Vec<u8>>) {
    from.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                record.lock().unwrap().extend_from_slice(&buf[..n]);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
