//! Exit codes and the error type that carries one.
//!
//! 0, 1 and 2 describe the fleet (clean / detection / incomplete), so that a
//! cron job or CI step can act on them; 64 and up follow BSD `sysexits.h`
//! and mean pushscan itself could not do its job.

/// Every host checked and nothing detected.
pub const OK: i32 = 0;
/// At least one host has a detection.
pub const DETECTED: i32 = 1;
/// Nothing detected, but some hosts could not be checked.
pub const INCOMPLETE: i32 = 2;
/// Bad command line (flags, --limit pattern).
pub const USAGE: i32 = 64;
/// Invalid inventory, playbook or template.
pub const CONFIG: i32 = 65;
/// The checker binary is missing or does not match its pin.
pub const CHECKER: i32 = 66;
/// Internal error.
pub const SOFTWARE: i32 = 70;
/// The state directory or journal cannot be used.
pub const IO: i32 = 74;

/// An error that ends the program with a specific exit code.
#[derive(Debug)]
pub struct Fail {
    pub code: i32,
    pub error: anyhow::Error,
}

impl Fail {
    pub fn new(code: i32, error: impl Into<anyhow::Error>) -> Fail {
        Fail {
            code,
            error: error.into(),
        }
    }
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

/// Adds an exit code to any error.
pub trait WithCode<T> {
    fn code(self, code: i32) -> Result<T, Fail>;
}

impl<T, E: Into<anyhow::Error>> WithCode<T> for Result<T, E> {
    fn code(self, code: i32) -> Result<T, Fail> {
        self.map_err(|e| Fail::new(code, e))
    }
}
