//! A sweep: inventory → host plans → bounded parallel pipelines → journal.
//!
//! Everything that can be checked without touching a host is checked first
//! (inventory, --limit, playbook, checker pin, templates for every host); a
//! problem there stops the sweep with a config exit code before any
//! connection is opened. Then one task per host runs on the shared tokio
//! runtime, at most `forks` at a time (a semaphore, not a thread pool).
//! The first Ctrl-C stops starting hosts and lets those in flight finish and
//! clean up; a second one ends the process at once (the journal already
//! holds every intent).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::exit::{self, Fail, WithCode};
use crate::inventory::{self, Connection as ConnKind};
use crate::journal::{Journal, NewRun, RunHost};
use crate::model::HostClass;
use crate::parser;
use crate::pipeline::{run_host, HostPlan, SweepCtx};
use crate::playbook::Playbook;
use crate::progress::{Mode, Progress};
use crate::transport::ssh::SshConnector;
use crate::transport::Credentials;

/// Everything a sweep needs, decided by the command line.
#[derive(Debug, Clone)]
pub struct SweepConfig {
    pub inventory: PathBuf,
    pub playbook: PathBuf,
    pub limit: Option<String>,
    pub forks: usize,
    pub state_dir: PathBuf,
    pub creds: Credentials,
    /// SSH user for hosts without `ansible_user`.
    pub default_user: Option<String>,
    pub progress: Mode,
}

/// What a finished sweep reports back.
#[derive(Debug, Clone)]
pub struct SweepOutcome {
    pub run_id: i64,
    pub counts: BTreeMap<HostClass, usize>,
    pub interrupted: bool,
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

pub fn current_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "root".to_string())
}

