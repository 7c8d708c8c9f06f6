//! Playbooks: what to push, how to run it, what to bring back, what to remove.
//!
//! A playbook is a small YAML file (see `playbooks/`). It is parsed strictly:
//! an unknown key is an error with its line and column, because a misspelt
//! `cleanup` key that is silently ignored leaves binaries on a whole fleet.
//! Paths in it are relative to the playbook file, so a playbook and its
//! checker can be moved together.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;

use crate::digest::sha256_file;
use crate::located::first_message_line;
use crate::units::{parse_duration, parse_size};

/// Where the checker runs: decides path syntax and command quoting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Linux,
    Windows,
}

impl Platform {
    /// Joins a remote directory and a file name with the platform's separator.
    pub fn join(self, dir: &str, name: &str) -> String {
        let sep = match self {
            Platform::Linux => '/',
            Platform::Windows => '\\',
        };
        let trimmed = dir.trim_end_matches(['/', '\\']);
        if trimmed.is_empty() && dir.starts_with('/') {
            return format!("/{name}");
        }
        format!("{trimmed}{sep}{name}")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checker {
    /// Local path of the checker binary, relative to the playbook file.
    pub path: PathBuf,
    /// Pinned SHA-256 (64 hex digits) of that binary.
    pub sha256: String,
    pub platform: Platform,
    /// File name on the host; defaults to the local file name.
    #[serde(default)]
    pub remote_name: Option<String>,
    /// Windows: the 32-bit build, pushed to hosts without `SysWOW64` (32-bit
    /// Windows); `path`/`sha256` above are then the x64 build.
    #[serde(default)]
    pub x86: Option<Variant>,
}

/// Another build of the checker (e.g. EmoCheck's x86 release).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    pub path: PathBuf,
    pub sha256: String,
}

/// A pinned file pushed beside the checker (`inputs:`): a YARA rules file, a rules archive,
/// a config file. It goes to the work directory, is checked and pushed like the checker
/// (verified locally against its pin before any host is touched, hashed on the host, pushed
/// to a temp name, verified there and renamed), and the checker's arguments name it as
/// `{{ inputs.NAME }}`. An archive is pushed as it is: unpacking it is the checker's (or its
/// wrapper's) business, so what is pinned is exactly what lands on the host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    name: Spanned<String>,
    path: Spanned<PathBuf>,
    sha256: Spanned<String>,
    #[serde(default)]
    remote_name: Option<Spanned<String>>,
}

/// A loaded input (see `RawInput`): its name in templates, local file, pin and file name in
/// the work directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub name: String,
    /// Absolute (or cwd-relative) local path.
    pub local: PathBuf,
    pub sha256: String,
    pub remote_name: String,
}

/// The build of the checker a host gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    pub local: PathBuf,
    pub sha256: String,
    /// "x64"/"x86" when the playbook has two builds, else "".
    pub label: &'static str,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Results {
    /// File-name glob (`*`, `?`) of result files inside `run_dir`.
    #[serde(default = "default_glob")]
    pub glob: String,
    /// The registered parser that reads the results (`crate::parser::REGISTRY`).
    #[serde(deserialize_with = "de_parser")]
    pub parser: String,
    /// Files larger than this are never fetched.
    #[serde(default = "default_max_file_size", deserialize_with = "de_size")]
    pub max_file_size: u64,
    /// At most this many new result files are fetched per host.
    #[serde(default = "default_max_files")]
    pub max_files: usize,
    /// At most this many bytes of result files (new and history together)
    /// are kept per host and run; files past it are dropped, named in the
    /// host's reason.
    #[serde(default = "default_max_host_bytes", deserialize_with = "de_size")]
    pub max_host_bytes: u64,
    /// For `exit_code`: codes meaning "detected" (others but 0 are failures).
    #[serde(default = "default_detected_codes")]
    pub detected_exit_codes: Vec<i64>,
    /// For `hayabusa`: the least level that is a detection (`informational`, `low`,
    /// `medium`, `high`, `critical`, or Hayabusa's `info`, `med`, `crit`).
    #[serde(default, deserialize_with = "de_min_level")]
    pub min_level: Option<crate::model::Severity>,
    /// For `jsonl`: which fields of a vendor's JSON lines are the finding.
    #[serde(default)]
    pub fields: Option<crate::parser::jsonl::FieldMap>,
    /// For `jsonl`: the checker prints its lines on standard output (kept up to
    /// `max_file_size`) instead of writing result files.
    #[serde(default)]
    pub stdout: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cleanup {
    /// Remove the checker binary after the run (the next sweep pushes again).
    #[serde(default)]
    pub checker: bool,
    /// Remove the pinned inputs after the run; unset, they go with the checker.
    #[serde(default)]
    pub inputs: Option<bool>,
    /// Remove this run's result files from the host after fetching them.
    #[serde(default)]
    pub results: bool,
    /// Remove `run_dir` and `work_dir` when they are empty afterwards.
    #[serde(default)]
    pub dirs: bool,
}

