//! The store: where every run, host outcome, step intent, report, finding, alert delivery and
//! containment action is kept, behind two backend-neutral traits.
//!
//! [`Store`] is the writer the engine, alerts and contain use (intents committed before every
//! remote side effect; a write that must be durable before the caller goes on is awaited);
//! [`StoreReader`] is the read side reports, history, resume, cleanup and alerts use. Both speak
//! only the record types below (no backend type crosses them). Two backends implement them:
//! [`sqlite`] (one SQLite file per state dir, the default, needing nothing) and [`postgres`]
//! (a PostgreSQL database named by a `postgres://` URL). Each keeps its schema as numbered
//! migrations and holds all of pushscan's SQL for it.
//!
//! Which one a command uses is its [`Location`]: `--store` / `PUSHSCAN_STORE`, chosen once by
//! `main` ([`select`]); without one, the SQLite file in the state dir, as before. Callers
//! open the store with [`open`] / [`open_reader`] and never learn which backend they got. The
//! state dir keeps everything that is not the store (reports on disk, evidence, locks)
//! whichever backend holds the journal.

#[doc(hidden)]
pub mod conformance;
mod postgres;
mod sqlite;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::Result;

pub use postgres::{read_password_file, PasswordSource, SslMode, Target};

use crate::model::{Finding, HostClass, ParsedReport, Process};

/// Creates `dir` and any missing parent, each private to the user running
/// pushscan (0700 on unix, whatever the umask): the state dir holds raw
/// reports, the inventory and evidence. A directory that already exists is
/// left as it is (it may be shared, like `/tmp`); what pushscan puts in it
/// is private on its own.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

/// Where the store is: a directory holding the SQLite journal, or a PostgreSQL database.
#[derive(Debug, Clone)]
pub enum Location {
    /// `journal.sqlite` in this directory.
    Sqlite(PathBuf),
    /// A PostgreSQL database (no password in it: see [`PasswordSource`]).
    Postgres(postgres::Target),
}

impl Location {
    /// A `--store` value: a `postgres://` (or `postgresql://`) URL, else a directory path.
    /// A password inside the URL is refused; `password` says where it comes from instead.
    pub fn parse(s: &str, password: PasswordSource) -> Result<Location> {
        if postgres::is_url(s) {
            Ok(Location::Postgres(postgres::Target::parse(s, password)?))
        } else if s.contains("://") {
            anyhow::bail!(
                "--store {s:?}: not a directory and not a postgres:// URL \
                 (postgres://USER@HOST:PORT/DATABASE?sslmode=verify-full&sslrootcert=CA.pem)"
            )
        } else if s.is_empty() {
            anyhow::bail!("--store is empty: give a directory or a postgres:// URL")
        } else {
            Ok(Location::Sqlite(PathBuf::from(s)))
        }
    }

    /// For the operator: the journal file, or `postgres://user@host:port/db`.
    pub fn display(&self) -> String {
        match self {
            Location::Sqlite(dir) => dir.join("journal.sqlite").display().to_string(),
            Location::Postgres(t) => t.display(),
        }
    }
}

/// The store this process uses, when `main` chose one (`--store`).
static SELECTED: OnceLock<Location> = OnceLock::new();

/// Chooses the store every later [`open`] / [`open_reader`] of this process uses, whatever
/// state dir it is given (that stays the place of reports on disk, evidence and locks). Set
/// once, by `main`, before any command runs; a second call is ignored.
pub fn select(location: Location) {
    let _ = SELECTED.set(location);
}

/// Where [`open`] of `state_dir` goes: the selected store, else the state dir's journal.
pub fn location(state_dir: &Path) -> Location {
    SELECTED
        .get()
        .cloned()
        .unwrap_or_else(|| Location::Sqlite(state_dir.to_path_buf()))
}

/// The store for writing (created and migrated when needed): the one chosen with [`select`],
/// else the SQLite journal in `state_dir`.
pub fn open(state_dir: &Path) -> Result<Arc<dyn Store>> {
    open_at(&location(state_dir))
}

/// The store for reading (never created or migrated: a store written by an older pushscan is
/// read as it is, one from a newer pushscan refused); chosen as [`open`] does.
pub fn open_reader(state_dir: &Path) -> Result<Box<dyn StoreReader>> {
    open_reader_at(&location(state_dir))
}

