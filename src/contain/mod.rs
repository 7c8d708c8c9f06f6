//! `pushscan contain` and `pushscan uncontain`: act on a run's detections.
//!
//! The last step of the EmoCheck workflow: on each detected host, secure the
//! evidence, stop the process, delete (or quarantine) its image, delete its Run
//! value and cut the host off the network except for this jump host, then check it
//! again. Everything acted on comes from the journal's detections, never from text
//! the operator types: the values are validated (`validate.rs`) and quoted for the
//! host's shell (`commands.rs`), and a host with one value that does not validate is
//! refused whole, with the reason, while the others go on.
//!
//! Safety rails, in order: a hard cap on hosts per invocation (checked before any
//! connection); a dry run that prints every remote command is the default, and
//! execution needs `--yes` or a typed confirmation on a terminal; every action is
//! journaled before it runs (intent) and after (exit code, output digest, verified);
//! evidence is secured before anything is destroyed, and a file whose copy could not
//! be secured is not deleted (unless quarantined on the host).
//!
//! The hosts run through the fleet executor (`fleet.rs`), ten at a time. On Ctrl-C or
//! SIGTERM no further host is started (each is journaled with an `interrupted` action,
//! phase `skipped`), a host in flight finishes its actions (a host is never left half
//! contained by the stop), the re-check is not run, and the containment is closed
//! with status `interrupted` (else `finished`). `uncontain` goes host by host and stops
//! the same way.

pub mod commands;
pub mod net;
pub mod validate;

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::events::Event;
use crate::exit::{self, Fail, WithCode};
use crate::fleet::{self, Control};
use crate::inventory;
use crate::model::{attr, HostClass};
use crate::pipeline::{connect, SweepCtx};
use crate::plan::HostPlan;
use crate::playbook::Playbook;
use crate::sanitize::display;
use crate::store::{self, ActionResult, HostRecord, NewAction, NewContainment, Store, StoreReader};
use crate::sweep::{self, Access};
use crate::transport::{Connection, ExecOutcome};

use commands::{posix, win, ProcState};
use validate::{Hive, Platform, RunValue};

/// Time allowed for one remote command of an action.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// Output kept per remote command (stdout and stderr each).
const OUTPUT_CAP: usize = 64 * 1024;
/// Default size cap of an evidence copy.
pub const DEFAULT_EVIDENCE_CAP: u64 = 64 * 1024 * 1024;
/// Hosts acted on at the same time (the cap on hosts is small anyway).
const PARALLEL_HOSTS: usize = 10;
/// What the journal and the output say of a host a stop kept from starting.
const NOT_STARTED: &str = "not started: contain interrupted before this host";

/// One containment action; the order of the variants is the order they run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    Evidence,
    Kill,
    Remove,
    Unpersist,
    Isolate,
}

