//! HTTP(S) side of the WinRM simulator: accept loops, TLS, hyper 1.x
//! keep-alive connections, and authentication as Windows does it on
//! `/wsman`:
//!
//! * no credentials: `401` with `WWW-Authenticate: Negotiate` (plus
//!   `Basic realm="WSMAN"` where Basic is allowed: HTTPS, or HTTP with
//!   `allow_basic_over_http`);
//! * `Authorization: Negotiate <NTLM>`: NEGOTIATE gets a `401` with the
//!   CHALLENGE, AUTHENTICATE completes the NTLMv2 handshake; the security
//!   context then belongs to the TCP connection, and later requests on it
//!   carry no `Authorization` header. On plain HTTP their bodies must be
//!   sealed (`multipart/encrypted`); a plaintext body gets a `401` unless
//!   `allow_unencrypted`. Replies are sealed when the request was. An empty
//!   body (a client setting up encryption) gets an empty `200`;
//! * `Authorization: Basic`: per request, only where allowed;
//! * wrong user or password: `401`.
//!
//! Bodies are limited to [`MAX_BODY`]; other paths get `404`, other methods
//! `405`. The host's latency is added before every reply.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

use super::ntlm::{self, Acceptor, Step};
use super::shell::HostState;
use super::soap::{self, Fault};
use super::TlsFiles;

/// Largest request body accepted.
pub const MAX_BODY: usize = 4 << 20;
/// Most connections served at once per listener.
const MAX_CONNECTIONS: usize = 512;
const SOAP_CONTENT_TYPE: &str = "application/soap+xml;charset=UTF-8";

/// Server-wide settings shared by all connections.
pub struct Settings {
    /// See [`super::ServerConfig::allow_basic_over_http`].
    pub allow_basic_over_http: bool,
    /// See [`super::ServerConfig::allow_unencrypted`].
    pub allow_unencrypted: bool,
    /// TLS acceptor of the HTTPS listeners.
    pub tls: Option<TlsAcceptor>,
}

