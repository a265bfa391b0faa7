//! The ODBC connector over three real drivers: SQLite3 (a temp file), MariaDB and
//! PostgreSQL (servers started by scripts/test-servers.sh, drivers named in its
//! ODBCSYSINI). Tables are created through odbc-api directly. These tests fail, never
//! skip, when the servers or drivers are not there.

use std::time::{Duration, Instant};

use chrono::{NaiveDate, NaiveDateTime};
use escr_connector::conformance::{check_connector, HOSTILE_TEXTS};
use escr_connector::{sql, Connector, ErrorKind, RowSet, Value};
use escr_odbc::{Fetch, OdbcConfig, OdbcConnector};

use crate::mysql::{required_env, MARIADB};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Engine {
    Sqlite,
    Mariadb,
    Postgres,
}

/// One driver and its database, with the password split off the connection string.
struct Target {
    engine: Engine,
    /// Connection string without `Pwd`.
    base: String,
    password: String,
    _dir: tempfile::TempDir,
}

fn split_password(connection_string: &str) -> (String, String) {
    let mut base = String::new();
    let mut password = String::new();
    for part in connection_string
        .split(';')
        .filter(|p| !p.trim().is_empty())
    {
        match part.split_once('=') {
            Some((k, v)) if k.trim().eq_ignore_ascii_case("pwd") => password = v.to_string(),
            _ => {
                base.push_str(part);
                base.push(';');
            }
        }
    }
    (base, password)
}

fn target(engine: Engine) -> Target {
    required_env("ODBCSYSINI");
    let dir = tempfile::tempdir().unwrap();
    let (base, password) = match engine {
        Engine::Sqlite => {
            let driver = required_env("ESCR_TEST_SQLITE_ODBC_DRIVER");
            let file = dir.path().join("it.db");
            (
                format!("Driver={{{driver}}};Database={};", file.display()),
                String::new(),
            )
        }
        Engine::Mariadb => split_password(&required_env("ESCR_TEST_MARIADB_ODBC")),
        // Booleans as SQL_BIT rather than psqlODBC's default of text.
        Engine::Postgres => {
            let (base, pw) = split_password(&required_env("ESCR_TEST_PG_ODBC"));
            (format!("{base}BoolsAsChar=0;"), pw)
        }
    };
    Target {
        engine,
        base,
        password,
        _dir: dir,
    }
}

impl Target {
    fn full(&self) -> String {
        if self.password.is_empty() {
            self.base.clone()
        } else {
            format!("{}Pwd={};", self.base, self.password)
        }
    }

    /// Setup statements through odbc-api directly, one at a time.
    fn admin(&self, statements: &[&str]) {
        let env = odbc_api::environment().unwrap();
        let conn = env
            .connect_with_connection_string(&self.full(), odbc_api::ConnectionOptions::default())
            .unwrap_or_else(|e| panic!("{:?}: cannot connect for setup: {e}", self.engine));
        for statement in statements {
            conn.execute(statement, (), None)
                .unwrap_or_else(|e| panic!("{:?}: setup failed: {e}\n{statement}", self.engine));
        }
    }

    /// A connector configured the way an operator would: the password in a file.
    fn connector(&self, edit: impl FnOnce(&mut OdbcConfig)) -> OdbcConnector {
        let mut config = OdbcConfig::new(Some(&self.base));
        if !self.password.is_empty() {
            let file = self._dir.path().join("odbc.pw");
            std::fs::write(&file, format!("{}\n", self.password)).unwrap();
            config.password_file = Some(file);
        }
        config.pool_size = 3;
        edit(&mut config);
        OdbcConnector::new(&config).expect("connector config")
    }
}

const ENGINES: [Engine; 3] = [Engine::Sqlite, Engine::Mariadb, Engine::Postgres];

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}
fn at(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap()
}

#[tokio::test]
async fn odbc_conformance_on_every_driver() {
    let _shared = MARIADB.read().await;
    for engine in ENGINES {
        let t = target(engine);
        for fetch in [Fetch::Block, Fetch::Row] {
            let c = t.connector(|c| c.fetch = fetch);
            let failures = check_connector(&c).await;
            assert!(failures.is_empty(), "{engine:?} {fetch:?}: {failures:#?}");
            assert_eq!(c.engine(), "odbc");
            assert_eq!(c.capabilities().max_batch, 500);
        }
    }
}

