//! The consolidated HTML report: one self-contained page per run.
//!
//! It is read on jump hosts with no Internet access, mailed around during an
//! incident and printed for the file, so it must stand alone: CSS and SVG are
//! inline, there is no external script, font, image or URL, and a strict
//! `Content-Security-Policy` (`default-src 'none'`, the one inline script
//! allowed by its SHA-256) makes sure a page that somehow carried markup from
//! a host could still neither run it nor fetch anything. The inline script only
//! adds table sorting and a filter box; without it the page is complete.
//!
//! Everything a host supplied (process names, paths, run keys, file names,
//! reasons, the raw report) is hostile: it goes through [`crate::sanitize`] —
//! controls and ANSI escapes made visible as `\x1b`, then `& < > " '`
//! escaped — wherever it lands, text or attribute. Class names and `lang`
//! values come from fixed whitelists, never from data. No template engine:
//! the page is a handful of `write!`s over [`RunReport`], and every
//! interpolation of a string is one of the escaping helpers below.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::{HistoryPoint, HostEntry, RawReport, RunReport, RAW_CAP};
use crate::sanitize::{display, display_multiline, html, html_escape};

/// The one inline script: sorting of `table.sortable`, the filter box (which
/// it creates: without the script there is no dead control), and opening the
/// collapsed host lists for printing. No `innerHTML`: host data is only ever
/// read back as text.
const SCRIPT: &str = r#"(function () {
  'use strict';
  var d = document, each = function (l, f) { Array.prototype.forEach.call(l, f); };
  d.documentElement.setAttribute('data-js', 'on');
  var slot = d.getElementById('filter-slot');
  if (slot) {
    var items = d.querySelectorAll('[data-search]');
    var input = d.createElement('input');
    input.type = 'search';
    input.placeholder = 'Filter hosts, OUs, processes, paths';
    input.setAttribute('aria-label', 'Filter hosts');
    var shown = d.createElement('span');
    shown.className = 'muted';
    input.addEventListener('input', function () {
      var q = input.value.toLowerCase().trim(), n = 0;
      each(items, function (e) {
        var hit = !q || e.getAttribute('data-search').indexOf(q) >= 0;
        e.hidden = !hit;
        if (hit) { n++; }
      });
      shown.textContent = q ? n + ' of ' + items.length + ' shown' : '';
    });
    slot.appendChild(input);
    slot.appendChild(shown);
  }
  function key(row, i) {
    var c = row.cells[i];
    if (!c) { return ''; }
    var v = c.getAttribute('data-sort');
    if (v === null) { v = c.textContent.trim(); }
    var n = Number(v);
    return v !== '' && !isNaN(n) ? n : v.toLowerCase();
  }
  each(d.querySelectorAll('table.sortable'), function (t) {
    if (!t.tHead || !t.tBodies.length) { return; }
    var heads = t.tHead.rows[0].cells;
    each(heads, function (th, i) {
      th.tabIndex = 0;
      th.classList.add('sort');
      var go = function () {
        var asc = th.getAttribute('aria-sort') !== 'ascending';
        each(heads, function (o) { o.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
        var body = t.tBodies[0], rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (x, y) {
          var a = key(x, i), b = key(y, i);
          var r = typeof a === 'number' && typeof b === 'number' ? a - b
            : String(a).localeCompare(String(b), undefined, { numeric: true });
          return asc ? r : -r;
        });
        each(rows, function (r) { body.appendChild(r); });
      };
      th.addEventListener('click', go);
      th.addEventListener('keydown', function (e) {
        if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); go(); }
      });
    });
  });
  window.addEventListener('beforeprint', function () {
    each(d.querySelectorAll('details.print-open:not([open])'), function (e) {
      e.setAttribute('open', '');
      e.setAttribute('data-print-opened', '');
    });
  });
  window.addEventListener('afterprint', function () {
    each(d.querySelectorAll('details[data-print-opened]'), function (e) {
      e.removeAttribute('open');
      e.removeAttribute('data-print-opened');
    });
  });
}());"#;

