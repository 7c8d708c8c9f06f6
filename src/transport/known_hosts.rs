//! known_hosts, read once per sweep instead of once per host.
//!
//! russh's `check_known_hosts_path` reads and scans the whole file for every connection: with
//! a 10,000-line known_hosts and 10,000 hosts that is 10^8 line scans (and as many HMACs when
//! the file is hashed, as Debian's `HashKnownHosts yes` writes it), seconds of CPU that grow
//! with the square of the fleet. [`KnownHosts`] parses the file once: plain host names go into
//! a map, so a lookup is one hash probe; hashed (`|1|salt|hash`) and wildcard entries stay in a
//! list scanned per host, because each has its own salt or pattern.
//!
//! Semantics follow OpenSSH where russh's reader and OpenSSH agree, and are stricter where
//! russh is silent: a host matches a line when one of its patterns matches and no negated
//! (`!pattern`) one does; the key is accepted when a matching line holds it; a matching line
//! of the same algorithm with another key means the key CHANGED (rejected, with that line
//! number), whatever other lines say; a host with matching lines none of which holds the key
//! presents a CHANGED key too, whatever its algorithm (OpenSSH would only warn and ask; a host
//! that drops its known key type to show a fresh key of another type must never pass as new,
//! which `--accept-new-host-keys` would then record); a `@revoked` line holding the key rejects
//! it; `@cert-authority` lines are ignored (host certificates are not supported). Only a host
//! with no matching line at all is unknown. Lines that do not parse are skipped: a host whose
//! only line is damaged is unknown, never accepted. [`KnownHosts::algorithms`] gives the key
//! types known for a host, so that the client can ask for those first, as OpenSSH does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine as _;
use hmac::{KeyInit as _, Mac as _};
use russh::keys::PublicKey;

/// What the file says about one host's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A matching line holds this key.
    Known,
    /// No line for this host.
    Unknown,
    /// No matching line holds this key, or one of the same algorithm holds another key
    /// (1-based line number of that line, else of the first matching line).
    Changed(usize),
    /// A `@revoked` line holds this key (1-based line number).
    Revoked(usize),
}

struct Entry {
    line: usize,
    key: PublicKey,
}

/// A line whose host part needs more than a map lookup.
struct Patterned {
    patterns: Vec<Pattern>,
    entry: Entry,
}

enum Pattern {
    /// `|1|salt|hash`: HMAC-SHA1 of the host (or `[host]:port`) keyed by the salt.
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
    /// A name or a glob with `*` and `?`; `negated` for `!pattern`.
    Glob { text: String, negated: bool },
}

/// A parsed known_hosts file.
#[derive(Default)]
pub struct KnownHosts {
    plain: HashMap<String, Vec<Entry>>,
    patterned: Vec<Patterned>,
    revoked: Vec<Entry>,
}

impl KnownHosts {
    /// Reads `path`; a missing file is an empty one.
    pub fn load(path: &Path) -> std::io::Result<KnownHosts> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(KnownHosts::parse(&String::from_utf8_lossy(&bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KnownHosts::default()),
            Err(e) => Err(e),
        }
    }

    pub fn parse(text: &str) -> KnownHosts {
        let mut kh = KnownHosts::default();
        for (i, line) in text.lines().enumerate() {
            kh.add_line(i + 1, line);
        }
        kh
    }

