//! The INI inventory format: `[group]` sections of host lines,
//! `[group:vars]` and `[group:children]`, hosts before any section going to
//! `ungrouped`.
//!
//! Values are typed the way Ansible's `ini` plugin types them, which is
//! subtle enough to spell out. Host lines are first split like a POSIX
//! shell (`shlex.split`, so one layer of quotes is consumed and `#` starts
//! a comment), then each value goes through Python's `ast.literal_eval`:
//! `port=22` and `port="22"` are both the integer 22, `x="'22'"` is the
//! string "22", `flag=True` is a boolean, `flag=true` is the string "true".
//! `:vars` lines are not shell-split: the text after `=` goes straight to
//! `literal_eval`, so there `x="22"` is the string "22" and `x=22` is 22.
//! Anything `literal_eval` rejects stays a plain string. [`py_literal`] is a
//! small, bounded re-implementation of the literal subset involved.
//!
//! Groups follow the plugin's bookkeeping too: a group named in
//! `[parent:children]` joins its parent only once a section declares it
//! (so a parent's children are in the order they were declared), and a
//! child never declared, or a `[g:vars]` group never declared by `[g]` or
//! `[g:children]`, is an error, as in Ansible.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Map, Number, Value};

use super::{Builder, Inventory, InventoryError, Loc, VarDef};

enum State {
    Hosts,
    Vars,
    Children,
}

pub(super) fn parse(text: &str, source: &Path) -> Result<Inventory, InventoryError> {
    let mut b = Builder::new(source);
    read_into(&mut b, text)?;
    b.finish()
}

/// A group used before any section declared it (Ansible's
/// `pending_declarations`).
struct Pending {
    /// Where it was first used.
    loc: Loc,
    /// `[g:vars]` (true) or named as a child (false).
    vars: bool,
    /// Groups whose `:children` named it, with where.
    parents: Vec<(String, Loc)>,
}

/// Add an INI inventory's groups, hosts and variables to `b`.
pub(super) fn read_into(b: &mut Builder, text: &str) -> Result<(), InventoryError> {
    let mut group = String::from("ungrouped");
    let mut state = State::Hosts;
    let mut pending: HashMap<String, Pending> = HashMap::new();
    // Names in `pending`, in the order they were added (the first one left
    // over is the error Ansible reports).
    let mut pending_order: Vec<String> = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let lineno = idx + 1;
        let raw = if idx == 0 {
            raw.trim_start_matches('\u{feff}')
        } else {
            raw
        };
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        // Column (1-based, in characters) of the first non-blank character.
        let indent = raw.chars().take_while(|c| c.is_whitespace()).count() + 1;

        if line.starts_with('[') {
            match parse_section(line) {
                Ok(Some(Section {
                    name,
                    kind,
                    kind_col,
                })) => {
                    let section_loc = Loc::new(lineno, indent);
                    state = match kind {
                        None => State::Hosts,
                        Some("vars") => State::Vars,
                        Some("children") => State::Children,
                        Some(other) => {
                            return Err(b.err(
                                Some(Loc::new(lineno, indent + kind_col)),
                                format!(
                                    "section [{name}:{other}] has unknown type `{other}`: \
                                     expected [{name}], [{name}:vars] or [{name}:children]"
                                ),
                            ))
                        }
                    };
                    let is_vars = matches!(state, State::Vars);
                    if !b.has_group(name) {
                        if is_vars && !pending.contains_key(name) {
                            pending.insert(
                                name.to_string(),
                                Pending {
                                    loc: section_loc,
                                    vars: true,
                                    parents: Vec::new(),
                                },
                            );
                            pending_order.push(name.to_string());
                        }
                        b.add_group(name);
                    }
                    if !is_vars {
                        declared(b, name, &mut pending)?;
                    }
                    group = name.to_string();
                    continue;
                }
                Ok(None) => {
                    // Not a section; `[v6]:port host` lines fall through.
                }
                Err(col) => {
                    return Err(b.err(
                        Some(Loc::new(lineno, indent + col)),
                        format!(
                            "invalid section header {line:?}: expected [group], [group:vars] \
                             or [group:children] with no spaces in the name"
                        ),
                    ))
                }
            }
        }

        match state {
            State::Hosts => host_line(b, &group, raw, lineno)?,
            State::Vars => var_line(b, &group, raw, lineno, indent)?,
            State::Children => {
                let at = Loc::new(lineno, indent);
                let name = group_name(line).ok_or_else(|| {
                    b.err(Some(at), format!("expected a group name, found {line:?}"))
                })?;
                if b.has_group(name) {
                    b.add_child(&group, name, Some(at))?;
                } else {
                    let p = pending.entry(name.to_string()).or_insert_with(|| {
                        pending_order.push(name.to_string());
                        Pending {
                            loc: at,
                            vars: false,
                            parents: Vec::new(),
                        }
                    });
                    p.parents.push((group.clone(), at));
                }
            }
        }
    }
    for name in pending_order {
        let Some(p) = pending.get(&name) else {
            continue;
        };
        let msg = if p.vars {
            format!("section [{name}:vars] is for a group that no [{name}] or [{name}:children] section declares")
        } else {
            let parent = p.parents.last().map_or("?", |(g, _)| g.as_str());
            format!("section [{parent}:children] names group `{name}`, which no section declares")
        };
        return Err(b.err(Some(p.loc), msg));
    }
    Ok(())
}

