//! The subcommands, as library functions: `main.rs` turns flags into these
//! calls and an exit code, nothing more.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use crate::exit::{self, Fail, WithCode};
use crate::inventory::{self, list};
use crate::model::{ParsedReport, ReportStatus};
use crate::report;
use crate::sanitize::display;
use crate::store;
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
    /// CSV with one row per finding (`report::to_csv_with`, `per_finding`).
    FindingsCsv,
    /// One self-contained page (see `report::html`).
    Html,
}

/// A report file a sweep writes when it ends (`sweep --report FILE`), its
/// format taken from the file's extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportTarget {
    pub path: PathBuf,
    pub format: Format,
}

impl ReportTarget {
    /// `.html`/`.htm`, `.json`, `.findings.csv` (one row per finding) or `.csv` (one row
    /// per host), any case; anything else is refused before the sweep starts, not after it.
    pub fn from_path(path: &Path) -> Result<ReportTarget, String> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let findings_csv = path
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .to_ascii_lowercase()
                    .ends_with(".findings.csv")
            })
            .unwrap_or(false);
        let format = match ext.as_deref() {
            Some("html" | "htm") => Format::Html,
            Some("json") => Format::Json,
            Some("csv") if findings_csv => Format::FindingsCsv,
            Some("csv") => Format::Csv,
            _ => {
                return Err(format!(
                    "{}: the report format comes from the extension: .html, .json, .csv or .findings.csv",
                    path.display()
                ))
            }
        };
        Ok(ReportTarget {
            path: path.to_path_buf(),
            format,
        })
    }
}

/// What `pushscan report` prints and how.
#[derive(Debug, Clone)]
pub struct ReportRequest {
    pub run: Option<i64>,
    pub format: Format,
    pub output: Option<PathBuf>,
    pub blind_days: u64,
    /// Past results per host (timeline in HTML, `history` in JSON).
    pub history: usize,
    pub csv: report::CsvOptions,
}

/// Renders `rep` in `format` (table, JSON, CSV with `csv`, HTML).
fn render(
    rep: &report::RunReport,
    format: Format,
    csv: report::CsvOptions,
) -> Result<String, Fail> {
    Ok(match format {
        Format::Table => report::to_table(rep),
        Format::Json => report::to_json(rep).code(exit::SOFTWARE)?,
        Format::Csv => report::to_csv_with(rep, csv).code(exit::SOFTWARE)?,
        Format::FindingsCsv => report::to_csv_with(
            rep,
            report::CsvOptions {
                per_finding: true,
                ..csv
            },
        )
        .code(exit::SOFTWARE)?,
        Format::Html => report::html::to_html(rep),
    })
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

/// Writes `text` to `path` readable by its owner only (0600 on unix), not
/// through a link: for files under the state dir.
fn write_private(text: &str, path: &Path) -> Result<(), Fail> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        o.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    o.open(path)
        .and_then(|mut f| {
            // A page left readable by an earlier version is closed too.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            }
            f.write_all(text.as_bytes())
        })
        .map_err(|e| {
            Fail::new(
                exit::IO,
                anyhow::anyhow!("cannot write {}: {e}", path.display()),
            )
        })
}

/// What happens after a sweep or resume besides the terminal report.
#[derive(Debug, Clone, Default)]
pub struct AfterRun {
    /// `--report FILE` (and `--report-json FILE`): report files to write.
    pub reports: Vec<ReportTarget>,
    /// Where the alert settings come from (default: the run's playbook).
    pub notify: crate::notify::Source,
}

/// `pushscan sweep`: runs the sweep, prints the terminal report, and returns
/// the fleet exit code (0 clean, 1 detection, 2 incomplete). `report_json`:
/// also write the JSON report there. Alerts come from the playbook's
/// `notify:` section, if any (see [`sweep_with`] for more).
pub async fn sweep(cfg: SweepConfig, report_json: Option<PathBuf>) -> Result<i32, Fail> {
    let reports = report_json
        .into_iter()
        .map(|path| ReportTarget {
            path,
            format: Format::Json,
        })
        .collect();
    sweep_with(
        cfg,
        &AfterRun {
            reports,
            ..AfterRun::default()
        },
    )
    .await
}

