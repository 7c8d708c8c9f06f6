//! Journal throughput with 1,000 hosts in flight (a benchmark, not a test).
//!
//! Every host does what the pipeline does against the journal: host
//! started, mkdir and run intents (awaited commits), a push intent, three
//! outcomes, one stored 2 KiB report with a process, lease acquire/release
//! and the final result. All hosts run at once on one tokio runtime, so the
//! writer thread's group commit is what is measured. Prints wall time,
//! journal operations per second and the number of awaited commits per
//! second; run with `cargo bench --bench journal [-- HOSTS]`.

use std::time::Instant;

use pushscan::model::{Finding, HostClass, ParsedReport, ReportStatus, Severity};
use pushscan::store::{self, HostFinish, NewReport, NewRun, RunHost};

fn main() -> anyhow::Result<()> {
    let hosts: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    rt.block_on(async move {
        let journal = store::open(dir.path())?;
        let names: Vec<String> = (0..hosts).map(|i| format!("host{i:05}")).collect();
        let run_id = journal
            .start_run(NewRun {
                operator: "bench".into(),
                controller: "bench".into(),
                playbook_path: "pb.yml".into(),
                playbook_name: "bench".into(),
                playbook_text: String::new(),
                inventory_path: "inv.yml".into(),
                inventory_text: String::new(),
                limit: None,
                forks: hosts,
                checker_path: "c".into(),
                checker_sha256: "0".repeat(64),
                checker_size: 1 << 20,
                hosts: names
                    .iter()
                    .map(|n| RunHost {
                        name: n.clone(),
                        address: "127.0.0.1".into(),
                        port: Some(22),
                        transport: "ssh".into(),
                        groups: vec!["g".into()],
                        group_paths: vec![vec!["g".into()]],
                        wave: Some(1),
                        wave_partition: None,
                    })
                    .collect(),
                rollout: None,
            })
            .await?;
        let raw = vec![b'x'; 2048];
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for name in names {
            let j = journal.clone();
            let raw = raw.clone();
            tasks.spawn(async move {
                j.host_started(run_id, &name);
                j.acquire_lease(run_id, &name, 600).await?;
                j.intent(run_id, &name, "mkdir", "/tmp/w").await?;
                j.intent(run_id, &name, "run", "/tmp/w/c").await?;
                j.intent(run_id, &name, "push", "/tmp/w/.c.tmp").await?;
                j.outcome(run_id, &name, "mkdir", true, "/tmp/w", "");
                j.outcome(run_id, &name, "push", true, "/tmp/w/c", "verified");
                j.outcome(run_id, &name, "run", true, "/tmp/w/c", "exit 0");
                let id = j
                    .add_report(NewReport {
                        history: false,
                        run_id,
                        host: name.clone(),
                        remote_name: format!("{name}_20261125000000_emocheck.txt"),
                        remote_path: "/tmp/w/r".into(),
                        local_path: None,
                        sha256: "0".repeat(64),
                        raw,
                        parser: "emocheck".into(),
                        parsed: ParsedReport {
                            status: ReportStatus::Detected,
                            hostname: Some(name.clone()),
                            scan_time: Some("2026-11-25 00:00:00".into()),
                            checker_version: Some("2.4.0".into()),
                            format: Some("en".into()),
                            findings: vec![Finding::process(
                                "x.exe",
                                Some(1),
                                "C:\\x.exe",
                                None,
                                Severity::High,
                            )],
                            warnings: Vec::new(),
                        },
                    })
                    .await?;
                j.finish_host(
                    run_id,
                    &name,
                    HostFinish {
                        class: HostClass::Detected,
                        reason: "bench".into(),
                        duration_ms: 1,
                        pushed: Some(true),
                        exit_code: Some(0),
                        primary_report: Some(id),
                    },
                )
                .await?;
                j.release_lease(&name);
                anyhow::Ok(())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        let wall = start.elapsed().as_secs_f64();
        journal.close();
        // Per host: 6 awaited writes (lease, 3 intents, report, finish) and 5 queued ones.
        let awaited = hosts * 6;
        let total = hosts * 11;
        println!(
            "journal: {hosts} hosts in flight: {wall:.3} s wall, {:.0} operations/s, {:.0} awaited commits/s, {:.2} ms journal time per host",
            total as f64 / wall,
            awaited as f64 / wall,
            wall * 1000.0 / hosts as f64
        );
        anyhow::Ok(())
    })
}
