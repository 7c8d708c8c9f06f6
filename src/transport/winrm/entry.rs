//! The WinRM transport as the registry knows it: the inventory variables it reads, its
//! options (`--credentials`, `--ca-cert`, `--smb`, ...), how each host's account and password
//! are resolved before the run, what `pushscan plan` shows of a host, what a push may leave
//! on it, and how its connection is opened.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use secrecy::SecretString;

use super::credentials::{self, Account, Credential, CredentialStore};
use super::{
    shellfs, ExecUse, ShareMode, SmbUse, WinLogin, WinTarget, WinrmConnector, WinrmOptions,
};
use crate::exit::{self, Fail};
use crate::transport::flags::{ExecArg, SmbArg, SmbEncArg};
use crate::transport::{
    ConnArgs, Connection, Connector, Described, Entry, HostInfo, HostTarget, InventoryVars,
    Options, Shell, TResult, TransportError,
};

pub const ENTRY: Entry = Entry {
    name: "winrm",
    answers_to: &["winrm", "psrp"],
    listed_as: "winrm (also psrp)",
    vars: InventoryVars {
        host: &["ansible_host", "ansible_winrm_host"],
        port: &["ansible_port", "ansible_winrm_port"],
        user: &["ansible_user", "ansible_winrm_user"],
        password: &[
            "ansible_password",
            "ansible_winrm_pass",
            "ansible_winrm_password",
            "ansible_psrp_pass",
            "ansible_psrp_password",
        ],
        flags: &[],
    },
    shell: Shell::Cmd,
    target: plan_target,
    options,
};

fn plan_target(host: &dyn HostInfo) -> Result<Arc<dyn HostTarget>, String> {
    Ok(Arc::new(WinTarget::from_host(host)?))
}

impl HostTarget for WinTarget {
    fn describe(&self) -> Described {
        Described {
            // An `auto` host shows its WinRM: whether its port is closed (and commands then
            // go over SMB) is known at connection time (said in the host's notes), or when
            // `plan --probe` knocks (`describe_probed`).
            transport: match (self.exec, self.https) {
                (ExecUse::Smb, _) => "smb-exec",
                (_, true) => "winrm-https",
                (_, false) => ENTRY.name,
            },
            port: Some(if self.exec == ExecUse::Smb {
                self.smb_port
            } else {
                self.port
            }),
            files: Some(match self.smb {
                SmbUse::Off => "winrm only (smb off)".to_string(),
                SmbUse::Auto => format!(
                    "smb {}:{} {} (winrm if closed)",
                    self.address,
                    self.smb_port,
                    match self.share {
                        ShareMode::Admin => "ADMIN$",
                        ShareMode::Drive => "C$",
                    }
                ),
            }),
            password_auth: false,
        }
    }

    /// WinRM's port and SMB's: which of them answers decides between WinRM and commands
    /// over SMB, as the connection decides it.
    fn probe_ports(&self) -> Vec<(String, u16)> {
        let mut ports = Vec::new();
        if self.exec != ExecUse::Smb {
            ports.push((self.address.clone(), self.port));
        }
        if self.exec == ExecUse::Smb || self.smb == SmbUse::Auto {
            ports.push((self.address.clone(), self.smb_port));
        }
        ports
    }

    fn describe_probed(&self, open: &[bool]) -> (Described, String) {
        let d = self.describe();
        let smb_open = match self.exec {
            ExecUse::Smb => open.first().copied(),
            _ => open.get(1).copied(),
        };
        let winrm_open =
            (self.exec != ExecUse::Smb).then(|| open.first().copied().unwrap_or(false));
        let note = match (self.exec, winrm_open, smb_open) {
            (ExecUse::Smb, _, Some(true)) => "SMB answers: commands over SMB".to_string(),
            (ExecUse::Smb, _, _) => "SMB does not answer: unreachable".to_string(),
            (_, Some(true), Some(false)) => {
                "WinRM answers, SMB does not: files over WinRM".to_string()
            }
            (_, Some(true), _) => "WinRM answers".to_string(),
            (ExecUse::Auto, _, Some(true)) => {
                let d = Described {
                    transport: "smb-exec",
                    port: Some(self.smb_port),
                    ..d
                };
                return (
                    d,
                    "WinRM does not answer, SMB does: commands over SMB".to_string(),
                );
            }
            (ExecUse::Auto, _, Some(false)) => {
                "neither WinRM nor SMB answers: unreachable".to_string()
            }
            (ExecUse::WinRm, _, Some(true)) => {
                "WinRM does not answer: unreachable (pushscan_exec: winrm; auto would run \
                 commands over SMB)"
                    .to_string()
            }
            _ => "WinRM does not answer: unreachable".to_string(),
        };
        (d, note)
    }

    /// A push through the WinRM shell stages the checker as base64 first.
    fn staging_files(&self, tmp: &str) -> Vec<String> {
        vec![shellfs::staging_name(tmp)]
    }

