//! A native PostgreSQL connector for escr-gateway through tokio-postgres: the worked
//! example of a council's own connector (see `docs/connector-guide.md`). It lives
//! outside the gateway; `src/main.rs` is the council's binary that registers it.
//!
//! ```toml
//! [[sources]]
//! name = "meridian"
//! profile = "vendors/meridian.toml"
//! postgres = { host = "db01", database = "meridian", user = "escr_reader", password_env = "MERIDIAN_DB_PASSWORD" }
//! ```
//!
//! - Statements are prepared (`$1, $2, ...`: `Placeholder::Dollar`); each bound value
//!   is converted to the type the server infers for its parameter (keys arrive as text;
//!   a key that cannot be that type binds NULL and so matches nothing).
//! - Time limits: each statement within `query_timeout_ms`, after which the server is
//!   asked to cancel it; a connection within `acquire_timeout_ms`.
//! - No TLS in this example: use it on loopback or a private network (add
//!   `tokio-postgres-rustls` for anything else).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod};
use escr_connector::{
    Capabilities, Connector, ConnectorError, ConnectorSettings, ErrorKind, Placeholder, RowSet,
    StatementCounter, Value,
};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::Deserialize;
use tokio_postgres::types::{FromSql, ToSql, Type};
use tokio_postgres::NoTls;

/// `[[sources]] postgres = { ... }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub database: String,
    pub user: String,
    /// Environment variable holding the password.
    pub password_env: Option<String>,
    /// File holding the password (relative to the config file).
    pub password_file: Option<PathBuf>,
    /// Connections at most (default 8).
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Time limit to open a connection, in milliseconds (default 5000).
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Time limit to get a connection from the pool, in milliseconds (default 2000).
    #[serde(default = "default_acquire_timeout_ms")]
    pub acquire_timeout_ms: u64,
    /// Time limit of one statement, in milliseconds (default 5000).
    #[serde(default = "default_query_timeout_ms")]
    pub query_timeout_ms: u64,
}

fn default_port() -> u16 {
    5432
}
fn default_pool_size() -> usize {
    8
}
fn default_connect_timeout_ms() -> u64 {
    5000
}
fn default_acquire_timeout_ms() -> u64 {
    2000
}
fn default_query_timeout_ms() -> u64 {
    5000
}

impl PostgresConfig {
    fn password(&self) -> Result<Option<String>, ConnectorError> {
        match (&self.password_env, &self.password_file) {
            (Some(_), Some(_)) => Err(config_error(
                "set either password_env or password_file, not both",
            )),
            (Some(var), None) => std::env::var(var)
                .map(Some)
                .map_err(|_| config_error(format!("environment variable {var} is not set"))),
            (None, Some(file)) => std::fs::read_to_string(file)
                .map(|p| Some(p.trim_end_matches(['\r', '\n']).to_string()))
                .map_err(|e| {
                    config_error(format!(
                        "cannot read password_file {}: {}",
                        file.display(),
                        e.kind()
                    ))
                }),
            (None, None) => Ok(None),
        }
    }
}

fn config_error(message: impl Into<String>) -> ConnectorError {
    ConnectorError::new(ErrorKind::Config, message)
}

impl ConnectorSettings for PostgresConfig {
    fn resolve_paths(&mut self, base: &Path) {
        escr_connector::resolve_files(base, [&mut self.password_file]);
    }
    fn connect(&self) -> Result<Arc<dyn Connector>, ConnectorError> {
        PostgresConnector::new(self).map(|c| Arc::new(c) as Arc<dyn Connector>)
    }
}

pub struct PostgresConnector {
    pool: Pool,
    acquire_timeout: Duration,
    query_timeout: Duration,
    statements: StatementCounter,
}

impl PostgresConnector {
    /// Builds the pool without connecting: a server that is down shows when asked.
    pub fn new(config: &PostgresConfig) -> Result<PostgresConnector, ConnectorError> {
        let mut pg = tokio_postgres::Config::new();
        pg.host(&config.host)
            .port(config.port)
            .dbname(&config.database)
            .user(&config.user)
            .application_name("escr-gateway")
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms));
        if let Some(password) = config.password()? {
            pg.password(password);
        }
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                // A cheap round trip on reuse: a connection the server dropped is replaced.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_millis(config.acquire_timeout_ms)))
            .create_timeout(Some(Duration::from_millis(config.connect_timeout_ms)))
            .build()
            .map_err(|e| config_error(format!("cannot build the pool: {e}")))?;
        Ok(PostgresConnector {
            pool,
            acquire_timeout: Duration::from_millis(config.acquire_timeout_ms),
            query_timeout: Duration::from_millis(config.query_timeout_ms),
            statements: StatementCounter::default(),
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, ConnectorError> {
        match tokio::time::timeout(self.acquire_timeout * 2, self.pool.get()).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(PoolError::Timeout(_))) | Err(_) => Err(ConnectorError::unavailable(
                "no connection within the acquire time limit",
            )),
            Ok(Err(PoolError::Backend(e))) => Err(pg_error(&e)),
            Ok(Err(e)) => Err(ConnectorError::unavailable(format!("pool: {e}"))),
        }
    }
}

