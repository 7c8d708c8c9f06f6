//! The per-host pipeline: connect → prepare → push if needed → run →
//! collect → parse → clean → record.
//!
//! Every host ends in exactly one [`HostClass`] with a one-line reason, and
//! every remote side effect is preceded by a committed journal intent. The
//! pipeline owns one connection for the host and closes it at the end, on
//! every path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};
use wildmatch::WildMatch;

use crate::leftovers::{self, Leftovers};
use crate::model::HostClass;
use crate::parser::{FetchedReport, ResultParser};
use crate::plan::HostPlan;
use crate::playbook::Playbook;
use crate::sanitize;
use crate::store::{self, HostFinish, NewReport, Store};
use crate::transport::{
    Begun, CommandSpec, Connection, EntryKind, ExecOutcome, Finished, PinnedFile, RemoteEntry,
    ResultSpec, RunPlan, Sessions, Staged, TransportError,
};

/// Output kept from a checker run (stdout and stderr each).
const OUTPUT_CAP: usize = 64 * 1024;
/// At most this many older reports are fetched per host and sweep as history.
const MAX_HISTORY_FETCH: usize = 8;
/// The detail of a removal the transport did in the run's own session (`cleanup` counts it
/// as done).
pub(crate) const REMOVED_AFTER_RUN: &str = "removed after the run";
/// Time allowed per host beyond the checker's timeout (connect, push, fetch).
const HOST_OVERHEAD: std::time::Duration = std::time::Duration::from_secs(600);

/// Shared, read-only context of a sweep.
pub struct SweepCtx {
    pub run_id: i64,
    pub playbook: Arc<Playbook>,
    pub parser: Arc<dyn ResultParser>,
    pub journal: Arc<dyn Store>,
    pub evidence_dir: PathBuf,
    /// Every transport's connector, with each host's credentials resolved before the
    /// sweep starts (a host without one is a configuration error).
    pub sessions: Sessions,
    /// What an interrupted attempt of this run may have left on each host `resume` redoes
    /// (services of commands over SMB, temp copies of pushes, fetched reports the playbook
    /// removes), taken away before the host is redone. Empty for a new run.
    pub earlier: HashMap<String, Leftovers>,
}

/// The end of one host's pipeline.
#[derive(Debug, Clone)]
pub struct HostResult {
    pub host: String,
    pub class: HostClass,
    pub reason: String,
}

struct Failure {
    class: HostClass,
    reason: String,
}

impl Failure {
    fn at(step: &str, e: TransportError) -> Failure {
        Failure {
            class: e.class,
            reason: format!("{step}: {}", e.message),
        }
    }
    fn journal(e: anyhow::Error) -> Failure {
        Failure {
            class: HostClass::Error,
            reason: format!("journal: {e:#}"),
        }
    }
}

/// Facts gathered along the way, recorded at the end whatever happened.
#[derive(Default)]
struct Progress {
    pushed: Option<bool>,
    exit_code: Option<i64>,
    primary_report: Option<i64>,
    /// Result files we fetched this run (remote paths), for cleanup.
    fetched: Vec<String>,
    push_attempted: bool,
    /// The transport removed the checker in the run's own session (`Some(true)`), or tried
    /// and failed (`Some(false)`).
    removed_by_run: Option<bool>,
    /// Every temp copy the push may have left (each pushed file's, with what the transport
    /// stages beside it).
    push_staging: Vec<String>,
    /// The directories were created or proven private (`begin_run` succeeded). Until then
    /// nothing of this run is on the host, and a directory that failed the proof is not ours
    /// to remove anything from.
    dirs_proven: bool,
    /// What of an interrupted attempt's leftovers could not be removed (`resume`).
    earlier_left: Option<String>,
}

