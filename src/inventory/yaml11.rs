//! YAML read the way Ansible reads it: PyYAML's YAML 1.1 rules for what an
//! unquoted scalar means.
//!
//! A general YAML library answers "what is `y`?", "what is `017`?" with YAML
//! 1.2 or with its own mix of 1.1 and 1.2; Ansible answers with PyYAML's
//! resolver: `yes`/`on` are booleans but `y` is a string, `017` is the octal
//! 15, `0o17` and `1e3` are strings, `1:20` is 80, `2001-12-14` is a date.
//! An inventory read differently from Ansible means a different host list
//! or different variables, so this module builds its own small tree from
//! the parser's events (granit-parser, which serde-saphyr already uses and
//! re-exports) and resolves every plain scalar with PyYAML's regular
//! expressions and constructors, re-implemented here by hand and held to
//! `ansible-inventory` by `tests/inventory_ansible.rs`.
//!
//! It also carries a location on every node, resolves anchors, aliases and
//! `<<` merge keys as PyYAML's SafeLoader does, and bounds what hostile
//! input can cost: nesting depth and alias expansion are capped, and
//! nothing here recurses on the input's shape, so it runs on any stack.
//! Departures are refusals: a duplicated key is an error (Ansible warns and
//! keeps the last), as are `.inf`/`.nan` (JSON has no such numbers) and
//! tags PyYAML would not construct either.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use serde_saphyr::granit_parser::{Event, Marker, Options, Parser, ScalarStyle, ScanError, Tag};

use super::Loc;

/// Deepest nesting of collections accepted.
pub(crate) const MAX_DEPTH: usize = 64;

/// Most nodes that aliases may copy in, all together: shared variable
/// blocks are fine, an alias bomb is not.
const MAX_ALIAS_NODES: usize = 1_000_000;

/// Which rules give a plain (unquoted) scalar its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Schema {
    /// PyYAML's YAML 1.1 resolver, as Ansible's YAML inventories.
    Yaml11,
    /// JSON: plain scalars are JSON numbers, `true`, `false` and `null`
    /// (anything else falls back to the YAML 1.1 rules).
    Json,
}

/// A node and where it starts.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub loc: Option<Loc>,
    pub kind: Kind,
    /// The source text of a plain scalar that did not resolve to a string,
    /// to quote it back in messages (`010` for the number 8).
    pub raw: Option<Box<str>>,
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(String),
    /// A YAML timestamp, already in Python's `isoformat()` spelling, which
    /// is how Ansible prints it.
    Time(String),
    Seq(Vec<Node>),
    /// Keys in order of first appearance; with `<<` merges applied.
    Map(Vec<(Node, Node)>),
}

impl Kind {
    pub fn what(&self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) | Kind::Uint(_) | Kind::Float(_) => "a number",
            Kind::Str(_) => "a string",
            Kind::Time(_) => "a date",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }
}

impl Node {
    /// The node as a JSON value: mapping keys become strings the way
    /// Python's `json.dumps` writes them (`1`, `true`, `null`).
    pub fn into_json(self) -> Value {
        match self.kind {
            Kind::Null => Value::Null,
            Kind::Bool(b) => Value::Bool(b),
            Kind::Int(i) => Value::from(i),
            Kind::Uint(u) => Value::from(u),
            Kind::Float(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
            Kind::Str(s) | Kind::Time(s) => Value::String(s),
            Kind::Seq(items) => Value::Array(items.into_iter().map(Node::into_json).collect()),
            Kind::Map(entries) => {
                let mut m = Map::new();
                for (k, v) in entries {
                    m.insert(k.json_key(), v.into_json());
                }
                Value::Object(m)
            }
        }
    }

    /// Python's `json.dumps` spelling of a mapping key.
    fn json_key(&self) -> String {
        match &self.kind {
            Kind::Null => "null".into(),
            Kind::Bool(b) => b.to_string(),
            Kind::Int(i) => i.to_string(),
            Kind::Uint(u) => u.to_string(),
            Kind::Float(f) => Number::from_f64(*f).map_or_else(|| f.to_string(), |n| n.to_string()),
            Kind::Str(s) | Kind::Time(s) => s.clone(),
            // Unhashable in Python; no inventory can have them, keep something.
            Kind::Seq(_) | Kind::Map(_) => self.raw.as_deref().unwrap_or("?").to_string(),
        }
    }

    /// How a message should show this node: the source text if it was a
    /// plain scalar, else a description.
    pub fn shown(&self) -> String {
        match (&self.raw, &self.kind) {
            (Some(raw), _) => format!("`{raw}`"),
            (None, Kind::Str(s)) => format!("{s:?}"),
            (None, k) => k.what().to_string(),
        }
    }

    /// Count of nodes in this subtree (for the alias budget).
    fn size(&self) -> usize {
        let mut n = 0;
        let mut stack = vec![self];
        while let Some(node) = stack.pop() {
            n += 1;
            match &node.kind {
                Kind::Seq(items) => stack.extend(items.iter()),
                Kind::Map(entries) => {
                    for (k, v) in entries {
                        stack.push(k);
                        stack.push(v);
                    }
                }
                _ => {}
            }
        }
        n
    }
}

/// A YAML problem with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct YamlError {
    pub loc: Option<Loc>,
    pub message: String,
}

