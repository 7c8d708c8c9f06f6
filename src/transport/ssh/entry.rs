//! The SSH transport as the registry knows it: the inventory variables it reads, its
//! options and credentials (keys, ssh-agent, the opted-in password), what `pushscan plan`
//! shows of a host, and how a host's connection is opened.

use std::sync::Arc;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};

use super::{SshConnector, SshTarget};
use crate::exit::Fail;
use crate::transport::{
    ConnArgs, Connection, Connector, Credentials, Described, Entry, HostInfo, HostTarget,
    InventoryVars, Options, Shell, TResult,
};

/// Per host or group: `true` lets the SSH transport offer the password (`--ask-pass`,
/// `PUSHSCAN_SSH_PASSWORD`) to this host. Off by default: a password sent is a password the
/// host, if compromised, now holds, so it goes only where the inventory says so, never as a
/// fallback when public keys are refused.
pub const PASSWORD_AUTH_VAR: &str = "pushscan_ssh_password_auth";

/// The port a host without `ansible_port` listens on.
const DEFAULT_PORT: u16 = 22;

pub const ENTRY: Entry = Entry {
    name: "ssh",
    answers_to: &["ssh", "smart", "paramiko", "paramiko_ssh"],
    listed_as: "ssh (also paramiko, smart)",
    vars: InventoryVars {
        host: &["ansible_host", "ansible_ssh_host"],
        port: &["ansible_port", "ansible_ssh_port"],
        user: &["ansible_user", "ansible_ssh_user"],
        password: &[
            "ansible_password",
            "ansible_ssh_pass",
            "ansible_ssh_password",
        ],
        flags: &[PASSWORD_AUTH_VAR],
    },
    shell: Shell::Posix,
    target: plan_target,
    options,
};

/// Whether the inventory lets the operator's password be offered to `host`
/// ([`PASSWORD_AUTH_VAR`]).
pub fn password_auth(host: &dyn HostInfo) -> bool {
    host.flag(PASSWORD_AUTH_VAR)
}

/// What the plan shows of an SSH host; everything else is read when connecting.
#[derive(Debug)]
struct SshPlan {
    port: u16,
    password_auth: bool,
}

impl HostTarget for SshPlan {
    fn describe(&self) -> Described {
        Described {
            transport: ENTRY.name,
            port: Some(self.port),
            files: None,
            password_auth: self.password_auth,
        }
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

fn plan_target(host: &dyn HostInfo) -> Result<Arc<dyn HostTarget>, String> {
    Ok(Arc::new(SshPlan {
        port: host.port().unwrap_or(DEFAULT_PORT),
        password_auth: password_auth(host),
    }))
}

/// The sweep-wide SSH settings.
#[derive(Debug)]
struct SshOptions {
    creds: Credentials,
    /// `--user`, for hosts without `ansible_user` (else the operator's own name).
    default_user: Option<String>,
}

fn options(a: &ConnArgs, prompted: Option<&SecretString>) -> Result<Arc<dyn Options>, Fail> {
    // One prompt serves every transport (here: password auth, where the inventory allows it).
    let password = crate::child_env::take_secret("PUSHSCAN_SSH_PASSWORD");
    let password = prompted.map(|p| p.expose_secret().to_string()).or(password);
    let default_keys = if a.private_keys.is_empty() {
        dirs::home_dir()
            .map(|h| {
                ["id_ed25519", "id_ecdsa", "id_rsa"]
                    .iter()
                    .map(|n| h.join(".ssh").join(n))
                    .collect()
            })
            .unwrap_or_default()
    } else {
        a.private_keys.clone()
    };
    Ok(Arc::new(SshOptions {
        creds: Credentials {
            ssh_password: password,
            known_hosts: a.known_hosts.clone(),
            accept_new_host_keys: a.accept_new_host_keys,
            default_key_files: default_keys,
            use_agent: !a.no_agent,
            connect_timeout: a.connect_timeout,
        },
        default_user: a.user.clone(),
    }))
}

impl Options for SshOptions {
    fn connector(
        &self,
        hosts: &[(usize, &dyn HostInfo)],
    ) -> (Arc<dyn Connector>, Vec<(usize, String)>) {
        // A host's vaulted password is offered to it when connecting; one that no vault
        // password opened stops the run here rather than failing the host later.
        let missing = crate::transport::registry::unopened_vaults(hosts);
        let session = SshSession {
            connector: SshConnector::new(self.creds.clone()),
            default_user: self
                .default_user
                .clone()
                .unwrap_or_else(crate::identity::current_user),
        };
        (Arc::new(session), missing)
    }
}

struct SshSession {
    connector: SshConnector,
    default_user: String,
}

#[async_trait]
impl Connector for SshSession {
    async fn connect(
        &self,
        host: &dyn HostInfo,
        _target: &dyn HostTarget,
        _probe: &str,
    ) -> TResult<Box<dyn Connection>> {
        let target = SshTarget {
            address: host.address().to_string(),
            port: host.port().unwrap_or(DEFAULT_PORT),
            user: host
                .user()
                .map_or_else(|| self.default_user.clone(), str::to_string),
            key_file: host.key_file().map(std::path::Path::to_path_buf),
            password_auth: password_auth(host),
            password: host.vaulted_password().ok().flatten().cloned(),
        };
        Ok(Box::new(self.connector.connect(&target).await?))
    }
}
