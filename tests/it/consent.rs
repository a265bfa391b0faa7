//! Consent, access control and audit, end to end on the demo data: tokens -> policy ->
//! GraphQL -> audit log. The decision matrix lives in tests/consent/matrix.toml.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue};
use escr_gateway::api::gateway::Gateway;
use escr_gateway::consent::access::AccessContext;
use escr_gateway::consent::auth::{AuthError, Claims};
use escr_gateway::consent::{AccessControl, PolicyConfig};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::support::demo::{self, Demo, TestGateway};

#[path = "consent_hostile.rs"]
mod hostile;

/// The shipped policy plus `extra` TOML, with storage and key moved into `work`.
pub fn test_policy_with(demo: &Demo, work: &Path, extra: &str) -> PolicyConfig {
    let path = demo::repo().join("config/policy.toml");
    let text = std::fs::read_to_string(&path).unwrap() + extra;
    let mut c = PolicyConfig::parse(&path, &text).expect("shipped policy.toml is valid");
    c.storage.registry = work.join("consent.db");
    c.storage.audit = work.join("audit.db");
    c.auth.hs256_key_env = None;
    c.auth.hs256_key_file = Some(work.join("jwt.key"));
    c.auth.generate_key_if_missing = true;
    if let Some(o) = &mut c.national_opt_out {
        o.file = Some(demo.dir.join("national_opt_out.txt"));
    }
    c
}

pub struct Secured {
    pub gateway: Arc<Gateway>,
    pub schema: escr_gateway::api::graphql::EscrSchema,
    /// Keeps the registry, audit log and key alive for the test.
    _work: tempfile::TempDir,
    pub plain: TestGateway,
}

pub async fn secured(demo: &'static Demo) -> Secured {
    secured_with(demo, "").await
}

/// A secured gateway whose policy is the shipped one plus `extra` TOML.
pub async fn secured_with(demo: &'static Demo, extra: &str) -> Secured {
    secured_config(demo, extra, |text, _| text).await
}

/// A secured gateway whose gateway config `edit` may change (it gets the text and the
/// work folder, which lives as long as the gateway).
pub async fn secured_config(
    demo: &'static Demo,
    extra: &str,
    edit: impl FnOnce(String, &Path) -> String,
) -> Secured {
    let plain = demo::gateway(demo).await;
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("escr.toml");
    let text = edit(demo::config_text(demo, work.path(), &[]), work.path());
    std::fs::write(&path, text).unwrap();
    let config = escr_gateway::config::LoadedConfig::load(&path).unwrap();
    let gateway = Gateway::from_config(config).unwrap();
    gateway.refresh_index(false).await.unwrap();
    let access = AccessControl::from_config(
        test_policy_with(demo, work.path(), extra),
        Some(gateway.index.clone()),
    )
    .unwrap();
    let gateway = Arc::new(gateway.with_access_control(access));
    let schema = escr_gateway::api::graphql::build(Some(gateway.clone()));
    Secured {
        gateway,
        schema,
        _work: work,
        plain,
    }
}

#[derive(Clone, Debug, Default)]
pub struct Caller {
    pub user: String,
    pub role: String,
    pub org: String,
    pub purpose: String,
    pub worker: Option<String>,
    pub team: Option<String>,
    pub break_glass: Option<String>,
    pub person: Option<String>,
}

impl Caller {
    pub fn new(role: &str, purpose: &str) -> Caller {
        Caller {
            user: "matrix-user".into(),
            role: role.into(),
            org: "council".into(),
            purpose: purpose.into(),
            ..Caller::default()
        }
    }
}

impl Secured {
    pub fn access(&self) -> &AccessControl {
        self.gateway.access.as_deref().unwrap()
    }

    pub fn token(&self, c: &Caller, lifetime_secs: i64) -> String {
        let now = chrono::Utc::now().timestamp();
        self.access()
            .auth
            .mint_hs256(&Claims {
                sub: c.user.clone(),
                role: c.role.clone(),
                org: Some(c.org.clone()),
                team: c.team.clone(),
                worker: c.worker.clone(),
                person: c.person.clone(),
                iat: now,
                exp: now + lifetime_secs,
                ..Claims::default()
            })
            .unwrap()
    }

    pub fn headers(&self, c: &Caller) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {}", self.token(c, 600))).unwrap(),
        );
        h.insert(
            "x-purpose-of-use",
            HeaderValue::from_str(&c.purpose).unwrap(),
        );
        if let Some(bg) = &c.break_glass {
            h.insert("x-break-glass-reason", HeaderValue::from_str(bg).unwrap());
        }
        h
    }

    pub fn context(&self, c: &Caller) -> Result<AccessContext, AuthError> {
        escr_gateway::consent::auth::access_context_from_headers(
            &self.headers(c),
            &self.access().auth,
        )
    }

    pub async fn run(&self, c: &Caller, query: &str, variables: Value) -> Value {
        let ctx = self.context(c).expect("caller authenticates");
        let request = async_graphql::Request::new(query)
            .variables(async_graphql::Variables::from_json(variables));
        let response =
            escr_gateway::api::server::execute(&self.gateway, &self.schema, ctx, request).await;
        serde_json::to_value(&response).unwrap()
    }
}

pub fn errors_at(r: &Value, path: &[&str]) -> Vec<String> {
    r["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            let p: Vec<String> = e["path"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect();
            p == path
        })
        .filter_map(|e| e["extensions"]["code"].as_str().map(str::to_string))
        .collect()
}

// --------------------------------------------------------------------------------
// Choosing people from the demo data
// --------------------------------------------------------------------------------

const PROFILE_QUERY: &str = "query($id: ID!) { person(id: $id) { nhsNumber
  allocations { workerId teamId end }
  caseNotes { security { labels } }
  episodes { security { labels } }
  alerts { security { labels } }
  services { id }
  consents { scope decision withdrawn provenance { source } } } }";

#[derive(Default, Clone)]
pub struct Chosen {
    pub id: String,
    pub worker: Option<String>,
    pub team: Option<String>,
}

fn labels(list: &Value) -> Vec<BTreeSet<String>> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            n["security"]["labels"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| l.as_str().map(str::to_string))
                .collect()
        })
        .collect()
}

/// Every person the index knows, in id order.
pub fn person_ids(s: &Secured) -> Vec<String> {
    s.plain
        .gateway
        .index
        .snapshot()
        .people
        .keys()
        .cloned()
        .collect()
}

