//! Durable sweeps: kill -9 at random moments then resume and cleanup (real
//! SSH fleet), concurrent sweeps on overlapping hosts, history and change
//! markers across sweeps, and Ctrl-C through a pseudo-terminal.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::sshd::SshFleet;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pushscan"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

/// A 1 MiB stand-in checker (the script plus a comment block after its
/// final `exit`), so pushes take long enough to be interrupted.
fn padded_checker(dir: &Path) -> (PathBuf, String) {
    let mut bytes =
        std::fs::read(Path::new(ROOT).join("playbooks/checkers/emocheck-sim.sh")).unwrap();
    if !bytes.ends_with(b"\n") {
        bytes.push(b'\n');
    }
    while bytes.len() < 1 << 20 {
        bytes.extend_from_slice(
            b"# padding padding padding padding padding padding padding padding\n",
        );
    }
    bytes.truncate(1 << 20);
    let last = bytes.len() - 1;
    bytes[last] = b'\n';
    let path = dir.join("checker-1mib.sh");
    std::fs::write(&path, &bytes).unwrap();
    (path, sha256_hex(&bytes))
}

fn playbook(dir: &Path, checker: &Path, pin: &str, remove_checker: bool) -> PathBuf {
    let pb = format!(
        "name: durable\nchecker:\n  path: {}\n  sha256: \"{pin}\"\n  platform: linux\n  remote_name: emocheck-sim.sh\n\
         work_dir: \"{{{{ pushscan_dir }}}}\"\nrun_dir: \"{{{{ work_dir }}}}/reports\"\n\
         args: [\"/quiet\", \"/output\", \"{{{{ run_dir }}}}\", \"/host\", \"{{{{ inventory_hostname }}}}\", \"/scenario\", \"{{{{ scenario | default('clean') }}}}\"]\n\
         timeout: 20s\nresults:\n  glob: \"*_emocheck.*\"\n  parser: emocheck\n  max_file_size: 1MiB\n\
         cleanup:\n  checker: {remove_checker}\n",
        checker.display()
    );
    let path = dir.join("pb.yml");
    std::fs::write(&path, pb).unwrap();
    path
}

/// Deterministic pseudo-random numbers (the seed is printed on failure).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

fn kill9(child: &mut Child) {
    // SAFETY: kill(2) on our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
}

fn db(state: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(state.join("journal.sqlite")).unwrap()
}

