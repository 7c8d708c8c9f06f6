//! An incident sweep with the real YARA-X command line (`yr`, crates.io yara-x-cli 1.22.1)
//! over a real OpenSSH fleet on loopback: the checker is `yr` (pinned), its rules file a
//! pinned playbook input the test writes, and each host gets a directory the test plants
//! files in. Asserts that exactly the planted files are found, that a second sweep pushes
//! nothing (journal, host record, the files' inodes and mtimes on the hosts), that cleanup
//! removes the checker and its inputs (on disk), that a mismatching input pin refuses the
//! sweep before any host is touched, and that an input tampered with on a host is pushed
//! again.
//!
//! `yr` comes from the cache `scripts/test` installs it into (or `PUSHSCAN_TEST_YR`); a
//! missing `yr` fails the test with the install command.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::hook::Hook;
use common::sshd::SshFleet;
use common::{sha256_hex, text, yr};
use serde_json::Value;

const RULES: &str = r#"rule Incident_Dropper {
    strings:
        $a = "PUSHSCAN-INCIDENT-7f3c"
    condition:
        $a
}
"#;

struct Lab {
    fleet: SshFleet,
    root: tempfile::TempDir,
    /// host name -> the files planted in its scan directory that the rule matches.
    planted: BTreeMap<String, BTreeSet<String>>,
    yr_pin: String,
}

impl Lab {
    fn p(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }
    /// The host's work directory (where `yr` and the rules go).
    fn work(&self, host: &str) -> PathBuf {
        self.p("hosts").join(host)
    }
}

/// A fleet of `n` hosts. Host 0 has two planted files (one in a subdirectory) and a clean
/// one; host 1 only clean files; host 2 one planted file.
fn setup(n: usize) -> Lab {
    let yr = yr();
    let fleet = SshFleet::start(n);
    let root = tempfile::tempdir().expect("tempdir");
    let mut planted = BTreeMap::new();
    let mut inv = String::from("all:\n  vars:\n    ansible_connection: ssh\n  hosts:\n");
    for i in 0..n {
        let name = format!("yh{i}");
        let scan = root.path().join("scan").join(&name);
        std::fs::create_dir_all(scan.join("sub")).unwrap();
        std::fs::write(scan.join("clean.txt"), "nothing to see").unwrap();
        let mut mine = BTreeSet::new();
        let mut plant = |rel: &str| {
            let p = scan.join(rel);
            std::fs::write(&p, format!("MZ....PUSHSCAN-INCIDENT-7f3c....{rel}")).unwrap();
            mine.insert(p.to_string_lossy().into_owned());
        };
        match i % 3 {
            0 => {
                plant("dropper.bin");
                plant("sub/stage2.dll");
            }
            1 => {}
            _ => plant("x.dat"),
        }
        planted.insert(name.clone(), mine);
        inv.push_str(&format!(
            "    {name}:\n      ansible_host: {}\n      ansible_port: {}\n      pushscan_dir: {}\n      scan_dir: {}\n",
            fleet.addresses[i],
            fleet.port,
            root.path().join("hosts").join(&name).display(),
            scan.display()
        ));
    }
    std::fs::write(root.path().join("inventory.yml"), inv).unwrap();
    std::fs::create_dir_all(root.path().join("rules")).unwrap();
    std::fs::write(root.path().join("rules/incident.yar"), RULES).unwrap();
    let yr_pin = sha256_hex(&std::fs::read(&yr).unwrap());
    let lab = Lab {
        fleet,
        root,
        planted,
        yr_pin,
    };
    write_playbook(&lab, "playbook.yml", &sha256_hex(RULES.as_bytes()), false);
    lab
}

fn write_playbook(lab: &Lab, file: &str, rules_pin: &str, clean: bool) {
    let pb = format!(
        "name: incident-yara\n\
         checker:\n  path: {yr}\n  sha256: {pin}\n  platform: linux\n  remote_name: yr\n\
         inputs:\n  - name: rules\n    path: rules/incident.yar\n    sha256: {rules_pin}\n\
         work_dir: \"{{{{ pushscan_dir }}}}\"\n\
         args: [scan, --output-format, ndjson, -r, \"{{{{ inputs.rules }}}}\", \"{{{{ scan_dir }}}}\"]\n\
         timeout: 60s\n\
         results:\n  parser: yara_x\n  max_file_size: 1MiB\n\
         cleanup:\n  checker: {clean}\n  dirs: {clean}\n",
        yr = yr().display(),
        pin = lab.yr_pin,
    );
    std::fs::write(lab.p(file), pb).unwrap();
}

