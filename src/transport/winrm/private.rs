//! Proving a Windows work directory private before anything is written or run in it.
//!
//! A directory someone else created first (any user may create folders in
//! `C:\Windows\Temp`) is theirs: they can plant links in it, replace the checker between
//! the hash check and the run, or hold handles opened before we tightened its ACL. So a
//! directory is used only when the host shows it is private:
//!
//! * every component of its path is a plain directory (no junction, symbolic link or
//!   mount point), from `dir /a /q` of each parent;
//! * its owner is `BUILTIN\Administrators`, `NT AUTHORITY\SYSTEM` or
//!   `NT SERVICE\TrustedInstaller` (the owner column of `dir /q`);
//! * no allow entry of its DACL (`icacls`) gives a write, create, delete or
//!   permission-changing right to anyone else (a `CREATOR OWNER` entry counts only when
//!   it is inherit-only: it then describes children, which only the trusted can create).
//!
//! A directory that is missing is created by us (`mkdir`, which fails if the name exists,
//! so a directory planted meanwhile is never taken for ours) and at once given a protected
//! DACL: `icacls /inheritance:r /grant:r` SYSTEM and Administrators by SID (names are
//! localized, SIDs are not). A directory that already exists is never modified: it is
//! proven as it is or refused, with the owner or entry found in the reason.
//!
//! Creation and proof of every directory share one command line (one round trip); a
//! second one is needed only when a directory is missing below one that already existed.
//!
//! What only real Windows can prove: the exact `dir /q` column layout and owner
//! truncation, and `icacls` output on localized systems (account names are translated
//! there, so a non-English host's directories are refused until an operator looks). The
//! simulator in `lab/` reproduces the documented English formats; Wine's `icacls` is a stub
//! that prints nothing, so the parser refuses what it shows.

use crate::transport::cmd::quote_path;
use crate::transport::{TResult, TransportError};

/// The protected DACL a directory we create gets: full control for SYSTEM (S-1-5-18) and
/// Administrators (S-1-5-32-544), inherited by files and subdirectories; nothing else.
const GRANTS: &str = "\"*S-1-5-18:(OI)(CI)F\" \"*S-1-5-32-544:(OI)(CI)F\"";

/// What the host showed about one directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum DirState {
    /// Not there (or a parent is not there).
    Missing,
    /// Owned by a trusted account, no one else can write: safe to use.
    Private,
    /// Why it must not be used.
    Unsafe(String),
}

/// A Windows directory path, normalized: `X:\a\b` without a trailing separator.
fn normalize(dir: &str) -> TResult<String> {
    let p = dir.replace('/', "\\");
    let p = p.trim_end_matches('\\');
    let b = p.as_bytes();
    if b.len() < 4 || !b[0].is_ascii_alphabetic() || &p[1..3] != ":\\" {
        return Err(TransportError::error(format!(
            "work directory {} is not an absolute path below a drive (X:\\...)",
            crate::sanitize::display(dir, 120)
        )));
    }
    let comps: Vec<&str> = p[3..].split('\\').collect();
    if comps
        .iter()
        .any(|c| c.is_empty() || *c == "." || *c == ".." || c.contains(['*', '?']))
    {
        return Err(TransportError::error(format!(
            "work directory {} has an empty, '.', '..' or wildcard component",
            crate::sanitize::display(dir, 120)
        )));
    }
    Ok(format!(
        "{}:\\{}",
        &p[..1].to_ascii_uppercase(),
        comps.join("\\")
    ))
}

/// `C:\a\b` -> [`C:\a`, `C:\a\b`].
fn prefixes(dir: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = dir[..2].to_string();
    for c in dir[3..].split('\\') {
        cur.push('\\');
        cur.push_str(c);
        out.push(cur.clone());
    }
    out
}

/// Parent and last component of a normalized path with at least one component.
fn split_last(p: &str) -> (&str, &str) {
    match p.rfind('\\') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => ("", p),
    }
}

/// The directories to prove (normalized) and every path component to list, in order.
struct Plan {
    dirs: Vec<String>,
    comps: Vec<String>,
}

