//! The exact remote command lines of each action, and the readers of their output.
//!
//! Windows lines are the shapes listed in `docs/contain.md` (cmd.exe through
//! the host's one WinRM shell); POSIX lines are plain `sh`. Every builder takes values
//! that `validate.rs` accepted and quotes them once more for the shell that runs them
//! (cmd.exe double quotes through `transport::cmd`, `sh_quote` for sh), so a value
//! that slipped past validation would still be a literal, never syntax. Output
//! readers treat everything the host prints as untrusted text.

use crate::transport::cmd;
use crate::transport::sh_quote;

use super::validate::{Hive, RunValue};

/// The name of the Windows Firewall rules isolation adds (and `uncontain` removes).
pub const RULE_NAME: &str = "pushscan-isolation";
/// Where `--quarantine` moves image files on Windows hosts.
pub const WIN_QUARANTINE: &str = r"C:\ProgramData\pushscan\quarantine";
/// Where `--quarantine` moves image files on POSIX hosts.
pub const POSIX_QUARANTINE: &str = "/var/lib/pushscan/quarantine";

/// cmd.exe double quotes around a validated value.
fn q(what: &str, s: &str) -> Result<String, String> {
    cmd::quote_path(what, s).map_err(|e| e.message)
}

/// Windows command lines.
pub mod win {
    use super::*;

    pub fn hash(path: &str) -> Result<String, String> {
        Ok(format!("certutil -hashfile {} SHA256", q("path", path)?))
    }

    /// The process check: the PID's executable path, or `GONE`.
    pub fn process_check(pid: u32) -> String {
        format!(
            "powershell.exe -NoProfile -NonInteractive -Command \"$p = Get-CimInstance Win32_Process -Filter 'ProcessId={pid}'; if ($p) {{ 'PID=' + $p.ProcessId; 'PATH=' + $p.ExecutablePath }} else {{ 'GONE' }}\""
        )
    }

    pub fn kill(pid: u32) -> String {
        format!("taskkill /PID {pid} /F")
    }

    pub fn delete(path: &str) -> Result<String, String> {
        Ok(format!("del /f /q {}", q("path", path)?))
    }

    pub fn exists(path: &str) -> Result<String, String> {
        let p = q("path", path)?;
        Ok(format!("if exist {p} (echo PRESENT) else (echo ABSENT)"))
    }

    pub fn quarantine_dir() -> String {
        format!("mkdir \"{WIN_QUARANTINE}\"")
    }

    pub fn quarantine_name(sha256: &str) -> String {
        format!("{WIN_QUARANTINE}\\{sha256}.quarantine")
    }

    pub fn quarantine_move(path: &str, sha256: &str) -> Result<String, String> {
        Ok(format!(
            "move /y {} {}",
            q("path", path)?,
            q("path", &quarantine_name(sha256))?
        ))
    }

    pub fn list_user_hives() -> String {
        "reg query HKU".to_string()
    }

    /// The key holding the value: `HKU\<SID>\...` for a user's hive, `HKLM\...`.
    pub fn key_path(v: &RunValue, sid: Option<&str>) -> String {
        match (v.hive, sid) {
            (Hive::CurrentUser, Some(sid)) => format!("HKU\\{sid}\\{}", v.key),
            (Hive::CurrentUser, None) => format!("HKU\\<SID>\\{}", v.key),
            (Hive::LocalMachine, _) => format!("HKLM\\{}", v.key),
        }
    }

    pub fn reg_query(v: &RunValue, sid: Option<&str>) -> Result<String, String> {
        Ok(format!(
            "reg query {} /v {}",
            q("key", &key_path(v, sid))?,
            q("value name", &v.name)?
        ))
    }

    pub fn reg_delete(v: &RunValue, sid: Option<&str>) -> Result<String, String> {
        Ok(format!(
            "reg delete {} /v {} /f",
            q("key", &key_path(v, sid))?,
            q("value name", &v.name)?
        ))
    }

    pub fn firewall_add(dir: &str, ranges: &str) -> String {
        format!(
            "netsh advfirewall firewall add rule name=\"{RULE_NAME}\" dir={dir} action=block remoteip={ranges} profile=any enable=yes"
        )
    }

    pub fn firewall_show() -> String {
        format!("netsh advfirewall firewall show rule name=\"{RULE_NAME}\"")
    }

    pub fn firewall_delete() -> String {
        format!("netsh advfirewall firewall delete rule name=\"{RULE_NAME}\"")
    }
}

