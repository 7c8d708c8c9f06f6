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
//!
//! A vendor's IOC tool that prints its own JSON lines is read through a field map, the
//! playbook's `results.fields` ([`FieldMap`]): which field is the finding's title (required),
//! its severity, its location, its kind and its identity, and which fields to keep as
//! attributes; a field is named by its key, or a dotted path (`rule.name`) into nested
//! objects. Every line with the title field is a finding; a line without it is counted,
//! not a finding. Such tools write no end line, so with a field map the file is clean only
//! when the checker exited 0, the file ends with a line end and every line is a JSON
//! object.

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
    detected_verdict, exit_text, first_detected, first_line, lines_status,
    no_usable_report_verdict, timed_out_verdict, unusable_report_verdict, warn, whole_lines, Entry,
    FetchedReport, ResultParser, Verdict,
};
use crate::model::{ExecOutcome, Finding, HostClass, ParsedReport, ReportStatus, Severity};
use crate::sanitize;

pub const ENTRY: Entry = Entry {
    name: "jsonl",
    checker: "JSON lines",
    reads: "JSON lines, one finding per line, ending {\"end\": N}; or a vendor's JSON lines through results.fields",
    attributes: &[],
    build: |s| {
        Box::new(JsonLinesParser {
            fields: s.fields.clone(),
            stdout: s.stdout,
        })
    },
};

/// Which fields of a vendor's JSON lines make a finding (a playbook's `results.fields`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMap {
    /// The field holding what was found (a rule, an IOC name); lines without it are skipped.
    pub title: String,
    /// The field holding the severity (`info`/`informational`, `low`, `medium`/`med`,
    /// `high`, `critical`/`crit`, or a 0-100 score); without it every finding is high.
    #[serde(default)]
    pub severity: Option<String>,
    /// The field holding where it was found (a path, a key, an address).
    #[serde(default)]
    pub location: Option<String>,
    /// The field holding the finding's kind; without it `finding`.
    #[serde(default)]
    pub kind: Option<String>,
    /// The fields whose values together identify the finding across sweeps; without it the
    /// title and the location.
    #[serde(default)]
    pub identity: Vec<String>,
    /// The fields kept as attributes (under their own names); without it every top-level
    /// field that is a string, number or boolean. Map one to `path`, `image` or `pid` by
    /// naming it so in the tool's output for contain to act on it.
    #[serde(default)]
    pub attributes: Option<Vec<String>>,
}

/// Only this much of a file is read.
const MAX_INPUT: usize = 4 * 1024 * 1024;
/// Findings kept per file.
const MAX_FINDINGS: usize = 10_000;
/// Attributes kept per finding.
const MAX_ATTRIBUTES: usize = 64;
/// Characters kept per string (title, location, attribute value ...).
const MAX_FIELD: usize = 32 * 1024;

/// JSON lines of findings (see the module's documentation).
pub struct JsonLinesParser {
    /// A vendor's field map; `None`: pushscan's own shape with its end line.
    pub fields: Option<FieldMap>,
    /// The lines come on the checker's standard output (`results.stdout`), not in files.
    pub stdout: bool,
}

/// The name standard output is journaled under with `results.stdout`.
pub const STDOUT_NAME: &str = "stdout.jsonl";

/// The value at `path` (a key, or keys joined with `.` into nested objects); a key that
/// itself holds a dot is found too.
fn lookup<'a>(obj: &'a serde_json::Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = obj.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut cur = obj.get(parts.next()?)?;
    for p in parts {
        cur = cur.as_object()?.get(p)?;
    }
    Some(cur)
}

/// A scalar (or a list of them) as text, capped.
fn scalar_text(v: &Value) -> Option<String> {
    let s = match v {
        Value::String(s) => s.chars().take(MAX_FIELD).collect(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().take(64).filter_map(scalar_text).collect();
            parts.join(", ").chars().take(MAX_FIELD).collect()
        }
        _ => return None,
    };
    Some(s)
}

/// A severity as vendors write it: a level name (full or abbreviated) or a 0-100 score.
fn vendor_severity(v: &str) -> Option<Severity> {
    if let Some(s) = super::hayabusa::level(v) {
        return Some(s);
    }
    let n: f64 = v.trim().parse().ok()?;
    Some(match n {
        n if n < 40.0 => Severity::Low,
        n if n < 70.0 => Severity::Medium,
        n if n < 90.0 => Severity::High,
        _ => Severity::Critical,
    })
}

