//! pushscan reads inventories as Ansible does, held to the real thing:
//! for the shipped inventories and the fixtures in tests/fixtures/inventory
//! (nested groups, variable precedence, host ranges with strides, INI and
//! YAML value typing, hosts in several groups, `ungrouped`, several
//! sources), `pushscan inventory` must print what `ansible-inventory`
//! prints: the same JSON for `--list` (also `--export`, `--limit`,
//! `--host`) and the same text for `--graph`. And the list JSON that
//! pushscan stores with a run must be read by Ansible's script plugin as
//! the same inventory, and Ansible's list JSON by pushscan.
//!
//! ansible-inventory comes from ansible-core (scripts/test installs it from
//! PyPI). It runs with a throw-away HOME, ANSIBLE_LOCAL_TEMP and working
//! directory, no ANSIBLE_* settings of the caller, and an unparsable source
//! as a hard failure, so that a fixture Ansible cannot read fails the test
//! instead of being compared as an empty inventory.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::ansible::json_diff;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn fixture(name: &str) -> PathBuf {
    Path::new(ROOT).join("tests/fixtures/inventory").join(name)
}

fn shipped(name: &str) -> PathBuf {
    Path::new(ROOT).join("inventories").join(name)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ansible(args: &[&str]) -> Output {
    common::ansible::tool("ansible-inventory", args)
}

/// ansible-core's version, printed once so a failure says what it was
/// compared with.
fn ansible_version() -> &'static str {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| {
        let out = ansible(&["--version"]);
        let v = text(&out.stdout).lines().next().unwrap_or("?").to_string();
        eprintln!("comparing with {v}");
        v
    })
}

fn pushscan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pushscan"))
        .arg("inventory")
        .args(args)
        .output()
        .expect("run pushscan")
}

fn ok(what: &str, out: Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what} failed ({}):\n{}",
        ansible_version(),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The same JSON from both, for the same arguments. The one normalization:
/// ansible-core 2.19 and later add `_meta.profile` (its JSON decoding
/// profile) and pushscan prints it as 2.19 does; an older Ansible's output
/// has none, so pushscan's is dropped before comparing.
fn same_json(args: &[&str]) -> Value {
    let what = format!("ansible-inventory {}", args.join(" "));
    let a: Value = serde_json::from_str(&ok(&what, ansible(args))).expect("Ansible's JSON");
    let mut p: Value = serde_json::from_str(&ok(
        &format!("pushscan inventory {}", args.join(" ")),
        pushscan(args),
    ))
    .expect("pushscan's JSON");
    if a.get("_meta").is_some_and(|m| m.get("profile").is_none()) {
        if let Some(Value::Object(m)) = p.get_mut("_meta") {
            m.remove("profile");
        }
    }
    let mut diffs = Vec::new();
    json_diff(&a, &p, "", &mut diffs);
    assert!(
        diffs.is_empty(),
        "{what}: pushscan differs from {}:\n  {}",
        ansible_version(),
        diffs.join("\n  ")
    );
    a
}