fn count(conn: &rusqlite::Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn kill9_at_random_moments_then_resume_and_cleanup_loses_nothing_and_leaves_nothing() {
    let n = 100;
    let fleet = SshFleet::start(n);
    let root = tempfile::tempdir().unwrap();
    let (checker, pin) = padded_checker(root.path());
    // The checker is removed after each host: anything of ours left on a
    // host after the final cleanup is a leak.
    let pb = playbook(root.path(), &checker, &pin, true);
    let mut inv = String::from("[fleet]\n");
    for (i, addr) in fleet.addresses.iter().enumerate() {
        let scenario = if i % 10 == 3 { "detected" } else { "clean" };
        inv.push_str(&format!(
            "h{i:03} ansible_host={addr} ansible_port={} pushscan_dir={}/hosts/h{i:03} scenario={scenario}\n",
            fleet.port,
            root.path().display()
        ));
    }
    std::fs::write(root.path().join("hosts.ini"), inv).unwrap();
    let state = root.path().join("state");
    let conn_args = |c: &mut Command| {
        c.arg("--state-dir")
            .arg(&state)
            .arg("--known-hosts")
            .arg(&fleet.known_hosts)
            .arg("-k")
            .arg(&fleet.client_key)
            .arg("--no-agent")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    };
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut rng = Rng(seed);
    eprintln!("seed {seed}");
    let mut seen_reports: Vec<i64> = Vec::new();
    let check_reports_kept = |seen: &mut Vec<i64>| {
        // Nothing fetched before a kill may be lost.
        let d = db(&state);
        let mut st = d.prepare("SELECT id FROM reports ORDER BY id").unwrap();
        let ids: Vec<i64> = st
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for old in seen.iter() {
            assert!(
                ids.contains(old),
                "seed {seed}: report {old} fetched before a kill is gone"
            );
        }
        *seen = ids;
    };
    let spawn = |args: &[&str]| {
        let mut c = bin();
        c.args(args);
        conn_args(&mut c);
        c.args(["--progress", "quiet"]);
        c.spawn().unwrap()
    };
    let runs = 6i64;
    let mut kills = 0;
    let mut cleaned_before_resume = 0;
    for run in 1..=runs {
        let inv = root.path().join("hosts.ini");
        let mut child = spawn(&[
            "sweep",
            "-i",
            inv.to_str().unwrap(),
            "-p",
            pb.to_str().unwrap(),
            "--forks",
            "16",
        ]);
        if run == 1 {
            // Once, deterministically: kill right after a push landed, so
            // the host holds our checker mid-run.
            let pushed = (0..500).any(|_| {
                std::thread::sleep(Duration::from_millis(10));
                state.join("journal.sqlite").exists()
                    && rusqlite::Connection::open(state.join("journal.sqlite"))
                        .and_then(|c| {
                            c.query_row(
                                "SELECT COUNT(*) FROM steps WHERE run_id=1 AND step='push' AND phase='done'",
                                [],
                                |r| r.get::<_, i64>(0),
                            )
                        })
                        .map(|n| n > 0)
                        .unwrap_or(false)
            });
            assert!(pushed, "seed {seed}: a push landed");
        } else {
            // The random moment counts from the run's start in the journal: on a loaded
            // machine the binary may need more than the shortest delay to get there, and a
            // kill before it leaves no run to resume or clean.
            let started = (0..1000).any(|_| {
                std::thread::sleep(Duration::from_millis(10));
                state.join("journal.sqlite").exists()
                    && rusqlite::Connection::open(state.join("journal.sqlite"))
                        .and_then(|c| {
                            c.query_row("SELECT COUNT(*) FROM runs WHERE id=?1", [run], |r| {
                                r.get::<_, i64>(0)
                            })
                        })
                        .map(|n| n > 0)
                        .unwrap_or(false)
            });
            assert!(started, "seed {seed}: run {run} started within 10 s");
            std::thread::sleep(rng.millis(300, 2500));
        }
        kill9(&mut child);
        kills += 1;
        check_reports_kept(&mut seen_reports);
        let cleanup = |expect_work: bool| {
            let mut c = bin();
            c.arg("cleanup").arg(run.to_string());
            conn_args(&mut c);
            c.stdout(Stdio::piped()).stderr(Stdio::piped());
            let out = c.output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "seed {seed}: cleanup of run {run}:\n{}\n{}",
                text(&out.stdout),
                text(&out.stderr)
            );
            let cleaned = text(&out.stdout).matches(": cleaned").count();
            if expect_work {
                assert!(
                    cleaned > 0,
                    "seed {seed}: run {run}: cleanup found nothing:\n{}",
                    text(&out.stdout)
                );
            }
            cleaned
        };
        // Odd runs: clean up first (what an operator does when the sweep
        // cannot be continued), then resume. From run 2 on, the resume is
        // killed once too.
        if run % 2 == 1 {
            cleaned_before_resume += cleanup(run == 1);
        }
        if run > 1 {
            let mut child = spawn(&["resume", &run.to_string()]);
            std::thread::sleep(rng.millis(200, 1500));
            kill9(&mut child);
            kills += 1;
            check_reports_kept(&mut seen_reports);
        }
        let mut c = bin();
        c.arg("resume").arg(run.to_string());
        conn_args(&mut c);
        c.args(["--progress", "quiet"]);
        let status = c.status().unwrap();
        assert_eq!(
            status.code(),
            Some(1),
            "seed {seed}: run {run} completes with its detections"
        );
        check_reports_kept(&mut seen_reports);
        cleanup(false);
    }
    assert!(cleaned_before_resume > 0);
    assert!(kills >= 10);

    let d = db(&state);
    let integrity: String = d
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    for run in 1..=runs {
        // Exactly one final result per host.
        let done = count(&d, &format!("SELECT COUNT(*) FROM hosts WHERE run_id={run} AND state='done' AND class IS NOT NULL"));
        assert_eq!(done, n as i64, "seed {seed}: run {run}");
        let detected = count(
            &d,
            &format!("SELECT COUNT(*) FROM hosts WHERE run_id={run} AND class='detected'"),
        );
        let clean = count(
            &d,
            &format!("SELECT COUNT(*) FROM hosts WHERE run_id={run} AND class='not_detected'"),
        );
        assert_eq!(
            (detected, clean),
            (10, 90),
            "seed {seed}: run {run} classes"
        );
        // No checker ran after the host's result was recorded.
        let late = count(
            &d,
            &format!(
                "SELECT COUNT(*) FROM steps s JOIN hosts h ON h.run_id=s.run_id AND h.host=s.host
                 WHERE s.run_id={run} AND s.step='run' AND s.phase='intent' AND s.at > h.finished_at"
            ),
        );
        assert_eq!(
            late, 0,
            "seed {seed}: run {run}: a checker ran after its host's result was recorded"
        );
        // Every host's final result points at a report of that host.
        let orphan = count(
            &d,
            &format!(
                "SELECT COUNT(*) FROM hosts h LEFT JOIN reports r ON r.id=h.primary_report
                 WHERE h.run_id={run} AND (r.id IS NULL OR r.host != h.host)"
            ),
        );
        assert_eq!(orphan, 0, "seed {seed}");
    }
    // Nothing of ours is left on any host: the checker and temp copies are
    // gone, only EmoCheck's reports stay.
    for i in 0..n {
        let dir = root.path().join("hosts").join(format!("h{i:03}"));
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            vec!["reports"],
            "seed {seed}: leftovers on h{i:03}: {names:?}"
        );
        for e in std::fs::read_dir(dir.join("reports")).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                name.ends_with("_emocheck.txt"),
                "seed {seed}: h{i:03}: {name}"
            );
        }
    }
    // The kills did hit hosts in flight: cleanup had real work to do.
    let cleaned = count(
        &d,
        "SELECT COUNT(*) FROM steps WHERE step='cleanup' AND phase='done'",
    );
    assert!(
        cleaned > 0,
        "seed {seed}: no kill left anything to clean up"
    );
    let leases = count(&d, "SELECT COUNT(*) FROM leases");
    assert_eq!(leases, 0, "no lease outlives the runs");
}

