//! Data shared by every stage of the pipeline: the final class of a host, the
//! findings a checker reported, and the parsed form of one report file.
//!
//! These types are the vocabulary of the journal and the reports, so their
//! serialized names (snake_case) are part of pushscan's stable output schema.

use std::collections::BTreeMap;

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

/// How serious a finding is, as its parser rates it. Ordered: `Info` is the least.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Low,
    Medium,
    #[default]
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// Attribute names with a meaning every consumer shares, whichever parser declares them:
/// contain kills [`attr::PID`] (checking it still runs [`attr::IMAGE`]), quarantines
/// [`attr::IMAGE`] (or, for a finding without a process, [`attr::PATH`]) and removes
/// [`attr::RUN_KEY`]; reports show a finding of kind
/// [`PROCESS_KIND`] as a process line. Any other attribute is shown as `name=value`.
pub mod attr {
    /// A file a finding names (a YARA match's scanned file): contain quarantines it.
    pub const PATH: &str = "path";
    /// A process ID (decimal).
    pub const PID: &str = "pid";
    /// The executable file of a process, or the file a finding is about.
    pub const IMAGE: &str = "image";
    /// A registry value that starts the finding again at logon (`HKEY_...\Run\name`).
    pub const RUN_KEY: &str = "run_key";
}

/// The kind of a finding that is a running process (title: the process name; location: its
/// image path; attributes [`attr::PID`], [`attr::IMAGE`], [`attr::RUN_KEY`] where known).
pub const PROCESS_KIND: &str = "process";

/// One thing a checker found on a host: what (kind, title), where (location), how serious,
/// and the named attributes its parser declares. Every string is endpoint-supplied and
/// therefore untrusted: escape before display.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// What sort of finding (`process`, `file`, `rule_match`, ...), chosen by the parser.
    pub kind: String,
    /// What was found, for a person: a process name, a rule name.
    pub title: String,
    /// Where it was found: a path, a registry key, a URL; empty when the report has none.
    pub location: String,
    pub severity: Severity,
    /// Named values the parser declares (sorted by name).
    pub attributes: BTreeMap<String, String>,
    /// The same thing found again in a later sweep has the same identity (the parser decides
    /// what makes two findings the same); what keys "new since the last sweep".
    pub identity: String,
}

impl Finding {
    /// A process finding (see [`PROCESS_KIND`]); its identity is the process name and image
    /// path (a PID changes at every start, a process that keeps coming back is the same).
    pub fn process(
        name: &str,
        pid: Option<u32>,
        image_path: &str,
        run_key: Option<&str>,
        severity: Severity,
    ) -> Finding {
        let mut attributes = BTreeMap::new();
        if let Some(pid) = pid {
            attributes.insert(attr::PID.to_string(), pid.to_string());
        }
        if !image_path.is_empty() {
            attributes.insert(attr::IMAGE.to_string(), image_path.to_string());
        }
        if let Some(k) = run_key {
            attributes.insert(attr::RUN_KEY.to_string(), k.to_string());
        }
        Finding {
            kind: PROCESS_KIND.to_string(),
            title: name.to_string(),
            location: image_path.to_string(),
            severity,
            attributes,
            identity: format!("{PROCESS_KIND}|{name}|{image_path}"),
        }
    }

    /// The attribute `name`, if the parser set it.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).map(String::as_str)
    }

    /// The [`attr::PID`] attribute as a number, when it is one.
    pub fn pid(&self) -> Option<u32> {
        self.attr(attr::PID).and_then(|p| p.trim().parse().ok())
    }

    /// The process this finding describes, for consumers of the process shape (the JSON
    /// `processes` arrays, the process lines of reports): `None` unless its kind is
    /// [`PROCESS_KIND`].
    pub fn as_process(&self) -> Option<Process> {
        if self.kind != PROCESS_KIND {
            return None;
        }
        Some(Process {
            name: self.title.clone(),
            pid: self.pid(),
            image_path: self
                .attr(attr::IMAGE)
                .unwrap_or(self.location.as_str())
                .to_string(),
            registry_key: self.attr(attr::RUN_KEY).map(str::to_string),
        })
    }

    /// The attributes other than the process ones, as `name=value` pairs.
    pub fn other_attributes(&self) -> impl Iterator<Item = (&str, &str)> {
        self.attributes
            .iter()
            .filter(|(k, _)| ![attr::PID, attr::IMAGE, attr::RUN_KEY].contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// The process view of the findings that are processes ([`Finding::as_process`]).
pub fn processes_of(findings: &[Finding]) -> Vec<Process> {
    findings.iter().filter_map(Finding::as_process).collect()
}

/// A finding of kind [`PROCESS_KIND`] seen as a process: the shape reports had before
/// findings were generic, still served in JSON as `processes`. Every field is
/// endpoint-supplied and therefore untrusted: escape before display.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    pub name: String,
    /// `None` when the report's PID field was missing or not a number.
    pub pid: Option<u32>,
    pub image_path: String,
    /// The Run key, when the checker reports one.
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

/// The parsed form of one checker report. Serialized (`pushscan parse --format json`) with
/// `processes`, the process view of its findings, before `findings`, so readers of the
/// process shape keep working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedReport {
    pub status: ReportStatus,
    /// Host name written in the report (JSON) or in its file name.
    pub hostname: Option<String>,
    /// Scan time as written by the checker (`YYYY-MM-DD HH:MM:SS`, host local time).
    pub scan_time: Option<String>,
    pub checker_version: Option<String>,
    /// `en`, `ja`, `fr` for text reports, `json` for JSON reports.
    pub format: Option<String>,
    /// What the checker found, in report order.
    pub findings: Vec<Finding>,
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
            findings: Vec::new(),
            warnings: vec![warning.into()],
        }
    }

    /// The findings that are processes, in the process shape.
    pub fn processes(&self) -> Vec<Process> {
        processes_of(&self.findings)
    }
}

impl Serialize for ParsedReport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            status: ReportStatus,
            hostname: &'a Option<String>,
            scan_time: &'a Option<String>,
            checker_version: &'a Option<String>,
            format: &'a Option<String>,
            processes: Vec<Process>,
            findings: &'a [Finding],
            warnings: &'a [String],
        }
        Wire {
            status: self.status,
            hostname: &self.hostname,
            scan_time: &self.scan_time,
            checker_version: &self.checker_version,
            format: &self.format,
            processes: self.processes(),
            findings: &self.findings,
            warnings: &self.warnings,
        }
        .serialize(s)
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
