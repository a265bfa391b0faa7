//! The whole path on the embedded default: generated vendor databases -> profiles ->
//! identity index -> loaders and cache -> consent hook -> GraphQL.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use escr_connector::Record;
use escr_gateway::consent::access::{AccessContext, Decision, PersonFacts, Policy, Withheld};
use serde_json::{json, Value};

use crate::support::demo::{self, TruthRecord};

const RECORD_FIELDS: [(&str, &str); 14] = [
    ("addresses", "address"),
    ("relationships", "relationship"),
    ("referrals", "referral"),
    ("assessments", "assessment"),
    ("carePlans", "care_plan"),
    ("services", "service"),
    ("episodes", "episode"),
    ("visits", "visit"),
    ("caseNotes", "case_note"),
    ("documents", "document"),
    ("communications", "communication"),
    ("alerts", "alert"),
    ("consents", "consent"),
    ("allocations", "allocation"),
];

fn errors(response: &Value) -> Vec<Value> {
    response["errors"].as_array().cloned().unwrap_or_default()
}

#[test]
fn schema_graphql_is_the_exported_schema() {
    let exported = escr_gateway::api::graphql::sdl();
    let committed =
        std::fs::read_to_string(demo::repo().join("schema.graphql")).unwrap_or_default();
    if std::env::var_os("ESCR_BLESS").is_some() {
        std::fs::write(demo::repo().join("schema.graphql"), &exported).unwrap();
        return;
    }
    assert!(
        committed == exported,
        "schema.graphql drifted from the code: run `cargo run -- print-schema > schema.graphql`"
    );
    for needle in [
        "@key(fields: \"id\")",
        "@key(fields: \"nhsNumber\")",
        "extend schema @link",
    ] {
        assert!(exported.contains(needle), "federation: {needle} missing");
    }
}

/// With clean data, every true person's records are linked into exactly one gateway
/// person, and the per-kind counts equal the generator's.
#[tokio::test]
async fn linkage_and_counts_equal_the_ground_truth() {
    let demo = demo::clean();
    let gw = demo::gateway(demo).await;
    let fields: String = RECORD_FIELDS
        .iter()
        .map(|(f, _)| format!("{f} {{ id }} "))
        .collect();
    let query = format!(
        "query($s: String!, $l: String!) {{ personBySourceRecord(source: $s, localId: $l) {{ id nhsNumber sourceRecords {{ source localId }} {fields} }} }}"
    );
    let sample: Vec<_> = demo.truth.people.iter().step_by(7).take(60).collect();
    assert!(sample.len() >= 30);
    for person in sample {
        let first = &person.records[0];
        let r = gw
            .run(&query, json!({"s": first.source, "l": first.local_id}))
            .await;
        assert!(errors(&r).is_empty(), "{r}");
        let p = &r["data"]["personBySourceRecord"];
        let linked: BTreeSet<TruthRecord> = p["sourceRecords"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| TruthRecord {
                source: s["source"].as_str().unwrap().into(),
                local_id: s["localId"].as_str().unwrap().into(),
            })
            .collect();
        let truth: BTreeSet<TruthRecord> = person.records.iter().cloned().collect();
        assert_eq!(linked, truth, "linked records of {}", person.truth_id);
        assert_eq!(
            p["nhsNumber"].as_str(),
            person.nhs_number.as_deref(),
            "{}",
            person.truth_id
        );
        for (field, entity) in RECORD_FIELDS {
            let got = p[field].as_array().map(Vec::len).unwrap_or(0);
            assert_eq!(
                got,
                person.count(entity),
                "{} {entity} count",
                person.truth_id
            );
        }
    }
}

/// With the default faults, deterministic linkage never joins two different people.
#[tokio::test]
async fn dirty_data_never_merges_different_people() {
    let demo = demo::dirty();
    let gw = demo::gateway(demo).await;
    let truth_of: BTreeMap<TruthRecord, &str> = demo
        .truth
        .people
        .iter()
        .flat_map(|p| {
            p.records
                .iter()
                .map(move |r| (r.clone(), p.truth_id.as_str()))
        })
        .collect();
    let snapshot = gw.gateway.index.snapshot();
    let mut checked = 0;
    for refs in snapshot.people.values() {
        let truths: BTreeSet<&str> = refs
            .iter()
            .filter_map(|r| {
                truth_of.get(&TruthRecord {
                    source: r.source.clone(),
                    local_id: r.local_id.clone(),
                })
            })
            .copied()
            .collect();
        assert!(
            truths.len() <= 1,
            "one gateway person holds records of {truths:?}"
        );
        checked += 1;
    }
    assert!(checked > 300, "{checked} people indexed");
}

