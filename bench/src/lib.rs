//! Shared pieces of the load generators (the binaries in `src/`).

pub mod common;
