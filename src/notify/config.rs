//! The `notify:` settings: where alerts go and when.
//!
//! The same schema is read from a playbook's `notify:` section and from a
//! separate file (`--notify-config FILE`, whose top level is that section's
//! content). Parsing is strict like the playbook's: unknown keys are errors
//! with file:line:col. Secrets never appear in it: an SMTP password or a
//! webhook token is named by an environment variable (`*_env`) or a file
//! (`*_file`, where `${NAME}` expands from the environment, e.g.
//! `${CREDENTIALS_DIRECTORY}/smtp-password` under systemd), and a literal
//! `password:` key is refused. Semantic checks that need more than one key
//! (`security: none` only towards loopback, https for webhooks) report the
//! location of the offending value.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;

/// Alerts of a sweep: the channels and when they fire.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Which events send a message (default: `[new_detection]`).
    #[serde(default = "default_on")]
    pub on: Spanned<Vec<Event>>,
    /// Alert again, every run, for a host that is still detected.
    #[serde(default)]
    pub repeat: bool,
    #[serde(default)]
    pub mail: Option<MailConfig>,
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
}

/// What sends a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A host detected now whose previous check was clean or never happened.
    NewDetection,
    /// A run that ended halted or interrupted, or with hosts not checked.
    Incomplete,
}

fn default_on() -> Spanned<Vec<Event>> {
    Spanned::new(
        vec![Event::NewDetection],
        serde_saphyr::Location::UNKNOWN,
        serde_saphyr::Location::UNKNOWN,
    )
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailConfig {
    pub smtp: SmtpConfig,
    pub from: Spanned<String>,
    pub to: Spanned<Vec<String>>,
    /// Starts every subject (default `[pushscan]`).
    #[serde(default = "default_prefix")]
    pub subject_prefix: String,
    /// Attach the run's report file (today the JSON report).
    #[serde(default)]
    pub attach_report: bool,
}

fn default_prefix() -> String {
    "[pushscan]".to_string()
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain connection upgraded with STARTTLS, which is required (default port 587).
    Starttls,
    /// TLS from the first byte, "SMTPS" (default port 465).
    Tls,
    /// No TLS at all: only towards a loopback address (a local relay). Port 25.
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: Spanned<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default = "default_security")]
    pub security: Spanned<Security>,
    #[serde(default)]
    pub username: Option<Spanned<String>>,
    /// The environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// The file holding the password (one line; `${NAME}` expands).
    #[serde(default)]
    pub password_file: Option<String>,
    /// Refused: a literal password in a file that is copied around and
    /// (for a playbook) stored in the journal.
    #[serde(default, deserialize_with = "refuse_literal_password")]
    #[allow(dead_code)]
    password: Option<()>,
    /// PEM CA certificate(s) the server's certificate must chain to, instead
    /// of the system's roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    #[serde(default = "default_mail_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Further attempts after a transient failure (connection, timeout, SMTP 4xx).
    #[serde(default = "default_mail_retries")]
    pub retries: u32,
    /// Wait before the first retry; doubled for each further one.
    #[serde(default = "default_backoff", deserialize_with = "de_duration")]
    pub backoff: Duration,
}

fn default_security() -> Spanned<Security> {
    Spanned::new(
        Security::Starttls,
        serde_saphyr::Location::UNKNOWN,
        serde_saphyr::Location::UNKNOWN,
    )
}
fn default_mail_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_mail_retries() -> u32 {
    2
}
fn default_backoff() -> Duration {
    Duration::from_secs(1)
}

impl SmtpConfig {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.security.value {
            Security::Starttls => 587,
            Security::Tls => 465,
            Security::None => 25,
        })
    }
}

