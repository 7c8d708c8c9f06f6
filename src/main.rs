//! The `pushscan` command: flags in, library call, exit code out.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

use pushscan::app::{self, Format, InventoryView, ReportRequest, ReportTarget};
use pushscan::events::Events;
use pushscan::exit;
use pushscan::fleet::{Control, Shutdown};
use pushscan::progress::{Mode, Terminal};
use pushscan::sweep::SweepConfig;
use pushscan::transport::{Access, ConnArgs};

const EXIT_CODES: &str = "\
Exit codes:
  0   every host checked, nothing detected
  1   at least one detection
  2   nothing detected, but some hosts were not checked
  64  usage error (flags, --limit pattern)
  65  invalid inventory, playbook or template
  66  checker missing or not matching its SHA-256 pin
  70  internal error
  74  state directory / journal unusable";

/// `pushscan --version`: scripts/release sets PUSHSCAN_BUILD_VERSION to the package version,
/// the commit and its date, so a copied binary says which source it was built from; other
/// builds print the package version alone.
const VERSION: &str = match option_env!("PUSHSCAN_BUILD_VERSION") {
    Some(v) => v,
    None => env!("CARGO_PKG_VERSION"),
};

#[derive(Parser)]
#[command(
    name = "pushscan",
    version = VERSION,
    about = "Agentless push scanner: push a pinned checker (EmoCheck, ...) to a fleet, run it, collect and report",
    after_help = EXIT_CODES
)]
struct Cli {
    /// More log output on stderr (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Log lines on stderr: plain text with a level (journald, files), or one JSON
    /// object a line (log collectors).
    #[arg(long, value_enum, default_value = "plain", global = true)]
    log_format: LogFormat,
    /// Refuse an inventory whose host entries and ranges, over all its sources, stand
    /// for more than this many hosts (counted before any is made).
    #[arg(long, value_name = "N", global = true, env = "PUSHSCAN_INVENTORY_MAX_HOSTS",
          default_value_t = pushscan::inventory::DEFAULT_MAX_HOSTS)]
    inventory_max_hosts: u64,
    /// Where runs, results and intents are journaled: a directory (its SQLite journal; the
    /// default is the state dir's) or postgres://USER@HOST:PORT/DB?sslmode=verify-full&sslrootcert=CA.pem.
    /// The password never goes in the URL: PUSHSCAN_STORE_PASSWORD_FILE (mode 0600),
    /// passfile=FILE in the URL, PGPASSWORD, or the prompt.
    #[arg(long, value_name = "LOCATION", global = true, env = "PUSHSCAN_STORE")]
    store: Option<String>,
    /// Ansible Vault passwords for vaulted inventory files and values.
    #[command(flatten)]
    vault: pushscan::inventory::vault::VaultArgs,
    #[command(subcommand)]
    command: Command,
}

