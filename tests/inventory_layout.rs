//! Inventories as ops teams keep them, held to the real `ansible-inventory`
//! (ansible-core, installed by scripts/test): inventory directories
//! (`-i DIR`, with Ansible's ignore rules), `group_vars/` and `host_vars/`
//! beside each source in every form (`NAME`, `NAME.yml`, `NAME.yaml`,
//! `NAME.json`, a directory of files), their precedence (group priority,
//! sources in different folders), and Ansible Vault: whole files encrypted
//! with `ansible-vault encrypt` (format 1.1, and 1.2 with a vault ID) and
//! inline values from `ansible-vault encrypt_string`, all made here by the
//! real `ansible-vault`. `pushscan inventory --list/--host/--graph` must print
//! what `ansible-inventory` prints, except that pushscan never shows a
//! value decrypted from a vaulted file other than a connection setting.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::ansible::{json_diff, tool as ansible_tool};
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn fixture(name: &str) -> PathBuf {
    Path::new(ROOT).join("tests/fixtures/inventory").join(name)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ansible(args: &[&str]) -> Output {
    ansible_tool("ansible-inventory", args)
}

fn pushscan(sub: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pushscan"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ANSIBLE_") {
            cmd.env_remove(k);
        }
    }
    cmd.arg(sub).args(args).output().expect("run pushscan")
}

fn ok(what: &str, out: Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what} failed:\n{}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Both tools' JSON for the same arguments (pushscan's `_meta.profile`
/// dropped when the Ansible is older than 2.19 and prints none).
fn both_json(args: &[&str]) -> (Value, Value, String) {
    let what = format!("ansible-inventory {}", args.join(" "));
    let a: Value = serde_json::from_str(&ok(&what, ansible(args))).expect("Ansible's JSON");
    let p_text = ok(
        &format!("pushscan inventory {}", args.join(" ")),
        pushscan("inventory", args),
    );
    let mut p: Value = serde_json::from_str(&p_text).expect("pushscan's JSON");
    if a.get("_meta").is_some_and(|m| m.get("profile").is_none()) {
        if let Some(Value::Object(m)) = p.get_mut("_meta") {
            m.remove("profile");
        }
    }
    (a, p, p_text)
}

fn assert_same(what: &str, a: &Value, p: &Value) {
    let mut diffs = Vec::new();
    json_diff(a, p, "", &mut diffs);
    assert!(
        diffs.is_empty(),
        "{what}: pushscan differs from ansible-inventory:\n  {}",
        diffs.join("\n  ")
    );
}

fn same_json(args: &[&str]) -> Value {
    let (a, p, _) = both_json(args);
    assert_same(&args.join(" "), &a, &p);
    a
}

