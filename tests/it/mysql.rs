//! The MySQL/MariaDB connector against a real MariaDB started by scripts/test-servers.sh.
//!
//! Tables are created through mysql_async directly (the connector's sessions are read
//! only). These tests fail, never skip, when the servers are not there.

use std::time::{Duration, Instant};

use chrono::{NaiveDate, NaiveDateTime};
use escr_connector::conformance::{check_connector, HOSTILE_TEXTS};
use escr_connector::{sql, Connector, ErrorKind, Value};
use escr_mysql::{MysqlConfig, MysqlConnector};
use mysql_async::prelude::Queryable;

/// MariaDB is shared by the MySQL and the ODBC tests; the restart test takes it for itself.
pub(crate) static MARIADB: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

pub(crate) fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: start the test servers first \
             (`source scripts/test-servers.sh && start_test_servers`, as scripts/test-all.sh does)"
        )
    })
}

fn url_opts() -> mysql_async::Opts {
    mysql_async::Opts::from_url(&required_env("ESCR_TEST_MYSQL_URL"))
        .expect("ESCR_TEST_MYSQL_URL is not a mysql:// URL")
}

fn password() -> String {
    url_opts().pass().unwrap_or_default().to_string()
}

/// A connector configured the way an operator would: the password in a file.
struct Fixture {
    connector: MysqlConnector,
    _dir: tempfile::TempDir,
}

fn connector_with(edit: impl FnOnce(&mut MysqlConfig)) -> Fixture {
    let opts = url_opts();
    let dir = tempfile::tempdir().unwrap();
    let pw_file = dir.path().join("mysql.pw");
    std::fs::write(&pw_file, format!("{}\n", opts.pass().unwrap_or_default())).unwrap();
    let mut config = MysqlConfig::new(
        opts.ip_or_hostname(),
        opts.tcp_port(),
        opts.db_name().unwrap_or("escr_test"),
        opts.user().unwrap_or("escr"),
    );
    config.password_file = Some(pw_file);
    config.pool_max = 4;
    edit(&mut config);
    Fixture {
        connector: MysqlConnector::new(&config).expect("connector config"),
        _dir: dir,
    }
}

fn connector() -> Fixture {
    connector_with(|_| {})
}

async fn admin() -> mysql_async::Conn {
    mysql_async::Conn::new(url_opts())
        .await
        .expect("cannot connect to the test MariaDB (scripts/test-servers.sh)")
}

#[tokio::test]
async fn mysql_conformance() {
    let _shared = MARIADB.read().await;
    let f = connector();
    let failures = check_connector(&f.connector).await;
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(f.connector.engine(), "mysql");
    assert_eq!(f.connector.capabilities().max_batch, 1000);
}

