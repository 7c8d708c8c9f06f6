//! The consolidated report of a run, built from the journal only.
//!
//! One data shape ([`RunReport`]) feeds every output: the terminal summary,
//! JSON (stable schema, for SIEMs and scripts) and CSV (one row per host).
//! Every endpoint-supplied string is escaped on the terminal and in CSV
//! (control characters shown as `\x1b`, no leading formula character); JSON
//! carries it verbatim, JSON-encoded.

use std::fmt::Write as _;

use anyhow::Result;
use serde::Serialize;

use crate::journal::{HostRecord, Reader, RunInfo};
use crate::model::{HostClass, Process};
use crate::sanitize::display;

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run: RunSection,
    pub hosts: Vec<HostEntry>,
    /// Hosts of this run not successfully checked for more than
    /// `blind_days` days, across all runs (or never).
    pub blind_spots: Vec<BlindSpot>,
    pub blind_days: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BlindSpot {
    pub host: String,
    /// When the host was last checked successfully; `None`: never.
    pub last_success: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunSection {
    #[serde(flatten)]
    pub info: RunInfo,
    pub counts: std::collections::BTreeMap<String, usize>,
}

/// One host's line of the report (the JSON schema of `report --format json`).
#[derive(Debug, Clone, Serialize)]
pub struct HostEntry {
    pub host: String,
    pub address: Option<String>,
    pub transport: Option<String>,
    pub groups: Vec<String>,
    /// `pending`/`running` only for a run that is still going or crashed.
    pub status: String,
    pub reason: Option<String>,
    pub scan_time: Option<String>,
    pub report_file: Option<String>,
    pub report_sha256: Option<String>,
    pub evidence_path: Option<String>,
    pub checker_version: Option<String>,
    pub pushed: Option<bool>,
    pub exit_code: Option<i64>,
    pub duration_ms: Option<i64>,
    /// Against the host's previous check: `new_detection`, `still_detected`,
    /// `cleared`, `unchanged`, or `first_check`; `None` when not checked now.
    pub change: Option<String>,
    pub processes: Vec<Process>,
    /// The wave the host was planned in, and its OU/group (staged runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wave: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wave_partition: Option<String>,
}

impl HostEntry {
    fn from_record(r: HostRecord) -> HostEntry {
        let status = match r.class {
            Some(c) => c.as_str().to_string(),
            None => "unfinished".to_string(),
        };
        let report = r.report;
        HostEntry {
            host: r.host,
            address: r.address,
            transport: r.transport,
            groups: r.groups,
            status,
            reason: r.reason,
            scan_time: report.as_ref().and_then(|x| x.scan_time.clone()),
            report_file: report.as_ref().map(|x| x.remote_name.clone()),
            report_sha256: report.as_ref().map(|x| x.sha256.clone()),
            evidence_path: report.as_ref().and_then(|x| x.local_path.clone()),
            checker_version: report.as_ref().and_then(|x| x.checker_version.clone()),
            pushed: r.pushed,
            exit_code: r.exit_code,
            duration_ms: r.duration_ms,
            change: None,
            processes: report.map(|x| x.processes).unwrap_or_default(),
            wave: r.wave,
            wave_partition: r.wave_partition,
        }
    }
}

/// Default for "not successfully checked for more than N days".
pub const DEFAULT_BLIND_DAYS: u64 = 7;

/// Loads run `id` (default: the latest) from the journal, with each host's
/// change since its previous check and the fleet's blind spots.
pub fn load(reader: &Reader, id: Option<i64>, blind_days: u64) -> Result<RunReport> {
    let info = reader.run(id)?;
    let mut hosts: Vec<HostEntry> = reader
        .hosts(info.id)?
        .into_iter()
        .map(HostEntry::from_record)
        .collect();
    let cutoff = chrono::Utc::now() - chrono::Duration::days(blind_days as i64);
    let mut blind_spots = Vec::new();
    for h in &mut hosts {
        let now = HostClass::parse(&h.status);
        if matches!(now, Some(HostClass::Detected | HostClass::NotDetected)) {
            let before = reader.previous_check(&h.host, info.id)?;
            h.change = Some(
                match (before, now) {
                    (None, _) => "first_check",
                    (Some(HostClass::Detected), Some(HostClass::Detected)) => "still_detected",
                    (Some(HostClass::Detected), _) => "cleared",
                    (Some(_), Some(HostClass::Detected)) => "new_detection",
                    _ => "unchanged",
                }
                .to_string(),
            );
        } else {
            let last = reader.last_success(&h.host)?;
            let stale = match &last {
                None => true,
                Some(t) => chrono::DateTime::parse_from_rfc3339(t)
                    .map(|t| t < cutoff)
                    .unwrap_or(true),
            };
            if stale {
                blind_spots.push(BlindSpot {
                    host: h.host.clone(),
                    last_success: last,
                });
            }
        }
    }
    let mut counts = std::collections::BTreeMap::new();
    for h in &hosts {
        *counts.entry(h.status.clone()).or_insert(0) += 1;
    }
    Ok(RunReport {
        run: RunSection { info, counts },
        hosts,
        blind_spots,
        blind_days,
    })
}

pub fn to_json(r: &RunReport) -> Result<String> {
    Ok(serde_json::to_string_pretty(r)? + "\n")
}

/// One row per host. Several processes of one host are joined with ` | `.
pub fn to_csv(r: &RunReport) -> Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "run_id",
        "host",
        "address",
        "groups",
        "status",
        "reason",
        "scan_time",
        "report_file",
        "checker_version",
        "process_names",
        "pids",
        "image_paths",
        "registry_keys",
        "report_sha256",
    ])?;
    for h in &r.hosts {
        let join = |f: &dyn Fn(&Process) -> String| {
            h.processes.iter().map(f).collect::<Vec<_>>().join(" | ")
        };
        w.write_record([
            r.run.info.id.to_string(),
            csv_safe(&h.host),
            csv_safe(h.address.as_deref().unwrap_or("")),
            csv_safe(&h.groups.join(";")),
            h.status.clone(),
            csv_safe(h.reason.as_deref().unwrap_or("")),
            csv_safe(h.scan_time.as_deref().unwrap_or("")),
            csv_safe(h.report_file.as_deref().unwrap_or("")),
            csv_safe(h.checker_version.as_deref().unwrap_or("")),
            csv_safe(&join(&|p| p.name.clone())),
            join(&|p| p.pid.map(|x| x.to_string()).unwrap_or_default()),
            csv_safe(&join(&|p| p.image_path.clone())),
            csv_safe(&join(&|p| p.registry_key.clone().unwrap_or_default())),
            h.report_sha256.clone().unwrap_or_default(),
        ])?;
    }
    let bytes = w.into_inner().map_err(|e| anyhow::anyhow!("csv: {e}"))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// A cell a host controls: control characters escaped (a CSV is often
