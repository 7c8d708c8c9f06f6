//! One svcctl pipe: the handshake, the DCE/RPC association and the MS-SCMR calls.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use tokio::io::AsyncWriteExt as _;
use tokio::net::UnixStream;

use super::rpc::{self, ContextResult, Reader, Writer};
use super::{npam, Event, HostScm, ScmDb, ServiceRecord};
use crate::spec::SvcctlMode;
use crate::winrm::ntlm::{Acceptor, Step};

/// MS-SCMR 367abb81-9844-35f1-ad32-98f038001003 v2.0, as on the wire.
const SCMR: [u8; 20] = [
    0x81, 0xbb, 0x7a, 0x36, 0x44, 0x98, 0xf1, 0x35, 0xad, 0x32, 0x98, 0xf0, 0x38, 0x00, 0x10, 0x03,
    0x02, 0x00, 0x00, 0x00,
];

const ERROR_ACCESS_DENIED: u32 = 5;
const ERROR_INVALID_HANDLE: u32 = 6;
const ERROR_INVALID_PARAMETER: u32 = 87;
const ERROR_INSUFFICIENT_BUFFER: u32 = 122;
const ERROR_INVALID_NAME: u32 = 123;
const ERROR_SERVICE_REQUEST_TIMEOUT: u32 = 1053;
const ERROR_SERVICE_ALREADY_RUNNING: u32 = 1056;
const ERROR_SERVICE_DOES_NOT_EXIST: u32 = 1060;
const ERROR_SERVICE_NOT_ACTIVE: u32 = 1062;
const ERROR_SERVICE_MARKED_FOR_DELETE: u32 = 1072;
const ERROR_SERVICE_EXISTS: u32 = 1073;

/// RPC_C_AUTHN_WINNT and the levels.
const AUTHN_WINNT: u8 = 10;
const LEVEL_CONNECT: u8 = 2;

/// Most handles one pipe may hold open.
const MAX_HANDLES: usize = 1024;
/// Longest service name (SC_MAX_NAME_LENGTH) and binary path accepted.
const MAX_NAME: usize = 256;
const MAX_PATH: usize = 8 * 1024;
/// Most bytes buffered from the pipe without a complete PDU.
const MAX_PENDING: usize = 2 * rpc::MAX_FRAG + 4;

#[derive(Clone, Debug)]
enum Handle {
    Manager,
    Service(String),
}

struct Conn {
    host: Arc<HostScm>,
    handles: HashMap<[u8; 20], Handle>,
    context: Option<u16>,
    max_xmit: usize,
    ntlm: Option<Acceptor>,
    denied: bool,
    /// Request being reassembled: (call id, opnum, context, stub).
    partial: Option<(u32, u16, u16, Vec<u8>)>,
}

pub(crate) async fn connection(
    mut stream: UnixStream,
    hosts: Arc<HashMap<Ipv4Addr, Arc<HostScm>>>,
) -> Result<()> {
    let req = npam::read_request(&mut stream)
        .await
        .context("named pipe auth request")?;
    let auth = npam::parse(&req).map_err(|e| anyhow::anyhow!("named pipe auth: {e}"))?;
    let Some(host) = super::local_v4(&auth).and_then(|ip| hosts.get(&ip).cloned()) else {
        bail!("svcctl opened on {:?}, not a lab host", auth.local_addr);
    };
    if host.host.mode == SvcctlMode::Missing {
        // smbd fails the open with this status, as for a pipe nobody serves.
        stream
            .write_all(&npam::reply_status(
                auth.level,
                npam::STATUS_OBJECT_NAME_NOT_FOUND,
            ))
            .await?;
        return Ok(());
    }
    stream.write_all(&npam::reply(auth.level)).await?;
    let mut conn = Conn {
        host,
        handles: HashMap::new(),
        context: None,
        max_xmit: rpc::MAX_FRAG,
        ntlm: None,
        denied: false,
        partial: None,
    };
    let mut pending: Vec<u8> = Vec::new();
    let result = async {
        while let Some(msg) = npam::read_message(&mut stream).await? {
            pending.extend_from_slice(&msg);
            loop {
                if pending.len() < rpc::HEADER_LEN {
                    break;
                }
                let h = rpc::header(&pending).map_err(|e| anyhow::anyhow!("{e}"))?;
                if h.frag_len > rpc::MAX_FRAG + 1024 {
                    bail!("fragment of {} bytes", h.frag_len);
                }
                if pending.len() < h.frag_len {
                    break;
                }
                let pdu: Vec<u8> = pending.drain(..h.frag_len).collect();
                for out in conn.pdu(&pdu, &h).await? {
                    npam::write_message(&mut stream, &out).await?;
                }
            }
            if pending.len() > MAX_PENDING {
                bail!("{} bytes without a complete PDU", pending.len());
            }
        }
        Ok::<(), anyhow::Error>(())
    }
    .await;
    conn.close_all().await;
    result
}

