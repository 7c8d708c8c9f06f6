//! One stop for every command: SIGINT or SIGTERM sent to a running `pushscan sweep`,
//! `pushscan contain` or `pushscan cleanup` process (real hosts: the `local` transport and
//! the OpenSSH fleet of the test kit) must stop it the same way: no new host is started,
//! the hosts in flight finish what they were doing (nothing is left half done on a host),
//! the hosts not started are journaled as such, the exit code is 2 (incomplete), and no
//! process pushscan started survives it.
//!
//! Loopback addresses 127.0.140.x - 127.0.141.x are this file's.

mod common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::sshd::{FleetOptions, SshFleet};
use common::{sha256_hex, text};

const PUSHSCAN: &str = env!("CARGO_BIN_EXE_pushscan");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const CONTAIN_CHECKER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/contain/linux-checker.sh"
);

fn which(prog: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(prog);
        if p.is_file() {
            return std::fs::canonicalize(p).unwrap();
        }
    }
    panic!("`{prog}` not found: install it with `apt-get update && apt-get install -y --no-install-recommends coreutils`");
}

fn journal(state: &Path) -> Option<rusqlite::Connection> {
    let p = state.join("journal.sqlite");
    if !p.exists() {
        return None;
    }
    rusqlite::Connection::open(p).ok()
}

/// `sql`'s single number once the journal can answer it (0 before).
fn count(state: &Path, sql: &str) -> i64 {
    journal(state)
        .and_then(|c| c.query_row(sql, [], |r| r.get::<_, i64>(0)).ok())
        .unwrap_or(0)
}

/// Waits (at most 60 s) until `sql` counts at least one row.
fn wait_for(state: &Path, sql: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if count(state, sql) > 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child process.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// Waits for `child` (at most 180 s; killed after that) and returns its output.
fn finish(child: Child) -> Output {
    let pid = child.id();
    let t0 = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(180)) {
        Ok(out) => {
            let _ = waiter.join();
            eprintln!("pushscan ended {:.1?} after the signal", t0.elapsed());
            out.unwrap()
        }
        Err(_) => {
            // SAFETY: kill(2) on our own child, which did not stop.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
            let out = rx.recv().unwrap().unwrap();
            panic!(
                "pushscan did not end within 180 s of the signal\n{}",
                text(&out)
            );
        }
    }
}

/// Whether a process with this PID still exists (a zombie counts as gone).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// The PIDs of live processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<i32> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == std::process::id() as i32 {
            continue;
        }
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            if String::from_utf8_lossy(&cmd).contains(needle) && alive(pid) {
                found.push(pid);
            }
        }
    }
    found
}

/// PIDs written one a line by the slow wrappers.
fn wrapper_pids(file: &Path) -> Vec<i32> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// None of `pids` is still running (they get 10 s to end after pushscan did).
fn assert_all_gone(pids: &[i32], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<i32> = pids.iter().copied().filter(|p| alive(*p)).collect();
    assert!(left.is_empty(), "{what} still running: {left:?}");
}

// ------------------------------------------------------------------ sweep

