//! A sweep: inventory → host plans → bounded parallel pipelines → journal.
//!
//! Everything that can be checked without touching a host is checked first
//! (inventory, --limit, playbook, checker pin, templates for every host); a
//! problem there stops the sweep with a config exit code before any
//! connection is opened. Then the fleet executor (`fleet.rs`) runs one task
//! per host on the shared tokio runtime, at most `forks` at a time. The first
//! Ctrl-C or SIGTERM stops starting hosts and lets those in flight finish and
//! clean up (the hosts not started are journaled `not_started`); a second one
//! ends the process at once (the journal already holds every intent).
//!
//! A staged sweep runs its waves (see `rollout.rs`) one after the other, each
//! bounded by the same `forks`; after each wave the gate judges it, and a
//! failed gate halts the sweep: the hosts of later waves are recorded as
//! `not_started` with the reason, and `resume` continues wave by wave.

use crate::identity::{controller_name, current_user};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use crate::events::Event;
use crate::exit::{self, Fail, WithCode};
use crate::fleet::{self, Control};
use crate::inventory;
use crate::leftovers::{self, Leftovers};
use crate::model::HostClass;
use crate::parser;
use crate::pipeline::{run_host, SweepCtx};
use crate::plan::HostPlan;
use crate::playbook::Playbook;
use crate::rollout::{self, Pause, Rollout};
use crate::store::{self, NewRun, RunHost, Store};
pub use crate::transport::Access;
use crate::transport::HostInfo;

/// Everything a sweep needs, decided by the command line.
#[derive(Debug, Clone)]
pub struct SweepConfig {
    /// Inventory sources, read in order into one inventory.
    pub inventory: Vec<PathBuf>,
    pub playbook: PathBuf,
    pub limit: Option<String>,
    pub forks: usize,
    pub state_dir: PathBuf,
    pub access: Access,
    /// Where the operator's events go, and the stop signal.
    pub control: Control,
    /// Command-line overrides of the playbook's `rollout:`.
    pub rollout: rollout::Overrides,
}

/// What a finished sweep reports back.
#[derive(Debug, Clone)]
pub struct SweepOutcome {
    pub run_id: i64,
    pub counts: BTreeMap<HostClass, usize>,
    pub interrupted: bool,
    /// Why a staged sweep stopped before its last wave.
    pub halted: Option<String>,
    pub exit_code: i32,
}

/// The exit code a set of host classes calls for.
pub fn exit_code_for(counts: &BTreeMap<HostClass, usize>) -> i32 {
    if counts.get(&HostClass::Detected).copied().unwrap_or(0) > 0 {
        exit::DETECTED
    } else if counts
        .iter()
        .any(|(c, n)| *n > 0 && *c != HostClass::NotDetected)
    {
        exit::INCOMPLETE
    } else {
        exit::OK
    }
}

/// The shared context of a sweep, resume or cleanup of `plans`: every transport resolves
/// its hosts' credentials first, so a host without one stops the run before anything is
/// touched.
pub(crate) fn context<'a>(
    run_id: i64,
    pb: Playbook,
    journal: Arc<dyn Store>,
    evidence_dir: PathBuf,
    access: &Access,
    plans: impl IntoIterator<Item = &'a HostPlan>,
) -> Result<SweepCtx, Fail> {
    let plans: Vec<&HostPlan> = plans.into_iter().collect();
    let hosts: Vec<(&dyn HostInfo, _)> = plans
        .iter()
        .map(|p| (&p.host as &dyn HostInfo, p.host.connection))
        .collect();
    let sessions = match access.sessions(&hosts) {
        Ok(s) => s,
        Err(mut missing) => {
            let n = missing.len();
            missing.truncate(5);
            return Err(Fail::new(
                exit::CONFIG,
                anyhow::anyhow!(
                    "{n} host(s) without a usable credential:\n  {}",
                    missing.join("\n  ")
                ),
            ));
        }
    };
    Ok(SweepCtx {
        run_id,
        parser: Arc::from(
            parser::build(&pb.results.parser, &pb.results.parser_settings())
                .map_err(|e| Fail::new(exit::CONFIG, anyhow::Error::msg(e)))?,
        ),
        playbook: Arc::new(pb),
        journal,
        evidence_dir,
        sessions,
        earlier: HashMap::new(),
    })
}