/// The shape of a webhook's JSON body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// pushscan's own document (README "Alerts"), with a `text` summary.
    Generic,
    /// `{"text": ...}` for Slack (and Mattermost/Rocket.Chat) incoming webhooks.
    Slack,
    /// An Office 365 connector card (`text`, `title`, `summary`) for Teams.
    Teams,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The receiver. https, except towards a loopback address.
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    /// The environment variable holding the URL (Slack/Teams URLs are secrets).
    #[serde(default)]
    pub url_env: Option<String>,
    /// The file holding the URL (`${NAME}` expands).
    #[serde(default)]
    pub url_file: Option<String>,
    #[serde(default = "default_format")]
    pub format: Spanned<Format>,
    #[serde(default = "default_webhook_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Further attempts after a failure that may pass (connection, timeout, 5xx, 429).
    #[serde(default = "default_webhook_retries")]
    pub retries: u32,
    /// Wait before the first retry; doubled for each further one (at most 60 s).
    #[serde(default = "default_backoff", deserialize_with = "de_duration")]
    pub backoff: Duration,
    #[serde(default)]
    pub ca_file: Option<String>,
    /// An extra request header whose value is a secret (a bearer token).
    #[serde(default)]
    pub header: Option<HeaderConfig>,
}

fn default_format() -> Spanned<Format> {
    Spanned::new(
        Format::Generic,
        serde_saphyr::Location::UNKNOWN,
        serde_saphyr::Location::UNKNOWN,
    )
}
fn default_webhook_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_webhook_retries() -> u32 {
    3
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderConfig {
    /// e.g. `Authorization`.
    pub name: Spanned<String>,
    /// Put before the secret (e.g. `"Bearer "`).
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub value_env: Option<String>,
    #[serde(default)]
    pub value_file: Option<String>,
    #[serde(default, deserialize_with = "refuse_literal_value")]
    #[allow(dead_code)]
    value: Option<()>,
}

fn refuse_literal_password<'de, D: Deserializer<'de>>(d: D) -> Result<Option<()>, D::Error> {
    serde::de::IgnoredAny::deserialize(d)?;
    Err(serde::de::Error::custom(
        "a literal `password:` is not accepted: name its source with `password_env: VAR` \
         or `password_file: PATH`",
    ))
}

fn refuse_literal_value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<()>, D::Error> {
    serde::de::IgnoredAny::deserialize(d)?;
    Err(serde::de::Error::custom(
        "a literal header `value:` is not accepted (it is a secret): name its source with \
         `value_env: VAR` or `value_file: PATH`",
    ))
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrText {
        Num(u64),
        Text(String),
    }
    match NumOrText::deserialize(d)? {
        NumOrText::Num(n) => Ok(Duration::from_secs(n)),
        NumOrText::Text(t) => crate::units::parse_duration(&t).map_err(serde::de::Error::custom),
    }
}

/// A configuration error: the message and, when known, where (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub line: Option<usize>,
    pub col: Option<usize>,
    pub message: String,
}

impl ConfigError {
    fn at(loc: &serde_saphyr::Location, message: impl Into<String>) -> ConfigError {
        let line = usize::try_from(loc.line()).ok().filter(|l| *l > 0);
        ConfigError {
            line,
            col: line.and(usize::try_from(loc.column()).ok().filter(|c| *c > 0)),
            message: message.into(),
        }
    }
    fn plain(message: impl Into<String>) -> ConfigError {
        ConfigError {
            line: None,
            col: None,
            message: message.into(),
        }
    }
}

/// Where a configuration was read from: decides one rule (a playbook is
/// stored in the journal with each run, so a secret URL must not be in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Playbook,
    File,
}

/// Whether `host` names this machine's loopback interface.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if h.eq_ignore_ascii_case("localhost") {
        return true;
    }
    h.parse::<IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

/// Checks a webhook URL: absolute http(s), https unless the host is loopback,
/// no credentials in it (they would be logged by proxies and receivers).
pub fn check_webhook_url(url: &str) -> Result<reqwest::Url, String> {
    let u = reqwest::Url::parse(url.trim()).map_err(|e| format!("invalid webhook URL: {e}"))?;
    let host = u.host_str().unwrap_or("");
    match u.scheme() {
        "https" => {}
        "http" if is_loopback_host(host) => {}
        "http" => {
            return Err(format!(
                "webhook URL must be https (plain http only to a loopback address, not {host:?})"
            ))
        }
        other => return Err(format!("webhook URL scheme {other:?}: expected https")),
    }
    if host.is_empty() {
        return Err("webhook URL has no host".into());
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(
            "webhook URL carries user:password: use `header:` with `value_env`/`value_file`".into(),
        );
    }
    Ok(u)
}