fn loc(m: &Marker) -> Option<Loc> {
    (m.line() > 0).then(|| Loc::new(m.line(), m.col() + 1))
}

fn fail<T>(loc: Option<Loc>, message: impl Into<String>) -> Result<T, YamlError> {
    Err(YamlError {
        loc,
        message: message.into(),
    })
}

fn scan_error(e: &ScanError) -> YamlError {
    let msg: String = e
        .info()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    YamlError {
        loc: loc(e.marker()),
        message: msg,
    }
}

enum Frame {
    Seq {
        start: Option<Loc>,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        start: Option<Loc>,
        anchor: usize,
        key: Option<Node>,
        /// Explicit entries, and the values of `<<` keys in order.
        entries: Vec<(Node, Node)>,
        merges: Vec<Node>,
    },
}

/// Parse one YAML document into a tree. `Ok(None)` for a stream with no
/// document (an empty file, only comments).
pub(crate) fn parse(text: &str, schema: Schema) -> Result<Option<Node>, YamlError> {
    let mut opts = Options::default();
    // PyYAML (and libyaml) add no line feed to a block scalar that ends the
    // file without one.
    opts.block_scalar_eof_without_line_feed = true;
    opts.set_emit_comments(false);
    let mut parser = Parser::new_from_str_with_options(text, opts);

    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut alias_nodes = 0usize;
    let mut root: Option<Node> = None;
    let mut documents = 0usize;

    while let Some(item) = parser.next_event() {
        let (event, span) = item.map_err(|e| scan_error(&e))?;
        let at = loc(&span.start);
        let done: Node = match event {
            Event::DocumentStart(..) => {
                documents += 1;
                if documents > 1 {
                    return fail(
                        at,
                        "expected a single document in the stream, but found another document",
                    );
                }
                continue;
            }
            Event::Scalar(value, style, anchor, tag) => {
                let node = scalar(&value, style, tag.as_deref(), at, schema)?;
                if anchor != 0 {
                    anchors.insert(anchor, node.clone());
                }
                node
            }
            Event::SequenceStart(_, anchor, tag) => {
                check_collection_tag(tag.as_deref(), "seq", at)?;
                if stack.len() >= MAX_DEPTH {
                    return fail(
                        at,
                        format!("nesting is too deep (more than {MAX_DEPTH} levels)"),
                    );
                }
                stack.push(Frame::Seq {
                    start: at,
                    anchor,
                    items: Vec::new(),
                });
                continue;
            }
            Event::MappingStart(_, anchor, tag) => {
                check_collection_tag(tag.as_deref(), "map", at)?;
                if stack.len() >= MAX_DEPTH {
                    return fail(
                        at,
                        format!("nesting is too deep (more than {MAX_DEPTH} levels)"),
                    );
                }
                stack.push(Frame::Map {
                    start: at,
                    anchor,
                    key: None,
                    entries: Vec::new(),
                    merges: Vec::new(),
                });
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq {
                    start,
                    anchor,
                    items,
                }) => {
                    let node = Node {
                        loc: start,
                        kind: Kind::Seq(items),
                        raw: None,
                    };
                    if anchor != 0 {
                        anchors.insert(anchor, node.clone());
                    }
                    node
                }
                _ => return fail(at, "internal: unbalanced sequence end"),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map {
                    start,
                    anchor,
                    entries,
                    merges,
                    ..
                }) => {
                    let node = Node {
                        loc: start,
                        kind: Kind::Map(merge_mapping(entries, merges)?),
                        raw: None,
                    };
                    if anchor != 0 {
                        anchors.insert(anchor, node.clone());
                    }
                    node
                }
                _ => return fail(at, "internal: unbalanced mapping end"),
            },
            Event::Alias(id) => {
                let Some(target) = anchors.get(&id) else {
                    // The anchor is on a collection still open: a recursive
                    // structure, which no inventory needs.
                    return fail(
                        at,
                        "an alias refers to a node that contains it (recursive alias)",
                    );
                };
                alias_nodes = alias_nodes.saturating_add(target.size());
                if alias_nodes > MAX_ALIAS_NODES {
                    return fail(
                        at,
                        format!("aliases expand to more than {MAX_ALIAS_NODES} nodes"),
                    );
                }
                let mut node = target.clone();
                node.loc = at;
                node
            }
            _ => continue,
        };
        // Attach the finished node to its parent.
        match stack.last_mut() {
            None => root = Some(done),
            Some(Frame::Seq { items, .. }) => items.push(done),
            Some(Frame::Map {
                key,
                entries,
                merges,
                ..
            }) => match key.take() {
                None => *key = Some(done),
                Some(k) => {
                    if is_merge_key(&k) {
                        merges.push(done);
                    } else {
                        entries.push((k, done));
                    }
                }
            },
        }
    }
    Ok(root)
}