    /// Adds one line (as the file's line `number`).
    pub fn add_line(&mut self, number: usize, line: &str) {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return;
        }
        let mut fields = line.split_whitespace();
        let mut hosts = fields.next();
        let mut revoked = false;
        if let Some(marker) = hosts.filter(|h| h.starts_with('@')) {
            match marker {
                "@revoked" => revoked = true,
                // @cert-authority (and anything unknown): not a host key line we use.
                _ => return,
            }
            hosts = fields.next();
        }
        let (Some(hosts), Some(_algorithm), Some(key)) = (hosts, fields.next(), fields.next())
        else {
            return;
        };
        let Ok(key) = russh::keys::parse_public_key_base64(key) else {
            return;
        };
        let entry = Entry { line: number, key };
        if revoked {
            // OpenSSH applies @revoked to the key whatever the host patterns say.
            self.revoked.push(entry);
            return;
        }
        let names: Vec<&str> = hosts.split(',').filter(|h| !h.is_empty()).collect();
        let simple = names
            .iter()
            .all(|h| !h.starts_with("|1|") && !h.starts_with('!') && !h.contains(['*', '?']));
        if simple && names.len() == 1 {
            self.plain
                .entry(names[0].to_string())
                .or_default()
                .push(entry);
            return;
        }
        let mut patterns = Vec::new();
        for h in names {
            if let Some(rest) = h.strip_prefix("|1|") {
                let mut parts = rest.split('|');
                let engine = base64::engine::general_purpose::STANDARD;
                let (Some(Ok(salt)), Some(Ok(hash))) = (
                    parts.next().map(|p| engine.decode(p)),
                    parts.next().map(|p| engine.decode(p)),
                ) else {
                    continue;
                };
                patterns.push(Pattern::Hashed { salt, hash });
            } else if let Some(neg) = h.strip_prefix('!') {
                patterns.push(Pattern::Glob {
                    text: neg.to_string(),
                    negated: true,
                });
            } else {
                patterns.push(Pattern::Glob {
                    text: h.to_string(),
                    negated: false,
                });
            }
        }
        if !patterns.is_empty() {
            self.patterned.push(Patterned { patterns, entry });
        }
    }

    /// The verdict for `key` presented by `host` on `port`.
    pub fn check(&self, host: &str, port: u16, key: &PublicKey) -> Verdict {
        if let Some(r) = self.revoked.iter().find(|e| e.key == *key) {
            return Verdict::Revoked(r.line);
        }
        let mut known = false;
        // A line of the key's own algorithm holding another key, and the first line of any
        // algorithm for this host.
        let mut changed: Option<usize> = None;
        let mut first: Option<usize> = None;
        self.for_host(host, port, |e| {
            first = Some(first.map_or(e.line, |f| f.min(e.line)));
            if e.key == *key {
                known = true;
            } else if e.key.algorithm() == key.algorithm() {
                changed = Some(changed.map_or(e.line, |c| c.min(e.line)));
            }
        });
        match (changed, known, first) {
            (Some(line), _, _) => Verdict::Changed(line),
            (None, true, _) => Verdict::Known,
            // Lines for this host, none with this key: whatever its type, the key changed.
            (None, false, Some(line)) => Verdict::Changed(line),
            (None, false, None) => Verdict::Unknown,
        }
    }

    /// The key algorithms of the lines for `host` on `port` (revoked keys aside), in file
    /// order without repeats: the host key types to ask the server for first.
    pub fn algorithms(&self, host: &str, port: u16) -> Vec<russh::keys::Algorithm> {
        let mut lines: Vec<(usize, russh::keys::Algorithm)> = Vec::new();
        self.for_host(host, port, |e| {
            if !self.revoked.iter().any(|r| r.key == e.key) {
                lines.push((e.line, e.key.algorithm()));
            }
        });
        lines.sort_by_key(|(line, _)| *line);
        let mut out: Vec<russh::keys::Algorithm> = Vec::new();
        for (_, a) in lines {
            if !out.contains(&a) {
                out.push(a);
            }
        }
        out
    }

    /// Calls `f` with every entry whose host patterns match `host` on `port`.
    fn for_host(&self, host: &str, port: u16, mut f: impl FnMut(&Entry)) {
        let name = if port == 22 {
            host.to_string()
        } else {
            format!("[{host}]:{port}")
        };
        if let Some(list) = self.plain.get(&name) {
            list.iter().for_each(&mut f);
        }
        for p in &self.patterned {
            if matches_line(&p.patterns, &name) {
                f(&p.entry);
            }
        }
    }
}

/// The known_hosts file of a sweep, parsed once and shared by every connection; re-read
/// only when the file changes under us (size or mtime), and kept in step with the keys this
/// process learns (`--accept-new-host-keys`) without re-reading.
pub struct Cache {
    path: Option<PathBuf>,
    state: Mutex<Option<Loaded>>,
}

struct Loaded {
    stamp: Stamp,
    hosts: KnownHosts,
    lines: usize,
}

