//! The consolidated report of a run, built from the journal only.
//!
//! One data shape ([`RunReport`]) feeds every output: the terminal summary,
//! JSON (stable schema, for SIEMs and scripts), CSV (one row per host) and
//! the self-contained HTML page ([`html`]). Every endpoint-supplied string is
//! escaped on the terminal, in CSV (control characters shown as `\x1b`, no
//! leading formula character) and in HTML (markup-escaped as well); JSON
//! carries it verbatim, JSON-encoded. The schemas are documented in
//! `docs/report-formats.md` and only ever grow.

use std::fmt::Write as _;

use anyhow::Result;
use serde::Serialize;

use crate::model::{Finding, HostClass, Process};
use crate::sanitize::display;
use crate::store::{HostRecord, RunInfo, StoreReader};

pub mod html;

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// [`SCHEMA_VERSION`]: what a consumer of the JSON checks before it reads on.
    pub schema_version: u32,
    pub run: RunSection,
    pub hosts: Vec<HostEntry>,
    /// Hosts of this run not successfully checked for more than
    /// `blind_days` days, across all runs (or never).
    pub blind_spots: Vec<BlindSpot>,
    pub blind_days: u64,
    /// The journal's runs up to this one, oldest first (at most
    /// [`LoadOptions::series`]), with their per-class counts: the trend.
    pub recent_runs: Vec<RunPoint>,
    /// How many results each host's `history` holds at most.
    pub history_depth: usize,
}

/// One run of the trend series.
#[derive(Debug, Clone, Serialize)]
pub struct RunPoint {
    pub id: i64,
    pub started_at: String,
    pub status: String,
    pub counts: std::collections::BTreeMap<String, i64>,
}

/// One past result of a host (its timeline), oldest first; the last one is
/// this run's.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryPoint {
    pub run_id: i64,
    pub started_at: String,
    /// The class, or `unfinished`.
    pub status: String,
}

/// The start of a host's primary report as stored in the journal, for the
/// HTML page (never serialized: JSON consumers have the evidence file).
#[derive(Debug, Clone)]
pub struct RawReport {
    /// At most [`LoadOptions::raw_cap`] bytes.
    pub bytes: Vec<u8>,
    /// The size of the whole report.
    pub total: u64,
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

/// The JSON report's schema version. Fields are only ever added (docs/report-formats.md); the
/// number changes only if a field had to change its meaning, so a consumer can refuse a report
/// it would misread.
pub const SCHEMA_VERSION: u32 = 1;

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
    /// The findings that are processes, in the shape this report had before findings were
    /// generic (kept for its readers; `findings` holds them all).
    pub processes: Vec<Process>,
    /// What the checker found (any checker): kind, title, location, severity, attributes,
    /// identity.
    pub findings: Vec<Finding>,
    /// The identities of `findings` not in the host's previous check (all of them for a
    /// `new_detection` or `first_check`).
    pub new_findings: Vec<String>,
    /// The checker that read the primary report, by its name for people (`EmoCheck`).
    pub checker: Option<String>,
    /// The wave the host was planned in, and its OU/group (staged runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wave: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wave_partition: Option<String>,
    /// The host's OU/group for grouping: `wave_partition` when the run was
    /// staged, else its first group chain joined with `/`, else `ungrouped`.
    pub ou: String,
    /// Language/format of the primary report as parsed: `en`, `ja`, `fr`
    /// (text reports) or `json`.
    pub report_format: Option<String>,
    /// Warnings of the primary report's parse (recovered JSON, CP932 fields, truncation).
    pub report_warnings: Vec<String>,
    /// The host's last results up to this run, oldest first (at most
    /// `history_depth`; empty when not asked for).
    pub history: Vec<HistoryPoint>,
    /// The primary report's raw bytes (capped), when loaded for HTML.
    #[serde(skip)]
    pub raw_report: Option<RawReport>,
    /// Containment actions (`pushscan contain`/`uncontain`) that acted on this run's
    /// detection of the host, or whose re-check is this run; oldest first. Absent
    /// from the JSON when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<crate::store::ActionRecord>,
}

/// The OU/group a host is shown under (see [`HostEntry::ou`]).
fn ou_of(wave_partition: Option<&str>, group_paths: &[Vec<String>]) -> String {
    if let Some(p) = wave_partition.filter(|p| !p.is_empty()) {
        return p.to_string();
    }
    match group_paths.first() {
        Some(path) if !path.is_empty() => path.join("/"),
        _ => "ungrouped".to_string(),
    }
}