/// `cat`-ed on a terminal), and no leading formula character (spreadsheet
/// formula injection when opened in Excel).
fn csv_safe(s: &str) -> String {
    let s = display(s, usize::MAX);
    if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s
    }
}

/// The terminal summary: counts, then detections in full, then hosts with
/// no result, then failures. Clean hosts are only counted.
pub fn to_table(r: &RunReport) -> String {
    let mut out = String::new();
    let i = &r.run.info;
    let _ = writeln!(
        out,
        "Run {} — {} — playbook {} — {} host(s) — {}",
        i.id,
        i.started_at,
        display(i.playbook_name.as_deref().unwrap_or("?"), 80),
        r.hosts.len(),
        i.status
    );
    if let Some(sha) = &i.checker_sha256 {
        let _ = writeln!(out, "Checker SHA-256 {sha}");
    }
    if let Some(reason) = &i.halt_reason {
        let _ = writeln!(out, "HALTED: {}", display(reason, 300));
    }
    let _ = writeln!(out);
    let mut order: Vec<(String, usize)> =
        r.run.counts.iter().map(|(k, v)| (k.clone(), *v)).collect();
    order.sort_by_key(|(k, _)| {
        HostClass::parse(k)
            .map(|c| c as usize)
            .unwrap_or(usize::MAX)
    });
    for (class, n) in &order {
        let _ = writeln!(out, "  {class:<18} {n:>6}");
    }

    let detected: Vec<&HostEntry> = r.hosts.iter().filter(|h| h.status == "detected").collect();
    if !detected.is_empty() {
        let _ = writeln!(out, "\nDETECTED ({})", detected.len());
        for h in detected {
            let marker = match h.change.as_deref() {
                Some("new_detection") | Some("first_check") => "NEW ",
                Some("still_detected") => "STILL ",
                _ => "",
            };
            let _ = writeln!(
                out,
                "  {marker}{}  [{}]  scan time {}  report {}",
                display(&h.host, 80),
                display(&h.groups.join(","), 80),
                display(h.scan_time.as_deref().unwrap_or("?"), 40),
                display(h.report_file.as_deref().unwrap_or("?"), 120),
            );
            for p in &h.processes {
                let _ = writeln!(
                    out,
                    "      process {}  PID {}\n      image   {}\n      run key {}",
                    display(&p.name, 120),
                    p.pid.map(|x| x.to_string()).unwrap_or_else(|| "?".into()),
                    display(
                        if p.image_path.is_empty() {
                            "?"
                        } else {
                            &p.image_path
                        },
                        300
                    ),
                    display(p.registry_key.as_deref().unwrap_or("-"), 300),
                );
            }
            if h.processes.is_empty() {
                let _ = writeln!(
                    out,
                    "      {}",
                    display(h.reason.as_deref().unwrap_or(""), 300)
                );
            }
        }
    }
    let no_result: Vec<&HostEntry> = r.hosts.iter().filter(|h| h.status == "no_result").collect();
    if !no_result.is_empty() {
        let _ = writeln!(out, "\nNO RESULT FOUND ({})", no_result.len());
        for h in no_result {
            let _ = writeln!(
                out,
                "  {}  {}",
                display(&h.host, 80),
                display(h.reason.as_deref().unwrap_or(""), 300)
            );
        }
    }
    let failed: Vec<&HostEntry> = r
        .hosts
        .iter()
        .filter(|h| !matches!(h.status.as_str(), "detected" | "no_result" | "not_detected"))
        .collect();
    if !failed.is_empty() {
        let _ = writeln!(out, "\nNOT CHECKED ({})", failed.len());
        for h in failed {
            let _ = writeln!(
                out,
                "  {}  {}  {}",
                display(&h.host, 80),
                h.status,
                display(h.reason.as_deref().unwrap_or(""), 300)
            );
        }
    }
    let cleared: Vec<&HostEntry> = r
        .hosts
        .iter()
        .filter(|h| h.change.as_deref() == Some("cleared"))
        .collect();
    if !cleared.is_empty() {
        let _ = writeln!(
            out,
            "\nCLEARED since the previous check ({})",
            cleared.len()
        );
        for h in cleared {
            let _ = writeln!(out, "  {}", display(&h.host, 80));
        }
    }
    if !r.blind_spots.is_empty() {
        let _ = writeln!(
            out,
            "\nBLIND SPOTS: not successfully checked for more than {} days ({})",
            r.blind_days,
            r.blind_spots.len()
        );
        for b in &r.blind_spots {
            let _ = writeln!(
                out,
                "  {}  last checked {}",
                display(&b.host, 80),
                b.last_success.as_deref().unwrap_or("never")
            );
        }
    }
    out
}

