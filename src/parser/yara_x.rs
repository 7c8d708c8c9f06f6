//! `yara_x`: VirusTotal's YARA-X command line, `yr scan --output-format ndjson`, read from
//! the checker's standard output.
//!
//! `yr` prints one JSON object per file (1.22.1 prints the matched files only; a file it
//! prints with `"rules": []` was scanned and is clean):
//!
//! ```text
//! {"path":"/srv/a.bin","rules":[{"identifier":"Dropper","namespace":"default",
//!   "meta":[["author","x"],["score",90],["b",[1,2]]],"tags":["apt"],
//!   "strings":[{"identifier":"$a","offset":16,"match":"evil\\x00"}]}]}
//! {"path":"/srv/b.txt","rules":[]}
//! ```
//!
//! `namespace`, `meta`, `tags` and `strings` are present only with `yr scan`'s `-e`, `-m`,
//! `-g` and `-s` flags; `meta` is a list of `[name, value]` pairs (byte strings as lists of
//! numbers); `match` is already ASCII-escaped by `yr` (`\x00`, `\"`), at most `-s=N` bytes.
//! Each matched rule of a file is one finding (kind `yara_match`, title the rule, location
//! and attribute `path` the file, which contain quarantines), identity rule + path; its
//! severity is the rule's `severity`/`threat_level` meta (a level name) or `score` (0-100),
//! else high. `yr scan -c` prints `{"path", "count"}` instead: a count above 0 is a match
//! without the rule's name.
//!
//! `yr` has no end marker and exits 0 even when it could not scan everything, so "finished"
//! is judged from the whole run: the parse reads standard output, which the engine keeps up
//! to `results.max_file_size` (not the usual 64 KiB), and standard error. The host is clean
//! only when `yr` exited 0 (not killed, not timed out), nothing of its output was cut, every
//! line is a complete JSON object, the output ends with a line end, and standard error says
//! neither that the scan stopped (`error: scanning "F": timeout`: `yr -a N` aborts the whole
//! walk there) nor that the target could not be opened (`error: can't open`). Other errors
//! (`error: scanning "F": can not open ...: Permission denied`, `IO error for operation on
//! DIR`) are per file: not matches and not silence either, they become the report's
//! warnings and are counted in the host's reason. A non-zero exit is a rules file that does
//! not compile. A match is a detection whatever else went wrong.
//!
//! Everything in the output is hostile: the input, the findings, the strings per finding
//! and every field are bounded by the constants below, never by counts the output claims.

// The parser reads untrusted bytes: make any panicking shortcut a compile error outside the
// tests rather than rely on review.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use std::collections::BTreeMap;

use serde_json::Value;

use super::{
    exit_text, first_detected, first_line, lines_status, no_usable_report_verdict,
    timed_out_verdict, warn, whole_lines, Entry, FetchedReport, ResultParser, Verdict,
};
use crate::model::{ExecOutcome, Finding, HostClass, ParsedReport, ReportStatus, Severity};
use crate::sanitize;

/// The attribute naming the matched file (contain quarantines it).
pub const PATH: &str = crate::model::attr::PATH;
/// The kind of every finding of this parser.
pub const KIND: &str = "yara_match";

pub const ENTRY: Entry = Entry {
    name: "yara_x",
    checker: "YARA-X",
    reads: "yr scan --output-format ndjson on standard output, one JSON object per scanned file",
    attributes: &[
        PATH,
        "rule",
        "namespace",
        "tags",
        "strings",
        "strings_total",
        "meta.NAME",
    ],
    build: |_| Box::new(YaraXParser),
};

/// The name the standard output is journaled under, as if it were a result file.
pub const STDOUT_NAME: &str = "yr-scan.ndjson";

