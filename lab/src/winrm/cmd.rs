//! Windows command lines and the simulator's small `cmd.exe` subset.
//!
//! * [`split_args`] / [`split_program`]: argument splitting as the Microsoft C
//!   runtime and `CommandLineToArgvW` do it (double quotes group, `\"` is a
//!   literal quote, `2n` backslashes before a quote become `n`, `""` inside
//!   quotes is a literal quote; the program name is taken up to the next
//!   quote or blank without backslash processing).
//! * [`split_line`]: what `cmd /c` does with a line before running it: the
//!   `&`, `&&`, `||` separators, `^` escapes and the `>`, `>>`, `1>`, `2>`,
//!   `2>>`, `2>&1` redirections (`nul` discards). Pipes and `<` are refused.
//! * [`run_builtin`]: the internal commands, run on the host tree with the
//!   messages and exit codes of Windows: `echo TEXT` (`echo.`, bare `echo`),
//!   `del`/`erase [/f] [/q] [/s] PATH...` (wildcards in the last component;
//!   a directory deletes the files in it), `rmdir`/`rd [/s] [/q] PATH`,
//!   `mkdir`/`md PATH...` (with intermediate directories), `dir [/b] [PATH]`
//!   (bare format, or with `/q` the full format with the owner column), `type PATH`, `cd`/`chdir [PATH]`, `exit [/b] [N]`,
//!   `ver`, `move [/y] SRC DST`, plus `hostname`, `whoami`, `certutil
//!   -hashfile PATH [SHA256|SHA384|SHA512]` and `certutil [-f] -decode IN
//!   OUT` and `icacls PATH [/inheritance:r] [/grant:r SID:PERM...]` (owners and DACLs
//!   from [`super::acl`]) which are programs on Windows. Anything else is
//!   "'x' is not recognized as an internal or external command" (exit 1),
//!   unless it names an `.exe` of the host tree, which the shell runs.
//!
//! * What the shell ([`super::shell`]) adds around them, in the exact forms
//!   supported (what SMB execution's service wrappers use, see `crate::svcctl`):
//!   - `%VAR%` expansion when a line is read: the shell's environment, then
//!     `COMSPEC` (`C:\Windows\system32\cmd.exe`), `SYSTEMROOT`/`WINDIR`
//!     (`C:\Windows`), `SYSTEMDRIVE`, `PROGRAMDATA`, `COMPUTERNAME`, `USERNAME`,
//!     `ERRORLEVEL` (and `TEMP`/`TMP` = `C:\Windows\TEMP` in a service); an
//!     undefined `%X%` stays as written.
//!   - `cmd [/Q] [/V:ON|/V:OFF] /c LINE` (other switches ignored; `"..."` around
//!     LINE stripped as cmd does): with `/V:ON`, `!VAR!` and `!ERRORLEVEL!` are
//!     expanded when each command of LINE runs.
//!   - `start "TITLE" /b COMMAND` (only `/b`): COMMAND runs detached as a new
//!     process ([`parse_start`]: `cmd /c` in it parses its rest once, anything
//!     else is one program with its arguments), outliving the line that started it.
//!   - a batch file `X.bat`/`X.cmd` of the host tree: its lines run in turn (echo
//!     off; `rem`, `::` and `@echo off` skipped; at most 256 KiB read).
//!   - `taskkill [/F] [/T] /PID n` and `taskkill [/F] [/T] /IM name` ([`taskkill`]):
//!     a real pid of a program the host runs (the lab's process group leader),
//!     killed with its group; `tasklist /FI "PID eq n" [/NH] [/FO CSV]`
//!     ([`tasklist`]).
//!   - redirection to a UNC path of the host's own administrative share
//!     (`\\NAME\C$\x`, `\\ADDRESS\ADMIN$\x`: [`local_unc`]).
//!   - `whoami` in a service process prints `nt authority\system`.
//!
//! Output is CRLF-terminated like Windows; names and file contents are passed
//! through as bytes (UTF-8 on this machine), whatever the shell's code page.

use std::fs;
use std::io::Read;
use std::path::Path;

use sha2::Digest;

use super::paths::{HostTree, PathError, WinPath};

/// Split a full command line the way a C program's `main` sees it: the first
/// element is the program name.
pub fn split_args(cmdline: &str) -> Vec<String> {
    let (program, rest) = split_program(cmdline);
    let mut out = Vec::new();
    if let Some(p) = program {
        out.push(p);
    }
    out.extend(split_rest(rest));
    out
}

/// Take the program name off a command line (CommandLineToArgvW rules: up to
/// the closing quote, or the next blank, no backslash processing) and return
/// it with the raw remainder (leading blanks removed).
pub fn split_program(cmdline: &str) -> (Option<String>, &str) {
    let s = cmdline.trim_start_matches([' ', '\t']);
    if s.is_empty() {
        return (None, "");
    }
    if let Some(after) = s.strip_prefix('"') {
        match after.find('"') {
            Some(end) => (
                Some(after[..end].to_string()),
                after[end + 1..].trim_start_matches([' ', '\t']),
            ),
            None => (Some(after.to_string()), ""),
        }
    } else {
        match s.find([' ', '\t']) {
            Some(end) => (
                Some(s[..end].to_string()),
                s[end..].trim_start_matches([' ', '\t']),
            ),
            None => (Some(s.to_string()), ""),
        }
    }
}

/// Split arguments (everything after the program name), MSVC rules.
pub fn split_rest(rest: &str) -> Vec<String> {
    let mut args = Vec::new();
    let chars: Vec<char> = rest.chars().collect();
    let mut i = 0;
    let n = chars.len();
    loop {
        while i < n && (chars[i] == ' ' || chars[i] == '\t') {
            i += 1;
        }
        if i >= n {
            break;
        }
        let mut arg = String::new();
        let mut in_quotes = false;
        while i < n {
            let c = chars[i];
            if c == '\\' {
                let start = i;
                while i < n && chars[i] == '\\' {
                    i += 1;
                }
                let count = i - start;
                if i < n && chars[i] == '"' {
                    arg.extend(std::iter::repeat_n('\\', count / 2));
                    if count % 2 == 1 {
                        arg.push('"');
                        i += 1;
                    }
                } else {
                    arg.extend(std::iter::repeat_n('\\', count));
                }
                continue;
            }
            if c == '"' {
                if in_quotes && i + 1 < n && chars[i + 1] == '"' {
                    arg.push('"');
                    i += 2;
                    continue;
                }
                in_quotes = !in_quotes;
                i += 1;
                continue;
            }
            if !in_quotes && (c == ' ' || c == '\t') {
                break;
            }
            arg.push(c);
            i += 1;
        }
        args.push(arg);
    }
    args
}

/// How a segment of a `cmd` line is joined to the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// First segment, or after `&`: always runs.
    Always,
    /// After `&&`: runs when the previous exit code is 0.
    IfOk,
    /// After `||`: runs when the previous exit code is not 0.
    IfFail,
}

/// Where a redirected stream goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `nul`: discarded.
    Null,
    /// A file (Windows path as written), truncated or appended to.
    File {
        /// The path as written in the line.
        path: String,
        /// `>>` rather than `>`.
        append: bool,
    },
    /// `2>&1`: stderr joins stdout.
    Stdout,
}

/// One command of a `cmd` line with its redirections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// How it is joined to the previous segment.
    pub op: Op,
    /// The command text, redirections removed, `^` escapes resolved outside
    /// quotes, trimmed.
    pub text: String,
    /// Redirection of stdout.
    pub stdout: Option<Target>,
    /// Redirection of stderr.
    pub stderr: Option<Target>,
}

