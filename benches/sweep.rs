//! Sweep benchmark: the real release `pushscan` binary against a real OpenSSH fleet on
//! loopback (one `sshd` per 16 addresses, see `lab/testkit/src/sshd.rs`), with a 1 MiB checker.
//!
//! Not a test: nothing here asserts on time. It measures, per sweep of N hosts:
//! wall time, the controller's CPU (user + sys of the `pushscan` child, from `wait4` on its pid),
//! its peak RSS (`ru_maxrss` of that same child), hosts/s, and the fleet-side CPU (sshd, login
//! shells, checker: the `cutime + cstime` growth of the sshd daemons, which reap every session),
//! the whole machine's busy CPU from `/proc/stat` as a cross-check (CPU used by processes outside
//! the benchmark is printed: on a shared machine it inflates every figure), and the per-host
//! time (p50 / p95 / max).
//!
//! On a fleet of loopback hosts the remote side runs on the controller's cores, so a sweep is
//! bound by the cost of a login: here root's `~/.bashrc` runs `pyenv init` (and so a
//! `pyenv rehash` that takes a lock shared by every login) in each SSH shell. The floor shows
//! that cost; compare pushscan with it, not with zero.
//!
//! Figures:
//! * `pushscan first`  - the whole job on hosts that do not have the checker: copy the 1 MiB
//!   checker, run it, fetch the report, remove the binary (`cleanup: checker: true`, and every
//!   host's directory is wiped before each run, untimed).
//! * `pushscan second` - the next sweep of the same fleet: the checker is already there with the
//!   pinned hash, so there is no push (`cleanup: checker: false`; one untimed priming sweep
//!   leaves the binary on every host first).
//! * `floor`           - the same fan-out doing only connect + authenticate + run `true`, with
//!   the same SSH library (pushscan's own `SshConnector`/`Connection::exec`, russh), the same
//!   concurrency (a tokio `Semaphore(forks)`) on one multi-thread runtime. It runs in a child
//!   process (this binary re-executed with `--floor-child`), so its CPU and RSS are measured
//!   exactly like pushscan's.
//!
//! Every run is checked: exit code 0, every host `not_detected` in `pushscan report --format
//! json`, and `pushed` true (first) or false (second); the floor child checks every `true`
//! exited 0. A run that did not do the job is reported loudly, left out of the figures, and
//! makes the benchmark exit 1.
//!
//! Run it through `benches/scripts/run` (builds the release binary first). Flags:
//!   --hosts N      fleet size (default 200, or $PUSHSCAN_BENCH_HOSTS)
//!   --runs K       timed runs per figure (default 3, or $PUSHSCAN_BENCH_RUNS)
//!   --forks LIST   comma-separated concurrency levels (default 50; e.g. 50,200)
//!   --json FILE    also write the raw figures as JSON
//!   --pushscan BIN the binary to measure (default target/release/pushscan)
//!   --no-floor     skip the floor measurement

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use pushscan::transport::ssh::{SshConnector, SshTarget};
use pushscan::transport::{CommandSpec, Connection, Credentials};

use pushscan_testkit::measure::*;
use pushscan_testkit::sshd::{self, SshFleet};

/// Exact size of the benchmark checker (the EmoCheck stand-in, padded).
const CHECKER_BYTES: usize = 1_048_576;
const CHECKER_SRC: &str = pushscan_testkit::emocheck::SCRIPT;

#[derive(Parser, Debug)]
#[command(
    name = "sweep-bench",
    about = "pushscan sweep benchmark over a loopback OpenSSH fleet"
)]
struct Args {
    /// Fleet size.
    #[arg(long, env = "PUSHSCAN_BENCH_HOSTS", default_value_t = 200)]
    hosts: usize,
    /// Timed runs per figure.
    #[arg(long, env = "PUSHSCAN_BENCH_RUNS", default_value_t = 3)]
    runs: usize,
    /// Comma-separated concurrency levels (pushscan --forks and the floor's semaphore).
    #[arg(long, value_delimiter = ',', default_value = "50")]
    forks: Vec<usize>,
    /// Write the raw figures as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// The pushscan binary to measure [default: target/release/pushscan].
    #[arg(long, value_name = "BIN")]
    pushscan: Option<PathBuf>,
    /// Tools to measure, comma-separated: pushscan, floor, ansible, clush.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "pushscan,floor,ansible,clush"
    )]
    tools: Vec<Tool>,
    /// Skip the floor (connect + auth + `true`) measurement (same as leaving it out of --tools).
    #[arg(long)]
    no_floor: bool,
    /// The ansible-playbook to run (benches/scripts/run installs ansible-core in a venv and passes it).
    #[arg(
        long,
        env = "PUSHSCAN_BENCH_ANSIBLE",
        default_value = "ansible-playbook"
    )]
    ansible_playbook: PathBuf,
    /// The clush to run (Debian package clustershell).
    #[arg(long, env = "PUSHSCAN_BENCH_CLUSH", default_value = "clush")]
    clush: PathBuf,
    /// Sample pushscan's memory over each sweep (every 0.5 s, with the hosts finished so far)
    /// and write it as CSV to FILE; prints memory at each tenth of the hosts.
    #[arg(long, value_name = "FILE")]
    rss_curve: Option<PathBuf>,
    /// Log in to the fleet as this local account (root only; `benches/scripts/run` creates
    /// `pushscan-bench` with `/bin/sh` as its shell, so a login runs no start-up file).
    /// Default: the user running the benchmark.
    #[arg(long, env = "PUSHSCAN_BENCH_USER", value_name = "NAME")]
    fleet_user: Option<String>,
    /// Where the hosts' directories live: `tmpfs` (a fresh directory in /dev/shm), `disk`
    /// (in the lab's temporary directory, $TMPDIR), or a directory path. On a real fleet each
    /// host writes the checker to its own disk; here every "host" shares this machine's
    /// kernel, and a disk file system's writeback and discard of 1 MiB per host lands on the
    /// same two cores as the tools. tmpfs keeps that out of the comparison (the same for
    /// every tool); `disk` shows it.
    #[arg(
        long,
        env = "PUSHSCAN_BENCH_FLEET_FS",
        default_value = "tmpfs",
        value_name = "WHERE"
    )]
    fleet_fs: String,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,

    // ---- floor child mode (internal) ----
    #[arg(long, hide = true)]
    floor_child: bool,
    /// Floor child: file of `address port` lines.
    #[arg(long, hide = true)]
    targets: Option<PathBuf>,
    #[arg(long, hide = true)]
    key: Option<PathBuf>,
    #[arg(long, hide = true)]
    known_hosts: Option<PathBuf>,
    #[arg(long, hide = true)]
    user: Option<String>,
}

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "--reap-child") {
        return reap_child(argv.get(2..).unwrap_or_default());
    }
    let args = Args::parse();
    if args.floor_child {
        return floor_child(&args);
    }
    match bench(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("\nBENCHMARK ERROR: {e}");
            ExitCode::from(2)
        }
    }
}

// ------------------------------------------------------------------------------------------
// Measurement of one child process
// ------------------------------------------------------------------------------------------

