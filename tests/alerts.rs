//! Alerts and unattended sweeps, end to end, against real servers this file
//! starts on loopback: an SMTP server (Python aiosmtpd, tests/alerts_smtp.py)
//! that requires STARTTLS with a certificate from a test CA made here with
//! openssl and AUTH before any mail, and an HTTP receiver (std TcpListener)
//! that answers a scripted sequence of statuses. Sweeps run the real
//! `pushscan` binary on the `local` transport with the EmoCheck stand-in.
//! A missing python module or binary fails the test with the install
//! command; nothing is skipped.
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::hook::{Hook, Request};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const SMTP_USER: &str = "alerts";
/// A test secret: asserted to appear in no journal, report or log.
const SMTP_PASSWORD: &str = "Sm7p-pw-5e2c91";
const TOKEN: &str = "tok-9b41d7e0";

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pushscan"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn require_binary(name: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "`{name}` is missing: install it with `apt-get update && apt-get install -y \
         --no-install-recommends {package}` (scripts/test does)"
    );
}

fn require_python_module(module: &str, pip_name: &str) {
    require_binary("python3", "python3");
    let ok = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "python3 module `{module}` is missing: install it with `apt-get install -y \
         --no-install-recommends python3-pip && python3 -m pip install --break-system-packages \
         {pip_name}` (scripts/test does)"
    );
}

// ------------------------------------------------------------------ fleet

/// A local fleet: every host is this machine, with its own directory.
struct Fleet {
    dir: tempfile::TempDir,
}

impl Fleet {
    fn new(hosts: &[(&str, &str)]) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let fleet = Fleet { dir };
        fleet.write_inventory(hosts);
        let checker = Path::new(ROOT).join("playbooks/checkers/emocheck-sim.sh");
        let pb = std::fs::read_to_string(Path::new(ROOT).join("playbooks/emocheck-ssh.yml"))
            .unwrap()
            .replace("checkers/emocheck-sim.sh", &checker.display().to_string())
            .replace("timeout: 60s", "timeout: 10s");
        std::fs::write(fleet.p("pb.yml"), pb).unwrap();
        fleet
    }

    fn write_inventory(&self, hosts: &[(&str, &str)]) {
        let mut inv = String::from("all:\n  children:\n    lab:\n      hosts:\n");
        for (name, scenario) in hosts {
            inv.push_str(&format!(
                "        {name}:\n          ansible_connection: local\n          scenario: {scenario}\n          pushscan_dir: {}\n",
                self.p("hosts").join(name).display()
            ));
        }
        std::fs::write(self.p("inv.yml"), inv).unwrap();
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn sweep_cmd(&self, extra: &[&str]) -> Command {
        let mut c = bin();
        c.arg("sweep")
            .arg("-i")
            .arg(self.p("inv.yml"))
            .arg("-p")
            .arg(self.p("pb.yml"))
            .arg("--state-dir")
            .arg(self.p("state"))
            .args(extra)
            .env_remove("PUSHSCAN_NOTIFY_CONFIG")
            .env_remove("RUST_LOG");
        c
    }

    fn sweep(&self, extra: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = self.sweep_cmd(extra);
        c.args(["--progress", "quiet"]);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = bin()
            .args(args)
            .arg("--state-dir")
            .arg(self.p("state"))
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&out.stderr)))
    }

    fn notifications(&self, run: Option<i64>) -> Vec<Value> {
        let run = run.map(|r| r.to_string());
        let mut args = vec!["notify", "log", "--json"];
        if let Some(r) = &run {
            args.extend(["--run", r.as_str()]);
        }
        self.json(&args).as_array().unwrap().clone()
    }

    /// Every byte the state dir holds (journal, WAL, reports, evidence).
    fn state_bytes(&self) -> Vec<u8> {
        let mut all = Vec::new();
        let mut stack = vec![self.p("state")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    all.extend(std::fs::read(e.path()).unwrap());
                }
            }
        }
        all
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

// ------------------------------------------------------------------ PKI

