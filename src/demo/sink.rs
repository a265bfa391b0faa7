//! Where generated tables go. SQLite now; the same rows can load a real engine later.

use std::path::Path;

use escr_connector::Value;
use rusqlite::Connection;

pub trait TableSink {
    /// `columns` are (name, SQL type) pairs in the vendor's own style.
    fn create_table(&mut self, name: &str, columns: &[(&str, &str)]) -> Result<(), String>;
    fn insert(&mut self, table: &str, row: Vec<Value>) -> Result<(), String>;
    /// An index the vendor's own schema has (lookups the vendor's SQL relies on).
    fn create_index(&mut self, table: &str, column: &str) -> Result<(), String>;
}

pub struct SqliteSink {
    conn: Connection,
    statements: std::collections::HashMap<String, String>,
}

impl SqliteSink {
    pub fn create(path: &Path) -> Result<SqliteSink, String> {
        let _ = std::fs::remove_file(path);
        let conn = Connection::open(path).map_err(|e| e.to_string())?;
        conn.execute_batch("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; BEGIN;")
            .map_err(|e| e.to_string())?;
        Ok(SqliteSink {
            conn,
            statements: Default::default(),
        })
    }

    pub fn finish(self) -> Result<(), String> {
        self.conn
            .execute_batch("COMMIT;")
            .map_err(|e| e.to_string())
    }
}

fn to_sql(v: Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match v {
        Value::Null => V::Null,
        Value::Bool(b) => V::Integer(i64::from(b)),
        Value::Int(i) => V::Integer(i),
        Value::Float(f) => V::Real(f),
        Value::Text(s) => V::Text(s),
        Value::Date(d) => V::Text(d.to_string()),
        Value::DateTime(t) => V::Text(t.format("%Y-%m-%d %H:%M:%S").to_string()),
        Value::Bytes(b) => V::Blob(b),
    }
}

impl TableSink for SqliteSink {
    fn create_table(&mut self, name: &str, columns: &[(&str, &str)]) -> Result<(), String> {
        let cols: Vec<String> = columns.iter().map(|(c, t)| format!("{c} {t}")).collect();
        self.conn
            .execute_batch(&format!("CREATE TABLE {name} ({});", cols.join(", ")))
            .map_err(|e| e.to_string())?;
        let marks = vec!["?"; columns.len()].join(", ");
        self.statements.insert(
            name.to_string(),
            format!("INSERT INTO {name} VALUES ({marks})"),
        );
        Ok(())
    }

    fn create_index(&mut self, table: &str, column: &str) -> Result<(), String> {
        self.conn
            .execute_batch(&format!(
                "CREATE INDEX ix_{table}_{column} ON {table} ({column});"
            ))
            .map_err(|e| e.to_string())
    }

    fn insert(&mut self, table: &str, row: Vec<Value>) -> Result<(), String> {
        let sql = self
            .statements
            .get(table)
            .ok_or_else(|| format!("no table {table}"))?;
        let mut stmt = self.conn.prepare_cached(sql).map_err(|e| e.to_string())?;
        stmt.execute(rusqlite::params_from_iter(row.into_iter().map(to_sql)))
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}