/// Only this much of the output is read.
const MAX_INPUT: usize = 64 * 1024 * 1024;
/// Findings (matched rules) kept per report.
const MAX_FINDINGS: usize = 10_000;
/// Matched strings kept per finding (the rest are counted in `strings_total`).
const MAX_STRINGS: usize = 20;
/// Characters kept of one matched string.
const MAX_MATCH: usize = 200;
/// Characters kept per other field (path, rule, tag, meta value).
const MAX_FIELD: usize = 4 * 1024;
/// Meta entries and tags kept per rule.
const MAX_META: usize = 32;
/// Standard-error lines quoted as warnings.
const MAX_STDERR_LINES: usize = 10;

/// `yr scan --output-format ndjson` (see the module's documentation).
pub struct YaraXParser;

fn capped(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// A JSON scalar as text (meta values are strings, integers, floats, booleans or byte
/// lists).
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => capped(s, MAX_FIELD),
        Value::Array(bytes) => {
            // Byte strings: shown escaped like yr shows matches.
            let mut out = String::new();
            for b in bytes.iter().take(MAX_FIELD / 4) {
                let b = b
                    .as_u64()
                    .and_then(|n| u8::try_from(n).ok())
                    .unwrap_or(b'?');
                out.extend(std::ascii::escape_default(b).map(char::from));
            }
            out
        }
        other => capped(&other.to_string(), MAX_FIELD),
    }
}

/// A rule's `meta`: `[[name, value], ...]` (yr), or an object (tolerated).
fn meta(v: Option<&Value>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match v {
        Some(Value::Array(pairs)) => {
            for p in pairs.iter().take(MAX_META) {
                if let Some([Value::String(k), v]) = p.as_array().map(Vec::as_slice) {
                    out.push((capped(k, 64), scalar(v)));
                }
            }
        }
        Some(Value::Object(o)) => {
            for (k, v) in o.iter().take(MAX_META) {
                out.push((capped(k, 64), scalar(v)));
            }
        }
        _ => {}
    }
    out
}

/// A severity a rule author wrote in `meta` (`severity`, `threat_level`, `score`), else
/// high: a YARA match in an incident sweep is what the operator looks for.
fn severity(meta: &[(String, String)]) -> Severity {
    for (k, v) in meta {
        let v = v.trim().to_ascii_lowercase();
        match k.to_ascii_lowercase().as_str() {
            "severity" | "threat_level" | "level" => {
                if let Some(s) = super::hayabusa::level(&v) {
                    return s;
                }
            }
            "score" => {
                if let Ok(n) = v.parse::<u32>() {
                    return match n {
                        0..=39 => Severity::Low,
                        40..=69 => Severity::Medium,
                        70..=89 => Severity::High,
                        _ => Severity::Critical,
                    };
                }
            }
            _ => {}
        }
    }
    Severity::High
}

/// One matched rule of the file `path`.
fn rule_finding(path: &str, rule: &serde_json::Map<String, Value>) -> Option<Finding> {
    let name = rule
        .get("identifier")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())?;
    let name = capped(name, MAX_FIELD);
    let mut attributes = BTreeMap::new();
    attributes.insert(PATH.to_string(), path.to_string());
    attributes.insert("rule".to_string(), name.clone());
    if let Some(ns) = rule.get("namespace").and_then(Value::as_str) {
        attributes.insert("namespace".to_string(), capped(ns, MAX_FIELD));
    }
    if let Some(tags) = rule.get("tags").and_then(Value::as_array) {
        let tags: Vec<String> = tags
            .iter()
            .filter_map(Value::as_str)
            .take(MAX_META)
            .map(|t| capped(t, 256))
            .collect();
        if !tags.is_empty() {
            attributes.insert("tags".to_string(), tags.join(","));
        }
    }
    let meta = meta(rule.get("meta"));
    for (k, v) in &meta {
        attributes.insert(format!("meta.{k}"), v.clone());
    }
    if let Some(strings) = rule.get("strings").and_then(Value::as_array) {
        let shown: Vec<String> = strings
            .iter()
            .take(MAX_STRINGS)
            .filter_map(Value::as_object)
            .map(|s| {
                let id = s.get("identifier").and_then(Value::as_str).unwrap_or("?");
                let offset = s.get("offset").and_then(Value::as_u64).unwrap_or(0);
                let data = s.get("match").and_then(Value::as_str).unwrap_or("");
                let mut m = capped(data, MAX_MATCH);
                if data.chars().nth(MAX_MATCH).is_some() {
                    m.push('…');
                }
                format!("{}@{offset:#x}: {m}", capped(id, 128))
            })
            .collect();
        if !shown.is_empty() {
            attributes.insert("strings".to_string(), shown.join("; "));
        }
        attributes.insert("strings_total".to_string(), strings.len().to_string());
    }
    Some(Finding {
        kind: KIND.to_string(),
        identity: format!("yara|{name}|{path}"),
        title: name,
        location: path.to_string(),
        severity: severity(&meta),
        attributes,
    })
}