// One value per process, built once by clap: its size does not matter. (Windows' PathBuf is
// larger than Unix's, which tips the size difference of the variants over clippy's threshold
// there.)
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Push the checker to every selected host, run it, collect and parse results.
    #[command(after_help = concat!(
        "Example:\n  pushscan sweep -i inventories/localhost.yml -p playbooks/demo-local.yml\n  ",
        "pushscan sweep -i hosts.ini -p playbooks/emocheck-ssh.yml --limit 'web:&tokyo:!web3' --forks 100\n  ",
        "pushscan sweep -i hosts.yml -p pb.yml --report report.html --report run.csv\n  ",
        "pushscan sweep -i hosts.yml -p pb.yml --notify-config /etc/pushscan/notify.yml --every 4h --jitter 10m\n\n",
        "Secrets: the SSH password comes from PUSHSCAN_SSH_PASSWORD or --ask-pass, never from a flag.\n\n",
        "--every: one sweep at a time, forever; SIGTERM/Ctrl-C stops it (exit 0) between sweeps at once,\n",
        "during a sweep after the sweep's graceful stop.\n\n",
        "Exit codes: 0 clean, 1 detection, 2 some hosts not checked, 64+ errors (see pushscan --help)."
    ))]
    Sweep(SweepArgs),
    /// Print the waves, each host's transport and port, and what will be pushed where,
    /// without opening a single connection.
    #[command(after_help = concat!(
        "Example:\n  pushscan plan -i inventories/example-windows.yml -p playbooks/emocheck.yml\n  ",
        "pushscan plan -i hosts.yml -p pb.yml --by ou --waves 1,5,20%,100% --format json\n  ",
        "pushscan plan -i pcs.yml -p playbooks/emocheck.yml --probe   # WinRM or commands over SMB?\n\n",
        "Exit codes: 0, or 66 when the checker does not match its pin (the plan is printed anyway)."
    ))]
    Plan {
        /// Inventory: an Ansible YAML/INI file or inventory directory (with group_vars/ and
        /// host_vars/), as Ansible reads it. Repeat to merge several.
        #[arg(short, long, value_name = "FILE|DIR", required = true)]
        inventory: Vec<PathBuf>,
        /// Playbook (see playbooks/).
        #[arg(short, long, value_name = "FILE")]
        playbook: PathBuf,
        /// Ansible host pattern, as for sweep.
        #[arg(short, long, value_name = "PATTERN")]
        limit: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: PlanFormat,
        /// Knock on each host's ports (a TCP connect, nothing sent; 3 s each) and show the
        /// way in each answer means: e.g. a Windows PC whose WinRM does not answer but SMB
        /// does is swept with commands over SMB. Without it the plan opens no connection.
        #[arg(long)]
        probe: bool,
        #[command(flatten)]
        rollout: RolloutArgs,
    },
    /// Show inventories as pushscan reads them, in ansible-inventory's formats.
    #[command(after_help = concat!(
        "Examples:\n  pushscan inventory -i inventories/example-linux.ini --list\n  ",
        "pushscan inventory -i hosts.ini -i extra.yml --graph\n  ",
        "pushscan inventory -i inventories/example-windows.yml --graph ou_osaka_keiri\n  ",
        "pushscan inventory -i hosts.ini --host web01.example.com\n\n",
        "--list prints the JSON that `ansible-inventory --list` prints for the same files.\n\n",
        "Exit codes: 0 shown, 64 unknown host or group or a --limit matching nothing, 65 invalid inventory."
    ))]
    Inventory(InventoryArgs),
    /// Parse checker reports already on disk (by default EmoCheck text or JSON).
    #[command(after_help = concat!(
        "Example:\n  pushscan parse --format json reports/*_emocheck.*\n  ",
        "pushscan parse --checker yara_x yr-scan.ndjson\n  ",
        "pushscan parse --checker hayabusa --min-level high timeline.jsonl\n  ",
        "pushscan parse --playbook playbooks/vendor-ioc.yml ioc.jsonl   # its results: section\n\n",
        "Exit codes: 0 all clean, 1 a detection, 2 an unparseable file."
    ))]
    Parse {
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: ParseFormat,
        /// The registered checker (parser) that reads the files: emocheck, exit_code,
        /// hayabusa, jsonl, yara_x. Default: the playbook's, else emocheck.
        #[arg(long, visible_alias = "parser")]
        checker: Option<String>,
        /// hayabusa: the least level that is a detection (default: the playbook's, else medium).
        #[arg(long, value_name = "LEVEL")]
        min_level: Option<String>,
        /// Read the parser and its settings (min_level, fields) from this playbook's `results:`.
        #[arg(long, value_name = "FILE")]
        playbook: Option<PathBuf>,
        /// Report files (e.g. PC-1_20261120093011_emocheck.txt).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the consolidated report of a run from the journal.
    #[command(after_help = concat!(
        "Example:\n  pushscan report --format html -o report.html\n  ",
        "pushscan report --format csv --bom --crlf -o run.csv   # for Excel\n  ",
        "pushscan report --run 12 --format json\n\n",
        "html is one self-contained file (inline CSS/SVG, nothing fetched): counts, outcome per ",
        "OU/group, detections with their raw reports, then no result, failures by class, clean hosts.\n\n",
        "Exit codes: 0 clean, 1 detection, 2 some hosts not checked (for the run reported)."
    ))]
    Report {
        /// Run ID (see `pushscan runs`); default: the latest run.
        #[arg(long)]
        run: Option<i64>,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: ReportFormat,
        /// Write to this file instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// List hosts not successfully checked for more than this many days.
        #[arg(long, default_value_t = pushscan::report::DEFAULT_BLIND_DAYS)]
        blind_days: u64,
        /// Past results per host: the timeline in html, `history` in json.
        #[arg(long, value_name = "N", default_value_t = pushscan::report::DEFAULT_HISTORY)]
        history: usize,
        /// csv: start with a UTF-8 byte order mark (Excel then reads Japanese/French text right).
        #[arg(long)]
        bom: bool,
        /// csv: end records with CRLF instead of LF.
        #[arg(long)]
        crlf: bool,
        /// csv: one row per host (the default), or one row per finding (a host without
        /// findings still gets one row).
        #[arg(long, value_enum, value_name = "ROWS")]
        csv_rows: Option<CsvRows>,
        #[command(flatten)]
        state: StateArgs,
    },
    /// List past sweeps, newest first.
    #[command(after_help = "Example:\n  pushscan runs --limit 5")]
    Runs {
        /// How many runs to list.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Continue an interrupted or crashed sweep with the settings it was started with.
    #[command(
        after_help = "Example:\n  pushscan resume            # the last unfinished run\n  pushscan resume 12 -k ~/.ssh/id_ops\n\nHosts with a final result keep it; hosts in flight at the crash, never started or busy are redone."
    )]
    Resume {
        /// Run ID [default: the last unfinished run].
        run: Option<i64>,
        /// Hosts worked on at the same time [default: as the run was started].
        #[arg(short, long)]
        forks: Option<usize>,
        #[command(flatten)]
        state: StateArgs,
        #[command(flatten)]
        conn: ConnArgs,
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        notify: NotifyArgs,
    },
    /// Remove from hosts what the journal says a run may have left there (temp files, ...).
    #[command(
        after_help = "Example:\n  pushscan cleanup --dry-run     # show what would be removed (last run)\n  pushscan cleanup 12\n  pushscan cleanup --all\n\nWhat the playbook keeps (EmoCheck reports by default) stays."
    )]
    Cleanup {
        /// Run ID [default: the last run].
        run: Option<i64>,
        /// Every run in the journal.
        #[arg(long, conflicts_with = "run")]
        all: bool,
        /// Print what would be removed, touch nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        state: StateArgs,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// A host's past results, newest first, and reports found on it from before.
    #[command(after_help = "Example:\n  pushscan history PC-SALES-014 --limit 5")]
    History {
        /// Host name as in the inventory.
        host: String,
        /// How many results.
        #[arg(long, default_value_t = 10)]
        limit: usize,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Act on a run's detections: secure evidence, kill, remove, unpersist, isolate;
    /// then check the hosts again. Prints the exact remote commands first.
    #[command(after_help = concat!(
        "Examples:\n  pushscan contain                         # dry run: every command, per host\n  ",
        "pushscan contain --run 12 --host PC-SALES-014 --yes\n  ",
        "pushscan contain --actions evidence,kill --quarantine --yes\n\n",
        "Input is the journal's detections (latest run or --run), never text typed here: image paths,\n",
        "PIDs and Run keys are validated and quoted; a host with a value that does not validate is\n",
        "refused (nothing runs on it) and the others go on. Without --yes the commands are printed and,\n",
        "on a terminal, confirmation is asked; without a terminal nothing runs (exit 64).\n",
        "Every action is journaled before and after: `pushscan history HOST`. Details: docs/contain.md.\n\n",
        "Exit codes: 0 every host contained, verified and re-checked clear; 1 a host still detected\n",
        "after the re-check; 2 a host refused or an action failed/unverified; 64 usage (too many hosts,\n",
        "no confirmation possible)."
    ))]
    Contain(ContainArgs),
    /// Lift the isolation `contain` put on hosts (deletes the pushscan-isolation firewall rules).
    #[command(after_help = concat!(
        "Examples:\n  pushscan uncontain --host PC-SALES-014 --yes\n  ",
        "pushscan uncontain --host PC-SALES-014 -i hosts.yml --credentials creds.yml --yes\n\n",
        "The rules are found by their name: no journal record is needed (give -i when the journal\n",
        "no longer has a run with the host). Exit codes: 0 every host verified free of the rules, 2 not."
    ))]
    Uncontain(UncontainArgs),
    /// Forget runs older than N days, evidence files included.
    #[command(after_help = "Example:\n  pushscan prune --keep-days 90")]
    Prune {
        /// Keep runs started within this many days.
        #[arg(long)]
        keep_days: u64,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Alerts: send a test message through every channel, or list past deliveries.
    Notify {
        #[command(subcommand)]
        command: NotifyCommand,
    },
    /// Print the SHA-256 of a checker binary (or an input file), to pin it in a playbook.
    #[command(
        after_help = "Examples:\n  pushscan pin playbooks/checkers/emocheck-sim.sh\n  pushscan pin checkers/emocheck_x64.exe --playbook playbooks/emocheck.yml\n  pushscan pin checkers/emocheck_x86.exe --playbook playbooks/emocheck.yml --x86\n  pushscan pin rules/incident.yar --playbook playbooks/yara-linux.yml --input rules"
    )]
    Pin {
        /// The checker binary.
        file: PathBuf,
        /// Record the pin in this playbook (its checker.sha256, or checker.x86.sha256
        /// with --x86); the file must be the one the playbook names.
        #[arg(long, value_name = "PLAYBOOK")]
        playbook: Option<PathBuf>,
        /// The binary is the playbook's x86 build.
        #[arg(long, requires = "playbook")]
        x86: bool,
        /// The file is the playbook's input of this name (its `inputs:` entry's sha256).
        #[arg(
            long,
            value_name = "NAME",
            requires = "playbook",
            conflicts_with = "x86"
        )]
        input: Option<String>,
    },
}

