//! Parses every shared EmoCheck sample report and checks each field exactly.
//!
//! The samples are EmoCheck reports kept in `tests/fixtures/emocheck/`, so that a
//! clean clone tests them wherever it is checked out. A missing directory is a
//! failure, not a skip: a parser test that silently checks nothing would hide a
//! broken checkout.

use std::collections::BTreeSet;
use std::path::PathBuf;

use pushscan::model::{ParsedReport, Process, ReportStatus};
use pushscan::parser::emocheck::{name_stamp, parse};

const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/emocheck");

fn samples_dir() -> PathBuf {
    let dir = PathBuf::from(SAMPLES);
    assert!(dir.is_dir(), "EmoCheck samples not found in {SAMPLES}");
    dir
}

struct Expected {
    file: &'static str,
    status: ReportStatus,
    hostname: &'static str,
    scan_time: &'static str,
    version: &'static str,
    format: &'static str,
    processes: Vec<Process>,
}

fn process(name: &str, pid: u32, path: &str, key: &str) -> Process {
    Process {
        name: name.to_string(),
        pid: Some(pid),
        image_path: path.to_string(),
        registry_key: Some(key.to_string()),
    }
}

fn expected() -> Vec<Expected> {
    use ReportStatus::{Detected, NotDetected};
    vec![
        Expected {
            file: "PC-KEIRI-003_20261120093011_emocheck.txt",
            status: Detected,
            hostname: "PC-KEIRI-003",
            scan_time: "2026-11-20 09:30:11",
            version: "2.3.2",
            format: "ja",
            processes: vec![process(
                "dfsvchost.exe",
                9120,
                r"C:\Users\suzuki\AppData\Local\Microsoft\dfsvchost.exe",
                r"HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Run\dfsvchost",
            )],
        },
        Expected {
            file: "PC-KEIRI-004_20261120093120_emocheck.txt",
            status: NotDetected,
            hostname: "PC-KEIRI-004",
            scan_time: "2026-11-20 09:31:20",
            version: "2.3.2",
            format: "ja",
            processes: vec![],
        },
        Expected {
            file: "PC-LYON-002_20261120111500_emocheck.txt",
            status: NotDetected,
            hostname: "PC-LYON-002",
            scan_time: "2026-11-20 11:15:00",
            version: "2.4.0",
            format: "fr",
            processes: vec![],
        },
        Expected {
            file: "PC-SALES-014_20261120101542_emocheck.txt",
            status: Detected,
            hostname: "PC-SALES-014",
            scan_time: "2026-11-20 10:15:42",
            version: "2.4.0",
            format: "en",
            processes: vec![process(
                "wfsrvhost.exe",
                4312,
                r"C:\Users\tanaka\AppData\Local\wfsrvhost\wfsrvhost.exe",
                r"HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Run\wfsrvhost",
            )],
        },
        Expected {
            file: "PC-SALES-015_20261120101603_emocheck.txt",
            status: NotDetected,
            hostname: "PC-SALES-015",
            scan_time: "2026-11-20 10:16:03",
            version: "2.4.0",
            format: "en",
            processes: vec![],
        },
        Expected {
            file: "PC-SALES-021_20261120102005_emocheck.json",
            status: Detected,
            hostname: "PC-SALES-021",
            scan_time: "2026-11-20 10:20:05",
            version: "2.4.0",
            format: "json",
            processes: vec![process(
                "msrdpsvc.exe",
                2208,
                r"C:\Users\yamada\AppData\Local\msrdpsvc\msrdpsvc.exe",
                r"HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Run\msrdpsvc",
            )],
        },
        Expected {
            file: "PC-SALES-022_20261120102041_emocheck.json",
            status: NotDetected,
            hostname: "PC-SALES-022",
            scan_time: "2026-11-20 10:20:41",
            version: "2.4.0",
            format: "json",
            processes: vec![],
        },
    ]
}

fn check(e: &Expected, r: &ParsedReport) {
    let f = e.file;
    assert_eq!(r.status, e.status, "{f}: status ({:?})", r.warnings);
    assert_eq!(r.hostname.as_deref(), Some(e.hostname), "{f}: hostname");
    assert_eq!(r.scan_time.as_deref(), Some(e.scan_time), "{f}: scan_time");
    assert_eq!(
        r.checker_version.as_deref(),
        Some(e.version),
        "{f}: version"
    );
    assert_eq!(r.format.as_deref(), Some(e.format), "{f}: format");
    assert_eq!(r.processes(), e.processes, "{f}: processes");
    assert!(r.warnings.is_empty(), "{f}: warnings {:?}", r.warnings);
}

#[test]
fn every_sample_parses_to_its_expected_fields() {
    let dir = samples_dir();
    let mut on_disk = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let entry = entry.unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        if entry.path().is_file() {
            on_disk.insert(entry.file_name().to_string_lossy().into_owned());
        }
    }

    let expected = expected();
    for e in &expected {
        assert!(
            on_disk.contains(e.file),
            "sample {} missing from {}",
            e.file,
            dir.display()
        );
        let bytes =
            std::fs::read(dir.join(e.file)).unwrap_or_else(|err| panic!("{}: {err}", e.file));
        check(e, &parse(e.file, &bytes));
        let stamp = name_stamp(e.file).unwrap_or_else(|| panic!("{}: no name stamp", e.file));
        assert_eq!(
            stamp.0.as_deref(),
            Some(e.hostname),
            "{}: name stamp host",
            e.file
        );
        let digits: String = e.scan_time.chars().filter(char::is_ascii_digit).collect();
        assert_eq!(stamp.1, digits, "{}: name stamp", e.file);
    }

    // Samples added later without expectations must at least parse into a
    // verdict; their exact fields belong in the table above.
    for name in &on_disk {
        if expected.iter().any(|e| e.file == name) {
            continue;
        }
        let bytes = std::fs::read(dir.join(name)).unwrap_or_else(|err| panic!("{name}: {err}"));
        let r = parse(name, &bytes);
        eprintln!("{name}: no expectations recorded; parsed as {:?}", r.status);
    }
}
