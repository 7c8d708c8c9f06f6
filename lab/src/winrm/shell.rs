//! Windows Remote Shell state of one simulated host: shells (Create/Delete),
//! commands (Command/Receive/Send/Signal), quotas (MaxShellsPerUser,
//! MaxProcessesPerShell, idle timeout) and the execution of command lines.
//!
//! A command line (`rsp:Command` + `rsp:Arguments`, joined by blanks as
//! Windows does) is run the way `cmd /c` would run it: `cmd /c ...` nests,
//! the builtins of [`super::cmd`] run in-process on the host tree, and a
//! program that is an `.exe` file of the host tree runs for real as
//! `/bin/sh <file> <args> <checker_args>` in its own process group, with its
//! cwd at the shell's working directory and every argument that is an
//! absolute Windows path mapped into the tree (or refused). Signal
//! `terminate`, Delete and the idle timeout kill the whole process group;
//! `ctrl_c` sends it SIGINT.
//!
//! Output of a command is queued per stream (at most [`OUTPUT_CAP`] bytes
//! waiting: the pipes are not read further until a Receive takes some) and a
//! Receive returns what is queued as soon as there is something, the final
//! state with `ExitCode` once the command has exited and everything was
//! delivered, or the `w:TimedOut` fault when its OperationTimeout passes.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};

use super::cmd::{self, Machine, Op, Segment, Target};
use super::paths::{self, HostTree, PathError, WinPath};
use super::soap::{self, escape, Element, Fault, Request, NS_SHELL};
use super::SimHost;

/// Most output bytes queued for one command before its pipes stop being read.
pub const OUTPUT_CAP: usize = 1 << 20;
/// Most raw output bytes put in one Receive reply.
const MAX_RECEIVE_CHUNK: usize = 64 * 1024;
/// Stdin chunks buffered for a command before Send is refused.
const STDIN_QUEUE: usize = 64;
/// Stdin bytes buffered for a command before Send is refused.
const STDIN_CAP: usize = 4 << 20;
/// OperationTimeout used when a Receive carries none (Windows' default).
const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest OperationTimeout honoured.
const MAX_OPERATION_TIMEOUT: Duration = Duration::from_secs(3600);
/// Deepest `cmd /c cmd /c ...` nesting.
const MAX_NESTING: usize = 8;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Quotas of the WinRM service (Windows' `winrm/config/Winrs`).
#[derive(Debug, Clone)]
pub struct Limits {
    /// MaxShellsPerUser.
    pub max_shells_per_user: usize,
    /// MaxProcessesPerShell (counted as running commands).
    pub max_processes_per_shell: usize,
    /// IdleTimeout: a shell unused this long is deleted.
    pub idle_timeout: Duration,
}

/// Counters of one simulated host.
#[derive(Debug, Default)]
pub struct HostStats {
    /// HTTP requests received.
    pub requests: AtomicU64,
    /// Authentications refused (bad user or password, bad token).
    pub auth_failures: AtomicU64,
    /// NTLM AUTHENTICATE messages that arrived on a connection other than
    /// the one of their NEGOTIATE (refused, as by Windows; counted in
    /// `auth_failures` too).
    pub ntlm_split_legs: AtomicU64,
    /// Sealed (`multipart/encrypted`) bodies unsealed and served.
    pub sealed_requests: AtomicU64,
    /// Sealed bodies that arrived on a connection without an NTLM session
    /// (refused with 401 and a `Negotiate` challenge, as by Windows): a
    /// client sending a sealed request on a new connection.
    pub sealed_without_session: AtomicU64,
    /// Receives answered with the `w:TimedOut` fault (nothing to return
    /// within their OperationTimeout).
    pub receive_timeouts: AtomicU64,
    /// Shells created.
    pub shells_created: AtomicU64,
    /// Commands started.
    pub commands_started: AtomicU64,
}

/// Everything the simulator keeps for one host.
pub struct HostState {
    /// The host as configured.
    pub host: SimHost,
    /// Its `C:` drive.
    pub tree: HostTree,
    /// Quotas.
    pub limits: Limits,
    /// Counters.
    pub stats: HostStats,
    shells: Mutex<HashMap<String, Arc<Shell>>>,
    /// Commands started detached (`start "" /b ...`, service processes): kept here so that
    /// they outlive the command that started them, until they exit or the host shuts down.
    detached: Mutex<Vec<Arc<Command>>>,
}

impl std::fmt::Debug for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostState")
            .field("host", &self.host.name)
            .finish()
    }
}

impl HostState {
    /// State for `host` (creates `<root>/C` when missing).
    pub fn new(host: SimHost, limits: Limits) -> std::io::Result<Self> {
        // A Wine host's C: is its prefix's drive_c (used by the lines the simulator
        // answers itself on Wine hosts, see `run_wine`).
        let tree = match &host.wine {
            Some(w) if w.drive_c().is_dir() => HostTree::at_drive(&w.drive_c())?,
            _ => HostTree::new(&host.root)?,
        };
        Ok(HostState {
            host,
            tree,
            limits,
            stats: HostStats::default(),
            shells: Mutex::new(HashMap::new()),
            detached: Mutex::new(Vec::new()),
        })
    }

    /// Number of open shells.
    pub fn shell_count(&self) -> usize {
        lock(&self.shells).len()
    }

    /// Delete every shell (killing their processes).
    pub fn delete_all(&self) {
        let shells: Vec<Arc<Shell>> = lock(&self.shells).drain().map(|(_, s)| s).collect();
        for s in shells {
            s.terminate_all();
        }
        let detached: Vec<Arc<Command>> = lock(&self.detached).drain(..).collect();
        for c in detached {
            c.terminate();
        }
    }

    /// Starts `line` as the process of a Windows service on this host (what the service
    /// control manager does with a service's binary path): environment variables expanded
    /// first (the binary path is a `REG_EXPAND_SZ`), run as `NT AUTHORITY\SYSTEM` from
    /// `C:\Windows\system32` with no console (its output is discarded), detached from the
    /// caller. The returned command is what [`Command::wait`] and [`Command::terminate`]
    /// act on; a `start "" /b` inside it outlives it.
    pub fn start_service_process(self: &Arc<Self>, line: &str) -> Arc<Command> {
        let ctx = ExecCtx {
            host: Arc::clone(self),
            env: Vec::new(),
            system: true,
            delayed: false,
        };
        let line = expand_vars(&ctx, line, 0);
        let cwd = paths::parse(r"C:\Windows\system32", &WinPath::root())
            .unwrap_or_else(|_| WinPath::root());
        spawn_detached(ctx, cwd, line)
    }

    /// The real process ids of every program running on this host (process group leaders,
    /// as `taskkill /PID` sees them) with their image names.
    fn processes(&self) -> Vec<(i32, String)> {
        let mut out = Vec::new();
        let commands: Vec<Arc<Command>> = lock(&self.detached).clone();
        for c in commands {
            out.extend(lock(&c.images).iter().cloned());
        }
        for shell in lock(&self.shells).values() {
            for c in lock(&shell.commands).values() {
                out.extend(lock(&c.images).iter().cloned());
            }
        }
        out.retain(|(pid, _)| process_alive(*pid));
        out
    }

    /// Delete the shells idle for longer than their idle timeout.
    pub fn reap_idle(&self) {
        let now = Instant::now();
        let expired: Vec<Arc<Shell>> = {
            let mut shells = lock(&self.shells);
            let ids: Vec<String> = shells
                .iter()
                .filter(|(_, s)| {
                    s.busy.load(Ordering::SeqCst) == 0
                        && now.saturating_duration_since(*lock(&s.last_used)) > s.idle_timeout
                })
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().filter_map(|id| shells.remove(id)).collect()
        };
        for s in expired {
            s.terminate_all();
        }
    }

    fn shell(&self, req: &Request) -> Result<Arc<Shell>, Fault> {
        let id = req
            .selector("ShellId")
            .ok_or_else(|| Fault::shell_not_found(""))?;
        lock(&self.shells)
            .get(id)
            .cloned()
            .ok_or_else(|| Fault::shell_not_found(id))
    }