/// Build the TLS acceptor from PEM files.
pub fn tls_acceptor(files: &TlsFiles) -> anyhow::Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert_pem)
        .with_context(|| format!("reading {}", files.cert_pem.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {}", files.cert_pem.display()))?;
    let key = PrivateKeyDer::from_pem_file(&files.key_pem)
        .with_context(|| format!("reading {}", files.key_pem.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("TLS certificate and key")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Authentication state of one TCP connection.
enum ConnAuth {
    None,
    Pending(Box<Acceptor>),
    Ntlm(Box<Acceptor>),
}

struct Conn {
    host: Arc<HostState>,
    settings: Arc<Settings>,
    tls: bool,
    peer: SocketAddr,
    auth: Mutex<ConnAuth>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Accept connections for one host on one listener, forever.
pub async fn accept_loop(
    listener: TcpListener,
    host: Arc<HostState>,
    settings: Arc<Settings>,
    tls: bool,
) {
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let (stream, peer) = match listener.accept().await {
            Ok(v) => v,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if conns.len() >= MAX_CONNECTIONS {
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(Conn {
            host: Arc::clone(&host),
            settings: Arc::clone(&settings),
            tls,
            peer,
            auth: Mutex::new(ConnAuth::None),
        });
        let acceptor = if tls { settings.tls.clone() } else { None };
        conns.spawn(async move {
            match acceptor {
                Some(acc) => {
                    let Ok(Ok(tls_stream)) =
                        tokio::time::timeout(Duration::from_secs(30), acc.accept(stream)).await
                    else {
                        return;
                    };
                    serve_connection(TokioIo::new(tls_stream), conn).await;
                }
                None if tls => {}
                None => serve_connection(TokioIo::new(stream), conn).await,
            }
        });
    }
}

async fn serve_connection<I>(io: I, conn: Arc<Conn>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let conn = Arc::clone(&conn);
        async move { Ok::<_, Infallible>(handle(req, conn).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(120))
        .keep_alive(true)
        .serve_connection(io, service)
        .await;
}

async fn handle(req: Request<Incoming>, conn: Arc<Conn>) -> Response<Full<Bytes>> {
    conn.host
        .stats
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let resp = handle_inner(req, &conn).await;
    let latency = conn.host.host.latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    resp
}

fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("Server", HeaderValue::from_static("Microsoft-HTTPAPI/2.0"));
    r
}

fn basic_allowed(conn: &Conn) -> bool {
    conn.tls || conn.settings.allow_basic_over_http
}

/// `401` offering the schemes Windows would offer here.
fn challenge(conn: &Conn, token: Option<&[u8]>) -> Response<Full<Bytes>> {
    let mut r = empty(StatusCode::UNAUTHORIZED);
    let negotiate = match token {
        Some(t) => format!(
            "Negotiate {}",
            base64::engine::general_purpose::STANDARD.encode(t)
        ),
        None => "Negotiate".to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&negotiate) {
        r.headers_mut().append(WWW_AUTHENTICATE, v);
    }
    if token.is_none() && basic_allowed(conn) {
        r.headers_mut().append(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"WSMAN\""),
        );
    }
    r
}

fn refused(conn: &Conn) -> Response<Full<Bytes>> {
    conn.host
        .stats
        .auth_failures
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    challenge(conn, None)
}

fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let v = value.trim();
    let head = v.get(..scheme.len())?;
    let rest = v.get(scheme.len()..)?;
    if head.eq_ignore_ascii_case(scheme) && rest.starts_with(' ') {
        Some(rest.trim())
    } else {
        None
    }
}

async fn handle_inner(req: Request<Incoming>, conn: &Arc<Conn>) -> Response<Full<Bytes>> {
    if !req.uri().path().eq_ignore_ascii_case("/wsman") {
        return empty(StatusCode::NOT_FOUND);
    }
    if req.method() != Method::POST {
        return empty(StatusCode::METHOD_NOT_ALLOWED);
    }
    let auth = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => return empty(StatusCode::PAYLOAD_TOO_LARGE),
    };
    let host = &conn.host.host;
    match auth {
        Some(a) if strip_scheme(&a, "Negotiate").is_some() => {
            let token = strip_scheme(&a, "Negotiate").unwrap_or_default();
            let Ok(token) = base64::engine::general_purpose::STANDARD.decode(token) else {
                *lock(&conn.auth) = ConnAuth::None;
                return refused(conn);
            };
            match ntlm::message_type(&token) {
                Some(1) => {
                    let mut acc = match Acceptor::new(&host.username, &host.password) {
                        Ok(a) => a,
                        Err(_) => return refused(conn),
                    };
                    match acc.step(&token) {
                        Ok(Step::Challenge(ch)) => {
                            *lock(&conn.auth) = ConnAuth::Pending(Box::new(acc));
                            challenge(conn, Some(&ch))
                        }
                        _ => {
                            *lock(&conn.auth) = ConnAuth::None;
                            refused(conn)
                        }
                    }
                }
                Some(3) => {
                    let pending = std::mem::replace(&mut *lock(&conn.auth), ConnAuth::None);
                    let ConnAuth::Pending(mut acc) = pending else {
                        // AUTHENTICATE on a connection that did not send NEGOTIATE:
                        // a client splitting the handshake over pooled connections.
                        conn.host
                            .stats
                            .ntlm_split_legs
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return refused(conn);
                    };
                    match acc.step(&token) {
                        Ok(Step::Done) => {
                            *lock(&conn.auth) = ConnAuth::Ntlm(acc);
                            ntlm_body(conn, &content_type, body).await
                        }
                        _ => refused(conn),
                    }
                }
                _ => {
                    // Kerberos or SPNEGO-wrapped tokens: not offered here.
                    *lock(&conn.auth) = ConnAuth::None;
                    refused(conn)
                }
            }
        }
        Some(a) if strip_scheme(&a, "Basic").is_some() => {
            if !basic_allowed(conn) {
                return refused(conn);
            }
            let raw = strip_scheme(&a, "Basic").unwrap_or_default();
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(raw)
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            let Some((user, password)) = decoded.as_deref().and_then(|s| s.split_once(':')) else {
                return refused(conn);
            };
            if !ntlm::same_user(user, &host.username) || password != host.password {
                return refused(conn);
            }
            if ntlm::is_sealed_content_type(&content_type) {
                return empty(StatusCode::BAD_REQUEST);
            }
            let (status, xml) = soap_reply(conn, &body).await;
            xml_response(status, xml.into_bytes(), SOAP_CONTENT_TYPE)
        }
        Some(_) => refused(conn),
        None => {
            if matches!(&*lock(&conn.auth), ConnAuth::Ntlm(_)) {
                ntlm_body(conn, &content_type, body).await
            } else {
                if ntlm::is_sealed_content_type(&content_type) {
                    conn.host
                        .stats
                        .sealed_without_session
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                challenge(conn, None)
            }
        }
    }
}

fn xml_response(status: StatusCode, body: Vec<u8>, content_type: &str) -> Response<Full<Bytes>> {
    let mut r = empty(status);
    *r.body_mut() = Full::new(Bytes::from(body));
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}

/// A request body on an NTLM-authenticated connection.
async fn ntlm_body(conn: &Arc<Conn>, content_type: &str, body: Bytes) -> Response<Full<Bytes>> {
    if body.is_empty() {
        return empty(StatusCode::OK);
    }
    if ntlm::is_sealed_content_type(content_type) {
        let plain = {
            let parts = match ntlm::parse_sealed(&body) {
                Ok(p) => p,
                Err(_) => return empty(StatusCode::BAD_REQUEST),
            };
            let mut auth = lock(&conn.auth);
            let ConnAuth::Ntlm(acc) = &mut *auth else {
                return challenge(conn, None);
            };
            match acc.unseal(&parts.signature, &parts.sealed) {
                Ok(p) => p,
                Err(_) => {
                    *auth = ConnAuth::None;
                    drop(auth);
                    return refused(conn);
                }
            }
        };
        conn.host
            .stats
            .sealed_requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (status, xml) = soap_reply(conn, &plain).await;
        let sealed = {
            let mut auth = lock(&conn.auth);
            let ConnAuth::Ntlm(acc) = &mut *auth else {
                return challenge(conn, None);
            };
            match acc.seal(xml.as_bytes()) {
                Ok((sig, data)) => ntlm::build_sealed(&sig, &data, xml.len()),
                Err(_) => return empty(StatusCode::INTERNAL_SERVER_ERROR),
            }
        };
        return xml_response(status, sealed, ntlm::SEALED_CONTENT_TYPE);
    }
    if !conn.tls && !conn.settings.allow_unencrypted {
        // Windows with AllowUnencrypted=false.
        *lock(&conn.auth) = ConnAuth::None;
        return refused(conn);
    }
    let (status, xml) = soap_reply(conn, &body).await;
    xml_response(status, xml.into_bytes(), SOAP_CONTENT_TYPE)
}

/// Run the SOAP request; (HTTP status, reply envelope).
async fn soap_reply(conn: &Arc<Conn>, body: &[u8]) -> (StatusCode, String) {
    let machine = conn.host.host.name.clone();
    let Ok(text) = std::str::from_utf8(body) else {
        return (
            StatusCode::BAD_REQUEST,
            Fault::invalid("The request is not UTF-8.").to_xml("", &machine),
        );
    };
    let req = match soap::parse_request(text) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Fault::invalid(&e.to_string()).to_xml("", &machine),
            )
        }
    };
    let user = conn.host.host.username.clone();
    let ip = conn.peer.ip().to_string();
    match conn.host.dispatch(&req, &user, &ip).await {
        Ok((action, body)) => (
            StatusCode::OK,
            soap::envelope(action, &req.message_id, &body),
        ),
        Err(fault) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            fault.to_xml(&req.message_id, &machine),
        ),
    }
}
