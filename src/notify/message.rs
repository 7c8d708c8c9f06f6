//! What an alert says, independent of the channel that carries it.
//!
//! One [`Alert`] is built per run and channel from the run's report (the
//! journal): the hosts to name, the run, and where the full report is. Mail
//! renders it as a subject and a plain-text body, webhooks as JSON. Every
//! string a host supplied (process names, image paths, run keys, report file
//! names) is hostile: in text it is escaped like on the terminal (controls
//! shown as `\x1b`, lines capped), in JSON it is carried verbatim, JSON-encoded,
//! and in Slack/Teams text it additionally sits in code spans with their
//! markup characters neutralised.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use crate::report::{HostEntry, RunReport};
use crate::sanitize::display;

/// A file holding the run's full report, to point at and to attach: the
/// run's HTML report (or the JSON one the operator asked for); see
/// `app::alert_report_file`.
#[derive(Debug, Clone)]
pub struct ReportFile {
    pub path: PathBuf,
    pub content_type: String,
}

/// Why a message is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// New detections (maybe with a summary of hosts not checked).
    NewDetection,
    /// No new detection, but the run ended incomplete or halted.
    Incomplete,
    /// `pushscan notify test`.
    Test,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::NewDetection => "new_detection",
            Kind::Incomplete => "incomplete",
            Kind::Test => "test",
        }
    }
}

/// One message, before rendering.
#[derive(Debug, Clone)]
pub struct Alert {
    pub kind: Kind,
    /// The hosts alerted on, with their change (`new_detection`,
    /// `first_check`, `still_detected`).
    pub detections: Vec<HostEntry>,
    /// Hosts of the run not successfully checked (status, reason).
    pub not_checked: Vec<HostEntry>,
    /// Whether the run is incomplete (halted, interrupted, hosts not checked).
    pub incomplete: bool,
    /// List the hosts not checked in a detection alert too (`on: [incomplete]`).
    pub show_not_checked: bool,
    pub run: Option<RunSummary>,
    pub where_: Where,
}

/// The run, as an alert shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub id: i64,
    pub status: String,
    pub exit_code: Option<i64>,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub playbook: Option<String>,
    pub controller: Option<String>,
    pub operator: Option<String>,
    pub hosts: usize,
    pub counts: std::collections::BTreeMap<String, usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub halt_reason: Option<String>,
}

/// Where the full report is.
#[derive(Debug, Clone, Serialize)]
pub struct Where {
    pub state_dir: String,
    pub journal: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    pub controller: String,
}

/// Whether a host of the run was successfully checked.
pub fn checked(h: &HostEntry) -> bool {
    matches!(h.status.as_str(), "detected" | "not_detected")
}

/// Whether the run needs an `incomplete` summary.
pub fn run_incomplete(r: &RunReport) -> bool {
    r.run.info.status != "finished" || r.hosts.iter().any(|h| !checked(h))
}

impl Alert {
    pub fn for_run(
        kind: Kind,
        rep: &RunReport,
        detections: Vec<HostEntry>,
        state_dir: &std::path::Path,
        report_file: Option<&ReportFile>,
    ) -> Alert {
        let i = &rep.run.info;
        Alert {
            kind,
            detections,
            not_checked: rep.hosts.iter().filter(|h| !checked(h)).cloned().collect(),
            incomplete: run_incomplete(rep),
            show_not_checked: false,
            run: Some(RunSummary {
                id: i.id,
                status: i.status.clone(),
                exit_code: i.exit_code,
                started_at: i.started_at.clone(),
                finished_at: i.finished_at.clone(),
                playbook: i.playbook_name.clone(),
                controller: i.controller.clone(),
                operator: i.operator.clone(),
                hosts: rep.hosts.len(),
                counts: rep.run.counts.clone(),
                halt_reason: i.halt_reason.clone(),
            }),
            where_: Where {
                state_dir: state_dir.display().to_string(),
                journal: crate::store::location(state_dir).display(),
                report_file: report_file.map(|f| f.path.display().to_string()),
                command: Some(format!(
                    "pushscan report --run {} --state-dir {}",
                    i.id,
                    state_dir.display()
                )),
                controller: crate::identity::controller_name(),
            },
        }
    }