/// Every injected fault is either mapped or reported as a finding; nothing panics.
#[tokio::test]
async fn every_injected_fault_is_mapped_or_reported() {
    use escr_connector::{EntityKind, FindingKind};
    let demo = demo::dirty();
    let gw = demo::gateway(demo).await;
    assert!(!demo.truth.faults.is_empty(), "the dirty demo has faults");
    let fetcher = &gw.gateway.fetcher;
    // Map everything every source holds, for every person record in the index.
    let mut findings: BTreeSet<(String, String, FindingKind)> = BTreeSet::new();
    let mut records: BTreeMap<(String, String, String), Record> = BTreeMap::new();
    for source in &fetcher.sources {
        let people = source.list_people(None).await.expect("people list");
        let keys: Vec<String> = people.records.iter().map(|r| r.local_id.clone()).collect();
        for f in people.findings {
            findings.insert((source.name.clone(), f.local_id, f.kind));
        }
        for r in people.records {
            records.insert(
                (source.name.clone(), "person".into(), r.local_id.clone()),
                r,
            );
        }
        for entity in EntityKind::ALL.into_iter().filter(|e| e.is_person_scoped()) {
            let mapped = source
                .fetch(
                    entity,
                    escr_gateway::record::source::Lookup::ByPerson,
                    &keys,
                )
                .await
                .expect("every entity maps");
            for f in mapped.findings {
                findings.insert((source.name.clone(), f.local_id, f.kind));
            }
            for r in mapped.records {
                records.insert(
                    (source.name.clone(), entity.to_string(), r.local_id.clone()),
                    r,
                );
            }
        }
    }
    let reported = |f: &demo::TruthFault, kinds: &[FindingKind]| {
        kinds
            .iter()
            .any(|k| findings.contains(&(f.source.clone(), f.local_id.clone(), *k)))
    };
    let mapped = |f: &demo::TruthFault| {
        records.contains_key(&(f.source.clone(), f.entity.clone(), f.local_id.clone()))
    };
    let mut unexplained = Vec::new();
    for f in &demo.truth.faults {
        let ok = match f.kind.as_str() {
            "missing_nhs" => reported(f, &[FindingKind::MissingNhsNumber]) || mapped(f),
            "placeholder_nhs" => reported(
                f,
                &[
                    FindingKind::PlaceholderNhsNumber,
                    FindingKind::MissingNhsNumber,
                ],
            ),
            "invalid_nhs_check_digit" => reported(
                f,
                &[
                    FindingKind::InvalidNhsNumber,
                    FindingKind::MalformedNhsNumber,
                ],
            ),
            "unmapped_code" => reported(f, &[FindingKind::UnmappedCode]),
            "end_before_start" => reported(f, &[FindingKind::EndBeforeStart]),
            "estimated_birth_date" => reported(f, &[FindingKind::EstimatedBirthDate]) || mapped(f),
            "day_month_swap" => reported(f, &[FindingKind::UnparseableDate]) || mapped(f),
            "bad_postcode" => reported(f, &[FindingKind::InvalidPostcode]),
            // Kept as recorded, for the data-quality report to flag across records.
            _ => mapped(f),
        };
        if !ok {
            unexplained.push(format!(
                "{} {} {} {}",
                f.source, f.entity, f.local_id, f.kind
            ));
        }
    }
    assert!(
        unexplained.is_empty(),
        "faults neither mapped nor reported: {unexplained:#?}"
    );
}

/// Statements one request for the first `n` people (each with `selection`) runs on a
/// cold cache.
pub(crate) async fn cold_statements(gw: &demo::TestGateway, n: usize, selection: &str) -> u64 {
    gw.gateway.fetcher.clear_cache();
    request_statements(gw, n, selection).await
}

/// Statements one request for the first `n` people (each with `selection`) runs.
async fn request_statements(gw: &demo::TestGateway, n: usize, selection: &str) -> u64 {
    let ids: Vec<String> = gw.gateway.index.snapshot().people.keys().cloned().collect();
    assert!(ids.len() >= n, "{} people", ids.len());
    let body: String = ids[..n]
        .iter()
        .enumerate()
        .map(|(i, id)| format!("p{i}: person(id: \"{id}\") {{ {selection} }} "))
        .collect();
    let before = gw.statements();
    let r = gw.run(&format!("{{ {body} }}"), json!({})).await;
    assert!(errors(&r).is_empty(), "{}", r["errors"]);
    gw.statements() - before
}