/// `pushscan sweep` with report files and alert settings: the sweep, the
/// terminal report, each report file, then the alerts (which never change
/// the exit code).
pub async fn sweep_with(cfg: SweepConfig, after: &AfterRun) -> Result<i32, Fail> {
    preflight_notify(&cfg.playbook, &after.notify)?;
    let state_dir = cfg.state_dir.clone();
    // The playbook's `state:` (retention, size warning); one that does not
    // load is the sweep's to report.
    let limits = crate::playbook::Playbook::load(&cfg.playbook)
        .map(|p| p.state)
        .ok();
    let outcome = sweep::sweep(cfg).await?;
    let code = finish_sweep(&state_dir, &outcome, after).await;
    if let Some(limits) = limits {
        keep_state_within(&state_dir, &limits).await;
    }
    code
}

/// After a sweep: forget runs older than `state.keep_days` with their
/// evidence, then warn when the state dir is still over `state.max_bytes`.
/// Neither changes the sweep's exit code; a failure is a warning.
async fn keep_state_within(state_dir: &Path, limits: &crate::playbook::StateLimits) {
    if limits.keep_days > 0 {
        match prune_runs(state_dir, limits.keep_days).await {
            Ok(ids) if !ids.is_empty() => eprintln!(
                "pushscan: pruned {} run(s) older than {} days (state.keep_days)",
                ids.len(),
                limits.keep_days
            ),
            Ok(_) => {}
            Err(e) => eprintln!("pushscan: warning: pruning old runs: {e:#}"),
        }
    }
    let dir = state_dir.to_path_buf();
    let size = tokio::task::spawn_blocking(move || tree_size(&dir))
        .await
        .unwrap_or(0);
    if size > limits.max_bytes {
        eprintln!(
            "pushscan: warning: the state dir {} holds {size} bytes, over state.max_bytes \
             ({}): lower state.keep_days, or run pushscan prune --keep-days N",
            state_dir.display(),
            limits.max_bytes
        );
    }
}

/// Bytes of the regular files under `dir`, links not followed; what cannot
/// be read counts as nothing.
fn tree_size(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(e.path()),
                Ok(t) if t.is_file() => {
                    total = total.saturating_add(e.metadata().map_or(0, |m| m.len()));
                }
                _ => {}
            }
        }
    }
    total
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
    control: &crate::fleet::Control,
    after: &AfterRun,
) -> Result<i32, Fail> {
    let outcome = sweep::resume(state_dir, run, forks, access, control).await?;
    finish_sweep(state_dir, &outcome, after).await
}

/// The `notify:` section of the playbook stored with run `run_id`.
fn run_playbook_notify(
    state_dir: &Path,
    run_id: i64,
) -> anyhow::Result<Option<crate::notify::NotifyConfig>> {
    let reader = store::open_reader(state_dir)?;
    let src = reader.run_sources(run_id)?;
    let pb = crate::playbook::Playbook::parse(&src.playbook_text, Path::new(&src.playbook_path))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(pb.notify)
}