/// Runs the whole pipeline for one host and records its outcome.
pub async fn run_host(ctx: Arc<SweepCtx>, plan: HostPlan) -> HostResult {
    let start = Instant::now();
    let name = plan.host.name.clone();
    ctx.journal.host_started(ctx.run_id, &name);
    let mut progress = Progress::default();
    // A watchdog over the whole host: a host that stalls a transfer or
    // never answers cannot hold a fork forever. It is generous (the checker
    // timeout plus time for connecting, pushing and fetching) because the
    // steps have their own bounds; this is the last line.
    let limit = ctx.playbook.timeout + HOST_OVERHEAD;
    // The lease outlives the watchdog, so it cannot expire under a host
    // that is still being worked on.
    let ttl = (limit + std::time::Duration::from_secs(60)).as_secs();
    match ctx.journal.acquire_lease(ctx.run_id, &name, ttl).await {
        Ok(store::Lease::Acquired) => {}
        Ok(store::Lease::Busy { run_id, owner }) => {
            return finish(
                &ctx,
                &name,
                start,
                &progress,
                HostClass::Busy,
                format!(
                    "run {run_id} ({}) is working on this host; not touched",
                    sanitize::display(&owner, 80)
                ),
            )
            .await;
        }
        Err(e) => {
            return finish(
                &ctx,
                &name,
                start,
                &progress,
                HostClass::Error,
                format!("journal: {e:#}"),
            )
            .await;
        }
    }
    let work = async {
        // Boxed: the login's state (key exchange, authentication) lives on the heap only
        // while it runs, instead of widening every host's task for its whole life. With
        // 1,000 hosts in flight that is memory paid once per host in flight, not per step.
        match Box::pin(connect(&ctx, &plan)).await {
            Err(e) => Err(Failure::at("connect", e)),
            Ok(mut conn) => {
                let res = Box::pin(steps(&ctx, &plan, conn.as_mut(), &mut progress)).await;
                let cleaned = Box::pin(cleanup(&ctx, &plan, conn.as_mut(), &progress)).await;
                // What the connection made for itself and already removed and checked
                // (services over SMB) is journaled done: `cleanup` need not visit for it.
                for (step, target) in conn.own_removed() {
                    ctx.journal
                        .outcome(ctx.run_id, &name, step, true, &target, REMOVED_AFTER_RUN);
                }
                let notes = conn.notes();
                conn.close().await;
                let mut res = match (res, cleaned) {
                    (Ok(mut v), Err(e)) => {
                        // The verdict stands; the leftover is reported with it.
                        v.1.push_str(&format!("; cleanup incomplete: {e}"));
                        Ok(v)
                    }
                    (r, _) => r,
                };
                if let Some(left) = &progress.earlier_left {
                    let tail = format!("; an interrupted attempt's leftovers remain: {left}");
                    match &mut res {
                        Ok(v) => v.1.push_str(&tail),
                        Err(f) => f.reason.push_str(&tail),
                    }
                }
                // How the host was reached, when it matters (e.g. files went
                // through WinRM because SMB was closed).
                if !notes.is_empty() {
                    let tail = format!(" [{}]", notes.join("; "));
                    match &mut res {
                        Ok(v) => v.1.push_str(&tail),
                        Err(f) => f.reason.push_str(&tail),
                    }
                }
                res
            }
        }
    };
    let outcome = match tokio::time::timeout(limit, work).await {
        Ok(o) => o,
        Err(_) => Err(Failure {
            class: HostClass::Error,
            reason: format!(
                "host did not finish within {}s; abandoned (see the journal for what may be left on it)",
                limit.as_secs()
            ),
        }),
    };
    let (class, reason) = match outcome {
        Ok((class, reason)) => (class, reason),
        Err(f) => (f.class, f.reason),
    };
    let result = finish(&ctx, &name, start, &progress, class, reason).await;
    ctx.journal.release_lease(&name);
    result
}

/// Records the host's final class and reason.
async fn finish(
    ctx: &SweepCtx,
    name: &str,
    start: Instant,
    progress: &Progress,
    class: HostClass,
    reason: String,
) -> HostResult {
    let fin = HostFinish {
        class,
        reason: reason.clone(),
        duration_ms: start.elapsed().as_millis() as u64,
        pushed: progress.pushed,
        exit_code: progress.exit_code,
        primary_report: progress.primary_report,
    };
    if let Err(e) = ctx.journal.finish_host(ctx.run_id, name, fin).await {
        tracing::error!(host = %name, "cannot record host result: {e:#}");
    }
    HostResult {
        host: name.to_string(),
        class,
        reason,
    }
}

