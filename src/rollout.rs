//! Staged rollout: which hosts go in which wave, and when a wave stops the sweep.
//!
//! An operator rolls a checker out by OU (or group), watching a canary before the rest, and
//! stops when it goes wrong. This module is the pure part of that: the `rollout:` settings of
//! a playbook (overridable on the command line), the split of the selected hosts into
//! ordered waves, and the gate that judges a finished wave. It opens no connection, so
//! `pushscan plan` prints exactly the waves that `pushscan sweep` then runs (both call
//! [`plan_waves`] on the same input, and the shuffle is a fixed, seeded algorithm rather
//! than a library's, so a plan stays reproducible across versions).
//!
//! Where Ansible's `serial` + `max_fail_percentage` is inexact, this is exact: a wave is
//! judged only once all its hosts have ended (Ansible may abort a batch before its slow
//! hosts end), unreachable hosts count as failures like any other failure class (Ansible
//! leaves them out of the percentage), and "more
//! than N %" means strictly more (`failed * 100 > N * wave_size`), so exactly N % continues.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::inventory::Host;
use crate::model::HostClass;

/// How hosts are partitioned before the waves are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum By {
    /// By the host's OU: the host variable named by `ou_var` (`ou` by default; the Active
    /// Directory source sets it to the OU path, e.g. `Tokyo/Sales`), else the chain of
    /// groups the host is listed under (`tokyo/sales`).
    Ou,
    /// By the group that lists the host directly (the last group of its first group chain).
    Group,
    /// One partition: the waves run over the whole selection.
    #[default]
    None,
}

/// Whether the wave sizes apply inside each OU/group in turn or across all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Span {
    /// Each OU in turn gets the whole wave sequence (its own canary first), then the next
    /// OU starts. The default: a problem specific to one OU (its GPO, its firewall) shows
    /// in that OU's canary before the rest of it is touched.
    #[default]
    PerGroup,
    /// The hosts, OU after OU, form one list and the wave sizes apply to it: one canary for
    /// the whole sweep; a wave may span two OUs.
    Across,
}

/// One entry of `waves`: a count of hosts, or a percentage of the hosts still remaining.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WaveSize {
    Count(usize),
    Percent(f64),
}

impl WaveSize {
    pub fn parse(text: &str) -> Result<WaveSize, String> {
        let t = text.trim();
        if let Some(p) = t.strip_suffix('%') {
            let p: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("invalid wave size {text:?}: expected N or N%"))?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(format!(
                    "invalid wave size {text:?}: a percentage is more than 0 and at most 100"
                ));
            }
            return Ok(WaveSize::Percent(p));
        }
        match t.parse::<usize>() {
            Ok(0) => Err(format!("invalid wave size {text:?}: at least 1 host")),
            Ok(n) => Ok(WaveSize::Count(n)),
            Err(_) => Err(format!(
                "invalid wave size {text:?}: expected a count (5) or a percentage (\"20%\")"
            )),
        }
    }

    /// Hosts in the next wave when `remaining` hosts are left (at least 1, at most all).
    fn take(self, remaining: usize) -> usize {
        let n = match self {
            WaveSize::Count(n) => n,
            WaveSize::Percent(p) => (remaining as f64 * p / 100.0).ceil() as usize,
        };
        n.clamp(1, remaining.max(1))
    }
}

impl fmt::Display for WaveSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaveSize::Count(n) => write!(f, "{n}"),
            WaveSize::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for WaveSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            WaveSize::Count(n) => s.serialize_u64(*n as u64),
            WaveSize::Percent(_) => s.serialize_str(&self.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for WaveSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<WaveSize, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) => WaveSize::parse(&n.to_string()),
            Raw::Text(t) => WaveSize::parse(&t),
        }
        .map_err(serde::de::Error::custom)
    }
}

/// What happens between two waves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pause {
    #[default]
    None,
    /// Ask on the terminal: continue, abort, or show the failures.
    Prompt,
    /// Wait this long (Ctrl-C still stops the sweep).
    For(std::time::Duration),
}

