//! The terminal sink of the engine's events ([`Terminal`]): sweep progress for the
//! operator, a live bar on a terminal, plain lines otherwise (cron, CI, pipes), always on
//! stderr so stdout stays the report; and the result lines of cleanup and contain on
//! stdout.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write as _};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::events::{Event, Sink};
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

/// The terminal: what `main` gives every command as its event sink.
pub struct Terminal {
    mode: Mode,
    /// The progress of the sweep running now, if any.
    sweep: Mutex<Option<Progress>>,
}

impl Terminal {
    pub fn new(mode: Mode) -> Terminal {
        Terminal {
            mode,
            sweep: Mutex::new(None),
        }
    }

    /// A line on stderr: above the bar of a running sweep, else as a line (not when quiet).
    fn note(&self, sweep: &Option<Progress>, line: &str) {
        match sweep {
            Some(p) => p.note(line),
            None if self.mode != Mode::Quiet => eprintln!("{line}"),
            None => {}
        }
    }
}

impl Sink for Terminal {
    fn emit(&self, event: Event) {
        // A panic elsewhere while the lock was held leaves the bar usable.
        let mut sweep = self.sweep.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::SweepStarted { hosts } => {
                if let Some(old) = sweep.take() {
                    old.finish();
                }
                *sweep = Some(Progress::new(hosts, self.mode));
            }
            Event::Notice(line) => self.note(&sweep, &line),
            Event::HostFinished(r) => {
                if let Some(p) = sweep.as_mut() {
                    p.host_done(&r);
                }
            }
            Event::WaveStarted { label, hosts } => {
                if let Some(p) = sweep.as_mut() {
                    p.wave_start(&label, hosts);
                }
            }
            Event::WaveFinished { outcome } => {
                if let Some(p) = sweep.as_mut() {
                    p.wave_done(&outcome);
                }
            }
            Event::Asking(hidden) => {
                if let Some(p) = sweep.as_ref() {
                    p.hide(hidden);
                }
            }
            Event::SweepFinished => {
                if let Some(p) = sweep.take() {
                    p.finish();
                }
            }
            Event::Interrupted => self.note(
                &sweep,
                "interrupted: no new host is started; waiting for hosts in flight (Ctrl-C again to stop at once)",
            ),
            Event::CleanupNothing { run } => {
                println!("run {run}: nothing of ours is recorded as possibly left on any host");
            }
            Event::CleanupPlanned {
                run,
                host,
                files,
                dirs,
                services,
            } => {
                println!("run {run} {}:", sanitize::display(&host, 80));
                for s in &services {
                    println!(
                        "  remove the services and files of {}-*",
                        sanitize::display(s, 80)
                    );
                }
                for f in &files {
                    println!("  remove file {}", sanitize::display(f, 300));
                }
                for d in &dirs {
                    println!("  remove dir if empty {}", sanitize::display(d, 300));
                }
            }
            Event::CleanupHost { run, host, result } => match result {
                Ok(()) => println!("run {run} {}: cleaned", sanitize::display(&host, 80)),
                Err(e) => println!(
                    "run {run} {}: NOT cleaned: {}",
                    sanitize::display(&host, 80),
                    sanitize::display(&e, 300)
                ),
            },
            Event::Text(text) => {
                print!("{text}");
                let _ = std::io::stdout().flush();
            }
            Event::Line(line) => println!("{line}"),
            Event::Contained {
                host,
                verified,
                lines,
            } => {
                println!(
                    "{} {}",
                    sanitize::display(&host, 120),
                    if verified {
                        "contained (every action verified)"
                    } else {
                        "NOT fully contained"
                    }
                );
                for l in &lines {
                    println!("{l}");
                }
            }
            Event::Rechecked {
                run,
                host,
                verdict,
                reason,
            } => println!(
                "re-check run {run}: {} {verdict}{}",
                sanitize::display(&host, 120),
                reason
                    .as_deref()
                    .map(|r| format!(": {}", sanitize::display(r, 200)))
                    .unwrap_or_default()
            ),
            Event::Uncontained {
                host,
                lifted,
                message,
            } => println!(
                "{} {}: {}",
                sanitize::display(&host, 120),
                if lifted {
                    "isolation lifted, verified"
                } else {
                    "NOT lifted"
                },
                sanitize::display(&message, 400)
            ),
        }
    }
}
