//! Ansible inventories, read the way Ansible reads them, so that an operator
//! can point pushscan at the inventory they already maintain.
//!
//! Every format (YAML, including its JSON subset; INI; Ansible's list JSON)
//! is parsed into one intermediate `Builder` that records groups, hosts and
//! variables together with the line and column they came from; several
//! sources (`-i` more than once, see [`load_sources`]) are read into the
//! same builder in turn, as Ansible reads them into one inventory. `finish`
//! then applies Ansible's rules (implicit `all`/`ungrouped`, group depth,
//! variable precedence) and resolves the connection settings pushscan needs.
//! Every error carries the file, line and column when they are known,
//! because an operator fixing a 2 000-line inventory needs to be pointed at
//! the exact spot. [`list`] prints the result as `ansible-inventory` does,
//! and `tests/inventory_ansible.rs` compares the two.
//!
//! Inventory directories, `group_vars/` and `host_vars/` are read by
//! `layout.rs`, Ansible Vault by `vault.rs`; `finish` applies the variables
//! files with Ansible's precedence. A vaulted password becomes
//! [`Host::password`], kept apart from the printed variables.
//!
//! Deliberate departures from Ansible are all refusals, never guesses:
//! plaintext and templated secrets, templated connection settings,
//! inventory scripts and plugins, unknown keys in YAML groups, duplicated
//! YAML keys and host patterns that match nothing are errors rather than
//! warnings, because a silently ignored typo would mean silently scanning
//! the wrong set of machines. Values decrypted from vaulted files are never
//! shown (connection settings excepted).

mod ini;
mod layout;
pub mod ldap;
pub mod list;
mod pattern;
pub mod vault;
mod yaml;
mod yaml11;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use secrecy::SecretString;
use serde::Serialize;
use serde_json::Value;

use crate::transport::{self, HostInfo, Transport};

/// One inventory host with its connection settings resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Host {
    /// `inventory_hostname`: the name the inventory knows the host by.
    pub name: String,
    /// `ansible_host` (or the legacy `ansible_ssh_host`), else `name`.
    pub address: String,
    /// `ansible_port` (or `ansible_ssh_port`, or a `host:port` suffix).
    pub port: Option<u16>,
    /// `ansible_user` (or `ansible_ssh_user`).
    pub user: Option<String>,
    /// The transport `ansible_connection` selects (Ansible's default when unset).
    pub connection: Transport,
    /// `ansible_ssh_private_key_file` (or `ansible_private_key_file`). A
    /// relative path is resolved against the inventory file's directory; a
    /// path starting with `~` is kept as written for the caller to expand.
    pub key_file: Option<PathBuf>,
    /// Every group the host belongs to, directly or through parents,
    /// excluding `all` and `ungrouped`; sorted and unique.
    pub groups: Vec<String>,
    /// Each chain from a top-level group down to a group listing the host
    /// directly, e.g. `["europe", "lyon"]`. `all` and `ungrouped` are left
    /// out, so a host only in those has no chain. Sorted, unique, and capped
    /// at [`MAX_GROUP_PATHS`] chains.
    pub group_paths: Vec<Vec<String>>,
    /// Merged variables: `all` < parent groups < child groups < host.
    /// Shared (`Arc`): every host plan carries its host, and a 10,000-host
    /// sweep would otherwise hold each map twice.
    pub vars: Arc<BTreeMap<String, Value>>,
    /// The variables set on the host itself (its inventory entries), before
    /// any group's are merged in: what `ansible-inventory --list --export`
    /// prints for it, and what merging inventories combines.
    pub own_vars: Arc<BTreeMap<String, Value>>,
    /// The vaulted password the inventory gives the host for its connection
    /// (`ansible_password`, `ansible_winrm_password`, ...), if any: see
    /// [`Host::vaulted_password`]. Never printed, never stored.
    #[serde(skip)]
    pub password: Option<InventoryPassword>,
}

/// A vaulted password variable that won for a host.
#[derive(Debug, Clone)]
pub struct InventoryPassword {
    /// The variable it was set in.
    pub var: String,
    /// The decrypted password; `None` when no vault password opened it.
    pub secret: Option<vault::VaultValue>,
}

impl PartialEq for InventoryPassword {
    /// Secrets are compared by presence only: a stored inventory read back
    /// without the vault passwords is the same inventory.
    fn eq(&self, other: &Self) -> bool {
        self.var == other.var
    }
}

/// A group as written in the inventory (plus Ansible's implicit ones).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Group {
    pub name: String,
    /// Direct child groups, in the order first seen.
    pub children: Vec<String>,
    /// Hosts listed directly in this group, in the order first seen. `all`
    /// lists none (every host is in it), as Ansible prints it.
    pub hosts: Vec<String>,
    /// This group's own variables (not inherited ones). An
    /// `ansible_group_priority` other than 1 is kept here as an integer;
    /// it orders groups and is never merged into hosts, as in Ansible.
    pub vars: BTreeMap<String, Value>,
}

/// A parsed inventory. `groups` always holds `all` and `ungrouped`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Inventory {
    /// The inventory file, or a label naming all the sources it was
    /// merged from (`a.yml + b.ini`).
    pub source: PathBuf,
    /// Hosts in the order they were first seen in the file.
    pub hosts: Vec<Host>,
    pub groups: BTreeMap<String, Group>,
    /// Whether `group_vars/` or `host_vars/` files set variables: then a
    /// host's merged variables are not those of its groups and own ones
    /// merged in inventory order, and the stored form carries them.
    #[serde(skip)]
    pub(crate) layered: bool,
}

impl Host {
    /// The vaulted password the inventory gives this host: `Ok(None)` when
    /// it sets none, an error when it sets one no vault password opened.
    pub fn vaulted_password(&self) -> Result<Option<&SecretString>, String> {
        match &self.password {
            None => Ok(None),
            Some(InventoryPassword {
                secret: Some(v), ..
            }) => Ok(Some(&v.0)),
            Some(InventoryPassword { var, secret: None }) => Err(format!(
                "host {}: `{var}` is vault-encrypted, but it was not decrypted: give the \
                 vault password (--vault-password-file, --ask-vault-pass or --vault-id) \
                 and the inventory it is in",
                self.name
            )),
        }
    }
}

/// What transports read of a host.
impl HostInfo for Host {
    fn name(&self) -> &str {
        &self.name
    }
    fn address(&self) -> &str {
        &self.address
    }
    fn port(&self) -> Option<u16> {
        self.port
    }
    fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
    fn key_file(&self) -> Option<&Path> {
        self.key_file.as_deref()
    }
    fn vars(&self) -> &BTreeMap<String, Value> {
        &self.vars
    }
    fn flag(&self, name: &str) -> bool {
        self.vars.get(name).and_then(bool_value).unwrap_or(false)
    }
    fn vaulted_password(&self) -> Result<Option<&SecretString>, String> {
        Host::vaulted_password(self)
    }
}

impl Inventory {
    /// Select hosts with Ansible `--limit` semantics; see `pattern.rs`.
    pub fn select(&self, pattern: &str) -> Result<Vec<&Host>, InventoryError> {
        pattern::select(self, pattern)
    }

    /// The host whose inventory name is `name`.
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }
}