#[derive(Args)]
struct ContainArgs {
    /// Run whose detections to act on [default: the latest run].
    #[arg(long)]
    run: Option<i64>,
    /// Only this detected host (repeatable) [default: every detected host of the run].
    #[arg(long = "host", value_name = "HOST")]
    hosts: Vec<String>,
    /// Actions, run in this order whatever the order given.
    #[arg(long, value_delimiter = ',', value_parser = parse_action,
          default_value = "evidence,kill,remove,unpersist,isolate")]
    actions: Vec<pushscan::contain::Action>,
    /// Print the commands; never ask, never run anything.
    #[arg(long, conflicts_with = "yes")]
    dry_run: bool,
    /// Run the commands without asking.
    #[arg(long)]
    yes: bool,
    /// Refuse (before any connection) when more hosts than this are selected.
    #[arg(long, default_value_t = 10)]
    max_hosts: usize,
    /// remove: move the image into a quarantine directory on the host instead of deleting it.
    #[arg(long)]
    quarantine: bool,
    /// evidence: largest image file pulled (e.g. 64MiB).
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    evidence_cap: u64,
    /// isolate: the address the hosts must still reach (this jump host's)
    /// [default: the local address used toward each host].
    #[arg(long, value_name = "IP")]
    jump_address: Option<std::net::IpAddr>,
    /// Do not run the checker again afterwards.
    #[arg(long)]
    no_recheck: bool,
    /// Progress display of the re-check on stderr.
    #[arg(long, value_enum, default_value = "auto")]
    progress: ProgressArg,
    #[command(flatten)]
    state: StateArgs,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(Args)]