impl Action {
    pub const ALL: [Action; 5] = [
        Action::Evidence,
        Action::Kill,
        Action::Remove,
        Action::Unpersist,
        Action::Isolate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Evidence => "evidence",
            Action::Kill => "kill",
            Action::Remove => "remove",
            Action::Unpersist => "unpersist",
            Action::Isolate => "isolate",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

/// Whether commands really run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    /// `--dry-run`: print the plan, never ask, never touch a host.
    DryRun,
    /// Print the plan, then ask on the terminal; without a terminal, refuse (64).
    Ask,
    /// `--yes`: print the plan and run it.
    Yes,
}

/// What `pushscan contain` was asked to do.
#[derive(Debug, Clone)]
pub struct ContainOptions {
    pub state_dir: PathBuf,
    /// The run whose detections to act on (default: the latest run).
    pub run: Option<i64>,
    /// Only these hosts (each must be a detection of the run).
    pub hosts: Vec<String>,
    pub actions: Vec<Action>,
    pub confirm: Confirm,
    pub max_hosts: usize,
    /// Move image files into a quarantine directory on the host instead of deleting.
    pub quarantine: bool,
    /// Largest image file pulled as evidence.
    pub evidence_cap: u64,
    /// The jump host's address as the isolated hosts must still reach it
    /// (default: the local address toward each host).
    pub jump_address: Option<IpAddr>,
    /// Run the checker again on the hosts afterwards (a new run).
    pub recheck: bool,
}

/// One detected process of a host, with its values checked.
#[derive(Debug, Clone)]
struct Target {
    name: String,
    pid: Option<u32>,
    image: String,
    run_value: Option<RunValue>,
    run_key_text: Option<String>,
}

/// One host to act on, decided before any connection.
struct HostWork {
    rec: HostRecord,
    platform: Platform,
    /// Why the host is refused (nothing runs on it).
    refused: Vec<String>,
    targets: Vec<Target>,
    /// Blocked ranges for isolation (Windows), or why isolation cannot be done.
    ranges: Option<Result<String, String>>,
    plan: Option<HostPlan>,
}

impl HostWork {
    fn name(&self) -> &str {
        &self.rec.host
    }
}

/// `pushscan contain`. Exit 0: every host acted on verified and re-checked clear;
/// 1: a host still detected after the re-check; 2: nothing still detected, but a
/// host was refused, an action failed or was not verified, or a host was not
/// re-checked; 64 usage (too many hosts, no confirmation possible, unknown host).
pub async fn contain(
    opts: &ContainOptions,
    access: &Access,
    control: &Control,
) -> Result<i32, Fail> {
    let events = &control.events;
    if opts.actions.is_empty() {
        return Err(Fail::new(
            exit::USAGE,
            anyhow::anyhow!("--actions is empty"),
        ));
    }
    let reader = store::open_reader(&opts.state_dir).code(exit::IO)?;
    let run = reader.run(opts.run).code(exit::USAGE)?;
    let all = reader.hosts(run.id).code(exit::IO)?;
    let mut selected: Vec<HostRecord> = Vec::new();
    if opts.hosts.is_empty() {
        selected = all
            .iter()
            .filter(|h| h.class == Some(HostClass::Detected))
            .cloned()
            .collect();
    } else {
        for name in &opts.hosts {
            match all.iter().find(|h| &h.host == name) {
                Some(h) if h.class == Some(HostClass::Detected) => {
                    if !selected.iter().any(|s| &s.host == name) {
                        selected.push(h.clone());
                    }
                }
                Some(h) => {
                    return Err(Fail::new(
                        exit::USAGE,
                        anyhow::anyhow!(
                            "--host {}: not a detection in run {} (its class there: {})",
                            display(name, 120),
                            run.id,
                            h.class.map(|c| c.as_str()).unwrap_or("unfinished")
                        ),
                    ))
                }
                None => {
                    return Err(Fail::new(
                        exit::USAGE,
                        anyhow::anyhow!(
                            "--host {}: not a host of run {} (see `pushscan report --run {}`)",
                            display(name, 120),
                            run.id,
                            run.id
                        ),
                    ))
                }
            }
        }
    }
    if selected.is_empty() {
        events.emit(Event::Line(format!(
            "run {}: no detected host; nothing to contain",
            run.id
        )));
        return Ok(exit::OK);
    }
    // The hard limit comes before anything else touches a host or the network.
    if selected.len() > opts.max_hosts {
        return Err(Fail::new(
            exit::USAGE,
            anyhow::anyhow!(
                "run {} has {} detected host(s) selected, more than --max-hosts {}: refusing \
                 before any connection (a wrong report must not become a fleet-wide deletion); \
                 name the hosts with --host, or raise --max-hosts after checking the report",
                run.id,
                selected.len(),
                opts.max_hosts
            ),
        ));
    }
    let src = reader.run_sources(run.id).code(exit::USAGE)?;
    let pb =
        Playbook::parse(&src.playbook_text, Path::new(&src.playbook_path)).code(exit::CONFIG)?;
    let inv =
        inventory::parse(&src.inventory_text, Path::new(&src.inventory_path)).code(exit::CONFIG)?;

    let mut works = Vec::new();
    for rec in selected {
        works.push(prepare(rec, &pb, &inv, opts).await);
    }

    let mut out = String::new();
    out.push_str(&format!(
        "pushscan contain: run {}, {} host(s), actions {}{}\n",
        run.id,
        works.len(),
        opts.actions
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(","),
        if opts.quarantine { " (quarantine)" } else { "" }
    ));
    for w in &works {
        out.push_str(&plan_text(w, opts));
    }
    events.emit(Event::Text(out));
    let refused = works.iter().filter(|w| !w.refused.is_empty()).count();

    match opts.confirm {
        Confirm::DryRun => {
            events.emit(Event::Line("dry run: nothing was run on any host".into()));
            return Ok(if refused > 0 {
                exit::INCOMPLETE
            } else {
                exit::OK
            });
        }
        Confirm::Ask => {
            let names: Vec<&str> = works
                .iter()
                .filter(|w| w.refused.is_empty())
                .map(|w| w.name())
                .collect();
            if !confirm(&names, "contain")? {
                events.emit(Event::Line(
                    "not confirmed: nothing was run on any host".into(),
                ));
                return Ok(exit::OK);
            }
        }
        Confirm::Yes => {}
    }

    // ---- execution ----
    let journal = store::open(&opts.state_dir).code(exit::IO)?;
    let operator = crate::identity::current_user();
    let cid = journal
        .start_containment(NewContainment {
            kind: "contain".into(),
            source_run: Some(run.id),
            operator: operator.clone(),
            controller: crate::identity::controller_name(),
            actions: opts
                .actions
                .iter()
                .map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(","),
            hosts: works.iter().map(|w| w.name().to_string()).collect(),
        })
        .await
        .code(exit::IO)?;
    for w in works.iter().filter(|w| !w.refused.is_empty()) {
        journal
            .action_intent(NewAction {
                containment_id: cid,
                run_id: Some(run.id),
                host: w.name().to_string(),
                action: "refused".into(),
                target: String::new(),
                command: String::new(),
                operator: operator.clone(),
                phase: "refused".into(),
                message: Some(w.refused.join("; ")),
            })
            .await
            .code(exit::IO)?;
    }
    let todo: Vec<HostWork> = works.into_iter().filter(|w| w.refused.is_empty()).collect();
    let ctx = Arc::new(sweep::context(
        run.id,
        pb.clone(),
        journal.clone(),
        opts.state_dir
            .join("evidence")
            .join(format!("run-{}", run.id)),
        access,
        todo.iter().filter_map(|w| w.plan.as_ref()),
    )?);
    let shared = Arc::new(Shared {
        opts: opts.clone(),
        cid,
        run_id: run.id,
        operator,
        reports: reader_reports(&*reader, &todo),
    });
    drop(reader);
    control.shutdown.listen();
    let mut results: Vec<HostResult> = Vec::new();
    let ran = fleet::run(
        todo,
        PARALLEL_HOSTS,
        &control.shutdown,
        events,
        |w| w.name().to_string(),
        |w| {
            let (ctx, shared) = (ctx.clone(), shared.clone());
            async move { contain_host(&ctx, &shared, w).await }
        },
        |done| {
            results.push(done.result.unwrap_or_else(|e| HostResult {
                host: done.key,
                lines: vec![format!("  {e}")],
                all_verified: false,
                touched: false,
            }))
        },
    )
    .await;
    // The hosts never started: journaled, and said, as such.
    for w in &ran.not_started {
        journal
            .action_intent(NewAction {
                containment_id: cid,
                run_id: Some(run.id),
                host: w.name().to_string(),
                action: "interrupted".into(),
                target: String::new(),
                command: String::new(),
                operator: shared.operator.clone(),
                phase: "skipped".into(),
                message: Some(NOT_STARTED.into()),
            })
            .await
            .code(exit::IO)?;
        results.push(HostResult {
            host: w.name().to_string(),
            lines: vec![format!("  {NOT_STARTED}")],
            all_verified: false,
            touched: false,
        });
    }
    results.sort_by(|a, b| a.host.cmp(&b.host));
    for r in &results {
        events.emit(Event::Contained {
            host: r.host.clone(),
            verified: r.all_verified,
            lines: r.lines.clone(),
        });
    }
    drop(ctx);

    // ---- re-check through the normal sweep pipeline ----
    let mut recheck_run = None;
    let mut still_detected = false;
    let mut not_clear = false;
    let checked: Vec<String> = results
        .iter()
        .filter(|r| r.touched)
        .map(|r| r.host.clone())
        .collect();
    if ran.interrupted {
        not_clear = true;
        events.emit(Event::Line("re-check not run: interrupted".into()));
    } else if opts.recheck && !checked.is_empty() {
        match sweep::recheck(&opts.state_dir, run.id, &checked, access, control).await {
            Ok(outcome) => {
                recheck_run = Some(outcome.run_id);
                let reader = store::open_reader(&opts.state_dir).code(exit::IO)?;
                let classes: BTreeMap<String, (Option<HostClass>, Option<String>)> = reader
                    .hosts(outcome.run_id)
                    .code(exit::IO)?
                    .into_iter()
                    .map(|h| (h.host, (h.class, h.reason)))
                    .collect();
                for host in &checked {
                    let (class, reason) = classes.get(host).cloned().unwrap_or((None, None));
                    let clear = class == Some(HostClass::NotDetected);
                    still_detected |= class == Some(HostClass::Detected);
                    not_clear |= !clear;
                    let verdict = match class {
                        Some(HostClass::NotDetected) => "clear".to_string(),
                        Some(HostClass::Detected) => "STILL DETECTED".to_string(),
                        Some(c) => format!("not checked ({c})"),
                        None => "no result".to_string(),
                    };
                    events.emit(Event::Rechecked {
                        run: outcome.run_id,
                        host: host.clone(),
                        verdict,
                        reason: reason.clone().filter(|_| !clear),
                    });
                    let id = journal
                        .action_intent(NewAction {
                            containment_id: cid,
                            run_id: Some(run.id),
                            host: host.clone(),
                            action: "recheck".into(),
                            target: format!("run {}", outcome.run_id),
                            command: "the playbook's checker, through the sweep pipeline".into(),
                            operator: shared.operator.clone(),
                            phase: "intent".into(),
                            message: None,
                        })
                        .await
                        .code(exit::IO)?;
                    journal
                        .action_result(
                            id,
                            ActionResult {
                                phase: if clear { "done" } else { "failed" }.into(),
                                exit_code: None,
                                output_sha256: None,
                                verified: Some(clear),
                                message: format!(
                                    "run {}: {}{}",
                                    outcome.run_id,
                                    class.map(|c| c.as_str()).unwrap_or("no result"),
                                    reason.map(|r| format!(": {r}")).unwrap_or_default()
                                ),
                                command: "the playbook's checker, through the sweep pipeline"
                                    .into(),
                                evidence_path: None,
                            },
                        )
                        .await
                        .code(exit::IO)?;
                }
            }
            Err(e) => {
                not_clear = true;
                events.emit(Event::Line(format!("re-check not run: {e}")));
            }
        }
    } else if !opts.recheck {
        not_clear = true;
        events.emit(Event::Line("re-check skipped (--no-recheck)".into()));
    }
    let status = if ran.interrupted {
        "interrupted"
    } else {
        "finished"
    };
    journal
        .finish_containment(cid, recheck_run, status)
        .await
        .code(exit::IO)?;
    journal.close();
    let all_ok = refused == 0 && results.iter().all(|r| r.all_verified);
    Ok(if still_detected {
        exit::DETECTED
    } else if !all_ok || not_clear {
        exit::INCOMPLETE
    } else {
        exit::OK
    })
}

/// Validates a host's detections for the chosen actions and finds its inventory
/// entry and (for isolation) the jump host's address toward it. Never connects.
async fn prepare(
    rec: HostRecord,
    pb: &Playbook,
    inv: &inventory::Inventory,
    opts: &ContainOptions,
) -> HostWork {
    let platform = rec
        .transport
        .as_deref()
        .map_or(Platform::Posix, Platform::of_transport);
    let wants = |a: Action| opts.actions.contains(&a);
    let mut refused = Vec::new();
    let mut targets: Vec<Target> = Vec::new();
    // What contain acts on is what a finding's attributes say, whichever checker found
    // it: a process ID to kill, an image file to secure and quarantine, a Run key to remove,
    // a matched file (`path`, a YARA match) to secure and quarantine like an image.
    let findings: Vec<crate::model::Finding> = rec
        .report
        .as_ref()
        .map(|r| r.findings.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|f| {
            f.attr(attr::PID).is_some()
                || f.attr(attr::IMAGE).is_some()
                || f.attr(attr::PATH).is_some()
        })
        .collect();
    if findings.is_empty() {
        refused.push("the detection names no process ID, image or file to act on".to_string());
    }
    for f in findings {
        // A file finding names no process: there is nothing to kill, and its file goes
        // through the same validation, evidence and removal as a process image.
        let file_only = f.attr(attr::PID).is_none() && f.attr(attr::IMAGE).is_none();
        let image = f
            .attr(attr::IMAGE)
            .or_else(|| f.attr(attr::PATH))
            .unwrap_or("")
            .to_string();
        let run_key = f.attr(attr::RUN_KEY).map(str::to_string);
        let mut t = Target {
            name: f.title.clone(),
            pid: None,
            image: image.clone(),
            run_value: None,
            run_key_text: run_key.clone(),
        };
        if wants(Action::Evidence) || wants(Action::Kill) || wants(Action::Remove) {
            if let Err(e) = validate::image_path(platform, &image) {
                refused.push(e);
            }
        }
        if wants(Action::Kill) && !file_only {
            match validate::pid(platform, f.pid()) {
                Ok(pid) => t.pid = Some(pid),
                Err(e) => refused.push(e),
            }
        }
        if wants(Action::Unpersist) && platform == Platform::Windows {
            if let Some(k) = run_key.as_deref().filter(|k| !k.is_empty()) {
                match validate::run_key(k) {
                    Ok(v) => t.run_value = Some(v),
                    Err(e) => refused.push(e),
                }
            }
        }
        targets.push(t);
    }
    let host = inv.host(&rec.host);
    let plan = match host {
        None => {
            refused.push("not in the run's stored inventory".into());
            None
        }
        Some(h) => match HostPlan::new(pb, h) {
            Ok(p) => Some(p),
            Err(e) => {
                refused.push(format!("host plan: {e}"));
                None
            }
        },
    };
    let mut ranges = None;
    if wants(Action::Isolate) && platform == Platform::Windows {
        let jump = match (opts.jump_address, host) {
            (Some(a), _) => Ok(a),
            (None, Some(h)) => {
                let port = plan
                    .as_ref()
                    .and_then(|p| p.target.describe().port)
                    .unwrap_or(5985);
                net::local_address_toward(&h.address, port).await
            }
            (None, None) => Err("no address to route to".into()),
        };
        let r = jump.and_then(|j| {
            if j.is_unspecified() {
                Err("the jump address is unspecified (0.0.0.0)".into())
            } else {
                net::block_ranges(j).map(|r| (j, r))
            }
        });
        match r {
            Ok((j, r)) => {
                tracing::debug!(host = %rec.host, jump = %j, "isolation ranges {r}");
                ranges = Some(Ok(r));
            }
            Err(e) => {
                refused.push(format!("isolation: {e}"));
                ranges = Some(Err(e));
            }
        }
    }
    HostWork {
        rec,
        platform,
        refused,
        targets,
        ranges,
        plan,
    }
}

/// Distinct values, first seen first.
fn distinct<T: PartialEq + Clone>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut v: Vec<T> = Vec::new();
    for i in items {
        if !v.contains(&i) {
            v.push(i);
        }
    }
    v
}