impl Pause {
    pub fn parse(text: &str) -> Result<Pause, String> {
        match text.trim() {
            "none" | "no" | "0" => Ok(Pause::None),
            "prompt" => Ok(Pause::Prompt),
            other => crate::units::parse_duration(other)
                .map(Pause::For)
                .map_err(|_| {
                    format!("invalid pause {text:?}: none, prompt or a duration (30s, 5m)")
                }),
        }
    }
}

impl fmt::Display for Pause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pause::None => f.write_str("none"),
            Pause::Prompt => f.write_str("prompt"),
            Pause::For(d) if d.subsec_millis() == 0 => write!(f, "{}s", d.as_secs()),
            Pause::For(d) => write!(f, "{}ms", d.as_millis()),
        }
    }
}

/// Order of the hosts (and so of the OUs, by their first host) before the waves are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// As the inventory lists them.
    #[default]
    Inventory,
    /// By host name (OUs by name too).
    Sorted,
    /// A seeded shuffle: the same seed gives the same order, on every machine and version.
    Shuffle(u64),
}

impl Order {
    pub fn parse(text: &str) -> Result<Order, String> {
        let t = text.trim();
        match t {
            "inventory" => return Ok(Order::Inventory),
            "sorted" => return Ok(Order::Sorted),
            _ => {}
        }
        let seed = t
            .strip_prefix("shuffle(")
            .and_then(|s| s.strip_suffix(')'))
            .or_else(|| t.strip_prefix("shuffle:"));
        match seed.map(|s| s.trim().parse::<u64>()) {
            Some(Ok(seed)) => Ok(Order::Shuffle(seed)),
            _ => Err(format!(
                "invalid order {text:?}: inventory, sorted or shuffle(SEED) with an integer seed"
            )),
        }
    }
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Order::Inventory => f.write_str("inventory"),
            Order::Sorted => f.write_str("sorted"),
            Order::Shuffle(s) => write!(f, "shuffle({s})"),
        }
    }
}

fn de_from_str<'de, D, T>(d: D, parse: fn(&str) -> Result<T, String>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Num(u64),
        Text(String),
    }
    let text = match Raw::deserialize(d)? {
        Raw::Num(n) => n.to_string(),
        Raw::Text(t) => t,
    };
    parse(&text).map_err(serde::de::Error::custom)
}

fn ser_display<S: serde::Serializer, T: fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn ser_classes<S: serde::Serializer>(v: &[HostClass], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|c| c.as_str()))
}

fn de_pause<'de, D: Deserializer<'de>>(d: D) -> Result<Pause, D::Error> {
    de_from_str(d, Pause::parse)
}

fn de_order<'de, D: Deserializer<'de>>(d: D) -> Result<Order, D::Error> {
    de_from_str(d, Order::parse)
}

fn de_classes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<HostClass>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    parse_classes(&names.join(",")).map_err(serde::de::Error::custom)
}

/// `unreachable,timeout,...` → classes. `detected`, `not_detected`, `not_started` and `busy`
/// are refused: a finding, an unscheduled host or one another sweep holds is not a failure
/// of the rollout.
pub fn parse_classes(text: &str) -> Result<Vec<HostClass>, String> {
    let mut out = Vec::new();
    for name in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let class = HostClass::parse(name).ok_or_else(|| {
            format!(
                "unknown host class {name:?} (classes: {})",
                HostClass::ALL
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        if matches!(
            class,
            HostClass::Detected | HostClass::NotDetected | HostClass::NotStarted | HostClass::Busy
        ) {
            return Err(format!("{name} cannot count as a failed host"));
        }
        if !out.contains(&class) {
            out.push(class);
        }
    }
    if out.is_empty() {
        return Err("failure_classes names no class".into());
    }
    Ok(out)
}

/// The classes that make a host count as failed in a wave, unless configured otherwise.
pub const DEFAULT_FAILURE_CLASSES: [HostClass; 6] = [
    HostClass::Unreachable,
    HostClass::AuthFailed,
    HostClass::HostKeyRejected,
    HostClass::Timeout,
    HostClass::CheckerFailed,
    HostClass::Error,
];

fn default_failure_classes() -> Vec<HostClass> {
    DEFAULT_FAILURE_CLASSES.to_vec()
}

fn default_waves() -> Vec<WaveSize> {
    vec![WaveSize::Percent(100.0)]
}

fn default_ou_var() -> String {
    "ou".into()
}

/// The `rollout:` section of a playbook, with the command line's overrides applied.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    #[serde(default)]
    pub by: By,
    #[serde(default = "default_waves")]
    pub waves: Vec<WaveSize>,
    /// A wave fails when strictly more than this share of its hosts failed. Unset: only
    /// when every host of the wave failed (Ansible's behaviour without the setting).
    #[serde(default)]
    pub max_fail_percentage: Option<f64>,
    #[serde(default, deserialize_with = "de_pause", serialize_with = "ser_display")]
    pub pause: Pause,
    #[serde(default, deserialize_with = "de_order", serialize_with = "ser_display")]
    pub order: Order,
    #[serde(default)]
    pub span: Span,
    /// The host variable naming a host's OU (for `by: ou`).
    #[serde(default = "default_ou_var")]
    pub ou_var: String,
    #[serde(
        default = "default_failure_classes",
        deserialize_with = "de_classes",
        serialize_with = "ser_classes"
    )]
    pub failure_classes: Vec<HostClass>,
}