    /// Windows hosts may be 32-bit: the x86 build goes there.
    fn picks_build_by_architecture(&self) -> bool {
        true
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Where Windows hosts' credentials come from, and the sweep-wide WinRM/SMB settings.
#[derive(Debug)]
struct WinrmSettings {
    opts: WinrmOptions,
    /// `--credentials FILE` (entries chosen by `pushscan_credential`).
    store: Option<Arc<CredentialStore>>,
    /// PUSHSCAN_USER / PUSHSCAN_PASSWORD or `--ask-pass`.
    fallback: Option<Credential>,
}

fn options(a: &ConnArgs, prompted: Option<&SecretString>) -> Result<Arc<dyn Options>, Fail> {
    let store = match &a.credentials {
        Some(p) => Some(Arc::new(
            CredentialStore::load(p).map_err(|e| Fail::new(exit::CONFIG, e))?,
        )),
        None => None,
    };
    let user = a.user.clone().or_else(|| {
        std::env::var("PUSHSCAN_USER")
            .ok()
            .filter(|u| !u.is_empty())
    });
    let password = crate::child_env::take_secret("PUSHSCAN_PASSWORD")
        .map(SecretString::from)
        .or_else(|| prompted.cloned());
    let fallback = match (user, password) {
        (Some(u), Some(p)) => Some(Credential {
            account: Account::parse(&u)
                .map_err(|e| Fail::new(exit::USAGE, anyhow::anyhow!("user {u:?}: {e}")))?,
            password: p,
        }),
        _ => None,
    };
    let ca_pem = match &a.ca_cert {
        Some(p) => Some(std::fs::read_to_string(p).map_err(|e| {
            Fail::new(
                exit::CONFIG,
                anyhow::anyhow!("cannot read --ca-cert {}: {e}", p.display()),
            )
        })?),
        None => None,
    };
    Ok(Arc::new(WinrmSettings {
        opts: WinrmOptions {
            ca_pem,
            insecure: a.insecure_skip_tls_verify,
            connect_timeout: a.connect_timeout,
            exec: match a.exec {
                ExecArg::Auto => ExecUse::Auto,
                ExecArg::Winrm => ExecUse::WinRm,
                ExecArg::Smb => ExecUse::Smb,
            },
            smb: match a.smb {
                SmbArg::Auto => SmbUse::Auto,
                SmbArg::Off => SmbUse::Off,
            },
            smb_require_encryption: matches!(a.smb_encryption, SmbEncArg::Required),
        },
        store,
        fallback,
    }))
}

impl Options for WinrmSettings {
    fn warnings(&self) -> Vec<String> {
        if self.opts.insecure {
            vec![
                "--insecure-skip-tls-verify: WinRM HTTPS certificates are NOT verified; \
                 anyone on the path can read and change these sessions"
                    .to_string(),
            ]
        } else {
            Vec::new()
        }
    }

    /// Every host's account and password, resolved before the run starts, so a host without
    /// one stops the run before anything is touched.
    fn connector(
        &self,
        hosts: &[(usize, &dyn HostInfo)],
    ) -> (Arc<dyn Connector>, Vec<(usize, String)>) {
        let mut logins = HashMap::new();
        let mut missing = Vec::new();
        for &(i, h) in hosts {
            match self.login(h) {
                Ok(l) => {
                    logins.insert(h.name().to_string(), l);
                }
                Err(e) => missing.push((i, e)),
            }
        }
        let session = WinrmSession {
            connector: WinrmConnector::new(self.opts.clone()),
            logins,
        };
        (Arc::new(session), missing)
    }
}

impl WinrmSettings {
    fn login(&self, h: &dyn HostInfo) -> Result<WinLogin, String> {
        // A vaulted ansible_password (or ansible_winrm_password) in the
        // inventory is the host's own credential, with its ansible_user.
        match (h.vaulted_password()?, h.user()) {
            (None, _) => {}
            (Some(password), Some(user)) => {
                let a =
                    Account::parse(user).map_err(|e| format!("{}: ansible_user: {e}", h.name()))?;
                return Ok(WinLogin {
                    user: a.ntlm_user().to_string(),
                    domain: a.ntlm_domain().to_string(),
                    password: password.clone(),
                });
            }
            (Some(_), None) => {
                return Err(format!(
                    "{}: the inventory gives a vaulted password but no ansible_user",
                    h.name()
                ))
            }
        }
        let vars = serde_json::Value::Object(
            h.vars()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        );
        let c = credentials::resolve(
            &vars,
            h.name(),
            self.store.as_deref(),
            self.fallback.as_ref(),
        )?;
        // ansible_user overrides the account unless the host names
        // a credential entry (which carries its own account).
        let c = match (h.user(), h.vars().contains_key("pushscan_credential")) {
            (Some(u), false) => c.with_user(
                Account::parse(u).map_err(|e| format!("{}: ansible_user: {e}", h.name()))?,
            ),
            _ => c.clone(),
        };
        Ok(WinLogin {
            user: c.account.ntlm_user().to_string(),
            domain: c.account.ntlm_domain().to_string(),
            password: c.password.clone(),
        })
    }
}

struct WinrmSession {
    connector: WinrmConnector,
    /// The account and password of each host, resolved before the run.
    logins: HashMap<String, WinLogin>,
}

#[async_trait]
impl Connector for WinrmSession {
    async fn connect(
        &self,
        host: &dyn HostInfo,
        target: &dyn HostTarget,
        probe: &str,
    ) -> TResult<Box<dyn Connection>> {
        let (Some(target), Some(login)) = (
            target.as_any().downcast_ref::<WinTarget>(),
            self.logins.get(host.name()),
        ) else {
            return Err(TransportError::error(
                "no WinRM settings or credential for this host",
            ));
        };
        Ok(Box::new(
            self.connector.connect(target, login, probe).await?,
        ))
    }
}