/// The dry-run text of one host: every remote command, escaped for the terminal.
fn plan_text(w: &HostWork, opts: &ContainOptions) -> String {
    let mut o = format!(
        "\nhost {} ({}, {})\n",
        display(w.name(), 120),
        w.rec.transport.as_deref().unwrap_or("?"),
        display(w.rec.address.as_deref().unwrap_or("?"), 120)
    );
    for t in &w.targets {
        o.push_str(&format!(
            "  detected: {}  PID {}  {}  {}\n",
            display(&t.name, 120),
            t.pid
                .map(|p| p.to_string())
                .unwrap_or_else(|| "?".to_string()),
            display(&t.image, 300),
            display(t.run_key_text.as_deref().unwrap_or("-"), 300)
        ));
    }
    if !w.refused.is_empty() {
        o.push_str("  REFUSED: nothing will run on this host:\n");
        for r in &w.refused {
            o.push_str(&format!("    - {}\n", display(r, 400)));
        }
        return o;
    }
    for a in &opts.actions {
        for p in planned(w, *a, opts) {
            o.push_str(&format!(
                "  {:<9} {}\n",
                a.as_str(),
                display(&p.target, 300)
            ));
            for l in p.lines {
                // Steps that are not shell commands (a file transfer) are in parentheses.
                let prompt = if l.starts_with('(') { "  " } else { "$ " };
                // Whole: the host-side path check makes POSIX lines long, and the
                // dry run must show exactly what will run.
                o.push_str(&format!("      {prompt}{}\n", display(&l, 12_000)));
            }
        }
    }
    o
}

/// What one planned action works on.
#[derive(Debug, Clone)]
enum Item {
    /// An image file (evidence, remove).
    Image(String),
    /// A PID and the image it must still run.
    Process(u32, String),
    /// A Run value and the image its data must name.
    RunValue(RunValue, String),
    /// The ranges to block.
    Ranges(String),
    /// Nothing applies (said in the target text).
    Nothing,
}

/// One action on one target, as planned.
struct Planned {
    target: String,
    lines: Vec<String>,
    item: Item,
}

/// The commands an action will run on a host, per target (before any output is
/// known: `<SID>` stands for each user hive the host lists, `<SHA256>` for the
/// evidence hash). A target the action does not apply to says why.
fn planned(w: &HostWork, a: Action, opts: &ContainOptions) -> Vec<Planned> {
    let win = w.platform == Platform::Windows;
    let images = distinct(w.targets.iter().map(|t| t.image.clone()));
    let mut v = Vec::new();
    match a {
        Action::Evidence => {
            for i in &images {
                let hash = if win {
                    win::hash(i).unwrap_or_default()
                } else {
                    posix::hash(i)
                };
                v.push(Planned {
                    target: i.clone(),
                    lines: vec![
                        hash,
                        format!(
                            "(read the file over the transport, at most {} bytes)",
                            opts.evidence_cap
                        ),
                    ],
                    item: Item::Image(i.clone()),
                });
            }
        }
        Action::Kill => {
            for t in distinct(w.targets.iter().map(|t| (t.pid, t.image.clone()))) {
                let Some(pid) = t.0 else { continue };
                let lines = if win {
                    vec![
                        win::process_check(pid),
                        win::kill(pid),
                        win::process_check(pid),
                    ]
                } else {
                    vec![
                        posix::process_check(pid),
                        posix::kill(pid, &t.1),
                        posix::process_check(pid),
                    ]
                };
                v.push(Planned {
                    target: format!("PID {pid} if it still runs {}", t.1),
                    lines,
                    item: Item::Process(pid, t.1.clone()),
                });
            }
        }
        Action::Remove => {
            for i in &images {
                let lines = match (win, opts.quarantine) {
                    (true, false) => vec![
                        win::delete(i).unwrap_or_default(),
                        win::exists(i).unwrap_or_default(),
                    ],
                    (true, true) => vec![
                        win::quarantine_dir(),
                        win::quarantine_move(i, "<SHA256>").unwrap_or_default(),
                        win::exists(i).unwrap_or_default(),
                    ],
                    (false, false) => vec![posix::delete(i), posix::exists(i)],
                    (false, true) => vec![posix::quarantine(i, "<SHA256>"), posix::exists(i)],
                };
                v.push(Planned {
                    target: i.clone(),
                    lines,
                    item: Item::Image(i.clone()),
                });
            }
        }
        Action::Unpersist => {
            if !win {
                v.push(Planned {
                    target: "not done on this platform (Run keys are Windows'; cron/systemd persistence is out of scope)".into(),
                    lines: vec![],
                    item: Item::Nothing,
                });
            }
            for t in &w.targets {
                match &t.run_value {
                    Some(rv) => {
                        let mut lines = Vec::new();
                        let sid = match rv.hive {
                            Hive::CurrentUser => {
                                lines.push(win::list_user_hives());
                                Some("<SID>")
                            }
                            Hive::LocalMachine => None,
                        };
                        lines.push(win::reg_query(rv, sid).unwrap_or_default());
                        lines.push(win::reg_delete(rv, sid).unwrap_or_default());
                        lines.push(win::reg_query(rv, sid).unwrap_or_default());
                        v.push(Planned {
                            target: format!("{} value {}", win::key_path(rv, sid), rv.name),
                            lines,
                            item: Item::RunValue(rv.clone(), t.image.clone()),
                        });
                    }
                    None if win => v.push(Planned {
                        target: format!("{}: the report names no Run key", t.name),
                        lines: vec![],
                        item: Item::Nothing,
                    }),
                    None => {}
                }
            }
        }
        Action::Isolate => match (&w.ranges, win) {
            (Some(Ok(r)), true) => v.push(Planned {
                target: format!("block every address but this jump host's ({r})"),
                lines: vec![
                    win::firewall_delete(),
                    win::firewall_add("in", r),
                    win::firewall_add("out", r),
                    win::firewall_show(),
                ],
                item: Item::Ranges(r.clone()),
            }),
            (_, false) => v.push(Planned {
                target: "not done on this platform (see docs/contain.md)".into(),
                lines: vec![],
                item: Item::Nothing,
            }),
            (_, true) => {}
        },
    }
    v
}

