//! The `yara_x` parser against the real `yr` (YARA-X CLI 1.22.1, built from crates.io into
//! the test cache; `PUSHSCAN_TEST_YR` points elsewhere): planted files, rules the test
//! writes, hostile file names, unreadable files. A missing `yr` fails with the command that
//! installs it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use pushscan::model::{ExecOutcome, HostClass, ReportStatus, Severity};
use pushscan::parser::yara_x::{parse_output, YaraXParser, KIND, PATH, STDOUT_NAME};
use pushscan::parser::{FetchedReport, ResultParser};

use common::{yr, YR_VERSION};

const RULES: &str = r#"
rule Dropper : apt {
  meta:
    author = "test"
    severity = "critical"
  strings:
    $a = "PUSHSCAN-EVIL-MARKER"
  condition:
    $a
}
rule Scored {
  meta:
    score = 50
  strings:
    $b = "PUSHSCAN-SCORED"
  condition:
    $b
}
"#;

/// A private scratch directory everyone may traverse (yr runs as nobody in one test).
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pushscan-yara-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("scan/sub")).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(d.join("rules.yar"), RULES).unwrap();
    d
}

fn run(cmd: &mut Command) -> ExecOutcome {
    let out = cmd.output().expect("run yr");
    ExecOutcome {
        exit_code: out.status.code().map(i64::from),
        stdout: out.stdout,
        stderr: out.stderr,
        ..Default::default()
    }
}

fn scan(yr: &Path, dir: &Path, extra: &[&str]) -> ExecOutcome {
    run(Command::new(yr)
        .args(["scan", "--output-format", "ndjson", "-r"])
        .args(extra)
        .arg(dir.join("rules.yar"))
        .arg(dir.join("scan")))
}

fn verdict(exec: &ExecOutcome) -> (pushscan::parser::Verdict, pushscan::model::ParsedReport) {
    let parsed = parse_output(exec);
    let r = FetchedReport {
        name: STDOUT_NAME.into(),
        parsed: parsed.clone(),
    };
    (YaraXParser.verdict(exec, &[r], &[]), parsed)
}