/// POSIX sh command lines.
pub mod posix {
    use super::*;

    /// Runs `action` on the file `path` names only when the host confirms, in the same
    /// command, that `path` is its own final form: the shell enters the file's
    /// directory physically (`cd -P`) and `pwd -P` must give back exactly that
    /// directory (so no component was a symbolic link, and `/proc/self/root/...`-style
    /// aliases fail), the file itself must not be a link and must be a regular file
    /// with one name. `action` then works on `./"$f"` inside that directory: the shell's
    /// working directory holds the checked directory itself, so swapping a component
    /// for a link afterwards does not redirect it, and a file swapped for a link after
    /// the check is acted on as the link (`rm`, `mv` do not follow it). Refusals print
    /// `REFUSED: <reason>` and exit 3; a missing file prints `ABSENT` and exits 4.
    pub fn guarded(path: &str, action: &str) -> String {
        let (dir, name) = match path.rsplit_once('/') {
            Some(("", n)) => ("/", n),
            Some((d, n)) => (d, n),
            None => (".", path),
        };
        format!(
            "d={}; f={}; \
if ! cd -P -- \"$d\" 2>/dev/null; then \
if test -e \"$d\" || test -L \"$d\"; then echo 'REFUSED: cannot enter the directory'; exit 3; else echo ABSENT; exit 4; fi; fi; \
r=$(pwd -P); \
if [ \"$r\" != \"$d\" ]; then printf 'REFUSED: the directory is not its final path (a symbolic link on the way; it resolves to %s)\\n' \"$r\"; exit 3; fi; \
if test -L \"$f\"; then echo 'REFUSED: the file is a symbolic link'; exit 3; fi; \
if ! test -e \"$f\"; then echo ABSENT; exit 4; fi; \
if ! test -f \"$f\"; then echo 'REFUSED: not a regular file'; exit 3; fi; \
if [ \"$(stat -c %h -- \"$f\")\" != 1 ]; then echo 'REFUSED: the file has other hard links'; exit 3; fi; \
{action}",
            sh_quote(dir),
            sh_quote(name)
        )
    }

    pub fn hash(path: &str) -> String {
        guarded(path, "sha256sum -- \"./$f\"")
    }

    pub fn process_check(pid: u32) -> String {
        format!("readlink /proc/{pid}/exe || echo GONE")
    }

    /// Kills `pid` only if it still runs `path` (the check is repeated in the same
    /// command, so a PID reused between the check and the kill is not hit).
    pub fn kill(pid: u32, path: &str) -> String {
        let p = sh_quote(path);
        format!(
            "case \"$(readlink /proc/{pid}/exe 2>/dev/null)\" in {p}|{p}' (deleted)') kill -KILL {pid} && echo KILLED ;; *) echo NOT-THE-IMAGE ;; esac"
        )
    }

    pub fn delete(path: &str) -> String {
        guarded(path, "rm -f -- \"./$f\" && echo DELETED")
    }

    pub fn exists(path: &str) -> String {
        let p = sh_quote(path);
        format!("if test -e {p} || test -L {p}; then echo PRESENT; else echo ABSENT; fi")
    }

    pub fn quarantine_name(sha256: &str) -> String {
        format!("{POSIX_QUARANTINE}/{sha256}.quarantine")
    }

    /// Moves the file into the quarantine directory (root's, 0700) and makes it mode
    /// 000. The mode is set only on what arrived there as a regular file with one name:
    /// a file swapped for a link or a hard link after the check must not take a
    /// system file's mode with it.
    pub fn quarantine(path: &str, sha256: &str) -> String {
        let dest = sh_quote(&quarantine_name(sha256));
        guarded(
            path,
            &format!(
                "mkdir -p -m 700 {POSIX_QUARANTINE} && mv -f -- \"./$f\" {dest} && \
if test -f {dest} && ! test -L {dest} && [ \"$(stat -c %h -- {dest})\" = 1 ]; then chmod 000 {dest}; \
else echo 'REFUSED: the moved file is not a regular file with one name; its mode is left'; exit 3; fi"
            ),
        )
    }
}

// ---------------------------------------------------------------- output readers

/// Text of a command's output: lossy UTF-8 (Windows tools may write the OEM code
/// page; only ASCII markers are looked for).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).replace("\r\n", "\n")
}