/// Asks the operator on the terminal; without one, refuses (exit 64).
fn confirm(hosts: &[&str], what: &str) -> Result<bool, Fail> {
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return Err(Fail::new(
            exit::USAGE,
            anyhow::anyhow!(
                "not executed: {what} runs the commands above only with --yes or a confirmation \
                 typed on a terminal, and stdin is not a terminal (use --dry-run to only print them)"
            ),
        ));
    }
    if hosts.is_empty() {
        return Ok(false);
    }
    eprintln!("\nThese {} host(s) will be acted on:", hosts.len());
    for h in hosts {
        eprintln!("  {}", display(h, 120));
    }
    eprint!("Type yes to {what} them: ");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).code(exit::IO)?;
    Ok(line.trim() == "yes")
}

/// Read once, shared by every host task.
struct Shared {
    opts: ContainOptions,
    cid: i64,
    run_id: i64,
    operator: String,
    /// Per host: the detection report (id, remote name, SHA-256, raw bytes).
    reports: BTreeMap<String, ReportCopy>,
}

#[derive(Clone)]
struct ReportCopy {
    id: i64,
    remote_name: String,
    sha256: String,
    raw: Vec<u8>,
}

fn reader_reports(reader: &dyn StoreReader, todo: &[HostWork]) -> BTreeMap<String, ReportCopy> {
    let mut m = BTreeMap::new();
    for w in todo {
        if let Some(r) = &w.rec.report {
            let raw = reader.report_raw(r.id).ok().flatten().unwrap_or_default();
            m.insert(
                w.name().to_string(),
                ReportCopy {
                    id: r.id,
                    remote_name: r.remote_name.clone(),
                    sha256: r.sha256.clone(),
                    raw,
                },
            );
        }
    }
    m
}

/// The end of one host's containment.
struct HostResult {
    host: String,
    lines: Vec<String>,
    all_verified: bool,
    /// A connection was made and actions ran (the host is worth re-checking).
    touched: bool,
}

/// The commands of one action as they run: their text, the SHA-256 of everything
/// they printed, the exit code of the last one.
struct Runner<'a> {
    conn: &'a mut dyn Connection,
    ran: Vec<String>,
    digest: Sha256,
    last_exit: Option<i64>,
}

/// What one remote command gave back.
struct Out {
    code: Option<i64>,
    stdout: String,
    stderr: String,
}

impl<'a> Runner<'a> {
    fn new(conn: &'a mut dyn Connection) -> Runner<'a> {
        Runner {
            conn,
            ran: Vec::new(),
            digest: Sha256::new(),
            last_exit: None,
        }
    }

    async fn run(&mut self, line: &str) -> Result<Out, String> {
        self.ran.push(line.to_string());
        let o: ExecOutcome = self
            .conn
            .exec_line(line, COMMAND_TIMEOUT, OUTPUT_CAP)
            .await
            .map_err(|e| e.message)?;
        self.digest.update(&o.stdout);
        self.digest.update(&o.stderr);
        if o.timed_out {
            return Err(format!("timed out after {}s", COMMAND_TIMEOUT.as_secs()));
        }
        self.last_exit = o.exit_code;
        Ok(Out {
            code: o.exit_code,
            stdout: commands::text(&o.stdout),
            stderr: commands::text(&o.stderr),
        })
    }

    fn finish(&mut self) -> (String, Option<i64>, String) {
        let digest = hex::encode(std::mem::take(&mut self.digest).finalize());
        (
            std::mem::take(&mut self.ran).join("\n"),
            self.last_exit.take(),
            digest,
        )
    }
}

/// The outcome of one action for the journal and the terminal.
struct Verdict {
    phase: &'static str,
    verified: Option<bool>,
    message: String,
    evidence_path: Option<String>,
}

impl Verdict {
    fn done(message: impl Into<String>) -> Verdict {
        Verdict {
            phase: "done",
            verified: Some(true),
            message: message.into(),
            evidence_path: None,
        }
    }
    fn failed(message: impl Into<String>) -> Verdict {
        Verdict {
            phase: "failed",
            verified: Some(false),
            message: message.into(),
            evidence_path: None,
        }
    }
    fn skipped(message: impl Into<String>) -> Verdict {
        Verdict {
            phase: "skipped",
            verified: None,
            message: message.into(),
            evidence_path: None,
        }
    }
}

/// What the evidence step learnt about one image file.
#[derive(Clone, Default)]
struct EvidenceState {
    sha256: Option<String>,
    secured: bool,
    absent: bool,
}

/// Journals an action before and after it, runs it, and says how it went.
struct Audit<'a> {
    journal: &'a dyn Store,
    shared: &'a Shared,
    host: &'a str,
    lines: Vec<String>,
    all_verified: bool,
}

impl Audit<'_> {
    async fn begin(&self, action: Action, target: &str, planned: &[String]) -> Result<i64, String> {
        self.journal
            .action_intent(NewAction {
                containment_id: self.shared.cid,
                run_id: Some(self.shared.run_id),
                host: self.host.to_string(),
                action: action.as_str().into(),
                target: target.to_string(),
                command: planned.join("\n"),
                operator: self.shared.operator.clone(),
                phase: "intent".into(),
                message: None,
            })
            .await
            .map_err(|e| format!("journal: {e:#}"))
    }

    async fn end(&mut self, id: i64, action: Action, target: &str, r: &mut Runner<'_>, v: Verdict) {
        let (command, exit_code, digest) = r.finish();
        let ran = !command.is_empty();
        if v.verified == Some(false) {
            self.all_verified = false;
        }
        self.lines.push(format!(
            "  {:<9} {}: {}{}",
            action.as_str(),
            display(target, 300),
            match (v.phase, v.verified) {
                ("done", Some(true)) => "ok, verified",
                ("failed", _) => "FAILED",
                ("skipped", _) => "skipped",
                _ => "not verified",
            },
            if v.message.is_empty() {
                String::new()
            } else {
                format!(" ({})", display(&v.message, 400))
            }
        ));
        let res = ActionResult {
            phase: v.phase.into(),
            exit_code,
            output_sha256: ran.then_some(digest),
            verified: v.verified,
            message: v.message,
            command,
            evidence_path: v.evidence_path,
        };
        if let Err(e) = self.journal.action_result(id, res).await {
            self.all_verified = false;
            self.lines.push(format!("  journal: {e:#}"));
        }
    }
}

