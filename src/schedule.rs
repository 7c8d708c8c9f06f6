//! Unattended periodic sweeps: `pushscan sweep ... --every 4h [--jitter 10m]`.
//!
//! A long-running alternative to a systemd timer or cron: one process that
//! sweeps on a fixed cadence, each sweep a normal run in the journal with
//! its alerts. Sweeps never overlap — the loop runs one at a time and the
//! next slot is computed only once the previous sweep has ended (slots
//! missed by a long sweep are skipped, not caught up). A sweep that fails
//! (journal busy, an inventory edited into an error, a panic) is logged and
//! the loop waits for the next slot; only problems found before the first
//! sweep (flags, inventory, playbook, pin, alert settings) end the process,
//! since they would fail every sweep. SIGTERM or Ctrl-C (the command's one
//! stop signal, `fleet::Shutdown`, shared with every sweep of the loop)
//! between sweeps ends the loop at once; during a sweep, the sweep's own
//! graceful stop runs (no new host started, hosts in flight finish and clean
//! up) and the loop ends after it. Either way the exit code is 0: the runs' outcomes are in the
//! journal and the alerts. A second signal ends the process at once, as it
//! does for a single sweep.
//!
//! The first sweep starts at once; sweep N starts at `start + N × every`
//! plus a fresh random delay in `[0, jitter)`, so that many controllers on
//! the same cadence do not hit the fleet at the same second.

use std::time::Duration;

use crate::app::{self, AfterRun};
use crate::exit::{self, Fail, WithCode};
use crate::sweep::SweepConfig;

/// The cadence of `--every`.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub every: Duration,
    /// Each slot is delayed by a random amount below this.
    pub jitter: Duration,
}

impl Schedule {
    pub fn check(&self) -> Result<(), Fail> {
        let usage = |m: &str| Err(Fail::new(exit::USAGE, anyhow::anyhow!("{m}")));
        if self.every < Duration::from_secs(1) {
            return usage("--every must be at least 1s");
        }
        if self.jitter >= self.every {
            return usage("--jitter must be shorter than --every");
        }
        Ok(())
    }

    /// A random delay in `[0, jitter)`.
    fn jitter_delay(&self) -> Duration {
        let max = u64::try_from(self.jitter.as_millis()).unwrap_or(u64::MAX);
        if max == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(fastrand::u64(0..max))
    }
}

/// Everything a sweep checks before touching a host, checked once before
/// the loop starts: a mistake there would fail every sweep.
async fn preflight(cfg: &SweepConfig, after: &AfterRun) -> Result<(), Fail> {
    if cfg.forks == 0 {
        return Err(Fail::new(
            exit::USAGE,
            anyhow::anyhow!("--forks must be at least 1"),
        ));
    }
    // Each sweep reads the sources again (an Active Directory source may have
    // gained computers); this read only proves that they can be read.
    let inv = crate::inventory::load_sources(&cfg.inventory)
        .await
        .code(exit::CONFIG)?
        .inventory;
    let pb = crate::playbook::Playbook::load(&cfg.playbook).code(exit::CONFIG)?;
    pb.verify_checker().code(exit::CHECKER)?;
    crate::sweep::plan_hosts(&inv, cfg.limit.as_deref(), &pb)?;
    let rollout = pb
        .rollout
        .clone()
        .with(&cfg.rollout)
        .map_err(|e| Fail::new(exit::USAGE, anyhow::anyhow!("rollout: {e}")))?;
    if rollout.pause == crate::rollout::Pause::Prompt {
        return Err(Fail::new(
            exit::USAGE,
            anyhow::anyhow!(
                "rollout pause: prompt asks on the terminal between waves; an unattended \
                 --every sweep cannot: use --pause none or a duration"
            ),
        ));
    }
    app::preflight_notify(&cfg.playbook, &after.notify)
}

