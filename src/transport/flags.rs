//! The connection flags of every command that reaches hosts, shared by all transports: each
//! transport's options read the ones it understands (`--user` and `--ask-pass` serve several).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::units::parse_duration(s)
}

/// How to reach and trust hosts; never stored in the journal.
#[derive(Args)]
pub struct ConnArgs {
    /// User for hosts without ansible_user [default: SSH: the current user; Windows:
    /// $PUSHSCAN_USER]. Windows accounts as DOMAIN\\user or user@domain.
    #[arg(short, long)]
    pub user: Option<String>,
    /// SSH private key for hosts without ansible_ssh_private_key_file (repeatable)
    /// [default: ~/.ssh/id_ed25519, id_ecdsa, id_rsa].
    #[arg(short = 'k', long = "private-key", value_name = "FILE")]
    pub private_keys: Vec<PathBuf>,
    /// known_hosts file to check host keys against [default: ~/.ssh/known_hosts].
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// Trust and record keys of hosts not yet in known_hosts (a changed key still fails).
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// Prompt for the password (SSH: else PUSHSCAN_SSH_PASSWORD is used if set, and offered
    /// only to hosts with the inventory var pushscan_ssh_password_auth: true;
    /// Windows: else PUSHSCAN_PASSWORD).
    #[arg(long)]
    pub ask_pass: bool,
    /// Windows credentials file (YAML, mode 0600); hosts pick an entry with the
    /// inventory var pushscan_credential.
    #[arg(long, value_name = "FILE", env = "PUSHSCAN_CREDENTIALS")]
    pub credentials: Option<PathBuf>,
    /// PEM file of the CA that WinRM HTTPS certificates must chain to
    /// [default: the bundled web roots].
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// DANGEROUS: do not verify WinRM HTTPS certificates (anyone in the path
    /// can read and change the session). For isolated test networks only.
    #[arg(long)]
    pub insecure_skip_tls_verify: bool,
    /// Files to Windows hosts: over SMB when it answers, else through WinRM
    /// (auto), or always through WinRM (off).
    #[arg(long, value_enum, default_value = "auto")]
    pub smb: SmbArg,
    /// Commands to Windows hosts: over WinRM, or, when its port is closed, as a one-shot
    /// service over SMB (auto, or each host's pushscan_exec); winrm or smb for every host.
    #[arg(long, value_enum, default_value = "auto")]
    pub exec: ExecArg,
    /// SMB3 encryption: used whenever the server supports it (desired), or
    /// required (a host that cannot encrypt falls back to WinRM transfers).
    #[arg(long, value_enum, default_value = "desired")]
    pub smb_encryption: SmbEncArg,
    /// Do not use ssh-agent (SSH_AUTH_SOCK).
    #[arg(long)]
    pub no_agent: bool,
    /// Give up connecting to a host after this long (e.g. 10s).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum SmbArg {
    Auto,
    Off,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ExecArg {
    Auto,
    Winrm,
    Smb,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum SmbEncArg {
    Desired,
    Required,
}
