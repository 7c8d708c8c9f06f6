//! The journal: the SQLite store ([`crate::store::sqlite`]) under the name the engine,
//! cleanup, contain and the commands still use, with the store's record types. Code that
//! should work with any backend takes [`crate::store::Store`] / [`crate::store::StoreReader`].

pub use crate::store::sqlite::{create_private_dir, lease_owner, Journal, Reader, SCHEMA_VERSION};
pub use crate::store::*;