fn new_handle() -> [u8; 20] {
    let mut h = [0u8; 20];
    h[4..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    h
}

fn status(w: &mut Writer, state: u32) {
    // SERVICE_STATUS: type (own process), state, controls accepted, exit codes,
    // checkpoint, wait hint.
    for v in [0x10, state, 0, 0, 0, 0, 0] {
        w.u32(v);
    }
}

fn state_code(s: &str) -> u32 {
    match s {
        "start_pending" => 2,
        "running" => 4,
        _ => 1,
    }
}

impl Conn {
    async fn pdu(&mut self, pdu: &[u8], h: &rpc::Header) -> Result<Vec<Vec<u8>>> {
        let body = rpc::body(pdu, h).map_err(|e| anyhow::anyhow!("{e}"))?;
        match h.ptype {
            rpc::PTYPE_BIND | rpc::PTYPE_ALTER_CONTEXT => self.bind(pdu, h, body),
            rpc::PTYPE_AUTH3 => {
                let auth = rpc::auth_trailer(pdu, h).map_err(|e| anyhow::anyhow!("{e}"))?;
                let ok = match (&mut self.ntlm, auth) {
                    (Some(acceptor), Some(a)) => {
                        matches!(acceptor.step(&a.token), Ok(Step::Done))
                    }
                    _ => false,
                };
                if !ok {
                    self.denied = true;
                }
                Ok(Vec::new())
            }
            rpc::PTYPE_REQUEST => self.request(h, body).await,
            other => bail!("unexpected PDU type {other}"),
        }
    }

    fn bind(&mut self, pdu: &[u8], h: &rpc::Header, body: &[u8]) -> Result<Vec<Vec<u8>>> {
        let bind = rpc::parse_bind(body).map_err(|e| anyhow::anyhow!("bind: {e}"))?;
        let auth = rpc::auth_trailer(pdu, h).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut reply_auth = None;
        if let Some(a) = auth {
            if a.auth_type != AUTHN_WINNT || a.level > LEVEL_CONNECT {
                return Ok(vec![rpc::bind_nak(h.call_id, 8)]);
            }
            let mut acceptor = Acceptor::new(&self.host.host.username, &self.host.host.password)
                .map_err(|e| anyhow::anyhow!("NTLM: {e}"))?;
            match acceptor.step(&a.token) {
                Ok(Step::Challenge(token)) => {
                    reply_auth = Some(rpc::Auth {
                        auth_type: a.auth_type,
                        level: a.level,
                        pad_len: 0,
                        context_id: a.context_id,
                        token,
                    });
                    self.ntlm = Some(acceptor);
                }
                _ => return Ok(vec![rpc::bind_nak(h.call_id, 8)]),
            }
        }
        let results: Vec<ContextResult> = bind
            .contexts
            .iter()
            .map(|c| {
                if c.abstract_syntax != SCMR {
                    ContextResult::Reject(1)
                } else if c.transfer_syntaxes.contains(&rpc::NDR20) {
                    ContextResult::Accept(rpc::NDR20)
                } else {
                    ContextResult::Reject(2)
                }
            })
            .collect();
        for (c, r) in bind.contexts.iter().zip(&results) {
            if matches!(r, ContextResult::Accept(_)) && self.context.is_none() {
                self.context = Some(c.id);
            }
        }
        if h.ptype == rpc::PTYPE_BIND {
            self.max_xmit = usize::from(bind.max_recv).clamp(64, rpc::MAX_FRAG);
        }
        let max = self.max_xmit as u16;
        let ptype = if h.ptype == rpc::PTYPE_BIND {
            rpc::PTYPE_BIND_ACK
        } else {
            rpc::PTYPE_ALTER_CONTEXT_RESP
        };
        let assoc = if bind.assoc_group == 0 {
            0x5350_0001
        } else {
            bind.assoc_group
        };
        Ok(vec![rpc::bind_ack(
            ptype,
            h.call_id,
            max,
            max,
            assoc,
            r"\PIPE\svcctl",
            &results,
            reply_auth.as_ref(),
        )])
    }

    async fn request(&mut self, h: &rpc::Header, body: &[u8]) -> Result<Vec<Vec<u8>>> {
        let req = rpc::parse_request(body, h.flags).map_err(|e| anyhow::anyhow!("{e}"))?;
        let first = h.flags & rpc::PFC_FIRST_FRAG != 0;
        let last = h.flags & rpc::PFC_LAST_FRAG != 0;
        let (opnum, context_id, stub) = if first && last {
            (req.opnum, req.context_id, req.stub.to_vec())
        } else {
            if first {
                self.partial = Some((h.call_id, req.opnum, req.context_id, Vec::new()));
            }
            let Some((call, _, _, buf)) = self.partial.as_mut() else {
                return Ok(vec![rpc::fault(
                    h.call_id,
                    req.context_id,
                    rpc::NCA_S_PROTO_ERROR,
                )]);
            };
            if *call != h.call_id || buf.len() + req.stub.len() > rpc::MAX_STUB {
                self.partial = None;
                return Ok(vec![rpc::fault(
                    h.call_id,
                    req.context_id,
                    rpc::NCA_S_PROTO_ERROR,
                )]);
            }
            buf.extend_from_slice(req.stub);
            if !last {
                return Ok(Vec::new());
            }
            let Some((_, opnum, ctx, buf)) = self.partial.take() else {
                return Ok(Vec::new());
            };
            (opnum, ctx, buf)
        };
        if self.context != Some(context_id) {
            return Ok(vec![rpc::fault(
                h.call_id,
                context_id,
                rpc::NCA_S_UNKNOWN_IF,
            )]);
        }
        if self.denied {
            return Ok(vec![rpc::fault(
                h.call_id,
                context_id,
                rpc::FAULT_ACCESS_DENIED,
            )]);
        }
        let reply = match self.call(opnum, &stub).await {
            Ok(stub) => rpc::responses(h.call_id, context_id, &stub, self.max_xmit),
            Err(status) => vec![rpc::fault(h.call_id, context_id, status)],
        };
        Ok(reply)
    }

    /// One MS-SCMR call: the response stub, or a fault status.
    async fn call(&mut self, opnum: u16, stub: &[u8]) -> Result<Vec<u8>, u32> {
        let bad = |_| rpc::RPC_X_BAD_STUB_DATA;
        let mut r = Reader::new(stub);
        let mut w = Writer::new();
        let host = Arc::clone(&self.host);
        match opnum {
            // RCloseServiceHandle
            0 => {
                let h = r.handle().map_err(bad)?;
                match self.handles.remove(&h) {
                    Some(handle) => {
                        let mut db = host.db.lock().await;
                        self.release(&mut db, &handle);
                        w.handle(&[0; 20]);
                        w.u32(0);
                    }
                    None => {
                        w.handle(&h);
                        w.u32(ERROR_INVALID_HANDLE);
                    }
                }
            }
            // RControlService
            1 => {
                let h = r.handle().map_err(bad)?;
                let control = r.u32().map_err(bad)?;
                let Some(Handle::Service(name)) = self.handles.get(&h).cloned() else {
                    status(&mut w, 1);
                    w.u32(ERROR_INVALID_HANDLE);
                    return Ok(w.out);
                };
                let mut db = host.db.lock().await;
                let key = name.to_lowercase();
                let running = db
                    .processes
                    .get(&key)
                    .map(|p| p.exit_code().is_none())
                    .unwrap_or(false);
                if control == 1 && running {
                    if let Some(p) = db.processes.remove(&key) {
                        p.terminate();
                    }
                    set_state(&mut db, &name, "stopped");
                    let _ = host.save(&db);
                    status(&mut w, 1);
                    w.u32(0);
                } else {
                    status(&mut w, 1);
                    w.u32(if control == 1 {
                        ERROR_SERVICE_NOT_ACTIVE
                    } else {
                        ERROR_INVALID_PARAMETER
                    });
                }
            }
            // RDeleteService
            2 => {
                let h = r.handle().map_err(bad)?;
                let Some(Handle::Service(name)) = self.handles.get(&h).cloned() else {
                    w.u32(ERROR_INVALID_HANDLE);
                    return Ok(w.out);
                };
                let mut db = host.db.lock().await;
                let code = match find(&mut db.services, &name) {
                    Some(s) if s.marked_for_delete => ERROR_SERVICE_MARKED_FOR_DELETE,
                    Some(s) => {
                        s.marked_for_delete = true;
                        0
                    }
                    None => ERROR_SERVICE_DOES_NOT_EXIST,
                };
                let _ = host.save(&db);
                w.u32(code);
            }
            // RQueryServiceStatus
            6 => {
                let h = r.handle().map_err(bad)?;
                let Some(Handle::Service(name)) = self.handles.get(&h).cloned() else {
                    status(&mut w, 1);
                    w.u32(ERROR_INVALID_HANDLE);
                    return Ok(w.out);
                };
                let mut db = host.db.lock().await;
                let state = find(&mut db.services, &name)
                    .map(|s| state_code(&s.state))
                    .unwrap_or(1);
                status(&mut w, state);
                w.u32(0);
            }
            // RCreateServiceW
            12 => {
                let h = r.handle().map_err(bad)?;
                let name = r.wstr().map_err(bad)?;
                let display = r.unique_wstr().map_err(bad)?;
                let _access = r.u32().map_err(bad)?;
                let service_type = r.u32().map_err(bad)?;
                let start_type = r.u32().map_err(bad)?;
                let error_control = r.u32().map_err(bad)?;
                let binary_path = r.wstr().map_err(bad)?;
                let code = if !matches!(self.handles.get(&h), Some(Handle::Manager)) {
                    ERROR_INVALID_HANDLE
                } else if name.is_empty()
                    || name.len() > MAX_NAME
                    || name.contains(['/', '\\'])
                    || name.chars().any(char::is_control)
                {
                    ERROR_INVALID_NAME
                } else if binary_path.is_empty() || binary_path.len() > MAX_PATH {
                    ERROR_INVALID_PARAMETER
                } else if self.handles.len() >= MAX_HANDLES {
                    ERROR_ACCESS_DENIED
                } else {
                    let mut db = host.db.lock().await;
                    match find(&mut db.services, &name) {
                        Some(s) if s.marked_for_delete => ERROR_SERVICE_MARKED_FOR_DELETE,
                        Some(_) => ERROR_SERVICE_EXISTS,
                        None => {
                            db.services.push(ServiceRecord {
                                name: name.clone(),
                                display_name: display.clone().unwrap_or_else(|| name.clone()),
                                binary_path: binary_path.clone(),
                                service_type,
                                start_type,
                                error_control,
                                state: "stopped".into(),
                                marked_for_delete: false,
                            });
                            *db.open.entry(name.to_lowercase()).or_default() += 1;
                            let _ = host.save(&db);
                            let _ = host.event(&Event {
                                id: 7045,
                                service: name.clone(),
                                image: Some(binary_path.clone()),
                                timeout_ms: None,
                                error: None,
                            });
                            0
                        }
                    }
                };
                w.u32(0); // lpdwTagId: null
                if code == 0 {
                    let handle = new_handle();
                    self.handles.insert(handle, Handle::Service(name));
                    w.handle(&handle);
                } else {
                    w.handle(&[0; 20]);
                }
                w.u32(code);
            }
            // ROpenSCManagerW
            15 => {
                let _machine = r.unique_wstr().map_err(bad)?;
                let _database = r.unique_wstr().map_err(bad)?;
                let _access = r.u32().map_err(bad)?;
                // Denied: the account is no administrator of the host.
                if host.host.mode == SvcctlMode::Denied || self.handles.len() >= MAX_HANDLES {
                    w.handle(&[0; 20]);
                    w.u32(ERROR_ACCESS_DENIED);
                } else {
                    let handle = new_handle();
                    self.handles.insert(handle, Handle::Manager);
                    w.handle(&handle);
                    w.u32(0);
                }
            }
            // ROpenServiceW
            16 => {
                let h = r.handle().map_err(bad)?;
                let name = r.wstr().map_err(bad)?;
                let _access = r.u32().map_err(bad)?;
                if !matches!(self.handles.get(&h), Some(Handle::Manager)) {
                    w.handle(&[0; 20]);
                    w.u32(ERROR_INVALID_HANDLE);
                    return Ok(w.out);
                }
                let mut db = host.db.lock().await;
                let found = find(&mut db.services, &name).map(|s| s.name.clone());
                match found {
                    Some(real) if self.handles.len() < MAX_HANDLES => {
                        *db.open.entry(real.to_lowercase()).or_default() += 1;
                        let handle = new_handle();
                        self.handles.insert(handle, Handle::Service(real));
                        w.handle(&handle);
                        w.u32(0);
                    }
                    Some(_) => {
                        w.handle(&[0; 20]);
                        w.u32(ERROR_ACCESS_DENIED);
                    }
                    None => {
                        w.handle(&[0; 20]);
                        w.u32(ERROR_SERVICE_DOES_NOT_EXIST);
                    }
                }
            }
            // RQueryServiceConfigW
            17 => {
                let h = r.handle().map_err(bad)?;
                let size = r.u32().map_err(bad)?;
                let record = match self.handles.get(&h).cloned() {
                    Some(Handle::Service(name)) => {
                        let mut db = host.db.lock().await;
                        find(&mut db.services, &name).cloned()
                    }
                    _ => None,
                };
                let Some(s) = record else {
                    query_config(&mut w, None);
                    w.u32(0);
                    w.u32(ERROR_INVALID_HANDLE);
                    return Ok(w.out);
                };
                // What the config takes in the caller's buffer (QUERY_SERVICE_CONFIGW and
                // its strings), as Windows counts it.
                let strings = [&s.binary_path, "", "", "LocalSystem", &s.display_name];
                let needed: usize = 36
                    + strings
                        .iter()
                        .map(|t| (t.encode_utf16().count() + 1) * 2)
                        .sum::<usize>();
                if (size as usize) < needed {
                    query_config(&mut w, None);
                    w.u32(needed as u32);
                    w.u32(ERROR_INSUFFICIENT_BUFFER);
                } else {
                    query_config(&mut w, Some(&s));
                    w.u32(needed as u32);
                    w.u32(0);
                }
            }
            // RStartServiceW
            19 => {
                let h = r.handle().map_err(bad)?;
                let Some(Handle::Service(name)) = self.handles.get(&h).cloned() else {
                    w.u32(ERROR_INVALID_HANDLE);
                    return Ok(w.out);
                };
                w.u32(self.start(&name).await);
            }
            _ => return Err(rpc::NCA_S_OP_RNG_ERROR),
        }
        Ok(w.out)
    }

    /// RStartServiceW: run the binary path, wait for the SCM's start timeout.
    async fn start(&mut self, name: &str) -> u32 {
        let host = Arc::clone(&self.host);
        let key = name.to_lowercase();
        let process = {
            let mut db = host.db.lock().await;
            let Some(s) = find(&mut db.services, name) else {
                return ERROR_SERVICE_DOES_NOT_EXIST;
            };
            if s.marked_for_delete {
                return ERROR_SERVICE_MARKED_FOR_DELETE;
            }
            if s.state != "stopped" {
                return ERROR_SERVICE_ALREADY_RUNNING;
            }
            s.state = "start_pending".into();
            let line = s.binary_path.clone();
            let _ = host.save(&db);
            let p = host.host.exec.start_service_process(&line);
            db.processes.insert(key.clone(), Arc::clone(&p));
            p
        };
        let timeout = host.start_timeout;
        let ended = process.wait(timeout).await;
        let mut db = host.db.lock().await;
        if ended.is_none() {
            // The SCM gives up on a process that never reported to it and kills it.
            process.terminate();
            let _ = host.event(&Event {
                id: 7009,
                service: name.to_string(),
                image: None,
                timeout_ms: Some(timeout.as_millis() as u64),
                error: None,
            });
        }
        let _ = host.event(&Event {
            id: 7000,
            service: name.to_string(),
            image: None,
            timeout_ms: None,
            error: Some(ERROR_SERVICE_REQUEST_TIMEOUT),
        });
        db.processes.remove(&key);
        set_state(&mut db, name, "stopped");
        let _ = host.save(&db);
        ERROR_SERVICE_REQUEST_TIMEOUT
    }

    /// A handle closed: a service marked for delete goes with its last handle.
    fn release(&self, db: &mut ScmDb, handle: &Handle) {
        let Handle::Service(name) = handle else {
            return;
        };
        let key = name.to_lowercase();
        let left = match db.open.get_mut(&key) {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n
            }
            None => 0,
        };
        if left == 0 {
            db.open.remove(&key);
            let before = db.services.len();
            db.services
                .retain(|s| !(s.marked_for_delete && s.name.eq_ignore_ascii_case(name)));
            if db.services.len() != before {
                let _ = self.host.save(db);
            }
        }
    }

    /// The pipe closed: every handle it held is closed.
    async fn close_all(&mut self) {
        let handles: Vec<Handle> = self.handles.drain().map(|(_, h)| h).collect();
        if handles.is_empty() {
            return;
        }
        let host = Arc::clone(&self.host);
        let mut db = host.db.lock().await;
        for h in &handles {
            self.release(&mut db, h);
        }
    }
}

fn find<'a>(services: &'a mut [ServiceRecord], name: &str) -> Option<&'a mut ServiceRecord> {
    services
        .iter_mut()
        .find(|s| s.name.eq_ignore_ascii_case(name))
}

fn set_state(db: &mut ScmDb, name: &str, state: &str) {
    if let Some(s) = find(&mut db.services, name) {
        s.state = state.to_string();
    }
}

/// QUERY_SERVICE_CONFIGW (null strings when `s` is None).
fn query_config(w: &mut Writer, s: Option<&ServiceRecord>) {
    let Some(s) = s else {
        for _ in 0..9 {
            w.u32(0);
        }
        return;
    };
    w.u32(s.service_type);
    w.u32(s.start_type);
    w.u32(s.error_control);
    let strings = [
        s.binary_path.as_str(),
        "",
        "",
        "LocalSystem",
        s.display_name.as_str(),
    ];
    // Pointers in field order: binary path, load order group, (tag id), dependencies,
    // start name, display name.
    w.referent();
    w.referent();
    w.u32(0); // dwTagId
    w.referent();
    w.referent();
    w.referent();
    for t in strings {
        w.wstr(t);
    }
}
