//! The example connector against the test PostgreSQL that `scripts/test-servers.sh`
//! starts (`ESCR_TEST_PG_URL`): the conformance suite, types, errors and time limits,
//! and the Meridian vendor profile served end to end through the council's binary
//! path (a registry with `postgres`), answering as the embedded SQLite default does.
//! Fails, never skips, without the server.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::NaiveDate;
use escr_connector::conformance::{check_connector, check_profile};
use escr_connector::{Connector, ErrorKind, Value, VendorProfile};
use escr_connector_postgres::{PostgresConfig, PostgresConnector};
use escr_gateway::api::gateway::Gateway;
use escr_gateway::config::LoadedConfig;
use escr_gateway::consent::access::AccessContext;
use escr_gateway::record::registry::ConnectorRegistry;
use serde_json::{json, Value as Json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// user, password, host, port, database of `ESCR_TEST_PG_URL` (postgres://u:p@h:port/db).
fn server() -> (String, String, String, u16, String) {
    let url = std::env::var("ESCR_TEST_PG_URL").unwrap_or_else(|_| {
        panic!(
            "ESCR_TEST_PG_URL is not set: start the test servers first (scripts/test-all.sh does)"
        )
    });
    let rest = url.strip_prefix("postgres://").expect("postgres:// URL");
    let (auth, rest) = rest.split_once('@').unwrap();
    let (user, password) = auth.split_once(':').unwrap();
    let (hostport, db) = rest.split_once('/').unwrap();
    let (host, port) = hostport.split_once(':').unwrap();
    (
        user.into(),
        password.into(),
        host.into(),
        port.parse().unwrap(),
        db.into(),
    )
}

fn config(dir: &Path) -> PostgresConfig {
    let (user, password, host, port, database) = server();
    let pw = dir.join("pg.pw");
    std::fs::write(&pw, password).unwrap();
    PostgresConfig {
        host,
        port,
        database,
        user,
        password_env: None,
        password_file: Some(pw),
        pool_size: 4,
        connect_timeout_ms: 3000,
        acquire_timeout_ms: 2000,
        query_timeout_ms: 3000,
    }
}

#[tokio::test]
async fn passes_the_connector_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let c = PostgresConnector::new(&config(dir.path())).unwrap();
    let failures = check_connector(&c).await;
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(c.engine(), "postgres");
}

#[tokio::test]
async fn types_come_back_as_the_guide_says_and_keys_bind_to_the_column_type() {
    let dir = tempfile::tempdir().unwrap();
    let c = PostgresConnector::new(&config(dir.path())).unwrap();
    c.query("DROP TABLE IF EXISTS pg_types", &[]).await.unwrap();
    c.query(
        "CREATE TABLE pg_types (id INT4 PRIMARY KEY, small INT2, big INT8, amount NUMERIC(10,2),
           ratio FLOAT8, name TEXT, code VARCHAR(4), flag CHAR(3), born DATE, seen TIMESTAMP,
           stamped TIMESTAMPTZ, ok BOOL, raw BYTEA, doc JSONB, ref UUID)",
        &[],
    )
    .await
    .unwrap();
    c.query(
        "INSERT INTO pg_types VALUES (1, 7, 9000000000, 12.50, 0.25, 'O''Brien', 'AB', 'Y',
           '1950-03-04', '2025-01-15 09:30:00', '2025-01-15 09:30:00+00', true, '\\x0102',
           '{\"a\": [1]}', '0b7e1b9c-4a5e-4c39-8f4e-0d1c4a0f9a11'),
           (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
        &[],
    )
    .await
    .unwrap();
    // Keys arrive as text; they bind as the INT4 the server infers. "x" cannot be one:
    // it binds NULL and matches nothing.
    let rows = c
        .query(
            "SELECT * FROM pg_types WHERE id IN ($1, $2, $3) ORDER BY id",
            &[Value::from("1"), Value::from("2"), Value::from("x")],
        )
        .await
        .unwrap();
    assert_eq!(rows.columns[0], "id");
    let t = NaiveDate::from_ymd_opt(2025, 1, 15)
        .unwrap()
        .and_hms_opt(9, 30, 0)
        .unwrap();
    assert_eq!(
        rows.rows[0],
        vec![
            Value::Int(1),
            Value::Int(7),
            Value::Int(9_000_000_000),
            Value::Float(12.5),
            Value::Float(0.25),
            Value::from("O'Brien"),
            Value::from("AB"),
            Value::from("Y  "),
            Value::Date(NaiveDate::from_ymd_opt(1950, 3, 4).unwrap()),
            Value::DateTime(t),
            Value::DateTime(t),
            Value::Bool(true),
            Value::Bytes(vec![1, 2]),
            Value::from("{\"a\":[1]}"),
            Value::from("0b7e1b9c-4a5e-4c39-8f4e-0d1c4a0f9a11"),
        ]
    );
    assert!(rows.rows[1][1..].iter().all(Value::is_null));
    assert_eq!(rows.rows.len(), 2);
    // Dates and numerics bind from text too.
    let rows = c
        .query(
            "SELECT id FROM pg_types WHERE born = $1 AND amount = $2",
            &[Value::from("1950-03-04"), Value::from("12.5")],
        )
        .await
        .unwrap();
    assert_eq!(rows.rows, vec![vec![Value::Int(1)]]);
    // A type the guide does not list is an error naming the column's type, not its value.
    let err = c
        .query("SELECT '(1,2)'::point AS p", &[])
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Query);
    assert!(err.message.contains("point"), "{err}");
}

