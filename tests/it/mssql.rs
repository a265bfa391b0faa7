//! The SQL Server connector against the project's TDS test server (tests/support/tds.rs),
//! the test server against a second, independent TDS client (FreeTDS `tsql`), and the
//! connector against a real SQL Server when `ESCR_TEST_MSSQL_URL` names one.

use std::time::{Duration, Instant};

use chrono::{NaiveDate, NaiveDateTime};
use escr_connector::conformance::check_connector;
use escr_connector::{sql, Connector, ErrorKind, Value};
use escr_mssql::{Encryption, MssqlConfig, MssqlConnector};
use tokio_util::compat::TokioAsyncWriteCompatExt;

use crate::support::tds::TdsTestServer;

const PASSWORD: &str = "s3cret-pw";

/// Text longer than 4,000 UTF-16 units travels as NVARCHAR(MAX), in PLP chunks.
fn long_note() -> String {
    "Siân's visit notes: ".repeat(300)
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn datetime(text: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").unwrap()
}

/// The typed row both the test server's `it_types` and the real-server query return
/// (after the id): tinyint, smallint, bigint, bit, real, float, decimal(10,2),
/// nvarchar, varchar, nvarchar(max), date, datetime2, datetime, smalldatetime, varbinary.
fn expected_types() -> Vec<Value> {
    vec![
        Value::Int(200),
        Value::Int(-300),
        Value::Int(9007199254740993),
        Value::Bool(true),
        Value::Float(1.1),
        Value::Float(9876.543210987654),
        Value::Float(-1234.5),
        Value::Text("Zoë Łukasz 王芳 🙂".into()),
        Value::Text("Siân O'Brien".into()),
        Value::Text(long_note()),
        Value::Date(date(1947, 2, 28)),
        Value::DateTime(datetime("2024-03-01 09:15:30.1234567")),
        Value::DateTime(datetime("2024-03-01 10:00:00.5")),
        Value::DateTime(datetime("2024-03-01 10:30:00")),
        Value::Bytes(vec![0, 1, 255]),
    ]
}

/// Rejected statements are Query errors that quote none of their SQL.
async fn assert_errors_carry_no_sql(connector: &MssqlConnector, statements: &[&str]) {
    for bad in statements {
        let err = connector.query(bad, &[]).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Query, "{bad}: {err}");
        for fragment in ["secret_column", "Confidential", "no_such_table", "nonsense"] {
            assert!(!err.message.contains(fragment), "{err}");
        }
        assert!(err.message.contains("SQL Server error"), "{err}");
    }
}

const BAD_STATEMENTS: [&str; 3] = [
    "SELECT secret_column FROM it_types WHERE name = 'Confidential Name'",
    "SELECT * FROM no_such_table_here",
    "SELECT FROM WHERE nonsense((",
];

/// 3,000 keys through `{keys}` in chunks of `max_batch`: two statements, every key back.
async fn assert_keys_chunked(connector: &MssqlConnector, template: &str) {
    let keys: Vec<Value> = (1..=3000).map(Value::Int).collect();
    let caps = connector.capabilities();
    let before = connector.statements_executed();
    let mut found = Vec::new();
    for chunk in keys.chunks(caps.max_batch) {
        assert!(chunk.len() <= 2000);
        let bound = sql::bind(template, chunk, None, caps.placeholder);
        let rs = connector.query(&bound.sql, &bound.params).await.unwrap();
        found.extend(rs.rows.into_iter().map(|r| r[0].clone()));
    }
    assert_eq!(connector.statements_executed() - before, 2);
    assert_eq!(found, keys);

    // More values than SQL Server takes is refused before anything is sent.
    let too_many: Vec<Value> = (0..2101).map(Value::Int).collect();
    let bound = sql::bind("SELECT {keys}", &too_many, None, caps.placeholder);
    let err = connector
        .query(&bound.sql, &bound.params)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Query);
    assert_eq!(connector.statements_executed() - before, 2);
}

