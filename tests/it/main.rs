//! Integration tests: one binary. Support servers live in `tests/support`.

mod gateway;
#[path = "../support/mod.rs"]
mod support;
