//! Operating-system helpers of the lab, all Linux-specific and without shelling out where the
//! kernel tells directly: processes from `/proc` (liveness, command lines, environment
//! markers, process trees, memory), listening TCP sockets from `/proc/net/tcp`, detached
//! spawning (`setsid`), killing whole trees, loopback addresses on `lo` (`ip`), local
//! accounts from `/etc/passwd`, and an advisory lock file so two `up`/`down` on one lab
//! directory never interleave.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

/// An executable called `name` in PATH or the usual sbin/bin directories (absolute path).
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .map(|dir| dir.join(name))
        .chain(
            ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
                .iter()
                .map(|dir| Path::new(dir).join(name)),
        )
        .find(|c| {
            c.is_absolute()
                && fs::metadata(c)
                    .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                    .unwrap_or(false)
        })
}

/// uid and gid of a local account, from `/etc/passwd`.
pub fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 4 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

/// Spawns `cmd` in a new session (`setsid`: no controlling terminal, its own process group),
/// stdin from /dev/null, stdout and stderr appended to `log`. Returns the pid; the child is
/// not waited for here (see [`alive`], which reaps it when it is ours).
pub fn spawn_detached(mut cmd: Command, log: &Path) -> Result<u32> {
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let err = out.try_clone().context("cannot duplicate the log handle")?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    let pid = child.id();
    unreaped().insert(pid);
    Ok(pid)
}

/// Pids of the detached children this process spawned and has not reaped yet. Only these are
/// ever passed to `waitpid`: while a child is unreaped its pid cannot be reused, and once it is
/// reaped it leaves the set, so a stale pid that the kernel has since given to another child of
/// this process (a `smbpasswd` run by another test thread, say) is never collected by mistake.
fn unreaped() -> std::sync::MutexGuard<'static, HashSet<u32>> {
    static SET: std::sync::OnceLock<std::sync::Mutex<HashSet<u32>>> = std::sync::OnceLock::new();
    SET.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether `pid` is a live process (a zombie counts as dead). Reaps it if it is our child.
pub fn alive(pid: u32) -> bool {
    reap(pid);
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(stat_field(&stat, 0), Some("Z") | Some("X")),
        Err(_) => false,
    }
}

/// `waitpid(pid, WNOHANG)` for a detached child spawned by [`spawn_detached`] that has exited
/// (no effect on any other process, nor on a pid already reaped).
pub fn reap(pid: u32) {
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return;
    };
    let mut set = unreaped();
    if !set.contains(&pid) {
        return;
    }
    let mut status = 0;
    // SAFETY: plain syscall with a valid out pointer.
    let r = unsafe { libc::waitpid(raw, &mut status, libc::WNOHANG) };
    // r == pid: collected now; r < 0: not (or no longer) our child. Either way it is done.
    if r != 0 {
        set.remove(&pid);
    }
}

/// Field `i` after the `(comm)` of a `/proc/<pid>/stat` line (0 = state, 1 = ppid).
fn stat_field(stat: &str, i: usize) -> Option<&str> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(i)
}

/// Every pid in `/proc`.
pub fn all_pids() -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// The command line of `pid`, split at NULs.
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// Whether `pid`'s environment holds exactly `entry` (`KEY=value`). Needs root for other
/// users' processes; unreadable counts as no.
pub fn environ_has(pid: u32, entry: &str) -> bool {
    fs::read(format!("/proc/{pid}/environ"))
        .map(|raw| raw.split(|&b| b == 0).any(|e| e == entry.as_bytes()))
        .unwrap_or(false)
}

/// Resident memory of `pid` in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// All descendants of `roots` (not the roots themselves), from `/proc/*/stat`.
pub fn descendants(roots: &[u32]) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for pid in all_pids() {
        if let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) {
            if let Some(ppid) = stat_field(&stat, 1).and_then(|p| p.parse().ok()) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = Vec::new();
    let mut seen: HashSet<u32> = roots.iter().copied().collect();
    let mut stack = roots.to_vec();
    while let Some(pid) = stack.pop() {
        for &child in children.get(&pid).map(Vec::as_slice).unwrap_or(&[]) {
            if seen.insert(child) {
                out.push(child);
                stack.push(child);
            }
        }
    }
    out
}

fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        if pid > 1 && pid != std::process::id() as libc::pid_t {
            // SAFETY: plain syscall.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }
}

