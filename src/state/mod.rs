//! Where the gateway's own state is kept (`[state]` of `escr.toml`): the consent
//! registry, the audit log and the published identity index. `sqlite` (the default)
//! keeps today's files, one process per council; `postgres` keeps them in one database
//! that several stateless replicas share behind a load balancer. This module knows the
//! settings, the pool and the versioned migrations; the stores themselves live with
//! their subsystems (`consent::registry`, `consent::audit`, `identity::shared`).

use std::path::PathBuf;

use serde::Deserialize;

pub mod postgres;

pub use postgres::PgStore;

/// `[state]`.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    #[serde(default)]
    pub backend: Backend,
    /// This replica's name in its audit chains' ids (default `gateway`); letters,
    /// digits, `-`, `_` and `.`.
    pub replica: Option<String>,
    /// `[state.postgres]`, needed with `backend = "postgres"`.
    pub postgres: Option<PostgresConfig>,
    /// Seconds between checks for a newer published identity index, besides its
    /// notification (default 10).
    pub index_poll_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The registry and audit files named by `policy.toml`'s `[storage]`, the index at
    /// `index.path`.
    #[default]
    Sqlite,
    /// One PostgreSQL database shared by every replica.
    Postgres,
}

/// `[state.postgres]`: the URL is a secret (it carries the password), so it comes from
/// an environment variable or a file, never from the config itself.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Environment variable holding `postgres://user:password@host:port/database`.
    pub url_env: Option<String>,
    /// File holding that URL (wins when both are given and the variable is unset).
    pub url_file: Option<PathBuf>,
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Longest wait for a free connection of the pool.
    #[serde(default = "default_acquire_timeout_ms")]
    pub acquire_timeout_ms: u64,
    /// The server cancels a statement running longer (`statement_timeout`).
    #[serde(default = "default_statement_timeout_ms")]
    pub statement_timeout_ms: u64,
}

fn default_pool_size() -> usize {
    8
}
fn default_connect_timeout_ms() -> u64 {
    3000
}
fn default_acquire_timeout_ms() -> u64 {
    2000
}
fn default_statement_timeout_ms() -> u64 {
    5000
}

impl PostgresConfig {
    /// The URL from the variable or the file; the error names which and why, never the
    /// URL.
    pub fn url(&self) -> Result<String, StateError> {
        if let Some(var) = &self.url_env {
            if let Ok(url) = std::env::var(var) {
                if !url.trim().is_empty() {
                    return Ok(url.trim().to_string());
                }
            }
            if self.url_file.is_none() {
                return Err(StateError::Config(format!(
                    "[state.postgres] url_env: the variable `{var}` is not set"
                )));
            }
        }
        match &self.url_file {
            Some(file) => std::fs::read_to_string(file)
                .map(|s| s.trim().to_string())
                .map_err(|e| {
                    StateError::Config(format!(
                        "[state.postgres] url_file: cannot read {}: {e}",
                        file.display()
                    ))
                }),
            None => Err(StateError::Config(
                "[state.postgres]: give url_env or url_file (the URL is a secret, never inline)"
                    .into(),
            )),
        }
    }
}

impl StateConfig {
    /// The checks that need no database, as (key, reason) for the caller to place.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(r) = &self.replica {
            if r.is_empty()
                || r.len() > 64
                || !r
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err((
                    "replica",
                    format!("state.replica `{r}`: letters, digits, `-`, `_` and `.`, up to 64"),
                ));
            }
        }
        match (self.backend, &self.postgres) {
            (Backend::Postgres, None) => Err((
                "backend",
                "[state] backend = \"postgres\" needs a [state.postgres] section with url_env or url_file".into(),
            )),
            (Backend::Postgres, Some(pg)) => {
                if pg.url_env.is_none() && pg.url_file.is_none() {
                    return Err((
                        "state.postgres",
                        "[state.postgres]: give url_env or url_file (the URL is a secret, never inline)".into(),
                    ));
                }
                if pg.pool_size == 0 || pg.pool_size > 1000 {
                    return Err((
                        "pool_size",
                        "[state.postgres] pool_size: from 1 to 1000".into(),
                    ));
                }
                for (key, v) in [
                    ("connect_timeout_ms", pg.connect_timeout_ms),
                    ("acquire_timeout_ms", pg.acquire_timeout_ms),
                    ("statement_timeout_ms", pg.statement_timeout_ms),
                ] {
                    if v == 0 {
                        return Err((key, format!("[state.postgres] {key}: more than 0")));
                    }
                }
                Ok(())
            }
            (Backend::Sqlite, Some(_)) => Err((
                "state.postgres",
                "[state.postgres] is given but backend is \"sqlite\": set backend = \"postgres\" or remove the section".into(),
            )),
            (Backend::Sqlite, None) => Ok(()),
        }
    }

    pub fn index_poll_secs(&self) -> u64 {
        self.index_poll_secs.unwrap_or(10).max(1)
    }

    pub fn replica_name(&self) -> &str {
        self.replica.as_deref().unwrap_or("gateway")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store config: {0}")]
    Config(String),
    /// The database cannot be reached (down, refused, no connection in time).
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    #[error("state store schema version {found} is newer than this gateway knows ({known}): upgrade the gateway (or point it at another database)")]
    SchemaTooNew { found: i32, known: i32 },
    #[error("state store: {0}")]
    Db(String),
}

impl StateError {
    /// A PostgreSQL error without its server text where that could quote values: the
    /// SQLSTATE names the failure; our own raised messages (append-only) and privilege
    /// errors are kept, they name only tables.
    pub fn from_pg(e: &tokio_postgres::Error) -> StateError {
        match e.as_db_error() {
            Some(db) => {
                let code = db.code().code();
                if matches!(code, "P0001" | "42501" | "57014") {
                    StateError::Db(format!("{} (SQLSTATE {code})", db.message()))
                } else {
                    StateError::Db(format!("SQLSTATE {code}"))
                }
            }
            None => StateError::Unavailable(format!("{e}")),
        }
    }
}

impl From<tokio_postgres::Error> for StateError {
    fn from(e: tokio_postgres::Error) -> Self {
        StateError::from_pg(&e)
    }
}
