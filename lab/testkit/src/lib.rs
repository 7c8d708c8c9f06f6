//! pushscan-testkit: what the integration tests (`tests/`), the benchmarks (`benches/`) and the
//! lab (`lab/`) share, so each exists once:
//!
//! - [`sshd`]: a real OpenSSH `sshd` fleet on loopback addresses;
//! - [`emocheck`]: the EmoCheck stand-in shipped with the playbooks
//!   (`playbooks/checkers/emocheck-sim.sh`) and the report formats it writes, with
//!   EmoCheck's label tables (English, Japanese, French);
//! - [`measure`]: CPU, RSS and time figures of a child process, a process tree and the
//!   machine, as the benchmarks print them (Linux `/proc`, `wait4`);
//! - [`cargo`]: building another binary of the workspace from a test or the lab;
//! - [`install_exe`] / [`write_exe`]: executables written without "Text file busy";
//! - [`files_under`]: what a host tree holds, for checks of what a sweep left there.
//!
//! Everything here starts real programs; nothing is a mock.

pub mod cargo;
pub mod emocheck;
pub mod measure;
pub mod sshd;

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};

/// Puts an executable at `dest` with `mode` without this process ever holding it open for
/// writing: `install` (a child) writes it. Tests run side by side in one process; a file this
/// process wrote could still be open in a child another test is forking at that moment, and
/// executing it then fails with "Text file busy". A copy made by a child that has exited
/// cannot be.
pub fn install_exe(src: &Path, dest: &Path, mode: u32) {
    let out = std::process::Command::new("install")
        .arg("-m")
        .arg(format!("{mode:o}"))
        .arg(src)
        .arg(dest)
        .output()
        .expect("cannot run install (coreutils)");
    assert!(
        out.status.success(),
        "install {} -> {}: {}",
        src.display(),
        dest.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes an executable script at `dest` (see [`install_exe`] for why a child writes it);
/// the text goes first to `dest` + ".src", which is never executed.
pub fn write_exe(dest: &Path, text: &str, mode: u32) {
    let mut src = dest.as_os_str().to_owned();
    src.push(".src");
    let src = PathBuf::from(src);
    std::fs::write(&src, text).expect("write the script's text");
    install_exe(&src, dest, mode);
}

/// `preferred` if it can be bound on `ip`, else a port free there (never one of `avoid`).
pub fn port_or_free(ip: Ipv4Addr, preferred: u16, avoid: &[u16]) -> u16 {
    if !avoid.contains(&preferred) && TcpListener::bind(SocketAddrV4::new(ip, preferred)).is_ok() {
        return preferred;
    }
    loop {
        let l = TcpListener::bind(SocketAddrV4::new(ip, 0)).expect("bind port 0");
        let port = l.local_addr().expect("bound address").port();
        if !avoid.contains(&port) {
            return port;
        }
    }
}

/// Every entry below `root` that is not a directory (files, and links, which are listed, not
/// entered: a tree a test planted links in is walked as it is, and a link loop cannot trap
/// the walk). Unreadable directories are skipped. In no particular order.
pub fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}