/// A section declared `name`: it joins the parents that named it before
/// (and they theirs, if they were waiting too). Iterative.
fn declared(
    b: &mut Builder,
    name: &str,
    pending: &mut HashMap<String, Pending>,
) -> Result<(), InventoryError> {
    let mut todo = vec![name.to_string()];
    while let Some(g) = todo.pop() {
        let Some(p) = pending.remove(&g) else {
            continue;
        };
        if p.vars {
            continue;
        }
        for (parent, at) in p.parents {
            b.add_child(&parent, &g, Some(at))?;
            if pending.get(&parent).is_some_and(|pp| !pp.vars) {
                todo.push(parent);
            }
        }
    }
    Ok(())
}

/// A `[name]` or `[name:kind]` header.
#[derive(Debug, PartialEq)]
struct Section<'a> {
    name: &'a str,
    kind: Option<&'a str>,
    /// 0-based character offset of `kind` in the trimmed line, for
    /// pointing at an unknown one.
    kind_col: usize,
}

/// Parse `[name]` or `[name:kind]` with an optional trailing comment.
/// `Ok(None)`: the line is not meant as a section (no closing `]` at the
/// end, e.g. `[::1]:22`); `Err(col)`: a broken header, 0-based offset of
/// the problem within the trimmed line.
fn parse_section(line: &str) -> Result<Option<Section<'_>>, usize> {
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut i = 1;
    while i < chars.len() && !matches!(chars[i].1, ':' | ']') && !chars[i].1.is_whitespace() {
        i += 1;
    }
    let name_end = chars.get(i).map_or(line.len(), |c| c.0);
    let name = &line[1..name_end];
    let mut kind = None;
    let mut kind_col = 0;
    if chars.get(i).map(|c| c.1) == Some(':') {
        i += 1;
        let start = i;
        while i < chars.len() && (chars[i].1.is_alphanumeric() || chars[i].1 == '_') {
            i += 1;
        }
        let (s, e) = (
            chars.get(start).map_or(line.len(), |c| c.0),
            chars.get(i).map_or(line.len(), |c| c.0),
        );
        kind = Some(&line[s..e]);
        kind_col = start;
    }
    let closes = chars.get(i).map(|c| c.1) == Some(']');
    let rest = if closes {
        line[chars[i].0 + 1..].trim()
    } else {
        ""
    };
    let clean_end = rest.is_empty() || rest.starts_with('#') || rest.starts_with(';');
    if closes && clean_end && !name.is_empty() && kind != Some("") {
        return Ok(Some(Section {
            name,
            kind,
            kind_col,
        }));
    }
    // `[web] extra`: a header followed by text. (A host entry that starts
    // with a range, `[01:03].example.com`, has no blank after the `]`.)
    let blank_after = closes
        && line[chars[i].0 + 1..]
            .chars()
            .next()
            .is_some_and(char::is_whitespace);
    if blank_after && !clean_end {
        let after = &line[chars[i].0 + 1..];
        return Err(i + 1 + after.chars().take_while(|c| c.is_whitespace()).count());
    }
    // Otherwise, like Ansible, a line is a broken header only when it ends
    // with `]`; anything else starting with `[` is a host entry such as
    // `[::1]:22`.
    let code_end = line.split('#').next().unwrap_or(line).trim_end();
    if code_end.ends_with(']') {
        Err(if name.is_empty() { 1 } else { i })
    } else {
        Ok(None)
    }
}