fn same_graph(args: &[&str]) {
    let what = format!("ansible-inventory {}", args.join(" "));
    let a = ok(&what, ansible(args));
    let p = ok(
        &format!("pushscan inventory {}", args.join(" ")),
        pushscan("inventory", args),
    );
    assert_eq!(a.trim_end(), p.trim_end(), "{what}: graphs differ");
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Every comparison for one set of sources: --list, --list --export,
/// --graph, and --host for every host.
fn same_everything(sources: &[&str], each_host: bool) -> Value {
    let mut base: Vec<&str> = Vec::new();
    for src in sources {
        base.extend(["-i", src]);
    }
    let list = same_json(&[&base[..], &["--list"]].concat());
    same_json(&[&base[..], &["--list", "--export"]].concat());
    same_graph(&[&base[..], &["--graph"]].concat());
    let hosts: Vec<String> = list["_meta"]["hostvars"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    assert!(!hosts.is_empty(), "no host has variables in {sources:?}");
    for h in hosts.iter().filter(|_| each_host) {
        same_json(&[&base[..], &["--host", h]].concat());
    }
    list
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

#[test]
fn directories_and_vars_files_in_every_form_as_ansible() {
    let dir = fixture("layout");
    let other = fixture("layout2/hosts.yml");
    let (dir, other) = (s(&dir), s(&other));
    let list = same_everything(&[&dir, &other], true);
    let hv = &list["_meta"]["hostvars"];
    // The fixture exercises what it claims (Ansible's own answers):
    // host_vars directory, later file wins.
    assert_eq!(hv["web1"]["level"], "hv_web1_b");
    // group_vars/servers/ read recursively, skipping what Ansible skips.
    assert_eq!(hv["web1"]["layer"], "nested");
    assert_eq!(hv["web1"]["noext_layer"], 30);
    // `tokyo.yml` is read, not `tokyo.yaml` beside it; priority 5 puts tokyo
    // after windows.
    assert_eq!(hv["pc1"]["prio"], "tokyo");
    assert_eq!(hv["pc2"]["prio"], "windows");
    // group_vars/linux (no extension) wins over linux.json; the later
    // source's group_vars/linux.yml overrides both.
    assert_eq!(hv["db1"]["ansible_user"], "deploy");
    assert_eq!(hv["db1"]["level"], "gv2_linux");
    // The later source's group_vars/all beats the first source's children.
    assert_eq!(hv["pc1"]["ntp"], "10.9.9.9");
    assert_eq!(hv["solo"]["level"], "gv_ungrouped");
    // Ignored files are not sources.
    assert!(list.get("skipped").is_none());
    // The other order, and a single file with its directory's vars files.
    same_everything(&[&other, &dir], false);
    same_everything(&[&s(&fixture("layout/01-hosts.ini"))], false);
}

/// The issue as a new user met it: hosts.ini, group_vars/windows.yml with
/// WinRM, host_vars/pc1.yml with port 5986.
#[test]
fn group_and_host_vars_beside_an_ini_file_reach_the_plan() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::create_dir_all(d.join("group_vars")).unwrap();
    std::fs::create_dir_all(d.join("host_vars")).unwrap();
    std::fs::write(
        d.join("hosts.ini"),
        "[windows]\npc1 ansible_host=127.0.0.1\n",
    )
    .unwrap();
    std::fs::write(
        d.join("group_vars/windows.yml"),
        "ansible_connection: winrm\n",
    )
    .unwrap();
    std::fs::write(d.join("host_vars/pc1.yml"), "ansible_port: 5986\n").unwrap();
    let inv = s(&d.join("hosts.ini"));
    let host = same_json(&["-i", &inv, "--host", "pc1"]);
    assert_eq!(host["ansible_connection"], "winrm");
    assert_eq!(host["ansible_port"], 5986);

    // A playbook whose checker matches its pin, so that the plan is clean.
    std::fs::write(d.join("checker.exe"), b"MZ fake checker").unwrap();
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(b"MZ fake checker"))
    };
    std::fs::write(
        d.join("pb.yml"),
        format!(
            "name: t\nchecker:\n  path: checker.exe\n  sha256: \"{sha}\"\n  platform: windows\n\
             work_dir: 'C:\\Windows\\pushscan'\nargs: []\ntimeout: 1m\n\
             results:\n  glob: \"*.json\"\n  parser: emocheck\n"
        ),
    )
    .unwrap();
    let out = pushscan("plan", &["-i", &inv, "-p", &s(&d.join("pb.yml"))]);
    let plan = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{plan}{}", text(&out.stderr));
    let line = plan
        .lines()
        .find(|l| l.trim_start().starts_with("pc1 "))
        .unwrap_or_else(|| panic!("no pc1 line in:\n{plan}"));
    assert!(line.contains("winrm-https:5986"), "{line}");
    assert!(!line.contains("ssh"), "{line}");
}

