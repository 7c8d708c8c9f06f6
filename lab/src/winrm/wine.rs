//! Wine hosts in the WinRM simulator: what runs for real in Wine and what the simulator
//! emulates because Wine's program is a stub.
//!
//! On a Wine host every command line of a shell is handed byte for byte to Wine's real
//! `cmd.exe /c` inside the host's WINEPREFIX (through the lab's `launch.exe`, see
//! `lab/wine/launch.c`; the shell in `shell.rs` runs it). Wine's `tasklist`, `netsh`,
//! `powershell` and `certutil` print nothing and exit 0, which would read as success to a
//! client, so lines whose program is one of those never reach Wine: [`classify`] recognises
//! the few shapes of `docs/lab-wine.md` (the contract of `pushscan contain`) and the simulator
//! answers them itself; any other line naming a stub is refused with exit 1 and a message
//! saying it is not emulated. Emulated (NOT proven on Windows):
//!
//! * the PowerShell process check (`Get-CimInstance Win32_Process -Filter 'ProcessId=N'`),
//!   answered from `pslist.exe` (Toolhelp32) run inside the prefix;
//! * `netsh advfirewall firewall add|show|delete rule name=...`, kept in a per-host rule store
//!   (`firewall.json` in the host directory) and printed in Windows' formats;
//! * `certutil -hashfile "PATH" SHA256|SHA384|SHA512`, hashed from the prefix's files;
//! * any line running `icacls` (pushscan's work-directory proof), run whole by the
//!   simulator's cmd subset on the prefix's drive_c: Wine has no ACLs, its `icacls` prints
//!   nothing.
//!
//! Everything here reads host-controlled text (command lines from clients, the rule store, the
//! output of programs in the prefix) and treats it as untrusted: bounded, parsed, never
//! executed.

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::cmd;

/// How the simulator reaches one Wine host (part of the serve plan).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WineExec {
    /// `wine64` (Debian: `/usr/lib/wine/wine64`).
    pub wine64: PathBuf,
    /// The host's WINEPREFIX.
    pub prefix: PathBuf,
    /// `launch.exe` (Linux path): runs `cmd.exe /c <PUSHSCAN_LAB_CMDLINE>`.
    pub launch: PathBuf,
    /// `pslist.exe` (Linux path): `PID<TAB>image` per process.
    pub pslist: PathBuf,
    /// The host's firewall rule store (JSON).
    pub firewall_store: PathBuf,
    /// Scratch directory for exit-code files.
    pub run_dir: PathBuf,
    /// The Windows user whose profile the prefix has (`USER` for Wine).
    pub user: String,
    /// Further environment for every Wine process (`WINEPREFIX`, `WINEDEBUG`, the lab marker).
    pub env: Vec<(String, String)>,
}

impl WineExec {
    /// `drive_c` of the prefix.
    pub fn drive_c(&self) -> PathBuf {
        self.prefix.join("drive_c")
    }
}

/// Most bytes read from a program of the prefix that the simulator parses itself.
pub const PARSE_CAP: usize = 1 << 20;

/// What the simulator does with a command line on a Wine host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// Hand it to Wine's `cmd /c`.
    Real,
    /// The PowerShell process check for this PID.
    ProcessCheck(u32),
    /// `netsh advfirewall firewall add rule ...`.
    NetshAdd(FirewallRule),
    /// `netsh advfirewall firewall show rule name=N [dir=in|out]`.
    NetshShow { name: String, dir: Option<Dir> },
    /// `netsh advfirewall firewall delete rule name=N [dir=in|out]`.
    NetshDelete { name: String, dir: Option<Dir> },
    /// `certutil -hashfile PATH ALG`.
    Hashfile { path: String, alg: HashAlg },
    /// A line running `icacls` (pushscan's work-directory proof: `mkdir`, `icacls`,
    /// `dir /a /q`, `echo`): Wine has no ACLs and its `icacls` is a stub that prints nothing,
    /// so the whole line is run by the simulator's own cmd subset on the prefix's drive_c,
    /// owners and DACLs from `acl.rs`.
    AclProof,
    /// A line for a program that is a stub in Wine, in a shape the lab does not emulate.
    Refused(String),
}

/// Programs that are stubs in Wine 8 (print nothing, exit 0).
const STUBS: &[&str] = &["tasklist", "netsh", "powershell", "certutil", "wmic"];

