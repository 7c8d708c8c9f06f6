//! An unprivileged user on a host gets there first: the work directory attacks, against the
//! real `pushscan` binary over the `local` transport and over a real OpenSSH fleet.
//!
//! Each host's work directory is set up the way another local user (uid 65534, `nobody`)
//! could leave it in a world-writable place before a sweep: created and owned by them with a
//! link planted at the push's temporary name and their own "checker" inside; owned by them
//! with a copy of the pinned checker (so the hash check passes and only a swap before the run
//! would be needed); a link at the work directory's name; a parent anyone may write to
//! without the sticky bit; a directory of ours that anyone may write to. Every one of them
//! must end in class `error` with a reason that names what was found, nothing may be written
//! through the link, and nothing may run there; a host with a fresh directory in the same
//! sticky parent is swept as usual.

mod common;

use std::fs;
use std::os::unix::fs::{chown, lchown, symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const CHECKER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/playbooks/checkers/emocheck-sim.sh"
);
/// The other local user.
const ATTACKER: u32 = 65534;
const PRECIOUS: &str = "the scan account's own file\n";

fn sha256_hex(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(fs::read(path).expect("read checker")))
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The hosts' directory tree, as the attacker left it. Returns (root, host -> work dir).
fn hostile_tree() -> (tempfile::TempDir, Vec<(&'static str, PathBuf)>) {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "these tests create files owned by another user: run them as root (scripts/test does)"
    );
    let root = tempfile::tempdir().expect("tempdir");
    let t = root.path();
    // Like /tmp: root's, world-writable, sticky.
    let shared = t.join("shared");
    fs::create_dir(&shared).unwrap();
    chmod(&shared, 0o1777);
    fs::write(t.join("victim"), PRECIOUS).unwrap();
    chmod(&t.join("victim"), 0o644);

    // 1. Squatted, with a link at the temp name and the attacker's "checker".
    let squat = shared.join("squat");
    fs::create_dir(&squat).unwrap();
    symlink(
        t.join("victim"),
        squat.join(".emocheck-sim.sh.pushscan-tmp"),
    )
    .unwrap();
    fs::write(
        squat.join("emocheck-sim.sh"),
        format!("#!/bin/sh\necho pwned > {}\n", t.join("pwned").display()),
    )
    .unwrap();
    chmod(&squat.join("emocheck-sim.sh"), 0o755);
    lchown(
        squat.join(".emocheck-sim.sh.pushscan-tmp"),
        Some(ATTACKER),
        Some(ATTACKER),
    )
    .unwrap();
    chown(
        squat.join("emocheck-sim.sh"),
        Some(ATTACKER),
        Some(ATTACKER),
    )
    .unwrap();
    chmod(&squat, 0o777);
    chown(&squat, Some(ATTACKER), Some(ATTACKER)).unwrap();

    // 2. Squatted, not writable by us or anyone else, holding the pinned checker: the hash
    //    check passes; the attacker would swap the file before the run.
    let current = shared.join("current");
    fs::create_dir(&current).unwrap();
    fs::copy(CHECKER, current.join("emocheck-sim.sh")).unwrap();
    chmod(&current.join("emocheck-sim.sh"), 0o755);
    chown(
        current.join("emocheck-sim.sh"),
        Some(ATTACKER),
        Some(ATTACKER),
    )
    .unwrap();
    chown(&current, Some(ATTACKER), Some(ATTACKER)).unwrap();
    chmod(&current, 0o755);

    // 3. A link at the work directory's name, to a directory of ours.
    let ours = t.join("ours");
    fs::create_dir(&ours).unwrap();
    chmod(&ours, 0o700);
    let linked = shared.join("linked");
    symlink(&ours, &linked).unwrap();
    lchown(&linked, Some(ATTACKER), Some(ATTACKER)).unwrap();

    // 4. A parent anyone may write to, not sticky: anyone may rename our directory away.
    let open = t.join("open");
    fs::create_dir(&open).unwrap();
    chmod(&open, 0o777);

    // 5. A directory of ours that anyone may write to.
    let loose = shared.join("loose");
    fs::create_dir(&loose).unwrap();
    chmod(&loose, 0o777);

    let hosts = vec![
        ("squatted", squat),
        ("squatted-current", current),
        ("linked", linked),
        ("open-parent", open.join("wd")),
        ("loose", loose),
        ("fresh", shared.join("fresh")),
    ];
    (root, hosts)
}

fn playbook(dir: &Path) -> PathBuf {
    let pb = format!(
        "name: attacks\nchecker:\n  path: {CHECKER}\n  sha256: {}\n  platform: linux\n  remote_name: emocheck-sim.sh\n\
         work_dir: \"{{{{ pushscan_dir }}}}\"\nrun_dir: \"{{{{ work_dir }}}}/reports\"\n\
         args: [\"/quiet\", \"/output\", \"{{{{ run_dir }}}}\", \"/host\", \"{{{{ inventory_hostname }}}}\"]\n\
         timeout: 20s\nresults:\n  glob: \"*_emocheck.*\"\n  parser: emocheck\n  max_file_size: 1MiB\n\
         cleanup:\n  checker: true\n  results: false\n  dirs: true\n",
        sha256_hex(Path::new(CHECKER))
    );
    let path = dir.join("playbook.yml");
    fs::write(&path, pb).unwrap();
    path
}