/// What the controller keeps between sweeps (`state:`), in one place.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateLimits {
    /// After each sweep, runs that started more than this many days ago are
    /// forgotten with their evidence, as `pushscan prune` does; 0 never.
    #[serde(default = "default_keep_days")]
    pub keep_days: u64,
    /// A warning after a sweep when the state dir (journal and evidence)
    /// is larger than this.
    #[serde(default = "default_state_max_bytes", deserialize_with = "de_size")]
    pub max_bytes: u64,
}

impl Default for StateLimits {
    fn default() -> Self {
        StateLimits {
            keep_days: default_keep_days(),
            max_bytes: default_state_max_bytes(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlaybook {
    name: String,
    #[serde(default)]
    description: Option<String>,
    checker: Checker,
    #[serde(default)]
    inputs: Vec<RawInput>,
    work_dir: String,
    #[serde(default)]
    run_dir: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(deserialize_with = "de_duration")]
    timeout: Duration,
    results: Results,
    #[serde(default)]
    cleanup: Cleanup,
    #[serde(default)]
    rollout: Option<crate::rollout::Rollout>,
    #[serde(default)]
    notify: Option<crate::notify::config::NotifyConfig>,
    #[serde(default)]
    state: StateLimits,
}

/// A loaded, validated playbook.
#[derive(Debug, Clone)]
pub struct Playbook {
    pub source: PathBuf,
    /// The file as read, stored with each run so a run can be explained later.
    pub text: String,
    pub name: String,
    pub description: Option<String>,
    pub checker: Checker,
    /// Absolute (or cwd-relative) local path of the checker.
    pub checker_local: PathBuf,
    /// The x86 build (local path, pin), when the playbook names one.
    pub x86: Option<Build>,
    pub checker_remote_name: String,
    /// Pinned files pushed beside the checker, in the playbook's order.
    pub inputs: Vec<Input>,
    /// Template of the remote directory holding the checker.
    pub work_dir: String,
    /// Template of the remote directory the checker writes results to.
    pub run_dir: String,
    pub args: Vec<String>,
    pub timeout: Duration,
    pub results: Results,
    pub cleanup: Cleanup,
    /// Staged waves (default: one wave of every host).
    pub rollout: crate::rollout::Rollout,
    /// Alerts after each run (`notify.rs`), unless `--notify-config` replaces them.
    pub notify: Option<crate::notify::config::NotifyConfig>,
    /// Retention and the state dir's size warning.
    pub state: StateLimits,
}

/// A playbook error, located when the YAML parser knows where.
#[derive(Debug)]
pub struct PlaybookError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub col: Option<usize>,
    pub message: String,
}

impl fmt::Display for PlaybookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::located::write(f, &self.file, self.line, self.col, &self.message)
    }
}

impl std::error::Error for PlaybookError {}

impl Playbook {
    pub fn load(path: &Path) -> Result<Playbook, PlaybookError> {
        let text = std::fs::read_to_string(path).map_err(|e| PlaybookError {
            file: path.to_path_buf(),
            line: None,
            col: None,
            message: format!("cannot read playbook: {e}"),
        })?;
        Playbook::parse(&text, path)
    }

