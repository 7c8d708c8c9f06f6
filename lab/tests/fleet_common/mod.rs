//! Shared helpers of the lab's integration tests (`mod fleet_common;` in each test file):
//! start a real lab (library `up`) on an address range of the test's own, so tests run in
//! parallel without colliding; the ports are 445 / 5985 / 5986 when free there, else free
//! ones. Also: the system `smbclient` run against a lab host (never the system smb.conf), a
//! raw SMB2 NEGOTIATE to read what the server demands, process and socket checks from
//! `/proc`. A missing Samba tool fails the test with the install command.
#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use pushscan_lab::fleet::{self, Lab, LabHost, UpOptions};
use pushscan_lab::spec::{Scenario, ScenarioKind, SmbEncryption, Spec};
pub use pushscan_testkit::port_or_free;

/// The lab's executable, run as the serve process.
pub const EXE: &str = env!("CARGO_BIN_EXE_pushscan-lab");

/// The `pushscan` binary of this workspace (built by cargo if needed, as `cargo test
/// --workspace` builds it): the lab's tests hold the lab to the real program, not to its
/// library, as an operator runs it.
pub fn pushscan_exe() -> PathBuf {
    static EXE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    EXE.get_or_init(|| pushscan_testkit::cargo::workspace_exe(Path::new(EXE_LAB), "pushscan"))
        .clone()
}

const EXE_LAB: &str = EXE;

/// `pushscan ARGS` whose stdout is JSON (exit code 0, or 1 for "detected"); the parsed value.
pub fn pushscan_json(args: &[&std::ffi::OsStr]) -> serde_json::Value {
    let out = Command::new(pushscan_exe())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run pushscan");
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "pushscan {args:?}: {}\n{}",
        out.status,
        text(&out)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("pushscan {args:?}: not JSON ({e}): {}", text(&out)))
}

/// The message a test fails with when Samba is not installed.
pub const SAMBA_MISSING: &str =
    "install it with `apt-get update && apt-get install -y --no-install-recommends \
    samba smbclient` (scripts/test does this)";

/// A lab in a temporary directory; dropping it runs `down` (the lab drops before the dir).
pub struct TestLab {
    pub lab: Lab,
    pub dir: tempfile::TempDir,
}

impl std::ops::Deref for TestLab {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.lab
    }
}

/// Panics with the install command when a Samba program is missing.
pub fn require_samba() {
    for tool in ["smbd", "smbpasswd", "smbclient"] {
        assert!(
            pushscan_lab::fleet::sys::find_binary(tool).is_some(),
            "`{tool}` not found: {SAMBA_MISSING}"
        );
    }
}

/// A spec of `hosts` hosts from `base` with one entry per kind in `kinds` (weight 1 each, so
/// every kind gets a host when there are enough) plus `clean_weight` of clean hosts.
pub fn spec(base: Ipv4Addr, hosts: usize, kinds: &[ScenarioKind], clean_weight: u32) -> Spec {
    let mut spec = Spec {
        hosts,
        base_address: base,
        name_pattern: "T{n:03}-{ou}".into(),
        ..Spec::default()
    };
    let mut scenarios = vec![Scenario {
        weight: clean_weight,
        ..Scenario::new(ScenarioKind::Clean)
    }];
    scenarios.extend(kinds.iter().map(|k| Scenario::new(*k)));
    spec.scenarios = scenarios;
    spec.smb.port = port_or_free(base, 445, &[]);
    spec.winrm.http_port = port_or_free(base, 5985, &[spec.smb.port]);
    spec.winrm.https_port = Some(port_or_free(
        base,
        5986,
        &[spec.smb.port, spec.winrm.http_port],
    ));
    spec
}

/// Starts a lab for `spec` in a fresh temporary directory.
pub fn start(spec: Spec) -> TestLab {
    require_samba();
    let dir = tempfile::Builder::new()
        .prefix("pushscan-lab-test-")
        .tempdir()
        .expect("temporary directory");
    let mut opts = UpOptions::new(dir.path().join("lab"), spec);
    opts.exe = PathBuf::from(EXE);
    let lab = fleet::up(opts).unwrap_or_else(|e| panic!("lab up failed: {e:#}"));
    TestLab { lab, dir }
}

/// Starts a lab with encryption `enc` (see [`spec`]).
pub fn start_with(
    base: Ipv4Addr,
    hosts: usize,
    kinds: &[ScenarioKind],
    enc: SmbEncryption,
) -> TestLab {
    let mut s = spec(base, hosts, kinds, 4);
    s.smb.encryption = enc;
    start(s)
}

