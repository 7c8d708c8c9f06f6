//! The lab spec: what fleet `pushscan-lab up` builds, read from YAML (`lab/spec.yml` documents
//! every key and its default). Unknown keys are errors located by line and column. A spec is
//! turned into a [`HostPlan`] per host by [`Spec::plan`]: addresses counted up from
//! `base_address` (skipping last octets 0 and 255, so after .254 the third octet steps), names
//! from `name_pattern`, and an OU and a scenario per host drawn by weight. The draw is
//! deterministic: the counts per OU and per scenario follow the weights (largest remainder, and
//! every entry with a positive weight gets at least one host when there are enough hosts), and
//! which host gets which is a shuffle seeded by `seed`, so one spec and one host count always
//! give the same fleet.

use std::collections::HashSet;
use std::fmt;
use std::io::Read as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use serde_saphyr::MessageFormatter as _;

/// The first address of a fleet unless the spec says otherwise.
pub const DEFAULT_BASE_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 10, 1);
/// Name pattern unless the spec says otherwise.
pub const DEFAULT_NAME_PATTERN: &str = "PC-{ou}-{n:03}";
/// The lab account unless the spec names one.
pub const DEFAULT_USERNAME: &str = "labadmin";
/// Latency of a `slow` host that does not say `latency_ms`.
pub const DEFAULT_SLOW_LATENCY_MS: u64 = 500;
/// The spec shipped in the repository (`lab/spec.yml`), used when no spec file is given.
pub const DEFAULT_SPEC_YAML: &str = include_str!("../spec.yml");

/// A whole lab spec, as written in YAML.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Number of hosts (overridden by `up --hosts`).
    #[serde(default = "default_hosts")]
    pub hosts: usize,
    /// The first host's address; must be in 127.0.0.0/8.
    #[serde(default = "default_base_address")]
    pub base_address: Ipv4Addr,
    /// Host names: `{ou}` is the OU name, `{n}` the host's number (1-based), `{n:03}` the
    /// number zero-padded to 3 digits (any width).
    #[serde(default = "default_name_pattern")]
    pub name_pattern: String,
    /// Seed of the deterministic OU / scenario assignment.
    #[serde(default)]
    pub seed: u64,
    /// Organisational units (inventory groups `ou_<name>`), drawn by weight.
    #[serde(default = "default_ous")]
    pub ous: Vec<Ou>,
    /// What the hosts do, drawn by weight.
    #[serde(default = "default_scenarios")]
    pub scenarios: Vec<Scenario>,
    #[serde(default)]
    pub smb: SmbSpec,
    #[serde(default)]
    pub winrm: WinrmSpec,
    #[serde(default)]
    pub account: AccountSpec,
    #[serde(default)]
    pub svcctl: SvcctlSpec,
}

/// The lab's service control manager (`\PIPE\svcctl` behind smbd).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SvcctlSpec {
    /// How long RStartServiceW waits for a service process that never reports to the SCM
    /// before it kills it and answers 1053 (Windows: 30000).
    #[serde(default = "default_start_timeout_ms")]
    pub start_timeout_ms: u64,
}

impl Default for SvcctlSpec {
    fn default() -> Self {
        SvcctlSpec {
            start_timeout_ms: default_start_timeout_ms(),
        }
    }
}

fn default_start_timeout_ms() -> u64 {
    crate::svcctl::DEFAULT_START_TIMEOUT_MS
}

/// An organisational unit.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Ou {
    /// Used in host names (`{ou}`) and as inventory group `ou_<name>` (lower case).
    pub name: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Further inventory groups every host of this OU belongs to (e.g. rollout waves).
    #[serde(default)]
    pub groups: Vec<String>,
}

/// What a host does when scanned.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ScenarioKind {
    /// The checker reports "not detected".
    Clean,
    /// The checker reports one Emotet process (fields from the scenario).
    Infected,
    /// The checker never finishes.
    Hang,
    /// The checker writes half a report and exits 139.
    Crash,
    /// The checker exits 0 without writing a report.
    Noreport,
    /// The host's account has another password than the one in `lab.env` (WinRM and SMB).
    WrongPassword,
    /// Nothing listens for this host: neither SMB nor WinRM.
    PortClosed,
    /// WinRM answers, SMB is not served on this address.
    SmbDown,
    /// WinRM answers after an added latency (`latency_ms`); the checker is clean.
    Slow,
}