/// Table DDL, one full row, one row of NULLs, and the values the full row must give.
fn types_fixture(engine: Engine) -> (Vec<&'static str>, Vec<Value>) {
    let common = vec![
        Value::Int(1),
        Value::Int(-5),
        Value::Int(70000),
        Value::Int(9007199254740993),
        Value::Float(1234.5),
        Value::Float(1.1),
        Value::Float(9876.543210987654),
        Value::from("Siân O'Brien 王芳 🙂"),
        Value::from("a long note"),
        Value::Date(date(1947, 2, 28)),
        Value::DateTime(at("2024-03-01 09:15:30.123456")),
        Value::Bytes(vec![0, 1, 2, 255]),
    ];
    let ddl = match engine {
        Engine::Sqlite => vec![
            "DROP TABLE IF EXISTS it_types",
            "CREATE TABLE it_types (id INTEGER PRIMARY KEY, tiny SMALLINT, num INTEGER,
               big BIGINT, amount NUMERIC(10,2), ratio REAL, precise DOUBLE,
               name VARCHAR(100), note TEXT, born DATE, seen TIMESTAMP, raw BLOB)",
            "INSERT INTO it_types VALUES (1, -5, 70000, 9007199254740993, 1234.50, 1.1,
               9876.543210987654, 'Siân O''Brien 王芳 🙂', 'a long note', '1947-02-28',
               '2024-03-01 09:15:30.123456', X'000102FF')",
            "INSERT INTO it_types (id) VALUES (2)",
        ],
        Engine::Mariadb => vec![
            "DROP TABLE IF EXISTS it_odbc_types",
            "CREATE TABLE it_odbc_types (id INT PRIMARY KEY, tiny TINYINT, num INT,
               big BIGINT, amount DECIMAL(10,2), ratio FLOAT, precise DOUBLE,
               name VARCHAR(100), note TEXT, born DATE, seen DATETIME(6), raw BLOB)",
            "INSERT INTO it_odbc_types VALUES (1, -5, 70000, 9007199254740993, 1234.50, 1.1,
               9876.543210987654, 'Siân O''Brien 王芳 🙂', 'a long note', '1947-02-28',
               '2024-03-01 09:15:30.123456', X'000102FF')",
            "INSERT INTO it_odbc_types (id) VALUES (2)",
        ],
        Engine::Postgres => vec![
            "DROP TABLE IF EXISTS it_odbc_types",
            "CREATE TABLE it_odbc_types (id INTEGER PRIMARY KEY, tiny SMALLINT, num INTEGER,
               big BIGINT, amount NUMERIC(10,2), ratio REAL, precise DOUBLE PRECISION,
               name VARCHAR(100), note TEXT, born DATE, seen TIMESTAMP(6), raw BYTEA)",
            "INSERT INTO it_odbc_types VALUES (1, -5, 70000, 9007199254740993, 1234.50, 1.1,
               9876.543210987654, 'Siân O''Brien 王芳 🙂', 'a long note', '1947-02-28',
               '2024-03-01 09:15:30.123456', '\\x000102ff')",
            "INSERT INTO it_odbc_types (id) VALUES (2)",
        ],
    };
    let mut expected = common;
    if engine == Engine::Sqlite {
        // The SQLite3 ODBC driver converts REAL values through text with 15 significant
        // digits: a driver limit, the same with every fetch mode.
        expected[6] = Value::Float(9876.54321098765);
    }
    (ddl, expected)
}

fn table(engine: Engine, name: &str) -> String {
    match engine {
        Engine::Sqlite => name.to_string(),
        // Keep apart from the MySQL tests' tables in the same database.
        _ => name.replacen("it_", "it_odbc_", 1),
    }
}