impl NotifyConfig {
    /// Reads `--notify-config FILE` (the content of a `notify:` section).
    pub fn load(path: &Path) -> anyhow::Result<NotifyConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: cannot read notify config: {e}", path.display()))?;
        NotifyConfig::parse(&text, path)
    }

    pub fn parse(text: &str, source: &Path) -> anyhow::Result<NotifyConfig> {
        let located = |line: Option<usize>, col: Option<usize>, message: &str| {
            let mut s = source.display().to_string();
            if let Some(l) = line {
                s.push_str(&format!(":{l}"));
                if let Some(c) = col {
                    s.push_str(&format!(":{c}"));
                }
            }
            anyhow::anyhow!("{s}: {message}")
        };
        let cfg: NotifyConfig = serde_saphyr::from_str(text).map_err(|e| {
            let loc = e.location();
            located(
                loc.as_ref()
                    .and_then(|l| usize::try_from(l.line()).ok())
                    .filter(|l| *l > 0),
                loc.as_ref()
                    .and_then(|l| usize::try_from(l.column()).ok())
                    .filter(|c| *c > 0),
                &crate::located::first_message_line(&e.to_string()),
            )
        })?;
        cfg.check(Origin::File)
            .map_err(|e| located(e.line, e.col, &e.message))?;
        Ok(cfg)
    }

    /// The checks serde cannot make. Reads no environment and no file.
    pub fn check(&self, origin: Origin) -> Result<(), ConfigError> {
        if self.on.value.is_empty() {
            return Err(ConfigError::at(
                &self.on.referenced,
                "`on:` lists no event: expected new_detection and/or incomplete",
            ));
        }
        if self.mail.is_none() && self.webhook.is_none() {
            return Err(ConfigError::plain(
                "notify: no channel: configure `mail:` and/or `webhook:`",
            ));
        }
        if let Some(m) = &self.mail {
            m.check()?;
        }
        if let Some(w) = &self.webhook {
            w.check(origin)?;
        }
        Ok(())
    }

    /// Checks that every secret and file the channels name can be read now,
    /// so that a missing variable stops `sweep` before it starts rather than
    /// fails an alert hours later. Values are read and dropped.
    pub fn check_sources(&self) -> anyhow::Result<()> {
        if let Some(m) = &self.mail {
            m.smtp.password()?;
            if let Some(ca) = &m.smtp.ca_file {
                read_ca(ca)?;
            }
        }
        if let Some(w) = &self.webhook {
            w.resolve_url()?;
            w.header_value()?;
            if let Some(ca) = &w.ca_file {
                read_ca(ca)?;
            }
        }
        Ok(())
    }
}

impl MailConfig {
    fn check(&self) -> Result<(), ConfigError> {
        let s = &self.smtp;
        let host = s.host.value.trim();
        if host.is_empty() {
            return Err(ConfigError::at(&s.host.referenced, "smtp.host is empty"));
        }
        if s.security.value == Security::None && !is_loopback_host(host) {
            return Err(ConfigError::at(
                &s.security.referenced,
                format!(
                    "smtp.security: none sends mail (and any password) in clear: only allowed \
                     towards a loopback address, not {host:?}; use starttls or tls"
                ),
            ));
        }
        match (&s.username, &s.password_env, &s.password_file) {
            (Some(_), Some(_), Some(_)) => {
                return Err(ConfigError::plain(
                    "smtp: password_env and password_file are exclusive: give one",
                ))
            }
            (Some(u), None, None) => {
                return Err(ConfigError::at(
                    &u.referenced,
                    "smtp.username needs password_env or password_file",
                ))
            }
            (None, Some(_), _) | (None, _, Some(_)) => {
                return Err(ConfigError::plain(
                    "smtp: password_env/password_file without username",
                ))
            }
            _ => {}
        }
        if s.timeout.is_zero() {
            return Err(ConfigError::plain("smtp.timeout must be more than zero"));
        }
        if s.retries > 10 {
            return Err(ConfigError::plain("smtp.retries: at most 10"));
        }
        self.from
            .value
            .parse::<lettre::message::Mailbox>()
            .map_err(|e| ConfigError::at(&self.from.referenced, format!("mail.from: {e}")))?;
        if self.to.value.is_empty() {
            return Err(ConfigError::at(
                &self.to.referenced,
                "mail.to lists no recipient",
            ));
        }
        for t in &self.to.value {
            t.parse::<lettre::message::Mailbox>()
                .map_err(|e| ConfigError::at(&self.to.referenced, format!("mail.to {t:?}: {e}")))?;
        }
        if self.subject_prefix.contains(['\r', '\n']) {
            return Err(ConfigError::plain("mail.subject_prefix: one line"));
        }
        Ok(())
    }
}

