//! Process limits and resources a large sweep needs. With `--forks 1000` every host in
//! flight holds at least one socket (SSH) or two (WinRM + SMB), plus the journal's files: far
//! over the common soft limit of 1,024 open files. Like other network tools, pushscan raises
//! its soft limit to the hard limit the administrator allows, once at start, and the sweep
//! warns when even that is too low for the concurrency asked (connections would then fail
//! with EMFILE, and those hosts would end `unreachable` with that reason). It also hands the
//! allocator's free pages back to the system between the phases of a large sweep.

/// Sockets one host in flight may hold at once (WinRM HTTP + SMB + a spare for a reconnect).
pub const FILES_PER_HOST: u64 = 3;
/// Files the process needs besides the hosts' sockets (journal, logs, runtime).
pub const FILES_BASE: u64 = 64;

/// Raises the soft open-file limit to the hard limit; returns the soft limit now in force
/// (`None` where there is no such limit or it cannot be read).
#[cfg(unix)]
pub fn raise_open_files() -> Option<u64> {
    // SAFETY: an all-zero rlimit is valid; getrlimit fills it.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        let wanted = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: valid pointer to an initialised rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    Some(lim.rlim_cur as u64)
}

/// Windows has no per-process open-file limit of this kind for sockets.
#[cfg(not(unix))]
pub fn raise_open_files() -> Option<u64> {
    None
}

/// The most hosts that can be in flight with `limit` open files.
pub fn max_in_flight(limit: u64) -> u64 {
    limit.saturating_sub(FILES_BASE) / FILES_PER_HOST
}

/// Hands the allocator's free pages back to the system.
///
/// glibc keeps freed memory mapped: a sweep's start (reading a 10,000-host inventory,
/// rendering every host's plan, storing the inventory in the journal) peaks on the main
/// thread's heap, while hosts then run on the worker threads' heaps and never reuse those
/// pages; freed session buffers also stay resident between the allocations still in use.
/// `malloc_trim` returns every whole free page (not only the heap's top). The sweep calls it
/// once its hosts are planned, then a [`Trimmer`] calls it every few seconds while hosts are
/// in flight: a walk of the free lists, a few milliseconds. Other allocators and platforms:
/// nothing to do.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn release_free_memory() {
    // SAFETY: malloc_trim takes no pointer; it only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() {}

/// How often a [`Trimmer`] hands free memory back.
const TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Hands free memory back to the system every [`TRIM_INTERVAL`] for as long as it lives.
///
/// Why by time and not by hosts finished: a sweep's first thousand sessions log in before any
/// host finishes, and their key exchanges free about as much as they keep; at 10,000 hosts
/// the second sweep's memory peaked there, before a trim counted in finished hosts came.
/// The trim runs on tokio's blocking pool; dropping the trimmer stops it.
pub struct Trimmer(Option<tokio::task::JoinHandle<()>>);

impl Trimmer {
    /// Starts trimming (a task on the current runtime), or nothing where trimming is a no-op.
    pub fn start() -> Trimmer {
        if !cfg!(all(target_os = "linux", target_env = "gnu")) {
            return Trimmer(None);
        }
        Trimmer(Some(tokio::spawn(async {
            let mut every = tokio::time::interval(TRIM_INTERVAL);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every.tick().await; // the first tick is now: the caller has just trimmed
            loop {
                every.tick().await;
                // A failed join only means the runtime is shutting down.
                let _ = tokio::task::spawn_blocking(release_free_memory).await;
            }
        })))
    }
}

impl Drop for Trimmer {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}
