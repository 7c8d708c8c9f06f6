//! Validation of the report values that reach a remote command line.
//!
//! Every value `contain` puts on a host's command line comes from a checker report,
//! i.e. from a host that is presumed compromised. Nothing is escaped "well enough":
//! a value is either of a strict, expected shape (a drive path, a decimal PID, a
//! value name under one of the Run keys) or the host is refused with the reason. The
//! shapes are those of `notes/contain-contract.md`; quoting happens afterwards, in
//! `commands.rs`, and only ever sees values accepted here.

/// How a host is reached, which decides the rules for its paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    /// WinRM: cmd.exe command lines, drive paths, the registry, Windows Firewall.
    Windows,
    /// SSH or local: POSIX sh command lines, absolute paths, /proc.
    Posix,
}

impl Platform {
    /// The platform of a journal transport name (`winrm`, `ssh`, `local`).
    pub fn of_transport(t: &str) -> Platform {
        if t.eq_ignore_ascii_case("winrm") {
            Platform::Windows
        } else {
            Platform::Posix
        }
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

/// Windows system binaries that no report may make us kill or delete: a forged or
/// mistaken report naming one of them would take the host down.
const WINDOWS_PROTECTED: [&str; 12] = [
    "svchost.exe",
    "lsass.exe",
    "csrss.exe",
    "winlogon.exe",
    "services.exe",
    "smss.exe",
    "wininit.exe",
    "explorer.exe",
    "cmd.exe",
    "powershell.exe",
    "wsmprovhost.exe",
    "certutil.exe",
];

/// POSIX directories whose files a report may not make us delete (system binaries,
/// libraries, configuration): a wrong report must not break the host or our access.
const POSIX_PROTECTED: [&str; 10] = [
    "/bin/",
    "/sbin/",
    "/usr/bin/",
    "/usr/sbin/",
    "/lib/",
    "/lib64/",
    "/usr/lib/",
    "/usr/libexec/",
    "/etc/",
    "/boot/",
];

fn shown(s: &str) -> String {
    crate::sanitize::display(s, 200)
}

/// A Windows drive path to a file: `X:\dir\file`, nothing cmd.exe could expand or
/// end a quoted string with, no wildcard (`del` would take every match), no `..`,
/// no UNC or device path, no alternate data stream, no system binary.
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
    let file = comps
        .last()
        .copied()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let dir = comps[..comps.len() - 1].join("\\").to_ascii_lowercase();
    if (dir == r"windows\system32" || dir == r"windows\syswow64")
        && WINDOWS_PROTECTED.contains(&file.as_str())
    {
        return bad("a Windows system binary");
    }
    Ok(())
}

/// An absolute POSIX path to a file: no control character, no `.`/`..` or empty
/// component, not in a system directory.
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
    if POSIX_PROTECTED.iter().any(|d| p.starts_with(d)) {
        return bad("in a system directory");
    }
    Ok(())
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
            r"d:\a b (x86)\c,d;e=f.exe",
            r"C:\Windows\SysWOW64\kbdtuq.exe",
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
        ] {
            assert!(windows_path(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn posix_paths_hostile_and_fine() {
        assert!(posix_path("/tmp/pushscan/x/evil").is_ok());
        assert!(posix_path("/home/a b/ソフト").is_ok());
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