/// A test CA, a server certificate it issued for 127.0.0.1 (IP SAN), and a
/// second, unrelated CA.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        require_binary("openssl", "openssl");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                text(&out.stderr)
            );
        };
        for ca in ["ca", "other-ca"] {
            run(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
                "-days",
                "2",
                "-subj",
                &format!("/CN=pushscan test {ca}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
        }
        run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        Pki { dir }
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

// ------------------------------------------------------------------ SMTP

/// aiosmtpd on a loopback port: STARTTLS and AUTH required.
struct Smtp {
    child: Child,
    port: u16,
    out: tempfile::TempDir,
}

impl Smtp {
    fn start(pki: &Pki) -> Smtp {
        require_python_module("aiosmtpd", "aiosmtpd");
        let out = tempfile::tempdir().unwrap();
        let mut child = Command::new("python3")
            .arg(Path::new(ROOT).join("tests/alerts_smtp.py"))
            .arg(out.path())
            .arg(pki.p("server.pem"))
            .arg(pki.p("server.key"))
            .args([SMTP_USER, SMTP_PASSWORD])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 tests/alerts_smtp.py");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the SMTP server did not start within 30 s");
        let port = line
            .trim()
            .strip_prefix("READY ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("SMTP server said {line:?}"));
        Smtp { child, port, out }
    }

    /// Messages received so far, in order (each complete).
    fn messages(&self) -> Vec<Value> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.out.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mail_config(smtp: &Smtp, ca: &Path, top: &str) -> String {
    format!(
        "{top}mail:\n  smtp:\n    host: 127.0.0.1\n    port: {}\n    security: starttls\n    \
         username: {SMTP_USER}\n    password_env: PUSHSCAN_TEST_SMTP_PASSWORD\n    \
         ca_file: {}\n    timeout: 10s\n    retries: 1\n    backoff: 100ms\n  \
         from: pushscan@example.test\n  to: [soc@example.test, ir-team@example.test]\n  \
         subject_prefix: \"[pushscan-test]\"\n  attach_report: true\n",
        smtp.port,
        ca.display()
    )
}

const SMTP_ENV: (&str, &str) = ("PUSHSCAN_TEST_SMTP_PASSWORD", SMTP_PASSWORD);

// ------------------------------------------------------------------ HTTP

// ------------------------------------------------------------------ mail

#[test]
fn mail_names_new_detections_once_and_again_only_with_repeat() {
    let pki = Pki::new();
    let smtp = Smtp::start(&pki);
    let fleet = Fleet::new(&[
        ("PC-SALES-014", "detected"),
        ("PC-SALES-015", "clean"),
        ("PC-KEIRI-003", "detected2"),
    ]);
    let cfg = fleet.p("notify.yml");
    std::fs::write(&cfg, mail_config(&smtp, &pki.p("ca.pem"), "")).unwrap();
    let cfg_arg = cfg.display().to_string();

    let out = fleet.sweep(&["--notify-config", &cfg_arg], &[SMTP_ENV]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let msgs = smtp.messages();
    assert_eq!(msgs.len(), 1, "{stderr}");
    let m = &msgs[0];
    assert_eq!(m["mail_from"], "pushscan@example.test");
    assert_eq!(
        m["rcpt_tos"],
        json!(["soc@example.test", "ir-team@example.test"])
    );
    assert_eq!(m["tls"], true, "STARTTLS before the mail");
    assert_eq!(m["authenticated"], true);
    assert_eq!(m["auto_submitted"], "auto-generated");
    assert!(m["message_id"].as_str().unwrap().starts_with("<pushscan."));
    assert_eq!(
        m["subject"],
        "[pushscan-test] DETECTED: 2 new detection(s) on PC-SALES-014, PC-KEIRI-003 (run 1)"
    );
    let body = m["body"].as_str().unwrap();
    let state = fleet.p("state").display().to_string();
    for want in [
        "DETECTED (first check): PC-SALES-014",
        "DETECTED (first check): PC-KEIRI-003",
        "process     wfsrvhost.exe",
        "PID         4312",
        r"image path  C:\Users\tanaka\AppData\Local\wfsrvhost\wfsrvhost.exe",
        r"run key     HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Run\wfsrvhost",
        "process     msrdpsvc.exe",
        "PID         2208",
        r"image path  C:\Users\tanaka\AppData\Roaming\msrdpsvc\msrdpsvc.exe",
        "Run 1: finished (exit code 1)",
        &format!("state dir   {state}"),
        &format!("pushscan report --run 1 --state-dir {state}"),
        &format!("report file {state}/reports/run-1.html"),
    ] {
        assert!(body.contains(want), "body lacks {want:?}:\n{body}");
    }
    assert!(
        !body.contains("PC-SALES-015"),
        "a clean host is not named:\n{body}"
    );
    // The run's HTML report rides along (self-contained: it opens offline).
    let att = m["attachments"].as_array().unwrap();
    assert_eq!(att.len(), 1);
    assert_eq!(att[0]["filename"], "run-1.html");
    assert!(
        att[0]["content_type"]
            .as_str()
            .unwrap()
            .starts_with("text/html"),
        "{}",
        att[0]["content_type"]
    );
    let html = att[0]["content"].as_str().unwrap();
    assert!(
        html.starts_with("<!DOCTYPE html>"),
        "{}",
        &html[..html.len().min(200)]
    );
    assert!(html.contains("PC-SALES-014") && html.contains("msrdpsvc.exe"));

    let rows = fleet.notifications(Some(1));
    assert_eq!(rows.len(), 1, "{rows:?}");
    let r = &rows[0];
    assert_eq!(
        (&r["channel"], &r["status"], &r["attempts"], &r["kind"]),
        (
            &json!("mail"),
            &json!("ok"),
            &json!(1),
            &json!("new_detection")
        )
    );
    assert_eq!(r["hosts"], json!(["PC-SALES-014", "PC-KEIRI-003"]));
    assert_eq!(
        r["target"],
        format!(
            "smtp://127.0.0.1:{} -> soc@example.test, ir-team@example.test",
            smtp.port
        )
    );
    assert!(
        stderr.contains("mail alert (new_detection) sent"),
        "{stderr}"
    );

    // Second sweep: the same hosts, still infected: no mail.
    let out = fleet.sweep(&["--notify-config", &cfg_arg], &[SMTP_ENV]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(
        smtp.messages().len(),
        1,
        "a repeat detection is not re-alerted"
    );
    assert!(fleet.notifications(Some(2)).is_empty());

    // repeat: true: they are named again, as still detected.
    std::fs::write(&cfg, mail_config(&smtp, &pki.p("ca.pem"), "repeat: true\n")).unwrap();
    let out = fleet.sweep(&["--notify-config", &cfg_arg], &[SMTP_ENV]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let msgs = smtp.messages();
    assert_eq!(msgs.len(), 2);
    assert_eq!(
        msgs[1]["subject"],
        "[pushscan-test] DETECTED: 2 host(s) still detected on PC-SALES-014, PC-KEIRI-003 (run 3)"
    );
    let body = msgs[1]["body"].as_str().unwrap();
    assert!(body.contains("STILL DETECTED: PC-SALES-014"), "{body}");

    // The password is nowhere: journal, WAL, reports, evidence, logs.
    assert!(!contains(&fleet.state_bytes(), SMTP_PASSWORD));
    assert!(!stderr.contains(SMTP_PASSWORD));
}

#[test]
fn wrong_ca_fails_the_mail_records_it_and_the_next_sweep_tells() {
    let pki = Pki::new();
    let smtp = Smtp::start(&pki);
    let fleet = Fleet::new(&[("PC-1", "detected"), ("PC-2", "clean")]);
    let cfg = fleet.p("notify.yml");
    std::fs::write(&cfg, mail_config(&smtp, &pki.p("other-ca.pem"), "")).unwrap();
    let cfg_arg = cfg.display().to_string();

    let out = fleet.sweep(&["--notify-config", &cfg_arg], &[SMTP_ENV]);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the sweep's exit code is unchanged: {stderr}"
    );
    assert!(stderr.contains("FAILED"), "{stderr}");
    assert!(smtp.messages().is_empty());
    let rows = fleet.notifications(Some(1));
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["status"], "failed");
    assert_eq!(
        rows[0]["attempts"], 1,
        "a certificate that does not verify is not retried: {rows:?}"
    );
    let err = rows[0]["error"].as_str().unwrap();
    assert!(err.contains("certificate"), "{err}");
    assert_eq!(rows[0]["hosts"], json!(["PC-1"]));

    // With the right CA, the next sweep tells about PC-1: still detected,
    // but nobody heard of it yet.
    std::fs::write(&cfg, mail_config(&smtp, &pki.p("ca.pem"), "")).unwrap();
    let out = fleet.sweep(&["--notify-config", &cfg_arg], &[SMTP_ENV]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let msgs = smtp.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(
        msgs[0]["subject"],
        "[pushscan-test] DETECTED: 1 host(s) still detected on PC-1 (run 2)"
    );
    assert_eq!(fleet.notifications(Some(2))[0]["status"], "ok");
}

// ------------------------------------------------------------------ webhook

#[test]
fn webhook_is_retried_after_two_500s_and_posts_the_documented_json() {
    let hook = Hook::start(&[500, 500, 200]);
    let fleet = Fleet::new(&[("PC-SALES-014", "detected"), ("PC-SALES-015", "noreport")]);
    // From the playbook's own notify: section this time.
    let mut pb = std::fs::read_to_string(fleet.p("pb.yml")).unwrap();
    pb.push_str(&format!(
        "notify:\n  on: [new_detection, incomplete]\n  webhook:\n    \
         url: http://127.0.0.1:{}/hooks/pushscan\n    format: generic\n    timeout: 5s\n    \
         retries: 3\n    backoff: 100ms\n    header:\n      name: Authorization\n      \
         prefix: \"Bearer \"\n      value_env: PUSHSCAN_TEST_TOKEN\n",
        hook.port
    ));
    std::fs::write(fleet.p("pb.yml"), pb).unwrap();

    let out = fleet.sweep(&[], &[("PUSHSCAN_TEST_TOKEN", TOKEN)]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let reqs = hook.requests();
    assert_eq!(reqs.len(), 3, "two 500s, then the 200: {stderr}");
    for r in &reqs {
        assert_eq!(r.line, "POST /hooks/pushscan HTTP/1.1");
        assert_eq!(r.header("authorization"), Some(&*format!("Bearer {TOKEN}")));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(
            r.body, reqs[0].body,
            "every attempt carries the same message"
        );
    }
    // Exponential backoff: 100 ms, then 200 ms.
    assert!(reqs[1].at - reqs[0].at >= Duration::from_millis(90));
    assert!(reqs[2].at - reqs[1].at >= Duration::from_millis(190));

    let b = reqs[0].json();
    assert_eq!(b["source"], "pushscan");
    assert_eq!(b["event"], "new_detection");
    assert_eq!(b["run"]["id"], 1);
    assert_eq!(b["run"]["status"], "finished");
    assert_eq!(b["run"]["exit_code"], 1);
    assert_eq!(b["incomplete"], true);
    assert_eq!(b["detections"].as_array().unwrap().len(), 1);
    let d = &b["detections"][0];
    assert_eq!(d["host"], "PC-SALES-014");
    assert_eq!(d["change"], "first_check");
    assert_eq!(
        d["processes"][0],
        json!({
            "name": "wfsrvhost.exe",
            "pid": 4312,
            "image_path": r"C:\Users\tanaka\AppData\Local\wfsrvhost\wfsrvhost.exe",
            "registry_key": r"HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Run\wfsrvhost"
        })
    );
    assert!(d["report_file"]
        .as_str()
        .unwrap()
        .starts_with("PC-SALES-014_"));
    assert_eq!(
        b["not_checked"],
        json!([{"host": "PC-SALES-015", "status": "no_result", "reason": b["not_checked"][0]["reason"]}])
    );
    let state = fleet.p("state").display().to_string();
    assert_eq!(b["report"]["state_dir"], state);
    assert_eq!(
        b["report"]["command"],
        format!("pushscan report --run 1 --state-dir {state}")
    );
    assert_eq!(
        b["report"]["report_file"],
        format!("{state}/reports/run-1.html")
    );
    let t = b["text"].as_str().unwrap();
    assert!(
        t.contains("PC-SALES-014") && t.contains("wfsrvhost.exe"),
        "{t}"
    );
    assert!(b["summary"]
        .as_str()
        .unwrap()
        .starts_with("DETECTED: 1 new detection(s) on PC-SALES-014"));

    let rows = fleet.notifications(Some(1));
    assert_eq!(rows.len(), 1, "{rows:?}");
    let r = &rows[0];
    assert_eq!(r["channel"], "webhook");
    assert_eq!(r["status"], "ok");
    assert_eq!(r["attempts"], 3);
    assert_eq!(r["error"], Value::Null);
    assert_eq!(r["hosts"], json!(["PC-SALES-014"]));
    assert_eq!(
        r["target"],
        format!("http://127.0.0.1:{}/hooks/…", hook.port)
    );
    assert!(r["at"].as_str().unwrap().starts_with("20"));
    assert!(
        !contains(&fleet.state_bytes(), TOKEN),
        "no token in the journal"
    );
    assert!(!stderr.contains(TOKEN));

    // Second sweep: PC-SALES-014 is old news, but PC-SALES-015 still has no
    // result: an `incomplete` summary, naming no detection.
    let out = fleet.sweep(&[], &[("PUSHSCAN_TEST_TOKEN", TOKEN)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let reqs = hook.requests();
    assert_eq!(reqs.len(), 4);
    let b = reqs[3].json();
    assert_eq!(b["event"], "incomplete");
    assert_eq!(b["summary"], "run 2 incomplete: 1 of 2 host(s) not checked");
    assert_eq!(b["detections"], json!([]));
    assert_eq!(b["not_checked"][0]["host"], "PC-SALES-015");
    let rows = fleet.notifications(Some(2));
    assert_eq!(
        (&rows[0]["kind"], &rows[0]["status"], &rows[0]["hosts"]),
        (&json!("incomplete"), &json!("ok"), &json!([]))
    );
}

#[test]
fn notify_test_reports_each_channel_and_fails_when_one_does() {
    let pki = Pki::new();
    let smtp = Smtp::start(&pki);
    let hook = Hook::start(&[500]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("notify.yml");
    std::fs::write(
        &cfg,
        format!(
            "{}webhook:\n  url_env: PUSHSCAN_TEST_HOOK_URL\n  format: slack\n  retries: 1\n  \
             backoff: 50ms\n",
            mail_config(&smtp, &pki.p("ca.pem"), "")
        ),
    )
    .unwrap();
    let url = format!("http://127.0.0.1:{}/services/T0/B0/secretpart", hook.port);
    let out = bin()
        .args(["notify", "test", "--notify-config"])
        .arg(&cfg)
        .env(SMTP_ENV.0, SMTP_ENV.1)
        .env("PUSHSCAN_TEST_HOOK_URL", &url)
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    let mail_line = stdout.lines().find(|l| l.starts_with("mail")).unwrap();
    assert!(mail_line.ends_with("ok (1 attempt)"), "{stdout}");
    let hook_line = stdout.lines().find(|l| l.starts_with("webhook")).unwrap();
    assert!(
        hook_line.contains(&format!("http://127.0.0.1:{}/services/…", hook.port))
            && hook_line.contains("FAILED after 2 attempts: HTTP 500"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("secretpart"),
        "the URL is a secret: {stdout}"
    );
    let msgs = smtp.messages();
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0]["subject"]
        .as_str()
        .unwrap()
        .starts_with("[pushscan-test] test message from pushscan"));
    // Slack's shape: a `text` and nothing else.
    let reqs = hook.requests();
    assert_eq!(reqs.len(), 2);
    let b = reqs[0].json();
    assert_eq!(b.as_object().unwrap().len(), 1, "{b}");
    assert!(b["text"].as_str().unwrap().contains("test message"), "{b}");

    // Both delivered: exit 0.
    let hook_ok = Hook::start(&[200]);
    let out = bin()
        .args(["notify", "test", "--notify-config"])
        .arg(&cfg)
        .env(SMTP_ENV.0, SMTP_ENV.1)
        .env(
            "PUSHSCAN_TEST_HOOK_URL",
            format!("http://127.0.0.1:{}/services/x", hook_ok.port),
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}

#[test]
fn a_resumed_run_names_only_the_hosts_not_yet_alerted_in_it() {
    let hook = Hook::start(&[200]);
    let fleet = Fleet::new(&[
        ("PC-1", "detected"),
        ("slow1", "slow"),
        ("PC-2", "detected"),
    ]);
    let cfg = fleet.p("notify.yml");
    std::fs::write(
        &cfg,
        format!(
            "webhook:\n  url: http://127.0.0.1:{}/h\n  retries: 0\n",
            hook.port
        ),
    )
    .unwrap();
    let cfg = cfg.display().to_string();
    // One host at a time; interrupted while slow1 runs: PC-2 is not started.
    let mut sweep = Running::start(fleet.sweep_cmd(&[
        "--forks",
        "1",
        "--progress",
        "lines",
        "--notify-config",
        &cfg,
    ]));
    sweep.wait_for("PC-1 detected", 30);
    sweep.sigterm();
    assert_eq!(sweep.exit_code(20), Some(1), "{}", sweep.seen.join("\n"));
    assert_eq!(runs(&fleet)[0]["status"], "interrupted");
    let reqs = hook.requests();
    assert_eq!(reqs.len(), 1);
    let names = |r: &Request| -> Vec<String> {
        r.json()["detections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["host"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&reqs[0]), ["PC-1"]);

    // The resumed run ends again: only PC-2 is news.
    let out = bin()
        .args([
            "resume",
            "--progress",
            "quiet",
            "--notify-config",
            &cfg,
            "--state-dir",
        ])
        .arg(fleet.p("state"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let reqs = hook.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(names(&reqs[1]), ["PC-2"]);
    let rows = fleet.notifications(Some(1));
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["status"] == "ok"));
}

// ------------------------------------------------------------------ --every

/// A running `pushscan sweep` child and its stderr lines as they come.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (at most `secs`) for a log line containing `what`.
    fn wait_for(&mut self, what: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(l) => {
                    let hit = l.contains(what);
                    self.seen.push(l);
                    if hit {
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let _ = self.child.kill();
        panic!("no log line with {what:?}; got:\n{}", self.seen.join("\n"));
    }

    fn sigterm(&self) {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    }

    /// Waits (at most `secs`) for the exit; returns the code.
    fn exit_code(&mut self, secs: u64) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(l);
                }
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("did not exit within {secs} s:\n{}", self.seen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn runs(fleet: &Fleet) -> Vec<Value> {
    let mut r = fleet.json(&["runs", "--json"]).as_array().unwrap().clone();
    r.reverse();
    r
}

fn time(v: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap()
}

#[test]
fn every_sweeps_one_at_a_time_and_stops_on_sigterm_with_exit_0() {
    let fleet = Fleet::new(&[("web1", "clean"), ("web2", "detected")]);
    let mut p = Running::start(fleet.sweep_cmd(&[
        "--every",
        "2s",
        "--log-format",
        "json",
        "--progress",
        "quiet",
    ]));
    p.wait_for("sweep 2 finished", 30);
    // Between sweeps: the loop waits for the slot at 4 s; SIGTERM ends it now.
    let t = Instant::now();
    p.sigterm();
    assert_eq!(p.exit_code(10), Some(0), "{}", p.seen.join("\n"));
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

    let runs = runs(&fleet);
    assert_eq!(runs.len(), 2, "{runs:?}");
    for r in &runs {
        assert_eq!(r["status"], "finished");
        assert_eq!(r["complete"], true);
        assert_eq!(r["exit_code"], 1);
    }
    assert!(
        time(&runs[1]["started_at"]) >= time(&runs[0]["finished_at"]),
        "run 2 started after run 1 finished: {runs:?}"
    );
    // Structured logs: one JSON object a line, with a level.
    let logs: Vec<Value> = p
        .seen
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let messages: Vec<&str> = logs
        .iter()
        .filter(|v| v["target"] == "pushscan::schedule")
        .map(|v| {
            assert_eq!(v["level"], "INFO");
            v["fields"]["message"].as_str().unwrap()
        })
        .collect();
    assert!(
        messages[0].starts_with("periodic sweeps every 2s"),
        "{messages:?}"
    );
    assert!(messages.contains(&"sweep 1 finished: exit code 1 (detection)"));
    assert!(messages.iter().any(|m| m.starts_with("next sweep at")));
    assert_eq!(messages.last(), Some(&"stopped after 2 sweep(s)"));
}

#[test]
fn every_survives_a_failing_sweep_and_a_sigterm_mid_sweep_stops_after_it() {
    let fleet = Fleet::new(&[("a", "clean")]);
    let mut p =
        Running::start(fleet.sweep_cmd(&["--every", "1s", "--forks", "1", "--progress", "quiet"]));
    p.wait_for("sweep 1 finished", 30);
    // The inventory is broken before the next slot: that sweep fails...
    std::fs::write(fleet.p("inv.yml"), "all: [broken\n").unwrap();
    p.wait_for("sweep 2 failed (exit code 65)", 20);
    // ... and the loop goes on. Two slow hosts (2 s each), one at a time.
    fleet.write_inventory(&[("slow1", "slow"), ("slow2", "slow")]);
    p.wait_for("sweep 3 starting", 20);
    std::thread::sleep(Duration::from_millis(700));
    let t = Instant::now();
    p.sigterm();
    // slow1 finishes (graceful stop), slow2 is not started, then exit 0.
    assert_eq!(p.exit_code(20), Some(0), "{}", p.seen.join("\n"));
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    let log = p.seen.join("\n");
    assert!(log.contains("WARN") || log.contains("ERROR"), "{log}");
    assert!(log.contains("stopped after 3 sweep(s)"), "{log}");

    let runs = runs(&fleet);
    assert_eq!(runs.len(), 2, "the failed sweep made no run: {runs:?}");
    assert_eq!(runs[0]["status"], "finished");
    assert_eq!(runs[1]["status"], "interrupted");
    let rep = fleet.json(&["report", "--run", "2", "--format", "json"]);
    let status: Vec<(&str, &str)> = rep["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["host"].as_str().unwrap(), h["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        status,
        vec![("slow1", "not_detected"), ("slow2", "not_started")]
    );
}

// ------------------------------------------------------------------ any checker

/// A second checker, not EmoCheck: it writes its findings as JSON lines (the `jsonl` parser),
/// one finding for scenario `one`, two for `two`.
const JSONL_CHECKER: &str = r#"#!/bin/sh
# Test checker: findings as JSON lines, in a file named by the time (one per run).
dir="$1"
mkdir -p "$dir"
f="$dir/$(date +%s%N)_findings.jsonl"
A='{"kind":"rule_match","title":"Trojan.Generic","location":"/srv/drop/x.bin","severity":"critical","attributes":{"rule":"TROJ_GEN","sha256":"ab12"},"identity":"TROJ_GEN|/srv/drop/x.bin"}'
B='{"kind":"rule_match","title":"Backdoor.Y","location":"/srv/drop/y.bin","severity":"medium","attributes":{"rule":"BD_Y"},"identity":"BD_Y|/srv/drop/y.bin"}'
case "$2" in
  one) printf '%s\n%s\n' "$A" '{"end": 1}' > "$f" ;;
  two) printf '%s\n%s\n%s\n' "$A" "$B" '{"end": 2}' > "$f" ;;
  *) printf '%s\n' '{"end": 0}' > "$f" ;;
esac
"#;

/// Findings of a checker other than EmoCheck reach the journal, the four report formats and
/// the alert without any of them knowing the checker; a finding new since the last sweep
/// (by the identity the parser gives it) makes a still-detected host news again.
#[test]
fn a_second_checkers_findings_reach_journal_reports_and_alerts() {
    use sha2::Digest as _;
    let hook = Hook::start(&[200]);
    let fleet = Fleet::new(&[("SRV-1", "one"), ("SRV-2", "clean")]);
    let checker = fleet.p("findings-check.sh");
    std::fs::write(&checker, JSONL_CHECKER).unwrap();
    let sha = hex::encode(sha2::Sha256::digest(JSONL_CHECKER.as_bytes()));
    let pb = format!(
        "name: JSON lines checker\nchecker:\n  path: {}\n  sha256: \"{sha}\"\n  platform: linux\n\
         work_dir: \"{{{{ pushscan_dir }}}}\"\nrun_dir: \"{{{{ work_dir }}}}/out\"\n\
         args: [\"{{{{ run_dir }}}}\", \"{{{{ scenario }}}}\"]\ntimeout: 10s\n\
         results:\n  glob: \"*_findings.jsonl\"\n  parser: jsonl\n  max_file_size: 1MiB\n\
         cleanup:\n  checker: false\n  results: false\n  dirs: false\n\
         notify:\n  on: [new_detection]\n  webhook:\n    url: http://127.0.0.1:{}/hook\n    \
         format: generic\n    timeout: 5s\n    retries: 1\n",
        checker.display(),
        hook.port
    );
    std::fs::write(fleet.p("pb.yml"), pb).unwrap();

    let out = fleet.sweep(&[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));

    // The journal holds the finding generically.
    let db = rusqlite::Connection::open(fleet.p("state").join("journal.sqlite")).unwrap();
    let (kind, title, severity, identity, attrs): (String, String, String, String, String) = db
        .query_row(
            "SELECT f.kind, f.title, f.severity, f.identity, f.attributes FROM findings f
             JOIN reports r ON r.id = f.report_id WHERE r.host = 'SRV-1' AND r.parser = 'jsonl'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    assert_eq!(
        (kind.as_str(), title.as_str(), severity.as_str()),
        ("rule_match", "Trojan.Generic", "critical")
    );
    assert_eq!(identity, "TROJ_GEN|/srv/drop/x.bin");
    assert_eq!(
        serde_json::from_str::<Value>(&attrs).unwrap(),
        json!({"rule": "TROJ_GEN", "sha256": "ab12"})
    );

    // The four reports.
    let v = fleet.json(&["report", "--format", "json"]);
    let h = v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == "SRV-1")
        .unwrap();
    assert_eq!(h["status"], "detected", "{h}");
    assert_eq!(h["checker"], "JSON lines");
    assert_eq!(h["processes"], json!([]), "no process finding");
    assert_eq!(h["findings"][0]["title"], "Trojan.Generic");
    assert_eq!(h["findings"][0]["location"], "/srv/drop/x.bin");
    assert_eq!(h["findings"][0]["attributes"]["rule"], "TROJ_GEN");
    assert_eq!(h["new_findings"], json!(["TROJ_GEN|/srv/drop/x.bin"]));
    let report = |format: &str| {
        let out = bin()
            .args(["report", "--format", format, "--state-dir"])
            .arg(fleet.p("state"))
            .output()
            .unwrap();
        text(&out.stdout)
    };
    let line = "critical rule_match: Trojan.Generic @ /srv/drop/x.bin {rule=TROJ_GEN; sha256=ab12}";
    let table = report("table");
    assert!(table.contains(&format!("      {line}")), "{table}");
    let csv = report("csv");
    let mut rows = csv.lines();
    assert!(rows.next().unwrap().ends_with(",change,findings"), "{csv}");
    assert!(
        rows.any(|r| r.starts_with("1,SRV-1,") && r.ends_with(&format!(",first_check,{line}"))),
        "{csv}"
    );
    let html = report("html");
    assert!(
        html.contains("<dt>Checker</dt><dd>JSON lines "),
        "the page names the run's checker"
    );
    assert!(!html.contains("EmoCheck"), "and no other");
    assert!(html.contains(
        "<tr class=\"finding\"><td class=\"p\">Trojan.Generic</td><td>rule_match</td><td>critical</td>\
         <td class=\"p\">/srv/drop/x.bin</td><td class=\"p\">rule=TROJ_GEN<br>sha256=ab12</td></tr>"
    ), "{html}");

    // The alert.
    let reqs = hook.requests();
    assert_eq!(reqs.len(), 1, "{}", text(&out.stderr));
    let b = reqs[0].json();
    assert_eq!(b["detections"][0]["host"], "SRV-1");
    assert_eq!(
        b["detections"][0]["findings"][0]["identity"],
        "TROJ_GEN|/srv/drop/x.bin"
    );
    let t = b["text"].as_str().unwrap();
    assert!(t.contains("DETECTED (first check): SRV-1"), "{t}");
    assert!(t.contains(&format!("  finding     {line}")), "{t}");

    // Same finding again: still detected, nothing new, no alert.
    let out = fleet.sweep(&[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(hook.requests().len(), 1, "nothing new to tell");

    // A second finding on the still-detected host: news, naming it.
    fleet.write_inventory(&[("SRV-1", "two"), ("SRV-2", "clean")]);
    let out = fleet.sweep(&[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let reqs = hook.requests();
    assert_eq!(reqs.len(), 2, "{}", text(&out.stderr));
    let b = reqs[1].json();
    assert_eq!(b["detections"][0]["change"], "still_detected");
    assert_eq!(
        b["detections"][0]["new_findings"],
        json!(["BD_Y|/srv/drop/y.bin"])
    );
    let t = b["text"].as_str().unwrap();
    assert!(t.contains("NEW FINDINGS: SRV-1"), "{t}");
    assert!(t.contains("Backdoor.Y"), "{t}");
}
