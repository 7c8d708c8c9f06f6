//! Windows sweep benchmark: pushscan against the simulated Windows lab
//! (`pushscan-lab`: real Samba for ADMIN$/C$, the WinRM simulator running the EmoCheck
//! stand-in, the lab's `\PIPE\svcctl` service control manager behind smbd), over WinRM and
//! over SMB alone, and the same job done by the script an admin would write
//! (`benches/scripts/windows_peer.py`: pywinrm + smbprotocol, a thread pool, WinRM only), in the
//! same run.
//!
//! Two paths, each on its own lab of the same size, one after the other (`--paths`):
//! * `winrm` - every host answers WinRM and SMB: pushscan (commands over WinRM, files over SMB)
//!   and the peer script.
//! * `smb` - every host has WinRM closed (spec `winrm: closed`: nothing listens on its WinRM
//!   port), as a Windows 10/11 PC with WinRM off: pushscan runs each command as a one-shot
//!   service over `\PIPE\svcctl` and moves files over SMB. Measured with pushscan's default
//!   `--exec auto` (`smb auto`: the WinRM connect is refused, then the host goes over SMB; what a
//!   mixed fleet pays) and with `--exec smb` (`smb exec=smb`: WinRM never contacted), as chosen
//!   by `--smb-exec`. The peer cannot reach these hosts and is not run there.
//!
//! Not a test: nothing here asserts on time. Per sweep of N hosts it measures wall time,
//! hosts/s, the per-host time (p50 / p95 / max, as each tool reports it), the controller's CPU
//! (user + sys of the tool's process from `wait4` on its pid, divided by N) and peak RSS
//! (`ru_maxrss` of that process), the fleet side's CPU (smbd, the lab's serve process - WinRM
//! simulator and svcctl endpoint - and the checkers they ran and reaped: `utime + stime +
//! cutime + cstime` growth of the two lab daemons) and the whole machine's busy CPU
//! (`/proc/stat`) as a cross-check, and prints the load average before and after each run. Both
//! tools are child processes measured the same way (the peer's interpreter is run directly,
//! not through a pyenv shim). For pushscan runs it also reads the run's journal (its steps,
//! through pushscan's store reader) and prints where a host's time went: the median time from
//! the host's start to each journaled step.
//!
//! Figures, for each tool and path:
//! * `first`  - hosts without the checker: push it, run it, fetch and parse the report. Before
//!   each first run (untimed) every host's `C:\Windows\pushscan` (checker and reports) is
//!   deleted, so each first run pushes.
//! * `second` - the next sweep: the checker is there with the pinned hash, no push.
//!
//! Every run is checked, independently of what the tool says and the same way for both:
//! exit 0; the tool's own result lists every host `not detected` with `pushed` true (first) or
//! false (second); and in every host's tree the checker has the pinned SHA-256, exactly one new
//! `*_emocheck.json` report appeared, and (second) the checker file was not rewritten (same
//! inode and mtime). From the lab's own svcctl state, after every run of either path: no
//! service whose name starts with `pushscan-` is left on any host (`svcctl.json`) and no
//! `pushscan-*` file is left in the host's `C:\Windows` (the wrappers' output and exit-code
//! files); on the `smb` path every host's System log (`events.jsonl`) gained at least one
//! 7045 (service installed) event for a `pushscan-` service and pushscan's reason line says
//! "commands over SMB"; on the `winrm` path no host gained one. A run that did not do the job
//! is reported loudly, left out of the figures, and makes the benchmark exit 1. While pushscan
//! has no WinRM transport ("the winrm transport is not available in this build yet") its runs
//! fail that way, and the pushscan figures and the ratios are missing.
//!
//! Goals: pushscan at least 10x faster than the script (peer wall / pushscan wall, over
//! WinRM), and pushscan's second sweep at most half its first. Printed beside them, without a
//! goal: pushscan over SMB exec against pushscan over WinRM.
//!
//! The lab: `pushscan-lab up --hosts N --dir DIR --spec DIR/bench/<path>/spec.yml` (every host
//! `clean`, addresses from --base, no HTTPS listener; `winrm: closed` on the `smb` path),
//! stopped with `down --purge` after its path. Needs root (the lab does). Run it through
//! `benches/scripts/windows`, which installs what is missing and builds the release binaries.
//! Flags:
//!   --hosts N        fleet size (default 200, or $PUSHSCAN_BENCH_HOSTS; 1000 by hand)
//!   --runs K         timed runs per figure (default 3, or $PUSHSCAN_BENCH_RUNS)
//!   --forks F        pushscan --forks and the script's thread pool (default 64)
//!   --tools LIST     pushscan,peer (default both; the peer only on the winrm path)
//!   --paths LIST     winrm,smb (default both)
//!   --smb-exec LIST  pushscan's --exec on the smb path: auto (its default, given as no
//!                    flag), smb (default both)
//!   --base ADDR      first host address (default 127.0.70.1)
//!   --dir DIR        lab directory (default target/bench-windows)
//!   --json FILE      also write the raw figures as JSON
//!   --pushscan BIN   default target/release/pushscan
//!   --lab BIN        default target/release/pushscan-lab
//!   --python BIN     default python3
//!   --checker-bytes N  pad the stand-in checker to N bytes (with a copy of the lab
//!                    playbook pinning it); default: the stand-in as shipped (~17 KB)
//!   --keep-lab       leave the last lab running at the end (stop it with `pushscan-lab down`)

use std::collections::HashSet;
use std::fs;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use pushscan_testkit::measure::*;

/// What pushscan says while its WinRM transport is missing (src/pipeline.rs).
const NO_TRANSPORT: &str = "not available in this build";
/// What pushscan's reason line says for a host whose commands went over SMB.
const OVER_SMB: &str = "commands over SMB";
/// Where both tools put the checker and the reports (the lab playbook's work_dir / run_dir).
const WORK_DIR: &str = "Windows/pushscan";
const CHECKER_NAME: &str = "emocheck.exe";

