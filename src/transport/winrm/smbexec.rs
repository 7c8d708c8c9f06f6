//! Running one command on a Windows host over SMB alone, for hosts whose
//! WinRM is off: a one-shot service installed through the service control
//! manager (MS-SCMR over `\PIPE\svcctl`, see [`super::scmr`]), its output and
//! exit code written to files read back over `ADMIN$`.
//!
//! The host's footprint, all named from one name `pushscan-<id>`
//! ([`SERVICE_PREFIX`]; `WinConnection` makes `<id>` its own 16 random hex
//! digits and the command's number, `pushscan-<hex>-<n>`):
//! - the service `pushscan-<id>` (demand start, LocalSystem, errors ignored),
//!   created, started, deleted; Windows logs event 7045 when it is installed
//!   and 7009/7000 when the SCM gives up waiting for it;
//! - on a timeout, a second service `pushscan-<id>-kill` that ends the
//!   checker, deleted the same way;
//! - `C:\Windows\pushscan-<id>.out` (the command's stdout and stderr) and
//!   `C:\Windows\pushscan-<id>.rc` (its exit code), removed once read. They
//!   sit in `%windir%` itself, where only administrators and SYSTEM can
//!   create files, so no other user can plant or read them.
//!
//! The service's binary path, exactly (`<cwd>`, `<program>` and `<args>` as
//! `transport::cmd` quotes them, `<line>` being `"<program>" <args>` or a line
//! of built-ins):
//!
//! ```text
//! %COMSPEC% /Q /c start "" /b %COMSPEC% /Q /V:ON /c "cd /d "<cwd>" & %COMSPEC% /Q /c "<line>" > C:\Windows\pushscan-<id>.out 2>&1 & echo !ERRORLEVEL! > C:\Windows\pushscan-<id>.rc"
//! ```
//!
//! Why this shape: a `cmd.exe` "service" never reports to the SCM, which
//! kills it after about 30 s and makes RStartServiceW answer 1053
//! (`ERROR_SERVICE_REQUEST_TIMEOUT`). The outer `cmd` only starts the middle
//! one detached (`start "" /b`) and ends, so the checker runs for the whole
//! playbook timeout and 1053 is expected, not an error. The middle `cmd` runs
//! the line in an innermost `cmd` whose whole output goes to the `.out` file:
//! cmd binds a redirection to one command, so `<line> > out` would catch only
//! the last command of a line of several (the directory proof has many).
//! `/V:ON` makes `!ERRORLEVEL!` the innermost `cmd`'s exit code, that of the
//! line's last command, read after it ended.
//!
//! Each `cmd` flips its quote state at each `"`; a cmd operator is an
//! operator only outside quotes. The middle part's own operators are where
//! both readers see them (outside the outer `cmd`'s quotes for `&` after the
//! cwd, inside them for the redirections: the middle `cmd` reads those).
//! The cwd's text is outside the outer `cmd`'s quotes: its operators get a
//! `^` ([`outer_escape`]). Every operator of `<line>` gets one `^`
//! ([`escape_every_operator`]): its unquoted text is outside the outer
//! `cmd`'s quotes, which removes that caret; its quoted text is inside them
//! (a caret there is kept) and outside the middle `cmd`'s, which removes it.
//! The innermost `cmd` runs the line as written. `" % !` never reach this point
//! (`transport::cmd` refuses them in every Windows command).
//!
//! A cmd line of built-ins (the directory proof of `mkdirs`) runs the same way
//! in `C:\Windows`.
//!
//! The kill service's binary path: `%COMSPEC% /Q /c taskkill /F /T /IM <image>`,
//! `<image>` the checker's file name. The image name, not a PID: `cmd` has no
//! way to write the PID of what it starts, and the host's lease keeps any other
//! pushscan run off this host meanwhile; a process of the same image name that
//! someone else started would be ended too.
//!
//! The caller journals the service names and both files before the service
//! is created (the `journal` argument of [`run`]); whatever happens after
//! the creation, the service is deleted, and [`remove_service`] (what
//! `cleanup` calls) checks that ROpenServiceW then answers 1060.