/// Split a `cmd` line into segments. Errors carry the message cmd would
/// print (pipes and input redirection are not part of the subset).
pub fn split_line(line: &str) -> Result<Vec<Segment>, String> {
    let chars: Vec<char> = line.chars().collect();
    let n = chars.len();
    let mut segs = Vec::new();
    let mut cur = Segment {
        op: Op::Always,
        text: String::new(),
        stdout: None,
        stderr: None,
    };
    let mut in_quotes = false;
    let mut i = 0;
    while i < n {
        let c = chars[i];
        if c == '"' {
            in_quotes = !in_quotes;
            cur.text.push(c);
            i += 1;
            continue;
        }
        if in_quotes {
            cur.text.push(c);
            i += 1;
            continue;
        }
        match c {
            '^' => {
                if i + 1 < n {
                    cur.text.push(chars[i + 1]);
                    i += 2;
                } else {
                    i += 1;
                }
            }
            '&' | '|' => {
                let double = i + 1 < n && chars[i + 1] == c;
                let op = match (c, double) {
                    ('&', true) => Op::IfOk,
                    ('&', false) => Op::Always,
                    ('|', true) => Op::IfFail,
                    _ => {
                        return Err(
                            "The pipe operator is not supported by the lab's cmd subset.".into(),
                        )
                    }
                };
                i += if double { 2 } else { 1 };
                cur.text = cur.text.trim().to_string();
                if cur.text.is_empty() {
                    let shown: String = if double {
                        [c, c].iter().collect()
                    } else {
                        c.to_string()
                    };
                    return Err(format!("{shown} was unexpected at this time."));
                }
                segs.push(std::mem::replace(
                    &mut cur,
                    Segment {
                        op,
                        text: String::new(),
                        stdout: None,
                        stderr: None,
                    },
                ));
            }
            '<' => {
                return Err("Input redirection is not supported by the lab's cmd subset.".into())
            }
            '>' => {
                // Handle digit before '>' (only when it stands alone).
                let mut handle = 1;
                if let Some(last) = cur.text.chars().last() {
                    if last == '1' || last == '2' {
                        let before = cur.text.chars().rev().nth(1);
                        if before.is_none() || before == Some(' ') || before == Some('\t') {
                            handle = if last == '2' { 2 } else { 1 };
                            cur.text.pop();
                        }
                    }
                }
                i += 1;
                let append = i < n && chars[i] == '>';
                if append {
                    i += 1;
                }
                if i < n && chars[i] == '&' {
                    // 2>&1 / 1>&2
                    i += 1;
                    let d = chars.get(i).copied();
                    i += 1;
                    match (handle, d) {
                        (2, Some('1')) => cur.stderr = Some(Target::Stdout),
                        (1, Some('1')) | (2, Some('2')) => {}
                        _ => {
                            return Err(
                                "This handle redirection is not supported by the lab's cmd subset."
                                    .into(),
                            )
                        }
                    }
                    continue;
                }
                while i < n && (chars[i] == ' ' || chars[i] == '\t') {
                    i += 1;
                }
                let mut target = String::new();
                let mut q = false;
                while i < n {
                    let t = chars[i];
                    if t == '"' {
                        q = !q;
                        i += 1;
                        continue;
                    }
                    if !q && (t == ' ' || t == '\t' || t == '&' || t == '|' || t == '>' || t == '<')
                    {
                        break;
                    }
                    target.push(t);
                    i += 1;
                }
                if target.is_empty() {
                    return Err("The syntax of the command is incorrect.".into());
                }
                let tgt = if target.eq_ignore_ascii_case("nul") {
                    Target::Null
                } else {
                    Target::File {
                        path: target,
                        append,
                    }
                };
                if handle == 2 {
                    cur.stderr = Some(tgt);
                } else {
                    cur.stdout = Some(tgt);
                }
            }
            _ => {
                cur.text.push(c);
                i += 1;
            }
        }
    }
    cur.text = cur.text.trim().to_string();
    if cur.text.is_empty() {
        if !segs.is_empty() {
            return Err("The syntax of the command is incorrect.".into());
        }
    } else {
        segs.push(cur);
    }
    Ok(segs)
}

/// What a builtin produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    /// Bytes for stdout.
    pub stdout: Vec<u8>,
    /// Bytes for stderr.
    pub stderr: Vec<u8>,
    /// Exit code.
    pub code: i32,
    /// `exit` was run: stop the line here.
    pub exit: bool,
}

