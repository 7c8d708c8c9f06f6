//! pushscan: agentless push scanner.
pub mod inventory;
pub mod model;
pub mod parser;