struct UncontainArgs {
    /// Host to lift the isolation of (repeatable).
    #[arg(long = "host", value_name = "HOST", required = true)]
    hosts: Vec<String>,
    /// Inventory to reach the hosts [default: the newest run in the journal that has them].
    #[arg(short, long, value_name = "FILE")]
    inventory: Vec<PathBuf>,
    /// Print the commands; never ask, never run anything.
    #[arg(long, conflicts_with = "yes")]
    dry_run: bool,
    /// Run the commands without asking.
    #[arg(long)]
    yes: bool,
    #[command(flatten)]
    state: StateArgs,
    #[command(flatten)]
    conn: ConnArgs,
}

fn parse_action(s: &str) -> Result<pushscan::contain::Action, String> {
    pushscan::contain::Action::parse(s)
        .ok_or_else(|| format!("{s:?}: use evidence, kill, remove, unpersist, isolate"))
}

fn parse_size(s: &str) -> Result<u64, String> {
    pushscan::units::parse_size(s)
}

fn confirm_mode(dry_run: bool, yes: bool) -> pushscan::contain::Confirm {
    use pushscan::contain::Confirm;
    match (dry_run, yes) {
        (true, _) => Confirm::DryRun,
        (false, true) => Confirm::Yes,
        (false, false) => Confirm::Ask,
    }
}

#[derive(Subcommand)]
enum NotifyCommand {
    /// Send a test message through every configured channel; report each ok/failed.
    #[command(
        after_help = "Examples:\n  pushscan notify test --notify-config /etc/pushscan/notify.yml\n  pushscan notify test -p playbooks/emocheck.yml\n\nExit codes: 0 every channel delivered, 1 a channel failed, 64/65 no or invalid settings."
    )]
    Test {
        /// Alert settings file (the content of a playbook's notify: section).
        #[arg(long, value_name = "FILE", env = "PUSHSCAN_NOTIFY_CONFIG")]
        notify_config: Option<PathBuf>,
        /// Take the settings from this playbook's notify: section.
        #[arg(short, long, value_name = "FILE")]
        playbook: Option<PathBuf>,
    },
    /// List recorded alert deliveries (channel, target, status, attempts, error).
    #[command(after_help = "Example:\n  pushscan notify log --run 12")]
    Log {
        /// Only this run's deliveries.
        #[arg(long, value_name = "ID")]
        run: Option<i64>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArgs,
    },
}

