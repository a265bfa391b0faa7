//! MySQL and MariaDB sources through mysql_async and its built-in pool.
//!
//! Every statement goes over the binary protocol (a prepared statement, cached per
//! connection) with the values bound, so column types arrive intact and nothing is ever
//! spliced into SQL. A statement past its time limit is abandoned by the caller at once and
//! killed on the server (`KILL QUERY` from a separate connection), so its connection comes
//! back to the pool clean instead of being torn down mid-packet.
//!
//! ```toml
//! [sources.mysql]            # the source's connector section
//! host = "db.example"
//! port = 3306
//! database = "casetrak"
//! user = "escr_reader"
//! password_env = "CASETRAK_DB_PASSWORD"   # or password_file = "/run/secrets/casetrak"
//! pool_min = 1
//! pool_max = 8
//! idle_ttl_secs = 600
//! acquire_timeout_ms = 5000
//! query_timeout_ms = 5000
//! tls = true                 # needs the crate feature `tls` (rustls)
//! tls_ca_file = "/etc/escr/casetrak-ca.pem"
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use escr_connector::{
    Capabilities, Connector, ConnectorError, ErrorKind, Placeholder, RowSet, StatementCounter,
    Value,
};
use mysql_async::consts::ColumnType;
use mysql_async::prelude::Queryable;
use mysql_async::{Column, Conn, Opts, OptsBuilder, Params, Pool, PoolConstraints, PoolOpts};
use serde::Deserialize;

/// `[sources.<name>.mysql]` in the gateway config. The password is never written here:
/// it comes from an environment variable or a file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlConfig {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub database: String,
    pub user: String,
    /// Name of the environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the password (a trailing newline is ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Connections kept open even when idle (default 1).
    #[serde(default = "default_pool_min")]
    pub pool_min: usize,
    /// Most connections open at once (default 8: on small machines 4-8 serve best).
    #[serde(default = "default_pool_max")]
    pub pool_max: usize,
    /// Connections above `pool_min` idle this long are closed (default 600 s). Minutes,
    /// not seconds: a short TTL closes and reopens connections between requests.
    #[serde(default = "default_idle_ttl_secs")]
    pub idle_ttl_secs: u64,
    /// Longest wait for a connection, including connecting (default 5000 ms).
    #[serde(default = "default_acquire_timeout_ms")]
    pub acquire_timeout_ms: u64,
    /// Statement time limit (default 5000 ms).
    #[serde(default = "default_query_timeout_ms")]
    pub query_timeout_ms: u64,
    /// TLS to the server (needs the crate feature `tls`).
    #[serde(default)]
    pub tls: bool,
    /// PEM file of the CA to trust instead of the built-in roots (with `tls`).
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Sessions are `READ ONLY` (default true): the gateway only reads.
    #[serde(default = "yes")]
    pub read_only: bool,
}

fn default_port() -> u16 {
    3306
}
fn default_pool_min() -> usize {
    1
}
fn default_pool_max() -> usize {
    8
}
fn default_idle_ttl_secs() -> u64 {
    600
}
fn default_acquire_timeout_ms() -> u64 {
    5000
}
fn default_query_timeout_ms() -> u64 {
    5000
}
fn yes() -> bool {
    true
}

impl MysqlConfig {
    /// A config with defaults for everything but where to connect.
    pub fn new(host: &str, port: u16, database: &str, user: &str) -> MysqlConfig {
        MysqlConfig {
            host: host.to_string(),
            port,
            database: database.to_string(),
            user: user.to_string(),
            password_env: None,
            password_file: None,
            pool_min: default_pool_min(),
            pool_max: default_pool_max(),
            idle_ttl_secs: default_idle_ttl_secs(),
            acquire_timeout_ms: default_acquire_timeout_ms(),
            query_timeout_ms: default_query_timeout_ms(),
            tls: false,
            tls_ca_file: None,
            read_only: true,
        }
    }

