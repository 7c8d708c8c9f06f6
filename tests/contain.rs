//! `pushscan contain` / `uncontain` against real services (no mocks):
//!
//! - Linux, end to end over a real OpenSSH fleet (tests/common): a "malware" process (a
//!   copy of `sleep` under a per-host directory) found by a checker stand-in that writes
//!   an EmoCheck report; `contain --yes` must secure the evidence (right SHA-256,
//!   non-executable name and mode), kill the process, delete the file, journal every
//!   action, show them in `history` and the reports, and re-check the host clean.
//! - The dry run (the default) prints the exact commands and opens no connection; the
//!   host cap refuses before any connection; without a terminal nothing runs (64).
//! - Hostile report values, over SSH (POSIX rules) and from the Windows lab (cmd.exe
//!   rules: `"`, `&`, `%`, `!`, `^`, newline, UNC, `..`, relative, key outside Run):
//!   the host is refused with the reason and nothing runs on it; the others go on.
//! - Where contain acts at all: paths into system trees and aliases of them
//!   (`/proc/self/root/etc/X`, `/usr/local/X`, `/usr/lib64/X`, `~/.ssh/authorized_keys`,
//!   `C:\Windows\explorer.exe`, PowerShell) are refused and real files there are kept;
//!   symbolic links in a user's directory (the file, or a directory on the way) are
//!   refused by the host's own check in the command that acts.
//!
//! Loopback addresses 127.0.120.x - 127.0.129.x are this file's.

mod common;

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::sshd::{FleetOptions, SshFleet};
use common::{sha256_hex, text};

const PUSHSCAN: &str = env!("CARGO_BIN_EXE_pushscan");
const CHECKER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/contain/linux-checker.sh"
);

/// One Linux "host" of the fleet: its directory, its malware copy and process.
struct Infected {
    name: String,
    dir: PathBuf,
    image: PathBuf,
    process: Option<Child>,
}

