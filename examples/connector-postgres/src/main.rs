//! A council's own `escr` binary: the gateway's CLI with the built-in connectors and
//! the native PostgreSQL one, `[[sources]] postgres = { ... }` in the config.

use escr_connector_postgres::PostgresConfig;
use escr_gateway::record::registry::ConnectorRegistry;

fn main() -> std::process::ExitCode {
    escr_gateway::main_with(ConnectorRegistry::builtin().with::<PostgresConfig>("postgres"))
}
