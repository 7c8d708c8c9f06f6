//! Credentials for Windows hosts (WinRM and SMB). SSH hosts use keys or
//! agents, but a Windows fleet is reached with an account and a password, often
//! a different account per site or per group (the helpdesk account for
//! desktops, a local admin in the lab). That password can read and run
//! anything on every host of the sweep, so this module decides where it may
//! come from and where it must never go. It comes from the
//! `PUSHSCAN_PASSWORD` environment variable, from an interactive prompt
//! (`--ask-pass`), or from a credentials file the operator keeps private:
//! mode 0600 and owned by the user running pushscan, else it is refused
//! before it is parsed, because a secret that others can already read is
//! leaked whatever we do next. It never comes from a command-line flag
//! (argv is visible to every local user) nor from the inventory (which is
//! shared and versioned; `ansible_password` is refused there). Once read, a
//! password lives only in a [`SecretString`]: zeroized on drop, redacted by
//! every `Debug` here, and no error message quotes a password, not even
//! when it sits where YAML expected something else. So it cannot reach logs,
//! the journal or reports by accident. Zeroizing is best effort: our own
//! copies (the file buffer, the parsed tree) are wiped, the YAML parser's
//! internal buffers are not under our control.
//!
//! A host picks its entry of the file with the inventory variable
//! `pushscan_credential` (usually set on a group), else the file's
//! `default:`, else the environment/prompt credential ([`resolve`]).
//! Accounts are written the ways Windows accepts: `DOMAIN\user`,
//! `user@domain` (a UPN) or a plain `user` ([`Account`]).
//!
//! The file (YAML; unknown keys are errors, located `file:line:col`):
//!
//! ```yaml
//! # pushscan credentials (chmod 600)
//! default: helpdesk          # optional: entry used when a host names none
//! credentials:
//!   helpdesk:
//!     user: 'CORP\svc-scan'  # single quotes: `\` is literal
//!     password: '...'        # quoted, so YAML cannot read it as a number
//!   lab:
//!     user: labadmin@lab.example
//!     password_env: LAB_PASSWORD   # instead: read this variable at load
//! ```

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::fs::Metadata;
use std::io::Read;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde_saphyr::MessageFormatter;
use zeroize::Zeroizing;

use crate::located::{Key, Kind, Loc, Node};

/// Environment variable holding the account of the env/prompt credential.
pub const ENV_USER: &str = "PUSHSCAN_USER";
/// Environment variable holding the password of the env/prompt credential.
pub const ENV_PASSWORD: &str = "PUSHSCAN_PASSWORD";
/// Inventory variable naming the credentials-file entry a host uses.
pub const HOST_VAR: &str = "pushscan_credential";

/// A credentials file is a handful of entries; anything bigger is not one.
const MAX_FILE_BYTES: usize = 64 * 1024;
/// Nesting the format needs is 3 (file, `credentials`, entry); the parser's
/// budget keeps recursion (and stack) small on hostile input.
const MAX_YAML_DEPTH: usize = 8;
/// sAMAccountName is at most 20 characters and a UPN at most 1024; 256 per
/// part covers every real account without admitting unbounded input.
const MAX_USER_CHARS: usize = 256;
/// A DNS name is at most 253 characters, a NetBIOS name 15.
const MAX_DOMAIN_CHARS: usize = 255;
/// Windows passwords are at most 256 characters (127 for some APIs); the
/// bound is generous, it only keeps input bounded.
const MAX_PASSWORD_CHARS: usize = 1024;
const MAX_ENTRY_NAME_CHARS: usize = 128;

/// Characters Windows does not allow in an account name (sAMAccountName).
const BAD_USER_CHARS: &[char] = &[
    '"', '/', '\\', '[', ']', ':', ';', '|', '=', ',', '+', '*', '?', '<', '>',
];
/// A UPN prefix is RFC 822-like (`first.last+scan@...`): as above, but `+`
/// and `=` are legal there.
const BAD_UPN_PREFIX_CHARS: &[char] = &[
    '"', '/', '\\', '[', ']', ':', ';', '|', ',', '*', '?', '<', '>',
];
/// Characters that cannot appear in a NetBIOS or DNS domain name.
const BAD_DOMAIN_CHARS: &[char] = &[
    '"', '/', '\\', '[', ']', ':', ';', '|', '=', ',', '+', '*', '?', '<', '>', '@',
];

/// A Windows account as written by the operator.
///
/// The fields are public to read; build accounts with [`Account::parse`]
/// (the form, and the UPN NTLM sends, are kept beside them).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Account {
    /// `DOMAIN` of `DOMAIN\user`, `domain` of `user@domain`, `None` for a
    /// plain `user`.
    pub domain: Option<String>,
    /// The account name without its domain.
    pub user: String,
    form: Form,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Form {
    /// `user`: the server's own account database decides (local account,
    /// or the domain the server belongs to).
    Plain,
    /// `DOMAIN\user` (down-level logon name; `.\user` is a local account).
    DownLevel,
    /// `user@domain`, kept whole: NTLM sends the UPN as the user name.
    Upn(String),
}

