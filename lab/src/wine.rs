//! Wine-backed Windows hosts of the lab (`wine: true` in a scenario; `docs/lab-wine.md`).
//!
//! Each Wine host is a WINEPREFIX of its own (`<lab>/hosts/<ip>/wine`): its own `C:` drive and
//! registry, served by one persistent `wineserver -p -f` while the lab is up. Commands that
//! reach the host over WinRM run through Wine's real `cmd.exe` there (see
//! [`crate::winrm::wine`]); Samba serves `C$` = `drive_c` and `ADMIN$` = `drive_c/windows`.
//!
//! * **Template prefix**: made once by `wineboot -i` (headless: `WINEDLLOVERRIDES=mscoree,
//!   mshtml=`, `WINEDEBUG=-all`) in a cache directory keyed by the Wine build and the lab user
//!   ([`cache_dir`], [`template`]), under a lock so parallel labs make it once.
//! * **Clone per host** ([`clone_prefix`]): the Windows binaries (`.dll`, `.exe`, `.nls`, ...;
//!   about 630 MiB in Debian's Wine 8) are hard links to the template, everything else is
//!   copied. Measured: wineserver rewrites `system.reg`/`user.reg`/`userdef.reg` IN PLACE (a
//!   hard-linked `.reg` file changed the template), so the registry, the `.ini` files and every
//!   other non-binary file must be real copies. Automatic prefix updates, which would rewrite
//!   the binaries in place, are switched off (`.update-timestamp` = `disable`). A cache on
//!   another filesystem than the lab (no hard links) gets real copies of everything (~700 MiB
//!   per host): set `PUSHSCAN_LAB_WINE_CACHE` to a directory on the lab's filesystem.
//! * **mingw programs** ([`build_programs`]): the C sources in `lab/wine/` (built into this
//!   binary) are compiled with `x86_64-w64-mingw32-gcc` when a lab with Wine hosts starts and
//!   cached by source hash: `launch.exe` (runs one exact `cmd /c` line), `pslist.exe`
//!   (Toolhelp32 process list), `malware.exe` (sleeps forever) and `emocheck-wine.exe` (the
//!   Windows build of the lab checker).
//! * **Start** ([`start_host`]): the wineserver, a first command (Wine starts its services),
//!   the computer name (`ActiveComputerName`, which Wine otherwise takes from the Linux host
//!   name), and on an infected host the "malware" copied to
//!   `C:\users\<user>\AppData\Local\<stem>\<name>`, started inside the prefix, with
//!   `HKCU\Software\Microsoft\Windows\CurrentVersion\Run\<stem>` = its path.
//! * **Inspection** ([`inspect`]): processes (pslist.exe), Run values (`reg query` through the
//!   running wineserver: `user.reg` is only written when the wineserver exits), files and the
//!   emulated firewall rules, for tests.
//!
//! Everything a prefix's programs print is bounded and parsed as untrusted text.

use std::fs;
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::fleet::sys;
use crate::winrm::wine::{self as emu, FirewallRule, WinProcess, WineExec};

/// What to install when Wine is missing.
pub const WINE_INSTALL_HINT: &str =
    "install it with `apt-get update && apt-get install -y --no-install-recommends wine64` \
     (Debian's Wine 8, 64-bit only; scripts/test does this)";
/// What to install when the mingw compiler is missing.
pub const MINGW_INSTALL_HINT: &str =
    "install it with `apt-get update && apt-get install -y --no-install-recommends \
     gcc-mingw-w64-x86-64` (scripts/test does this)";
/// The Windows user of every Wine host (`USER` for Wine: its profile is `C:\users\tanaka`,
/// the lab's default infected user).
pub const WINE_USER: &str = "tanaka";
/// Environment variable naming the template cache directory.
pub const CACHE_ENV: &str = "PUSHSCAN_LAB_WINE_CACHE";
/// The Run key (under HKCU / HKU\<SID>) the lab's malware persists in.
pub const RUN_KEY: &str = r"Software\Microsoft\Windows\CurrentVersion\Run";
/// Bumped when the template's making changes (part of the cache key).
const TEMPLATE_FORMAT: u32 = 1;
/// Longest wait for a Wine command the lab runs itself.
const WINE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most bytes kept of a Wine command's stdout/stderr.
const OUTPUT_CAP: usize = 1 << 20;

/// The C sources of the Windows programs (built into the binary).
const SOURCES: &[(&str, &str, bool)] = &[
    ("launch.exe", include_str!("../wine/launch.c"), true),
    ("pslist.exe", include_str!("../wine/pslist.c"), false),
    ("malware.exe", include_str!("../wine/malware.c"), false),
    (
        "emocheck-wine.exe",
        include_str!("../wine/emocheck.c"),
        false,
    ),
];

