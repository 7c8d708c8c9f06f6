//! An inventory read straight from Active Directory over LDAP, so that a
//! sweep can target "every enabled computer below OU=Tokyo" without anyone
//! exporting and maintaining a static host list that is stale the day after.
//!
//! The source is a small YAML file in the spirit of Ansible's
//! `microsoft.ad.ldap` plugin (`plugin: pushscan.ldap`, see `docs/ldap.md`).
//! It names the domain controllers, the search bases and the bind account,
//! never the password: that comes from an environment variable, and a
//! `password:` key is refused with its file:line:col. Transport security is
//! not optional: LDAPS or StartTLS, certificates always verified (against
//! `ca_file` or the system roots); a plain `ldap://` URL without StartTLS is
//! refused before any connection, because a simple bind would put the
//! password on the wire in clear.
//!
//! Active Directory returns at most 1,000 entries per response, so the
//! search is paged (RFC 2696) and the loop follows the server's cookie until
//! it is empty, whatever page size the server actually used. Everything the
//! directory returns is treated as untrusted input, as host output is
//! elsewhere in pushscan: the number of entries, pages and value sizes are
//! capped, a computer whose `dNSHostName` is not a valid host name is
//! skipped with a warning (its name would otherwise reach connections,
//! file names and the terminal), and group names are sanitized. The result
//! is built with the same `Builder` as the YAML and INI inventories, so it
//! is an ordinary [`Inventory`]: hosts, `ou_*` groups nested like the OUs
//! (`--limit ou_tokyo` selects everything below OU=Tokyo), and variables.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ldap3::controls::{PagedResults, RawControl};
use ldap3::{LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry};
use serde::Serialize;
use serde_json::Value;
use serde_saphyr::MessageFormatter as _;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{Builder, Inventory, InventoryError, Loc, VarDef};
use crate::located::{Key, Kind, Node};
use crate::sanitize;
use crate::transport::{self, Transport};

/// Enabled computer accounts: bit 2 of `userAccountControl` is
/// ACCOUNTDISABLE, tested with AD's bitwise-AND matching rule.
pub const DEFAULT_FILTER: &str = "(&(objectCategory=computer)(objectClass=computer)\
                                  (!(userAccountControl:1.2.840.113556.1.4.803:=2)))";
/// The environment variable holding the bind password unless
/// `password_env` names another.
pub const DEFAULT_PASSWORD_ENV: &str = "PUSHSCAN_LDAP_PASSWORD";
pub const DEFAULT_PAGE_SIZE: u32 = 500;
/// Active Directory's MaxPageSize; asking for more gets 1,000 anyway.
pub const MAX_PAGE_SIZE: u32 = 1000;
pub const DEFAULT_MAX_HOSTS: usize = 100_000;
const MAX_MAX_HOSTS: usize = 1_000_000;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// The longest attribute value kept as a variable (characters).
pub const MAX_VALUE_CHARS: usize = 1024;
/// Values kept per multi-valued attribute.
const MAX_VALUES_PER_ATTRIBUTE: usize = 64;
/// A longer distinguished name is not a computer we want to know about.
const MAX_DN_CHARS: usize = 2048;
/// The paged-results cookie is opaque, but a real one is tens of bytes.
const MAX_COOKIE_BYTES: usize = 4096;
/// A server that keeps sending empty pages with a new cookie is broken.
const MAX_EMPTY_PAGES: usize = 10;
/// Skipped entries and warnings kept in a [`LoadReport`] (the count is exact).
const MAX_REPORTED: usize = 1000;
/// Warnings `load` logs one by one before summarising the rest.
const MAX_LOGGED_WARNINGS: usize = 50;
/// Mapped attributes (`attributes:`).
const MAX_MAPPED_ATTRIBUTES: usize = 64;
/// The largest `ca_file` read.
const MAX_CA_FILE_BYTES: u64 = 1024 * 1024;
/// Stack for the config parser thread (see `yaml.rs`: reserved, not used).
const PARSER_STACK: usize = 64 * 1024 * 1024;

/// Keys that would hold the bind password: refused, with where they are.
const PASSWORD_KEYS: &[&str] = &[
    "password",
    "pass",
    "passwd",
    "bind_pw",
    "bindpw",
    "bind_password",
    "ldap_password",
];
/// Keys that would turn certificate verification off: refused.
const NO_VERIFY_KEYS: &[&str] = &[
    "cert_validation",
    "validate_certs",
    "verify",
    "tls_verify",
    "no_tls_verify",
    "insecure",
    "insecure_skip_tls_verify",
];
const KNOWN_KEYS: &[&str] = &[
    "plugin",
    "kind",
    "servers",
    "base_dn",
    "search_base",
    "ous",
    "tls",
    "ca_file",
    "bind_dn",
    "user",
    "password_env",
    "auth",
    "filter",
    "os_filter",
    "page_size",
    "max_hosts",
    "attributes",
    "timeout",
    "vars",
    "connection",
];
/// Variables every host gets from the directory; `attributes` cannot
/// remap them.
const COMPUTED_VARS: &[&str] = &["ou", "distinguished_name"];

// ---------------------------------------------------------------------------
// Public interface.

/// Whether an inventory file is an LDAP source: a top-level
/// `plugin: pushscan.ldap` or `kind: ldap` (block YAML, or a JSON
/// object). Cheap: it does not parse a static inventory.
pub fn is_ldap_source(text: &str) -> bool {
    let mut first = true;
    for raw in text.lines() {
        let line = raw.trim_start_matches('\u{feff}');
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t == "---" || t.starts_with('%') {
            continue;
        }
        if first && t.starts_with('{') {
            return flow_is_ldap(text);
        }
        first = false;
        // Only unindented keys are top-level.
        if line.starts_with([' ', '\t', '-']) {
            continue;
        }
        let Some((key, value)) = t.split_once(':') else {
            continue;
        };
        let key = unquote(key.trim());
        let value = value.split(" #").next().unwrap_or("").trim();
        let value = unquote(value);
        if (key == "plugin" && value == PLUGIN_NAME) || (key == "kind" && value == "ldap") {
            return true;
        }
    }
    false
}

const PLUGIN_NAME: &str = "pushscan.ldap";

fn unquote(s: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = s.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner;
        }
    }
    s
}

fn flow_is_ldap(text: &str) -> bool {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text.trim_start_matches('\u{feff}'))
    else {
        return false;
    };
    map.get("plugin").and_then(Value::as_str) == Some(PLUGIN_NAME)
        || map.get("kind").and_then(Value::as_str) == Some("ldap")
}

/// Reads the computers the LDAP source at `path` (whose text is `text`)
/// describes and returns them as an inventory. Skipped computers and other
/// warnings are logged with `tracing::warn!`; [`load_with_report`] returns
/// them instead, with the paging statistics.
pub async fn load(path: &Path, text: &str) -> Result<Inventory, InventoryError> {
    let (inventory, report) = load_with_report(path, text).await?;
    for w in report.warnings.iter().take(MAX_LOGGED_WARNINGS) {
        tracing::warn!(target: "pushscan::inventory::ldap", source = %path.display(), "{w}");
    }
    if report.warnings_total > MAX_LOGGED_WARNINGS {
        tracing::warn!(
            target: "pushscan::inventory::ldap",
            source = %path.display(),
            "{} more LDAP inventory warnings not shown ({} computers skipped in all)",
            report.warnings_total - MAX_LOGGED_WARNINGS,
            report.skipped_total,
        );
    }
    tracing::debug!(
        target: "pushscan::inventory::ldap",
        server = %report.server,
        pages = report.pages,
        entries = report.entries,
        hosts = report.hosts,
        elapsed_ms = report.elapsed_ms,
        "LDAP inventory loaded"
    );
    Ok(inventory)
}

/// What a load did, for callers and tests that want more than the
/// inventory: which server answered, how many pages the paged search took,
/// and every computer skipped with the reason.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    /// The server URL that answered.
    pub server: String,
    /// How the connection was protected: `ldaps` or `starttls`.
    pub tls: String,
    /// Servers tried before it, each with why it could not be used.
    pub failed_servers: Vec<String>,
    /// The search bases used (from the file, or the server's
    /// `defaultNamingContext`).
    pub bases: Vec<String>,
    /// Search result pages received, over all bases.
    pub pages: usize,
    /// Entries on the largest page.
    pub largest_page: usize,
    /// Entries returned (continuation references not counted).
    pub entries: usize,
    /// Continuation references (referrals to other partitions) ignored.
    pub references: usize,
    /// Hosts in the inventory.
    pub hosts: usize,
    /// Computers left out, with the reason (the first [`MAX_REPORTED`]).
    pub skipped: Vec<Skipped>,
    pub skipped_total: usize,
    /// Human-readable warnings (skips, dropped values, renamed groups), the
    /// first [`MAX_REPORTED`]; `warnings_total` counts all.
    pub warnings: Vec<String>,
    pub warnings_total: usize,
    pub elapsed_ms: u128,
}

/// A computer entry left out of the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The entry's DN, escaped for display and capped.
    pub dn: String,
    pub reason: String,
}

