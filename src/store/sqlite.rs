//! The SQLite store (the journal): one SQLite file that is the single source of truth for
//! runs, per-host outcomes, every remote side effect and every fetched report.
//!
//! Writes go through one writer thread that owns the connection and commits
//! in batches (group commit): hundreds of hosts in flight cost one fsync per
//! batch, not one per event. A caller that is about to cause a remote side
//! effect awaits [`Journal::write`], which returns only once its intent is
//! committed, so a crash at any instant leaves a journal that says what of
//! ours may exist on each host. Reports and `runs` read through
//! [`Reader`], a separate read-only connection (WAL lets both run at once).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use tokio::sync::oneshot;

use super::{
    create_private_dir, ActionRecord, ActionResult, HistoryItem, HostFinish, HostRecord, Lease,
    NewAction, NewContainment, NewNotification, NewReport, NewRun, NotificationRecord,
    RecentResult, ReportRecord, RunInfo, RunSources, StepRecord,
};
use crate::model::{processes_of, Finding, HostClass, Process, Severity};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs(
    id INTEGER PRIMARY KEY,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL,
    operator TEXT,
    controller TEXT,
    pushscan_version TEXT,
    playbook_path TEXT,
    playbook_name TEXT,
    playbook_text TEXT,
    inventory_path TEXT,
    inventory_text TEXT,
    limit_pattern TEXT,
    forks INTEGER,
    checker_path TEXT,
    checker_sha256 TEXT,
    checker_size INTEGER,
    hosts_targeted INTEGER,
    exit_code INTEGER
);
CREATE TABLE IF NOT EXISTS hosts(
    run_id INTEGER NOT NULL REFERENCES runs(id),
    host TEXT NOT NULL,
    seq INTEGER NOT NULL,
    address TEXT,
    port INTEGER,
    transport TEXT,
    groups TEXT,
    group_paths TEXT,
    state TEXT NOT NULL,
    class TEXT,
    reason TEXT,
    started_at TEXT,
    finished_at TEXT,
    duration_ms INTEGER,
    pushed INTEGER,
    exit_code INTEGER,
    primary_report INTEGER,
    PRIMARY KEY(run_id, host)
);
CREATE TABLE IF NOT EXISTS steps(
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL,
    host TEXT NOT NULL,
    step TEXT NOT NULL,
    phase TEXT NOT NULL,
    target TEXT,
    detail TEXT,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS steps_by_host ON steps(run_id, host);
CREATE TABLE IF NOT EXISTS reports(
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL,
    host TEXT NOT NULL,
    remote_name TEXT NOT NULL,
    remote_path TEXT NOT NULL,
    local_path TEXT,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    raw BLOB NOT NULL,
    fetched_at TEXT NOT NULL,
    status TEXT NOT NULL,
    hostname TEXT,
    scan_time TEXT,
    checker_version TEXT,
    format TEXT,
    warnings TEXT
);
CREATE INDEX IF NOT EXISTS reports_by_host ON reports(host, run_id);
CREATE INDEX IF NOT EXISTS hosts_by_host ON hosts(host, run_id);
CREATE TABLE IF NOT EXISTS leases(
    host TEXT PRIMARY KEY,
    run_id INTEGER NOT NULL,
    owner TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS processes(
    report_id INTEGER NOT NULL REFERENCES reports(id),
    idx INTEGER NOT NULL,
    name TEXT NOT NULL,
    pid INTEGER,
    image_path TEXT NOT NULL,
    registry_key TEXT,
    PRIMARY KEY(report_id, idx)
);
CREATE TABLE IF NOT EXISTS notifications(
    id INTEGER PRIMARY KEY,
    run_id INTEGER,
    kind TEXT NOT NULL,
    channel TEXT NOT NULL,
    target TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    error TEXT,
    hosts TEXT NOT NULL DEFAULT '[]',
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS notifications_by_run ON notifications(run_id, channel);
CREATE TABLE IF NOT EXISTS containments(
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    source_run INTEGER,
    operator TEXT NOT NULL,
    controller TEXT NOT NULL,
    actions TEXT NOT NULL,
    hosts TEXT NOT NULL DEFAULT '[]',
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL,
    recheck_run INTEGER
);
CREATE TABLE IF NOT EXISTS actions(
    id INTEGER PRIMARY KEY,
    containment_id INTEGER NOT NULL REFERENCES containments(id),
    run_id INTEGER,
    host TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    command TEXT NOT NULL,
    operator TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    phase TEXT NOT NULL,
    exit_code INTEGER,
    output_sha256 TEXT,
    verified INTEGER,
    message TEXT,
    evidence_path TEXT
);
CREATE INDEX IF NOT EXISTS actions_by_host ON actions(host, id);
CREATE INDEX IF NOT EXISTS actions_by_run ON actions(run_id);
"#;

type WriteFn = Box<dyn FnOnce(&Transaction<'_>) -> rusqlite::Result<i64> + Send>;

struct Job {
    write: WriteFn,
    ack: Option<oneshot::Sender<Result<i64, String>>>,
}

enum Msg {
    Job(Job),
    /// Commit what is queued before it, then end the writer thread.
    Stop,
}

/// Handle to the journal writer. Cheap to clone; the writer thread ends when
/// the last handle is dropped or [`Journal::close`] is called.
#[derive(Clone)]
pub struct Journal {
    path: PathBuf,
    tx: mpsc::Sender<Msg>,
    thread: std::sync::Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `execute` through the connection's statement cache: the writer runs the same few
/// statements for every host, and parsing them again each time was ~10 % of the
/// controller's CPU per host in a profile of a 50-host sweep.
fn exec<P: rusqlite::Params>(conn: &Connection, sql: &str, params: P) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

fn open_conn(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)
        .with_context(|| format!("cannot open journal {}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    // WAL + NORMAL: a process crash loses nothing committed; readers never
    // block the writer.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Makes the journal file exist with mode 0600 before SQLite opens it:
/// SQLite creates it under the umask, and gives its `-wal` and `-shm`
/// the main file's mode, so this one mode covers all three. A journal
/// left readable by an earlier version is closed here; a link in its
/// place is refused, not followed.
fn make_private_file(path: &Path) -> std::io::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true).write(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        o.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    let f = o.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if f.metadata()?.permissions().mode() & 0o077 != 0 {
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
    }
    // Off unix the file inherits the state dir's ACL.
    #[cfg(not(unix))]
    drop(f);
    Ok(())
}

impl Journal {
    /// Opens (creating if needed) `state_dir/journal.sqlite`.
    pub fn open(state_dir: &Path) -> Result<Journal> {
        create_private_dir(state_dir)
            .with_context(|| format!("cannot create state dir {}", state_dir.display()))?;
        let path = state_dir.join("journal.sqlite");
        make_private_file(&path)
            .with_context(|| format!("cannot create journal {}", path.display()))?;
        let mut conn = open_conn(&path)?;
        migrate(&mut conn).with_context(|| format!("journal {}", path.display()))?;
        let (tx, rx) = mpsc::channel::<Msg>();
        let thread = std::thread::Builder::new()
            .name("pushscan-journal".into())
            .spawn(move || writer_loop(&mut conn, rx))
            .context("cannot start journal writer")?;
        Ok(Journal {
            path,
            tx,
            thread: std::sync::Arc::new(std::sync::Mutex::new(Some(thread))),
        })
    }

    /// Queues a write and waits until it is committed. Use before a remote
    /// side effect: when this returns, the intent survives a crash.
    pub async fn write<F>(&self, f: F) -> Result<i64>
    where
        F: FnOnce(&Transaction<'_>) -> rusqlite::Result<i64> + Send + 'static,
    {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Msg::Job(Job {
                write: Box::new(f),
                ack: Some(ack),
            }))
            .map_err(|_| anyhow::anyhow!("journal writer has stopped"))?;
        done.await
            .map_err(|_| anyhow::anyhow!("journal writer has stopped"))?
            .map_err(|e| anyhow::anyhow!("journal write failed: {e}"))
    }

    /// Queues a write without waiting for it (it still commits in order).
    pub fn write_later<F>(&self, f: F)
    where
        F: FnOnce(&Transaction<'_>) -> rusqlite::Result<i64> + Send + 'static,
    {
        let _ = self.tx.send(Msg::Job(Job {
            write: Box::new(f),
            ack: None,
        }));
    }

    /// Flushes pending writes and stops the writer thread. Writes queued
    /// later through other clones fail with "journal writer has stopped".
    pub fn close(self) {
        let _ = self.tx.send(Msg::Stop);
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    // ---- typed writes used by the sweep ----

    pub async fn start_run(&self, run: NewRun) -> Result<i64> {
        self.write(move |tx| {
            exec(tx,
                "INSERT INTO runs(started_at, status, operator, controller, pushscan_version,
                    playbook_path, playbook_name, playbook_text, inventory_path, inventory_text,
                    limit_pattern, forks, checker_path, checker_sha256, checker_size, hosts_targeted,
                    rollout)
                 VALUES(?1,'running',?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16)",
                params![
                    now(),
                    run.operator,
                    run.controller,
                    env!("CARGO_PKG_VERSION"),
                    run.playbook_path,
                    run.playbook_name,
                    run.playbook_text,
                    run.inventory_path,
                    run.inventory_text,
                    run.limit,
                    run.forks as i64,
                    run.checker_path,
                    run.checker_sha256,
                    run.checker_size as i64,
                    run.hosts.len() as i64,
                    run.rollout,
                ],
            )?;
            let run_id = tx.last_insert_rowid();
            let mut stmt = tx.prepare(
                "INSERT INTO hosts(run_id, host, seq, address, port, transport, groups, group_paths,
                    state, wave, wave_partition)
                 VALUES(?1,?2,?3,?4,?5,?6,?7,?8,'pending',?9,?10)",
            )?;
            for (seq, h) in run.hosts.iter().enumerate() {
                stmt.execute(params![
                    run_id,
                    h.name,
                    seq as i64,
                    h.address,
                    h.port.map(i64::from),
                    h.transport,
                    serde_json::to_string(&h.groups).unwrap_or_default(),
                    serde_json::to_string(&h.group_paths).unwrap_or_default(),
                    h.wave.map(|w| w as i64),
                    h.wave_partition,
                ])?;
            }
            Ok(run_id)
        })
        .await
    }

    pub async fn finish_run(&self, run_id: i64, status: &str, exit_code: i32) -> Result<()> {
        let status = status.to_string();
        self.write(move |tx| {
            exec(
                tx,
                "UPDATE runs SET finished_at=?1, status=?2, exit_code=?3 WHERE id=?4",
                params![now(), status, exit_code, run_id],
            )?;
            Ok(0)
        })
        .await
        .map(|_| ())
    }

    pub fn host_started(&self, run_id: i64, host: &str) {
        let host = host.to_string();
        self.write_later(move |tx| {
            exec(
                tx,
                "UPDATE hosts SET state='running', started_at=?1 WHERE run_id=?2 AND host=?3",
                params![now(), run_id, host],
            )
            .map(|n| n as i64)
        });
    }

    /// Records the intent of a remote side effect and waits for the commit.
    pub async fn intent(&self, run_id: i64, host: &str, step: &str, target: &str) -> Result<()> {
        self.step(run_id, host, step, "intent", target, "", true)
            .await
    }

    /// Records several intents in one commit and waits for it: the steps a host is about to
    /// take together cost one group-commit wait, not one each.
    pub async fn intents(&self, run_id: i64, host: &str, steps: &[(&str, String)]) -> Result<()> {
        let h = host.to_string();
        let rows: Vec<(String, String)> = steps
            .iter()
            .map(|(s, t)| (s.to_string(), t.clone()))
            .collect();
        self.write(move |tx| {
            for (s, t) in &rows {
                insert_step(tx, run_id, &h, s, "intent", t, "")?;
            }
            Ok(0)
        })
        .await
        .map(|_| ())
    }

    /// Records the outcome of a step (not awaited: the effect already happened).
    pub fn outcome(
        &self,
        run_id: i64,
        host: &str,
        step: &str,
        ok: bool,
        target: &str,
        detail: &str,
    ) {
        let (h, s, t, d) = (
            host.to_string(),
            step.to_string(),
            target.to_string(),
            detail.to_string(),
        );
        let phase = if ok { "done" } else { "failed" };
        self.write_later(move |tx| insert_step(tx, run_id, &h, &s, phase, &t, &d));
    }

    /// A step that never began: phase `not_started`.
    pub fn not_started(&self, run_id: i64, host: &str, step: &str, target: &str, detail: &str) {
        let (h, s, t, d) = (
            host.to_string(),
            step.to_string(),
            target.to_string(),
            detail.to_string(),
        );
        self.write_later(move |tx| insert_step(tx, run_id, &h, &s, "not_started", &t, &d));
    }

    #[allow(clippy::too_many_arguments)]
    async fn step(
        &self,
        run_id: i64,
        host: &str,
        step: &str,
        phase: &'static str,
        target: &str,
        detail: &str,
        wait: bool,
    ) -> Result<()> {
        let (h, s, t, d) = (
            host.to_string(),
            step.to_string(),
            target.to_string(),
            detail.to_string(),
        );
        let f = move |tx: &Transaction<'_>| insert_step(tx, run_id, &h, &s, phase, &t, &d);
        if wait {
            self.write(f).await.map(|_| ())
        } else {
            self.write_later(f);
            Ok(())
        }
    }

    /// Stores one fetched report (raw bytes as evidence) and its parse.
    pub async fn add_report(&self, r: NewReport) -> Result<i64> {
        self.write(move |tx| {
            exec(tx,
                "INSERT INTO reports(run_id, host, remote_name, remote_path, local_path, size, sha256,
                    raw, fetched_at, status, hostname, scan_time, checker_version, format, warnings, origin,
                    parser)
                 VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17)",
                params![
                    r.run_id,
                    r.host,
                    r.remote_name,
                    r.remote_path,
                    r.local_path,
                    r.raw.len() as i64,
                    r.sha256,
                    r.raw,
                    now(),
                    r.parsed.status.as_str(),
                    r.parsed.hostname,
                    r.parsed.scan_time,
                    r.parsed.checker_version,
                    r.parsed.format,
                    serde_json::to_string(&r.parsed.warnings).unwrap_or_default(),
                    if r.history { "history" } else { "run" },
                    r.parser,
                ],
            )?;
            let id = tx.last_insert_rowid();
            insert_findings(tx, id, &r.parsed.findings)?;
            Ok(id)
        })
        .await
    }

    /// Records a host's final result and, in the same transaction, gives back the lease this
    /// process holds on it: a kill between the two would otherwise leave a lease on a host
    /// that is done, which no later run visits to release (the release that follows is then
    /// a no-op).
    pub async fn finish_host(&self, run_id: i64, host: &str, fin: HostFinish) -> Result<()> {
        let host = host.to_string();
        let me = lease_owner();
        self.write(move |tx| {
            exec(
                tx,
                "DELETE FROM leases WHERE host=?1 AND owner=?2",
                params![host, me],
            )?;
            exec(tx,
                "UPDATE hosts SET state='done', class=?1, reason=?2, finished_at=?3, duration_ms=?4,
                    pushed=?5, exit_code=?6, primary_report=?7
                 WHERE run_id=?8 AND host=?9",
                params![
                    fin.class.as_str(),
                    fin.reason,
                    now(),
                    fin.duration_ms as i64,
                    fin.pushed,
                    fin.exit_code,
                    fin.primary_report,
                    run_id,
                    host
                ],
            )
            .map(|n| n as i64)
        })
        .await
        .map(|_| ())
    }

    /// The names of the report files already journaled for `host` (any run): a report an
    /// earlier run fetched is not fetched again as history.
    pub async fn known_report_names(&self, host: &str) -> Result<Vec<String>> {
        let host = host.to_string();
        self.query(move |tx| {
            let mut st = tx.prepare("SELECT DISTINCT remote_name FROM reports WHERE host=?1")?;
            let names = st
                .query_map([&host], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(names)
        })
        .await
    }

    /// Runs `f` on the writer's connection (in its transaction) and returns
    /// its value: a consistent read among the writes.
    async fn query<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.write(move |t| {
            let v = f(t)?;
            let _ = tx.send(v);
            Ok(0)
        })
        .await?;
        rx.await
            .map_err(|_| anyhow::anyhow!("journal query lost its answer"))
    }

    /// Takes the host's lease for this run, unless another live sweep holds
    /// it. A lease expires (a crashed controller on another machine does not
    /// lock hosts forever) and is taken over at once from a dead process on
    /// this controller.
    pub async fn acquire_lease(&self, run_id: i64, host: &str, ttl_secs: u64) -> Result<Lease> {
        let host = host.to_string();
        let me = lease_owner();
        self.query(move |tx| {
            let now = chrono::Utc::now().timestamp();
            let held: Option<(i64, String, i64)> = tx
                .query_row(
                    "SELECT run_id, owner, expires_at FROM leases WHERE host=?1",
                    [&host],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            if let Some((other_run, owner, expires)) = held {
                let mine = owner == me;
                if !mine && expires > now && !owner_is_dead(&owner) {
                    return Ok(Lease::Busy { run_id: other_run, owner });
                }
            }
            exec(tx,
                "INSERT OR REPLACE INTO leases(host, run_id, owner, expires_at) VALUES(?1,?2,?3,?4)",
                params![host, run_id, me, now + ttl_secs as i64],
            )?;
            Ok(Lease::Acquired)
        })
        .await
    }

    /// Gives the lease back (only if we still hold it).
    pub fn release_lease(&self, host: &str) {
        let host = host.to_string();
        let me = lease_owner();
        self.write_later(move |tx| {
            exec(
                tx,
                "DELETE FROM leases WHERE host=?1 AND owner=?2",
                params![host, me],
            )
            .map(|n| n as i64)
        });
    }

    /// Puts every host of `run_id` that has no final result (in flight at a
    /// crash, never started, busy) back to pending and marks the run running
    /// again. Returns those hosts.
    pub async fn reopen_run(&self, run_id: i64) -> Result<Vec<String>> {
        self.query(move |tx| {
            let mut stmt = tx.prepare(
                "SELECT host FROM hosts WHERE run_id=?1
                   AND (state!='done' OR class IS NULL OR class IN ('not_started','busy'))
                 ORDER BY seq",
            )?;
            let hosts = stmt
                .query_map([run_id], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            exec(tx,
                "UPDATE hosts SET state='pending', class=NULL, reason=NULL, finished_at=NULL
                 WHERE run_id=?1 AND (state!='done' OR class IS NULL OR class IN ('not_started','busy'))",
                [run_id],
            )?;
            exec(tx,
                "UPDATE runs SET status='running', finished_at=NULL, exit_code=NULL, halt_reason=NULL
                 WHERE id=?1",
                [run_id],
            )?;
            insert_step(tx, run_id, "", "resume", "done", "", &lease_owner())?;
            Ok(hosts)
        })
        .await
    }

    /// Deletes runs that started more than `keep_days` ago, with everything
    /// recorded about them. Returns their IDs (evidence dirs are the
    /// caller's to remove).
    pub async fn prune(&self, keep_days: u64) -> Result<Vec<i64>> {
        self.query(move |tx| {
            let cutoff = (chrono::Utc::now() - chrono::Duration::days(keep_days as i64))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let mut stmt = tx.prepare("SELECT id FROM runs WHERE started_at < ?1 AND status != 'running'")?;
            let ids = stmt
                .query_map([&cutoff], |r| r.get::<_, i64>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            for id in &ids {
                exec(tx,
                    "DELETE FROM findings WHERE report_id IN (SELECT id FROM reports WHERE run_id=?1)",
                    [id],
                )?;
                for table in ["reports", "steps", "hosts", "notifications"] {
                    exec(tx, &format!("DELETE FROM {table} WHERE run_id=?1"), [id])?;
                }
                exec(tx, "DELETE FROM runs WHERE id=?1", [id])?;
            }
            Ok(ids)
        })
        .await
    }

    /// Records why a staged run stopped before its last wave (shown by `report`).
    pub async fn set_halt_reason(&self, run_id: i64, reason: &str) -> Result<()> {
        let reason = reason.to_string();
        self.write(move |tx| {
            exec(
                tx,
                "UPDATE runs SET halt_reason=?1 WHERE id=?2",
                params![reason, run_id],
            )
            .map(|n| n as i64)
        })
        .await
        .map(|_| ())
    }

    /// Records one alert delivery (alerts: `notify.rs`). No secret is in it:
    /// the target is the server and recipients or the redacted URL.
    pub async fn record_notification(&self, n: NewNotification) -> Result<i64> {
        self.write(move |tx| {
            exec(
                tx,
                "INSERT INTO notifications(run_id, kind, channel, target, status, attempts, error,
                    hosts, at)
                 VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9)",
                params![
                    n.run_id,
                    n.kind,
                    n.channel,
                    n.target,
                    n.status,
                    n.attempts,
                    n.error,
                    serde_json::to_string(&n.hosts).unwrap_or_else(|_| "[]".into()),
                    now(),
                ],
            )?;
            Ok(tx.last_insert_rowid())
        })
        .await
    }

    /// The planned wave of each of `hosts` in `run_id` (`None`: not staged).
    pub async fn host_waves(
        &self,
        run_id: i64,
    ) -> Result<std::collections::HashMap<String, (Option<i64>, Option<String>)>> {
        self.query(move |tx| {
            let mut stmt =
                tx.prepare("SELECT host, wave, wave_partition FROM hosts WHERE run_id=?1")?;
            let rows = stmt.query_map([run_id], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?;
            rows.collect::<rusqlite::Result<_>>()
        })
        .await
    }

    /// Marks every host of the run that never started as `not_started`.
    pub async fn mark_not_started(&self, run_id: i64, reason: &str) -> Result<()> {
        let reason = reason.to_string();
        self.write(move |tx| {
            exec(
                tx,
                "UPDATE hosts SET state='done', class='not_started', reason=?1, finished_at=?2
                 WHERE run_id=?3 AND state='pending'",
                params![reason, now(), run_id],
            )
            .map(|n| n as i64)
        })
        .await
        .map(|_| ())
    }

    // ---- containment (`pushscan contain` / `uncontain`, src/contain) ----

    /// Opens a containment (or uncontainment) record; its actions hang off the ID.
    pub async fn start_containment(&self, c: NewContainment) -> Result<i64> {
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO containments(kind, source_run, operator, controller, actions, hosts,
                    started_at, status)
                 VALUES(?1,?2,?3,?4,?5,?6,?7,'running')",
                params![
                    c.kind,
                    c.source_run,
                    c.operator,
                    c.controller,
                    c.actions,
                    serde_json::to_string(&c.hosts).unwrap_or_else(|_| "[]".into()),
                    now()
                ],
            )?;
            Ok(tx.last_insert_rowid())
        })
        .await
    }

    /// Closes a containment record with its status, and the run that re-checked its hosts.
    pub async fn finish_containment(
        &self,
        id: i64,
        recheck_run: Option<i64>,
        status: &str,
    ) -> Result<()> {
        let status = status.to_string();
        self.write(move |tx| {
            tx.execute(
                "UPDATE containments SET finished_at=?1, status=?2, recheck_run=?3 WHERE id=?4",
                params![now(), status, recheck_run, id],
            )
            .map(|n| n as i64)
        })
        .await
        .map(|_| ())
    }

    /// Records an action about to run on a host (phase `intent`), or one decided
    /// without touching the host (`refused`, `skipped`, `planned`), and waits for
    /// the commit: the intent survives a crash during the remote command.
    pub async fn action_intent(&self, a: NewAction) -> Result<i64> {
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO actions(containment_id, run_id, host, action, target, command,
                    operator, started_at, phase, message)
                 VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)",
                params![
                    a.containment_id,
                    a.run_id,
                    a.host,
                    a.action,
                    a.target,
                    a.command,
                    a.operator,
                    now(),
                    a.phase,
                    a.message
                ],
            )?;
            Ok(tx.last_insert_rowid())
        })
        .await
    }

    /// Records how an action ended: the commands actually run (replacing the
    /// planned text), the exit code of its effecting command, the SHA-256 of all
    /// its output, whether the result was verified on the host, and why.
    pub async fn action_result(&self, id: i64, r: ActionResult) -> Result<()> {
        self.write(move |tx| {
            tx.execute(
                "UPDATE actions SET finished_at=?1, phase=?2, exit_code=?3, output_sha256=?4,
                    verified=?5, message=?6, command=?7, evidence_path=?8
                 WHERE id=?9",
                params![
                    now(),
                    r.phase,
                    r.exit_code,
                    r.output_sha256,
                    r.verified,
                    r.message,
                    r.command,
                    r.evidence_path,
                    id
                ],
            )
            .map(|n| n as i64)
        })
        .await
        .map(|_| ())
    }
}