impl Default for Rollout {
    fn default() -> Rollout {
        Rollout {
            by: By::None,
            waves: default_waves(),
            max_fail_percentage: None,
            pause: Pause::None,
            order: Order::Inventory,
            span: Span::PerGroup,
            ou_var: default_ou_var(),
            failure_classes: default_failure_classes(),
        }
    }
}

/// Command-line overrides of the playbook's `rollout:` (each `None` keeps the playbook's).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub by: Option<By>,
    pub waves: Option<Vec<WaveSize>>,
    pub max_fail_percentage: Option<f64>,
    pub pause: Option<Pause>,
    pub order: Option<Order>,
    pub span: Option<Span>,
    pub failure_classes: Option<Vec<HostClass>>,
}

impl Overrides {
    pub fn is_empty(&self) -> bool {
        self.by.is_none()
            && self.waves.is_none()
            && self.max_fail_percentage.is_none()
            && self.pause.is_none()
            && self.order.is_none()
            && self.span.is_none()
            && self.failure_classes.is_none()
    }
}

impl Rollout {
    pub fn with(mut self, o: &Overrides) -> Result<Rollout, String> {
        if let Some(v) = o.by {
            self.by = v;
        }
        if let Some(v) = &o.waves {
            self.waves = v.clone();
        }
        if let Some(v) = o.max_fail_percentage {
            self.max_fail_percentage = Some(v);
        }
        if let Some(v) = o.pause {
            self.pause = v;
        }
        if let Some(v) = o.order {
            self.order = v;
        }
        if let Some(v) = o.span {
            self.span = v;
        }
        if let Some(v) = &o.failure_classes {
            self.failure_classes = v.clone();
        }
        self.check()?;
        Ok(self)
    }

    pub fn check(&self) -> Result<(), String> {
        if self.waves.is_empty() {
            return Err("rollout.waves names no wave".into());
        }
        if let Some(p) = self.max_fail_percentage {
            if !(0.0..=100.0).contains(&p) {
                return Err(format!(
                    "rollout.max_fail_percentage {p} must be between 0 and 100"
                ));
            }
        }
        if self.ou_var.trim().is_empty() {
            return Err("rollout.ou_var is empty".into());
        }
        Ok(())
    }

    /// One line for the operator: `by ou, waves 1, 5, 20% (per OU), ...`.
    pub fn describe(&self) -> String {
        let waves: Vec<String> = self.waves.iter().map(|w| w.to_string()).collect();
        format!(
            "by {}, waves {} (last repeats{}), halt when {}, pause {}, order {}",
            match self.by {
                By::Ou => "ou",
                By::Group => "group",
                By::None => "none",
            },
            waves.join(", "),
            match (self.by, self.span) {
                (By::None, _) => "",
                (_, Span::PerGroup) => "; within each partition in turn",
                (_, Span::Across) => "; across partitions",
            },
            match self.max_fail_percentage {
                Some(p) => format!("more than {p}% of a wave fails"),
                None => "every host of a wave fails".into(),
            },
            self.pause,
            self.order
        )
    }