/// The same `--graph` text from both.
fn same_graph(args: &[&str]) {
    let what = format!("ansible-inventory {}", args.join(" "));
    let a = ok(&what, ansible(args));
    let p = ok(
        &format!("pushscan inventory {}", args.join(" ")),
        pushscan(args),
    );
    assert_eq!(
        a.trim_end(),
        p.trim_end(),
        "{what}: pushscan's graph differs from {}",
        ansible_version()
    );
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn shipped_inventories_list_and_graph_as_ansible() {
    let mut n = 0;
    for entry in std::fs::read_dir(Path::new(ROOT).join("inventories")).unwrap() {
        let path = entry.unwrap().path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !matches!(ext, "yml" | "yaml" | "ini") {
            continue;
        }
        // An Active Directory source is a directory query, not a file Ansible reads
        // (tests/ldap_inventory.rs covers it against a real DC).
        let text = std::fs::read_to_string(&path).unwrap();
        if pushscan::inventory::ldap::is_ldap_source(&text) {
            continue;
        }
        let p = path_str(&path);
        same_json(&["-i", &p, "--list"]);
        same_json(&["-i", &p, "--list", "--export"]);
        same_graph(&["-i", &p, "--graph"]);
        n += 1;
    }
    assert!(n >= 4, "the shipped inventories were found ({n})");
    let p = path_str(&shipped("example-windows.yml"));
    same_graph(&["-i", &p, "--graph", "windows"]);
    same_json(&["-i", &p, "--host", "osk-keiri-pc02.corp.example.com"]);
}

#[test]
fn nested_groups_precedence_ranges_and_yaml_typing_as_ansible() {
    let p = path_str(&fixture("nested.yml"));
    let list = same_json(&["-i", &p, "--list"]);
    same_json(&["-i", &p, "--list", "--export"]);
    same_graph(&["-i", &p, "--graph"]);
    same_graph(&["-i", &p, "--graph", "france"]);
    same_json(&["-i", &p, "--host", "pc-03.corp"]);
    same_json(&["-i", &p, "--host", "lonely02.example.com", "--export"]);
    // What the comparison covered, spelled out on Ansible's own output.
    let hv = &list["_meta"]["hostvars"];
    let names: Vec<&str> = list["paris"]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(names.len(), 15, "pc-[01:12].corp and web[a:c]: {names:?}");
    assert_eq!(names[0], "pc-01.corp");
    assert_eq!(names[14], "webc");
    assert_eq!(
        list["lyon"]["hosts"],
        serde_json::json!(["db1", "db3", "db5", "db7", "db9", "pc-03.corp"]),
        "db[1:10:2] steps by 2"
    );
    assert_eq!(hv["pc-01.corp"]["level"], "paris", "the deepest group wins");
    assert_eq!(hv["pc-03.corp"]["level"], "host-wins", "host vars win");
    assert_eq!(
        hv["db3"]["level"], "france",
        "lyon (depth 3) has no level; france does"
    );
    assert_eq!(hv["db5"]["level"], "france");
    assert_eq!(
        hv["weba"]["region"], "dc",
        "same depth: servers comes after europe by name"
    );
    assert_eq!(hv["lonely01"]["ungrouped_var"], 1);
    assert_eq!(hv["lonely02.example.com"]["ansible_port"], 2222);
    assert_eq!(hv["berlin01"]["shared"], "from-defaults", "a << merge");
    assert_eq!(hv["lonely01"]["answer_y"], "y", "PyYAML: y is no boolean");
    assert_eq!(hv["lonely01"]["octal_11"], 15);
    assert_eq!(hv["lonely01"]["octal_12"], "0o17");
    assert_eq!(hv["lonely01"]["exp_plain"], "1e3");
    assert_eq!(hv["lonely01"]["sexagesimal"], 80);
    assert!(hv["lonely01"].get("ansible_group_priority").is_none());
}

#[test]
fn ini_typing_and_groups_as_ansible() {
    let p = path_str(&fixture("typing.ini"));
    let list = same_json(&["-i", &p, "--list"]);
    let export = same_json(&["-i", &p, "--list", "--export"]);
    same_graph(&["-i", &p, "--graph"]);
    same_graph(&["-i", &p, "--graph", "h"]);
    same_json(&["-i", &p, "--host", "loose2"]);
    same_json(&["-i", &p, "--host", "db1", "--export"]);
    // Ansible types both host-line and [g:vars] values with literal_eval
    // (its documentation says :vars values stay strings; ansible-core does
    // not do that): a=1 is the integer 1 in both, b=yes the string "yes".
    let host_line = &export["_meta"]["hostvars"]["loose1"];
    let group_vars = &export["g"]["vars"];
    for (k, v) in [
        ("a", serde_json::json!(1)),
        ("b", serde_json::json!("yes")),
        ("c", serde_json::json!("quoted")),
        ("d", serde_json::json!(1.5)),
        ("e", serde_json::json!([1, 2])),
        ("f", serde_json::json!(true)),
        ("i", serde_json::json!("010")),
    ] {
        assert_eq!(host_line[k], v, "host line {k}");
        assert_eq!(group_vars[k], v, "[g:vars] {k}");
    }
    // The shell layer of host lines: h="'22'" is the string 22, but in
    // [g:vars] h='22' is too; a dict needs quotes on a host line.
    assert_eq!(host_line["h"], "22");
    assert_eq!(export["_meta"]["hostvars"]["loose2"]["k"], "{a:1}");
    assert_eq!(
        export["_meta"]["hostvars"]["loose2"]["s"],
        serde_json::json!({"k": "v"})
    );
    // Hosts listed before any section go to ungrouped unless a section
    // lists them too; a child joins its parent when a section declares it
    // (`later` is named first, but declared after `g`).
    assert_eq!(list["ungrouped"]["hosts"], serde_json::json!(["loose2"]));
    assert_eq!(list["h"]["children"], serde_json::json!(["g", "later"]));
}

#[test]
fn limit_selects_as_ansible() {
    let nested = path_str(&fixture("nested.yml"));
    let typing = path_str(&fixture("typing.ini"));
    for (inv, pattern) in [
        (&nested, "france:servers"),
        (&nested, "europe:&servers"),
        (&nested, "all:!paris"),
        (&nested, "pc-0*"),
        (&nested, "lyon[1:3]"),
        (&nested, "paris[0]"),
        (&typing, "g:&pc-0*:!pc-03.corp"),
        (&typing, "ungrouped:later"),
    ] {
        same_json(&["-i", inv, "--list", "--limit", pattern]);
    }
}

#[test]
fn several_sources_merge_as_ansible() {
    let a = path_str(&fixture("multi-a.yml"));
    let b = path_str(&fixture("multi-b.ini"));
    for (x, y) in [(&a, &b), (&b, &a)] {
        same_json(&["-i", x, "-i", y, "--list"]);
        same_json(&["-i", x, "-i", y, "--list", "--export"]);
        same_graph(&["-i", x, "-i", y, "--graph"]);
    }
    let nested = path_str(&fixture("nested.yml"));
    let typing = path_str(&fixture("typing.ini"));
    same_json(&["-i", &nested, "-i", &typing, "--list"]);
    same_graph(&["-i", &nested, "-i", &typing, "--graph"]);

    // pushscan warns about each variable the two set differently, naming
    // both files; Ansible takes the later value silently.
    let out = pushscan(&["-i", &a, "-i", &b, "--list"]);
    let err = text(&out.stderr);
    let warnings: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("the later source wins"))
        .collect();
    assert_eq!(warnings.len(), 2, "{err}");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("host `shared01`") && w.contains("`origin`")),
        "{err}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("group `web`") && w.contains("`tier`")),
        "{err}"
    );
    assert!(
        warnings
            .iter()
            .all(|w| w.contains("multi-a.yml") && w.contains("multi-b.ini")),
        "{err}"
    );
}