/// Alerts after a sweep or resume.
#[derive(Args)]
struct NotifyArgs {
    /// Alert settings (YAML: the content of a playbook's notify: section); replaces the
    /// playbook's notify: section.
    #[arg(
        long,
        value_name = "FILE",
        env = "PUSHSCAN_NOTIFY_CONFIG",
        help_heading = "Alerts"
    )]
    notify_config: Option<PathBuf>,
    /// Send no alert for this run, whatever is configured.
    #[arg(long, help_heading = "Alerts")]
    no_notify: bool,
}

impl NotifyArgs {
    /// Loads and checks a --notify-config file now, before any sweep.
    fn source(&self) -> Result<pushscan::notify::Source, exit::Fail> {
        use pushscan::notify::{NotifyConfig, Source};
        if self.no_notify {
            return Ok(Source::Off);
        }
        match &self.notify_config {
            None => Ok(Source::RunPlaybook),
            Some(p) => {
                let cfg = NotifyConfig::load(p).map_err(|e| exit::Fail::new(exit::CONFIG, e))?;
                cfg.check_sources().map_err(|e| {
                    exit::Fail::new(exit::CONFIG, anyhow::anyhow!("{}: {e:#}", p.display()))
                })?;
                Ok(Source::File(Arc::new(cfg), p.clone()))
            }
        }
    }
}

#[derive(Args)]
struct StateArgs {
    /// Where the journal and evidence live [default: $PUSHSCAN_STATE_DIR, else $XDG_STATE_HOME/pushscan].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

impl StateArgs {
    fn dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(app::default_state_dir)
    }
}

#[derive(Args)]
struct SweepArgs {
    /// Inventory: an Ansible YAML/INI file or inventory directory (with group_vars/ and
    /// host_vars/), as Ansible reads it. Repeat to merge several (a variable set in two
    /// takes the later one's value).
    #[arg(short, long, value_name = "FILE|DIR", required = true)]
    inventory: Vec<PathBuf>,
    /// Playbook (see playbooks/).
    #[arg(short, long, value_name = "FILE")]
    playbook: PathBuf,
    /// Ansible host pattern: names, groups, globs, a:b (union), a:&b (and), a:!b (not), @file.
    #[arg(short, long, value_name = "PATTERN")]
    limit: Option<String>,
    /// Hosts worked on at the same time.
    #[arg(short, long, default_value_t = 50)]
    forks: usize,
    #[command(flatten)]
    state: StateArgs,
    #[command(flatten)]
    conn: ConnArgs,
    #[command(flatten)]
    out: OutputArgs,
    #[command(flatten)]
    notify: NotifyArgs,
    #[command(flatten)]
    rollout: RolloutArgs,
    /// Sweep again every DURATION (4h, 30m), one sweep at a time, until SIGTERM/Ctrl-C.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, help_heading = "Unattended")]
    every: Option<Duration>,
    /// Delay each periodic sweep by a random time in [0, DURATION).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "every", help_heading = "Unattended")]
    jitter: Option<Duration>,
}

/// Staged rollout: overrides of the playbook's `rollout:` section.
#[derive(Args)]
struct RolloutArgs {
    /// Partition the hosts before cutting waves: by OU (host var `ou`, else the group
    /// chain), by the group listing each host, or not at all.
    #[arg(long, value_enum, help_heading = "Rollout")]
    by: Option<ByArg>,
    /// Wave sizes, counts or percentages of the hosts still remaining, the last one
    /// repeating; the first wave is the canary (e.g. 1,5,20%,100%).
    #[arg(long, value_name = "LIST", help_heading = "Rollout")]
    waves: Option<String>,
    /// Halt when strictly more than this percentage of a wave's hosts failed
    /// [default: only when all of them failed].
    #[arg(long, value_name = "PCT", help_heading = "Rollout")]
    max_fail_percentage: Option<f64>,
    /// Between waves: none, prompt (ask on the terminal) or a duration (5m).
    #[arg(long, value_name = "WHEN", help_heading = "Rollout")]
    pause: Option<String>,
    /// Host order before the cut: inventory, sorted, or shuffle(SEED).
    #[arg(long, value_name = "ORDER", help_heading = "Rollout")]
    order: Option<String>,
    /// Wave sizes apply within each OU/group in turn (per-group) or across all (across).
    #[arg(long, value_enum, help_heading = "Rollout")]
    span: Option<SpanArg>,
    /// Host classes that count as failures in a wave (comma-separated)
    /// [default: unreachable,auth_failed,host_key_rejected,timeout,checker_failed,error].
    #[arg(long, value_name = "LIST", help_heading = "Rollout")]
    failure_classes: Option<String>,
}