/// Like [`load`], also returning the [`LoadReport`] (nothing is logged).
pub async fn load_with_report(
    path: &Path,
    text: &str,
) -> Result<(Inventory, LoadReport), InventoryError> {
    let started = Instant::now();
    let cfg = parse_config(path, text)?;
    let secret = match &cfg.auth {
        Auth::Simple { password_env, .. } => Some(read_password(path, password_env)?),
        Auth::Kerberos => None,
    };
    let tls = tls_config(path, &cfg)?;

    let mut report = LoadReport::default();
    let mut fetched = None;
    for server in &cfg.servers {
        match query(
            &cfg,
            server,
            tls.clone(),
            secret.as_ref().map(|s| s.as_str()),
        )
        .await
        {
            Ok(f) => {
                report.server = server.url.clone();
                report.tls = server.tls.as_str().to_string();
                fetched = Some(f);
                break;
            }
            Err(Failure::Fatal(msg)) => {
                return Err(InventoryError::new(path, format!("{}: {msg}", server.url)));
            }
            Err(Failure::TryNext(msg)) => {
                report.failed_servers.push(format!("{}: {msg}", server.url))
            }
        }
    }
    let Some(fetched) = fetched else {
        let what = if cfg.servers.len() == 1 {
            "the LDAP server could not be used"
        } else {
            "no LDAP server could be used"
        };
        return Err(InventoryError::new(
            path,
            format!("{what}: {}", report.failed_servers.join("; ")),
        ));
    };
    report.bases = fetched.bases.clone();
    report.pages = fetched.pages;
    report.largest_page = fetched.largest_page;
    report.entries = fetched.entries.len();
    report.references = fetched.references;
    let inventory = build(path, &cfg, fetched.entries, &mut report)?;
    report.hosts = inventory.hosts.len();
    report.elapsed_ms = started.elapsed().as_millis();
    Ok((inventory, report))
}

impl LoadReport {
    fn warn(&mut self, message: String) {
        self.warnings_total += 1;
        if self.warnings.len() < MAX_REPORTED {
            self.warnings.push(message);
        }
    }

    fn skip(&mut self, dn: &str, reason: String) {
        let dn = sanitize::display(dn, 200);
        self.warn(format!("skipped computer {dn}: {reason}"));
        self.skipped_total += 1;
        if self.skipped.len() < MAX_REPORTED {
            self.skipped.push(Skipped { dn, reason });
        }
    }
}

// ---------------------------------------------------------------------------
// The configuration file.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsMode {
    Ldaps,
    StartTls,
}

impl TlsMode {
    fn as_str(self) -> &'static str {
        match self {
            TlsMode::Ldaps => "ldaps",
            TlsMode::StartTls => "starttls",
        }
    }
}

/// One domain controller to try.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Server {
    /// `ldaps://host:port` or `ldap://host:port` (then StartTLS).
    url: String,
    host: String,
    tls: TlsMode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Auth {
    /// Simple bind (DN, UPN or DOMAIN\user) with the password from an
    /// environment variable.
    Simple { name: String, password_env: String },
    /// SASL GSSAPI with the caller's Kerberos ticket (feature `kerberos`).
    Kerberos,
}

#[derive(Debug)]
struct Mapped {
    var: String,
    attribute: String,
    loc: Option<Loc>,
}

#[derive(Debug)]
struct Config {
    servers: Vec<Server>,
    /// Empty: ask the server for its `defaultNamingContext`.
    bases: Vec<String>,
    ca_file: Option<(PathBuf, Option<Loc>)>,
    auth: Auth,
    filter: String,
    page_size: u32,
    max_hosts: usize,
    timeout: Duration,
    /// Host variable <- LDAP attribute, `os <- operatingSystem` first.
    attributes: Vec<Mapped>,
    vars: Vec<(String, VarDef)>,
    connection: (Transport, Option<Loc>),
}

fn to_json(node: Node) -> Value {
    match node.kind {
        Kind::Null => Value::Null,
        Kind::Bool(b) => Value::Bool(b),
        Kind::Int(i) => Value::from(i),
        Kind::Float(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(f.to_string())),
        Kind::BigInt(s) => Value::String(s),
        Kind::Str(s) => Value::String(s.to_string()),
        Kind::Seq(items) => Value::Array(items.into_iter().map(to_json).collect()),
        Kind::Map(entries) => Value::Object(
            entries
                .into_iter()
                .map(|(k, v)| (k.name, to_json(v)))
                .collect(),
        ),
    }
}

/// Parses and checks the source file; nothing is read from the
/// environment or the network here.
fn parse_config(path: &Path, text: &str) -> Result<Config, InventoryError> {
    // A dedicated thread with a large reserved stack, as in yaml.rs: the
    // parser recurses per nesting level.
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("inventory-ldap-config".into())
            .stack_size(PARSER_STACK)
            .spawn_scoped(scope, || parse_config_here(path, text))
            .map_err(|e| InventoryError::new(path, format!("cannot start the YAML parser: {e}")))?;
        worker.join().unwrap_or_else(|_| {
            Err(InventoryError::new(
                path,
                "internal error: the YAML parser panicked on this input",
            ))
        })
    })
}

struct Ctx<'a> {
    path: &'a Path,
}

impl Ctx<'_> {
    fn err(&self, loc: Option<Loc>, msg: impl Into<String>) -> InventoryError {
        InventoryError::at(self.path, loc, msg)
    }

    fn string(&self, key: &Key, node: Node) -> Result<(String, Option<Loc>), InventoryError> {
        match node.kind {
            Kind::Str(s) if !s.trim().is_empty() => Ok((s.trim().to_string(), node.loc)),
            Kind::Str(_) => Err(self.err(node.loc, format!("`{}` is empty", key.name))),
            other => Err(self.err(
                node.loc,
                format!("`{}` must be a string, found {}", key.name, other.what()),
            )),
        }
    }

    /// A string or a list of strings.
    fn strings(&self, key: &Key, node: Node) -> Result<Vec<(String, Option<Loc>)>, InventoryError> {
        match node.kind {
            Kind::Seq(items) => {
                if items.is_empty() {
                    return Err(self.err(node.loc, format!("`{}` is an empty list", key.name)));
                }
                items.into_iter().map(|n| self.string(key, n)).collect()
            }
            _ => Ok(vec![self.string(key, node)?]),
        }
    }

    fn integer(&self, key: &Key, node: &Node, min: u64, max: u64) -> Result<u64, InventoryError> {
        let n = match &node.kind {
            Kind::Int(i) => u64::try_from(*i).ok(),
            Kind::Str(s) => s.trim().parse::<u64>().ok(),
            Kind::BigInt(s) => s.parse::<u64>().ok(),
            _ => None,
        };
        match n {
            Some(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(self.err(
                node.loc,
                format!("`{}` must be an integer from {min} to {max}", key.name),
            )),
        }
    }
}

