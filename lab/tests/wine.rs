//! Wine-backed lab hosts (`docs/lab-wine.md`), end to end with real parts: Wine 8 (one
//! WINEPREFIX per host, a warm wineserver each), the real Samba `smbd` serving the prefixes'
//! `C$`/`ADMIN$`, the WinRM simulator handing command lines to Wine's `cmd.exe`, the winrm-rs
//! client of pushscan's transport, and the `pushscan` binary itself for the sweep.
//!
//! One 2-host lab (one infected, one clean) serves the whole test, so Wine boots twice rather
//! than once per assertion: it runs every Windows command line of `pushscan contain`
//! (`docs/contain.md`) over WinRM and checks each effect with
//! `pushscan_lab::wine::inspect`, which reads the live state through the host's wineserver.
//! Missing Wine, mingw or Samba fails the test with the install command; it never skips.
//! Addresses: 127.0.110.x.

mod fleet_common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use pushscan_lab::fleet::LabHost;
use pushscan_lab::spec::{ScenarioKind, Spec};
use pushscan_lab::wine::{self, Inspection};
use sha2::{Digest as _, Sha256};
use winrm_rs::{AuthMethod, EncryptionMode, WinrmClient, WinrmConfig, WinrmCredentials};

use fleet_common::{port_or_free, smbclient, text};

const RUN: &str = r"Software\Microsoft\Windows\CurrentVersion\Run";
const IMAGE: &str = r"C:\users\tanaka\AppData\Local\wfsrvhost\wfsrvhost.exe";

/// Fails (never skips) with the install command when Wine or mingw is missing.
fn require_wine() {
    if let Err(e) = wine::WineTools::find() {
        panic!("{e:#}");
    }
    assert!(
        pushscan_lab::fleet::sys::find_binary("x86_64-w64-mingw32-gcc").is_some(),
        "`x86_64-w64-mingw32-gcc` not found: {}",
        wine::MINGW_INSTALL_HINT
    );
}

fn wine_spec(base: Ipv4Addr) -> Spec {
    let mut spec = wine::spec(base, 1, 1);
    spec.smb.port = port_or_free(base, 445, &[]);
    spec.winrm.http_port = port_or_free(base, 5985, &[spec.smb.port]);
    spec
}

/// The `pushscan` binary, built by cargo if needed (another package: cargo does not hand its
/// path to this test); see `fleet_common::pushscan_exe`.
fn pushscan_exe() -> PathBuf {
    fleet_common::pushscan_exe()
}

struct Remote {
    client: WinrmClient,
    rt: tokio::runtime::Runtime,
}

/// (stdout, stderr, exit code) as text.
type Ran = (String, String, i32);

impl Remote {
    fn new(port: u16, user: &str, password: &str) -> Remote {
        let cfg = WinrmConfig {
            port,
            use_tls: false,
            auth_method: AuthMethod::Ntlm,
            encryption: EncryptionMode::Auto,
            operation_timeout_secs: 20,
            connect_timeout_secs: 5,
            ..WinrmConfig::default()
        };
        let client = WinrmClient::builder(cfg)
            .credentials(WinrmCredentials::new(user, password, ""))
            .build()
            .expect("winrm client");
        // current_thread: winrm-rs 1.4.1 races NTLM connections on a multi-thread runtime
        // (lab/README.md, "Findings").
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Remote { client, rt }
    }

    /// Runs one whole command line (sent as the Command, as pushscan sends it).
    fn run(&self, host: &LabHost, line: &str) -> Ran {
        let ip = host.address.to_string();
        // A total deadline, so a wedged Wine command fails the test instead of hanging it.
        let out = self
            .rt
            .block_on(self.client.run_command_with_timeout(
                &ip,
                line,
                &[],
                Duration::from_secs(300),
            ))
            .unwrap_or_else(|e| panic!("{line}: {e:?}"));
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            out.exit_code,
        )
    }
}

fn inspect(lab: &fleet_common::TestLab, host: &LabHost, files: &[&str]) -> Inspection {
    let files: Vec<String> = files.iter().map(|f| f.to_string()).collect();
    wine::inspect(&lab.lab.dir, &host.name, &files).expect("wine inspect")
}