/// A plain `<<` key (resolved to the internal merge marker).
fn is_merge_key(k: &Node) -> bool {
    matches!(&k.kind, Kind::Str(s) if s == "<<") && k.raw.as_deref() == Some("<<")
}

/// Apply PyYAML's `flatten_mapping`: the merged mappings' entries come
/// first (for a list, the first mapping wins, so it goes last), then the
/// explicit entries; a later key replaces an earlier one's value but keeps
/// its position, as in a Python dict. An explicit key written twice is an
/// error.
fn merge_mapping(
    entries: Vec<(Node, Node)>,
    merges: Vec<Node>,
) -> Result<Vec<(Node, Node)>, YamlError> {
    let mut seen: HashMap<(bool, String), usize> = HashMap::new();
    for (k, _) in &entries {
        let id = key_id(k);
        if seen.insert(id, 0).is_some() {
            return fail(
                k.loc,
                format!(
                    "duplicate key {} (each key may appear only once in a mapping)",
                    k.shown()
                ),
            );
        }
    }
    if merges.is_empty() {
        return Ok(entries);
    }
    let mut merged: Vec<(Node, Node)> = Vec::new();
    for m in merges {
        match m.kind {
            Kind::Map(items) => merged.extend(items),
            Kind::Seq(maps) => {
                let mut sub = Vec::new();
                for map in maps {
                    match map.kind {
                        Kind::Map(items) => sub.push(items),
                        other => {
                            return fail(
                                map.loc,
                                format!(
                                    "a `<<` merge list may hold only mappings, found {}",
                                    other.what()
                                ),
                            )
                        }
                    }
                }
                for items in sub.into_iter().rev() {
                    merged.extend(items);
                }
            }
            other => {
                return fail(
                    m.loc,
                    format!(
                        "a `<<` merge needs a mapping or a list of mappings, found {}",
                        other.what()
                    ),
                )
            }
        }
    }
    let mut out: Vec<(Node, Node)> = Vec::new();
    let mut index: HashMap<(bool, String), usize> = HashMap::new();
    for (k, v) in merged.into_iter().chain(entries) {
        let id = key_id(&k);
        match index.get(&id) {
            Some(&i) => out[i].1 = v,
            None => {
                index.insert(id, out.len());
                out.push((k, v));
            }
        }
    }
    Ok(out)
}

/// Key identity: strings by text, everything else by its JSON key form.
fn key_id(k: &Node) -> (bool, String) {
    (matches!(k.kind, Kind::Str(_)), k.json_key())
}

fn check_collection_tag(
    tag: Option<&Tag>,
    expected: &str,
    at: Option<Loc>,
) -> Result<(), YamlError> {
    let Some(tag) = tag else { return Ok(()) };
    if tag.handle() == "!" && tag.suffix().is_empty() {
        return Ok(());
    }
    match tag.core_suffix() {
        Some(s) if s == expected || (expected == "map" && s == "set") => Ok(()),
        _ => fail(
            at,
            format!("unsupported YAML tag `{}` here", tag.original()),
        ),
    }
}