impl Output {
    fn out(s: &str) -> Self {
        Output {
            stdout: s.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    fn err(s: &str, code: i32) -> Self {
        Output {
            stderr: s.as_bytes().to_vec(),
            code,
            ..Default::default()
        }
    }
}

/// Identity of the simulated machine, for `hostname`/`whoami`.
#[derive(Debug, Clone)]
pub struct Machine<'a> {
    /// Computer name.
    pub host: &'a str,
    /// Account of the session.
    pub user: &'a str,
    /// A service process: the account is `NT AUTHORITY\SYSTEM`.
    pub system: bool,
}

/// The command name of a segment (lower case, without `.exe` for the
/// programs the subset knows), as cmd resolves it.
pub fn command_name(program: &str) -> String {
    let lower = program.to_ascii_lowercase();
    let base = lower
        .rsplit(['\\', '/'])
        .next()
        .unwrap_or(&lower)
        .to_string();
    base
}

/// True when `name` (from [`command_name`]) is run by [`run_builtin`].
pub fn is_builtin(name: &str) -> bool {
    matches!(
        name,
        "echo"
            | "echo."
            | "del"
            | "erase"
            | "rmdir"
            | "rd"
            | "mkdir"
            | "md"
            | "dir"
            | "type"
            | "cd"
            | "chdir"
            | "exit"
            | "ver"
            | "hostname"
            | "hostname.exe"
            | "whoami"
            | "whoami.exe"
            | "certutil"
            | "certutil.exe"
            | "move"
            | "icacls"
            | "icacls.exe"
    )
}

/// A UNC path to an administrative share of the host itself (`\\NAME\C$\x`,
/// `\\ADDRESS\ADMIN$\x`, with the computer name, its address, `localhost` or `127.0.0.1` as
/// server) as the local path it names (`C:\x`, `C:\Windows\x`). Any other UNC path: None
/// (the lab's hosts reach no other machine).
pub fn local_unc(path: &str, host: &str, address: std::net::Ipv4Addr) -> Option<String> {
    let rest = path.strip_prefix(r"\\")?;
    let (server, rest) = rest.split_once('\\')?;
    let (share, rest) = rest.split_once('\\').unwrap_or((rest, ""));
    let own = server.eq_ignore_ascii_case(host)
        || server.eq_ignore_ascii_case("localhost")
        || server == "127.0.0.1"
        || server == address.to_string();
    if !own {
        return None;
    }
    let base = if share.eq_ignore_ascii_case("C$") {
        r"C:\"
    } else if share.eq_ignore_ascii_case("ADMIN$") {
        r"C:\Windows\"
    } else {
        return None;
    };
    Some(format!("{base}{rest}"))
}

/// `start ["title"] /b COMMAND`: the command line to run detached. Only `/b` (no new
/// window) is supported, as a service has no desktop to open one on.
pub fn parse_start(rest: &str) -> Result<String, String> {
    let mut r = rest.trim_start();
    if let Some(after) = r.strip_prefix('"') {
        let end = after
            .find('"')
            .ok_or("The system cannot find the file specified.")?;
        r = after[end + 1..].trim_start();
    }
    let mut background = false;
    while r.starts_with('/') {
        let end = r.find([' ', '\t']).unwrap_or(r.len());
        let sw = &r[1..end];
        if sw.eq_ignore_ascii_case("b") {
            background = true;
        } else {
            return Err(format!(
                "start /{sw}: the lab's cmd subset supports only `start \"\" /b COMMAND`"
            ));
        }
        r = r[end..].trim_start();
    }
    if !background || r.is_empty() {
        return Err("the lab's cmd subset supports only `start \"\" /b COMMAND`".into());
    }
    Ok(r.to_string())
}

/// `taskkill /F [/T] /PID n` and `taskkill /F [/T] /IM name`, over `procs` (pid, image
/// name) of the host; `kill` ends one process group (a lab program and what it started,
/// so `/T` changes nothing). Messages and exit codes are Windows' (128: no such process).
pub fn taskkill(rest: &str, procs: &[(i32, String)], kill: impl Fn(i32) -> bool) -> Output {
    let args = split_rest(rest);
    let mut pids: Vec<String> = Vec::new();
    let mut images: Vec<String> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].to_ascii_lowercase();
        match a.as_str() {
            "/f" | "/t" => {}
            "/pid" | "/im" => {
                let Some(v) = args.get(i + 1) else {
                    return Output::err("ERROR: Invalid syntax. Value expected for '/pid'.\r\n", 1);
                };
                if a == "/pid" {
                    pids.push(v.clone());
                } else {
                    images.push(v.clone());
                }
                i += 1;
            }
            _ => {
                return Output::err(
                    &format!("ERROR: Invalid argument/option - '{}'.\r\n", args[i]),
                    1,
                )
            }
        }
        i += 1;
    }
    if pids.is_empty() && images.is_empty() {
        return Output::err(
            "ERROR: Invalid syntax. Neither /FI nor /PID nor /IM were specified.\r\n",
            1,
        );
    }
    let mut out = Output::default();
    let mut failed = false;
    for p in &pids {
        let found = p
            .parse::<i32>()
            .ok()
            .filter(|pid| procs.iter().any(|(q, _)| q == pid));
        match found {
            Some(pid) if kill(pid) => out.stdout.extend_from_slice(
                format!("SUCCESS: The process with PID {pid} has been terminated.\r\n").as_bytes(),
            ),
            _ => {
                failed = true;
                out.stderr.extend_from_slice(
                    format!("ERROR: The process \"{p}\" not found.\r\n").as_bytes(),
                );
            }
        }
    }
    for im in &images {
        let matching: Vec<i32> = procs
            .iter()
            .filter(|(_, name)| wildcard_match(im, name))
            .map(|(pid, _)| *pid)
            .collect();
        if matching.is_empty() {
            failed = true;
            out.stderr.extend_from_slice(
                format!("ERROR: The process \"{im}\" not found.\r\n").as_bytes(),
            );
        }
        for pid in matching {
            if kill(pid) {
                out.stdout.extend_from_slice(
                    format!(
                        "SUCCESS: The process \"{im}\" with PID {pid} has been terminated.\r\n"
                    )
                    .as_bytes(),
                );
            }
        }
    }
    out.code = if failed { 128 } else { 0 };
    out
}

/// `tasklist /FI "PID eq n"` (and `/NH`, `/FO CSV`): the CSV form Windows prints, or its
/// "No tasks" line.
pub fn tasklist(rest: &str, procs: &[(i32, String)]) -> Output {
    let args = split_rest(rest);
    let mut pid: Option<i32> = None;
    let mut header = true;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].to_ascii_lowercase();
        match a.as_str() {
            "/nh" => header = false,
            "/fo" => i += 1,
            "/fi" => {
                let f = args
                    .get(i + 1)
                    .map(|s| s.to_ascii_lowercase())
                    .unwrap_or_default();
                let parts: Vec<&str> = f.split_whitespace().collect();
                match parts.as_slice() {
                    ["pid", "eq", n] => pid = n.parse().ok().or(Some(-1)),
                    _ => {
                        return Output::err(
                            "ERROR: the lab's cmd subset supports only /FI \"PID eq n\".\r\n",
                            1,
                        )
                    }
                }
                i += 1;
            }
            _ => {
                return Output::err(
                    &format!("ERROR: Invalid argument/option - '{}'.\r\n", args[i]),
                    1,
                )
            }
        }
        i += 1;
    }
    let rows: Vec<&(i32, String)> = procs
        .iter()
        .filter(|(p, _)| pid.is_none_or(|want| want == *p))
        .collect();
    if rows.is_empty() {
        return Output::out("INFO: No tasks are running which match the specified criteria.\r\n");
    }
    let mut text = String::new();
    if header {
        text.push_str("\"Image Name\",\"PID\",\"Session Name\",\"Session#\",\"Mem Usage\"\r\n");
    }
    for (p, name) in rows {
        text.push_str(&format!(
            "\"{name}\",\"{p}\",\"Services\",\"0\",\"1,024 K\"\r\n"
        ));
    }
    Output::out(&text)
}

/// cmd's message for an unknown command.
pub fn not_recognized(name: &str) -> Output {
    Output::err(
        &format!(
            "'{name}' is not recognized as an internal or external command,\r\n\
             operable program or batch file.\r\n"
        ),
        1,
    )
}

fn path_error(e: PathError) -> Output {
    Output::err(&format!("{e}\r\n"), 1)
}

fn switches_and_operands(args: &[String]) -> (Vec<String>, Vec<String>) {
    let mut sw = Vec::new();
    let mut ops = Vec::new();
    for a in args {
        if a.starts_with('/') && a.len() > 1 {
            // "/f/q" style is accepted by cmd too.
            for part in a.split('/').filter(|p| !p.is_empty()) {
                sw.push(part.to_ascii_lowercase());
            }
        } else {
            ops.push(a.clone());
        }
    }
    (sw, ops)
}

/// Case-insensitive `*` / `?` matching, as used by `del` and `dir`.
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let s: Vec<char> = name.to_lowercase().chars().collect();
    let (mut pi, mut si) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

fn has_wildcard(s: &str) -> bool {
    s.contains('*') || s.contains('?')
}

/// Split `C:\dir\*.txt` into the directory part and the pattern.
fn split_pattern(arg: &str) -> (String, String) {
    match arg.rfind(['\\', '/']) {
        Some(pos) => {
            let dir = &arg[..=pos];
            (dir.to_string(), arg[pos + 1..].to_string())
        }
        None => match arg.find(':') {
            Some(1) => (arg[..2].to_string(), arg[2..].to_string()),
            _ => (".".to_string(), arg.to_string()),
        },
    }
}

/// Entries of a real directory, sorted case-insensitively, names only.
fn sorted_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort_by_key(|n| n.to_lowercase());
    names
}