/// Upper bound on `Host::group_paths`: a diamond-shaped group graph can
/// have exponentially many chains, and nobody reads more than a handful.
pub const MAX_GROUP_PATHS: usize = 256;

/// Default bound on the hosts an inventory may expand to, over all its
/// sources: 40 short lines of `pc[0000:9999]` would otherwise make four
/// million hosts and exhaust memory before anything is checked. The same
/// figure as the LDAP source's `max_hosts`.
pub const DEFAULT_MAX_HOSTS: u64 = 100_000;

static MAX_HOSTS: AtomicU64 = AtomicU64::new(DEFAULT_MAX_HOSTS);

/// Set the bound on host names the inventories read after this call may
/// expand to (`--inventory-max-hosts`); one value for the process, like
/// the command line it comes from.
pub fn set_max_hosts(n: u64) {
    MAX_HOSTS.store(n, Ordering::Relaxed);
}

/// The bound in force (see [`set_max_hosts`]).
pub fn max_hosts() -> u64 {
    MAX_HOSTS.load(Ordering::Relaxed)
}

/// An inventory problem, located as precisely as the parser knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryError {
    pub file: PathBuf,
    /// 1-based line.
    pub line: Option<usize>,
    /// 1-based column, in characters.
    pub col: Option<usize>,
    pub message: String,
}

impl InventoryError {
    pub fn new(file: &Path, message: impl Into<String>) -> Self {
        InventoryError {
            file: file.to_path_buf(),
            line: None,
            col: None,
            message: message.into(),
        }
    }

    pub(crate) fn at(file: &Path, loc: Option<Loc>, message: impl Into<String>) -> Self {
        InventoryError {
            file: file.to_path_buf(),
            line: loc.map(|l| l.line),
            col: loc.and_then(|l| if l.col == 0 { None } else { Some(l.col) }),
            message: message.into(),
        }
    }
}

impl fmt::Display for InventoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::located::write(f, &self.file, self.line, self.col, &self.message)
    }
}

impl std::error::Error for InventoryError {}

/// Read an inventory file. `.yml`, `.yaml` and `.json` are YAML; `.ini`
/// and `.cfg` are INI; anything else (including no extension, like the
/// classic `hosts` file) is sniffed, defaulting to INI. A JSON document in
/// Ansible's list shape (what `ansible-inventory --list` and inventory
/// scripts print) is read as such, whatever the name.
pub fn load(path: &Path) -> Result<Inventory, InventoryError> {
    let text = decode(path, read_bytes(path)?)?;
    parse(&text, path)
}

fn dir_error(path: &Path) -> InventoryError {
    InventoryError::new(
        path,
        "is a directory; name one inventory file here (the commands' -i read directories)",
    )
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, InventoryError> {
    if path.is_dir() {
        return Err(dir_error(path));
    }
    std::fs::read(path).map_err(|e| InventoryError::new(path, format!("cannot read: {e}")))
}

fn decode(path: &Path, bytes: Vec<u8>) -> Result<String, InventoryError> {
    String::from_utf8(bytes).map_err(|e| InventoryError::new(path, format!("not valid UTF-8: {e}")))
}

/// Parses inventory text as `load` would read the file at `source` (the
/// format is chosen from the content and the name). Used to re-read the
/// inventory stored with a run, exactly as it was: the list JSON that
/// [`load_sources`] stores, or the raw file text older runs stored.
pub fn parse(text: &str, source: &Path) -> Result<Inventory, InventoryError> {
    let mut b = Builder::new(source);
    read_source(&mut b, text)?;
    b.finish()
}

/// Add one source's text to `b`, whose current source names its file.
fn read_source(b: &mut Builder, text: &str) -> Result<(), InventoryError> {
    if list::is_list_json(text) {
        return list::read_into(b, text);
    }
    let ext = b
        .current_source()
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("yml" | "yaml" | "json") => read_yaml_or_ini(b, text),
        Some("ini" | "cfg") => ini::read_into(b, text),
        _ if looks_like_yaml(text) => {
            let root = yaml::tree(b, text)?;
            yaml::read_tree(b, root)
        }
        _ => ini::read_into(b, text),
    }
}

/// Ansible tries its YAML plugin, then its INI plugin: an INI file named
/// `hosts.yml` still loads there, so it loads here. When both fail, the
/// YAML error is the one that explains the file.
fn read_yaml_or_ini(b: &mut Builder, text: &str) -> Result<(), InventoryError> {
    match yaml::tree(b, text) {
        Ok(root) if yaml::is_inventory_shaped(&root) || looks_like_yaml(text) => {
            yaml::read_tree(b, root)
        }
        Ok(root) => match ini::read_into(b, text) {
            Ok(()) => Ok(()),
            Err(_) => yaml::read_tree(b, root),
        },
        Err(e) if !looks_like_yaml(text) => ini::read_into(b, text).map_err(|_| e),
        Err(e) => Err(e),
    }
}

/// Several inventory sources read into one inventory (see [`load_sources`]).
#[derive(Debug, Clone)]
pub struct LoadedInventory {
    pub inventory: Inventory,
    /// One line for every variable that a later source set to another
    /// value than an earlier one (the later wins), naming both sources.
    pub warnings: Vec<String>,
    /// What a run stores to re-read exactly this inventory on `resume`,
    /// without the sources (an LDAP directory is not asked again): a label
    /// (the file, or the files joined with ` + `) ...
    pub label: String,
    /// ... and the resolved inventory as list JSON ([`list::stored_json`]),
    /// which [`parse`] reads back into an identical [`Inventory`].
    pub text: String,
}

/// Read every source, in order, into one inventory, as Ansible does with
/// several `-i`: a host or group found in two sources is one host or group,
/// memberships are unioned, and a variable set in both takes the later
/// source's value (with a warning naming both). Group depth, `ungrouped`
/// and precedence are worked out once, over the whole. A YAML file whose
/// top level says `plugin: pushscan.ldap` (or `kind: ldap`) is an LDAP
/// source, handed to [`ldap::load`].
pub async fn load_sources(paths: &[PathBuf]) -> Result<LoadedInventory, InventoryError> {
    if paths.is_empty() {
        return Err(InventoryError::new(
            Path::new("-i"),
            "no inventory source given",
        ));
    }
    let label = source_label(paths);
    let mut b = Builder::with_label(Path::new(&label));
    let mut vars_dirs = Vec::with_capacity(paths.len());
    for given in paths {
        let files = if given.is_dir() {
            layout::dir_sources(given)?
        } else {
            vec![given.clone()]
        };
        vars_dirs.push(layout::vars_dir_of(given));
        for path in &files {
            let bytes = tokio::fs::read(path)
                .await
                .map_err(|e| InventoryError::new(path, format!("cannot read: {e}")))?;
            if layout::is_script(path, &bytes) {
                return Err(layout::script_error(path));
            }
            let text = decode(path, bytes)?;
            b.begin_source(path);
            if ldap::is_ldap_source(&text) {
                let inv = ldap::load(path, &text).await?;
                b.absorb(&inv)?;
            } else {
                read_source(&mut b, &text)?;
            }
        }
    }
    // Variables files are looked up once every source is read, for every
    // group and host of the whole inventory, as Ansible does.
    for dir in &vars_dirs {
        b.read_vars_dir(dir)?;
    }
    let warnings = b.take_warnings();
    let inventory = b.finish()?;
    let text = list::stored_json(&inventory);
    Ok(LoadedInventory {
        inventory,
        warnings,
        label,
        text,
    })
}

