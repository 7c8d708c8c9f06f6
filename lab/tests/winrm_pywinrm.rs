//! The WinRM simulator held to pywinrm, an independent client written
//! against real Windows: NTLM with message encryption over HTTP, Basic and
//! NTLM over HTTPS with certificate validation, `run_cmd` output and exit
//! codes, the stand-in checker writing an EmoCheck report, stdin through
//! Send, a command that outlives OperationTimeout (re-polled), WS-Man
//! faults, 401 for a wrong password, Basic over HTTP and unsealed NTLM over
//! HTTP, and Signal terminate killing a process tree. The checks themselves
//! are in `pywinrm_client.py`; this test starts the simulator, runs it with
//! `python3` and checks the host trees afterwards.

mod winrm_support;

use std::process::Stdio;

use winrm_support::{tree_path, Lab, PASSWORD, USER};

fn require_pywinrm() {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import winrm"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "pywinrm is missing: install it with `apt-get install -y --no-install-recommends \
         python3-pip && python3 -m pip install --break-system-packages pywinrm` (scripts/test \
         does this)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pywinrm_drives_the_simulator() {
    require_pywinrm();
    let lab = Lab::start(
        9,
        &[("detected", "ja"), ("clean", "en"), ("hang", "en")],
        |_| {},
    )
    .await;
    let hosts: Vec<serde_json::Value> = (0..lab.hosts.len())
        .map(|i| {
            serde_json::json!({
                "name": lab.hosts[i].name,
                "http": lab.http(i).to_string(),
                "https": lab.https(i).to_string(),
                "tree": lab.hosts[i].root,
            })
        })
        .collect();
    let config = serde_json::json!({
        "user": USER,
        "password": PASSWORD,
        "ca": lab.tls.cert_pem,
        "hosts": hosts,
    });
    let config_path = lab.dir.path().join("pywinrm.json");
    std::fs::write(&config_path, config.to_string()).expect("write config");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pywinrm_client.py");
    let out = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(&config_path)
        .env("NO_PROXY", "*")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "pywinrm checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("pywinrm: all checks passed"));

    // The report written through WinRM is in the host's tree, in EmoCheck format.
    let temp = tree_path(&lab.hosts[0], r"Windows\Temp");
    let reports: Vec<_> = std::fs::read_dir(&temp)
        .expect("read Temp")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with("_emocheck.txt"))
        .collect();
    // Two checker runs; within one second they share a file name, as with EmoCheck.
    assert!(!reports.is_empty(), "no report in {}", temp.display());
    for r in reports {
        let bytes = std::fs::read(r.path()).expect("read report");
        assert!(bytes.starts_with(b"[EmoCheck v2.4.0]\r\n"));
        assert!(String::from_utf8_lossy(&bytes).contains("[結果]"));
    }
    let stats = lab.stats.snapshot();
    assert!(
        stats[0].shells_created >= 5 && stats[0].auth_failures >= 1,
        "{stats:?}"
    );
    lab.stop().await;
}