/// Run one builtin. `raw` is the text after the command name (for `echo`),
/// `args` the same split with the MSVC rules.
pub fn run_builtin(
    name: &str,
    raw: &str,
    args: &[String],
    tree: &HostTree,
    cwd: &mut WinPath,
    machine: &Machine<'_>,
) -> Output {
    match name {
        "echo" => echo(raw),
        "echo." => Output::out("\r\n"),
        "exit" => exit(args),
        "ver" => Output::out("\r\nMicrosoft Windows [Version 10.0.17763.1]\r\n"),
        "hostname" | "hostname.exe" => Output::out(&format!("{}\r\n", machine.host)),
        "whoami" | "whoami.exe" if machine.system => Output::out("nt authority\\system\r\n"),
        "whoami" | "whoami.exe" => Output::out(&format!(
            "{}\\{}\r\n",
            machine.host.to_lowercase(),
            machine.user.to_lowercase()
        )),
        "cd" | "chdir" => chdir(args, tree, cwd),
        "mkdir" | "md" => mkdir(args, tree, cwd),
        "rmdir" | "rd" => rmdir(args, tree, cwd),
        "del" | "erase" => del(args, tree, cwd),
        "dir" => dir(args, tree, cwd),
        "type" => type_file(args, tree, cwd),
        "certutil" | "certutil.exe" => certutil(args, tree, cwd),
        "move" => move_file(args, tree, cwd),
        "icacls" | "icacls.exe" => icacls(args, tree, cwd),
        other => not_recognized(other),
    }
}

fn echo(raw: &str) -> Output {
    let text = raw;
    if text.trim().is_empty() {
        return Output::out("ECHO is on.\r\n");
    }
    if text.trim().eq_ignore_ascii_case("on") || text.trim().eq_ignore_ascii_case("off") {
        return Output::default();
    }
    Output::out(&format!("{text}\r\n"))
}

fn exit(args: &[String]) -> Output {
    let mut code = 0;
    for a in args {
        if a.eq_ignore_ascii_case("/b") {
            continue;
        }
        code = a.parse::<i32>().unwrap_or(0);
        break;
    }
    Output {
        code,
        exit: true,
        ..Default::default()
    }
}

fn chdir(args: &[String], tree: &HostTree, cwd: &mut WinPath) -> Output {
    let (_, ops) = switches_and_operands(args);
    if ops.is_empty() {
        return Output::out(&format!("{}\r\n", cwd.display()));
    }
    let target = ops.join(" ");
    match tree.resolve(&target, cwd, true) {
        Ok((wp, real)) if real.is_dir() => {
            *cwd = tree.to_windows(&real).unwrap_or(wp);
            Output::default()
        }
        Ok(_) => Output::err("The system cannot find the path specified.\r\n", 1),
        Err(e) => path_error(e),
    }
}

fn mkdir(args: &[String], tree: &HostTree, cwd: &WinPath) -> Output {
    let (_, ops) = switches_and_operands(args);
    if ops.is_empty() {
        return Output::err("The syntax of the command is incorrect.\r\n", 1);
    }
    let mut out = Output::default();
    for op in ops {
        match tree.resolve(&op, cwd, true) {
            Ok((_, real)) => {
                if fs::symlink_metadata(&real).is_ok() {
                    out.stderr.extend_from_slice(
                        format!("A subdirectory or file {op} already exists.\r\n").as_bytes(),
                    );
                    out.code = 1;
                } else if fs::create_dir_all(&real).is_err() {
                    out.stderr
                        .extend_from_slice(b"The system cannot find the path specified.\r\n");
                    out.code = 1;
                }
            }
            Err(e) => {
                out.stderr.extend_from_slice(format!("{e}\r\n").as_bytes());
                out.code = 1;
            }
        }
    }
    out
}

fn rmdir(args: &[String], tree: &HostTree, cwd: &WinPath) -> Output {
    let (sw, ops) = switches_and_operands(args);
    let recursive = sw.iter().any(|s| s == "s");
    if ops.is_empty() {
        return Output::err("The syntax of the command is incorrect.\r\n", 1);
    }
    let mut out = Output::default();
    for op in ops {
        let (wp, real) = match tree.resolve(&op, cwd, false) {
            Ok(v) => v,
            Err(e) => {
                out.stderr.extend_from_slice(format!("{e}\r\n").as_bytes());
                out.code = 1;
                continue;
            }
        };
        if wp.components().is_empty() || wp == *cwd {
            out.stderr.extend_from_slice(
                b"The process cannot access the file because it is being used by another process.\r\n",
            );
            out.code = 32;
            continue;
        }
        let meta = match fs::symlink_metadata(&real) {
            Ok(m) => m,
            Err(_) => {
                out.stderr
                    .extend_from_slice(b"The system cannot find the file specified.\r\n");
                out.code = 2;
                continue;
            }
        };
        if meta.file_type().is_symlink() {
            // A directory link (junction) is removed itself, never followed.
            if fs::remove_file(&real).is_err() {
                out.stderr.extend_from_slice(b"Access is denied.\r\n");
                out.code = 5;
            }
            continue;
        }
        if !meta.is_dir() {
            out.stderr
                .extend_from_slice(b"The directory name is invalid.\r\n");
            out.code = 267;
            continue;
        }
        let result = if recursive {
            fs::remove_dir_all(&real)
        } else {
            fs::remove_dir(&real)
        };
        if result.is_err() {
            if !recursive
                && fs::read_dir(&real)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(false)
            {
                out.stderr
                    .extend_from_slice(b"The directory is not empty.\r\n");
                out.code = 145;
            } else {
                out.stderr.extend_from_slice(b"Access is denied.\r\n");
                out.code = 5;
            }
        }
    }
    out
}

fn del(args: &[String], tree: &HostTree, cwd: &WinPath) -> Output {
    let (_, ops) = switches_and_operands(args);
    if ops.is_empty() {
        return Output::err("The syntax of the command is incorrect.\r\n", 1);
    }
    let mut out = Output::default();
    for op in ops {
        let (dir_part, pattern) = split_pattern(&op);
        let targets: Vec<(WinPath, std::path::PathBuf)> = if has_wildcard(&pattern) {
            let (wdir, rdir) = match tree.resolve(&dir_part, cwd, true) {
                Ok(v) => v,
                Err(e) => {
                    out.stderr.extend_from_slice(format!("{e}\r\n").as_bytes());
                    out.code = 1;
                    continue;
                }
            };
            sorted_entries(&rdir)
                .into_iter()
                .filter(|n| wildcard_match(&pattern, n))
                .map(|n| (wdir.join(&n), rdir.join(&n)))
                .filter(|(_, r)| {
                    fs::symlink_metadata(r)
                        .map(|m| !m.is_dir())
                        .unwrap_or(false)
                })
                .collect()
        } else {
            match tree.resolve(&op, cwd, false) {
                Ok((wp, real)) => match fs::symlink_metadata(&real) {
                    Ok(m) if m.is_dir() => {
                        // `del DIR` deletes the files in it.
                        let wdir = tree.to_windows(&real).unwrap_or(wp);
                        sorted_entries(&real)
                            .into_iter()
                            .map(|n| (wdir.join(&n), real.join(&n)))
                            .filter(|(_, r)| {
                                fs::symlink_metadata(r)
                                    .map(|m| !m.is_dir())
                                    .unwrap_or(false)
                            })
                            .collect()
                    }
                    Ok(_) => vec![(wp, real)],
                    Err(_) => Vec::new(),
                },
                Err(e) => {
                    out.stderr.extend_from_slice(format!("{e}\r\n").as_bytes());
                    out.code = 1;
                    continue;
                }
            }
        };
        if targets.is_empty() {
            let shown = crate::winrm::paths::parse(&op, cwd)
                .map(|w| w.display())
                .unwrap_or(op.clone());
            out.stderr
                .extend_from_slice(format!("Could Not Find {shown}\r\n").as_bytes());
            continue;
        }
        for (wp, real) in targets {
            if fs::remove_file(&real).is_err() {
                out.stderr.extend_from_slice(
                    format!("{}\r\nAccess is denied.\r\n", wp.display()).as_bytes(),
                );
            }
        }
    }
    out
}

