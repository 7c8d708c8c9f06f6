//! EmoCheck report parser: text reports (English, Japanese, French) and JSON
//! reports, read from the raw bytes of one report file.
//!
//! EmoCheck's output is not a clean machine format, and a parser that trusts it
//! would either reject real reports or, worse, read a broken one as clean. The
//! quirks handled here, and why:
//!
//! * **Mixed encodings in one file.** Labels are UTF-8 string literals, but host
//!   names, process names and paths are converted with the scanned host's OEM
//!   code page (CP932 on Japanese Windows, CP437/CP850 on Western ones). So the
//!   file is never decoded as a whole: labels are matched on bytes and each
//!   value is decoded on its own (UTF-8, else CP932 if it decodes cleanly, else
//!   Windows-1252), with a warning naming the field whenever it was not UTF-8.
//! * **Hand-written JSON.** The JSON writer concatenates strings: it doubles
//!   every `\` byte in `image_path` and `registry_key` and escapes nothing else,
//!   so a `"` or `\` in `hostname` or `process_name` makes the file invalid
//!   JSON. `serde_json` is tried first; when it fails, a byte-level scanner
//!   recovers each value (a value runs to the `"` followed by optional blanks
//!   and then `,`, a line end or `}`). The backslash doubling is undone on the
//!   bytes *before* decoding, because in CP932 the second byte of characters
//!   such as `ソ` (0x83 0x5C) is a backslash that the writer doubled too. Even
//!   when `serde_json` succeeds, a backslash in a raw field was not a JSON
//!   escape, so such files are read by the scanner as well.
//! * **Truncation must never look clean.** A report cut short (full disk,
//!   killed process, partial transfer) is recognised as clean only when the
//!   header, the scan time, the result heading and the explicit "not detected"
//!   verdict are all present (and, for JSON, the object is closed). A cut
//!   before the verdict is `Unparseable` ("truncated: no verdict"); a detected
//!   report cut inside its process list stays `Detected` with what was
//!   recovered and a warning starting with "truncated". Likewise JSON with
//!   data after its closing brace or a repeated key is never clean, and a
//!   repeated `is_infected` cannot turn a `"yes"` into a `"no"`.
//! * **Layout drift.** Lines end in CRLF (Windows text-mode stream) or LF
//!   (copied files); English and French headings carry a trailing space that
//!   editors strip; very old versions wrote `[Emocheck v...]`; reports before
//!   v2.0 have no registry key line; several process blocks may follow one
//!   another.
//! * **Hostile input.** Fields are endpoint-supplied: they are kept faithful
//!   (control characters included, the display layer escapes them), parsing
//!   never panics, only the first 4 MiB are read and every pass is linear.
//!
//! Warnings that explain a status start with a stable prefix: `truncated:`,
//! `incomplete:`, `conflicting verdicts:`, `not trusted as clean:`.

// The parser reads untrusted bytes: make any panicking shortcut a compile error
// outside the tests rather than rely on review.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use encoding_rs::{SHIFT_JIS, WINDOWS_1252};

use super::{
    detected_verdict, exit_text, first_detected, first_line, no_usable_report_verdict,
    timed_out_verdict, unusable_report_verdict, FetchedReport, ResultParser, Verdict,
};
use crate::model::{
    attr, ExecOutcome, Finding, HostClass, ParsedReport, Process, ReportStatus, Severity,
};
use crate::sanitize;

/// A genuine report is a few hundred bytes; anything this big is read only in
/// part so that a hostile file cannot make the collector spend unbounded work.
const MAX_INPUT: usize = 4 * 1024 * 1024;

/// Longest line a genuine report can hold: a 32767-character path converted to
/// a multi-byte code page, plus its label. Longer lines mean the file is not
/// what EmoCheck wrote, so it cannot be trusted as clean.
const MAX_LINE: usize = 128 * 1024;

/// Cap on the per-field notes (decoding, bad PIDs, ...), so that a file with
/// thousands of odd blocks does not drown the operator.
const MAX_NOTES: usize = 32;

/// The delimiter line is 52 underscores; a shorter run is a cut delimiter.
const DELIMITER_LEN: usize = 52;

const WARN_NO_VERDICT: &str = "truncated: no verdict";
const WARN_INVALID_JSON: &str = "invalid JSON recovered";

/// Parse one EmoCheck report file. Never panics, whatever the bytes.
pub fn parse(file_name: &str, bytes: &[u8]) -> ParsedReport {
    let mut w = Warnings::default();
    let oversized = bytes.len() > MAX_INPUT;
    let bytes = bytes.get(..MAX_INPUT).unwrap_or(bytes);
    if oversized {
        w.push("input beyond 4 MiB ignored");
    }
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let stamp_host = || name_stamp(file_name).and_then(|(host, _)| host);

    let mut out = if body.starts_with(b"\xFF\xFE") || body.starts_with(b"\xFE\xFF") {
        // EmoCheck writes narrow strings; a UTF-16 file was re-saved by
        // something else and its content cannot be vouched for.
        w.push("UTF-16 encoded file: not an EmoCheck report");
        Outcome::unparseable(None)
    } else {
        match body.iter().find(|b| !b.is_ascii_whitespace()) {
            None => {
                w.push("empty report");
                Outcome::unparseable(None)
            }
            Some(b'{') => parse_json(body, &mut w),
            Some(_) => parse_text(body, &mut w),
        }
    };

    let longest = longest_line(body);
    if longest > MAX_LINE {
        w.push(format!(
            "line of {longest} bytes exceeds the {MAX_LINE}-byte limit"
        ));
    }
    if out.status == ReportStatus::NotDetected && (oversized || longest > MAX_LINE) {
        out.status = ReportStatus::Unparseable;
        w.push("not trusted as clean: size or line length beyond any genuine report");
    }
    if out.hostname.is_none() {
        out.hostname = stamp_host();
    }

    ParsedReport {
        status: out.status,
        hostname: out.hostname,
        scan_time: out.scan_time,
        checker_version: out.version,
        format: out.format.map(str::to_string),
        findings: out.processes.iter().map(finding).collect(),
        warnings: w.finish(),
    }
}

/// The finding of one Emotet process: kind `process`, severity high, with the attributes
/// EmoCheck declares (its process ID, image path and Run key, where the report has them).
fn finding(p: &Process) -> Finding {
    Finding::process(
        &p.name,
        p.pid,
        &p.image_path,
        p.registry_key.as_deref(),
        Severity::High,
    )
}

/// The `(computer name, yyyymmddhhmmss)` encoded in a report file name:
/// `PC-1_20261120093011_emocheck.txt` -> (Some("PC-1"), "20261120093011"),
/// v0.0.1 `20261120093011_emocheck.txt` -> (None, "20261120093011").
/// Accepts .txt/.json, case-insensitive suffix; validates the 14 digits form a
/// plausible date-time. None otherwise. A leading directory (`/` or `\`) is
/// ignored.
pub fn name_stamp(file_name: &str) -> Option<(Option<String>, String)> {
    // Callers may pass a remote path; computer names cannot contain either
    // separator, so the last component is the file name.
    let base = file_name.rsplit(['/', '\\']).next().unwrap_or(file_name);
    let stem = [&b"_emocheck.txt"[..], &b"_emocheck.json"[..]]
        .iter()
        .find_map(|suffix| {
            let cut = base.len().checked_sub(suffix.len())?;
            let tail = base.as_bytes().get(cut..)?;
            if tail.eq_ignore_ascii_case(suffix) {
                base.get(..cut)
            } else {
                None
            }
        })?;
    let digits_at = stem.len().checked_sub(14)?;
    let stamp = stem.get(digits_at..)?;
    if !plausible_stamp(stamp.as_bytes()) {
        return None;
    }
    let prefix = stem.get(..digits_at)?;
    if prefix.is_empty() {
        return Some((None, stamp.to_string()));
    }
    let host = prefix.strip_suffix('_')?;
    if host.is_empty() {
        return None;
    }
    Some((Some(host.to_string()), stamp.to_string()))
}

// ---------------------------------------------------------------------------
// Shared pieces

/// What a format-specific parser found; `parse` turns it into a `ParsedReport`.
struct Outcome {
    status: ReportStatus,
    hostname: Option<String>,
    scan_time: Option<String>,
    version: Option<String>,
    format: Option<&'static str>,
    processes: Vec<Process>,
}

impl Outcome {
    fn unparseable(format: Option<&'static str>) -> Outcome {
        Outcome {
            status: ReportStatus::Unparseable,
            hostname: None,
            scan_time: None,
            version: None,
            format,
            processes: Vec::new(),
        }
    }
}

/// Status warnings are few and always kept; per-field notes are capped because
/// their number grows with the input.
#[derive(Default)]
struct Warnings {
    list: Vec<String>,
    notes: usize,
    suppressed: usize,
}

impl Warnings {
    fn push(&mut self, warning: impl Into<String>) {
        let warning = warning.into();
        if !self.list.contains(&warning) {
            self.list.push(warning);
        }
    }

    fn note(&mut self, warning: impl Into<String>) {
        if self.notes < MAX_NOTES {
            self.notes += 1;
            self.list.push(warning.into());
        } else {
            self.suppressed += 1;
        }
    }

    fn finish(mut self) -> Vec<String> {
        if self.suppressed > 0 {
            self.list
                .push(format!("{} more warnings suppressed", self.suppressed));
        }
        self.list
    }
}

fn longest_line(body: &[u8]) -> usize {
    body.split(|&b| b == b'\n')
        .map(<[u8]>::len)
        .max()
        .unwrap_or(0)
}

/// Decode one field's bytes. The OEM code page of the scanned host is unknown,
/// so the most specific decoding that fits is chosen: UTF-8, then CP932 (which
/// rejects most Western byte sequences), then Windows-1252 (which accepts all).
fn decode_field(bytes: &[u8], field: &str, w: &mut Warnings) -> String {
    if let Ok(text) = std::str::from_utf8(bytes) {
        return text.to_string();
    }
    if let Some(text) = SHIFT_JIS.decode_without_bom_handling_and_without_replacement(bytes) {
        w.note(format!("{field}: not UTF-8, decoded as CP932"));
        return text.into_owned();
    }
    let (text, _) = WINDOWS_1252.decode_without_bom_handling(bytes);
    w.note(format!(
        "{field}: neither UTF-8 nor CP932, decoded as Windows-1252"
    ));
    text.into_owned()
}

fn trim_blanks(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

fn trim_start_blanks(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    b
}

fn starts_with_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.get(..needle.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(needle))
}

