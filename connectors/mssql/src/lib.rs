//! SQL Server sources through tiberius (TDS 7.4, rustls), with a small pool of its own.
//!
//! Statements always go as RPC `sp_executesql` with the values bound as typed parameters
//! (`@P1, @P2, ...`), so nothing is ever spliced into SQL. A statement past its time limit
//! is abandoned by dropping its connection: the server sees the socket close and stops
//! the batch, and no half-read response can leak into the next statement.
//!
//! ```toml
//! [sources.mssql]            # the source's connector section
//! host = "db.example"
//! port = 1433
//! database = "carefirst"
//! user = "escr_reader"
//! password_env = "CAREFIRST_DB_PASSWORD"   # or password_file = "/run/secrets/carefirst"
//! encryption = "required"    # required | not_supported | off
//! trust_server_certificate = false
//! ca_file = "/etc/escr/carefirst-ca.pem"   # optional: trust this CA instead of the system's
//! pool_size = 4
//! connect_timeout_ms = 5000
//! acquire_timeout_ms = 5000
//! query_timeout_ms = 5000
//! ```
//!
//! `encryption`: `required` (the default) protects the whole session; `off` is SQL
//! Server's `Encrypt=false` (TLS for the login packet only, so the server still needs a
//! certificate); `not_supported` is plain TCP, for servers without TLS.
//!
//! Tested against the project's own TDS server (`tests/support/tds.rs`, SQLite behind
//! it) and, when `ESCR_TEST_MSSQL_URL` names one, a real SQL Server (`tests/it/mssql.rs`).

mod pool;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{NaiveDate, NaiveDateTime};
use escr_connector::{
    Capabilities, Connector, ConnectorError, ErrorKind, Placeholder, RowSet, StatementCounter,
    Value,
};
use futures_util::TryStreamExt;
use serde::Deserialize;
use tiberius::{ColumnData, FromSql, Query, QueryItem};

use pool::{Pool, PooledClient};

/// How the connection to the server is protected.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Encryption {
    /// TLS for the whole session; the connection fails if the server cannot do TLS.
    Required,
    /// No TLS at all (a server that has no certificate, or a loopback test server).
    NotSupported,
    /// TLS for the login packet only (SQL Server's "Encrypt=false"); data in the clear.
    Off,
}

/// `[sources.<name>.mssql]` in the gateway config. The password is never written here:
/// it comes from an environment variable or a file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MssqlConfig {
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
    /// Default `required`.
    #[serde(default = "default_encryption")]
    pub encryption: Encryption,
    /// Accept any server certificate. No default: the operator has to say so, because
    /// it turns TLS into protection against eavesdroppers only, not impostors.
    pub trust_server_certificate: bool,
    /// PEM file of the CA that signed the server's certificate (instead of the system's
    /// roots); not together with `trust_server_certificate = true`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Most connections open at once (default 4).
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Longest wait for TCP connect plus login (default 5000 ms).
    #[serde(default = "default_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Longest wait for a free pool slot (default 5000 ms).
    #[serde(default = "default_timeout_ms")]
    pub acquire_timeout_ms: u64,
    /// Statement time limit, reading all its rows included (default 5000 ms).
    #[serde(default = "default_timeout_ms")]
    pub query_timeout_ms: u64,
    /// Idle connections older than this are closed instead of reused (default 300 s).
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
}

fn default_port() -> u16 {
    1433
}
fn default_encryption() -> Encryption {
    Encryption::Required
}
fn default_pool_size() -> usize {
    4
}
fn default_timeout_ms() -> u64 {
    5000
}
fn default_idle_timeout_secs() -> u64 {
    300
}