/// Waits until the daemons have reaped every session (so their CPU is in `cutime`).
fn wait_sessions_gone(fleet: &SshFleet) -> usize {
    let roots = fleet.daemon_pids();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = sshd::process_descendants(&roots).len();
        if left == 0 || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `--reap-child PROGRAM ARGS...`: the wrapper every measured tool runs under. It makes
/// itself the subreaper of the tool's descendants (so a detached `ssh` ControlPersist master
/// is re-parented to it, not to init), runs the tool, then stops and reaps whatever the tool
/// left. Its own rusage, which the benchmark reads with `wait4`, then covers the tool's whole
/// tree. The wrapper sits between the benchmark and the tool only: the fleet's daemons are
/// not below it, so their orphans never count as the tool's.
fn reap_child(argv: &[std::ffi::OsString]) -> ExitCode {
    let Some((program, rest)) = argv.split_first() else {
        eprintln!("--reap-child needs a program");
        return ExitCode::from(64);
    };
    if let Err(e) = become_subreaper() {
        eprintln!("PR_SET_CHILD_SUBREAPER: {e}");
        return ExitCode::from(70);
    }
    let status = Command::new(program).args(rest).status();
    let left = orphans();
    stop_and_reap(&left, Duration::from_secs(5));
    match status {
        Ok(st) => {
            use std::os::unix::process::ExitStatusExt as _;
            let code = st
                .code()
                .or_else(|| st.signal().map(|s| 128 + s))
                .unwrap_or(70);
            ExitCode::from(u8::try_from(code).unwrap_or(70))
        }
        Err(e) => {
            eprintln!("cannot start {}: {e}", program.to_string_lossy());
            ExitCode::from(70)
        }
    }
}

/// `cmd` run under [`reap_child`].
fn wrapped(cmd: &Command) -> Result<Command, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut w = Command::new(exe);
    w.arg("--reap-child")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => w.env(k, v),
            None => w.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        w.current_dir(dir);
    }
    Ok(w)
}

/// Memory of the measured tree over time (`--rss-curve`): seconds since start, the tree's
/// memory (KiB), and hosts finished (progress lines written so far).
#[derive(Clone, Copy, Debug)]
struct CurvePoint {
    t_s: f64,
    kb: u64,
    done: usize,
}

/// Samples the measured tool's process tree (the child, its descendants, and the orphans it
/// left with us as subreaper) until stopped: peak summed PSS, and a curve when asked.
struct Sampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<(u64, Vec<CurvePoint>)>,
}

impl Sampler {
    fn start(child: u32, progress: Option<PathBuf>) -> Sampler {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        // The curve samples less often: a 10,000-host fleet has thousands of processes to scan.
        let every = if progress.is_some() {
            Duration::from_millis(500)
        } else {
            Duration::from_millis(250)
        };
        let handle = std::thread::spawn(move || {
            let started = Instant::now();
            let mut peak = 0u64;
            let mut curve = Vec::new();
            loop {
                let map = parent_map();
                // The wrapper itself is a few hundred KiB: leave it out.
                let kb: u64 = tree_of(&map, &[child])
                    .into_iter()
                    .filter(|&p| p != child)
                    .map(pss_kb)
                    .sum();
                peak = peak.max(kb);
                if let Some(path) = &progress {
                    let done = fs::read(path)
                        .map(|b| {
                            b.split(|&c| c == b'\n')
                                .filter(|l| l.starts_with(b"["))
                                .count()
                        })
                        .unwrap_or(0);
                    curve.push(CurvePoint {
                        t_s: started.elapsed().as_secs_f64(),
                        kb,
                        done,
                    });
                }
                if flag.load(std::sync::atomic::Ordering::Relaxed) {
                    return (peak, curve);
                }
                std::thread::sleep(every);
            }
        });
        Sampler { stop, handle }
    }

    fn finish(self) -> (u64, Vec<CurvePoint>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.join().unwrap_or((0, Vec::new()))
    }
}

/// Runs `cmd` (stdout/stderr to files) under [`reap_child`], measures it and everything it
/// started, returns the sample, the exit status and (with `curve`) the memory curve.
///
/// CPU is the wrapper's `wait4` rusage: the tool, every process it reaped, and the orphans it
/// left (an `ssh` ControlPersist master detaches; the wrapper inherits it, stops it after the
/// run and reaps it, so its CPU counts). Memory is the larger of the tool's own peak RSS
/// (the wrapper's `ru_maxrss`, the largest of its tree) and the peak of the tree's summed
/// PSS, sampled.
fn measure(
    lab: &Lab,
    cmd: Command,
    out: &Path,
    err: &Path,
    curve: bool,
) -> Result<(Sample, Waited, Vec<CurvePoint>), String> {
    let fleet = &lab.fleet;
    let mut cmd = wrapped(&cmd)?;
    let stdout = fs::File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let stderr = fs::File::create(err).map_err(|e| format!("{}: {e}", err.display()))?;
    cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
    let daemons = fleet.daemon_pids();
    if wait_sessions_gone(fleet) != 0 {
        eprintln!("  warning: sshd sessions from an earlier run are still alive");
    }
    let fleet_before = fleet_cpu_s(&daemons);
    let machine_before = machine_cpu_s();
    let start = Instant::now();
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    let sampler = Sampler::start(child.id(), curve.then(|| err.to_path_buf()));
    let waited = wait4_child(child.id()).map_err(|e| format!("wait4: {e}"))?;
    let wall_s = start.elapsed().as_secs_f64();
    let (tree_peak_kb, points) = sampler.finish();
    let cpu_s = waited.cpu_s;
    let left = wait_sessions_gone(fleet);
    if left != 0 {
        eprintln!("  warning: {left} sshd session process(es) still alive 20 s after the run");
    }
    let fleet_cpu = fleet_cpu_s(&daemons) - fleet_before;
    let machine_cpu = machine_cpu_s() - machine_before;
    Ok((
        Sample {
            wall_s,
            cpu_s,
            peak_rss_kb: waited.maxrss_kb.max(tree_peak_kb as i64),
            fleet_cpu_s: fleet_cpu,
            machine_cpu_s: machine_cpu,
            host_s: [f64::NAN; 3],
        },
        waited,
        points,
    ))
}

// ------------------------------------------------------------------------------------------
// The lab: fleet, checker, inventories, playbooks, scripts
// ------------------------------------------------------------------------------------------

/// A tool measured on the fleet.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
enum Tool {
    /// `pushscan sweep`.
    Pushscan,
    /// connect + authenticate + `true` with pushscan's SSH library (the floor).
    Floor,
    /// `ansible-playbook` with an equivalent playbook.
    Ansible,
    /// ClusterShell `clush` fanning out OpenSSH `ssh`/`scp`.
    Clush,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Pushscan => "pushscan",
            Tool::Floor => "floor",
            Tool::Ansible => "ansible",
            Tool::Clush => "clush",
        }
    }
}

struct Lab {
    fleet: SshFleet,
    root: tempfile::TempDir,
    /// The directory holding every host's directory (see `--fleet-fs`).
    hosts_root: PathBuf,
    /// Owns `hosts_root` when the benchmark created it outside `root`.
    _hosts_tmp: Option<tempfile::TempDir>,
    pushscan: PathBuf,
    ansible_playbook: PathBuf,
    clush: PathBuf,
    hosts: usize,
    /// uid and gid of `--fleet-user`: the host directories belong to it.
    owner: Option<(u32, u32)>,
    /// SHA-256 of the checker.
    sha: String,
}

impl Lab {
    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }
    /// Every host's directory lives under here, named by its address: all "hosts" share this
    /// machine's file system, so each needs its own directory.
    fn hosts_dir(&self) -> PathBuf {
        self.hosts_root.join("hosts")
    }
    fn host_dir(&self, address: &str) -> PathBuf {
        self.hosts_dir().join(address)
    }
    /// The checker every tool copies (1 MiB).
    fn checker(&self) -> PathBuf {
        self.path("emocheck-sim-1MiB.sh")
    }
}