impl SmtpConfig {
    /// The login, read from its source now (`None`: no authentication).
    pub fn password(&self) -> anyhow::Result<Option<(String, SecretString)>> {
        let Some(user) = &self.username else {
            return Ok(None);
        };
        let secret = read_secret(
            "smtp password",
            self.password_env.as_deref(),
            self.password_file.as_deref(),
        )?;
        Ok(Some((user.value.clone(), secret)))
    }
}

impl WebhookConfig {
    fn check(&self, origin: Origin) -> Result<(), ConfigError> {
        let given = [
            self.url.is_some(),
            self.url_env.is_some(),
            self.url_file.is_some(),
        ]
        .iter()
        .filter(|g| **g)
        .count();
        if given != 1 {
            return Err(ConfigError::plain(
                "webhook: give exactly one of url, url_env, url_file",
            ));
        }
        if let Some(u) = &self.url {
            check_webhook_url(&u.value).map_err(|e| ConfigError::at(&u.referenced, e))?;
            if origin == Origin::Playbook && self.format.value != Format::Generic {
                return Err(ConfigError::at(
                    &u.referenced,
                    "a Slack/Teams webhook URL is a secret, and a playbook is stored in the \
                     journal with every run: use url_env or url_file (or --notify-config)",
                ));
            }
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::plain("webhook.timeout must be more than zero"));
        }
        if self.retries > 10 {
            return Err(ConfigError::plain("webhook.retries: at most 10"));
        }
        if let Some(h) = &self.header {
            reqwest::header::HeaderName::from_bytes(h.name.value.as_bytes()).map_err(|_| {
                ConfigError::at(
                    &h.name.referenced,
                    format!(
                        "webhook.header.name {:?} is not a header name",
                        h.name.value
                    ),
                )
            })?;
            match (&h.value_env, &h.value_file) {
                (Some(_), None) | (None, Some(_)) => {}
                _ => {
                    return Err(ConfigError::at(
                        &h.name.referenced,
                        "webhook.header: give exactly one of value_env, value_file",
                    ))
                }
            }
        }
        Ok(())
    }

    /// The receiver's URL, read from its source now and checked.
    pub fn resolve_url(&self) -> anyhow::Result<reqwest::Url> {
        let text = match (&self.url, &self.url_env, &self.url_file) {
            (Some(u), _, _) => u.value.clone(),
            (None, env, file) => {
                use secrecy::ExposeSecret as _;
                read_secret("webhook URL", env.as_deref(), file.as_deref())?
                    .expose_secret()
                    .to_string()
            }
        };
        // The message of a bad URL from a secret source must not quote it.
        check_webhook_url(&text).map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// The extra header (name, secret value with its prefix), if configured.
    pub fn header_value(
        &self,
    ) -> anyhow::Result<Option<(reqwest::header::HeaderName, reqwest::header::HeaderValue)>> {
        use secrecy::ExposeSecret as _;
        let Some(h) = &self.header else {
            return Ok(None);
        };
        let secret = read_secret(
            "webhook header value",
            h.value_env.as_deref(),
            h.value_file.as_deref(),
        )?;
        let name = reqwest::header::HeaderName::from_bytes(h.name.value.as_bytes())
            .map_err(|_| anyhow::anyhow!("webhook.header.name is not a header name"))?;
        let mut value = reqwest::header::HeaderValue::from_str(&format!(
            "{}{}",
            h.prefix,
            secret.expose_secret()
        ))
        .map_err(|_| {
            anyhow::anyhow!("webhook header value holds characters a header cannot carry")
        })?;
        value.set_sensitive(true);
        Ok(Some((name, value)))
    }
}