/// Renders the plan of every selected host. Needs no network.
pub fn plan_hosts(
    inv: &inventory::Inventory,
    limit: Option<&str>,
    pb: &Playbook,
) -> Result<Vec<HostPlan>, Fail> {
    let selected: Vec<&inventory::Host> = match limit {
        Some(p) => inv.select(p).code(exit::USAGE)?,
        None => inv.hosts.iter().collect(),
    };
    if selected.is_empty() {
        return Err(Fail::new(
            exit::USAGE,
            anyhow::anyhow!("no host selected in {}", inv.source.display()),
        ));
    }
    selected
        .into_iter()
        .map(|h| {
            HostPlan::new(pb, h).map_err(|e| {
                Fail::new(
                    exit::CONFIG,
                    anyhow::anyhow!("{}: host {}: {e}", pb.source.display(), h.name),
                )
            })
        })
        .collect()
}

pub async fn sweep(cfg: SweepConfig) -> Result<SweepOutcome, Fail> {
    // ---- everything that needs no host ----
    if cfg.forks == 0 {
        return Err(Fail::new(
            exit::USAGE,
            anyhow::anyhow!("--forks must be at least 1"),
        ));
    }
    let loaded = inventory::load_sources(&cfg.inventory)
        .await
        .code(exit::CONFIG)?;
    for w in &loaded.warnings {
        tracing::warn!("inventory: {}", crate::sanitize::display(w, 1000));
    }
    // The run stores the inventory as resolved (list JSON), so that resume
    // reads exactly this, without asking the sources again.
    let (inventory_path, inventory_text) = (loaded.label, loaded.text);
    let inv = loaded.inventory;
    let pb = Playbook::load(&cfg.playbook).code(exit::CONFIG)?;
    let checker_size = pb.verify_checker().code(exit::CHECKER)?;
    let plans = plan_hosts(&inv, cfg.limit.as_deref(), &pb)?;
    let rollout = pb
        .rollout
        .clone()
        .with(&cfg.rollout)
        .map_err(|e| Fail::new(exit::USAGE, anyhow::anyhow!("rollout: {e}")))?;
    let waves = {
        let hosts: Vec<&inventory::Host> = plans.iter().map(|p| &p.host).collect();
        rollout::plan_waves(&hosts, &rollout)
    };
    check_pause_possible(&rollout, waves.len())?;
    // The plans hold what the run needs of each host; the rest of the
    // inventory (groups, their vars) is not kept for the length of the sweep.
    drop(inv);
    let mut wave_of = vec![(0usize, None::<String>); plans.len()];
    for w in &waves {
        for &i in &w.hosts {
            wave_of[i] = (w.number, w.partition.clone());
        }
    }

    // ---- the run ----
    let journal = store::open(&cfg.state_dir).code(exit::IO)?;
    let run_id = journal
        .start_run(NewRun {
            operator: current_user(),
            controller: controller_name(),
            playbook_path: pb.source.display().to_string(),
            playbook_name: pb.name.clone(),
            playbook_text: pb.text.clone(),
            inventory_path,
            inventory_text,
            limit: cfg.limit.clone(),
            forks: cfg.forks,
            checker_path: pb.checker_local.display().to_string(),
            checker_sha256: pb.checker.sha256.clone(),
            checker_size,
            hosts: plans
                .iter()
                .zip(&wave_of)
                .map(|(p, (wave, partition))| RunHost {
                    name: p.host.name.clone(),
                    address: p.host.address.clone(),
                    port: p.host.port,
                    transport: p.host.connection.name().to_string(),
                    groups: p.host.groups.clone(),
                    group_paths: p.host.group_paths.clone(),
                    wave: Some(*wave),
                    wave_partition: partition.clone(),
                })
                .collect(),
            rollout: serde_json::to_string(&rollout).ok(),
        })
        .await
        .code(exit::IO)?;
    let access = cfg.access.clone();
    let mut slots: Vec<Option<HostPlan>> = plans.into_iter().map(Some).collect();
    let staged = waves
        .into_iter()
        .map(|w| WavePlans {
            number: w.number,
            partition: w.partition,
            canary: w.canary,
            plans: w.hosts.iter().filter_map(|&i| slots[i].take()).collect(),
        })
        .collect();
    execute(
        journal,
        &cfg.state_dir,
        run_id,
        pb,
        staged,
        rollout,
        cfg.forks,
        HashMap::new(),
        &access,
        &cfg.control,
    )
    .await
}

