//! LDAP (Active Directory) inventory sources: a YAML file whose top level
//! says `plugin: pushscan.ldap` (or `kind: ldap`) describes a directory
//! query rather than hosts. This is the seam for that source, kept separate
//! so that it can be built on its own branch; until then such a file is
//! refused with a clear message rather than misread as a static inventory.

use std::path::Path;

use super::{Inventory, InventoryError};

/// Query the directory that the LDAP source file at `path` describes.
pub async fn load(path: &Path, text: &str) -> Result<Inventory, InventoryError> {
    let _ = text;
    Err(InventoryError::new(
        path,
        "LDAP inventory sources are not built yet",
    ))
}

/// Whether `text` is an LDAP source: a top-level `plugin: pushscan.ldap`
/// or `kind: ldap` key.
pub fn is_ldap_source(text: &str) -> bool {
    text.lines().any(|line| {
        let Some((key, value)) = line.split_once(':') else {
            return false;
        };
        let value = value.split(" #").next().unwrap_or("").trim();
        let value = value.trim_matches(|c| c == '"' || c == '\'');
        matches!((key, value), ("plugin", "pushscan.ldap") | ("kind", "ldap"))
    })
}
