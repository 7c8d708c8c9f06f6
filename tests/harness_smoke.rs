//! Smoke tests of the test harness itself (`lab/testkit/src/sshd.rs`): the loopback sshd fleet
//! must accept the system OpenSSH client with the generated key and known_hosts, refuse unknown
//! host keys under strict checking, serve SFTP, scale past one /24 and one sshd's 16 listen
//! sockets, accept a password when asked to, and leave no process behind when dropped.

mod common;

use common::sshd::{client_binary, FleetOptions, SshFleet};
use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// `ssh` exactly as a careful operator would run it against the fleet.
fn ssh(fleet: &SshFleet, address: &str, known_hosts: &Path, remote: &str) -> Output {
    Command::new(client_binary("ssh"))
        .args(["-F", "/dev/null", "-o", "BatchMode=yes"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args(["-o", "GlobalKnownHostsFile=/dev/null"])
        .args(["-o", "StrictHostKeyChecking=yes"])
        .arg("-i")
        .arg(&fleet.client_key)
        .arg("-p")
        .arg(fleet.port.to_string())
        .arg(format!("{}@{address}", fleet.user))
        .arg(remote)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run ssh")
}

fn describe(out: &Output, fleet: &SshFleet) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}\nsshd log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        fleet.sshd_log()
    )
}

fn unique(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{tag}-{}-{nanos}", std::process::id())
}

/// Pids whose command line contains `marker` (zombies have an empty command line).
fn pids_with(marker: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(cmdline) = fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(marker) {
                out.push(pid);
            }
        }
    }
    out
}

/// Polls `cond` until it holds; panics with `what` if it never does (a readiness wait, not a
/// timing assertion).
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn five_hosts_accept_the_key_and_check_host_keys() {
    let fleet = SshFleet::start(5);
    assert_eq!(
        fleet.addresses,
        [
            "127.0.1.1",
            "127.0.1.2",
            "127.0.1.3",
            "127.0.1.4",
            "127.0.1.5"
        ]
    );
    assert!(fleet.host_key_pub.starts_with("ssh-ed25519 AAAA"));
    let known = fs::read_to_string(&fleet.known_hosts).unwrap();
    assert_eq!(known.lines().count(), 5);
    assert!(known.starts_with(&format!("[127.0.1.1]:{} ssh-ed25519 AAAA", fleet.port)));

    for address in [&fleet.addresses[0], &fleet.addresses[4]] {
        let out = ssh(&fleet, address, &fleet.known_hosts, "echo hello");
        assert!(out.status.success(), "{}", describe(&out, &fleet));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    }
    // The helper builds an equivalent command.
    let out = fleet
        .ssh_command(&fleet.addresses[2])
        .arg("echo helper")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out, &fleet));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "helper\n");

    // An empty known_hosts with strict checking must refuse the host.
    let empty = fleet.dir.path().join("empty_known_hosts");
    fs::write(&empty, "").unwrap();
    let out = ssh(&fleet, &fleet.addresses[0], &empty, "echo hello");
    assert!(!out.status.success(), "{}", describe(&out, &fleet));
    assert!(out.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Host key verification failed"),
        "{}",
        describe(&out, &fleet)
    );

    let log = fleet.sshd_log();
    assert!(
        log.contains(&format!("Accepted publickey for {}", fleet.user)),
        "{log}"
    );
}

#[test]
fn sftp_batch_put_and_get() {
    let fleet = SshFleet::start(2);
    let work = fleet.dir.path().join("sftp-work");
    fs::create_dir(&work).unwrap();
    let local = work.join("upload.bin");
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(&local, &payload).unwrap();
    let remote = work.join("remote.bin");
    let back = work.join("download.bin");
    let batch = work.join("batch");
    fs::write(
        &batch,
        format!(
            "put {} {}\nget {} {}\n",
            local.display(),
            remote.display(),
            remote.display(),
            back.display()
        ),
    )
    .unwrap();

    let out = Command::new(client_binary("sftp"))
        .args(["-F", "/dev/null", "-o", "BatchMode=yes"])
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            fleet.known_hosts.display()
        ))
        .args(["-o", "StrictHostKeyChecking=yes"])
        .arg("-i")
        .arg(&fleet.client_key)
        .arg("-P")
        .arg(fleet.port.to_string())
        .arg("-b")
        .arg(&batch)
        .arg(format!("{}@{}", fleet.user, fleet.addresses[1]))
        .stdin(Stdio::null())
        .output()
        .expect("cannot run sftp");
    assert!(out.status.success(), "{}", describe(&out, &fleet));
    assert_eq!(fs::read(&remote).unwrap(), payload);
    assert_eq!(fs::read(&back).unwrap(), payload);
    let log = fleet.sshd_log();
    assert!(log.contains("Starting session: subsystem 'sftp'"), "{log}");
}