pub(crate) async fn connect(
    ctx: &SweepCtx,
    plan: &HostPlan,
) -> Result<Box<dyn Connection>, TransportError> {
    let host = &plan.host;
    ctx.sessions
        .connect(host.connection, host, plan.target.as_ref(), &plan.work_dir)
        .await
}

async fn steps(
    ctx: &SweepCtx,
    plan: &HostPlan,
    conn: &mut dyn Connection,
    progress: &mut Progress,
) -> Result<(HostClass, String), Failure> {
    let pb = &ctx.playbook;
    let (run_id, host) = (ctx.run_id, plan.host.name.as_str());
    let j = &ctx.journal;

    // Intents first, in one commit: directories, the run, and the checker's removal when the
    // transport does it in the run's own session. The push intent is committed only once the
    // host says a push is needed.
    let wants_files = ctx.parser.wants_files();
    let dirs = vec![plan.work_dir.clone(), plan.run_dir.clone()];
    let mut remove_after = Vec::new();
    if pb.cleanup.checker {
        remove_after.push(plan.checker_path.clone());
    }
    if pb.cleans_inputs() {
        remove_after.extend(plan.input_paths());
    }
    // The run's intent names every pinned file that will be in the work directory (the
    // checker, then the inputs), so a crash after a push leaves nothing the journal does not
    // know of.
    let pinned: Vec<String> = std::iter::once(plan.checker_path.clone())
        .chain(plan.input_paths())
        .collect();
    let mut intents = vec![("mkdir", dirs.join("\n")), ("run", pinned.join("\n"))];
    if !remove_after.is_empty() {
        intents.push(("remove", remove_after.join("\n")));
    }
    intents.extend(conn.own_intents());
    j.intents(run_id, host, &intents)
        .await
        .map_err(Failure::journal)?;
    if let Some(l) = ctx.earlier.get(host) {
        progress.earlier_left = remove_earlier(ctx, plan, conn, l).await?;
    }
    let mut cmd = CommandSpec {
        program: plan.checker_path.clone(),
        args: plan.args.clone(),
        cwd: plan.work_dir.clone(),
        timeout: pb.timeout,
        output_cap: output_cap(ctx),
        not_before: None,
    };
    // Two builds (x64/x86): the host's architecture picks one.
    let build = match &pb.x86 {
        None => pb.main_build(),
        Some(x86) => match conn.is_64bit().await {
            Ok(Some(false)) => x86.clone(),
            Ok(_) => pb.main_build(),
            Err(e) => return Err(Failure::at("architecture", e)),
        },
    };
    let input_files: Vec<PinnedFile> = pb
        .inputs
        .iter()
        .zip(&plan.inputs)
        .map(|(i, at)| PinnedFile {
            local: i.local.clone(),
            dest: at.path.clone(),
            tmp: at.tmp.clone(),
            pin: i.sha256.clone(),
        })
        .collect();
    let run_plan = RunPlan {
        dirs: dirs.clone(),
        checker: plan.checker_path.clone(),
        tmp: plan.tmp_path.clone(),
        pin: build.sha256.clone(),
        inputs: input_files.clone(),
        cmd: cmd.clone(),
        results: wants_files.then(|| ResultSpec {
            dir: plan.run_dir.clone(),
            glob: pb.results.glob.clone(),
            cap: pb.results.max_file_size,
            max_files: pb.results.max_files,
        }),
        remove_after: remove_after.clone(),
    };
    // The snapshot of the result dir tells this run's files apart (a missing dir lists as
    // empty); the run starts only in a later second than its newest file.
    let Begun {
        staged,
        inputs: input_states,
        before,
    } = conn
        .begin_run(&run_plan)
        .await
        .map_err(|e| Failure::at("prepare", e))?;
    progress.dirs_proven = true;
    cmd.not_before = newest_mtime(&before, &pb.results.glob);
    j.outcome(run_id, host, "mkdir", true, &dirs.join("\n"), "");
    // One push step per host, whatever the number of pinned files: its intent names every
    // temp copy the push may leave, its outcome says what was pushed and what skipped.
    let checker_file = PinnedFile {
        local: build.local.clone(),
        dest: plan.checker_path.clone(),
        tmp: plan.tmp_path.clone(),
        pin: build.sha256.clone(),
    };
    let mut to_push: Vec<PinnedFile> = Vec::new();
    let mut pushed_names: Vec<String> = Vec::new();
    let mut skipped_names: Vec<String> = Vec::new();
    let checker_label = format!("checker {}{}", build.sha256, arch_note(&build));
    match staged {
        Staged::Current => skipped_names.push(checker_label),
        Staged::NeedsPush => {
            to_push.push(checker_file);
            pushed_names.push(checker_label);
        }
    }
    for ((input, file), state) in pb.inputs.iter().zip(&input_files).zip(&input_states) {
        let label = format!("input {} {}", input.name, input.sha256);
        match state {
            Staged::Current => skipped_names.push(label),
            Staged::NeedsPush => {
                to_push.push(file.clone());
                pushed_names.push(label);
            }
        }
    }
    if input_states.len() != input_files.len() {
        return Err(Failure {
            class: HostClass::Error,
            reason: "prepare: the transport did not check every input".into(),
        });
    }
    if to_push.is_empty() {
        progress.pushed = Some(false);
        j.outcome(
            run_id,
            host,
            "push",
            true,
            &pinned.join("\n"),
            &format!("skipped: hash matches pin: {}", skipped_names.join(", ")),
        );
    } else {
        let staging: Vec<String> = to_push
            .iter()
            .flat_map(|f| plan.staging_files_of(&f.tmp))
            .collect();
        j.intent(run_id, host, "push", &staging.join("\n"))
            .await
            .map_err(Failure::journal)?;
        progress.push_attempted = true;
        progress.push_staging = staging;
        conn.push_staged(&to_push).await.map_err(|e| {
            j.outcome(
                run_id,
                host,
                "push",
                false,
                &progress.push_staging.join("\n"),
                &e.message,
            );
            Failure::at("push", e)
        })?;
        progress.pushed = Some(true);
        let dests: Vec<String> = to_push.iter().map(|f| f.dest.clone()).collect();
        let mut detail = format!("verified and renamed: {}", pushed_names.join(", "));
        if !skipped_names.is_empty() {
            detail.push_str(&format!(
                "; skipped, hash matches pin: {}",
                skipped_names.join(", ")
            ));
        }
        j.outcome(run_id, host, "push", true, &dests.join("\n"), &detail);
    }
    let Finished {
        exec,
        after,
        files: mut sent,
        removed,
    } = conn
        .finish_run(&cmd)
        .await
        .map_err(|e| Failure::at("run", e))?;
    progress.exit_code = exec.exit_code;
    j.outcome(
        run_id,
        host,
        "run",
        !exec.timed_out,
        &plan.checker_path,
        &exec_summary(&exec),
    );
    if let Some(r) = removed {
        let (ok, detail) = match &r {
            Ok(()) => (true, REMOVED_AFTER_RUN.to_string()),
            Err(e) => (false, e.clone()),
        };
        j.outcome(
            run_id,
            host,
            "remove",
            ok,
            &remove_after.join("\n"),
            &detail,
        );
        progress.removed_by_run = Some(r.is_ok());
    }

    // Collect this run's result files, newest first.
    let mut fetched = Vec::new();
    let mut problems = Vec::new();
    let mut budget = Budget::new(pb.results.max_host_bytes);
    // A checker that prints its results: its standard output is the first report.
    if let Some(name) = ctx.parser.reads_stdout() {
        fetched.push(keep_stdout(ctx, plan, &exec, name, &mut budget).await?);
    }
    if wants_files {
        let after = match after {
            Some(a) => a,
            None => conn
                .list_dir(&plan.run_dir)
                .await
                .map_err(|e| Failure::at("list", e))?,
        };
        // Files modified since the checker started count only when it
        // started in a later second than every earlier result file.
        let started = exec
            .started_at
            .filter(|s| cmd.not_before.is_none_or(|nb| *s > nb));
        let mut candidates = new_entries(&before, &after, &pb.results.glob, started);
        candidates.sort_by_cached_key(|e| std::cmp::Reverse(ctx.parser.recency(&e.name, e.mtime)));
        for entry in candidates.into_iter().take(pb.results.max_files) {
            // Sent with the run when the transport could; otherwise read now.
            let prefetched = sent
                .iter()
                .position(|(e, _)| *e == entry)
                .map(|i| sent.swap_remove(i).1);
            match fetch_report(ctx, plan, conn, &entry, false, prefetched, &mut budget).await? {
                Ok((id, report, remote)) => {
                    progress.fetched.push(remote);
                    fetched.push((id, report));
                }
                Err(problem) => problems.push(problem),
            }
        }
        // Reports left on the host by earlier runs (EmoCheck keeps them all)
        // become the host's history, once: names already in the journal for
        // this host are not fetched again.
        let known = j.known_report_names(host).await.map_err(Failure::journal)?;
        let pattern = WildMatch::new(&pb.results.glob);
        let mut older: Vec<&RemoteEntry> = before
            .iter()
            .filter(|e| e.kind == EntryKind::File && pattern.matches(&e.name))
            .filter(|e| !known.contains(&e.name))
            .collect();
        older.sort_by_cached_key(|e| std::cmp::Reverse(ctx.parser.recency(&e.name, e.mtime)));
        for entry in older.into_iter().take(MAX_HISTORY_FETCH) {
            // History is best effort: a problem there does not change the verdict.
            let _ = fetch_report(ctx, plan, conn, entry, true, None, &mut budget).await?;
        }
    }

    let reports: Vec<FetchedReport> = fetched.iter().map(|(_, r)| r.clone()).collect();
    let verdict = ctx.parser.verdict(&exec, &reports, &problems);
    progress.primary_report = verdict
        .primary
        .and_then(|i| fetched.get(i))
        .map(|(id, _)| *id);
    let mut reason = verdict.reason;
    if let Some(note) = budget.dropped_note() {
        reason.push_str("; ");
        reason.push_str(&note);
    }
    Ok((verdict.class, reason))
}