/// `pause: prompt` asks between waves; without a terminal to ask on, the sweep would hang
/// or guess, so it refuses to start.
fn check_pause_possible(r: &Rollout, waves: usize) -> Result<(), Fail> {
    use std::io::IsTerminal as _;
    if r.pause == Pause::Prompt && waves > 1 && !std::io::stdin().is_terminal() {
        return Err(Fail::new(
            exit::USAGE,
            anyhow::anyhow!(
                "rollout pause: prompt asks on the terminal between waves, but stdin is not a \
                 terminal; use --pause none or a duration (--pause 5m) for unattended sweeps"
            ),
        ));
    }
    Ok(())
}

/// The hosts of one wave, in run order.
struct WavePlans {
    number: usize,
    partition: Option<String>,
    canary: bool,
    plans: Vec<HostPlan>,
}

/// `pushscan resume`: continues run `run` (default: the last unfinished
/// one) with the playbook and inventory stored in it. Hosts with a final
/// result keep it; hosts in flight at a crash, never started, or busy are
/// (re)done from the start (every step is idempotent: mkdir -p, hash
/// compare, overwrite the temp copy, re-run), each once what its interrupted
/// attempt left (the journal says what) is removed over the same connection.
pub async fn resume(
    state_dir: &Path,
    run: Option<i64>,
    forks: Option<usize>,
    access: &Access,
    control: &Control,
) -> Result<SweepOutcome, Fail> {
    let reader = store::open_reader(state_dir).code(exit::IO)?;
    let run_id = match run {
        Some(id) => id,
        None => reader
            .last_unfinished_run()
            .code(exit::IO)?
            .ok_or_else(|| {
                Fail::new(
                    exit::USAGE,
                    anyhow::anyhow!("no unfinished run to resume (see `pushscan runs`)"),
                )
            })?,
    };
    let src = reader.run_sources(run_id).code(exit::USAGE)?;
    let pb =
        Playbook::parse(&src.playbook_text, Path::new(&src.playbook_path)).code(exit::CONFIG)?;
    if pb.checker.sha256 != src.checker_sha256 {
        return Err(Fail::new(
            exit::CHECKER,
            anyhow::anyhow!("run {run_id} was started with checker pin {}, not {}: refusing to resume with another checker", src.checker_sha256, pb.checker.sha256),
        ));
    }
    pb.verify_checker().code(exit::CHECKER)?;
    let inv =
        inventory::parse(&src.inventory_text, Path::new(&src.inventory_path)).code(exit::CONFIG)?;
    // What the interrupted attempts left; a host that is redone loses it first.
    let earlier = leftovers::leftovers(&*reader, run_id, &pb, &inv).code(exit::IO)?;
    drop(reader);
    // The rollout the run started with (a run from before staged rollouts: one wave).
    let rollout: Rollout = match &src.rollout {
        Some(json) => serde_json::from_str(json)
            .with_context(|| format!("run {run_id}: stored rollout unreadable"))
            .code(exit::CONFIG)?,
        None => Rollout::default(),
    };
    let journal = store::open(state_dir).code(exit::IO)?;
    let waves_of = journal.host_waves(run_id).await.code(exit::IO)?;
    let todo = journal.reopen_run(run_id).await.code(exit::IO)?;
    let earlier = earlier_for_rerun(earlier, &todo, &pb, &inv);
    let mut staged: Vec<WavePlans> = Vec::new();
    for name in &todo {
        let Some(host) = inv.host(name) else {
            return Err(Fail::new(
                exit::CONFIG,
                anyhow::anyhow!("host {name} of run {run_id} is not in the run's stored inventory"),
            ));
        };
        let plan = HostPlan::new(&pb, host)
            .map_err(|e| Fail::new(exit::CONFIG, anyhow::anyhow!("host {name}: {e}")))?;
        let (wave, partition) = waves_of.get(name).cloned().unwrap_or((None, None));
        let number = wave.and_then(|w| usize::try_from(w).ok()).unwrap_or(1);
        match staged.iter_mut().find(|w| w.number == number) {
            Some(w) => w.plans.push(plan),
            None => staged.push(WavePlans {
                number,
                partition,
                canary: false,
                plans: vec![plan],
            }),
        }
    }
    staged.sort_by_key(|w| w.number);
    check_pause_possible(&rollout, staged.len())?;
    let forks = forks.unwrap_or(src.forks.max(1));
    execute(
        journal, state_dir, run_id, pb, staged, rollout, forks, earlier, access, control,
    )
    .await
}