fn plan(dirs: &[String]) -> TResult<Plan> {
    let mut nd = Vec::new();
    let mut comps: Vec<String> = Vec::new();
    for d in dirs {
        let n = normalize(d)?;
        for p in prefixes(&n) {
            if !comps.iter().any(|c| c.eq_ignore_ascii_case(&p)) {
                comps.push(p);
            }
        }
        if !nd.iter().any(|x: &String| x.eq_ignore_ascii_case(&n)) {
            nd.push(n);
        }
    }
    Ok(Plan { dirs: nd, comps })
}

/// The command line that creates each of `create` that is missing (stopping at the first
/// that exists: one created inside a directory not yet proven would be written there),
/// then shows every path component (`dir /a /q` of its parent, its name as the pattern)
/// and each directory's DACL (`icacls`), between `##L<i>` and `##A<i>` markers.
pub(super) fn command(dirs: &[String], create: &[String]) -> TResult<String> {
    let p = plan(dirs)?;
    let mut line = String::new();
    let mut chain = Vec::new();
    for d in create {
        let q = quote_path("directory", &normalize(d)?)?;
        chain.push(format!(
            "mkdir {q} 2>nul && icacls {q} /inheritance:r /grant:r {GRANTS} >nul"
        ));
    }
    if !chain.is_empty() {
        line.push_str(&chain.join(" && "));
        line.push_str(" & ");
    }
    for (i, c) in p.comps.iter().enumerate() {
        let (parent, name) = split_last(c);
        let pattern = quote_path("directory", &format!("{parent}\\{name}*"))?;
        line.push_str(&format!("echo ##L{i} & dir /a /q {pattern} 2>&1 & "));
    }
    for (i, d) in p.dirs.iter().enumerate() {
        let q = quote_path("directory", d)?;
        line.push_str(&format!("echo ##A{i} & icacls {q} 2>&1 & "));
    }
    line.push_str("exit /b 0");
    Ok(line)
}

/// Splits the output into the sections after each `##<kind><i>` marker.
fn section(out: &str, kind: char, i: usize) -> Vec<&str> {
    let marker = format!("##{kind}{i}");
    let mut lines = out.lines().map(|l| l.trim_end_matches('\r'));
    let mut found = false;
    for l in lines.by_ref() {
        if l.trim() == marker {
            found = true;
            break;
        }
    }
    if !found {
        return Vec::new();
    }
    lines
        .take_while(|l| !l.trim_start().starts_with("##"))
        .collect()
}

/// One path component as `dir /a /q` of its parent shows it.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Dir { owner: String },
    Reparse { tag: String },
    NotDir,
    Absent,
}

/// Finds `name` in a `dir /a /q` listing. A line is
/// `date  time  <DIR>|<JUNCTION>|<SYMLINKD>|size  OWNER  name [target]`; the owner may hold
/// blanks (`NT AUTHORITY\SYSTEM`), so it is what lies between the type column and the name.
fn find_entry(lines: &[&str], name: &str) -> Entry {
    let lname = name.to_ascii_lowercase();
    let mut not_dir = false;
    for line in lines {
        let lower = line.to_ascii_lowercase();
        for tag in ["<junction>", "<symlinkd>", "<symlink>", "<mountpoint>"] {
            if let Some(pos) = lower.find(tag) {
                let rest = &lower[pos + tag.len()..];
                let rest = match rest.rfind(" [") {
                    Some(b) => &rest[..b],
                    None => rest,
                };
                if rest.ends_with(&format!(" {lname}")) {
                    return Entry::Reparse {
                        tag: tag.trim_matches(['<', '>']).to_ascii_uppercase(),
                    };
                }
            }
        }
        if let Some(pos) = lower.find("<dir>") {
            let rest = line[pos + 5..].trim_end();
            let lrest = lower[pos + 5..].trim_end();
            if lrest.ends_with(&format!(" {lname}")) {
                let owner = rest[..rest.len() - lname.len()].trim();
                return Entry::Dir {
                    owner: owner.to_string(),
                };
            }
            continue;
        }
        // A file line: date, time, size, owner, name.
        let starts_with_date = line.trim_start().starts_with(|c: char| c.is_ascii_digit());
        if starts_with_date && lower.trim_end().ends_with(&format!(" {lname}")) {
            not_dir = true;
        }
    }
    if not_dir {
        Entry::NotDir
    } else {
        Entry::Absent
    }
}