    /// Run one WS-Man request for an authenticated `user`; returns the reply
    /// action and body content, or a fault.
    pub async fn dispatch(
        self: &Arc<Self>,
        req: &Request,
        user: &str,
        client_ip: &str,
    ) -> Result<(&'static str, String), Fault> {
        let resource = req.resource_uri.trim();
        if !resource.eq_ignore_ascii_case(soap::RESOURCE_CMD) {
            return Err(if resource.is_empty() {
                Fault::invalid("The ResourceURI header is missing.")
            } else {
                Fault::unknown_resource(resource)
            });
        }
        match req.action.as_str() {
            soap::ACTION_CREATE => self.create(req, user, client_ip),
            soap::ACTION_DELETE => {
                let shell = self.shell(req)?;
                lock(&self.shells).remove(&shell.id);
                shell.terminate_all();
                Ok((
                    "http://schemas.xmlsoap.org/ws/2004/09/transfer/DeleteResponse",
                    String::new(),
                ))
            }
            soap::ACTION_COMMAND => self.command(req),
            soap::ACTION_RECEIVE => self.receive(req).await,
            soap::ACTION_SEND => self.send(req),
            soap::ACTION_SIGNAL => self.signal(req),
            other => Err(Fault::action_not_supported(other)),
        }
    }

    fn create(
        self: &Arc<Self>,
        req: &Request,
        user: &str,
        client_ip: &str,
    ) -> Result<(&'static str, String), Fault> {
        let owned = lock(&self.shells)
            .values()
            .filter(|s| s.owner.eq_ignore_ascii_case(user))
            .count();
        if owned >= self.limits.max_shells_per_user {
            return Err(Fault::too_many_shells(self.limits.max_shells_per_user));
        }
        let spec = req.body.child(NS_SHELL, "Shell");
        let text_of = |name: &str| {
            spec.and_then(|s| s.child(NS_SHELL, name))
                .map(|e| e.text_trimmed().to_string())
        };
        let cwd = match text_of("WorkingDirectory").filter(|s| !s.is_empty()) {
            Some(dir) => match self.tree.resolve(&dir, &WinPath::root(), true) {
                Ok((_, real)) if real.is_dir() => self
                    .tree
                    .to_windows(&real)
                    .ok_or_else(Fault::invalid_directory)?,
                Ok(_) | Err(PathError::Invalid) => return Err(Fault::invalid_directory()),
                Err(PathError::Denied) => return Err(Fault::access_denied()),
            },
            None => {
                let home = WinPath::root().join("Users").join(&self.host.username);
                if let Ok(real) = self.tree.map(&home, true) {
                    let _ = std::fs::create_dir_all(real);
                }
                home
            }
        };
        let idle_timeout = text_of("IdleTimeOut")
            .and_then(|s| soap::parse_duration(&s))
            .map(|d| d.min(self.limits.idle_timeout))
            .unwrap_or(self.limits.idle_timeout);
        let mut env = Vec::new();
        if let Some(vars) = spec.and_then(|s| s.child(NS_SHELL, "Environment")) {
            for v in vars.children_named(NS_SHELL, "Variable") {
                let name = v.attr("Name").unwrap_or_default();
                if !name.is_empty() && !name.contains(['=', '\0']) && !v.text.contains('\0') {
                    env.push((name.to_string(), v.text.clone()));
                }
            }
        }
        let input = text_of("InputStreams").unwrap_or_else(|| "stdin".into());
        let output = text_of("OutputStreams").unwrap_or_else(|| "stdout stderr".into());
        let id = uuid::Uuid::new_v4().to_string().to_uppercase();
        let shell = Arc::new(Shell {
            id: id.clone(),
            owner: user.to_string(),
            cwd,
            env,
            idle_timeout,
            last_used: Mutex::new(Instant::now()),
            busy: AtomicUsize::new(0),
            commands: Mutex::new(HashMap::new()),
        });
        lock(&self.shells).insert(id.clone(), shell);
        self.stats.shells_created.fetch_add(1, Ordering::Relaxed);
        let address = format!("http://{}:5985/wsman", self.host.address);
        let body = format!(
            "<x:ResourceCreated><a:Address>{address}</a:Address><a:ReferenceParameters>\
             <w:ResourceURI>{res}</w:ResourceURI><w:SelectorSet><w:Selector Name=\"ShellId\">{id}\
             </w:Selector></w:SelectorSet></a:ReferenceParameters></x:ResourceCreated>\
             <rsp:Shell><rsp:ShellId>{id}</rsp:ShellId><rsp:ResourceUri>{res}</rsp:ResourceUri>\
             <rsp:Owner>{owner}</rsp:Owner><rsp:ClientIP>{ip}</rsp:ClientIP>\
             <rsp:IdleTimeOut>{idle}</rsp:IdleTimeOut><rsp:InputStreams>{input}</rsp:InputStreams>\
             <rsp:OutputStreams>{output}</rsp:OutputStreams><rsp:ShellRunTime>P0DT0H0M0S\
             </rsp:ShellRunTime><rsp:ShellInactivity>P0DT0H0M0S</rsp:ShellInactivity></rsp:Shell>",
            res = soap::RESOURCE_CMD,
            owner = escape(user),
            ip = escape(client_ip),
            idle = soap::format_duration(idle_timeout),
            input = escape(&input),
            output = escape(&output),
        );
        Ok((
            "http://schemas.xmlsoap.org/ws/2004/09/transfer/CreateResponse",
            body,
        ))
    }