/// The schema version this pushscan writes: the number of the last migration.
pub const SCHEMA_VERSION: u32 = 3;

/// A schema change: applied once, in order, with the version it brings the journal to.
type Migration = (u32, fn(&Connection) -> Result<()>);

/// Every schema change since the first journal. Journals from before the numbering carry
/// version 1 or 2 in `meta` (every open then ran the whole base layout and the column
/// additions), which is exactly what migrations 1 and 2 leave.
const MIGRATIONS: &[Migration] = &[
    // The base layout: runs, hosts, steps, reports, leases, processes, notifications,
    // containments, actions and their indexes.
    (1, |conn| Ok(conn.execute_batch(SCHEMA)?)),
    // Where a report came from (this run or an older file on the host), and staged rollout:
    // a run's effective `rollout:` (JSON), why it halted, each host's planned wave.
    (2, |conn| {
        ensure_column(conn, "reports", "origin", "TEXT NOT NULL DEFAULT 'run'")?;
        ensure_column(conn, "runs", "rollout", "TEXT")?;
        ensure_column(conn, "runs", "halt_reason", "TEXT")?;
        ensure_column(conn, "hosts", "wave", "INTEGER")?;
        ensure_column(conn, "hosts", "wave_partition", "TEXT")?;
        Ok(())
    }),
    // Findings of any checker instead of EmoCheck's process rows: each process row becomes
    // a `process` finding with its PID, image path and Run key as attributes; each report
    // names the parser that read it (every report before was EmoCheck's).
    (3, |conn| {
        migrate_processes_to_findings(conn)?;
        ensure_column(conn, "reports", "parser", "TEXT")?;
        conn.execute_batch("UPDATE reports SET parser='emocheck' WHERE parser IS NULL")?;
        Ok(())
    }),
];