/// Every type the connector maps, one full row and one of NULLs, plus 3,000 keys.
fn fixture_db() -> rusqlite::Connection {
    let db = rusqlite::Connection::open_in_memory().unwrap();
    db.execute_batch(
        "CREATE TABLE it_types (
           id INT PRIMARY KEY, tiny TINYINT, small SMALLINT, big BIGINT, flag BIT,
           ratio REAL, precise FLOAT, amount DECIMAL(10,2), name NVARCHAR(100),
           code VARCHAR(20), note NTEXT, born DATE, seen DATETIME2,
           stamp DATETIME, booked SMALLDATETIME, raw VARBINARY(100));
         CREATE TABLE clnt (id INT PRIMARY KEY, ref NVARCHAR(20));
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
         INSERT INTO clnt SELECT i, 'C' || i FROM n;",
    )
    .unwrap();
    db.execute(
        "INSERT INTO it_types VALUES (1, 200, -300, 9007199254740993, 1, 1.1,
           9876.543210987654, -1234.50, 'Zoë Łukasz 王芳 🙂', 'Siân O''Brien', ?1,
           '1947-02-28', '2024-03-01 09:15:30.1234567', '2024-03-01 10:00:00.5',
           '2024-03-01 10:30:00', X'0001FF')",
        [long_note()],
    )
    .unwrap();
    db.execute("INSERT INTO it_types (id) VALUES (2)", [])
        .unwrap();
    db
}

/// A connector configured as an operator would: the password in a file.
struct Fixture {
    connector: MssqlConnector,
    _dir: tempfile::TempDir,
}

fn connector_for(server: &TdsTestServer, edit: impl FnOnce(&mut MssqlConfig)) -> Fixture {
    connector_with_password(server, PASSWORD, edit)
}

fn connector_with_password(
    server: &TdsTestServer,
    password: &str,
    edit: impl FnOnce(&mut MssqlConfig),
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let pw_file = dir.path().join("mssql.pw");
    std::fs::write(&pw_file, format!("{password}\n")).unwrap();
    let mut config = MssqlConfig::new(
        "127.0.0.1",
        server.port(),
        "escr_test",
        "escr",
        Encryption::NotSupported,
        false,
    );
    config.password_file = Some(pw_file);
    config.pool_size = 2;
    config.connect_timeout_ms = 2000;
    config.query_timeout_ms = 5000;
    edit(&mut config);
    Fixture {
        connector: MssqlConnector::new(&config).expect("connector config"),
        _dir: dir,
    }
}

async fn server() -> TdsTestServer {
    let server = TdsTestServer::start(fixture_db()).await;
    server.require_login("escr", PASSWORD);
    server
}

#[tokio::test]
async fn mssql_conformance_over_the_test_server() {
    let server = server().await;
    let f = connector_for(&server, |_| {});
    let failures = check_connector(&f.connector).await;
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(f.connector.engine(), "mssql");
    assert_eq!(f.connector.capabilities().max_batch, 2000);
    assert_eq!(
        f.connector.capabilities().placeholder,
        escr_connector::Placeholder::AtP
    );
}

#[tokio::test]
async fn mssql_types_and_nulls_come_back_exactly() {
    let server = server().await;
    let f = connector_for(&server, |_| {});
    let rs = f
        .connector
        .query(
            "SELECT * FROM [it_types] WHERE id IN (@P1, @P2) ORDER BY id",
            &[Value::Int(1), Value::Int(2)],
        )
        .await
        .unwrap();
    assert_eq!(
        rs.columns,
        [
            "id", "tiny", "small", "big", "flag", "ratio", "precise", "amount", "name", "code",
            "note", "born", "seen", "stamp", "booked", "raw"
        ]
    );
    assert_eq!(rs.rows[0][0], Value::Int(1));
    assert_eq!(rs.rows[0][1..], expected_types());
    let mut nulls = vec![Value::Int(2)];
    nulls.resize(16, Value::Null);
    assert_eq!(rs.rows[1], nulls);
}

