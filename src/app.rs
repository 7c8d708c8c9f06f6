//! The subcommands, as library functions: `main.rs` turns flags into these
//! calls and an exit code, nothing more.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use crate::exit::{self, Fail, WithCode};
use crate::journal::Reader;
use crate::model::{ParsedReport, ReportStatus};
use crate::report;
use crate::sanitize::display;
use crate::sweep::{self, SweepConfig};

/// The default state directory: `$PUSHSCAN_STATE_DIR`, else
/// `$XDG_STATE_HOME/pushscan` (`~/.local/state/pushscan`), else the local
/// application-data directory (Windows: `%LOCALAPPDATA%\pushscan\state`).
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PUSHSCAN_STATE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = dirs::state_dir() {
        return d.join("pushscan");
    }
    if let Some(d) = dirs::data_local_dir() {
        return d.join("pushscan").join("state");
    }
    PathBuf::from(".pushscan-state")
}

/// Output format of `report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Csv,
}

fn write_out(text: &str, output: Option<&Path>) -> Result<(), Fail> {
    match output {
        Some(p) => std::fs::write(p, text).map_err(|e| {
            Fail::new(
                exit::IO,
                anyhow::anyhow!("cannot write {}: {e}", p.display()),
            )
        }),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|_| out.flush())
                .code(exit::IO)
        }
    }
}

/// What happens after a sweep or resume besides the terminal report.
#[derive(Debug, Clone, Default)]
pub struct AfterRun {
    /// `--report-json FILE`.
    pub report_json: Option<PathBuf>,
    /// Where the alert settings come from (default: the run's playbook).
    pub notify: crate::notify::Source,
}

/// `pushscan sweep`: runs the sweep, prints the terminal report, and returns
/// the fleet exit code (0 clean, 1 detection, 2 incomplete). Alerts come
/// from the playbook's `notify:` section, if any.
pub async fn sweep(cfg: SweepConfig, report_json: Option<PathBuf>) -> Result<i32, Fail> {
    sweep_with(
        cfg,
        &AfterRun {
            report_json,
            ..AfterRun::default()
        },
    )
    .await
}

/// `pushscan sweep` with alert settings: the sweep, the terminal report,
/// then the alerts (which never change the exit code).
pub async fn sweep_with(cfg: SweepConfig, after: &AfterRun) -> Result<i32, Fail> {
    preflight_notify(&cfg.playbook, &after.notify)?;
    let state_dir = cfg.state_dir.clone();
    let outcome = sweep::sweep(cfg).await?;
    finish_sweep(&state_dir, &outcome, after).await
}

/// Alerts that cannot work are found before the sweep, not hours later: the
/// secrets and CA files the playbook's `notify:` names must be readable now.
/// (A `--notify-config` file is checked when it is loaded.) A playbook that
/// does not load is left for the sweep to report.
pub fn preflight_notify(playbook: &Path, source: &crate::notify::Source) -> Result<(), Fail> {
    if let crate::notify::Source::RunPlaybook = source {
        if let Ok(pb) = crate::playbook::Playbook::load(playbook) {
            if let Some(n) = &pb.notify {
                n.check_sources().map_err(|e| {
                    Fail::new(
                        exit::CONFIG,
                        anyhow::anyhow!("{}: notify: {e:#}", playbook.display()),
                    )
                })?;
            }
        }
    }
    Ok(())
}

/// `pushscan resume`.
pub async fn resume(
    state_dir: &Path,
    run: Option<i64>,
    forks: Option<usize>,
    access: &sweep::Access,
    progress: crate::progress::Mode,
    after: &AfterRun,
) -> Result<i32, Fail> {
    let outcome = sweep::resume(state_dir, run, forks, access, progress).await?;
    finish_sweep(state_dir, &outcome, after).await
}

