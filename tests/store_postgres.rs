//! The PostgreSQL store against a real PostgreSQL (tests/common/postgres.rs: initdb + pg_ctl
//! as an unprivileged user, TLS from a test CA, scram-sha-256 passwords): the store
//! conformance suite (the same functions the SQLite unit tests run) and the same answers as
//! SQLite to every reader call; a sweep, report, runs, history and a resume after kill -9
//! through `--store postgres://...`; each sslmode against a certificate for another name; a
//! password prompt on a terminal; and the refusals (a password in the URL, a password file
//! others may read, the wrong CA, a database written by a newer pushscan).
//!
//! Needs root or a user PostgreSQL accepts, Debian's `postgresql` and openssl; `scripts/test`
//! installs them.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::postgres::Postgres;
use pushscan::store::{self, conformance, Location, PasswordSource, Store, StoreReader};
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

type Factories = (
    Box<dyn Fn() -> anyhow::Result<Arc<dyn Store>>>,
    Box<dyn Fn() -> anyhow::Result<Box<dyn StoreReader>>>,
);

/// The store in a new database `db` of `pg`, its password from a 0600 file.
fn pg_store(pg: &Postgres, db: &str) -> Factories {
    pg.create_db(db);
    let password = PasswordSource {
        file: Some(pg.password_file(0o600)),
        env: None,
    };
    let at = Location::parse(&pg.url(db, ""), password).expect("store URL");
    let at2 = at.clone();
    (
        Box::new(move || store::open_at(&at)),
        Box::new(move || store::open_reader_at(&at2)),
    )
}

fn sqlite_store(dir: &Path) -> Factories {
    let at = Location::Sqlite(dir.to_path_buf());
    let at2 = at.clone();
    (
        Box::new(move || store::open_at(&at)),
        Box::new(move || store::open_reader_at(&at2)),
    )
}

#[tokio::test]
async fn the_conformance_suite_passes_and_postgres_answers_as_sqlite_does() {
    let pg = Postgres::start();

    let (w, r) = pg_store(&pg, "steps");
    conformance::a_step_never_started_reads_back_as_not_started(w, r)
        .await
        .expect("steps");
    let (w, r) = pg_store(&pg, "readback");
    conformance::what_the_writer_writes_the_reader_reads_back(w, r)
        .await
        .expect("read back");

    let (w, r) = pg_store(&pg, "everything");
    let from_pg = conformance::every_reader_call(w, r)
        .await
        .expect("every reader call on PostgreSQL");
    let dir = tempfile::tempdir().unwrap();
    let (w, r) = sqlite_store(dir.path());
    let from_sqlite = conformance::every_reader_call(w, r)
        .await
        .expect("every reader call on SQLite");
    let calls = from_pg.as_object().map(|m| m.len()).unwrap_or(0);
    println!("reader calls compared between PostgreSQL and SQLite: {calls}");
    if from_pg != from_sqlite {
        let (p, s) = (
            from_pg.as_object().unwrap(),
            from_sqlite.as_object().unwrap(),
        );
        let differ: Vec<_> = p.keys().filter(|k| p.get(*k) != s.get(*k)).collect();
        panic!(
            "PostgreSQL and SQLite answer differently: {differ:?}\n--- postgres\n{:#}\n--- sqlite\n{:#}",
            Value::Object(differ.iter().map(|k| ((*k).clone(), p[*k].clone())).collect()),
            Value::Object(differ.iter().map(|k| ((*k).clone(), s[*k].clone())).collect()),
        );
    }

    // Opening again migrates nothing: the schema version stays, each migration applied once.
    let before = pg.psql(
        "everything",
        "SELECT value FROM meta WHERE key='schema_version'",
    );
    let (w, _) = pg_store(&pg, "again");
    drop(w().expect("open a new database"));
    let at = Location::parse(&pg.url("everything", ""), pw_file(&pg)).unwrap();
    store::open_at(&at).expect("reopen").close();
    let after = pg.psql(
        "everything",
        "SELECT value FROM meta WHERE key='schema_version'",
    );
    assert_eq!(before, after);
    assert_eq!(before, "1");
}

