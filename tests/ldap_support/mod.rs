//! Real directory servers for `tests/ldap_inventory.rs` (no mocks): a Samba Active Directory
//! domain controller and an OpenLDAP `slapd`, each started once per test binary, on loopback.
//!
//! **Samba AD DC** (Debian `samba-ad-dc`): `samba-tool domain provision` into a temporary
//! directory (every path Samba writes — private, lock, state, cache, pid, ncalrpc, winbindd,
//! logs — points inside it; `/etc/samba` and `/var/lib/samba` are not touched), then the
//! computers and OUs of [`SAMBA_LAYOUT`] are bulk-loaded with `ldbadd` straight into
//! `sam.ldb` before the server starts (`samba-tool computer create` makes disabled accounts
//! without `dNSHostName`), then `samba -i -M single` serves LDAP only. LDAP cannot move off
//! ports 389/636 in Samba, so the DC gets its own address, [`DC_ADDR`], added to `lo` if
//! missing (removed at exit if we added it). Samba's self-made certificate has no
//! subjectAltName, which rustls rightly rejects, so the test issues its own CA and a server
//! certificate with SANs (`openssl`), and a second, unrelated CA for the wrong-CA tests.
//!
//! **slapd** (Debian `slapd`): Samba pages but does not enforce AD's 1,000-entry page cap;
//! slapd does (`limits ... size.pr=1000`), and like AD it stops a search without paging at
//! 1,000 entries with sizeLimitExceeded. It holds AD-shaped computer objects under a small
//! schema using Microsoft's attribute names and OIDs (`dNSHostName`, `operatingSystem`,
//! `userAccountControl`, `objectCategory`; `objectCategory` is a plain string here, where
//! AD stores a DN and special-cases `objectCategory=computer`). Its `strict` account may
//! not ask for pages over 250: slapd answers a larger request with adminLimitExceeded
//! (AD would silently cap; the client must report it, not return a partial inventory).
//!
//! Both servers are spawned from one long-lived thread with `PR_SET_PDEATHSIG = SIGKILL`, so
//! they die with the test process even if it is killed; a normal exit (passed or failed
//! tests) runs an `atexit` handler that stops them and removes their directories. A file
//! lock serialises test binaries that would want the DC address at the same time. A missing
//! program fails the test with the command that installs it; nothing is skipped.
#![allow(dead_code)]

use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use pushscan_lab::fleet::sys;

/// The install command named when a program is missing (`scripts/test` runs it).
pub const INSTALL: &str =
    "install them with `apt-get update && apt-get install -y --no-install-recommends \
     samba-ad-dc samba-ad-provision ldb-tools slapd openssl iproute2` (scripts/test does this)";

/// The Samba DC's own loopback address (LDAP is fixed to 389/636 there).
pub const DC_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 80, 1);
pub const DC_HOST: &str = "dc1.corp.example";
pub const REALM: &str = "CORP.EXAMPLE";
pub const DOMAIN: &str = "CORP";
pub const BASE_DN: &str = "DC=corp,DC=example";
/// The domain administrator's password (Samba's complexity rules apply).
pub const ADMIN_PASSWORD: &str = "Adm1n-Pa55.word#Tst";
/// `Administrator@corp.example`: a UPN bind, as with an AD service account.
pub const ADMIN_UPN: &str = "Administrator@corp.example";

/// (OU DN below the domain, enabled computers, operatingSystem, host name prefix). The OUs
/// nest three deep (Tokyo/Sales/Floor3) and one name holds an escaped comma.
pub const SAMBA_LAYOUT: &[(&str, usize, &str, &str)] = &[
    (
        "OU=Floor3,OU=Sales,OU=Tokyo",
        400,
        "Windows 11 Pro",
        "tk-f3-",
    ),
    (
        "OU=Sales,OU=Tokyo",
        200,
        "Windows 10 Enterprise",
        "tk-sales-",
    ),
    ("OU=Tokyo", 100, "Windows Server 2022 Standard", "tk-srv-"),
    (
        "OU=Dev\\, Ops,OU=Osaka",
        300,
        "Windows 11 Enterprise",
        "os-devops-",
    ),
    ("OU=Paris", 197, "Windows 11 Pro", "paris-"),
    ("OU=Lab", 3, "Windows 11 Pro", "lab-"),
];
/// Enabled computers with a good dNSHostName in the layout (1,200).
pub fn samba_good_computers() -> usize {
    SAMBA_LAYOUT.iter().map(|l| l.1).sum()
}
/// Disabled accounts (userAccountControl 4098) in OU=Sales,OU=Tokyo: `tk-off-NNNN`.
pub const DISABLED: usize = 6;
/// Enabled accounts in OU=Lab that must be skipped, by dNSHostName (None: attribute absent).
/// The last one claims a name that `lab-0001` already has.
pub fn hostile_lab_names() -> Vec<Option<String>> {
    vec![
        Some("evil;rm -rf /".to_string()),
        Some("lab-nl\n.corp.example".to_string()),
        Some(format!("{}.corp.example", "a".repeat(300))),
        None,
        Some("lab-0001.corp.example".to_string()),
    ]
}