impl Drop for Infected {
    fn drop(&mut self) {
        if let Some(mut c) = self.process.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct LinuxLab {
    fleet: SshFleet,
    root: tempfile::TempDir,
    hosts: Vec<Infected>,
}

impl LinuxLab {
    fn state(&self) -> PathBuf {
        self.root.path().join("state")
    }
    fn path(&self, n: &str) -> PathBuf {
        self.root.path().join(n)
    }

    fn pushscan(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(PUSHSCAN);
        cmd.args(args)
            .arg("--state-dir")
            .arg(self.state())
            .env_remove("PUSHSCAN_SSH_PASSWORD")
            .stdin(Stdio::null());
        cmd.output().expect("run pushscan")
    }

    /// Connection flags of sweep/contain.
    fn conn(&self) -> Vec<String> {
        vec![
            "--known-hosts".into(),
            self.fleet.known_hosts.display().to_string(),
            "-k".into(),
            self.fleet.client_key.display().to_string(),
            "--no-agent".into(),
            "--connect-timeout".into(),
            "5s".into(),
        ]
    }

    fn sweep(&self) -> Output {
        let inv = self.path("inventory.yml").display().to_string();
        let pb = self.path("playbook.yml").display().to_string();
        let mut args = vec!["sweep", "-i", &inv, "-p", &pb, "--progress", "quiet"];
        let conn = self.conn();
        args.extend(conn.iter().map(String::as_str));
        self.pushscan(&args)
    }

    fn contain(&self, extra: &[&str]) -> Output {
        let mut args = vec!["contain", "--progress", "quiet"];
        args.extend_from_slice(extra);
        let conn = self.conn();
        args.extend(conn.iter().map(String::as_str));
        self.pushscan(&args)
    }

    /// SSH sessions the fleet accepted so far (every connection pushscan opens).
    fn sessions(&self) -> usize {
        self.fleet.sshd_log().matches("Accepted publickey").count()
    }
}

/// `n` hosts on 127.0.`octet`.1.., each with a running copy of `sleep` at
/// `hosts/<name>/malware/evil-<name>`; `report` gives a host's extra checker
/// arguments (hostile values), if any.
fn linux_lab(octet: u8, n: usize, report: impl Fn(usize) -> Vec<String>) -> LinuxLab {
    let fleet = SshFleet::start_with(FleetOptions {
        n_hosts: n,
        base_address: Ipv4Addr::new(127, 0, octet, 1),
        ..FleetOptions::default()
    });
    let root = tempfile::Builder::new()
        .prefix("pushscan-contain-")
        .tempdir()
        .expect("tempdir");
    let sleep = which("sleep");
    let mut yaml = String::from("all:\n  vars:\n    ansible_connection: ssh\n  hosts:\n");
    let mut hosts = Vec::new();
    for i in 0..n {
        let name = format!("lx{:02}", i + 1);
        let dir = root.path().join("hosts").join(&name);
        let image = dir.join("malware").join(format!("evil-{name}"));
        std::fs::create_dir_all(image.parent().unwrap()).unwrap();
        common::install_exe(&sleep, &image, 0o755);
        let process = Command::new(&image)
            .arg("3600")
            .stdin(Stdio::null())
            .spawn()
            .expect("start the malware copy");
        // JSON strings are YAML double-quoted scalars: any byte survives.
        let q = |s: &str| serde_json::to_string(s).unwrap();
        yaml.push_str(&format!(
            "    {name}:\n      ansible_host: {}\n      ansible_port: {}\n      pushscan_dir: {}\n      image: {}\n",
            fleet.addresses[i],
            fleet.port,
            q(&dir.join("pushscan").display().to_string()),
            q(&image.display().to_string()),
        ));
        for (k, a) in report(i).iter().enumerate() {
            yaml.push_str(&format!("      x{}: {}\n", k + 1, q(a)));
        }
        hosts.push(Infected {
            name,
            dir,
            image,
            process: Some(process),
        });
    }
    std::fs::write(root.path().join("inventory.yml"), yaml).unwrap();
    let pin = sha256_hex(&std::fs::read(CHECKER).unwrap());
    let pb = format!(
        "name: contain-e2e\nchecker:\n  path: {CHECKER}\n  sha256: \"{pin}\"\n  platform: linux\n  \
         remote_name: checker.sh\nwork_dir: \"{{{{ pushscan_dir }}}}\"\nrun_dir: \"{{{{ work_dir }}}}/reports\"\n\
         args: [\"/quiet\", \"/output\", \"{{{{ run_dir }}}}\", \"/host\", \"{{{{ inventory_hostname }}}}\", \
         \"/image\", \"{{{{ image }}}}\", \"{{{{ x1 | default('/quiet') }}}}\", \"{{{{ x2 | default('/quiet') }}}}\"]\ntimeout: 20s\nresults:\n  glob: \"*_emocheck.*\"\n  parser: emocheck\n"
    );
    std::fs::write(root.path().join("playbook.yml"), pb).unwrap();
    LinuxLab { fleet, root, hosts }
}

fn which(prog: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(prog);
        if p.is_file() {
            return std::fs::canonicalize(p).unwrap();
        }
    }
    panic!("`{prog}` not found: install it with `apt-get update && apt-get install -y --no-install-recommends coreutils`");
}

fn journal(state: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(state.join("journal.sqlite")).expect("open the journal")
}

/// (host, action, phase, verified) of every recorded action, in order.
fn actions(state: &Path) -> Vec<(String, String, String, Option<bool>)> {
    let j = journal(state);
    let exists: i64 = j
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name='actions'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    if exists == 0 {
        return Vec::new();
    }
    let mut st = j
        .prepare("SELECT host, action, phase, verified FROM actions ORDER BY id")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// How a guarded POSIX command starts for `image` (`commands::posix::guarded`): the
/// directory and the file name, single-quoted.
fn guard_prefix(image: &Path) -> String {
    format!(
        "$ d='{}'; f='{}'; if ! cd -P -- \"$d\"",
        image.parent().unwrap().display(),
        image.file_name().unwrap().to_string_lossy()
    )
}

fn alive(c: &mut Child) -> bool {
    matches!(c.try_wait(), Ok(None))
}

#[test]
fn linux_contain_end_to_end_over_ssh() {
    let t0 = Instant::now();
    let mut lab = linux_lab(120, 2, |_| Vec::new());
    let sweep = lab.sweep();
    assert_eq!(
        sweep.status.code(),
        Some(1),
        "both hosts detected\n{}",
        text(&sweep)
    );

    let out = lab.contain(&["--yes"]);
    let said = text(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "contained, verified, re-checked clear\n{said}"
    );
    eprintln!("{said}");
    let malware = std::fs::read(which("sleep")).unwrap();
    let want = sha256_hex(&malware);
    let state = lab.state();
    for h in &mut lab.hosts {
        let img = h.image.display().to_string();
        // The plan printed the exact commands before running them: each guarded by the
        // host-side path check (the file's directory and name, then the action).
        let guard = guard_prefix(&h.image);
        assert!(said.contains(&guard), "{guard}\n{said}");
        assert!(said.contains("sha256sum -- \"./$f\"\n"), "{said}");
        assert!(
            said.contains("rm -f -- \"./$f\" && echo DELETED\n"),
            "{said}"
        );
        // Process gone (our child, killed by SIGKILL from the ssh session).
        let mut child = h.process.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(&mut child) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let status = child
            .try_wait()
            .unwrap()
            .expect("the malware process is gone");
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(status.signal(), Some(9), "killed with SIGKILL");
        // File gone.
        assert!(!h.image.exists(), "{} deleted", h.image.display());
        // Evidence: right digest, non-executable name and mode, with the report beside it.
        let ev = state
            .join("evidence/contain")
            .join(&h.name)
            .join(format!("{want}.bin.evidence"));
        let bytes = std::fs::read(&ev).unwrap_or_else(|e| panic!("{}: {e}\n{said}", ev.display()));
        assert_eq!(sha256_hex(&bytes), want);
        let mode = std::fs::metadata(&ev).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o400, "evidence copy is read-only, not executable");
        let meta: serde_json::Value = serde_json::from_slice(
            &std::fs::read(ev.with_file_name(format!("{want}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(meta["remote_path"], img);
        let report_sha = meta["report"]["sha256"].as_str().unwrap().to_string();
        let report = std::fs::read(ev.with_file_name(format!("{report_sha}.report"))).unwrap();
        assert_eq!(sha256_hex(&report), report_sha);
        assert!(String::from_utf8_lossy(&report).contains(&img));
        // Nothing else of the malware is left in the host's tree.
        assert!(h.dir.join("malware").read_dir().unwrap().next().is_none());
    }
    // The journal: every action before and after, verified; the re-check clear.
    let acts = actions(&lab.state());
    for h in &lab.hosts {
        let mine: Vec<_> = acts.iter().filter(|a| a.0 == h.name).collect();
        for (act, phase, verified) in [
            ("evidence", "done", Some(true)),
            ("kill", "done", Some(true)),
            ("remove", "done", Some(true)),
            ("unpersist", "skipped", None),
            ("isolate", "skipped", None),
            ("recheck", "done", Some(true)),
        ] {
            assert!(
                mine.iter()
                    .any(|a| a.1 == act && a.2 == phase && a.3 == verified),
                "{act} {phase} {verified:?} recorded for {}: {mine:?}",
                h.name
            );
        }
    }
    let j = journal(&lab.state());
    let (recheck_run, kind): (i64, String) = j
        .query_row(
            "SELECT recheck_run, kind FROM containments ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(kind, "contain");
    let clean: i64 = j
        .query_row(
            "SELECT COUNT(*) FROM hosts WHERE run_id=?1 AND class='not_detected'",
            [recheck_run],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(clean, 2, "the re-check run finds both hosts clean");
    let (cmd, digest, exit, op): (String, String, i64, String) = j
        .query_row(
            "SELECT command, output_sha256, exit_code, operator FROM actions WHERE action='remove' AND host='lx01'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert!(cmd.starts_with("d='"), "{cmd}");
    assert!(
        cmd.lines()
            .next()
            .is_some_and(|l| l.ends_with("rm -f -- \"./$f\" && echo DELETED")),
        "{cmd}"
    );
    assert_eq!(digest.len(), 64);
    assert_eq!(exit, 0);
    assert!(!op.is_empty());

    // history HOST shows them; the reports of the detection run carry them.
    let hist = lab.pushscan(&["history", "lx01"]);
    let h = String::from_utf8_lossy(&hist.stdout);
    assert!(h.contains("Containment actions"), "{h}");
    for a in ["evidence", "kill", "remove", "recheck"] {
        assert!(h.contains(a), "history shows {a}: {h}");
    }
    let hist = lab.pushscan(&["history", "lx01", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&hist.stdout).unwrap();
    assert!(v["actions"].as_array().unwrap().len() >= 6);
    let rep = lab.pushscan(&["report", "--run", "1", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&rep.stdout).unwrap();
    let host = v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == "lx01")
        .unwrap();
    assert!(host["actions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["action"] == "kill" && a["verified"] == true));
    // uncontain on a Linux host: nothing to lift (isolation is Windows-only), exit 0.
    let un = lab.pushscan(&["uncontain", "--host", "lx01", "--yes"]);
    assert_eq!(un.status.code(), Some(0), "{}", text(&un));
    assert!(String::from_utf8_lossy(&un.stdout).contains("nothing to lift"));
    let html = lab.pushscan(&["report", "--run", "1", "--format", "html"]);
    let page = String::from_utf8_lossy(&html.stdout);
    assert!(
        page.contains("Containment actions"),
        "html has the actions section"
    );
    assert!(
        page.contains("d=&#39;")
            && page.contains("rm -f -- &quot;./$f&quot; &amp;&amp; echo DELETED"),
        "commands are escaped in HTML"
    );
    eprintln!("linux_contain_end_to_end_over_ssh: {:.1?}", t0.elapsed());
}

#[test]
fn dry_run_prints_commands_and_touches_nothing_and_caps_hosts() {
    let t0 = Instant::now();
    let mut lab = linux_lab(121, 3, |_| Vec::new());
    let sweep = lab.sweep();
    assert_eq!(sweep.status.code(), Some(1), "{}", text(&sweep));
    let before = lab.sessions();

    // --dry-run: every exact command, exit 0, nothing run, no connection.
    let out = lab.contain(&["--dry-run"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    for h in &lab.hosts {
        let img = h.image.display().to_string();
        for line in [
            guard_prefix(&h.image),
            "sha256sum -- \"./$f\"\n".to_string(),
            "$ readlink /proc/".to_string(),
            "kill -KILL ".to_string(),
            "rm -f -- \"./$f\" && echo DELETED\n".to_string(),
            format!(
                "$ if test -e '{img}' || test -L '{img}'; then echo PRESENT; else echo ABSENT; fi"
            ),
        ] {
            assert!(said.contains(&line), "dry run shows {line:?}\n{said}");
        }
        assert!(said.contains(&format!("host {}", h.name)));
    }
    assert!(
        said.contains("dry run: nothing was run on any host"),
        "{said}"
    );
    // Default (no --yes) without a terminal: the plan, then a refusal, exit 64.
    let out = lab.contain(&[]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(64), "{said}");
    assert!(said.contains("--yes"), "{said}");
    // On a terminal (a pty from util-linux `script`): the hosts are listed and only a
    // typed "yes" runs anything; "no" runs nothing.
    let conn = lab.conn().join(" ");
    let line = format!(
        "{PUSHSCAN} contain --progress quiet --state-dir {} {conn}",
        lab.state().display()
    );
    let mut child = Command::new(which("script"))
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script(1) from util-linux: install it with `apt-get update && apt-get install -y --no-install-recommends bsdutils`");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        // Answer once the question is up (script forwards what arrives before, too).
        std::thread::sleep(Duration::from_millis(1500));
        stdin.write_all(b"no\n").unwrap();
        std::thread::sleep(Duration::from_millis(1500));
    }
    let out = child.wait_with_output().unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("These 3 host(s) will be acted on"), "{said}");
    assert!(said.contains("Type yes to contain them"), "{said}");
    assert!(
        said.contains("not confirmed: nothing was run on any host"),
        "{said}"
    );
    // More detections than --max-hosts: refused before any connection.
    let out = lab.contain(&["--yes", "--max-hosts", "2"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(64), "{said}");
    assert!(said.contains("more than --max-hosts 2"), "{said}");
    // --host naming a host that is not a detection: usage error.
    let out = lab.contain(&["--yes", "--host", "nosuch"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));

    assert_eq!(lab.sessions(), before, "no SSH session was opened");
    assert!(actions(&lab.state()).is_empty(), "no action journaled");
    for h in &mut lab.hosts {
        assert!(alive(h.process.as_mut().unwrap()), "{} still runs", h.name);
        assert!(h.image.exists());
    }
    eprintln!(
        "dry_run_prints_commands_and_touches_nothing_and_caps_hosts: {:.1?}",
        t0.elapsed()
    );
}

#[test]
fn hostile_posix_report_values_refuse_their_host_only() {
    let t0 = Instant::now();
    // Host 1 is fine; the others report hostile values for the same real process.
    let hostile: Vec<Vec<String>> = vec![
        vec![],
        vec!["/report-image".into(), "malware/evil".into()],
        vec!["/report-image".into(), "/tmp/../usr/bin/evil".into()],
        vec!["/report-pid".into(), "12ab".into()],
        vec!["/report-image".into(), "/tmp/a\u{1b}[31mb".into()],
        vec!["/report-image".into(), "/usr/bin/sleep".into()],
    ];
    let mut lab = linux_lab(122, hostile.len(), |i| hostile[i].clone());
    let sweep = lab.sweep();
    assert_eq!(sweep.status.code(), Some(1), "{}", text(&sweep));
    let before = lab.sessions();
    let out = lab.contain(&["--yes", "--no-recheck", "--actions", "evidence,kill,remove"]);
    let said = text(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "refused hosts make it incomplete\n{said}"
    );
    for (i, why) in [
        (1, "not an absolute path"),
        (2, "'.' or '..' component"),
        (3, "no usable PID"),
        (4, "contains '\\u{1b}'"),
        (5, "in a system directory"),
    ] {
        let name = &lab.hosts[i].name;
        let block = said
            .split(&format!("host {name} "))
            .nth(1)
            .unwrap_or_else(|| panic!("{name} listed\n{said}"));
        let block = block.split("\nhost ").next().unwrap();
        assert!(block.contains("REFUSED"), "{name} refused\n{said}");
        assert!(block.contains(why), "{name}: {why}\n{block}");
        assert!(
            !said.contains("\u{1b}[31m"),
            "no raw escape reaches the terminal"
        );
    }
    let acts = actions(&lab.state());
    for h in &mut lab.hosts[1..] {
        let mine: Vec<_> = acts.iter().filter(|a| a.0 == h.name).collect();
        assert_eq!(mine.len(), 1, "{}: only the refusal: {mine:?}", h.name);
        assert_eq!(
            (mine[0].1.as_str(), mine[0].2.as_str()),
            ("refused", "refused")
        );
        assert!(alive(h.process.as_mut().unwrap()), "{}: untouched", h.name);
        assert!(h.image.exists());
    }
    // The good host went on: contained, and only it was connected to.
    assert_eq!(lab.sessions(), before + 1, "one session: the good host's");
    let good = &mut lab.hosts[0];
    assert!(!good.image.exists(), "{said}");
    let mut c = good.process.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(&mut c) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(&mut c));
    eprintln!(
        "hostile_posix_report_values_refuse_their_host_only: {:.1?}",
        t0.elapsed()
    );
}

// ---------------------------------------------------------------- the Windows lab

mod winlab {
    use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
    use std::path::PathBuf;
    use std::process::{Command, Output, Stdio};

    use pushscan_lab::fleet::{self, Lab, UpOptions};
    use pushscan_lab::spec::{Scenario, ScenarioKind, Spec};

    pub const SAMBA_MISSING: &str =
        "install it with `apt-get update && apt-get install -y --no-install-recommends \
    samba smbclient` (scripts/test does this)";

    /// The lab's own executable (its `serve` process), built by cargo if needed. Built as
    /// `cargo test --workspace` builds (both packages' binaries and tests: the same feature
    /// unification), so under `scripts/test` this is a no-op and the test binaries are not
    /// invalidated (building pushscan-lab alone unifies features differently and costs a
    /// ~80 s rebuild each way on this machine).
    pub fn lab_exe() -> PathBuf {
        crate::common::lab_exe(super::PUSHSCAN)
    }

    fn free_port(ip: Ipv4Addr, avoid: &[u16]) -> u16 {
        loop {
            let l = TcpListener::bind(SocketAddrV4::new(ip, 0)).expect("bind port 0");
            let port = l.local_addr().unwrap().port();
            if !avoid.contains(&port) {
                return port;
            }
        }
    }

    pub struct TestLab {
        pub lab: Lab,
        pub dir: tempfile::TempDir,
        /// One lab of this file at a time: a Wine lab boots a Wine per host, which on this
        /// 2-core machine fails to come up in time next to a second lab starting.
        _one_at_a_time: std::sync::MutexGuard<'static, ()>,
    }

    static LAB_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// A native lab (real Samba, the WinRM simulator) of one infected host per scenario.
    pub fn start(base: Ipv4Addr, scenarios: Vec<Scenario>) -> TestLab {
        let guard = LAB_LOCK
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for tool in ["smbd", "smbpasswd"] {
            assert!(
                fleet::sys::find_binary(tool).is_some(),
                "`{tool}` not found: {SAMBA_MISSING}"
            );
        }
        let mut spec = Spec::shipped();
        spec.hosts = scenarios.len();
        spec.base_address = base;
        spec.scenarios = scenarios;
        spec.smb.port = free_port(base, &[]);
        spec.winrm.http_port = free_port(base, &[spec.smb.port]);
        spec.winrm.https_port = None;
        let dir = tempfile::Builder::new()
            .prefix("pushscan-contain-win-")
            .tempdir()
            .unwrap();
        let mut opts = UpOptions::new(dir.path().join("lab"), spec);
        let t = std::time::Instant::now();
        opts.exe = lab_exe();
        let built = t.elapsed();
        let lab = fleet::up(opts).unwrap_or_else(|e| panic!("lab up failed: {e:#}"));
        eprintln!(
            "lab: build check {built:.1?}, up {:.1?}",
            t.elapsed() - built
        );
        TestLab {
            lab,
            dir,
            _one_at_a_time: guard,
        }
    }

    pub fn infected(image: Option<&str>, runkey: Option<&str>) -> Scenario {
        let mut s = Scenario::new(ScenarioKind::Infected);
        s.image = image.map(str::to_string);
        s.runkey = runkey.map(str::to_string);
        s
    }

    impl TestLab {
        pub fn state(&self) -> PathBuf {
            self.dir.path().join("state")
        }

        /// The lab's playbook writing EmoCheck's text reports (the JSON writer of
        /// EmoCheck does not escape `"`, so text carries hostile paths unchanged).
        pub fn text_playbook(&self) -> PathBuf {
            let text = std::fs::read_to_string(&self.lab.playbook).unwrap();
            let text = text
                .replace("\"/json\", ", "")
                .lines()
                .map(|l| {
                    if l.starts_with("  path:") {
                        format!("  path: {}", self.lab.checker.display())
                    } else {
                        l.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
            let p = self.dir.path().join("emocheck-text.yml");
            std::fs::write(&p, text).unwrap();
            p
        }

        pub fn pushscan(&self, args: &[&str]) -> Output {
            Command::new(super::PUSHSCAN)
                .args(args)
                .arg("--state-dir")
                .arg(self.state())
                .env("PUSHSCAN_USER", &self.lab.username)
                .env("PUSHSCAN_PASSWORD", &self.lab.password)
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .output()
                .expect("run pushscan")
        }
    }
}

#[test]
fn hostile_windows_report_values_refuse_their_host_only() {
    let t0 = Instant::now();
    // (image, run key, the reason the host must be refused with; None: the good host)
    let good = r"C:\Users\tanaka\AppData\Local\wfsrvhost\wfsrvhost.exe";
    let cases: Vec<(Option<&str>, Option<&str>, Option<&str>)> = vec![
        // The lab writes the "malware" file only for an image given explicitly.
        (Some(good), None, None),
        (
            Some(r#"C:\Users\a"b\evil.exe"#),
            None,
            Some("contains '\"'"),
        ),
        (
            Some(r"C:\Users\x&calc\evil.exe"),
            None,
            Some("contains '&'"),
        ),
        (
            Some(r"C:\Users\%TEMP%\evil.exe"),
            None,
            Some("contains '%'"),
        ),
        (Some(r"C:\Users\x!y!\evil.exe"), None, Some("contains '!'")),
        (Some(r"C:\Users\a^b\evil.exe"), None, Some("contains '^'")),
        (
            Some(r"\\attacker\share\evil.exe"),
            None,
            Some("not a drive path"),
        ),
        (
            Some(r"C:\Users\tanaka\..\..\Windows\System32\evil.exe"),
            None,
            Some("'.' or '..' component"),
        ),
        (Some(r"evil.exe"), None, Some("not a drive path")),
        // Deny by default: nothing outside Users, ProgramData and Windows\Temp is acted
        // on, whatever the file is called.
        (
            Some(r"C:\Windows\explorer.exe"),
            None,
            Some("in a system directory"),
        ),
        (
            Some(r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe"),
            None,
            Some("in a system directory"),
        ),
        (
            Some(r"C:\PROGRA~1\x\evil.exe"),
            None,
            Some("8.3 short name"),
        ),
        (
            None,
            Some(r"HKEY_LOCAL_MACHINE\SYSTEM\CurrentControlSet\Services\evil"),
            Some("not a Run or RunOnce key"),
        ),
        (
            None,
            Some(r"HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Run\%COMSPEC%"),
            Some("value name contains '%'"),
        ),
    ];
    let t = winlab::start(
        Ipv4Addr::new(127, 0, 123, 1),
        cases
            .iter()
            .map(|(i, k, _)| winlab::infected(*i, *k))
            .collect(),
    );
    let pb = t.text_playbook();
    let inv = t.lab.inventory.display().to_string();
    let pb = pb.display().to_string();
    eprintln!("lab up {:.1?}", t0.elapsed());
    let sweep = t.pushscan(&["sweep", "-i", &inv, "-p", &pb, "--progress", "quiet"]);
    assert_eq!(sweep.status.code(), Some(1), "{}", text(&sweep));
    eprintln!("swept {:.1?}", t0.elapsed());

    // Which lab host got which case: its checker switches carry the value.
    let host_of = |i: usize| -> String {
        let (image, key, _) = cases[i];
        // The good image is also the default of the run-key cases: match on both.
        t.lab
            .hosts()
            .iter()
            .find(|h| {
                let args = &h.checker_args;
                let has = |flag: &str, v: &str| args.windows(2).any(|w| w[0] == flag && w[1] == v);
                image.is_none_or(|i| has("/image", i))
                    && match key {
                        Some(k) => has("/runkey", k),
                        None => !args.iter().any(|a| a == "/runkey"),
                    }
            })
            .unwrap_or_else(|| panic!("no lab host for case {i}"))
            .name
            .clone()
    };
    let out = t.pushscan(&[
        "contain",
        "--yes",
        "--no-recheck",
        "--max-hosts",
        "20",
        "--actions",
        "evidence,kill,remove,unpersist",
    ]);
    let said = text(&out);
    eprintln!("contain took {:.1?}", t0.elapsed());
    assert_eq!(out.status.code(), Some(2), "{said}");
    let acts = actions(&t.state());
    for (i, (_, _, why)) in cases.iter().enumerate() {
        let name = host_of(i);
        let block = said
            .split(&format!("\nhost {name} "))
            .nth(1)
            .unwrap_or_else(|| panic!("{name} listed\n{said}"));
        let block = block.split("\nhost ").next().unwrap();
        let mine: Vec<_> = acts.iter().filter(|a| a.0 == name).collect();
        match why {
            Some(why) => {
                assert!(
                    block.contains("REFUSED"),
                    "case {i} {name} refused\n{block}"
                );
                assert!(block.contains(why), "case {i} {name}: {why}\n{block}");
                assert_eq!(mine.len(), 1, "{name}: only the refusal: {mine:?}");
                assert_eq!(
                    (mine[0].1.as_str(), mine[0].2.as_str()),
                    ("refused", "refused")
                );
            }
            None => {
                // The good host went on: its plan has the contract's command lines and its
                // evidence was pulled over SMB and hashed by the host.
                assert!(!block.contains("REFUSED"), "{block}");
                assert!(
                    block.contains(r#"$ certutil -hashfile "C:\Users\tanaka\AppData\Local\wfsrvhost\wfsrvhost.exe" SHA256"#),
                    "{block}"
                );
                assert!(block.contains("$ taskkill /PID 4312 /F"), "{block}");
                assert!(
                    block.contains(r#"$ reg query "HKU\<SID>\Software\Microsoft\Windows\CurrentVersion\Run" /v "wfsrvhost""#),
                    "{block}"
                );
                assert!(
                    mine.iter()
                        .any(|a| a.1 == "evidence" && a.2 == "done" && a.3 == Some(true)),
                    "{name}: evidence secured: {mine:?}\n{said}"
                );
            }
        }
    }
    eprintln!(
        "hostile_windows_report_values_refuse_their_host_only: {:.1?}",
        t0.elapsed()
    );
}

/// Whether an inspection lists a process running `image` (case-insensitively).
fn runs_image2(v: &serde_json::Value, image: &str) -> bool {
    v["processes"].as_array().unwrap().iter().any(|p| {
        p["image"]
            .as_str()
            .unwrap_or("")
            .eq_ignore_ascii_case(image)
    })
}

/// The live state of a Wine host as JSON (`pushscan_lab::wine::inspect`).
fn inspect(t: &winlab::TestLab, host: &str, files: &[String]) -> serde_json::Value {
    let seen = pushscan_lab::wine::inspect(&t.lab.dir, host, files)
        .unwrap_or_else(|e| panic!("wine inspect {host}: {e:#}"));
    serde_json::to_value(&seen).unwrap()
}

#[test]
fn windows_contain_end_to_end_on_wine() {
    use pushscan_lab::spec::{Scenario, ScenarioKind};
    let t0 = Instant::now();
    if let Err(e) = pushscan_lab::wine::WineTools::find() {
        panic!("{e:#}");
    }
    assert!(
        pushscan_lab::fleet::sys::find_binary("x86_64-w64-mingw32-gcc").is_some(),
        "`x86_64-w64-mingw32-gcc` not found: {}",
        pushscan_lab::wine::MINGW_INSTALL_HINT
    );
    let t = winlab::start(
        Ipv4Addr::new(127, 0, 124, 1),
        vec![
            Scenario {
                wine: true,
                ..Scenario::new(ScenarioKind::Infected)
            },
            Scenario {
                wine: true,
                ..Scenario::new(ScenarioKind::Infected)
            },
            Scenario {
                wine: true,
                ..Scenario::new(ScenarioKind::Clean)
            },
        ],
    );
    let up = t0.elapsed();
    // The second infected host is contained apart, with --quarantine.
    let second = t
        .lab
        .hosts()
        .iter()
        .filter(|h| h.scenario == ScenarioKind::Infected && h.wine.is_some())
        .nth(1)
        .expect("two infected Wine hosts")
        .clone();
    let infected = t
        .lab
        .wine_host_of(ScenarioKind::Infected)
        .expect("an infected Wine host")
        .clone();
    let name = infected.name.clone();
    let wine = infected.wine.clone().unwrap();
    let malware = wine.malware.clone().expect("the host's malware");
    let image = malware.image.clone();
    // The malware's bytes, read from the prefix before anything happens: the evidence
    // copy must have their digest.
    let rel = image.strip_prefix("C:\\").unwrap().replace('\\', "/");
    let on_disk = wine.prefix.join("drive_c").join(&rel);
    let want_sha = sha256_hex(
        &std::fs::read(&on_disk).unwrap_or_else(|e| panic!("{}: {e}", on_disk.display())),
    );
    let files = vec![image.clone()];
    let before = inspect(&t, &name, &files);
    let lower = image.to_lowercase();
    let runs_image = |v: &serde_json::Value| {
        v["processes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["image"].as_str().unwrap_or("").to_lowercase() == lower)
    };
    let has_value = |v: &serde_json::Value| {
        v["run_values"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == malware.value_name.as_str())
    };
    assert!(runs_image(&before), "the malware runs: {before}");
    assert!(has_value(&before), "its Run value is set: {before}");
    assert_eq!(before["files"][&image], true);

    let inv = t.lab.inventory.display().to_string();
    let pb = t.lab.wine_playbook.clone().unwrap().display().to_string();
    let sweep = t.pushscan(&["sweep", "-i", &inv, "-p", &pb, "--progress", "quiet"]);
    assert_eq!(
        sweep.status.code(),
        Some(1),
        "the sweep detects it\n{}",
        text(&sweep)
    );
    let t_sweep = t0.elapsed();

    // The address the host sees this controller at: the source of a TCP connection to its
    // WinRM port (on this loopback lab, the host's own /32 on `lo`). Isolation must leave
    // exactly that address out.
    let jump = match std::net::TcpStream::connect((infected.address, t.lab.winrm_port()))
        .unwrap()
        .local_addr()
        .unwrap()
        .ip()
    {
        std::net::IpAddr::V4(v4) => u32::from(v4),
        other => panic!("IPv4 lab, got {other}"),
    };
    let ranges = format!(
        "0.0.0.0-{},{}-255.255.255.255",
        Ipv4Addr::from(jump - 1),
        Ipv4Addr::from(jump + 1)
    );
    let in_ranges = |ip: u32| {
        ranges.split(',').any(|r| {
            let (a, b) = r.split_once('-').unwrap_or((r, r));
            let (a, b): (Ipv4Addr, Ipv4Addr) = (a.parse().unwrap(), b.parse().unwrap());
            (u32::from(a)..=u32::from(b)).contains(&ip)
        })
    };
    assert!(!in_ranges(jump));
    assert!(in_ranges(u32::from(Ipv4Addr::new(8, 8, 8, 8))));

    let out = t.pushscan(&["contain", "--yes", "--progress", "quiet", "--host", &name]);
    let said = text(&out);
    let t_contain = t0.elapsed();
    eprintln!("{said}");
    assert_eq!(
        out.status.code(),
        Some(0),
        "contained, verified, re-checked clear\n{said}"
    );
    // The contract's command lines, as planned and run.
    let pid = malware.windows_pid.expect("the malware's Windows PID");
    for line in [
        format!("$ certutil -hashfile \"{image}\" SHA256"),
        format!("$ taskkill /PID {pid} /F"),
        format!("$ del /f /q \"{image}\""),
        format!("$ if exist \"{image}\" (echo PRESENT) else (echo ABSENT)"),
        "$ reg query HKU".to_string(),
        format!("$ netsh advfirewall firewall add rule name=\"pushscan-isolation\" dir=in action=block remoteip={ranges} profile=any enable=yes"),
        format!("$ netsh advfirewall firewall add rule name=\"pushscan-isolation\" dir=out action=block remoteip={ranges} profile=any enable=yes"),
        "$ netsh advfirewall firewall show rule name=\"pushscan-isolation\"".to_string(),
    ] {
        assert!(said.contains(&line), "{line}\n{said}");
    }
    assert!(
        said.contains(&format!("re-check run 2: {name} clear")),
        "{said}"
    );

    // The prefix, read live: process gone, file gone, Run value gone, rules present.
    let after = inspect(&t, &name, &files);
    assert!(!runs_image(&after), "the malware process is gone: {after}");
    assert_eq!(
        after["files"][&image], false,
        "the image file is gone: {after}"
    );
    assert!(!has_value(&after), "the Run value is gone: {after}");
    let rules = after["firewall_rules"].as_array().unwrap();
    for dir in ["in", "out"] {
        assert!(
            rules.iter().any(|r| r["name"] == "pushscan-isolation"
                && r["dir"] == dir
                && r["action"] == "block"
                && r["remoteip"] == ranges.as_str()
                && r["enable"] == true),
            "a {dir} block rule leaving out the jump host: {after}"
        );
    }
    assert_eq!(rules.len(), 2, "exactly our two rules: {after}");
    // The clean neighbour was not touched.
    let clean = t
        .lab
        .wine_host_of(ScenarioKind::Clean)
        .unwrap()
        .name
        .clone();
    let other = inspect(&t, &clean, &[]);
    assert!(other["firewall_rules"].as_array().unwrap().is_empty());

    // Evidence: the malware's bytes, read-only, with the report.
    let ev = t
        .state()
        .join("evidence/contain")
        .join(&name)
        .join(format!("{want_sha}.bin.evidence"));
    let bytes = std::fs::read(&ev).unwrap_or_else(|e| panic!("{}: {e}\n{said}", ev.display()));
    assert_eq!(sha256_hex(&bytes), want_sha);
    assert_eq!(
        std::fs::metadata(&ev).unwrap().permissions().mode() & 0o777,
        0o400
    );
    // Journal: every action done and verified.
    let acts = actions(&t.state());
    for act in [
        "evidence",
        "kill",
        "remove",
        "unpersist",
        "isolate",
        "recheck",
    ] {
        assert!(
            acts.iter()
                .any(|a| a.0 == name && a.1 == act && a.2 == "done" && a.3 == Some(true)),
            "{act} done and verified: {acts:?}"
        );
    }
    let hist = t.pushscan(&["history", &name]);
    let h = String::from_utf8_lossy(&hist.stdout);
    assert!(
        h.contains("Containment actions") && h.contains("isolate"),
        "{h}"
    );

    // --quarantine on the second host: the image moves to the quarantine directory under
    // its SHA-256 (real Wine `mkdir` and `move /y`), the original is gone.
    let m2 = second.wine.clone().unwrap().malware.unwrap();
    let prefix2 = second.wine.as_ref().unwrap().prefix.clone();
    let rel2 = m2.image.strip_prefix("C:\\").unwrap().replace('\\', "/");
    let sha2 = sha256_hex(&std::fs::read(prefix2.join("drive_c").join(rel2)).unwrap());
    let q = format!(r"C:\ProgramData\pushscan\quarantine\{sha2}.quarantine");
    let out = t.pushscan(&[
        "contain",
        "--yes",
        "--progress",
        "quiet",
        // The latest run is the first host's re-check: name the detection run.
        "--run",
        "1",
        "--host",
        &second.name,
        "--quarantine",
        "--actions",
        "evidence,kill,remove",
    ]);
    let said2 = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said2}");
    let planned_move = format!(
        r#"$ move /y "{}" "C:\ProgramData\pushscan\quarantine\<SHA256>.quarantine""#,
        m2.image
    );
    assert!(said2.contains(&planned_move), "{said2}");
    let seen = inspect(&t, &second.name, &[m2.image.clone(), q.clone()]);
    assert_eq!(seen["files"][&m2.image], false, "{seen}");
    assert_eq!(seen["files"][&q], true, "quarantined as {q}: {seen}");
    assert!(!runs_image2(&seen, &m2.image), "{seen}");

    // uncontain after the journal was pruned: only the inventory is needed.
    let pruned = t.pushscan(&["prune", "--keep-days", "0"]);
    assert_eq!(pruned.status.code(), Some(0), "{}", text(&pruned));
    let un = t.pushscan(&["uncontain", "--host", &name, "-i", &inv, "--yes"]);
    let said = text(&un);
    assert_eq!(un.status.code(), Some(0), "{said}");
    assert!(said.contains("isolation lifted, verified"), "{said}");
    let lifted = inspect(&t, &name, &[]);
    assert!(
        lifted["firewall_rules"].as_array().unwrap().is_empty(),
        "the rules are gone: {lifted}"
    );
    let acts = actions(&t.state());
    assert!(acts
        .iter()
        .any(|a| a.0 == name && a.1 == "uncontain" && a.2 == "done" && a.3 == Some(true)));
    eprintln!(
        "windows_contain_end_to_end_on_wine: {:.1?} (lab up {up:.1?}, sweep {:.1?}, contain+re-check {:.1?}, quarantine contain + prune + uncontain {:.1?})",
        t0.elapsed(),
        t_sweep - up,
        t_contain - t_sweep,
        t0.elapsed() - t_contain
    );
}

#[test]
fn a_file_whose_evidence_was_not_secured_is_not_deleted() {
    let t0 = Instant::now();
    let mut lab = linux_lab(125, 1, |_| Vec::new());
    let sweep = lab.sweep();
    assert_eq!(sweep.status.code(), Some(1), "{}", text(&sweep));
    // The binary is ~40 KiB: over a 1 KiB cap, so its copy cannot be secured.
    let out = lab.contain(&[
        "--yes",
        "--no-recheck",
        "--evidence-cap",
        "1KiB",
        "--actions",
        "evidence,kill,remove",
    ]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("evidence copy was not secured: not deleted"),
        "{said}"
    );
    let state = lab.state();
    let h = &mut lab.hosts[0];
    assert!(
        h.image.exists(),
        "the file stays for the investigation\n{said}"
    );
    // Stopping the process does not destroy evidence: it went on.
    let mut c = h.process.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(&mut c) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(&mut c), "killed\n{said}");
    let acts = actions(&state);
    let get = |a: &str| acts.iter().find(|x| x.1 == a).cloned().unwrap();
    assert_eq!(get("evidence").2, "failed");
    assert_eq!(get("kill").2, "done");
    assert_eq!(get("remove").2, "failed");
    let kept = state.join("evidence/contain").join(&h.name);
    assert!(
        !kept.exists() || std::fs::read_dir(&kept).unwrap().next().is_none(),
        "no partial evidence copy is kept"
    );
    eprintln!(
        "a_file_whose_evidence_was_not_secured_is_not_deleted: {:.1?}",
        t0.elapsed()
    );
}

/// A file the test puts in a system tree of this machine (the hosts of the SSH fleet
/// are this machine), removed when the test ends.
struct Victim(PathBuf);

impl Victim {
    fn new(path: PathBuf) -> Victim {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        }
        std::fs::write(&path, b"a protected file\n")
            .unwrap_or_else(|e| panic!("{}: {e} (the test runs as root)", path.display()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        Victim(path)
    }
    /// What the file is now, for the failure message.
    fn state(&self) -> String {
        match std::fs::symlink_metadata(&self.0) {
            Err(e) => format!("{}: {e}", self.0.display()),
            Ok(m) => format!(
                "{}: mode {:o}, {} bytes",
                self.0.display(),
                m.permissions().mode() & 0o7777,
                m.len()
            ),
        }
    }
    fn intact(&self) -> bool {
        std::fs::read(&self.0).is_ok_and(|b| b == b"a protected file\n")
            && std::fs::metadata(&self.0).is_ok_and(|m| m.permissions().mode() & 0o777 == 0o644)
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        // A directory the test made for it (`/etc/<tag>.d`, `/home/<tag>/.ssh`).
        for d in self.0.ancestors().skip(1).take(2) {
            if d.to_string_lossy().contains("pushscan-contain-") {
                let _ = std::fs::remove_dir(d);
            }
        }
    }
}

/// The block `contain` printed for host `name`.
fn host_block<'a>(said: &'a str, name: &str) -> &'a str {
    let block = said
        .split(&format!("host {name} "))
        .nth(1)
        .unwrap_or_else(|| panic!("{name} listed\n{said}"));
    block.split("\nhost ").next().unwrap()
}

/// The review's paths into system trees: `/proc/self/root/etc/X` (the real `/etc/X`),
/// `/usr/local/X`, `/usr/lib64/X`, a user's `~/.ssh/authorized_keys`. Each names a real
/// file of this machine (the fleet's hosts), each host is refused before any connection
/// with its reason, and every file is still there, unchanged.
#[test]
fn system_trees_and_aliases_are_refused_and_their_files_kept() {
    let t0 = Instant::now();
    let tag = format!("pushscan-contain-{}", std::process::id());
    let etc = Victim::new(PathBuf::from(format!("/etc/{tag}")));
    let local = Victim::new(PathBuf::from(format!("/usr/local/{tag}")));
    let lib64 = Victim::new(PathBuf::from(format!("/usr/lib64/{tag}")));
    let home = PathBuf::from(format!("/home/{tag}"));
    let keys = Victim::new(home.join(".ssh/authorized_keys"));
    let cases: Vec<(String, &str)> = vec![
        (
            format!("/proc/self/root/etc/{tag}"),
            "in a kernel file system (/proc, /sys, /dev)",
        ),
        (local.0.display().to_string(), "in a system directory"),
        (lib64.0.display().to_string(), "in a system directory"),
        (
            keys.0.display().to_string(),
            "in a protected place (.ssh: keys)",
        ),
    ];
    let mut lab = linux_lab(126, cases.len() + 1, |i| match i {
        0 => Vec::new(),
        i => vec!["/report-image".into(), cases[i - 1].0.clone()],
    });
    let sweep = lab.sweep();
    assert_eq!(sweep.status.code(), Some(1), "{}", text(&sweep));
    let before = lab.sessions();
    let out = lab.contain(&["--yes", "--no-recheck", "--actions", "evidence,kill,remove"]);
    let said = text(&out);
    // First what matters: every file is still there, unchanged.
    let damaged: Vec<String> = [&etc, &local, &lib64, &keys]
        .iter()
        .filter(|v| !v.intact())
        .map(|v| v.state())
        .collect();
    assert!(damaged.is_empty(), "not kept: {damaged:?}\n{said}");
    assert_eq!(out.status.code(), Some(2), "refused hosts\n{said}");
    for (i, (path, why)) in cases.iter().enumerate() {
        let name = &lab.hosts[i + 1].name;
        let block = host_block(&said, name);
        assert!(block.contains("REFUSED"), "{name} {path} refused\n{said}");
        assert!(block.contains(why), "{name} {path}: {why}\n{block}");
    }
    // Only the good host was connected to, and contained.
    assert_eq!(lab.sessions(), before + 1, "one session: the good host's");
    assert!(!lab.hosts[0].image.exists(), "{said}");
    for h in &mut lab.hosts[1..] {
        assert!(alive(h.process.as_mut().unwrap()), "{}: untouched", h.name);
    }
    eprintln!(
        "system_trees_and_aliases_are_refused_and_their_files_kept: {:.1?}",
        t0.elapsed()
    );
}

/// Links inside a tree contain may act in (the per-host directory under /tmp): a file
/// that is a symbolic link to a protected file, and a directory on the path that is a
/// symbolic link into `/etc`. The paths pass the controller's check; the host's own
/// check, in the command that acts, refuses them: with `--quarantine` (which moves the
/// file and makes it mode 000) the protected files keep their place, content and mode.
/// The good host's file is quarantined by the same guarded command.
#[test]
fn links_on_the_host_are_refused_by_the_host() {
    let t0 = Instant::now();
    let tag = format!("pushscan-contain-link-{}", std::process::id());
    let file = Victim::new(PathBuf::from(format!("/etc/{tag}")));
    let in_dir = Victim::new(PathBuf::from(format!("/etc/{tag}.d/victim")));
    let root = tempfile::Builder::new()
        .prefix("pushscan-contain-links-")
        .tempdir()
        .unwrap();
    let link = root.path().join("user").join("update.exe");
    let via_dir = root.path().join("user").join("cache").join("victim");
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&file.0, &link).unwrap();
    std::os::unix::fs::symlink(in_dir.0.parent().unwrap(), via_dir.parent().unwrap()).unwrap();
    let cases = [
        (link.display().to_string(), "the file is a symbolic link"),
        (
            via_dir.display().to_string(),
            "the directory is not its final path",
        ),
    ];
    let lab = linux_lab(127, cases.len() + 1, |i| match i {
        0 => Vec::new(),
        i => vec!["/report-image".into(), cases[i - 1].0.clone()],
    });
    let sweep = lab.sweep();
    assert_eq!(sweep.status.code(), Some(1), "{}", text(&sweep));
    let out = lab.contain(&[
        "--yes",
        "--no-recheck",
        "--quarantine",
        "--actions",
        "evidence,remove",
    ]);
    let said = text(&out);
    // First what matters: the protected files keep their place, content and mode.
    assert!(
        file.intact() && in_dir.intact(),
        "kept, unchanged: {}; {}\n{said}",
        file.state(),
        in_dir.state()
    );
    assert_eq!(out.status.code(), Some(2), "{said}");
    let acts = actions(&lab.state());
    for (i, (path, why)) in cases.iter().enumerate() {
        let name = &lab.hosts[i + 1].name;
        let block = host_block(&said, name);
        assert!(!block.contains("REFUSED: nothing will run"), "{block}");
        // The results follow the plans: `<host> NOT fully contained`, then its lines.
        let result: Vec<&str> = said
            .lines()
            .skip_while(|l| *l != format!("{name} NOT fully contained"))
            .skip(1)
            .take_while(|l| l.starts_with(' '))
            .collect();
        for act in ["evidence", "remove"] {
            assert!(
                result.iter().any(|l| l.trim_start().starts_with(act)
                    && l.contains(&format!("FAILED (refused on the host: {why}"))),
                "{name} {path}: {act} refused: {why}\n{said}"
            );
        }
        let mine: Vec<_> = acts.iter().filter(|a| &a.0 == name).collect();
        for act in ["evidence", "remove"] {
            assert!(
                mine.iter().any(|a| a.1 == act && a.2 == "failed"),
                "{name}: {act} failed: {mine:?}"
            );
        }
    }
    assert!(link.is_symlink() && via_dir.exists(), "the links stay too");
    // The good host: its file went to the quarantine, mode 000.
    let want = sha256_hex(&std::fs::read(which("sleep")).unwrap());
    let q = PathBuf::from(format!("/var/lib/pushscan/quarantine/{want}.quarantine"));
    assert!(!lab.hosts[0].image.exists(), "{said}");
    let m =
        std::fs::symlink_metadata(&q).unwrap_or_else(|e| panic!("{}: {e}\n{said}", q.display()));
    assert!(m.is_file() && m.permissions().mode() & 0o777 == 0, "{m:?}");
    let _ = std::fs::remove_file(&q);
    eprintln!(
        "links_on_the_host_are_refused_by_the_host: {:.1?}",
        t0.elapsed()
    );
}

/// `contain` on a Windows host whose WinRM is closed runs its commands over SMB: the
/// connection's name (`pushscan-<hex>`, which names its services and files) is journaled
/// under the run contain acts on before the first command and journaled done once every
/// command removed its own; no service of ours stays in the lab's service manager and the
/// evidence is secured as over WinRM.
#[test]
fn contain_over_smb_journals_its_services_and_leaves_none() {
    let image = r"C:\Users\tanaka\AppData\Local\wfsrvhost\wfsrvhost.exe";
    let mut s = winlab::infected(Some(image), None);
    s.winrm = pushscan_lab::spec::WinrmAvailability::Closed;
    let t = winlab::start(Ipv4Addr::new(127, 0, 125, 1), vec![s]);
    let pb = t.text_playbook().display().to_string();
    let inv = t.lab.inventory.display().to_string();
    let sweep = t.pushscan(&["sweep", "-i", &inv, "-p", &pb, "--progress", "quiet"]);
    assert_eq!(sweep.status.code(), Some(1), "{}", text(&sweep));
    let host = t.lab.hosts()[0].name.clone();
    let out = t.pushscan(&["contain", "--yes", "--no-recheck", "--actions", "evidence"]);
    let said = text(&out);
    // 2: every action verified, but without the re-check nothing says the host is clear.
    assert_eq!(out.status.code(), Some(2), "{said}");
    let acts = actions(&t.state());
    assert!(
        acts.iter()
            .any(|a| a.0 == host && a.1 == "evidence" && a.2 == "done" && a.3 == Some(true)),
        "evidence secured over SMB: {acts:?}\n{said}"
    );
    // (run, phase, target) of every `service` step of the host: the sweep's connection and
    // contain's, each an intent and then done, all under the swept run.
    let j = journal(&t.state());
    let mut st = j
        .prepare(
            "SELECT run_id, phase, target FROM steps WHERE host=?1 AND step='service' ORDER BY id",
        )
        .unwrap();
    let steps: Vec<(i64, String, String)> = st
        .query_map([&host], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let names: std::collections::BTreeSet<&str> = steps.iter().map(|s| s.2.as_str()).collect();
    assert_eq!(
        names.len(),
        2,
        "the sweep's and contain's connections: {steps:?}"
    );
    for name in names {
        let phases: Vec<&str> = steps
            .iter()
            .filter(|s| s.2 == name)
            .map(|s| s.1.as_str())
            .collect();
        assert_eq!(phases, ["intent", "done"], "{name}: {steps:?}");
        assert!(name.starts_with("pushscan-"), "{name}");
    }
    let runs: std::collections::BTreeSet<i64> = steps.iter().map(|s| s.0).collect();
    assert_eq!(runs.len(), 1, "all under the swept run: {steps:?}");
    let left = pushscan_lab::svcctl::services(&t.lab.dir, t.lab.hosts()[0].address)
        .expect("the lab's services");
    assert!(
        left.iter().all(|s| !s.name.starts_with("pushscan-")),
        "services left: {left:?}"
    );
}
