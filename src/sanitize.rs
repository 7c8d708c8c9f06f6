//! Making host-supplied text safe: for the local disk, the terminal and HTML.
//!
//! Remote file names and report fields come from hosts that may be
//! compromised. A name like `..\..\x` or one with a newline must never become
//! a path outside the evidence directory, a process name carrying ANSI
//! escapes must never reach the operator's terminal as escapes, and a process
//! named `<script>` must never become markup in the HTML report.

/// Characters that are dangerous on the operator's terminal or that hide
/// text: C0/C1 controls, DEL, line and paragraph separators, and every
/// character that draws nothing or reorders what follows (Unicode's format
/// characters, the whole bidi-control set, variation selectors, tags), with
/// which one host name could be made to look exactly like another.
fn is_hidden_or_control(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00ad}'                      // soft hyphen
            | '\u{034f}'                    // combining grapheme joiner
            | '\u{061c}'                    // Arabic letter mark (bidi)
            | '\u{0600}'..='\u{0605}' | '\u{06dd}' | '\u{070f}' | '\u{0890}'..='\u{0891}' | '\u{08e2}'
            | '\u{115f}' | '\u{1160}' | '\u{3164}' | '\u{ffa0}' // Hangul fillers
            | '\u{17b4}' | '\u{17b5}'        // Khmer inherent vowels
            | '\u{180b}'..='\u{180f}'        // Mongolian selectors and separator
            | '\u{200b}'..='\u{200f}'        // zero-width space, (non-)joiner, LRM, RLM
            | '\u{2028}' | '\u{2029}'        // line and paragraph separators
            | '\u{202a}'..='\u{202e}'        // bidi embeddings and overrides
            | '\u{2060}'..='\u{206f}'        // word joiner, invisible operators, bidi isolates
            | '\u{fe00}'..='\u{fe0f}'        // variation selectors
            | '\u{feff}'                    // zero-width no-break space (BOM)
            | '\u{fff9}'..='\u{fffb}'        // interlinear annotation
            | '\u{110bd}' | '\u{110cd}' | '\u{13430}'..='\u{1343f}'
            | '\u{1bca0}'..='\u{1bca3}' | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0000}'..='\u{e0fff}'      // tags and variation selectors supplement
        )
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
        push_visible(&mut out, c);
    }
    out
}

/// Appends `c`, or its visible escape when it is a control or hides text.
fn push_visible(out: &mut String, c: char) {
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

/// Like [`display`], but keeps line ends and tabs: for a whole report shown
/// as a block of text. CRLF becomes LF; a lone CR is escaped like any other
/// control character.
pub fn display_multiline(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    let mut chars = text.chars().peekable();
    let mut count = 0;
    while let Some(c) = chars.next() {
        if count >= max {
            out.push('…');
            break;
        }
        count += 1;
        match c {
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' | '\t' => out.push(c),
            c => push_visible(&mut out, c),
        }
    }
    out
}

/// Escapes text for HTML element content *and* quoted attribute values:
/// `& < > " '` become character references. Apply it to text that
/// [`display`] has already made visible; it does not touch controls.
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Untrusted text ready for HTML (text or attribute): controls and bidi
/// overrides made visible as in [`display`] (capped at `max` characters),
/// then HTML-escaped.
pub fn html(text: &str, max: usize) -> String {
    html_escape(&display(text, max))
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

    /// Characters that draw nothing or reorder what follows: with them one
    /// host name can be made to look exactly like another.
    const INVISIBLE: &[char] = &[
        '\u{00ad}',
        '\u{061c}',
        '\u{180e}',
        '\u{200b}',
        '\u{200c}',
        '\u{200d}',
        '\u{200e}',
        '\u{200f}',
        '\u{2028}',
        '\u{2029}',
        '\u{202a}',
        '\u{202b}',
        '\u{202c}',
        '\u{202d}',
        '\u{202e}',
        '\u{2060}',
        '\u{2061}',
        '\u{2064}',
        '\u{2066}',
        '\u{2067}',
        '\u{2068}',
        '\u{2069}',
        '\u{206a}',
        '\u{206f}',
        '\u{feff}',
        '\u{fe0f}',
        '\u{fff9}',
        '\u{e0001}',
        '\u{e0041}',
        '\u{e007f}',
        '\u{e0100}',
    ];

    #[test]
    fn invisible_and_reordering_characters_are_made_visible() {
        for &c in INVISIBLE {
            let shown = display(&format!("pc{c}1"), 100);
            let escape = match c as u32 {
                n if n < 0x100 => format!("\\x{n:02x}"),
                n => format!("\\u{{{n:04x}}}"),
            };
            assert_eq!(shown, format!("pc{escape}1"), "U+{:04X}", c as u32);
            assert_ne!(shown, "pc1");
            let multi = display_multiline(&format!("pc{c}1\n"), 100);
            assert_eq!(multi, format!("{shown}\n"), "U+{:04X}", c as u32);
            assert_eq!(html(&format!("pc{c}1"), 100), shown, "U+{:04X}", c as u32);
        }
        // Ordinary text, including CJK and combining accents, is kept.
        for text in ["検知されました", "Re\u{301}sultat", "PC-1", "ｗｅｂ０１"] {
            assert_eq!(display(text, 100), text);
        }
    }

    #[test]
    fn html_escapes_markup_quotes_and_controls() {
        assert_eq!(
            html("<script>alert(1)</script>\x1b[31mRED", 100),
            "&lt;script&gt;alert(1)&lt;/script&gt;\\x1b[31mRED"
        );
        assert_eq!(
            html("a\"b' onload=x&y", 100),
            "a&quot;b&#39; onload=x&amp;y"
        );
        assert_eq!(html("検知\u{202e}", 100), "検知\\u{202e}");
    }

    #[test]
    fn multiline_keeps_lines_and_tabs_escapes_the_rest() {
        assert_eq!(
            display_multiline("a\r\nb\tc\rd\x1b[0m\n", 100),
            "a\nb\tc\\x0dd\\x1b[0m\n"
        );
    }
}