const STYLE: &str = r#"
:root{--fg:#1b1f24;--muted:#5c6470;--line:#d5d9de;--panel:#f5f6f8;--bg:#fff;
--detected:#c62828;--no_result:#e65100;--unreachable:#6d4c41;--auth_failed:#8e24aa;
--host_key_rejected:#4527a0;--timeout:#b7860b;--checker_failed:#ad1457;--error:#37474f;
--busy:#78909c;--not_started:#90a4ae;--unfinished:#9e9e9e;--not_detected:#2e7d32}
*{box-sizing:border-box}
html{-webkit-print-color-adjust:exact;print-color-adjust:exact}
body{margin:0;background:var(--bg);color:var(--fg);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","Helvetica Neue",Arial,sans-serif}
:lang(ja){font-family:"Yu Gothic UI","Yu Gothic",Meiryo,"Hiragino Sans","Noto Sans CJK JP","IPAGothic",system-ui,sans-serif}
/* Paths and reports: Latin from a monospace font (a backslash stays a backslash, not the yen
   sign of Japanese fonts), Japanese from the fallbacks; after :lang(ja), and as specific. */
.mono,pre.raw,.procs td.p{font-family:ui-monospace,"Cascadia Mono",Consolas,"DejaVu Sans Mono",Menlo,
"MS Gothic","Noto Sans Mono CJK JP","IPAGothic",monospace;font-size:12.5px}
main{max-width:1240px;margin:0 auto;padding:18px 22px 40px}
h1{font-size:22px;margin:0 0 6px}
h2{font-size:18px;margin:30px 0 10px;padding-bottom:4px;border-bottom:2px solid var(--line)}
h3{font-size:15px;margin:0}
.muted{color:var(--muted)}
.halt{border:2px solid var(--detected);background:#fdecea;padding:8px 12px;margin:10px 0;font-weight:600}
dl{display:grid;grid-template-columns:max-content 1fr;gap:3px 16px;margin:8px 0}
dt{color:var(--muted)}
dd{margin:0;overflow-wrap:anywhere}
.top{display:grid;grid-template-columns:minmax(0,1.15fr) minmax(0,1fr);gap:8px 28px;align-items:start}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(118px,1fr));gap:8px;margin:10px 0}
.card{border:1px solid var(--line);border-left:6px solid var(--c,#888);border-radius:6px;padding:5px 10px;background:var(--panel)}
.card .n{display:block;font-size:26px;font-weight:700;line-height:1.15}
.card .l{font-size:12px;color:var(--muted)}
.card.zero{opacity:.55}
.k-detected{--c:var(--detected)}.k-no_result{--c:var(--no_result)}.k-unreachable{--c:var(--unreachable)}
.k-auth_failed{--c:var(--auth_failed)}.k-host_key_rejected{--c:var(--host_key_rejected)}
.k-timeout{--c:var(--timeout)}.k-checker_failed{--c:var(--checker_failed)}.k-error{--c:var(--error)}
.k-busy{--c:var(--busy)}.k-not_started{--c:var(--not_started)}.k-unfinished{--c:var(--unfinished)}
.k-not_detected{--c:var(--not_detected)}.k-total{--c:var(--fg)}
svg{display:block;max-width:100%;height:auto}
svg text{font:12px system-ui,"Segoe UI",Roboto,"Noto Sans",Arial,sans-serif;fill:var(--fg)}
svg .seg{fill:var(--c)}
svg .bar{fill:var(--detected)}
svg .now{stroke:var(--fg);stroke-width:2}
svg .axis{stroke:var(--line)}
figure{margin:8px 0 4px}
figcaption{font-weight:600;margin-bottom:4px}
.legend{list-style:none;padding:0;margin:4px 0;display:flex;flex-wrap:wrap;gap:4px 14px;font-size:12px}
.legend i,.sw{display:inline-block;width:11px;height:11px;border-radius:2px;background:var(--c);vertical-align:-1px;margin-right:4px}
.badge{display:inline-block;padding:0 7px;border-radius:9px;font-size:12px;font-weight:700;color:#fff;background:var(--c,#666);white-space:nowrap}
.chg{display:inline-block;padding:0 7px;border-radius:9px;font-size:12px;font-weight:700;border:1px solid currentColor}
.chg.new{color:var(--detected)}.chg.still{color:#8a3b00}.chg.cleared{color:var(--not_detected)}
table{border-collapse:collapse;width:100%;margin:6px 0 12px}
th,td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:var(--panel);font-weight:600;white-space:nowrap}
td{overflow-wrap:anywhere}
td.num{text-align:right;white-space:nowrap}
tbody td:first-child{overflow-wrap:normal}
.scroll{overflow-x:auto}
th.sort{cursor:pointer}
th.sort::after{content:" \2195";color:var(--muted);font-weight:400}
th[aria-sort=ascending]::after{content:" \25B2"}
th[aria-sort=descending]::after{content:" \25BC"}
article.host{border:1px solid var(--line);border-left:6px solid var(--detected);border-radius:6px;padding:10px 14px 6px;margin:12px 0;break-inside:avoid}
article.host header{display:flex;flex-wrap:wrap;gap:6px 12px;align-items:center}
article.host dl{font-size:13px}
.procs th{background:#fbeaea}
ul.warn{margin:4px 0 8px;padding-left:20px;color:#8a3b00;font-size:13px}
.tl{display:inline-flex;gap:2px;vertical-align:middle}
.tl i{display:inline-block;min-width:17px;height:17px;padding:0 2px;border-radius:3px;background:var(--c);color:#fff;
font:700 10.5px/17px system-ui,Arial,sans-serif;text-align:center;font-style:normal}
.tl i.now{outline:2px solid var(--fg);outline-offset:1px}
details{margin:6px 0}
details>summary{cursor:pointer;font-weight:600}
pre.raw{white-space:pre-wrap;overflow-wrap:anywhere;background:var(--panel);border:1px solid var(--line);
padding:8px 10px;max-height:460px;overflow:auto;margin:6px 0}
p.note{font-size:12px;color:var(--muted);margin:4px 0}
.js-only{display:none}
html[data-js=on] .js-only{display:flex}
#filter-slot{gap:10px;align-items:center;margin:14px 0 0}
#filter-slot input{font:inherit;padding:5px 9px;width:min(420px,100%);border:1px solid var(--line);border-radius:5px}
footer{margin-top:36px;font-size:12px;color:var(--muted);border-top:1px solid var(--line);padding-top:8px}
[hidden]{display:none!important}
@media (max-width:900px){.top{grid-template-columns:1fr}}
@media (max-width:600px){dl{grid-template-columns:1fr}main{padding:10px}}
@media print{
@page{margin:12mm}
body{font-size:10pt}
main{max-width:none;padding:0}
.js-only,#filter-slot{display:none!important}
.top{grid-template-columns:1fr 1fr}
h2{break-after:avoid}
tr,.card,figure,article.host{break-inside:avoid}
pre.raw{max-height:none;overflow:visible}
.scroll{overflow:visible}
th.sort::after{content:none}
}
"#;

/// The `script-src` source of [`SCRIPT`] (`sha256-<base64>`), for the
/// Content-Security-Policy.
pub fn script_hash() -> String {
    let digest = Sha256::digest(SCRIPT.as_bytes());
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// The Content-Security-Policy of the page: nothing may load, the inline
/// styles may apply, only our script may run.
pub fn content_security_policy() -> String {
    format!(
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src '{}'; \
         base-uri 'none'; form-action 'none'",
        script_hash()
    )
}

/// Cap on one host-supplied field (a Windows path is at most 32767 characters).
const FIELD_CAP: usize = 32_768;

/// Longest OU/group label drawn in the chart, in half-width cells.
const CHART_LABEL_CELLS: usize = 30;

/// At most this many OUs/groups in the chart (those with the most findings).
const CHART_MAX_ROWS: usize = 40;

/// What a host class is called on the page, its one-letter timeline code,
/// and what it means.
struct ClassMeta {
    key: &'static str,
    label: &'static str,
    code: &'static str,
    meaning: &'static str,
}

/// Every status a host can have, in the order of the report (findings,
/// then hosts not checked, then clean).
const CLASSES: [ClassMeta; 12] = [
    ClassMeta {
        key: "detected",
        label: "Detected",
        code: "D",
        meaning: "the checker reported a finding",
    },
    ClassMeta {
        key: "no_result",
        label: "No result found",
        code: "N",
        meaning: "the checker ran but left no report",
    },
    ClassMeta {
        key: "unreachable",
        label: "Unreachable",
        code: "U",
        meaning: "no connection (refused, timeout)",
    },
    ClassMeta {
        key: "auth_failed",
        label: "Authentication failed",
        code: "A",
        meaning: "credentials refused",
    },
    ClassMeta {
        key: "host_key_rejected",
        label: "Host key rejected",
        code: "K",
        meaning: "SSH host key unknown or changed",
    },
    ClassMeta {
        key: "timeout",
        label: "Timeout",
        code: "T",
        meaning: "the checker ran past the playbook's timeout; its process group was killed",
    },
    ClassMeta {
        key: "checker_failed",
        label: "Checker failed",
        code: "F",
        meaning:
            "crashed without a usable report, report unparseable or truncated, or over the size cap",
    },
    ClassMeta {
        key: "error",
        label: "Error",
        code: "E",
        meaning: "anything else (transfer, journal), with the step that failed",
    },
    ClassMeta {
        key: "busy",
        label: "Busy",
        code: "B",
        meaning: "another sweep held the host's lease; it was not touched",
    },
    ClassMeta {
        key: "not_started",
        label: "Not started",
        code: "S",
        meaning: "the sweep stopped (interrupt, halt) before this host started",
    },
    ClassMeta {
        key: "unfinished",
        label: "Unfinished",
        code: "?",
        meaning: "no final result: the run is still going or crashed",
    },
    ClassMeta {
        key: "not_detected",
        label: "Clean",
        code: "C",
        meaning: "the checker's complete report says not detected",
    },
];

/// The metadata of `status`; anything unknown is shown as unfinished (the
/// key doubles as a CSS class, so it must come from this table).
fn meta(status: &str) -> &'static ClassMeta {
    CLASSES
        .iter()
        .find(|c| c.key == status)
        .unwrap_or(&CLASSES[10])
}

/// Index of `status` in the report order.
fn rank(status: &str) -> usize {
    CLASSES.iter().position(|c| c.key == status).unwrap_or(10)
}

/// Escaped host-supplied text.
fn esc(s: &str) -> String {
    html(s, FIELD_CAP)
}

fn esc_opt(s: Option<&str>) -> String {
    match s {
        Some(s) if !s.is_empty() => esc(s),
        _ => "<span class=\"muted\">–</span>".to_string(),
    }
}

/// A `lang` attribute for text from a report whose language the parser
/// recognised (the document itself is English).
fn lang_attr(format: Option<&str>) -> &'static str {
    match format {
        Some("ja") => " lang=\"ja\"",
        Some("fr") => " lang=\"fr\"",
        _ => "",
    }
}

/// The value of a `data-search` attribute: what the filter box matches.
fn search_attr(parts: &[&str]) -> String {
    let joined = parts
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| display(p, 2048))
        .collect::<Vec<_>>()
        .join(" ");
    html_escape(&joined.to_lowercase())
}

/// A journal timestamp (RFC 3339, UTC) for people.
fn when(ts: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(ts) {
        Ok(t) => t
            .with_timezone(&chrono::Utc)
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string(),
        Err(_) => esc(ts),
    }
}

fn seconds(ms: i64) -> String {
    let s = ms as f64 / 1000.0;
    if s < 60.0 {
        format!("{s:.1} s")
    } else {
        let total = (ms / 1000).max(0);
        let (h, m, sec) = (total / 3600, (total % 3600) / 60, total % 60);
        if h > 0 {
            format!("{h} h {m:02} min {sec:02} s")
        } else {
            format!("{m} min {sec:02} s")
        }
    }
}

fn run_duration(start: &str, end: Option<&str>) -> Option<String> {
    let a = chrono::DateTime::parse_from_rfc3339(start).ok()?;
    let b = chrono::DateTime::parse_from_rfc3339(end?).ok()?;
    Some(seconds((b - a).num_milliseconds()))
}

/// Decodes a raw report for display. EmoCheck mixes encodings within one file
/// (UTF-8 labels, values in the host's OEM code page), so each line is taken
/// as UTF-8 as far as it is valid and the rest of the line as CP932 when that
/// decodes cleanly (as the parser does per field), else lossily. Returns the
/// text and whether CP932 / replacement characters were used.
fn decode_report(bytes: &[u8], truncated: bool) -> (String, bool, bool) {
    let mut out = String::with_capacity(bytes.len());
    let (mut cp932, mut lossy) = (false, false);
    let lines: Vec<&[u8]> = bytes.split_inclusive(|&b| b == b'\n').collect();
    let last = lines.len().saturating_sub(1);
    for (i, line) in lines.into_iter().enumerate() {
        match std::str::from_utf8(line) {
            Ok(s) => out.push_str(s),
            Err(e) => {
                let (good, rest) = line.split_at(e.valid_up_to());
                out.push_str(&String::from_utf8_lossy(good));
                // A multi-byte character cut by the size cap: drop it.
                if truncated && i == last && e.error_len().is_none() {
                    continue;
                }
                match encoding_rs::SHIFT_JIS
                    .decode_without_bom_handling_and_without_replacement(rest)
                {
                    Some(text) => {
                        cp932 = true;
                        out.push_str(&text);
                    }
                    None => {
                        lossy = true;
                        out.push_str(&String::from_utf8_lossy(rest));
                    }
                }
            }
        }
    }
    (out, cp932, lossy)
}

/// Renders the page.
pub fn to_html(r: &RunReport) -> String {
    let mut o = String::with_capacity(32 * 1024 + r.hosts.len() * 600);
    let i = &r.run.info;
    let detected = r.hosts.iter().filter(|h| h.status == "detected").count();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{csp}\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"pushscan {ver}\">\n\
         <title>pushscan run {id}: {det} detected — {pb}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n",
        csp = html_escape(&content_security_policy()),
        ver = env!("CARGO_PKG_VERSION"),
        id = i.id,
        det = detected,
        pb = esc(i.playbook_name.as_deref().unwrap_or("?")),
    );
    header(&mut o, r);
    findings_by_checker(&mut o, r);
    detections(&mut o, r);
    actions(&mut o, r);
    no_result(&mut o, r);
    failures(&mut o, r);
    cleared(&mut o, r);
    blind_spots(&mut o, r);
    clean(&mut o, r);
    footer(&mut o, r);
    let _ = write!(o, "</main>\n<script>{SCRIPT}</script>\n</body>\n</html>\n");
    o
}

fn header(o: &mut String, r: &RunReport) {
    let i = &r.run.info;
    let _ = write!(
        o,
        "<header id=\"run\">\n<h1>pushscan report — run {} <span class=\"badge k-{}\">{}</span></h1>\n",
        i.id,
        if i.status == "finished" {
            "not_detected"
        } else {
            "no_result"
        },
        esc(&i.status)
    );
    if let Some(reason) = &i.halt_reason {
        let _ = writeln!(
            o,
            "<p class=\"halt\" role=\"alert\">HALTED: {} — later waves were not started; \
             <code>pushscan resume {}</code> continues them.</p>",
            esc(reason),
            i.id
        );
    }
    o.push_str("<div class=\"top\">\n<section id=\"facts\" aria-label=\"Run facts\">\n<dl>\n");
    let mut fact = |k: &str, v: String| {
        let _ = writeln!(o, "<dt>{k}</dt><dd>{v}</dd>");
    };
    let finished = i.finished_at.as_deref();
    fact(
        "When",
        format!(
            "{}{}",
            when(&i.started_at),
            finished
                .map(|f| format!(" → {}", when(f)))
                .unwrap_or_else(|| " (not finished)".into())
        ),
    );
    fact(
        "Duration",
        run_duration(&i.started_at, finished).unwrap_or_else(|| "–".into()),
    );
    fact("Operator", esc_opt(i.operator.as_deref()));
    fact("Controller", esc_opt(i.controller.as_deref()));
    fact(
        "Playbook",
        format!(
            "{}<br><span class=\"mono\">{}</span>",
            esc_opt(i.playbook_name.as_deref()),
            esc_opt(i.playbook.as_deref())
        ),
    );
    fact(
        "Checker",
        format!(
            "<span class=\"mono\">{}</span><br>SHA-256 <span class=\"mono\">{}</span>",
            esc_opt(i.checker_path.as_deref()),
            esc_opt(i.checker_sha256.as_deref())
        ),
    );
    fact(
        "Inventory",
        format!(
            "<span class=\"mono\">{}</span>",
            esc_opt(i.inventory.as_deref())
        ),
    );
    fact(
        "Limit",
        match i.limit.as_deref() {
            Some(l) if !l.is_empty() => format!("<span class=\"mono\">{}</span>", esc(l)),
            _ => "none (every host of the inventory)".into(),
        },
    );
    fact(
        "Hosts targeted",
        format!(
            "{}{}",
            i.hosts_targeted.unwrap_or(r.hosts.len() as i64),
            i.forks
                .map(|f| format!(" <span class=\"muted\">(forks {f})</span>"))
                .unwrap_or_default()
        ),
    );
    fact(
        "Run status",
        format!(
            "{}{}",
            esc(&i.status),
            i.exit_code
                .map(|c| format!(" <span class=\"muted\">(exit code {c})</span>"))
                .unwrap_or_default()
        ),
    );
    if let Some(reason) = &i.halt_reason {
        fact("Halt reason", esc(reason));
    }
    fact("pushscan", esc_opt(i.pushscan_version.as_deref()));
    o.push_str("</dl>\n</section>\n<section id=\"summary\" aria-label=\"Counts\">\n");
    cards(o, r);
    ou_chart(o, r);
    trend_chart(o, r);
    o.push_str("</section>\n</div>\n</header>\n");
    o.push_str("<div id=\"filter-slot\" class=\"js-only\"></div>\n");
}

fn cards(o: &mut String, r: &RunReport) {
    let _ = write!(
        o,
        "<div class=\"cards\">\n<div class=\"card k-total\" data-class=\"total\"><span class=\"n\">{}</span><span class=\"l\">Hosts</span></div>\n",
        r.hosts.len()
    );
    for c in &CLASSES {
        let n = r.run.counts.get(c.key).copied().unwrap_or(0);
        let always = matches!(c.key, "detected" | "no_result" | "not_detected");
        if n == 0 && !always {
            continue;
        }
        let _ = writeln!(
            o,
            "<div class=\"card k-{k}{z}\" data-class=\"{k}\" title=\"{m}\"><span class=\"n\">{n}</span><span class=\"l\">{l}</span></div>",
            k = c.key,
            z = if n == 0 { " zero" } else { "" },
            m = html_escape(c.meaning),
            l = c.label
        );
    }
    o.push_str("</div>\n");
}

/// Width of a label in half-width cells (CJK and other wide characters count two).
fn cells(c: char) -> usize {
    if (c as u32) >= 0x1100 {
        2
    } else {
        1
    }
}

fn clip_cells(s: &str, max: usize) -> String {
    let s = display(s, FIELD_CAP);
    let mut used = 0;
    let mut out = String::new();
    for c in s.chars() {
        if used + cells(c) > max {
            out.push('…');
            return out;
        }
        used += cells(c);
        out.push(c);
    }
    out
}

/// An inline-SVG stacked bar per OU/group: how many hosts ended in which class.
fn ou_chart(o: &mut String, r: &RunReport) {
    if r.hosts.is_empty() {
        return;
    }
    let mut order: Vec<&str> = Vec::new();
    let mut by_ou: HashMap<&str, BTreeMap<usize, usize>> = HashMap::new();
    for h in &r.hosts {
        let e = by_ou.entry(h.ou.as_str()).or_insert_with(|| {
            order.push(h.ou.as_str());
            BTreeMap::new()
        });
        *e.entry(rank(&h.status)).or_insert(0) += 1;
    }
    let total_of = |ou: &str| by_ou.get(ou).map(|m| m.values().sum()).unwrap_or(0usize);
    let severity = |ou: &str| {
        let m = by_ou.get(ou);
        let get = |k: usize| m.and_then(|m| m.get(&k)).copied().unwrap_or(0);
        let not_checked: usize = (1..11).map(get).sum();
        (get(0), not_checked, total_of(ou))
    };
    let shown_all = order.len();
    if order.len() > CHART_MAX_ROWS {
        order.sort_by_key(|ou| std::cmp::Reverse(severity(ou)));
        order.truncate(CHART_MAX_ROWS);
    }
    order.sort_by_key(|ou| (ou.to_lowercase(), ou.to_string()));
    let max = order
        .iter()
        .map(|ou| total_of(ou))
        .max()
        .unwrap_or(1)
        .max(1);
    let (label_w, bar_w, row_h) = (196.0, 300.0, 24.0);
    let height = 8.0 + row_h * order.len() as f64;
    let _ = write!(
        o,
        "<figure id=\"by-ou\"><figcaption>Outcome per OU/group{}</figcaption>\n\
         <svg viewBox=\"0 0 560 {height}\" width=\"560\" role=\"img\" aria-label=\"Hosts per class for each OU or group\">\n",
        if shown_all > order.len() {
            format!(
                " <span class=\"muted\">({} of {shown_all} with the most findings)</span>",
                order.len()
            )
        } else {
            String::new()
        }
    );
    let mut present: Vec<usize> = Vec::new();
    for (row, ou) in order.iter().enumerate() {
        let y = 6.0 + row_h * row as f64;
        let _ = writeln!(
            o,
            "<g><title>{full}</title><text x=\"{lx}\" y=\"{ty}\" text-anchor=\"end\">{label}</text></g>",
            full = esc(ou),
            lx = label_w - 6.0,
            ty = y + 13.0,
            label = html_escape(&clip_cells(ou, CHART_LABEL_CELLS)),
        );
        let mut x = label_w;
        if let Some(m) = by_ou.get(ou) {
            for (&k, &n) in m {
                if !present.contains(&k) {
                    present.push(k);
                }
                let w = bar_w * n as f64 / max as f64;
                let c = &CLASSES[k];
                let _ = writeln!(
                    o,
                    "<rect class=\"seg k-{key}\" x=\"{x:.1}\" y=\"{y}\" width=\"{w:.1}\" height=\"17\"><title>{ou}: {label} {n}</title></rect>",
                    key = c.key,
                    ou = esc(ou),
                    label = c.label,
                );
                x += w;
            }
        }
        let _ = writeln!(
            o,
            "<text x=\"{:.1}\" y=\"{}\">{}</text>",
            x + 6.0,
            y + 13.0,
            total_of(ou)
        );
    }
    o.push_str("</svg>\n<ul class=\"legend\">");
    present.sort();
    for k in present {
        let c = &CLASSES[k];
        let _ = write!(o, "<li><i class=\"k-{}\"></i>{}</li>", c.key, c.label);
    }
    o.push_str("</ul></figure>\n");
}

/// Detections over the journal's recent runs, as small inline-SVG bars.
fn trend_chart(o: &mut String, r: &RunReport) {
    let runs = &r.recent_runs;
    if runs.len() < 2 {
        return;
    }
    let get = |p: &super::RunPoint, k: &str| p.counts.get(k).copied().unwrap_or(0);
    let max = runs
        .iter()
        .map(|p| get(p, "detected"))
        .max()
        .unwrap_or(0)
        .max(1);
    let slot = (520.0 / runs.len() as f64).min(48.0);
    let (base, top) = (112.0, 18.0);
    let _ = write!(
        o,
        "<figure id=\"trend\"><figcaption>Detections over the last {} runs</figcaption>\n\
         <svg viewBox=\"0 0 560 150\" width=\"560\" role=\"img\" aria-label=\"Detected hosts per run\">\n\
         <line class=\"axis\" x1=\"30\" y1=\"{base}\" x2=\"{x2:.1}\" y2=\"{base}\"/>\n",
        runs.len(),
        x2 = 30.0 + slot * runs.len() as f64,
    );
    for (n, p) in runs.iter().enumerate() {
        let d = get(p, "detected");
        let total: i64 = p.counts.values().sum();
        let clean = get(p, "not_detected");
        let x = 30.0 + slot * n as f64 + slot * 0.2;
        let w = slot * 0.6;
        let h = (base - top) * d as f64 / max as f64;
        let now = if p.id == r.run.info.id { " now" } else { "" };
        let date = chrono::DateTime::parse_from_rfc3339(&p.started_at)
            .map(|t| t.format("%m-%d").to_string())
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "<g><title>run {id} ({when}): {d} detected, {clean} clean, {nc} not checked, of {total}</title>\
             <rect class=\"bar{now}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\"/>\
             <text x=\"{cx:.1}\" y=\"{ly:.1}\" text-anchor=\"middle\">{d}</text>\
             <text x=\"{cx:.1}\" y=\"128\" text-anchor=\"middle\">#{id}</text>\
             <text x=\"{cx:.1}\" y=\"143\" text-anchor=\"middle\" class=\"muted\">{date}</text></g>",
            id = p.id,
            when = when(&p.started_at),
            nc = total - d - clean,
            y = base - h,
            cx = x + w / 2.0,
            ly = base - h - 4.0,
        );
    }
    o.push_str("</svg></figure>\n");
}

/// The host's recent results as coloured letters, oldest first; this run's outlined.
fn timeline(h: &HostEntry, run_id: i64) -> String {
    if h.history.is_empty() {
        return String::new();
    }
    let mut label = String::from("Recent results, oldest first:");
    let mut cells = String::new();
    for HistoryPoint {
        run_id: id,
        started_at,
        status,
    } in &h.history
    {
        let c = meta(status);
        let _ = write!(label, " run {id} {},", c.label);
        let _ = write!(
            cells,
            "<i class=\"k-{k}{now}\" title=\"run {id}, {t}: {l}\">{code}</i>",
            k = c.key,
            now = if *id == run_id { " now" } else { "" },
            t = when(started_at),
            l = c.label,
            code = c.code,
        );
    }
    label.pop();
    format!("<span class=\"tl\" role=\"img\" aria-label=\"{label}\">{cells}</span>")
}

fn change_badge(change: Option<&str>) -> &'static str {
    match change {
        Some("new_detection") => "<span class=\"chg new\">NEW</span>",
        Some("first_check") => "<span class=\"chg new\">NEW (first check)</span>",
        Some("still_detected") => "<span class=\"chg still\">STILL DETECTED</span>",
        Some("cleared") => "<span class=\"chg cleared\">CLEARED</span>",
        Some("unchanged") => "<span class=\"muted\">unchanged</span>",
        _ => "",
    }
}

fn format_label(format: Option<&str>) -> &'static str {
    match format {
        Some("en") => "text report, English",
        Some("ja") => "text report, Japanese",
        Some("fr") => "text report, French",
        Some("json") => "JSON report",
        _ => "report",
    }
}

