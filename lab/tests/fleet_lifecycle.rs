//! The lab's life cycle: `up` (library and CLI) writes an inventory pushscan loads, a 0600
//! `lab.env`, a pinned playbook pushscan loads, the host trees, and every host answers on the
//! ports its scenario says; `down` leaves no process, no listening socket and no added
//! loopback address behind (host trees kept, `--purge` removes them); a lab killed with
//! SIGKILL is cleaned by the next `up`; a taken port and a bad spec fail clearly, starting
//! nothing. A 200-host fleet starts too (its time and memory are printed). Each test has its
//! own address range.

mod fleet_common;

use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use fleet_common::{listening, marked_processes, pushscan_json, spec, start, text, EXE};
use pushscan_lab::fleet::{self, sys, LabState};
use pushscan_lab::spec::{ScenarioKind, Spec};

/// Every group `host` is in, through `children` too, in `pushscan inventory --list` output.
fn groups_of(list: &serde_json::Value, host: &str) -> Vec<String> {
    let Some(all) = list.as_object() else {
        return Vec::new();
    };
    let lists = |g: &serde_json::Value, key: &str, name: &str| {
        g[key]
            .as_array()
            .is_some_and(|v| v.iter().any(|x| x == name))
    };
    let mut groups: Vec<String> = all
        .iter()
        .filter(|(_, g)| lists(g, "hosts", host))
        .map(|(name, _)| name.clone())
        .collect();
    let mut i = 0;
    while i < groups.len() {
        let child = groups[i].clone();
        for (name, g) in all {
            if lists(g, "children", &child) && !groups.contains(name) {
                groups.push(name.clone());
            }
        }
        i += 1;
    }
    groups
}

const ALL_KINDS: [ScenarioKind; 8] = [
    ScenarioKind::Infected,
    ScenarioKind::Hang,
    ScenarioKind::Crash,
    ScenarioKind::Noreport,
    ScenarioKind::WrongPassword,
    ScenarioKind::PortClosed,
    ScenarioKind::SmbDown,
    ScenarioKind::Slow,
];

fn cli(args: &[&str]) -> Output {
    Command::new(EXE)
        .args(args)
        .env_remove(fleet::LAB_DIR_ENV)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run pushscan-lab")
}

fn lo_has(addrs: &[Ipv4Addr]) -> Vec<Ipv4Addr> {
    let present = sys::lo_addresses().unwrap();
    addrs
        .iter()
        .copied()
        .filter(|a| present.contains(a))
        .collect()
}

/// Everything `down` promises: no process, no socket, no added address.
fn assert_gone(dir: &Path, state: &LabState) {
    assert_eq!(
        marked_processes(dir),
        Vec::<u32>::new(),
        "lab processes left"
    );
    for pid in [state.smbd_pid, state.serve_pid].into_iter().flatten() {
        assert!(!sys::alive(pid), "pid {pid} still runs");
    }
    assert_eq!(
        listening(&state.sockets()),
        Vec::<SocketAddrV4>::new(),
        "sockets left"
    );
    assert_eq!(
        lo_has(&state.added_addresses),
        Vec::<Ipv4Addr>::new(),
        "addresses left on lo"
    );
}