use std::future::Future;
use std::time::{Duration, Instant};

use super::scmr::{self, ScHandle, Scm, ScmError};
use super::smbfs::{SmbFiles, SmbPipe};
use crate::model::HostClass;
use crate::transport::{cmd, CommandSpec, ExecOutcome, TResult, TransportError};

/// Every service pushscan creates is named with this prefix.
pub const SERVICE_PREFIX: &str = "pushscan-";
/// Where the output and exit-code files go (`ADMIN$`'s root).
const FILE_DIR: &str = r"C:\Windows";
/// Longest exit-code file read (a number and a line end).
const RC_CAP: u64 = 64;
/// How long the wrapper may take to write its exit code once its checker
/// was ended.
const AFTER_KILL: Duration = Duration::from_secs(15);
/// Polling of the exit-code file: first interval, and the longest.
const POLL_FIRST: Duration = Duration::from_millis(200);
const POLL_MAX: Duration = Duration::from_secs(2);
/// Windows ignores the machine name over a pipe (Impacket sends the same placeholder).
const MACHINE: &str = "DUMMY";

/// 16 random hex digits from the operating system's generator.
pub(super) fn random_hex() -> TResult<String> {
    let mut b = [0u8; 8];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut b)
        .map_err(|_| TransportError::error("no randomness from the operating system"))?;
    Ok(hex::encode(b))
}

/// The names of one command's footprint on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Footprint {
    pub service: String,
    pub kill_service: String,
    pub out: String,
    pub rc: String,
}

impl Footprint {
    /// The footprint of the per-run name `pushscan-<hex>`.
    pub fn new(hex: &str) -> Footprint {
        let service = format!("{SERVICE_PREFIX}{hex}");
        Footprint {
            kill_service: format!("{service}-kill"),
            out: format!(r"{FILE_DIR}\{service}.out"),
            rc: format!(r"{FILE_DIR}\{service}.rc"),
            service,
        }
    }

    /// A footprint with a fresh random name.
    pub fn random() -> TResult<Footprint> {
        Ok(Footprint::new(&random_hex()?))
    }

    pub fn services(&self) -> [&str; 2] {
        [&self.service, &self.kill_service]
    }

    pub fn files(&self) -> [&str; 2] {
        [&self.out, &self.rc]
    }
}

/// Escapes, with `^`, each cmd operator that the outer `cmd` would see outside
/// its quotes (see the module doc; used for the quoted cwd, whose text is
/// outside the outer `cmd`'s quotes): the outer `cmd` removes the carets and
/// the middle one gets the text as written. Parentheses are left as they are:
/// they only open or close a block where a command begins, which never
/// happens inside `start`'s arguments. `line` must have balanced quotes.
pub(super) fn outer_escape(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + 8);
    let mut quoted = false;
    for c in line.chars() {
        if c == '"' {
            quoted = !quoted;
        } else if !quoted && matches!(c, '&' | '|' | '<' | '>' | '^') {
            out.push('^');
        }
        out.push(c);
    }
    out
}

/// The service's binary path running the cmd line `line` in `cwd` (the exact
/// form is in the module doc). `line` comes from `transport::cmd` (or is
/// built from its quoting): no `%`, `!` or unbalanced `"`.
pub(super) fn binary_path(cwd: &str, line: &str, fp: &Footprint) -> TResult<String> {
    if line.contains(['%', '!']) || !line.chars().filter(|c| *c == '"').count().is_multiple_of(2) {
        return Err(TransportError::error(
            "a command line with %, ! or an unbalanced quote cannot run over SMB",
        ));
    }
    let cwd = cmd::quote_path("directory", cwd)?;
    Ok(format!(
        "%COMSPEC% /Q /c start \"\" /b %COMSPEC% /Q /V:ON /c \"cd /d {} & %COMSPEC% /Q /c \"{}\" > {} 2>&1 & echo !ERRORLEVEL! > {}\"",
        outer_escape(&cwd),
        escape_every_operator(line),
        fp.out,
        fp.rc
    ))
}