fn detections(o: &mut String, r: &RunReport) {
    let hosts: Vec<&HostEntry> = r.hosts.iter().filter(|h| h.status == "detected").collect();
    let _ = writeln!(
        o,
        "<section id=\"detections\">\n<h2><span class=\"badge k-detected\">{}</span> Detections</h2>",
        hosts.len()
    );
    if hosts.is_empty() {
        o.push_str("<p>No host reported a detection in this run.</p>\n</section>\n");
        return;
    }
    for (n, h) in hosts.iter().enumerate() {
        let mut search: Vec<&str> = vec![&h.host, &h.ou, h.address.as_deref().unwrap_or("")];
        for f in h.findings.iter().take(SEARCH_FINDINGS) {
            search.push(&f.title);
            search.push(&f.location);
            search.extend(f.attributes.values().map(String::as_str));
        }
        let _ = write!(
            o,
            "<article class=\"host\" id=\"det-{n}\" data-search=\"{s}\">\n<header><h3>{host}</h3>{chg} {tl}</header>\n<dl>\n",
            s = search_attr(&search),
            host = esc(&h.host),
            chg = change_badge(h.change.as_deref()),
            tl = timeline(h, r.run.info.id),
        );
        let _ = writeln!(o, "<dt>OU/group</dt><dd>{}</dd>", esc(&h.ou));
        if let Some(a) = &h.address {
            let _ = writeln!(
                o,
                "<dt>Address</dt><dd>{}{}</dd>",
                esc(a),
                h.transport
                    .as_deref()
                    .map(|t| format!(" <span class=\"muted\">({})</span>", esc(t)))
                    .unwrap_or_default()
            );
        }
        let _ = writeln!(
            o,
            "<dt>Scan time</dt><dd>{} <span class=\"muted\">(host local time)</span></dd>",
            esc_opt(h.scan_time.as_deref())
        );
        let _ = writeln!(
            o,
            "<dt>Report file</dt><dd class=\"mono\">{}</dd>",
            esc_opt(h.report_file.as_deref())
        );
        let _ = writeln!(
            o,
            "<dt>Checker</dt><dd>{} {} <span class=\"muted\">({})</span></dd>",
            esc(h.checker.as_deref().unwrap_or("checker")),
            esc_opt(h.checker_version.as_deref()),
            format_label(h.report_format.as_deref())
        );
        if let Some(sha) = &h.report_sha256 {
            let _ = writeln!(
                o,
                "<dt>Report SHA-256</dt><dd class=\"mono\">{}</dd>",
                esc(sha)
            );
        }
        if let Some(p) = &h.evidence_path {
            let _ = writeln!(o, "<dt>Evidence</dt><dd class=\"mono\">{}</dd>", esc(p));
        }
        o.push_str("</dl>\n");
        let lang = lang_attr(h.report_format.as_deref());
        let shown = &h.findings[..h.findings.len().min(CARD_FINDINGS)];
        let processes: Vec<_> = shown.iter().filter_map(|f| f.as_process()).collect();
        let others: Vec<_> = shown
            .iter()
            .filter(|f| f.kind != crate::model::PROCESS_KIND)
            .collect();
        if h.findings.is_empty() {
            let _ = writeln!(o, "<p>{}</p>", esc_opt(h.reason.as_deref()));
        }
        if !processes.is_empty() {
            let _ = writeln!(
                o,
                "<div class=\"scroll\"><table class=\"procs\"><thead><tr><th>Process</th><th>PID</th>\
                 <th>Image path</th><th>Registry (Run) key</th></tr></thead><tbody{lang}>"
            );
            for p in &processes {
                let _ = writeln!(
                    o,
                    "<tr class=\"proc\"><td class=\"p\">{}</td><td class=\"num\">{}</td><td class=\"p\">{}</td><td class=\"p\">{}</td></tr>",
                    esc(&p.name),
                    p.pid
                        .map(|x| x.to_string())
                        .unwrap_or_else(|| "<span class=\"muted\">?</span>".into()),
                    esc_opt(Some(&p.image_path)),
                    esc_opt(p.registry_key.as_deref()),
                );
            }
            o.push_str("</tbody></table></div>\n");
        }
        if !others.is_empty() {
            let _ = writeln!(
                o,
                "<div class=\"scroll\"><table class=\"procs\"><thead><tr><th>Finding</th><th>Kind</th>\
                 <th>Severity</th><th>Location</th><th>Attributes</th></tr></thead><tbody{lang}>"
            );
            for f in others {
                let attrs: Vec<String> = f
                    .attributes
                    .iter()
                    .map(|(k, v)| format!("{}={}", esc(k), esc(v)))
                    .collect();
                let _ = writeln!(
                    o,
                    "<tr class=\"finding\"><td class=\"p\">{}</td><td>{}</td><td>{}</td><td class=\"p\">{}</td><td class=\"p\">{}</td></tr>",
                    esc(&f.title),
                    esc(&f.kind),
                    f.severity.as_str(),
                    esc_opt(Some(&f.location)),
                    attrs.join("<br>"),
                );
            }
            o.push_str("</tbody></table></div>\n");
        }
        if h.findings.len() > CARD_FINDINGS {
            let _ = writeln!(
                o,
                "<p class=\"muted\">{} more finding(s) not shown (the JSON report and the \
                 per-finding CSV list them all).</p>",
                h.findings.len() - CARD_FINDINGS
            );
        }
        if !h.report_warnings.is_empty() {
            o.push_str("<ul class=\"warn\">");
            for w in &h.report_warnings {
                let _ = write!(o, "<li>{}</li>", esc(w));
            }
            o.push_str("</ul>\n");
        }
        if let Some(raw) = &h.raw_report {
            raw_block(o, h, raw, lang);
        }
        o.push_str("</article>\n");
    }
    o.push_str("</section>\n");
}