/// A report's findings: what, where, how serious, the parser's attributes (a JSON object of
/// strings) and the identity that keys "new since the last sweep".
const FINDINGS_TABLE: &str = r#"
CREATE TABLE IF NOT EXISTS findings(
    report_id INTEGER NOT NULL REFERENCES reports(id),
    idx INTEGER NOT NULL,
    kind TEXT NOT NULL,
    title TEXT NOT NULL,
    location TEXT NOT NULL,
    severity TEXT NOT NULL,
    identity TEXT NOT NULL,
    attributes TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY(report_id, idx)
);
"#;

fn migrate_processes_to_findings(conn: &Connection) -> Result<()> {
    conn.execute_batch(FINDINGS_TABLE)?;
    let rows = {
        let mut stmt = conn.prepare(
            "SELECT report_id, idx, name, pid, image_path, registry_key FROM processes
             ORDER BY report_id, idx",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                Process {
                    name: r.get(2)?,
                    pid: r
                        .get::<_, Option<i64>>(3)?
                        .and_then(|p| u32::try_from(p).ok()),
                    image_path: r.get(4)?,
                    registry_key: r.get(5)?,
                },
            ))
        })?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    let mut stmt = conn.prepare(INSERT_FINDING)?;
    for (report_id, idx, p) in rows {
        // Every process row was an EmoCheck detection, rated high.
        let f = Finding::process(
            &p.name,
            p.pid,
            &p.image_path,
            p.registry_key.as_deref(),
            Severity::High,
        );
        insert_finding(&mut stmt, report_id, idx, &f)?;
    }
    drop(stmt);
    conn.execute_batch("DROP TABLE processes")?;
    Ok(())
}