/// Escapes, with `^`, every cmd operator (`& | < > ^`) of `line`, quoted or
/// not. Inside the binary path `line` sits between quotes of its own, so
/// each part of it is outside the quotes of exactly one of the two `cmd`s
/// that read it before the innermost one runs it: the line's unquoted text
/// is outside the outer `cmd`'s quotes (it removes the caret), its quoted
/// text outside the middle one's (the outer keeps a caret within quotes, the
/// middle removes it). Each caret is removed once, and the innermost `cmd`
/// gets the line as written.
pub(super) fn escape_every_operator(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + 8);
    for c in line.chars() {
        if matches!(c, '&' | '|' | '<' | '>' | '^') {
            out.push('^');
        }
        out.push(c);
    }
    out
}

/// The kill service's binary path for a checker at `program`.
pub(super) fn kill_path(program: &str) -> TResult<String> {
    let image = program.rsplit(['\\', '/']).next().unwrap_or(program);
    cmd::check("program", image)?;
    if image.is_empty() || image.contains(|c: char| c == ' ' || "&|<>()^".contains(c)) {
        return Err(TransportError::error(format!(
            "cannot end {}: its image name is empty or has a blank",
            crate::sanitize::display(program, 120)
        )));
    }
    Ok(format!("%COMSPEC% /Q /c taskkill /F /T /IM {image}"))
}

/// The exit code the wrapper wrote (`echo` adds a blank and a line end).
fn parse_rc(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.trim().parse().ok()
}

fn scm_error(step: &str, e: &ScmError) -> TransportError {
    let class = match e.code() {
        Some(scmr::ERROR_ACCESS_DENIED) => HostClass::AuthFailed,
        _ => HostClass::Error,
    };
    let hint = if class == HostClass::AuthFailed {
        " (the account is not an administrator of the host)"
    } else {
        ""
    };
    TransportError::new(class, format!("svcctl {step}: {e}{hint}"))
}

/// Binds the SCM over `\PIPE\svcctl`; a host without the pipe says so.
pub(super) async fn bind(files: &mut SmbFiles) -> TResult<Scm<SmbPipe>> {
    let pipe = files.open_pipe("svcctl").await.map_err(|e| {
        TransportError::new(
            e.class,
            format!(
                "{} (the service control manager is not reachable over SMB)",
                e.message
            ),
        )
    })?;
    Scm::bind(pipe).await.map_err(|e| scm_error("bind", &e))
}

/// Deletes service `name` if it exists and checks that it is gone:
/// `Ok(true)` when it was there, `Ok(false)` when it was not. Gone means
/// ROpenServiceW answers 1060, or 1072 (marked for deletion: it goes once the
/// last handle to it, perhaps a console's, is closed).
pub(super) async fn remove_service(
    scm: &mut Scm<SmbPipe>,
    mgr: &ScHandle,
    name: &str,
) -> TResult<bool> {
    let svc = match scm.open_service(mgr, name, scmr::SERVICE_MANAGE).await {
        Ok(h) => h,
        Err(e) if e.code() == Some(scmr::ERROR_SERVICE_DOES_NOT_EXIST) => return Ok(false),
        Err(e) => return Err(scm_error(&format!("open {name}"), &e)),
    };
    let deleted = scm.delete_service(&svc).await;
    let _ = scm.close(&svc).await;
    match deleted {
        Ok(()) => {}
        Err(e) if e.code() == Some(scmr::ERROR_SERVICE_MARKED_FOR_DELETE) => {}
        Err(e) => return Err(scm_error(&format!("delete {name}"), &e)),
    }
    match scm.open_service(mgr, name, scmr::SERVICE_QUERY).await {
        Err(e) if e.code() == Some(scmr::ERROR_SERVICE_DOES_NOT_EXIST) => Ok(true),
        Err(e) if e.code() == Some(scmr::ERROR_SERVICE_MARKED_FOR_DELETE) => Ok(true),
        Ok(h) => {
            let _ = scm.close(&h).await;
            Err(TransportError::error(format!(
                "svcctl: service {name} is still there after its deletion"
            )))
        }
        Err(e) => Err(scm_error(&format!("check {name}"), &e)),
    }
}

