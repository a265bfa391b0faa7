//! The gateway over a real engine: OpenCare loaded into the test MariaDB (by the same
//! loader as `escr generate-demo --target`) and read through the MySQL connector, beside
//! CaseTrak and SSIS/90 on the embedded default. Needs scripts/test-servers.sh; fails,
//! never skips, without it.

use serde_json::{json, Value};
use tokio::sync::OnceCell;

use crate::mysql::{required_env, MARIADB};
use crate::support::demo::{self, TestGateway};

/// OpenCare's clean demo tables, loaded into `escr_opencare` once per test binary.
static LOADED: OnceCell<()> = OnceCell::const_new();

fn target() -> mysql_async::Opts {
    let url = required_env("ESCR_TEST_MYSQL_URL");
    let opts = mysql_async::Opts::from_url(&url).expect("a mysql:// URL");
    mysql_async::OptsBuilder::from_opts(opts)
        .db_name(Some("escr_opencare"))
        .into()
}

async fn load_opencare() {
    LOADED
        .get_or_init(|| async {
            let db = demo::clean().dir.join("opencare.db");
            let rows = escr_gateway::demo::load::sqlite_to_mysql(&db, target())
                .await
                .expect("OpenCare loads into MariaDB");
            assert!(rows > 1000, "{rows} rows");
        })
        .await;
}

/// Every golden case answers the same through `real` as through `embedded`; how many.
async fn golden_cases_alike(real: &TestGateway, embedded: &TestGateway) -> usize {
    let mut compared = 0;
    for case in std::fs::read_dir(demo::repo().join("tests/golden")).unwrap() {
        let case = case.unwrap().path();
        if case.extension().is_none_or(|e| e != "graphql") {
            continue;
        }
        let golden = demo::golden_case(&case);
        let want = embedded
            .run_as(
                golden.caller.clone(),
                &golden.query,
                golden.variables.clone(),
            )
            .await;
        let got = real
            .run_as(golden.caller, &golden.query, golden.variables)
            .await;
        assert_eq!(got, want, "{}", case.display());
        compared += 1;
    }
    compared
}

/// The `[[sources]]` connector line for OpenCare on MariaDB; the password in a file, as
/// an operator would configure it. `edit` may spoil it.
fn mysql_section(dir: &std::path::Path, edit: impl FnOnce(&mut Section)) -> String {
    let opts = target();
    let mut s = Section {
        host: opts.ip_or_hostname().to_string(),
        port: opts.tcp_port(),
        database: "escr_opencare".into(),
        user: opts.user().unwrap_or_default().to_string(),
        password: opts.pass().unwrap_or_default().to_string(),
    };
    edit(&mut s);
    let pw = dir.join("opencare.pw");
    std::fs::write(&pw, &s.password).unwrap();
    format!(
        "mysql = {{ host = {:?}, port = {}, database = {:?}, user = {:?}, password_file = {:?}, query_timeout_ms = 3000, acquire_timeout_ms = 2000 }}",
        s.host, s.port, s.database, s.user, pw
    )
}

struct Section {
    host: String,
    port: u16,
    database: String,
    user: String,
    password: String,
}

async fn on_mariadb(dir: &std::path::Path, edit: impl FnOnce(&mut Section)) -> TestGateway {
    demo::gateway_on_engines(
        demo::clean(),
        dir,
        &[("opencare", mysql_section(dir, edit))],
    )
    .await
}

/// Every golden GraphQL case gives the same answer with OpenCare on MariaDB as on the
/// embedded default, and statements per request do not grow with list size.
#[tokio::test]
async fn opencare_on_mariadb_answers_like_the_embedded_default() {
    let _shared = MARIADB.read().await;
    load_opencare().await;
    let dir = tempfile::tempdir().unwrap();
    let real = on_mariadb(dir.path(), |_| {}).await;
    assert_eq!(
        real.gateway.fetcher.sources[1].connector.engine(),
        "mysql",
        "opencare is read from MariaDB"
    );
    let embedded = demo::gateway(demo::clean()).await;
    assert!(golden_cases_alike(&real, &embedded).await >= 5);
    // A record only OpenCare holds, field by field, through both.
    let q = "{ personBySourceRecord(source: \"opencare\", localId: \"7\") { id name { family given } birthDate visits { planned actual seen } caseNotes { date text security { labels } } communications { recipients sentAt } carePlans { goals start } } }";
    assert_eq!(
        real.run(q, json!({})).await,
        embedded.run(q, json!({})).await
    );

    let selection = "visits { id actual } caseNotes { id } services { id type }";
    let small = crate::gateway::cold_statements(&real, 50, selection).await;
    let large = crate::gateway::cold_statements(&real, 500, selection).await;
    assert_eq!(small, large, "statements for 50 vs 500 people");
}