impl ScenarioKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ScenarioKind::Clean => "clean",
            ScenarioKind::Infected => "infected",
            ScenarioKind::Hang => "hang",
            ScenarioKind::Crash => "crash",
            ScenarioKind::Noreport => "noreport",
            ScenarioKind::WrongPassword => "wrong_password",
            ScenarioKind::PortClosed => "port_closed",
            ScenarioKind::SmbDown => "smb_down",
            ScenarioKind::Slow => "slow",
        }
    }

    /// The stand-in checker's `/scenario` for this kind.
    pub fn checker_scenario(self) -> &'static str {
        match self {
            ScenarioKind::Infected => "detected",
            ScenarioKind::Hang => "hang",
            ScenarioKind::Crash => "crash",
            ScenarioKind::Noreport => "noreport",
            ScenarioKind::Clean
            | ScenarioKind::WrongPassword
            | ScenarioKind::PortClosed
            | ScenarioKind::SmbDown
            | ScenarioKind::Slow => "clean",
        }
    }

    /// Whether SMB is served on the host's address.
    pub fn serves_smb(self) -> bool {
        !matches!(self, ScenarioKind::PortClosed | ScenarioKind::SmbDown)
    }

    /// Whether WinRM answers on the host's address.
    pub fn serves_winrm(self) -> bool {
        self != ScenarioKind::PortClosed
    }
}

impl fmt::Display for ScenarioKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Report language of the checker (the Windows UI language of the host).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Locale {
    #[default]
    En,
    Ja,
    Fr,
}

impl Locale {
    pub fn as_str(self) -> &'static str {
        match self {
            Locale::En => "en",
            Locale::Ja => "ja",
            Locale::Fr => "fr",
        }
    }
}

/// Encoding of host names, process names and paths in reports (the host's OEM code page).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PathEncoding {
    /// As given (UTF-8).
    #[default]
    Utf8,
    /// Shift_JIS as Windows writes it (Japanese Windows' OEM code page).
    Cp932,
}

/// One entry of the scenario mix.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub kind: ScenarioKind,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Report language.
    #[serde(default)]
    pub locale: Locale,
    /// Report encoding of paths and names.
    #[serde(default)]
    pub encoding: PathEncoding,
    /// `infected` only: the detected process's name (default `wfsrvhost.exe`).
    #[serde(default)]
    pub process: Option<String>,
    /// `infected` only: its PID (default 4312).
    #[serde(default)]
    pub pid: Option<u32>,
    /// `infected` only: its image path (default under `C:\Users\<user>\AppData\Local`).
    #[serde(default)]
    pub image: Option<String>,
    /// `infected` only: its run key (default `HKEY_CURRENT_USER\...\Run\wfsrvhost`).
    #[serde(default)]
    pub runkey: Option<String>,
    /// `infected` only: the Windows user in the default image path (default `tanaka`).
    #[serde(default)]
    pub user: Option<String>,
    /// Latency added to every WinRM answer, in milliseconds (any kind; `slow` defaults to
    /// 500).
    #[serde(default)]
    pub latency_ms: Option<u64>,
    /// Processor architecture of the host's Windows (`x64` has `C:\Windows\SysWOW64`).
    #[serde(default)]
    pub arch: Arch,
    /// A Wine-backed host (`docs/lab-wine.md`): its own WINEPREFIX, commands through Wine's
    /// real `cmd.exe`, the Windows build of the lab checker. Kinds `clean` and `infected`
    /// only; an infected Wine host runs a real (harmless) process named `process`.
    #[serde(default)]
    pub wine: bool,
    /// `closed`: the host's WinRM port is not served (SMB and svcctl are), as on a Windows
    /// PC whose WinRM is off (the default on Windows 10 and 11). Default `open` (what the
    /// kind says).
    #[serde(default)]
    pub winrm: WinrmAvailability,
    /// The host's service control manager over `\PIPE\svcctl`: `served` (default), `denied`
    /// (OpenSCManager answers access denied: the account is no administrator there) or
    /// `missing` (the pipe cannot be opened).
    #[serde(default)]
    pub svcctl: SvcctlMode,
}

/// Whether a host's WinRM port is served.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WinrmAvailability {
    /// As the scenario kind says.
    #[default]
    Open,
    /// Not served (SMB and svcctl are).
    Closed,
}

/// What a host's `\PIPE\svcctl` does.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SvcctlMode {
    /// The lab's service control manager (`pushscan_lab::svcctl`).
    #[default]
    Served,
    /// ROpenSCManagerW fails with 5 (access denied).
    Denied,
    /// Opening the pipe fails, as when the service does not run.
    Missing,
}

