//! Alert webhooks: one JSON POST per message (reqwest over rustls).
//!
//! https is required except towards loopback (checked in `config`), the
//! certificate is always verified (against `ca_file` alone when given, else
//! the platform's roots), redirects are not followed (a token header must
//! not travel to another host), and failures that may pass — connection
//! errors, timeouts, HTTP 5xx and 429 — are retried with exponential
//! backoff. The URL can itself be a secret (Slack, Teams): logs and the
//! journal only ever see [`redact`]ed forms, and reqwest errors are stripped
//! of it.

use super::config::WebhookConfig;
use super::message::Alert;
use super::Outcome;

/// The receiver as the journal and logs may show it: scheme, host, port and
/// the first path segment; no further path, query, fragment or user info.
pub fn redact(url: &reqwest::Url) -> String {
    let mut s = format!("{}://{}", url.scheme(), url.host_str().unwrap_or("?"));
    if let Some(p) = url.port() {
        s.push_str(&format!(":{p}"));
    }
    let mut segments = url
        .path_segments()
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty());
    if let Some(first) = segments.next() {
        s.push('/');
        s.push_str(first);
        if segments.next().is_some() {
            s.push_str("/…");
        }
    }
    s
}

/// Where the webhook goes, for the journal (without reading secrets when the
/// URL comes from one and cannot be read).
pub fn target(cfg: &WebhookConfig) -> String {
    match cfg.resolve_url() {
        Ok(u) => redact(&u),
        Err(_) => match (&cfg.url_env, &cfg.url_file) {
            (Some(v), _) => format!("url from ${v}"),
            (_, Some(f)) => format!("url from {f}"),
            _ => "webhook".into(),
        },
    }
}

/// POSTs `alert` to the receiver, retrying as configured.
pub async fn send(cfg: &WebhookConfig, alert: &Alert) -> Outcome {
    let url = match cfg.resolve_url() {
        Ok(u) => u,
        Err(e) => return Outcome::failed(0, format!("{e:#}")),
    };
    let client = match client(cfg) {
        Ok(c) => c,
        Err(e) => return Outcome::failed(0, format!("{e:#}")),
    };
    let header = match cfg.header_value() {
        Ok(h) => h,
        Err(e) => return Outcome::failed(0, format!("{e:#}")),
    };
    let body = match serde_json::to_vec(&alert.webhook_body(cfg.format.value)) {
        Ok(b) => b,
        Err(e) => return Outcome::failed(0, format!("cannot encode the body: {e}")),
    };
    let shown = redact(&url);
    let attempts_max = cfg.retries + 1;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut req = client
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone());
        if let Some((name, value)) = &header {
            req = req.header(name.clone(), value.clone());
        }
        let (text, retry) = match req.send().await {
            Ok(resp) => {
                let status = resp.status();
                if status.is_success() {
                    return Outcome::ok(attempt);
                }
                let snippet = resp
                    .text()
                    .await
                    .map(|t| crate::sanitize::display(t.trim(), 200))
                    .unwrap_or_default();
                let retry = status.is_server_error()
                    || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                    || status == reqwest::StatusCode::REQUEST_TIMEOUT;
                let mut text = format!("HTTP {}", status.as_u16());
                if let Some(reason) = status.canonical_reason() {
                    text.push_str(&format!(" {reason}"));
                }
                if !snippet.is_empty() {
                    text.push_str(&format!(": {snippet}"));
                }
                (text, retry)
            }
            Err(e) => {
                let tls = super::is_tls_failure(&e);
                (describe(e), !tls)
            }
        };
        if !retry || attempt >= attempts_max {
            return Outcome::failed(attempt, text);
        }
        let wait = super::backoff(cfg.backoff, attempt);
        tracing::warn!(
            target: "pushscan::notify",
            "webhook attempt {attempt}/{attempts_max} to {shown} failed: {text}; retrying in {:?}",
            wait
        );
        tokio::time::sleep(wait).await;
    }
}

/// A reqwest error on one line, its URL removed, with its causes.
fn describe(e: reqwest::Error) -> String {
    super::error_chain(&e.without_url())
}

fn client(cfg: &WebhookConfig) -> anyhow::Result<reqwest::Client> {
    super::install_crypto_provider();
    let mut b = reqwest::Client::builder()
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("pushscan/", env!("CARGO_PKG_VERSION")))
        .https_only(false);
    if let Some(ca) = &cfg.ca_file {
        let pem = super::config::read_ca(ca)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| anyhow::anyhow!("ca_file {ca}: {e}"))?;
        b = b.tls_certs_only(certs);
    }
    b.build()
        .map_err(|e| anyhow::anyhow!("cannot set up the HTTP client: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_url_keeps_no_secret() {
        let u = reqwest::Url::parse("https://hooks.slack.com/services/T0/B0/XXXX?token=y").unwrap();
        assert_eq!(redact(&u), "https://hooks.slack.com/services/…");
        let u = reqwest::Url::parse("http://127.0.0.1:8080/hook").unwrap();
        assert_eq!(redact(&u), "http://127.0.0.1:8080/hook");
    }
}