async fn finish_sweep(
    state_dir: &Path,
    outcome: &sweep::SweepOutcome,
    after: &AfterRun,
) -> Result<i32, Fail> {
    let reader = Reader::open(state_dir).code(exit::IO)?;
    let rep =
        report::load(&reader, Some(outcome.run_id), report::DEFAULT_BLIND_DAYS).code(exit::IO)?;
    drop(reader);
    write_out(&report::to_table(&rep), None)?;
    if let Some(path) = &after.report_json {
        write_out(&report::to_json(&rep).code(exit::SOFTWARE)?, Some(path))?;
    }
    if let Some(reason) = &outcome.halted {
        eprintln!(
            "run {}: {}; the hosts of later waves are recorded as not_started.\n\
             Continue it (the next waves, gated the same way) with: pushscan resume {} --state-dir {}",
            outcome.run_id,
            display(reason, 300),
            outcome.run_id,
            state_dir.display()
        );
    } else if outcome.interrupted {
        eprintln!(
            "run {} was interrupted; hosts not started are recorded as not_started.\n\
             Continue it with: pushscan resume {} --state-dir {}",
            outcome.run_id,
            outcome.run_id,
            state_dir.display()
        );
    }
    // Alerts: never fatal, never a change of the exit code.
    match after.notify.resolve(state_dir, outcome.run_id) {
        Ok(Some(cfg)) => {
            let file = alert_report_file(state_dir, &rep, after.report_json.as_deref());
            crate::notify::after_run(&cfg, state_dir, &rep, file.as_ref()).await;
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(
            target: "pushscan::notify",
            "run {}: alerts not sent: {e:#}",
            outcome.run_id
        ),
    }
    Ok(outcome.exit_code)
}

/// The report file an alert points at and may attach: the `--report-json`
/// file when given, else the run's JSON report written to
/// `STATE/reports/run-N.json`. (This is the one place to hand the HTML
/// report instead, with its content type.) `None` when it cannot be written:
/// the alert then points at the journal only.
fn alert_report_file(
    state_dir: &Path,
    rep: &report::RunReport,
    report_json: Option<&Path>,
) -> Option<crate::notify::ReportFile> {
    let json = crate::notify::ReportFile {
        path: PathBuf::new(),
        content_type: "application/json".into(),
    };
    if let Some(p) = report_json {
        return Some(crate::notify::ReportFile {
            path: std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()),
            ..json
        });
    }
    let dir = state_dir.join("reports");
    let path = dir.join(format!("run-{}.json", rep.run.info.id));
    let written = std::fs::create_dir_all(&dir)
        .map_err(anyhow::Error::from)
        .and_then(|_| report::to_json(rep))
        .and_then(|text| std::fs::write(&path, text).map_err(anyhow::Error::from));
    match written {
        Ok(()) => Some(crate::notify::ReportFile {
            path: std::path::absolute(&path).unwrap_or(path),
            ..json
        }),
        Err(e) => {
            tracing::warn!(
                target: "pushscan::notify",
                "cannot write {}: {e:#}; the alert points at the journal only",
                path.display()
            );
            None
        }
    }
}

/// `pushscan notify test`: a test message through every configured channel.
/// Exit 0 when all delivered, 1 when one failed.
pub async fn notify_test(cfg: &crate::notify::NotifyConfig, source: &str) -> Result<i32, Fail> {
    let deliveries = crate::notify::send_test(cfg, source).await;
    let mut text = String::new();
    for d in &deliveries {
        match &d.error {
            None => text.push_str(&format!(
                "{:<8} {}  ok ({} attempt{})\n",
                d.channel,
                display(&d.target, 300),
                d.attempts,
                if d.attempts == 1 { "" } else { "s" }
            )),
            Some(e) => text.push_str(&format!(
                "{:<8} {}  FAILED after {} attempt{}: {}\n",
                d.channel,
                display(&d.target, 300),
                d.attempts,
                if d.attempts == 1 { "" } else { "s" },
                display(e, 500)
            )),
        }
    }
    write_out(&text, None)?;
    Ok(if deliveries.iter().all(|d| d.error.is_none()) {
        exit::OK
    } else {
        exit::DETECTED
    })
}

/// Loads the alert settings of `notify test`: a file, or a playbook's section.
pub fn notify_config(
    file: Option<&Path>,
    playbook: Option<&Path>,
) -> Result<(crate::notify::NotifyConfig, String), Fail> {
    match (file, playbook) {
        (Some(f), _) => Ok((
            crate::notify::NotifyConfig::load(f).code(exit::CONFIG)?,
            f.display().to_string(),
        )),
        (None, Some(p)) => {
            let pb = crate::playbook::Playbook::load(p).code(exit::CONFIG)?;
            match pb.notify {
                Some(n) => Ok((n, p.display().to_string())),
                None => Err(Fail::new(
                    exit::USAGE,
                    anyhow::anyhow!("{} has no `notify:` section", p.display()),
                )),
            }
        }
        (None, None) => Err(Fail::new(
            exit::USAGE,
            anyhow::anyhow!("give --notify-config FILE or -p PLAYBOOK"),
        )),
    }
}