impl MssqlConfig {
    /// A config with defaults for everything but where to connect and how to protect it.
    pub fn new(
        host: &str,
        port: u16,
        database: &str,
        user: &str,
        encryption: Encryption,
        trust_server_certificate: bool,
    ) -> MssqlConfig {
        MssqlConfig {
            host: host.to_string(),
            port,
            database: database.to_string(),
            user: user.to_string(),
            password_env: None,
            password_file: None,
            encryption,
            trust_server_certificate,
            ca_file: None,
            pool_size: default_pool_size(),
            connect_timeout_ms: default_timeout_ms(),
            acquire_timeout_ms: default_timeout_ms(),
            query_timeout_ms: default_timeout_ms(),
            idle_timeout_secs: default_idle_timeout_secs(),
        }
    }

    /// The password from `password_env` or `password_file`. SQL Server logins always
    /// have one, so exactly one of the two must be set.
    pub fn resolve_password(&self) -> Result<String, ConnectorError> {
        match (&self.password_env, &self.password_file) {
            (Some(_), Some(_)) => Err(config_error(
                "set either password_env or password_file, not both",
            )),
            (Some(var), None) => std::env::var(var).map_err(|_| {
                config_error(format!(
                    "environment variable {var} (password_env) is not set"
                ))
            }),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|text| text.trim_end_matches(['\r', '\n']).to_string())
                .map_err(|e| {
                    config_error(format!(
                        "cannot read password_file {}: {}",
                        path.display(),
                        e.kind()
                    ))
                }),
            (None, None) => Err(config_error("set password_env or password_file")),
        }
    }

    fn tiberius_config(&self, password: String) -> Result<tiberius::Config, ConnectorError> {
        if self.host.is_empty() {
            return Err(config_error("host is empty"));
        }
        if self.pool_size == 0 {
            return Err(config_error("pool_size must be at least 1"));
        }
        let mut config = tiberius::Config::new();
        config.host(&self.host);
        config.port(self.port);
        config.database(&self.database);
        config.application_name("escr-gateway");
        config.authentication(tiberius::AuthMethod::sql_server(&self.user, password));
        // The gateway only reads: ApplicationIntent=ReadOnly lets an availability group
        // route it to a readable secondary.
        config.readonly(true);
        config.encryption(match self.encryption {
            Encryption::Required => tiberius::EncryptionLevel::Required,
            Encryption::NotSupported => tiberius::EncryptionLevel::NotSupported,
            Encryption::Off => tiberius::EncryptionLevel::Off,
        });
        match (self.trust_server_certificate, &self.ca_file) {
            (true, Some(_)) => {
                return Err(config_error(
                    "ca_file and trust_server_certificate = true exclude each other",
                ))
            }
            (true, None) => config.trust_cert(),
            (false, Some(path)) => {
                if !path.exists() {
                    return Err(config_error(format!(
                        "ca_file {} not found",
                        path.display()
                    )));
                }
                config.trust_cert_ca(path.display());
            }
            (false, None) => {}
        }
        let connect = Duration::from_millis(self.connect_timeout_ms.max(1));
        config.handshake_timeout(Some(connect));
        // The connector bounds whole statements itself (and drops the connection then).
        config.command_timeout(None);
        Ok(config)
    }
}

fn config_error(message: impl Into<String>) -> ConnectorError {
    ConnectorError::new(ErrorKind::Config, message)
}

pub struct MssqlConnector {
    pool: Pool,
    query_timeout: Duration,
    statements: StatementCounter,
}

impl MssqlConnector {
    /// Builds the pool; connecting is lazy, so an unreachable server shows as an
    /// unavailable source, not a start-up failure. Fails only on a bad config.
    pub fn new(config: &MssqlConfig) -> Result<MssqlConnector, ConnectorError> {
        let password = config.resolve_password()?;
        Self::with_password(config, password)
    }

    /// As [`MssqlConnector::new`], with the password given by the caller.
    pub fn with_password(
        config: &MssqlConfig,
        password: String,
    ) -> Result<MssqlConnector, ConnectorError> {
        let tiberius_config = config.tiberius_config(password)?;
        Ok(MssqlConnector {
            pool: Pool::new(
                tiberius_config,
                config.pool_size,
                Duration::from_millis(config.connect_timeout_ms.max(1)),
                Duration::from_millis(config.acquire_timeout_ms.max(1)),
                Duration::from_secs(config.idle_timeout_secs),
            ),
            query_timeout: Duration::from_millis(config.query_timeout_ms.max(1)),
            statements: StatementCounter::default(),
        })
    }