#[tokio::test]
async fn mssql_every_value_type_binds_as_a_parameter() {
    let server = server().await;
    let f = connector_for(&server, |_| {});
    let rs = f
        .connector
        .query(
            "SELECT TOP 1 id FROM dbo.it_types
             WHERE flag = @P1 AND big = @P2 AND precise = @P3 AND name = N'Zoë Łukasz 王芳 🙂'
               AND code = @P4 AND born = @P5 AND booked = @P6 AND raw = @P7 AND note = @P8
               AND (@P9 IS NULL) AND amount = @P10",
            &[
                Value::Bool(true),
                Value::Int(9007199254740993),
                Value::Float(9876.543210987654),
                Value::Text("Siân O'Brien".into()),
                Value::Date(date(1947, 2, 28)),
                Value::DateTime(datetime("2024-03-01 10:30:00")),
                Value::Bytes(vec![0, 1, 255]),
                Value::Text(long_note()),
                Value::Null,
                Value::Float(-1234.5),
            ],
        )
        .await
        .unwrap();
    assert_eq!(rs.rows, vec![vec![Value::Int(1)]]);

    // Values come back as sent, however long, whatever the characters.
    let rs = f
        .connector
        .query(
            "SELECT @P1 AS t, @P2 AS i, @P3 AS f, @P4 AS n, @P5 AS b, @P6 AS l",
            &[
                Value::Text("x'); DROP TABLE clnt; --".into()),
                Value::Int(-42),
                Value::Float(0.1),
                Value::Null,
                Value::Bytes(vec![9, 8, 7]),
                Value::Text(long_note()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        rs.rows[0],
        vec![
            Value::Text("x'); DROP TABLE clnt; --".into()),
            Value::Int(-42),
            Value::Float(0.1),
            Value::Null,
            Value::Bytes(vec![9, 8, 7]),
            Value::Text(long_note()),
        ]
    );
    let count = f
        .connector
        .query("SELECT COUNT(*) AS n FROM clnt", &[])
        .await
        .unwrap();
    assert_eq!(count.rows, vec![vec![Value::Int(3000)]]);
}

#[tokio::test]
async fn mssql_3000_keys_go_in_chunks_of_at_most_2000() {
    let server = server().await;
    let f = connector_for(&server, |_| {});
    let requests = server.requests();
    assert_keys_chunked(
        &f.connector,
        "SELECT id, ref FROM clnt WHERE id IN ({keys}) ORDER BY id",
    )
    .await;
    assert_eq!(server.requests() - requests, 2);
    assert_eq!(server.max_params(), 2000);
}

#[tokio::test]
async fn mssql_error_token_is_a_query_error_without_sql_text() {
    let server = server().await;
    let f = connector_for(&server, |_| {});
    f.connector.ping().await.unwrap();
    let logins = server.logins();
    assert_errors_carry_no_sql(&f.connector, &BAD_STATEMENTS).await;
    // A rejected statement leaves its connection usable: no new login was needed.
    f.connector.ping().await.unwrap();
    assert_eq!(server.logins(), logins);
}

#[tokio::test]
async fn mssql_slow_statement_times_out_and_the_pool_recovers() {
    let server = server().await;
    let f = connector_for(&server, |c| c.query_timeout_ms = 300);
    f.connector.ping().await.unwrap();
    server.set_delay(Duration::from_secs(3));
    let started = Instant::now();
    let err = f
        .connector
        .query("SELECT id FROM it_types", &[])
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    server.set_delay(Duration::ZERO);
    let rs = f
        .connector
        .query("SELECT id FROM it_types ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(rs.len(), 2);
}

#[tokio::test]
async fn mssql_wrong_password_and_refused_logins_are_auth_errors() {
    let server = server().await;
    let f = connector_with_password(&server, "not-the-password", |_| {});
    let err = f.connector.query("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Auth, "{err}");
    assert!(!err.message.contains("not-the-password"), "{err}");
    assert!(!err.message.contains("escr"), "{err}");

    server.refuse_logins(true);
    let f = connector_for(&server, |_| {});
    let err = f.connector.ping().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Auth, "{err}");
    server.refuse_logins(false);
    f.connector.ping().await.unwrap();
}

#[tokio::test]
async fn mssql_recovers_after_the_server_restarts() {
    let mut server = server().await;
    let f = connector_for(&server, |_| {});
    let sql = "SELECT ref FROM clnt WHERE id = @P1";
    let one = [Value::Int(7)];
    assert_eq!(f.connector.query(sql, &one).await.unwrap().len(), 1);

    server.stop().await;
    let err = f.connector.query(sql, &one).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable, "{err}");

    // The data outlives the restart, as a real server's would.
    server
        .with_db(|db| db.execute("UPDATE clnt SET ref = 'C7b' WHERE id = 7", []))
        .unwrap();
    server.restart().await;
    let rs = f.connector.query(sql, &one).await.unwrap();
    assert_eq!(rs.rows, vec![vec![Value::Text("C7b".into())]]);

    // A restart the pool did not notice: its idle connection is dead, the statement
    // goes through on a new one.
    server.restart().await;
    let rs = f.connector.query(sql, &one).await.unwrap();
    assert_eq!(rs.rows, vec![vec![Value::Text("C7b".into())]]);
}

#[tokio::test]
async fn mssql_required_encryption_against_a_server_without_tls_is_unavailable() {
    let server = server().await;
    let f = connector_for(&server, |c| {
        c.encryption = Encryption::Required;
        c.trust_server_certificate = true;
    });
    let err = f.connector.ping().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable, "{err}");
}

#[tokio::test]
async fn mssql_unreachable_server_is_unavailable() {
    let mut server = server().await;
    let f = connector_for(&server, |_| {});
    server.stop().await;
    let err = f.connector.ping().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable, "{err}");
}