/// `pushscan sweep` of an inventory with a playbook, quietly.
fn sweep(inventory: &Path, playbook: &Path, state: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pushscan"));
    c.arg("sweep")
        .arg("-i")
        .arg(inventory)
        .arg("-p")
        .arg(playbook)
        .arg("--state-dir")
        .arg(state)
        .args(["--progress", "quiet"]);
    c
}

/// [`sweep`] over the fleet's SSH keys and known_hosts.
fn ssh_sweep(
    fleet: &common::sshd::SshFleet,
    inventory: &Path,
    playbook: &Path,
    state: &Path,
) -> Command {
    let mut c = sweep(inventory, playbook, state);
    c.arg("--known-hosts")
        .arg(&fleet.known_hosts)
        .arg("-k")
        .arg(&fleet.client_key)
        .args(["--no-agent", "--connect-timeout", "5s"]);
    c
}

fn report(state: &Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_pushscan"))
        .args(["report", "--format", "json", "--state-dir"])
        .arg(state)
        .output()
        .expect("run pushscan report");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "report is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn host<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .find(|h| h["host"] == name)
        .unwrap_or_else(|| panic!("{name} missing from {report:#}"))
}

/// What every hostile host must come to, and the untouched files.
fn assert_refused(root: &Path, hosts: &[(&str, PathBuf)], report: &Value, sweep: &Output) {
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&sweep.stdout),
        String::from_utf8_lossy(&sweep.stderr)
    );
    assert_eq!(
        fs::read_to_string(root.join("victim")).unwrap(),
        PRECIOUS,
        "the link planted at the temp name was written through"
    );
    assert!(
        !root.join("pwned").exists(),
        "the attacker's checker ran as the scan account"
    );
    let expect: [(&str, &str); 5] = [
        ("squatted", "owned by uid 65534"),
        ("squatted-current", "owned by uid 65534"),
        ("linked", "symbolic link"),
        ("open-parent", "lets others replace it"),
        ("loose", "mode 777"),
    ];
    for (name, words) in expect {
        let h = host(report, name);
        assert_eq!(h["status"], "error", "{name}: {h:#}\n{log}");
        let reason = h["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("unsafe work directory") && reason.contains(words),
            "{name}: reason {reason:?} should name what was found ({words})"
        );
    }
    // A directory that failed the proof is not ours: the playbook's cleanup (checker: true)
    // removes nothing from it.
    let squat = &hosts.iter().find(|(n, _)| *n == "squatted").unwrap().1;
    assert!(
        fs::symlink_metadata(squat.join(".emocheck-sim.sh.pushscan-tmp")).is_ok()
            && fs::read_to_string(squat.join("emocheck-sim.sh"))
                .unwrap()
                .contains("pwned"),
        "cleanup touched a directory that failed the proof"
    );
    for (name, dir) in hosts {
        if *name == "fresh" {
            continue;
        }
        let reports = dir.join("reports");
        assert!(
            !reports.exists() || fs::read_dir(&reports).unwrap().next().is_none(),
            "{name}: the checker ran in an unsafe directory"
        );
    }
    let fresh = host(report, "fresh");
    assert_eq!(fresh["status"], "not_detected", "{fresh:#}\n{log}");
    let fresh_dir = &hosts.iter().find(|(n, _)| *n == "fresh").unwrap().1;
    let mode = fs::metadata(fresh_dir).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700, "a work directory pushscan creates is private");
}

#[test]
fn local_transport_refuses_work_directories_others_control() {
    let (root, hosts) = hostile_tree();
    let mut inv = String::from("all:\n  vars:\n    ansible_connection: local\n  hosts:\n");
    for (name, dir) in &hosts {
        inv.push_str(&format!(
            "    {name}: {{pushscan_dir: {}}}\n",
            dir.display()
        ));
    }
    let inv_path = root.path().join("inventory.yml");
    fs::write(&inv_path, inv).unwrap();
    let state = root.path().join("state");
    let out = sweep(&inv_path, &playbook(root.path()), &state)
        .output()
        .expect("run pushscan");
    assert_refused(root.path(), &hosts, &report(&state), &out);
}

#[test]
fn ssh_transport_refuses_work_directories_others_control() {
    let (root, hosts) = hostile_tree();
    let fleet = common::sshd::SshFleet::start(hosts.len());
    let mut inv = String::from("all:\n  vars:\n    ansible_connection: ssh\n  hosts:\n");
    for (i, (name, dir)) in hosts.iter().enumerate() {
        inv.push_str(&format!(
            "    {name}: {{ansible_host: {}, ansible_port: {}, pushscan_dir: {}}}\n",
            fleet.addresses[i],
            fleet.port,
            dir.display()
        ));
    }
    let inv_path = root.path().join("inventory.yml");
    fs::write(&inv_path, inv).unwrap();
    let state = root.path().join("state");
    let out = ssh_sweep(&fleet, &inv_path, &playbook(root.path()), &state)
        .env_remove("PUSHSCAN_SSH_PASSWORD")
        .output()
        .expect("run pushscan");
    assert_refused(root.path(), &hosts, &report(&state), &out);
}

