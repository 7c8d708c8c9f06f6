//! The Service Control Manager Remote protocol (MS-SCMR) over `\PIPE\svcctl`:
//! the calls that install, start, watch and remove one service.
//!
//! Opnums: 0 RCloseServiceHandle, 1 RControlService, 2 RDeleteService,
//! 6 RQueryServiceStatus, 12 RCreateServiceW, 15 ROpenSCManagerW,
//! 16 ROpenServiceW, 17 RQueryServiceConfigW, 19 RStartServiceW.
//!
//! Every call returns the Windows error code the server put in the reply
//! (`Err(ScmError::Win32(code))` when not 0), a FAULT or a malformed reply as
//! [`ScmError::Rpc`], a pipe failure as [`ScmError::Pipe`]. Strings read back
//! are capped at [`MAX_NAME`] / [`MAX_PATH`] UTF-16 units.

use super::dcerpc::{CallError, NdrReader, NdrWriter, PipeIo, RpcClient, RpcError, Syntax};

/// svcctl: `367abb81-9844-35f1-ad32-98f038001003` v2.0.
pub(super) const SVCCTL: Syntax = Syntax::new(
    0x367a_bb81,
    0x9844,
    0x35f1,
    [0xad, 0x32, 0x98, 0xf0, 0x38, 0x00, 0x10, 0x03],
    2,
    0,
);

/// Longest service or display name read back (SC_MAX_NAME_LENGTH is 257).
pub(super) const MAX_NAME: usize = 257;
/// Longest binary path or account read back (the reply buffer is 8 KiB).
pub(super) const MAX_PATH: usize = 4096;

pub(super) const ERROR_ACCESS_DENIED: u32 = 5;
pub(super) const ERROR_SERVICE_REQUEST_TIMEOUT: u32 = 1053;
pub(super) const ERROR_SERVICE_DOES_NOT_EXIST: u32 = 1060;
pub(super) const ERROR_SERVICE_NOT_ACTIVE: u32 = 1062;
pub(super) const ERROR_SERVICE_MARKED_FOR_DELETE: u32 = 1072;
pub(super) const ERROR_SERVICE_EXISTS: u32 = 1073;

/// SC_MANAGER_CONNECT | SC_MANAGER_CREATE_SERVICE.
pub(super) const SC_MANAGER_CREATE: u32 = 0x0001 | 0x0002;
/// SC_MANAGER_CONNECT alone (enough to open a service by name).
pub(super) const SC_MANAGER_CONNECT: u32 = 0x0001;
/// SERVICE_QUERY_CONFIG | SERVICE_QUERY_STATUS | SERVICE_START | SERVICE_STOP | DELETE.
pub(super) const SERVICE_MANAGE: u32 = 0x0001 | 0x0004 | 0x0010 | 0x0020 | 0x0001_0000;
/// SERVICE_QUERY_CONFIG | SERVICE_QUERY_STATUS.
pub(super) const SERVICE_QUERY: u32 = 0x0001 | 0x0004;
pub(super) const SERVICE_WIN32_OWN_PROCESS: u32 = 0x10;
pub(super) const SERVICE_DEMAND_START: u32 = 3;
pub(super) const SERVICE_ERROR_IGNORE: u32 = 0;
pub(super) const SERVICE_CONTROL_STOP: u32 = 1;

/// A context handle (opaque to the client).
pub(super) type ScHandle = [u8; 20];

#[derive(Debug)]
pub(super) enum ScmError {
    /// The call ran and the server answered with this Windows error code.
    Win32(u32),
    Rpc(RpcError),
    Pipe(crate::transport::TransportError),
}

impl From<CallError> for ScmError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Pipe(e) => ScmError::Pipe(e),
            CallError::Rpc(e) => ScmError::Rpc(e),
        }
    }
}

impl From<RpcError> for ScmError {
    fn from(e: RpcError) -> Self {
        ScmError::Rpc(e)
    }
}