/// SIGTERM to a sweep: the host running finishes (its checker ends, its copy is removed),
/// the rest are `not_started`, the run is `interrupted`, exit 2, no checker left running.
#[test]
fn sigterm_stops_a_sweep_like_ctrl_c() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let checker = Path::new(ROOT).join("playbooks/checkers/emocheck-sim.sh");
    let pin = sha256_hex(&std::fs::read(&checker).unwrap());
    let pb = dir.join("pb.yml");
    std::fs::write(
        &pb,
        format!(
            "name: stop\nchecker:\n  path: {}\n  sha256: \"{pin}\"\n  platform: linux\n  remote_name: emocheck-sim.sh\n\
             work_dir: \"{{{{ pushscan_dir }}}}\"\nrun_dir: \"{{{{ work_dir }}}}/reports\"\n\
             args: [\"/quiet\", \"/output\", \"{{{{ run_dir }}}}\", \"/host\", \"{{{{ inventory_hostname }}}}\", \"/scenario\", \"slow\"]\n\
             timeout: 20s\nresults:\n  glob: \"*_emocheck.*\"\n  parser: emocheck\n  max_file_size: 1MiB\n\
             cleanup:\n  checker: true\n",
            checker.display()
        ),
    )
    .unwrap();
    let mut inv = String::from("all:\n  hosts:\n");
    for i in 0..4 {
        inv.push_str(&format!(
            "    st{i}:\n      ansible_connection: local\n      pushscan_dir: {}\n",
            dir.join("hosts").join(format!("st{i}")).display()
        ));
    }
    std::fs::write(dir.join("inv.yml"), inv).unwrap();
    let state = dir.join("state");
    let child = Command::new(PUSHSCAN)
        .arg("sweep")
        .arg("-i")
        .arg(dir.join("inv.yml"))
        .arg("-p")
        .arg(&pb)
        .arg("--state-dir")
        .arg(&state)
        .args(["--progress", "lines", "--forks", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        &state,
        "SELECT COUNT(*) FROM steps WHERE step='run' AND phase='intent'",
        "the first host's checker to start",
    );
    signal(&child, libc::SIGTERM);
    let out = finish(child);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("pushscan resume 1"), "{said}");
    let not_started = count(
        &state,
        "SELECT COUNT(*) FROM hosts WHERE run_id=1 AND class='not_started'",
    );
    let done = count(
        &state,
        "SELECT COUNT(*) FROM hosts WHERE run_id=1 AND class='not_detected'",
    );
    assert_eq!(done, 1, "the host in flight finished\n{said}");
    assert_eq!(
        not_started, 3,
        "the others are journaled not_started\n{said}"
    );
    let status: String = journal(&state)
        .unwrap()
        .query_row("SELECT status FROM runs WHERE id=1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(status, "interrupted");
    // The host that ran has no copy of the checker left; the others were never touched.
    for i in 0..4 {
        let copy = dir
            .join("hosts")
            .join(format!("st{i}"))
            .join("emocheck-sim.sh");
        assert!(!copy.exists(), "{} left behind", copy.display());
    }
    assert!(
        processes_with(&dir.display().to_string()).is_empty(),
        "a checker of this sweep still runs"
    );
}

// ------------------------------------------------------------------ contain

/// `n` local "hosts", each with a running copy of `sleep` at
/// `hosts/<name>/malware/evil-<name>`, swept once (all detected).
struct ContainLab {
    root: tempfile::TempDir,
    malware: Vec<(String, PathBuf, Child)>,
}