/// The store at `location`, for writing.
pub fn open_at(location: &Location) -> Result<Arc<dyn Store>> {
    Ok(match location {
        Location::Sqlite(dir) => Arc::new(sqlite::Journal::open(dir)?),
        Location::Postgres(t) => Arc::new(postgres::Writer::open(t)?),
    })
}

/// The store at `location`, for reading.
pub fn open_reader_at(location: &Location) -> Result<Box<dyn StoreReader>> {
    Ok(match location {
        Location::Sqlite(dir) => Box::new(sqlite::Reader::open(dir)?),
        Location::Postgres(t) => Box::new(postgres::Reader::open(t)?),
    })
}

/// The writer side of a store. Methods that return nothing are queued (their effect already
/// happened on the host); awaited ones are durable when they return.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    async fn start_run(&self, run: NewRun) -> Result<i64>;
    async fn finish_run(&self, run_id: i64, status: &str, exit_code: i32) -> Result<()>;
    fn host_started(&self, run_id: i64, host: &str);
    /// A step about to cause a remote side effect: durable before it happens.
    async fn intent(&self, run_id: i64, host: &str, step: &str, target: &str) -> Result<()>;
    async fn intents(&self, run_id: i64, host: &str, steps: &[(&str, String)]) -> Result<()>;
    fn outcome(&self, run_id: i64, host: &str, step: &str, ok: bool, target: &str, detail: &str);
    /// A step that never began (the command was interrupted before this host): recorded with
    /// the phase `not_started`, so a reader tells it from a step that ran and failed.
    fn not_started(&self, run_id: i64, host: &str, step: &str, target: &str, detail: &str);
    /// One fetched report, its raw bytes and its findings.
    async fn add_report(&self, r: NewReport) -> Result<i64>;
    /// A host's final result; the lease this process holds on the host is given back in
    /// the same step, so no kill leaves a lease on a host that is done.
    async fn finish_host(&self, run_id: i64, host: &str, fin: HostFinish) -> Result<()>;
    async fn known_report_names(&self, host: &str) -> Result<Vec<String>>;
    async fn acquire_lease(&self, run_id: i64, host: &str, ttl_secs: u64) -> Result<Lease>;
    fn release_lease(&self, host: &str);
    async fn reopen_run(&self, run_id: i64) -> Result<Vec<String>>;
    async fn prune(&self, keep_days: u64) -> Result<Vec<i64>>;
    async fn set_halt_reason(&self, run_id: i64, reason: &str) -> Result<()>;
    async fn record_notification(&self, n: NewNotification) -> Result<i64>;
    async fn host_waves(
        &self,
        run_id: i64,
    ) -> Result<HashMap<String, (Option<i64>, Option<String>)>>;
    async fn mark_not_started(&self, run_id: i64, reason: &str) -> Result<()>;
    async fn start_containment(&self, c: NewContainment) -> Result<i64>;
    /// Closes a containment: `status` is `finished`, or `interrupted` when a stop signal
    /// left hosts not started.
    async fn finish_containment(
        &self,
        id: i64,
        recheck_run: Option<i64>,
        status: &str,
    ) -> Result<()>;
    async fn action_intent(&self, a: NewAction) -> Result<i64>;
    async fn action_result(&self, id: i64, r: ActionResult) -> Result<()>;
    /// Where the store is, for the operator (a file path, a server address).
    fn location(&self) -> String;
    /// Flushes what is queued; later writes fail.
    fn close(&self);
}

