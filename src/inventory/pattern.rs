//! Host patterns, in both of Ansible's senses: the host *ranges* written in
//! an inventory (`web[01:03].example.com`, `db-[a:c]`, `host:2222`), and the
//! *selection* patterns given to `--limit` (`web:&prod:!web03`).
//!
//! Selection follows Ansible's `InventoryManager`: terms are split on commas
//! (or, failing that, on colons outside brackets), then every plain term is
//! unioned, intersections (`&`) are applied next and exclusions (`!`) last,
//! whatever order they were written in. Unlike Ansible, a plain or `&` term
//! that matches nothing is an error rather than a warning: a typo in a
//! `--limit` must never quietly turn into "scan nothing" or "scan less".

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::path::Path;

use wildmatch::WildMatch;

use super::{Host, Inventory, InventoryError, Loc};

/// Split an inventory host entry into names and an optional port, the way
/// Ansible's `parse_address` + `expand_hostname_range` do: `[v6]:port`,
/// `name:port` (colons inside `[...]` ranges do not count), bare IPv6
/// addresses (no port possible), then range expansion. Callers that read
/// an inventory go through [`HostEntry`] so that they can count an entry's
/// hosts before expanding it.
#[cfg(test)]
pub(crate) fn expand_host_pattern(entry: &str) -> Result<(Vec<String>, Option<u16>), String> {
    let e = HostEntry::parse(entry)?;
    Ok((e.names()?, e.port))
}

/// One host entry of an inventory, parsed but not yet expanded: its
/// [`count`](HostEntry::count) costs nothing however large its ranges, so
/// the total can be bounded before a single name is made.
#[derive(Debug)]
pub(crate) struct HostEntry<'a> {
    host: &'a str,
    pub port: Option<u16>,
    /// A bare IPv6 address: its colons are not a range.
    literal: bool,
}

impl<'a> HostEntry<'a> {
    pub fn parse(entry: &'a str) -> Result<HostEntry<'a>, String> {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err("empty host name".into());
        }
        if entry.chars().any(char::is_whitespace) {
            return Err(format!("host name {entry:?} contains whitespace"));
        }
        let (host, port) = split_port(entry)?;
        if host.is_empty() {
            return Err(format!("host entry {entry:?} has no host name"));
        }
        if host == "---" {
            return Err("host name `---` is normally a sign that this is a YAML file".into());
        }
        if host.ends_with(':') && port.is_none() && host.parse::<Ipv6Addr>().is_err() {
            return Err(format!(
                "host entry {entry:?} ends in `:`, which is reserved for a port"
            ));
        }
        let literal = host.parse::<Ipv6Addr>().is_ok();
        Ok(HostEntry {
            host,
            port,
            literal,
        })
    }

    /// How many names [`names`](HostEntry::names) would make (saturating),
    /// from the range bounds alone.
    pub fn count(&self) -> Result<u64, String> {
        if self.literal {
            return Ok(1);
        }
        let name = self.host;
        let mut total: u64 = 1;
        let mut rest = name;
        while let Some(open) = rest.find('[') {
            let close = rest[open..]
                .find(']')
                .map(|i| open + i)
                .ok_or_else(|| format!("unterminated range `[` in host name {name:?}"))?;
            let range = Range::parse(&rest[open + 1..close])
                .map_err(|m| format!("{m} in host name {name:?}"))?;
            total = total.saturating_mul(range.count());
            rest = &rest[close + 1..];
        }
        if rest.contains(']') {
            return Err(format!("unbalanced `]` in host name {name:?}"));
        }
        Ok(total)
    }

    /// Every name the entry stands for, in Ansible's order. Call after
    /// checking [`count`](HostEntry::count) against the inventory's limit.
    pub fn names(&self) -> Result<Vec<String>, String> {
        if self.literal {
            // A bare IPv6 address has no ranges; do not mistake its colons for one.
            return Ok(vec![self.host.to_string()]);
        }
        expand_ranges(self.host)
    }
}