/// A `[x:children]` entry: one name, optionally followed by a comment.
fn group_name(line: &str) -> Option<&str> {
    let code = line.split('#').next().unwrap_or(line).trim();
    if code.is_empty() || code.contains([':', ']']) || code.chars().any(char::is_whitespace) {
        return None;
    }
    Some(code)
}

/// A `host key=value ...` line.
fn host_line(b: &mut Builder, group: &str, raw: &str, lineno: usize) -> Result<(), InventoryError> {
    let tokens = shlex(raw).map_err(|(col, msg)| b.err(Some(Loc::new(lineno, col)), msg))?;
    let Some((first, rest)) = tokens.split_first() else {
        return Ok(()); // only a comment
    };
    let host_loc = Some(Loc::new(lineno, first.col));
    let (names, port) = b.expand_hosts(&first.text, host_loc)?;
    let mut vars = Vec::with_capacity(rest.len());
    for t in rest {
        let key_loc = Some(Loc::new(lineno, t.col));
        let Some((k, v)) = t.text.split_once('=') else {
            return Err(b.err(
                key_loc,
                format!(
                    "expected key=value host variable assignment, found {:?}",
                    t.text
                ),
            ));
        };
        if k.is_empty() {
            return Err(b.err(key_loc, format!("missing variable name in {:?}", t.text)));
        }
        let val_loc = Some(Loc::new(lineno, t.eq_col.map_or(t.col, |c| c + 1)));
        let def = VarDef::new(py_literal(v), key_loc, val_loc);
        vars.push((k.to_string(), def));
    }
    for name in &names {
        b.add_host(group, name);
        if let Some(p) = port {
            let def = VarDef::new(Value::from(p), host_loc, host_loc);
            b.set_host_var(name, "ansible_port", def)?;
        }
        for (k, def) in &vars {
            b.set_host_var(name, k, def.clone())?;
        }
    }
    Ok(())
}

/// A `key=value` line in a `[x:vars]` section: one assignment per line,
/// everything after the first `=` is the value.
fn var_line(
    b: &mut Builder,
    group: &str,
    raw: &str,
    lineno: usize,
    indent: usize,
) -> Result<(), InventoryError> {
    let line = raw.trim();
    let Some((k, v)) = line.split_once('=') else {
        return Err(b.err(
            Some(Loc::new(lineno, indent)),
            format!("expected key=value, found {line:?}"),
        ));
    };
    let key = k.trim();
    if key.is_empty() {
        return Err(b.err(
            Some(Loc::new(lineno, indent)),
            "missing variable name before `=`",
        ));
    }
    let value = v.trim();
    let after_eq = indent + k.chars().count() + 1;
    let val_col = after_eq + v.chars().take_while(|c| c.is_whitespace()).count();
    let def = VarDef::new(
        py_literal(value),
        Some(Loc::new(lineno, indent)),
        Some(Loc::new(lineno, val_col)),
    );
    b.set_group_var(group, key, def)
}

#[derive(Debug, PartialEq)]
struct Token {
    text: String,
    /// 1-based column of the token's first character.
    col: usize,
    /// 1-based column of the first unquoted `=`, if any.
    eq_col: Option<usize>,
}