    /// Whether a finished wave stops the sweep: `failed` of `judged` hosts ended in a
    /// failure class (`judged` leaves out hosts that never started).
    pub fn wave_fails(&self, failed: usize, judged: usize) -> bool {
        if judged == 0 {
            return false;
        }
        match self.max_fail_percentage {
            // Exact in f64 for any realistic count; `>` so that exactly N % continues.
            Some(p) => (failed as f64) * 100.0 > p * judged as f64,
            None => failed == judged,
        }
    }

    pub fn is_failure(&self, class: HostClass) -> bool {
        self.failure_classes.contains(&class)
    }

    /// The partition label of `host` (`None` for `by: none`).
    pub fn partition_of(&self, host: &Host) -> Option<String> {
        match self.by {
            By::None => None,
            By::Ou => Some(
                host.vars
                    .get(&self.ou_var)
                    .and_then(|v| match v {
                        serde_json::Value::String(s) if !s.trim().is_empty() => {
                            Some(s.trim().to_string())
                        }
                        serde_json::Value::Number(n) => Some(n.to_string()),
                        _ => None,
                    })
                    .or_else(|| host.group_paths.first().map(|p| p.join("/")))
                    .unwrap_or_else(|| "(no OU)".into()),
            ),
            By::Group => Some(
                host.group_paths
                    .first()
                    .and_then(|p| p.last().cloned())
                    .unwrap_or_else(|| "ungrouped".into()),
            ),
        }
    }
}

/// One wave of the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Wave {
    /// 1-based, across the whole sweep.
    pub number: usize,
    /// The OU/group this wave belongs to (`span: per_group`), or the partitions it covers
    /// joined with `, ` (`span: across`); `None` for `by: none`.
    pub partition: Option<String>,
    /// The first wave of its partition (or of the sweep): the canary.
    pub canary: bool,
    /// Indices into the host list given to [`plan_waves`], in run order.
    pub hosts: Vec<usize>,
}

/// Cuts `hosts` into waves. Every host is in exactly one wave; waves are in run order.
pub fn plan_waves(hosts: &[&Host], r: &Rollout) -> Vec<Wave> {
    let mut order: Vec<usize> = (0..hosts.len()).collect();
    match r.order {
        Order::Inventory => {}
        Order::Sorted => order.sort_by(|&a, &b| hosts[a].name.cmp(&hosts[b].name)),
        Order::Shuffle(seed) => shuffle(&mut order, seed),
    }
    // Partitions in order of their first host (sorted by name for `order: sorted`).
    let mut parts: Vec<(Option<String>, Vec<usize>)> = Vec::new();
    for i in order {
        let key = r.partition_of(hosts[i]);
        match parts.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(i),
            None => parts.push((key, vec![i])),
        }
    }
    if r.order == Order::Sorted {
        parts.sort_by(|a, b| a.0.cmp(&b.0));
    }
    let mut waves = Vec::new();
    match r.span {
        Span::PerGroup => {
            for (key, members) in parts {
                cut(&members, r, &mut waves, |_| key.clone());
            }
        }
        Span::Across => {
            let label: Vec<(usize, Option<String>)> = parts
                .iter()
                .flat_map(|(k, v)| v.iter().map(move |&i| (i, k.clone())))
                .collect();
            let members: Vec<usize> = label.iter().map(|(i, _)| *i).collect();
            cut(&members, r, &mut waves, |wave_hosts| {
                let mut names: Vec<String> = Vec::new();
                for h in wave_hosts {
                    if let Some((_, Some(k))) = label.iter().find(|(i, _)| i == h) {
                        if !names.contains(k) {
                            names.push(k.clone());
                        }
                    }
                }
                (!names.is_empty()).then(|| names.join(", "))
            });
        }
    }
    waves
}

fn cut(
    members: &[usize],
    r: &Rollout,
    waves: &mut Vec<Wave>,
    label: impl Fn(&[usize]) -> Option<String>,
) {
    let mut at = 0;
    let mut k = 0;
    while at < members.len() {
        let size = r.waves[k.min(r.waves.len() - 1)];
        let n = size.take(members.len() - at);
        let hosts = members[at..at + n].to_vec();
        waves.push(Wave {
            number: waves.len() + 1,
            partition: label(&hosts),
            canary: k == 0,
            hosts,
        });
        at += n;
        k += 1;
    }
}

