//! Windows paths of a simulated host and their mapping onto its directory
//! tree: the host's `C:\` is `<root>/C`. Parsing follows Windows rules
//! (`\` or `/` separators, drive-relative `\x`, relative to the current
//! directory, `.`/`..` resolved lexically, trailing dots and spaces dropped),
//! component lookup is case-insensitive like NTFS, and anything that would
//! leave the tree is refused: `..` above `C:\`, another drive, UNC and device
//! paths (`\\server\share`, `\\?\`, `\\.\`), alternate data streams, and
//! symbolic links inside the tree that point outside it. The simulator never
//! touches a file outside `root` through these functions.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// A normalized absolute path on the simulated `C:` drive, as components
/// below `C:\` (empty = `C:\` itself).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WinPath {
    comps: Vec<String>,
}

/// Why a Windows path cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Outside the host tree: other drive, UNC, device path, `..` above the
    /// root, or a link leading out of the tree ("Access is denied.").
    Denied,
    /// Not a valid Windows path (bad characters, empty, reserved name).
    Invalid,
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathError::Denied => f.write_str("Access is denied."),
            PathError::Invalid => {
                f.write_str("The filename, directory name, or volume label syntax is incorrect.")
            }
        }
    }
}

const RESERVED: &[&str] = &[
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

impl WinPath {
    /// `C:\`.
    pub fn root() -> Self {
        WinPath { comps: Vec::new() }
    }

    /// The components below `C:\`.
    pub fn components(&self) -> &[String] {
        &self.comps
    }

    /// The last component (None for `C:\`).
    pub fn file_name(&self) -> Option<&str> {
        self.comps.last().map(String::as_str)
    }

    /// The parent directory (`C:\` is its own parent).
    pub fn parent(&self) -> WinPath {
        let mut comps = self.comps.clone();
        comps.pop();
        WinPath { comps }
    }

    /// This path with one more component (not validated: callers pass names
    /// read from the tree or already checked).
    pub fn join(&self, name: &str) -> WinPath {
        let mut comps = self.comps.clone();
        comps.push(name.to_string());
        WinPath { comps }
    }

    /// Windows display form, e.g. `C:\Windows\Temp`.
    pub fn display(&self) -> String {
        if self.comps.is_empty() {
            return "C:\\".to_string();
        }
        let mut s = String::from("C:");
        for c in &self.comps {
            s.push('\\');
            s.push_str(c);
        }
        s
    }
}

/// True when `s` looks like an absolute Windows path or a UNC/device path
/// (`X:\...`, `X:/...`, `\\...`, `//...`), i.e. something that must be mapped
/// into the tree (or refused) before a program sees it.
pub fn looks_absolute(s: &str) -> bool {
    let b = s.as_bytes();
    (b.len() >= 3 && b[0].is_ascii_alphabetic() && b[1] == b':' && (b[2] == b'\\' || b[2] == b'/'))
        || s.starts_with("\\\\")
        || s.starts_with("//")
}

fn valid_component(c: &str) -> Result<(), PathError> {
    if c.is_empty() {
        return Err(PathError::Invalid);
    }
    if c.contains(':') {
        // Alternate data streams, or a drive letter in the middle of a path.
        return Err(PathError::Denied);
    }
    if c.chars()
        .any(|ch| (ch as u32) < 0x20 || matches!(ch, '<' | '>' | '"' | '|' | '?' | '*'))
    {
        return Err(PathError::Invalid);
    }
    let stem = c.split('.').next().unwrap_or(c).trim_end();
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(stem)) {
        return Err(PathError::Invalid);
    }
    Ok(())
}

/// Parse a Windows path given by a client, relative to `cwd` when it is not
/// absolute. Only the `C:` drive exists.
pub fn parse(input: &str, cwd: &WinPath) -> Result<WinPath, PathError> {
    let s = input.trim_matches(|c| c == ' ' || c == '\t');
    if s.is_empty() {
        return Err(PathError::Invalid);
    }
    if s.contains('\0') {
        return Err(PathError::Invalid);
    }
    if s.starts_with("\\\\") || s.starts_with("//") || s.starts_with("\\/") || s.starts_with("/\\")
    {
        return Err(PathError::Denied);
    }
    let b = s.as_bytes();
    let (mut comps, rest) = if b.len() >= 2 && b[1] == b':' {
        if !b[0].is_ascii_alphabetic() {
            return Err(PathError::Invalid);
        }
        if !b[0].eq_ignore_ascii_case(&b'C') {
            return Err(PathError::Denied);
        }
        let rest = &s[2..];
        if rest.starts_with('\\') || rest.starts_with('/') {
            (Vec::new(), rest)
        } else {
            // `C:foo` is relative to the current directory of drive C.
            (cwd.comps.clone(), rest)
        }
    } else if s.starts_with('\\') || s.starts_with('/') {
        (Vec::new(), s)
    } else {
        (cwd.comps.clone(), s)
    };
    for raw in rest.split(['\\', '/']) {
        if raw.is_empty() || raw == "." {
            continue;
        }
        if raw == ".." {
            if comps.pop().is_none() {
                return Err(PathError::Denied);
            }
            continue;
        }
        // Windows drops trailing dots and spaces of a component.
        let c = raw.trim_end_matches(['.', ' ']);
        if c.is_empty() {
            // "..." and the like: Windows treats them as the current directory.
            continue;
        }
        valid_component(c)?;
        comps.push(c.to_string());
    }
    Ok(WinPath { comps })
}

