//! Regional federation: council gateways as subgraphs of a stock router. Composition is
//! checked with both composers from npm (`tests/federation/`, pinned by its lockfile,
//! run with the machine's Node); `_entities` is checked per representation.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use escr_gateway::api::gateway::Gateway;
use escr_gateway::config::LoadedConfig;
use serde_json::{json, Value};

use crate::support::demo::{self, Demo};

fn federation_dir() -> PathBuf {
    demo::repo().join("tests/federation")
}

/// `npm ci` once per run when the pinned packages are not installed yet.
fn npm_packages() -> &'static Path {
    static DONE: OnceLock<PathBuf> = OnceLock::new();
    DONE.get_or_init(|| {
        let dir = federation_dir();
        let installed = dir.join("node_modules/.package-lock.json");
        let fresh = installed
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .zip(
                dir.join("package-lock.json")
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok(),
            )
            .is_some_and(|(installed, lock)| installed >= lock);
        if !fresh {
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&dir)
                .status()
                .expect("npm runs (Node 20 is on the machine)");
            assert!(status.success(), "npm ci in tests/federation failed");
        }
        dir
    })
}

/// A council's own gateway: its three vendor databases, nothing of another council.
pub struct Council {
    pub name: &'static str,
    pub demo: &'static Demo,
    pub gateway: Arc<Gateway>,
    pub url: String,
    _work: tempfile::TempDir,
}

/// Southborough's demo estate (its own people, from the same seed).
pub fn southborough_demo() -> &'static Demo {
    static DEMO: OnceLock<Demo> = OnceLock::new();
    DEMO.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("escr-it-{}-south", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        escr_gateway::demo::generate(
            &escr_gateway::demo::GenerateOptions {
                seed: demo::SEED,
                people: 300,
                faults: escr_gateway::demo::FaultRates::none(),
                council: "Southborough".into(),
                ..Default::default()
            },
            &dir,
        )
        .expect("Southborough's demo generates");
        let truth = serde_json::from_slice(&std::fs::read(dir.join("truth.json")).unwrap())
            .expect("truth parses");
        Demo { dir, truth }
    })
}

/// Serve `name`'s gateway over `estate` on a loopback port.
pub async fn council(name: &'static str, estate: &'static Demo, extra: &str) -> Council {
    let work = tempfile::tempdir().unwrap();
    let mut text = demo::config_text(estate, work.path(), &[]);
    // Each source belongs to this council, under a council-qualified source name.
    let prefix = name.to_lowercase();
    for v in ["casetrak", "opencare", "ssis"] {
        text = text.replace(
            &format!("name = \"{v}\"\n"),
            &format!("name = \"{prefix}-{v}\"\nauthority = \"{name}\"\n"),
        );
    }
    text.push_str(extra);
    if name != "Northshire" {
        let reports = work.path().join("reports.toml");
        let mut toml = std::fs::read_to_string(&reports).unwrap();
        toml.push_str(&format!(
            "\n[authorities.{name}]\npopulation_18_64 = 97000\npopulation_65_plus = 41000\n"
        ));
        std::fs::write(reports, toml).unwrap();
    }
    let path = work.path().join("escr.toml");
    std::fs::write(&path, text).unwrap();
    let gateway = Gateway::from_config(LoadedConfig::load(&path).unwrap()).unwrap();
    gateway.refresh_index(false).await.unwrap();
    let gateway = Arc::new(gateway);
    let url = demo::serve_http(gateway.clone()).await;
    Council {
        name,
        demo: estate,
        gateway,
        url,
        _work: work,
    }
}

pub async fn post(url: &str, body: Value, headers: &[(&str, &str)]) -> (u16, String, Value) {
    let mut request = reqwest::Client::new().post(url).json(&body);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.expect("the gateway answers");
    let status = response.status().as_u16();
    let media = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, media, body)
}

