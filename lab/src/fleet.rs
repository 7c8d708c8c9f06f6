//! Lab fleet orchestration (up/down/status). Being written.