    pub fn parse(text: &str, source: &Path) -> Result<Playbook, PlaybookError> {
        let err = |message: String| PlaybookError {
            file: source.to_path_buf(),
            line: None,
            col: None,
            message,
        };
        let raw: RawPlaybook = serde_saphyr::from_str(text).map_err(|e| {
            let loc = e.location();
            PlaybookError {
                file: source.to_path_buf(),
                line: loc.and_then(|l| usize::try_from(l.line()).ok()),
                col: loc.and_then(|l| usize::try_from(l.column()).ok()),
                message: first_message_line(&e.to_string()),
            }
        })?;
        let check_pin = |field: &str, pin: &str, path: &Path| {
            let pin = pin.trim().to_ascii_lowercase();
            if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err(format!(
                    "{field} must be the 64 hex digits of the checker's SHA-256 \
                     (got {pin:?}); compute and record it with `pushscan pin {} --playbook {}`",
                    path.display(),
                    source.display()
                )));
            }
            Ok(pin)
        };
        let pin = check_pin("checker.sha256", &raw.checker.sha256, &raw.checker.path)?;
        let base = source.parent().unwrap_or_else(|| Path::new("."));
        let local = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let checker_local = local(&raw.checker.path);
        let x86 = match &raw.checker.x86 {
            Some(v) => {
                if raw.checker.platform != Platform::Windows {
                    return Err(err("checker.x86 applies to platform: windows only".into()));
                }
                Some(Build {
                    local: local(&v.path),
                    sha256: check_pin("checker.x86.sha256", &v.sha256, &v.path)?,
                    label: "x86",
                })
            }
            None => None,
        };
        let remote_name = match &raw.checker.remote_name {
            Some(n) => n.clone(),
            None => raw
                .checker
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| err("checker.path has no file name".into()))?,
        };
        if remote_name.is_empty()
            || remote_name.contains(['/', '\\'])
            || remote_name == "."
            || remote_name == ".."
        {
            return Err(err(format!(
                "checker.remote_name {remote_name:?} must be a plain file name"
            )));
        }
        let inputs = check_inputs(&raw.inputs, &remote_name, source, &local)?;
        if raw.timeout.is_zero() {
            return Err(err("timeout must be more than zero".into()));
        }
        if raw.results.max_host_bytes == 0 {
            return Err(err("results.max_host_bytes must be more than 0".into()));
        }
        if raw.results.max_files == 0 {
            return Err(err("results.max_files must be at least 1".into()));
        }
        // Settings another parser would silently ignore are refused instead.
        let parser = raw.results.parser.as_str();
        if (raw.results.stdout || raw.results.fields.is_some()) && parser != "jsonl" {
            return Err(err(
                "results.stdout and results.fields apply to parser jsonl only".into(),
            ));
        }
        if raw.results.min_level.is_some() && parser != "hayabusa" {
            return Err(err(
                "results.min_level applies to parser hayabusa only".into()
            ));
        }
        let rollout = raw.rollout.unwrap_or_default();
        rollout.check().map_err(err)?;
        if let Some(n) = &raw.notify {
            n.check(crate::notify::config::Origin::Playbook)
                .map_err(|e| PlaybookError {
                    file: source.to_path_buf(),
                    line: e.line,
                    col: e.col,
                    message: format!("notify: {}", e.message),
                })?;
        }
        let mut checker = raw.checker;
        checker.sha256 = pin;
        let run_dir = raw
            .run_dir
            .unwrap_or_else(|| checker.platform.join("{{ work_dir }}", "results"));
        Ok(Playbook {
            source: source.to_path_buf(),
            text: text.to_string(),
            name: raw.name,
            description: raw.description,
            checker,
            checker_local,
            x86,
            checker_remote_name: remote_name,
            inputs,
            work_dir: raw.work_dir,
            run_dir,
            args: raw.args,
            timeout: raw.timeout,
            results: raw.results,
            cleanup: raw.cleanup,
            rollout,
            notify: raw.notify,
            state: raw.state,
        })
    }

    /// Whether a sweep removes the inputs after the run (`cleanup.inputs`, else with the
    /// checker).
    pub fn cleans_inputs(&self) -> bool {
        self.cleanup.inputs.unwrap_or(self.cleanup.checker)
    }

    /// The main build (x64 when there are two).
    pub fn main_build(&self) -> Build {
        Build {
            local: self.checker_local.clone(),
            sha256: self.checker.sha256.clone(),
            label: if self.x86.is_some() { "x64" } else { "" },
        }
    }

    /// Hashes the local checker(s) and inputs and compares them with the pins. Called
    /// before any host is touched: a tampered or swapped file stops the
    /// sweep. Returns the main build's size.
    pub fn verify_checker(&self) -> anyhow::Result<u64> {
        let mut size = 0;
        for (i, b) in std::iter::once(self.main_build())
            .chain(self.x86.clone())
            .enumerate()
        {
            let (digest, n) = sha256_file(&b.local)
                .map_err(|e| anyhow::anyhow!("cannot read checker {}: {e}", b.local.display()))?;
            if digest != b.sha256 {
                anyhow::bail!(
                    "checker {} has SHA-256 {digest}, but the playbook {} pins {}: \
                     refusing to push an unpinned binary",
                    b.local.display(),
                    self.source.display(),
                    b.sha256
                );
            }
            if i == 0 {
                size = n;
            }
        }
        for input in &self.inputs {
            let (digest, _) = sha256_file(&input.local).map_err(|e| {
                anyhow::anyhow!(
                    "cannot read input {} ({}): {e}",
                    input.name,
                    input.local.display()
                )
            })?;
            if digest != input.sha256 {
                anyhow::bail!(
                    "input {} ({}) has SHA-256 {digest}, but the playbook {} pins {}: \
                     refusing to push an unpinned file",
                    input.name,
                    input.local.display(),
                    self.source.display(),
                    input.sha256
                );
            }
        }
        Ok(size)
    }
}

