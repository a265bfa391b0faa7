//! Loading a generated vendor database into a real engine, so the real connector path
//! can be tried on the same data: `escr generate-demo --target opencare=mysql://...`
//! or `--target casetrak=mssql://...`.
//!
//! The generated SQLite file is the source: its tables (with their declared types, in
//! the vendor's own style), rows and indexes are copied as they are, a batch of rows at
//! a time. Values travel as bound parameters.

use std::path::Path;

use escr_connector::{Connector, Placeholder, Value};
use mysql_async::prelude::Queryable;

/// A table of the generated database: (column, declared type, part of the primary key).
struct Table {
    name: String,
    columns: Vec<(String, String, bool)>,
}

/// Tables and `CREATE INDEX` statements of the SQLite file.
fn read_schema(source: &rusqlite::Connection) -> Result<(Vec<Table>, Vec<String>), String> {
    let e = |e: rusqlite::Error| e.to_string();
    let names: Vec<String> = source
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .map_err(e)?
        .query_map([], |r| r.get(0))
        .map_err(e)?
        .collect::<Result<_, _>>()
        .map_err(e)?;
    let mut tables = Vec::new();
    for name in names {
        let columns = source
            .prepare(&format!("PRAGMA table_info(\"{name}\")"))
            .map_err(e)?
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(5)? > 0,
                ))
            })
            .map_err(e)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(e)?;
        tables.push(Table { name, columns });
    }
    let indexes = source
        .prepare("SELECT sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
        .map_err(e)?
        .query_map([], |r| r.get(0))
        .map_err(e)?
        .collect::<Result<Vec<String>, _>>()
        .map_err(e)?;
    Ok((tables, indexes))
}

/// Up to `limit` rows after `after` (rowid order; keyset paging keeps memory flat).
fn read_batch(
    source: &rusqlite::Connection,
    table: &Table,
    after: i64,
    limit: usize,
) -> Result<(Vec<Vec<Value>>, i64), String> {
    let e = |e: rusqlite::Error| e.to_string();
    let mut stmt = source
        .prepare_cached(&format!(
            "SELECT rowid, * FROM \"{}\" WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
            table.name
        ))
        .map_err(e)?;
    let mut rows = stmt.query((after, limit as i64)).map_err(e)?;
    let (mut out, mut last) = (Vec::new(), after);
    while let Some(row) = rows.next().map_err(e)? {
        last = row.get(0).map_err(e)?;
        let mut values = Vec::with_capacity(table.columns.len());
        for i in 0..table.columns.len() {
            use rusqlite::types::ValueRef;
            values.push(match row.get_ref(i + 1).map_err(e)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(n) => Value::Int(n),
                ValueRef::Real(f) => Value::Float(f),
                ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
            });
        }
        out.push(values);
    }
    Ok((out, last))
}

fn open(sqlite: &Path) -> Result<rusqlite::Connection, String> {
    rusqlite::Connection::open_with_flags(sqlite, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("{}: {e}", sqlite.display()))
}

/// `CREATE TABLE` in the target's quoting; declared types are the vendor's own (written
/// for its engine already); SQLite's rowid alias needs a width.
fn create_table(table: &Table, quote: fn(&str) -> String) -> String {
    let mut decls: Vec<String> = table
        .columns
        .iter()
        .map(|(c, t, _)| {
            let ty = match t.to_ascii_uppercase().as_str() {
                "INTEGER" => "BIGINT".to_string(),
                "" => "TEXT".to_string(),
                _ => t.clone(),
            };
            format!("{} {ty}", quote(c))
        })
        .collect();
    let key: Vec<String> = table
        .columns
        .iter()
        .filter(|(_, _, pk)| *pk)
        .map(|(c, _, _)| quote(c))
        .collect();
    if !key.is_empty() {
        decls.push(format!("PRIMARY KEY ({})", key.join(", ")));
    }
    format!("CREATE TABLE {} ({})", quote(&table.name), decls.join(", "))
}

