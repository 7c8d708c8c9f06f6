//! The one-session run: the shell script that does a host's whole job in one SSH exec
//! channel, and the reader of the records it prints.
//!
//! Every round trip counts on a busy fleet: with 50 hosts in flight on two cores, one
//! request/answer exchange with a host costs ~100 ms of waiting in the host's run queue. The
//! job was ~20 such exchanges after login (SFTP start, listing before, the run, listing after,
//! stat/open/read/close of the report, removal of the checker, each its own request); this
//! script does it in about four: open the channel, start the script (it lists the result
//! directory, creates the directories and hashes the checker), send the push if asked, and
//! read to the end (the run, the listing after it, the new result files, the removal).
//!
//! Records go on stderr. Before the run they are lines `PUSHSCAN_...`; a listing entry is a
//! line `PUSHSCAN_E <kind> <size> <mtime>` followed by the name and a NUL (names may hold
//! newlines, never NUL). The checker's own stderr follows the PID marker; the script marks its
//! end with a line holding a per-run random nonce, so the checker's output cannot be taken for
//! records by accident. After it: `PUSHSCAN_X=<exit code>`, the listing after the run, each
//! result file as `PUSHSCAN_F <size> <mtime>`, name, NUL, exactly `size` bytes and
//! `\nPUSHSCAN_F.\n`, the removal's `PUSHSCAN_R=ok|fail`, and `PUSHSCAN_DONE`.
//!
//! Everything the host prints is untrusted: the reader bounds every line, name and file, and
//! a record out of step stops the reading; the pipeline then lists and fetches over SFTP as
//! it would without this script.

use super::{MAX_LIST_ENTRIES, PID_MARKER};
use crate::transport::workdir::{prove_function, prove_lines, sh_word};
use crate::transport::{sh_quote, EntryKind, RemoteEntry, RunPlan};

/// Longest name we accept in a record (Linux allows 255 bytes).
const MAX_NAME: usize = 4096;
/// Longest record line; longer text is passed on as the script's own output.
const MAX_LINE: usize = 64 * 1024;
/// End of a result file's bytes.
const FILE_TRAILER: &[u8] = b"\nPUSHSCAN_F.\n";

/// A shell `case` pattern matching what `WildMatch` matches for `glob` (`*`, `?`, the rest
/// literal and quoted, so the playbook's text can never become shell syntax).
pub(super) fn glob_case(glob: &str) -> String {
    let mut out = String::new();
    let mut lit = String::new();
    for c in glob.chars() {
        if c == '*' || c == '?' {
            if !lit.is_empty() {
                out.push_str(&sh_quote(&lit));
                lit.clear();
            }
            out.push(c);
        } else {
            lit.push(c);
        }
    }
    if !lit.is_empty() || out.is_empty() {
        out.push_str(&sh_quote(&lit));
    }
    out
}

/// The line that ends the checker's stderr, for a run's `nonce`.
pub(super) fn end_needle(nonce: &str) -> Vec<u8> {
    format!("\nPUSHSCAN_{nonce}_END\n").into_bytes()
}

/// A fresh 128-bit nonce, hex: std's per-process random hash keys, a counter and the clock.
pub(super) fn nonce() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let half = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_u64(n);
        h.write_u128(t);
        h.finish()
    };
    format!("{:016x}{:016x}", half(1), half(2))
}