/// The PowerShell process check of the contract, with `{PID}` for the PID.
const PROCESS_CHECK: &str = "-NoProfile -NonInteractive -Command \"$p = Get-CimInstance \
     Win32_Process -Filter 'ProcessId={PID}'; if ($p) { 'PID=' + $p.ProcessId; 'PATH=' + \
     $p.ExecutablePath } else { 'GONE' }\"";

/// Strips `cmd /c` / `cmd.exe /c` (any number, any case) in front of a line, as cmd would run
/// the rest.
fn strip_cmd_c(mut line: &str) -> &str {
    loop {
        let t = line.trim();
        let (program, rest) = cmd::split_program(t);
        let Some(program) = program else {
            return t;
        };
        let name = cmd::command_name(&program);
        if name != "cmd" && name != "cmd.exe" {
            return t;
        }
        let r = rest.trim_start();
        let lower = r.to_ascii_lowercase();
        if !(lower.starts_with("/c ") || lower.starts_with("/c\t")) {
            return t;
        }
        let inner = r[2..].trim();
        // `cmd /c "line"`: cmd strips the first and the last quote.
        line = match inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            Some(s) => s,
            None => inner,
        };
    }
}

/// Decides what to do with `line` on a Wine host (see the module doc).
pub fn classify(line: &str) -> Shape {
    let line = strip_cmd_c(line);
    let runs_icacls = cmd::split_line(line).is_ok_and(|segs| {
        segs.iter().any(|s| {
            let (program, _) = cmd::split_program(&s.text);
            program
                .is_some_and(|p| matches!(cmd::command_name(&p).as_str(), "icacls" | "icacls.exe"))
        })
    });
    if runs_icacls {
        return Shape::AclProof;
    }
    let (program, rest) = cmd::split_program(line);
    let Some(program) = program else {
        return Shape::Real;
    };
    let name = cmd::command_name(&program);
    let base = name.strip_suffix(".exe").unwrap_or(&name);
    if !STUBS.contains(&base) {
        return Shape::Real;
    }
    let refuse = || {
        Shape::Refused(format!(
            "pushscan-lab: `{base}` is a stub in Wine and this command line is not one the lab \
             emulates (see docs/lab-wine.md): {}",
            line.chars().take(200).collect::<String>()
        ))
    };
    match base {
        "powershell" => process_check_pid(rest).map_or_else(refuse, Shape::ProcessCheck),
        "netsh" => parse_netsh(rest).unwrap_or_else(refuse),
        "certutil" => parse_hashfile(rest).unwrap_or_else(refuse),
        _ => refuse(),
    }
}

fn process_check_pid(rest: &str) -> Option<u32> {
    let start = rest.find("ProcessId=")? + "ProcessId=".len();
    let digits: String = rest[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    if digits.is_empty() || digits.len() > 10 {
        return None;
    }
    let pid: u32 = digits.parse().ok()?;
    (rest.trim() == PROCESS_CHECK.replace("{PID}", &digits)).then_some(pid)
}

/// Direction of a firewall rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dir {
    In,
    Out,
}

impl Dir {
    fn parse(s: &str) -> Option<Dir> {
        match s.to_ascii_lowercase().as_str() {
            "in" => Some(Dir::In),
            "out" => Some(Dir::Out),
            _ => None,
        }
    }
    fn shown(self) -> &'static str {
        match self {
            Dir::In => "In",
            Dir::Out => "Out",
        }
    }
}

/// One rule of a host's emulated Windows Firewall.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallRule {
    pub name: String,
    pub dir: Dir,
    /// `block` or `allow`.
    pub action: String,
    /// As given (Windows would normalise single addresses to `/32`).
    pub remoteip: String,
    /// As given (`any`, or a list of domain/private/public).
    pub profile: String,
    pub enable: bool,
}

fn keyvals(tokens: &[String]) -> Option<Vec<(String, String)>> {
    tokens
        .iter()
        .map(|t| {
            let (k, v) = t.split_once('=')?;
            Some((k.to_ascii_lowercase(), v.to_string()))
        })
        .collect()
}