const INSERT_FINDING: &str =
    "INSERT INTO findings(report_id, idx, kind, title, location, severity, identity, attributes)
     VALUES(?1,?2,?3,?4,?5,?6,?7,?8)";

fn insert_finding(
    stmt: &mut rusqlite::Statement<'_>,
    report_id: i64,
    idx: i64,
    f: &Finding,
) -> rusqlite::Result<usize> {
    stmt.execute(params![
        report_id,
        idx,
        f.kind,
        f.title,
        f.location,
        f.severity.as_str(),
        f.identity,
        serde_json::to_string(&f.attributes).unwrap_or_else(|_| "{}".into()),
    ])
}

fn insert_findings(tx: &Connection, report_id: i64, findings: &[Finding]) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare(INSERT_FINDING)?;
    for (i, f) in findings.iter().enumerate() {
        insert_finding(&mut stmt, report_id, i as i64, f)?;
    }
    Ok(())
}

/// The journal's schema version (0: a new, empty file).
fn schema_version(conn: &Connection) -> Result<u32> {
    let has_meta: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta')",
        [],
        |r| r.get(0),
    )?;
    if !has_meta {
        return Ok(0);
    }
    let v: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key='schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    match v {
        None => Ok(0),
        Some(v) => v
            .trim()
            .parse()
            .with_context(|| format!("schema_version {v:?} is not a number")),
    }
}

/// Brings the journal to [`SCHEMA_VERSION`]: each missing migration once, all in one
/// immediate transaction (two pushscans opening a new journal at once do not both migrate).
/// A journal written by a newer pushscan is refused untouched: that writer may rely on
/// columns or meanings this one does not know.
fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let current = schema_version(&tx)?;
    refuse_newer(current)?;
    for (version, apply) in MIGRATIONS {
        if *version > current {
            apply(&tx).with_context(|| format!("schema migration {version}"))?;
            tx.execute(
                "INSERT INTO meta(key, value) VALUES('schema_version', ?1)
                 ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                [version.to_string()],
            )?;
        }
    }
    tx.commit()?;
    Ok(())
}

fn refuse_newer(version: u32) -> Result<()> {
    if version > SCHEMA_VERSION {
        anyhow::bail!(
            "schema version {version} was written by a newer pushscan (this one knows up to \
             {SCHEMA_VERSION}); use that pushscan or a newer one, or another --state-dir"
        );
    }
    Ok(())
}

fn ensure_column(conn: &Connection, table: &str, column: &str, decl: &str) -> Result<()> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({table})"))?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if !names.iter().any(|n| n == column) {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
    }
    Ok(())
}

/// `controller:pid` of this process: who holds a lease.
pub fn lease_owner() -> String {
    format!(
        "{}:{}",
        crate::identity::controller_name(),
        std::process::id()
    )
}

