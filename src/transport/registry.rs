//! The machinery of the transport registry: what a registered transport provides
//! ([`Entry`] and the traits it hands out) and the handles the rest of pushscan holds
//! ([`Transport`], [`Access`], [`Sessions`]). The registrations themselves are
//! [`REGISTRY`](super::REGISTRY).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use secrecy::SecretString;
use serde_json::Value;

use super::{ConnArgs, Connection, TResult, TransportError, REGISTRY};
use crate::exit::{self, Fail};

/// The shell a transport's [`Connection::exec_line`] runs: `contain` writes its command
/// lines (and decides which path and registry rules apply) in this dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    /// `/bin/sh -c` on a Unix host.
    Posix,
    /// `cmd.exe` on a Windows host.
    Cmd,
}

/// The inventory variables a transport reads. Each setting is a list of names; as in
/// Ansible's connection plugins, the *last* name in the list that is defined (not null)
/// wins, whatever level it was set at.
#[derive(Debug)]
pub struct InventoryVars {
    pub host: &'static [&'static str],
    pub port: &'static [&'static str],
    pub user: &'static [&'static str],
    /// Where a (vaulted) password for the connection is read.
    pub password: &'static [&'static str],
    /// `pushscan_*` variables this transport reads as true or false; the inventory refuses
    /// any other value where it is written.
    pub flags: &'static [&'static str],
}

/// [`Entry::target`]: a host's settings checked and kept for connecting, or why it is refused.
pub type PlanTarget = fn(&dyn HostInfo) -> Result<Arc<dyn HostTarget>, String>;

/// [`Entry::options`]: the transport's options from the flags and the `--ask-pass` answer.
pub type ReadOptions = fn(&ConnArgs, Option<&SecretString>) -> Result<Arc<dyn Options>, Fail>;

/// A registered transport.
pub struct Entry {
    /// Its name: in the journal, reports, `pushscan plan` and error messages.
    pub name: &'static str,
    /// The `ansible_connection` values (short names; `ansible.builtin.` is stripped) that
    /// select it.
    pub answers_to: &'static [&'static str],
    /// How the inventory's "unsupported ansible_connection" error lists it.
    pub listed_as: &'static str,
    pub vars: InventoryVars,
    pub shell: Shell,
    /// Checks a host's settings before anything connects (a refused setting touches no host)
    /// and keeps what connecting will need.
    pub target: PlanTarget,
    /// Its sweep-wide options from the command line; `prompted` is the `--ask-pass` answer,
    /// asked once for every transport.
    pub options: ReadOptions,
}

/// A host as a transport sees it; the inventory's hosts implement it.
pub trait HostInfo: Sync {
    /// The inventory name.
    fn name(&self) -> &str;
    /// Where to connect (the transport's `host` variables, else the name).
    fn address(&self) -> &str;
    fn port(&self) -> Option<u16>;
    fn user(&self) -> Option<&str>;
    /// `ansible_ssh_private_key_file` (or `ansible_private_key_file`).
    fn key_file(&self) -> Option<&Path>;
    /// Every variable of the host, merged.
    fn vars(&self) -> &BTreeMap<String, Value>;
    /// A true/false variable (one of the transport's `flags`), read as Ansible reads
    /// booleans; unset (or anything else, refused when the inventory was read) is false.
    fn flag(&self, name: &str) -> bool;
    /// The vaulted password the inventory gives the host (one of the transport's `password`
    /// variables): `Ok(None)` when none is set, an error when no vault password opened it.
    fn vaulted_password(&self) -> Result<Option<&SecretString>, String>;
}

/// How `pushscan plan` shows a host's connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    /// The transport as the plan shows it (a transport may show a variant, e.g. its TLS form).
    pub transport: &'static str,
    /// The port it connects to (`None` when it opens none).
    pub port: Option<u16>,
    /// How files travel, when the transport has a choice.
    pub files: Option<String>,
    /// Whether the operator's password may be offered to the host.
    pub password_auth: bool,
}

/// What a transport decided about one host before connecting.
pub trait HostTarget: std::fmt::Debug + Send + Sync + std::any::Any {
    fn describe(&self) -> Described;

    /// Files besides the temp copy `tmp` that a push cut short may leave on the host.
    fn staging_files(&self, _tmp: &str) -> Vec<String> {
        Vec::new()
    }

    /// Whether the host's architecture picks between a playbook's x64 and x86 builds.
    fn picks_build_by_architecture(&self) -> bool {
        false
    }

    /// The ports whose answer decides how the host is reached, as (address, port), for
    /// `pushscan plan --probe` (a TCP connect to each; nothing is sent). Empty: the plan
    /// line stands as [`describe`](HostTarget::describe)d.
    fn probe_ports(&self) -> Vec<(String, u16)> {
        Vec::new()
    }

    /// The plan line once it is known which [`probe_ports`](HostTarget::probe_ports) answer
    /// (`open[i]`), with a short note of what that means for the host.
    fn describe_probed(&self, _open: &[bool]) -> (Described, String) {
        (self.describe(), String::new())
    }

