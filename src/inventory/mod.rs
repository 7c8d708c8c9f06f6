//! Inventory (temporary stub with the agreed public face; replaced by the real module).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    Ssh,
    Local,
    Winrm,
}

#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub address: String,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub connection: Connection,
    pub key_file: Option<PathBuf>,
    pub groups: Vec<String>,
    pub group_paths: Vec<Vec<String>>,
    pub vars: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone)]
pub struct Inventory {
    pub source: PathBuf,
    pub hosts: Vec<Host>,
}

#[derive(Debug)]
pub struct InventoryError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub col: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for InventoryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.message)
    }
}
impl std::error::Error for InventoryError {}

pub fn load(path: &Path) -> Result<Inventory, InventoryError> {
    Err(InventoryError {
        file: path.to_path_buf(),
        line: None,
        col: None,
        message: "stub".into(),
    })
}

impl Inventory {
    pub fn select(&self, _pattern: &str) -> Result<Vec<&Host>, InventoryError> {
        Ok(self.hosts.iter().collect())
    }
}