/// The read side of a store.
pub trait StoreReader: Send {
    /// The last `limit` runs, newest first.
    fn runs(&self, limit: usize) -> Result<Vec<RunInfo>>;
    /// Runs up to and including `last`, newest first.
    fn runs_through(&self, last: i64, limit: usize) -> Result<Vec<RunInfo>>;
    /// Run `id`, or the latest.
    fn run(&self, id: Option<i64>) -> Result<RunInfo>;
    fn last_unfinished_run(&self) -> Result<Option<i64>>;
    fn run_sources(&self, id: i64) -> Result<RunSources>;
    fn run_report_paths(&self, run_id: i64, host: &str) -> Result<Vec<String>>;
    /// The host's class at its last check (detected or not) before `before_run`.
    fn previous_check(&self, host: &str, before_run: i64) -> Result<Option<HostClass>>;
    /// The finding identities of that previous check.
    fn previous_finding_identities(&self, host: &str, before_run: i64) -> Result<HashSet<String>>;
    fn last_clean_run(&self, host: &str, before_run: i64) -> Result<Option<i64>>;
    /// Whether a delivered alert on `channel` named `host` in runs `after_run+1..=upto_run`.
    fn alerted(&self, channel: &str, host: &str, after_run: i64, upto_run: i64) -> Result<bool>;
    fn notifications(&self, run: Option<i64>) -> Result<Vec<NotificationRecord>>;
    fn host_actions(&self, host: &str, limit: usize) -> Result<Vec<ActionRecord>>;
    fn run_actions(&self, run_id: i64) -> Result<Vec<ActionRecord>>;
    fn last_success(&self, host: &str) -> Result<Option<String>>;
    fn host_history(
        &self,
        host: &str,
        limit: usize,
    ) -> Result<(Vec<HistoryItem>, Vec<ReportRecord>)>;
    fn class_counts(&self, run_id: i64) -> Result<Vec<(Option<String>, i64)>>;
    fn hosts(&self, run_id: i64) -> Result<Vec<HostRecord>>;
    fn report(&self, id: i64) -> Result<Option<ReportRecord>>;
    /// The first `max` bytes of a stored report and its full size.
    fn report_raw_prefix(&self, id: i64, max: usize) -> Result<Option<(Vec<u8>, i64)>>;
    fn recent_results(
        &self,
        run_id: i64,
        per_host: usize,
    ) -> Result<HashMap<String, Vec<RecentResult>>>;
    fn report_raw(&self, id: i64) -> Result<Option<Vec<u8>>>;
    fn steps(&self, run_id: i64, host: Option<&str>) -> Result<Vec<StepRecord>>;
}

// ---------------------------------------------------------------- records

/// The outcome of asking for a host's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    Acquired,
    /// Another live sweep works on the host.
    Busy {
        run_id: i64,
        owner: String,
    },
}

/// A run about to start.
pub struct NewRun {
    pub operator: String,
    pub controller: String,
    pub playbook_path: String,
    pub playbook_name: String,
    pub playbook_text: String,
    pub inventory_path: String,
    pub inventory_text: String,
    pub limit: Option<String>,
    pub forks: usize,
    pub checker_path: String,
    pub checker_sha256: String,
    pub checker_size: u64,
    pub hosts: Vec<RunHost>,
    /// The effective rollout (JSON), when the run is staged.
    pub rollout: Option<String>,
}

/// One alert delivery about to be recorded.
pub struct NewNotification {
    pub run_id: Option<i64>,
    /// `new_detection`, `incomplete` (or `test`).
    pub kind: String,
    /// `mail` or `webhook`.
    pub channel: String,
    pub target: String,
    /// `ok` or `failed`.
    pub status: String,
    pub attempts: i64,
    pub error: Option<String>,
    /// The hosts the message named.
    pub hosts: Vec<String>,
}

/// A containment about to start (`pushscan contain` or `uncontain`).
pub struct NewContainment {
    /// `contain` or `uncontain`.
    pub kind: String,
    /// The run whose detections it acts on (`None` for `uncontain`).
    pub source_run: Option<i64>,
    pub operator: String,
    pub controller: String,
    /// The actions asked for, comma-separated.
    pub actions: String,
    pub hosts: Vec<String>,
}

/// One action about to be recorded.
pub struct NewAction {
    pub containment_id: i64,
    pub run_id: Option<i64>,
    pub host: String,
    /// `evidence`, `kill`, `remove`, `unpersist`, `isolate`, `uncontain`, `recheck`, or
    /// `refused` (the host was refused before any command).
    pub action: String,
    /// What it acts on: a path, `PID n`, a registry value, the rule name.
    pub target: String,
    /// The exact remote command text (one command a line).
    pub command: String,
    pub operator: String,
    /// `intent` (about to run), `refused` or `skipped` (decided without running).
    pub phase: String,
    pub message: Option<String>,
}

