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
