//! Work directories on Unix hosts: created private, and proven private before every use.
//!
//! pushscan keeps its checker (and the checker keeps its reports) in a work directory that
//! outlives a sweep, so that the next sweep finds the pinned binary in place and pushes
//! nothing. That is only safe while nobody but the login account (and root) can change what
//! is in it: another local user who creates the directory first, or who can rename one of
//! its parents, could plant a link at the push's temporary name (the scan account would
//! overwrite whatever the link names) or swap the checker between the hash check and the
//! run (their code would run as the scan account, the pin would mean nothing).
//!
//! So before anything is written or run, every directory pushscan uses is proven private:
//! - it is a directory, not a symbolic link, owned by the login account, and neither group
//!   nor others may write to it (a private one of ours that others may still read is made
//!   0700: nothing can have been planted in it);
//! - every parent is a directory owned by root or by the login account, and a parent that
//!   others may write to is root's and sticky (`/tmp`): nobody else can rename or replace the
//!   child. A parent that is a symbolic link must be root's (`/var/run -> /run`); what it
//!   points to is then checked the same way.
//!
//! A directory nested in one already proven (the result directory inside the work
//! directory) is out of reach of others once its ancestor is 0700; it is only checked to be
//! a real directory of ours. A host whose directory fails the proof is refused with the
//! reason, naming the owner and mode found; nothing is written or run there.
//!
//! Paths may start with `~/`: the login account's home, expanded by the host's shell (on
//! SSH) or from the controller's home (`local`), as a shell expands an unquoted word.

use super::sh_quote;

/// The part of `s` below the login's home when `s` is `~` (`Some("")`) or starts with `~/`;
/// `None` otherwise (`~user/` is not expanded). Every transport reads a leading tilde here.
pub fn home_relative(s: &str) -> Option<&str> {
    if s == "~" {
        Some("")
    } else {
        s.strip_prefix("~/")
    }
}

/// A path or argument as one shell word: single-quoted, except that a leading `~/` (or a
/// lone `~`) becomes `"$HOME"`, as the shell's tilde expansion would do for a bare word.
pub fn sh_word(s: &str) -> String {
    match home_relative(s) {
        Some("") => "\"$HOME\"".into(),
        Some(rest) => format!("\"$HOME\"{}", sh_quote(&format!("/{rest}"))),
        None => sh_quote(s),
    }
}

/// Whether `inner` lies strictly inside `outer` (lexically: both are pushscan's own paths,
/// checked free of `..`).
fn nested_in(inner: &str, outer: &str) -> bool {
    let outer = outer.trim_end_matches('/');
    !outer.is_empty()
        && inner.len() > outer.len() + 1
        && inner.starts_with(outer)
        && inner.as_bytes()[outer.len()] == b'/'
}

/// Splits `dirs` into the roots (proven in full) and the ones nested in a root.
pub fn roots_and_nested(dirs: &[String]) -> (Vec<&str>, Vec<&str>) {
    let mut roots = Vec::new();
    let mut nested = Vec::new();
    for d in dirs {
        if dirs.iter().any(|o| nested_in(d, o)) {
            nested.push(d.as_str());
        } else if !roots.contains(&d.as_str()) {
            roots.push(d.as_str());
        }
    }
    (roots, nested)
}

