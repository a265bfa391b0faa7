//! The embedded default source: SQLite files through rusqlite (bundled).
//!
//! rusqlite is blocking, so every statement runs on tokio's blocking pool with a
//! connection taken from a small pool of read-only connections. A statement past its
//! time limit is interrupted through SQLite's interrupt handle.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use escr_connector::{
    Capabilities, Connector, ConnectorError, ErrorKind, Placeholder, RowSet, StatementCounter,
    Value,
};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use serde::Deserialize;

/// `[sources.sqlite]` in the gateway config.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteConfig {
    /// The database file (relative paths are resolved against the config file's folder).
    pub path: PathBuf,
    /// Connections kept open (default 4).
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Statement time limit in milliseconds (default 5000).
    #[serde(default = "default_query_timeout_ms")]
    pub query_timeout_ms: u64,
}

fn default_pool_size() -> usize {
    4
}
fn default_query_timeout_ms() -> u64 {
    5000
}

impl escr_connector::ConnectorSettings for SqliteConfig {
    fn resolve_paths(&mut self, base: &std::path::Path) {
        self.path = base.join(&self.path);
    }
    fn local_file(&self) -> Option<&std::path::Path> {
        Some(&self.path)
    }
    fn connect(&self) -> Result<Arc<dyn Connector>, ConnectorError> {
        Ok(Arc::new(SqliteConnector::new(self)))
    }
}

pub struct SqliteConnector {
    path: PathBuf,
    pool: Arc<Mutex<Vec<Connection>>>,
    permits: Arc<tokio::sync::Semaphore>,
    timeout: Duration,
    statements: Arc<StatementCounter>,
}

impl SqliteConnector {
    /// Opening is lazy: a missing file shows as an unavailable source, not a start-up failure.
    pub fn new(config: &SqliteConfig) -> SqliteConnector {
        SqliteConnector {
            path: config.path.clone(),
            pool: Arc::new(Mutex::new(Vec::new())),
            permits: Arc::new(tokio::sync::Semaphore::new(config.pool_size.max(1))),
            timeout: Duration::from_millis(config.query_timeout_ms),
            statements: Arc::new(StatementCounter::default()),
        }
    }

    fn open(path: &PathBuf) -> Result<Connection, ConnectorError> {
        if !path.exists() {
            return Err(ConnectorError::unavailable(format!(
                "database file {} not found",
                path.display()
            )));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(|e| {
            ConnectorError::unavailable(format!("cannot open database: {}", sqlite_reason(&e)))
        })?;
        conn.set_prepared_statement_cache_capacity(64);
        // Keyed reads jump about the file; through read() each page is copied out of
        // the OS cache into SQLite's small per-connection cache (2 MB) and soon evicted:
        // a profile of the 100k-person reports showed 17% of their time in those copies.
        // Mapped, the connections share the OS's pages and copy nothing.
        conn.pragma_update(None, "mmap_size", MMAP_BYTES)
            .map_err(|e| {
                ConnectorError::unavailable(format!("cannot set mmap_size: {}", sqlite_reason(&e)))
            })?;
        Ok(conn)
    }
}

/// The engine's reason, without SQL text (rusqlite puts none in its errors, but the
/// message of a prepare error can quote a fragment: keep only the first clause).
/// The engine's message goes to the detail (the operator's log): for a prepare or
/// step failure it names tables and columns of the profile's SQL, never bound values.
fn query_error(e: &rusqlite::Error) -> ConnectorError {
    let error = ConnectorError::query(sqlite_reason(e));
    match e {
        rusqlite::Error::SqliteFailure(_, Some(message)) => error.with_detail(message.clone()),
        rusqlite::Error::SqlInputError { msg, .. } => error.with_detail(msg.clone()),
        _ => error,
    }
}

fn sqlite_reason(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::SqliteFailure(err, _) => format!("{:?}", err.code),
        rusqlite::Error::SqlInputError { error, .. } => format!("{:?} (syntax error)", error.code),
        other => {
            let text = other.to_string();
            text.split(':').next().unwrap_or("error").to_string()
        }
    }
}

fn to_sql(value: &Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match value {
        Value::Null => V::Null,
        Value::Bool(b) => V::Integer(i64::from(*b)),
        Value::Int(i) => V::Integer(*i),
        Value::Float(f) => V::Real(*f),
        Value::Text(s) => V::Text(s.clone()),
        Value::Date(d) => V::Text(d.format("%Y-%m-%d").to_string()),
        Value::DateTime(t) => V::Text(t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()),
        Value::Bytes(b) => V::Blob(b.clone()),
    }
}

