//! The connector registry: which engine names a `[[sources]]` entry may use, and the
//! settings type that reads each one's section. The `escr` binary is built with the
//! four built-in engines; a council's own binary adds its connectors without editing
//! the gateway:
//!
//! ```no_run
//! # #[derive(Debug, serde::Deserialize)] struct PostgresConfig;
//! # impl escr_connector::ConnectorSettings for PostgresConfig {
//! #     fn connect(&self) -> Result<std::sync::Arc<dyn escr_connector::Connector>, escr_connector::ConnectorError> { unimplemented!() }
//! # }
//! use escr_gateway::record::registry::ConnectorRegistry;
//! fn main() -> std::process::ExitCode {
//!     escr_gateway::main_with(ConnectorRegistry::builtin().with::<PostgresConfig>("postgres"))
//! }
//! ```

use escr_connector::ConnectorSettings;
use serde::de::DeserializeOwned;

type Reader = fn(toml::Value) -> Result<Box<dyn ConnectorSettings>, String>;

/// Engine names and how to read their config sections.
#[derive(Clone)]
pub struct ConnectorRegistry {
    engines: Vec<(&'static str, Reader)>,
}

fn read<S: ConnectorSettings + DeserializeOwned>(
    section: toml::Value,
) -> Result<Box<dyn ConnectorSettings>, String> {
    S::deserialize(section)
        .map(|s| Box::new(s) as Box<dyn ConnectorSettings>)
        .map_err(|e| e.message().to_string())
}

impl ConnectorRegistry {
    /// No engines at all.
    pub fn empty() -> ConnectorRegistry {
        ConnectorRegistry {
            engines: Vec::new(),
        }
    }

    /// The engines built into `escr`: `sqlite`, `mysql`, `mssql`, `odbc`.
    pub fn builtin() -> ConnectorRegistry {
        ConnectorRegistry::empty()
            .with::<escr_sqlite::SqliteConfig>("sqlite")
            .with::<escr_mysql::MysqlConfig>("mysql")
            .with::<escr_mssql::MssqlConfig>("mssql")
            .with::<escr_odbc::OdbcConfig>("odbc")
    }

    /// Add an engine: `[[sources]] <engine> = { ... }` is read as `S`. A name given
    /// twice keeps the later type.
    pub fn with<S: ConnectorSettings + DeserializeOwned>(mut self, engine: &'static str) -> Self {
        self.engines.retain(|(name, _)| *name != engine);
        self.engines.push((engine, read::<S>));
        self
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.engines.iter().map(|(name, _)| *name).collect()
    }

    pub fn knows(&self, engine: &str) -> bool {
        self.engines.iter().any(|(name, _)| *name == engine)
    }

    /// Read an engine's section; `None` for an engine it does not know.
    pub fn read(
        &self,
        engine: &str,
        section: toml::Value,
    ) -> Option<Result<Box<dyn ConnectorSettings>, String>> {
        let (_, reader) = self.engines.iter().find(|(name, _)| *name == engine)?;
        Some(reader(section))
    }
}

impl Default for ConnectorRegistry {
    fn default() -> Self {
        ConnectorRegistry::builtin()
    }
}

impl std::fmt::Debug for ConnectorRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}
