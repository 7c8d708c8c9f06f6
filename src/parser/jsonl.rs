//! `jsonl`: a checker that writes its findings as JSON lines, the generic shape any tool can
//! be wrapped to emit:
//!
//! ```text
//! {"kind": "file", "title": "Trojan.X", "location": "C:\\x.exe", "severity": "high",
//!  "attributes": {"image": "C:\\x.exe", "sha256": "..."}, "identity": "Trojan.X|C:\\x.exe"}
//! {"end": 1}
//! ```
//!
//! One finding per line (`title` required; `kind` defaults to `finding`, `severity` to
//! `high`, `identity` to kind, title and location). The last line, `{"end": N}` with N the
//! number of findings, says the checker finished: a file without it (cut short) is never
//! read as clean. Attribute values are strings; the names contain acts on are those of
//! `model::attr` (`pid`, `image`, `run_key`).

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
    exit_text, first_line, no_usable_report_verdict, timed_out_verdict, unusable_report_verdict,
    Entry, FetchedReport, ResultParser, Verdict,
};
use crate::model::{ExecOutcome, Finding, HostClass, ParsedReport, ReportStatus, Severity};
use crate::sanitize;

pub const ENTRY: Entry = Entry {
    name: "jsonl",
    checker: "JSON lines",
    reads: "JSON lines, one finding per line, ending {\"end\": N}",
    attributes: &[],
    build: |_| Box::new(JsonLinesParser),
};

/// Only this much of a file is read.
const MAX_INPUT: usize = 4 * 1024 * 1024;
/// Findings kept per file.
const MAX_FINDINGS: usize = 10_000;
/// Attributes kept per finding.
const MAX_ATTRIBUTES: usize = 64;
/// Characters kept per string (title, location, attribute value ...).
const MAX_FIELD: usize = 32 * 1024;
/// Warnings kept per file.
const MAX_WARNINGS: usize = 32;

/// JSON lines of findings (see the module's documentation).
pub struct JsonLinesParser;

/// A string field, capped at [`MAX_FIELD`] characters.
fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .map(|s| s.chars().take(MAX_FIELD).collect())
}

fn warn(warnings: &mut Vec<String>, w: String) {
    if warnings.len() < MAX_WARNINGS {
        warnings.push(w);
    }
}

/// One finding line, or why it is not one.
fn finding(
    obj: &serde_json::Map<String, Value>,
    warnings: &mut Vec<String>,
    line: usize,
) -> Option<Finding> {
    let Some(title) = text(obj.get("title")).filter(|t| !t.is_empty()) else {
        warn(warnings, format!("line {line}: a finding without a title"));
        return None;
    };
    let kind = text(obj.get("kind"))
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| "finding".to_string());
    let location = text(obj.get("location")).unwrap_or_default();
    let severity = match obj.get("severity").and_then(Value::as_str) {
        None => Severity::High,
        Some(s) => Severity::parse(s).unwrap_or_else(|| {
            warn(
                warnings,
                format!(
                    "line {line}: unknown severity {:?}, read as high",
                    sanitize::display(s, 40)
                ),
            );
            Severity::High
        }),
    };
    let mut attributes = BTreeMap::new();
    if let Some(attrs) = obj.get("attributes").and_then(Value::as_object) {
        for (k, v) in attrs.iter().take(MAX_ATTRIBUTES) {
            let value = match v {
                Value::String(s) => s.chars().take(MAX_FIELD).collect(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => continue,
            };
            attributes.insert(k.chars().take(64).collect(), value);
        }
    }
    let identity = text(obj.get("identity"))
        .filter(|i| !i.is_empty())
        .unwrap_or_else(|| format!("{kind}|{title}|{location}"));
    Some(Finding {
        kind,
        title,
        location,
        severity,
        attributes,
        identity,
    })
}