/// Which pin `record_pin` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinTarget<'a> {
    /// `checker.sha256`.
    Checker,
    /// `checker.x86.sha256`.
    X86,
    /// The `sha256` of the `inputs:` entry with this name.
    Input(&'a str),
}

/// Writes `pin` as the playbook's `checker.sha256` (or `checker.x86.sha256`, or an input's
/// `sha256`), editing only that line so comments and layout stay. Refuses when `file`
/// is not the file the playbook names there, and checks that the edited
/// playbook loads and that the pin matches before replacing the file
/// (written beside it, then renamed).
pub fn record_pin(
    playbook: &Path,
    file: &Path,
    pin: &str,
    target: PinTarget<'_>,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let text = std::fs::read_to_string(playbook)
        .with_context(|| format!("cannot read playbook {}", playbook.display()))?;
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let end_of = |from: usize, lines: &[String]| {
        let base = indent(&lines[from]);
        (from + 1..lines.len())
            .find(|&i| {
                let t = lines[i].trim();
                !t.is_empty() && !t.starts_with('#') && indent(&lines[i]) <= base
            })
            .unwrap_or(lines.len())
    };
    if let PinTarget::Input(name) = target {
        let at = input_pin_line(&lines, name)?;
        let key = lines[at].find("sha256:").context("no sha256 key")?;
        lines[at] = format!("{}sha256: \"{pin}\"", &lines[at][..key]);
        return finish_pin(playbook, &text, &lines, file, target);
    }
    let x86 = target == PinTarget::X86;
    // The `checker:` block, then (for --x86) its `x86:` block, then the
    // first `sha256:` key directly inside.
    let start = lines
        .iter()
        .position(|l| l.trim_end() == "checker:")
        .context("the playbook has no top-level `checker:` block")?;
    let mut scope = start;
    if x86 {
        let end = end_of(start, &lines);
        scope = (start + 1..end)
            .find(|&i| lines[i].trim_start().starts_with("x86:"))
            .context("the playbook's checker has no `x86:` block; add one with its path")?;
    }
    let end = end_of(scope, &lines);
    let child = (scope + 1..end)
        .find(|&i| !lines[i].trim().is_empty() && !lines[i].trim_start().starts_with('#'))
        .map(|i| indent(&lines[i]))
        .context("empty checker block")?;
    let at = (scope + 1..end)
        .find(|&i| indent(&lines[i]) == child && lines[i].trim_start().starts_with("sha256:"))
        .context("no `sha256:` key in the checker block to record the pin in")?;
    lines[at] = format!("{}sha256: \"{pin}\"", " ".repeat(child));
    finish_pin(playbook, &text, &lines, file, target)
}