/// The bytes of result files one host may make us keep in one run
/// (`results.max_host_bytes`): each file kept is stored twice, in the
/// journal and as evidence, so without it a host could make every sweep
/// cost `max_files` + history times `max_file_size`, twice.
struct Budget {
    max: u64,
    left: u64,
    dropped: Vec<String>,
}

impl Budget {
    fn new(max: u64) -> Budget {
        Budget {
            max,
            left: max,
            dropped: Vec::new(),
        }
    }

    /// For the host's reason: what was not kept, named (the first few).
    fn dropped_note(&self) -> Option<String> {
        const NAMED: usize = 5;
        if self.dropped.is_empty() {
            return None;
        }
        let mut names = self.dropped[..self.dropped.len().min(NAMED)].join(", ");
        if self.dropped.len() > NAMED {
            names.push_str(&format!(" and {} more", self.dropped.len() - NAMED));
        }
        Some(format!(
            "{} result file(s) dropped over the {}-byte per-host budget: {names}",
            self.dropped.len(),
            self.max
        ))
    }
}

/// How much of the checker's standard output is kept: the few KiB a reason quotes, or, for
/// a parser that reads its results there, up to `results.max_file_size`.
fn output_cap(ctx: &SweepCtx) -> usize {
    match ctx.parser.reads_stdout() {
        Some(_) => usize::try_from(ctx.playbook.results.max_file_size)
            .unwrap_or(usize::MAX)
            .max(OUTPUT_CAP),
        None => OUTPUT_CAP,
    }
}