/// Processor architecture of a simulated Windows.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// 64-bit Windows (the default): has `C:\Windows\SysWOW64`.
    #[default]
    X64,
    /// 32-bit Windows: no `SysWOW64`.
    X86,
}

impl Scenario {
    /// A scenario of `kind` with weight 1 and every default.
    pub fn new(kind: ScenarioKind) -> Scenario {
        Scenario {
            kind,
            weight: 1,
            locale: Locale::En,
            encoding: PathEncoding::Utf8,
            process: None,
            pid: None,
            image: None,
            runkey: None,
            user: None,
            latency_ms: None,
            arch: Arch::X64,
            wine: false,
            winrm: WinrmAvailability::Open,
            svcctl: SvcctlMode::Served,
        }
    }

    /// Whether WinRM answers on the host: the kind allows it and the spec did not close it.
    pub fn serves_winrm(&self) -> bool {
        self.kind.serves_winrm() && self.winrm == WinrmAvailability::Open
    }

    /// The added WinRM latency.
    pub fn latency(&self) -> Duration {
        let ms = match (self.latency_ms, self.kind) {
            (Some(ms), _) => ms,
            (None, ScenarioKind::Slow) => DEFAULT_SLOW_LATENCY_MS,
            (None, _) => 0,
        };
        Duration::from_millis(ms)
    }

    /// The simulator switches of `playbooks/checkers/emocheck-sim.sh` for a host named `host`
    /// (appended by the WinRM simulator to the checker's own arguments).
    pub fn checker_args(&self, host: &str) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "/scenario".into(),
            self.kind.checker_scenario().into(),
            "/host".into(),
            host.into(),
            "/lang".into(),
            self.locale.as_str().into(),
        ];
        if self.encoding == PathEncoding::Cp932 {
            args.extend(["/encoding".into(), "cp932".into()]);
        }
        let fields = [
            ("/user", self.user.clone()),
            ("/process", self.process.clone()),
            ("/pid", self.pid.map(|p| p.to_string())),
            ("/image", self.image.clone()),
            ("/runkey", self.runkey.clone()),
        ];
        for (switch, value) in fields {
            if let Some(value) = value {
                args.push(switch.into());
                args.push(value);
            }
        }
        args
    }

    /// The malware process name of an infected Wine host (default `wfsrvhost.exe`).
    pub fn wine_process(&self) -> String {
        self.process
            .clone()
            .unwrap_or_else(|| "wfsrvhost.exe".to_string())
    }

    fn validate(&self, i: usize) -> Result<()> {
        if self.wine {
            if !matches!(self.kind, ScenarioKind::Clean | ScenarioKind::Infected) {
                bail!(
                    "scenarios[{i}]: wine: true works with kind clean or infected only (not {})",
                    self.kind
                );
            }
            let set: Vec<&str> = [
                ("pid", self.pid.is_some()),
                ("image", self.image.is_some()),
                ("runkey", self.runkey.is_some()),
                ("user", self.user.is_some()),
                ("locale", self.locale != Locale::En),
                ("encoding", self.encoding != PathEncoding::Utf8),
                ("arch", self.arch != Arch::X64),
            ]
            .iter()
            .filter(|(_, set)| *set)
            .map(|(name, _)| *name)
            .collect();
            if !set.is_empty() {
                bail!(
                    "scenarios[{i}] (wine): {} cannot be chosen on a Wine host (Wine assigns the \
                     PID, the image path and run key follow from `process`, the user is {}, \
                     reports are English UTF-8, Windows is 64-bit)",
                    set.join(", "),
                    crate::wine::WINE_USER
                );
            }
            let name = self.wine_process();
            let stem = name.strip_suffix(".exe").unwrap_or("");
            if stem.is_empty()
                || name.len() > 64
                || !stem
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            {
                bail!(
                    "scenarios[{i}].process {name:?}: on a Wine host use a file name ending in \
                     .exe made of letters, digits, '-', '_' and '.'"
                );
            }
        }
        if self.kind != ScenarioKind::Infected {
            let set: Vec<&str> = [
                ("process", self.process.is_some()),
                ("pid", self.pid.is_some()),
                ("image", self.image.is_some()),
                ("runkey", self.runkey.is_some()),
                ("user", self.user.is_some()),
            ]
            .iter()
            .filter(|(_, set)| *set)
            .map(|(name, _)| *name)
            .collect();
            if !set.is_empty() {
                bail!(
                    "scenarios[{i}] (kind {}): {} only apply to kind infected",
                    self.kind,
                    set.join(", ")
                );
            }
        }
        for (name, value) in [
            ("process", &self.process),
            ("image", &self.image),
            ("runkey", &self.runkey),
            ("user", &self.user),
        ] {
            if let Some(v) = value {
                if v.is_empty() || v.chars().any(char::is_control) {
                    bail!("scenarios[{i}].{name} must be non-empty and free of control characters");
                }
            }
        }
        Ok(())
    }
}

