//! Tests of the stand-in checker `playbooks/checkers/emocheck-sim.sh`, run with the system `sh` (dash
//! on Debian): its reports must match EmoCheck's formats byte for byte where a parser cares
//! (file names, CRLF line ends, labels with their trailing spaces, the 52-underscore delimiter
//! followed by an empty line, hand-written JSON with only path backslashes doubled), and its
//! failure scenarios must fail the way the SSH tests expect.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use pushscan_testkit::emocheck::{
    self, report_stamp, scan_time, text_report as expected_text, DELIM, EN, FR, JA, P1, P2, SCRIPT,
};

const HOST: &str = "PC-TEST-01";

/// EmoCheck's JSON report for host [`HOST`].
fn expected_json(time: &str, procs: &[[&str; 4]]) -> Vec<u8> {
    emocheck::json_report(HOST, time, procs)
}

fn sim(args: &[&str], cwd: &Path) -> Output {
    Command::new("sh")
        .arg(SCRIPT)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run sh")
}

/// Runs a quiet scenario into a fresh directory; returns (dir, output).
fn run(scenario: &str, extra: &[&str]) -> (tempfile::TempDir, Output) {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().to_str().unwrap().to_string();
    let mut args = vec![
        "/quiet",
        "/output",
        &out_dir,
        "/host",
        HOST,
        "/scenario",
        scenario,
    ];
    args.extend_from_slice(extra);
    let out = sim(&args, dir.path());
    (dir, out)
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The one report in `dir`: its path and the scan time its name implies.
fn only_report(dir: &Path, host: &str, ext: &str) -> (PathBuf, String) {
    let names = names(dir);
    assert_eq!(names.len(), 1, "expected one report, found {names:?}");
    let stamp = report_stamp(&names[0], host, ext)
        .unwrap_or_else(|| panic!("not an EmoCheck report name: {:?}", names[0]));
    (dir.join(&names[0]), scan_time(&stamp))
}

/// Every LF is part of a CRLF, and the file ends with one.
fn assert_crlf_only(bytes: &[u8]) {
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && bytes[i - 1] == b'\r', "bare LF at byte {i}");
        }
    }
    assert!(bytes.ends_with(b"\r\n"), "report does not end with CRLF");
}

fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn clean_text_report() {
    let (dir, out) = run("clean", &[]);
    assert_success(&out);
    assert!(out.stdout.is_empty(), "/quiet prints nothing");
    let (path, time) = only_report(dir.path(), HOST, "txt");
    let bytes = fs::read(path).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&bytes),
        String::from_utf8_lossy(&expected_text(&EN, &time, &[]))
    );
    assert_crlf_only(&bytes);
    assert!(bytes.starts_with(b"[EmoCheck v2.4.0]\r\nScan time: "));
    assert!(
        String::from_utf8_lossy(&bytes).contains(&format!("\r\n{DELIM}\r\n\r\n[Result] \r\n")),
        "52 underscores, then an empty line"
    );
    assert_eq!(DELIM.len(), 52);
}

#[test]
fn detected_text_report() {
    let (dir, out) = run("detected", &[]);
    assert_success(&out);
    let (path, time) = only_report(dir.path(), HOST, "txt");
    let bytes = fs::read(path).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&bytes),
        String::from_utf8_lossy(&expected_text(&EN, &time, &[P1]))
    );
    assert_crlf_only(&bytes);
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.contains(
        "[Emotet Process] \r\n     Process Name  : wfsrvhost.exe\r\n     Process ID    : 4312\r\n"
    ));
    assert!(text.ends_with(&format!(
        "\r\n{DELIM}\r\n\r\nPlease remove or isolate the suspicious execution file.\r\n"
    )));
}

#[test]
fn two_process_blocks_follow_one_another() {
    let (dir, out) = run("detected2", &[]);
    assert_success(&out);
    let (path, time) = only_report(dir.path(), HOST, "txt");
    let bytes = fs::read(path).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&bytes),
        String::from_utf8_lossy(&expected_text(&EN, &time, &[P1, P2]))
    );
    let text = String::from_utf8(bytes).unwrap();
    assert_eq!(text.matches("[Emotet Process] \r\n").count(), 2);
    assert!(text.contains("Run\\wfsrvhost\r\n[Emotet Process] \r\n"));
}

#[test]
fn japanese_and_french_labels() {
    let (dir, out) = run("detected", &["/lang", "ja"]);
    assert_success(&out);
    let (path, time) = only_report(dir.path(), HOST, "txt");
    assert_eq!(
        String::from_utf8(fs::read(path).unwrap()).unwrap(),
        String::from_utf8(expected_text(&JA, &time, &[P1])).unwrap()
    );

    let (dir, out) = run("clean", &["-lang", "fr"]);
    assert_success(&out);
    let (path, time) = only_report(dir.path(), HOST, "txt");
    assert_eq!(
        String::from_utf8(fs::read(path).unwrap()).unwrap(),
        String::from_utf8(expected_text(&FR, &time, &[])).unwrap()
    );
}

