//! The EmoCheck stand-in and the report formats it writes.
//!
//! The stand-in, `playbooks/checkers/emocheck-sim.sh`, ships with the playbooks (the README's
//! local example runs it) and is what every SSH test, the sweep benchmark and the lab's
//! simulated Windows hosts run. This module names it once and holds the one Rust copy of
//! EmoCheck v2.4.0's report formats: the label tables of its three languages and the exact
//! bytes of a text and a JSON report, against which the tests check the stand-in.

/// The stand-in's path (absolute, in this checkout).
pub const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../playbooks/checkers/emocheck-sim.sh"
);

/// The stand-in's bytes (built into the lab, which writes it into each host's tree).
pub const SCRIPT_BYTES: &[u8] = include_bytes!("../../../playbooks/checkers/emocheck-sim.sh");

/// The stand-in's path relative to a shipped playbook in `playbooks/` (how they pin it).
pub const PLAYBOOK_RELATIVE: &str = "checkers/emocheck-sim.sh";

/// EmoCheck's version the stand-in writes.
pub const VERSION: &str = "2.4.0";

/// The 52-underscore delimiter, always followed by an empty line.
pub const DELIM: &str = "____________________________________________________";

/// One detected process: name, PID, image path, registry key.
pub type Process<'a> = [&'a str; 4];

/// The stand-in's first default process (`detected`, `detected2`, `crash`).
pub const P1: Process<'static> = [
    "wfsrvhost.exe",
    "4312",
    r"C:\Users\tanaka\AppData\Local\wfsrvhost\wfsrvhost.exe",
    r"HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Run\wfsrvhost",
];

/// The stand-in's second default process (`detected2`).
pub const P2: Process<'static> = [
    "msrdpsvc.exe",
    "2208",
    r"C:\Users\tanaka\AppData\Roaming\msrdpsvc\msrdpsvc.exe",
    r"HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Run\msrdpsvc",
];

/// The labels of a text report, trailing spaces included.
#[derive(Clone, Copy, Debug)]
pub struct Labels {
    pub time: &'static str,
    pub result: &'static str,
    pub detected: &'static str,
    pub clean: &'static str,
    pub block: &'static str,
    pub name: &'static str,
    pub pid: &'static str,
    pub path: &'static str,
    pub key: &'static str,
    pub advice: &'static str,
}

pub const EN: Labels = Labels {
    time: "Scan time: ",
    result: "[Result] ",
    detected: "Detected Emotet process.",
    clean: "Emotet was not detected.",
    block: "[Emotet Process] ",
    name: "     Process Name  : ",
    pid: "     Process ID    : ",
    path: "     Image Path    : ",
    key: "     Registry Key  : ",
    advice: "Please remove or isolate the suspicious execution file.",
};

pub const JA: Labels = Labels {
    time: "プログラム実行時刻: ",
    result: "[結果]",
    detected: "Emotetを検知しました。",
    clean: "検知しませんでした。",
    block: "[詳細]",
    name: "     プロセス名    : ",
    pid: "     プロセスID    : ",
    path: "     イメージパス  : ",
    key: "     レジストリキー: ",
    advice: "イメージパスの実行ファイルを隔離/削除してください。",
};

pub const FR: Labels = Labels {
    time: "Temps d'éxécution: ",
    result: "[Résultat] ",
    detected: "Emotet détecté.",
    clean: "Emotet n'a pas été détecté.",
    block: "[Processus Emotet] ",
    name: "     Nom du processus: ",
    pid: "     PID             : ",
    path: "     Emplacement     : ",
    key: "     Clé de registre : ",
    advice: "Veuillez supprimer le(s) fichier(s) détecté(s).",
};

/// Each line followed by CRLF.
pub fn crlf(lines: &[String]) -> Vec<u8> {
    lines
        .iter()
        .flat_map(|l| format!("{l}\r\n").into_bytes())
        .collect()
}

/// A text report in language `l` scanned at `time` (`yyyy-mm-dd hh:mm:ss`) that found
/// `procs` (none: "not detected").
pub fn text_report(l: &Labels, time: &str, procs: &[Process<'_>]) -> Vec<u8> {
    let mut lines = vec![
        format!("[EmoCheck v{VERSION}]"),
        format!("{}{time}", l.time),
        DELIM.to_string(),
        String::new(),
    ];
    if procs.is_empty() {
        lines.push(l.result.to_string());
        lines.push(l.clean.to_string());
        return crlf(&lines);
    }
    lines.extend([l.result.to_string(), l.detected.to_string(), String::new()]);
    for p in procs {
        lines.push(l.block.to_string());
        lines.push(format!("{}{}", l.name, p[0]));
        lines.push(format!("{}{}", l.pid, p[1]));
        lines.push(format!("{}{}", l.path, p[2]));
        lines.push(format!("{}{}", l.key, p[3]));
    }
    lines.extend([DELIM.to_string(), String::new(), l.advice.to_string()]);
    crlf(&lines)
}

/// A JSON report of host `host`, written by hand as EmoCheck does (only the backslashes of
/// image path and registry key doubled).
pub fn json_report(host: &str, time: &str, procs: &[Process<'_>]) -> Vec<u8> {
    let mut lines = vec![
        "{".to_string(),
        format!("  \"scan_time\":\"{time}\","),
        format!("  \"hostname\":\"{host}\","),
        format!("  \"emocheck_version\":\"{VERSION}\","),
    ];
    if procs.is_empty() {
        lines.push("  \"is_infected\":\"no\"".to_string());
        lines.push("}".to_string());
        return crlf(&lines);
    }
    lines.push("  \"is_infected\":\"yes\",".to_string());
    lines.push("  \"emotet_processes\":[".to_string());
    for (i, p) in procs.iter().enumerate() {
        lines.push("    {".to_string());
        lines.push(format!("      \"process_name\":\"{}\",", p[0]));
        lines.push(format!("      \"process_id\":\"{}\",", p[1]));
        lines.push(format!(
            "      \"image_path\":\"{}\",",
            p[2].replace('\\', r"\\")
        ));
        lines.push(format!(
            "      \"registry_key\":\"{}\"",
            p[3].replace('\\', r"\\")
        ));
        lines.push(
            if i + 1 == procs.len() {
                "    }"
            } else {
                "    },"
            }
            .to_string(),
        );
    }
    lines.push("  ]".to_string());
    lines.push("}".to_string());
    crlf(&lines)
}

/// `<host>_<yyyymmddhhmmss>_emocheck.<ext>` -> the 14 digits.
pub fn report_stamp(name: &str, host: &str, ext: &str) -> Option<String> {
    let stamp = name
        .strip_prefix(host)?
        .strip_prefix('_')?
        .strip_suffix(&format!("_emocheck.{ext}"))?;
    (stamp.len() == 14 && stamp.bytes().all(|b| b.is_ascii_digit())).then(|| stamp.to_string())
}

/// The 14 digits of a report name as the scan time a report carries
/// (`yyyy-mm-dd hh:mm:ss`).
pub fn scan_time(stamp: &str) -> String {
    format!(
        "{}-{}-{} {}:{}:{}",
        &stamp[0..4],
        &stamp[4..6],
        &stamp[6..8],
        &stamp[8..10],
        &stamp[10..12],
        &stamp[12..14]
    )
}