/// A local "fleet" sharing one state dir.
fn local_inventory(dir: &Path, hosts: &[(&str, &str)]) -> PathBuf {
    let mut inv = String::from("all:\n  children:\n    lab:\n      hosts:\n");
    for (name, scenario) in hosts {
        inv.push_str(&format!(
            "        {name}:\n          ansible_connection: local\n          scenario: {scenario}\n          pushscan_dir: {}\n",
            dir.join("hosts").join(name).display()
        ));
    }
    let path = dir.join(format!(
        "inv-{}.yml",
        hosts.iter().map(|h| h.1).collect::<Vec<_>>().join("-")
    ));
    std::fs::write(&path, inv).unwrap();
    path
}

fn local_sweep(dir: &Path, inv: &Path, pb: &Path, extra: &[&str]) -> Output {
    bin()
        .arg("sweep")
        .arg("-i")
        .arg(inv)
        .arg("-p")
        .arg(pb)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--progress", "quiet"])
        .args(extra)
        .output()
        .unwrap()
}

fn report(dir: &Path, run: i64, blind_days: u64) -> BTreeMap<String, Value> {
    let out = bin()
        .args([
            "report",
            "--format",
            "json",
            "--run",
            &run.to_string(),
            "--blind-days",
            &blind_days.to_string(),
            "--state-dir",
        ])
        .arg(dir.join("state"))
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut m: BTreeMap<String, Value> = v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["host"].as_str().unwrap().to_string(), h.clone()))
        .collect();
    m.insert("_blind".into(), v["blind_spots"].clone());
    m
}

#[test]
fn concurrent_sweeps_never_work_on_the_same_host() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let checker = Path::new(ROOT).join("playbooks/checkers/emocheck-sim.sh");
    let pin = sha256_hex(&std::fs::read(&checker).unwrap());
    let pb = playbook(dir, &checker, &pin, false);
    // Sweep A: six slow hosts (2 s each), all at once.
    let all: Vec<(String, &str)> = (1..=6).map(|i| (format!("s{i}"), "slow")).collect();
    let all_ref: Vec<(&str, &str)> = all.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    let inv = local_inventory(dir, &all_ref);
    let mut a = bin()
        .arg("sweep")
        .arg("-i")
        .arg(&inv)
        .arg("-p")
        .arg(&pb)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--progress", "quiet", "--forks", "6"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until A holds leases, then start B on an overlapping set.
    let journal = dir.join("state").join("journal.sqlite");
    let held = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(25));
        journal.exists()
            && rusqlite::Connection::open(&journal)
                .and_then(|c| {
                    c.query_row("SELECT COUNT(*) FROM leases", [], |r| r.get::<_, i64>(0))
                })
                .map(|n| n == 6)
                .unwrap_or(false)
    });
    assert!(held, "sweep A took its six leases");
    let b = local_sweep(dir, &inv, &pb, &["--limit", "s4:s5:s6"]);
    let a_status = a.wait().unwrap();
    assert_eq!(a_status.code(), Some(0));
    assert_eq!(
        b.status.code(),
        Some(2),
        "busy hosts were not checked: {}",
        text(&b.stderr)
    );
    let rb = report(dir, 2, 7);
    for h in ["s4", "s5", "s6"] {
        assert_eq!(rb[h]["status"], "busy", "{h}: {}", rb[h]);
        assert!(rb[h]["reason"].as_str().unwrap().contains("run 1"));
    }
    // No host was worked on by both runs: B never started a step on them.
    let d = db(&dir.join("state"));
    assert_eq!(count(&d, "SELECT COUNT(*) FROM steps WHERE run_id=2"), 0);
    assert_eq!(count(&d, "SELECT COUNT(*) FROM leases"), 0);
    // Once A is done, the hosts are free again.
    let c = local_sweep(dir, &inv, &pb, &["--limit", "s4"]);
    assert_eq!(c.status.code(), Some(0), "{}", text(&c.stderr));
}