impl ScmError {
    /// The Windows error code, for a call that got as far as an answer.
    pub fn code(&self) -> Option<u32> {
        match self {
            ScmError::Win32(c) => Some(*c),
            // Windows answers some refusals (access denied) as a FAULT.
            ScmError::Rpc(RpcError::Fault(c)) if *c < 0x1000_0000 => Some(*c),
            _ => None,
        }
    }
}

impl std::fmt::Display for ScmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScmError::Win32(c) => write!(f, "Windows error {c} ({})", win32_name(*c)),
            ScmError::Rpc(e) => write!(f, "{e}"),
            ScmError::Pipe(e) => write!(f, "{}", e.message),
        }
    }
}

/// The names of the codes this client meets.
pub(super) fn win32_name(code: u32) -> &'static str {
    match code {
        ERROR_ACCESS_DENIED => "access denied",
        ERROR_SERVICE_REQUEST_TIMEOUT => "the service did not respond in time",
        ERROR_SERVICE_DOES_NOT_EXIST => "the service does not exist",
        ERROR_SERVICE_NOT_ACTIVE => "the service is not started",
        ERROR_SERVICE_MARKED_FOR_DELETE => "the service is marked for deletion",
        ERROR_SERVICE_EXISTS => "the service exists already",
        1056 => "an instance of the service is running",
        1058 => "the service is disabled",
        1069 => "the service did not start due to a logon failure",
        87 => "invalid parameter",
        6 => "invalid handle",
        123 => "invalid name",
        _ => "unknown",
    }
}

/// SERVICE_STATUS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ServiceStatus {
    pub service_type: u32,
    /// 1 stopped, 2 start pending, 3 stop pending, 4 running, ...
    pub current_state: u32,
    pub controls_accepted: u32,
    pub win32_exit_code: u32,
    pub service_exit_code: u32,
    pub check_point: u32,
    pub wait_hint: u32,
}

/// QUERY_SERVICE_CONFIGW.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ServiceConfig {
    pub service_type: u32,
    pub start_type: u32,
    pub error_control: u32,
    pub binary_path: String,
    pub load_order_group: String,
    pub tag_id: u32,
    pub dependencies: String,
    pub start_name: String,
    pub display_name: String,
}

/// The error_status_t that ends every reply; the reply must end there.
fn status(r: &mut NdrReader<'_>) -> Result<(), ScmError> {
    let code = r.u32()?;
    if r.rest() > 0 {
        return Err(ScmError::Rpc(RpcError::Protocol(format!(
            "{} bytes after the status",
            r.rest()
        ))));
    }
    if code != 0 {
        return Err(ScmError::Win32(code));
    }
    Ok(())
}

fn service_status(r: &mut NdrReader<'_>) -> Result<ServiceStatus, RpcError> {
    Ok(ServiceStatus {
        service_type: r.u32()?,
        current_state: r.u32()?,
        controls_accepted: r.u32()?,
        win32_exit_code: r.u32()?,
        service_exit_code: r.u32()?,
        check_point: r.u32()?,
        wait_hint: r.u32()?,
    })
}

// Stub builders and reply readers, apart from the pipe so they can be checked on bytes.

pub(super) fn open_sc_manager_stub(machine: &str, access: u32) -> Vec<u8> {
    let mut w = NdrWriter::new();
    w.unique_wstr(Some(machine));
    w.unique_wstr(None); // lpDatabaseName: ServicesActive
    w.u32(access);
    w.buf
}

pub(super) fn open_service_stub(scm: &ScHandle, name: &str, access: u32) -> Vec<u8> {
    let mut w = NdrWriter::new();
    w.handle(scm);
    w.wstr(name);
    w.u32(access);
    w.buf
}