/// Parses `yr scan --output-format ndjson` output. Never panics, whatever the bytes.
pub fn parse(bytes: &[u8]) -> ParsedReport {
    let mut warnings = Vec::new();
    let (bytes, mut complete) =
        whole_lines(bytes, MAX_INPUT, "output beyond 64 MiB", &mut warnings);
    let mut findings = Vec::new();
    let mut scanned = 0u64;
    let mut matched_files = 0u64;
    let mut dropped = 0u64;
    for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let line = i + 1;
        let raw = raw.trim_ascii();
        if raw.is_empty() {
            continue;
        }
        // yr writes UTF-8 (paths it cannot convert are refused by yr itself); anything else
        // is not its output, but the rest of the file is still read.
        let obj = match serde_json::from_slice::<Value>(raw) {
            Ok(Value::Object(o)) => o,
            _ => {
                warn(&mut warnings, format!("line {line}: not a JSON object"));
                complete = false;
                continue;
            }
        };
        let Some(path) = obj.get("path").and_then(Value::as_str) else {
            warn(&mut warnings, format!("line {line}: no path"));
            complete = false;
            continue;
        };
        let path = capped(path, MAX_FIELD);
        scanned += 1;
        if let Some(count) = obj.get("count") {
            // `yr scan -c`: the number of matching rules, without their names.
            let n = count.as_u64().unwrap_or(1);
            if n > 0 {
                matched_files += 1;
                if findings.len() < MAX_FINDINGS {
                    findings.push(Finding {
                        kind: KIND.to_string(),
                        title: format!("{n} rule(s)"),
                        location: path.clone(),
                        severity: Severity::High,
                        attributes: BTreeMap::from([(PATH.to_string(), path.clone())]),
                        identity: format!("yara|*|{path}"),
                    });
                } else {
                    dropped += 1;
                }
            }
            continue;
        }
        let Some(rules) = obj.get("rules").and_then(Value::as_array) else {
            warn(&mut warnings, format!("line {line}: no rules list"));
            complete = false;
            continue;
        };
        if !rules.is_empty() {
            matched_files += 1;
        }
        for rule in rules {
            let Some(f) = rule.as_object().and_then(|r| rule_finding(&path, r)) else {
                warn(
                    &mut warnings,
                    format!("line {line}: a rule without an identifier"),
                );
                complete = false;
                continue;
            };
            if findings.len() < MAX_FINDINGS {
                findings.push(f);
            } else {
                dropped += 1;
            }
        }
    }
    if dropped > 0 {
        warn(
            &mut warnings,
            format!("truncated: {dropped} match(es) beyond {MAX_FINDINGS} ignored"),
        );
    }
    if scanned == 0 && complete {
        warn(&mut warnings, "yr scanned no file".to_string());
    }
    let status = lines_status(&findings, complete);
    ParsedReport {
        status,
        hostname: None,
        scan_time: None,
        checker_version: None,
        format: Some(format!(
            "ndjson ({scanned} file(s) scanned, {matched_files} matched)"
        )),
        findings,
        warnings,
    }
}

