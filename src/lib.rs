//! pushscan: agentless push scanner.
//!
//! The layers and the way data flows through them are in `docs/architecture.md`. Public
//! modules are what `main.rs`, the lab and the tests use; the engine's inner parts (the
//! per-host pipeline, host plans, leftovers, cleanup, templates, sanitizing, limits) stay
//! private.
pub mod app;
pub mod child_env;
mod cleanup;
pub mod contain;
mod digest;
pub mod events;
pub mod exit;
pub mod fleet;
mod identity;
pub mod inventory;
mod leftovers;
mod limits;
mod located;
pub mod model;
pub mod notify;
pub mod parser;
mod pipeline;
mod plan;
pub mod playbook;
pub mod progress;
pub mod report;
pub mod rollout;
mod sanitize;
pub mod schedule;
pub mod store;
pub mod sweep;
mod template;
pub mod transport;
pub mod units;