fn parse_port(digits: &str, entry: &str) -> Result<u16, String> {
    digits
        .parse::<u32>()
        .ok()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("port in {entry:?} must be between 1 and 65535"))
}

fn split_port(entry: &str) -> Result<(&str, Option<u16>), String> {
    // `[host]:port`, the only way to give a port to an IPv6 address.
    if let Some(rest) = entry.strip_prefix('[') {
        if let Some(close) = rest.rfind("]:") {
            let digits = &rest[close + 2..];
            if !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()) {
                let inner = &rest[..close];
                // `[1:3]x:22` is a range followed by a port, not `[v6]:port`.
                if inner.parse::<Ipv6Addr>().is_ok() || !inner.contains(':') {
                    return Ok((inner, Some(parse_port(digits, entry)?)));
                }
            }
        }
    }
    // `name:port`: exactly one colon outside brackets, followed by digits.
    let mut depth = 0usize;
    let mut colons = Vec::new();
    for (i, c) in entry.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ':' if depth == 0 => colons.push(i),
            _ => {}
        }
    }
    if let [i] = colons[..] {
        let digits = &entry[i + 1..];
        if !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()) {
            return Ok((&entry[..i], Some(parse_port(digits, entry)?)));
        }
    }
    Ok((entry, None))
}

/// Expand every `[begin:end]` / `[begin:end:step]` in `name`. Numeric
/// bounds with a leading zero fix the width (`[01:10]`); letter bounds
/// (`[a:f]`) step through ASCII letters as Python's `string.ascii_letters`.
/// Iterative, one bracket at a time, like Ansible's recursive version.
fn expand_ranges(name: &str) -> Result<Vec<String>, String> {
    if !name.contains('[') {
        if name.contains(']') {
            return Err(format!("unbalanced `]` in host name {name:?}"));
        }
        return Ok(vec![name.to_string()]);
    }
    let mut done = Vec::new();
    let mut todo = vec![name.to_string()];
    while let Some(cur) = todo.pop() {
        let Some(open) = cur.find('[') else {
            if cur.contains(']') {
                return Err(format!("unbalanced `]` in host name {name:?}"));
            }
            done.push(cur);
            continue;
        };
        let close = cur[open..]
            .find(']')
            .map(|i| open + i)
            .ok_or_else(|| format!("unterminated range `[` in host name {name:?}"))?;
        let (head, spec, tail) = (&cur[..open], &cur[open + 1..close], &cur[close + 1..]);
        let values = Range::parse(spec)
            .map_err(|m| format!("{m} in host name {name:?}"))?
            .values();
        // Pushed in reverse so that popping yields them in order.
        for v in values.iter().rev() {
            todo.push(format!("{head}{v}{tail}"));
        }
    }
    Ok(done)
}

const LETTERS: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// One `[begin:end:step]`, checked but not expanded.
#[derive(Debug)]
enum Range {
    /// Indices into [`LETTERS`].
    Letters { b: usize, e: usize, step: usize },
    Numbers {
        b: u64,
        e: u64,
        step: u64,
        width: usize,
    },
}

