//! pushscan: agentless push scanner.
pub mod app;
pub mod cleanup;
pub mod credentials;
pub mod exit;
pub mod inventory;
pub mod journal;
mod located;
pub mod model;
pub mod parser;
pub mod pipeline;
pub mod playbook;
pub mod progress;
pub mod report;
pub mod sanitize;
pub mod sweep;
pub mod template;
pub mod transport;