#[derive(Parser, Debug)]
#[command(
    name = "windows-bench",
    about = "pushscan vs. a pywinrm + smbprotocol script on the simulated Windows lab"
)]
struct Args {
    /// Fleet size.
    #[arg(long, env = "PUSHSCAN_BENCH_HOSTS", default_value_t = 200)]
    hosts: usize,
    /// Timed runs per figure.
    #[arg(long, env = "PUSHSCAN_BENCH_RUNS", default_value_t = 3)]
    runs: usize,
    /// pushscan --forks and the script's thread pool size.
    #[arg(long, default_value_t = 64)]
    forks: usize,
    /// Which tools to measure: pushscan, peer (the peer only on the winrm path).
    #[arg(long, value_delimiter = ',', default_value = "pushscan,peer")]
    tools: Vec<String>,
    /// Which paths to measure, each on its own lab: winrm (WinRM open), smb (WinRM closed:
    /// pushscan runs commands as services over SMB).
    #[arg(long, value_delimiter = ',', default_value = "winrm,smb")]
    paths: Vec<String>,
    /// pushscan's --exec on the smb path: auto (pushscan's default), smb.
    #[arg(long, value_delimiter = ',', default_value = "auto,smb")]
    smb_exec: Vec<String>,
    /// First host address (127.0.0.0/8).
    #[arg(long, default_value = "127.0.70.1")]
    base: Ipv4Addr,
    /// Lab directory [default: target/bench-windows].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Write the raw figures as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// The pushscan binary [default: target/release/pushscan].
    #[arg(long, value_name = "BIN")]
    pushscan: Option<PathBuf>,
    /// The pushscan-lab binary [default: target/release/pushscan-lab].
    #[arg(long, value_name = "BIN")]
    lab: Option<PathBuf>,
    /// The Python interpreter for the peer script.
    #[arg(long, value_name = "BIN", default_value = "python3")]
    python: String,
    /// Pad the lab's stand-in checker to this many bytes (the real EmoCheck is about 1 MiB);
    /// default: the stand-in as the lab ships it, with the lab's playbook.
    #[arg(long, value_name = "N")]
    checker_bytes: Option<usize>,
    /// Leave the lab running at the end.
    #[arg(long)]
    keep_lab: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
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

/// Every live descendant of `roots` (the test kit's walk of `/proc`).
fn descendants(roots: &[u32]) -> HashSet<u32> {
    pushscan_testkit::sshd::process_descendants(roots)
        .into_iter()
        .collect()
}

/// Waits until the lab daemons have no descendant besides their long-lived helpers
/// (`baseline`): smbd's per-connection processes and the checkers have been reaped, so their
/// CPU is in the daemons' `cutime`. Returns how many are still alive.
fn wait_fleet_quiet(lab: &Lab, baseline: &HashSet<u32>) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = descendants(&lab.daemons).difference(baseline).count();
        if left == 0 || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Runs `cmd` (stdout/stderr to files) and measures it.
fn measure(
    lab: &Lab,
    mut cmd: Command,
    out: &Path,
    err: &Path,
) -> Result<(Sample, Waited), String> {
    let stdout = fs::File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let stderr = fs::File::create(err).map_err(|e| format!("{}: {e}", err.display()))?;
    cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
    if wait_fleet_quiet(lab, &lab.helpers) != 0 {
        eprintln!("  warning: lab processes from an earlier run are still alive");
    }
    let fleet_before = fleet_cpu_s(&lab.daemons);
    let machine_before = machine_cpu_s();
    let start = Instant::now();
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    let waited = wait4_child(child.id()).map_err(|e| format!("wait4: {e}"))?;
    let wall_s = start.elapsed().as_secs_f64();
    let left = wait_fleet_quiet(lab, &lab.helpers);
    if left != 0 {
        eprintln!("  warning: {left} lab process(es) (SMB connections, checkers) still alive 20 s after the run");
    }
    let fleet_cpu = fleet_cpu_s(&lab.daemons) - fleet_before;
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
// The lab
// ------------------------------------------------------------------------------------------

struct LabHost {
    name: String,
    address: String,
    /// The address, where the lab keeps the host's svcctl state (checked non-empty at start).
    ip: Option<Ipv4Addr>,
    /// The host's `C:\` on this machine.
    root: PathBuf,
}

impl LabHost {
    fn work_dir(&self) -> PathBuf {
        self.root.join(WORK_DIR)
    }
    fn checker(&self) -> PathBuf {
        self.work_dir().join(CHECKER_NAME)
    }
    fn reports(&self) -> PathBuf {
        self.work_dir().join("reports")
    }
}

struct Lab {
    /// Which path this lab serves (WinRM open, or closed on every host).
    path: LabPath,
    dir: PathBuf,
    /// Our own files: spec, host list, logs, pushscan state dirs, reports.
    work: PathBuf,
    lab_bin: PathBuf,
    pushscan: PathBuf,
    python: PathBuf,
    peer: PathBuf,
    forks: usize,
    hosts: Vec<LabHost>,
    user: String,
    password: String,
    smb_port: u16,
    winrm_port: u16,
    inventory: PathBuf,
    playbook: PathBuf,
    checker: PathBuf,
    checker_sha: String,
    /// smbd and the WinRM simulator (`lab.json`).
    daemons: Vec<u32>,
    /// Their long-lived children at start (smbd's helpers), not waited for.
    helpers: HashSet<u32>,
}

impl Lab {
    fn file(&self, rel: &str) -> PathBuf {
        self.work.join(rel)
    }
}

/// `preferred` if it can be bound on `ip`, else a free port there.
fn port_or_free(ip: Ipv4Addr, preferred: u16, avoid: &[u16]) -> Result<u16, String> {
    if !avoid.contains(&preferred) && TcpListener::bind(SocketAddrV4::new(ip, preferred)).is_ok() {
        return Ok(preferred);
    }
    for _ in 0..100 {
        let l =
            TcpListener::bind(SocketAddrV4::new(ip, 0)).map_err(|e| format!("bind {ip}:0: {e}"))?;
        let port = l.local_addr().map_err(|e| e.to_string())?.port();
        if !avoid.contains(&port) {
            return Ok(port);
        }
    }
    Err(format!("no free port on {ip}"))
}

/// Every host `clean` (so every tool does the same job and every host must end "not
/// detected"), one OU, no HTTPS listener (no tool uses it); on the `smb` path every host's
/// WinRM port closed, SMB and svcctl served (the lab's default start timeout: the wrapper's
/// outer `cmd` ends at once, so the SCM's 1053 comes before it).
fn spec_yaml(hosts: usize, base: Ipv4Addr, path: LabPath) -> String {
    let winrm = match path {
        LabPath::Winrm => "",
        LabPath::Smb => "    winrm: closed\n",
    };
    format!(
        "# Windows sweep benchmark (benches/windows.rs): every host clean, path {}.\n\
         hosts: {hosts}\n\
         base_address: {base}\n\
         name_pattern: \"PC-{{ou}}-{{n:04}}\"\n\
         seed: 1\n\
         ous:\n  - name: BENCH\n\
         scenarios:\n  - kind: clean\n{winrm}\
         winrm:\n  https_port: null\n",
        path.label()
    )
}

/// `sh -c '. lab.env'` and read the two variables back (the file is sh syntax).
fn read_lab_env(path: &Path) -> Result<(String, String), String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(". \"$1\" && printf '%s\\0%s' \"$PUSHSCAN_USER\" \"$PUSHSCAN_PASSWORD\"")
        .arg("sh")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("sh: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.split_once('\0') {
        Some((u, p)) if out.status.success() && !u.is_empty() && !p.is_empty() => {
            Ok((u.to_string(), p.to_string()))
        }
        _ => Err(format!(
            "cannot read PUSHSCAN_USER / PUSHSCAN_PASSWORD from {}",
            path.display()
        )),
    }
}

fn sha256_file(path: &Path) -> Option<String> {
    fs::read(path).ok().map(|b| hex::encode(Sha256::digest(b)))
}

#[allow(clippy::too_many_arguments)]
fn start_lab(
    args: &Args,
    path: LabPath,
    dir: &Path,
    lab_bin: PathBuf,
    pushscan: PathBuf,
    python: PathBuf,
    peer: PathBuf,
) -> Result<Lab, String> {
    let work = dir.join("bench").join(path.label());
    let _ = fs::remove_dir_all(&work);
    for d in ["logs", "state", "reports"] {
        fs::create_dir_all(work.join(d)).map_err(|e| format!("{}: {e}", work.join(d).display()))?;
    }
    let spec = work.join("spec.yml");
    fs::write(&spec, spec_yaml(args.hosts, args.base, path))
        .map_err(|e| format!("{}: {e}", spec.display()))?;
    let smb_port = port_or_free(args.base, 445, &[])?;
    let winrm_port = port_or_free(args.base, 5985, &[smb_port])?;

    let t = Instant::now();
    let out = Command::new(&lab_bin)
        .arg("up")
        .arg("--hosts")
        .arg(args.hosts.to_string())
        .arg("--dir")
        .arg(dir)
        .arg("--spec")
        .arg(&spec)
        .arg("--smb-port")
        .arg(smb_port.to_string())
        .arg("--winrm-port")
        .arg(winrm_port.to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", lab_bin.display()))?;
    if !out.status.success() {
        return Err(format!(
            "pushscan-lab up failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let up_s = t.elapsed().as_secs_f64();
    let state: Value = serde_json::from_str(
        &fs::read_to_string(dir.join("lab.json")).map_err(|e| format!("lab.json: {e}"))?,
    )
    .map_err(|e| format!("lab.json: {e}"))?;
    let daemons: Vec<u32> = ["smbd_pid", "serve_pid"]
        .iter()
        .filter_map(|k| state[*k].as_u64().map(|p| p as u32))
        .collect();
    if daemons.len() != 2 {
        return Err(format!("lab.json lacks smbd_pid / serve_pid: {state}"));
    }
    let hosts: Vec<LabHost> = state["hosts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|h| {
                    let address = h["address"].as_str().unwrap_or("").to_string();
                    LabHost {
                        name: h["name"].as_str().unwrap_or("").to_string(),
                        ip: address.parse().ok(),
                        address,
                        root: PathBuf::from(h["root"].as_str().unwrap_or("")),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    if hosts.len() != args.hosts
        || hosts
            .iter()
            .any(|h| h.name.is_empty() || h.ip.is_none() || !h.root.is_dir())
    {
        return Err(format!(
            "lab.json lists {} usable host(s), {} were asked for",
            hosts.len(),
            args.hosts
        ));
    }
    let (user, password) = read_lab_env(&dir.join("lab.env"))?;
    let mut checker = dir.join("emocheck-lab.exe");
    let mut checker_sha =
        sha256_file(&checker).ok_or_else(|| format!("{}: unreadable", checker.display()))?;
    let mut playbook = dir.join("emocheck-lab.yml");
    if let Some(size) = args.checker_bytes {
        (checker, checker_sha, playbook) =
            padded_checker(dir, &work, &checker, &checker_sha, size)?;
    }
    let checker_size = fs::metadata(&checker).map(|m| m.len()).unwrap_or(0);
    // The lab's inventory names the SMB port (`pushscan_smb_port`): used as written.
    let inventory = dir.join("inventory.yml");
    let text =
        fs::read_to_string(&inventory).map_err(|e| format!("{}: {e}", inventory.display()))?;
    if !text.contains(&format!("pushscan_smb_port: {smb_port}\n")) {
        return Err(format!(
            "{}: no `pushscan_smb_port: {smb_port}` line",
            inventory.display()
        ));
    }
    let list: String = hosts
        .iter()
        .map(|h| format!("{} {}\n", h.name, h.address))
        .collect();
    fs::write(work.join("hosts.txt"), list).map_err(|e| format!("hosts.txt: {e}"))?;
    println!(
        "lab ({} path): {} hosts {} .. {}, SMB port {smb_port}, WinRM port {winrm_port}{}, up in {up_s:.1} s ({})",
        path.label(),
        hosts.len(),
        hosts[0].address,
        hosts[hosts.len() - 1].address,
        match path {
            LabPath::Winrm => "",
            LabPath::Smb => " (closed on every host)",
        },
        dir.display()
    );
    println!(
        "checker: {} ({checker_size} bytes, sha256 {checker_sha}); playbook {}",
        checker.display(),
        playbook.display()
    );
    let helpers = descendants(&daemons);
    Ok(Lab {
        path,
        dir: dir.to_path_buf(),
        work,
        lab_bin,
        pushscan,
        python,
        peer,
        forks: args.forks,
        hosts,
        user,
        password,
        smb_port,
        winrm_port,
        inventory,
        playbook,
        checker,
        checker_sha,
        daemons,
        helpers,
    })
}

/// `--checker-bytes N`: the lab's stand-in padded to N bytes (comment lines after its final
/// `exit`, never read by the shell), about the size of the real EmoCheck, and a copy of the lab
/// playbook pinning it. Returns (checker, sha256, playbook).
fn padded_checker(
    dir: &Path,
    work: &Path,
    stand_in: &Path,
    stand_in_sha: &str,
    size: usize,
) -> Result<(PathBuf, String, PathBuf), String> {
    let mut bytes = fs::read(stand_in).map_err(|e| format!("{}: {e}", stand_in.display()))?;
    if bytes.len() > size {
        return Err(format!(
            "--checker-bytes {size}: the stand-in is already {} bytes",
            bytes.len()
        ));
    }
    if !bytes.ends_with(b"\n") {
        bytes.push(b'\n');
    }
    let line = b"# pushscan Windows benchmark padding (never read: after the final exit)\n";
    while bytes.len() + line.len() <= size {
        bytes.extend_from_slice(line);
    }
    let room = size - bytes.len();
    if room > 0 {
        bytes.extend(std::iter::repeat_n(b'#', room - 1));
        bytes.push(b'\n');
    }
    let checker = work.join("emocheck-padded.exe");
    fs::write(&checker, &bytes).map_err(|e| format!("{}: {e}", checker.display()))?;
    let sha = hex::encode(Sha256::digest(&bytes));
    let lab_playbook = dir.join("emocheck-lab.yml");
    let text = fs::read_to_string(&lab_playbook)
        .map_err(|e| format!("{}: {e}", lab_playbook.display()))?;
    let (path_line, sha_line) = (
        "  path: emocheck-lab.exe\n",
        format!("  sha256: \"{stand_in_sha}\"\n"),
    );
    if !text.contains(path_line) || !text.contains(&sha_line) {
        return Err(format!(
            "{}: no `path: emocheck-lab.exe` / `sha256: \"{stand_in_sha}\"` line to repoint",
            lab_playbook.display()
        ));
    }
    let text = text
        .replacen(path_line, "  path: emocheck-padded.exe\n", 1)
        .replacen(&sha_line, &format!("  sha256: \"{sha}\"\n"), 1);
    let playbook = work.join("emocheck-padded.yml");
    fs::write(&playbook, text).map_err(|e| format!("{}: {e}", playbook.display()))?;
    Ok((checker, sha, playbook))
}

fn stop_lab(lab: &Lab) {
    lab_down(&lab.lab_bin, &lab.dir);
}

/// `pushscan-lab down --purge`: also after a start that failed once `up` had started the lab
/// (a lab.json the benchmark cannot use), so no lab outlives the benchmark.
fn lab_down(lab_bin: &Path, dir: &Path) {
    let out = Command::new(lab_bin)
        .arg("down")
        .arg("--purge")
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => println!("lab stopped and purged ({})", dir.display()),
        Ok(o) => eprintln!(
            "pushscan-lab down --purge failed ({}): {}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => eprintln!("cannot run {} down: {e}", lab_bin.display()),
    }
}

// ------------------------------------------------------------------------------------------
// The host trees: wipe before a first run, snapshot, check after a run
// ------------------------------------------------------------------------------------------

/// What a host's tree says, before or after a run.
#[derive(Clone, Debug, PartialEq)]
struct TreeState {
    /// (inode, mtime ns) of the checker, if there.
    checker: Option<(u64, i128)>,
    reports: usize,
    /// 7045 events (service installed) for a `pushscan-` service in the host's System log,
    /// as the lab wrote them; `Err` when the log cannot be read.
    installed: Result<usize, String>,
}

/// The prefix of every service (and wrapper file) pushscan creates over SMB.
const SERVICE_PREFIX: &str = "pushscan-";

fn ip_of(h: &LabHost) -> Result<Ipv4Addr, String> {
    h.ip.ok_or_else(|| format!("{}: address {:?} is not IPv4", h.name, h.address))
}

/// The `pushscan-` services the lab's service control manager has installed on `h` so far.
fn installed(lab: &Lab, h: &LabHost) -> Result<usize, String> {
    let events = pushscan_lab::svcctl::events(&lab.dir, ip_of(h)?)
        .map_err(|e| format!("System log: {e:#}"))?;
    Ok(events
        .iter()
        .filter(|e| e.id == 7045 && e.service.starts_with(SERVICE_PREFIX))
        .count())
}

fn tree_state(lab: &Lab, h: &LabHost) -> TreeState {
    let checker = fs::metadata(h.checker()).ok().map(|m| {
        (
            m.ino(),
            m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        )
    });
    let reports = fs::read_dir(h.reports())
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with("_emocheck.json"))
                .count()
        })
        .unwrap_or(0);
    TreeState {
        checker,
        reports,
        installed: installed(lab, h),
    }
}

/// Untimed, before a first run: no checker and no reports anywhere.
fn wipe(lab: &Lab) -> Result<(), String> {
    for h in &lab.hosts {
        let d = h.work_dir();
        match fs::remove_dir_all(&d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", d.display())),
        }
    }
    Ok(())
}

/// What a tool left behind on a host, read from the lab's own files: `pushscan-` services in
/// the lab's service database and `pushscan-*` files in `C:\Windows` (the wrappers' output
/// and exit-code files).
fn leftovers(lab: &Lab, h: &LabHost) -> Vec<String> {
    let mut why = Vec::new();
    match ip_of(h)
        .and_then(|ip| pushscan_lab::svcctl::services(&lab.dir, ip).map_err(|e| format!("{e:#}")))
    {
        Ok(services) => {
            let ours: Vec<&str> = services
                .iter()
                .filter(|s| s.name.starts_with(SERVICE_PREFIX))
                .map(|s| s.name.as_str())
                .collect();
            if !ours.is_empty() {
                why.push(format!(
                    "service(s) left in svcctl.json: {}",
                    ours.join(", ")
                ));
            }
        }
        Err(e) => why.push(format!("service database unreadable: {e}")),
    }
    let windir = h.root.join("Windows");
    let files: Vec<String> = fs::read_dir(&windir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(SERVICE_PREFIX))
                .collect()
        })
        .unwrap_or_default();
    if !files.is_empty() {
        why.push(format!("file(s) left in C:\\Windows: {}", files.join(", ")));
    }
    why
}

/// The checks of the host trees and the lab's svcctl state after a run, the same for every
/// tool. Also returns the `pushscan-` services installed per host during the run (mean).
fn check_trees(lab: &Lab, before: &[TreeState], sweep: Sweep) -> (Vec<String>, f64) {
    let mut bad = Vec::new();
    let mut services = 0usize;
    for (h, b) in lab.hosts.iter().zip(before) {
        let a = tree_state(lab, h);
        let mut why = Vec::new();
        match sha256_file(&h.checker()) {
            Some(s) if s == lab.checker_sha => {}
            Some(s) => why.push(format!("checker has sha256 {s}")),
            None => why.push("no checker".to_string()),
        }
        if a.reports != b.reports + 1 {
            why.push(format!(
                "{} report(s) before, {} after (expected one new)",
                b.reports, a.reports
            ));
        }
        if sweep == Sweep::Second && a.checker != b.checker {
            why.push("the checker file was rewritten (expected no push)".to_string());
        }
        match (&b.installed, &a.installed) {
            (Ok(x), Ok(y)) => {
                let new = y.saturating_sub(*x);
                services += new;
                match lab.path {
                    LabPath::Smb if new == 0 => why.push(
                        "no pushscan- service installed (event 7045): commands did not go over SMB"
                            .to_string(),
                    ),
                    LabPath::Winrm if new != 0 => why.push(format!(
                        "{new} pushscan- service(s) installed over SMB on a host that answers WinRM"
                    )),
                    _ => {}
                }
            }
            (Err(e), _) | (_, Err(e)) => why.push(e.clone()),
        }
        why.extend(leftovers(lab, h));
        if !why.is_empty() {
            bad.push(format!("  {} ({}): {}", h.name, h.address, why.join("; ")));
        }
    }
    (bad, services as f64 / lab.hosts.len().max(1) as f64)
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
    fn pushed(self) -> bool {
        self == Sweep::First
    }
}

/// Which lab a run goes to: WinRM open on every host, or closed on every host.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum LabPath {
    Winrm,
    Smb,
}

impl LabPath {
    fn label(self) -> &'static str {
        match self {
            LabPath::Winrm => "winrm",
            LabPath::Smb => "smb",
        }
    }
}