fn trusted_owner(owner: &str) -> bool {
    let o = owner.to_ascii_lowercase();
    o == r"builtin\administrators"
        || o == r"nt authority\system"
        // `dir /q` cuts the owner column (`NT SERVICE\TrustedInsta`): any cut that still
        // names the service.
        || (o.len() >= r"nt service\trusted".len() && r"nt service\trustedinstaller".starts_with(&o))
}

fn trusted_principal(p: &str) -> bool {
    let l = p.to_ascii_lowercase();
    matches!(
        l.as_str(),
        r"nt authority\system"
            | r"builtin\administrators"
            | r"nt service\trustedinstaller"
            | "*s-1-5-18"
            | "*s-1-5-32-544"
    )
}

/// Rights (icacls' abbreviations) that let their holder change what is in the directory,
/// or its security. Anything not known to be harmless counts as one of these.
fn grants_write(right: &str) -> bool {
    !matches!(
        right,
        "R" | "RX" | "N" | "RC" | "S" | "GR" | "GE" | "RD" | "REA" | "X" | "RA"
    )
}

/// Checks an `icacls <dir>` output: the entries that make it unsafe, or why it could not
/// be read. Format (documented): the path, then one entry per line,
/// `PRINCIPAL:(flags)...(rights)`, continuation lines indented to the path's width, then
/// `Successfully processed N files; Failed processing M files`.
pub(super) fn check_acl(dir: &str, lines: &[&str]) -> Result<(), String> {
    let mut aces = 0;
    let mut processed = false;
    let mut bad = Vec::new();
    for raw in lines {
        let mut l = raw.trim();
        if l.is_empty() {
            continue;
        }
        if l.starts_with("Successfully processed") {
            processed = l.starts_with("Successfully processed 1 files")
                && l.ends_with("Failed processing 0 files");
            continue;
        }
        if l.len() >= dir.len()
            && l.is_char_boundary(dir.len())
            && l[..dir.len()].eq_ignore_ascii_case(dir)
        {
            l = l[dir.len()..].trim_start();
        }
        let Some(colon) = l.find(":(") else {
            return Err(format!(
                "unreadable ACL line {:?}",
                crate::sanitize::display(l, 80)
            ));
        };
        let principal = &l[..colon];
        let mut flags = Vec::new();
        let mut rights = Vec::new();
        let mut deny = false;
        let mut rest = &l[colon + 1..];
        while let Some(r) = rest.strip_prefix('(') {
            let Some(end) = r.find(')') else {
                return Err(format!(
                    "unreadable ACL line {:?}",
                    crate::sanitize::display(l, 80)
                ));
            };
            let group = &r[..end];
            match group {
                "DENY" => deny = true,
                "OI" | "CI" | "IO" | "NP" | "I" => flags.push(group),
                _ => rights.extend(group.split(',').map(str::trim)),
            }
            rest = &r[end + 1..];
        }
        if !rest.trim().is_empty() || rights.is_empty() {
            return Err(format!(
                "unreadable ACL line {:?}",
                crate::sanitize::display(l, 80)
            ));
        }
        aces += 1;
        if deny || trusted_principal(principal) {
            continue;
        }
        // CREATOR OWNER inherit-only: the rights of whoever creates a child, and only the
        // trusted can create one here if the rest of the DACL is clean.
        if principal.eq_ignore_ascii_case("CREATOR OWNER") && flags.contains(&"IO") {
            continue;
        }
        if rights.iter().any(|r| grants_write(r)) {
            bad.push(crate::sanitize::display(l, 120));
        }
    }
    if !processed || aces == 0 {
        let shown: Vec<&str> = lines
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty())
            .collect();
        return Err(format!(
            "cannot read its ACL (icacls said: {:?})",
            crate::sanitize::display(&shown.join(" | "), 160)
        ));
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!("its ACL lets others write: {}", bad.join(", ")))
    }
}