impl HostEntry {
    fn from_record(r: HostRecord) -> HostEntry {
        let status = match r.class {
            Some(c) => c.as_str().to_string(),
            None => "unfinished".to_string(),
        };
        let ou = ou_of(r.wave_partition.as_deref(), &r.group_paths);
        let report = r.report;
        HostEntry {
            ou,
            report_format: report.as_ref().and_then(|x| x.format.clone()),
            report_warnings: report
                .as_ref()
                .map(|x| x.warnings.clone())
                .unwrap_or_default(),
            history: Vec::new(),
            raw_report: None,
            actions: Vec::new(),
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
            checker: report
                .as_ref()
                .and_then(|x| x.parser.as_deref())
                .map(|p| crate::parser::checker_name(p).to_string()),
            processes: report
                .as_ref()
                .map(|x| x.processes.clone())
                .unwrap_or_default(),
            findings: report.map(|x| x.findings).unwrap_or_default(),
            new_findings: Vec::new(),
            wave: r.wave,
            wave_partition: r.wave_partition,
        }
    }
}

/// Default for "not successfully checked for more than N days".
pub const DEFAULT_BLIND_DAYS: u64 = 7;

/// Default number of past results per host in a report (`--history`).
pub const DEFAULT_HISTORY: usize = 5;

/// How many runs the trend series holds.
pub const DEFAULT_SERIES: usize = 20;

/// How much of a raw report the HTML page embeds per host.
pub const RAW_CAP: usize = 64 * 1024;

/// What [`load_with`] reads besides the run itself.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub blind_days: u64,
    /// Past results per host (0: none).
    pub history: usize,
    /// Runs in the trend series (0: none).
    pub series: usize,
    /// Load the primary report's raw bytes of detected hosts, capped at this
    /// many bytes (for HTML); `None`: not at all.
    pub raw_cap: Option<usize>,
}

impl Default for LoadOptions {
    fn default() -> LoadOptions {
        LoadOptions {
            blind_days: DEFAULT_BLIND_DAYS,
            history: DEFAULT_HISTORY,
            series: DEFAULT_SERIES,
            raw_cap: None,
        }
    }
}

/// Loads run `id` (default: the latest) from the journal, with each host's
/// change since its previous check and the fleet's blind spots.
pub fn load(reader: &dyn StoreReader, id: Option<i64>, blind_days: u64) -> Result<RunReport> {
    load_with(
        reader,
        id,
        &LoadOptions {
            blind_days,
            ..LoadOptions::default()
        },
    )
}

/// [`load`] with everything [`LoadOptions`] asks for: per-host history, the
/// run series, raw reports.
pub fn load_with(
    reader: &dyn StoreReader,
    id: Option<i64>,
    opts: &LoadOptions,
) -> Result<RunReport> {
    let blind_days = opts.blind_days;
    let mut info = reader.run(id)?;
    let records = reader.hosts(info.id)?;
    let mut hosts: Vec<HostEntry> = Vec::with_capacity(records.len());
    for rec in records {
        let report_id = rec.report.as_ref().map(|r| r.id);
        let detected = rec.class == Some(HostClass::Detected);
        let mut entry = HostEntry::from_record(rec);
        if let (Some(cap), Some(id), true) = (opts.raw_cap, report_id, detected) {
            entry.raw_report = reader
                .report_raw_prefix(id, cap)?
                .map(|(bytes, total)| RawReport {
                    bytes,
                    total: u64::try_from(total).unwrap_or(0),
                });
        }
        hosts.push(entry);
    }
    for a in reader.run_actions(info.id)? {
        if let Some(h) = hosts.iter_mut().find(|h| h.host == a.host) {
            h.actions.push(a);
        }
    }
    let mut recent = reader.recent_results(info.id, opts.history)?;
    for h in &mut hosts {
        if let Some(items) = recent.remove(&h.host) {
            h.history = items
                .into_iter()
                .map(|i| HistoryPoint {
                    run_id: i.run_id,
                    started_at: i.started_at,
                    status: i.class.unwrap_or_else(|| "unfinished".into()),
                })
                .collect();
        }
    }
    let mut recent_runs: Vec<RunPoint> = if opts.series == 0 {
        Vec::new()
    } else {
        reader
            .runs_through(info.id, opts.series)?
            .into_iter()
            .map(|r| RunPoint {
                id: r.id,
                started_at: r.started_at,
                status: r.status,
                counts: r.counts,
            })
            .collect()
    };
    recent_runs.reverse();
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
            h.new_findings = match h.change.as_deref() {
                Some("still_detected") => {
                    let before = reader.previous_finding_identities(&h.host, info.id)?;
                    h.findings
                        .iter()
                        .filter(|f| !before.contains(&f.identity))
                        .map(|f| f.identity.clone())
                        .collect()
                }
                Some("new_detection" | "first_check") => {
                    h.findings.iter().map(|f| f.identity.clone()).collect()
                }
                _ => Vec::new(),
            };
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
    // As `pushscan runs` says it: finished, and every host has a final result.
    info.complete = info.status == "finished"
        && !counts
            .keys()
            .any(|k: &String| matches!(k.as_str(), "unfinished" | "not_started" | "busy"));
    Ok(RunReport {
        schema_version: SCHEMA_VERSION,
        run: RunSection { info, counts },
        hosts,
        blind_spots,
        blind_days,
        recent_runs,
        history_depth: opts.history,
    })
}