    /// For the transport's own [`Connector`], to get its type back.
    fn as_any(&self) -> &dyn std::any::Any;
}

/// A transport's sweep-wide settings (from the command line; never stored).
pub trait Options: std::fmt::Debug + Send + Sync {
    /// Resolves, before the first connection of a run, what each of `hosts` (this
    /// transport's, with their index in the run) needs to log in. A host without it is
    /// returned with its index and the reason: the run then stops before touching any host.
    fn connector(
        &self,
        hosts: &[(usize, &dyn HostInfo)],
    ) -> (Arc<dyn Connector>, Vec<(usize, String)>);

    /// Warnings for the operator about these settings (said once, before the run).
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Opens connections to the hosts of one transport in one run.
#[async_trait]
pub trait Connector: Send + Sync {
    /// `target` is what this transport's [`Entry::target`] returned for `host`; `probe` is a
    /// remote directory the run will use (a transport may check it is reachable).
    async fn connect(
        &self,
        host: &dyn HostInfo,
        target: &dyn HostTarget,
        probe: &str,
    ) -> TResult<Box<dyn Connection>>;
}

/// A registered transport, as the inventory and the engine hold it.
#[derive(Clone, Copy)]
pub struct Transport(&'static Entry);

impl Transport {
    pub fn name(self) -> &'static str {
        self.0.name
    }
    pub fn shell(self) -> Shell {
        self.0.shell
    }
    pub fn vars(self) -> &'static InventoryVars {
        &self.0.vars
    }
    pub fn entry(self) -> &'static Entry {
        self.0
    }
    /// The transport's checks and decisions for `host`, before any connection.
    pub fn target(self, host: &dyn HostInfo) -> Result<Arc<dyn HostTarget>, String> {
        (self.0.target)(host)
    }

    /// The transport of a host whose inventory sets no `ansible_connection`.
    pub fn ansible_default() -> Transport {
        by_name(super::ANSIBLE_DEFAULT).expect("the default transport is registered")
    }

    /// The transport of Active Directory hosts unless the directory's configuration says.
    pub fn directory_default() -> Transport {
        by_name(super::DIRECTORY_DEFAULT).expect("the directory's transport is registered")
    }
}

impl PartialEq for Transport {
    fn eq(&self, other: &Transport) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for Transport {}

impl std::hash::Hash for Transport {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.name.hash(state);
    }
}

/// The name with a capital first letter (how operators have seen it in `uncontain`).
impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut c = self.0.name.chars();
        if let Some(first) = c.next() {
            write!(f, "{}{}", first.to_ascii_uppercase(), c.as_str())?;
        }
        Ok(())
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.name)
    }
}

impl serde::Serialize for Transport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.name)
    }
}

/// The hosts (with their index in the run) whose vaulted password no vault password opened,
/// with why: a mistake in the inventory that stops the run before any host is touched, for a
/// transport that would offer the password and for one that never reads it alike.
pub fn unopened_vaults(hosts: &[(usize, &dyn HostInfo)]) -> Vec<(usize, String)> {
    hosts
        .iter()
        .filter_map(|(i, h)| h.vaulted_password().err().map(|e| (*i, e)))
        .collect()
}

/// The transport registered as `name` (case-insensitive: the journal's names).
pub fn by_name(name: &str) -> Option<Transport> {
    REGISTRY
        .iter()
        .find(|e| e.name.eq_ignore_ascii_case(name))
        .map(Transport)
}

/// The registered names.
pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|e| e.name).collect()
}

/// The transport an `ansible_connection` value (short or `ansible.builtin.` name) selects;
/// `None` for plugins pushscan cannot speak.
pub fn parse(value: &str) -> Option<Transport> {
    let short = value.strip_prefix("ansible.builtin.").unwrap_or(value);
    REGISTRY
        .iter()
        .find(|e| e.answers_to.contains(&short))
        .map(Transport)
}

/// What pushscan speaks, for error messages: "a (also b), c and d".
pub fn spoken() -> String {
    let all: Vec<&str> = REGISTRY.iter().map(|e| e.listed_as).collect();
    match all.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        Some((last, _)) => last.to_string(),
        None => String::new(),
    }
}

/// The registered names with `default` first, for error messages: "a (default), b or c".
pub fn choices(default: Transport) -> String {
    let rest: Vec<&str> = names()
        .into_iter()
        .filter(|n| *n != default.name())
        .collect();
    match rest.split_last() {
        Some((last, init)) if !init.is_empty() => {
            format!("{default} (default), {} or {last}", init.join(", "))
        }
        Some((last, _)) => format!("{default} (default) or {last}"),
        None => format!("{default} (default)"),
    }
}

/// What a connection variable sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarRole {
    Host,
    Port,
    User,
}