impl Account {
    /// Parses `DOMAIN\user`, `user@domain` or `user`. Refuses control
    /// characters, empty parts, surrounding spaces, characters Windows does
    /// not allow in account or domain names, and over-long names.
    pub fn parse(s: &str) -> Result<Account, String> {
        let bad = |why: &str| format!("invalid account {s:?}: {why}");
        if s.is_empty() {
            return Err("the account name is empty".to_string());
        }
        if s.chars().any(char::is_control) {
            return Err(bad("it contains a control character"));
        }
        if s.chars().count() > MAX_USER_CHARS + 1 + MAX_DOMAIN_CHARS {
            return Err(format!(
                "invalid account: longer than {} characters",
                MAX_USER_CHARS + 1 + MAX_DOMAIN_CHARS
            ));
        }
        if let Some((domain, user)) = s.split_once('\\') {
            if user.contains('\\') {
                return Err(bad("more than one `\\` (write DOMAIN\\user)"));
            }
            check_domain(domain, true).map_err(|w| bad(&w))?;
            // `@` is allowed in a sAMAccountName, so `DOM\a@b` is user `a@b`.
            check_user(user, BAD_USER_CHARS).map_err(|w| bad(&w))?;
            Ok(Account {
                domain: Some(domain.to_string()),
                user: user.to_string(),
                form: Form::DownLevel,
            })
        } else if let Some((user, domain)) = s.rsplit_once('@') {
            if user.contains('@') {
                return Err(bad("more than one `@` (write user@domain)"));
            }
            check_user(user, BAD_UPN_PREFIX_CHARS).map_err(|w| bad(&w))?;
            check_domain(domain, false).map_err(|w| bad(&w))?;
            Ok(Account {
                domain: Some(domain.to_string()),
                user: user.to_string(),
                form: Form::Upn(s.to_string()),
            })
        } else {
            check_user(s, BAD_USER_CHARS).map_err(|w| bad(&w))?;
            Ok(Account {
                domain: None,
                user: s.to_string(),
                form: Form::Plain,
            })
        }
    }

    /// The user name NTLM authenticates: the UPN whole (`user@dom.example`)
    /// for the `user@domain` form, as pywinrm/requests-ntlm and Windows
    /// itself do; the bare user otherwise.
    pub fn ntlm_user(&self) -> &str {
        match &self.form {
            Form::Upn(upn) => upn,
            Form::Plain | Form::DownLevel => &self.user,
        }
    }

    /// The domain NTLM authenticates in: `DOMAIN` of `DOMAIN\user`; empty for
    /// a UPN (the server resolves its suffix) and for a plain user.
    pub fn ntlm_domain(&self) -> &str {
        match (&self.form, &self.domain) {
            (Form::DownLevel, Some(d)) => d,
            _ => "",
        }
    }
}

/// The account as it was written: `DOMAIN\user`, `user@domain` or `user`.
impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.form, &self.domain) {
            (Form::Upn(upn), _) => f.write_str(upn),
            (Form::DownLevel, Some(d)) => write!(f, "{d}\\{}", self.user),
            _ => f.write_str(&self.user),
        }
    }
}

fn check_user(user: &str, forbidden: &[char]) -> Result<(), String> {
    if user.is_empty() {
        return Err("the user name is empty".into());
    }
    if user.trim() != user {
        return Err("the user name starts or ends with a space".into());
    }
    if user.chars().count() > MAX_USER_CHARS {
        return Err(format!(
            "the user name is longer than {MAX_USER_CHARS} characters"
        ));
    }
    if let Some(c) = user.chars().find(|c| forbidden.contains(c)) {
        return Err(format!("`{c}` is not allowed in a user name"));
    }
    if user.chars().all(|c| c == '.' || c == ' ') {
        return Err("a user name cannot be only dots and spaces".into());
    }
    Ok(())
}

/// `local_dot`: `.` (the local machine) is a valid `DOMAIN` of `.\user`.
fn check_domain(domain: &str, local_dot: bool) -> Result<(), String> {
    if domain.is_empty() {
        return Err("the domain is empty".into());
    }
    if local_dot && domain == "." {
        return Ok(());
    }
    if domain.chars().count() > MAX_DOMAIN_CHARS {
        return Err(format!(
            "the domain is longer than {MAX_DOMAIN_CHARS} characters"
        ));
    }
    if let Some(c) = domain
        .chars()
        .find(|c| c.is_whitespace() || BAD_DOMAIN_CHARS.contains(c))
    {
        return Err(if c.is_whitespace() {
            "the domain contains a space".into()
        } else {
            format!("`{c}` is not allowed in a domain name")
        });
    }
    if domain.starts_with('.') || domain.ends_with('.') || domain.contains("..") {
        return Err("the domain has an empty label (a leading, trailing or doubled `.`)".into());
    }
    Ok(())
}

/// Refuses what is never an intended password: empty, over-long, or holding
/// a control character (typically the line break a YAML `|` block or an
/// `echo` into a file leaves at the end). The message never shows it.
fn check_password(password: &str) -> Result<(), &'static str> {
    if password.is_empty() {
        return Err("is empty");
    }
    if password.chars().count() > MAX_PASSWORD_CHARS {
        return Err("is longer than 1024 characters");
    }
    if password.chars().any(char::is_control) {
        return Err("contains a control character (a trailing line break?)");
    }
    Ok(())
}

/// An account and its password. `Debug` shows the account only.
#[derive(Clone)]
pub struct Credential {
    pub account: Account,
    pub password: SecretString,
}

impl Credential {
    pub fn new(account: Account, password: SecretString) -> Credential {
        Credential { account, password }
    }

    /// The same password for another account: a host's `ansible_user`
    /// overrides the account of the credential it resolved to.
    pub fn with_user(&self, account: Account) -> Credential {
        Credential {
            account,
            password: self.password.clone(),
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("account", &format_args!("{}", self.account))
            .field("password", &format_args!("[redacted]"))
            .finish()
    }
}

/// A credentials-file error, located (`file:line:col: message`) when the
/// problem is at a known place. Never contains a password.
#[derive(Debug)]
pub struct CredentialsError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub col: Option<usize>,
    pub message: String,
}

impl fmt::Display for CredentialsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::located::write(f, &self.file, self.line, self.col, &self.message)
    }
}

impl std::error::Error for CredentialsError {}

impl CredentialsError {
    fn at(file: &Path, loc: Option<Loc>, message: impl Into<String>) -> Self {
        CredentialsError {
            file: file.to_path_buf(),
            line: loc.map(|l| l.line),
            col: loc.and_then(|l| (l.col != 0).then_some(l.col)),
            message: message.into(),
        }
    }
}