/// The directory for the hosts' directories named by `--fleet-fs`, and the temporary
/// directory owning it when the benchmark made one.
fn fleet_fs_root(
    choice: &str,
    lab_root: &Path,
) -> Result<(PathBuf, Option<tempfile::TempDir>), String> {
    let base = match choice {
        "disk" => return Ok((lab_root.to_path_buf(), None)),
        "tmpfs" => PathBuf::from("/dev/shm"),
        path => PathBuf::from(path),
    };
    let dir = tempfile::Builder::new()
        .prefix("pushscan-bench-hosts-")
        .tempdir_in(&base)
        .map_err(|e| {
            format!(
                "--fleet-fs {choice}: cannot create a directory in {}: {e}",
                base.display()
            )
        })?;
    chmod(dir.path(), 0o755)?;
    Ok((dir.path().to_path_buf(), Some(dir)))
}

/// The file system type of the mount holding `path` (from /proc/self/mounts).
fn fs_type(path: &Path) -> String {
    let Ok(path) = fs::canonicalize(path) else {
        return "unknown".into();
    };
    let Ok(mounts) = fs::read_to_string("/proc/self/mounts") else {
        return "unknown".into();
    };
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let (_dev, mnt, ty) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(mnt).then(|| (mnt.len(), ty.to_string()))
        })
        .max_by_key(|(n, _)| *n)
        .map_or_else(|| "unknown".into(), |(_, t)| t)
}

/// uid and gid of a local account.
fn account_ids(name: &str) -> Result<(u32, u32), String> {
    let id = |flag: &str| -> Result<u32, String> {
        let out = Command::new("id")
            .arg(flag)
            .arg(name)
            .output()
            .map_err(|e| format!("id: {e}"))?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| {
                format!("no local account {name:?} (benches/scripts/run creates pushscan-bench)")
            })
    };
    Ok((id("-u")?, id("-g")?))
}

fn chmod(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

fn chown(lab: &Lab, path: &Path) -> Result<(), String> {
    if let Some((uid, gid)) = lab.owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(|e| format!("chown {}: {e}", path.display()))?;
    }
    Ok(())
}

/// An empty host tree owned by the fleet account (before a first sweep: no checker anywhere).
fn fresh_hosts_dir(lab: &Lab) -> Result<(), String> {
    let hosts_dir = lab.hosts_dir();
    let _ = fs::remove_dir_all(&hosts_dir);
    fs::create_dir_all(&hosts_dir).map_err(|e| format!("{}: {e}", hosts_dir.display()))?;
    chown(lab, &hosts_dir)
}

/// Identity of a host's checker file: (inode, size, mtime ns). A push (write + rename, or
/// write in place) changes it.
type Fingerprint = (u64, u64, i128);

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    use std::os::unix::fs::MetadataExt as _;
    let m = fs::metadata(path).ok()?;
    Some((
        m.ino(),
        m.size(),
        m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
    ))
}

/// Before a second sweep (untimed): every host has its directory, an empty `reports/` and the
/// checker with the pinned hash, as a sweep that kept it would leave them. The checker is one
/// file hard-linked into every host directory (1 MiB on disk for 10,000 hosts); any re-push
/// replaces or rewrites it, which [`fingerprint`] sees.
fn prime_hosts(lab: &Lab) -> Result<Vec<Option<Fingerprint>>, String> {
    fresh_hosts_dir(lab)?;
    // Beside the hosts (hard links cannot cross file systems, see `--fleet-fs`).
    let master = lab.hosts_root.join("primed-checker");
    let _ = fs::remove_file(&master);
    fs::copy(lab.checker(), &master).map_err(|e| format!("{}: {e}", master.display()))?;
    chmod(&master, 0o700)?;
    chown(lab, &master)?;
    let mut prints = Vec::with_capacity(lab.hosts);
    for address in &lab.fleet.addresses {
        let dir = lab.host_dir(address);
        let reports = dir.join("reports");
        fs::create_dir_all(&reports).map_err(|e| format!("{}: {e}", reports.display()))?;
        chown(lab, &dir)?;
        chown(lab, &reports)?;
        let dest = dir.join(REMOTE_NAME);
        fs::hard_link(&master, &dest).map_err(|e| format!("{}: {e}", dest.display()))?;
        prints.push(fingerprint(&dest));
    }
    Ok(prints)
}