#[tokio::test]
async fn odbc_types_round_trip_and_nulls_in_both_fetch_modes() {
    let _shared = MARIADB.read().await;
    for engine in ENGINES {
        let t = target(engine);
        let (ddl, expected) = types_fixture(engine);
        t.admin(&ddl);
        let name = table(engine, "it_types");
        for fetch in [Fetch::Block, Fetch::Row] {
            let c = t.connector(|c| c.fetch = fetch);
            let rs = c
                .query(&format!("SELECT * FROM {name} ORDER BY id"), &[])
                .await
                .unwrap_or_else(|e| panic!("{engine:?} {fetch:?}: {e}"));
            assert_eq!(rs.columns.len(), expected.len(), "{engine:?}");
            assert_eq!(rs.columns[0].to_lowercase(), "id");
            assert_eq!(rs.rows[0], expected, "{engine:?} {fetch:?}");
            let mut nulls = vec![Value::Null; expected.len()];
            nulls[0] = Value::Int(2);
            assert_eq!(rs.rows[1], nulls, "{engine:?} {fetch:?}");

            // Without the long TEXT and BLOB columns every column has a bounded size, so
            // `Fetch::Block` reads these through block buffers rather than row by row.
            let rs = c
                .query(
                    &format!(
                        "SELECT id, tiny, num, big, amount, ratio, precise, name, born, seen \
                         FROM {name} ORDER BY id"
                    ),
                    &[],
                )
                .await
                .unwrap_or_else(|e| panic!("{engine:?} {fetch:?}: {e}"));
            let bounded: Vec<Value> = expected
                .iter()
                .enumerate()
                .filter(|(i, _)| ![8, 11].contains(i))
                .map(|(_, v)| v.clone())
                .collect();
            assert_eq!(rs.rows[0], bounded, "{engine:?} {fetch:?} bounded");
            let mut nulls = vec![Value::Null; bounded.len()];
            nulls[0] = Value::Int(2);
            assert_eq!(rs.rows[1], nulls, "{engine:?} {fetch:?} bounded");

            // Every kind of value binds and compares against its column. The SQLite3
            // driver renders a bound timestamp with milliseconds only, so there the
            // microsecond value can only be bracketed.
            let seen = if engine == Engine::Sqlite {
                "seen > ?"
            } else {
                "seen = ?"
            };
            let rs = c
                .query(
                    &format!(
                        "SELECT id FROM {name} WHERE born = ? AND {seen} AND amount = ? \
                         AND tiny = ? AND name = ? AND num = ?"
                    ),
                    &[
                        Value::Date(date(1947, 2, 28)),
                        Value::DateTime(if engine == Engine::Sqlite {
                            at("2024-03-01 09:15:30.123")
                        } else {
                            at("2024-03-01 09:15:30.123456")
                        }),
                        Value::Float(1234.5),
                        Value::Int(-5),
                        Value::from("Siân O'Brien 王芳 🙂"),
                        Value::from("70000"),
                    ],
                )
                .await
                .unwrap_or_else(|e| panic!("{engine:?} {fetch:?}: {e}"));
            assert_eq!(rs.rows, vec![vec![Value::Int(1)]], "{engine:?} {fetch:?}");
            // PostgreSQL cannot type a bare `? IS NULL`: the cast is the portable form.
            let rs = c
                .query(
                    &format!("SELECT COUNT(*) FROM {name} WHERE CAST(? AS VARCHAR(10)) IS NULL AND id > ?"),
                    &[Value::Null, Value::Bool(false)],
                )
                .await
                .unwrap_or_else(|e| panic!("{engine:?} {fetch:?}: {e}"));
            assert_eq!(rs.rows, vec![vec![Value::Int(2)]], "{engine:?} {fetch:?}");
        }
    }
}