    /// The message of `pushscan notify test`.
    pub fn test(config_source: &str) -> Alert {
        Alert {
            kind: Kind::Test,
            detections: Vec::new(),
            not_checked: Vec::new(),
            incomplete: false,
            show_not_checked: false,
            run: None,
            where_: Where {
                state_dir: String::new(),
                journal: String::new(),
                report_file: None,
                command: None,
                controller: format!(
                    "{} (config {config_source})",
                    crate::identity::controller_name()
                ),
            },
        }
    }

    fn run_id(&self) -> String {
        self.run
            .as_ref()
            .map(|r| r.id.to_string())
            .unwrap_or_else(|| "-".into())
    }

    /// One line: what happened and where.
    pub fn headline(&self) -> String {
        match self.kind {
            Kind::Test => format!(
                "test message from pushscan on {}",
                display(&crate::identity::controller_name(), 80)
            ),
            Kind::NewDetection => {
                let names: Vec<String> = self
                    .detections
                    .iter()
                    .take(5)
                    .map(|h| display(&h.host, 60))
                    .collect();
                let more = self.detections.len().saturating_sub(names.len());
                let new = self
                    .detections
                    .iter()
                    .filter(|h| h.change.as_deref() != Some("still_detected"))
                    .count();
                let what = if new == self.detections.len() {
                    format!("{} new detection(s)", new)
                } else if new == 0 {
                    format!("{} host(s) still detected", self.detections.len())
                } else {
                    format!(
                        "{} new detection(s), {} still detected",
                        new,
                        self.detections.len() - new
                    )
                };
                let mut s = format!("DETECTED: {what} on {}", names.join(", "));
                if more > 0 {
                    let _ = write!(s, " and {more} more");
                }
                let _ = write!(s, " (run {})", self.run_id());
                s
            }
            Kind::Incomplete => {
                let r = self.run.as_ref();
                let status = r.map(|r| r.status.as_str()).unwrap_or("?");
                let word = match status {
                    "halted" => "halted",
                    "interrupted" => "interrupted",
                    _ => "incomplete",
                };
                format!(
                    "run {} {word}: {} of {} host(s) not checked",
                    self.run_id(),
                    self.not_checked.len(),
                    r.map(|r| r.hosts).unwrap_or(0)
                )
            }
        }
    }

    pub fn subject(&self, prefix: &str) -> String {
        let s = format!("{} {}", prefix.trim(), self.headline());
        // One header line, whatever the names held.
        s.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect::<String>()
            .trim()
            .to_string()
    }