/// Statements per request do not grow with the number of people asked for.
#[tokio::test]
async fn statements_do_not_grow_with_list_size() {
    let demo = demo::clean();
    let gw = demo::gateway(demo).await;
    let selection = "visits { id actual } caseNotes { id } services { id type }";
    let counts = [
        cold_statements(&gw, 50, selection).await,
        cold_statements(&gw, 500, selection).await,
    ];
    let bound = (3 * gw.gateway.fetcher.sources.len()) as u64;
    assert_eq!(counts[0], counts[1], "statements for 50 vs 500 people");
    assert!(
        counts[1] <= bound,
        "{} statements, bound {bound}",
        counts[1]
    );
    assert!(counts[1] > 0);

    // The same people again are served from the cache: no statements at all.
    let cached = request_statements(&gw, 50, selection).await;
    assert_eq!(cached, 0, "cached request ran statements");
    assert!(gw.gateway.fetcher.cache_stats().hits > 0);
}

/// One source's database unavailable: the others still answer, with a
/// SOURCE_UNAVAILABLE error naming the source and no SQL.
#[tokio::test]
async fn partial_results_when_a_source_is_down() {
    let demo = demo::clean();
    // Index with every source, then serve with ssis gone.
    let person = demo
        .truth
        .people
        .iter()
        .find(|p| {
            let sources: BTreeSet<&str> = p.records.iter().map(|r| r.source.as_str()).collect();
            sources.len() == 3 && p.count("case_note") > 0
        })
        .expect("someone is in all three systems");
    let missing = demo.dir.join("gone.db");
    let gw = demo::gateway_with(demo, &[("ssis", missing.to_str().unwrap())], None).await;
    let first = person.records.iter().find(|r| r.source != "ssis").unwrap();
    let r = gw
        .run(
            "query($s: String!, $l: String!) { personBySourceRecord(source: $s, localId: $l) { id caseNotes { provenance { source } } } }",
            json!({"s": first.source, "l": first.local_id}),
        )
        .await;
    let notes = r["data"]["personBySourceRecord"]["caseNotes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let expected: usize = ["casetrak", "opencare"]
        .iter()
        .map(|s| {
            person
                .counts
                .get(*s)
                .and_then(|c| c.get("case_note"))
                .copied()
                .unwrap_or(0)
        })
        .sum();
    // ssis was never indexed here (its database is gone), so the person has only the
    // other two sources' records.
    assert_eq!(notes.len(), expected, "{r}");
    assert!(notes.iter().all(|n| n["provenance"]["source"] != "ssis"));

    // Now a gateway indexed with ssis, whose database then disappears.
    let work = tempfile::tempdir().unwrap();
    let copy = work.path().join("ssis.db");
    std::fs::copy(demo.dir.join("ssis.db"), &copy).unwrap();
    let gw = demo::gateway_with(demo, &[("ssis", copy.to_str().unwrap())], None).await;
    // Overwrite in place: open connections see a broken database, as after a disk fault
    // (unlinking would leave them reading the old file).
    let size = std::fs::metadata(&copy).unwrap().len() as usize;
    std::fs::write(&copy, vec![0x5a; size]).unwrap();
    let ssis = person.records.iter().find(|r| r.source == "ssis").unwrap();
    let r = gw
        .run(
            "query($s: String!, $l: String!) { personBySourceRecord(source: $s, localId: $l) { id caseNotes { provenance { source } } } }",
            json!({"s": ssis.source, "l": ssis.local_id}),
        )
        .await;
    let notes = r["data"]["personBySourceRecord"]["caseNotes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(notes.len(), expected, "{r}");
    let errs = errors(&r);
    assert_eq!(errs.len(), 1, "{r}");
    assert_eq!(errs[0]["extensions"]["code"], "SOURCE_UNAVAILABLE");
    assert_eq!(errs[0]["extensions"]["source"], "ssis");
    let message = errs[0]["message"].as_str().unwrap();
    assert!(!message.to_uppercase().contains("SELECT"), "{message}");
    assert_eq!(
        errs[0]["path"],
        json!(["personBySourceRecord", "caseNotes"])
    );
}

/// A policy that hides one person and withholds records labelled "sealed", counting
/// every decision, so each path can be shown to pass the hook.
struct Probe {
    hidden_person: String,
    decisions: AtomicUsize,
}

impl Policy for Probe {
    fn may_see_person(&self, _: &AccessContext, person_id: &str) -> bool {
        person_id != self.hidden_person
    }
    fn decide(&self, _: &AccessContext, _: &PersonFacts, _: &str, record: &Record) -> Decision {
        self.decisions.fetch_add(1, Ordering::Relaxed);
        if record.labels.contains("sealed") {
            Decision::Hidden(Withheld {
                code: "SEALED",
                reason: "sealed".into(),
            })
        } else {
            Decision::Release
        }
    }
}

#[tokio::test]
async fn every_path_passes_the_consent_hook() {
    let demo = demo::dirty();
    let plain = demo::gateway(demo).await;
    // Find someone with a sealed case note and someone else to hide.
    let snapshot = plain.gateway.index.snapshot();
    let ids: Vec<String> = snapshot.people.keys().cloned().collect();
    let mut sealed_person = None;
    for id in &ids {
        let r = plain
            .run(
                "query($id: ID!) { person(id: $id) { caseNotes { security { labels } } } }",
                json!({"id": id}),
            )
            .await;
        let has_sealed = r["data"]["person"]["caseNotes"]
            .as_array()
            .is_some_and(|notes| {
                notes.iter().any(|n| {
                    n["security"]["labels"]
                        .as_array()
                        .unwrap()
                        .contains(&json!("sealed"))
                })
            });
        if has_sealed {
            sealed_person = Some(id.clone());
            break;
        }
    }
    let sealed_person = sealed_person.expect("the demo has a sealed case note");
    let hidden = ids.iter().find(|id| **id != sealed_person).unwrap().clone();
    let probe = Arc::new(Probe {
        hidden_person: hidden.clone(),
        decisions: AtomicUsize::new(0),
    });
    let gw = demo::gateway_with(demo, &[], Some(probe.clone())).await;

    // Lists and the timeline: no sealed record comes out.
    let r = gw
        .run(
            "query($id: ID!) { person(id: $id) { caseNotes { security { labels } } timeline(first: 500) { totalCount edges { node { record { ... on CaseNote { security { labels } } } } } } } }",
            json!({"id": sealed_person}),
        )
        .await;
    let text = r.to_string();
    assert!(!text.contains("\"sealed\""), "sealed data released: {text}");
    assert!(probe.decisions.load(Ordering::Relaxed) > 0);

    // The hidden person is not reachable by any root.
    let refs = snapshot.records(&hidden).to_vec();
    let nhs = plain
        .run(
            "query($id: ID!) { person(id: $id) { nhsNumber } }",
            json!({"id": hidden}),
        )
        .await["data"]["person"]["nhsNumber"]
        .as_str()
        .map(str::to_string);
    let r = gw
        .run(
            "query($id: ID!) { person(id: $id) { id } }",
            json!({"id": hidden}),
        )
        .await;
    assert_eq!(r["data"]["person"], Value::Null);
    let r = gw
        .run(
            "query($s: String!, $l: String!) { personBySourceRecord(source: $s, localId: $l) { id } }",
            json!({"s": refs[0].source, "l": refs[0].local_id}),
        )
        .await;
    assert_eq!(r["data"]["personBySourceRecord"], Value::Null);
    if let Some(nhs) = nhs {
        let r = gw
            .run(
                "query($n: String!) { personByNhsNumber(nhsNumber: $n) { id } }",
                json!({"n": nhs}),
            )
            .await;
        assert_eq!(r["data"]["personByNhsNumber"], Value::Null);
    }
    let r = gw
        .run(
            "query($r: [_Any!]!) { _entities(representations: $r) { ... on Person { id } } }",
            json!({"r": [{"__typename": "Person", "id": hidden}]}),
        )
        .await;
    assert_eq!(r["data"]["_entities"], json!([null]), "{r}");
    let name = plain
        .run(
            "query($id: ID!) { person(id: $id) { name { family } } }",
            json!({"id": hidden}),
        )
        .await["data"]["person"]["name"]["family"]
        .as_str()
        .unwrap_or("")
        .to_string();
    if !name.is_empty() {
        let r = gw
            .run("query($n: String!) { searchPeople(name: $n, first: 200) { edges { node { id } } } }", json!({"n": name}))
            .await;
        assert!(
            !r.to_string().contains(&hidden),
            "search shows the hidden person"
        );
    }
}

/// The fourth vendor exists only as a TOML profile and a database in test fixtures.
#[tokio::test]
async fn a_fourth_vendor_works_through_a_toml_file_alone() {
    let work = tempfile::tempdir().unwrap();
    let db = work.path().join("carelog.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(include_str!("../fixtures/carelog.sql"))
        .unwrap();
    drop(conn);
    let profile = demo::repo().join("tests/fixtures/vendors/carelog.toml");
    let config = format!(
        "[index]\npath = {:?}\nrefresh_secs = 0\n\n[[sources]]\nname = \"carelog\"\nprofile = {:?}\nsqlite = {{ path = {:?} }}\n",
        work.path().join("index.db"),
        profile,
        db
    );
    let path = work.path().join("escr.toml");
    std::fs::write(&path, config).unwrap();
    let loaded = escr_gateway::config::LoadedConfig::load(&path).unwrap();
    let gateway = escr_gateway::api::gateway::Gateway::from_config(loaded).unwrap();
    let report = gateway.refresh_index(false).await.unwrap();
    assert_eq!(report.people, 2);
    let gw = Arc::new(gateway);
    let schema = escr_gateway::api::graphql::build(Some(gw.clone()));
    let request = async_graphql::Request::new(
        r#"{ personByNhsNumber(nhsNumber: "943 476 5919") { name { family given } birthDate gender visits { actual seen provenance { source localId } } caseNotes { text security { labels } } } }"#,
    );
    let response =
        escr_gateway::api::server::execute(&gw, &schema, AccessContext::demo(), request).await;
    let r = serde_json::to_value(response).unwrap();
    assert_eq!(
        r["data"]["personByNhsNumber"],
        json!({
            "name": {"family": "OKAFOR", "given": "Ada"},
            "birthDate": "1941-06-02",
            "gender": "FEMALE",
            "visits": [
                {"actual": "2025-02-03T10:15:00", "seen": true, "provenance": {"source": "carelog", "localId": "V2"}},
                {"actual": "2025-01-06T09:00:00", "seen": false, "provenance": {"source": "carelog", "localId": "V1"}}
            ],
            "caseNotes": [{"text": "Daughter phoned about medication.", "security": {"labels": ["third_party"]}}]
        }),
        "{r}"
    );
}

#[test]
fn bad_config_names_file_line_and_reason() {
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("escr.toml");
    let text = "[cache]\nmax_mib = 10\nttl = 5\n\n[[sources]]\nname = \"x\"\nprofile = \"p.toml\"\nsqlite = { path = \"x.db\" }\n";
    std::fs::write(&path, text).unwrap();
    let err = escr_gateway::config::LoadedConfig::load(&path).unwrap_err();
    assert_eq!(err.line, 3, "{err}");
    assert!(err.to_string().contains("escr.toml:3:"), "{err}");
    assert!(err.reason.contains("ttl"), "{err}");

    let text = "[[sources]]\nname = \"x\"\nprofile = \"p.toml\"\n";
    std::fs::write(&path, text).unwrap();
    let err = escr_gateway::config::LoadedConfig::load(&path).unwrap_err();
    assert_eq!(err.line, 1, "{err}");
    assert!(err.reason.contains("exactly one connector"), "{err}");

    // Two connector sections in one source.
    let text = "[[sources]]\nname = \"x\"\nprofile = \"p.toml\"\nsqlite = { path = \"a.db\" }\nmysql = { host = \"h\", database = \"d\", user = \"u\" }\n";
    std::fs::write(&path, text).unwrap();
    let err = escr_gateway::config::LoadedConfig::load(&path).unwrap_err();
    assert!(err.reason.contains("exactly one connector"), "{err}");
    // A secret written into the config is an unknown field: secrets come from env or files.
    let text = "[[sources]]\nname = \"x\"\nprofile = \"p.toml\"\nmysql = { host = \"h\", database = \"d\", user = \"u\", password = \"hunter2\" }\n";
    std::fs::write(&path, text).unwrap();
    let err = escr_gateway::config::LoadedConfig::load(&path).unwrap_err();
    assert_eq!(err.line, 4, "{err}");
    assert!(err.reason.contains("unknown field `password`"), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    // An engine the binary was not built with: named with its line and the engines known.
    let text = "[[sources]]\nname = \"x\"\nprofile = \"p.toml\"\n\npostgres = { host = \"h\" }\n";
    std::fs::write(&path, text).unwrap();
    let err = escr_gateway::config::LoadedConfig::load(&path).unwrap_err();
    assert_eq!(err.line, 5, "{err}");
    assert!(err.reason.contains("unknown field `postgres`"), "{err}");
    assert!(
        err.reason.contains("`sqlite`, `mysql`, `mssql`, `odbc`"),
        "{err}"
    );

    // The shipped configs and profiles are valid, the real-engines example included.
    // (The embedded default has two councils, three sources each.)
    for (shipped, sources) in [
        ("config/escr.toml", 6),
        ("config/examples/real-engines.toml", 3),
    ] {
        let loaded = escr_gateway::config::LoadedConfig::load(&demo::repo().join(shipped));
        let loaded = loaded.unwrap_or_else(|e| panic!("{shipped}: {e}"));
        assert_eq!(loaded.gateway.sources.len(), sources, "{shipped}");
    }
    let example = escr_gateway::config::LoadedConfig::load(
        &demo::repo().join("config/examples/real-engines.toml"),
    )
    .unwrap();
    let engines: Vec<&str> = example
        .gateway
        .sources
        .iter()
        .map(|s| s.get_ref().engine().unwrap_or("none"))
        .collect();
    assert_eq!(engines, ["mssql", "mysql", "odbc"]);
}

/// `escr check-config <profile>` validates single profiles: the shipped ones pass, a
/// bad one fails naming its file, line and reason.
#[test]
fn check_config_validates_a_single_profile() {
    let escr = |args: &[&std::path::Path]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_escr"))
            .arg("check-config")
            .args(args)
            .output()
            .unwrap()
    };
    let repo = demo::repo();
    let shipped = [
        repo.join("config/vendors/casetrak.toml"),
        repo.join("config/vendors/opencare.toml"),
        repo.join("config/vendors/ssis.toml"),
        repo.join("tests/fixtures/vendors/meridian.toml"),
    ];
    let refs: Vec<&std::path::Path> = shipped.iter().map(|p| p.as_path()).collect();
    let out = escr(&refs);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches(": ok (vendor `").count(), 4, "{stdout}");
    let bad = repo.join("tests/fixtures/vendors/cases/bad-time-zone.toml");
    let out = escr(&[&bad]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:4: `Europe/Londres` is not an IANA time zone",
            bad.display()
        )),
        "{stderr}"
    );
}