/// The EmoCheck stand-in padded with a trailing comment block to exactly `CHECKER_BYTES`.
fn build_checker(dest: &Path) -> Result<String, String> {
    let mut bytes = fs::read(CHECKER_SRC).map_err(|e| format!("{CHECKER_SRC}: {e}"))?;
    if bytes.len() + 1 > CHECKER_BYTES {
        return Err(format!(
            "{CHECKER_SRC} is already over {CHECKER_BYTES} bytes"
        ));
    }
    if !bytes.ends_with(b"\n") {
        bytes.push(b'\n');
    }
    let line = format!("# {}\n", "pushscan benchmark padding ".repeat(3).trim_end());
    while bytes.len() + line.len() <= CHECKER_BYTES {
        bytes.extend_from_slice(line.as_bytes());
    }
    let room = CHECKER_BYTES - bytes.len();
    if room > 0 {
        // A last, shorter comment line ("#...\n", or just "\n").
        bytes.extend(std::iter::repeat_n(b'#', room - 1));
        bytes.push(b'\n');
    }
    assert_eq!(bytes.len(), CHECKER_BYTES);
    fs::write(dest, &bytes).map_err(|e| format!("{}: {e}", dest.display()))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// The checker's name in every host directory (the same for every tool).
const REMOTE_NAME: &str = "emocheck-sim.sh";

fn host_name(i: usize) -> String {
    format!("h{:05}", i + 1)
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn write_pushscan_files(lab: &Lab) -> Result<(), String> {
    let mut yaml = String::from("all:\n  vars:\n    ansible_connection: ssh\n  hosts:\n");
    for (i, address) in lab.fleet.addresses.iter().enumerate() {
        yaml.push_str(&format!(
            "    {}:\n      ansible_host: {address}\n      ansible_port: {}\n      pushscan_dir: {}\n      scenario: clean\n",
            host_name(i),
            lab.fleet.port,
            lab.host_dir(address).display()
        ));
    }
    write(&lab.path("inventory.yml"), &yaml)?;
    write_playbook(&lab.path("first.yml"), &lab.checker(), &lab.sha, true)?;
    write_playbook(&lab.path("second.yml"), &lab.checker(), &lab.sha, false)
}

/// Like `playbooks/emocheck-ssh.yml`, pointing at the 1 MiB checker.
fn write_playbook(
    path: &Path,
    checker: &Path,
    sha: &str,
    remove_checker: bool,
) -> Result<(), String> {
    let text = format!(
        "# pushscan sweep benchmark (benches/sweep.rs); cleanup.checker: {remove_checker}\n\
         name: EmoCheck stand-in over SSH (1 MiB, benchmark)\n\
         checker:\n  path: {}\n  sha256: \"{sha}\"\n  platform: linux\n  remote_name: {REMOTE_NAME}\n\
         work_dir: \"{{{{ pushscan_dir }}}}\"\n\
         run_dir: \"{{{{ work_dir }}}}/reports\"\n\
         args: [\"/quiet\", \"/output\", \"{{{{ run_dir }}}}\", \"/host\", \"{{{{ inventory_hostname }}}}\", \"/scenario\", \"{{{{ scenario | default('clean') }}}}\"]\n\
         timeout: 60s\n\
         results:\n  glob: \"*_emocheck.*\"\n  parser: emocheck\n  max_file_size: 1MiB\n\
         cleanup:\n  checker: {remove_checker}\n  results: false\n  dirs: false\n",
        checker.display()
    );
    write(path, &text)
}

/// Ansible's best settings for this job (documented in docs/benchmarks.md): SSH pipelining,
/// ControlMaster/ControlPersist, no fact gathering, a fixed interpreter (no discovery), the
/// `free` strategy (a host does not wait for the others between tasks), host keys checked
/// against the fleet's known_hosts like every other tool.
fn write_ansible_files(lab: &Lab) -> Result<(), String> {
    let dir = lab.path("ansible");
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    fs::create_dir_all(lab.path("cp")).map_err(|e| format!("cp: {e}"))?;
    let f = &lab.fleet;
    let cfg = format!(
        "[defaults]\n\
         inventory = {inv}\n\
         remote_user = {user}\n\
         private_key_file = {key}\n\
         host_key_checking = True\n\
         gathering = explicit\n\
         interpreter_python = /usr/bin/python3\n\
         strategy = free\n\
         retry_files_enabled = False\n\
         deprecation_warnings = False\n\
         nocolor = True\n\
         timeout = 60\n\
         \n\
         [ssh_connection]\n\
         pipelining = True\n\
         ssh_args = -o ControlMaster=auto -o ControlPersist=60s -o BatchMode=yes -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={kh}\n\
         control_path_dir = {cp}\n\
         control_path = %(directory)s/%%C\n",
        inv = dir.join("inventory.ini").display(),
        user = f.user,
        key = f.client_key.display(),
        kh = f.known_hosts.display(),
        cp = lab.path("cp").display(),
    );
    write(&dir.join("ansible.cfg"), &cfg)?;
    let mut ini = String::from("[fleet]\n");
    for (i, address) in f.addresses.iter().enumerate() {
        ini.push_str(&format!(
            "{} ansible_host={address} ansible_port={} dir={}\n",
            host_name(i),
            f.port,
            lab.host_dir(address).display()
        ));
    }
    write(&dir.join("inventory.ini"), &ini)?;
    for (name, remove) in [("first.yml", true), ("second.yml", false)] {
        let mut play = format!(
            "# pushscan sweep benchmark: the job, done with Ansible modules\n\
             - hosts: fleet\n  gather_facts: false\n  tasks:\n\
             \x20   - name: work directory\n      ansible.builtin.file:\n        path: \"{{{{ dir }}}}/reports\"\n        state: directory\n        mode: \"0755\"\n\
             \x20   - name: copy the checker (skipped when the remote checksum matches)\n      ansible.builtin.copy:\n        src: {checker}\n        dest: \"{{{{ dir }}}}/{REMOTE_NAME}\"\n        mode: \"0700\"\n\
             \x20   - name: run it\n      ansible.builtin.command:\n        argv: [\"{{{{ dir }}}}/{REMOTE_NAME}\", \"/quiet\", \"/output\", \"{{{{ dir }}}}/reports\", \"/host\", \"{{{{ inventory_hostname }}}}\", \"/scenario\", \"clean\"]\n\
             \x20   - name: find the report\n      ansible.builtin.find:\n        paths: \"{{{{ dir }}}}/reports\"\n        patterns: \"*_emocheck.*\"\n      register: found\n\
             \x20   - name: fetch it\n      ansible.builtin.fetch:\n        src: \"{{{{ item.path }}}}\"\n        dest: \"{{{{ fetch_dir }}}}/{{{{ ansible_host }}}}/\"\n        flat: true\n      loop: \"{{{{ found.files }}}}\"\n",
            checker = lab.checker().display()
        );
        if remove {
            play.push_str(&format!(
                "    - name: remove the checker\n      ansible.builtin.file:\n        path: \"{{{{ dir }}}}/{REMOTE_NAME}\"\n        state: absent\n"
            ));
        }
        write(&dir.join(name), &play)?;
    }
    Ok(())
}

/// What an admin writes with ClusterShell: `clush` fans out OpenSSH with the same
/// ControlMaster/ControlPersist options as Ansible. Every host's directory has the host in its
/// path, which `clush --copy/--rcopy` cannot express (their destination is the same on every
/// node); the exec worker (`-R exec`, `%h` = the node) runs the very `scp`/`ssh` commands the
/// ssh worker would.
fn write_clush_files(lab: &Lab) -> Result<(), String> {
    let f = &lab.fleet;
    let opts = format!(
        "-o BatchMode=yes -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes \
         -o UserKnownHostsFile={kh} -o ControlMaster=auto -o ControlPersist=60s \
         -o ControlPath={cp}/cl-%%C -i {key}",
        kh = f.known_hosts.display(),
        cp = lab.path("cp").display(),
        key = f.client_key.display(),
    );
    let nodes = f.addresses.join(",");
    fs::write(lab.path("clush-nodes.txt"), &nodes).map_err(|e| format!("nodes: {e}"))?;
    let head = format!(
        "#!/bin/bash\n\
         # pushscan sweep benchmark: the job, done with ClusterShell (benches/sweep.rs)\n\
         set -u\n\
         F=$1; OUT=$2\n\
         N=$(cat {nodes})\n\
         SSH=\"ssh {opts} -p {port} -l {user}\"\n\
         SCP=\"scp -q {opts} -P {port}\"\n\
         H={hosts}\n\
         C={checker}\n\
         RUN=\"$H/%h/{REMOTE_NAME} /quiet /output $H/%h/reports /host %h /scenario clean\"\n\
         fetch() {{ clush -R exec -f \"$F\" -S -w \"$N\" \"mkdir -p $OUT/%h && $SCP '{user}@%h:$H/%h/reports/*_emocheck.*' $OUT/%h/\"; }}\n",
        nodes = lab.path("clush-nodes.txt").display(),
        port = f.port,
        user = f.user,
        hosts = lab.hosts_dir().display(),
        checker = lab.checker().display(),
    );
    let first = format!(
        "{head}\
         clush -R exec -f \"$F\" -S -w \"$N\" \"$SSH %h mkdir -p $H/%h/reports\" || exit 1\n\
         clush -R exec -f \"$F\" -S -w \"$N\" \"$SCP $C {user}@%h:$H/%h/{REMOTE_NAME}\" || exit 1\n\
         clush -R exec -f \"$F\" -S -w \"$N\" \"$SSH %h 'chmod 700 $H/%h/{REMOTE_NAME} && $RUN && rm -f $H/%h/{REMOTE_NAME}'\" || exit 1\n\
         fetch || exit 1\n",
        user = f.user,
    );
    // Second sweep: check the hash and run in one login; push only where it does not match.
    let second = format!(
        "{head}\
         out=$(clush -R exec -f \"$F\" -w \"$N\" \"$SSH %h 'cd $H/%h && if echo {sha}\\ \\ {REMOTE_NAME} | sha256sum -c --status; then $RUN; else echo NEEDPUSH; fi'\") || exit 1\n\
         need=$(printf '%s\\n' \"$out\" | awk -F': ' '$2==\"NEEDPUSH\" {{print $1}}' | paste -sd, -)\n\
         if [ -n \"$need\" ]; then\n\
         \x20 clush -R exec -f \"$F\" -S -w \"$need\" \"$SCP $C {user}@%h:$H/%h/{REMOTE_NAME}\" || exit 1\n\
         \x20 clush -R exec -f \"$F\" -S -w \"$need\" \"$SSH %h 'chmod 700 $H/%h/{REMOTE_NAME} && $RUN'\" || exit 1\n\
         fi\n\
         fetch || exit 1\n",
        sha = lab.sha,
        user = f.user,
    );
    write(&lab.path("clush-first.sh"), &first)?;
    write(&lab.path("clush-second.sh"), &second)
}

// ------------------------------------------------------------------------------------------
// One run of a tool, and its verification
// ------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Sweep {
    First,
    Second,
}

impl Sweep {
    fn label(self) -> &'static str {
        match self {
            Sweep::First => "first",
            Sweep::Second => "second",
        }
    }
}

