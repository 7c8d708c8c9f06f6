//! Host plans and `pushscan plan`: what a sweep will do, computed without opening a single
//! connection. A [`HostPlan`] is everything about one host decided before connecting (its
//! rendered templates and remote paths); the sweep, cleanup and contain run from them.
//!
//! The plan is built from the same pieces the sweep uses — the selected hosts' rendered
//! [`HostPlan`]s and [`rollout::plan_waves`] — so the waves and remote paths printed here are
//! the ones the sweep then runs (a test holds the two together through the journal). Text for
//! the operator, JSON (`--format json`) for tooling. Every inventory-supplied string is escaped
//! for the terminal.
//!
//! `--probe` is the one exception to "no connection": a TCP connect (nothing sent) to the
//! ports each transport names ([`HostTarget::probe_ports`]), so a host whose way in is
//! decided by which port answers (a Windows PC with WinRM closed: commands over SMB) shows
//! the way the sweep will take.

use std::fmt::Write as _;

use serde::Serialize;

use std::sync::Arc;

use crate::inventory::Host;
use crate::playbook::{Platform, Playbook};
use crate::rollout::{self, Rollout};
use crate::sanitize::display;
use crate::template::{render, Vars};
use crate::transport::HostTarget;

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub inventory: String,
    pub playbook: String,
    pub limit: Option<String>,
    pub hosts: usize,
    pub checker: CheckerPlan,
    pub rollout: Rollout,
    pub waves: Vec<WavePlan>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckerPlan {
    pub local: String,
    pub sha256: String,
    /// Whether the local file matches the pin now (the sweep refuses to start otherwise).
    pub matches_pin: bool,
    pub problem: Option<String>,
    pub size: Option<u64>,
    pub remote_name: String,
    /// The x86 build, pushed instead to 32-bit Windows hosts.
    pub x86: Option<BuildPlan>,
    /// The pinned inputs pushed beside it (their local files are checked with the checker).
    pub inputs: Vec<InputPlan>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InputPlan {
    pub name: String,
    pub local: String,
    pub sha256: String,
    pub remote_name: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct BuildPlan {
    pub local: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct WavePlan {
    pub number: usize,
    pub partition: Option<String>,
    pub canary: bool,
    pub hosts: Vec<HostLine>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostLine {
    pub name: String,
    pub address: String,
    pub transport: &'static str,
    /// The port the transport connects to (`None` when it opens none).
    pub port: Option<u16>,
    /// How files travel, for transports that have a choice.
    pub files: Option<String>,
    pub checker_path: String,
    pub run_dir: String,
    pub args: Vec<String>,
    /// The inventory lets the operator's password (`--ask-pass`, ...) be offered to this host;
    /// no other host is ever sent it.
    pub password_auth: bool,
    /// Which build goes to the host: `main`, or `x64/x86 by architecture` when the playbook
    /// names both and the transport tells them apart (decided on the host, once connected).
    pub build: &'static str,
    /// With `--probe`: what answered and the way in it means.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<String>,
}

/// How long `plan --probe` waits for one port.
pub const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);
/// Ports knocked on at the same time by `plan --probe`.
const PROBE_PARALLEL: usize = 64;

/// `plan --probe`: knocks on every port the hosts' transports name (a TCP connect, closed
/// at once; at most [`PROBE_PARALLEL`] at a time, each bounded by `timeout`) and rewrites
/// each probed host's line to the way its transport says that answer means.
pub async fn probe(plan: &mut Plan, plans: &[HostPlan], timeout: std::time::Duration) {
    let sem = Arc::new(tokio::sync::Semaphore::new(PROBE_PARALLEL));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, p) in plans.iter().enumerate() {
        for (j, (addr, port)) in p.target.probe_ports().into_iter().enumerate() {
            let sem = sem.clone();
            tasks.spawn(async move {
                let _permit = sem.acquire_owned().await;
                let open = matches!(
                    tokio::time::timeout(
                        timeout,
                        tokio::net::TcpStream::connect((addr.as_str(), port))
                    )
                    .await,
                    Ok(Ok(_))
                );
                (i, j, open)
            });
        }
    }
    let mut open: Vec<Vec<bool>> = plans
        .iter()
        .map(|p| vec![false; p.target.probe_ports().len()])
        .collect();
    while let Some(done) = tasks.join_next().await {
        if let Ok((i, j, o)) = done {
            open[i][j] = o;
        }
    }
    for (p, open) in plans.iter().zip(&open) {
        if open.is_empty() {
            continue;
        }
        let (d, note) = p.target.describe_probed(open);
        for line in plan
            .waves
            .iter_mut()
            .flat_map(|w| w.hosts.iter_mut())
            .filter(|l| l.name == p.host.name)
        {
            line.transport = d.transport;
            line.port = d.port;
            line.files = d.files.clone();
            line.probe = Some(note.clone());
        }
    }
}

/// Builds the plan of `plans` (already selected and rendered) under `rollout`.
pub fn build(
    pb: &Playbook,
    inventory_label: &str,
    limit: Option<&str>,
    plans: &[HostPlan],
    rollout: &Rollout,
) -> Plan {
    let hosts: Vec<&Host> = plans.iter().map(|p| &p.host).collect();
    let waves = rollout::plan_waves(&hosts, rollout);
    let verified = pb.verify_checker();
    Plan {
        inventory: inventory_label.to_string(),
        playbook: pb.source.display().to_string(),
        limit: limit.map(str::to_string),
        hosts: plans.len(),
        checker: CheckerPlan {
            local: pb.checker_local.display().to_string(),
            sha256: pb.checker.sha256.clone(),
            matches_pin: verified.is_ok(),
            problem: verified.as_ref().err().map(|e| e.to_string()),
            size: verified.ok(),
            remote_name: pb.checker_remote_name.clone(),
            x86: pb.x86.as_ref().map(|b| BuildPlan {
                local: b.local.display().to_string(),
                sha256: b.sha256.clone(),
            }),
            inputs: pb
                .inputs
                .iter()
                .map(|i| InputPlan {
                    name: i.name.clone(),
                    local: i.local.display().to_string(),
                    sha256: i.sha256.clone(),
                    remote_name: i.remote_name.clone(),
                })
                .collect(),
        },
        rollout: rollout.clone(),
        waves: waves
            .into_iter()
            .map(|w| WavePlan {
                number: w.number,
                partition: w.partition,
                canary: w.canary,
                hosts: w.hosts.iter().map(|&i| host_line(pb, &plans[i])).collect(),
            })
            .collect(),
    }
}

fn host_line(pb: &Playbook, p: &HostPlan) -> HostLine {
    let h = &p.host;
    let d = p.target.describe();
    HostLine {
        name: h.name.clone(),
        address: h.address.clone(),
        transport: d.transport,
        port: d.port,
        files: d.files,
        checker_path: p.checker_path.clone(),
        run_dir: p.run_dir.clone(),
        args: p.args.clone(),
        password_auth: d.password_auth,
        build: if pb.x86.is_some() && p.target.picks_build_by_architecture() {
            "x64/x86 by architecture"
        } else {
            "main"
        },
        probe: None,
    }
}

/// The operator's view: run facts, then each wave with its hosts.
pub fn to_text(p: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Plan: {} host(s) in {} wave(s); inventory {}, playbook {}{} (no connection opened)",
        p.hosts,
        p.waves.len(),
        display(&p.inventory, 200),
        display(&p.playbook, 200),
        p.limit
            .as_deref()
            .map(|l| format!(", limit {}", display(l, 200)))
            .unwrap_or_default()
    );
    let c = &p.checker;
    let _ = writeln!(
        out,
        "Checker: {} sha256 {} → <work_dir>/{}{}",
        display(&c.local, 200),
        c.sha256,
        display(&c.remote_name, 100),
        match (&c.problem, c.size) {
            (None, Some(n)) => format!(" ({n} bytes, matches the pin)"),
            (Some(e), _) => format!("\n  NOT USABLE, the sweep would refuse to start: {e}"),
            _ => String::new(),
        }
    );
    if let Some(x) = &c.x86 {
        let _ = writeln!(
            out,
            "  x86 build: {} sha256 {} (for 32-bit Windows hosts)",
            display(&x.local, 200),
            x.sha256
        );
    }
    for i in &c.inputs {
        let _ = writeln!(
            out,
            "  input {}: {} sha256 {} → <work_dir>/{}",
            display(&i.name, 80),
            display(&i.local, 200),
            i.sha256,
            display(&i.remote_name, 100)
        );
    }
    let _ = writeln!(out, "Rollout: {}", p.rollout.describe());
    let last = p.waves.len();
    for w in &p.waves {
        let _ = writeln!(
            out,
            "\nWave {}/{last}{}{}: {} host(s)",
            w.number,
            w.partition
                .as_deref()
                .map(|s| format!(" ({})", display(s, 120)))
                .unwrap_or_default(),
            if w.canary { " [canary]" } else { "" },
            w.hosts.len()
        );
        for h in &w.hosts {
            let _ = writeln!(
                out,
                "  {:<24} {:<16} {}{}{}{}  → {}",
                display(&h.name, 80),
                display(&h.address, 80),
                h.transport,
                h.port.map(|p| format!(":{p}")).unwrap_or_default(),
                if h.password_auth {
                    ", password offered"
                } else {
                    ""
                },
                h.files
                    .as_deref()
                    .map(|f| format!(", files {}", display(f, 120)))
                    .unwrap_or_default(),
                display(&h.checker_path, 200)
            );
            if let Some(note) = &h.probe {
                let _ = writeln!(out, "  {:<24} probe: {note}", "");
            }
        }
    }
    out
}

/// Where one playbook input goes on a host.
#[derive(Debug, Clone, Serialize)]
pub struct InputPath {
    pub name: String,
    /// In the work directory.
    pub path: String,
    /// The push's temp copy beside it (random, like the checker's).
    #[serde(skip)]
    pub tmp: String,
}

/// Everything about one host that can be decided before connecting.
#[derive(Debug, Clone)]
pub struct HostPlan {
    pub host: Host,
    pub work_dir: String,
    pub run_dir: String,
    pub checker_path: String,
    pub tmp_path: String,
    /// The playbook's inputs on this host, in the playbook's order.
    pub inputs: Vec<InputPath>,
    pub args: Vec<String>,
    /// What the host's transport decided before connecting (its settings, checked here so a
    /// refused one touches no host).
    pub target: Arc<dyn HostTarget>,
}

impl HostPlan {
    /// Renders the playbook's templates for `host`. Done for every host
    /// before the sweep starts, so a template error touches no host.
    pub fn new(pb: &Playbook, host: &Host) -> Result<HostPlan, String> {
        let platform = pb.checker.platform;
        let mut vars = Vars::new();
        vars.extend_json(&host.vars);
        vars.set("inventory_hostname", host.name.clone());
        vars.set(
            "inventory_hostname_short",
            host.name
                .split('.')
                .next()
                .unwrap_or(&host.name)
                .to_string(),
        );
        let work_dir = render(&pb.work_dir, &vars).map_err(|e| format!("work_dir: {e}"))?;
        check_remote_dir("work_dir", &work_dir, platform)?;
        vars.set("work_dir", work_dir.clone());
        let run_dir = render(&pb.run_dir, &vars).map_err(|e| format!("run_dir: {e}"))?;
        check_remote_dir("run_dir", &run_dir, platform)?;
        vars.set("run_dir", run_dir.clone());
        let checker_path = platform.join(&work_dir, &pb.checker_remote_name);
        vars.set("checker", checker_path.clone());
        // The temp copy's name is unpredictable (fresh per host and run), so no one can
        // have planted a link or file under it ahead of the push.
        let tmp_path = platform.join(
            &work_dir,
            &format!(".{}.{}.pushscan-tmp", pb.checker_remote_name, random_hex()?),
        );
        let mut inputs = Vec::with_capacity(pb.inputs.len());
        for i in &pb.inputs {
            let path = platform.join(&work_dir, &i.remote_name);
            vars.set(&format!("inputs.{}", i.name), path.clone());
            inputs.push(InputPath {
                name: i.name.clone(),
                path,
                tmp: platform.join(
                    &work_dir,
                    &format!(".{}.{}.pushscan-tmp", i.remote_name, random_hex()?),
                ),
            });
        }
        let args = pb
            .args
            .iter()
            .enumerate()
            .map(|(i, a)| render(a, &vars).map_err(|e| format!("args[{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let target = host.connection.target(host)?;
        Ok(HostPlan {
            target,
            host: host.clone(),
            work_dir,
            run_dir,
            checker_path,
            tmp_path,
            inputs,
            args,
        })
    }
}

impl HostPlan {
    /// Every file a push may leave on the host if it is cut short: the temp
    /// copy, and what the transport stages beside it.
    pub fn staging_files(&self) -> Vec<String> {
        self.staging_files_of(&self.tmp_path)
    }

    /// The same for the push of any pinned file whose temp copy is `tmp`.
    pub fn staging_files_of(&self, tmp: &str) -> Vec<String> {
        let mut v = vec![tmp.to_string()];
        v.extend(self.target.staging_files(tmp));
        v
    }

    /// The remote paths of the playbook's inputs on this host.
    pub fn input_paths(&self) -> Vec<String> {
        self.inputs.iter().map(|i| i.path.clone()).collect()
    }
}

/// 16 random hex digits from the operating system's generator.
fn random_hex() -> Result<String, String> {
    let mut b = [0u8; 8];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut b)
        .map_err(|_| "no randomness from the operating system".to_string())?;
    Ok(hex::encode(b))
}

fn check_remote_dir(field: &str, dir: &str, platform: Platform) -> Result<(), String> {
    if dir.trim().is_empty() {
        return Err(format!("{field} renders to an empty path"));
    }
    if dir.chars().any(char::is_control) || dir.split(['/', '\\']).any(|c| c == "..") {
        return Err(format!(
            "{field} {dir:?} must not contain '..' or control characters"
        ));
    }
    if platform == Platform::Windows && dir.starts_with('~') {
        return Err(format!(
            "{field} {dir:?}: '~' (the login's home) is for Linux hosts; use a full Windows path"
        ));
    }
    Ok(())
}