/// How a recorded action ended.
pub struct ActionResult {
    /// `done` (ran and verified), `failed`, `skipped`.
    pub phase: String,
    pub exit_code: Option<i64>,
    pub output_sha256: Option<String>,
    pub verified: Option<bool>,
    pub message: String,
    /// The commands as run.
    pub command: String,
    pub evidence_path: Option<String>,
}

/// One recorded containment action (history, reports).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ActionRecord {
    pub id: i64,
    pub containment_id: i64,
    /// `contain` or `uncontain`.
    pub kind: String,
    pub run_id: Option<i64>,
    pub host: String,
    pub action: String,
    pub target: Option<String>,
    pub command: String,
    pub operator: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub phase: String,
    pub exit_code: Option<i64>,
    pub output_sha256: Option<String>,
    pub verified: Option<bool>,
    pub message: Option<String>,
    pub evidence_path: Option<String>,
    /// The run that re-checked the host after this containment, if any.
    pub recheck_run: Option<i64>,
}

/// One recorded alert delivery.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NotificationRecord {
    pub id: i64,
    pub run_id: Option<i64>,
    pub kind: String,
    pub channel: String,
    pub target: String,
    pub status: String,
    pub attempts: i64,
    pub error: Option<String>,
    pub hosts: Vec<String>,
    pub at: String,
}

/// A targeted host as recorded at run start.
pub struct RunHost {
    pub name: String,
    pub address: String,
    pub port: Option<u16>,
    pub transport: String,
    pub groups: Vec<String>,
    pub group_paths: Vec<Vec<String>>,
    /// The planned wave (1-based) and its OU/group.
    pub wave: Option<usize>,
    pub wave_partition: Option<String>,
}

pub struct NewReport {
    /// A report found on the host from before this run (EmoCheck keeps
    /// every report): recorded as history, never this run's verdict.
    pub history: bool,
    pub run_id: i64,
    pub host: String,
    pub remote_name: String,
    pub remote_path: String,
    pub local_path: Option<String>,
    pub sha256: String,
    pub raw: Vec<u8>,
    /// The registered name of the parser that read it.
    pub parser: String,
    pub parsed: ParsedReport,
}

pub struct HostFinish {
    pub class: HostClass,
    pub reason: String,
    pub duration_ms: u64,
    pub pushed: Option<bool>,
    pub exit_code: Option<i64>,
    pub primary_report: Option<i64>,
}

// ---------------------------------------------------------------- reading

