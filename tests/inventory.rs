//! Integration tests for `pushscan::inventory`: both file formats, Ansible's
//! variable precedence, host ranges, every selection operator, every error
//! path (with its line and column), and a no-panic sweep over garbage.

use std::path::{Path, PathBuf};

use pushscan::inventory::{self, Host, Inventory, InventoryError};
use serde_json::json;

fn yaml(text: &str) -> Inventory {
    match inventory::parse_yaml(text, Path::new("inv.yml")) {
        Ok(inv) => inv,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn ini(text: &str) -> Inventory {
    match inventory::parse_ini(text, Path::new("inv.ini")) {
        Ok(inv) => inv,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn yaml_err(text: &str) -> InventoryError {
    match inventory::parse_yaml(text, Path::new("inv.yml")) {
        Ok(inv) => panic!("expected an error, got {inv:#?}"),
        Err(e) => e,
    }
}

fn ini_err(text: &str) -> InventoryError {
    match inventory::parse_ini(text, Path::new("inv.ini")) {
        Ok(inv) => panic!("expected an error, got {inv:#?}"),
        Err(e) => e,
    }
}

fn names(hosts: &[&Host]) -> Vec<String> {
    hosts.iter().map(|h| h.name.clone()).collect()
}

fn sel(inv: &Inventory, pattern: &str) -> Vec<String> {
    match inv.select(pattern) {
        Ok(h) => names(&h),
        Err(e) => panic!("select({pattern:?}) failed: {e}"),
    }
}

fn sel_err(inv: &Inventory, pattern: &str) -> String {
    match inv.select(pattern) {
        Ok(h) => panic!("select({pattern:?}) should fail, got {:?}", names(&h)),
        Err(e) => e.to_string(),
    }
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

// ---------------------------------------------------------------------------
// Sample inventories.

#[test]
fn sample_localhost_loads() {
    let inv = inventory::load(&repo("inventories/localhost.yml")).unwrap();
    assert_eq!(inv.hosts.len(), 1);
    let h = &inv.hosts[0];
    assert_eq!(h.name, "localhost");
    assert_eq!(h.connection.name(), "local");
    assert_eq!(h.groups, vec!["demo"]);
    assert_eq!(sel(&inv, "demo"), vec!["localhost"]);
}

#[test]
fn sample_windows_loads() {
    let inv = inventory::load(&repo("inventories/example-windows.yml")).unwrap();
    assert_eq!(inv.hosts.len(), 5);
    for h in &inv.hosts {
        assert_eq!(h.connection.name(), "winrm", "{}", h.name);
        assert_eq!(h.port, Some(5985));
        assert!(h.groups.contains(&"windows".to_string()));
    }
    assert_eq!(
        sel(&inv, "ou_tokyo_sales"),
        vec![
            "tky-sales-pc01.corp.example.com",
            "tky-sales-pc02.corp.example.com",
            "tky-sales-pc03.corp.example.com"
        ]
    );
    let osk = inv.host("osk-keiri-pc02.corp.example.com").unwrap();
    assert_eq!(osk.address, "10.20.30.42");
    assert_eq!(osk.group_paths, vec![vec!["windows", "ou_osaka_keiri"]]);
    assert_eq!(osk.vars["office"], json!("osaka"));
}

#[test]
fn sample_linux_ini_loads() {
    let path = repo("inventories/example-linux.ini");
    let inv = inventory::load(&path).unwrap();
    assert_eq!(
        sel(&inv, "linux"),
        vec!["web01.example.com", "web02.example.com", "db01.example.com"]
    );
    let web02 = inv.host("web02.example.com").unwrap();
    assert_eq!(web02.address, "192.0.2.12");
    assert_eq!(web02.port, Some(2222));
    assert_eq!(web02.user.as_deref(), Some("scan"));
    assert_eq!(web02.connection.name(), "ssh");
    assert_eq!(
        web02.key_file.as_deref(),
        Some(Path::new("~/.ssh/pushscan_ed25519"))
    );
    // Host var beats group var.
    assert_eq!(
        inv.host("db01.example.com").unwrap().user.as_deref(),
        Some("dbadmin")
    );
}

// ---------------------------------------------------------------------------
// Groups and variable precedence.

const NESTED: &str = r#"
all:
  vars:
    v: all
    only_all: 1
  hosts:
    bare:
  children:
    europe:
      vars:
        v: europe
        region: eu
      children:
        france:
          vars:
            v: france
          children:
            lyon:
              vars:
                v: lyon
              hosts:
                lyon1:
                lyon2:
                  v: host
            paris:
              hosts:
                paris1:
        germany:
          hosts:
            berlin1:
    servers:
      hosts:
        lyon1:
"#;

#[test]
fn nested_groups_and_precedence() {
    let inv = yaml(NESTED);
    let lyon1 = inv.host("lyon1").unwrap();
    assert_eq!(lyon1.vars["v"], json!("lyon"));
    assert_eq!(lyon1.vars["region"], json!("eu"));
    assert_eq!(lyon1.vars["only_all"], json!(1));
    assert_eq!(lyon1.groups, vec!["europe", "france", "lyon", "servers"]);
    assert_eq!(
        lyon1.group_paths,
        vec![vec!["europe", "france", "lyon"], vec!["servers"]]
    );
    assert_eq!(inv.host("lyon2").unwrap().vars["v"], json!("host"));
    assert_eq!(inv.host("paris1").unwrap().vars["v"], json!("france"));
    assert_eq!(inv.host("berlin1").unwrap().vars["v"], json!("europe"));
    let bare = inv.host("bare").unwrap();
    assert_eq!(bare.vars["v"], json!("all"));
    assert!(bare.groups.is_empty());
    assert!(bare.group_paths.is_empty());
    assert_eq!(inv.groups["ungrouped"].hosts, vec!["bare"]);
    // First-seen order.
    let order: Vec<&str> = inv.hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(order, ["bare", "lyon1", "lyon2", "paris1", "berlin1"]);
    assert_eq!(inv.groups["europe"].children, vec!["france", "germany"]);
    assert_eq!(inv.groups["lyon"].hosts, vec!["lyon1", "lyon2"]);
}

#[test]
fn same_depth_merges_alphabetically() {
    // zeta is listed first but sorts last, so it wins.
    let inv = yaml(
        "zeta:\n  vars: {v: zeta}\n  hosts: {h:}\nalpha:\n  vars: {v: alpha}\n  hosts: {h:}\n",
    );
    assert_eq!(inv.host("h").unwrap().vars["v"], json!("zeta"));
    assert_eq!(inv.host("h").unwrap().groups, vec!["alpha", "zeta"]);
}

#[test]
fn deeper_group_beats_alphabet() {
    let inv = yaml(
        "z_top:\n  vars: {v: top}\n  hosts: {h:}\nparent:\n  children:\n    a_child:\n      vars: {v: child}\n      hosts: {h:}\n",
    );
    assert_eq!(inv.host("h").unwrap().vars["v"], json!("child"));
}

#[test]
fn group_priority_beats_alphabet() {
    let inv = yaml(
        "zeta:\n  vars: {v: zeta, ansible_group_priority: 1}\n  hosts: {h:}\nalpha:\n  vars: {v: alpha, ansible_group_priority: 10}\n  hosts: {h:}\n",
    );
    assert_eq!(inv.host("h").unwrap().vars["v"], json!("alpha"));
}

#[test]
fn group_defined_twice_merges() {
    let inv = yaml(
        "all:\n  children:\n    a:\n      hosts: {h1:}\n      vars: {x: 1}\n    b:\n      children:\n        a:\n          hosts: {h2:}\n          vars: {y: 2}\n",
    );
    assert_eq!(inv.groups["a"].hosts, vec!["h1", "h2"]);
    let h1 = inv.host("h1").unwrap();
    assert_eq!(h1.groups, vec!["a", "b"]);
    assert_eq!(h1.group_paths, vec![vec!["b", "a"]]);
    assert_eq!(h1.vars["x"], json!(1));
    assert_eq!(h1.vars["y"], json!(2));
}

#[test]
fn later_host_vars_win() {
    let inv = yaml("a:\n  hosts:\n    h: {x: 1, y: 1}\nb:\n  hosts:\n    h: {x: 2}\n");
    let h = inv.host("h").unwrap();
    assert_eq!(h.vars["x"], json!(2));
    assert_eq!(h.vars["y"], json!(1));
}

#[test]
fn connection_settings_resolve() {
    let inv = yaml(
        r#"
all:
  vars:
    ansible_user: fromall
  hosts:
    a:
      ansible_host: 10.0.0.1
      ansible_port: "2200"
      ansible_ssh_private_key_file: keys/id_a
    b:
      ansible_ssh_host: 10.0.0.2
      ansible_ssh_port: 2201
      ansible_ssh_user: legacy
    c:
      ansible_connection: psrp
    d:
      ansible_connection: paramiko
    e:
      ansible_connection: smart
    f:
      ansible_connection: ansible.builtin.winrm
    g:
      ansible_private_key_file: /abs/key
    w:
      ansible_connection: winrm
      ansible_ssh_port: 22
      ansible_winrm_port: 5986
  children:
    legacy_group:
      vars:
        ansible_ssh_user: grouplegacy
      hosts:
        l:
          ansible_user: hostuser
"#,
    );
    let a = inv.host("a").unwrap();
    assert_eq!(
        (a.address.as_str(), a.port, a.user.as_deref()),
        ("10.0.0.1", Some(2200), Some("fromall"))
    );
    assert_eq!(a.key_file.as_deref(), Some(Path::new("keys/id_a")));
    assert_eq!(a.vars["ansible_port"], json!("2200"));
    let b = inv.host("b").unwrap();
    assert_eq!(
        (b.address.as_str(), b.port, b.user.as_deref()),
        ("10.0.0.2", Some(2201), Some("legacy"))
    );
    assert_eq!(inv.host("c").unwrap().connection.name(), "winrm");
    assert_eq!(inv.host("d").unwrap().connection.name(), "ssh");
    assert_eq!(inv.host("e").unwrap().connection.name(), "ssh");
    assert_eq!(inv.host("f").unwrap().connection.name(), "winrm");
    assert_eq!(
        inv.host("g").unwrap().key_file.as_deref(),
        Some(Path::new("/abs/key"))
    );
    let h = inv.host("c").unwrap();
    assert_eq!((h.address.as_str(), h.port), ("c", None));
    // WinRM reads ansible_winrm_port, not ansible_ssh_port.
    assert_eq!(inv.host("w").unwrap().port, Some(5986));
    // Ansible's rule: the later name in the plugin's list wins at any level,
    // so a group's ansible_ssh_user beats a host's ansible_user.
    assert_eq!(inv.host("l").unwrap().user.as_deref(), Some("grouplegacy"));
}

#[test]
fn key_file_relative_to_inventory_dir() {
    let inv = inventory::parse_ini(
        "h ansible_ssh_private_key_file=keys/id\n",
        Path::new("/srv/inv/hosts.ini"),
    )
    .unwrap();
    assert_eq!(
        inv.hosts[0].key_file.as_deref(),
        Some(Path::new("/srv/inv/keys/id"))
    );
}

// ---------------------------------------------------------------------------
// INI.

#[test]
fn ini_structure() {
    let inv = ini(r#"
# comment
; another comment
loose1
loose2 ansible_port=2201

[web]
web1
web2   # trailing comment

[db]
db1

[prod:children]
web
db   # comment after a child

[prod:vars]
env=production

[late:vars]
x=1

[late:children]
"#);
    assert_eq!(inv.groups["ungrouped"].hosts, vec!["loose1", "loose2"]);
    assert_eq!(inv.host("loose2").unwrap().port, Some(2201));
    assert_eq!(inv.groups["prod"].children, vec!["web", "db"]);
    assert_eq!(inv.host("web2").unwrap().vars["env"], json!("production"));
    assert_eq!(inv.host("db1").unwrap().groups, vec!["db", "prod"]);
    assert_eq!(
        inv.host("db1").unwrap().group_paths,
        vec![vec!["prod", "db"]]
    );
    // [x:vars] before the section that declares x (here an empty
    // [x:children]) is fine.
    assert_eq!(inv.groups["late"].vars["x"], json!(1));
}

#[test]
fn ini_groups_must_be_declared_as_in_ansible() {
    // A child joins its parent when a section declares it, so children are
    // in the order they were declared, not listed.
    let inv = ini("[p:children]\ny\nz\n[z]\nhz\n[y]\nhy\n");
    assert_eq!(inv.groups["p"].children, vec!["z", "y"]);
    // A child no section declares, or [g:vars] for a group only ever used
    // as a child, is an error (Ansible: "includes undefined group",
    // "not valid for undefined group").
    let e = ini_err("[p:children]\ny\n[q]\nhq\n");
    assert_at(&e, "inv.ini", 2, 1);
    assert!(
        e.message.contains("[p:children]") && e.message.contains("`y`"),
        "{e}"
    );
    let e = ini_err("[q]\nh\n[x:vars]\na=1\n[p:children]\nx\n");
    assert_at(&e, "inv.ini", 3, 1);
    assert!(e.message.contains("[x:vars]"), "{e}");
}

#[test]
fn ini_literal_parsing() {
    let inv = ini(r#"
[g]
h a=22 b="22" c="'22'" d=True e=true f=[1,2] g="{'k': 'v'}" h='hello world' i=1.5 j=None k=010 l=ssh
[g:vars]
v_int=22
v_quoted="22"
v_single='x y'
v_bool=True
v_upper=FALSE
v_path=/usr/bin/python3
v_spaced = some words here
v_empty=
v_comment=23 # trailing
"#);
    let v = &inv.host("h").unwrap().vars;
    // Host lines: shell-split first (one quote layer goes), then literal_eval.
    assert_eq!(v["a"], json!(22));
    assert_eq!(v["b"], json!(22));
    assert_eq!(v["c"], json!("22"));
    assert_eq!(v["d"], json!(true));
    assert_eq!(v["e"], json!("true"));
    assert_eq!(v["f"], json!([1, 2]));
    assert_eq!(v["g"], json!({"k": "v"}));
    assert_eq!(v["h"], json!("hello world"));
    assert_eq!(v["i"], json!(1.5));
    assert_eq!(v["j"], json!(null));
    assert_eq!(v["k"], json!("010"));
    assert_eq!(v["l"], json!("ssh"));
    // :vars lines: literal_eval on the raw text after `=`.
    assert_eq!(v["v_int"], json!(22));
    assert_eq!(v["v_quoted"], json!("22"));
    assert_eq!(v["v_single"], json!("x y"));
    assert_eq!(v["v_bool"], json!(true));
    assert_eq!(v["v_upper"], json!("FALSE"));
    assert_eq!(v["v_path"], json!("/usr/bin/python3"));
    assert_eq!(v["v_spaced"], json!("some words here"));
    assert_eq!(v["v_empty"], json!(""));
    assert_eq!(v["v_comment"], json!(23));
}

#[test]
fn ini_all_vars_and_precedence() {
    let inv = ini(
        "[all:vars]\nv=all\n[parent:children]\nchild\n[parent:vars]\nv=parent\n[child]\nh\n[child:vars]\nv=child\n[other]\nh2\n",
    );
    assert_eq!(inv.host("h").unwrap().vars["v"], json!("child"));
    assert_eq!(inv.host("h2").unwrap().vars["v"], json!("all"));
}

#[test]
fn ini_bom_and_crlf() {
    let inv = ini("\u{feff}[web]\r\nw1 ansible_port=22\r\n");
    assert_eq!(inv.host("w1").unwrap().port, Some(22));
}

// ---------------------------------------------------------------------------
// Ranges.

#[test]
fn ranges_in_yaml() {
    let inv =
        yaml("web:\n  hosts:\n    web[01:03].example.com:\n      ansible_user: u\n    db-[a:c]:\n");
    let order: Vec<&str> = inv.hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        order,
        [
            "web01.example.com",
            "web02.example.com",
            "web03.example.com",
            "db-a",
            "db-b",
            "db-c"
        ]
    );
    assert_eq!(
        inv.host("web02.example.com").unwrap().user.as_deref(),
        Some("u")
    );
}

#[test]
fn ranges_in_ini() {
    let inv = ini("[web]\nweb[1:10:3] ansible_port=2222\nn[a:b]-[1:2]:2200\n");
    let order: Vec<&str> = inv.hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        order,
        ["web1", "web4", "web7", "web10", "na-1", "na-2", "nb-1", "nb-2"]
    );
    assert_eq!(inv.host("web7").unwrap().port, Some(2222));
    assert_eq!(inv.host("nb-2").unwrap().port, Some(2200));
}

#[test]
fn bad_range_is_located() {
    let e = yaml_err("web:\n  hosts:\n    web[03:1]:\n");
    assert_eq!((e.line, e.col), (Some(3), Some(5)), "{e}");
    let e = ini_err("[web]\n  web[1:x]\n");
    assert!(e.to_string().starts_with("inv.ini:2:3: "), "{e}");
}

// ---------------------------------------------------------------------------
// Selection.

const SELECT: &str = r#"
all:
  hosts:
    solo:
  children:
    web:
      hosts:
        web01:
        web02:
        web03:
    db:
      hosts:
        db01:
        web03:
    prod:
      children:
        web:
      hosts:
        db01:
    staging:
      hosts:
        db02:
    v6:
      hosts:
        "fe80::1":
        "2001:db8::2":
"#;

#[test]
fn select_all_and_star() {
    let inv = yaml(SELECT);
    let all = vec![
        "solo",
        "web01",
        "web02",
        "web03",
        "db01",
        "db02",
        "fe80::1",
        "2001:db8::2",
    ];
    assert_eq!(sel(&inv, "all"), all);
    assert_eq!(sel(&inv, "*"), all);
}

#[test]
fn select_names_and_groups() {
    let inv = yaml(SELECT);
    assert_eq!(sel(&inv, "web02"), ["web02"]);
    assert_eq!(sel(&inv, "db"), ["web03", "db01"]);
    assert_eq!(sel(&inv, "prod"), ["web01", "web02", "web03", "db01"]);
    assert_eq!(sel(&inv, "ungrouped"), ["solo"]);
}

#[test]
fn select_globs() {
    let inv = yaml(SELECT);
    assert_eq!(sel(&inv, "web0*"), ["web01", "web02", "web03"]);
    assert_eq!(sel(&inv, "db0?"), ["db01", "db02"]);
    assert_eq!(sel(&inv, "stag*"), ["db02"]);
    assert_eq!(sel(&inv, "*01"), ["web01", "db01"]);
}

#[test]
fn select_union_colon_and_comma() {
    let inv = yaml(SELECT);
    // Result in inventory order, no duplicates.
    assert_eq!(sel(&inv, "db:web01"), ["web01", "web03", "db01"]);
    assert_eq!(sel(&inv, "db,web01, web03"), ["web01", "web03", "db01"]);
}

#[test]
fn select_intersection_and_exclusion() {
    let inv = yaml(SELECT);
    assert_eq!(sel(&inv, "web:&db"), ["web03"]);
    assert_eq!(sel(&inv, "prod:!db"), ["web01", "web02"]);
    // Unions first, then intersections, then exclusions, regardless of order.
    assert_eq!(sel(&inv, "!web03:prod:&web"), ["web01", "web02"]);
    assert_eq!(sel(&inv, "&web,!web01,db,staging"), ["web03"]);
    // Exclusion-only patterns start from all.
    assert_eq!(sel(&inv, "!prod:!v6"), ["solo", "db02"]);
    // Intersection-only patterns too.
    assert_eq!(sel(&inv, "&db"), ["web03", "db01"]);
}

#[test]
fn select_exclusion_matching_nothing_is_fine() {
    let inv = yaml(SELECT);
    assert_eq!(sel(&inv, "web:!nosuchhost"), ["web01", "web02", "web03"]);
}

#[test]
fn select_unmatched_term_is_an_error() {
    let inv = yaml(SELECT);
    let e = sel_err(&inv, "web:wbe01");
    assert!(e.contains("`wbe01`"), "{e}");
    assert!(e.starts_with("inv.yml: "), "{e}");
    let e = sel_err(&inv, "web:&nosuch");
    assert!(e.contains("`nosuch`"), "{e}");
    let e = sel_err(&inv, "zz*");
    assert!(e.contains("`zz*`"), "{e}");
    assert!(sel_err(&inv, "").contains("empty"));
    assert!(sel_err(&inv, "web:!").contains("empty"));
}

#[test]
fn select_regex_is_refused() {
    let inv = yaml(SELECT);
    let e = sel_err(&inv, "~web0[12]");
    assert!(e.contains("regex patterns unsupported"), "{e}");
}

#[test]
fn select_ipv6_names() {
    let inv = yaml(SELECT);
    assert_eq!(sel(&inv, "fe80::1"), ["fe80::1"]);
    assert_eq!(sel(&inv, "fe80::1,2001:db8::2"), ["fe80::1", "2001:db8::2"]);
    assert_eq!(sel(&inv, "v6,!fe80::1"), ["2001:db8::2"]);
}

#[test]
fn select_subscripts() {
    let inv = yaml(SELECT);
    assert_eq!(sel(&inv, "web[0]"), ["web01"]);
    assert_eq!(sel(&inv, "web[-1]"), ["web03"]);
    assert_eq!(sel(&inv, "web[1:2]"), ["web02", "web03"]);
    assert_eq!(sel(&inv, "web[1:]:db01"), ["web02", "web03", "db01"]);
    assert!(sel_err(&inv, "web[7]").contains("web[7]"));
}

#[test]
fn select_from_file() {
    let inv = yaml(SELECT);
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("hosts.txt");
    std::fs::write(
        &list,
        "# targets for today\nweb02\n\n  db01  \n# web01\nstaging\n",
    )
    .unwrap();
    let p = format!("@{}", list.display());
    assert_eq!(sel(&inv, &p), ["web02", "db01", "db02"]);
    assert_eq!(sel(&inv, &format!("{p}:&prod")), ["web02", "db01"]);
    assert_eq!(sel(&inv, &format!("prod,!{p}")), ["web01", "web03"]);

    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, "web01\n\nweb99\n").unwrap();
    let e = sel_err(&inv, &format!("@{}", bad.display()));
    assert!(e.contains("bad.txt:3"), "{e}");
    assert!(e.contains("`web99`"), "{e}");

    let missing = dir.path().join("missing.txt");
    let e = sel_err(&inv, &format!("@{}", missing.display()));
    assert!(
        e.contains("missing.txt") && e.contains("cannot read"),
        "{e}"
    );
}

#[test]
fn host_lookup() {
    let inv = yaml(SELECT);
    assert!(inv.host("web01").is_some());
    assert!(inv.host("web").is_none());
}

// ---------------------------------------------------------------------------
// Errors, all with their location in the message.

fn assert_at(e: &InventoryError, file: &str, line: usize, col: usize) {
    let prefix = format!("{file}:{line}:{col}: ");
    assert!(
        e.to_string().starts_with(&prefix),
        "expected `{prefix}...`, got `{e}`"
    );
    assert_eq!((e.line, e.col), (Some(line), Some(col)));
}

#[test]
fn yaml_syntax_error_located() {
    let e = yaml_err("all:\n  hosts:\n    a: [1, 2\n");
    assert!(e.line.is_some() && e.col.is_some(), "{e}");
    assert!(e.to_string().starts_with("inv.yml:"), "{e}");
    let e = yaml_err("all:\n  hosts:\n    a:\n    a:\n");
    assert_at(&e, "inv.yml", 4, 5);
}

#[test]
fn yaml_structure_errors_located() {
    assert_at(&yaml_err("all:\n  hosts:\n    - a\n"), "inv.yml", 3, 5);
    assert_at(&yaml_err("all:\n  children: [a, b]\n"), "inv.yml", 2, 13);
    assert_at(&yaml_err("all:\n  vars: 5\n"), "inv.yml", 2, 9);
    assert_at(&yaml_err("web: [a]\n"), "inv.yml", 1, 6);
    assert_at(&yaml_err("all:\n  hosts:\n    a: [x]\n"), "inv.yml", 3, 8);
    assert_at(&yaml_err("all:\n  childern:\n    a:\n"), "inv.yml", 2, 3);
    assert_at(&yaml_err("- all\n"), "inv.yml", 1, 1);
}

#[test]
fn ini_errors_located() {
    assert_at(&ini_err("[web]\nh\n[web:hosts]\n"), "inv.ini", 3, 6);
    assert_at(&ini_err("[web server]\n"), "inv.ini", 1, 5);
    assert_at(&ini_err("[web]  extra\n"), "inv.ini", 1, 8);
    assert_at(&ini_err("[web]\nh novalue\n"), "inv.ini", 2, 3);
    assert_at(&ini_err("[web]\nh x='open\n"), "inv.ini", 2, 5);
    assert_at(&ini_err("[web:vars]\njustakey\n"), "inv.ini", 2, 1);
    assert_at(&ini_err("[web:children]\na b\n"), "inv.ini", 2, 1);
    assert_at(&ini_err("[web]\nh:99999\n"), "inv.ini", 2, 1);
    assert_at(&ini_err("---\nall:\n"), "inv.ini", 1, 1);
}

#[test]
fn port_range_enforced() {
    for bad in ["0", "65536", "-1", "'abc'", "22.5", "[22]"] {
        let e = yaml_err(&format!(
            "all:\n  hosts:\n    h:\n      ansible_port: {bad}\n"
        ));
        assert_at(&e, "inv.yml", 4, 21);
        assert!(e.message.contains("between 1 and 65535"), "{e}");
    }
    let e = ini_err("[g]\nh ansible_ssh_port=70000\n");
    assert_at(&e, "inv.ini", 2, 20);
    let e = ini_err("[g:vars]\nansible_port=0\n");
    assert_at(&e, "inv.ini", 2, 14);
    // A string holding a number is fine, and so are the bounds.
    let inv = yaml("all:\n  hosts:\n    a: {ansible_port: '65535'}\n    b: {ansible_port: 1}\n");
    assert_eq!(inv.host("a").unwrap().port, Some(65535));
    assert_eq!(inv.host("b").unwrap().port, Some(1));
}

#[test]
fn bad_connection_located() {
    let e = yaml_err("all:\n  vars:\n    ansible_connection: docker\n");
    assert_at(&e, "inv.yml", 3, 25);
    assert!(e.message.contains("docker"), "{e}");
    let e = ini_err("[g]\nh ansible_connection=network_cli\n");
    assert_at(&e, "inv.ini", 2, 22);
}

#[test]
fn templated_connection_settings_refused() {
    let e =
        yaml_err("all:\n  hosts:\n    h:\n      ansible_host: \"{{ inventory_hostname }}.corp\"\n");
    assert_at(&e, "inv.yml", 4, 21);
    assert!(e.message.contains("templated"), "{e}");
}

#[test]
fn secrets_refused_everywhere() {
    let secrets = [
        "ansible_password",
        "ansible_ssh_pass",
        "ansible_winrm_password",
        "ansible_become_password",
        "ansible_become_pass",
    ];
    for key in secrets {
        let cases = [
            (
                inventory::parse_yaml(
                    &format!("all:\n  hosts:\n    h:\n      {key}: hunter2\n"),
                    Path::new("s.yml"),
                ),
                (4, 7),
            ),
            (
                inventory::parse_yaml(
                    &format!("all:\n  children:\n    g:\n      vars:\n        {key}: hunter2\n"),
                    Path::new("s.yml"),
                ),
                (5, 9),
            ),
            (
                inventory::parse_ini(&format!("[g]\nh {key}=hunter2\n"), Path::new("s.ini")),
                (2, 3),
            ),
            (
                inventory::parse_ini(&format!("[g:vars]\n{key}=hunter2\n"), Path::new("s.ini")),
                (2, 1),
            ),
        ];
        for (result, (line, col)) in cases {
            let e = result.expect_err(key);
            assert_eq!((e.line, e.col), (Some(line), Some(col)), "{e}");
            let msg = e.to_string();
            assert!(msg.contains(key), "{msg}");
            assert!(
                msg.contains("secrets are not read from inventories"),
                "{msg}"
            );
            for way in [
                "PUSHSCAN_SSH_PASSWORD",
                "PUSHSCAN_PASSWORD",
                "--ask-pass",
                "ssh-agent",
            ] {
                assert!(msg.contains(way), "{msg} lacks {way}");
            }
        }
    }
}

#[test]
fn templated_secrets_and_malformed_vaults_refused() {
    let e = yaml_err("all:\n  vars:\n    ansible_password: \"{{ lookup('env', 'PW') }}\"\n");
    assert_at(&e, "inv.yml", 3, 5);
    assert!(
        e.message.contains("templated secrets are unsupported"),
        "{e}"
    );
    // A vaulted password is accepted (tests/inventory_layout.rs decrypts
    // them); one that is not a vault Ansible could open is refused, at the
    // value.
    let e = yaml_err("all:\n  vars:\n    ansible_become_pass: !vault |\n      $ANSIBLE_VAULT;1.1;AES256\n      6231\n");
    assert_at(&e, "inv.yml", 4, 7);
    assert!(e.message.contains("invalid vault"), "{e}");
}

#[test]
fn cycles_refused() {
    let e = yaml_err("a:\n  children:\n    b:\n      children:\n        a:\n");
    assert!(e.message.contains("cycle"), "{e}");
    assert_at(&e, "inv.yml", 5, 9);
    let e = ini_err("[a:children]\nb\n[b:children]\nc\n[c:children]\na\n[c]\nh\n");
    assert!(
        e.message.contains("a -> b -> c -> a") || e.message.contains("cycle"),
        "{e}"
    );
    assert_at(&e, "inv.ini", 6, 1);
    let e = ini_err("[a:children]\na\n");
    assert_at(&e, "inv.ini", 2, 1);
    let e = yaml_err("a:\n  children:\n    all:\n");
    assert_at(&e, "inv.yml", 3, 5);
}

// ---------------------------------------------------------------------------
// load(): format detection.

#[test]
fn load_detects_format() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let y = "all:\n  hosts:\n    a:\n";
    let i = "[g]\na\n";
    assert_eq!(
        inventory::load(&write("x.yaml", y)).unwrap().hosts[0].name,
        "a"
    );
    assert_eq!(
        inventory::load(&write("x.json", r#"{"all": {"hosts": {"a": null}}}"#))
            .unwrap()
            .hosts[0]
            .name,
        "a"
    );
    assert_eq!(
        inventory::load(&write("x.cfg", i)).unwrap().hosts[0].groups,
        ["g"]
    );
    assert_eq!(
        inventory::load(&write("hosts", i)).unwrap().hosts[0].groups,
        ["g"]
    );
    assert_eq!(
        inventory::load(&write("hosts2", "a\nb\n"))
            .unwrap()
            .hosts
            .len(),
        2
    );
    assert_eq!(
        inventory::load(&write("yamlhosts", y)).unwrap().hosts[0].name,
        "a"
    );
    assert_eq!(
        inventory::load(&write("x.txt", y)).unwrap().hosts[0].name,
        "a"
    );
    // The extension wins over content: YAML in an .ini file is an INI error.
    let e = inventory::load(&write("wrong.ini", "---\nall:\n")).unwrap_err();
    assert!(e.to_string().contains("wrong.ini:1:1"), "{e}");
    let e = inventory::load(&dir.path().join("absent.yml")).unwrap_err();
    assert!(e.to_string().contains("absent.yml: cannot read"), "{e}");
    assert!(inventory::load(dir.path()).is_err());
}

// ---------------------------------------------------------------------------
// Robustness: no input may panic either parser or the selector.

fn lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

#[test]
fn garbage_never_panics() {
    let mut corpus: Vec<String> = vec![
        NESTED.into(),
        SELECT.into(),
        std::fs::read_to_string(repo("inventories/example-windows.yml")).unwrap(),
        std::fs::read_to_string(repo("inventories/example-linux.ini")).unwrap(),
        "[a:children]\nb\n[b:children]\na\n".into(),
        "h x=[[[[[[[[[[ y={'a': (1,) z=\"\\x4\" w=0x q=1e-x\n".into(),
        "[::1]:22 a=b\n[]\n[:]\n[a:]\n[a\n]\n".into(),
        "all: &a\n  children:\n    x: *a\n".into(),
        "{".repeat(200),
        "[".repeat(200),
        "a:\n".repeat(50) + &"  ".repeat(100),
        "h[1:3000] x=1\n".into(),
        "h[a:Z][0:9]\n".into(),
        "\u{feff}\u{0}\u{7f}é日本\r\n[é]\nü=1\n".into(),
        r#"{"_meta": {"hostvars": {"a": {"x": [1, {"y": null}]}}, "pushscan": {"hosts": ["a"], "key_files": {"a": "k"}}}, "all": {"children": ["g"]}, "g": {"hosts": ["a"], "vars": {"v": 1.5e300}}, "h": ["b"], "s": {"x": 1}}"#.into(),
        "k: &a [*a]\nm: {<<: [x]}\nd: 2001-13-40\nt: !!int x\n".into(),
    ];
    // Random strings over an alphabet of characters that matter to either
    // format.
    let structured = corpus.len();
    let alphabet: Vec<char> = "ab01:[]{}=#;'\"\\ \n\t-,!&*?~@%|>.é".chars().collect();
    let mut seed = 0x5eed_u64;
    for _ in 0..300 {
        let len = (lcg(&mut seed) % 80) as usize;
        corpus.push(
            (0..len)
                .map(|_| alphabet[(lcg(&mut seed) as usize) % alphabet.len()])
                .collect(),
        );
    }
    for (n, text) in corpus.iter().enumerate() {
        // Every truncation of the structured inputs, at char boundaries;
        // the random ones are already arbitrary.
        let cuts: Vec<usize> = if n < structured {
            text.char_indices()
                .map(|(i, _)| i)
                .chain([text.len()])
                .collect()
        } else {
            vec![text.len()]
        };
        for &cut in &cuts {
            let t = &text[..cut];
            // Malformed input is an error, never a panic.
            for r in [
                inventory::parse_yaml(t, Path::new("g.yml")),
                inventory::parse_ini(t, Path::new("g.ini")),
                inventory::parse(t, Path::new("g.json")),
            ] {
                if let Err(e) = r {
                    assert!(!e.message.contains("internal"), "{t:?}: {e}");
                }
            }
        }
    }
    let inv = yaml(SELECT);
    for p in [
        ":",
        ",",
        "!",
        "&",
        "[",
        "]",
        "web[",
        "web[-]",
        "web[99999999999999999999]",
        "web[-99999999999999999999]",
        "web[1:0]",
        "web[5:]",
        "::",
        "&&",
        "!!a",
        "a:&:!",
        "*[0]",
        "~",
        "@",
        "[0]",
        "*:!*",
        "all[-1]",
    ] {
        let _ = inv.select(p);
    }
}

#[test]
fn deep_nesting_does_not_overflow() {
    // The YAML reader's depth limit turns this into an error, not a crash.
    let mut text = String::new();
    for i in 0..200 {
        text.push_str(&"  ".repeat(2 * i));
        text.push_str(&format!("g{i}:\n"));
        text.push_str(&"  ".repeat(2 * i + 1));
        text.push_str("children:\n");
    }
    let e = inventory::parse_yaml(&text, Path::new("deep.yml")).unwrap_err();
    assert!(e.message.contains("too deep"), "{e}");
    // A long INI chain has no such budget and must work without recursion.
    let mut chain = String::new();
    for i in 0..5000 {
        chain.push_str(&format!("[g{i}:children]\ng{}\n", i + 1));
    }
    chain.push_str("[g5000]\nleaf\n");
    let inv = ini(&chain);
    let leaf = inv.host("leaf").unwrap();
    assert_eq!(leaf.groups.len(), 5001);
    assert_eq!(leaf.group_paths.len(), 1);
    assert_eq!(leaf.group_paths[0].len(), 5001);
    assert_eq!(sel(&inv, "g0"), ["leaf"]);
}

#[test]
fn ini_content_in_a_yml_file_loads_as_ansible_does() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hosts.yml");
    std::fs::write(&path, "[web]\nweb1 ansible_host=10.0.0.1\n").unwrap();
    let inv = pushscan::inventory::load(&path).unwrap();
    assert_eq!(inv.hosts[0].name, "web1");
    assert_eq!(inv.hosts[0].address, "10.0.0.1");
    // Broken YAML that is not INI either reports the YAML error.
    std::fs::write(&path, "all:\n  hosts: [a\n").unwrap();
    let e = pushscan::inventory::load(&path).unwrap_err().to_string();
    assert!(e.contains("hosts.yml:"), "{e}");
}
