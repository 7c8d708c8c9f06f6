//! The fleet executor and the shutdown signal: how every command that acts on many hosts
//! (sweep, resume, the re-check after contain, cleanup, contain) runs them, and how all of
//! them stop.
//!
//! [`run`] starts one task per host on the shared tokio runtime, at most `limit` at a time
//! (a semaphore, not a thread per host), and owns every task in a `JoinSet`: none is
//! detached, a task that panics comes back as an error for its host (never a lost host),
//! and `run` returns only when every started task has ended.
//!
//! [`Shutdown`] is the one stop signal, created in `main` and passed down. It listens for
//! Ctrl-C and, on Unix, SIGTERM (Windows: Ctrl-C and Ctrl-Break) from the moment a command
//! starts acting on hosts ([`Shutdown::listen`]); before that a signal ends the process as
//! it always does. The first signal stops the start of new hosts: hosts in flight finish
//! their current work (their journaled steps and their cleanup), the rest come back to the
//! caller as not started, for it to journal. A second signal ends the process at once (the
//! journal already holds every intent).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::events::{Event, Events};

/// What a command gets from `main` to act on a fleet: where its events go and the stop
/// signal.
#[derive(Debug, Clone)]
pub struct Control {
    pub events: Events,
    pub shutdown: Shutdown,
}

/// The exit code after a second interrupt: the shell's code for death by SIGINT.
pub const SECOND_INTERRUPT_EXIT: i32 = 130;

/// The stop signal shared by every part of one command. Clones share it.
#[derive(Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

struct Inner {
    tx: watch::Sender<bool>,
    /// The task that watches the process's signals, once [`Shutdown::listen`] started it.
    listener: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut l) = self.listener.lock() {
            if let Some(h) = l.take() {
                h.abort();
            }
        }
    }
}

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shutdown")
            .field("requested", &self.is_requested())
            .finish()
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    /// A signal not yet requested, not yet listening to the process's signals.
    pub fn new() -> Shutdown {
        let (tx, _) = watch::channel(false);
        Shutdown {
            inner: Arc::new(Inner {
                tx,
                listener: Mutex::new(None),
            }),
        }
    }

    /// Starts watching Ctrl-C and SIGTERM (once; later calls do nothing). Called where a
    /// command starts acting on hosts, inside the runtime.
    pub fn listen(&self) {
        let Ok(mut l) = self.inner.listener.lock() else {
            return;
        };
        if l.is_none() {
            let tx = self.inner.tx.clone();
            *l = Some(tokio::spawn(watch_signals(tx)));
        }
    }

    /// Asks everything that holds this signal to stop (what the first Ctrl-C does).
    pub fn request(&self) {
        self.inner.tx.send_replace(true);
    }

    pub fn is_requested(&self) -> bool {
        *self.inner.tx.borrow()
    }

    /// Resolves once a stop is requested (at once if it already is).
    pub async fn requested(&self) {
        let mut rx = self.inner.tx.subscribe();
        // The sender lives in `self`, so the wait ends only with a request.
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// First signal: request the stop. Second: leave at once.
async fn watch_signals(tx: watch::Sender<bool>) {
    let mut seen = 0;
    loop {
        if !next_signal().await {
            return;
        }
        seen += 1;
        if seen == 1 {
            tx.send_replace(true);
        } else {
            eprintln!("second interrupt: stopping now; the journal has every step so far");
            std::process::exit(SECOND_INTERRUPT_EXIT);
        }
    }
}

/// The next Ctrl-C or SIGTERM; `false` when signals cannot be watched.
#[cfg(unix)]
async fn next_signal() -> bool {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return tokio::signal::ctrl_c().await.is_ok();
    };
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.is_ok(),
        r = term.recv() => r.is_some(),
    }
}

/// The next Ctrl-C or Ctrl-Break (a console window's close and a service stop arrive
/// as these too); `false` when signals cannot be watched.
#[cfg(windows)]
async fn next_signal() -> bool {
    use tokio::signal::windows::ctrl_break;
    let Ok(mut brk) = ctrl_break() else {
        return tokio::signal::ctrl_c().await.is_ok();
    };
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.is_ok(),
        r = brk.recv() => r.is_some(),
    }
}

#[cfg(not(any(unix, windows)))]
async fn next_signal() -> bool {
    tokio::signal::ctrl_c().await.is_ok()
}

/// One host's task ended: its value, or why there is none (the task panicked).
#[derive(Debug)]
pub struct Finished<T> {
    pub key: String,
    pub result: Result<T, String>,
}