/// Findings listed per host card; the rest are counted.
const CARD_FINDINGS: usize = 200;
/// Findings whose text the filter box searches, per host.
const SEARCH_FINDINGS: usize = 50;
/// Rows per table of [`findings_by_checker`]; the rest are counted.
const TABLE_FINDINGS: usize = 1000;

/// Every finding of the run in one table per checker and kind (YARA-X matches, Hayabusa
/// events, EmoCheck processes, ...), most severe first, NEW marked; no section when the run
/// found nothing. Each table is bounded at [`TABLE_FINDINGS`] rows.
fn findings_by_checker(o: &mut String, r: &RunReport) {
    use std::collections::BTreeMap;
    type Row<'a> = (&'a HostEntry, &'a crate::model::Finding, bool);
    let mut groups: BTreeMap<(&str, &str), Vec<Row>> = BTreeMap::new();
    for h in r.hosts.iter().filter(|h| h.status == "detected") {
        let checker = h.checker.as_deref().unwrap_or("checker");
        let is_new: std::collections::HashSet<&str> =
            h.new_findings.iter().map(String::as_str).collect();
        for f in &h.findings {
            let new = is_new.contains(f.identity.as_str());
            groups
                .entry((checker, f.kind.as_str()))
                .or_default()
                .push((h, f, new));
        }
    }
    if groups.is_empty() {
        return;
    }
    let total: usize = groups.values().map(Vec::len).sum();
    let _ = writeln!(
        o,
        "<section id=\"findings\">\n<h2><span class=\"badge k-detected\">{total}</span> Findings by checker</h2>"
    );
    for ((checker, kind), mut rows) in groups {
        rows.sort_by_key(|r| std::cmp::Reverse(r.1.severity));
        let _ = writeln!(
            o,
            "<h3>{} <span class=\"muted\">{}</span> ({})</h3>\n<div class=\"scroll\"><table class=\"procs findings\">\
             <thead><tr><th>Host</th><th>Severity</th><th>Finding</th><th>Location</th><th>New</th>\
             <th>Attributes</th></tr></thead><tbody>",
            esc(checker),
            esc(kind),
            rows.len()
        );
        for (h, f, new) in rows.iter().take(TABLE_FINDINGS) {
            let attrs: Vec<String> = f
                .attributes
                .iter()
                .take(16)
                .map(|(k, v)| format!("{}={}", esc(k), esc(v)))
                .collect();
            let new = if *new {
                "<span class=\"chg new\">NEW</span>"
            } else {
                ""
            };
            let _ = writeln!(
                o,
                "<tr class=\"sev-{sev}\"><td>{host}</td><td>{sev}</td><td class=\"p\">{title}</td>\
                 <td class=\"p\">{loc}</td><td>{new}</td><td class=\"p\">{attrs}</td></tr>",
                sev = f.severity.as_str(),
                host = esc(&h.host),
                title = esc(&f.title),
                loc = esc_opt(Some(&f.location)),
                attrs = attrs.join("<br>"),
            );
        }
        o.push_str("</tbody></table></div>\n");
        if rows.len() > TABLE_FINDINGS {
            let _ = writeln!(
                o,
                "<p class=\"muted\">{} more not shown (the JSON report and the per-finding CSV list them all).</p>",
                rows.len() - TABLE_FINDINGS
            );
        }
    }
    o.push_str("</section>\n");
}