/// The line of the `sha256:` key of the input `name` in the top-level `inputs:` list (block
/// style: `- name: NAME` items, keys one per line).
fn input_pin_line(lines: &[String], name: &str) -> anyhow::Result<usize> {
    use anyhow::Context as _;
    let indent = |l: &str| l.len() - l.trim_start().len();
    let start = lines
        .iter()
        .position(|l| l.trim_end() == "inputs:")
        .context("the playbook has no top-level `inputs:` list")?;
    let end = (start + 1..lines.len())
        .find(|&i| {
            let t = lines[i].trim();
            !t.is_empty() && !t.starts_with('#') && indent(&lines[i]) == 0
        })
        .unwrap_or(lines.len());
    // Items start with `- `; a key of an item is the text after the dash or its indent.
    let items: Vec<usize> = (start + 1..end)
        .filter(|&i| lines[i].trim_start().starts_with("- "))
        .collect();
    let key = |l: &str| {
        let t = l.trim_start();
        t.strip_prefix("- ").unwrap_or(t).trim_start().to_string()
    };
    for (n, &from) in items.iter().enumerate() {
        let to = items.get(n + 1).copied().unwrap_or(end);
        let has_name = (from..to).any(|i| {
            key(&lines[i])
                .strip_prefix("name:")
                .map(|v| {
                    v.split('#')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .trim_matches(['"', '\''])
                        == name
                })
                .unwrap_or(false)
        });
        if has_name {
            return (from..to)
                .find(|&i| key(&lines[i]).starts_with("sha256:"))
                .with_context(|| {
                    format!("the input {name:?} has no `sha256:` key to record the pin in")
                });
        }
    }
    anyhow::bail!(
        "the playbook's inputs: list has no entry `- name: {name}` (written one key per line)"
    )
}

/// Checks the edited playbook (it loads, and the pinned entry names `file`) and replaces the
/// file with it.
fn finish_pin(
    playbook: &Path,
    text: &str,
    lines: &[String],
    file: &Path,
    target: PinTarget<'_>,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let mut new_text = lines.join("\n");
    if text.ends_with('\n') {
        new_text.push('\n');
    }
    let pb = Playbook::parse(&new_text, playbook).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (named, what) = match target {
        PinTarget::X86 => (
            pb.x86.as_ref().map(|b| b.local.clone()).unwrap_or_default(),
            "the checker",
        ),
        PinTarget::Checker => (pb.checker_local.clone(), "the checker"),
        PinTarget::Input(name) => (
            pb.inputs
                .iter()
                .find(|i| i.name == name)
                .map(|i| i.local.clone())
                .unwrap_or_default(),
            "the input",
        ),
    };
    let same = match (std::fs::canonicalize(&named), std::fs::canonicalize(file)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same {
        let field = match target {
            PinTarget::Checker => "checker.path".to_string(),
            PinTarget::X86 => "checker.x86.path".to_string(),
            PinTarget::Input(name) => format!("the path of input {name}"),
        };
        anyhow::bail!(
            "{} names {what} {}, not {}: move the file there (or edit {field}) \
             and pin again",
            playbook.display(),
            named.display(),
            file.display(),
        );
    }
    let tmp = playbook.with_extension("yml.pushscan-tmp");
    std::fs::write(&tmp, new_text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, playbook)
        .with_context(|| format!("cannot replace {}", playbook.display()))?;
    Ok(())
}

/// Checks the `inputs:` list, each error at its place in the file: names usable in
/// templates and unique, pins of 64 hex digits, remote names plain, unique and not the
/// checker's.
fn check_inputs(
    raw: &[RawInput],
    checker_remote: &str,
    source: &Path,
    local: &dyn Fn(&Path) -> PathBuf,
) -> Result<Vec<Input>, PlaybookError> {
    let at = |loc: &serde_saphyr::Location, message: String| PlaybookError {
        file: source.to_path_buf(),
        line: usize::try_from(loc.line()).ok().filter(|l| *l > 0),
        col: usize::try_from(loc.column()).ok().filter(|c| *c > 0),
        message,
    };
    let mut out: Vec<Input> = Vec::new();
    for r in raw {
        let name = r.name.value.trim();
        let usable = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !usable {
            return Err(at(
                &r.name.referenced,
                format!(
                    "inputs: name {name:?} must be letters, digits and '_' (it is used as {{{{ inputs.NAME }}}})"
                ),
            ));
        }
        if out.iter().any(|i| i.name == name) {
            return Err(at(
                &r.name.referenced,
                format!("inputs: the name {name:?} is used twice"),
            ));
        }
        let pin = r.sha256.value.trim().to_ascii_lowercase();
        if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(at(
                &r.sha256.referenced,
                format!(
                    "inputs: {name}: sha256 must be the 64 hex digits of the file's SHA-256 \
                     (got {pin:?}); compute and record it with \
                     `pushscan pin {} --playbook {} --input {name}`",
                    r.path.value.display(),
                    source.display()
                ),
            ));
        }
        let (remote_name, loc) = match &r.remote_name {
            Some(n) => (n.value.clone(), &n.referenced),
            None => (
                r.path
                    .value
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .ok_or_else(|| {
                        at(
                            &r.path.referenced,
                            format!("inputs: {name}: path has no file name"),
                        )
                    })?,
                &r.path.referenced,
            ),
        };
        if remote_name.is_empty()
            || remote_name.contains(['/', '\\'])
            || remote_name == "."
            || remote_name == ".."
            || remote_name.chars().any(char::is_control)
        {
            return Err(at(
                loc,
                format!("inputs: {name}: remote_name {remote_name:?} must be a plain file name"),
            ));
        }
        // Windows compares names without case: two names one host would merge are refused
        // everywhere, so a playbook means the same on every platform.
        let clash = |other: &str| other.eq_ignore_ascii_case(&remote_name);
        if clash(checker_remote) || out.iter().any(|i| clash(&i.remote_name)) {
            return Err(at(
                loc,
                format!(
                    "inputs: {name}: file name {remote_name:?} is already the checker's or another input's in the work directory; set remote_name"
                ),
            ));
        }
        out.push(Input {
            name: name.to_string(),
            local: local(&r.path.value),
            sha256: pin,
            remote_name,
        });
    }
    Ok(out)
}

