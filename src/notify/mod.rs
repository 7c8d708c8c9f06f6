//! Alerts: after a sweep or resume, tell people about new detections.
//!
//! A sweep that finds Emotet at 3 a.m. is only useful if someone hears of
//! it. After a run ends, [`after_run`] reads the run's report from the
//! journal, picks the hosts to name — detected now and clean or never
//! checked before (`new_detection`, `first_check`), hosts still detected with
//! findings their previous check did not have (by finding identity), plus hosts
//! still detected when `repeat: true` or when no alert about them ever got
//! through since they were last clean — and sends one message per channel (mail,
//! webhook). An `incomplete` summary can be asked for runs that halted, were
//! interrupted, or left hosts unchecked. Every delivery is recorded in the
//! journal's `notifications` table with its attempts and error; a failure
//! is logged and recorded and never changes the sweep's exit code. Secrets
//! (SMTP password, webhook token, secret webhook URLs) are read from their
//! configured sources at send time and never logged or journaled.

pub mod config;
pub mod mail;
pub mod message;
pub mod webhook;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

pub use config::{Event, NotifyConfig, Origin};
pub use message::{Alert, Kind, ReportFile};

use crate::report::{HostEntry, RunReport};
use crate::store::{self, NewNotification, StoreReader};

/// Where a sweep's alert settings come from.
#[derive(Debug, Clone, Default)]
pub enum Source {
    /// No alerts (`--no-notify`).
    Off,
    /// The `notify:` section of the run's playbook (as stored in the
    /// journal), if it has one.
    #[default]
    RunPlaybook,
    /// `--notify-config FILE`, loaded and checked before the sweep.
    File(Arc<NotifyConfig>, PathBuf),
}

impl Source {
    /// The settings for a run, if alerts are configured; `run_playbook` reads the `notify:`
    /// section of the run's stored playbook (the caller owns the store and the playbook
    /// reader, so alerts need neither).
    pub fn resolve(
        &self,
        run_playbook: impl FnOnce() -> anyhow::Result<Option<NotifyConfig>>,
    ) -> anyhow::Result<Option<NotifyConfig>> {
        match self {
            Source::Off => Ok(None),
            Source::File(c, _) => Ok(Some((**c).clone())),
            Source::RunPlaybook => run_playbook(),
        }
    }
}

/// How one delivery went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub attempts: u32,
    /// `None`: delivered.
    pub error: Option<String>,
}

impl Outcome {
    pub(crate) fn ok(attempts: u32) -> Outcome {
        Outcome {
            attempts,
            error: None,
        }
    }
    pub(crate) fn failed(attempts: u32, error: String) -> Outcome {
        Outcome {
            attempts,
            error: Some(error),
        }
    }
}

/// One recorded delivery.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub run_id: Option<i64>,
    pub kind: Kind,
    pub channel: &'static str,
    pub target: String,
    pub status: &'static str,
    pub attempts: u32,
    pub error: Option<String>,
    /// The hosts the message named.
    pub hosts: Vec<String>,
}

/// The wait before attempt `attempt + 1`: `base`, doubled for each further
/// retry, at most a minute.
pub(crate) fn backoff(base: Duration, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    base.saturating_mul(factor).min(Duration::from_secs(60))
}

/// Whether an error (or one of its causes) is a TLS failure (certificate not
/// trusted, wrong name, handshake): never retried, it will not pass.
pub(crate) fn is_tls_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if c.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if io.get_ref().is_some_and(|i| i.is::<rustls::Error>()) {
                return true;
            }
        }
        cur = c.source();
    }
    false
}

/// An error and its causes on one line, without the repetitions that
/// wrapped errors bring ("Connection error: Connection error: ..."),
/// escaped and capped. None of the errors involved carries a secret.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        parts.push(c.to_string());
        cur = c.source();
    }
    // Each message often ends with its cause's: keep the new part only.
    let mut out: Vec<String> = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let own = match parts.get(i + 1) {
            Some(next) if p.ends_with(next.as_str()) && p.len() > next.len() => p
                [..p.len() - next.len()]
                .trim_end_matches([':', ' '])
                .to_string(),
            _ => p.clone(),
        };
        for seg in own.split(": ") {
            if !seg.is_empty() && out.last().map(String::as_str) != Some(seg) {
                out.push(seg.to_string());
            }
        }
    }
    crate::sanitize::display(&out.join(": "), 500)
}