/// Containment actions on this run's hosts (`pushscan contain`), host by host; no
/// section at all when there are none. Every field is escaped: targets and messages
/// carry host-supplied paths and output.
fn actions(o: &mut String, r: &RunReport) {
    let hosts: Vec<&HostEntry> = r.hosts.iter().filter(|h| !h.actions.is_empty()).collect();
    if hosts.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "<section id=\"actions\">\n<h2><span class=\"badge k-error\">{}</span> Containment actions</h2>",
        hosts.len()
    );
    for h in hosts {
        let _ = writeln!(
            o,
            "<article class=\"host\" data-search=\"{}\">\n<header><h3>{}</h3></header>",
            search_attr(&[&h.host]),
            esc(&h.host)
        );
        o.push_str(
            "<div class=\"scroll\"><table class=\"procs\"><thead><tr><th>When</th><th>Action</th>\
             <th>Target</th><th>Remote commands</th><th>Exit</th><th>Verified</th><th>Result</th>\
             <th>By</th></tr></thead><tbody>\n",
        );
        for a in &h.actions {
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td>{} <span class=\"muted\">({} #{})</span></td><td class=\"p\">{}</td>\
                 <td class=\"mono\">{}</td><td class=\"num\">{}</td><td>{}</td><td class=\"p\">{}{}</td><td>{}</td></tr>",
                esc(a.finished_at.as_deref().unwrap_or(&a.started_at)),
                esc(&a.action),
                esc(&a.kind),
                a.containment_id,
                esc_opt(a.target.as_deref()),
                // Whole lines: an audit trail shows the exact commands (the POSIX
                // path checks make them long).
                a.command
                    .lines()
                    .map(|l| crate::sanitize::html(l, 12_000))
                    .collect::<Vec<_>>()
                    .join("<br>"),
                a.exit_code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                match a.verified {
                    Some(true) => "yes",
                    Some(false) => "<strong>NO</strong>",
                    None => "-",
                },
                esc(&a.phase),
                a.message
                    .as_deref()
                    .filter(|m| !m.is_empty())
                    .map(|m| format!(": {}", esc(m)))
                    .unwrap_or_default(),
                esc(&a.operator),
            );
        }
        o.push_str("</tbody></table></div>\n</article>\n");
    }
    o.push_str("</section>\n");
}

fn raw_block(o: &mut String, h: &HostEntry, raw: &RawReport, lang: &str) {
    let truncated = raw.total > raw.bytes.len() as u64;
    let (text, cp932, lossy) = decode_report(&raw.bytes, truncated);
    let _ = writeln!(
        o,
        "<details class=\"raw\"><summary>Raw report {} <span class=\"muted\">({} bytes)</span></summary>",
        esc_opt(h.report_file.as_deref()),
        raw.total
    );
    let mut notes = vec![
        "As stored in the journal; control characters are shown as <code>\\x1b</code>-style escapes."
            .to_string(),
    ];
    if truncated {
        notes.push(format!(
            "Only the first {} KiB of {} bytes are shown; the whole report is the evidence file (SHA-256 above).",
            RAW_CAP / 1024,
            raw.total
        ));
    }
    if cp932 {
        notes.push(
            "Lines that are not UTF-8 are shown decoded as CP932 (Japanese Windows), as the parser reads them."
                .into(),
        );
    }
    if lossy {
        notes.push("Bytes that are neither UTF-8 nor CP932 are shown as \u{fffd}.".into());
    }
    for n in notes {
        let _ = writeln!(o, "<p class=\"note\">{n}</p>");
    }
    let _ = writeln!(
        o,
        "<pre class=\"raw\"{lang}>{}</pre></details>",
        html_escape(&display_multiline(&text, usize::MAX))
    );
}