/// An awaited intent is committed when it returns (another connection sees it), and intents
/// awaited at once share commits (group commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_awaited_intent_is_committed_and_concurrent_intents_share_commits() {
    let pg = Postgres::start();
    let (w, _) = pg_store(&pg, "intents");
    let store = w().expect("open");
    let run = store
        .start_run(conformance::test_run(&["h"], "test"))
        .await
        .expect("run");
    store
        .intent(run, "h", "push", "/w/x")
        .await
        .expect("intent");
    // Seen from another connection while the writer is still open: committed.
    assert_eq!(
        pg.psql("intents", "SELECT COUNT(*) FROM steps WHERE phase='intent'"),
        "1"
    );

    const N: usize = 400;
    let mut tasks = Vec::new();
    for i in 0..N {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.intent(run, "h", "run", &format!("/w/{i}")).await
        }));
    }
    for t in tasks {
        t.await.expect("task").expect("intent");
    }
    // Each row's xmin is the transaction that inserted it.
    let used: usize = pg
        .psql(
            "intents",
            "SELECT COUNT(DISTINCT xmin::text) FROM steps WHERE step='run'",
        )
        .parse()
        .expect("a count");
    println!("{N} concurrent awaited intents: committed in {used} transactions");
    assert!(
        used < N,
        "{used} transactions for {N} intents: no group commit"
    );
    assert_eq!(
        pg.psql("intents", "SELECT COUNT(*) FROM steps WHERE step='run'"),
        N.to_string()
    );
    store.close();
}

fn pw_file(pg: &Postgres) -> PasswordSource {
    PasswordSource {
        file: Some(pg.password_file(0o600)),
        env: None,
    }
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pushscan"));
    c.env_remove("PUSHSCAN_STORE")
        .env_remove("PGPASSWORD")
        .env_remove("PUSHSCAN_STORE_PASSWORD_FILE")
        .stdin(Stdio::null());
    c
}

fn text(o: &Output) -> String {
    common::text(o)
}

fn sha256_hex(bytes: &[u8]) -> String {
    common::sha256_hex(bytes)
}

/// emocheck-sim padded to 1 MiB (so a host takes long enough to be killed in flight).
fn playbook(dir: &Path) -> PathBuf {
    let mut bytes =
        std::fs::read(Path::new(ROOT).join("playbooks/checkers/emocheck-sim.sh")).unwrap();
    if !bytes.ends_with(b"\n") {
        bytes.push(b'\n');
    }
    while bytes.len() < 1 << 20 {
        bytes.extend_from_slice(b"# padding padding padding padding padding padding padding\n");
    }
    let checker = dir.join("checker.sh");
    std::fs::write(&checker, &bytes).unwrap();
    let pin = sha256_hex(&bytes);
    let pb = format!(
        "name: store\nchecker:\n  path: {}\n  sha256: \"{pin}\"\n  platform: linux\n  remote_name: emocheck-sim.sh\n\
         work_dir: \"{{{{ pushscan_dir }}}}\"\nrun_dir: \"{{{{ work_dir }}}}/reports\"\n\
         args: [\"/quiet\", \"/output\", \"{{{{ run_dir }}}}\", \"/host\", \"{{{{ inventory_hostname }}}}\", \"/scenario\", \"{{{{ scenario | default('clean') }}}}\"]\n\
         timeout: 20s\nresults:\n  glob: \"*_emocheck.*\"\n  parser: emocheck\n  max_file_size: 1MiB\n",
        checker.display()
    );
    let path = dir.join("pb.yml");
    std::fs::write(&path, pb).unwrap();
    path
}

fn inventory(dir: &Path, hosts: &[(&str, &str)]) -> PathBuf {
    let mut inv = String::from("all:\n  children:\n    lab:\n      hosts:\n");
    for (name, scenario) in hosts {
        inv.push_str(&format!(
            "        {name}:\n          ansible_connection: local\n          scenario: {scenario}\n          pushscan_dir: {}\n",
            dir.join("hosts").join(name).display()
        ));
    }
    let path = dir.join("inv.yml");
    std::fs::write(&path, inv).unwrap();
    path
}

