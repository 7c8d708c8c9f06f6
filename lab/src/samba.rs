//! Samba configuration for the lab. Being written.
