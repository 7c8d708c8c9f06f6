//! Shared helpers for the integration tests: each test file that needs them says `mod common;`.
//! Everything here starts real services on loopback (never mocks); see `sshd` for the OpenSSH
//! fleet.
#![allow(dead_code)]

pub mod sshd;