/// The whole staged run as one script, run by `/bin/sh` whatever the account's shell is.
///
/// Every pinned file (the checker, then the inputs) is hashed; the state line says which
/// need a push (`PUSHSCAN_STATE=current`, or `PUSHSCAN_STATE=push ` and a letter per file,
/// `p` to push, `c` current). The controller then sends, for each file to push in that
/// order, a line `push SIZE` and exactly SIZE bytes, which `head -c` copies to the file's
/// fresh temp name. Each copy is hashed against its pin before any is renamed; one that does
/// not match removes every copy. (GNU coreutils' `head -c` reads no further than SIZE from a
/// pipe; a `head` that read ahead would leave the next copy short, which then fails its hash
/// check: nothing wrong is ever renamed into place.)
pub(super) fn staged_script(plan: &RunPlan, nonce: &str) -> String {
    let files: Vec<(String, String, String, String)> =
        std::iter::once((&plan.checker, &plan.tmp, &plan.pin, true))
            .chain(plan.inputs.iter().map(|f| (&f.dest, &f.tmp, &f.pin, false)))
            .map(|(dest, tmp, pin, exec)| {
                (
                    sh_word(dest),
                    sh_word(tmp),
                    sh_quote(pin),
                    if exec { "700" } else { "600" }.to_string(),
                )
            })
            .collect();
    let mut check = String::from("st=\n");
    for (i, (c, _, p, _)) in files.iter().enumerate() {
        check.push_str(&hash_into_h_raw(c));
        check.push_str(&format!(
            "\nif [ \"$h\" = {p} ]; then q{i}=c; else q{i}=p; fi; st=$st$q{i}\n"
        ));
    }
    let mut receive = String::new();
    let mut verify = String::new();
    let mut rename = String::new();
    let all_tmps: Vec<&str> = files.iter().map(|f| f.1.as_str()).collect();
    let all_tmps = all_tmps.join(" ");
    for (i, (c, t, p, mode)) in files.iter().enumerate() {
        receive.push_str(&format!(
            "if [ $q{i} = p ]; then\n\
               read -r go sz || exit 98\n\
               [ \"$go\" = push ] || exit 98\n\
               case $sz in ''|*[!0-9]*) exit 98 ;; esac\n\
               rm -f -- {t}; set -C\n\
               head -c \"$sz\" > {t} || {{ echo PUSHSCAN_FAIL=write >&2; rm -f -- {all_tmps}; exit 90; }}\n\
               set +C\n\
             fi\n"
        ));
        verify.push_str(&format!(
            "if [ $q{i} = p ]; then\n\
               {ht}\n\
               if [ \"$h\" != {p} ]; then rm -f -- {all_tmps}; echo \"PUSHSCAN_FAIL=hash mismatch after copy ({n}): $h\" >&2; exit 91; fi\n\
             fi\n",
            ht = hash_into_h_raw(t),
            n = if i == 0 { "checker".to_string() } else { format!("input {i}") },
        ));
        rename.push_str(&format!(
            "if [ $q{i} = p ]; then chmod {mode} {t} && mv -f -- {t} {c} || {{ echo PUSHSCAN_FAIL=rename >&2; exit 92; }}; fi\n"
        ));
    }
    let cmd = &plan.cmd;
    let mut run = sh_word(&cmd.program);
    for a in &cmd.args {
        run.push(' ');
        run.push_str(&sh_word(a));
    }
    let (list_before, list_after, pl) = match &plan.results {
        Some(r) => (
            format!(
                "pl {} B || {{ echo \"PUSHSCAN_FAIL=the result directory holds more than {MAX_LIST_ENTRIES} entries; refusing to list it\" >&2; exit 99; }}\n",
                sh_word(&r.dir)
            ),
            format!("pl {} A || :\n", sh_word(&r.dir)),
            list_function(&glob_case(&r.glob), r.cap, r.max_files),
        ),
        None => (String::new(), String::new(), String::new()),
    };
    let remove = if plan.remove_after.is_empty() {
        String::new()
    } else {
        let targets: Vec<String> = plan.remove_after.iter().map(|f| sh_word(f)).collect();
        format!(
            "if rm -f -- {} 2>/dev/null; then echo PUSHSCAN_R=ok >&2; else echo PUSHSCAN_R=fail >&2; fi\n",
            targets.join(" ")
        )
    };
    let script = format!(
        "umask 077\n\
         h0=$PWD nb=0 bk=/ t0=- tm=- nl='\n'\n\
         {pl}\
         {pv}\
         {prove}\
         {list_before}\
         {check}\
         case $st in *p*) ;; *) st=; esac\n\
         if [ -z \"$st\" ]; then echo PUSHSCAN_STATE=current >&2\n\
         else\n\
           echo \"PUSHSCAN_STATE=push $st\" >&2\n\
           {receive}\
           echo PUSHSCAN_RECEIVED >&2\n\
           {verify}\
           {rename}\
           echo PUSHSCAN_PUSHED=ok >&2\n\
         fi\n\
         if [ \"$nb\" -gt 0 ]; then i=0; t0=$(date +%s)\n\
           while [ \"$t0\" -le $((nb+1)) ] && [ $i -lt 15 ]; do sleep 0.2 2>/dev/null || sleep 1; i=$((i+1)); t0=$(date +%s); done\n\
           tm=$((t0-1))\n\
         fi\n\
         echo {PID_MARKER}$$ $t0 >&2\n\
         cd -- {cwd} || {{ echo PUSHSCAN_FAIL=cd >&2; exit 126; }}\n\
         {run} </dev/null\n\
         rc=$?\n\
         cd -- \"$h0\" 2>/dev/null\n\
         printf '\\nPUSHSCAN_%s_END\\nPUSHSCAN_X=%s\\n' {nonce} \"$rc\" >&2\n\
         {list_after}\
         {remove}\
         echo PUSHSCAN_DONE >&2\n\
         exit \"$rc\"\n",
        // `mkdir` only when a directory is missing: a second sweep spawns one `stat` for the
        // proof and nothing else for its directories.
        pv = if plan.dirs.is_empty() { "" } else { prove_function() },
        prove = prove_lines(&plan.dirs, true, 97),
        cwd = sh_word(&cmd.cwd),
    );
    // The account's login shell only sees `exec /bin/sh -c '...'`: a zsh or csh account
    // runs the script the same way (zsh would abort on a glob that matches nothing).
    format!("exec /bin/sh -c {}", sh_quote(&script))
}

/// Sets `h` to the SHA-256 of a regular, non-symlink file, or empty (a symlink planted by
/// the host is never taken for our binary). One fork and one exec when the file is there,
/// none when it is not. `p` is the path already quoted (`sh_word`).
fn hash_into_h_raw(p: &str) -> String {
    format!(
        "h=; if [ -f {p} ] && [ ! -L {p} ]; then h=$(sha256sum < {p} 2>/dev/null || shasum -a 256 < {p} 2>/dev/null); h=${{h%% *}}; fi"
    )
}