fn dir(args: &[String], tree: &HostTree, cwd: &WinPath) -> Output {
    let (sw, ops) = switches_and_operands(args);
    let full = sw.iter().any(|s| s == "q");
    let target = if ops.is_empty() {
        ".".to_string()
    } else {
        ops.join(" ")
    };
    let (dir_part, pattern) = split_pattern(&target);
    let mut names = Vec::new();
    let mut listed: Option<(WinPath, std::path::PathBuf)> = None;
    if has_wildcard(&pattern) {
        match tree.resolve(&dir_part, cwd, true) {
            Ok((wp, rdir)) if rdir.is_dir() => {
                listed = Some((wp, rdir.clone()));
                names = sorted_entries(&rdir)
                    .into_iter()
                    .filter(|n| wildcard_match(&pattern, n))
                    .collect();
            }
            Ok(_) => {}
            Err(e) => return path_error(e),
        }
    } else {
        match tree.resolve(&target, cwd, true) {
            Ok((wp, real)) => match fs::metadata(&real) {
                Ok(m) if m.is_dir() => {
                    listed = Some((wp, real.clone()));
                    names = sorted_entries(&real)
                }
                Ok(_) => {
                    if let Some(n) = real.file_name().and_then(|n| n.to_str()) {
                        names.push(n.to_string());
                    }
                }
                Err(_) => {}
            },
            Err(e) => return path_error(e),
        }
    }
    if names.is_empty() {
        return Output::err("File Not Found\r\n", 1);
    }
    if full {
        if let Some((wp, real)) = listed {
            return dir_full(&wp, &real, &names);
        }
    }
    let mut out = Output::default();
    for n in names {
        out.stdout.extend_from_slice(n.as_bytes());
        out.stdout.extend_from_slice(b"\r\n");
    }
    out
}

/// `dir /q` of `names` in the directory `real` (`wp`): Windows' full format, the owner column
/// from [`super::acl`], links shown as `<SYMLINKD>`/`<SYMLINK>` with their target.
fn dir_full(wp: &WinPath, real: &Path, names: &[String]) -> Output {
    let mut text = format!(
        " Volume in drive C has no label.\r\n Volume Serial Number is 5A3C-0F1E\r\n\r\n Directory of {}\r\n\r\n",
        wp.display()
    );
    let (mut files, mut dirs, mut bytes) = (0u64, 0u64, 0u64);
    for n in names {
        let p = real.join(n);
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        let when = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let owner = super::acl::owner(&p);
        let (col, tail) = if meta.file_type().is_symlink() {
            let target = fs::read_link(&p)
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default();
            dirs += 1;
            let tag = if p.is_dir() {
                "<SYMLINKD>"
            } else {
                "<SYMLINK>"
            };
            (format!("{tag:<14}"), format!(" [{target}]"))
        } else if meta.is_dir() {
            dirs += 1;
            (format!("{:<14}", "<DIR>"), String::new())
        } else {
            files += 1;
            bytes += meta.len();
            (format!("{:>14}", meta.len()), String::new())
        };
        text.push_str(&format!(
            "{}    {col} {owner:<22} {n}{tail}\r\n",
            windows_time(when)
        ));
    }
    text.push_str(&format!(
        "{files:>16} File(s) {bytes:>14} bytes\r\n{dirs:>16} Dir(s)  40,123,456,512 bytes free\r\n"
    ));
    Output::out(&text)
}

/// `MM/DD/YYYY  HH:MM AM` (en-US) of Unix seconds, UTC.
fn windows_time(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, min) = (rem / 3600, (rem % 3600) / 60);
    let (h12, ampm) = match h {
        0 => (12, "AM"),
        1..=11 => (h, "AM"),
        12 => (12, "PM"),
        _ => (h - 12, "PM"),
    };
    format!("{m:02}/{d:02}/{y}  {h12:02}:{min:02} {ampm}")
}

/// `icacls PATH` prints the DACL; with `/inheritance:r` and `/grant:r SPEC...` it replaces
/// it by the granted entries (what pushscan does to a directory it creates).
fn icacls(args: &[String], tree: &HostTree, cwd: &WinPath) -> Output {
    let (sw, ops) = switches_and_operands(args);
    let Some(path) = ops.first() else {
        return Output::err("Invalid parameter \"\"\r\n", 87);
    };
    let failed = |msg: &str| {
        let mut o = Output::err(&format!("{path}: {msg}\r\n"), 2);
        o.stdout
            .extend_from_slice(b"Successfully processed 0 files; Failed processing 1 files\r\n");
        o
    };
    let (wp, real) = match tree.resolve(path, cwd, true) {
        Ok(v) => v,
        Err(e) => return failed(&e.to_string()),
    };
    if fs::symlink_metadata(&real).is_err() {
        return failed("The system cannot find the file specified.");
    }
    let done = "Successfully processed 1 files; Failed processing 0 files\r\n";
    if sw
        .iter()
        .any(|s| s.starts_with("grant") || s.starts_with("inheritance"))
    {
        let mut aces = if sw.iter().any(|s| s == "inheritance:r") {
            Vec::new()
        } else {
            super::acl::aces(&real, wp.components())
        };
        for spec in &ops[1..] {
            match super::acl::grant_entry(spec) {
                Some(e) => aces.push(e),
                None => return Output::err(&format!("Invalid parameter \"{spec}\"\r\n"), 87),
            }
        }
        if super::acl::set(&real, None, Some(&aces)).is_err() {
            return failed("Access is denied.");
        }
        return Output::out(&format!("processed file: {path}\r\n{done}"));
    }
    let aces = super::acl::aces(&real, wp.components());
    let pad = " ".repeat(path.chars().count() + 1);
    let mut text = String::new();
    for (i, a) in aces.iter().enumerate() {
        if i == 0 {
            text.push_str(&format!("{path} {a}\r\n"));
        } else {
            text.push_str(&format!("{pad}{a}\r\n"));
        }
    }
    text.push_str(&format!("\r\n{done}"));
    Output::out(&text)
}

fn type_file(args: &[String], tree: &HostTree, cwd: &WinPath) -> Output {
    let (_, ops) = switches_and_operands(args);
    if ops.is_empty() {
        return Output::err("The syntax of the command is incorrect.\r\n", 1);
    }
    let mut out = Output::default();
    for op in ops {
        match tree.resolve(&op, cwd, true) {
            Ok((_, real)) => {
                if real.is_dir() {
                    out.stderr.extend_from_slice(b"Access is denied.\r\n");
                    out.code = 1;
                    continue;
                }
                match fs::read(&real) {
                    Ok(bytes) => out.stdout.extend_from_slice(&bytes),
                    Err(_) => {
                        out.stderr
                            .extend_from_slice(b"The system cannot find the file specified.\r\n");
                        out.code = 1;
                    }
                }
            }
            Err(e) => {
                out.stderr.extend_from_slice(format!("{e}\r\n").as_bytes());
                out.code = 1;
            }
        }
    }
    out
}