#[tokio::test]
async fn mysql_types_round_trip_and_nulls() {
    let _shared = MARIADB.read().await;
    let mut db = admin().await;
    db.query_drop(
        "DROP TABLE IF EXISTS it_types;
         CREATE TABLE it_types (
           id INT PRIMARY KEY, tiny TINYINT, small SMALLINT, num INT, big BIGINT,
           ubig BIGINT UNSIGNED, amount DECIMAL(10,2), ratio FLOAT, precise DOUBLE,
           name VARCHAR(100), note TEXT, kind ENUM('adult','child'), doc JSON,
           born DATE, seen DATETIME(6), stamp TIMESTAMP NULL, raw BLOB, yr YEAR)",
    )
    .await
    .unwrap();
    db.exec_drop(
        "INSERT INTO it_types VALUES (1, -5, 300, 70000, 9007199254740993, 42, 1234.50,
           1.1, 9876.543210987654, 'Siân O''Brien', 'long note', 'child', '{\"a\": [1, 2]}',
           '1947-02-28', '2024-03-01 09:15:30.123456', '2024-03-01 10:00:00', ?, 2024)",
        (vec![0u8, 1, 2, 255],),
    )
    .await
    .unwrap();
    db.query_drop("INSERT INTO it_types (id) VALUES (2)")
        .await
        .unwrap();

    let f = connector();
    let rs = f
        .connector
        .query("SELECT * FROM it_types ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(
        rs.columns,
        [
            "id", "tiny", "small", "num", "big", "ubig", "amount", "ratio", "precise", "name",
            "note", "kind", "doc", "born", "seen", "stamp", "raw", "yr"
        ]
    );
    let date = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
    let at = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap();
    assert_eq!(
        rs.rows[0],
        vec![
            Value::Int(1),
            Value::Int(-5),
            Value::Int(300),
            Value::Int(70000),
            Value::Int(9007199254740993),
            Value::Int(42),
            Value::Float(1234.5),
            Value::Float(1.1),
            Value::Float(9876.543210987654),
            Value::from("Siân O'Brien"),
            Value::from("long note"),
            Value::from("child"),
            Value::from("{\"a\": [1, 2]}"),
            Value::Date(date(1947, 2, 28)),
            Value::DateTime(at("2024-03-01 09:15:30.123456")),
            Value::DateTime(at("2024-03-01 10:00:00")),
            Value::Bytes(vec![0, 1, 2, 255]),
            Value::Int(2024),
        ]
    );
    let mut nulls = vec![Value::Null; rs.columns.len()];
    nulls[0] = Value::Int(2);
    assert_eq!(rs.rows[1], nulls);

    // Every Value kind binds: dates and date-times compare against their columns.
    let rs = f
        .connector
        .query(
            "SELECT id FROM it_types WHERE born = ? AND seen = ? AND amount = ? AND tiny = ? AND name = ? AND raw = ?",
            &[
                Value::Date(date(1947, 2, 28)),
                Value::DateTime(at("2024-03-01 09:15:30.123456")),
                Value::Float(1234.5),
                Value::Int(-5),
                Value::from("Siân O'Brien"),
                Value::Bytes(vec![0, 1, 2, 255]),
            ],
        )
        .await
        .unwrap();
    assert_eq!(rs.rows, vec![vec![Value::Int(1)]]);
    let rs = f
        .connector
        .query(
            "SELECT COUNT(*) AS n FROM it_types WHERE ? IS NULL AND ? = 1",
            &[Value::Null, Value::Bool(true)],
        )
        .await
        .unwrap();
    assert_eq!(rs.rows, vec![vec![Value::Int(2)]]);
}

#[tokio::test]
async fn mysql_bound_values_come_back_verbatim_and_change_nothing() {
    let _shared = MARIADB.read().await;
    let mut db = admin().await;
    db.query_drop(
        "DROP TABLE IF EXISTS it_hostile;
         CREATE TABLE it_hostile (id INT PRIMARY KEY, name VARCHAR(200))",
    )
    .await
    .unwrap();
    let mut texts: Vec<&str> = HOSTILE_TEXTS.to_vec();
    texts.extend([
        "'; DROP TABLE it_hostile; --",
        "Robert'); DELETE FROM it_hostile; --",
    ]);
    for (i, text) in texts.iter().enumerate() {
        db.exec_drop("INSERT INTO it_hostile VALUES (?, ?)", (i, *text))
            .await
            .unwrap();
    }

    let f = connector();
    for (i, text) in texts.iter().enumerate() {
        let rs = f
            .connector
            .query(
                "SELECT id, name, ? AS echo FROM it_hostile WHERE name = ?",
                &[Value::from(*text), Value::from(*text)],
            )
            .await
            .unwrap();
        assert_eq!(
            rs.rows,
            vec![vec![
                Value::Int(i as i64),
                Value::from(*text),
                Value::from(*text)
            ]],
            "{text:?}"
        );
    }
    let rs = f
        .connector
        .query("SELECT COUNT(*) FROM it_hostile", &[])
        .await
        .unwrap();
    assert_eq!(rs.rows[0][0], Value::Int(texts.len() as i64));
}

#[tokio::test]
async fn mysql_large_in_list_runs_in_max_batch_chunks() {
    let _shared = MARIADB.read().await;
    let mut db = admin().await;
    db.query_drop(
        "DROP TABLE IF EXISTS it_keys;
         CREATE TABLE it_keys (id INT PRIMARY KEY, label VARCHAR(20))",
    )
    .await
    .unwrap();
    let values: Vec<String> = (1..=3000).map(|i| format!("({i}, 'k{i}')")).collect();
    db.query_drop(format!("INSERT INTO it_keys VALUES {}", values.join(",")))
        .await
        .unwrap();

    let f = connector();
    let caps = f.connector.capabilities();
    let keys: Vec<Value> = (1..=2500).map(|i| Value::Text(i.to_string())).collect();
    let before = f.connector.statements_executed();
    let mut got = Vec::new();
    for chunk in keys.chunks(caps.max_batch) {
        let bound = sql::bind(
            "SELECT id, label FROM it_keys WHERE id IN ({keys}) ORDER BY id",
            chunk,
            None,
            caps.placeholder,
        );
        assert!(!bound.sql.contains('\''), "values must not be in the SQL");
        let rs = f.connector.query(&bound.sql, &bound.params).await.unwrap();
        got.extend(rs.rows);
    }
    assert_eq!(f.connector.statements_executed() - before, 3);
    assert_eq!(got.len(), 2500);
    assert_eq!(got[0], vec![Value::Int(1), Value::from("k1")]);
    assert_eq!(got[2499], vec![Value::Int(2500), Value::from("k2500")]);
}