/// Opens the SCM of the host with `access` (`SC_MANAGER_CREATE` to create services;
/// deleting one needs only `SC_MANAGER_CONNECT`, the rest is the service's own right).
pub(super) async fn open_manager(scm: &mut Scm<SmbPipe>, access: u32) -> TResult<ScHandle> {
    scm.open_manager(MACHINE, access)
        .await
        .map_err(|e| scm_error("open the service control manager", &e))
}

/// Creates and starts a service running `path`; 1053 (the SCM's wait for a
/// program that is not a service ran out) counts as started.
async fn create_and_start(
    scm: &mut Scm<SmbPipe>,
    mgr: &ScHandle,
    name: &str,
    path: &str,
) -> TResult<ScHandle> {
    let svc = scm
        .create_service(mgr, name, name, path)
        .await
        .map_err(|e| scm_error(&format!("create {name}"), &e))?;
    match scm.start_service(&svc).await {
        Ok(()) => Ok(svc),
        Err(e) if e.code() == Some(scmr::ERROR_SERVICE_REQUEST_TIMEOUT) => Ok(svc),
        Err(e) => {
            let _ = scm.delete_service(&svc).await;
            let _ = scm.close(&svc).await;
            Err(scm_error(&format!("start {name}"), &e))
        }
    }
}

/// Ends what an interrupted connection's commands may still be running, before their
/// files are removed: a footprint of `fps` whose output file exists without its exit-code
/// file is a wrapper still waiting for its checker. Each of `images` (the programs those
/// commands ran) is ended as a timeout ends it, by a `-kill` service of that footprint,
/// then each such wrapper's exit-code file is awaited (as after a timeout), so that it is
/// not written after the removal. Returns what could not be done; the removal goes on.
pub(super) async fn end_orphans(
    files: &mut SmbFiles,
    scm: &mut Scm<SmbPipe>,
    fps: &[Footprint],
    images: &[String],
) -> Vec<String> {
    if images.is_empty() {
        return Vec::new();
    }
    let names: std::collections::HashSet<String> = match files.list_dir(FILE_DIR).await {
        Ok(entries) => entries
            .into_iter()
            .map(|e| e.name.to_ascii_lowercase())
            .collect(),
        Err(e) => return vec![format!("cannot list {FILE_DIR}: {}", e.message)],
    };
    let base = |path: &str| {
        path.rsplit('\\')
            .next()
            .unwrap_or(path)
            .to_ascii_lowercase()
    };
    let running: Vec<&Footprint> = fps
        .iter()
        .filter(|fp| names.contains(&base(&fp.out)) && !names.contains(&base(&fp.rc)))
        .collect();
    let Some(first) = running.first() else {
        return Vec::new();
    };
    let mut errors = Vec::new();
    let mgr = match open_manager(scm, scmr::SC_MANAGER_CREATE).await {
        Ok(m) => m,
        Err(e) => {
            return vec![format!(
                "the checker left running was not ended: {}",
                e.message
            )]
        }
    };
    for image in images {
        let kill = match kill_path(image) {
            Ok(k) => k,
            Err(e) => {
                errors.push(e.message);
                continue;
            }
        };
        match create_and_start(scm, &mgr, &first.kill_service, &kill).await {
            Ok(k) => {
                let _ = scm.delete_service(&k).await;
                let _ = scm.close(&k).await;
            }
            Err(e) => errors.push(format!(
                "the checker left running was not ended: {}",
                e.message
            )),
        }
        if let Err(e) = remove_service(scm, &mgr, &first.kill_service).await {
            errors.push(e.message);
        }
    }
    let _ = scm.close(&mgr).await;
    let deadline = Instant::now() + AFTER_KILL;
    for fp in running {
        match wait_rc(files, &fp.rc, deadline).await {
            Ok(Some(_)) => {}
            Ok(None) => errors.push(format!(
                "{} did not end within {} s of the kill",
                fp.service,
                AFTER_KILL.as_secs()
            )),
            Err(e) => errors.push(e.message),
        }
    }
    errors
}