/// The NHS numbers on the demo's national opt-out list.
pub fn opt_out_list(demo: &Demo) -> BTreeSet<String> {
    std::fs::read_to_string(demo.dir.join("national_opt_out.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .collect()
}

/// One person per selector, chosen from the unfiltered data.
pub async fn choose(s: &Secured, demo: &Demo) -> BTreeMap<&'static str, Chosen> {
    let opt_out = opt_out_list(demo);
    assert!(!opt_out.is_empty(), "the generator writes an opt-out list");
    let ids = person_ids(s);
    let sw_visible = ["restricted", "safeguarding", "third_party", "sealed"];
    let mut out: BTreeMap<&'static str, Chosen> = BTreeMap::new();
    for id in ids {
        if out.len() == 8 {
            break;
        }
        let r = s.plain.run(PROFILE_QUERY, json!({"id": id})).await;
        let p = &r["data"]["person"];
        let allocation = p["allocations"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["end"].is_null());
        let chosen = Chosen {
            id: id.clone(),
            worker: allocation.and_then(|a| a["workerId"].as_str().map(str::to_string)),
            team: allocation.and_then(|a| a["teamId"].as_str().map(str::to_string)),
        };
        let notes = labels(&p["caseNotes"]);
        let all_labels: BTreeSet<String> = notes
            .iter()
            .chain(labels(&p["episodes"]).iter())
            .chain(labels(&p["alerts"]).iter())
            .flatten()
            .cloned()
            .collect();
        let consents_from: Vec<(String, bool, String, String)> = p["consents"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["scope"].as_str().unwrap_or("").to_string(),
                    c["withdrawn"].is_null(),
                    c["decision"].as_str().unwrap_or("").to_string(),
                    c["provenance"]["source"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        let consents: Vec<(String, bool)> = consents_from
            .iter()
            .map(|(scope, active, _, _)| (scope.clone(), *active))
            .collect();
        let has_services = p["services"].as_array().is_some_and(|a| !a.is_empty());
        let allocated = allocation.is_some();
        let sw_sees_all_labels = all_labels.iter().all(|l| sw_visible.contains(&l.as_str()));
        let mut put = |key: &'static str| {
            out.entry(key).or_insert_with(|| chosen.clone());
        };
        if allocated && has_services && consents.is_empty() {
            if notes.iter().any(|l| l.contains("sealed"))
                && notes.iter().any(BTreeSet::is_empty)
                && sw_sees_all_labels
            {
                put("sealed");
            }
            if all_labels.is_empty() && !notes.is_empty() {
                put("plain");
            }
        }
        if allocated && labels(&p["episodes"]).iter().any(|l| !l.is_empty()) {
            put("labelled_episode");
        }
        if allocated && has_services && consents == [("NO_SHARING".to_string(), true)] {
            put("nosh");
        }
        let share_all_permit = consents_from.len() == 1
            && consents_from.iter().all(|(scope, active, decision, _)| {
                scope == "SHARE_ALL" && *active && decision == "PERMIT"
            });
        if allocated && has_services && share_all_permit {
            put("share_all");
        }
        // SSIS/90 keeps consent as a flag on the client record (CONSFLG = N).
        if allocated
            && has_services
            && consents_from
                == [(
                    "SHARE_ALL".to_string(),
                    true,
                    "DENY".to_string(),
                    "ssis".to_string(),
                )]
        {
            put("ssis_refused");
        }
        if !allocated && has_services {
            put("unallocated");
        }
        if p["nhsNumber"].as_str().is_some_and(|n| opt_out.contains(n)) {
            put("opted_out");
        }
    }
    for key in [
        "sealed",
        "plain",
        "labelled_episode",
        "nosh",
        "share_all",
        "ssis_refused",
        "unallocated",
        "opted_out",
    ] {
        assert!(out.contains_key(key), "the demo has a `{key}` person");
    }
    out
}

// --------------------------------------------------------------------------------
// The matrix
// --------------------------------------------------------------------------------

#[derive(Deserialize)]
struct Matrix {
    case: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    person: String,
    role: String,
    #[serde(default = "council")]
    org: String,
    purpose: String,
    relationship: String,
    break_glass: Option<String>,
    registry: Option<String>,
    #[serde(default)]
    expect: BTreeMap<String, String>,
    timeline: Option<TimelineExpect>,
    #[serde(default = "yes")]
    person_visible: bool,
}

fn council() -> String {
    "council".into()
}
fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct TimelineExpect {
    kinds: toml::Value,
    without: Vec<String>,
}

const FIELDS: &str = "name { family given }
  addresses { id security { labels } }
  services { id security { labels } }
  caseNotes { id security { labels } }
  visits { id security { labels } }
  alerts { id security { labels } }
  episodes { id security { labels } }
  timeline(first: 500) { totalCount edges { node { kind record {
    ... on CaseNote { security { labels } } ... on Episode { security { labels } }
    ... on Alert { security { labels } } ... on Address { security { labels } }
    ... on Service { security { labels } } ... on Visit { security { labels } }
    ... on Referral { security { labels } } ... on Assessment { security { labels } }
    ... on CarePlan { security { labels } } ... on Relationship { security { labels } }
    ... on Document { security { labels } } ... on Communication { security { labels } }
    ... on Consent { security { labels } } ... on Allocation { security { labels } } } } } }";

fn ids_and_labels(v: &Value) -> Vec<(String, BTreeSet<String>)> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            (
                n["id"].as_str().unwrap_or("").to_string(),
                n["security"]["labels"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|l| l.as_str().map(str::to_string))
                    .collect(),
            )
        })
        .collect()
}

