//! The WinRM simulator driven by `winrm-rs` 1.4.1 (vendored, see
//! `vendor/README.md`), the client of pushscan's WinRM transport. Each test
//! asserts a behaviour the transport relies on. Defects that remain in 1.4.1
//! are pinned, so that a fixed client makes them fail and tell us: the last
//! two tests, and the ExitCode of a command ended by Ctrl+C.
//!
//! Runtime: the tests that must not see a spurious 401 run on a
//! `current_thread` runtime. On a multi-thread runtime winrm-rs 1.4.1 now
//! and then sends the next request of an NTLM exchange on a new TCP
//! connection, which carries no NTLM session (see the last two tests).
//!
//! Not testable with 1.4.1: a custom trust anchor (CA file) for HTTPS. The
//! client trusts the webpki roots only, or nothing (`accept_invalid_certs`);
//! `WinrmConfig` has no field for a CA certificate. What is asserted
//! instead: the lab's self-signed certificate is refused by default, and
//! accepted with `accept_invalid_certs`.

mod winrm_support;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use winrm_rs::{
    AuthMethod, EncryptionMode, NtlmError, SoapError, WinrmClient, WinrmConfig, WinrmCredentials,
    WinrmError,
};
use winrm_support::{tree_path, Lab, Tap, PASSWORD, USER};

/// OperationTimeout of the clients below.
const OPERATION_TIMEOUT: u64 = 1;

fn config(port: u16, tls: bool, auth: AuthMethod, encryption: EncryptionMode) -> WinrmConfig {
    WinrmConfig {
        port,
        use_tls: tls,
        auth_method: auth,
        encryption,
        operation_timeout_secs: OPERATION_TIMEOUT,
        connect_timeout_secs: 5,
        ..WinrmConfig::default()
    }
}

fn client_with(cfg: WinrmConfig, password: &str) -> WinrmClient {
    WinrmClient::builder(cfg)
        .credentials(WinrmCredentials::new(USER, password, ""))
        .build()
        .expect("winrm client")
}

/// NTLM over plain HTTP, every SOAP body sealed (`EncryptionMode::Auto`).
fn ntlm_http(port: u16, password: &str) -> WinrmClient {
    client_with(
        config(port, false, AuthMethod::Ntlm, EncryptionMode::Auto),
        password,
    )
}

/// HTTPS accepting the lab's self-signed certificate.
fn over_https(port: u16, auth: AuthMethod, password: &str) -> WinrmClient {
    client_with(
        WinrmConfig {
            accept_invalid_certs: true,
            ..config(port, true, auth, EncryptionMode::Auto)
        },
        password,
    )
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The HTTP/1.1 requests of a client byte stream: (header block in lower
/// case, body length); bodies are framed by Content-Length, as winrm-rs sends
/// them.
fn requests(mut stream: &[u8]) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    while let Some(end) = stream.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&stream[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().expect("content-length"))
            .unwrap_or(0);
        assert!(!head.contains("transfer-encoding"), "{head}");
        stream = &stream[(end + 4 + len).min(stream.len())..];
        out.push((head, len));
    }
    assert!(stream.is_empty(), "a truncated request");
    out
}

/// Processes whose command line mentions `dir` (the commands of a lab).
fn processes_under(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        if let Ok(raw) = std::fs::read(entry.path().join("cmdline")) {
            let line = String::from_utf8_lossy(&raw).replace('\0', " ");
            if line.contains(&needle) {
                found.push(line);
            }
        }
    }
    found
}

/// Wait up to 5 s for every process of the lab to be gone.
async fn assert_no_process_left(lab: &Lab) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = processes_under(lab.dir.path());
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "processes left: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn is_auth_failed(e: &WinrmError) -> bool {
    matches!(e, WinrmError::AuthFailed(_))
}