/// SMB3 encryption as Samba's `server smb encrypt`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SmbEncryption {
    /// No SMB3 encryption at all: none negotiated, a client that requires it is refused.
    #[default]
    Off,
    /// Samba's own default and Windows' (no `EncryptData`): encryption negotiated and used
    /// when the client encrypts on its own initiative, never demanded.
    IfRequired,
    /// Encrypt when the client supports SMB3 encryption.
    Desired,
    /// Refuse clients that cannot encrypt (SMB 2.x dialects).
    Required,
}

impl SmbEncryption {
    pub fn as_str(self) -> &'static str {
        match self {
            SmbEncryption::Off => "off",
            SmbEncryption::IfRequired => "if_required",
            SmbEncryption::Desired => "desired",
            SmbEncryption::Required => "required",
        }
    }
}

/// The SMB side (one Samba `smbd` for the whole fleet).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SmbSpec {
    #[serde(default = "default_smb_port")]
    pub port: u16,
    #[serde(default)]
    pub encryption: SmbEncryption,
}

impl Default for SmbSpec {
    fn default() -> Self {
        SmbSpec {
            port: default_smb_port(),
            encryption: SmbEncryption::Off,
        }
    }
}

/// The WinRM side (the simulator).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WinrmSpec {
    #[serde(default = "default_http_port")]
    pub http_port: u16,
    /// HTTPS listener with a self-signed certificate (written to `<lab>/tls/`); `null` for none.
    #[serde(default = "default_https_port")]
    pub https_port: Option<u16>,
    /// Accept Basic authentication over plain HTTP (Windows refuses it by default).
    #[serde(default)]
    pub allow_basic_over_http: bool,
    /// Windows' `MaxShellsPerUser` (default 30).
    #[serde(default = "default_max_shells")]
    pub max_shells_per_user: usize,
    /// Windows' `MaxProcessesPerShell` (default 25).
    #[serde(default = "default_max_processes")]
    pub max_processes_per_shell: usize,
    /// Windows' `IdleTimeout` of a shell, in seconds (default 7200).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
}

impl Default for WinrmSpec {
    fn default() -> Self {
        WinrmSpec {
            http_port: default_http_port(),
            https_port: default_https_port(),
            allow_basic_over_http: false,
            max_shells_per_user: default_max_shells(),
            max_processes_per_shell: default_max_processes(),
            idle_timeout_secs: default_idle_timeout(),
        }
    }
}

/// The lab account: a system user for Samba (created if missing), the same name and password
/// for WinRM.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AccountSpec {
    #[serde(default = "default_username")]
    pub username: String,
    /// Generated at each `up` when absent (written to `lab.env`).
    #[serde(default)]
    pub password: Option<String>,
}

impl Default for AccountSpec {
    fn default() -> Self {
        AccountSpec {
            username: default_username(),
            password: None,
        }
    }
}

fn default_hosts() -> usize {
    10
}
fn default_base_address() -> Ipv4Addr {
    DEFAULT_BASE_ADDRESS
}
fn default_name_pattern() -> String {
    DEFAULT_NAME_PATTERN.to_string()
}
fn default_weight() -> u32 {
    1
}
fn default_ous() -> Vec<Ou> {
    vec![Ou {
        name: "LAB".into(),
        weight: 1,
        groups: Vec::new(),
    }]
}
fn default_scenarios() -> Vec<Scenario> {
    vec![Scenario::new(ScenarioKind::Clean)]
}
fn default_smb_port() -> u16 {
    445
}
fn default_http_port() -> u16 {
    5985
}
fn default_https_port() -> Option<u16> {
    Some(5986)
}
fn default_max_shells() -> usize {
    30
}
fn default_max_processes() -> usize {
    25
}
fn default_idle_timeout() -> u64 {
    7200
}
fn default_username() -> String {
    DEFAULT_USERNAME.to_string()
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            hosts: default_hosts(),
            base_address: DEFAULT_BASE_ADDRESS,
            name_pattern: default_name_pattern(),
            seed: 0,
            ous: default_ous(),
            scenarios: default_scenarios(),
            smb: SmbSpec::default(),
            winrm: WinrmSpec::default(),
            account: AccountSpec::default(),
            svcctl: SvcctlSpec::default(),
        }
    }
}