    /// Runs `sql` on a pooled connection within the time limit. A connection that was
    /// idle in the pool may have died since (server restart, failover, a firewall's idle
    /// cut): when it fails at the transport level the statement is tried once more on a
    /// new connection. Safe to repeat: the gateway only reads.
    async fn run(
        &self,
        sql: &str,
        params: &[Value],
        count: bool,
    ) -> Result<RowSet, ConnectorError> {
        let mut conn = self.pool.acquire().await?;
        match self.attempt(&mut conn, sql, params, count).await {
            Err(Failure::Broken(_)) if conn.reused() => {
                // The other idle connections most likely died the same way.
                self.pool.clear_idle();
                drop(conn);
                let mut fresh = self.pool.acquire_fresh().await?;
                match self.attempt(&mut fresh, sql, params, count).await {
                    Ok(rows) => {
                        fresh.release();
                        Ok(rows)
                    }
                    Err(failure) => Err(finish(fresh, failure)),
                }
            }
            Ok(rows) => {
                conn.release();
                Ok(rows)
            }
            Err(failure) => Err(finish(conn, failure)),
        }
    }

    async fn attempt(
        &self,
        conn: &mut PooledClient<'_>,
        sql: &str,
        params: &[Value],
        count: bool,
    ) -> Result<RowSet, Failure> {
        if count {
            self.statements.inc();
        }
        match tokio::time::timeout(self.query_timeout, execute(conn.client(), sql, params)).await {
            Ok(result) => result,
            // Dropping the unfinished future left the connection mid-response; the
            // caller discards it, which closes the socket and ends the batch server-side.
            Err(_) => Err(Failure::TimedOut),
        }
    }
}

/// How one attempt failed, which decides what happens to its connection.
enum Failure {
    /// The server rejected the statement; the connection is fine.
    Statement(ConnectorError),
    /// The connection is unusable (I/O, protocol, fatal server error).
    Broken(ConnectorError),
    /// The time limit passed with the response unread.
    TimedOut,
}

/// Returns or discards the connection after a failed attempt and gives the error.
fn finish(conn: PooledClient<'_>, failure: Failure) -> ConnectorError {
    match failure {
        Failure::Statement(e) => {
            conn.release();
            e
        }
        Failure::Broken(e) => {
            drop(conn);
            e
        }
        Failure::TimedOut => {
            drop(conn);
            ConnectorError::timeout("statement exceeded its time limit")
        }
    }
}

async fn execute(
    client: &mut pool::TdsClient,
    sql: &str,
    params: &[Value],
) -> Result<RowSet, Failure> {
    let mut query = Query::new(sql);
    for value in params {
        bind(&mut query, value);
    }
    let mut stream = query.query(client).await.map_err(classify)?;
    let mut out = RowSet::default();
    // Read the stream to its end, even past the first result set: an error can follow
    // the rows, and a stream left unread would have to be drained by the next statement.
    while let Some(item) = stream.try_next().await.map_err(classify)? {
        match item {
            QueryItem::Metadata(meta) if meta.result_index() == 0 => {
                out.columns = meta
                    .columns()
                    .iter()
                    .map(|c| c.name().to_string())
                    .collect();
            }
            QueryItem::Row(row) if row.result_index() == 0 => {
                let values = row
                    .into_iter()
                    .map(|cell| to_value(&cell))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(Failure::Statement)?;
                out.rows.push(values);
            }
            _ => {}
        }
    }
    Ok(out)
}