#[test]
fn json_reports() {
    let (dir, out) = run("clean", &["/json"]);
    assert_success(&out);
    let (path, time) = only_report(dir.path(), HOST, "json");
    let bytes = fs::read(path).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&bytes),
        String::from_utf8_lossy(&expected_json(&time, &[]))
    );
    assert_crlf_only(&bytes);
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(value["is_infected"], "no");
    assert!(value.get("emotet_processes").is_none());

    let (dir, out) = run("detected2", &["-json"]);
    assert_success(&out);
    let (path, time) = only_report(dir.path(), HOST, "json");
    let bytes = fs::read(path).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&bytes),
        String::from_utf8_lossy(&expected_json(&time, &[P1, P2]))
    );
    assert_crlf_only(&bytes);
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(value["hostname"], HOST);
    assert_eq!(value["scan_time"], time.as_str());
    assert_eq!(value["is_infected"], "yes");
    let procs = value["emotet_processes"].as_array().unwrap();
    assert_eq!(procs.len(), 2);
    assert_eq!(procs[0]["process_id"], "4312");
    assert_eq!(procs[0]["image_path"], P1[2]);
    assert_eq!(procs[1]["registry_key"], P2[3]);
}

#[test]
fn noreport_writes_nothing() {
    let (dir, out) = run("noreport", &[]);
    assert_success(&out);
    assert!(names(dir.path()).is_empty());
}

#[test]
fn crash_leaves_a_cut_report_and_exits_139() {
    for (json, ext) in [(false, "txt"), (true, "json")] {
        let (dir, out) = run("crash", if json { &["/json"] } else { &[] });
        assert_eq!(out.status.code(), Some(139), "{out:?}");
        let (path, time) = only_report(dir.path(), HOST, ext);
        let bytes = fs::read(path).unwrap();
        let full = if json {
            expected_json(&time, &[P1])
        } else {
            expected_text(&EN, &time, &[P1])
        };
        assert!(full.starts_with(&bytes), "a prefix of the full report");
        assert!(bytes.len() < full.len());
        assert!(!bytes.ends_with(b"\n"), "cut in the middle of a line");
        if json {
            assert!(bytes.ends_with(b"\"process_id\":\"43"));
            assert!(serde_json::from_slice::<serde_json::Value>(&bytes).is_err());
        } else {
            assert!(bytes.ends_with(b"[Emotet Process] \r\n     Process Name  : wfsrvhost.exe\r\n     Process ID    : 43"));
        }
    }
}

#[test]
fn huge_report_is_64_mib() {
    let (dir, out) = run("huge", &[]);
    assert_success(&out);
    let (path, time) = only_report(dir.path(), HOST, "txt");
    let bytes = fs::read(path).unwrap();
    assert_eq!(bytes.len(), 64 * 1024 * 1024);
    let head = expected_text(&EN, &time, &[]);
    assert!(bytes.starts_with(&head));
    assert!(bytes[head.len()..].iter().all(|&b| b == 0));
}

#[test]
fn hostile_names_and_content() {
    let (dir, out) = run("hostile", &[]);
    assert_success(&out);
    let names = names(dir.path());
    assert!(
        names.contains(&r"..\..\evil_emocheck.txt".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&"EVIL\n\u{1b}[31mPC_20250101000000_emocheck.txt".to_string()));
    let link = dir.path().join("PC_20260101000000_emocheck.txt");
    assert_eq!(fs::read_link(&link).unwrap(), Path::new("/etc/passwd"));
    let real: Vec<&String> = names
        .iter()
        .filter(|n| report_stamp(n, HOST, "txt").is_some())
        .collect();
    assert_eq!(real.len(), 1);
    let stamp = report_stamp(real[0], HOST, "txt").unwrap();
    assert!(
        stamp.as_str() > "20260101000000",
        "the real report is the newest"
    );
    let text = fs::read(dir.path().join(real[0])).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("     Process Name  : <script>alert(1)</script>\u{1b}[31mRED\r\n"));
}

#[test]
fn missing_output_dir_writes_to_the_current_directory() {
    let cwd = tempfile::tempdir().unwrap();
    let missing = cwd.path().join("no-such-dir");
    let out = sim(
        &[
            "-quiet",
            "-output",
            missing.to_str().unwrap(),
            "-host",
            HOST,
            "-scenario",
            "detected",
        ],
        cwd.path(),
    );
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Output directory does not exist"),
        "{stdout}"
    );
    let (path, time) = only_report(cwd.path(), HOST, "txt");
    assert_eq!(fs::read(path).unwrap(), expected_text(&EN, &time, &[P1]));
}

