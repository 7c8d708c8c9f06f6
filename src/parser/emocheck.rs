//! EmoCheck report parser (text en/ja/fr and JSON). Placeholder: being written.

use crate::model::ParsedReport;

/// Parse one EmoCheck report file. Never panics, whatever the bytes.
pub fn parse(file_name: &str, bytes: &[u8]) -> ParsedReport {
    let _ = (file_name, bytes);
    ParsedReport::unparseable("not implemented")
}

/// The `(computer name, yyyymmddhhmmss)` encoded in a report file name.
pub fn name_stamp(file_name: &str) -> Option<(Option<String>, String)> {
    let _ = file_name;
    None
}
