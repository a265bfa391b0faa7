//! The trait every legacy source implements.

use std::sync::atomic::{AtomicU64, Ordering};

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