#[test]
fn history_and_change_markers_across_three_sweeps() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let checker = Path::new(ROOT).join("playbooks/checkers/emocheck-sim.sh");
    let pin = sha256_hex(&std::fs::read(&checker).unwrap());
    let pb = playbook(dir, &checker, &pin, false);
    // An old report already on h1 before pushscan ever ran (EmoCheck keeps them).
    let old = dir.join("hosts/h1/reports");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(
        old.join("h1_20240101093000_emocheck.txt"),
        "[EmoCheck v2.3.2]\r\nScan time: 2024-01-01 09:30:00\r\n____________________________________________________\r\n\r\n[Result] \r\nDetected Emotet process.\r\n\r\n[Emotet Process] \r\n     Process Name  : old.exe\r\n     Process ID    : 77\r\n     Image Path    : C:\\old.exe\r\n     Registry Key  : HKEY_CURRENT_USER\\Software\\Microsoft\\Windows\\CurrentVersion\\Run\\old\r\n____________________________________________________\r\n\r\nPlease remove or isolate the suspicious execution file.\r\n",
    )
    .unwrap();

    let s1 = local_inventory(
        dir,
        &[
            ("h1", "clean"),
            ("h2", "detected"),
            ("h3", "clean"),
            ("h4", "clean"),
        ],
    );
    assert_eq!(local_sweep(dir, &s1, &pb, &[]).status.code(), Some(1));
    let r1 = report(dir, 1, 7);
    for h in ["h1", "h2", "h3", "h4"] {
        assert_eq!(r1[h]["change"], "first_check", "{h}");
    }

    let s2 = local_inventory(
        dir,
        &[
            ("h1", "detected"),
            ("h2", "detected2"),
            ("h3", "clean"),
            ("h4", "clean"),
        ],
    );
    assert_eq!(local_sweep(dir, &s2, &pb, &[]).status.code(), Some(1));
    let r2 = report(dir, 2, 7);
    assert_eq!(r2["h1"]["change"], "new_detection");
    assert_eq!(r2["h2"]["change"], "still_detected");
    assert_eq!(r2["h3"]["change"], "unchanged");

    // Sweep 3: h2 cleaned, h4 unreachable (nothing listens there).
    let mut inv3 = String::from("all:\n  children:\n    lab:\n      hosts:\n");
    for (name, scenario) in [("h1", "detected"), ("h2", "clean"), ("h3", "clean")] {
        inv3.push_str(&format!(
            "        {name}:\n          ansible_connection: local\n          scenario: {scenario}\n          pushscan_dir: {}\n",
            dir.join("hosts").join(name).display()
        ));
    }
    inv3.push_str(&format!(
        "        h4:\n          ansible_host: 127.0.3.251\n          ansible_port: 1\n          pushscan_dir: {}\n",
        dir.join("hosts/h4").display()
    ));
    std::fs::write(dir.join("inv3.yml"), inv3).unwrap();
    let out = local_sweep(
        dir,
        &dir.join("inv3.yml"),
        &pb,
        &["--connect-timeout", "2s"],
    );
    assert_eq!(out.status.code(), Some(1));
    let table = text(&out.stdout);
    assert!(
        table.contains("CLEARED since the previous check (1)"),
        "{table}"
    );
    assert!(table.contains("STILL h1"), "{table}");
    let r3 = report(dir, 3, 0);
    assert_eq!(r3["h1"]["change"], "still_detected");
    assert_eq!(r3["h2"]["change"], "cleared");
    assert_eq!(r3["h4"]["status"], "unreachable");
    assert!(r3["h4"]["change"].is_null());
    let blind = r3["_blind"].as_array().unwrap();
    assert_eq!(blind.len(), 1, "{blind:?}");
    assert_eq!(blind[0]["host"], "h4");
    assert!(
        blind[0]["last_success"].is_string(),
        "h4 was checked in sweep 2"
    );

    // History: newest first, with the report found on the host from before.
    let out = bin()
        .args(["history", "h2", "--json", "--state-dir"])
        .arg(dir.join("state"))
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let classes: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["class"].as_str().unwrap())
        .collect();
    assert_eq!(classes, vec!["not_detected", "detected", "detected"]);
    assert_eq!(
        v["results"][1]["report"]["processes"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let out = bin()
        .args(["history", "h1", "--json", "--state-dir"])
        .arg(dir.join("state"))
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let found = v["found_on_host"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{v}");
    assert_eq!(found[0]["remote_name"], "h1_20240101093000_emocheck.txt");
    assert_eq!(found[0]["processes"][0]["name"], "old.exe");
    // Fetched once: later sweeps do not fetch it again.
    let d = db(&dir.join("state"));
    assert_eq!(
        count(
            &d,
            "SELECT COUNT(*) FROM reports WHERE origin='history' AND host='h1'"
        ),
        1
    );

    // `runs` shows counts and completeness.
    let out = bin()
        .args(["runs", "--json", "--state-dir"])
        .arg(dir.join("state"))
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["counts"]["unreachable"], 1);
    assert_eq!(v[0]["complete"], true);
}

#[test]
fn ctrl_c_in_a_terminal_stops_cleanly_and_says_how_to_resume() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let checker = Path::new(ROOT).join("playbooks/checkers/emocheck-sim.sh");
    let pin = sha256_hex(&std::fs::read(&checker).unwrap());
    let pb = playbook(dir, &checker, &pin, false);
    let pb_text = std::fs::read_to_string(&pb)
        .unwrap()
        .replace("timeout: 20s", "timeout: 3s");
    std::fs::write(&pb, pb_text).unwrap();
    let inv = local_inventory(dir, &[("t1", "hang"), ("t2", "clean"), ("t3", "clean")]);
    // Run pushscan on a pseudo-terminal, type Ctrl-C once it has started,
    // and capture everything the terminal received.
    let script = r#"
import os, pty, sys, time, select, signal
argv = sys.argv[1:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)
out = b""
deadline = time.time() + 60
sent = False
start = time.time()
while time.time() < deadline:
    r, _, _ = select.select([fd], [], [], 0.1)
    if r:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        out += data
    if not sent and time.time() - start > 1.5:
        os.write(fd, b"\x03")
        sent = True
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
sys.stderr.write("EXIT %d\n" % os.waitstatus_to_exitcode(status))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_pushscan"))
        .arg("sweep")
        .arg("-i")
        .arg(&inv)
        .arg("-p")
        .arg(&pb)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--forks", "1"])
        .output()
        .expect("python3 (apt-get install python3)");
    let screen = text(&out.stdout);
    assert!(
        text(&out.stderr).contains("EXIT 2"),
        "{}\n{screen}",
        text(&out.stderr)
    );
    assert!(screen.contains("interrupted"), "{screen}");
    assert!(screen.contains("pushscan resume 1"), "{screen}");
    // The bar is cleared and the cursor never left hidden.
    if let Some(hide) = screen.rfind("\x1b[?25l") {
        assert!(screen[hide..].contains("\x1b[?25h"), "cursor left hidden");
    }
    assert!(screen.contains("not_started"), "{screen}");
}