fn scalar(
    value: &str,
    style: ScalarStyle,
    tag: Option<&Tag>,
    at: Option<Loc>,
    schema: Schema,
) -> Result<Node, YamlError> {
    let node = |kind: Kind| Node {
        loc: at,
        kind,
        raw: None,
    };
    if let Some(tag) = tag {
        let local = (tag.handle() == "!").then(|| tag.suffix());
        return match (tag.core_suffix(), local) {
            (_, Some("vault")) => {
                // An inline vault value is what Ansible prints for it (and
                // reads back from list JSON): `{"__ansible_vault": text}`;
                // the inventory decrypts it where a setting needs it.
                let key = node(Kind::Str(super::VAULT_KEY.to_string()));
                Ok(node(Kind::Map(vec![(
                    key,
                    node(Kind::Str(value.to_string())),
                )])))
            }
            (Some("str"), _) | (_, Some("" | "unsafe")) => {
                // `!unsafe` only stops templating.
                Ok(node(Kind::Str(value.to_string())))
            }
            (Some("int"), _) => int_value(value).map(node).ok_or_else(|| YamlError {
                loc: at,
                message: format!("`{value}` is not an integer (tagged !!int)"),
            }),
            (Some("float"), _) => float_value(value, at).map(node),
            (Some("bool"), _) => match value.to_ascii_lowercase().as_str() {
                "yes" | "true" | "on" => Ok(node(Kind::Bool(true))),
                "no" | "false" | "off" => Ok(node(Kind::Bool(false))),
                _ => fail(at, format!("`{value}` is not a boolean (tagged !!bool)")),
            },
            (Some("null"), _) => Ok(node(Kind::Null)),
            (Some("timestamp"), _) => timestamp(value, at).map(node),
            _ => fail(at, format!("unsupported YAML tag `{}`", tag.original())),
        };
    }
    if style != ScalarStyle::Plain {
        return Ok(node(Kind::Str(value.to_string())));
    }
    let kind = if schema == Schema::Json {
        match serde_json::from_str::<Value>(value) {
            Ok(Value::Number(n)) => Some(if let Some(i) = n.as_i64() {
                Kind::Int(i)
            } else if let Some(u) = n.as_u64() {
                Kind::Uint(u)
            } else {
                Kind::Float(n.as_f64().unwrap_or(0.0))
            }),
            Ok(Value::Bool(b)) => Some(Kind::Bool(b)),
            Ok(Value::Null) => Some(Kind::Null),
            _ => None,
        }
    } else {
        None
    };
    let kind = match kind {
        Some(k) => k,
        None => resolve_plain(value, at)?,
    };
    let raw = match &kind {
        Kind::Str(_) if value != "<<" => None,
        _ => Some(value.into()),
    };
    Ok(Node { loc: at, kind, raw })
}

/// PyYAML's implicit resolvers, tried in the order PyYAML registers them
/// for the scalar's first character (bool, float, int, merge, null,
/// timestamp); anything else is a string.
fn resolve_plain(v: &str, at: Option<Loc>) -> Result<Kind, YamlError> {
    if matches!(
        v,
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON"
    ) {
        return Ok(Kind::Bool(true));
    }
    if matches!(
        v,
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF"
    ) {
        return Ok(Kind::Bool(false));
    }
    if is_float(v) {
        return float_value(v, at);
    }
    if is_int(v) {
        return int_value(v).ok_or_else(|| YamlError {
            loc: at,
            message: format!("`{v}` looks like an integer but is not one (as in Ansible)"),
        });
    }
    if matches!(v, "~" | "null" | "Null" | "NULL" | "") {
        return Ok(Kind::Null);
    }
    if is_timestamp(v) {
        return timestamp(v, at);
    }
    Ok(Kind::Str(v.to_string()))
}

fn sign(v: &str) -> (i8, &str) {
    match v.as_bytes().first() {
        Some(b'-') => (-1, &v[1..]),
        Some(b'+') => (1, &v[1..]),
        _ => (1, v),
    }
}

fn all_of(s: &str, f: impl Fn(u8) -> bool) -> bool {
    !s.is_empty() && s.bytes().all(f)
}

/// `[0-5]?[0-9]`
fn is_base60_part(p: &str) -> bool {
    match p.as_bytes() {
        [d] => d.is_ascii_digit(),
        [a, b] => (b'0'..=b'5').contains(a) && b.is_ascii_digit(),
        _ => false,
    }
}

