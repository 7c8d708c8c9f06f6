//! Running the real Ansible tools (ansible-core from PyPI, installed by scripts/test) the same
//! way in every test that holds pushscan to them: a scratch HOME and working directory, none
//! of the caller's `ANSIBLE_*` settings, an unparsable inventory source a hard failure.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

/// A scratch HOME and working directory for Ansible (it writes ~/.ansible).
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"))
        .path()
}

/// Runs `tool` (`ansible-inventory`, `ansible-vault`, ...) with `args`; a missing tool fails
/// with the install command.
pub fn tool(tool: &str, args: &[&str]) -> Output {
    let home = scratch();
    let mut cmd = Command::new(tool);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ANSIBLE_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .current_dir(home)
        .env("HOME", home)
        .env("ANSIBLE_LOCAL_TEMP", home.join("tmp"))
        .env("ANSIBLE_INVENTORY_UNPARSED_WARNING", "False")
        .env("ANSIBLE_INVENTORY_UNPARSED_FAILED", "True")
        .env("ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED", "True")
        .env("ANSIBLE_NOCOLOR", "1");
    match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "{tool} is not installed: run scripts/test (it installs ansible-core), \
             or `apt-get install -y --no-install-recommends python3-pip && python3 -m pip \
             install --break-system-packages ansible-core`"
        ),
        Err(e) => panic!("cannot run {tool}: {e}"),
    }
}

/// Every place two JSON values differ (Ansible's `a`, pushscan's `p`), one line each.
pub fn json_diff(a: &Value, p: &Value, path: &str, out: &mut Vec<String>) {
    match (a, p) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let here = format!("{path}/{k}");
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => json_diff(u, v, &here, out),
                    (Some(u), None) => out.push(format!("{here}: only Ansible has {u}")),
                    (None, Some(v)) => out.push(format!("{here}: only pushscan has {v}")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                json_diff(u, v, &format!("{path}[{i}]"), out);
            }
        }
        _ if a != p => out.push(format!("{path}: Ansible {a}, pushscan {p}")),
        _ => {}
    }
}
