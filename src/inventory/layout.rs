//! Inventories laid out the way ops teams keep them: a directory of
//! inventory files (`-i DIR`), and `group_vars/` and `host_vars/` beside
//! each inventory source, read as Ansible reads them.
//!
//! A directory source is every entry in it, sorted by name, recursing into
//! subdirectories, minus what Ansible skips by default: hidden names,
//! `group_vars`, `host_vars` and `vars_plugins`, and names ending in
//! `.pyc .pyo .swp .bak ~ .rpm .md .txt .rst .orig .cfg .retry`.
//!
//! Variables files are looked up as Ansible's `host_group_vars` plugin does:
//! for a group or host `NAME`, the first of `NAME`, `NAME.yml`,
//! `NAME.yaml`, `NAME.json` that exists (only the first); a directory is
//! read whole, sorted by name, recursing into subdirectories without an
//! extension, taking files with no extension or one of those three and
//! skipping hidden names and names ending in `~`. A later file's variable
//! replaces an earlier one's. Each inventory source contributes the files
//! beside it (a directory source: its own `group_vars/`; a file: its
//! directory's) as one layer, in `-i` order; `Builder::finish` applies
//! them with Ansible's precedence.
//!
//! A vaulted variables file (`ansible-vault encrypt`) is decrypted whole;
//! its passwords become credentials, its connection settings are used and
//! shown, and every other value is shown as a placeholder, because any
//! value in a vaulted file was meant to stay secret.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use secrecy::SecretString;
use serde_json::Value;

use super::vault::{self, VaultError, VaultValue};
use super::yaml11::{self, Kind, Schema};
use super::{
    check_var, vault_text, Builder, InventoryError, VarDef, VarsLayer, PRIORITY_VAR, SECRET_VARS,
    VAULT_KEY,
};

/// Names Ansible never reads as inventory sources in a directory.
const IGNORED_NAMES: &[&str] = &["group_vars", "host_vars", "vars_plugins"];
/// Endings Ansible skips in an inventory directory (its default
/// `inventory_ignore_extensions`).
const IGNORED_ENDINGS: &[&str] = &[
    ".pyc", ".pyo", ".swp", ".bak", "~", ".rpm", ".md", ".txt", ".rst", ".orig", ".cfg", ".retry",
];
/// Extensions of variables files.
const VARS_EXTENSIONS: &[&str] = &[".yml", ".yaml", ".json"];

/// Deepest directory nesting followed (a symbolic link loop would be
/// endless).
const MAX_DEPTH: usize = 16;
/// Most files one inventory directory or one variables directory may hold.
const MAX_FILES: usize = 10_000;
/// Largest variables file read.
pub(crate) const MAX_VARS_FILE_BYTES: u64 = 16 * 1024 * 1024;

fn ignored_source(name: &str) -> bool {
    name.starts_with('.')
        || IGNORED_NAMES.contains(&name)
        || IGNORED_ENDINGS.iter().any(|e| name.ends_with(e))
}

/// Python's `os.path.splitext(name)[1]`: leading dots do not start an
/// extension.
fn py_ext(name: &str) -> &str {
    let stripped = name.trim_start_matches('.');
    let lead = name.len() - stripped.len();
    match stripped.rfind('.') {
        Some(i) => &name[lead + i..],
        None => "",
    }
}

/// Entry names of `dir`, sorted as Python sorts them (by code point, which
/// is byte order in UTF-8). A name that is not UTF-8 is an error: no
/// inventory or group could be called that.
fn sorted_names(dir: &Path) -> Result<Vec<String>, InventoryError> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| InventoryError::new(dir, format!("cannot read directory: {e}")))?;
    let mut names = Vec::new();
    for entry in rd {
        let entry =
            entry.map_err(|e| InventoryError::new(dir, format!("cannot read directory: {e}")))?;
        let name = entry.file_name().into_string().map_err(|n| {
            InventoryError::new(
                dir,
                format!("entry {} is not valid UTF-8", n.to_string_lossy()),
            )
        })?;
        names.push(name);
        if names.len() > MAX_FILES {
            return Err(InventoryError::new(
                dir,
                format!("holds more than {MAX_FILES} entries"),
            ));
        }
    }
    names.sort();
    Ok(names)
}