#[test]
fn three_hundred_hosts_step_the_third_octet() {
    let fleet = SshFleet::start(300);
    assert_eq!(fleet.addresses.len(), 300);
    assert_eq!(fleet.addresses[253], "127.0.1.254");
    assert_eq!(fleet.addresses[254], "127.0.2.1");
    assert_eq!(fleet.addresses[299], "127.0.2.46");
    // 16 listen sockets per sshd: 19 daemons.
    assert_eq!(fleet.sshd_configs.len(), 19);
    assert_eq!(fleet.daemon_pids().len(), 19);
    let out = ssh(&fleet, "127.0.2.46", &fleet.known_hosts, "echo hello");
    assert!(out.status.success(), "{}", describe(&out, &fleet));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
}

#[test]
fn password_authentication_without_pam() {
    let password = "pushscan-Test-pw-1";
    let shadow_before = fs::read("/etc/shadow").expect("this test runs as root");
    let fleet = SshFleet::start_with(FleetOptions {
        n_hosts: 2,
        password: Some(password.to_string()),
        ..FleetOptions::default()
    });

    let with_password = |pw: &str| {
        let askpass = fleet.dir.path().join(format!("askpass-{}", pw.len()));
        common::write_exe(
            &askpass,
            &format!("#!/bin/sh\nprintf '%s\\n' '{pw}'\n"),
            0o700,
        );
        Command::new(client_binary("ssh"))
            .args(["-F", "/dev/null", "-o", "BatchMode=no"])
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                fleet.known_hosts.display()
            ))
            .args(["-o", "StrictHostKeyChecking=yes"])
            .args(["-o", "PubkeyAuthentication=no"])
            .args(["-o", "PreferredAuthentications=password"])
            .args(["-o", "NumberOfPasswordPrompts=1"])
            .arg("-p")
            .arg(fleet.port.to_string())
            .arg(format!("{}@{}", fleet.user, fleet.addresses[1]))
            .arg("echo hello")
            .env("SSH_ASKPASS", &askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", ":0")
            .stdin(Stdio::null())
            .output()
            .expect("cannot run ssh")
    };

    let out = with_password(password);
    assert!(out.status.success(), "{}", describe(&out, &fleet));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    assert!(fleet
        .sshd_log()
        .contains(&format!("Accepted password for {}", fleet.user)));

    let out = with_password("wrong-password");
    assert!(!out.status.success(), "{}", describe(&out, &fleet));
    assert!(fleet
        .sshd_log()
        .contains(&format!("Failed password for {}", fleet.user)));

    // Keys still work, and the real /etc/shadow was never touched.
    let out = ssh(&fleet, &fleet.addresses[0], &fleet.known_hosts, "echo key");
    assert!(out.status.success(), "{}", describe(&out, &fleet));
    drop(fleet);
    assert_eq!(fs::read("/etc/shadow").unwrap(), shadow_before);
}

#[test]
fn drop_kills_sessions_and_daemons() {
    let fleet = SshFleet::start(1);
    let marker = unique("pushscan-smoke-drop");
    let (head, tail) = marker.split_at(10);
    // The marker only appears once the remote shell joins the two halves, so the local ssh
    // client's command line does not match it.
    let mut client = fleet
        .ssh_command(&fleet.addresses[0])
        .arg(format!("sh -c 'sleep 3600; :' \"{head}\"\"{tail}\""))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the remote sleep to start", || {
        !pids_with(&marker).is_empty()
    });
    let daemons = fleet.daemon_pids();
    drop(fleet);
    wait_until("the remote session to be killed", || {
        pids_with(&marker).is_empty()
    });
    for pid in daemons {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "sshd {pid} still exists after drop"
        );
    }
    // The client sees its connection close.
    let status = client.wait().unwrap();
    assert!(!status.success());
}