/// `INSERT INTO t VALUES (..), (..)` for `rows` rows, placeholders in `style`.
fn insert(table: &Table, rows: usize, style: Placeholder, quote: fn(&str) -> String) -> String {
    let width = table.columns.len();
    let tuples: Vec<String> = (0..rows)
        .map(|r| {
            let marks: Vec<String> = (0..width).map(|c| style.render(r * width + c)).collect();
            format!("({})", marks.join(", "))
        })
        .collect();
    format!(
        "INSERT INTO {} VALUES {}",
        quote(&table.name),
        tuples.join(", ")
    )
}

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
    let source = open(sqlite)?;
    let (tables, indexes) = read_schema(&source)?;
    let quote = |n: &str| format!("`{n}`");
    let mut conn = mysql_async::Conn::new(opts)
        .await
        .map_err(|e| format!("cannot connect to the target: {e}"))?;
    // Legacy data keeps what the legacy engine kept (e.g. a 30 February in a DATE).
    conn.query_drop("SET SESSION sql_mode = 'ALLOW_INVALID_DATES,NO_ENGINE_SUBSTITUTION'")
        .await
        .map_err(|e| e.to_string())?;
    let mut copied = 0u64;
    for table in &tables {
        conn.query_drop(format!("DROP TABLE IF EXISTS {}", quote(&table.name)))
            .await
            .map_err(|e| format!("{}: {e}", table.name))?;
        conn.query_drop(format!(
            "{} CHARACTER SET utf8mb4",
            create_table(table, quote)
        ))
        .await
        .map_err(|e| format!("{}: {e}", table.name))?;
        let mut after = i64::MIN;
        loop {
            let (rows, last) = read_batch(&source, table, after, 500)?;
            if rows.is_empty() {
                break;
            }
            after = last;
            let sql = insert(table, rows.len(), Placeholder::Question, quote);
            copied += rows.len() as u64;
            let params: Vec<mysql_async::Value> =
                rows.into_iter().flatten().map(to_mysql).collect();
            conn.exec_drop(sql, params)
                .await
                .map_err(|e| format!("{}: {e}", table.name))?;
        }
    }
    for index in indexes {
        conn.query_drop(index.replace('"', "`"))
            .await
            .map_err(|e| format!("index: {e}"))?;
    }
    conn.disconnect().await.map_err(|e| e.to_string())?;
    Ok(copied)
}

fn to_mysql(v: Value) -> mysql_async::Value {
    match v {
        Value::Null => mysql_async::Value::NULL,
        Value::Int(i) => mysql_async::Value::Int(i),
        Value::Float(f) => mysql_async::Value::Double(f),
        Value::Text(t) => mysql_async::Value::Bytes(t.into_bytes()),
        Value::Bytes(b) => mysql_async::Value::Bytes(b),
        other => mysql_async::Value::Bytes(format!("{other:?}").into_bytes()),
    }
}

/// Copy every table of the SQLite database at `sqlite` into SQL Server through the
/// gateway's own SQL Server connector (bound values via `sp_executesql`; at most 2,000
/// values and 1,000 rows per statement), replacing tables of the same names (SQL Server
/// 2016 or later for `DROP TABLE IF EXISTS`). Returns the rows copied.
pub async fn sqlite_to_mssql(sqlite: &Path, target: &dyn Connector) -> Result<u64, String> {
    let source = open(sqlite)?;
    let (tables, indexes) = read_schema(&source)?;
    let quote = |n: &str| format!("[{n}]");
    let run = |sql: String, params: Vec<Value>| async move {
        target.query(&sql, &params).await.map_err(|e| e.to_string())
    };
    let mut copied = 0u64;
    for table in &tables {
        run(
            format!("DROP TABLE IF EXISTS {}", quote(&table.name)),
            vec![],
        )
        .await
        .map_err(|e| format!("{}: {e}", table.name))?;
        run(create_table(table, quote), vec![])
            .await
            .map_err(|e| format!("{}: {e}", table.name))?;
        let per_statement = (2000 / table.columns.len().max(1)).clamp(1, 1000);
        let mut after = i64::MIN;
        loop {
            let (rows, last) = read_batch(&source, table, after, per_statement)?;
            if rows.is_empty() {
                break;
            }
            after = last;
            let sql = insert(table, rows.len(), Placeholder::AtP, quote);
            copied += rows.len() as u64;
            run(sql, rows.into_iter().flatten().collect())
                .await
                .map_err(|e| format!("{}: {e}", table.name))?;
        }
    }
    for index in indexes {
        let index = index.replace('"', "");
        run(index, vec![])
            .await
            .map_err(|e| format!("index: {e}"))?;
    }
    Ok(copied)
}