/// Extensions of the template's files that are hard-linked into clones (Windows binaries,
/// code pages, fonts: never written by Wine at run time); every other file is copied.
const LINKED_EXTENSIONS: &[&str] = &[
    "dll", "exe", "nls", "sys", "drv", "ocx", "cpl", "acm", "tlb", "ds", "msstyles", "com", "ax",
    "icm", "ttf", "ttc", "fon",
];

/// Wine's programs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct WineTools {
    pub wine64: PathBuf,
    pub wineserver: PathBuf,
}

impl WineTools {
    /// Finds `wine64` and `wineserver` (Debian puts them in `/usr/lib/wine`, not on PATH), or
    /// says what to install.
    pub fn find() -> Result<WineTools> {
        let find = |name: &str| {
            let debian = Path::new("/usr/lib/wine").join(name);
            if debian.is_file() {
                Some(debian)
            } else {
                sys::find_binary(name)
            }
        };
        let wine64 =
            find("wine64").with_context(|| format!("`wine64` not found: {WINE_INSTALL_HINT}"))?;
        let wineserver = find("wineserver")
            .with_context(|| format!("`wineserver` not found: {WINE_INSTALL_HINT}"))?;
        Ok(WineTools { wine64, wineserver })
    }

    /// `wine64 --version` (e.g. `wine-8.0 (Debian 8.0~repack-4)`).
    pub fn version(&self) -> Result<String> {
        let out = Command::new(&self.wine64)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", self.wine64.display()))?;
        let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || v.is_empty() {
            bail!("{} --version failed", self.wine64.display());
        }
        Ok(v)
    }
}

/// A Wine host as `lab.json` records it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WineHost {
    /// The WINEPREFIX (`<lab>/hosts/<ip>/wine`).
    pub prefix: PathBuf,
    /// The Windows user (profile `C:\users\<user>`).
    pub user: String,
    /// That user's SID under HKEY_USERS (read from the prefix at start).
    pub sid: Option<String>,
    /// The fake malware of an infected host.
    pub malware: Option<Malware>,
    /// The emulated firewall's rule store.
    pub firewall_store: PathBuf,
    /// The persistent wineserver (Linux pid).
    pub server_pid: Option<u32>,
}

/// The fake malware of an infected Wine host.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Malware {
    /// Process name (`wfsrvhost.exe`).
    pub name: String,
    /// Image path (`C:\users\tanaka\AppData\Local\wfsrvhost\wfsrvhost.exe`).
    pub image: String,
    /// Run value name (`wfsrvhost`).
    pub value_name: String,
    /// As EmoCheck reports it (`HKEY_CURRENT_USER\Software\...\Run\wfsrvhost`).
    pub runkey: String,
    /// Its Windows PID when the lab started it.
    pub windows_pid: Option<u32>,
    /// Its Linux pid (the `wine64` process the lab started).
    pub linux_pid: Option<u32>,
}

impl Malware {
    /// The malware of a process name (`wfsrvhost.exe`) for `user`.
    pub fn new(name: &str, user: &str) -> Malware {
        let stem = name
            .strip_suffix(".exe")
            .or_else(|| name.strip_suffix(".EXE"))
            .unwrap_or(name);
        Malware {
            name: name.to_string(),
            image: format!(r"C:\users\{user}\AppData\Local\{stem}\{name}"),
            value_name: stem.to_string(),
            runkey: format!(r"HKEY_CURRENT_USER\{RUN_KEY}\{stem}"),
            windows_pid: None,
            linux_pid: None,
        }
    }
}

/// The compiled Windows programs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Programs {
    pub launch: PathBuf,
    pub pslist: PathBuf,
    pub malware: PathBuf,
    /// The Windows build of the lab checker.
    pub checker: PathBuf,
}

/// A spec of Wine hosts only, from `base`: `infected` infected hosts (the default malware,
/// `wfsrvhost.exe`) then `clean` clean ones (the weights make the counts exact), names
/// `W001-LAB`, ..., no HTTPS listener. The ports are the spec's defaults (SMB 445, WinRM 5985):
/// tests set free ones.
pub fn spec(base: std::net::Ipv4Addr, infected: usize, clean: usize) -> crate::spec::Spec {
    use crate::spec::{Scenario, ScenarioKind, Spec};
    let mut spec = Spec {
        hosts: infected + clean,
        base_address: base,
        name_pattern: "W{n:03}-{ou}".into(),
        ..Spec::default()
    };
    let wine = |kind, weight: usize| Scenario {
        wine: true,
        weight: u32::try_from(weight).unwrap_or(u32::MAX),
        ..Scenario::new(kind)
    };
    spec.scenarios = vec![
        wine(ScenarioKind::Infected, infected),
        wine(ScenarioKind::Clean, clean),
    ];
    spec.winrm.https_port = None;
    spec
}