/// Every inventory file of directory source `dir`, in Ansible's order.
pub(crate) fn dir_sources(dir: &Path) -> Result<Vec<PathBuf>, InventoryError> {
    let mut out = Vec::new();
    walk_sources(dir, 0, &mut out)?;
    if out.is_empty() {
        return Err(InventoryError::new(
            dir,
            "inventory directory holds no inventory file",
        ));
    }
    Ok(out)
}

fn walk_sources(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), InventoryError> {
    if depth > MAX_DEPTH {
        return Err(InventoryError::new(
            dir,
            format!("nested more than {MAX_DEPTH} directories deep"),
        ));
    }
    for name in sorted_names(dir)? {
        if ignored_source(&name) {
            continue;
        }
        let path = dir.join(&name);
        if path.is_dir() {
            walk_sources(&path, depth + 1, out)?;
        } else {
            out.push(path);
            if out.len() > MAX_FILES {
                return Err(InventoryError::new(
                    dir,
                    format!("holds more than {MAX_FILES} inventory files"),
                ));
            }
        }
    }
    Ok(())
}

/// The directory whose `group_vars/` and `host_vars/` belong to source
/// `path`: the directory itself, or the file's directory.
pub(crate) fn vars_dir_of(path: &Path) -> PathBuf {
    if path.is_dir() {
        return path.to_path_buf();
    }
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Whether Ansible would run this source as an inventory script: it is
/// executable, or starts with `#!`.
pub(crate) fn is_script(path: &Path, bytes: &[u8]) -> bool {
    if bytes.starts_with(b"#!") {
        return true;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path) {
            return m.is_file() && m.permissions().mode() & 0o111 != 0;
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    false
}

pub(crate) fn script_error(path: &Path) -> InventoryError {
    InventoryError::new(
        path,
        format!(
            "is an inventory script (executable, or starts with `#!`); pushscan does not run \
             inventory scripts or plugins: save what Ansible makes of it with \
             `ansible-inventory -i {} --list > inventory.json` and give that file (or clear \
             its executable bit if it is a plain inventory)",
            path.display()
        ),
    )
}

/// The files `host_group_vars` reads for `name` in `base` (a `group_vars`
/// or `host_vars` directory whose entries are `entries`).
fn vars_files(
    base: &Path,
    entries: &HashSet<String>,
    name: &str,
) -> Result<Vec<PathBuf>, InventoryError> {
    for ext in ["", ".yml", ".yaml", ".json"] {
        let candidate = format!("{name}{ext}");
        if !entries.contains(&candidate) {
            continue;
        }
        let path = base.join(&candidate);
        if path.is_dir() {
            let mut out = Vec::new();
            walk_vars_dir(&path, 0, &mut out)?;
            return Ok(out);
        }
        return Ok(vec![path]);
    }
    Ok(Vec::new())
}

fn walk_vars_dir(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), InventoryError> {
    if depth > MAX_DEPTH {
        return Err(InventoryError::new(
            dir,
            format!("nested more than {MAX_DEPTH} directories deep"),
        ));
    }
    for name in sorted_names(dir)? {
        if name.starts_with('.') || name.ends_with('~') {
            continue;
        }
        let ext = py_ext(&name);
        let path = dir.join(&name);
        if path.is_dir() {
            if ext.is_empty() {
                walk_vars_dir(&path, depth + 1, out)?;
            }
        } else if path.is_file() && (ext.is_empty() || VARS_EXTENSIONS.contains(&ext)) {
            out.push(path);
            if out.len() > MAX_FILES {
                return Err(InventoryError::new(
                    dir,
                    format!("holds more than {MAX_FILES} variables files"),
                ));
            }
        }
    }
    Ok(())
}

/// What a value from a vaulted variables file is shown as (its decrypted
/// value never is).
fn placeholder(file: &Path) -> Value {
    let mut m = serde_json::Map::new();
    m.insert(
        VAULT_KEY.into(),
        Value::from(format!("(vaulted in {}; not shown)", file.display())),
    );
    Value::Object(m)
}

fn interpreted(key: &str) -> bool {
    super::is_connection_var(key) || key == PRIORITY_VAR
}

impl Builder {
    /// Decrypt what a variable needs decrypted: a vaulted password becomes
    /// a secret, a vaulted connection setting its plain value; other inline
    /// vault values stay ciphertext, as Ansible shows them. `vaulted_file`
    /// names the vaulted file the value was read from, if it was.
    pub(crate) fn unvault(
        &self,
        key: &str,
        def: &mut VarDef,
        vaulted_file: Option<&Path>,
    ) -> Result<(), InventoryError> {
        let secret_var = SECRET_VARS.contains(&key);
        if let Some(ct) = vault_text(&def.value) {
            if !(secret_var || interpreted(key)) || !vault::is_vaulted(ct) {
                return Ok(());
            }
            let plain = match vault::decrypt(ct) {
                Ok(p) => p,
                // Refused by `check_var` where a value is needed.
                Err(VaultError::NoSecrets) => return Ok(()),
                Err(e) => {
                    return Err(self.err_in(
                        def.src,
                        def.val_loc.or(def.key_loc),
                        format!("`{key}`: {e}"),
                    ))
                }
            };
            let text = std::str::from_utf8(&plain).map_err(|_| {
                self.err_in(
                    def.src,
                    def.val_loc.or(def.key_loc),
                    format!("`{key}`: the decrypted vault value is not UTF-8 text"),
                )
            })?;
            if secret_var {
                def.secret = Some(VaultValue(Arc::new(SecretString::from(text))));
            } else {
                def.plain = Some(Value::String(text.to_string()));
            }
            return Ok(());
        }
        let Some(file) = vaulted_file else {
            return Ok(());
        };
        if secret_var {
            let text = match &def.value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => {
                    return Err(self.err_in(
                        def.src,
                        def.val_loc.or(def.key_loc),
                        format!("`{key}` must be a string, found {}", super::describe(other)),
                    ))
                }
            };
            def.secret = Some(VaultValue(Arc::new(SecretString::from(text))));
            def.value = placeholder(file);
        } else if !interpreted(key) {
            def.value = placeholder(file);
        }
        Ok(())
    }

    /// Read `dir/group_vars` and `dir/host_vars` for every group and host
    /// read so far, as the next layer.
    pub(crate) fn read_vars_dir(&mut self, dir: &Path) -> Result<(), InventoryError> {
        let mut layer = VarsLayer::default();
        for (sub, groups) in [("group_vars", true), ("host_vars", false)] {
            let base = dir.join(sub);
            if !base.is_dir() {
                continue;
            }
            let entries: HashSet<String> = sorted_names(&base)?.into_iter().collect();
            let names: Vec<(usize, String)> = if groups {
                self.groups
                    .iter()
                    .enumerate()
                    .map(|(i, g)| (i, g.name.clone()))
                    .collect()
            } else {
                self.hosts
                    .iter()
                    .enumerate()
                    .map(|(i, h)| (i, h.name.clone()))
                    .collect()
            };
            for (i, name) in names {
                // Ansible skips names that look like absolute paths (chroot
                // hosts).
                if name.starts_with('/') || name.is_empty() {
                    continue;
                }
                let mut vars = BTreeMap::new();
                for file in vars_files(&base, &entries, &name)? {
                    self.read_vars_file(&file, dir, &mut vars)?;
                }
                if !vars.is_empty() {
                    if groups {
                        layer.groups.insert(i, vars);
                    } else {
                        layer.hosts.insert(i, vars);
                    }
                }
            }
        }
        self.layers.push(layer);
        Ok(())
    }

    fn read_vars_file(
        &mut self,
        file: &Path,
        inv_dir: &Path,
        vars: &mut BTreeMap<String, VarDef>,
    ) -> Result<(), InventoryError> {
        let meta = std::fs::metadata(file)
            .map_err(|e| InventoryError::new(file, format!("cannot read: {e}")))?;
        if meta.len() > MAX_VARS_FILE_BYTES {
            return Err(InventoryError::new(
                file,
                format!(
                    "larger than {} MiB, not a variables file",
                    MAX_VARS_FILE_BYTES / (1024 * 1024)
                ),
            ));
        }
        let bytes = zeroize::Zeroizing::new(
            std::fs::read(file)
                .map_err(|e| InventoryError::new(file, format!("cannot read: {e}")))?,
        );
        let raw = std::str::from_utf8(&bytes)
            .map_err(|e| InventoryError::new(file, format!("not valid UTF-8: {e}")))?;
        let decrypted;
        let (text, vaulted) = if vault::is_vaulted(raw) {
            decrypted =
                vault::decrypt(raw).map_err(|e| InventoryError::new(file, e.to_string()))?;
            let t = std::str::from_utf8(&decrypted)
                .map_err(|_| InventoryError::new(file, "the decrypted vault is not UTF-8 text"))?;
            (t, true)
        } else {
            (raw, false)
        };
        self.begin_source(file);
        self.key_base.insert(self.current, inv_dir.to_path_buf());
        let t = text.trim_start_matches('\u{feff}').trim_start();
        // Ansible tries JSON first, then YAML.
        let schema = if (t.starts_with('{') || t.starts_with('['))
            && serde_json::from_str::<serde::de::IgnoredAny>(t).is_ok()
        {
            Schema::Json
        } else {
            Schema::Yaml11
        };
        let root = yaml11::parse(text, schema)
            .map_err(|e| self.err(e.loc, format!("invalid YAML: {}", e.message)))?;
        let Some(root) = root else { return Ok(()) };
        let entries = match root.kind {
            Kind::Map(entries) => entries,
            Kind::Null => return Ok(()),
            other => {
                return Err(self.err(
                    root.loc,
                    format!(
                        "a variables file must be a mapping of variable names to values, \
                         found {}",
                        other.what()
                    ),
                ))
            }
        };
        for (k, v) in entries {
            let key = match &k.kind {
                Kind::Str(s) => s.clone(),
                other => {
                    return Err(self.err(
                        k.loc,
                        format!("a variable name must be a string, found {}", other.what()),
                    ))
                }
            };
            let val_loc = v.loc;
            let mut def = VarDef::new(v.into_json(), k.loc, val_loc);
            def.src = self.current;
            self.unvault(&key, &mut def, vaulted.then_some(file))?;
            check_var(file, &key, &def)?;
            vars.insert(key, def);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansible_ignores_these_in_a_directory() {
        for n in [
            ".git",
            "group_vars",
            "host_vars",
            "vars_plugins",
            "a.md",
            "x.cfg",
            "h~",
            "b.retry",
            "c.orig",
        ] {
            assert!(ignored_source(n), "{n}");
        }
        for n in [
            "hosts",
            "a.yml",
            "b.ini",
            "group_vars.yml",
            "c.json",
            "README",
        ] {
            assert!(!ignored_source(n), "{n}");
        }
    }

    #[test]
    fn extensions_as_python_splits_them() {
        assert_eq!(py_ext("a.yml"), ".yml");
        assert_eq!(py_ext("a.b.yaml"), ".yaml");
        assert_eq!(py_ext("plain"), "");
        assert_eq!(py_ext(".hidden"), "");
        assert_eq!(py_ext("x."), ".");
    }
}