/// `pushscan runs`: one line per run, newest first.
pub fn runs_table(runs: &[RunInfo]) -> String {
    let mut out = String::from(
        "ID  STARTED                   STATUS       COMPLETE HOSTS  EXIT  PLAYBOOK / COUNTS\n",
    );
    for r in runs {
        let counts: Vec<String> = r.counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(
            out,
            "{:<3} {:<25} {:<12} {:<8} {:>5}  {:>4}  {}\n    {}",
            r.id,
            r.started_at,
            r.status,
            if r.complete { "yes" } else { "no" },
            r.hosts_targeted.unwrap_or(0),
            r.exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            display(r.playbook_name.as_deref().unwrap_or("?"), 60),
            counts.join(", ")
        );
    }
    out
}

/// `pushscan history HOST`: the host's results, newest first, then the
/// reports found on it from before.
pub fn history_table(
    host: &str,
    items: &[crate::journal::HistoryItem],
    found: &[crate::journal::ReportRecord],
) -> String {
    let mut out = format!("History of {}\n", display(host, 80));
    if items.is_empty() {
        out.push_str("  no run has a result for this host\n");
    }
    for i in items {
        let _ = writeln!(
            out,
            "  run {:<4} {}  {:<15} {}",
            i.run_id,
            i.finished_at.as_deref().unwrap_or(&i.run_started_at),
            i.class.as_deref().unwrap_or("?"),
            display(i.reason.as_deref().unwrap_or(""), 200)
        );
        if let Some(rep) = &i.report {
            let _ = writeln!(
                out,
                "           report {}  scan time {}",
                display(&rep.remote_name, 120),
                display(rep.scan_time.as_deref().unwrap_or("?"), 40)
            );
            write_processes(&mut out, "           ", &rep.processes);
        }
    }
    if !found.is_empty() {
        let _ = writeln!(
            out,
            "Reports found on the host from before (fetched as history):"
        );
        for rep in found {
            let _ = writeln!(
                out,
                "  {}  {}  scan time {}",
                display(&rep.remote_name, 120),
                rep.status,
                display(rep.scan_time.as_deref().unwrap_or("?"), 40)
            );
            write_processes(&mut out, "      ", &rep.processes);
        }
    }
    out
}

fn write_processes(out: &mut String, indent: &str, procs: &[Process]) {
    for p in procs {
        let _ = writeln!(
            out,
            "{indent}process {}  PID {}  image {}  run key {}",
            display(&p.name, 120),
            p.pid.map(|x| x.to_string()).unwrap_or_else(|| "?".into()),
            display(&p.image_path, 300),
            display(p.registry_key.as_deref().unwrap_or("-"), 300)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_cannot_become_formulas() {
        assert_eq!(csv_safe("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(csv_safe("PC-1"), "PC-1");
        assert_eq!(csv_safe("a\x1b[31mb"), "a\\x1b[31mb");
    }
}