/// Prepares the hosts for `sweep` (untimed), runs `tool` once, checks it did the job.
/// `Err` from the outer result stops the benchmark; the inner one is a failed run.
fn tool_run(
    lab: &Lab,
    tool: Tool,
    sweep: Sweep,
    forks: usize,
    run: usize,
    curve: bool,
) -> Result<(Result<Sample, String>, Vec<CurvePoint>), String> {
    let prints = match sweep {
        Sweep::First => {
            fresh_hosts_dir(lab)?;
            Vec::new()
        }
        Sweep::Second => prime_hosts(lab)?,
    };
    settle();
    let tag = format!("{}-{}-f{forks}-{run}", tool.name(), sweep.label());
    let out = lab.path(&format!("logs/{tag}.out"));
    let err = lab.path(&format!("logs/{tag}.err"));
    let fetched = lab.path(&format!("fetched/{tag}"));
    let state = lab.path(&format!("state/{tag}"));
    let cmd = match tool {
        Tool::Pushscan => {
            let mut cmd = Command::new(&lab.pushscan);
            cmd.arg("sweep")
                .arg("-i")
                .arg(lab.path("inventory.yml"))
                .arg("-p")
                .arg(lab.path(match sweep {
                    Sweep::First => "first.yml",
                    Sweep::Second => "second.yml",
                }))
                .arg("--forks")
                .arg(forks.to_string())
                .arg("--progress")
                .arg(if curve { "lines" } else { "quiet" })
                .arg("-u")
                .arg(&lab.fleet.user)
                .arg("-k")
                .arg(&lab.fleet.client_key)
                .arg("--known-hosts")
                .arg(&lab.fleet.known_hosts)
                .arg("--no-agent")
                // As the floor: a fleet of 2 cores answering 1,000 handshakes at once takes
                // longer than the 10 s default to say hello to some of them.
                .arg("--connect-timeout")
                .arg("60s")
                .arg("--state-dir")
                .arg(&state)
                .env_remove("PUSHSCAN_SSH_PASSWORD")
                .env_remove("RUST_LOG");
            cmd
        }
        Tool::Ansible => {
            let mut cmd = Command::new(&lab.ansible_playbook);
            cmd.arg("-f")
                .arg(forks.to_string())
                .arg("-e")
                .arg(format!("fetch_dir={}", fetched.display()))
                .arg(lab.path("ansible").join(match sweep {
                    Sweep::First => "first.yml",
                    Sweep::Second => "second.yml",
                }))
                .env("ANSIBLE_CONFIG", lab.path("ansible/ansible.cfg"))
                .env("ANSIBLE_LOCAL_TEMP", lab.path("ansible/tmp"))
                .env("ANSIBLE_HOME", lab.path("ansible/home"))
                .env_remove("ANSIBLE_STDOUT_CALLBACK");
            cmd
        }
        Tool::Clush => {
            let mut cmd = Command::new("bash");
            cmd.arg(lab.path(match sweep {
                Sweep::First => "clush-first.sh",
                Sweep::Second => "clush-second.sh",
            }))
            .arg(forks.to_string())
            .arg(&fetched)
            .env("PATH", clush_path(&lab.clush));
            cmd
        }
        Tool::Floor => return Err("the floor is not a sweep".into()),
    };
    let (mut sample, waited, points) = measure(lab, cmd, &out, &err, curve)?;
    let mut problems = Vec::new();
    if waited.code != Some(0) {
        problems.push(format!(
            "{} ended with {} (expected exit 0); output tail:\n{}\n{}",
            tool.name(),
            status_text(&waited),
            tail(&out, 10),
            tail(&err, 10)
        ));
    }
    match tool {
        Tool::Pushscan => match check_report(lab, &state, sweep) {
            Ok(durations) => sample.host_s = host_percentiles(durations),
            Err(e) => problems.push(e),
        },
        _ => {
            if let Err(e) = check_fetched(lab, &fetched) {
                problems.push(e);
            }
        }
    }
    if let Err(e) = check_checkers(lab, sweep, &prints) {
        problems.push(e);
    }
    let res = if problems.is_empty() {
        Ok(sample)
    } else {
        Err(format!(
            "{tag}: {} (logs: {}, {})",
            problems.join("\n"),
            out.display(),
            err.display()
        ))
    };
    Ok((res, points))
}

/// `PATH` with the directory of `--clush` first, so the script's `clush` is that one.
fn clush_path(clush: &Path) -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    match clush.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => format!("{}:{path}", dir.display()),
        None => path,
    }
}

/// Every host's checker: gone after a first sweep (the job removes it); untouched after a
/// second sweep (no push when the hash matches).
fn check_checkers(lab: &Lab, sweep: Sweep, prints: &[Option<Fingerprint>]) -> Result<(), String> {
    let mut bad = Vec::new();
    for (i, address) in lab.fleet.addresses.iter().enumerate() {
        let now = fingerprint(&lab.host_dir(address).join(REMOTE_NAME));
        match sweep {
            Sweep::First if now.is_some() => bad.push(format!("{address}: checker left behind")),
            Sweep::Second if now != prints.get(i).copied().flatten() => {
                bad.push(format!("{address}: checker pushed again (hash matched)"))
            }
            _ => {}
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} host(s) wrong after the sweep (first 10): {}",
            bad.len(),
            bad[..bad.len().min(10)].join("; ")
        ))
    }
}

/// A peer's fetched reports: one per host, a real "not detected" EmoCheck report.
fn check_fetched(lab: &Lab, fetched: &Path) -> Result<(), String> {
    let mut bad = Vec::new();
    for address in &lab.fleet.addresses {
        let dir = fetched.join(address);
        let reports: Vec<PathBuf> = fs::read_dir(&dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.to_string_lossy().ends_with("_emocheck.txt"))
                    .collect()
            })
            .unwrap_or_default();
        let ok = reports.len() == 1
            && fs::read_to_string(&reports[0])
                .map(|t| t.contains("Emotet was not detected."))
                .unwrap_or(false);
        if !ok {
            bad.push(format!("{address}: {} report(s)", reports.len()));
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} host(s) without exactly one fetched 'not detected' report (first 10): {}",
            bad.len(),
            bad[..bad.len().min(10)].join("; ")
        ))
    }
}

/// Every host `not_detected`, pushed as expected; returns the per-host durations (s).
fn check_report(lab: &Lab, state: &Path, sweep: Sweep) -> Result<Vec<f64>, String> {
    let out = Command::new(&lab.pushscan)
        .args(["report", "--format", "json", "--state-dir"])
        .arg(state)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run pushscan report: {e}"))?;
    let report: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "pushscan report --format json is not JSON ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let hosts = report["hosts"].as_array().cloned().unwrap_or_default();
    let mut bad = Vec::new();
    let mut durations = Vec::new();
    let expect_pushed = sweep == Sweep::First;
    for h in &hosts {
        if let Some(ms) = h["duration_ms"].as_f64() {
            durations.push(ms / 1000.0);
        }
        let status = h["status"].as_str().unwrap_or("?");
        let pushed = h["pushed"].as_bool();
        if status != "not_detected" || pushed != Some(expect_pushed) {
            bad.push(format!(
                "  {} {status} pushed={pushed:?}: {}",
                h["host"].as_str().unwrap_or("?"),
                h["reason"].as_str().unwrap_or("")
            ));
        }
    }
    let mut msg = Vec::new();
    if hosts.len() != lab.hosts {
        msg.push(format!(
            "the report lists {} host(s), the fleet has {}",
            hosts.len(),
            lab.hosts
        ));
    }
    if !bad.is_empty() {
        msg.push(format!(
            "{} host(s) not `not_detected` with pushed={expect_pushed} (first 10):\n{}",
            bad.len(),
            bad[..bad.len().min(10)].join("\n")
        ));
    }
    if msg.is_empty() {
        Ok(durations)
    } else {
        Err(msg.join("\n"))
    }
}

// ------------------------------------------------------------------------------------------
// The floor: connect + authenticate + `true`, in a child process
// ------------------------------------------------------------------------------------------