async fn contain_host(ctx: &SweepCtx, shared: &Shared, w: HostWork) -> HostResult {
    let host = w.name().to_string();
    let mut audit = Audit {
        journal: &*ctx.journal,
        shared,
        host: &host,
        lines: Vec::new(),
        all_verified: true,
    };
    let Some(plan) = w.plan.clone() else {
        return HostResult {
            host: host.clone(),
            lines: vec!["  no host plan".into()],
            all_verified: false,
            touched: false,
        };
    };
    let mut conn = match connect(ctx, &plan).await {
        Ok(c) => c,
        Err(e) => {
            return HostResult {
                host: host.clone(),
                lines: vec![format!("  connect: {}", display(&e.message, 300))],
                all_verified: false,
                touched: false,
            }
        }
    };
    if let Err(e) = journal_own(&*ctx.journal, shared.run_id, &host, conn.own_intents()).await {
        conn.close().await;
        return HostResult {
            host: host.clone(),
            lines: vec![format!("  {e}: nothing run")],
            all_verified: false,
            touched: false,
        };
    }
    let opts = &shared.opts;
    let win = w.platform == Platform::Windows;
    let mut evidence: BTreeMap<String, EvidenceState> = BTreeMap::new();
    for action in Action::ALL.into_iter().filter(|a| opts.actions.contains(a)) {
        for p in planned(&w, action, opts) {
            let target = p.target.clone();
            if p.lines.is_empty() {
                // Nothing to run (not applicable on this platform, no Run key).
                let id = match audit.begin(action, &target, &[]).await {
                    Ok(id) => id,
                    Err(e) => {
                        audit.lines.push(format!("  {e}"));
                        audit.all_verified = false;
                        continue;
                    }
                };
                let mut r = Runner::new(conn.as_mut());
                audit
                    .end(id, action, &target, &mut r, Verdict::skipped(""))
                    .await;
                continue;
            }
            let id = match audit.begin(action, &target, &p.lines).await {
                Ok(id) => id,
                Err(e) => {
                    // No intent on record: the action must not run.
                    audit
                        .lines
                        .push(format!("  {e}: {} not run", action.as_str()));
                    audit.all_verified = false;
                    continue;
                }
            };
            let mut r = Runner::new(conn.as_mut());
            let v = match (action, &p.item) {
                (Action::Evidence, Item::Image(path)) => {
                    let (v, st) = do_evidence(&mut r, &w, &host, path, shared).await;
                    evidence.insert(path.clone(), st);
                    v
                }
                (Action::Kill, Item::Process(pid, image)) => {
                    do_kill(&mut r, win, *pid, image).await
                }
                (Action::Remove, Item::Image(path)) => {
                    let ev = if opts.actions.contains(&Action::Evidence) {
                        Some(evidence.get(path).cloned().unwrap_or_default())
                    } else {
                        None
                    };
                    do_remove(&mut r, win, path, ev, opts.quarantine).await
                }
                (Action::Unpersist, Item::RunValue(rv, image)) => {
                    do_unpersist(&mut r, rv, image).await
                }
                (Action::Isolate, Item::Ranges(ranges)) => do_isolate(&mut r, ranges).await,
                _ => Verdict::failed("internal: action and target do not match"),
            };
            audit.end(id, action, &target, &mut r, v).await;
        }
    }
    own_removed(&*ctx.journal, shared.run_id, &host, conn.as_ref());
    conn.close().await;
    HostResult {
        host: host.clone(),
        lines: audit.lines,
        all_verified: audit.all_verified,
        touched: true,
    }
}

/// Journals, under `run`, what `conn` makes on the host for its own use before it runs
/// anything (a Windows host reached over SMB alone: the services of its commands), as a
/// sweep does: after a crash, `pushscan cleanup <run>` removes them.
async fn journal_own(
    journal: &dyn Store,
    run: i64,
    host: &str,
    own: Vec<(&'static str, String)>,
) -> Result<(), String> {
    if own.is_empty() {
        return Ok(());
    }
    journal
        .intents(run, host, &own)
        .await
        .map_err(|e| format!("journal: {e:#}"))
}

/// Journals as removed what `conn` made for its own use and has removed and checked itself.
fn own_removed(journal: &dyn Store, run: i64, host: &str, conn: &dyn Connection) {
    for (step, target) in conn.own_removed() {
        journal.outcome(run, host, step, true, &target, "");
    }
}

/// Hash the image on the host, pull a copy (capped), check the copy's hash against
/// the host's, store it (non-executable name and mode) with the report that pointed
/// at it.
async fn do_evidence(
    r: &mut Runner<'_>,
    w: &HostWork,
    host: &str,
    path: &str,
    shared: &Shared,
) -> (Verdict, EvidenceState) {
    let win = w.platform == Platform::Windows;
    let mut st = EvidenceState::default();
    let line = if win {
        match win::hash(path) {
            Ok(l) => l,
            Err(e) => return (Verdict::failed(e), st),
        }
    } else {
        posix::hash(path)
    };
    let out = match r.run(&line).await {
        Ok(o) => o,
        Err(e) => return (Verdict::failed(format!("hash: {e}")), st),
    };
    if let Some(why) = commands::parse_refusal(&out.stdout) {
        return (Verdict::failed(format!("refused on the host: {why}")), st);
    }
    let remote = match (out.code, commands::parse_sha256(&out.stdout)) {
        (Some(0), Some(h)) => h,
        _ => {
            // Gone already, or unreadable? Ask the host.
            let exists = if win {
                win::exists(path).unwrap_or_default()
            } else {
                posix::exists(path)
            };
            return match r
                .run(&exists)
                .await
                .map(|o| commands::parse_presence(&o.stdout))
            {
                Ok(Some(false)) => {
                    st.absent = true;
                    (
                        Verdict::skipped("the image file is not on the host (nothing to secure)"),
                        st,
                    )
                }
                _ => (
                    Verdict::failed(format!(
                        "cannot hash the file (exit {}): {}",
                        out.code
                            .map(|c| c.to_string())
                            .unwrap_or_else(|| "?".into()),
                        display(out.stderr.trim(), 200)
                    )),
                    st,
                ),
            };
        }
    };
    st.sha256 = Some(remote.clone());
    let bytes = match r.conn.read_file(path, shared.opts.evidence_cap).await {
        Ok(b) => b,
        Err(e) => {
            return (
                Verdict::failed(format!(
                    "copy not pulled: {} (SHA-256 on the host {remote})",
                    e.message
                )),
                st,
            )
        }
    };
    let local = hex::encode(Sha256::digest(&bytes));
    if local != remote {
        return (
            Verdict::failed(format!(
                "the pulled copy has SHA-256 {local}, the host said {remote}: not kept"
            )),
            st,
        );
    }
    match store_evidence(&shared.opts.state_dir, host, path, &remote, &bytes, shared).await {
        Ok(p) => {
            st.secured = true;
            let mut v = Verdict::done(format!(
                "SHA-256 {remote}, {} bytes, stored {}",
                bytes.len(),
                p.display()
            ));
            v.evidence_path = Some(p.display().to_string());
            (v, st)
        }
        Err(e) => (Verdict::failed(format!("cannot store the copy: {e:#}")), st),
    }
}

/// `STATE/evidence/contain/<host>/<sha256>.bin.evidence` (mode 0400, never a name a
/// shell or Explorer would run), a `<sha256>.json` beside it saying where it came
/// from, and the report that pointed at it (`<report sha256>.report`, mode 0400).
async fn store_evidence(
    state_dir: &Path,
    host: &str,
    remote_path: &str,
    sha256: &str,
    bytes: &[u8],
    shared: &Shared,
) -> anyhow::Result<PathBuf> {
    use anyhow::Context as _;
    let dir = state_dir
        .join("evidence")
        .join("contain")
        .join(crate::sanitize::file_name(host));
    tokio::fs::create_dir_all(&dir)
        .await
        .with_context(|| format!("cannot create {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    }
    // The name is the digest we checked (hex only), never the host's file name.
    let file = dir.join(format!("{sha256}.bin.evidence"));
    write_readonly(&file, bytes).await?;
    let report = shared.reports.get(host);
    if let Some(rep) = report.filter(|r| validate::sha256_hex(&r.sha256)) {
        write_readonly(&dir.join(format!("{}.report", rep.sha256)), &rep.raw).await?;
    }
    let meta = serde_json::json!({
        "host": host,
        "remote_path": remote_path,
        "sha256": sha256,
        "size": bytes.len(),
        "pulled_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "operator": shared.operator,
        "run_id": shared.run_id,
        "containment_id": shared.cid,
        "report": report.map(|r| serde_json::json!({
            "id": r.id,
            "remote_name": r.remote_name,
            "sha256": r.sha256,
            "file": format!("{}.report", r.sha256),
        })),
    });
    let meta_path = dir.join(format!("{sha256}.json"));
    let text = serde_json::to_vec_pretty(&meta)?;
    tokio::fs::write(&meta_path, text)
        .await
        .with_context(|| format!("cannot write {}", meta_path.display()))?;
    Ok(file)
}

/// Writes `bytes` to a new file readable only by us; an existing file with the
/// same content (the same digest pulled again) is kept as it is.
async fn write_readonly(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use tokio::io::AsyncWriteExt as _;
    if let Ok(existing) = tokio::fs::read(path).await {
        if existing == bytes {
            return Ok(());
        }
        anyhow::bail!("{} exists with other content", path.display());
    }
    let mut o = tokio::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    o.mode(0o600);
    let mut f = o
        .open(path)
        .await
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes).await?;
    f.flush().await?;
    f.sync_all().await?;
    drop(f);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(0o400))
            .await
            .with_context(|| format!("cannot make {} read-only", path.display()))?;
    }
    #[cfg(not(unix))]
    {
        let mut p = tokio::fs::metadata(path).await?.permissions();
        p.set_readonly(true);
        tokio::fs::set_permissions(path, p).await?;
    }
    Ok(())
}

