//! Validation of the report values that reach a remote command line.
//!
//! Every value `contain` puts on a host's command line comes from a checker report,
//! i.e. from a host that is presumed compromised. Nothing is escaped "well enough":
//! a value is either of a strict, expected shape (a drive path, a decimal PID, a
//! value name under one of the Run keys) or the host is refused with the reason. The
//! shapes are those `docs/contain.md` lists; quoting happens afterwards, in
//! `commands.rs`, and only ever sees values accepted here.

use crate::transport::{self, Shell};

/// How a host is reached, which decides the rules for its paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    /// A `cmd.exe` transport: cmd.exe command lines, drive paths, the registry, Windows
    /// Firewall.
    Windows,
    /// A POSIX shell transport: sh command lines, absolute paths, /proc.
    Posix,
}

impl Platform {
    /// The platform of a transport's shell.
    pub fn of_shell(shell: Shell) -> Platform {
        match shell {
            Shell::Cmd => Platform::Windows,
            Shell::Posix => Platform::Posix,
        }
    }

    /// The platform of a transport named in the journal (an unknown name is POSIX).
    pub fn of_transport(t: &str) -> Platform {
        transport::by_name(t).map_or(Platform::Posix, |t| Platform::of_shell(t.shell()))
    }
}

/// The registry root a Run key lives under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hive {
    /// `HKEY_CURRENT_USER`: on a remote session that is *our* account's hive, not the
    /// infected user's, so the value is looked for under every loaded user's
    /// `HKEY_USERS\<SID>`.
    CurrentUser,
    LocalMachine,
}

/// A Run-key value the report names, split and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunValue {
    pub hive: Hive,
    /// The key below the hive, in its canonical spelling
    /// (`Software\Microsoft\Windows\CurrentVersion\Run` or `...\RunOnce`).
    pub key: String,
    /// The value name (the last component of the report's key).
    pub name: String,
}

/// The Run keys a report may name (below HKCU or HKLM), canonical spelling.
const RUN_KEYS: [&str; 4] = [
    r"Software\Microsoft\Windows\CurrentVersion\Run",
    r"Software\Microsoft\Windows\CurrentVersion\RunOnce",
    r"Software\WOW6432Node\Microsoft\Windows\CurrentVersion\Run",
    r"Software\WOW6432Node\Microsoft\Windows\CurrentVersion\RunOnce",
];

/// The trees below a Windows drive (`X:\`) that contain may act in at all: where
/// user-level malware lives (profiles, `ProgramData`, the system temp directory).
/// Everything else (the drive's root, `Windows`, `Program Files`, ...) is a system
/// tree: a report naming a file there is refused, whatever the file is called.
/// Lower case; compared case-insensitively, component by component.
const WINDOWS_ALLOWED: [&[&str]; 3] = [&["users"], &["programdata"], &["windows", "temp"]];

/// Profiles under `Users` that are not a user's own: the template of new profiles and
/// the junctions Windows keeps for old programs.
const WINDOWS_NOT_PROFILES: [&str; 3] = ["default", "default user", "all users"];

/// `ProgramData` subtrees that belong to the system or to us: Windows' and Defender's
/// data, OpenSSH's host keys and `administrators_authorized_keys`, and pushscan's own
/// quarantine.
const WINDOWS_PROGRAMDATA_DENIED: [&str; 3] = ["microsoft", "ssh", "pushscan"];

/// The POSIX trees contain may act in at all: home directories and the world-writable
/// temporary directories. Everything else (`/usr`, `/usr/local`, `/etc`, `/opt`,
/// `/lib*`, `/var/lib`, ...) is a system tree, and `/proc`, `/sys` and `/dev` are
/// kernel file systems where a path names something else than it says
/// (`/proc/self/root/etc/x` is `/etc/x`).
const POSIX_ALLOWED: [&str; 4] = ["/home/", "/root/", "/tmp/", "/var/tmp/"];

/// The kernel's file systems, named in the refusal.
const POSIX_KERNEL: [&str; 3] = ["/proc/", "/sys/", "/dev/"];