/// How a fan-out ended.
#[derive(Debug)]
pub struct Ran<I> {
    /// A stop was requested before every host was started or while hosts ran.
    pub interrupted: bool,
    /// The hosts never started, in their order, for the caller to journal.
    pub not_started: Vec<I>,
}

/// Runs `task` for every item, at most `limit` at a time, in order, handing each ended
/// task to `done` as it ends. Once `shutdown` is requested no further item is started
/// (an [`Event::Interrupted`] says so); the tasks in flight run to their end. `key` names
/// an item (its host) for the result of a task that panicked.
pub async fn run<I, T, Fut>(
    items: Vec<I>,
    limit: usize,
    shutdown: &Shutdown,
    events: &Events,
    key: impl Fn(&I) -> String,
    mut task: impl FnMut(I) -> Fut,
    mut done: impl FnMut(Finished<T>),
) -> Ran<I>
where
    T: Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let sem = Arc::new(Semaphore::new(limit.max(1)));
    let mut tasks: JoinSet<T> = JoinSet::new();
    let mut names: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut not_started = Vec::new();
    let mut items = items.into_iter();
    while let Some(item) = items.next() {
        // Wait for a slot, handing on finished hosts meanwhile.
        let permit = loop {
            tokio::select! {
                biased;
                _ = shutdown.requested() => break None,
                p = sem.clone().acquire_owned() => break p.ok(),
                Some(r) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    done(ended(r, &mut names));
                }
            }
        };
        let Some(permit) = permit else {
            not_started.push(item);
            not_started.extend(items);
            break;
        };
        let name = key(&item);
        let fut = task(item);
        let handle = tasks.spawn(async move {
            let r = fut.await;
            drop(permit);
            r
        });
        names.insert(handle.id(), name);
    }
    if !not_started.is_empty() {
        events.emit(Event::Interrupted);
    }
    while let Some(r) = tasks.join_next_with_id().await {
        done(ended(r, &mut names));
    }
    Ran {
        interrupted: !not_started.is_empty() || shutdown.is_requested(),
        not_started,
    }
}

fn ended<T>(
    r: Result<(tokio::task::Id, T), tokio::task::JoinError>,
    names: &mut HashMap<tokio::task::Id, String>,
) -> Finished<T> {
    match r {
        Ok((id, value)) => Finished {
            key: names.remove(&id).unwrap_or_default(),
            result: Ok(value),
        },
        Err(e) => {
            let key = names.remove(&e.id()).unwrap_or_default();
            tracing::error!("host task of {key} failed: {e}");
            Finished {
                key,
                result: Err(format!("host task failed: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn quiet() -> Events {
        Events::new(Arc::new(crate::events::Discard))
    }

    #[tokio::test]
    async fn bounds_concurrency_and_runs_everything() {
        let now = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut got = Vec::new();
        let ran = run(
            (0..20).collect::<Vec<u32>>(),
            3,
            &Shutdown::new(),
            &quiet(),
            |i| format!("h{i}"),
            |i| {
                let (now, peak) = (now.clone(), peak.clone());
                async move {
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(n, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    i
                }
            },
            |f| got.push(f.result.unwrap()),
        )
        .await;
        got.sort();
        assert_eq!(got, (0..20).collect::<Vec<_>>());
        assert!(!ran.interrupted && ran.not_started.is_empty());
        assert_eq!(peak.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_panic_is_an_error_for_its_host() {
        let mut got = Vec::new();
        run(
            vec![1u32, 2, 3],
            2,
            &Shutdown::new(),
            &quiet(),
            |i| format!("h{i}"),
            |i| async move {
                if i == 2 {
                    panic!("boom");
                }
                i
            },
            |f| got.push((f.key, f.result.is_ok())),
        )
        .await;
        got.sort();
        assert_eq!(
            got,
            vec![
                ("h1".into(), true),
                ("h2".into(), false),
                ("h3".into(), true)
            ]
        );
    }

    #[tokio::test]
    async fn a_stop_starts_nothing_more_and_lets_running_hosts_finish() {
        let shutdown = Shutdown::new();
        let mut finished = Vec::new();
        let ran = run(
            (0..10).collect::<Vec<u32>>(),
            2,
            &shutdown,
            &quiet(),
            |i| format!("h{i}"),
            |i| {
                let s = shutdown.clone();
                async move {
                    if i == 1 {
                        s.request();
                    }
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    i
                }
            },
            |f| finished.push(f.result.unwrap()),
        )
        .await;
        finished.sort();
        assert_eq!(
            finished,
            vec![0, 1],
            "both hosts in flight ran to their end"
        );
        assert!(ran.interrupted);
        assert_eq!(ran.not_started, (2..10).collect::<Vec<_>>());
    }
}
