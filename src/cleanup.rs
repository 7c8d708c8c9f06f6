//! `pushscan cleanup`: remove from hosts what the journal says we may have
//! left there, verify, and record it.
//!
//! What is left and how it is removed from one host is `leftovers.rs` (the engine's
//! `resume` does the same before it redoes a host); this module is the command around it.
//!
//! The hosts are cleaned through the fleet executor (`fleet.rs`), 50 at a time.
//! On Ctrl-C or SIGTERM no further host is started, hosts in flight finish
//! their removal and its check, and each host not started gets a `cleanup`
//! step in phase `not_started`: the journal still lists its leftovers, so the next
//! `pushscan cleanup` does it.

use std::path::Path;
use std::sync::Arc;

use crate::events::Event;
use crate::exit::{self, Fail, WithCode};
use crate::fleet::{self, Control};
use crate::inventory;
use crate::leftovers::{leftovers, remove_leftovers, Leftovers};
use crate::pipeline::{connect, SweepCtx};
use crate::plan::HostPlan;
use crate::playbook::Playbook;
use crate::store;
use crate::sweep::{context, Access};

/// Result of `cleanup` for one run.
#[derive(Debug, Default)]
pub struct CleanupSummary {
    pub hosts_cleaned: usize,
    pub hosts_failed: usize,
    /// A stop was requested: hosts were left as they are.
    pub interrupted: bool,
}

/// Hosts cleaned at the same time.
const PARALLEL_HOSTS: usize = 50;

/// Cleans run `run_id`. With `dry_run`, says what would be removed.
pub async fn cleanup_run(
    state_dir: &Path,
    run_id: i64,
    dry_run: bool,
    access: &Access,
    control: &Control,
) -> Result<CleanupSummary, Fail> {
    let events = &control.events;
    let reader = store::open_reader(state_dir).code(exit::IO)?;
    let src = reader.run_sources(run_id).code(exit::USAGE)?;
    let pb =
        Playbook::parse(&src.playbook_text, Path::new(&src.playbook_path)).code(exit::CONFIG)?;
    let inv =
        inventory::parse(&src.inventory_text, Path::new(&src.inventory_path)).code(exit::CONFIG)?;
    let todo = leftovers(&*reader, run_id, &pb, &inv).code(exit::IO)?;
    drop(reader);
    let mut summary = CleanupSummary::default();
    if todo.is_empty() {
        events.emit(Event::CleanupNothing { run: run_id });
        return Ok(summary);
    }
    if dry_run {
        for l in todo {
            events.emit(Event::CleanupPlanned {
                run: run_id,
                host: l.host,
                files: l.files,
                dirs: l.dirs,
                services: l.services,
            });
        }
        return Ok(summary);
    }
    let journal = store::open(state_dir).code(exit::IO)?;
    let mut work = Vec::new();
    for l in todo {
        let Some(host) = inv.host(&l.host) else {
            continue;
        };
        match HostPlan::new(&pb, host) {
            Ok(plan) => work.push((plan, l)),
            Err(e) => events.emit(Event::CleanupHost {
                run: run_id,
                host: l.host,
                result: Err(e.to_string()),
            }),
        }
    }
    let ctx = Arc::new(context(
        run_id,
        pb.clone(),
        journal.clone(),
        state_dir.join("evidence").join(format!("run-{run_id}")),
        access,
        work.iter().map(|(p, _)| p),
    )?);
    control.shutdown.listen();
    let ran = fleet::run(
        work,
        PARALLEL_HOSTS,
        &control.shutdown,
        events,
        |(_, l)| l.host.clone(),
        |(plan, l)| {
            let ctx = ctx.clone();
            async move { clean_host(&ctx, &plan, &l).await }
        },
        |done| {
            let result = done.result.and_then(|r| r);
            match result {
                Ok(()) => summary.hosts_cleaned += 1,
                Err(_) => summary.hosts_failed += 1,
            }
            events.emit(Event::CleanupHost {
                run: run_id,
                host: done.key,
                result,
            });
        },
    )
    .await;
    summary.interrupted = ran.interrupted;
    for (_, l) in &ran.not_started {
        journal.not_started(
            run_id,
            &l.host,
            "cleanup",
            &l.files.join("\n"),
            "not started: cleanup interrupted before this host",
        );
    }
    drop(ctx);
    journal.close();
    Ok(summary)
}

async fn clean_host(ctx: &SweepCtx, plan: &HostPlan, l: &Leftovers) -> Result<(), String> {
    let j = &ctx.journal;
    let targets = l.files.join("\n");
    j.intent(ctx.run_id, &l.host, "cleanup", &targets)
        .await
        .map_err(|e| format!("journal: {e:#}"))?;
    let mut conn = connect(ctx, plan)
        .await
        .map_err(|e| format!("connect: {}", e.message))?;
    // This connection's own commands (over SMB: services) are journaled like a sweep's.
    let own = conn.own_intents();
    if !own.is_empty() {
        if let Err(e) = j.intents(ctx.run_id, &l.host, &own).await {
            conn.close().await;
            return Err(format!("journal: {e:#}"));
        }
    }
    let mut errors = remove_leftovers(ctx, plan, conn.as_mut(), l).await;
    // What this cleanup itself ran over SMB is gone too (each command removed its own;
    // this checks, and marks it so in the journal).
    for (step, target) in own {
        let targets = vec![target];
        match conn.remove_own(step, &targets, &[]).await {
            Ok(()) => j.outcome(ctx.run_id, &l.host, step, true, &targets[0], ""),
            Err(e) => errors.push(e.message),
        }
    }
    conn.close().await;
    let detail = errors.join("; ");
    j.outcome(
        ctx.run_id,
        &l.host,
        "cleanup",
        errors.is_empty(),
        &targets,
        &detail,
    );
    if errors.is_empty() {
        Ok(())
    } else {
        Err(detail)
    }
}