impl Range {
    fn parse(spec: &str) -> Result<Range, String> {
        let bounds: Vec<&str> = spec.split(':').collect();
        if bounds.len() != 2 && bounds.len() != 3 {
            return Err(format!(
                "host range `[{spec}]` must be begin:end or begin:end:step"
            ));
        }
        let beg = if bounds[0].is_empty() { "0" } else { bounds[0] };
        let end = bounds[1];
        if end.is_empty() {
            return Err(format!("host range `[{spec}]` must specify an end value"));
        }
        let step: usize =
            match bounds.get(2) {
                None => 1,
                Some(s) => s.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    format!("host range `[{spec}]` step must be a positive integer")
                })?,
            };
        if let (Some(b), Some(e)) = (LETTERS.find(beg), LETTERS.find(end)) {
            if beg.len() == 1 && end.len() == 1 {
                if b > e {
                    return Err(format!("host range `[{spec}]` must have begin <= end"));
                }
                return Ok(Range::Letters { b, e, step });
            }
        }
        let width = if beg.len() > 1 && beg.starts_with('0') {
            if beg.len() != end.len() {
                return Err(format!(
                    "host range `[{spec}]` must specify equal-length begin and end formats"
                ));
            }
            beg.len()
        } else {
            0
        };
        let parse = |s: &str| -> Result<u64, String> {
            if s.bytes().all(|c| c.is_ascii_digit()) {
                s.parse()
                    .map_err(|_| format!("host range `[{spec}]` bound {s:?} is too large"))
            } else {
                Err(format!(
                    "host range `[{spec}]` bounds must be numbers or single letters"
                ))
            }
        };
        let (b, e) = (parse(beg)?, parse(end)?);
        if b > e {
            return Err(format!("host range `[{spec}]` must have begin <= end"));
        }
        Ok(Range::Numbers {
            b,
            e,
            step: step as u64,
            width,
        })
    }

    fn count(&self) -> u64 {
        match *self {
            Range::Letters { b, e, step } => ((e - b) / step + 1) as u64,
            Range::Numbers { b, e, step, .. } => ((e - b) / step).saturating_add(1),
        }
    }

    fn values(&self) -> Vec<String> {
        match *self {
            Range::Letters { b, e, step } => LETTERS[b..=e]
                .chars()
                .step_by(step)
                .map(String::from)
                .collect(),
            Range::Numbers { b, e, step, width } => {
                let mut out = Vec::new();
                let mut i = b;
                loop {
                    out.push(format!("{i:0width$}"));
                    match i.checked_add(step) {
                        Some(n) if n <= e => i = n,
                        _ => break,
                    }
                }
                out
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Selection.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Union,
    Intersect,
    Exclude,
}

#[derive(Debug)]
struct Term {
    op: Op,
    text: String,
    /// Where the term came from when read from an `@file`.
    origin: Option<(std::path::PathBuf, usize)>,
}

/// Split like Ansible's `split_host_pattern`: commas if there are any
/// (the only separator that is safe with IPv6 addresses), else a single
/// IPv6 address, else colons outside `[...]` subscripts.
fn split_pattern(pattern: &str) -> Vec<String> {
    let parts: Vec<String> = if pattern.contains(',') {
        pattern.split(',').map(str::to_string).collect()
    } else if pattern.trim().parse::<Ipv6Addr>().is_ok() {
        vec![pattern.to_string()]
    } else {
        let mut parts = Vec::new();
        let mut cur = String::new();
        let mut depth = 0usize;
        for c in pattern.chars() {
            match c {
                '[' => {
                    depth += 1;
                    cur.push(c);
                }
                ']' => {
                    depth = depth.saturating_sub(1);
                    cur.push(c);
                }
                ':' if depth == 0 => parts.push(std::mem::take(&mut cur)),
                _ => cur.push(c),
            }
        }
        parts.push(cur);
        parts
    };
    parts
        .into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn parse_term(text: &str, inherited: Op, origin: Option<(std::path::PathBuf, usize)>) -> Term {
    let (op, rest) = if let Some(r) = text.strip_prefix('&') {
        (Op::Intersect, r)
    } else if let Some(r) = text.strip_prefix('!') {
        (Op::Exclude, r)
    } else {
        (inherited, text)
    };
    Term {
        op,
        text: rest.trim().to_string(),
        origin,
    }
}

/// Read an `@file` host list: one name (or pattern term) per line, blank
/// lines and `#` comments ignored; relative paths are taken from the cwd.
fn read_limit_file(path: &Path, op: Op) -> Result<Vec<Term>, InventoryError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| InventoryError::new(path, format!("cannot read host list: {e}")))?;
    let mut terms = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_start_matches('\u{feff}').trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        terms.push(parse_term(line, op, Some((path.to_path_buf(), i + 1))));
    }
    if terms.is_empty() {
        return Err(InventoryError::new(path, "host list file names no hosts"));
    }
    Ok(terms)
}