/// `[0-9][0-9_]*`
fn is_digits_(s: &str) -> bool {
    s.as_bytes().first().is_some_and(u8::is_ascii_digit)
        && s.bytes().all(|c| c.is_ascii_digit() || c == b'_')
}

/// PyYAML's int resolver:
/// `[-+]?0b[0-1_]+ | [-+]?0[0-7_]+ | [-+]?(0|[1-9][0-9_]*) | [-+]?0x[0-9a-fA-F_]+
/// | [-+]?[1-9][0-9_]*(:[0-5]?[0-9])+`
fn is_int(v: &str) -> bool {
    let (_, s) = sign(v);
    if let Some(d) = s.strip_prefix("0b") {
        return all_of(d, |c| matches!(c, b'0' | b'1' | b'_'));
    }
    if let Some(d) = s.strip_prefix("0x") {
        return all_of(d, |c| c.is_ascii_hexdigit() || c == b'_');
    }
    if s == "0" {
        return true;
    }
    if let Some(d) = s.strip_prefix('0') {
        return all_of(d, |c| matches!(c, b'0'..=b'7' | b'_'));
    }
    if !s
        .as_bytes()
        .first()
        .is_some_and(|c| (b'1'..=b'9').contains(c))
    {
        return false;
    }
    let mut parts = s.split(':');
    let head = parts.next().unwrap_or("");
    if !is_digits_(head) {
        return false;
    }
    parts.all(is_base60_part)
}

/// PyYAML's float resolver:
/// `[-+]?([0-9][0-9_]*)\.[0-9_]*([eE][-+][0-9]+)? | \.[0-9][0-9_]*([eE][-+][0-9]+)?
/// | [-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\.[0-9_]* | [-+]?\.(inf|Inf|INF) | \.(nan|NaN|NAN)`
fn is_float(v: &str) -> bool {
    if matches!(v, ".nan" | ".NaN" | ".NAN") {
        return true;
    }
    let (_, s) = sign(v);
    if matches!(s, ".inf" | ".Inf" | ".INF") {
        return true;
    }
    let exp_ok = |e: &str| -> bool {
        // `([eE][-+][0-9]+)?`
        e.is_empty()
            || (matches!(e.as_bytes()[0], b'e' | b'E')
                && e.len() > 2
                && matches!(e.as_bytes()[1], b'-' | b'+')
                && all_of(&e[2..], |c| c.is_ascii_digit()))
    };
    let frac_and_exp = |rest: &str| -> bool {
        // `[0-9_]*([eE][-+][0-9]+)?`
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '_'))
            .unwrap_or(rest.len());
        exp_ok(&rest[end..])
    };
    if let Some(rest) = v.strip_prefix('.') {
        // No sign allowed on this form.
        return rest.as_bytes().first().is_some_and(u8::is_ascii_digit) && frac_and_exp(rest);
    }
    let Some(dot) = s.find('.') else { return false };
    let (int_part, rest) = (&s[..dot], &s[dot + 1..]);
    if is_digits_(int_part) {
        return frac_and_exp(rest);
    }
    // Sexagesimal: `[0-9][0-9_]*(:[0-5]?[0-9])+` then `\.[0-9_]*`.
    let mut parts = int_part.split(':');
    let head = parts.next().unwrap_or("");
    let tail: Vec<&str> = parts.collect();
    !tail.is_empty()
        && is_digits_(head)
        && tail.iter().all(|p| is_base60_part(p))
        && rest.bytes().all(|c| c.is_ascii_digit() || c == b'_')
}