pub(super) fn create_service_stub(
    scm: &ScHandle,
    name: &str,
    display: &str,
    path: &str,
) -> Vec<u8> {
    let mut w = NdrWriter::new();
    w.handle(scm);
    w.wstr(name);
    w.unique_wstr(Some(display));
    w.u32(SERVICE_MANAGE);
    w.u32(SERVICE_WIN32_OWN_PROCESS);
    w.u32(SERVICE_DEMAND_START);
    w.u32(SERVICE_ERROR_IGNORE);
    w.wstr(path);
    w.null(); // lpLoadOrderGroup
    w.null(); // lpdwTagId
    w.null(); // lpDependencies
    w.u32(0); // dwDependSize
    w.null(); // lpServiceStartName: LocalSystem
    w.null(); // lpPassword
    w.u32(0); // dwPwSize
    w.buf
}

fn handle_only(h: &ScHandle) -> Vec<u8> {
    let mut w = NdrWriter::new();
    w.handle(h);
    w.buf
}

/// A reply that is a handle then the status.
pub(super) fn handle_reply(stub: &[u8]) -> Result<ScHandle, ScmError> {
    let mut r = NdrReader::new(stub);
    let h = r.handle()?;
    status(&mut r)?;
    Ok(h)
}

/// RCreateServiceW's reply: lpdwTagId (unique), the handle, the status.
pub(super) fn create_service_reply(stub: &[u8]) -> Result<ScHandle, ScmError> {
    let mut r = NdrReader::new(stub);
    if r.u32()? != 0 {
        r.u32()?; // the tag
    }
    let h = r.handle()?;
    status(&mut r)?;
    Ok(h)
}

pub(super) fn status_reply(stub: &[u8]) -> Result<ServiceStatus, ScmError> {
    let mut r = NdrReader::new(stub);
    let s = service_status(&mut r)?;
    status(&mut r)?;
    Ok(s)
}

pub(super) fn query_config_reply(stub: &[u8]) -> Result<ServiceConfig, ScmError> {
    let mut r = NdrReader::new(stub);
    let service_type = r.u32()?;
    let start_type = r.u32()?;
    let error_control = r.u32()?;
    let p_path = r.u32()?;
    let p_group = r.u32()?;
    let tag_id = r.u32()?;
    let p_deps = r.u32()?;
    let p_start = r.u32()?;
    let p_display = r.u32()?;
    // The deferred strings follow in the order of their pointers.
    let mut s = |p: u32, cap: usize| -> Result<String, RpcError> {
        if p == 0 {
            Ok(String::new())
        } else {
            r.wstr(cap)
        }
    };
    let binary_path = s(p_path, MAX_PATH)?;
    let load_order_group = s(p_group, MAX_NAME)?;
    let dependencies = s(p_deps, MAX_PATH)?;
    let start_name = s(p_start, MAX_PATH)?;
    let display_name = s(p_display, MAX_NAME)?;
    let _needed = r.u32()?; // pcbBytesNeeded
    status(&mut r)?;
    Ok(ServiceConfig {
        service_type,
        start_type,
        error_control,
        binary_path,
        load_order_group,
        tag_id,
        dependencies,
        start_name,
        display_name,
    })
}

/// The service control manager of one host, bound over one pipe.
pub(super) struct Scm<P: PipeIo> {
    rpc: RpcClient<P>,
}

impl<P: PipeIo> Scm<P> {
    pub async fn bind(pipe: P) -> Result<Scm<P>, ScmError> {
        Ok(Scm {
            rpc: RpcClient::bind(pipe, &SVCCTL).await?,
        })
    }

    pub fn into_pipe(self) -> P {
        self.rpc.into_pipe()
    }

    /// ROpenSCManagerW (15) on the ServicesActive database.
    pub async fn open_manager(&mut self, machine: &str, access: u32) -> Result<ScHandle, ScmError> {
        let stub = self
            .rpc
            .call(15, &open_sc_manager_stub(machine, access))
            .await?;
        handle_reply(&stub)
    }

    /// ROpenServiceW (16).
    pub async fn open_service(
        &mut self,
        scm: &ScHandle,
        name: &str,
        access: u32,
    ) -> Result<ScHandle, ScmError> {
        let stub = self
            .rpc
            .call(16, &open_service_stub(scm, name, access))
            .await?;
        handle_reply(&stub)
    }

