//! Sources reachable through an ODBC driver, via odbc-api over a statically built unixODBC.
//!
//! ODBC calls block, so every statement runs on tokio's blocking pool with a connection
//! from a small pool (`Connection` is `Send`, not `Sync`: one thread uses it at a time).
//! Rows are fetched in blocks where the driver and the column types allow it, row by row
//! otherwise (`fetch = "row"` forces that for drivers such as MDBTools that fail with block
//! cursors). A statement past its time limit is abandoned by the caller at once and
//! cancelled with `SQLCancel` from another thread.
//!
//! ```toml
//! [sources.odbc]
//! connection_string = "Driver={MariaDB};Server=db.example;Database=carelog;Uid=escr_reader;"
//! password_env = "CARELOG_DB_PASSWORD"     # added as PWD={...}
//! # or: connection_string_env = "CARELOG_ODBC" / connection_string_file = "..."
//! pool_size = 4
//! acquire_timeout_ms = 5000
//! query_timeout_ms = 5000
//! fetch = "block"            # "row" for drivers that fail with block cursors (MDBTools)
//! ```
//!
//! Driver notes, from the tests on this machine: the SQLite3 driver reports BLOB columns
//! as CHAR and BIGINT with a C type code (corrected here from the driver's type names),
//! returns REAL values with 15 significant digits and binds timestamps with milliseconds
//! only. psqlODBC reports booleans as text unless the connection string has
//! `BoolsAsChar=0`, and cannot type a bare `? IS NULL` (write `CAST(? AS ...)`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use escr_connector::{
    Capabilities, Connector, ConnectorError, ErrorKind, Placeholder, RowSet, StatementCounter,
    Value,
};
use odbc_api::buffers::{BufferDesc, ColumnarDynBuffer};
use odbc_api::handles::{AsStatementRef, Statement};
use odbc_api::parameter::{InputParameter, VarBinaryBox, VarCharBox, WithDataType};
use odbc_api::sys::{Date as OdbcDate, Timestamp as OdbcTimestamp};
use odbc_api::{
    Bit, Connection, ConnectionOptions, Cursor, DataType, Environment, Nullable, ResultSetMetadata,
};
use serde::Deserialize;

/// How rows come back from the driver.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Fetch {
    /// Block cursors (many rows per driver call); statements with long or unsized
    /// columns still go row by row.
    #[default]
    Block,
    /// One row at a time, one `SQLGetData` per cell: for drivers that fail with block
    /// cursors (MDBTools).
    Row,
}

/// `[sources.<name>.odbc]` in the gateway config. Secrets never appear here: the whole
/// connection string comes from an environment variable or a file, or a password from
/// one of those is added as `PWD`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OdbcConfig {
    /// Connection string without secrets (`Driver={MariaDB};Server=...;Uid=...;`).
    #[serde(default)]
    pub connection_string: Option<String>,
    /// Name of an environment variable holding the whole connection string.
    #[serde(default)]
    pub connection_string_env: Option<String>,
    /// File holding the whole connection string.
    #[serde(default)]
    pub connection_string_file: Option<PathBuf>,
    /// Environment variable holding the password, added to the connection string as `PWD`.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the password, added as `PWD`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Connections kept open (default 4).
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Longest wait for a connection, including logging in (default 5000 ms).
    #[serde(default = "default_acquire_timeout_ms")]
    pub acquire_timeout_ms: u64,
    /// Statement time limit (default 5000 ms).
    #[serde(default = "default_query_timeout_ms")]
    pub query_timeout_ms: u64,
    #[serde(default)]
    pub fetch: Fetch,
    /// Rows per block with `fetch = "block"` (default 256; fewer for wide rows).
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// The statement `ping` runs (default `SELECT 1`; e.g. `SELECT 1 FROM DUAL` for Oracle,
    /// a one-row table for Access). Empty: ping only logs in and asks the driver whether
    /// the connection is alive.
    #[serde(default = "default_ping_sql")]
    pub ping_sql: String,
}

fn default_pool_size() -> usize {
    4
}
fn default_acquire_timeout_ms() -> u64 {
    5000
}
fn default_query_timeout_ms() -> u64 {
    5000
}
fn default_batch_rows() -> usize {
    256
}
fn default_ping_sql() -> String {
    "SELECT 1".to_string()
}

/// Most bytes one block buffer may take; wide rows get fewer rows per block.
const MAX_BLOCK_BYTES: usize = 8 << 20;

/// Widest cell bound into a block buffer; statements with wider columns go row by row.
const MAX_BLOCK_CELL_BYTES: usize = 4096;

impl OdbcConfig {
    /// A config with defaults for everything but the connection string.
    pub fn new(connection_string: Option<&str>) -> OdbcConfig {
        OdbcConfig {
            connection_string: connection_string.map(str::to_string),
            connection_string_env: None,
            connection_string_file: None,
            password_env: None,
            password_file: None,
            pool_size: default_pool_size(),
            acquire_timeout_ms: default_acquire_timeout_ms(),
            query_timeout_ms: default_query_timeout_ms(),
            fetch: Fetch::Block,
            batch_rows: default_batch_rows(),
            ping_sql: default_ping_sql(),
        }
    }

