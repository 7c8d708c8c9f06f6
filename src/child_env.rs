//! The environment of every process pushscan starts.
//!
//! pushscan reads secrets from its own environment (`PUSHSCAN_SSH_PASSWORD`,
//! `PUSHSCAN_PASSWORD`, the variables a credentials or alert file names) and may hold an SSH
//! agent socket (`SSH_AUTH_SOCK`). A checker run by the `local` transport, or a `contain`
//! command run on the controller, is a program we did not write: it gets an allow-listed
//! environment (what a program needs to find its files and speak the right language), never
//! the controller's own.

use std::process::Command;

/// Variables a child may see, when the controller has them.
const ALLOWED: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "TERM",
    // Windows: programs fail in odd ways without these.
    "SystemRoot",
    "SYSTEMROOT",
    "windir",
    "WINDIR",
    "ComSpec",
    "COMSPEC",
    "PATHEXT",
    "TEMP",
    "TMP",
    "USERPROFILE",
    "SystemDrive",
    "SYSTEMDRIVE",
    "ProgramData",
    "PROGRAMDATA",
    "ProgramFiles",
    "PROGRAMFILES",
    "ProgramFiles(x86)",
    "APPDATA",
    "LOCALAPPDATA",
    "NUMBER_OF_PROCESSORS",
    "PROCESSOR_ARCHITECTURE",
    "COMPUTERNAME",
    "USERNAME",
    "USERDOMAIN",
];

/// Whether a child may see the variable `name` (`LC_*` locale settings too).
pub fn allowed(name: &str) -> bool {
    ALLOWED.contains(&name) || (name.starts_with("LC_") && name.len() > 3)
}

/// Clears `cmd`'s environment down to the allow-list.
pub fn restrict(cmd: &mut Command) {
    cmd.env_clear();
    for (k, v) in std::env::vars_os() {
        if k.to_str().is_some_and(allowed) {
            cmd.env(k, v);
        }
    }
}

/// Reads a secret from the environment and removes it from the process environment, so no
/// later child and no later reader in this process sees it. Call it before any thread is
/// started (`main` does, before the runtime): changing the environment while another thread
/// reads it is undefined behaviour in C libraries.
pub fn take_secret(name: &str) -> Option<String> {
    let value = std::env::var(name).ok();
    if std::env::var_os(name).is_some() {
        std::env::remove_var(name);
    }
    value.filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_agents_are_not_allowed() {
        for name in [
            "PUSHSCAN_SSH_PASSWORD",
            "PUSHSCAN_PASSWORD",
            "SSH_AUTH_SOCK",
            "LD_PRELOAD",
            "AWS_SECRET_ACCESS_KEY",
            "LC_",
        ] {
            assert!(!allowed(name), "{name} must not reach a child");
        }
        for name in ["PATH", "HOME", "LANG", "LC_ALL", "SystemRoot"] {
            assert!(allowed(name), "{name} should reach a child");
        }
    }
}