/// PyYAML's `construct_yaml_int` on an already-resolved spelling; `None`
/// where Python's `int()` would raise. Beyond 64 bits, the digits as text.
fn int_value(v: &str) -> Option<Kind> {
    let cleaned = v.replace('_', "");
    let (neg, s) = match cleaned.as_bytes().first()? {
        b'-' => (true, &cleaned[1..]),
        b'+' => (false, &cleaned[1..]),
        _ => (false, cleaned.as_str()),
    };
    let magnitude: Option<u128> = if s == "0" {
        Some(0)
    } else if let Some(d) = s.strip_prefix("0b") {
        u128::from_str_radix(d, 2).ok()
    } else if let Some(d) = s.strip_prefix("0x") {
        u128::from_str_radix(d, 16).ok()
    } else if s.starts_with('0') {
        u128::from_str_radix(s, 8).ok()
    } else if s.contains(':') {
        let mut total: u128 = 0;
        for part in s.split(':') {
            let d: u128 = part.parse().ok()?;
            total = total.checked_mul(60)?.checked_add(d)?;
        }
        Some(total)
    } else {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        match s.parse::<u128>() {
            Ok(n) => Some(n),
            Err(_) => return Some(Kind::Str(format!("{}{s}", if neg { "-" } else { "" }))),
        }
    };
    let m = magnitude?;
    if neg {
        if m <= i64::MAX as u128 + 1 {
            // Two's complement: -(2^63) fits.
            let i = (m as i128).checked_neg()?;
            return i64::try_from(i).ok().map(Kind::Int);
        }
        return Some(Kind::Str(format!("-{m}")));
    }
    if let Ok(i) = i64::try_from(m) {
        return Some(Kind::Int(i));
    }
    if let Ok(u) = u64::try_from(m) {
        return Some(Kind::Uint(u));
    }
    Some(Kind::Str(m.to_string()))
}

/// PyYAML's `construct_yaml_float`.
fn float_value(v: &str, at: Option<Loc>) -> Result<Kind, YamlError> {
    let cleaned = v.replace('_', "").to_ascii_lowercase();
    let (neg, s) = match cleaned.as_bytes().first() {
        Some(b'-') => (true, &cleaned[1..]),
        Some(b'+') => (false, &cleaned[1..]),
        _ => (false, cleaned.as_str()),
    };
    if s == ".inf" || s == ".nan" {
        return fail(
            at,
            format!(
                "`{v}` is not supported: JSON, and so pushscan, has no infinite or NaN numbers"
            ),
        );
    }
    let f: f64 = if s.contains(':') {
        let mut total = 0.0f64;
        for part in s.split(':') {
            let d: f64 = part.parse().map_err(|_| YamlError {
                loc: at,
                message: format!("`{v}` is not a number"),
            })?;
            total = total * 60.0 + d;
        }
        total
    } else {
        s.parse().map_err(|_| YamlError {
            loc: at,
            message: format!("`{v}` is not a number"),
        })?
    };
    let f = if neg { -f } else { f };
    if !f.is_finite() {
        return fail(
            at,
            format!("`{v}` is too large: JSON, and so pushscan, has no infinite numbers"),
        );
    }
    Ok(Kind::Float(f))
}

/// PyYAML's timestamp resolver: `YYYY-MM-DD`, or `YYYY-M-D` followed by
/// `T`/`t`/blanks, `H:MM:SS`, an optional fraction and time zone.
fn is_timestamp(v: &str) -> bool {
    let b = v.as_bytes();
    if b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && [0, 1, 2, 3, 5, 6, 8, 9]
            .iter()
            .all(|&i| b[i].is_ascii_digit())
    {
        return true;
    }
    parse_timestamp(v).is_some()
}

struct Stamp {
    year: u32,
    month: u32,
    day: u32,
    time: Option<(u32, u32, u32, u32)>,
    /// Offset in minutes; `Some(0)` for `Z`.
    tz: Option<i32>,
}

/// PyYAML's `timestamp_regexp` (the date-time form; the bare date form is
/// checked by `is_timestamp`).
fn parse_timestamp(v: &str) -> Option<Stamp> {
    let b = v.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize, min: usize, max: usize| -> Option<u32> {
        let start = *i;
        while *i < b.len() && *i - start < max && b[*i].is_ascii_digit() {
            *i += 1;
        }
        if *i - start < min {
            return None;
        }
        v[start..*i].parse().ok()
    };
    let year = digits(&mut i, 4, 4)?;
    (b.get(i) == Some(&b'-')).then_some(())?;
    i += 1;
    let month = digits(&mut i, 1, 2)?;
    (b.get(i) == Some(&b'-')).then_some(())?;
    i += 1;
    let day = digits(&mut i, 1, 2)?;
    if i == b.len() {
        // The resolver only accepts the bare date with two-digit fields.
        return (b.len() == 10).then_some(Stamp {
            year,
            month,
            day,
            time: None,
            tz: None,
        });
    }
    match b.get(i) {
        Some(b'T' | b't') => i += 1,
        Some(b' ' | b'\t') => {
            while matches!(b.get(i), Some(b' ' | b'\t')) {
                i += 1;
            }
        }
        _ => return None,
    }
    let hour = digits(&mut i, 1, 2)?;
    (b.get(i) == Some(&b':')).then_some(())?;
    i += 1;
    let minute = digits(&mut i, 2, 2)?;
    (b.get(i) == Some(&b':')).then_some(())?;
    i += 1;
    let second = digits(&mut i, 2, 2)?;
    let mut micros = 0u32;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let mut frac: String = v[start..i].chars().take(6).collect();
        while frac.len() < 6 {
            frac.push('0');
        }
        micros = frac.parse().ok()?;
    }
    while matches!(b.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    let mut tz = None;
    match b.get(i) {
        None => {}
        Some(b'Z') => {
            i += 1;
            tz = Some(0);
        }
        Some(&s @ (b'-' | b'+')) => {
            i += 1;
            let h = digits(&mut i, 1, 2)?;
            let mut m = 0;
            if b.get(i) == Some(&b':') {
                i += 1;
                m = digits(&mut i, 2, 2)?;
            }
            let total = i32::try_from(h * 60 + m).ok()?;
            tz = Some(if s == b'-' { -total } else { total });
        }
        _ => return None,
    }
    (i == b.len()).then_some(Stamp {
        year,
        month,
        day,
        time: Some((hour, minute, second, micros)),
        tz,
    })
}