/// An executable that prints `json`: how Ansible reads list JSON (its
/// script plugin).
fn script(dir: &Path, name: &str, json: &str) -> PathBuf {
    let data = dir.join(format!("{name}.json"));
    std::fs::write(&data, json).unwrap();
    let path = dir.join(format!("{name}.sh"));
    common::write_exe(
        &path,
        &format!("#!/bin/sh\ncat '{}'\n", data.display()),
        0o755,
    );
    path
}

#[test]
fn list_json_reads_as_ansibles_script_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let sources = [
        fixture("nested.yml"),
        fixture("typing.ini"),
        shipped("example-linux.ini"),
    ];
    for (i, src) in sources.iter().enumerate() {
        let s = path_str(src);
        // Ansible's own list JSON, flat and exported: pushscan reads the
        // file as Ansible's script plugin reads the script printing it.
        let flat = ok("ansible-inventory", ansible(&["-i", &s, "--list"]));
        for (j, export) in [false, true].into_iter().enumerate() {
            let json = if export {
                ok(
                    "ansible-inventory",
                    ansible(&["-i", &s, "--list", "--export"]),
                )
            } else {
                flat.clone()
            };
            let sh = script(dir.path(), &format!("a{i}{j}"), &json);
            let data = sh.with_extension("json");
            let a: Value = serde_json::from_str(&ok(
                "ansible-inventory (script)",
                ansible(&["-i", &path_str(&sh), "--list"]),
            ))
            .unwrap();
            let p: Value = serde_json::from_str(&ok(
                "pushscan inventory (list json)",
                pushscan(&["-i", &path_str(&data), "--list"]),
            ))
            .unwrap();
            let mut diffs = Vec::new();
            json_diff(&a, &p, "", &mut diffs);
            assert!(
                diffs.is_empty(),
                "{s} (export {export}):\n  {}",
                diffs.join("\n  ")
            );
        }
        // The form a run stores: Ansible reads it as the original file.
        let inv = pushscan::inventory::load(src).unwrap();
        let sh = script(
            dir.path(),
            &format!("s{i}"),
            &pushscan::inventory::list::stored_json(&inv),
        );
        let original: Value = serde_json::from_str(&flat).unwrap();
        let stored: Value = serde_json::from_str(&ok(
            "ansible-inventory (stored)",
            ansible(&["-i", &path_str(&sh), "--list"]),
        ))
        .unwrap();
        let mut diffs = Vec::new();
        json_diff(&original, &stored, "", &mut diffs);
        assert!(diffs.is_empty(), "{s} stored:\n  {}", diffs.join("\n  "));
    }
}

#[test]
fn errors_are_located_and_exit_65_or_64() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yml");
    std::fs::write(&bad, "all:\n  hosts:\n    010:\n").unwrap();
    let out = pushscan(&["-i", &path_str(&bad), "--list"]);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("bad.yml:3:5: "), "{err}");
    // Ansible refuses it too.
    let a = ansible(&["-i", &path_str(&bad), "--list"]);
    assert_ne!(
        a.status.code(),
        Some(0),
        "Ansible accepted an unquoted 010 host"
    );

    let ok_inv = path_str(&fixture("typing.ini"));
    let out = pushscan(&["-i", &ok_inv, "--host", "no-such-host"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    let out = pushscan(&["-i", &ok_inv, "--graph", "loose1"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    let out = pushscan(&["-i", &ok_inv, "--list", "--limit", "nothing-like-this"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    let out = pushscan(&["-i", &ok_inv]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--list"),
        "{}",
        text(&out.stderr)
    );

    let ldap = dir.path().join("ad.yml");
    std::fs::write(&ldap, "plugin: pushscan.ldap\nserver: ldaps://dc.example\n").unwrap();
    let out = pushscan(&["-i", &ok_inv, "-i", &path_str(&ldap), "--list"]);
    // Handed to the LDAP source, whose configuration errors are located like any other
    // (`server` is not one of its keys: `servers` is).
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(err.contains("ad.yml:2:1"), "{err}");
    assert!(err.contains("server"), "{err}");
}