/// Find the entry of `dir` named `name`, exactly or else case-insensitively.
fn lookup(dir: &Path, name: &str) -> Option<String> {
    if fs::symlink_metadata(dir.join(name)).is_ok() {
        return Some(name.to_string());
    }
    let lower = name.to_lowercase();
    let entries = fs::read_dir(dir).ok()?;
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        if let Some(n) = file_name.to_str() {
            if n.to_lowercase() == lower {
                return Some(n.to_string());
            }
        }
    }
    None
}

/// The host tree below one root directory.
#[derive(Debug, Clone)]
pub struct HostTree {
    /// `<root>/C`, canonicalized.
    drive: PathBuf,
}

impl HostTree {
    /// The tree of `root` (creates `<root>/C` when missing).
    pub fn new(root: &Path) -> io::Result<Self> {
        let drive = root.join("C");
        fs::create_dir_all(&drive)?;
        Ok(HostTree {
            drive: fs::canonicalize(&drive)?,
        })
    }

    /// The tree whose `C:\` is `drive` itself (a Wine prefix's `drive_c`).
    pub fn at_drive(drive: &Path) -> io::Result<Self> {
        Ok(HostTree {
            drive: fs::canonicalize(drive)?,
        })
    }

    /// `<root>/C`.
    pub fn drive(&self) -> &Path {
        &self.drive
    }

    /// Check that `p` (whose parent chain is expected inside the tree) stays
    /// inside it once symbolic links are resolved. With `follow_final`, the
    /// last component is resolved too (for reading or writing through it);
    /// without, only its parent directory is (for removing a link itself).
    pub fn confine(&self, p: &Path, follow_final: bool) -> Result<(), PathError> {
        let mut probe: PathBuf = if follow_final {
            p.to_path_buf()
        } else {
            match p.parent() {
                Some(parent) => parent.to_path_buf(),
                None => return Err(PathError::Denied),
            }
        };
        loop {
            match fs::canonicalize(&probe) {
                Ok(real) => {
                    return if real.starts_with(&self.drive) {
                        Ok(())
                    } else {
                        Err(PathError::Denied)
                    };
                }
                Err(_) => {
                    // Not there (yet): a dangling link, or a path to create.
                    if let Ok(meta) = fs::symlink_metadata(&probe) {
                        if meta.file_type().is_symlink() {
                            return Err(PathError::Denied);
                        }
                    }
                    match probe.parent() {
                        Some(parent) if parent != probe => probe = parent.to_path_buf(),
                        _ => return Err(PathError::Denied),
                    }
                }
            }
        }
    }

    /// Map a Windows path to the real path in the tree: each existing
    /// component is matched case-insensitively, missing ones are kept as
    /// given; the result is confined to the tree (see [`HostTree::confine`]).
    pub fn map(&self, p: &WinPath, follow_final: bool) -> Result<PathBuf, PathError> {
        let mut real = self.drive.clone();
        let mut exists = true;
        for c in &p.comps {
            let name = if exists {
                match lookup(&real, c) {
                    Some(n) => n,
                    None => {
                        exists = false;
                        c.clone()
                    }
                }
            } else {
                c.clone()
            };
            real.push(name);
        }
        self.confine(&real, follow_final)?;
        Ok(real)
    }

    /// Parse and map in one step.
    pub fn resolve(
        &self,
        input: &str,
        cwd: &WinPath,
        follow_final: bool,
    ) -> Result<(WinPath, PathBuf), PathError> {
        let wp = parse(input, cwd)?;
        let real = self.map(&wp, follow_final)?;
        Ok((wp, real))
    }

