//! Ansible's inventory list JSON, both ways, and the `--graph` tree.
//!
//! `pushscan inventory --list` must print what `ansible-inventory --list`
//! prints for the same file, so that an operator can diff the two and see
//! that pushscan reads their inventory as Ansible does
//! (`tests/inventory_ansible.rs` holds it to that). The shape is Ansible's
//! (ansible-core 2.19, `cli/inventory.py`): one entry per group reachable
//! from `all`, with `hosts` (never for `all`), `children` and, with
//! `--export`, `vars`, empty keys and then empty groups left out although
//! their parents still name them; `_meta.hostvars` with every host's merged
//! variables (its own, with `--export`), hosts without any left out;
//! Ansible's internal variable names filtered out; keys sorted.
//!
//! The same shape is Ansible's inventory *script* format, so it is also
//! how a sweep stores the inventory it used: [`stored_json`] writes the
//! export form of every host and group, unfiltered, plus a `_meta.pushscan`
//! entry (ignored by Ansible) with the host order and the key files as
//! resolved, and `read_into` reads any list JSON back the way Ansible's
//! script plugin does. Reading a stored inventory gives back an identical
//! [`Inventory`], whatever sources (files, LDAP) it came from, so `resume`
//! never needs the sources again.

use std::collections::{BTreeMap, HashSet, VecDeque};

use serde_json::{Map, Value};

use super::yaml11::{self, Kind, Node, Schema};
use super::{Builder, Host, Inventory, InventoryError, VarDef};

/// Variable names `ansible-inventory` never prints (ansible-core's
/// `INTERNAL_STATIC_VARS`): Ansible sets them itself.
const INTERNAL_VARS: &[&str] = &[
    "ansible_async_path",
    "ansible_collection_name",
    "ansible_config_file",
    "ansible_dependent_role_names",
    "ansible_diff_mode",
    "ansible_facts",
    "ansible_forks",
    "ansible_inventory_sources",
    "ansible_limit",
    "ansible_play_batch",
    "ansible_play_hosts",
    "ansible_play_hosts_all",
    "ansible_play_role_names",
    "ansible_playbook_python",
    "ansible_role_name",
    "ansible_role_names",
    "ansible_run_tags",
    "ansible_skip_tags",
    "ansible_verbosity",
    "ansible_version",
    "inventory_dir",
    "inventory_file",
    "inventory_hostname",
    "inventory_hostname_short",
    "groups",
    "group_names",
    "hostvars",
    "playbook_dir",
    "play_hosts",
    "role_name",
    "role_names",
    "role_path",
    "role_uuid",
];

/// What ansible-core 2.19 writes as `_meta.profile` (its JSON decoding
/// profile for inventory output).
const PROFILE: &str = "inventory_legacy";

/// Longest `--graph` output, in lines: a group reached through several
/// parents is drawn under each, which a diamond-shaped group graph can
/// multiply without end.
pub const MAX_GRAPH_LINES: usize = 1_000_000;