pub fn to_json(r: &RunReport) -> Result<String> {
    Ok(serde_json::to_string_pretty(r)? + "\n")
}

/// How a CSV file is written, for the program that opens it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CsvOptions {
    /// Start with a UTF-8 byte order mark: Excel otherwise reads the file in
    /// the local ANSI code page and garbles Japanese and French text.
    pub bom: bool,
    /// End records with CRLF (RFC 4180, Windows tools) instead of LF.
    pub crlf: bool,
    /// One row per finding ([`FINDING_CSV_COLUMNS`]) instead of one per host.
    pub per_finding: bool,
}

/// The CSV columns, in order (documented in docs/report-formats.md; new
/// columns are only ever appended).
pub const CSV_COLUMNS: [&str; 17] = [
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
    "ou",
    "change",
    "findings",
];

/// One row per host. Several processes (or findings) of one host are joined with ` | `; the
/// process columns hold the findings that are processes, `findings` every finding as
/// `severity kind: title @ location {name=value; ...}`.
pub fn to_csv(r: &RunReport) -> Result<String> {
    to_csv_with(r, CsvOptions::default())
}

/// The columns of the CSV with one row per finding, in order (documented in
/// docs/report-formats.md; new columns only ever at the end).
pub const FINDING_CSV_COLUMNS: &[&str] = &[
    "run_id",
    "host",
    "address",
    "groups",
    "ou",
    "status",
    "change",
    "checker",
    "checker_version",
    "scan_time",
    "report_file",
    "report_sha256",
    "finding_kind",
    "finding_severity",
    "finding_title",
    "finding_location",
    "finding_identity",
    "finding_new",
    "finding_attributes",
];

/// One row per finding; a host without findings has one row with the finding cells empty,
/// so every host of the run is in the file.
fn findings_csv(r: &RunReport, w: &mut csv::Writer<Vec<u8>>) -> Result<()> {
    w.write_record(FINDING_CSV_COLUMNS)?;
    for h in &r.hosts {
        let host_cells = [
            r.run.info.id.to_string(),
            csv_safe(&h.host),
            csv_safe(h.address.as_deref().unwrap_or("")),
            csv_safe(&h.groups.join(";")),
            csv_safe(&h.ou),
            h.status.clone(),
            h.change.clone().unwrap_or_default(),
            csv_safe(h.checker.as_deref().unwrap_or("")),
            csv_safe(h.checker_version.as_deref().unwrap_or("")),
            csv_safe(h.scan_time.as_deref().unwrap_or("")),
            csv_safe(h.report_file.as_deref().unwrap_or("")),
            h.report_sha256.clone().unwrap_or_default(),
        ];
        if h.findings.is_empty() {
            let mut row = host_cells.to_vec();
            row.extend(std::iter::repeat_n(String::new(), 7));
            w.write_record(&row)?;
            continue;
        }
        let is_new: std::collections::HashSet<&str> =
            h.new_findings.iter().map(String::as_str).collect();
        for f in &h.findings {
            let mut row = host_cells.to_vec();
            let attrs: Vec<String> = f
                .attributes
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            row.extend([
                csv_safe(&f.kind),
                f.severity.as_str().to_string(),
                csv_safe(&f.title),
                csv_safe(&f.location),
                csv_safe(&f.identity),
                if is_new.contains(f.identity.as_str()) {
                    "yes".to_string()
                } else {
                    "no".to_string()
                },
                csv_safe(&attrs.join("; ")),
            ]);
            w.write_record(&row)?;
        }
    }
    Ok(())
}