/// A tool on a path: what one figure measures.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tool {
    /// pushscan on the winrm lab (commands over WinRM, files over SMB).
    Pushscan,
    /// The pywinrm + smbprotocol script on the winrm lab.
    Peer,
    /// pushscan with its default `--exec auto` on the smb lab (WinRM refused, then SMB).
    PushscanSmbAuto,
    /// pushscan `--exec smb` on the smb lab (WinRM never contacted).
    PushscanSmbOnly,
}

impl Tool {
    fn label(self) -> &'static str {
        match self {
            Tool::Pushscan => "pushscan winrm",
            Tool::Peer => "peer winrm",
            Tool::PushscanSmbAuto => "pushscan smb auto",
            Tool::PushscanSmbOnly => "pushscan smb exec=smb",
        }
    }
    /// For file names.
    fn slug(self) -> &'static str {
        match self {
            Tool::Pushscan => "pushscan-winrm",
            Tool::Peer => "peer-winrm",
            Tool::PushscanSmbAuto => "pushscan-smb-auto",
            Tool::PushscanSmbOnly => "pushscan-smb-only",
        }
    }
    fn path(self) -> LabPath {
        match self {
            Tool::Pushscan | Tool::Peer => LabPath::Winrm,
            Tool::PushscanSmbAuto | Tool::PushscanSmbOnly => LabPath::Smb,
        }
    }
    fn is_pushscan(self) -> bool {
        self != Tool::Peer
    }
    /// pushscan's `--exec` value (none: its default, `auto`).
    fn exec(self) -> Option<&'static str> {
        match self {
            Tool::PushscanSmbOnly => Some("smb"),
            _ => None,
        }
    }
}