#[tokio::test]
async fn decision_matrix() {
    let demo = demo::clean();
    let s = secured(demo).await;
    let people = choose(&s, demo).await;
    let text = std::fs::read_to_string(demo::repo().join("tests/consent/matrix.toml")).unwrap();
    let matrix: Matrix = toml::from_str(&text).expect("matrix parses");
    let query = format!("query($id: ID!) {{ person(id: $id) {{ {FIELDS} }} }}");
    let mut failures = Vec::new();
    for case in &matrix.case {
        let who = &people[case.person.as_str()];
        let mut caller = Caller::new(&case.role, &case.purpose);
        caller.org = case.org.clone();
        caller.break_glass = case.break_glass.clone();
        match case.relationship.as_str() {
            "worker" => caller.worker = who.worker.clone(),
            "team" => caller.team = who.team.clone(),
            "none" => {
                caller.worker = Some("999".into());
                caller.team = Some("999".into());
            }
            other => panic!("{}: relationship `{other}`", case.name),
        }
        let mut consent_id = None;
        if let Some(json) = &case.registry {
            let provision = serde_json::from_str(json).expect("registry provision parses");
            consent_id = Some(
                s.access()
                    .registry
                    .record(&who.id, &provision, "matrix", "test", None, &[])
                    .await
                    .unwrap()
                    .id,
            );
        }
        let plain = s.plain.run(&query, json!({"id": who.id})).await;
        let got = s.run(&caller, &query, json!({"id": who.id})).await;
        if let Some(id) = consent_id {
            s.access()
                .registry
                .withdraw(id, "test", "end of case", None)
                .await
                .unwrap();
        }
        let mut fail = |why: String| failures.push(format!("{}: {why}\n  got: {got}", case.name));
        if !case.person_visible {
            if got["data"]["person"] != Value::Null {
                fail("person should be absent".into());
            }
            continue;
        }
        for (field, spec) in &case.expect {
            let path = ["person", field.as_str()];
            let errs = errors_at(&got, &path);
            let have = &got["data"]["person"][field];
            let want = &plain["data"]["person"][field];
            let (kind, rest) = spec.split_once(':').unwrap_or((spec, ""));
            match kind {
                "all" => {
                    if have != want || !errs.is_empty() {
                        fail(format!("{field}: expected all, errors {errs:?}"));
                    }
                }
                "none" => {
                    let empty = have.is_null() || have.as_array().is_some_and(|a| a.is_empty());
                    if !empty || !errs.contains(&rest.to_string()) {
                        fail(format!(
                            "{field}: expected none with {rest}, errors {errs:?}"
                        ));
                    }
                    if want.is_null() || want.as_array().is_some_and(|a| a.is_empty()) {
                        fail(format!("{field}: the chosen person has none to withhold"));
                    }
                }
                "without" => {
                    let (labels, code) = rest.split_once(':').unwrap_or((rest, ""));
                    let drop: BTreeSet<&str> = labels.split(',').collect();
                    let expected: Vec<_> = ids_and_labels(want)
                        .into_iter()
                        .filter(|(_, l)| !l.iter().any(|x| drop.contains(x.as_str())))
                        .collect();
                    if ids_and_labels(have) != expected {
                        fail(format!("{field}: expected without {labels}"));
                    }
                    if expected.len() == ids_and_labels(want).len() {
                        fail(format!(
                            "{field}: the chosen person has nothing labelled {labels}"
                        ));
                    }
                    let ok = if code.is_empty() {
                        errs.is_empty()
                    } else {
                        errs == [code.to_string()]
                    };
                    if !ok {
                        fail(format!("{field}: errors {errs:?}, expected [{code}]"));
                    }
                    // Sealed existence never shows, not even as an error.
                    if drop.contains("sealed") && got.to_string().contains("SEALED") {
                        fail("a SEALED code reveals the envelope".into());
                    }
                }
                other => panic!("{}: expectation `{other}`", case.name),
            }
        }
        if let Some(t) = &case.timeline {
            let kinds: Option<BTreeSet<String>> = match &t.kinds {
                toml::Value::String(s) if s == "all" => None,
                toml::Value::Array(a) => Some(
                    a.iter()
                        .filter_map(|k| k.as_str().map(str::to_string))
                        .collect(),
                ),
                other => panic!("timeline kinds {other}"),
            };
            let expected = plain["data"]["person"]["timeline"]["edges"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| {
                    kinds
                        .as_ref()
                        .is_none_or(|k| k.contains(e["node"]["kind"].as_str().unwrap()))
                })
                .filter(|e| {
                    !e["node"]["record"]["security"]["labels"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|l| t.without.iter().any(|w| l == w))
                })
                .count();
            let have = &got["data"]["person"]["timeline"];
            if have["totalCount"] != json!(expected)
                || have["edges"].as_array().map(Vec::len) != Some(expected)
            {
                fail(format!(
                    "timeline: totalCount {} edges {:?}, expected {expected}",
                    have["totalCount"],
                    have["edges"].as_array().map(Vec::len)
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        matrix.case.len(),
        failures.join("\n")
    );
}

// --------------------------------------------------------------------------------
// Leak paths: the same denial through every way of reaching the person
// --------------------------------------------------------------------------------

#[tokio::test]
async fn the_same_decision_on_every_path() {
    let demo = demo::clean();
    let s = secured(demo).await;
    let people = choose(&s, demo).await;
    let who = &people["plain"];
    let mut denied = Caller::new("social_worker", "direct_care");
    denied.worker = Some("999".into());
    denied.team = Some("999".into());
    let name = s
        .plain
        .run(
            "query($id: ID!) { person(id: $id) { name { family given } nhsNumber } }",
            json!({"id": who.id}),
        )
        .await;
    let family = name["data"]["person"]["name"]["family"]
        .as_str()
        .unwrap()
        .to_string();
    let nhs = name["data"]["person"]["nhsNumber"]
        .as_str()
        .map(str::to_string);
    let plain_services = s
        .plain
        .run(
            "query($id: ID!) { person(id: $id) { services { id unitCost } } }",
            json!({"id": who.id}),
        )
        .await;
    let service_ids: Vec<String> = plain_services["data"]["person"]["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert!(!service_ids.is_empty());
    let queries = [
        ("aliases", "query($id: ID!) { a: person(id: $id) { s: services { id } } b: person(id: $id) { services { id } } }"),
        ("fragments", "fragment F on Person { services { id unitCost } } query($id: ID!) { person(id: $id) { ...F ... on Person { services { id } } } }"),
        ("timeline", "query($id: ID!) { person(id: $id) { timeline(first: 500, filter: {kinds: [SERVICE]}) { totalCount edges { node { summary record { ... on Service { id } } } } } } }"),
        ("entities", "query($r: [_Any!]!) { _entities(representations: $r) { ... on Person { services { id } timeline(filter: {kinds: [SERVICE]}) { totalCount } } } }"),
        ("search", "query($n: String!) { searchPeople(name: $n, first: 200) { edges { node { id services { id } } } } }"),
    ];
    let mut vars =
        json!({"id": who.id, "r": [{"__typename": "Person", "id": who.id}], "n": family});
    if let Some(nhs) = &nhs {
        vars["nhs"] = json!(nhs);
    }
    for (label, q) in queries {
        let r = s.run(&denied, q, vars.clone()).await;
        let text = r.to_string();
        for id in &service_ids {
            assert!(
                !text.contains(id.as_str()),
                "{label}: service {id} leaked: {text}"
            );
        }
        assert!(
            text.contains("NO_RELATIONSHIP"),
            "{label}: no explanation: {text}"
        );
        if label == "timeline" {
            assert_eq!(r["data"]["person"]["timeline"]["totalCount"], 0, "{text}");
        }
    }
    if let Some(nhs) = nhs {
        let r = s
            .run(
                &denied,
                "query($n: String!) { personByNhsNumber(nhsNumber: $n) { services { id } } }",
                json!({"n": nhs}),
            )
            .await;
        assert_eq!(r["data"]["personByNhsNumber"]["services"], json!([]), "{r}");
        assert_eq!(
            errors_at(&r, &["personByNhsNumber", "services"]),
            ["NO_RELATIONSHIP"]
        );
    }
}

/// Withheld data as data: `Person.withheld` lists per field and code exactly what the
/// fields' errors say (a federation router passes data on where it drops errors), and
/// nothing where nothing is withheld.
#[tokio::test]
async fn withheld_is_data_and_says_what_the_errors_say() {
    let demo = demo::clean();
    let s = secured(demo).await;
    let people = choose(&s, demo).await;
    let who = &people["plain"];
    let mut denied = Caller::new("social_worker", "direct_care");
    denied.worker = Some("999".into());
    denied.team = Some("999".into());
    let lists = "addresses { id } relationships { id } referrals { id } assessments { id } \
        carePlans { id } services { id } episodes { id } visits { id } caseNotes { id } \
        documents { id } communications { id } alerts { id } consents { id } allocations { id }";
    let query = format!(
        "query($id: ID!) {{ person(id: $id) {{ {lists} withheld {{ field code reason }} }} }}"
    );
    let r = s.run(&denied, &query, json!({"id": who.id})).await;
    let from_errors: BTreeSet<(String, String)> = r["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["path"][0] == "person" && e["path"].as_array().map(Vec::len) == Some(2))
        .map(|e| {
            (
                e["path"][1].as_str().unwrap().to_string(),
                e["extensions"]["code"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let withheld = r["data"]["person"]["withheld"]
        .as_array()
        .expect("a list")
        .clone();
    let from_data: BTreeSet<(String, String)> = withheld
        .iter()
        .filter(|w| w["field"] != "demographics")
        .map(|w| {
            assert!(!w["reason"].as_str().unwrap().is_empty(), "{w}");
            (
                w["field"].as_str().unwrap().to_string(),
                w["code"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        from_data.contains(&("services".to_string(), "NO_RELATIONSHIP".to_string())),
        "{r}"
    );
    assert_eq!(from_data, from_errors, "{r}");

    let open = s.plain.run(&query, json!({"id": who.id})).await;
    assert_eq!(open["data"]["person"]["withheld"], json!([]), "{open}");
    assert!(open["errors"].is_null(), "{open}");
}

// --------------------------------------------------------------------------------
// Cache safety
// --------------------------------------------------------------------------------

#[tokio::test]
async fn a_warm_cache_never_serves_a_denied_caller() {
    let demo = demo::clean();
    let s = secured(demo).await;
    let people = choose(&s, demo).await;
    let who = &people["sealed"];
    let q = "query($id: ID!) { person(id: $id) { caseNotes { id text security { labels } } services { id } } }";
    let mut allowed = Caller::new("safeguarding_lead", "safeguarding");
    allowed.break_glass = Some("Strategy meeting, child at risk".into());
    let warm = s.run(&allowed, q, json!({"id": who.id})).await;
    let sealed_ids: Vec<String> = warm["data"]["person"]["caseNotes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["security"]["labels"].to_string().contains("sealed"))
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        !sealed_ids.is_empty(),
        "the allowed caller sees the sealed note"
    );
    // A direct-care caller's decisions read the person's allocations and consents,
    // which the break-glass caller's did not: read them (and no case notes or
    // services) before counting.
    let mut unrelated = Caller::new("social_worker", "direct_care");
    unrelated.worker = Some("999".into());
    s.run(
        &unrelated,
        "query($id: ID!) { person(id: $id) { id name { family } } }",
        json!({"id": who.id}),
    )
    .await;
    let statements = s.gateway.fetcher.statements_executed();
    let r = s.run(&unrelated, q, json!({"id": who.id})).await;
    assert_eq!(
        s.gateway.fetcher.statements_executed(),
        statements,
        "served from the cache"
    );
    assert_eq!(r["data"]["person"]["caseNotes"], json!([]));
    assert_eq!(r["data"]["person"]["services"], json!([]));
    let mut allocated = Caller::new("social_worker", "direct_care");
    allocated.worker = who.worker.clone();
    let r = s.run(&allocated, q, json!({"id": who.id})).await;
    let text = r.to_string();
    for id in &sealed_ids {
        assert!(
            !text.contains(id.as_str()),
            "sealed note from the cache: {text}"
        );
    }
    assert!(!r["data"]["person"]["caseNotes"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn consent_recorded_and_withdrawn_through_graphql_applies_at_once() {
    let demo = demo::clean();
    let s = secured(demo).await;
    let people = choose(&s, demo).await;
    let who = &people["plain"];
    let mut worker = Caller::new("social_worker", "direct_care");
    worker.worker = who.worker.clone();
    let q = "query($id: ID!) { person(id: $id) { caseNotes { id } } }";
    let before = s.run(&worker, q, json!({"id": who.id})).await;
    assert!(!before["data"]["person"]["caseNotes"]
        .as_array()
        .unwrap()
        .is_empty());

    let r = s
        .run(
            &worker,
            r#"mutation($id: ID!) { recordConsent(personId: $id, source: "paper form",
                 provision: { decision: DENY, dataClasses: ["notes"] }) { id recordedBy source withdrawnAt } }"#,
            json!({"id": who.id}),
        )
        .await;
    let consent = &r["data"]["recordConsent"];
    assert_eq!(consent["recordedBy"], "matrix-user", "{r}");
    assert_eq!(consent["source"], "paper form");
    let consent_id = consent["id"].as_str().unwrap().to_string();

    let denied = s.run(&worker, q, json!({"id": who.id})).await;
    assert_eq!(denied["data"]["person"]["caseNotes"], json!([]), "{denied}");
    assert_eq!(
        errors_at(&denied, &["person", "caseNotes"]),
        ["CONSENT_DENIED"]
    );

    // The worker may not lift a refusal that binds them (not even on evidence); the
    // person may.
    let withdraw = r#"mutation($c: ID!) { withdrawConsent(id: $c, reason: "person changed their mind", evidence: "call of 2 March") { withdrawnAt withdrawnBy history { action by } } }"#;
    let r = s.run(&worker, withdraw, json!({"c": consent_id})).await;
    assert_eq!(r["errors"][0]["extensions"]["code"], "FORBIDDEN", "{r}");
    let mut person = Caller::new("person", "direct_care");
    person.user = "the-person".into();
    person.person = Some(who.id.clone());
    let r = s.run(&person, withdraw, json!({"c": consent_id})).await;
    assert_eq!(
        r["data"]["withdrawConsent"]["history"],
        json!([{"action": "recorded", "by": "matrix-user"}, {"action": "withdrawn", "by": "the-person"}]),
        "{r}"
    );
    let after = s.run(&worker, q, json!({"id": who.id})).await;
    assert_eq!(
        after["data"]["person"]["caseNotes"],
        before["data"]["person"]["caseNotes"]
    );
    assert!(errors_at(&after, &["person", "caseNotes"]).is_empty());

    // Withdrawing twice is a clear error; roles without the right cannot record.
    let again = s
        .run(
            &person,
            r#"mutation($c: ID!) { withdrawConsent(id: $c, reason: "again") { id } }"#,
            json!({"c": consent_id}),
        )
        .await;
    assert_eq!(
        again["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{again}"
    );
    let analyst = Caller::new("analyst", "planning");
    let r = s
        .run(&analyst, r#"mutation($id: ID!) { recordConsent(personId: $id, source: "x", provision: { decision: PERMIT }) { id } }"#, json!({"id": who.id}))
        .await;
    assert_eq!(r["errors"][0]["extensions"]["code"], "FORBIDDEN", "{r}");
    let history = s
        .run(
            &worker,
            "query($id: ID!) { registryConsents(personId: $id) { id withdrawalReason } }",
            json!({"id": who.id}),
        )
        .await;
    assert_eq!(
        history["data"]["registryConsents"],
        json!([{"id": consent_id, "withdrawalReason": "person changed their mind"}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_never_see_each_others_results() {
    let demo = demo::clean();
    let s = Arc::new(secured(demo).await);
    let people = choose(&s, demo).await;
    let who = people["sealed"].clone();
    let q = "query($id: ID!) { person(id: $id) { caseNotes { id security { labels } } services { id } } }";
    let mut lead = Caller::new("safeguarding_lead", "safeguarding");
    lead.break_glass = Some("Section 47 enquiry in progress".into());
    let mut worker = Caller::new("social_worker", "direct_care");
    worker.worker = who.worker.clone();
    let mut stranger = Caller::new("social_worker", "direct_care");
    stranger.worker = Some("999".into());
    let mut tasks = Vec::new();
    for i in 0..60 {
        let s = s.clone();
        let caller = [&lead, &worker, &stranger][i % 3].clone();
        let id = who.id.clone();
        tasks.push(tokio::spawn(async move {
            if i % 7 == 0 {
                s.gateway.fetcher.clear_cache();
            }
            (i % 3, s.run(&caller, q, json!({"id": id})).await)
        }));
    }
    for t in tasks {
        let (kind, r) = t.await.unwrap();
        let notes = r["data"]["person"]["caseNotes"].as_array().unwrap().clone();
        let sealed = notes
            .iter()
            .filter(|n| n["security"]["labels"].to_string().contains("sealed"))
            .count();
        match kind {
            0 => assert!(sealed > 0, "the lead sees sealed notes: {r}"),
            1 => assert!(sealed == 0 && !notes.is_empty(), "worker: {r}"),
            _ => assert!(
                notes.is_empty() && r["data"]["person"]["services"] == json!([]),
                "stranger: {r}"
            ),
        }
    }
}

// --------------------------------------------------------------------------------
// Who is asking
// --------------------------------------------------------------------------------

pub async fn serve(s: &Secured) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = escr_gateway::api::server::router(s.gateway.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/graphql")
}

#[tokio::test]
async fn http_requires_a_valid_token_and_a_permitted_purpose() {
    let demo = demo::clean();
    let s = secured(demo).await;
    let url = serve(&s).await;
    let id = s
        .gateway
        .index
        .snapshot()
        .people
        .keys()
        .next()
        .unwrap()
        .clone();
    let body = json!({"query": "query($id: ID!) { person(id: $id) { name { family } } }", "variables": {"id": id}});
    let client = reqwest::Client::new();
    let post = |headers: Vec<(&'static str, String)>| {
        let mut req = client.post(&url).json(&body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let (status, r) = post(vec![]).await;
    assert_eq!(
        (status, r["errors"][0]["extensions"]["code"].as_str()),
        (401, Some("UNAUTHENTICATED")),
        "{r}"
    );
    assert_eq!(r["data"], Value::Null);

    let worker = Caller::new("social_worker", "direct_care");
    let good = s.token(&worker, 8 * 3600);
    let (status, r) = post(vec![
        ("authorization", format!("Bearer {good}")),
        ("x-purpose-of-use", "direct_care".into()),
    ])
    .await;
    assert_eq!(status, 200, "{r}");
    assert!(r["data"]["person"]["name"]["family"].is_string(), "{r}");
    assert!(r["extensions"]["auditRequestId"].is_string(), "{r}");

    // The purpose must be one the role may use.
    let (status, r) = post(vec![
        ("authorization", format!("Bearer {good}")),
        ("x-purpose-of-use", "research".into()),
    ])
    .await;
    assert_eq!(
        (status, r["errors"][0]["extensions"]["code"].as_str()),
        (403, Some("PURPOSE_NOT_PERMITTED")),
        "{r}"
    );
    let (status, _) = post(vec![("authorization", format!("Bearer {good}"))]).await;
    assert_eq!(status, 401, "no purpose");

    // Tampered, expired, or signed with another key.
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    parts[1] = parts[1].chars().rev().collect();
    let (status, _) = post(vec![
        ("authorization", format!("Bearer {}", parts.join("."))),
        ("x-purpose-of-use", "direct_care".into()),
    ])
    .await;
    assert_eq!(status, 401);
    let expired = s.token(&worker, -3600);
    let (status, r) = post(vec![
        ("authorization", format!("Bearer {expired}")),
        ("x-purpose-of-use", "direct_care".into()),
    ])
    .await;
    assert_eq!(status, 401, "{r}");
    let other = secured(demo).await;
    let foreign = other.token(&worker, 600);
    let (status, _) = post(vec![
        ("authorization", format!("Bearer {foreign}")),
        ("x-purpose-of-use", "direct_care".into()),
    ])
    .await;
    assert_eq!(status, 401);

    // Break-glass: a reason, and a short-lived token.
    let (status, r) = post(vec![
        ("authorization", format!("Bearer {good}")),
        ("x-purpose-of-use", "direct_care".into()),
        (
            "x-break-glass-reason",
            "Urgent: hospital discharge tonight".into(),
        ),
    ])
    .await;
    assert_eq!(
        status, 403,
        "an 8-hour token may not break glass: tokens live at most the policy's limit: {r}"
    );
    let short = s.token(&worker, 30 * 60);
    let (status, r) = post(vec![
        ("authorization", format!("Bearer {short}")),
        ("x-purpose-of-use", "direct_care".into()),
        ("x-break-glass-reason", "x".into()),
    ])
    .await;
    assert_eq!(
        (status, r["errors"][0]["extensions"]["code"].as_str()),
        (403, Some("BREAK_GLASS_REFUSED")),
        "{r}"
    );
    let (status, r) = post(vec![
        ("authorization", format!("Bearer {short}")),
        ("x-purpose-of-use", "direct_care".into()),
        (
            "x-break-glass-reason",
            "Urgent: hospital discharge tonight".into(),
        ),
    ])
    .await;
    assert_eq!(status, 200, "{r}");
    let analyst = s.token(&Caller::new("analyst", "planning"), 30 * 60);
    let (status, _) = post(vec![
        ("authorization", format!("Bearer {analyst}")),
        ("x-purpose-of-use", "planning".into()),
        (
            "x-break-glass-reason",
            "I would like to see everything".into(),
        ),
    ])
    .await;
    assert_eq!(status, 403, "analysts may not break glass");
    let breaks = s.access().audit.break_glass().await.unwrap();
    assert_eq!(breaks.len(), 1, "{breaks:?}");
    assert_eq!(
        breaks[0].break_glass_reason.as_deref(),
        Some("Urgent: hospital discharge tonight")
    );

    // The guardian's review is itself a read of each person named in it: audited.
    let guardian = Caller::new("caldicott_guardian", "care_management");
    let r = s
        .run(&guardian, "{ breakGlassReview { user reason } }", json!({}))
        .await;
    assert_eq!(
        r["data"]["breakGlassReview"].as_array().map(Vec::len),
        Some(1),
        "{r}"
    );
    let review = s
        .access()
        .audit
        .for_request(r["extensions"]["auditRequestId"].as_str().unwrap())
        .await
        .unwrap();
    let read: Vec<_> = review
        .iter()
        .filter(|e| e.decision == "audit_read")
        .collect();
    assert_eq!(read.len(), 1, "{review:?}");
    assert_eq!(read[0].person_id, breaks[0].person_id);
    assert_eq!(read[0].role, "caldicott_guardian");
}

#[test]
fn rs256_and_es256_tokens_verify_against_a_jwks_file_that_rotates() {
    check_jwks_rotation(|config, jwks| config.auth.jwks_file = Some(jwks.to_path_buf()));
}

/// The same over HTTP: the gateway fetches the identity provider's JWKS URL at startup
/// and again (rate-limited) when a token names a key it does not hold.
#[test]
fn rs256_and_es256_tokens_verify_against_a_jwks_url_that_rotates() {
    let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let work = tempfile::tempdir().unwrap();
    let served = work.path().join("served.json");
    let url = serve_file_over_http(served.clone(), fetches.clone());
    check_jwks_rotation(move |config, jwks| {
        // The test writes `jwks`; the little server publishes whatever it holds.
        std::fs::remove_file(&served).ok();
        std::os::unix::fs::symlink(jwks, &served).unwrap();
        config.auth.jwks_url = Some(url.clone());
        config.auth.jwks_refetch_secs = 1;
    });
    // Startup, then one refetch for the unknown kid (the second unknown-kid
    // verification inside the rate limit does not fetch again).
    let n = fetches.load(std::sync::atomic::Ordering::SeqCst);
    assert!((2..=3).contains(&n), "{n} fetches");
}

/// A one-file HTTP server on loopback (std only): every GET gets the file's content.
fn serve_file_over_http(
    file: std::path::PathBuf,
    fetches: Arc<std::sync::atomic::AtomicUsize>,
) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let body = std::fs::read_to_string(&file).unwrap_or_default();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

fn check_jwks_rotation(configure: impl FnOnce(&mut PolicyConfig, &Path)) {
    use aws_lc_rs::signature::{
        EcdsaKeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
    };
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let work = tempfile::tempdir().unwrap();
    let rsa = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let comps = aws_lc_rs::rsa::PublicKeyComponents::<Vec<u8>>::from(rsa.public_key());
    let ec = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let point = ec.public_key().as_ref().to_vec();
    let rsa_jwk = json!({"kty": "RSA", "kid": "rsa-1", "n": b64(&comps.n), "e": b64(&comps.e)});
    let ec_jwk = json!({"kty": "EC", "crv": "P-256", "kid": "ec-2", "x": b64(&point[1..33]), "y": b64(&point[33..])});
    let jwks = work.path().join("jwks.json");
    std::fs::write(&jwks, json!({"keys": [rsa_jwk]}).to_string()).unwrap();

    let path = demo::repo().join("config/policy.toml");
    let mut config = PolicyConfig::parse(&path, &std::fs::read_to_string(&path).unwrap()).unwrap();
    config.auth.hs256_key_env = None;
    config.auth.hs256_key_file = None;
    configure(&mut config, &jwks);
    let auth = escr_gateway::consent::auth::Auth::new(Arc::new(config)).unwrap();
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        sub: "u1".into(),
        role: "social_worker".into(),
        iat: now,
        exp: now + 600,
        ..Claims::default()
    };
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let rs = escr_gateway::consent::auth::sign_with("RS256", "rsa-1", &claims, |m| {
        let mut sig = vec![0; rsa.public_modulus_len()];
        rsa.sign(&RSA_PKCS1_SHA256, &rng, m, &mut sig).unwrap();
        sig
    });
    assert_eq!(auth.verify(&rs).unwrap().sub, "u1");
    let es = escr_gateway::consent::auth::sign_with("ES256", "ec-2", &claims, |m| {
        ec.sign(&rng, m).unwrap().as_ref().to_vec()
    });
    assert_eq!(
        auth.verify(&es).unwrap_err(),
        AuthError::UnknownKey(Some("ec-2".into()))
    );
    // The identity provider rotates: the new key appears in the JWKS, and the gateway
    // re-reads it when a token names it.
    std::fs::write(&jwks, json!({"keys": [rsa_jwk, ec_jwk]}).to_string()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(auth.verify(&es).unwrap().sub, "u1");
    // A signature made with one key under another's id fails; HS256 is not accepted
    // when no HS256 key is configured; `none` never is.
    let forged = escr_gateway::consent::auth::sign_with("ES256", "rsa-1", &claims, |m| {
        ec.sign(&rng, m).unwrap().as_ref().to_vec()
    });
    assert_eq!(auth.verify(&forged).unwrap_err(), AuthError::BadSignature);
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none"}"#),
        b64(serde_json::to_string(&claims).unwrap().as_bytes())
    );
    assert!(matches!(auth.verify(&none), Err(AuthError::Algorithm(_))));
}

#[test]
fn bad_policy_names_file_line_and_reason() {
    let path = demo::repo().join("config/policy.toml");
    let shipped = std::fs::read_to_string(&path).unwrap();
    PolicyConfig::parse(&path, &shipped).expect("the shipped policy is valid");
    let cases = [
        (
            "labels = [\"restricted\", \"safeguarding\", \"third_party\"]\nmay_break_glass",
            "labels = [\"restricted\", \"gossip\"]\nmay_break_glass",
            "unknown label `gossip`",
        ),
        (
            "purposes = [\"planning\"]",
            "purposes = [\"planing\"]",
            "unknown purpose `planing`",
        ),
        (
            "max_minutes = 60",
            "max_minutes = 60\nmax_hours = 1",
            "unknown field `max_hours`",
        ),
        (
            "purposes = [\"planning\", \"research\"]",
            "purposes = [\"direct_care\"]",
            "never applies to direct care",
        ),
        (
            "classes = [\"care\"]",
            "classes = [\"everything\"]",
            "unknown data class `everything`",
        ),
        (
            "hs256_key_env = \"ESCR_JWT_KEY\"",
            "hs256_key_env = \"ESCR_JWT_KEY\"\njwks_url = \"http://idp.example/jwks\"",
            "must be https",
        ),
        (
            "entity = \"assessment\"\nfield = \"type\"",
            "entity = \"assessment\"\nfield = \"kind\"",
            "`assessment` has no field `kind`",
        ),
        (
            "values = [\"MENTAL_HEALTH\"]\nlabels = [\"mental_health\"]",
            "values = [\"MENTAL_HEALTH\"]\nlabels = [\"psychiatric\"]",
            "unknown label `psychiatric`",
        ),
    ];
    for (from, to, reason) in cases {
        assert!(shipped.contains(from), "{from}");
        let text = shipped.replacen(from, to, 1);
        let err = PolicyConfig::parse(&path, &text).unwrap_err();
        let line = text[..text.find(to).unwrap()].lines().count() + 1;
        assert!(err.reason.contains(reason), "{err}");
        assert!(
            err.line > 0 && err.line.abs_diff(line) <= 3,
            "{err} (edited line {line})"
        );
        assert!(
            err.to_string().starts_with(&format!("{}:", path.display())),
            "{err}"
        );
    }
}

// --------------------------------------------------------------------------------
// Audit
// --------------------------------------------------------------------------------

#[tokio::test]
async fn every_decision_is_audited_in_an_intact_chain() {
    let demo = demo::clean();
    let s = secured(demo).await;
    let people = choose(&s, demo).await;
    let who = &people["sealed"];
    let q =
        "query($id: ID!) { person(id: $id) { name { family } caseNotes { id } services { id } } }";
    let mut worker = Caller::new("social_worker", "direct_care");
    worker.worker = who.worker.clone();
    let r = s.run(&worker, q, json!({"id": who.id})).await;
    let request_id = r["extensions"]["auditRequestId"]
        .as_str()
        .unwrap()
        .to_string();
    let events = s.access().audit.for_request(&request_id).await.unwrap();
    let released: Vec<_> = events.iter().filter(|e| e.decision == "released").collect();
    assert_eq!(released.len(), 1, "{events:?}");
    assert_eq!(released[0].person_id.as_deref(), Some(who.id.as_str()));
    assert!(
        released[0].kinds.contains("case_note")
            && released[0].kinds.contains("service")
            && released[0].kinds.contains("person")
    );
    assert_eq!(released[0].user, "matrix-user");
    assert_eq!(released[0].role, "social_worker");
    assert_eq!(released[0].purpose, "direct_care");
    assert!(
        events
            .iter()
            .any(|e| e.decision == "hidden" && e.code.as_deref() == Some("SEALED")),
        "sealed withholding audited: {events:?}"
    );

    let mut stranger = Caller::new("social_worker", "direct_care");
    stranger.worker = Some("999".into());
    let r = s.run(&stranger, q, json!({"id": who.id})).await;
    let events = s
        .access()
        .audit
        .for_request(r["extensions"]["auditRequestId"].as_str().unwrap())
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.decision == "withheld" && e.code.as_deref() == Some("NO_RELATIONSHIP")),
        "{events:?}"
    );

    // The Caldicott guardian reads the trail; a social worker may not.
    let guardian = Caller::new("caldicott_guardian", "care_management");
    let trail = s.run(&guardian, "query($id: ID!) { auditTrail(personId: $id) { user role purpose decision code kinds } }", json!({"id": who.id})).await;
    let trail = trail["data"]["auditTrail"].as_array().unwrap().clone();
    assert!(trail
        .iter()
        .any(|e| e["decision"] == "released" && e["user"] == "matrix-user"));
    assert!(trail.iter().any(|e| e["code"] == "NO_RELATIONSHIP"));
    let r = s
        .run(
            &worker,
            "query($id: ID!) { auditTrail(personId: $id) { user } }",
            json!({"id": who.id}),
        )
        .await;
    assert_eq!(r["errors"][0]["extensions"]["code"], "FORBIDDEN", "{r}");

    // The person sees who has seen their record; nobody else's.
    let mut me = Caller::new("person", "direct_care");
    me.person = Some(who.id.clone());
    let r = s
        .run(
            &me,
            "{ myRecordAccess { user role purpose kinds breakGlass } }",
            json!({}),
        )
        .await;
    let seen = r["data"]["myRecordAccess"].as_array().unwrap();
    assert!(
        seen.iter()
            .any(|e| e["user"] == "matrix-user" && e["role"] == "social_worker"),
        "{r}"
    );
    assert!(seen.iter().all(|e| e["user"] != ""), "{r}");
    let other = people["plain"].id.clone();
    let r = s
        .run(
            &me,
            "query($id: ID!) { person(id: $id) { name { family } } }",
            json!({"id": other}),
        )
        .await;
    assert_eq!(
        r["data"]["person"],
        Value::Null,
        "a person sees only their own record: {r}"
    );

    let path = s.access().config.storage.audit.clone();
    let v = escr_gateway::consent::audit::verify(&path).unwrap();
    // One record per request that decided something (the refused trail read did not).
    assert!(v.records >= 4 && v.first_break.is_none(), "{v:?}");

    // Append-only: SQLite refuses changes; forcing one past the trigger breaks the chain
    // exactly there.
    let conn = rusqlite::Connection::open(&path).unwrap();
    assert!(conn
        .execute("UPDATE audit SET user = 'someone' WHERE seq = 2", [])
        .is_err());
    assert!(conn.execute("DELETE FROM audit WHERE seq = 2", []).is_err());
    conn.execute_batch(
        "DROP TRIGGER audit_append_only_u; UPDATE audit SET decision = 'released' WHERE seq = 3;",
    )
    .unwrap();
    let v = escr_gateway::consent::audit::verify(&path).unwrap();
    assert_eq!(v.first_break.map(|b| b.0), Some(3));
}

// --------------------------------------------------------------------------------
// Durability: SIGKILL under load loses no audit event of an answered request
// --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_audit_record_of_an_answered_request() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let vendors = demo::repo().join("config/vendors");
    let mut config = format!(
        "policy = \"policy.toml\"\n\n[server]\nlisten = \"127.0.0.1:{port}\"\n\n[index]\npath = \"data/index.db\"\nrefresh_secs = 0\n\n[demo]\ndir = \"data/demo\"\npeople = 150\nseed = 3\n"
    );
    for source in ["casetrak", "opencare", "ssis"] {
        config.push_str(&format!(
            "\n[[sources]]\nname = \"{source}\"\nprofile = {:?}\nsqlite = {{ path = \"data/demo/{source}.db\" }}\n",
            vendors.join(format!("{source}.toml"))
        ));
    }
    std::fs::write(dir.join("escr.toml"), config).unwrap();
    let policy = std::fs::read_to_string(demo::repo().join("config/policy.toml"))
        .unwrap()
        .replace("\"../data/", "\"data/");
    std::fs::write(dir.join("policy.toml"), policy).unwrap();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(
        dir.join("data/jwt-hs256.key"),
        "sigkill-test-key-0123456789abcdef0123456789",
    )
    .unwrap();

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_escr"))
        .args(["--config", dir.join("escr.toml").to_str().unwrap(), "serve"])
        .env_remove("ESCR_JWT_KEY")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let started = std::time::Instant::now();
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(started.elapsed().as_secs() < 120, "serve did not start");
        assert!(child.try_wait().unwrap().is_none(), "serve exited");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let policy = PolicyConfig::load(&dir.join("policy.toml")).unwrap();
    let audit_path = policy.storage.audit.clone();
    let auth = escr_gateway::consent::auth::Auth::new(Arc::new(policy)).unwrap();
    let now = chrono::Utc::now().timestamp();
    let token = auth
        .mint_hs256(&Claims {
            sub: "load".into(),
            role: "safeguarding_lead".into(),
            org: Some("council".into()),
            iat: now,
            exp: now + 3600,
            ..Claims::default()
        })
        .unwrap();
    let post = |query: Value| {
        client
            .post(format!("{base}/graphql"))
            .bearer_auth(&token)
            .header("x-purpose-of-use", "safeguarding")
            .json(&query)
            .send()
    };
    let mut ids = BTreeSet::new();
    for letter in ["a", "b", "c", "d", "e", "h", "j", "m", "s", "w"] {
        let r: Value = post(json!({"query": "query($n: String!) { searchPeople(name: $n, first: 50) { edges { node { id } } } }", "variables": {"n": letter}}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for e in r["data"]["searchPeople"]["edges"]
            .as_array()
            .into_iter()
            .flatten()
        {
            ids.insert(e["node"]["id"].as_str().unwrap().to_string());
        }
    }
    let ids: Vec<String> = ids.into_iter().collect();
    assert!(ids.len() >= 10, "people found: {}", ids.len());

    // Four clients; the server is killed while they run. Every response that arrived
    // with data must have its audit events on disk.
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..4 {
        let client = client.clone();
        let (base, token, ids, acknowledged, stop) = (
            base.clone(),
            token.clone(),
            ids.clone(),
            acknowledged.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for i in 0..5000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let id = &ids[(i * 4 + t) % ids.len()];
                let sent = client
                    .post(format!("{base}/graphql"))
                    .bearer_auth(&token)
                    .header("x-purpose-of-use", "safeguarding")
                    .json(&json!({"query": "query($id: ID!) { person(id: $id) { name { family } services { id } } }", "variables": {"id": id}}))
                    .send()
                    .await;
                let Ok(resp) = sent else { break };
                let Ok(body) = resp.json::<Value>().await else { break };
                if body["data"]["person"]["name"].is_object() {
                    let rid = body["extensions"]["auditRequestId"].as_str().unwrap().to_string();
                    acknowledged.lock().unwrap().push((rid, id.clone()));
                }
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    eprintln!("answered before SIGKILL: {}", acknowledged.len());
    assert!(
        acknowledged.len() >= 20,
        "load ran: {} answered",
        acknowledged.len()
    );

    let released: std::collections::HashSet<(String, String)> =
        escr_gateway::consent::audit::events_in(&audit_path)
            .unwrap()
            .into_iter()
            .filter(|e| e.decision == "released")
            .filter_map(|e| Some((e.request_id, e.person_id?)))
            .collect();
    let mut missing = Vec::new();
    for (rid, person) in &acknowledged {
        if !released.contains(&(rid.clone(), person.clone())) {
            missing.push(rid.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} answered requests lack their audit record",
        missing.len(),
        acknowledged.len()
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_escr"))
        .args([
            "--config",
            dir.join("escr.toml").to_str().unwrap(),
            "verify-audit",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("chain intact"),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The first person with a current allocation for whom `pick` finds something in the
/// unfiltered answer to `query` (which selects `allocations { workerId teamId end }`),
/// and a caller of `role` and `purpose` allocated to them (worker and team).
async fn first_allocated<T>(
    s: &Secured,
    query: &str,
    role: &str,
    purpose: &str,
    pick: impl Fn(&Value) -> Option<T>,
) -> Option<(String, Caller, T)> {
    let ids = person_ids(s);
    for id in ids {
        let r = s.plain.run(query, json!({"id": id})).await;
        let p = &r["data"]["person"];
        let Some(alloc) = p["allocations"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["end"].is_null()))
        else {
            continue;
        };
        let mut caller = Caller::new(role, purpose);
        caller.worker = alloc["workerId"].as_str().map(str::to_string);
        caller.team = alloc["teamId"].as_str().map(str::to_string);
        if let Some(found) = pick(p) {
            return Some((id, caller, found));
        }
    }
    None
}

/// Following a relationship to another person gets that person's own decision: a
/// worker allocated to a child sees the child's services but not those of a related
/// adult they are not allocated to.
#[tokio::test]
async fn a_related_person_gets_their_own_decision() {
    let demo = demo::clean();
    let s = secured(demo).await;
    let q = "query($id: ID!) { person(id: $id) { allocations { workerId teamId end } services { id } relationships { relatedPerson { id allocations { workerId teamId } services { id } } } } }";
    let found = first_allocated(&s, q, "social_worker", "direct_care", |p| {
        let alloc = p["allocations"]
            .as_array()?
            .iter()
            .find(|a| a["end"].is_null())?;
        p["relationships"].as_array()?.iter().find_map(|rel| {
            let other = &rel["relatedPerson"];
            let services = other["services"].as_array().map_or(0, Vec::len);
            let shares = other["allocations"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|a| a["workerId"] == alloc["workerId"] || a["teamId"] == alloc["teamId"]);
            (services > 0 && !shares).then(|| other.clone())
        })
    })
    .await;
    let (child, caller, other) = found.expect("a person with an unallocated relative");
    let r = s.run(&caller, q, json!({"id": child})).await;
    let text = r.to_string();
    let related = r["data"]["person"]["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .find(|rel| rel["relatedPerson"]["id"] == other["id"])
        .unwrap_or_else(|| panic!("relationship missing: {text}"));
    assert_eq!(related["relatedPerson"]["services"], json!([]), "{text}");
    for service in other["services"].as_array().unwrap() {
        assert!(
            !text.contains(service["id"].as_str().unwrap()),
            "related person's service leaked: {text}"
        );
    }
    assert!(text.contains("NO_RELATIONSHIP"), "{text}");
    // The child's own services are released to the allocated worker.
    assert!(r["data"]["person"]["services"].is_array(), "{text}");
}

/// Labels implied by record kind (policy.toml `[[record_labels]]`): with a rule that
/// labels looked-after episodes `adoption` (no vendor profile does), those episodes are
/// withheld from a role that may not see adoption information and shown, labelled, to
/// one that may.
#[tokio::test]
async fn record_kind_labels_apply_across_sources() {
    let demo = demo::clean();
    let rule = "\n[[record_labels]]\nentity = \"episode\"\nfield = \"kind\"\nvalues = [\"LOOKED_AFTER\"]\nlabels = [\"adoption\"]\n";
    let s = secured_with(demo, rule).await;
    let q = "query($id: ID!) { person(id: $id) { allocations { workerId teamId end } episodes { id kind security { labels } } } }";
    let found = first_allocated(&s, q, "social_worker", "direct_care", |p| {
        let lac: Vec<&Value> = p["episodes"]
            .as_array()?
            .iter()
            .filter(|e| e["kind"] == "LOOKED_AFTER")
            .collect();
        // Unlabelled at the source: the label comes from the policy rule alone.
        let unlabelled = lac.iter().all(|e| e["security"]["labels"] == json!([]));
        (!lac.is_empty() && unlabelled).then(|| {
            lac.iter()
                .map(|e| e["id"].as_str().unwrap().to_string())
                .collect::<Vec<String>>()
        })
    })
    .await;
    let (id, worker, lac) = found.expect("an allocated person with a looked-after episode");
    let caller = |role: &str, purpose: &str| Caller {
        role: role.into(),
        purpose: purpose.into(),
        ..worker.clone()
    };
    let r = s
        .run(
            &caller("social_worker", "direct_care"),
            q,
            json!({"id": id}),
        )
        .await;
    let text = r.to_string();
    for e in &lac {
        assert!(!text.contains(e.as_str()), "{e} released: {text}");
    }
    assert_eq!(
        errors_at(&r, &["person", "episodes"]),
        ["LABEL_RESTRICTED"],
        "{text}"
    );
    let r = s
        .run(
            &caller("safeguarding_lead", "safeguarding"),
            q,
            json!({"id": id}),
        )
        .await;
    let shown: Vec<&Value> = r["data"]["person"]["episodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| lac.iter().any(|l| e["id"] == l.as_str()))
        .collect();
    assert_eq!(shown.len(), lac.len(), "{r}");
    for e in shown {
        assert_eq!(e["security"]["labels"], json!(["adoption"]), "{e}");
    }
}

/// A purpose that may not use demographics (research) may not search or look people up
/// by NHS number: a hit would reveal that the council knows someone of that name.
#[tokio::test]
async fn research_may_not_find_people_by_identifiers() {
    let demo = demo::clean();
    let s = secured(demo).await;
    let nhs = demo
        .truth
        .people
        .iter()
        .find_map(|p| p.nhs_number.clone())
        .expect("someone has an NHS number");
    let found = s
        .plain
        .run(
            "query($n: String!) { personByNhsNumber(nhsNumber: $n) { id name { family } } }",
            json!({"n": nhs}),
        )
        .await;
    let id = found["data"]["personByNhsNumber"]["id"].clone();
    assert!(id.is_string(), "{found}");
    let family = found["data"]["personByNhsNumber"]["name"]["family"]
        .as_str()
        .unwrap()
        .to_string();
    let researcher = Caller::new("researcher", "research");
    let r = s
        .run(
            &researcher,
            "query($n: String!) { personByNhsNumber(nhsNumber: $n) { id } }",
            json!({"n": nhs}),
        )
        .await;
    assert_eq!(r["data"]["personByNhsNumber"], Value::Null, "{r}");
    assert_eq!(
        r["errors"][0]["extensions"]["code"], "PURPOSE_NOT_PERMITTED",
        "{r}"
    );
    let r = s
        .run(
            &researcher,
            "query($n: String!) { searchPeople(name: $n) { totalCount edges { node { id } } } }",
            json!({"n": family}),
        )
        .await;
    assert!(!r.to_string().contains(id.as_str().unwrap()), "{r}");
    assert_eq!(
        r["errors"][0]["extensions"]["code"], "PURPOSE_NOT_PERMITTED",
        "{r}"
    );
    // Nor read the person's local ids by id.
    let r = s
        .run(
            &researcher,
            "query($id: ID!) { person(id: $id) { sourceRecords { localId } linkEvidence { rule } services { id } } }",
            json!({"id": id}),
        )
        .await;
    if !r["data"]["person"].is_null() {
        assert_eq!(r["data"]["person"]["sourceRecords"], json!([]), "{r}");
        assert_eq!(r["data"]["person"]["linkEvidence"], json!([]), "{r}");
    }
    // Planning uses demographics: an analyst may search (the opt-out aside).
    let analyst = Caller::new("analyst", "planning");
    let r = s
        .run(
            &analyst,
            "query($n: String!) { searchPeople(name: $n) { totalCount } }",
            json!({"n": family}),
        )
        .await;
    assert!(r["errors"].is_null(), "{r}");
}
