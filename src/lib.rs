//! escr-gateway: a virtual Electronic Social Care Record over legacy databases.
//!
//! The subsystems, from the bottom up (each uses only those below it; see
//! ARCHITECTURE.md): [`demo`] the embedded demo estate; [`state`] where the gateway's own state is kept
//! (SQLite files, or a PostgreSQL shared by replicas); [`record`] reading the legacy
//! systems; [`identity`] which source records are one person; [`consent`] who is
//! asking, what they may see and what they saw; [`reports`] the minimum data set and
//! indicators; [`api`] HTTP and GraphQL. [`config`] reads the gateway's config file.

pub mod api;
pub mod config;
pub mod consent;
pub mod demo;
pub mod identity;
pub mod record;
pub mod reports;
pub mod state;

pub mod cli;

/// mimalloc for every binary linking the gateway (the server, examples, tests):
/// mapping legacy rows allocates a string per cell, and records are built on the
/// blocking threads that read them and freed on the workers that count them. With
/// glibc's malloc, allocation and cross-thread frees were more than half the CPU of
/// the 100,000-person indicators (perf, `bench_reports`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub use cli::main_with;