/// What a good run measured besides the [`Sample`].
#[derive(Clone, Debug, Default)]
struct Extra {
    /// `/proc/loadavg`'s three figures before and after the run.
    load_before: String,
    load_after: String,
    /// `pushscan-` services the lab installed per host during the run (commands over SMB).
    services_per_host: f64,
    /// From pushscan's journal: (step and phase, median seconds from the host's start).
    steps: Vec<(String, f64)>,
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A failed run: what went wrong, and whether pushscan lacks its WinRM transport.
struct Failed {
    text: String,
    no_transport: bool,
}

fn run_once(
    lab: &Lab,
    tool: Tool,
    sweep: Sweep,
    run: usize,
) -> Result<Result<(Sample, Extra), Failed>, String> {
    let tag = format!("{}-{}-{run}", tool.slug(), sweep.label());
    let state = lab.file(&format!("state/{tag}"));
    let out = lab.file(&format!("logs/{tag}.out"));
    let err = lab.file(&format!("logs/{tag}.err"));
    let report = lab.file(&format!("reports/{tag}.json"));
    let cmd = match tool {
        Tool::Pushscan | Tool::PushscanSmbAuto | Tool::PushscanSmbOnly => {
            let mut cmd = Command::new(&lab.pushscan);
            cmd.arg("sweep")
                .arg("-i")
                .arg(&lab.inventory)
                .arg("-p")
                .arg(&lab.playbook)
                .arg("--forks")
                .arg(lab.forks.to_string())
                .arg("--state-dir")
                .arg(&state)
                .arg("--progress")
                .arg("quiet")
                .arg("--report-json")
                .arg(&report);
            if let Some(exec) = tool.exec() {
                cmd.arg("--exec").arg(exec);
            }
            cmd
        }
        Tool::Peer => {
            let mut cmd = Command::new(&lab.python);
            cmd.arg(&lab.peer)
                .arg(lab.file("hosts.txt"))
                .arg("--checker")
                .arg(&lab.checker)
                .arg("--sha256")
                .arg(&lab.checker_sha)
                .arg("--workers")
                .arg(lab.forks.to_string())
                .arg("--winrm-port")
                .arg(lab.winrm_port.to_string())
                .arg("--smb-port")
                .arg(lab.smb_port.to_string())
                .arg("--json");
            cmd
        }
    };
    let mut cmd = cmd;
    cmd.env("PUSHSCAN_USER", &lab.user)
        .env("PUSHSCAN_PASSWORD", &lab.password)
        .env_remove("RUST_LOG")
        .env_remove("PUSHSCAN_CREDENTIALS");

    let before: Vec<TreeState> = lab.hosts.iter().map(|h| tree_state(lab, h)).collect();
    let load_before = loadavg();
    let (mut sample, waited) = measure(lab, cmd, &out, &err)?;
    let load_after = loadavg();

    let mut problems = Vec::new();
    if waited.code != Some(0) {
        problems.push(format!(
            "{} ended with {} (expected exit 0); stderr tail:\n{}",
            tool.label(),
            status_text(&waited),
            tail(&err, 8)
        ));
    }
    // The tool's own per-host results.
    let results = if tool.is_pushscan() {
        pushscan_results(&report)
    } else {
        peer_results(&out)
    };
    let no_transport = tool.is_pushscan()
        && (fs::read_to_string(&err)
            .unwrap_or_default()
            .contains(NO_TRANSPORT)
            || fs::read_to_string(&report)
                .unwrap_or_default()
                .contains(NO_TRANSPORT));
    match results {
        Ok(rows) => {
            let names: HashSet<&str> = rows.iter().map(|r| r.host.as_str()).collect();
            let missing = lab
                .hosts
                .iter()
                .filter(|h| !names.contains(h.name.as_str()))
                .count();
            if rows.len() != lab.hosts.len() || missing != 0 {
                problems.push(format!(
                    "the tool reports {} host(s), {missing} of the fleet's {} missing",
                    rows.len(),
                    lab.hosts.len()
                ));
            }
            let bad: Vec<String> = rows
                .iter()
                .filter(|r| !r.not_detected || r.pushed != Some(sweep.pushed()))
                .map(|r| {
                    format!(
                        "  {} {} pushed={:?}: {}",
                        r.host, r.status, r.pushed, r.detail
                    )
                })
                .collect();
            if !bad.is_empty() {
                problems.push(format!(
                    "{} host(s) not `not detected` with pushed={} (first 10):\n{}",
                    bad.len(),
                    sweep.pushed(),
                    bad[..bad.len().min(10)].join("\n")
                ));
            }
            // pushscan says on every host's reason line when its commands went over SMB.
            if tool.is_pushscan() {
                let smb: Vec<&str> = rows
                    .iter()
                    .filter(|r| (tool.path() == LabPath::Smb) != r.detail.contains(OVER_SMB))
                    .map(|r| r.host.as_str())
                    .collect();
                if !smb.is_empty() {
                    problems.push(format!(
                        "{} host(s) whose reason {} \"{OVER_SMB}\" on the {} path (first 10): {}",
                        smb.len(),
                        if tool.path() == LabPath::Smb {
                            "lacks"
                        } else {
                            "says"
                        },
                        tool.path().label(),
                        smb[..smb.len().min(10)].join(", ")
                    ));
                }
            }
            sample.host_s = host_percentiles(rows.iter().filter_map(|r| r.seconds).collect());
        }
        Err(e) => problems.push(e),
    }
    // The host trees and the lab's svcctl state.
    let (bad, services_per_host) = check_trees(lab, &before, sweep);
    if !bad.is_empty() {
        problems.push(format!(
            "{} host(s) do not show the job done, or show something of ours left (first 10):\n{}",
            bad.len(),
            bad[..bad.len().min(10)].join("\n")
        ));
    }
    let steps = if tool.is_pushscan() {
        journal_steps(&state).unwrap_or_else(|e| {
            eprintln!("  note: no step timings from the journal: {e}");
            Vec::new()
        })
    } else {
        Vec::new()
    };
    Ok(if problems.is_empty() {
        Ok((
            sample,
            Extra {
                load_before,
                load_after,
                services_per_host,
                steps,
            },
        ))
    } else {
        Err(Failed {
            text: format!(
                "{tag}: {}\n  (logs: {}, {})",
                problems.join("\n"),
                out.display(),
                err.display()
            ),
            no_transport,
        })
    })
}

/// Where pushscan's hosts spent their time, from the run's journal (read through pushscan's
/// own store reader): for each journaled step and phase (the n-th occurrence of a repeated one
/// numbered), the median over the hosts of the seconds from the host's start (its
/// `started_at`) to that row, in order; `done` is the host's `finished_at`. The journal's
/// writer stamps a row when it writes it, in group commits, so a time may lag its step by the
/// writer's batch (milliseconds).
fn journal_steps(state: &Path) -> Result<Vec<(String, f64)>, String> {
    use std::collections::HashMap;
    let ctx = |e: anyhow::Error| format!("{}: {e:#}", state.display());
    let reader = pushscan::store::open_reader(state).map_err(ctx)?;
    let run = reader.run(None).map_err(ctx)?;
    let parse = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t)
            .map(|d| d.timestamp_millis() as f64 / 1000.0)
            .ok()
    };
    let mut starts: HashMap<String, f64> = HashMap::new();
    let mut per_key: HashMap<String, Vec<f64>> = HashMap::new();
    for h in reader.hosts(run.id).map_err(ctx)? {
        let Some(t0) = h.started_at.as_deref().and_then(parse) else {
            continue;
        };
        if let Some(t1) = h.finished_at.as_deref().and_then(parse) {
            per_key.entry("done".into()).or_default().push(t1 - t0);
        }
        starts.insert(h.host, t0);
    }
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for s in reader.steps(run.id, None).map_err(ctx)? {
        let (Some(t0), Some(t)) = (starts.get(&s.host), parse(&s.at)) else {
            continue;
        };
        let key = format!("{} {}", s.step, s.phase);
        let n = seen.entry((s.host, key.clone())).or_default();
        *n += 1;
        let key = if *n == 1 { key } else { format!("{key} #{n}") };
        per_key.entry(key).or_default().push(t - t0);
    }
    let mut out: Vec<(String, f64)> = per_key.into_iter().map(|(k, v)| (k, median(v))).collect();
    out.sort_by(|a, b| a.1.total_cmp(&b.1));
    Ok(out)
}