    fn command(self: &Arc<Self>, req: &Request) -> Result<(&'static str, String), Fault> {
        let shell = self.shell(req)?;
        let _use = shell.use_guard();
        let line_el = req
            .body
            .child(NS_SHELL, "CommandLine")
            .ok_or_else(|| Fault::invalid("The CommandLine element is missing."))?;
        let program = line_el
            .child(NS_SHELL, "Command")
            .map(|e| e.text.trim().to_string())
            .unwrap_or_default();
        if program.is_empty() {
            return Err(Fault::invalid("The Command element is missing or empty."));
        }
        let mut line = program;
        for a in line_el.children_named(NS_SHELL, "Arguments") {
            line.push(' ');
            line.push_str(&a.text);
        }
        if line.contains('\0') {
            return Err(Fault::invalid("The command line contains a NUL character."));
        }
        let running = lock(&shell.commands)
            .values()
            .filter(|c| !c.is_finished())
            .count();
        if running >= self.limits.max_processes_per_shell {
            return Err(Fault::too_many_processes(
                self.limits.max_processes_per_shell,
            ));
        }
        let id = line_el
            .attr("CommandId")
            .filter(|s| !s.is_empty() && s.len() <= 64 && !lock(&shell.commands).contains_key(*s))
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string().to_uppercase());
        let (stdin_tx, stdin_rx) = mpsc::channel(STDIN_QUEUE);
        let command = Arc::new(Command::new(id.clone(), Some(stdin_tx), false));
        let ctx = ExecCtx {
            host: Arc::clone(self),
            env: shell.env.clone(),
            system: false,
            delayed: false,
        };
        let runner_cmd = Arc::clone(&command);
        let cwd = shell.cwd.clone();
        let handle = tokio::spawn(async move {
            let mut stdin = Some(stdin_rx);
            let sink = Sink::queue();
            let code = match ctx.host.host.wine.clone() {
                Some(wine) => run_wine(&runner_cmd, &ctx, &wine, &line).await,
                None => run_line(&runner_cmd, &ctx, cwd, &line, &sink, &mut stdin, 0).await,
            };
            runner_cmd.finish(code);
        });
        *lock(&command.runner) = Some(handle.abort_handle());
        lock(&shell.commands).insert(id.clone(), command);
        self.stats.commands_started.fetch_add(1, Ordering::Relaxed);
        Ok((
            "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandResponse",
            format!(
                "<rsp:CommandResponse><rsp:CommandId>{id}</rsp:CommandId></rsp:CommandResponse>"
            ),
        ))
    }

    async fn receive(self: &Arc<Self>, req: &Request) -> Result<(&'static str, String), Fault> {
        let shell = self.shell(req)?;
        let _use = shell.use_guard();
        let desired = req
            .body
            .child(NS_SHELL, "Receive")
            .and_then(|r| r.child(NS_SHELL, "DesiredStream"))
            .ok_or_else(|| Fault::invalid("The DesiredStream element is missing."))?;
        let command_id = desired
            .attr("CommandId")
            .ok_or_else(|| Fault::invalid("The CommandId attribute is missing."))?;
        let command = shell.command(command_id)?;
        let timeout = req
            .operation_timeout
            .unwrap_or(DEFAULT_OPERATION_TIMEOUT)
            .min(MAX_OPERATION_TIMEOUT);
        let max_chunk = req
            .max_envelope_size
            .map(|m| (m.saturating_sub(4096) / 4 * 3).max(1024))
            .unwrap_or(MAX_RECEIVE_CHUNK)
            .min(MAX_RECEIVE_CHUNK);
        let got = command.receive(max_chunk, timeout).await.inspect_err(|f| {
            if f.subcode == Fault::timed_out().subcode {
                self.stats.receive_timeouts.fetch_add(1, Ordering::Relaxed);
            }
        })?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut body = String::from("<rsp:ReceiveResponse>");
        for (kind, data) in &got.streams {
            body.push_str(&format!(
                "<rsp:Stream Name=\"{}\" CommandId=\"{}\">{}</rsp:Stream>",
                kind.name(),
                escape(&command.id),
                b64.encode(data)
            ));
        }
        match got.exit {
            Some(code) => {
                for kind in [StreamKind::Stdout, StreamKind::Stderr] {
                    body.push_str(&format!(
                        "<rsp:Stream Name=\"{}\" CommandId=\"{}\" End=\"true\"></rsp:Stream>",
                        kind.name(),
                        escape(&command.id)
                    ));
                }
                body.push_str(&format!(
                    "<rsp:CommandState CommandId=\"{}\" State=\"{}\"><rsp:ExitCode>{}</rsp:ExitCode>\
                     </rsp:CommandState>",
                    escape(&command.id),
                    soap::STATE_DONE,
                    code as u32
                ));
            }
            None => body.push_str(&format!(
                "<rsp:CommandState CommandId=\"{}\" State=\"{}\"></rsp:CommandState>",
                escape(&command.id),
                soap::STATE_RUNNING
            )),
        }
        body.push_str("</rsp:ReceiveResponse>");
        Ok((
            "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/ReceiveResponse",
            body,
        ))
    }

    fn send(self: &Arc<Self>, req: &Request) -> Result<(&'static str, String), Fault> {
        let shell = self.shell(req)?;
        let _use = shell.use_guard();
        let send = req
            .body
            .child(NS_SHELL, "Send")
            .ok_or_else(|| Fault::invalid("The Send element is missing."))?;
        for stream in send.children_named(NS_SHELL, "Stream") {
            let command_id = stream
                .attr("CommandId")
                .ok_or_else(|| Fault::invalid("The CommandId attribute is missing."))?;
            let command = shell.command(command_id)?;
            let text: String = stream.text.chars().filter(|c| !c.is_whitespace()).collect();
            let data = base64::engine::general_purpose::STANDARD
                .decode(text.as_bytes())
                .map_err(|_| Fault::invalid("The stdin data is not valid base64."))?;
            let end = stream
                .attr("End")
                .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
            command.send_stdin(data, end)?;
        }
        Ok((
            "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/SendResponse",
            "<rsp:SendResponse></rsp:SendResponse>".into(),
        ))
    }

    fn signal(self: &Arc<Self>, req: &Request) -> Result<(&'static str, String), Fault> {
        let shell = self.shell(req)?;
        let _use = shell.use_guard();
        let signal: &Element = req
            .body
            .child(NS_SHELL, "Signal")
            .ok_or_else(|| Fault::invalid("The Signal element is missing."))?;
        let command_id = signal
            .attr("CommandId")
            .ok_or_else(|| Fault::invalid("The CommandId attribute is missing."))?;
        let code = signal
            .child(NS_SHELL, "Code")
            .map(|c| c.text_trimmed().to_string())
            .unwrap_or_default();
        let command = shell.command(command_id)?;
        match code.as_str() {
            soap::SIGNAL_TERMINATE => {
                lock(&shell.commands).remove(&command.id);
                command.terminate();
            }
            soap::SIGNAL_CTRL_C => command.signal_groups(libc::SIGINT),
            soap::SIGNAL_CTRL_BREAK => command.signal_groups(libc::SIGTERM),
            _ => return Err(Fault::invalid("Unknown signal code.")),
        }
        Ok((
            "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/SignalResponse",
            "<rsp:SignalResponse></rsp:SignalResponse>".into(),
        ))
    }
}

impl Drop for HostState {
    fn drop(&mut self) {
        self.delete_all();
    }
}

/// One open shell.
pub struct Shell {
    id: String,
    owner: String,
    cwd: WinPath,
    env: Vec<(String, String)>,
    idle_timeout: Duration,
    last_used: Mutex<Instant>,
    busy: AtomicUsize,
    commands: Mutex<HashMap<String, Arc<Command>>>,
}

struct UseGuard<'a>(&'a Shell);

impl Drop for UseGuard<'_> {
    fn drop(&mut self) {
        *lock(&self.0.last_used) = Instant::now();
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shell {
    fn use_guard(&self) -> UseGuard<'_> {
        self.busy.fetch_add(1, Ordering::SeqCst);
        *lock(&self.last_used) = Instant::now();
        UseGuard(self)
    }

    fn command(&self, id: &str) -> Result<Arc<Command>, Fault> {
        lock(&self.commands)
            .get(id)
            .cloned()
            .ok_or_else(|| Fault::command_not_found(id))
    }

    fn terminate_all(&self) {
        let commands: Vec<Arc<Command>> = lock(&self.commands).drain().map(|(_, c)| c).collect();
        for c in commands {
            c.terminate();
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        self.terminate_all();
    }
}

/// Output stream of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// stdout.
    Stdout,
    /// stderr.
    Stderr,
}

impl StreamKind {
    fn name(self) -> &'static str {
        match self {
            StreamKind::Stdout => "stdout",
            StreamKind::Stderr => "stderr",
        }
    }
}

#[derive(Default)]
struct CmdState {
    queue: VecDeque<(StreamKind, Vec<u8>)>,
    queued: usize,
    exit: Option<i32>,
    terminated: bool,
}

/// What one Receive returns.
#[derive(Debug, Default)]
pub struct Received {
    /// Chunks in order (consecutive chunks of one stream merged).
    pub streams: Vec<(StreamKind, Vec<u8>)>,
    /// Exit code once the command is done and all output was delivered.
    pub exit: Option<i32>,
}

/// A running (or finished) command of a shell.
pub struct Command {
    id: String,
    state: Mutex<CmdState>,
    changed: Notify,
    space: Notify,
    stdin: Mutex<Option<mpsc::Sender<Vec<u8>>>>,
    stdin_pending: Arc<AtomicUsize>,
    groups: Mutex<Vec<i32>>,
    /// (pid, image name) of the programs it started, for `taskkill` and `tasklist`.
    images: Mutex<Vec<(i32, String)>>,
    runner: Mutex<Option<tokio::task::AbortHandle>>,
    /// Output is dropped (a detached or service process has no console to write to).
    discard: bool,
}

impl Command {
    fn new(id: String, stdin: Option<mpsc::Sender<Vec<u8>>>, discard: bool) -> Command {
        Command {
            id,
            state: Mutex::new(CmdState::default()),
            changed: Notify::new(),
            space: Notify::new(),
            stdin: Mutex::new(stdin),
            stdin_pending: Arc::new(AtomicUsize::new(0)),
            groups: Mutex::new(Vec::new()),
            images: Mutex::new(Vec::new()),
            runner: Mutex::new(None),
            discard,
        }
    }

    /// The exit code once the command has ended (None while it runs; a terminated command
    /// ends with 1).
    pub fn exit_code(&self) -> Option<i32> {
        let st = lock(&self.state);
        match (st.exit, st.terminated) {
            (Some(c), _) => Some(c),
            (None, true) => Some(1),
            (None, false) => None,
        }
    }