/// `shlex.split(line, comments=True)` in POSIX mode: whitespace separates,
/// `'...'` is literal, `"..."` honours `\` before `\ " $` and a backtick,
/// a bare `\` escapes the next character, and `#` outside quotes ends the
/// line. Errors carry the 1-based column of the offending quote.
fn shlex(line: &str) -> Result<Vec<Token>, (usize, String)> {
    let chars: Vec<char> = line.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_whitespace() {
            i += 1;
            continue;
        }
        if chars[i] == '#' {
            break;
        }
        let col = i + 1;
        let mut text = String::new();
        let mut eq_col = None;
        while i < chars.len() && !chars[i].is_whitespace() {
            match chars[i] {
                '#' => break,
                '\'' => {
                    let open = i;
                    i += 1;
                    while i < chars.len() && chars[i] != '\'' {
                        text.push(chars[i]);
                        i += 1;
                    }
                    if i >= chars.len() {
                        return Err((open + 1, "no closing quotation".into()));
                    }
                    i += 1;
                }
                '"' => {
                    let open = i;
                    i += 1;
                    loop {
                        match chars.get(i) {
                            None => return Err((open + 1, "no closing quotation".into())),
                            Some('"') => break,
                            Some('\\')
                                if matches!(chars.get(i + 1), Some('\\' | '"' | '$' | '`')) =>
                            {
                                text.push(chars[i + 1]);
                                i += 2;
                            }
                            Some(&c) => {
                                text.push(c);
                                i += 1;
                            }
                        }
                    }
                    i += 1;
                }
                '\\' => {
                    match chars.get(i + 1) {
                        Some(&c) => text.push(c),
                        None => return Err((i + 1, "no escaped character".into())),
                    }
                    i += 2;
                }
                c => {
                    if c == '=' && eq_col.is_none() {
                        eq_col = Some(i + 1);
                    }
                    text.push(c);
                    i += 1;
                }
            }
        }
        tokens.push(Token { text, col, eq_col });
        if chars.get(i) == Some(&'#') {
            break;
        }
    }
    Ok(tokens)
}

// ---------------------------------------------------------------------------
// Python literals.

/// Nesting limit for lists/dicts in a value; beyond it the value simply
/// stays a string (no stack overflow on hostile input).
const MAX_LITERAL_DEPTH: usize = 32;

/// What `ast.literal_eval` would make of `text`, as JSON; the text itself
/// when it is not a Python literal (exactly Ansible's fallback).
pub(crate) fn py_literal(text: &str) -> Value {
    let mut p = Py {
        s: text.chars().collect(),
        i: 0,
    };
    match p.expr(0) {
        Some(v) => {
            p.skip_ws();
            if p.i == p.s.len() {
                v
            } else {
                Value::String(text.to_string())
            }
        }
        None => Value::String(text.to_string()),
    }
}

struct Py {
    s: Vec<char>,
    i: usize,
}