/// The name of a set of sources: the file itself, or all of them joined
/// with ` + `.
pub fn source_label(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" + ")
}

/// Parse a YAML (or JSON) inventory; `source` is used for error messages
/// and to resolve relative key files.
pub fn parse_yaml(text: &str, source: &Path) -> Result<Inventory, InventoryError> {
    yaml::parse(text, source)
}

/// Parse an INI inventory; `source` is used for error messages and to
/// resolve relative key files.
pub fn parse_ini(text: &str, source: &Path) -> Result<Inventory, InventoryError> {
    ini::parse(text, source)
}

/// Guess the format from the first meaningful line. INI lines are section
/// headers or host lines (`name key=value`); YAML inventories open with a
/// document marker, a flow mapping, or a `group:` key.
fn looks_like_yaml(text: &str) -> bool {
    for line in text.lines() {
        let t = line.trim_start_matches('\u{feff}').trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if t.starts_with("---") || t.starts_with("%YAML") || t.starts_with('{') {
            return true;
        }
        if t.starts_with('[') {
            return false;
        }
        let code = t.split(" #").next().unwrap_or(t).trim_end();
        return code.ends_with(':') || code.contains(": ");
    }
    false
}

// ---------------------------------------------------------------------------
// Shared building blocks for both parsers.

/// A 1-based source position (`col == 0`: column unknown), shared with every located config
/// file.
pub(crate) use crate::located::Loc;

/// One variable assignment and where it was written, so that a problem
/// found after merging can still point at the line that caused it.
#[derive(Debug, Clone)]
pub(crate) struct VarDef {
    pub value: Value,
    pub key_loc: Option<Loc>,
    pub val_loc: Option<Loc>,
    /// Which of the builder's sources set it (the builder fills it in).
    pub src: usize,
    /// The decrypted value of a vaulted connection setting (host, port,
    /// user, connection, key file): what the setting resolves to, while
    /// `value` stays what Ansible prints.
    pub plain: Option<Value>,
    /// The decrypted value of a vaulted password variable: usable as a
    /// credential, never printed (`value` shows the ciphertext or a
    /// placeholder).
    pub secret: Option<vault::VaultValue>,
}

impl VarDef {
    pub fn new(value: Value, key_loc: Option<Loc>, val_loc: Option<Loc>) -> VarDef {
        VarDef {
            value,
            key_loc,
            val_loc,
            src: 0,
            plain: None,
            secret: None,
        }
    }

    /// The value a setting resolves to: the decrypted one for a vaulted
    /// connection setting.
    fn effective(&self) -> &Value {
        self.plain.as_ref().unwrap_or(&self.value)
    }
}

/// The key of the object Ansible prints for an inline vault value
/// (`{"__ansible_vault": "$ANSIBLE_VAULT;1.1;AES256\n..."}`).
pub(crate) const VAULT_KEY: &str = "__ansible_vault";

/// The ciphertext of an inline vault value (`!vault |`, or the object
/// Ansible prints for one), if `value` is one.
fn vault_text(value: &Value) -> Option<&str> {
    match value {
        Value::Object(m) if m.len() == 1 => m.get(VAULT_KEY).and_then(Value::as_str),
        _ => None,
    }
}

/// Variables that would hold a password. Ansible accepts all of these; we
/// refuse them so that no plaintext credential is ever read from (and so
/// encouraged in) an inventory file.
const SECRET_VARS: &[&str] = &[
    "ansible_password",
    "ansible_ssh_pass",
    "ansible_ssh_password",
    "ansible_winrm_password",
    "ansible_winrm_pass",
    "ansible_psrp_password",
    "ansible_psrp_pass",
    "ansible_become_password",
    "ansible_become_pass",
    "ansible_sudo_pass",
    "ansible_sudo_password",
    "ansible_su_pass",
    "ansible_su_password",
    "ansible_ssh_private_key_passphrase",
];

const SECRET_ADVICE: &str =
    "plaintext secrets are not read from inventories; encrypt it with Ansible Vault \
     (ansible-vault encrypt_string, or a vaulted group_vars file), or supply the password \
     through the PUSHSCAN_SSH_PASSWORD or PUSHSCAN_PASSWORD environment variable, or \
     --ask-pass, or use SSH keys / ssh-agent";

// Connection settings: each transport names the variables it reads (`transport::Entry`);
// the key file and `ansible_connection` itself are read for every host.
const KEY_VARS: &[&str] = &["ansible_private_key_file", "ansible_ssh_private_key_file"];
const CONNECTION_VAR: &str = "ansible_connection";

/// Whether the inventory interprets `key` as a connection setting (any transport's host,
/// port or user variable, the key file, `ansible_connection`) rather than passing it on.
pub(crate) fn is_connection_var(key: &str) -> bool {
    transport::var_role(key).is_some() || KEY_VARS.contains(&key) || key == CONNECTION_VAR
}
const PRIORITY_VAR: &str = "ansible_group_priority";