/// `pl DIR B|A`: lists DIR without following links, one record per entry (at most
/// `MAX_LIST_ENTRIES`). B (before the run) keeps each entry's key in `bk` and the newest
/// result file's mtime in `nb`; A (after) sends every result file within `cap` that is new or
/// changed since B, or modified since the run started (`t0`), at most `max_files`. The script
/// reads the clock (`date`, a process) only when B saw earlier result files: it then waits
/// until two seconds after theirs and counts a file as modified by the run from the second
/// before `t0` (`tm`), so that a report rewritten by the run cannot keep its old key. The
/// second of slack is the kernel's: it stamps files with a coarse clock that may lag the one
/// `date` reads by a tick, so a file written just after `t0` was read can carry `t0 - 1`.
/// With no earlier result file, every result file after the run is new and `t0` stays `-`.
///
/// Sizes and mtimes come from one `stat` for the whole directory (GNU `-c`; none for an
/// empty or missing one), a line `size mtime path` per entry in the glob's order: result
/// directories keep every earlier report, and a process per entry was most of a host's work
/// once they had piled up. Each line is checked against the entry it stands for (a name with
/// a newline spans several lines); from the first one out of step (an entry made or removed
/// in between, a name the line split cannot carry, a `stat` without `-c`), each entry is
/// stat-ed on its own.
fn list_function(pattern: &str, cap: u64, max_files: usize) -> String {
    format!(
        "pl() {{\n\
           d=$1 w=$2 n=0 ns=0\n\
           sl=\n\
           for f in \"$d\"/* \"$d\"/.[!.]* \"$d\"/..?*; do\n\
             if [ -e \"$f\" ] || [ -L \"$f\" ]; then sl=$(stat -c '%s %Y %n' -- \"$d\"/* \"$d\"/.[!.]* \"$d\"/..?* 2>/dev/null); break; fi\n\
           done\n\
           set -f; IFS=$nl; set -- $sl; unset IFS; set +f\n\
           for f in \"$d\"/* \"$d\"/.[!.]* \"$d\"/..?*; do\n\
             if [ -L \"$f\" ]; then k=l; elif [ -f \"$f\" ]; then k=f; elif [ -d \"$f\" ]; then k=d; elif [ -e \"$f\" ]; then k=o; else continue; fi\n\
             n=$((n+1))\n\
             if [ $n -gt {MAX_LIST_ENTRIES} ]; then echo PUSHSCAN_LIST=overflow >&2; return 1; fi\n\
             b=${{f##*/}} s=\n\
             if [ $# -gt 0 ]; then\n\
               z=${{1%% *}} r=${{1#* }}; shift\n\
               m=${{r%% *}} r=${{r#* }}\n\
               while [ \"$r\" != \"$f\" ] && [ $# -gt 0 ]; do\n\
                 case $f in \"$r$nl\"*) r=\"$r$nl$1\"; shift ;; *) break ;; esac\n\
               done\n\
               if [ \"$r\" = \"$f\" ]; then s=\"$z $m\"; else set --; fi\n\
             fi\n\
             [ -n \"$s\" ] || s=$(stat -c '%s %Y' -- \"$f\" 2>/dev/null || stat -f '%z %m' -- \"$f\" 2>/dev/null)\n\
             case $s in [0-9]*' '[0-9]*) ;; *) s='0 -' ;; esac\n\
             printf 'PUSHSCAN_E %s %s\\n%s\\0' $k \"$s\" \"$b\" >&2\n\
             m=${{s#* }}\n\
             if [ $w = B ]; then\n\
               bk=\"$bk$k/$s/$b/\"\n\
               case $b in {pattern}) if [ \"$m\" != - ] && [ \"$m\" -gt \"$nb\" ]; then nb=$m; fi ;; esac\n\
             elif [ $k = f ]; then\n\
               case $b in {pattern}) ;; *) continue ;; esac\n\
               z=${{s%% *}}\n\
               [ \"$z\" -le {cap} ] || continue\n\
               case $bk in *\"/f/$s/$b/\"*) [ \"$m\" != - ] && [ \"$t0\" != - ] && [ \"$m\" -ge \"$tm\" ] || continue ;; esac\n\
               ns=$((ns+1)); [ $ns -le {max_files} ] || continue\n\
               printf 'PUSHSCAN_F %s\\n%s\\0' \"$s\" \"$b\" >&2\n\
               {{ head -c \"$z\" < \"$f\"; }} >&2 2>/dev/null\n\
               printf '\\nPUSHSCAN_F.\\n' >&2\n\
             fi\n\
           done\n\
         }}\n"
    )
}

/// One record of the script's stderr.
#[derive(Debug, PartialEq)]
pub(super) enum Rec {
    /// A `PUSHSCAN_...` line, without its line end.
    Marker(String),
    /// A listing entry.
    Entry(RemoteEntry),
    /// A result file: its entry and bytes.
    File(RemoteEntry, Vec<u8>),
    /// A line that is not a record (the script's own error text), with its line end.
    Text(Vec<u8>),
}

/// Cuts the script's stderr into records, bounding everything it holds.
#[derive(Default)]
pub(super) struct Reader {
    buf: Vec<u8>,
    /// Largest result file accepted in a record.
    cap: u64,
}

impl Reader {
    pub(super) fn new(cap: u64) -> Reader {
        Reader {
            buf: Vec::new(),
            cap,
        }
    }