fn vars_json(vars: &BTreeMap<String, Value>, filter: bool) -> Map<String, Value> {
    vars.iter()
        .filter(|(k, _)| !filter || !INTERNAL_VARS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Every group reachable from `all`, each once, breadth first.
fn reachable(inv: &Inventory) -> Vec<&super::Group> {
    let mut out = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut queue: VecDeque<&str> = VecDeque::from(["all"]);
    while let Some(name) = queue.pop_front() {
        if !seen.insert(name) {
            continue;
        }
        if let Some(g) = inv.groups.get(name) {
            out.push(g);
            queue.extend(g.children.iter().map(String::as_str));
        }
    }
    out
}

fn build(
    inv: &Inventory,
    selected: Option<&[&Host]>,
    export: bool,
    filter: bool,
) -> Map<String, Value> {
    let hosts: Vec<&Host> = match selected {
        Some(s) => s.to_vec(),
        None => inv.hosts.iter().collect(),
    };
    let available: HashSet<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    let mut out = Map::new();
    for g in reachable(inv) {
        let mut entry = Map::new();
        if g.name != "all" {
            let hs: Vec<Value> = g
                .hosts
                .iter()
                .filter(|h| available.contains(h.as_str()))
                .map(|h| Value::from(h.as_str()))
                .collect();
            if !hs.is_empty() {
                entry.insert("hosts".into(), Value::Array(hs));
            }
        }
        if !g.children.is_empty() {
            let cs = g.children.iter().map(|c| Value::from(c.as_str())).collect();
            entry.insert("children".into(), Value::Array(cs));
        }
        if export {
            let vars = vars_json(&g.vars, filter);
            if !vars.is_empty() {
                entry.insert("vars".into(), Value::Object(vars));
            }
        }
        if !entry.is_empty() {
            out.insert(g.name.clone(), Value::Object(entry));
        }
    }
    let mut hostvars = Map::new();
    for h in hosts {
        let vars = vars_json(if export { &h.own_vars } else { &h.vars }, filter);
        if !vars.is_empty() {
            hostvars.insert(h.name.clone(), Value::Object(vars));
        }
    }
    let mut meta = Map::new();
    meta.insert("hostvars".into(), Value::Object(hostvars));
    meta.insert("profile".into(), Value::from(PROFILE));
    out.insert("_meta".into(), Value::Object(meta));
    out
}

/// `ansible-inventory --list` (`--list --export` with `export`) for the
/// `selected` hosts (every host when `None`), as a JSON value.
pub fn list_json(inv: &Inventory, selected: Option<&[&Host]>, export: bool) -> Value {
    Value::Object(build(inv, selected, export, true))
}

/// `ansible-inventory --host NAME` (`--export`: the host's own variables).
pub fn host_json(host: &Host, export: bool) -> Value {
    Value::Object(vars_json(
        if export { &host.own_vars } else { &host.vars },
        true,
    ))
}

/// JSON as `ansible-inventory` writes it: keys sorted, four-space indent,
/// followed by a newline.
pub fn to_text(v: &Value) -> String {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    // A Value always serializes; the buffer is UTF-8 by construction.
    if serde::Serialize::serialize(&sorted(v), &mut ser).is_err() {
        return format!("{v}\n");
    }
    let mut s = String::from_utf8_lossy(&buf).into_owned();
    s.push('\n');
    s
}

/// `v` with every object's keys in order (whatever map serde_json uses).
fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                out.insert(k.clone(), sorted(&m[k]));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// `ansible-inventory --graph [GROUP]`: the group tree from `group`, hosts
/// under the groups that list them. Unlike Ansible 2.19, which draws every
/// host whatever the `--limit`, only the `selected` hosts are drawn.
pub fn graph(inv: &Inventory, group: &str, selected: Option<&[&Host]>) -> Option<String> {
    inv.groups.get(group)?;
    let available: Option<HashSet<&str>> =
        selected.map(|s| s.iter().map(|h| h.name.as_str()).collect());
    let name = |text: &str, depth: usize| -> String {
        if depth == 0 {
            text.to_string()
        } else {
            format!("{}--{text}", "  |".repeat(depth))
        }
    };
    let mut lines: Vec<String> = Vec::new();
    // Depth-first, children before hosts, as Ansible's recursion.
    enum Item<'a> {
        Group(&'a str, usize),
        Host(&'a str, usize),
    }
    let mut stack = vec![Item::Group(group, 0)];
    while let Some(item) = stack.pop() {
        if lines.len() >= MAX_GRAPH_LINES {
            lines.push(format!("(graph cut at {MAX_GRAPH_LINES} lines)"));
            break;
        }
        match item {
            Item::Host(h, depth) => lines.push(name(h, depth)),
            Item::Group(g, depth) => {
                lines.push(name(&format!("@{g}:"), depth));
                let Some(grp) = inv.groups.get(g) else {
                    continue;
                };
                if g != "all" {
                    for h in grp.hosts.iter().rev() {
                        if available.as_ref().is_none_or(|a| a.contains(h.as_str())) {
                            stack.push(Item::Host(h, depth + 1));
                        }
                    }
                }
                for c in grp.children.iter().rev() {
                    stack.push(Item::Group(c, depth + 1));
                }
            }
        }
    }
    let mut text = lines.join("\n");
    text.push('\n');
    Some(text)
}

/// The inventory as a run stores it: the export form of every group and
/// host (nothing filtered), plus `_meta.pushscan` with the hosts in order
/// and the key files as resolved where the inventory was read.
/// [`parse`](super::parse) reads it back into an identical [`Inventory`].
pub fn stored_json(inv: &Inventory) -> String {
    let mut out = build(inv, None, true, false);
    let mut extra = Map::new();
    extra.insert(
        "hosts".into(),
        Value::Array(
            inv.hosts
                .iter()
                .map(|h| Value::from(h.name.as_str()))
                .collect(),
        ),
    );
    let key_files: Map<String, Value> = inv
        .hosts
        .iter()
        .filter_map(|h| {
            let k = h.key_file.as_ref()?;
            Some((
                h.name.clone(),
                Value::from(k.to_string_lossy().into_owned()),
            ))
        })
        .collect();
    extra.insert("key_files".into(), Value::Object(key_files));
    if inv.layered {
        // Variables files change the precedence (see `Inventory::layered`):
        // the merged variables are stored as they are.
        let vars: Map<String, Value> = inv
            .hosts
            .iter()
            .map(|h| (h.name.clone(), Value::Object(vars_json(&h.vars, false))))
            .collect();
        extra.insert("vars".into(), Value::Object(vars));
    }
    if let Some(Value::Object(meta)) = out.get_mut("_meta") {
        meta.insert("pushscan".into(), Value::Object(extra));
    }
    to_text(&Value::Object(out))
}

/// Whether `text` is a JSON document in the list shape: an object with
/// `_meta`, or a group given as a list of hosts or with a `hosts` or
/// `children` list. (A YAML inventory in JSON has none of these: its
/// groups' `hosts` and `children` are mappings.)
pub(crate) fn is_list_json(text: &str) -> bool {
    let t = text.trim_start_matches('\u{feff}').trim_start();
    if !t.starts_with('{') {
        return false;
    }
    let Ok(Value::Object(root)) = serde_json::from_str::<Value>(t) else {
        return false;
    };
    root.contains_key("_meta")
        || root.values().any(|g| match g {
            Value::Array(_) => true,
            Value::Object(m) => {
                matches!(m.get("hosts"), Some(Value::Array(_)))
                    || matches!(m.get("children"), Some(Value::Array(_)))
            }
            _ => false,
        })
}

fn str_of(b: &Builder, node: &Node, what: &str) -> Result<String, InventoryError> {
    match &node.kind {
        Kind::Str(s) => Ok(s.clone()),
        other => Err(b.err(
            node.loc,
            format!("{what} must be a string, found {}", other.what()),
        )),
    }
}

fn list_of(b: &Builder, node: Node, what: &str) -> Result<Vec<Node>, InventoryError> {
    match node.kind {
        Kind::Seq(items) => Ok(items),
        other => Err(b.err(
            node.loc,
            format!("{what} must be a list, found {}", other.what()),
        )),
    }
}

fn map_of(b: &Builder, node: Node, what: &str) -> Result<Vec<(Node, Node)>, InventoryError> {
    match node.kind {
        Kind::Map(entries) => Ok(entries),
        other => Err(b.err(
            node.loc,
            format!("{what} must be a mapping, found {}", other.what()),
        )),
    }
}

/// Read list JSON into `b` as Ansible's script plugin does: groups in
/// document order (`hosts`, then `vars`, then `children`; a list is a host
/// list; a mapping with none of those keys is a host named like the group,
/// with those variables), then `_meta.hostvars` for the hosts seen.
pub(crate) fn read_into(b: &mut Builder, text: &str) -> Result<(), InventoryError> {
    let root = yaml11::parse(text, Schema::Json)
        .map_err(|e| b.err(e.loc, format!("invalid JSON: {}", e.message)))?;
    let Some(root) = root else { return Ok(()) };
    let root_loc = root.loc;
    let entries = match root.kind {
        Kind::Map(entries) => entries,
        other => {
            return Err(b.err(
                root_loc,
                format!("list JSON must be an object, found {}", other.what()),
            ))
        }
    };
    let mut hostvars: Vec<(Node, Node)> = Vec::new();
    let mut key_files: Vec<(String, String)> = Vec::new();
    let mut merged_vars: Vec<(Node, Node)> = Vec::new();
    let mut groups: Vec<(Node, Node)> = Vec::new();
    for (key, value) in entries {
        if matches!(&key.kind, Kind::Str(k) if k == "_meta") {
            for (mk, mv) in map_of(b, value, "`_meta`")? {
                match &mk.kind {
                    Kind::Str(k) if k == "hostvars" => {
                        hostvars = map_of(b, mv, "`_meta.hostvars`")?;
                    }
                    Kind::Str(k) if k == "pushscan" => {
                        for (pk, pv) in map_of(b, mv, "`_meta.pushscan`")? {
                            match &pk.kind {
                                Kind::Str(k) if k == "hosts" => {
                                    for h in list_of(b, pv, "`_meta.pushscan.hosts`")? {
                                        let name = str_of(b, &h, "a host name")?;
                                        b.declare_host(&name);
                                    }
                                }
                                Kind::Str(k) if k == "vars" => {
                                    merged_vars = map_of(b, pv, "`_meta.pushscan.vars`")?;
                                }
                                Kind::Str(k) if k == "key_files" => {
                                    for (h, p) in map_of(b, pv, "`_meta.pushscan.key_files`")? {
                                        key_files.push((
                                            str_of(b, &h, "a host name")?,
                                            str_of(b, &p, "a key file")?,
                                        ));
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
        } else {
            groups.push((key, value));
        }
    }
    // Hosts in the order first listed by a group (a set in Ansible: order
    // does not matter, only membership).
    let mut seen: Vec<String> = Vec::new();
    let mut seen_set: HashSet<String> = HashSet::new();
    for (key, data) in groups {
        let group = str_of(b, &key, "a group name")?;
        b.add_group(&group);
        let (hosts, vars, children) = match data.kind {
            Kind::Map(items) => {
                let is_group = items.iter().any(|(k, _)| {
                    matches!(&k.kind, Kind::Str(s) if matches!(s.as_str(), "hosts" | "vars" | "children"))
                });
                if is_group {
                    let (mut hosts, mut vars, mut children) = (None, None, None);
                    for (k, v) in items {
                        match &k.kind {
                            Kind::Str(s) if s == "hosts" => hosts = Some(v),
                            Kind::Str(s) if s == "vars" => vars = Some(v),
                            Kind::Str(s) if s == "children" => children = Some(v),
                            _ => {}
                        }
                    }
                    (hosts, vars, children)
                } else {
                    let self_host = Node {
                        loc: key.loc,
                        kind: Kind::Seq(vec![key.clone()]),
                        raw: None,
                    };
                    let vars = Node {
                        loc: data.loc,
                        kind: Kind::Map(items),
                        raw: None,
                    };
                    (Some(self_host), Some(vars), None)
                }
            }
            _ => (Some(data), None, None),
        };
        if let Some(hosts) = hosts {
            for h in list_of(b, hosts, &format!("`{group}.hosts`"))? {
                let name = str_of(b, &h, "a host name")?;
                b.add_host(&group, &name);
                if seen_set.insert(name.clone()) {
                    seen.push(name);
                }
            }
        }
        if let Some(vars) = vars {
            for (k, v) in map_of(b, vars, &format!("`{group}.vars`"))? {
                let name = str_of(b, &k, "a variable name")?;
                let val_loc = v.loc;
                b.set_group_var(&group, &name, VarDef::new(v.into_json(), k.loc, val_loc))?;
            }
        }
        if let Some(children) = children {
            for c in list_of(b, children, &format!("`{group}.children`"))? {
                let child = str_of(b, &c, "a group name")?;
                b.add_group(&child);
                b.add_child(&group, &child, c.loc)?;
            }
        }
    }
    for (h, vars) in hostvars {
        let name = str_of(b, &h, "a host name")?;
        if !seen_set.contains(&name) {
            continue; // Ansible only reads variables of hosts some group lists.
        }
        for (k, v) in map_of(b, vars, &format!("`_meta.hostvars.{name}`"))? {
            let var = str_of(b, &k, "a variable name")?;
            let val_loc = v.loc;
            b.set_host_var(&name, &var, VarDef::new(v.into_json(), k.loc, val_loc))?;
        }
    }
    for (h, vars) in merged_vars {
        let name = str_of(b, &h, "a host name")?;
        let mut defs = Vec::new();
        for (k, v) in map_of(b, vars, &format!("`_meta.pushscan.vars.{name}`"))? {
            let var = str_of(b, &k, "a variable name")?;
            let val_loc = v.loc;
            defs.push((var, VarDef::new(v.into_json(), k.loc, val_loc)));
        }
        b.set_stored_vars(&name, defs)?;
    }
    for (h, p) in key_files {
        b.set_resolved_key_file(&h, p.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{parse, parse_ini, parse_yaml};
    use std::path::Path;

    const NESTED: &str = "all:
  vars: {x: all}
  hosts:
    h0:
  children:
    zeta:
      vars: {x: zeta, ansible_group_priority: 3}
      hosts:
        h1: {own: 1}
        h2:
    alpha:
      vars: {x: alpha}
      hosts:
        h1:
      children:
        beta:
          vars: {x: beta}
          hosts:
            h3: {ansible_ssh_private_key_file: keys/id}
    empty:
";

    #[test]
    fn stored_form_reads_back_identical() {
        let cases = [
            parse_yaml(NESTED, Path::new("/srv/inv/nested.yml")).unwrap(),
            parse_ini(
                "h9\n[web]\nw[1:3] a=1\n[web:vars]\nb=2\n[all:children]\nweb\n[db]\nd1 ansible_port=2222\n",
                Path::new("x.ini"),
            )
            .unwrap(),
            parse_yaml("", Path::new("e.yml")).unwrap(),
        ];
        for inv in cases {
            let text = stored_json(&inv);
            let back = parse(&text, &inv.source).unwrap();
            assert_eq!(back, inv, "{text}");
            // Under another name (a journal label), too: key files keep
            // the directory of the file that named them.
            let back = parse(&text, Path::new("a.yml + b.ini")).unwrap();
            assert_eq!(back.hosts, inv.hosts);
            assert_eq!(back.groups, inv.groups);
        }
    }

    #[test]
    fn flat_list_reads_back_the_same_hosts() {
        let inv = parse_yaml(NESTED, Path::new("nested.yml")).unwrap();
        let text = to_text(&list_json(&inv, None, false));
        let back = parse(&text, Path::new("list.json")).unwrap();
        let names = |i: &Inventory| {
            let mut v: Vec<String> = i.hosts.iter().map(|h| h.name.clone()).collect();
            v.sort();
            v
        };
        assert_eq!(names(&back), names(&inv));
        for h in &inv.hosts {
            let b = back.host(&h.name).unwrap();
            assert_eq!(b.vars, h.vars);
            assert_eq!(b.groups, h.groups);
        }
    }

    #[test]
    fn list_shape_is_ansibles() {
        let inv = parse_yaml(NESTED, Path::new("nested.yml")).unwrap();
        let v = list_json(&inv, None, false);
        assert_eq!(
            v["all"],
            serde_json::json!({"children": ["ungrouped", "zeta", "alpha", "empty"]})
        );
        assert!(v.get("empty").is_none(), "empty groups are left out");
        assert_eq!(v["ungrouped"]["hosts"], serde_json::json!(["h0"]));
        assert_eq!(v["_meta"]["hostvars"]["h1"]["x"], "zeta");
        assert_eq!(v["_meta"]["hostvars"]["h3"]["x"], "beta");
        assert_eq!(v["_meta"]["profile"], "inventory_legacy");
        assert!(v["_meta"]["hostvars"]["h1"]
            .get("ansible_group_priority")
            .is_none());
        let e = list_json(&inv, None, true);
        assert_eq!(e["zeta"]["vars"]["ansible_group_priority"], 3);
        assert_eq!(e["_meta"]["hostvars"]["h1"], serde_json::json!({"own": 1}));
        assert!(e["_meta"]["hostvars"].get("h2").is_none());
        let sel: Vec<&Host> = inv.select("beta").unwrap();
        let l = list_json(&inv, Some(&sel), false);
        assert!(l.get("zeta").is_none() && l.get("ungrouped").is_none());
        assert_eq!(l["alpha"]["children"], serde_json::json!(["beta"]));
    }

    #[test]
    fn graph_as_ansible_draws_it() {
        let inv = parse_yaml(NESTED, Path::new("nested.yml")).unwrap();
        assert_eq!(
            graph(&inv, "all", None).unwrap(),
            "@all:\n  |--@ungrouped:\n  |  |--h0\n  |--@zeta:\n  |  |--h1\n  |  |--h2\n  |--@alpha:\n  |  |--@beta:\n  |  |  |--h3\n  |  |--h1\n  |--@empty:\n"
        );
        assert_eq!(graph(&inv, "beta", None).unwrap(), "@beta:\n  |--h3\n");
        assert!(graph(&inv, "h1", None).is_none());
    }

    #[test]
    fn script_quirks() {
        // A list is a host list; a mapping without hosts/vars/children is a
        // host of the same name with those variables.
        let inv = parse(
            r#"{"web": ["a", "b"], "solo": {"x": 1}}"#,
            Path::new("s.json"),
        )
        .unwrap();
        assert_eq!(inv.groups["web"].hosts, ["a", "b"]);
        assert_eq!(inv.host("solo").unwrap().vars["x"], 1);
        let e = parse(
            r#"{"_meta": {"hostvars": {}}, "web": {"hosts": {"a": 1}}}"#,
            Path::new("s.json"),
        )
        .unwrap_err();
        assert_eq!(e.line, Some(1), "{e}");
        assert!(e.message.contains("web.hosts"), "{e}");
    }
}
