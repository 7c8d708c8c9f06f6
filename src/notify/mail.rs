//! Alert mail over SMTP (lettre, tokio + rustls).
//!
//! STARTTLS is required when configured (never a silent fall back to clear
//! text), implicit TLS is supported, and plain SMTP only towards a loopback
//! relay (checked in `config`). The server certificate is always verified:
//! against `ca_file` alone when given, else the system's roots. Transient
//! failures (connection, timeout, SMTP 4xx) are retried with exponential
//! backoff; a TLS or authentication failure is final at once.

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret as _;

use super::config::{MailConfig, Security};
use super::message::{Alert, ReportFile};
use super::Outcome;

/// Largest report file attached; a larger one is pointed at only.
const MAX_ATTACHMENT: u64 = 20 * 1024 * 1024;

/// Where a mail goes, for the journal and logs: server and recipients.
pub fn target(cfg: &MailConfig) -> String {
    format!(
        "smtp://{}:{} -> {}",
        cfg.smtp.host.value,
        cfg.smtp.port(),
        cfg.to.value.join(", ")
    )
}

/// Sends `alert` to the configured recipients.
pub async fn send(cfg: &MailConfig, alert: &Alert, report: Option<&ReportFile>) -> Outcome {
    let message = match build_message(cfg, alert, report) {
        Ok(m) => m,
        Err(e) => return Outcome::failed(0, format!("cannot build the message: {e:#}")),
    };
    let transport = match transport(cfg) {
        Ok(t) => t,
        Err(e) => return Outcome::failed(0, format!("{e:#}")),
    };
    let attempts_max = cfg.smtp.retries + 1;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match transport.send(message.clone()).await {
            Ok(_) => return Outcome::ok(attempt),
            Err(e) => {
                let retry = retryable(&e) && attempt < attempts_max;
                let text = describe(&e);
                if !retry {
                    return Outcome::failed(attempt, text);
                }
                let wait = super::backoff(cfg.smtp.backoff, attempt);
                tracing::warn!(
                    target: "pushscan::notify",
                    "mail attempt {attempt}/{attempts_max} to {} failed: {text}; retrying in {:?}",
                    target(cfg),
                    wait
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
}

fn retryable(e: &lettre::transport::smtp::Error) -> bool {
    if e.is_permanent() || e.is_client() || e.is_tls() || super::is_tls_failure(e) {
        return false;
    }
    e.is_transient() || e.is_timeout() || !e.is_response()
}

/// The error and its causes on one line (lettre's Display may stop at the
/// kind: "Connection error").
fn describe(e: &lettre::transport::smtp::Error) -> String {
    super::error_chain(e)
}

fn transport(cfg: &MailConfig) -> anyhow::Result<AsyncSmtpTransport<Tokio1Executor>> {
    let s = &cfg.smtp;
    let host = s.host.value.trim().to_string();
    let tls_params = || -> anyhow::Result<TlsParameters> {
        let mut b = TlsParameters::builder(host.clone());
        if let Some(ca) = &s.ca_file {
            let pem = super::config::read_ca(ca)?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| anyhow::anyhow!("ca_file {ca}: not a usable certificate: {e}"))?;
            b = b
                .certificate_store(CertificateStore::None)
                .add_root_certificate(cert);
        }
        b.build_rustls()
            .map_err(|e| anyhow::anyhow!("TLS setup for {host}: {e}"))
    };
    let tls = match s.security.value {
        Security::Starttls => Tls::Required(tls_params()?),
        Security::Tls => Tls::Wrapper(tls_params()?),
        Security::None => Tls::None,
    };
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
        .port(s.port())
        .tls(tls)
        .timeout(Some(s.timeout));
    if let Some((user, password)) = s.password()? {
        b = b
            .credentials(Credentials::new(user, password.expose_secret().to_string()))
            .authentication(vec![Mechanism::Plain, Mechanism::Login]);
    }
    Ok(b.build())
}

fn build_message(
    cfg: &MailConfig,
    alert: &Alert,
    report: Option<&ReportFile>,
) -> anyhow::Result<Message> {
    let from: Mailbox = cfg
        .from
        .value
        .parse()
        .map_err(|e| anyhow::anyhow!("from: {e}"))?;
    // A Message-ID on the controller's name, and RFC 3834's Auto-Submitted so
    // that out-of-office replies are not sent back to the alert address.
    let domain = crate::identity::controller_name()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        .collect::<String>();
    let domain = if domain.is_empty() {
        "pushscan.invalid".to_string()
    } else {
        domain
    };
    let mut b = Message::builder()
        .from(from)
        .subject(alert.subject(&cfg.subject_prefix))
        .date_now()
        .message_id(Some(format!(
            "<pushscan.{}.{}@{domain}>",
            chrono::Utc::now().format("%Y%m%d%H%M%S%.6f"),
            fastrand::u64(..)
        )))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-generated".to_string(),
        ));
    for to in &cfg.to.value {
        let mb: Mailbox = to.parse().map_err(|e| anyhow::anyhow!("to {to:?}: {e}"))?;
        b = b.to(mb);
    }
    let mut text = alert.text();
    let attachment = match report.filter(|_| cfg.attach_report) {
        Some(f) => match read_attachment(f) {
            Ok(a) => Some(a),
            Err(e) => {
                text.push_str(&format!("\n(The report could not be attached: {e})\n"));
                None
            }
        },
        None => None,
    };
    let body = SinglePart::builder()
        .header(ContentType::TEXT_PLAIN)
        .body(text);
    let message = match attachment {
        Some((name, bytes, ctype)) => b.multipart(
            MultiPart::mixed()
                .singlepart(body)
                .singlepart(Attachment::new(name).body(bytes, ctype)),
        )?,
        None => b.singlepart(body)?,
    };
    Ok(message)
}

fn read_attachment(f: &ReportFile) -> anyhow::Result<(String, Vec<u8>, ContentType)> {
    let meta =
        std::fs::metadata(&f.path).map_err(|e| anyhow::anyhow!("{}: {e}", f.path.display()))?;
    if meta.len() > MAX_ATTACHMENT {
        anyhow::bail!(
            "{} is {} bytes, over the {} MiB attachment cap",
            f.path.display(),
            meta.len(),
            MAX_ATTACHMENT >> 20
        );
    }
    let bytes = std::fs::read(&f.path).map_err(|e| anyhow::anyhow!("{}: {e}", f.path.display()))?;
    let name = f
        .path
        .file_name()
        .map(|n| crate::sanitize::file_name(&n.to_string_lossy()))
        .unwrap_or_else(|| "report".into());
    let ctype = ContentType::parse(&f.content_type)
        .map_err(|e| anyhow::anyhow!("content type {:?}: {e}", f.content_type))?;
    Ok((name, bytes, ctype))
}