/// Whether the process that took a lease is certainly gone: it ran on this
/// controller and its PID no longer exists. Elsewhere we cannot tell, so the
/// lease runs to its expiry.
pub(super) fn owner_is_dead(owner: &str) -> bool {
    let Some((controller, pid)) = owner.rsplit_once(':') else {
        return false;
    };
    if controller != crate::identity::controller_name() {
        return false;
    }
    #[cfg(unix)]
    {
        match pid.parse::<u32>() {
            Ok(p) => p != std::process::id() && !Path::new(&format!("/proc/{p}")).exists(),
            Err(_) => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        false
    }
}

fn insert_step(
    tx: &Transaction<'_>,
    run_id: i64,
    host: &str,
    step: &str,
    phase: &str,
    target: &str,
    detail: &str,
) -> rusqlite::Result<i64> {
    exec(tx,
        "INSERT INTO steps(run_id, host, step, phase, target, detail, at) VALUES(?1,?2,?3,?4,?5,?6,?7)",
        params![run_id, host, step, phase, target, detail, now()],
    )?;
    Ok(tx.last_insert_rowid())
}

/// Group commit: take one job, then whatever else is already queued (up to
/// a bound), run them in one transaction, commit once, then acknowledge.
fn writer_loop(conn: &mut Connection, rx: mpsc::Receiver<Msg>) {
    const MAX_BATCH: usize = 512;
    let mut stopping = false;
    while !stopping {
        let first = match rx.recv() {
            Ok(Msg::Job(j)) => j,
            Ok(Msg::Stop) | Err(_) => break,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Msg::Job(j)) => batch.push(j),
                Ok(Msg::Stop) => {
                    stopping = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let mut results = Vec::with_capacity(batch.len());
        let mut acks = Vec::with_capacity(batch.len());
        let commit = (|| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            for job in batch {
                results.push((job.write)(&tx).map_err(|e| e.to_string()));
                acks.push(job.ack);
            }
            tx.commit()
        })();
        for (i, ack) in acks.into_iter().enumerate() {
            let res = match (&commit, results.get(i)) {
                (Err(e), _) => Err(format!("commit failed: {e}")),
                (Ok(()), Some(r)) => r.clone(),
                (Ok(()), None) => Err("lost result".to_string()),
            };
            if let Err(e) = &res {
                tracing::error!("journal write failed: {e}");
            }
            if let Some(ack) = ack {
                let _ = ack.send(res);
            }
        }
    }
}

/// Read-only view of the journal, for reports and listings.
pub struct Reader {
    conn: Connection,
    /// A journal from before migration 3, read as it is (the reader never migrates): EmoCheck
    /// process rows instead of findings, no parser per report.
    before_findings: bool,
}

impl Reader {
    pub fn open(state_dir: &Path) -> Result<Reader> {
        let path = state_dir.join("journal.sqlite");
        if !path.exists() {
            anyhow::bail!(
                "no journal at {} (no sweep has run with this state dir; see --state-dir)",
                path.display()
            );
        }
        let conn = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("cannot open journal {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        let version = schema_version(&conn)
            .with_context(|| format!("cannot read journal {}", path.display()))?;
        refuse_newer(version).with_context(|| format!("journal {}", path.display()))?;
        Ok(Reader {
            conn,
            before_findings: version < 3,
        })
    }

    pub fn runs(&self, limit: usize) -> Result<Vec<RunInfo>> {
        self.runs_through(i64::MAX, limit)
    }

    /// Like [`Reader::runs`], but only runs up to and including `last`
    /// (the series a report of run `last` shows), newest first.
    pub fn runs_through(&self, last: i64, limit: usize) -> Result<Vec<RunInfo>> {
        let mut stmt = self.conn.prepare(&format!(
            "{RUN_COLUMNS} WHERE id <= ?1 ORDER BY id DESC LIMIT ?2"
        ))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![last, limit], run_from_row)?;
        let mut runs = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        for run in &mut runs {
            for (class, n) in self.class_counts(run.id)? {
                run.counts
                    .insert(class.unwrap_or_else(|| "unfinished".into()), n);
            }
            run.complete = run.status == "finished"
                && !run
                    .counts
                    .keys()
                    .any(|k| matches!(k.as_str(), "unfinished" | "not_started" | "busy"));
        }
        Ok(runs)
    }

    pub fn run(&self, id: Option<i64>) -> Result<RunInfo> {
        let found = match id {
            Some(id) => self
                .conn
                .query_row(&format!("{RUN_COLUMNS} WHERE id=?1"), [id], run_from_row)
                .optional()?,
            None => self
                .conn
                .query_row(
                    &format!("{RUN_COLUMNS} ORDER BY id DESC LIMIT 1"),
                    [],
                    run_from_row,
                )
                .optional()?,
        };
        found.ok_or_else(|| match id {
            Some(id) => anyhow::anyhow!("no run {id} in the journal (see `pushscan runs`)"),
            None => anyhow::anyhow!("the journal has no runs yet"),
        })
    }

    /// The newest run that did not finish (crashed, interrupted, halted).
    pub fn last_unfinished_run(&self) -> Result<Option<i64>> {
        self.conn
            .query_row(
                "SELECT id FROM runs WHERE status != 'finished' ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(Into::into)
    }

    /// What a run was started with, to resume or clean it up exactly.
    pub fn run_sources(&self, id: i64) -> Result<RunSources> {
        self.conn
            .query_row(
                "SELECT playbook_path, playbook_text, inventory_path, inventory_text, limit_pattern,
                        forks, checker_sha256, rollout FROM runs WHERE id=?1",
                [id],
                |r| {
                    Ok(RunSources {
                        playbook_path: r.get::<_, Option<String>>(0)?.unwrap_or_default(),
                        playbook_text: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                        inventory_path: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                        inventory_text: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                        limit: r.get(4)?,
                        forks: r.get::<_, Option<i64>>(5)?.unwrap_or(50).max(1) as usize,
                        checker_sha256: r.get::<_, Option<String>>(6)?.unwrap_or_default(),
                        rollout: r.get(7)?,
                    })
                },
            )
            .optional()?
            .ok_or_else(|| anyhow::anyhow!("no run {id} in the journal (see `pushscan runs`)"))
    }

    /// Remote paths of the result files fetched for `host` in `run_id`.
    pub fn run_report_paths(&self, run_id: i64, host: &str) -> Result<Vec<String>> {
        let mut st = self.conn.prepare(
            "SELECT remote_path FROM reports WHERE run_id=?1 AND host=?2 AND origin='run'",
        )?;
        let rows = st.query_map(params![run_id, host], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<Vec<String>>>()
            .map_err(Into::into)
    }

    /// The class of `host` at its last check (detected or not) before run
    /// `before_run`, if it was ever checked.
    pub fn previous_check(&self, host: &str, before_run: i64) -> Result<Option<HostClass>> {
        let c: Option<String> = self
            .conn
            .query_row(
                "SELECT class FROM hosts WHERE host=?1 AND run_id<?2
                   AND class IN ('detected','not_detected') ORDER BY run_id DESC LIMIT 1",
                params![host, before_run],
                |r| r.get(0),
            )
            .optional()?;
        Ok(c.as_deref().and_then(HostClass::parse))
    }

    /// The finding identities of `host`'s previous check before `before_run` (its primary
    /// report's findings; empty when that check was clean or had no report).
    pub fn previous_finding_identities(
        &self,
        host: &str,
        before_run: i64,
    ) -> Result<std::collections::HashSet<String>> {
        let report: Option<i64> = self
            .conn
            .query_row(
                "SELECT primary_report FROM hosts WHERE host=?1 AND run_id<?2
                   AND class IN ('detected','not_detected') ORDER BY run_id DESC LIMIT 1",
                params![host, before_run],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        Ok(match report {
            None => Default::default(),
            Some(id) => self.findings(id)?.into_iter().map(|f| f.identity).collect(),
        })
    }

    /// The last run before `before_run` in which `host` was checked clean.
    pub fn last_clean_run(&self, host: &str, before_run: i64) -> Result<Option<i64>> {
        self.conn
            .query_row(
                "SELECT MAX(run_id) FROM hosts WHERE host=?1 AND run_id<?2 AND class='not_detected'",
                params![host, before_run],
                |r| r.get(0),
            )
            .map_err(Into::into)
    }

    /// Whether a delivered detection alert on `channel` named `host` in a run
    /// after `after_run` and up to `upto_run`.
    pub fn alerted(
        &self,
        channel: &str,
        host: &str,
        after_run: i64,
        upto_run: i64,
    ) -> Result<bool> {
        if !self.has_table("notifications")? {
            return Ok(false);
        }
        let mut st = self.conn.prepare(
            "SELECT hosts FROM notifications WHERE channel=?1 AND status='ok'
               AND kind='new_detection' AND run_id>?2 AND run_id<=?3",
        )?;
        let rows = st.query_map(params![channel, after_run, upto_run], |r| {
            r.get::<_, String>(0)
        })?;
        for hosts in rows {
            let hosts: Vec<String> = serde_json::from_str(&hosts?).unwrap_or_default();
            if hosts.iter().any(|h| h == host) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Recorded alert deliveries, oldest first: of run `run`, or all.
    pub fn notifications(&self, run: Option<i64>) -> Result<Vec<NotificationRecord>> {
        if !self.has_table("notifications")? {
            return Ok(Vec::new());
        }
        let mut st = self.conn.prepare(
            "SELECT id, run_id, kind, channel, target, status, attempts, error, hosts, at
             FROM notifications WHERE (?1 IS NULL OR run_id=?1) ORDER BY id",
        )?;
        let rows = st.query_map([run], |r| {
            let hosts: String = r.get(8)?;
            Ok(NotificationRecord {
                id: r.get(0)?,
                run_id: r.get(1)?,
                kind: r.get(2)?,
                channel: r.get(3)?,
                target: r.get(4)?,
                status: r.get(5)?,
                attempts: r.get(6)?,
                error: r.get(7)?,
                hosts: serde_json::from_str(&hosts).unwrap_or_default(),
                at: r.get(9)?,
            })
        })?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(Into::into)
    }

    /// Containment actions on `host`, newest first (at most `limit`).
    pub fn host_actions(&self, host: &str, limit: usize) -> Result<Vec<ActionRecord>> {
        self.actions_where(
            "a.host=?1",
            rusqlite::types::Value::Text(host.into()),
            limit,
        )
    }

    /// Containment actions that acted on run `run_id`'s detections or whose
    /// re-check is run `run_id`, oldest first.
    pub fn run_actions(&self, run_id: i64) -> Result<Vec<ActionRecord>> {
        let mut v = self.actions_where(
            "(a.run_id=?1 OR c.recheck_run=?1)",
            rusqlite::types::Value::Integer(run_id),
            usize::MAX >> 1,
        )?;
        v.reverse();
        Ok(v)
    }

    fn actions_where(
        &self,
        cond: &str,
        arg: rusqlite::types::Value,
        limit: usize,
    ) -> Result<Vec<ActionRecord>> {
        if !self.has_table("actions")? {
            return Ok(Vec::new());
        }
        let mut st = self.conn.prepare(&format!(
            "SELECT a.id, a.containment_id, c.kind, a.run_id, a.host, a.action, a.target, a.command,
                    a.operator, a.started_at, a.finished_at, a.phase, a.exit_code, a.output_sha256,
                    a.verified, a.message, a.evidence_path, c.recheck_run
             FROM actions a JOIN containments c ON c.id = a.containment_id
             WHERE {cond} ORDER BY a.id DESC LIMIT ?2"
        ))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = st.query_map(params![arg, limit], |r| {
            Ok(ActionRecord {
                id: r.get(0)?,
                containment_id: r.get(1)?,
                kind: r.get(2)?,
                run_id: r.get(3)?,
                host: r.get(4)?,
                action: r.get(5)?,
                target: r.get(6)?,
                command: r.get(7)?,
                operator: r.get(8)?,
                started_at: r.get(9)?,
                finished_at: r.get(10)?,
                phase: r.get(11)?,
                exit_code: r.get(12)?,
                output_sha256: r.get(13)?,
                verified: r.get(14)?,
                message: r.get(15)?,
                evidence_path: r.get(16)?,
                recheck_run: r.get(17)?,
            })
        })?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(Into::into)
    }

    /// A journal written before a table existed (read-only: not migrated here).
    fn has_table(&self, name: &str) -> Result<bool> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type='table' AND name=?1",
            [name],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    /// When `host` was last checked successfully (detected or not), in any run.
    pub fn last_success(&self, host: &str) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT finished_at FROM hosts WHERE host=?1 AND class IN ('detected','not_detected')
                 ORDER BY finished_at DESC LIMIT 1",
                [host],
                |r| r.get(0),
            )
            .optional()
            .map_err(Into::into)
    }

    /// `host`'s results, newest run first, and the reports found on it from
    /// before pushscan saw it (history reports), newest first.
    pub fn host_history(
        &self,
        host: &str,
        limit: usize,
    ) -> Result<(Vec<HistoryItem>, Vec<ReportRecord>)> {
        let mut st = self.conn.prepare(
            "SELECT h.run_id, r.started_at, h.class, h.reason, h.finished_at, h.primary_report
             FROM hosts h JOIN runs r ON r.id = h.run_id
             WHERE h.host=?1 AND h.class IS NOT NULL ORDER BY h.run_id DESC LIMIT ?2",
        )?;
        let rows = st.query_map(params![host, limit as i64], |r| {
            Ok((
                HistoryItem {
                    run_id: r.get(0)?,
                    run_started_at: r.get(1)?,
                    class: r.get(2)?,
                    reason: r.get(3)?,
                    finished_at: r.get(4)?,
                    report: None,
                },
                r.get::<_, Option<i64>>(5)?,
            ))
        })?;
        let mut items = Vec::new();
        for row in rows {
            let (mut item, report) = row?;
            if let Some(id) = report {
                item.report = self.report(id)?;
            }
            items.push(item);
        }
        let mut st = self.conn.prepare(
            "SELECT id FROM reports WHERE host=?1 AND origin='history' ORDER BY remote_name DESC LIMIT ?2",
        )?;
        let ids = st
            .query_map(params![host, limit as i64], |r| r.get::<_, i64>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut found = Vec::new();
        for id in ids {
            if let Some(r) = self.report(id)? {
                found.push(r);
            }
        }
        Ok((items, found))
    }

    /// Per-class host counts of a run.
    pub fn class_counts(&self, run_id: i64) -> Result<Vec<(Option<String>, i64)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT class, COUNT(*) FROM hosts WHERE run_id=?1 GROUP BY class")?;
        let rows = stmt.query_map([run_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(Into::into)
    }

    pub fn hosts(&self, run_id: i64) -> Result<Vec<HostRecord>> {
        let mut stmt = self.conn.prepare(
            "SELECT host, address, port, transport, groups, group_paths, class, reason, started_at,
                    finished_at, duration_ms, pushed, exit_code, primary_report, wave, wave_partition
             FROM hosts WHERE run_id=?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map([run_id], |r| {
            let groups: Option<String> = r.get(4)?;
            let paths: Option<String> = r.get(5)?;
            let class: Option<String> = r.get(6)?;
            Ok((
                HostRecord {
                    host: r.get(0)?,
                    address: r.get(1)?,
                    port: r.get(2)?,
                    transport: r.get(3)?,
                    groups: groups
                        .and_then(|g| serde_json::from_str(&g).ok())
                        .unwrap_or_default(),
                    group_paths: paths
                        .and_then(|g| serde_json::from_str(&g).ok())
                        .unwrap_or_default(),
                    class: class.as_deref().and_then(HostClass::parse),
                    reason: r.get(7)?,
                    started_at: r.get(8)?,
                    finished_at: r.get(9)?,
                    duration_ms: r.get(10)?,
                    pushed: r.get(11)?,
                    exit_code: r.get(12)?,
                    wave: r.get(14)?,
                    wave_partition: r.get(15)?,
                    report: None,
                },
                r.get::<_, Option<i64>>(13)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (mut rec, report_id) = row?;
            if let Some(id) = report_id {
                rec.report = self.report(id)?;
            }
            out.push(rec);
        }
        Ok(out)
    }

    pub fn report(&self, id: i64) -> Result<Option<ReportRecord>> {
        let rec = self
            .conn
            .query_row(
                &format!(
                    "SELECT id, remote_name, local_path, sha256, size, status, hostname,
                            scan_time, checker_version, format, warnings, {}
                     FROM reports WHERE id=?1",
                    // Every report before migration 3 was EmoCheck's.
                    if self.before_findings {
                        "'emocheck'"
                    } else {
                        "parser"
                    }
                ),
                [id],
                |r| {
                    let warnings: Option<String> = r.get(10)?;
                    Ok(ReportRecord {
                        id: r.get(0)?,
                        remote_name: r.get(1)?,
                        local_path: r.get(2)?,
                        sha256: r.get(3)?,
                        size: r.get(4)?,
                        status: r.get(5)?,
                        hostname: r.get(6)?,
                        scan_time: r.get(7)?,
                        checker_version: r.get(8)?,
                        format: r.get(9)?,
                        warnings: warnings
                            .and_then(|w| serde_json::from_str(&w).ok())
                            .unwrap_or_default(),
                        parser: r.get(11)?,
                        processes: Vec::new(),
                        findings: Vec::new(),
                    })
                },
            )
            .optional()?;
        let Some(mut rec) = rec else {
            return Ok(None);
        };
        rec.findings = self.findings(id)?;
        rec.processes = processes_of(&rec.findings);
        Ok(Some(rec))
    }

    /// The findings of report `id`, in report order.
    fn findings(&self, id: i64) -> Result<Vec<Finding>> {
        if self.before_findings {
            // EmoCheck's process rows, read as migration 3 would turn them into findings.
            let mut stmt = self.conn.prepare(
                "SELECT name, pid, image_path, registry_key FROM processes
                 WHERE report_id=?1 ORDER BY idx",
            )?;
            let rows = stmt.query_map([id], |r| {
                let name: String = r.get(0)?;
                let pid = r
                    .get::<_, Option<i64>>(1)?
                    .and_then(|p| u32::try_from(p).ok());
                let image: String = r.get(2)?;
                let key: Option<String> = r.get(3)?;
                Ok(Finding::process(
                    &name,
                    pid,
                    &image,
                    key.as_deref(),
                    Severity::High,
                ))
            })?;
            return Ok(rows.collect::<rusqlite::Result<_>>()?);
        }
        let mut stmt = self.conn.prepare(
            "SELECT kind, title, location, severity, identity, attributes FROM findings
             WHERE report_id=?1 ORDER BY idx",
        )?;
        let rows = stmt.query_map([id], |r| {
            let severity: String = r.get(3)?;
            let attributes: String = r.get(5)?;
            Ok(Finding {
                kind: r.get(0)?,
                title: r.get(1)?,
                location: r.get(2)?,
                severity: Severity::parse(&severity).unwrap_or_default(),
                identity: r.get(4)?,
                attributes: serde_json::from_str(&attributes).unwrap_or_default(),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The first `max` bytes of a stored report and its full size: what a
    /// report embeds without loading a big blob whole.
    pub fn report_raw_prefix(&self, id: i64, max: usize) -> Result<Option<(Vec<u8>, i64)>> {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        self.conn
            .query_row(
                "SELECT substr(raw, 1, ?2), length(raw) FROM reports WHERE id=?1",
                params![id, max],
                |r| {
                    Ok((
                        r.get::<_, Option<Vec<u8>>>(0)?.unwrap_or_default(),
                        r.get(1)?,
                    ))
                },
            )
            .optional()
            .map_err(Into::into)
    }

    /// For every host of run `run_id`: its last `per_host` results in runs up
    /// to and including `run_id`, oldest first (one query, whatever the
    /// fleet size). A host still without a final class has `None`.
    pub fn recent_results(
        &self,
        run_id: i64,
        per_host: usize,
    ) -> Result<std::collections::HashMap<String, Vec<RecentResult>>> {
        let mut out: std::collections::HashMap<String, Vec<RecentResult>> = Default::default();
        if per_host == 0 {
            return Ok(out);
        }
        let mut stmt = self.conn.prepare(
            "SELECT host, run_id, started_at, class FROM (
                SELECT h.host, h.run_id, r.started_at, h.class,
                       ROW_NUMBER() OVER (PARTITION BY h.host ORDER BY h.run_id DESC) AS rn
                FROM hosts h JOIN runs r ON r.id = h.run_id
                WHERE h.run_id <= ?1 AND h.host IN (SELECT host FROM hosts WHERE run_id = ?1)
             ) WHERE rn <= ?2 ORDER BY host, run_id",
        )?;
        let per_host = i64::try_from(per_host).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![run_id, per_host], |r| {
            Ok((
                r.get::<_, String>(0)?,
                RecentResult {
                    run_id: r.get(1)?,
                    started_at: r.get(2)?,
                    class: r.get(3)?,
                },
            ))
        })?;
        for row in rows {
            let (host, item) = row?;
            out.entry(host).or_default().push(item);
        }
        Ok(out)
    }

    /// The raw bytes of a stored report (evidence).
    pub fn report_raw(&self, id: i64) -> Result<Option<Vec<u8>>> {
        self.conn
            .query_row("SELECT raw FROM reports WHERE id=?1", [id], |r| r.get(0))
            .optional()
            .map_err(Into::into)
    }

    pub fn steps(&self, run_id: i64, host: Option<&str>) -> Result<Vec<StepRecord>> {
        let mut stmt = self.conn.prepare(
            "SELECT host, step, phase, target, detail, at FROM steps
             WHERE run_id=?1 AND (?2 IS NULL OR host=?2) ORDER BY id",
        )?;
        let rows = stmt.query_map(params![run_id, host], |r| {
            Ok(StepRecord {
                host: r.get(0)?,
                step: r.get(1)?,
                phase: r.get(2)?,
                target: r.get(3)?,
                detail: r.get(4)?,
                at: r.get(5)?,
            })
        })?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(Into::into)
    }
}

const RUN_COLUMNS: &str = "SELECT id, started_at, finished_at, status, operator, controller,
    pushscan_version, playbook_path, playbook_name, inventory_path, limit_pattern, forks,
    checker_path, checker_sha256, hosts_targeted, exit_code, halt_reason FROM runs";

// ---------------------------------------------------------------- the store traits

#[async_trait::async_trait]
impl super::Store for Journal {
    async fn start_run(&self, run: NewRun) -> Result<i64> {
        Journal::start_run(self, run).await
    }
    async fn finish_run(&self, run_id: i64, status: &str, exit_code: i32) -> Result<()> {
        Journal::finish_run(self, run_id, status, exit_code).await
    }
    fn host_started(&self, run_id: i64, host: &str) {
        Journal::host_started(self, run_id, host)
    }
    async fn intent(&self, run_id: i64, host: &str, step: &str, target: &str) -> Result<()> {
        Journal::intent(self, run_id, host, step, target).await
    }
    async fn intents(&self, run_id: i64, host: &str, steps: &[(&str, String)]) -> Result<()> {
        Journal::intents(self, run_id, host, steps).await
    }
    fn outcome(&self, run_id: i64, host: &str, step: &str, ok: bool, target: &str, detail: &str) {
        Journal::outcome(self, run_id, host, step, ok, target, detail)
    }
    async fn add_report(&self, r: NewReport) -> Result<i64> {
        Journal::add_report(self, r).await
    }
    async fn finish_host(&self, run_id: i64, host: &str, fin: HostFinish) -> Result<()> {
        Journal::finish_host(self, run_id, host, fin).await
    }
    async fn known_report_names(&self, host: &str) -> Result<Vec<String>> {
        Journal::known_report_names(self, host).await
    }
    async fn acquire_lease(&self, run_id: i64, host: &str, ttl_secs: u64) -> Result<Lease> {
        Journal::acquire_lease(self, run_id, host, ttl_secs).await
    }
    fn release_lease(&self, host: &str) {
        Journal::release_lease(self, host)
    }
    async fn reopen_run(&self, run_id: i64) -> Result<Vec<String>> {
        Journal::reopen_run(self, run_id).await
    }
    async fn prune(&self, keep_days: u64) -> Result<Vec<i64>> {
        Journal::prune(self, keep_days).await
    }
    async fn set_halt_reason(&self, run_id: i64, reason: &str) -> Result<()> {
        Journal::set_halt_reason(self, run_id, reason).await
    }
    async fn record_notification(&self, n: NewNotification) -> Result<i64> {
        Journal::record_notification(self, n).await
    }
    async fn host_waves(
        &self,
        run_id: i64,
    ) -> Result<std::collections::HashMap<String, (Option<i64>, Option<String>)>> {
        Journal::host_waves(self, run_id).await
    }
    async fn mark_not_started(&self, run_id: i64, reason: &str) -> Result<()> {
        Journal::mark_not_started(self, run_id, reason).await
    }
    async fn start_containment(&self, c: NewContainment) -> Result<i64> {
        Journal::start_containment(self, c).await
    }
    fn not_started(&self, run_id: i64, host: &str, step: &str, target: &str, detail: &str) {
        Journal::not_started(self, run_id, host, step, target, detail)
    }
    async fn finish_containment(
        &self,
        id: i64,
        recheck_run: Option<i64>,
        status: &str,
    ) -> Result<()> {
        Journal::finish_containment(self, id, recheck_run, status).await
    }
    async fn action_intent(&self, a: NewAction) -> Result<i64> {
        Journal::action_intent(self, a).await
    }
    async fn action_result(&self, id: i64, r: ActionResult) -> Result<()> {
        Journal::action_result(self, id, r).await
    }
    fn location(&self) -> String {
        self.path.display().to_string()
    }
    fn close(&self) {
        self.clone().close()
    }
}

impl super::StoreReader for Reader {
    fn runs(&self, limit: usize) -> Result<Vec<RunInfo>> {
        Reader::runs(self, limit)
    }
    fn runs_through(&self, last: i64, limit: usize) -> Result<Vec<RunInfo>> {
        Reader::runs_through(self, last, limit)
    }
    fn run(&self, id: Option<i64>) -> Result<RunInfo> {
        Reader::run(self, id)
    }
    fn last_unfinished_run(&self) -> Result<Option<i64>> {
        Reader::last_unfinished_run(self)
    }
    fn run_sources(&self, id: i64) -> Result<RunSources> {
        Reader::run_sources(self, id)
    }
    fn run_report_paths(&self, run_id: i64, host: &str) -> Result<Vec<String>> {
        Reader::run_report_paths(self, run_id, host)
    }
    fn previous_check(&self, host: &str, before_run: i64) -> Result<Option<HostClass>> {
        Reader::previous_check(self, host, before_run)
    }
    fn previous_finding_identities(
        &self,
        host: &str,
        before_run: i64,
    ) -> Result<std::collections::HashSet<String>> {
        Reader::previous_finding_identities(self, host, before_run)
    }
    fn last_clean_run(&self, host: &str, before_run: i64) -> Result<Option<i64>> {
        Reader::last_clean_run(self, host, before_run)
    }
    fn alerted(&self, channel: &str, host: &str, after_run: i64, upto_run: i64) -> Result<bool> {
        Reader::alerted(self, channel, host, after_run, upto_run)
    }
    fn notifications(&self, run: Option<i64>) -> Result<Vec<NotificationRecord>> {
        Reader::notifications(self, run)
    }
    fn host_actions(&self, host: &str, limit: usize) -> Result<Vec<ActionRecord>> {
        Reader::host_actions(self, host, limit)
    }
    fn run_actions(&self, run_id: i64) -> Result<Vec<ActionRecord>> {
        Reader::run_actions(self, run_id)
    }
    fn last_success(&self, host: &str) -> Result<Option<String>> {
        Reader::last_success(self, host)
    }
    fn host_history(
        &self,
        host: &str,
        limit: usize,
    ) -> Result<(Vec<HistoryItem>, Vec<ReportRecord>)> {
        Reader::host_history(self, host, limit)
    }
    fn class_counts(&self, run_id: i64) -> Result<Vec<(Option<String>, i64)>> {
        Reader::class_counts(self, run_id)
    }
    fn hosts(&self, run_id: i64) -> Result<Vec<HostRecord>> {
        Reader::hosts(self, run_id)
    }
    fn report(&self, id: i64) -> Result<Option<ReportRecord>> {
        Reader::report(self, id)
    }
    fn report_raw_prefix(&self, id: i64, max: usize) -> Result<Option<(Vec<u8>, i64)>> {
        Reader::report_raw_prefix(self, id, max)
    }
    fn recent_results(
        &self,
        run_id: i64,
        per_host: usize,
    ) -> Result<std::collections::HashMap<String, Vec<RecentResult>>> {
        Reader::recent_results(self, run_id, per_host)
    }
    fn report_raw(&self, id: i64) -> Result<Option<Vec<u8>>> {
        Reader::report_raw(self, id)
    }
    fn steps(&self, run_id: i64, host: Option<&str>) -> Result<Vec<StepRecord>> {
        Reader::steps(self, run_id, host)
    }
}

fn run_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunInfo> {
    Ok(RunInfo {
        id: r.get(0)?,
        started_at: r.get(1)?,
        finished_at: r.get(2)?,
        status: r.get(3)?,
        operator: r.get(4)?,
        controller: r.get(5)?,
        pushscan_version: r.get(6)?,
        playbook: r.get(7)?,
        playbook_name: r.get(8)?,
        inventory: r.get(9)?,
        limit: r.get(10)?,
        forks: r.get(11)?,
        checker_path: r.get(12)?,
        checker_sha256: r.get(13)?,
        hosts_targeted: r.get(14)?,
        exit_code: r.get(15)?,
        halt_reason: r.get(16)?,
        counts: Default::default(),
        complete: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HostClass;
    use crate::store::HostFinish;

    fn leases(state_dir: &Path) -> i64 {
        Connection::open(state_dir.join("journal.sqlite"))
            .and_then(|c| c.query_row("SELECT COUNT(*) FROM leases", [], |r| r.get(0)))
            .expect("count leases")
    }

    /// A host's final result and the release of its lease are one transaction: nothing
    /// after `finish_host` (a kill before the separate release) can leave the lease behind.
    #[tokio::test]
    async fn finishing_a_host_gives_its_lease_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = Journal::open(dir.path()).expect("journal");
        let run = journal
            .start_run(crate::store::tests::test_run(&["h", "other"], "test"))
            .await
            .expect("run");
        for h in ["h", "other"] {
            journal.host_started(run, h);
            assert!(matches!(
                journal.acquire_lease(run, h, 600).await.expect("lease"),
                Lease::Acquired
            ));
        }
        assert_eq!(leases(dir.path()), 2);
        let fin = HostFinish {
            class: HostClass::NotDetected,
            reason: "clean".into(),
            duration_ms: 1,
            pushed: None,
            exit_code: Some(0),
            primary_report: None,
        };
        journal.finish_host(run, "h", fin).await.expect("finish");
        assert_eq!(
            leases(dir.path()),
            1,
            "only the finished host's lease is gone"
        );
    }
}