/// Stops `roots` and every process below them: SIGTERM to the roots (smbd and the serve
/// process shut down their children on it), up to `grace` for them to go, then SIGKILL to
/// everything left (the trees are collected before any signal, as a dead parent's children
/// are re-parented and can no longer be found from it). Waits (bounded) until all are gone;
/// returns the pids still alive after that (normally none).
pub fn kill_tree(roots: &[u32], grace: Duration) -> Vec<u32> {
    let roots: Vec<u32> = roots.iter().copied().filter(|&p| alive(p)).collect();
    if roots.is_empty() {
        return Vec::new();
    }
    let mut all: Vec<u32> = roots.clone();
    all.extend(descendants(&roots));
    for &pid in &roots {
        signal(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && roots.iter().any(|&p| alive(p)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Children started meanwhile.
    for pid in descendants(&all) {
        if !all.contains(&pid) {
            all.push(pid);
        }
    }
    for &pid in &all {
        if alive(pid) {
            signal(pid, libc::SIGKILL);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<u32> = all.iter().copied().filter(|&p| alive(p)).collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Listening IPv4 TCP sockets, from `/proc/net/tcp`.
pub fn listening_v4() -> HashSet<SocketAddrV4> {
    listening_v4_inodes().into_keys().collect()
}

/// Listening IPv4 TCP sockets with their inode, from `/proc/net/tcp`.
pub fn listening_v4_inodes() -> HashMap<SocketAddrV4, u64> {
    let mut out = HashMap::new();
    let Ok(text) = fs::read_to_string("/proc/net/tcp") else {
        return out;
    };
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
        if fields.len() < 10 || fields[3] != "0A" {
            continue;
        }
        let Some((ip, port)) = fields[1].split_once(':') else {
            continue;
        };
        let (Ok(ip), Ok(port)) = (u32::from_str_radix(ip, 16), u16::from_str_radix(port, 16))
        else {
            continue;
        };
        let inode = fields[9].parse().unwrap_or(0);
        // The kernel prints the address as the in-memory (network order) u32 in hex.
        out.insert(
            SocketAddrV4::new(Ipv4Addr::from(ip.to_ne_bytes()), port),
            inode,
        );
    }
    out
}

/// The processes holding each of the socket `inodes` open (from `/proc/*/fd`).
pub fn socket_owners(inodes: &HashSet<u64>) -> HashMap<u64, Vec<u32>> {
    let mut out: HashMap<u64, Vec<u32>> = HashMap::new();
    if inodes.is_empty() {
        return out;
    }
    for pid in all_pids() {
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            let target = target.to_string_lossy();
            if let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok())
            {
                if inodes.contains(&inode) {
                    let owners = out.entry(inode).or_default();
                    if !owners.contains(&pid) {
                        owners.push(pid);
                    }
                }
            }
        }
    }
    out
}

/// The listening sockets on `port` (any address).
pub fn listeners_on_port(port: u16) -> Vec<SocketAddrV4> {
    let mut v: Vec<SocketAddrV4> = listening_v4()
        .into_iter()
        .filter(|a| a.port() == port)
        .collect();
    v.sort();
    v
}

/// Whether `ip:port` accepts a TCP connection (1 s timeout).
pub fn accepts(ip: Ipv4Addr, port: u16) -> bool {
    let target = SocketAddr::V4(SocketAddrV4::new(ip, port));
    TcpStream::connect_timeout(&target, Duration::from_secs(1)).is_ok()
}

/// The last `n` lines of a text file (lossy), or a note that it cannot be read.
pub fn tail(path: &Path, n: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return format!("(no {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// IPv4 addresses carried by `lo`.
pub fn lo_addresses() -> Result<HashSet<Ipv4Addr>> {
    let ip = find_binary("ip").context("`ip` not found: install it with `apt-get update && apt-get install -y --no-install-recommends iproute2`")?;
    let out = Command::new(&ip)
        .args(["-o", "-4", "addr", "show", "dev", "lo"])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", ip.display()))?;
    if !out.status.success() {
        bail!(
            "`ip addr show dev lo` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "inet")?;
            words.next()?.split('/').next()?.parse().ok()
        })
        .collect())
}

/// Runs `ip -batch -` with one command per line.
fn ip_batch(lines: &[String]) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let ip = find_binary("ip").context("`ip` not found: install it with `apt-get update && apt-get install -y --no-install-recommends iproute2`")?;
    let mut child = Command::new(&ip)
        .args(["-force", "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", ip.display()))?;
    {
        let mut stdin = child.stdin.take().context("ip stdin")?;
        stdin
            .write_all(lines.join("\n").as_bytes())
            .context("cannot write to `ip -batch -`")?;
    }
    let out = child.wait_with_output().context("`ip -batch` failed")?;
    if !out.status.success() {
        bail!(
            "`ip -batch -` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Adds `addrs` to `lo` as /32 (needs root).
pub fn add_lo_addresses(addrs: &[Ipv4Addr]) -> Result<()> {
    let lines: Vec<String> = addrs
        .iter()
        .map(|a| format!("address add {a}/32 dev lo"))
        .collect();
    ip_batch(&lines).context(
        "cannot add the fleet's addresses to the loopback interface (Samba binds only \
         addresses an interface carries; this needs root)",
    )
}

/// Removes `addrs` (added as /32) from `lo`; addresses already gone are fine.
pub fn remove_lo_addresses(addrs: &[Ipv4Addr]) -> Result<()> {
    let present = lo_addresses()?;
    let lines: Vec<String> = addrs
        .iter()
        .filter(|a| present.contains(a))
        .map(|a| format!("address del {a}/32 dev lo"))
        .collect();
    ip_batch(&lines).context("cannot remove the fleet's addresses from the loopback interface")
}

/// An exclusive advisory lock on a file, held until dropped.
pub struct LockFile {
    file: File,
}

impl LockFile {
    /// Waits (bounded, 60 s) for the exclusive lock on `path`, creating the file.
    pub fn acquire(path: &Path) -> Result<LockFile> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // SAFETY: plain syscall on an open descriptor.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(LockFile { file });
            }
            if Instant::now() > deadline {
                bail!(
                    "another pushscan-lab command holds {} for over 60 s",
                    path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        // SAFETY: plain syscall on an open descriptor.
        unsafe {
            libc::flock(self.file.as_raw_fd(), libc::LOCK_UN);
        }
    }
}