/// One host of a planned fleet.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HostPlan {
    /// 1-based number (`{n}` in the name pattern).
    pub n: usize,
    pub name: String,
    pub address: Ipv4Addr,
    /// OU name as in the spec.
    pub ou: String,
    /// The OU's extra groups.
    pub groups: Vec<String>,
    pub scenario: Scenario,
}

impl Spec {
    /// Parses and validates a spec; errors name `source` and the line:col when known.
    pub fn parse(text: &str, source: &Path) -> Result<Spec> {
        let spec: Spec = serde_saphyr::from_str(text).map_err(|e| {
            let inner = e.without_snippet();
            let msg = serde_saphyr::DefaultMessageFormatter.format_message(inner);
            let msg: String = msg
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            match e.location() {
                Some(l) => anyhow::anyhow!(
                    "{}:{}:{}: invalid lab spec: {msg}",
                    source.display(),
                    l.line(),
                    l.column()
                ),
                None => anyhow::anyhow!("{}: invalid lab spec: {msg}", source.display()),
            }
        })?;
        spec.validate()
            .with_context(|| format!("{}: invalid lab spec", source.display()))?;
        Ok(spec)
    }

    /// Reads, parses and validates a spec file.
    pub fn load(path: &Path) -> Result<Spec> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the lab spec {}", path.display()))?;
        Spec::parse(&text, path)
    }

    /// The shipped default spec (`lab/spec.yml`).
    pub fn shipped() -> Spec {
        Spec::parse(DEFAULT_SPEC_YAML, Path::new("lab/spec.yml"))
            .expect("the shipped lab/spec.yml is valid (tested)")
    }

    /// Checks what the types cannot: counts, weights, names, address range.
    pub fn validate(&self) -> Result<()> {
        if self.hosts == 0 {
            bail!("hosts must be at least 1");
        }
        if self.base_address.octets()[0] != 127 {
            bail!(
                "base_address {} is not a loopback address (127.0.0.0/8): the lab listens on \
                 loopback only",
                self.base_address
            );
        }
        if self.ous.is_empty() {
            bail!("ous must list at least one OU");
        }
        if self.ous.iter().all(|o| o.weight == 0) {
            bail!("at least one OU needs a positive weight");
        }
        let mut seen = HashSet::new();
        for (i, ou) in self.ous.iter().enumerate() {
            if ou.name.is_empty()
                || !ou
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                bail!(
                    "ous[{i}].name {:?}: use letters, digits, '-' and '_' only",
                    ou.name
                );
            }
            if !seen.insert(ou.name.to_ascii_lowercase()) {
                bail!("ous[{i}].name {:?} is listed twice", ou.name);
            }
            for g in &ou.groups {
                if group_name(g).is_empty() {
                    bail!("ous[{i}].groups: {g:?} is not a usable group name");
                }
            }
        }
        if self.scenarios.is_empty() {
            bail!("scenarios must list at least one scenario");
        }
        if self.scenarios.iter().all(|s| s.weight == 0) {
            bail!("at least one scenario needs a positive weight");
        }
        for (i, s) in self.scenarios.iter().enumerate() {
            s.validate(i)?;
        }
        check_pattern(&self.name_pattern)?;
        if self.account.username.is_empty()
            || self.account.username.len() > 32
            || !self
                .account
                .username
                .starts_with(|c: char| c.is_ascii_lowercase())
            || !self
                .account
                .username
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            bail!(
                "account.username {:?}: a system user is created for Samba, so use lower-case \
                 letters, digits, '-' and '_' (starting with a letter, at most 32)",
                self.account.username
            );
        }
        if let Some(p) = &self.account.password {
            if p.is_empty() || p.chars().any(char::is_control) {
                bail!("account.password must be non-empty and free of control characters");
            }
        }
        if self.smb.port == 0 || self.winrm.http_port == 0 || self.winrm.https_port == Some(0) {
            bail!("ports must not be 0");
        }
        let ports = [
            Some(self.smb.port),
            Some(self.winrm.http_port),
            self.winrm.https_port,
        ];
        let ports: Vec<u16> = ports.into_iter().flatten().collect();
        let unique: HashSet<u16> = ports.iter().copied().collect();
        if unique.len() != ports.len() {
            bail!("smb.port, winrm.http_port and winrm.https_port must differ (got {ports:?})");
        }
        if self.svcctl.start_timeout_ms == 0 || self.svcctl.start_timeout_ms > 600_000 {
            bail!(
                "svcctl.start_timeout_ms {} must be between 1 and 600000",
                self.svcctl.start_timeout_ms
            );
        }
        for (i, s) in self.scenarios.iter().enumerate() {
            if s.winrm == WinrmAvailability::Closed && s.kind == ScenarioKind::SmbDown {
                bail!(
                    "scenarios[{i}]: winrm: closed on kind {} leaves nothing served",
                    s.kind
                );
            }
        }
        fleet_addresses(self.base_address, self.hosts)?;
        Ok(())
    }

    /// The fleet this spec describes (`self.hosts` hosts).
    pub fn plan(&self) -> Result<Vec<HostPlan>> {
        self.validate()?;
        let n = self.hosts;
        let addresses = fleet_addresses(self.base_address, n)?;
        let ou_weights: Vec<u32> = self.ous.iter().map(|o| o.weight).collect();
        let sc_weights: Vec<u32> = self.scenarios.iter().map(|s| s.weight).collect();
        let mut rng = SplitMix64(self.seed);
        let ou_of = shuffled(apportion(n, &ou_weights), &mut rng);
        let mut rng = SplitMix64(self.seed ^ 0x5eed_5eed_5eed_5eed);
        let sc_of = shuffled(apportion(n, &sc_weights), &mut rng);
        let mut names = HashSet::new();
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let ou = &self.ous[ou_of[i]];
            let name = render_name(&self.name_pattern, &ou.name, i + 1);
            if !names.insert(name.to_ascii_uppercase()) {
                bail!(
                    "name_pattern {:?} gives host name {name:?} twice: include {{n}}",
                    self.name_pattern
                );
            }
            out.push(HostPlan {
                n: i + 1,
                name,
                address: addresses[i],
                ou: ou.name.clone(),
                groups: ou.groups.clone(),
                scenario: self.scenarios[sc_of[i]].clone(),
            });
        }
        Ok(out)
    }
}