fn parse_config_here(path: &Path, text: &str) -> Result<Config, InventoryError> {
    let cx = Ctx { path };
    let root: Node = serde_saphyr::from_str(text).map_err(|e| {
        let loc = e.location().as_ref().and_then(Loc::of);
        let msg: String = serde_saphyr::DefaultMessageFormatter
            .format_message(e.without_snippet())
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        cx.err(loc, format!("invalid YAML: {msg}"))
    })?;
    let entries = match root.kind {
        Kind::Map(entries) => entries,
        other => {
            return Err(cx.err(
                root.loc,
                format!(
                    "an LDAP inventory source must be a mapping (plugin: pushscan.ldap, servers: ...), found {}",
                    other.what()
                ),
            ))
        }
    };

    let mut seen: HashSet<String> = HashSet::new();
    let mut identified = false;
    let mut servers: Vec<(String, Option<Loc>)> = Vec::new();
    let mut servers_loc = None;
    let mut bases: Vec<(String, Option<Loc>)> = Vec::new();
    let mut tls: Option<TlsMode> = None;
    let mut ca_file = None;
    let mut bind_name: Option<(String, Option<Loc>, &'static str)> = None;
    let mut password_env = (DEFAULT_PASSWORD_ENV.to_string(), None);
    let mut kerberos: Option<Option<Loc>> = None;
    let mut filter: Option<(String, Option<Loc>)> = None;
    let mut os_filter: Vec<(String, Option<Loc>)> = Vec::new();
    let mut page_size = DEFAULT_PAGE_SIZE;
    let mut max_hosts = DEFAULT_MAX_HOSTS;
    let mut timeout = DEFAULT_TIMEOUT;
    let mut attributes = vec![Mapped {
        var: "os".into(),
        attribute: "operatingSystem".into(),
        loc: None,
    }];
    let mut vars: Vec<(String, VarDef)> = Vec::new();
    let mut connection: Option<(Transport, Option<Loc>)> = None;

    for (key, node) in entries {
        let name = key.name.as_str();
        let lower = name.to_ascii_lowercase();
        if PASSWORD_KEYS.contains(&lower.as_str()) {
            return Err(cx.err(
                key.loc,
                format!(
                    "`{name}` is set: the LDAP bind password is never read from a file; put it in \
                     the environment variable named by `password_env` (default \
                     {DEFAULT_PASSWORD_ENV}) and remove this key"
                ),
            ));
        }
        if NO_VERIFY_KEYS.contains(&lower.as_str()) {
            return Err(cx.err(
                key.loc,
                format!(
                    "`{name}`: certificate verification cannot be turned off for LDAP inventories; \
                     give the CA that issued the domain controllers' certificates with `ca_file`"
                ),
            ));
        }
        if !KNOWN_KEYS.contains(&name) {
            return Err(cx.err(
                key.loc,
                format!(
                    "unknown key `{name}` in an LDAP inventory source; valid keys: {}",
                    KNOWN_KEYS.join(", ")
                ),
            ));
        }
        if !seen.insert(name.to_string()) {
            return Err(cx.err(key.loc, format!("`{name}` is given twice")));
        }
        match name {
            "plugin" => {
                let (v, loc) = cx.string(&key, node)?;
                if v != PLUGIN_NAME {
                    return Err(cx.err(
                        loc,
                        format!(
                            "plugin {v:?} is not supported here: write `plugin: {PLUGIN_NAME}`"
                        ),
                    ));
                }
                identified = true;
            }
            "kind" => {
                let (v, loc) = cx.string(&key, node)?;
                if v != "ldap" {
                    return Err(cx.err(
                        loc,
                        format!("kind {v:?} is not supported: write `kind: ldap`"),
                    ));
                }
                identified = true;
            }
            "servers" => {
                servers_loc = node.loc.or(key.loc);
                servers = cx.strings(&key, node)?;
            }
            "base_dn" => bases.push(cx.string(&key, node)?),
            "search_base" | "ous" => bases.extend(cx.strings(&key, node)?),
            "tls" => {
                let (v, loc) = cx.string(&key, node)?;
                tls = Some(match v.to_ascii_lowercase().as_str() {
                    "ldaps" => TlsMode::Ldaps,
                    "starttls" | "start_tls" => TlsMode::StartTls,
                    _ => {
                        return Err(cx.err(
                            loc,
                            format!(
                                "`tls` must be `ldaps` or `starttls`, found {v:?} (plain LDAP is \
                                 refused: a simple bind would send the password in clear)"
                            ),
                        ))
                    }
                });
            }
            "ca_file" => {
                let (v, loc) = cx.string(&key, node)?;
                let p = Path::new(&v);
                let resolved = if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    match path.parent() {
                        Some(dir) if !dir.as_os_str().is_empty() => dir.join(p),
                        _ => p.to_path_buf(),
                    }
                };
                ca_file = Some((resolved, loc));
            }
            "bind_dn" | "user" => {
                let (v, loc) = cx.string(&key, node)?;
                if let Some((_, _, other)) = &bind_name {
                    return Err(cx.err(
                        key.loc,
                        format!("both `{other}` and `{name}` are set: give one bind identity"),
                    ));
                }
                if v.chars().any(char::is_control) || v.chars().count() > 1024 {
                    return Err(cx.err(loc, format!("`{name}` is not a usable bind name")));
                }
                bind_name = Some((v, loc, if name == "user" { "user" } else { "bind_dn" }));
            }
            "password_env" => {
                let (v, loc) = cx.string(&key, node)?;
                let valid = v.len() <= 128
                    && v.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                    && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    return Err(cx.err(
                        loc,
                        format!(
                            "`password_env` must name an environment variable (like \
                             {DEFAULT_PASSWORD_ENV}), found {v:?}; the password itself never \
                             goes in this file"
                        ),
                    ));
                }
                password_env = (v, loc);
            }
            "auth" => {
                let (v, loc) = cx.string(&key, node)?;
                match v.to_ascii_lowercase().as_str() {
                    "simple" => {}
                    "kerberos" | "gssapi" => kerberos = Some(loc),
                    _ => {
                        return Err(cx.err(
                            loc,
                            format!("`auth` must be `simple` or `kerberos`, found {v:?}"),
                        ))
                    }
                }
            }
            "filter" => {
                let (v, loc) = cx.string(&key, node)?;
                let v = if v.starts_with('(') {
                    v
                } else {
                    format!("({v})")
                };
                if ldap3::parse_filter(&v).is_err() {
                    return Err(cx.err(loc, format!("`filter` is not a valid LDAP filter: {v:?}")));
                }
                filter = Some((v, loc));
            }
            "os_filter" => os_filter = cx.strings(&key, node)?,
            "page_size" => {
                page_size = cx.integer(&key, &node, 1, u64::from(MAX_PAGE_SIZE))? as u32;
            }
            "max_hosts" => {
                max_hosts = cx.integer(&key, &node, 1, MAX_MAX_HOSTS as u64)? as usize;
            }
            "timeout" => {
                let parsed = match &node.kind {
                    Kind::Int(i) if *i > 0 => Ok(Duration::from_secs(i.unsigned_abs())),
                    Kind::Str(s) => crate::units::parse_duration(s),
                    other => Err(format!("found {}", other.what())),
                };
                timeout = match parsed {
                    Ok(d) if d >= Duration::from_secs(1) && d <= MAX_TIMEOUT => d,
                    Ok(_) => {
                        return Err(cx.err(node.loc, "`timeout` must be between 1s and 10m"));
                    }
                    Err(e) => {
                        return Err(cx.err(
                            node.loc,
                            format!("`timeout` must be a duration like 30s or 2m: {e}"),
                        ))
                    }
                };
            }
            "attributes" => {
                let items = match node.kind {
                    Kind::Map(items) => items,
                    Kind::Null => Vec::new(),
                    other => {
                        return Err(cx.err(
                            node.loc,
                            format!(
                                "`attributes` must be a mapping of host variable: LDAP attribute, \
                                 found {}",
                                other.what()
                            ),
                        ))
                    }
                };
                if items.len() > MAX_MAPPED_ATTRIBUTES {
                    return Err(cx.err(
                        node.loc,
                        format!("at most {MAX_MAPPED_ATTRIBUTES} attributes can be mapped"),
                    ));
                }
                for (var, value) in items {
                    let (attribute, aloc) = cx.string(&var, value)?;
                    if !is_identifier(&var.name) {
                        return Err(cx.err(
                            var.loc,
                            format!(
                                "`{}` is not a valid variable name (letters, digits, _; not \
                                 starting with a digit)",
                                var.name
                            ),
                        ));
                    }
                    if COMPUTED_VARS.contains(&var.name.as_str()) {
                        return Err(cx.err(
                            var.loc,
                            format!(
                                "`{}` is set from the entry's DN and cannot be mapped",
                                var.name
                            ),
                        ));
                    }
                    if !is_attribute_name(&attribute) {
                        return Err(
                            cx.err(aloc, format!("{attribute:?} is not an LDAP attribute name"))
                        );
                    }
                    attributes.retain(|m| m.var != var.name);
                    attributes.push(Mapped {
                        var: var.name,
                        attribute,
                        loc: var.loc,
                    });
                }
            }
            "vars" => {
                let items = match node.kind {
                    Kind::Map(items) => items,
                    Kind::Null => Vec::new(),
                    other => {
                        return Err(cx.err(
                            node.loc,
                            format!("`vars` must be a mapping, found {}", other.what()),
                        ))
                    }
                };
                for (var, value) in items {
                    let val_loc = value.loc;
                    let def = VarDef::new(to_json(value), var.loc, val_loc);
                    super::check_var(path, &var.name, &def)?;
                    vars.push((var.name, def));
                }
            }
            "connection" => {
                let (v, loc) = cx.string(&key, node)?;
                let c = transport::parse(&v).ok_or_else(|| {
                    cx.err(
                        loc,
                        format!(
                            "unsupported connection {v:?}: {}",
                            transport::choices(Transport::directory_default())
                        ),
                    )
                })?;
                connection = Some((c, loc));
            }
            _ => return Err(cx.err(key.loc, format!("internal: key `{name}` is not handled"))),
        }
    }

    if !identified {
        return Err(cx.err(
            None,
            format!("not an LDAP inventory source: `plugin: {PLUGIN_NAME}` (or `kind: ldap`) is missing"),
        ));
    }
    if servers.is_empty() {
        return Err(cx.err(
            servers_loc,
            "`servers` is missing: list the domain controllers, e.g. [ldaps://dc1.corp.example]",
        ));
    }
    let servers = servers
        .into_iter()
        .map(|(s, loc)| parse_server(&s, tls).map_err(|m| cx.err(loc, m)))
        .collect::<Result<Vec<_>, _>>()?;

    let mut unique_bases: Vec<String> = Vec::new();
    for (b, loc) in bases {
        if b.chars().count() > MAX_DN_CHARS || b.chars().any(char::is_control) {
            return Err(cx.err(loc, "search base is too long or holds control characters"));
        }
        parse_dn(&b).map_err(|e| cx.err(loc, format!("search base {b:?} is not a DN: {e}")))?;
        if !unique_bases.iter().any(|u| u.eq_ignore_ascii_case(&b)) {
            unique_bases.push(b);
        }
    }

    let auth = match (kerberos, bind_name) {
        (Some(loc), Some((_, _, key))) => {
            return Err(cx.err(
                loc,
                format!("`auth: kerberos` uses the Kerberos ticket of the caller: remove `{key}`"),
            ))
        }
        (Some(loc), None) => {
            if !cfg!(feature = "kerberos") {
                return Err(cx.err(loc, KERBEROS_UNSUPPORTED));
            }
            Auth::Kerberos
        }
        (None, Some((name, _, _))) => Auth::Simple {
            name,
            password_env: password_env.0,
        },
        (None, None) => {
            return Err(cx.err(
                None,
                "no bind identity: set `bind_dn` (a DN) or `user` (user@corp.example or \
                 CORP\\user); anonymous binds cannot list computers in Active Directory",
            ))
        }
    };

    let mut filter = filter.map_or_else(|| DEFAULT_FILTER.to_string(), |(f, _)| f);
    if !os_filter.is_empty() {
        let mut clauses = Vec::new();
        for (pattern, loc) in &os_filter {
            if pattern.chars().any(char::is_control) || pattern.len() > 256 {
                return Err(cx.err(*loc, "`os_filter` is too long or holds control characters"));
            }
            clauses.push(format!(
                "(operatingSystem={})",
                escape_with_wildcards(pattern)
            ));
        }
        let os = if clauses.len() == 1 {
            clauses.remove(0)
        } else {
            format!("(|{})", clauses.concat())
        };
        filter = format!("(&{filter}{os})");
        if ldap3::parse_filter(&filter).is_err() {
            return Err(cx.err(
                os_filter.first().and_then(|f| f.1),
                "`os_filter` does not make a valid LDAP filter",
            ));
        }
    }

    let connection = match connection {
        Some(c) => {
            if vars.iter().any(|(k, _)| k == "ansible_connection") {
                return Err(cx.err(
                    c.1,
                    "both `connection` and `vars: ansible_connection` are set: keep one",
                ));
            }
            c
        }
        None => (Transport::directory_default(), None),
    };

    Ok(Config {
        servers,
        bases: unique_bases,
        ca_file,
        auth,
        filter,
        page_size,
        max_hosts,
        timeout,
        attributes,
        vars,
        connection,
    })
}