/// The shell function `pv DIR [create]`: creates DIR when asked and missing (mode 0700 under
/// the caller's `umask 077`), then proves it private as the module doc says. Before creating,
/// the deepest existing ancestor and its parents must pass the parent rules, so `mkdir` never
/// goes through someone else's link. On failure it prints `PUSHSCAN_FAIL=<reason>` on stderr
/// and returns 1. `pw PATH own|parent` is the check itself: one `stat` for the path and all
/// its parents; `stat -L` only for a parent that is a link; `chmod` only for a directory of
/// ours that others may read.
pub fn prove_function() -> &'static str {
    r#"pv() {
  pd=$1
  case $pd in /*) ;; *) pd=$PWD/$pd ;; esac
  if [ "$2" = create ] && [ ! -d "$pd" ] && [ ! -L "$pd" ]; then
    pe=$pd
    while [ ! -e "$pe" ] && [ ! -L "$pe" ]; do pe=${pe%/*}; [ -n "$pe" ] || pe=/; done
    pw "$pe" parent || return 1
    mkdir -p -- "$pd" 2>/dev/null || { echo "PUSHSCAN_FAIL=cannot create the work directory $1" >&2; return 1; }
  fi
  [ -e "$pd" ] || [ -L "$pd" ] || return 0
  pw "$pd" own
}
pw() {
  pk=$2
  set -- "$1"; pp=$1
  while [ "$pp" != / ]; do pp=${pp%/*}; [ -n "$pp" ] || pp=/; set -- "$pp" "$@"; done
  ps=$(stat -c '%u %a %F' -- "$@" 2>/dev/null) || { echo "PUSHSCAN_FAIL=cannot prove the work directory $pd private: stat -c failed" >&2; return 1; }
  pn=0
  for pp in "$@"; do
    pn=$((pn+1)); pq=${ps%%"$nl"*}; ps=${ps#*"$nl"}
    pu=${pq%% *}; pr=${pq#* }; pa=${pr%% *}; pf=${pr#* }
    if [ $pn -eq $# ] && [ "$pk" = own ]; then po=1; else po=; fi
    if [ "$pf" = "symbolic link" ]; then
      if [ -n "$po" ]; then echo "PUSHSCAN_FAIL=unsafe work directory $pd: it is a symbolic link (owner uid $pu)" >&2; return 1; fi
      if [ "$pu" != 0 ]; then echo "PUSHSCAN_FAIL=unsafe work directory $pd: its parent $pp is a symbolic link owned by uid $pu" >&2; return 1; fi
      pq=$(stat -L -c '%u %a %F' -- "$pp" 2>/dev/null) || { echo "PUSHSCAN_FAIL=unsafe work directory $pd: its parent $pp is a dangling link" >&2; return 1; }
      pu=${pq%% *}; pr=${pq#* }; pa=${pr%% *}; pf=${pr#* }
    fi
    if [ "$pf" != directory ]; then echo "PUSHSCAN_FAIL=unsafe work directory $pd: $pp is not a directory ($pf)" >&2; return 1; fi
    if [ -n "$po" ]; then
      if [ ! -O "$pp" ]; then echo "PUSHSCAN_FAIL=unsafe work directory $pd: owned by uid $pu (mode $pa), not by the login account; remove it or choose another work_dir" >&2; return 1; fi
      if [ $((0$pa & 022)) -ne 0 ]; then echo "PUSHSCAN_FAIL=unsafe work directory $pd: mode $pa lets group or others write in it; remove it or choose another work_dir" >&2; return 1; fi
      if [ $((0$pa & 077)) -ne 0 ]; then chmod 700 -- "$pp" 2>/dev/null || { echo "PUSHSCAN_FAIL=cannot make the work directory $pd private (chmod 700)" >&2; return 1; }; fi
    else
      if [ "$pu" != 0 ] && [ ! -O "$pp" ]; then echo "PUSHSCAN_FAIL=unsafe work directory $pd: its parent $pp is owned by uid $pu, who could replace it" >&2; return 1; fi
      if [ $((0$pa & 022)) -ne 0 ] && { [ "$pu" != 0 ] || [ $((0$pa & 01000)) -eq 0 ]; }; then echo "PUSHSCAN_FAIL=unsafe work directory $pd: its parent $pp (uid $pu, mode $pa) lets others replace it" >&2; return 1; fi
    fi
  done
  return 0
}
"#
}

/// Shell lines that create (with `create`) and prove `dirs`, exiting `code` on failure.
/// Needs [`prove_function`] and `nl` (a newline) defined before, and `umask 077`.
pub fn prove_lines(dirs: &[String], create: bool, code: u8) -> String {
    let (roots, nested) = roots_and_nested(dirs);
    let mode = if create { " create" } else { "" };
    let mut out = String::new();
    for r in roots {
        out.push_str(&format!("pv {}{mode} || exit {code}\n", sh_word(r)));
    }
    for n in nested {
        let w = sh_word(n);
        if create {
            out.push_str(&format!(
                "[ -d {w} ] || [ -L {w} ] || mkdir -p -- {w} || {{ echo \"PUSHSCAN_FAIL=cannot create \"{w} >&2; exit {code}; }}\n"
            ));
        }
        out.push_str(&format!(
            "if [ -L {w} ] || {{ [ -e {w} ] && {{ [ ! -d {w} ] || [ ! -O {w} ]; }}; }}; then echo \"PUSHSCAN_FAIL=unsafe directory \"{w}\": a link, not a directory, or not the login account's\" >&2; exit {code}; fi\n"
        ));
    }
    out
}

/// The local twin of [`prove_function`], for the `local` transport.
#[cfg(unix)]
pub fn prove_local(dir: &std::path::Path, create: bool) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let shown = dir.display();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let absolute = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("cannot resolve {shown}: {e}"))?
            .join(dir)
    };
    if create && std::fs::symlink_metadata(&absolute).is_err() {
        // What exists of the path must pass the parent rules first: the directories are
        // then created where nobody else can have put a link.
        let existing = absolute
            .ancestors()
            .find(|p| std::fs::symlink_metadata(p).is_ok())
            .unwrap_or(std::path::Path::new("/"));
        for parent in existing.ancestors() {
            check_parent(parent, &shown, me)?;
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&absolute)
            .map_err(|e| format!("cannot create the work directory {shown}: {e}"))?;
    }
    let meta = match std::fs::symlink_metadata(&absolute) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => return Ok(()),
        Err(e) => return Err(format!("cannot stat the work directory {shown}: {e}")),
    };
    if meta.file_type().is_symlink() {
        return Err(format!(
            "unsafe work directory {shown}: it is a symbolic link (owner uid {})",
            meta.uid()
        ));
    }
    if !meta.is_dir() {
        return Err(format!("unsafe work directory {shown}: not a directory"));
    }
    let mode = meta.mode() & 0o7777;
    if meta.uid() != me {
        return Err(format!(
            "unsafe work directory {shown}: owned by uid {} (mode {mode:o}), not by this account; remove it or choose another work_dir",
            meta.uid()
        ));
    }
    if mode & 0o022 != 0 {
        return Err(format!(
            "unsafe work directory {shown}: mode {mode:o} lets group or others write in it; remove it or choose another work_dir"
        ));
    }
    for parent in absolute.ancestors().skip(1) {
        check_parent(parent, &shown, me)?;
    }
    if mode & 0o077 != 0 {
        std::fs::set_permissions(&absolute, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot make the work directory {shown} private: {e}"))?;
    }
    Ok(())
}

/// The parent rules of the module doc for one parent of the work directory `shown`.
#[cfg(unix)]
fn check_parent(
    parent: &std::path::Path,
    shown: &std::path::Display<'_>,
    me: u32,
) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let mut m = std::fs::symlink_metadata(parent)
        .map_err(|e| format!("cannot stat {}: {e}", parent.display()))?;
    if m.file_type().is_symlink() {
        if m.uid() != 0 {
            return Err(format!(
                "unsafe work directory {shown}: its parent {} is a symbolic link owned by uid {}",
                parent.display(),
                m.uid()
            ));
        }
        m = std::fs::metadata(parent)
            .map_err(|e| format!("cannot stat {}: {e}", parent.display()))?;
    }
    let pm = m.mode() & 0o7777;
    if !m.is_dir() {
        return Err(format!(
            "unsafe work directory {shown}: {} is not a directory",
            parent.display()
        ));
    }
    if m.uid() != 0 && m.uid() != me {
        return Err(format!(
            "unsafe work directory {shown}: its parent {} is owned by uid {}, who could replace it",
            parent.display(),
            m.uid()
        ));
    }
    if pm & 0o022 != 0 && (m.uid() != 0 || pm & 0o1000 == 0) {
        return Err(format!(
            "unsafe work directory {shown}: its parent {} (uid {}, mode {pm:o}) lets others replace it",
            parent.display(),
            m.uid()
        ));
    }
    Ok(())
}

/// A leading `~/` of a path on the controller itself, for the `local` transport.
pub fn expand_local(s: &str) -> String {
    match (home_relative(s), dirs::home_dir()) {
        (Some(""), Some(h)) => h.to_string_lossy().into_owned(),
        (Some(rest), Some(h)) => h.join(rest).to_string_lossy().into_owned(),
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_expand_only_a_leading_tilde() {
        assert_eq!(sh_word("~/.pushscan"), "\"$HOME\"'/.pushscan'");
        assert_eq!(sh_word("~"), "\"$HOME\"");
        assert_eq!(sh_word("/tmp/~x"), "'/tmp/~x'");
        assert_eq!(sh_word("~root/x"), "'~root/x'");
        assert_eq!(sh_word("a'b"), "'a'\\''b'");
    }

    /// Runs `pv DIR create` in the system's `/bin/sh`; the reason on failure.
    #[cfg(unix)]
    fn prove_in_sh(dir: &std::path::Path) -> Result<(), String> {
        let script = format!(
            "umask 077\nnl='\n'\n{}pv {} create",
            prove_function(),
            sh_quote(&dir.to_string_lossy())
        );
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", &script])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// A parent that is a link is followed only when root owns the link (`/var/run -> /run`);
    /// the shell proof and the local one agree.
    #[cfg(unix)]
    #[test]
    fn parent_links_count_only_when_root_owns_them() {
        use std::os::unix::fs::{lchown, symlink};
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            panic!("this test creates a link owned by another user: run it as root (scripts/test does)");
        }
        let t = tempfile::tempdir().expect("tempdir");
        let real = t.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let by_root = t.path().join("by-root");
        symlink(&real, &by_root).unwrap();
        let by_other = t.path().join("by-other");
        symlink(&real, &by_other).unwrap();
        lchown(&by_other, Some(65534), Some(65534)).unwrap();

        prove_in_sh(&by_root.join("a")).expect("a root-owned parent link is followed");
        prove_local(&by_root.join("b"), true).expect("the same, locally");
        let sh = prove_in_sh(&by_other.join("c")).expect_err("another user's link");
        assert!(sh.contains("symbolic link owned by uid 65534"), "{sh}");
        let local = prove_local(&by_other.join("d"), true).expect_err("another user's link");
        assert!(
            local.contains("symbolic link owned by uid 65534"),
            "{local}"
        );
        assert!(
            !real.join("c").exists() && !real.join("d").exists(),
            "nothing is created through another user's link"
        );
    }

    #[test]
    fn nested_directories_are_told_from_roots() {
        let dirs = vec![
            "/w".to_string(),
            "/w/reports".to_string(),
            "/other".to_string(),
            "/wx".to_string(),
        ];
        let (roots, nested) = roots_and_nested(&dirs);
        assert_eq!(roots, vec!["/w", "/other", "/wx"]);
        assert_eq!(nested, vec!["/w/reports"]);
    }
}