type Stamp = Option<(std::time::SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl Cache {
    /// `None`: there is no known_hosts file to use (no home directory); every key is refused.
    pub fn new(path: Option<PathBuf>) -> Cache {
        Cache {
            path,
            state: Mutex::new(None),
        }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn loaded<'a>(
        &self,
        guard: &'a mut Option<Loaded>,
        path: &Path,
    ) -> std::io::Result<&'a mut Loaded> {
        let now = stamp(path);
        let stale = guard.as_ref().is_none_or(|l| l.stamp != now);
        if stale {
            let text = match std::fs::read(path) {
                Ok(b) => String::from_utf8_lossy(&b).into_owned(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(e) => return Err(e),
            };
            *guard = Some(Loaded {
                stamp: now,
                hosts: KnownHosts::parse(&text),
                lines: text.lines().count(),
            });
        }
        guard
            .as_mut()
            .ok_or_else(|| std::io::Error::other("known_hosts not loaded"))
    }

    /// The verdict for `key` presented by `host:port`.
    pub fn check(&self, host: &str, port: u16, key: &PublicKey) -> Result<Verdict, String> {
        let path = self
            .path
            .as_deref()
            .ok_or("no known_hosts file (no home directory)")?;
        let mut guard = self.state.lock().map_err(|_| "known_hosts lock poisoned")?;
        let loaded = self
            .loaded(&mut guard, path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(loaded.hosts.check(host, port, key))
    }

    /// The key algorithms known for `host:port` (see [`KnownHosts::algorithms`]); empty when
    /// the file cannot be read (the check then fails the host with the reason).
    pub fn algorithms(&self, host: &str, port: u16) -> Vec<russh::keys::Algorithm> {
        let Some(path) = self.path.as_deref() else {
            return Vec::new();
        };
        let Ok(mut guard) = self.state.lock() else {
            return Vec::new();
        };
        match self.loaded(&mut guard, path) {
            Ok(loaded) => loaded.hosts.algorithms(host, port),
            Err(_) => Vec::new(),
        }
    }

    /// Appends `key` for `host:port` to the file (as ssh does) and to the parsed copy.
    pub fn learn(&self, host: &str, port: u16, key: &PublicKey) -> Result<(), String> {
        let path = self
            .path
            .as_deref()
            .ok_or("no known_hosts file (no home directory)")?;
        let mut guard = self.state.lock().map_err(|_| "known_hosts lock poisoned")?;
        // Load first, so the append below is the only change between the stamps.
        self.loaded(&mut guard, path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        russh::keys::known_hosts::learn_known_hosts_path(host, port, key, path)
            .map_err(|e| format!("cannot record new host key in {}: {e}", path.display()))?;
        if let Some(l) = guard.as_mut() {
            l.lines += 1;
            let name = if port == 22 {
                host.to_string()
            } else {
                format!("[{host}]:{port}")
            };
            l.hosts.plain.entry(name).or_default().push(Entry {
                line: l.lines,
                key: key.clone(),
            });
            l.stamp = stamp(path);
        }
        Ok(())
    }
}

fn matches_line(patterns: &[Pattern], name: &str) -> bool {
    let mut hit = false;
    for p in patterns {
        match p {
            Pattern::Hashed { salt, hash } => {
                if let Ok(mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(salt) {
                    if mac.chain_update(name.as_bytes()).verify_slice(hash).is_ok() {
                        hit = true;
                    }
                }
            }
            Pattern::Glob { text, negated } => {
                if glob(text.as_bytes(), name.as_bytes()) {
                    if *negated {
                        return false;
                    }
                    hit = true;
                }
            }
        }
    }
    hit
}

/// `*` and `?` glob, as OpenSSH's match_pattern (case-sensitive here: known_hosts names are
/// written lower case by ssh, and pushscan connects with the inventory's spelling).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while p < pattern.len() && pattern[p] == b'*' {
        p += 1;
    }
    p == pattern.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIAqQiEHG5Tj/7N3kEy3Hzba3UzYj4tMj3wXN7jWkt2Nq";
    const B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAINy5+iwIg4N1Vn0lvYx7FV9K7kMsPQv2YZ+iCksGwNkw";

    fn key(b64: &str) -> PublicKey {
        russh::keys::parse_public_key_base64(b64).expect("test key")
    }

    #[test]
    fn plain_names_ports_and_changes() {
        let kh = KnownHosts::parse(&format!(
            "# comment\n[10.0.0.1]:2222 ssh-ed25519 {A}\n10.0.0.2 ssh-ed25519 {B}\n"
        ));
        assert_eq!(kh.check("10.0.0.1", 2222, &key(A)), Verdict::Known);
        assert_eq!(kh.check("10.0.0.1", 22, &key(A)), Verdict::Unknown);
        assert_eq!(kh.check("10.0.0.1", 2222, &key(B)), Verdict::Changed(2));
        assert_eq!(kh.check("10.0.0.2", 22, &key(B)), Verdict::Known);
        assert_eq!(kh.check("10.0.0.3", 22, &key(B)), Verdict::Unknown);
    }

    #[test]
    fn a_changed_line_wins_over_a_matching_one() {
        let kh = KnownHosts::parse(&format!("h ssh-ed25519 {A}\nh ssh-ed25519 {B}\n"));
        assert_eq!(kh.check("h", 22, &key(A)), Verdict::Changed(2));
    }

    #[test]
    fn hashed_wildcard_negated_and_revoked_lines() {
        // `ssh-keygen -H` form for "[127.0.0.5]:2200" with salt 0x01..0x14.
        let salt: Vec<u8> = (1u8..=20).collect();
        let mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt)
            .expect("hmac")
            .chain_update(b"[127.0.0.5]:2200")
            .finalize()
            .into_bytes();
        let e = base64::engine::general_purpose::STANDARD;
        let hashed = format!("|1|{}|{}", e.encode(&salt), e.encode(mac));
        let kh = KnownHosts::parse(&format!(
            "{hashed} ssh-ed25519 {A}\n*.lab,!bad.lab ssh-ed25519 {B}\n@revoked * ssh-ed25519 {A}\n"
        ));
        assert_eq!(kh.check("127.0.0.5", 2200, &key(A)), Verdict::Revoked(3));
        // The hashed line holds A for this host: B of the same algorithm is a changed key.
        assert_eq!(kh.check("127.0.0.5", 2200, &key(B)), Verdict::Changed(1));
        assert_eq!(kh.check("pc1.lab", 22, &key(B)), Verdict::Known);
        assert_eq!(kh.check("bad.lab", 22, &key(B)), Verdict::Unknown);
        let hashed_only = KnownHosts::parse(&format!("{hashed} ssh-ed25519 {B}\n"));
        assert_eq!(
            hashed_only.check("127.0.0.5", 2200, &key(B)),
            Verdict::Known
        );
        assert_eq!(
            hashed_only.check("127.0.0.5", 22, &key(B)),
            Verdict::Unknown
        );
        assert_eq!(
            hashed_only.check("127.0.0.5", 2200, &key(A)),
            Verdict::Changed(1)
        );
    }

    const R: &str = "AAAAB3NzaC1yc2EAAAADAQABAAAAgQDb6+cCDXTiIQlK5pDhgNVJmT+bnj0D9ceGFVGlCg4xGuzWI6YhtuV9UGH4uFuOYdqSHd9tlqvZGxtTrToYIhsLZyAGZV+80hpCm48pM1wmBumhg3Ckp+HFsFO+QkG3JqtVIR/UXc1YqH7IPPMB0Z9sgI5kbNP7vy0wBUIeMNalhw==";

    #[test]
    fn a_key_of_another_type_is_a_changed_key_not_a_new_one() {
        let kh = KnownHosts::parse(&format!("h ssh-ed25519 {A}\n*.lab ssh-rsa {R}\n"));
        assert_eq!(kh.check("h", 22, &key(R)), Verdict::Changed(1));
        assert_eq!(kh.check("pc.lab", 22, &key(A)), Verdict::Changed(2));
        assert_eq!(kh.check("pc.lab", 22, &key(R)), Verdict::Known);
        assert_eq!(kh.check("other", 22, &key(R)), Verdict::Unknown);
        // Both types known: each is accepted, a third key of either type is not.
        let both = KnownHosts::parse(&format!("h ssh-rsa {R}\nh ssh-ed25519 {A}\n"));
        assert_eq!(both.check("h", 22, &key(A)), Verdict::Known);
        assert_eq!(both.check("h", 22, &key(R)), Verdict::Known);
        assert_eq!(both.check("h", 22, &key(B)), Verdict::Changed(2));
        assert_eq!(
            both.algorithms("h", 22),
            vec![key(R).algorithm(), key(A).algorithm()]
        );
        assert!(both.algorithms("other", 22).is_empty());
    }

    #[test]
    fn damaged_lines_are_skipped_not_trusted() {
        let kh =
            KnownHosts::parse("h ssh-ed25519 not-base64!!\nh\n@cert-authority * ssh-ed25519 x\n");
        assert_eq!(kh.check("h", 22, &key(A)), Verdict::Unknown);
    }

    #[test]
    fn globs() {
        assert!(glob(b"*.lab", b"a.lab"));
        assert!(glob(b"10.0.?.1", b"10.0.5.1"));
        assert!(!glob(b"10.0.?.1", b"10.0.55.1"));
        assert!(glob(b"*", b""));
        assert!(!glob(b"a*b", b"acbd"));
    }
}
