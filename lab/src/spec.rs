//! The lab spec (YAML). Being written.