/// Starts a sweep with `inventories` (local hosts, forks 1), interrupts it
/// once a host is running, and returns its output (run 1 is then
/// unfinished).
fn interrupted_sweep(dir: &Path, inventories: &[&Path], pb: &Path) -> Output {
    let mut cmd = bin();
    cmd.arg("sweep");
    for inv in inventories {
        cmd.arg("-i").arg(inv);
    }
    let child = cmd
        .arg("-p")
        .arg(pb)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--progress", "quiet", "--forks", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let journal = dir.join("state").join("journal.sqlite");
    let started = (0..400).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        journal.exists()
            && rusqlite::Connection::open(&journal)
                .and_then(|c| {
                    c.query_row(
                        "SELECT COUNT(*) FROM hosts WHERE state='running'",
                        [],
                        |r| r.get::<_, i64>(0),
                    )
                })
                .map(|n| n > 0)
                .unwrap_or(false)
    });
    assert!(started, "the sweep started a host");
    // SAFETY: plain kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    out
}

fn resume(dir: &Path) -> Output {
    bin()
        .args(["resume", "1", "--progress", "quiet", "--state-dir"])
        .arg(dir.join("state"))
        .output()
        .unwrap()
}

fn quick_playbook(dir: &Path) -> PathBuf {
    let checker = Path::new(ROOT).join("playbooks/checkers/emocheck-sim.sh");
    let pin = sha256_hex(&std::fs::read(&checker).unwrap());
    let pb = playbook(dir, &checker, &pin, false);
    let pb_text = std::fs::read_to_string(&pb)
        .unwrap()
        .replace("timeout: 20s", "timeout: 3s");
    std::fs::write(&pb, pb_text).unwrap();
    pb
}