    pub(super) fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// What is left unread.
    pub(super) fn take_rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// The next complete record, `Ok(None)` when more bytes are needed, `Err` when the
    /// stream is out of step (the caller stops reading records).
    pub(super) fn next(&mut self) -> Result<Option<Rec>, String> {
        let Some(nl) = self.buf.iter().take(MAX_LINE).position(|&b| b == b'\n') else {
            if self.buf.len() >= MAX_LINE {
                return Ok(Some(Rec::Text(self.buf.drain(..MAX_LINE).collect())));
            }
            return Ok(None);
        };
        let line = String::from_utf8_lossy(&self.buf[..nl])
            .trim_end_matches('\r')
            .to_string();
        if let Some(rest) = line.strip_prefix("PUSHSCAN_E ") {
            let mut f = rest.split(' ');
            let kind = match f.next() {
                Some("f") => EntryKind::File,
                Some("d") => EntryKind::Dir,
                Some("l") => EntryKind::Symlink,
                Some("o") => EntryKind::Other,
                _ => return Err(format!("bad listing record {:?}", clip(&line))),
            };
            let (size, mtime) = size_mtime(f.next(), f.next())
                .ok_or_else(|| format!("bad listing record {:?}", clip(&line)))?;
            let Some((name, used)) = self.name_at(nl + 1)? else {
                return Ok(None);
            };
            self.buf.drain(..used);
            return Ok(Some(Rec::Entry(RemoteEntry {
                name,
                kind,
                size,
                mtime,
            })));
        }
        if let Some(rest) = line.strip_prefix("PUSHSCAN_F ") {
            let mut f = rest.split(' ');
            let (size, mtime) = size_mtime(f.next(), f.next())
                .ok_or_else(|| format!("bad file record {:?}", clip(&line)))?;
            if size > self.cap {
                return Err(format!(
                    "a file record of {size} bytes, over the {}-byte cap",
                    self.cap
                ));
            }
            let Some((name, start)) = self.name_at(nl + 1)? else {
                return Ok(None);
            };
            let end = start + size as usize;
            if self.buf.len() < end + FILE_TRAILER.len() {
                return Ok(None);
            }
            if &self.buf[end..end + FILE_TRAILER.len()] != FILE_TRAILER {
                return Err(format!(
                    "the bytes of {:?} do not end where announced",
                    clip(&name)
                ));
            }
            let bytes = self.buf[start..end].to_vec();
            self.buf.drain(..end + FILE_TRAILER.len());
            let entry = RemoteEntry {
                name,
                kind: EntryKind::File,
                size,
                mtime,
            };
            return Ok(Some(Rec::File(entry, bytes)));
        }
        let raw: Vec<u8> = self.buf.drain(..=nl).collect();
        if line.starts_with("PUSHSCAN_") {
            Ok(Some(Rec::Marker(line)))
        } else {
            Ok(Some(Rec::Text(raw)))
        }
    }

    /// The NUL-terminated name starting at `at`: the name and the offset just past the NUL.
    fn name_at(&self, at: usize) -> Result<Option<(String, usize)>, String> {
        let rest = self.buf.get(at..).unwrap_or_default();
        match rest.iter().take(MAX_NAME + 1).position(|&b| b == 0) {
            Some(len) => Ok(Some((
                String::from_utf8_lossy(&rest[..len]).into_owned(),
                at + len + 1,
            ))),
            None if rest.len() > MAX_NAME => Err(format!(
                "a name longer than {MAX_NAME} bytes in a listing record"
            )),
            None => Ok(None),
        }
    }
}

fn size_mtime(size: Option<&str>, mtime: Option<&str>) -> Option<(u64, Option<u64>)> {
    let size = size?.parse().ok()?;
    let mtime = match mtime? {
        "-" => None,
        m => Some(m.parse().ok()?),
    };
    Some((size, mtime))
}

fn clip(s: &str) -> String {
    crate::sanitize::display(s, 80)
}

/// Splits the checker's stderr from what the script prints after the run: everything before
/// the end line is the checker's; the bytes after it are records. Holds back at most the
/// end line's length minus one, in case it arrives cut across packets.
pub(super) struct EndScanner {
    needle: Vec<u8>,
    carry: Vec<u8>,
}

impl EndScanner {
    pub(super) fn new(needle: Vec<u8>) -> EndScanner {
        EndScanner {
            needle,
            carry: Vec::new(),
        }
    }

    /// Feeds stderr bytes: returns (checker bytes to keep, records after the end line if
    /// it was found).
    pub(super) fn feed(&mut self, data: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
        self.carry.extend_from_slice(data);
        let n = self.needle.len();
        if let Some(i) = self.carry.windows(n).position(|w| w == self.needle) {
            let after = self.carry.split_off(i + n);
            self.carry.truncate(i);
            return (std::mem::take(&mut self.carry), Some(after));
        }
        let keep = n.saturating_sub(1).min(self.carry.len());
        let out: Vec<u8> = self.carry.drain(..self.carry.len() - keep).collect();
        (out, None)
    }