/// Construct the date/datetime as Python would, and print it as
/// `isoformat()` does; invalid dates fail as Python's constructors do.
fn timestamp(v: &str, at: Option<Loc>) -> Result<Kind, YamlError> {
    let bad = || YamlError {
        loc: at,
        message: format!("`{v}` is read as a date by YAML, but it is not a valid one"),
    };
    let st = parse_timestamp(v).ok_or_else(bad)?;
    let leap = (st.year % 4 == 0 && st.year % 100 != 0) || st.year % 400 == 0;
    let days = match st.month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if st.year == 0 || st.day == 0 || st.day > days {
        return Err(bad());
    }
    let mut out = format!("{:04}-{:02}-{:02}", st.year, st.month, st.day);
    if let Some((h, m, s, us)) = st.time {
        if h > 23 || m > 59 || s > 59 {
            return Err(bad());
        }
        out.push_str(&format!("T{h:02}:{m:02}:{s:02}"));
        if us != 0 {
            out.push_str(&format!(".{us:06}"));
        }
        if let Some(tz) = st.tz {
            if tz.abs() >= 24 * 60 {
                return Err(bad());
            }
            let sign = if tz < 0 { '-' } else { '+' };
            out.push_str(&format!("{sign}{:02}:{:02}", tz.abs() / 60, tz.abs() % 60));
        }
    }
    Ok(Kind::Time(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn value(v: &str) -> Value {
        let text = format!("k: {v}\n");
        let root = parse(&text, Schema::Yaml11).unwrap().unwrap();
        match root.kind {
            Kind::Map(mut e) => e.remove(0).1.into_json(),
            _ => panic!("not a map"),
        }
    }

    #[test]
    fn pyyaml_scalars() {
        // Booleans: YAML 1.1's words, but not `y`/`n` (PyYAML leaves them out).
        for t in ["yes", "Yes", "YES", "on", "ON", "true", "True"] {
            assert_eq!(value(t), json!(true), "{t}");
        }
        for t in ["no", "off", "Off", "false", "FALSE"] {
            assert_eq!(value(t), json!(false), "{t}");
        }
        for t in ["y", "n", "Y", "yEs", "oN"] {
            assert_eq!(value(t), json!(t), "{t}");
        }
        assert_eq!(value("017"), json!(15));
        assert_eq!(value("0o17"), json!("0o17"));
        assert_eq!(value("08"), json!("08"));
        assert_eq!(value("0x1F"), json!(31));
        assert_eq!(value("-0b101"), json!(-5));
        assert_eq!(value("1_000"), json!(1000));
        assert_eq!(value("1:20"), json!(80));
        assert_eq!(value("-1:20:30"), json!(-4830));
        assert_eq!(value("+12"), json!(12));
        assert_eq!(value("-0"), json!(0));
        assert_eq!(value("1e3"), json!("1e3"));
        assert_eq!(value("1.0e+3"), json!(1000.0));
        assert_eq!(value("1_0.5"), json!(10.5));
        assert_eq!(value(".5"), json!(0.5));
        assert_eq!(value("-.5"), json!("-.5"));
        assert_eq!(value("1."), json!(1.0));
        assert_eq!(value("1:30.5"), json!(90.5));
        assert_eq!(value("~"), json!(null));
        assert_eq!(value("Null"), json!(null));
        assert_eq!(value("nULL"), json!("nULL"));
        assert_eq!(value(""), json!(null));
        assert_eq!(value("2001-12-14"), json!("2001-12-14"));
        assert_eq!(
            value("2001-12-14t21:59:43.10-05:00"),
            json!("2001-12-14T21:59:43.100000-05:00")
        );
        assert_eq!(value("2001-12-14 21:59:43"), json!("2001-12-14T21:59:43"));
        assert_eq!(
            value("2001-12-14T21:59:43Z"),
            json!("2001-12-14T21:59:43+00:00")
        );
        assert_eq!(value("2001-1-1"), json!("2001-1-1"));
        assert_eq!(value("'yes'"), json!("yes"));
        assert_eq!(value("\"017\""), json!("017"));
        assert_eq!(value("!!str 017"), json!("017"));
        assert_eq!(value("!!int '017'"), json!(15));
        assert_eq!(value("!unsafe '{{ x }}'"), json!("{{ x }}"));
        assert_eq!(
            value("123456789012345678901234567890"),
            json!("123456789012345678901234567890")
        );
        assert_eq!(
            value("18446744073709551615"),
            json!(18446744073709551615u64)
        );
        assert_eq!(value("-9223372036854775808"), json!(i64::MIN));
        assert_eq!(value("|\n  a\n  b"), json!("a\nb\n"));
    }

    #[test]
    fn refusals() {
        for bad in [
            ".inf",
            "-.Inf",
            ".nan",
            "0b_",
            "2001-02-30",
            "!custom x",
            "1.0e+999",
        ] {
            let text = format!("k: {bad}\n");
            let e = parse(&text, Schema::Yaml11).unwrap_err();
            assert_eq!(e.loc.map(|l| l.line), Some(1), "{bad}: {e:?}");
        }
        let e = parse("a: 1\na: 2\n", Schema::Yaml11).unwrap_err();
        assert!(e.message.contains("duplicate"), "{e:?}");
        assert_eq!(e.loc, Some(Loc::new(2, 1)));
        let e = parse("a: 1\n---\nb: 2\n", Schema::Yaml11).unwrap_err();
        assert!(e.message.contains("single document"), "{e:?}");
        let deep = format!("a: {}{}", "[".repeat(100), "]".repeat(100));
        assert!(parse(&deep, Schema::Yaml11)
            .unwrap_err()
            .message
            .contains("too deep"));
        let e = parse("a: &a\n  b: *a\n", Schema::Yaml11).unwrap_err();
        assert!(e.message.contains("recursive"), "{e:?}");
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(parse(&bomb, Schema::Yaml11)
            .unwrap_err()
            .message
            .contains("aliases expand"));
    }

    #[test]
    fn merge_keys_as_pyyaml() {
        let t = "base: &b {x: 1, y: 1}\nother: &o {y: 2, z: 2}\nm:\n  <<: [*b, *o]\n  x: 3\n";
        let root = parse(t, Schema::Yaml11).unwrap().unwrap().into_json();
        assert_eq!(root["m"], json!({"x": 3, "y": 1, "z": 2}));
        let keys: Vec<String> = match parse(t, Schema::Yaml11).unwrap().unwrap().kind {
            Kind::Map(e) => match &e[2].1.kind {
                Kind::Map(m) => m.iter().map(|(k, _)| k.json_key()).collect(),
                _ => vec![],
            },
            _ => vec![],
        };
        // Python dict order: first appearance (the later list entry's keys
        // were merged first).
        assert_eq!(keys, ["y", "z", "x"]);
    }

    #[test]
    fn json_schema_numbers() {
        let root = parse(
            "{\"a\": 1e300, \"b\": 1.5, \"c\": true, \"d\": \"017\"}",
            Schema::Json,
        )
        .unwrap()
        .unwrap()
        .into_json();
        assert_eq!(root, json!({"a": 1e300, "b": 1.5, "c": true, "d": "017"}));
    }

    #[test]
    fn keys_become_json_strings() {
        let root = parse("m: {1: a, true: b, ~: c, 1.5: d}\n", Schema::Yaml11)
            .unwrap()
            .unwrap()
            .into_json();
        assert_eq!(
            root["m"],
            json!({"1": "a", "true": "b", "null": "c", "1.5": "d"})
        );
    }
}