    /// The plain-text body (mail; `text` of the generic webhook).
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "pushscan: {}", self.headline());
        let _ = writeln!(out);
        if self.kind == Kind::Test {
            let _ = writeln!(
                out,
                "This is a test of pushscan's alert channels, sent by `pushscan notify test`\n\
                 from {}. Nothing was detected.",
                display(&self.where_.controller, 300)
            );
            return out;
        }
        if let Some(r) = &self.run {
            let _ = writeln!(
                out,
                "Run {}: {} (exit code {}), playbook {}",
                r.id,
                r.status,
                r.exit_code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                display(r.playbook.as_deref().unwrap_or("?"), 120)
            );
            let _ = writeln!(
                out,
                "Started {}, finished {}, controller {}, operator {}",
                r.started_at,
                r.finished_at.as_deref().unwrap_or("-"),
                display(r.controller.as_deref().unwrap_or("?"), 80),
                display(r.operator.as_deref().unwrap_or("?"), 80)
            );
            let counts: Vec<String> = r.counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(out, "Hosts: {} ({})", r.hosts, counts.join(", "));
            if let Some(h) = &r.halt_reason {
                let _ = writeln!(out, "HALTED: {}", display(h, 300));
            }
        }
        for h in &self.detections {
            let label = match h.change.as_deref() {
                Some("still_detected") if !h.new_findings.is_empty() => "NEW FINDINGS",
                Some("still_detected") => "STILL DETECTED",
                Some("first_check") => "DETECTED (first check)",
                _ => "NEW DETECTION",
            };
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "{label}: {}  (address {}, groups {})",
                display(&h.host, 120),
                display(h.address.as_deref().unwrap_or("?"), 120),
                if h.groups.is_empty() {
                    "-".to_string()
                } else {
                    display(&h.groups.join(","), 200)
                }
            );
            let _ = writeln!(
                out,
                "  scan time   {}\n  report file {}",
                display(h.scan_time.as_deref().unwrap_or("?"), 60),
                display(h.report_file.as_deref().unwrap_or("?"), 200)
            );
            if let Some(e) = &h.evidence_path {
                let _ = writeln!(out, "  evidence    {}", display(e, 300));
            }
            if let Some(c) = &h.checker {
                let _ = writeln!(out, "  checker     {}", display(c, 60));
            }
            for f in ordered(h).into_iter().take(MAIL_FINDINGS) {
                let new = if h.new_findings.contains(&f.identity) && h.findings.len() > 1 {
                    "NEW "
                } else {
                    ""
                };
                match f.as_process() {
                    Some(p) => {
                        let _ = writeln!(
                            out,
                            "  process     {}\n  PID         {}\n  image path  {}\n  run key     {}",
                            display(&p.name, 200),
                            p.pid_text(),
                            display(p.image_text(), 400),
                            display(p.registry_key.as_deref().unwrap_or("-"), 400)
                        );
                    }
                    None => {
                        let _ = writeln!(
                            out,
                            "  finding     {new}{}",
                            display(&crate::report::finding_text(f), 600)
                        );
                    }
                }
            }
            if h.findings.len() > MAIL_FINDINGS {
                let _ = writeln!(
                    out,
                    "  ... and {} more finding(s) (see the report)",
                    h.findings.len() - MAIL_FINDINGS
                );
            }
            if h.findings.is_empty() {
                let _ = writeln!(out, "  {}", display(h.reason.as_deref().unwrap_or(""), 300));
            }
        }
        if !self.not_checked.is_empty() && (self.kind == Kind::Incomplete || self.show_not_checked)
        {
            let _ = writeln!(out);
            let _ = writeln!(out, "Not checked ({}):", self.not_checked.len());
            for h in self.not_checked.iter().take(50) {
                let _ = writeln!(
                    out,
                    "  {}  {}  {}",
                    display(&h.host, 120),
                    h.status,
                    display(h.reason.as_deref().unwrap_or(""), 200)
                );
            }
            if self.not_checked.len() > 50 {
                let _ = writeln!(out, "  ... and {} more", self.not_checked.len() - 50);
            }
        }
        let w = &self.where_;
        let _ = writeln!(out);
        let _ = writeln!(out, "Full report:");
        if let Some(f) = &w.report_file {
            let _ = writeln!(out, "  report file {}", display(f, 400));
        }
        let _ = writeln!(out, "  state dir   {}", display(&w.state_dir, 400));
        let _ = writeln!(out, "  journal     {}", display(&w.journal, 400));
        if let Some(c) = &w.command {
            let _ = writeln!(
                out,
                "  on {}: {}",
                display(&w.controller, 80),
                display(c, 400)
            );
        }
        out
    }

    /// The JSON body of a webhook in `format`.
    pub fn webhook_body(&self, format: super::config::Format) -> serde_json::Value {
        use super::config::Format;
        match format {
            Format::Generic => serde_json::json!({
                "source": "pushscan",
                "version": env!("CARGO_PKG_VERSION"),
                "event": self.kind.as_str(),
                "summary": self.headline(),
                "text": self.text(),
                "run": self.run,
                "detections": self.detections.iter().map(detection_json).collect::<Vec<_>>(),
                "not_checked": self.not_checked.iter().map(|h| serde_json::json!({
                    "host": h.host,
                    "status": h.status,
                    "reason": h.reason,
                })).collect::<Vec<_>>(),
                "incomplete": self.incomplete,
                "report": self.where_,
            }),
            Format::Slack => serde_json::json!({ "text": self.chat_text(Chat::Slack) }),
            Format::Teams => serde_json::json!({
                "@type": "MessageCard",
                "@context": "https://schema.org/extensions",
                "summary": self.headline(),
                "title": format!("pushscan: {}", self.headline()),
                "text": self.chat_text(Chat::Teams),
            }),
        }
    }

    /// A short markup text for chat receivers: the headline, then one line
    /// per host and process, then where the report is.
    fn chat_text(&self, chat: Chat) -> String {
        let code = |s: &str, max: usize| chat.code(&display(s, max));
        let mut lines = vec![match chat {
            Chat::Slack => format!("*pushscan: {}*", chat.plain(&self.headline())),
            Chat::Teams => chat.plain(&self.headline()),
        }];
        for h in self.detections.iter().take(20) {
            let mut line = format!(
                "{} {}",
                code(&h.host, 120),
                h.change.as_deref().unwrap_or("detected")
            );
            for f in ordered(h).into_iter().take(CHAT_FINDINGS) {
                match f.as_process() {
                    Some(p) => {
                        let _ = write!(
                            line,
                            " — {} PID {} {} run key {}",
                            code(&p.name, 120),
                            p.pid_text(),
                            code(&p.image_path, 300),
                            code(p.registry_key.as_deref().unwrap_or("-"), 300)
                        );
                    }
                    None => {
                        let _ = write!(line, " — {}", code(&crate::report::finding_text(f), 400));
                    }
                }
            }
            if h.findings.len() > CHAT_FINDINGS {
                let _ = write!(line, " — and {} more", h.findings.len() - CHAT_FINDINGS);
            }
            lines.push(line);
        }
        if self.detections.len() > 20 {
            lines.push(format!("... and {} more", self.detections.len() - 20));
        }
        if self.kind == Kind::Incomplete || (self.show_not_checked && !self.not_checked.is_empty())
        {
            lines.push(format!("{} host(s) not checked", self.not_checked.len()));
        }
        if let Some(c) = &self.where_.command {
            lines.push(format!(
                "Full report on {}: {}",
                code(&self.where_.controller, 80),
                code(c, 400)
            ));
        }
        if let Some(f) = &self.where_.report_file {
            lines.push(format!("Report file: {}", code(f, 400)));
        }
        lines.join(chat.line_break())
    }
}