/// The role of `key` for any registered transport (every spelling, for checking
/// assignments as they are read).
pub fn var_role(key: &str) -> Option<VarRole> {
    REGISTRY.iter().find_map(|e| {
        if e.vars.port.contains(&key) {
            Some(VarRole::Port)
        } else if e.vars.host.contains(&key) {
            Some(VarRole::Host)
        } else if e.vars.user.contains(&key) {
            Some(VarRole::User)
        } else {
            None
        }
    })
}

/// Whether `key` is a true/false variable of some transport.
pub fn is_flag_var(key: &str) -> bool {
    REGISTRY.iter().any(|e| e.vars.flags.contains(&key))
}

/// Every transport's options, from the command line (never stored in the journal:
/// credentials are the operator's, per invocation).
#[derive(Debug, Clone)]
pub struct Access {
    options: Vec<(&'static str, Arc<dyn Options>)>,
}

impl Access {
    /// Reads every registered transport's options from the flags and the environment,
    /// asking for the password once (`--ask-pass`) for all of them.
    pub fn from_flags(a: &ConnArgs) -> Result<Access, Fail> {
        let prompted = if a.ask_pass {
            let p = rpassword::prompt_password("Password: ").map_err(|e| {
                Fail::new(
                    exit::USAGE,
                    anyhow::anyhow!("--ask-pass needs a terminal: {e}"),
                )
            })?;
            Some(SecretString::from(p))
        } else {
            None
        };
        let options = REGISTRY
            .iter()
            .map(|e| Ok((e.name, (e.options)(a, prompted.as_ref())?)))
            .collect::<Result<Vec<_>, Fail>>()?;
        Ok(Access { options })
    }

    /// What the operator should be warned about before the run.
    pub fn warnings(&self) -> Vec<String> {
        self.options
            .iter()
            .flat_map(|(_, o)| o.warnings())
            .collect()
    }

    /// Resolves what every host needs to log in, transport by transport. A host without is
    /// an error listing such hosts in their order.
    pub fn sessions(&self, hosts: &[(&dyn HostInfo, Transport)]) -> Result<Sessions, Vec<String>> {
        let mut connectors = Vec::new();
        let mut missing: Vec<(usize, String)> = Vec::new();
        for (name, opts) in &self.options {
            let mine: Vec<(usize, &dyn HostInfo)> = hosts
                .iter()
                .enumerate()
                .filter(|(_, (_, t))| t.name() == *name)
                .map(|(i, (h, _))| (i, *h))
                .collect();
            let (c, errs) = opts.connector(&mine);
            connectors.push((*name, c));
            missing.extend(errs);
        }
        if missing.is_empty() {
            Ok(Sessions { connectors })
        } else {
            missing.sort_by_key(|(i, _)| *i);
            Err(missing.into_iter().map(|(_, e)| e).collect())
        }
    }
}

/// The connectors of one run, one per transport.
#[derive(Clone)]
pub struct Sessions {
    connectors: Vec<(&'static str, Arc<dyn Connector>)>,
}

impl Sessions {
    /// Connects to `host` over its transport `t`.
    pub async fn connect(
        &self,
        t: Transport,
        host: &dyn HostInfo,
        target: &dyn HostTarget,
        probe: &str,
    ) -> TResult<Box<dyn Connection>> {
        match self.connectors.iter().find(|(n, _)| *n == t.name()) {
            Some((_, c)) => c.connect(host, target, probe).await,
            None => Err(TransportError::error(format!(
                "no {} settings for this host",
                t.name()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_answers_by_name_and_by_ansible_connection() {
        for e in REGISTRY {
            let t = by_name(e.name).expect("registered");
            assert_eq!(t.name(), e.name);
            for v in e.answers_to {
                assert_eq!(parse(v), Some(t), "{v}");
                assert_eq!(parse(&format!("ansible.builtin.{v}")), Some(t), "{v}");
            }
        }
        assert_eq!(parse("docker"), None);
        assert_eq!(names(), ["ssh", "local", "winrm"]);
        assert_eq!(
            spoken(),
            "ssh (also paramiko, smart), local and winrm (also psrp)"
        );
        assert_eq!(Transport::ansible_default().name(), "ssh");
        assert_eq!(Transport::directory_default().shell(), Shell::Cmd);
        assert_eq!(format!("{:?}", Transport::directory_default()), "Winrm");
        assert_eq!(
            choices(Transport::directory_default()),
            "winrm (default), ssh or local"
        );
    }

    #[test]
    fn every_spelling_of_a_connection_variable_has_its_role() {
        assert_eq!(var_role("ansible_port"), Some(VarRole::Port));
        assert_eq!(var_role("ansible_winrm_port"), Some(VarRole::Port));
        assert_eq!(var_role("ansible_ssh_host"), Some(VarRole::Host));
        assert_eq!(var_role("ansible_winrm_user"), Some(VarRole::User));
        assert_eq!(var_role("ansible_python_interpreter"), None);
        assert!(is_flag_var("pushscan_ssh_password_auth"));
    }
}