    /// The password from `password_env` or `password_file`; `None` when neither is set.
    pub fn resolve_password(&self) -> Result<Option<String>, ConnectorError> {
        match (&self.password_env, &self.password_file) {
            (Some(_), Some(_)) => Err(config_error(
                "set either password_env or password_file, not both",
            )),
            (Some(var), None) => std::env::var(var).map(Some).map_err(|_| {
                config_error(format!(
                    "environment variable {var} (password_env) is not set"
                ))
            }),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|text| Some(text.trim_end_matches(['\r', '\n']).to_string()))
                .map_err(|e| {
                    config_error(format!(
                        "cannot read password_file {}: {}",
                        path.display(),
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

pub struct MysqlConnector {
    pool: Pool,
    /// Options for the side connection that kills an abandoned statement.
    opts: Opts,
    acquire_timeout: Duration,
    query_timeout: Duration,
    statements: Arc<StatementCounter>,
}

impl MysqlConnector {
    /// Builds the pool; connecting is lazy, so an unreachable server shows as an
    /// unavailable source, not a start-up failure. Fails only on a bad config.
    pub fn new(config: &MysqlConfig) -> Result<MysqlConnector, ConnectorError> {
        let password = config.resolve_password()?;
        Self::with_password(config, password)
    }

    /// As [`MysqlConnector::new`], with the password given by the caller.
    pub fn with_password(
        config: &MysqlConfig,
        password: Option<String>,
    ) -> Result<MysqlConnector, ConnectorError> {
        let constraints = PoolConstraints::new(config.pool_min, config.pool_max.max(1))
            .ok_or_else(|| {
                config_error(format!(
                    "pool_min ({}) must not exceed pool_max ({})",
                    config.pool_min, config.pool_max
                ))
            })?;
        let pool_opts = PoolOpts::default()
            .with_constraints(constraints)
            .with_inactive_connection_ttl(Duration::from_secs(config.idle_ttl_secs))
            // Sessions are never changed, and a reset drops the prepared statements.
            .with_reset_connection(false);
        let mut builder = OptsBuilder::default()
            .ip_or_hostname(config.host.clone())
            .tcp_port(config.port)
            .user(Some(config.user.clone()))
            .pass(password)
            .db_name(Some(config.database.clone()))
            .pool_opts(pool_opts)
            .stmt_cache_size(64)
            .tcp_nodelay(true)
            // Connect where the operator said: a local socket would authenticate as
            // another account (`user@localhost`) and skip TLS.
            .prefer_socket(false);
        if config.read_only {
            builder = builder.init(vec!["SET SESSION TRANSACTION READ ONLY"]);
        }
        if config.tls {
            builder = builder.ssl_opts(Some(tls_opts(config)?));
        } else if config.tls_ca_file.is_some() {
            return Err(config_error("tls_ca_file is set but tls is not"));
        }
        let opts = Opts::from(builder);
        Ok(MysqlConnector {
            pool: Pool::new(opts.clone()),
            opts,
            acquire_timeout: Duration::from_millis(config.acquire_timeout_ms.max(1)),
            query_timeout: Duration::from_millis(config.query_timeout_ms.max(1)),
            statements: Arc::new(StatementCounter::default()),
        })
    }

    async fn acquire(&self) -> Result<Conn, ConnectorError> {
        match tokio::time::timeout(self.acquire_timeout, self.pool.get_conn()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(map_error(&e)),
            Err(_) => Err(ConnectorError::timeout(
                "no connection within the acquire time limit",
            )),
        }
    }

    /// One attempt: a connection, the statement on its own task, the time limit.
    async fn attempt(&self, sql: &Arc<str>, params: &[Value]) -> Result<RowSet, ConnectorError> {
        let mut conn = self.acquire().await?;
        let connection_id = conn.id();
        let sql = Arc::clone(sql);
        let params = to_params(params);
        self.statements.inc();
        // The task owns the connection: on a timeout it runs on until the kill lands and
        // then returns the connection to the pool in a clean state.
        let mut task = tokio::spawn(async move { run(&mut conn, &sql, params).await });
        match tokio::time::timeout(self.query_timeout, &mut task).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ConnectorError::unavailable("query task failed")),
            Err(_) => {
                let opts = self.opts.clone();
                let limit = self.acquire_timeout;
                tokio::spawn(async move { kill_query(opts, connection_id, limit).await });
                Err(ConnectorError::timeout("statement exceeded its time limit"))
            }
        }
    }
}

#[cfg(feature = "tls")]
fn tls_opts(config: &MysqlConfig) -> Result<mysql_async::SslOpts, ConnectorError> {
    let mut ssl = mysql_async::SslOpts::default();
    if let Some(ca) = &config.tls_ca_file {
        if !ca.exists() {
            return Err(config_error(format!(
                "tls_ca_file {} not found",
                ca.display()
            )));
        }
        ssl = ssl.with_root_certs(vec![ca.clone().into()]);
    }
    Ok(ssl)
}

#[cfg(not(feature = "tls"))]
fn tls_opts(_config: &MysqlConfig) -> Result<mysql_async::SslOpts, ConnectorError> {
    Err(config_error(
        "tls = true needs escr-mysql built with the `tls` feature",
    ))
}

/// Best effort: the statement may already have finished, or the server may be gone.
async fn kill_query(opts: Opts, connection_id: u32, limit: Duration) {
    let kill = async {
        let mut side = Conn::new(opts).await?;
        // An id is a number the server gave us, not a value from a request.
        side.query_drop(format!("KILL QUERY {connection_id}"))
            .await?;
        side.disconnect().await
    };
    let _ = tokio::time::timeout(limit, kill).await;
}

async fn run(conn: &mut Conn, sql: &str, params: Params) -> Result<RowSet, ConnectorError> {
    let mut result = conn
        .exec_iter(sql, params)
        .await
        .map_err(|e| map_error(&e))?;
    let columns: Arc<[Column]> = result.columns().unwrap_or_else(|| Arc::from(Vec::new()));
    let mut out = RowSet {
        columns: columns.iter().map(|c| c.name_str().into_owned()).collect(),
        rows: Vec::new(),
    };
    while let Some(row) = result.next().await.map_err(|e| map_error(&e))? {
        let values = row.unwrap_raw();
        let mut converted = Vec::with_capacity(columns.len());
        for (i, column) in columns.iter().enumerate() {
            let value = values.get(i).cloned().flatten();
            converted.push(value.map_or(Value::Null, |v| from_mysql(v, column)));
        }
        out.rows.push(converted);
    }
    // Further result sets (a procedure's status, say) are not ours to return.
    result.drop_result().await.map_err(|e| map_error(&e))?;
    Ok(out)
}

#[async_trait]
impl Connector for MysqlConnector {
    fn engine(&self) -> &'static str {
        "mysql"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // Prepared statements allow 65,535 parameters; 1,000 keeps each statement's
            // plan and packet small.
            max_batch: 1000,
            placeholder: Placeholder::Question,
        }
    }

    async fn query(&self, sql: &str, params: &[Value]) -> Result<RowSet, ConnectorError> {
        let sql: Arc<str> = Arc::from(sql);
        match self.attempt(&sql, params).await {
            // A connection that broke under us (server restarted since it was pooled):
            // the statement only reads, so one more try on a fresh connection is safe.
            Err(e) if e.kind == ErrorKind::Unavailable => self.attempt(&sql, params).await,
            other => other,
        }
    }

    async fn ping(&self) -> Result<(), ConnectorError> {
        let mut conn = self.acquire().await?;
        match tokio::time::timeout(self.query_timeout, conn.ping()).await {
            Ok(result) => result.map_err(|e| map_error(&e)),
            Err(_) => Err(ConnectorError::timeout("ping exceeded its time limit")),
        }
    }

    fn statements_executed(&self) -> u64 {
        self.statements.get()
    }
}

fn to_params(params: &[Value]) -> Params {
    if params.is_empty() {
        return Params::Empty;
    }
    Params::Positional(params.iter().map(to_mysql).collect())
}

fn to_mysql(value: &Value) -> mysql_async::Value {
    use chrono::{Datelike, Timelike};
    use mysql_async::Value as M;
    match value {
        Value::Null => M::NULL,
        Value::Bool(b) => M::Int(i64::from(*b)),
        Value::Int(i) => M::Int(*i),
        Value::Float(f) => M::Double(*f),
        Value::Text(s) => M::Bytes(s.as_bytes().to_vec()),
        Value::Bytes(b) => M::Bytes(b.clone()),
        Value::Date(d) => M::Date(
            clamp_year(d.year()),
            d.month() as u8,
            d.day() as u8,
            0,
            0,
            0,
            0,
        ),
        Value::DateTime(t) => M::Date(
            clamp_year(t.year()),
            t.month() as u8,
            t.day() as u8,
            t.hour() as u8,
            t.minute() as u8,
            t.second() as u8,
            // A leap second shows as nanos >= 1e9; MySQL has none.
            (t.nanosecond() / 1000).min(999_999),
        ),
    }
}

fn clamp_year(year: i32) -> u16 {
    year.clamp(0, 9999) as u16
}

/// A column's value as the gateway sees it. Odd data (zero dates, unsigned values past
/// i64, invalid UTF-8) becomes NULL, text or lossy text, never a panic.
fn from_mysql(value: mysql_async::Value, column: &Column) -> Value {
    use mysql_async::Value as M;
    let kind = column.column_type();
    match value {
        M::NULL => Value::Null,
        M::Int(i) => Value::Int(i),
        M::UInt(u) => i64::try_from(u)
            .map(Value::Int)
            .unwrap_or_else(|_| Value::Text(u.to_string())),
        // f32 widened directly shows binary noise (1.1 -> 1.100000023841858); going
        // through its shortest decimal form gives the value the user stored.
        M::Float(f) => Value::Float(f.to_string().parse().unwrap_or(f64::from(f))),
        M::Double(d) => Value::Float(d),
        M::Date(y, mo, d, h, mi, s, us) => date_value(kind, y, mo, d, h, mi, s, us),
        M::Time(negative, days, h, mi, s, us) => {
            Value::Text(time_text(negative, days, h, mi, s, us))
        }
        M::Bytes(bytes) => bytes_value(kind, column, bytes),
    }
}

#[allow(clippy::too_many_arguments)]
fn date_value(kind: ColumnType, y: u16, mo: u8, d: u8, h: u8, mi: u8, s: u8, us: u32) -> Value {
    // Zero and partial dates ('0000-00-00') are legacy "unknown": NULL.
    let Some(date) = NaiveDate::from_ymd_opt(i32::from(y), u32::from(mo), u32::from(d)) else {
        return Value::Null;
    };
    if matches!(
        kind,
        ColumnType::MYSQL_TYPE_DATE | ColumnType::MYSQL_TYPE_NEWDATE
    ) {
        return Value::Date(date);
    }
    match NaiveTime::from_hms_micro_opt(u32::from(h), u32::from(mi), u32::from(s), us) {
        Some(time) => Value::DateTime(NaiveDateTime::new(date, time)),
        None => Value::Null,
    }
}

fn time_text(negative: bool, days: u32, h: u8, mi: u8, s: u8, us: u32) -> String {
    let hours = u64::from(days) * 24 + u64::from(h);
    let sign = if negative { "-" } else { "" };
    if us == 0 {
        format!("{sign}{hours:02}:{mi:02}:{s:02}")
    } else {
        format!("{sign}{hours:02}:{mi:02}:{s:02}.{us:06}")
    }
}

/// MySQL's binary character set: a BLOB/BINARY column, not text.
const BINARY_CHARSET: u16 = 63;

fn bytes_value(kind: ColumnType, column: &Column, bytes: Vec<u8>) -> Value {
    use ColumnType as T;
    let text = || String::from_utf8_lossy(&bytes).into_owned();
    match kind {
        T::MYSQL_TYPE_DECIMAL
        | T::MYSQL_TYPE_NEWDECIMAL
        | T::MYSQL_TYPE_FLOAT
        | T::MYSQL_TYPE_DOUBLE => {
            let t = text();
            t.trim()
                .parse::<f64>()
                .map(Value::Float)
                .unwrap_or(Value::Text(t))
        }
        T::MYSQL_TYPE_TINY
        | T::MYSQL_TYPE_SHORT
        | T::MYSQL_TYPE_LONG
        | T::MYSQL_TYPE_LONGLONG
        | T::MYSQL_TYPE_INT24
        | T::MYSQL_TYPE_YEAR => {
            let t = text();
            t.trim()
                .parse::<i64>()
                .map(Value::Int)
                .unwrap_or(Value::Text(t))
        }
        T::MYSQL_TYPE_BIT if bytes.len() <= 8 => {
            Value::Int(bytes.iter().fold(0i64, |acc, b| (acc << 8) | i64::from(*b)))
        }
        T::MYSQL_TYPE_DATE
        | T::MYSQL_TYPE_NEWDATE
        | T::MYSQL_TYPE_DATETIME
        | T::MYSQL_TYPE_DATETIME2
        | T::MYSQL_TYPE_TIMESTAMP
        | T::MYSQL_TYPE_TIMESTAMP2 => parse_date_text(kind, &text()),
        T::MYSQL_TYPE_GEOMETRY | T::MYSQL_TYPE_BIT => Value::Bytes(bytes),
        T::MYSQL_TYPE_TINY_BLOB
        | T::MYSQL_TYPE_MEDIUM_BLOB
        | T::MYSQL_TYPE_LONG_BLOB
        | T::MYSQL_TYPE_BLOB
        | T::MYSQL_TYPE_STRING
        | T::MYSQL_TYPE_VAR_STRING
        | T::MYSQL_TYPE_VARCHAR
            if column.character_set() == BINARY_CHARSET =>
        {
            Value::Bytes(bytes)
        }
        // VARCHAR, TEXT, ENUM, SET, JSON (MariaDB's JSON is LONGTEXT), TIME as text.
        _ => match String::from_utf8(bytes) {
            Ok(s) => Value::Text(s),
            Err(e) => Value::Text(String::from_utf8_lossy(e.as_bytes()).into_owned()),
        },
    }
}

/// Dates in text form: only reached if a server sends the text protocol's shape.
fn parse_date_text(kind: ColumnType, text: &str) -> Value {
    if matches!(
        kind,
        ColumnType::MYSQL_TYPE_DATE | ColumnType::MYSQL_TYPE_NEWDATE
    ) {
        return NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .map(Value::Date)
            .unwrap_or(Value::Null);
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .map(Value::DateTime)
        .unwrap_or(Value::Null)
}

/// What went wrong, in words that carry no SQL text, values or credentials: server
/// messages quote SQL fragments and user names, so only the code and a category go out.
fn map_error(e: &mysql_async::Error) -> ConnectorError {
    use mysql_async::{DriverError as D, Error as E, IoError};
    match e {
        // The server's words go to the operator's log only (the detail): for a SELECT
        // they name tables and columns of the profile's SQL.
        E::Server(server) => {
            map_server_error(server.code, &server.state).with_detail(server.message.clone())
        }
        E::Io(IoError::Io(io)) => {
            ConnectorError::unavailable(format!("connection failed: {}", io_reason(io)))
        }
        // Only the TLS variant is left, and only with the `tls` feature.
        #[allow(unreachable_patterns)]
        E::Io(_) => ConnectorError::unavailable("TLS failure talking to the server"),
        E::Driver(driver) => match driver {
            D::ConnectionClosed
            | D::PoolDisconnected
            | D::PacketOutOfOrder
            | D::UnexpectedPacket { .. } => {
                ConnectorError::unavailable("connection to the server lost")
            }
            D::NoClientSslFlagFromServer => {
                ConnectorError::unavailable("the server does not offer TLS")
            }
            D::UnknownAuthPlugin { .. }
            | D::MysqlOldPasswordDisabled
            | D::CleartextPluginDisabled => ConnectorError::new(
                ErrorKind::Auth,
                "the server asks for an unsupported authentication method",
            ),
            D::StmtParamsMismatch { required, supplied } => ConnectorError::query(format!(
                "the statement has {required} placeholders but {supplied} values were bound"
            )),
            D::StmtParamsNumberExceedsLimit { supplied } => {
                ConnectorError::query(format!("too many bound values ({supplied})"))
            }
            D::PacketTooLarge => ConnectorError::query("packet too large (max_allowed_packet)"),
            _ => ConnectorError::query("driver error"),
        },
        E::Url(_) => config_error("invalid connection options"),
        E::Other(_) => ConnectorError::unavailable("client error"),
    }
}

fn io_reason(io: &std::io::Error) -> String {
    // io::Error's Display is the OS reason ("Connection refused (os error 111)").
    io.to_string()
}

fn map_server_error(code: u16, state: &str) -> ConnectorError {
    let (kind, what) = match code {
        1044 | 1045 | 1698 | 1130 | 1251 | 1820 | 1862 | 3118 | 4151 => {
            (ErrorKind::Auth, "access denied")
        }
        1142 | 1143 | 1227 => (ErrorKind::Auth, "permission denied"),
        1049 => (ErrorKind::Unavailable, "unknown database"),
        1040 | 1203 => (ErrorKind::Unavailable, "too many connections"),
        1053 => (ErrorKind::Unavailable, "server shutting down"),
        1927 | 1152 | 1184 => (ErrorKind::Unavailable, "connection killed or aborted"),
        1317 | 1969 | 3024 => (
            ErrorKind::Timeout,
            "statement interrupted at its time limit",
        ),
        1205 => (ErrorKind::Timeout, "lock wait timeout"),
        1064 | 1149 => (ErrorKind::Query, "SQL syntax error"),
        1146 => (ErrorKind::Query, "no such table"),
        1054 => (ErrorKind::Query, "unknown column"),
        1052 => (ErrorKind::Query, "ambiguous column"),
        1305 => (ErrorKind::Query, "no such function or procedure"),
        1210 => (ErrorKind::Query, "wrong arguments to a prepared statement"),
        1390 => (ErrorKind::Query, "too many placeholders in one statement"),
        1792 => (
            ErrorKind::Query,
            "statement not allowed in a read-only session",
        ),
        _ => match state.get(..2) {
            Some("08") => (ErrorKind::Unavailable, "connection error"),
            Some("28") => (ErrorKind::Auth, "access denied"),
            Some("HY") if state == "HYT00" => (ErrorKind::Timeout, "timeout"),
            _ => (ErrorKind::Query, "statement rejected"),
        },
    };
    ConnectorError::new(
        kind,
        format!("{what} (server error {code}, SQLSTATE {state})"),
    )
}

impl escr_connector::ConnectorSettings for MysqlConfig {
    fn resolve_paths(&mut self, base: &std::path::Path) {
        escr_connector::resolve_files(base, [&mut self.password_file, &mut self.tls_ca_file]);
    }
    fn secrets(&self) -> Vec<escr_connector::SecretRef<'_>> {
        vec![
            escr_connector::SecretRef {
                key: "password",
                env: self.password_env.as_deref(),
                file: self.password_file.as_deref(),
            },
            escr_connector::SecretRef {
                key: "tls_ca",
                env: None,
                file: self.tls_ca_file.as_deref(),
            },
        ]
    }
    fn connect(&self) -> Result<std::sync::Arc<dyn Connector>, ConnectorError> {
        MysqlConnector::new(self).map(|c| std::sync::Arc::new(c) as std::sync::Arc<dyn Connector>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_rejects_a_password_in_the_text() {
        let text = r#"host = "db"
database = "d"
user = "u"
password = "secret""#;
        let err = toml::from_str::<MysqlConfig>(text).unwrap_err();
        assert!(err.message().contains("unknown field `password`"));
        // The gateway reports `message()` with a line number, never the line itself.
        assert!(!err.message().contains("secret"));
    }

    #[test]
    fn password_sources() {
        let mut c = MysqlConfig::new("h", 1, "d", "u");
        assert_eq!(c.resolve_password().unwrap(), None);
        c.password_env = Some("ESCR_MYSQL_UNIT_TEST_SURELY_UNSET".into());
        assert_eq!(c.resolve_password().unwrap_err().kind, ErrorKind::Config);
        c.password_env = Some("PATH".into());
        assert!(c.resolve_password().unwrap().is_some());
        c.password_file = Some("/nonexistent/pw".into());
        assert_eq!(c.resolve_password().unwrap_err().kind, ErrorKind::Config);
        c.password_env = None;
        let err = c.resolve_password().unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config);
    }

    #[test]
    fn bad_pool_bounds_and_tls_without_the_feature_are_config_errors() {
        let mut c = MysqlConfig::new("h", 1, "d", "u");
        c.pool_min = 9;
        c.pool_max = 2;
        assert_eq!(
            MysqlConnector::with_password(&c, None).err().unwrap().kind,
            ErrorKind::Config
        );
        let mut c = MysqlConfig::new("h", 1, "d", "u");
        c.tls = true;
        let result = MysqlConnector::with_password(&c, None);
        assert_eq!(result.is_ok(), cfg!(feature = "tls"));
    }

    #[test]
    fn server_errors_map_to_kinds_without_the_message() {
        let e = map_server_error(1045, "28000");
        assert_eq!(e.kind, ErrorKind::Auth);
        assert_eq!(map_server_error(1064, "42000").kind, ErrorKind::Query);
        assert_eq!(map_server_error(1969, "70100").kind, ErrorKind::Timeout);
        assert_eq!(map_server_error(1049, "42000").kind, ErrorKind::Unavailable);
        assert_eq!(map_server_error(2999, "08S01").kind, ErrorKind::Unavailable);
    }

    #[test]
    fn odd_values_do_not_panic() {
        let col = |t| Column::new(t);
        assert_eq!(
            from_mysql(
                mysql_async::Value::Date(0, 0, 0, 0, 0, 0, 0),
                &col(ColumnType::MYSQL_TYPE_DATE)
            ),
            Value::Null
        );
        assert_eq!(
            from_mysql(
                mysql_async::Value::UInt(u64::MAX),
                &col(ColumnType::MYSQL_TYPE_LONGLONG)
            ),
            Value::Text(u64::MAX.to_string())
        );
        assert_eq!(
            from_mysql(
                mysql_async::Value::Float(1.1),
                &col(ColumnType::MYSQL_TYPE_FLOAT)
            ),
            Value::Float(1.1)
        );
        assert_eq!(
            from_mysql(
                mysql_async::Value::Bytes(vec![0xff, b'a']),
                &col(ColumnType::MYSQL_TYPE_VAR_STRING).with_character_set(45)
            ),
            Value::Text("\u{fffd}a".into())
        );
        assert_eq!(
            from_mysql(
                mysql_async::Value::Bytes(b"12.50".to_vec()),
                &col(ColumnType::MYSQL_TYPE_NEWDECIMAL)
            ),
            Value::Float(12.5)
        );
        assert_eq!(
            from_mysql(
                mysql_async::Value::Time(true, 1, 2, 3, 4, 0),
                &col(ColumnType::MYSQL_TYPE_TIME)
            ),
            Value::Text("-26:03:04".into())
        );
    }
}