const PLAIN_LDAP_REFUSED: &str =
    "plain ldap:// without StartTLS is refused, because a simple bind would send the password \
     in clear; use ldaps://HOST (port 636) or set `tls: starttls`";

const KERBEROS_UNSUPPORTED: &str =
    "`auth: kerberos` (SASL GSSAPI bind) is not supported by this build of pushscan: use a \
     simple bind over LDAPS/StartTLS with `bind_dn` or `user` (see docs/ldap.md)";

fn is_identifier(s: &str) -> bool {
    s.len() <= 128
        && s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// An attribute description: a name (`dNSHostName`) or a numeric OID.
fn is_attribute_name(s: &str) -> bool {
    if s.is_empty() || s.len() > 128 {
        return false;
    }
    let name = s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let oid = s
        .split('.')
        .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    name || oid
}

/// RFC 4515 escaping of an assertion value, keeping `*` as the wildcard.
fn escape_with_wildcards(pattern: &str) -> String {
    pattern
        .split('*')
        .map(|piece| ldap3::ldap_escape(piece).into_owned())
        .collect::<Vec<_>>()
        .join("*")
}

/// `ldaps://host[:port][/]`, `ldap://host[:port]` (StartTLS) or a bare
/// `host[:port]` (then `tls` decides, LDAPS by default).
fn parse_server(s: &str, tls: Option<TlsMode>) -> Result<Server, String> {
    let (scheme, rest) = match s.split_once("://") {
        Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
        None => (None, s),
    };
    let mode = match (scheme.as_deref(), tls) {
        (Some("ldaps"), None | Some(TlsMode::Ldaps)) => TlsMode::Ldaps,
        (Some("ldaps"), Some(TlsMode::StartTls)) => {
            return Err(format!(
                "{s:?} is an ldaps:// URL but `tls: starttls` is set: StartTLS needs ldap://HOST"
            ))
        }
        (Some("ldap"), Some(TlsMode::StartTls)) => TlsMode::StartTls,
        (Some("ldap"), _) => return Err(format!("{s:?}: {PLAIN_LDAP_REFUSED}")),
        (Some(other), _) => {
            return Err(format!(
                "{s:?}: unsupported scheme {other:?} (ldaps://, or ldap:// with `tls: starttls`)"
            ))
        }
        (None, mode) => mode.unwrap_or(TlsMode::Ldaps),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#', '@', ' ']) || rest.chars().any(char::is_control) {
        return Err(format!(
            "{s:?}: a server is a URL like ldaps://dc1.corp.example[:636], without path, query or \
             user"
        ));
    }
    if rest.starts_with('[') {
        return Err(format!(
            "{s:?}: IPv6 literals are not supported; use the host name"
        ));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => {
            let port = p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{s:?}: invalid port {p:?}"))?;
            (h, Some(port))
        }
        None => (rest, None),
    };
    let host = host.to_ascii_lowercase();
    if host.parse::<std::net::Ipv4Addr>().is_err() && valid_host_name(&host).is_none() {
        return Err(format!(
            "{s:?}: {host:?} is not a valid host name or IPv4 address"
        ));
    }
    let port = port.unwrap_or(match mode {
        TlsMode::Ldaps => 636,
        TlsMode::StartTls => 389,
    });
    let url = match mode {
        TlsMode::Ldaps => format!("ldaps://{host}:{port}"),
        TlsMode::StartTls => format!("ldap://{host}:{port}"),
    };
    Ok(Server {
        url,
        host,
        tls: mode,
    })
}

fn read_password(path: &Path, var: &str) -> Result<Zeroizing<String>, InventoryError> {
    match std::env::var(var) {
        Ok(p) if !p.is_empty() => Ok(Zeroizing::new(p)),
        // An empty password would be an "unauthenticated bind" (RFC 4513
        // 5.1.2), which many servers accept as anonymous: never send one.
        Ok(_) => Err(InventoryError::new(
            path,
            format!("the LDAP bind password in {var} is empty"),
        )),
        Err(std::env::VarError::NotUnicode(_)) => Err(InventoryError::new(
            path,
            format!("the LDAP bind password in {var} is not valid UTF-8"),
        )),
        Err(std::env::VarError::NotPresent) => Err(InventoryError::new(
            path,
            format!(
                "the LDAP bind password is not set: export {var} (the variable named by \
                 `password_env`)"
            ),
        )),
    }
}

/// The TLS client configuration: the CAs in `ca_file`, or the system's
/// roots. There is no way to turn verification off.
fn tls_config(path: &Path, cfg: &Config) -> Result<Arc<rustls::ClientConfig>, InventoryError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::CertificateDer;

    let mut roots = rustls::RootCertStore::empty();
    match &cfg.ca_file {
        Some((file, loc)) => {
            let err = |m: String| InventoryError::at(path, *loc, m);
            let meta = std::fs::metadata(file)
                .map_err(|e| err(format!("ca_file {}: {e}", file.display())))?;
            if meta.len() > MAX_CA_FILE_BYTES {
                return Err(err(format!(
                    "ca_file {} is over 1 MiB: not a PEM CA bundle",
                    file.display()
                )));
            }
            let pem =
                std::fs::read(file).map_err(|e| err(format!("ca_file {}: {e}", file.display())))?;
            let mut added = 0usize;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert
                    .map_err(|e| err(format!("ca_file {}: unreadable PEM: {e}", file.display())))?;
                roots.add(cert).map_err(|e| {
                    err(format!(
                        "ca_file {}: unusable certificate: {e}",
                        file.display()
                    ))
                })?;
                added += 1;
            }
            if added == 0 {
                return Err(err(format!(
                    "ca_file {}: no PEM certificate (-----BEGIN CERTIFICATE-----) found",
                    file.display()
                )));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs().certs;
            if native.is_empty() {
                return Err(InventoryError::new(
                    path,
                    "no `ca_file` and no system CA certificates found: give the CA that issued \
                     the domain controllers' certificates with `ca_file`",
                ));
            }
            for cert in native {
                // A broken system root is not a reason to fail.
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| InventoryError::new(path, format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

// ---------------------------------------------------------------------------
// Talking to the directory.

/// Why a server could not be used: `TryNext` moves on to the next server
/// (unreachable, TLS refused, busy); `Fatal` stops (a wrong password would
/// only count towards the account's lockout on every other DC, and a bad
/// search base is bad everywhere).
enum Failure {
    TryNext(String),
    Fatal(String),
}

/// One computer entry as returned, before any check.
struct RawEntry {
    dn: String,
    /// Attribute name lowercased -> values.
    attrs: HashMap<String, Vec<Value>>,
}

struct Fetched {
    bases: Vec<String>,
    entries: Vec<RawEntry>,
    pages: usize,
    largest_page: usize,
    references: usize,
}

async fn query(
    cfg: &Config,
    server: &Server,
    tls: Arc<rustls::ClientConfig>,
    password: Option<&str>,
) -> Result<Fetched, Failure> {
    let t = cfg.timeout;
    let settings = LdapConnSettings::new()
        .set_conn_timeout(t)
        .set_config(tls)
        .set_starttls(server.tls == TlsMode::StartTls);
    // The connect (TCP, StartTLS, TLS handshake) as a whole is bounded too.
    let (conn, mut ldap) =
        match tokio::time::timeout(t, LdapConnAsync::with_settings(settings, &server.url)).await {
            Err(_) => return Err(Failure::TryNext(format!("no connection within {t:?}"))),
            Ok(Err(e)) => return Err(Failure::TryNext(connect_error(&e, server))),
            Ok(Ok(pair)) => pair,
        };
    let driver = tokio::spawn(async move {
        if let Err(e) = conn.drive().await {
            tracing::debug!(target: "pushscan::inventory::ldap", "LDAP connection ended: {e}");
        }
    });
    let result = bind_and_search(cfg, server, &mut ldap, password).await;
    if result.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(2), ldap.unbind()).await;
    }
    driver.abort();
    result
}

async fn bind_and_search(
    cfg: &Config,
    server: &Server,
    ldap: &mut ldap3::Ldap,
    password: Option<&str>,
) -> Result<Fetched, Failure> {
    let t = cfg.timeout;
    match &cfg.auth {
        Auth::Simple { name, .. } => {
            let pw = password.unwrap_or_default();
            let res = ldap
                .with_timeout(t)
                .simple_bind(name, pw)
                .await
                .map_err(|e| Failure::TryNext(op_error("bind", &e, server)))?;
            if res.rc != 0 {
                let text = sanitize::display(res.text.trim(), 300);
                let why = match res.rc {
                    49 => "invalid credentials (wrong user or password, or the account is \
                           disabled, locked or expired)"
                        .to_string(),
                    8 => "the server requires stronger authentication".to_string(),
                    rc => format!("LDAP result {rc}"),
                };
                let msg = format!(
                    "bind as {:?} refused: {why} (server said: {text})",
                    sanitize::display(name, 200)
                );
                // Busy / unavailable DCs are worth skipping; the rest would
                // fail the same way everywhere.
                return Err(if matches!(res.rc, 51 | 52) {
                    Failure::TryNext(msg)
                } else {
                    Failure::Fatal(msg)
                });
            }
        }
        Auth::Kerberos => kerberos_bind(ldap, server).await?,
    }

    let bases = if cfg.bases.is_empty() {
        vec![default_naming_context(ldap, t).await?]
    } else {
        cfg.bases.clone()
    };
    let mut attrs: Vec<String> = vec!["dNSHostName".to_string()];
    for m in &cfg.attributes {
        if !attrs.iter().any(|a| a.eq_ignore_ascii_case(&m.attribute)) {
            attrs.push(m.attribute.clone());
        }
    }
    let mut fetched = Fetched {
        bases: bases.clone(),
        entries: Vec::new(),
        pages: 0,
        largest_page: 0,
        references: 0,
    };
    let mut seen_dns: HashSet<String> = HashSet::new();
    for base in &bases {
        paged_search(cfg, ldap, base, &attrs, &mut fetched, &mut seen_dns).await?;
    }
    Ok(fetched)
}

#[cfg(feature = "kerberos")]
async fn kerberos_bind(ldap: &mut ldap3::Ldap, server: &Server) -> Result<(), Failure> {
    let res = ldap
        .sasl_gssapi_bind(&server.host)
        .await
        .map_err(|e| Failure::Fatal(format!("Kerberos (GSSAPI) bind failed: {e}")))?;
    if res.rc != 0 {
        return Err(Failure::Fatal(format!(
            "Kerberos (GSSAPI) bind refused: LDAP result {} ({})",
            res.rc,
            sanitize::display(res.text.trim(), 300)
        )));
    }
    Ok(())
}

#[cfg(not(feature = "kerberos"))]
async fn kerberos_bind(_ldap: &mut ldap3::Ldap, _server: &Server) -> Result<(), Failure> {
    Err(Failure::Fatal(KERBEROS_UNSUPPORTED.to_string()))
}

/// The domain's DN from the rootDSE, when no search base is configured.
async fn default_naming_context(ldap: &mut ldap3::Ldap, t: Duration) -> Result<String, Failure> {
    let res = ldap
        .with_timeout(t)
        .search(
            "",
            Scope::Base,
            "(objectClass=*)",
            vec!["defaultNamingContext"],
        )
        .await
        .map_err(|e| Failure::Fatal(format!("reading the rootDSE failed: {e}")))?;
    let (entries, _) = res
        .success()
        .map_err(|e| Failure::Fatal(format!("reading the rootDSE failed: {e}")))?;
    let base = entries
        .into_iter()
        .map(SearchEntry::construct)
        .find_map(|e| {
            e.attrs
                .into_iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("defaultNamingContext"))
                .and_then(|(_, v)| v.into_iter().next())
        })
        .ok_or_else(|| {
            Failure::Fatal(
                "the server names no defaultNamingContext: set `base_dn` or `ous`".to_string(),
            )
        })?;
    if base.chars().count() > MAX_DN_CHARS || parse_dn(&base).is_err() {
        return Err(Failure::Fatal(
            "the server's defaultNamingContext is not a usable DN: set `base_dn` or `ous`"
                .to_string(),
        ));
    }
    Ok(base)
}

const PAGED_RESULTS_OID: &str = "1.2.840.113556.1.4.319";

/// One base, page by page (RFC 2696), until the server's cookie is empty.
async fn paged_search(
    cfg: &Config,
    ldap: &mut ldap3::Ldap,
    base: &str,
    attrs: &[String],
    fetched: &mut Fetched,
    seen_dns: &mut HashSet<String>,
) -> Result<(), Failure> {
    let mut cookie: Vec<u8> = Vec::new();
    let mut empty_pages = 0usize;
    loop {
        let mut control: RawControl = PagedResults {
            size: cfg.page_size as i32,
            cookie: std::mem::take(&mut cookie),
        }
        .into();
        // Critical: a server that cannot page must say so rather than cut
        // the result at its size limit.
        control.crit = true;
        let mut stream = ldap
            .with_controls(control)
            .with_timeout(cfg.timeout)
            .streaming_search(base, Scope::Subtree, &cfg.filter, attrs.to_vec())
            .await
            .map_err(|e| search_failure(base, &e))?;
        let mut on_page = 0usize;
        loop {
            let entry = match stream.next().await {
                Ok(Some(entry)) => entry,
                Ok(None) => break,
                Err(e) => return Err(search_failure(base, &e)),
            };
            if entry.is_ref() || entry.is_intermediate() {
                fetched.references += 1;
                continue;
            }
            on_page += 1;
            let entry = SearchEntry::construct(entry);
            // Overlapping bases (`ous: [OU=Tokyo, OU=Sales,OU=Tokyo]`)
            // return the same entry twice: keep it once.
            if !seen_dns.insert(entry.dn.to_ascii_lowercase()) {
                continue;
            }
            if fetched.entries.len() >= cfg.max_hosts {
                return Err(Failure::Fatal(format!(
                    "more than {} computer entries (max_hosts): narrow the search with `ous`, \
                     `filter` or `os_filter`, or raise `max_hosts`",
                    cfg.max_hosts
                )));
            }
            fetched.entries.push(raw_entry(entry));
        }
        let res = stream.finish().await;
        fetched.pages += 1;
        fetched.largest_page = fetched.largest_page.max(on_page);
        match res.rc {
            0 => {}
            4 => {
                return Err(Failure::Fatal(format!(
                    "the server's size limit cut the result under {base:?} after a page of \
                     {on_page} entries: it did not honour paging, so the inventory would be \
                     incomplete"
                )))
            }
            rc => {
                return Err(Failure::Fatal(format!(
                    "search under {base:?} failed: LDAP result {rc} ({})",
                    sanitize::display(res.text.trim(), 300)
                )))
            }
        }
        let returned = res
            .ctrls
            .iter()
            .find(|c| c.1.ctype == PAGED_RESULTS_OID)
            .map(|c| c.1.val.as_deref().and_then(paged_cookie));
        let next = match returned {
            // No paging control in the answer: the server sent everything.
            None => break,
            Some(None) => {
                return Err(Failure::Fatal(
                    "the server's paged-results control is malformed".to_string(),
                ))
            }
            Some(Some(c)) => c,
        };
        if next.is_empty() {
            break;
        }
        if next.len() > MAX_COOKIE_BYTES {
            return Err(Failure::Fatal(
                "the server's paged-results cookie is implausibly large".to_string(),
            ));
        }
        if on_page == 0 {
            empty_pages += 1;
            if empty_pages > MAX_EMPTY_PAGES {
                return Err(Failure::Fatal(
                    "the server keeps returning empty pages with a cookie: giving up".to_string(),
                ));
            }
        } else {
            empty_pages = 0;
        }
        cookie = next;
    }
    Ok(())
}

fn raw_entry(entry: SearchEntry) -> RawEntry {
    let mut attrs: HashMap<String, Vec<Value>> = HashMap::new();
    for (name, values) in entry.attrs {
        attrs.entry(name.to_ascii_lowercase()).or_default().extend(
            values
                .into_iter()
                .take(MAX_VALUES_PER_ATTRIBUTE + 1)
                .map(Value::String),
        );
    }
    // Values that are not UTF-8 (objectGUID, objectSid, ...) as hex.
    for (name, values) in entry.bin_attrs {
        attrs.entry(name.to_ascii_lowercase()).or_default().extend(
            values
                .into_iter()
                .take(MAX_VALUES_PER_ATTRIBUTE + 1)
                .map(|v| Value::String(hex::encode(&v[..v.len().min(MAX_VALUE_CHARS)]))),
        );
    }
    RawEntry {
        dn: entry.dn,
        attrs,
    }
}

/// The cookie from a paged-results response value:
/// `SEQUENCE { size INTEGER, cookie OCTET STRING }`. Parsed here rather
/// than by ldap3, whose parser panics on a malformed value.
fn paged_cookie(val: &[u8]) -> Option<Vec<u8>> {
    let (tag, body, _) = ber_tlv(val)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, _size, rest) = ber_tlv(body)?;
    if tag != 0x02 {
        return None;
    }
    let (tag, cookie, _) = ber_tlv(rest)?;
    if tag != 0x04 {
        return None;
    }
    Some(cookie.to_vec())
}

/// One BER tag-length-value with a single-byte tag: (tag, value, rest).
fn ber_tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &x| (acc << 8) | usize::from(x));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// A connection failure, with the TLS cause spelled out.
fn connect_error(e: &LdapError, server: &Server) -> String {
    if let Some(tls) = tls_cause(e) {
        return match tls {
            rustls::Error::InvalidCertificate(why) => format!(
                "TLS certificate of {} not accepted: {why:?} (certificate verification is always \
                 on: set `ca_file` to the CA that issued the domain controller's certificate, and \
                 name the server as its certificate does)",
                server.host
            ),
            other => format!("TLS handshake with {} failed: {other}", server.host),
        };
    }
    match e {
        LdapError::Io { source } => match source.kind() {
            std::io::ErrorKind::ConnectionRefused => {
                "connection refused (nothing listens on that port)".to_string()
            }
            _ => format!("cannot connect: {source}"),
        },
        LdapError::Timeout { .. } => "connection timed out".to_string(),
        LdapError::LdapResult { result } if server.tls == TlsMode::StartTls => format!(
            "StartTLS refused by the server: LDAP result {} ({})",
            result.rc,
            sanitize::display(result.text.trim(), 200)
        ),
        other => format!(
            "cannot connect: {}",
            sanitize::display(&other.to_string(), 300)
        ),
    }
}