async fn finish_sweep(
    state_dir: &Path,
    outcome: &sweep::SweepOutcome,
    after: &AfterRun,
) -> Result<i32, Fail> {
    let reports = &after.reports;
    let alerts = after
        .notify
        .resolve(|| run_playbook_notify(state_dir, outcome.run_id));
    let reader = store::open_reader(state_dir).code(exit::IO)?;
    // The raw report texts are loaded for an HTML page: one asked for, or the
    // one an alert points at.
    let opts = report::LoadOptions {
        raw_cap: (reports.iter().any(|t| t.format == Format::Html)
            || matches!(alerts, Ok(Some(_))))
        .then_some(report::RAW_CAP),
        ..report::LoadOptions::default()
    };
    let rep = report::load_with(&*reader, Some(outcome.run_id), &opts).code(exit::IO)?;
    drop(reader);
    write_out(&report::to_table(&rep), None)?;
    // Every report file is attempted; the first failure is returned once the
    // resume hint below has been printed.
    let mut failed: Option<Fail> = None;
    for t in reports {
        let written = render(&rep, t.format, report::CsvOptions::default())
            .and_then(|text| write_out(&text, Some(&t.path)));
        if let Err(e) = written {
            match &failed {
                None => failed = Some(e),
                Some(_) => eprintln!("pushscan: {e}"),
            }
        }
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
    match alerts {
        Ok(Some(cfg)) => {
            let file = alert_report_file(state_dir, &rep, reports);
            crate::notify::after_run(&cfg, state_dir, &rep, file.as_ref()).await;
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(
            target: "pushscan::notify",
            "run {}: alerts not sent: {e:#}",
            outcome.run_id
        ),
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(outcome.exit_code),
    }
}

/// What `pushscan inventory` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InventoryView {
    /// `--list`: every group and host, as ansible-inventory's JSON.
    List,
    /// `--graph GROUP`: the group tree from GROUP.
    Graph(String),
    /// `--host PATTERN`: the variables of the one host it matches.
    Host(String),
}

/// `pushscan inventory`: the inventory as `ansible-inventory` shows it.
/// `export` shows own variables rather than merged ones (`--list`,
/// `--host`); `limit` selects hosts as for a sweep (`--list`, `--graph`).
pub async fn inventory(
    sources: &[PathBuf],
    limit: Option<&str>,
    view: InventoryView,
    export: bool,
) -> Result<i32, Fail> {
    let loaded = inventory::load_sources(sources).await.code(exit::CONFIG)?;
    for w in &loaded.warnings {
        tracing::warn!("inventory: {}", crate::sanitize::display(w, 1000));
    }
    let inv = &loaded.inventory;
    let selected = match limit {
        Some(p) => Some(inv.select(p).code(exit::USAGE)?),
        None => None,
    };
    let text = match view {
        InventoryView::List => list::to_text(&list::list_json(inv, selected.as_deref(), export)),
        InventoryView::Graph(group) => {
            let tree = list::graph(inv, &group, selected.as_deref()).ok_or_else(|| {
                Fail::new(
                    exit::USAGE,
                    anyhow::anyhow!(
                        "--graph {}: no such group in {}",
                        display(&group, 200),
                        inv.source.display()
                    ),
                )
            })?;
            // Names go to the terminal as they are, except for control
            // characters (an LDAP source is not the operator's own text).
            tree.lines()
                .map(|l| display(l, usize::MAX) + "\n")
                .collect()
        }
        InventoryView::Host(pattern) => {
            let hosts = inv.select(&pattern).code(exit::USAGE)?;
            let [host] = hosts[..] else {
                return Err(Fail::new(
                    exit::USAGE,
                    anyhow::anyhow!(
                        "--host {} matches {} hosts; name exactly one",
                        display(&pattern, 200),
                        hosts.len()
                    ),
                ));
            };
            list::to_text(&list::host_json(host, export))
        }
    };
    write_out(&text, None)?;
    Ok(exit::OK)
}

/// The report file an alert points at and may attach: the HTML report file
/// of `--report` when given (else its JSON one), otherwise the run's HTML
/// report written to `STATE/reports/run-N.html`. `None` when it cannot be
/// written: the alert then points at the journal only.
fn alert_report_file(
    state_dir: &Path,
    rep: &report::RunReport,
    reports: &[ReportTarget],
) -> Option<crate::notify::ReportFile> {
    let content_type = |f: Format| match f {
        Format::Html => "text/html; charset=utf-8",
        Format::Json => "application/json",
        Format::Csv | Format::FindingsCsv => "text/csv; charset=utf-8",
        Format::Table => "text/plain; charset=utf-8",
    };
    let given = reports
        .iter()
        .find(|t| t.format == Format::Html)
        .or_else(|| reports.iter().find(|t| t.format == Format::Json));
    if let Some(t) = given {
        return Some(crate::notify::ReportFile {
            path: std::path::absolute(&t.path).unwrap_or_else(|_| t.path.clone()),
            content_type: content_type(t.format).into(),
        });
    }
    let dir = state_dir.join("reports");
    let path = dir.join(format!("run-{}.html", rep.run.info.id));
    // Beside the journal, as private as it is.
    let written = crate::store::create_private_dir(&dir)
        .map_err(|e| Fail::new(exit::IO, e))
        .and_then(|_| render(rep, Format::Html, report::CsvOptions::default()))
        .and_then(|text| write_private(&text, &path));
    match written {
        Ok(()) => Some(crate::notify::ReportFile {
            path: std::path::absolute(&path).unwrap_or(path),
            content_type: content_type(Format::Html).into(),
        }),
        Err(e) => {
            tracing::warn!(
                target: "pushscan::notify",
                "cannot write {}: {e}; the alert points at the journal only",
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
    let reader = store::open_reader(state_dir).code(exit::IO)?;
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
    control: &crate::fleet::Control,
) -> Result<i32, Fail> {
    let reader = store::open_reader(state_dir).code(exit::IO)?;
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
    let mut interrupted = false;
    for id in runs {
        // A stop between two runs leaves the later ones as they are: nothing of theirs
        // was touched, and the journal still lists what may be left there.
        if control.shutdown.is_requested() {
            interrupted = true;
            break;
        }
        let summary = crate::cleanup::cleanup_run(state_dir, id, dry_run, access, control).await?;
        failed += summary.hosts_failed;
        interrupted |= summary.interrupted;
    }
    Ok(if failed > 0 || interrupted {
        exit::INCOMPLETE
    } else {
        exit::OK
    })
}

/// `pushscan history HOST`.
pub fn history(state_dir: &Path, host: &str, limit: usize, json: bool) -> Result<i32, Fail> {
    let reader = store::open_reader(state_dir).code(exit::IO)?;
    let (items, found) = reader.host_history(host, limit).code(exit::IO)?;
    // Containment actions come several per containment: a wider window than results.
    let actions = reader
        .host_actions(host, limit.saturating_mul(20))
        .code(exit::IO)?;
    let text = if json {
        serde_json::to_string_pretty(&serde_json::json!({
            "host": host,
            "results": items,
            "found_on_host": found,
            "actions": actions,
        }))
        .code(exit::SOFTWARE)?
            + "\n"
    } else {
        report::history_table(host, &items, &found) + &report::actions_table(&actions)
    };
    write_out(&text, None)?;
    Ok(exit::OK)
}

/// `pushscan prune --keep-days N`: forget old runs and their evidence files.
pub async fn prune(state_dir: &Path, keep_days: u64) -> Result<i32, Fail> {
    let ids = prune_runs(state_dir, keep_days).await.code(exit::IO)?;
    write_out(
        &format!("pruned {} run(s) older than {keep_days} days\n", ids.len()),
        None,
    )?;
    Ok(exit::OK)
}

/// Forgets the runs that started more than `keep_days` ago, with their
/// evidence and alert report; their IDs.
async fn prune_runs(state_dir: &Path, keep_days: u64) -> anyhow::Result<Vec<i64>> {
    let journal = store::open(state_dir)?;
    let ids = journal.prune(keep_days).await;
    journal.close();
    let ids = ids?;
    for id in &ids {
        let dir = state_dir.join("evidence").join(format!("run-{id}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot remove {}", dir.display()))?;
        }
        let page = state_dir.join("reports").join(format!("run-{id}.html"));
        if page.exists() {
            std::fs::remove_file(&page)
                .with_context(|| format!("cannot remove {}", page.display()))?;
        }
    }
    Ok(ids)
}

/// `pushscan report`.
pub fn report(state_dir: &Path, req: &ReportRequest) -> Result<i32, Fail> {
    if req.format != Format::Csv && (req.csv.bom || req.csv.crlf || req.csv.per_finding) {
        return Err(Fail::new(
            exit::USAGE,
            anyhow::anyhow!("--bom, --crlf and --csv-rows apply to --format csv only"),
        ));
    }
    let reader = store::open_reader(state_dir).code(exit::IO)?;
    let opts = report::LoadOptions {
        blind_days: req.blind_days,
        history: req.history,
        raw_cap: (req.format == Format::Html).then_some(report::RAW_CAP),
        ..report::LoadOptions::default()
    };
    let rep = report::load_with(&*reader, req.run, &opts).code(exit::USAGE)?;
    let text = render(&rep, req.format, req.csv)?;
    write_out(&text, req.output.as_deref())?;
    let mut counts = std::collections::BTreeMap::new();
    for h in &rep.hosts {
        let c = crate::model::HostClass::parse(&h.status).unwrap_or(crate::model::HostClass::Error);
        *counts.entry(c).or_insert(0usize) += 1;
    }
    Ok(sweep::exit_code_for(&counts))
}

/// `pushscan runs`.
pub fn runs(state_dir: &Path, limit: usize, json: bool) -> Result<i32, Fail> {
    let reader = store::open_reader(state_dir).code(exit::IO)?;
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
/// Findings listed per file by `parse`'s table (JSON has them all).
const PARSE_SHOWN: usize = 200;

/// What reads the files of `pushscan parse`: a checker by name, a Hayabusa level, a
/// playbook's `results:` (the checker overrides its parser, the level its `min_level`).
#[derive(Debug, Default)]
pub struct ParseWith {
    pub checker: Option<String>,
    pub min_level: Option<String>,
    pub playbook: Option<PathBuf>,
}

/// `pushscan parse`: parses result files already on disk with the registered parser
/// `parser`. Exit 1 when any is a detection, 2 when any is unparseable, else 0.
pub fn parse(files: &[PathBuf], with: &ParseWith, json: bool) -> Result<i32, Fail> {
    let usage = |e: String| Fail::new(exit::USAGE, anyhow::Error::msg(e));
    let (mut name, mut settings) = ("emocheck".to_string(), crate::parser::Settings::default());
    if let Some(p) = &with.playbook {
        let pb = crate::playbook::Playbook::load(p).code(exit::CONFIG)?;
        name = pb.results.parser.clone();
        settings = pb.results.parser_settings();
    }
    if let Some(c) = &with.checker {
        name = c.clone();
    }
    if let Some(l) = &with.min_level {
        settings.min_level = Some(crate::parser::hayabusa::level(l).ok_or_else(|| {
            usage(format!(
                "unknown level {:?} (informational, low, medium, high, critical)",
                display(l, 40)
            ))
        })?);
    }
    let parser = crate::parser::build(&name, &settings).map_err(usage)?;
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
                Ok(bytes) => parser.parse_file(&name, &bytes),
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
            for f in p.findings.iter().take(PARSE_SHOWN) {
                match f.as_process() {
                    Some(pr) => t.push_str(&format!(
                        "    {}  PID {}  {}  {}\n",
                        display(&pr.name, 120),
                        pr.pid_text(),
                        display(&pr.image_path, 300),
                        display(pr.registry_key.as_deref().unwrap_or("-"), 300)
                    )),
                    None => t.push_str(&format!(
                        "    {}\n",
                        display(&crate::report::finding_text(f), 600)
                    )),
                }
            }
            if p.findings.len() > PARSE_SHOWN {
                t.push_str(&format!(
                    "    ... and {} more finding(s) (--format json lists them all)\n",
                    p.findings.len() - PARSE_SHOWN
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
pub async fn plan(
    sources: &[PathBuf],
    playbook: &Path,
    limit: Option<&str>,
    overrides: &crate::rollout::Overrides,
    json: bool,
    probe: bool,
) -> Result<i32, Fail> {
    let loaded = crate::inventory::load_sources(sources)
        .await
        .code(exit::CONFIG)?;
    for w in &loaded.warnings {
        tracing::warn!("inventory: {}", crate::sanitize::display(w, 1000));
    }
    let inv = loaded.inventory;
    let pb = crate::playbook::Playbook::load(playbook).code(exit::CONFIG)?;
    let plans = sweep::plan_hosts(&inv, limit, &pb)?;
    let rollout = pb
        .rollout
        .clone()
        .with(overrides)
        .map_err(|e| Fail::new(exit::USAGE, anyhow::anyhow!("rollout: {e}")))?;
    let mut plan = crate::plan::build(&pb, &loaded.label, limit, &plans, &rollout);
    if probe {
        crate::plan::probe(&mut plan, &plans, crate::plan::PROBE_TIMEOUT).await;
    }
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
pub fn pin(
    file: &Path,
    playbook: Option<&Path>,
    x86: bool,
    input: Option<&str>,
) -> Result<i32, Fail> {
    let (digest, size) = crate::digest::sha256_file(file).map_err(|e| {
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
        use crate::playbook::PinTarget;
        let (target, field) = match (input, x86) {
            (Some(name), _) => (PinTarget::Input(name), format!("input {name}'s sha256")),
            (None, true) => (PinTarget::X86, "checker.x86.sha256".to_string()),
            (None, false) => (PinTarget::Checker, "checker.sha256".to_string()),
        };
        crate::playbook::record_pin(pb, file, &digest, target).code(exit::CONFIG)?;
        write_out(&format!("recorded in {} ({field})\n", pb.display()), None)?;
    }
    Ok(exit::OK)
}