/// Wrong password, unreachable server, unknown database: the gateway starts, /readyz
/// shows OpenCare down with a reason, the other sources serve, and the error clients see
/// names the source but no SQL text or secret.
#[tokio::test]
async fn a_misconfigured_source_is_down_and_the_others_serve() {
    let _shared = MARIADB.read().await;
    load_opencare().await;
    let secret = "not-the-password-9f3k";
    type Spoil = fn(&mut Section);
    let variants: [(&str, Spoil); 3] = [
        ("wrong password", |s| {
            s.password = "not-the-password-9f3k".into()
        }),
        ("unreachable server", |s| s.port = 1),
        ("unknown database", |s| {
            s.database = "escr_no_such_db".into()
        }),
    ];
    let person = demo::clean()
        .truth
        .people
        .iter()
        .find(|p| {
            p.records.iter().any(|r| r.source == "opencare")
                && p.records.iter().any(|r| r.source == "casetrak")
        })
        .unwrap();
    let casetrak = person
        .records
        .iter()
        .find(|r| r.source == "casetrak")
        .unwrap();
    for (label, spoil) in variants {
        // The index was built while OpenCare answered; then it is misconfigured.
        let dir = tempfile::tempdir().unwrap();
        drop(on_mariadb(dir.path(), |_| {}).await);
        let gw = on_mariadb(dir.path(), spoil).await;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = escr_gateway::api::server::router(gw.gateway.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let ready: Value = reqwest::get(format!("http://{addr}/readyz"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let status = |name: &str| {
            ready["sources"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == name)
                .cloned()
                .unwrap()
        };
        assert_eq!(status("opencare")["up"], false, "{label}: {ready}");
        assert!(status("opencare")["reason"].is_string(), "{label}: {ready}");
        assert_eq!(status("casetrak")["up"], true, "{label}: {ready}");
        assert!(!ready.to_string().contains(secret), "{label}: {ready}");

        let r = gw
            .run(
                "query($l: String!) { personBySourceRecord(source: \"casetrak\", localId: $l) { id referrals { provenance { source } } visits { provenance { source } } } }",
                json!({"l": casetrak.local_id}),
            )
            .await;
        let text = r.to_string();
        let errors = r["errors"].as_array().cloned().unwrap_or_default();
        assert!(
            errors
                .iter()
                .any(|e| e["extensions"]["code"] == "SOURCE_UNAVAILABLE"
                    && e["message"].as_str().unwrap().contains("opencare")),
            "{label}: {text}"
        );
        assert!(
            r["data"]["personBySourceRecord"]["id"].is_string(),
            "{label}: {text}"
        );
        for leak in [secret, "SELECT", "person_id IN", "escr_opencare"] {
            assert!(!text.contains(leak), "{label}: `{leak}` in {text}");
        }
    }
}

/// The CaseTrak source on the project's TDS test server (SQL Server's protocol), loaded
/// with the demo's CaseTrak data over TDS by the loader `generate-demo --target
/// casetrak=mssql://...` uses.
async fn casetrak_over_tds() -> crate::support::tds::TdsTestServer {
    let server =
        crate::support::tds::TdsTestServer::start(rusqlite::Connection::open_in_memory().unwrap())
            .await;
    server.require_login("escr_reader", "tds-secret-77");
    let (mut config, _) = escr_mssql::parse_url(&format!(
        "mssql://escr_reader@127.0.0.1:{}/CASETRAK?encryption=not_supported",
        server.port()
    ))
    .unwrap();
    config.pool_size = 1;
    let loader =
        escr_mssql::MssqlConnector::with_password(&config, "tds-secret-77".into()).unwrap();
    let source = demo::clean().dir.join("casetrak.db");
    let rows = escr_gateway::demo::load::sqlite_to_mssql(&source, &loader)
        .await
        .expect("CaseTrak loads over TDS");
    let counted = |db: &rusqlite::Connection| -> i64 {
        ["CLNT", "VST", "CSNT", "CLNT_REL"]
            .iter()
            .map(|t| {
                db.query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| {
                    r.get::<_, i64>(0)
                })
                .unwrap()
            })
            .sum()
    };
    let expected = counted(&rusqlite::Connection::open(&source).unwrap());
    let loaded = server.with_db(counted);
    assert_eq!(loaded, expected, "rows loaded over TDS");
    assert!(rows as i64 >= loaded);
    server
}

fn mssql_section(dir: &std::path::Path, port: u16) -> String {
    let pw = dir.join("casetrak.pw");
    std::fs::write(&pw, "tds-secret-77\n").unwrap();
    format!(
        "mssql = {{ host = \"127.0.0.1\", port = {port}, database = \"CASETRAK\", user = \"escr_reader\", password_file = {pw:?}, encryption = \"not_supported\", trust_server_certificate = false, query_timeout_ms = 1500, connect_timeout_ms = 1500, acquire_timeout_ms = 1500 }}"
    )
}

/// SSIS/90 through the SQLite3 ODBC driver, the way a council reaches it.
fn odbc_section() -> String {
    let driver = required_env("ESCR_TEST_SQLITE_ODBC_DRIVER");
    let file = demo::clean().dir.join("ssis.db");
    format!(
        "odbc = {{ connection_string = {:?}, fetch = \"row\" }}",
        format!("Driver={{{driver}}};Database={};", file.display())
    )
}

/// All three vendors on their real kinds of engine at once — CaseTrak over TDS,
/// OpenCare on MariaDB, SSIS/90 through ODBC — answer every golden case like the
/// embedded default. Then CaseTrak's server misbehaves: a statement past its time limit
/// and a server that goes away give SOURCE_UNAVAILABLE for CaseTrak while the others
/// answer, and once the server is back the gateway serves it again without a restart.
#[tokio::test]
async fn three_engines_answer_alike_and_recover_from_a_server_outage() {
    let _shared = MARIADB.read().await;
    load_opencare().await;
    let mut tds = casetrak_over_tds().await;
    let dir = tempfile::tempdir().unwrap();
    let sections = [
        ("casetrak", mssql_section(dir.path(), tds.port())),
        ("opencare", mysql_section(dir.path(), |_| {})),
        ("ssis", odbc_section()),
    ];
    let real = demo::gateway_on_engines(demo::clean(), dir.path(), &sections).await;
    let engines: Vec<&str> = real
        .gateway
        .fetcher
        .sources
        .iter()
        .map(|s| s.connector.engine())
        .collect();
    assert_eq!(engines, ["mssql", "mysql", "odbc"]);
    let embedded = demo::gateway(demo::clean()).await;
    golden_cases_alike(&real, &embedded).await;
    assert!(tds.requests() > 0, "CaseTrak was read over TDS");

    // Reports too: date ranges pushed into SQL Server's, MariaDB's and the ODBC
    // source's SQL give the embedded default's indicators and data set.
    let period = escr_gateway::reports::Period::parse("2025-26").unwrap();
    let none = std::collections::HashSet::new();
    let tallies = |g: &TestGateway| {
        let g = g.gateway.clone();
        let none = none.clone();
        async move {
            let reports = g.reports.as_deref().unwrap();
            escr_gateway::reports::run::tallies(&g.estate(), reports, "Northshire", period, &none)
                .await
                .unwrap()
        }
    };
    assert_eq!(tallies(&real).await.by_id, tallies(&embedded).await.by_id);
    let planner = escr_gateway::consent::access::AccessContext::for_role(
        "planner",
        "analyst",
        escr_gateway::consent::access::Purpose::Planning,
    );
    let rows = |g: &TestGateway| {
        let g = g.gateway.clone();
        let planner = planner.clone();
        async move {
            let (rows, _) = escr_gateway::reports::run::mds_page(
                &g.estate(),
                &planner,
                period,
                "Northshire",
                1000,
                None,
            )
            .await
            .unwrap();
            // Pseudonyms differ (each gateway has its own key): compare the rest.
            let mut rows: Vec<String> = rows
                .into_iter()
                .map(|mut r| {
                    r.person.clear();
                    r.event_reference.clear();
                    format!("{r:?}")
                })
                .collect();
            rows.sort();
            rows
        }
    };
    let real_rows = rows(&real).await;
    assert!(real_rows.len() > 100);
    assert_eq!(real_rows, rows(&embedded).await);

    // Someone in CaseTrak and elsewhere, asked for by their OpenCare or SSIS id.
    let person = demo::clean()
        .truth
        .people
        .iter()
        .find(|p| {
            p.records.iter().any(|r| r.source == "casetrak")
                && p.records.iter().any(|r| r.source != "casetrak")
                && p.count("visit") > 0
        })
        .unwrap();
    let other = person
        .records
        .iter()
        .find(|r| r.source != "casetrak")
        .unwrap();
    let query = "query($s: String!, $l: String!) { personBySourceRecord(source: $s, localId: $l) { visits { provenance { source } } referrals { provenance { source } } } }";
    let vars = json!({"s": other.source, "l": other.local_id});
    let sources_in = |r: &Value| -> std::collections::BTreeSet<String> {
        ["visits", "referrals"]
            .iter()
            .flat_map(|k| {
                r["data"]["personBySourceRecord"][k]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .map(|v| v["provenance"]["source"].as_str().unwrap().to_string())
            .collect()
    };
    let unavailable = |r: &Value| {
        r["errors"].as_array().is_some_and(|errors| {
            errors.iter().any(|e| {
                e["extensions"]["code"] == "SOURCE_UNAVAILABLE"
                    && e["message"].as_str().unwrap().contains("casetrak")
            })
        })
    };
    let healthy = real.run(query, vars.clone()).await;
    assert!(healthy["errors"].is_null(), "{healthy}");
    assert!(sources_in(&healthy).contains("casetrak"), "{healthy}");

    // A slow statement past query_timeout_ms is cancelled and reported.
    real.gateway.fetcher.clear_cache();
    tds.set_delay(std::time::Duration::from_millis(4000));
    let slow = real.run(query, vars.clone()).await;
    assert!(unavailable(&slow), "{slow}");
    assert!(!sources_in(&slow).contains("casetrak"), "{slow}");
    tds.set_delay(std::time::Duration::ZERO);

    // The server goes away: partial results from the others.
    tds.stop().await;
    real.gateway.fetcher.clear_cache();
    let down = real.run(query, vars.clone()).await;
    assert!(unavailable(&down), "{down}");
    assert!(!down.to_string().contains("tds-secret-77"), "{down}");

    // It comes back: served again, no gateway restart.
    tds.restart().await;
    real.gateway.fetcher.clear_cache();
    let mut back = Value::Null;
    for _ in 0..20 {
        back = real.run(query, vars.clone()).await;
        if back["errors"].is_null() {
            break;
        }
        real.gateway.fetcher.clear_cache();
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(back["errors"].is_null(), "{back}");
    assert_eq!(sources_in(&back), sources_in(&healthy), "{back}");
}

/// A profile whose SQL the engine refuses (a misspelt table): the error names the
/// source, the vendor profile and the entity, and carries no SQL; the rest still serves.
#[tokio::test]
async fn a_profile_whose_sql_fails_on_the_engine_is_named_with_its_entity() {
    let _shared = MARIADB.read().await;
    load_opencare().await;
    let dir = tempfile::tempdir().unwrap();
    let shipped =
        std::fs::read_to_string(demo::repo().join("config/vendors/opencare.toml")).unwrap();
    assert!(shipped.contains("FROM referrals WHERE person_id"));
    let broken = shipped.replace(
        "FROM referrals WHERE person_id",
        "FROM referals WHERE person_id",
    );
    let profile = dir.path().join("opencare-broken.toml");
    std::fs::write(&profile, broken).unwrap();
    let text = demo::config_text_with(
        demo::clean(),
        dir.path(),
        &[],
        &[("opencare", mysql_section(dir.path(), |_| {}))],
    )
    .replace(
        &format!("{:?}", demo::repo().join("config/vendors/opencare.toml")),
        &format!("{profile:?}"),
    );
    let path = dir.path().join("escr.toml");
    std::fs::write(&path, text).unwrap();
    let config = escr_gateway::config::LoadedConfig::load(&path).unwrap();
    let gateway = escr_gateway::api::gateway::Gateway::from_config(config).unwrap();
    gateway.refresh_index(false).await.unwrap();
    let gateway = std::sync::Arc::new(gateway);
    let schema = escr_gateway::api::graphql::build(Some(gateway.clone()));
    let person = demo::clean()
        .truth
        .people
        .iter()
        .find(|p| {
            p.counts
                .get("opencare")
                .is_some_and(|c| c.get("referral").is_some())
        })
        .unwrap();
    let local = &person
        .records
        .iter()
        .find(|r| r.source == "opencare")
        .unwrap()
        .local_id;
    let request = async_graphql::Request::new(format!(
        "{{ personBySourceRecord(source: \"opencare\", localId: \"{local}\") {{ id referrals {{ id }} visits {{ id }} }} }}"
    ));
    let caller = escr_gateway::consent::access::AccessContext::demo();
    let response = escr_gateway::api::server::execute(&gateway, &schema, caller, request).await;
    let r = serde_json::to_value(response).unwrap();
    let text = r.to_string();
    let error = r["errors"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["extensions"]["entity"] == "referral"))
        .unwrap_or_else(|| panic!("no error naming the entity: {text}"));
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("opencare"), "{message}");
    assert!(
        message.contains("profile") && message.contains("referral"),
        "{message}"
    );
    assert_eq!(error["extensions"]["code"], "SOURCE_UNAVAILABLE");
    assert!(
        !text.contains("referals") && !text.contains("SELECT"),
        "{text}"
    );
    assert!(
        r["data"]["personBySourceRecord"]["visits"].is_array(),
        "{text}"
    );
}
