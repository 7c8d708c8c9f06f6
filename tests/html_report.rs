//! The HTML report as an operator opens it: a real mixed fleet result (local transport, the
//! EmoCheck stand-in; two runs, so there is history), rendered by `pushscan report --format html`
//! and by `sweep --report`, then loaded in headless Chromium from a `file://` URL with every
//! network path closed. Assertions are on the DOM Chromium built (its `--dump-dom`), with and
//! without JavaScript, and on a screenshot: counts in the cards, detection rows with image paths
//! and run keys, the Japanese CP932 report intact, the hostile process name present as text
//! with no `<script>` element injected, and the Content-Security-Policy letting exactly our
//! inline script run. A missing Chromium fails the test with the command that installs it.
//!
//! `PUSHSCAN_DOCS_SCREENSHOT=docs/report-example.png cargo test --test html_report` refreshes
//! the screenshot kept in docs/.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pushscan"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn checker() -> PathBuf {
    Path::new(ROOT).join("playbooks/checkers/emocheck-sim.sh")
}

fn sha256_hex(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// A port on loopback that nothing listens on (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One inventory host: its OU path (nested groups), name and inventory vars.
struct Spec {
    ou: &'static [&'static str],
    name: &'static str,
    vars: String,
}

/// A fleet of "hosts" that are this machine (local transport), each with its own directory,
/// running the EmoCheck stand-in with the scenario its inventory vars name.
struct Fleet {
    dir: tempfile::TempDir,
}

impl Fleet {
    fn new() -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let pb = format!(
            r#"name: HTML report test - EmoCheck stand-in
checker:
  path: {checker}
  sha256: "{sha}"
  platform: linux
work_dir: "{{{{ pushscan_dir }}}}"
args: ["/quiet", "/output", "{{{{ run_dir }}}}", "/host", "{{{{ inventory_hostname }}}}",
       "/scenario", "{{{{ scenario | default('clean') }}}}", "/lang", "{{{{ lang | default('en') }}}}",
       "/encoding", "{{{{ encoding | default('utf8') }}}}", "/user", "{{{{ win_user | default('tanaka') }}}}"]
timeout: 3s
results:
  glob: "*_emocheck.*"
  parser: emocheck
  max_file_size: 1MiB
cleanup:
  checker: false
  results: false
  dirs: false
"#,
            checker = checker().display(),
            sha = sha256_hex(&checker()),
        );
        std::fs::write(dir.path().join("pb.yml"), pb).unwrap();
        Fleet { dir }
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes the inventory: `all` > OU groups (nested) > hosts.
    fn inventory(&self, specs: &[Spec]) {
        use std::collections::BTreeMap;
        #[derive(Default)]
        struct Node {
            children: BTreeMap<String, Node>,
            hosts: Vec<String>,
        }
        let mut root = Node::default();
        for s in specs {
            let mut node = &mut root;
            for g in s.ou {
                node = node.children.entry(g.to_string()).or_default();
            }
            let dir = format!("pushscan_dir: {}", self.p("hosts").join(s.name).display());
            let vars = if s.vars.contains("ansible_connection") {
                format!("{dir}, {}", s.vars)
            } else {
                format!("ansible_connection: local, {dir}, {}", s.vars)
            };
            node.hosts.push(format!("{}: {{{vars}}}", s.name));
        }
        fn emit(out: &mut String, node: &Node, depth: usize) {
            let pad = "  ".repeat(depth);
            if !node.hosts.is_empty() {
                out.push_str(&format!("{pad}hosts:\n"));
                for h in &node.hosts {
                    out.push_str(&format!("{pad}  {h}\n"));
                }
            }
            if !node.children.is_empty() {
                out.push_str(&format!("{pad}children:\n"));
                for (name, child) in &node.children {
                    out.push_str(&format!("{pad}  {name}:\n"));
                    emit(out, child, depth + 2);
                }
            }
        }
        let mut inv = String::from("all:\n");
        emit(&mut inv, &root, 1);
        std::fs::write(self.p("inv.yml"), inv).unwrap();
    }

    fn sweep(&self, extra: &[&str]) -> Output {
        bin()
            .arg("sweep")
            .arg("-i")
            .arg(self.p("inv.yml"))
            .arg("-p")
            .arg(self.p("pb.yml"))
            .arg("--state-dir")
            .arg(self.p("state"))
            .args([
                "--progress",
                "quiet",
                "--no-agent",
                "--connect-timeout",
                "3s",
            ])
            .args(extra)
            .output()
            .unwrap()
    }

