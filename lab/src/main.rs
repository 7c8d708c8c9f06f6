//! `pushscan-lab`: starts, stops and shows the lab fleet of simulated Windows hosts (real
//! Samba shares, simulated WinRM) on loopback addresses. `up` returns once every host
//! answers, leaving smbd and the WinRM simulator running in the background (`serve`, a
//! detached re-run of this program); `down` stops them by pid. See `lab/README.md`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::{Parser, Subcommand};

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
            let (dir, inventory, env_file, playbook) = (
                lab.dir.clone(),
                lab.inventory.clone(),
                lab.env_file.clone(),
                lab.playbook.clone(),
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
        Cmd::Serve { dir } => {
            fleet::serve(&dir)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