/// tiberius directly: an attention (cancel) packet cuts a slow statement short and the
/// connection stays usable; a 2,000-value request spans many packets.
#[tokio::test]
async fn mssql_test_server_answers_attention_and_multi_packet_requests() {
    let server = server().await;
    let mut config = tiberius::Config::new();
    config.host("127.0.0.1");
    config.port(server.port());
    config.authentication(tiberius::AuthMethod::sql_server("escr", PASSWORD));
    config.encryption(tiberius::EncryptionLevel::NotSupported);
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut client = tiberius::Client::connect(config, tcp.compat_write())
        .await
        .unwrap();

    server.set_delay(Duration::from_secs(5));
    let started = Instant::now();
    let timed_out = tokio::time::timeout(
        Duration::from_millis(200),
        client.query("SELECT COUNT(*) FROM clnt", &[]),
    )
    .await
    .is_err();
    assert!(timed_out, "the statement should still be running");
    client.cancel_query().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    server.set_delay(Duration::ZERO);

    let keys: Vec<i64> = (1..=2000).collect();
    let params: Vec<&dyn tiberius::ToSql> =
        keys.iter().map(|k| k as &dyn tiberius::ToSql).collect();
    let bound = sql::bind(
        "SELECT COUNT(*) AS n FROM clnt WHERE id IN ({keys})",
        &keys.iter().map(|k| Value::Int(*k)).collect::<Vec<_>>(),
        None,
        escr_connector::Placeholder::AtP,
    );
    let row = client
        .query(bound.sql, &params)
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.get::<i32, _>(0), Some(2000));
}

/// Garbage on the wire closes that connection and nothing else.
#[tokio::test]
async fn mssql_test_server_survives_malformed_input() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = server().await;
    for junk in [
        &[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5][..], // a TLS ClientHello
        &[0x12, 0x01, 0x00, 0x04, 0, 0, 0, 0][..],          // length below the header
        &[0x10, 0x01, 0x00, 0x0C, 0, 0, 0, 0, 1, 2, 3, 4][..], // a truncated LOGIN7
        &[0x01, 0x01, 0x00, 0x0A, 0, 0, 0, 0, 0xFF, 0xFF][..], // a batch before login
    ] {
        let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(junk).await.unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "the server should close the connection");
    }
    let f = connector_for(&server, |_| {});
    f.connector.ping().await.unwrap();
}

