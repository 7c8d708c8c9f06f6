//! Data shared by every stage of the pipeline: the final class of a host, the
//! processes a checker reported, and the parsed form of one report file.
//!
//! These types are the vocabulary of the journal and the reports, so their
//! serialized names (snake_case) are part of pushscan's stable output schema.

use serde::{Deserialize, Serialize};

/// The one class every targeted host ends in. The order is the order of
/// severity used to sort reports: findings first, then hosts we could not
/// check, then clean hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostClass {
    /// The checker ran and reported a finding.
    Detected,
    /// The checker ran but left no report ("No EmoCheck result found").
    NoResult,
    /// No TCP connection could be made (refused, no route, connect timeout).
    Unreachable,
    /// The host refused our credentials.
    AuthFailed,
    /// The host's SSH key is unknown or changed (never trusted silently).
    HostKeyRejected,
    /// The checker did not finish within the playbook's timeout.
    Timeout,
    /// The checker ran but failed: crashed, bad exit code, unusable report.
    CheckerFailed,
    /// Anything else that went wrong on our side or in a transfer.
    Error,
    /// Another sweep held this host's lease: it was not touched.
    Busy,
    /// The sweep stopped (interrupt, halt) before this host was started.
    NotStarted,
    /// The checker ran and found nothing.
    NotDetected,
}

impl HostClass {
    pub const ALL: [HostClass; 11] = [
        HostClass::Detected,
        HostClass::NoResult,
        HostClass::Unreachable,
        HostClass::AuthFailed,
        HostClass::HostKeyRejected,
        HostClass::Timeout,
        HostClass::CheckerFailed,
        HostClass::Error,
        HostClass::Busy,
        HostClass::NotStarted,
        HostClass::NotDetected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HostClass::Detected => "detected",
            HostClass::NotDetected => "not_detected",
            HostClass::NoResult => "no_result",
            HostClass::Unreachable => "unreachable",
            HostClass::AuthFailed => "auth_failed",
            HostClass::HostKeyRejected => "host_key_rejected",
            HostClass::Timeout => "timeout",
            HostClass::CheckerFailed => "checker_failed",
            HostClass::Error => "error",
            HostClass::Busy => "busy",
            HostClass::NotStarted => "not_started",
        }
    }

    pub fn parse(s: &str) -> Option<HostClass> {
        HostClass::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// True when the checker ran to a verdict on the host (clean or not).
    pub fn is_checked(self) -> bool {
        matches!(self, HostClass::Detected | HostClass::NotDetected)
    }
}

impl std::fmt::Display for HostClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One suspicious process as reported by a checker. Every field is
/// endpoint-supplied and therefore untrusted: escape before display.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    pub name: String,
    /// `None` when the report's PID field was missing or not a number.
    pub pid: Option<u32>,
    pub image_path: String,
    /// The Run key (EmoCheck v2.0+); `None` for older reports.
    pub registry_key: Option<String>,
}

impl Process {
    /// The PID for a person to read: `?` when the report had none.
    pub fn pid_text(&self) -> String {
        self.pid
            .map(|x| x.to_string())
            .unwrap_or_else(|| "?".into())
    }

    /// The image path for a person to read: `?` when the report had none.
    pub fn image_text(&self) -> &str {
        if self.image_path.is_empty() {
            "?"
        } else {
            &self.image_path
        }
    }
}

/// What one report file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportStatus {
    Detected,
    NotDetected,
    /// Not a report we understand, or cut short before its verdict. Never
    /// read as clean.
    Unparseable,
}

impl ReportStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportStatus::Detected => "detected",
            ReportStatus::NotDetected => "not_detected",
            ReportStatus::Unparseable => "unparseable",
        }
    }
}

/// The parsed form of one checker report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParsedReport {
    pub status: ReportStatus,
    /// Host name written in the report (JSON) or in its file name.
    pub hostname: Option<String>,
    /// Scan time as written by the checker (`YYYY-MM-DD HH:MM:SS`, host local time).
    pub scan_time: Option<String>,
    pub checker_version: Option<String>,
    /// `en`, `ja`, `fr` for text reports, `json` for JSON reports.
    pub format: Option<String>,
    pub processes: Vec<Process>,
    /// Anything odd noticed while parsing (recovered JSON, undecodable bytes,
    /// missing verdict, ...). Shown to the operator as the reason.
    pub warnings: Vec<String>,
}

impl ParsedReport {
    pub fn unparseable(warning: impl Into<String>) -> ParsedReport {
        ParsedReport {
            status: ReportStatus::Unparseable,
            hostname: None,
            scan_time: None,
            checker_version: None,
            format: None,
            processes: Vec::new(),
            warnings: vec![warning.into()],
        }
    }
}

/// How a command ended.
#[derive(Debug, Clone, Default)]
pub struct ExecOutcome {
    /// Exit code, when the process exited normally.
    pub exit_code: Option<i64>,
    /// Signal name, when the process was killed by one.
    pub exit_signal: Option<String>,
    /// The command ran past its timeout and was killed.
    pub timed_out: bool,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Bytes dropped beyond `output_cap` (stdout + stderr).
    pub truncated_bytes: u64,
    /// The host's clock (seconds since the epoch) when the command started,
    /// where the transport can tell: files modified since then are this
    /// run's even when a rewrite kept their name, size and (second-grained)
    /// mtime.
    pub started_at: Option<u64>,
}

impl ExecOutcome {
    /// A crash rather than an exit: killed by a signal, a shell's 128+N, or a
    /// Windows NTSTATUS error code (0xC0000000 and up).
    pub fn crashed(&self) -> bool {
        self.exit_signal.is_some()
            || matches!(self.exit_code, Some(c) if (128..256).contains(&c) || !(0..0xC000_0000).contains(&c))
    }
}