/// `pushscan notify log`: recorded alert deliveries.
pub fn notify_log(state_dir: &Path, run: Option<i64>, json: bool) -> Result<i32, Fail> {
    let reader = Reader::open(state_dir).code(exit::IO)?;
    let rows = reader.notifications(run).code(exit::IO)?;
    let text = if json {
        serde_json::to_string_pretty(&rows).code(exit::SOFTWARE)? + "\n"
    } else {
        let mut t = String::from(
            "RUN   AT                        KIND           CHANNEL  STATUS  TRIES  TARGET\n",
        );
        for r in &rows {
            t.push_str(&format!(
                "{:<5} {:<25} {:<14} {:<8} {:<7} {:>5}  {}\n",
                r.run_id
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| "-".into()),
                r.at,
                r.kind,
                r.channel,
                r.status,
                r.attempts,
                display(&r.target, 200)
            ));
            if !r.hosts.is_empty() {
                t.push_str(&format!(
                    "      hosts: {}\n",
                    display(&r.hosts.join(", "), 300)
                ));
            }
            if let Some(e) = &r.error {
                t.push_str(&format!("      error: {}\n", display(e, 500)));
            }
        }
        t
    };
    write_out(&text, None)?;
    Ok(exit::OK)
}

/// `pushscan cleanup`: run `run`, the last run, or every run (`all`).
pub async fn cleanup(
    state_dir: &Path,
    run: Option<i64>,
    all: bool,
    dry_run: bool,
    access: &sweep::Access,
) -> Result<i32, Fail> {
    let reader = Reader::open(state_dir).code(exit::IO)?;
    let runs: Vec<i64> = if all {
        reader
            .runs(usize::MAX >> 1)
            .code(exit::IO)?
            .into_iter()
            .map(|r| r.id)
            .collect()
    } else {
        vec![reader.run(run).code(exit::USAGE)?.id]
    };
    drop(reader);
    let mut failed = 0;
    for id in runs {
        failed += crate::cleanup::cleanup_run(state_dir, id, dry_run, access)
            .await?
            .hosts_failed;
    }
    Ok(if failed > 0 {
        exit::INCOMPLETE
    } else {
        exit::OK
    })
}

/// `pushscan history HOST`.
pub fn history(state_dir: &Path, host: &str, limit: usize, json: bool) -> Result<i32, Fail> {
    let reader = Reader::open(state_dir).code(exit::IO)?;
    let (items, found) = reader.host_history(host, limit).code(exit::IO)?;
    let text = if json {
        serde_json::to_string_pretty(&serde_json::json!({
            "host": host,
            "results": items,
            "found_on_host": found,
        }))
        .code(exit::SOFTWARE)?
            + "\n"
    } else {
        report::history_table(host, &items, &found)
    };
    write_out(&text, None)?;
    Ok(exit::OK)
}

/// `pushscan prune --keep-days N`: forget old runs and their evidence files.
pub async fn prune(state_dir: &Path, keep_days: u64) -> Result<i32, Fail> {
    let journal = crate::journal::Journal::open(state_dir).code(exit::IO)?;
    let ids = journal.prune(keep_days).await.code(exit::IO)?;
    journal.close();
    for id in &ids {
        let dir = state_dir.join("evidence").join(format!("run-{id}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot remove {}", dir.display()))
                .code(exit::IO)?;
        }
    }
    write_out(
        &format!("pruned {} run(s) older than {keep_days} days\n", ids.len()),
        None,
    )?;
    Ok(exit::OK)
}

/// `pushscan report`.
pub fn report(
    state_dir: &Path,
    run: Option<i64>,
    format: Format,
    output: Option<&Path>,
    blind_days: u64,
) -> Result<i32, Fail> {
    let reader = Reader::open(state_dir).code(exit::IO)?;
    let rep = report::load(&reader, run, blind_days).code(exit::USAGE)?;
    let text = match format {
        Format::Table => report::to_table(&rep),
        Format::Json => report::to_json(&rep).code(exit::SOFTWARE)?,
        Format::Csv => report::to_csv(&rep).code(exit::SOFTWARE)?,
    };
    write_out(&text, output)?;
    let mut counts = std::collections::BTreeMap::new();
    for h in &rep.hosts {
        let c = crate::model::HostClass::parse(&h.status).unwrap_or(crate::model::HostClass::Error);
        *counts.entry(c).or_insert(0usize) += 1;
    }
    Ok(sweep::exit_code_for(&counts))
}

/// `pushscan runs`.
pub fn runs(state_dir: &Path, limit: usize, json: bool) -> Result<i32, Fail> {
    let reader = Reader::open(state_dir).code(exit::IO)?;
    let runs = reader.runs(limit).code(exit::IO)?;
    let text = if json {
        serde_json::to_string_pretty(&runs).code(exit::SOFTWARE)? + "\n"
    } else {
        report::runs_table(&runs)
    };
    write_out(&text, None)?;
    Ok(exit::OK)
}

/// One entry of `pushscan parse --format json`: the file and its parse.
#[derive(Debug, Serialize)]
pub struct ParsedFile {
    pub file: String,
    #[serde(flatten)]
    pub report: ParsedReport,
}