/// The entries of a credentials file, by name.
pub struct CredentialStore {
    source: PathBuf,
    entries: BTreeMap<String, Credential>,
    default: Option<String>,
}

impl fmt::Debug for CredentialStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialStore")
            .field("source", &self.source)
            .field("entries", &self.entries)
            .field("default", &self.default)
            .finish()
    }
}

impl CredentialStore {
    /// Reads a credentials file. Its owner and mode are checked on the open
    /// handle first (so the file checked is the file read), and nothing is
    /// parsed from a file others can read. `password_env` variables are
    /// read now, so an unset one fails the load, not a host mid-sweep.
    pub fn load(path: &Path) -> anyhow::Result<CredentialStore> {
        let fail = |m: String| CredentialsError::at(path, None, m);
        let mut options = std::fs::OpenOptions::new();
        options.read(true);
        // Do not hang on a FIFO given by mistake: it is refused below as
        // not a regular file (on which the flag has no effect).
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
        let mut file = options
            .open(path)
            .map_err(|e| fail(format!("cannot open credentials file: {e}")))?;
        let meta = file
            .metadata()
            .map_err(|e| fail(format!("cannot stat credentials file: {e}")))?;
        if !meta.is_file() {
            return Err(fail("a credentials file must be a regular file".into()).into());
        }
        check_private(path, &meta)?;
        // A fixed buffer, never reallocated, wiped on drop.
        let mut buf = Zeroizing::new(vec![0u8; MAX_FILE_BYTES + 1]);
        let mut len = 0;
        loop {
            match file.read(&mut buf[len..]) {
                Ok(0) => break,
                Ok(n) => {
                    len += n;
                    if len > MAX_FILE_BYTES {
                        return Err(fail(format!(
                            "larger than {} KiB: not a credentials file",
                            MAX_FILE_BYTES / 1024
                        ))
                        .into());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(fail(format!("cannot read credentials file: {e}")).into()),
            }
        }
        let text = std::str::from_utf8(&buf[..len])
            .map_err(|_| fail("the credentials file is not valid UTF-8".into()))?;
        Ok(parse(text, path, &|name| std::env::var_os(name))?)
    }

    /// The credential given outside a file: the account from `user` (the
    /// caller's flag) else `PUSHSCAN_USER`; the password from the terminal
    /// when `ask_pass` (explicit, so it wins), else `PUSHSCAN_PASSWORD`
    /// (empty counts as unset). `None` when there is no password source;
    /// an error when there is a password but no account.
    pub fn from_env_and_prompt(
        user: Option<&str>,
        ask_pass: bool,
    ) -> anyhow::Result<Option<Credential>> {
        from_sources(user, ask_pass, &|name| std::env::var_os(name), &|prompt| {
            rpassword::prompt_password(prompt)
        })
    }

    pub fn get(&self, name: &str) -> Option<&Credential> {
        self.entries.get(name)
    }

    /// The entry named by the file's `default:`, if it has one.
    pub fn default_entry(&self) -> Option<&Credential> {
        self.default.as_deref().and_then(|n| self.entries.get(n))
    }

    /// Entry names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.entries.keys().map(String::as_str).collect()
    }

    /// The file the store was read from.
    pub fn source(&self) -> &Path {
        &self.source
    }
}

/// Which credential a host uses: its `pushscan_credential` var (must exist in
/// the store, else an error naming the host and the entry), else the store's
/// default, else the env/prompt credential, else an error saying how to
/// provide one.
pub fn resolve<'a>(
    host_vars: &serde_json::Value,
    host_name: &str,
    store: Option<&'a CredentialStore>,
    fallback: Option<&'a Credential>,
) -> Result<&'a Credential, String> {
    if let Some(v) = host_vars.get(HOST_VAR) {
        let serde_json::Value::String(name) = v else {
            return Err(format!(
                "host {host_name}: {HOST_VAR} must be a string naming an entry of the \
                 credentials file, found {}",
                json_what(v)
            ));
        };
        let Some(store) = store else {
            return Err(format!(
                "host {host_name}: {HOST_VAR} is {name:?}, but no credentials file was given \
                 to look it up in"
            ));
        };
        return store.get(name).ok_or_else(|| {
            format!(
                "host {host_name}: {HOST_VAR} is {name:?}, which is not an entry of {} \
                 (entries: {})",
                store.source.display(),
                store.names().join(", ")
            )
        });
    }
    if let Some(c) = store.and_then(CredentialStore::default_entry) {
        return Ok(c);
    }
    fallback.ok_or_else(|| {
        format!(
            "host {host_name}: no Windows credential: set {ENV_USER} and {ENV_PASSWORD}, or \
             use --ask-pass, or give a credentials file (chmod 600) with a `default:` entry \
             or name one of its entries with the {HOST_VAR} variable of the host or its group"
        )
    })
}

fn json_what(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a mapping",
    }
}

type EnvLookup<'e> = &'e dyn Fn(&str) -> Option<OsString>;

