//! The YAML inventory format (`all:` with `hosts:`, `vars:`, `children:`),
//! which also covers JSON inventories since JSON is YAML.
//!
//! The text is read into a located tree by [`super::yaml11`], which types
//! unquoted values as Ansible's PyYAML does; walking that tree follows
//! Ansible's `yaml` inventory plugin, except that structure Ansible would
//! skip with a warning (a list where a mapping belongs, an unknown key in a
//! group) is an error here: a skipped section means hosts that are silently
//! not scanned. Names (groups, hosts, variables) must be strings, as Ansible
//! requires: an unquoted `010:` is the number 8 to YAML, and is refused
//! rather than guessed at.

use std::path::Path;

use serde_json::Value;

use super::yaml11::{self, Kind, Node, Schema};
use super::{Builder, Inventory, InventoryError, VarDef};

pub(super) fn parse(text: &str, source: &Path) -> Result<Inventory, InventoryError> {
    let mut b = Builder::new(source);
    let root = tree(&b, text)?;
    read_tree(&mut b, root)?;
    b.finish()
}

/// The document as a located tree (`None` for an empty one); errors are
/// YAML syntax errors, located.
pub(super) fn tree(b: &Builder, text: &str) -> Result<Option<Node>, InventoryError> {
    yaml11::parse(text, Schema::Yaml11)
        .map_err(|e| b.err(e.loc, format!("invalid YAML: {}", e.message)))
}

/// Whether a parsed document has the shape of a YAML inventory at all (a
/// mapping, or empty), as opposed to INI text that happens to parse as a
/// YAML scalar or list.
pub(super) fn is_inventory_shaped(root: &Option<Node>) -> bool {
    root.as_ref()
        .is_none_or(|n| matches!(n.kind, Kind::Map(_) | Kind::Null))
}

/// Add the groups, hosts and variables of a parsed YAML inventory.
pub(super) fn read_tree(b: &mut Builder, root: Option<Node>) -> Result<(), InventoryError> {
    // An empty file (or a lone `---`) is an empty inventory.
    let Some(root) = root else { return Ok(()) };
    let entries = match root.kind {
        Kind::Map(entries) => entries,
        Kind::Null => return Ok(()),
        other => {
            return Err(b.err(
                root.loc,
                format!(
                    "a YAML inventory must be a mapping of group names (like `all:`), found {}",
                    other.what()
                ),
            ))
        }
    };
    for (key, node) in &entries {
        if matches!(&key.kind, Kind::Str(k) if k == "plugin") && is_truthy(node) {
            return Err(b.err(
                key.loc,
                "this is an inventory plugin configuration (`plugin:`); pushscan reads \
                 static inventories only and runs no plugin: save what Ansible makes of it \
                 with `ansible-inventory -i FILE --list > inventory.json` and give that file",
            ));
        }
    }
    for (key, node) in entries {
        parse_group(b, &key, node)?;
    }
    Ok(())
}

/// Python truthiness, which Ansible applies in a few places (`plugin:`,
/// `host: ""` meaning no variables).
fn is_truthy(node: &Node) -> bool {
    match &node.kind {
        Kind::Null => false,
        Kind::Bool(b) => *b,
        Kind::Int(i) => *i != 0,
        Kind::Uint(u) => *u != 0,
        Kind::Float(f) => *f != 0.0,
        Kind::Str(s) | Kind::Time(s) => !s.is_empty(),
        Kind::Seq(items) => !items.is_empty(),
        Kind::Map(entries) => !entries.is_empty(),
    }
}

/// A group, host or variable name: a string, as Ansible requires.
fn name_of(b: &Builder, key: &Node, what: &str) -> Result<String, InventoryError> {
    match &key.kind {
        Kind::Str(s) => Ok(s.clone()),
        Kind::Null => Err(b.err(
            key.loc,
            "a null key (`~` or empty) cannot name a group, host or variable",
        )),
        other => {
            let value = key.clone().into_json();
            Err(b.err(
                key.loc,
                format!(
                    "{what} name {} is read by YAML as {} ({value}); put it in quotes \
                     (Ansible requires names to be strings)",
                    key.shown(),
                    other.what(),
                ),
            ))
        }
    }
}

