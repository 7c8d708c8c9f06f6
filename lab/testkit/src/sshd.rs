//! A real OpenSSH `sshd` fleet on loopback for the integration tests (no mocks).
//!
//! `SshFleet::start(n)` gives `n` distinct loopback addresses (127.0.1.1, 127.0.1.2, ...; after
//! .254 the third octet steps: 127.0.2.1, ...) that all answer SSH on one shared port, with a
//! fresh ed25519 host key, an ed25519 client key authorized for the current user, and a
//! `known_hosts` file that lists the host key for every `[address]:port`.
//!
//! OpenSSH binds at most 16 listen sockets per daemon (`MAX_LISTEN_SOCKS` in sshd.c: more and it
//! dies with "Too many listen sockets"), so the fleet runs one `sshd -D` per 16 addresses. All
//! of them share the host key, the `authorized_keys` file and one log file (`sshd -E`, opened in
//! append mode by every daemon). Everything lives in a temporary directory. Dropping the fleet
//! kills every daemon and every process they spawned (sessions and the commands run in them),
//! then removes the directory.
//!
//! Password authentication works without PAM and without touching the system: when asked for,
//! each daemon runs in a private mount namespace (`unshare --mount`) where a copy of
//! `/etc/shadow`, holding a SHA-512 crypt hash of the given password for the current user, is
//! bind-mounted over `/etc/shadow`. That needs root (CAP_SYS_ADMIN), `unshare`, `mount` and
//! `openssl` (for the hash); the real `/etc/shadow` is never modified.
//!
//! A missing binary makes the calling test fail with the command that installs it; nothing is
//! skipped silently.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Message of the panic raised when `sshd` cannot be found.
pub const SSHD_MISSING: &str = "OpenSSH server not found: install it with `apt-get update && apt-get install -y --no-install-recommends openssh-server` (scripts/test does this)";

/// OpenSSH's per-daemon limit on listen sockets (`MAX_LISTEN_SOCKS`).
pub const ADDRESSES_PER_SSHD: usize = 16;

/// How long `start` waits for the daemons to listen before it gives up with the log.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How `SshFleet::start_with` builds the fleet.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    /// Number of distinct loopback addresses (hosts); at least 1.
    pub n_hosts: usize,
    /// First address; the next ones count up, skipping last octets 0 and 255, and must stay in
    /// 127.0.0.0/8.
    pub base_address: Ipv4Addr,
    /// `Some(password)`: enable `PasswordAuthentication` (and `PermitRootLogin yes`) with this
    /// password for the current user, through a private `/etc/shadow` (see the module doc).
    /// Public-key authentication with `client_key` keeps working either way.
    pub password: Option<String>,
    /// Extra `sshd_config` lines. sshd keeps the FIRST value it reads for most keywords, so these
    /// lines are placed before the harness defaults and override them; from the first `Match`
    /// line on, they go at the very end of the file. Do not set `Port`/`ListenAddress` here.
    pub extra_config: Vec<String>,
    /// `Some(name)`: log in as this existing local account instead of the user running the
    /// tests (root only: the fleet's directory is made world-readable so `sshd` can read the
    /// authorized keys as that user; private keys stay 0600). The benchmark uses an account
    /// whose login shell reads no start-up file, so a login costs what OpenSSH costs.
    pub user: Option<String>,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            n_hosts: 1,
            base_address: Ipv4Addr::new(127, 0, 1, 1),
            password: None,
            extra_config: Vec::new(),
            user: None,
        }
    }
}

impl FleetOptions {
    /// Default options for `n_hosts` hosts.
    pub fn hosts(n_hosts: usize) -> Self {
        FleetOptions {
            n_hosts,
            ..FleetOptions::default()
        }
    }
}

