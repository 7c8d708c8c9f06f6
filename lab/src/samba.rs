//! The SMB side of the lab: ONE real Samba `smbd` (the Debian `samba` package) for the whole
//! fleet, with everything private to the lab directory (`<lab>/samba/`: config, passdb,
//! lock/state/cache/pid dirs, logs); `/etc/samba` and `/var/lib/samba` are never read or
//! written.
//!
//! Each fleet address gets the administrative shares of a Windows host: `ADMIN$` is
//! `<lab>/hosts/<ip>/C/Windows` and `C$` is `<lab>/hosts/<ip>/C`, one `smbd` serving every
//! address through Samba's `%i` substitution (the address the client connected to).
//! `interfaces` lists only the addresses that serve SMB, with `bind interfaces only = yes`:
//! `smb_down` and `port_closed` hosts get nothing on the SMB port. Samba binds only addresses
//! that an interface carries, so the fleet adds each SMB address to `lo` as a /32 (done by
//! `fleet`, undone by `down`). Signing is mandatory, SMB 2.1 is the oldest dialect, SMB3
//! encryption follows the spec.
//!
//! The lab account is a system user (created if missing: no home, no login shell) whose Samba
//! password lives in the lab's own `passdb.tdb`. It is an `admin users` entry, as only
//! administrators may use `ADMIN$`/`C$` on Windows and may touch any file there (also files
//! the simulated checker, running as root, wrote). A `wrong_password` host is an address whose
//! per-address include (`include = <lab>/samba/by-ip/%i.conf`) maps the lab account to an
//! account that does not exist, so every login there fails with `NT_STATUS_LOGON_FAILURE`
//! whatever the password, as a host whose password differs does.
//!
//! Named pipes on `IPC$` do not reach Samba's own RPC servers directly: with
//! `rpc start on demand helpers = no` and `external_rpc_pipe:socket_dir = <lab>/samba/rpc`,
//! smbd hands every pipe to `<lab>/samba/rpc/np/<pipe>`, where the lab's serve process
//! answers `svcctl` itself ([`crate::svcctl`]) and forwards every other pipe to the
//! `samba-dcerpcd` started here ([`start_dcerpcd`]), which listens in `<ncalrpc dir>/np`.

use std::fs;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::fleet::sys;
use crate::spec::SmbEncryption;

/// What to tell the user when a Samba tool is missing.
pub const INSTALL_HINT: &str =
    "install it with `apt-get update && apt-get install -y --no-install-recommends \
     samba smbclient` (scripts/test does this)";

/// How long `start` waits for smbd to listen on the first and last address.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The unix account a `wrong_password` address maps the lab account to (it must not exist).
pub const WRONG_PASSWORD_ACCOUNT: &str = "pushscan-lab-wrong-password";

/// Where the lab's Samba keeps its files, all under `<lab>/samba/`.
#[derive(Clone, Debug)]
pub struct SambaPaths {
    pub root: PathBuf,
    /// `smb.conf` (what `smbd -s` and `smbpasswd -c` read).
    pub conf: PathBuf,
    /// `private dir` (secrets.tdb) and the tdbsam passdb.
    pub private: PathBuf,
    pub passdb: PathBuf,
    /// `lock directory`, `state directory`, `cache directory`, `pid directory`.
    pub lock: PathBuf,
    pub state: PathBuf,
    pub cache: PathBuf,
    pub pid: PathBuf,
    /// Per-address includes (`<ip>.conf`).
    pub by_ip: PathBuf,
    /// The username map used on `wrong_password` addresses.
    pub wrong_password_map: PathBuf,
    /// smbd's own log (`log file`) and its stdout/stderr.
    pub log_file: PathBuf,
    pub console_log: PathBuf,
    /// `external_rpc_pipe:socket_dir`: smbd connects to `<rpc>/np/<pipe>` for every named
    /// pipe (the lab's svcctl endpoint listens there and forwards the rest).
    pub rpc: PathBuf,
    /// Where samba-dcerpcd listens for the pipes it serves (`<ncalrpc dir>/np`).
    pub dcerpcd_np: PathBuf,
    /// samba-dcerpcd's stdout/stderr.
    pub dcerpcd_log: PathBuf,
}

