//! The WinRM simulator driven by `winrm-rs` 1.1 (the newest 1.x this
//! rustc builds: 1.2+ and 2.x need rustc 1.98), the client pushscan plans
//! to use. What works and what does not is asserted, so a change on either
//! side shows. The simulator behaves as Windows does; what fails below
//! fails against Windows too (and was fixed in later winrm-rs releases):
//!
//! * Basic over HTTPS: everything works (commands, output, exit codes, the
//!   stand-in checker, `certutil -hashfile`, wrong password refused, Basic
//!   over HTTP refused). winrm-rs 1.1 trusts only the webpki roots, so the
//!   lab's self-signed certificate needs `accept_invalid_certs`.
//! * NTLM without sealing (HTTPS, or HTTP with AllowUnencrypted and
//!   `EncryptionMode::Never`) works, except that winrm-rs 1.1 does a full
//!   handshake per request over a connection pool and now and then sends
//!   AUTHENTICATE on another connection than NEGOTIATE, which Windows (and
//!   the simulator, counting `ntlm_split_legs`) refuses with 401.
//! * NTLM over HTTP with Windows' defaults (AllowUnencrypted=false) never
//!   works: the first SOAP body goes in clear text with AUTHENTICATE (401).
//!   With AllowUnencrypted=true its sealed requests are fine but it cannot
//!   read sealed replies: it expects a CRLF before `--Encrypted Boundary--`,
//!   which Windows does not send (`WinrmError::Ntlm` checksum mismatch).
//! * A silent command outliving OperationTimeout: `run_command` fails on
//!   the `w:TimedOut` fault; a `start_command` + `receive_next` loop that
//!   treats that fault as "poll again" gets the output.

mod winrm_support;

use winrm_rs::{
    AuthMethod, EncryptionMode, SoapError, WinrmClient, WinrmConfig, WinrmCredentials, WinrmError,
};
use winrm_support::{tree_path, Lab, PASSWORD, USER};

fn client(
    port: u16,
    tls: bool,
    auth: AuthMethod,
    encryption: EncryptionMode,
    password: &str,
) -> WinrmClient {
    WinrmClient::new(
        WinrmConfig {
            port,
            use_tls: tls,
            accept_invalid_certs: tls,
            auth_method: auth,
            encryption,
            operation_timeout_secs: 2,
            connect_timeout_secs: 5,
            ..WinrmConfig::default()
        },
        WinrmCredentials::new(USER, password, ""),
    )
    .expect("winrm client")
}