    /// Waits until the command ends, at most `timeout`; its exit code, or None when it still
    /// runs.
    pub async fn wait(&self, timeout: Duration) -> Option<i32> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(c) = self.exit_code() {
                return Some(c);
            }
            tokio::select! {
                _ = &mut changed => {}
                _ = tokio::time::sleep_until(deadline) => return self.exit_code(),
            }
        }
    }

    fn is_finished(&self) -> bool {
        let st = lock(&self.state);
        st.exit.is_some() || st.terminated
    }

    fn finish(&self, code: i32) {
        lock(&self.state).exit = Some(code);
        self.changed.notify_waiters();
    }

    async fn push(&self, kind: StreamKind, data: Vec<u8>) {
        if data.is_empty() || self.discard {
            return;
        }
        let mut data = Some(data);
        loop {
            let space = self.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            {
                let mut st = lock(&self.state);
                if st.terminated {
                    return;
                }
                if st.queued < OUTPUT_CAP {
                    if let Some(d) = data.take() {
                        st.queued += d.len();
                        match st.queue.back_mut() {
                            Some((k, last)) if *k == kind && last.len() + d.len() <= 64 * 1024 => {
                                last.extend_from_slice(&d)
                            }
                            _ => st.queue.push_back((kind, d)),
                        }
                    }
                    drop(st);
                    self.changed.notify_waiters();
                    return;
                }
            }
            space.await;
        }
    }

    async fn receive(&self, max: usize, timeout: Duration) -> Result<Received, Fault> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut st = lock(&self.state);
                if st.terminated {
                    return Err(Fault::command_not_found(&self.id));
                }
                if !st.queue.is_empty() || st.exit.is_some() {
                    let mut out = Received::default();
                    let mut taken = 0;
                    while taken < max {
                        let Some((kind, mut data)) = st.queue.pop_front() else {
                            break;
                        };
                        if taken + data.len() > max {
                            let rest = data.split_off(max - taken);
                            st.queue.push_front((kind, rest));
                        }
                        taken += data.len();
                        match out.streams.last_mut() {
                            Some((k, last)) if *k == kind => last.extend_from_slice(&data),
                            _ => out.streams.push((kind, data)),
                        }
                    }
                    st.queued = st.queued.saturating_sub(taken);
                    if st.queue.is_empty() {
                        out.exit = st.exit;
                    }
                    drop(st);
                    self.space.notify_waiters();
                    return Ok(out);
                }
            }
            tokio::select! {
                _ = &mut changed => {}
                _ = tokio::time::sleep_until(deadline) => return Err(Fault::timed_out()),
            }
        }
    }

    fn send_stdin(&self, data: Vec<u8>, end: bool) -> Result<(), Fault> {
        let mut guard = lock(&self.stdin);
        if let Some(tx) = guard.as_ref() {
            if !data.is_empty() {
                let len = data.len();
                if self.stdin_pending.load(Ordering::SeqCst) + len > STDIN_CAP {
                    return Err(Fault::stdin_full());
                }
                match tx.try_send(data) {
                    Ok(()) => {
                        self.stdin_pending.fetch_add(len, Ordering::SeqCst);
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => return Err(Fault::stdin_full()),
                    // The reader is gone (process ended or never read stdin).
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
            }
        }
        if end {
            *guard = None;
        }
        Ok(())
    }

    fn signal_groups(&self, sig: i32) {
        for &pgid in lock(&self.groups).iter() {
            if pgid > 1 {
                // SAFETY: killpg has no memory-safety preconditions.
                unsafe {
                    libc::killpg(pgid, sig);
                }
            }
        }
    }

    /// Kill the whole process tree and stop the runner (commands it started detached live
    /// on).
    pub fn terminate(&self) {
        if let Some(h) = lock(&self.runner).take() {
            h.abort();
        }
        self.signal_groups(libc::SIGKILL);
        lock(&self.groups).clear();
        *lock(&self.stdin) = None;
        {
            let mut st = lock(&self.state);
            st.terminated = true;
            st.queue.clear();
            st.queued = 0;
        }
        self.changed.notify_waiters();
        self.space.notify_waiters();
    }
}

impl Drop for Command {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// What a command's runner needs from its shell and host.
#[derive(Clone)]
struct ExecCtx {
    host: Arc<HostState>,
    env: Vec<(String, String)>,
    /// Runs as `NT AUTHORITY\SYSTEM` (a service process and what it starts).
    system: bool,
    /// `cmd /V:ON`: `!VAR!` is expanded when each command runs.
    delayed: bool,
}

/// Most bytes a line may grow to by variable expansion.
const MAX_EXPANDED_LINE: usize = 32 * 1024;
/// Most bytes of a batch file run.
const MAX_BATCH_FILE: u64 = 256 * 1024;

/// The value of environment variable `name` (case-insensitive) as cmd sees it on the host:
/// the shell's environment first, then the variables every Windows process has.
fn var_value(ctx: &ExecCtx, name: &str, errorlevel: i32) -> Option<String> {
    if let Some((_, v)) = ctx.env.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
        return Some(v.clone());
    }
    let upper = name.to_ascii_uppercase();
    Some(match upper.as_str() {
        "COMSPEC" => r"C:\Windows\system32\cmd.exe".to_string(),
        "SYSTEMROOT" | "WINDIR" => r"C:\Windows".to_string(),
        "SYSTEMDRIVE" => "C:".to_string(),
        "PROGRAMDATA" => r"C:\ProgramData".to_string(),
        "TEMP" | "TMP" if ctx.system => r"C:\Windows\TEMP".to_string(),
        "COMPUTERNAME" => ctx.host.host.name.clone(),
        "USERNAME" if ctx.system => format!("{}$", ctx.host.host.name),
        "USERNAME" => ctx.host.host.username.clone(),
        "ERRORLEVEL" => errorlevel.to_string(),
        _ => return None,
    })
}

/// cmd's `%VAR%` expansion of a line (done when the line is read): a defined variable is
/// replaced, an undefined one is left as written (as `cmd /c` does), `%%` stays.
fn expand_vars(ctx: &ExecCtx, line: &str, errorlevel: i32) -> String {
    expand_with(ctx, line, '%', errorlevel)
}

fn expand_with(ctx: &ExecCtx, line: &str, mark: char, errorlevel: i32) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(start) = rest.find(mark) {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after.find(mark) {
            Some(end) if end > 0 && !after[..end].contains([' ', '\t', '"']) => {
                let name = &after[..end];
                match var_value(ctx, name, errorlevel) {
                    Some(v) if out.len() + v.len() <= MAX_EXPANDED_LINE => out.push_str(&v),
                    _ => {
                        out.push(mark);
                        out.push_str(name);
                        out.push(mark);
                    }
                }
                rest = &after[end + 1..];
            }
            _ => {
                out.push(mark);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Runs `line` as a new detached process of `ctx`'s host (kept in the host's list until it
/// ends) and returns it.
fn spawn_detached(ctx: ExecCtx, cwd: WinPath, line: String) -> Arc<Command> {
    let host = Arc::clone(&ctx.host);
    let id = uuid::Uuid::new_v4().to_string().to_uppercase();
    let command = Arc::new(Command::new(id, None, true));
    let runner_cmd = Arc::clone(&command);
    let handle = tokio::spawn(async move {
        let mut stdin = None;
        let sink = Sink {
            out: Dest::Null,
            err: Dest::Null,
        };
        // A new process, not a cmd line: `cmd /c` in it parses its rest once, anything else
        // is one program with its arguments (as CreateProcess runs it).
        let code = match ctx.host.host.wine.clone() {
            Some(wine) => run_wine(&runner_cmd, &ctx, &wine, &line).await,
            None => {
                let mut cwd = cwd;
                run_segment(&runner_cmd, &ctx, &mut cwd, &line, &sink, &mut stdin, 0)
                    .await
                    .0
            }
        };
        runner_cmd.finish(code);
    });
    *lock(&command.runner) = Some(handle.abort_handle());
    let mut list = lock(&host.detached);
    list.retain(|c| !c.is_finished());
    list.push(Arc::clone(&command));
    command
}

/// Whether process `pid` exists (and is not a zombie waiting to be reaped).
fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Where a command writes one stream.
#[derive(Clone)]
enum Dest {
    Queue(StreamKind),
    Null,
    File(Arc<std::fs::File>),
}

#[derive(Clone)]
struct Sink {
    out: Dest,
    err: Dest,
}

impl Sink {
    fn queue() -> Self {
        Sink {
            out: Dest::Queue(StreamKind::Stdout),
            err: Dest::Queue(StreamKind::Stderr),
        }
    }
}

async fn write_dest(command: &Command, dest: &Dest, data: Vec<u8>) {
    match dest {
        Dest::Queue(kind) => {
            // In pieces, so that big builtin output (type) waits for Receives.
            for piece in data.chunks(32 * 1024) {
                command.push(*kind, piece.to_vec()).await;
            }
        }
        Dest::Null => {}
        Dest::File(f) => {
            let f = Arc::clone(f);
            let _ = tokio::task::spawn_blocking(move || {
                use std::io::Write;
                (&*f).write_all(&data)
            })
            .await;
        }
    }
}

/// Apply a segment's redirections to the inherited sink.
fn redirect(
    host: &HostState,
    cwd: &WinPath,
    seg: &Segment,
    inherited: &Sink,
) -> Result<Sink, PathError> {
    let open = |path: &str, append: bool| -> Result<Dest, PathError> {
        let local = cmd::local_unc(path, &host.host.name, host.host.address);
        let path = local.as_deref().unwrap_or(path);
        let (_, real) = host.tree.resolve(path, cwd, true)?;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(real)
            .map_err(|_| PathError::Denied)?;
        Ok(Dest::File(Arc::new(f)))
    };
    let mut sink = inherited.clone();
    if let Some(t) = &seg.stdout {
        sink.out = match t {
            Target::Null => Dest::Null,
            Target::File { path, append } => open(path, *append)?,
            Target::Stdout => sink.out.clone(),
        };
    }
    if let Some(t) = &seg.stderr {
        sink.err = match t {
            Target::Null => Dest::Null,
            Target::File { path, append } => open(path, *append)?,
            Target::Stdout => sink.out.clone(),
        };
    }
    Ok(sink)
}

/// Run a `cmd` line; returns its exit code.
fn run_line<'a>(
    command: &'a Arc<Command>,
    ctx: &'a ExecCtx,
    mut cwd: WinPath,
    line: &'a str,
    sink: &'a Sink,
    stdin: &'a mut Option<mpsc::Receiver<Vec<u8>>>,
    depth: usize,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = i32> + Send + 'a>> {
    Box::pin(async move {
        let expanded = expand_vars(ctx, line, 0);
        let segs = match cmd::split_line(&expanded) {
            Ok(s) => s,
            Err(msg) => {
                write_dest(command, &sink.err, format!("{msg}\r\n").into_bytes()).await;
                return 255;
            }
        };
        let mut code = 0;
        for seg in segs {
            match seg.op {
                Op::Always => {}
                Op::IfOk if code != 0 => continue,
                Op::IfFail if code == 0 => continue,
                _ => {}
            }
            let mut seg = seg;
            if ctx.delayed {
                seg.text = expand_with(ctx, &seg.text, '!', code);
            }
            let seg_sink = match redirect(&ctx.host, &cwd, &seg, sink) {
                Ok(s) => s,
                Err(e) => {
                    write_dest(command, &sink.err, format!("{e}\r\n").into_bytes()).await;
                    code = 1;
                    continue;
                }
            };
            let (c, exit) =
                run_segment(command, ctx, &mut cwd, &seg.text, &seg_sink, stdin, depth).await;
            code = c;
            if exit {
                break;
            }
        }
        code
    })
}

/// What `cmd /c` does with a quoted remainder: keep it when it is exactly one
/// quoted existing program followed by arguments, else strip the first and
/// the last quote.
fn strip_cmd_quotes(host: &HostState, cwd: &WinPath, rest: &str) -> String {
    let t = rest.trim_start();
    if !t.starts_with('"') {
        return rest.to_string();
    }
    let quotes = t.matches('"').count();
    if quotes == 2 {
        if let Some(end) = t[1..].find('"') {
            let inner = &t[1..1 + end];
            if inner.contains([' ', '\t'])
                && !inner.contains(['&', '<', '>', '(', ')', '@', '^', '|'])
                && host
                    .tree
                    .resolve(inner, cwd, true)
                    .map(|(_, r)| r.is_file())
                    .unwrap_or(false)
            {
                return t.to_string();
            }
        }
    }
    let mut s = t[1..].to_string();
    if let Some(last) = s.rfind('"') {
        s.remove(last);
    }
    s
}

/// Runs a batch file: its lines one by one through [`run_line`] (echo off: lines are not
/// shown), `exit /b N` ending it; at most [`MAX_BATCH_FILE`] bytes are read.
async fn run_batch(
    command: &Arc<Command>,
    ctx: &ExecCtx,
    cwd: &mut WinPath,
    program: &str,
    sink: &Sink,
    stdin: &mut Option<mpsc::Receiver<Vec<u8>>>,
    depth: usize,
) -> i32 {
    if depth >= MAX_NESTING {
        write_dest(command, &sink.err, b"cmd: nesting too deep\r\n".to_vec()).await;
        return 1;
    }
    let real = match ctx.host.tree.resolve(program, cwd, true) {
        Ok((_, real)) if real.is_file() => real,
        _ => {
            let out = cmd::not_recognized(program);
            write_dest(command, &sink.err, out.stderr).await;
            return out.code;
        }
    };
    let text = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        use std::io::Read as _;
        let mut buf = Vec::new();
        std::fs::File::open(real)?
            .take(MAX_BATCH_FILE)
            .read_to_end(&mut buf)?;
        Ok(buf)
    })
    .await;
    let Ok(Ok(text)) = text else {
        write_dest(command, &sink.err, b"Access is denied.\r\n".to_vec()).await;
        return 1;
    };
    let text = String::from_utf8_lossy(&text).into_owned();
    let mut code = 0;
    for raw in text.lines() {
        let line = raw.trim();
        let lower = line.to_ascii_lowercase();
        if line.is_empty()
            || line.starts_with("::")
            || lower == "rem"
            || lower.starts_with("rem ")
            || lower.trim_start_matches('@') == "echo off"
        {
            continue;
        }
        let segs_exit = cmd::split_line(line)
            .map(|segs| {
                segs.iter().any(|s| {
                    let (p, _) = cmd::split_program(s.text.trim_start_matches('@'));
                    p.map(|p| cmd::command_name(&p) == "exit").unwrap_or(false)
                })
            })
            .unwrap_or(false);
        code = run_line(command, ctx, cwd.clone(), line, sink, stdin, depth + 1).await;
        if segs_exit {
            break;
        }
    }
    code
}

async fn run_segment(
    command: &Arc<Command>,
    ctx: &ExecCtx,
    cwd: &mut WinPath,
    text: &str,
    sink: &Sink,
    stdin: &mut Option<mpsc::Receiver<Vec<u8>>>,
    depth: usize,
) -> (i32, bool) {
    let text = text.trim_start_matches('@').trim();
    let (program, rest) = cmd::split_program(text);
    let Some(program) = program else {
        return (0, false);
    };
    let name = cmd::command_name(&program);
    if name == "cmd" || name == "cmd.exe" {
        // Switches up to /c (or /k); the rest is the line to run.
        let mut remaining = rest;
        let mut inner_ctx = ctx.clone();
        loop {
            let r = remaining.trim_start();
            if r.len() >= 2 && r.starts_with('/') {
                let sw_end = r.find([' ', '\t']).unwrap_or(r.len());
                let sw = r[1..sw_end].to_ascii_lowercase();
                remaining = &r[sw_end..];
                match sw.as_str() {
                    "v:on" => inner_ctx.delayed = true,
                    "v:off" => inner_ctx.delayed = false,
                    _ => {}
                }
                if sw == "c" || sw == "k" {
                    if depth >= MAX_NESTING {
                        write_dest(command, &sink.err, b"cmd: nesting too deep\r\n".to_vec()).await;
                        return (1, false);
                    }
                    let inner = strip_cmd_quotes(&ctx.host, cwd, remaining);
                    let code = run_line(
                        command,
                        &inner_ctx,
                        cwd.clone(),
                        &inner,
                        sink,
                        stdin,
                        depth + 1,
                    )
                    .await;
                    return (code, false);
                }
                continue;
            }
            break;
        }
        write_dest(
            command,
            &sink.out,
            b"Microsoft Windows [Version 10.0.17763.1]\r\n(c) 2018 Microsoft Corporation. All rights reserved.\r\n".to_vec(),
        )
        .await;
        return (0, false);
    }
    if name == "start" {
        return match cmd::parse_start(rest) {
            Ok(line) => {
                spawn_detached(ctx.clone(), cwd.clone(), line);
                (0, false)
            }
            Err(msg) => {
                write_dest(command, &sink.err, format!("{msg}\r\n").into_bytes()).await;
                (1, false)
            }
        };
    }
    if matches!(
        name.as_str(),
        "taskkill" | "taskkill.exe" | "tasklist" | "tasklist.exe"
    ) {
        let procs = ctx.host.processes();
        let out = if name.starts_with("taskkill") {
            cmd::taskkill(rest, &procs, |pid| {
                // SAFETY: killpg has no memory-safety preconditions; the pid is one of this
                // host's process group leaders.
                unsafe { libc::killpg(pid, libc::SIGKILL) == 0 }
            })
        } else {
            cmd::tasklist(rest, &procs)
        };
        write_dest(command, &sink.out, out.stdout).await;
        write_dest(command, &sink.err, out.stderr).await;
        return (out.code, false);
    }
    {
        let lower = program.to_ascii_lowercase();
        if lower.ends_with(".bat") || lower.ends_with(".cmd") {
            return (
                run_batch(command, ctx, cwd, &program, sink, stdin, depth).await,
                false,
            );
        }
    }
    if cmd::is_builtin(&name) || name == "echo." {
        let host = Arc::clone(&ctx.host);
        let args = cmd::split_rest(rest);
        let raw = rest.to_string();
        let mut new_cwd = cwd.clone();
        let system = ctx.system;
        let result = tokio::task::spawn_blocking(move || {
            let machine = Machine {
                host: &host.host.name,
                user: &host.host.username,
                system,
            };
            let out = cmd::run_builtin(&name, &raw, &args, &host.tree, &mut new_cwd, &machine);
            (out, new_cwd)
        })
        .await;
        let Ok((out, new_cwd)) = result else {
            return (1, false);
        };
        *cwd = new_cwd;
        write_dest(command, &sink.out, out.stdout).await;
        write_dest(command, &sink.err, out.stderr).await;
        return (out.code, out.exit);
    }
    // A program of the host tree?
    let lower = program.to_ascii_lowercase();
    let candidates: Vec<String> = if lower.ends_with(".exe") {
        vec![program.clone()]
    } else if !lower.rsplit(['\\', '/']).next().unwrap_or("").contains('.') {
        vec![format!("{program}.exe")]
    } else {
        Vec::new()
    };
    for cand in candidates {
        match ctx.host.tree.resolve(&cand, cwd, true) {
            Ok((_, real)) if real.is_file() => {
                return (
                    run_exe(command, ctx, cwd, &real, rest, sink, stdin).await,
                    false,
                );
            }
            Ok(_) => {}
            Err(PathError::Denied) => {
                write_dest(command, &sink.err, b"Access is denied.\r\n".to_vec()).await;
                return (1, false);
            }
            Err(PathError::Invalid) => {}
        }
    }
    let out = cmd::not_recognized(&program);
    write_dest(command, &sink.err, out.stderr).await;
    (out.code, false)
}

/// Longest a program the simulator itself runs in a Wine prefix (pslist.exe) may take.
const WINE_HELPER_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs one command line on a Wine host (see [`super::wine`]): an emulated shape is answered
/// here, anything else goes byte for byte to Wine's `cmd.exe /c` through `launch.exe`, in its
/// own process group (terminate kills the group; `launch.exe` also holds cmd's job object,
/// which wineserver kills when the launcher dies). Output is queued under the command's cap.
async fn run_wine(
    command: &Arc<Command>,
    ctx: &ExecCtx,
    wine: &super::wine::WineExec,
    line: &str,
) -> i32 {
    use super::wine::{self as emu, Shape};
    let out = Dest::Queue(StreamKind::Stdout);
    let err = Dest::Queue(StreamKind::Stderr);
    let shape = emu::classify(line);
    let answer = |o: Vec<u8>, e: Vec<u8>, code: i32| async move {
        write_dest(command, &out, o).await;
        write_dest(command, &err, e).await;
        code
    };
    match shape {
        Shape::Real => {}
        Shape::AclProof => {
            let mut stdin = None;
            return run_line(
                command,
                ctx,
                WinPath::root(),
                line,
                &Sink::queue(),
                &mut stdin,
                0,
            )
            .await;
        }
        Shape::Refused(msg) => {
            return answer(Vec::new(), format!("{msg}\r\n").into_bytes(), 1).await
        }
        Shape::ProcessCheck(pid) => {
            let mut proc = tokio::process::Command::new(&wine.wine64);
            proc.arg(&wine.pslist);
            return match wine_capture(command, wine, proc).await {
                Ok((0, listing)) => {
                    let procs = emu::parse_pslist(&listing);
                    answer(emu::process_check_output(&procs, pid), Vec::new(), 0).await
                }
                Ok((code, _)) => {
                    let msg = format!("pushscan-lab: pslist.exe failed (exit {code})\r\n");
                    answer(Vec::new(), msg.into_bytes(), 1).await
                }
                Err(e) => answer(Vec::new(), format!("{e}\r\n").into_bytes(), 1).await,
            };
        }
        Shape::Hashfile { path, alg } => {
            let drive_c = wine.drive_c();
            let r = tokio::task::spawn_blocking(move || emu::hashfile(&drive_c, &path, alg)).await;
            let (o, e, c) = r.unwrap_or_else(|_| (Vec::new(), b"internal error\r\n".to_vec(), 1));
            return answer(o, e, c).await;
        }
        netsh => {
            let store = wine.firewall_store.clone();
            let r = tokio::task::spawn_blocking(move || emu::netsh(&store, &netsh)).await;
            let (o, e, c) = r.unwrap_or_else(|_| (Vec::new(), b"internal error\r\n".to_vec(), 1));
            return answer(o, e, c).await;
        }
    }

    // Real Wine: `launch.exe` reads the line from the environment (Wine would re-quote argv).
    let _ = std::fs::create_dir_all(&wine.run_dir);
    let exit_file = wine
        .run_dir
        .join(format!("exit-{}", uuid::Uuid::new_v4().simple()));
    let home = wine.drive_c().join("users").join(&wine.user);
    let mut proc = tokio::process::Command::new(&wine.wine64);
    proc.arg(&wine.launch)
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        // The shell's variables reach Windows, but none that steer the Linux loader or Wine
        // itself (they are applied to the Linux `wine64` process).
        .envs(
            ctx.env
                .iter()
                .filter(|(k, _)| {
                    let k = k.to_ascii_uppercase();
                    !k.starts_with("LD_") && !k.starts_with("WINE")
                })
                .map(|(k, v)| (k, v)),
        )
        .envs(wine.env.iter().map(|(k, v)| (k, v)))
        .env("PUSHSCAN_LAB_CMDLINE", line)
        .env("PUSHSCAN_LAB_EXITFILE", super::wine::z_path(&exit_file))
        .current_dir(if home.is_dir() { home } else { wine.drive_c() })
        .process_group(0)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = match proc.spawn() {
        Ok(c) => c,
        Err(e) => {
            return answer(
                Vec::new(),
                format!("cannot start Wine: {e}\r\n").into_bytes(),
                1,
            )
            .await
        }
    };
    if let Some(pgid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        lock(&command.groups).push(pgid);
    }
    let out_pipe = child.stdout.take();
    let err_pipe = child.stderr.take();
    let pump_out = async {
        if let Some(p) = out_pipe {
            pump(command, StreamKind::Stdout, p).await;
        }
    };
    let pump_err = async {
        if let Some(p) = err_pipe {
            pump(command, StreamKind::Stderr, p).await;
        }
    };
    let pumps = async { tokio::join!(pump_out, pump_err) };
    tokio::pin!(pumps);
    let wait = child.wait();
    tokio::pin!(wait);
    // A Windows process the command started (a service Wine boots on demand) can inherit the
    // pipes and hold them open after the command ended: EOF is then waited for only briefly.
    let status = tokio::select! {
        st = &mut wait => {
            let _ = tokio::time::timeout(Duration::from_secs(2), &mut pumps).await;
            st
        }
        _ = &mut pumps => wait.await,
    };
    // The full 32-bit exit code (a Linux status keeps 8 bits).
    let full = tokio::fs::read(&exit_file)
        .await
        .ok()
        .filter(|b| b.len() <= 16)
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| t.trim().parse::<u32>().ok());
    let _ = tokio::fs::remove_file(&exit_file).await;
    match (full, status) {
        (Some(code), _) => code as i32,
        (None, Ok(st)) => st.code().unwrap_or(1),
        (None, Err(_)) => 1,
    }
}