/// Checker versions are short dotted numbers; anything else (a cut header, a
/// megabyte of junk between the brackets) is not worth reporting as one.
fn valid_version(bytes: &[u8], w: &mut Warnings) -> Option<String> {
    let bytes = trim_blanks(bytes);
    let ok = !bytes.is_empty()
        && bytes.len() <= 32
        && bytes.first().is_some_and(u8::is_ascii_digit)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'+'));
    if ok {
        Some(String::from_utf8_lossy(bytes).into_owned())
    } else {
        w.push("checker version is not a version number");
        None
    }
}

fn two_digits(b: &[u8], at: usize) -> Option<u32> {
    number(b.get(at..at.checked_add(2)?)?)
}

fn number(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    b.iter().try_fold(0u32, |n, &d| {
        n.checked_mul(10)?.checked_add(u32::from(d - b'0'))
    })
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        _ => 0,
    }
}

/// `yyyymmddhhmmss` naming a real instant. Years before 1980 cannot come from
/// a Windows clock; years past 2099 are a broken clock or a forged name.
fn plausible_stamp(s: &[u8]) -> bool {
    if s.len() != 14 {
        return false;
    }
    let parts = (
        s.get(..4).and_then(number),
        two_digits(s, 4),
        two_digits(s, 6),
        two_digits(s, 8),
        two_digits(s, 10),
        two_digits(s, 12),
    );
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(se)) = parts else {
        return false;
    };
    (1980..=2099).contains(&y)
        && (1..=12).contains(&mo)
        && d >= 1
        && d <= days_in_month(y, mo)
        && h < 24
        && mi < 60
        && se < 60
}

/// `YYYY-MM-DD HH:MM:SS`, loosely: `/` is accepted in the date and `T` as the
/// separator, and only ranges are checked, because the value is shown as
/// written, never computed with.
fn looks_like_datetime(s: &[u8]) -> bool {
    if s.len() != 19 {
        return false;
    }
    let seps_ok = matches!(s.get(4), Some(b'-' | b'/'))
        && s.get(7) == s.get(4)
        && matches!(s.get(10), Some(b' ' | b'T'))
        && s.get(13) == Some(&b':')
        && s.get(16) == Some(&b':');
    let parts = (
        s.get(..4).and_then(number),
        two_digits(s, 5),
        two_digits(s, 8),
        two_digits(s, 11),
        two_digits(s, 14),
        two_digits(s, 17),
    );
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(se)) = parts else {
        return false;
    };
    seps_ok
        && y >= 1970
        && (1..=12).contains(&mo)
        && (1..=31).contains(&d)
        && h < 24
        && mi < 60
        && se <= 60
}

fn scan_time_field(bytes: &[u8], w: &mut Warnings) -> Option<String> {
    let text = decode_field(bytes, "scan time", w);
    let trimmed = text.trim_matches([' ', '\t']);
    if looks_like_datetime(trimmed.as_bytes()) {
        Some(trimmed.to_string())
    } else {
        w.push("scan time is not a date-time");
        None
    }
}

fn pid_field(bytes: Option<&[u8]>, index: usize, expected: bool, w: &mut Warnings) -> Option<u32> {
    let Some(bytes) = bytes else {
        if expected {
            w.note(format!("process {index}: no process ID"));
        }
        return None;
    };
    let pid = number(trim_blanks(bytes));
    if pid.is_none() {
        w.note(format!("process {index}: process ID is not a number"));
    }
    pid
}

// ---------------------------------------------------------------------------
// Text reports

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lang {
    En,
    Ja,
    Fr,
}

impl Lang {
    fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Ja => "ja",
            Lang::Fr => "fr",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Name,
    Pid,
    ImagePath,
    RegistryKey,
}

// The French time label is misspelt in EmoCheck's source; the correct spelling
// is accepted too in case a later build fixes it.
const TIME_LABELS: &[(Lang, &str)] = &[
    (Lang::En, "Scan time"),
    (Lang::Ja, "プログラム実行時刻"),
    (Lang::Fr, "Temps d'éxécution"),
    (Lang::Fr, "Temps d'exécution"),
];
const RESULT_HEADINGS: &[(Lang, &str)] = &[
    (Lang::En, "[Result]"),
    (Lang::Ja, "[結果]"),
    (Lang::Fr, "[Résultat]"),
];
const DETECTED: &[(Lang, &str)] = &[
    (Lang::En, "Detected Emotet process."),
    (Lang::Ja, "Emotetを検知しました。"),
    (Lang::Fr, "Emotet détecté."),
];
const NOT_DETECTED: &[(Lang, &str)] = &[
    (Lang::En, "Emotet was not detected."),
    (Lang::Ja, "検知しませんでした。"),
    (Lang::Fr, "Emotet n'a pas été détecté."),
];
const BLOCK_HEADINGS: &[(Lang, &str)] = &[
    (Lang::En, "[Emotet Process]"),
    (Lang::Ja, "[詳細]"),
    (Lang::Fr, "[Processus Emotet]"),
];
const FIELD_LABELS: &[(Lang, Field, &str)] = &[
    (Lang::En, Field::Name, "Process Name"),
    (Lang::En, Field::Pid, "Process ID"),
    (Lang::En, Field::ImagePath, "Image Path"),
    (Lang::En, Field::RegistryKey, "Registry Key"),
    (Lang::Ja, Field::Name, "プロセス名"),
    (Lang::Ja, Field::Pid, "プロセスID"),
    (Lang::Ja, Field::ImagePath, "イメージパス"),
    (Lang::Ja, Field::RegistryKey, "レジストリキー"),
    (Lang::Fr, Field::Name, "Nom du processus"),
    (Lang::Fr, Field::Pid, "PID"),
    (Lang::Fr, Field::ImagePath, "Emplacement"),
    (Lang::Fr, Field::RegistryKey, "Clé de registre"),
];

#[derive(Debug)]
enum Line<'a> {
    Blank,
    Header(&'a [u8]),
    Delimiter,
    ScanTime(Lang, &'a [u8]),
    ResultHeading(Lang),
    Detected(Lang),
    NotDetected(Lang),
    BlockHeading(Lang),
    Field(Lang, Field, &'a [u8]),
    Other,
}

/// `label`, optional blanks, `:`, one optional space: the rest is the value,
/// kept byte for byte (a process name may well start or end with a space).
fn labelled<'a>(line: &'a [u8], label: &str) -> Option<&'a [u8]> {
    let rest = trim_start_blanks(line);
    if !starts_with_ignore_case(rest, label.as_bytes()) {
        return None;
    }
    let rest = trim_start_blanks(rest.get(label.len()..)?);
    let rest = rest.strip_prefix(b":")?;
    Some(rest.strip_prefix(b" ").unwrap_or(rest))
}

fn exact(line: &[u8], table: &[(Lang, &str)]) -> Option<Lang> {
    table
        .iter()
        .find(|(_, text)| line.eq_ignore_ascii_case(text.as_bytes()))
        .map(|&(lang, _)| lang)
}

/// `[EmoCheck v2.4.0]`, case-insensitively (old builds wrote `Emocheck`).
fn header_version(trimmed: &[u8]) -> Option<&[u8]> {
    let inner = trimmed.strip_prefix(b"[")?.strip_suffix(b"]")?;
    let inner = trim_blanks(inner);
    if !starts_with_ignore_case(inner, b"emocheck") {
        return None;
    }
    let rest = trim_start_blanks(inner.get(8..)?);
    Some(
        rest.strip_prefix(b"v")
            .or_else(|| rest.strip_prefix(b"V"))
            .unwrap_or(rest),
    )
}

fn classify(line: &[u8]) -> Line<'_> {
    let trimmed = trim_blanks(line);
    if trimmed.is_empty() {
        return Line::Blank;
    }
    if let Some(version) = header_version(trimmed) {
        return Line::Header(version);
    }
    if trimmed.len() >= DELIMITER_LEN && trimmed.iter().all(|&b| b == b'_') {
        return Line::Delimiter;
    }
    if let Some(lang) = exact(trimmed, RESULT_HEADINGS) {
        return Line::ResultHeading(lang);
    }
    if let Some(lang) = exact(trimmed, DETECTED) {
        return Line::Detected(lang);
    }
    if let Some(lang) = exact(trimmed, NOT_DETECTED) {
        return Line::NotDetected(lang);
    }
    if let Some(lang) = exact(trimmed, BLOCK_HEADINGS) {
        return Line::BlockHeading(lang);
    }
    for &(lang, label) in TIME_LABELS {
        if let Some(value) = labelled(line, label) {
            return Line::ScanTime(lang, value);
        }
    }
    for &(lang, field, label) in FIELD_LABELS {
        if let Some(value) = labelled(line, label) {
            return Line::Field(lang, field, value);
        }
    }
    Line::Other
}

#[derive(Default)]
struct Block<'a> {
    name: Option<&'a [u8]>,
    pid: Option<&'a [u8]>,
    image_path: Option<&'a [u8]>,
    registry_key: Option<&'a [u8]>,
}

impl<'a> Block<'a> {
    fn slot(&mut self, field: Field) -> &mut Option<&'a [u8]> {
        match field {
            Field::Name => &mut self.name,
            Field::Pid => &mut self.pid,
            Field::ImagePath => &mut self.image_path,
            Field::RegistryKey => &mut self.registry_key,
        }
    }

    fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.pid.is_none()
            && self.image_path.is_none()
            && self.registry_key.is_none()
    }
}

#[derive(Default)]
struct TextState<'a> {
    header: bool,
    version: Option<&'a [u8]>,
    lang: Option<Lang>,
    mixed_lang: bool,
    scan_time: Option<&'a [u8]>,
    result_heading: bool,
    /// Set by the result heading, cleared by the next non-blank line: the
    /// clean verdict counts only right under its heading.
    awaiting_verdict: bool,
    detected: bool,
    not_detected: bool,
    clean_under_heading: bool,
    blocks: Vec<Block<'a>>,
    /// A delimiter followed the verdict or the last block: the report reached
    /// its end, and what follows is the advice sentence.
    closed: bool,
    headless_fields: bool,
    unknown_lines: usize,
    first_unknown: usize,
}

impl<'a> TextState<'a> {
    fn saw_lang(&mut self, lang: Lang) {
        match self.lang {
            None => self.lang = Some(lang),
            Some(seen) if seen != lang => self.mixed_lang = true,
            Some(_) => {}
        }
    }