/// One host's result as a tool reported it.
struct HostRow {
    host: String,
    status: String,
    not_detected: bool,
    pushed: Option<bool>,
    seconds: Option<f64>,
    detail: String,
}

/// `pushscan sweep --report-json`: `{"hosts": [{"host", "status", "pushed", "duration_ms",
/// "reason", ...}]}`.
fn pushscan_results(path: &Path) -> Result<Vec<HostRow>, String> {
    let text =
        fs::read_to_string(path).map_err(|e| format!("no JSON report {} ({e})", path.display()))?;
    let doc: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON ({e})", path.display()))?;
    Ok(doc["hosts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|h| HostRow {
            host: h["host"].as_str().unwrap_or("?").to_string(),
            status: h["status"].as_str().unwrap_or("?").to_string(),
            not_detected: h["status"].as_str() == Some("not_detected"),
            pushed: h["pushed"].as_bool(),
            seconds: h["duration_ms"].as_f64().map(|ms| ms / 1000.0),
            detail: h["reason"].as_str().unwrap_or("").to_string(),
        })
        .collect())
}

/// `windows_peer.py --json` on stdout: `{"results": [{"host", "status", "pushed", "seconds",
/// "detail"}]}`.
fn peer_results(path: &Path) -> Result<Vec<HostRow>, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let doc: Value = serde_json::from_str(&text)
        .map_err(|e| format!("the script's stdout {} is not JSON ({e})", path.display()))?;
    Ok(doc["results"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|h| HostRow {
            host: h["host"].as_str().unwrap_or("?").to_string(),
            status: h["status"].as_str().unwrap_or("?").to_string(),
            not_detected: h["status"].as_str() == Some("not detected"),
            pushed: h["pushed"].as_bool(),
            seconds: h["seconds"].as_f64(),
            detail: h["detail"].as_str().unwrap_or("").to_string(),
        })
        .collect())
}

