//! What every store backend must do, as functions over a store factory: the unit tests run
//! them against SQLite, `tests/store_postgres.rs` against a real PostgreSQL, and that test also
//! compares the two backends' answers to every [`StoreReader`] call after the same writes.
//!
//! Public (but hidden from the docs) because integration tests can only call the library's
//! public items; nothing in pushscan calls it.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use super::{
    ActionResult, HostFinish, Lease, NewAction, NewContainment, NewNotification, NewReport, NewRun,
    RunHost, Store, StoreReader,
};
use crate::model::{Finding, HostClass, ParsedReport, ReportStatus, Severity};

/// A run of `hosts` (all on 127.0.0.1 over `transport`).
pub fn test_run(hosts: &[&str], transport: &str) -> NewRun {
    NewRun {
        operator: "op".into(),
        controller: "ctl".into(),
        playbook_path: "pb.yml".into(),
        playbook_name: "pb".into(),
        playbook_text: String::new(),
        inventory_path: "inv.yml".into(),
        inventory_text: String::new(),
        limit: None,
        forks: 1,
        checker_path: "/c".into(),
        checker_sha256: "0".repeat(64),
        checker_size: 1,
        hosts: hosts
            .iter()
            .map(|h| RunHost {
                name: h.to_string(),
                address: "127.0.0.1".into(),
                port: None,
                transport: transport.into(),
                groups: Vec::new(),
                group_paths: Vec::new(),
                wave: None,
                wave_partition: None,
            })
            .collect(),
        rollout: None,
    }
}

fn finding(rule: &str, location: &str) -> Finding {
    Finding {
        kind: "rule_match".into(),
        title: rule.into(),
        location: location.into(),
        severity: Severity::Low,
        attributes: [("rule".to_string(), rule.to_string())].into(),
        identity: format!("{rule}|{location}"),
    }
}

fn report(run_id: i64, host: &str, name: &str, findings: Vec<Finding>, history: bool) -> NewReport {
    let status = if findings.is_empty() {
        ReportStatus::NotDetected
    } else {
        ReportStatus::Detected
    };
    NewReport {
        history,
        run_id,
        host: host.into(),
        remote_name: name.into(),
        remote_path: format!("/w/{name}"),
        local_path: None,
        sha256: "0".repeat(64),
        // Every byte value, so a backend that mangles binary shows it.
        raw: (0..=255u8).cycle().take(1000).collect(),
        parser: "jsonl".into(),
        parsed: ParsedReport {
            status,
            hostname: Some(host.into()),
            scan_time: None,
            checker_version: Some("1".into()),
            format: Some("jsonl".into()),
            findings,
            warnings: vec!["w1".into()],
        },
    }
}

fn fin(class: HostClass, primary_report: Option<i64>) -> HostFinish {
    HostFinish {
        class,
        reason: format!("{class:?}"),
        duration_ms: 7,
        pushed: Some(true),
        exit_code: Some(0),
        primary_report,
    }
}

/// One detected host in a new run, through the writer trait.
async fn sweep(store: &dyn Store, findings: Vec<Finding>) -> Result<i64> {
    let id = store.start_run(test_run(&["h"], "test")).await?;
    store.host_started(id, "h");
    let rep = store
        .add_report(report(id, "h", "r.jsonl", findings, false))
        .await?;
    store
        .finish_host(id, "h", fin(HostClass::Detected, Some(rep)))
        .await?;
    store.finish_run(id, "finished", 1).await?;
    Ok(id)
}

