//! Result parsers: turn what a checker left behind into a verdict.
//!
//! A parser is a plug-in seam of pushscan (transports and store backends are the others):
//! it says which result files are newest, parses one file, and decides the host's class from
//! the run's outcome and the parsed files. Each parser is one module here, registered by name
//! in [`REGISTRY`]; a playbook names it (`results.parser`), `pushscan parse --parser NAME`
//! reads files with it. Adding a checker is one module plus one line in [`REGISTRY`].

pub mod emocheck;
pub mod exit_code;
pub mod hayabusa;
pub mod jsonl;
pub mod yara_x;

use crate::model::{ExecOutcome, Finding, HostClass, ParsedReport, ReportStatus, Severity};
use crate::sanitize;

/// A fetched result file and its parse.
#[derive(Debug, Clone)]
pub struct FetchedReport {
    pub name: String,
    pub parsed: ParsedReport,
}

/// The decision for one host.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub class: HostClass,
    pub reason: String,
    /// Index into the fetched reports of the one that decided.
    pub primary: Option<usize>,
}

pub trait ResultParser: Send + Sync {
    fn name(&self) -> &'static str;

    /// Whether result files are collected at all.
    fn wants_files(&self) -> bool;

    /// A sort key: larger is newer. Files without one sort oldest.
    fn recency(&self, file_name: &str, mtime: Option<u64>) -> (u8, String);

    fn parse_file(&self, file_name: &str, bytes: &[u8]) -> ParsedReport;

    /// For a checker that prints its results on standard output: the name its output is
    /// journaled under as a report (ahead of any result file). The engine then keeps standard
    /// output up to `results.max_file_size` instead of the few KiB kept for reasons.
    fn reads_stdout(&self) -> Option<&'static str> {
        None
    }

    /// The report of the run's standard output (see [`ResultParser::reads_stdout`]); it may
    /// use the rest of the run (exit status, standard error, cut output).
    fn parse_stdout(&self, exec: &ExecOutcome) -> ParsedReport {
        self.parse_file(self.reads_stdout().unwrap_or("stdout"), &exec.stdout)
    }

    /// `reports` are this run's files, newest first. `fetch_problems`
    /// explains candidate files that could not be fetched (too big, symlink).
    fn verdict(
        &self,
        exec: &ExecOutcome,
        reports: &[FetchedReport],
        fetch_problems: &[String],
    ) -> Verdict;
}

/// What a playbook's `results:` section tells a parser beyond its name.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Exit codes meaning "detected", for parsers that judge by the exit code.
    pub detected_exit_codes: Vec<i64>,
    /// The least severity that is a detection, for parsers whose lines carry a level
    /// (`hayabusa`); `None`: the parser's default.
    pub min_level: Option<Severity>,
    /// Which fields of a vendor's JSON lines are the finding (`jsonl`); `None`: pushscan's
    /// own JSON-lines shape.
    pub fields: Option<jsonl::FieldMap>,
    /// The checker prints its results on standard output instead of writing files (`jsonl`).
    pub stdout: bool,
}

/// The first report that holds a detection, with its index.
fn first_detected(reports: &[FetchedReport]) -> Option<(usize, &FetchedReport)> {
    reports
        .iter()
        .enumerate()
        .find(|(_, r)| r.parsed.status == ReportStatus::Detected)
}

/// The verdict for a detection in report `i` (`r`): `reason`, then the report's warnings.
fn detected_verdict(i: usize, mut reason: String, r: &FetchedReport) -> Verdict {
    if !r.parsed.warnings.is_empty() {
        reason.push_str(&format!("; {}", r.parsed.warnings.join("; ")));
    }
    Verdict {
        class: HostClass::Detected,
        reason,
        primary: Some(i),
    }
}

/// Warnings kept per report by the parsers of JSON lines.
const MAX_WARNINGS: usize = 32;

/// Adds a warning to a report unless it has [`MAX_WARNINGS`] already.
fn warn(warnings: &mut Vec<String>, w: String) {
    if warnings.len() < MAX_WARNINGS {
        warnings.push(w);
    }
}

