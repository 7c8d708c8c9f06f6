//! Sweep benchmark: the real release `pushscan` binary against a real OpenSSH fleet on
//! loopback (one `sshd` per 16 addresses, see `tests/common/sshd.rs`), with a 1 MiB checker.
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
//! Run it through `bench/run` (builds the release binary first). Flags:
//!   --hosts N      fleet size (default 200, or $PUSHSCAN_BENCH_HOSTS)
//!   --runs K       timed runs per figure (default 3, or $PUSHSCAN_BENCH_RUNS)
//!   --forks LIST   comma-separated concurrency levels (default 50; e.g. 50,200)
//!   --json FILE    also write the raw figures as JSON
//!   --pushscan BIN the binary to measure (default target/release/pushscan)
//!   --no-floor     skip the floor measurement

mod common;
#[path = "../tests/common/sshd.rs"]
#[allow(dead_code)]
mod sshd;

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

use common::*;
use sshd::SshFleet;

/// Exact size of the benchmark checker (the EmoCheck stand-in, padded).
const CHECKER_BYTES: usize = 1_048_576;
const CHECKER_SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/lab/checker/emocheck-sim.sh");

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
    /// Skip the floor (connect + auth + `true`) measurement.
    #[arg(long)]
    no_floor: bool,
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

/// Runs `cmd` (stdout/stderr to files), measures it, returns the sample and the exit status.
fn measure(
    fleet: &SshFleet,
    mut cmd: Command,
    out: &Path,
    err: &Path,
) -> Result<(Sample, Waited), String> {
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
    let waited = wait4_child(child.id()).map_err(|e| format!("wait4: {e}"))?;
    let wall_s = start.elapsed().as_secs_f64();
    let left = wait_sessions_gone(fleet);
    if left != 0 {
        eprintln!("  warning: {left} sshd session process(es) still alive 20 s after the run");
    }
    let fleet_cpu = fleet_cpu_s(&daemons) - fleet_before;
    let machine_cpu = machine_cpu_s() - machine_before;
    Ok((
        Sample {
            wall_s,
            cpu_s: waited.cpu_s,
            peak_rss_kb: waited.maxrss_kb,
            fleet_cpu_s: fleet_cpu,
            machine_cpu_s: machine_cpu,
            host_s: [f64::NAN; 3],
        },
        waited,
    ))
}

// ------------------------------------------------------------------------------------------
// The lab: fleet, checker, inventory, playbooks
// ------------------------------------------------------------------------------------------

struct Lab {
    fleet: SshFleet,
    root: tempfile::TempDir,
    pushscan: PathBuf,
    hosts: usize,
}

impl Lab {
    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }
    fn hosts_dir(&self) -> PathBuf {
        self.path("hosts")
    }
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

fn write_inventory(lab: &Lab) -> Result<(), String> {
    let mut yaml = String::from("all:\n  vars:\n    ansible_connection: ssh\n  hosts:\n");
    for (i, address) in lab.fleet.addresses.iter().enumerate() {
        let name = host_name(i);
        yaml.push_str(&format!(
            "    {name}:\n      ansible_host: {address}\n      ansible_port: {}\n      pushscan_dir: {}\n      scenario: clean\n",
            lab.fleet.port,
            lab.hosts_dir().join(&name).display()
        ));
    }
    let path = lab.path("inventory.yml");
    fs::write(&path, yaml).map_err(|e| format!("{}: {e}", path.display()))
}

fn host_name(i: usize) -> String {
    format!("h{:04}", i + 1)
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
         checker:\n  path: {}\n  sha256: \"{sha}\"\n  platform: linux\n  remote_name: emocheck-sim.sh\n\
         work_dir: \"{{{{ pushscan_dir }}}}\"\n\
         run_dir: \"{{{{ work_dir }}}}/reports\"\n\
         args: [\"/quiet\", \"/output\", \"{{{{ run_dir }}}}\", \"/host\", \"{{{{ inventory_hostname }}}}\", \"/scenario\", \"{{{{ scenario | default('clean') }}}}\"]\n\
         timeout: 60s\n\
         results:\n  glob: \"*_emocheck.*\"\n  parser: emocheck\n  max_file_size: 1MiB\n\
         cleanup:\n  checker: {remove_checker}\n  results: false\n  dirs: false\n",
        checker.display()
    );
    fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