/// A second, independent TDS client (FreeTDS, Debian package `freetds-bin`) reads from
/// the test server. Fails when `tsql` is missing: the test scripts install it.
#[tokio::test]
async fn mssql_test_server_serves_freetds_tsql() {
    let server = server().await;
    let script = "SELECT id, name, code, amount, big FROM it_types WHERE id = 1\ngo\nSELECT id, born, seen, stamp, flag, ratio, tiny FROM it_types ORDER BY id\ngo\nSELECT nonsense FROM x\ngo\n\
                  SELECT COUNT(*) AS n FROM clnt WHERE id <= 1500\ngo\nexit\n";
    let mut child = tokio::process::Command::new("tsql")
        .args(["-H", "127.0.0.1", "-p", &server.port().to_string()])
        .args(["-U", "escr", "-P", PASSWORD, "-D", "escr_test"])
        .env("TDSVER", "7.4")
        .env("LC_ALL", "C.UTF-8")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("FreeTDS tsql is not installed (apt-get install -y freetds-bin)");
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(script.as_bytes()).await.unwrap();
    }
    let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("tsql did not finish")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let context = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(output.status.success(), "{context}");
    assert!(
        stdout.contains("1\tZoë Łukasz 王芳 🙂\tSiân O'Brien\t-1234.50\t9007199254740993"),
        "{context}"
    );
    // Dates, datetime2 and datetime in FreeTDS's default format; a NULL row (NBCROW).
    assert!(
        stdout.contains(
            "1\tFeb 28 1947 12:00AM\tMar  1 2024 09:15AM\tMar  1 2024 10:00AM\t1\t1.10000002\t200"
        ),
        "{context}"
    );
    assert!(
        stdout.contains("2\tNULL\tNULL\tNULL\tNULL\tNULL\tNULL"),
        "{context}"
    );
    assert!(stdout.contains("\n1500\n"), "{context}");
    // The ERROR token as FreeTDS reports it.
    assert!(stderr.contains("Msg 208 (severity 16"), "{context}");
    assert_eq!(server.logins(), 1, "{context}");
}

/// A real server named by `ESCR_TEST_MSSQL_URL` (see `escr_mssql::parse_url`).
struct RealServer {
    config: MssqlConfig,
    password: String,
}

fn parse_real_server(url: &str) -> RealServer {
    let (config, password) =
        escr_mssql::parse_url(url).unwrap_or_else(|e| panic!("ESCR_TEST_MSSQL_URL: {e}"));
    RealServer {
        config,
        password: password.unwrap_or_default(),
    }
}

fn real_connector(
    server: &RealServer,
    password: &str,
    edit: impl FnOnce(&mut MssqlConfig),
) -> MssqlConnector {
    let mut config = server.config.clone();
    config.pool_size = 2;
    edit(&mut config);
    MssqlConnector::with_password(&config, password.to_string()).expect("connector config")
}