/// One group: null, or a mapping with `hosts`, `vars` and `children`.
/// Recursion depth is bounded by the YAML reader's nesting limit.
fn parse_group(b: &mut Builder, name: &Node, node: Node) -> Result<(), InventoryError> {
    let group = name_of(b, name, "group")?;
    if group.is_empty() {
        return Err(b.err(name.loc, "empty group name"));
    }
    b.add_group(&group);
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
        let section = name_of(b, &key, "section")?;
        if !matches!(section.as_str(), "hosts" | "vars" | "children") {
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
        let items: Vec<(Node, Node)> = match value.kind {
            Kind::Null => continue,
            Kind::Map(items) => items,
            Kind::Str(s) => vec![(
                Node {
                    loc: value.loc,
                    kind: Kind::Str(s),
                    raw: None,
                },
                Node {
                    loc: value.loc,
                    kind: Kind::Null,
                    raw: None,
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
        match section.as_str() {
            "hosts" => {
                for (host_key, host_node) in items {
                    parse_host(b, &group, &host_key, host_node)?;
                }
            }
            "vars" => {
                for (var, v) in items {
                    let var_name = name_of(b, &var, "variable")?;
                    let val_loc = v.loc;
                    let def = VarDef::new(v.into_json(), var.loc, val_loc);
                    b.set_group_var(&group, &var_name, def)?;
                }
            }
            _ => {
                for (child, child_node) in items {
                    let child_name = name_of(b, &child, "group")?;
                    parse_group(b, &child, child_node)?;
                    b.add_child(&group, &child_name, child.loc)?;
                }
            }
        }
    }
    Ok(())
}

fn parse_host(b: &mut Builder, group: &str, key: &Node, node: Node) -> Result<(), InventoryError> {
    let entry = name_of(b, key, "host")?;
    let (names, port) = b.expand_hosts(&entry, key.loc)?;
    let vars = match node.kind {
        // `host: ""` (anything false in Python) means no variables.
        _ if !is_truthy(&node) => Vec::new(),
        Kind::Map(vars) => vars,
        other => {
            return Err(b.err(
                node.loc,
                format!(
                "host `{entry}` must be followed by nothing or a mapping of variables, found {}",
                other.what()
            ),
            ))
        }
    };
    let mut defs: Vec<(String, VarDef)> = Vec::with_capacity(vars.len());
    for (k, v) in vars {
        let name = name_of(b, &k, "variable")?;
        let val_loc = v.loc;
        defs.push((name, VarDef::new(v.into_json(), k.loc, val_loc)));
    }
    for name in &names {
        b.add_host(group, name);
        if let Some(p) = port {
            let def = VarDef::new(Value::from(p), key.loc, key.loc);
            b.set_host_var(name, "ansible_port", def)?;
        }
        for (k, def) in &defs {
            b.set_host_var(name, k, def.clone())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn numeric_host_names_must_be_quoted() {
        // YAML reads an unquoted 010 as the number 8; Ansible refuses it.
        let e = p("all:\n  hosts:\n    010:\n").unwrap_err();
        assert_eq!((e.line, e.col), (Some(3), Some(5)), "{e}");
        assert!(
            e.message.contains("`010`") && e.message.contains("(8)"),
            "{e}"
        );
        let inv = p("all:\n  hosts:\n    '010':\n    \"1234\":\n").unwrap();
        assert_eq!(inv.hosts[0].name, "010");
        assert_eq!(inv.hosts[1].name, "1234");
        let e = p("all:\n  vars:\n    yes: 1\n").unwrap_err();
        assert!(e.message.contains("variable name `yes`"), "{e}");
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
    fn empty_documents_are_empty_inventories() {
        for t in ["", "# only a comment\n", "---\n", "---\n...\n"] {
            assert!(p(t).unwrap().hosts.is_empty(), "{t:?}");
        }
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
        assert_eq!(inv.hosts[0].connection.name(), "winrm");
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