fn bind(query: &mut Query<'_>, value: &Value) {
    match value {
        // NULL goes as an untyped NULL declared nvarchar: SQL Server converts it to
        // whatever the comparison needs.
        Value::Null => query.bind(Option::<String>::None),
        Value::Bool(b) => query.bind(*b),
        Value::Int(i) => query.bind(*i),
        Value::Float(f) => query.bind(*f),
        Value::Text(s) => query.bind(s.clone()),
        Value::Date(d) => query.bind(*d),
        Value::DateTime(t) => query.bind(*t),
        Value::Bytes(b) => query.bind(b.clone()),
    }
}

/// One cell as the gateway sees it. Decimals become `Float` (see [`Value`]); `real`
/// values go through their shortest decimal form so `1.1` stays `1.1`, not
/// `1.100000023841858`.
fn to_value(cell: &ColumnData<'static>) -> Result<Value, ConnectorError> {
    let value = match cell {
        ColumnData::U8(v) => v.map(|v| Value::Int(v.into())),
        ColumnData::I16(v) => v.map(|v| Value::Int(v.into())),
        ColumnData::I32(v) => v.map(|v| Value::Int(v.into())),
        ColumnData::I64(v) => v.map(Value::Int),
        ColumnData::F32(v) => v.map(|v| Value::Float(v.to_string().parse().unwrap_or(v.into()))),
        ColumnData::F64(v) => v.map(Value::Float),
        ColumnData::Bit(v) => v.map(Value::Bool),
        ColumnData::String(v) => v.as_ref().map(|s| Value::Text(s.to_string())),
        ColumnData::Guid(v) => v.map(|g| Value::Text(g.to_string().to_uppercase())),
        ColumnData::Binary(v) => v.as_ref().map(|b| Value::Bytes(b.to_vec())),
        ColumnData::Numeric(v) => v.map(|n| {
            // One rounding (integer / power of ten) keeps 12.34 exactly as "12.34" parses.
            Value::Float(n.value() as f64 / 10f64.powi(i32::from(n.scale())))
        }),
        ColumnData::Xml(v) => v.as_ref().map(|x| Value::Text(x.to_string())),
        ColumnData::Date(_) => NaiveDate::from_sql(cell)
            .map_err(|_| ConnectorError::query("a date value could not be read"))?
            .map(Value::Date),
        ColumnData::DateTime(_) | ColumnData::SmallDateTime(_) | ColumnData::DateTime2(_) => {
            NaiveDateTime::from_sql(cell)
                .map_err(|_| ConnectorError::query("a datetime value could not be read"))?
                .map(Value::DateTime)
        }
        ColumnData::DateTimeOffset(_) => {
            // The instant in UTC: offsets differ between rows, a wall-clock time alone
            // would be ambiguous.
            chrono::DateTime::<chrono::Utc>::from_sql(cell)
                .map_err(|_| ConnectorError::query("a datetimeoffset value could not be read"))?
                .map(|t| Value::DateTime(t.naive_utc()))
        }
        ColumnData::Time(_) => chrono::NaiveTime::from_sql(cell)
            .map_err(|_| ConnectorError::query("a time value could not be read"))?
            .map(|t| Value::Text(t.format("%H:%M:%S%.f").to_string())),
    };
    Ok(value.unwrap_or(Value::Null))
}

/// Login failures SQL Server reports: wrong password or user (18456), locked account
/// (18486), expired or must-change password (18487, 18488), no access to the database
/// named at login (4060), untrusted domain login (18452).
const AUTH_ERRORS: [u32; 6] = [18456, 18452, 18486, 18487, 18488, 4060];

fn classify(e: tiberius::error::Error) -> Failure {
    use tiberius::error::Error as E;
    match &e {
        // Severity 20 and above ends the session on the server.
        E::Server(token) if token.class() >= 20 => Failure::Broken(map_error(&e)),
        E::Server(_) => Failure::Statement(map_error(&e)),
        // A value the client could not decode: the stream stopped mid-row.
        E::Conversion(_) | E::Utf8 | E::Utf16 | E::Encoding(_) | E::ParseInt(_) => {
            Failure::Broken(ConnectorError::query(describe(&e)))
        }
        _ => Failure::Broken(map_error(&e)),
    }
}