/// A PostgreSQL error as a connector error: the SQLSTATE decides the kind; the message
/// names only the SQLSTATE, because the server's text can quote values and SQL.
fn pg_error(e: &tokio_postgres::Error) -> ConnectorError {
    let Some(db) = e.as_db_error() else {
        // No server answer: connecting failed, or the connection was lost.
        return ConnectorError::unavailable(if e.is_closed() {
            "connection closed".to_string()
        } else {
            "cannot reach the server".to_string()
        });
    };
    let code = db.code().code();
    let kind = match &code[..2] {
        "28" => ErrorKind::Auth,
        "08" | "53" | "57" if code != "57014" => ErrorKind::Unavailable,
        "3D" => ErrorKind::Unavailable,
        _ if code == "57014" => ErrorKind::Timeout,
        _ => ErrorKind::Query,
    };
    ConnectorError::new(kind, format!("SQLSTATE {code}"))
}

/// A bound value converted to the parameter's type as the server inferred it.
fn bind(value: &Value, ty: &Type) -> Result<Box<dyn ToSql + Sync + Send>, ConnectorError> {
    let text = value.as_key_text();
    let null = || -> Box<dyn ToSql + Sync + Send> { Box::new(Option::<String>::None) };
    Ok(match *ty {
        _ if value.is_null() => null(),
        Type::INT2 => Box::new(text.and_then(|t| t.parse::<i16>().ok())),
        Type::INT4 => Box::new(text.and_then(|t| t.parse::<i32>().ok())),
        Type::INT8 => Box::new(text.and_then(|t| t.parse::<i64>().ok())),
        Type::FLOAT4 => Box::new(text.and_then(|t| t.parse::<f32>().ok())),
        Type::FLOAT8 => Box::new(text.and_then(|t| t.parse::<f64>().ok())),
        Type::NUMERIC => Box::new(text.and_then(|t| t.parse::<Decimal>().ok())),
        Type::BOOL => Box::new(match value {
            Value::Bool(b) => Some(*b),
            Value::Int(i) => Some(*i != 0),
            _ => text.map(|t| matches!(t.to_ascii_uppercase().as_str(), "1" | "T" | "TRUE" | "Y")),
        }),
        Type::DATE => Box::new(match value {
            Value::Date(d) => Some(*d),
            Value::DateTime(t) => Some(t.date()),
            _ => text.and_then(|t| NaiveDate::parse_from_str(&t, "%Y-%m-%d").ok()),
        }),
        Type::TIMESTAMP => Box::new(timestamp(value)),
        // The gateway's date-times are wall-clock times; a timestamptz is read as UTC.
        Type::TIMESTAMPTZ => Box::new(timestamp(value).map(|t| t.and_utc())),
        Type::BYTEA => Box::new(match value {
            Value::Bytes(b) => Some(b.clone()),
            _ => text.map(String::into_bytes),
        }),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
            // The value as written (not trimmed, as a key would be): text round-trips.
            Box::new(match value {
                Value::Text(s) => Some(s.clone()),
                other => other.as_key_text(),
            })
        }
        ref other => {
            return Err(ConnectorError::query(format!(
                "cannot bind a parameter of type {}",
                other.name()
            )))
        }
    })
}

fn timestamp(value: &Value) -> Option<NaiveDateTime> {
    match value {
        Value::DateTime(t) => Some(*t),
        Value::Date(d) => d.and_hms_opt(0, 0, 0),
        Value::Text(s) => ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d"]
            .iter()
            .find_map(|f| {
                NaiveDateTime::parse_from_str(s.trim(), f).ok().or_else(|| {
                    NaiveDate::parse_from_str(s.trim(), f)
                        .ok()?
                        .and_hms_opt(0, 0, 0)
                })
            }),
        _ => None,
    }
}