    /// The Windows path of a real path inside the tree (for messages).
    pub fn to_windows(&self, real: &Path) -> Option<WinPath> {
        let rel = real.strip_prefix(&self.drive).ok()?;
        let mut comps = Vec::new();
        for c in rel.components() {
            comps.push(c.as_os_str().to_str()?.to_string());
        }
        Some(WinPath { comps })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cwd() -> WinPath {
        parse(r"C:\Users\lab", &WinPath::root()).unwrap()
    }

    #[test]
    fn parses_windows_forms() {
        let c = cwd();
        assert_eq!(
            parse(r"C:\Windows\Temp", &c).unwrap().display(),
            r"C:\Windows\Temp"
        );
        assert_eq!(
            parse("c:/windows/temp/", &c).unwrap().display(),
            r"C:\windows\temp"
        );
        assert_eq!(parse(r"\Windows", &c).unwrap().display(), r"C:\Windows");
        assert_eq!(
            parse(r"Desktop\a.txt", &c).unwrap().display(),
            r"C:\Users\lab\Desktop\a.txt"
        );
        assert_eq!(parse(r"C:x", &c).unwrap().display(), r"C:\Users\lab\x");
        assert_eq!(parse(r"..\other", &c).unwrap().display(), r"C:\Users\other");
        assert_eq!(parse(r"C:\a\.\b\..\c", &c).unwrap().display(), r"C:\a\c");
        assert_eq!(parse(r"C:\a. \b", &c).unwrap().display(), r"C:\a\b");
        assert_eq!(parse(r"C:\", &c).unwrap(), WinPath::root());
    }

    #[test]
    fn escapes_are_refused() {
        let c = cwd();
        for bad in [
            r"C:\..",
            r"C:\..\..\etc\passwd",
            r"C:\Windows\..\..\x",
            r"..\..\..",
            r"D:\x",
            r"d:/",
            r"\\server\share\x",
            r"//server/share",
            r"\\?\C:\x",
            r"\\.\PhysicalDrive0",
            r"C:\x\file.txt:stream",
        ] {
            assert_eq!(parse(bad, &c), Err(PathError::Denied), "{bad}");
        }
        for bad in [
            "",
            "   ",
            "C:\\a\0b",
            r"C:\a<b",
            r"C:\NUL",
            r"C:\x\con.txt",
            "1:\\x",
        ] {
            assert_eq!(parse(bad, &c), Err(PathError::Invalid), "{bad:?}");
        }
    }

    #[test]
    fn looks_absolute_forms() {
        assert!(looks_absolute(r"C:\x"));
        assert!(looks_absolute("d:/x"));
        assert!(looks_absolute(r"\\srv\share"));
        assert!(!looks_absolute("/quiet"));
        assert!(!looks_absolute("relative\\x"));
        assert!(!looks_absolute("C:"));
    }

    #[test]
    fn maps_case_insensitively_and_confines() {
        let dir = tempfile::tempdir().unwrap();
        let tree = HostTree::new(dir.path()).unwrap();
        fs::create_dir_all(tree.drive().join("Windows/Temp")).unwrap();
        fs::write(tree.drive().join("Windows/Temp/Report.TXT"), b"x").unwrap();
        let (_, real) = tree
            .resolve(r"c:\WINDOWS\temp\report.txt", &WinPath::root(), true)
            .unwrap();
        assert_eq!(real, tree.drive().join("Windows/Temp/Report.TXT"));
        let (_, real) = tree
            .resolve(r"C:\windows\new\x", &WinPath::root(), true)
            .unwrap();
        assert_eq!(real, tree.drive().join("Windows/new/x"));
        assert_eq!(
            tree.to_windows(&real).unwrap().display(),
            r"C:\Windows\new\x"
        );

        // A link inside the tree that points outside it.
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(outside.path(), tree.drive().join("out")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret"),
            tree.drive().join("Windows/link.txt"),
        )
        .unwrap();
        std::os::unix::fs::symlink("/nonexistent/dangling", tree.drive().join("dangling")).unwrap();
        let root = WinPath::root();
        assert_eq!(
            tree.resolve(r"C:\out\secret", &root, true),
            Err(PathError::Denied)
        );
        assert_eq!(
            tree.resolve(r"C:\out\new", &root, false),
            Err(PathError::Denied)
        );
        assert_eq!(
            tree.resolve(r"C:\Windows\link.txt", &root, true),
            Err(PathError::Denied)
        );
        assert_eq!(
            tree.resolve(r"C:\dangling\x", &root, true),
            Err(PathError::Denied)
        );
        // The link itself may be removed: only its parent is checked.
        assert!(tree.resolve(r"C:\Windows\link.txt", &root, false).is_ok());
    }
}