#[test]
fn invalid_parameter_scans_nothing() {
    let cwd = tempfile::tempdir().unwrap();
    let out = sim(&["/quiet", "/bogus"], cwd.path());
    assert_success(&out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Invalid parameter: bogus\n"
    );
    assert!(names(cwd.path()).is_empty());
}

#[test]
fn no_argument_writes_to_cwd_and_pauses() {
    let cwd = tempfile::tempdir().unwrap();
    // stdin is at EOF, so the pause returns at once.
    let out = sim(&[], cwd.path());
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.ends_with("Press any key to continue . . . "),
        "{stdout}"
    );
    let names = names(cwd.path());
    assert_eq!(names.len(), 1);
    assert!(names[0].ends_with("_emocheck.txt"), "{names:?}");
}

#[test]
fn padded_to_one_mib_still_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut script = fs::read(SCRIPT).unwrap();
    while script.len() < 1024 * 1024 {
        script.extend_from_slice(b"# padding padding padding padding padding padding padding\n");
    }
    let padded = dir.path().join("emocheck-sim.sh");
    fs::write(&padded, &script).unwrap();
    let reports = dir.path().join("reports");
    fs::create_dir(&reports).unwrap();
    let out = Command::new("sh")
        .arg(&padded)
        .args(["/quiet", "/output", reports.to_str().unwrap()])
        .args(["/host", HOST, "/scenario", "detected"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_success(&out);
    let (path, time) = only_report(&reports, HOST, "txt");
    assert_eq!(fs::read(path).unwrap(), expected_text(&EN, &time, &[P1]));
}

/// `/user`, `/process`, `/pid`, `/image` and `/runkey` replace the first detected process.
#[test]
fn process_switches_override_the_detected_process() {
    let image = r"C:\Users\Public\upd\svch0st.exe";
    let key = r"HKEY_LOCAL_MACHINE\Software\Microsoft\Windows\CurrentVersion\Run\upd";
    let (dir, out) = run(
        "detected",
        &[
            "/process",
            "svch0st.exe",
            "/pid",
            "77",
            "/image",
            image,
            "-runkey",
            key,
        ],
    );
    assert_success(&out);
    let (path, time) = only_report(dir.path(), HOST, "txt");
    let p1 = ["svch0st.exe", "77", image, key];
    assert_eq!(
        String::from_utf8(fs::read(path).unwrap()).unwrap(),
        String::from_utf8(expected_text(&EN, &time, &[p1])).unwrap()
    );

    // /user moves both default image paths to another profile.
    let (dir, out) = run("detected2", &["/json", "/user", "dupont"]);
    assert_success(&out);
    let (path, time) = only_report(dir.path(), HOST, "json");
    let p1 = [
        P1[0],
        P1[1],
        r"C:\Users\dupont\AppData\Local\wfsrvhost\wfsrvhost.exe",
        P1[3],
    ];
    let p2 = [
        P2[0],
        P2[1],
        r"C:\Users\dupont\AppData\Roaming\msrdpsvc\msrdpsvc.exe",
        P2[3],
    ];
    assert_eq!(
        String::from_utf8(fs::read(path).unwrap()).unwrap(),
        String::from_utf8(expected_json(&time, &[p1, p2])).unwrap()
    );

    for bad in [
        &["/pid", "12x"][..],
        &["/encoding", "latin1"][..],
        &["/image"][..],
    ] {
        let (dir, out) = run("detected", bad);
        assert_eq!(out.status.code(), Some(64), "{bad:?}: {out:?}");
        assert!(names(dir.path()).is_empty(), "{bad:?} writes no report");
    }
}

const JA_NAME: &str = "ソフト更新.exe";
const JA_IMAGE: &str = r"C:\Users\鈴木\AppData\Local\ソフト\x.exe";
const JA_KEY: &str = r"HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Run\ソフト";

fn cp932(text: &str) -> Vec<u8> {
    let (bytes, _, unmappable) = encoding_rs::SHIFT_JIS.encode(text);
    assert!(!unmappable, "{text} fits CP932");
    bytes.into_owned()
}

/// Undoes EmoCheck's JSON escaping on bytes: `\\` -> `\`.
fn json_unescape_bytes(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        out.push(bytes[i]);
        i += if bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'\\') {
            2
        } else {
            1
        };
    }
    out
}

fn ja_cp932_args() -> Vec<&'static str> {
    vec![
        "/lang",
        "ja",
        "/encoding",
        "cp932",
        "/process",
        JA_NAME,
        "/pid",
        "5120",
        "/image",
        JA_IMAGE,
        "/runkey",
        JA_KEY,
    ]
}

