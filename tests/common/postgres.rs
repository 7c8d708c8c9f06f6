//! A real PostgreSQL server for the store tests: `initdb` + `pg_ctl` into a temporary
//! directory, run as an unprivileged user (PostgreSQL refuses to run as root), listening only
//! on 127.0.0.1 on a free port, with TLS from a test CA made with openssl (server certificate
//! for 127.0.0.1 and localhost) and password (scram-sha-256) authentication over TCP. The
//! server is stopped (`pg_ctl stop -m immediate`) and its directory removed on drop.
//!
//! Needs Debian's `postgresql` (its programs are in /usr/lib/postgresql/VERSION/bin, not on
//! PATH) and openssl; a missing PostgreSQL fails the test with the install command.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The role the tests connect as (the cluster's superuser).
pub const ROLE: &str = "pushscan";

pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    data: PathBuf,
    /// The directory of the server's Unix socket (trust auth, for test setup only).
    socket_dir: PathBuf,
    pub port: u16,
    /// The CA that signed the server's certificate.
    pub ca: PathBuf,
    /// Another CA, that signed nothing the server shows.
    pub wrong_ca: PathBuf,
    pub password: String,
    /// Who runs the server: `nobody` when the tests run as root, else the current user.
    run_as: Option<&'static str>,
}

/// The directory of PostgreSQL's server programs: the newest /usr/lib/postgresql/*/bin, else
/// wherever `initdb` is on PATH.
fn server_bin() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return bin;
    }
    if let Ok(o) = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
    {
        let p = String::from_utf8_lossy(&o.stdout).trim().to_string();
        if o.status.success() && !p.is_empty() {
            if let Some(dir) = Path::new(&p).parent() {
                return dir.to_path_buf();
            }
        }
    }
    panic!(
        "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb, no initdb on PATH): \
         apt-get install --no-install-recommends postgresql (scripts/test installs it)"
    );
}

fn run(cmd: &mut Command, what: &str) -> Output {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        o.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn openssl(dir: &Path, args: &[&str], what: &str) {
    run(Command::new("openssl").current_dir(dir).args(args), what);
}

/// A CA (`NAME.pem`, `NAME.key`) in `dir`.
fn make_ca(dir: &Path, name: &str) -> PathBuf {
    let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "2",
            "-subj",
            &format!("/CN=pushscan test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        "openssl: test CA",
    );
    dir.join(pem)
}

impl Postgres {
    /// Starts a new server (see the module doc).
    pub fn start() -> Postgres {
        let bin = server_bin();
        let dir = tempfile::Builder::new()
            .prefix("pushscan-pg")
            .tempdir()
            .expect("tempdir");
        let root = dir.path();
        let run_as = (unsafe { libc::geteuid() } == 0).then_some("nobody");
        // The server's user must reach its data dir and socket dir through this one.
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).expect("chmod");

        let ca = make_ca(root, "ca");
        let wrong_ca = make_ca(root, "wrong-ca");
        std::fs::write(
            root.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write server.ext");
        openssl(
            root,
            &[
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
                "/CN=localhost",
            ],
            "openssl: server key",
        );
        openssl(
            root,
            &[
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
                "server.crt",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
            "openssl: server certificate",
        );

        let data = root.join("data");
        let socket_dir = root.join("socket");
        let password = format!("pw-{:016x}", fastrand::u64(..));
        let pwfile = root.join("pwfile");
        std::fs::write(&pwfile, format!("{password}\n")).expect("write pwfile");
        std::fs::create_dir(&socket_dir).expect("socket dir");
        std::fs::create_dir(&data).expect("data dir");
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let key = root.join("server.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let owned = [&pwfile, &socket_dir, &data, &key];
        if let Some(user) = run_as {
            let (uid, gid) = user_ids(user);
            for p in owned {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).expect("chown");
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let pg = Postgres {
            dir,
            bin,
            data,
            socket_dir,
            port,
            ca,
            wrong_ca,
            password,
            run_as,
        };
        pg.as_server(&[
            "initdb",
            "-D",
            &pg.data.to_string_lossy(),
            "-U",
            ROLE,
            "--pwfile",
            &pwfile.to_string_lossy(),
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        let _ = std::fs::remove_file(&pwfile);
        let root = pg.dir.path();
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\nfsync = off\n\
             password_encryption = 'scram-sha-256'\n",
            pg.socket_dir.display(),
            root.join("server.crt").display(),
            root.join("server.key").display(),
        );
        append(&pg.data.join("postgresql.conf"), &conf);
        // TLS and a password over TCP; the socket (in a directory only the server's user and
        // root reach) only for the tests' own setup.
        std::fs::write(
            pg.data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
        )
        .expect("write pg_hba.conf");
        pg.as_server(&[
            "pg_ctl",
            "-D",
            &pg.data.to_string_lossy(),
            "-l",
            &pg.data.join("server.log").to_string_lossy(),
            "-w",
            "start",
        ]);
        pg
    }

    /// Runs one of the server programs as the server's user.
    fn as_server(&self, args: &[&str]) -> Output {
        let prog = self.bin.join(args[0]);
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&prog);
                c
            }
            None => Command::new(&prog),
        };
        cmd.args(&args[1..]).current_dir(self.dir.path());
        run(&mut cmd, args[0])
    }

    /// Runs `sql` in database `db` through the server's socket; returns psql's unaligned,
    /// tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let psql = self.bin.join("psql");
        let o = run(
            Command::new(&psql)
                .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
                .arg(&self.socket_dir)
                .args([
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    ROLE,
                    "-d",
                    db,
                    "-c",
                    sql,
                ]),
            "psql",
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// A new, empty database.
    pub fn create_db(&self, name: &str) {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
    }

    /// `postgres://pushscan@127.0.0.1:PORT/DB?sslmode=verify-full&sslrootcert=CA` plus `extra`
    /// query parameters (`&k=v...`).
    pub fn url(&self, db: &str, extra: &str) -> String {
        format!(
            "postgres://{ROLE}@127.0.0.1:{}/{db}?sslmode=verify-full&sslrootcert={}{extra}",
            self.port,
            self.ca.display()
        )
    }

    /// A file holding the password, with `mode`.
    pub fn password_file(&self, mode: u32) -> PathBuf {
        let p = self
            .dir
            .path()
            .join(format!("store-password-{mode:o}-{:x}", fastrand::u32(..)));
        std::fs::write(&p, format!("{}\n", self.password)).expect("write password file");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        p
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data.to_string_lossy().into_owned();
        let prog = self.bin.join("pg_ctl");
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&prog);
                c
            }
            None => Command::new(&prog),
        };
        let _ = cmd
            .args(["-D", &data, "-m", "immediate", "stop"])
            .current_dir(self.dir.path())
            .output();
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open for append");
    f.write_all(text.as_bytes()).expect("append");
}

/// The uid and gid of `user`.
fn user_ids(user: &str) -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let o = run(Command::new("id").args([flag, user]), "id");
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .expect("numeric id")
    };
    (id("-u"), id("-g"))
}