    fn report(&self, args: &[&str]) -> Output {
        bin()
            .arg("report")
            .args(args)
            .arg("--state-dir")
            .arg(self.p("state"))
            .output()
            .unwrap()
    }
}

fn spec(ou: &'static [&'static str], name: &'static str, vars: &str) -> Spec {
    Spec {
        ou,
        name,
        vars: vars.to_string(),
    }
}

/// The mixed fleet: run 1 sets up history (SALES-015 detected, KEIRI-003 detected, the rest
/// clean), run 2 is the one reported: four detections (English; Japanese with CP932 paths, as
/// EmoCheck writes them on Japanese Windows; a hostile process name with markup and an ANSI
/// escape; the cut report of a crashed checker, a detection all the same), no result, a
/// timeout, a checker failure (a 64 MiB report, over the 1 MiB cap), an unreachable host, and
/// clean hosts (one cleared since run 1, one with a French report).
fn fleet_runs(f: &Fleet, closed: u16) -> Output {
    let unreachable = format!(
        "ansible_connection: ssh, ansible_host: 127.0.0.1, ansible_port: {closed}, ansible_user: nobody"
    );
    let japanese = "scenario: detected2, lang: ja, encoding: cp932, win_user: 田中";
    f.inventory(&[
        spec(&["tokyo", "sales"], "PC-SALES-014", "scenario: clean"),
        spec(&["tokyo", "sales"], "PC-SALES-015", "scenario: detected"),
        spec(&["tokyo", "keiri"], "PC-KEIRI-003", japanese),
        spec(&["tokyo", "keiri"], "PC-KEIRI-004", "scenario: clean"),
        spec(&["osaka"], "PC-OSK-001", "scenario: clean"),
        spec(&["osaka"], "PC-OSK-002", "scenario: clean"),
        spec(&["osaka"], "PC-OSK-003", "scenario: clean"),
        spec(&["osaka"], "PC-OSK-004", "scenario: clean"),
        spec(&["paris"], "PC-PAR-001", "scenario: clean, lang: fr"),
        spec(&["paris"], "PC-PAR-002", &unreachable),
    ]);
    let out = f.sweep(&[]);
    assert_eq!(out.status.code(), Some(1), "run 1: {}", text(&out.stderr));

    f.inventory(&[
        spec(&["tokyo", "sales"], "PC-SALES-014", "scenario: detected"),
        spec(&["tokyo", "sales"], "PC-SALES-015", "scenario: clean"),
        spec(&["tokyo", "keiri"], "PC-KEIRI-003", japanese),
        spec(&["tokyo", "keiri"], "PC-KEIRI-004", "scenario: noreport"),
        spec(&["osaka"], "PC-OSK-001", "scenario: hostile"),
        spec(&["osaka"], "PC-OSK-002", "scenario: hang"),
        spec(&["osaka"], "PC-OSK-003", "scenario: crash"),
        spec(&["osaka"], "PC-OSK-004", "scenario: huge"),
        spec(&["paris"], "PC-PAR-001", "scenario: clean, lang: fr"),
        spec(&["paris"], "PC-PAR-002", &unreachable),
    ]);
    let html = f.p("sweep.html");
    let csv = f.p("sweep.csv");
    let out = f.sweep(&[
        "--report",
        html.to_str().unwrap(),
        "--report",
        csv.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "run 2: {}", text(&out.stderr));
    out
}

/// Debian's `chromium` (or another Chromium on PATH). Missing: fail with the install command.
fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser"] {
        for dir in std::env::var("PATH").unwrap_or_default().split(':') {
            let p = Path::new(dir).join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "Chromium not found: this test renders the report in a real browser. Install it with\n  \
         apt-get update && apt-get install -y --no-install-recommends chromium fonts-ipafont-gothic\n\
         (scripts/test installs it when missing)"
    );
}

/// Runs headless Chromium on `page` (a local file) with a fresh profile and no way to the
/// network (every host name resolves to nothing, the proxy is a closed port), killing it
/// after 60 s.
fn browse(page: &Path, args: &[String]) -> Output {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium())
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-sync",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-default-apps",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            &format!("--proxy-server=127.0.0.1:{}", closed_port()),
            &format!("--user-data-dir={}", profile.path().display()),
        ])
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// The number in the count card of `class` (`<div class="card ..." data-class="X">
/// <span class="n">N</span>`).
fn card(dom: &str, class: &str) -> u32 {
    let at = dom
        .find(&format!("data-class=\"{class}\""))
        .unwrap_or_else(|| panic!("no card for {class}"));
    let rest = &dom[at..];
    let n = rest.find("class=\"n\">").unwrap() + "class=\"n\">".len();
    rest[n..n + rest[n..].find('<').unwrap()].parse().unwrap()
}