/// `/encoding cp932`: UTF-8 labels, CP932 names and paths in one text report, CRLF kept.
#[test]
fn cp932_text_report_mixes_utf8_labels_and_cp932_paths() {
    let (dir, out) = run("detected", &ja_cp932_args());
    assert_success(&out);
    let (path, time) = only_report(dir.path(), HOST, "txt");
    let bytes = fs::read(path).unwrap();
    let mut expected = Vec::new();
    for line in [
        "[EmoCheck v2.4.0]".to_string(),
        format!("{}{time}", JA.time),
        DELIM.to_string(),
        String::new(),
        JA.result.to_string(),
        JA.detected.to_string(),
        String::new(),
        JA.block.to_string(),
    ] {
        expected.extend_from_slice(line.as_bytes());
        expected.extend_from_slice(b"\r\n");
    }
    for (label, value) in [
        (JA.name, cp932(JA_NAME)),
        (JA.pid, b"5120".to_vec()),
        (JA.path, cp932(JA_IMAGE)),
        (JA.key, cp932(JA_KEY)),
    ] {
        expected.extend_from_slice(label.as_bytes());
        expected.extend_from_slice(&value);
        expected.extend_from_slice(b"\r\n");
    }
    for line in [DELIM, "", JA.advice] {
        expected.extend_from_slice(line.as_bytes());
        expected.extend_from_slice(b"\r\n");
    }
    assert_eq!(bytes, expected);
    assert!(String::from_utf8(bytes.clone()).is_err(), "not valid UTF-8");
    assert_crlf_only(&bytes);
    // `ソ` is 0x83 0x5C: its trail byte is a backslash byte.
    assert!(cp932(JA_IMAGE).windows(2).any(|w| w == [0x83, 0x5C]));
}

/// `/encoding cp932` in JSON: every 0x5C byte doubled, the CP932 trail bytes too; undoing
/// the escaping on bytes and then decoding gives the paths back.
#[test]
fn cp932_json_report_doubles_trail_byte_backslashes() {
    let mut args = ja_cp932_args();
    args.push("/json");
    let (dir, out) = run("detected", &args);
    assert_success(&out);
    let (path, _) = only_report(dir.path(), HOST, "json");
    let bytes = fs::read(path).unwrap();
    let field = |name: &str| -> Vec<u8> {
        let start = format!("\"{name}\":\"");
        let pos = bytes
            .windows(start.len())
            .position(|w| w == start.as_bytes())
            .unwrap_or_else(|| panic!("no {name}"))
            + start.len();
        // The value ends at its closing quote (every field here is followed by `,` or a
        // line end; none contains a `"`).
        let end = bytes[pos..].iter().position(|&b| b == b'"').unwrap();
        bytes[pos..pos + end].to_vec()
    };
    let image = field("image_path");
    let doubled: Vec<u8> = cp932(JA_IMAGE)
        .iter()
        .flat_map(|&b| if b == b'\\' { vec![b, b] } else { vec![b] })
        .collect();
    assert_eq!(image, doubled);
    // The trap: `ソ` (0x83 0x5C) followed by the doubled trail byte.
    assert!(image.windows(3).any(|w| w == [0x83, 0x5C, 0x5C]));
    let decode = |escaped: &[u8]| {
        encoding_rs::SHIFT_JIS
            .decode(&json_unescape_bytes(escaped))
            .0
            .into_owned()
    };
    assert_eq!(decode(&image), JA_IMAGE);
    assert_eq!(decode(&field("registry_key")), JA_KEY);
    // process_name is written raw (no escaping), in CP932 under /lang ja.
    assert_eq!(field("process_name"), cp932(JA_NAME));
    assert_eq!(field("process_id"), b"5120");
}

/// Outside Japanese, `/encoding cp932` converts paths but leaves process names as given.
#[test]
fn cp932_converts_names_only_for_japanese() {
    let (dir, out) = run(
        "detected",
        &[
            "/encoding",
            "cp932",
            "/process",
            "ソフト.exe",
            "/image",
            JA_IMAGE,
        ],
    );
    assert_success(&out);
    let (path, _) = only_report(dir.path(), HOST, "txt");
    let bytes = fs::read(path).unwrap();
    let name_line = format!("{}ソフト.exe\r\n", EN.name);
    assert!(bytes
        .windows(name_line.len())
        .any(|w| w == name_line.as_bytes()));
    let mut path_line = EN.path.as_bytes().to_vec();
    path_line.extend(cp932(JA_IMAGE));
    assert!(bytes.windows(path_line.len()).any(|w| w == path_line));
}

/// A character CP932 cannot carry is an error, not a report with a wrong path.
#[test]
fn cp932_refuses_what_it_cannot_carry() {
    let (dir, out) = run(
        "detected",
        &["/encoding", "cp932", "/image", r"C:\Users\x\😀.exe"],
    );
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(names(dir.path()).is_empty());
}