/// The rustls error behind an ldap3 error, if there is one.
fn tls_cause(e: &LdapError) -> Option<&rustls::Error> {
    match e {
        LdapError::Rustls { source } => Some(source),
        LdapError::Io { source } => source
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        _ => None,
    }
}

fn op_error(op: &str, e: &LdapError, server: &Server) -> String {
    match e {
        LdapError::Timeout { .. } => format!("{op}: no answer from {} in time", server.host),
        other => format!("{op}: {}", sanitize::display(&other.to_string(), 300)),
    }
}

/// A search that broke off: the connection (reset, timeout, the server
/// went away) is worth another server; a refusal would repeat there.
fn search_failure(base: &str, e: &LdapError) -> Failure {
    let msg = search_error(base, e);
    match e {
        LdapError::Io { .. }
        | LdapError::Timeout { .. }
        | LdapError::EndOfStream
        | LdapError::ResultRecv { .. }
        | LdapError::OpSend { .. } => Failure::TryNext(msg),
        _ => Failure::Fatal(msg),
    }
}

fn search_error(base: &str, e: &LdapError) -> String {
    match e {
        LdapError::Timeout { .. } => format!("search under {base:?}: no answer in time"),
        other => format!(
            "search under {base:?} failed: {}",
            sanitize::display(&other.to_string(), 300)
        ),
    }
}