fn certutil(args: &[String], tree: &HostTree, cwd: &WinPath) -> Output {
    let verb = args
        .first()
        .map(|a| a.to_ascii_lowercase())
        .unwrap_or_default();
    // `-f` (overwrite) may come before the verb.
    let (force, args) = match verb.as_str() {
        "-f" | "/f" => (true, &args[1..]),
        _ => (false, args),
    };
    let verb = args
        .first()
        .map(|a| a.to_ascii_lowercase())
        .unwrap_or_default();
    if verb == "-decode" || verb == "/decode" {
        return certutil_decode(&args[1..], force, tree, cwd);
    }
    if verb != "-hashfile" && verb != "/hashfile" {
        return Output::out(
            "CertUtil: Unknown arg: the lab's certutil supports only -hashfile and -decode\r\n",
        )
        .with_code(-2147024809);
    }
    let Some(file) = args.get(1) else {
        return Output::out(
            "CertUtil: -hashfile command FAILED: 0x80070057 (WIN32: 87 ERROR_INVALID_PARAMETER)\r\n\
             CertUtil: The parameter is incorrect.\r\n",
        )
        .with_code(-2147024809);
    };
    let alg = args
        .get(2)
        .map(|a| a.to_ascii_uppercase())
        .unwrap_or_else(|| "SHA1".into());
    let not_found = || {
        Output::out(
            "CertUtil: -hashfile command FAILED: 0x80070002 (WIN32: 2 ERROR_FILE_NOT_FOUND)\r\n\
             CertUtil: The system cannot find the file specified.\r\n",
        )
        .with_code(-2147024894)
    };
    let real =
        match tree.resolve(file, cwd, true) {
            Ok((_, real)) => real,
            Err(PathError::Denied) => return Output::out(
                "CertUtil: -hashfile command FAILED: 0x80070005 (WIN32: 5 ERROR_ACCESS_DENIED)\r\n\
                 CertUtil: Access is denied.\r\n",
            )
            .with_code(-2147024891),
            Err(PathError::Invalid) => return not_found(),
        };
    let Ok(mut f) = fs::File::open(&real) else {
        return not_found();
    };
    if real.is_dir() {
        return not_found();
    }
    let hex =
        match alg.as_str() {
            "SHA256" => hash_file::<sha2::Sha256>(&mut f),
            "SHA384" => hash_file::<sha2::Sha384>(&mut f),
            "SHA512" => hash_file::<sha2::Sha512>(&mut f),
            _ => return Output::out(
                "CertUtil: -hashfile command FAILED: 0x80090008 (-2146893816 NTE_BAD_ALGID)\r\n\
                 CertUtil: Invalid algorithm specified.\r\n",
            )
            .with_code(-2146893816),
        };
    match hex {
        Some(hex) => Output::out(&format!(
            "{alg} hash of {file}:\r\n{hex}\r\nCertUtil: -hashfile command completed successfully.\r\n"
        )),
        None => not_found(),
    }
}

/// `certutil [-f] -decode IN OUT`: base64 text (whitespace and line breaks
/// ignored, optional `-----BEGIN ...-----` armour) to bytes. Without `-f` an
/// existing OUT is refused, as on Windows.
fn certutil_decode(args: &[String], force: bool, tree: &HostTree, cwd: &WinPath) -> Output {
    use base64::Engine as _;
    let failed = |code: i32, what: &str| {
        Output::out(&format!("CertUtil: -decode command FAILED: {what}\r\n")).with_code(code)
    };
    let (Some(input), Some(output)) = (args.first(), args.get(1)) else {
        return failed(
            -2147024809,
            "0x80070057 (WIN32: 87 ERROR_INVALID_PARAMETER)",
        );
    };
    let (Ok((_, rin)), Ok((_, rout))) = (
        tree.resolve(input, cwd, true),
        tree.resolve(output, cwd, true),
    ) else {
        return failed(-2147024891, "0x80070005 (WIN32: 5 ERROR_ACCESS_DENIED)");
    };
    let Ok(text) = fs::read(&rin) else {
        return failed(-2147024894, "0x80070002 (WIN32: 2 ERROR_FILE_NOT_FOUND)");
    };
    if rout.exists() && !force {
        return failed(-2147024816, "0x80070050 (WIN32: 80 ERROR_FILE_EXISTS)");
    }
    let body: Vec<u8> = String::from_utf8_lossy(&text)
        .lines()
        .filter(|l| !l.trim_start().starts_with("-----"))
        .flat_map(|l| l.bytes())
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(&body) else {
        return failed(-2146885623, "0x80092009 (-2146885623 CRYPT_E_ASN1_BADTAG)");
    };
    if fs::write(&rout, &bytes).is_err() {
        return failed(-2147024891, "0x80070005 (WIN32: 5 ERROR_ACCESS_DENIED)");
    }
    Output::out(&format!(
        "Input Length = {}\r\nOutput Length = {}\r\nCertUtil: -decode command completed successfully.\r\n",
        text.len(),
        bytes.len()
    ))
}

/// `move [/y] SRC DST` for one file (DST a file name or a directory).
fn move_file(args: &[String], tree: &HostTree, cwd: &WinPath) -> Output {
    let (sw, ops) = switches_and_operands(args);
    if ops.len() != 2 {
        return Output::err("The syntax of the command is incorrect.\r\n", 1);
    }
    let (Ok((_, src)), Ok((_, mut dst))) = (
        tree.resolve(&ops[0], cwd, false),
        tree.resolve(&ops[1], cwd, true),
    ) else {
        return Output::err("Access is denied.\r\n", 1);
    };
    if !src.is_file() {
        return Output::err("The system cannot find the file specified.\r\n", 1);
    }
    if dst.is_dir() {
        if let Some(name) = src.file_name() {
            dst = dst.join(name);
        }
    }
    if dst.exists() && !sw.iter().any(|s| s == "y") {
        // Windows would prompt; with no console it answers no.
        return Output::out("        0 file(s) moved.\r\n").with_code(1);
    }
    match fs::rename(&src, &dst) {
        Ok(()) => Output::out("        1 file(s) moved.\r\n"),
        Err(_) => Output::err("Access is denied.\r\n", 1),
    }
}

fn hash_file<D: Digest>(f: &mut fs::File) -> Option<String> {
    let mut h = D::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Some(
        h.finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    )
}