/// Runs a helper program of the simulator in a Wine prefix (killed with the command, bounded
/// output and time): (exit code, stdout).
async fn wine_capture(
    command: &Arc<Command>,
    wine: &super::wine::WineExec,
    mut proc: tokio::process::Command,
) -> Result<(i32, Vec<u8>), String> {
    proc.env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .envs(wine.env.iter().map(|(k, v)| (k, v)))
        .current_dir(wine.drive_c())
        .process_group(0)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = proc
        .spawn()
        .map_err(|e| format!("cannot start Wine: {e}"))?;
    if let Some(pgid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        lock(&command.groups).push(pgid);
    }
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let read = async {
        let mut kept = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match stdout.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = super::wine::PARSE_CAP.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
            }
        }
        kept
    };
    let run = async { tokio::join!(read, child.wait()) };
    match tokio::time::timeout(WINE_HELPER_TIMEOUT, run).await {
        Ok((kept, Ok(st))) => Ok((st.code().unwrap_or(1), kept)),
        Ok((_, Err(e))) => Err(format!("waiting for Wine: {e}")),
        Err(_) => Err("a Wine helper did not finish within 60 s".to_string()),
    }
}

fn stdio_for(dest: &Dest) -> std::process::Stdio {
    match dest {
        Dest::Queue(_) => std::process::Stdio::piped(),
        Dest::Null => std::process::Stdio::null(),
        Dest::File(f) => match f.try_clone() {
            Ok(f) => std::process::Stdio::from(f),
            Err(_) => std::process::Stdio::null(),
        },
    }
}