// ---------------------------------------------------------------------------
// Entries to an inventory.

/// A computer that passed every check.
struct Computer {
    name: String,
    dn: String,
    /// OU names, top-down.
    ous: Vec<String>,
    vars: BTreeMap<String, (Value, Option<Loc>)>,
}

fn build(
    path: &Path,
    cfg: &Config,
    entries: Vec<RawEntry>,
    report: &mut LoadReport,
) -> Result<Inventory, InventoryError> {
    let mut computers: Vec<Computer> = Vec::with_capacity(entries.len());
    for entry in entries {
        if let Some(c) = check_entry(path, cfg, entry, report) {
            computers.push(c);
        }
    }
    // Deterministic whatever order the server used; a name claimed by two
    // accounts is kept for the first DN only.
    computers.sort_by(|a, b| (&a.name, &a.dn).cmp(&(&b.name, &b.dn)));
    let mut names: HashMap<String, String> = HashMap::new();
    computers.retain(|c| match names.get(&c.name) {
        Some(first) => {
            let msg = format!(
                "dNSHostName {} is also claimed by {}",
                c.name,
                sanitize::display(first, 200)
            );
            report.skip(&c.dn, msg);
            false
        }
        None => {
            names.insert(c.name.clone(), c.dn.clone());
            true
        }
    });

    // One group per OU path prefix, parents before children (a prefix
    // sorts before its extensions).
    let prefixes: BTreeSet<Vec<String>> = computers
        .iter()
        .flat_map(|c| (1..=c.ous.len()).map(move |n| c.ous[..n].to_vec()))
        .collect();
    let mut group_of: HashMap<&[String], String> = HashMap::new();
    let mut taken: HashMap<String, &[String]> = HashMap::new();
    for prefix in &prefixes {
        let Some((last, parent)) = prefix.split_last() else {
            continue;
        };
        let head = group_of
            .get(parent)
            .cloned()
            .unwrap_or_else(|| "ou".to_string());
        let mut name = format!("{head}_{}", group_component(last));
        if let Some(other) = taken.get(name.as_str()) {
            let renamed = format!("{name}_{}", short_hash(&prefix.join("\u{0}")));
            report.warn(format!(
                "OU {} and OU {} both make group name {name}: the second is {renamed}",
                sanitize::display(&ou_display(other), 200),
                sanitize::display(&ou_display(prefix), 200),
            ));
            name = renamed;
        }
        taken.insert(name.clone(), prefix.as_slice());
        group_of.insert(prefix.as_slice(), name);
    }

    let mut b = Builder::new(path);
    let (connection, conn_loc) = cfg.connection;
    b.set_group_var(
        "all",
        "ansible_connection",
        VarDef::new(Value::from(connection.name()), conn_loc, conn_loc),
    )?;
    for (k, def) in &cfg.vars {
        b.set_group_var("all", k, def.clone())?;
    }
    for prefix in &prefixes {
        let Some(name) = group_of.get(prefix.as_slice()) else {
            continue;
        };
        b.add_group(name);
        if prefix.len() > 1 {
            if let Some(parent) = group_of.get(&prefix[..prefix.len() - 1]) {
                b.add_child(parent, name, None)?;
            }
        }
    }
    for c in computers {
        let group = group_of
            .get(c.ous.as_slice())
            .cloned()
            .unwrap_or_else(|| "all".to_string());
        b.add_host(&group, &c.name);
        let mut vars = c.vars;
        vars.insert("ou".into(), (Value::from(ou_display(&c.ous)), None));
        // The DN as returned, except that control characters (possible in a
        // CN) are shown escaped, as on the terminal.
        vars.insert(
            "distinguished_name".into(),
            (Value::from(sanitize::display(&c.dn, MAX_DN_CHARS)), None),
        );
        for (k, (value, loc)) in vars {
            let def = VarDef::new(value, loc, loc);
            // Checked before: a value the inventory rules refuse was dropped.
            b.set_host_var(&c.name, &k, def)?;
        }
    }
    b.finish()
}

/// Checks one entry; `None` (and a warning) when it cannot be a host.
fn check_entry(
    path: &Path,
    cfg: &Config,
    mut entry: RawEntry,
    report: &mut LoadReport,
) -> Option<Computer> {
    let dn = std::mem::take(&mut entry.dn);
    if dn.chars().count() > MAX_DN_CHARS {
        report.skip(
            &dn,
            format!("distinguishedName longer than {MAX_DN_CHARS} characters"),
        );
        return None;
    }
    let rdns = match parse_dn(&dn) {
        Ok(rdns) => rdns,
        Err(e) => {
            report.skip(&dn, format!("unparseable distinguishedName: {e}"));
            return None;
        }
    };
    let ous: Vec<String> = rdns
        .iter()
        .rev()
        .filter_map(|rdn| {
            rdn.iter()
                .find(|(t, _)| t.eq_ignore_ascii_case("ou"))
                .map(|(_, v)| v.clone())
        })
        .collect();
    if ous
        .iter()
        .any(|o| o.chars().any(char::is_control) || o.chars().count() > 256)
    {
        report.skip(
            &dn,
            "an OU name holds control characters or is too long".into(),
        );
        return None;
    }
    let name = match entry.attrs.get("dnshostname").map(Vec::as_slice) {
        None | Some([]) => {
            report.skip(
                &dn,
                "no dNSHostName (an account that never joined or registered: not addressable)"
                    .into(),
            );
            return None;
        }
        Some([Value::String(raw)]) => match valid_host_name(raw) {
            Some(n) => n,
            None => {
                report.skip(
                    &dn,
                    format!(
                        "dNSHostName {} is not a valid host name",
                        sanitize::display(raw, 80)
                    ),
                );
                return None;
            }
        },
        Some(_) => {
            report.skip(&dn, "dNSHostName has more than one value".into());
            return None;
        }
    };

    let mut vars = BTreeMap::new();
    for m in &cfg.attributes {
        let Some(values) = entry.attrs.get(&m.attribute.to_ascii_lowercase()) else {
            continue;
        };
        let what = format!("{} ({}) of {name}", m.var, m.attribute);
        if values.len() > MAX_VALUES_PER_ATTRIBUTE {
            report.warn(format!(
                "dropped {what}: more than {MAX_VALUES_PER_ATTRIBUTE} values"
            ));
            continue;
        }
        let bad = values.iter().find_map(|v| match v {
            Value::String(s) if s.chars().count() > MAX_VALUE_CHARS => {
                Some(format!("a value longer than {MAX_VALUE_CHARS} characters"))
            }
            Value::String(s) if s.chars().any(char::is_control) => {
                Some("a value with control characters".to_string())
            }
            _ => None,
        });
        if let Some(bad) = bad {
            report.warn(format!("dropped {what}: {bad}"));
            continue;
        }
        let value = match values.as_slice() {
            [one] => one.clone(),
            many => Value::Array(many.to_vec()),
        };
        let def = VarDef::new(value, m.loc, m.loc);
        if let Err(e) = super::check_var(path, &m.var, &def) {
            report.warn(format!("dropped {what}: {}", e.message));
            continue;
        }
        vars.insert(m.var.clone(), (def.value, m.loc));
    }
    Some(Computer {
        name,
        dn,
        ous,
        vars,
    })
}

