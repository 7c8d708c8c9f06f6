//! Running commands over WinRM: one `winrm-rs` client and one remote shell
//! per host, reused for every command of the sweep.
//!
//! We drive the WS-Management operations ourselves (Command, Receive,
//! Signal) instead of winrm-rs' `run_command` so that output is capped as it
//! arrives, a timeout terminates the remote process (Signal terminate) and
//! the shell survives for the next command.

use std::time::{Duration, Instant};

use winrm_rs::{WinrmClient, WinrmError};

use crate::model::HostClass;
use crate::transport::{push_capped, ExecOutcome, TResult, TransportError};

/// How long the cleanup calls (terminate, delete shell) may take.
const CLEANUP_LIMIT: Duration = Duration::from_secs(10);

pub(super) struct Remote {
    client: WinrmClient,
    /// The address as the client's URLs use it.
    host: String,
    shell_id: String,
}

impl Remote {
    /// Builds the client and opens the shell; this is where authentication
    /// and TLS verification happen, so their failures are classified here.
    pub async fn open(client: WinrmClient, host: String, limit: Duration) -> TResult<Remote> {
        // A 401 on a connection that had finished its handshake is the pool race below, and
        // the handshake proved the password, so sending the Create again cannot lock an
        // account; at worst the server holds one more idle shell, which it expires. A 401 to
        // the handshake itself ("authentication rejected") may be a wrong password: not resent.
        let create = async {
            let mut tries = 0;
            loop {
                match client.create_shell(&host).await {
                    Err(e) if tries < RACE_RETRIES && lost_authenticated_connection(&e) => {
                        tries += 1;
                        tracing::debug!("winrm: shell request refused on a connection without the session; sending it again ({tries})");
                    }
                    r => return r,
                }
            }
        };
        let shell_id = match tokio::time::timeout(limit, create).await {
            Ok(Ok(id)) => id,
            Ok(Err(e)) => return Err(classify("winrm", &e)),
            Err(_) => {
                return Err(TransportError::new(
                    HostClass::Unreachable,
                    format!("winrm: no shell after {}s", limit.as_secs()),
                ))
            }
        };
        Ok(Remote {
            client,
            host,
            shell_id,
        })
    }

    /// Runs one command line in the shell. Output beyond `cap` bytes (stdout
    /// and stderr each) is dropped and counted; at `timeout` the command is
    /// terminated and `timed_out` set.
    pub async fn run(&self, line: &str, timeout: Duration, cap: usize) -> TResult<ExecOutcome> {
        let command_id = retrying(|| {
            self.client
                .execute_command(&self.host, &self.shell_id, line, &[])
        })
        .await
        .map_err(|e| classify("winrm command", &e))?;
        let mut out = ExecOutcome::default();
        let deadline = Instant::now() + timeout;
        let polled = tokio::time::timeout_at(deadline.into(), async {
            loop {
                let r = retrying(|| {
                    self.client
                        .receive_output(&self.host, &self.shell_id, &command_id)
                })
                .await?;
                push_capped(&mut out.stdout, &r.stdout, cap, &mut out.truncated_bytes);
                push_capped(&mut out.stderr, &r.stderr, cap, &mut out.truncated_bytes);
                if r.done {
                    return Ok::<_, WinrmError>(r.exit_code);
                }
            }
        })
        .await;
        match polled {
            Ok(Ok(code)) => {
                // Windows exit codes are DWORDs; NTSTATUS crash codes arrive
                // as negative i32 and are reported as the unsigned value.
                out.exit_code = code.map(|c| i64::from(c as u32));
            }
            Ok(Err(e)) => {
                self.terminate(&command_id).await;
                return Err(classify("winrm receive", &e));
            }
            Err(_) => out.timed_out = true,
        }
        // Frees the command on the host (and kills it after a timeout).
        self.terminate(&command_id).await;
        Ok(out)
    }

    async fn terminate(&self, command_id: &str) {
        let signal = retrying(|| {
            self.client
                .signal_terminate(&self.host, &self.shell_id, command_id)
        });
        if let Ok(Err(e)) = tokio::time::timeout(CLEANUP_LIMIT, signal).await {
            tracing::debug!(host = %self.host, "terminate: {e}");
        }
    }