/// The system smbclient against `//<host>/<share>` of the lab, independent of
/// /etc/samba/smb.conf; `extra` are further options, `commands` its `-c` script.
pub fn smbclient(
    lab: &Lab,
    host: &LabHost,
    share: &str,
    password: &str,
    extra: &[&str],
    commands: &str,
) -> Output {
    let bin = pushscan_lab::fleet::sys::find_binary("smbclient")
        .unwrap_or_else(|| panic!("`smbclient` not found: {SAMBA_MISSING}"));
    Command::new(bin)
        .arg(format!("//{}/{share}", host.address))
        .args(["-s", "/dev/null", "-p"])
        .arg(lab.smb_port().to_string())
        .arg("-U")
        .arg(format!("{}%{password}", lab.username))
        .args(extra)
        .arg("-c")
        .arg(commands)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run smbclient")
}

/// stdout + stderr as text.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// What a raw SMB2 NEGOTIATE got back.
#[derive(Debug)]
pub enum Negotiated {
    /// NT status, security mode, chosen dialect.
    Answer {
        status: u32,
        security_mode: u16,
        dialect: u16,
    },
    /// The server closed the connection.
    Closed,
}

/// Sends one SMB2 NEGOTIATE offering `dialects` (no negotiate contexts, so no 3.1.1), the
/// client's security mode "signing enabled", and reads the answer.
pub fn negotiate(ip: Ipv4Addr, port: u16, dialects: &[u16]) -> Negotiated {
    let mut smb = Vec::new();
    smb.extend_from_slice(b"\xfeSMB");
    smb.extend_from_slice(&64u16.to_le_bytes()); // StructureSize
    smb.extend_from_slice(&0u16.to_le_bytes()); // CreditCharge
    smb.extend_from_slice(&0u32.to_le_bytes()); // Status
    smb.extend_from_slice(&0u16.to_le_bytes()); // Command: NEGOTIATE
    smb.extend_from_slice(&1u16.to_le_bytes()); // CreditRequest
    smb.extend_from_slice(&0u32.to_le_bytes()); // Flags
    smb.extend_from_slice(&0u32.to_le_bytes()); // NextCommand
    smb.extend_from_slice(&0u64.to_le_bytes()); // MessageId
    smb.extend_from_slice(&0u32.to_le_bytes()); // Reserved
    smb.extend_from_slice(&0u32.to_le_bytes()); // TreeId
    smb.extend_from_slice(&0u64.to_le_bytes()); // SessionId
    smb.extend_from_slice(&[0u8; 16]); // Signature
    smb.extend_from_slice(&36u16.to_le_bytes()); // StructureSize
    smb.extend_from_slice(&(dialects.len() as u16).to_le_bytes());
    smb.extend_from_slice(&1u16.to_le_bytes()); // SecurityMode: signing enabled
    smb.extend_from_slice(&0u16.to_le_bytes()); // Reserved
    smb.extend_from_slice(&0u32.to_le_bytes()); // Capabilities
    smb.extend_from_slice(b"pushscan-lab-tst"); // ClientGuid
    smb.extend_from_slice(&[0u8; 8]); // ClientStartTime
    for d in dialects {
        smb.extend_from_slice(&d.to_le_bytes());
    }
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(smb.len() as u32).to_be_bytes()[1..]);
    frame.extend_from_slice(&smb);

    let mut s = TcpStream::connect(SocketAddrV4::new(ip, port)).expect("connect to smbd");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&frame).expect("send NEGOTIATE");
    let mut head = [0u8; 4];
    if s.read_exact(&mut head).is_err() {
        return Negotiated::Closed;
    }
    let len = u32::from_be_bytes([0, head[1], head[2], head[3]]) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("NEGOTIATE response body");
    assert_eq!(&body[..4], b"\xfeSMB", "an SMB2 answer");
    let u16_at = |i: usize| u16::from_le_bytes([body[i], body[i + 1]]);
    let status = u32::from_le_bytes([body[8], body[9], body[10], body[11]]);
    if status != 0 {
        return Negotiated::Answer {
            status,
            security_mode: 0,
            dialect: 0,
        };
    }
    Negotiated::Answer {
        status,
        security_mode: u16_at(64 + 2),
        dialect: u16_at(64 + 4),
    }
}

/// Processes whose environment carries the lab's marker.
pub fn marked_processes(dir: &Path) -> Vec<u32> {
    let marker = format!("{}={}", fleet::INSTANCE_ENV, dir.display());
    fleet::sys::all_pids()
        .into_iter()
        .filter(|&p| p != std::process::id())
        .filter(|&p| fleet::sys::alive(p) && fleet::sys::environ_has(p, &marker))
        .collect()
}

/// Which of `sockets` listen now.
pub fn listening(sockets: &[SocketAddrV4]) -> Vec<SocketAddrV4> {
    let now = fleet::sys::listening_v4();
    sockets
        .iter()
        .copied()
        .filter(|s| now.contains(s))
        .collect()
}

/// Whether `ip:port` accepts a TCP connection.
pub fn accepts(ip: Ipv4Addr, port: u16) -> bool {
    fleet::sys::accepts(ip, port)
}