/// Reports larger than this are not parsed by `pushscan parse`.
const PARSE_CAP: u64 = 16 * 1024 * 1024;

/// `pushscan parse`: parses EmoCheck reports already on disk. Exit 1 when
/// any is a detection, 2 when any is unparseable, else 0.
pub fn parse(files: &[PathBuf], json: bool) -> Result<i32, Fail> {
    let mut out = Vec::new();
    for f in files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parsed = match std::fs::metadata(f) {
            Ok(m) if m.len() > PARSE_CAP => ParsedReport::unparseable(format!(
                "file is {} bytes, over the {PARSE_CAP}-byte cap",
                m.len()
            )),
            Ok(_) => match std::fs::read(f) {
                Ok(bytes) => crate::parser::emocheck::parse(&name, &bytes),
                Err(e) => ParsedReport::unparseable(format!("cannot read: {e}")),
            },
            Err(e) => ParsedReport::unparseable(format!("cannot read: {e}")),
        };
        out.push(ParsedFile {
            file: f.display().to_string(),
            report: parsed,
        });
    }
    let text = if json {
        serde_json::to_string_pretty(&out).code(exit::SOFTWARE)? + "\n"
    } else {
        let mut t = String::new();
        for ParsedFile { file, report: p } in &out {
            t.push_str(&format!(
                "{}  {}  host {}  scan time {}  v{}\n",
                display(file, 200),
                p.status.as_str(),
                display(p.hostname.as_deref().unwrap_or("?"), 80),
                display(p.scan_time.as_deref().unwrap_or("?"), 40),
                display(p.checker_version.as_deref().unwrap_or("?"), 20),
            ));
            for pr in &p.processes {
                t.push_str(&format!(
                    "    {}  PID {}  {}  {}\n",
                    display(&pr.name, 120),
                    pr.pid.map(|x| x.to_string()).unwrap_or_else(|| "?".into()),
                    display(&pr.image_path, 300),
                    display(pr.registry_key.as_deref().unwrap_or("-"), 300)
                ));
            }
            for w in &p.warnings {
                t.push_str(&format!("    warning: {}\n", display(w, 300)));
            }
        }
        t
    };
    write_out(&text, None)?;
    let any = |s: ReportStatus| out.iter().any(|p| p.report.status == s);
    Ok(if any(ReportStatus::Detected) {
        exit::DETECTED
    } else if any(ReportStatus::Unparseable) {
        exit::INCOMPLETE
    } else {
        exit::OK
    })
}

/// `pushscan plan`: the waves and what each host gets, without connecting. Exit 0, or 66
/// when the checker does not match its pin (the plan is still printed).
pub fn plan(
    inventory: &Path,
    playbook: &Path,
    limit: Option<&str>,
    overrides: &crate::rollout::Overrides,
    json: bool,
) -> Result<i32, Fail> {
    let inv = crate::inventory::load(inventory).code(exit::CONFIG)?;
    let pb = crate::playbook::Playbook::load(playbook).code(exit::CONFIG)?;
    let plans = sweep::plan_hosts(&inv, limit, &pb)?;
    let rollout = pb
        .rollout
        .clone()
        .with(overrides)
        .map_err(|e| Fail::new(exit::USAGE, anyhow::anyhow!("rollout: {e}")))?;
    let plan = crate::plan::build(
        &pb,
        &inventory.display().to_string(),
        limit,
        &plans,
        &rollout,
    );
    let text = if json {
        let mut t = serde_json::to_string_pretty(&plan).code(exit::SOFTWARE)?;
        t.push('\n');
        t
    } else {
        crate::plan::to_text(&plan)
    };
    write_out(&text, None)?;
    Ok(if plan.checker.matches_pin {
        exit::OK
    } else {
        exit::CHECKER
    })
}

/// `pushscan pin FILE`: prints the SHA-256 to put in a playbook.
pub fn pin(file: &Path, playbook: Option<&Path>, x86: bool) -> Result<i32, Fail> {
    let (digest, size) = crate::playbook::sha256_file(file).map_err(|e| {
        Fail::new(
            exit::CHECKER,
            anyhow::anyhow!("cannot read {}: {e}", file.display()),
        )
    })?;
    write_out(
        &format!("{digest}  {}  ({size} bytes)\n", file.display()),
        None,
    )?;
    if let Some(pb) = playbook {
        crate::playbook::record_pin(pb, file, &digest, x86).code(exit::CONFIG)?;
        write_out(
            &format!(
                "recorded in {} (checker{}.sha256)\n",
                pb.display(),
                if x86 { ".x86" } else { "" }
            ),
            None,
        )?;
    }
    Ok(exit::OK)
}