fn floor_run(lab: &Lab, forks: usize, run: usize) -> Result<Result<Sample, String>, String> {
    let tag = format!("floor-f{forks}-{run}");
    let out = lab.path(&format!("logs/{tag}.out"));
    let err = lab.path(&format!("logs/{tag}.err"));
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("--floor-child")
        .arg("--targets")
        .arg(lab.path("targets.txt"))
        .arg("--key")
        .arg(&lab.fleet.client_key)
        .arg("--known-hosts")
        .arg(&lab.fleet.known_hosts)
        .arg("--user")
        .arg(&lab.fleet.user)
        .arg("--forks")
        .arg(forks.to_string())
        .env_remove("PUSHSCAN_BENCH_HOSTS")
        .env_remove("PUSHSCAN_BENCH_RUNS");
    let (mut sample, waited, _) = measure(lab, cmd, &out, &err, false)?;
    let summary = fs::read_to_string(&out).unwrap_or_default();
    let durations: Vec<f64> = summary
        .lines()
        .filter_map(|l| l.strip_prefix("host_s "))
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    sample.host_s = host_percentiles(durations);
    let ok = summary
        .lines()
        .find_map(|l| l.strip_prefix("ok "))
        .and_then(|n| n.trim().parse::<usize>().ok());
    Ok(if waited.code == Some(0) && ok == Some(lab.hosts) {
        Ok(sample)
    } else {
        Err(format!(
            "{tag}: floor child ended with {}, {ok:?} of {} hosts ok; stderr tail:\n{}",
            status_text(&waited),
            lab.hosts,
            tail(&err, 15)
        ))
    })
}

/// Time budget of the floor's `true`. `Connection::exec` counts the login shell's start-up in
/// the command's timeout; pushscan's staged run gives that phase 300 s (`PREP_TIMEOUT` in
/// src/transport/ssh.rs) before the playbook's own timeout starts, so the floor gets as much.
const FLOOR_TIMEOUT: Duration = Duration::from_secs(300);

/// `--floor-child`: for every target, connect + authenticate + exec `true` with pushscan's
/// SSH connector, at most `forks` at a time. Prints `host_s SECONDS` per host that made it and
/// `ok N`; exit 0 only if every host did it.
fn floor_child(args: &Args) -> ExitCode {
    let (Some(targets), Some(key), Some(known_hosts), Some(user)) =
        (&args.targets, &args.key, &args.known_hosts, &args.user)
    else {
        eprintln!("--floor-child needs --targets, --key, --known-hosts and --user");
        return ExitCode::from(64);
    };
    let forks = args.forks.first().copied().unwrap_or(50).max(1);
    let text = match fs::read_to_string(targets) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: {e}", targets.display());
            return ExitCode::from(66);
        }
    };
    let list: Vec<SshTarget> = text
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some(SshTarget {
                password: None,
                address: it.next()?.to_string(),
                port: it.next()?.parse().ok()?,
                user: user.clone(),
                key_file: None,
                password_auth: false,
            })
        })
        .collect();
    let creds = Credentials {
        ssh_password: None,
        known_hosts: Some(known_hosts.clone()),
        accept_new_host_keys: false,
        default_key_files: vec![key.clone()],
        use_agent: false,
        connect_timeout: Duration::from_secs(60),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            return ExitCode::from(70);
        }
    };
    let total = list.len();
    let failures: Vec<String> = runtime.block_on(async move {
        let connector = Arc::new(SshConnector::new(creds));
        let sem = Arc::new(tokio::sync::Semaphore::new(forks));
        let mut set = tokio::task::JoinSet::new();
        for target in list {
            let (connector, sem) = (connector.clone(), sem.clone());
            set.spawn(async move {
                let _permit = sem.acquire_owned().await.map_err(|e| e.to_string())?;
                let start = Instant::now();
                let mut conn = connector
                    .connect(&target)
                    .await
                    .map_err(|e| format!("{}: connect: {e}", target.address))?;
                let cmd = CommandSpec {
                    program: "true".into(),
                    args: Vec::new(),
                    cwd: "/".into(),
                    timeout: FLOOR_TIMEOUT,
                    output_cap: 64 * 1024,
                    not_before: None,
                };
                let res = conn.exec(&cmd).await;
                conn.close().await;
                match res {
                    Ok(o) if o.exit_code == Some(0) && !o.timed_out => {
                        Ok(start.elapsed().as_secs_f64())
                    }
                    Ok(o) => Err(format!(
                        "{}: `true` ended with exit {:?} signal {:?} timed_out {}: {}",
                        target.address,
                        o.exit_code,
                        o.exit_signal,
                        o.timed_out,
                        String::from_utf8_lossy(&o.stderr).trim()
                    )),
                    Err(e) => Err(format!("{}: exec: {e}", target.address)),
                }
            });
        }
        let mut failures = Vec::new();
        while let Some(done) = set.join_next().await {
            match done {
                Ok(Ok(secs)) => println!("host_s {secs:.3}"),
                Ok(Err(e)) => failures.push(e),
                Err(e) => failures.push(format!("task: {e}")),
            }
        }
        failures
    });
    println!("ok {}", total - failures.len());
    for f in &failures {
        eprintln!("{f}");
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

// ------------------------------------------------------------------------------------------
// The benchmark
// ------------------------------------------------------------------------------------------

/// One figure: a tool, a sweep kind, a concurrency, its samples.
struct Figure {
    tool: &'static str,
    sweep: &'static str,
    forks: usize,
    samples: Vec<Sample>,
    failed: usize,
}

impl Figure {
    fn walls(&self) -> Vec<f64> {
        self.samples.iter().map(|s| s.wall_s).collect()
    }
    fn med<F: Fn(&Sample) -> f64>(&self, f: F) -> f64 {
        median(self.samples.iter().map(f).collect())
    }
}

fn default_pushscan() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/pushscan")
}

