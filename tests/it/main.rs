//! Integration tests: one binary. Support servers live in `tests/support`.

mod gateway;
mod mysql;
#[path = "../support/mod.rs"]
mod support;
