//! The YAML inventory format (`all:` with `hosts:`, `vars:`, `children:`),
//! which also covers JSON inventories since JSON is YAML.
//!
//! serde-saphyr deserializes straight into types, so to keep a location on
//! every key and value we deserialize into our own small tree ([`Node`])
//! whose every node is wrapped in `serde_saphyr::Spanned`. Walking that tree
//! follows Ansible's `yaml` inventory plugin, except that structure Ansible
//! would skip with a warning (a list where a mapping belongs, an unknown
//! key in a group) is an error here: a skipped section means hosts that are
//! silently not scanned.

use std::fmt;
use std::path::Path;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use serde_saphyr::{Location, MessageFormatter, Spanned};

use super::pattern::expand_host_pattern;
use super::{Builder, Inventory, InventoryError, Loc, VarDef};

/// A YAML node and where it starts.
#[derive(Debug)]
struct Node {
    loc: Option<Loc>,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

/// A mapping key. Keys are read as strings so that a host named `010` or
/// `1234` keeps its spelling instead of becoming a number.
#[derive(Debug)]
struct Key {
    loc: Option<Loc>,
    name: String,
}

fn loc_of(l: &Location) -> Option<Loc> {
    let (line, col) = (l.line(), l.column());
    if line == 0 {
        return None;
    }
    Some(Loc::new(
        usize::try_from(line).unwrap_or(usize::MAX),
        usize::try_from(col).unwrap_or(0),
    ))
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Spanned::<Kind>::deserialize(d)?;
        Ok(Node {
            loc: loc_of(&s.referenced),
            kind: s.value,
        })
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Spanned::<String>::deserialize(d)?;
        Ok(Key {
            loc: loc_of(&s.referenced),
            name: s.value,
        })
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KindVisitor)
    }
}

struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = Kind;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }
    fn visit_none<E>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
        d.deserialize_any(KindVisitor)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Kind, E> {
        Ok(Kind::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Kind, E> {
        Ok(Kind::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Kind, E> {
        Ok(Kind::Uint(v))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Kind, E> {
        // Too big for JSON integers; keep the digits rather than round.
        Ok(Kind::Str(v.to_string()))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Kind, E> {
        Ok(Kind::Str(v.to_string()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Kind, E> {
        Ok(Kind::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Kind, E> {
        Ok(Kind::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Kind, E> {
        Ok(Kind::Str(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Kind, E> {
        Ok(Kind::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Kind, A::Error> {
        let mut items = Vec::new();
        while let Some(n) = a.next_element::<Node>()? {
            items.push(n);
        }
        Ok(Kind::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Kind, A::Error> {
        let mut entries = Vec::new();
        while let Some(k) = a.next_key::<Key>()? {
            let v = a.next_value::<Node>()?;
            entries.push((k, v));
        }
        Ok(Kind::Map(entries))
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
        d.deserialize_any(KindVisitor)
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _a: A) -> Result<Kind, A::Error> {
        Err(de::Error::custom("unexpected tagged value"))
    }
}

impl Kind {
    fn what(&self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) | Kind::Uint(_) | Kind::Float(_) => "a number",
            Kind::Str(_) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }
}

fn to_json(node: Node) -> Value {
    match node.kind {
        Kind::Null => Value::Null,
        Kind::Bool(b) => Value::Bool(b),
        Kind::Int(i) => Value::from(i),
        Kind::Uint(u) => Value::from(u),
        Kind::Float(f) => Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(f.to_string())),
        Kind::Str(s) => Value::String(s),
        Kind::Seq(items) => Value::Array(items.into_iter().map(to_json).collect()),
        Kind::Map(entries) => {
            let mut m = Map::new();
            for (k, v) in entries {
                m.insert(k.name, to_json(v));
            }
            Value::Object(m)
        }
    }
}

fn syntax_error(source: &Path, e: &serde_saphyr::Error) -> InventoryError {
    let inner = e.without_snippet();
    let msg = serde_saphyr::DefaultMessageFormatter.format_message(inner);
    // The library's own rendering adds the location and a snippet; we want
    // one line in our "file:line:col: message" shape.
    let msg: String = msg
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    // Reword the few messages that talk about the library's API or internals
    // rather than about the inventory.
    let msg = if let Some((head, _)) = msg.split_once(", set DuplicateKeyPolicy") {
        format!("{head} (each key may appear only once in a mapping)")
    } else if msg.contains("budget breached: Depth") || msg.contains("recursion limit") {
        "nesting is too deep (more than 64 levels)".to_string()
    } else if msg.contains("null into string") {
        "a null key (`~` or empty) cannot name a group, host or variable".to_string()
    } else {
        msg
    };
    InventoryError::at(
        source,
        e.location().as_ref().and_then(loc_of),
        format!("invalid YAML: {msg}"),
    )
}

/// Stack for the parsing thread. serde-saphyr's depth budget (64 nested
/// collections) bounds recursion, but an unoptimised build spends tens of
/// kilobytes per level, more than a 2 MiB test or worker thread has. A
/// dedicated thread makes the limit independent of the caller's stack; the
/// memory is only reserved, not touched.
const PARSER_STACK: usize = 64 * 1024 * 1024;

pub(super) fn parse(text: &str, source: &Path) -> Result<Inventory, InventoryError> {
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("inventory-yaml".into())
            .stack_size(PARSER_STACK)
            .spawn_scoped(scope, || parse_here(text, source))
            .map_err(|e| {
                InventoryError::new(source, format!("cannot start the YAML parser: {e}"))
            })?;
        worker.join().unwrap_or_else(|_| {
            Err(InventoryError::new(
                source,
                "internal error: the YAML parser panicked on this input",
            ))
        })
    })
}

fn parse_here(text: &str, source: &Path) -> Result<Inventory, InventoryError> {
    let root: Node = serde_saphyr::from_str(text).map_err(|e| syntax_error(source, &e))?;
    let mut b = Builder::new(source);
    match root.kind {
        // An empty file (or a lone `---`) is an empty inventory.
        Kind::Null => {}
        Kind::Map(entries) => {
            for (key, node) in entries {
                if key.name == "plugin" && matches!(node.kind, Kind::Str(_)) {
                    return Err(b.err(
                        key.loc,
                        "this is an inventory plugin configuration (`plugin:`); \
                         pushscan reads static inventories only",
                    ));
                }
                parse_group(&mut b, &key, node)?;
            }
        }
        other => {
            return Err(b.err(
                root.loc,
                format!(
                    "a YAML inventory must be a mapping of group names (like `all:`), found {}",
                    other.what()
                ),
            ))
        }
    }
    b.finish()
}

/// One group: null, or a mapping with `hosts`, `vars` and `children`.
/// Recursion depth is bounded by serde-saphyr's nesting budget.
fn parse_group(b: &mut Builder, name: &Key, node: Node) -> Result<(), InventoryError> {
    let group = name.name.as_str();
    if group.is_empty() {
        return Err(b.err(name.loc, "empty group name"));
    }
    b.add_group(group);
    let entries = match node.kind {
        Kind::Null => return Ok(()),
        Kind::Map(entries) => entries,
        other => {
            return Err(b.err(
                node.loc,
                format!(
                "group `{group}` must be a mapping (with hosts, vars, children) or empty, found {}",
                other.what()
            ),
            ))
        }
    };
    for (key, value) in entries {
        let section = key.name.as_str();
        if !matches!(section, "hosts" | "vars" | "children") {
            return Err(b.err(
                key.loc,
                format!(
                    "unexpected key `{section}` in group `{group}`: only `hosts`, `vars` and \
                     `children` are valid (a group nested without `children:`?)"
                ),
            ));
        }
        // Ansible accepts a bare string for a section and reads it as a
        // one-entry mapping (`hosts: web01`).
        let items: Vec<(Key, Node)> = match value.kind {
            Kind::Null => continue,
            Kind::Map(items) => items,
            Kind::Str(s) => vec![(
                Key {
                    loc: value.loc,
                    name: s,
                },
                Node {
                    loc: value.loc,
                    kind: Kind::Null,
                },
            )],
            other => {
                return Err(b.err(
                    value.loc,
                    format!(
                        "`{section}` of group `{group}` must be a mapping, found {}",
                        other.what()
                    ),
                ))
            }
        };
        match section {
            "hosts" => {
                for (host_key, host_node) in items {
                    parse_host(b, group, &host_key, host_node)?;
                }
            }
            "vars" => {
                for (var, v) in items {
                    let def = VarDef {
                        key_loc: var.loc,
                        val_loc: v.loc,
                        value: to_json(v),
                    };
                    b.set_group_var(group, &var.name, def)?;
                }
            }
            _ => {
                for (child, child_node) in items {
                    parse_group(b, &child, child_node)?;
                    b.add_child(group, &child.name, child.loc)?;
                }
            }
        }
    }
    Ok(())
}

fn parse_host(b: &mut Builder, group: &str, key: &Key, node: Node) -> Result<(), InventoryError> {
    let (names, port) = expand_host_pattern(&key.name).map_err(|m| b.err(key.loc, m))?;
    let vars = match node.kind {
        Kind::Null => Vec::new(),
        Kind::Map(vars) => vars,
        other => {
            return Err(b.err(
                node.loc,
                format!(
                    "host `{}` must be followed by nothing or a mapping of variables, found {}",
                    key.name,
                    other.what()
                ),
            ))
        }
    };
    let vars: Vec<(Key, VarDef)> = vars
        .into_iter()
        .map(|(k, v)| {
            let def = VarDef {
                key_loc: k.loc,
                val_loc: v.loc,
                value: to_json(v),
            };
            (k, def)
        })
        .collect();
    for name in &names {
        b.add_host(group, name);
        if let Some(p) = port {
            let def = VarDef {
                value: Value::from(p),
                key_loc: key.loc,
                val_loc: key.loc,
            };
            b.set_host_var(name, "ansible_port", def)?;
        }
        for (k, def) in &vars {
            b.set_host_var(name, &k.name, def.clone())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Connection;

    fn p(text: &str) -> Result<Inventory, InventoryError> {
        parse(text, Path::new("t.yml"))
    }

    #[test]
    fn minimal() {
        let inv = p("all:\n  hosts:\n    a:\n    b:\n      ansible_port: 2222\n").unwrap();
        assert_eq!(inv.hosts.len(), 2);
        assert_eq!(inv.hosts[1].port, Some(2222));
        assert_eq!(inv.groups["ungrouped"].hosts, vec!["a", "b"]);
        assert!(inv.hosts[0].groups.is_empty());
    }

    #[test]
    fn numeric_host_names_keep_spelling() {
        let inv = p("all:\n  hosts:\n    010:\n    1234:\n").unwrap();
        assert_eq!(inv.hosts[0].name, "010");
        assert_eq!(inv.hosts[1].name, "1234");
    }

    #[test]
    fn string_section_is_one_entry() {
        let inv = p("web:\n  hosts: w1\n").unwrap();
        assert_eq!(inv.hosts[0].name, "w1");
        assert_eq!(inv.hosts[0].groups, vec!["web"]);
    }

    #[test]
    fn syntax_error_has_location() {
        let e = p("all:\n  hosts: [\n").unwrap_err();
        assert!(e.line.is_some() && e.col.is_some(), "{e}");
        assert!(e.message.starts_with("invalid YAML"));
        assert!(!e.message.contains('\n'));
    }

    #[test]
    fn library_messages_are_reworded() {
        let e = p("all:\n  hosts:\n    a:\n    a:\n").unwrap_err();
        assert!(e.message.contains("duplicate"), "{e}");
        assert!(!e.message.contains("DuplicateKeyPolicy"), "{e}");
        let e = p("all:\n  hosts:\n    ~:\n").unwrap_err();
        assert_eq!((e.line, e.col), (Some(3), Some(5)), "{e}");
        assert!(e.message.contains("null key"), "{e}");
        let deep = format!("a: {}{}", "[".repeat(100), "]".repeat(100));
        assert!(p(&deep).unwrap_err().message.contains("too deep"));
    }

    #[test]
    fn list_for_hosts_is_an_error() {
        let e = p("all:\n  hosts:\n    - a\n    - b\n").unwrap_err();
        assert_eq!((e.line, e.col), (Some(3), Some(5)), "{e}");
    }

    #[test]
    fn unknown_key_is_an_error() {
        let e = p("all:\n  host:\n    a:\n").unwrap_err();
        assert_eq!((e.line, e.col), (Some(2), Some(3)), "{e}");
    }

    #[test]
    fn plugin_config_is_refused() {
        let e = p("plugin: amazon.aws.aws_ec2\nregions: [x]\n").unwrap_err();
        assert!(e.message.contains("plugin"));
    }

    #[test]
    fn scalar_root_is_an_error() {
        let e = p("just a string\n").unwrap_err();
        assert_eq!(e.line, Some(1));
    }

    #[test]
    fn host_with_port_suffix() {
        let inv = p("all:\n  hosts:\n    \"web:2200\":\n").unwrap();
        assert_eq!(inv.hosts[0].name, "web");
        assert_eq!(inv.hosts[0].port, Some(2200));
    }

    #[test]
    fn json_inventory() {
        let inv =
            p(r#"{"all": {"children": {"w": {"hosts": {"h": {"ansible_connection": "psrp"}}}}}}"#)
                .unwrap();
        assert_eq!(inv.hosts[0].connection, Connection::Winrm);
    }

    #[test]
    fn vars_keep_types() {
        let inv = p(
            "all:\n  vars:\n    a: yes\n    b: '5'\n    c: 5\n    d: [1, x]\n  hosts:\n    h:\n",
        )
        .unwrap();
        let v = &inv.hosts[0].vars;
        assert_eq!(v["a"], Value::Bool(true));
        assert_eq!(v["b"], Value::from("5"));
        assert_eq!(v["c"], Value::from(5));
        assert_eq!(v["d"], serde_json::json!([1, "x"]));
    }
}
