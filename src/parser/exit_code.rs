//! `exit_code`: a checker whose exit code is the verdict (no result files).

use super::{exit_text, first_line, Entry, FetchedReport, ResultParser, Settings, Verdict};
use crate::model::{ExecOutcome, HostClass, ParsedReport};

pub const ENTRY: Entry = Entry {
    name: "exit_code",
    checker: "exit code",
    reads: "the exit code (0 clean, results.detected_exit_codes a detection)",
    attributes: &[],
    build: |s: &Settings| {
        Box::new(ExitCodeParser {
            detected: s.detected_exit_codes.clone(),
        })
    },
};

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
}