pub fn controller_name() -> String {
    if let Ok(n) = std::env::var("COMPUTERNAME") {
        return n;
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

pub async fn sweep(cfg: SweepConfig) -> Result<SweepOutcome, Fail> {
    // ---- everything that needs no host ----
    let inv = inventory::load(&cfg.inventory).code(exit::CONFIG)?;
    let selected: Vec<inventory::Host> = match &cfg.limit {
        Some(p) => inv
            .select(p)
            .code(exit::USAGE)?
            .into_iter()
            .cloned()
            .collect(),
        None => inv.hosts.clone(),
    };
    if selected.is_empty() {
        return Err(Fail::new(
            exit::USAGE,
            anyhow::anyhow!("no host selected in {}", cfg.inventory.display()),
        ));
    }
    let pb = Playbook::load(&cfg.playbook).code(exit::CONFIG)?;
    let checker_size = pb.verify_checker().code(exit::CHECKER)?;
    let mut plans = Vec::with_capacity(selected.len());
    for h in &selected {
        let plan = HostPlan::new(&pb, h).map_err(|e| {
            Fail::new(
                exit::CONFIG,
                anyhow::anyhow!("{}: host {}: {e}", pb.source.display(), h.name),
            )
        })?;
        plans.push(plan);
    }
    if cfg.forks == 0 {
        return Err(Fail::new(
            exit::USAGE,
            anyhow::anyhow!("--forks must be at least 1"),
        ));
    }

    // ---- the run ----
    let journal = Journal::open(&cfg.state_dir).code(exit::IO)?;
    let inventory_text = std::fs::read_to_string(&cfg.inventory).unwrap_or_default();
    let run_id = journal
        .start_run(NewRun {
            operator: current_user(),
            controller: controller_name(),
            playbook_path: pb.source.display().to_string(),
            playbook_name: pb.name.clone(),
            playbook_text: pb.text.clone(),
            inventory_path: cfg.inventory.display().to_string(),
            inventory_text,
            limit: cfg.limit.clone(),
            forks: cfg.forks,
            checker_path: pb.checker_local.display().to_string(),
            checker_sha256: pb.checker.sha256.clone(),
            checker_size,
            hosts: plans
                .iter()
                .map(|p| RunHost {
                    name: p.host.name.clone(),
                    address: p.host.address.clone(),
                    port: p.host.port,
                    transport: match p.host.connection {
                        ConnKind::Ssh => "ssh",
                        ConnKind::Local => "local",
                        ConnKind::Winrm => "winrm",
                    }
                    .to_string(),
                    groups: p.host.groups.clone(),
                    group_paths: p.host.group_paths.clone(),
                })
                .collect(),
        })
        .await
        .code(exit::IO)?;

    let evidence_dir = cfg.state_dir.join("evidence").join(format!("run-{run_id}"));
    std::fs::create_dir_all(&evidence_dir)
        .with_context(|| format!("cannot create {}", evidence_dir.display()))
        .code(exit::IO)?;

    let ctx = Arc::new(SweepCtx {
        run_id,
        parser: Arc::from(parser::for_playbook(&pb.results)),
        playbook: Arc::new(pb),
        journal: journal.clone(),
        evidence_dir,
        ssh: Arc::new(SshConnector::new(cfg.creds.clone())),
        default_user: cfg.default_user.clone().unwrap_or_else(current_user),
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let signals = tokio::spawn(watch_interrupts(stop_tx));

    let mut progress = Progress::new(plans.len(), cfg.progress);
    progress.note(&format!(
        "run {run_id}: {} host(s), forks {}, journal {}",
        plans.len(),
        cfg.forks,
        journal.path().display()
    ));
    let sem = Arc::new(Semaphore::new(cfg.forks));
    let mut tasks: JoinSet<crate::pipeline::HostResult> = JoinSet::new();
    let mut counts: BTreeMap<HostClass, usize> = BTreeMap::new();
    let mut interrupted = false;
    let mut stop = stop_rx.clone();
    for plan in plans {
        // Wait for a slot, collecting finished hosts meanwhile.
        let permit = loop {
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => { interrupted = true; break None; }
                p = sem.clone().acquire_owned() => break p.ok(),
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Ok(r) = done {
                        *counts.entry(r.class).or_default() += 1;
                        progress.host_done(&r);
                    }
                }
            }
        };
        let Some(permit) = permit else { break };
        let ctx = ctx.clone();
        tasks.spawn(async move {
            let r = run_host(ctx, plan).await;
            drop(permit);
            r
        });
    }
    if interrupted {
        progress.note("interrupted: no new host is started; waiting for hosts in flight (Ctrl-C again to stop at once)");
    }
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(r) => {
                *counts.entry(r.class).or_default() += 1;
                progress.host_done(&r);
            }
            Err(e) => tracing::error!("host task failed: {e}"),
        }
    }
    progress.finish();
    signals.abort();

    if interrupted || *stop_rx.borrow() {
        interrupted = true;
        journal
            .mark_not_started(run_id, "sweep interrupted before this host started")
            .await
            .code(exit::IO)?;
    }
    // Re-count from the journal: it, not memory, is the source of truth.
    drop(ctx);
    let reader = crate::journal::Reader::open(&cfg.state_dir).code(exit::IO)?;
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
            if interrupted {
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
        exit_code: code,
    })
}

/// First Ctrl-C (or SIGTERM): ask the sweep to stop starting hosts.
/// Second: leave at once.
async fn watch_interrupts(stop: watch::Sender<bool>) {
    let mut seen = 0;
    loop {
        if !next_interrupt().await {
            return;
        }
        seen += 1;
        if seen == 1 {
            let _ = stop.send(true);
        } else {
            eprintln!("second interrupt: stopping now; the journal has every step so far");
            std::process::exit(130);
        }
    }
}

#[cfg(unix)]
async fn next_interrupt() -> bool {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return tokio::signal::ctrl_c().await.is_ok();
    };
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.is_ok(),
        r = term.recv() => r.is_some(),
    }
}

#[cfg(not(unix))]
async fn next_interrupt() -> bool {
    tokio::signal::ctrl_c().await.is_ok()
}