async fn pump<R: tokio::io::AsyncRead + Unpin>(command: &Command, kind: StreamKind, mut r: R) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => command.push(kind, buf[..n].to_vec()).await,
        }
    }
}

async fn run_exe(
    command: &Arc<Command>,
    ctx: &ExecCtx,
    cwd: &WinPath,
    exe: &std::path::Path,
    rest: &str,
    sink: &Sink,
    stdin: &mut Option<mpsc::Receiver<Vec<u8>>>,
) -> i32 {
    let host = &ctx.host;
    let mut args: Vec<String> = Vec::new();
    for a in cmd::split_rest(rest) {
        if paths::looks_absolute(&a) {
            match host.tree.resolve(&a, cwd, true) {
                Ok((_, real)) => args.push(real.to_string_lossy().into_owned()),
                Err(_) => {
                    write_dest(command, &sink.err, b"Access is denied.\r\n".to_vec()).await;
                    return 1;
                }
            }
        } else {
            args.push(a);
        }
    }
    args.extend(host.host.checker_args.iter().cloned());
    let real_cwd: PathBuf = host
        .tree
        .map(cwd, true)
        .ok()
        .filter(|p| p.is_dir())
        .unwrap_or_else(|| host.tree.drive().to_path_buf());
    let mut proc = tokio::process::Command::new("/bin/sh");
    proc.arg(exe)
        .args(&args)
        .current_dir(&real_cwd)
        .process_group(0)
        .kill_on_drop(true)
        .env("COMPUTERNAME", &host.host.name)
        .env("USERNAME", &host.host.username)
        .stdout(stdio_for(&sink.out))
        .stderr(stdio_for(&sink.err))
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        });
    for (k, v) in &ctx.env {
        proc.env(k, v);
    }
    let mut child = match proc.spawn() {
        Ok(c) => c,
        Err(e) => {
            write_dest(command, &sink.err, format!("{e}\r\n").into_bytes()).await;
            return 1;
        }
    };
    if let Some(pid) = child.id() {
        if let Ok(pgid) = i32::try_from(pid) {
            lock(&command.groups).push(pgid);
            let image = exe
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            lock(&command.images).push((pgid, image));
        }
    }
    let writer = match (child.stdin.take(), stdin.take()) {
        (Some(mut pipe), Some(mut rx)) => {
            let pending = Arc::clone(&command.stdin_pending);
            Some(tokio::spawn(async move {
                while let Some(chunk) = rx.recv().await {
                    let written = pipe.write_all(&chunk).await;
                    pending.fetch_sub(chunk.len(), Ordering::SeqCst);
                    if written.is_err() {
                        break;
                    }
                }
                let _ = pipe.shutdown().await;
            }))
        }
        _ => None,
    };
    let out_pipe = child.stdout.take();
    let err_pipe = child.stderr.take();
    let out_kind = match sink.out {
        Dest::Queue(k) => k,
        _ => StreamKind::Stdout,
    };
    let err_kind = match sink.err {
        Dest::Queue(k) => k,
        _ => StreamKind::Stderr,
    };
    let pump_out = async {
        if let Some(p) = out_pipe {
            pump(command, out_kind, p).await;
        }
    };
    let pump_err = async {
        if let Some(p) = err_pipe {
            pump(command, err_kind, p).await;
        }
    };
    let (_, _, status) = tokio::join!(pump_out, pump_err, child.wait());
    if let Some(w) = writer {
        w.abort();
    }
    match status {
        Ok(st) => match st.code() {
            Some(c) => c,
            None => {
                use std::os::unix::process::ExitStatusExt;
                match st.signal() {
                    // STATUS_CONTROL_C_EXIT, as a process ended by Ctrl+C reports.
                    Some(libc::SIGINT) => 0xC000_013Au32 as i32,
                    _ => 1,
                }
            }
        },
        Err(_) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(dir: &std::path::Path) -> Arc<HostState> {
        Arc::new(
            HostState::new(
                SimHost {
                    name: "PC-1".into(),
                    address: std::net::Ipv4Addr::new(127, 0, 0, 1),
                    root: dir.to_path_buf(),
                    checker_args: vec![],
                    username: "lab".into(),
                    password: "pw".into(),
                    latency: Duration::ZERO,
                    enabled: true,
                    wine: None,
                },
                Limits {
                    max_shells_per_user: 2,
                    max_processes_per_shell: 1,
                    idle_timeout: Duration::from_secs(3600),
                },
            )
            .unwrap(),
        )
    }

    fn req(xml_body: &str, action: &str, shell: Option<&str>) -> Request {
        let sel = shell
            .map(|s| {
                format!(
                    "<w:SelectorSet><w:Selector Name=\"ShellId\">{s}</w:Selector></w:SelectorSet>"
                )
            })
            .unwrap_or_default();
        let xml = format!(
            "<s:Envelope xmlns:s=\"{}\" xmlns:a=\"{}\" xmlns:w=\"{}\" xmlns:rsp=\"{}\"><s:Header>\
             <a:Action>{action}</a:Action><w:ResourceURI>{}</w:ResourceURI>\
             <a:MessageID>uuid:1</a:MessageID><w:OperationTimeout>PT0.2S</w:OperationTimeout>{sel}\
             </s:Header><s:Body>{xml_body}</s:Body></s:Envelope>",
            soap::NS_SOAP,
            soap::NS_ADDRESSING,
            soap::NS_WSMAN,
            soap::NS_SHELL,
            soap::RESOURCE_CMD
        );
        soap::parse_request(&xml).unwrap()
    }

    fn between<'a>(s: &'a str, a: &str, b: &str) -> &'a str {
        let start = s.find(a).unwrap() + a.len();
        let end = s[start..].find(b).unwrap() + start;
        &s[start..end]
    }

    #[tokio::test]
    async fn shell_lifecycle_quotas_and_faults() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        let (_, body) = h
            .dispatch(
                &req("<rsp:Shell/>", soap::ACTION_CREATE, None),
                "lab",
                "127.0.0.1",
            )
            .await
            .unwrap();
        let shell_id = between(&body, "<rsp:ShellId>", "</rsp:ShellId>").to_string();
        h.dispatch(&req("<rsp:Shell/>", soap::ACTION_CREATE, None), "LAB", "x")
            .await
            .unwrap();
        let err = h
            .dispatch(&req("<rsp:Shell/>", soap::ACTION_CREATE, None), "lab", "x")
            .await
            .unwrap_err();
        assert_eq!(err, Fault::too_many_shells(2));

        let cmdline =
            |c: &str| format!("<rsp:CommandLine><rsp:Command>{c}</rsp:Command></rsp:CommandLine>");
        let (_, body) = h
            .dispatch(
                &req(
                    &cmdline("cmd /c echo hi&amp;exit /b 3"),
                    soap::ACTION_COMMAND,
                    Some(&shell_id),
                ),
                "lab",
                "x",
            )
            .await
            .unwrap();
        let cid = between(&body, "<rsp:CommandId>", "</rsp:CommandId>").to_string();
        let recv = format!("<rsp:Receive><rsp:DesiredStream CommandId=\"{cid}\">stdout stderr</rsp:DesiredStream></rsp:Receive>");
        let mut all = String::new();
        loop {
            match h
                .dispatch(
                    &req(&recv, soap::ACTION_RECEIVE, Some(&shell_id)),
                    "lab",
                    "x",
                )
                .await
            {
                Ok((_, b)) => {
                    all.push_str(&b);
                    if b.contains("CommandState/Done") {
                        break;
                    }
                }
                Err(f) => assert_eq!(f.subcode, "w:TimedOut"),
            }
        }
        assert!(all.contains("aGkNCg=="), "{all}"); // "hi\r\n"
        assert!(all.contains("<rsp:ExitCode>3</rsp:ExitCode>"), "{all}");

        // One running command at most (quota 1): a sleeping .exe.
        std::fs::write(h.tree.drive().join("sleep.exe"), "sleep 30\n").unwrap();
        let (_, body) = h
            .dispatch(
                &req(
                    &cmdline(r"C:\sleep.exe"),
                    soap::ACTION_COMMAND,
                    Some(&shell_id),
                ),
                "lab",
                "x",
            )
            .await
            .unwrap();
        let sleeper = between(&body, "<rsp:CommandId>", "</rsp:CommandId>").to_string();
        let err = h
            .dispatch(
                &req(&cmdline("echo x"), soap::ACTION_COMMAND, Some(&shell_id)),
                "lab",
                "x",
            )
            .await
            .unwrap_err();
        assert_eq!(err, Fault::too_many_processes(1));
        let recv = format!("<rsp:Receive><rsp:DesiredStream CommandId=\"{sleeper}\">stdout</rsp:DesiredStream></rsp:Receive>");
        let err = h
            .dispatch(
                &req(&recv, soap::ACTION_RECEIVE, Some(&shell_id)),
                "lab",
                "x",
            )
            .await
            .unwrap_err();
        assert_eq!(err, Fault::timed_out());

        let signal = format!(
            "<rsp:Signal CommandId=\"{sleeper}\"><rsp:Code>{}</rsp:Code></rsp:Signal>",
            soap::SIGNAL_TERMINATE
        );
        h.dispatch(
            &req(&signal, soap::ACTION_SIGNAL, Some(&shell_id)),
            "lab",
            "x",
        )
        .await
        .unwrap();
        let err = h
            .dispatch(
                &req(&recv, soap::ACTION_RECEIVE, Some(&shell_id)),
                "lab",
                "x",
            )
            .await
            .unwrap_err();
        assert_eq!(err.subcode, "w:InvalidSelectors");

        h.dispatch(&req("", soap::ACTION_DELETE, Some(&shell_id)), "lab", "x")
            .await
            .unwrap();
        let err = h
            .dispatch(&req("", soap::ACTION_DELETE, Some(&shell_id)), "lab", "x")
            .await
            .unwrap_err();
        assert_eq!(err, Fault::shell_not_found(&shell_id));
        let err = h
            .dispatch(
                &req("", "http://example/Other", Some(&shell_id)),
                "lab",
                "x",
            )
            .await
            .unwrap_err();
        assert_eq!(err.subcode, "a:ActionNotSupported");

        let denied =
            "<rsp:Shell><rsp:WorkingDirectory>C:\\..\\..</rsp:WorkingDirectory></rsp:Shell>";
        let err = h
            .dispatch(&req(denied, soap::ACTION_CREATE, None), "lab", "x")
            .await
            .unwrap_err();
        assert_eq!(err, Fault::access_denied());
        let missing =
            "<rsp:Shell><rsp:WorkingDirectory>C:\\nope</rsp:WorkingDirectory></rsp:Shell>";
        let err = h
            .dispatch(&req(missing, soap::ACTION_CREATE, None), "lab", "x")
            .await
            .unwrap_err();
        assert_eq!(err, Fault::invalid_directory());
    }

    #[tokio::test]
    async fn big_output_streams_in_bounded_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        let big: Vec<u8> = (0..3 * OUTPUT_CAP as u32)
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(h.tree.drive().join("big.bin"), &big).unwrap();
        let (_, body) = h
            .dispatch(&req("<rsp:Shell/>", soap::ACTION_CREATE, None), "lab", "x")
            .await
            .unwrap();
        let shell_id = between(&body, "<rsp:ShellId>", "</rsp:ShellId>").to_string();
        let cmdline = "<rsp:CommandLine><rsp:Command>type</rsp:Command>\
                       <rsp:Arguments>C:\\BIG.BIN</rsp:Arguments></rsp:CommandLine>";
        let (_, body) = h
            .dispatch(
                &req(cmdline, soap::ACTION_COMMAND, Some(&shell_id)),
                "lab",
                "x",
            )
            .await
            .unwrap();
        let cid = between(&body, "<rsp:CommandId>", "</rsp:CommandId>").to_string();
        let recv = format!(
            "<rsp:Receive><rsp:DesiredStream CommandId=\"{cid}\">stdout</rsp:DesiredStream></rsp:Receive>"
        );
        let mut got = Vec::new();
        let mut replies = 0;
        loop {
            let Ok((_, b)) = h
                .dispatch(
                    &req(&recv, soap::ACTION_RECEIVE, Some(&shell_id)),
                    "lab",
                    "x",
                )
                .await
            else {
                continue;
            };
            replies += 1;
            let wrapped = format!("<r xmlns:rsp=\"{}\">{b}</r>", soap::NS_SHELL);
            let root = soap::parse_xml(&wrapped).unwrap();
            let resp = root.child(soap::NS_SHELL, "ReceiveResponse").unwrap();
            for st in resp.children_named(soap::NS_SHELL, "Stream") {
                let data = base64::engine::general_purpose::STANDARD
                    .decode(st.text.trim())
                    .unwrap();
                assert!(data.len() <= MAX_RECEIVE_CHUNK);
                got.extend_from_slice(&data);
            }
            if b.contains("CommandState/Done") {
                break;
            }
        }
        assert_eq!(got.len(), big.len());
        assert!(got == big);
        assert!(replies >= big.len() / MAX_RECEIVE_CHUNK);
    }

    #[tokio::test]
    async fn idle_shells_are_reaped() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        let create = "<rsp:Shell><rsp:IdleTimeOut>PT0.001S</rsp:IdleTimeOut></rsp:Shell>";
        h.dispatch(&req(create, soap::ACTION_CREATE, None), "lab", "x")
            .await
            .unwrap();
        assert_eq!(h.shell_count(), 1);
        while h.shell_count() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            h.reap_idle();
        }
    }
}