/// `~/` in a work directory is the login's home, on both transports (the shipped SSH playbook
/// and the demo use it): the checker finds its arguments expanded the same way.
#[test]
fn tilde_work_directory_is_the_login_home() {
    let home = tempfile::tempdir().expect("tempdir");
    let inv = home.path().join("inventory.yml");
    fs::write(
        &inv,
        "all:\n  hosts:\n    me: {ansible_connection: local, pushscan_dir: '~/scan'}\n",
    )
    .unwrap();
    let state = home.path().join("state");
    let out = sweep(&inv, &playbook(home.path()), &state)
        .env("HOME", home.path())
        .output()
        .expect("run pushscan");
    let r = report(&state);
    let me = host(&r, "me");
    assert_eq!(
        me["status"],
        "not_detected",
        "{me:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reports: Vec<_> = fs::read_dir(home.path().join("scan/reports"))
        .expect("the checker wrote under $HOME/scan/reports")
        .collect();
    assert_eq!(reports.len(), 1);
    assert!(!Path::new("~").exists(), "no literal '~' directory");
}

/// A checker run on the controller (`local`) sees an allow-listed environment: never the
/// passwords pushscan read from its own environment, nor the SSH agent.
#[test]
fn local_checker_gets_no_secrets_from_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let checker = dir.path().join("envdump.sh");
    fs::write(&checker, "#!/bin/sh\nenv > \"$1/env.txt\"\n").unwrap();
    chmod(&checker, 0o755);
    let pb = format!(
        "name: env\nchecker:\n  path: {}\n  sha256: {}\n  platform: linux\n\
         work_dir: \"{}\"\nargs: [\"{{{{ work_dir }}}}\"]\ntimeout: 20s\nresults:\n  parser: exit_code\n",
        checker.display(),
        sha256_hex(&checker),
        dir.path().join("wd").display()
    );
    fs::write(dir.path().join("pb.yml"), pb).unwrap();
    fs::write(
        dir.path().join("inv.yml"),
        "all:\n  hosts:\n    me: {ansible_connection: local}\n",
    )
    .unwrap();
    let out = sweep(
        &dir.path().join("inv.yml"),
        &dir.path().join("pb.yml"),
        &dir.path().join("state"),
    )
    .env("PUSHSCAN_SSH_PASSWORD", "ssh-secret-4711")
    .env("PUSHSCAN_PASSWORD", "win-secret-4711")
    .env("SSH_AUTH_SOCK", "/tmp/agent-4711.sock")
    .env("LANG", "C.UTF-8")
    .output()
    .expect("run pushscan");
    let env = fs::read_to_string(dir.path().join("wd/env.txt")).unwrap_or_else(|e| {
        panic!(
            "the checker did not run ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    for secret in [
        "ssh-secret-4711",
        "win-secret-4711",
        "agent-4711",
        "PUSHSCAN_",
    ] {
        assert!(
            !env.contains(secret),
            "{secret} reached the checker:\n{env}"
        );
    }
    assert!(
        env.contains("LANG=C.UTF-8"),
        "the locale is passed on:\n{env}"
    );
}

/// Over SSH, `~/` is the login's home on the host: the one-session script expands it, and the
/// result is found and fetched there.
#[test]
fn tilde_work_directory_over_ssh_is_the_login_home() {
    let fleet = common::sshd::SshFleet::start(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let name = format!(".pushscan-tilde-test-{}", std::process::id());
    let home = dirs_home();
    let remote = home.join(&name);
    let _ = fs::remove_dir_all(&remote);
    let inv = dir.path().join("inventory.yml");
    fs::write(
        &inv,
        format!(
            "all:\n  hosts:\n    h: {{ansible_connection: ssh, ansible_host: {}, ansible_port: {}, pushscan_dir: '~/{name}'}}\n",
            fleet.addresses[0], fleet.port
        ),
    )
    .unwrap();
    let state = dir.path().join("state");
    let out = ssh_sweep(&fleet, &inv, &playbook(dir.path()), &state)
        .output()
        .expect("run pushscan");
    let r = report(&state);
    let h = host(&r, "h");
    let listed = fs::read_dir(remote.join("reports")).map(|d| d.count());
    let _ = fs::remove_dir_all(&remote);
    assert_eq!(
        h["status"],
        "not_detected",
        "{h:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(listed.ok(), Some(1), "one report under the login's home");
}

/// The home of the account the fleet logs in as (the one running the tests).
fn dirs_home() -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", "getent passwd \"$(id -un)\" | cut -d: -f6"])
        .output()
        .expect("getent");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}
