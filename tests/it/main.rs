//! Integration tests: one binary. Support servers live in `tests/support`.

#[path = "../support/mod.rs"]
mod support;
