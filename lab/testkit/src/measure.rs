//! Measurement helpers shared by the benchmarks (`benches/sweep.rs`, `benches/windows.rs`):
//! a child's exit status and rusage from `wait4`, CPU of a process tree and of the whole machine
//! from `/proc`, percentiles and medians. Linux only, like the benchmarks' fleets.

#![allow(dead_code)]

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Exit status and rusage of one child, from `wait4` on its pid.
/// What one measured run cost.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub wall_s: f64,
    /// user + sys of the measured process (the controller or the peer tool).
    pub cpu_s: f64,
    /// Peak RSS of the measured process, KiB (Linux `ru_maxrss`).
    pub peak_rss_kb: i64,
    /// CPU of the fleet side (sshd daemons, or the lab's smbd and WinRM simulator, and
    /// everything they reaped) during the run.
    pub fleet_cpu_s: f64,
    /// CPU of the whole machine (all processes, `/proc/stat`) during the run: a cross-check
    /// of controller + fleet.
    pub machine_cpu_s: f64,
    /// Per-host time p50 / p95 / max, seconds.
    pub host_s: [f64; 3],
}

pub struct Waited {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub cpu_s: f64,
    pub maxrss_kb: i64,
}

pub fn wait4_child(pid: u32) -> std::io::Result<Waited> {
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: plain syscall on our own child's pid with valid out-pointers.
        let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut ru) };
        if r == pid as libc::pid_t {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let (code, signal) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (None, None)
    };
    Ok(Waited {
        code,
        signal,
        cpu_s: tv(ru.ru_utime) + tv(ru.ru_stime),
        maxrss_kb: ru.ru_maxrss,
    })
}

/// p50, p95 and max of per-host durations (seconds).
pub fn host_percentiles(mut v: Vec<f64>) -> [f64; 3] {
    if v.is_empty() {
        return [f64::NAN; 3];
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    [at(0.5), at(0.95), v[v.len() - 1]]
}

pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// The fields after "pid (comm)" of `/proc/<pid>/stat` (index 0 = state, field 3).
pub fn proc_stat(pid: u32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// CPU seconds of the lab daemons and every process they reaped (smbd's per-connection
/// processes, the simulator's checkers): `utime + stime + cutime + cstime`.
pub fn fleet_cpu_s(pids: &[u32]) -> f64 {
    let mut total = 0u64;
    for &pid in pids {
        if let Some(f) = proc_stat(pid) {
            for idx in 11..=14 {
                total += f.get(idx).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            }
        }
    }
    total as f64 / clock_ticks()
}

/// Busy CPU seconds of the whole machine since boot (`/proc/stat`: user nice system irq
/// softirq steal; not idle, not iowait).
pub fn machine_cpu_s() -> f64 {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let busy: u64 = [0usize, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| f.get(i).copied().unwrap_or(0))
        .sum();
    busy as f64 / clock_ticks()
}

pub fn status_text(w: &Waited) -> String {
    match (w.code, w.signal) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "unknown status".into(),
    }
}

pub fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Untimed: report file names carry a one-second stamp; keep runs on a host a second apart.
pub fn settle() {
    std::thread::sleep(Duration::from_millis(1100));
}

/// Newest modification time under `dir` (to warn about a stale release binary).
pub fn newest_source(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let p = entry.path();
        let t = if p.is_dir() {
            newest_source(&p)
        } else {
            entry.metadata().ok().and_then(|m| m.modified().ok())
        };
        newest = newest.max(t);
    }
    newest
}

// ------------------------------------------------------------------------------------------
// Process trees: CPU and memory of a tool that forks (Ansible workers, ssh clients, an SSH
// ControlPersist master that detaches), measured the same way as a single-process tool.
// ------------------------------------------------------------------------------------------

/// Makes this process the reaper of its orphaned descendants (`PR_SET_CHILD_SUBREAPER`): a
/// detached `ssh` ControlPersist master is re-parented to us, not to init, so the benchmark can
/// stop it after the run, and its CPU is counted in our rusage.
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: prctl with an integer argument; no pointers.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// pid -> parent pid of every process on the machine.
pub fn parent_map() -> std::collections::HashMap<u32, u32> {
    let mut map = std::collections::HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(ppid) = proc_stat(pid).and_then(|f| f.get(1)?.parse::<u32>().ok()) {
                map.insert(pid, ppid);
            }
        }
    }
    map
}

/// `roots` and all their descendants, from a [`parent_map`].
pub fn tree_of(map: &std::collections::HashMap<u32, u32>, roots: &[u32]) -> Vec<u32> {
    let mut children: std::collections::HashMap<u32, Vec<u32>> = std::collections::HashMap::new();
    for (&pid, &ppid) in map {
        children.entry(ppid).or_default().push(pid);
    }
    let mut out = Vec::new();
    let mut stack: Vec<u32> = roots
        .iter()
        .copied()
        .filter(|p| map.contains_key(p))
        .collect();
    while let Some(p) = stack.pop() {
        out.push(p);
        if let Some(c) = children.get(&p) {
            stack.extend(c);
        }
    }
    out
}

/// Proportional set size of a process, KiB (`/proc/PID/smaps_rollup`): shared pages are split
/// between the processes that map them, so summing it over a forking tool's processes does
/// not count its shared interpreter pages once per worker.
pub fn pss_kb(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Our children: in a subreaper whose tool has exited, the orphans the tool left.
pub fn orphans() -> Vec<u32> {
    let me = std::process::id();
    parent_map()
        .into_iter()
        .filter(|&(_, ppid)| ppid == me)
        .map(|(pid, _)| pid)
        .collect()
}

/// SIGTERM then (after `grace`) SIGKILL each pid, and reap it (our children only).
pub fn stop_and_reap(pids: &[u32], grace: Duration) {
    for &p in pids {
        // SAFETY: plain syscall on a pid we found as our own child.
        unsafe { libc::kill(p as libc::pid_t, libc::SIGTERM) };
    }
    let deadline = std::time::Instant::now() + grace;
    let mut left: Vec<u32> = pids.to_vec();
    while !left.is_empty() {
        left.retain(|&p| {
            let mut status = 0;
            // SAFETY: non-blocking wait on our own child.
            let r = unsafe { libc::waitpid(p as libc::pid_t, &mut status, libc::WNOHANG) };
            r == 0
        });
        if left.is_empty() {
            break;
        }
        if std::time::Instant::now() > deadline {
            for &p in &left {
                // SAFETY: as above.
                unsafe { libc::kill(p as libc::pid_t, libc::SIGKILL) };
                let mut status = 0;
                // SAFETY: blocking wait on our own child, now killed.
                unsafe { libc::waitpid(p as libc::pid_t, &mut status, 0) };
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