fn is_timed_out(e: &WinrmError) -> bool {
    matches!(e, WinrmError::Soap(SoapError::Fault { code, .. }) if code == "w:TimedOut")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_over_https_core_scenarios() {
    let lab = Lab::start(10, &[("detected2", "fr")], |_| {}).await;
    let ip = lab.hosts[0].address.to_string();
    let c = client(
        lab.https(0).port(),
        true,
        AuthMethod::Basic,
        EncryptionMode::Auto,
        PASSWORD,
    );

    let out = c
        .run_command(&ip, "cmd", &["/c", "echo hello"])
        .await
        .expect("echo");
    assert_eq!(
        (out.stdout.as_slice(), out.stderr.as_slice(), out.exit_code),
        (&b"hello\r\n"[..], &b""[..], 0)
    );
    let out = c
        .run_command(&ip, "cmd", &["/c", "exit /b 3"])
        .await
        .expect("exit");
    assert_eq!(out.exit_code, 3);
    let out = c
        .run_command(&ip, "cmd", &["/c", r"type C:\nowhere.txt"])
        .await
        .expect("type");
    assert_eq!(
        (out.stderr.as_slice(), out.exit_code),
        (&b"The system cannot find the file specified.\r\n"[..], 1)
    );

    let exe = r"C:\Windows\Temp\emocheck.exe";
    let out = c
        .run_command(
            &ip,
            exe,
            &["/quiet", "/json", "/output", r"C:\Windows\Temp"],
        )
        .await
        .expect("checker");
    assert_eq!(out.exit_code, 0, "{out:?}");
    let reports: Vec<_> = std::fs::read_dir(tree_path(&lab.hosts[0], r"Windows\Temp"))
        .expect("read Temp")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with("_emocheck.json"))
        .collect();
    assert_eq!(reports.len(), 1);
    let json = std::fs::read_to_string(reports[0].path()).expect("report");
    assert!(
        json.contains("\"hostname\":\"PC-1\"")
            && json.contains("msrdpsvc.exe")
            && json.contains("\r\n"),
        "{json}"
    );

    let want = {
        use sha2::Digest;
        let bytes =
            std::fs::read(tree_path(&lab.hosts[0], r"Windows\Temp\emocheck.exe")).expect("exe");
        sha2::Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let out = c
        .run_command(&ip, "certutil", &["-hashfile", exe, "SHA256"])
        .await
        .expect("certutil");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(text.split("\r\n").nth(1), Some(want.as_str()), "{text}");

    let bad = client(
        lab.https(0).port(),
        true,
        AuthMethod::Basic,
        EncryptionMode::Auto,
        "wrong",
    );
    let err = bad
        .run_command(&ip, "hostname", &[])
        .await
        .expect_err("wrong password");
    assert!(matches!(err, WinrmError::AuthFailed(_)), "{err:?}");
    let http = client(
        lab.http(0).port(),
        false,
        AuthMethod::Basic,
        EncryptionMode::Auto,
        PASSWORD,
    );
    let err = http
        .run_command(&ip, "hostname", &[])
        .await
        .expect_err("basic over http");
    assert!(matches!(err, WinrmError::AuthFailed(_)), "{err:?}");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_command_needs_repolling_on_timed_out() {
    let lab = Lab::start(11, &[("clean", "en")], |_| {}).await;
    let ip = lab.hosts[0].address.to_string();
    let c = client(
        lab.https(0).port(),
        true,
        AuthMethod::Basic,
        EncryptionMode::Auto,
        PASSWORD,
    );
    let waiter = r"C:\Windows\Temp\waiter.exe";

    // run_command does not re-poll: the fault ends it (and it deletes the shell).
    let err = c
        .run_command(&ip, waiter, &[r"C:\Windows\Temp\never.flag"])
        .await
        .expect_err("silent");
    assert!(is_timed_out(&err), "{err:?}");

    let shell = c.open_shell(&ip).await.expect("shell");
    let id = shell
        .start_command(waiter, &[r"C:\Windows\Temp\go.flag"])
        .await
        .expect("start");
    match shell.receive_next(&id).await {
        Err(e) => assert!(is_timed_out(&e), "{e:?}"),
        Ok(chunk) => panic!("output before the flag exists: {:?}", chunk.stdout),
    }
    let out = c
        .run_command(&ip, "cmd", &["/c", r"echo.>C:\Windows\Temp\go.flag"])
        .await
        .expect("flag");
    assert_eq!(out.exit_code, 0);
    let mut stdout = Vec::new();
    loop {
        match shell.receive_next(&id).await {
            Ok(chunk) => {
                stdout.extend_from_slice(&chunk.stdout);
                if chunk.done {
                    assert_eq!(chunk.exit_code, Some(0));
                    break;
                }
            }
            Err(e) if is_timed_out(&e) => continue,
            Err(e) => panic!("receive: {e:?}"),
        }
    }
    assert_eq!(stdout, b"released\n");
    shell.close().await.expect("close");
    assert_eq!(lab.stats.snapshot()[0].open_shells, 0);
    lab.stop().await;
}

/// Run `hostname` over NTLM until it works; every failure must be a 401
/// caused by winrm-rs splitting the handshake over two connections.
async fn ntlm_hostname(lab: &Lab, c: &WinrmClient) {
    let ip = lab.hosts[0].address.to_string();
    for attempt in 0..10 {
        let before = lab.stats.snapshot()[0].clone();
        match c.run_command(&ip, "hostname", &[]).await {
            Ok(out) => {
                assert_eq!(out.stdout, b"PC-1\r\n");
                return;
            }
            Err(e) => {
                let after = lab.stats.snapshot()[0].clone();
                assert!(matches!(e, WinrmError::AuthFailed(_)), "{e:?}");
                assert!(
                    after.ntlm_split_legs > before.ntlm_split_legs,
                    "attempt {attempt}: refused without a split handshake: {e:?}"
                );
            }
        }
    }
    panic!("NTLM never completed on one connection in 10 attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ntlm_without_sealing_works_but_races_over_pooled_connections() {
    let lab = Lab::start(12, &[("clean", "en")], |cfg| cfg.allow_unencrypted = true).await;
    let ip = lab.hosts[0].address.to_string();
    let https = client(
        lab.https(0).port(),
        true,
        AuthMethod::Ntlm,
        EncryptionMode::Auto,
        PASSWORD,
    );
    ntlm_hostname(&lab, &https).await;
    let http = client(
        lab.http(0).port(),
        false,
        AuthMethod::Ntlm,
        EncryptionMode::Never,
        PASSWORD,
    );
    ntlm_hostname(&lab, &http).await;

    let bad = client(
        lab.https(0).port(),
        true,
        AuthMethod::Ntlm,
        EncryptionMode::Auto,
        "wrong",
    );
    let err = bad
        .run_command(&ip, "hostname", &[])
        .await
        .expect_err("wrong password");
    assert!(matches!(err, WinrmError::AuthFailed(_)), "{err:?}");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ntlm_sealing_of_winrm_rs_1_1_does_not_interoperate() {
    // Windows' defaults: the clear-text first body is refused.
    let lab = Lab::start(13, &[("clean", "en")], |_| {}).await;
    let ip = lab.hosts[0].address.to_string();
    let c = client(
        lab.http(0).port(),
        false,
        AuthMethod::Ntlm,
        EncryptionMode::Auto,
        PASSWORD,
    );
    let err = c
        .run_command(&ip, "hostname", &[])
        .await
        .expect_err("clear text over HTTP");
    assert!(matches!(err, WinrmError::AuthFailed(_)), "{err:?}");
    lab.stop().await;

    // AllowUnencrypted=true: the handshake passes, the sealed replies are not understood.
    let lab = Lab::start(13, &[("clean", "en")], |cfg| cfg.allow_unencrypted = true).await;
    let ip = lab.hosts[0].address.to_string();
    let c = client(
        lab.http(0).port(),
        false,
        AuthMethod::Ntlm,
        EncryptionMode::Auto,
        PASSWORD,
    );
    let mut unsealing_failures = 0;
    for _ in 0..5 {
        match c.run_command(&ip, "hostname", &[]).await {
            Ok(out) => panic!("sealed NTLM unexpectedly worked: {out:?}"),
            Err(WinrmError::Ntlm(_)) => unsealing_failures += 1,
            Err(WinrmError::AuthFailed(_)) => {}
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    }
    assert!(unsealing_failures > 0);
    lab.stop().await;
}
