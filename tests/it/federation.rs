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
    pub gateway: Arc<Gateway>,
    pub url: String,
    _work: tempfile::TempDir,
}

/// People of Northshire's demo (`demo::clean`) who moved to Southborough.
pub const MOVERS: usize = 40;

/// Southborough's demo estate (its own people, from the same seed); its first
/// [`MOVERS`] people moved there from Northshire.
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
                movers: Some(escr_gateway::demo::Movers {
                    from: "Northshire".into(),
                    people: MOVERS,
                }),
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

/// Serve `name`'s gateway over `estate` on a loopback port (no policy: the demo caller).
pub async fn council(name: &'static str, estate: &'static Demo, extra: &str) -> Council {
    council_with(name, estate, extra, None).await
}

/// As [`council`], secured by the shipped policy with the HS256 key in `key` (one key
/// for the region, standing in for its identity provider).
pub async fn council_with(
    name: &'static str,
    estate: &'static Demo,
    extra: &str,
    key: Option<&Path>,
) -> Council {
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
    let mut gateway = Gateway::from_config(LoadedConfig::load(&path).unwrap()).unwrap();
    gateway.refresh_index(false).await.unwrap();
    if let Some(key) = key {
        let mut policy = crate::consent::test_policy_with(estate, work.path(), "");
        policy.auth.hs256_key_file = Some(key.to_path_buf());
        let access =
            escr_gateway::consent::AccessControl::from_config(policy, Some(gateway.index.clone()))
                .unwrap();
        gateway = gateway.with_access_control(access);
    }
    let gateway = Arc::new(gateway);
    let url = demo::serve_http(gateway.clone()).await;
    Council {
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
async fn service_sdl(council: &Council, headers: &[(&str, &str)]) -> String {
    let (status, _, body) = post(
        &format!("{}/subgraph", council.url),
        json!({"query": "{ _service { sdl } }"}),
        headers,
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
    let named: Vec<(&str, &str, String)> = subgraphs
        .iter()
        .map(|(n, sdl)| (*n, *sdl, format!("http://{n}.invalid/subgraph")))
        .collect();
    compose_at(&named)
}

/// As [`compose`], each subgraph served at its URL.
fn compose_at(subgraphs: &[(&str, &str, String)]) -> (Value, String) {
    let dir = npm_packages();
    let work = tempfile::tempdir().unwrap();
    let mut args = vec!["compose.mjs".to_string()];
    for (name, sdl, url) in subgraphs {
        let file = work.path().join(format!("{name}.graphql"));
        std::fs::write(&file, sdl).unwrap();
        args.push(format!("{name}={}={url}", file.display()));
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
    let (n, s) = (
        service_sdl(&north, &[]).await,
        service_sdl(&south, &[]).await,
    );
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
        // Each council's own entry, owned by its subgraph alone.
        "northshire: Council @join__field(graph: NORTHSHIRE)",
        "southborough: Council @join__field(graph: SOUTHBOROUGH)",
        "type Council",
    ] {
        assert!(supergraph.contains(regional), "{regional} missing");
    }

    // Two gateways of one council name would both own its field: no supergraph.
    let (report, _) = compose(&[("northshire", &n), ("northshire-again", &n)]);
    for composer in ["apollo", "guild"] {
        assert!(
            report[composer]["errors"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["code"] == "INVALID_FIELD_SHARING"
                    && e["message"]
                        .as_str()
                        .unwrap_or("")
                        .contains("Query.northshire")),
            "{composer}: {report}"
        );
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

/// A token of the region's shared key.
fn token(council: &Council, role: &str, user: &str, worker: Option<&str>) -> String {
    token_in_team(council, role, user, worker, worker)
}

/// As [`token`], for a worker of a team.
fn token_in_team(
    council: &Council,
    role: &str,
    user: &str,
    worker: Option<&str>,
    team: Option<&str>,
) -> String {
    let now = chrono::Utc::now().timestamp();
    council
        .gateway
        .access
        .as_ref()
        .expect("secured")
        .auth
        .mint_hs256(&escr_gateway::consent::auth::Claims {
            sub: user.into(),
            role: role.into(),
            org: Some("region".into()),
            worker: worker.map(str::to_string),
            team: team.map(str::to_string),
            iat: now,
            exp: now + 600,
            ..Default::default()
        })
        .unwrap()
}

/// Hive Gateway on a loopback port over a supergraph; stopped (by its id) when dropped.
struct Router {
    child: std::process::Child,
    url: String,
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn hive_gateway(supergraph: &str) -> (Router, tempfile::TempDir) {
    let dir = npm_packages();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("supergraph.graphql");
    std::fs::write(&file, supergraph).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::fs::File::create(work.path().join("router.log")).unwrap();
    let child = Command::new("node")
        .arg("node_modules/@graphql-hive/gateway/dist/bin.js")
        .args(["supergraph", &file.display().to_string()])
        .args(["--config-path", "gateway.config.mjs"])
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .current_dir(dir)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("Hive Gateway starts");
    let router = Router {
        child,
        url: format!("http://127.0.0.1:{port}/graphql"),
    };
    // Ready once it answers; its start takes a few seconds (at most a minute here).
    for _ in 0..600 {
        if let Ok(r) = reqwest::Client::new()
            .post(&router.url)
            .json(&json!({"query": "{ __typename }"}))
            .send()
            .await
        {
            if r.status().is_success() {
                return (router, work);
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!(
        "Hive Gateway did not answer: {}",
        std::fs::read_to_string(work.path().join("router.log")).unwrap_or_default()
    );
}

/// Two secured council gateways under Hive Gateway (a stock router): the caller's
/// token, purpose and break-glass reason reach the council that answers, which decides
/// consent and audits the end user; withheld data survives the router as data; a caller
/// without a token gets nothing; and the router sends a root field to one council
/// whatever the id (a router plans by type and field, never by key value): the other
/// council's person is null, never someone else.
#[tokio::test]
async fn hive_gateway_over_two_councils() {
    let region = tempfile::tempdir().unwrap();
    let key = region.path().join("region-jwt.key");
    let north = council_with("Northshire", demo::clean(), "", Some(&key)).await;
    let south = council_with("Southborough", southborough_demo(), "", Some(&key)).await;
    let lead = token(&north, "safeguarding_lead", "lead@region", None);
    let lead_headers = [
        ("authorization", format!("Bearer {lead}")),
        ("x-purpose-of-use", "safeguarding".to_string()),
    ];
    let as_lead: Vec<(&str, &str)> = lead_headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let subgraphs = [
        (
            "northshire",
            service_sdl(&north, &as_lead).await,
            format!("{}/subgraph", north.url),
        ),
        (
            "southborough",
            service_sdl(&south, &as_lead).await,
            format!("{}/subgraph", south.url),
        ),
    ];
    let named: Vec<(&str, &str, String)> = subgraphs
        .iter()
        .map(|(n, s, u)| (*n, s.as_str(), u.clone()))
        .collect();
    let (report, supergraph) = compose_at(&named);
    assert_eq!(report["apollo"]["errors"], json!([]), "{report}");
    let (router, _work) = hive_gateway(&supergraph).await;

    // One person of each council, as each council's own gateway gives them.
    let direct = |c: &Council| {
        let url = format!("{}/graphql", c.url);
        let headers = as_lead.clone();
        async move {
            let (_, _, body) = post(
                &url,
                json!({"query": "{ searchPeople(name: \"a\", first: 50) { edges { node { id name { family } services { id } } } } }"}),
                &headers,
            )
            .await;
            // Someone with services, so that a refusal has something to withhold.
            let mut node = body["data"]["searchPeople"]["edges"]
                .as_array()
                .unwrap_or_else(|| panic!("{body}"))
                .iter()
                .map(|e| e["node"].clone())
                .find(|p| p["services"].as_array().is_some_and(|s| !s.is_empty()))
                .expect("someone with services");
            node.as_object_mut().unwrap().remove("services");
            node
        }
    };
    let (n, s) = (direct(&north).await, direct(&south).await);
    assert!(n["id"].is_string() && s["id"].is_string(), "{n} {s}");
    assert_ne!(n["id"], s["id"], "ids are the council's own");

    let both = "query($a: ID!, $b: ID!) { a: person(id: $a) { id name { family } } b: person(id: $b) { id name { family } } }";
    let vars = json!({"a": n["id"], "b": s["id"]});
    // No token: the council refuses, nothing personal passes the router.
    let (_, _, r) = post(&router.url, json!({"query": both, "variables": vars}), &[]).await;
    assert!(r["data"]["a"].is_null() && r["data"]["b"].is_null(), "{r}");
    assert!(r["errors"].as_array().is_some_and(|e| !e.is_empty()), "{r}");
    assert!(
        !r.to_string()
            .contains(n["name"]["family"].as_str().unwrap()),
        "{r}"
    );

    let (status, _, r) = post(
        &router.url,
        json!({"query": both, "variables": vars}),
        &[("x-request-id", "region-1"), as_lead[0], as_lead[1]],
    )
    .await;
    assert_eq!(status, 200, "{r}");
    let answered: Vec<&Value> = [&r["data"]["a"], &r["data"]["b"]]
        .into_iter()
        .filter(|p| !p.is_null())
        .collect();
    assert_eq!(
        answered.len(),
        1,
        "one council answers both root fields: {r}"
    );
    let (answering, person) = if r["data"]["a"].is_null() {
        (&south, &s)
    } else {
        (&north, &n)
    };
    assert_eq!(
        answered[0], person,
        "the council's own answer, unchanged: {r}"
    );
    // The council that answered audited the end user, with the router's request id.
    let audit = &answering.gateway.access.as_ref().unwrap().audit;
    let events = audit
        .for_person(person["id"].as_str().unwrap())
        .await
        .unwrap();
    assert!(
        events.iter().any(|e| e.user == "lead@region"
            && e.purpose == "safeguarding"
            && e.http_request_id.as_deref() == Some("region-1")),
        "{events:?}"
    );

    // What failed stays an error through the router: a malformed NHS number.
    let (_, _, r) = post(
        &router.url,
        json!({"query": "{ personByNhsNumber(nhsNumber: \"123\") { id } }"}),
        &[as_lead[0], as_lead[1]],
    )
    .await;
    assert!(r["data"]["personByNhsNumber"].is_null(), "{r}");
    assert_eq!(
        r["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{r}"
    );
    assert_eq!(
        r["errors"][0]["message"], "an NHS number has 10 digits",
        "{r}"
    );

    // Consent is the answering council's: a worker with no relationship sees no
    // services, and `withheld` says why through the router; with a break-glass reason
    // (propagated) the same worker sees them, and the council audits the break-glass.
    let worker = token(answering, "social_worker", "worker@region", Some("999"));
    let auth = format!("Bearer {worker}");
    let query = "query($id: ID!) { person(id: $id) { services { id } withheld { field code } } }";
    let id_vars = json!({"id": person["id"]});
    let (_, _, r) = post(
        &router.url,
        json!({"query": query, "variables": id_vars}),
        &[
            ("authorization", &auth),
            ("x-purpose-of-use", "direct_care"),
        ],
    )
    .await;
    assert_eq!(r["data"]["person"]["services"], json!([]), "{r}");
    assert!(
        r["data"]["person"]["withheld"]
            .as_array()
            .unwrap()
            .contains(&json!({"field": "services", "code": "NO_RELATIONSHIP"})),
        "{r}"
    );
    let reason = "Strategy meeting, child at risk";
    let (_, _, r) = post(
        &router.url,
        json!({"query": query, "variables": id_vars}),
        &[
            ("authorization", &auth),
            ("x-purpose-of-use", "direct_care"),
            ("x-break-glass-reason", reason),
        ],
    )
    .await;
    let direct_services = post(
        &format!("{}/graphql", answering.url),
        json!({"query": query, "variables": id_vars}),
        &[
            ("authorization", &auth),
            ("x-purpose-of-use", "direct_care"),
            ("x-break-glass-reason", reason),
        ],
    )
    .await
    .2;
    assert!(
        r["data"]["person"]["services"]
            .as_array()
            .is_some_and(|s| !s.is_empty()),
        "{r}"
    );
    assert_eq!(
        r["data"]["person"]["services"], direct_services["data"]["person"]["services"],
        "{r}"
    );
    assert!(
        audit
            .break_glass()
            .await
            .unwrap()
            .iter()
            .any(|e| e.user == "worker@region" && e.break_glass_reason.as_deref() == Some(reason)),
        "break-glass through the router is audited"
    );
}

/// A person's record as each council's part of the regional record shows it.
const MOVER_FIELDS: &str = "fragment P on Person { id nhsNumber name { family given } birthDate addresses { postcode } services { id } withheld { field code } }";

/// One router query for a person in every council (the council-named entries).
fn regional_person_query() -> String {
    format!(
        "query($n: String!) {{ northshire {{ name personByNhsNumber(nhsNumber: $n) {{ ...P }} }} southborough {{ name personByNhsNumber(nhsNumber: $n) {{ ...P }} }} }} {MOVER_FIELDS}"
    )
}

/// A council's own answer for a person by NHS number (its `/graphql`).
async fn direct_person(council: &Council, nhs: &str, headers: &[(&str, &str)]) -> Value {
    let (_, _, body) = post(
        &format!("{}/graphql", council.url),
        json!({
            "query": format!("query($n: String!) {{ personByNhsNumber(nhsNumber: $n) {{ ...P }} }} {MOVER_FIELDS}"),
            "variables": {"n": nhs},
        }),
        headers,
    )
    .await;
    body["data"]["personByNhsNumber"].clone()
}

/// The NHS numbers both councils' ground truths hold: the people who moved.
fn movers() -> Vec<String> {
    let south: std::collections::BTreeSet<&str> = southborough_demo()
        .truth
        .people
        .iter()
        .filter_map(|p| p.nhs_number.as_deref())
        .collect();
    demo::clean()
        .truth
        .people
        .iter()
        .filter_map(|p| p.nhs_number.clone())
        .filter(|n| south.contains(n.as_str()))
        .collect()
}

/// Compose two secured councils (Southborough at `south_url`, where a router finds
/// it) with both composers and start Hive Gateway over the supergraph.
async fn region_router(
    north: &Council,
    south: &Council,
    south_url: String,
    headers: &[(&str, &str)],
) -> (Router, tempfile::TempDir) {
    let (n, s) = (
        service_sdl(north, headers).await,
        service_sdl(south, headers).await,
    );
    let (report, supergraph) = compose_at(&[
        ("northshire", &n, format!("{}/subgraph", north.url)),
        ("southborough", &s, south_url),
    ]);
    for composer in ["apollo", "guild"] {
        assert_eq!(
            report[composer]["errors"],
            json!([]),
            "{composer}: {report}"
        );
    }
    hive_gateway(&supergraph).await
}

/// Someone who moved from Northshire to Southborough is one regional record: one query
/// through the router gives both councils' records, each from its own council, each
/// council deciding consent for its own (a worker allocated in Northshire sees the
/// services there, while Southborough withholds its own for want of a relationship)
/// and auditing the end user with the router's request id. The councils' indicators
/// come side by side the same way; with one council down the other's part still
/// answers, and the missing part is null with an error.
#[tokio::test]
async fn moved_person_is_one_regional_record() {
    let region = tempfile::tempdir().unwrap();
    let key = region.path().join("region-jwt.key");
    let north = council_with("Northshire", demo::clean(), "", Some(&key)).await;
    let south = council_with("Southborough", southborough_demo(), "", Some(&key)).await;
    let lead = format!(
        "Bearer {}",
        token(&north, "safeguarding_lead", "lead@region", None)
    );
    let as_lead = [
        ("authorization", lead.as_str()),
        ("x-purpose-of-use", "safeguarding"),
    ];
    let movers = movers();
    assert_eq!(
        movers.len(),
        MOVERS,
        "the movers are the only people shared"
    );

    // A mover allocated to a worker in Northshire, whose Southborough record that
    // worker has no relationship to: the councils' own answers decide the case.
    let profile = "query($n: String!) { personByNhsNumber(nhsNumber: $n) { services { id } allocations { workerId teamId end } } }";
    let mut chosen = None;
    for nhs in &movers {
        let (_, _, n) = post(
            &format!("{}/graphql", north.url),
            json!({"query": profile, "variables": {"n": nhs}}),
            &as_lead,
        )
        .await;
        let n = &n["data"]["personByNhsNumber"];
        let Some(allocation) = n["allocations"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["end"].is_null() && a["workerId"].is_string())
        else {
            continue;
        };
        let (worker, team) = (
            allocation["workerId"].as_str().unwrap().to_string(),
            allocation["teamId"].as_str().map(str::to_string),
        );
        let auth = format!(
            "Bearer {}",
            token_in_team(
                &north,
                "social_worker",
                "worker@region",
                Some(&worker),
                team.as_deref()
            )
        );
        let as_worker = [
            ("authorization", auth.as_str()),
            ("x-purpose-of-use", "direct_care"),
        ];
        let (here, there) = (
            direct_person(&north, nhs, &as_worker).await,
            direct_person(&south, nhs, &as_worker).await,
        );
        let released = here["services"].as_array().is_some_and(|s| !s.is_empty());
        let withheld_there = there["withheld"]
            .as_array()
            .is_some_and(|w| w.contains(&json!({"field": "services", "code": "NO_RELATIONSHIP"})));
        if released && withheld_there {
            chosen = Some((nhs.clone(), auth, here, there));
            break;
        }
    }
    let (nhs, auth, north_direct, south_direct) =
        chosen.expect("a mover allocated in Northshire, unrelated in Southborough");
    // Two councils' records of one person: the same NHS number, given names and birth
    // date, each council's own id and address.
    assert_ne!(north_direct["id"], south_direct["id"]);
    assert_eq!(north_direct["name"]["given"], south_direct["name"]["given"]);
    assert_eq!(north_direct["birthDate"], south_direct["birthDate"]);
    assert_ne!(north_direct["addresses"], south_direct["addresses"]);

    let (router, _work) =
        region_router(&north, &south, format!("{}/subgraph", south.url), &as_lead).await;
    let as_worker = [
        ("authorization", auth.as_str()),
        ("x-purpose-of-use", "direct_care"),
        ("x-request-id", "region-moved-1"),
    ];
    let (status, _, r) = post(
        &router.url,
        json!({"query": regional_person_query(), "variables": {"n": nhs}}),
        &as_worker,
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["data"]["northshire"]["name"], "Northshire", "{r}");
    assert_eq!(r["data"]["southborough"]["name"], "Southborough", "{r}");
    assert_eq!(
        r["data"]["northshire"]["personByNhsNumber"], north_direct,
        "Northshire's part is Northshire's own answer: {r}"
    );
    assert_eq!(
        r["data"]["southborough"]["personByNhsNumber"], south_direct,
        "Southborough's part is Southborough's own answer: {r}"
    );
    // Each council audited the end user, with the router's request id.
    for (council, person) in [(&north, &north_direct), (&south, &south_direct)] {
        let events = council
            .gateway
            .access
            .as_ref()
            .unwrap()
            .audit
            .for_person(person["id"].as_str().unwrap())
            .await
            .unwrap();
        assert!(
            events.iter().any(|e| e.user == "worker@region"
                && e.purpose == "direct_care"
                && e.http_request_id.as_deref() == Some("region-moved-1")),
            "{events:?}"
        );
    }

    // Someone who changed their family name on moving is still one regional record:
    // the NHS number joins the councils' parts, not the name.
    let mut renamed = 0;
    for nhs in &movers {
        let (_, _, r) = post(
            &router.url,
            json!({"query": regional_person_query(), "variables": {"n": nhs}}),
            &as_lead,
        )
        .await;
        let (n, s) = (
            &r["data"]["northshire"]["personByNhsNumber"],
            &r["data"]["southborough"]["personByNhsNumber"],
        );
        assert!(
            n.is_object() && s.is_object(),
            "both councils know {nhs}: {r}"
        );
        assert_eq!(n["nhsNumber"], s["nhsNumber"], "{r}");
        if n["name"]["family"] != s["name"]["family"] {
            renamed += 1;
        }
    }
    assert!(renamed > 0, "some movers changed their family name");

    // Indicators side by side, each council's from that council.
    let analyst = format!(
        "Bearer {}",
        token(&north, "analyst", "analyst@region", None)
    );
    let as_analyst = [
        ("authorization", analyst.as_str()),
        ("x-purpose-of-use", "planning"),
    ];
    let fields = "authority id numerator denominator value suppressed";
    let (_, _, r) = post(
        &router.url,
        json!({"query": format!("{{ northshire {{ authorities {{ name indicators(period: \"2025-26\") {{ {fields} }} }} }} southborough {{ authorities {{ name indicators(period: \"2025-26\") {{ {fields} }} }} }} }}")}),
        &as_analyst,
    )
    .await;
    for (council, field, name) in [
        (&north, "northshire", "Northshire"),
        (&south, "southborough", "Southborough"),
    ] {
        let (_, _, direct) = post(
            &format!("{}/graphql", council.url),
            json!({"query": format!("{{ indicators(period: \"2025-26\") {{ {fields} }} }}")}),
            &as_analyst,
        )
        .await;
        let own = &direct["data"]["indicators"];
        assert!(own.as_array().is_some_and(|l| !l.is_empty()), "{direct}");
        // (A JavaScript router writes 41.0 as 41: compare numbers as numbers.)
        assert_eq!(
            as_floats(&r["data"][field]["authorities"]),
            as_floats(&json!([{"name": name, "indicators": own}])),
            "{r}"
        );
    }
    drop(router);

    // Southborough down (nothing listens where the router sends its requests):
    // Northshire's part still answers, Southborough's is null with an error.
    let down = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/subgraph", listener.local_addr().unwrap())
    };
    let (router, _work) = region_router(&north, &south, down, &as_lead).await;
    let (status, _, r) = post(
        &router.url,
        json!({"query": regional_person_query(), "variables": {"n": nhs}}),
        &as_worker,
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        r["data"]["northshire"]["personByNhsNumber"], north_direct,
        "{r}"
    );
    assert_eq!(r["data"]["southborough"], Value::Null, "{r}");
    let errors = r["errors"].as_array().cloned().unwrap_or_default();
    let missing = errors
        .iter()
        .find(|e| e["path"] == json!(["southborough"]))
        .unwrap_or_else(|| panic!("an error for the missing part: {r}"));
    // Named, so that a portal can say whose part is missing; the failed subrequest
    // (the caller's variables: an NHS number) and the council's address are not in it.
    assert_eq!(missing["extensions"]["code"], "SUBGRAPH_UNAVAILABLE", "{r}");
    assert_eq!(missing["extensions"]["serviceName"], "southborough", "{r}");
    assert!(
        missing["message"]
            .as_str()
            .is_some_and(|m| m.contains("southborough")),
        "{r}"
    );
    let text = r["errors"].to_string();
    assert!(
        !text.contains(nhs.as_str()),
        "the NHS number asked for is in an error: {r}"
    );
    assert!(
        !text.contains("127.0.0.1"),
        "an address is in an error: {r}"
    );
    assert!(
        !errors.iter().any(|e| e["path"][0] == "northshire"),
        "none for the part that answered: {r}"
    );
}

/// Every number as a float.
fn as_floats(v: &Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(a) => Value::Array(a.iter().map(as_floats).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), as_floats(v))).collect())
        }
        other => other.clone(),
    }
}