    fn line(&mut self, index: usize, line: &'a [u8]) {
        let kind = classify(line);
        if !matches!(kind, Line::Blank) {
            // Only the verdict may immediately follow the heading.
            let awaiting = std::mem::take(&mut self.awaiting_verdict);
            if let Line::NotDetected(_) = kind {
                self.clean_under_heading |= awaiting;
            }
        }
        match kind {
            Line::Blank => {}
            Line::Header(version) if index == 0 => {
                self.header = true;
                self.version = Some(version);
            }
            Line::Header(_) | Line::Other => {
                if !self.closed {
                    if self.unknown_lines == 0 {
                        self.first_unknown = index + 1;
                    }
                    self.unknown_lines += 1;
                }
            }
            Line::Delimiter => {
                if self.detected || self.not_detected || !self.blocks.is_empty() {
                    self.closed = true;
                }
            }
            Line::ScanTime(lang, value) => {
                self.saw_lang(lang);
                self.scan_time.get_or_insert(value);
            }
            Line::ResultHeading(lang) => {
                self.saw_lang(lang);
                self.result_heading = true;
                self.awaiting_verdict = true;
            }
            Line::Detected(lang) => {
                self.saw_lang(lang);
                self.detected = true;
            }
            Line::NotDetected(lang) => {
                self.saw_lang(lang);
                self.not_detected = true;
            }
            Line::BlockHeading(lang) => {
                self.saw_lang(lang);
                self.blocks.push(Block::default());
                self.closed = false;
            }
            Line::Field(lang, field, value) => {
                self.saw_lang(lang);
                // A repeated field or a field after the closing delimiter means
                // a new process whose heading is missing.
                let open = !self.closed
                    && self
                        .blocks
                        .last_mut()
                        .is_some_and(|block| block.slot(field).is_none());
                if !open {
                    self.headless_fields = true;
                    self.blocks.push(Block::default());
                }
                self.closed = false;
                if let Some(block) = self.blocks.last_mut() {
                    *block.slot(field) = Some(value);
                }
            }
        }
    }
}

fn parse_text(body: &[u8], w: &mut Warnings) -> Outcome {
    let mut st = TextState::default();
    let segments = body.split(|&b| b == b'\n').count();
    let unterminated = !body.ends_with(b"\n");
    let mut cut_field = false;
    for (index, raw) in body.split(|&b| b == b'\n').enumerate() {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        // A field on a last line with no line end may be cut mid-value: a
        // PID of "43" read from a file cut inside "4312" names another
        // process. Such a field is dropped, not guessed.
        if unterminated && index + 1 == segments && matches!(classify(line), Line::Field(..)) {
            cut_field = true;
            continue;
        }
        st.line(index, line);
    }
    if cut_field {
        w.push("truncated: last field cut off mid-line, not read");
    }

    let mut out = Outcome::unparseable(st.lang.map(Lang::code));
    out.version = st.version.and_then(|v| valid_version(v, w));
    out.scan_time = st.scan_time.and_then(|t| scan_time_field(t, w));
    if st.mixed_lang {
        w.push("labels in more than one language");
    }

    let has_blocks = !st.blocks.is_empty();
    if st.detected || (has_blocks && st.header) {
        out.status = ReportStatus::Detected;
        if !st.detected {
            w.push(if st.not_detected {
                "conflicting verdicts: not-detected verdict but process blocks listed"
            } else {
                "no detected verdict, but process blocks listed"
            });
        } else if st.not_detected {
            w.push("conflicting verdicts: both detected and not detected");
        }
        if !st.header {
            w.push("first line is not an [EmoCheck v...] header");
        }
        if st.scan_time.is_none() {
            w.push("no scan time");
        }
        if st.headless_fields {
            w.push("process fields outside a process block heading");
        }
        if !st.closed {
            w.push(if has_blocks {
                "truncated: report ends inside the process list"
            } else {
                "truncated: report ends before the process list"
            });
        } else if !has_blocks {
            w.push("detected verdict but no process listed");
        }
        let last = st.blocks.len();
        for (i, block) in st.blocks.iter().enumerate() {
            // A heading with no field under it (cut right after it) carries
            // nothing worth showing as a process.
            if block.is_empty() {
                continue;
            }
            // The last block of a truncated report is expected to be partial;
            // the truncation warning already says so.
            let expect_all = st.closed || i + 1 < last;
            let number = out.processes.len() + 1;
            out.processes
                .push(text_process(block, number, expect_all, w));
        }
    } else if st.not_detected {
        let mut missing = Vec::new();
        if !st.header {
            missing.push("[EmoCheck v...] header");
        }
        if st.scan_time.is_none() {
            missing.push("scan time");
        }
        if !st.result_heading {
            missing.push("result heading");
        } else if !st.clean_under_heading {
            missing.push("verdict right under the result heading");
        }
        if missing.is_empty() {
            out.status = ReportStatus::NotDetected;
        } else {
            w.push(format!("incomplete: missing {}", missing.join(", ")));
        }
    } else if st.header || st.scan_time.is_some() || st.result_heading {
        w.push(WARN_NO_VERDICT);
    } else {
        w.push("not an EmoCheck report");
    }

    if st.unknown_lines > 0 && out.status != ReportStatus::Unparseable {
        w.push(format!(
            "{} unrecognized line(s), first at line {}",
            st.unknown_lines, st.first_unknown
        ));
    }
    out
}

fn text_process(block: &Block<'_>, number: usize, expect_all: bool, w: &mut Warnings) -> Process {
    let required = |value: Option<&[u8]>, field: &str, w: &mut Warnings| match value {
        Some(bytes) => decode_field(bytes, &format!("process {number} {field}"), w),
        None => {
            if expect_all {
                w.note(format!("process {number}: no {field}"));
            }
            String::new()
        }
    };
    let name = required(block.name, "process_name", w);
    let image_path = required(block.image_path, "image_path", w);
    Process {
        name,
        pid: pid_field(block.pid, number, expect_all, w),
        image_path,
        registry_key: block
            .registry_key
            .map(|key| decode_field(key, &format!("process {number} registry_key"), w)),
    }
}

// ---------------------------------------------------------------------------
// JSON reports

/// Raw field bytes with the writer's backslash doubling already undone, so
/// both JSON readers feed the same decoding and validation.
#[derive(Debug, Default)]
struct JsonFields {
    scan_time: Option<Vec<u8>>,
    hostname: Option<Vec<u8>>,
    version: Option<Vec<u8>>,
    is_infected: Option<Vec<u8>>,
    processes: Vec<JsonProcess>,
    /// The top-level object was closed and every string value terminated.
    complete: bool,
    /// Something other than whitespace follows the top-level object: two
    /// reports glued together, or junk appended; neither is a clean report.
    trailing: bool,
    /// A top-level key appeared twice. serde_json keeps the last value and the
    /// scanner the first, so a later `"is_infected":"no"` must not be able to
    /// overturn an earlier `"yes"` unnoticed.
    duplicate_key: bool,
}

#[derive(Debug, Default)]
struct JsonProcess {
    name: Option<Vec<u8>>,
    pid: Option<Vec<u8>>,
    image_path: Option<Vec<u8>>,
    registry_key: Option<Vec<u8>>,
}

impl JsonProcess {
    fn slot(&mut self, key: &[u8]) -> Option<&mut Option<Vec<u8>>> {
        match key {
            b"process_name" => Some(&mut self.name),
            b"process_id" => Some(&mut self.pid),
            b"image_path" => Some(&mut self.image_path),
            b"registry_key" => Some(&mut self.registry_key),
            _ => None,
        }
    }
}

fn parse_json(body: &[u8], w: &mut Warnings) -> Outcome {
    let fields = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(value) => {
            // serde_json read `\x` in the raw fields as escapes, but the
            // writer never escapes them: the scanner reads them as written.
            let scanned = scan_json(body);
            let raw_backslash =
                |v: &Option<Vec<u8>>| v.as_deref().is_some_and(|b| b.contains(&b'\\'));
            if scanned.duplicate_key {
                scanned
            } else if raw_backslash(&scanned.hostname)
                || scanned.processes.iter().any(|p| raw_backslash(&p.name))
            {
                w.push(
                    "backslash in hostname or process_name read as written, not as a JSON escape",
                );
                scanned
            } else {
                from_value(&value)
            }
        }
        Err(_) => {
            w.push(WARN_INVALID_JSON);
            scan_json(body)
        }
    };
    json_outcome(fields, w)
}

fn from_value(value: &serde_json::Value) -> JsonFields {
    use serde_json::Value;
    fn text(v: Option<&Value>) -> Option<Vec<u8>> {
        match v? {
            Value::String(s) => Some(s.as_bytes().to_vec()),
            Value::Number(n) => Some(n.to_string().into_bytes()),
            Value::Bool(true) => Some(b"yes".to_vec()),
            Value::Bool(false) => Some(b"no".to_vec()),
            _ => None,
        }
    }
    let mut f = JsonFields {
        complete: true,
        ..JsonFields::default()
    };
    let Some(obj) = value.as_object() else {
        return f;
    };
    f.scan_time = text(obj.get("scan_time"));
    f.hostname = text(obj.get("hostname"));
    f.version = text(obj.get("emocheck_version"));
    f.is_infected = text(obj.get("is_infected"));
    if let Some(list) = obj.get("emotet_processes").and_then(Value::as_array) {
        f.processes = list
            .iter()
            .filter_map(Value::as_object)
            .map(|p| JsonProcess {
                name: text(p.get("process_name")),
                pid: text(p.get("process_id")),
                image_path: text(p.get("image_path")),
                registry_key: text(p.get("registry_key")),
            })
            .collect();
    }
    f
}