/// reqwest is built without a default crypto provider (as winrm-rs uses
/// it): install ring's, which rustls already carries, once.
pub(crate) fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The detections channel `channel` should name for this run.
fn hosts_to_alert(
    reader: &dyn StoreReader,
    cfg: &NotifyConfig,
    channel: &str,
    rep: &RunReport,
) -> anyhow::Result<Vec<HostEntry>> {
    let run = rep.run.info.id;
    let mut out = Vec::new();
    for h in rep.hosts.iter().filter(|h| h.status == "detected") {
        // Already named in a delivered message of this same run (a resumed
        // run finishes twice).
        if reader.alerted(channel, &h.host, run - 1, run)? {
            continue;
        }
        let include = match h.change.as_deref() {
            Some("new_detection") | Some("first_check") => true,
            // Still detected, but with findings the previous check did not have (keyed
            // by the identity their parser gives them): news.
            Some("still_detected") if !h.new_findings.is_empty() => true,
            Some("still_detected") => {
                cfg.repeat || {
                    // Never told since it was last clean (the alert failed,
                    // or alerts were configured later): tell now.
                    let since = reader.last_clean_run(&h.host, run)?.unwrap_or(0);
                    !reader.alerted(channel, &h.host, since, run - 1)?
                }
            }
            _ => false,
        };
        if include {
            out.push(h.clone());
        }
    }
    Ok(out)
}

/// The message of each channel (mail, webhook) for this run, if any.
fn plan_alerts(
    reader: &dyn StoreReader,
    cfg: &NotifyConfig,
    state_dir: &Path,
    rep: &RunReport,
    report_file: Option<&ReportFile>,
) -> (Option<Alert>, Option<Alert>) {
    let run = rep.run.info.id;
    let wants = |e: Event| cfg.on.value.contains(&e);
    let incomplete = message::run_incomplete(rep);
    let plan = |channel: &str| -> Option<Alert> {
        let detections = if wants(Event::NewDetection) {
            match hosts_to_alert(reader, cfg, channel, rep) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(
                        target: "pushscan::notify",
                        "run {run}: cannot read alert history ({channel}): {e:#}"
                    );
                    Vec::new()
                }
            }
        } else {
            Vec::new()
        };
        let kind = if !detections.is_empty() {
            Kind::NewDetection
        } else if wants(Event::Incomplete) && incomplete {
            Kind::Incomplete
        } else {
            return None;
        };
        let mut a = Alert::for_run(kind, rep, detections, state_dir, report_file);
        a.show_not_checked = wants(Event::Incomplete);
        Some(a)
    };
    (
        cfg.mail.as_ref().and_then(|_| plan("mail")),
        cfg.webhook.as_ref().and_then(|_| plan("webhook")),
    )
}

/// Sends the alerts of a finished run and records each delivery. Never
/// fails: problems are logged and recorded, and the deliveries returned.
pub async fn after_run(
    cfg: &NotifyConfig,
    state_dir: &Path,
    rep: &RunReport,
    report_file: Option<&ReportFile>,
) -> Vec<Delivery> {
    let run = rep.run.info.id;
    let journal = match store::open(state_dir) {
        Ok(j) => j,
        Err(e) => {
            tracing::error!(target: "pushscan::notify", "run {run}: alerts not sent: journal: {e:#}");
            return Vec::new();
        }
    };
    // Decided first, with the journal's history; the reader (not `Send`)
    // is gone before the first await.
    let (mail_alert, hook_alert) = match store::open_reader(state_dir) {
        Ok(reader) => plan_alerts(&*reader, cfg, state_dir, rep, report_file),
        Err(e) => {
            tracing::error!(target: "pushscan::notify", "run {run}: alerts not sent: journal: {e:#}");
            journal.close();
            return Vec::new();
        }
    };
    if mail_alert.is_none() && hook_alert.is_none() {
        tracing::debug!(target: "pushscan::notify", "run {run}: nothing to alert on");
        journal.close();
        return Vec::new();
    }
    let mail_fut = async {
        match (&cfg.mail, &mail_alert) {
            (Some(m), Some(a)) => Some((mail::target(m), mail::send(m, a, report_file).await)),
            _ => None,
        }
    };
    let hook_fut = async {
        match (&cfg.webhook, &hook_alert) {
            (Some(w), Some(a)) => Some((webhook::target(w), webhook::send(w, a).await)),
            _ => None,
        }
    };
    let (mail_res, hook_res) = tokio::join!(mail_fut, hook_fut);
    let mut out = Vec::new();
    for (channel, alert, res) in [
        ("mail", &mail_alert, mail_res),
        ("webhook", &hook_alert, hook_res),
    ] {
        let (Some(alert), Some((target, outcome))) = (alert, res) else {
            continue;
        };
        let d = Delivery {
            run_id: Some(run),
            kind: alert.kind,
            channel,
            target,
            status: if outcome.error.is_none() {
                "ok"
            } else {
                "failed"
            },
            attempts: outcome.attempts,
            error: outcome.error,
            hosts: alert.detections.iter().map(|h| h.host.clone()).collect(),
        };
        log_delivery(&d);
        if let Err(e) = journal.record_notification(new_notification(&d)).await {
            tracing::error!(
                target: "pushscan::notify",
                "run {run}: cannot record the {channel} delivery in the journal: {e:#}"
            );
        }
        out.push(d);
    }
    journal.close();
    out
}