impl Py {
    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }

    /// Whitespace and a trailing `# comment` are legal around Python tokens.
    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            if c.is_whitespace() {
                self.i += 1;
            } else if c == '#' {
                self.i = self.s.len();
            } else {
                break;
            }
        }
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expr(&mut self, depth: usize) -> Option<Value> {
        if depth > MAX_LITERAL_DEPTH {
            return None;
        }
        self.skip_ws();
        match self.peek()? {
            '+' | '-' => {
                // literal_eval allows unary signs on numbers only.
                let neg = self.peek() == Some('-');
                self.i += 1;
                let v = self.expr(depth + 1)?;
                let Value::Number(n) = v else { return None };
                if !neg {
                    return Some(Value::Number(n));
                }
                if let Some(i) = n.as_i64() {
                    return i.checked_neg().map(Value::from);
                }
                if let Some(u) = n.as_u64() {
                    return (u == 1u64 << 63).then_some(Value::from(i64::MIN));
                }
                Number::from_f64(-n.as_f64()?).map(Value::Number)
            }
            '[' => {
                self.i += 1;
                Some(Value::Array(self.items(']', depth)?))
            }
            '(' => {
                self.i += 1;
                self.tuple(depth)
            }
            '{' => {
                self.i += 1;
                self.dict_or_set(depth)
            }
            '\'' | '"' => self.strings(),
            c if c.is_ascii_digit() || c == '.' => self.number(),
            c if c.is_alphabetic() || c == '_' => {
                let start = self.i;
                while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    self.i += 1;
                }
                let word: String = self.s[start..self.i].iter().collect();
                match word.as_str() {
                    "True" => Some(Value::Bool(true)),
                    "False" => Some(Value::Bool(false)),
                    "None" => Some(Value::Null),
                    // String prefixes: r'', u'', and bytes b'', rb'' (Ansible
                    // turns bytes into text); f-strings are not literals.
                    w if is_string_prefix(w) && matches!(self.peek(), Some('\'' | '"')) => {
                        self.i = start;
                        self.strings()
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// Comma-separated values up to `close`; a trailing comma is allowed.
    fn items(&mut self, close: char, depth: usize) -> Option<Vec<Value>> {
        let mut out = Vec::new();
        loop {
            if self.eat(close) {
                return Some(out);
            }
            out.push(self.expr(depth + 1)?);
            if self.eat(',') {
                continue;
            }
            return self.eat(close).then_some(out);
        }
    }

    /// `()` is an empty tuple, `(x)` is just `x`, `(x,)` and `(x, y)` are
    /// tuples (lists in JSON).
    fn tuple(&mut self, depth: usize) -> Option<Value> {
        if self.eat(')') {
            return Some(Value::Array(Vec::new()));
        }
        let first = self.expr(depth + 1)?;
        if self.eat(')') {
            return Some(first);
        }
        if !self.eat(',') {
            return None;
        }
        let mut rest = self.items(')', depth)?;
        rest.insert(0, first);
        Some(Value::Array(rest))
    }

    /// `{k: v, ...}` (keys become strings, as JSON needs) or `{a, b}` (a set,
    /// read as a list).
    fn dict_or_set(&mut self, depth: usize) -> Option<Value> {
        if self.eat('}') {
            return Some(Value::Object(Map::new()));
        }
        let first = self.expr(depth + 1)?;
        if !self.eat(':') {
            let mut items = vec![first];
            if self.eat(',') {
                items.extend(self.items('}', depth)?);
            } else if !self.eat('}') {
                return None;
            }
            return Some(Value::Array(items));
        }
        let mut map = Map::new();
        let mut key = first;
        loop {
            let value = self.expr(depth + 1)?;
            let k = match key {
                Value::String(s) => s,
                Value::Array(_) | Value::Object(_) => return None, // unhashable
                other => py_str(&other),
            };
            map.insert(k, value);
            if self.eat('}') {
                return Some(Value::Object(map));
            }
            if !self.eat(',') {
                return None;
            }
            if self.eat('}') {
                return Some(Value::Object(map));
            }
            key = self.expr(depth + 1)?;
            if !self.eat(':') {
                return None;
            }
        }
    }

    /// One or more adjacent string literals (Python concatenates them).
    fn strings(&mut self) -> Option<Value> {
        let mut out = String::new();
        let mut any = false;
        loop {
            self.skip_ws();
            let start = self.i;
            let mut prefix = String::new();
            while prefix.len() < 2 && self.peek().is_some_and(|c| "rRuUbB".contains(c)) {
                prefix.extend(self.peek());
                self.i += 1;
            }
            if !is_string_prefix(&prefix) {
                self.i = start;
                return any.then_some(Value::String(out));
            }
            let raw = prefix.contains(['r', 'R']);
            match self.peek() {
                Some(q @ ('\'' | '"')) => {
                    self.i += 1;
                    out.push_str(&self.string_body(q, raw)?);
                    any = true;
                }
                _ => {
                    self.i = start;
                    return any.then_some(Value::String(out));
                }
            }
        }
    }

    fn string_body(&mut self, q: char, raw: bool) -> Option<String> {
        // Triple-quoted strings: same rules, longer delimiter.
        let triple = self.peek() == Some(q) && self.s.get(self.i + 1) == Some(&q);
        if triple {
            self.i += 2;
        } else if self.peek() == Some(q) {
            self.i += 1;
            return Some(String::new());
        }
        let mut out = String::new();
        loop {
            let c = self.peek()?;
            if c == q {
                if !triple {
                    self.i += 1;
                    return Some(out);
                }
                if self.s.get(self.i + 1) == Some(&q) && self.s.get(self.i + 2) == Some(&q) {
                    self.i += 3;
                    return Some(out);
                }
            }
            self.i += 1;
            if c != '\\' {
                out.push(c);
                continue;
            }
            let e = self.peek()?;
            self.i += 1;
            if raw {
                out.push('\\');
                out.push(e);
                continue;
            }
            match e {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '0' => out.push('\0'),
                'a' => out.push('\u{7}'),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                'v' => out.push('\u{b}'),
                '\\' | '\'' | '"' => out.push(e),
                '\n' => {}
                'x' => out.push(self.hex(2)?),
                'u' => out.push(self.hex(4)?),
                'U' => out.push(self.hex(8)?),
                // Python keeps unknown escapes as written.
                other => {
                    out.push('\\');
                    out.push(other);
                }
            }
        }
    }

    fn hex(&mut self, n: usize) -> Option<char> {
        let digits: String = self.s.get(self.i..self.i + n)?.iter().collect();
        self.i += n;
        char::from_u32(u32::from_str_radix(&digits, 16).ok()?)
    }

    /// Python 3 int and float literals, underscores between digits allowed.
    /// A decimal with a leading zero (`010`) is a syntax error in Python 3,
    /// so it stays a string, as in Ansible.
    fn number(&mut self) -> Option<Value> {
        let start = self.i;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            || (matches!(self.peek(), Some('+' | '-'))
                && matches!(self.s.get(self.i.wrapping_sub(1)), Some('e' | 'E'))
                && !self.s[start..self.i].iter().any(|c| matches!(c, 'x' | 'X')))
        {
            self.i += 1;
        }
        let text: String = self.s[start..self.i].iter().collect();
        if !underscores_ok(&text) {
            return None;
        }
        let lower = text.to_ascii_lowercase();
        for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] {
            if let Some(digits) = lower.strip_prefix(prefix) {
                let digits = digits.strip_prefix('_').unwrap_or(digits).replace('_', "");
                if digits.is_empty() {
                    return None;
                }
                return u64::from_str_radix(&digits, radix).ok().map(Value::from);
            }
        }
        let plain = text.replace('_', "");
        if plain.bytes().all(|c| c.is_ascii_digit()) {
            if plain.len() > 1 && plain.starts_with('0') && plain.bytes().any(|c| c != b'0') {
                return None;
            }
            // Beyond u64 Python still has an int; we keep the text instead.
            return plain.parse::<u64>().ok().map(Value::from);
        }
        // Floats: digits with a dot and/or an exponent, nothing else.
        let ok = plain
            .bytes()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'))
            && plain.bytes().any(|c| c.is_ascii_digit());
        if !ok {
            return None;
        }
        let f: f64 = plain.parse().ok()?;
        Number::from_f64(f).map(Value::Number)
    }
}

/// A dict key as Python's `json.dumps` writes it (`true`, `null`, `1.5`).
fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `''` (none), `r`, `u`, `b`, `rb`, `br` in any case: the prefixes of a
/// Python string or bytes literal.
fn is_string_prefix(p: &str) -> bool {
    matches!(
        p.to_ascii_lowercase().as_str(),
        "" | "r" | "u" | "b" | "rb" | "br"
    )
}

/// Python allows `_` in a number only between two digits, or right after
/// a base prefix (`0x_1f`).
fn underscores_ok(text: &str) -> bool {
    let b = text.as_bytes();
    let hex = text.len() > 1 && matches!(&b[..2], b"0x" | b"0X");
    let digit = |c: u8| {
        if hex {
            c.is_ascii_hexdigit()
        } else {
            c.is_ascii_digit()
        }
    };
    b.iter().enumerate().all(|(i, &c)| {
        if c != b'_' {
            return true;
        }
        let prev_ok = i > 0
            && (digit(b[i - 1])
                || (i == 2
                    && b[0] == b'0'
                    && matches!(b[1], b'x' | b'X' | b'o' | b'O' | b'b' | b'B')));
        prev_ok && b.get(i + 1).is_some_and(|&n| digit(n))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(text: &str) -> Result<Inventory, InventoryError> {
        parse(text, Path::new("t.ini"))
    }

    #[test]
    fn literals() {
        assert_eq!(py_literal("22"), json!(22));
        assert_eq!(py_literal("-3"), json!(-3));
        assert_eq!(py_literal("1.5"), json!(1.5));
        assert_eq!(py_literal("1e3"), json!(1000.0));
        assert_eq!(py_literal("0x1F"), json!(31));
        assert_eq!(py_literal("1_000"), json!(1000));
        assert_eq!(py_literal("True"), json!(true));
        assert_eq!(py_literal("False"), json!(false));
        assert_eq!(py_literal("None"), json!(null));
        assert_eq!(py_literal("true"), json!("true"));
        assert_eq!(py_literal("FALSE"), json!("FALSE"));
        assert_eq!(py_literal("'22'"), json!("22"));
        assert_eq!(py_literal("\"a b\""), json!("a b"));
        assert_eq!(py_literal("'a' 'b'"), json!("ab"));
        assert_eq!(py_literal("'a\\tb'"), json!("a\tb"));
        assert_eq!(py_literal("r'a\\tb'"), json!("a\\tb"));
        assert_eq!(py_literal("[1, 'x', [True]]"), json!([1, "x", [true]]));
        assert_eq!(py_literal("(1,)"), json!([1]));
        assert_eq!(py_literal("(1)"), json!(1));
        assert_eq!(py_literal("{'a': 1, 2: None}"), json!({"a": 1, "2": null}));
        assert_eq!(
            py_literal("{True: 1, None: 2, 1.5: 3}"),
            json!({"true": 1, "null": 2, "1.5": 3})
        );
        assert_eq!(py_literal("b'x'"), json!("x"));
        assert_eq!(py_literal("Rb'a\\tb'"), json!("a\\tb"));
        assert_eq!(py_literal("f'x'"), json!("f'x'"));
        assert_eq!(py_literal("1._5"), json!("1._5"));
        assert_eq!(py_literal("1_0.5"), json!(10.5));
        assert_eq!(py_literal("0x_1f"), json!(31));
        assert_eq!(py_literal("1_e5"), json!("1_e5"));
        assert_eq!(py_literal("010"), json!("010"));
        assert_eq!(py_literal("00"), json!(0));
        assert_eq!(py_literal("/usr/bin/python3"), json!("/usr/bin/python3"));
        assert_eq!(py_literal("23 # comment"), json!(23));
        assert_eq!(py_literal("1.2.3.4"), json!("1.2.3.4"));
        assert_eq!(py_literal(""), json!(""));
        assert_eq!(py_literal("'unterminated"), json!("'unterminated"));
        assert_eq!(py_literal("[1, 2"), json!("[1, 2"));
        assert_eq!(py_literal("1e999"), json!("1e999"));
        assert_eq!(py_literal("-'x'"), json!("-'x'"));
        let deep = "[".repeat(500);
        assert_eq!(py_literal(&deep), json!(deep));
    }

    #[test]
    fn shlex_rules() {
        let t = shlex("h a=1 b='x y' c=\"q\\\"z\" # comment").unwrap();
        let texts: Vec<&str> = t.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(texts, ["h", "a=1", "b=x y", "c=q\"z"]);
        assert_eq!(t[1].col, 3);
        assert_eq!(t[1].eq_col, Some(4));
        assert_eq!(shlex("a=b#c").unwrap()[0].text, "a=b");
        assert_eq!(shlex("h x='unclosed").unwrap_err().0, 5);
        assert_eq!(shlex("x=\"'5'\"").unwrap()[0].text, "x='5'");
    }

    #[test]
    fn sections() {
        let sec = |line| parse_section(line).map(|s| s.map(|s| (s.name, s.kind, s.kind_col)));
        assert_eq!(sec("[web]"), Ok(Some(("web", None, 0))));
        assert_eq!(sec("[web:vars] # c"), Ok(Some(("web", Some("vars"), 5))));
        assert_eq!(sec("[web:foo]"), Ok(Some(("web", Some("foo"), 5))));
        assert!(parse_section("[web server]").is_err());
        assert_eq!(parse_section("[web]  extra"), Err(7));
        assert_eq!(parse_section("[01:03].example.com x=1"), Ok(None));
        assert!(parse_section("[]").is_err());
        assert_eq!(parse_section("[::1]:22"), Ok(None));
    }

    #[test]
    fn basic_file() {
        let inv = p("h0\n[web]\nw1 ansible_port=2222 x=\"'5'\"\n[web:vars]\ny=\"5\"\n").unwrap();
        assert_eq!(inv.groups["ungrouped"].hosts, vec!["h0"]);
        let w1 = inv.host("w1").unwrap();
        assert_eq!(w1.port, Some(2222));
        assert_eq!(w1.vars["x"], json!("5"));
        assert_eq!(w1.vars["y"], json!("5"));
    }

    #[test]
    fn bracketed_ipv6_host_line() {
        let inv = p("[v6]\n[2001:db8::1]:2200\n").unwrap();
        assert_eq!(inv.hosts[0].name, "2001:db8::1");
        assert_eq!(inv.hosts[0].port, Some(2200));
    }

    #[test]
    fn unknown_suffix_points_at_it() {
        let e = p("[web]\nh\n  [web:hosts]\n").unwrap_err();
        assert_eq!((e.line, e.col), (Some(3), Some(8)), "{e}");
    }

    #[test]
    fn value_column() {
        let e = p("[web]\nh ansible_port=abc\n").unwrap_err();
        assert_eq!((e.line, e.col), (Some(2), Some(16)), "{e}");
        let e = p("[web:vars]\n ansible_port = 0\n").unwrap_err();
        assert_eq!((e.line, e.col), (Some(2), Some(17)), "{e}");
    }
}