impl RolloutArgs {
    fn overrides(&self) -> Result<pushscan::rollout::Overrides, exit::Fail> {
        use pushscan::rollout::{self, By, Span, WaveSize};
        let usage = |e: String| exit::Fail::new(exit::USAGE, anyhow::anyhow!(e));
        Ok(rollout::Overrides {
            by: self.by.map(|b| match b {
                ByArg::Ou => By::Ou,
                ByArg::Group => By::Group,
                ByArg::None => By::None,
            }),
            waves: self
                .waves
                .as_deref()
                .map(|w| {
                    w.split(',')
                        .map(WaveSize::parse)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| format!("--waves: {e}"))
                })
                .transpose()
                .map_err(usage)?,
            max_fail_percentage: self.max_fail_percentage,
            pause: self
                .pause
                .as_deref()
                .map(rollout::Pause::parse)
                .transpose()
                .map_err(|e| usage(format!("--pause: {e}")))?,
            order: self
                .order
                .as_deref()
                .map(rollout::Order::parse)
                .transpose()
                .map_err(|e| usage(format!("--order: {e}")))?,
            span: self.span.map(|s| match s {
                SpanArg::PerGroup => Span::PerGroup,
                SpanArg::Across => Span::Across,
            }),
            failure_classes: self
                .failure_classes
                .as_deref()
                .map(rollout::parse_classes)
                .transpose()
                .map_err(|e| usage(format!("--failure-classes: {e}")))?,
        })
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum ByArg {
    Ou,
    Group,
    None,
}

#[derive(Clone, Copy, ValueEnum)]
enum SpanArg {
    PerGroup,
    Across,
}

#[derive(Clone, Copy, ValueEnum)]
enum PlanFormat {
    Text,
    Json,
}

#[derive(Args)]
#[command(group(ArgGroup::new("view").required(true).args(["list", "graph", "host"])))]
struct InventoryArgs {
    /// Inventory: an Ansible YAML/INI file or inventory directory. Repeat to merge several.
    #[arg(short, long, value_name = "FILE|DIR", required = true)]
    inventory: Vec<PathBuf>,
    /// Only these hosts (with --list and --graph), as for sweep.
    #[arg(short, long, value_name = "PATTERN", conflicts_with = "host")]
    limit: Option<String>,
    /// Every group (hosts, children) and every host's variables, as JSON.
    #[arg(long)]
    list: bool,
    /// The tree of groups and hosts, from GROUP.
    #[arg(long, value_name = "GROUP", num_args = 0..=1, default_missing_value = "all")]
    graph: Option<String>,
    /// One host's variables, as JSON.
    #[arg(long, value_name = "HOST")]
    host: Option<String>,
    /// With --list or --host: each group's and host's own variables
    /// rather than every host's merged ones (ansible-inventory --export).
    #[arg(long)]
    export: bool,
}

/// What a sweep or resume shows and writes besides the terminal report.
#[derive(Args)]
struct OutputArgs {
    /// Progress display on stderr.
    #[arg(long, value_enum, default_value = "auto")]
    progress: ProgressArg,
    /// Also write the run's report to FILE, in the format of its extension:
    /// .html (self-contained page), .json, .csv (one row per host) or .findings.csv (one row per finding). Repeatable.
    #[arg(long = "report", value_name = "FILE")]
    reports: Vec<PathBuf>,
    /// Also write the JSON report of the run to FILE (same as --report FILE.json).
    #[arg(long, value_name = "FILE")]
    report_json: Option<PathBuf>,
}

impl OutputArgs {
    /// Every report file to write when the sweep ends; an unknown extension
    /// is a usage error before anything starts.
    fn targets(&self) -> Result<Vec<ReportTarget>, exit::Fail> {
        let mut t = self
            .reports
            .iter()
            .map(|p| ReportTarget::from_path(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| exit::Fail::new(exit::USAGE, anyhow::anyhow!("--report {e}")))?;
        if let Some(path) = &self.report_json {
            t.push(ReportTarget {
                path: path.clone(),
                format: Format::Json,
            });
        }
        Ok(t)
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum ParseFormat {
    Table,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum ReportFormat {
    Table,
    Json,
    Csv,
    Html,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CsvRows {
    Host,
    Finding,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Plain,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ProgressArg {
    Auto,
    Lines,
    Quiet,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    pushscan::units::parse_duration(s)
}

fn main() -> ExitCode {
    // Taken out before any thread or child exists: no process pushscan starts inherits it.
    let pg_password = std::env::var("PGPASSWORD").ok();
    std::env::remove_var("PGPASSWORD");
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.log_format);
    pushscan::inventory::set_max_hosts(cli.inventory_max_hosts);
    if let Some(s) = &cli.store {
        let password = pushscan::store::PasswordSource {
            file: std::env::var_os("PUSHSCAN_STORE_PASSWORD_FILE").map(PathBuf::from),
            env: pg_password,
        };
        match pushscan::store::Location::parse(s, password) {
            Ok(at) => pushscan::store::select(at),
            Err(e) => {
                eprintln!("pushscan: {e:#}");
                return ExitCode::from(64);
            }
        }
    }
    if let Err(e) = cli.vault.install() {
        eprintln!("pushscan: {e}");
        return ExitCode::from(64);
    }
    let code = match run(cli) {
        Ok(code) => code,
        Err(fail) => {
            eprintln!("pushscan: {fail}");
            fail.code
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(70))
}

fn init_logging(verbose: u8, format: LogFormat) {
    // Alert deliveries and the periodic loop's own lines are shown by default.
    let default = match verbose {
        0 => "warn,pushscan::notify=info,pushscan::schedule=info",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Colour codes only for a terminal: logs in files and pipes stay plain
    // text (and never carry escape sequences). Under systemd (stderr is the
    // journal: JOURNAL_STREAM), journald stamps each line itself.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let _ = match format {
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
        LogFormat::Plain if journald => builder.without_time().with_ansi(false).try_init(),
        LogFormat::Plain => builder.with_ansi(ansi).try_init(),
    };
}

fn runtime() -> Result<tokio::runtime::Runtime, exit::Fail> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| exit::Fail::new(exit::SOFTWARE, e))
}

fn progress_mode(p: ProgressArg) -> Mode {
    match p {
        ProgressArg::Auto => Mode::Auto,
        ProgressArg::Lines => Mode::Lines,
        ProgressArg::Quiet => Mode::Quiet,
    }
}

/// What a command that acts on hosts gets: the terminal as its event sink (with the
/// progress `mode`) and the command's one stop signal.
fn control(mode: Mode, shutdown: &Shutdown) -> Control {
    Control {
        events: Events::new(Arc::new(Terminal::new(mode))),
        shutdown: shutdown.clone(),
    }
}

fn run(cli: Cli) -> Result<i32, exit::Fail> {
    // The one stop signal of this process: every command that acts on hosts stops on it
    // the same way (it listens for Ctrl-C and SIGTERM once the command reaches its hosts).
    let shutdown = Shutdown::new();
    match cli.command {
        Command::Sweep(a) => {
            let rollout = a.rollout.overrides()?;
            let reports = a.out.targets()?;
            let access = access(&a.conn)?;
            let after = app::AfterRun {
                reports,
                notify: a.notify.source()?,
            };
            let cfg = SweepConfig {
                inventory: a.inventory,
                playbook: a.playbook,
                limit: a.limit,
                forks: a.forks,
                state_dir: a.state.dir(),
                access,
                control: control(progress_mode(a.out.progress), &shutdown),
                rollout,
            };
            match a.every {
                Some(every) => {
                    let sched = pushscan::schedule::Schedule {
                        every,
                        jitter: a.jitter.unwrap_or(Duration::ZERO),
                    };
                    runtime()?.block_on(pushscan::schedule::run(cfg, after, sched))
                }
                None => runtime()?.block_on(app::sweep_with(cfg, &after)),
            }
        }
        Command::Plan {
            inventory,
            playbook,
            limit,
            format,
            probe,
            rollout,
        } => {
            let overrides = rollout.overrides()?;
            runtime()?.block_on(app::plan(
                &inventory,
                &playbook,
                limit.as_deref(),
                &overrides,
                matches!(format, PlanFormat::Json),
                probe,
            ))
        }
        Command::Inventory(a) => {
            let view = match (a.list, a.graph, a.host) {
                (_, Some(group), _) => InventoryView::Graph(group),
                (_, _, Some(host)) => InventoryView::Host(host),
                _ => InventoryView::List,
            };
            runtime()?.block_on(app::inventory(
                &a.inventory,
                a.limit.as_deref(),
                view,
                a.export,
            ))
        }
        Command::Resume {
            run,
            forks,
            state,
            conn,
            out,
            notify,
        } => {
            let reports = out.targets()?;
            let access = access(&conn)?;
            let after = app::AfterRun {
                reports,
                notify: notify.source()?,
            };
            runtime()?.block_on(app::resume(
                &state.dir(),
                run,
                forks,
                &access,
                &control(progress_mode(out.progress), &shutdown),
                &after,
            ))
        }
        Command::Cleanup {
            run,
            all,
            dry_run,
            state,
            conn,
        } => {
            let access = access(&conn)?;
            runtime()?.block_on(app::cleanup(
                &state.dir(),
                run,
                all,
                dry_run,
                &access,
                &control(Mode::Auto, &shutdown),
            ))
        }
        Command::History {
            host,
            limit,
            json,
            state,
        } => app::history(&state.dir(), &host, limit, json),
        Command::Contain(a) => {
            let access = access(&a.conn)?;
            let mut actions = a.actions.clone();
            actions.sort();
            actions.dedup();
            let opts = pushscan::contain::ContainOptions {
                state_dir: a.state.dir(),
                run: a.run,
                hosts: a.hosts,
                actions,
                confirm: confirm_mode(a.dry_run, a.yes),
                max_hosts: a.max_hosts,
                quarantine: a.quarantine,
                evidence_cap: a.evidence_cap,
                jump_address: a.jump_address,
                recheck: !a.no_recheck,
            };
            runtime()?.block_on(pushscan::contain::contain(
                &opts,
                &access,
                &control(progress_mode(a.progress), &shutdown),
            ))
        }
        Command::Uncontain(a) => {
            let access = access(&a.conn)?;
            let opts = pushscan::contain::UncontainOptions {
                state_dir: a.state.dir(),
                hosts: a.hosts,
                inventory: a.inventory,
                confirm: confirm_mode(a.dry_run, a.yes),
            };
            runtime()?.block_on(pushscan::contain::uncontain(
                &opts,
                &access,
                &control(Mode::Auto, &shutdown),
            ))
        }
        Command::Prune { keep_days, state } => {
            runtime()?.block_on(app::prune(&state.dir(), keep_days))
        }
        Command::Parse {
            format,
            checker,
            min_level,
            playbook,
            files,
        } => app::parse(
            &files,
            &app::ParseWith {
                checker,
                min_level,
                playbook,
            },
            matches!(format, ParseFormat::Json),
        ),
        Command::Report {
            run,
            format,
            output,
            blind_days,
            history,
            bom,
            crlf,
            csv_rows,
            state,
        } => {
            let format = match format {
                ReportFormat::Table => Format::Table,
                ReportFormat::Json => Format::Json,
                ReportFormat::Csv => Format::Csv,
                ReportFormat::Html => Format::Html,
            };
            app::report(
                &state.dir(),
                &ReportRequest {
                    run,
                    format,
                    output,
                    blind_days,
                    history,
                    csv: pushscan::report::CsvOptions {
                        bom,
                        crlf,
                        per_finding: csv_rows == Some(CsvRows::Finding),
                    },
                },
            )
        }
        Command::Runs { limit, json, state } => app::runs(&state.dir(), limit, json),
        Command::Notify { command } => match command {
            NotifyCommand::Test {
                notify_config,
                playbook,
            } => {
                let (cfg, source) =
                    app::notify_config(notify_config.as_deref(), playbook.as_deref())?;
                runtime()?.block_on(app::notify_test(&cfg, &source))
            }
            NotifyCommand::Log { run, json, state } => app::notify_log(&state.dir(), run, json),
        },
        Command::Pin {
            file,
            playbook,
            x86,
            input,
        } => app::pin(&file, playbook.as_deref(), x86, input.as_deref()),
    }
}

/// Every transport's credentials and settings from the flags and the environment.
fn access(a: &ConnArgs) -> Result<Access, exit::Fail> {
    let access = Access::from_flags(a)?;
    for w in access.warnings() {
        eprintln!("WARNING: {w}");
    }
    Ok(access)
}
