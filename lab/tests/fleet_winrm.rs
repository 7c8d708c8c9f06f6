//! The whole lab as pushscan will use it, held to independent clients: `up`
//! starts Samba and the WinRM simulator; the system `smbclient` pushes the
//! stand-in checker into an infected host's `ADMIN$`, **pywinrm** (NTLM with
//! message sealing over HTTP, as Windows requires) runs it with EmoCheck's
//! switches, `smbclient` fetches the JSON report, and `pushscan parse` reads
//! a Japanese detection with CP932 paths. The wrong-password host refuses
//! the lab account on WinRM, and the port-closed host answers nothing.

mod fleet_common;

use std::fs;
use std::net::Ipv4Addr;
use std::process::Command;

use fleet_common::{accepts, pushscan_json, smbclient, spec, start, text};
use pushscan_lab::spec::{Locale, PathEncoding, ScenarioKind};

const PYWINRM: &str = r#"
import sys, winrm
from winrm.exceptions import InvalidCredentialsError
url, user, password, mode = sys.argv[1:5]
p = winrm.Protocol(url, transport="ntlm", username=user, password=password,
                   message_encryption="always", server_cert_validation="ignore")
try:
    shell = p.open_shell()
except InvalidCredentialsError:
    print("DENIED"); sys.exit(0)
def run(cmd, args):
    cid = p.run_command(shell, cmd, args)
    out, err, code = p.get_command_output(shell, cid)
    p.cleanup_command(shell, cid)
    return out, err, code
if mode == "checker":
    out, err, code = run("cmd", ["/c", "mkdir", r"C:\Windows\Temp\pushscan\reports"])
    out, err, code = run(r"C:\Windows\Temp\pushscan\emocheck.exe",
                         ["/quiet", "/json", "/output", r"C:\Windows\Temp\pushscan\reports"])
    print("EXIT", code)
    sys.stdout.write("STDERR " + err.decode("utf-8", "replace") + "\n" + out.decode("utf-8","replace"))
    out, err, code = run("cmd", ["/c", "dir", "/b", r"C:\Windows\Temp\pushscan\reports"])
    sys.stdout.write(out.decode("utf-8", "replace"))
p.close_shell(shell)
"#;

#[test]
fn smbclient_and_pywinrm_run_the_checker_on_an_infected_japanese_host() {
    let mut s = spec(
        Ipv4Addr::new(127, 0, 52, 1),
        8,
        &[
            ScenarioKind::Infected,
            ScenarioKind::WrongPassword,
            ScenarioKind::PortClosed,
        ],
        4,
    );
    for sc in &mut s.scenarios {
        if sc.kind == ScenarioKind::Infected {
            sc.locale = Locale::Ja;
            sc.encoding = PathEncoding::Cp932;
            sc.image = Some("C:\\Users\\鈴木\\AppData\\Local\\ソフト\\wfsrvhost.exe".into());
        }
    }
    let lab = start(s);
    let py = |host: &pushscan_lab::fleet::LabHost, password: &str, mode: &str| {
        let url = format!("http://{}:{}/wsman", host.address, lab.winrm_port());
        Command::new("python3")
            .arg("-c")
            .arg(PYWINRM)
            .args([url.as_str(), lab.username.as_str(), password, mode])
            .output()
            .expect("python3")
    };

    // Push over SMB, run over WinRM, fetch over SMB.
    let infected = lab.host_of(ScenarioKind::Infected).unwrap().clone();
    let push = smbclient(
        &lab,
        &infected,
        "ADMIN$",
        &lab.password,
        &["-m", "SMB3"],
        &format!(
            "mkdir Temp\\pushscan; put {} Temp\\pushscan\\emocheck.exe",
            lab.checker.display()
        ),
    );
    assert!(push.status.success(), "smbclient put: {}", text(&push));
    let run = py(&infected, &lab.password, "checker");
    let out = String::from_utf8_lossy(&run.stdout).to_string();
    assert!(
        run.status.success() && out.contains("EXIT 0"),
        "pywinrm: {out}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let name = out
        .lines()
        .map(str::trim)
        .find(|l| l.ends_with("_emocheck.json"))
        .unwrap_or_else(|| panic!("no report listed: {out}"))
        .to_string();
    assert!(name.starts_with(&infected.name), "{name}");
    let local = lab.dir.path().join(&name);
    let get = smbclient(
        &lab,
        &infected,
        "ADMIN$",
        &lab.password,
        &["-m", "SMB3"],
        &format!("get Temp\\pushscan\\reports\\{name} {}", local.display()),
    );
    assert!(get.status.success(), "smbclient get: {}", text(&get));
    let bytes = fs::read(&local).unwrap();
    // CP932, not UTF-8: `ソ` is 0x83 0x5C, its second byte doubled by JSON.
    assert!(
        bytes.windows(3).any(|w| w == [0x83, 0x5c, 0x5c]),
        "CP932 bytes in the report"
    );
    let parsed = &pushscan_json(&[
        "parse".as_ref(),
        "--format".as_ref(),
        "json".as_ref(),
        local.as_ref(),
    ])[0];
    assert_eq!(parsed["status"], "detected", "{parsed}");
    assert_eq!(
        parsed["processes"][0]["image_path"],
        "C:\\Users\\鈴木\\AppData\\Local\\ソフト\\wfsrvhost.exe"
    );
    assert_eq!(parsed["hostname"], infected.name.as_str());

    // The lab account is refused where the host has another password.
    let wrong = lab.host_of(ScenarioKind::WrongPassword).unwrap().clone();
    let denied = py(&wrong, &lab.password, "login");
    assert!(
        String::from_utf8_lossy(&denied.stdout).contains("DENIED"),
        "{}{}",
        String::from_utf8_lossy(&denied.stdout),
        String::from_utf8_lossy(&denied.stderr)
    );
    // A port-closed host answers neither WinRM nor SMB.
    let closed = lab.host_of(ScenarioKind::PortClosed).unwrap().clone();
    assert!(!accepts(closed.address, lab.winrm_port()));
    assert!(!accepts(closed.address, lab.smb_port()));
}
