//! The lab's SMB side held to independent clients: the system `smbclient` (Samba's own) and
//! the `smb2` crate push, list, fetch and delete a file on a host's `ADMIN$`, the file lands
//! in that host's tree and nowhere else; logins with a wrong password, and any login on a
//! `wrong_password` host, fail; the server demands signing and refuses SMB 2.0.2; `smb_down`
//! and `port_closed` hosts have no SMB port (and `port_closed` no WinRM port either). Each
//! test runs its own lab on its own address range.

mod fleet_common;

use std::fs;
use std::net::Ipv4Addr;

use fleet_common::{negotiate, smbclient, start_with, text, Negotiated};
use pushscan_lab::spec::{ScenarioKind, SmbEncryption};

const SIGNING_ENABLED: u16 = 0x01;
const SIGNING_REQUIRED: u16 = 0x02;

#[test]
fn smbclient_put_list_get_delete_lands_in_the_hosts_own_tree() {
    let lab = start_with(
        Ipv4Addr::new(127, 0, 41, 1),
        10,
        &[ScenarioKind::Infected],
        SmbEncryption::Off,
    );
    let host = lab
        .host_of(ScenarioKind::Clean)
        .expect("a clean host")
        .clone();
    let work = lab.dir.path().join("work");
    fs::create_dir_all(&work).unwrap();
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let local = work.join("checker.bin");
    fs::write(&local, &payload).unwrap();
    let back = work.join("back.bin");

    let script = format!(
        "mkdir Temp\\pushscan; put {} Temp\\pushscan\\x.exe; ls Temp\\pushscan\\*; get \
         Temp\\pushscan\\x.exe {}",
        local.display(),
        back.display()
    );
    let out = smbclient(
        &lab,
        &host,
        "ADMIN$",
        &lab.password,
        &["-m", "SMB3"],
        &script,
    );
    assert!(out.status.success(), "smbclient failed:\n{}", text(&out));
    assert!(text(&out).contains("x.exe"), "listed:\n{}", text(&out));
    assert_eq!(fs::read(&back).unwrap(), payload, "fetched back intact");

    let landed = host.root.join("Windows/Temp/pushscan/x.exe");
    assert_eq!(
        fs::read(&landed).unwrap(),
        payload,
        "in {}",
        landed.display()
    );
    for other in lab.hosts().iter().filter(|h| h.address != host.address) {
        assert!(
            !other.root.join("Windows/Temp/pushscan").exists(),
            "nothing in {}'s tree",
            other.name
        );
    }

    // C$ is the same host's C:\.
    let out = smbclient(
        &lab,
        &host,
        "C$",
        &lab.password,
        &["-m", "SMB3"],
        "ls Windows\\Temp\\pushscan\\x.exe",
    );
    assert!(out.status.success(), "C$:\n{}", text(&out));
    assert!(text(&out).contains("x.exe"));

    let out = smbclient(
        &lab,
        &host,
        "ADMIN$",
        &lab.password,
        &["-m", "SMB3"],
        "del Temp\\pushscan\\x.exe; rmdir Temp\\pushscan",
    );
    assert!(out.status.success(), "delete:\n{}", text(&out));
    assert!(!landed.exists(), "deleted on the host tree");
    assert!(!host.root.join("Windows/Temp/pushscan").exists());
}