/// [`to_csv`] with a BOM and/or CRLF record ends, or one row per finding.
pub fn to_csv_with(r: &RunReport, opts: CsvOptions) -> Result<String> {
    let mut w = csv::WriterBuilder::new()
        .terminator(if opts.crlf {
            csv::Terminator::CRLF
        } else {
            csv::Terminator::Any(b'\n')
        })
        .from_writer(Vec::new());
    if opts.per_finding {
        findings_csv(r, &mut w)?;
        return finish_csv(w, opts);
    }
    w.write_record(CSV_COLUMNS)?;
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
            csv_safe(&h.ou),
            h.change.clone().unwrap_or_default(),
            csv_safe(&findings_cell(&h.findings)),
        ])?;
    }
    finish_csv(w, opts)
}

fn finish_csv(w: csv::Writer<Vec<u8>>, opts: CsvOptions) -> Result<String> {
    let bytes = w.into_inner().map_err(|e| anyhow::anyhow!("csv: {e}"))?;
    let text = String::from_utf8_lossy(&bytes);
    Ok(if opts.bom {
        format!("\u{feff}{text}")
    } else {
        text.into_owned()
    })
}

/// Findings listed per detected host by the terminal table; the rest are counted.
const TABLE_FINDINGS: usize = 20;
/// Characters of the per-host CSV's `findings` cell (a spreadsheet cell holds 32,767).
const FINDINGS_CELL: usize = 30_000;

/// The `findings` cell of the per-host CSV: every finding as [`finding_text`] joined with
/// ` | `, cut before [`FINDINGS_CELL`] characters with the number left out.
fn findings_cell(findings: &[Finding]) -> String {
    let (mut cell, mut chars) = (String::new(), 0usize);
    for (i, f) in findings.iter().enumerate() {
        let text = display(&finding_text(f), 2_000);
        let n = text.chars().count();
        if chars + n + 3 > FINDINGS_CELL {
            let _ = write!(cell, " | … {} more", findings.len() - i);
            break;
        }
        if i > 0 {
            cell.push_str(" | ");
        }
        cell.push_str(&text);
        chars += n + 3;
    }
    cell
}

/// A cell a host controls: control characters escaped (a CSV is often
/// `cat`-ed on a terminal), and no leading formula character (spreadsheet
/// formula injection when opened in Excel).
fn csv_safe(s: &str) -> String {
    // `display` has already made a leading tab, CR or invisible character
    // visible (`\x09`...), so none can hide a formula start; what is left is
    // the sign itself, ASCII or full-width (spreadsheets in CJK locales read
    // `＝` as `=`), after any spaces.
    let s = display(s, usize::MAX);
    if s.trim_start_matches(' ')
        .starts_with(['=', '+', '-', '@', '＝', '＋', '－', '＠'])
    {
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
                "  {marker}{}  [{}]  {}  scan time {}  report {}",
                display(&h.host, 80),
                display(&h.groups.join(","), 80),
                display(h.checker.as_deref().unwrap_or("checker"), 40),
                display(h.scan_time.as_deref().unwrap_or("?"), 40),
                display(h.report_file.as_deref().unwrap_or("?"), 120),
            );
            for f in h.findings.iter().take(TABLE_FINDINGS) {
                match f.as_process() {
                    Some(p) => {
                        let _ = writeln!(
                            out,
                            "      process {}  PID {}\n      image   {}\n      run key {}",
                            display(&p.name, 120),
                            p.pid_text(),
                            display(p.image_text(), 300),
                            display(p.registry_key.as_deref().unwrap_or("-"), 300),
                        );
                    }
                    None => {
                        let _ = writeln!(out, "      {}", display(&finding_text(f), 600));
                    }
                }
            }
            if h.findings.len() > TABLE_FINDINGS {
                let _ = writeln!(
                    out,
                    "      ... and {} more finding(s) (--format json or --csv-rows finding list them all)",
                    h.findings.len() - TABLE_FINDINGS
                );
            }
            if h.findings.is_empty() {
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
    items: &[crate::store::HistoryItem],
    found: &[crate::store::ReportRecord],
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
            write_findings(&mut out, "           ", &rep.findings);
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
            write_findings(&mut out, "      ", &rep.findings);
        }
    }
    out
}