/// An inventory group name for a spec name: lower case, anything but letters, digits and `_`
/// replaced by `_`.
pub fn group_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_matches('_')
        .to_string()
}

/// `n` loopback addresses from `base`, skipping last octets 0 and 255.
pub fn fleet_addresses(base: Ipv4Addr, n: usize) -> Result<Vec<Ipv4Addr>> {
    let mut out = Vec::with_capacity(n);
    let mut current = u32::from(base);
    while out.len() < n {
        let ip = Ipv4Addr::from(current);
        if ip.octets()[0] != 127 {
            bail!("a fleet of {n} hosts from {base} does not fit in 127.0.0.0/8");
        }
        if !matches!(ip.octets()[3], 0 | 255) {
            out.push(ip);
        }
        current = current
            .checked_add(1)
            .context("address overflow while counting the fleet")?;
    }
    Ok(out)
}

/// Checks the placeholders of a name pattern.
fn check_pattern(pattern: &str) -> Result<()> {
    let mut rest = pattern;
    let mut has_n = false;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            bail!("name_pattern {pattern:?}: '{{' without '}}'");
        };
        let inner = &rest[start + 1..start + len];
        match inner {
            "ou" => {}
            "n" => has_n = true,
            _ => match inner.strip_prefix("n:") {
                Some(w)
                    if !w.is_empty() && w.len() <= 2 && w.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    has_n = true
                }
                _ => bail!(
                    "name_pattern {pattern:?}: unknown placeholder {{{inner}}} (use {{ou}}, {{n}} \
                     or {{n:03}})"
                ),
            },
        }
        rest = &rest[start + len + 1..];
    }
    if rest.contains('}') || !has_n {
        bail!("name_pattern {pattern:?} must contain {{n}} (or {{n:03}}) so names are unique");
    }
    Ok(())
}