/// The same assertions against a real SQL Server, when `ESCR_TEST_MSSQL_URL` names one
/// (the only test here that may skip).
#[tokio::test]
async fn mssql_real_server_when_configured() {
    let Ok(url) = std::env::var("ESCR_TEST_MSSQL_URL") else {
        eprintln!(
            "mssql_real_server_when_configured: skipped, ESCR_TEST_MSSQL_URL is not set \
             (mssql://user:password@host:1433/database?encryption=required&trust_server_certificate=true)"
        );
        return;
    };
    let server = parse_real_server(&url);
    let connector = real_connector(&server, &server.password, |_| {});

    let failures = check_connector(&connector).await;
    assert!(failures.is_empty(), "{failures:#?}");

    let rs = connector
        .query(
            "SELECT CAST(200 AS TINYINT) AS tiny, CAST(-300 AS SMALLINT) AS small,
               CAST(9007199254740993 AS BIGINT) AS big, CAST(1 AS BIT) AS flag,
               CAST(1.1 AS REAL) AS ratio, CAST(9876.543210987654 AS FLOAT) AS precise,
               CAST(-1234.50 AS DECIMAL(10,2)) AS amount, N'Zoë Łukasz 王芳 🙂' AS name,
               CAST('Siân O''Brien' AS VARCHAR(20)) AS code, @P1 AS note,
               CAST('1947-02-28' AS DATE) AS born,
               CAST('2024-03-01T09:15:30.1234567' AS DATETIME2) AS seen,
               CAST('2024-03-01T10:00:00.500' AS DATETIME) AS stamp,
               CAST('2024-03-01T10:30:00' AS SMALLDATETIME) AS booked,
               CAST(0x0001FF AS VARBINARY(100)) AS raw, CAST(NULL AS INT) AS nothing,
               @P2 AS null_param",
            &[Value::Text(long_note()), Value::Null],
        )
        .await
        .unwrap();
    let mut expected = expected_types();
    expected.extend([Value::Null, Value::Null]);
    assert_eq!(rs.rows, vec![expected]);

    assert_keys_chunked(
        &connector,
        "SELECT n FROM (SELECT TOP 3000 CAST(ROW_NUMBER() OVER (ORDER BY (SELECT NULL)) AS INT) AS n
           FROM sys.all_columns a CROSS JOIN sys.all_columns b) x WHERE n IN ({keys}) ORDER BY n",
    )
    .await;

    assert_errors_carry_no_sql(
        &connector,
        &[
            "SELECT secret_column FROM sys.objects WHERE name = 'Confidential Name'",
            "SELECT * FROM no_such_table_here",
            "SELECT FROM WHERE nonsense((",
        ],
    )
    .await;

    let slow = real_connector(&server, &server.password, |c| c.query_timeout_ms = 500);
    let started = Instant::now();
    let err = slow
        .query("WAITFOR DELAY '00:00:05'; SELECT 1 AS x", &[])
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    slow.ping().await.unwrap();

    let wrong = real_connector(&server, "not-the-password", |_| {});
    let err = wrong.ping().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Auth, "{err}");
}

/// The CaseTrak profile (a SQL Server product) passes the profile conformance suite
/// through escr-mssql and TDS, over the demo's CaseTrak data.
#[tokio::test]
async fn mssql_casetrak_profile_passes_over_tds() {
    let demo = crate::support::demo::dirty();
    let db = rusqlite::Connection::open_with_flags(
        demo.dir.join("casetrak.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let server = TdsTestServer::start(db).await;
    server.require_login("escr", PASSWORD);
    let f = connector_for(&server, |_| {});
    let profile = escr_connector::VendorProfile::load(
        &crate::support::demo::repo().join("config/vendors/casetrak.toml"),
    )
    .unwrap();
    let keys: Vec<String> = demo
        .truth
        .people
        .iter()
        .flat_map(|p| &p.records)
        .filter(|r| r.source == "casetrak")
        .take(40)
        .map(|r| r.local_id.clone())
        .collect();
    assert!(keys.len() >= 20);
    let failures = escr_connector::conformance::check_profile(&f.connector, &profile, &keys).await;
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(
        server.requests() > 10,
        "the profile's statements went over TDS"
    );
}

/// A full pool makes the next caller wait at most `acquire_timeout_ms`.
#[tokio::test]
async fn mssql_full_pool_gives_an_acquire_timeout() {
    let server = server().await;
    let f = connector_for(&server, |c| {
        c.pool_size = 1;
        c.acquire_timeout_ms = 200;
    });
    f.connector.ping().await.unwrap();
    server.set_delay(Duration::from_millis(1000));
    let (slow, waiting) = tokio::join!(f.connector.query("SELECT 1 AS x", &[]), async {
        // Let the first statement take the only connection.
        tokio::time::sleep(Duration::from_millis(50)).await;
        f.connector.query("SELECT 2 AS x", &[]).await
    });
    assert_eq!(slow.unwrap().rows, vec![vec![Value::Int(1)]]);
    let err = waiting.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
}