/// Components no path may go through on either platform, in an allowed tree too: a
/// user's SSH and GnuPG keys (deleting `authorized_keys` can lock the operators out,
/// or lock an attacker's key in when it is ours that goes).
const KEY_DIRS: [&str; 2] = [".ssh", ".gnupg"];

/// File names refused everywhere (lower case for Windows): SSH's authorized keys, and
/// on Windows the registry hives of a profile.
const KEY_FILES: [&str; 3] = [
    "authorized_keys",
    "authorized_keys2",
    "administrators_authorized_keys",
];

fn shown(s: &str) -> String {
    crate::sanitize::display(s, 200)
}

/// A Windows drive path to a file: `X:\dir\file`, nothing cmd.exe could expand or
/// end a quoted string with, no wildcard (`del` would take every match), no `..`,
/// no UNC or device path, no alternate data stream, no 8.3 short name, and inside a
/// tree contain may act in ([`WINDOWS_ALLOWED`]). The host checks again, in the
/// command that acts, that no component is a link or junction (`commands::win`).
pub fn windows_path(p: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("image path {} refused: {why}", shown(p)));
    let b = p.as_bytes();
    if p.len() > 260 {
        return bad("longer than 260 characters");
    }
    if b.len() < 4 || !b[0].is_ascii_alphabetic() || b[1] != b':' || b[2] != b'\\' {
        return bad("not a drive path (X:\\...)");
    }
    if let Some(c) = p.chars().find(|c| {
        matches!(
            c,
            '"' | '%' | '!' | '^' | '&' | '|' | '<' | '>' | '*' | '?' | '/'
        ) || c.is_control()
            || matches!(*c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }) {
        return bad(&format!("contains {c:?}"));
    }
    if p[2..].contains(':') {
        return bad("contains ':' after the drive (alternate data stream)");
    }
    let comps: Vec<&str> = p[3..].split('\\').collect();
    for c in &comps {
        if c.is_empty() {
            return bad("empty path component (\\\\ or a trailing \\)");
        }
        if *c == "." || *c == ".." {
            return bad("'.' or '..' component");
        }
        if c.ends_with('.') || c.ends_with(' ') {
            return bad("a component ends with '.' or a blank (Windows would strip it)");
        }
    }
    windows_tree(&comps).or_else(|why| bad(&why))
}

/// Whether the components below the drive lie in a tree contain may act in (see
/// [`WINDOWS_ALLOWED`]); the reason when not.
fn windows_tree(comps: &[&str]) -> Result<(), String> {
    let lower: Vec<String> = comps.iter().map(|c| c.to_lowercase()).collect();
    // An 8.3 short name (`PROGRA~1`, `MICROS~1`) names a long name the checks below
    // would not see: refused anywhere in the path.
    if let Some(c) = comps.iter().find(|c| short_name(c)) {
        return Err(format!(
            "component {} looks like an 8.3 short name (~N), which hides the real name",
            shown(c)
        ));
    }
    if let Some(c) = lower.iter().find(|c| KEY_DIRS.contains(&c.as_str())) {
        return Err(format!("in a protected place ({c}: keys)"));
    }
    let file = lower.last().map(String::as_str).unwrap_or_default();
    if KEY_FILES.contains(&file) || file.starts_with("ntuser.") || file.starts_with("usrclass.dat")
    {
        return Err("a protected file (keys or a registry hive)".into());
    }
    let outside = || {
        Err(r"in a system directory: contain acts only under \Users\<user>, \ProgramData and \Windows\Temp".to_string())
    };
    // A file below the tree; below `Users`, below a profile.
    let Some(tree) = WINDOWS_ALLOWED.iter().find(|t| {
        let depth = if t[0] == "users" { 2 } else { t.len() };
        lower.len() > depth && t.iter().zip(&lower).all(|(a, b)| *a == b.as_str())
    }) else {
        return outside();
    };
    match tree[0] {
        "users" if WINDOWS_NOT_PROFILES.contains(&lower[1].as_str()) => Err(format!(
            "in {}, which is not a user's profile",
            shown(comps[1])
        )),
        "programdata" if WINDOWS_PROGRAMDATA_DENIED.contains(&lower[1].as_str()) => Err(format!(
            r"in \ProgramData\{}, which belongs to the system or to pushscan",
            shown(comps[1])
        )),
        _ => Ok(()),
    }
}