#[test]
fn up_writes_what_pushscan_needs_and_down_leaves_nothing() {
    let base = Ipv4Addr::new(127, 0, 46, 1);
    let mut s = spec(base, 12, &ALL_KINDS, 4);
    s.ous = Spec::shipped().ous;
    let lab = start(s);
    let dir = lab.lab.dir.clone();
    assert_eq!(lab.hosts().len(), 12);
    for kind in ALL_KINDS {
        assert!(lab.host_of(kind).is_some(), "a {kind} host");
    }

    // The inventory and the playbook, as the pushscan binary reads them: `plan` loads both
    // (each host's transport, address and port; the checker's pin), `inventory --list` shows
    // the groups and variables.
    let plan = pushscan_json(&[
        "plan".as_ref(),
        "-i".as_ref(),
        lab.inventory.as_os_str(),
        "-p".as_ref(),
        lab.playbook.as_os_str(),
        "--format".as_ref(),
        "json".as_ref(),
    ]);
    assert_eq!(plan["hosts"], 12, "{plan}");
    assert_eq!(plan["checker"]["matches_pin"], true, "{plan}");
    let planned: Vec<&serde_json::Value> = plan["waves"]
        .as_array()
        .expect("plan waves")
        .iter()
        .flat_map(|w| w["hosts"].as_array().expect("wave hosts"))
        .collect();
    assert_eq!(planned.len(), 12, "{plan}");
    let list = pushscan_json(&[
        "inventory".as_ref(),
        "-i".as_ref(),
        lab.inventory.as_os_str(),
        "--list".as_ref(),
    ]);
    for h in lab.hosts() {
        let ph = planned
            .iter()
            .find(|p| p["name"] == h.name.as_str())
            .unwrap_or_else(|| panic!("{} listed: {plan}", h.name));
        assert_eq!(ph["address"], h.address.to_string());
        assert_eq!(ph["port"], lab.winrm_port());
        assert_eq!(ph["transport"], "winrm");
        let groups = groups_of(&list, &h.name);
        let ou_group = format!("ou_{}", h.ou.to_ascii_lowercase());
        assert!(groups.contains(&ou_group), "{groups:?}");
        assert!(groups.contains(&"windows".to_string()));
        for g in &h.groups {
            assert!(groups.contains(g), "{} in {g}: {groups:?}", h.name);
        }
        let vars = &list["_meta"]["hostvars"][h.name.as_str()];
        assert_eq!(vars["lab_scenario"], h.scenario.as_str());
        assert_eq!(vars["ou"], h.ou.as_str());
    }

    // lab.env: the account, owner-only.
    let env = fs::read_to_string(&lab.env_file).unwrap();
    assert!(env.contains(&format!("PUSHSCAN_USER='{}'", lab.username)));
    assert!(env.contains(&format!("PUSHSCAN_PASSWORD='{}'", lab.password)));
    let mode = fs::metadata(&lab.env_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // The playbook (pushscan loaded it above): its pin is the stand-in's real SHA-256.
    let text_pb = fs::read_to_string(&lab.playbook).unwrap();
    assert_eq!(
        fs::read(&lab.checker).unwrap(),
        pushscan_testkit::emocheck::SCRIPT_BYTES
    );
    let pin = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(fs::read(&lab.checker).unwrap()))
    };
    assert_eq!(lab.checker_sha256, pin);
    assert!(text_pb.contains(&pin));
    assert!(text_pb.contains("platform: windows"));
    assert!(text_pb.contains(r"work_dir: 'C:\Windows\pushscan'"));
    assert!(text_pb.contains(r#"args: ["/quiet", "/json", "/output", "{{ run_dir }}"]"#));

    // Host trees, owned by the lab account; the infected host's "malware" is on disk.
    let (uid, _) = sys::user_ids(&lab.username).expect("lab account exists");
    for h in lab.hosts() {
        assert!(h.root.join("Windows/Temp").is_dir());
        assert_eq!(
            fs::metadata(h.root.join("Windows/Temp")).unwrap().uid(),
            uid
        );
    }
    let infected = lab.host_of(ScenarioKind::Infected).unwrap();
    assert!(infected.checker_args.contains(&"detected".to_string()));

    // Every host answers as its scenario says.
    let state = lab.state.clone();
    for h in lab.hosts() {
        assert_eq!(
            fleet_common::accepts(h.address, state.smb_port),
            h.smb,
            "{} ({}) SMB",
            h.name,
            h.scenario
        );
        assert_eq!(
            fleet_common::accepts(h.address, state.winrm_http_port),
            h.winrm,
            "{} ({}) WinRM",
            h.name,
            h.scenario
        );
        if let Some(p) = state.winrm_https_port {
            assert_eq!(fleet_common::accepts(h.address, p), h.winrm);
        }
    }
    let slow = lab.host_of(ScenarioKind::Slow).unwrap();
    assert_eq!(slow.latency_ms, pushscan_lab::spec::DEFAULT_SLOW_LATENCY_MS);
    assert!(lab.tls_cert.as_ref().unwrap().is_file());
    let serve_plan = lab.lab.dir.join("serve.json");
    assert_eq!(
        fs::metadata(&serve_plan).unwrap().permissions().mode() & 0o777,
        0o600,
        "serve.json holds passwords"
    );
    let st = fleet::status(&dir).unwrap();
    assert!(st.running(), "{st}");

    // down.
    let fleet_common::TestLab { lab, dir: tmp } = lab;
    let report = lab.down().expect("down");
    assert!(report.killed.len() >= 2, "{report}");
    assert_gone(&dir, &state);
    assert!(!dir.join("lab.json").exists());
    assert!(!dir.join("serve.json").exists());
    assert!(
        state.hosts[0].root.join("Windows/Temp").is_dir(),
        "trees kept"
    );
    assert!(!fleet::status(&dir).unwrap().running());
    // A second down is harmless; --purge removes everything.
    fleet::down(&dir, true).expect("down --purge");
    assert!(!dir.exists(), "purged");
    drop(tmp);
}

#[test]
fn cli_up_runs_in_the_background_and_down_stops_it() {
    fleet_common::require_samba();
    let base = Ipv4Addr::new(127, 0, 47, 1);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lab");
    let s = spec(base, 6, &[ScenarioKind::SmbDown], 4);
    let spec_file = tmp.path().join("spec.yml");
    fs::write(
        &spec_file,
        format!(
            "hosts: 3\nbase_address: {base}\nscenarios:\n  - kind: clean\n    weight: 4\n  - \
             kind: smb_down\nwinrm:\n  https_port: null\n"
        ),
    )
    .unwrap();
    let dir_s = dir.to_str().unwrap();
    let out = cli(&[
        "up",
        "--dir",
        dir_s,
        "--spec",
        spec_file.to_str().unwrap(),
        "--hosts",
        "6",
        "--smb-port",
        &s.smb.port.to_string(),
        "--winrm-port",
        &s.winrm.http_port.to_string(),
    ]);
    assert!(out.status.success(), "up:\n{}", text(&out));
    assert!(text(&out).contains("6 hosts up"), "{}", text(&out));
    // `up` has returned: the lab runs in the background.
    let state = LabState::load(&dir).unwrap().expect("lab.json");
    assert_eq!(state.hosts.len(), 6);
    assert_eq!(state.winrm_https_port, None);
    assert!(sys::alive(state.serve_pid.unwrap()));
    assert!(sys::alive(state.smbd_pid.unwrap()));
    assert_eq!(
        listening(&state.sockets()).len(),
        state.sockets().len(),
        "every socket listens"
    );
    let out = cli(&["status", "--dir", dir_s]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("running"), "{}", text(&out));

    let out = cli(&["down", "--dir", dir_s]);
    assert!(out.status.success(), "down:\n{}", text(&out));
    assert_gone(&dir, &state);
    let out = cli(&["status", "--dir", dir_s]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let out = cli(&["down", "--dir", dir_s, "--purge"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!dir.exists());
}

#[test]
fn a_lab_killed_with_sigkill_is_cleaned_by_the_next_up() {
    fleet_common::require_samba();
    let base = Ipv4Addr::new(127, 0, 48, 1);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lab");
    let dir_s = dir.to_str().unwrap();
    let s = spec(base, 5, &[], 1);
    let args = [
        "up",
        "--dir",
        dir_s,
        "--hosts",
        "5",
        "--smb-port",
        &s.smb.port.to_string(),
        "--winrm-port",
        &s.winrm.http_port.to_string(),
    ];
    // The built-in spec starts at 127.0.10.1: use a spec file for this range.
    let spec_file = tmp.path().join("spec.yml");
    fs::write(
        &spec_file,
        format!("base_address: {base}\nwinrm:\n  https_port: null\n"),
    )
    .unwrap();
    let mut args: Vec<&str> = args.to_vec();
    args.extend(["--spec", spec_file.to_str().unwrap()]);
    let out = cli(&args);
    assert!(out.status.success(), "up:\n{}", text(&out));
    let old = LabState::load(&dir).unwrap().unwrap();
    let smbd = old.smbd_pid.unwrap();
    let serve = old.serve_pid.unwrap();
    // smbd's helpers (its children) are left orphaned by a SIGKILL of smbd alone.
    let smbd_children = sys::descendants(&[smbd]);
    for pid in [serve, smbd] {
        // SAFETY: plain syscall on a pid this test started (through the CLI).
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
    let out = cli(&["status", "--dir", dir_s]);
    assert_eq!(out.status.code(), Some(3), "crashed lab:\n{}", text(&out));
    assert!(text(&out).contains("NOT running"), "{}", text(&out));

    let out = cli(&args);
    assert!(out.status.success(), "second up:\n{}", text(&out));
    assert!(
        text(&out).contains("still running or crashed"),
        "{}",
        text(&out)
    );
    for pid in [smbd, serve].into_iter().chain(smbd_children) {
        assert!(!sys::alive(pid), "leftover pid {pid} was cleaned");
    }
    let new = LabState::load(&dir).unwrap().unwrap();
    assert_ne!(new.smbd_pid, old.smbd_pid);
    assert_eq!(listening(&new.sockets()).len(), new.sockets().len());
    let out = cli(&["down", "--dir", dir_s, "--purge"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_gone(&dir, &new);
}

#[test]
fn a_taken_port_or_a_bad_spec_fails_clearly_and_starts_nothing() {
    fleet_common::require_samba();
    let base = Ipv4Addr::new(127, 0, 49, 1);
    let s = spec(base, 3, &[], 1);
    // Someone else holds the SMB port on the second address.
    let second = Ipv4Addr::new(127, 0, 49, 2);
    let _squatter = TcpListener::bind(SocketAddrV4::new(second, s.smb.port)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = fleet::UpOptions::new(tmp.path().join("lab"), s);
    opts.exe = EXE.into();
    let err = fleet::up(opts).expect_err("port taken");
    let msg = format!("{err:#}");
    assert!(msg.contains("not free on 127.0.49.2"), "{msg}");
    assert!(msg.contains("--smb-port"), "{msg}");
    let dir = tmp.path().join("lab");
    assert!(!dir.join("lab.json").exists(), "no state left");
    assert_eq!(
        marked_processes(&fs::canonicalize(&dir).unwrap()),
        Vec::<u32>::new()
    );
    assert_eq!(
        lo_has(&[base, second, Ipv4Addr::new(127, 0, 49, 3)]),
        Vec::<Ipv4Addr>::new(),
        "added addresses removed"
    );

    // An unknown key is located.
    let spec_file = tmp.path().join("bad.yml");
    fs::write(
        &spec_file,
        "hosts: 2\nsmb:\n  port: 445\n  encrypt: required\n",
    )
    .unwrap();
    let out = cli(&[
        "up",
        "--dir",
        tmp.path().join("lab2").to_str().unwrap(),
        "--spec",
        spec_file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yml:4:"), "{err}");
    assert!(err.contains("encrypt"), "{err}");
}

#[test]
fn two_hundred_hosts_start_and_stop() {
    let base = Ipv4Addr::new(127, 0, 60, 1);
    let t0 = Instant::now();
    let lab = start(spec(base, 200, &ALL_KINDS, 30));
    let up = t0.elapsed();
    assert_eq!(lab.hosts().len(), 200);
    let state = lab.state.clone();
    assert_eq!(listening(&state.sockets()).len(), state.sockets().len());
    let serve_rss = sys::rss_kib(state.serve_pid.unwrap()).unwrap_or(0);
    let smbd_rss = sys::rss_kib(state.smbd_pid.unwrap()).unwrap_or(0);
    let dir = lab.lab.dir.clone();
    let fleet_common::TestLab { lab, dir: _tmp } = lab;
    let t1 = Instant::now();
    lab.down().expect("down");
    eprintln!(
        "200 hosts: up {:.1} s, down {:.1} s, serve RSS {serve_rss} KiB, smbd RSS {smbd_rss} KiB \
         ({} sockets)",
        up.as_secs_f64(),
        t1.elapsed().as_secs_f64(),
        state.sockets().len()
    );
    assert_gone(&dir, &state);
}