    /// The full connection string, secrets included. Never log or show it.
    pub fn resolve_connection_string(&self) -> Result<String, ConnectorError> {
        let base = match (
            &self.connection_string,
            &self.connection_string_env,
            &self.connection_string_file,
        ) {
            (Some(text), None, None) => {
                if has_attribute(text, &["PWD", "PASSWORD"]) {
                    return Err(config_error(
                        "connection_string must not hold a password: use password_env, \
                         password_file or connection_string_env",
                    ));
                }
                text.clone()
            }
            (None, Some(var), None) => std::env::var(var).map_err(|_| {
                config_error(format!(
                    "environment variable {var} (connection_string_env) is not set"
                ))
            })?,
            (None, None, Some(path)) => std::fs::read_to_string(path)
                .map(|t| t.trim().to_string())
                .map_err(|e| {
                    config_error(format!(
                        "cannot read connection_string_file {}: {}",
                        path.display(),
                        e.kind()
                    ))
                })?,
            _ => {
                return Err(config_error(
                    "set exactly one of connection_string, connection_string_env, \
                     connection_string_file",
                ))
            }
        };
        let password = match (&self.password_env, &self.password_file) {
            (None, None) => return Ok(base),
            (Some(var), None) => std::env::var(var).map_err(|_| {
                config_error(format!(
                    "environment variable {var} (password_env) is not set"
                ))
            })?,
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|t| t.trim_end_matches(['\r', '\n']).to_string())
                .map_err(|e| {
                    config_error(format!(
                        "cannot read password_file {}: {}",
                        path.display(),
                        e.kind()
                    ))
                })?,
            (Some(_), Some(_)) => {
                return Err(config_error(
                    "set either password_env or password_file, not both",
                ))
            }
        };
        if has_attribute(&base, &["PWD", "PASSWORD"]) {
            return Err(config_error(
                "the connection string already has a password; drop password_env/password_file",
            ));
        }
        let mut full = base.trim_end().to_string();
        if !full.is_empty() && !full.ends_with(';') {
            full.push(';');
        }
        // Braces keep `;` and `}` in a password from ending the attribute.
        full.push_str(&format!("PWD={{{}}};", password.replace('}', "}}")));
        Ok(full)
    }
}

/// Whether a connection string sets one of `keys` (case-insensitive), honouring `{...}`
/// quoting with `}}` escapes.
fn has_attribute(connection_string: &str, keys: &[&str]) -> bool {
    let mut chars = connection_string.chars().peekable();
    loop {
        let mut key = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            key.push(c);
        }
        let key = key.trim();
        if keys.iter().any(|k| k.eq_ignore_ascii_case(key)) {
            return true;
        }
        // Skip the value.
        if chars.peek() == Some(&'{') {
            chars.next();
            while let Some(c) = chars.next() {
                if c == '}' {
                    if chars.peek() == Some(&'}') {
                        chars.next();
                    } else {
                        break;
                    }
                }
            }
        }
        let mut ended = false;
        for c in chars.by_ref() {
            if c == ';' {
                ended = true;
                break;
            }
        }
        if !ended {
            return false;
        }
    }
}

fn config_error(message: impl Into<String>) -> ConnectorError {
    ConnectorError::new(ErrorKind::Config, message)
}

/// What the blocking side shares across statements.
struct Shared {
    env: &'static Environment,
    connection_string: String,
    login_timeout_sec: u32,
    idle: Mutex<Vec<Connection<'static>>>,
}

impl Shared {
    fn take_or_connect(&self) -> Result<Connection<'static>, ConnectorError> {
        loop {
            let pooled = self.idle.lock().ok().and_then(|mut idle| idle.pop());
            match pooled {
                // A connection the driver already knows is dead is dropped, not tried.
                Some(conn) if conn.is_dead().unwrap_or(false) => continue,
                Some(conn) => return Ok(conn),
                None => break,
            }
        }
        let options = ConnectionOptions {
            login_timeout_sec: Some(self.login_timeout_sec),
            ..ConnectionOptions::default()
        };
        self.env
            .connect_with_connection_string(&self.connection_string, options)
            .map_err(|e| map_error(&e, Phase::Connect))
    }

    fn give_back(&self, conn: Connection<'static>) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(conn);
        }
    }
}

/// The statement handle of a running statement, for `SQLCancel` from another thread.
#[derive(Default)]
struct CancelSlot(Mutex<Option<RawStatement>>);

struct RawStatement(odbc_api::sys::HStmt);
// Safety: the handle is only used under the slot's lock, and the statement owner clears
// the slot (taking the same lock) before the handle is freed.
unsafe impl Send for RawStatement {}

impl CancelSlot {
    fn set(&self, handle: odbc_api::sys::HStmt) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(RawStatement(handle));
        }
    }
    fn clear(&self) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = None;
        }
    }
    fn cancel(&self) {
        if let Ok(slot) = self.0.lock() {
            if let Some(stmt) = slot.as_ref() {
                // Safety: the statement is alive while it is in the slot (see above);
                // SQLCancel is the one ODBC call meant to come from another thread.
                unsafe {
                    let _ = odbc_api::sys::SQLCancel(stmt.0);
                }
            }
        }
    }
}

