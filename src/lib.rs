//! escr-gateway: a virtual Electronic Social Care Record over legacy databases.
//!
//! The subsystems, from the bottom up (each uses only those below it; see
//! ARCHITECTURE.md): [`demo`] the embedded demo estate; [`record`] reading the legacy
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

// The CLI (`src/main.rs`) is compiled here too, so that a council's own binary can run
// it with its own connectors; it names this crate as the binary does.
extern crate self as escr_gateway;
#[path = "main.rs"]
mod cli;

/// Run the `escr` command line with the connectors `registry` names: the whole of a
/// council's own binary is `fn main() -> ExitCode { escr_gateway::main_with(...) }`.
pub fn main_with(registry: record::registry::ConnectorRegistry) -> std::process::ExitCode {
    match cli::run(registry) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:?}");
            std::process::ExitCode::FAILURE
        }
    }
}