/// `pushscan ARGS --store URL --state-dir DIR/state`, the password from a 0600 file.
fn with_store(pg: &Postgres, url: &str, dir: &Path, args: &[&str]) -> Command {
    let mut c = bin();
    c.args(args)
        .args(["--store", url, "--state-dir"])
        .arg(dir.join("state"))
        .env("PUSHSCAN_STORE_PASSWORD_FILE", pg.password_file(0o600));
    c
}

fn json_of(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

#[test]
fn sweep_report_runs_history_and_resume_after_kill_9_through_a_postgres_store() {
    let pg = Postgres::start();
    pg.create_db("fleet");
    let url = pg.url("fleet", "");
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let pb = playbook(dir);
    let inv = inventory(
        dir,
        &[
            ("h1", "detected"),
            ("h2", "slow"),
            ("h3", "slow"),
            ("h4", "clean"),
        ],
    );
    let run = |args: &[&str]| {
        with_store(&pg, &url, dir, args)
            .output()
            .expect("run pushscan")
    };
    let sweep_args = |inv: &Path, pb: &Path| -> Vec<String> {
        vec![
            "sweep".into(),
            "-i".into(),
            inv.display().to_string(),
            "-p".into(),
            pb.display().to_string(),
            "--progress".into(),
            "quiet".into(),
            "--forks".into(),
            "1".into(),
        ]
    };
    let args = sweep_args(&inv, &pb);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // A whole sweep: one detection.
    let out = run(&args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // The journal is in PostgreSQL, not in the state dir.
    assert!(!dir.join("state").join("journal.sqlite").exists());
    assert_eq!(
        pg.psql(
            "fleet",
            "SELECT class FROM hosts WHERE run_id=1 ORDER BY seq"
        ),
        "detected\nnot_detected\nnot_detected\nnot_detected"
    );

    let out = run(&["report", "--format", "json", "--run", "1"]);
    // The run's exit code: a detection.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let rep = json_of(&out);
    let classes: Vec<_> = rep["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            format!(
                "{}={}",
                h["host"].as_str().unwrap(),
                h["status"].as_str().unwrap_or("?")
            )
        })
        .collect();
    assert_eq!(
        classes,
        [
            "h1=detected",
            "h2=not_detected",
            "h3=not_detected",
            "h4=not_detected"
        ],
        "{rep:#}"
    );
    let out = run(&["runs", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let runs = json_of(&out);
    assert_eq!(runs[0]["id"], 1, "{runs:#}");
    assert_eq!(runs[0]["complete"], true, "{runs:#}");
    let out = run(&["history", "h1", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let history = json_of(&out).to_string();
    assert!(history.contains("detected"), "{history}");

    // A second sweep, killed with -9 while a host is in flight, then resumed.
    let mut child = with_store(&pg, &url, dir, &args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let in_flight = (0..600).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        pg.psql(
            "fleet",
            "SELECT COUNT(*) FROM hosts WHERE run_id=2 AND state='running' AND seq > 0",
        ) != "0"
    });
    assert!(in_flight, "the second sweep started a host after the first");
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
    let left = pg.psql(
        "fleet",
        "SELECT COUNT(*) FROM hosts WHERE run_id=2 AND (state<>'done' OR class IS NULL)",
    );
    println!("hosts without a result after kill -9: {left}");
    assert_ne!(left, "0");
    assert_eq!(
        pg.psql("fleet", "SELECT status FROM runs WHERE id=2"),
        "running"
    );

    let out = run(&["resume", "2", "--progress", "quiet"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = run(&["runs", "--json"]);
    let runs = json_of(&out);
    assert_eq!(runs[0]["id"], 2, "{runs:#}");
    assert_eq!(runs[0]["status"], "finished", "{runs:#}");
    assert_eq!(runs[0]["complete"], true, "{runs:#}");
    assert_eq!(
        pg.psql(
            "fleet",
            "SELECT class FROM hosts WHERE run_id=2 ORDER BY seq"
        ),
        "detected\nnot_detected\nnot_detected\nnot_detected"
    );
    assert_eq!(
        pg.psql(
            "fleet",
            "SELECT COUNT(*) FROM steps WHERE run_id=2 AND step='resume'"
        ),
        "1"
    );
    assert_eq!(pg.psql("fleet", "SELECT COUNT(*) FROM leases"), "0");
    // A report of the resumed run reads the same store.
    let out = run(&["report", "--format", "json", "--run", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(json_of(&out)["hosts"].as_array().map(Vec::len), Some(4));
}

#[test]
fn refusals_password_in_url_readable_password_file_wrong_ca_newer_schema() {
    let pg = Postgres::start();
    pg.create_db("r");
    let dir = tempfile::tempdir().unwrap();

    // A password in the URL: refused before any connection, and not echoed.
    let bad = format!(
        "postgres://pushscan:{}@127.0.0.1:{}/r",
        pg.password, pg.port
    );
    let out = bin().args(["runs", "--store", &bad]).output().unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PUSHSCAN_STORE_PASSWORD_FILE"), "{err}");
    assert!(!err.contains(&pg.password), "{err}");
    // The same through the environment.
    let out = bin()
        .args(["runs"])
        .env("PUSHSCAN_STORE", &bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));

    // A password file group or others may read.
    let readable = pg.password_file(0o644);
    let out = bin()
        .args(["runs", "--store", &pg.url("r", "")])
        .env("PUSHSCAN_STORE_PASSWORD_FILE", &readable)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mode 0644"), "{err}");
    let at = Location::parse(
        &pg.url("r", &format!("&passfile={}", readable.display())),
        PasswordSource::default(),
    )
    .unwrap();
    let e = format!("{:#}", store::open_at(&at).err().expect("refused"));
    assert!(e.contains("mode 0644"), "{e}");

    // Another user's password file (mode 0600 or not).
    if unsafe { libc::geteuid() } == 0 {
        let foreign = pg.password_file(0o600);
        std::os::unix::fs::chown(&foreign, Some(65534), None).expect("chown to nobody");
        let at = Location::parse(
            &pg.url("r", ""),
            PasswordSource {
                file: Some(foreign),
                env: None,
            },
        )
        .unwrap();
        let e = format!("{:#}", store::open_at(&at).err().expect("refused"));
        assert!(e.contains("belongs to uid 65534"), "{e}");
    }

    // verify-full against a CA that did not sign the server's certificate.
    let wrong = format!(
        "postgres://pushscan@127.0.0.1:{}/r?sslmode=verify-full&sslrootcert={}",
        pg.port,
        pg.wrong_ca.display()
    );
    let e = format!(
        "{:#}",
        store::open_at(&Location::parse(&wrong, pw_file(&pg)).unwrap())
            .err()
            .expect("wrong CA refused")
    );
    println!("wrong CA: {e}");
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    // The certificate names 127.0.0.1 and localhost, not the name asked for: verify-full
    // refuses, verify-ca (the chain only) and require (encryption only) connect.
    let misnamed = |mode: &str, ca: bool| {
        let mut u = format!(
            "postgres://pushscan@db.invalid:{}/r?hostaddr=127.0.0.1&sslmode={mode}",
            pg.port
        );
        if ca {
            u.push_str(&format!("&sslrootcert={}", pg.ca.display()));
        }
        let at = Location::parse(&u, pw_file(&pg)).unwrap();
        store::open_reader_at(&at).err().map(|e| format!("{e:#}"))
    };
    let e = misnamed("verify-full", true).expect("a name mismatch refused");
    assert!(e.contains("not valid for name"), "{e}");
    for (mode, ca) in [("verify-ca", true), ("require", false)] {
        // Connected: the database simply has no schema yet.
        let e = misnamed(mode, ca).expect("no store yet");
        assert!(e.contains("no pushscan store"), "{mode}: {e}");
    }
    // Without TLS the server (hostssl only) turns the connection away.
    let plain = format!(
        "postgres://pushscan@127.0.0.1:{}/r?sslmode=disable",
        pg.port
    );
    let e = store::open_reader_at(&Location::parse(&plain, pw_file(&pg)).unwrap())
        .err()
        .map(|e| format!("{e:#}"))
        .expect("refused without TLS");
    assert!(e.contains("pg_hba.conf"), "{e}");

    // No password at all, no terminal: says where to put it.
    let out = bin()
        .args(["runs", "--store", &pg.url("r", "")])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("PUSHSCAN_STORE_PASSWORD_FILE"),
        "{}",
        text(&out)
    );
    // PGPASSWORD works (and the sslmode=verify-ca path with the right CA).
    let out = bin()
        .args([
            "runs",
            "--store",
            &pg.url("r", "").replace("verify-full", "verify-ca"),
        ])
        .env("PGPASSWORD", &pg.password)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no pushscan store"), "{}", text(&out));

    // A database written by a newer pushscan: refused, and left as it was.
    let at = Location::parse(&pg.url("r", ""), pw_file(&pg)).unwrap();
    store::open_at(&at).expect("create the schema").close();
    pg.psql("r", "UPDATE meta SET value='99' WHERE key='schema_version'");
    let tables = "SELECT string_agg(table_name, ',' ORDER BY table_name) FROM \
                  information_schema.tables WHERE table_schema='public'";
    let before = pg.psql("r", tables);
    for e in [
        store::open_at(&at).err().map(|e| format!("{e:#}")),
        store::open_reader_at(&at).err().map(|e| format!("{e:#}")),
    ] {
        let e = e.expect("a newer schema is refused");
        assert!(e.contains("newer pushscan"), "{e}");
    }
    let out = with_store(&pg, &pg.url("r", ""), dir.path(), &["runs"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(74), "{}", text(&out));
    assert_eq!(
        pg.psql("r", "SELECT value FROM meta WHERE key='schema_version'"),
        "99"
    );
    assert_eq!(pg.psql("r", tables), before);
}

/// Without a password file or PGPASSWORD, on a terminal: one prompt for the whole sweep
/// (its writer and readers connect separately), and the typed password is used.
#[test]
fn on_a_terminal_the_password_is_asked_once_per_command() {
    let pg = Postgres::start();
    pg.create_db("tty");
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let pb = playbook(dir);
    let inv = inventory(dir, &[("t1", "clean"), ("t2", "clean")]);
    // pushscan on a pseudo-terminal: the password typed at each prompt, everything the
    // terminal received captured.
    let script = r#"
import os, pty, sys, time, select, termios
pw = os.environ.pop("TYPED").encode()
argv = sys.argv[1:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)
out = b""
typed = 0
deadline = time.time() + 120
while time.time() < deadline:
    r, _, _ = select.select([fd], [], [], 0.1)
    if r:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        out += data
    # Typed once the prompt has turned echo off (as a person would, after reading it); the
    # pty's settings are shared by both ends.
    if out.count(b"Password for") > typed and not termios.tcgetattr(fd)[3] & termios.ECHO:
        os.write(fd, pw + b"\n")
        typed += 1
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
sys.stderr.write("EXIT %d PROMPTS %d\n" % (os.waitstatus_to_exitcode(status), typed))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_pushscan"))
        .args(["sweep", "-i"])
        .arg(&inv)
        .arg("-p")
        .arg(&pb)
        .args([
            "--progress",
            "quiet",
            "--store",
            &pg.url("tty", ""),
            "--state-dir",
        ])
        .arg(dir.join("state"))
        .env_remove("PGPASSWORD")
        .env_remove("PUSHSCAN_STORE_PASSWORD_FILE")
        .env("TYPED", &pg.password)
        .output()
        .expect("python3 (scripts/test installs it)");
    let err = String::from_utf8_lossy(&out.stderr);
    println!("{}", err.trim());
    assert!(err.contains("EXIT 0 PROMPTS 1"), "{}", text(&out));
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(
        !screen.contains(&pg.password),
        "the typed password is not echoed"
    );
    assert_eq!(
        pg.psql("tty", "SELECT status FROM runs WHERE id=1"),
        "finished"
    );
}