/// What `yr` said on standard error: its `error:` lines (counted, the first few quoted,
/// escaped), and whether one of them means the scan did not cover its target (a timeout
/// aborts the walk; a target that cannot be opened was not scanned at all).
struct Stderr {
    errors: usize,
    quoted: Vec<String>,
    stopped: Option<String>,
}

fn stderr_of(exec: &ExecOutcome) -> Stderr {
    let text = String::from_utf8_lossy(&exec.stderr);
    let mut e = Stderr {
        errors: 0,
        quoted: Vec::new(),
        stopped: None,
    };
    for line in text.lines() {
        let line = strip_ansi(line.trim());
        let Some(rest) = line.strip_prefix("error:") else {
            continue;
        };
        e.errors += 1;
        let shown = sanitize::display(line.trim(), 200);
        let rest = rest.trim();
        if e.stopped.is_none()
            && ((rest.starts_with("scanning ") && rest.ends_with(": timeout"))
                || rest.starts_with("can't open"))
        {
            e.stopped = Some(shown.clone());
        }
        if e.quoted.len() < MAX_STDERR_LINES {
            e.quoted.push(shown);
        }
    }
    e
}

/// `yr` colours its messages when it thinks it may; the colour codes are noise in a reason
/// (any other control is escaped by the display layer).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The report of one run's standard output: [`parse`], plus what the run says about it
/// (cut output, exit status, standard error).
pub fn parse_output(exec: &ExecOutcome) -> ParsedReport {
    let mut r = parse(&exec.stdout);
    let mut cut = false;
    if exec.truncated_bytes > 0 {
        r.warnings.push(format!(
            "truncated: {} byte(s) of output beyond the cap dropped",
            exec.truncated_bytes
        ));
        cut = true;
    }
    if exec.timed_out || exec.exit_signal.is_some() || exec.exit_code != Some(0) {
        r.warnings
            .push(format!("incomplete: yr ended with {}", exit_text(exec)));
        cut = true;
    }
    let e = stderr_of(exec);
    if let Some(stop) = &e.stopped {
        r.warnings.push(format!(
            "incomplete: the scan did not cover its target: {stop}"
        ));
        cut = true;
    }
    if e.errors > 0 {
        r.warnings
            .push(format!("{} error(s) on standard error", e.errors));
        r.warnings
            .extend(e.quoted.into_iter().map(|l| format!("stderr: {l}")));
    }
    if cut && r.status == ReportStatus::NotDetected {
        r.status = ReportStatus::Unparseable;
    }
    r
}