/// A config from `mssql://user[:password]@host[:port]/database?encryption=required|off|not_supported&trust_server_certificate=true|false`
/// (user and password percent-encoded where needed), and the password if the URL has
/// one. For tools and tests; the gateway config names secrets by env var or file.
pub fn parse_url(url: &str) -> Result<(MssqlConfig, Option<String>), String> {
    let rest = url
        .strip_prefix("mssql://")
        .ok_or("expected mssql://user@host:port/database")?;
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (userinfo, location) = rest.rsplit_once('@').ok_or("no user@ before the host")?;
    let (user, password) = match userinfo.split_once(':') {
        Some((u, p)) => (u, Some(percent_decode(p))),
        None => (userinfo, None),
    };
    let (hostport, database) = location.split_once('/').unwrap_or((location, "master"));
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "1433"));
    let port: u16 = port.parse().map_err(|_| format!("bad port `{port}`"))?;
    let (mut encryption, mut trust) = (Encryption::Required, false);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("encryption", "required") => encryption = Encryption::Required,
            ("encryption", "off") => encryption = Encryption::Off,
            ("encryption", "not_supported") => encryption = Encryption::NotSupported,
            ("trust_server_certificate", v) => trust = v == "true",
            (k, _) => return Err(format!("unknown option `{k}`")),
        }
    }
    let config = MssqlConfig::new(
        host,
        port,
        database,
        &percent_decode(user),
        encryption,
        trust,
    );
    Ok((config, password))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An error without SQL text or credentials: server messages quote identifiers, SQL
/// fragments and login names, so quoted parts are blanked out.
pub(crate) fn map_error(e: &tiberius::error::Error) -> ConnectorError {
    use tiberius::error::Error as E;
    let kind = match e {
        E::Server(token) if AUTH_ERRORS.contains(&token.code()) => ErrorKind::Auth,
        E::Server(_) => ErrorKind::Query,
        E::Io { kind, .. } if *kind == std::io::ErrorKind::TimedOut => ErrorKind::Timeout,
        E::Conversion(_) | E::Utf8 | E::Utf16 | E::Encoding(_) | E::ParseInt(_) => ErrorKind::Query,
        E::BulkInput(_) => ErrorKind::Query,
        _ => ErrorKind::Unavailable,
    };
    ConnectorError::new(kind, describe(e))
}

fn describe(e: &tiberius::error::Error) -> String {
    use tiberius::error::Error as E;
    match e {
        E::Server(token) => format!(
            "SQL Server error {} (severity {}, state {}): {}",
            token.code(),
            token.class(),
            token.state(),
            redact_quoted(token.message())
        ),
        E::Io { kind, .. } => format!("connection error: {kind}"),
        E::Protocol(m) => format!("protocol error: {}", redact_quoted(m)),
        E::Tls(_) => "TLS error (certificate not trusted, or the server has no TLS)".to_string(),
        E::Routing { .. } => "the server redirected to another host (not followed)".to_string(),
        E::Conversion(_) | E::Utf8 | E::Utf16 | E::Encoding(_) | E::ParseInt(_) => {
            "a value could not be converted".to_string()
        }
        E::BulkInput(_) => "a bound value has no SQL Server type".to_string(),
        // Variants of authentication features this build does not enable.
        #[allow(unreachable_patterns)]
        _ => "driver error".to_string(),
    }
}

/// Replaces everything inside '…' or "…" with `…`; an unclosed quote blanks the rest.
pub fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut quote: Option<char> = None;
    for c in message.chars() {
        match quote {
            None => {
                out.push(c);
                if c == '\'' || c == '"' {
                    quote = Some(c);
                    out.push('…');
                }
            }
            Some(q) if c == q => {
                out.push(c);
                quote = None;
            }
            Some(_) => {}
        }
    }
    if let Some(q) = quote {
        out.push(q);
    }
    out
}