/// Expands `${NAME}` from the environment in a configured file path.
pub fn expand_path(text: &str) -> anyhow::Result<PathBuf> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| anyhow::anyhow!("path {text:?}: `${{` without `}}`"))?;
        let name = &after[..end];
        let value = std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                anyhow::anyhow!("path {text:?}: environment variable {name} is not set")
            })?;
        out.push_str(&value.to_string_lossy());
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(PathBuf::from(out))
}

/// Largest secret or CA file read.
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// Reads a secret from the environment variable `env` or the file `file`
/// (one of them is set; trailing line ends removed). Messages name the
/// source, never the value.
fn read_secret(what: &str, env: Option<&str>, file: Option<&str>) -> anyhow::Result<SecretString> {
    let value = match (env, file) {
        (Some(var), _) => std::env::var(var)
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| anyhow::anyhow!("{what}: environment variable {var} is not set"))?,
        (None, Some(f)) => {
            let path = expand_path(f)?;
            let bytes = read_private(&path).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
            String::from_utf8(bytes)
                .map_err(|_| anyhow::anyhow!("{what}: {} is not UTF-8", path.display()))?
        }
        (None, None) => anyhow::bail!("{what}: no source configured"),
    };
    let trimmed = value.trim_end_matches(['\r', '\n']);
    if trimmed.is_empty() {
        anyhow::bail!("{what}: the configured source is empty");
    }
    Ok(SecretString::from(trimmed.to_string()))
}

/// Reads a secret file as the credentials file is read: a regular file,
/// checked on the open handle (the file checked is the file read), owned by
/// the user running pushscan and closed to group and others, as ssh wants
/// of a private key. A password others can read is refused, not used.
fn read_private(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    // Do not hang on a FIFO: it is refused below as not a regular file.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let f = options
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    let meta = f
        .metadata()
        .map_err(|e| anyhow::anyhow!("cannot stat {}: {e}", path.display()))?;
    if !meta.is_file() {
        anyhow::bail!("{} is not a regular file", path.display());
    }
    check_private(path, &meta)?;
    read_capped_from(f, path)
}

#[cfg(unix)]
fn check_private(path: &Path, meta: &std::fs::Metadata) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let p = path.display();
    if meta.uid() != me {
        anyhow::bail!(
            "{p} belongs to uid {}, not to the user running pushscan (uid {me}); \
             a secret file must be your own private file: chown it, then chmod 600 {p}",
            meta.uid()
        );
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        anyhow::bail!(
            "{p} is accessible to group or others (mode {mode:04o}); refusing to use a \
             secret others can read: chmod 600 {p}"
        );
    }
    Ok(())
}

/// Off unix there are no mode bits; the file's ACL decides who reads it
/// (see the credentials file's note). Checked: that it is a regular file.
#[cfg(not(unix))]
fn check_private(_path: &Path, _meta: &std::fs::Metadata) -> anyhow::Result<()> {
    Ok(())
}

fn read_capped(path: &Path) -> anyhow::Result<Vec<u8>> {
    let f = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    read_capped_from(f, path)
}

