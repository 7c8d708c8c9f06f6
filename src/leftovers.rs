//! What the journal says may be left of ours on a host, and its removal.
//!
//! The journal holds an intent for every remote side effect, so after a
//! crash or a kill it knows, per host, which paths of ours may exist: a temp
//! copy from a push that never completed, the checker and its inputs when the
//! playbook does not keep them, fetched result files when the playbook removes them, the
//! services and files a connection ran commands with (over SMB). What the playbook keeps
//! (EmoCheck's reports, by default) stays. `pushscan cleanup` (`cleanup.rs`) removes it
//! host by host; `resume` removes it from each host it redoes, over that host's connection,
//! before redoing it. Both go through [`remove_leftovers`].

use std::collections::BTreeSet;

use crate::inventory;
use crate::pipeline::{SweepCtx, REMOVED_AFTER_RUN};
use crate::plan::HostPlan;
use crate::playbook::Playbook;
use crate::store::StoreReader;
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
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::store::{self, NewRun, Store};

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
