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
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::credentials::{self, Credential, CredentialStore};
use crate::exit::{self, Fail, WithCode};
use crate::inventory::{self, Connection as ConnKind};
use crate::journal::{Journal, NewRun, RunHost};
use crate::model::HostClass;
use crate::parser;
use crate::pipeline::{run_host, HostPlan, SweepCtx};
use crate::playbook::Playbook;
use crate::progress::{Mode, Progress};
use crate::transport::ssh::SshConnector;
use crate::transport::winrm::{WinLogin, WinrmConnector, WinrmOptions};
use crate::transport::Credentials;

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

/// Connection settings of a sweep, resume or cleanup (not stored in the
/// journal: credentials are the operator's, per invocation).
#[derive(Debug, Clone)]
pub struct Access {
    pub creds: Credentials,
    /// SSH user for hosts without `ansible_user`.
    pub default_user: Option<String>,
    /// Windows hosts: WinRM/SMB settings and where passwords come from.
    pub windows: WindowsAccess,
}

/// Where Windows hosts' credentials come from, and the sweep-wide WinRM/SMB
/// settings.
#[derive(Debug, Clone, Default)]
pub struct WindowsAccess {
    pub opts: WinrmOptions,
    /// `--credentials FILE` (entries chosen by `pushscan_credential`).
    pub store: Option<Arc<CredentialStore>>,
    /// PUSHSCAN_USER / PUSHSCAN_PASSWORD or `--ask-pass`.
    pub fallback: Option<Credential>,
}

/// The shared context of a sweep, resume or cleanup of `plans`: resolves
/// every Windows host's credential first, so a host without one stops the
/// run before anything is touched.
pub(crate) fn context(
    run_id: i64,
    pb: Playbook,
    journal: Journal,
    evidence_dir: PathBuf,
    access: &Access,
    plans: &[HostPlan],
) -> Result<SweepCtx, Fail> {
    let mut logins = std::collections::HashMap::new();
    let mut missing = Vec::new();
    for p in plans.iter().filter(|p| p.win.is_some()) {
        let h = &p.host;
        let vars = serde_json::Value::Object(h.vars.clone().into_iter().collect());
        match credentials::resolve(
            &vars,
            &h.name,
            access.windows.store.as_deref(),
            access.windows.fallback.as_ref(),
        ) {
            Ok(c) => {
                // ansible_user overrides the account unless the host names
                // a credential entry (which carries its own account).
                let c = match (&h.user, h.vars.contains_key("pushscan_credential")) {
                    (Some(u), false) => match credentials::Account::parse(u) {
                        Ok(a) => c.with_user(a),
                        Err(e) => {
                            missing.push(format!("{}: ansible_user: {e}", h.name));
                            continue;
                        }
                    },
                    _ => c.clone(),
                };
                logins.insert(
                    h.name.clone(),
                    WinLogin {
                        user: c.account.ntlm_user().to_string(),
                        domain: c.account.ntlm_domain().to_string(),
                        password: c.password.clone(),
                    },
                );
            }
            Err(e) => missing.push(e),
        }
    }
    if !missing.is_empty() {
        let n = missing.len();
        missing.truncate(5);
        return Err(Fail::new(
            exit::CONFIG,
            anyhow::anyhow!(
                "{n} Windows host(s) without a usable credential:\n  {}",
                missing.join("\n  ")
            ),
        ));
    }
    Ok(SweepCtx {
        run_id,
        parser: Arc::from(parser::for_playbook(&pb.results)),
        playbook: Arc::new(pb),
        journal,
        evidence_dir,
        ssh: Arc::new(SshConnector::new(access.creds.clone())),
        default_user: access.default_user.clone().unwrap_or_else(current_user),
        win: Arc::new(WinrmConnector::new(access.windows.opts.clone())),
        win_logins: Arc::new(logins),
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

fn transport_name(c: ConnKind) -> &'static str {
    match c {
        ConnKind::Ssh => "ssh",
        ConnKind::Local => "local",
        ConnKind::Winrm => "winrm",
    }
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

    // ---- the run ----
    let journal = Journal::open(&cfg.state_dir).code(exit::IO)?;
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
                .map(|p| RunHost {
                    name: p.host.name.clone(),
                    address: p.host.address.clone(),
                    port: p.host.port,
                    transport: transport_name(p.host.connection).to_string(),
                    groups: p.host.groups.clone(),
                    group_paths: p.host.group_paths.clone(),
                })
                .collect(),
        })
        .await
        .code(exit::IO)?;
    let access = cfg.access.clone();
    execute(
        journal,
        &cfg.state_dir,
        run_id,
        pb,
        plans,
        cfg.forks,
        &access,
        cfg.progress,
    )
    .await
}

/// `pushscan resume`: continues run `run` (default: the last unfinished
/// one) with the playbook and inventory stored in it. Hosts with a final
/// result keep it; hosts in flight at a crash, never started, or busy are
/// (re)done from the start (every step is idempotent: mkdir -p, hash
/// compare, overwrite the temp copy, re-run).
pub async fn resume(
    state_dir: &Path,
    run: Option<i64>,
    forks: Option<usize>,
    access: &Access,
    progress: Mode,
) -> Result<SweepOutcome, Fail> {
    let reader = crate::journal::Reader::open(state_dir).code(exit::IO)?;
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
    drop(reader);
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
    let journal = Journal::open(state_dir).code(exit::IO)?;
    let todo = journal.reopen_run(run_id).await.code(exit::IO)?;
    let mut plans = Vec::with_capacity(todo.len());
    for name in &todo {
        let Some(host) = inv.host(name) else {
            return Err(Fail::new(
                exit::CONFIG,
                anyhow::anyhow!("host {name} of run {run_id} is not in the run's stored inventory"),
            ));
        };
        plans.push(
            HostPlan::new(&pb, host)
                .map_err(|e| Fail::new(exit::CONFIG, anyhow::anyhow!("host {name}: {e}")))?,
        );
    }
    let forks = forks.unwrap_or(src.forks.max(1));
    execute(
        journal, state_dir, run_id, pb, plans, forks, access, progress,
    )
    .await
}

/// Runs the plans of `run_id` with bounded concurrency and records the end
/// of the run.
#[allow(clippy::too_many_arguments)]
async fn execute(
    journal: Journal,
    state_dir: &Path,
    run_id: i64,
    pb: Playbook,
    plans: Vec<HostPlan>,
    forks: usize,
    access: &Access,
    progress_mode: Mode,
) -> Result<SweepOutcome, Fail> {
    let evidence_dir = state_dir.join("evidence").join(format!("run-{run_id}"));
    std::fs::create_dir_all(&evidence_dir)
        .with_context(|| format!("cannot create {}", evidence_dir.display()))
        .code(exit::IO)?;

    let ctx = Arc::new(context(
        run_id,
        pb,
        journal.clone(),
        evidence_dir,
        access,
        &plans,
    )?);

    let (stop_tx, stop_rx) = watch::channel(false);
    let signals = tokio::spawn(watch_interrupts(stop_tx));

    let mut progress = Progress::new(plans.len(), progress_mode);
    progress.note(&format!(
        "run {run_id}: {} host(s), forks {forks}, journal {}",
        plans.len(),
        journal.path().display()
    ));
    let sem = Arc::new(Semaphore::new(forks.max(1)));
    let mut tasks: JoinSet<crate::pipeline::HostResult> = JoinSet::new();
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
            Ok(r) => progress.host_done(&r),
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
    // Count from the journal: it, not memory, is the source of truth.
    drop(ctx);
    let reader = crate::journal::Reader::open(state_dir).code(exit::IO)?;
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