/// Undo the writer's only escaping: every `\` byte was doubled. Done on bytes
/// because a CP932 character's second byte may be that backslash.
fn undouble(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut iter = bytes.iter().copied().peekable();
    while let Some(b) = iter.next() {
        out.push(b);
        if b == b'\\' && iter.peek() == Some(&b'\\') {
            iter.next();
        }
    }
    out
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

/// A string value starting at `start` (just after its opening quote). It ends
/// at the first `"` followed by optional blanks and then `,`, a line end, `}`
/// or the end of the input; a value never spans lines. Returns the value, a
/// flag telling whether it was terminated, and where scanning resumes.
fn tolerant_value(b: &[u8], start: usize) -> (&[u8], bool, usize) {
    let mut j = start;
    loop {
        match b.get(j) {
            None => return (b.get(start..).unwrap_or(&[]), false, j),
            Some(b'\n') => {
                let value = b.get(start..j).unwrap_or(&[]);
                return (value.strip_suffix(b"\r").unwrap_or(value), false, j);
            }
            Some(b'"') => {
                let mut k = j + 1;
                while matches!(b.get(k), Some(b' ' | b'\t')) {
                    k += 1;
                }
                if matches!(b.get(k), None | Some(b',' | b'\r' | b'\n' | b'}')) {
                    return (b.get(start..j).unwrap_or(&[]), true, j + 1);
                }
            }
            Some(_) => {}
        }
        j += 1;
    }
}

/// Byte-level reader for the hand-written JSON: one linear pass that tracks
/// nesting only to know where process objects start and whether the document
/// was closed, and routes values by key name.
fn scan_json(b: &[u8]) -> JsonFields {
    let mut f = JsonFields::default();
    let mut i = 0;
    let mut depth = 0usize;
    let mut opened = false;
    let mut closed = false;
    let mut intact = true;
    let mut expect_array = false;
    let mut procs_depth: Option<usize> = None;

    while let Some(&c) = b.get(i) {
        if closed && !c.is_ascii_whitespace() {
            f.trailing = true;
            break;
        }
        match c {
            b'{' | b'[' => {
                depth += 1;
                opened = true;
                if c == b'[' && expect_array {
                    procs_depth = Some(depth);
                }
                if c == b'{' && procs_depth.is_some_and(|d| depth == d + 1) {
                    f.processes.push(JsonProcess::default());
                }
                expect_array = false;
                i += 1;
            }
            b'}' | b']' => {
                match depth.checked_sub(1) {
                    Some(d) => depth = d,
                    None => intact = false,
                }
                if procs_depth.is_some_and(|d| depth < d) {
                    procs_depth = None;
                }
                if depth == 0 && opened {
                    closed = true;
                }
                i += 1;
            }
            b'"' => {
                let key_start = i + 1;
                let key_end = b
                    .get(key_start..)
                    .and_then(|rest| rest.iter().position(|&x| x == b'"' || x == b'\n'))
                    .map(|p| key_start + p);
                let Some(key_end) = key_end else {
                    intact = false;
                    break;
                };
                if b.get(key_end) == Some(&b'\n') {
                    i = key_end;
                    continue;
                }
                let key = b.get(key_start..key_end).unwrap_or(&[]);
                let colon = skip_ws(b, key_end + 1);
                if b.get(colon) != Some(&b':') {
                    // A string that is not a key: skip it whole.
                    i = key_end + 1;
                    continue;
                }
                let v = skip_ws(b, colon + 1);
                expect_array = false;
                match b.get(v) {
                    Some(b'"') => {
                        let (value, terminated, next) = tolerant_value(b, v + 1);
                        intact &= terminated;
                        // A value cut by the end of the file is partial (a
                        // path or PID cut short names something else): drop
                        // it; the missing closing brace already says
                        // "truncated".
                        if terminated || next < b.len() {
                            store(&mut f, key, value);
                        }
                        i = next;
                    }
                    Some(b'[' | b'{') => {
                        expect_array = key == b"emotet_processes";
                        i = v;
                    }
                    Some(_) => {
                        let rest = b.get(v..).unwrap_or(&[]);
                        let len = rest
                            .iter()
                            .position(|&x| matches!(x, b',' | b'}' | b']' | b'\r' | b'\n'))
                            .unwrap_or(rest.len());
                        store(&mut f, key, trim_blanks(rest.get(..len).unwrap_or(&[])));
                        i = v + len;
                    }
                    None => {
                        intact = false;
                        i = v;
                    }
                }
            }
            _ => i += 1,
        }
    }
    f.complete = opened && closed && intact;
    f
}

fn store(f: &mut JsonFields, key: &[u8], value: &[u8]) {
    let top = match key {
        b"scan_time" => Some(&mut f.scan_time),
        b"hostname" => Some(&mut f.hostname),
        b"emocheck_version" => Some(&mut f.version),
        b"is_infected" => Some(&mut f.is_infected),
        _ => None,
    };
    if let Some(slot) = top {
        if slot.is_some() {
            f.duplicate_key = true;
        }
        // First value wins, except that a "yes" verdict is never overturned,
        // whichever order the duplicates come in.
        let yes = key == b"is_infected" && trim_blanks(value).eq_ignore_ascii_case(b"yes");
        if slot.is_none() || yes {
            *slot = Some(value.to_vec());
        }
        return;
    }
    let value = match key {
        b"image_path" | b"registry_key" => undouble(value),
        _ => value.to_vec(),
    };
    // A process field with no open process object, or one already set, means
    // the next process started without a visible `{`.
    let needs_new = match f.processes.last_mut() {
        Some(p) => p.slot(key).is_some_and(|s| s.is_some()),
        None => JsonProcess::default().slot(key).is_some(),
    };
    if needs_new {
        f.processes.push(JsonProcess::default());
    }
    if let Some(slot) = f.processes.last_mut().and_then(|p| p.slot(key)) {
        *slot = Some(value);
    }
}

fn json_outcome(f: JsonFields, w: &mut Warnings) -> Outcome {
    let mut out = Outcome::unparseable(Some("json"));
    out.hostname = f
        .hostname
        .as_deref()
        .map(|h| decode_field(h, "hostname", w))
        .filter(|h| !h.is_empty());
    out.scan_time = f.scan_time.as_deref().and_then(|t| scan_time_field(t, w));
    out.version = f.version.as_deref().and_then(|v| valid_version(v, w));
    let verdict = f.is_infected.as_deref().map(trim_blanks);
    let yes = verdict.is_some_and(|v| v.eq_ignore_ascii_case(b"yes"));
    let no = verdict.is_some_and(|v| v.eq_ignore_ascii_case(b"no"));

    let cut = if f.trailing {
        "incomplete: data after the JSON object's closing brace"
    } else if f.duplicate_key {
        "incomplete: duplicate keys, first values kept"
    } else {
        "truncated: JSON report ends before its closing brace"
    };
    let complete = f.complete && !f.trailing && !f.duplicate_key;

    let count = f.processes.len();
    for (i, p) in f.processes.iter().enumerate() {
        let number = i + 1;
        let expect_all = complete || number < count;
        let required = |value: &Option<Vec<u8>>, field: &str, w: &mut Warnings| match value {
            Some(bytes) => decode_field(bytes, &format!("process {number} {field}"), w),
            None => {
                if expect_all {
                    w.note(format!("process {number}: no {field}"));
                }
                String::new()
            }
        };
        let name = required(&p.name, "process_name", w);
        let image_path = required(&p.image_path, "image_path", w);
        out.processes.push(Process {
            name,
            pid: pid_field(p.pid.as_deref(), number, expect_all, w),
            image_path,
            registry_key: p
                .registry_key
                .as_deref()
                .map(|k| decode_field(k, &format!("process {number} registry_key"), w)),
        });
    }

    if yes || count > 0 {
        out.status = ReportStatus::Detected;
        if no {
            w.push("conflicting verdicts: is_infected is \"no\" but processes are listed");
        } else if !yes {
            w.push("no is_infected verdict, but processes are listed");
        }
        if !complete {
            w.push(cut);
        } else if count == 0 {
            w.push("is_infected is \"yes\" but no process listed");
        }
        if f.scan_time.is_none() {
            w.push("no scan time");
        }
    } else if no {
        if !complete {
            w.push(cut);
        } else if f.scan_time.is_none() {
            w.push("incomplete: missing scan time");
        } else {
            out.status = ReportStatus::NotDetected;
        }
    } else if !f.complete {
        w.push(WARN_NO_VERDICT);
    } else if f.trailing || f.duplicate_key {
        w.push(cut);
    } else if verdict.is_some() {
        w.push("is_infected is neither \"yes\" nor \"no\"");
    } else {
        w.push("no is_infected verdict");
    }
    out
}

/// The registry's entry: EmoCheck's text and JSON reports in the run directory.
pub const ENTRY: super::Entry = super::Entry {
    name: "emocheck",
    checker: "EmoCheck",
    reads: "EmoCheck text/JSON reports (all its languages and versions)",
    attributes: &[attr::PID, attr::IMAGE, attr::RUN_KEY],
    build: |_| Box::new(EmoCheckParser),
};

/// EmoCheck: the newest report written during this run decides.
pub struct EmoCheckParser;

impl ResultParser for EmoCheckParser {
    fn name(&self) -> &'static str {
        "emocheck"
    }

    fn wants_files(&self) -> bool {
        true
    }

    fn recency(&self, file_name: &str, mtime: Option<u64>) -> (u8, String) {
        match name_stamp(file_name) {
            Some((_, stamp)) => (1, stamp),
            None => (0, format!("{:020}", mtime.unwrap_or(0))),
        }
    }

    fn parse_file(&self, file_name: &str, bytes: &[u8]) -> ParsedReport {
        parse(file_name, bytes)
    }

    fn verdict(
        &self,
        exec: &ExecOutcome,
        reports: &[FetchedReport],
        problems: &[String],
    ) -> Verdict {
        let detected = first_detected(reports);
        if let Some((i, r)) = detected {
            let names: Vec<String> = r
                .parsed
                .processes()
                .iter()
                .map(|p| match p.pid {
                    Some(pid) => format!("{} (PID {pid})", sanitize::display(&p.name, 80)),
                    None => sanitize::display(&p.name, 80),
                })
                .collect();
            let mut reason = if names.is_empty() {
                "Emotet detected (no process details in report)".to_string()
            } else {
                format!("Emotet detected: {}", names.join(", "))
            };
            if exec.timed_out || exec.crashed() {
                reason.push_str(&format!(
                    "; checker did not end cleanly ({})",
                    end_text(exec)
                ));
            }
            return detected_verdict(i, reason, r);
        }
        if exec.timed_out {
            return timed_out_verdict();
        }
        match reports.first() {
            Some(r) if r.parsed.status == ReportStatus::NotDetected => {
                let mut reason = "Emotet was not detected".to_string();
                if exec.crashed() {
                    reason.push_str(&format!(
                        " (checker then ended abnormally: {})",
                        exit_text(exec)
                    ));
                }
                Verdict {
                    class: HostClass::NotDetected,
                    reason,
                    primary: Some(0),
                }
            }
            Some(r) => unusable_report_verdict(r, exec),
            None if !problems.is_empty() => no_usable_report_verdict(problems),
            None if exec.crashed() => Verdict {
                class: HostClass::CheckerFailed,
                reason: format!("checker crashed ({}) and left no report", exit_text(exec)),
                primary: None,
            },
            None => {
                let mut reason = format!("No EmoCheck result found ({})", exit_text(exec));
                if let Some(line) = first_line(&exec.stdout) {
                    reason.push_str(&format!("; stdout: {line}"));
                }
                Verdict {
                    class: HostClass::NoResult,
                    reason,
                    primary: None,
                }
            }
        }
    }
}