/// Journals the run's standard output as a report named `name` (evidence and journal, like
/// a fetched file; it counts against the per-host budget), parsed by the parser.
async fn keep_stdout(
    ctx: &SweepCtx,
    plan: &HostPlan,
    exec: &ExecOutcome,
    name: &str,
    budget: &mut Budget,
) -> Result<(i64, FetchedReport), Failure> {
    let host = plan.host.name.as_str();
    let parsed = ctx.parser.parse_stdout(exec);
    let bytes = &exec.stdout;
    budget.left = budget.left.saturating_sub(bytes.len() as u64);
    let local_path = store_evidence(&ctx.evidence_dir, host, name, bytes)
        .await
        .map(|p| p.to_string_lossy().into_owned());
    if let Err(e) = &local_path {
        tracing::warn!(host, "cannot store evidence for the checker's output: {e}");
    }
    let id = ctx
        .journal
        .add_report(NewReport {
            history: false,
            run_id: ctx.run_id,
            host: host.to_string(),
            remote_name: name.to_string(),
            remote_path: format!("(standard output of {})", plan.checker_path),
            local_path: local_path.ok(),
            sha256: hex::encode(Sha256::digest(bytes)),
            raw: bytes.clone(),
            parser: ctx.parser.name().to_string(),
            parsed: parsed.clone(),
        })
        .await
        .map_err(Failure::journal)?;
    Ok((
        id,
        FetchedReport {
            name: name.to_string(),
            parsed,
        },
    ))
}