/// The `<article>` of detected host `host`.
fn article<'a>(dom: &'a str, host: &str) -> &'a str {
    let h3 = dom
        .find(&format!("<h3>{host}</h3>"))
        .unwrap_or_else(|| panic!("no detection article for {host}"));
    let start = dom[..h3].rfind("<article").unwrap();
    let end = start + dom[start..].find("</article>").unwrap();
    &dom[start..end]
}

/// The table row (`<tr ...>...</tr>`) whose first cell is `host`.
fn row<'a>(dom: &'a str, host: &str) -> &'a str {
    let cell = dom
        .find(&format!("<td>{host}</td>"))
        .unwrap_or_else(|| panic!("no row for {host}"));
    let start = dom[..cell].rfind("<tr").unwrap();
    let end = start + dom[start..].find("</tr>").unwrap();
    &dom[start..end]
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert_eq!(&png[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&png[16..20]), be(&png[20..24]))
}

const HOSTILE_AS_TEXT: &str = "&lt;script&gt;alert(1)&lt;/script&gt;\\x1b[31mRED";
const KEIRI_IMAGE: &str = r"C:\Users\田中\AppData\Local\wfsrvhost\wfsrvhost.exe";

#[test]
fn html_report_of_a_mixed_fleet_renders_safely_in_chromium() {
    // Fail before the sweeps when the browser is missing.
    chromium();
    let f = Fleet::new();
    let closed = closed_port();
    fleet_runs(&f, closed);

    // `report --format html`, timed: the figure the README quotes.
    let page = f.p("report.html");
    let t0 = Instant::now();
    let out = f.report(&["--format", "html", "-o", page.to_str().unwrap()]);
    let render = t0.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let html = std::fs::read_to_string(&page).unwrap();
    eprintln!(
        "report --format html: {} hosts, {} bytes, {:.0} ms (process wall time)",
        10,
        html.len(),
        render.as_secs_f64() * 1000.0
    );

    // Self-contained: nothing that could fetch, a strict CSP, UTF-8.
    assert!(
        html.starts_with("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">")
    );
    assert!(html.contains(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src &#39;none&#39;; \
         style-src &#39;unsafe-inline&#39;; img-src data:; script-src &#39;sha256-"
    ));
    for fetch in [
        "<link", "src=", "href=", "url(", "@import", "http:", "https:",
    ] {
        assert!(!html.contains(fetch), "the page must not reference {fetch}");
    }
    assert!(!html.contains('\x1b'), "no raw escape byte in the file");

    // The same run written by the sweep itself.
    let swept = std::fs::read_to_string(f.p("sweep.html")).unwrap();
    assert!(swept.contains("<h3>PC-SALES-014</h3>"));
    assert_eq!(swept.matches("<article").count(), 4);
    let csv = std::fs::read_to_string(f.p("sweep.csv")).unwrap();
    assert_eq!(csv.lines().count(), 11, "header + one row per host:\n{csv}");

    // ---- Chromium, JavaScript on.
    let out = browse(&page, &["--dump-dom".into()]);
    assert!(out.status.success(), "chromium: {}", text(&out.stderr));
    let dom = text(&out.stdout);
    assert!(
        dom.contains("<html lang=\"en\" data-js=\"on\">"),
        "the CSP lets our inline script run (its hash matches): {}",
        &dom[..dom.len().min(300)]
    );
    assert_eq!(
        dom.matches("<script").count(),
        1,
        "exactly one script element: ours"
    );

    // Counts in the cards.
    assert_eq!(card(&dom, "total"), 10);
    assert_eq!(card(&dom, "detected"), 4);
    assert_eq!(card(&dom, "no_result"), 1);
    assert_eq!(card(&dom, "unreachable"), 1);
    assert_eq!(card(&dom, "timeout"), 1);
    assert_eq!(card(&dom, "checker_failed"), 1);
    assert_eq!(card(&dom, "not_detected"), 2);

    // Sections in the order of the report.
    let at = |s: &str| dom.find(s).unwrap_or_else(|| panic!("{s} missing"));
    assert!(at("id=\"detections\"") < at("id=\"no-result\""));
    assert!(at("id=\"no-result\"") < at("id=\"not-checked\""));
    assert!(at("id=\"not-checked\"") < at("id=\"clean\""));

    // A detection with its process, PID, image path, run key and change marker.
    let sales = article(&dom, "PC-SALES-014");
    for want in [
        "wfsrvhost.exe",
        ">4312<",
        r"C:\Users\tanaka\AppData\Local\wfsrvhost\wfsrvhost.exe",
        r"HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Run\wfsrvhost",
        "<span class=\"chg new\">NEW</span>",
        "tokyo/sales",
        "PC-SALES-014_",
    ] {
        assert!(sales.contains(want), "{want} in {sales}");
    }

    // The Japanese report: CP932 paths decoded, labels intact, marked lang="ja", still detected.
    let keiri = article(&dom, "PC-KEIRI-003");
    assert!(keiri.contains(KEIRI_IMAGE), "{keiri}");
    assert!(keiri.contains("msrdpsvc.exe") && keiri.contains(">2208<"));
    assert!(keiri.contains("STILL DETECTED"));
    assert!(keiri.contains("<tbody lang=\"ja\">"));
    assert!(keiri.contains("<pre class=\"raw\" lang=\"ja\">"));
    assert!(keiri.contains("Emotetを検知しました。"), "{keiri}");
    assert!(keiri.contains("プロセス名"));
    assert!(keiri.contains("decoded as CP932"));

    // The hostile process name: text, escaped, no element, ESC shown as \x1b.
    let hostile = article(&dom, "PC-OSK-001");
    assert!(hostile.contains(HOSTILE_AS_TEXT), "{hostile}");
    assert!(hostile.contains(r"C:\Users\Public\evil.exe") && hostile.contains(">31337<"));
    assert!(!dom.contains("alert(1)</script>"));
    assert!(!dom.contains('\x1b'));

    // No result, then failures by class with their reasons, then the clean hosts.
    assert!(row(&dom, "PC-KEIRI-004").contains("tokyo/keiri"));
    let fail = |class: &str, host: &str| {
        let section = at(&format!("id=\"fail-{class}\""));
        let r = dom.find(&format!("<td>{host}</td>")).unwrap();
        assert!(section < r, "{host} under {class}");
        row(&dom, host).to_string()
    };
    assert!(fail("unreachable", "PC-PAR-002").contains("127.0.0.1 <span class=\"muted\">(ssh)"));
    assert!(fail("timeout", "PC-OSK-002").contains("timeout"));
    assert!(fail("checker_failed", "PC-OSK-004").contains("over the 1048576-byte cap"));
    // The crashed checker's cut report: a detection, with the parser's warning shown.
    let cut = article(&dom, "PC-OSK-003");
    assert!(cut.contains("<ul class=\"warn\"><li>truncated"), "{cut}");
    assert!(at("id=\"clean\"") < dom.find("<td>PC-PAR-001</td>").unwrap());

    // Timelines from the journal: SALES-015 was detected in run 1 and is clean now.
    let cleared = row(&dom, "PC-SALES-015");
    assert!(
        cleared.contains("run 1") && cleared.contains(": Detected\">D</i>"),
        "{cleared}"
    );
    assert!(
        cleared.contains("class=\"k-not_detected now\""),
        "{cleared}"
    );
    assert!(dom.contains("Cleared since the previous check"));

    // Charts: outcome per OU (group chains joined with /), detections per run.
    assert!(dom.contains("<title>tokyo/keiri: Detected 1</title>"));
    assert!(dom.contains("<title>osaka: Timeout 1</title>"));
    assert!(dom.contains("Detections over the last 2 runs"));

    // The filter box exists only with JavaScript.
    assert!(dom.contains("<input type=\"search\""));

    // ---- The script blocked: a copy whose CSP names another hash. Chromium must refuse to run
    // it (the CSP is enforced, not decorative), and the page is complete without it.
    // (`--blink-settings=scriptEnabled=false` would do too, but --dump-dom then dumps nothing.)
    let hash = html
        .split("script-src &#39;")
        .nth(1)
        .and_then(|r| r.split("&#39;").next())
        .unwrap()
        .to_string();
    assert!(hash.starts_with("sha256-") && hash.len() == 51, "{hash}");
    let blocked = f.p("blocked.html");
    let other = format!("sha256-{}=", "A".repeat(43));
    std::fs::write(&blocked, html.replace(&hash, &other)).unwrap();
    let out = browse(&blocked, &["--dump-dom".into()]);
    assert!(out.status.success(), "chromium: {}", text(&out.stderr));
    let plain = text(&out.stdout);
    assert!(
        plain.contains("<html lang=\"en\">"),
        "{}",
        &plain[..plain.len().min(200)]
    );
    assert!(
        !plain.contains("data-js=\"on\""),
        "the CSP blocked the script"
    );
    assert!(
        !plain.contains("<input"),
        "no dead control without the script"
    );
    assert_eq!(card(&plain, "detected"), 4);
    assert!(article(&plain, "PC-SALES-014")
        .contains(r"C:\Users\tanaka\AppData\Local\wfsrvhost\wfsrvhost.exe"));
    assert!(article(&plain, "PC-OSK-001").contains(HOSTILE_AS_TEXT));
    assert!(article(&plain, "PC-KEIRI-003").contains(KEIRI_IMAGE));

    // ---- Screenshot at laptop width.
    let shot = f.p("report.png");
    let out = browse(
        &page,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,2000".into(),
            "--hide-scrollbars".into(),
        ],
    );
    assert!(out.status.success(), "chromium: {}", text(&out.stderr));
    let png = std::fs::read(&shot).expect("screenshot written");
    assert_eq!(png_size(&png), (1280, 2000));
    // A blank 1280x2000 page compresses to a few KiB; this one has text, cards and charts.
    assert!(png.len() > 60_000, "screenshot only {} bytes", png.len());
    if let Ok(dest) = std::env::var("PUSHSCAN_DOCS_SCREENSHOT") {
        std::fs::copy(&shot, Path::new(ROOT).join(dest)).unwrap();
    }
}