    /// Deletes the shell (best effort, bounded).
    pub async fn close(&self) {
        let delete = retrying(|| self.client.delete_shell(&self.host, &self.shell_id));
        let _ = tokio::time::timeout(CLEANUP_LIMIT, delete).await;
    }
}

/// How often a request the server refused unprocessed is sent again.
const RACE_RETRIES: usize = 3;

/// Runs one WS-Management request, sending it again when it was refused
/// because it went out on a connection without the NTLM session.
///
/// winrm-rs 1.4.1 keeps NTLM-sealed connections in hyper's pool, which on a
/// multi-thread runtime sometimes sends the next request on a fresh
/// connection before the previous one is back (the lab measured 0.5-18% of
/// commands, lab/README.md). The server answers such a request 401 at the
/// HTTP layer, before WinRM sees it, so sending it again is safe. Only used
/// after the shell is open: the password is then known to be right, so a
/// repeated "authentication rejected" cannot lock an account.
async fn retrying<T, F, Fut>(mut op: F) -> Result<T, WinrmError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, WinrmError>>,
{
    let mut tries = 0;
    loop {
        match op().await {
            Err(e) if tries < RACE_RETRIES && lost_session(&e) => {
                tries += 1;
                tracing::debug!("winrm: request refused on a connection without the session; sending it again ({tries})");
            }
            r => return r,
        }
    }
}

/// The two faces of winrm-rs' pooled-connection race: a 401 to a request on
/// a connection thought authenticated, and a handshake whose legs were split.
fn lost_session(e: &WinrmError) -> bool {
    let text = e.to_string();
    matches!(e, WinrmError::AuthFailed(_) | WinrmError::Ntlm(_))
        && (text.contains("HTTP 401 to a") || text.contains("authentication rejected"))
}

/// A 401 to a request on a connection whose handshake had succeeded (never a refused
/// handshake, which a wrong password also causes).
fn lost_authenticated_connection(e: &WinrmError) -> bool {
    matches!(e, WinrmError::AuthFailed(_) | WinrmError::Ntlm(_))
        && e.to_string().contains("on an authenticated connection")
}

/// Sorts a winrm-rs error into the class the host ends in, with the cause
/// chain (reqwest's own message names only the URL).
pub(super) fn classify(step: &str, e: &WinrmError) -> TransportError {
    let mut text = e.to_string();
    // winrm-rs does not chain reqwest's error as a source: walk it directly
    // (reqwest's own message names only the URL; the cause is below it).
    let mut src = match e {
        WinrmError::Http(h) => std::error::Error::source(h),
        other => std::error::Error::source(other),
    };
    while let Some(s) = src {
        let t = s.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        src = s.source();
    }
    let lower = text.to_ascii_lowercase();
    let class = match e {
        WinrmError::AuthFailed(_) | WinrmError::Ntlm(_) => HostClass::AuthFailed,
        WinrmError::Http(_) if lower.contains("certificate") => HostClass::HostKeyRejected,
        WinrmError::Http(h) if h.is_connect() || h.is_timeout() => HostClass::Unreachable,
        WinrmError::Http(h) if h.status().is_some_and(|s| s.as_u16() == 401) => {
            HostClass::AuthFailed
        }
        _ => HostClass::Error,
    };
    let message = match class {
        HostClass::HostKeyRejected => format!(
            "{step}: TLS certificate not trusted ({text}); give the issuing CA with --ca-cert"
        ),
        _ => format!("{step}: {text}"),
    };
    TransportError::new(class, crate::sanitize::display(&message, 400))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_401_after_a_finished_handshake_resends_the_shell_request() {
        let race = WinrmError::AuthFailed(
            "HTTP 401 to a sealed NTLM request on an authenticated connection: the connection \
             no longer carries the NTLM session"
                .into(),
        );
        assert!(lost_authenticated_connection(&race));
        let wrong_password = WinrmError::AuthFailed("authentication rejected (HTTP 401)".into());
        assert!(!lost_authenticated_connection(&wrong_password));
        assert!(
            lost_session(&wrong_password),
            "after the shell opened it is the race"
        );
    }
}