fn pushscan(exe: &Path, lab: &fleet_common::TestLab, args: &[&str]) -> Output {
    Command::new(exe)
        .args(args)
        .env("PUSHSCAN_USER", &lab.username)
        .env("PUSHSCAN_PASSWORD", &lab.password)
        .env_remove("RUST_LOG")
        .output()
        .expect("run pushscan")
}

/// Live processes (not zombies) carrying the lab's marker.
fn lab_processes(dir: &Path) -> Vec<(u32, String)> {
    let marker = format!("{}={}", pushscan_lab::fleet::INSTANCE_ENV, dir.display());
    pushscan_lab::fleet::sys::all_pids()
        .into_iter()
        .filter(|&p| {
            pushscan_lab::fleet::sys::alive(p) && pushscan_lab::fleet::sys::environ_has(p, &marker)
        })
        .map(|p| {
            (
                p,
                pushscan_lab::fleet::sys::cmdline(p)
                    .unwrap_or_default()
                    .join(" "),
            )
        })
        .collect()
}

#[test]
fn wine_hosts_run_the_contract_commands_and_are_swept() {
    let t0 = Instant::now();
    require_wine();
    fleet_common::require_samba();
    let pushscan_bin = pushscan_exe();
    let built = t0.elapsed().as_secs_f64();
    let lab = fleet_common::start(wine_spec(Ipv4Addr::new(127, 0, 110, 1)));
    let up_secs = lab.startup.as_secs_f64();
    let infected = lab
        .wine_host_of(ScenarioKind::Infected)
        .expect("an infected Wine host")
        .clone();
    let clean = lab
        .wine_host_of(ScenarioKind::Clean)
        .expect("a clean Wine host")
        .clone();
    let prefix = infected.wine.as_ref().unwrap().prefix.clone();
    // The template's registry must never change: clones copy the .reg files, which wineserver
    // rewrites in place (docs/lab-wine.md); the binaries are hard links.
    let template = lab.state.wine.as_ref().unwrap().template.clone();
    let reg_digests = |dir: &Path| -> Vec<String> {
        ["system.reg", "user.reg", "userdef.reg"]
            .iter()
            .map(|f| hex::encode(Sha256::digest(std::fs::read(dir.join(f)).unwrap())))
            .collect()
    };
    let template_regs = reg_digests(&template);
    {
        use std::os::unix::fs::MetadataExt as _;
        let links = |p: PathBuf| std::fs::metadata(p).unwrap().nlink();
        assert_eq!(links(prefix.join("user.reg")), 1);
        assert!(links(prefix.join("drive_c/windows/system32/cmd.exe")) >= 2);
    }
    let malware = infected.wine.as_ref().unwrap().malware.clone().unwrap();
    assert_eq!(malware.image, IMAGE);

    // ---- inspection sees the infection ----
    let seen = inspect(&lab, &infected, &[IMAGE]);
    let running: Vec<_> = seen
        .processes
        .iter()
        .filter(|p| p.image.eq_ignore_ascii_case(IMAGE))
        .collect();
    assert_eq!(running.len(), 1, "{seen:?}");
    let pid = running[0].pid;
    assert_eq!(Some(pid), malware.windows_pid);
    assert_eq!(pid % 4, 0, "a wineserver PID is a multiple of 4");
    let sid = "S-1-5-21-0-0-0-1000";
    assert!(
        seen.run_values
            .iter()
            .any(|v| v.sid == sid && v.name == "wfsrvhost" && v.data == IMAGE),
        "{seen:?}"
    );
    assert_eq!(seen.files.get(IMAGE), Some(&true));
    assert!(inspect(&lab, &clean, &[]).run_values.is_empty());

    // ---- SMB: C$ is drive_c, ADMIN$ is drive_c/windows (case-insensitive names) ----
    let got = lab.dir.path().join("wfsrvhost.copy");
    let out = smbclient(
        &lab,
        &infected,
        "C$",
        &lab.password,
        &[],
        &format!(
            r"get Users\TANAKA\AppData\Local\wfsrvhost\wfsrvhost.exe {}",
            got.display()
        ),
    );
    assert!(out.status.success(), "{}", text(&out));
    let bytes = std::fs::read(&got).unwrap();
    assert_eq!(&bytes[..2], b"MZ", "a PE file");
    let digest = hex::encode(Sha256::digest(&bytes));
    let out = smbclient(
        &lab,
        &infected,
        "ADMIN$",
        &lab.password,
        &[],
        r"ls System32\cmd.exe",
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).to_lowercase().contains("cmd.exe"),
        "{}",
        text(&out)
    );

    let remote = Remote::new(lab.winrm_port(), &lab.username, &lab.password);
    let mut latencies = Vec::new();
    let mut timed = |host: &LabHost, line: &str| {
        let t = Instant::now();
        let r = remote.run(host, line);
        latencies.push(t.elapsed());
        r
    };

    // ---- real Wine: cmd, reg ----
    let (out, _, code) = timed(&infected, "reg query HKU");
    assert_eq!(code, 0);
    assert!(out.contains(&format!("HKEY_USERS\\{sid}\r\n")), "{out:?}");
    let query = format!("reg query \"HKU\\{sid}\\{RUN}\" /v \"wfsrvhost\"");
    let (out, _, code) = timed(&infected, &query);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("    wfsrvhost    REG_SZ    {IMAGE}\r\n")),
        "{out:?}"
    );
    let (_, _, code) = timed(&clean, &query);
    assert_eq!(code, 1, "absent value: exit 1");
    let (out, _, _) = timed(&infected, "hostname");
    assert_eq!(out.trim(), infected.name, "the computer name is the lab's");

    // ---- emulated: certutil -hashfile (Wine's is a stub) ----
    let (out, _, code) = timed(&infected, &format!("certutil -hashfile \"{IMAGE}\" SHA256"));
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out,
        format!(
            "SHA256 hash of {IMAGE}:\r\n{digest}\r\nCertUtil: -hashfile command completed \
             successfully.\r\n"
        )
    );
    let (_, _, code) = timed(&infected, "certutil -hashfile \"C:\\nope.exe\" SHA256");
    assert_ne!(code, 0);

    // ---- a stub in a shape the lab does not emulate is refused, never a silent success ----
    let (_, err, code) = timed(&infected, "tasklist /v");
    assert_eq!(code, 1);
    assert!(err.contains("not one the lab emulates"), "{err}");

    // ---- the sweep: pushscan detects the infected host, not the clean one ----
    let checker = lab.wine_checker.clone().expect("emocheck-wine.exe");
    let playbook = lab.wine_playbook.clone().expect("emocheck-wine.yml");
    let pin = pushscan(
        &pushscan_bin,
        &lab,
        &[
            "pin",
            checker.to_str().unwrap(),
            "--playbook",
            playbook.to_str().unwrap(),
        ],
    );
    assert!(pin.status.success(), "{}", text(&pin));
    let state = lab.dir.path().join("state");
    let report = lab.dir.path().join("report.json");
    let sweep_t = Instant::now();
    let sweep = pushscan(
        &pushscan_bin,
        &lab,
        &[
            "sweep",
            "-i",
            lab.inventory.to_str().unwrap(),
            "-p",
            playbook.to_str().unwrap(),
            "--limit",
            "wine",
            "--state-dir",
            state.to_str().unwrap(),
            "--report-json",
            report.to_str().unwrap(),
            "--progress",
            "lines",
        ],
    );
    let sweep_secs = sweep_t.elapsed().as_secs_f64();
    assert_eq!(sweep.status.code(), Some(1), "{}", text(&sweep));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let hosts = report["hosts"].as_array().unwrap();
    let row = |name: &str| {
        hosts
            .iter()
            .find(|h| h["host"] == name)
            .unwrap_or_else(|| panic!("{name} not in {report}"))
    };
    let r = row(&infected.name);
    assert_eq!(r["status"], "detected", "{r}");
    let p = &r["processes"][0];
    assert_eq!(p["name"], "wfsrvhost.exe", "{r}");
    assert_eq!(p["pid"], u64::from(pid), "{r}");
    assert_eq!(p["image_path"], IMAGE, "{r}");
    assert_eq!(
        p["registry_key"],
        format!("HKEY_CURRENT_USER\\{RUN}\\wfsrvhost"),
        "{r}"
    );
    assert!(
        r["report_file"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}_", infected.name)),
        "{r}"
    );
    let r = row(&clean.name);
    assert_eq!(r["status"], "not_detected", "{r}");

    // ---- kill: the emulated process check, real taskkill ----
    let check = |pid: u32| {
        format!(
            "powershell.exe -NoProfile -NonInteractive -Command \"$p = Get-CimInstance \
             Win32_Process -Filter 'ProcessId={pid}'; if ($p) {{ 'PID=' + $p.ProcessId; \
             'PATH=' + $p.ExecutablePath }} else {{ 'GONE' }}\""
        )
    };
    let (out, _, code) = timed(&infected, &check(pid));
    assert_eq!(
        (out.as_str(), code),
        (format!("PID={pid}\r\nPATH={IMAGE}\r\n").as_str(), 0)
    );
    let (out, err, code) = timed(&infected, &format!("taskkill /PID {pid} /F"));
    assert_eq!(code, 0, "{out}{err}");
    let (out, _, code) = timed(&infected, &check(pid));
    assert_eq!((out.as_str(), code), ("GONE\r\n", 0));
    let seen = inspect(&lab, &infected, &[]);
    assert!(
        !seen
            .processes
            .iter()
            .any(|p| p.image.eq_ignore_ascii_case(IMAGE)),
        "{seen:?}"
    );

    // ---- remove: del, if exist ----
    let (_, _, code) = timed(&infected, &format!("del /f /q \"{IMAGE}\""));
    assert_eq!(code, 0);
    let (out, _, _) = timed(
        &infected,
        &format!("if exist \"{IMAGE}\" (echo PRESENT) else (echo ABSENT)"),
    );
    assert_eq!(out.trim(), "ABSENT");
    assert_eq!(
        inspect(&lab, &infected, &[IMAGE]).files.get(IMAGE),
        Some(&false)
    );
    assert!(!prefix
        .join("drive_c/users/tanaka/AppData/Local/wfsrvhost/wfsrvhost.exe")
        .exists());

    // ---- unpersist: reg delete, query again ----
    let (out, err, code) = timed(
        &infected,
        &format!("reg delete \"HKU\\{sid}\\{RUN}\" /v \"wfsrvhost\" /f"),
    );
    assert_eq!(code, 0, "{out}{err}");
    let (_, _, code) = timed(&infected, &query);
    assert_eq!(code, 1, "the value is gone");
    assert!(inspect(&lab, &infected, &[]).run_values.is_empty());

    // ---- isolate: emulated netsh add / show / delete ----
    let ranges = "0.0.0.0-127.0.0.0,127.0.0.2-255.255.255.255";
    for dir in ["in", "out"] {
        let (out, _, code) = timed(
            &infected,
            &format!(
                "netsh advfirewall firewall add rule name=\"pushscan-isolation\" dir={dir} \
                 action=block remoteip={ranges} profile=any enable=yes"
            ),
        );
        assert_eq!((out.as_str(), code), ("Ok.\r\n\r\n", 0));
    }
    let show = "netsh advfirewall firewall show rule name=\"pushscan-isolation\"";
    let (out, _, code) = timed(&infected, show);
    assert_eq!(code, 0);
    assert_eq!(out.matches("Rule Name:").count(), 2, "{out}");
    assert!(
        out.contains("Direction:                            Out\r\n"),
        "{out}"
    );
    assert!(out.contains(&format!(
        "RemoteIP:                             {ranges}\r\n"
    )));
    assert!(out.ends_with("\r\nOk.\r\n"), "{out:?}");
    let rules = inspect(&lab, &infected, &[]).firewall_rules;
    assert_eq!(rules.len(), 2);
    assert!(rules
        .iter()
        .all(|r| r.name == "pushscan-isolation" && r.remoteip == ranges));
    let (out, _, code) = timed(
        &infected,
        "netsh advfirewall firewall delete rule name=\"pushscan-isolation\"",
    );
    assert_eq!(
        (out.as_str(), code),
        ("\r\nDeleted 2 rule(s).\r\nOk.\r\n", 0)
    );
    let (out, _, code) = timed(&infected, show);
    assert_eq!(
        (out.as_str(), code),
        ("No rules match the specified criteria.\r\n", 1)
    );
    assert!(inspect(&lab, &clean, &[]).firewall_rules.is_empty());

    // ---- quarantine shapes (real Wine): mkdir twice, move /y, if exist ----
    let victim = r"C:\users\tanaka\AppData\Local\victim.exe";
    let quarantined = r"C:\ProgramData\pushscan\quarantine\0123abcd.quarantine";
    let (_, _, code) = timed(&clean, &format!("echo MZ> \"{victim}\""));
    assert_eq!(code, 0);
    let mkdir = r#"mkdir "C:\ProgramData\pushscan\quarantine""#;
    assert_eq!(timed(&clean, mkdir).2, 0);
    let (_, err, code) = timed(&clean, mkdir);
    assert_eq!(code, 1, "an existing directory: exit 1 ({err})");
    let (out, err, code) = timed(&clean, &format!("move /y \"{victim}\" \"{quarantined}\""));
    assert_eq!(code, 0, "{out}{err}");
    let seen = inspect(&lab, &clean, &[victim, quarantined]);
    assert_eq!(seen.files.get(victim), Some(&false));
    assert_eq!(seen.files.get(quarantined), Some(&true));

    // ---- the CLI's wine-inspect prints the same JSON ----
    let out = Command::new(fleet_common::EXE)
        .args(["wine-inspect", "--dir"])
        .arg(&lab.lab.dir)
        .args(["--host", &clean.name, "--file", quarantined, "--json"])
        .output()
        .expect("run pushscan-lab wine-inspect");
    assert!(out.status.success(), "{}", text(&out));
    let cli: Inspection = serde_json::from_slice(&out.stdout).expect("wine-inspect JSON");
    assert_eq!(cli.host, clean.name);
    assert_eq!(cli.files.get(quarantined), Some(&true));

    // ---- the timeout path kills the Windows process tree ----
    let sleeper = prefix.join("drive_c/sleeper.exe");
    std::fs::copy(&lab.state.wine.as_ref().unwrap().programs.malware, &sleeper).unwrap();
    let ip = infected.address.to_string();
    let err = remote
        .rt
        .block_on(remote.client.run_command_with_timeout(
            &ip,
            r"cmd /c C:\sleeper.exe",
            &[],
            Duration::from_secs(3),
        ))
        .expect_err("a program that never ends times out");
    assert!(matches!(err, winrm_rs::WinrmError::Timeout(_)), "{err:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = inspect(&lab, &infected, &[]);
        if !seen
            .processes
            .iter()
            .any(|p| p.image.to_ascii_lowercase().ends_with("sleeper.exe"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "sleeper.exe survived: {seen:?}");
        std::thread::sleep(Duration::from_millis(200));
    }

    let body_secs = t0.elapsed().as_secs_f64() - built;
    // ---- down leaves no process behind ----
    let down_t = Instant::now();
    let lab_dir = lab.lab.dir.clone();
    let latencies_ms: Vec<u128> = latencies.iter().map(|d| d.as_millis()).collect();
    let fleet_common::TestLab { lab, dir } = lab;
    let status = pushscan_lab::fleet::status(&lab.dir).expect("status");
    assert!(status.running(), "{status}");
    assert_eq!(status.wineservers_alive, (2, 2), "{status}");
    lab.down().expect("down");
    let down_secs = down_t.elapsed().as_secs_f64();
    let left = lab_processes(&lab_dir);
    assert!(left.is_empty(), "left behind: {left:?}");
    // The wineservers wrote their registries on exit: into the clones, not the template.
    assert_ne!(
        reg_digests(&prefix)[1],
        template_regs[1],
        "the clone's user.reg was saved"
    );
    assert_eq!(
        reg_digests(&template),
        template_regs,
        "the template changed"
    );
    drop(dir);
    eprintln!(
        "wine test: cargo build of pushscan {built:.1} s, up {up_secs:.1} s, sweep \
         {sweep_secs:.1} s, everything from up to before down {body_secs:.1} s, down \
         {down_secs:.1} s, WinRM command latencies (ms) {latencies_ms:?}, total {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