/// `NAME~N...`: the shape of an 8.3 short name.
fn short_name(c: &str) -> bool {
    c.char_indices()
        .any(|(i, ch)| ch == '~' && c[i + 1..].starts_with(|d: char| d.is_ascii_digit()))
}

/// An absolute POSIX path to a file: no control character, no `.`/`..` or empty
/// component, inside a tree contain may act in ([`POSIX_ALLOWED`]), not a key file.
/// The host checks again, in the command that acts, that the path is its own final
/// form (no symbolic link on the way, `commands::posix::guarded`).
pub fn posix_path(p: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("image path {} refused: {why}", shown(p)));
    if p.len() > 4096 {
        return bad("longer than 4096 bytes");
    }
    if !p.starts_with('/') {
        return bad("not an absolute path");
    }
    if let Some(c) = p.chars().find(|c| c.is_control()) {
        return bad(&format!("contains {c:?}"));
    }
    for c in p[1..].split('/') {
        if c.is_empty() {
            return bad("empty path component (// or a trailing /)");
        }
        if c == "." || c == ".." {
            return bad("'.' or '..' component");
        }
    }
    posix_tree(p).or_else(|why| bad(&why))
}

/// Whether `p` (absolute, already free of `.`, `..` and empty components) lies in a
/// tree contain may act in (see [`POSIX_ALLOWED`]); the reason when not.
fn posix_tree(p: &str) -> Result<(), String> {
    if POSIX_KERNEL.iter().any(|k| p.starts_with(k)) {
        return Err("in a kernel file system (/proc, /sys, /dev): not a file on disk".into());
    }
    let comps: Vec<&str> = p[1..].split('/').collect();
    if let Some(c) = comps.iter().find(|c| KEY_DIRS.contains(c)) {
        return Err(format!("in a protected place ({c}: keys)"));
    }
    if comps.last().is_some_and(|f| KEY_FILES.contains(f)) {
        return Err("a protected file (SSH authorized keys)".into());
    }
    // `/home/<user>/...` needs a file below the user's directory.
    let below = |t: &str| {
        p.strip_prefix(t)
            .is_some_and(|r| t != "/home/" || r.contains('/'))
    };
    if POSIX_ALLOWED.iter().any(|t| below(t)) {
        Ok(())
    } else {
        Err("in a system directory: contain acts only under /home, /root, /tmp and /var/tmp".into())
    }
}

/// The image path under the host's rules.
pub fn image_path(platform: Platform, p: &str) -> Result<(), String> {
    match platform {
        Platform::Windows => windows_path(p),
        Platform::Posix => posix_path(p),
    }
}

/// A PID we may act on: present (the parser keeps only decimal numbers that fit a
/// u32), and not the kernel's own (Windows 0/4, POSIX 0/1).
pub fn pid(platform: Platform, pid: Option<u32>) -> Result<u32, String> {
    let Some(p) = pid else {
        return Err("the report gives no usable PID (missing or not a decimal number)".into());
    };
    let reserved: &[u32] = match platform {
        Platform::Windows => &[0, 4],
        Platform::Posix => &[0, 1],
    };
    if reserved.contains(&p) {
        return Err(format!("PID {p} is a system process"));
    }
    Ok(p)
}

