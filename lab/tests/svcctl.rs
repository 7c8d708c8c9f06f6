//! The lab's `\PIPE\svcctl` held to independent clients: unmodified Impacket (`smbexec.py`
//! and its `scmr` module, pip package `impacket`, version pinned by scripts/test) creates,
//! starts and deletes services on lab hosts over SMB alone; Samba's `smbclient -L` (srvsvc)
//! still answers through the forwarding to samba-dcerpcd; the per-host fault injection
//! (`svcctl: denied`, `svcctl: missing`) fails as Windows does; StartServiceW answers 1053
//! after the start timeout and kills the service's own process while what it started with
//! `start "" /b` runs on. The state is checked on the lab's files (`svcctl::services`,
//! `svcctl::events`), never on the client's word. Each test runs its own lab on its own
//! address range, on SMB port 445 (smbexec.py accepts no other).

mod fleet_common;

use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use fleet_common::{smbclient, start, text, TestLab};
use pushscan_lab::fleet::LabHost;
use pushscan_lab::spec::{Scenario, ScenarioKind, Spec, SvcctlMode, WinrmAvailability};
use pushscan_lab::svcctl;

const IMPACKET_MISSING: &str = "Impacket not found: install it with `python3 -m pip install \
     impacket==0.13.1` (scripts/test does this)";

/// A lab of one host per scenario given, SMB on 445 (the test fails when 445 is taken on
/// the range), the start timeout `start_timeout_ms`.
fn lab(base: Ipv4Addr, scenarios: Vec<Scenario>, start_timeout_ms: u64) -> TestLab {
    let mut spec = Spec {
        hosts: scenarios.len(),
        base_address: base,
        name_pattern: "S{n:03}-{ou}".into(),
        ..Spec::default()
    };
    spec.scenarios = scenarios;
    spec.smb.port = 445;
    spec.winrm.http_port = fleet_common::port_or_free(base, 5985, &[445]);
    spec.winrm.https_port = None;
    spec.svcctl.start_timeout_ms = start_timeout_ms;
    start(spec)
}

fn host(lab: &TestLab, n: usize) -> LabHost {
    lab.hosts()[n].clone()
}

/// Impacket's `smbexec.py` (the console script pip installs), or the failure naming the
/// install command.
fn smbexec_py() -> std::path::PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import impacket, shutil, sys, os; \
             p = os.path.join(os.path.dirname(sys.executable), 'smbexec.py'); \
             p = p if os.path.exists(p) else (shutil.which('smbexec.py') or ''); \
             print(p)",
        ])
        .output()
        .expect("cannot run python3");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && !path.is_empty(),
        "{IMPACKET_MISSING}: {}",
        text(&out)
    );
    path.into()
}

/// `smbexec.py user:password@ip` with `commands` on its stdin, 60 s at most.
fn smbexec(lab: &TestLab, ip: Ipv4Addr, commands: &str) -> Output {
    use std::io::Write as _;
    let mut child = Command::new("python3")
        .arg(smbexec_py())
        .arg(format!("{}:{}@{ip}", lab.username, lab.password))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run smbexec.py");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(commands.as_bytes())
        .expect("write to smbexec.py");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("smbexec.py output")
}

/// Impacket's `scmr` client: open the SCM on `ip`, create service `name` with `binpath`,
/// start it (printing the Windows error code and how long the call took), delete and close
/// it; then ROpenServiceW on the same name (printing its error code).
fn scmr_create_start_delete(lab: &TestLab, ip: Ipv4Addr, name: &str, binpath: &str) -> Output {
    let script = r#"
import sys, time
from impacket.dcerpc.v5 import transport, scmr
ip, user, password, name, binpath = sys.argv[1:6]
t = transport.DCERPCTransportFactory(r'ncacn_np:%s[\pipe\svcctl]' % ip)
t.set_credentials(user, password)
dce = t.get_dce_rpc()
dce.connect()
dce.bind(scmr.MSRPC_UUID_SCMR)
sc = scmr.hROpenSCManagerW(dce)['lpScHandle']
svc = scmr.hRCreateServiceW(dce, sc, name, name, lpBinaryPathName=binpath,
                            dwStartType=scmr.SERVICE_DEMAND_START)['lpServiceHandle']
t0 = time.time()
try:
    scmr.hRStartServiceW(dce, svc)
    print('start 0')
except scmr.DCERPCSessionError as e:
    print('start %d' % e.get_error_code())
print('start_ms %d' % int((time.time() - t0) * 1000))
cfg = scmr.hRQueryServiceConfigW(dce, svc)['lpServiceConfig']
print('config %s' % cfg['lpBinaryPathName'][:-1])
scmr.hRDeleteService(dce, svc)
scmr.hRCloseServiceHandle(dce, svc)
try:
    scmr.hROpenServiceW(dce, sc, name)
    print('reopen 0')
except scmr.DCERPCSessionError as e:
    print('reopen %d' % e.get_error_code())
"#;
    Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(ip.to_string())
        .arg(&lab.username)
        .arg(&lab.password)
        .arg(name)
        .arg(binpath)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run python3")
}