impl ResultParser for YaraXParser {
    fn name(&self) -> &'static str {
        "yara_x"
    }

    fn wants_files(&self) -> bool {
        false
    }

    fn reads_stdout(&self) -> Option<&'static str> {
        Some(STDOUT_NAME)
    }

    fn parse_stdout(&self, exec: &ExecOutcome) -> ParsedReport {
        parse_output(exec)
    }

    fn recency(&self, _file_name: &str, mtime: Option<u64>) -> (u8, String) {
        (0, format!("{:020}", mtime.unwrap_or(0)))
    }

    fn parse_file(&self, _file_name: &str, bytes: &[u8]) -> ParsedReport {
        parse(bytes)
    }

    fn verdict(
        &self,
        exec: &ExecOutcome,
        reports: &[FetchedReport],
        problems: &[String],
    ) -> Verdict {
        let e = stderr_of(exec);
        let errors_note = |reason: &mut String| {
            if e.errors > 0 {
                reason.push_str(&format!(
                    "; {} error(s) on standard error, first: {}",
                    e.errors,
                    e.quoted.first().map(String::as_str).unwrap_or("")
                ));
            }
        };
        if let Some((i, r)) = first_detected(reports) {
            let shown: Vec<String> = r
                .parsed
                .findings
                .iter()
                .take(5)
                .map(|f| {
                    format!(
                        "{} @ {}",
                        sanitize::display(&f.title, 80),
                        sanitize::display(&f.location, 120)
                    )
                })
                .collect();
            let mut reason = format!(
                "{} rule match(es): {}",
                r.parsed.findings.len(),
                shown.join(", ")
            );
            errors_note(&mut reason);
            return Verdict {
                class: HostClass::Detected,
                reason,
                primary: Some(i),
            };
        }
        if exec.timed_out {
            return timed_out_verdict();
        }
        match reports.first() {
            Some(r) if r.parsed.status == ReportStatus::NotDetected => {
                let mut reason = format!(
                    "no rule matched ({})",
                    r.parsed.format.as_deref().unwrap_or("ndjson")
                );
                errors_note(&mut reason);
                Verdict {
                    class: HostClass::NotDetected,
                    reason,
                    primary: Some(0),
                }
            }
            Some(r) => {
                let mut reason = format!("yr did not finish its scan ({})", exit_text(exec));
                let own: Vec<&str> = r
                    .parsed
                    .warnings
                    .iter()
                    // Standard error is quoted once, below; "no file" is no news here.
                    .filter(|w| {
                        !w.starts_with("stderr: ")
                            && !w.ends_with(" on standard error")
                            && w.as_str() != "yr scanned no file"
                    })
                    .map(String::as_str)
                    .take(3)
                    .collect();
                if !own.is_empty() {
                    reason.push_str(&format!(": {}", own.join("; ")));
                }
                // The error that stopped the scan is quoted above already.
                if e.errors > usize::from(e.stopped.is_some()) {
                    errors_note(&mut reason);
                }
                Verdict {
                    class: HostClass::CheckerFailed,
                    reason,
                    primary: Some(0),
                }
            }
            None if !problems.is_empty() => no_usable_report_verdict(problems),
            None => {
                let mut reason = format!("no yr output ({})", exit_text(exec));
                if let Some(line) =
                    first_line(&strip_ansi(&String::from_utf8_lossy(&exec.stderr)).into_bytes())
                {
                    reason.push_str(&format!("; stderr: {line}"));
                }
                Verdict {
                    class: HostClass::CheckerFailed,
                    reason,
                    primary: None,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(stdout: &[u8], code: i64, stderr: &[u8]) -> ExecOutcome {
        ExecOutcome {
            exit_code: Some(code),
            stdout: stdout.to_vec(),
            stderr: stderr.to_vec(),
            ..Default::default()
        }
    }

    fn verdict(e: &ExecOutcome) -> Verdict {
        let r = FetchedReport {
            name: STDOUT_NAME.into(),
            parsed: parse_output(e),
        };
        YaraXParser.verdict(e, &[r], &[])
    }

    const OUT: &[u8] = br#"{"path":"/srv/a.bin","rules":[{"identifier":"Dropper","namespace":"default","meta":[["author","x"],["severity","critical"],["bytes",[0,1]]],"tags":["apt","t2"],"strings":[{"identifier":"$a","offset":16,"match":"evil\\x00"}]}]}
{"path":"/srv/b.txt","rules":[]}
{"path":"/srv/c.bin","rules":[{"identifier":"Dropper"},{"identifier":"Other"}]}
"#;

    #[test]
    fn each_matched_rule_is_a_finding_and_empty_rules_are_clean_files() {
        let r = parse(OUT);
        assert_eq!(r.status, ReportStatus::Detected, "{:?}", r.warnings);
        assert_eq!(r.findings.len(), 3);
        let f = &r.findings[0];
        assert_eq!((f.kind.as_str(), f.title.as_str()), (KIND, "Dropper"));
        assert_eq!(f.location, "/srv/a.bin");
        assert_eq!(f.attr(PATH), Some("/srv/a.bin"));
        assert_eq!(f.attr("namespace"), Some("default"));
        assert_eq!(f.attr("tags"), Some("apt,t2"));
        assert_eq!(f.attr("meta.author"), Some("x"));
        assert_eq!(f.attr("meta.bytes"), Some("\\x00\\x01"));
        assert_eq!(f.attr("strings"), Some("$a@0x10: evil\\x00"));
        assert_eq!(f.attr("strings_total"), Some("1"));
        assert_eq!(f.severity, Severity::Critical, "from meta severity");
        assert_eq!(f.identity, "yara|Dropper|/srv/a.bin");
        assert_eq!(r.findings[1].identity, "yara|Dropper|/srv/c.bin");
        assert_eq!(r.findings[2].title, "Other");
        assert_eq!(r.findings[2].severity, Severity::High);
        assert_eq!(
            r.format.as_deref(),
            Some("ndjson (3 file(s) scanned, 2 matched)")
        );
    }

    #[test]
    fn clean_only_when_yr_exited_zero_with_whole_lines() {
        let clean = b"{\"path\":\"/a\",\"rules\":[]}\n{\"path\":\"/b\",\"rules\":[]}\n";
        assert_eq!(verdict(&exec(clean, 0, b"")).class, HostClass::NotDetected);
        // Empty output of a scan of an empty directory is clean too, and says so.
        let v = verdict(&exec(b"", 0, b""));
        assert_eq!(v.class, HostClass::NotDetected);
        assert_eq!(parse(b"").warnings, ["yr scanned no file"]);
        // A non-zero exit (rules that do not compile), a cut line, cut output: never clean.
        let v = verdict(&exec(b"", 1, b"error: syntax error\n"));
        assert_eq!(v.class, HostClass::CheckerFailed, "{}", v.reason);
        assert!(v.reason.contains("syntax error"), "{}", v.reason);
        let v = verdict(&exec(b"{\"path\":\"/a\",\"rules\":[]}\n{\"pa", 0, b""));
        assert_eq!(v.class, HostClass::CheckerFailed, "{}", v.reason);
        assert!(v.reason.contains("truncated"), "{}", v.reason);
        let mut e = exec(clean, 0, b"");
        e.truncated_bytes = 10;
        assert_eq!(verdict(&e).class, HostClass::CheckerFailed);
        let mut e = exec(clean, 0, b"");
        e.timed_out = true;
        e.exit_code = None;
        assert_eq!(verdict(&e).class, HostClass::Timeout);
        // A match stays a detection even when yr failed afterwards.
        assert_eq!(verdict(&exec(OUT, 1, b"")).class, HostClass::Detected);
    }

    /// What yr 1.22.1 printed, run as nobody over a directory with an unreadable file and
    /// an unreadable subdirectory (exit 0), then with `-a 1` on a slow rule, then on a
    /// target that does not exist (exit 0 both times).
    const PER_FILE_ERRORS: &[u8] = b"error: IO error for operation on /s/closed: Permission denied (os error 13): Permission denied (os error 13)\n\
error: scanning \"/s/noread\": can not open `/s/noread`: Permission denied (os error 13)\n";
    const TIMEOUT: &[u8] =
        b"warning[potentially_slow_loop]: potentially slow loop\n --> slow.yar:1:76\n\
error: scanning \"scan/big\": timeout\n";
    const NO_TARGET: &[u8] =
        b"error: can't open `/nonexistent`: No such file or directory (os error 2)\n";

    #[test]
    fn scan_errors_on_stderr_are_warnings_not_detections_nor_silence() {
        let e = exec(b"", 0, PER_FILE_ERRORS);
        let v = verdict(&e);
        assert_eq!(v.class, HostClass::NotDetected, "{}", v.reason);
        assert!(
            v.reason.contains(
                "2 error(s) on standard error, first: error: IO error for operation on /s/closed"
            ),
            "{}",
            v.reason
        );
        // A timeout aborts yr's walk, a missing target is not scanned: never clean.
        for stderr in [TIMEOUT, NO_TARGET] {
            let v = verdict(&exec(b"", 0, stderr));
            assert_eq!(v.class, HostClass::CheckerFailed, "{}", v.reason);
            assert!(
                v.reason.contains("did not cover its target"),
                "{}",
                v.reason
            );
        }
        assert_eq!(
            verdict(&exec(b"", 0, NO_TARGET)).reason,
            "yr did not finish its scan (exit 0): incomplete: the scan did not cover its target: \
             error: can't open `/nonexistent`: No such file or directory (os error 2)"
        );
        // ... but what it matched before is still a detection.
        let v = verdict(&exec(OUT, 0, TIMEOUT));
        assert_eq!(v.class, HostClass::Detected);
        assert!(
            v.reason.contains("1 error(s) on standard error"),
            "{}",
            v.reason
        );
        // yr's colours are dropped from the quote, any other control escaped.
        let e = exec(
            b"",
            0,
            b"\x1b[31;1merror: \x1b[0mscanning \"/r/\x07x\": Permission denied\n",
        );
        let r = parse_output(&e);
        assert!(
            r.warnings
                .contains(&"stderr: error: scanning \"/r/\\x07x\": Permission denied".to_string()),
            "{:?}",
            r.warnings
        );
        assert!(r.findings.is_empty());
    }

    #[test]
    fn count_output_is_read_too() {
        let r = parse(b"{\"path\":\"/a\",\"count\":2}\n{\"path\":\"/b\",\"count\":0}\n");
        assert_eq!(r.status, ReportStatus::Detected);
        assert_eq!(r.findings.len(), 1);
        assert_eq!(r.findings[0].title, "2 rule(s)");
    }

    #[test]
    fn hostile_output_is_bounded() {
        // 100k matches of one rule: 20 strings kept, all counted.
        let mut s = String::from("{\"path\":\"/x\",\"rules\":[{\"identifier\":\"R\",\"strings\":[");
        for i in 0..100_000 {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&format!(
                "{{\"identifier\":\"$a\",\"offset\":{i},\"match\":\"{}\"}}",
                "A".repeat(300)
            ));
        }
        s.push_str("]}]}\n");
        let r = parse(s.as_bytes());
        let f = &r.findings[0];
        assert_eq!(f.attr("strings_total"), Some("100000"));
        let strings = f.attr("strings").unwrap_or_default();
        assert_eq!(strings.split("; ").count(), MAX_STRINGS);
        assert!(
            strings.len() < MAX_STRINGS * (MAX_MATCH + 40),
            "{}",
            strings.len()
        );
        // 100k matched files: findings capped, the rest counted in a warning.
        let mut s = String::new();
        for i in 0..100_000 {
            s.push_str(&format!(
                "{{\"path\":\"/f{i}\",\"rules\":[{{\"identifier\":\"R\"}}]}}\n"
            ));
        }
        let r = parse(s.as_bytes());
        assert_eq!(r.findings.len(), MAX_FINDINGS);
        assert!(
            r.warnings
                .iter()
                .any(|w| w.contains("90000 match(es) beyond")),
            "{:?}",
            r.warnings
        );
        // Invalid UTF-8 and a huge line: no panic, never clean, the rest still read.
        let mut b = b"{\"path\":\"/\xff\xfe\",\"rules\":[]}\n".to_vec();
        b.extend(std::iter::repeat_n(b'x', 5_000_000));
        b.extend(b"\n{\"path\":\"/y\",\"rules\":[{\"identifier\":\"R\"}]}\n");
        let r = parse(&b);
        assert_eq!(r.status, ReportStatus::Detected);
        assert_eq!(r.findings.len(), 1);
        assert_eq!(parse(&b[..40]).status, ReportStatus::Unparseable);
        // Long fields are cut to the cap.
        let long = format!(
            "{{\"path\":\"/{}\",\"rules\":[{{\"identifier\":\"{}\"}}]}}\n",
            "p".repeat(100_000),
            "r".repeat(100_000)
        );
        let r = parse(long.as_bytes());
        assert_eq!(r.findings[0].title.chars().count(), MAX_FIELD);
        assert_eq!(r.findings[0].location.chars().count(), MAX_FIELD);
    }
}
