//! `file:line:col: message`, the one form of every located config error
//! (inventories and playbooks), so editors and terminals can jump to it.

use std::fmt;
use std::path::Path;

/// Writes `file[:line[:col]]: message` (1-based line and column).
pub(crate) fn write(
    f: &mut fmt::Formatter<'_>,
    file: &Path,
    line: Option<usize>,
    col: Option<usize>,
    message: &str,
) -> fmt::Result {
    write!(f, "{}", file.display())?;
    if let Some(line) = line {
        write!(f, ":{line}")?;
        if let Some(col) = col {
            write!(f, ":{col}")?;
        }
    }
    write!(f, ": {message}")
}