#[async_trait]
impl Connector for MssqlConnector {
    fn engine(&self) -> &'static str {
        "mssql"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // SQL Server takes at most 2,100 parameters per statement; the rest is room
            // for `{since}` and other values a profile binds beside the keys.
            max_batch: 2000,
            placeholder: Placeholder::AtP,
        }
    }

    async fn query(&self, sql: &str, params: &[Value]) -> Result<RowSet, ConnectorError> {
        if params.len() > 2100 {
            return Err(ConnectorError::query(format!(
                "{} bound values; SQL Server takes at most 2100",
                params.len()
            )));
        }
        self.run(sql, params, true).await
    }

    async fn ping(&self) -> Result<(), ConnectorError> {
        self.run("SELECT 1", &[], false).await.map(|_| ())
    }

    fn statements_executed(&self) -> u64 {
        self.statements.get()
    }
}

impl escr_connector::ConnectorSettings for MssqlConfig {
    fn resolve_paths(&mut self, base: &std::path::Path) {
        escr_connector::resolve_files(base, [&mut self.password_file, &mut self.ca_file]);
    }
    fn secrets(&self) -> Vec<escr_connector::SecretRef<'_>> {
        vec![
            escr_connector::SecretRef {
                key: "password",
                env: self.password_env.as_deref(),
                file: self.password_file.as_deref(),
            },
            escr_connector::SecretRef {
                key: "ca",
                env: None,
                file: self.ca_file.as_deref(),
            },
        ]
    }
    fn connect(&self) -> Result<std::sync::Arc<dyn Connector>, ConnectorError> {
        MssqlConnector::new(self).map(|c| std::sync::Arc::new(c) as std::sync::Arc<dyn Connector>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_parts_are_redacted() {
        assert_eq!(
            redact_quoted("Incorrect syntax near 'nonsense'."),
            "Incorrect syntax near '…'."
        );
        assert_eq!(
            redact_quoted("Login failed for user \"escr\". Reason: 'x"),
            "Login failed for user \"…\". Reason: '…'"
        );
        assert_eq!(redact_quoted("no quotes"), "no quotes");
    }

    #[test]
    fn config_needs_explicit_trust_and_knows_its_fields() {
        let text = r#"
            host = "db"
            database = "d"
            user = "u"
            password_env = "X"
        "#;
        let err = toml::from_str::<MssqlConfig>(text).unwrap_err().to_string();
        assert!(err.contains("trust_server_certificate"), "{err}");
        let ok: MssqlConfig = toml::from_str(&format!(
            "{text}\ntrust_server_certificate = false\nencryption = \"not_supported\""
        ))
        .unwrap();
        assert_eq!(ok.encryption, Encryption::NotSupported);
        assert_eq!(ok.port, 1433);
        let unknown = toml::from_str::<MssqlConfig>(&format!(
            "{text}\ntrust_server_certificate = false\npassword = \"secret\""
        ));
        assert!(unknown.is_err(), "a password in the config text is refused");
    }

    #[test]
    fn password_sources_are_exclusive_and_required() {
        let mut c = MssqlConfig::new("h", 1, "d", "u", Encryption::Required, false);
        assert_eq!(c.resolve_password().unwrap_err().kind, ErrorKind::Config);
        c.password_env = Some("ESCR_MSSQL_UNIT_TEST_UNSET_VAR".into());
        let err = c.resolve_password().unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config);
        c.password_file = Some("/nonexistent".into());
        assert_eq!(c.resolve_password().unwrap_err().kind, ErrorKind::Config);
    }

    #[test]
    fn trust_and_ca_file_exclude_each_other() {
        let mut c = MssqlConfig::new("h", 1, "d", "u", Encryption::Required, true);
        c.ca_file = Some("/etc/hostname".into());
        let err = MssqlConnector::with_password(&c, "p".into()).err().unwrap();
        assert_eq!(err.kind, ErrorKind::Config);
    }
}
