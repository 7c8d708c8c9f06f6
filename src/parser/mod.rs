//! Result parsers.
pub mod emocheck;