/// Fetches one result file, parses it, stores it as evidence and in the
/// journal. The outer error is a journal failure (fatal for the host); the
/// inner one a problem with this file, explained for the reason line.
async fn fetch_report(
    ctx: &SweepCtx,
    plan: &HostPlan,
    conn: &mut dyn Connection,
    entry: &RemoteEntry,
    history: bool,
    prefetched: Option<Vec<u8>>,
    budget: &mut Budget,
) -> Result<Result<(i64, FetchedReport, String), String>, Failure> {
    let pb = &ctx.playbook;
    let host = plan.host.name.as_str();
    let shown = sanitize::display(&entry.name, 120);
    if entry.kind != EntryKind::File {
        return Ok(Err(format!("{shown} is not a regular file; not read")));
    }
    // A listing is the host's word: a "name" with a separator or a dot-dot
    // would make us read outside the result directory.
    if entry.name.is_empty()
        || entry.name == "."
        || entry.name == ".."
        || entry.name.contains(['/', '\\', '\0'])
    {
        return Ok(Err(format!("{shown} is not a plain file name; not read")));
    }
    if entry.size > pb.results.max_file_size {
        return Ok(Err(format!(
            "{shown} is {} bytes, over the {}-byte cap; not fetched",
            entry.size, pb.results.max_file_size
        )));
    }
    // The listed size is the host's word; the read below is capped by what
    // is left, so a file that grew past it is refused by the read itself.
    if entry.size > budget.left {
        budget.dropped.push(shown.clone());
        return Ok(Err(format!(
            "{shown} is {} bytes, over the {} bytes left of the per-host budget; not fetched",
            entry.size, budget.left
        )));
    }
    let cap = pb.results.max_file_size.min(budget.left);
    let remote = pb.checker.platform.join(&plan.run_dir, &entry.name);
    let bytes = match prefetched {
        Some(b) if b.len() as u64 <= cap => b,
        Some(b) if b.len() as u64 > budget.left => {
            budget.dropped.push(shown.clone());
            return Ok(Err(format!(
                "{shown} is over the {cap} bytes left of the per-host budget; not kept"
            )));
        }
        _ => match conn.read_file(&remote, cap).await {
            Ok(b) => b,
            Err(e) => return Ok(Err(e.message)),
        },
    };
    budget.left = budget.left.saturating_sub(bytes.len() as u64);
    let parsed = ctx.parser.parse_file(&entry.name, &bytes);
    let local_path = store_evidence(&ctx.evidence_dir, host, &entry.name, &bytes)
        .await
        .map(|p| p.to_string_lossy().into_owned());
    let store_problem = local_path
        .as_ref()
        .err()
        .map(|e| format!("cannot store evidence for {shown}: {e}"));
    let id = ctx
        .journal
        .add_report(NewReport {
            history,
            run_id: ctx.run_id,
            host: host.to_string(),
            remote_name: entry.name.clone(),
            remote_path: remote.clone(),
            local_path: local_path.ok(),
            sha256: hex::encode(Sha256::digest(&bytes)),
            raw: bytes,
            parser: ctx.parser.name().to_string(),
            parsed: parsed.clone(),
        })
        .await
        .map_err(Failure::journal)?;
    if let Some(p) = store_problem {
        tracing::warn!(host, "{p}");
    }
    let report = FetchedReport {
        name: entry.name.clone(),
        parsed,
    };
    Ok(Ok((id, report, remote)))
}