    /// RCreateServiceW (12): an own-process service, demand start, errors
    /// ignored, running as LocalSystem.
    pub async fn create_service(
        &mut self,
        scm: &ScHandle,
        name: &str,
        display: &str,
        path: &str,
    ) -> Result<ScHandle, ScmError> {
        let stub = self
            .rpc
            .call(12, &create_service_stub(scm, name, display, path))
            .await?;
        create_service_reply(&stub)
    }

    /// RStartServiceW (19) without arguments.
    pub async fn start_service(&mut self, svc: &ScHandle) -> Result<(), ScmError> {
        let mut w = NdrWriter::new();
        w.handle(svc);
        w.u32(0); // argc
        w.null(); // argv
        let stub = self.rpc.call(19, &w.buf).await?;
        status(&mut NdrReader::new(&stub))
    }

    /// RQueryServiceStatus (6).
    pub async fn query_status(&mut self, svc: &ScHandle) -> Result<ServiceStatus, ScmError> {
        let stub = self.rpc.call(6, &handle_only(svc)).await?;
        status_reply(&stub)
    }

    /// RControlService (1).
    pub async fn control(
        &mut self,
        svc: &ScHandle,
        control: u32,
    ) -> Result<ServiceStatus, ScmError> {
        let mut w = NdrWriter::new();
        w.handle(svc);
        w.u32(control);
        let stub = self.rpc.call(1, &w.buf).await?;
        status_reply(&stub)
    }

    /// RQueryServiceConfigW (17) with the largest buffer the protocol allows.
    pub async fn query_config(&mut self, svc: &ScHandle) -> Result<ServiceConfig, ScmError> {
        let mut w = NdrWriter::new();
        w.handle(svc);
        w.u32(8192);
        let stub = self.rpc.call(17, &w.buf).await?;
        query_config_reply(&stub)
    }

    /// RDeleteService (2): the service goes once its last handle is closed.
    pub async fn delete_service(&mut self, svc: &ScHandle) -> Result<(), ScmError> {
        let stub = self.rpc.call(2, &handle_only(svc)).await?;
        status(&mut NdrReader::new(&stub))
    }