fn parse_netsh(rest: &str) -> Option<Shape> {
    let args = cmd::split_rest(rest);
    let lower: Vec<String> = args.iter().map(|a| a.to_ascii_lowercase()).collect();
    if lower.len() < 5 || lower[0] != "advfirewall" || lower[1] != "firewall" || lower[3] != "rule"
    {
        return None;
    }
    let kv = keyvals(&args[4..])?;
    let get = |k: &str| kv.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let name = get("name").filter(|n| valid_text(n))?;
    match lower[2].as_str() {
        "add" => {
            let known = ["name", "dir", "action", "remoteip", "profile", "enable"];
            if kv.iter().any(|(k, _)| !known.contains(&k.as_str())) || kv.len() != known.len() {
                return None;
            }
            let action = get("action")?.to_ascii_lowercase();
            let enable = match get("enable")?.to_ascii_lowercase().as_str() {
                "yes" => true,
                "no" => false,
                _ => return None,
            };
            let remoteip = get("remoteip").filter(|r| valid_ranges(r))?;
            let profile = get("profile")?.to_ascii_lowercase();
            let profile_ok = profile == "any"
                || profile
                    .split(',')
                    .all(|p| matches!(p, "domain" | "private" | "public"));
            if !matches!(action.as_str(), "block" | "allow") || !profile_ok {
                return None;
            }
            Some(Shape::NetshAdd(FirewallRule {
                name,
                dir: Dir::parse(&get("dir")?)?,
                action,
                remoteip,
                profile,
                enable,
            }))
        }
        "show" | "delete" => {
            if kv.iter().any(|(k, _)| k != "name" && k != "dir") {
                return None;
            }
            let dir = match get("dir") {
                Some(d) => Some(Dir::parse(&d)?),
                None => None,
            };
            Some(if lower[2] == "show" {
                Shape::NetshShow { name, dir }
            } else {
                Shape::NetshDelete { name, dir }
            })
        }
        _ => None,
    }
}

fn valid_text(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && !s.chars().any(char::is_control)
}

/// `a.b.c.d` or `a.b.c.d-e.f.g.h` (or `/n`), comma-separated.
fn valid_ranges(s: &str) -> bool {
    s.len() <= 4096
        && s.split(',').all(|part| {
            let ip = |x: &str| x.parse::<std::net::Ipv4Addr>().is_ok();
            match part.split_once('-') {
                Some((a, b)) => ip(a) && ip(b),
                None => match part.split_once('/') {
                    Some((a, n)) => ip(a) && n.parse::<u8>().is_ok_and(|n| n <= 32),
                    None => ip(part) || part.eq_ignore_ascii_case("any"),
                },
            }
        })
}

/// Hash algorithm of `certutil -hashfile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlg {
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    fn name(self) -> &'static str {
        match self {
            HashAlg::Sha256 => "SHA256",
            HashAlg::Sha384 => "SHA384",
            HashAlg::Sha512 => "SHA512",
        }
    }
}

fn parse_hashfile(rest: &str) -> Option<Shape> {
    let args = cmd::split_rest(rest);
    if args.len() < 2 || args.len() > 3 || !args[0].eq_ignore_ascii_case("-hashfile") {
        return None;
    }
    let alg = match args.get(2).map(|a| a.to_ascii_uppercase()).as_deref() {
        Some("SHA256") => HashAlg::Sha256,
        Some("SHA384") => HashAlg::Sha384,
        Some("SHA512") => HashAlg::Sha512,
        // Windows' default is SHA1 (and MD5 is a choice): the lab does not emulate those.
        _ => return None,
    };
    valid_text(&args[1]).then(|| Shape::Hashfile {
        path: args[1].clone(),
        alg,
    })
}

/// A `C:\...` path inside the prefix, resolved case-insensitively one component at a time as
/// Wine does (None: not a `C:` path, a `.`/`..` component, or a missing component).
pub fn resolve_in_prefix(drive_c: &Path, win_path: &str) -> Option<PathBuf> {
    let rest = win_path
        .strip_prefix("C:\\")
        .or_else(|| win_path.strip_prefix("c:\\"))?;
    let mut out = drive_c.to_path_buf();
    for part in rest.split('\\').filter(|p| !p.is_empty()) {
        if part == "." || part == ".." || part.contains(['/', '\0']) {
            return None;
        }
        let exact = out.join(part);
        if fs::symlink_metadata(&exact).is_ok() {
            out = exact;
            continue;
        }
        let lower = part.to_lowercase();
        let found = fs::read_dir(&out)
            .ok()?
            .flatten()
            .find(|e| e.file_name().to_string_lossy().to_lowercase() == lower)?;
        out = found.path();
    }
    Some(out)
}