/// The newest mtime among the result files already there.
fn newest_mtime(entries: &[RemoteEntry], glob: &str) -> Option<u64> {
    let pattern = WildMatch::new(glob);
    entries
        .iter()
        .filter(|e| pattern.matches(&e.name))
        .filter_map(|e| e.mtime)
        .max()
}

/// Result files of this run: matching the glob and new or changed since
/// `before`, or modified at or after `started` (the host's clock when the
/// checker started). The second rule catches a report rewritten within the
/// same second under the same name (EmoCheck names reports by the second).
fn new_entries(
    before: &[RemoteEntry],
    after: &[RemoteEntry],
    glob: &str,
    started: Option<u64>,
) -> Vec<RemoteEntry> {
    let pattern = WildMatch::new(glob);
    after
        .iter()
        .filter(|e| pattern.matches(&e.name))
        .filter(|e| {
            !before.iter().any(|b| b == *e)
                || matches!((started, e.mtime), (Some(s), Some(m)) if m >= s)
        })
        .cloned()
        .collect()
}

fn arch_note(b: &crate::playbook::Build) -> String {
    if b.label.is_empty() {
        String::new()
    } else {
        format!(" ({} build)", b.label)
    }
}

fn exec_summary(exec: &ExecOutcome) -> String {
    let mut s = match (&exec.exit_signal, exec.exit_code) {
        (Some(sig), _) => format!("signal {sig}"),
        (None, Some(c)) => format!("exit {c}"),
        (None, None) => "no exit status".into(),
    };
    if exec.timed_out {
        s.push_str(", timed out, killed");
    }
    s
}

/// Takes away what an interrupted attempt of this run left on the host (`resume`), before
/// it is redone over the same connection: its services first, then its files, journaled as
/// `cleanup` does (intent, then outcome) so a later `cleanup` does not look for them again.
/// What could not be removed stays in the journal for `cleanup` and is returned for the
/// host's reason; the host is redone either way.
async fn remove_earlier(
    ctx: &SweepCtx,
    plan: &HostPlan,
    conn: &mut dyn Connection,
    l: &Leftovers,
) -> Result<Option<String>, Failure> {
    let (run_id, host) = (ctx.run_id, plan.host.name.as_str());
    let targets = l.files.join("\n");
    if !l.files.is_empty() {
        ctx.journal
            .intent(run_id, host, "cleanup", &targets)
            .await
            .map_err(Failure::journal)?;
    }
    let errors = leftovers::remove_leftovers(ctx, plan, conn, l).await;
    let detail = errors.join("; ");
    if !l.files.is_empty() {
        ctx.journal.outcome(
            run_id,
            host,
            "cleanup",
            errors.is_empty(),
            &targets,
            &detail,
        );
    }
    Ok((!errors.is_empty()).then_some(detail))
}