/// At most [`MAX_SECRET_FILE`] bytes of the open file `f` (`path` names it in errors).
fn read_capped_from(f: std::fs::File, path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut buf = Vec::new();
    f.take(MAX_SECRET_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    if buf.len() as u64 > MAX_SECRET_FILE {
        anyhow::bail!(
            "{} is larger than {} KiB",
            path.display(),
            MAX_SECRET_FILE / 1024
        );
    }
    Ok(buf)
}

/// Reads a PEM CA file (`${NAME}` expands).
pub fn read_ca(file: &str) -> anyhow::Result<Vec<u8>> {
    let path = expand_path(file)?;
    let pem = read_capped(&path).map_err(|e| anyhow::anyhow!("ca_file: {e}"))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        anyhow::bail!("ca_file {}: no PEM certificate in it", path.display());
    }
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<NotifyConfig> {
        NotifyConfig::parse(text, Path::new("n.yml"))
    }

    const MAIL: &str = "mail:\n  smtp:\n    host: 127.0.0.1\n    port: 2525\n    username: u\n    password_env: P\n  from: a@example.com\n  to: [b@example.com]\n";

    #[test]
    fn minimal_mail_parses_with_defaults() {
        let c = parse(MAIL).unwrap();
        assert_eq!(c.on.value, vec![Event::NewDetection]);
        assert!(!c.repeat);
        let m = c.mail.unwrap();
        assert_eq!(m.smtp.security.value, Security::Starttls);
        assert_eq!(m.smtp.port(), 2525);
        assert_eq!(m.subject_prefix, "[pushscan]");
    }

    #[test]
    fn unknown_key_and_literal_password_are_located() {
        let e = parse(&format!("{MAIL}repaet: true\n"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("n.yml:9:1: "), "{e}");
        let e = parse(&MAIL.replace("password_env: P", "password: hunter2"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("n.yml:6:"), "{e}");
        assert!(e.contains("password_env") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn plain_smtp_and_http_webhooks_only_to_loopback() {
        let e = parse(
            &MAIL
                .replace("127.0.0.1", "mail.example.com")
                .replace("port: 2525", "security: none"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("n.yml:4:15: ") && e.contains("loopback"),
            "{e}"
        );
        parse(&MAIL.replace("port: 2525", "security: none")).unwrap();
        let e = parse("webhook:\n  url: http://example.com/x\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("n.yml:2:8: ") && e.contains("https"), "{e}");
        parse("webhook:\n  url: http://127.0.0.1:9/x\n").unwrap();
        parse("webhook:\n  url: https://example.com/x\n  format: slack\n").unwrap();
        let e = parse("webhook:\n  url: https://u:p@example.com/x\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("user:password"), "{e}");
    }

    #[test]
    fn slack_url_is_refused_literally_in_a_playbook() {
        let c = parse("webhook:\n  url_env: X\n  format: slack\n").unwrap();
        c.check(Origin::Playbook).unwrap();
        let c = parse("webhook:\n  url: https://hooks.example.com/T/B/secret\n  format: slack\n")
            .unwrap();
        let e = c.check(Origin::Playbook).unwrap_err();
        assert!(e.message.contains("secret"), "{e:?}");
    }

    #[test]
    fn the_readme_example_parses() {
        let readme = include_str!("../../README.md");
        let section = &readme[readme.find("## Alerts").unwrap()..];
        let start = section.find("```yaml\n").unwrap() + 8;
        let end = start + section[start..].find("```").unwrap();
        let c = parse(&section[start..end]).unwrap();
        assert_eq!(c.on.value, vec![Event::NewDetection, Event::Incomplete]);
        let m = c.mail.unwrap();
        assert_eq!((m.smtp.port(), m.to.value.len()), (587, 2));
        assert!(m.attach_report);
        let w = c.webhook.unwrap();
        assert_eq!((w.format.value, w.retries), (Format::Generic, 3));
    }

    #[test]
    fn secrets_come_from_env_or_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let pw = dir.path().join("pw");
            std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        std::env::set_var("PUSHSCAN_TEST_NOTIFY_DIR", dir.path());
        let c = parse(&MAIL.replace(
            "password_env: P",
            "password_file: ${PUSHSCAN_TEST_NOTIFY_DIR}/pw",
        ))
        .unwrap();
        let (user, pw) = c.mail.unwrap().smtp.password().unwrap().unwrap();
        use secrecy::ExposeSecret as _;
        assert_eq!((user.as_str(), pw.expose_secret()), ("u", "s3cret"));
        let c = parse(&MAIL.replace("password_env: P", "password_env: PUSHSCAN_TEST_UNSET_VAR"))
            .unwrap();
        let e = c.check_sources().unwrap_err().to_string();
        assert!(e.contains("PUSHSCAN_TEST_UNSET_VAR is not set"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn a_secret_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let yaml = MAIL.replace(
            "password_env: P",
            &format!("password_file: {}", pw.display()),
        );
        for mode in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(mode)).unwrap();
            let c = parse(&yaml).unwrap();
            let e = format!("{:#}", c.mail.unwrap().smtp.password().unwrap_err());
            assert!(e.contains(&format!("mode {mode:04o}")), "{e}");
            assert!(e.contains("chmod 600"), "{e}");
            assert!(!e.contains("s3cret"), "{e}");
        }
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = parse(&yaml).unwrap();
        assert!(c.mail.unwrap().smtp.password().unwrap().is_some());
    }
}