fn pushscan(lab: &Lab, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pushscan"))
        .args(args)
        .arg("--state-dir")
        .arg(lab.p("state"))
        .env_remove("PUSHSCAN_SSH_PASSWORD")
        .output()
        .expect("run pushscan")
}

fn sweep(lab: &Lab, playbook: &str) -> Output {
    sweep_with(lab, playbook, &[])
}

fn sweep_with(lab: &Lab, playbook: &str, extra: &[&str]) -> Output {
    let (inv, pb, kh) = (
        lab.p("inventory.yml"),
        lab.p(playbook),
        &lab.fleet.known_hosts,
    );
    let key = &lab.fleet.client_key;
    Command::new(env!("CARGO_BIN_EXE_pushscan"))
        .arg("sweep")
        .arg("-i")
        .arg(inv)
        .arg("-p")
        .arg(pb)
        .arg("--state-dir")
        .arg(lab.p("state"))
        .arg("--known-hosts")
        .arg(kh)
        .arg("-k")
        .arg(key)
        .args([
            "--no-agent",
            "--progress",
            "lines",
            "--connect-timeout",
            "5s",
        ])
        .args(extra)
        .env_remove("PUSHSCAN_SSH_PASSWORD")
        .output()
        .expect("run pushscan")
}

/// Each host's findings' `path` attributes in the latest run's JSON report, with its status.
fn found(lab: &Lab) -> BTreeMap<String, (String, BTreeSet<String>)> {
    let out = pushscan(lab, &["report", "--format", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("report is not JSON ({e}): {}", text(&out));
    });
    v["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .map(|h| {
            let paths = h["findings"]
                .as_array()
                .expect("findings")
                .iter()
                .map(|f| {
                    assert_eq!(f["title"], "Incident_Dropper", "{f}");
                    f["attributes"]["path"].as_str().expect("path").to_string()
                })
                .collect();
            (
                h["host"].as_str().unwrap().to_string(),
                (h["status"].as_str().unwrap().to_string(), paths),
            )
        })
        .collect()
}

/// The `push` outcomes of run `run`, by host: (target, detail).
fn push_steps(lab: &Lab, run: i64) -> BTreeMap<String, (String, String)> {
    let db = rusqlite::Connection::open(lab.p("state").join("journal.sqlite")).unwrap();
    let mut st = db
        .prepare(
            "SELECT host, target, detail FROM steps WHERE run_id = ?1 AND step = 'push' AND phase = 'done'",
        )
        .unwrap();
    let rows = st
        .query_map([run], |r| {
            Ok((
                r.get::<_, String>(0)?,
                (
                    r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                ),
            ))
        })
        .unwrap();
    rows.map(Result::unwrap).collect()
}

/// Whether each host's record says the run pushed something.
fn pushed(lab: &Lab, run: i64) -> BTreeMap<String, Option<bool>> {
    let out = pushscan(
        lab,
        &["report", "--format", "json", "--run", &run.to_string()],
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("report JSON");
    v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["host"].as_str().unwrap().to_string(),
                h["pushed"].as_bool(),
            )
        })
        .collect()
}

/// (inode, mtime in ns, SHA-256) of a file on a host.
fn stamp(p: &Path) -> (u64, i128, String) {
    let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert!(m.file_type().is_file(), "{} is a regular file", p.display());
    (
        m.ino(),
        i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        sha256_hex(&std::fs::read(p).unwrap()),
    )
}

