//! The repository's layout rules outside `src/`, checked on the files themselves:
//! - the shipped playbooks do not reach into `lab/`; the ones that run the EmoCheck stand-in
//!   pin it at `playbooks/checkers/` (the path the test kit names);
//! - docs, tests, benches, the lab, scripts and playbooks cite no file outside the repository,
//!   no tracker issue, and none of the paths the stand-in, the sshd fleet, the measurement
//!   helpers and the benchmark scripts had before they moved.

use std::fs;
use std::path::{Path, PathBuf};

use pushscan_testkit::cargo::WORKSPACE;
use pushscan_testkit::emocheck;

/// Every file under `dir` (recursively), skipping build output and binary files.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        if name == "target" || name == ".git" {
            continue;
        }
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn shipped_playbooks_do_not_reach_into_the_lab() {
    let root = Path::new(WORKSPACE);
    let mut found = Vec::new();
    files(&root.join("playbooks"), &mut found);
    let yml: Vec<&PathBuf> = found
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    assert!(yml.len() >= 3, "playbooks found: {yml:?}");
    for p in &yml {
        let text = fs::read_to_string(p).unwrap();
        assert!(
            !text.contains("lab/"),
            "{} points into lab/:\n{text}",
            p.display()
        );
    }
    for name in ["demo-local.yml", "emocheck-ssh.yml"] {
        let text = fs::read_to_string(root.join("playbooks").join(name)).unwrap();
        assert!(
            text.contains(&format!("  path: {}\n", emocheck::PLAYBOOK_RELATIVE)),
            "{name} runs the stand-in beside it:\n{text}"
        );
    }
    assert_eq!(
        fs::read(emocheck::SCRIPT).unwrap(),
        emocheck::SCRIPT_BYTES,
        "the stand-in the lab builds in is the one the playbooks pin"
    );
}

#[test]
fn no_dangling_references() {
    let root = Path::new(WORKSPACE);
    let mut found = Vec::new();
    for dir in [
        "src",
        "docs",
        "tests",
        "benches",
        "lab",
        "scripts",
        "playbooks",
        ".ci",
        "inventories",
    ] {
        files(&root.join(dir), &mut found);
    }
    found.push(root.join("README.md"));
    let me = Path::new(file!()).file_name().unwrap();
    // Split so this file does not match itself.
    let banned: Vec<String> = [
        ["notes", "/"],
        ["../sha", "red"],
        ["/wo", "rk/"],
        ["lab/che", "cker/"],
        ["tests/common/ss", "hd.rs"],
        ["benches/com", "mon/"],
    ]
    .iter()
    .map(|p| p.concat())
    .collect();
    let mut bad = Vec::new();
    for p in &found {
        if p.file_name() == Some(me) {
            continue;
        }
        let Ok(text) = fs::read_to_string(p) else {
            continue; // not text (images, compiled fixtures)
        };
        for (n, line) in text.lines().enumerate() {
            let lower = line.to_ascii_lowercase();
            let issue = lower.match_indices("issue ").any(|(i, m)| {
                lower[i + m.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_digit() || c == '#')
            });
            // The old place of the benchmark scripts (not `benches/scripts/...`).
            let old_bench = ["bench/run", "bench/windows"].iter().any(|b| {
                line.match_indices(b).any(|(i, _)| {
                    !line[..i].ends_with("benches/scripts/") && !line[..i].ends_with('-')
                })
            });
            if issue || old_bench || banned.iter().any(|b| line.contains(b.as_str())) {
                bad.push(format!("{}:{}: {}", p.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(bad.is_empty(), "dangling references:\n{}", bad.join("\n"));
}