/// Runs sweeps every `sched.every` until SIGTERM/Ctrl-C. Returns 0 once
/// stopped, or the exit code of a problem found before the first sweep.
pub async fn run(cfg: SweepConfig, after: AfterRun, sched: Schedule) -> Result<i32, Fail> {
    sched.check()?;
    preflight(&cfg, &after).await?;
    // The command's one stop signal: each sweep below stops on it too, gracefully.
    let shutdown = cfg.control.shutdown.clone();
    shutdown.listen();
    let said = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            shutdown.requested().await;
            tracing::info!(
                target: "pushscan::schedule",
                "stop requested: no further sweep will start"
            );
        }
    });
    let start = tokio::time::Instant::now();
    tracing::info!(
        target: "pushscan::schedule",
        "periodic sweeps every {} (jitter {}) of {} with {}; state dir {}",
        human(sched.every),
        human(sched.jitter),
        cfg.inventory
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" + "),
        cfg.playbook.display(),
        cfg.state_dir.display()
    );
    let mut slot: u32 = 0;
    let mut number: u64 = 0;
    loop {
        if shutdown.is_requested() {
            break;
        }
        number += 1;
        tracing::info!(target: "pushscan::schedule", "sweep {number} starting");
        // Its own task: a panic in a sweep is one failed sweep, not the end.
        let task = tokio::spawn({
            let (cfg, after) = (cfg.clone(), after.clone());
            async move { app::sweep_with(cfg, &after).await }
        });
        match task.await {
            Ok(Ok(code)) => tracing::info!(
                target: "pushscan::schedule",
                "sweep {number} finished: exit code {code} ({})",
                meaning(code)
            ),
            Ok(Err(fail)) => tracing::error!(
                target: "pushscan::schedule",
                "sweep {number} failed (exit code {}): {fail}; waiting for the next slot",
                fail.code
            ),
            Err(e) => tracing::error!(
                target: "pushscan::schedule",
                "sweep {number} crashed: {e}; waiting for the next slot"
            ),
        }
        if shutdown.is_requested() {
            break;
        }
        // The next slot after now: slots missed by a long sweep are skipped.
        let now = tokio::time::Instant::now();
        let mut skipped = 0u32;
        let next = loop {
            slot = slot.saturating_add(1);
            let at = start + sched.every.saturating_mul(slot);
            if at > now {
                break at;
            }
            skipped += 1;
        };
        if skipped > 0 {
            tracing::warn!(
                target: "pushscan::schedule",
                "sweep {number} ran past {skipped} slot(s) of --every {}: skipped, not caught up",
                human(sched.every)
            );
        }
        let wake = next + sched.jitter_delay();
        let wait = wake.saturating_duration_since(now);
        let at = chrono::Local::now()
            + chrono::Duration::from_std(wait).unwrap_or_else(|_| chrono::Duration::zero());
        tracing::info!(
            target: "pushscan::schedule",
            "next sweep at {} (in {})",
            at.format("%Y-%m-%d %H:%M:%S %z"),
            human(wait)
        );
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = shutdown.requested() => break,
        }
    }
    // Let the stop line come out before the last one when a signal ended the loop.
    if shutdown.is_requested() {
        let _ = said.await;
    } else {
        said.abort();
    }
    tracing::info!(
        target: "pushscan::schedule",
        "stopped after {number} sweep(s)"
    );
    Ok(exit::OK)
}

fn meaning(code: i32) -> &'static str {
    match code {
        exit::OK => "every host checked, nothing detected",
        exit::DETECTED => "detection",
        exit::INCOMPLETE => "some hosts not checked",
        _ => "error",
    }
}

/// `4h`, `10m`, `2s`, `1h30m`, `250ms`.
fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let mut s = d.as_secs();
    let mut out = String::new();
    for (unit, n) in [("h", 3600), ("m", 60), ("s", 1)] {
        if s >= n {
            out.push_str(&format!("{}{unit}", s / n));
            s %= n;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_below_its_bound() {
        let s = Schedule {
            every: Duration::from_secs(10),
            jitter: Duration::from_millis(300),
        };
        for _ in 0..1000 {
            assert!(s.jitter_delay() < Duration::from_millis(300));
        }
        let s = Schedule {
            jitter: Duration::ZERO,
            ..s
        };
        assert_eq!(s.jitter_delay(), Duration::ZERO);
        assert!(Schedule {
            every: Duration::from_secs(10),
            jitter: Duration::from_secs(10)
        }
        .check()
        .is_err());
    }

    #[test]
    fn durations_read_back() {
        assert_eq!(human(Duration::from_secs(4 * 3600)), "4h");
        assert_eq!(human(Duration::from_secs(5400)), "1h30m");
        assert_eq!(human(Duration::from_millis(250)), "250ms");
    }
}