#[tokio::test]
async fn mysql_bad_credentials_and_unreachable_servers_have_kinds_and_no_secrets() {
    let _shared = MARIADB.read().await;
    let right = password();
    let wrong = "not-the-password-7f3a";
    let dir = tempfile::tempdir().unwrap();
    let wrong_file = dir.path().join("wrong.pw");
    std::fs::write(&wrong_file, wrong).unwrap();

    let f = connector_with(|c| c.password_file = Some(wrong_file.clone()));
    let e = f.connector.query("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert!(!e.to_string().contains(wrong) && !e.to_string().contains(&right));

    let f = connector_with(|c| c.database = "no_such_database".into());
    let e = f.connector.ping().await.unwrap_err();
    assert!(
        matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Auth),
        "{e}"
    );
    assert!(!e.to_string().contains(&right), "{e}");

    // A port nobody listens on: take one from the OS and let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let f = connector_with(|c| c.port = port);
    let started = Instant::now();
    let e = f.connector.query("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable, "{e}");
    assert!(!e.to_string().contains(&right), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // Bad SQL is a Query error that does not echo the statement.
    let f = connector();
    let e = f
        .connector
        .query(
            "SELECT secret_column FROM no_such_table WHERE x = ?",
            &[Value::from("v4lue")],
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Query, "{e}");
    let text = e.to_string();
    assert!(
        !text.contains("secret_column")
            && !text.contains("no_such_table")
            && !text.contains("v4lue"),
        "{text}"
    );
}

#[tokio::test]
async fn mysql_slow_statement_times_out_and_is_killed() {
    let _shared = MARIADB.read().await;
    let f = connector_with(|c| {
        c.query_timeout_ms = 1000;
        c.pool_max = 1;
    });
    f.connector.ping().await.unwrap();
    let started = Instant::now();
    let e = f.connector.query("SELECT SLEEP(3)", &[]).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
    assert!(started.elapsed() < Duration::from_millis(2000));
    // The only connection comes back once the server has killed the statement, well
    // before the 3 s sleep would have ended.
    let rs = f.connector.query("SELECT 7", &[]).await.unwrap();
    assert_eq!(rs.rows[0][0], Value::Int(7));
    assert!(
        started.elapsed() < Duration::from_millis(2900),
        "the abandoned statement was not killed ({:?})",
        started.elapsed()
    );
}

#[tokio::test]
async fn mysql_serves_again_after_the_server_restarts() {
    // Stopping MariaDB would break the other tests' statements: run alone.
    let _exclusive = MARIADB.write().await;
    let ctl = required_env("ESCR_TEST_MYSQL_CTL");
    let f = connector_with(|c| {
        c.pool_min = 2;
        c.acquire_timeout_ms = 2000;
    });
    // Fill the pool, so the restart leaves broken connections in it.
    let (a, b) = tokio::join!(
        f.connector.query("SELECT 1", &[]),
        f.connector.query("SELECT 2", &[])
    );
    a.unwrap();
    b.unwrap();

    let stop = std::process::Command::new(&ctl)
        .arg("stop")
        .status()
        .unwrap();
    assert!(stop.success(), "{ctl} stop failed");
    let down = f.connector.query("SELECT 1", &[]).await;
    let start = std::process::Command::new(&ctl)
        .arg("start")
        .status()
        .unwrap();
    assert!(start.success(), "{ctl} start failed");
    let e = down.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable, "{e}");

    for i in 0..4 {
        let rs = f
            .connector
            .query("SELECT ? AS n", &[Value::Int(i)])
            .await
            .unwrap_or_else(|e| panic!("query {i} after the restart: {e}"));
        assert_eq!(rs.rows[0][0], Value::Int(i));
    }
    f.connector.ping().await.unwrap();
}
