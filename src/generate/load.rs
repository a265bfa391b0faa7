//! Loading a generated vendor database into a real engine, so the real connector path
//! can be tried on the same data: `escr generate-demo --target opencare=mysql://...`.
//!
//! The generated SQLite file is the source: its tables (with their declared types, in
//! the vendor's own style), rows and indexes are copied as they are. Values travel as
//! bound parameters.

use std::path::Path;

use mysql_async::prelude::Queryable;

/// Rows in one multi-row INSERT (well under MariaDB's 65,535 placeholders).
const ROWS_PER_INSERT: usize = 500;

/// Connection options for `mysql://user@host:port/database`, with `password` (from the
/// environment) in place of any in the URL.
pub fn target_opts(url: &str, password: Option<String>) -> Result<mysql_async::Opts, String> {
    let opts = mysql_async::Opts::from_url(url).map_err(|e| format!("target URL: {e}"))?;
    Ok(match password {
        Some(p) => mysql_async::OptsBuilder::from_opts(opts)
            .pass(Some(p))
            .into(),
        None => opts,
    })
}

/// Copy every table of the SQLite database at `sqlite` into the MySQL/MariaDB database
/// `opts` names, replacing tables of the same names. Returns the rows copied.
pub async fn sqlite_to_mysql(sqlite: &Path, opts: mysql_async::Opts) -> Result<u64, String> {
    let source =
        rusqlite::Connection::open_with_flags(sqlite, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| format!("{}: {e}", sqlite.display()))?;
    // (table, [(column, declared type, part of the primary key)])
    type Columns = Vec<(String, String, bool)>;
    let tables: Vec<(String, Columns)> = {
        let mut names = source
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .map_err(|e| e.to_string())?;
        let names: Vec<String> = names
            .query_map([], |r| r.get(0))
            .map_err(|e| e.to_string())?
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for name in names {
            let mut info = source
                .prepare(&format!("PRAGMA table_info(\"{name}\")"))
                .map_err(|e| e.to_string())?;
            let columns = info
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(5)? > 0,
                    ))
                })
                .map_err(|e| e.to_string())?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            out.push((name, columns));
        }
        out
    };
    let indexes: Vec<String> = source
        .prepare("SELECT sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
        .and_then(|mut s| {
            s.query_map([], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()
        })
        .map_err(|e| e.to_string())?;

    let mut conn = mysql_async::Conn::new(opts)
        .await
        .map_err(|e| format!("cannot connect to the target: {e}"))?;
    // Legacy data keeps what the legacy engine kept (e.g. a 30 February in a DATE).
    conn.query_drop("SET SESSION sql_mode = 'ALLOW_INVALID_DATES,NO_ENGINE_SUBSTITUTION'")
        .await
        .map_err(|e| e.to_string())?;
    let mut rows_copied = 0u64;
    for (table, columns) in &tables {
        let mut decls: Vec<String> = columns
            .iter()
            .map(|(c, t, _)| format!("`{c}` {}", mysql_type(t)))
            .collect();
        let key: Vec<String> = columns
            .iter()
            .filter(|(_, _, pk)| *pk)
            .map(|(c, _, _)| format!("`{c}`"))
            .collect();
        if !key.is_empty() {
            decls.push(format!("PRIMARY KEY ({})", key.join(", ")));
        }
        conn.query_drop(format!("DROP TABLE IF EXISTS `{table}`"))
            .await
            .map_err(|e| format!("{table}: {e}"))?;
        conn.query_drop(format!(
            "CREATE TABLE `{table}` ({}) CHARACTER SET utf8mb4",
            decls.join(", ")
        ))
        .await
        .map_err(|e| format!("{table}: {e}"))?;
        let mut select = source
            .prepare(&format!("SELECT * FROM \"{table}\""))
            .map_err(|e| e.to_string())?;
        let mut rows = select.query([]).map_err(|e| e.to_string())?;
        let mut batch: Vec<mysql_async::Value> = Vec::new();
        let mut batch_rows = 0;
        loop {
            let row = rows.next().map_err(|e| e.to_string())?;
            if let Some(row) = row {
                for i in 0..columns.len() {
                    batch.push(to_mysql(row.get_ref(i).map_err(|e| e.to_string())?));
                }
                batch_rows += 1;
            }
            if batch_rows == ROWS_PER_INSERT || (row.is_none() && batch_rows > 0) {
                let marks = format!("({})", vec!["?"; columns.len()].join(", "));
                let sql = format!(
                    "INSERT INTO `{table}` VALUES {}",
                    vec![marks; batch_rows].join(", ")
                );
                conn.exec_drop(sql, std::mem::take(&mut batch))
                    .await
                    .map_err(|e| format!("{table}: {e}"))?;
                rows_copied += batch_rows as u64;
                batch_rows = 0;
            }
            if row.is_none() {
                break;
            }
        }
    }
    for index in indexes {
        conn.query_drop(index.replace('"', "`"))
            .await
            .map_err(|e| format!("index: {e}"))?;
    }
    conn.disconnect().await.map_err(|e| e.to_string())?;
    Ok(rows_copied)
}

/// The vendor's declared SQLite type as MySQL understands it (they are written in
/// MySQL style already; only SQLite's rowid alias needs a width).
fn mysql_type(declared: &str) -> String {
    match declared.to_ascii_uppercase().as_str() {
        "INTEGER" => "BIGINT".into(),
        "" => "TEXT".into(),
        _ => declared.to_string(),
    }
}

fn to_mysql(v: rusqlite::types::ValueRef<'_>) -> mysql_async::Value {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => mysql_async::Value::NULL,
        ValueRef::Integer(i) => mysql_async::Value::Int(i),
        ValueRef::Real(f) => mysql_async::Value::Double(f),
        ValueRef::Text(t) | ValueRef::Blob(t) => mysql_async::Value::Bytes(t.to_vec()),
    }
}