/// Passwords for the vault tests: a file per vault ID.
struct Vaults {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Vaults {
    fn pw(&self, name: &str) -> String {
        s(&self.dir.join(name))
    }
}

fn vault_tool(args: &[&str]) {
    let out = ansible_tool("ansible-vault", args);
    assert!(
        out.status.success(),
        "ansible-vault {} failed: {}",
        args.join(" "),
        text(&out.stderr)
    );
}

/// The layout fixture copied, with vaulted files and inline vault values
/// made by the real `ansible-vault`.
fn vaulted_layout() -> Vaults {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    copy_dir(&fixture("layout"), &dir.join("inv"));
    std::fs::write(dir.join("prod.pw"), "prod-pass\n").unwrap();
    std::fs::write(dir.join("dev.pw"), "dev-pass\n").unwrap();
    std::fs::write(dir.join("default.pw"), "  default-pass  \n").unwrap();
    let v = Vaults { _tmp: tmp, dir };
    let inv = v.dir.join("inv");
    // Format 1.2 with vault ID `prod`: the WinRM password and another secret.
    let vault_yml = inv.join("group_vars/windows/vault.yml");
    std::fs::write(
        &vault_yml,
        "ansible_password: Win-S3cret-Pw\nwin_api_key: K3y-Secret-Value\n",
    )
    .unwrap();
    vault_tool(&[
        "encrypt",
        "--vault-id",
        &format!("prod@{}", v.pw("prod.pw")),
        &s(&vault_yml),
    ]);
    // Format 1.1 (no vault ID), a file in a host_vars directory, which also
    // carries a connection setting.
    let web1 = inv.join("host_vars/web1/c.yml");
    std::fs::write(
        &web1,
        "db_password_note: Db-Secret-Note\nansible_port: 2201\n",
    )
    .unwrap();
    vault_tool(&[
        "encrypt",
        "--vault-password-file",
        &v.pw("default.pw"),
        &s(&web1),
    ]);
    // Inline values with vault ID `dev`: a connection setting (decrypted
    // and used) and an ordinary variable (shown as ciphertext, as Ansible).
    let mut pc1 = std::fs::read_to_string(inv.join("host_vars/pc1.yml")).unwrap();
    for (name, value) in [
        ("ansible_user", "ADMIN-USER"),
        ("api_token", "Tok3n-Secret"),
    ] {
        let out = ansible_tool(
            "ansible-vault",
            &[
                "encrypt_string",
                "--vault-id",
                &format!("dev@{}", v.pw("dev.pw")),
                "--name",
                name,
                value,
            ],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        pc1.push_str(&text(&out.stdout));
        pc1.push('\n');
    }
    std::fs::write(inv.join("host_vars/pc1.yml"), pc1).unwrap();
    v
}

/// `ansible-vault encrypt_string` output (vault ID `dev`), indented for a
/// YAML block scalar.
const INLINE_SAMPLE: &str = "        $ANSIBLE_VAULT;1.2;AES256;dev
        64373933303966623563363563363630313165393661393264666234313761376566313561326366
        3130353865353631646533343239626630376331353730320a633237313438386466326662353866
        37393238313762316234353931313563306161356638643463373933653639343562313564323961
        6563383431313635320a366633353563313836626265666438353336386161356134323230373534
        3033
";

const SECRETS: &[&str] = &["Win-S3cret-Pw", "K3y-Secret-Value", "Db-Secret-Note"];

/// Values pushscan hides where Ansible shows them decrypted: checked to be
/// placeholders, then dropped from both outputs before comparing.
fn drop_vaulted_file_values(a: &mut Value, p: &mut Value) {
    let hidden = [
        ("pc1", "ansible_password"),
        ("pc1", "win_api_key"),
        ("pc2", "ansible_password"),
        ("pc2", "win_api_key"),
        ("web1", "db_password_note"),
    ];
    for (host, key) in hidden {
        for (tool, v) in [("ansible", &mut *a), ("pushscan", &mut *p)] {
            let vars = v
                .pointer_mut(&format!("/_meta/hostvars/{host}"))
                .and_then(Value::as_object_mut)
                .unwrap_or_else(|| panic!("{tool}: no vars for {host}"));
            let val = vars
                .remove(key)
                .unwrap_or_else(|| panic!("{tool}: {host} has no {key}"));
            if tool == "pushscan" {
                let shown = val["__ansible_vault"].as_str().unwrap_or_default();
                assert!(shown.starts_with("(vaulted in "), "{host}.{key} = {val}");
            }
        }
    }
}

#[test]
fn vaulted_files_and_inline_values_as_ansible_secrets_never_shown() {
    let v = vaulted_layout();
    let inv = s(&v.dir.join("inv"));
    let prod = format!("prod@{}", v.pw("prod.pw"));
    let dev = format!("dev@{}", v.pw("dev.pw"));
    let default = v.pw("default.pw");
    let args = [
        "-i",
        &inv,
        "--vault-id",
        &prod,
        "--vault-id",
        &dev,
        "--vault-password-file",
        &default,
        "--list",
    ];
    let (mut a, mut p, p_text) = both_json(&args);
    // Ansible shows the vaulted files decrypted; pushscan never does.
    assert_eq!(
        a["_meta"]["hostvars"]["pc1"]["ansible_password"],
        "Win-S3cret-Pw"
    );
    for secret in SECRETS.iter().chain(&["Tok3n-Secret", "ADMIN-USER"]) {
        assert!(!p_text.contains(secret), "pushscan printed {secret}");
    }
    // The connection setting from the vaulted file is used and shown.
    assert_eq!(p["_meta"]["hostvars"]["web1"]["ansible_port"], 2201);
    // Inline values are shown as ciphertext, as Ansible shows them.
    assert!(
        p["_meta"]["hostvars"]["pc1"]["api_token"]["__ansible_vault"]
            .as_str()
            .is_some_and(|c| c.starts_with("$ANSIBLE_VAULT;1.2;AES256;dev"))
    );
    drop_vaulted_file_values(&mut a, &mut p);
    assert_same("--list with vaults", &a, &p);

    // --host too, and the same passwords through the environment variable
    // and a password script.
    let script = v.dir.join("default-pass.sh");
    std::fs::write(&script, "#!/bin/sh\necho default-pass\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_pushscan"))
        .args([
            "inventory",
            "-i",
            &inv,
            "--vault-id",
            &prod,
            "--vault-id",
            &dev,
            "--host",
            "web1",
        ])
        .env("ANSIBLE_VAULT_PASSWORD_FILE", &script)
        .output()
        .unwrap();
    let web1: Value = serde_json::from_str(&ok("pushscan --host web1", out)).unwrap();
    assert_eq!(web1["ansible_port"], 2201);
    assert!(!web1.to_string().contains("Db-Secret-Note"));
}

#[test]
fn vaulted_connection_settings_and_password_reach_the_inventory() {
    let v = vaulted_layout();
    let inv = v.dir.join("inv");
    let load = |secrets: Vec<pushscan::inventory::vault::VaultSecret>| {
        pushscan::inventory::vault::set_secrets(secrets);
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(pushscan::inventory::load_sources(std::slice::from_ref(
                &inv,
            )))
    };
    let secret = |label: &str, file: &str| {
        pushscan::inventory::vault::from_source(label, &v.dir.join(file)).unwrap()
    };
    let loaded = load(vec![
        secret("prod", "prod.pw"),
        secret("dev", "dev.pw"),
        secret("default", "default.pw"),
    ])
    .unwrap();
    let inv_ = &loaded.inventory;
    let pc1 = inv_.host("pc1").unwrap();
    // The inline vaulted user is decrypted for the connection.
    assert_eq!(pc1.user.as_deref(), Some("ADMIN-USER"));
    assert_eq!(pc1.port, Some(5986));
    use secrecy::ExposeSecret;
    let pw = pc1.vaulted_password().unwrap().unwrap();
    assert_eq!(pw.expose_secret(), "Win-S3cret-Pw");
    // Never in the stored form a run keeps, nor in Debug output.
    for secret in SECRETS.iter().chain(&["ADMIN-USER"]) {
        assert!(!loaded.text.contains(secret), "stored form holds {secret}");
    }
    for secret in SECRETS {
        assert!(
            !format!("{inv_:?}").contains(secret),
            "Debug shows {secret}"
        );
    }
    // The stored form reads back as the same hosts and variables; the
    // password of a vaulted file is not stored, so the host has none (a
    // resumed run takes its credential from elsewhere).
    let back = pushscan::inventory::parse(&loaded.text, Path::new(&loaded.label)).unwrap();
    assert_eq!(back.hosts.len(), inv_.hosts.len());
    for (b, h) in back.hosts.iter().zip(&inv_.hosts) {
        assert_eq!(
            (&b.name, &b.vars, &b.own_vars, b.port),
            (&h.name, &h.vars, &h.own_vars, h.port)
        );
    }
    assert!(back
        .host("pc1")
        .unwrap()
        .vaulted_password()
        .unwrap()
        .is_none());
    // An inline vaulted password is stored as ciphertext: without the vault
    // password it is a clear error, not a silent fallback.
    pushscan::inventory::vault::set_secrets(Vec::new());
    let e = pushscan::inventory::parse_yaml(
        &format!(
            "all:\n  hosts:\n    h:\n      ansible_connection: winrm\n      ansible_password: !vault |\n{}",
            INLINE_SAMPLE
        ),
        Path::new("i.yml"),
    )
    .unwrap();
    let err = e.host("h").unwrap().vaulted_password().unwrap_err();
    assert!(err.contains("not decrypted"), "{err}");
    // A host with no password var has none.
    assert!(inv_
        .host("web2")
        .unwrap()
        .vaulted_password()
        .unwrap()
        .is_none());
    pushscan::inventory::vault::set_secrets(Vec::new());
}

#[test]
fn wrong_vault_password_is_an_error_naming_the_file_and_prints_nothing() {
    let v = vaulted_layout();
    let inv = s(&v.dir.join("inv"));
    std::fs::write(v.dir.join("wrong.pw"), "not-it\n").unwrap();
    let wrong = format!("prod@{}", v.pw("wrong.pw"));
    let dev = format!("dev@{}", v.pw("dev.pw"));
    let default = v.pw("default.pw");
    let out = pushscan(
        "inventory",
        &[
            "-i",
            &inv,
            "--vault-id",
            &wrong,
            "--vault-id",
            &dev,
            "--vault-password-file",
            &default,
            "--list",
        ],
    );
    assert_eq!(out.status.code(), Some(65));
    assert!(out.stdout.is_empty(), "partial inventory printed");
    let err = text(&out.stderr);
    assert!(err.contains("group_vars/windows/vault.yml"), "{err}");
    assert!(err.contains("vault decryption failed"), "{err}");
    assert!(err.contains("\"prod\""), "{err}");
    // No password at all.
    let out = pushscan("inventory", &["-i", &inv, "--list"]);
    assert_eq!(out.status.code(), Some(65));
    assert!(out.stdout.is_empty());
    assert!(text(&out.stderr).contains("no vault password was given"));
    // Ansible refuses it as well.
    let out = ansible(&["-i", &inv, "--vault-id", &wrong, "--list"]);
    assert!(!out.status.success());
}

#[test]
fn tampered_vault_is_refused_before_decrypting() {
    let v = vaulted_layout();
    let inv = v.dir.join("inv");
    let file = inv.join("group_vars/windows/vault.yml");
    let body = std::fs::read_to_string(&file).unwrap();
    // Flip one hex digit in the last line (ciphertext): the HMAC no longer
    // verifies.
    let mut lines: Vec<String> = body.lines().map(str::to_string).collect();
    // The outer hex encodes the inner hex text: replace the last encoded
    // character (a hex digit of the ciphertext) with another hex digit.
    let last = lines.last_mut().unwrap();
    let pair = last.split_off(last.len() - 2);
    let digit = u8::from_str_radix(&pair, 16).unwrap();
    let other = if digit == b'0' { b'1' } else { b'0' };
    last.push_str(&format!("{other:02x}"));
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let prod = format!("prod@{}", v.pw("prod.pw"));
    let dev = format!("dev@{}", v.pw("dev.pw"));
    let default = v.pw("default.pw");
    let out = pushscan(
        "inventory",
        &[
            "-i",
            &s(&inv),
            "--vault-id",
            &prod,
            "--vault-id",
            &dev,
            "--vault-password-file",
            &default,
            "--list",
        ],
    );
    assert_eq!(out.status.code(), Some(65));
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert!(err.contains("vault.yml") && err.contains("HMAC"), "{err}");
    let out = ansible(&["-i", &s(&inv), "--vault-id", &prod, "--list"]);
    assert!(!out.status.success(), "Ansible accepted the altered vault");
}

#[test]
fn scripts_and_plugins_in_a_directory_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("a.ini"), "[web]\nw1\n").unwrap();
    std::fs::write(d.join("b.sh"), "#!/bin/sh\necho '{}'\n").unwrap();
    let out = pushscan("inventory", &["-i", &s(d), "--list"]);
    assert_eq!(out.status.code(), Some(65));
    let err = text(&out.stderr);
    assert!(
        err.contains("b.sh") && err.contains("inventory script"),
        "{err}"
    );
    assert!(err.contains("ansible-inventory -i"), "{err}");
    std::fs::remove_file(d.join("b.sh")).unwrap();
    std::fs::write(d.join("c.yml"), "plugin: constructed\nstrict: true\n").unwrap();
    let out = pushscan("inventory", &["-i", &s(d), "--list"]);
    assert_eq!(out.status.code(), Some(65));
    let err = text(&out.stderr);
    assert!(err.contains("c.yml") && err.contains("plugin"), "{err}");
    assert!(err.contains("ansible-inventory"), "{err}");
}