fn from_sources(
    user: Option<&str>,
    ask_pass: bool,
    env: EnvLookup<'_>,
    prompt: &dyn Fn(&str) -> std::io::Result<String>,
) -> anyhow::Result<Option<Credential>> {
    let env_user;
    let user = match user {
        Some(u) => Some((u, "the given account")),
        None => match env(ENV_USER) {
            Some(u) => {
                env_user = u
                    .into_string()
                    .map_err(|_| anyhow::anyhow!("{ENV_USER} is not valid UTF-8"))?;
                Some((env_user.as_str(), ENV_USER))
            }
            None => None,
        },
    };
    // Wiped on drop, on every path out of here.
    let env_password: Option<Zeroizing<String>> = if ask_pass {
        None
    } else {
        match env(ENV_PASSWORD) {
            None => return Ok(None),
            Some(p) if p.is_empty() => return Ok(None),
            Some(p) => Some(Zeroizing::new(p.into_string().map_err(|mut p| {
                wipe_os_string(&mut p);
                anyhow::anyhow!("{ENV_PASSWORD} is not valid UTF-8")
            })?)),
        }
    };
    let source = if ask_pass { "--ask-pass" } else { ENV_PASSWORD };
    let Some((user, user_source)) = user else {
        anyhow::bail!(
            "{source} gives a password but no account: set {ENV_USER} to DOMAIN\\user, \
             user@domain or user"
        );
    };
    let account = Account::parse(user).map_err(|e| anyhow::anyhow!("{user_source}: {e}"))?;
    let password = match env_password {
        Some(p) => p,
        None => Zeroizing::new(
            prompt(&format!("Password for {account}: "))
                .map_err(|e| anyhow::anyhow!("--ask-pass needs a terminal: {e}"))?,
        ),
    };
    check_password(&password).map_err(|why| anyhow::anyhow!("the password from {source} {why}"))?;
    // From a `&str`, the secret is an exact-size copy (no reallocation leaves
    // a stray copy behind); the source is wiped when `password` drops.
    Ok(Some(Credential::new(
        account,
        SecretString::from(password.as_str()),
    )))
}

fn wipe_os_string(s: &mut OsString) {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt;
        use zeroize::Zeroize;
        let mut bytes = std::mem::take(s).into_vec();
        bytes.zeroize();
    }
    #[cfg(not(unix))]
    {
        // No byte access to an OsString here; drop it (best effort).
        *s = OsString::new();
    }
}

/// Refuses a credentials file that others can read or that belongs to
/// someone else, as ssh does for private keys: `mode & 0o077` must be 0
/// (0600 and 0400 pass), and the owner must be the effective user.
#[cfg(unix)]
fn check_private(path: &Path, meta: &Metadata) -> Result<(), CredentialsError> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    check_mode_owner(path, meta.mode(), meta.uid(), me)
}

#[cfg(unix)]
fn check_mode_owner(path: &Path, mode: u32, uid: u32, me: u32) -> Result<(), CredentialsError> {
    let p = path.display();
    if uid != me {
        return Err(CredentialsError::at(
            path,
            None,
            format!(
                "the credentials file belongs to uid {uid}, not to the user running pushscan \
                 (uid {me}); it must be your own private file: chown it, then chmod 600 {p}"
            ),
        ));
    }
    if mode & 0o077 != 0 {
        return Err(CredentialsError::at(
            path,
            None,
            format!(
                "the credentials file is accessible to group or others (mode {:04o}); \
                 refusing to read passwords others can read: chmod 600 {p}",
                mode & 0o7777
            ),
        ));
    }
    Ok(())
}

/// Off unix there are no mode bits: who may read the file is decided by its
/// ACL, which the standard library cannot read and this crate has no Windows
/// API binding for. Checked here: only that it is a regular file (done by
/// the caller). Not checked: owner and ACL. Keep the file in your profile
/// (whose default ACL admits only you, SYSTEM and Administrators).
#[cfg(not(unix))]
fn check_private(_path: &Path, _meta: &Metadata) -> Result<(), CredentialsError> {
    Ok(())
}

// ---------------------------------------------------------------------------
// The file format.
//
// Parsed into the located YAML tree (`crate::located::Node`) rather than into
// typed structs: serde's own type errors quote the offending scalar
// (`invalid type: string "hunter2", expected ...`), which for a mistyped entry
// is the password. Walking the tree, every message is ours and names keys,
// never values. Its strings are wiped when it is dropped, whether parsing
// succeeded or not.

/// A mapping's keys and values, in file order.
type Fields = Vec<(Key, Node)>;

fn syntax_error(source: &Path, e: &serde_saphyr::Error) -> CredentialsError {
    let inner = e.without_snippet();
    // Never the library's full rendering: it carries a source snippet, and
    // the lines around an error in this file are passwords.
    let msg = serde_saphyr::DefaultMessageFormatter.format_message(inner);
    let msg: String = msg
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let msg = if let Some((head, _)) = msg.split_once(", set DuplicateKeyPolicy") {
        format!("{head} (each key may appear only once in a mapping)")
    } else if msg.contains("budget breached: Depth") || msg.contains("recursion limit") {
        format!("nesting is too deep (more than {MAX_YAML_DEPTH} levels)")
    } else if msg.contains("null into string") {
        "a null key (`~` or empty) cannot name an entry or a setting".to_string()
    } else if msg.contains("unknown escape") {
        format!(
            "{msg} (inside double quotes `\\` starts an escape: use single quotes, as in \
             'DOMAIN\\user')"
        )
    } else {
        msg
    };
    CredentialsError::at(
        source,
        e.location().as_ref().and_then(Loc::of),
        format!("invalid YAML: {msg}"),
    )
}

const FORMAT_HINT: &str = "expected `credentials:` mapping entry names to `user:` and \
                           `password:` (or `password_env:`), and optionally `default: NAME`";