/// A running fleet of loopback SSH hosts served by real `sshd` processes.
pub struct SshFleet {
    /// Temporary directory holding keys, configs, pid files and the log.
    pub dir: tempfile::TempDir,
    /// The one port every address listens on.
    pub port: u16,
    /// The fleet's addresses, e.g. `127.0.1.1` .. `127.0.1.N`.
    pub addresses: Vec<String>,
    /// The user to log in as (the user running the tests, from `id -un`).
    pub user: String,
    /// ed25519 private key without passphrase, authorized for `user` (`client_key.pub` beside it).
    pub client_key: PathBuf,
    /// `known_hosts` listing the host key for every `[address]:port`.
    pub known_hosts: PathBuf,
    /// The host's public key line (`ssh-ed25519 AAAA... pushscan-test-host`).
    pub host_key_pub: String,
    /// The password accepted for `user`, when the fleet was started with one.
    pub password: Option<String>,
    /// One `sshd_config` per daemon (daemon `i` serves `addresses[16*i .. 16*i+16]`).
    pub sshd_configs: Vec<PathBuf>,
    /// The log file all daemons write to (`sshd -E`).
    pub log_file: PathBuf,
    daemons: Vec<Child>,
}

impl SshFleet {
    /// Starts `n_hosts` hosts with the default options; panics with a clear message on failure.
    pub fn start(n_hosts: usize) -> SshFleet {
        SshFleet::start_with(FleetOptions::hosts(n_hosts))
    }

    /// Starts a fleet as described by `opts`; panics with a clear message on failure.
    pub fn start_with(opts: FleetOptions) -> SshFleet {
        assert!(opts.n_hosts >= 1, "an SSH fleet needs at least one host");
        let sshd = sshd_binary();
        let keygen = client_binary("ssh-keygen");
        let ips = fleet_addresses(opts.base_address, opts.n_hosts);
        ensure_privsep_dir();

        let dir = tempfile::Builder::new()
            .prefix("pushscan-sshd-")
            .tempdir()
            .expect("cannot create a temporary directory for the sshd fleet");
        let root = dir.path().to_path_buf();

        let host_key = root.join("ssh_host_ed25519_key");
        generate_key(&keygen, &host_key, "pushscan-test-host");
        let client_key = root.join("client_ed25519");
        generate_key(&keygen, &client_key, "pushscan-test-client");
        let host_key_pub = read_text(&root.join("ssh_host_ed25519_key.pub"))
            .trim()
            .to_string();
        let authorized_keys = root.join("authorized_keys");
        fs::write(
            &authorized_keys,
            read_text(&root.join("client_ed25519.pub")),
        )
        .expect("cannot write authorized_keys");

        let user = match &opts.user {
            Some(name) => {
                use std::os::unix::fs::PermissionsExt as _;
                fs::set_permissions(&root, fs::Permissions::from_mode(0o755))
                    .expect("cannot make the fleet directory readable");
                fs::set_permissions(&authorized_keys, fs::Permissions::from_mode(0o644))
                    .expect("cannot make authorized_keys readable");
                name.clone()
            }
            None => current_user(),
        };
        let shadow = opts.password.as_deref().map(|password| {
            assert!(
                !password.is_empty(),
                "FleetOptions::password must not be empty (sshd rejects empty passwords)"
            );
            write_private_shadow(&root, &user, password)
        });

        let mut fleet = SshFleet {
            dir,
            port: 0,
            addresses: ips.iter().map(|ip| ip.to_string()).collect(),
            user,
            client_key,
            known_hosts: root.join("known_hosts"),
            host_key_pub,
            password: opts.password.clone(),
            sshd_configs: Vec::new(),
            log_file: root.join("sshd.log"),
            daemons: Vec::new(),
        };

        // The port is probed free on every address, but another process may take it before sshd
        // binds it: retry with a new port when a daemon reports a bind failure.
        let mut failures = Vec::new();
        for _attempt in 0..5 {
            fleet.port = free_port(&ips);
            fleet.write_configs(&sshd, &opts, &host_key, &authorized_keys);
            match fleet.launch(&sshd, shadow.as_deref()) {
                Ok(()) => {
                    fleet.write_known_hosts();
                    return fleet;
                }
                Err(failure) => {
                    fleet.stop();
                    failures.push(failure);
                }
            }
        }
        panic!(
            "could not start the sshd fleet: every port tried was taken:\n{}",
            failures.join("\n----\n")
        );
    }