/// Fisher–Yates with splitmix64: fixed here so a seed means the same order forever.
fn shuffle(v: &mut [usize], seed: u64) {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for i in (1..v.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn host(name: &str, ou: Option<&str>, group: &[&str]) -> Host {
        let mut vars = BTreeMap::new();
        if let Some(ou) = ou {
            vars.insert("ou".to_string(), serde_json::json!(ou));
        }
        Host {
            name: name.into(),
            address: name.into(),
            port: None,
            user: None,
            connection: crate::transport::Transport::ansible_default(),
            key_file: None,
            groups: group.iter().map(|g| g.to_string()).collect(),
            group_paths: if group.is_empty() {
                vec![]
            } else {
                vec![group.iter().map(|g| g.to_string()).collect()]
            },
            own_vars: vars.clone().into(),
            vars: vars.into(),
            password: None,
        }
    }

    fn names(hosts: &[&Host], w: &Wave) -> Vec<String> {
        w.hosts.iter().map(|&i| hosts[i].name.clone()).collect()
    }

    fn rollout(yaml: &str) -> Rollout {
        let r: Rollout = serde_saphyr::from_str(yaml).unwrap();
        r.check().unwrap();
        r
    }

    #[test]
    fn sizes_are_counts_or_percentages_of_the_remaining_hosts_the_last_repeating() {
        let hs: Vec<Host> = (0..40)
            .map(|i| host(&format!("h{i:02}"), None, &[]))
            .collect();
        let refs: Vec<&Host> = hs.iter().collect();
        let r = rollout("waves: [1, 5, \"20%\", 10]");
        let sizes: Vec<usize> = plan_waves(&refs, &r)
            .iter()
            .map(|w| w.hosts.len())
            .collect();
        // 40 → 1, 5, ceil(34*0.2)=7, then 10 repeating: 10, 10, 7.
        assert_eq!(sizes, vec![1, 5, 7, 10, 10, 7]);
        let r = rollout("waves: [2, \"50%\"]");
        let sizes: Vec<usize> = plan_waves(&refs, &r)
            .iter()
            .map(|w| w.hosts.len())
            .collect();
        // 38 left → 19, 19 left → 10, 9 → 5, 4 → 2, 2 → 1, 1 → 1.
        assert_eq!(sizes, vec![2, 19, 10, 5, 2, 1, 1]);
        assert!(plan_waves(&refs, &r)[0].canary);
        assert!(!plan_waves(&refs, &r)[1].canary);
    }

    #[test]
    fn per_ou_gives_each_ou_its_own_canary_across_gives_one() {
        let hs = [
            host("a1", Some("Tokyo/Sales"), &[]),
            host("b1", Some("Paris"), &[]),
            host("a2", Some("Tokyo/Sales"), &[]),
            host("a3", Some("Tokyo/Sales"), &[]),
            host("b2", Some("Paris"), &[]),
            host("c1", None, &["lyon", "lab"]),
        ];
        let refs: Vec<&Host> = hs.iter().collect();
        let r = rollout("by: ou\nwaves: [1, 100%]");
        let w = plan_waves(&refs, &r);
        let got: Vec<(Option<String>, Vec<String>, bool)> = w
            .iter()
            .map(|w| (w.partition.clone(), names(&refs, w), w.canary))
            .collect();
        assert_eq!(
            got,
            vec![
                (Some("Tokyo/Sales".into()), vec!["a1".into()], true),
                (
                    Some("Tokyo/Sales".into()),
                    vec!["a2".into(), "a3".into()],
                    false
                ),
                (Some("Paris".into()), vec!["b1".into()], true),
                (Some("Paris".into()), vec!["b2".into()], false),
                (Some("lyon/lab".into()), vec!["c1".into()], true),
            ]
        );
        let r = rollout("by: ou\nspan: across\nwaves: [1, 3]");
        let w = plan_waves(&refs, &r);
        let got: Vec<(Option<String>, Vec<String>)> = w
            .iter()
            .map(|w| (w.partition.clone(), names(&refs, w)))
            .collect();
        assert_eq!(
            got,
            vec![
                (Some("Tokyo/Sales".into()), vec!["a1".into()]),
                (
                    Some("Tokyo/Sales, Paris".into()),
                    vec!["a2".into(), "a3".into(), "b1".into()]
                ),
                (
                    Some("Paris, lyon/lab".into()),
                    vec!["b2".into(), "c1".into()]
                ),
            ]
        );
        let r = rollout("by: group\nwaves: [5]");
        let w = plan_waves(&refs, &r);
        assert_eq!(w.len(), 2);
        assert_eq!(w[1].partition.as_deref(), Some("lab"));
    }

    #[test]
    fn every_host_is_in_exactly_one_wave_whatever_the_order() {
        let hs: Vec<Host> = (0..57)
            .map(|i| host(&format!("h{i:02}"), Some(["x", "y", "z"][i % 3]), &[]))
            .collect();
        let refs: Vec<&Host> = hs.iter().collect();
        for order in ["inventory", "sorted", "shuffle(7)", "shuffle:8"] {
            for span in ["per_group", "across"] {
                let r = rollout(&format!(
                    "by: ou\nspan: {span}\norder: {order}\nwaves: [1, 3, \"30%\"]"
                ));
                let mut seen: Vec<usize> = plan_waves(&refs, &r)
                    .iter()
                    .flat_map(|w| w.hosts.clone())
                    .collect();
                seen.sort();
                assert_eq!(seen, (0..57).collect::<Vec<_>>(), "{order} {span}");
            }
        }
        // A seed is a fixed order; another seed another one.
        let a = plan_waves(&refs, &rollout("order: shuffle(42)\nwaves: [57]"));
        let b = plan_waves(&refs, &rollout("order: shuffle(42)\nwaves: [57]"));
        let c = plan_waves(&refs, &rollout("order: shuffle(43)\nwaves: [57]"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a[0].hosts, (0..57).collect::<Vec<_>>());
    }

    #[test]
    fn the_gate_is_strictly_more_than_the_percentage() {
        let r = rollout("max_fail_percentage: 20");
        assert!(!r.wave_fails(1, 5), "exactly 20 % continues");
        assert!(r.wave_fails(2, 5));
        assert!(!r.wave_fails(0, 0));
        let r = rollout("max_fail_percentage: 0");
        assert!(r.wave_fails(1, 100));
        assert!(!r.wave_fails(0, 100));
        let r = rollout("{}");
        assert!(!r.wave_fails(4, 5), "unset: only a wave where all failed");
        assert!(r.wave_fails(5, 5));
        assert!(r.is_failure(HostClass::Unreachable));
        assert!(!r.is_failure(HostClass::Detected));
        assert!(!r.is_failure(HostClass::NoResult));
    }

    #[test]
    fn bad_settings_are_refused_with_the_reason() {
        for (yaml, want) in [
            ("waves: [0]", "at least 1"),
            ("waves: [\"120%\"]", "at most 100"),
            ("waves: [\"x\"]", "expected a count"),
            ("pause: sometimes", "invalid pause"),
            ("order: random", "invalid order"),
            ("by: site", "unknown variant"),
            ("failure_classes: [detected]", "cannot count"),
            ("failure_classes: [down]", "unknown host class"),
            ("colour: red", "unknown field"),
        ] {
            let e = serde_saphyr::from_str::<Rollout>(yaml)
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{yaml}: {e}");
        }
        let e = rollout("max_fail_percentage: 10")
            .with(&Overrides {
                max_fail_percentage: Some(150.0),
                ..Default::default()
            })
            .unwrap_err();
        assert!(e.contains("between 0 and 100"), "{e}");
        assert_eq!(
            Pause::parse("90s").unwrap(),
            Pause::For(std::time::Duration::from_secs(90))
        );
    }

    #[test]
    fn the_effective_rollout_round_trips_through_json() {
        // The journal stores it with the run so that `resume` gates the same way.
        let r = rollout(
            "by: ou\nwaves: [1, \"12.5%\", 30]\nmax_fail_percentage: 10\npause: 1500ms\n\
             order: shuffle(9)\nspan: across\nou_var: site\nfailure_classes: [unreachable, no_result]",
        );
        let json = serde_json::to_string(&r).unwrap();
        let back: Rollout = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r, "{json}");
        let d = Rollout::default();
        let back: Rollout = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back, d);
    }
}