    /// What was held back, when the stream ended without the end line.
    pub(super) fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.carry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(unix)]
    use crate::transport::{CommandSpec, PinnedFile, ResultSpec};
    #[cfg(unix)]
    use std::process::{Command, Stdio};
    #[cfg(unix)]
    use std::time::Duration;

    #[test]
    fn glob_becomes_a_quoted_case_pattern() {
        assert_eq!(glob_case("*_emocheck.*"), "*'_emocheck.'*");
        assert_eq!(glob_case("a?b"), "'a'?'b'");
        assert_eq!(glob_case("x) rm -rf / ;;"), "'x) rm -rf / ;;'");
        assert_eq!(glob_case(""), "''");
    }

    #[test]
    fn end_line_is_found_across_packets() {
        let needle = end_needle("abc");
        let mut s = EndScanner::new(needle.clone());
        let mut kept = Vec::new();
        let stream = [b"checker says hi".as_slice(), &needle, b"PUSHSCAN_X=0\n"].concat();
        let mut after = None;
        for chunk in stream.chunks(3) {
            let (k, a) = s.feed(chunk);
            kept.extend(k);
            if let Some(a) = a {
                after = Some(a);
                break;
            }
        }
        assert_eq!(kept, b"checker says hi");
        assert!(b"PUSHSCAN_X=0\n".starts_with(&after.unwrap()));
        let mut s = EndScanner::new(needle);
        let (k, a) = s.feed(b"no end here");
        assert!(a.is_none());
        assert_eq!([k, s.finish()].concat(), b"no end here");
    }

    #[test]
    fn reader_bounds_and_frames_records() {
        let mut r = Reader::new(10);
        r.push(b"oops\nPUSHSCAN_E f 3 17\nna\nme\0PUSHSCAN_F 3 17\nna\nme\0abc\nPUSHSCAN_F.\nPUSHSCAN_DONE\n");
        assert_eq!(r.next().unwrap(), Some(Rec::Text(b"oops\n".to_vec())));
        let e = RemoteEntry {
            name: "na\nme".into(),
            kind: EntryKind::File,
            size: 3,
            mtime: Some(17),
        };
        assert_eq!(r.next().unwrap(), Some(Rec::Entry(e.clone())));
        assert_eq!(r.next().unwrap(), Some(Rec::File(e, b"abc".to_vec())));
        assert_eq!(r.next().unwrap(), Some(Rec::Marker("PUSHSCAN_DONE".into())));
        assert_eq!(r.next().unwrap(), None);
        // Over the cap, out of step, a name without end: refused, never buffered forever.
        let mut r = Reader::new(10);
        r.push(b"PUSHSCAN_F 11 1\nx\0");
        assert!(r.next().is_err());
        let mut r = Reader::new(10);
        r.push(b"PUSHSCAN_F 2 1\nx\0abcdefghijklmnopq");
        assert!(r.next().is_err());
        let mut r = Reader::new(10);
        r.push(b"PUSHSCAN_E f 1 1\n");
        r.push(&vec![b'a'; MAX_NAME + 1]);
        assert!(r.next().is_err());
        let mut r = Reader::new(10);
        r.push(b"PUSHSCAN_E q 1 1\nx\0");
        assert!(r.next().is_err());
    }

    /// Runs the script with the local /bin/sh (as sshd would run it for the account), feeding
    /// `push` and the checker on stdin when asked, and reads its records like the transport.
    #[cfg(unix)]
    fn run_local(plan: &RunPlan, checker: &[u8], nonce: &str) -> (Vec<Rec>, Vec<Rec>, Vec<u8>) {
        run_local_with_path(plan, checker, nonce, None)
    }

    /// `run_local` with `bin` first in the script's PATH (to count the tools it starts).
    #[cfg(unix)]
    fn run_local_with_path(
        plan: &RunPlan,
        checker: &[u8],
        nonce: &str,
        bin: Option<&std::path::Path>,
    ) -> (Vec<Rec>, Vec<Rec>, Vec<u8>) {
        let script = staged_script(plan, nonce);
        let mut command = Command::new("/bin/sh");
        if let Some(bin) = bin {
            let path = std::env::var("PATH").unwrap_or_default();
            command.env("PATH", format!("{}:{path}", bin.display()));
        }
        let mut child = command
            .arg("-c")
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            // The script reads stdin only when it asks for a push.
            let _ = stdin.write_all(format!("push {}\n", checker.len()).as_bytes());
            let _ = stdin.write_all(checker);
        }
        let out = child.wait_with_output().unwrap();
        let needle = end_needle(nonce);
        let err = out.stderr;
        let pos = err
            .windows(needle.len())
            .position(|w| w == needle.as_slice())
            .unwrap_or_else(|| panic!("no end line in {}", String::from_utf8_lossy(&err)));
        let (pre, post) = (&err[..pos], &err[pos + needle.len()..]);
        let pid = pre
            .windows(PID_MARKER.len())
            .position(|w| w == PID_MARKER.as_bytes())
            .unwrap();
        let pid_end = pid + pre[pid..].iter().position(|&b| b == b'\n').unwrap() + 1;
        let records = |bytes: &[u8]| {
            let mut r = Reader::new(1 << 20);
            r.push(bytes);
            let mut v = Vec::new();
            while let Some(rec) = r.next().unwrap() {
                v.push(rec);
            }
            v
        };
        (
            records(&pre[..pid_end]),
            records(post),
            pre[pid_end..].to_vec(),
        )
    }

    /// Runs the script with `stdin` and returns its stderr.
    #[cfg(unix)]
    fn run_raw(plan: &RunPlan, stdin: &[u8]) -> String {
        use std::io::Write;
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(staged_script(plan, "n0"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(stdin);
        String::from_utf8_lossy(&child.wait_with_output().unwrap().stderr).into_owned()
    }

    #[cfg(unix)]
    #[test]
    fn inputs_are_pushed_verified_and_skipped_in_the_same_session() {
        use std::os::unix::fs::PermissionsExt as _;
        let pin = |b: &[u8]| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b));
        let (_d, work, run, _bin) = listing_dirs();
        let checker_src = b"#!/bin/sh\ncat \"$0.rules\" 2>/dev/null; exit 0\n";
        let mut plan = listing_plan(&work, &run, checker_src);
        plan.results = None;
        let (rules, cfg) = (
            b"rule a { condition: true }\n".to_vec(),
            b"k = 1\n".to_vec(),
        );
        let file = |name: &str, body: &[u8]| PinnedFile {
            local: std::path::PathBuf::from("/unused"),
            dest: work.join(name).to_string_lossy().into_owned(),
            tmp: work
                .join(format!(".{name}.tmp"))
                .to_string_lossy()
                .into_owned(),
            pin: pin(body),
        };
        plan.inputs = vec![file("chk.sh.rules", &rules), file("cfg.toml", &cfg)];
        // The config is already there with its pin; the rules are there but tampered with.
        std::fs::create_dir_all(&work).unwrap();
        std::fs::write(&plan.inputs[1].dest, &cfg).unwrap();
        std::fs::write(&plan.inputs[0].dest, b"rule evil { condition: false }").unwrap();
        let mut stdin = format!("push {}\n", checker_src.len()).into_bytes();
        stdin.extend_from_slice(checker_src);
        stdin.extend_from_slice(format!("push {}\n", rules.len()).as_bytes());
        stdin.extend_from_slice(&rules);
        let err = run_raw(&plan, &stdin);
        assert!(err.contains("PUSHSCAN_STATE=push ppc\n"), "{err}");
        assert!(err.contains("PUSHSCAN_PUSHED=ok\n"), "{err}");
        assert_eq!(std::fs::read(&plan.inputs[0].dest).unwrap(), rules);
        assert_eq!(std::fs::read(&plan.inputs[1].dest).unwrap(), cfg);
        let mode = |p: &str| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            (mode(&plan.checker), mode(&plan.inputs[0].dest)),
            (0o700, 0o600)
        );
        // Run again: everything current, nothing read from stdin.
        let err = run_raw(&plan, b"");
        assert!(err.contains("PUSHSCAN_STATE=current\n"), "{err}");

        // A copy that does not match its pin: every temp copy removed, nothing renamed.
        std::fs::remove_file(&plan.inputs[0].dest).unwrap();
        std::fs::remove_file(&plan.checker).unwrap();
        let mut stdin = format!("push {}\n", checker_src.len()).into_bytes();
        stdin.extend_from_slice(checker_src);
        stdin.extend_from_slice(format!("push {}\n", rules.len()).as_bytes());
        stdin.extend_from_slice(&vec![b'x'; rules.len()]);
        let err = run_raw(&plan, &stdin);
        assert!(
            err.contains("PUSHSCAN_FAIL=hash mismatch after copy (input 1)"),
            "{err}"
        );
        let mut left: Vec<_> = std::fs::read_dir(&work)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.retain(|n| n != "r");
        assert_eq!(left, ["cfg.toml"], "only the current input stays");
    }

    #[cfg(unix)]
    #[test]
    fn the_script_does_the_whole_job_in_one_session() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        let run = work.join("reports");
        let checker_src = b"#!/bin/sh\necho out; echo err >&2\nprintf 'report' > \"$1/H_20260101000000_emocheck.txt\"\nprintf 'log' > \"$1/notes.log\"\nexit 3\n";
        let checker = work.join("chk.sh");
        let mut plan = listing_plan(&work, &run, checker_src);
        plan.remove_after = vec![checker.to_string_lossy().into_owned()];
        // An old report, a symlink out of the directory and a name with a newline, there
        // before the run.
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join("H_20250101000000_emocheck.txt"), b"old").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", run.join("L_emocheck.txt")).unwrap();
        std::fs::write(run.join("odd\nname_emocheck.txt"), b"odd").unwrap();
        let (pre, post, checker_err) = run_local(&plan, checker_src, "n0nce");

        let markers: Vec<&Rec> = pre.iter().filter(|r| matches!(r, Rec::Marker(_))).collect();
        assert!(matches!(markers[0], Rec::Marker(m) if m == "PUSHSCAN_STATE=push p"));
        assert!(matches!(markers[1], Rec::Marker(m) if m == "PUSHSCAN_RECEIVED"));
        assert!(matches!(markers[2], Rec::Marker(m) if m == "PUSHSCAN_PUSHED=ok"));
        let before: Vec<&RemoteEntry> = pre
            .iter()
            .filter_map(|r| match r {
                Rec::Entry(e) => Some(e),
                _ => None,
            })
            .collect();
        assert_eq!(before.len(), 3, "{before:?}");
        assert!(before
            .iter()
            .any(|e| e.name == "L_emocheck.txt" && e.kind == EntryKind::Symlink));
        assert!(before.iter().any(|e| e.name == "odd\nname_emocheck.txt"));
        assert_eq!(checker_err, b"err\n");

        assert_eq!(post[0], Rec::Marker("PUSHSCAN_X=3".into()));
        let after: Vec<&RemoteEntry> = post
            .iter()
            .filter_map(|r| match r {
                Rec::Entry(e) => Some(e),
                _ => None,
            })
            .collect();
        assert_eq!(after.len(), 5, "{after:?}");
        let files: Vec<(&str, &[u8])> = post
            .iter()
            .filter_map(|r| match r {
                Rec::File(e, b) => Some((e.name.as_str(), b.as_slice())),
                _ => None,
            })
            .collect();
        // Only the new report: not the old one, not the log (glob), not the symlink.
        assert_eq!(
            files,
            vec![("H_20260101000000_emocheck.txt", b"report".as_slice())]
        );
        assert!(post.contains(&Rec::Marker("PUSHSCAN_R=ok".into())));
        assert_eq!(post.last(), Some(&Rec::Marker("PUSHSCAN_DONE".into())));
        assert!(!checker.exists(), "the checker was removed after the run");

        // Second run with the checker in place: no push asked, the first report is old now.
        plan.remove_after.clear();
        install_checker(&plan, checker_src);
        std::thread::sleep(Duration::from_millis(1100));
        let (pre, post, _) = run_local(&plan, b"", "other");
        assert!(pre.contains(&Rec::Marker("PUSHSCAN_STATE=current".into())));
        let files = post.iter().filter(|r| matches!(r, Rec::File(..))).count();
        assert_eq!(files, 1, "only the rewritten report is sent: {post:?}");
        assert!(!post
            .iter()
            .any(|r| matches!(r, Rec::Marker(m) if m.starts_with("PUSHSCAN_R"))));
        assert!(checker.exists());
    }

    /// Wrappers in `bin` for `tools` that log each start to the returned file, then run the
    /// real tool.
    #[cfg(unix)]
    fn counting(bin: &std::path::Path, tools: &[&str]) -> std::path::PathBuf {
        let log = bin.join("started.log");
        for tool in tools {
            let real = ["/usr/bin", "/bin"]
                .iter()
                .map(|d| format!("{d}/{tool}"))
                .find(|p| std::path::Path::new(p).exists())
                .unwrap_or_else(|| panic!("{tool}(1) (coreutils) is needed by this test"));
            let wrapper = bin.join(tool);
            std::fs::write(
                &wrapper,
                format!(
                    "#!/bin/sh\necho {tool} >> '{}'\nexec {real} \"$@\"\n",
                    log.display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(
                &wrapper,
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )
            .unwrap();
        }
        log
    }

    /// How many times `tool` was started, by the log of [`counting`].
    #[cfg(unix)]
    fn started(log: &std::path::Path, tool: &str) -> usize {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .filter(|l| *l == tool)
            .count()
    }

    /// With no earlier result file, the script neither stats the empty directory nor reads
    /// the clock (its `stat`s before the run are the work directory's proof); once a report is there, it reads the clock (to start the run in a later
    /// second than that report) and still finds the rewritten report.
    #[cfg(unix)]
    #[test]
    fn the_clock_is_read_only_when_earlier_results_exist() {
        let (_dir, work, run, bin) = listing_dirs();
        let log = counting(&bin, &["stat", "date"]);
        let src = b"#!/bin/sh\nprintf 'report' > \"$1/H_20260101000000_emocheck.txt\"\n";
        let plan = listing_plan(&work, &run, src);

        let (pre, post, _) = run_local_with_path(&plan, src, "c1", Some(&bin));
        assert!(pre.contains(&Rec::Marker("PUSHSCAN_PUSHED=ok".into())));
        assert_eq!(listed(&pre).len(), 0);
        assert_eq!(
            started(&log, "stat"),
            3,
            "the proof of the existing parents before creating the work directory, its proof \
             after, and the listing after the run"
        );
        assert_eq!(started(&log, "date"), 0);
        assert_eq!(
            post.iter().filter(|r| matches!(r, Rec::File(..))).count(),
            1
        );

        std::fs::remove_file(&log).unwrap();
        let (pre, post, _) = run_local_with_path(&plan, b"", "c2", Some(&bin));
        assert!(pre.contains(&Rec::Marker("PUSHSCAN_STATE=current".into())));
        assert_eq!(started(&log, "stat"), 3, "the proof and two listings");
        assert!(started(&log, "date") >= 1);
        let files = post.iter().filter(|r| matches!(r, Rec::File(..))).count();
        assert_eq!(
            files, 1,
            "the rewritten report (same name, same size): {post:?}"
        );
    }

    /// A plan that runs `work/chk.sh` (pinned to `checker_src`) with `run` as its argument,
    /// listing `run` before and after; nothing removed.
    #[cfg(unix)]
    fn listing_plan(work: &std::path::Path, run: &std::path::Path, checker_src: &[u8]) -> RunPlan {
        let checker = work.join("chk.sh");
        RunPlan {
            dirs: vec![
                work.to_string_lossy().into_owned(),
                run.to_string_lossy().into_owned(),
            ],
            checker: checker.to_string_lossy().into_owned(),
            tmp: work.join(".chk.tmp").to_string_lossy().into_owned(),
            pin: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(checker_src)),
            inputs: Vec::new(),
            cmd: CommandSpec {
                program: checker.to_string_lossy().into_owned(),
                args: vec![run.to_string_lossy().into_owned()],
                cwd: work.to_string_lossy().into_owned(),
                timeout: Duration::from_secs(10),
                output_cap: 1024,
                not_before: None,
            },
            results: Some(ResultSpec {
                dir: run.to_string_lossy().into_owned(),
                glob: "*_emocheck.*".into(),
                cap: 1024,
                max_files: 4,
            }),
            remove_after: Vec::new(),
        }
    }

    /// A temporary tree for the listing tests: the work directory `w`, its result directory
    /// `w/r` (not created) and `bin` (created, for [`counting`] wrappers).
    #[cfg(unix)]
    fn listing_dirs() -> (
        tempfile::TempDir,
        std::path::PathBuf,
        std::path::PathBuf,
        std::path::PathBuf,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (work, run, bin) = (
            dir.path().join("w"),
            dir.path().join("w/r"),
            dir.path().join("bin"),
        );
        std::fs::create_dir_all(&bin).unwrap();
        (dir, work, run, bin)
    }

    /// Puts the plan's checker in place as a sweep that kept it would leave it: `src`
    /// (pinned by the plan), mode 0700.
    #[cfg(unix)]
    fn install_checker(plan: &RunPlan, src: &[u8]) {
        std::fs::write(&plan.checker, src).unwrap();
        std::fs::set_permissions(
            &plan.checker,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
    }

    /// The listing records of `recs`, by name: (kind, size, mtime).
    #[cfg(unix)]
    fn listed(recs: &[Rec]) -> std::collections::BTreeMap<String, (EntryKind, u64, Option<u64>)> {
        recs.iter()
            .filter_map(|r| match r {
                Rec::Entry(e) => Some((e.name.clone(), (e.kind, e.size, e.mtime))),
                _ => None,
            })
            .collect()
    }

    /// What the host's own `lstat` says of every entry of `dir`.
    #[cfg(unix)]
    fn on_disk(
        dir: &std::path::Path,
    ) -> std::collections::BTreeMap<String, (EntryKind, u64, Option<u64>)> {
        use std::os::unix::fs::MetadataExt;
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let m = std::fs::symlink_metadata(e.path()).unwrap();
                let kind = if m.file_type().is_symlink() {
                    EntryKind::Symlink
                } else if m.is_file() {
                    EntryKind::File
                } else {
                    EntryKind::Dir
                };
                let name = e.file_name().to_string_lossy().into_owned();
                (name, (kind, m.size(), Some(m.mtime() as u64)))
            })
            .collect()
    }

    /// A result directory with many earlier reports costs one `stat` per listing, not one
    /// per entry, and every entry still gets its own size and mtime (names with a newline,
    /// dot files, a directory and a symlink included).
    #[cfg(unix)]
    #[test]
    fn a_listing_runs_one_stat_for_the_whole_directory() {
        let (_dir, work, run, bin) = listing_dirs();
        std::fs::create_dir_all(&run).unwrap();
        let log = counting(&bin, &["stat"]);
        for i in 0..40 {
            std::fs::write(
                run.join(format!("H_2025010100{i:04}_emocheck.txt")),
                vec![b'r'; i],
            )
            .unwrap();
        }
        std::fs::write(run.join("odd\nname_emocheck.txt"), b"odd").unwrap();
        std::fs::write(run.join(".hidden"), b"hidden!").unwrap();
        std::fs::create_dir(run.join("sub")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", run.join("L_emocheck.txt")).unwrap();
        let src = b"#!/bin/sh\nprintf 'report' > \"$1/H_20260101000000_emocheck.txt\"\n";
        let plan = listing_plan(&work, &run, src);
        install_checker(&plan, src);
        let expected_before = on_disk(&run);

        let (pre, post, _) = run_local_with_path(&plan, b"", "n1", Some(&bin));

        assert_eq!(listed(&pre), expected_before);
        assert_eq!(listed(&post), on_disk(&run));
        assert_eq!(listed(&post).len(), 45);
        assert_eq!(
            started(&log, "stat"),
            3,
            "one for the work directory's proof, one before the run and one after, for 45 entries"
        );
        let files: Vec<&str> = post
            .iter()
            .filter_map(|r| match r {
                Rec::File(e, _) => Some(e.name.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(files, vec!["H_20260101000000_emocheck.txt"]);
    }

    /// A name the line split cannot carry (two newlines in a row) puts the listing out of
    /// step with `stat`'s lines: from there on each entry is stat-ed on its own, and every
    /// size and mtime is still the entry's own.
    #[cfg(unix)]
    #[test]
    fn a_listing_out_of_step_falls_back_to_one_stat_per_entry() {
        let (_dir, work, run, _) = listing_dirs();
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join("a_emocheck.txt"), b"a").unwrap();
        std::fs::write(run.join("b\n\nc_emocheck.txt"), b"bbbb").unwrap();
        std::fs::write(run.join("d_emocheck.txt"), b"dddddddd").unwrap();
        std::fs::write(run.join("e\n"), b"eeeeeeeeeeeeeeee").unwrap();
        let src = b"#!/bin/sh\n:\n";
        let plan = listing_plan(&work, &run, src);
        install_checker(&plan, src);

        let (pre, post, _) = run_local(&plan, b"", "n2");

        assert_eq!(listed(&pre), on_disk(&run));
        assert_eq!(listed(&post), on_disk(&run));
    }
}