/// Jinja markers: pushscan has no template engine, so such a value would
/// be used literally, which is never what the operator meant.
fn is_templated(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

/// `ansible_port` as a port number: an integer or a string holding one.
fn port_value(value: &Value) -> Option<u16> {
    let n = match value {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => s.trim().parse::<u64>().ok()?,
        _ => return None,
    };
    u16::try_from(n).ok().filter(|p| *p != 0)
}

/// A yes/no setting as Ansible's `boolean` reads it (an INI value arrives as text).
fn bool_value(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_u64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" | "y" | "t" => Some(true),
            "false" | "no" | "off" | "0" | "n" | "f" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// `ansible_group_priority` as Ansible's `int(value)` reads it.
fn priority_value(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
}

/// A value for a one-line message: JSON, cut at 60 characters.
fn short_json(value: &Value) -> String {
    let s = value.to_string();
    if s.chars().count() <= 60 {
        return s;
    }
    let cut: String = s.chars().take(57).collect();
    format!("{cut}...")
}

/// A connection setting that must be a plain string (numbers are accepted
/// and printed, since `ansible_user: 1000` is plausible); null means unset.
fn text_value(value: &Value) -> Option<Option<String>> {
    match value {
        Value::Null => Some(None),
        Value::String(s) => Some(Some(s.clone())),
        Value::Number(n) => Some(Some(n.to_string())),
        _ => None,
    }
}

/// Check one assignment as soon as it is read, so that errors come out in
/// file order and point at the assignment itself, even if a later, more
/// specific assignment would have overridden it.
fn check_var(source: &Path, key: &str, def: &VarDef) -> Result<(), InventoryError> {
    let vloc = def.val_loc.or(def.key_loc);
    if SECRET_VARS.contains(&key) {
        // A vaulted password is a credential source (decrypted into
        // `secret`, or still locked when no vault password was given).
        if def.secret.is_some() || vault_text(&def.value).is_some() {
            return Ok(());
        }
        let templated = matches!(&def.value, Value::String(s) if is_templated(s));
        let msg = if templated {
            format!("`{key}` is set: templated secrets are unsupported, and {SECRET_ADVICE}")
        } else {
            format!("`{key}` is set: {SECRET_ADVICE}")
        };
        return Err(InventoryError::at(source, def.key_loc, msg));
    }
    if transport::is_flag_var(key) {
        if def.value.is_null() || bool_value(&def.value).is_some() {
            return Ok(());
        }
        return Err(InventoryError::at(
            source,
            vloc,
            format!(
                "`{key}` must be true or false, found {}",
                describe(&def.value)
            ),
        ));
    }
    let interpreted = is_connection_var(key);
    if !interpreted && key != PRIORITY_VAR {
        return Ok(());
    }
    if def.plain.is_none() && vault_text(&def.value).is_some() {
        return Err(InventoryError::at(
            source,
            vloc,
            format!("`{key}` {}", vault::VaultError::NoSecrets),
        ));
    }
    let value = def.effective();
    if let Value::String(s) = value {
        if s.trim_start().starts_with("$ANSIBLE_VAULT;") {
            return Err(InventoryError::at(
                source,
                vloc,
                format!("`{key}` holds vault text as a plain string; tag it `!vault |` as ansible-vault encrypt_string writes it"),
            ));
        }
        if is_templated(s) {
            return Err(InventoryError::at(
                source,
                vloc,
                format!(
                    "`{key}` is templated ({s:?}); pushscan does not evaluate Jinja, \
                     write the literal value"
                ),
            ));
        }
    }
    if transport::var_role(key) == Some(transport::VarRole::Port) {
        if value.is_null() {
            return Ok(());
        }
        if port_value(value).is_none() {
            return Err(InventoryError::at(
                source,
                vloc,
                format!(
                    "`{key}` must be a port number between 1 and 65535, found {}",
                    describe(value)
                ),
            ));
        }
    } else if key == CONNECTION_VAR {
        let ok = match value {
            Value::Null => true,
            Value::String(s) => transport::parse(s).is_some(),
            _ => false,
        };
        if !ok {
            return Err(InventoryError::at(
                source,
                vloc,
                format!(
                    "unsupported ansible_connection {}: pushscan speaks {}",
                    describe(value),
                    transport::spoken()
                ),
            ));
        }
    } else if KEY_VARS.contains(&key) {
        if !matches!(value, Value::Null | Value::String(_)) {
            return Err(InventoryError::at(
                source,
                vloc,
                format!("`{key}` must be a path, found {}", describe(value)),
            ));
        }
    } else if key == PRIORITY_VAR {
        let ok = match value {
            Value::Null => true,
            Value::Number(n) => n.as_i64().is_some(),
            Value::String(s) => s.trim().parse::<i64>().is_ok(),
            _ => false,
        };
        if !ok {
            return Err(InventoryError::at(
                source,
                vloc,
                format!("`{key}` must be an integer, found {}", describe(value)),
            ));
        }
    } else if text_value(value).is_none() {
        return Err(InventoryError::at(
            source,
            vloc,
            format!("`{key}` must be a string, found {}", describe(value)),
        ));
    }
    Ok(())
}

#[derive(Debug, Default)]
struct GroupB {
    name: String,
    children: Vec<String>,
    /// Where each child was added: (source, location).
    child_locs: Vec<(usize, Option<Loc>)>,
    hosts: Vec<String>,
    vars: BTreeMap<String, VarDef>,
}

#[derive(Debug)]
struct HostB {
    name: String,
    vars: BTreeMap<String, VarDef>,
}

/// Accumulates what the parsers read, in Ansible's terms (groups, hosts,
/// variables), from one source or several in turn, then `finish` applies
/// Ansible's inventory rules once, over everything read.
pub(crate) struct Builder {
    /// The inventory's name: its file, or the label of several sources.
    label: PathBuf,
    /// Every source read so far; errors name the current one.
    sources: Vec<PathBuf>,
    current: usize,
    /// Variables one source set differently from another.
    warnings: Vec<String>,
    /// Key files as resolved where the inventory was first read (a stored
    /// list JSON carries them): host -> (source, path).
    key_files: HashMap<String, (usize, PathBuf)>,
    groups: Vec<GroupB>,
    group_index: HashMap<String, usize>,
    hosts: Vec<HostB>,
    host_index: HashMap<String, usize>,
    /// (group, host) pairs already listed, so that adding is O(1) even for
    /// a range expanding to tens of thousands of hosts.
    membership: HashSet<(usize, usize)>,
    /// Host names the entries read so far stand for, duplicates included
    /// (each one is work), counted before expanding.
    expanded: u64,
    max_hosts: u64,
    /// Variables from the `group_vars/` and `host_vars/` beside each
    /// inventory source, one layer per source, in order.
    layers: Vec<VarsLayer>,
    /// A host's merged variables as a stored inventory carries them (see
    /// `Inventory::layered`): they replace the merge.
    stored_vars: HashMap<usize, BTreeMap<String, VarDef>>,
    /// For a variables file: the inventory directory it belongs to, which
    /// relative key files are taken from.
    key_base: HashMap<usize, PathBuf>,
}

/// The variables files of one inventory directory: group index -> merged
/// variables of its files, host index -> likewise.
#[derive(Debug, Default)]
struct VarsLayer {
    groups: HashMap<usize, BTreeMap<String, VarDef>>,
    hosts: HashMap<usize, BTreeMap<String, VarDef>>,
}

const ALL: usize = 0;
const UNGROUPED: usize = 1;

impl Builder {
    /// A builder for one source, the inventory named after it.
    pub fn new(source: &Path) -> Builder {
        let mut b = Builder::with_label(source);
        b.begin_source(source);
        b
    }

    /// A builder for sources still to be named with `begin_source`.
    pub fn with_label(label: &Path) -> Builder {
        let mut b = Builder {
            label: label.to_path_buf(),
            sources: Vec::new(),
            current: 0,
            warnings: Vec::new(),
            key_files: HashMap::new(),
            groups: Vec::new(),
            group_index: HashMap::new(),
            hosts: Vec::new(),
            host_index: HashMap::new(),
            membership: HashSet::new(),
            expanded: 0,
            max_hosts: max_hosts(),
            layers: Vec::new(),
            stored_vars: HashMap::new(),
            key_base: HashMap::new(),
        };
        // Ansible creates these two before reading anything; `ungrouped` is
        // the first child of `all`.
        b.add_group("all");
        b.add_group("ungrouped");
        b.groups[ALL].children.push("ungrouped".into());
        b.groups[ALL].child_locs.push((0, None));
        b
    }

    /// What is read next comes from `path`.
    pub fn begin_source(&mut self, path: &Path) {
        self.current = self.sources.len();
        self.sources.push(path.to_path_buf());
    }

    /// The file being read (the label before any source is named).
    pub fn current_source(&self) -> &Path {
        self.sources.get(self.current).unwrap_or(&self.label)
    }

    fn source_path(&self, src: usize) -> &Path {
        self.sources.get(src).unwrap_or(&self.label)
    }

    pub fn err(&self, loc: Option<Loc>, message: impl Into<String>) -> InventoryError {
        InventoryError::at(self.current_source(), loc, message)
    }

    fn err_in(&self, src: usize, loc: Option<Loc>, message: impl Into<String>) -> InventoryError {
        InventoryError::at(self.source_path(src), loc, message)
    }

    /// The cross-source conflicts seen so far (see `LoadedInventory`).
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// The names and port of a host entry written at `loc`, counted first
    /// against the bound on the whole inventory (every entry of every
    /// source), so that an entry over it is refused before any name is made.
    pub fn expand_hosts(
        &mut self,
        entry: &str,
        loc: Option<Loc>,
    ) -> Result<(Vec<String>, Option<u16>), InventoryError> {
        let e = pattern::HostEntry::parse(entry).map_err(|m| self.err(loc, m))?;
        let n = e.count().map_err(|m| self.err(loc, m))?;
        let total = self.expanded.saturating_add(n);
        if total > self.max_hosts {
            return Err(self.err(
                loc,
                format!(
                    "host entry {} stands for {n} host(s), bringing the inventory to {total}, \
                     over the limit of {} (raise it with --inventory-max-hosts or \
                     PUSHSCAN_INVENTORY_MAX_HOSTS)",
                    crate::sanitize::display(entry, 80),
                    self.max_hosts
                ),
            ));
        }
        self.expanded = total;
        let names = e.names().map_err(|m| self.err(loc, m))?;
        Ok((names, e.port))
    }

    #[cfg(test)]
    fn with_max_hosts(mut self, n: u64) -> Builder {
        self.max_hosts = n;
        self
    }

    pub fn has_group(&self, name: &str) -> bool {
        self.group_index.contains_key(name)
    }

    /// Record a key file as already resolved for `host` (from a stored
    /// inventory), used while the host's key variable is the one that
    /// came with it.
    pub fn set_resolved_key_file(&mut self, host: &str, path: PathBuf) {
        self.key_files
            .insert(host.to_string(), (self.current, path));
    }

    pub fn add_group(&mut self, name: &str) -> usize {
        if let Some(&i) = self.group_index.get(name) {
            return i;
        }
        let i = self.groups.len();
        self.groups.push(GroupB {
            name: name.to_string(),
            ..GroupB::default()
        });
        self.group_index.insert(name.to_string(), i);
        i
    }

    pub fn add_child(
        &mut self,
        parent: &str,
        child: &str,
        loc: Option<Loc>,
    ) -> Result<(), InventoryError> {
        if child == "all" {
            return Err(self.err(loc, "group `all` cannot be the child of another group"));
        }
        if parent == child {
            return Err(self.err(loc, format!("group `{child}` cannot be its own child")));
        }
        let p = self.add_group(parent);
        self.add_group(child);
        let src = self.current;
        let g = &mut self.groups[p];
        if !g.children.iter().any(|c| c == child) {
            g.children.push(child.to_string());
            g.child_locs.push((src, loc));
        }
        Ok(())
    }

    /// Create `host` if it is new, in no group yet (`finish` puts a host
    /// left in none into `ungrouped`); its index.
    pub fn declare_host(&mut self, host: &str) -> usize {
        match self.host_index.get(host) {
            Some(&h) => h,
            None => {
                let h = self.hosts.len();
                self.host_index.insert(host.to_string(), h);
                self.hosts.push(HostB {
                    name: host.to_string(),
                    vars: BTreeMap::new(),
                });
                h
            }
        }
    }

    /// Add `host` to `group` (creating both as needed).
    pub fn add_host(&mut self, group: &str, host: &str) {
        let h = self.declare_host(host);
        let g = self.add_group(group);
        if self.membership.insert((g, h)) {
            self.groups[g].hosts.push(host.to_string());
        }
    }

    /// Set a group variable (creating the group as needed). A later
    /// assignment replaces an earlier one, as in Ansible.
    /// `ansible_group_priority` is kept as an integer, and not at all when
    /// it is the default 1 (Ansible keeps it apart from the variables).
    pub fn set_group_var(
        &mut self,
        group: &str,
        key: &str,
        mut def: VarDef,
    ) -> Result<(), InventoryError> {
        def.src = self.current;
        self.unvault(key, &mut def, None)?;
        check_var(self.current_source(), key, &def)?;
        let mut drop = false;
        if key == PRIORITY_VAR {
            let n = priority_value(&def.value).unwrap_or(1);
            def.value = Value::from(n);
            drop = n == 1;
        }
        let g = self.add_group(group);
        let old = self.groups[g].vars.get(key);
        let old_value = match old {
            Some(o) => Some((o.src, o.value.clone())),
            None if key == PRIORITY_VAR => Some((self.current, Value::from(1))),
            None => None,
        };
        self.note_conflict("group", group, key, old_value, &def);
        if drop {
            self.groups[g].vars.remove(key);
        } else {
            self.groups[g].vars.insert(key.to_string(), def);
        }
        Ok(())
    }

    /// Set a host variable; the host must have been added. A later
    /// assignment replaces an earlier one, as in Ansible.
    pub fn set_host_var(
        &mut self,
        host: &str,
        key: &str,
        mut def: VarDef,
    ) -> Result<(), InventoryError> {
        def.src = self.current;
        self.unvault(key, &mut def, None)?;
        check_var(self.current_source(), key, &def)?;
        match self.host_index.get(host) {
            Some(&i) => {
                let old = self.hosts[i]
                    .vars
                    .get(key)
                    .map(|o| (o.src, o.value.clone()));
                self.note_conflict("host", host, key, old, &def);
                self.hosts[i].vars.insert(key.to_string(), def);
                Ok(())
            }
            None => Err(self.err(def.key_loc, format!("internal: unknown host `{host}`"))),
        }
    }

    /// Record a host's merged variables as a stored inventory carries
    /// them (checked, and vaulted passwords decrypted, as any variable).
    pub(crate) fn set_stored_vars(
        &mut self,
        host: &str,
        defs: Vec<(String, VarDef)>,
    ) -> Result<(), InventoryError> {
        let h = self.declare_host(host);
        let mut vars = BTreeMap::new();
        for (k, mut def) in defs {
            def.src = self.current;
            self.unvault(&k, &mut def, None)?;
            check_var(self.current_source(), &k, &def)?;
            vars.insert(k, def);
        }
        self.stored_vars.insert(h, vars);
        Ok(())
    }

    /// A warning when a variable set by one source gets another value
    /// from a later one.
    fn note_conflict(
        &mut self,
        what: &str,
        name: &str,
        key: &str,
        old: Option<(usize, Value)>,
        new: &VarDef,
    ) {
        let Some((src, value)) = old else { return };
        if src == new.src || value == new.value {
            return;
        }
        self.warnings.push(format!(
            "{what} `{name}`: variable `{key}` is {} in {} but {} in {}; the later source wins",
            short_json(&value),
            self.source_path(src).display(),
            short_json(&new.value),
            self.source_path(new.src).display(),
        ));
    }

    /// Fold in an inventory read by other means (an LDAP source): its
    /// groups with their own variables, children and hosts, and its hosts'
    /// own variables, as if read from the current source.
    pub fn absorb(&mut self, inv: &Inventory) -> Result<(), InventoryError> {
        for h in &inv.hosts {
            self.declare_host(&h.name);
        }
        // Groups from `all` down, breadth first, then any left over, so
        // that they are created in an order close to the source's.
        let mut order: Vec<&Group> = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        let mut queue: VecDeque<&str> = VecDeque::from(["all"]);
        while let Some(name) = queue.pop_front() {
            if let Some(g) = inv.groups.get(name) {
                if seen.insert(name) {
                    order.push(g);
                    queue.extend(g.children.iter().map(String::as_str));
                }
            }
        }
        for g in inv.groups.values() {
            if seen.insert(g.name.as_str()) {
                order.push(g);
            }
        }
        for g in order {
            self.add_group(&g.name);
            for (k, v) in &g.vars {
                self.set_group_var(&g.name, k, VarDef::new(v.clone(), None, None))?;
            }
            for c in &g.children {
                self.add_child(&g.name, c, None)?;
            }
            for h in &g.hosts {
                self.add_host(&g.name, h);
            }
        }
        for h in &inv.hosts {
            for (k, v) in h.own_vars.iter() {
                self.set_host_var(&h.name, k, VarDef::new(v.clone(), None, None))?;
            }
        }
        Ok(())
    }

    /// Apply Ansible's inventory rules and resolve every host.
    pub fn finish(mut self) -> Result<Inventory, InventoryError> {
        let n = self.groups.len();

        // Groups nobody lists as a child hang under `all`, like Ansible's
        // reconcile step does.
        let mut has_parent = vec![false; n];
        for g in &self.groups {
            for c in &g.children {
                if let Some(&ci) = self.group_index.get(c) {
                    has_parent[ci] = true;
                }
            }
        }
        // Skip `all` itself and `ungrouped` (already its first child).
        let orphans: Vec<String> = self
            .groups
            .iter()
            .zip(&has_parent)
            .skip(2)
            .filter(|(_, has)| !**has)
            .map(|(g, _)| g.name.clone())
            .collect();
        for name in orphans {
            self.groups[ALL].children.push(name);
            self.groups[ALL].child_locs.push((0, None));
        }

        let children: Vec<Vec<usize>> = self
            .groups
            .iter()
            .map(|g| {
                g.children
                    .iter()
                    .filter_map(|c| self.group_index.get(c).copied())
                    .collect()
            })
            .collect();
        let mut parents: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (p, cs) in children.iter().enumerate() {
            for &c in cs {
                parents[c].push(p);
            }
        }

        let order = self.topological_order(&children)?;

        // Ansible's group depth: the longest distance from `all`.
        let mut depth = vec![0usize; n];
        for &g in &order {
            for &c in &children[g] {
                depth[c] = depth[c].max(depth[g] + 1);
            }
        }
        let priority: Vec<i64> = self
            .groups
            .iter()
            .map(|g| {
                g.vars
                    .get(PRIORITY_VAR)
                    .and_then(|d| priority_value(&d.value))
                    .unwrap_or(1)
            })
            .collect();

        // Direct memberships, host index -> group indices.
        let mut direct: Vec<Vec<usize>> = vec![Vec::new(); self.hosts.len()];
        for (gi, g) in self.groups.iter().enumerate() {
            for h in &g.hosts {
                if let Some(&hi) = self.host_index.get(h) {
                    direct[hi].push(gi);
                }
            }
        }

        // `ungrouped` holds exactly the hosts that are in no real group.
        let mut misplaced: HashSet<&str> = HashSet::new();
        for (hi, hb) in self.hosts.iter().enumerate() {
            let real = direct[hi].iter().any(|&g| g != ALL && g != UNGROUPED);
            let in_ungrouped = direct[hi].contains(&UNGROUPED);
            if real && in_ungrouped {
                misplaced.insert(hb.name.as_str());
                direct[hi].retain(|&g| g != UNGROUPED);
            } else if !real && !in_ungrouped {
                self.groups[UNGROUPED].hosts.push(hb.name.clone());
                direct[hi].push(UNGROUPED);
            }
        }
        if !misplaced.is_empty() {
            self.groups[UNGROUPED]
                .hosts
                .retain(|h| !misplaced.contains(h.as_str()));
        }
        // Every host is in `all`; like Ansible's output, it lists none.
        self.groups[ALL].hosts.clear();

        let mut hosts = Vec::with_capacity(self.hosts.len());
        for (hi, hb) in self.hosts.iter().enumerate() {
            let ancestors = ancestors_of(&direct[hi], &parents);
            let mut ordered: Vec<usize> = ancestors.iter().copied().collect();
            // Ansible's sort_groups: depth, then priority, then name.
            ordered.sort_by(|&a, &b| {
                (depth[a], priority[a], &self.groups[a].name).cmp(&(
                    depth[b],
                    priority[b],
                    &self.groups[b].name,
                ))
            });
            // Ansible's order (VariableManager.get_vars): the groups' own
            // variables (`all` first), then `group_vars/all` of every source
            // in turn, then each source's `group_vars` of the other groups
            // in the same order, then the host's own variables, then each
            // source's `host_vars`. A priority set in a variables file is an
            // ordinary variable there.
            let mut merged: BTreeMap<&str, &VarDef> = BTreeMap::new();
            if let Some(stored) = self.stored_vars.get(&hi) {
                merged.extend(stored.iter().map(|(k, d)| (k.as_str(), d)));
            } else {
                for &g in &ordered {
                    for (k, d) in &self.groups[g].vars {
                        if k != PRIORITY_VAR {
                            merged.insert(k, d);
                        }
                    }
                }
                for layer in &self.layers {
                    if let Some(vars) = layer.groups.get(&ALL) {
                        merged.extend(vars.iter().map(|(k, d)| (k.as_str(), d)));
                    }
                }
                for layer in &self.layers {
                    for g in ordered.iter().filter(|&&g| g != ALL) {
                        if let Some(vars) = layer.groups.get(g) {
                            merged.extend(vars.iter().map(|(k, d)| (k.as_str(), d)));
                        }
                    }
                }
                for (k, d) in &hb.vars {
                    merged.insert(k, d);
                }
                for layer in &self.layers {
                    if let Some(vars) = layer.hosts.get(&hi) {
                        merged.extend(vars.iter().map(|(k, d)| (k.as_str(), d)));
                    }
                }
            }
            let mut host = self.resolve_host(hb, &merged, &ancestors, &direct[hi], &parents)?;
            // The password var Ansible's connection plugin would read: the
            // last defined name of its list.
            let names = host.connection.vars().password;
            // A stored inventory holds a placeholder where a vaulted file's
            // password was: it is not stored, so the host has none (and a
            // resumed run takes its credential from elsewhere).
            host.password = names
                .iter()
                .rev()
                .find_map(|n| merged.get(n).filter(|d| !d.value.is_null()).map(|d| (n, d)))
                .filter(|(_, d)| {
                    d.secret.is_some() || vault_text(&d.value).is_some_and(vault::is_vaulted)
                })
                .map(|(n, d)| InventoryPassword {
                    var: n.to_string(),
                    secret: d.secret.clone(),
                });
            // What `--export` shows for the host: its own variables, then
            // its `host_vars` files.
            if self.layers.iter().any(|l| l.hosts.contains_key(&hi)) {
                let mut own: BTreeMap<String, Value> = (*host.own_vars).clone();
                for layer in &self.layers {
                    if let Some(vars) = layer.hosts.get(&hi) {
                        own.extend(vars.iter().map(|(k, d)| (k.clone(), d.value.clone())));
                    }
                }
                host.own_vars = Arc::new(own);
            }
            hosts.push(host);
        }
        let layered = !self.stored_vars.is_empty()
            || self
                .layers
                .iter()
                .any(|l| !l.groups.is_empty() || !l.hosts.is_empty());
        // What `--export` shows for a group: its own variables, then its
        // `group_vars` files, then the priority the inventory gave it.
        let mut group_file_vars: HashMap<usize, BTreeMap<String, Value>> = HashMap::new();
        for layer in &self.layers {
            for (g, vars) in &layer.groups {
                group_file_vars
                    .entry(*g)
                    .or_default()
                    .extend(vars.iter().map(|(k, d)| (k.clone(), d.value.clone())));
            }
        }

        let groups = self
            .groups
            .into_iter()
            .enumerate()
            .map(|(i, g)| {
                let mut vars: BTreeMap<String, Value> =
                    g.vars.into_iter().map(|(k, d)| (k, d.value)).collect();
                if let Some(files) = group_file_vars.remove(&i) {
                    let priority = vars.get(PRIORITY_VAR).cloned();
                    vars.extend(files);
                    if let Some(p) = priority {
                        vars.insert(PRIORITY_VAR.to_string(), p);
                    }
                }
                let group = Group {
                    name: g.name.clone(),
                    children: g.children,
                    hosts: g.hosts,
                    vars,
                };
                (g.name, group)
            })
            .collect();
        Ok(Inventory {
            source: self.label,
            hosts,
            groups,
            layered,
        })
    }

    /// Kahn's algorithm from `all`, iterative so that a long chain of groups
    /// cannot exhaust the stack. Whatever is left over sits on a cycle.
    fn topological_order(&self, children: &[Vec<usize>]) -> Result<Vec<usize>, InventoryError> {
        let n = children.len();
        let mut indegree = vec![0usize; n];
        for cs in children {
            for &c in cs {
                indegree[c] += 1;
            }
        }
        let mut queue: VecDeque<usize> = (0..n).filter(|&g| indegree[g] == 0).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(g) = queue.pop_front() {
            order.push(g);
            for &c in &children[g] {
                indegree[c] -= 1;
                if indegree[c] == 0 {
                    queue.push_back(c);
                }
            }
        }
        if order.len() == n {
            return Ok(order);
        }
        // Every leftover group still has a leftover parent (that is why its
        // in-degree never reached zero), so walking up through leftover
        // parents must revisit a group: the walk's tail is a cycle.
        let left: Vec<bool> = (0..n).map(|g| indegree[g] > 0).collect();
        let mut parents: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (p, cs) in children.iter().enumerate() {
            for &c in cs {
                parents[c].push(p);
            }
        }
        let start = (0..n).find(|&g| left[g]).unwrap_or(0);
        let mut path = vec![start];
        let mut seen_at = HashMap::new();
        seen_at.insert(start, 0usize);
        let mut cur = start;
        let cycle: Vec<usize> = loop {
            let Some(up) = parents[cur].iter().copied().find(|&p| left[p]) else {
                return Err(self.err(None, "group children form a cycle"));
            };
            if let Some(&pos) = seen_at.get(&up) {
                // path[i + 1] is a parent of path[i]; turn it downward.
                let mut down: Vec<usize> = path[pos..].iter().rev().copied().collect();
                down.insert(0, up);
                break down;
            }
            seen_at.insert(up, path.len());
            path.push(up);
            cur = up;
        };
        // Point at the edge written last: it is the one that closed the loop.
        let mut at: Option<(usize, Loc)> = None;
        for w in cycle.windows(2) {
            let (p, c) = (w[0], w[1]);
            let g = &self.groups[p];
            let edge = g
                .children
                .iter()
                .position(|x| *x == self.groups[c].name)
                .and_then(|i| g.child_locs.get(i).copied())
                .and_then(|(src, loc)| loc.map(|l| (src, l)));
            if let Some((src, e)) = edge {
                if at.is_none_or(|(s, l)| (src, e.line, e.col) > (s, l.line, l.col)) {
                    at = Some((src, e));
                }
            }
        }
        let names: Vec<&str> = cycle
            .iter()
            .map(|&g| self.groups[g].name.as_str())
            .collect();
        let (src, loc) = at.map_or((self.current, None), |(s, l)| (s, Some(l)));
        Err(self.err_in(
            src,
            loc,
            format!("group children form a cycle: {}", names.join(" -> ")),
        ))
    }

    fn resolve_host(
        &self,
        hb: &HostB,
        merged: &BTreeMap<&str, &VarDef>,
        ancestors: &BTreeSet<usize>,
        direct: &[usize],
        parents: &[Vec<usize>],
    ) -> Result<Host, InventoryError> {
        // The last defined name in the list wins (see `transport::InventoryVars`).
        let pick = |names: &[&str]| {
            names
                .iter()
                .rev()
                .find_map(|n| merged.get(n).copied().filter(|d| !d.effective().is_null()))
        };
        let text = |names: &[&str]| -> Result<Option<String>, InventoryError> {
            match pick(names) {
                None => Ok(None),
                Some(d) => text_value(d.effective()).ok_or_else(|| {
                    self.err_in(
                        d.src,
                        d.val_loc,
                        format!("expected a string, found {}", describe(d.effective())),
                    )
                }),
            }
        };
        let connection = match pick(&[CONNECTION_VAR]) {
            Some(d) => match d.effective() {
                Value::String(s) => transport::parse(s).ok_or_else(|| {
                    self.err_in(
                        d.src,
                        d.val_loc,
                        format!("unsupported ansible_connection {s:?}"),
                    )
                })?,
                other => {
                    return Err(self.err_in(
                        d.src,
                        d.val_loc,
                        format!("unsupported ansible_connection {}", describe(other)),
                    ))
                }
            },
            None => Transport::ansible_default(),
        };
        let vars = connection.vars();
        let (host_vars, port_vars, user_vars) = (vars.host, vars.port, vars.user);
        let address = text(host_vars)?.unwrap_or_else(|| hb.name.clone());
        let user = text(user_vars)?;
        let port = match pick(port_vars) {
            Some(d) => Some(port_value(d.effective()).ok_or_else(|| {
                self.err_in(
                    d.src,
                    d.val_loc,
                    format!("invalid port {}", describe(d.effective())),
                )
            })?),
            None => None,
        };
        let key_src = pick(KEY_VARS).map_or(self.current, |d| d.src);
        let key_file = match (text(KEY_VARS)?, self.key_files.get(&hb.name)) {
            (Some(_), Some((src, resolved))) if *src == key_src => Some(resolved.clone()),
            (Some(k), _) => Some(self.resolve_key_file(&k, key_src)),
            (None, _) => None,
        };

        let groups: Vec<String> = ancestors
            .iter()
            .filter(|&&g| g != ALL && g != UNGROUPED)
            .map(|&g| self.groups[g].name.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();

        Ok(Host {
            name: hb.name.clone(),
            address,
            port,
            user,
            connection,
            key_file,
            groups,
            group_paths: self.group_paths(direct, parents),
            vars: Arc::new(
                merged
                    .iter()
                    .map(|(k, d)| (k.to_string(), d.value.clone()))
                    .collect(),
            ),
            own_vars: Arc::new(
                hb.vars
                    .iter()
                    .map(|(k, d)| (k.clone(), d.value.clone()))
                    .collect(),
            ),
            password: None,
        })
    }

    /// A relative key file is taken from the directory of the file that
    /// named it.
    fn resolve_key_file(&self, key: &str, src: usize) -> PathBuf {
        let p = Path::new(key);
        if p.is_absolute() || key.starts_with('~') {
            return p.to_path_buf();
        }
        if let Some(base) = self.key_base.get(&src) {
            return base.join(p);
        }
        match self.source_path(src).parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.join(p),
            _ => p.to_path_buf(),
        }
    }

    /// Every chain top-level group -> ... -> direct group, found by walking
    /// parent links upward with an explicit stack (no recursion).
    fn group_paths(&self, direct: &[usize], parents: &[Vec<usize>]) -> Vec<Vec<String>> {
        let mut out: BTreeSet<Vec<String>> = BTreeSet::new();
        // Each stack entry is a partial chain, bottom group first.
        let mut stack: Vec<Vec<usize>> = direct
            .iter()
            .filter(|&&g| g != ALL && g != UNGROUPED)
            .map(|&g| vec![g])
            .collect();
        let mut budget = MAX_GROUP_PATHS.saturating_mul(64);
        while let Some(chain) = stack.pop() {
            if out.len() >= MAX_GROUP_PATHS || budget == 0 {
                break;
            }
            budget -= 1;
            let top = chain[chain.len() - 1];
            let ups: Vec<usize> = parents[top]
                .iter()
                .copied()
                .filter(|&p| p != ALL && p != UNGROUPED)
                .collect();
            if ups.is_empty() {
                out.insert(
                    chain
                        .iter()
                        .rev()
                        .map(|&g| self.groups[g].name.clone())
                        .collect(),
                );
                continue;
            }
            for p in ups {
                let mut next = chain.clone();
                next.push(p);
                stack.push(next);
            }
        }
        out.into_iter().collect()
    }
}

/// The direct groups plus all their ancestors (iterative).
fn ancestors_of(direct: &[usize], parents: &[Vec<usize>]) -> BTreeSet<usize> {
    let mut seen: BTreeSet<usize> = BTreeSet::new();
    let mut stack: Vec<usize> = direct.to_vec();
    while let Some(g) = stack.pop() {
        if seen.insert(g) {
            stack.extend(parents[g].iter().copied());
        }
    }
    seen.insert(ALL);
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(v: Value) -> VarDef {
        VarDef::new(v, Some(Loc::new(3, 5)), Some(Loc::new(3, 12)))
    }

    #[test]
    fn error_display_is_file_line_col() {
        let e = InventoryError::at(Path::new("inv.yml"), Some(Loc::new(4, 7)), "boom");
        assert_eq!(e.to_string(), "inv.yml:4:7: boom");
        let e = InventoryError::at(Path::new("inv.yml"), Some(Loc::new(4, 0)), "boom");
        assert_eq!(e.to_string(), "inv.yml:4: boom");
        assert_eq!(InventoryError::new(Path::new("x"), "m").to_string(), "x: m");
    }

    #[test]
    fn connection_names() {
        let name = |v: &str| transport::parse(v).map(Transport::name);
        assert_eq!(name("ssh"), Some("ssh"));
        assert_eq!(name("paramiko"), Some("ssh"));
        assert_eq!(name("smart"), Some("ssh"));
        assert_eq!(name("ansible.builtin.psrp"), Some("winrm"));
        assert_eq!(name("local"), Some("local"));
        assert_eq!(name("docker"), None);
    }

    #[test]
    fn port_checks() {
        let p = Path::new("i");
        assert!(check_var(p, "ansible_port", &def(Value::from(22))).is_ok());
        assert!(check_var(p, "ansible_port", &def(Value::from("2222"))).is_ok());
        let e = check_var(p, "ansible_port", &def(Value::from(0))).unwrap_err();
        assert_eq!((e.line, e.col), (Some(3), Some(12)));
        assert!(check_var(p, "ansible_ssh_port", &def(Value::from(65536))).is_err());
        assert!(check_var(p, "ansible_port", &def(Value::from("ssh"))).is_err());
    }

    #[test]
    fn secrets_point_at_the_key() {
        let e = check_var(
            Path::new("i"),
            "ansible_become_pass",
            &def(Value::from("x")),
        )
        .unwrap_err();
        assert_eq!((e.line, e.col), (Some(3), Some(5)));
        assert!(e.message.contains("secrets are not read from inventories"));
        let e = check_var(
            Path::new("i"),
            "ansible_password",
            &def(Value::from("{{ lookup('env', 'P') }}")),
        )
        .unwrap_err();
        assert!(e.message.contains("templated secrets are unsupported"));
    }

    #[test]
    fn sniffing() {
        assert!(looks_like_yaml("# c\nall:\n  hosts:\n"));
        assert!(looks_like_yaml("---\n"));
        assert!(looks_like_yaml("{\"all\": {}}"));
        assert!(!looks_like_yaml("[web]\nhost1\n"));
        assert!(!looks_like_yaml("host1 ansible_port=22\n"));
        assert!(!looks_like_yaml("web01:2222\n"));
        assert!(!looks_like_yaml(""));
    }

    #[test]
    fn the_host_bound_is_counted_over_every_source_before_expanding() {
        let mut b = Builder::with_label(Path::new("a + b")).with_max_hosts(25);
        b.begin_source(Path::new("a.ini"));
        let (names, _) = b.expand_hosts("w[01:20]", Some(Loc::new(2, 1))).unwrap();
        assert_eq!(names.len(), 20);
        b.begin_source(Path::new("b.ini"));
        assert_eq!(b.expand_hosts("x[1:5]", None).unwrap().0.len(), 5);
        // One more is over; a range of 10^12 is refused as fast as one of 1.
        for entry in ["y", "z[0:999999][0:999999]"] {
            let e = b.expand_hosts(entry, Some(Loc::new(7, 3))).unwrap_err();
            assert_eq!(
                (e.file.as_path(), e.line, e.col),
                (Path::new("b.ini"), Some(7), Some(3))
            );
            assert!(e.message.contains("limit of 25"), "{e}");
        }
    }

    #[test]
    fn cycle_is_reported_with_location() {
        let mut b = Builder::new(Path::new("c.ini"));
        b.add_child("a", "b", Some(Loc::new(2, 1))).unwrap();
        b.add_child("b", "c", Some(Loc::new(5, 1))).unwrap();
        b.add_child("c", "a", Some(Loc::new(8, 1))).unwrap();
        let e = b.finish().unwrap_err();
        assert!(e.message.contains("cycle"), "{e}");
        assert!(e.line.is_some());
    }

    #[test]
    fn key_file_resolution() {
        let b = Builder::new(Path::new("/etc/inv/hosts.ini"));
        assert_eq!(
            b.resolve_key_file("k/id", 0),
            PathBuf::from("/etc/inv/k/id")
        );
        assert_eq!(
            b.resolve_key_file("~/.ssh/id", 0),
            PathBuf::from("~/.ssh/id")
        );
        assert_eq!(b.resolve_key_file("/k", 0), PathBuf::from("/k"));
        let b = Builder::new(Path::new("hosts.ini"));
        assert_eq!(b.resolve_key_file("k", 0), PathBuf::from("k"));
    }
}
