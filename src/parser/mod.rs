//! Result parsers: turn what a checker left behind into a verdict.
//!
//! A parser is the second plug-in seam of pushscan (transports are the
//! first): it says which result files are newest, parses one file, and
//! decides the host's class from the run's outcome and the parsed files.
//! Adding a checker is adding a module here.

pub mod emocheck;

use crate::model::{HostClass, ParsedReport, ReportStatus};
use crate::playbook::{ParserKind, Results};
use crate::sanitize;
use crate::transport::ExecOutcome;

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

    /// `reports` are this run's files, newest first. `fetch_problems`
    /// explains candidate files that could not be fetched (too big, symlink).
    fn verdict(
        &self,
        exec: &ExecOutcome,
        reports: &[FetchedReport],
        fetch_problems: &[String],
    ) -> Verdict;
}

/// The parser a playbook asks for.
pub fn for_playbook(results: &Results) -> Box<dyn ResultParser> {
    match results.parser {
        ParserKind::Emocheck => Box::new(EmoCheckParser),
        ParserKind::ExitCode => Box::new(ExitCodeParser {
            detected: results.detected_exit_codes.clone(),
        }),
    }
}

fn exit_text(exec: &ExecOutcome) -> String {
    match (&exec.exit_signal, exec.exit_code) {
        (Some(sig), _) => format!("killed by {sig}"),
        (None, Some(c)) => format!("exit {c}"),
        (None, None) => "no exit status".to_string(),
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

/// EmoCheck: the newest report written during this run decides.
pub struct EmoCheckParser;

impl ResultParser for EmoCheckParser {
    fn name(&self) -> &'static str {
        "emocheck"
    }

    fn wants_files(&self) -> bool {
        true
    }

    fn recency(&self, file_name: &str, mtime: Option<u64>) -> (u8, String) {
        match emocheck::name_stamp(file_name) {
            Some((_, stamp)) => (1, stamp),
            None => (0, format!("{:020}", mtime.unwrap_or(0))),
        }
    }

    fn parse_file(&self, file_name: &str, bytes: &[u8]) -> ParsedReport {
        emocheck::parse(file_name, bytes)
    }

    fn verdict(
        &self,
        exec: &ExecOutcome,
        reports: &[FetchedReport],
        problems: &[String],
    ) -> Verdict {
        let detected = reports
            .iter()
            .position(|r| r.parsed.status == ReportStatus::Detected);
        if let Some(i) = detected {
            let r = &reports[i];
            let names: Vec<String> = r
                .parsed
                .processes
                .iter()
                .map(|p| match p.pid {
                    Some(pid) => format!("{} (PID {pid})", sanitize::display(&p.name, 80)),
                    None => sanitize::display(&p.name, 80),
                })
                .collect();
            let mut reason = if names.is_empty() {
                "Emotet detected (no process details in report)".to_string()
            } else {
                format!("Emotet detected: {}", names.join(", "))
            };
            if exec.timed_out || exec.crashed() {
                reason.push_str(&format!(
                    "; checker did not end cleanly ({})",
                    end_text(exec)
                ));
            }
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
            return Verdict {
                class: HostClass::Timeout,
                reason: "checker still running at the timeout; it was killed".to_string(),
                primary: None,
            };
        }
        match reports.first() {
            Some(r) if r.parsed.status == ReportStatus::NotDetected => {
                let mut reason = "Emotet was not detected".to_string();
                if exec.crashed() {
                    reason.push_str(&format!(
                        " (checker then ended abnormally: {})",
                        exit_text(exec)
                    ));
                }
                Verdict {
                    class: HostClass::NotDetected,
                    reason,
                    primary: Some(0),
                }
            }
            Some(r) => Verdict {
                class: HostClass::CheckerFailed,
                reason: format!(
                    "report {} is unusable ({}); {}",
                    sanitize::display(&r.name, 120),
                    r.parsed.warnings.join("; "),
                    exit_text(exec)
                ),
                primary: Some(0),
            },
            None if !problems.is_empty() => Verdict {
                class: HostClass::CheckerFailed,
                reason: format!("no usable report: {}", problems.join("; ")),
                primary: None,
            },
            None if exec.crashed() => Verdict {
                class: HostClass::CheckerFailed,
                reason: format!("checker crashed ({}) and left no report", exit_text(exec)),
                primary: None,
            },
            None => {
                let mut reason = format!("No EmoCheck result found ({})", exit_text(exec));
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

fn end_text(exec: &ExecOutcome) -> String {
    if exec.timed_out {
        "timed out and killed".to_string()
    } else {
        exit_text(exec)
    }
}

/// A checker whose exit code is the verdict: 0 clean, one of `detected`
/// a finding, anything else a failure. Stdout's first line is the reason.
pub struct ExitCodeParser {
    pub detected: Vec<i64>,
}

impl ResultParser for ExitCodeParser {
    fn name(&self) -> &'static str {
        "exit_code"
    }

    fn wants_files(&self) -> bool {
        false
    }

    fn recency(&self, _file_name: &str, mtime: Option<u64>) -> (u8, String) {
        (0, format!("{:020}", mtime.unwrap_or(0)))
    }

    fn parse_file(&self, _file_name: &str, _bytes: &[u8]) -> ParsedReport {
        ParsedReport::unparseable("the exit_code parser reads no files")
    }

    fn verdict(
        &self,
        exec: &ExecOutcome,
        _reports: &[FetchedReport],
        _problems: &[String],
    ) -> Verdict {
        let out = first_line(&exec.stdout).unwrap_or_default();
        let with_out = |base: String| {
            if out.is_empty() {
                base
            } else {
                format!("{base}: {out}")
            }
        };
        let (class, reason) = if exec.timed_out {
            (
                HostClass::Timeout,
                "checker still running at the timeout; killed".to_string(),
            )
        } else {
            match exec.exit_code {
                Some(0) if exec.exit_signal.is_none() => {
                    (HostClass::NotDetected, with_out("exit 0".into()))
                }
                Some(c) if exec.exit_signal.is_none() && self.detected.contains(&c) => {
                    (HostClass::Detected, with_out(format!("exit {c}")))
                }
                _ => (HostClass::CheckerFailed, with_out(exit_text(exec))),
            }
        };
        Verdict {
            class,
            reason,
            primary: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(code: i64) -> ExecOutcome {
        ExecOutcome {
            exit_code: Some(code),
            ..Default::default()
        }
    }

    #[test]
    fn exit_code_parser_classes() {
        let p = ExitCodeParser {
            detected: vec![1, 3],
        };
        assert_eq!(p.verdict(&exec(0), &[], &[]).class, HostClass::NotDetected);
        assert_eq!(p.verdict(&exec(3), &[], &[]).class, HostClass::Detected);
        assert_eq!(
            p.verdict(&exec(2), &[], &[]).class,
            HostClass::CheckerFailed
        );
        let t = ExecOutcome {
            timed_out: true,
            ..Default::default()
        };
        assert_eq!(p.verdict(&t, &[], &[]).class, HostClass::Timeout);
    }

    #[test]
    fn emocheck_without_report_is_no_result_or_failure() {
        let p = EmoCheckParser;
        assert_eq!(p.verdict(&exec(0), &[], &[]).class, HostClass::NoResult);
        assert_eq!(
            p.verdict(&exec(139), &[], &[]).class,
            HostClass::CheckerFailed
        );
        let v = p.verdict(&exec(0), &[], &["x is too big".into()]);
        assert_eq!(v.class, HostClass::CheckerFailed);
        assert!(v.reason.contains("too big"));
    }

    #[test]
    fn unparseable_report_is_never_clean() {
        let p = EmoCheckParser;
        let r = FetchedReport {
            name: "a_emocheck.txt".into(),
            parsed: ParsedReport::unparseable("truncated: no verdict"),
        };
        let v = p.verdict(&exec(0), &[r], &[]);
        assert_eq!(v.class, HostClass::CheckerFailed);
        assert!(v.reason.contains("truncated"));
    }
}