fn default_glob() -> String {
    "*".to_string()
}
fn default_max_file_size() -> u64 {
    4 * 1024 * 1024
}
fn default_max_files() -> usize {
    16
}
fn default_max_host_bytes() -> u64 {
    16 * 1024 * 1024
}
fn default_keep_days() -> u64 {
    90
}
fn default_state_max_bytes() -> u64 {
    10 * 1024 * 1024 * 1024
}
fn default_detected_codes() -> Vec<i64> {
    vec![1]
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrText {
    Num(u64),
    Text(String),
}

/// A parser name the registry knows (the error, with its place in the file, lists them).
fn de_parser<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    match crate::parser::by_name(&name) {
        Some(_) => Ok(name),
        None => Err(serde::de::Error::custom(crate::parser::unknown(&name))),
    }
}

impl Results {
    /// What the parser gets besides its name.
    pub fn parser_settings(&self) -> crate::parser::Settings {
        crate::parser::Settings {
            detected_exit_codes: self.detected_exit_codes.clone(),
            min_level: self.min_level,
            fields: self.fields.clone(),
            stdout: self.stdout,
        }
    }
}

/// A Hayabusa level, full or abbreviated.
fn de_min_level<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<crate::model::Severity>, D::Error> {
    let s = String::deserialize(d)?;
    crate::parser::hayabusa::level(&s).map(Some).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "unknown level {:?} (informational, low, medium, high, critical)",
            crate::sanitize::display(&s, 40)
        ))
    })
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match NumOrText::deserialize(d)? {
        NumOrText::Num(n) => Ok(Duration::from_secs(n)),
        NumOrText::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
    }
}

fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match NumOrText::deserialize(d)? {
        NumOrText::Num(n) => Ok(n),
        NumOrText::Text(t) => parse_size(&t).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    fn yaml(extra: &str) -> String {
        format!(
            "name: t\nchecker:\n  path: bin/check.sh\n  sha256: {PIN}\n  platform: linux\n\
             work_dir: /tmp/w\ntimeout: 30s\nresults:\n  parser: emocheck\n{extra}"
        )
    }

    #[test]
    fn parses_minimal_playbook_with_defaults() {
        let pb = Playbook::parse(&yaml(""), Path::new("/pb/p.yml")).unwrap();
        assert_eq!(pb.checker_local, PathBuf::from("/pb/bin/check.sh"));
        assert_eq!(pb.checker_remote_name, "check.sh");
        assert_eq!(pb.run_dir, "{{ work_dir }}/results");
        assert_eq!(pb.timeout, Duration::from_secs(30));
        assert_eq!(pb.results.max_file_size, 4 * 1024 * 1024);
        assert_eq!(pb.results.max_host_bytes, 16 * 1024 * 1024);
        assert_eq!((pb.state.keep_days, pb.state.max_bytes), (90, 10 << 30));
        assert!(!pb.cleanup.checker && !pb.cleanup.results && !pb.cleanup.dirs);
    }

    #[test]
    fn every_shipped_playbook_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yml") {
                let text = std::fs::read_to_string(&p).unwrap();
                if let Err(e) = Playbook::parse(&text, &p) {
                    panic!("{}: {e}", p.display());
                }
                n += 1;
            }
        }
        assert!(n >= 6, "only {n} playbooks in {}", dir.display());
    }

    #[test]
    fn results_min_level_and_fields_reach_the_parser() {
        let y = yaml("").replace("parser: emocheck", "parser: hayabusa\n  min_level: crit");
        let pb = Playbook::parse(&y, Path::new("p.yml")).unwrap();
        let s = pb.results.parser_settings();
        assert_eq!(s.min_level, Some(crate::model::Severity::Critical));
        let y = yaml("").replace("parser: emocheck", "parser: hayabusa\n  min_level: severe");
        let e = Playbook::parse(&y, Path::new("p.yml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("p.yml:10:"), "{e}");
        assert!(e.contains("unknown level \"severe\""), "{e}");
        let y = yaml("").replace(
            "parser: emocheck",
            "parser: jsonl\n  fields:\n    title: ioc.name\n    identity: [ioc.name, file]",
        );
        let pb = Playbook::parse(&y, Path::new("p.yml")).unwrap();
        let f = pb.results.parser_settings().fields.unwrap();
        assert!(!pb.results.stdout);
        assert_eq!(f.title, "ioc.name");
        assert_eq!(f.identity, ["ioc.name", "file"]);
        let y = yaml("").replace("parser: emocheck", "parser: jsonl\n  fields:\n    titel: x");
        let e = Playbook::parse(&y, Path::new("p.yml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("p.yml:11:"), "{e}");
    }

    #[test]
    fn unknown_key_is_located() {
        let e =
            Playbook::parse(&yaml("cleanpu:\n  checker: true\n"), Path::new("p.yml")).unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("p.yml:10:1: "), "{s}");
        assert!(s.contains("cleanpu"), "{s}");
    }

    #[test]
    fn notify_section_is_checked_and_located() {
        let pb = Playbook::parse(
            &yaml("notify:\n  webhook:\n    url_env: HOOK\n    format: slack\n"),
            Path::new("p.yml"),
        )
        .unwrap();
        assert!(pb.notify.is_some());
        let e = Playbook::parse(
            &yaml("notify:\n  webhook:\n    url: http://example.com/hook\n"),
            Path::new("p.yml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("p.yml:12:10: notify: ") && e.contains("https"),
            "{e}"
        );
        let e = Playbook::parse(
            &yaml("notify:\n  mail:\n    smtp: {host: h, username: u, password: x}\n"),
            Path::new("p.yml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("p.yml:12:") && e.contains("password_env"),
            "{e}"
        );
    }

    #[test]
    fn bad_pin_is_refused() {
        let text = yaml("").replace(PIN, "abc");
        let e = Playbook::parse(&text, Path::new("p.yml")).unwrap_err();
        assert!(e.to_string().contains("64 hex digits"), "{e}");
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("10"), Ok(10));
        assert!(parse_size("3 parsecs").is_err());
    }

    #[test]
    fn pin_is_recorded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("c64.exe");
        let bin86 = dir.path().join("c86.exe");
        std::fs::write(&bin, b"x64").unwrap();
        std::fs::write(&bin86, b"x86").unwrap();
        let pb = dir.path().join("pb.yml");
        let zero = "0".repeat(64);
        let text = format!(
            "# keep me\nname: t\nchecker:\n  path: c64.exe\n  sha256: \"{zero}\"  # fill in\n  \
             platform: windows\n  x86:\n    path: c86.exe\n    sha256: \"{zero}\"\n\
             work_dir: 'C:\\W'\ntimeout: 1m\nresults:\n  parser: emocheck\n"
        );
        std::fs::write(&pb, &text).unwrap();
        let (h64, _) = sha256_file(&bin).unwrap();
        let (h86, _) = sha256_file(&bin86).unwrap();
        record_pin(&pb, &bin, &h64, PinTarget::Checker).unwrap();
        record_pin(&pb, &bin86, &h86, PinTarget::X86).unwrap();
        let loaded = Playbook::load(&pb).unwrap();
        assert_eq!(loaded.checker.sha256, h64);
        assert_eq!(loaded.x86.as_ref().unwrap().sha256, h86);
        loaded.verify_checker().unwrap();
        assert!(std::fs::read_to_string(&pb)
            .unwrap()
            .starts_with("# keep me\n"));
        // Another file than the one the playbook names is refused.
        let other = dir.path().join("other.exe");
        std::fs::write(&other, b"x64").unwrap();
        let e = record_pin(&pb, &other, &h64, PinTarget::Checker)
            .unwrap_err()
            .to_string();
        assert!(e.contains("names the checker"), "{e}");
    }

    fn with_inputs(inputs: &str) -> String {
        yaml("").replacen("work_dir:", &format!("inputs:\n{inputs}work_dir:"), 1)
    }

    #[test]
    fn inputs_are_loaded_and_checked_at_their_place() {
        let pb = Playbook::parse(
            &with_inputs(&format!(
                "  - name: rules\n    path: rules/incident.yar\n    sha256: {PIN}\n\
                 \x20 - name: cfg\n    path: c.toml\n    sha256: {PIN}\n    remote_name: yr.toml\n"
            )),
            Path::new("/pb/p.yml"),
        )
        .unwrap();
        let names: Vec<_> = pb
            .inputs
            .iter()
            .map(|i| (i.name.as_str(), i.remote_name.as_str()))
            .collect();
        assert_eq!(names, [("rules", "incident.yar"), ("cfg", "yr.toml")]);
        assert_eq!(pb.inputs[0].local, PathBuf::from("/pb/rules/incident.yar"));
        // Cleaned with the checker unless said otherwise.
        assert!(!pb.cleans_inputs());

        let e = Playbook::parse(
            &with_inputs("  - name: rules\n    path: r.yar\n    sha256: abc\n"),
            Path::new("p.yml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("p.yml:9:13: ") && e.contains("--input rules"),
            "{e}"
        );
        let e = Playbook::parse(
            &with_inputs(&format!(
                "  - name: x\n    path: check.sh\n    sha256: {PIN}\n"
            )),
            Path::new("p.yml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("p.yml:8:11: ") && e.contains("checker's"),
            "{e}"
        );
        let e = Playbook::parse(
            &with_inputs(&format!(
                "  - name: a-b\n    path: r.yar\n    sha256: {PIN}\n"
            )),
            Path::new("p.yml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("p.yml:7:11: ") && e.contains("letters"),
            "{e}"
        );
    }

    #[test]
    fn input_pins_are_verified_and_recorded() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("check.sh"), b"#!/bin/sh\n").unwrap();
        std::fs::write(dir.path().join("r.yar"), b"rule a { condition: true }\n").unwrap();
        let (hc, _) = sha256_file(&dir.path().join("check.sh")).unwrap();
        let (hr, _) = sha256_file(&dir.path().join("r.yar")).unwrap();
        let pb = dir.path().join("pb.yml");
        std::fs::write(
            &pb,
            format!(
                "name: t\nchecker:\n  path: check.sh\n  sha256: {hc}\n  platform: linux\n\
                 inputs:\n  - name: rules  # the incident's\n    path: r.yar\n    sha256: \"{PIN}\"\n\
                 work_dir: /tmp/w\nargs: ['{{{{ inputs.rules }}}}']\ntimeout: 30s\n\
                 results:\n  parser: exit_code\n"
            ),
        )
        .unwrap();
        let e = Playbook::load(&pb)
            .unwrap()
            .verify_checker()
            .unwrap_err()
            .to_string();
        assert!(e.contains("input rules") && e.contains("refusing"), "{e}");
        // Another file than the input's is refused; the right one is recorded in place.
        let e = record_pin(
            &pb,
            &dir.path().join("check.sh"),
            &hr,
            PinTarget::Input("rules"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("names the input"), "{e}");
        let e = record_pin(
            &pb,
            &dir.path().join("r.yar"),
            &hr,
            PinTarget::Input("nope"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no entry"), "{e}");
        record_pin(
            &pb,
            &dir.path().join("r.yar"),
            &hr,
            PinTarget::Input("rules"),
        )
        .unwrap();
        let loaded = Playbook::load(&pb).unwrap();
        assert_eq!(loaded.inputs[0].sha256, hr);
        loaded.verify_checker().unwrap();
        assert!(std::fs::read_to_string(&pb)
            .unwrap()
            .contains("  - name: rules  # the incident's\n"));
    }

    #[test]
    fn join_uses_platform_separator() {
        assert_eq!(Platform::Linux.join("/tmp/a/", "b"), "/tmp/a/b");
        assert_eq!(Platform::Windows.join("C:\\W\\", "b"), "C:\\W\\b");
        assert_eq!(Platform::Linux.join("/", "b"), "/b");
    }
}
