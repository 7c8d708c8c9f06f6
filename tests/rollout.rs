//! Staged rollout against a real OpenSSH fleet on loopback: waves per OU with a canary each,
//! the halt gate (over the threshold halts, exactly at it does not, unreachable hosts count),
//! later waves recorded as `not_started` with the reason, `resume` finishing a halted sweep
//! wave by wave, `plan` agreeing with what the sweep then did, and `pause: prompt` on a real
//! pseudo-terminal (`script`) — refused without one.

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::sshd::{FleetOptions, SshFleet};
use serde_json::Value;

const CHECKER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/playbooks/checkers/emocheck-sim.sh"
);

fn sha256_hex(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(std::fs::read(path).expect("read checker")))
}

/// A host of the test inventory: name, OU, and whether it answers (`false`: an address with
/// nothing listening, so `unreachable`), and the stand-in's scenario.
struct Spec {
    name: &'static str,
    ou: &'static str,
    up: bool,
    scenario: &'static str,
}

struct Lab {
    fleet: SshFleet,
    root: tempfile::TempDir,
}

impl Lab {
    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }
    fn state(&self) -> PathBuf {
        self.path("state")
    }
}

/// One sshd fleet at `base` serving the `up` hosts; `down` hosts point at addresses of a
/// range nobody listens on (connection refused at once).
fn setup(base: [u8; 3], specs: &[Spec], rollout: &str) -> Lab {
    let up = specs.iter().filter(|s| s.up).count().max(1);
    let fleet = SshFleet::start_with(FleetOptions {
        n_hosts: up,
        base_address: std::net::Ipv4Addr::new(base[0], base[1], base[2], 1),
        ..FleetOptions::default()
    });
    let root = tempfile::tempdir().expect("tempdir");
    let mut yaml = String::from("all:\n  vars:\n    ansible_connection: ssh\n  hosts:\n");
    let mut next_up = 0;
    for (i, s) in specs.iter().enumerate() {
        let addr = if s.up {
            next_up += 1;
            fleet.addresses[next_up - 1].clone()
        } else {
            format!("{}.{}.{}.{}", base[0], base[1], base[2] + 1, i + 1)
        };
        yaml.push_str(&format!(
            "    {}:\n      ansible_host: {addr}\n      ansible_port: {}\n      ou: {}\n      scenario: {}\n      pushscan_dir: {}\n",
            s.name,
            fleet.port,
            s.ou,
            s.scenario,
            root.path().join("hosts").join(s.name).display()
        ));
    }
    std::fs::write(root.path().join("inventory.yml"), yaml).unwrap();
    let playbook = format!(
        "name: rollout\nchecker:\n  path: {CHECKER}\n  sha256: {}\n  platform: linux\n  remote_name: emocheck-sim.sh\n\
         work_dir: \"{{{{ pushscan_dir }}}}\"\nrun_dir: \"{{{{ work_dir }}}}/reports\"\n\
         args: [\"/quiet\", \"/output\", \"{{{{ run_dir }}}}\", \"/host\", \"{{{{ inventory_hostname }}}}\", \"/scenario\", \"{{{{ scenario }}}}\"]\n\
         timeout: 10s\nresults:\n  glob: \"*_emocheck.*\"\n  parser: emocheck\n{rollout}",
        sha256_hex(Path::new(CHECKER))
    );
    std::fs::write(root.path().join("playbook.yml"), playbook).unwrap();
    Lab { fleet, root }
}

fn command(lab: &Lab, sub: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pushscan"));
    cmd.arg(sub);
    if sub == "sweep" || sub == "plan" {
        cmd.arg("-i")
            .arg(lab.path("inventory.yml"))
            .arg("-p")
            .arg(lab.path("playbook.yml"));
    }
    if sub != "plan" {
        cmd.arg("--state-dir").arg(lab.state());
    }
    if sub == "sweep" || sub == "resume" {
        cmd.arg("--known-hosts")
            .arg(&lab.fleet.known_hosts)
            .arg("-k")
            .arg(&lab.fleet.client_key)
            .arg("--no-agent")
            .arg("--progress")
            .arg("lines")
            .arg("--connect-timeout")
            .arg("3s");
    }
    cmd.args(extra).env_remove("PUSHSCAN_SSH_PASSWORD");
    cmd
}

