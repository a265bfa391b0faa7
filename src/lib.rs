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

pub use cli::main_with;