/// A sortable host table: `cols` are the headers; each row's cells are
/// already-escaped HTML.
fn host_table(o: &mut String, cols: &[&str], rows: Vec<(String, Vec<String>)>) {
    o.push_str("<div class=\"scroll\"><table class=\"sortable\"><thead><tr>");
    for c in cols {
        let _ = write!(o, "<th>{c}</th>");
    }
    o.push_str("</tr></thead><tbody>\n");
    for (search, cells) in rows {
        let _ = write!(o, "<tr data-search=\"{search}\">");
        for c in cells {
            let _ = write!(o, "<td>{c}</td>");
        }
        o.push_str("</tr>\n");
    }
    o.push_str("</tbody></table></div>\n");
}

fn recent_header(r: &RunReport) -> Option<&'static str> {
    (r.history_depth > 0).then_some("Recent")
}

fn no_result(o: &mut String, r: &RunReport) {
    let hosts: Vec<&HostEntry> = r.hosts.iter().filter(|h| h.status == "no_result").collect();
    let _ = writeln!(
        o,
        "<section id=\"no-result\">\n<h2><span class=\"badge k-no_result\">{}</span> No result found</h2>",
        hosts.len()
    );
    if hosts.is_empty() {
        o.push_str("<p>Every host where the checker ran left a report.</p>\n</section>\n");
        return;
    }
    o.push_str("<p class=\"note\">The checker ran but left no report: not a clean result.</p>\n");
    let mut cols = vec!["Host", "OU/group", "Address", "Reason"];
    cols.extend(recent_header(r));
    let rows = hosts
        .iter()
        .map(|h| {
            let mut c = vec![
                esc(&h.host),
                esc(&h.ou),
                esc_opt(h.address.as_deref()),
                esc_opt(h.reason.as_deref()),
            ];
            if r.history_depth > 0 {
                c.push(timeline(h, r.run.info.id));
            }
            (
                search_attr(&[&h.host, &h.ou, h.address.as_deref().unwrap_or("")]),
                c,
            )
        })
        .collect();
    host_table(o, &cols, rows);
    o.push_str("</section>\n");
}

fn failures(o: &mut String, r: &RunReport) {
    let failed: Vec<&HostEntry> = r
        .hosts
        .iter()
        .filter(|h| !matches!(h.status.as_str(), "detected" | "no_result" | "not_detected"))
        .collect();
    let _ = writeln!(
        o,
        "<section id=\"not-checked\">\n<h2><span class=\"badge k-error\">{}</span> Not checked</h2>",
        failed.len()
    );
    if failed.is_empty() {
        o.push_str("<p>The checker ran on every host.</p>\n</section>\n");
        return;
    }
    for c in CLASSES.iter().skip(2).take(9) {
        let hosts: Vec<&&HostEntry> = failed
            .iter()
            .filter(|h| meta(&h.status).key == c.key)
            .collect();
        if hosts.is_empty() {
            continue;
        }
        let _ = writeln!(
            o,
            "<section class=\"fail\" id=\"fail-{k}\" data-class=\"{k}\">\n<h3><span class=\"badge k-{k}\">{n}</span> {l} <span class=\"muted\">— {m}</span></h3>",
            k = c.key,
            n = hosts.len(),
            l = c.label,
            m = html_escape(c.meaning)
        );
        let mut cols = vec!["Host", "OU/group", "Address", "Reason", "Time"];
        cols.extend(recent_header(r));
        let rows = hosts
            .iter()
            .map(|h| {
                let mut cells = vec![
                    esc(&h.host),
                    esc(&h.ou),
                    format!(
                        "{}{}",
                        esc_opt(h.address.as_deref()),
                        h.transport
                            .as_deref()
                            .map(|t| format!(" <span class=\"muted\">({})</span>", esc(t)))
                            .unwrap_or_default()
                    ),
                    esc_opt(h.reason.as_deref()),
                    h.duration_ms.map(seconds).unwrap_or_else(|| "–".into()),
                ];
                if r.history_depth > 0 {
                    cells.push(timeline(h, r.run.info.id));
                }
                (
                    search_attr(&[
                        &h.host,
                        &h.ou,
                        h.address.as_deref().unwrap_or(""),
                        h.reason.as_deref().unwrap_or(""),
                    ]),
                    cells,
                )
            })
            .collect();
        host_table(o, &cols, rows);
        o.push_str("</section>\n");
    }
    o.push_str("</section>\n");
}

fn cleared(o: &mut String, r: &RunReport) {
    let hosts: Vec<&HostEntry> = r
        .hosts
        .iter()
        .filter(|h| h.change.as_deref() == Some("cleared"))
        .collect();
    if hosts.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "<section id=\"cleared\">\n<h2><span class=\"badge k-not_detected\">{}</span> Cleared since the previous check</h2>",
        hosts.len()
    );
    let mut cols = vec!["Host", "OU/group", "Scan time", "Report file"];
    cols.extend(recent_header(r));
    let rows = hosts
        .iter()
        .map(|h| {
            let mut c = vec![
                esc(&h.host),
                esc(&h.ou),
                esc_opt(h.scan_time.as_deref()),
                esc_opt(h.report_file.as_deref()),
            ];
            if r.history_depth > 0 {
                c.push(timeline(h, r.run.info.id));
            }
            (search_attr(&[&h.host, &h.ou]), c)
        })
        .collect();
    host_table(o, &cols, rows);
    o.push_str("</section>\n");
}

fn blind_spots(o: &mut String, r: &RunReport) {
    if r.blind_spots.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "<section id=\"blind-spots\">\n<h2><span class=\"badge k-not_started\">{}</span> Blind spots \
         <span class=\"muted\">— not successfully checked for more than {} days</span></h2>",
        r.blind_spots.len(),
        r.blind_days
    );
    let rows = r
        .blind_spots
        .iter()
        .map(|b| {
            (
                search_attr(&[&b.host]),
                vec![
                    esc(&b.host),
                    b.last_success
                        .as_deref()
                        .map(when)
                        .unwrap_or_else(|| "never".into()),
                ],
            )
        })
        .collect();
    host_table(o, &["Host", "Last successful check"], rows);
    o.push_str("</section>\n");
}

fn clean(o: &mut String, r: &RunReport) {
    let hosts: Vec<&HostEntry> = r
        .hosts
        .iter()
        .filter(|h| h.status == "not_detected")
        .collect();
    let _ = writeln!(
        o,
        "<section id=\"clean\">\n<h2><span class=\"badge k-not_detected\">{}</span> Clean</h2>",
        hosts.len()
    );
    if hosts.is_empty() {
        o.push_str("<p>No host came out clean in this run.</p>\n</section>\n");
        return;
    }
    let _ = writeln!(
        o,
        "<details class=\"print-open\"><summary>{} host(s) whose complete report says not detected</summary>",
        hosts.len()
    );
    let mut cols = vec!["Host", "OU/group", "Scan time", "Report file", "Change"];
    cols.extend(recent_header(r));
    let rows = hosts
        .iter()
        .map(|h| {
            let mut c = vec![
                esc(&h.host),
                esc(&h.ou),
                esc_opt(h.scan_time.as_deref()),
                esc_opt(h.report_file.as_deref()),
                change_badge(h.change.as_deref()).to_string(),
            ];
            if r.history_depth > 0 {
                c.push(timeline(h, r.run.info.id));
            }
            (search_attr(&[&h.host, &h.ou]), c)
        })
        .collect();
    host_table(o, &cols, rows);
    o.push_str("</details>\n</section>\n");
}