#[derive(Clone, Copy)]
enum Chat {
    Slack,
    Teams,
}

impl Chat {
    /// Text outside code spans: Slack's `&`, `<`, `>` escaped (no `<!channel>`
    /// or links from a host name); Teams' markdown characters escaped.
    fn plain(self, s: &str) -> String {
        match self {
            Chat::Slack => s
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;"),
            Chat::Teams => {
                let mut out = String::new();
                for c in s.chars() {
                    match c {
                        '<' => out.push_str("&lt;"),
                        '>' => out.push_str("&gt;"),
                        '&' => out.push_str("&amp;"),
                        '\\' | '`' | '*' | '_' | '[' | ']' | '#' | '|' | '~' => {
                            out.push('\\');
                            out.push(c);
                        }
                        _ => out.push(c),
                    }
                }
                out
            }
        }
    }

    /// A value in a code span: no backtick can end it early.
    fn code(self, s: &str) -> String {
        let inner = s.replace('`', "'");
        let inner = match self {
            Chat::Slack => inner
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;"),
            Chat::Teams => inner
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;"),
        };
        format!("`{inner}`")
    }

    fn line_break(self) -> &'static str {
        match self {
            Chat::Slack => "\n",
            // Office 365 connector cards render markdown: a paragraph per line.
            Chat::Teams => "\n\n",
        }
    }
}

/// Findings per host in a mail, in a chat line, in a webhook's JSON; the rest are counted
/// (a host may report thousands: the report lists them all, the alert says there are more).
const MAIL_FINDINGS: usize = 20;
const CHAT_FINDINGS: usize = 5;
const JSON_FINDINGS: usize = 100;

/// A host's findings, those its previous check did not have first (what the alert is about),
/// then the others, each in report order.
fn ordered(h: &HostEntry) -> Vec<&crate::model::Finding> {
    let is_new: std::collections::HashSet<&str> =
        h.new_findings.iter().map(String::as_str).collect();
    let (mut new, old): (Vec<_>, Vec<_>) = h
        .findings
        .iter()
        .partition(|f| is_new.contains(f.identity.as_str()));
    new.extend(old);
    new
}

fn detection_json(h: &HostEntry) -> serde_json::Value {
    let findings: Vec<_> = ordered(h).into_iter().take(JSON_FINDINGS).collect();
    let new_findings: Vec<_> = h.new_findings.iter().take(JSON_FINDINGS).collect();
    serde_json::json!({
        "host": h.host,
        "address": h.address,
        "groups": h.groups,
        "change": h.change,
        "scan_time": h.scan_time,
        "report_file": h.report_file,
        "report_sha256": h.report_sha256,
        "evidence_path": h.evidence_path,
        "processes": h.processes,
        "findings": findings,
        "findings_total": h.findings.len(),
        "new_findings": new_findings,
        "new_findings_total": h.new_findings.len(),
        "checker": h.checker,
    })
}