/// A report's registry key: under HKCU or HKLM, one of the Run/RunOnce keys, then
/// the value name (no `\`, nothing cmd.exe expands or ends a quoted string with).
pub fn run_key(key: &str) -> Result<RunValue, String> {
    let bad = |why: &str| Err(format!("registry key {} refused: {why}", shown(key)));
    if key.len() > 1024 {
        return bad("too long");
    }
    let Some((root, rest)) = key.split_once('\\') else {
        return bad("not a registry path");
    };
    let hive = match root.to_ascii_uppercase().as_str() {
        "HKEY_CURRENT_USER" | "HKCU" => Hive::CurrentUser,
        "HKEY_LOCAL_MACHINE" | "HKLM" => Hive::LocalMachine,
        _ => return bad("not under HKEY_CURRENT_USER or HKEY_LOCAL_MACHINE"),
    };
    let Some((sub, name)) = rest.rsplit_once('\\') else {
        return bad("no value name after the key");
    };
    let Some(canon) = RUN_KEYS.iter().find(|k| k.eq_ignore_ascii_case(sub)) else {
        return bad("not a Run or RunOnce key");
    };
    if name.is_empty() || name.len() > 255 {
        return bad("empty or over-long value name");
    }
    if let Some(c) = name.chars().find(|c| {
        matches!(c, '\\' | '"' | '%' | '!') || c.is_control()
            || matches!(*c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }) {
        return bad(&format!("value name contains {c:?}"));
    }
    if name.trim() != name {
        return bad("value name starts or ends with a blank");
    }
    Ok(RunValue {
        hive,
        key: canon.to_string(),
        name: name.to_string(),
    })
}

/// A user SID as `reg query HKU` lists it: `S-1-5-21-` then digits and dashes
/// (the `_Classes` hives and the service accounts are not users' Run keys).
pub fn user_sid(s: &str) -> bool {
    s.len() <= 184
        && s.strip_prefix("S-1-5-21-").is_some_and(|t| {
            !t.is_empty()
                && t.bytes().all(|b| b.is_ascii_digit() || b == b'-')
                && !t.starts_with('-')
                && !t.ends_with('-')
                && !t.contains("--")
        })
}

/// A lower-case SHA-256 hex digest (used in quarantine names).
pub fn sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_paths_hostile_and_fine() {
        for ok in [
            r"C:\Users\tanaka\AppData\Local\wfsrvhost\wfsrvhost.exe",
            r"C:\Users\鈴木\AppData\Local\ソフト\ソフト更新.exe",
            r"d:\Users\a b (x86)\c,d;e=f.exe",
            r"C:\ProgramData\wfsrvhost\wfsrvhost.exe",
            r"C:\ProgramData\wfsrvhost.exe",
            r"C:\Windows\Temp\x.exe",
            r"C:\Users\Public\x.exe",
            r"C:\users\tanaka\AppData\Roaming\Microsoft\Windows\Start Menu\Programs\Startup\x.lnk",
            // Malware masquerades under system names outside the system trees.
            r"C:\Users\tanaka\AppData\Local\svchost.exe",
        ] {
            assert!(windows_path(ok).is_ok(), "{ok}: {:?}", windows_path(ok));
        }
        for bad in [
            r#"C:\a"b.exe"#,
            r"C:\a&b.exe",
            r"C:\%TEMP%\x.exe",
            r"C:\x!y!.exe",
            r"C:\a^b.exe",
            r"C:\a|b.exe",
            r"C:\a<b.exe",
            "C:\\a\r\nb.exe",
            "C:\\a\nb.exe",
            r"\\server\share\x.exe",
            r"\\?\C:\x.exe",
            r"\\.\PhysicalDrive0",
            r"C:\Users\..\Windows\x.exe",
            r"C:\Users\.\x.exe",
            r"x.exe",
            r"Users\x.exe",
            r"C:x.exe",
            r"C:\*.exe",
            r"C:\x?.exe",
            r"C:\x.exe:stream",
            r"C:/Users/x.exe",
            r"C:\Users\",
            r"C:\Users\\x.exe",
            r"C:\Windows\System32\svchost.exe",
            r"C:\WINDOWS\system32\LSASS.EXE",
            "C:\\x\u{202e}exe.txt",
            r"C:\x.exe.",
            // Deny by default: only Users, ProgramData and Windows\Temp.
            r"C:\Windows\explorer.exe",
            r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe",
            r"C:\Windows\SysWOW64\kbdtuq.exe",
            r"C:\Windows\x.exe",
            r"C:\Program Files\App\app.exe",
            r"C:\x.exe",
            r"C:\Users\x.exe",
            r"C:\Windows\Temp",
            r"C:\PROGRA~1\App\app.exe",
            r"C:\Users\tanaka\APPDAT~1\x.exe",
            r"C:\Users\Default\x.exe",
            r"C:\Users\All Users\Microsoft\x.exe",
            r"C:\ProgramData\Microsoft\Windows Defender\x.exe",
            r"C:\ProgramData\ssh\administrators_authorized_keys",
            r"C:\ProgramData\pushscan\quarantine\x.quarantine",
            r"C:\Users\tanaka\.ssh\authorized_keys",
            r"C:\Users\tanaka\.ssh\id_ed25519",
            r"C:\Users\tanaka\NTUSER.DAT",
        ] {
            assert!(windows_path(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn posix_paths_hostile_and_fine() {
        for ok in [
            "/tmp/pushscan/x/evil",
            "/home/a b/ソフト",
            "/home/u/.config/x/evil",
            "/root/.cache/evil",
            "/var/tmp/evil",
            "/tmp/.ssh-not/evil",
        ] {
            assert!(posix_path(ok).is_ok(), "{ok}: {:?}", posix_path(ok));
        }
        for bad in [
            "evil",
            "./evil",
            "/tmp/../bin/sh",
            "/tmp/./x",
            "/tmp//x",
            "/tmp/x/",
            "/tmp/a\nb",
            "/tmp/a\0b",
            "/usr/bin/sleep",
            "/etc/passwd",
            "/bin/sh",
            // Deny by default: everything outside /home, /root, /tmp, /var/tmp.
            "/proc/self/root/etc/x",
            "/proc/1/exe",
            "/sys/kernel/x",
            "/dev/shm/evil",
            "/usr/local/bin/x",
            "/usr/lib64/x",
            "/opt/app/x",
            "/var/lib/pushscan/quarantine/x.quarantine",
            "/home/u",
            "/homex/u/x",
            "/tmp",
            "/home/u/.ssh/authorized_keys",
            "/root/.ssh/id_ed25519",
            "/home/u/.gnupg/x",
            "/tmp/x/authorized_keys",
        ] {
            assert!(posix_path(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn pids() {
        assert_eq!(pid(Platform::Windows, Some(4312)), Ok(4312));
        assert!(pid(Platform::Windows, None).is_err());
        assert!(pid(Platform::Windows, Some(4)).is_err());
        assert!(pid(Platform::Posix, Some(1)).is_err());
        assert_eq!(pid(Platform::Posix, Some(4)), Ok(4));
    }

    #[test]
    fn run_keys() {
        let v =
            run_key(r"HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Run\wfsrvhost")
                .unwrap();
        assert_eq!(v.hive, Hive::CurrentUser);
        assert_eq!(v.key, r"Software\Microsoft\Windows\CurrentVersion\Run");
        assert_eq!(v.name, "wfsrvhost");
        let v =
            run_key(r"HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\RunOnce\ソフト a&b").unwrap();
        assert_eq!(v.hive, Hive::LocalMachine);
        assert_eq!(v.key, r"Software\Microsoft\Windows\CurrentVersion\RunOnce");
        assert_eq!(v.name, "ソフト a&b");
        for bad in [
            r"HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Policies\x",
            r"HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Run",
            r"HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Run\",
            r"HKEY_USERS\S-1-5-21-1\Software\Microsoft\Windows\CurrentVersion\Run\x",
            r"HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Run\a\b",
            r#"HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Run\a"b"#,
            r"HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Run\%x%",
            r"HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Run\x!",
            "HKEY_CURRENT_USER\\Software\\Microsoft\\Windows\\CurrentVersion\\Run\\a\nb",
            r"HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Run\..\..\Winlogon",
            "wfsrvhost",
        ] {
            assert!(run_key(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn sids() {
        assert!(user_sid("S-1-5-21-1004336348-1177238915-682003330-1001"));
        assert!(!user_sid(
            "S-1-5-21-1004336348-1177238915-682003330-1001_Classes"
        ));
        assert!(!user_sid("S-1-5-18"));
        assert!(!user_sid("S-1-5-21-"));
        assert!(!user_sid("S-1-5-21-1\" & calc"));
    }
}