    /// Contents of the sshd log file (all daemons), for debugging and assertions.
    pub fn sshd_log(&self) -> String {
        match fs::read(&self.log_file) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => format!("(no sshd log at {}: {e})", self.log_file.display()),
        }
    }

    /// Pids of the listening `sshd` daemons.
    pub fn daemon_pids(&self) -> Vec<u32> {
        self.daemons.iter().map(Child::id).collect()
    }

    /// The `known_hosts` line for one address of the fleet.
    pub fn known_hosts_line(&self, address: &str) -> String {
        let key: Vec<&str> = self.host_key_pub.split_whitespace().take(2).collect();
        format!("[{address}]:{} {}", self.port, key.join(" "))
    }

    /// The system `ssh` client, set up to log in to `address` as `user` with `client_key`,
    /// checking the host key strictly against `known_hosts` and never prompting. Append the
    /// remote command with `.arg(...)`.
    pub fn ssh_command(&self, address: &str) -> Command {
        let mut cmd = Command::new(client_binary("ssh"));
        cmd.args(["-F", "/dev/null", "-o", "BatchMode=yes"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .args(["-o", "GlobalKnownHostsFile=/dev/null"])
            .args(["-o", "StrictHostKeyChecking=yes"])
            .args(["-o", "IdentitiesOnly=yes"])
            .args(["-o", "LogLevel=ERROR"])
            .arg("-i")
            .arg(&self.client_key)
            .arg("-p")
            .arg(self.port.to_string())
            .arg(format!("{}@{address}", self.user))
            .stdin(Stdio::null());
        cmd
    }

    fn write_configs(
        &mut self,
        sshd: &Path,
        opts: &FleetOptions,
        host_key: &Path,
        authorized_keys: &Path,
    ) {
        let root = self.dir.path().to_path_buf();
        let split = opts
            .extra_config
            .iter()
            .position(|line| {
                line.split_whitespace()
                    .next()
                    .is_some_and(|word| word.eq_ignore_ascii_case("match"))
            })
            .unwrap_or(opts.extra_config.len());
        let (extra_head, extra_tail) = opts.extra_config.split_at(split);
        let password = opts.password.is_some();
        let penalties = supports_per_source_penalties(sshd, host_key);

        self.sshd_configs.clear();
        for (i, chunk) in self.addresses.chunks(ADDRESSES_PER_SSHD).enumerate() {
            let mut cfg = format!(
                "# sshd {i} of a pushscan test fleet, written by lab/testkit/src/sshd.rs\n"
            );
            for line in extra_head {
                cfg.push_str(line);
                cfg.push('\n');
            }
            cfg.push_str(&format!("Port {}\n", self.port));
            for address in chunk {
                cfg.push_str(&format!("ListenAddress {address}:{}\n", self.port));
            }
            cfg.push_str(&format!("HostKey {}\n", host_key.display()));
            cfg.push_str(&format!(
                "PidFile {}\n",
                root.join(format!("sshd.{i}.pid")).display()
            ));
            cfg.push_str(&format!(
                "AuthorizedKeysFile {}\n",
                authorized_keys.display()
            ));
            cfg.push_str("StrictModes no\nUsePAM no\n");
            cfg.push_str(if password {
                "PermitRootLogin yes\nPasswordAuthentication yes\n"
            } else {
                "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            });
            cfg.push_str(
                "PubkeyAuthentication yes\n\
                 KbdInteractiveAuthentication no\n\
                 Subsystem sftp internal-sftp\n\
                 MaxStartups 1000:30:1000\n\
                 MaxSessions 100\n\
                 LogLevel VERBOSE\n\
                 UseDNS no\n\
                 PrintMotd no\n",
            );
            if penalties {
                cfg.push_str("PerSourcePenalties no\n");
            }
            for line in extra_tail {
                cfg.push_str(line);
                cfg.push('\n');
            }
            let path = root.join(format!("sshd_config.{i}"));
            fs::write(&path, cfg).expect("cannot write sshd_config");
            self.sshd_configs.push(path);
        }

        let check = Command::new(sshd)
            .arg("-t")
            .arg("-f")
            .arg(&self.sshd_configs[0])
            .output()
            .expect("cannot run `sshd -t`");
        if !check.status.success() {
            panic!(
                "`sshd -t` rejects the generated config {}:\n{}\n--- config ---\n{}",
                self.sshd_configs[0].display(),
                String::from_utf8_lossy(&check.stderr),
                read_text(&self.sshd_configs[0])
            );
        }
    }

    /// Starts one daemon per config and waits until every address listens. `Err` means a bind
    /// failure (port taken): the caller retries with another port.
    fn launch(&mut self, sshd: &Path, shadow: Option<&Path>) -> Result<(), String> {
        let _ = fs::remove_file(&self.log_file);
        for cfg in self.sshd_configs.clone() {
            let log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log_file)
                .expect("cannot open the sshd log file");
            let mut cmd = match shadow {
                None => {
                    let mut cmd = Command::new(sshd);
                    cmd.arg("-D").arg("-e").arg("-f").arg(&cfg);
                    cmd.arg("-E").arg(&self.log_file);
                    cmd
                }
                Some(shadow) => {
                    // unshare execs sh, which execs sshd: the child's pid is sshd's pid.
                    let mut cmd = Command::new(helper_binary("unshare", "util-linux"));
                    cmd.args(["--mount", "--propagation", "private", "/bin/sh", "-c"])
                        .arg(
                            "\"$1\" --bind \"$2\" /etc/shadow || { echo \"cannot bind-mount a \
                             private /etc/shadow (password auth needs root with CAP_SYS_ADMIN)\" \
                             >&2; exit 70; }; exec \"$3\" -D -e -f \"$4\" -E \"$5\"",
                        )
                        .arg("sh")
                        .arg(helper_binary("mount", "mount"))
                        .arg(shadow)
                        .arg(sshd)
                        .arg(&cfg)
                        .arg(&self.log_file);
                    cmd
                }
            };
            let stdout = log.try_clone().expect("cannot duplicate the log handle");
            cmd.stdin(Stdio::null()).stdout(stdout).stderr(log);
            let child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", sshd.display()));
            self.daemons.push(child);
        }

        let first = self.addresses.first().cloned().unwrap_or_default();
        let last = self.addresses.last().cloned().unwrap_or_default();
        let bind_failure = format!("Bind to port {} on ", self.port);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let log = self.sshd_log();
            if log.contains(&bind_failure) {
                return Err(format!("port {} was taken; sshd log:\n{log}", self.port));
            }
            for daemon in &mut self.daemons {
                if let Ok(Some(status)) = daemon.try_wait() {
                    if log.contains("Address already in use") {
                        return Err(format!("port {} was taken; sshd log:\n{log}", self.port));
                    }
                    panic!(
                        "sshd (pid {}) exited early with {status}; sshd log:\n{log}",
                        daemon.id()
                    );
                }
            }
            let all_listening = self.addresses.iter().all(|address| {
                log.contains(&format!(
                    "Server listening on {address} port {}.",
                    self.port
                ))
            });
            if all_listening && self.accepts(&first) && self.accepts(&last) {
                return Ok(());
            }
            if Instant::now() > deadline {
                panic!(
                    "the sshd fleet did not listen on {first} and {last} port {} within {:?}; sshd log:\n{log}",
                    self.port, READY_TIMEOUT
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn accepts(&self, address: &str) -> bool {
        let Ok(ip) = address.parse::<Ipv4Addr>() else {
            return false;
        };
        let target = SocketAddr::V4(SocketAddrV4::new(ip, self.port));
        TcpStream::connect_timeout(&target, Duration::from_secs(1)).is_ok()
    }

    fn write_known_hosts(&self) {
        let mut text = String::new();
        for address in &self.addresses {
            text.push_str(&self.known_hosts_line(address));
            text.push('\n');
        }
        fs::write(&self.known_hosts, text).expect("cannot write known_hosts");
    }

    /// Kills the daemons and everything they spawned, and reaps the daemons.
    fn stop(&mut self) {
        let roots = self.daemon_pids();
        // Collect the trees while the daemons are alive: once a daemon dies its children are
        // re-parented and can no longer be found from it.
        let descendants = process_descendants(&roots);
        for daemon in &mut self.daemons {
            let _ = daemon.kill();
        }
        kill_pids(&descendants);
        for daemon in &mut self.daemons {
            let _ = daemon.wait();
        }
        self.daemons.clear();
    }
}

impl Drop for SshFleet {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `sshd` binary (absolute path, as sshd requires), or a panic saying how to install it.
pub fn sshd_binary() -> PathBuf {
    find_binary("sshd", &["/usr/sbin/sshd"]).unwrap_or_else(|| panic!("{SSHD_MISSING}"))
}

/// An OpenSSH client tool (`ssh`, `sftp`, `scp`, `ssh-keygen`), or a panic saying how to
/// install it.
pub fn client_binary(name: &str) -> PathBuf {
    find_binary(name, &[]).unwrap_or_else(|| {
        panic!(
            "OpenSSH client tool `{name}` not found: install it with `apt-get update && \
             apt-get install -y --no-install-recommends openssh-client` (scripts/test does this)"
        )
    })
}

fn helper_binary(name: &str, package: &str) -> PathBuf {
    find_binary(name, &[]).unwrap_or_else(|| {
        panic!(
            "`{name}` not found: install it with `apt-get update && apt-get install -y \
             --no-install-recommends {package}` (scripts/test does this)"
        )
    })
}

fn find_binary(name: &str, preferred: &[&str]) -> Option<PathBuf> {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    let from_path = std::env::split_paths(&path_var).map(|dir| dir.join(name));
    let fallback = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name));
    preferred
        .iter()
        .map(PathBuf::from)
        .chain(from_path)
        .chain(fallback)
        .find(|candidate| {
            candidate.is_absolute()
                && fs::metadata(candidate)
                    .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                    .unwrap_or(false)
        })
}

/// `n` loopback addresses from `base`, skipping last octets 0 and 255.
pub fn fleet_addresses(base: Ipv4Addr, n: usize) -> Vec<Ipv4Addr> {
    let mut out = Vec::with_capacity(n);
    let mut current = u32::from(base);
    while out.len() < n {
        let ip = Ipv4Addr::from(current);
        assert!(
            ip.octets()[0] == 127,
            "a fleet of {n} hosts from {base} does not fit in 127.0.0.0/8"
        );
        if !matches!(ip.octets()[3], 0 | 255) {
            out.push(ip);
        }
        current += 1;
    }
    out
}

/// sshd refuses to start without its privilege separation directory.
fn ensure_privsep_dir() {
    let dir = Path::new("/run/sshd");
    if dir.is_dir() {
        return;
    }
    if let Err(e) = fs::create_dir_all(dir) {
        panic!(
            "sshd needs its privilege separation directory {}: cannot create it ({e}); run the \
             tests as root or create it with `mkdir -p /run/sshd`",
            dir.display()
        );
    }
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
}

fn generate_key(keygen: &Path, path: &Path, comment: &str) {
    let out = Command::new(keygen)
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", keygen.display()));
    assert!(
        out.status.success(),
        "ssh-keygen failed for {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read_text(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The user running the tests: `id -un`, else `$USER` / `$LOGNAME`.
pub fn current_user() -> String {
    if let Ok(out) = Command::new("id").arg("-un").output() {
        let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !name.is_empty() {
            return name;
        }
    }
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.is_empty()))
        .expect("cannot tell the current user: `id -un` failed and USER/LOGNAME are unset")
}

/// Whether this sshd knows `PerSourcePenalties` (OpenSSH 9.8+). It is turned off when known:
/// tests that provoke many failed logins from 127.0.0.1 would otherwise be penalised.
fn supports_per_source_penalties(sshd: &Path, host_key: &Path) -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        Command::new(sshd)
            .args(["-t", "-f", "/dev/null", "-o", "PerSourcePenalties=no", "-h"])
            .arg(host_key)
            .stdin(Stdio::null())
            .output()
            .map(|out| {
                // Decide on the keyword alone: any other complaint shows up in the full
                // `sshd -t` check of the generated config.
                out.status.success()
                    || !String::from_utf8_lossy(&out.stderr).contains("PerSourcePenalties")
            })
            .unwrap_or(false)
    })
}

/// Writes a copy of `/etc/shadow` where `user` has `password`; returns its path.
fn write_private_shadow(root: &Path, user: &str, password: &str) -> PathBuf {
    let shadow = fs::read_to_string("/etc/shadow").unwrap_or_else(|e| {
        panic!(
            "password authentication in the test fleet needs root (cannot read /etc/shadow: {e})"
        )
    });
    let mut openssl = Command::new(helper_binary("openssl", "openssl"))
        .args(["passwd", "-6", "-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run openssl");
    openssl
        .stdin
        .take()
        .expect("openssl stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("cannot write to openssl");
    let out = openssl.wait_with_output().expect("openssl failed");
    assert!(
        out.status.success(),
        "openssl passwd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        hash.starts_with("$6$"),
        "unexpected openssl passwd output: {hash}"
    );

    let today = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(1);
    let mut found = false;
    let mut text = String::new();
    for line in shadow.lines() {
        if line.split(':').next() == Some(user) {
            found = true;
            let mut fields: Vec<String> = line.split(':').map(str::to_string).collect();
            fields.resize(9, String::new());
            fields[1] = hash.clone();
            fields[2] = today.to_string(); // last change: today, so the password is not expired
            fields[3] = String::new(); // no minimum age
            fields[4] = String::new(); // no maximum age
            fields[7] = String::new(); // account never expires
            text.push_str(&fields.join(":"));
        } else {
            text.push_str(line);
        }
        text.push('\n');
    }
    assert!(found, "user {user} has no entry in /etc/shadow");
    let path = root.join("shadow");
    fs::write(&path, text).expect("cannot write the private shadow file");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
        .expect("cannot chmod the private shadow file");
    path
}

/// A port free on every address (probed by binding it; a small race remains).
fn free_port(ips: &[Ipv4Addr]) -> u16 {
    for _ in 0..50 {
        let port = {
            let probe = TcpListener::bind("127.0.0.1:0").expect("cannot bind 127.0.0.1:0");
            probe.local_addr().expect("local_addr").port()
        };
        let held: Result<Vec<TcpListener>, _> = ips
            .iter()
            .map(|ip| TcpListener::bind(SocketAddrV4::new(*ip, port)))
            .collect();
        if held.is_ok() {
            return port;
        }
    }
    panic!("found no port free on all {} fleet addresses", ips.len());
}

/// All descendants of `roots` (not the roots themselves), from `/proc/*/stat`.
pub fn process_descendants(roots: &[u32]) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may contain spaces and parentheses.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            if let Some(ppid) = rest
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u32>().ok())
            {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = Vec::new();
    let mut stack: Vec<u32> = roots.to_vec();
    while let Some(pid) = stack.pop() {
        for &child in children.get(&pid).map(Vec::as_slice).unwrap_or(&[]) {
            if !out.contains(&child) && !roots.contains(&child) {
                out.push(child);
                stack.push(child);
            }
        }
    }
    out
}

/// SIGKILL the given pids (the shell's builtin `kill`: no procps needed).
fn kill_pids(pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("/bin/sh")
        .arg("-c")
        .arg("kill -KILL \"$@\" 2>/dev/null; exit 0")
        .arg("sh")
        .args(pids.iter().map(u32::to_string))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