#[tokio::test]
async fn failures_have_kinds_and_time_limits_hold() {
    let dir = tempfile::tempdir().unwrap();
    let good = config(dir.path());
    let secret = "not-the-password-4k2j";
    let wrong_pw = dir.path().join("wrong.pw");
    std::fs::write(&wrong_pw, secret).unwrap();
    let cases: [(&str, PostgresConfig, ErrorKind); 3] = [
        (
            "wrong password",
            PostgresConfig {
                password_file: Some(wrong_pw.clone()),
                ..good.clone()
            },
            ErrorKind::Auth,
        ),
        (
            "unreachable",
            PostgresConfig {
                port: 1,
                ..good.clone()
            },
            ErrorKind::Unavailable,
        ),
        (
            "unknown database",
            PostgresConfig {
                database: "escr_no_such_db".into(),
                ..good.clone()
            },
            ErrorKind::Unavailable,
        ),
    ];
    for (label, config, kind) in cases {
        let c = PostgresConnector::new(&config).unwrap();
        let err = c.ping().await.unwrap_err();
        assert_eq!(err.kind, kind, "{label}: {err}");
        assert!(!err.message.contains(secret), "{label}: {err}");
    }
    let c = PostgresConnector::new(&good).unwrap();
    let err = c
        .query("SELEKT secret_column FROM nowhere", &[])
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Query);
    assert!(!err.message.contains("secret_column"), "{err}");

    let slow = PostgresConnector::new(&PostgresConfig {
        query_timeout_ms: 200,
        pool_size: 1,
        ..good
    })
    .unwrap();
    let err = slow.query("SELECT pg_sleep(10)", &[]).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout);
    // The server was asked to cancel: the only connection serves the next statement.
    let started = std::time::Instant::now();
    slow.ping().await.unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

/// The Meridian fixture in PostgreSQL (unquoted names fold to lower case: the profile's
/// upper-case SQL runs unchanged; column names are matched in any case).
async fn load_meridian(c: &PostgresConnector) {
    for t in ["MRD_ACT_ATTR", "MRD_ACTIVITY", "MRD_PARTY"] {
        c.query(&format!("DROP TABLE IF EXISTS {t}"), &[])
            .await
            .unwrap();
    }
    let text = std::fs::read_to_string(repo().join("tests/fixtures/meridian.sql")).unwrap();
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("--"))
        .map(|l| format!("{l}\n"))
        .collect();
    for statement in body.split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
        c.query(statement, &[]).await.unwrap();
    }
}

async fn gateway(dir: &Path, section: &str) -> Arc<Gateway> {
    let path = dir.join("escr.toml");
    std::fs::write(
        &path,
        format!(
            "[index]\npath = {:?}\nrefresh_secs = 0\n\n[[sources]]\nname = \"meridian\"\nprofile = {:?}\n{section}\n",
            dir.join("index.db"),
            repo().join("tests/fixtures/vendors/meridian.toml"),
        ),
    )
    .unwrap();
    let registry = ConnectorRegistry::builtin().with::<PostgresConfig>("postgres");
    let loaded = LoadedConfig::load_with(&path, &registry).unwrap();
    let gateway = Gateway::from_config(loaded).unwrap();
    assert_eq!(gateway.refresh_index(false).await.unwrap().people, 2);
    Arc::new(gateway)
}

async fn run(gw: &Arc<Gateway>, query: &str) -> Json {
    let schema = escr_gateway::api::graphql::build(Some(gw.clone()));
    let request = async_graphql::Request::new(query)
        .data(gw.request_loaders())
        .data(AccessContext::demo());
    serde_json::to_value(schema.execute(request).await).unwrap()
}

