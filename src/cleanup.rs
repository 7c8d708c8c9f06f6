//! `pushscan cleanup`: remove from hosts what the journal says we may have
//! left there, verify, and record it.
//!
//! The journal holds an intent for every remote side effect, so after a
//! crash or a kill it knows, per host, which paths of ours may exist: a temp
//! copy from a push that never completed, the checker and its inputs when the
//! playbook does not keep them, fetched result files when the playbook removes them. What
//! the playbook keeps (EmoCheck's reports, by default) stays.
//!
//! The hosts are cleaned through the fleet executor (`fleet.rs`), 50 at a time.
//! On Ctrl-C or SIGTERM no further host is started, hosts in flight finish
//! their removal and its check, and each host not started gets a `cleanup`
//! step in phase `not_started`: the journal still lists its leftovers, so the next
//! `pushscan cleanup` does it.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use crate::events::Event;
use crate::exit::{self, Fail, WithCode};
use crate::fleet::{self, Control};
use crate::inventory;
use crate::pipeline::{connect, SweepCtx, REMOVED_AFTER_RUN};
use crate::plan::HostPlan;
use crate::playbook::Playbook;
use crate::store::{self, StoreReader};
use crate::sweep::{context, Access};
use crate::transport::{Connection, OWN_STEP as SERVICE_STEP};

/// What may be left of ours on one host.
#[derive(Debug, Clone)]
pub struct Leftovers {
    pub host: String,
    pub files: Vec<String>,
    pub dirs: Vec<String>,
    /// What a connection journaled of its own (`Connection::own_intents`) under the step
    /// `service` (the services and files of commands run over SMB) and no cleanup has
    /// removed since.
    pub services: Vec<String>,
}

