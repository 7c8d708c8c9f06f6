//! `pushscan-lab`: starts, stops and shows the lab fleet of simulated Windows hosts (real
//! Samba shares, simulated WinRM) on loopback addresses. `up` returns once every host
//! answers, leaving smbd and the WinRM simulator running in the background (`serve`, a
//! detached re-run of this program); `down` stops them by pid. See `lab/README.md`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::{Parser, Subcommand};

use pushscan_lab::demo::{self, DemoOptions, Progress, SmbChoice};
use pushscan_lab::fleet::{self, UpOptions};
use pushscan_lab::spec::Spec;

#[derive(Parser)]
#[command(
    name = "pushscan-lab",
    version,
    about = "A fleet of simulated Windows hosts on loopback: real Samba shares + a WinRM simulator",
    after_help = "Examples:\n  pushscan-lab up --hosts 20\n  pushscan-lab status\n  \
                  pushscan-lab down --purge\n\nThe lab directory is --dir, else \
                  $PUSHSCAN_LAB_DIR, else ./lab-run. Needs root (it adds loopback addresses and \
                  a system account for Samba)."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a small demo fleet, sweep it with pushscan, print the report, clean up.
    ///
    /// The sweep runs the `pushscan` binary: $PUSHSCAN_EXE, else (in this checkout) the one
    /// `cargo build -p pushscan` builds, else a `pushscan` next to this program.
    #[command(after_help = "Example:\n  cargo run -p pushscan-lab -- demo\n  \
                            pushscan-lab demo --hosts 30 --keep\n\n\
                            As root with Samba installed, files go over SMB (a real smbd); \
                            otherwise (or with --no-smb) the WinRM simulator runs in this \
                            process and files go over WinRM only: no root, no Samba needed. \
                            The PCs whose WinRM is closed are swept over SMB alone on the \
                            first path and are unreachable on the second.\n\n\
                            Exit code: 0 when the sweep came out as designed (pushscan's own \
                            exit code for it, printed in the footer, is 1: detections); 1 when \
                            anything failed.")]
    Demo {
        /// Number of hosts (default 14: every scenario once, clean three times, and an
        /// infected and a clean PC whose WinRM is closed).
        #[arg(long)]
        hosts: Option<usize>,
        /// Demo directory, new or empty (default: a temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Keep the directory (inventory, playbook, host trees, journal) at the end.
        #[arg(long)]
        keep: bool,
        /// Files over WinRM only, even as root with Samba installed.
        #[arg(long, conflicts_with = "smb")]
        no_smb: bool,
        /// Files over SMB or fail (needs root and Samba).
        #[arg(long)]
        smb: bool,
        /// Progress on stderr: auto (a bar on a terminal), lines or quiet.
        #[arg(long, default_value = "auto", value_parser = ["auto", "lines", "quiet"])]
        progress: String,
        /// First host address (default 127.0.20.1).
        #[arg(long, hide = true)]
        base_address: Option<std::net::Ipv4Addr>,
    },
    /// Start a lab in the background (a lab already in DIR is stopped first).
    Up {
        /// Number of hosts (default: the spec's `hosts`).
        #[arg(long)]
        hosts: Option<usize>,
        /// Lab spec (YAML); default: the built-in copy of lab/spec.yml.
        #[arg(long)]
        spec: Option<PathBuf>,
        /// Lab directory.
        #[arg(long, env = "PUSHSCAN_LAB_DIR", default_value = fleet::DEFAULT_LAB_DIR)]
        dir: PathBuf,
        /// SMB port on every host address (default: the spec's, 445).
        #[arg(long)]
        smb_port: Option<u16>,
        /// WinRM HTTP port on every host address (default: the spec's, 5985).
        #[arg(long)]
        winrm_port: Option<u16>,
    },
    /// Stop everything the lab started; keep the host trees unless --purge.
    Down {
        #[arg(long, env = "PUSHSCAN_LAB_DIR", default_value = fleet::DEFAULT_LAB_DIR)]
        dir: PathBuf,
        /// Also remove the host trees and every file the lab wrote.
        #[arg(long)]
        purge: bool,
    },
    /// Show whether the lab runs (exit 0) or not (exit 3).
    Status {
        #[arg(long, env = "PUSHSCAN_LAB_DIR", default_value = fleet::DEFAULT_LAB_DIR)]
        dir: PathBuf,
    },
    /// The live state of a Wine host: processes, Run values, files, firewall rules.
    #[command(
        name = "wine-inspect",
        after_help = "Example:\n  pushscan-lab wine-inspect --dir lab-run --host W002-LAB \
                      --file 'C:\\users\\tanaka\\AppData\\Local\\wfsrvhost\\wfsrvhost.exe' --json\n\n\
                      Read through the host's running wineserver (pslist.exe, reg query, Wine's \
                      `if exist`), never from user.reg, which Wine writes only when the \
                      wineserver exits. PIDs are Windows PIDs (wineserver's)."
    )]
    WineInspect {
        #[arg(long, env = "PUSHSCAN_LAB_DIR", default_value = fleet::DEFAULT_LAB_DIR)]
        dir: PathBuf,
        /// Host name or address.
        #[arg(long)]
        host: String,
        /// A Windows path whose existence to report (repeatable).
        #[arg(long = "file")]
        files: Vec<String>,
        /// JSON on stdout (else a short text).
        #[arg(long)]
        json: bool,
    },
    /// The background process that runs the WinRM simulator (started by `up`).
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pushscan-lab: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Cmd::Demo {
            hosts,
            dir,
            keep,
            no_smb,
            smb,
            progress,
            base_address,
        } => {
            let mut opts = DemoOptions {
                hosts,
                dir,
                keep,
                smb: match (no_smb, smb) {
                    (true, _) => SmbChoice::Off,
                    (_, true) => SmbChoice::Required,
                    _ => SmbChoice::Auto,
                },
                progress: match progress.as_str() {
                    "lines" => Progress::Lines,
                    "quiet" => Progress::Quiet,
                    _ => Progress::Auto,
                },
                ..DemoOptions::default()
            };
            if let Some(a) = base_address {
                opts.base_address = a;
            }
            let outcome = demo::run(opts)?;
            if outcome.ok() {
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!(
                    "pushscan-lab demo: the sweep did not come out as designed (pushscan exit \
                     code {}, {} host(s) in an unexpected class)",
                    outcome.sweep_exit_code,
                    outcome.unexpected.len()
                );
                Ok(ExitCode::from(1))
            }
        }
        Cmd::Up {
            hosts,
            spec,
            dir,
            smb_port,
            winrm_port,
        } => {
            let t0 = Instant::now();
            let spec = match spec {
                Some(path) => Spec::load(&path)?,
                None => Spec::shipped(),
            };
            let mut opts = UpOptions::new(dir, spec);
            opts.hosts = hosts;
            opts.smb_port = smb_port;
            opts.winrm_port = winrm_port;
            let lab = fleet::up(opts)?;
            let (dir, inventory, env_file, playbook, wine_playbook) = (
                lab.dir.clone(),
                lab.inventory.clone(),
                lab.env_file.clone(),
                lab.playbook.clone(),
                lab.wine_playbook.clone(),
            );
            let state = lab.leave_running();
            let first = state.hosts.first().map(|h| h.address.to_string());
            let last = state.hosts.last().map(|h| h.address.to_string());
            println!(
                "pushscan-lab: {} hosts up in {:.1} s ({} .. {}), SMB port {}, WinRM port {}{}",
                state.hosts.len(),
                t0.elapsed().as_secs_f64(),
                first.unwrap_or_default(),
                last.unwrap_or_default(),
                state.smb_port,
                state.winrm_http_port,
                state
                    .winrm_https_port
                    .map(|p| format!(" (HTTPS {p})"))
                    .unwrap_or_default()
            );
            println!("  inventory: {}", inventory.display());
            println!("  account:   {} (mode 0600)", env_file.display());
            println!("  playbook:  {}", playbook.display());
            if let Some(pb) = wine_playbook {
                let wine_hosts = state.hosts.iter().filter(|h| h.wine.is_some()).count();
                println!(
                    "  Wine:      {} host(s): playbook {} (--limit wine), wine-inspect --host NAME",
                    wine_hosts,
                    pb.display()
                );
                if let Some(w) = &state.wine {
                    println!(
                        "             {}, template {}{}",
                        w.version,
                        w.template.display(),
                        if w.template_secs > 0.0 {
                            format!(" (made in {:.1} s)", w.template_secs)
                        } else {
                            " (cached)".to_string()
                        }
                    );
                }
            }
            println!("  stop with: pushscan-lab down --dir {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Down { dir, purge } => {
            let report = fleet::down(&dir, purge)?;
            println!("pushscan-lab: {}: {report}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status { dir } => {
            let st = fleet::status(&dir)?;
            print!("{st}");
            Ok(if st.running() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            })
        }
        Cmd::WineInspect {
            dir,
            host,
            files,
            json,
        } => {
            let st = pushscan_lab::wine::inspect(&dir, &host, &files)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                println!("{}:", st.host);
                for p in &st.processes {
                    println!("  process {:>6}  {}", p.pid, p.image);
                }
                for v in &st.run_values {
                    println!(
                        "  run value HKU\\{}\\...\\Run  {} = {}",
                        v.sid, v.name, v.data
                    );
                }
                for (f, present) in &st.files {
                    println!(
                        "  file {f}: {}",
                        if *present { "present" } else { "absent" }
                    );
                }
                for r in &st.firewall_rules {
                    println!(
                        "  firewall rule {} dir={:?} action={} remoteip={}",
                        r.name, r.dir, r.action, r.remoteip
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Serve { dir } => {
            fleet::serve(&dir)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
