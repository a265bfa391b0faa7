//! A vendor shaped unlike the demo generator's: Meridian (`tests/fixtures/meridian.sql`,
//! Oracle habits: one EAV activity table, epoch seconds, DECIMAL keys, soft deletes,
//! sentinel dates, an inverted flag, case-sensitive comparisons), served by one profile
//! (`tests/fixtures/vendors/meridian.toml`) from SQLite and from the test MariaDB with
//! the same answers, each checked against what the fixture holds. Needs
//! scripts/test-servers.sh; fails, never skips, without it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use escr_gateway::api::gateway::Gateway;
use escr_gateway::consent::access::AccessContext;
use mysql_async::prelude::Queryable;
use serde_json::{json, Value};
use tokio::sync::OnceCell;

use crate::mysql::{required_env, MARIADB};
use crate::support::demo;

const TABLES: [&str; 3] = ["MRD_ACT_ATTR", "MRD_ACTIVITY", "MRD_PARTY"];

/// The fixture's statements (comments dropped), one per `;` at a line end.
fn statements() -> Vec<String> {
    let text = std::fs::read_to_string(demo::repo().join("tests/fixtures/meridian.sql")).unwrap();
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("--"))
        .map(|l| format!("{l}\n"))
        .collect();
    body.split(";\n")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn sqlite_copy(dir: &Path) -> PathBuf {
    let path = dir.join("meridian.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    for s in statements() {
        conn.execute_batch(&s).unwrap();
    }
    path
}

static LOADED: OnceCell<()> = OnceCell::const_new();

/// The fixture in the test MariaDB's `escr_test`, with Oracle's case-sensitive
/// comparisons (a binary collation); once per test binary.
async fn load_mariadb() {
    LOADED
        .get_or_init(|| async {
            let opts = mysql_async::Opts::from_url(&required_env("ESCR_TEST_MYSQL_URL")).unwrap();
            let mut conn = mysql_async::Conn::new(opts).await.unwrap();
            for t in TABLES {
                conn.query_drop(format!("DROP TABLE IF EXISTS {t}"))
                    .await
                    .unwrap();
            }
            for s in statements() {
                let s = if s.starts_with("CREATE TABLE") {
                    format!("{s} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
                } else {
                    s
                };
                conn.query_drop(s).await.unwrap();
            }
            conn.disconnect().await.unwrap();
        })
        .await;
}

fn mysql_section(dir: &Path) -> String {
    let opts = mysql_async::Opts::from_url(&required_env("ESCR_TEST_MYSQL_URL")).unwrap();
    let pw = dir.join("meridian.pw");
    std::fs::write(&pw, opts.pass().unwrap_or_default()).unwrap();
    format!(
        "mysql = {{ host = {:?}, port = {}, database = {:?}, user = {:?}, password_file = {:?} }}",
        opts.ip_or_hostname(),
        opts.tcp_port(),
        opts.db_name().unwrap_or_default(),
        opts.user().unwrap_or_default(),
        pw
    )
}

async fn gateway(dir: &Path, section: &str) -> Arc<Gateway> {
    let path = dir.join("escr.toml");
    let text = format!(
        "[index]\npath = {:?}\nrefresh_secs = 0\n\n[[sources]]\nname = \"meridian\"\nprofile = {:?}\n{section}\n",
        dir.join("index.db"),
        demo::repo().join("tests/fixtures/vendors/meridian.toml"),
    );
    std::fs::write(&path, text).unwrap();
    let loaded = escr_gateway::config::LoadedConfig::load(&path).unwrap();
    let gateway = Gateway::from_config(loaded).unwrap();
    let report = gateway.refresh_index(false).await.unwrap();
    assert_eq!(report.people, 2, "the soft-deleted party is not a person");
    Arc::new(gateway)
}

async fn run(gw: &Arc<Gateway>, query: &str) -> Value {
    let schema = escr_gateway::api::graphql::build(Some(gw.clone()));
    let request = async_graphql::Request::new(query);
    let response =
        escr_gateway::api::server::execute(gw, &schema, AccessContext::demo(), request).await;
    serde_json::to_value(response).unwrap()
}

const RUTH: &str = r#"{ personBySourceRecord(source: "meridian", localId: "1001") {
  name { family given middle } birthDate gender ethnicity
  identifiers { system value valid }
  assessments { type typeOther title started startedAt completedAt authorisedAt }
  visits { title actual end seen }
  services { type typeOther deliveryMechanism start end }
  referrals { receivedAt closedAt route outcome }
  communications { direction sender subject sentAt }
  caseNotes { date subject text security { labels } }
  timeline(first: 20) { totalCount edges { node { kind at summary provenance { localId } } } }
} }"#;

