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

/// serde-saphyr's message carries a source excerpt; keep only its first line
/// without the "line N column M" prefix (we print file:line:col ourselves).
pub(crate) fn first_message_line(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or(msg).trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    match first.find(": ") {
        Some(i) if first.starts_with("line ") => first[i + 2..].to_string(),
        _ => first.to_string(),
    }
}