/// One line through a field map: a finding, `Ok(None)` for a line without the title field.
fn mapped_finding(
    map: &FieldMap,
    obj: &serde_json::Map<String, Value>,
    warnings: &mut Vec<String>,
    line: usize,
) -> Option<Finding> {
    let get = |f: &str| {
        lookup(obj, f)
            .and_then(scalar_text)
            .filter(|s| !s.is_empty())
    };
    let title = get(&map.title)?;
    let location = map.location.as_deref().and_then(get).unwrap_or_default();
    let kind = map
        .kind
        .as_deref()
        .and_then(get)
        .map(|k| k.chars().take(64).collect())
        .unwrap_or_else(|| "finding".to_string());
    let severity = match map.severity.as_deref().and_then(get) {
        None => Severity::High,
        Some(s) => vendor_severity(&s).unwrap_or_else(|| {
            warn(
                warnings,
                format!(
                    "line {line}: unknown severity {:?}, read as high",
                    sanitize::display(&s, 40)
                ),
            );
            Severity::High
        }),
    };
    let mut attributes = BTreeMap::new();
    match &map.attributes {
        Some(names) => {
            for n in names.iter().take(MAX_ATTRIBUTES) {
                if let Some(v) = get(n) {
                    attributes.insert(n.chars().take(64).collect(), v);
                }
            }
        }
        None => {
            for (k, v) in obj.iter() {
                if attributes.len() >= MAX_ATTRIBUTES {
                    break;
                }
                if matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
                    if let Some(v) = scalar_text(v) {
                        attributes.insert(k.chars().take(64).collect(), v);
                    }
                }
            }
        }
    }
    let identity = if map.identity.is_empty() {
        format!("{kind}|{title}|{location}")
    } else {
        let parts: Vec<String> = map
            .identity
            .iter()
            .map(|f| get(f).unwrap_or_default())
            .collect();
        format!("{kind}|{}", parts.join("|"))
    };
    Some(Finding {
        kind,
        title,
        location,
        severity,
        attributes,
        identity,
    })
}

/// Parses a vendor's JSON lines through `map`. Never panics, whatever the bytes.
pub fn parse_mapped(bytes: &[u8], map: &FieldMap) -> ParsedReport {
    let mut warnings = Vec::new();
    let (bytes, mut complete) = whole_lines(bytes, MAX_INPUT, "input beyond 4 MiB", &mut warnings);
    let mut findings = Vec::new();
    let (mut lines, mut other, mut dropped) = (0u64, 0u64, 0u64);
    for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let line = i + 1;
        let raw = raw.trim_ascii();
        if raw.is_empty() {
            continue;
        }
        let obj = match serde_json::from_slice::<Value>(raw) {
            Ok(Value::Object(o)) => o,
            _ => {
                warn(&mut warnings, format!("line {line}: not a JSON object"));
                complete = false;
                continue;
            }
        };
        lines += 1;
        match mapped_finding(map, &obj, &mut warnings, line) {
            Some(_) if findings.len() >= MAX_FINDINGS => dropped += 1,
            Some(f) => findings.push(f),
            None => other += 1,
        }
    }
    if dropped > 0 {
        warn(
            &mut warnings,
            format!("truncated: {dropped} finding(s) beyond {MAX_FINDINGS} ignored"),
        );
    }
    let status = lines_status(&findings, complete);
    ParsedReport {
        status,
        hostname: None,
        scan_time: None,
        checker_version: None,
        format: Some(format!(
            "jsonl, mapped ({lines} line(s), {other} without {:?})",
            sanitize::display(&map.title, 40)
        )),
        findings,
        warnings,
    }
}