#[test]
fn resume_of_a_sweep_over_several_inventories_needs_none_of_them() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let pb = quick_playbook(dir);
    let h = |name: &str| dir.join("hosts").join(name).display().to_string();
    // r1 hangs (and is interrupted); r2's scenario comes from the second
    // source, which overrides the first; r4 is only in the second.
    let a = dir.join("a.yml");
    std::fs::write(
        &a,
        format!(
            "all:\n  vars:\n    ansible_connection: local\n  children:\n    lab:\n      hosts:\n\
             \x20       r1: {{scenario: hang, pushscan_dir: {}}}\n\
             \x20       r2: {{scenario: clean, pushscan_dir: {}}}\n\
             \x20       r3: {{pushscan_dir: {}}}\n",
            h("r1"),
            h("r2"),
            h("r3")
        ),
    )
    .unwrap();
    let b = dir.join("b.ini");
    std::fs::write(
        &b,
        format!(
            "[lab]\nr2 scenario=detected\nr4 ansible_connection=local pushscan_dir={}\n",
            h("r4")
        ),
    )
    .unwrap();
    let out = interrupted_sweep(dir, &[&a, &b], &pb);
    let err = text(&out.stderr);
    assert!(
        err.lines().any(|l| l.contains("host `r2`")
            && l.contains("`scenario`")
            && l.contains("a.yml")
            && l.contains("b.ini")),
        "a warning names both sources: {err}"
    );
    // The run stores the resolved inventory (list JSON) under a label
    // naming both sources.
    let (label, stored): (String, String) = db(&dir.join("state"))
        .query_row(
            "SELECT inventory_path, inventory_text FROM runs WHERE id=1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(label, format!("{} + {}", a.display(), b.display()));
    let json: Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(json["_meta"]["hostvars"]["r2"]["scenario"], "detected");
    assert_eq!(
        json["_meta"]["pushscan"]["hosts"],
        serde_json::json!(["r1", "r2", "r3", "r4"])
    );

    // Without the sources, resume finishes the run from what it stored.
    std::fs::remove_file(&a).unwrap();
    std::fs::remove_file(&b).unwrap();
    let out = resume(dir);
    assert_eq!(
        out.status.code(),
        Some(1),
        "r2 is a detection: {}",
        text(&out.stderr)
    );
    let r = report(dir, 1, 7);
    assert_eq!(r["r1"]["status"], "timeout", "{}", r["r1"]);
    assert_eq!(r["r2"]["status"], "detected", "{}", r["r2"]);
    assert_eq!(r["r3"]["status"], "not_detected", "{}", r["r3"]);
    assert_eq!(r["r4"]["status"], "not_detected", "{}", r["r4"]);
}

#[test]
fn resume_still_reads_runs_that_stored_the_inventory_file_itself() {
    // Runs recorded before inventories were stored as list JSON hold the
    // file's own text and path.
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let pb = quick_playbook(dir);
    let inv = local_inventory(dir, &[("o1", "hang"), ("o2", "detected")]);
    interrupted_sweep(dir, &[&inv], &pb);
    let raw = std::fs::read_to_string(&inv).unwrap();
    db(&dir.join("state"))
        .execute(
            "UPDATE runs SET inventory_path=?1, inventory_text=?2 WHERE id=1",
            [inv.display().to_string(), raw],
        )
        .unwrap();
    std::fs::remove_file(&inv).unwrap();
    let out = resume(dir);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let r = report(dir, 1, 7);
    assert_eq!(r["o2"]["status"], "detected", "{}", r["o2"]);
}