#[tokio::test(flavor = "current_thread")]
async fn ntlm_sealed_over_http_runs_commands_and_nothing_crosses_in_clear() {
    // Windows' defaults: AllowUnencrypted=false, so an unsealed body is refused.
    let lab = Lab::start(10, &[("clean", "en")], |_| {}).await;
    let tap = Tap::start(Ipv4Addr::new(127, 0, 10, 200), lab.http(0)).await;
    let host = tap.address.ip().to_string();
    let c = ntlm_http(tap.address.port(), PASSWORD);

    let marker = "pushscan-seal-check-5f1c";
    let out = c
        .run_command(&host, "cmd", &["/c", &format!("echo {marker}")])
        .await
        .expect("echo");
    assert_eq!(
        (out.stdout, out.stderr, out.exit_code),
        (format!("{marker}\r\n").into_bytes(), Vec::new(), 0)
    );
    let out = c
        .run_command(&host, "cmd", &["/c", "exit /b 3"])
        .await
        .expect("exit");
    assert_eq!((out.stdout.len(), out.exit_code), (0, 3));
    let out = c
        .run_command(&host, "cmd", &["/c", r"type C:\nowhere.txt"])
        .await
        .expect("type");
    assert_eq!(
        (out.stdout.as_slice(), out.stderr.as_slice(), out.exit_code),
        (
            &b""[..],
            &b"The system cannot find the file specified.\r\n"[..],
            1
        )
    );
    let out = c
        .run_command(&host, "hostname", &[])
        .await
        .expect("hostname");
    assert_eq!(out.stdout, b"PC-1\r\n");

    let stats = lab.stats.snapshot()[0].clone();
    assert_eq!(
        (
            stats.auth_failures,
            stats.sealed_without_session,
            stats.open_shells
        ),
        (0, 0, 0),
        "{stats:?}"
    );
    // Four commands: Create, Command, Receive, Signal, Delete each, at least.
    assert!(stats.sealed_requests >= 20, "{stats:?}");

    // The wire: SOAP never in clear, neither the command nor its output.
    let b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("{marker}\r\n"))
    };
    let conns = tap.connections();
    assert!(!conns.is_empty());
    let mut sealed_posts = 0;
    for conn in &conns {
        for needle in [marker.as_bytes(), b"Envelope", b"PC-1", b64.as_bytes()] {
            assert!(
                !contains(&conn.up, needle),
                "client sent {needle:?} in clear"
            );
            assert!(
                !contains(&conn.down, needle),
                "server sent {needle:?} in clear"
            );
        }
        for (head, body_len) in requests(&conn.up) {
            let content_type = head
                .lines()
                .find_map(|l| l.strip_prefix("content-type:"))
                .unwrap_or_default()
                .trim();
            if content_type.starts_with("multipart/encrypted") {
                sealed_posts += 1;
            } else {
                assert_eq!(body_len, 0, "a request body not sealed: {head}");
            }
        }
    }
    assert_eq!(sealed_posts, stats.sealed_requests);
    lab.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn fifty_commands_on_one_client_without_an_authentication_failure() {
    let lab = Lab::start(11, &[("clean", "en")], |_| {}).await;
    let ip = lab.hosts[0].address.to_string();
    for c in [
        ntlm_http(lab.http(0).port(), PASSWORD),
        over_https(lab.https(0).port(), AuthMethod::Ntlm, PASSWORD),
    ] {
        for i in 0..50 {
            let out = c
                .run_command(&ip, "hostname", &[])
                .await
                .unwrap_or_else(|e| panic!("command {i}: {e:?}"));
            assert_eq!(out.stdout, b"PC-1\r\n");
        }
    }
    let stats = lab.stats.snapshot()[0].clone();
    assert_eq!(
        (
            stats.auth_failures,
            stats.ntlm_split_legs,
            stats.sealed_without_session,
            stats.commands_started,
            stats.open_shells
        ),
        (0, 0, 0, 100, 0),
        "{stats:?}"
    );
    lab.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn silent_commands_are_polled_again_and_deadlines_hold() {
    let lab = Lab::start(12, &[("clean", "en")], |_| {}).await;
    let ip = lab.hosts[0].address.to_string();
    let c = ntlm_http(lab.http(0).port(), PASSWORD);
    let waiter = r"C:\Windows\Temp\waiter.exe";

    // Silent for about 3 OperationTimeouts, then prints and exits.
    let flag = tree_path(&lab.hosts[0], r"Windows\Temp\go.flag");
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(3200)).await;
        std::fs::write(flag, b"").expect("write the flag");
    });
    let started = Instant::now();
    let out = c
        .run_command(&ip, waiter, &[r"C:\Windows\Temp\go.flag"])
        .await
        .expect("a silent command is waited for");
    release.await.expect("release");
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert_eq!(
        (out.stdout.as_slice(), out.exit_code),
        (&b"released\n"[..], 0)
    );
    let timeouts = lab.stats.snapshot()[0].receive_timeouts;
    assert!(timeouts >= 2, "{timeouts} w:TimedOut faults");

    // A total deadline: Timeout(secs), the command killed, the shell deleted.
    let started = Instant::now();
    let err = c
        .run_command_with_timeout(
            &ip,
            waiter,
            &[r"C:\Windows\Temp\never.flag"],
            Duration::from_millis(2500),
        )
        .await
        .expect_err("deadline");
    assert!(matches!(err, WinrmError::Timeout(3)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(8));
    assert_eq!(lab.stats.snapshot()[0].open_shells, 0);
    assert_no_process_left(&lab).await;

    // Shell::run_command has its own deadline, 2 x OperationTimeout, and
    // leaves the command running when it passes.
    let shell = c.open_shell(&ip).await.expect("shell");
    let err = shell
        .run_command(waiter, &[r"C:\Windows\Temp\never.flag"])
        .await
        .expect_err("Shell::run_command deadline");
    assert!(
        matches!(err, WinrmError::Timeout(t) if t == 2 * OPERATION_TIMEOUT),
        "{err:?}"
    );
    assert!(!processes_under(lab.dir.path()).is_empty());
    shell.close().await.expect("close");
    assert_no_process_left(&lab).await;
    assert_eq!(lab.stats.snapshot()[0].open_shells, 0);
    lab.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn wrong_password_unreachable_host_and_output_cap() {
    let lab = Lab::start(13, &[("clean", "en")], |_| {}).await;
    let ip = lab.hosts[0].address.to_string();
    let cases = [
        (
            "NTLM sealed over HTTP",
            ntlm_http(lab.http(0).port(), "wrong"),
        ),
        (
            "NTLM over HTTPS",
            over_https(lab.https(0).port(), AuthMethod::Ntlm, "wrong"),
        ),
        (
            "Basic over HTTPS",
            over_https(lab.https(0).port(), AuthMethod::Basic, "wrong"),
        ),
    ];
    for (what, c) in cases {
        let before = lab.stats.snapshot()[0].auth_failures;
        let err = c
            .run_command(&ip, "hostname", &[])
            .await
            .expect_err("wrong password");
        assert!(is_auth_failed(&err), "{what}: {err:?}");
        assert!(lab.stats.snapshot()[0].auth_failures > before, "{what}");
    }
    assert_eq!(lab.stats.snapshot()[0].shells_created, 0);

    // Nothing listening: a connect error.
    let closed = std::net::TcpListener::bind((lab.hosts[0].address, 0))
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let err = ntlm_http(closed, PASSWORD)
        .run_command(&ip, "hostname", &[])
        .await
        .expect_err("connection refused");
    assert!(
        matches!(&err, WinrmError::Http(e) if e.is_connect()),
        "{err:?}"
    );

    // Output over max_output_bytes: Transfer, and the shell is deleted.
    std::fs::write(
        tree_path(&lab.hosts[0], r"Windows\Temp\big.txt"),
        vec![b'x'; 200_000],
    )
    .expect("big file");
    let capped = client_with(
        WinrmConfig {
            max_output_bytes: Some(50_000),
            ..config(
                lab.http(0).port(),
                false,
                AuthMethod::Ntlm,
                EncryptionMode::Auto,
            )
        },
        PASSWORD,
    );
    let err = capped
        .run_command(&ip, "cmd", &["/c", r"type C:\Windows\Temp\big.txt"])
        .await
        .expect_err("over the cap");
    assert!(matches!(err, WinrmError::Transfer(_)), "{err:?}");
    assert_eq!(lab.stats.snapshot()[0].open_shells, 0);
    lab.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn basic_over_https_and_certificate_verification() {
    let lab = Lab::start(14, &[("detected2", "fr")], |_| {}).await;
    let ip = lab.hosts[0].address.to_string();
    let c = over_https(lab.https(0).port(), AuthMethod::Basic, PASSWORD);

    let out = c
        .run_command(&ip, "cmd", &["/c", "echo hello"])
        .await
        .expect("echo");
    assert_eq!(
        (out.stdout.as_slice(), out.stderr.as_slice(), out.exit_code),
        (&b"hello\r\n"[..], &b""[..], 0)
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
        json.contains("\"hostname\":\"PC-1\"") && json.contains("msrdpsvc.exe"),
        "{json}"
    );
    let want = {
        use sha2::Digest;
        let bytes =
            std::fs::read(tree_path(&lab.hosts[0], r"Windows\Temp\emocheck.exe")).expect("exe");
        hex::encode(sha2::Sha256::digest(bytes))
    };
    let out = c
        .run_command(&ip, "certutil", &["-hashfile", exe, "SHA256"])
        .await
        .expect("certutil");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(text.split("\r\n").nth(1), Some(want.as_str()), "{text}");

    // Verification on (the default): the self-signed certificate is refused
    // before anything is sent.
    let before = lab.stats.snapshot()[0].requests;
    let verifying = client_with(
        config(
            lab.https(0).port(),
            true,
            AuthMethod::Basic,
            EncryptionMode::Auto,
        ),
        PASSWORD,
    );
    let err = verifying
        .run_command(&ip, "hostname", &[])
        .await
        .expect_err("unknown issuer");
    let chain = {
        let mut text = format!("{err:?}");
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            text.push_str(&format!(" / {s}"));
            source = s.source();
        }
        text
    };
    assert!(
        matches!(err, WinrmError::Http(_)) && chain.contains("UnknownIssuer"),
        "{chain}"
    );
    assert_eq!(lab.stats.snapshot()[0].requests, before);

    // Basic over plain HTTP: refused, as by a default Windows.
    let err = client_with(
        config(
            lab.http(0).port(),
            false,
            AuthMethod::Basic,
            EncryptionMode::Auto,
        ),
        PASSWORD,
    )
    .run_command(&ip, "hostname", &[])
    .await
    .expect_err("Basic over HTTP");
    assert!(is_auth_failed(&err), "{err:?}");
    lab.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn one_shell_runs_several_commands() {
    let lab = Lab::start(15, &[("clean", "en")], |_| {}).await;
    let ip = lab.hosts[0].address.to_string();
    let c = ntlm_http(lab.http(0).port(), PASSWORD);
    let shell = c.open_shell(&ip).await.expect("shell");
    let out = shell.run_command("hostname", &[]).await.expect("hostname");
    assert_eq!(
        (out.stdout.as_slice(), out.exit_code),
        (&b"PC-1\r\n"[..], 0)
    );
    let out = shell
        .run_command("cmd", &["/c", "exit /b 4"])
        .await
        .expect("exit");
    assert_eq!(out.exit_code, 4);
    let out = shell
        .run_command("cmd", &["/c", r"type C:\nowhere.txt"])
        .await
        .expect("type");
    assert_eq!(
        (out.stderr.as_slice(), out.exit_code),
        (&b"The system cannot find the file specified.\r\n"[..], 1)
    );
    for _ in 0..5 {
        let out = shell
            .run_command("cmd", &["/c", "echo again"])
            .await
            .expect("echo");
        assert_eq!(out.stdout, b"again\r\n");
    }
    let stats = lab.stats.snapshot()[0].clone();
    assert_eq!(
        (
            stats.shells_created,
            stats.commands_started,
            stats.open_shells
        ),
        (1, 8, 1)
    );
    shell.close().await.expect("close");
    assert_eq!(lab.stats.snapshot()[0].open_shells, 0);
    lab.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn hanging_commands_are_stopped_and_the_shell_closed() {
    let lab = Lab::start(16, &[("clean", "en")], |_| {}).await;
    let ip = lab.hosts[0].address.to_string();
    let c = ntlm_http(lab.http(0).port(), PASSWORD);
    let waiter = r"C:\Windows\Temp\waiter.exe";
    let shell = c.open_shell(&ip).await.expect("shell");

    // Terminate (WinrmClient::signal_terminate with the shell's id).
    let id = shell
        .start_command(waiter, &[r"C:\Windows\Temp\never.flag"])
        .await
        .expect("start");
    // A silent poll is an empty, not-done output (the w:TimedOut fault).
    let before = lab.stats.snapshot()[0].receive_timeouts;
    let poll = shell.receive_next(&id).await.expect("empty poll");
    assert_eq!(
        (
            poll.done,
            poll.stdout.len(),
            poll.stderr.len(),
            poll.exit_code
        ),
        (false, 0, 0, None)
    );
    assert_eq!(lab.stats.snapshot()[0].receive_timeouts, before + 1);
    assert!(!processes_under(lab.dir.path()).is_empty());
    c.signal_terminate(&ip, shell.shell_id(), &id)
        .await
        .expect("terminate");
    assert_no_process_left(&lab).await;
    match shell.receive_next(&id).await {
        Err(WinrmError::Soap(SoapError::Fault { .. })) => {}
        Err(e) => panic!("{e:?}"),
        Ok(poll) => panic!("output after terminate: done={}", poll.done),
    }

    // Ctrl+C (Shell::signal_ctrl_c): the command ends and reports done.
    let id = shell
        .start_command(waiter, &[r"C:\Windows\Temp\never.flag"])
        .await
        .expect("start");
    shell.receive_next(&id).await.expect("empty poll");
    shell.signal_ctrl_c(&id).await.expect("ctrl_c");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let poll = shell.receive_next(&id).await.expect("poll");
        if poll.done {
            // Windows sends the process's DWORD exit code unsigned (MS-WSMV
            // ExitCodeType is xs:integer), here 3221225786
            // (STATUS_CONTROL_C_EXIT). winrm-rs 1.4.1 parsed it as an i32 and
            // lost it; the vendored copy keeps its 32 bits
            // (vendor/README.md).
            assert_eq!(poll.exit_code.map(|c| c as u32), Some(0xC000_013A));
            break;
        }
        assert!(Instant::now() < deadline, "still running after Ctrl+C");
    }
    assert_no_process_left(&lab).await;

    // The shell still works, then closes with a command running in it.
    let out = shell.run_command("hostname", &[]).await.expect("hostname");
    assert_eq!(out.stdout, b"PC-1\r\n");
    shell
        .start_command(waiter, &[r"C:\Windows\Temp\never.flag"])
        .await
        .expect("start");
    shell.close().await.expect("close");
    assert_eq!(lab.stats.snapshot()[0].open_shells, 0);
    assert_no_process_left(&lab).await;
    lab.stop().await;
}

/// Run `hostname` until the first failure, at most `tries` times; the
/// failure, if any.
async fn first_failure(lab: &Lab, c: &WinrmClient, tries: usize) -> Option<WinrmError> {
    let ip = lab.hosts[0].address.to_string();
    for _ in 0..tries {
        match c.run_command(&ip, "hostname", &[]).await {
            Ok(out) => assert_eq!(out.stdout, b"PC-1\r\n"),
            Err(e) => return Some(e),
        }
    }
    None
}

// Remaining defect of winrm-rs 1.4.1 (client side): on a multi-thread
// runtime, hyper hands a connection back to the pool from a task of its own
// once an answer is read, and a request sent before that task runs opens a
// new TCP connection. winrm-rs yields a few times before a sealed request
// (`let_pool_take_back_connection`), which narrows the window without
// closing it. The new connection has no NTLM session, the server answers 401
// (as Windows does), and the client returns `WinrmError::Ntlm` without
// resending (or, when the race hits the handshake of a new sealed
// connection, `AuthFailed` as for a wrong password). The clean-up of the
// failed `run_command` can hit it too and leave the shell open. Measured:
// 10-18% of `run_command` calls when client and simulator share a 2- or
// 8-worker runtime, 0.6% with the simulator on a runtime of its own, none
// in 1,500 calls on a `current_thread` runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_request_sometimes_goes_out_on_a_new_connection() {
    let lab = Lab::start(17, &[("clean", "en")], |_| {}).await;
    let c = ntlm_http(lab.http(0).port(), PASSWORD);
    let err = first_failure(&lab, &c, 500)
        .await
        .expect("500 sealed commands without the race: the pool race looks fixed");
    match &err {
        // A sealed request on a new connection.
        WinrmError::Ntlm(NtlmError::InvalidMessage(m)) => {
            assert!(m.starts_with("HTTP 401 to a sealed NTLM request"), "{m}")
        }
        // AUTHENTICATE of a new sealed connection sent on yet another one.
        WinrmError::AuthFailed(m) => {
            assert!(m.starts_with("NTLM authentication rejected"), "{m}")
        }
        e => panic!("{e:?}"),
    }
    let stats = lab.stats.snapshot()[0].clone();
    assert!(
        stats.sealed_without_session + stats.ntlm_split_legs >= 1,
        "{stats:?}"
    );
    // No credentials refused but those of split handshakes.
    assert_eq!(stats.auth_failures, stats.ntlm_split_legs, "{stats:?}");
    lab.stop().await;
}

// Same race, within the handshake: NTLM over HTTPS (dedicated connections,
// no sealing) sends AUTHENTICATE right after reading the 401 CHALLENGE,
// without yielding, and now and then on a new connection, which Windows
// (and the simulator, counting `ntlm_split_legs`) refuses. The error cannot
// be told from a wrong password: `AuthFailed("NTLM authentication rejected
// (bad credentials or CBT mismatch)")`. Measured: 13-29% of calls on a
// 2-worker runtime, whether or not the simulator shares it; none on
// `current_thread`. NTLM over HTTP with `EncryptionMode::Never` has it too
// (0.5-5%).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ntlm_over_https_sometimes_splits_its_handshake() {
    let lab = Lab::start(18, &[("clean", "en")], |_| {}).await;
    let c = over_https(lab.https(0).port(), AuthMethod::Ntlm, PASSWORD);
    let err = first_failure(&lab, &c, 500)
        .await
        .expect("500 NTLM commands over HTTPS without a split handshake: looks fixed");
    assert!(is_auth_failed(&err), "{err:?}");
    let stats = lab.stats.snapshot()[0].clone();
    assert!(
        stats.ntlm_split_legs >= 1 && stats.ntlm_split_legs == stats.auth_failures,
        "{stats:?}"
    );
    lab.stop().await;
}
