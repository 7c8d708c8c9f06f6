//! Durations and sizes as operators write them in config files and options
//! (`90s`, `1h30m`, `4MiB`): one reading for the playbook, the rollout, the
//! notify settings, the LDAP inventory and the command line.

use std::time::Duration;

/// `90`, `90s`, `2m`, `1h30m`, `500ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut num = String::new();
    let mut chars = t.chars().peekable();
    let bad = || format!("invalid duration {text:?} (examples: 90s, 2m, 1h30m, 500ms)");
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().map_err(|_| bad())?;
        num.clear();
        let unit = match c {
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                Duration::from_millis(n)
            }
            'h' => Duration::from_secs(n.saturating_mul(3600)),
            'm' => Duration::from_secs(n.saturating_mul(60)),
            's' => Duration::from_secs(n),
            _ => return Err(bad()),
        };
        total = total.saturating_add(unit);
    }
    if !num.is_empty() || t.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

/// `1048576`, `512KiB`, `4MiB`, `1GiB` (also KB/MB/GB as powers of 1000).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {text:?} (examples: 4MiB, 512KiB, 1048576)"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => return Err(format!("invalid size unit {other:?} in {text:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {text:?} is too large"))
}