/// `$PUSHSCAN_LAB_WINE_CACHE`, else `$XDG_CACHE_HOME/pushscan-lab/wine`, else
/// `$HOME/.cache/pushscan-lab/wine`, else `/var/tmp/pushscan-lab/wine`.
pub fn cache_dir() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = env(CACHE_ENV) {
        return d;
    }
    if let Some(d) = env("XDG_CACHE_HOME") {
        return d.join("pushscan-lab").join("wine");
    }
    if let Some(d) = env("HOME") {
        return d.join(".cache").join("pushscan-lab").join("wine");
    }
    PathBuf::from("/var/tmp/pushscan-lab/wine")
}

/// An exclusive lock on `path` held while the value lives; waits up to `limit` (making a
/// template can take half a minute on a busy machine).
struct CacheLock(fs::File);

impl CacheLock {
    fn acquire(path: &Path, limit: Duration) -> Result<CacheLock> {
        use std::os::fd::AsRawFd as _;
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        let deadline = Instant::now() + limit;
        loop {
            // SAFETY: plain syscall on an open descriptor.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(CacheLock(file));
            }
            if Instant::now() > deadline {
                bail!("{} stayed locked for over {limit:?}", path.display());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for CacheLock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd as _;
        // SAFETY: plain syscall on an open descriptor.
        unsafe {
            libc::flock(self.0.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

/// Compiles the Windows programs into `<cache>/bin-<hash of the sources>/` unless there.
pub fn build_programs(cache: &Path) -> Result<Programs> {
    let mut h = Sha256::new();
    for (name, src, unicode) in SOURCES {
        h.update(name.as_bytes());
        h.update([0, u8::from(*unicode)]);
        h.update(src.as_bytes());
    }
    let dir = cache.join(format!("bin-{}", &hex::encode(h.finalize())[..16]));
    let programs = Programs {
        launch: dir.join("launch.exe"),
        pslist: dir.join("pslist.exe"),
        malware: dir.join("malware.exe"),
        checker: dir.join("emocheck-wine.exe"),
    };
    let done = dir.join(".complete");
    if done.is_file() {
        return Ok(programs);
    }
    fs::create_dir_all(cache).with_context(|| format!("cannot create {}", cache.display()))?;
    let _lock = CacheLock::acquire(&cache.join("bin.lock"), Duration::from_secs(300))?;
    if done.is_file() {
        return Ok(programs);
    }
    let gcc = sys::find_binary("x86_64-w64-mingw32-gcc").with_context(|| {
        format!("`x86_64-w64-mingw32-gcc` not found (it builds the Wine hosts' programs): {MINGW_INSTALL_HINT}")
    })?;
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, src, unicode) in SOURCES {
        let c = dir.join(name.replace(".exe", ".c"));
        fs::write(&c, src).with_context(|| format!("cannot write {}", c.display()))?;
        let mut cmd = Command::new(&gcc);
        cmd.args(["-O2", "-s", "-Wall"]);
        if *unicode {
            cmd.arg("-municode");
        }
        let out = cmd
            .arg("-o")
            .arg(dir.join(name))
            .arg(&c)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", gcc.display()))?;
        if !out.status.success() {
            bail!(
                "x86_64-w64-mingw32-gcc could not build {name}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    fs::write(&done, b"").with_context(|| format!("cannot write {}", done.display()))?;
    Ok(programs)
}

/// The environment of every Wine process of a prefix.
pub fn wine_env(prefix: &Path, marker: Option<(&str, &Path)>) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "WINEPREFIX".to_string(),
            prefix.to_string_lossy().into_owned(),
        ),
        ("WINEDEBUG".to_string(), "-all".to_string()),
        // Headless: no Mono / Gecko installer dialogs.
        (
            "WINEDLLOVERRIDES".to_string(),
            "mscoree,mshtml=".to_string(),
        ),
        ("USER".to_string(), WINE_USER.to_string()),
        ("LOGNAME".to_string(), WINE_USER.to_string()),
    ];
    if let Some((k, v)) = marker {
        env.push((k.to_string(), v.to_string_lossy().into_owned()));
    }
    env
}

fn wine_command(program: &Path, env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .envs(env.iter().map(|(k, v)| (k, v)));
    cmd
}

/// The template prefix for this Wine build, made when missing; returns its path and how long
/// making it took (zero when it was cached).
pub fn template(tools: &WineTools, cache: &Path) -> Result<(PathBuf, Duration)> {
    let version = tools.version()?;
    let meta = fs::metadata(&tools.wine64)
        .with_context(|| format!("cannot stat {}", tools.wine64.display()))?;
    let mut h = Sha256::new();
    h.update(format!(
        "{TEMPLATE_FORMAT}\n{version}\n{}\n{:?}\n{WINE_USER}\n",
        meta.len(),
        meta.modified().ok()
    ));
    let key = &hex::encode(h.finalize())[..16];
    let path = cache.join(format!("prefix-{key}"));
    let done = path.join(".pushscan-complete");
    if done.is_file() {
        return Ok((path, Duration::ZERO));
    }
    fs::create_dir_all(cache).with_context(|| format!("cannot create {}", cache.display()))?;
    let _lock = CacheLock::acquire(
        &cache.join(format!("prefix-{key}.lock")),
        Duration::from_secs(600),
    )?;
    if done.is_file() {
        return Ok((path, Duration::ZERO));
    }
    let t0 = Instant::now();
    let tmp = cache.join(format!("prefix-{key}.tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    let _ = fs::remove_dir_all(&path);
    let env = wine_env(&tmp, None);
    let out = run_bounded(
        wine_command(&tools.wine64, &env).args(["wineboot", "-i"]),
        Duration::from_secs(300),
    )
    .context("wineboot -i (making the template prefix)")?;
    // The registry reaches the .reg files when the wineserver exits: wait for it.
    let _ = run_bounded(
        wine_command(&tools.wineserver, &env).arg("-w"),
        Duration::from_secs(120),
    );
    if !tmp.join("system.reg").is_file()
        || !tmp.join("drive_c").join("users").join(WINE_USER).is_dir()
    {
        bail!(
            "wineboot did not make a prefix in {} (exit {:?}): {}",
            tmp.display(),
            out.code,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Never update the prefix automatically: an update rewrites binaries in place, and those
    // are hard links shared with every clone.
    fs::write(tmp.join(".update-timestamp"), b"disable")?;
    let _ = fs::remove_file(tmp.join("wineserver"));
    fs::rename(&tmp, &path)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))?;
    fs::write(&done, version.as_bytes())?;
    Ok((path, t0.elapsed()))
}

/// Clones `template` into `dest` (which must not exist): binaries hard-linked, everything else
/// copied (see the module doc).
pub fn clone_prefix(template: &Path, dest: &Path) -> Result<()> {
    if dest.exists() {
        bail!("{} exists already", dest.display());
    }
    fn walk(src: &Path, dst: &Path, top: bool) -> Result<()> {
        fs::create_dir(dst).with_context(|| format!("cannot create {}", dst.display()))?;
        let mode = fs::metadata(src)?.permissions().mode();
        fs::set_permissions(dst, fs::Permissions::from_mode(mode))?;
        for entry in fs::read_dir(src).with_context(|| format!("cannot list {}", src.display()))? {
            let entry = entry?;
            let name = entry.file_name();
            if top && (name == ".pushscan-complete" || name == "wineserver") {
                continue;
            }
            let from = entry.path();
            let to = dst.join(&name);
            let ft = entry.file_type()?;
            if ft.is_dir() {
                walk(&from, &to, false)?;
            } else if ft.is_symlink() {
                std::os::unix::fs::symlink(fs::read_link(&from)?, &to)
                    .with_context(|| format!("cannot link {}", to.display()))?;
            } else if ft.is_file() {
                let ext = from
                    .extension()
                    .map(|e| e.to_string_lossy().to_ascii_lowercase())
                    .unwrap_or_default();
                if LINKED_EXTENSIONS.contains(&ext.as_str()) {
                    match fs::hard_link(&from, &to) {
                        Ok(()) => {}
                        // The cache on another filesystem than the lab: a (big) real copy.
                        Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
                            fs::copy(&from, &to)
                                .with_context(|| format!("cannot copy {}", to.display()))?;
                        }
                        Err(e) => {
                            return Err(e).with_context(|| format!("cannot link {}", to.display()))
                        }
                    }
                } else {
                    fs::copy(&from, &to)
                        .with_context(|| format!("cannot copy {}", to.display()))?;
                }
            }
        }
        Ok(())
    }
    walk(template, dest, true)
}

/// Exit code and bounded output of a command.
#[derive(Debug)]
pub struct Output {
    /// None when killed (timeout) or ended by a signal.
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs `cmd` (stdin null) with a deadline, keeping at most [`OUTPUT_CAP`] bytes of each
/// stream; on the deadline its process group is killed.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Result<Output> {
    use std::os::unix::process::CommandExt as _;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().context("cannot start a Wine command")?;
    // Readers keep what they read in shared buffers: a Windows process the command started
    // (Wine's services when a prefix boots, say) may inherit the pipes and hold them open long
    // after the command exited, so EOF is waited for only briefly once it has.
    type Kept = std::sync::Arc<std::sync::Mutex<(Vec<u8>, bool)>>;
    let read = |r: Option<Box<dyn std::io::Read + Send>>| -> Kept {
        let kept: Kept = Default::default();
        let k = std::sync::Arc::clone(&kept);
        std::thread::spawn(move || {
            if let Some(mut r) = r {
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let mut g = k.lock().unwrap_or_else(|p| p.into_inner());
                    let room = OUTPUT_CAP.saturating_sub(g.0.len());
                    g.0.extend_from_slice(&buf[..n.min(room)]);
                }
            }
            k.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
        });
        kept
    };
    let out = read(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    );
    let err = read(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if Instant::now() > deadline {
            // SAFETY: plain syscall; the group is the child's own (process_group(0)).
            unsafe {
                libc::killpg(child.id() as libc::pid_t, libc::SIGKILL);
            }
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let eof_deadline = Instant::now() + Duration::from_secs(2);
    let done = |k: &Kept| k.lock().map(|g| g.1).unwrap_or(true);
    while !(done(&out) && done(&err)) && Instant::now() < eof_deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let take = |k: &Kept| {
        k.lock()
            .map(|mut g| std::mem::take(&mut g.0))
            .unwrap_or_default()
    };
    let (stdout, stderr) = (take(&out), take(&err));
    if status.is_none() {
        bail!("a Wine command did not finish within {limit:?}");
    }
    Ok(Output {
        code: status.and_then(|s| s.code()),
        stdout,
        stderr,
    })
}

/// What the lab needs to run things in one prefix.
#[derive(Clone, Debug)]
pub struct Prefix<'a> {
    pub tools: &'a WineTools,
    pub programs: &'a Programs,
    pub path: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Prefix<'_> {
    /// Runs one `cmd /c` line exactly as written (through `launch.exe`).
    pub fn cmd(&self, line: &str) -> Result<Output> {
        let mut c = wine_command(&self.tools.wine64, &self.env);
        c.arg(&self.programs.launch)
            .env("PUSHSCAN_LAB_CMDLINE", line)
            .current_dir(self.path.join("drive_c"));
        run_bounded(&mut c, WINE_TIMEOUT)
    }

    /// The processes of the prefix (pslist.exe), without pslist itself.
    pub fn processes(&self) -> Result<Vec<WinProcess>> {
        let mut c = wine_command(&self.tools.wine64, &self.env);
        c.arg(&self.programs.pslist);
        let out = run_bounded(&mut c, WINE_TIMEOUT)?;
        if out.code != Some(0) {
            bail!(
                "pslist.exe failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(emu::parse_pslist(&out.stdout))
    }

    /// The SIDs under HKEY_USERS that are users (`S-1-5-21-...`, not `_Classes`).
    pub fn user_sids(&self) -> Result<Vec<String>> {
        let out = self.cmd("reg query HKU")?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().strip_prefix("HKEY_USERS\\"))
            .filter(|s| s.starts_with("S-1-5-21-") && !s.ends_with("_Classes"))
            .filter(|s| {
                s.chars()
                    .all(|c| c.is_ascii_digit() || c == '-' || c == 'S')
            })
            .map(str::to_string)
            .collect())
    }

    /// The values under `HKU\<sid>\...\Run`: (name, data) of each `REG_SZ`/`REG_EXPAND_SZ`.
    pub fn run_values(&self, sid: &str) -> Result<Vec<(String, String)>> {
        let out = self.cmd(&format!("reg query \"HKU\\{sid}\\{RUN_KEY}\""))?;
        Ok(parse_reg_values(&out.stdout))
    }
}

/// `    name    REG_SZ    data` lines of `reg query` output.
pub fn parse_reg_values(out: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(out)
        .lines()
        .filter(|l| l.starts_with("    "))
        .filter_map(|l| {
            let l = l.trim_start();
            for ty in ["    REG_SZ    ", "    REG_EXPAND_SZ    "] {
                if let Some((name, data)) = l.split_once(ty) {
                    return Some((name.to_string(), data.trim_end_matches('\r').to_string()));
                }
            }
            None
        })
        .collect()
}

/// What [`start_host`] started.
#[derive(Debug, Default)]
pub struct Started {
    pub server_pid: u32,
    pub sid: Option<String>,
    pub malware: Option<Malware>,
}

/// Starts a Wine host: its wineserver (kept warm while the lab is up), Wine's services, the
/// computer name, and on an infected host the malware with its Run value. `log` receives the
/// detached processes' output.
pub fn start_host(
    tools: &WineTools,
    programs: &Programs,
    prefix: &Path,
    computer_name: &str,
    malware: Option<&Malware>,
    marker: (&str, &Path),
    log: &Path,
) -> Result<Started> {
    let env = wine_env(prefix, Some(marker));
    // The persistent wineserver, listening before any client runs: a client started while
    // the server still makes its directory can find it half-made and "repair" it, killing
    // the server. A server that dies before it listens is started again (twice at most).
    let start_server = || -> Result<u32> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut server = wine_command(&tools.wineserver, &env);
            server.args(["-p", "-f"]);
            let pid = sys::spawn_detached(server, log)
                .with_context(|| format!("cannot start {}", tools.wineserver.display()))?;
            if wait_server_ready(prefix, pid) || sys::alive(pid) {
                return Ok(pid);
            }
            if attempt == 3 {
                bail!(
                    "the wineserver of {} exited at start; the end of {}:\n{}",
                    prefix.display(),
                    log.display(),
                    sys::tail(log, 30)
                );
            }
        }
    };
    let mut server_pid = start_server()?;
    let p = Prefix {
        tools,
        programs,
        path: prefix.to_path_buf(),
        env: env.clone(),
    };
    // The first command boots the prefix (services.exe, ...): seconds; later ones are fast.
    // Its output goes to the log, not to pipes: the services it starts inherit its stdout and
    // stderr and keep them open for the wineserver's life.
    let log_file = || {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open {}", log.display()))
    };
    // Wine repairs a server directory it finds stale or half-made (an earlier wineserver's,
    // or the one the wineserver above was still writing) and then exits asking to be run
    // again: the boot is retried for that, and only for that, with a wineserver of its own
    // again (the one started above may have died on the repaired directory; a server Wine
    // would start by itself is not the persistent one the lab tracks). The message is looked
    // for anywhere in this attempt's part of the log: the dying server may write after it.
    const TMPDIR_FIXED: &str = "fixed a temporary directory error";
    let mut attempt = 0;
    loop {
        attempt += 1;
        let log_start = fs::metadata(log).map(|m| m.len()).unwrap_or(0);
        let mut boot = wine_command(&tools.wine64, &env);
        boot.args(["cmd", "/c", "echo", "pushscan-lab:", "prefix", "booted"])
            .current_dir(prefix.join("drive_c"))
            .stdin(Stdio::null())
            .stdout(log_file()?)
            .stderr(log_file()?);
        let mut child = boot.spawn().context("cannot start Wine")?;
        let deadline = Instant::now() + WINE_TIMEOUT;
        let status = loop {
            if let Some(st) = child.try_wait()? {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!(
                    "Wine did not boot {} within {WINE_TIMEOUT:?}; the end of {}:\n{}",
                    prefix.display(),
                    log.display(),
                    sys::tail(log, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if status.success() {
            break;
        }
        let tail = sys::tail(log, 30);
        if attempt < 3 && log_since(log, log_start).contains(TMPDIR_FIXED) {
            sys::kill_tree(&[server_pid], Duration::from_secs(2));
            server_pid = start_server()?;
            continue;
        }
        bail!(
            "Wine's cmd.exe did not run in {} ({status}); the end of {}:\n{}",
            prefix.display(),
            log.display(),
            tail
        );
    }
    // Wine sets ActiveComputerName from the Linux host name when the wineserver starts;
    // GetComputerName (and %COMPUTERNAME%) read it, so the lab sets it per host after that.
    for key in ["ComputerName", "ActiveComputerName"] {
        let out = p.cmd(&format!(
            "reg add \"HKLM\\System\\CurrentControlSet\\Control\\ComputerName\\{key}\" /v \
             ComputerName /t REG_SZ /d \"{computer_name}\" /f"
        ))?;
        if out.code != Some(0) {
            bail!("cannot set the computer name of {}", prefix.display());
        }
    }
    let sid = p.user_sids()?.into_iter().next();
    let mut started = Started {
        server_pid,
        sid,
        malware: None,
    };
    if let Some(m) = malware {
        let mut m = m.clone();
        let image = emu_path(prefix, &m.image)?;
        if let Some(dir) = image.parent() {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        fs::copy(&programs.malware, &image)
            .with_context(|| format!("cannot write {}", image.display()))?;
        let out = p.cmd(&format!(
            "reg add \"HKCU\\{RUN_KEY}\" /v \"{}\" /t REG_SZ /d \"{}\" /f",
            m.value_name, m.image
        ))?;
        if out.code != Some(0) {
            bail!(
                "cannot set the Run value in {}: {}",
                prefix.display(),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        let mut run = wine_command(&tools.wine64, &env);
        run.arg(&m.image).current_dir(prefix.join("drive_c"));
        let pid = sys::spawn_detached(run, log).context("cannot start the malware")?;
        m.linux_pid = Some(pid);
        let deadline = Instant::now() + WINE_TIMEOUT;
        loop {
            let procs = p.processes()?;
            if let Some(found) = procs
                .iter()
                .find(|x| x.image.eq_ignore_ascii_case(&m.image))
            {
                m.windows_pid = Some(found.pid);
                break;
            }
            if Instant::now() > deadline || !sys::alive(pid) {
                bail!(
                    "the malware {} did not start in {}",
                    m.image,
                    prefix.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        started.malware = Some(m);
    }
    Ok(started)
}

/// Waits (at most 10 s) until the wineserver just started listens on its socket, so the
/// first client does not race the server making its directory. Debian's Wine keeps the
/// directory's parent, a private `mkdtemp` directory, in `<prefix>/wineserver` (created
/// empty, then written: empty means "not yet"); upstream Wine uses `/tmp/.wine-<uid>`.
/// True once it listens; false when it died first or after the wait.
fn wait_server_ready(prefix: &Path, server_pid: u32) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(meta) = fs::metadata(prefix) else {
        return false;
    };
    let leaf = format!("server-{:x}-{:x}", meta.dev(), meta.ino());
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && sys::alive(server_pid) {
        let mut parents = vec![PathBuf::from(format!("/tmp/.wine-{uid}"))];
        if let Ok(dir) = fs::read_to_string(prefix.join("wineserver")) {
            let dir = dir.trim_end_matches(['\0', '\n']);
            if !dir.is_empty() {
                // Relative to $TMPDIR (else /tmp), as Wine made it; an absolute path as is.
                parents.push(std::env::temp_dir().join(dir));
            }
        }
        if parents
            .iter()
            .any(|p| p.join(&leaf).join("socket").exists())
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// What `log` gained after byte `start` (lossy UTF-8, at most its last 64 KiB).
fn log_since(log: &Path, start: u64) -> String {
    use std::io::{Seek as _, SeekFrom};
    let Ok(mut f) = fs::File::open(log) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(start.max(len.saturating_sub(64 * 1024))));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// The Linux path of a `C:\users\...` path whose directories may not exist yet (components
/// matched case-insensitively where they exist, else taken as written).
fn emu_path(prefix: &Path, win: &str) -> Result<PathBuf> {
    let rest = win
        .strip_prefix("C:\\")
        .with_context(|| format!("{win}: not a C:\\ path"))?;
    let mut out = prefix.join("drive_c");
    for part in rest.split('\\').filter(|p| !p.is_empty()) {
        if part == ".." || part == "." || part.contains('/') {
            bail!("{win}: not a plain path");
        }
        let lower = part.to_lowercase();
        let existing = fs::read_dir(&out).ok().and_then(|rd| {
            rd.flatten()
                .find(|e| e.file_name().to_string_lossy().to_lowercase() == lower)
        });
        out = match existing {
            Some(e) => e.path(),
            None => out.join(part),
        };
    }
    Ok(out)
}

/// Stops every Windows process of the prefix and its wineserver (`wineserver -k`), then waits
/// (bounded) for the recorded server to go. Errors are not fatal: `down`'s marker sweep kills
/// what is left.
pub fn stop_host(tools: &WineTools, prefix: &Path, server_pid: Option<u32>) {
    let env = wine_env(prefix, None);
    let _ = run_bounded(
        wine_command(&tools.wineserver, &env).arg("-k"),
        Duration::from_secs(10),
    );
    if let Some(pid) = server_pid {
        let deadline = Instant::now() + Duration::from_secs(5);
        while sys::alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A Run value found under HKEY_USERS.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunValue {
    pub sid: String,
    pub name: String,
    pub data: String,
}

/// The live state of a Wine host (`pushscan-lab wine-inspect --json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Inspection {
    pub host: String,
    pub processes: Vec<WinProcess>,
    pub run_values: Vec<RunValue>,
    /// Each asked Windows path: whether it exists (Wine's `if exist`).
    pub files: std::collections::BTreeMap<String, bool>,
    pub firewall_rules: Vec<FirewallRule>,
}

/// Reads the live state of Wine host `host` (name or address) of the running lab in `dir`:
/// processes and Run values through its wineserver, `files` by Wine's `if exist`, and the
/// emulated firewall rules.
pub fn inspect(dir: &Path, host: &str, files: &[String]) -> Result<Inspection> {
    let dir = fs::canonicalize(dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
    let state = crate::fleet::LabState::load(&dir)?
        .with_context(|| format!("no lab runs in {} (no lab.json)", dir.display()))?;
    let h = state
        .hosts
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(host) || h.address.to_string() == host)
        .with_context(|| format!("no host {host:?} in the lab {}", dir.display()))?;
    let wine = h
        .wine
        .as_ref()
        .with_context(|| format!("host {} is not a Wine host", h.name))?;
    let setup = state.wine.as_ref().context("lab.json has no Wine setup")?;
    let p = Prefix {
        tools: &setup.tools,
        programs: &setup.programs,
        path: wine.prefix.clone(),
        env: wine_env(
            &wine.prefix,
            Some((crate::fleet::INSTANCE_ENV, dir.as_path())),
        ),
    };
    let processes: Vec<WinProcess> = p
        .processes()?
        .into_iter()
        .filter(|x| !x.image.to_ascii_lowercase().ends_with("\\pslist.exe"))
        .collect();
    let mut run_values = Vec::new();
    for sid in p.user_sids()? {
        for (name, data) in p.run_values(&sid)? {
            run_values.push(RunValue {
                sid: sid.clone(),
                name,
                data,
            });
        }
    }
    let mut present = std::collections::BTreeMap::new();
    for f in files {
        if f.contains(['"', '%', '!', '^', '&', '|', '<', '>']) || f.chars().any(char::is_control) {
            bail!("{f:?}: not a plain Windows path");
        }
        let out = p.cmd(&format!(
            "if exist \"{f}\" (echo PRESENT) else (echo ABSENT)"
        ))?;
        let text = String::from_utf8_lossy(&out.stdout);
        present.insert(f.clone(), text.contains("PRESENT"));
    }
    let firewall_rules = emu::load_rules(&wine.firewall_store).map_err(anyhow::Error::msg)?;
    Ok(Inspection {
        host: h.name.clone(),
        processes,
        run_values,
        files: present,
        firewall_rules,
    })
}

/// What the serve process needs for one Wine host.
pub fn exec_for(setup: &WineSetup, wine: &WineHost, dir: &Path) -> WineExec {
    WineExec {
        wine64: setup.tools.wine64.clone(),
        prefix: wine.prefix.clone(),
        launch: setup.programs.launch.clone(),
        pslist: setup.programs.pslist.clone(),
        firewall_store: wine.firewall_store.clone(),
        run_dir: wine
            .prefix
            .parent()
            .map(|p| p.join("run"))
            .unwrap_or_else(|| dir.join("run")),
        user: wine.user.clone(),
        env: wine_env(&wine.prefix, Some((crate::fleet::INSTANCE_ENV, dir))),
    }
}

/// The lab-wide Wine setup recorded in `lab.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WineSetup {
    pub tools: WineTools,
    pub programs: Programs,
    pub version: String,
    pub template: PathBuf,
    /// Seconds it took to make the template at this `up` (0: it was cached).
    pub template_secs: f64,
}

/// Reads at most `cap` bytes of a file (for tests and the checker copy).
pub fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    fs::File::open(path)
        .with_context(|| format!("cannot open {}", path.display()))?
        .take(cap)
        .read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malware_paths_follow_the_contract() {
        let m = Malware::new("wfsrvhost.exe", "tanaka");
        assert_eq!(
            m.image,
            r"C:\users\tanaka\AppData\Local\wfsrvhost\wfsrvhost.exe"
        );
        assert_eq!(m.value_name, "wfsrvhost");
        assert_eq!(
            m.runkey,
            r"HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Run\wfsrvhost"
        );
    }

    #[test]
    fn reg_query_values_are_parsed() {
        let out = b"\r\nHKEY_USERS\\S-1-5-21-0-0-0-1000\\Software\\Microsoft\\Windows\\CurrentVersion\\Run\r\n    evil    REG_SZ    C:\\users\\x\\evil.exe\r\n\r\n";
        assert_eq!(
            parse_reg_values(out),
            vec![("evil".to_string(), "C:\\users\\x\\evil.exe".to_string())]
        );
    }

    #[test]
    fn clone_copies_registry_and_links_binaries() {
        let t = tempfile::tempdir().unwrap();
        let tpl = t.path().join("tpl");
        fs::create_dir_all(tpl.join("drive_c/windows/system32")).unwrap();
        fs::write(tpl.join("system.reg"), b"reg").unwrap();
        fs::write(tpl.join("drive_c/windows/win.ini"), b"ini").unwrap();
        fs::write(tpl.join("drive_c/windows/system32/cmd.exe"), b"MZ").unwrap();
        std::os::unix::fs::symlink("../drive_c", tpl.join("c:")).unwrap();
        let dst = t.path().join("dst");
        clone_prefix(&tpl, &dst).unwrap();
        use std::os::unix::fs::MetadataExt as _;
        let links = |p: &Path| fs::metadata(p).unwrap().nlink();
        assert_eq!(links(&dst.join("system.reg")), 1);
        assert_eq!(links(&dst.join("drive_c/windows/win.ini")), 1);
        assert_eq!(links(&dst.join("drive_c/windows/system32/cmd.exe")), 2);
        assert_eq!(
            fs::read_link(dst.join("c:")).unwrap(),
            Path::new("../drive_c")
        );
    }
}
