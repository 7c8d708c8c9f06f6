//! What the engine and the commands tell the operator, as events: the engine never prints.
//!
//! Sweeps, cleanup and contain emit [`Event`]s into the [`Sink`] `main` chose; the
//! terminal sink (`progress::Terminal`) draws the progress bar or lines on stderr and
//! writes a command's result lines on stdout, in the text pushscan has always printed.

use std::sync::Arc;

use crate::pipeline::HostResult;

/// One thing worth telling the operator.
#[derive(Debug, Clone)]
pub enum Event {
    // ---- sweeps (stderr: the bar or lines) ----
    /// A sweep starts its hosts: `hosts` in all.
    SweepStarted { hosts: usize },
    /// A line for the operator (above the bar when one is drawn).
    Notice(String),
    /// A host of a sweep ended.
    HostFinished(HostResult),
    /// A wave of a staged sweep starts.
    WaveStarted { label: String, hosts: usize },
    /// A wave ended: its outcome line.
    WaveFinished { outcome: String },
    /// The operator is asked something on the terminal (`true`), or the answer came.
    Asking(bool),
    /// The sweep's hosts have all ended.
    SweepFinished,
    /// A stop was requested: no new host starts, hosts in flight finish.
    Interrupted,

    // ---- cleanup (stdout) ----
    /// Nothing of ours is recorded on any host of `run`.
    CleanupNothing { run: i64 },
    /// Dry run: what would be removed from `host`.
    CleanupPlanned {
        run: i64,
        host: String,
        files: Vec<String>,
        dirs: Vec<String>,
        /// Journaled names of what a connection made for itself (services over SMB).
        services: Vec<String>,
    },
    /// A host was cleaned, or why not.
    CleanupHost {
        run: i64,
        host: String,
        result: Result<(), String>,
    },

    // ---- contain and uncontain (stdout) ----
    /// A whole text block (the plan with every command), written as it is.
    Text(String),
    /// One line of a command's outcome ("dry run: nothing was run on any host").
    Line(String),
    /// A host's containment ended: whether every action was verified, and its lines.
    Contained {
        host: String,
        verified: bool,
        lines: Vec<String>,
    },
    /// The verdict of the re-check sweep on one contained host.
    Rechecked {
        run: i64,
        host: String,
        verdict: String,
        reason: Option<String>,
    },
    /// A host's isolation was lifted (verified), or not.
    Uncontained {
        host: String,
        lifted: bool,
        message: String,
    },
}

/// Where events go.
pub trait Sink: Send + Sync {
    fn emit(&self, event: Event);
}

/// A sink that drops everything (library callers that show nothing, unit tests).
pub struct Discard;

impl Sink for Discard {
    fn emit(&self, _event: Event) {}
}

/// The sink of one command, shared by everything it runs.
#[derive(Clone)]
pub struct Events(Arc<dyn Sink>);

impl Events {
    pub fn new(sink: Arc<dyn Sink>) -> Events {
        Events(sink)
    }

    pub fn emit(&self, event: Event) {
        self.0.emit(event);
    }

    pub fn notice(&self, line: impl Into<String>) {
        self.emit(Event::Notice(line.into()));
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Events")
    }
}