/// A host name from a (checked) pattern.
pub fn render_name(pattern: &str, ou: &str, n: usize) -> String {
    let mut out = String::new();
    let mut rest = pattern;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let len = rest[start..].find('}').unwrap_or(rest.len() - start);
        let inner = &rest[start + 1..start + len];
        if inner == "ou" {
            out.push_str(ou);
        } else if inner == "n" {
            out.push_str(&n.to_string());
        } else if let Some(w) = inner.strip_prefix("n:") {
            let width: usize = w.parse().unwrap_or(0);
            out.push_str(&format!("{n:0width$}"));
        }
        rest = rest.get(start + len + 1..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

/// Counts per entry for `n` items: proportional to the weights (largest remainder, ties to
/// the earlier entry), then every positive weight raised to at least 1 (taken from the entry
/// with the largest count). With fewer items than positive weights, the heaviest entries get
/// one each.
pub fn apportion(n: usize, weights: &[u32]) -> Vec<usize> {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if total == 0 {
        return vec![0; weights.len()];
    }
    let positive = weights.iter().filter(|&&w| w > 0).count();
    if n < positive {
        // Fewer hosts than entries: one host each for the n heaviest (earlier wins ties).
        let mut order: Vec<usize> = (0..weights.len()).collect();
        order.sort_by(|&a, &b| weights[b].cmp(&weights[a]).then(a.cmp(&b)));
        let mut counts = vec![0; weights.len()];
        for &i in order.iter().take(n) {
            counts[i] = 1;
        }
        return counts;
    }
    let mut counts: Vec<usize> = Vec::with_capacity(weights.len());
    let mut remainders: Vec<(u64, usize)> = Vec::with_capacity(weights.len());
    for (i, &w) in weights.iter().enumerate() {
        let exact = n as u64 * u64::from(w);
        counts.push((exact / total) as usize);
        remainders.push((exact % total, i));
    }
    let mut left = n - counts.iter().sum::<usize>();
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, i) in &remainders {
        if left == 0 {
            break;
        }
        counts[i] += 1;
        left -= 1;
    }
    {
        for i in 0..weights.len() {
            if weights[i] > 0 && counts[i] == 0 {
                let donor = (0..counts.len())
                    .max_by_key(|&j| (counts[j], std::cmp::Reverse(j)))
                    .unwrap_or(0);
                if counts[donor] > 1 {
                    counts[donor] -= 1;
                    counts[i] += 1;
                }
            }
        }
    }
    counts
}

/// Entry indexes repeated by count, shuffled (Fisher-Yates with `rng`).
fn shuffled(counts: Vec<usize>, rng: &mut SplitMix64) -> Vec<usize> {
    let mut v: Vec<usize> = counts
        .iter()
        .enumerate()
        .flat_map(|(i, &c)| std::iter::repeat_n(i, c))
        .collect();
    for i in (1..v.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

/// SplitMix64: a tiny deterministic generator (the same sequence on every platform).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A random password for the lab account: `Lab-` and 20 letters and digits from the kernel's
/// random source (Windows' complexity rules: upper, lower and digit are all present).
pub fn generate_password() -> Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut bytes = [0u8; 64];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom for the lab password")?;
    let mut out = String::from("Lab-");
    // Rejection sampling keeps the draw uniform over the alphabet.
    let limit = 256 - 256 % ALPHABET.len();
    for &b in &bytes {
        if (b as usize) < limit {
            out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
        }
        if out.len() == 24 {
            break;
        }
    }
    if out.len() < 24 {
        bail!("not enough random bytes for the lab password");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_spec_parses_and_plans() {
        let spec = Spec::shipped();
        let plan = spec.plan().unwrap();
        assert_eq!(plan.len(), spec.hosts);
        assert_eq!(plan[0].address, DEFAULT_BASE_ADDRESS);
    }

    #[test]
    fn wine_spec_parses_and_refuses_what_wine_decides() {
        let spec = Spec::load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/spec-wine.yml"
        )))
        .unwrap();
        let plan = spec.plan().unwrap();
        assert!(plan.iter().all(|h| h.scenario.wine));
        let err = Spec::parse(
            "scenarios:\n  - kind: infected\n    wine: true\n    pid: 3\n",
            Path::new("s.yml"),
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("pid cannot be chosen"),
            "{err:#}"
        );
        let err = Spec::parse(
            "scenarios:\n  - kind: hang\n    wine: true\n",
            Path::new("s.yml"),
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("clean or infected only"),
            "{err:#}"
        );
        let err = Spec::parse(
            "scenarios:\n  - kind: infected\n    wine: true\n    process: 'a b.exe'\n",
            Path::new("s.yml"),
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("file name ending in .exe"),
            "{err:#}"
        );
    }

    #[test]
    fn winrm_closed_and_svcctl_faults_parse() {
        let spec = Spec::parse(
            "scenarios:\n  - kind: clean\n    winrm: closed\n  - kind: clean\n    svcctl: denied\n  \
             - kind: clean\n    svcctl: missing\nsvcctl:\n  start_timeout_ms: 250\n",
            Path::new("s.yml"),
        )
        .unwrap();
        assert!(!spec.scenarios[0].serves_winrm());
        assert!(spec.scenarios[1].serves_winrm());
        assert_eq!(spec.scenarios[1].svcctl, SvcctlMode::Denied);
        assert_eq!(spec.scenarios[2].svcctl, SvcctlMode::Missing);
        assert_eq!(spec.svcctl.start_timeout_ms, 250);
        let err = Spec::parse(
            "scenarios:\n  - kind: clean\n    svcctl: maybe\n",
            Path::new("s.yml"),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("s.yml:3:"), "{err}");
        let err = Spec::parse(
            "scenarios:\n  - kind: smb_down\n    winrm: closed\n",
            Path::new("s.yml"),
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("leaves nothing served"),
            "{err:#}"
        );
    }

    #[test]
    fn unknown_key_is_located() {
        let err = Spec::parse("hosts: 3\nsmb:\n  prot: 445\n", Path::new("s.yml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s.yml:3:"), "{err}");
        assert!(err.contains("prot"), "{err}");
    }

    #[test]
    fn addresses_step_the_third_octet() {
        let a = fleet_addresses(Ipv4Addr::new(127, 0, 10, 253), 4).unwrap();
        assert_eq!(
            a,
            [
                Ipv4Addr::new(127, 0, 10, 253),
                Ipv4Addr::new(127, 0, 10, 254),
                Ipv4Addr::new(127, 0, 11, 1),
                Ipv4Addr::new(127, 0, 11, 2)
            ]
        );
        assert!(fleet_addresses(Ipv4Addr::new(127, 255, 255, 250), 10).is_err());
    }

    #[test]
    fn names_from_the_pattern() {
        assert_eq!(render_name("PC-{ou}-{n:03}", "SALES", 7), "PC-SALES-007");
        assert_eq!(render_name("WS{n}", "X", 12), "WS12");
        assert!(check_pattern("PC-{ou}").is_err());
        assert!(check_pattern("PC-{x}-{n}").is_err());
        assert!(check_pattern("PC-{n").is_err());
    }

    #[test]
    fn apportion_follows_weights_and_keeps_every_entry() {
        assert_eq!(apportion(10, &[6, 3, 1]), vec![6, 3, 1]);
        assert_eq!(apportion(10, &[100, 1, 1]), vec![8, 1, 1]);
        assert_eq!(apportion(2, &[1, 1, 1]), vec![1, 1, 0]);
        assert_eq!(apportion(5, &[0, 1]), vec![0, 5]);
        assert_eq!(apportion(2, &[1, 3, 2]), vec![0, 1, 1]);
    }

    #[test]
    fn plan_is_deterministic_and_seeded() {
        let mut spec = Spec::shipped();
        spec.hosts = 50;
        let a = spec.plan().unwrap();
        assert_eq!(a, spec.plan().unwrap());
        spec.seed += 1;
        let b = spec.plan().unwrap();
        assert_ne!(
            a.iter().map(|h| h.scenario.kind).collect::<Vec<_>>(),
            b.iter().map(|h| h.scenario.kind).collect::<Vec<_>>()
        );
    }

    #[test]
    fn infected_fields_only_on_infected() {
        let err = Spec::parse(
            "scenarios:\n  - kind: clean\n    pid: 3\n",
            Path::new("s.yml"),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("pid only apply"), "{err:#}");
    }

    #[test]
    fn checker_args_carry_the_scenario() {
        let mut s = Scenario::new(ScenarioKind::Infected);
        s.locale = Locale::Ja;
        s.encoding = PathEncoding::Cp932;
        s.pid = Some(77);
        s.image = Some(r"C:\x.exe".into());
        assert_eq!(
            s.checker_args("PC-1"),
            [
                "/scenario",
                "detected",
                "/host",
                "PC-1",
                "/lang",
                "ja",
                "/encoding",
                "cp932",
                "/pid",
                "77",
                "/image",
                r"C:\x.exe"
            ]
        );
    }

    #[test]
    fn generated_passwords_differ() {
        let a = generate_password().unwrap();
        assert_eq!(a.len(), 24);
        assert_ne!(a, generate_password().unwrap());
    }
}