/// A string field, capped at [`MAX_FIELD`] characters.
fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .map(|s| s.chars().take(MAX_FIELD).collect())
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
    let status = lines_status(&findings, complete);
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
        !self.stdout
    }

    fn reads_stdout(&self) -> Option<&'static str> {
        self.stdout.then_some(STDOUT_NAME)
    }

    fn parse_stdout(&self, exec: &ExecOutcome) -> ParsedReport {
        let mut r = self.parse_file(STDOUT_NAME, &exec.stdout);
        // Output cut at the cap may end exactly at a line end: say so, and never call it clean.
        if exec.truncated_bytes > 0 {
            warn(
                &mut r.warnings,
                format!(
                    "truncated: {} byte(s) of output beyond the cap dropped",
                    exec.truncated_bytes
                ),
            );
            if r.status == ReportStatus::NotDetected {
                r.status = ReportStatus::Unparseable;
            }
        }
        r
    }

    fn recency(&self, _file_name: &str, mtime: Option<u64>) -> (u8, String) {
        (0, format!("{:020}", mtime.unwrap_or(0)))
    }

    fn parse_file(&self, _file_name: &str, bytes: &[u8]) -> ParsedReport {
        match &self.fields {
            Some(map) => parse_mapped(bytes, map),
            None => parse(bytes),
        }
    }

    fn verdict(
        &self,
        exec: &ExecOutcome,
        reports: &[FetchedReport],
        problems: &[String],
    ) -> Verdict {
        if let Some((i, r)) = first_detected(reports) {
            let titles: Vec<String> = r
                .parsed
                .findings
                .iter()
                .take(5)
                .map(|f| sanitize::display(&f.title, 80))
                .collect();
            let reason = format!(
                "{} finding(s): {}",
                r.parsed.findings.len(),
                titles.join(", ")
            );
            return detected_verdict(i, reason, r);
        }
        if exec.timed_out {
            return timed_out_verdict();
        }
        // Without an end line (a vendor's lines) only the checker's own exit says it finished.
        let finished =
            self.fields.is_none() || (exec.exit_signal.is_none() && exec.exit_code == Some(0));
        match reports.first() {
            Some(r) if r.parsed.status == ReportStatus::NotDetected && finished => Verdict {
                class: HostClass::NotDetected,
                reason: "no findings".to_string(),
                primary: Some(0),
            },
            Some(r) if r.parsed.status == ReportStatus::NotDetected => Verdict {
                class: HostClass::CheckerFailed,
                reason: format!(
                    "{} not trusted as clean: the checker ended with {}",
                    sanitize::display(&r.name, 120),
                    exit_text(exec)
                ),
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

    fn vendor_map() -> FieldMap {
        FieldMap {
            title: "ioc.name".into(),
            severity: Some("risk".into()),
            location: Some("file".into()),
            kind: None,
            identity: vec!["ioc.name".into(), "file".into()],
            attributes: None,
        }
    }

    #[test]
    fn vendor_lines_through_a_field_map() {
        let out = br#"{"ioc":{"name":"CobaltStrike beacon"},"risk":"crit","file":"C:\\a.dll","path":"C:\\a.dll","sha1":"aa"}
{"event":"scan_progress","done":50}
{"ioc":{"name":"Webshell"},"risk":85,"file":"/var/www/x.php"}
"#;
        let r = parse_mapped(out, &vendor_map());
        assert_eq!(r.status, ReportStatus::Detected, "{:?}", r.warnings);
        assert_eq!(r.findings.len(), 2, "the progress line is not a finding");
        let f = &r.findings[0];
        assert_eq!(f.title, "CobaltStrike beacon");
        assert_eq!(f.severity, Severity::Critical);
        assert_eq!(f.location, "C:\\a.dll");
        assert_eq!(f.identity, "finding|CobaltStrike beacon|C:\\a.dll");
        assert_eq!(f.attr("path"), Some("C:\\a.dll"));
        assert_eq!(f.attr("sha1"), Some("aa"));
        assert_eq!(r.findings[1].severity, Severity::High, "score 85");
        assert_eq!(
            r.format.as_deref(),
            Some("jsonl, mapped (3 line(s), 1 without \"ioc.name\")")
        );
        // Clean only when the tool exited 0 and the last line is whole.
        let p = JsonLinesParser {
            fields: Some(vendor_map()),
            stdout: false,
        };
        let clean = FetchedReport {
            name: "ioc.jsonl".into(),
            parsed: p.parse_file("ioc.jsonl", b"{\"event\":\"done\"}\n"),
        };
        let ok = ExecOutcome {
            exit_code: Some(0),
            ..Default::default()
        };
        let failed = ExecOutcome {
            exit_code: Some(2),
            ..Default::default()
        };
        let v = p.verdict(&ok, std::slice::from_ref(&clean), &[]);
        assert_eq!(v.class, HostClass::NotDetected, "{}", v.reason);
        let v = p.verdict(&failed, &[clean], &[]);
        assert_eq!(v.class, HostClass::CheckerFailed, "{}", v.reason);
        assert_eq!(
            parse_mapped(b"{\"event\":\"do", &vendor_map()).status,
            ReportStatus::Unparseable
        );
        // The default shape is untouched by a parser without a map.
        let own = JsonLinesParser {
            fields: None,
            stdout: false,
        };
        assert_eq!(
            own.parse_file("x", b"{\"end\": 0}\n").status,
            ReportStatus::NotDetected
        );
    }

    #[test]
    fn vendor_lines_on_standard_output() {
        let p = JsonLinesParser {
            fields: Some(vendor_map()),
            stdout: true,
        };
        assert!(!p.wants_files());
        assert_eq!(p.reads_stdout(), Some(STDOUT_NAME));
        let mut exec = ExecOutcome {
            exit_code: Some(0),
            stdout: b"{\"ioc\":{\"name\":\"X\"},\"file\":\"/x\"}\n".to_vec(),
            ..Default::default()
        };
        let r = p.parse_stdout(&exec);
        assert_eq!(r.status, ReportStatus::Detected);
        assert_eq!(r.findings[0].identity, "finding|X|/x");
        // Clean output cut at the cap is not clean.
        exec.stdout = b"{\"event\":\"progress\"}\n".to_vec();
        assert_eq!(p.parse_stdout(&exec).status, ReportStatus::NotDetected);
        exec.truncated_bytes = 5;
        let r = p.parse_stdout(&exec);
        assert_eq!(r.status, ReportStatus::Unparseable);
        assert!(
            r.warnings[0].starts_with("truncated: 5 byte(s)"),
            "{:?}",
            r.warnings
        );
    }
}