fn new_notification(d: &Delivery) -> NewNotification {
    NewNotification {
        run_id: d.run_id,
        kind: d.kind.as_str().to_string(),
        channel: d.channel.to_string(),
        target: d.target.clone(),
        status: d.status.to_string(),
        attempts: i64::from(d.attempts),
        error: d.error.clone(),
        hosts: d.hosts.clone(),
    }
}

fn log_delivery(d: &Delivery) {
    let run = d
        .run_id
        .map(|r| r.to_string())
        .unwrap_or_else(|| "-".into());
    let hosts = if d.hosts.is_empty() {
        String::new()
    } else {
        format!(
            " naming {}",
            crate::sanitize::display(&d.hosts.join(", "), 300)
        )
    };
    match &d.error {
        None => tracing::info!(
            target: "pushscan::notify",
            "run {run}: {} alert ({}) sent to {}{hosts} after {} attempt(s)",
            d.channel,
            d.kind.as_str(),
            d.target,
            d.attempts
        ),
        Some(e) => tracing::warn!(
            target: "pushscan::notify",
            "run {run}: {} alert ({}) to {} FAILED after {} attempt(s): {e} (recorded in the journal; the sweep's result is unchanged)",
            d.channel,
            d.kind.as_str(),
            d.target,
            d.attempts
        ),
    }
}

/// `pushscan notify test`: one test message through every channel.
pub async fn send_test(cfg: &NotifyConfig, source: &str) -> Vec<Delivery> {
    let alert = Alert::test(source);
    let mail_fut = async {
        match &cfg.mail {
            Some(m) => Some((mail::target(m), mail::send(m, &alert, None).await)),
            None => None,
        }
    };
    let hook_fut = async {
        match &cfg.webhook {
            Some(w) => Some((webhook::target(w), webhook::send(w, &alert).await)),
            None => None,
        }
    };
    let (m, w) = tokio::join!(mail_fut, hook_fut);
    [("mail", m), ("webhook", w)]
        .into_iter()
        .filter_map(|(channel, r)| {
            r.map(|(target, o)| Delivery {
                run_id: None,
                kind: Kind::Test,
                channel,
                target,
                status: if o.error.is_none() { "ok" } else { "failed" },
                attempts: o.attempts,
                error: o.error,
                hosts: Vec::new(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn error_chains_read_once() {
        let e = E(
            "Connection error: Connection error: bad cert",
            Some(Box::new(E(
                "Connection error: bad cert",
                Some(Box::new(E("bad cert", None))),
            ))),
        );
        assert_eq!(error_chain(&e), "Connection error: bad cert");
        let e = E(
            "error sending request",
            Some(Box::new(E("connection refused", None))),
        );
        assert_eq!(error_chain(&e), "error sending request: connection refused");
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let b = Duration::from_millis(500);
        assert_eq!(backoff(b, 1), Duration::from_millis(500));
        assert_eq!(backoff(b, 2), Duration::from_secs(1));
        assert_eq!(backoff(b, 3), Duration::from_secs(2));
        assert_eq!(backoff(b, 30), Duration::from_secs(60));
    }
}