impl Output {
    fn with_code(mut self, code: i32) -> Self {
        self.code = code;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn msvc_argument_rules() {
        assert_eq!(split_args(r#"a.exe b c"#), s(&["a.exe", "b", "c"]));
        assert_eq!(
            split_args(r#""C:\Program Files\x.exe" "a b" c"#),
            s(&[r"C:\Program Files\x.exe", "a b", "c"])
        );
        assert_eq!(split_args(r#"p a\\\"b c"#), s(&["p", r#"a\"b"#, "c"]));
        assert_eq!(split_args(r#"p "a\\" b"#), s(&["p", r"a\", "b"]));
        assert_eq!(split_args(r#"p a\\b"#), s(&["p", r"a\\b"]));
        assert_eq!(split_args(r#"p "a""b" c"#), s(&["p", r#"a"b"#, "c"]));
        assert_eq!(split_args(r#"p "" x"#), s(&["p", "", "x"]));
        assert_eq!(
            split_args(r#"C:\dir\a.exe /output C:\Temp\"#),
            s(&[r"C:\dir\a.exe", "/output", r"C:\Temp\"])
        );
        assert_eq!(split_args("  p\t q  "), s(&["p", "q"]));
        assert_eq!(split_args(""), Vec::<String>::new());
        assert_eq!(split_args(r#""unterminated"#), s(&["unterminated"]));
        assert_eq!(
            split_program(r#"cmd /c echo "x""#),
            (Some("cmd".into()), r#"/c echo "x""#)
        );
    }

    #[test]
    fn cmd_line_splitting() {
        let segs = split_line(r#"echo a & echo "b & c" && del x || echo ^& done"#).unwrap();
        assert_eq!(segs.len(), 4);
        assert_eq!(segs[0].text, "echo a");
        assert_eq!(segs[1].text, r#"echo "b & c""#);
        assert_eq!(segs[2].op, Op::IfOk);
        assert_eq!(segs[3].op, Op::IfFail);
        assert_eq!(segs[3].text, "echo & done");

        let segs = split_line(r#"echo hi > "C:\a b.txt" 2>&1"#).unwrap();
        assert_eq!(segs[0].text, "echo hi");
        assert_eq!(
            segs[0].stdout,
            Some(Target::File {
                path: r"C:\a b.txt".into(),
                append: false
            })
        );
        assert_eq!(segs[0].stderr, Some(Target::Stdout));
        let segs = split_line(r"dir x 2>nul >>C:\log").unwrap();
        assert_eq!(segs[0].text, "dir x");
        assert_eq!(segs[0].stderr, Some(Target::Null));
        assert_eq!(
            segs[0].stdout,
            Some(Target::File {
                path: r"C:\log".into(),
                append: true
            })
        );
        assert!(split_line("dir | more").is_err());
        assert!(split_line("sort < x").is_err());
        assert!(split_line("& echo").is_err());
        assert!(split_line("echo >").is_err());
        assert!(split_line("echo a &&").is_err());
        assert_eq!(split_line("").unwrap(), vec![]);
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*.txt", "A.TXT"));
        assert!(wildcard_match("pc_*_emocheck.*", "PC_2025_emocheck.json"));
        assert!(wildcard_match("a?c", "abc"));
        assert!(!wildcard_match("a?c", "ac"));
        assert!(wildcard_match("*", ""));
        assert!(!wildcard_match("*.txt", "a.json"));
    }

    fn setup() -> (tempfile::TempDir, HostTree) {
        let dir = tempfile::tempdir().unwrap();
        let tree = HostTree::new(dir.path()).unwrap();
        fs::create_dir_all(tree.drive().join("Windows/Temp")).unwrap();
        (dir, tree)
    }

    fn run(tree: &HostTree, cwd: &mut WinPath, line: &str) -> Output {
        let (program, rest) = split_program(line);
        let name = command_name(&program.unwrap());
        let args = split_rest(rest);
        let m = Machine {
            host: "PC-1",
            user: "lab",
            system: false,
        };
        run_builtin(&name, rest, &args, tree, cwd, &m)
    }

    #[test]
    fn icacls_and_dir_q_show_owners_and_dacls() {
        let (_d, tree) = setup();
        let mut cwd = WinPath::root();
        assert_eq!(run(&tree, &mut cwd, r"mkdir C:\Windows\Temp\p").code, 0);
        // A folder made in Temp inherits Users' create rights.
        let o = run(&tree, &mut cwd, r"icacls C:\Windows\Temp\p");
        let text = String::from_utf8(o.stdout).unwrap();
        assert!(
            text.starts_with("C:\\Windows\\Temp\\p NT AUTHORITY\\SYSTEM:(I)(OI)(CI)(F)\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\n                  BUILTIN\\Users:(I)(CI)(S,WD,AD,X)\r\n"));
        assert!(text.ends_with("\r\nSuccessfully processed 1 files; Failed processing 0 files\r\n"));
        let o = run(
            &tree,
            &mut cwd,
            r#"icacls "C:\Windows\Temp\p" /inheritance:r /grant:r "*S-1-5-18:(OI)(CI)F" "*S-1-5-32-544:(OI)(CI)F""#,
        );
        assert_eq!(o.code, 0);
        let text =
            String::from_utf8(run(&tree, &mut cwd, r"icacls C:\Windows\Temp\p").stdout).unwrap();
        assert_eq!(
            text,
            "C:\\Windows\\Temp\\p NT AUTHORITY\\SYSTEM:(OI)(CI)(F)\r\n                  \
             BUILTIN\\Administrators:(OI)(CI)(F)\r\n\r\nSuccessfully processed 1 files; Failed processing 0 files\r\n"
        );
        let o = run(&tree, &mut cwd, r"icacls C:\Windows\Temp\nothing");
        assert_eq!(o.code, 2);
        // dir /q: the owner column, links as <SYMLINKD>.
        let p = tree.drive().join("Windows/Temp/p");
        super::super::acl::set(&p, Some(r"WS01\eve"), None).unwrap();
        std::os::unix::fs::symlink("p", tree.drive().join("Windows/Temp/q")).unwrap();
        let text =
            String::from_utf8(run(&tree, &mut cwd, r"dir /a /q C:\Windows\Temp\*").stdout).unwrap();
        assert!(
            text.contains(" Directory of C:\\Windows\\Temp\r\n"),
            "{text}"
        );
        assert!(
            text.contains(r"    <DIR>          WS01\eve               p"),
            "{text}"
        );
        assert!(
            text.contains(r"    <SYMLINKD>     BUILTIN\Administrators q [p]"),
            "{text}"
        );
    }

    #[test]
    fn certutil_decode_and_move() {
        let (_d, tree) = setup();
        let mut cwd = WinPath::root();
        let dir = tree.drive().join("Windows/Temp");
        // Two lines of base64 ("hello, " + "world"), as echo >> writes them.
        fs::write(dir.join("x.b64"), "aGVsbG8s\r\nIHdvcmxk\r\n").unwrap();
        let o = run(
            &tree,
            &mut cwd,
            r"certutil -f -decode C:\Windows\Temp\x.b64 C:\Windows\Temp\x.tmp",
        );
        assert_eq!(o.code, 0, "{}", String::from_utf8_lossy(&o.stdout));
        assert_eq!(fs::read(dir.join("x.tmp")).unwrap(), b"hello, world");
        // Without -f an existing output is refused, as on Windows.
        let o = run(
            &tree,
            &mut cwd,
            r"certutil -decode C:\Windows\Temp\x.b64 C:\Windows\Temp\x.tmp",
        );
        assert_ne!(o.code, 0);
        fs::write(dir.join("bad.b64"), "!!!!").unwrap();
        let o = run(
            &tree,
            &mut cwd,
            r"certutil -f -decode C:\Windows\Temp\bad.b64 C:\Windows\Temp\bad.out",
        );
        assert_ne!(o.code, 0);
        // move /y replaces; without /y an existing target is kept.
        fs::write(dir.join("old.exe"), b"old").unwrap();
        let o = run(
            &tree,
            &mut cwd,
            r"move C:\Windows\Temp\x.tmp C:\Windows\Temp\old.exe",
        );
        assert_eq!(o.code, 1);
        assert_eq!(fs::read(dir.join("old.exe")).unwrap(), b"old");
        let o = run(
            &tree,
            &mut cwd,
            r"move /y C:\Windows\Temp\x.tmp C:\Windows\Temp\old.exe",
        );
        assert_eq!(o.code, 0);
        assert_eq!(fs::read(dir.join("old.exe")).unwrap(), b"hello, world");
        assert!(!dir.join("x.tmp").exists());
    }

    #[test]
    fn builtins_on_the_tree() {
        let (_d, tree) = setup();
        let mut cwd = WinPath::root();
        assert_eq!(run(&tree, &mut cwd, "echo hello").stdout, b"hello\r\n");
        assert_eq!(run(&tree, &mut cwd, "echo").stdout, b"ECHO is on.\r\n");
        assert_eq!(run(&tree, &mut cwd, r#"echo "q""#).stdout, b"\"q\"\r\n");
        let o = run(&tree, &mut cwd, "exit /b 7");
        assert_eq!((o.code, o.exit), (7, true));
        assert_eq!(run(&tree, &mut cwd, "hostname").stdout, b"PC-1\r\n");

        assert_eq!(run(&tree, &mut cwd, r"mkdir C:\Windows\Temp\a\b").code, 0);
        assert!(tree.drive().join("Windows/Temp/a/b").is_dir());
        let o = run(&tree, &mut cwd, r"md c:\windows\temp\A");
        assert_eq!(o.code, 1);
        assert_eq!(
            o.stderr,
            b"A subdirectory or file c:\\windows\\temp\\A already exists.\r\n"
        );

        fs::write(tree.drive().join("Windows/Temp/a/x.txt"), b"content").unwrap();
        fs::write(tree.drive().join("Windows/Temp/a/y.log"), b"log").unwrap();
        assert_eq!(
            run(&tree, &mut cwd, r"dir /b C:\Windows\Temp\a").stdout,
            b"b\r\nx.txt\r\ny.log\r\n"
        );
        assert_eq!(
            run(&tree, &mut cwd, r"dir /b C:\Windows\Temp\a\*.TXT").stdout,
            b"x.txt\r\n"
        );
        let o = run(&tree, &mut cwd, r"dir /b C:\Windows\Temp\a\*.zip");
        assert_eq!(
            (o.code, o.stderr.as_slice()),
            (1, &b"File Not Found\r\n"[..])
        );
        assert_eq!(
            run(&tree, &mut cwd, r"type C:\WINDOWS\temp\a\X.txt").stdout,
            b"content"
        );
        let o = run(&tree, &mut cwd, r"type C:\nope.txt");
        assert_eq!(o.code, 1);

        assert_eq!(run(&tree, &mut cwd, r"cd C:\Windows\Temp").code, 0);
        assert_eq!(cwd.display(), r"C:\Windows\Temp");
        assert_eq!(run(&tree, &mut cwd, "cd").stdout, b"C:\\Windows\\Temp\r\n");
        let o = run(&tree, &mut cwd, r"certutil -hashfile a\x.txt SHA256");
        assert_eq!(
            String::from_utf8(o.stdout).unwrap(),
            "SHA256 hash of a\\x.txt:\r\n\
             ed7002b439e9ac845f22357d822bac1444730fbdb6016d3ec9432297b9ec9f73\r\n\
             CertUtil: -hashfile command completed successfully.\r\n"
        );
        assert_eq!(
            run(&tree, &mut cwd, r"certutil -hashfile a\nope SHA256").code,
            -2147024894
        );

        let o = run(&tree, &mut cwd, r"del /f /q a\*.log");
        assert_eq!(o, Output::default());
        assert!(!tree.drive().join("Windows/Temp/a/y.log").exists());
        let o = run(&tree, &mut cwd, r"del /q a\nothing.txt");
        assert_eq!(
            o.stderr,
            b"Could Not Find C:\\Windows\\Temp\\a\\nothing.txt\r\n"
        );
        let o = run(&tree, &mut cwd, r"rmdir /q a");
        assert_eq!(o.code, 145);
        assert_eq!(run(&tree, &mut cwd, r"rmdir /s /q a").code, 0);
        assert!(!tree.drive().join("Windows/Temp/a").exists());
        assert_eq!(run(&tree, &mut cwd, r"rmdir /s /q a").code, 2);
        assert_eq!(run(&tree, &mut cwd, "whoami").stdout, b"pc-1\\lab\r\n");
    }

    #[test]
    fn service_wrapper_forms() {
        let ip: std::net::Ipv4Addr = "127.0.10.7".parse().unwrap();
        assert_eq!(
            local_unc(r"\\PC-1\C$\__output", "pc-1", ip).as_deref(),
            Some(r"C:\__output")
        );
        assert_eq!(
            local_unc(r"\\127.0.10.7\ADMIN$\Temp\x", "PC-1", ip).as_deref(),
            Some(r"C:\Windows\Temp\x")
        );
        assert_eq!(local_unc(r"\\OTHER\C$\x", "PC-1", ip), None);
        assert_eq!(local_unc(r"\\PC-1\D$\x", "PC-1", ip), None);
        assert_eq!(local_unc(r"C:\x", "PC-1", ip), None);

        assert_eq!(
            parse_start(r#""" /b C:\w\cmd.exe /Q /c "a & b""#).as_deref(),
            Ok(r#"C:\w\cmd.exe /Q /c "a & b""#)
        );
        assert!(parse_start("notepad.exe").is_err());
        assert!(parse_start(r#""" /min x.exe"#).is_err());

        let procs = vec![
            (4242, "checker.exe".to_string()),
            (77, "other.exe".to_string()),
        ];
        let killed = std::cell::RefCell::new(Vec::new());
        let kill = |pid| {
            killed.borrow_mut().push(pid);
            true
        };
        let out = taskkill("/F /T /PID 4242", &procs, kill);
        assert_eq!(out.code, 0);
        assert!(String::from_utf8_lossy(&out.stdout).contains("PID 4242 has been terminated"));
        let out = taskkill("/F /PID 9", &procs, kill);
        assert_eq!(out.code, 128);
        assert!(String::from_utf8_lossy(&out.stderr).contains("\"9\" not found"));
        let out = taskkill("/F /IM checker.exe", &procs, kill);
        assert_eq!(out.code, 0);
        assert_eq!(*killed.borrow(), [4242, 4242]);
        assert_eq!(taskkill("/F", &procs, kill).code, 1);

        let out = tasklist(r#"/FI "PID eq 77" /NH /FO CSV"#, &procs);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "\"other.exe\",\"77\",\"Services\",\"0\",\"1,024 K\"\r\n"
        );
        let out = tasklist(r#"/FI "PID eq 5""#, &procs);
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("INFO: No tasks"));
    }

    #[test]
    fn builtins_refuse_escapes() {
        let (_d, tree) = setup();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("keep"), b"k").unwrap();
        std::os::unix::fs::symlink(outside.path(), tree.drive().join("link")).unwrap();
        let mut cwd = WinPath::root();
        for line in [
            r"type C:\..\..\etc\passwd",
            r"type D:\x",
            r"type \\srv\share\x",
            r"type C:\link\keep",
            r"del /f /q C:\link\keep",
            r"del /q C:\link\*",
            r"mkdir C:\link\new",
            r"dir /b C:\link",
            r"certutil -hashfile C:\link\keep SHA256",
        ] {
            let o = run(&tree, &mut cwd, line);
            assert_ne!(o.code, 0, "{line}");
            assert!(
                String::from_utf8_lossy(&o.stderr).contains("Access is denied")
                    || String::from_utf8_lossy(&o.stdout).contains("Access is denied"),
                "{line}: {o:?}"
            );
        }
        // rmdir /s on the link removes the link, never what it points to.
        assert_eq!(run(&tree, &mut cwd, r"rmdir /s /q C:\link").code, 0);
        assert!(outside.path().join("keep").exists());
        assert!(!tree.drive().join("link").exists());
        assert_ne!(run(&tree, &mut cwd, r"rmdir /s /q C:\").code, 0);
        assert!(tree.drive().exists());
        assert_eq!(run(&tree, &mut cwd, "bogus").code, 1);
    }
}