#[test]
fn yr_finds_exactly_the_planted_files_skips_the_second_push_and_cleanup_removes_it_all() {
    let lab = setup(3);
    let rules_pin = sha256_hex(RULES.as_bytes());

    // ---- first sweep: yr and the rules pushed, exactly the planted files found ----
    let hook = Hook::start(&[200]);
    std::fs::write(
        lab.p("notify.yml"),
        format!(
            "webhook:\n  url: http://127.0.0.1:{}/hook\n  retries: 0\n",
            hook.port
        ),
    )
    .unwrap();
    let notify = lab.p("notify.yml").display().to_string();
    let t0 = std::time::Instant::now();
    let out = sweep_with(&lab, "playbook.yml", &["--notify-config", &notify]);
    let first = t0.elapsed();
    assert_eq!(
        out.status.code(),
        Some(1),
        "detections exit 1\n{}",
        text(&out)
    );
    let got = found(&lab);
    for (host, want) in &lab.planted {
        let (status, paths) = &got[host];
        assert_eq!(paths, want, "{host}: the findings are the planted files");
        let expect = if want.is_empty() {
            "not_detected"
        } else {
            "detected"
        };
        assert_eq!(status, expect, "{host}");
    }
    // The same files, and no clean one, in the HTML page, the alert and each host's history.
    let all_planted: Vec<&String> = lab.planted.values().flatten().collect();
    let html_file = lab.p("report.html");
    let html_out = pushscan(
        &lab,
        &[
            "report",
            "--format",
            "html",
            "-o",
            &html_file.display().to_string(),
        ],
    );
    assert_eq!(html_out.status.code(), Some(1), "{}", text(&html_out));
    let html = std::fs::read_to_string(&html_file).unwrap();
    let requests = hook.requests();
    assert_eq!(requests.len(), 1, "one alert for the run");
    let alert = String::from_utf8_lossy(&requests[0].body).into_owned();
    for p in &all_planted {
        assert!(html.contains(p.as_str()), "the HTML page names {p}");
        assert!(alert.contains(p.as_str()), "the alert names {p}: {alert}");
    }
    assert!(
        !html.contains("clean.txt"),
        "the HTML page names a clean file"
    );
    assert!(
        !alert.contains("clean.txt"),
        "the alert names a clean file: {alert}"
    );
    for (host, want) in &lab.planted {
        let h = pushscan(&lab, &["history", host, "--json"]);
        assert_eq!(h.status.code(), Some(0), "{}", text(&h));
        let h = text(&h);
        for p in want {
            assert!(h.contains(p.as_str()), "{host}'s history names {p}:\n{h}");
        }
        assert!(
            !h.contains("clean.txt"),
            "{host}'s history names a clean file:\n{h}"
        );
    }
    for (host, (target, detail)) in push_steps(&lab, 1) {
        assert!(
            detail.starts_with("verified and renamed: checker ")
                && detail.contains(&format!("input rules {rules_pin}"))
                && !detail.contains("skipped"),
            "{host}: {detail}"
        );
        let w = lab.work(&host);
        assert_eq!(
            target,
            format!(
                "{}\n{}",
                w.join("yr").display(),
                w.join("incident.yar").display()
            )
        );
    }
    assert!(pushed(&lab, 1).values().all(|p| *p == Some(true)));
    let mut before = BTreeMap::new();
    for host in lab.planted.keys() {
        let w = lab.work(host);
        let (y, r) = (stamp(&w.join("yr")), stamp(&w.join("incident.yar")));
        assert_eq!(
            (y.2.as_str(), r.2.as_str()),
            (lab.yr_pin.as_str(), rules_pin.as_str())
        );
        let mode = |n: &str| std::fs::metadata(w.join(n)).unwrap().mode() & 0o777;
        assert_eq!((mode("yr"), mode("incident.yar")), (0o700, 0o600), "{host}");
        // Nothing but the two pinned files (and the result directory) in the work dir: no
        // temp copy left behind.
        let mut names: Vec<String> = std::fs::read_dir(&w)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["incident.yar", "results", "yr"], "{host}");
        before.insert(host.clone(), (y, r));
    }

    // One SSH session per host carried both pushes and the run: no SFTP, one exec each.
    let log = lab.fleet.sshd_log();
    assert_eq!(log.matches("subsystem 'sftp'").count(), 0, "{log}");
    let execs = |log: &str| log.matches("Starting session: command").count();
    assert_eq!(
        execs(&log),
        lab.planted.len(),
        "one exec channel per host:\n{log}"
    );

    // ---- second sweep: every file current, nothing pushed, same findings ----
    let t0 = std::time::Instant::now();
    let out = sweep(&lab, "playbook.yml");
    let second = t0.elapsed();
    let log = lab.fleet.sshd_log();
    assert_eq!(execs(&log), 2 * lab.planted.len(), "{log}");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let again = found(&lab);
    assert_eq!(again, got, "the second sweep finds the same");
    for (host, (_, detail)) in push_steps(&lab, 2) {
        assert_eq!(
            detail,
            format!(
                "skipped: hash matches pin: checker {}, input rules {rules_pin}",
                lab.yr_pin
            ),
            "{host}"
        );
    }
    assert!(pushed(&lab, 2).values().all(|p| *p == Some(false)));
    for (host, (y, r)) in &before {
        let w = lab.work(host);
        assert_eq!(&stamp(&w.join("yr")), y, "{host}: yr untouched");
        assert_eq!(
            &stamp(&w.join("incident.yar")),
            r,
            "{host}: rules untouched"
        );
    }

    // ---- a playbook that cleans up: checker and inputs gone from every host ----
    write_playbook(&lab, "clean.yml", &rules_pin, true);
    let out = sweep(&lab, "clean.yml");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(found(&lab), got, "found before the cleanup");
    for host in lab.planted.keys() {
        let w = lab.work(host);
        for f in ["yr", "incident.yar"] {
            assert!(
                std::fs::symlink_metadata(w.join(f)).is_err(),
                "{host}: {f} removed by the sweep's cleanup"
            );
        }
    }
    eprintln!(
        "yara sweep of {} hosts: first (yr {} bytes + rules pushed) {first:.1?}, second (nothing pushed) {second:.1?}",
        lab.planted.len(),
        std::fs::metadata(yr()).unwrap().len()
    );
    // Nothing left for `pushscan cleanup` either.
    let out = pushscan(&lab, &["cleanup", "3", "--dry-run"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("run 3: nothing of ours"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_mismatching_input_pin_refuses_the_sweep_before_any_host() {
    let lab = setup(1);
    write_playbook(&lab, "wrong.yml", &"ab".repeat(32), false);
    let out = sweep(&lab, "wrong.yml");
    assert_eq!(out.status.code(), Some(66), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("input rules") && err.contains("refusing to push an unpinned file"),
        "{}",
        text(&out)
    );
    assert!(
        !lab.work("yh0").exists(),
        "no host was touched: {}",
        lab.work("yh0").display()
    );
    // `pushscan pin --input` records the right pin, after which the sweep goes through.
    let out = pushscan_pin(&lab, "wrong.yml");
    assert!(out.status.success(), "{}", text(&out));
    let out = sweep(&lab, "wrong.yml");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(found(&lab)["yh0"].1, lab.planted["yh0"]);
}

fn pushscan_pin(lab: &Lab, playbook: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pushscan"))
        .arg("pin")
        .arg(lab.p("rules/incident.yar"))
        .arg("--playbook")
        .arg(lab.p(playbook))
        .args(["--input", "rules"])
        .output()
        .expect("run pushscan pin")
}

#[test]
fn an_input_tampered_on_the_host_is_pushed_again() {
    let lab = setup(1);
    let rules_pin = sha256_hex(RULES.as_bytes());
    let out = sweep(&lab, "playbook.yml");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let w = lab.work("yh0");
    let yr_before = stamp(&w.join("yr"));
    // Someone on the host swaps the rules for ones that match nothing.
    std::fs::write(
        w.join("incident.yar"),
        "rule Incident_Dropper { condition: false }\n",
    )
    .unwrap();
    let out = sweep(&lab, "playbook.yml");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let (_, detail) = &push_steps(&lab, 2)["yh0"];
    assert_eq!(
        detail,
        &format!(
            "verified and renamed: input rules {rules_pin}; skipped, hash matches pin: checker {}",
            lab.yr_pin
        )
    );
    assert_eq!(
        stamp(&w.join("incident.yar")).2,
        rules_pin,
        "the pinned rules are back"
    );
    assert_eq!(stamp(&w.join("yr")), yr_before, "yr was not pushed again");
    assert_eq!(found(&lab)["yh0"].1, lab.planted["yh0"], "and they ran");
}

/// `contain` on a YARA finding: the file the match names (attribute `path`) is secured as
/// evidence and quarantined on the host, through the same validation and guarded commands
/// as a process image; there is no process to kill, the clean file stays, and the re-check
/// (yr again) finds the host clean.
#[test]
fn contain_secures_and_quarantines_the_files_yr_matched() {
    let lab = setup(1);
    let out = sweep(&lab, "playbook.yml");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let planted: Vec<PathBuf> = lab.planted["yh0"].iter().map(PathBuf::from).collect();
    let digests: Vec<String> = planted
        .iter()
        .map(|p| sha256_hex(&std::fs::read(p).unwrap()))
        .collect();
    let mut args = vec![
        "contain".to_string(),
        "--yes".into(),
        "--quarantine".into(),
        "--progress".into(),
        "quiet".into(),
        "--known-hosts".into(),
        lab.fleet.known_hosts.display().to_string(),
        "-k".into(),
        lab.fleet.client_key.display().to_string(),
        "--no-agent".into(),
    ];
    args.push("--connect-timeout".into());
    args.push("5s".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = pushscan(&lab, &args);
    let said = text(&out);
    let quarantined: Vec<PathBuf> = digests
        .iter()
        .map(|d| PathBuf::from(format!("/var/lib/pushscan/quarantine/{d}.quarantine")))
        .collect();
    let gone_and_kept: Vec<(bool, bool)> = planted
        .iter()
        .zip(&quarantined)
        .map(|(p, q)| (p.exists(), q.is_file()))
        .collect();
    for q in &quarantined {
        // Mode 000 on the quarantined copy: only root reads it (this test runs as root).
        if let Ok(m) = std::fs::symlink_metadata(q) {
            assert_eq!(m.mode() & 0o777, 0, "{}: mode 000\n{said}", q.display());
        }
        let _ = std::fs::remove_file(q);
    }
    // 0: every action verified and the re-check (a sweep with yr) found the host clean.
    assert_eq!(out.status.code(), Some(0), "fully contained\n{said}");
    assert!(
        said.contains("re-check run 2: yh0 clear"),
        "the re-check ran yr again: {said}"
    );
    assert_eq!(
        gone_and_kept,
        vec![(false, true); planted.len()],
        "each matched file moved to the quarantine\n{said}"
    );
    assert!(
        lab.p("scan/yh0/clean.txt").is_file(),
        "the clean file stays"
    );
    for d in &digests {
        let ev = lab
            .p("state")
            .join("evidence/contain/yh0")
            .join(format!("{d}.bin.evidence"));
        let bytes = std::fs::read(&ev).unwrap_or_else(|e| panic!("{}: {e}\n{said}", ev.display()));
        assert_eq!(&sha256_hex(&bytes), d, "the evidence is the matched file");
    }
    let db = rusqlite::Connection::open(lab.p("state").join("journal.sqlite")).unwrap();
    let acts: Vec<(String, String)> = db
        .prepare("SELECT action, phase FROM actions WHERE host = 'yh0' AND phase != 'intent' ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        acts.iter().all(|(a, _)| a != "kill"),
        "nothing to kill for a file: {acts:?}"
    );
    for act in ["evidence", "remove"] {
        assert_eq!(
            acts.iter().filter(|(a, p)| a == act && p == "done").count(),
            planted.len(),
            "{act} done once per matched file: {acts:?}"
        );
    }
}

/// The `local` transport keeps the same rules for inputs: pushed and verified, skipped when
/// current, pushed again when changed, removed by a cleaning playbook.
#[test]
fn the_local_transport_pushes_skips_repushes_and_cleans_inputs_too() {
    let lab = setup(1);
    let root = lab.root.path();
    let (work, scan) = (root.join("local-work"), lab.p("scan/yh0"));
    std::fs::write(
        lab.p("inventory.yml"),
        format!(
            "all:\n  hosts:\n    me:\n      ansible_connection: local\n      pushscan_dir: {}\n      scan_dir: {}\n",
            work.display(),
            scan.display()
        ),
    )
    .unwrap();
    let rules_pin = sha256_hex(RULES.as_bytes());
    let run = |playbook: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_pushscan"))
            .arg("sweep")
            .arg("-i")
            .arg(lab.p("inventory.yml"))
            .arg("-p")
            .arg(lab.p(playbook))
            .arg("--state-dir")
            .arg(lab.p("state"))
            .args(["--progress", "lines"])
            .output()
            .expect("run pushscan");
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert_eq!(found(&lab)["me"].1, lab.planted["yh0"], "{}", text(&out));
    };
    run("playbook.yml");
    let detail = |n: i64| push_steps(&lab, n)["me"].1.clone();
    assert!(
        detail(1).starts_with("verified and renamed: checker "),
        "{}",
        detail(1)
    );
    let rules = work.join("incident.yar");
    assert_eq!(stamp(&rules).2, rules_pin);
    run("playbook.yml");
    assert!(
        detail(2).starts_with("skipped: hash matches pin"),
        "{}",
        detail(2)
    );
    std::fs::write(&rules, "rule Incident_Dropper { condition: false }\n").unwrap();
    run("playbook.yml");
    assert!(
        detail(3).starts_with(&format!(
            "verified and renamed: input rules {rules_pin}; skipped"
        )),
        "{}",
        detail(3)
    );
    assert_eq!(stamp(&rules).2, rules_pin, "the pinned rules are back");
    write_playbook(&lab, "clean.yml", &rules_pin, true);
    run("clean.yml");
    assert!(!rules.exists() && !work.join("yr").exists(), "removed");
}