    /// RCloseServiceHandle (0).
    pub async fn close(&mut self, h: &ScHandle) -> Result<(), ScmError> {
        let stub = self.rpc.call(0, &handle_only(h)).await?;
        let mut r = NdrReader::new(&stub);
        r.handle()?;
        status(&mut r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(ws: &[u32]) -> Vec<u8> {
        ws.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    fn wstr(s: &str) -> Vec<u8> {
        let u: Vec<u16> = s.encode_utf16().chain([0]).collect();
        let mut b = words(&[u.len() as u32, 0, u.len() as u32]);
        for x in u {
            b.extend_from_slice(&x.to_le_bytes());
        }
        while !b.len().is_multiple_of(4) {
            b.push(0);
        }
        b
    }

    #[test]
    fn open_manager_and_create_service_requests_are_the_ndr_windows_reads() {
        let s = open_sc_manager_stub("DUMMY", SC_MANAGER_CREATE);
        let mut want = words(&[0x20000]);
        want.extend(wstr("DUMMY"));
        want.extend(words(&[0, 3]));
        assert_eq!(s, want);

        let h = [7u8; 20];
        let c = create_service_stub(&h, "pushscan-x", "pushscan-x", "C:\\a b.exe");
        let mut want = h.to_vec();
        want.extend(wstr("pushscan-x"));
        want.extend(words(&[0x20000]));
        want.extend(wstr("pushscan-x"));
        want.extend(words(&[SERVICE_MANAGE, 0x10, 3, 0]));
        want.extend(wstr("C:\\a b.exe"));
        want.extend(words(&[0, 0, 0, 0, 0, 0, 0]));
        assert_eq!(c, want);
    }

    #[test]
    fn replies_give_handles_codes_and_configs() {
        let mut ok = vec![1u8; 20];
        ok.extend(words(&[0]));
        assert_eq!(handle_reply(&ok).unwrap(), [1u8; 20]);
        let mut missing = vec![0u8; 20];
        missing.extend(words(&[1060]));
        assert_eq!(handle_reply(&missing).unwrap_err().code(), Some(1060));
        // Trailing bytes after the status and a cut reply are refused.
        let mut extra = ok.clone();
        extra.extend(words(&[0]));
        assert!(matches!(handle_reply(&extra), Err(ScmError::Rpc(_))));
        assert!(matches!(handle_reply(&ok[..22]), Err(ScmError::Rpc(_))));
        // CreateServiceW with and without a tag pointer.
        let mut c = words(&[0]);
        c.extend([9u8; 20]);
        c.extend(words(&[0]));
        assert_eq!(create_service_reply(&c).unwrap(), [9u8; 20]);
        let mut c = words(&[0x20000, 5]);
        c.extend([9u8; 20]);
        c.extend(words(&[1073]));
        assert_eq!(create_service_reply(&c).unwrap_err().code(), Some(1073));

        let mut q = words(&[0x10, 3, 1, 0x20000, 0, 0, 0x20004, 0x20008, 0x2000c]);
        q.extend(wstr("C:\\x.exe"));
        q.extend(wstr("/"));
        q.extend(wstr("LocalSystem"));
        q.extend(wstr("Shown"));
        q.extend(words(&[0, 0]));
        let cfg = query_config_reply(&q).unwrap();
        assert_eq!(
            (
                cfg.binary_path.as_str(),
                cfg.dependencies.as_str(),
                cfg.start_name.as_str(),
                cfg.display_name.as_str(),
                cfg.start_type
            ),
            ("C:\\x.exe", "/", "LocalSystem", "Shown", 3)
        );
        // A path longer than the cap is refused, not read.
        let mut long = words(&[0x10, 3, 1, 0x20000, 0, 0, 0, 0, 0]);
        long.extend(wstr(&"a".repeat(MAX_PATH + 1)));
        long.extend(words(&[0, 0]));
        assert!(matches!(query_config_reply(&long), Err(ScmError::Rpc(_))));

        let mut st = words(&[0x10, 1, 0, 1077, 0, 0, 0]);
        st.extend(words(&[0]));
        assert_eq!(status_reply(&st).unwrap().win32_exit_code, 1077);
        assert_eq!(ScmError::Rpc(RpcError::Fault(5)).code(), Some(5));
        assert_eq!(ScmError::Rpc(RpcError::Fault(0x1c01_0002)).code(), None);
    }
}

/// Against Samba's own svcctl (a private smbd of these tests, on a loopback address of
/// their own), the same calls through this client and through Impacket's
/// `impacket.dcerpc.v5.scmr` (`tests/scmr_impacket.py`) give the same answers: codes,
/// statuses, configurations, faults, and a request long enough to go in fragments.
#[cfg(all(test, unix))]
mod samba {
    use super::*;
    use crate::transport::winrm::smbfs::tests::{login, start_samba, PASSWORD, USER};
    use serde_json::{json, Value};
    use std::net::Ipv4Addr;

    fn code(r: Result<(), ScmError>) -> u32 {
        match r {
            Ok(()) => 0,
            Err(ScmError::Win32(c)) | Err(ScmError::Rpc(RpcError::Fault(c))) => c,
            Err(e) => panic!("no answer from the server: {e}"),
        }
    }

    fn impacket(ip: Ipv4Addr, port: u16, names: &[String]) -> Value {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scmr_impacket.py");
        let ok = std::process::Command::new("python3")
            .args(["-c", "import impacket"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "Impacket is missing: python3 -m pip install impacket==0.13.1 (scripts/test does)"
        );
        let out = std::process::Command::new("python3")
            .arg(script)
            .args([
                ip.to_string(),
                port.to_string(),
                USER.into(),
                PASSWORD.into(),
            ])
            .args(names)
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "scmr_impacket.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("scmr_impacket.py prints JSON")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn samba_answers_this_client_as_it_answers_impacket() {
        let smb = start_samba(Ipv4Addr::new(127, 0, 87, 21));
        let mut names: Vec<String> = ["Spooler", "NETLOGON", "RemoteRegistry", "WINS"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        names.push("pushscan-no-such-service".into());
        // 3,000 UTF-16 units: the request goes in two fragments of at most 4,280 bytes.
        names.push("x".repeat(3000));

        let mut files = login(format!("{}:{}", smb.ip, smb.port)).await;
        let pipe = files.open_pipe("svcctl").await.expect("svcctl pipe");
        let mut scm = Scm::bind(pipe).await.expect("bind svcctl");
        let mut out = json!({"services": {}});
        let create = scm.open_manager("DUMMY", SC_MANAGER_CREATE).await;
        if let Ok(h) = &create {
            scm.close(h).await.expect("close");
        }
        out["open_manager_create"] = json!(code(create.map(|_| ())));
        let manager = scm
            .open_manager("DUMMY", SC_MANAGER_CONNECT)
            .await
            .expect("ROpenSCManagerW to connect");
        out["open_manager"] = json!(0);
        for name in &names {
            let mut entry = json!({});
            let svc = match scm.open_service(&manager, name, SERVICE_QUERY).await {
                Ok(h) => h,
                Err(e) => {
                    entry["open"] = json!(code(Err(e)));
                    out["services"][name] = entry;
                    continue;
                }
            };
            entry["open"] = json!(0);
            let s = scm.query_status(&svc).await.expect("RQueryServiceStatus");
            entry["status"] = json!([
                s.service_type,
                s.current_state,
                s.controls_accepted,
                s.win32_exit_code,
                s.service_exit_code,
                s.check_point,
                s.wait_hint
            ]);
            match scm.query_config(&svc).await {
                Ok(c) => {
                    entry["config"] = json!({
                        "service_type": c.service_type,
                        "start_type": c.start_type,
                        "error_control": c.error_control,
                        "binary_path": c.binary_path,
                        "load_order_group": c.load_order_group,
                        "tag_id": c.tag_id,
                        "dependencies": c.dependencies,
                        "start_name": c.start_name,
                        "display_name": c.display_name,
                    })
                }
                Err(e) => entry["config_error"] = json!(code(Err(e))),
            }
            scm.close(&svc).await.expect("RCloseServiceHandle");
            out["services"][name] = entry;
        }
        let created = scm
            .create_service(
                &manager,
                "pushscan-impacket-probe",
                "pushscan-impacket-probe",
                "C:\\probe.exe",
            )
            .await;
        if let Ok(h) = &created {
            scm.close(h).await.expect("close");
        }
        out["create"] = json!(code(created.map(|_| ())));
        scm.close(&manager).await.expect("close the manager");
        scm.into_pipe().close().await;
        files.close().await;

        // What the calls are known to give on Samba 4.17, so the comparison below is not
        // two clients agreeing on nothing.
        assert_eq!(
            out["open_manager_create"],
            json!(ERROR_ACCESS_DENIED),
            "{out}"
        );
        assert_eq!(out["services"]["Spooler"]["open"], json!(0), "{out}");
        assert_eq!(
            out["services"]["Spooler"]["config"]["display_name"],
            json!("Print Spooler"),
            "{out}"
        );
        assert_eq!(
            out["services"]["pushscan-no-such-service"]["open"],
            json!(ERROR_SERVICE_DOES_NOT_EXIST),
            "{out}"
        );
        assert_eq!(out["create"], json!(0x1c01_0002u32), "{out}");

        let reference = impacket(smb.ip, smb.port, &names);
        assert_eq!(out, reference, "this client vs Impacket");
    }
}
