//! Windows command lines built from untrusted pieces: the [`Shell::Cmd`](crate::transport::Shell::Cmd) dialect.
//!
//! Everything pushscan runs on a Windows host goes through `cmd.exe` (the shell of every
//! `Shell::Cmd` transport's `exec_line` and commands), so a path or argument is safe only if neither the C runtime's
//! argument splitting nor cmd's own parsing can be steered by it. Rather than
//! escaping every metacharacter for both layers, we refuse the few characters
//! that no quoting makes safe in cmd (`"`, `%`, `!`, control characters) and
//! quote the rest. Names that fail are refused with a reason, never run.

use crate::transport::{TResult, TransportError};

/// Refuses text that cmd would expand or that could end a quoted string.
pub fn check(what: &str, s: &str) -> TResult<()> {
    if let Some(c) = s
        .chars()
        .find(|c| matches!(c, '"' | '%' | '!') || c.is_control())
    {
        return Err(TransportError::error(format!(
            "{what} {} contains {c:?}, which cannot be passed safely through cmd.exe",
            crate::sanitize::display(s, 120)
        )));
    }
    Ok(())
}

/// Quotes one argument for the MSVC runtime and cmd: wrapped in double
/// quotes when it holds a blank or a cmd operator (inside quotes cmd takes
/// `&|<>()^` literally). [`check`] must have accepted it.
pub fn quote(s: &str) -> String {
    let needs = s.is_empty()
        || s.chars().any(|c| {
            matches!(
                c,
                ' ' | '\t' | '&' | '|' | '<' | '>' | '(' | ')' | '^' | ',' | ';' | '='
            )
        });
    if !needs {
        return s.to_string();
    }
    // Backslashes before the closing quote must be doubled, or the quote is
    // taken as escaped (CommandLineToArgvW rules).
    let trailing = s.len() - s.trim_end_matches('\\').len();
    format!("\"{s}{}\"", "\\".repeat(trailing))
}

/// A path, always quoted (paths are the usual carriers of blanks).
pub fn quote_path(what: &str, p: &str) -> TResult<String> {
    check(what, p)?;
    let trailing = p.len() - p.trim_end_matches('\\').len();
    Ok(format!("\"{p}{}\"", "\\".repeat(trailing)))
}

/// The command line running `program` with `args`.
pub fn command_line(program: &str, args: &[String]) -> TResult<String> {
    let mut line = quote_path("program", program)?;
    for a in args {
        check("argument", a)?;
        line.push(' ');
        line.push_str(&quote(a));
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_is_refused() {
        for bad in ["a\"b", "%PATH%", "x!y!", "a\r\nb", "a\0"] {
            assert!(check("name", bad).is_err(), "{bad:?}");
        }
        assert!(check("name", r"PC-1_20261125_emocheck.json").is_ok());
        assert!(check("name", "日本語 & more").is_ok());
    }

    #[test]
    fn quoting_follows_msvc_and_cmd_rules() {
        assert_eq!(quote("/quiet"), "/quiet");
        assert_eq!(quote("a b"), "\"a b\"");
        assert_eq!(quote("a&b"), "\"a&b\"");
        assert_eq!(quote(""), "\"\"");
        assert_eq!(quote(r"C:\a b\"), "\"C:\\a b\\\\\"");
        assert_eq!(
            command_line(
                r"C:\Windows\pushscan\emocheck.exe",
                &["/output".into(), r"C:\Windows\pushscan\reports".into()]
            )
            .unwrap(),
            r#""C:\Windows\pushscan\emocheck.exe" /output C:\Windows\pushscan\reports"#
        );
        assert!(command_line("x.exe", &["100%".into()]).is_err());
    }
}