/// slapd: 2,500 computers under OU=Lyon,OU=France of which every 100th is disabled.
pub const SLAPD_COMPUTERS: usize = 2500;
pub fn slapd_enabled() -> usize {
    SLAPD_COMPUTERS - SLAPD_COMPUTERS / 100
}
pub const SLAPD_BASE: &str = "DC=corp,DC=example";
pub const SLAPD_READER: &str = "cn=reader,DC=corp,DC=example";
pub const SLAPD_STRICT: &str = "cn=strict,DC=corp,DC=example";
pub const SLAPD_PASSWORD: &str = "Slapd-Reader.pw1";

/// The test PKI: a CA, a server certificate for DC_HOST / DC_ADDR / 127.0.0.1 signed by it,
/// and an unrelated CA.
pub struct Pki {
    pub ca: PathBuf,
    pub wrong_ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub struct Dc {
    pub dir: PathBuf,
    pub pki: &'static Pki,
    pub conf: PathBuf,
    pub pid: u32,
    pub provision: Duration,
    pub ldbadd: Duration,
    pub start: Duration,
}

pub struct Slapd {
    pub dir: PathBuf,
    pub pki: &'static Pki,
    pub ldaps_port: u16,
    pub ldap_port: u16,
    pub pid: u32,
    pub setup: Duration,
}

impl Dc {
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://{DC_ADDR}")
    }
    pub fn ldap_url(&self) -> String {
        format!("ldap://{DC_ADDR}")
    }
}

impl Slapd {
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.ldaps_port)
    }
}

fn need(name: &str) -> PathBuf {
    sys::find_binary(name).unwrap_or_else(|| panic!("`{name}` not found: {INSTALL}"))
}

/// Runs a command to completion; panics with its output on failure.
fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{text}",
        out.status
    );
    text
}

// ---------------------------------------------------------------------------
// Process lifetime: spawn from a keeper thread, clean up at exit.

enum Cleanup {
    Kill(u32),
    RemoveDir(PathBuf),
    RemoveLoAddr(Ipv4Addr),
}

fn cleanups() -> std::sync::MutexGuard<'static, Vec<Cleanup>> {
    static LIST: OnceLock<Mutex<Vec<Cleanup>>> = OnceLock::new();
    static REGISTERED: OnceLock<()> = OnceLock::new();
    REGISTERED.get_or_init(|| {
        // SAFETY: registers a plain extern "C" fn.
        unsafe {
            libc::atexit(at_exit);
        }
    });
    LIST.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn on_exit(c: Cleanup) {
    cleanups().push(c);
}