/// One cell, whatever the column's type: the types below, and an error naming any other.
struct Cell(Value);

impl<'a> FromSql<'a> for Cell {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Cell(match *ty {
            Type::BOOL => Value::Bool(bool::from_sql(ty, raw)?),
            Type::INT2 => Value::Int(i16::from_sql(ty, raw)?.into()),
            Type::INT4 => Value::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
            Type::OID => Value::Int(u32::from_sql(ty, raw)?.into()),
            Type::FLOAT4 => Value::Float(f32::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Value::Float(f64::from_sql(ty, raw)?),
            // Decimals arrive as Float, as from every engine (see escr_connector::Value).
            Type::NUMERIC => Value::Float(
                Decimal::from_sql(ty, raw)?
                    .to_f64()
                    .ok_or("a NUMERIC outside f64")?,
            ),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                Value::Text(String::from_sql(ty, raw)?)
            }
            Type::DATE => Value::Date(NaiveDate::from_sql(ty, raw)?),
            Type::TIMESTAMP => Value::DateTime(NaiveDateTime::from_sql(ty, raw)?),
            Type::TIMESTAMPTZ => Value::DateTime(DateTime::<Utc>::from_sql(ty, raw)?.naive_utc()),
            Type::BYTEA => Value::Bytes(raw.to_vec()),
            Type::JSON | Type::JSONB => {
                Value::Text(serde_json::Value::from_sql(ty, raw)?.to_string())
            }
            Type::UUID if raw.len() == 16 => {
                let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
                Value::Text(format!(
                    "{}-{}-{}-{}-{}",
                    &hex[..8],
                    &hex[8..12],
                    &hex[12..16],
                    &hex[16..20],
                    &hex[20..]
                ))
            }
            ref other => return Err(format!("unsupported column type {}", other.name()).into()),
        }))
    }
    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Cell(Value::Null))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

#[async_trait]
impl Connector for PostgresConnector {
    fn engine(&self) -> &'static str {
        "postgres"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // The protocol allows 65,535 parameters; large IN lists plan slowly.
            max_batch: 5_000,
            placeholder: Placeholder::Dollar,
        }
    }

    async fn query(&self, sql: &str, params: &[Value]) -> Result<RowSet, ConnectorError> {
        let client = self.client().await?;
        self.statements.inc();
        let cancel = client.cancel_token();
        let run = async {
            let statement = client.prepare_cached(sql).await.map_err(|e| pg_error(&e))?;
            let bound = params
                .iter()
                .zip(statement.params())
                .map(|(v, ty)| bind(v, ty))
                .collect::<Result<Vec<_>, _>>()?;
            let refs: Vec<&(dyn ToSql + Sync)> = bound
                .iter()
                .map(|b| b.as_ref() as &(dyn ToSql + Sync))
                .collect();
            let rows = client
                .query(&statement, &refs)
                .await
                .map_err(|e| pg_error(&e))?;
            let columns: Vec<String> = statement
                .columns()
                .iter()
                .map(|c| c.name().to_string())
                .collect();
            let mut out = RowSet {
                columns,
                rows: Vec::with_capacity(rows.len()),
            };
            for row in &rows {
                let mut values = Vec::with_capacity(row.len());
                for i in 0..row.len() {
                    let cell: Cell = row.try_get(i).map_err(|e| {
                        // The column's position and type, never its value.
                        let ty = row.columns()[i].type_().name().to_string();
                        ConnectorError::query(format!(
                            "column {} ({ty}): {}",
                            i + 1,
                            source_text(&e)
                        ))
                    })?;
                    values.push(cell.0);
                }
                out.rows.push(values);
            }
            Ok(out)
        };
        match tokio::time::timeout(self.query_timeout, run).await {
            Ok(result) => result,
            Err(_) => {
                // Ask the server to stop the statement; the connection stays usable.
                tokio::spawn(async move {
                    let _ = cancel.cancel_query(NoTls).await;
                });
                Err(ConnectorError::timeout("statement exceeded its time limit"))
            }
        }
    }

    async fn ping(&self) -> Result<(), ConnectorError> {
        self.query("SELECT 1", &[]).await.map(|_| ())
    }

    fn statements_executed(&self) -> u64 {
        self.statements.get()
    }
}

/// The decoding error's own text (ours above, or tokio-postgres' type mismatch).
fn source_text(e: &tokio_postgres::Error) -> String {
    std::error::Error::source(e)
        .map(|s| s.to_string())
        .unwrap_or_else(|| "cannot be read".to_string())
}