fn value<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
}

fn wait_for(path: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    path.exists()
}

#[test]
fn impacket_smbexec_runs_commands_on_a_winrm_less_host_and_leaves_no_service() {
    let base = Ipv4Addr::new(127, 0, 131, 1);
    let closed = Scenario {
        winrm: WinrmAvailability::Closed,
        ..Scenario::new(ScenarioKind::Clean)
    };
    let lab = lab(base, vec![closed], 1000);
    let h = host(&lab, 0);
    assert!(!h.winrm && h.smb, "{h:?}");
    assert!(
        TcpStream::connect((h.address, lab.winrm_port())).is_err(),
        "the WinRM port of a `winrm: closed` host answers"
    );

    let out = smbexec(
        &lab,
        h.address,
        "whoami\necho pushscan-svcctl-probe\nexit\n",
    );
    let shown = text(&out);
    assert!(shown.contains("nt authority\\system"), "{shown}");
    assert!(
        shown.contains("\npushscan-svcctl-probe") || shown.contains(">pushscan-svcctl-probe"),
        "{shown}"
    );
    assert!(
        shown.contains("C:\\Windows\\system32>"),
        "the `cd` prompt: {shown}"
    );

    // On the lab's state: no service left, one 7045 per command (cd, whoami, echo), each
    // start failed with 1053 (event 7000), smbexec's batch files deleted.
    let services = svcctl::services(&lab.lab.dir, h.address).unwrap();
    assert!(services.is_empty(), "{services:?}");
    let events = svcctl::events(&lab.lab.dir, h.address).unwrap();
    let installs: Vec<_> = events.iter().filter(|e| e.id == 7045).collect();
    assert_eq!(installs.len(), 3, "{events:?}");
    assert!(installs[2]
        .image
        .as_deref()
        .unwrap_or_default()
        .contains("echo pushscan-svcctl-probe"));
    assert_eq!(
        events.iter().filter(|e| e.id == 7000).count(),
        3,
        "{events:?}"
    );
    let windows = lab.admin_share_dir(&h);
    let bats: Vec<_> = std::fs::read_dir(&windows)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".bat"))
        .collect();
    assert!(bats.is_empty(), "batch files left in {}", windows.display());
}

#[test]
fn srvsvc_answers_through_the_forwarder_and_faults_fail_as_on_windows() {
    let base = Ipv4Addr::new(127, 0, 132, 1);
    let denied = Scenario {
        svcctl: SvcctlMode::Denied,
        ..Scenario::new(ScenarioKind::Clean)
    };
    let missing = Scenario {
        svcctl: SvcctlMode::Missing,
        ..Scenario::new(ScenarioKind::Clean)
    };
    let lab = lab(base, vec![denied, missing], 1000);
    // The spec's draw shuffles scenarios over the hosts: find each by its mode.
    let by_mode = |mode| {
        lab.hosts()
            .iter()
            .find(|h| h.svcctl == mode)
            .cloned()
            .unwrap_or_else(|| panic!("no {mode:?} host"))
    };
    let (denied, missing) = (by_mode(SvcctlMode::Denied), by_mode(SvcctlMode::Missing));

    // srvsvc (NetShareEnumAll) is samba-dcerpcd's, reached through the lab's socket dir.
    // samba-dcerpcd starts its rpcd worker on the first pipe; with several labs starting
    // at once on this 2-core machine that first bind has been seen to pass smbclient's
    // timeout, so a timed-out attempt is retried (twice at most) and counted.
    let mut attempts = Vec::new();
    for _ in 0..3 {
        let out = smbclient(
            &lab,
            &denied,
            "IPC$",
            &lab.password,
            &["-L", &denied.address.to_string()],
            "",
        );
        let shown = text(&out);
        let timed_out = shown.contains("NT_STATUS_IO_TIMEOUT");
        attempts.push(shown);
        if !timed_out {
            break;
        }
    }
    let shown = attempts.last().cloned().unwrap_or_default();
    assert!(
        shown.contains("IPC$") && shown.contains("IPC Service"),
        "{} attempts: {attempts:#?}",
        attempts.len()
    );

    let out = smbexec(&lab, denied.address, "whoami\nexit\n");
    let shown = text(&out);
    assert!(shown.contains("rpc_s_access_denied"), "{shown}");
    assert!(!shown.contains("nt authority"), "{shown}");

    let out = smbexec(&lab, missing.address, "whoami\nexit\n");
    let shown = text(&out);
    assert!(
        shown.contains("STATUS_PIPE_DISCONNECTED")
            || shown.contains("STATUS_OBJECT_NAME_NOT_FOUND"),
        "{shown}"
    );
    for h in [&denied, &missing] {
        assert!(svcctl::events(&lab.lab.dir, h.address).unwrap().is_empty());
        assert!(svcctl::services(&lab.lab.dir, h.address)
            .unwrap()
            .is_empty());
    }
}