#[test]
fn csv_options_and_report_files_by_extension() {
    let f = Fleet::new();
    f.inventory(&[
        spec(&["tokyo"], "PC-A", "scenario: detected, lang: ja"),
        spec(&["tokyo"], "PC-B", "scenario: clean"),
    ]);

    // An unknown extension is refused before any host is touched.
    let out = f.sweep(&["--report", f.p("run.txt").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(".html, .json, .csv or .findings.csv"));
    assert!(!f.p("hosts").exists() && !f.p("state").exists());

    // --report FILE.{html,json,csv} and the older --report-json, all written.
    let out = f.sweep(&[
        "--report",
        f.p("r.HTML").to_str().unwrap(),
        "--report",
        f.p("r.csv").to_str().unwrap(),
        "--report",
        f.p("r.Findings.csv").to_str().unwrap(),
        "--report-json",
        f.p("r.json").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(std::fs::read_to_string(f.p("r.HTML"))
        .unwrap()
        .starts_with("<!DOCTYPE html>"));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.p("r.json")).unwrap()).unwrap();
    assert_eq!(json["hosts"][0]["ou"], "tokyo");
    assert_eq!(json["hosts"][0]["report_format"], "ja");
    assert_eq!(json["hosts"][0]["history"][0]["status"], "detected");
    assert!(std::fs::read_to_string(f.p("r.csv"))
        .unwrap()
        .starts_with("run_id,host,"));
    // .findings.csv: one row per finding (PC-A's process), one for the clean PC-B.
    let rows = std::fs::read_to_string(f.p("r.Findings.csv")).unwrap();
    assert!(
        rows.starts_with("run_id,host,address,groups,ou,status,change,checker,"),
        "{rows}"
    );
    assert_eq!(rows.lines().count(), 3, "{rows}");
    assert!(rows.contains(",process,high,wfsrvhost.exe,"), "{rows}");

    // --bom --crlf: the BOM first, every record ended by CRLF, Japanese intact.
    let out = f.report(&["--format", "csv", "--bom", "--crlf"]);
    assert_eq!(out.status.code(), Some(1));
    let csv = out.stdout;
    assert!(csv.starts_with(b"\xEF\xBB\xBFrun_id,host,"));
    let body = text(&csv[3..]);
    assert_eq!(body.matches("\r\n").count(), 3, "{body:?}");
    assert_eq!(body.matches('\n').count(), 3, "no bare LF: {body:?}");
    // Without them: LF only, no BOM.
    let plain = f.report(&["--format", "csv"]).stdout;
    assert!(plain.starts_with(b"run_id,") && !plain.contains(&b'\r'));
    // They only apply to CSV.
    let out = f.report(&["--format", "json", "--bom"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("--format csv"));
}
