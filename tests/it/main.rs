//! Integration tests: one binary. Support servers live in `tests/support`.

mod consent;
mod documents;
mod engines;
mod federation;
mod gateway;
mod layout;
mod linkage;
mod lists;
mod mssql;
mod mysql;
mod odbc;
mod ops;
mod portal;
mod readme;
mod replicas;
mod reporting;
mod reports;
#[path = "../support/mod.rs"]
mod support;
mod vendors;