/// The digest in `certutil -hashfile` output (line 2; older Windows separates the
/// bytes with spaces) or in `sha256sum` output (the first field).
pub fn parse_sha256(out: &str) -> Option<String> {
    for line in out.lines() {
        let first = line.split_whitespace().next().unwrap_or_default();
        let candidates = [line.replace(' ', ""), first.to_string()];
        for c in candidates {
            let c = c.trim().to_ascii_lowercase();
            if c.len() == 64 && c.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Some(c);
            }
        }
    }
    None
}

/// What the process check said about a PID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcState {
    Gone,
    /// Running this executable (empty when the host could not tell).
    Runs(String),
}

/// Reads the Windows process check (`PID=`/`PATH=` lines or `GONE`).
pub fn parse_win_process(out: &str) -> Option<ProcState> {
    let mut saw_pid = false;
    for line in out.lines() {
        let l = line.trim();
        if l == "GONE" {
            return Some(ProcState::Gone);
        }
        if l.starts_with("PID=") {
            saw_pid = true;
        }
        if let Some(p) = l.strip_prefix("PATH=") {
            return Some(ProcState::Runs(p.trim().to_string()));
        }
    }
    saw_pid.then(|| ProcState::Runs(String::new()))
}

/// Reads `readlink /proc/PID/exe || echo GONE`: a path, maybe with ` (deleted)`.
pub fn parse_posix_process(out: &str) -> Option<ProcState> {
    let l = out.lines().map(str::trim).find(|l| !l.is_empty())?;
    if l == "GONE" {
        return Some(ProcState::Gone);
    }
    Some(ProcState::Runs(
        l.strip_suffix(" (deleted)").unwrap_or(l).to_string(),
    ))
}

/// The reason of a host-side refusal (`REFUSED: <reason>`), when the command printed
/// one. A host may print this itself: it can only make us not act.
pub fn parse_refusal(out: &str) -> Option<String> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix("REFUSED: "))
        .map(|r| crate::sanitize::display(r, 300))
}

/// `PRESENT` / `ABSENT` from the existence checks.
pub fn parse_presence(out: &str) -> Option<bool> {
    out.lines().map(str::trim).find_map(|l| match l {
        "PRESENT" => Some(true),
        "ABSENT" => Some(false),
        _ => None,
    })
}

/// The user SIDs of `reg query HKU` (`HKEY_USERS\S-1-5-21-...`, not `_Classes`).
pub fn parse_user_sids(out: &str) -> Vec<String> {
    let mut sids: Vec<String> = out
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l
                .get(..11)
                .filter(|p| p.eq_ignore_ascii_case("HKEY_USERS\\"))
                .map(|_| &l[11..])?;
            super::validate::user_sid(rest).then(|| rest.to_string())
        })
        .collect();
    sids.sort();
    sids.dedup();
    sids
}

/// The data of value `name` in `reg query ... /v NAME` output
/// (`    NAME    REG_SZ    data`), when listed.
pub fn parse_reg_value(out: &str, name: &str) -> Option<String> {
    for line in out.lines() {
        let l = line.trim_start();
        let Some(rest) = l.strip_prefix(name) else {
            continue;
        };
        if !rest.starts_with([' ', '\t']) {
            continue;
        }
        let rest = rest.trim_start();
        if !rest.starts_with("REG_") {
            continue;
        }
        let data = rest
            .split_once(char::is_whitespace)
            .map(|(_, d)| d.trim())
            .unwrap_or("");
        return Some(data.to_string());
    }
    None
}

/// One rule of `netsh advfirewall firewall show rule` output.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FwRule {
    pub name: String,
    pub direction: String,
    pub action: String,
    pub enabled: String,
    pub remote_ip: String,
}