/// A DNS host name as an inventory name: labels of letters, digits, `-`
/// and `_` (Windows allows it in computer names), none empty or over 63
/// characters, not starting or ending with `-`, 253 characters at most.
/// Lowercased; one trailing dot dropped.
fn valid_host_name(raw: &str) -> Option<String> {
    let s = raw.strip_suffix('.').unwrap_or(raw);
    if s.is_empty() || s.len() > 253 {
        return None;
    }
    for label in s.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return None;
        }
    }
    Some(s.to_ascii_lowercase())
}

/// `Tokyo/Sales/Floor3`; a `/` or `\` inside an OU name is escaped with `\`.
fn ou_display(ous: &[String]) -> String {
    ous.iter()
        .map(|o| o.replace('\\', "\\\\").replace('/', "\\/"))
        .collect::<Vec<_>>()
        .join("/")
}

/// One OU name as part of a group name: ASCII letters and digits
/// lowercased, every other run of characters one `_`. A name with no ASCII
/// letter or digit (`営業`) becomes `x` and a hash of it; a very long one is
/// cut and gets a hash, so two names never silently meet.
fn group_component(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    if out.is_empty() {
        return format!("x{}", short_hash(name));
    }
    if out.len() > 48 {
        out.truncate(40);
        out.push('_');
        out.push_str(&short_hash(name));
    }
    out
}

fn short_hash(s: &str) -> String {
    hex::encode(&Sha256::digest(s.as_bytes())[..4])
}

