//! Owners and DACLs of the simulated hosts' files, for `dir /q` and `icacls`.
//!
//! A Linux tree has no Windows security descriptors, so the simulator keeps them in extended
//! attributes of the real files (`user.pushscan-lab.owner`, `user.pushscan-lab.acl`: one
//! entry per line in `icacls`' form, `PRINCIPAL:(flags)(rights)`). A file without them has
//! what Windows gives a folder by default where it lies: owner `BUILTIN\Administrators`,
//! and the entries inherited from `C:\Windows\Temp` (where BUILTIN\Users may create files
//! and folders) below it, or from `C:\Windows` (Users read only) elsewhere. Tests use
//! [`set`] to give a directory the owner and entries an attacker would.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

const OWNER: &str = "user.pushscan-lab.owner";
const ACL: &str = "user.pushscan-lab.acl";

/// The owner of a file the simulator did not set one for.
pub const DEFAULT_OWNER: &str = r"BUILTIN\Administrators";

/// Inherited by a folder made in `C:\Windows\Temp` (Windows Server 2019's Temp ACL).
const TEMP_INHERITED: &[&str] = &[
    r"NT AUTHORITY\SYSTEM:(I)(OI)(CI)(F)",
    r"BUILTIN\Administrators:(I)(OI)(CI)(F)",
    r"BUILTIN\Users:(I)(CI)(S,WD,AD,X)",
    r"CREATOR OWNER:(I)(OI)(CI)(IO)(F)",
];

/// Inherited by a folder made elsewhere under `C:\` (as under `C:\Windows`).
const DEFAULT_INHERITED: &[&str] = &[
    r"NT AUTHORITY\SYSTEM:(I)(OI)(CI)(F)",
    r"BUILTIN\Administrators:(I)(OI)(CI)(F)",
    r"BUILTIN\Users:(I)(OI)(CI)(RX)",
    r"CREATOR OWNER:(I)(OI)(CI)(IO)(F)",
];

fn get(path: &Path, name: &str) -> Option<String> {
    let p = CString::new(path.as_os_str().as_bytes()).ok()?;
    let n = CString::new(name).ok()?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: both strings are NUL-terminated, the buffer is valid for its length.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return None;
    }
    buf.truncate(len as usize);
    String::from_utf8(buf).ok()
}

fn put(path: &Path, name: &str, value: &str) -> io::Result<()> {
    let p = CString::new(path.as_os_str().as_bytes())?;
    let n = CString::new(name)?;
    // SAFETY: both strings are NUL-terminated, the value is valid for its length.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets the owner and/or the DACL entries of a real file of a host tree.
pub fn set(path: &Path, owner: Option<&str>, aces: Option<&[String]>) -> io::Result<()> {
    if let Some(o) = owner {
        put(path, OWNER, o)?;
    }
    if let Some(a) = aces {
        put(path, ACL, &a.join("\n"))?;
    }
    Ok(())
}

/// The owner of `path`.
pub fn owner(path: &Path) -> String {
    get(path, OWNER).unwrap_or_else(|| DEFAULT_OWNER.to_string())
}

/// The DACL entries of `path`, whose components below `C:\` are `comps`.
pub fn aces(path: &Path, comps: &[String]) -> Vec<String> {
    if let Some(v) = get(path, ACL) {
        return v.lines().map(str::to_string).collect();
    }
    let in_temp = comps.len() > 2
        && comps[0].eq_ignore_ascii_case("windows")
        && comps[1].eq_ignore_ascii_case("temp");
    let base = if in_temp {
        TEMP_INHERITED
    } else {
        DEFAULT_INHERITED
    };
    base.iter().map(|s| s.to_string()).collect()
}

/// An `icacls /grant` operand (`*S-1-5-18:(OI)(CI)F`) as `icacls` prints the entry.
pub fn grant_entry(spec: &str) -> Option<String> {
    let (who, perm) = spec.split_once(':')?;
    let who = match who.to_ascii_uppercase().as_str() {
        "*S-1-5-18" => r"NT AUTHORITY\SYSTEM".to_string(),
        "*S-1-5-32-544" => r"BUILTIN\Administrators".to_string(),
        "*S-1-5-32-545" => r"BUILTIN\Users".to_string(),
        "*S-1-1-0" => "Everyone".to_string(),
        _ => who.to_string(),
    };
    let mut out = format!("{who}:");
    let mut rest = perm;
    while let Some(r) = rest.strip_prefix('(') {
        let end = r.find(')')?;
        out.push_str(&format!("({})", &r[..end]));
        rest = &r[end + 1..];
    }
    if rest.is_empty() {
        return None;
    }
    if rest.starts_with('(') || rest.contains(['(', ')']) {
        return None;
    }
    out.push_str(&format!("({rest})"));
    Some(out)
}