fn running(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

extern "C" fn at_exit() {
    let items: Vec<Cleanup> = std::mem::take(&mut *cleanups());
    let pids: Vec<u32> = items
        .iter()
        .filter_map(|c| match c {
            Cleanup::Kill(p) => Some(*p),
            _ => None,
        })
        .collect();
    for &pid in &pids {
        // SAFETY: plain syscall on a pid we spawned.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && pids.iter().any(|&p| running(p)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for &pid in &pids {
        if running(pid) {
            // SAFETY: as above.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }
    for item in items.iter().rev() {
        match item {
            Cleanup::Kill(_) => {}
            Cleanup::RemoveDir(d) => {
                let _ = fs::remove_dir_all(d);
            }
            Cleanup::RemoveLoAddr(a) => {
                let _ = sys::remove_lo_addresses(&[*a]);
            }
        }
    }
}

type SpawnRequest = (Command, PathBuf, mpsc::Sender<std::io::Result<u32>>);

/// Spawns `cmd` (output to `log`) from a thread that lives as long as the test process, with
/// PR_SET_PDEATHSIG = SIGKILL: the kernel sends it when the *thread* that forked the child
/// exits, and test threads end after each test, so the spawning thread must be one that
/// does not. The pid is also registered for the exit handler.
fn spawn_kept(cmd: Command, log: &Path) -> u32 {
    static KEEPER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("ldap-fixture-keeper".into())
            .spawn(move || {
                let mut children = Vec::new();
                for (mut cmd, log, reply) in rx {
                    let result = (|| {
                        let out = fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&log)?;
                        let err = out.try_clone()?;
                        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
                        // SAFETY: prctl is async-signal-safe and touches no parent memory.
                        unsafe {
                            cmd.pre_exec(|| {
                                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                                    return Err(std::io::Error::last_os_error());
                                }
                                Ok(())
                            });
                        }
                        let child = cmd.spawn()?;
                        let pid = child.id();
                        children.push(child);
                        Ok(pid)
                    })();
                    let _ = reply.send(result);
                }
            })
            .expect("cannot start the fixture keeper thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    keeper
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .send((cmd, log.to_path_buf(), reply_tx))
        .expect("fixture keeper thread gone");
    let pid = reply_rx
        .recv()
        .expect("fixture keeper thread gone")
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", log.display()));
    on_exit(Cleanup::Kill(pid));
    pid
}

fn wait_listening(addr: Ipv4Addr, port: u16, pid: u32, log: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if sys::accepts(addr, port) {
            return;
        }
        if !running(pid) {
            panic!(
                "{what} exited before listening on {addr}:{port}:\n{}",
                sys::tail(log, 40)
            );
        }
        if Instant::now() > deadline {
            panic!(
                "{what} does not listen on {addr}:{port} after 30 s:\n{}",
                sys::tail(log, 40)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn temp_dir(prefix: &str) -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("cannot create a temporary directory")
        .keep();
    on_exit(Cleanup::RemoveDir(dir.clone()));
    dir
}

// ---------------------------------------------------------------------------
// PKI.

pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(make_pki)
}

fn make_pki() -> Pki {
    let openssl = need("openssl");
    let dir = temp_dir("pushscan-ldap-pki-");
    let p = |n: &str| dir.join(n);
    let ca = |name: &str, cn: &str| {
        run(
            Command::new(&openssl)
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
                .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
                .arg("-keyout")
                .arg(p(&format!("{name}.key")))
                .arg("-out")
                .arg(p(&format!("{name}.pem")))
                .args(["-subj", &format!("/CN={cn}")])
                .args(["-addext", "basicConstraints=critical,CA:TRUE"])
                .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]),
            "openssl req (CA)",
        );
    };
    ca("ca", "pushscan LDAP test CA");
    ca("wrong-ca", "unrelated test CA");
    run(
        Command::new(&openssl)
            .args([
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .arg("-nodes")
            .arg("-keyout")
            .arg(p("server.key"))
            .arg("-out")
            .arg(p("server.csr"))
            .args(["-subj", &format!("/CN={DC_HOST}")]),
        "openssl req (server)",
    );
    fs::write(
        p("ext.cnf"),
        format!(
            "subjectAltName=DNS:{DC_HOST},IP:{DC_ADDR},IP:127.0.0.1\n\
             basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n\
             keyUsage=critical,digitalSignature\n"
        ),
    )
    .expect("write ext.cnf");
    run(
        Command::new(&openssl)
            .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
            .arg("-in")
            .arg(p("server.csr"))
            .arg("-CA")
            .arg(p("ca.pem"))
            .arg("-CAkey")
            .arg(p("ca.key"))
            .arg("-out")
            .arg(p("server.pem"))
            .arg("-extfile")
            .arg(p("ext.cnf")),
        "openssl x509 (sign)",
    );
    // Samba refuses a key file others can read.
    fs::set_permissions(p("server.key"), fs::Permissions::from_mode(0o600)).expect("chmod key");
    Pki {
        ca: p("ca.pem"),
        wrong_ca: p("wrong-ca.pem"),
        cert: p("server.pem"),
        key: p("server.key"),
    }
}

// ---------------------------------------------------------------------------
// Samba AD DC.

/// The shared DC, provisioned and started on first use. A failure is remembered, so every
/// test that needs the DC fails with the same message instead of provisioning again.
pub fn dc() -> &'static Dc {
    static DC: OnceLock<Result<Dc, String>> = OnceLock::new();
    let r = DC.get_or_init(|| {
        std::panic::catch_unwind(start_dc).map_err(|p| {
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the Samba DC fixture panicked".into())
        })
    });
    match r {
        Ok(dc) => dc,
        Err(e) => panic!("Samba AD DC fixture unavailable: {e}"),
    }
}

fn start_dc() -> Dc {
    let samba_tool = need("samba-tool");
    let samba = need("samba");
    let ldbadd = need("ldbadd");
    need("ip");
    // The `samba` binary also comes with the plain `samba` package; the DC needs the
    // directory modules of samba-ad-dc (samba-dsdb-modules).
    let mut module_dirs = vec![
        PathBuf::from("/usr/lib/samba/ldb"),
        PathBuf::from("/usr/lib64/samba/ldb"),
    ];
    if let Ok(entries) = fs::read_dir("/usr/lib") {
        module_dirs.extend(entries.flatten().map(|e| e.path().join("samba/ldb")));
    }
    assert!(
        module_dirs.iter().any(|d| d.join("samba_dsdb.so").exists()),
        "Samba's AD directory modules (samba_dsdb.so) not found: {INSTALL}"
    );
    // `samba-tool domain provision` reads the AD schema from samba-ad-provision, which is only
    // a Recommends of samba-ad-dc: installed without Recommends, provisioning fails late.
    let schema = Path::new("/usr/share/samba/setup/ad-schema");
    assert!(
        schema.is_dir(),
        "Samba's AD schema files ({}) not found: {INSTALL}",
        schema.display()
    );
    let pki = pki();

    // One DC per machine at a time: this address and its ports are fixed.
    static LOCK: OnceLock<sys::LockFile> = OnceLock::new();
    LOCK.get_or_init(|| {
        sys::LockFile::acquire(Path::new("/tmp/pushscan-ldap-test-dc.lock"))
            .unwrap_or_else(|e| panic!("{e:#}"))
    });
    // Directories of DCs from runs that were killed (SIGKILL skips the exit handler; the
    // server itself died with them): only the lock holder uses them, so they can go.
    if let Ok(entries) = fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("pushscan-ad-") {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    let present = sys::lo_addresses().unwrap_or_else(|e| panic!("{e:#}"));
    if !present.contains(&DC_ADDR) {
        sys::add_lo_addresses(&[DC_ADDR]).unwrap_or_else(|e| panic!("{e:#}"));
        on_exit(Cleanup::RemoveLoAddr(DC_ADDR));
    }
    for port in [389, 636] {
        if let Err(e) = TcpListener::bind(SocketAddrV4::new(DC_ADDR, port)) {
            panic!(
                "{DC_ADDR}:{port} is taken ({e}); listening there: {:?} (a Samba left over by \
                 another run?)",
                sys::listeners_on_port(port)
            );
        }
    }

    let dir = temp_dir("pushscan-ad-");
    let d = |n: &str| dir.join(n);
    let started = Instant::now();
    let options = [
        format!("interfaces={DC_ADDR}"),
        "bind interfaces only=yes".to_string(),
        format!("pid directory={}", d("pid").display()),
        format!("ncalrpc dir={}", d("ncalrpc").display()),
        format!("winbindd socket directory={}", d("winbindd").display()),
        format!("log file={}", d("log/samba.log").display()),
        format!("lock directory={}", d("lock").display()),
        format!("state directory={}", d("state").display()),
        format!("cache directory={}", d("cache").display()),
        format!("private dir={}", d("private").display()),
        format!("binddns dir={}", d("bind-dns").display()),
        "tls enabled=yes".to_string(),
        format!("tls keyfile={}", pki.key.display()),
        format!("tls certfile={}", pki.cert.display()),
        format!("tls cafile={}", pki.ca.display()),
    ];
    let mut cmd = Command::new(&samba_tool);
    cmd.args([
        "domain",
        "provision",
        "--server-role=dc",
        "--dns-backend=NONE",
    ])
    .arg(format!("--targetdir={}", dir.display()))
    .arg(format!("--realm={REALM}"))
    .arg(format!("--domain={DOMAIN}"))
    .arg("--host-name=dc1")
    .arg(format!("--adminpass={ADMIN_PASSWORD}"));
    for o in &options {
        cmd.arg(format!("--option={o}"));
    }
    run(&mut cmd, "samba-tool domain provision");
    let provision = started.elapsed();

    let started = Instant::now();
    let ldif = d("computers.ldif");
    fs::write(&ldif, samba_ldif()).expect("write LDIF");
    run(
        Command::new(&ldbadd)
            .arg("-H")
            .arg(d("private/sam.ldb"))
            .arg(&ldif),
        "ldbadd (computers)",
    );
    let ldbadd_time = started.elapsed();
    #[cfg(feature = "kerberos")]
    kerberos_setup(&dir);

    let started = Instant::now();
    let conf = d("etc/smb.conf");
    let log = d("log/samba.console.log");
    fs::create_dir_all(d("log")).expect("mkdir log");
    let services = if cfg!(feature = "kerberos") {
        "--option=server services = ldap kdc"
    } else {
        "--option=server services = ldap"
    };
    let mut cmd = Command::new(&samba);
    cmd.args(["-i", "-M", "single", services]);
    // Samba's default (`yes`) refuses SASL binds without sign/seal even inside TLS; ldap3
    // negotiates no SASL security layer on a TLS connection (AD accepts that), so the
    // Kerberos test needs Samba's `allow_sasl_over_tls`. Simple binds in clear stay refused
    // either way.
    if cfg!(feature = "kerberos") {
        cmd.arg("--option=ldap server require strong auth = allow_sasl_over_tls");
    }
    cmd.arg("-s").arg(&conf);
    let pid = spawn_kept(cmd, &log);
    wait_listening(DC_ADDR, 636, pid, &log, "samba");
    wait_listening(DC_ADDR, 389, pid, &log, "samba");
    #[cfg(feature = "kerberos")]
    {
        wait_listening(DC_ADDR, 88, pid, &log, "samba (KDC)");
        kinit();
    }
    Dc {
        dir,
        pki,
        conf,
        pid,
        provision,
        ldbadd: ldbadd_time,
        start: started.elapsed(),
    }
}

/// The host name of computer `i` (0-based) of a layout line.
pub fn host_name(prefix: &str, i: usize) -> String {
    format!("{prefix}{i:04}.corp.example")
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn samba_ldif() -> String {
    let mut out = String::new();
    let mut ous: Vec<&str> = Vec::new();
    for (ou, ..) in SAMBA_LAYOUT {
        // Parents first: "OU=Floor3,OU=Sales,OU=Tokyo" needs OU=Tokyo, then OU=Sales,OU=Tokyo.
        let parts: Vec<&str> = split_rdns(ou);
        for n in (1..=parts.len()).rev() {
            let start = parts[..parts.len() - n]
                .iter()
                .map(|p| p.len() + 1)
                .sum::<usize>();
            let dn = &ou[start..];
            if !ous.contains(&dn) {
                ous.push(dn);
            }
        }
    }
    ous.sort_by_key(|o| split_rdns(o).len());
    for ou in &ous {
        out.push_str(&format!(
            "dn: {ou},{BASE_DN}\nobjectClass: organizationalUnit\n\n"
        ));
    }
    let mut n = 0usize;
    let mut computer = |out: &mut String, ou: &str, dns: Option<&str>, os: &str, uac: u32| {
        n += 1;
        let cn = format!("C{n:05}");
        out.push_str(&format!(
            "dn: CN={cn},{ou},{BASE_DN}\nobjectClass: computer\nsAMAccountName: {cn}$\n\
             operatingSystem: {os}\nuserAccountControl: {uac}\n"
        ));
        if let Some(dns) = dns {
            if dns.contains('\n') || dns.starts_with([' ', ':', '<']) {
                out.push_str(&format!("dNSHostName:: {}\n", b64(dns)));
            } else {
                out.push_str(&format!("dNSHostName: {dns}\n"));
            }
        }
        out.push('\n');
    };
    for (ou, count, os, prefix) in SAMBA_LAYOUT {
        for i in 0..*count {
            computer(&mut out, ou, Some(&host_name(prefix, i)), os, 4096);
        }
    }
    for i in 0..DISABLED {
        computer(
            &mut out,
            "OU=Sales,OU=Tokyo",
            Some(&host_name("tk-off-", i)),
            "Windows 10 Enterprise",
            4098,
        );
    }
    for name in hostile_lab_names() {
        computer(&mut out, "OU=Lab", name.as_deref(), "Windows 11 Pro", 4096);
    }
    out
}

/// RDNs of a DN, split at unescaped commas (the raw text of each).
fn split_rdns(dn: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let b = dn.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == b',' {
            parts.push(&dn[start..i]);
            start = i + 1;
        }
        i += 1;
    }
    parts.push(&dn[start..]);
    parts
}

// ---------------------------------------------------------------------------
// slapd.

pub fn slapd() -> &'static Slapd {
    static SLAPD: OnceLock<Result<Slapd, String>> = OnceLock::new();
    let r = SLAPD.get_or_init(|| {
        std::panic::catch_unwind(start_slapd).map_err(|p| {
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the slapd fixture panicked".into())
        })
    });
    match r {
        Ok(s) => s,
        Err(e) => panic!("slapd fixture unavailable: {e}"),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

const AD_LITE_SCHEMA: &str = "\
attributetype ( 1.2.840.113556.1.4.619 NAME 'dNSHostName' EQUALITY caseIgnoreMatch \
SUBSTR caseIgnoreSubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.363 NAME 'operatingSystem' EQUALITY caseIgnoreMatch \
SUBSTR caseIgnoreSubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.8 NAME 'userAccountControl' EQUALITY integerMatch \
SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.782 NAME 'objectCategory' EQUALITY caseIgnoreMatch \
SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.99999.1.1 NAME 'computer' SUP top STRUCTURAL MUST cn \
MAY ( dNSHostName $ operatingSystem $ userAccountControl $ objectCategory $ description ) )
";

fn start_slapd() -> Slapd {
    let slapd = need("slapd");
    let slapadd = need("slapadd");
    let pki = pki();
    let started = Instant::now();
    let dir = temp_dir("pushscan-slapd-");
    let d = |n: &str| dir.join(n);
    fs::create_dir_all(d("db")).expect("mkdir db");
    fs::write(d("ad-lite.schema"), AD_LITE_SCHEMA).expect("write schema");
    let module_path = [
        "/usr/lib/ldap",
        "/usr/lib/x86_64-linux-gnu/ldap",
        "/usr/lib64/openldap",
    ]
    .into_iter()
    .find(|p| {
        Path::new(p).join("back_mdb.la").exists() || Path::new(p).join("back_mdb.so").exists()
    })
    .unwrap_or("/usr/lib/ldap");
    // `limits` clauses: the first match wins, so the specific one comes first. The root DN
    // bypasses every limit: the tests bind as `reader` (or `strict`).
    let conf = format!(
        "include /etc/ldap/schema/core.schema\n\
         include {schema}\n\
         pidfile {pid}\n\
         modulepath {module_path}\n\
         moduleload back_mdb\n\
         TLSCertificateFile {cert}\n\
         TLSCertificateKeyFile {key}\n\
         TLSCACertificateFile {ca}\n\
         database mdb\n\
         suffix \"{SLAPD_BASE}\"\n\
         rootdn \"cn=admin,{SLAPD_BASE}\"\n\
         directory {db}\n\
         maxsize 67108864\n\
         limits dn.exact=\"{SLAPD_STRICT}\" size.soft=1000 size.hard=1000 size.pr=250 size.prtotal=unlimited\n\
         limits * size.soft=1000 size.hard=1000 size.pr=1000 size.prtotal=unlimited\n",
        schema = d("ad-lite.schema").display(),
        pid = d("slapd.pid").display(),
        cert = pki.cert.display(),
        key = pki.key.display(),
        ca = pki.ca.display(),
        db = d("db").display(),
    );
    fs::write(d("slapd.conf"), conf).expect("write slapd.conf");
    let mut ldif = format!(
        "dn: {SLAPD_BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: corp\no: corp\n\n\
         dn: {SLAPD_READER}\nobjectClass: person\ncn: reader\nsn: reader\nuserPassword: {SLAPD_PASSWORD}\n\n\
         dn: {SLAPD_STRICT}\nobjectClass: person\ncn: strict\nsn: strict\nuserPassword: {SLAPD_PASSWORD}\n\n\
         dn: OU=France,{SLAPD_BASE}\nobjectClass: organizationalUnit\nou: France\n\n\
         dn: OU=Lyon,OU=France,{SLAPD_BASE}\nobjectClass: organizationalUnit\nou: Lyon\n\n"
    );
    for i in 0..SLAPD_COMPUTERS {
        let uac = if i % 100 == 99 { 4098 } else { 4096 };
        ldif.push_str(&format!(
            "dn: CN=LY{i:04},OU=Lyon,OU=France,{SLAPD_BASE}\nobjectClass: computer\ncn: LY{i:04}\n\
             dNSHostName: ly{i:04}.corp.example\noperatingSystem: Windows 10 Enterprise\n\
             userAccountControl: {uac}\nobjectCategory: computer\ndescription: desk {i}\n\n"
        ));
    }
    fs::write(d("data.ldif"), ldif).expect("write LDIF");
    run(
        Command::new(&slapadd)
            .arg("-q")
            .arg("-f")
            .arg(d("slapd.conf"))
            .arg("-l")
            .arg(d("data.ldif")),
        "slapadd",
    );
    let ldaps_port = free_port();
    let mut ldap_port = free_port();
    while ldap_port == ldaps_port {
        ldap_port = free_port();
    }
    let log = d("slapd.log");
    let mut cmd = Command::new(&slapd);
    cmd.arg("-f")
        .arg(d("slapd.conf"))
        .arg("-h")
        .arg(format!(
            "ldaps://127.0.0.1:{ldaps_port}/ ldap://127.0.0.1:{ldap_port}/"
        ))
        // -d keeps slapd in the foreground (our child, killable by pid).
        .args(["-d", "0"]);
    let pid = spawn_kept(cmd, &log);
    wait_listening(Ipv4Addr::LOCALHOST, ldaps_port, pid, &log, "slapd");
    Slapd {
        dir,
        pki,
        ldaps_port,
        ldap_port,
        pid,
        setup: started.elapsed(),
    }
}

// ---------------------------------------------------------------------------
// Kerberos (feature `kerberos`): Samba's KDC on DC_ADDR, a ticket for Administrator.

/// Where the test's krb5.conf and credential cache live; `KRB5_CONFIG` and `KRB5CCNAME`
/// point here (set once by the test before anything reads the environment).
#[cfg(feature = "kerberos")]
pub fn krb5_dir() -> PathBuf {
    std::env::temp_dir().join(format!("pushscan-ldap-krb5-{}", std::process::id()))
}

#[cfg(feature = "kerberos")]
pub fn krb5_env() -> [(String, String); 2] {
    let dir = krb5_dir();
    [
        (
            "KRB5_CONFIG".into(),
            dir.join("krb5.conf").display().to_string(),
        ),
        (
            "KRB5CCNAME".into(),
            format!("FILE:{}", dir.join("ccache").display()),
        ),
    ]
}

/// There is no DNS here, so the client names the DC by its address: the DC account gets the
/// SPN `ldap/127.0.80.1` (AD allows any SPN), and krb5.conf maps that host to the realm
/// without canonicalisation.
#[cfg(feature = "kerberos")]
fn kerberos_setup(dir: &Path) {
    let ldbmodify = need("ldbmodify");
    need("kinit");
    let ldif = dir.join("spn.ldif");
    fs::write(
        &ldif,
        format!(
            "dn: CN=DC1,OU=Domain Controllers,{BASE_DN}\nchangetype: modify\n\
             add: servicePrincipalName\nservicePrincipalName: ldap/{DC_ADDR}\n"
        ),
    )
    .expect("write spn.ldif");
    run(
        Command::new(&ldbmodify)
            .arg("-H")
            .arg(dir.join("private/sam.ldb"))
            .arg(&ldif),
        "ldbmodify (SPN)",
    );
    let kdir = krb5_dir();
    fs::create_dir_all(&kdir).expect("mkdir krb5 dir");
    on_exit(Cleanup::RemoveDir(kdir.clone()));
    fs::write(
        kdir.join("krb5.conf"),
        format!(
            "[libdefaults]\n default_realm = {REALM}\n dns_lookup_realm = false\n \
             dns_lookup_kdc = false\n rdns = false\n dns_canonicalize_hostname = false\n\
             [realms]\n {REALM} = {{\n  kdc = {DC_ADDR}\n }}\n\
             [domain_realm]\n {DC_ADDR} = {REALM}\n"
        ),
    )
    .expect("write krb5.conf");
}

#[cfg(feature = "kerberos")]
fn kinit() {
    use std::io::Write as _;
    let kinit = need("kinit");
    let mut child = Command::new(&kinit)
        .arg(format!("Administrator@{REALM}"))
        .envs(krb5_env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run kinit");
    child
        .stdin
        .take()
        .expect("kinit stdin")
        .write_all(format!("{ADMIN_PASSWORD}\n").as_bytes())
        .expect("write to kinit");
    let out = child.wait_with_output().expect("kinit did not finish");
    assert!(
        out.status.success(),
        "kinit failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
