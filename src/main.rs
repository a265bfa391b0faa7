//! `escr`, with the built-in connectors (SQLite, MySQL/MariaDB, SQL Server, ODBC). A
//! council's own binary is the same line with its own registry.

fn main() -> std::process::ExitCode {
    escr_gateway::main_with(escr_gateway::record::registry::ConnectorRegistry::builtin())
}