fn bench(args: &Args) -> Result<bool, String> {
    let started = Instant::now();
    if args.hosts == 0 || args.runs == 0 || args.forks.is_empty() || args.forks.contains(&0) {
        return Err("--hosts, --runs and every --forks value must be at least 1".into());
    }
    let mut tools: Vec<Tool> = Vec::new();
    for t in &args.tools {
        let skipped = args.no_floor && *t == Tool::Floor;
        if !skipped && !tools.contains(t) {
            tools.push(*t);
        }
    }
    if tools.is_empty() {
        return Err("--tools names no tool".into());
    }
    let pushscan = args.pushscan.clone().unwrap_or_else(default_pushscan);
    if tools.contains(&Tool::Pushscan) && !pushscan.is_file() {
        return Err(format!(
            "release binary {} is missing: build it with `cargo build --release` (benches/scripts/run does)",
            pushscan.display()
        ));
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let built = fs::metadata(&pushscan).and_then(|m| m.modified()).ok();
    if let (Some(b), Some(s)) = (built, newest_source(&manifest.join("src"))) {
        if s > b {
            eprintln!(
                "WARNING: {} is older than the sources: run `cargo build --release` (benches/scripts/run does)",
                pushscan.display()
            );
        }
    }
    for (tool, bin) in [
        (Tool::Ansible, &args.ansible_playbook),
        (Tool::Clush, &args.clush),
    ] {
        if tools.contains(&tool) && !runs_ok(bin) {
            return Err(format!(
                "{} is not runnable ({}): benches/scripts/run installs the peers",
                bin.display(),
                tool.name()
            ));
        }
    }
    if args.rss_curve.is_some() && !tools.contains(&Tool::Pushscan) {
        return Err("--rss-curve samples pushscan: add it to --tools".into());
    }

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "pushscan sweep benchmark: {} hosts, {} run(s) per figure, forks {:?}, tools {}, {} core(s)",
        args.hosts,
        args.runs,
        args.forks,
        tools.iter().map(|t| t.name()).collect::<Vec<_>>().join(","),
        cores
    );
    println!("binary: {}", pushscan.display());
    for (tool, bin, flag) in [
        (Tool::Ansible, &args.ansible_playbook, "--version"),
        (Tool::Clush, &args.clush, "--version"),
    ] {
        if tools.contains(&tool) {
            println!("{}: {}", tool.name(), version_line(bin, flag));
        }
    }
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average at start: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );

    let owner = match &args.fleet_user {
        Some(name) => Some(account_ids(name)?),
        None => None,
    };
    let t = Instant::now();
    let fleet = SshFleet::start_with(sshd::FleetOptions {
        n_hosts: args.hosts,
        user: args.fleet_user.clone(),
        // 127.1.x.x: clear of every range the test suite uses (127.0.x.x), so a
        // 10,000-host fleet can run beside the tests.
        base_address: std::net::Ipv4Addr::new(127, 1, 0, 1),
        ..sshd::FleetOptions::default()
    });
    println!(
        "fleet: {} sshd daemon(s) on {} .. {} port {}, login {} (started in {:.1} s)",
        fleet.daemon_pids().len(),
        fleet.addresses.first().map_or("", String::as_str),
        fleet.addresses.last().map_or("", String::as_str),
        fleet.port,
        fleet.user,
        t.elapsed().as_secs_f64()
    );
    let root = tempfile::Builder::new()
        .prefix("pushscan-bench-")
        .tempdir()
        .map_err(|e| format!("tempdir: {e}"))?;
    // The fleet account must reach its host directories under the root.
    chmod(root.path(), 0o755)?;
    let (hosts_root, hosts_tmp) = fleet_fs_root(&args.fleet_fs, root.path())?;
    println!(
        "host directories: {} ({})",
        hosts_root.display(),
        fs_type(&hosts_root)
    );
    let mut lab = Lab {
        fleet,
        root,
        hosts_root,
        _hosts_tmp: hosts_tmp,
        pushscan,
        ansible_playbook: args.ansible_playbook.clone(),
        clush: args.clush.clone(),
        hosts: args.hosts,
        owner,
        sha: String::new(),
    };
    for d in ["logs", "state", "fetched", "cp"] {
        fs::create_dir_all(lab.path(d)).map_err(|e| format!("{d}: {e}"))?;
    }
    lab.sha = build_checker(&lab.checker())?;
    println!(
        "checker: {} ({CHECKER_BYTES} bytes, sha256 {})",
        lab.checker().display(),
        lab.sha
    );
    write_pushscan_files(&lab)?;
    write_ansible_files(&lab)?;
    write_clush_files(&lab)?;
    let targets: String = lab
        .fleet
        .addresses
        .iter()
        .map(|a| format!("{a} {}\n", lab.fleet.port))
        .collect();
    write(&lab.path("targets.txt"), &targets)?;

    let mut figures: Vec<Figure> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut curves: Vec<(String, Vec<CurvePoint>)> = Vec::new();

    for &forks in &args.forks {
        for sweep in [Sweep::First, Sweep::Second] {
            let mut figs: Vec<Figure> = tools
                .iter()
                .filter(|t| sweep == Sweep::First || **t != Tool::Floor)
                .map(|&tool| Figure {
                    tool: tool.name(),
                    sweep: if tool == Tool::Floor {
                        "floor"
                    } else {
                        sweep.label()
                    },
                    forks,
                    samples: Vec::new(),
                    failed: 0,
                })
                .collect();
            println!(
                "\n{} sweep, forks {forks} ({}); tools take turns, run by run:",
                sweep.label(),
                match sweep {
                    Sweep::First => "push 1 MiB, run, fetch the report, remove the binary",
                    Sweep::Second => "the binary is there with the pinned hash: no push",
                }
            );
            for run in 1..=args.runs {
                for fig in figs.iter_mut() {
                    let tool = tools
                        .iter()
                        .copied()
                        .find(|t| t.name() == fig.tool)
                        .ok_or("tool")?;
                    let label = format!("{} run {run}", fig.tool);
                    let (res, points) = if tool == Tool::Floor {
                        settle();
                        (floor_run(&lab, forks, run)?, Vec::new())
                    } else {
                        let curve = args.rss_curve.is_some() && tool == Tool::Pushscan;
                        tool_run(&lab, tool, sweep, forks, run, curve)?
                    };
                    if !points.is_empty() {
                        curves.push((format!("{}-f{forks}-{run}", sweep.label()), points));
                    }
                    record(fig, &label, res, &mut failures);
                }
            }
            figures.extend(figs);
        }
    }

    print_table(&figures, args.hosts);
    print_ratios(&figures, args.hosts, cores);
    print_sshd_notes(&lab.fleet);
    if let Some(path) = &args.rss_curve {
        write_curves(path, &curves)?;
    }

    if let Some(path) = &args.json {
        let results: Vec<Value> = figures
            .iter()
            .map(|f| {
                json!({
                    "tool": f.tool,
                    "sweep": if f.tool == "floor" { "first" } else { f.sweep },
                    "forks": f.forks,
                    "wall_s": f.walls(),
                    "cpu_s": f.samples.iter().map(|s| s.cpu_s).collect::<Vec<_>>(),
                    "peak_rss_kb": f.samples.iter().map(|s| s.peak_rss_kb).collect::<Vec<_>>(),
                    "fleet_cpu_s": f.samples.iter().map(|s| s.fleet_cpu_s).collect::<Vec<_>>(),
                    "machine_cpu_s": f.samples.iter().map(|s| s.machine_cpu_s).collect::<Vec<_>>(),
                    "host_s_p50_p95_max": f.samples.iter().map(|s| s.host_s.to_vec()).collect::<Vec<_>>(),
                    "failed_runs": f.failed,
                })
            })
            .collect();
        let doc = json!({
            "hosts": args.hosts,
            "checker_bytes": CHECKER_BYTES,
            "cores": cores,
            "fleet_user": lab.fleet.user,
            "results": results,
        });
        let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())? + "\n";
        fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("JSON written to {}", path.display());
    }

    println!(
        "\nbenchmark took {:.1} s in all (fleet of {} hosts)",
        started.elapsed().as_secs_f64(),
        args.hosts
    );
    let _ = std::io::stdout().flush();
    if failures.is_empty() {
        Ok(true)
    } else {
        eprintln!(
            "\n!!!!!!!! BENCHMARK INVALID: {} run(s) did not do the job (left out of the figures above) !!!!!!!!",
            failures.len()
        );
        for f in &failures {
            eprintln!("- {}", f.lines().next().unwrap_or(""));
        }
        eprintln!(
            "(the fleet's temporary directory and logs are removed on exit; rerun to inspect)"
        );
        Ok(false)
    }
}

/// Prints one run's figures and files it (or the failure).
fn record(fig: &mut Figure, label: &str, res: Result<Sample, String>, failures: &mut Vec<String>) {
    match res {
        Ok(s) => {
            let other = s.machine_cpu_s - s.fleet_cpu_s - s.cpu_s;
            println!(
                "  {label}: wall {:.2} s, controller CPU {:.2} s, peak memory {:.1} MiB, fleet CPU {:.1} s, \
                 machine CPU {:.1} s (other processes: {:.1} s); per host p50 {:.2} s, p95 {:.2} s, max {:.2} s",
                s.wall_s,
                s.cpu_s,
                s.peak_rss_kb as f64 / 1024.0,
                s.fleet_cpu_s,
                s.machine_cpu_s,
                other,
                s.host_s[0],
                s.host_s[1],
                s.host_s[2]
            );
            if other > 0.1 * s.machine_cpu_s && other > 1.0 {
                println!(
                    "    note: {other:.1} s of CPU went to processes outside this benchmark: \
                     the machine was not idle, figures are inflated"
                );
            }
            fig.samples.push(s);
        }
        Err(e) => {
            eprintln!("\n!!!!!!!! {label}: RUN FAILED - it did not do the job !!!!!!!!\n{e}\n");
            fig.failed += 1;
            failures.push(e);
        }
    }
}