/// Clears the slot when dropped: declared after the statement, so it runs first.
struct Registered<'a>(&'a CancelSlot);
impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.clear();
    }
}

pub struct OdbcConnector {
    shared: Arc<Shared>,
    permits: Arc<tokio::sync::Semaphore>,
    acquire_timeout: Duration,
    query_timeout: Duration,
    fetch: Fetch,
    batch_rows: usize,
    ping_sql: String,
    statements: Arc<StatementCounter>,
}

impl OdbcConnector {
    /// Prepares the pool; connecting is lazy, so an unreachable source shows as
    /// unavailable, not as a start-up failure. Fails only on a bad config.
    pub fn new(config: &OdbcConfig) -> Result<OdbcConnector, ConnectorError> {
        let connection_string = config.resolve_connection_string()?;
        Self::with_connection_string(config, connection_string)
    }

    /// As [`OdbcConnector::new`], with the full connection string given by the caller
    /// (the config's connection string fields are ignored).
    pub fn with_connection_string(
        config: &OdbcConfig,
        connection_string: String,
    ) -> Result<OdbcConnector, ConnectorError> {
        let env = odbc_api::environment()
            .map_err(|_| ConnectorError::unavailable("cannot set up the ODBC driver manager"))?;
        let acquire_timeout = Duration::from_millis(config.acquire_timeout_ms.max(1));
        Ok(OdbcConnector {
            shared: Arc::new(Shared {
                env,
                connection_string,
                login_timeout_sec: acquire_timeout.as_secs_f64().ceil().max(1.0) as u32,
                idle: Mutex::new(Vec::new()),
            }),
            permits: Arc::new(tokio::sync::Semaphore::new(config.pool_size.max(1))),
            acquire_timeout,
            query_timeout: Duration::from_millis(config.query_timeout_ms.max(1)),
            fetch: config.fetch,
            batch_rows: config.batch_rows.clamp(1, 10_000),
            ping_sql: config.ping_sql.trim().to_string(),
            statements: Arc::new(StatementCounter::default()),
        })
    }

    async fn attempt(
        &self,
        sql: &Arc<str>,
        params: &Arc<[Value]>,
    ) -> Result<RowSet, ConnectorError> {
        let permit =
            tokio::time::timeout(self.acquire_timeout, self.permits.clone().acquire_owned())
                .await
                .map_err(|_| {
                    ConnectorError::timeout("no connection within the acquire time limit")
                })?
                .map_err(|_| ConnectorError::unavailable("connector closed"))?;
        self.statements.inc();
        let shared = Arc::clone(&self.shared);
        let cancel = Arc::new(CancelSlot::default());
        let job = Job {
            sql: Arc::clone(sql),
            params: Arc::clone(params),
            fetch: self.fetch,
            batch_rows: self.batch_rows,
            timeout_sec: self.query_timeout.as_secs_f64().ceil().max(1.0) as usize,
            cancel: Arc::clone(&cancel),
        };
        let (connected_tx, mut connected_rx) = tokio::sync::oneshot::channel::<()>();
        // The permit lives as long as the blocking work, so a statement abandoned at its
        // time limit still counts against the pool until its thread is done.
        let mut task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = shared.take_or_connect()?;
            let _ = connected_tx.send(());
            let result = run_statement(&conn, &job);
            // A connection that failed at the transport level is not reused.
            if !matches!(&result, Err(e) if e.kind == ErrorKind::Unavailable) {
                shared.give_back(conn);
            }
            result
        });
        // Logging in has its own limit; the statement's limit starts once it is sent.
        if tokio::time::timeout(self.acquire_timeout, &mut connected_rx)
            .await
            .is_err()
        {
            return Err(ConnectorError::timeout(
                "no connection within the acquire time limit",
            ));
        }
        match tokio::time::timeout(self.query_timeout, &mut task).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ConnectorError::unavailable("the ODBC driver failed")),
            Err(_) => {
                tokio::task::spawn_blocking(move || cancel.cancel());
                Err(ConnectorError::timeout("statement exceeded its time limit"))
            }
        }
    }
}

struct Job {
    sql: Arc<str>,
    params: Arc<[Value]>,
    fetch: Fetch,
    batch_rows: usize,
    timeout_sec: usize,
    cancel: Arc<CancelSlot>,
}