/// `name[3]`, `name[-1]`, `name[1:3]`, `name[2:]` or `name[1-3]`:
/// Ansible's subscripts, applied to the hosts the name matches.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Subscript {
    Index(i64),
    Slice(usize, Option<usize>),
}

fn split_subscript(term: &str) -> (&str, Option<Subscript>) {
    let Some(body) = term.strip_suffix(']') else {
        return (term, None);
    };
    let Some(open) = body.rfind('[') else {
        return (term, None);
    };
    let (base, inner) = (&body[..open], &body[open + 1..]);
    if base.is_empty() {
        return (term, None);
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if let Some(sep) = inner.find([':', '-']).filter(|&i| i > 0) {
        let (a, b) = (&inner[..sep], &inner[sep + 1..]);
        if digits(a) && (b.is_empty() || digits(b)) {
            if let Ok(a) = a.parse() {
                let b = if b.is_empty() { None } else { b.parse().ok() };
                if b.is_some() || inner[sep + 1..].is_empty() {
                    return (base, Some(Subscript::Slice(a, b)));
                }
            }
        }
        return (term, None);
    }
    let unsigned = inner.strip_prefix('-').unwrap_or(inner);
    if digits(unsigned) {
        if let Ok(i) = inner.parse() {
            return (base, Some(Subscript::Index(i)));
        }
    }
    (term, None)
}

struct Matcher<'a> {
    inv: &'a Inventory,
    index: HashMap<&'a str, usize>,
}

impl<'a> Matcher<'a> {
    fn new(inv: &'a Inventory) -> Self {
        let index = inv
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (h.name.as_str(), i))
            .collect();
        Matcher { inv, index }
    }

    /// Hosts of a group and its descendants, breadth first as in Ansible's
    /// `Group.get_hosts`; `all` also picks up anything the walk missed.
    fn group_hosts(&self, group: &str, out: &mut Vec<usize>) {
        let mut seen_groups = std::collections::HashSet::new();
        let mut queue = std::collections::VecDeque::from([group]);
        while let Some(g) = queue.pop_front() {
            if !seen_groups.insert(g) {
                continue;
            }
            let Some(grp) = self.inv.groups.get(g) else {
                continue;
            };
            out.extend(grp.hosts.iter().filter_map(|h| self.index.get(h.as_str())));
            queue.extend(grp.children.iter().map(String::as_str));
        }
        if group == "all" {
            out.extend(0..self.inv.hosts.len());
        }
    }

    /// Ansible's `_enumerate_matches`: groups first; host names too when no
    /// group matched or the term looks like a host (`.`) or a glob.
    fn enumerate(&self, term: &str) -> Vec<usize> {
        let glob = term.contains(['*', '?']);
        let mut out = Vec::new();
        let mut matched_group = false;
        if glob {
            let w = WildMatch::new(term);
            for name in self.inv.groups.keys() {
                if w.matches(name) {
                    matched_group = true;
                    self.group_hosts(name, &mut out);
                }
            }
        } else if self.inv.groups.contains_key(term) {
            matched_group = true;
            self.group_hosts(term, &mut out);
        }
        if !matched_group || glob || term.contains('.') {
            if glob {
                let w = WildMatch::new(term);
                out.extend(
                    self.inv
                        .hosts
                        .iter()
                        .enumerate()
                        .filter(|(_, h)| w.matches(&h.name))
                        .map(|(i, _)| i),
                );
            } else if let Some(&i) = self.index.get(term) {
                out.push(i);
            }
        }
        let mut seen = vec![false; self.inv.hosts.len()];
        out.retain(|&i| !std::mem::replace(&mut seen[i], true));
        out
    }

    fn matches(&self, term: &str) -> Result<Vec<usize>, String> {
        if term.starts_with('~') {
            return Err(format!(
                "regex patterns unsupported (`{term}`); use names, groups or `*`/`?` globs"
            ));
        }
        if term == "all" || term == "*" {
            return Ok((0..self.inv.hosts.len()).collect());
        }
        // A real host or group whose name merely looks like a subscript wins.
        let direct = self.enumerate(term);
        if !direct.is_empty() {
            return Ok(direct);
        }
        let (base, sub) = split_subscript(term);
        let Some(sub) = sub else {
            return Ok(direct);
        };
        let hosts = self.enumerate(base);
        let n = hosts.len();
        Ok(match sub {
            Subscript::Index(i) => {
                let i = if i < 0 {
                    i64::try_from(n).unwrap_or(i64::MAX) + i
                } else {
                    i
                };
                usize::try_from(i)
                    .ok()
                    .and_then(|i| hosts.get(i).copied())
                    .into_iter()
                    .collect()
            }
            Subscript::Slice(a, b) => {
                let end = b.map_or(n, |b| b.saturating_add(1).min(n));
                hosts
                    .get(a..end.max(a))
                    .map(<[usize]>::to_vec)
                    .unwrap_or_default()
            }
        })
    }
}

