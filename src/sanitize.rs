//! Making host-supplied text safe: for the local disk and for the terminal.
//!
//! Remote file names and report fields come from hosts that may be
//! compromised. A name like `..\..\x` or one with a newline must never become
//! a path outside the evidence directory, and a process name carrying ANSI
//! escapes must never reach the operator's terminal as escapes.

/// Characters that are dangerous on the operator's terminal or that hide
/// text: C0/C1 controls, DEL, and bidirectional overrides.
fn is_hidden_or_control(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Escapes untrusted text for display on a terminal: controls become visible
/// `\xNN` / `\u{NNNN}` sequences, the rest is kept (Japanese and French text
/// stay readable). Output is capped at `max` characters.
pub fn display(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for (count, c) in text.chars().enumerate() {
        if count >= max {
            out.push('…');
            break;
        }
        if is_hidden_or_control(c) {
            if (c as u32) < 0x100 {
                out.push_str(&format!("\\x{:02x}", c as u32));
            } else {
                out.push_str(&format!("\\u{{{:04x}}}", c as u32));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Turns an untrusted name into one safe file-name component on Linux and
/// Windows: ASCII letters, digits, `.`, `-`, `_` only; no leading dot; no
/// Windows device names; at most 120 bytes. Never empty.
pub fn file_name(untrusted: &str) -> String {
    let mut out: String = untrusted
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    while out.starts_with('.') {
        out.replace_range(0..1, "_");
    }
    while out.ends_with('.') {
        out.pop();
        out.push('_');
    }
    if out.len() > 120 {
        // Keep the end: it holds the extension and EmoCheck's timestamp.
        let cut = out.len() - 120;
        out = out[cut..].to_string();
    }
    let stem = out
        .split('.')
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    let reserved = matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || ((stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.len() == 4
            && stem.as_bytes()[3].is_ascii_digit());
    if reserved {
        out.insert(0, '_');
    }
    if out.is_empty() {
        out.push_str("unnamed");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_stay_inside() {
        for name in [
            "../../etc/passwd",
            "..\\..\\evil_emocheck.txt",
            "a\nb\x1b[31m_emocheck.txt",
            "..",
            ".",
            "",
            "/abs",
            "C:\\x",
            "CON.txt",
            "com1",
        ] {
            let s = file_name(name);
            assert!(!s.is_empty());
            assert!(!s.starts_with('.'), "{s}");
            assert!(!s.contains(['/', '\\', '\n', '\x1b', ':']), "{s}");
            assert_ne!(s.to_ascii_uppercase(), "CON.TXT");
        }
        assert_eq!(
            file_name("PC-1_20261120093011_emocheck.txt"),
            "PC-1_20261120093011_emocheck.txt"
        );
        assert_eq!(file_name("CON.txt"), "_CON.txt");
        assert!(file_name(&"a".repeat(500)).len() <= 120);
    }

    #[test]
    fn display_escapes_controls_keeps_text() {
        assert_eq!(display("a\x1b[31mb", 100), "a\\x1b[31mb");
        assert_eq!(display("検知\u{202e}x", 100), "検知\\u{202e}x");
        assert_eq!(display("abcdef", 3), "abc…");
        assert_eq!(display("Résultat", 100), "Résultat");
    }
}