/// Parses the text of a credentials file (`env` reads `password_env`).
fn parse(
    text: &str,
    source: &Path,
    env: EnvLookup<'_>,
) -> Result<CredentialStore, CredentialsError> {
    let mut options = serde_saphyr::Options::default();
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = MAX_YAML_DEPTH;
    options.budget = Some(budget);
    // The default rejects `.inf`/`.nan` with a message quoting them; let them
    // through as numbers so that a password is refused without being quoted.
    options.non_finite_float_policy = serde_saphyr::NonFiniteFloatPolicy::PassThrough;
    let root: Node =
        serde_saphyr::from_str_with_options(text, options).map_err(|e| syntax_error(source, &e))?;
    let err = |loc: Option<Loc>, m: String| CredentialsError::at(source, loc, m);

    let top = match root.kind {
        Kind::Map(entries) => entries,
        Kind::Null => {
            return Err(err(
                None,
                format!("the credentials file is empty: {FORMAT_HINT}"),
            ))
        }
        other => {
            return Err(err(
                root.loc,
                format!("found {} at the top: {FORMAT_HINT}", other.what()),
            ))
        }
    };
    let mut default: Option<(String, Option<Loc>)> = None;
    let mut credentials: Option<(Fields, Option<Loc>)> = None;
    for (key, node) in top {
        match key.name.as_str() {
            "default" => match node.kind {
                Kind::Str(name) => default = Some((name.to_string(), node.loc)),
                other => {
                    return Err(err(
                        node.loc,
                        format!("`default` must name an entry, found {}", other.what()),
                    ))
                }
            },
            "credentials" => match node.kind {
                Kind::Map(entries) => credentials = Some((entries, key.loc)),
                other => {
                    return Err(err(
                        node.loc,
                        format!(
                            "`credentials` must map entry names to entries, found {}",
                            other.what()
                        ),
                    ))
                }
            },
            other => {
                return Err(err(
                    key.loc,
                    format!("unknown key `{other}` (expected `default` or `credentials`)"),
                ))
            }
        }
    }
    let Some((raw_entries, credentials_loc)) = credentials else {
        return Err(err(None, format!("no `credentials:`: {FORMAT_HINT}")));
    };
    if raw_entries.is_empty() {
        return Err(err(credentials_loc, "`credentials` has no entries".into()));
    }
    let mut entries = BTreeMap::new();
    for (key, node) in raw_entries {
        let name = key.name;
        check_entry_name(&name).map_err(|w| err(key.loc, format!("entry name {name:?} {w}")))?;
        let credential = parse_entry(&name, key.loc, node, source, env)?;
        entries.insert(name, credential);
    }
    if let Some((name, loc)) = &default {
        if !entries.contains_key(name) {
            return Err(err(
                *loc,
                format!(
                    "`default` is {name:?}, which is not an entry under `credentials` \
                     (entries: {})",
                    entries
                        .keys()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    Ok(CredentialStore {
        source: source.to_path_buf(),
        entries,
        default: default.map(|(n, _)| n),
    })
}

fn check_entry_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("is empty");
    }
    if name.chars().any(char::is_control) {
        return Err("contains a control character");
    }
    if name.trim() != name {
        return Err("starts or ends with a space");
    }
    if name.chars().count() > MAX_ENTRY_NAME_CHARS {
        return Err("is longer than 128 characters");
    }
    Ok(())
}

fn parse_entry(
    name: &str,
    name_loc: Option<Loc>,
    node: Node,
    source: &Path,
    env: EnvLookup<'_>,
) -> Result<Credential, CredentialsError> {
    let err = |loc: Option<Loc>, m: String| {
        CredentialsError::at(source, loc, format!("entry `{name}`: {m}"))
    };
    // Deliberately not `other.what()` of a string here: `helpdesk: hunter2`
    // is someone's password, and it gets no mention beyond "a string".
    let fields = match node.kind {
        Kind::Map(fields) => fields,
        other => {
            return Err(err(
                node.loc.or(name_loc),
                format!(
                    "must be a mapping with `user:` and `password:` (or `password_env:`), \
                     found {}",
                    other.what()
                ),
            ))
        }
    };
    let mut user: Option<(Account, Option<Loc>)> = None;
    let mut password: Option<(SecretString, Option<Loc>)> = None;
    let mut password_env: Option<(SecretString, Option<Loc>)> = None;
    for (key, value) in fields {
        match key.name.as_str() {
            "user" => {
                let Kind::Str(s) = &value.kind else {
                    return Err(err(
                        value.loc,
                        format!("`user` must be a string, found {}", value.kind.what()),
                    ));
                };
                let account = Account::parse(s).map_err(|e| err(value.loc, e))?;
                user = Some((account, value.loc));
            }
            "password" => {
                let s = match &value.kind {
                    Kind::Str(s) => s,
                    Kind::Null => {
                        return Err(err(value.loc.or(key.loc), "`password` is empty".into()))
                    }
                    other => {
                        return Err(err(
                            value.loc,
                            format!(
                                "`password` must be a string, but YAML reads this unquoted value \
                                 as {}: quote it ('...')",
                                other.what()
                            ),
                        ))
                    }
                };
                check_password(s).map_err(|why| err(value.loc, format!("`password` {why}")))?;
                password = Some((SecretString::from(s.as_str()), key.loc));
            }
            "password_env" => {
                let Kind::Str(var) = &value.kind else {
                    return Err(err(
                        value.loc,
                        format!(
                            "`password_env` must name an environment variable, found {}",
                            value.kind.what()
                        ),
                    ));
                };
                let var: &str = var;
                if var.is_empty()
                    || var.contains(['=', '\0'])
                    || var.chars().any(char::is_whitespace)
                {
                    return Err(err(
                        value.loc,
                        format!("`password_env` {var:?} is not an environment variable name"),
                    ));
                }
                let raw = env(var).ok_or_else(|| {
                    err(
                        value.loc,
                        format!("environment variable {var} (password_env) is not set"),
                    )
                })?;
                let p = Zeroizing::new(raw.into_string().map_err(|mut raw| {
                    wipe_os_string(&mut raw);
                    err(
                        value.loc,
                        format!("environment variable {var} (password_env) is not valid UTF-8"),
                    )
                })?);
                check_password(&p).map_err(|why| {
                    err(
                        value.loc,
                        format!("the password in environment variable {var} (password_env) {why}"),
                    )
                })?;
                password_env = Some((SecretString::from(p.as_str()), key.loc));
            }
            other => {
                return Err(err(
                    key.loc,
                    format!(
                        "unknown key `{other}` (expected `user`, and `password` or `password_env`)"
                    ),
                ))
            }
        }
    }
    let Some((account, _)) = user else {
        return Err(err(
            name_loc,
            "has no `user:` (DOMAIN\\user, user@domain or user)".into(),
        ));
    };
    let password = match (password, password_env) {
        (Some((p, _)), None) | (None, Some((p, _))) => p,
        (Some(_), Some((_, loc))) => {
            return Err(err(
                loc,
                "has both `password` and `password_env`; keep one".into(),
            ))
        }
        (None, None) => {
            return Err(err(
                name_loc,
                "has no `password:` or `password_env:`".into(),
            ))
        }
    };
    Ok(Credential::new(account, password))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use serde_json::json;

    const SECRET: &str = "S3cr3t-hunter2!";

    fn no_env(_: &str) -> Option<OsString> {
        None
    }

    fn parse_str(text: &str) -> Result<CredentialStore, CredentialsError> {
        parse(text, Path::new("creds.yml"), &no_env)
    }

    fn sample() -> String {
        format!(
            "# pushscan credentials (chmod 600)\n\
             default: helpdesk\n\
             credentials:\n  \
               helpdesk:\n    \
                 user: 'CORP\\svc-scan'\n    \
                 password: '{SECRET}'\n  \
               lab:\n    \
                 user: labadmin@lab.example\n    \
                 password_env: LAB_PASSWORD\n"
        )
    }

    fn lab_env(name: &str) -> Option<OsString> {
        (name == "LAB_PASSWORD").then(|| OsString::from("lab-pass"))
    }

    #[test]
    fn parses_the_documented_example() {
        let store = parse(&sample(), Path::new("creds.yml"), &lab_env).unwrap();
        assert_eq!(store.names(), vec!["helpdesk", "lab"]);
        let h = store.get("helpdesk").unwrap();
        assert_eq!(h.account.to_string(), "CORP\\svc-scan");
        assert_eq!(h.password.expose_secret(), SECRET);
        let lab = store.get("lab").unwrap();
        assert_eq!(lab.account.to_string(), "labadmin@lab.example");
        assert_eq!(lab.password.expose_secret(), "lab-pass");
        assert_eq!(store.default_entry().unwrap().account.user, "svc-scan");
        assert!(store.get("nope").is_none());
    }

    #[test]
    fn password_env_unset_names_the_variable() {
        let e = parse_str(&sample()).unwrap_err().to_string();
        assert!(e.starts_with("creds.yml:9:19: "), "{e}");
        assert!(e.contains("entry `lab`"), "{e}");
        assert!(e.contains("LAB_PASSWORD") && e.contains("not set"), "{e}");
    }

    #[test]
    fn password_env_with_a_line_break_is_refused_without_showing_it() {
        let env = |n: &str| (n == "LAB_PASSWORD").then(|| OsString::from("lab-pass\n"));
        let e = parse(&sample(), Path::new("creds.yml"), &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("control character"), "{e}");
        assert!(!e.contains("lab-pass"), "{e}");
    }

    #[test]
    fn unknown_key_is_located() {
        let e = parse_str("credentials:\n  a:\n    user: u\n    pasword: x\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("creds.yml:4:5: "), "{e}");
        assert!(e.contains("unknown key `pasword`"), "{e}");
        let e = parse_str("credential:\n  a: {}\n").unwrap_err().to_string();
        assert!(e.starts_with("creds.yml:1:1: "), "{e}");
        assert!(e.contains("unknown key `credential`"), "{e}");
    }

    #[test]
    fn bad_yaml_is_located_and_shows_no_snippet() {
        let text =
            format!("credentials:\n  a:\n    user: u\n    password: '{SECRET}'\n   bad: [\n");
        let e = parse_str(&text).unwrap_err().to_string();
        assert!(e.starts_with("creds.yml:"), "{e}");
        let loc = e.trim_start_matches("creds.yml:");
        let line: usize = loc.split(':').next().unwrap().parse().unwrap();
        assert!((4..=6).contains(&line), "{e}");
        assert!(e.contains("invalid YAML"), "{e}");
        assert!(!e.contains(SECRET), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn backslash_in_double_quotes_gets_a_hint() {
        let e = parse_str("credentials:\n  a:\n    user: \"CORP\\svc\"\n    password: p\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("creds.yml:3:11: ") && e.contains("single quotes"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_entry_is_an_error() {
        let e =
            parse_str("credentials:\n  a: {user: u, password: x}\n  a: {user: v, password: y}\n")
                .unwrap_err()
                .to_string();
        assert!(e.starts_with("creds.yml:3:"), "{e}");
        assert!(e.contains("only once"), "{e}");
    }

    #[test]
    fn both_or_neither_password_source_is_an_error() {
        let env = |_: &str| Some(OsString::from("x"));
        let both = "credentials:\n  a:\n    user: u\n    password: p\n    password_env: P\n";
        let e = parse(both, Path::new("c.yml"), &env)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("c.yml:5:5: ") && e.contains("both"), "{e}");
        let neither = "credentials:\n  a:\n    user: u\n";
        let e = parse_str(neither).unwrap_err().to_string();
        assert!(
            e.starts_with("creds.yml:2:3: ") && e.contains("no `password:`"),
            "{e}"
        );
        let no_user = "credentials:\n  a:\n    password: p\n";
        let e = parse_str(no_user).unwrap_err().to_string();
        assert!(e.contains("no `user:`"), "{e}");
    }

    #[test]
    fn misplaced_or_unquoted_passwords_are_never_echoed() {
        // An entry that is just a string is someone's password.
        let e = parse_str(&format!("credentials:\n  a: '{SECRET}'\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("creds.yml:2:6: ") && e.contains("must be a mapping"),
            "{e}"
        );
        assert!(!e.contains(SECRET), "{e}");
        // YAML would read these as numbers/booleans, changing the password.
        for v in ["0123", "1e3", "yes", "true", "0x1F", ".inf", "-.nan"] {
            let text = format!("credentials:\n  a:\n    user: u\n    password: {v}\n");
            match parse_str(&text) {
                Err(e) => {
                    let e = e.to_string();
                    assert!(e.contains("quote it"), "{v}: {e}");
                    assert!(!e.contains(v), "{v}: {e}");
                }
                // Scalars the YAML 1.2 core schema keeps as strings.
                Ok(s) => assert_eq!(s.get("a").unwrap().password.expose_secret(), v),
            }
        }
        let e = parse_str("credentials:\n  a:\n    user: u\n    password:\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`password` is empty"), "{e}");
        let e = parse_str("credentials:\n  a:\n    user: u\n    password: |\n      pw\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("control character") && !e.contains("pw"), "{e}");
    }

    #[test]
    fn default_must_name_an_entry() {
        let e = parse_str("default: helpdsk\ncredentials:\n  helpdesk: {user: u, password: p}\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("creds.yml:1:10: "), "{e}");
        assert!(
            e.contains("\"helpdsk\"") && e.contains("entries: helpdesk"),
            "{e}"
        );
        let s = parse_str("credentials:\n  a: {user: u, password: p}\n").unwrap();
        assert!(s.default_entry().is_none());
    }

    #[test]
    fn empty_and_misshapen_files_are_errors() {
        for text in [
            "",
            "# nothing\n",
            "credentials: {}\n",
            "- a\n",
            "credentials: [a]\n",
        ] {
            assert!(parse_str(text).is_err(), "{text:?}");
        }
        let e = parse_str("credentials:\n  a:\n    user: 'CORP\\'\n    password: p\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("creds.yml:3:11: ") && e.contains("user name is empty"),
            "{e}"
        );
    }

    #[test]
    fn account_forms() {
        let a = Account::parse("CORP\\svc-scan").unwrap();
        assert_eq!(a.domain.as_deref(), Some("CORP"));
        assert_eq!(a.user, "svc-scan");
        assert_eq!((a.ntlm_user(), a.ntlm_domain()), ("svc-scan", "CORP"));
        assert_eq!(a.to_string(), "CORP\\svc-scan");

        let u = Account::parse("svc@dom.example").unwrap();
        assert_eq!(u.domain.as_deref(), Some("dom.example"));
        assert_eq!(u.user, "svc");
        // As pywinrm/requests-ntlm: the UPN whole, empty domain.
        assert_eq!((u.ntlm_user(), u.ntlm_domain()), ("svc@dom.example", ""));
        assert_eq!(u.to_string(), "svc@dom.example");

        let p = Account::parse("Administrator").unwrap();
        assert_eq!(p.domain, None);
        assert_eq!((p.ntlm_user(), p.ntlm_domain()), ("Administrator", ""));
        assert_eq!(p.to_string(), "Administrator");

        let local = Account::parse(".\\Administrator").unwrap();
        assert_eq!(
            (local.ntlm_user(), local.ntlm_domain()),
            ("Administrator", ".")
        );
        let at_in_sam = Account::parse("CORP\\a@b").unwrap();
        assert_eq!(
            (at_in_sam.ntlm_user(), at_in_sam.ntlm_domain()),
            ("a@b", "CORP")
        );
        assert!(Account::parse("John Smith").is_ok());
        assert!(Account::parse("first.last+scan@corp.example").is_ok());
    }

    #[test]
    fn account_validation() {
        let long = "u".repeat(MAX_USER_CHARS + 1);
        for bad in [
            "",
            "\\user",
            "CORP\\",
            "@dom",
            "user@",
            "a\\b\\c",
            "a@b@c",
            "user\n",
            "us\u{7}er",
            " user",
            "user ",
            "CO RP\\user",
            "CORP\\us/er",
            "user@dom..example",
            "user@.dom",
            "...",
            "us*er",
            long.as_str(),
        ] {
            assert!(Account::parse(bad).is_err(), "{bad:?} accepted");
        }
        let e = Account::parse("user\n").unwrap_err();
        assert!(e.contains("control character") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn debug_never_shows_the_password() {
        let store = parse(&sample(), Path::new("creds.yml"), &lab_env).unwrap();
        let c = store.get("helpdesk").unwrap();
        for s in [
            format!("{c:?}"),
            format!("{c:#?}"),
            format!("{store:?}"),
            format!("{store:#?}"),
        ] {
            assert!(!s.contains(SECRET) && !s.contains("lab-pass"), "{s}");
            assert!(s.contains("redacted"), "{s}");
        }
        assert!(
            format!("{c:?}").contains("CORP\\\\svc-scan")
                || format!("{c:?}").contains("CORP\\svc-scan")
        );
        let other = c.with_user(Account::parse("other").unwrap());
        assert_eq!(other.password.expose_secret(), SECRET);
        assert_eq!(other.account.to_string(), "other");
        assert!(!format!("{other:?}").contains(SECRET));
    }

    fn store() -> CredentialStore {
        parse(&sample(), Path::new("creds.yml"), &lab_env).unwrap()
    }

    fn fallback() -> Credential {
        Credential::new(Account::parse("env-user").unwrap(), SecretString::from("x"))
    }

    #[test]
    fn resolve_precedence() {
        let s = store();
        let f = fallback();
        // The host's var beats the default.
        let c = resolve(
            &json!({"pushscan_credential": "lab"}),
            "h1",
            Some(&s),
            Some(&f),
        )
        .unwrap();
        assert_eq!(c.account.to_string(), "labadmin@lab.example");
        // Else the store's default.
        let c = resolve(&json!({}), "h1", Some(&s), Some(&f)).unwrap();
        assert_eq!(c.account.to_string(), "CORP\\svc-scan");
        // Else the env/prompt credential.
        let no_default = parse_str("credentials:\n  a: {user: u, password: p}\n").unwrap();
        let c = resolve(&json!({}), "h1", Some(&no_default), Some(&f)).unwrap();
        assert_eq!(c.account.to_string(), "env-user");
        let c = resolve(&json!({}), "h1", None, Some(&f)).unwrap();
        assert_eq!(c.account.to_string(), "env-user");
    }

    #[test]
    fn resolve_errors() {
        let s = store();
        let f = fallback();
        let e = resolve(
            &json!({"pushscan_credential": "helpdsk"}),
            "web-7",
            Some(&s),
            Some(&f),
        )
        .unwrap_err();
        assert!(e.contains("web-7") && e.contains("\"helpdsk\""), "{e}");
        assert!(
            e.contains("creds.yml") && e.contains("entries: helpdesk, lab"),
            "{e}"
        );
        // A named entry never falls back silently, even with a fallback.
        let e = resolve(
            &json!({"pushscan_credential": "lab"}),
            "web-7",
            None,
            Some(&f),
        )
        .unwrap_err();
        assert!(
            e.contains("web-7") && e.contains("no credentials file"),
            "{e}"
        );
        let e = resolve(&json!({"pushscan_credential": 3}), "web-7", Some(&s), None).unwrap_err();
        assert!(e.contains("must be a string"), "{e}");
        let e = resolve(&json!({}), "web-7", None, None).unwrap_err();
        assert!(
            e.contains("web-7") && e.contains(ENV_PASSWORD) && e.contains("--ask-pass"),
            "{e}"
        );
        assert!(e.contains("default:") && e.contains(HOST_VAR), "{e}");
    }

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<OsString> {
        move |n| {
            pairs
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| OsString::from(v))
        }
    }

    fn no_prompt(_: &str) -> std::io::Result<String> {
        panic!("prompted without --ask-pass")
    }

    #[test]
    fn env_and_prompt_credential() {
        let env = env_of(&[(ENV_USER, "CORP\\scan"), (ENV_PASSWORD, "pw")]);
        let c = from_sources(None, false, &env, &no_prompt)
            .unwrap()
            .unwrap();
        assert_eq!(c.account.to_string(), "CORP\\scan");
        assert_eq!(c.password.expose_secret(), "pw");
        // The caller's account beats PUSHSCAN_USER.
        let c = from_sources(Some("me@corp.example"), false, &env, &no_prompt)
            .unwrap()
            .unwrap();
        assert_eq!(c.account.to_string(), "me@corp.example");
        // No password source: None (an empty variable counts as unset).
        assert!(
            from_sources(None, false, &env_of(&[(ENV_USER, "u")]), &no_prompt)
                .unwrap()
                .is_none()
        );
        let empty = env_of(&[(ENV_USER, "u"), (ENV_PASSWORD, "")]);
        assert!(from_sources(None, false, &empty, &no_prompt)
            .unwrap()
            .is_none());
        // A password without an account is an error saying what to set.
        let e = from_sources(None, false, &env_of(&[(ENV_PASSWORD, "pw")]), &no_prompt)
            .unwrap_err()
            .to_string();
        assert!(e.contains(ENV_USER) && !e.contains("pw\""), "{e}");
        // --ask-pass prompts (naming the account) and wins over the variable.
        let prompt = |p: &str| {
            assert_eq!(p, "Password for CORP\\scan: ");
            Ok("typed".to_string())
        };
        let c = from_sources(None, true, &env, &prompt).unwrap().unwrap();
        assert_eq!(c.password.expose_secret(), "typed");
        let e = from_sources(None, true, &env, &|_: &str| Ok(String::new()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--ask-pass") && e.contains("empty"), "{e}");
        let e = from_sources(Some("bad\\"), false, &env, &no_prompt)
            .unwrap_err()
            .to_string();
        assert!(e.contains("user name is empty"), "{e}");
    }

    #[cfg(unix)]
    fn write_file(mode: u32) -> (tempfile::TempDir, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds.yml");
        std::fs::write(
            &path,
            format!("credentials:\n  a:\n    user: u\n    password: '{SECRET}'\n"),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        (dir, path)
    }

    #[cfg(unix)]
    #[test]
    fn group_or_other_readable_file_is_refused() {
        for mode in [0o644, 0o640, 0o604, 0o660, 0o602] {
            let (_dir, path) = write_file(mode);
            let e = CredentialStore::load(&path).unwrap_err().to_string();
            assert!(e.contains(&format!("chmod 600 {}", path.display())), "{e}");
            assert!(e.contains(&format!("mode {mode:04o}")), "{e}");
            assert!(!e.contains(SECRET), "{e}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn private_file_is_read() {
        for mode in [0o600, 0o400] {
            let (_dir, path) = write_file(mode);
            let store = CredentialStore::load(&path).unwrap();
            assert_eq!(store.get("a").unwrap().password.expose_secret(), SECRET);
            assert_eq!(store.source(), path);
        }
    }

    #[cfg(unix)]
    #[test]
    fn someone_elses_file_is_refused() {
        let e = check_mode_owner(Path::new("/c.yml"), 0o100600, 0, 1000)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("uid 0") && e.contains("uid 1000") && e.contains("chmod 600 /c.yml"),
            "{e}"
        );
        assert!(check_mode_owner(Path::new("/c.yml"), 0o100600, 1000, 1000).is_ok());
    }

    #[test]
    fn load_reports_missing_file_and_errors_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.yml");
        let e = CredentialStore::load(&path).unwrap_err().to_string();
        assert!(
            e.starts_with(&path.display().to_string()) && e.contains("cannot open"),
            "{e}"
        );
        let e = CredentialStore::load(dir.path()).unwrap_err().to_string();
        // (Windows refuses to open a directory as a file at all.)
        assert!(
            e.contains("regular file") || e.contains("cannot open"),
            "{e}"
        );
        #[cfg(unix)]
        {
            // A FIFO is refused, not waited on.
            let fifo = dir.path().join("fifo");
            let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            let e = CredentialStore::load(&fifo).unwrap_err().to_string();
            assert!(e.contains("regular file"), "{e}");
        }
    }
}