/// Computes, from the journal alone, what may be left on each host of a run.
pub fn leftovers(
    reader: &dyn StoreReader,
    run_id: i64,
    pb: &Playbook,
    inv: &inventory::Inventory,
) -> anyhow::Result<Vec<Leftovers>> {
    let steps = reader.steps(run_id, None)?;
    let mut hosts: Vec<String> = steps
        .iter()
        .map(|s| s.host.clone())
        .filter(|h| !h.is_empty())
        .collect();
    hosts.sort();
    hosts.dedup();
    let mut out = Vec::new();
    for host in hosts {
        let Some(h) = inv.host(&host) else { continue };
        let Ok(plan) = HostPlan::new(pb, h) else {
            continue;
        };
        let mine: Vec<_> = steps.iter().filter(|s| s.host == host).collect();
        let has = |step: &str, phase: &str| mine.iter().any(|s| s.step == step && s.phase == phase);
        // Everything a successful removal (pipeline or earlier cleanup) took.
        let removed: BTreeSet<String> = mine
            .iter()
            .filter(|s| {
                (s.step == "remove" || s.step == "cleanup")
                    && s.phase == "done"
                    && matches!(s.detail.as_deref().unwrap_or(""), "" | REMOVED_AFTER_RUN)
            })
            .flat_map(|s| {
                s.target
                    .as_deref()
                    .unwrap_or("")
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut files = Vec::new();
        // Temporary copies of pushes that never completed. Their names are random per
        // attempt, so they come from the journal's push intents: an intent followed by the
        // push's "done" was renamed away; any other (killed, then resumed with a new name)
        // may have left its copy.
        let mut open_pushes: Vec<&str> = Vec::new();
        for s in mine.iter().filter(|s| s.step == "push") {
            match s.phase.as_str() {
                "intent" => open_pushes.push(s.target.as_deref().unwrap_or("")),
                "done" => {
                    open_pushes.pop();
                }
                _ => {}
            }
        }
        for targets in open_pushes {
            files.extend(
                targets
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_string),
            );
        }
        if has("push", "intent") || has("run", "intent") {
            if pb.cleanup.checker {
                files.push(plan.checker_path.clone());
            }
            if pb.cleans_inputs() {
                files.extend(plan.input_paths());
            }
        }
        if pb.cleanup.results {
            for r in reader.run_report_paths(run_id, &host)? {
                files.push(r);
            }
        }
        files.retain(|f| !removed.contains(f));
        files.dedup();
        let mut dirs = Vec::new();
        if pb.cleanup.dirs && has("mkdir", "intent") {
            dirs.push(plan.run_dir.clone());
            dirs.push(plan.work_dir.clone());
        }
        let services_done: BTreeSet<&str> = mine
            .iter()
            .filter(|s| s.step == SERVICE_STEP && s.phase == "done")
            .flat_map(|s| s.target.as_deref().unwrap_or("").lines())
            .collect();
        let mut services: Vec<String> = mine
            .iter()
            .filter(|s| s.step == SERVICE_STEP && s.phase == "intent")
            .flat_map(|s| s.target.as_deref().unwrap_or("").lines())
            .filter(|t| !t.is_empty() && !services_done.contains(t))
            .map(str::to_string)
            .collect();
        services.sort();
        services.dedup();
        // Directories are only worth a visit together with files or services to remove.
        if !files.is_empty() || !services.is_empty() {
            out.push(Leftovers {
                host,
                files,
                dirs,
                services,
            });
        }
    }
    Ok(out)
}

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

/// Removes `l` from the host over `conn` and verifies it: the services (journaled as done
/// or failed under their own step), then, in directories proven ours, the files (each must
/// be gone from its directory's listing) and the empty directories. Returns what failed;
/// the caller journals the `cleanup` step's outcome for the files (its intent is the
/// caller's too). Used by `cleanup`, and by the pipeline when `resume` re-runs a host whose
/// interrupted attempt may have left something.
pub(crate) async fn remove_leftovers(
    ctx: &SweepCtx,
    plan: &HostPlan,
    conn: &mut dyn Connection,
    l: &Leftovers,
) -> Vec<String> {
    let j = &ctx.journal;
    // Services first: removing them needs no directory of ours.
    let mut errors = Vec::new();
    if !l.services.is_empty() {
        let targets = l.services.join("\n");
        // The checker is what a crashed attempt's commands may have left running.
        let running = [plan.checker_path.clone()];
        match conn.remove_own(SERVICE_STEP, &l.services, &running).await {
            Ok(()) => j.outcome(ctx.run_id, &l.host, SERVICE_STEP, true, &targets, ""),
            Err(e) => {
                j.outcome(
                    ctx.run_id,
                    &l.host,
                    SERVICE_STEP,
                    false,
                    &targets,
                    &e.message,
                );
                errors.push(e.message);
            }
        }
    }
    if l.files.is_empty() && l.dirs.is_empty() {
        return errors;
    }
    // The same rule as a sweep's: nothing is touched in a directory someone else could
    // have changed since (a link planted at one of our names would be followed otherwise).
    if let Err(e) = conn
        .prove_dirs(&[plan.work_dir.clone(), plan.run_dir.clone()])
        .await
    {
        errors.push(format!("nothing removed: {}", e.message));
        return errors;
    }
    for f in &l.files {
        if let Err(e) = conn.remove_file(f).await {
            errors.push(e.message);
        }
    }
    for d in &l.dirs {
        let _ = conn.remove_dir_if_empty(d).await;
    }
    // Verify: none of the files may still be listed in its directory.
    for f in &l.files {
        let (dir, name) = split_remote(f);
        match conn.list_dir(dir).await {
            Ok(entries) if entries.iter().any(|e| e.name == name) => {
                errors.push(format!("{f} is still there"));
            }
            Ok(_) => {}
            Err(e) => errors.push(format!("cannot verify {f}: {}", e.message)),
        }
    }
    errors
}

/// Splits a remote path (either separator) into directory and file name.
fn split_remote(path: &str) -> (&str, &str) {
    match path.rfind(['/', '\\']) {
        Some(0) => ("/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (".", path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewRun, Store};

    fn new_run() -> NewRun {
        crate::store::tests::test_run(&["w1"], "winrm")
    }

    /// A host whose only leftovers are services journaled by a connection over SMB is still
    /// visited; a name a cleanup already removed is not taken again.
    #[tokio::test]
    async fn journaled_services_are_leftovers_until_a_cleanup_removed_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = store::open(dir.path()).expect("store");
        let run = store.start_run(new_run()).await.expect("run");
        store
            .intents(
                run,
                "w1",
                &[
                    (SERVICE_STEP, "pushscan-00000000000000aa".to_string()),
                    (SERVICE_STEP, "pushscan-00000000000000bb".to_string()),
                ],
            )
            .await
            .expect("intents");
        store.outcome(
            run,
            "w1",
            SERVICE_STEP,
            true,
            "pushscan-00000000000000bb",
            "",
        );
        store.close();
        let pb_text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/playbooks/emocheck.yml"
        ))
        .expect("playbook");
        let pb = Playbook::parse(
            &pb_text,
            Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/playbooks/emocheck.yml"
            )),
        )
        .expect("playbook parses");
        let inv = inventory::parse_yaml(
            "all:\n  hosts:\n    w1:\n      ansible_host: 127.0.0.1\n      \
             ansible_connection: winrm\n      pushscan_exec: smb\n",
            Path::new("inv.yml"),
        )
        .expect("inventory");
        let reader = store::open_reader(dir.path()).expect("reader");
        let left = leftovers(&*reader, run, &pb, &inv).expect("leftovers");
        assert_eq!(left.len(), 1, "{left:?}");
        assert!(left[0].files.is_empty(), "{left:?}");
        assert_eq!(
            left[0].services,
            vec!["pushscan-00000000000000aa".to_string()]
        );
    }

    #[test]
    fn splits_both_separators() {
        assert_eq!(split_remote("/tmp/a/b.sh"), ("/tmp/a", "b.sh"));
        assert_eq!(split_remote("C:\\W\\T\\x.exe"), ("C:\\W\\T", "x.exe"));
        assert_eq!(split_remote("/x"), ("/", "x"));
    }
}
