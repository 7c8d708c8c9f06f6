//! The `pushscan` command as a user runs it, on the `local` transport (no
//! network): exit codes, reports in every format, config errors located,
//! the checker pin enforced before anything is touched, `parse` over the
//! shared EmoCheck samples, and `--help` with examples.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pushscan"))
}

fn checker() -> PathBuf {
    Path::new(ROOT).join("playbooks/checkers/emocheck-sim.sh")
}

fn sha256_hex(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// A local "fleet": each host is the controller itself with its own dir.
struct Local {
    dir: tempfile::TempDir,
}

impl Local {
    fn new(hosts: &[(&str, &str)]) -> Local {
        let dir = tempfile::tempdir().unwrap();
        let mut inv = String::from("all:\n  children:\n    lab:\n      hosts:\n");
        for (name, scenario) in hosts {
            inv.push_str(&format!(
                "        {name}:\n          ansible_connection: local\n          scenario: {scenario}\n          pushscan_dir: {}\n",
                dir.path().join("hosts").join(name).display()
            ));
        }
        std::fs::write(dir.path().join("inv.yml"), inv).unwrap();
        let pb = std::fs::read_to_string(Path::new(ROOT).join("playbooks/emocheck-ssh.yml"))
            .unwrap()
            .replace("checkers/emocheck-sim.sh", &checker().display().to_string())
            .replace("timeout: 60s", "timeout: 3s");
        std::fs::write(dir.path().join("pb.yml"), pb).unwrap();
        Local { dir }
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn sweep(&self, extra: &[&str]) -> Output {
        bin()
            .arg("sweep")
            .arg("-i")
            .arg(self.p("inv.yml"))
            .arg("-p")
            .arg(self.p("pb.yml"))
            .arg("--state-dir")
            .arg(self.p("state"))
            .args(["--progress", "lines"])
            .args(extra)
            .output()
            .unwrap()
    }

    /// A sweep with `from` replaced by `to` in the lab's playbook (which is left so).
    fn sweep_with_playbook_edit(&self, from: &str, to: &str) -> Output {
        let pb = std::fs::read_to_string(self.p("pb.yml")).unwrap();
        assert!(pb.contains(from), "{from:?} not in the playbook:\n{pb}");
        std::fs::write(self.p("pb.yml"), pb.replace(from, to)).unwrap();
        self.sweep(&[])
    }

    fn report(&self, format: &str) -> Output {
        bin()
            .args(["report", "--format", format, "--state-dir"])
            .arg(self.p("state"))
            .output()
            .unwrap()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A command's exit code, stdout and stderr, for assertions and their messages.
fn both(o: &Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    )
}

#[test]
fn clean_fleet_exits_0_and_reports_in_every_format() {
    let lab = Local::new(&[("a", "clean"), ("b", "clean")]);
    let out = lab.sweep(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("not_detected"));

    let raw = lab.report("json").stdout;
    let json: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(json["schema_version"], 1);
    assert!(
        text(&raw).starts_with("{\n  \"schema_version\": 1,"),
        "the version comes first"
    );
    assert_eq!(json["run"]["id"], 1);
    assert_eq!(json["run"]["status"], "finished");
    let hosts = json["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 2);
    for h in hosts {
        assert_eq!(h["status"], "not_detected");
        assert_eq!(h["groups"][0], "lab");
        for key in [
            "host",
            "reason",
            "scan_time",
            "report_file",
            "checker_version",
            "processes",
        ] {
            assert!(h.get(key).is_some(), "JSON host entry has {key}: {h}");
        }
    }

    let csv = text(&lab.report("csv").stdout);
    let mut lines = csv.lines();
    assert!(lines
        .next()
        .unwrap()
        .starts_with("run_id,host,address,groups,status,reason,scan_time"));
    assert_eq!(lines.count(), 2);

    let runs = bin()
        .args(["runs", "--state-dir"])
        .arg(lab.p("state"))
        .output()
        .unwrap();
    assert!(text(&runs.stdout).lines().nth(1).unwrap().starts_with("1 "));
}

#[test]
fn detection_exits_1_and_incomplete_exits_2() {
    let lab = Local::new(&[("clean1", "clean"), ("infected", "detected2")]);
    let out = lab.sweep(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.contains("DETECTED (1)"), "{table}");
    assert!(
        table.contains("wfsrvhost.exe") && table.contains("4312"),
        "{table}"
    );
    assert!(
        table.contains("C:\\Users\\tanaka\\AppData\\Local\\wfsrvhost\\wfsrvhost.exe"),
        "{table}"
    );
    assert!(table.contains("CurrentVersion\\Run\\msrdpsvc"), "{table}");

    // One row per finding: the clean host once with empty finding cells, the infected host
    // once per process.
    let out = bin()
        .args([
            "report",
            "--format",
            "csv",
            "--csv-rows",
            "finding",
            "--state-dir",
        ])
        .arg(lab.p("state"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let csv = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut rows = csv.lines();
    assert!(rows
        .next()
        .unwrap()
        .ends_with(",finding_identity,finding_new,finding_attributes"));
    let rows: Vec<&str> = rows.collect();
    assert_eq!(rows.len(), 3, "{csv}");
    assert!(rows
        .iter()
        .any(|r| r.starts_with("1,clean1,") && r.ends_with(",,,,,,,")));
    for name in ["wfsrvhost.exe", "msrdpsvc.exe"] {
        assert!(
            rows.iter().any(|r| r.starts_with("1,infected,")
                && r.contains(",EmoCheck,2.4.0,")
                && r.contains(&format!(",process,high,{name},"))
                && r.contains(",yes,")),
            "{csv}"
        );
    }
    let out = bin()
        .args([
            "report",
            "--format",
            "json",
            "--csv-rows",
            "finding",
            "--state-dir",
        ])
        .arg(lab.p("state"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "csv only: {}", both(&out));

    let lab = Local::new(&[
        ("clean1", "clean"),
        ("silent", "noreport"),
        ("stuck", "hang"),
    ]);
    let out = lab.sweep(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let json: Value = serde_json::from_slice(&lab.report("json").stdout).unwrap();
    let status = |n: &str| {
        json["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["host"] == n)
            .unwrap()["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(status("silent"), "no_result");
    assert_eq!(status("stuck"), "timeout");
    assert!(text(&out.stdout).contains("NO RESULT FOUND (1)"));
}

#[test]
fn limit_selects_hosts_and_a_pattern_matching_nothing_is_a_usage_error() {
    let lab = Local::new(&[("web1", "clean"), ("web2", "clean"), ("db1", "clean")]);
    let out = lab.sweep(&["--limit", "web*:!web2"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: Value = serde_json::from_slice(&lab.report("json").stdout).unwrap();
    let names: Vec<&str> = json["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["host"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["web1"]);

    let out = lab.sweep(&["--limit", "nosuchhost"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("nosuchhost"));
}

#[test]
fn checker_not_matching_its_pin_stops_before_any_host_is_touched() {
    let lab = Local::new(&[("a", "clean")]);
    let pb = std::fs::read_to_string(lab.p("pb.yml")).unwrap();
    let pin = sha256_hex(&checker());
    let wrong = format!(
        "{}{}",
        &pin[..63],
        if pin.ends_with('0') { '1' } else { '0' }
    );
    std::fs::write(lab.p("pb.yml"), pb.replace(&pin, &wrong)).unwrap();
    let out = lab.sweep(&[]);
    assert_eq!(out.status.code(), Some(66), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("refusing to push"),
        "{}",
        text(&out.stderr)
    );
    assert!(!lab.p("hosts").exists(), "no host was touched");
    assert!(
        !lab.p("state").join("journal.sqlite").exists(),
        "no run was started"
    );
}

#[test]
fn config_errors_name_file_line_and_column() {
    let lab = Local::new(&[("a", "clean")]);
    let pb = std::fs::read_to_string(lab.p("pb.yml")).unwrap();
    let out = lab.sweep_with_playbook_edit("cleanup:", "cleanpu:");
    assert_eq!(out.status.code(), Some(65));
    let err = text(&out.stderr);
    let line = pb.lines().position(|l| l.starts_with("cleanup:")).unwrap() + 1;
    assert!(err.contains(&format!("pb.yml:{line}:1: ")), "{err}");
    assert!(err.contains("cleanpu"), "{err}");

    // A template naming an undefined variable is refused before any host.
    std::fs::write(lab.p("pb.yml"), &pb).unwrap();
    let out = lab.sweep_with_playbook_edit("{{ inventory_hostname }}", "{{ no_such_var }}");
    assert_eq!(out.status.code(), Some(65));
    assert!(
        text(&out.stderr).contains("undefined variable 'no_such_var'"),
        "{}",
        text(&out.stderr)
    );
    assert!(!lab.p("hosts").exists());

    // Plaintext secrets in an inventory are refused with a pointer to the supported ways.
    std::fs::write(lab.p("pb.yml"), &pb).unwrap();
    std::fs::write(
        lab.p("inv.ini"),
        "[lab]\na ansible_connection=local ansible_password=hunter2\n",
    )
    .unwrap();
    let out = bin()
        .arg("sweep")
        .arg("-i")
        .arg(lab.p("inv.ini"))
        .arg("-p")
        .arg(lab.p("pb.yml"))
        .arg("--state-dir")
        .arg(lab.p("state"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(65));
    let err = text(&out.stderr);
    assert!(err.contains("inv.ini:2:"), "{err}");
    assert!(err.contains("PUSHSCAN_SSH_PASSWORD"), "{err}");
    assert!(!err.contains("hunter2"), "the secret is not echoed: {err}");
}

#[test]
fn parsers_are_found_by_name_in_the_registry() {
    // A playbook naming a parser nobody registered: located, with the known names.
    let lab = Local::new(&[("a", "clean")]);
    let pb = std::fs::read_to_string(lab.p("pb.yml")).unwrap();
    let out = lab.sweep_with_playbook_edit("parser: emocheck", "parser: yara");
    assert_eq!(out.status.code(), Some(65));
    let err = text(&out.stderr);
    let line = pb
        .lines()
        .position(|l| l.contains("parser: emocheck"))
        .unwrap()
        + 1;
    assert!(err.contains(&format!("pb.yml:{line}:")), "{err}");
    assert!(
        err.contains(
            "unknown parser \"yara\" (known: emocheck, exit_code, hayabusa, jsonl, yara_x)"
        ),
        "{err}"
    );
    assert!(!lab.p("hosts").exists(), "no host touched");

    // `pushscan parse` reads with the parser it is given.
    let sample =
        Path::new(ROOT).join("tests/fixtures/emocheck/PC-SALES-014_20261120101542_emocheck.txt");
    let out = bin()
        .args(["parse", "--parser", "nope"])
        .arg(&sample)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains("known: emocheck, exit_code, hayabusa, jsonl, yara_x"),
        "{}",
        text(&out.stderr)
    );
    let out = bin()
        .args(["parse", "--format", "json", "--parser", "exit_code"])
        .arg(&sample)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "exit_code reads no files");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["status"], "unparseable");
    let out = bin()
        .args(["parse", "--format", "json"])
        .arg(&sample)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "emocheck is the default");

    // --checker (the newer spelling), a Hayabusa level, a playbook's results: section.
    let dir = tempfile::tempdir().unwrap();
    let timeline = dir.path().join("t.jsonl");
    std::fs::write(
        &timeline,
        "{\"RuleTitle\":\"Mimikatz\",\"Level\":\"high\",\"Computer\":\"PC-1\",\"RecordID\":7}\n",
    )
    .unwrap();
    let parse =
        |args: &[&str], file: &Path| bin().arg("parse").args(args).arg(file).output().unwrap();
    let out = parse(&["--checker", "hayabusa"], &timeline);
    assert_eq!(out.status.code(), Some(1), "high >= medium: {}", both(&out));
    assert!(
        both(&out).contains("high event: Mimikatz @ PC-1"),
        "{}",
        both(&out)
    );
    let out = parse(&["--checker", "hayabusa", "--min-level", "crit"], &timeline);
    assert_eq!(
        out.status.code(),
        Some(0),
        "high < critical: {}",
        both(&out)
    );
    let out = parse(
        &["--checker", "hayabusa", "--min-level", "severe"],
        &timeline,
    );
    assert_eq!(out.status.code(), Some(64), "{}", both(&out));
    let pb = dir.path().join("ioc.yml");
    std::fs::write(
        &pb,
        format!(
            "name: ioc\nchecker:\n  path: {}\n  sha256: \"{}\"\n  platform: linux\n\
             work_dir: /tmp/w\ntimeout: 30s\nresults:\n  parser: jsonl\n  fields:\n    \
             title: ioc\n    location: file\n",
            checker().display(),
            "0".repeat(64)
        ),
    )
    .unwrap();
    let vendor = dir.path().join("ioc.jsonl");
    std::fs::write(
        &vendor,
        "{\"ioc\":\"Webshell\",\"file\":\"/var/www/x.php\"}\n",
    )
    .unwrap();
    let out = parse(&["--playbook", pb.to_str().unwrap()], &vendor);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        both(&out).contains("high finding: Webshell @ /var/www/x.php"),
        "{}",
        both(&out)
    );
}

#[test]
fn parse_prints_one_json_object_per_file() {
    // The shared EmoCheck samples, copied into the repository (see tests/parser_samples.rs).
    let samples = Path::new(ROOT).join("tests/fixtures/emocheck");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&samples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let out = bin()
        .args(["parse", "--format", "json"])
        .args(&files)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "samples include detections");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), files.len());
    let get = |suffix: &str| {
        arr.iter()
            .find(|o| o["file"].as_str().unwrap().ends_with(suffix))
            .unwrap()
    };
    let s014 = get("PC-SALES-014_20261120101542_emocheck.txt");
    assert_eq!(s014["status"], "detected");
    assert_eq!(
        s014["hostname"], "PC-SALES-014",
        "host name from the file name"
    );
    assert_eq!(s014["scan_time"], "2026-11-20 10:15:42");
    assert_eq!(s014["checker_version"], "2.4.0");
    assert_eq!(s014["processes"][0]["pid"], 4312);
    assert_eq!(s014["processes"][0]["name"], "wfsrvhost.exe");
    let s022 = get("PC-SALES-022_20261120102041_emocheck.json");
    assert_eq!(s022["status"], "not_detected");
    assert_eq!(s022["processes"].as_array().unwrap().len(), 0);
    let keiri = get("PC-KEIRI-003_20261120093011_emocheck.txt");
    assert_eq!(keiri["status"], "detected");
    assert_eq!(keiri["processes"][0]["pid"], 9120);

    // A truncated or garbage file is unparseable, never clean: exit 2.
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("PC-X_20261120101542_emocheck.txt");
    std::fs::write(
        &junk,
        "[EmoCheck v2.4.0]\r\nScan time: 2026-11-20 10:15:42\r\n____",
    )
    .unwrap();
    let out = bin()
        .args(["parse", "--format", "json"])
        .arg(&junk)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["status"], "unparseable");
}

#[test]
fn every_subcommand_help_has_an_example() {
    for sub in ["sweep", "inventory", "parse", "report", "runs", "pin"] {
        let out = bin().args([sub, "--help"]).output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        let help = text(&out.stdout);
        assert!(help.contains("Example"), "{sub} --help:\n{help}");
    }
    let out = bin().arg("--help").output().unwrap();
    let help = text(&out.stdout);
    for code in ["0 ", "1 ", "2 ", "64", "65", "66"] {
        assert!(
            help.contains(&format!("  {code}")),
            "exit code {code} documented:\n{help}"
        );
    }
}

#[test]
fn shipped_playbooks_load_and_demo_pins_match_the_stand_in() {
    let pin = sha256_hex(&checker());
    for name in ["demo-local.yml", "emocheck-ssh.yml"] {
        let text = std::fs::read_to_string(Path::new(ROOT).join("playbooks").join(name)).unwrap();
        assert!(
            text.contains(&pin),
            "{name} pins the current stand-in checker ({pin})"
        );
        pushscan::playbook::Playbook::parse(&text, &Path::new(ROOT).join("playbooks").join(name))
            .unwrap();
    }
    // The Windows playbook loads but refuses to run until the operator pins
    // their own EmoCheck.
    let pb = pushscan::playbook::Playbook::load(&Path::new(ROOT).join("playbooks/emocheck.yml"))
        .unwrap();
    assert!(pb.verify_checker().is_err());
}

#[cfg(unix)]
#[test]
fn interrupt_stops_starting_hosts_and_records_them_as_not_started() {
    let lab = Local::new(&[
        ("h1", "hang"),
        ("h2", "clean"),
        ("h3", "clean"),
        ("h4", "clean"),
    ]);
    let child = bin()
        .arg("sweep")
        .arg("-i")
        .arg(lab.p("inv.yml"))
        .arg("-p")
        .arg(lab.p("pb.yml"))
        .arg("--state-dir")
        .arg(lab.p("state"))
        .args(["--progress", "lines", "--forks", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until h1 (the hanging checker) is running, then interrupt.
    let journal = lab.p("state").join("journal.sqlite");
    let started = (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
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
    assert!(
        text(&out.stderr).contains("interrupted"),
        "{}",
        text(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&lab.report("json").stdout).unwrap();
    assert_eq!(json["run"]["status"], "interrupted");
    let statuses: Vec<&str> = json["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses[0], "timeout",
        "the host in flight finished (its checker was killed at the timeout)"
    );
    assert!(
        statuses[1..].iter().all(|s| *s == "not_started"),
        "{statuses:?}"
    );
}

/// Runs `cmd` for at most `limit`, killing it after: an unbounded inventory
/// expansion would otherwise take the machine's memory with it.
fn output_within(mut cmd: Command, limit: std::time::Duration) -> (Output, std::time::Duration) {
    use std::process::Stdio;
    let start = std::time::Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            let _ = child.wait();
            panic!("still running after {limit:?}; killed");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let elapsed = start.elapsed();
    (child.wait_with_output().unwrap(), elapsed)
}

#[test]
fn an_inventory_expanding_past_the_host_limit_is_refused_at_once_with_its_location() {
    let lab = Local::new(&[("a", "clean")]);
    // Forty ranges of ten thousand: four million hosts from well under a kilobyte.
    let mut bomb = String::from("[lab]\n");
    for i in 0..40 {
        bomb.push_str(&format!("pc{i:02}-[0000:9999]\n"));
    }
    assert!(bomb.len() < 1024, "{} bytes", bomb.len());
    std::fs::write(lab.p("bomb.ini"), &bomb).unwrap();
    let mut cmd = bin();
    cmd.arg("sweep")
        .arg("-i")
        .arg(lab.p("bomb.ini"))
        .arg("-p")
        .arg(lab.p("pb.yml"))
        .arg("--state-dir")
        .arg(lab.p("state"))
        .env_remove("PUSHSCAN_INVENTORY_MAX_HOSTS");
    let (out, took) = output_within(cmd, std::time::Duration::from_secs(20));
    eprintln!("{}-byte inventory refused in {took:?}", bomb.len());
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{err}");
    // The eleventh range (line 12) is the one that passes 100,000.
    assert!(err.contains("bomb.ini:12:1: "), "{err}");
    assert!(err.contains("110000") && err.contains("100000"), "{err}");
    assert!(err.contains("--inventory-max-hosts"), "{err}");
    // Refusing costs at most what loading the limit's worth of hosts does (0.1-0.4 s of
    // CPU in a debug build, printed above; speed is not asserted). Unbounded, this ran into
    // the kill above, out of memory.
    assert!(!lab.p("hosts").exists(), "no host was touched");

    // The bound is over every source together, not per file or per range:
    // 600 + 600 in two files is over 1,000 in the second.
    std::fs::write(lab.p("one.ini"), "[x]\nx[000:599]\n").unwrap();
    std::fs::write(lab.p("two.yml"), "y:\n  hosts:\n    y[000:599]:\n").unwrap();
    let list = |max: &str| {
        let mut cmd = bin();
        cmd.arg("inventory")
            .arg("-i")
            .arg(lab.p("one.ini"))
            .arg("-i")
            .arg(lab.p("two.yml"))
            .arg("--list")
            .args(["--inventory-max-hosts", max])
            .env_remove("PUSHSCAN_INVENTORY_MAX_HOSTS");
        output_within(cmd, std::time::Duration::from_secs(60)).0
    };
    let out = list("1000");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(err.contains("two.yml:3:5: "), "{err}");
    assert!(
        err.contains("1200") && err.contains("limit of 1000"),
        "{err}"
    );
    // Raised, the same two files load: 1,200 hosts.
    let out = list("1200");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let count = |g: &str| listed[g]["hosts"].as_array().map_or(0, Vec::len);
    assert_eq!((count("x"), count("y")), (600, 600));
    // Lowered through the environment, one file of 600 is refused on its own.
    let mut cmd = bin();
    cmd.arg("inventory")
        .arg("-i")
        .arg(lab.p("one.ini"))
        .arg("--list")
        .env("PUSHSCAN_INVENTORY_MAX_HOSTS", "500");
    let (out, _) = output_within(cmd, std::time::Duration::from_secs(20));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(
        err.contains("one.ini:2:1: ") && err.contains("limit of 500"),
        "{err}"
    );
}

/// Every directory and file under `dir` whose mode lets group or others in.
#[cfg(unix)]
fn not_private(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut open = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let mode = std::fs::symlink_metadata(&d).unwrap().permissions().mode();
        if mode & 0o077 != 0 {
            open.push(format!("{} {:04o}", d.display(), mode & 0o7777));
        }
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                todo.push(e.path());
            } else if meta.permissions().mode() & 0o077 != 0 {
                open.push(format!(
                    "{} {:04o}",
                    e.path().display(),
                    meta.permissions().mode() & 0o7777
                ));
            }
        }
    }
    open
}

#[cfg(unix)]
#[test]
fn the_state_dir_is_private_under_umask_022() {
    let lab = Local::new(&[("a", "detected"), ("b", "clean")]);
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("umask 022; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_pushscan"))
        .arg("sweep")
        .arg("-i")
        .arg(lab.p("inv.yml"))
        .arg("-p")
        .arg(lab.p("pb.yml"))
        .arg("--state-dir")
        .arg(lab.p("state").join("nested"));
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let state = lab.p("state");
    assert!(
        state
            .join("nested/evidence/run-1/a")
            .read_dir()
            .unwrap()
            .count()
            > 0
    );
    assert_eq!(not_private(&state), Vec::<String>::new());
    // SQLite makes -wal and -shm with the journal's own mode; they exist while a
    // connection is open, here under this process's umask 022.
    // SAFETY: umask has no preconditions; it changes only this test process's mask.
    unsafe { libc::umask(0o022) };
    let db = rusqlite::Connection::open(state.join("nested/journal.sqlite")).unwrap();
    let runs: i64 = db
        .query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(runs, 1);
    for side in ["journal.sqlite-wal", "journal.sqlite-shm"] {
        assert!(state.join("nested").join(side).exists(), "{side}");
    }
    assert_eq!(not_private(&state), Vec::<String>::new());
    drop(db);
}

/// A checker that floods its result directory: `$2` files of `$3` bytes.
const FLOOD: &str = "#!/bin/sh\nmkdir -p \"$1\"\ni=0\nwhile [ \"$i\" -lt \"$2\" ]; do\n  \
    head -c \"$3\" /dev/zero | tr '\\0' x > \"$1/PC_2026010100$((1000 + i))_emocheck.txt\"\n  \
    i=$((i + 1))\ndone\n";

#[test]
fn a_host_flooding_results_is_kept_within_its_budget_and_old_runs_are_pruned() {
    let lab = Local::new(&[("a", "clean"), ("b", "clean")]);
    let script = lab.p("flood.sh");
    std::fs::write(&script, FLOOD).unwrap();
    let pb = |files: u32, keep_days: u32, max_bytes: &str| {
        format!(
            "name: flood\nchecker:\n  path: {}\n  sha256: \"{}\"\n  platform: linux\n  \
             remote_name: flood.sh\nwork_dir: \"{{{{ pushscan_dir }}}}\"\n\
             run_dir: \"{{{{ work_dir }}}}/reports\"\n\
             args: [\"{{{{ run_dir }}}}\", \"{files}\", \"700000\"]\ntimeout: 20s\n\
             results:\n  glob: \"*_emocheck.*\"\n  parser: emocheck\n  max_file_size: 1MiB\n  \
             max_host_bytes: 2MiB\n\
             state:\n  keep_days: {keep_days}\n  max_bytes: {max_bytes}\n",
            script.display(),
            sha256_hex(&script)
        )
    };
    // Twenty files of 700,000 bytes each (14 MB) from each host; 2 MiB kept per host.
    std::fs::write(lab.p("pb.yml"), pb(20, 30, "1GiB")).unwrap();
    let out = lab.sweep(&[]);
    let err = text(&out.stderr);
    assert!(!err.contains("warning: the state dir"), "{err}");
    let state = lab.p("state");
    let db = rusqlite::Connection::open(state.join("journal.sqlite")).unwrap();
    for host in ["a", "b"] {
        let (n, kept): (i64, i64) = db
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM reports WHERE host=?1 AND run_id=1",
                [host],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        eprintln!("{host}: {n} report(s), {kept} bytes kept in the journal");
        assert!(kept <= 2 * 1024 * 1024, "{host}: {kept} bytes");
        assert_eq!(n, 2, "two files of 700,000 fit in 2 MiB, a third does not");
        let on_disk: u64 = std::fs::read_dir(state.join("evidence/run-1").join(host))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(
            on_disk <= 2 * 1024 * 1024,
            "{host}: {on_disk} bytes of evidence"
        );
        let reason: String = db
            .query_row(
                "SELECT reason FROM hosts WHERE host=?1 AND run_id=1",
                [host],
                |r| r.get(0),
            )
            .unwrap();
        // 16 candidates (results.max_files), 2 kept: 14 named as dropped.
        assert!(
            reason.contains("14 result file(s) dropped over the 2097152-byte per-host budget"),
            "{reason}"
        );
        assert!(
            reason.contains("PC_20260101001017_emocheck.txt"),
            "{reason}"
        );
    }
    drop(db);

    // The run is made 100 days old; the next sweep (keep 30 days) forgets it and its
    // evidence, and warns that the state dir is over a 1 KiB budget.
    let db = rusqlite::Connection::open(state.join("journal.sqlite")).unwrap();
    let old = (chrono::Utc::now() - chrono::Duration::days(100))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    db.execute("UPDATE runs SET started_at=?1 WHERE id=1", [&old])
        .unwrap();
    drop(db);
    std::fs::write(lab.p("pb.yml"), pb(1, 30, "1KiB")).unwrap();
    let out = lab.sweep(&[]);
    let err = text(&out.stderr);
    assert!(err.contains("pruned 1 run(s) older than 30 days"), "{err}");
    assert!(
        err.contains("warning: the state dir") && err.contains("over state.max_bytes (1024)"),
        "{err}"
    );
    assert!(!state.join("evidence/run-1").exists());
    assert!(state.join("evidence/run-2").exists());
    let db = rusqlite::Connection::open(state.join("journal.sqlite")).unwrap();
    let runs: Vec<i64> = db
        .prepare("SELECT id FROM runs ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(runs, vec![2]);
    let left: i64 = db
        .query_row("SELECT COUNT(*) FROM reports WHERE run_id=1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(left, 0);
}

#[test]
fn prune_forgets_old_runs_and_their_evidence() {
    let lab = Local::new(&[("a", "detected")]);
    assert_eq!(lab.sweep(&[]).status.code(), Some(1));
    let evidence = lab.p("state").join("evidence").join("run-1");
    assert!(std::fs::read_dir(evidence.join("a")).unwrap().count() > 0);
    // Keeping 30 days keeps a run from a moment ago.
    let out = bin()
        .args(["prune", "--keep-days", "30", "--state-dir"])
        .arg(lab.p("state"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("pruned 0 run(s)"));
    // Keeping 0 days forgets it, evidence included.
    let out = bin()
        .args(["prune", "--keep-days", "0", "--state-dir"])
        .arg(lab.p("state"))
        .output()
        .unwrap();
    assert!(
        text(&out.stdout).contains("pruned 1 run(s)"),
        "{}",
        text(&out.stdout)
    );
    assert!(!evidence.exists());
    let d = rusqlite::Connection::open(lab.p("state").join("journal.sqlite")).unwrap();
    for table in ["runs", "hosts", "steps", "reports", "findings"] {
        let n: i64 = d
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0, "{table} emptied");
    }
}

/// README's "A sweep of this machine alone" example (the README's first command, the lab
/// demo, is held by `lab/tests/demo.rs`).
#[test]
fn readme_local_example_shows_detections_no_result_and_clean() {
    let state = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["sweep", "-i"])
        .arg(Path::new(ROOT).join("inventories/demo.yml"))
        .arg("-p")
        .arg(Path::new(ROOT).join("playbooks/demo-local.yml"))
        .arg("--state-dir")
        .arg(state.path())
        .args(["--progress", "quiet"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.contains("DETECTED (2)"), "{table}");
    assert!(table.contains("NO RESULT FOUND (1)"), "{table}");
    assert!(table.contains("not_detected            1"), "{table}");
    assert!(
        table.contains("msrdpsvc.exe"),
        "the Japanese report's second process: {table}"
    );
}

/// A copy of the journal the previous release wrote (a local sweep of the four demo hosts,
/// schema version 2), in a fresh private state dir of `lab`.
fn released_journal(lab: &Local, state: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = lab.p(state);
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let file = dir.join("journal.sqlite");
    std::fs::copy(
        Path::new(ROOT).join("tests/fixtures/journal/made-by-schema-2.sqlite"),
        &file,
    )
    .unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    file
}

fn columns(db: &Path, table: &str) -> Vec<String> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c.prepare(&format!("PRAGMA table_info({table})")).unwrap();
    st.query_map([], |r| r.get::<_, String>(1))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn meta_version(db: &Path) -> String {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row(
            "SELECT value FROM meta WHERE key='schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

fn report_json(state: &Path, run: &str) -> (Option<i32>, Value, String) {
    let out = bin()
        .args(["report", "--format", "json", "--run", run, "--state-dir"])
        .arg(state)
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), v, text(&out.stderr))
}

#[test]
fn a_journal_from_the_previous_release_opens_migrates_and_keeps_its_history() {
    let lab = Local::new(&[("a", "clean")]);
    let sweep_into = |state: &Path| {
        bin()
            .arg("sweep")
            .arg("-i")
            .arg(lab.p("inv.yml"))
            .arg("-p")
            .arg(lab.p("pb.yml"))
            .arg("--state-dir")
            .arg(state)
            .args(["--progress", "quiet", "--no-notify"])
            .output()
            .unwrap()
    };

    // As the release left it: read, then written on.
    let db = released_journal(&lab, "state");
    let state = db.parent().unwrap().to_path_buf();
    // The release's process rows of run 1, read before pushscan opens (and migrates) it.
    let released: Vec<(String, String, i64, String, String)> = {
        let c = rusqlite::Connection::open(&db).unwrap();
        let mut st = c
            .prepare(
                "SELECT h.host, p.name, p.pid, p.image_path, p.registry_key FROM processes p
                 JOIN hosts h ON h.primary_report = p.report_id AND h.run_id = 1
                 ORDER BY h.host, p.idx",
            )
            .unwrap();
        st.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    };
    assert_eq!(released.len(), 3, "the fixture's run 1 has three processes");
    let (code, old, err) = report_json(&state, "1");
    assert_eq!(code, Some(1), "run 1 had detections: {err}");
    assert_eq!(old["hosts"].as_array().map(Vec::len), Some(4), "{old}");
    // Read as it is (a reader never migrates): every process row is a `process` finding
    // with its PID, image path and Run key attributes, and reads back as the same process.
    assert_eq!(meta_version(&db), "2");
    let hosts = old["hosts"].as_array().unwrap();
    let mut read_back = Vec::new();
    for h in hosts {
        for (f, p) in h["findings"]
            .as_array()
            .unwrap()
            .iter()
            .zip(h["processes"].as_array().unwrap())
        {
            assert_eq!(f["kind"], "process", "{f}");
            assert_eq!(f["severity"], "high", "{f}");
            assert_eq!(f["title"], p["name"], "{f}");
            assert_eq!(f["location"], p["image_path"], "{f}");
            assert_eq!(f["attributes"]["image"], p["image_path"], "{f}");
            assert_eq!(f["attributes"]["run_key"], p["registry_key"], "{f}");
            assert_eq!(f["attributes"]["pid"], p["pid"].to_string(), "{f}");
            read_back.push((
                h["host"].as_str().unwrap().to_string(),
                f["title"].as_str().unwrap().to_string(),
                f["attributes"]["pid"]
                    .as_str()
                    .unwrap()
                    .parse::<i64>()
                    .unwrap(),
                f["attributes"]["image"].as_str().unwrap().to_string(),
                f["attributes"]["run_key"].as_str().unwrap().to_string(),
            ));
        }
        if h["status"] == "detected" {
            assert_eq!(h["checker"], "EmoCheck", "{h}");
        }
    }
    read_back.sort();
    let mut released = released;
    released.sort();
    assert_eq!(
        read_back, released,
        "the release's processes read back as findings"
    );
    let out = sweep_into(&state);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Migration 3 moved the process rows into findings (run 1's JSON below reads the same).
    assert_eq!(meta_version(&db), "3");
    assert!(
        columns(&db, "processes").is_empty(),
        "processes table dropped"
    );
    let migrated: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM findings f JOIN reports r ON r.id = f.report_id
             WHERE r.parser = 'emocheck' AND f.kind = 'process' AND f.severity = 'high'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        migrated, 27,
        "every process row of the release is a finding"
    );
    let (code, new, _) = report_json(&state, "2");
    assert_eq!(code, Some(0));
    assert_eq!(new["hosts"].as_array().map(Vec::len), Some(1));
    let (_, again, _) = report_json(&state, "1");
    assert_eq!(again["hosts"], old["hosts"], "run 1 reads as before");

    // The layout before migration 2 (no report origin, no rollout columns): migrated once.
    let db = released_journal(&lab, "state-v1");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "ALTER TABLE reports DROP COLUMN origin; ALTER TABLE runs DROP COLUMN rollout;
             ALTER TABLE runs DROP COLUMN halt_reason; ALTER TABLE hosts DROP COLUMN wave;
             ALTER TABLE hosts DROP COLUMN wave_partition;
             UPDATE meta SET value='1' WHERE key='schema_version';",
        )
        .unwrap();
    }
    assert!(!columns(&db, "hosts").contains(&"wave".to_string()));
    let out = sweep_into(db.parent().unwrap());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(meta_version(&db), "3");
    for (table, col) in [
        ("reports", "origin"),
        ("runs", "rollout"),
        ("runs", "halt_reason"),
        ("hosts", "wave"),
        ("hosts", "wave_partition"),
    ] {
        assert!(
            columns(&db, table).contains(&col.to_string()),
            "{table}.{col}"
        );
    }
    let (code, _, err) = report_json(db.parent().unwrap(), "2");
    assert_eq!(code, Some(0), "{err}");

    // Written by a newer pushscan: refused, untouched, by the writer and the reader.
    let db = released_journal(&lab, "state-new");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("UPDATE meta SET value='99' WHERE key='schema_version'", [])
        .unwrap();
    let before = std::fs::read(&db).unwrap();
    let out = sweep_into(db.parent().unwrap());
    assert_eq!(out.status.code(), Some(74), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("schema version 99 was written by a newer pushscan"),
        "{}",
        text(&out.stderr)
    );
    let (code, _, err) = report_json(db.parent().unwrap(), "1");
    assert_eq!(code, Some(74), "{err}");
    assert!(err.contains("newer pushscan"), "{err}");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "the newer journal is not written"
    );
}

/// A vendor tool printing JSON lines on standard output (`results.stdout`, a field map),
/// swept over the local transport: its lines are the host's report, the tool's exit status
/// decides whether no line means clean.
#[test]
fn vendor_json_lines_on_standard_output() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let tool = "#!/bin/sh\n\
        case \"$1\" in\n\
        hit) echo '{\"ioc\":\"Webshell\",\"file\":\"/var/www/x.php\",\"risk\":\"crit\"}' ;;\n\
        fail) echo '{\"event\":\"start\"}'; exit 3 ;;\n\
        esac\n\
        echo '{\"event\":\"done\"}'\n";
    std::fs::write(p("ioc.sh"), tool).unwrap();
    std::fs::write(
        p("inv.yml"),
        format!(
            "all:\n  vars:\n    ansible_connection: local\n  hosts:\n\
             \x20   hit: {{mode: hit, pushscan_dir: {0}/h1}}\n\
             \x20   clean: {{mode: clean, pushscan_dir: {0}/h2}}\n\
             \x20   fail: {{mode: fail, pushscan_dir: {0}/h3}}\n",
            dir.path().display()
        ),
    )
    .unwrap();
    std::fs::write(
        p("pb.yml"),
        format!(
            "name: vendor\nchecker:\n  path: ioc.sh\n  sha256: \"{}\"\n  platform: linux\n\
             work_dir: \"{{{{ pushscan_dir }}}}\"\nargs: [\"{{{{ mode }}}}\"]\ntimeout: 20s\n\
             results:\n  parser: jsonl\n  stdout: true\n  fields: {{title: ioc, location: file, severity: risk}}\n",
            sha256_hex(&p("ioc.sh"))
        ),
    )
    .unwrap();
    let out = bin()
        .args(["sweep", "-i"])
        .arg(p("inv.yml"))
        .arg("-p")
        .arg(p("pb.yml"))
        .arg("--state-dir")
        .arg(p("state"))
        .args(["--progress", "quiet"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let (_, v, _) = report_json(&p("state"), "1");
    let hosts: std::collections::BTreeMap<String, &Value> = v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["host"].as_str().unwrap().to_string(), h))
        .collect();
    let hit = hosts["hit"];
    assert_eq!(hit["status"], "detected", "{hit}");
    assert_eq!(hit["report_file"], "stdout.jsonl");
    assert_eq!(hit["findings"][0]["title"], "Webshell");
    assert_eq!(hit["findings"][0]["severity"], "critical");
    assert_eq!(
        hit["findings"][0]["identity"],
        "finding|Webshell|/var/www/x.php"
    );
    assert_eq!(
        hosts["clean"]["status"], "not_detected",
        "{}",
        hosts["clean"]
    );
    let fail = hosts["fail"];
    assert_eq!(
        fail["status"], "checker_failed",
        "exit 3 is never clean: {fail}"
    );
}