/// Waits for the exit-code file until `deadline`: the code, or `None` at the deadline.
async fn wait_rc(files: &mut SmbFiles, rc: &str, deadline: Instant) -> TResult<Option<i64>> {
    let mut pause = POLL_FIRST;
    loop {
        // A file being written may read empty once: not a code yet.
        if let Some(code) = files
            .read_if_exists(rc, RC_CAP)
            .await?
            .and_then(|b| parse_rc(&b))
        {
            return Ok(Some(code));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(POLL_MAX);
    }
}

/// One command for [`run`].
pub(super) struct Job<'a> {
    /// The cmd line (quoted by `transport::cmd`).
    pub line: &'a str,
    pub cwd: &'a str,
    /// The program a timeout ends (by its image name), when the line runs one.
    pub image: Option<&'a str>,
    pub timeout: Duration,
    pub output_cap: usize,
}

impl<'a> Job<'a> {
    /// The job of a [`CommandSpec`]; `line` must be its command line.
    pub fn of(spec: &'a CommandSpec, line: &'a str) -> Job<'a> {
        Job {
            line,
            cwd: &spec.cwd,
            image: Some(&spec.program),
            timeout: spec.timeout,
            output_cap: spec.output_cap,
        }
    }
}

/// Runs `spec` as a one-shot service (see the module doc). `journal` is
/// awaited before anything is created on the host and must have made
/// `fp`'s services and files durable in the journal.
pub(super) async fn run<F>(
    files: &mut SmbFiles,
    spec: &Job<'_>,
    fp: &Footprint,
    journal: impl FnOnce() -> F,
) -> TResult<ExecOutcome>
where
    F: Future<Output = TResult<()>>,
{
    let path = binary_path(spec.cwd, spec.line, fp)?;
    let kill = match spec.image {
        Some(program) => Some(kill_path(program)?),
        None => None,
    };
    let mut scm = bind(files).await?;
    let mgr = match open_manager(&mut scm, scmr::SC_MANAGER_CREATE).await {
        Ok(m) => m,
        Err(e) => {
            scm.into_pipe().close().await;
            return Err(e);
        }
    };
    let result = run_bound(
        files,
        &mut scm,
        &mgr,
        spec,
        fp,
        &path,
        kill.as_deref(),
        journal,
    )
    .await;
    // Whatever happened, neither service stays.
    let mut leftover = Vec::new();
    for name in fp.services() {
        if let Err(e) = remove_service(&mut scm, &mgr, name).await {
            leftover.push(e.message);
        }
    }
    let _ = scm.close(&mgr).await;
    scm.into_pipe().close().await;
    let out = result?;
    if !leftover.is_empty() {
        return Err(TransportError::error(leftover.join("; ")));
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
async fn run_bound<F>(
    files: &mut SmbFiles,
    scm: &mut Scm<SmbPipe>,
    mgr: &ScHandle,
    spec: &Job<'_>,
    fp: &Footprint,
    path: &str,
    kill: Option<&str>,
    journal: impl FnOnce() -> F,
) -> TResult<ExecOutcome>
where
    F: Future<Output = TResult<()>>,
{
    journal().await?;
    let svc = create_and_start(scm, mgr, &fp.service, path).await?;
    let deadline = Instant::now() + spec.timeout;
    // The service's only work was to start the wrapper: it goes now.
    let _ = scm.delete_service(&svc).await;
    let _ = scm.close(&svc).await;
    // A failed poll ends the checker like a timeout: nothing of ours keeps running or
    // writes a file after the removal below.
    let (code, poll_error) = match wait_rc(files, &fp.rc, deadline).await {
        Ok(code) => (code, None),
        Err(e) => (None, Some(e)),
    };
    let timed_out = code.is_none();
    let mut errors = Vec::new();
    if timed_out {
        // A line of cmd built-ins has no image to end: it is left to finish.
        if let Some(kill) = kill {
            match create_and_start(scm, mgr, &fp.kill_service, kill).await {
                Ok(k) => {
                    let _ = scm.delete_service(&k).await;
                    let _ = scm.close(&k).await;
                }
                Err(e) => errors.push(format!("the checker was not ended: {}", e.message)),
            }
        }
        // The wrapper writes its exit code once its checker is gone: wait
        // for it, so the file is not created after it was removed.
        let _ = wait_rc(files, &fp.rc, Instant::now() + AFTER_KILL).await;
    }
    let cap = u64::try_from(spec.output_cap).unwrap_or(u64::MAX);
    let stdout = files.read_if_exists(&fp.out, cap).await;
    for f in fp.files() {
        if let Err(e) = files.remove_file(f).await {
            errors.push(e.message);
        }
    }
    if let Some(e) = poll_error {
        return Err(e);
    }
    if !errors.is_empty() {
        return Err(TransportError::error(errors.join("; ")));
    }
    let stdout = stdout?.unwrap_or_default();
    Ok(ExecOutcome {
        exit_code: code,
        timed_out,
        stdout,
        ..ExecOutcome::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(program: &str, args: &[&str], cwd: &str) -> CommandSpec {
        CommandSpec {
            program: program.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            cwd: cwd.into(),
            timeout: Duration::from_secs(60),
            output_cap: 1 << 20,
            not_before: None,
        }
    }

    fn path_of(s: &CommandSpec, fp: &Footprint) -> TResult<String> {
        let line = cmd::command_line(&s.program, &s.args)?;
        binary_path(&s.cwd, &line, fp)
    }

    #[test]
    fn the_exact_binary_path() {
        let fp = Footprint::new("0123456789abcdef");
        assert_eq!(fp.service, "pushscan-0123456789abcdef");
        assert_eq!(fp.kill_service, "pushscan-0123456789abcdef-kill");
        assert_eq!(fp.out, r"C:\Windows\pushscan-0123456789abcdef.out");
        let s = spec(
            r"C:\Windows\Temp\pushscan\emocheck_x64.exe",
            &[
                "/quiet",
                "/json",
                "/output",
                r"C:\Windows\Temp\pushscan\run 1",
            ],
            r"C:\Windows\Temp\pushscan",
        );
        assert_eq!(
            path_of(&s, &fp).unwrap(),
            r#"%COMSPEC% /Q /c start "" /b %COMSPEC% /Q /V:ON /c "cd /d "C:\Windows\Temp\pushscan" & %COMSPEC% /Q /c ""C:\Windows\Temp\pushscan\emocheck_x64.exe" /quiet /json /output "C:\Windows\Temp\pushscan\run 1"" > C:\Windows\pushscan-0123456789abcdef.out 2>&1 & echo !ERRORLEVEL! > C:\Windows\pushscan-0123456789abcdef.rc""#
        );
        assert_eq!(
            kill_path(&s.program).unwrap(),
            "%COMSPEC% /Q /c taskkill /F /T /IM emocheck_x64.exe"
        );
    }

    /// What sits inside a quoted path or argument is outside the outer cmd's quotes: its
    /// operators get a caret there, and only there.
    #[test]
    fn operators_the_outer_cmd_would_see_are_escaped_once() {
        let fp = Footprint::new("00");
        let s = spec(r"C:\a&b\x.exe", &["(x)", "a>b", "a|b^c"], r"C:\");
        assert_eq!(
            path_of(&s, &fp).unwrap(),
            r#"%COMSPEC% /Q /c start "" /b %COMSPEC% /Q /V:ON /c "cd /d "C:\\" & %COMSPEC% /Q /c ""C:\a^&b\x.exe" "(x)" "a^>b" "a^|b^^c"" > C:\Windows\pushscan-00.out 2>&1 & echo !ERRORLEVEL! > C:\Windows\pushscan-00.rc""#
        );
        // The directory proof: every operator, outside its quotes as inside, gets one
        // caret; parentheses need nothing.
        assert_eq!(
            escape_every_operator(
                r#"mkdir "C:\p" 2>nul && icacls "C:\p" /grant:r "*S-1-5-18:(OI)(CI)F" >nul"#
            ),
            r#"mkdir "C:\p" 2^>nul ^&^& icacls "C:\p" /grant:r "*S-1-5-18:(OI)(CI)F" ^>nul"#
        );
        for bad in ["100%", "x!y"] {
            assert!(binary_path(r"C:\", bad, &fp).is_err(), "{bad}");
        }
        assert!(
            binary_path(r"C:\", r#"a "b"#, &fp).is_err(),
            "unbalanced quote"
        );
        assert!(kill_path(r"C:\dir\my checker.exe").is_err());
        assert!(kill_path(r"C:\dir\a&b.exe").is_err());
    }

    #[test]
    fn names_are_unique_and_exit_codes_parse_as_echo_writes_them() {
        let a = Footprint::random().unwrap();
        let b = Footprint::random().unwrap();
        assert_ne!(a.service, b.service);
        assert!(a.service.starts_with(SERVICE_PREFIX) && a.service.len() == 25);
        assert_eq!(parse_rc(b"0 \r\n"), Some(0));
        assert_eq!(parse_rc(b"-1073741819 \r\n"), Some(-1_073_741_819));
        assert_eq!(parse_rc(b""), None);
        assert_eq!(parse_rc(b"ECHO is off."), None);
    }
}

/// Against Samba 4.17's own svcctl (a private smbd of these tests): an account that may not
/// create services is refused before anything is journaled or created, in the class of a
/// refused login; a service that does not exist reads as gone (1060); one that exists but
/// may not be deleted is an error, never "gone".
#[cfg(all(test, unix))]
mod samba {
    use super::*;
    use crate::transport::winrm::smbfs::tests::{login, start_samba};
    use std::net::Ipv4Addr;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refusals_stop_the_run_and_a_missing_service_is_gone() {
        let smb = start_samba(Ipv4Addr::new(127, 0, 87, 22));
        let mut files = login(format!("{}:{}", smb.ip, smb.port)).await;
        let journaled = AtomicBool::new(false);
        let s = Job {
            line: r#""C:\Windows\Temp\pushscan\emocheck_x64.exe" /quiet"#,
            cwd: r"C:\Windows\Temp\pushscan",
            image: Some(r"C:\Windows\Temp\pushscan\emocheck_x64.exe"),
            timeout: Duration::from_secs(5),
            output_cap: 1024,
        };
        let fp = Footprint::random().expect("name");
        let e = run(&mut files, &s, &fp, || async {
            journaled.store(true, Ordering::SeqCst);
            Ok(())
        })
        .await
        .expect_err("Samba grants no create right to a plain account");
        assert_eq!(e.class, HostClass::AuthFailed, "{}", e.message);
        assert!(e.message.contains("not an administrator"), "{}", e.message);
        assert!(
            !journaled.load(Ordering::SeqCst),
            "journaled though nothing could be created"
        );

        let mut scm = bind(&mut files).await.expect("bind");
        let mgr = scm
            .open_manager(MACHINE, scmr::SC_MANAGER_CONNECT)
            .await
            .expect("connect right");
        assert!(!remove_service(&mut scm, &mgr, &fp.service)
            .await
            .expect("1060"));
        let e = remove_service(&mut scm, &mgr, "Spooler")
            .await
            .expect_err("Spooler may not be deleted by this account");
        assert_eq!(e.class, HostClass::AuthFailed, "{}", e.message);
        scm.close(&mgr).await.expect("close");
        scm.into_pipe().close().await;
        files.close().await;
    }
}