fn from_sql(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(f) => Value::Float(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
    }
}

/// How much of a database file a connection maps (see [`SqliteConnector::open`]).
const MMAP_BYTES: i64 = 1 << 30;

/// A statement without bound values reads a whole table (the identity index's
/// listing, the data-quality checks): it reads through `read()` with the mapping off.
/// Through the mapping, the pages it touched would count as this process's resident
/// memory for as long as the connection maps them (at 1,000,000 people, 1.4 GB of the
/// index build's 4.8 GB peak); mapping anew after the scan instead made the next scan
/// fault every page back (an index refresh 3.8 -> 6.4 s). Keyed reads, which jump about
/// the file, keep the mapping. Failing to switch costs memory, not correctness.
fn run(
    conn: &Connection,
    sql: &str,
    bound: &[rusqlite::types::Value],
    wanted: Option<&[String]>,
) -> Result<RowSet, ConnectorError> {
    let scan = bound.is_empty();
    if scan {
        let _ = conn.pragma_update(None, "mmap_size", 0);
    }
    let out = read(conn, sql, bound, wanted);
    if scan {
        let _ = conn.pragma_update(None, "mmap_size", MMAP_BYTES);
    }
    out
}

fn read(
    conn: &Connection,
    sql: &str,
    bound: &[rusqlite::types::Value],
    wanted: Option<&[String]>,
) -> Result<RowSet, ConnectorError> {
    let mut stmt = conn.prepare_cached(sql).map_err(|e| match e {
        rusqlite::Error::SqliteFailure(err, _)
            if err.code == rusqlite::ErrorCode::OperationInterrupted =>
        {
            ConnectorError::timeout("statement interrupted")
        }
        other => query_error(&other),
    })?;
    let columns: Vec<String> = stmt
        .column_names()
        .into_iter()
        .map(str::to_string)
        .collect();
    let mut rows = stmt
        .query(rusqlite::params_from_iter(bound.iter()))
        .map_err(|e| query_error(&e))?;
    let mut out = RowSet {
        columns,
        rows: Vec::new(),
    };
    let width = out.columns.len();
    let copied: Vec<bool> = out
        .columns
        .iter()
        .map(|c| wanted.is_none_or(|w| w.iter().any(|w| w.eq_ignore_ascii_case(c))))
        .collect();
    loop {
        match rows.next() {
            Ok(Some(row)) => {
                let mut values = Vec::with_capacity(width);
                for (i, copied) in copied.iter().enumerate() {
                    values.push(match copied {
                        true => row.get_ref(i).map(from_sql).unwrap_or(Value::Null),
                        false => Value::Null,
                    });
                }
                out.rows.push(values);
            }
            Ok(None) => break,
            Err(rusqlite::Error::SqliteFailure(err, _))
                if err.code == rusqlite::ErrorCode::OperationInterrupted =>
            {
                return Err(ConnectorError::timeout("statement interrupted"))
            }
            Err(e) => return Err(ConnectorError::query(sqlite_reason(&e))),
        }
    }
    Ok(out)
}

#[async_trait]
impl Connector for SqliteConnector {
    fn engine(&self) -> &'static str {
        "sqlite"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // SQLite's default SQLITE_MAX_VARIABLE_NUMBER is 32,766; stay well inside it.
            max_batch: 10_000,
            placeholder: Placeholder::Question,
        }
    }

    async fn query(&self, sql: &str, params: &[Value]) -> Result<RowSet, ConnectorError> {
        self.read_columns(sql, params, None).await
    }

    async fn query_columns(
        &self,
        sql: &str,
        params: &[Value],
        columns: &[&str],
    ) -> Result<RowSet, ConnectorError> {
        let columns = columns.iter().map(|c| c.to_string()).collect();
        self.read_columns(sql, params, Some(columns)).await
    }

    async fn ping(&self) -> Result<(), ConnectorError> {
        // Bound, so that a health check reads like a keyed read and keeps the mapping.
        self.query("SELECT ?", &[Value::Int(1)]).await.map(|_| ())
    }

    fn statements_executed(&self) -> u64 {
        self.statements.get()
    }
}