#[tokio::test]
async fn odbc_bound_values_come_back_verbatim_and_change_nothing() {
    let _shared = MARIADB.read().await;
    let mut texts: Vec<&str> = HOSTILE_TEXTS.to_vec();
    texts.extend([
        "'; DROP TABLE it_hostile; --",
        "Robert'); DELETE FROM it_hostile; --",
    ]);
    for engine in ENGINES {
        let t = target(engine);
        let name = table(engine, "it_hostile");
        let drop = format!("DROP TABLE IF EXISTS {name}");
        let create = format!("CREATE TABLE {name} (id INTEGER PRIMARY KEY, name VARCHAR(200))");
        t.admin(&[&drop, &create]);
        let c = t.connector(|_| {});
        // Inserted through plain odbc-api with bound values.
        {
            let env = odbc_api::environment().unwrap();
            let conn = env
                .connect_with_connection_string(&t.full(), odbc_api::ConnectionOptions::default())
                .unwrap();
            let insert = format!("INSERT INTO {name} VALUES (?, ?)");
            for (i, text) in texts.iter().enumerate() {
                use odbc_api::IntoParameter;
                conn.execute(&insert, (&(i as i32), &text.into_parameter()), None)
                    .unwrap();
            }
        }
        for (i, text) in texts.iter().enumerate() {
            let rs = c
                .query(
                    &format!("SELECT id, name FROM {name} WHERE name = ?"),
                    &[Value::from(*text)],
                )
                .await
                .unwrap_or_else(|e| panic!("{engine:?}: {e}"));
            // Oracle-style '' = NULL is no concern on these three engines.
            assert_eq!(
                rs.rows,
                vec![vec![Value::Int(i as i64), Value::from(*text)]],
                "{engine:?} {text:?}"
            );
        }
        let rs = c
            .query(&format!("SELECT COUNT(*) FROM {name}"), &[])
            .await
            .unwrap();
        assert_eq!(rs.rows[0][0], Value::Int(texts.len() as i64), "{engine:?}");
    }
}

#[tokio::test]
async fn odbc_large_in_list_runs_in_max_batch_chunks() {
    let _shared = MARIADB.read().await;
    for engine in ENGINES {
        let t = target(engine);
        let name = table(engine, "it_keys");
        let drop = format!("DROP TABLE IF EXISTS {name}");
        let create = format!("CREATE TABLE {name} (id INTEGER PRIMARY KEY, label VARCHAR(20))");
        let values: Vec<String> = (1..=3000).map(|i| format!("({i}, 'k{i}')")).collect();
        let insert = format!("INSERT INTO {name} VALUES {}", values.join(","));
        t.admin(&[&drop, &create, &insert]);

        let c = t.connector(|_| {});
        let caps = c.capabilities();
        let keys: Vec<Value> = (1..=2500).map(Value::Int).collect();
        let before = c.statements_executed();
        let mut got: Vec<Vec<Value>> = Vec::new();
        for chunk in keys.chunks(caps.max_batch) {
            let bound = sql::bind(
                &format!("SELECT id, label FROM {name} WHERE id IN ({{keys}}) ORDER BY id"),
                chunk,
                None,
                caps.placeholder,
            );
            let rs = c
                .query(&bound.sql, &bound.params)
                .await
                .unwrap_or_else(|e| panic!("{engine:?}: {e}"));
            got.extend(rs.rows);
        }
        assert_eq!(c.statements_executed() - before, 5, "{engine:?}");
        assert_eq!(got.len(), 2500, "{engine:?}");
        assert_eq!(got[0], vec![Value::Int(1), Value::from("k1")]);
        assert_eq!(got[2499], vec![Value::Int(2500), Value::from("k2500")]);
    }
}

fn assert_clean(e: &escr_connector::ConnectorError, secrets: &[&str]) {
    let text = e.to_string();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        assert!(!text.contains(s), "secret in {text:?}");
    }
}