/// What `resume` takes away from each host it redoes before redoing it: what the
/// interrupted attempts left (`leftovers::leftovers`) except the pinned files, which the
/// redone host verifies, keeps or replaces itself, and the directories, which it uses.
fn earlier_for_rerun(
    all: Vec<Leftovers>,
    todo: &[String],
    pb: &Playbook,
    inv: &inventory::Inventory,
) -> HashMap<String, Leftovers> {
    let mut out = HashMap::new();
    for mut l in all {
        if !todo.contains(&l.host) {
            continue;
        }
        let Some(plan) = inv.host(&l.host).and_then(|h| HostPlan::new(pb, h).ok()) else {
            continue;
        };
        let pinned: Vec<String> = std::iter::once(plan.checker_path.clone())
            .chain(plan.input_paths())
            .collect();
        l.files.retain(|f| !pinned.contains(f));
        l.dirs.clear();
        if !l.files.is_empty() || !l.services.is_empty() {
            out.insert(l.host.clone(), l);
        }
    }
    out
}

/// A new run of run `from_run`'s stored playbook and inventory on `hosts` only: the
/// re-check after `pushscan contain`, through the same pipeline as any sweep.
pub async fn recheck(
    state_dir: &Path,
    from_run: i64,
    hosts: &[String],
    access: &Access,
    control: &Control,
) -> Result<SweepOutcome, Fail> {
    let reader = store::open_reader(state_dir).code(exit::IO)?;
    let src = reader.run_sources(from_run).code(exit::USAGE)?;
    drop(reader);
    let pb =
        Playbook::parse(&src.playbook_text, Path::new(&src.playbook_path)).code(exit::CONFIG)?;
    let checker_size = pb.verify_checker().code(exit::CHECKER)?;
    let inv =
        inventory::parse(&src.inventory_text, Path::new(&src.inventory_path)).code(exit::CONFIG)?;
    let mut plans = Vec::new();
    for name in hosts {
        let host = inv.host(name).ok_or_else(|| {
            Fail::new(
                exit::CONFIG,
                anyhow::anyhow!("host {name} is not in run {from_run}'s stored inventory"),
            )
        })?;
        plans.push(
            HostPlan::new(&pb, host)
                .map_err(|e| Fail::new(exit::CONFIG, anyhow::anyhow!("host {name}: {e}")))?,
        );
    }
    let journal = store::open(state_dir).code(exit::IO)?;
    let run_id = journal
        .start_run(NewRun {
            operator: current_user(),
            controller: controller_name(),
            playbook_path: src.playbook_path.clone(),
            playbook_name: pb.name.clone(),
            playbook_text: src.playbook_text.clone(),
            inventory_path: src.inventory_path.clone(),
            inventory_text: src.inventory_text.clone(),
            limit: Some(format!("re-check after contain (run {from_run})")),
            forks: src.forks,
            checker_path: pb.checker_local.display().to_string(),
            checker_sha256: pb.checker.sha256.clone(),
            checker_size,
            hosts: plans
                .iter()
                .map(|p| RunHost {
                    name: p.host.name.clone(),
                    address: p.host.address.clone(),
                    port: p.host.port,
                    transport: p.host.connection.name().to_string(),
                    groups: p.host.groups.clone(),
                    group_paths: p.host.group_paths.clone(),
                    wave: Some(1),
                    wave_partition: None,
                })
                .collect(),
            rollout: None,
        })
        .await
        .code(exit::IO)?;
    let waves = vec![WavePlans {
        number: 1,
        partition: None,
        canary: false,
        plans,
    }];
    let forks = src.forks.max(1);
    execute(
        journal,
        state_dir,
        run_id,
        pb,
        waves,
        Rollout::default(),
        forks,
        HashMap::new(),
        access,
        control,
    )
    .await
}