fn footer(o: &mut String, r: &RunReport) {
    o.push_str("<footer>\n<p>Timeline letters (oldest first, this run outlined): ");
    let parts: Vec<String> = CLASSES
        .iter()
        .map(|c| {
            format!(
                "<span class=\"tl\"><i class=\"k-{}\">{}</i></span> {}",
                c.key, c.code, c.label
            )
        })
        .collect();
    o.push_str(&parts.join(" · "));
    let _ = write!(
        o,
        ".</p>\n<p>Generated {} by pushscan {} from the journal (run {}). This page is self-contained: \
         it loads nothing, and every string a host supplied is shown as escaped text.</p>\n</footer>\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC"),
        env!("CARGO_PKG_VERSION"),
        r.run.info.id
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Finding, Severity};
    use crate::report::{RunPoint, RunSection};
    use crate::store::RunInfo;

    fn host(name: &str, status: &str) -> HostEntry {
        HostEntry {
            host: name.into(),
            address: Some("127.0.0.1".into()),
            transport: Some("local".into()),
            groups: vec!["lab".into()],
            status: status.into(),
            reason: Some(format!("{status} reason")),
            scan_time: None,
            report_file: None,
            report_sha256: None,
            evidence_path: None,
            checker_version: None,
            pushed: None,
            exit_code: None,
            duration_ms: Some(1500),
            change: None,
            processes: Vec::new(),
            findings: Vec::new(),
            new_findings: Vec::new(),
            checker: Some("EmoCheck".into()),
            wave: None,
            wave_partition: None,
            ou: "lab".into(),
            report_format: None,
            report_warnings: Vec::new(),
            history: Vec::new(),
            raw_report: None,
            actions: Vec::new(),
        }
    }

    fn report(hosts: Vec<HostEntry>) -> RunReport {
        let mut counts = BTreeMap::new();
        for h in &hosts {
            *counts.entry(h.status.clone()).or_insert(0) += 1;
        }
        RunReport {
            schema_version: crate::report::SCHEMA_VERSION,
            run: RunSection {
                info: RunInfo {
                    id: 7,
                    started_at: "2026-11-20T09:00:00.000Z".into(),
                    finished_at: Some("2026-11-20T09:01:02.500Z".into()),
                    status: "finished".into(),
                    operator: Some("ops".into()),
                    controller: Some("jump1".into()),
                    pushscan_version: Some("0.1.0".into()),
                    playbook: Some("/pb.yml".into()),
                    playbook_name: Some("EmoCheck <sweep>".into()),
                    inventory: Some("/inv.yml".into()),
                    limit: None,
                    forks: Some(50),
                    checker_path: Some("/emocheck.exe".into()),
                    checker_sha256: Some("ab".repeat(32)),
                    hosts_targeted: Some(hosts.len() as i64),
                    exit_code: Some(1),
                    halt_reason: None,
                    counts: Default::default(),
                    complete: true,
                },
                counts,
            },
            hosts,
            blind_spots: Vec::new(),
            blind_days: 7,
            recent_runs: Vec::new(),
            history_depth: 5,
        }
    }

    #[test]
    fn containment_actions_are_escaped() {
        let mut h = host("PC-<1>", "detected");
        h.actions.push(crate::store::ActionRecord {
            id: 1,
            containment_id: 7,
            kind: "contain".into(),
            run_id: Some(1),
            host: "PC-<1>".into(),
            action: "remove".into(),
            target: Some("C:\\<script>alert(1)</script>.exe".into()),
            command: "del /f /q \"C:\\<b>x</b>.exe\"\nif exist \"C:\\x\" (echo PRESENT)".into(),
            operator: "ops\x1b[31m".into(),
            started_at: "2026-11-26T05:00:00.000Z".into(),
            finished_at: None,
            phase: "done".into(),
            exit_code: Some(0),
            output_sha256: Some("ab".repeat(32)),
            verified: Some(true),
            message: Some("<img src=x onerror=alert(2)>".into()),
            evidence_path: None,
            recheck_run: Some(2),
        });
        let page = to_html(&report(vec![h, host("PC-2", "not_detected")]));
        assert!(page.contains("<section id=\"actions\">"));
        assert!(!page.contains("<script>alert(1)"));
        assert!(!page.contains("<b>x</b>"));
        assert!(!page.contains("<img src=x"));
        assert!(!page.contains('\x1b'));
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;.exe"));
        assert!(page.contains("del /f /q &quot;C:\\&lt;b&gt;x&lt;/b&gt;.exe&quot;<br>if exist"));
        // No actions, no section.
        let page = to_html(&report(vec![host("PC-2", "not_detected")]));
        assert!(!page.contains("id=\"actions\""));
    }

    #[test]
    fn hostile_strings_are_escaped_in_text_and_attributes() {
        let mut h = host("PC-1", "detected");
        h.findings.push(Finding::process(
            "<script>alert(1)</script>\x1b[31mRED",
            Some(31337),
            "C:\\x\" onmouseover=\"alert(2)",
            Some("'><img src=x>"),
            Severity::High,
        ));
        h.ou = "<b>OU</b>".into();
        h.raw_report = Some(RawReport {
            bytes: b"Process Name  : <script>alert(1)</script>\x1b[31mRED\r\n".to_vec(),
            total: 50,
        });
        let page = to_html(&report(vec![h]));
        assert_eq!(page.matches("<script").count(), 1, "only our own script");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;\\x1b[31mRED"));
        assert!(!page.contains('\x1b'));
        assert!(!page.contains("\" onmouseover"));
        assert!(page.contains("C:\\x&quot; onmouseover=&quot;alert(2)"));
        assert!(!page.contains("<img"));
        assert!(!page.contains("<b>OU"));
        // The filter attribute carries the escaped, lower-cased text.
        assert!(page.contains("data-search=\"pc-1 &lt;b&gt;ou&lt;/b&gt;"));
    }

    #[test]
    fn a_host_name_cannot_pose_as_another_in_the_page() {
        // "pc1" with a zero-width space, an RLO and a line separator: all three must
        // show as escapes wherever the name appears, never as the bare "pc1".
        let h = host("p\u{200b}c\u{202e}1\u{2028}", "detected");
        let page = to_html(&report(vec![h]));
        for c in ['\u{200b}', '\u{202e}', '\u{2028}'] {
            assert!(!page.contains(c), "U+{:04X} reached the page", c as u32);
        }
        assert!(page.contains("p\\u{200b}c\\u{202e}1\\u{2028}"));
    }

    #[test]
    fn csp_allows_exactly_the_inline_script() {
        let page = to_html(&report(vec![host("a", "not_detected")]));
        let csp = content_security_policy();
        assert!(csp.starts_with("default-src 'none'; style-src 'unsafe-inline'; img-src data:;"));
        assert!(page.contains(&format!("content=\"{}\"", html_escape(&csp))));
        let start = page.find("<script>").unwrap() + "<script>".len();
        let end = page[start..].find("</script>").unwrap() + start;
        let digest = Sha256::digest(&page.as_bytes()[start..end]);
        let b64 = base64::engine::general_purpose::STANDARD.encode(digest);
        assert!(csp.contains(&format!("'sha256-{b64}'")));
        for fetch in ["src=", "href=", "url(", "@import", "http:", "https:"] {
            assert!(!page.contains(fetch), "page must not reference {fetch}");
        }
    }

    #[test]
    fn sections_come_in_report_order_with_counts() {
        let mut d = host("det", "detected");
        d.change = Some("new_detection".into());
        let page = to_html(&report(vec![
            host("ok", "not_detected"),
            host("gone", "unreachable"),
            host("slow", "timeout"),
            host("silent", "no_result"),
            d,
        ]));
        let at = |s: &str| page.find(s).unwrap_or_else(|| panic!("{s} missing"));
        assert!(at("id=\"detections\"") < at("id=\"no-result\""));
        assert!(at("id=\"no-result\"") < at("id=\"not-checked\""));
        assert!(at("id=\"fail-unreachable\"") < at("id=\"fail-timeout\""));
        assert!(at("id=\"not-checked\"") < at("id=\"clean\""));
        assert!(page.contains(
            "data-class=\"detected\" title=\"the checker reported a finding\"><span class=\"n\">1</span>"
        ));
        assert!(page.contains("<span class=\"chg new\">NEW</span>"));
        assert!(page.contains("<details class=\"print-open\">"));
    }

    #[test]
    fn a_halted_run_says_why_at_the_top_escaped() {
        let mut r = report(vec![host("a", "unreachable"), host("b", "not_started")]);
        r.run.info.status = "halted".into();
        r.run.info.halt_reason = Some("wave 1 of <ou>: 1 of 1 failed".into());
        let page = to_html(&r);
        let banner = page
            .find("<p class=\"halt\" role=\"alert\">HALTED: wave 1 of &lt;ou&gt;: 1 of 1 failed");
        assert!(banner.is_some_and(|b| b < page.find("id=\"facts\"").unwrap()));
        assert!(page.contains("<dt>Halt reason</dt><dd>wave 1 of &lt;ou&gt;: 1 of 1 failed</dd>"));
        assert!(page.contains("<code>pushscan resume 7</code>"));
    }

    #[test]
    fn raw_reports_decode_cp932_lines_and_note_the_cap() {
        // A Japanese EmoCheck line: UTF-8 label, CP932 path (ソ = 0x83 0x5C).
        let mut bytes = "     イメージパス  : ".as_bytes().to_vec();
        bytes.extend_from_slice(b"C:\\Users\\\x83\x5c\x83\x74\x83\x67\\a.exe\r\n");
        let (text, cp932, lossy) = decode_report(&bytes, false);
        assert_eq!(text, "     イメージパス  : C:\\Users\\ソフト\\a.exe\r\n");
        assert!(cp932 && !lossy);
        // A cut in the middle of a UTF-8 character at the cap is dropped.
        let cut = &"検知".as_bytes()[..4];
        assert_eq!(decode_report(cut, true).0, "検");
        let (_, _, lossy) = decode_report(b"\xff\xfe\xfd\n", false);
        assert!(lossy);

        let mut h = host("PC-J", "detected");
        h.report_format = Some("ja".into());
        h.raw_report = Some(RawReport {
            bytes,
            total: 70_000,
        });
        let page = to_html(&report(vec![h]));
        assert!(page.contains(
            "<pre class=\"raw\" lang=\"ja\">     イメージパス  : C:\\Users\\ソフト\\a.exe\n</pre>"
        ));
        assert!(page.contains("Only the first 64 KiB of 70000 bytes"));
        assert!(page.contains("decoded as CP932"));
    }

    #[test]
    fn ou_chart_and_trend_are_drawn_from_the_data() {
        let mut a = host("a", "detected");
        a.ou = "Tokyo/Sales".into();
        let mut b = host("b", "not_detected");
        b.ou = "Tokyo/Sales".into();
        let c = host("c", "unreachable");
        let mut r = report(vec![a, b, c]);
        r.recent_runs = (5..=7)
            .map(|id| RunPoint {
                id,
                started_at: format!("2026-11-{:02}T09:00:00Z", 13 + id),
                status: "finished".into(),
                counts: [
                    ("detected".to_string(), id - 4),
                    ("not_detected".to_string(), 2),
                ]
                .into_iter()
                .collect(),
            })
            .collect();
        let page = to_html(&r);
        // Tokyo/Sales has 2 hosts (the widest bar: 300 units), lab 1.
        assert!(page.contains(
            "<rect class=\"seg k-detected\" x=\"196.0\" y=\"30\" width=\"150.0\" height=\"17\"><title>Tokyo/Sales: Detected 1</title></rect>"
        ));
        assert!(page.contains("<title>lab: Unreachable 1</title>"));
        assert!(page.contains("Detections over the last 3 runs"));
        assert!(page
            .contains("run 7 (2026-11-20 09:00:00 UTC): 3 detected, 2 clean, 0 not checked, of 5"));
        assert!(page.contains("class=\"bar now\""));
    }

    #[test]
    fn timeline_shows_past_classes_oldest_first() {
        let mut h = host("x", "not_detected");
        h.history = vec![
            HistoryPoint {
                run_id: 5,
                started_at: "2026-11-18T09:00:00Z".into(),
                status: "detected".into(),
            },
            HistoryPoint {
                run_id: 7,
                started_at: "2026-11-20T09:00:00Z".into(),
                status: "not_detected".into(),
            },
        ];
        let t = timeline(&h, 7);
        assert!(
            t.contains("aria-label=\"Recent results, oldest first: run 5 Detected, run 7 Clean\"")
        );
        assert!(t.find(">D</i>").unwrap() < t.find(">C</i>").unwrap());
        assert!(t.contains("class=\"k-not_detected now\""));
    }

    /// Hostile YARA-X output (ANSI and HTML in rule names and paths, invalid UTF-8, a huge
    /// line, 100k matched files) read by the real parser, then shown by every output:
    /// bounded by our caps and escaped for each medium.
    #[test]
    fn hostile_findings_are_bounded_and_escaped_in_every_output() {
        let mut out = String::new();
        out.push_str(
            "{\"path\":\"/srv/\\u001b[2J<img src=x onerror=alert(1)>.bin\",\"rules\":[{\"identifier\":\"<script>alert(1)</script>\",\"meta\":[[\"author\",\"=HYPERLINK(\\\"http://x\\\")\"]],\"strings\":[{\"identifier\":\"$a\",\"offset\":0,\"match\":\"\\u001b]0;pwned\\u0007\"}]}]}\n",
        );
        out.push_str("{\"path\":\"@SUM(1)\",\"rules\":[{\"identifier\":\"=1+1\"}]}\n");
        for i in 0..100_000 {
            out.push_str(&format!(
                "{{\"path\":\"/f/{i}\\u202e\",\"rules\":[{{\"identifier\":\"R{}\"}}]}}\n",
                i % 7
            ));
        }
        let mut bytes = out.into_bytes();
        bytes.extend(b"{\"path\":\"\xff\xfe\",\"rules\":[]}\n");
        bytes.extend(std::iter::repeat_n(b'A', 3_000_000));
        bytes.push(b'\n');
        let parsed = crate::parser::yara_x::parse(&bytes);
        assert_eq!(parsed.findings.len(), 10_000, "{:?}", parsed.warnings);
        let mut h = host("YARA-1", "detected");
        h.checker = Some("YARA-X".into());
        h.change = Some("first_check".into());
        h.new_findings = parsed.findings.iter().map(|f| f.identity.clone()).collect();
        h.findings = parsed.findings;
        h.report_warnings = parsed.warnings;
        let rep = report(vec![h.clone()]);

        // Terminal: escaped, 20 findings then a count.
        let table = crate::report::to_table(&rep);
        assert!(!table.contains('\u{1b}') && !table.contains('\u{202e}'));
        assert!(
            table.contains("\\x1b[2J<img"),
            "{}",
            &table[..table.len().min(2000)]
        );
        assert!(table.contains("... and 9980 more finding(s)"));
        assert!(table.len() < 20_000, "{}", table.len());

        // CSV per host: one cell, cut below a spreadsheet's limit, no raw control.
        let csv = crate::report::to_csv(&rep).unwrap();
        assert_eq!(csv.lines().count(), 2);
        assert!(csv.len() < 40_000, "{}", csv.len());
        assert!(
            csv.contains("more\n") || csv.contains("more\"\n"),
            "the cut is said"
        );
        assert!(!csv.contains('\u{1b}') && !csv.contains('\u{202e}'));
        // CSV per finding: every finding one row, formula cells neutralised.
        let rows = crate::report::to_csv_with(
            &rep,
            crate::report::CsvOptions {
                per_finding: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(rows.lines().count(), 1 + 10_000);
        assert!(!rows.contains('\u{1b}') && !rows.contains('\u{202e}'));
        assert!(rows.contains(",high,'=1+1,'@SUM(1),"), "{}", &rows[..2000]);
        let first = rows.lines().nth(1).unwrap();
        assert!(first.contains(",YARA-X,"), "{first}");
        assert!(
            first.contains(",yara_match,high,<script>alert(1)</script>,"),
            "{first}"
        );
        assert!(first.contains(",yes,"), "{first}");

        // JSON: verbatim (JSON-escaped), every finding.
        let json = crate::report::to_json(&rep).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["hosts"][0]["findings"].as_array().unwrap().len(), 10_000);
        assert!(!json.contains('\u{1b}'));

        // HTML: no markup from the host, bounded tables.
        let page = to_html(&rep);
        assert!(!page.contains("<script>alert"), "markup escaped");
        assert!(!page.contains("<img src=x"));
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!page.contains('\u{1b}') && !page.contains('\u{202e}'));
        assert!(page.contains(
            "<h2><span class=\"badge k-detected\">10000</span> Findings by checker</h2>"
        ));
        assert!(page.contains("9000 more not shown"));
        assert!(page.contains("9800 more finding(s) not shown"));
        assert!(page.len() < 4_000_000, "{}", page.len());

        // Alerts: mail text and webhook JSON bounded, escaped.
        let alert = crate::notify::Alert::for_run(
            crate::notify::Kind::NewDetection,
            &rep,
            vec![h],
            std::path::Path::new("/state"),
            None,
        );
        let text = alert.text();
        assert!(!text.contains('\u{1b}') && !text.contains('\u{202e}'));
        assert!(text.contains("... and 9980 more finding(s)"));
        assert!(text.len() < 20_000, "{}", text.len());
        for format in [
            crate::notify::config::Format::Generic,
            crate::notify::config::Format::Slack,
            crate::notify::config::Format::Teams,
        ] {
            let body = alert.webhook_body(format).to_string();
            assert!(body.len() < 200_000, "{}", body.len());
        }
        let generic = alert.webhook_body(crate::notify::config::Format::Generic);
        let d = &generic["detections"][0];
        assert_eq!(
            d["findings"].as_array().map(Vec::len),
            Some(100),
            "{generic}"
        );
        assert_eq!(d["findings_total"], 10_000);
    }
}