#[async_trait]
impl Connector for OdbcConnector {
    fn engine(&self) -> &'static str {
        "odbc"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // Drivers differ in how many parameters they take (Access: ~1000 minus the
            // statement's own, older SQL Server drivers 2,100); 500 is safe for all.
            max_batch: 500,
            placeholder: Placeholder::Question,
        }
    }

    async fn query(&self, sql: &str, params: &[Value]) -> Result<RowSet, ConnectorError> {
        let sql: Arc<str> = Arc::from(sql);
        let params: Arc<[Value]> = Arc::from(params);
        match self.attempt(&sql, &params).await {
            // A pooled connection the server dropped (restart, idle timeout): the statement
            // only reads, so one more try on a fresh connection is safe.
            Err(e) if e.kind == ErrorKind::Unavailable => self.attempt(&sql, &params).await,
            other => other,
        }
    }

    async fn ping(&self) -> Result<(), ConnectorError> {
        if !self.ping_sql.is_empty() {
            return self.query(&self.ping_sql, &[]).await.map(|_| ());
        }
        // No statement that works on this engine: a connection that logs in and passes the
        // driver's own "is it dead" check is reachable enough.
        let permit =
            tokio::time::timeout(self.acquire_timeout, self.permits.clone().acquire_owned())
                .await
                .map_err(|_| {
                    ConnectorError::timeout("no connection within the acquire time limit")
                })?
                .map_err(|_| ConnectorError::unavailable("connector closed"))?;
        let shared = Arc::clone(&self.shared);
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = shared.take_or_connect()?;
            match conn.is_dead() {
                Ok(true) => Err(ConnectorError::unavailable("connection lost")),
                _ => {
                    shared.give_back(conn);
                    Ok(())
                }
            }
        });
        match tokio::time::timeout(self.acquire_timeout + self.query_timeout, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ConnectorError::unavailable("the ODBC driver failed")),
            Err(_) => Err(ConnectorError::timeout("ping exceeded its time limit")),
        }
    }

    fn statements_executed(&self) -> u64 {
        self.statements.get()
    }
}

fn to_parameter(value: &Value) -> Box<dyn InputParameter> {
    match value {
        Value::Null => Box::new(VarCharBox::null()),
        // Bit parameters are not understood everywhere; 0/1 compares with any boolean-ish
        // column.
        Value::Bool(b) => Box::new(i64::from(*b)),
        Value::Int(i) => Box::new(*i),
        Value::Float(f) => Box::new(*f),
        Value::Text(s) => Box::new(VarCharBox::from_string(s.clone())),
        Value::Bytes(b) => Box::new(VarBinaryBox::from_vec(b.clone())),
        Value::Date(d) => Box::new(odbc_date(d)),
        Value::DateTime(t) => {
            let fraction = t.nanosecond().min(999_999_999);
            Box::new(WithDataType {
                value: OdbcTimestamp {
                    year: clamp_year(t.year()),
                    month: t.month() as u16,
                    day: t.day() as u16,
                    hour: t.hour() as u16,
                    minute: t.minute() as u16,
                    second: t.second() as u16,
                    fraction,
                },
                // Whole seconds go without a fraction: drivers that turn the value into text
                // (SQLite) then match values stored without one.
                data_type: DataType::Timestamp {
                    precision: if fraction == 0 { 0 } else { 6 },
                },
            })
        }
    }
}

fn odbc_date(d: &NaiveDate) -> OdbcDate {
    OdbcDate {
        year: clamp_year(d.year()),
        month: d.month() as u16,
        day: d.day() as u16,
    }
}

fn clamp_year(year: i32) -> i16 {
    year.clamp(1, 9999) as i16
}

/// How a column is read, decided from its ODBC type.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Int,
    Real,
    Double,
    /// Exact numbers, read as text and parsed, so the decimal digits survive.
    Decimal {
        width: usize,
    },
    Bool,
    Date,
    Timestamp,
    Text {
        width: Option<usize>,
    },
    Binary {
        width: Option<usize>,
    },
}

fn kind_of(data_type: DataType) -> Kind {
    let len = |l: Option<std::num::NonZeroUsize>| l.map(|n| n.get());
    match data_type {
        DataType::TinyInt | DataType::SmallInt | DataType::Integer | DataType::BigInt => Kind::Int,
        DataType::Real => Kind::Real,
        DataType::Float { .. } | DataType::Double => Kind::Double,
        DataType::Decimal { precision, .. } | DataType::Numeric { precision, .. } => {
            Kind::Decimal {
                width: precision + 3,
            }
        }
        DataType::Bit => Kind::Bool,
        DataType::Date => Kind::Date,
        DataType::Timestamp { .. } => Kind::Timestamp,
        // Text in UTF-8 needs up to 4 bytes a character.
        DataType::Char { length }
        | DataType::Varchar { length }
        | DataType::WChar { length }
        | DataType::WVarchar { length } => Kind::Text {
            width: len(length).map(|n| n.saturating_mul(4)),
        },
        DataType::Time { .. } => Kind::Text { width: Some(32) },
        DataType::Binary { length } | DataType::Varbinary { length } => {
            Kind::Binary { width: len(length) }
        }
        DataType::LongVarbinary { .. } => Kind::Binary { width: None },
        // Long text, unknown and driver-specific types (PostgreSQL's json, uuid...): text of
        // unknown length.
        _ => Kind::Text { width: None },
    }
}