fn end_text(exec: &ExecOutcome) -> String {
    if exec.timed_out {
        "timed out and killed".to_string()
    } else {
        exit_text(exec)
    }
}

#[cfg(test)]
mod verdict_tests {
    use super::*;
    use crate::model::ParsedReport;

    fn exec(code: i64) -> ExecOutcome {
        ExecOutcome {
            exit_code: Some(code),
            ..Default::default()
        }
    }

    #[test]
    fn emocheck_without_report_is_no_result_or_failure() {
        let p = EmoCheckParser;
        assert_eq!(p.verdict(&exec(0), &[], &[]).class, HostClass::NoResult);
        assert_eq!(
            p.verdict(&exec(139), &[], &[]).class,
            HostClass::CheckerFailed
        );
        let v = p.verdict(&exec(0), &[], &["x is too big".into()]);
        assert_eq!(v.class, HostClass::CheckerFailed);
        assert!(v.reason.contains("too big"));
    }

    #[test]
    fn unparseable_report_is_never_clean() {
        let p = EmoCheckParser;
        let r = FetchedReport {
            name: "a_emocheck.txt".into(),
            parsed: ParsedReport::unparseable("truncated: no verdict"),
        };
        let v = p.verdict(&exec(0), &[r], &[]);
        assert_eq!(v.class, HostClass::CheckerFailed);
        assert!(v.reason.contains("truncated"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELIM: &str = "____________________________________________________";
    const FILE: &str = "PC-1_20261120093011_emocheck.txt";
    const JFILE: &str = "PC-1_20261120093011_emocheck.json";
    const PATH: &[u8] = br"C:\Users\tanaka\AppData\Local\wfsrvhost\wfsrvhost.exe";
    const KEY: &[u8] =
        br"HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Run\wfsrvhost";
    const PATH_S: &str = r"C:\Users\tanaka\AppData\Local\wfsrvhost\wfsrvhost.exe";
    const KEY_S: &str =
        r"HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Run\wfsrvhost";
    /// `C:\Users\ソフト\evil.exe` in CP932: `ソ` is 0x83 0x5C.
    const SJIS_PATH: &[u8] = b"C:\\Users\\\x83\x5C\x83\x74\x83\x67\\evil.exe";
    const SJIS_PATH_S: &str = "C:\\Users\\ソフト\\evil.exe";

    struct Labels {
        time: &'static str,
        result: &'static str,
        detected: &'static str,
        not_detected: &'static str,
        block: &'static str,
        name: &'static str,
        pid: &'static str,
        path: &'static str,
        key: &'static str,
        advice: &'static str,
    }

    const EN: Labels = Labels {
        time: "Scan time: ",
        result: "[Result] ",
        detected: "Detected Emotet process.",
        not_detected: "Emotet was not detected.",
        block: "[Emotet Process] ",
        name: "     Process Name  : ",
        pid: "     Process ID    : ",
        path: "     Image Path    : ",
        key: "     Registry Key  : ",
        advice: "Please remove or isolate the suspicious execution file.",
    };
    const JA: Labels = Labels {
        time: "プログラム実行時刻: ",
        result: "[結果]",
        detected: "Emotetを検知しました。",
        not_detected: "検知しませんでした。",
        block: "[詳細]",
        name: "     プロセス名    : ",
        pid: "     プロセスID    : ",
        path: "     イメージパス  : ",
        key: "     レジストリキー: ",
        advice: "イメージパスの実行ファイルを隔離/削除してください。",
    };
    const FR: Labels = Labels {
        time: "Temps d'éxécution: ",
        result: "[Résultat] ",
        detected: "Emotet détecté.",
        not_detected: "Emotet n'a pas été détecté.",
        block: "[Processus Emotet] ",
        name: "     Nom du processus: ",
        pid: "     PID             : ",
        path: "     Emplacement     : ",
        key: "     Clé de registre : ",
        advice: "Veuillez isoler ou supprimer le fichier suspect.",
    };

    #[derive(Clone, Copy)]
    struct P<'a> {
        name: &'a [u8],
        pid: &'a [u8],
        path: &'a [u8],
        key: Option<&'a [u8]>,
    }

    fn p<'a>(name: &'a [u8], pid: &'a [u8], path: &'a [u8], key: Option<&'a [u8]>) -> P<'a> {
        P {
            name,
            pid,
            path,
            key,
        }
    }

    fn wfs() -> P<'static> {
        p(b"wfsrvhost.exe", b"4312", PATH, Some(KEY))
    }

    fn push_line(out: &mut Vec<u8>, eol: &str, parts: &[&[u8]]) {
        for part in parts {
            out.extend_from_slice(part);
        }
        out.extend_from_slice(eol.as_bytes());
    }

    /// A text report laid out the way EmoCheck writes it.
    fn text(l: &Labels, version: &str, detected: bool, procs: &[P], eol: &str) -> Vec<u8> {
        let mut out = Vec::new();
        push_line(
            &mut out,
            eol,
            &[format!("[EmoCheck v{version}]").as_bytes()],
        );
        push_line(&mut out, eol, &[l.time.as_bytes(), b"2026-11-20 10:15:42"]);
        push_line(&mut out, eol, &[DELIM.as_bytes()]);
        push_line(&mut out, eol, &[]);
        push_line(&mut out, eol, &[l.result.as_bytes()]);
        if !detected {
            push_line(&mut out, eol, &[l.not_detected.as_bytes()]);
            return out;
        }
        push_line(&mut out, eol, &[l.detected.as_bytes()]);
        for pr in procs {
            push_line(&mut out, eol, &[]);
            push_line(&mut out, eol, &[l.block.as_bytes()]);
            push_line(&mut out, eol, &[l.name.as_bytes(), pr.name]);
            push_line(&mut out, eol, &[l.pid.as_bytes(), pr.pid]);
            push_line(&mut out, eol, &[l.path.as_bytes(), pr.path]);
            if let Some(key) = pr.key {
                push_line(&mut out, eol, &[l.key.as_bytes(), key]);
            }
        }
        push_line(&mut out, eol, &[DELIM.as_bytes()]);
        push_line(&mut out, eol, &[]);
        push_line(&mut out, eol, &[l.advice.as_bytes()]);
        out
    }

    fn double(b: &[u8]) -> Vec<u8> {
        b.iter()
            .flat_map(|&x| if x == b'\\' { vec![x, x] } else { vec![x] })
            .collect()
    }

    /// A JSON report built the way EmoCheck concatenates it: backslashes doubled
    /// in paths and keys only, host and process names raw.
    fn json(host: &[u8], infected: bool, procs: &[P]) -> Vec<u8> {
        let mut o = Vec::new();
        o.extend_from_slice(b"{\r\n  \"scan_time\":\"2026-11-20 10:20:05\",\r\n  \"hostname\":\"");
        o.extend_from_slice(host);
        o.extend_from_slice(b"\",\r\n  \"emocheck_version\":\"2.4.0\",\r\n  \"is_infected\":\"");
        o.extend_from_slice(if infected { b"yes\"" } else { b"no\"" });
        if infected {
            o.extend_from_slice(b",\r\n  \"emotet_processes\":[\r\n");
            for (i, pr) in procs.iter().enumerate() {
                o.extend_from_slice(b"    {\r\n      \"process_name\":\"");
                o.extend_from_slice(pr.name);
                o.extend_from_slice(b"\",\r\n      \"process_id\":\"");
                o.extend_from_slice(pr.pid);
                o.extend_from_slice(b"\",\r\n      \"image_path\":\"");
                o.extend_from_slice(&double(pr.path));
                o.push(b'"');
                if let Some(key) = pr.key {
                    o.extend_from_slice(b",\r\n      \"registry_key\":\"");
                    o.extend_from_slice(&double(key));
                    o.push(b'"');
                }
                o.extend_from_slice(b"\r\n    }");
                if i + 1 < procs.len() {
                    o.push(b',');
                }
                o.extend_from_slice(b"\r\n");
            }
            o.extend_from_slice(b"  ]");
        }
        o.extend_from_slice(b"\r\n}\r\n");
        o
    }

    fn process(name: &str, pid: Option<u32>, path: &str, key: Option<&str>) -> Process {
        Process {
            name: name.to_string(),
            pid,
            image_path: path.to_string(),
            registry_key: key.map(str::to_string),
        }
    }

    fn has_warning(r: &ParsedReport, prefix: &str) -> bool {
        r.warnings.iter().any(|w| w.starts_with(prefix))
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    fn trim_end(b: &[u8]) -> &[u8] {
        let end = b
            .iter()
            .rposition(|c| !c.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        &b[..end]
    }

    // ----- languages ---------------------------------------------------------

    fn check_detected(l: &Labels, code: &str) {
        let r = parse(FILE, &text(l, "2.4.0", true, &[wfs()], "\r\n"));
        assert_eq!(r.status, ReportStatus::Detected, "{:?}", r.warnings);
        assert_eq!(r.format.as_deref(), Some(code));
        assert_eq!(r.hostname.as_deref(), Some("PC-1"));
        assert_eq!(r.scan_time.as_deref(), Some("2026-11-20 10:15:42"));
        assert_eq!(r.checker_version.as_deref(), Some("2.4.0"));
        assert_eq!(
            r.processes(),
            vec![process("wfsrvhost.exe", Some(4312), PATH_S, Some(KEY_S))]
        );
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }

    fn check_clean(l: &Labels, code: &str) {
        let r = parse(FILE, &text(l, "2.4.0", false, &[], "\r\n"));
        assert_eq!(r.status, ReportStatus::NotDetected, "{:?}", r.warnings);
        assert_eq!(r.format.as_deref(), Some(code));
        assert_eq!(r.scan_time.as_deref(), Some("2026-11-20 10:15:42"));
        assert!(r.processes().is_empty());
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }

    #[test]
    fn english_detected_and_clean() {
        check_detected(&EN, "en");
        check_clean(&EN, "en");
    }

    #[test]
    fn japanese_detected_and_clean() {
        check_detected(&JA, "ja");
        check_clean(&JA, "ja");
    }

    #[test]
    fn french_detected_and_clean() {
        check_detected(&FR, "fr");
        check_clean(&FR, "fr");
    }

    #[test]
    fn lf_reads_like_crlf() {
        for l in [&EN, &JA, &FR] {
            for detected in [true, false] {
                let crlf = parse(FILE, &text(l, "2.4.0", detected, &[wfs()], "\r\n"));
                let lf = parse(FILE, &text(l, "2.4.0", detected, &[wfs()], "\n"));
                assert_eq!(crlf, lf);
            }
        }
    }

    #[test]
    fn headings_without_trailing_spaces() {
        let full = String::from_utf8(text(&EN, "2.4.0", true, &[wfs()], "\r\n")).unwrap();
        let stripped = full.replace("] \r\n", "]\r\n");
        assert_ne!(full, stripped);
        let r = parse(FILE, stripped.as_bytes());
        assert_eq!(r.status, ReportStatus::Detected);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        let clean = String::from_utf8(text(&FR, "2.4.0", false, &[], "\n")).unwrap();
        let r = parse(FILE, clean.replace("] \n", "]\n").as_bytes());
        assert_eq!(r.status, ReportStatus::NotDetected);
    }

    #[test]
    fn old_lowercase_header_and_v1_without_registry_key() {
        let full = text(
            &EN,
            "1.0.0",
            true,
            &[p(b"a.exe", b"12", PATH, None)],
            "\r\n",
        );
        let full = String::from_utf8(full)
            .unwrap()
            .replace("[EmoCheck v", "[Emocheck v");
        let r = parse("20200203040506_emocheck.txt", full.as_bytes());
        assert_eq!(r.status, ReportStatus::Detected);
        assert_eq!(r.checker_version.as_deref(), Some("1.0.0"));
        assert_eq!(r.hostname, None);
        assert_eq!(
            r.processes(),
            vec![process("a.exe", Some(12), PATH_S, None)]
        );
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }

    #[test]
    fn several_process_blocks() {
        let procs = [
            p(b"one.exe", b"1", b"C:\\one.exe", Some(b"HKCU\\Run\\one")),
            p(b"two.exe", b"22", b"C:\\two.exe", Some(b"HKCU\\Run\\two")),
            p(
                b"three.exe",
                b"333",
                b"C:\\three.exe",
                Some(b"HKCU\\Run\\three"),
            ),
        ];
        for l in [&EN, &JA, &FR] {
            let r = parse(FILE, &text(l, "2.4.0", true, &procs, "\r\n"));
            assert_eq!(r.status, ReportStatus::Detected);
            assert_eq!(
                r.processes(),
                vec![
                    process("one.exe", Some(1), "C:\\one.exe", Some("HKCU\\Run\\one")),
                    process("two.exe", Some(22), "C:\\two.exe", Some("HKCU\\Run\\two")),
                    process(
                        "three.exe",
                        Some(333),
                        "C:\\three.exe",
                        Some("HKCU\\Run\\three")
                    ),
                ]
            );
            assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        }
        // Blocks written back to back, without blank lines or headings between.
        let full = String::from_utf8(text(&EN, "2.4.0", true, &procs, "\n")).unwrap();
        let squeezed = full.replace("\n\n[Emotet Process] \n", "\n");
        let r = parse(FILE, squeezed.as_bytes());
        assert_eq!(r.status, ReportStatus::Detected);
        assert_eq!(r.processes().len(), 3);
        assert_eq!(r.processes()[2].name, "three.exe");
    }

    // ----- encodings ---------------------------------------------------------

    #[test]
    fn cp932_path_in_japanese_text_report() {
        let pr = p(
            b"\x83\x5C.exe",
            b"9120",
            SJIS_PATH,
            Some(b"HKCU\\Run\\\x95\x5C"),
        );
        let r = parse(FILE, &text(&JA, "2.3.2", true, &[pr], "\r\n"));
        assert_eq!(r.status, ReportStatus::Detected);
        assert_eq!(r.format.as_deref(), Some("ja"));
        assert_eq!(
            r.processes(),
            vec![process(
                "ソ.exe",
                Some(9120),
                SJIS_PATH_S,
                Some("HKCU\\Run\\表")
            )]
        );
        assert!(has_warning(
            &r,
            "process 1 image_path: not UTF-8, decoded as CP932"
        ));
        assert!(has_warning(&r, "process 1 process_name: not UTF-8"));
        assert!(has_warning(&r, "process 1 registry_key: not UTF-8"));
    }

    #[test]
    fn western_code_page_falls_back_to_windows_1252() {
        // 0xE9 then '.' is not valid CP932: the OEM page was a Western one.
        let pr = p(b"caf\xe9.exe", b"1", b"C:\\caf\xe9.exe", None);
        let r = parse(FILE, &text(&EN, "2.4.0", true, &[pr], "\r\n"));
        assert_eq!(r.status, ReportStatus::Detected);
        assert_eq!(r.processes()[0].name, "café.exe");
        assert_eq!(r.processes()[0].image_path, "C:\\café.exe");
        assert!(has_warning(
            &r,
            "process 1 process_name: neither UTF-8 nor CP932"
        ));
    }

    #[test]
    fn control_characters_are_kept() {
        let pr = p(b"\x1b[31mred\x07.exe ", b"1", b"C:\\x\ty.exe", None);
        let r = parse(FILE, &text(&EN, "2.4.0", true, &[pr], "\r\n"));
        assert_eq!(r.processes()[0].name, "\u{1b}[31mred\u{7}.exe ");
        assert_eq!(r.processes()[0].image_path, "C:\\x\ty.exe");
    }

    #[test]
    fn utf8_bom_is_tolerated() {
        let mut b = b"\xEF\xBB\xBF".to_vec();
        b.extend(text(&EN, "2.4.0", false, &[], "\r\n"));
        assert_eq!(parse(FILE, &b).status, ReportStatus::NotDetected);
        let mut b = b"\xEF\xBB\xBF".to_vec();
        b.extend(json(b"PC-1", false, &[]));
        assert_eq!(parse(JFILE, &b).status, ReportStatus::NotDetected);
    }

    // ----- text oddities ------------------------------------------------------

    #[test]
    fn text_pid_not_a_number() {
        let r = parse(
            FILE,
            &text(&EN, "2.4.0", true, &[p(b"a.exe", b"12x", PATH, None)], "\n"),
        );
        assert_eq!(r.status, ReportStatus::Detected);
        assert_eq!(r.processes()[0].pid, None);
        assert!(has_warning(&r, "process 1: process ID is not a number"));
    }

    #[test]
    fn invalid_scan_time_is_dropped_with_warning() {
        let full = String::from_utf8(text(&EN, "2.4.0", false, &[], "\n")).unwrap();
        let r = parse(
            FILE,
            full.replace("2026-11-20 10:15:42", "yesterday").as_bytes(),
        );
        assert_eq!(r.status, ReportStatus::NotDetected);
        assert_eq!(r.scan_time, None);
        assert!(has_warning(&r, "scan time is not a date-time"));
        let r = parse(
            FILE,
            full.replace("2026-11-20 10:15:42", "2026-13-20 10:15:42")
                .as_bytes(),
        );
        assert_eq!(r.scan_time, None);
    }

    #[test]
    fn clean_verdict_needs_a_complete_report() {
        let full = String::from_utf8(text(&EN, "2.4.0", false, &[], "\r\n")).unwrap();
        for (what, broken) in [
            ("header", full.replacen("[EmoCheck v2.4.0]", "", 1)),
            (
                "header",
                full.replacen("[EmoCheck v2.4.0]", "[Scanner v2.4.0]", 1),
            ),
            (
                "scan time",
                full.replacen("Scan time: 2026-11-20 10:15:42\r\n", "", 1),
            ),
            ("result heading", full.replacen("[Result] \r\n", "", 1)),
            (
                "verdict right under",
                full.replacen("[Result] \r\n", "[Result] \r\nnoise\r\n", 1),
            ),
        ] {
            let r = parse(FILE, broken.as_bytes());
            assert_eq!(
                r.status,
                ReportStatus::Unparseable,
                "{what}: {:?}",
                r.warnings
            );
            assert!(
                r.warnings
                    .iter()
                    .any(|w| w.starts_with("incomplete:") && w.contains(what)),
                "{what}: {:?}",
                r.warnings
            );
        }
    }

    #[test]
    fn clean_verdict_with_process_blocks_is_detected() {
        let mut b = text(&EN, "2.4.0", false, &[], "\r\n");
        b.extend_from_slice(b"\r\n[Emotet Process] \r\n     Process Name  : x.exe\r\n");
        let r = parse(FILE, &b);
        assert_eq!(r.status, ReportStatus::Detected);
        assert!(has_warning(&r, "conflicting verdicts"));
        assert_eq!(r.processes()[0].name, "x.exe");
    }

    #[test]
    fn both_verdicts_is_detected() {
        let full = String::from_utf8(text(&EN, "2.4.0", true, &[wfs()], "\n")).unwrap();
        let b = full.replace(
            "Detected Emotet process.\n",
            "Emotet was not detected.\nDetected Emotet process.\n",
        );
        let r = parse(FILE, b.as_bytes());
        assert_eq!(r.status, ReportStatus::Detected);
        assert!(has_warning(&r, "conflicting verdicts"));
    }

    #[test]
    fn detected_without_blocks_warns() {
        let full = String::from_utf8(text(&EN, "2.4.0", true, &[], "\n")).unwrap();
        let r = parse(FILE, full.as_bytes());
        assert_eq!(r.status, ReportStatus::Detected);
        assert!(has_warning(&r, "detected verdict but no process listed"));
    }

    #[test]
    fn advice_text_after_the_list_is_ignored() {
        let mut b = text(&EN, "2.4.0", true, &[wfs()], "\r\n");
        b.extend_from_slice(b"More advice\r\nin several lines\r\n");
        let r = parse(FILE, &b);
        assert_eq!(r.status, ReportStatus::Detected);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }

    #[test]
    fn hostname_comes_from_the_file_name_for_text() {
        let b = text(&EN, "2.4.0", false, &[], "\r\n");
        assert_eq!(
            parse("PC-9_20261120093011_EMOCHECK.TXT", &b)
                .hostname
                .as_deref(),
            Some("PC-9")
        );
        assert_eq!(
            parse(r"C:\out\PC-9_20261120093011_emocheck.txt", &b)
                .hostname
                .as_deref(),
            Some("PC-9")
        );
        assert_eq!(parse("20261120093011_emocheck.txt", &b).hostname, None);
        assert_eq!(parse("report.txt", &b).hostname, None);
        assert_eq!(parse("report.txt", &b).status, ReportStatus::NotDetected);
    }

    // ----- JSON -----------------------------------------------------------------

    #[test]
    fn json_detected_and_clean() {
        let r = parse(JFILE, &json(b"PC-SALES-021", true, &[wfs()]));
        assert_eq!(r.status, ReportStatus::Detected);
        assert_eq!(r.format.as_deref(), Some("json"));
        assert_eq!(r.hostname.as_deref(), Some("PC-SALES-021"));
        assert_eq!(r.scan_time.as_deref(), Some("2026-11-20 10:20:05"));
        assert_eq!(r.checker_version.as_deref(), Some("2.4.0"));
        assert_eq!(
            r.processes(),
            vec![process("wfsrvhost.exe", Some(4312), PATH_S, Some(KEY_S))]
        );
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);

        let r = parse(JFILE, &json(b"PC-SALES-022", false, &[]));
        assert_eq!(r.status, ReportStatus::NotDetected);
        assert_eq!(r.hostname.as_deref(), Some("PC-SALES-022"));
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }

    #[test]
    fn json_several_processes_v1_without_key() {
        let procs = [
            p(b"a.exe", b"1", b"C:\\a.exe", None),
            p(b"b.exe", b"2", b"C:\\b.exe", None),
        ];
        let r = parse(JFILE, &json(b"PC-1", true, &procs));
        assert_eq!(
            r.processes(),
            vec![
                process("a.exe", Some(1), "C:\\a.exe", None),
                process("b.exe", Some(2), "C:\\b.exe", None)
            ]
        );
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }

    #[test]
    fn json_cp932_with_doubled_5c_trail_byte() {
        let pr = p(
            b"\x83\x5C.exe",
            b"716",
            SJIS_PATH,
            Some(b"HKCU\\Run\\\x94\x5C"),
        );
        let b = json(b"PC-1", true, &[pr]);
        // The writer doubled the trail byte of ソ: 0x83 0x5C 0x5C.
        assert!(contains(&b, b"\\\\\x83\x5C\x5C\x83\x74"));
        let r = parse(JFILE, &b);
        assert_eq!(r.status, ReportStatus::Detected);
        assert_eq!(
            r.processes(),
            vec![process(
                "ソ.exe",
                Some(716),
                SJIS_PATH_S,
                Some("HKCU\\Run\\能")
            )]
        );
        assert!(has_warning(&r, WARN_INVALID_JSON));
        assert!(has_warning(
            &r,
            "process 1 image_path: not UTF-8, decoded as CP932"
        ));
    }

    #[test]
    fn json_raw_quote_in_process_name_and_backslash_in_hostname() {
        let r = parse(
            JFILE,
            &json(
                b"PC\\1",
                true,
                &[p(b"evil\"name.exe", b"716", PATH, Some(KEY))],
            ),
        );
        assert_eq!(r.status, ReportStatus::Detected);
        assert_eq!(r.hostname.as_deref(), Some("PC\\1"));
        assert_eq!(
            r.processes(),
            vec![process("evil\"name.exe", Some(716), PATH_S, Some(KEY_S))]
        );
        assert!(has_warning(&r, WARN_INVALID_JSON));

        // A raw backslash just before the closing quote.
        let r = parse(JFILE, &json(b"PC\\", false, &[]));
        assert_eq!(r.status, ReportStatus::NotDetected);
        assert_eq!(r.hostname.as_deref(), Some("PC\\"));
    }

    #[test]
    fn json_raw_backslash_that_happens_to_be_valid_json() {
        // `PC\\n1` parses as JSON, but the writer never escapes host names.
        let r = parse(JFILE, &json(b"PC\\\\n1", false, &[]));
        assert_eq!(r.status, ReportStatus::NotDetected);
        assert_eq!(r.hostname.as_deref(), Some("PC\\\\n1"));
        assert!(has_warning(&r, "backslash in hostname or process_name"));
    }

    #[test]
    fn json_pid_forms() {
        let r = parse(
            JFILE,
            &json(b"PC-1", true, &[p(b"a.exe", b"abc", PATH, None)]),
        );
        assert_eq!(r.status, ReportStatus::Detected);
        assert_eq!(r.processes()[0].pid, None);
        assert!(has_warning(&r, "process 1: process ID is not a number"));
        let b = String::from_utf8(json(b"PC-1", true, &[p(b"a.exe", b"77", PATH, None)]))
            .unwrap()
            .replace("\"process_id\":\"77\"", "\"process_id\":77");
        let r = parse(JFILE, b.as_bytes());
        assert_eq!(r.processes()[0].pid, Some(77));
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }

    #[test]
    fn json_yes_without_processes() {
        let b = b"{\r\n  \"scan_time\":\"2026-11-20 10:20:05\",\r\n  \"hostname\":\"PC-1\",\r\n  \"is_infected\":\"yes\"\r\n}\r\n";
        let r = parse(JFILE, b);
        assert_eq!(r.status, ReportStatus::Detected);
        assert!(r.processes().is_empty());
        assert!(has_warning(
            &r,
            "is_infected is \"yes\" but no process listed"
        ));
    }

    #[test]
    fn json_no_with_processes_is_detected() {
        let b = String::from_utf8(json(b"PC-1", true, &[wfs()]))
            .unwrap()
            .replace("\"yes\"", "\"no\"");
        let r = parse(JFILE, b.as_bytes());
        assert_eq!(r.status, ReportStatus::Detected);
        assert!(has_warning(&r, "conflicting verdicts"));
    }

    #[test]
    fn json_missing_hostname_uses_file_name() {
        let b = b"{\"scan_time\":\"2026-11-20 10:20:05\",\"is_infected\":\"no\"}";
        let r = parse(JFILE, b);
        assert_eq!(r.status, ReportStatus::NotDetected);
        assert_eq!(r.hostname.as_deref(), Some("PC-1"));
    }

    #[test]
    fn json_without_scan_time_or_verdict_is_not_clean() {
        let r = parse(JFILE, b"{\"hostname\":\"PC-1\",\"is_infected\":\"no\"}");
        assert_eq!(r.status, ReportStatus::Unparseable);
        assert!(has_warning(&r, "incomplete: missing scan time"));
        let r = parse(
            JFILE,
            b"{\"scan_time\":\"2026-11-20 10:20:05\",\"is_infected\":\"maybe\"}",
        );
        assert_eq!(r.status, ReportStatus::Unparseable);
        let r = parse(JFILE, b"{}");
        assert_eq!(r.status, ReportStatus::Unparseable);
        for tail in [&b" {"[..], b"x", b"{\"is_infected\":\"no\"}"] {
            let mut b = b"{\"scan_time\":\"2026-11-20 10:20:05\",\"is_infected\":\"no\"}".to_vec();
            b.extend_from_slice(tail);
            let r = parse(JFILE, &b);
            assert_eq!(r.status, ReportStatus::Unparseable);
            assert!(
                has_warning(&r, "incomplete: data after"),
                "{:?}",
                r.warnings
            );
        }
    }

    #[test]
    fn json_duplicate_verdict_never_reads_clean() {
        let head = "{\"scan_time\":\"2026-11-20 10:20:05\",";
        for body in [
            "\"is_infected\":\"yes\",\"is_infected\":\"no\"}",
            "\"is_infected\":\"no\",\"is_infected\":\"yes\"}",
        ] {
            let r = parse(JFILE, format!("{head}{body}").as_bytes());
            assert_eq!(r.status, ReportStatus::Detected, "{body}");
            assert!(
                has_warning(&r, "incomplete: duplicate keys"),
                "{:?}",
                r.warnings
            );
        }
        let r = parse(
            JFILE,
            format!("{head}\"is_infected\":\"no\",\"is_infected\":\"no\"}}").as_bytes(),
        );
        assert_eq!(r.status, ReportStatus::Unparseable);
    }

    // ----- truncation -------------------------------------------------------------

    /// Every prefix of a detected text report: Unparseable until the verdict is
    /// whole, then Detected, with a truncation warning until the closing
    /// delimiter is whole.
    fn truncations_of_detected_text(full: &[u8], verdict: &str) {
        let header_end = full.iter().position(|&b| b == b']').unwrap() + 1;
        let last_delim = full
            .windows(DELIM.len())
            .rposition(|w| w == DELIM.as_bytes())
            .unwrap();
        for cut in 0..=full.len() {
            let prefix = &full[..cut];
            let r = parse(FILE, prefix);
            assert_ne!(r.status, ReportStatus::NotDetected, "cut {cut}");
            if contains(prefix, verdict.as_bytes()) {
                assert_eq!(r.status, ReportStatus::Detected, "cut {cut}");
                if cut < last_delim + DELIM.len() {
                    assert!(has_warning(&r, "truncated"), "cut {cut}: {:?}", r.warnings);
                } else {
                    assert!(!has_warning(&r, "truncated"), "cut {cut}: {:?}", r.warnings);
                }
            } else {
                assert_eq!(r.status, ReportStatus::Unparseable, "cut {cut}");
                if cut >= header_end {
                    assert!(
                        r.warnings.iter().any(|w| w == WARN_NO_VERDICT),
                        "cut {cut}: {:?}",
                        r.warnings
                    );
                }
            }
        }
    }

    /// Every prefix of a clean report: NotDetected only when nothing but
    /// trailing whitespace is missing.
    fn truncations_of_clean(full: &[u8], name: &str) {
        for cut in 0..=full.len() {
            let prefix = &full[..cut];
            let r = parse(name, prefix);
            if trim_end(prefix) == trim_end(full) {
                assert_eq!(
                    r.status,
                    ReportStatus::NotDetected,
                    "cut {cut}: {:?}",
                    r.warnings
                );
            } else {
                assert_eq!(
                    r.status,
                    ReportStatus::Unparseable,
                    "cut {cut}: {:?}",
                    r.warnings
                );
                assert!(!r.warnings.is_empty(), "cut {cut}");
            }
        }
    }

    #[test]
    fn truncated_text_reports_are_never_clean() {
        let two = [
            wfs(),
            p(b"b.exe", b"2", b"C:\\b.exe", Some(b"HKCU\\Run\\b")),
        ];
        for l in [&EN, &JA, &FR] {
            for eol in ["\r\n", "\n"] {
                truncations_of_detected_text(&text(l, "2.4.0", true, &two, eol), l.detected);
                truncations_of_detected_text(
                    &text(l, "1.0.0", true, &[p(b"a.exe", b"1", PATH, None)], eol),
                    l.detected,
                );
                truncations_of_clean(&text(l, "2.4.0", false, &[], eol), FILE);
            }
        }
    }

    #[test]
    fn truncated_json_reports_are_never_clean() {
        let full = json(
            b"PC\\1",
            true,
            &[wfs(), p(b"evil\"x.exe", b"2", SJIS_PATH, None)],
        );
        for cut in 0..=full.len() {
            let prefix = &full[..cut];
            let r = parse(JFILE, prefix);
            assert_ne!(r.status, ReportStatus::NotDetected, "cut {cut}");
            // A verdict cut before its closing quote is not read.
            if contains(prefix, b"\"is_infected\":\"yes\"") {
                assert_eq!(r.status, ReportStatus::Detected, "cut {cut}");
                if trim_end(prefix) != trim_end(&full) {
                    assert!(has_warning(&r, "truncated"), "cut {cut}: {:?}", r.warnings);
                }
            } else {
                assert_eq!(r.status, ReportStatus::Unparseable, "cut {cut}");
            }
        }
        truncations_of_clean(&json(b"PC-1", false, &[]), JFILE);
        truncations_of_clean(&json(b"PC\\1", false, &[]), JFILE);
    }

    #[test]
    fn cut_inside_a_block_keeps_what_was_read() {
        let full = text(&EN, "2.4.0", true, &[wfs()], "\r\n");
        let at = full.windows(4).position(|w| w == b"4312").unwrap() + 2;
        let r = parse(FILE, &full[..at]);
        assert_eq!(r.status, ReportStatus::Detected);
        assert_eq!(r.processes()[0].name, "wfsrvhost.exe");
        // "43" is what was left of "4312": a cut value is dropped, not guessed.
        assert_eq!(r.processes()[0].pid, None);
        assert!(has_warning(
            &r,
            "truncated: report ends inside the process list"
        ));
        assert!(has_warning(&r, "truncated: last field cut off"));

        let full = json(b"PC-1", true, &[wfs()]);
        let at = full.windows(7).position(|w| w == b"AppData").unwrap();
        let r = parse(JFILE, &full[..at]);
        assert_eq!(r.status, ReportStatus::Detected);
        assert_eq!(r.processes()[0].image_path, "", "a cut path is dropped");
        assert_eq!(r.processes()[0].pid, Some(4312));
        assert!(has_warning(&r, "truncated"));
    }

    // ----- garbage and limits -----------------------------------------------------

    #[test]
    fn garbage_is_unparseable() {
        let huge = vec![b'A'; 1 << 20];
        let nul = vec![0u8; 4096];
        let cases: Vec<(&str, &[u8])> = vec![
            ("empty", b""),
            ("blank", b" \r\n\t\n"),
            ("nul", &nul),
            ("binary", b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\xff\xff"),
            ("huge line", &huge),
            ("text", b"hello\nworld\n"),
            ("utf16", b"\xff\xfe[\x00E\x00"),
            ("json garbage", b"{{{{[[[\"\"\"::,,}"),
        ];
        for (what, b) in cases {
            let r = parse(FILE, b);
            assert_eq!(r.status, ReportStatus::Unparseable, "{what}");
            assert!(!r.warnings.is_empty(), "{what}");
        }
    }

    #[test]
    fn clean_report_with_a_huge_line_is_not_clean() {
        let mut b = text(&EN, "2.4.0", false, &[], "\r\n");
        b.extend(std::iter::repeat_n(b'x', MAX_LINE + 1));
        let r = parse(FILE, &b);
        assert_eq!(r.status, ReportStatus::Unparseable);
        assert!(has_warning(&r, "not trusted as clean"));
    }

    #[test]
    fn input_beyond_4_mib_is_ignored() {
        let mut clean = text(&EN, "2.4.0", false, &[], "\r\n");
        clean.resize(MAX_INPUT + 10, b'\n');
        let r = parse(FILE, &clean);
        assert_eq!(r.status, ReportStatus::Unparseable);
        assert!(has_warning(&r, "input beyond 4 MiB ignored"));

        let mut detected = text(&EN, "2.4.0", true, &[wfs()], "\r\n");
        detected.resize(MAX_INPUT + 10, b'\n');
        let r = parse(FILE, &detected);
        assert_eq!(r.status, ReportStatus::Detected);
        assert!(has_warning(&r, "input beyond 4 MiB ignored"));
    }

    #[test]
    fn warnings_are_capped() {
        let mut b = text(&EN, "2.4.0", true, &[], "\n");
        for _ in 0..500 {
            b.extend_from_slice(
                b"[Emotet Process] \n     Process Name  : \xff\n     Process ID    : x\n",
            );
        }
        let r = parse(FILE, &b);
        assert_eq!(r.status, ReportStatus::Detected);
        assert_eq!(r.processes().len(), 500);
        assert!(r.warnings.len() < MAX_NOTES + 10, "{}", r.warnings.len());
        assert!(has_warning(&r, "truncated"));
        assert!(r
            .warnings
            .iter()
            .any(|w| w.ends_with("more warnings suppressed")));
    }

    #[test]
    fn pathological_inputs_stay_linear() {
        let started = std::time::Instant::now();
        let mut quotes = b"{".to_vec();
        quotes.resize(MAX_INPUT, b'"');
        let mut quote_spaces = b"{\"k\":\"".to_vec();
        while quote_spaces.len() < MAX_INPUT {
            quote_spaces.extend_from_slice(b"\"      x");
        }
        let mut keys = b"{".to_vec();
        while keys.len() < MAX_INPUT {
            keys.extend_from_slice(b"\"process_name\":\"a\",");
        }
        let mut fields = Vec::new();
        while fields.len() < MAX_INPUT {
            fields.extend_from_slice(b"     Process Name  : a\n");
        }
        let mut nest = vec![b'{'; MAX_INPUT / 2];
        nest.resize(MAX_INPUT, b'}');
        for b in [&quotes, &quote_spaces, &keys, &fields, &nest] {
            let r = parse(FILE, b);
            assert_ne!(r.status, ReportStatus::NotDetected);
        }
        // Quadratic behaviour on 4 MiB would take hours, not seconds.
        assert!(started.elapsed().as_secs() < 60);
    }

    /// Marsaglia's xorshift64: enough to spray bytes without a dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..3000 {
            let len = rng.below(400);
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let r = parse(FILE, &bytes);
            assert_ne!(r.status, ReportStatus::NotDetected);
        }
        // Token soup reaches deeper states than uniform bytes.
        let tokens: &[&[u8]] = &[
            b"{",
            b"}",
            b"[",
            b"]",
            b"\"",
            b"\\",
            b"\\\\",
            b":",
            b",",
            b" ",
            b"\r\n",
            b"\n",
            b"\x83",
            b"\x5C",
            b"\xff",
            b"\"is_infected\":",
            b"\"yes\"",
            b"\"no\"",
            b"\"process_name\":\"",
            b"\"emotet_processes\":[",
            b"\"scan_time\":\"2026-11-20 10:20:05\"",
            b"[EmoCheck v2.4.0]\n",
            b"[Result] \n",
            b"Detected Emotet process.\n",
            b"[Emotet Process] \n",
            b"     Process ID    : ",
            b"     Image Path    : ",
            DELIM.as_bytes(),
            b"Scan time: ",
            b"9120",
        ];
        for _ in 0..3000 {
            let mut bytes = Vec::new();
            for _ in 0..rng.below(60) {
                bytes.extend_from_slice(tokens[rng.below(tokens.len())]);
            }
            let _ = parse(FILE, &bytes);
            let _ = parse(JFILE, &bytes);
        }
    }

    #[test]
    fn mutated_reports_never_panic() {
        let mut rng = XorShift(0xDEAD_BEEF_CAFE_F00D);
        let seeds = [
            text(
                &JA,
                "2.3.2",
                true,
                &[p(b"\x83\x5C.exe", b"1", SJIS_PATH, Some(KEY))],
                "\r\n",
            ),
            text(&FR, "2.4.0", false, &[], "\r\n"),
            json(
                b"PC\\1",
                true,
                &[p(b"evil\"x.exe", b"2", SJIS_PATH, Some(KEY))],
            ),
        ];
        for seed in &seeds {
            for _ in 0..2000 {
                let mut b = seed.clone();
                for _ in 0..=rng.below(4) {
                    let at = rng.below(b.len());
                    match rng.below(3) {
                        0 => b[at] = rng.next() as u8,
                        1 => {
                            b.remove(at);
                        }
                        _ => b.insert(at, rng.next() as u8),
                    }
                }
                let _ = parse(FILE, &b);
            }
        }
    }

    // ----- file names ---------------------------------------------------------------

    #[test]
    fn name_stamp_forms() {
        let some = |h: &str, s: &str| Some((Some(h.to_string()), s.to_string()));
        assert_eq!(
            name_stamp("PC-1_20261120093011_emocheck.txt"),
            some("PC-1", "20261120093011")
        );
        assert_eq!(
            name_stamp("PC-1_20261120093011_emocheck.json"),
            some("PC-1", "20261120093011")
        );
        assert_eq!(
            name_stamp("PC-1_20261120093011_EmoCheck.JSON"),
            some("PC-1", "20261120093011")
        );
        assert_eq!(
            name_stamp("MY_PC_20261120093011_emocheck.txt"),
            some("MY_PC", "20261120093011")
        );
        assert_eq!(
            name_stamp("経理PC_20261120093011_emocheck.txt"),
            some("経理PC", "20261120093011")
        );
        assert_eq!(
            name_stamp(r"C:\Temp\PC-1_20261120093011_emocheck.txt"),
            some("PC-1", "20261120093011")
        );
        assert_eq!(
            name_stamp("/tmp/x/PC-1_20261120093011_emocheck.txt"),
            some("PC-1", "20261120093011")
        );
        assert_eq!(
            name_stamp("20261120093011_emocheck.txt"),
            Some((None, "20261120093011".to_string()))
        );
        assert_eq!(
            name_stamp("PC-1_20280229235959_emocheck.txt"),
            some("PC-1", "20280229235959")
        );
    }

    #[test]
    fn name_stamp_rejects() {
        for name in [
            "",
            "_emocheck.txt",
            "PC-1_20261120093011_emocheck.log",
            "PC-1_20261120093011_emocheck.txt.bak",
            "PC-1_20261120093011.txt",
            "PC-1_2026112009301_emocheck.txt",
            "PC-120261120093011_emocheck.txt",
            "_20261120093011_emocheck.txt",
            "PC-1_2026112009301x_emocheck.txt",
            "PC-1_20261320093011_emocheck.txt",
            "PC-1_20261131093011_emocheck.txt",
            "PC-1_20270229093011_emocheck.txt",
            "PC-1_21000229093011_emocheck.txt",
            "PC-1_20261120243011_emocheck.txt",
            "PC-1_20261120096011_emocheck.txt",
            "PC-1_20261120093060_emocheck.txt",
            "PC-1_19791120093011_emocheck.txt",
            "PC-1_２0261120093011_emocheck.txt",
            "é0261120093011_emocheck.txt",
        ] {
            assert_eq!(name_stamp(name), None, "{name}");
        }
    }
}