/// A step that never began reads back as `not_started`, not as a failure.
pub async fn a_step_never_started_reads_back_as_not_started(
    open: impl Fn() -> Result<Arc<dyn Store>>,
    open_reader: impl Fn() -> Result<Box<dyn StoreReader>>,
) -> Result<()> {
    let store = open()?;
    let id = store.start_run(test_run(&["a", "b"], "test")).await?;
    store.outcome(id, "a", "cleanup", false, "/w/x", "rm failed");
    store.not_started(id, "b", "cleanup", "/w/y", "not started: stopped");
    store.close();
    let reader = open_reader()?;
    let phases: Vec<(String, String, Option<String>)> = reader
        .steps(id, None)?
        .into_iter()
        .filter(|s| s.step == "cleanup")
        .map(|s| (s.host, s.phase, s.target))
        .collect();
    ensure!(
        phases
            == [
                ("a".into(), "failed".into(), Some("/w/x".into())),
                ("b".into(), "not_started".into(), Some("/w/y".into())),
            ],
        "steps read back as {phases:?}"
    );
    Ok(())
}

/// Findings written through the writer come back through the reader, and "what the host had
/// at its previous check" is answered from them.
pub async fn what_the_writer_writes_the_reader_reads_back(
    open: impl Fn() -> Result<Arc<dyn Store>>,
    open_reader: impl Fn() -> Result<Box<dyn StoreReader>>,
) -> Result<()> {
    let store = open()?;
    let a = finding("R1", "/x");
    let b = finding("R2", "/y");
    let first = sweep(&*store, vec![a.clone()]).await?;
    let second = sweep(&*store, vec![a.clone(), b]).await?;
    store.close();

    let reader = open_reader()?;
    ensure!(reader.run(None)?.id == second, "latest run");
    let hosts = reader.hosts(first)?;
    let rep = hosts
        .first()
        .and_then(|h| h.report.as_ref())
        .context("the first run's report")?;
    ensure!(rep.parser.as_deref() == Some("jsonl"), "parser");
    ensure!(rep.findings == vec![a], "findings {:?}", rep.findings);
    ensure!(rep.processes.is_empty(), "not a process finding");
    let before = reader.previous_finding_identities("h", second)?;
    ensure!(before == HashSet::from(["R1|/x".to_string()]), "{before:?}");
    ensure!(
        reader.previous_check("h", second)? == Some(HostClass::Detected),
        "previous check"
    );
    Ok(())
}