/// `pushscan history HOST`: the containment actions on the host, newest first.
pub fn actions_table(actions: &[crate::store::ActionRecord]) -> String {
    let mut out = String::new();
    if actions.is_empty() {
        return out;
    }
    out.push_str("Containment actions (newest first):\n");
    for a in actions {
        let _ = writeln!(
            out,
            "  {} {} #{} run {}  {:<9} {:<8} verified {}  by {}  exit {}",
            a.finished_at.as_deref().unwrap_or(&a.started_at),
            a.kind,
            a.containment_id,
            a.run_id
                .map(|r| r.to_string())
                .unwrap_or_else(|| "-".into()),
            a.action,
            a.phase,
            match a.verified {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "-",
            },
            display(&a.operator, 40),
            a.exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into())
        );
        if let Some(t) = a.target.as_deref().filter(|t| !t.is_empty()) {
            let _ = writeln!(out, "      target: {}", display(t, 300));
        }
        // Whole lines: the audit trail shows the exact commands (the POSIX path
        // checks make them long).
        for l in a.command.lines() {
            let _ = writeln!(out, "      $ {}", display(l, 12_000));
        }
        if let Some(m) = a.message.as_deref().filter(|m| !m.is_empty()) {
            let _ = writeln!(out, "      {}", display(m, 600));
        }
        if let Some(d) = &a.output_sha256 {
            let _ = writeln!(out, "      output SHA-256 {d}");
        }
        if let Some(p) = &a.evidence_path {
            let _ = writeln!(out, "      evidence {}", display(p, 300));
        }
        if let Some(r) = a.recheck_run {
            let _ = writeln!(out, "      re-checked in run {r}");
        }
    }
    out
}

fn write_findings(out: &mut String, indent: &str, findings: &[Finding]) {
    if findings.len() > TABLE_FINDINGS {
        let _ = writeln!(
            out,
            "{indent}{} finding(s), the first {TABLE_FINDINGS}:",
            findings.len()
        );
    }
    for f in findings.iter().take(TABLE_FINDINGS) {
        match f.as_process() {
            Some(p) => {
                let _ = writeln!(
                    out,
                    "{indent}process {}  PID {}  image {}  run key {}",
                    display(&p.name, 120),
                    p.pid_text(),
                    display(&p.image_path, 300),
                    display(p.registry_key.as_deref().unwrap_or("-"), 300)
                );
            }
            None => {
                let _ = writeln!(out, "{indent}{}", display(&finding_text(f), 600));
            }
        }
    }
}

/// One finding on one line, unescaped (callers escape for their medium):
/// `severity kind: title @ location {name=value; ...}`.
pub fn finding_text(f: &Finding) -> String {
    let mut s = format!("{} {}: {}", f.severity.as_str(), f.kind, f.title);
    if !f.location.is_empty() {
        let _ = write!(s, " @ {}", f.location);
    }
    if !f.attributes.is_empty() {
        let attrs: Vec<String> = f
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = write!(s, " {{{}}}", attrs.join("; "));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_cannot_become_formulas() {
        assert_eq!(csv_safe("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(csv_safe("PC-1"), "PC-1");
        assert_eq!(csv_safe("a\x1b[31mb"), "a\\x1b[31mb");
        // Spreadsheets in CJK locales read full-width signs as formula starts.
        for cell in ["＝cmd|' /C calc'!A0", "＋1+1", "－1+1", "＠SUM(A1)"] {
            assert_eq!(csv_safe(cell), format!("'{cell}"), "{cell}");
        }
        // A leading tab or CR is made visible, so no formula hides behind it.
        assert_eq!(csv_safe("\t=1+1"), "\\x09=1+1");
        assert_eq!(csv_safe("\r=1+1"), "\\x0d=1+1");
        // Nor behind invisible characters or spaces.
        assert_eq!(csv_safe("\u{200b}=1+1"), "\\u{200b}=1+1");
        assert_eq!(csv_safe("  =1+1"), "'  =1+1");
        assert_eq!(csv_safe("ｗｅｂ"), "ｗｅｂ");
    }

    #[test]
    fn history_lists_a_bounded_number_of_findings_escaped() {
        let f = Finding {
            kind: "yara_match".into(),
            title: "R\x1b[2J".into(),
            location: "/x".into(),
            ..Default::default()
        };
        let mut out = String::new();
        write_findings(&mut out, "  ", &vec![f; 5000]);
        assert_eq!(out.lines().count(), 1 + TABLE_FINDINGS);
        assert!(
            out.starts_with("  5000 finding(s), the first 20:\n"),
            "{out}"
        );
        assert!(out.contains("high yara_match: R\\x1b[2J @ /x"), "{out}");
        assert!(!out.contains('\x1b'));
    }
}