const OTHERS: &str = r#"{
  tom: personBySourceRecord(source: "meridian", localId: "1002") { birthDate ethnicity visits { title actual seen } }
  ann: personBySourceRecord(source: "meridian", localId: "1003") { id }
}"#;

fn ruth_truth() -> Value {
    json!({
        "name": {"family": "ADAMS", "given": "Ruth", "middle": "Mary Ellen"},
        "birthDate": "1950-03-04",
        "gender": "FEMALE",
        "ethnicity": "A",
        "identifiers": [
            {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9434765919", "valid": true},
            {"system": "urn:escr:la-reference", "value": "LA-004417", "valid": true},
            {"system": "urn:escr:upn", "value": "A123456789012", "valid": true},
            {"system": "urn:escr:ni-number", "value": "QQ123456C", "valid": true},
            {"system": "urn:escr:vendor-uuid", "value": "0b7e1b9c-4a5e-4c39-8f4e-0d1c4a0f9a11", "valid": true},
            {"system": "urn:escr:source:meridian", "value": "1001", "valid": true}
        ],
        // Newest first by instant: the same day, 14:00 before 09:30.
        "assessments": [
            {"type": "CHILD_AND_FAMILY", "typeOther": null, "title": "Child and family assessment",
             "started": "2025-01-15", "startedAt": "2025-01-15T14:00:00", "completedAt": "2025-01-20T16:45:00", "authorisedAt": null},
            {"type": "OTHER", "typeOther": "EHA", "title": "Early help assessment",
             "started": "2025-01-15", "startedAt": "2025-01-15T09:30:00", "completedAt": "2025-01-20T16:45:00", "authorisedAt": "2025-01-22T11:05:00"}
        ],
        // 09:30 UTC in July is 10:30 in London; the deleted attribute row is not read.
        "visits": [{"title": "Home visit with Ruth", "actual": "2025-07-15T10:30:00", "end": "2025-07-15T11:15:00", "seen": true}],
        "services": [
            {"type": "OTHER", "typeOther": "CHC", "deliveryMechanism": "COUNCIL_COMMISSIONED", "start": "2024-06-01", "end": "2025-03-31"},
            {"type": "OTHER", "typeOther": "MEALS", "deliveryMechanism": "DIRECT_PAYMENT", "start": "2024-04-01", "end": null}
        ],
        "referrals": [{"receivedAt": "2025-02-01T08:00:00", "closedAt": "2025-01-30T17:00:00", "route": "POLICE", "outcome": "NO_FURTHER_ACTION"}],
        "communications": [{"direction": "INCOMING", "sender": "head@school.example", "subject": "Attendance this term", "sentAt": "2025-03-03T12:00:00"}],
        "caseNotes": [{"date": "2025-03-04T15:20:00", "subject": "Phone call with school", "text": "School called about attendance.", "security": {"labels": ["team_only"]}}],
        "timeline": {"totalCount": 8, "edges": [
            {"node": {"kind": "VISIT", "at": "2025-07-15T10:30:00", "summary": "Visit: Home visit with Ruth", "provenance": {"localId": "5003"}}},
            {"node": {"kind": "CASE_NOTE", "at": "2025-03-04T15:20:00", "summary": "Case note: Phone call with school", "provenance": {"localId": "5008"}}},
            {"node": {"kind": "COMMUNICATION", "at": "2025-03-03T12:00:00", "summary": "Email: Attendance this term", "provenance": {"localId": "5007"}}},
            {"node": {"kind": "REFERRAL", "at": "2025-02-01T08:00:00", "summary": "Referral (police)", "provenance": {"localId": "5006"}}},
            {"node": {"kind": "ASSESSMENT", "at": "2025-01-15T14:00:00", "summary": "Assessment: Child and family assessment", "provenance": {"localId": "5002"}}},
            {"node": {"kind": "ASSESSMENT", "at": "2025-01-15T09:30:00", "summary": "Assessment: Early help assessment", "provenance": {"localId": "5001"}}},
            {"node": {"kind": "SERVICE", "at": "2024-06-01T00:00:00", "summary": "Service chc (council_commissioned)", "provenance": {"localId": "5005"}}},
            {"node": {"kind": "SERVICE", "at": "2024-04-01T00:00:00", "summary": "Service meals (direct_payment)", "provenance": {"localId": "5004"}}}
        ]}
    })
}

/// The data-quality figures the fixture implies, as (measure, count).
async fn quality(gw: &Gateway) -> Value {
    let report = escr_gateway::identity::quality::build(&gw.index, &gw.fetcher.sources).await;
    let q = &report.sources[0];
    json!({
        "available": q.available,
        "people": q.people,
        "placeholder_values": q.placeholder_values,
        "open_end_sentinels": q.open_end_sentinels,
        "end_before_start": q.end_before_start,
        "orphans": q.orphan_records.iter().map(|o| json!([o.entity, o.count])).collect::<Vec<_>>(),
        "unmapped": q.unmapped_codes.iter().map(|u| json!([u.entity, u.field, u.value, u.count])).collect::<Vec<_>>(),
    })
}

#[tokio::test]
async fn one_profile_serves_meridian_on_sqlite_and_mariadb_alike() {
    let _shared = MARIADB.read().await;
    load_mariadb().await;
    let dir = tempfile::tempdir().unwrap();
    let embedded_dir = dir.path().join("sqlite");
    let real_dir = dir.path().join("mariadb");
    std::fs::create_dir_all(&embedded_dir).unwrap();
    std::fs::create_dir_all(&real_dir).unwrap();
    let db = sqlite_copy(&embedded_dir);
    let embedded = gateway(&embedded_dir, &format!("sqlite = {{ path = {db:?} }}")).await;
    let real = gateway(&real_dir, &mysql_section(&real_dir)).await;
    assert_eq!(embedded.fetcher.sources[0].connector.engine(), "sqlite");
    assert_eq!(real.fetcher.sources[0].connector.engine(), "mysql");

    let ruth = run(&embedded, RUTH).await;
    assert!(ruth["errors"].is_null(), "{ruth}");
    assert_eq!(ruth["data"]["personBySourceRecord"], ruth_truth(), "{ruth}");
    assert_eq!(
        run(&real, RUTH).await,
        ruth,
        "MariaDB answers as SQLite does"
    );

    let others = run(&embedded, OTHERS).await;
    assert_eq!(
        others["data"],
        json!({
            // 1900-01-01 is the vendor's "not known"; ethnic code 99 is NOT_KNOWN.
            "tom": {"birthDate": null, "ethnicity": "NOT_KNOWN", "visits": [{"title": null, "actual": "2025-10-26T01:30:00", "seen": false}]},
            "ann": null
        }),
        "{others}"
    );
    assert_eq!(run(&real, OTHERS).await, others);

    let want = json!({
        "available": true,
        "people": 2,
        "placeholder_values": 1,
        "open_end_sentinels": 1,
        "end_before_start": 1,
        "orphans": [["visit", 1]],
        "unmapped": [["assessment", "type", "EHA", 1], ["service", "type", "CHC", 1]],
    });
    assert_eq!(quality(&embedded).await, want);
    assert_eq!(quality(&real).await, want);
}