fn same_image(win: bool, a: &str, b: &str) -> bool {
    if win {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

async fn check_process(r: &mut Runner<'_>, win: bool, pid: u32) -> Result<ProcState, String> {
    let line = if win {
        win::process_check(pid)
    } else {
        posix::process_check(pid)
    };
    let out = r.run(&line).await?;
    let parsed = if win {
        commands::parse_win_process(&out.stdout)
    } else {
        commands::parse_posix_process(&out.stdout)
    };
    parsed.ok_or_else(|| {
        format!(
            "unreadable process check output: {}",
            display(out.stdout.trim(), 200)
        )
    })
}

/// Stops `pid` only while it runs `image`; verified when the PID is gone or runs
/// something else afterwards.
async fn do_kill(r: &mut Runner<'_>, win: bool, pid: u32, image: &str) -> Verdict {
    match check_process(r, win, pid).await {
        Err(e) => return Verdict::failed(e),
        Ok(ProcState::Gone) => return Verdict::done("already gone: no process has this PID"),
        Ok(ProcState::Runs(p)) if p.is_empty() => {
            return Verdict::failed(
                "the host does not say which executable this PID runs: not killed",
            )
        }
        Ok(ProcState::Runs(p)) if !same_image(win, &p, image) => {
            return Verdict::done(format!(
                "the PID now runs {}, not the reported image (reused PID): not killed; the reported process is gone",
                display(&p, 300)
            ))
        }
        Ok(ProcState::Runs(_)) => {}
    }
    let line = if win {
        win::kill(pid)
    } else {
        posix::kill(pid, image)
    };
    let kill = match r.run(&line).await {
        Ok(o) => o,
        Err(e) => return Verdict::failed(format!("kill: {e}")),
    };
    // The process may take a moment to go (Windows tears it down asynchronously).
    for i in 0..20 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        match check_process(r, win, pid).await {
            Ok(ProcState::Gone) => return Verdict::done("killed; the PID is gone"),
            Ok(ProcState::Runs(p)) if !p.is_empty() && !same_image(win, &p, image) => {
                return Verdict::done("killed; the PID now runs another program")
            }
            Ok(_) => {}
            Err(e) => return Verdict::failed(e),
        }
    }
    Verdict::failed(format!(
        "the process still runs after the kill (exit {}): {}",
        kill.code
            .map(|c| c.to_string())
            .unwrap_or_else(|| "?".into()),
        display(kill.stderr.trim(), 200)
    ))
}

/// Deletes (or quarantines) the image file; verified when the host says it is absent.
async fn do_remove(
    r: &mut Runner<'_>,
    win: bool,
    path: &str,
    evidence: Option<EvidenceState>,
    quarantine: bool,
) -> Verdict {
    if let Some(ev) = &evidence {
        if !ev.secured && !ev.absent && !quarantine {
            return Verdict::failed(
                "its evidence copy was not secured: not deleted (use --quarantine to keep it on \
                 the host, or leave evidence out of --actions to delete it anyway)",
            );
        }
    }
    let exists = if win {
        match win::exists(path) {
            Ok(l) => l,
            Err(e) => return Verdict::failed(e),
        }
    } else {
        posix::exists(path)
    };
    let mut note = String::new();
    if quarantine {
        let sha = match evidence.as_ref().and_then(|e| e.sha256.clone()) {
            Some(s) => s,
            None => {
                let line = if win {
                    win::hash(path).unwrap_or_default()
                } else {
                    posix::hash(path)
                };
                let out = r.run(&line).await;
                if let Some(why) = out
                    .as_ref()
                    .ok()
                    .and_then(|o| commands::parse_refusal(&o.stdout))
                {
                    return Verdict::failed(format!("refused on the host: {why}"));
                }
                match out.map(|o| commands::parse_sha256(&o.stdout)) {
                    Ok(Some(s)) => s,
                    _ => {
                        return match r
                            .run(&exists)
                            .await
                            .map(|o| commands::parse_presence(&o.stdout))
                        {
                            Ok(Some(false)) => Verdict::done("already absent"),
                            _ => {
                                Verdict::failed("cannot hash the file to name its quarantine copy")
                            }
                        }
                    }
                }
            }
        };
        if win {
            // "already exists" is fine: the directory is ours from an earlier run.
            let _ = r.run(&win::quarantine_dir()).await;
            match win::quarantine_move(path, &sha) {
                Ok(l) => {
                    if let Err(e) = r.run(&l).await {
                        return Verdict::failed(format!("move: {e}"));
                    }
                }
                Err(e) => return Verdict::failed(e),
            }
            note = format!("moved to {}", win::quarantine_name(&sha));
        } else {
            match r.run(&posix::quarantine(path, &sha)).await {
                Err(e) => return Verdict::failed(format!("quarantine: {e}")),
                Ok(o) => {
                    if let Some(why) = commands::parse_refusal(&o.stdout) {
                        return Verdict::failed(format!("refused on the host: {why}"));
                    }
                }
            }
            note = format!("moved to {}", posix::quarantine_name(&sha));
        }
    } else {
        let line = if win {
            match win::delete(path) {
                Ok(l) => l,
                Err(e) => return Verdict::failed(e),
            }
        } else {
            posix::delete(path)
        };
        match r.run(&line).await {
            Err(e) => return Verdict::failed(format!("delete: {e}")),
            Ok(o) => {
                if let Some(why) = commands::parse_refusal(&o.stdout) {
                    return Verdict::failed(format!("refused on the host: {why}"));
                }
            }
        }
    }
    match r
        .run(&exists)
        .await
        .map(|o| commands::parse_presence(&o.stdout))
    {
        Ok(Some(false)) => Verdict::done(if note.is_empty() {
            "deleted; the host says it is absent".to_string()
        } else {
            format!("{note}; the host says the original is absent")
        }),
        Ok(Some(true)) => Verdict::failed("the file is still there"),
        Ok(None) => Verdict::failed("unreadable existence check"),
        Err(e) => Verdict::failed(format!("verify: {e}")),
    }
}

/// Deletes the Run value in every loaded user hive (HKCU) or in HKLM, where its data
/// names the image; verified when the query no longer finds it.
async fn do_unpersist(r: &mut Runner<'_>, rv: &RunValue, image: &str) -> Verdict {
    let sids: Vec<Option<String>> = match rv.hive {
        Hive::LocalMachine => vec![None],
        Hive::CurrentUser => match r.run(&win::list_user_hives()).await {
            Ok(o) if o.code == Some(0) => {
                let s = commands::parse_user_sids(&o.stdout);
                if s.is_empty() {
                    return Verdict::failed("reg query HKU lists no user hive (S-1-5-21-...)");
                }
                s.into_iter().map(Some).collect()
            }
            Ok(o) => {
                return Verdict::failed(format!(
                    "reg query HKU failed (exit {}): {}",
                    o.code.map(|c| c.to_string()).unwrap_or_else(|| "?".into()),
                    display(o.stderr.trim(), 200)
                ))
            }
            Err(e) => return Verdict::failed(format!("reg query HKU: {e}")),
        },
    };
    let mut deleted = Vec::new();
    let mut left = Vec::new();
    let mut failures = Vec::new();
    for sid in &sids {
        let sid = sid.as_deref();
        let where_ = win::key_path(rv, sid);
        let (Ok(query), Ok(delete)) = (win::reg_query(rv, sid), win::reg_delete(rv, sid)) else {
            failures.push(format!("{where_}: cannot be quoted"));
            continue;
        };
        let found = match r.run(&query).await {
            Ok(o) if o.code == Some(0) => commands::parse_reg_value(&o.stdout, &rv.name),
            Ok(_) => None,
            Err(e) => {
                failures.push(format!("{where_}: {e}"));
                continue;
            }
        };
        let Some(data) = found else { continue };
        // Only the value that starts this image: a same-named value of another
        // user's, pointing elsewhere, is not ours to delete.
        if !image.is_empty() && !data.to_lowercase().contains(&image.to_lowercase()) {
            left.push(format!("{where_} (its data names {})", display(&data, 200)));
            continue;
        }
        match r.run(&delete).await {
            Ok(_) => {}
            Err(e) => {
                failures.push(format!("{where_}: delete: {e}"));
                continue;
            }
        }
        match r.run(&query).await {
            Ok(o)
                if o.code != Some(0)
                    || commands::parse_reg_value(&o.stdout, &rv.name).is_none() =>
            {
                deleted.push(where_)
            }
            Ok(_) => failures.push(format!("{where_}: still there after reg delete")),
            Err(e) => failures.push(format!("{where_}: verify: {e}")),
        }
    }
    let mut msg = Vec::new();
    if !deleted.is_empty() {
        msg.push(format!("deleted in {}", deleted.join(", ")));
    }
    if !left.is_empty() {
        msg.push(format!("left {}", left.join(", ")));
    }
    if !failures.is_empty() {
        msg.push(format!("FAILED {}", failures.join("; ")));
        return Verdict::failed(msg.join("; "));
    }
    if deleted.is_empty() && left.is_empty() {
        return Verdict::done(format!(
            "absent from the {} hive(s) checked (users not logged on have no loaded hive)",
            sids.len()
        ));
    }
    Verdict::done(msg.join("; "))
}

/// Adds the two block rules (after removing older ones of ours, so a second run does
/// not stack duplicates) and verifies them by listing.
async fn do_isolate(r: &mut Runner<'_>, ranges: &str) -> Verdict {
    // "No rules match" (exit 1) is the normal first-time answer.
    if let Err(e) = r.run(&win::firewall_delete()).await {
        return Verdict::failed(format!("netsh: {e}"));
    }
    for dir in ["in", "out"] {
        match r.run(&win::firewall_add(dir, ranges)).await {
            Ok(o) if o.code == Some(0) => {}
            Ok(o) => {
                return Verdict::failed(format!(
                    "netsh add rule dir={dir} failed (exit {}): {}",
                    o.code.map(|c| c.to_string()).unwrap_or_else(|| "?".into()),
                    display(format!("{}{}", o.stdout, o.stderr).trim(), 200)
                ))
            }
            Err(e) => return Verdict::failed(format!("netsh: {e}")),
        }
    }
    let out = match r.run(&win::firewall_show()).await {
        Ok(o) => o,
        Err(e) => return Verdict::failed(format!("netsh show: {e}")),
    };
    let rules = commands::parse_fw_rules(&out.stdout);
    let norm = |s: &str| s.split_whitespace().collect::<String>();
    let ok_dir = |d: &str| {
        rules.iter().any(|x| {
            x.name == commands::RULE_NAME
                && x.direction.eq_ignore_ascii_case(d)
                && x.action.eq_ignore_ascii_case("Block")
                && x.enabled.eq_ignore_ascii_case("Yes")
                && norm(&x.remote_ip) == norm(ranges)
        })
    };
    if ok_dir("In") && ok_dir("Out") {
        Verdict::done(format!(
            "{} rule(s) named {} listed, inbound and outbound blocks, jump host outside the ranges",
            rules.len(),
            commands::RULE_NAME
        ))
    } else {
        Verdict::failed(format!(
            "the rules listed do not match what was added: {}",
            display(out.stdout.trim(), 400)
        ))
    }
}

// ---------------------------------------------------------------- uncontain

/// What `pushscan uncontain` was asked to do.
#[derive(Debug, Clone)]
pub struct UncontainOptions {
    pub state_dir: PathBuf,
    pub hosts: Vec<String>,
    /// Inventory sources; default: the newest run's stored inventory that knows the host.
    pub inventory: Vec<PathBuf>,
    pub confirm: Confirm,
}

/// The playbook `uncontain` connects with when no run in the journal knows the host:
/// only its work dir matters (the share the WinRM transport opens first).
const UNCONTAIN_PLAYBOOK: &str = "name: uncontain\nchecker:\n  path: pushscan-uncontain-none\n  \
    sha256: \"0000000000000000000000000000000000000000000000000000000000000000\"\n  \
    platform: windows\nwork_dir: 'C:\\Windows\\Temp\\pushscan'\ntimeout: 60s\n\
    results:\n  parser: emocheck\n";

/// `pushscan uncontain`: deletes the isolation rules by name and verifies they are
/// gone. Needs only the inventory: it works after the journal was pruned. Exit 0 when
/// every host is verified free of them, 2 otherwise.
pub async fn uncontain(
    opts: &UncontainOptions,
    access: &Access,
    control: &Control,
) -> Result<i32, Fail> {
    let events = &control.events;
    let (inv, pb) = uncontain_sources(opts).await?;
    let mut plans = Vec::new();
    let mut out = String::from("pushscan uncontain: lift isolation\n");
    for name in &opts.hosts {
        let Some(h) = inv.host(name) else {
            return Err(Fail::new(
                exit::USAGE,
                anyhow::anyhow!("--host {}: not in the inventory", display(name, 120)),
            ));
        };
        out.push_str(&format!(
            "\nhost {} ({:?}, {})\n",
            display(name, 120),
            h.connection,
            display(&h.address, 120)
        ));
        if Platform::of_shell(h.connection.shell()) != Platform::Windows {
            out.push_str("  nothing to lift: isolation is done on Windows hosts only\n");
            continue;
        }
        for l in [
            win::firewall_show(),
            win::firewall_delete(),
            win::firewall_show(),
        ] {
            out.push_str(&format!("      $ {l}\n"));
        }
        let plan = HostPlan::new(&pb, h).map_err(|e| {
            Fail::new(
                exit::CONFIG,
                anyhow::anyhow!("host {}: {e}", display(name, 120)),
            )
        })?;
        plans.push(plan);
    }
    events.emit(Event::Text(out));
    match opts.confirm {
        Confirm::DryRun => {
            events.emit(Event::Line("dry run: nothing was run on any host".into()));
            return Ok(exit::OK);
        }
        Confirm::Ask => {
            let names: Vec<&str> = plans.iter().map(|p| p.host.name.as_str()).collect();
            if !confirm(&names, "uncontain")? {
                events.emit(Event::Line(
                    "not confirmed: nothing was run on any host".into(),
                ));
                return Ok(exit::OK);
            }
        }
        Confirm::Yes => {}
    }
    if plans.is_empty() {
        return Ok(exit::OK);
    }
    let journal = store::open(&opts.state_dir).code(exit::IO)?;
    let contained_by = last_contain_runs(&opts.state_dir, &plans)?;
    let operator = crate::identity::current_user();
    let cid = journal
        .start_containment(NewContainment {
            kind: "uncontain".into(),
            source_run: None,
            operator: operator.clone(),
            controller: crate::identity::controller_name(),
            actions: "uncontain".into(),
            hosts: plans.iter().map(|p| p.host.name.clone()).collect(),
        })
        .await
        .code(exit::IO)?;
    let ctx = sweep::context(
        0,
        pb.clone(),
        journal.clone(),
        opts.state_dir.join("evidence").join("uncontain"),
        access,
        &plans,
    )?;
    let mut all_ok = true;
    let mut interrupted = false;
    control.shutdown.listen();
    for plan in &plans {
        let host = plan.host.name.clone();
        if control.shutdown.is_requested() {
            // Stopped: the hosts not reached are journaled and said as such.
            all_ok = false;
            interrupted = true;
            journal
                .action_intent(NewAction {
                    containment_id: cid,
                    run_id: None,
                    host: host.clone(),
                    action: "interrupted".into(),
                    target: commands::RULE_NAME.into(),
                    command: String::new(),
                    operator: operator.clone(),
                    phase: "skipped".into(),
                    message: Some("not started: uncontain interrupted before this host".into()),
                })
                .await
                .code(exit::IO)?;
            events.emit(Event::Uncontained {
                host,
                lifted: false,
                message: "not started: uncontain interrupted before this host".into(),
            });
            continue;
        }
        let planned = [win::firewall_delete(), win::firewall_show()];
        let id = journal
            .action_intent(NewAction {
                containment_id: cid,
                run_id: None,
                host: host.clone(),
                action: "uncontain".into(),
                target: commands::RULE_NAME.into(),
                command: planned.join("\n"),
                operator: operator.clone(),
                phase: "intent".into(),
                message: None,
            })
            .await
            .code(exit::IO)?;
        let (verdict, command, code, digest) = match connect(&ctx, plan).await {
            Err(e) => (
                Verdict::failed(format!("connect: {}", e.message)),
                String::new(),
                None,
                None,
            ),
            Ok(mut conn) => {
                // The services of commands over SMB are journaled under the run whose
                // detections the host's last containment acted on.
                let own_run = contained_by.get(&host).copied();
                let journaled = match own_run {
                    Some(run) => journal_own(&*journal, run, &host, conn.own_intents()).await,
                    None if conn.own_intents().is_empty() => Ok(()),
                    None => Err(
                        "no containment of this host in the journal to record the services \
                         of its commands over SMB under"
                            .to_string(),
                    ),
                };
                match journaled {
                    Err(e) => {
                        conn.close().await;
                        (
                            Verdict::failed(format!("{e}: nothing run")),
                            String::new(),
                            None,
                            None,
                        )
                    }
                    Ok(()) => {
                        let mut r = Runner::new(conn.as_mut());
                        let v = lift(&mut r).await;
                        let (command, code, digest) = r.finish();
                        if let Some(run) = own_run {
                            own_removed(&*journal, run, &host, conn.as_ref());
                        }
                        conn.close().await;
                        (v, command, code, Some(digest))
                    }
                }
            }
        };
        all_ok &= verdict.verified == Some(true);
        events.emit(Event::Uncontained {
            host: host.clone(),
            lifted: verdict.verified == Some(true),
            message: verdict.message.clone(),
        });
        journal
            .action_result(
                id,
                ActionResult {
                    phase: verdict.phase.into(),
                    exit_code: code,
                    output_sha256: digest,
                    verified: verdict.verified,
                    message: verdict.message,
                    command,
                    evidence_path: None,
                },
            )
            .await
            .code(exit::IO)?;
    }
    drop(ctx);
    let status = if interrupted {
        "interrupted"
    } else {
        "finished"
    };
    journal
        .finish_containment(cid, None, status)
        .await
        .code(exit::IO)?;
    journal.close();
    Ok(if all_ok { exit::OK } else { exit::INCOMPLETE })
}

/// Per host of `plans`: the run whose detections its newest `contain` acted on.
fn last_contain_runs(state_dir: &Path, plans: &[HostPlan]) -> Result<BTreeMap<String, i64>, Fail> {
    let reader = store::open_reader(state_dir).code(exit::IO)?;
    let mut out = BTreeMap::new();
    for p in plans {
        let actions = reader.host_actions(&p.host.name, 200).code(exit::IO)?;
        if let Some(run) = actions
            .iter()
            .filter(|a| a.kind == "contain")
            .filter_map(|a| a.run_id)
            .max()
        {
            out.insert(p.host.name.clone(), run);
        }
    }
    Ok(out)
}

async fn lift(r: &mut Runner<'_>) -> Verdict {
    let deleted = match r.run(&win::firewall_delete()).await {
        Ok(o) => o,
        Err(e) => return Verdict::failed(format!("netsh delete: {e}")),
    };
    let after = match r.run(&win::firewall_show()).await {
        Ok(o) => o,
        Err(e) => return Verdict::failed(format!("netsh show: {e}")),
    };
    let left = commands::parse_fw_rules(&after.stdout)
        .into_iter()
        .filter(|x| x.name == commands::RULE_NAME)
        .count();
    if left > 0 {
        return Verdict::failed(format!(
            "{left} rule(s) named {} still listed",
            commands::RULE_NAME
        ));
    }
    let said = deleted
        .stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("Deleted") || l.starts_with("No rules"))
        .unwrap_or("")
        .to_string();
    Verdict::done(format!(
        "{}no rule named {} is listed any more",
        if said.is_empty() {
            String::new()
        } else {
            format!("{}; ", display(&said, 100))
        },
        commands::RULE_NAME
    ))
}

