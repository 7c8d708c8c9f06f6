//! Sweep progress for the operator: a live bar on a terminal, plain lines
//! otherwise (cron, CI, pipes), always on stderr so stdout stays the report.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::model::HostClass;
use crate::pipeline::HostResult;
use crate::sanitize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A bar on a terminal, lines otherwise.
    Auto,
    /// Lines only.
    Lines,
    /// Nothing.
    Quiet,
}

pub struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
    total: usize,
    done: usize,
    counts: BTreeMap<HostClass, usize>,
    /// The current wave of a staged sweep and its outcome so far.
    wave: Option<String>,
    wave_counts: BTreeMap<HostClass, usize>,
}

impl Progress {
    pub fn new(total: usize, mode: Mode) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let bar = if mode == Mode::Auto && tty {
            let bar =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} hosts  {per_sec}  ETA {eta}\n  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            Some(bar)
        } else {
            None
        };
        Progress {
            lines: bar.is_none() && mode != Mode::Quiet,
            bar,
            total,
            done: 0,
            counts: BTreeMap::new(),
            wave: None,
            wave_counts: BTreeMap::new(),
        }
    }

    pub fn host_done(&mut self, r: &HostResult) {
        self.done += 1;
        *self.counts.entry(r.class).or_default() += 1;
        *self.wave_counts.entry(r.class).or_default() += 1;
        if let Some(bar) = &self.bar {
            bar.inc(1);
            bar.set_message(self.counts_line());
            if r.class == HostClass::Detected {
                bar.println(format!(
                    "DETECTED {}: {}",
                    sanitize::display(&r.host, 80),
                    sanitize::display(&r.reason, 200)
                ));
            }
        } else if self.lines {
            let width = self.total.to_string().len();
            eprintln!(
                "[{:>width$}/{}] {} {}: {}",
                self.done,
                self.total,
                sanitize::display(&r.host, 80),
                r.class,
                sanitize::display(&r.reason, 200)
            );
        }
    }

    /// A wave starts: its label leads the bar's message and a line says so.
    pub fn wave_start(&mut self, label: &str, hosts: usize) {
        self.wave = Some(format!("{label}: {hosts} host(s)"));
        self.wave_counts.clear();
        self.note(&format!("{label}: {hosts} host(s)"));
        if let Some(bar) = &self.bar {
            bar.set_message(self.counts_line());
        }
    }

    /// A wave ended: its outcome line.
    pub fn wave_done(&mut self, outcome: &str) {
        self.note(outcome);
    }

    /// Hides the bar while the operator is asked something (and shows it again).
    pub fn hide(&self, hidden: bool) {
        if let Some(bar) = &self.bar {
            if hidden {
                bar.disable_steady_tick();
                bar.set_draw_target(ProgressDrawTarget::hidden());
            } else {
                bar.set_draw_target(ProgressDrawTarget::stderr());
                bar.enable_steady_tick(Duration::from_millis(200));
            }
        }
    }

    pub fn note(&self, msg: &str) {
        match &self.bar {
            Some(bar) => bar.println(msg),
            None if self.lines => eprintln!("{msg}"),
            None => {}
        }
    }

    fn counts_line(&self) -> String {
        let all = self
            .counts
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect::<Vec<_>>()
            .join("  ");
        match &self.wave {
            Some(w) => {
                let now = self
                    .wave_counts
                    .iter()
                    .map(|(c, n)| format!("{c} {n}"))
                    .collect::<Vec<_>>()
                    .join("  ");
                format!("{w} — {now}\n  all: {all}")
            }
            None => all,
        }
    }

    /// Clears the bar so no terminal garbage is left behind.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
