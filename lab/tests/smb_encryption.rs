//! SMB3 encryption as the spec selects it (`smb.encryption`): with `required`, smbclient
//! asking for encryption works and an SMB 2.1 client (which cannot encrypt) is refused, and
//! so is the `smb2` crate (it does not announce the encryption capability: a known limitation
//! pinned here); with `desired`, SMB 2.1, an encrypting smbclient and `smb2` all get in.

mod fleet_common;

use std::fs;
use std::net::Ipv4Addr;

use fleet_common::{smbclient, start_with, text};
use pushscan_lab::spec::{ScenarioKind, SmbEncryption};

#[test]
fn required_encryption_refuses_clients_that_cannot_encrypt() {
    let lab = start_with(
        Ipv4Addr::new(127, 0, 44, 1),
        3,
        &[],
        SmbEncryption::Required,
    );
    let host = lab.host_of(ScenarioKind::Clean).unwrap().clone();
    let conf = fs::read_to_string(&lab.state.smbd_conf).unwrap();
    assert!(conf.contains("server smb encrypt = required"), "{conf}");

    let local = lab.dir.path().join("f.txt");
    fs::write(&local, b"encrypted all the way").unwrap();
    let out = smbclient(
        &lab,
        &host,
        "ADMIN$",
        &lab.password,
        &["--client-protection=encrypt"],
        &format!("put {} Temp\\enc.txt; ls Temp\\enc.txt", local.display()),
    );
    assert!(out.status.success(), "encrypting client:\n{}", text(&out));
    assert_eq!(
        fs::read(host.root.join("Windows/Temp/enc.txt")).unwrap(),
        b"encrypted all the way"
    );

    // SMB 2.1 has no encryption: the session is refused.
    let out = smbclient(
        &lab,
        &host,
        "ADMIN$",
        &lab.password,
        &["-m", "SMB2_10"],
        "ls",
    );
    assert!(!out.status.success(), "SMB 2.1 got in:\n{}", text(&out));
    assert!(
        text(&out).contains("NT_STATUS_ACCESS_DENIED"),
        "{}",
        text(&out)
    );

    // The smb2 crate (0.39) is refused by server-required encryption: its NEGOTIATE offers
    // the SMB 3.1.1 encryption context but not SMB2_GLOBAL_CAP_ENCRYPTION, so Samba enables
    // no encryption for the connection and rejects the session ("reject session with
    // dialect[0x0311] as encryption is required" in smbd's log). Known limitation of the
    // client, pinned here: when a newer smb2 encrypts, this assertion tells us.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = format!("{}:{}", host.address, lab.smb_port());
    let result = rt.block_on(smb2::connect(&addr, &lab.username, &lab.password));
    match result {
        Err(e) => {
            assert_eq!(e.kind(), smb2::ErrorKind::AccessDenied, "{e}");
            assert!(e.to_string().contains("SessionSetup"), "{e}");
        }
        Ok(_) => panic!(
            "smb2 now logs in under `server smb encrypt = required`: update this test, \
             lab/README.md and the smb2 note"
        ),
    }
    let log = fs::read_to_string(lab.dir.path().join("lab/log/smbd.log")).unwrap();
    assert!(
        log.contains("as encryption is required"),
        "smbd says why:\n{log}"
    );
}

#[test]
fn desired_encryption_serves_smb2_crate_and_smb21() {
    let lab = start_with(Ipv4Addr::new(127, 0, 45, 1), 2, &[], SmbEncryption::Desired);
    let host = lab.host_of(ScenarioKind::Clean).unwrap().clone();
    let out = smbclient(
        &lab,
        &host,
        "ADMIN$",
        &lab.password,
        &["-m", "SMB2_10"],
        "ls",
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = smbclient(
        &lab,
        &host,
        "ADMIN$",
        &lab.password,
        &["--client-protection=encrypt"],
        "ls",
    );
    assert!(out.status.success(), "{}", text(&out));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = format!("{}:{}", host.address, lab.smb_port());
    let back = rt.block_on(async {
        let mut client = smb2::connect(&addr, &lab.username, &lab.password).await?;
        let mut share = client.connect_share("ADMIN$").await?;
        client.write_file(&share, "Temp/d.txt", b"desired").await?;
        let back = client.read_file(&mut share, "Temp/d.txt").await?;
        client.delete_file(&share, "Temp/d.txt").await?;
        Ok::<_, smb2::Error>(back)
    });
    assert_eq!(back.expect("smb2 under desired encryption"), b"desired");
}