const QUERY: &str = r#"{
  ruth: personBySourceRecord(source: "meridian", localId: "1001") {
    name { family given middle } birthDate ethnicity identifiers { system value valid }
    assessments { type typeOther title startedAt completedAt authorisedAt }
    visits { title actual end seen } services { type typeOther deliveryMechanism start end }
    referrals { receivedAt closedAt route outcome } communications { direction sender subject sentAt }
    caseNotes { date subject text security { labels } }
    timeline(first: 20) { totalCount edges { node { kind at summary provenance { localId } } } }
  }
  tom: personBySourceRecord(source: "meridian", localId: "1002") { birthDate ethnicity visits { actual seen } }
  ann: personBySourceRecord(source: "meridian", localId: "1003") { id }
}"#;

#[tokio::test]
async fn serves_the_meridian_profile_end_to_end_as_sqlite_does() {
    let dir = tempfile::tempdir().unwrap();
    let settings = config(dir.path());
    let c = PostgresConnector::new(&settings).unwrap();
    load_meridian(&c).await;
    let profile =
        VendorProfile::load(&repo().join("tests/fixtures/vendors/meridian.toml")).unwrap();
    let failures =
        check_profile(&c, &profile, &["1001".into(), "1002".into(), "1003".into()]).await;
    assert!(failures.is_empty(), "{failures:#?}");

    let pg_dir = dir.path().join("pg");
    let lite_dir = dir.path().join("lite");
    std::fs::create_dir_all(&pg_dir).unwrap();
    std::fs::create_dir_all(&lite_dir).unwrap();
    let section = format!(
        "postgres = {{ host = {:?}, port = {}, database = {:?}, user = {:?}, password_file = {:?} }}",
        settings.host,
        settings.port,
        settings.database,
        settings.user,
        settings.password_file.as_ref().unwrap()
    );
    let pg = gateway(&pg_dir, &section).await;
    assert_eq!(pg.fetcher.sources[0].connector.engine(), "postgres");
    let db = lite_dir.join("meridian.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let text = std::fs::read_to_string(repo().join("tests/fixtures/meridian.sql")).unwrap();
    conn.execute_batch(&text).unwrap();
    drop(conn);
    let lite = gateway(&lite_dir, &format!("sqlite = {{ path = {db:?} }}")).await;

    let answer = run(&pg, QUERY).await;
    assert!(answer["errors"].is_null(), "{answer}");
    assert_eq!(answer, run(&lite, QUERY).await);
    // Ground truth from the fixture, besides agreeing with SQLite.
    let ruth = &answer["data"]["ruth"];
    assert_eq!(
        ruth["name"],
        json!({"family": "ADAMS", "given": "Ruth", "middle": "Mary Ellen"})
    );
    assert_eq!(
        ruth["visits"][0]["actual"], "2025-07-15T10:30:00",
        "epoch seconds in London time"
    );
    assert_eq!(
        ruth["services"][1],
        json!({"type": "OTHER", "typeOther": "MEALS", "deliveryMechanism": "DIRECT_PAYMENT", "start": "2024-04-01", "end": null})
    );
    assert_eq!(ruth["timeline"]["totalCount"], 8);
    assert_eq!(answer["data"]["tom"]["birthDate"], Json::Null);
    assert_eq!(answer["data"]["ann"], Json::Null);
}

/// The council's binary: the gateway's CLI, which reads a `postgres` section.
#[test]
fn the_council_binary_knows_its_connector() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("escr.toml");
    // `escr serve` refuses to start without a policy: the demo's, with its opt-out list here.
    let policy = std::fs::read_to_string(repo().join("config/policy.toml"))
        .unwrap()
        .replace("../data/demo/national_opt_out.txt", "national_opt_out.txt")
        .replace("../data/jwt-hs256.key", "jwt-hs256.key");
    std::fs::write(dir.path().join("policy.toml"), policy).unwrap();
    std::fs::write(dir.path().join("national_opt_out.txt"), "").unwrap();
    std::fs::write(
        &path,
        format!(
            "policy = {:?}\n[[sources]]\nname = \"meridian\"\nprofile = {:?}\npostgres = {{ host = \"127.0.0.1\", database = \"d\", user = \"u\" }}\n",
            dir.path().join("policy.toml"),
            repo().join("tests/fixtures/vendors/meridian.toml"),
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_escr-postgres"))
            .args(args)
            .env_remove("ESCR_CONFIG")
            .output()
            .unwrap()
    };
    let out = run(&["--config", path.to_str().unwrap(), "check-config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 sources: meridian"));
    // A key the section does not have: the engine's own settings type names it and the line.
    std::fs::write(
        &path,
        format!(
            "[[sources]]\nname = \"meridian\"\nprofile = {:?}\npostgres = {{ host = \"h\", database = \"d\", user = \"u\", password = \"x\" }}\n",
            repo().join("tests/fixtures/vendors/meridian.toml"),
        ),
    )
    .unwrap();
    let out = run(&["--config", path.to_str().unwrap(), "check-config"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("escr.toml:4: source `meridian`, `postgres`: unknown field `password`"),
        "{err}"
    );
}