impl SambaPaths {
    /// The layout under lab directory `lab_dir` (which should be absolute).
    pub fn new(lab_dir: &Path) -> SambaPaths {
        let root = lab_dir.join("samba");
        let log = lab_dir.join("log");
        SambaPaths {
            conf: root.join("smb.conf"),
            private: root.join("private"),
            passdb: root.join("private").join("passdb.tdb"),
            lock: root.join("lock"),
            state: root.join("state"),
            cache: root.join("cache"),
            pid: root.join("pid"),
            by_ip: root.join("by-ip"),
            wrong_password_map: root.join("wrong-password.map"),
            log_file: log.join("smbd.log"),
            console_log: log.join("smbd.console.log"),
            rpc: root.join("rpc"),
            dcerpcd_np: root.join("pid").join("ncalrpc").join("np"),
            dcerpcd_log: log.join("samba-dcerpcd.console.log"),
            root,
        }
    }

    /// The runtime state smbd keeps (removed by `down`; config, passdb and logs stay).
    pub fn runtime_dirs(&self) -> [&Path; 4] {
        [&self.lock, &self.state, &self.cache, &self.pid]
    }
}

/// What the lab's smbd serves.
#[derive(Clone, Debug)]
pub struct SambaConfig {
    /// The lab directory (absolute): host trees are `<lab_dir>/hosts/<ip>/C`.
    pub lab_dir: PathBuf,
    /// Addresses that serve SMB (each must be on an interface, see the module doc).
    pub addresses: Vec<Ipv4Addr>,
    /// Of those, the addresses where every login fails (`wrong_password` hosts).
    pub wrong_password: Vec<Ipv4Addr>,
    pub port: u16,
    pub encryption: SmbEncryption,
    /// The lab account (a system user).
    pub username: String,
    /// Wine hosts: (address, the prefix's `drive_c`). Their `C$` is `drive_c` and their
    /// `ADMIN$` is `drive_c/windows` (Wine's lower-case names; Samba looks names up
    /// case-insensitively for SMB2 clients, so `ADMIN$\Temp` is `windows/temp`), through a
    /// per-address include in each share section.
    pub wine_drives: Vec<(Ipv4Addr, PathBuf)>,
}

/// A started smbd.
#[derive(Clone, Debug)]
pub struct Smbd {
    pub pid: u32,
    pub conf: PathBuf,
    pub log_file: PathBuf,
}

/// A Samba program, found in PATH or the usual sbin/bin dirs, or an error saying how to
/// install it.
pub fn binary(name: &str) -> Result<PathBuf> {
    sys::find_binary(name).with_context(|| format!("`{name}` not found: {INSTALL_HINT}"))
}