#[test]
fn refusals_signing_and_closed_ports() {
    let lab = start_with(
        Ipv4Addr::new(127, 0, 42, 1),
        10,
        &[
            ScenarioKind::WrongPassword,
            ScenarioKind::SmbDown,
            ScenarioKind::PortClosed,
        ],
        SmbEncryption::Off,
    );
    let clean = lab.host_of(ScenarioKind::Clean).unwrap().clone();

    // A wrong password is refused at login.
    let out = smbclient(&lab, &clean, "ADMIN$", "not-the-password", &[], "ls");
    assert!(!out.status.success());
    assert!(
        text(&out).contains("NT_STATUS_LOGON_FAILURE"),
        "{}",
        text(&out)
    );

    // A wrong_password host refuses the lab's password.
    let wrong = lab.host_of(ScenarioKind::WrongPassword).unwrap().clone();
    assert!(wrong.smb);
    let out = smbclient(&lab, &wrong, "ADMIN$", &lab.password, &[], "ls");
    assert!(
        text(&out).contains("NT_STATUS_LOGON_FAILURE"),
        "{}",
        text(&out)
    );
    // ... while the right password still works on the clean host.
    let out = smbclient(&lab, &clean, "ADMIN$", &lab.password, &[], "ls");
    assert!(out.status.success(), "{}", text(&out));

    // Signing: the server says "required" in its NEGOTIATE answer (so no client may run an
    // unsigned session), whatever dialect is picked.
    for dialects in [&[0x0210u16][..], &[0x0300], &[0x0210, 0x0300, 0x0302]] {
        match negotiate(clean.address, lab.smb_port(), dialects) {
            Negotiated::Answer {
                status: 0,
                security_mode,
                dialect,
            } => {
                assert_eq!(
                    security_mode & (SIGNING_ENABLED | SIGNING_REQUIRED),
                    SIGNING_ENABLED | SIGNING_REQUIRED,
                    "dialect {dialect:#06x}: signing required"
                );
                assert!(dialects.contains(&dialect));
            }
            other => panic!("NEGOTIATE {dialects:x?}: {other:?}"),
        }
    }
    // SMB 2.0.2 alone is below `server min protocol = SMB2_10`.
    match negotiate(clean.address, lab.smb_port(), &[0x0202]) {
        Negotiated::Closed => {}
        Negotiated::Answer { status, .. } => assert_ne!(status, 0, "SMB 2.0.2 refused"),
    }
    // smbclient told not to sign still signs (the server requires it) and gets in: a client
    // cannot opt out. The raw check above is what proves the requirement.
    let out = smbclient(
        &lab,
        &clean,
        "ADMIN$",
        &lab.password,
        &["--option=client signing=disabled", "-d", "3"],
        "ls",
    );
    assert!(out.status.success(), "{}", text(&out));

    // smb_down: no SMB on the address, WinRM answers.
    let down = lab.host_of(ScenarioKind::SmbDown).unwrap().clone();
    assert!(!fleet_common::accepts(down.address, lab.smb_port()));
    assert!(fleet_common::accepts(down.address, lab.winrm_port()));
    let out = smbclient(&lab, &down, "ADMIN$", &lab.password, &[], "ls");
    assert!(
        text(&out).contains("NT_STATUS_CONNECTION_REFUSED"),
        "{}",
        text(&out)
    );

    // port_closed: nothing at all.
    let closed = lab.host_of(ScenarioKind::PortClosed).unwrap().clone();
    assert!(!fleet_common::accepts(closed.address, lab.smb_port()));
    assert!(!fleet_common::accepts(closed.address, lab.winrm_port()));
    if let Some(https) = lab.state.winrm_https_port {
        assert!(!fleet_common::accepts(closed.address, https));
    }
}

#[test]
fn smb2_crate_put_list_get_delete() {
    let lab = start_with(Ipv4Addr::new(127, 0, 43, 1), 4, &[], SmbEncryption::Off);
    let host = lab.host_of(ScenarioKind::Clean).unwrap().clone();
    let payload: Vec<u8> = (0..1_048_576u32).map(|i| (i % 253) as u8).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = format!("{}:{}", host.address, lab.smb_port());
    rt.block_on(async {
        let mut client = smb2::connect(&addr, &lab.username, &lab.password)
            .await
            .expect("smb2 connect");
        let mut share = client.connect_share("ADMIN$").await.expect("ADMIN$");
        client
            .create_directory(&share, "Temp/pushscan")
            .await
            .expect("mkdir");
        client
            .write_file(&share, "Temp/pushscan/x.exe", &payload)
            .await
            .expect("write");
        let names: Vec<String> = client
            .list_directory(&mut share, "Temp/pushscan")
            .await
            .expect("list")
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert!(names.contains(&"x.exe".to_string()), "{names:?}");
        let back = client
            .read_file(&mut share, "Temp/pushscan/x.exe")
            .await
            .expect("read");
        assert_eq!(back, payload);
        assert_eq!(
            fs::read(host.root.join("Windows/Temp/pushscan/x.exe")).unwrap(),
            payload
        );
        client
            .delete_file(&share, "Temp/pushscan/x.exe")
            .await
            .expect("delete");
        client
            .delete_directory(&share, "Temp/pushscan")
            .await
            .expect("rmdir");
        client.disconnect_share(&share).await.expect("disconnect");
    });
    assert!(!host.root.join("Windows/Temp/pushscan").exists());

    // A wrong password fails the login.
    let wrong = rt.block_on(smb2::connect(&addr, &lab.username, "nope"));
    assert!(wrong.is_err(), "wrong password accepted");
}