/// Reads the output of [`command`]: the state of each directory of `dirs`, in order.
pub(super) fn states(dirs: &[String], out: &str) -> TResult<Vec<(String, DirState)>> {
    let p = plan(dirs)?;
    let mut result = Vec::new();
    for (di, d) in p.dirs.iter().enumerate() {
        let mut state = None;
        for (ci, c) in p.comps.iter().enumerate() {
            let is_self = c.eq_ignore_ascii_case(d);
            if !(is_self
                || d.to_ascii_lowercase()
                    .starts_with(&format!("{}\\", c.to_ascii_lowercase())))
            {
                continue;
            }
            let (_, name) = split_last(c);
            match find_entry(&section(out, 'L', ci), name) {
                Entry::Absent => {
                    state = Some(DirState::Missing);
                    break;
                }
                Entry::Reparse { tag } => {
                    state = Some(DirState::Unsafe(format!(
                        "{c} is a {tag} (a reparse point), not a plain directory"
                    )));
                    break;
                }
                Entry::NotDir => {
                    state = Some(DirState::Unsafe(format!("{c} is not a directory")));
                    break;
                }
                Entry::Dir { owner } if is_self => {
                    if !trusted_owner(&owner) {
                        state = Some(DirState::Unsafe(format!(
                            "{d} is owned by {} (must be Administrators or SYSTEM)",
                            crate::sanitize::display(&owner, 60)
                        )));
                    } else if let Err(why) = check_acl(d, &section(out, 'A', di)) {
                        state = Some(DirState::Unsafe(format!(
                            "{d} (owner {}): {why}",
                            crate::sanitize::display(&owner, 60)
                        )));
                    } else {
                        state = Some(DirState::Private);
                    }
                }
                Entry::Dir { .. } => {}
            }
        }
        result.push((
            d.clone(),
            state.unwrap_or_else(|| DirState::Unsafe(format!("{d}: not shown by the host"))),
        ));
    }
    Ok(result)
}