/// `certutil -hashfile` as Windows prints it: (stdout, stderr, exit code).
pub fn hashfile(drive_c: &Path, path: &str, alg: HashAlg) -> (Vec<u8>, Vec<u8>, i32) {
    let file = resolve_in_prefix(drive_c, path)
        .filter(|p| p.is_file())
        .and_then(|p| fs::File::open(p).ok());
    let Some(mut file) = file else {
        return (
            b"CertUtil: -hashfile command FAILED: 0x80070002 (WIN32: 2 ERROR_FILE_NOT_FOUND)\r\n\
              CertUtil: The system cannot find the file specified.\r\n"
                .to_vec(),
            Vec::new(),
            0x8007_0002_u32 as i32,
        );
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut sha256 = sha2::Sha256::new();
    let mut sha384 = sha2::Sha384::new();
    let mut sha512 = sha2::Sha512::new();
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => match alg {
                HashAlg::Sha256 => sha256.update(&buf[..n]),
                HashAlg::Sha384 => sha384.update(&buf[..n]),
                HashAlg::Sha512 => sha512.update(&buf[..n]),
            },
            Err(_) => {
                return (
                    b"CertUtil: -hashfile command FAILED: 0x80070005 (WIN32: 5 ERROR_ACCESS_DENIED)\r\n\
                      CertUtil: Access is denied.\r\n"
                        .to_vec(),
                    Vec::new(),
                    0x8007_0005_u32 as i32,
                )
            }
        }
    }
    let digest = match alg {
        HashAlg::Sha256 => hex::encode(sha256.finalize()),
        HashAlg::Sha384 => hex::encode(sha384.finalize()),
        HashAlg::Sha512 => hex::encode(sha512.finalize()),
    };
    let out = format!(
        "{} hash of {path}:\r\n{digest}\r\nCertUtil: -hashfile command completed successfully.\r\n",
        alg.name()
    );
    (out.into_bytes(), Vec::new(), 0)
}

/// One line of `pslist.exe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WinProcess {
    /// The Windows PID (wineserver's numbering).
    pub pid: u32,
    /// Full image path (`C:\...`), or the file name when the path could not be read.
    pub image: String,
}

/// Parses `pslist.exe` output (`PID<TAB>image` lines, CRLF); malformed lines are skipped.
pub fn parse_pslist(out: &[u8]) -> Vec<WinProcess> {
    let text = String::from_utf8_lossy(&out[..out.len().min(PARSE_CAP)]);
    text.lines()
        .filter_map(|l| {
            let (pid, image) = l.trim_end_matches('\r').split_once('\t')?;
            Some(WinProcess {
                pid: pid.trim().parse().ok()?,
                image: image.chars().filter(|c| !c.is_control()).collect(),
            })
        })
        .collect()
}

/// The answer to the PowerShell process check from a process list.
pub fn process_check_output(procs: &[WinProcess], pid: u32) -> Vec<u8> {
    match procs.iter().find(|p| p.pid == pid) {
        Some(p) => format!("PID={}\r\nPATH={}\r\n", p.pid, p.image).into_bytes(),
        None => b"GONE\r\n".to_vec(),
    }
}