pub(super) fn select<'a>(
    inv: &'a Inventory,
    pattern: &str,
) -> Result<Vec<&'a Host>, InventoryError> {
    let source = inv.source.as_path();
    if pattern.trim().is_empty() {
        return Err(InventoryError::new(source, "empty host pattern"));
    }
    let mut terms = Vec::new();
    for part in split_pattern(pattern) {
        let term = parse_term(&part, Op::Union, None);
        if let Some(file) = term.text.strip_prefix('@') {
            terms.extend(read_limit_file(Path::new(file.trim()), term.op)?);
        } else {
            terms.push(term);
        }
    }
    // Ansible's order_patterns: unions, then intersections, then
    // exclusions; with no plain term at all, start from `all`.
    let mut ordered: Vec<&Term> = Vec::new();
    for op in [Op::Union, Op::Intersect, Op::Exclude] {
        ordered.extend(terms.iter().filter(|t| t.op == op));
    }
    let implicit_all = Term {
        op: Op::Union,
        text: "all".into(),
        origin: None,
    };
    if !terms.iter().any(|t| t.op == Op::Union) {
        ordered.insert(0, &implicit_all);
    }

    let m = Matcher::new(inv);
    let mut chosen = vec![false; inv.hosts.len()];
    for term in ordered {
        let fail = |msg: String| match &term.origin {
            Some((file, line)) => InventoryError::at(file, Some(Loc::new(*line, 0)), msg),
            None => InventoryError::new(source, msg),
        };
        if term.text.is_empty() {
            return Err(fail("empty term in host pattern".into()));
        }
        let hits = m.matches(&term.text).map_err(fail)?;
        if hits.is_empty() && term.op != Op::Exclude {
            // An empty inventory matching `all` is no typo, but still an
            // empty selection the operator should hear about.
            return Err(fail(format!(
                "host pattern term `{}` matches no host or group in this inventory",
                term.text
            )));
        }
        match term.op {
            Op::Union => hits.iter().for_each(|&i| chosen[i] = true),
            Op::Intersect => {
                let mut keep = vec![false; inv.hosts.len()];
                hits.iter().for_each(|&i| keep[i] = true);
                chosen.iter_mut().zip(keep).for_each(|(c, k)| *c &= k);
            }
            Op::Exclude => hits.iter().for_each(|&i| chosen[i] = false),
        }
    }
    Ok(inv
        .hosts
        .iter()
        .zip(chosen)
        .filter_map(|(h, c)| c.then_some(h))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(entry: &str) -> Vec<String> {
        expand_host_pattern(entry).unwrap().0
    }

    #[test]
    fn numeric_ranges_keep_width() {
        assert_eq!(
            names("web[01:03].example.com"),
            [
                "web01.example.com",
                "web02.example.com",
                "web03.example.com"
            ]
        );
        assert_eq!(names("h[8:10]"), ["h8", "h9", "h10"]);
        assert_eq!(names("h[0:6:3]"), ["h0", "h3", "h6"]);
        assert_eq!(names("h[:1]"), ["h0", "h1"]);
    }

    #[test]
    fn letter_and_nested_ranges() {
        assert_eq!(names("db-[a:c]"), ["db-a", "db-b", "db-c"]);
        assert_eq!(names("r[1:2]-[a:b]"), ["r1-a", "r1-b", "r2-a", "r2-b"]);
    }

    #[test]
    fn range_errors() {
        for bad in [
            "h[1:]",
            "h[3:1]",
            "h[01:100]",
            "h[1:2:0]",
            "h[1]",
            "h[x:yy]",
            "h[1:2",
            "h]",
        ] {
            assert!(expand_host_pattern(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn counting_costs_nothing_and_matches_expansion() {
        let count = |e: &str| HostEntry::parse(e).unwrap().count().unwrap();
        for e in [
            "web[01:03].x",
            "r[1:2]-[a:b]",
            "h[0:6:3]",
            "fe80::1",
            "[::1]:22",
            "plain",
        ] {
            assert_eq!(count(e), names(e).len() as u64, "{e}");
        }
        // Counted from the bounds alone: ten to the twelfth, no allocation.
        assert_eq!(count("h[0:999999][0:999999]"), 1_000_000_000_000);
        assert_eq!(count("h[0:18446744073709551615][0:9]"), u64::MAX);
        assert!(HostEntry::parse("h[1:2").unwrap().count().is_err());
        assert!(HostEntry::parse("h]").unwrap().count().is_err());
    }

    #[test]
    fn ports_and_ipv6() {
        assert_eq!(
            expand_host_pattern("web:2222").unwrap(),
            (vec!["web".into()], Some(2222))
        );
        assert_eq!(
            expand_host_pattern("w[1:2]:22").unwrap(),
            (vec!["w1".into(), "w2".into()], Some(22))
        );
        assert_eq!(
            expand_host_pattern("fe80::1").unwrap(),
            (vec!["fe80::1".into()], None)
        );
        assert_eq!(
            expand_host_pattern("[2001:db8::1]:2200").unwrap(),
            (vec!["2001:db8::1".into()], Some(2200))
        );
        assert!(expand_host_pattern("web:0").is_err());
        assert!(expand_host_pattern("web:70000").is_err());
        assert!(expand_host_pattern("web:").is_err());
    }

    #[test]
    fn splitting() {
        assert_eq!(split_pattern("a:b:&c:!d"), ["a", "b", "&c", "!d"]);
        assert_eq!(split_pattern("a, b ,,!c"), ["a", "b", "!c"]);
        assert_eq!(split_pattern("web[0:2]:db"), ["web[0:2]", "db"]);
        assert_eq!(split_pattern("fe80::1"), ["fe80::1"]);
        assert_eq!(split_pattern("fe80::1,::1"), ["fe80::1", "::1"]);
    }

    #[test]
    fn subscripts() {
        assert_eq!(
            split_subscript("web[0]"),
            ("web", Some(Subscript::Index(0)))
        );
        assert_eq!(
            split_subscript("web[-1]"),
            ("web", Some(Subscript::Index(-1)))
        );
        assert_eq!(
            split_subscript("web[1:3]"),
            ("web", Some(Subscript::Slice(1, Some(3))))
        );
        assert_eq!(
            split_subscript("web[1-]"),
            ("web", Some(Subscript::Slice(1, None)))
        );
        assert_eq!(split_subscript("web[a]"), ("web[a]", None));
        assert_eq!(split_subscript("[1]"), ("[1]", None));
    }
}