/// Runs the waves of `run_id` one after the other, each with bounded
/// concurrency, judges each finished wave, and records the end of the run.
#[allow(clippy::too_many_arguments)]
async fn execute(
    journal: Arc<dyn Store>,
    state_dir: &Path,
    run_id: i64,
    pb: Playbook,
    waves: Vec<WavePlans>,
    rollout: Rollout,
    forks: usize,
    earlier: HashMap<String, Leftovers>,
    access: &Access,
    control: &Control,
) -> Result<SweepOutcome, Fail> {
    let evidence_dir = state_dir.join("evidence").join(format!("run-{run_id}"));
    store::create_private_dir(&evidence_dir)
        .with_context(|| format!("cannot create {}", evidence_dir.display()))
        .code(exit::IO)?;

    let total = waves.iter().map(|w| w.plans.len()).sum();
    let mut ctx = context(
        run_id,
        pb,
        journal.clone(),
        evidence_dir,
        access,
        waves.iter().flat_map(|w| &w.plans),
    )?;
    ctx.earlier = earlier;
    let ctx = Arc::new(ctx);

    // Planning is done: its transient memory goes back to the system, and so does what the
    // hosts free from now on, every few seconds (`limits.rs`).
    crate::limits::release_free_memory();
    let _trimmer = crate::limits::Trimmer::start();
    let (events, shutdown) = (&control.events, &control.shutdown);
    shutdown.listen();

    events.emit(Event::SweepStarted { hosts: total });
    events.notice(format!(
        "run {run_id}: {total} host(s), forks {forks}, journal {}",
        journal.location()
    ));
    let staged = waves.len() > 1;
    let last_wave = waves.last().map(|w| w.number).unwrap_or(0);
    if staged {
        events.notice(format!(
            "rollout: {} waves; {}",
            waves.len(),
            rollout.describe()
        ));
    }
    if let Some(limit) = crate::limits::raise_open_files() {
        let room = crate::limits::max_in_flight(limit);
        if (forks as u64) > room {
            events.notice(format!(
                "warning: --forks {forks} may need more open files than the limit of {limit} \
                 allows (room for about {room} hosts in flight); raise `ulimit -n` \
                 (hard limit) or lower --forks"
            ));
        }
    }
    let mut interrupted = false;
    let mut halt: Option<String> = None;
    let mut panicked: Vec<(String, String)> = Vec::new();
    let mut waves = waves.into_iter().peekable();
    while let Some(wave) = waves.next() {
        let label = wave_label(&wave, last_wave);
        if staged {
            events.emit(Event::WaveStarted {
                label: label.clone(),
                hosts: wave.plans.len(),
            });
        }
        let mut results: Vec<crate::pipeline::HostResult> = Vec::with_capacity(wave.plans.len());
        let ran = fleet::run(
            wave.plans,
            forks,
            shutdown,
            events,
            |plan| plan.host.name.clone(),
            |plan| run_host(ctx.clone(), plan),
            |done| {
                let r = match done.result {
                    Ok(r) => r,
                    // A host task that panicked counts against its wave as an error.
                    Err(reason) => {
                        panicked.push((done.key.clone(), reason.clone()));
                        crate::pipeline::HostResult {
                            host: done.key,
                            class: HostClass::Error,
                            reason,
                        }
                    }
                };
                events.emit(Event::HostFinished(r.clone()));
                results.push(r);
            },
        )
        .await;
        // The journal holds an end for every host, one whose task panicked too.
        for (host, reason) in panicked.drain(..) {
            journal.release_lease(&host);
            journal
                .finish_host(
                    run_id,
                    &host,
                    store::HostFinish {
                        class: HostClass::Error,
                        reason,
                        duration_ms: 0,
                        pushed: None,
                        exit_code: None,
                        primary_report: None,
                    },
                )
                .await
                .code(exit::IO)?;
        }
        if ran.interrupted {
            interrupted = true;
            break;
        }
        if !staged {
            continue;
        }
        // ---- the gate ----
        let judged: Vec<&crate::pipeline::HostResult> = results
            .iter()
            .filter(|r| r.class != HostClass::NotStarted)
            .collect();
        let failed: Vec<&&crate::pipeline::HostResult> = judged
            .iter()
            .filter(|r| rollout.is_failure(r.class))
            .collect();
        let pct = if judged.is_empty() {
            0.0
        } else {
            failed.len() as f64 * 100.0 / judged.len() as f64
        };
        let outcome = format!(
            "{label} done: {} host(s), {} failed ({pct:.0}%)",
            judged.len(),
            failed.len()
        );
        events.emit(Event::WaveFinished {
            outcome: outcome.clone(),
        });
        if rollout.wave_fails(failed.len(), judged.len()) {
            let limit = match rollout.max_fail_percentage {
                Some(p) => format!("more than {p}%"),
                None => "every host".to_string(),
            };
            let reason = format!(
                "rollout halted after {label}: {} of {} host(s) failed ({pct:.0}%, {limit} halts)",
                failed.len(),
                judged.len()
            );
            events.notice(reason.clone());
            for r in failed.iter().take(20) {
                events.notice(format!(
                    "  {} {}: {}",
                    crate::sanitize::display(&r.host, 80),
                    r.class,
                    crate::sanitize::display(&r.reason, 160)
                ));
            }
            halt = Some(reason);
            break;
        }
        let Some(next) = waves.peek() else { break };
        let next_label = wave_label(next, last_wave);
        match rollout.pause {
            Pause::None => {}
            Pause::For(d) => {
                events.notice(format!(
                    "pausing {}s before {next_label} (Ctrl-C stops the sweep)",
                    d.as_secs()
                ));
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = shutdown.requested() => { interrupted = true; break; }
                }
            }
            Pause::Prompt => {
                let failures: Vec<String> = failed
                    .iter()
                    .map(|r| {
                        format!(
                            "  {} {}: {}",
                            crate::sanitize::display(&r.host, 80),
                            r.class,
                            crate::sanitize::display(&r.reason, 200)
                        )
                    })
                    .collect();
                let question = format!(
                    "{outcome}. Next: {next_label}, {} host(s).",
                    next.plans.len()
                );
                match ask(control, &question, &failures).await {
                    Answer::Continue => {}
                    Answer::Abort => {
                        halt = Some(format!("rollout aborted by the operator after {label}"));
                        break;
                    }
                    Answer::Interrupted => {
                        interrupted = true;
                        break;
                    }
                }
            }
        }
    }
    events.emit(Event::SweepFinished);

    if let Some(reason) = &halt {
        journal
            .set_halt_reason(run_id, reason)
            .await
            .code(exit::IO)?;
        journal
            .mark_not_started(run_id, &format!("not started: {reason}"))
            .await
            .code(exit::IO)?;
    } else if interrupted {
        journal
            .mark_not_started(run_id, "sweep interrupted before this host started")
            .await
            .code(exit::IO)?;
    }
    // Count from the journal: it, not memory, is the source of truth.
    drop(ctx);
    let reader = store::open_reader(state_dir).code(exit::IO)?;
    let mut final_counts = BTreeMap::new();
    for (class, n) in reader.class_counts(run_id).code(exit::IO)? {
        let c = class
            .as_deref()
            .and_then(HostClass::parse)
            .unwrap_or(HostClass::Error);
        *final_counts.entry(c).or_insert(0) += n as usize;
    }
    let code = exit_code_for(&final_counts);
    journal
        .finish_run(
            run_id,
            if halt.is_some() {
                "halted"
            } else if interrupted {
                "interrupted"
            } else {
                "finished"
            },
            code,
        )
        .await
        .code(exit::IO)?;
    journal.close();
    Ok(SweepOutcome {
        run_id,
        counts: final_counts,
        interrupted,
        halted: halt,
        exit_code: code,
    })
}