/// Reads a host's rule store (missing: no rules; unreadable or invalid: an error text).
pub fn load_rules(store: &Path) -> Result<Vec<FirewallRule>, String> {
    match fs::read(store) {
        Ok(bytes) if bytes.len() <= PARSE_CAP => serde_json::from_slice(&bytes)
            .map_err(|e| format!("{}: not a rule store: {e}", store.display())),
        Ok(_) => Err(format!("{}: rule store too large", store.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("{}: {e}", store.display())),
    }
}

fn save_rules(store: &Path, rules: &[FirewallRule]) -> Result<(), String> {
    let tmp = store.with_extension("tmp");
    let text = serde_json::to_vec_pretty(rules).map_err(|e| e.to_string())?;
    fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    fs::rename(&tmp, store).map_err(|e| format!("{}: {e}", store.display()))
}

/// Serialises rule-store updates of this process (the simulator serves all hosts).
static STORE_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

const NO_MATCH: &[u8] = b"No rules match the specified criteria.\r\n";

fn matches(rule: &FirewallRule, name: &str, dir: Option<Dir>) -> bool {
    // Windows compares rule names case-insensitively.
    rule.name.eq_ignore_ascii_case(name) && dir.is_none_or(|d| d == rule.dir)
}

/// Runs an emulated netsh shape against `store`: (stdout, stderr, exit code).
pub fn netsh(store: &Path, shape: &Shape) -> (Vec<u8>, Vec<u8>, i32) {
    let _guard = STORE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let mut rules = match load_rules(store) {
        Ok(r) => r,
        Err(e) => return (Vec::new(), format!("{e}\r\n").into_bytes(), 1),
    };
    match shape {
        Shape::NetshAdd(rule) => {
            rules.push(rule.clone());
            match save_rules(store, &rules) {
                Ok(()) => (b"Ok.\r\n\r\n".to_vec(), Vec::new(), 0),
                Err(e) => (Vec::new(), format!("{e}\r\n").into_bytes(), 1),
            }
        }
        Shape::NetshShow { name, dir } => {
            let shown: Vec<&FirewallRule> =
                rules.iter().filter(|r| matches(r, name, *dir)).collect();
            if shown.is_empty() {
                return (NO_MATCH.to_vec(), Vec::new(), 1);
            }
            let mut out = String::new();
            for r in shown {
                out.push_str(&show_block(r));
            }
            out.push_str("\r\nOk.\r\n");
            (out.into_bytes(), Vec::new(), 0)
        }
        Shape::NetshDelete { name, dir } => {
            let before = rules.len();
            rules.retain(|r| !matches(r, name, *dir));
            let deleted = before - rules.len();
            if deleted == 0 {
                return (NO_MATCH.to_vec(), Vec::new(), 1);
            }
            match save_rules(store, &rules) {
                Ok(()) => (
                    format!("\r\nDeleted {deleted} rule(s).\r\nOk.\r\n").into_bytes(),
                    Vec::new(),
                    0,
                ),
                Err(e) => (Vec::new(), format!("{e}\r\n").into_bytes(), 1),
            }
        }
        _ => (Vec::new(), b"not a netsh shape\r\n".to_vec(), 1),
    }
}

/// One rule as `netsh advfirewall firewall show rule` prints it.
fn show_block(r: &FirewallRule) -> String {
    let line = |label: &str, value: &str| format!("{:<38}{value}\r\n", format!("{label}:"));
    let profiles = if r.profile == "any" {
        "Domain,Private,Public".to_string()
    } else {
        r.profile
            .split(',')
            .map(|p| {
                let mut c = p.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut out = String::from("\r\n");
    out.push_str(&line("Rule Name", &r.name));
    out.push_str(&"-".repeat(70));
    out.push_str("\r\n");
    out.push_str(&line("Enabled", if r.enable { "Yes" } else { "No" }));
    out.push_str(&line("Direction", r.dir.shown()));
    out.push_str(&line("Profiles", &profiles));
    out.push_str(&line("Grouping", ""));
    out.push_str(&line("LocalIP", "Any"));
    out.push_str(&line("RemoteIP", &r.remoteip));
    out.push_str(&line("Protocol", "Any"));
    out.push_str(&line("Edge traversal", "No"));
    out.push_str(&line(
        "Action",
        if r.action == "block" {
            "Block"
        } else {
            "Allow"
        },
    ));
    out
}

/// `Z:\...` for a Linux path (Wine maps `Z:` to `/`).
pub fn z_path(path: &Path) -> String {
    format!("Z:{}", path.to_string_lossy().replace('/', "\\"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHECK: &str = "powershell.exe -NoProfile -NonInteractive -Command \"$p = \
        Get-CimInstance Win32_Process -Filter 'ProcessId=32'; if ($p) { 'PID=' + $p.ProcessId; \
        'PATH=' + $p.ExecutablePath } else { 'GONE' }\"";

    #[test]
    fn the_contract_shapes_are_recognised() {
        assert_eq!(classify(CHECK), Shape::ProcessCheck(32));
        assert_eq!(
            classify(&format!("cmd /c {CHECK}")),
            Shape::ProcessCheck(32)
        );
        assert!(matches!(
            classify(&CHECK.replace("'GONE'", "'X'")),
            Shape::Refused(_)
        ));
        let add = "netsh advfirewall firewall add rule name=\"pushscan-isolation\" dir=in \
                   action=block remoteip=0.0.0.0-10.0.0.4,10.0.0.6-255.255.255.255 profile=any \
                   enable=yes";
        let Shape::NetshAdd(rule) = classify(add) else {
            panic!("{:?}", classify(add));
        };
        assert_eq!(rule.name, "pushscan-isolation");
        assert_eq!(rule.dir, Dir::In);
        assert_eq!(
            classify("netsh advfirewall firewall show rule name=\"pushscan-isolation\""),
            Shape::NetshShow {
                name: "pushscan-isolation".into(),
                dir: None
            }
        );
        assert!(matches!(
            classify("netsh advfirewall set allprofiles state off"),
            Shape::Refused(_)
        ));
        assert!(matches!(classify("tasklist /v"), Shape::Refused(_)));
        assert_eq!(
            classify("certutil -hashfile \"C:\\a b\\x.exe\" SHA256"),
            Shape::Hashfile {
                path: "C:\\a b\\x.exe".into(),
                alg: HashAlg::Sha256
            }
        );
        assert!(matches!(
            classify("certutil -f -decode a b"),
            Shape::Refused(_)
        ));
        assert_eq!(classify("reg query HKU"), Shape::Real);
        assert_eq!(classify("taskkill /PID 4 /F"), Shape::Real);
    }

    #[test]
    fn netsh_round_trip_in_windows_format() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("firewall.json");
        let show = Shape::NetshShow {
            name: "pushscan-isolation".into(),
            dir: None,
        };
        assert_eq!(netsh(&store, &show), (NO_MATCH.to_vec(), Vec::new(), 1));
        let add = classify(
            "netsh advfirewall firewall add rule name=\"pushscan-isolation\" dir=in \
             action=block remoteip=0.0.0.0-10.0.0.4,10.0.0.6-255.255.255.255 profile=any \
             enable=yes",
        );
        assert_eq!(netsh(&store, &add).0, b"Ok.\r\n\r\n");
        let (out, _, code) = netsh(&store, &show);
        assert_eq!(code, 0);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(
            "\r\nRule Name:                            pushscan-isolation\r\n----------"
        ));
        assert!(text.contains("\r\nDirection:                            In\r\n"));
        assert!(text.contains("Profiles:                             Domain,Private,Public\r\n"));
        assert!(text.contains(
            "RemoteIP:                             0.0.0.0-10.0.0.4,10.0.0.6-255.255.255.255\r\n"
        ));
        assert!(text.ends_with("Action:                               Block\r\n\r\nOk.\r\n"));
        let del = Shape::NetshDelete {
            name: "PUSHSCAN-isolation".into(),
            dir: None,
        };
        assert_eq!(netsh(&store, &del).0, b"\r\nDeleted 1 rule(s).\r\nOk.\r\n");
        assert_eq!(netsh(&store, &del).2, 1);
    }

    #[test]
    fn hashfile_resolves_case_insensitively() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("users/tanaka")).unwrap();
        fs::write(dir.path().join("users/tanaka/x.exe"), b"abc").unwrap();
        let (out, _, code) = hashfile(dir.path(), "C:\\Users\\TANAKA\\X.EXE", HashAlg::Sha256);
        assert_eq!(code, 0);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "SHA256 hash of C:\\Users\\TANAKA\\X.EXE:\r\n\
             ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\r\n\
             CertUtil: -hashfile command completed successfully.\r\n"
        );
        let (_, _, code) = hashfile(dir.path(), "C:\\nope.exe", HashAlg::Sha256);
        assert_eq!(code as u32, 0x8007_0002);
        assert!(resolve_in_prefix(dir.path(), "C:\\users\\..\\x").is_none());
    }

    #[test]
    fn pslist_lines_are_parsed_and_bounded() {
        let procs = parse_pslist(b"32\tC:\\users\\t\\a.exe\r\nbad line\r\n56\tC:\\w\\s.exe\r\n");
        assert_eq!(procs.len(), 2);
        assert_eq!(
            process_check_output(&procs, 32),
            b"PID=32\r\nPATH=C:\\users\\t\\a.exe\r\n"
        );
        assert_eq!(process_check_output(&procs, 33), b"GONE\r\n");
    }
}