/// Writes `smb.conf`, the per-address includes and the username map; creates the private
/// directories. Returns the config path.
pub fn write_config(cfg: &SambaConfig) -> Result<SambaPaths> {
    if cfg.addresses.is_empty() {
        bail!("no host of the fleet serves SMB: nothing for smbd to listen on");
    }
    let paths = SambaPaths::new(&cfg.lab_dir);
    for dir in [paths.root.as_path(), paths.by_ip.as_path()]
        .into_iter()
        .chain(paths.runtime_dirs())
    {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let np = paths.rpc.join("np");
    fs::create_dir_all(&np).with_context(|| format!("cannot create {}", np.display()))?;
    fs::create_dir_all(&paths.private)
        .with_context(|| format!("cannot create {}", paths.private.display()))?;
    fs::set_permissions(&paths.private, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot chmod {}", paths.private.display()))?;
    if let Some(log_dir) = paths.log_file.parent() {
        fs::create_dir_all(log_dir)
            .with_context(|| format!("cannot create {}", log_dir.display()))?;
    }

    // Per-address includes: only wrong_password addresses have one (a missing include file
    // is skipped by Samba). Stale ones from an earlier fleet are removed first.
    for entry in fs::read_dir(&paths.by_ip)
        .with_context(|| format!("cannot list {}", paths.by_ip.display()))?
    {
        let entry = entry?;
        fs::remove_file(entry.path())
            .with_context(|| format!("cannot remove {}", entry.path().display()))?;
    }
    fs::write(
        &paths.wrong_password_map,
        format!(
            "# Written by pushscan-lab: on wrong_password addresses the lab account maps to an\n\
             # account that does not exist, so every login fails.\n\
             {WRONG_PASSWORD_ACCOUNT} = {}\n",
            cfg.username
        ),
    )
    .with_context(|| format!("cannot write {}", paths.wrong_password_map.display()))?;
    for ip in &cfg.wrong_password {
        let path = paths.by_ip.join(format!("{ip}.conf"));
        fs::write(
            &path,
            format!(
                "# wrong_password host: logins fail\nusername map = {}\n",
                paths.wrong_password_map.display()
            ),
        )
        .with_context(|| format!("cannot write {}", path.display()))?;
    }

    for (ip, drive_c) in &cfg.wine_drives {
        let text = drive_c.to_str().with_context(|| {
            format!(
                "{} is not valid UTF-8 (it goes into smb.conf)",
                drive_c.display()
            )
        })?;
        if text.contains(['%', '\n', '\r', ';', '#', '"', ' ']) {
            bail!("{text:?} contains a character Samba's config cannot carry");
        }
        for (share, path) in [
            ("admin", drive_c.join("windows")),
            ("c", drive_c.to_path_buf()),
        ] {
            let file = paths.by_ip.join(format!("{ip}.{share}.conf"));
            fs::write(
                &file,
                format!(
                    "# Wine host: the share is in its WINEPREFIX\npath = {}\nroot preexec =\n",
                    path.display()
                ),
            )
            .with_context(|| format!("cannot write {}", file.display()))?;
        }
    }

    let hosts = cfg.lab_dir.join("hosts");
    let interfaces: Vec<String> = cfg.addresses.iter().map(Ipv4Addr::to_string).collect();
    let conf = format!(
        "# Written by pushscan-lab: the lab's private smbd (see lab/README.md).\n\
         [global]\n\
         \x20 server role = standalone server\n\
         \x20 workgroup = PUSHSCANLAB\n\
         \x20 netbios name = PUSHSCAN-LAB\n\
         \x20 server string = pushscan lab\n\
         \x20 interfaces = {interfaces}\n\
         \x20 bind interfaces only = yes\n\
         \x20 smb ports = {port}\n\
         \x20 disable netbios = yes\n\
         \x20 server min protocol = SMB2_10\n\
         \x20 server signing = mandatory\n\
         \x20 server smb encrypt = {encrypt}\n\
         \x20 map to guest = never\n\
         \x20 restrict anonymous = 2\n\
         \x20 passdb backend = tdbsam:{passdb}\n\
         \x20 private dir = {private}\n\
         \x20 binddns dir = {private}/bind-dns\n\
         \x20 lock directory = {lock}\n\
         \x20 state directory = {state}\n\
         \x20 cache directory = {cache}\n\
         \x20 pid directory = {pid}\n\
         \x20 ncalrpc dir = {pid}/ncalrpc\n\
         \x20 usershare path = \n\
         \x20 log file = {log}\n\
         \x20 max log size = 0\n\
         \x20 log level = 1\n\
         \x20 load printers = no\n\
         \x20 printing = bsd\n\
         \x20 printcap name = /dev/null\n\
         \x20 disable spoolss = yes\n\
         \x20 max connections = 0\n\
         \x20 rpc start on demand helpers = no\n\
         \x20 external_rpc_pipe:socket_dir = {rpc}\n\
         \x20 include = {by_ip}/%i.conf\n\
         \n\
         [ADMIN$]\n\
         \x20 comment = Remote Admin\n\
         \x20 path = {hosts}/%i/C/Windows\n\
         \x20 root preexec = mkdir -p {hosts}/%i/C/Windows\n\
         \x20 browseable = no\n\
         \x20 read only = no\n\
         \x20 valid users = {user}\n\
         \x20 admin users = {user}\n\
         \x20 include = {by_ip}/%i.admin.conf\n\
         \n\
         [C$]\n\
         \x20 comment = Default share\n\
         \x20 path = {hosts}/%i/C\n\
         \x20 root preexec = mkdir -p {hosts}/%i/C\n\
         \x20 browseable = no\n\
         \x20 read only = no\n\
         \x20 valid users = {user}\n\
         \x20 admin users = {user}\n\
         \x20 include = {by_ip}/%i.c.conf\n",
        interfaces = interfaces.join(" "),
        port = cfg.port,
        encrypt = cfg.encryption.as_str(),
        passdb = paths.passdb.display(),
        private = paths.private.display(),
        lock = paths.lock.display(),
        state = paths.state.display(),
        cache = paths.cache.display(),
        pid = paths.pid.display(),
        log = paths.log_file.display(),
        by_ip = paths.by_ip.display(),
        hosts = hosts.display(),
        user = cfg.username,
        rpc = paths.rpc.display(),
    );
    check_conf_safe(&cfg.lab_dir)?;
    fs::write(&paths.conf, conf)
        .with_context(|| format!("cannot write {}", paths.conf.display()))?;
    Ok(paths)
}

/// Paths go into smb.conf unquoted: refuse characters that would change its meaning.
fn check_conf_safe(lab_dir: &Path) -> Result<()> {
    let text = lab_dir.to_str().with_context(|| {
        format!(
            "the lab directory {} is not valid UTF-8 (it goes into smb.conf)",
            lab_dir.display()
        )
    })?;
    if text.contains(['%', '\n', '\r', ';', '#', '"', ' ']) {
        bail!(
            "the lab directory {text:?} contains a character Samba's config cannot carry \
             (space, %, ;, #, \", line break): choose another --dir"
        );
    }
    Ok(())
}

/// The lab account's uid and gid, creating the system user if it does not exist
/// (`useradd --system --no-create-home --shell /usr/sbin/nologin`).
pub fn ensure_system_user(username: &str) -> Result<(u32, u32)> {
    if let Some(ids) = sys::user_ids(username) {
        return Ok(ids);
    }
    let useradd = sys::find_binary("useradd")
        .context("`useradd` not found (package passwd): it creates the lab account")?;
    let out = Command::new(&useradd)
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "--comment",
            "pushscan lab account",
        ])
        .arg(username)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", useradd.display()))?;
    // Exit 9: created meanwhile by another lab starting in parallel.
    if !out.status.success() && out.status.code() != Some(9) {
        bail!(
            "cannot create the lab account {username:?} (useradd: {}): the lab needs root",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    sys::user_ids(username)
        .with_context(|| format!("the lab account {username:?} still does not exist"))
}

/// Sets the lab account's Samba password in the lab's private passdb (`smbpasswd -a -s`).
pub fn set_password(paths: &SambaPaths, username: &str, password: &str) -> Result<()> {
    let smbpasswd = binary("smbpasswd")?;
    let mut child = Command::new(&smbpasswd)
        .arg("-c")
        .arg(&paths.conf)
        .args(["-a", "-s"])
        .arg(username)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", smbpasswd.display()))?;
    {
        let mut stdin = child.stdin.take().context("smbpasswd stdin")?;
        stdin
            .write_all(format!("{password}\n{password}\n").as_bytes())
            .context("cannot pass the password to smbpasswd")?;
    }
    let out = child
        .wait_with_output()
        .context("smbpasswd did not finish")?;
    if !out.status.success() {
        bail!(
            "smbpasswd -a {username} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Fails with a clear message when `port` is taken on one of `addresses` (for example by a
/// system smbd listening on 0.0.0.0:445).
pub fn check_port_free(addresses: &[Ipv4Addr], port: u16, what: &str, option: &str) -> Result<()> {
    for ip in addresses {
        let addr = SocketAddrV4::new(*ip, port);
        if let Err(e) = TcpListener::bind(addr) {
            let owner = sys::listeners_on_port(port)
                .into_iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>();
            bail!(
                "{what} port {port} is not free on {ip} ({e}); listening on that port now: {}. \
                 A system service (e.g. Debian's smbd on 0.0.0.0:445: `ss -ltnp 'sport = :{port}'`, \
                 `systemctl stop smbd`) or another lab holds it: stop it or choose another port \
                 with {option}",
                if owner.is_empty() {
                    "nothing visible in /proc/net/tcp".to_string()
                } else {
                    owner.join(", ")
                }
            );
        }
    }
    Ok(())
}

/// Starts smbd (detached: own session, stdout/stderr to the console log, `env` added to its
/// environment) and waits until every SMB address listens and the first and last accept a
/// connection. On failure smbd is killed and the error carries the end of its log.
pub fn start(cfg: &SambaConfig, paths: &SambaPaths, env: &[(&str, &str)]) -> Result<Smbd> {
    let smbd = binary("smbd")?;
    let mut cmd = Command::new(&smbd);
    cmd.args(["--foreground", "--no-process-group", "--configfile"])
        .arg(&paths.conf);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let _ = fs::remove_file(&paths.log_file);
    let pid = sys::spawn_detached(cmd, &paths.console_log)
        .with_context(|| format!("cannot start {}", smbd.display()))?;
    let smbd_info = Smbd {
        pid,
        conf: paths.conf.clone(),
        log_file: paths.log_file.clone(),
    };
    let fail = |msg: String| -> anyhow::Error {
        sys::kill_tree(&[pid], Duration::from_secs(3));
        anyhow::anyhow!(
            "{msg}\n--- {} ---\n{}\n--- {} ---\n{}",
            paths.log_file.display(),
            sys::tail(&paths.log_file, 30),
            paths.console_log.display(),
            sys::tail(&paths.console_log, 30)
        )
    };
    let deadline = Instant::now() + READY_TIMEOUT;
    let first = cfg.addresses[0];
    let last = cfg.addresses[cfg.addresses.len() - 1];
    loop {
        if !sys::alive(pid) {
            return Err(fail(format!("smbd (pid {pid}) exited while starting")));
        }
        let listening = sys::listening_v4();
        let all = cfg
            .addresses
            .iter()
            .all(|ip| listening.contains(&SocketAddrV4::new(*ip, cfg.port)));
        if all && sys::accepts(first, cfg.port) && sys::accepts(last, cfg.port) {
            return Ok(smbd_info);
        }
        if Instant::now() > deadline {
            return Err(fail(format!(
                "smbd (pid {pid}) did not listen on all {} SMB addresses port {} within {:?}",
                cfg.addresses.len(),
                cfg.port,
                READY_TIMEOUT
            )));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Where Debian and most distributions put samba-dcerpcd (not in PATH).
const LIBEXEC_DIRS: [&str; 3] = [
    "/usr/libexec/samba",
    "/usr/lib/samba",
    "/usr/local/samba/libexec",
];

/// Starts samba-dcerpcd for the lab's smb.conf (`--foreground --no-process-group
/// --libexec-rpcds`, stdin from /dev/null, or it exits) and waits until it listens for
/// `srvsvc` in [`SambaPaths::dcerpcd_np`]. Returns its pid.
pub fn start_dcerpcd(paths: &SambaPaths, env: &[(&str, &str)]) -> Result<u32> {
    let bin = LIBEXEC_DIRS
        .iter()
        .map(|d| Path::new(d).join("samba-dcerpcd"))
        .find(|p| p.is_file())
        .or_else(|| sys::find_binary("samba-dcerpcd"))
        .with_context(|| format!("samba-dcerpcd not found in {LIBEXEC_DIRS:?}: {INSTALL_HINT}"))?;
    let mut cmd = Command::new(&bin);
    cmd.args([
        "--foreground",
        "--no-process-group",
        "--libexec-rpcds",
        "--configfile",
    ])
    .arg(&paths.conf);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let pid = sys::spawn_detached(cmd, &paths.dcerpcd_log)
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let deadline = Instant::now() + READY_TIMEOUT;
    let srvsvc = paths.dcerpcd_np.join("srvsvc");
    loop {
        if srvsvc.exists() {
            return Ok(pid);
        }
        if !sys::alive(pid) || Instant::now() > deadline {
            sys::kill_tree(&[pid], Duration::from_secs(3));
            bail!(
                "samba-dcerpcd (pid {pid}) did not listen on {} within {:?}\n--- {} ---\n{}",
                srvsvc.display(),
                READY_TIMEOUT,
                paths.dcerpcd_log.display(),
                sys::tail(&paths.dcerpcd_log, 30)
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}