impl SqliteConnector {
    /// One statement on a pooled connection; cells of columns not in `wanted` (when
    /// given) are left `Null`.
    async fn read_columns(
        &self,
        sql: &str,
        params: &[Value],
        wanted: Option<Vec<String>>,
    ) -> Result<RowSet, ConnectorError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ConnectorError::unavailable("connector closed"))?;
        let pooled = self.pool.lock().ok().and_then(|mut p| p.pop());
        let conn = match pooled {
            Some(conn) => conn,
            None => {
                let path = self.path.clone();
                tokio::task::spawn_blocking(move || Self::open(&path))
                    .await
                    .map_err(|_| ConnectorError::unavailable("open task failed"))??
            }
        };
        self.statements.inc();
        let interrupt = conn.get_interrupt_handle();
        let sql = sql.to_string();
        // Converted here, once: the blocking task owns them (a report binds a thousand
        // keys per statement).
        let params: Vec<rusqlite::types::Value> = params.iter().map(to_sql).collect();
        let task = tokio::task::spawn_blocking(move || {
            let result = run(&conn, &sql, &params, wanted.as_deref());
            (conn, result)
        });
        let (conn, result) = match tokio::time::timeout(self.timeout, task).await {
            Ok(joined) => joined.map_err(|_| ConnectorError::unavailable("query task failed"))?,
            Err(_) => {
                // The blocking thread sees the interrupt and returns; its connection is dropped.
                interrupt.interrupt();
                return Err(ConnectorError::new(
                    ErrorKind::Timeout,
                    "statement exceeded its time limit",
                ));
            }
        };
        if let Ok(mut pool) = self.pool.lock() {
            pool.push(conn);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (tempfile_dir::TempDir, SqliteConfig) {
        let dir = tempfile_dir::TempDir::new();
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE T (ID INTEGER, NAME TEXT, AMT REAL, D TEXT);
             INSERT INTO T VALUES (1, 'O''Brien', 12.5, '2020-01-02'), (2, NULL, NULL, NULL);",
        )
        .unwrap();
        let config = SqliteConfig {
            path,
            pool_size: 2,
            query_timeout_ms: 2000,
        };
        (dir, config)
    }

    /// A throwaway directory without another dependency.
    mod tempfile_dir {
        pub struct TempDir(std::path::PathBuf);
        impl TempDir {
            pub fn new() -> TempDir {
                // Tests run in parallel: a counter, not the clock, keeps the names apart.
                static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let unique = format!(
                    "escr-sqlite-test-{}-{}-{:?}",
                    std::process::id(),
                    NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
                    std::time::SystemTime::now()
                );
                let path =
                    std::env::temp_dir().join(unique.replace([' ', ':', '{', '}', ','], "_"));
                std::fs::create_dir_all(&path).unwrap();
                TempDir(path)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for TempDir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[tokio::test]
    async fn rows_values_and_bound_parameters() {
        let (_dir, config) = fixture();
        let c = SqliteConnector::new(&config);
        let rs = c
            .query(
                "SELECT ID, NAME, AMT FROM T WHERE ID IN (?, ?) ORDER BY ID",
                &[Value::Int(1), Value::Int(2)],
            )
            .await
            .unwrap();
        assert_eq!(rs.columns, vec!["ID", "NAME", "AMT"]);
        assert_eq!(
            rs.rows[0],
            vec![Value::Int(1), Value::from("O'Brien"), Value::Float(12.5)]
        );
        assert_eq!(rs.rows[1], vec![Value::Int(2), Value::Null, Value::Null]);
        let hostile = Value::from("1 OR 1=1; DROP TABLE T; --");
        let rs = c
            .query("SELECT ID FROM T WHERE NAME = ?", &[hostile])
            .await
            .unwrap();
        assert!(rs.is_empty());
        assert_eq!(
            c.query("SELECT COUNT(*) FROM T", &[]).await.unwrap().rows[0][0],
            Value::Int(2)
        );
        assert_eq!(c.statements_executed(), 3);
    }

    /// Named columns (any case) come back as `query` gives them, the others `Null`.
    #[tokio::test]
    async fn a_reader_of_some_columns_gets_those_cells_only() {
        let (_dir, config) = fixture();
        let c = SqliteConnector::new(&config);
        let sql = "SELECT ID, NAME, AMT, D FROM T ORDER BY ID";
        let all = c.query(sql, &[]).await.unwrap();
        let some = c.query_columns(sql, &[], &["id", "D"]).await.unwrap();
        assert_eq!(some.columns, all.columns);
        assert_eq!(
            some.rows[0],
            vec![
                Value::Int(1),
                Value::Null,
                Value::Null,
                Value::from("2020-01-02")
            ]
        );
        for (a, s) in all.rows.iter().zip(&some.rows) {
            assert_eq!((&a[0], &a[3]), (&s[0], &s[3]));
        }
        assert_eq!(c.statements_executed(), 2);
    }

    /// A keyed read maps the file's pages; a scan (no bound values) drops them and
    /// reads without the mapping; the connection still answers, mapped as before.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_scan_leaves_no_file_pages_resident() {
        let (dir, config) = fixture();
        let conn = Connection::open(&config.path).unwrap();
        conn.execute_batch(
            "CREATE TABLE BIG (ID INTEGER PRIMARY KEY, PAD TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 60000)
             INSERT INTO BIG SELECT i, printf('%.200c', 'x') FROM n;",
        )
        .unwrap();
        drop(conn);
        let file = dir.path().join("t.db");
        let resident_kib = || -> u64 {
            // /proc/self/smaps: a header line per mapping (its path last), then its figures.
            let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
            let mut ours = false;
            let mut kib = 0;
            for line in smaps.lines() {
                if let Some(rss) = line.strip_prefix("Rss:") {
                    if ours {
                        kib += rss
                            .trim()
                            .trim_end_matches("kB")
                            .trim()
                            .parse::<u64>()
                            .unwrap();
                    }
                } else if line.split_whitespace().next().is_some_and(|t| {
                    t.contains('-') && t.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
                }) {
                    ours = line.ends_with(file.to_str().unwrap());
                }
            }
            kib
        };
        let c = SqliteConnector::new(&SqliteConfig {
            pool_size: 1,
            ..config
        });
        let small = c
            .query("SELECT PAD FROM BIG WHERE ID < ?", &[Value::Int(30_000)])
            .await
            .unwrap();
        assert_eq!(small.rows.len(), 29_999);
        let file_kib = std::fs::metadata(&file).unwrap().len() / 1024;
        assert!(
            resident_kib() > file_kib / 3,
            "{} of {file_kib} KiB",
            resident_kib()
        );
        let scan = c.query("SELECT ID, PAD FROM BIG", &[]).await.unwrap();
        assert_eq!(scan.rows.len(), 60_000);
        assert!(
            resident_kib() < file_kib / 10,
            "{} of {file_kib} KiB",
            resident_kib()
        );
        let one = c
            .query("SELECT ID FROM BIG WHERE ID = ?", &[Value::Int(4242)])
            .await
            .unwrap();
        assert_eq!(one.rows, vec![vec![Value::Int(4242)]]);
        // Mapped again: keyed reads bring their pages back through the mapping.
        let again = c
            .query("SELECT PAD FROM BIG WHERE ID < ?", &[Value::Int(30_000)])
            .await
            .unwrap();
        assert_eq!(again.rows.len(), 29_999);
        assert!(
            resident_kib() > file_kib / 3,
            "{} of {file_kib} KiB",
            resident_kib()
        );
    }

    #[tokio::test]
    async fn passes_the_connector_conformance_suite() {
        let (_dir, config) = fixture();
        let c = SqliteConnector::new(&config);
        let failures = escr_connector::conformance::check_connector(&c).await;
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[tokio::test]
    async fn bad_sql_missing_file_and_timeouts_have_kinds() {
        let (_dir, config) = fixture();
        let c = SqliteConnector::new(&config);
        let err = c.query("SELEKT nope", &[]).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Query);
        assert!(!err.message.contains("SELEKT"));

        let missing = SqliteConnector::new(&SqliteConfig {
            path: config.path.with_file_name("absent.db"),
            ..config.clone()
        });
        assert_eq!(
            missing.ping().await.unwrap_err().kind,
            ErrorKind::Unavailable
        );

        let slow = SqliteConnector::new(&SqliteConfig {
            query_timeout_ms: 50,
            ..config
        });
        let err = slow
            .query(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c",
                &[],
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Timeout);
        // The pool still serves after an interrupted statement.
        slow.ping().await.unwrap();
    }
}