/// The part of a checker's output of lines that a parser reads: its first `max` bytes, and
/// whether the output is whole (not cut at `max`, its last line ended). Each cut is a
/// warning: "truncated: `beyond` ignored" (e.g. "output beyond 64 MiB") or "truncated: the
/// last line has no end". A parser never reads a cut output as clean.
fn whole_lines<'a>(
    bytes: &'a [u8],
    max: usize,
    beyond: &str,
    warnings: &mut Vec<String>,
) -> (&'a [u8], bool) {
    let mut whole = true;
    if bytes.len() > max {
        warn(warnings, format!("truncated: {beyond} ignored"));
        whole = false;
    }
    let bytes = bytes.get(..max).unwrap_or(bytes);
    if !bytes.is_empty() && !bytes.ends_with(b"\n") {
        warn(warnings, "truncated: the last line has no end".to_string());
        whole = false;
    }
    (bytes, whole)
}

/// A report of findings read from lines: detected when there is one, clean only when the
/// output was whole and read to its end, unparseable otherwise.
fn lines_status(findings: &[Finding], complete: bool) -> ReportStatus {
    if !findings.is_empty() {
        ReportStatus::Detected
    } else if complete {
        ReportStatus::NotDetected
    } else {
        ReportStatus::Unparseable
    }
}

/// A registered parser: its name in playbooks and on the command line, one line on what it
/// reads, the finding attributes it sets, and how to build it from a playbook's settings.
pub struct Entry {
    pub name: &'static str,
    /// The checker's name for people (reports, alerts).
    pub checker: &'static str,
    pub reads: &'static str,
    /// The attribute names its findings carry (`model::attr` names the ones contain acts on).
    pub attributes: &'static [&'static str],
    pub build: fn(&Settings) -> Box<dyn ResultParser>,
}

/// Every parser pushscan knows, by name.
pub const REGISTRY: &[Entry] = &[
    emocheck::ENTRY,
    exit_code::ENTRY,
    hayabusa::ENTRY,
    jsonl::ENTRY,
    yara_x::ENTRY,
];

/// The parser registered as `name`.
pub fn by_name(name: &str) -> Option<&'static Entry> {
    REGISTRY.iter().find(|e| e.name == name)
}

/// The checker's name for people of the parser registered as `name` (the name itself when
/// it is not registered, e.g. read from an older journal).
pub fn checker_name(name: &str) -> &str {
    by_name(name).map_or(name, |e| e.checker)
}

/// The registered names, for error messages and help.
pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|e| e.name).collect()
}

/// Builds the parser `name` with `settings`; an unknown name says which ones exist.
pub fn build(name: &str, settings: &Settings) -> Result<Box<dyn ResultParser>, String> {
    by_name(name)
        .map(|e| (e.build)(settings))
        .ok_or_else(|| unknown(name))
}

/// The message for a parser name that is not registered.
pub fn unknown(name: &str) -> String {
    format!(
        "unknown parser {:?} (known: {})",
        sanitize::display(name, 60),
        names().join(", ")
    )
}

fn exit_text(exec: &ExecOutcome) -> String {
    match (&exec.exit_signal, exec.exit_code) {
        (Some(sig), _) => format!("killed by {sig}"),
        (None, Some(c)) => format!("exit {c}"),
        (None, None) => "no exit status".to_string(),
    }
}

/// The verdicts every report-reading parser gives alike, whatever its findings: the checker
/// outlived its timeout without a detection; its first report is unusable; no report was
/// usable at all.
fn timed_out_verdict() -> Verdict {
    Verdict {
        class: HostClass::Timeout,
        reason: "checker still running at the timeout; it was killed".to_string(),
        primary: None,
    }
}

fn unusable_report_verdict(r: &FetchedReport, exec: &ExecOutcome) -> Verdict {
    Verdict {
        class: HostClass::CheckerFailed,
        reason: format!(
            "report {} is unusable ({}); {}",
            sanitize::display(&r.name, 120),
            r.parsed.warnings.join("; "),
            exit_text(exec)
        ),
        primary: Some(0),
    }
}

fn no_usable_report_verdict(problems: &[String]) -> Verdict {
    Verdict {
        class: HostClass::CheckerFailed,
        reason: format!("no usable report: {}", problems.join("; ")),
        primary: None,
    }
}

/// First non-empty line of output, escaped, for reasons.
fn first_line(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| sanitize::display(l, 160))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_parser_is_found_by_its_own_name() {
        for e in REGISTRY {
            let p = build(e.name, &Settings::default()).expect("registered");
            assert_eq!(p.name(), e.name);
        }
        assert_eq!(
            names(),
            ["emocheck", "exit_code", "hayabusa", "jsonl", "yara_x"]
        );
        let err = build("yara", &Settings::default()).err().expect("unknown");
        assert!(
            err.contains("known: emocheck, exit_code, hayabusa, jsonl, yara_x"),
            "{err}"
        );
    }
}