/// The rules listed by `netsh advfirewall firewall show rule name=...` (Windows'
/// `Field:   value` blocks, one per rule).
pub fn parse_fw_rules(out: &str) -> Vec<FwRule> {
    let mut rules = Vec::new();
    let mut cur: Option<FwRule> = None;
    for line in out.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim().to_string());
        match k {
            "Rule Name" => {
                if let Some(r) = cur.take() {
                    rules.push(r);
                }
                cur = Some(FwRule {
                    name: v,
                    direction: String::new(),
                    action: String::new(),
                    enabled: String::new(),
                    remote_ip: String::new(),
                });
            }
            "Direction" => cur.iter_mut().for_each(|r| r.direction = v.clone()),
            "Action" => cur.iter_mut().for_each(|r| r.action = v.clone()),
            "Enabled" => cur.iter_mut().for_each(|r| r.enabled = v.clone()),
            "RemoteIP" => cur.iter_mut().for_each(|r| r.remote_ip = v.clone()),
            _ => {}
        }
    }
    if let Some(r) = cur {
        rules.push(r);
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contain::validate::run_key;

    #[test]
    fn windows_lines_are_the_contract_shapes() {
        let p = r"C:\Users\tanaka\AppData\Local\wfsrvhost\wfsrvhost.exe";
        assert_eq!(
            win::hash(p).unwrap(),
            format!("certutil -hashfile \"{p}\" SHA256")
        );
        assert_eq!(win::kill(4312), "taskkill /PID 4312 /F");
        assert_eq!(win::delete(p).unwrap(), format!("del /f /q \"{p}\""));
        assert_eq!(
            win::exists(p).unwrap(),
            format!("if exist \"{p}\" (echo PRESENT) else (echo ABSENT)")
        );
        assert_eq!(
            win::process_check(40),
            "powershell.exe -NoProfile -NonInteractive -Command \"$p = Get-CimInstance Win32_Process -Filter 'ProcessId=40'; if ($p) { 'PID=' + $p.ProcessId; 'PATH=' + $p.ExecutablePath } else { 'GONE' }\""
        );
        let v =
            run_key(r"HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Run\wfsrvhost")
                .unwrap();
        assert_eq!(
            win::reg_query(&v, Some("S-1-5-21-1-2-3-1001")).unwrap(),
            r#"reg query "HKU\S-1-5-21-1-2-3-1001\Software\Microsoft\Windows\CurrentVersion\Run" /v "wfsrvhost""#
        );
        assert_eq!(
            win::reg_delete(&v, Some("S-1-5-21-1-2-3-1001")).unwrap(),
            r#"reg delete "HKU\S-1-5-21-1-2-3-1001\Software\Microsoft\Windows\CurrentVersion\Run" /v "wfsrvhost" /f"#
        );
        assert_eq!(
            win::firewall_add("in", "0.0.0.0-10.0.0.4,10.0.0.6-255.255.255.255"),
            "netsh advfirewall firewall add rule name=\"pushscan-isolation\" dir=in action=block remoteip=0.0.0.0-10.0.0.4,10.0.0.6-255.255.255.255 profile=any enable=yes"
        );
        assert_eq!(
            win::quarantine_move(p, &"a".repeat(64)).unwrap(),
            format!(
                "move /y \"{p}\" \"C:\\ProgramData\\pushscan\\quarantine\\{}.quarantine\"",
                "a".repeat(64)
            )
        );
        // A value that slipped past validation is still refused by the quoting layer.
        assert!(win::hash("C:\\a\"&calc&\".exe").is_err());
    }

    #[test]
    fn posix_lines_quote_everything() {
        let h = posix::hash("/tmp/a b/c");
        assert!(h.starts_with("d='/tmp/a b'; f='c'; "), "{h}");
        assert!(h.ends_with("sha256sum -- \"./$f\""), "{h}");
        let d = posix::delete("/tmp/it's");
        assert!(d.starts_with("d='/tmp'; f='it'\\''s'; "), "{d}");
        assert!(d.ends_with("rm -f -- \"./$f\" && echo DELETED"), "{d}");
        assert!(posix::kill(77, "/tmp/x").contains("kill -KILL 77"));
    }

    /// The host-side check on a real `/bin/sh`: a link anywhere on the path is refused
    /// and its target kept; the plain file is deleted.
    #[cfg(unix)]
    #[test]
    fn posix_guard_refuses_links_on_a_real_shell() {
        use std::process::Command;
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        let real = root.join("real");
        std::fs::create_dir_all(real.join("sub")).unwrap();
        std::fs::create_dir_all(root.join("user")).unwrap();
        std::fs::write(real.join("victim"), b"keep").unwrap();
        std::fs::write(real.join("sub").join("victim"), b"keep").unwrap();
        std::fs::write(root.join("user").join("evil"), b"x").unwrap();
        std::os::unix::fs::symlink(real.join("victim"), root.join("user").join("l")).unwrap();
        std::os::unix::fs::symlink(real.join("sub"), root.join("user").join("ld")).unwrap();
        std::fs::hard_link(real.join("victim"), root.join("user").join("h")).unwrap();
        let sh = |line: &str| {
            let o = Command::new("/bin/sh")
                .arg("-c")
                .arg(line)
                .output()
                .unwrap();
            (
                o.status.code(),
                String::from_utf8_lossy(&o.stdout).to_string(),
            )
        };
        let p = |rel: &str| root.join(rel).display().to_string();
        for (rel, why) in [
            ("user/l", "the file is a symbolic link"),
            ("user/ld/victim", "the directory is not its final path"),
            ("user/h", "other hard links"),
            ("user", "not a regular file"),
        ] {
            let (code, out) = sh(&posix::delete(&p(rel)));
            assert_eq!(code, Some(3), "{rel}: {out}");
            assert!(parse_refusal(&out).unwrap().contains(why), "{rel}: {out}");
        }
        // The quarantine and the hash refuse the same way.
        let (code, out) = sh(&posix::hash(&p("user/ld/victim")));
        assert_eq!(code, Some(3), "{out}");
        assert!(real.join("victim").exists() && real.join("sub/victim").exists());
        let (code, out) = sh(&posix::hash(&p("user/nope")));
        assert_eq!((code, out.trim()), (Some(4), "ABSENT"));
        let (code, out) = sh(&posix::hash(&p("user/evil")));
        assert_eq!(code, Some(0), "{out}");
        assert!(parse_sha256(&out).is_some(), "{out}");
        let (code, out) = sh(&posix::delete(&p("user/evil")));
        assert_eq!((code, out.trim()), (Some(0), "DELETED"));
        assert!(!root.join("user/evil").exists());
    }

    #[test]
    fn readers() {
        let certutil = "SHA256 hash of C:\\x.exe:\r\nab cd ef 01 23 45 67 89 ab cd ef 01 23 45 67 89 ab cd ef 01 23 45 67 89 ab cd ef 01 23 45 67 89\r\nCertUtil: -hashfile command completed successfully.\r\n";
        assert_eq!(
            parse_sha256(&text(certutil.as_bytes())).unwrap(),
            "abcdef0123456789".repeat(4)
        );
        let sum = format!("{}  /tmp/x\n", "0f".repeat(32));
        assert_eq!(parse_sha256(&sum).unwrap(), "0f".repeat(32));
        assert_eq!(
            parse_win_process("PID=40\r\nPATH=C:\\a.exe\r\n"),
            Some(ProcState::Runs("C:\\a.exe".into()))
        );
        assert_eq!(parse_win_process("GONE\r\n"), Some(ProcState::Gone));
        assert_eq!(
            parse_posix_process("/tmp/x (deleted)\n"),
            Some(ProcState::Runs("/tmp/x".into()))
        );
        assert_eq!(
            parse_user_sids("\nHKEY_USERS\\.DEFAULT\nHKEY_USERS\\S-1-5-21-1-2-3-1001\nHKEY_USERS\\S-1-5-21-1-2-3-1001_Classes\nHKEY_USERS\\S-1-5-18\n"),
            vec!["S-1-5-21-1-2-3-1001".to_string()]
        );
        assert_eq!(
            parse_reg_value(
                "\r\nHKEY_USERS\\S-1\\Software\\Microsoft\\Windows\\CurrentVersion\\Run\r\n    wfsrvhost    REG_SZ    C:\\a b\\w.exe\r\n\r\n",
                "wfsrvhost"
            ),
            Some("C:\\a b\\w.exe".into())
        );
        assert_eq!(
            parse_reg_value("    wfsrvhostX    REG_SZ    x", "wfsrvhost"),
            None
        );
        let show = "\r\nRule Name:                            pushscan-isolation\r\n----------------------------------------------------------------------\r\nEnabled:                              Yes\r\nDirection:                            In\r\nProfiles:                             Domain,Private,Public\r\nGrouping:                             \r\nLocalIP:                              Any\r\nRemoteIP:                             0.0.0.0-10.0.0.4,10.0.0.6-255.255.255.255\r\nProtocol:                             Any\r\nEdge traversal:                       No\r\nAction:                               Block\r\n\r\nOk.\r\n";
        let rules = parse_fw_rules(&text(show.as_bytes()));
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].direction, "In");
        assert_eq!(rules[0].action, "Block");
        assert_eq!(
            rules[0].remote_ip,
            "0.0.0.0-10.0.0.4,10.0.0.6-255.255.255.255"
        );
        assert!(parse_fw_rules("No rules match the specified criteria.\r\n").is_empty());
    }
}
