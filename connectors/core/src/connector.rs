//! The trait every legacy source implements.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use crate::{ConnectorError, RowSet, Value};

/// How a dialect writes a bound parameter. The mapping engine expands `{keys}` and
/// `{since}` in profile SQL into these; values themselves are never written into SQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placeholder {
    /// `?` (SQLite, MySQL/MariaDB, ODBC)
    Question,
    /// `@P1, @P2, ...` (SQL Server through tiberius)
    AtP,
    /// `$1, $2, ...` (PostgreSQL native)
    Dollar,
}

impl Placeholder {
    /// The placeholder for the parameter at `index` (0-based).
    pub fn render(self, index: usize) -> String {
        match self {
            Placeholder::Question => "?".to_string(),
            Placeholder::AtP => format!("@P{}", index + 1),
            Placeholder::Dollar => format!("${}", index + 1),
        }
    }
}

/// What the gateway must know about a connector to use it well.
#[derive(Clone, Debug)]
pub struct Capabilities {
    /// Most keys bound in one statement (SQL Server allows 2,100 parameters, SQLite 32,766).
    pub max_batch: usize,
    pub placeholder: Placeholder,
}

/// A legacy database, reached one way or another. Connectors know nothing of GraphQL,
/// consent or each other: they run the operator's SQL with bound values and return rows.
#[async_trait]
pub trait Connector: Send + Sync + 'static {
    /// Short engine name for status pages: "sqlite", "mysql", "mssql", "odbc".
    fn engine(&self) -> &'static str;

    fn capabilities(&self) -> Capabilities;

    /// Run one read statement with bound parameters.
    async fn query(&self, sql: &str, params: &[Value]) -> Result<RowSet, ConnectorError>;

    /// [`Connector::query`] for a reader that uses only the result's `columns` (any
    /// case): the cells of the others may come back `Null`. An engine whose rows are
    /// costly to copy out leaves them (SQLite: a report at 100,000 people copied out
    /// names and free text it never read). By default, the whole rows.
    async fn query_columns(
        &self,
        sql: &str,
        params: &[Value],
        columns: &[&str],
    ) -> Result<RowSet, ConnectorError> {
        let _ = columns;
        self.query(sql, params).await
    }

    /// Cheap round trip proving the source is reachable.
    async fn ping(&self) -> Result<(), ConnectorError>;

    /// Statements sent to the engine since start (for batching tests and benchmarks).
    fn statements_executed(&self) -> u64;
}

/// A counter connectors embed to implement [`Connector::statements_executed`].
#[derive(Debug, Default)]
pub struct StatementCounter(AtomicU64);

impl StatementCounter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Make the files a config section names relative to the config file's folder (for
/// [`ConnectorSettings::resolve_paths`]).
pub fn resolve_files<'a>(
    base: &Path,
    files: impl IntoIterator<Item = &'a mut Option<std::path::PathBuf>>,
) {
    for file in files.into_iter().flatten() {
        *file = base.join(&*file);
    }
}

/// Where a connector section says a secret (or a file it needs) comes from.
#[derive(Debug, Clone, Copy)]
pub struct SecretRef<'a> {
    /// The key without `_env`/`_file` (`password`, `connection_string`, `tls_ca`).
    pub key: &'static str,
    pub env: Option<&'a str>,
    pub file: Option<&'a Path>,
}

/// A connector's section of the gateway config (`[[sources]] <engine> = { ... }`),
/// deserialized by the connector crate's own type (serde, `deny_unknown_fields`), that
/// builds the connector. The gateway's connector registry maps engine names to these
/// types, so a council's own connector needs no gateway source edited.
pub trait ConnectorSettings: std::fmt::Debug + Send + Sync + 'static {
    /// Files the section names are relative to the config file's folder.
    fn resolve_paths(&mut self, _base: &Path) {}

    /// The local database file a source reads, if it reads one (the embedded demo
    /// generates missing ones).
    fn local_file(&self) -> Option<&Path> {
        None
    }

    /// The secrets and files the section names, for `escr check-config` to find an
    /// unset variable or a missing file before the connector needs it: (the key in the
    /// section without its `_env`/`_file` suffix, the variable, the file).
    fn secrets(&self) -> Vec<SecretRef<'_>> {
        Vec::new()
    }

    /// Build the connector. Connect lazily: a server that is down now is a source that
    /// is down, not a failure to start; an error here (a secret file missing) stands in
    /// as a source that is down with that reason.
    fn connect(&self) -> Result<Arc<dyn Connector>, ConnectorError>;
}