// ------------------------------------------------------------------------------------------
// The benchmark
// ------------------------------------------------------------------------------------------

/// One figure: a tool on a path, a sweep kind, its samples.
struct Figure {
    tool: Tool,
    sweep: Sweep,
    samples: Vec<Sample>,
    /// One per sample.
    extras: Vec<Extra>,
    failed: usize,
}

impl Figure {
    fn new(tool: Tool, sweep: Sweep) -> Figure {
        Figure {
            tool,
            sweep,
            samples: Vec::new(),
            extras: Vec::new(),
            failed: 0,
        }
    }
    fn walls(&self) -> Vec<f64> {
        self.samples.iter().map(|s| s.wall_s).collect()
    }
    fn med<F: Fn(&Sample) -> f64>(&self, f: F) -> f64 {
        median(self.samples.iter().map(f).collect())
    }
    fn wall(&self) -> Option<f64> {
        (!self.samples.is_empty()).then(|| median(self.walls()))
    }
    fn rss_mib(&self) -> f64 {
        self.samples
            .iter()
            .map(|s| s.peak_rss_kb)
            .max()
            .unwrap_or(0) as f64
            / 1024.0
    }
    /// The journal's step times, median over the runs per step.
    fn steps(&self) -> Vec<(String, f64)> {
        let mut keys: Vec<(String, Vec<f64>)> = Vec::new();
        for e in &self.extras {
            for (k, t) in &e.steps {
                match keys.iter_mut().find(|(x, _)| x == k) {
                    Some((_, v)) => v.push(*t),
                    None => keys.push((k.clone(), vec![*t])),
                }
            }
        }
        let mut out: Vec<(String, f64)> = keys.into_iter().map(|(k, v)| (k, median(v))).collect();
        out.sort_by(|a, b| a.1.total_cmp(&b.1));
        out
    }
}

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn warn_if_stale(bin: &Path, src: &Path) {
    let built = fs::metadata(bin).and_then(|m| m.modified()).ok();
    if let (Some(b), Some(s)) = (built, newest_source(src)) {
        if s > b {
            eprintln!(
                "WARNING: {} is older than {}: rebuild it (benches/scripts/windows does)",
                bin.display(),
                src.display()
            );
        }
    }
}

/// The interpreter itself (not a pyenv shim, whose bash start-up would be measured too), after
/// checking that it has pywinrm and smbprotocol.
fn resolve_python(python: &str) -> Result<PathBuf, String> {
    let out = Command::new(python)
        .args(["-c", "import sys, winrm, smbclient; print(sys.executable)"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{python} lacks pywinrm or smbprotocol ({}): python3 -m pip install pywinrm smbprotocol \
             (benches/scripts/windows installs them)",
            String::from_utf8_lossy(&out.stderr).trim().lines().last().unwrap_or("")
        ));
    }
    let exe = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if exe.is_file() {
        Ok(exe)
    } else {
        Err(format!(
            "{python}: sys.executable {} is not a file",
            exe.display()
        ))
    }
}