impl Drop for ContainLab {
    fn drop(&mut self) {
        for (_, _, c) in &mut self.malware {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl ContainLab {
    fn state(&self) -> PathBuf {
        self.root.path().join("state")
    }
}

fn contain_lab(n: usize) -> ContainLab {
    let root = tempfile::Builder::new()
        .prefix("pushscan-stop-")
        .tempdir()
        .unwrap();
    let sleep = which("sleep");
    let mut yaml = String::from("all:\n  vars:\n    ansible_connection: local\n  hosts:\n");
    let mut malware = Vec::new();
    for i in 0..n {
        let name = format!("cs{i:02}");
        let dir = root.path().join("hosts").join(&name);
        let image = dir.join("malware").join(format!("evil-{name}"));
        std::fs::create_dir_all(image.parent().unwrap()).unwrap();
        common::install_exe(&sleep, &image, 0o755);
        let process = Command::new(&image)
            .arg("3600")
            .stdin(Stdio::null())
            .spawn()
            .expect("start the malware copy");
        let q = |s: &str| serde_json::to_string(s).unwrap();
        yaml.push_str(&format!(
            "    {name}:\n      pushscan_dir: {}\n      image: {}\n",
            q(&dir.join("pushscan").display().to_string()),
            q(&image.display().to_string()),
        ));
        malware.push((name, image, process));
    }
    std::fs::write(root.path().join("inventory.yml"), yaml).unwrap();
    let pin = sha256_hex(&std::fs::read(CONTAIN_CHECKER).unwrap());
    std::fs::write(
        root.path().join("playbook.yml"),
        format!(
            "name: contain-stop\nchecker:\n  path: {CONTAIN_CHECKER}\n  sha256: \"{pin}\"\n  platform: linux\n  \
             remote_name: checker.sh\nwork_dir: \"{{{{ pushscan_dir }}}}\"\nrun_dir: \"{{{{ work_dir }}}}/reports\"\n\
             args: [\"/quiet\", \"/output\", \"{{{{ run_dir }}}}\", \"/host\", \"{{{{ inventory_hostname }}}}\", \
             \"/image\", \"{{{{ image }}}}\"]\ntimeout: 20s\nresults:\n  glob: \"*_emocheck.*\"\n  parser: emocheck\n"
        ),
    )
    .unwrap();
    let lab = ContainLab { root, malware };
    let out = Command::new(PUSHSCAN)
        .arg("sweep")
        .arg("-i")
        .arg(lab.root.path().join("inventory.yml"))
        .arg("-p")
        .arg(lab.root.path().join("playbook.yml"))
        .arg("--state-dir")
        .arg(lab.state())
        .args(["--progress", "quiet", "--forks", "16"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "all detected\n{}", text(&out));
    lab
}

/// `contain --yes` on 12 hosts (10 at a time), each host's evidence hash made slow (a
/// `sha256sum` that sleeps 3 s first, found first on the PATH the local transport passes
/// on); `sig` once the first action is journaled.
fn contain_stops_on(sig: i32) {
    let mut lab = contain_lab(12);
    let root = lab.root.path().to_path_buf();
    let slow = root.join("slowbin");
    std::fs::create_dir_all(&slow).unwrap();
    let pids = root.join("wrapper-pids");
    common::write_exe(
        &slow.join("sha256sum"),
        &format!(
            "#!/bin/sh\necho $$ >> '{}'\nsleep 3\nexec '{}' \"$@\"\n",
            pids.display(),
            which("sha256sum").display()
        ),
        0o755,
    );
    let path = format!(
        "{}:{}",
        slow.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let state = lab.state();
    let child = Command::new(PUSHSCAN)
        .args([
            "contain",
            "--yes",
            "--max-hosts",
            "12",
            "--progress",
            "quiet",
            "--state-dir",
        ])
        .arg(&state)
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        &state,
        "SELECT COUNT(*) FROM actions WHERE action='evidence'",
        "the first evidence action",
    );
    signal(&child, sig);
    let out = finish(child);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("re-check not run: interrupted"), "{said}");
    let j = journal(&state).unwrap();
    let mut stopped = 0;
    for (name, image, process) in &mut lab.malware {
        let acts: Vec<(String, String)> = {
            let mut st = j
                .prepare("SELECT action, phase FROM actions WHERE host=?1 ORDER BY id")
                .unwrap();
            st.query_map([name.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        if acts == [("interrupted".to_string(), "skipped".to_string())] {
            // Not started: journaled as such, and nothing done on the host.
            stopped += 1;
            assert!(image.exists(), "{name}: untouched host lost its file");
            assert!(
                matches!(process.try_wait(), Ok(None)),
                "{name}: untouched host lost its process"
            );
            assert!(
                said.contains(&format!(
                    "{name} NOT fully contained\n  not started: contain interrupted before this host"
                )),
                "{said}"
            );
        } else {
            // Started: every action ran to its end, none half done.
            for a in ["evidence", "kill", "remove"] {
                assert!(
                    acts.iter().any(|(x, p)| x == a && p == "done"),
                    "{name}: {a} done after the stop: {acts:?}\n{said}"
                );
            }
            assert!(!image.exists(), "{name}: file left after its removal");
        }
    }
    // Ten start at once and hold their slot for the slow hash: the signal (sent at the
    // first evidence action) finds the last two waiting, unless a loaded machine let a
    // host end first.
    assert!(
        stopped >= 1,
        "the hosts waiting for a slot were not started\n{said}"
    );
    // The re-check sweep was not started; the containment is closed as interrupted.
    assert_eq!(count(&state, "SELECT COUNT(*) FROM runs"), 1, "{said}");
    assert_eq!(
        count(
            &state,
            "SELECT COUNT(*) FROM containments WHERE finished_at IS NOT NULL \
             AND status='interrupted'"
        ),
        1,
        "{said}"
    );
    let started = wrapper_pids(&pids);
    assert_eq!(
        started.len(),
        12 - stopped,
        "one slow hash per host started"
    );
    assert_all_gone(&started, "a command contain started");
}

#[test]
fn sigint_stops_contain_cleanly() {
    contain_stops_on(libc::SIGINT);
}

#[test]
fn sigterm_stops_contain_cleanly() {
    contain_stops_on(libc::SIGTERM);
}

// ------------------------------------------------------------------ cleanup

/// `cleanup` of 55 SSH hosts (50 at a time) whose every remote command first waits 1 s
/// (sshd's ForceCommand, switched on by a flag file); `sig` once the first host's cleanup
/// is journaled. The leftovers come from a sweep killed with SIGKILL while every host ran
/// its checker.
fn cleanup_stops_on(sig: i32, octet: u8, then_clean_again: bool) {
    let n = 55;
    let root = tempfile::Builder::new()
        .prefix("pushscan-stopclean-")
        .tempdir()
        .unwrap();
    let dir = root.path();
    let flag = dir.join("slow-now");
    let pids = dir.join("wrapper-pids");
    let wrapper = dir.join("force-command.sh");
    // sftp requests reach the wrapper too (as `internal-sftp`): they run the sftp server.
    let sftp = ["/usr/lib/openssh/sftp-server", "/usr/libexec/sftp-server"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("sftp-server: apt-get install -y openssh-sftp-server");
    common::write_exe(
        &wrapper,
        &format!(
            "#!/bin/sh\ncase \"$SSH_ORIGINAL_COMMAND\" in\n  internal-sftp|*sftp-server*) exec {sftp} ;;\nesac\n\
             if [ -e '{}' ]; then echo $$ >> '{}'; sleep 1; fi\nexec /bin/sh -c \"$SSH_ORIGINAL_COMMAND\"\n",
            flag.display(),
            pids.display()
        ),
        0o755,
    );
    let fleet = SshFleet::start_with(FleetOptions {
        n_hosts: n,
        base_address: Ipv4Addr::new(127, 0, octet, 1),
        extra_config: vec![format!("ForceCommand {}", wrapper.display())],
        ..FleetOptions::default()
    });
    let checker = Path::new(ROOT).join("playbooks/checkers/emocheck-sim.sh");
    let pin = sha256_hex(&std::fs::read(&checker).unwrap());
    let pb = dir.join("pb.yml");
    std::fs::write(
        &pb,
        format!(
            "name: stop-cleanup\nchecker:\n  path: {}\n  sha256: \"{pin}\"\n  platform: linux\n  remote_name: emocheck-sim.sh\n\
             work_dir: \"{{{{ pushscan_dir }}}}\"\nrun_dir: \"{{{{ work_dir }}}}/reports\"\n\
             args: [\"/quiet\", \"/output\", \"{{{{ run_dir }}}}\", \"/host\", \"{{{{ inventory_hostname }}}}\", \"/scenario\", \"hang\"]\n\
             timeout: 60s\nresults:\n  glob: \"*_emocheck.*\"\n  parser: emocheck\n  max_file_size: 1MiB\n\
             cleanup:\n  checker: true\n",
            checker.display()
        ),
    )
    .unwrap();
    let tag = format!("sc{octet}x");
    let mut inv = String::from("[fleet]\n");
    for (i, addr) in fleet.addresses.iter().enumerate() {
        inv.push_str(&format!(
            "{tag}{i:02} ansible_host={addr} ansible_port={} pushscan_dir={}/hosts/{tag}{i:02}\n",
            fleet.port,
            dir.display()
        ));
    }
    std::fs::write(dir.join("hosts.ini"), inv).unwrap();
    let state = dir.join("state");
    let conn = |c: &mut Command| {
        c.arg("--state-dir")
            .arg(&state)
            .arg("--known-hosts")
            .arg(&fleet.known_hosts)
            .arg("-k")
            .arg(&fleet.client_key)
            .arg("--no-agent")
            .stdin(Stdio::null());
    };
    // The leftovers: every host holds the checker's copy when the sweep is killed.
    let mut sweep = Command::new(PUSHSCAN);
    sweep
        .arg("sweep")
        .arg("-i")
        .arg(dir.join("hosts.ini"))
        .arg("-p")
        .arg(&pb)
        .args(["--progress", "quiet", "--forks", "64"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    conn(&mut sweep);
    let mut sweep = sweep.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(
        &state,
        "SELECT COUNT(DISTINCT host) FROM steps WHERE step='push' AND phase='done'",
    ) < n as i64
    {
        assert!(
            Instant::now() < deadline,
            "every host got the checker; sshd log:\n{}",
            fleet.sshd_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(sweep.id() as i32, libc::SIGKILL);
    }
    let _ = sweep.wait();
    // A checker whose start was on its way when the sweep died gets the time to start.
    std::thread::sleep(Duration::from_millis(500));
    // The hanging checkers outlive the killed sweep (that is what cleanup is for): end
    // them, by the names only this test's hosts carry.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let hung = processes_with(&format!("pushscan-sim-hang-{tag}"));
        if hung.is_empty() {
            break;
        }
        for p in hung {
            // SAFETY: kill(2) on a checker process this test's sweep started.
            unsafe {
                libc::kill(p, libc::SIGKILL);
            }
        }
        assert!(Instant::now() < deadline, "the hung checkers end");
        std::thread::sleep(Duration::from_millis(100));
    }
    let copy = |i: usize| {
        dir.join("hosts")
            .join(format!("{tag}{i:02}"))
            .join("emocheck-sim.sh")
    };
    let missing: Vec<usize> = (0..n).filter(|i| !copy(*i).exists()).collect();
    assert!(
        missing.is_empty(),
        "every host holds a copy; not {missing:?}: {:?}",
        std::fs::read_dir(dir.join("hosts").join(format!("{tag}00")))
            .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );

    std::fs::write(&flag, "").unwrap();
    let mut clean = Command::new(PUSHSCAN);
    clean
        .args(["cleanup", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    conn(&mut clean);
    let child = clean.spawn().unwrap();
    wait_for(
        &state,
        "SELECT COUNT(*) FROM steps WHERE step='cleanup' AND phase='intent'",
        "the first host's cleanup",
    );
    signal(&child, sig);
    let out = finish(child);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    let j = journal(&state).unwrap();
    let mut not_started = 0;
    for i in 0..n {
        let host = format!("{tag}{i:02}");
        let phases: Vec<(String, String)> = {
            let mut st = j
                .prepare(
                    "SELECT phase, COALESCE(detail,'') FROM steps WHERE step='cleanup' AND host=?1 ORDER BY id",
                )
                .unwrap();
            st.query_map([host.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        if phases.iter().any(|(p, _)| p == "intent") {
            // Started: removed and verified, nothing half done.
            assert!(
                phases.iter().any(|(p, d)| p == "done" && d.is_empty()),
                "{host}: {phases:?}\n{said}"
            );
            assert!(!copy(i).exists(), "{host}: copy left after its cleanup");
            assert!(said.contains(&format!("run 1 {host}: cleaned")), "{said}");
        } else {
            // Not started: journaled as such (not as a failure), the copy still there for
            // the next cleanup.
            not_started += 1;
            assert_eq!(
                phases,
                [(
                    "not_started".to_string(),
                    "not started: cleanup interrupted before this host".to_string()
                )],
                "{host}\n{said}"
            );
            assert!(copy(i).exists(), "{host}: a host not started was touched");
        }
    }
    assert!(
        not_started >= 1,
        "hosts waiting for a slot were not started\n{said}"
    );
    assert!(
        said.contains("interrupted: no new host is started"),
        "{said}"
    );
    let started = wrapper_pids(&pids);
    assert!(started.len() >= 50, "the slow commands ran: {started:?}");
    assert_all_gone(&started, "a remote command of this cleanup");
    if !then_clean_again {
        return;
    }
    // The next cleanup does what was left.
    std::fs::remove_file(&flag).unwrap();
    let mut again = Command::new(PUSHSCAN);
    again.args(["cleanup", "1"]);
    conn(&mut again);
    let again = again.output().unwrap();
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert!(
        (0..n).all(|i| !copy(i).exists()),
        "nothing left after the second cleanup"
    );
}

#[test]
fn sigint_stops_cleanup_cleanly() {
    cleanup_stops_on(libc::SIGINT, 140, true);
}

#[test]
fn sigterm_stops_cleanup_cleanly() {
    // The second cleanup is the SIGINT test's: once is enough for 55 more SSH logins.
    cleanup_stops_on(libc::SIGTERM, 141, false);
}