/// A DN (RFC 4514) as its RDNs, leftmost (the entry) first; each RDN is its
/// `type=value` pairs (more than one when joined with `+`), values
/// unescaped (`\,`, `\2C`, UTF-8 in hex pairs; legacy quoted values).
fn parse_dn(dn: &str) -> Result<Vec<Vec<(String, String)>>, String> {
    let b = dn.as_bytes();
    let mut rdns = Vec::new();
    let mut rdn: Vec<(String, String)> = Vec::new();
    let mut i = 0;
    if dn.trim().is_empty() {
        return Ok(rdns);
    }
    loop {
        // Attribute type up to '='.
        let start = i;
        while i < b.len() && b[i] != b'=' {
            if matches!(b[i], b',' | b'+' | b';' | b'\\' | b'"') {
                return Err(format!("character {:?} in an attribute type", b[i] as char));
            }
            i += 1;
        }
        if i >= b.len() {
            return Err("an RDN without `=`".into());
        }
        let attr_type = dn[start..i].trim();
        let type_ok = !attr_type.is_empty()
            && attr_type
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !type_ok {
            return Err(format!("bad attribute type {attr_type:?}"));
        }
        i += 1; // '='
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        let mut value: Vec<u8> = Vec::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            loop {
                match b.get(i) {
                    None => return Err("unterminated quoted value".into()),
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        let c = *b.get(i + 1).ok_or("a trailing backslash")?;
                        value.push(c);
                        i += 2;
                    }
                    Some(&c) => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
            while i < b.len() && b[i] == b' ' {
                i += 1;
            }
        } else {
            // `significant`: length up to the last escaped or non-space byte,
            // so unescaped trailing spaces are dropped.
            let mut significant = 0;
            while i < b.len() && !matches!(b[i], b',' | b';' | b'+') {
                if b[i] == b'\\' {
                    let next = *b.get(i + 1).ok_or("a trailing backslash")?;
                    let hex = b
                        .get(i + 1..i + 3)
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u8::from_str_radix(h, 16).ok());
                    match hex {
                        Some(byte) => {
                            value.push(byte);
                            i += 3;
                        }
                        None => {
                            value.push(next);
                            i += 2;
                        }
                    }
                    significant = value.len();
                } else {
                    value.push(b[i]);
                    if b[i] != b' ' {
                        significant = value.len();
                    }
                    i += 1;
                }
            }
            value.truncate(significant);
        }
        let value =
            String::from_utf8(value).map_err(|_| "a value that is not UTF-8".to_string())?;
        rdn.push((attr_type.to_string(), value));
        match b.get(i) {
            None => {
                rdns.push(std::mem::take(&mut rdn));
                return Ok(rdns);
            }
            Some(b'+') => {}
            Some(b',' | b';') => rdns.push(std::mem::take(&mut rdn)),
            Some(&c) => return Err(format!("unexpected {:?} after a value", c as char)),
        }
        i += 1;
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Result<Config, InventoryError> {
        parse_config(Path::new("/etc/pushscan/ad.yml"), text)
    }

    const MINIMAL: &str = "plugin: pushscan.ldap\nservers: [ldaps://dc1.corp.example]\n\
                           user: svc@corp.example\n";

    #[test]
    fn detects_sources() {
        assert!(is_ldap_source("plugin: pushscan.ldap\nservers: []\n"));
        assert!(is_ldap_source("# AD\n---\nkind: ldap\n"));
        assert!(is_ldap_source("plugin: \"pushscan.ldap\"  # from AD\n"));
        assert!(is_ldap_source("\u{feff}kind: 'ldap'\n"));
        assert!(is_ldap_source(
            r#"{"plugin": "pushscan.ldap", "servers": []}"#
        ));
        assert!(!is_ldap_source("all:\n  hosts:\n    plugin:\n"));
        assert!(!is_ldap_source("all:\n  vars:\n    kind: ldap\n"));
        assert!(!is_ldap_source("plugin: amazon.aws.aws_ec2\n"));
        assert!(!is_ldap_source("[web]\nldap01 kind=ldap\n"));
        assert!(!is_ldap_source(r#"{"all": {"hosts": {"kind": "ldap"}}}"#));
        assert!(!is_ldap_source(""));
    }

    #[test]
    fn minimal_config_defaults() {
        let c = cfg(MINIMAL).unwrap();
        assert_eq!(c.servers.len(), 1);
        assert_eq!(c.servers[0].url, "ldaps://dc1.corp.example:636");
        assert_eq!(c.servers[0].tls, TlsMode::Ldaps);
        assert_eq!(c.filter, DEFAULT_FILTER);
        assert_eq!(c.page_size, 500);
        assert_eq!(c.max_hosts, 100_000);
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        assert!(c.bases.is_empty());
        assert_eq!(c.connection.0, Transport::directory_default());
        assert_eq!(
            c.auth,
            Auth::Simple {
                name: "svc@corp.example".into(),
                password_env: DEFAULT_PASSWORD_ENV.into()
            }
        );
        assert_eq!(c.attributes[0].var, "os");
        assert!(ldap3::parse_filter(DEFAULT_FILTER).is_ok());
    }

    #[test]
    fn password_key_is_refused_with_location() {
        let e = cfg("plugin: pushscan.ldap\nservers: [ldaps://dc1]\nuser: a\npassword: hunter2\n")
            .unwrap_err();
        assert_eq!((e.line, e.col), (Some(4), Some(1)), "{e}");
        assert!(e.message.contains("PUSHSCAN_LDAP_PASSWORD"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = cfg("plugin: pushscan.ldap\n  \nbind_pw: x\n").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        let e = cfg("plugin: pushscan.ldap\ncert_validation: ignore\n").unwrap_err();
        assert!(e.message.contains("cannot be turned off"), "{e}");
    }

    #[test]
    fn plain_ldap_is_refused() {
        let e = cfg("plugin: pushscan.ldap\nuser: a\nservers:\n  - ldaps://dc1\n  - ldap://dc2\n")
            .unwrap_err();
        assert_eq!((e.line, e.col), (Some(5), Some(5)), "{e}");
        assert!(e.message.contains("in clear"), "{e}");
        let c =
            cfg("plugin: pushscan.ldap\nuser: a\ntls: starttls\nservers: [ldap://dc2, dc3:3389]\n")
                .unwrap();
        assert_eq!(c.servers[0].url, "ldap://dc2:389");
        assert_eq!(c.servers[1].url, "ldap://dc3:3389");
        assert!(c.servers.iter().all(|s| s.tls == TlsMode::StartTls));
        let e = cfg("plugin: pushscan.ldap\nuser: a\ntls: starttls\nservers: [ldaps://dc2]\n")
            .unwrap_err();
        assert!(e.message.contains("StartTLS needs ldap://"), "{e}");
        let e = cfg("plugin: pushscan.ldap\nuser: a\ntls: none\nservers: [dc2]\n").unwrap_err();
        assert!(e.message.contains("ldaps` or `starttls"), "{e}");
    }

    #[test]
    fn server_urls_are_checked() {
        assert_eq!(
            parse_server("DC1.Corp:6360/", None).unwrap().url,
            "ldaps://dc1.corp:6360"
        );
        assert_eq!(
            parse_server("ldaps://127.0.80.1", None).unwrap().host,
            "127.0.80.1"
        );
        for bad in [
            "ldaps://",
            "ldaps://dc1/dc=x",
            "ldaps://u@dc1",
            "ldaps://dc1:0",
            "ldaps://dc1:99999",
            "ldaps://[::1]",
            "ldapi://%2fvar",
            "ldaps://dc 1",
            "ldaps://-dc1",
        ] {
            assert!(parse_server(bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn bases_and_filters() {
        let c = cfg(&format!(
            "{MINIMAL}base_dn: DC=corp,DC=example\nous: [\"OU=Sales,OU=Tokyo,DC=corp,DC=example\", \
             \"ou=sales,ou=tokyo,dc=corp,dc=example\"]\nos_filter: Windows*(x86)\n"
        ))
        .unwrap();
        assert_eq!(c.bases.len(), 2, "{:?}", c.bases);
        assert_eq!(
            c.filter,
            format!("(&{DEFAULT_FILTER}(operatingSystem=Windows*\\28x86\\29))")
        );
        let c = cfg(&format!(
            "{MINIMAL}filter: objectClass=computer\nos_filter: [\"Windows 11*\", \"*Server*\"]\n"
        ))
        .unwrap();
        assert_eq!(
            c.filter,
            "(&(objectClass=computer)(|(operatingSystem=Windows 11*)(operatingSystem=*Server*)))"
        );
        let e = cfg(&format!("{MINIMAL}filter: \"(&(a=b)\"\n")).unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        let e = cfg(&format!("{MINIMAL}base_dn: not a dn\n")).unwrap_err();
        assert!(e.message.contains("not a DN"), "{e}");
    }

    #[test]
    fn numbers_and_maps() {
        let e = cfg(&format!("{MINIMAL}page_size: 5000\n")).unwrap_err();
        assert!(e.message.contains("1 to 1000"), "{e}");
        let c = cfg(&format!(
            "{MINIMAL}page_size: 1000\nmax_hosts: 20\ntimeout: 2m\nattributes:\n  site: \
             physicalDeliveryOfficeName\n  os: operatingSystemVersion\n"
        ))
        .unwrap();
        assert_eq!((c.page_size, c.max_hosts), (1000, 20));
        assert_eq!(c.timeout, Duration::from_secs(120));
        let names: Vec<_> = c
            .attributes
            .iter()
            .map(|m| (&*m.var, &*m.attribute))
            .collect();
        assert_eq!(
            names,
            vec![
                ("site", "physicalDeliveryOfficeName"),
                ("os", "operatingSystemVersion")
            ]
        );
        let e = cfg(&format!("{MINIMAL}attributes:\n  ou: department\n")).unwrap_err();
        assert!(e.message.contains("cannot be mapped"), "{e}");
        let e = cfg(&format!("{MINIMAL}attributes:\n  x: \"bad attr\"\n")).unwrap_err();
        assert_eq!(e.line, Some(5), "{e}");
        let e = cfg(&format!("{MINIMAL}vars:\n  ansible_password: x\n")).unwrap_err();
        assert_eq!((e.line, e.col), (Some(5), Some(3)), "{e}");
        let e = cfg(&format!(
            "{MINIMAL}connection: ssh\nvars:\n  ansible_connection: local\n"
        ))
        .unwrap_err();
        assert!(e.message.contains("keep one"), "{e}");
        let e = cfg(&format!("{MINIMAL}serverz: x\n")).unwrap_err();
        assert!(e.message.contains("unknown key `serverz`"), "{e}");
        let e = cfg(&format!("{MINIMAL}bind_dn: CN=x\n")).unwrap_err();
        assert!(e.message.contains("both"), "{e}");
        let e = cfg("plugin: pushscan.ldap\nservers: [dc1]\n").unwrap_err();
        assert!(e.message.contains("no bind identity"), "{e}");
        let e = cfg("servers: [dc1]\nuser: x\n").unwrap_err();
        assert!(e.message.contains("not an LDAP inventory source"), "{e}");
        let e = cfg(&format!("{MINIMAL}password_env: \"$(id)\"\n")).unwrap_err();
        assert!(e.message.contains("environment variable"), "{e}");
    }

    #[test]
    fn kerberos_follows_the_feature() {
        let r = cfg("plugin: pushscan.ldap\nservers: [dc1]\nauth: kerberos\n");
        if cfg!(feature = "kerberos") {
            assert_eq!(r.unwrap().auth, Auth::Kerberos);
        } else {
            let e = r.unwrap_err();
            assert_eq!(e.line, Some(3), "{e}");
            assert!(e.message.contains("not supported by this build"), "{e}");
        }
    }

    #[test]
    fn ca_file_is_relative_to_the_source() {
        let c = cfg(&format!("{MINIMAL}ca_file: certs/ca.pem\n")).unwrap();
        assert_eq!(
            c.ca_file.unwrap().0,
            PathBuf::from("/etc/pushscan/certs/ca.pem")
        );
    }

    #[test]
    fn dn_parsing() {
        let r = parse_dn("CN=PC1,OU=Sales,OU=Tokyo,DC=corp,DC=example").unwrap();
        assert_eq!(r.len(), 5);
        assert_eq!(r[1], vec![("OU".to_string(), "Sales".to_string())]);
        let r = parse_dn(r"CN=PC\,1,OU=Dev\, Ops,OU=A\2CB,OU=\E5\96\B6\E6\A5\AD,DC=x").unwrap();
        assert_eq!(r[0][0].1, "PC,1");
        assert_eq!(r[1][0].1, "Dev, Ops");
        assert_eq!(r[2][0].1, "A,B");
        assert_eq!(r[3][0].1, "営業");
        let r = parse_dn(r#"cn=a+sn=b, ou="Quoted, name" ,ou=trail\ ,dc=x"#).unwrap();
        assert_eq!(
            r[0],
            vec![("cn".into(), "a".into()), ("sn".into(), "b".into())]
        );
        assert_eq!(r[1][0].1, "Quoted, name");
        assert_eq!(r[2][0].1, "trail ");
        for bad in ["CN", "CN=a,", "=a", r"CN=a\", "CN=a,OU", r"CN=\FF\FE"] {
            assert!(parse_dn(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_names() {
        assert_eq!(
            valid_host_name("PC0001.Corp.Example."),
            Some("pc0001.corp.example".into())
        );
        assert_eq!(valid_host_name("old_pc.corp"), Some("old_pc.corp".into()));
        for bad in [
            "",
            "evil;rm -rf /",
            "a\nb.corp",
            "a..b",
            "-a.corp",
            "a-.corp",
            "a b",
            "$(id).corp",
            "../x",
            "é.corp",
        ] {
            assert_eq!(valid_host_name(bad), None, "{bad:?}");
        }
        assert_eq!(valid_host_name(&"a".repeat(64)), None);
        let long = vec!["a".repeat(60); 5].join(".");
        assert_eq!(valid_host_name(&long), None);
    }

    #[test]
    fn group_names() {
        assert_eq!(group_component("Tokyo"), "tokyo");
        assert_eq!(group_component("Dev, Ops"), "dev_ops");
        assert_eq!(group_component("  Floor 3 "), "floor_3");
        let jp = group_component("営業");
        assert!(jp.starts_with('x') && jp.len() == 9, "{jp}");
        assert_ne!(jp, group_component("経理"));
        let long = group_component(&"x".repeat(100));
        assert!(long.len() <= 49, "{long}");
        assert_eq!(ou_display(&["A/B".into(), "C\\D".into()]), "A\\/B/C\\\\D");
    }

    #[test]
    fn paged_control_value() {
        // SEQUENCE { INTEGER 0, OCTET STRING "ab" }
        assert_eq!(
            paged_cookie(&[0x30, 7, 2, 1, 0, 4, 2, b'a', b'b']),
            Some(b"ab".to_vec())
        );
        assert_eq!(paged_cookie(&[0x30, 5, 2, 1, 0, 4, 0]), Some(Vec::new()));
        // long-form length
        let mut v = vec![0x30, 0x81, 136, 2, 1, 0, 4, 0x81, 130];
        v.extend(std::iter::repeat_n(7u8, 130));
        assert_eq!(paged_cookie(&v).map(|c| c.len()), Some(130));
        for bad in [
            &[][..],
            &[0x30][..],
            &[0x30, 9, 2, 1, 0, 4, 2, b'a'][..],
            &[0x31, 5, 2, 1, 0, 4, 0][..],
            &[0x30, 5, 4, 1, 0, 4, 0][..],
            &[0x30, 0x85, 1, 1, 1, 1, 1][..],
        ] {
            assert_eq!(paged_cookie(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn syntax_error_is_located_once() {
        let e = cfg("plugin: pushscan.ldap\nservers: [\n").unwrap_err();
        assert!(e.line.is_some(), "{e}");
        assert!(e.message.starts_with("invalid YAML"), "{e}");
        assert!(
            !e.message.contains('\n') && !e.message.contains("line 2"),
            "{e}"
        );
        let e = cfg("- a list\n").unwrap_err();
        assert_eq!(e.line, Some(1), "{e}");
    }

    #[test]
    fn load_is_send() {
        // The dispatch may run it in a spawned task.
        fn assert_send<T: Send>(_: &T) {}
        let fut = load(Path::new("x.yml"), "");
        assert_send(&fut);
        let fut = load_with_report(Path::new("x.yml"), "");
        assert_send(&fut);
    }

    #[test]
    fn wildcard_escaping() {
        assert_eq!(escape_with_wildcards("Windows*"), "Windows*");
        assert_eq!(escape_with_wildcards("a(b)*c\\d"), "a\\28b\\29*c\\5cd");
    }
}