#[test]
fn real_yr_finds_the_planted_files_and_only_those() {
    let yr = yr();
    let d = scratch("planted");
    let scan_dir = d.join("scan");
    std::fs::write(
        scan_dir.join("dropped.exe"),
        b"MZ..PUSHSCAN-EVIL-MARKER\0..",
    )
    .unwrap();
    std::fs::write(
        scan_dir.join("sub/both.bin"),
        b"PUSHSCAN-SCORED PUSHSCAN-EVIL-MARKER",
    )
    .unwrap();
    std::fs::write(scan_dir.join("clean.txt"), b"nothing to see").unwrap();
    std::fs::write(scan_dir.join("sub/clean2"), b"PUSHSCAN-EVIL").unwrap();

    let exec = scan(&yr, &d, &["-e", "-m", "-g", "-s"]);
    let (v, parsed) = verdict(&exec);
    assert_eq!(v.class, HostClass::Detected, "{}", v.reason);
    assert_eq!(parsed.status, ReportStatus::Detected);
    let mut got: Vec<(String, String)> = parsed
        .findings
        .iter()
        .map(|f| (f.title.clone(), f.attr(PATH).unwrap_or("").to_string()))
        .collect();
    got.sort();
    let p = |rel: &str| scan_dir.join(rel).display().to_string();
    assert_eq!(
        got,
        [
            ("Dropper".to_string(), p("dropped.exe")),
            ("Dropper".to_string(), p("sub/both.bin")),
            ("Scored".to_string(), p("sub/both.bin")),
        ]
    );
    let f = parsed
        .findings
        .iter()
        .find(|f| f.title == "Dropper" && f.location.ends_with("dropped.exe"))
        .unwrap();
    assert_eq!(f.kind, KIND);
    assert_eq!(f.severity, Severity::Critical);
    assert_eq!(f.attr("namespace"), Some("default"));
    assert_eq!(f.attr("tags"), Some("apt"));
    assert_eq!(f.attr("meta.author"), Some("test"));
    assert_eq!(f.attr("strings"), Some("$a@0x4: PUSHSCAN-EVIL-MARKER"));
    assert_eq!(f.identity, format!("yara|Dropper|{}", p("dropped.exe")));
    let scored = parsed
        .findings
        .iter()
        .find(|f| f.title == "Scored")
        .unwrap();
    assert_eq!(scored.severity, Severity::Medium, "score 50");

    // Without the print flags: the same findings, by the same identities.
    let (_, plain) = verdict(&scan(&yr, &d, &[]));
    let mut a: Vec<_> = plain.findings.iter().map(|f| f.identity.clone()).collect();
    let mut b: Vec<_> = parsed.findings.iter().map(|f| f.identity.clone()).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);

    // Nothing planted: clean (yr prints nothing and exits 0).
    std::fs::remove_file(scan_dir.join("dropped.exe")).unwrap();
    std::fs::remove_file(scan_dir.join("sub/both.bin")).unwrap();
    let (v, _) = verdict(&scan(&yr, &d, &[]));
    assert_eq!(v.class, HostClass::NotDetected, "{}", v.reason);

    // A rules file that does not compile: yr exits 1, the host failed, never clean.
    std::fs::write(d.join("rules.yar"), "rule broken {").unwrap();
    let exec = scan(&yr, &d, &[]);
    assert_eq!(exec.exit_code, Some(1));
    let (v, _) = verdict(&exec);
    assert_eq!(v.class, HostClass::CheckerFailed, "{}", v.reason);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn real_yr_on_hostile_names_and_unreadable_files() {
    let yr = yr();
    let d = scratch("hostile");
    let scan_dir = d.join("scan");
    // ANSI and HTML in a file name: kept verbatim in the finding, escaped on display.
    let evil_name = "a\u{1b}[2J<img src=x onerror=alert(1)>.bin";
    std::fs::write(scan_dir.join(evil_name), b"PUSHSCAN-EVIL-MARKER").unwrap();
    // An unreadable file and directory: yr says so on stderr and goes on (exit 0).
    std::fs::write(scan_dir.join("noread"), b"PUSHSCAN-EVIL-MARKER").unwrap();
    std::fs::set_permissions(
        scan_dir.join("noread"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    std::fs::create_dir(scan_dir.join("closed")).unwrap();
    std::fs::write(scan_dir.join("closed/x"), b"PUSHSCAN-EVIL-MARKER").unwrap();
    std::fs::set_permissions(
        scan_dir.join("closed"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    for p in [&scan_dir, &scan_dir.join("sub")] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(d.join("rules.yar"), std::fs::Permissions::from_mode(0o644)).unwrap();
    // Root reads everything: run yr as nobody then (a copy it may execute).
    let exec = if running_as_root() {
        let copy = d.join("yr");
        std::fs::copy(&yr, &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(
            scan_dir.join(evil_name),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let line = format!(
            "exec '{}' scan --output-format ndjson -r '{}' '{}'",
            copy.display(),
            d.join("rules.yar").display(),
            scan_dir.display()
        );
        run(Command::new("su").args(["nobody", "-s", "/bin/sh", "-c", &line]))
    } else {
        scan(&yr, &d, &[])
    };
    assert_eq!(
        exec.exit_code,
        Some(0),
        "{:?}",
        String::from_utf8_lossy(&exec.stderr)
    );
    let (v, parsed) = verdict(&exec);
    assert_eq!(v.class, HostClass::Detected, "{}", v.reason);
    assert_eq!(parsed.findings.len(), 1, "{:?}", parsed.findings);
    assert_eq!(
        parsed.findings[0].location,
        scan_dir.join(evil_name).display().to_string()
    );
    assert!(
        v.reason.contains("2 error(s) on standard error"),
        "the unreadable file and directory are said: {}",
        v.reason
    );
    assert!(!v.reason.contains('\u{1b}'), "{}", v.reason);
    assert!(parsed
        .warnings
        .iter()
        .any(|w| w.contains("noread") && w.contains("Permission denied")));

    // `pushscan parse --checker yara_x` on the same output: escaped on the terminal.
    let out_file = d.join(STDOUT_NAME);
    std::fs::write(&out_file, &exec.stdout).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pushscan"))
        .args(["parse", "--checker", "yara_x"])
        .arg(&out_file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", common::text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(!shown.contains('\u{1b}'), "{shown}");
    assert!(shown.contains("high yara_match: Dropper @ "), "{shown}");
    assert!(
        shown.contains("a\\x1b[2J<img src=x onerror=alert(1)>.bin"),
        "{shown}"
    );
    // --parser still works as the older spelling.
    let out = Command::new(env!("CARGO_BIN_EXE_pushscan"))
        .args(["parse", "--parser", "yara_x", "--format", "json"])
        .arg(&out_file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", common::text(&out));

    // A file name that is not UTF-8 makes yr 1.22.1 panic: the scan is not complete and the
    // host is never read as clean.
    std::fs::remove_file(scan_dir.join(evil_name)).unwrap();
    std::fs::remove_dir_all(scan_dir.join("closed")).unwrap();
    std::fs::remove_file(scan_dir.join("noread")).unwrap();
    use std::os::unix::ffi::OsStrExt;
    let bad = scan_dir.join(std::ffi::OsStr::from_bytes(b"bad\xff"));
    std::fs::write(&bad, b"PUSHSCAN-EVIL-MARKER").unwrap();
    let exec = scan(&yr, &d, &[]);
    let (v, _) = verdict(&exec);
    assert_ne!(exec.exit_code, Some(0), "yr {YR_VERSION} fails on it");
    assert_eq!(v.class, HostClass::CheckerFailed, "{}", v.reason);
    assert!(
        v.reason.contains("yr did not finish its scan"),
        "{}",
        v.reason
    );
    let _ = std::fs::remove_dir_all(&d);
}

/// Whether the test runs as root (who reads files whatever their mode).
fn running_as_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}