#[tokio::test]
async fn odbc_bad_credentials_and_unreachable_servers_have_kinds_and_no_secrets() {
    let _shared = MARIADB.read().await;
    let wrong = "not-the-password-7f3a";
    let free_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for engine in [Engine::Mariadb, Engine::Postgres] {
        let t = target(engine);
        let secrets = [wrong, t.password.as_str()];
        let config = OdbcConfig::new(None);

        let c = OdbcConnector::with_connection_string(&config, format!("{}Pwd={wrong};", t.base))
            .unwrap();
        let e = c.query("SELECT 1", &[]).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Auth, "{engine:?}: {e}");
        assert_clean(&e, &secrets);

        let other_db = t
            .full()
            .replace("Database=escr_test", "Database=no_such_database");
        let c = OdbcConnector::with_connection_string(&config, other_db).unwrap();
        let e = c.query("SELECT 1", &[]).await.unwrap_err();
        assert!(
            matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Auth),
            "{engine:?}: {e}"
        );
        assert_clean(&e, &secrets);

        let port = [
            required_env("ESCR_TEST_MYSQL_PORT"),
            required_env("ESCR_TEST_PG_PORT"),
        ];
        let mut unreachable = t.full();
        for p in port {
            unreachable = unreachable.replace(&format!("Port={p};"), &format!("Port={free_port};"));
        }
        let c = OdbcConnector::with_connection_string(&config, unreachable).unwrap();
        let started = Instant::now();
        let e = c.query("SELECT 1", &[]).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unavailable, "{engine:?}: {e}");
        assert_clean(&e, &secrets);
        assert!(started.elapsed() < Duration::from_secs(8), "{engine:?}");

        // Bad SQL: a Query error that does not echo the statement or its values.
        let c = t.connector(|_| {});
        let e = c
            .query(
                "SELECT secret_column FROM no_such_table WHERE x = ?",
                &[Value::from("v4lue")],
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Query, "{engine:?}: {e}");
        assert_clean(&e, &["secret_column", "no_such_table", "v4lue"]);
    }

    // A driver name nobody installed is a configuration error, not an outage.
    let c = OdbcConnector::with_connection_string(
        &OdbcConfig::new(None),
        "Driver={No Such Driver};Database=x;".into(),
    )
    .unwrap();
    let e = c.query("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
}

#[tokio::test]
async fn odbc_slow_statement_times_out_and_the_connector_goes_on() {
    let _shared = MARIADB.read().await;
    for (engine, slow) in [
        (Engine::Mariadb, "SELECT SLEEP(3)"),
        (Engine::Postgres, "SELECT pg_sleep(3)"),
    ] {
        let t = target(engine);
        let c = t.connector(|c| {
            c.query_timeout_ms = 1000;
            c.pool_size = 1;
        });
        c.query("SELECT 1", &[]).await.unwrap();
        let started = Instant::now();
        let e = c.query(slow, &[]).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Timeout, "{engine:?}: {e}");
        assert!(
            started.elapsed() < Duration::from_millis(2000),
            "{engine:?}: {:?}",
            started.elapsed()
        );
        // The only connection is free again once the statement is cancelled.
        let rs = c.query("SELECT 7", &[]).await.unwrap();
        assert_eq!(rs.rows[0][0], Value::Int(7), "{engine:?}");
        assert!(
            started.elapsed() < Duration::from_millis(2900),
            "{engine:?}: the abandoned statement was not cancelled ({:?})",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn odbc_serves_again_after_mariadb_restarts() {
    // Stopping MariaDB would break the other tests' statements: run alone.
    let _exclusive = MARIADB.write().await;
    let ctl = required_env("ESCR_TEST_MYSQL_CTL");
    let t = target(Engine::Mariadb);
    let c = t.connector(|c| c.acquire_timeout_ms = 2000);
    let (a, b) = tokio::join!(c.query("SELECT 1", &[]), c.query("SELECT 2", &[]));
    a.unwrap();
    b.unwrap();

    let stop = std::process::Command::new(&ctl)
        .arg("stop")
        .status()
        .unwrap();
    assert!(stop.success(), "{ctl} stop failed");
    let down = c.query("SELECT 1", &[]).await;
    let start = std::process::Command::new(&ctl)
        .arg("start")
        .status()
        .unwrap();
    assert!(start.success(), "{ctl} start failed");
    let e = down.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable, "{e}");

    for i in 0..4 {
        let rs: RowSet = c
            .query("SELECT ? AS n", &[Value::Int(i)])
            .await
            .unwrap_or_else(|e| panic!("query {i} after the restart: {e}"));
        assert_eq!(rs.rows[0][0], Value::Int(i));
    }
    c.ping().await.unwrap();
}