/// The reason a host is refused for `dir`.
pub(super) fn refusal(why: &str) -> TransportError {
    TransportError::error(format!(
        "work directory not private, nothing written or run there: {why}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs() -> Vec<String> {
        vec![
            r"C:\Windows\pushscan".into(),
            r"C:\Windows\pushscan\reports".into(),
        ]
    }

    #[test]
    fn the_exact_command_line() {
        let line = command(&dirs(), &dirs()).unwrap();
        assert_eq!(
            line,
            concat!(
                r#"mkdir "C:\Windows\pushscan" 2>nul && icacls "C:\Windows\pushscan" /inheritance:r /grant:r "*S-1-5-18:(OI)(CI)F" "*S-1-5-32-544:(OI)(CI)F" >nul && "#,
                r#"mkdir "C:\Windows\pushscan\reports" 2>nul && icacls "C:\Windows\pushscan\reports" /inheritance:r /grant:r "*S-1-5-18:(OI)(CI)F" "*S-1-5-32-544:(OI)(CI)F" >nul & "#,
                r#"echo ##L0 & dir /a /q "C:\Windows*" 2>&1 & "#,
                r#"echo ##L1 & dir /a /q "C:\Windows\pushscan*" 2>&1 & "#,
                r#"echo ##L2 & dir /a /q "C:\Windows\pushscan\reports*" 2>&1 & "#,
                r#"echo ##A0 & icacls "C:\Windows\pushscan" 2>&1 & "#,
                r#"echo ##A1 & icacls "C:\Windows\pushscan\reports" 2>&1 & exit /b 0"#,
            )
        );
        // Nothing to create: only the proof.
        let line = command(&dirs(), &[]).unwrap();
        assert!(line.starts_with("echo ##L0 & "), "{line}");
        assert!(command(&[r"C:\a\..\b".into()], &[]).is_err());
        assert!(command(&[r"C:\a\*".into()], &[]).is_err());
        assert!(command(&[r"relative\x".into()], &[]).is_err());
        assert!(command(&[r"C:\a%x%".into()], &[]).is_err());
    }

    /// Output as Windows Server 2019 (en-US) prints it: `dir /a /q` with its volume
    /// header and owner column, `icacls` with continuation lines indented to the path.
    fn windows_output(owner: &str, acl_tail: &str, reports_line: &str) -> String {
        format!(
            "##L0\r\n Volume in drive C has no label.\r\n Volume Serial Number is 5A3C-0F1E\r\n\r\n Directory of C:\\\r\n\r\n\
             11/14/2026  09:12 AM    <DIR>          NT SERVICE\\TrustedInsta Windows\r\n\
             \x20              0 File(s)              0 bytes\r\n               1 Dir(s)  40,123,456,512 bytes free\r\n\
             ##L1\r\n Volume in drive C has no label.\r\n Volume Serial Number is 5A3C-0F1E\r\n\r\n Directory of C:\\Windows\r\n\r\n\
             12/07/2026  04:30 PM    <DIR>          {owner} pushscan\r\n\
             \x20              0 File(s)              0 bytes\r\n               1 Dir(s)  40,123,456,512 bytes free\r\n\
             ##L2\r\n Volume in drive C has no label.\r\n\r\n Directory of C:\\Windows\\pushscan\r\n\r\n\
             {reports_line}\r\n\
             \x20              0 File(s)              0 bytes\r\n\
             ##A0\r\n\
             C:\\Windows\\pushscan NT AUTHORITY\\SYSTEM:(OI)(CI)(F)\r\n\
             \x20                   BUILTIN\\Administrators:(OI)(CI)(F)\r\n{acl_tail}\
             \r\nSuccessfully processed 1 files; Failed processing 0 files\r\n\
             ##A1\r\n\
             C:\\Windows\\pushscan\\reports NT AUTHORITY\\SYSTEM:(I)(OI)(CI)(F)\r\n\
             \x20                           BUILTIN\\Administrators:(I)(OI)(CI)(F)\r\n\
             \r\nSuccessfully processed 1 files; Failed processing 0 files\r\n"
        )
    }

    const REPORTS: &str = "12/07/2026  04:30 PM    <DIR>          BUILTIN\\Administrators reports";

    #[test]
    fn a_private_tree_is_accepted() {
        let out = windows_output(r"BUILTIN\Administrators", "", REPORTS);
        let s = states(&dirs(), &out).unwrap();
        assert_eq!(s[0].1, DirState::Private, "{s:?}");
        assert_eq!(s[1].1, DirState::Private, "{s:?}");
        // Owned by SYSTEM, with the inherited entries of a folder made under C:\Windows.
        let tail = "                    NT SERVICE\\TrustedInstaller:(I)(F)\r\n\
                    \x20                   BUILTIN\\Users:(I)(OI)(CI)(RX)\r\n\
                    \x20                   CREATOR OWNER:(I)(OI)(CI)(IO)(F)\r\n\
                    \x20                   APPLICATION PACKAGE AUTHORITY\\ALL APPLICATION PACKAGES:(I)(OI)(CI)(RX)\r\n\
                    \x20                   BUILTIN\\Users:(DENY)(OI)(CI)(W)\r\n";
        let out = windows_output(r"NT AUTHORITY\SYSTEM", tail, REPORTS);
        assert_eq!(states(&dirs(), &out).unwrap()[0].1, DirState::Private);
    }

    #[test]
    fn another_owner_is_refused_by_name() {
        let out = windows_output(r"WS01\eve", "", REPORTS);
        match &states(&dirs(), &out).unwrap()[0].1 {
            DirState::Unsafe(why) => assert!(why.contains(r"owned by WS01\eve"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn write_for_users_is_refused_naming_the_entry() {
        // What a folder made in C:\Windows\Temp inherits.
        for (tail, entry) in [
            (
                "                    BUILTIN\\Users:(I)(CI)(S,WD,AD,X)\r\n",
                r"BUILTIN\Users:(I)(CI)(S,WD,AD,X)",
            ),
            ("                    Everyone:(F)\r\n", "Everyone:(F)"),
            (
                "                    NT AUTHORITY\\Authenticated Users:(OI)(CI)(M)\r\n",
                r"NT AUTHORITY\Authenticated Users:(OI)(CI)(M)",
            ),
            (
                "                    CREATOR OWNER:(OI)(CI)(F)\r\n",
                "CREATOR OWNER:(OI)(CI)(F)",
            ),
            (
                "                    WS01\\eve:(WDAC)\r\n",
                r"WS01\eve:(WDAC)",
            ),
            (
                "                    *S-1-5-21-1-2-3-1001:(OI)(CI)(F)\r\n",
                "*S-1-5-21-1-2-3-1001:(OI)(CI)(F)",
            ),
        ] {
            let out = windows_output(r"BUILTIN\Administrators", tail, REPORTS);
            match &states(&dirs(), &out).unwrap()[0].1 {
                DirState::Unsafe(why) => {
                    assert!(
                        why.contains("lets others write") && why.contains(entry),
                        "{why}"
                    )
                }
                other => panic!("{tail}: {other:?}"),
            }
        }
    }

    #[test]
    fn reparse_points_missing_and_unreadable() {
        let junction = "12/07/2026  04:30 PM    <JUNCTION>     BUILTIN\\Administrators reports [C:\\Users\\eve\\x]";
        let out = windows_output(r"BUILTIN\Administrators", "", junction);
        assert_eq!(states(&dirs(), &out).unwrap()[0].1, DirState::Private);
        match &states(&dirs(), &out).unwrap()[1].1 {
            DirState::Unsafe(why) => assert!(why.contains("JUNCTION"), "{why}"),
            other => panic!("{other:?}"),
        }
        let link =
            "12/07/2026  04:30 PM    <SYMLINKD>     WS01\\eve              reports [\\??\\C:\\x]";
        let out = windows_output(r"BUILTIN\Administrators", "", link);
        assert!(
            matches!(&states(&dirs(), &out).unwrap()[1].1, DirState::Unsafe(w) if w.contains("SYMLINKD"))
        );
        let file = "12/07/2026  04:30 PM                 3 WS01\\eve              reports";
        let out = windows_output(r"BUILTIN\Administrators", "", file);
        assert!(
            matches!(&states(&dirs(), &out).unwrap()[1].1, DirState::Unsafe(w) if w.contains("not a directory"))
        );
        let out = windows_output(r"BUILTIN\Administrators", "", "File Not Found");
        assert_eq!(states(&dirs(), &out).unwrap()[1].1, DirState::Missing);
        // Wine's icacls prints nothing: refused, never assumed private.
        let out = "##L0\r\n 12/7/2026   4:30 PM  <DIR>         BUILTIN\\Administrators Windows\r\n\
                   ##L1\r\n 12/7/2026   4:30 PM  <DIR>         BUILTIN\\Administrators pushscan\r\n##A0\r\n";
        match &states(&dirs()[..1], out).unwrap()[0].1 {
            DirState::Unsafe(why) => assert!(why.contains("cannot read its ACL"), "{why}"),
            other => panic!("{other:?}"),
        }
        // icacls refused: "Access is denied." and 1 failed.
        let out = "##L0\r\n 12/7/2026   4:30 PM  <DIR>         BUILTIN\\Administrators Windows\r\n\
                   ##L1\r\n 12/7/2026   4:30 PM  <DIR>         BUILTIN\\Administrators pushscan\r\n##A0\r\n\
                   C:\\Windows\\pushscan: Access is denied.\r\nSuccessfully processed 0 files; Failed processing 1 files\r\n";
        assert!(matches!(
            &states(&dirs()[..1], out).unwrap()[0].1,
            DirState::Unsafe(_)
        ));
    }
}