/// The driver's own name for a column's type ("blob", "bytea"), where it gives one.
fn col_type_name(statement: odbc_api::sys::HStmt, column: u16) -> Option<String> {
    use odbc_api::sys::{Desc, Len, Pointer, SQLColAttribute, SqlReturn};
    let mut buf = [0u8; 128];
    let mut len: i16 = 0;
    let mut numeric: Len = 0;
    // Safety: the statement is alive (the caller holds its cursor) and every pointer is
    // to a local of the size given.
    let ret = unsafe {
        SQLColAttribute(
            statement,
            column,
            Desc::TypeName,
            buf.as_mut_ptr() as Pointer,
            buf.len() as i16,
            &mut len,
            &mut numeric,
        )
    };
    if ret != SqlReturn::SUCCESS && ret != SqlReturn::SUCCESS_WITH_INFO {
        return None;
    }
    let n = usize::try_from(len).unwrap_or(0).min(buf.len() - 1);
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Corrects drivers whose SQL type codes are wrong where their type names are right: the
/// SQLite3 driver reports BLOB columns as CHAR(255) (and then returns `X'..'` text) and
/// BIGINT with the C type code for 64-bit integers.
fn refine(kind: Kind, data_type: DataType, type_name: Option<&str>) -> Kind {
    // SQL_C_SBIGINT and SQL_C_UBIGINT where an SQL type belongs.
    if let DataType::Other {
        data_type: code, ..
    } = data_type
    {
        if code.0 == -25 || code.0 == -27 {
            return Kind::Int;
        }
    }
    let name = type_name.unwrap_or("").trim().to_ascii_lowercase();
    let base = name.split(['(', ' ']).next().unwrap_or("");
    match base {
        "blob" | "tinyblob" | "mediumblob" | "longblob" | "bytea" | "binary" | "varbinary"
        | "image" => match kind {
            Kind::Binary { .. } => kind,
            _ => Kind::Binary { width: None },
        },
        _ => kind,
    }
}

impl Kind {
    /// The block buffer for this column, or `None` when it must go row by row.
    fn buffer(self) -> Option<BufferDesc> {
        let bounded = |w: Option<usize>| w.filter(|w| *w > 0 && *w <= MAX_BLOCK_CELL_BYTES);
        Some(match self {
            Kind::Int => BufferDesc::I64 { nullable: true },
            Kind::Real => BufferDesc::F32 { nullable: true },
            Kind::Double => BufferDesc::F64 { nullable: true },
            Kind::Decimal { width } => BufferDesc::Text {
                max_str_len: bounded(Some(width))?,
            },
            Kind::Bool => BufferDesc::Bit { nullable: true },
            Kind::Date => BufferDesc::Date { nullable: true },
            Kind::Timestamp => BufferDesc::Timestamp { nullable: true },
            Kind::Text { width } => BufferDesc::Text {
                max_str_len: bounded(width)?,
            },
            Kind::Binary { width } => BufferDesc::Binary {
                max_bytes: bounded(width)?,
            },
        })
    }
}

/// Runs on a blocking thread with a connection of its own.
fn run_statement(conn: &Connection<'static>, job: &Job) -> Result<RowSet, ConnectorError> {
    match execute_and_read(conn, job, job.fetch) {
        // A driver that reported column sizes too small for its values: the statement only
        // reads, so it runs again row by row.
        Err(Retry::RowByRow) => execute_and_read(conn, job, Fetch::Row).map_err(|e| match e {
            Retry::Failed(e) => e,
            Retry::RowByRow => ConnectorError::query("values do not fit the driver's column sizes"),
        }),
        Err(Retry::Failed(e)) => Err(e),
        Ok(rows) => Ok(rows),
    }
}

enum Retry {
    RowByRow,
    Failed(ConnectorError),
}

impl From<ConnectorError> for Retry {
    fn from(e: ConnectorError) -> Self {
        Retry::Failed(e)
    }
}

fn execute_and_read(conn: &Connection<'static>, job: &Job, fetch: Fetch) -> Result<RowSet, Retry> {
    let params: Vec<Box<dyn InputParameter>> = job.params.iter().map(to_parameter).collect();
    let mut statement = conn
        .preallocate()
        .map_err(|e| map_error(&e, Phase::Statement))?;
    // Drivers without a server-side limit (SQLite, MariaDB) refuse or ignore this; the
    // caller's own limit and SQLCancel cover them.
    let _ = statement.set_query_timeout_sec(job.timeout_sec);
    job.cancel.set(statement.as_stmt_ref().as_sys());
    let _registered = Registered(&job.cancel);
    let cursor = statement
        .execute(&job.sql, params.as_slice())
        .map_err(|e| map_error(&e, Phase::Statement))?;
    let Some(mut cursor) = cursor else {
        return Ok(RowSet::default());
    };
    let width = cursor
        .num_result_cols()
        .map_err(|e| map_error(&e, Phase::Statement))?;
    let mut columns = Vec::new();
    let mut kinds = Vec::new();
    for i in 1..=u16::try_from(width.max(0)).unwrap_or(0) {
        columns.push(
            cursor
                .col_name(i)
                .map_err(|e| map_error(&e, Phase::Statement))?,
        );
        let data_type = cursor
            .col_data_type(i)
            .map_err(|e| map_error(&e, Phase::Statement))?;
        let type_name = col_type_name(cursor.as_stmt_ref().as_sys(), i);
        kinds.push(refine(kind_of(data_type), data_type, type_name.as_deref()));
    }
    let buffers: Option<Vec<BufferDesc>> = match fetch {
        Fetch::Block => kinds.iter().map(|k| k.buffer()).collect(),
        Fetch::Row => None,
    };
    let rows = match buffers {
        Some(descs) if !descs.is_empty() => read_blocks(cursor, &kinds, descs, job.batch_rows)?,
        _ => read_rows(&mut cursor, &kinds)?,
    };
    Ok(RowSet { columns, rows })
}

fn read_rows(cursor: &mut impl Cursor, kinds: &[Kind]) -> Result<Vec<Vec<Value>>, ConnectorError> {
    let err = |e: odbc_api::Error| map_error(&e, Phase::Statement);
    let mut out = Vec::new();
    let mut text = Vec::new();
    while let Some(mut row) = cursor.next_row().map_err(err)? {
        let mut values = Vec::with_capacity(kinds.len());
        for (i, kind) in kinds.iter().enumerate() {
            let col = (i + 1) as u16;
            let value = match kind {
                Kind::Int => {
                    let mut v = Nullable::<i64>::null();
                    row.get_data(col, &mut v).map_err(err)?;
                    v.into_opt().map_or(Value::Null, Value::Int)
                }
                Kind::Real => {
                    let mut v = Nullable::<f32>::null();
                    row.get_data(col, &mut v).map_err(err)?;
                    v.into_opt().map_or(Value::Null, f32_value)
                }
                Kind::Double => {
                    let mut v = Nullable::<f64>::null();
                    row.get_data(col, &mut v).map_err(err)?;
                    v.into_opt().map_or(Value::Null, Value::Float)
                }
                Kind::Bool => {
                    let mut v = Nullable::<Bit>::null();
                    row.get_data(col, &mut v).map_err(err)?;
                    v.into_opt()
                        .map_or(Value::Null, |b| Value::Bool(b.as_bool()))
                }
                Kind::Date => {
                    let mut v = Nullable::<OdbcDate>::null();
                    row.get_data(col, &mut v).map_err(err)?;
                    v.into_opt().map_or(Value::Null, |d| date_value(&d))
                }
                Kind::Timestamp => {
                    let mut v = Nullable::<OdbcTimestamp>::null();
                    row.get_data(col, &mut v).map_err(err)?;
                    v.into_opt().map_or(Value::Null, |t| timestamp_value(&t))
                }
                Kind::Decimal { .. } => {
                    if row.get_text(col, &mut text).map_err(err)? {
                        decimal_value(&text)
                    } else {
                        Value::Null
                    }
                }
                Kind::Text { .. } => {
                    if row.get_text(col, &mut text).map_err(err)? {
                        Value::Text(utf8(&text))
                    } else {
                        Value::Null
                    }
                }
                Kind::Binary { .. } => {
                    let mut bytes = Vec::new();
                    if row.get_binary(col, &mut bytes).map_err(err)? {
                        Value::Bytes(bytes)
                    } else {
                        Value::Null
                    }
                }
            };
            values.push(value);
        }
        out.push(values);
    }
    Ok(out)
}

fn read_blocks(
    cursor: impl Cursor,
    kinds: &[Kind],
    descs: Vec<BufferDesc>,
    batch_rows: usize,
) -> Result<Vec<Vec<Value>>, Retry> {
    let err = |e: odbc_api::Error| Retry::Failed(map_error(&e, Phase::Statement));
    let row_bytes: usize = descs
        .iter()
        .map(|d| d.bytes_per_row())
        .sum::<usize>()
        .max(1);
    let batch_rows = batch_rows.min(MAX_BLOCK_BYTES / row_bytes).max(1);
    let buffer =
        ColumnarDynBuffer::try_from_descs(batch_rows, descs).map_err(|_| Retry::RowByRow)?;
    let mut block = cursor.bind_buffer(buffer).map_err(err)?;
    let mut out = Vec::new();
    loop {
        let batch = match block.fetch_with_truncation_check(true) {
            Ok(Some(batch)) => batch,
            Ok(None) => break,
            Err(odbc_api::Error::TooLargeValueForBuffer { .. }) => return Err(Retry::RowByRow),
            Err(e) => return Err(err(e)),
        };
        let first = out.len();
        for _ in 0..batch.num_rows() {
            out.push(Vec::with_capacity(kinds.len()));
        }
        for (i, kind) in kinds.iter().enumerate() {
            let column = batch.column(i);
            let rows = &mut out[first..];
            macro_rules! fill {
                ($slice:expr, $convert:expr) => {{
                    let slice = $slice.ok_or(Retry::RowByRow)?;
                    for (row, cell) in rows.iter_mut().zip(slice) {
                        row.push(cell.map_or(Value::Null, $convert));
                    }
                }};
            }
            match kind {
                Kind::Int => fill!(column.as_nullable_slice::<i64>(), |v: &i64| Value::Int(*v)),
                Kind::Real => fill!(column.as_nullable_slice::<f32>(), |v: &f32| f32_value(*v)),
                Kind::Double => fill!(column.as_nullable_slice::<f64>(), |v: &f64| Value::Float(
                    *v
                )),
                Kind::Bool => fill!(column.as_nullable_slice::<Bit>(), |v: &Bit| Value::Bool(
                    v.as_bool()
                )),
                Kind::Date => fill!(column.as_nullable_slice::<OdbcDate>(), date_value),
                Kind::Timestamp => {
                    fill!(column.as_nullable_slice::<OdbcTimestamp>(), timestamp_value)
                }
                Kind::Decimal { .. } | Kind::Text { .. } => {
                    let slice = column.as_text().ok_or(Retry::RowByRow)?;
                    for (r, row) in rows.iter_mut().enumerate() {
                        row.push(match slice.get(r) {
                            None => Value::Null,
                            Some(bytes) if matches!(kind, Kind::Decimal { .. }) => {
                                decimal_value(bytes)
                            }
                            Some(bytes) => Value::Text(utf8(bytes)),
                        });
                    }
                }
                Kind::Binary { .. } => {
                    let slice = column.as_binary().ok_or(Retry::RowByRow)?;
                    for (r, row) in rows.iter_mut().enumerate() {
                        row.push(
                            slice
                                .get(r)
                                .map_or(Value::Null, |b| Value::Bytes(b.to_vec())),
                        );
                    }
                }
            }
        }
    }
    Ok(out)
}

fn utf8(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// f32 widened directly shows binary noise (1.1 -> 1.100000023841858); its shortest decimal
/// form is the value the user stored.
fn f32_value(f: f32) -> Value {
    Value::Float(f.to_string().parse().unwrap_or(f64::from(f)))
}

fn decimal_value(bytes: &[u8]) -> Value {
    let text = utf8(bytes);
    match text.trim().parse::<f64>() {
        Ok(f) => Value::Float(f),
        Err(_) => Value::Text(text),
    }
}

/// Zero and impossible dates (legacy "unknown") become NULL.
fn date_value(d: &OdbcDate) -> Value {
    NaiveDate::from_ymd_opt(i32::from(d.year), u32::from(d.month), u32::from(d.day))
        .map_or(Value::Null, Value::Date)
}

fn timestamp_value(t: &OdbcTimestamp) -> Value {
    let date = NaiveDate::from_ymd_opt(i32::from(t.year), u32::from(t.month), u32::from(t.day));
    let time = NaiveTime::from_hms_nano_opt(
        u32::from(t.hour),
        u32::from(t.minute),
        u32::from(t.second),
        t.fraction,
    );
    match (date, time) {
        (Some(d), Some(t)) => Value::DateTime(NaiveDateTime::new(d, t)),
        _ => Value::Null,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connect,
    Statement,
}

/// An ODBC error as a kind and a message without the driver's text: drivers quote SQL,
/// user names and hosts there. Only SQLSTATE and the native code go out.
fn map_error(e: &odbc_api::Error, phase: Phase) -> ConnectorError {
    use odbc_api::Error as E;
    let record = match e {
        E::Diagnostics { record, .. }
        | E::UnableToRepresentNull(record)
        | E::UnsupportedOdbcApiVersion(record)
        | E::OracleOdbcDriverDoesNotSupport64Bit(record)
        | E::InvalidRowArraySize { record, .. } => record,
        _ => {
            return match phase {
                Phase::Connect => ConnectorError::unavailable("the ODBC driver could not connect"),
                Phase::Statement => ConnectorError::query("the ODBC driver reported an error"),
            }
        }
    };
    let state = record.state.as_str();
    let message = String::from_utf8_lossy(&record.message).to_lowercase();
    let (kind, what) = classify(state, record.native_error, &message, phase);
    ConnectorError::new(
        kind,
        format!(
            "{what} (SQLSTATE {state}, native error {})",
            record.native_error
        ),
    )
}

/// The classification behind [`map_error`]; `message` is the driver's text, lowercased,
/// consulted (never returned) where drivers report login failures under a generic state.
fn classify(state: &str, native: i32, message: &str, phase: Phase) -> (ErrorKind, &'static str) {
    let class = state.get(..2).unwrap_or("");
    let auth_words = [
        "password authentication failed",
        "authentication failed",
        "access denied",
        "login failed",
        "invalid password",
    ];
    if class == "28" || auth_words.iter().any(|w| message.contains(w)) {
        return (ErrorKind::Auth, "access denied");
    }
    let config_words = [
        "can't open lib",
        "data source name not found",
        "no default driver",
    ];
    if class == "IM" || config_words.iter().any(|w| message.contains(w)) {
        // Driver manager: data source or driver not found, driver not loadable.
        return (ErrorKind::Config, "ODBC driver or data source not found");
    }
    if phase == Phase::Connect {
        return (ErrorKind::Unavailable, "cannot connect");
    }
    match state {
        "HYT00" | "HYT01" | "HY008" | "57014" | "70100" => {
            return (ErrorKind::Timeout, "statement cancelled at its time limit")
        }
        "42501" => return (ErrorKind::Auth, "permission denied"),
        _ => {}
    }
    // MariaDB/MySQL native codes arrive under HY000: server gone, connection lost, killed.
    match native {
        2006 | 2013 | 2055 | 1927 | 1053 => return (ErrorKind::Unavailable, "connection lost"),
        1317 | 1969 | 3024 => return (ErrorKind::Timeout, "statement cancelled at its time limit"),
        1142 | 1143 => return (ErrorKind::Auth, "permission denied"),
        _ => {}
    }
    match class {
        "08" => (ErrorKind::Unavailable, "connection error"),
        "42" => (
            ErrorKind::Query,
            "statement rejected (syntax or unknown object)",
        ),
        "22" => (ErrorKind::Query, "data conversion error"),
        "07" => (ErrorKind::Query, "wrong parameters or columns"),
        _ => (ErrorKind::Query, "statement failed"),
    }
}

impl escr_connector::ConnectorSettings for OdbcConfig {
    fn resolve_paths(&mut self, base: &std::path::Path) {
        escr_connector::resolve_files(
            base,
            [&mut self.connection_string_file, &mut self.password_file],
        );
    }
    fn secrets(&self) -> Vec<escr_connector::SecretRef<'_>> {
        vec![
            escr_connector::SecretRef {
                key: "password",
                env: self.password_env.as_deref(),
                file: self.password_file.as_deref(),
            },
            escr_connector::SecretRef {
                key: "connection_string",
                env: self.connection_string_env.as_deref(),
                file: self.connection_string_file.as_deref(),
            },
        ]
    }
    fn connect(&self) -> Result<std::sync::Arc<dyn Connector>, ConnectorError> {
        OdbcConnector::new(self).map(|c| std::sync::Arc::new(c) as std::sync::Arc<dyn Connector>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_the_config_text() {
        let c = OdbcConfig::new(Some("Driver={X};Server=h;PWD=secret;"));
        let e = c.resolve_connection_string().unwrap_err();
        assert_eq!(e.kind, ErrorKind::Config);
        assert!(!e.message.contains("secret"));
        let c = OdbcConfig::new(Some("Driver={X};Server=h;Description={has PWD=x; inside}"));
        assert!(c.resolve_connection_string().is_ok());
        let text = "connection_string = \"Driver={X}\"\npassword = \"secret\"";
        assert!(toml::from_str::<OdbcConfig>(text).is_err());
        let text = "connection_string_env = \"MDB\"\nfetch = \"row\"\nping_sql = \"\"";
        let c: OdbcConfig = toml::from_str(text).unwrap();
        assert_eq!(c.fetch, Fetch::Row);
        assert_eq!(c.pool_size, 4);
    }

    #[test]
    fn password_file_is_added_with_braces() {
        let dir = std::env::temp_dir().join(format!("escr-odbc-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "a;b}c\n").unwrap();
        let mut c = OdbcConfig::new(Some("Driver={X};Uid=u"));
        c.password_file = Some(file);
        assert_eq!(
            c.resolve_connection_string().unwrap(),
            "Driver={X};Uid=u;PWD={a;b}}c};"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let mut c = OdbcConfig::new(Some("Driver={X}"));
        c.connection_string_env = Some("PATH".into());
        assert_eq!(
            c.resolve_connection_string().unwrap_err().kind,
            ErrorKind::Config
        );
    }

    #[test]
    fn sqlstates_map_to_kinds() {
        let s = Phase::Statement;
        assert_eq!(
            classify("28000", 1045, "", Phase::Connect).0,
            ErrorKind::Auth
        );
        assert_eq!(
            classify(
                "08001",
                0,
                "fatal: password authentication failed for user",
                Phase::Connect
            )
            .0,
            ErrorKind::Auth
        );
        assert_eq!(
            classify("08001", 0, "connection refused", Phase::Connect).0,
            ErrorKind::Unavailable
        );
        assert_eq!(
            classify("HY000", 1049, "unknown database", Phase::Connect).0,
            ErrorKind::Unavailable
        );
        assert_eq!(
            classify("IM002", 0, "", Phase::Connect).0,
            ErrorKind::Config
        );
        assert_eq!(classify("08S01", 0, "", s).0, ErrorKind::Unavailable);
        assert_eq!(classify("HYT00", 0, "", s).0, ErrorKind::Timeout);
        assert_eq!(classify("57014", 0, "", s).0, ErrorKind::Timeout);
        assert_eq!(classify("HY000", 2006, "", s).0, ErrorKind::Unavailable);
        assert_eq!(classify("42S02", 1146, "", s).0, ErrorKind::Query);
    }

    #[test]
    fn kinds_and_odd_values() {
        assert_eq!(
            kind_of(DataType::Integer).buffer(),
            Some(BufferDesc::I64 { nullable: true })
        );
        assert_eq!(
            kind_of(DataType::LongVarchar { length: None }).buffer(),
            None
        );
        assert_eq!(
            kind_of(DataType::Varchar {
                length: std::num::NonZeroUsize::new(65535)
            })
            .buffer(),
            None
        );
        assert_eq!(
            date_value(&OdbcDate {
                year: 0,
                month: 0,
                day: 0
            }),
            Value::Null
        );
        assert_eq!(f32_value(1.1), Value::Float(1.1));
        assert_eq!(decimal_value(b" 12.50"), Value::Float(12.5));
        assert_eq!(decimal_value(b"NaN?"), Value::Text("NaN?".into()));
    }
}