fn runs_ok(bin: &Path) -> bool {
    Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success())
}

fn version_line(bin: &Path, flag: &str) -> String {
    Command::new(bin)
        .arg(flag)
        .stdin(Stdio::null())
        .output()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).to_string()
                + &String::from_utf8_lossy(&o.stderr);
            text.lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_else(|e| format!("({e})"))
}

/// `--rss-curve FILE`: CSV `run,t_s,tree_kib,hosts_done`, and a short summary per run: memory
/// at each tenth of the hosts finished, so growth with finished hosts shows at a glance.
fn write_curves(path: &Path, curves: &[(String, Vec<CurvePoint>)]) -> Result<(), String> {
    let mut csv = String::from("run,t_s,tree_kib,hosts_done\n");
    for (run, points) in curves {
        for p in points {
            csv.push_str(&format!("{run},{:.2},{},{}\n", p.t_s, p.kb, p.done));
        }
        let total = points.iter().map(|p| p.done).max().unwrap_or(0);
        println!("\nmemory of pushscan over the sweep ({run}, {total} hosts finished):");
        println!("  {:>12} {:>8} {:>10}", "hosts done", "t s", "MiB");
        let mut next = 0usize;
        for p in points {
            if total > 0 && p.done * 10 >= next * total {
                println!(
                    "  {:>12} {:>8.1} {:>10.1}",
                    p.done,
                    p.t_s,
                    p.kb as f64 / 1024.0
                );
                next = p.done * 10 / total + 1;
            }
        }
        if let Some(p) = points.last() {
            println!(
                "  {:>12} {:>8.1} {:>10.1}  (last sample)",
                p.done,
                p.t_s,
                p.kb as f64 / 1024.0
            );
        }
    }
    fs::write(path, csv).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("memory curve written to {}", path.display());
    Ok(())
}

fn print_table(figures: &[Figure], hosts: usize) {
    println!(
        "\n{:<17} {:>5} {:>9} {:>15} {:>8} {:>12} {:>14} {:>8} {:>5} {:>12}",
        "tool/sweep",
        "forks",
        "median s",
        "min-max s",
        "hosts/s",
        "ctl CPU ms/h",
        "fleet CPU ms/h",
        "mem MiB",
        "runs",
        "x pushscan"
    );
    for f in figures {
        let name = if f.tool == "floor" {
            "floor".to_string()
        } else {
            format!("{} {}", f.tool, f.sweep)
        };
        let runs = if f.failed == 0 {
            format!("{}", f.samples.len())
        } else {
            format!("{}+{}F", f.samples.len(), f.failed)
        };
        if f.samples.is_empty() {
            println!(
                "{name:<17} {:>5} {:>9} (no successful run) {:>44}",
                f.forks, "-", runs
            );
            continue;
        }
        let walls = f.walls();
        let med = median(walls.clone());
        let min = walls.iter().copied().fold(f64::INFINITY, f64::min);
        let max = walls.iter().copied().fold(0.0, f64::max);
        let cpu_ms = f.med(|s| s.cpu_s) * 1000.0 / hosts as f64;
        let fleet_ms = f.med(|s| s.fleet_cpu_s) * 1000.0 / hosts as f64;
        let rss = f.samples.iter().map(|s| s.peak_rss_kb).max().unwrap_or(0) as f64 / 1024.0;
        // Wall time relative to pushscan's same sweep at the same forks.
        let sweep = if f.tool == "floor" { "first" } else { f.sweep };
        let ratio = figures
            .iter()
            .find(|p| p.tool == "pushscan" && p.sweep == sweep && p.forks == f.forks)
            .filter(|p| !p.samples.is_empty())
            .map(|p| format!("{:.2}x", med / median(p.walls())))
            .unwrap_or_else(|| "-".into());
        println!(
            "{name:<17} {:>5} {med:>9.2} {:>15} {:>8.1} {cpu_ms:>12.2} {fleet_ms:>14.1} {rss:>8.1} {runs:>5} {ratio:>12}",
            f.forks,
            format!("{min:.2}-{max:.2}"),
            hosts as f64 / med,
        );
    }
    println!(
        "(ctl CPU = user+sys of the controller's process tree per host, with what it reaped and \
         the ControlPersist masters it left; fleet CPU = sshd + session + checker per host, from \
         the daemons' reaped-children times; mem = peak of the controller tree: its main \
         process's peak RSS or the tree's summed PSS, whichever is larger, max over the runs; \
         x pushscan = median wall / pushscan's median wall for the same sweep and forks)"
    );
}

fn print_ratios(figures: &[Figure], hosts: usize, cores: usize) {
    let med_wall = |tool: &str, sweep: &str, forks: usize| {
        figures
            .iter()
            .find(|f| f.tool == tool && f.sweep == sweep && f.forks == forks)
            .filter(|f| !f.samples.is_empty())
            .map(|f| median(f.walls()))
    };
    let forks_list: Vec<usize> = {
        let mut v: Vec<usize> = figures.iter().map(|f| f.forks).collect();
        v.dedup();
        v
    };
    for forks in forks_list {
        println!("\nforks {forks}:");
        let first = med_wall("pushscan", "first", forks);
        let second = med_wall("pushscan", "second", forks);
        if let (Some(a), Some(b)) = (first, second) {
            println!(
                "  pushscan second / first: {:.2}x ({b:.2} s vs {a:.2} s)",
                b / a
            );
        }
        for sweep in ["first", "second"] {
            let Some(p) = med_wall("pushscan", sweep, forks) else {
                continue;
            };
            for peer in ["ansible", "clush"] {
                if let Some(w) = med_wall(peer, sweep, forks) {
                    println!(
                        "  {peer} {sweep} / pushscan {sweep}: {:.1}x slower ({w:.2} s vs {p:.2} s)",
                        w / p
                    );
                }
            }
        }
        if let Some(floor) = figures
            .iter()
            .find(|f| f.tool == "floor" && f.forks == forks && !f.samples.is_empty())
        {
            let fw = median(floor.walls());
            if let Some(p) = first {
                println!(
                    "  pushscan first / floor: {:.2}x ({p:.2} s vs {fw:.2} s)",
                    p / fw
                );
            }
            let fleet_ms = floor.med(|s| s.fleet_cpu_s) * 1000.0 / hosts as f64;
            let ctl_ms = floor.med(|s| s.cpu_s) * 1000.0 / hosts as f64;
            println!(
                "  per-login cost (floor): {fleet_ms:.1} ms of fleet-side CPU per host (sshd and the \
                 session for `true`) + {ctl_ms:.2} ms of controller CPU; {cores} core(s) => \
                 CPU-bound ceiling ~{:.0} logins/s on this machine",
                cores as f64 * 1000.0 / (fleet_ms + ctl_ms).max(0.001)
            );
        }
    }
}

/// Signs in the sshd log of limits or errors hit during the benchmark.
fn print_sshd_notes(fleet: &SshFleet) {
    let log = fleet.sshd_log();
    let patterns = [
        "MaxStartups",
        "drop connection",
        "Too many",
        "exceeded",
        "fatal",
        "error:",
    ];
    let mut any = false;
    for p in patterns {
        let hits: Vec<&str> = log.lines().filter(|l| l.contains(p)).collect();
        if !hits.is_empty() {
            any = true;
            println!(
                "sshd log: {} line(s) with {p:?}, e.g.: {}",
                hits.len(),
                hits[0].trim()
            );
        }
    }
    if !any {
        println!("sshd log: no MaxStartups throttling, dropped connection, error or fatal line");
    }
}