/// The inventory (and a playbook) to reach the hosts: the sources given, else the
/// newest run in the journal whose stored inventory knows every host.
async fn uncontain_sources(
    opts: &UncontainOptions,
) -> Result<(inventory::Inventory, Playbook), Fail> {
    let builtin =
        || Playbook::parse(UNCONTAIN_PLAYBOOK, Path::new("(uncontain)")).code(exit::SOFTWARE);
    if !opts.inventory.is_empty() {
        let loaded = inventory::load_sources(&opts.inventory)
            .await
            .code(exit::CONFIG)?;
        return Ok((loaded.inventory, builtin()?));
    }
    let reader = store::open_reader(&opts.state_dir).map_err(|e| {
        Fail::new(
            exit::USAGE,
            anyhow::anyhow!("{e:#}; give the inventory with -i"),
        )
    })?;
    for run in reader.runs(200).code(exit::IO)? {
        let Ok(src) = reader.run_sources(run.id) else {
            continue;
        };
        let Ok(inv) = inventory::parse(&src.inventory_text, Path::new(&src.inventory_path)) else {
            continue;
        };
        if opts.hosts.iter().all(|h| inv.host(h).is_some()) {
            let pb = Playbook::parse(&src.playbook_text, Path::new(&src.playbook_path))
                .or_else(|_| builtin().map_err(|e| anyhow::anyhow!("{e}")))
                .code(exit::CONFIG)?;
            return Ok((inv, pb));
        }
    }
    Err(Fail::new(
        exit::USAGE,
        anyhow::anyhow!(
            "no run in the journal knows {}: give the inventory with -i",
            opts.hosts
                .iter()
                .map(|h| display(h, 80))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_parse_and_order() {
        assert_eq!(Action::parse("Kill"), Some(Action::Kill));
        assert_eq!(Action::parse("nuke"), None);
        let mut v = vec![Action::Isolate, Action::Evidence, Action::Remove];
        v.sort();
        assert_eq!(v, vec![Action::Evidence, Action::Remove, Action::Isolate]);
    }

    #[test]
    fn builtin_uncontain_playbook_parses() {
        let pb = Playbook::parse(UNCONTAIN_PLAYBOOK, Path::new("(uncontain)")).unwrap();
        assert_eq!(pb.work_dir, r"C:\Windows\Temp\pushscan");
    }
}