fn wave_label(w: &WavePlans, last: usize) -> String {
    let mut s = format!("wave {}/{last}", w.number);
    if let Some(p) = &w.partition {
        s.push_str(&format!(" ({})", crate::sanitize::display(p, 80)));
    }
    if w.canary {
        s.push_str(" [canary]");
    }
    s
}

enum Answer {
    Continue,
    Abort,
    Interrupted,
}

/// Asks the operator between two waves. The line is read on a plain thread (not tokio's
/// blocking pool, which the runtime would wait for at exit), so Ctrl-C still ends the
/// sweep while the question is open.
async fn ask(control: &Control, question: &str, failures: &[String]) -> Answer {
    control.events.emit(Event::Asking(true));
    let answer = loop {
        eprint!("{question}\n[c]ontinue, [a]bort, [f]ailures? ");
        let (tx, rx) = tokio::sync::oneshot::channel();
        let reader = std::thread::Builder::new()
            .name("pushscan-prompt".into())
            .spawn(move || {
                let mut line = String::new();
                let n = std::io::stdin().read_line(&mut line);
                let _ = tx.send(n.map(|n| (n, line)));
            });
        if reader.is_err() {
            break Answer::Abort;
        }
        let line = tokio::select! {
            r = rx => r,
            _ = control.shutdown.requested() => break Answer::Interrupted,
        };
        match line {
            // End of input: nobody can answer, so nothing more is started.
            Ok(Ok((0, _))) | Ok(Err(_)) | Err(_) => {
                eprintln!();
                break Answer::Abort;
            }
            Ok(Ok((_, text))) => match text.trim().to_ascii_lowercase().as_str() {
                "c" | "continue" | "y" | "yes" => break Answer::Continue,
                "a" | "abort" | "n" | "no" | "q" => break Answer::Abort,
                "f" | "failures" => {
                    if failures.is_empty() {
                        eprintln!("  no failed host in this wave");
                    }
                    for f in failures {
                        eprintln!("{f}");
                    }
                }
                _ => eprintln!("  answer c, a or f"),
            },
        }
    };
    control.events.emit(Event::Asking(false));
    answer
}