// ------------------------------------------------------------------------------------------
// One pushscan run, and its verification
// ------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Sweep {
    First,
    Prime,
    Second,
}

impl Sweep {
    fn playbook(self) -> &'static str {
        match self {
            Sweep::First => "first.yml",
            Sweep::Prime | Sweep::Second => "second.yml",
        }
    }
    fn expect_pushed(self) -> bool {
        !matches!(self, Sweep::Second)
    }
    fn label(self) -> &'static str {
        match self {
            Sweep::First => "first",
            Sweep::Prime => "prime",
            Sweep::Second => "second",
        }
    }
}

/// Runs one sweep and checks it did the job; `Err` describes a failed run.
fn pushscan_run(
    lab: &Lab,
    sweep: Sweep,
    forks: usize,
    run: usize,
) -> Result<Result<Sample, String>, String> {
    let tag = format!("{}-f{forks}-{run}", sweep.label());
    let state = lab.path(&format!("state/{tag}"));
    let out = lab.path(&format!("logs/{tag}.out"));
    let err = lab.path(&format!("logs/{tag}.err"));
    let mut cmd = Command::new(&lab.pushscan);
    cmd.arg("sweep")
        .arg("-i")
        .arg(lab.path("inventory.yml"))
        .arg("-p")
        .arg(lab.path(sweep.playbook()))
        .arg("--forks")
        .arg(forks.to_string())
        .arg("--progress")
        .arg("quiet")
        .arg("-u")
        .arg(&lab.fleet.user)
        .arg("-k")
        .arg(&lab.fleet.client_key)
        .arg("--known-hosts")
        .arg(&lab.fleet.known_hosts)
        .arg("--no-agent")
        .arg("--state-dir")
        .arg(&state)
        .env_remove("PUSHSCAN_SSH_PASSWORD")
        .env_remove("RUST_LOG");
    let (mut sample, waited) = measure(&lab.fleet, cmd, &out, &err)?;
    let mut problems = Vec::new();
    if waited.code != Some(0) {
        problems.push(format!(
            "pushscan sweep ended with {} (expected exit 0); stderr tail:\n{}",
            status_text(&waited),
            tail(&err, 15)
        ));
    }
    match check_report(lab, &state, sweep) {
        Ok(durations) => sample.host_s = host_percentiles(durations),
        Err(e) => problems.push(e),
    }
    Ok(if problems.is_empty() {
        Ok(sample)
    } else {
        Err(format!(
            "{tag}: {} (logs: {}, {})",
            problems.join("\n"),
            out.display(),
            err.display()
        ))
    })
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
    for h in &hosts {
        if let Some(ms) = h["duration_ms"].as_f64() {
            durations.push(ms / 1000.0);
        }
        let status = h["status"].as_str().unwrap_or("?");
        let pushed = h["pushed"].as_bool();
        if status != "not_detected" || pushed != Some(sweep.expect_pushed()) {
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
            "{} host(s) not `not_detected` with pushed={} (first 10):\n{}",
            bad.len(),
            sweep.expect_pushed(),
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
    let (mut sample, waited) = measure(&lab.fleet, cmd, &out, &err)?;
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
                address: it.next()?.to_string(),
                port: it.next()?.parse().ok()?,
                user: user.clone(),
                key_file: None,
            })
        })
        .collect();
    let creds = Credentials {
        ssh_password: None,
        known_hosts: Some(known_hosts.clone()),
        accept_new_host_keys: false,
        default_key_files: vec![key.clone()],
        use_agent: false,
        connect_timeout: Duration::from_secs(10),
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
    let pushscan = args.pushscan.clone().unwrap_or_else(default_pushscan);
    if !pushscan.is_file() {
        return Err(format!(
            "release binary {} is missing: build it with `cargo build --release` (bench/run does)",
            pushscan.display()
        ));
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let built = fs::metadata(&pushscan).and_then(|m| m.modified()).ok();
    if let (Some(b), Some(s)) = (built, newest_source(&manifest.join("src"))) {
        if s > b {
            eprintln!(
                "WARNING: {} is older than the sources: run `cargo build --release` (bench/run does)",
                pushscan.display()
            );
        }
    }

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "pushscan sweep benchmark: {} hosts, {} run(s) per figure, forks {:?}, {} core(s)",
        args.hosts, args.runs, args.forks, cores
    );
    println!("binary: {}", pushscan.display());
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average at start: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );

    let t = Instant::now();
    let fleet = SshFleet::start(args.hosts);
    println!(
        "fleet: {} sshd daemon(s) on {} .. {} port {} (started in {:.1} s)",
        fleet.daemon_pids().len(),
        fleet.addresses.first().map_or("", String::as_str),
        fleet.addresses.last().map_or("", String::as_str),
        fleet.port,
        t.elapsed().as_secs_f64()
    );
    let root = tempfile::Builder::new()
        .prefix("pushscan-bench-")
        .tempdir()
        .map_err(|e| format!("tempdir: {e}"))?;
    let lab = Lab {
        fleet,
        root,
        pushscan,
        hosts: args.hosts,
    };
    for d in ["logs", "state", "hosts"] {
        fs::create_dir_all(lab.path(d)).map_err(|e| format!("{d}: {e}"))?;
    }
    let checker = lab.path("emocheck-sim-1MiB.sh");
    let sha = build_checker(&checker)?;
    println!(
        "checker: {} ({CHECKER_BYTES} bytes, sha256 {sha})",
        checker.display()
    );
    write_inventory(&lab)?;
    write_playbook(&lab.path("first.yml"), &checker, &sha, true)?;
    write_playbook(&lab.path("second.yml"), &checker, &sha, false)?;
    let targets: String = lab
        .fleet
        .addresses
        .iter()
        .map(|a| format!("{a} {}\n", lab.fleet.port))
        .collect();
    fs::write(lab.path("targets.txt"), targets).map_err(|e| format!("targets: {e}"))?;

    let mut figures: Vec<Figure> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut record = |fig: &mut Figure, label: &str, res: Result<Sample, String>| match res {
        Ok(s) => {
            println!(
                "  {label}: wall {:.2} s, controller CPU {:.2} s, peak RSS {:.1} MiB, fleet CPU {:.1} s, \
                 machine CPU {:.1} s (other processes: {:.1} s); per host p50 {:.2} s, p95 {:.2} s, max {:.2} s",
                s.wall_s,
                s.cpu_s,
                s.peak_rss_kb as f64 / 1024.0,
                s.fleet_cpu_s,
                s.machine_cpu_s,
                s.machine_cpu_s - s.fleet_cpu_s - s.cpu_s,
                s.host_s[0],
                s.host_s[1],
                s.host_s[2]
            );
            let other = s.machine_cpu_s - s.fleet_cpu_s - s.cpu_s;
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
    };

    for &forks in &args.forks {
        // First sweep: hosts without the checker; the playbook removes it afterwards.
        let mut first = Figure {
            tool: "pushscan",
            sweep: "first",
            forks,
            samples: Vec::new(),
            failed: 0,
        };
        println!("\npushscan first sweep (push 1 MiB, run, fetch, remove), forks {forks}:");
        for run in 1..=args.runs {
            let hosts_dir = lab.hosts_dir();
            let _ = fs::remove_dir_all(&hosts_dir);
            fs::create_dir_all(&hosts_dir).map_err(|e| format!("{}: {e}", hosts_dir.display()))?;
            settle();
            let res = pushscan_run(&lab, Sweep::First, forks, run)?;
            record(&mut first, &format!("run {run}"), res);
        }
        figures.push(first);

        // Priming (untimed figure): a sweep that leaves the checker on every host.
        println!("pushscan priming sweep (push, keep the checker), forks {forks}:");
        settle();
        let mut prime = Figure {
            tool: "pushscan",
            sweep: "prime",
            forks,
            samples: Vec::new(),
            failed: 0,
        };
        let res = pushscan_run(&lab, Sweep::Prime, forks, 1)?;
        record(&mut prime, "prime", res);

        let mut second = Figure {
            tool: "pushscan",
            sweep: "second",
            forks,
            samples: Vec::new(),
            failed: 0,
        };
        println!("pushscan second sweep (hash matches, no push), forks {forks}:");
        for run in 1..=args.runs {
            settle();
            let res = pushscan_run(&lab, Sweep::Second, forks, run)?;
            record(&mut second, &format!("run {run}"), res);
        }
        figures.push(second);

        if !args.no_floor {
            let mut floor = Figure {
                tool: "floor",
                sweep: "floor",
                forks,
                samples: Vec::new(),
                failed: 0,
            };
            println!("floor (connect + auth + `true`, russh, Semaphore({forks})):");
            for run in 1..=args.runs {
                settle();
                let res = floor_run(&lab, forks, run)?;
                record(&mut floor, &format!("run {run}"), res);
            }
            figures.push(floor);
        }
    }

    print_table(&figures, args.hosts);
    print_ratios(&figures, args.hosts, cores);
    print_sshd_notes(&lab.fleet);

    if let Some(path) = &args.json {
        let results: Vec<Value> = figures
            .iter()
            .map(|f| {
                json!({
                    "tool": f.tool,
                    "sweep": f.sweep,
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

fn print_table(figures: &[Figure], hosts: usize) {
    println!(
        "\n{:<17} {:>5} {:>9} {:>15} {:>8} {:>13} {:>13} {:>9} {:>5}",
        "tool/sweep",
        "forks",
        "median s",
        "min-max s",
        "hosts/s",
        "ctl CPU ms/h",
        "fleet CPU ms/h",
        "RSS MiB",
        "runs"
    );
    for f in figures {
        let name = format!("{} {}", f.tool, f.sweep);
        let name = if f.tool == "floor" {
            "floor".to_string()
        } else {
            name
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
        println!(
            "{name:<17} {:>5} {med:>9.2} {:>15} {:>8.1} {cpu_ms:>13.2} {fleet_ms:>13.1} {rss:>9.1} {runs:>5}",
            f.forks,
            format!("{min:.2}-{max:.2}"),
            hosts as f64 / med,
        );
    }
    println!(
        "(ctl CPU = user+sys of the controller process per host; fleet CPU = sshd + login shell + \
         checker per host, from the daemons' reaped-children times; RSS = max peak over the runs)"
    );
}

fn print_ratios(figures: &[Figure], hosts: usize, cores: usize) {
    for floor in figures
        .iter()
        .filter(|f| f.tool == "floor" && !f.samples.is_empty())
    {
        let fw = median(floor.walls());
        let fleet_ms = floor.med(|s| s.fleet_cpu_s) * 1000.0 / hosts as f64;
        let ctl_ms = floor.med(|s| s.cpu_s) * 1000.0 / hosts as f64;
        println!("\nforks {}:", floor.forks);
        for sweep in ["first", "second"] {
            if let Some(f) = figures
                .iter()
                .find(|f| f.tool == "pushscan" && f.sweep == sweep && f.forks == floor.forks)
            {
                if !f.samples.is_empty() {
                    println!(
                        "  pushscan {sweep:<6} / floor: {:.2}x wall ({:.2} s vs {:.2} s)",
                        median(f.walls()) / fw,
                        median(f.walls()),
                        fw
                    );
                }
            }
        }
        println!(
            "  per-login cost (floor): {fleet_ms:.0} ms of fleet-side CPU per host (sshd + the login \
             shell for `true`; root's ~/.bashrc runs `pyenv init` in every SSH shell, and its \
             `pyenv rehash` takes a lock shared by all logins) + {ctl_ms:.1} ms of controller CPU; \
             {cores} core(s) => CPU-bound ceiling ~{:.1} logins/s on this machine",
            cores as f64 * 1000.0 / (fleet_ms + ctl_ms).max(0.001)
        );
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
