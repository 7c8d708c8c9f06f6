//! pushscan-lab: a fleet of simulated Windows hosts on loopback addresses.
//!
//! Real parts: Samba `smbd` serves each host's `ADMIN$` and `C$` shares.
//! Simulated parts: the WinRM endpoint (WS-Management / Windows Remote
//! Shell over HTTP(S), NTLM with sealing) and command execution (a stand-in
//! checker and a small `cmd /c` subset run on this machine against each
//! host's directory tree). Wine-backed hosts ([`wine`]) run every command
//! through Wine's real `cmd.exe` in a WINEPREFIX of their own, with a few
//! stub programs emulated (`docs/lab-wine.md`). See `lab/README.md`.

pub mod demo;
pub mod fleet;
pub mod samba;
pub mod spec;
pub mod svcctl;
pub mod wine;
pub mod winrm;