/// The inputs a run was started with, as stored.
#[derive(Debug, Clone)]
pub struct RunSources {
    pub playbook_path: String,
    pub playbook_text: String,
    pub inventory_path: String,
    pub inventory_text: String,
    pub limit: Option<String>,
    pub forks: usize,
    pub checker_sha256: String,
    /// The effective rollout stored at the start (JSON), if the run is staged.
    pub rollout: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RunInfo {
    pub id: i64,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub status: String,
    pub operator: Option<String>,
    pub controller: Option<String>,
    pub pushscan_version: Option<String>,
    pub playbook: Option<String>,
    pub playbook_name: Option<String>,
    pub inventory: Option<String>,
    pub limit: Option<String>,
    pub forks: Option<i64>,
    pub checker_path: Option<String>,
    pub checker_sha256: Option<String>,
    pub hosts_targeted: Option<i64>,
    pub exit_code: Option<i64>,
    /// Why a staged run stopped before its last wave (`status` is then `halted`).
    pub halt_reason: Option<String>,
    /// Hosts per class (filled by `runs`).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub counts: std::collections::BTreeMap<String, i64>,
    /// Finished, and every host has a final result (none `not_started`/`busy`).
    pub complete: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct HostRecord {
    pub host: String,
    pub address: Option<String>,
    pub port: Option<i64>,
    pub transport: Option<String>,
    pub groups: Vec<String>,
    pub group_paths: Vec<Vec<String>>,
    pub class: Option<HostClass>,
    pub reason: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
    pub pushed: Option<bool>,
    pub exit_code: Option<i64>,
    /// The planned wave (1-based) and its OU/group, for a staged run.
    pub wave: Option<i64>,
    pub wave_partition: Option<String>,
    pub report: Option<ReportRecord>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ReportRecord {
    pub id: i64,
    pub remote_name: String,
    pub local_path: Option<String>,
    pub sha256: String,
    pub size: i64,
    pub status: String,
    pub hostname: Option<String>,
    pub scan_time: Option<String>,
    pub checker_version: Option<String>,
    pub format: Option<String>,
    pub warnings: Vec<String>,
    /// The registered name of the parser that read it.
    pub parser: Option<String>,
    /// The process view of `findings` (the report's JSON before findings were generic).
    pub processes: Vec<Process>,
    pub findings: Vec<Finding>,
}

/// One past result of a host.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HistoryItem {
    pub run_id: i64,
    pub run_started_at: String,
    pub class: Option<String>,
    pub reason: Option<String>,
    pub finished_at: Option<String>,
    pub report: Option<ReportRecord>,
}

/// One of a host's recent results, for a report's per-host timeline.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RecentResult {
    pub run_id: i64,
    pub started_at: String,
    /// `None`: the host has no final class in that run (still running, crashed).
    pub class: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StepRecord {
    pub host: String,
    pub step: String,
    pub phase: String,
    pub target: Option<String>,
    pub detail: Option<String>,
    pub at: String,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A run of `hosts` (all on 127.0.0.1 over `transport`) for the tests of the store and of
    /// the modules that read it.
    pub(crate) fn test_run(hosts: &[&str], transport: &str) -> NewRun {
        conformance::test_run(hosts, transport)
    }

    type Factories = (
        Box<dyn Fn() -> Result<Arc<dyn Store>>>,
        Box<dyn Fn() -> Result<Box<dyn StoreReader>>>,
    );

    /// The SQLite store of a new state dir (`dir/state`, created by the store).
    fn sqlite(dir: &Path) -> Factories {
        let at = Location::Sqlite(dir.join("state"));
        let at2 = at.clone();
        (
            Box::new(move || open_at(&at)),
            Box::new(move || open_reader_at(&at2)),
        )
    }

    #[tokio::test]
    async fn a_step_never_started_reads_back_as_not_started_not_failed() {
        let dir = tempfile::tempdir().unwrap();
        let (w, r) = sqlite(dir.path());
        conformance::a_step_never_started_reads_back_as_not_started(w, r)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn what_the_store_trait_writes_its_reader_trait_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let (w, r) = sqlite(dir.path());
        conformance::what_the_writer_writes_the_reader_reads_back(w, r)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn every_reader_call_answers_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let (w, r) = sqlite(dir.path());
        conformance::every_reader_call(w, r).await.unwrap();
    }

    #[test]
    fn a_store_location_is_a_directory_or_a_postgres_url_without_password() {
        assert!(matches!(
            Location::parse("/var/lib/pushscan", PasswordSource::default()),
            Ok(Location::Sqlite(_))
        ));
        let pg = Location::parse(
            "postgres://scan@db.example:5433/pushscan?sslmode=verify-ca&sslrootcert=/ca.pem",
            PasswordSource::default(),
        )
        .unwrap();
        assert_eq!(pg.display(), "postgres://scan@db.example:5433/pushscan");
        for bad in [
            "postgres://scan:hunter2@db/pushscan",
            "postgres://scan@db/pushscan?password=hunter2",
        ] {
            let e = format!(
                "{:#}",
                Location::parse(bad, PasswordSource::default()).unwrap_err()
            );
            assert!(e.contains("PUSHSCAN_STORE_PASSWORD_FILE"), "{e}");
            assert!(!e.contains("hunter2"), "the password is not echoed: {e}");
        }
        let from_env = PasswordSource {
            file: None,
            env: Some("hunter2".into()),
        };
        let at = Location::parse("postgres://scan@db/pushscan", from_env).unwrap();
        assert!(!format!("{at:?}").contains("hunter2"), "{at:?}");
        for bad in [
            "mysql://db/x",
            "postgres://db/x?sslmode=prefer",
            "postgres://db/x?foo=1",
        ] {
            assert!(
                Location::parse(bad, PasswordSource::default()).is_err(),
                "{bad}"
            );
        }
    }
}