#[test]
fn start_times_out_with_1053_kills_the_service_process_and_spares_a_detached_one() {
    let base = Ipv4Addr::new(127, 0, 133, 1);
    let lab = lab(base, vec![Scenario::new(ScenarioKind::Clean)], 400);
    let h = host(&lab, 0);
    // A program of the host tree (the lab runs `.exe` files as sh scripts): it writes a
    // marker after 2 s, long past the 400 ms start timeout.
    std::fs::write(
        h.root.join("sleeper.exe"),
        "#!/bin/sh\nsleep 2\necho done > \"$(dirname \"$0\")/$1\"\n",
    )
    .unwrap();

    // Run as the service's own process: killed at the timeout, so no marker.
    let out = scmr_create_start_delete(
        &lab,
        h.address,
        "pushscan-direct",
        r"C:\sleeper.exe direct.txt",
    );
    let shown = text(&out);
    assert_eq!(value(&shown, "start"), Some("1053"), "{shown}");
    let ms: u64 = value(&shown, "start_ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(
        (400..1900).contains(&ms),
        "StartServiceW took {ms} ms: {shown}"
    );
    assert_eq!(
        value(&shown, "config"),
        Some(r"C:\sleeper.exe direct.txt"),
        "{shown}"
    );
    assert_eq!(value(&shown, "reopen"), Some("1060"), "{shown}");

    // Detached with `start "" /b` under cmd with delayed expansion: cmd itself ends at once
    // (1053 before the timeout), the program runs on and writes its marker and exit code.
    let out = scmr_create_start_delete(
        &lab,
        h.address,
        "pushscan-detached",
        r#"%COMSPEC% /Q /c start "" /b %COMSPEC% /Q /V:ON /c "C:\sleeper.exe detached.txt & echo !ERRORLEVEL! > C:\rc.txt""#,
    );
    let shown = text(&out);
    assert_eq!(value(&shown, "start"), Some("1053"), "{shown}");
    let ms: u64 = value(&shown, "start_ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(9999);
    assert!(
        ms < 400,
        "a cmd that ends at once still took {ms} ms: {shown}"
    );
    assert!(
        wait_for(&h.root.join("detached.txt"), Duration::from_secs(10)),
        "the detached program did not finish"
    );
    assert!(wait_for(&h.root.join("rc.txt"), Duration::from_secs(5)));
    assert_eq!(
        std::fs::read_to_string(h.root.join("rc.txt"))
            .unwrap()
            .trim(),
        "0"
    );
    assert!(
        !h.root.join("direct.txt").exists(),
        "the timed-out service process was not killed"
    );

    // A binary path of 6000 bytes of UTF-16: Impacket sends RCreateServiceW in several
    // request fragments and gets RQueryServiceConfigW back in several response fragments
    // (both sides at most 4280 bytes a fragment); the path comes back whole.
    let long = format!("%COMSPEC% /Q /c echo {}", "A".repeat(3000));
    let out = scmr_create_start_delete(&lab, h.address, "pushscan-long", &long);
    let shown = text(&out);
    assert_eq!(value(&shown, "config"), Some(long.as_str()), "{shown}");
    assert_eq!(value(&shown, "reopen"), Some("1060"), "{shown}");

    let events = svcctl::events(&lab.lab.dir, h.address).unwrap();
    let events: Vec<_> = events
        .into_iter()
        .filter(|e| e.service != "pushscan-long")
        .collect();
    let ids: Vec<(u32, &str)> = events.iter().map(|e| (e.id, e.service.as_str())).collect();
    assert_eq!(
        ids,
        [
            (7045, "pushscan-direct"),
            (7009, "pushscan-direct"),
            (7000, "pushscan-direct"),
            (7045, "pushscan-detached"),
            (7000, "pushscan-detached"),
        ],
        "{events:?}"
    );
    assert_eq!(events[1].timeout_ms, Some(400));
    assert!(svcctl::services(&lab.lab.dir, h.address)
        .unwrap()
        .is_empty());
}