/// Golden cases: `tests/golden/<name>.graphql` run on the clean demo must give
/// `tests/golden/<name>.json` exactly (ESCR_BLESS=1 rewrites them after review).
#[tokio::test]
async fn golden_cases() {
    let demo = demo::clean();
    let gw = demo::gateway(demo).await;
    let dir = demo::repo().join("tests/golden");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "graphql"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 4, "golden cases missing");
    let bless = std::env::var_os("ESCR_BLESS").is_some();
    for case in cases {
        let golden = demo::golden_case(&case);
        let got = gw
            .run_as(golden.caller, &golden.query, golden.variables)
            .await;
        let expected_path = case.with_extension("json");
        if bless {
            std::fs::write(
                &expected_path,
                serde_json::to_string_pretty(&got).unwrap() + "\n",
            )
            .unwrap();
            continue;
        }
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(&expected_path).unwrap_or_default())
                .unwrap_or_else(|_| panic!("{} missing or not JSON", expected_path.display()));
        assert_eq!(got, expected, "golden case {}", case.display());
    }
}

/// The HTTP surface: GraphiQL, POST /graphql, healthz and readyz.
#[tokio::test]
async fn http_endpoints() {
    let demo = demo::clean();
    let missing = demo.dir.join("absent.db");
    let gw = demo::gateway_with(demo, &[("opencare", missing.to_str().unwrap())], None).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = escr_gateway::api::server::router(gw.gateway.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::new();
    let base = format!("http://{addr}");
    assert_eq!(
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok"
    );
    let ready: Value = client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["ready"], true);
    let sources = ready["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 3);
    let opencare = sources.iter().find(|s| s["name"] == "opencare").unwrap();
    assert_eq!(opencare["up"], false);
    assert!(opencare["reason"].as_str().unwrap().contains("not found"));
    assert!(sources
        .iter()
        .filter(|s| s["name"] != "opencare")
        .all(|s| s["up"] == true));
    let page = client
        .get(format!("{base}/graphql"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("graphiql"), "GraphiQL page");
    let id = gw
        .gateway
        .index
        .snapshot()
        .people
        .keys()
        .next()
        .unwrap()
        .clone();
    let r: Value = client
        .post(format!("{base}/graphql"))
        .json(&json!({"query": "query($id: ID!) { person(id: $id) { id } }", "variables": {"id": id}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["data"]["person"]["id"], json!(id));
}

/// Every shipped vendor profile passes the conformance suite on the embedded connector.
#[tokio::test]
async fn shipped_profiles_pass_the_conformance_suite() {
    let demo = demo::dirty();
    let gw = demo::gateway(demo).await;
    let snapshot = gw.gateway.index.snapshot();
    for source in &gw.gateway.fetcher.sources {
        let failures =
            escr_connector::conformance::check_connector(source.connector.as_ref()).await;
        assert!(failures.is_empty(), "{}: {failures:#?}", source.name);
        let keys: Vec<String> = snapshot
            .people
            .values()
            .flatten()
            .filter(|r| r.source == source.name)
            .take(40)
            .map(|r| r.local_id.clone())
            .collect();
        assert!(keys.len() >= 20, "{}", source.name);
        let failures = escr_connector::conformance::check_profile(
            source.connector.as_ref(),
            &source.profile,
            &keys,
        )
        .await;
        assert!(failures.is_empty(), "{}: {failures:#?}", source.name);
    }
}

/// Every CLNT_REL row (read straight from the vendor database) appears on its client's
/// person with the mapped type, and `relatedPerson` is the person the index links the
/// related client to.
#[tokio::test]
async fn relationships_lead_to_the_related_people() {
    let demo = demo::clean();
    let gw = demo::gateway(demo).await;
    let conn = rusqlite::Connection::open(demo.dir.join("casetrak.db")).unwrap();
    let mut rows = conn
        .prepare("SELECT CLNT_ID, REL_CLNT_ID, REL_TYP, PR_FLG FROM CLNT_REL ORDER BY REL_ID")
        .unwrap();
    let rows: Vec<(i64, i64, String, String)> = rows
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(rows.len() > 100, "{} relationships generated", rows.len());
    let types = BTreeMap::from([
        ("MOT", "MOTHER"),
        ("FAT", "FATHER"),
        ("CAR", "CARER"),
        ("SIB", "SIBLING"),
    ]);
    let mut by_client: BTreeMap<i64, Vec<(i64, String, String)>> = BTreeMap::new();
    for (client, other, kind, pr) in rows {
        by_client.entry(client).or_default().push((other, kind, pr));
    }
    for (client, expected) in by_client.iter().step_by(7) {
        let r = gw
            .run(
                "query($l: String!) { personBySourceRecord(source: \"casetrak\", localId: $l) { relationships { type parentalResponsibility relatedLocalId relatedPerson { sourceRecords { source localId } } } } }",
                json!({"l": client.to_string()}),
            )
            .await;
        assert!(errors(&r).is_empty(), "{}", r["errors"]);
        let got = r["data"]["personBySourceRecord"]["relationships"]
            .as_array()
            .unwrap();
        let mut got: Vec<(String, String, bool)> = got
            .iter()
            .map(|rel| {
                let other = rel["relatedLocalId"].as_str().unwrap().to_string();
                let linked = rel["relatedPerson"]["sourceRecords"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s["source"] == "casetrak" && s["localId"] == other.as_str());
                assert!(linked, "relatedPerson of {client} is not CaseTrak {other}");
                (
                    other,
                    rel["type"].as_str().unwrap().to_string(),
                    rel["parentalResponsibility"].as_bool().unwrap(),
                )
            })
            .collect();
        let mut want: Vec<(String, String, bool)> = expected
            .iter()
            .map(|(other, kind, pr)| {
                (
                    other.to_string(),
                    types[kind.as_str()].to_string(),
                    pr == "Y",
                )
            })
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "relationships of CaseTrak client {client}");
    }
}

/// Following links (related people, their visits, workers and teams) batches per wave:
/// 50 and 500 people cost the same statements.
#[tokio::test]
async fn nested_links_do_not_grow_statements() {
    let demo = demo::clean();
    let gw = demo::gateway(demo).await;
    let selection = "relationships { relatedPerson { visits { id } } } allocations { worker { name team { name } } team { name } }";
    let counts = [
        cold_statements(&gw, 50, selection).await,
        cold_statements(&gw, 500, selection).await,
    ];
    assert_eq!(counts[0], counts[1], "statements for 50 vs 500 people");
    // relationships + allocations, then related people's visits (one per source holding
    // visits), workers and teams: one wave each.
    assert!(counts[1] <= 8, "{} statements", counts[1]);
}

/// Lists of records are answered by the plain path (`api/graphql/plain.rs`) when their
/// selection holds only plain fields, and the generic way otherwise: both ways give the
/// same answer for every record type, with aliases, fragments, `__typename` and a repeated
/// field, over the people with the most records. Selecting `provenance` twice sends a list
/// the generic way (the plain path leaves merging objects to it).
#[tokio::test]
async fn plain_lists_answer_as_the_generic_path() {
    use escr_gateway::api::graphql::plain::{lists_answered, PlainRecord};
    use escr_gateway::api::graphql::records::*;

    let demo = demo::clean();
    let gw = demo::gateway(demo).await;

    // Every field of every record type is plain or listed as needing the context.
    macro_rules! covered {
        ($($t:ty),*) => {{ let mut all = BTreeMap::new(); $(
            let mut names: BTreeSet<String> =
                <$t>::plain_fields().iter().map(|(n, _)| n.clone()).collect();
            names.extend(<$t as PlainRecord>::CONTEXTUAL.iter().map(|n| escr_gateway::api::graphql::plain::camel(n)));
            all.insert(<$t as PlainRecord>::TYPE.to_string(), (names, <$t>::plain_fields().iter().map(|(n, _)| n.clone()).collect::<BTreeSet<_>>()));
        )* all }};
    }
    let tables = covered!(
        Address,
        Relationship,
        Referral,
        Assessment,
        CarePlan,
        Service,
        Episode,
        Visit,
        CaseNote,
        Document,
        Communication,
        Alert,
        Consent,
        Allocation
    );
    let sdl = gw.schema.sdl();
    let mut selections = BTreeMap::new();
    for (type_name, (known, plain)) in &tables {
        let fields = object_fields(&sdl, type_name);
        assert_eq!(&fields, known, "{type_name}: plain + contextual fields");
        let leaves: Vec<&str> = plain
            .iter()
            .map(String::as_str)
            .filter(|f| !["provenance", "security"].contains(f))
            .collect();
        selections.insert(type_name.clone(), leaves.join(" "));
    }

    // 400 people: among them records of every kind.
    let snapshot = gw.gateway.index.snapshot();
    let ids: Vec<String> = snapshot.people.keys().take(400).cloned().collect();
    let fields_of = |split: bool| -> String {
        RECORD_FIELDS
            .iter()
            .map(|(field, entity)| {
                let type_name = tables
                    .keys()
                    .find(|t| t.to_lowercase() == entity.replace('_', ""))
                    .unwrap();
                let leaves = &selections[type_name];
                let provenance = if split {
                    "provenance { source } provenance { localId lastUpdated }"
                } else {
                    "provenance { source localId lastUpdated }"
                };
                match *field {
                    // A named fragment, an alias, a repeated field and __typename.
                    "visits" => format!(
                        "v: visits {{ ...V id kind: __typename {provenance} security {{ labels }} }}"
                    ),
                    // An inline fragment with and without a type condition.
                    "caseNotes" => format!(
                        "caseNotes {{ ... on CaseNote {{ {leaves} }} ... {{ {provenance} }} security {{ labels }} }}"
                    ),
                    _ => format!("{field} {{ {leaves} {provenance} security {{ labels }} }}"),
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    // In requests of 10 people (the complexity limit), the same answer both ways.
    let query = |people: &[String], split: bool| -> String {
        let people: String = people
            .iter()
            .enumerate()
            .map(|(i, id)| format!("p{i}: person(id: \"{id}\") {{ {} }} ", fields_of(split)))
            .collect();
        format!(
            "{{ {people} }} fragment V on Visit {{ {} }}",
            selections["Visit"]
        )
    };
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for people in ids.chunks(10) {
        let before = lists_answered();
        let plain = gw.run(&query(people, false), json!({})).await;
        let answered = lists_answered() - before;
        assert!(errors(&plain).is_empty(), "{}", plain["errors"]);
        assert!(
            answered >= (people.len() * RECORD_FIELDS.len()) as u64,
            "{answered} lists answered by the plain path"
        );
        let generic = gw.run(&query(people, true), json!({})).await;
        assert!(errors(&generic).is_empty(), "{}", generic["errors"]);
        assert_eq!(plain, generic);
        for (field, _) in RECORD_FIELDS {
            let key = if field == "visits" { "v" } else { field };
            *seen.entry(field).or_default() += plain["data"]
                .as_object()
                .unwrap()
                .values()
                .map(|p| p[key].as_array().unwrap().len())
                .sum::<usize>();
        }
    }
    // The comparison saw records of every kind.
    for (field, _) in RECORD_FIELDS {
        assert!(seen[field] > 0, "no {field} among {} people", ids.len());
    }
}

/// The field names of an object type in a schema's SDL.
fn object_fields(sdl: &str, type_name: &str) -> BTreeSet<String> {
    use async_graphql::parser::types::{TypeKind, TypeSystemDefinition};
    let document = async_graphql::parser::parse_schema(sdl).expect("the SDL parses");
    document
        .definitions
        .iter()
        .find_map(|d| match d {
            TypeSystemDefinition::Type(t) if t.node.name.node == type_name => match &t.node.kind {
                TypeKind::Object(o) => Some(
                    o.fields
                        .iter()
                        .map(|f| f.node.name.node.to_string())
                        .collect(),
                ),
                _ => None,
            },
            _ => None,
        })
        .unwrap_or_else(|| panic!("no object type {type_name} in the SDL"))
}