/// Parses one file of JSON lines. Never panics, whatever the bytes.
pub fn parse(bytes: &[u8]) -> ParsedReport {
    let mut warnings = Vec::new();
    if bytes.len() > MAX_INPUT {
        warn(&mut warnings, "input beyond 4 MiB ignored".to_string());
    }
    let bytes = bytes.get(..MAX_INPUT).unwrap_or(bytes);
    let text = String::from_utf8_lossy(bytes);
    let mut findings = Vec::new();
    let mut end: Option<u64> = None;
    let mut bad = 0usize;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        if end.is_some() {
            warn(
                &mut warnings,
                format!("line {line}: data after the end line"),
            );
            bad += 1;
            continue;
        }
        let obj = match serde_json::from_str::<Value>(raw) {
            Ok(Value::Object(o)) => o,
            _ => {
                warn(&mut warnings, format!("line {line}: not a JSON object"));
                bad += 1;
                continue;
            }
        };
        if let Some(n) = obj.get("end") {
            end = Some(n.as_u64().unwrap_or(u64::MAX));
            continue;
        }
        if findings.len() >= MAX_FINDINGS {
            warn(
                &mut warnings,
                format!("findings beyond {MAX_FINDINGS} ignored"),
            );
            end = end.or(Some(u64::MAX));
            break;
        }
        match finding(&obj, &mut warnings, line) {
            Some(f) => findings.push(f),
            None => bad += 1,
        }
    }
    let complete = match end {
        None => {
            warn(&mut warnings, "truncated: no end line".to_string());
            false
        }
        Some(n) if n != findings.len() as u64 => {
            warn(
                &mut warnings,
                format!(
                    "incomplete: the end line counts {n}, the file holds {}",
                    findings.len()
                ),
            );
            false
        }
        Some(_) => bad == 0 && bytes.len() <= MAX_INPUT,
    };
    let status = if !findings.is_empty() {
        ReportStatus::Detected
    } else if complete {
        ReportStatus::NotDetected
    } else {
        ReportStatus::Unparseable
    };
    ParsedReport {
        status,
        hostname: None,
        scan_time: None,
        checker_version: None,
        format: Some("jsonl".to_string()),
        findings,
        warnings,
    }
}

impl ResultParser for JsonLinesParser {
    fn name(&self) -> &'static str {
        "jsonl"
    }

    fn wants_files(&self) -> bool {
        true
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
        if let Some((i, r)) = reports
            .iter()
            .enumerate()
            .find(|(_, r)| r.parsed.status == ReportStatus::Detected)
        {
            let titles: Vec<String> = r
                .parsed
                .findings
                .iter()
                .take(5)
                .map(|f| sanitize::display(&f.title, 80))
                .collect();
            let mut reason = format!(
                "{} finding(s): {}",
                r.parsed.findings.len(),
                titles.join(", ")
            );
            if !r.parsed.warnings.is_empty() {
                reason.push_str(&format!("; {}", r.parsed.warnings.join("; ")));
            }
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
            Some(r) if r.parsed.status == ReportStatus::NotDetected => Verdict {
                class: HostClass::NotDetected,
                reason: "no findings".to_string(),
                primary: Some(0),
            },
            Some(r) => unusable_report_verdict(r, exec),
            None if !problems.is_empty() => no_usable_report_verdict(problems),
            None => {
                let mut reason = format!("no result file found ({})", exit_text(exec));
                if let Some(line) = first_line(&exec.stdout) {
                    reason.push_str(&format!("; stdout: {line}"));
                }
                Verdict {
                    class: HostClass::NoResult,
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

    #[test]
    fn findings_with_their_end_line_are_a_detection() {
        let r = parse(
            br#"{"kind":"process","title":"x.exe","location":"C:\\x.exe","severity":"critical","attributes":{"pid":"7","image":"C:\\x.exe"}}
{"title":"rule A"}
{"end": 2}
"#,
        );
        assert_eq!(r.status, ReportStatus::Detected, "{:?}", r.warnings);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert_eq!(r.findings.len(), 2);
        assert_eq!(r.findings[0].severity, Severity::Critical);
        assert_eq!(r.findings[0].pid(), Some(7));
        assert_eq!(r.processes()[0].image_path, "C:\\x.exe");
        assert_eq!(r.findings[1].kind, "finding");
        assert_eq!(r.findings[1].severity, Severity::High);
        assert_eq!(r.findings[1].identity, "finding|rule A|");
    }

    #[test]
    fn clean_only_with_a_matching_end_line() {
        assert_eq!(parse(b"{\"end\": 0}\n").status, ReportStatus::NotDetected);
        assert_eq!(parse(b"").status, ReportStatus::Unparseable);
        let r = parse(b"{\"end\": 1}\n");
        assert_eq!(r.status, ReportStatus::Unparseable);
        assert!(r.warnings[0].starts_with("incomplete:"), "{:?}", r.warnings);
        let r = parse(b"not json\n{\"end\": 0}\n");
        assert_eq!(
            r.status,
            ReportStatus::Unparseable,
            "a bad line is never clean"
        );
        // A cut file with a finding is still a detection, with the cut said.
        let r = parse(b"{\"title\":\"t\"}\n");
        assert_eq!(r.status, ReportStatus::Detected);
        assert_eq!(r.warnings, ["truncated: no end line"]);
    }
}
