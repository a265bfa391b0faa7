//! Test support: servers and fixtures shared by the integration tests.
pub mod demo;
pub mod pg;
pub mod shipped;
pub mod tds;