/// What a router asks a subgraph for first.
async fn service_sdl(council: &Council) -> String {
    let (status, _, body) = post(
        &format!("{}/subgraph", council.url),
        json!({"query": "{ _service { sdl } }"}),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["data"]["_service"]["sdl"]
        .as_str()
        .unwrap_or_else(|| panic!("no SDL: {body}"))
        .to_string()
}

/// Compose the subgraphs with both composers; their report and the supergraph SDL.
fn compose(subgraphs: &[(&str, &str)]) -> (Value, String) {
    let dir = npm_packages();
    let work = tempfile::tempdir().unwrap();
    let mut args = vec!["compose.mjs".to_string()];
    for (name, sdl) in subgraphs {
        let file = work.path().join(format!("{name}.graphql"));
        std::fs::write(&file, sdl).unwrap();
        args.push(format!("{name}={}", file.display()));
    }
    let supergraph = work.path().join("supergraph.graphql");
    args.push("--supergraph".into());
    args.push(supergraph.display().to_string());
    let out = Command::new("node")
        .args(&args)
        .current_dir(dir)
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "compose.mjs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("compose.mjs prints JSON");
    (
        report,
        std::fs::read_to_string(supergraph).unwrap_or_default(),
    )
}

/// Two councils' gateways compose under both composers with no error; the regional API
/// has none of a council's own operations, and `/graphql` (the council's whole API,
/// mutations and all) is not what a router is given.
#[tokio::test]
async fn two_councils_compose_in_both_composers() {
    let north = council("Northshire", demo::clean(), "").await;
    let south = council("Southborough", southborough_demo(), "").await;
    let (n, s) = (service_sdl(&north).await, service_sdl(&south).await);
    let (report, supergraph) = compose(&[("northshire", &n), ("southborough", &s)]);
    for composer in ["apollo", "guild"] {
        assert_eq!(
            report[composer]["errors"],
            json!([]),
            "{composer}: {report}"
        );
        assert_eq!(report[composer]["supergraph"], true, "{composer}");
    }
    for internal in [
        "auditTrail",
        "breakGlassReview",
        "linkageReviewQueue",
        "linkDecisions",
        "dataQualityReport",
        "registryConsents",
        "recordConsent",
        "withdrawConsent",
        "linkRecords",
        "unlinkRecords",
        "type Mutation",
    ] {
        assert!(
            !supergraph.contains(internal),
            "{internal} reached the supergraph"
        );
    }
    for regional in [
        "searchPeople",
        "personByNhsNumber",
        "type Person",
        "type Authority",
    ] {
        assert!(supergraph.contains(regional), "{regional} missing");
    }

    // The council's own API does not compose twice: its mutations are its own. (The
    // composers are real: this is the failure a router would give.)
    let full = |c: &Council| {
        let url = format!("{}/graphql", c.url);
        async move {
            let (_, _, body) = post(&url, json!({"query": "{ _service { sdl } }"}), &[]).await;
            body["data"]["_service"]["sdl"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let (nf, sf) = (full(&north).await, full(&south).await);
    let (report, _) = compose(&[("northshire", &nf), ("southborough", &sf)]);
    for composer in ["apollo", "guild"] {
        let codes: Vec<&str> = report[composer]["errors"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["code"].as_str())
            .collect();
        assert!(
            codes.contains(&"INVALID_FIELD_SHARING"),
            "{composer}: {report}"
        );
    }
}

/// Some people of a council's gateway: (id, NHS number) pairs, with and without one.
async fn people(council: &Council) -> Vec<(String, Option<String>)> {
    let (_, _, body) = post(
        &format!("{}/graphql", council.url),
        json!({"query": "{ searchPeople(name: \"a\", first: 200) { edges { node { id nhsNumber } } } }"}),
        &[],
    )
    .await;
    body["data"]["searchPeople"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|e| {
            (
                e["node"]["id"].as_str().unwrap().to_string(),
                e["node"]["nhsNumber"].as_str().map(str::to_string),
            )
        })
        .collect()
}

/// `_entities` per the federation spec: one answer per representation, in order; a
/// representation that cannot be resolved is null with an error at its own index, the
/// others are unaffected; a null key or an unknown id is null without an error; errors
/// inside an entity carry its index.
#[tokio::test]
async fn entities_answer_per_representation() {
    // With the default faults, some people have no NHS number.
    let north = council("Northshire", demo::dirty(), "").await;
    let known = people(&north).await;
    let (with_nhs, nhs) = known
        .iter()
        .find_map(|(id, n)| n.clone().map(|n| (id.clone(), n)))
        .expect("someone with an NHS number");
    let (without_nhs, _) = known
        .iter()
        .find(|(_, n)| n.is_none())
        .expect("someone without");
    let representations = json!([
        {"__typename": "Person", "id": without_nhs},
        {"__typename": "Person", "nhsNumber": null},
        {"__typename": "Nobody", "id": "x"},
        {"__typename": "Person", "id": "Pnot-a-person"},
        {"__typename": "Person", "nhsNumber": nhs},
        {"__typename": "Person", "id": without_nhs},
        {"__typename": "Person", "nhsNumber": 12},
    ]);
    let query = "query($r: [_Any!]!) { _entities(representations: $r) { ... on Person { id timeline(after: \"not-a-cursor\") { totalCount } } } }";
    let (status, _, body) = post(
        &format!("{}/subgraph", north.url),
        json!({"query": query, "variables": {"r": representations}}),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answers = body["data"]["_entities"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"));
    let ids: Vec<Value> = answers.iter().map(|a| a["id"].clone()).collect();
    assert_eq!(
        ids,
        [
            json!(without_nhs),
            Value::Null,
            Value::Null,
            Value::Null,
            json!(with_nhs),
            json!(without_nhs),
            Value::Null
        ],
        "{body}"
    );
    // A bad timeline cursor fails that field of each resolved entity, at its index.
    for i in [0, 4, 5] {
        assert_eq!(answers[i]["timeline"], Value::Null, "{body}");
    }
    let mut paths: Vec<(Value, String)> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["path"].clone(),
                e["extensions"]["code"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    paths.sort_by_key(|(p, _)| p.to_string());
    assert_eq!(
        paths,
        [
            (
                json!(["_entities", 0, "timeline"]),
                "BAD_USER_INPUT".to_string()
            ),
            (json!(["_entities", 2]), "BAD_USER_INPUT".to_string()),
            (
                json!(["_entities", 4, "timeline"]),
                "BAD_USER_INPUT".to_string()
            ),
            (
                json!(["_entities", 5, "timeline"]),
                "BAD_USER_INPUT".to_string()
            ),
            (json!(["_entities", 6]), "BAD_USER_INPUT".to_string()),
        ],
        "{body}"
    );
}