/// Every kind of write, in an order a sweep, a resume, alerts and contain produce them.
/// Returns the IDs of the two runs.
pub async fn write_everything(store: &dyn Store) -> Result<(i64, i64)> {
    let mut run = test_run(&["a", "b", "c"], "test");
    for (i, h) in run.hosts.iter_mut().enumerate() {
        h.port = Some(2200 + i as u16);
        h.groups = vec!["web".into(), format!("g{i}")];
        h.group_paths = vec![vec!["all".into(), "web".into()]];
        h.wave = Some(i + 1);
        h.wave_partition = Some(format!("OU={i}"));
    }
    run.limit = Some("web:!c".into());
    run.rollout = Some(r#"{"waves":[1]}"#.into());
    run.playbook_text = "name: pb\n".into();
    run.inventory_text = "all: {}\n".into();
    let run1 = store.start_run(run).await?;
    store.host_started(run1, "a");
    store.host_started(run1, "b");
    ensure!(store.acquire_lease(run1, "a", 600).await? == Lease::Acquired);
    ensure!(
        store.acquire_lease(run1, "a", 600).await? == Lease::Acquired,
        "a lease this process holds is taken again"
    );
    store
        .intents(
            run1,
            "a",
            &[("push", "/w/a".to_string()), ("run", "checker".to_string())],
        )
        .await?;
    store.intent(run1, "b", "push", "/w/b").await?;
    store.outcome(run1, "a", "push", true, "/w/a", "");
    store.outcome(run1, "b", "push", false, "/w/b", "permission denied");
    store.not_started(run1, "c", "cleanup", "/w/c", "not started: stopped");
    let history = store
        .add_report(report(
            run1,
            "a",
            "old.jsonl",
            vec![finding("R0", "/o")],
            true,
        ))
        .await?;
    let rep = store
        .add_report(report(
            run1,
            "a",
            "new.jsonl",
            vec![finding("R1", "/x"), finding("R2", "/y")],
            false,
        ))
        .await?;
    ensure!(rep == history + 1, "report IDs in order");
    store
        .finish_host(run1, "a", fin(HostClass::Detected, Some(rep)))
        .await?;
    store.release_lease("a");
    store
        .finish_host(run1, "b", fin(HostClass::AuthFailed, None))
        .await?;
    store.mark_not_started(run1, "stopped").await?;
    store.set_halt_reason(run1, "wave 1 failed").await?;
    store
        .record_notification(NewNotification {
            run_id: Some(run1),
            kind: "new_detection".into(),
            channel: "mail".into(),
            target: "smtp://mail".into(),
            status: "ok".into(),
            attempts: 1,
            error: None,
            hosts: vec!["a".into()],
        })
        .await?;
    store
        .record_notification(NewNotification {
            run_id: Some(run1),
            kind: "new_detection".into(),
            channel: "webhook".into(),
            target: "https://hook".into(),
            status: "failed".into(),
            attempts: 3,
            error: Some("HTTP 500".into()),
            hosts: vec!["a".into()],
        })
        .await?;
    store.finish_run(run1, "halted", 1).await?;

    let run2 = store.start_run(test_run(&["a", "b"], "test")).await?;
    store.host_started(run2, "a");
    store.host_started(run2, "b");
    let clean = store
        .add_report(report(run2, "a", "clean.jsonl", Vec::new(), false))
        .await?;
    store
        .finish_host(run2, "a", fin(HostClass::NotDetected, Some(clean)))
        .await?;
    store.finish_run(run2, "interrupted", 2).await?;
    let reopened = store.reopen_run(run2).await?;
    ensure!(reopened == ["b"], "reopened {reopened:?}");
    store
        .finish_host(run2, "b", fin(HostClass::Unreachable, None))
        .await?;
    store.finish_run(run2, "finished", 2).await?;

    let names: BTreeMap<_, _> = store
        .known_report_names("a")
        .await?
        .into_iter()
        .map(|n| (n, ()))
        .collect();
    ensure!(
        names.keys().map(String::as_str).collect::<Vec<_>>()
            == ["clean.jsonl", "new.jsonl", "old.jsonl"],
        "known report names {names:?}"
    );
    let waves = store.host_waves(run1).await?;
    ensure!(
        waves.get("b") == Some(&(Some(2), Some("OU=1".to_string()))),
        "waves {waves:?}"
    );

    let c = store
        .start_containment(NewContainment {
            kind: "contain".into(),
            source_run: Some(run1),
            operator: "op".into(),
            controller: "ctl".into(),
            actions: "kill,remove".into(),
            hosts: vec!["a".into()],
        })
        .await?;
    let act = store
        .action_intent(NewAction {
            containment_id: c,
            run_id: Some(run1),
            host: "a".into(),
            action: "kill".into(),
            target: "PID 42".into(),
            command: "kill 42".into(),
            operator: "op".into(),
            phase: "intent".into(),
            message: None,
        })
        .await?;
    store
        .action_result(
            act,
            ActionResult {
                phase: "done".into(),
                exit_code: Some(0),
                output_sha256: Some("1".repeat(64)),
                verified: Some(true),
                message: "gone".into(),
                command: "kill -9 42".into(),
                evidence_path: Some("/e/a".into()),
            },
        )
        .await?;
    store
        .action_intent(NewAction {
            containment_id: c,
            run_id: Some(run1),
            host: "b".into(),
            action: "refused".into(),
            target: String::new(),
            command: String::new(),
            operator: "op".into(),
            phase: "refused".into(),
            message: Some("not detected".into()),
        })
        .await?;
    store.finish_containment(c, Some(run2), "finished").await?;
    Ok((run1, run2))
}

/// Timestamps differ between two writes of the same script: each becomes `"<time>"` (or
/// stays null), so two backends' answers compare equal when they mean the same.
fn mask_times(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if (k == "at" || k.ends_with("_at")) && v.is_string() {
                    *v = json!("<time>");
                } else {
                    mask_times(v);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(mask_times),
        _ => {}
    }
}

fn val<T: serde::Serialize>(v: T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The answer of every reader call about what [`write_everything`] wrote, as one JSON value
/// (times masked, unordered answers sorted).
pub fn read_everything(r: &dyn StoreReader, run1: i64, run2: i64) -> Result<Value> {
    let sources = r.run_sources(run1)?;
    let mut identities: Vec<String> = r
        .previous_finding_identities("a", run2)?
        .into_iter()
        .collect();
    identities.sort();
    let mut counts = r.class_counts(run1)?;
    counts.sort();
    let recent: BTreeMap<_, _> = r.recent_results(run2, 5)?.into_iter().collect();
    let (history, found) = r.host_history("a", 10)?;
    let prefix = r.report_raw_prefix(2, 10)?;
    let mut v = json!({
        "runs": val(r.runs(10)?),
        "runs_through": val(r.runs_through(run1, 10)?),
        "run_latest": val(r.run(None)?),
        "run_1": val(r.run(Some(run1))?),
        "run_missing": r.run(Some(run2 + 100)).is_err(),
        "last_unfinished": r.last_unfinished_run()?,
        "sources": [sources.playbook_path, sources.playbook_text, sources.inventory_path,
                    sources.inventory_text, val(sources.limit), sources.forks,
                    sources.checker_sha256, val(sources.rollout)],
        "report_paths": r.run_report_paths(run1, "a")?,
        "previous_check": val(r.previous_check("a", run2)?),
        "previous_check_none": val(r.previous_check("a", run1)?),
        "previous_identities": identities,
        "last_clean": r.last_clean_run("a", run2 + 1)?,
        "alerted_mail": r.alerted("mail", "a", 0, run1)?,
        "alerted_hook": r.alerted("webhook", "a", 0, run1)?,
        "alerted_other_host": r.alerted("mail", "b", 0, run1)?,
        "notifications": val(r.notifications(None)?),
        "notifications_run2": val(r.notifications(Some(run2))?),
        "host_actions": val(r.host_actions("a", 10)?),
        "run_actions_1": val(r.run_actions(run1)?),
        "run_actions_2": val(r.run_actions(run2)?),
        "last_success": r.last_success("a")?.is_some(),
        "last_success_none": r.last_success("c")?.is_some(),
        "history": val(history),
        "history_reports": val(found),
        "class_counts": val(counts),
        "hosts_1": val(r.hosts(run1)?),
        "hosts_2": val(r.hosts(run2)?),
        "report": val(r.report(2)?),
        "report_missing": val(r.report(999)?),
        "raw_prefix": val(prefix),
        "raw_prefix_missing": val(r.report_raw_prefix(999, 10)?),
        "recent": val(recent),
        "raw": val(r.report_raw(2)?),
        "steps": val(r.steps(run1, None)?),
        "steps_a": val(r.steps(run1, Some("a"))?),
        "steps_2": val(r.steps(run2, None)?),
    });
    mask_times(&mut v);
    Ok(v)
}

/// Writes the script, reads everything back (checking what must hold on any backend), prunes,
/// and returns the answers for comparison with another backend.
pub async fn every_reader_call(
    open: impl Fn() -> Result<Arc<dyn Store>>,
    open_reader: impl Fn() -> Result<Box<dyn StoreReader>>,
) -> Result<Value> {
    let store = open()?;
    let (run1, run2) = write_everything(&*store).await?;
    let reader = open_reader()?;
    let answers = read_everything(&*reader, run1, run2)?;
    ensure!(answers["alerted_mail"] == json!(true), "{answers:#}");
    ensure!(answers["alerted_hook"] == json!(false), "{answers:#}");
    ensure!(answers["last_unfinished"] == json!(run1), "{answers:#}");
    ensure!(
        answers["raw_prefix"] == json!([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 1000]),
        "{answers:#}"
    );
    let mut pruned = store.prune(0).await?;
    pruned.sort();
    store.close();
    ensure!(pruned == [run1, run2], "pruned {pruned:?}");
    ensure!(open_reader()?.runs(10)?.is_empty(), "runs left after prune");
    Ok(answers)
}