fn bench(args: &Args) -> Result<bool, String> {
    let started = Instant::now();
    if args.hosts == 0 || args.runs == 0 || args.forks == 0 {
        return Err("--hosts, --runs and --forks must be at least 1".into());
    }
    let (mut pushscan_on, mut peer_on) = (false, false);
    for t in &args.tools {
        match t.as_str() {
            "pushscan" => pushscan_on = true,
            "peer" => peer_on = true,
            other => return Err(format!("--tools: unknown tool {other:?} (pushscan, peer)")),
        }
    }
    let mut smb_tools = Vec::new();
    for e in &args.smb_exec {
        let t = match e.as_str() {
            "auto" => Tool::PushscanSmbAuto,
            "smb" => Tool::PushscanSmbOnly,
            other => return Err(format!("--smb-exec: unknown mode {other:?} (auto, smb)")),
        };
        if !smb_tools.contains(&t) {
            smb_tools.push(t);
        }
    }
    // Each path with the tools it runs, in the order given.
    let mut plan: Vec<(LabPath, Vec<Tool>)> = Vec::new();
    for p in &args.paths {
        let (path, tools) = match p.as_str() {
            "winrm" => {
                let mut t = Vec::new();
                if pushscan_on {
                    t.push(Tool::Pushscan);
                }
                if peer_on {
                    t.push(Tool::Peer);
                }
                (LabPath::Winrm, t)
            }
            "smb" => (
                LabPath::Smb,
                if pushscan_on {
                    smb_tools.clone()
                } else {
                    Vec::new()
                },
            ),
            other => return Err(format!("--paths: unknown path {other:?} (winrm, smb)")),
        };
        if plan.iter().any(|(q, _)| *q == path) {
            continue;
        }
        if tools.is_empty() {
            println!(
                "path {}: nothing to run with --tools {} (the peer is WinRM only)",
                path.label(),
                args.tools.join(",")
            );
            continue;
        }
        plan.push((path, tools));
    }
    if plan.is_empty() {
        return Err("nothing to measure: see --tools, --paths and --smb-exec".into());
    }
    let all: Vec<Tool> = plan.iter().flat_map(|(_, t)| t.iter().copied()).collect();
    let any_pushscan = all.iter().any(|t| t.is_pushscan());
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("the lab needs root (a Samba account, addresses on lo): run as root".into());
    }
    let pushscan = args
        .pushscan
        .clone()
        .unwrap_or_else(|| manifest().join("target/release/pushscan"));
    let lab_bin = args
        .lab
        .clone()
        .unwrap_or_else(|| manifest().join("target/release/pushscan-lab"));
    for (bin, what, needed) in [
        (&pushscan, "cargo build --release", any_pushscan),
        (&lab_bin, "cargo build --release -p pushscan-lab", true),
    ] {
        if needed && !bin.is_file() {
            return Err(format!(
                "{} is missing: build it with `{what}` (benches/scripts/windows does)",
                bin.display()
            ));
        }
    }
    if any_pushscan {
        warn_if_stale(&pushscan, &manifest().join("src"));
    }
    warn_if_stale(&lab_bin, &manifest().join("lab/src"));
    let peer = manifest().join("benches/scripts/windows_peer.py");
    let python = if all.contains(&Tool::Peer) {
        resolve_python(&args.python)?
    } else {
        PathBuf::from(&args.python)
    };
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| manifest().join("target/bench-windows"));
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let dir = fs::canonicalize(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let work = dir.join("bench");
    let _ = fs::remove_dir_all(&work);

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "Windows sweep benchmark: {} hosts, {} run(s) per figure, forks/workers {}, {} core(s); {}",
        args.hosts,
        args.runs,
        args.forks,
        cores,
        plan.iter()
            .map(|(p, t)| format!(
                "path {}: {}",
                p.label(),
                t.iter().map(|t| t.label()).collect::<Vec<_>>().join(", ")
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    println!("pushscan: {}", pushscan.display());
    println!("peer:     {} {}", python.display(), peer.display());
    println!("load average at start: {}", loadavg());

    let mut st = Outcome::default();
    let mut error = None;
    let mut kept = None;
    for (n, (path, tools)) in plan.iter().enumerate() {
        let last = n + 1 == plan.len();
        println!("\n==== path {} ====", path.label());
        let lab = match start_lab(
            args,
            *path,
            &dir,
            lab_bin.clone(),
            pushscan.clone(),
            python.clone(),
            peer.clone(),
        ) {
            Ok(l) => l,
            Err(e) => {
                if dir.join("lab.json").exists() {
                    lab_down(&lab_bin, &dir);
                }
                error = Some(e);
                break;
            }
        };
        let result = sweeps(args, &lab, tools, &mut st);
        if args.keep_lab && last {
            kept = Some(format!(
                "lab ({} path) left running: {} down --purge --dir {}",
                path.label(),
                lab.lab_bin.display(),
                lab.dir.display()
            ));
        } else {
            stop_lab(&lab);
        }
        if let Err(e) = result {
            error = Some(e);
            break;
        }
    }

    print_table(&st.figures, args.hosts, args.forks);
    print_ratios(&st.figures, cores);
    print_steps(&st.figures);
    if let Some(path) = &args.json {
        write_json(path, &st, args, cores)?;
    }
    if let Some(k) = &kept {
        println!("{k}");
    }
    println!(
        "\nbenchmark took {:.1} s in all; load average at the end: {}",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
    let ok = error.is_none() && st.failures.is_empty();
    if !st.failures.is_empty() {
        eprintln!(
            "\n!!!!!!!! BENCHMARK INVALID: {} run(s) did not do the job (left out of the figures above) !!!!!!!!",
            st.failures.len()
        );
        if st.no_transport {
            eprintln!(
                "- pushscan has no WinRM transport in this build: build one that has it and rerun"
            );
        }
        for f in &st.failures {
            eprintln!("- {}", f.lines().next().unwrap_or(""));
        }
    }
    if ok && kept.is_none() {
        let _ = fs::remove_dir_all(&work);
        let _ = fs::remove_dir(&dir); // only if `down --purge` left it empty
    } else {
        println!(
            "logs, pushscan state and reports kept in {}",
            work.display()
        );
    }
    let _ = std::io::stdout().flush();
    match error {
        Some(e) => Err(e),
        None => Ok(ok),
    }
}

/// Everything measured so far, over the paths.
#[derive(Default)]
struct Outcome {
    figures: Vec<Figure>,
    failures: Vec<String>,
    no_transport: bool,
}

fn sweeps(args: &Args, lab: &Lab, tools: &[Tool], st: &mut Outcome) -> Result<(), String> {
    let record = |st: &mut Outcome,
                  fig: &mut Figure,
                  run: usize,
                  res: Result<(Sample, Extra), Failed>|
     -> bool {
        match res {
            Ok((s, extra)) => {
                let other = s.machine_cpu_s - s.fleet_cpu_s - s.cpu_s;
                println!(
                    "  run {run}: wall {:.2} s ({:.1} hosts/s), controller CPU {:.2} s, peak RSS {:.1} MiB, \
                     lab CPU {:.1} s, machine CPU {:.1} s (other processes {other:.1} s); \
                     per host p50 {:.2} s, p95 {:.2} s, max {:.2} s; load average {} -> {}{}",
                    s.wall_s,
                    lab.hosts.len() as f64 / s.wall_s,
                    s.cpu_s,
                    s.peak_rss_kb as f64 / 1024.0,
                    s.fleet_cpu_s,
                    s.machine_cpu_s,
                    s.host_s[0],
                    s.host_s[1],
                    s.host_s[2],
                    extra.load_before,
                    extra.load_after,
                    if lab.path == LabPath::Smb {
                        // A run that left a service or a wrapper file failed its checks.
                        format!(
                            "; {:.2} services installed per host, none left",
                            extra.services_per_host
                        )
                    } else {
                        String::new()
                    }
                );
                if other > 0.1 * s.machine_cpu_s && other > 1.0 {
                    println!(
                        "    note: {other:.1} s of CPU went to processes outside this benchmark: \
                         the machine was not idle, figures are inflated"
                    );
                }
                fig.samples.push(s);
                fig.extras.push(extra);
                true
            }
            Err(f) => {
                eprintln!(
                    "\n!!!!!!!! {} {} run {run}: RUN FAILED - it did not do the job !!!!!!!!\n{}\n",
                    fig.tool.label(),
                    fig.sweep.label(),
                    f.text
                );
                fig.failed += 1;
                st.failures.push(f.text);
                if f.no_transport {
                    st.no_transport = true;
                    eprintln!(
                        "!!!!!!!! pushscan CANNOT SWEEP WINDOWS HOSTS WITH THIS BUILD: its WinRM \
                         transport is missing (\"the winrm transport is not available in this build \
                         yet\"). No pushscan figure is measured; the remaining pushscan runs are \
                         skipped and the benchmark fails. !!!!!!!!\n"
                    );
                    return false;
                }
                true
            }
        }
    };

    'tools: for &tool in tools {
        let mut first = Figure::new(tool, Sweep::First);
        println!(
            "\n{} first sweep (no checker on the hosts: push, run, fetch), {} at a time:",
            tool.label(),
            lab.forks
        );
        for run in 1..=args.runs {
            wipe(lab)?;
            settle();
            let res = run_once(lab, tool, Sweep::First, run)?;
            if !record(st, &mut first, run, res) {
                first.failed += args.runs - run;
                st.figures.push(first);
                let mut second = Figure::new(tool, Sweep::Second);
                second.failed = args.runs;
                st.figures.push(second);
                continue 'tools;
            }
        }
        st.figures.push(first);

        // The checker must be on every host for a second sweep; the last first run left it
        // there unless it failed: then an untimed priming run of the same tool.
        let missing = lab
            .hosts
            .iter()
            .filter(|h| sha256_file(&h.checker()).as_deref() != Some(lab.checker_sha.as_str()))
            .count();
        if missing != 0 {
            println!(
                "{} priming sweep (untimed): {missing} host(s) lack the checker",
                tool.label()
            );
            settle();
            let _ = run_once(lab, tool, Sweep::First, 0)?;
        }
        let mut second = Figure::new(tool, Sweep::Second);
        println!(
            "{} second sweep (checker present with the pinned hash: no push), {} at a time:",
            tool.label(),
            lab.forks
        );
        for run in 1..=args.runs {
            settle();
            let res = run_once(lab, tool, Sweep::Second, run)?;
            if !record(st, &mut second, run, res) {
                second.failed += args.runs - run;
                break;
            }
        }
        st.figures.push(second);
    }
    Ok(())
}

fn write_json(path: &Path, st: &Outcome, args: &Args, cores: usize) -> Result<(), String> {
    let results: Vec<Value> = st
        .figures
        .iter()
        .map(|f| {
            json!({
                "tool": if f.tool.is_pushscan() { "pushscan" } else { "peer" },
                "path": f.tool.path().label(),
                "exec": if f.tool.path() == LabPath::Smb { Some(f.tool.exec().unwrap_or("auto")) } else { None },
                "label": f.tool.label(),
                "sweep": f.sweep.label(),
                "forks": args.forks,
                "wall_s": f.walls(),
                "cpu_s": f.samples.iter().map(|s| s.cpu_s).collect::<Vec<_>>(),
                "peak_rss_kb": f.samples.iter().map(|s| s.peak_rss_kb).collect::<Vec<_>>(),
                "fleet_cpu_s": f.samples.iter().map(|s| s.fleet_cpu_s).collect::<Vec<_>>(),
                "machine_cpu_s": f.samples.iter().map(|s| s.machine_cpu_s).collect::<Vec<_>>(),
                "host_s_p50_p95_max": f.samples.iter().map(|s| s.host_s.to_vec()).collect::<Vec<_>>(),
                "load_before_after": f.extras.iter().map(|e| [e.load_before.clone(), e.load_after.clone()]).collect::<Vec<_>>(),
                "services_per_host": f.extras.iter().map(|e| e.services_per_host).collect::<Vec<_>>(),
                "journal_steps_median_s": f.steps().into_iter().map(|(k, t)| json!([k, t])).collect::<Vec<_>>(),
                "failed_runs": f.failed,
            })
        })
        .collect();
    let doc = json!({
        "hosts": args.hosts,
        "cores": cores,
        "no_winrm_transport": st.no_transport,
        "results": results,
    });
    let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())? + "\n";
    fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("JSON written to {}", path.display());
    Ok(())
}

fn print_table(figures: &[Figure], hosts: usize, forks: usize) {
    println!(
        "\n{:<28} {:>5} {:>9} {:>13} {:>8} {:>7} {:>7} {:>7} {:>12} {:>12} {:>8} {:>6}",
        "tool path / sweep",
        "forks",
        "median s",
        "min-max s",
        "hosts/s",
        "p50 s",
        "p95 s",
        "max s",
        "ctl CPU ms/h",
        "lab CPU ms/h",
        "RSS MiB",
        "runs"
    );
    for f in figures {
        let name = format!("{} {}", f.tool.label(), f.sweep.label());
        let runs = if f.failed == 0 {
            format!("{}", f.samples.len())
        } else {
            format!("{}+{}F", f.samples.len(), f.failed)
        };
        if f.samples.is_empty() {
            println!(
                "{name:<28} {forks:>5} {:>9} (no successful run) {runs:>80}",
                "-"
            );
            continue;
        }
        let walls = f.walls();
        let med = median(walls.clone());
        let min = walls.iter().copied().fold(f64::INFINITY, f64::min);
        let max = walls.iter().copied().fold(0.0, f64::max);
        let cpu_ms = f.med(|s| s.cpu_s) * 1000.0 / hosts as f64;
        let fleet_ms = f.med(|s| s.fleet_cpu_s) * 1000.0 / hosts as f64;
        println!(
            "{name:<28} {forks:>5} {med:>9.2} {:>13} {:>8.1} {:>7.2} {:>7.2} {:>7.2} {cpu_ms:>12.2} {fleet_ms:>12.1} {:>8.1} {runs:>6}",
            format!("{min:.2}-{max:.2}"),
            hosts as f64 / med,
            f.med(|s| s.host_s[0]),
            f.med(|s| s.host_s[1]),
            f.med(|s| s.host_s[2]),
            f.rss_mib(),
        );
    }
    println!(
        "(winrm: every host answers WinRM; smb: WinRM closed on every host, pushscan runs each \
         command as a service over \\PIPE\\svcctl, `auto` = its default --exec, `exec=smb` = \
         --exec smb. Median over the runs; p50/p95/max = per-host time as the tool measured it, \
         median over the runs; ctl CPU = user+sys of the tool's process per host; lab CPU = smbd + \
         the lab's serve process (WinRM simulator, svcctl) + checkers per host; RSS = max peak \
         over the runs)"
    );
}

fn find(figures: &[Figure], tool: Tool, sweep: Sweep) -> Option<&Figure> {
    figures
        .iter()
        .find(|f| f.tool == tool && f.sweep == sweep && !f.samples.is_empty())
}

fn print_ratios(figures: &[Figure], cores: usize) {
    println!("\npushscan / peer, both over WinRM (below 1: pushscan uses less):");
    let mut speedups = Vec::new();
    for sweep in [Sweep::First, Sweep::Second] {
        match (
            find(figures, Tool::Pushscan, sweep),
            find(figures, Tool::Peer, sweep),
        ) {
            (Some(p), Some(q)) => {
                let (pw, qw) = (median(p.walls()), median(q.walls()));
                println!(
                    "  {:<6}: wall {:.3} ({pw:.2} s vs {qw:.2} s: pushscan {:.1}x faster), controller CPU {:.3}, peak RSS {:.2}",
                    sweep.label(),
                    pw / qw,
                    qw / pw,
                    p.med(|s| s.cpu_s) / q.med(|s| s.cpu_s),
                    p.rss_mib() / q.rss_mib()
                );
                speedups.push((sweep, qw / pw));
            }
            _ => println!(
                "  {:<6}: not measured (a tool has no successful run)",
                sweep.label()
            ),
        }
    }
    println!("\npushscan over SMB exec (WinRM closed) / pushscan over WinRM (above 1: SMB exec costs more):");
    for sweep in [Sweep::First, Sweep::Second] {
        for smb in [Tool::PushscanSmbAuto, Tool::PushscanSmbOnly] {
            match (
                find(figures, smb, sweep),
                find(figures, Tool::Pushscan, sweep),
            ) {
                (Some(s), Some(w)) => {
                    let (sw, ww) = (median(s.walls()), median(w.walls()));
                    println!(
                        "  {:<6} {:<22}: wall {:.2} ({sw:.2} s vs {ww:.2} s), per-host p50 {:.2}, controller CPU {:.2}, lab CPU {:.2}, peak RSS {:.2}",
                        sweep.label(),
                        smb.label(),
                        sw / ww,
                        s.med(|x| x.host_s[0]) / w.med(|x| x.host_s[0]),
                        s.med(|x| x.cpu_s) / w.med(|x| x.cpu_s),
                        s.med(|x| x.fleet_cpu_s) / w.med(|x| x.fleet_cpu_s),
                        s.rss_mib() / w.rss_mib()
                    );
                }
                (Some(_), None) | (None, Some(_)) => println!(
                    "  {:<6} {:<22}: not measured (one side has no successful run)",
                    sweep.label(),
                    smb.label()
                ),
                (None, None) => {}
            }
        }
    }
    println!("\nsecond / first (wall):");
    let mut second_ratio = None;
    for tool in [
        Tool::Pushscan,
        Tool::Peer,
        Tool::PushscanSmbAuto,
        Tool::PushscanSmbOnly,
    ] {
        if let (Some(a), Some(b)) = (
            find(figures, tool, Sweep::First),
            find(figures, tool, Sweep::Second),
        ) {
            let r = b.wall().unwrap_or(f64::NAN) / a.wall().unwrap_or(f64::NAN);
            println!("  {:<22}: {r:.2}", tool.label());
            if tool == Tool::Pushscan {
                second_ratio = Some(r);
            }
        } else if figures.iter().any(|f| f.tool == tool) {
            println!("  {:<22}: not measured", tool.label());
        }
    }
    println!("\ngoals, on this {cores}-core machine where the lab shares the cores:");
    if speedups.is_empty() {
        println!("  pushscan >= 10x faster than the script: NOT MEASURED");
    }
    for (sweep, s) in speedups {
        println!(
            "  pushscan >= 10x faster than the script ({}): {s:.1}x -> {}",
            sweep.label(),
            if s >= 10.0 { "MET" } else { "NOT MET" }
        );
    }
    match second_ratio {
        Some(r) => println!(
            "  pushscan second sweep <= 0.5x its first (over WinRM): {r:.2}x -> {}",
            if r <= 0.5 { "MET" } else { "NOT MET" }
        ),
        None => println!("  pushscan second sweep <= 0.5x its first: NOT MEASURED"),
    }
}

/// Where pushscan's hosts spent their time, from its journal (see [`journal_steps`]).
fn print_steps(figures: &[Figure]) {
    let with: Vec<&Figure> = figures
        .iter()
        .filter(|f| f.tool.is_pushscan() && f.extras.iter().any(|e| !e.steps.is_empty()))
        .collect();
    if with.is_empty() {
        return;
    }
    println!(
        "\nper host, from pushscan's journal: median seconds from the host's start to each \
         journaled step (median over the runs); the intents are written once the host is \
         connected, `mkdir done` after the directory proof, `push done` after the push, `run \
         done` after the checker ran and its reports came back:"
    );
    for f in with {
        let steps: Vec<String> = f
            .steps()
            .iter()
            .map(|(k, t)| format!("{k} {t:.2}"))
            .collect();
        println!(
            "  {} {}: {}",
            f.tool.label(),
            f.sweep.label(),
            steps.join(", ")
        );
    }
}