fn run(lab: &Lab, sub: &str, extra: &[&str]) -> Output {
    command(lab, sub, extra)
        .stdin(Stdio::null())
        .output()
        .expect("run pushscan")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// host → (wave, class, reason, started_at, finished_at), straight from the journal.
type Row = (
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn journal_hosts(lab: &Lab, run: i64) -> BTreeMap<String, Row> {
    let db = rusqlite::Connection::open(lab.state().join("journal.sqlite")).expect("journal");
    let mut st = db
        .prepare(
            "SELECT host, wave, class, reason, started_at, finished_at FROM hosts WHERE run_id=?1",
        )
        .unwrap();
    st.query_map([run], |r| {
        Ok((
            r.get::<_, String>(0)?,
            (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?),
        ))
    })
    .unwrap()
    .map(|r| r.unwrap())
    .collect()
}

fn run_status(lab: &Lab, run: i64) -> (String, Option<String>) {
    let db = rusqlite::Connection::open(lab.state().join("journal.sqlite")).expect("journal");
    db.query_row(
        "SELECT status, halt_reason FROM runs WHERE id=?1",
        [run],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

fn run_count(lab: &Lab) -> i64 {
    let path = lab.state().join("journal.sqlite");
    if !path.exists() {
        return 0;
    }
    let db = rusqlite::Connection::open(path).expect("journal");
    db.query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))
        .unwrap()
}

/// Waves as `plan --format json` prints them: [(number, partition, canary, [host names])].
fn plan_waves(plan: &Value) -> Vec<(i64, Option<String>, bool, Vec<String>)> {
    plan["waves"]
        .as_array()
        .expect("waves")
        .iter()
        .map(|w| {
            (
                w["number"].as_i64().unwrap(),
                w["partition"].as_str().map(str::to_string),
                w["canary"].as_bool().unwrap(),
                w["hosts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|h| h["name"].as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

/// Each wave's hosts all ended before any host of a later wave started.
fn assert_waves_in_sequence(rows: &BTreeMap<String, Row>) {
    let mut by_wave: BTreeMap<i64, Vec<&Row>> = BTreeMap::new();
    for r in rows.values() {
        by_wave
            .entry(r.0.expect("every host has a wave"))
            .or_default()
            .push(r);
    }
    let waves: Vec<i64> = by_wave.keys().copied().collect();
    for pair in waves.windows(2) {
        let last_end = by_wave[&pair[0]]
            .iter()
            .filter_map(|r| r.4.clone())
            .max()
            .expect("a finished host");
        for r in &by_wave[&pair[1]] {
            if let Some(start) = &r.3 {
                assert!(
                    start.as_str() >= last_end.as_str(),
                    "a host of wave {} started at {start}, before wave {} ended at {last_end}",
                    pair[1],
                    pair[0]
                );
            }
        }
    }
}

#[test]
fn waves_per_ou_each_with_its_canary_and_plan_matches_the_sweep() {
    let specs = [
        Spec {
            name: "tk-01",
            ou: "Tokyo/Sales",
            up: true,
            scenario: "clean",
        },
        Spec {
            name: "pa-01",
            ou: "Paris",
            up: true,
            scenario: "clean",
        },
        Spec {
            name: "tk-02",
            ou: "Tokyo/Sales",
            up: true,
            scenario: "detected",
        },
        Spec {
            name: "tk-03",
            ou: "Tokyo/Sales",
            up: true,
            scenario: "clean",
        },
        Spec {
            name: "pa-02",
            ou: "Paris",
            up: true,
            scenario: "clean",
        },
        Spec {
            name: "tk-04",
            ou: "Tokyo/Sales",
            up: true,
            scenario: "clean",
        },
        Spec {
            name: "tk-05",
            ou: "Tokyo/Sales",
            up: true,
            scenario: "clean",
        },
        Spec {
            name: "os-01",
            ou: "Osaka",
            up: true,
            scenario: "clean",
        },
        Spec {
            name: "pa-03",
            ou: "Paris",
            up: true,
            scenario: "clean",
        },
        Spec {
            name: "pa-04",
            ou: "Paris",
            up: true,
            scenario: "clean",
        },
    ];
    let lab = setup(
        [127, 0, 90],
        &specs,
        "rollout:\n  by: ou\n  waves: [1, 2, \"100%\"]\n  max_fail_percentage: 0\n",
    );

    // The plan, without a connection: nothing in the journal afterwards.
    let plan = run(&lab, "plan", &["--format", "json"]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
    assert_eq!(run_count(&lab), 0, "plan opened the journal");
    let plan: Value = serde_json::from_slice(&plan.stdout).expect("plan JSON");
    let waves = plan_waves(&plan);
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        waves,
        vec![
            (1, Some("Tokyo/Sales".into()), true, s(&["tk-01"])),
            (2, Some("Tokyo/Sales".into()), false, s(&["tk-02", "tk-03"])),
            (3, Some("Tokyo/Sales".into()), false, s(&["tk-04", "tk-05"])),
            (4, Some("Paris".into()), true, s(&["pa-01"])),
            (5, Some("Paris".into()), false, s(&["pa-02", "pa-03"])),
            (6, Some("Paris".into()), false, s(&["pa-04"])),
            (7, Some("Osaka".into()), true, s(&["os-01"])),
        ]
    );
    let tk1 = &plan["waves"][0]["hosts"][0];
    assert_eq!(tk1["transport"], "ssh");
    assert_eq!(tk1["port"].as_u64(), Some(u64::from(lab.fleet.port)));
    assert_eq!(
        tk1["checker_path"].as_str().unwrap(),
        lab.path("hosts/tk-01/emocheck-sim.sh").to_str().unwrap()
    );
    assert_eq!(plan["checker"]["sha256"], sha256_hex(Path::new(CHECKER)));
    assert_eq!(plan["checker"]["matches_pin"], true);
    // The text form names the same waves.
    let text_plan = run(&lab, "plan", &[]);
    let t = String::from_utf8_lossy(&text_plan.stdout);
    assert!(
        t.contains("Wave 1/7 (Tokyo/Sales) [canary]: 1 host(s)"),
        "{t}"
    );
    assert!(t.contains("Wave 7/7 (Osaka) [canary]: 1 host(s)"), "{t}");

    // The sweep: a detection is a finding, not a failure — max 0 % does not halt on it.
    let out = run(&lab, "sweep", &["--forks", "8"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "detection → exit 1\n{}",
        text(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("wave 1/7 (Tokyo/Sales) [canary]: 1 host(s)"),
        "{err}"
    );
    assert!(
        err.contains("wave 2/7 (Tokyo/Sales) done: 2 host(s), 0 failed (0%)"),
        "{err}"
    );
    let rows = journal_hosts(&lab, 1);
    assert_eq!(rows.len(), specs.len());
    // What the sweep recorded is what the plan said.
    for (number, _, _, hosts) in &waves {
        for h in hosts {
            assert_eq!(
                rows[h].0,
                Some(*number),
                "{h} ran in another wave than planned"
            );
        }
    }
    assert_waves_in_sequence(&rows);
    assert_eq!(rows["tk-02"].1.as_deref(), Some("detected"));
    assert!(rows
        .iter()
        .filter(|(h, _)| *h != "tk-02")
        .all(|(_, r)| r.1.as_deref() == Some("not_detected")));
    assert_eq!(run_status(&lab, 1), ("finished".to_string(), None));

    // The same rollout across OUs: one canary, waves may span OUs.
    let plan = run(
        &lab,
        "plan",
        &["--format", "json", "--span", "across", "--waves", "1,4"],
    );
    let waves = plan_waves(&serde_json::from_slice(&plan.stdout).expect("plan JSON"));
    assert_eq!(
        waves,
        vec![
            (1, Some("Tokyo/Sales".into()), true, s(&["tk-01"])),
            (
                2,
                Some("Tokyo/Sales".into()),
                false,
                s(&["tk-02", "tk-03", "tk-04", "tk-05"])
            ),
            (
                3,
                Some("Paris".into()),
                false,
                s(&["pa-01", "pa-02", "pa-03", "pa-04"])
            ),
            (4, Some("Osaka".into()), false, s(&["os-01"])),
        ]
    );
}

#[test]
fn a_failing_wave_halts_exactly_over_the_threshold_and_resume_finishes() {
    // by: none, waves 1, 4, 4, rest; max 25 %:
    //   wave 1 (canary) 1 host ok;
    //   wave 2: 1 of 4 unreachable = exactly 25 % → continues;
    //   wave 3: 2 of 4 unreachable = 50 % → halts;
    //   wave 4: never started, then finished by `resume`.
    let mut specs = vec![Spec {
        name: "h01",
        ou: "x",
        up: true,
        scenario: "clean",
    }];
    let names = [
        "h02", "h03", "h04", "h05", "h06", "h07", "h08", "h09", "h10", "h11", "h12",
    ];
    for (i, n) in names.iter().enumerate() {
        let down = matches!(*n, "h03" | "h07" | "h08");
        specs.push(Spec {
            name: n,
            ou: "x",
            up: !down,
            scenario: if i == 0 { "detected" } else { "clean" },
        });
    }
    let lab = setup(
        [127, 0, 92],
        &specs,
        "rollout:\n  waves: [1, 4, 4, \"100%\"]\n  max_fail_percentage: 25\n",
    );
    let out = run(&lab, "sweep", &["--forks", "8"]);
    let all = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a detection in wave 2 still exits 1\n{all}"
    );
    let rows = journal_hosts(&lab, 1);
    assert_eq!(rows["h03"].1.as_deref(), Some("unreachable"), "{all}");
    assert_eq!(rows["h02"].1.as_deref(), Some("detected"), "{all}");
    for h in ["h06", "h09"] {
        assert_eq!(
            rows[h].1.as_deref(),
            Some("not_detected"),
            "{h}: wave 3 ran\n{all}"
        );
    }
    for h in ["h07", "h08"] {
        assert_eq!(rows[h].1.as_deref(), Some("unreachable"), "{h}\n{all}");
    }
    for h in ["h10", "h11", "h12"] {
        assert_eq!(rows[h].0, Some(4));
        assert_eq!(rows[h].1.as_deref(), Some("not_started"), "{h}\n{all}");
        let reason = rows[h].2.as_deref().unwrap_or("");
        assert!(
            reason.contains("rollout halted after wave 3/4")
                && reason.contains("2 of 4 host(s) failed (50%, more than 25% halts)"),
            "{h}: {reason}"
        );
        assert!(rows[h].3.is_none(), "{h} was started");
    }
    assert_waves_in_sequence(&rows);
    let (status, halt) = run_status(&lab, 1);
    assert_eq!(status, "halted");
    assert!(halt.unwrap_or_default().contains("wave 3/4"));
    assert!(
        all.contains("HALTED: rollout halted after wave 3/4"),
        "{all}"
    );
    assert!(all.contains("pushscan resume 1"), "{all}");
    // The JSON report carries the reason and each host's wave.
    let rep = run(&lab, "report", &["--format", "json"]);
    let rep: Value = serde_json::from_slice(&rep.stdout).expect("report JSON");
    assert!(rep["run"]["halt_reason"]
        .as_str()
        .unwrap()
        .contains("wave 3/4"));
    assert_eq!(rep["run"]["complete"], false);

    // A wrong setting is a usage error before anything starts.
    let bad = run(&lab, "sweep", &["--waves", "1,0"]);
    assert_eq!(bad.status.code(), Some(64), "{}", text(&bad));
    assert_eq!(run_count(&lab), 1);

    // Continued later: the halted run's remaining wave runs and the run completes.
    let resumed = run(&lab, "resume", &[]);
    let all = text(&resumed);
    assert_eq!(resumed.status.code(), Some(1), "{all}");
    let rows = journal_hosts(&lab, 1);
    for h in ["h10", "h11", "h12"] {
        assert_eq!(rows[h].1.as_deref(), Some("not_detected"), "{h}\n{all}");
    }
    assert_eq!(
        rows["h07"].1.as_deref(),
        Some("unreachable"),
        "a final class stays"
    );
    assert_eq!(run_status(&lab, 1), ("finished".to_string(), None));
}

#[test]
fn pause_prompt_asks_on_a_terminal_and_refuses_without_one() {
    let specs = [
        Spec {
            name: "p01",
            ou: "x",
            up: true,
            scenario: "clean",
        },
        Spec {
            name: "p02",
            ou: "x",
            up: false,
            scenario: "clean",
        },
        Spec {
            name: "p03",
            ou: "x",
            up: true,
            scenario: "clean",
        },
        Spec {
            name: "p04",
            ou: "x",
            up: true,
            scenario: "clean",
        },
    ];
    let lab = setup(
        [127, 0, 94],
        &specs,
        "rollout:\n  waves: [2, 1]\n  max_fail_percentage: 50\n  pause: prompt\n",
    );
    // No terminal: refused before anything (no run recorded, no host touched).
    let out = run(&lab, "sweep", &[]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("stdin is not a terminal"));
    assert_eq!(run_count(&lab), 0);
    assert!(!lab.path("hosts/p01").exists(), "a host was touched");

    // On a pseudo-terminal (util-linux `script`): show failures, continue, then abort.
    let sweep = command(&lab, "sweep", &["--forks", "4"]);
    let line: Vec<String> = std::iter::once(sweep.get_program())
        .chain(sweep.get_args())
        .map(|a| shell_quote(&a.to_string_lossy()))
        .collect();
    let script = common::sshd::client_binary("script");
    let mut child = Command::new(&script)
        .args(["-q", "-e", "-c", &line.join(" "), "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e} (apt-get install bsdutils)",
                script.display()
            )
        });
    child.stdin.take().unwrap().write_all(b"f\nc\na\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let all = text(&out);
    assert!(all.contains("[c]ontinue, [a]bort, [f]ailures?"), "{all}");
    assert!(
        all.contains("wave 1/3 [canary] done: 2 host(s), 1 failed (50%)"),
        "{all}"
    );
    assert!(
        all.contains("p02 unreachable"),
        "the failures were listed\n{all}"
    );
    let rows = journal_hosts(&lab, 1);
    assert_eq!(
        rows["p03"].1.as_deref(),
        Some("not_detected"),
        "continued to wave 2\n{all}"
    );
    assert_eq!(
        rows["p04"].1.as_deref(),
        Some("not_started"),
        "aborted before wave 3\n{all}"
    );
    assert!(rows["p04"]
        .2
        .as_deref()
        .unwrap_or("")
        .contains("aborted by the operator after wave 2/3"));
    assert_eq!(run_status(&lab, 1).0, "halted");
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