/// Removes what the playbook says to remove. Runs once connected, when the directories were
/// created or proven private (before that, nothing of this run is on the host).
async fn cleanup(
    ctx: &SweepCtx,
    plan: &HostPlan,
    conn: &mut dyn Connection,
    progress: &Progress,
) -> Result<(), String> {
    let pb = &ctx.playbook;
    let (run_id, host) = (ctx.run_id, plan.host.name.as_str());
    let j = &ctx.journal;
    if !progress.dirs_proven {
        return Ok(());
    }
    let mut targets: Vec<String> = Vec::new();
    // A temp copy can exist only if a push started and did not complete
    // (a completed push renamed it away).
    if progress.push_attempted && progress.pushed != Some(true) {
        targets.extend(progress.push_staging.iter().cloned());
    }
    if progress.removed_by_run != Some(true) {
        if pb.cleanup.checker {
            targets.push(plan.checker_path.clone());
        }
        if pb.cleans_inputs() {
            targets.extend(plan.input_paths());
        }
    }
    if pb.cleanup.results {
        targets.extend(progress.fetched.iter().cloned());
    }
    let mut errors = Vec::new();
    if !targets.is_empty() {
        if let Err(e) = j.intent(run_id, host, "remove", &targets.join("\n")).await {
            return Err(format!("journal: {e:#}"));
        }
        for t in &targets {
            if let Err(e) = conn.remove_file(t).await {
                errors.push(e.message);
            }
        }
    }
    if pb.cleanup.dirs {
        for d in [&plan.run_dir, &plan.work_dir] {
            let _ = conn.remove_dir_if_empty(d).await;
        }
    }
    let ok = errors.is_empty();
    j.outcome(
        run_id,
        host,
        "remove",
        ok,
        &targets.join("\n"),
        &errors.join("; "),
    );
    if ok {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Writes a fetched report under `evidence/<host>/<name>`, both names
/// sanitized, never overwriting and never following a link. One blocking
/// task for the whole job (directory, create, write), not one per call.
async fn store_evidence(
    dir: &Path,
    host: &str,
    name: &str,
    bytes: &[u8],
) -> std::io::Result<PathBuf> {
    let host_dir = dir.join(sanitize::file_name(host));
    let base = sanitize::file_name(name);
    let bytes = bytes.to_vec();
    tokio::task::spawn_blocking(move || store_evidence_blocking(&host_dir, &base, &bytes))
        .await
        .map_err(std::io::Error::other)?
}

fn store_evidence_blocking(host_dir: &Path, base: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    use std::io::Write as _;
    store::create_private_dir(host_dir)?;
    for n in 0..1000 {
        let candidate = if n == 0 {
            host_dir.join(base)
        } else {
            host_dir.join(format!("{n}-{base}"))
        };
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        match opts.open(&candidate) {
            Ok(mut f) => {
                f.write_all(bytes)?;
                return Ok(candidate);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("too many files with the same name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, size: u64) -> RemoteEntry {
        RemoteEntry {
            name: name.into(),
            kind: EntryKind::File,
            size,
            mtime: Some(1),
        }
    }

    #[test]
    fn only_new_or_changed_matching_files_are_candidates() {
        let before = vec![entry("old_emocheck.txt", 10), entry("grow_emocheck.txt", 5)];
        let after = vec![
            entry("old_emocheck.txt", 10),
            entry("grow_emocheck.txt", 6),
            entry("new_emocheck.json", 3),
            entry("notes.log", 3),
        ];
        let names: Vec<String> = new_entries(&before, &after, "*_emocheck.*", None)
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, vec!["grow_emocheck.txt", "new_emocheck.json"]);
        // Rewritten in the second the run started: same name, size, mtime.
        let names: Vec<String> = new_entries(&before, &before, "*_emocheck.*", Some(1))
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, vec!["old_emocheck.txt", "grow_emocheck.txt"]);
        assert!(new_entries(&before, &before, "*_emocheck.*", Some(2)).is_empty());
    }

    #[tokio::test]
    async fn evidence_never_escapes_or_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let a = store_evidence(dir.path(), "../h", "../../x\n_emocheck.txt", b"1")
            .await
            .unwrap();
        let b = store_evidence(dir.path(), "../h", "../../x\n_emocheck.txt", b"2")
            .await
            .unwrap();
        assert!(a.starts_with(dir.path()) && b.starts_with(dir.path()));
        assert_ne!(a, b);
        assert_eq!(std::fs::read(&a).unwrap(), b"1");
        assert_eq!(std::fs::read(&b).unwrap(), b"2");
    }
}
