//! Operations through HTTP, as a platform team and its clients see them: request ids,
//! CORS, metrics, traces (to an OTLP receiver on loopback), rate limits, compression,
//! trusted documents, GraphiQL's assets, JSON errors, sources that fail.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use escr_gateway::api::gateway::Gateway;
use escr_gateway::config::LoadedConfig;
use escr_gateway::consent::auth::Claims;
use escr_gateway::consent::AccessControl;
use serde_json::{json, Value};

use crate::consent::test_policy_with;
use crate::support::demo::{self, Demo};
use crate::support::shipped::free_port;

pub struct Served {
    pub url: String,
    pub gateway: Arc<Gateway>,
    _work: tempfile::TempDir,
}

/// A gateway over the clean demo with `extra` TOML in its config (top-level keys
/// before the first table, then tables), secured by the shipped policy, served on
/// loopback with peer addresses.
pub async fn serve_with(
    demo: &'static Demo,
    top: &str,
    tables: &str,
    replace: &[(&str, &str)],
) -> Served {
    let work = tempfile::tempdir().unwrap();
    let text = format!(
        "{top}\n{}\n{tables}\n",
        demo::config_text(demo, work.path(), replace)
    );
    let path = work.path().join("escr.toml");
    std::fs::write(&path, text).unwrap();
    let config = LoadedConfig::load(&path).expect("config loads");
    let gateway = Gateway::from_config(config).expect("gateway builds");
    gateway.refresh_index(false).await.unwrap();
    let access = AccessControl::from_config(
        test_policy_with(demo, work.path(), ""),
        Some(gateway.index.clone()),
    )
    .unwrap();
    let gateway = Arc::new(gateway.with_access_control(access));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = escr_gateway::api::server::router(gateway.clone())
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Served {
        url: format!("http://{addr}"),
        gateway,
        _work: work,
    }
}

impl Served {
    pub fn token(&self, role: &str, user: &str) -> String {
        let now = chrono::Utc::now().timestamp();
        self.gateway
            .access
            .as_ref()
            .unwrap()
            .auth
            .mint_hs256(&Claims {
                sub: user.into(),
                role: role.into(),
                org: Some("council".into()),
                iat: now,
                exp: now + 600,
                ..Claims::default()
            })
            .unwrap()
    }

    /// POST a body to /graphql as a safeguarding lead (sees everyone).
    pub async fn post(
        &self,
        body: Value,
        headers: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut req = reqwest::Client::new()
            .post(format!("{}/graphql", self.url))
            .bearer_auth(self.token("safeguarding_lead", "ops-user"))
            .header("x-purpose-of-use", "safeguarding")
            .json(&body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let h = r.headers().clone();
        (status, h, r.json().await.unwrap_or(Value::Null))
    }
}

const SEARCH: &str = "query($n: String!) { searchPeople(name: $n, first: 5) { totalCount edges { node { id name { family given } } } } }";

#[tokio::test]
async fn request_ids_are_returned_and_reach_the_audit() {
    let s = serve_with(demo::clean(), "", "", &[]).await;
    let (status, headers, r) = s
        .post(
            json!({"query": SEARCH, "variables": {"n": "a"}}),
            &[("x-request-id", "router-7f3a.1")],
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(headers["x-request-id"], "router-7f3a.1");
    let audit_id = r["extensions"]["auditRequestId"].as_str().unwrap();
    let events = s
        .gateway
        .access
        .as_ref()
        .unwrap()
        .audit
        .for_request(audit_id)
        .await
        .unwrap();
    assert!(!events.is_empty());
    assert!(
        events
            .iter()
            .all(|e| e.http_request_id.as_deref() == Some("router-7f3a.1")),
        "{events:?}"
    );
    // None given, or one that is not safe to log: a fresh one, never an echo.
    let (_, headers, _) = s
        .post(json!({"query": SEARCH, "variables": {"n": "b"}}), &[])
        .await;
    let made = headers["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(made.len(), 32, "{made}");
    let (_, headers, _) = s
        .post(
            json!({"query": SEARCH, "variables": {"n": "b"}}),
            &[("x-request-id", "a b\"<script>")],
        )
        .await;
    assert_ne!(headers["x-request-id"], "a b\"<script>");
    assert_ne!(headers["x-request-id"].to_str().unwrap(), made);
    // Refusals carry it too, in the response and the audit.
    let r = reqwest::Client::new()
        .post(format!("{}/graphql", s.url))
        .header("x-request-id", "refused-1")
        .json(&json!({"query": SEARCH, "variables": {"n": "a"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["x-request-id"], "refused-1");
    let n = escr_gateway::consent::audit::events_in(
        &s.gateway.access.as_ref().unwrap().config.storage.audit,
    )
    .unwrap()
    .into_iter()
    .filter(|e| e.http_request_id.as_deref() == Some("refused-1") && e.decision == "denied")
    .count();
    assert_eq!(n, 1);
    // The chain still verifies with the new field.
    let v = escr_gateway::consent::audit::verify(
        &s.gateway.access.as_ref().unwrap().config.storage.audit,
    )
    .unwrap();
    assert_eq!(v.first_break, None);
}

#[tokio::test]
async fn cors_allows_configured_origins_only_and_answers_preflights() {
    let s = serve_with(
        demo::clean(),
        "",
        "[server]\ncors_origins = [\"https://portal.council.example\"]\n",
        &[],
    )
    .await;
    let client = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, format!("{}/graphql", s.url))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type, x-purpose-of-use",
            )
            .send()
    };
    let r = preflight("https://portal.council.example").await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://portal.council.example"
    );
    let allowed = r.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed.contains("authorization") && allowed.contains("x-purpose-of-use"),
        "{allowed}"
    );
    let r = preflight("https://elsewhere.example").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    // Default: no origin is allowed, and the preflight is still answered (not 405).
    let plain = serve_with(demo::clean(), "", "", &[]).await;
    let r = client
        .request(reqwest::Method::OPTIONS, format!("{}/graphql", plain.url))
        .header("origin", "https://portal.council.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn metrics_count_requests_sources_cache_and_decisions_without_personal_data() {
    let s = serve_with(demo::clean(), "", "", &[]).await;
    let (_, _, r) = s
        .post(json!({"query": SEARCH, "variables": {"n": "smi"}}), &[])
        .await;
    let id = r["data"]["searchPeople"]["edges"][0]["node"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let family = r["data"]["searchPeople"]["edges"][0]["node"]["name"]["family"]
        .as_str()
        .unwrap()
        .to_string();
    let person =
        "query($id: ID!) { person(id: $id) { name { family } services { id } caseNotes { id } } }";
    for _ in 0..2 {
        let (status, _, r) = s
            .post(json!({"query": person, "variables": {"id": id}}), &[])
            .await;
        assert_eq!(status, 200, "{r}");
    }
    s.post(json!({"query": "{ nosuchField }"}), &[]).await;
    let text = reqwest::get(format!("{}/metrics", s.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let has = |needle: &str| text.lines().any(|l| l.contains(needle));
    assert!(
        has("escr_http_requests_total{route=\"/graphql\",method=\"POST\",status=\"200\"}"),
        "{text}"
    );
    assert!(
        has("escr_graphql_requests_total{operation=\"person\",outcome=\"ok\"}"),
        "{text}"
    );
    assert!(
        has("escr_graphql_requests_total{operation=\"searchPeople\",outcome=\"ok\"}"),
        "{text}"
    );
    assert!(
        has("escr_graphql_requests_total{operation=\"invalid\",outcome=\"error\"}"),
        "{text}"
    );
    assert!(
        has("escr_graphql_request_seconds_bucket{operation=\"person\""),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("escr_source_statements_total{")
                && l.contains("entity=\"service\"")),
        "{text}"
    );
    assert!(
        has("escr_source_call_seconds_bucket{source=\"casetrak\""),
        "{text}"
    );
    assert!(has("escr_cache_hits_total{source=\"casetrak\"}"), "{text}");
    assert!(
        has("escr_cache_misses_total{source=\"casetrak\"}"),
        "{text}"
    );
    assert!(has("escr_cache_bytes "), "{text}");
    assert!(has("escr_source_up{source=\"ssis\"} 1"), "{text}");
    assert!(has("escr_audit_write_seconds_bucket"), "{text}");
    assert!(
        has("escr_decisions_total{decision=\"released\",code=\"none\"}"),
        "{text}"
    );
    // Nothing a client sent or a person's data: not the search text, the id, the name.
    for secret in ["smi", id.as_str(), family.as_str(), "nosuchField"] {
        let labels: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('{').map(|(_, rest)| rest))
            .collect();
        assert!(
            !labels.iter().any(|l| l.contains(secret)),
            "`{secret}` in a label"
        );
    }
    // Switched off: no route.
    let off = serve_with(demo::clean(), "", "[server]\nmetrics = false\n", &[]).await;
    let r = reqwest::get(format!("{}/metrics", off.url)).await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after_and_spare_health_checks() {
    let s = serve_with(
        demo::clean(),
        "",
        // One token each 30 s: a slow machine cannot earn one back within the test.
        "[server.limits]\nper_caller_per_minute = 2\nper_address_per_minute = 0\nburst = 5\n",
        &[],
    )
    .await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..8 {
        let (status, headers, r) = s
            .post(json!({"query": SEARCH, "variables": {"n": "a"}}), &[])
            .await;
        if status == 429 {
            retry_after = headers
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            assert_eq!(r["errors"][0]["extensions"]["code"], "RATE_LIMITED", "{r}");
        }
        statuses.push(status);
    }
    assert_eq!(&statuses[..5], &[200; 5], "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    let wait: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=30).contains(&wait), "{wait}");
    // Another caller has a bucket of its own; health checks are never limited.
    let other = reqwest::Client::new()
        .post(format!("{}/graphql", s.url))
        .bearer_auth(s.token("safeguarding_lead", "someone-else"))
        .header("x-purpose-of-use", "safeguarding")
        .json(&json!({"query": SEARCH, "variables": {"n": "a"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    for _ in 0..20 {
        assert_eq!(
            reqwest::get(format!("{}/healthz", s.url))
                .await
                .unwrap()
                .status(),
            200
        );
    }

    // Per address: every request from here counts, whoever it is.
    let s = serve_with(
        demo::clean(),
        "",
        "[server.limits]\nper_address_per_minute = 2\nburst = 3\n",
        &[],
    )
    .await;
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for i in 0..5 {
        let r = client
            .post(format!("{}/graphql", s.url))
            .bearer_auth(s.token("safeguarding_lead", &format!("user-{i}")))
            .header("x-purpose-of-use", "safeguarding")
            .json(&json!({"query": SEARCH, "variables": {"n": "a"}}))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, vec![200, 200, 200, 429, 429]);
}

#[tokio::test]
async fn responses_are_compressed_for_clients_that_accept_it() {
    let s = serve_with(demo::clean(), "", "", &[]).await;
    let body = json!({"query": SEARCH, "variables": {"n": "a"}});
    let r = reqwest::Client::new()
        .post(format!("{}/graphql", s.url))
        .bearer_auth(s.token("safeguarding_lead", "zip"))
        .header("x-purpose-of-use", "safeguarding")
        .header("accept-encoding", "gzip")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-encoding"], "gzip");
    let bytes = r.bytes().await.unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut text)
        .unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let (_, _, plain) = s.post(body, &[]).await;
    assert_eq!(v["data"], plain["data"]);
}

#[tokio::test]
async fn malformed_requests_and_unknown_purposes_get_json_errors() {
    let s = serve_with(demo::clean(), "", "", &[]).await;
    let client = reqwest::Client::new();
    let token = s.token("social_worker", "w");
    let send = |body: &'static str, content_type: &'static str| {
        client
            .post(format!("{}/graphql", s.url))
            .bearer_auth(&token)
            .header("x-purpose-of-use", "direct_care")
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    for (body, content_type, status) in [
        ("{\"query\": ", "application/json", 400),
        ("[{\"query\": \"{ __typename }\"}]", "application/json", 400),
        ("{\"variables\": {}}", "application/json", 400),
        (
            "{\"query\": \"{ __typename }\", \"variables\": [1]}",
            "application/json",
            400,
        ),
        ("query { __typename }", "text/plain", 415),
    ] {
        let r = send(body, content_type).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{body}");
        let v: Value = r.json().await.expect("a JSON error");
        assert!(v["errors"][0]["message"].is_string(), "{v}");
    }
    let r = client
        .post(format!("{}/graphql", s.url))
        .bearer_auth(&token)
        .header("x-purpose-of-use", "gossip")
        .json(&json!({"query": "{ __typename }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["errors"][0]["extensions"]["code"], "UNKNOWN_PURPOSE",
        "{v}"
    );
    let message = v["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("direct_care") && message.contains("safeguarding"),
        "{message}"
    );
}

fn write_documents(dir: &Path) -> (String, String) {
    std::fs::create_dir_all(dir).unwrap();
    let query = "query Search($n: String!) { searchPeople(name: $n, first: 2) { totalCount } }\n";
    let mutation = "mutation { withdrawConsent(id: \"1\", reason: \"test\") { id } }\n";
    std::fs::write(dir.join("search.graphql"), query).unwrap();
    std::fs::write(dir.join("withdraw.graphql"), mutation).unwrap();
    let hash = |t: &str| {
        use sha2::Digest;
        sha2::Sha256::digest(t.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    (hash(query), hash(mutation))
}

#[tokio::test]
async fn trusted_documents_run_by_id_and_only_they_run_in_production() {
    let docs = tempfile::tempdir().unwrap();
    let (search, withdraw) = write_documents(docs.path());
    let tables = format!(
        "[trusted_documents]\npath = {:?}\nrequire = true\n",
        docs.path()
    );
    let s = serve_with(demo::clean(), "", &tables, &[]).await;
    let (status, _, r) = s
        .post(
            json!({"documentId": format!("sha256:{search}"), "variables": {"n": "a"}}),
            &[],
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let total = r["data"]["searchPeople"]["totalCount"].as_i64().unwrap();
    assert!(total > 0);
    // Apollo's form of the same.
    let (status, _, r) = s
        .post(json!({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": search}}, "variables": {"n": "a"}}), &[])
        .await;
    assert_eq!(
        (status, r["data"]["searchPeople"]["totalCount"].as_i64()),
        (200, Some(total)),
        "{r}"
    );
    // GET runs a persisted query, never a mutation.
    let client = reqwest::Client::new();
    let get = |params: Vec<(&'static str, String)>| {
        client
            .get(format!("{}/graphql", s.url))
            .bearer_auth(s.token("safeguarding_lead", "get"))
            .header("x-purpose-of-use", "safeguarding")
            .query(&params)
            .send()
    };
    let r = get(vec![
        ("documentId", search.clone()),
        ("variables", "{\"n\":\"a\"}".into()),
    ])
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["data"]["searchPeople"]["totalCount"].as_i64(),
        Some(total),
        "{v}"
    );
    let r = get(vec![("documentId", withdraw.clone())]).await.unwrap();
    assert_eq!(r.status(), 405);
    // Production: a document not in the list does not run, a listed one sent in full
    // does; an unknown id is named as such.
    let (status, _, r) = s
        .post(
            json!({"query": "{ searchPeople(name: \"a\") { totalCount } }"}),
            &[],
        )
        .await;
    assert_eq!(
        (status, r["errors"][0]["extensions"]["code"].as_str()),
        (403, Some("TRUSTED_DOCUMENT_REQUIRED")),
        "{r}"
    );
    let listed = std::fs::read_to_string(docs.path().join("search.graphql")).unwrap();
    let (status, _, r) = s
        .post(json!({"query": listed, "variables": {"n": "a"}}), &[])
        .await;
    assert_eq!(status, 200, "{r}");
    let (status, _, r) = s.post(json!({"documentId": "sha256:0000"}), &[]).await;
    assert_eq!(
        (status, r["errors"][0]["extensions"]["code"].as_str()),
        (400, Some("PERSISTED_QUERY_NOT_FOUND")),
        "{r}"
    );
}

#[tokio::test]
async fn apq_registers_documents_in_development() {
    let s = serve_with(demo::clean(), "", "[trusted_documents]\napq = true\n", &[]).await;
    let query = "{ searchPeople(name: \"b\", first: 1) { totalCount } }";
    let hash: String = {
        use sha2::Digest;
        sha2::Sha256::digest(query.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let ext = json!({"persistedQuery": {"version": 1, "sha256Hash": hash}});
    let (_, _, r) = s.post(json!({"extensions": ext}), &[]).await;
    assert_eq!(r["errors"][0]["message"], "PersistedQueryNotFound", "{r}");
    let (_, _, r) = s
        .post(json!({"query": query, "extensions": ext}), &[])
        .await;
    let total = r["data"]["searchPeople"]["totalCount"]
        .as_i64()
        .expect("registered and run");
    let (_, _, r) = s.post(json!({"extensions": ext}), &[]).await;
    assert_eq!(
        r["data"]["searchPeople"]["totalCount"].as_i64(),
        Some(total),
        "{r}"
    );
}

#[test]
fn bad_ops_config_names_file_line_and_reason() {
    let demo = demo::clean();
    let work = tempfile::tempdir().unwrap();
    let base = demo::config_text(demo, work.path(), &[]);
    for (extra, reason) in [
        (
            "[server]\ncors_origins = [\"portal.example/x\"]\n",
            "is not an origin",
        ),
        (
            "[server.limits]\nrequest_timeout_secs = 0\n",
            "request_timeout_secs: at least 1",
        ),
        ("[server.limits]\nburst = 0\n", "burst: at least 1"),
        (
            "[server.limits]\nper_caller = 10\n",
            "unknown field `per_caller`",
        ),
        (
            "[telemetry]\notlp_endpoint = \"grpc://collector:4317\"\n",
            "an http:// or https:// URL",
        ),
        (
            "[telemetry]\nlog_format = \"xml\"\n",
            "unknown variant `xml`",
        ),
        (
            "[trusted_documents]\npath = \"nowhere\"\n",
            "`trusted_documents.path` names",
        ),
        (
            "[trusted_documents]\nrequire = true\n",
            "needs the allowlist's `path`",
        ),
        (
            "[trusted_documents]\napq = true\nrequire = true\npath = \".\"\n",
            "cannot go with `require`",
        ),
        ("[demo]\ngenerate_if_missing = true\n", "`dir` is needed"),
    ] {
        let text = format!("{base}\n{extra}");
        let path = work.path().join("escr.toml");
        let err = LoadedConfig::parse(&path, &text).unwrap_err();
        let line = text[..text.find(extra).unwrap()].lines().count() + 1;
        assert!(err.reason.contains(reason), "{extra}: {err}");
        assert!(
            err.line >= line && err.line <= line + 3,
            "{extra}: {err} (table at {line})"
        );
    }
    // Without generation, [demo] needs no dir; a good ops config loads.
    let text = format!("{base}\n[demo]\ngenerate_if_missing = false\n\n[server]\ncors_origins = [\"https://portal.example:8443\"]\n[server.limits]\nper_caller_per_minute = 0\n[telemetry]\nlog_format = \"json\"\n");
    LoadedConfig::parse(&work.path().join("escr.toml"), &text).expect("valid");
    // A bad allowlist fails at startup with its file.
    let docs = work.path().join("docs.json");
    std::fs::write(&docs, json!({"sha256:0123456789012345678901234567890123456789012345678901234567890123": "{ __typename }"}).to_string()).unwrap();
    let text = format!("{base}\n[trusted_documents]\npath = {docs:?}\n");
    std::fs::write(work.path().join("escr.toml"), &text).unwrap();
    let config = LoadedConfig::load(&work.path().join("escr.toml")).unwrap();
    let err = Gateway::from_config(config)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("docs.json") && err.contains("not the SHA-256"),
        "{err}"
    );
}

#[tokio::test]
async fn graphiql_is_served_from_the_binary_and_can_be_switched_off() {
    let s = serve_with(demo::clean(), "", "", &[]).await;
    let r = reqwest::get(format!("{}/graphql", s.url)).await.unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    let page = r.text().await.unwrap();
    // Every script and style comes from here, and each is served.
    let mut assets = BTreeSet::new();
    for attr in ["src=\"", "href=\""] {
        for (i, _) in page.match_indices(attr) {
            let rest = &page[i + attr.len()..];
            assets.insert(rest[..rest.find('"').unwrap()].to_string());
        }
    }
    assert_eq!(assets.len(), 5, "{assets:?}");
    for a in &assets {
        assert!(a.starts_with("/graphiql/assets/"), "{a}");
        let r = reqwest::get(format!("{}{a}", s.url)).await.unwrap();
        assert_eq!(r.status(), 200, "{a}");
        let body = r.bytes().await.unwrap();
        assert!(body.len() > 100, "{a}");
        let committed = std::fs::read(
            demo::repo()
                .join("assets/graphiql")
                .join(a.rsplit('/').next().unwrap()),
        )
        .unwrap();
        assert_eq!(&body[..], &committed[..], "{a}");
    }
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "{page}"
    );
    let app =
        std::fs::read_to_string(demo::repo().join("assets/graphiql/escr-graphiql.js")).unwrap();
    assert!(
        app.contains("onEditHeaders") && app.contains("createFetcher"),
        "the schema is fetched again when headers change"
    );
    // Off: no page, no assets.
    let off = serve_with(demo::clean(), "", "[server]\ngraphiql = false\n", &[]).await;
    assert_eq!(
        reqwest::get(format!("{}/graphql", off.url))
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        reqwest::get(format!("{}{}", off.url, assets.iter().next().unwrap()))
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn a_source_down_at_startup_is_named_and_shown_degraded() {
    let demo = demo::clean();
    let gone = demo.dir.join("not-there.db");
    let s = serve_with(demo, "", "", &[("ssis", gone.to_str().unwrap())]).await;
    let (_, _, r) = s
        .post(json!({"query": SEARCH, "variables": {"n": "a"}}), &[])
        .await;
    assert!(
        r["data"]["searchPeople"]["totalCount"].as_i64().unwrap() > 0,
        "{r}"
    );
    let errors: Vec<(&str, &str)> = r["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["extensions"]["code"].as_str().unwrap(),
                e["extensions"]["source"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(errors, vec![("SOURCE_UNAVAILABLE", "ssis")], "{r}");
    let ready: Value = reqwest::get(format!("{}/readyz", s.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ssis = ready["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "ssis")
        .unwrap();
    assert_eq!(ssis["state"], "down", "{ready}");

    // A source whose SQL the engine refuses answers pings but is degraded, with why.
    let work = tempfile::tempdir().unwrap();
    let copy = work.path().join("casetrak.db");
    std::fs::copy(demo.dir.join("casetrak.db"), &copy).unwrap();
    let s = serve_with(demo, "", "", &[("casetrak", copy.to_str().unwrap())]).await;
    rusqlite::Connection::open(&copy)
        .unwrap()
        .execute_batch("DROP TABLE SVC_PKG")
        .unwrap();
    let id = s
        .gateway
        .index
        .snapshot()
        .by_source("casetrak", "1001")
        .unwrap()
        .to_string();
    let (_, _, r) = s
        .post(json!({"query": "query($id: ID!) { person(id: $id) { services { id } } }", "variables": {"id": id}}), &[])
        .await;
    assert_eq!(
        r["errors"][0]["extensions"]["code"], "SOURCE_UNAVAILABLE",
        "{r}"
    );
    let ready: Value = reqwest::get(format!("{}/readyz", s.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ct = ready["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "casetrak")
        .unwrap();
    assert_eq!(
        (ct["up"].as_bool(), ct["state"].as_str()),
        (Some(true), Some("degraded")),
        "{ready}"
    );
}

/// A small OTLP/HTTP receiver (protobuf over POST /v1/traces) on loopback.
fn otlp_receiver() -> (
    String,
    Arc<Mutex<Vec<opentelemetry_proto::tonic::trace::v1::Span>>>,
) {
    use prost::Message;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    let spans = Arc::new(Mutex::new(Vec::new()));
    let got = spans.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut data = Vec::new();
            let mut buf = [0u8; 8192];
            let (head_end, length) = loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break (None, 0),
                    Ok(n) => data.extend_from_slice(&buf[..n]),
                }
                if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    break (Some(end + 4), length);
                }
            };
            let Some(start) = head_end else { continue };
            while data.len() < start + length {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => data.extend_from_slice(&buf[..n]),
                }
            }
            let body = &data[start..(start + length).min(data.len())];
            if let Ok(request) =
                opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(
                    body,
                )
            {
                let mut all = got.lock().unwrap();
                for rs in request.resource_spans {
                    for ss in rs.scope_spans {
                        all.extend(ss.spans);
                    }
                }
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, spans)
}

fn attribute(span: &opentelemetry_proto::tonic::trace::v1::Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    span.attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            V::StringValue(s) => Some(s.clone()),
            V::IntValue(i) => Some(i.to_string()),
            _ => None,
        }
    })
}

/// A work folder for `escr serve`: a config over a small demo generated on first run
/// (`extra` appended), the shipped policy with its state in the folder, a key.
pub fn serve_folder(dir: &Path, port: u16, extra: &str) -> std::path::PathBuf {
    let vendors = demo::repo().join("config/vendors");
    let mut config = format!(
        "policy = \"policy.toml\"\n\n[server]\nlisten = \"127.0.0.1:{port}\"\n\n[index]\npath = \"data/index.db\"\nrefresh_secs = 0\n\n[demo]\ndir = \"data/demo\"\npeople = 120\nseed = 5\n"
    );
    for source in ["casetrak", "opencare", "ssis"] {
        config.push_str(&format!(
            "\n[[sources]]\nname = \"{source}\"\nprofile = {:?}\nsqlite = {{ path = \"data/demo/{source}.db\" }}\n",
            vendors.join(format!("{source}.toml"))
        ));
    }
    config.push_str(extra);
    std::fs::write(dir.join("escr.toml"), config).unwrap();
    let policy = std::fs::read_to_string(demo::repo().join("config/policy.toml"))
        .unwrap()
        .replace("\"../data/", "\"data/");
    std::fs::write(dir.join("policy.toml"), policy).unwrap();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(
        dir.join("data/jwt-hs256.key"),
        "ops-test-key-0123456789abcdef0123456789",
    )
    .unwrap();
    dir.join("escr.toml")
}

/// Spans go to the receiver from a real `escr serve`; the caller's `traceparent` is
/// the request span's parent and every source call is a child of the request.
#[tokio::test]
async fn traces_reach_an_otlp_receiver_and_continue_the_callers_trace() {
    let (endpoint, spans) = otlp_receiver();
    let work = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = serve_folder(
        work.path(),
        port,
        &format!("\n[telemetry]\notlp_endpoint = {endpoint:?}\nlog_format = \"json\"\n"),
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_escr"))
        .args(["--config", config.to_str().unwrap(), "serve"])
        .env_remove("ESCR_JWT_KEY")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
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
    let policy =
        escr_gateway::consent::PolicyConfig::load(&work.path().join("policy.toml")).unwrap();
    let auth = escr_gateway::consent::auth::Auth::new(Arc::new(policy)).unwrap();
    let now = chrono::Utc::now().timestamp();
    let token = auth
        .mint_hs256(&Claims {
            sub: "tracer".into(),
            role: "safeguarding_lead".into(),
            org: Some("council".into()),
            iat: now,
            exp: now + 600,
            ..Claims::default()
        })
        .unwrap();
    // A statement the engine refuses: the operator's log gets the engine's words.
    rusqlite::Connection::open(work.path().join("data/demo/casetrak.db"))
        .unwrap()
        .execute_batch("DROP TABLE SVC_PKG")
        .unwrap();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let r: Value = client
        .post(format!("{base}/graphql"))
        .bearer_auth(&token)
        .header("x-purpose-of-use", "safeguarding")
        .header("x-request-id", "trace-test-1")
        .header("traceparent", format!("00-{trace_id}-{parent}-01"))
        .json(&json!({"query": "query($s: String!, $l: String!) { personBySourceRecord(source: $s, localId: $l) { id name { family } services { id } visits { id } } }", "variables": {"s": "casetrak", "l": "1001"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let family = r["data"]["personBySourceRecord"]["name"]["family"]
        .as_str()
        .expect("a person")
        .to_string();
    let id = r["data"]["personBySourceRecord"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // A graceful stop sends what is buffered.
    std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&output.stderr).to_string();
    // JSON logs, the request id on the request's lines.
    assert!(
        logs.lines()
            .all(|l| l.trim().is_empty() || serde_json::from_str::<Value>(l).is_ok()),
        "{logs}"
    );
    assert!(
        !logs.contains(&family) && !logs.contains(&id),
        "no personal data in logs"
    );
    let failed: Value = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["fields"]["message"] == "source call failed")
        .unwrap_or_else(|| panic!("the failure is logged: {logs}"));
    assert!(
        failed["fields"]["engine_reason"]
            .as_str()
            .unwrap()
            .contains("no such table: SVC_PKG"),
        "{failed}"
    );
    assert!(
        failed["spans"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["request_id"] == "trace-test-1"),
        "{failed}"
    );
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut waited = 0;
    let (request, calls) = loop {
        let ours: Vec<_> = spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| hex(&s.trace_id) == trace_id)
            .cloned()
            .collect();
        let request = ours.iter().find(|s| s.name == "request").cloned();
        let calls: Vec<_> = ours
            .iter()
            .filter(|s| s.name == "source call")
            .cloned()
            .collect();
        if let (Some(request), false) = (request, calls.is_empty()) {
            break (request, calls);
        }
        waited += 1;
        assert!(
            waited < 100,
            "no spans of the trace arrived ({} spans in all)",
            spans.lock().unwrap().len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(hex(&request.parent_span_id), parent);
    assert_eq!(
        attribute(&request, "http.route").as_deref(),
        Some("/graphql")
    );
    assert_eq!(
        attribute(&request, "request_id").as_deref(),
        Some("trace-test-1")
    );
    assert_eq!(
        attribute(&request, "graphql.operation").as_deref(),
        Some("personBySourceRecord")
    );
    let sources: BTreeSet<String> = calls
        .iter()
        .filter_map(|c| attribute(c, "source"))
        .collect();
    assert!(sources.contains("casetrak"), "{sources:?}");
    assert!(
        calls.iter().all(|c| c.parent_span_id == request.span_id),
        "source calls are children of the request"
    );
    assert!(calls
        .iter()
        .any(|c| attribute(c, "entity").as_deref() == Some("service")));
    for span in calls.iter().chain([&request]) {
        for a in &span.attributes {
            let v = format!("{:?}", a.value);
            assert!(!v.contains(&family) && !v.contains(&id), "{} = {v}", a.key);
        }
    }
}

fn escr(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_escr"))
        .args(args)
        .env_remove("ESCR_JWT_KEY")
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn serve_fails_at_once_on_a_missing_policy_or_a_port_in_use() {
    let work = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let config = serve_folder(work.path(), port, "");
    let c = config.to_str().unwrap();
    let (ok, _, err) = escr(&["--config", c, "serve"]);
    assert!(!ok);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(
        !err.contains("stack backtrace") && !err.contains("Stack backtrace"),
        "{err}"
    );
    assert!(
        !work.path().join("data/demo").exists(),
        "nothing generated before the port was checked"
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("policy = \"policy.toml\"\n", "");
    std::fs::write(&config, text).unwrap();
    let (ok, _, err) = escr(&["--config", c, "serve"]);
    assert!(!ok && err.contains("no `policy` file configured"), "{err}");
    assert!(!work.path().join("data/demo").exists());
}

#[test]
fn check_config_finds_what_would_fail_later() {
    let work = tempfile::tempdir().unwrap();
    let config = serve_folder(work.path(), free_port(), "");
    let c = config.to_str().unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    // Generated on first run: nothing missing yet counts, and the summary names sources.
    let (ok, out, err) = escr(&["--config", c, "check-config"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("(3 sources: casetrak, opencare, ssis)"),
        "{out}"
    );

    // Not generated: a missing database file, an opt-out file, an unset password
    // variable; no policy at all.
    let broken = text
        .replace("seed = 5\n", "seed = 5\ngenerate_if_missing = false\n")
        .replace(
            "sqlite = { path = \"data/demo/opencare.db\" }",
            "mysql = { host = \"127.0.0.1\", database = \"oc\", user = \"escr\", password_env = \"ESCR_TEST_UNSET_PASSWORD\" }",
        );
    std::fs::write(&config, &broken).unwrap();
    let (ok, out, err) = escr(&["--config", c, "check-config"]);
    assert!(!ok);
    assert!(!err.contains("backtrace"), "{err}");
    let line_of = |t: &str, needle: &str| t[..t.find(needle).unwrap()].lines().count() + 1;
    assert!(out.contains("national_opt_out.file` names"), "{out}");
    let casetrak_line = line_of(&broken, "[[sources]]\nname = \"casetrak\"");
    assert!(
        out.contains(&format!(
            "escr.toml:{casetrak_line}: `sources[casetrak].sqlite.path` names"
        )),
        "{out}"
    );
    assert!(
        out.contains("ESCR_TEST_UNSET_PASSWORD, which is not set"),
        "{out}"
    );
    assert!(
        err.contains("problems (3 sources: casetrak, opencare, ssis)"),
        "{err}"
    );
    std::fs::write(&config, broken.replace("policy = \"policy.toml\"\n", "")).unwrap();
    let (ok, out, _) = escr(&["--config", c, "check-config"]);
    assert!(!ok && out.contains("no `policy`"), "{out}");

    // A profile naming a missing file, or a missing policy file: the key that named it.
    std::fs::write(
        &config,
        text.replace("policy = \"policy.toml\"", "policy = \"nowhere.toml\""),
    )
    .unwrap();
    let (ok, _, err) = escr(&["--config", c, "check-config"]);
    assert!(
        !ok && err.contains("escr.toml:1: `policy` names") && err.contains("nowhere.toml"),
        "{err}"
    );

    // --connect: each profile statement runs; a missing table is named with the
    // engine's words, per source and entity.
    std::fs::write(&config, &text).unwrap();
    let (ok, _, err) = escr(&["--config", c, "index"]);
    assert!(ok, "{err}");
    let (ok, out, err) = escr(&["--config", c, "check-config", "--connect"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("source `casetrak`: connected"), "{out}");
    rusqlite::Connection::open(work.path().join("data/demo/casetrak.db"))
        .unwrap()
        .execute_batch("DROP TABLE SVC_PKG")
        .unwrap();
    let (ok, out, _) = escr(&["--config", c, "check-config", "--connect"]);
    assert!(!ok);
    assert!(
        out.contains("casetrak.toml:")
            && out.contains("source `casetrak`, entity `service`, `by_person`"),
        "{out}"
    );
    assert!(out.contains("no such table: SVC_PKG"), "{out}");
}

#[test]
fn token_for_a_person_checks_the_person_exists() {
    let work = tempfile::tempdir().unwrap();
    let config = serve_folder(work.path(), free_port(), "");
    let c = config.to_str().unwrap();
    let (ok, _, err) = escr(&[
        "--config", c, "token", "--role", "person", "--person", "P000001",
    ]);
    assert!(!ok && err.contains("no identity index"), "{err}");
    let (ok, _, err) = escr(&["--config", c, "index"]);
    assert!(ok, "{err}");
    let (ok, _, err) = escr(&[
        "--config", c, "token", "--role", "person", "--person", "P999999",
    ]);
    assert!(!ok && err.contains("no such person"), "{err}");
    assert!(!err.contains("backtrace"), "{err}");
    let index = escr_gateway::identity::index::IdentityIndex::open_with(
        &work.path().join("data/index.db"),
        Default::default(),
    )
    .unwrap();
    let someone = index.snapshot().people.keys().next().unwrap().clone();
    let (ok, out, err) = escr(&[
        "--config", c, "token", "--role", "person", "--person", &someone,
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.trim().split('.').count(), 3, "{out}");
}

/// GraphQL over HTTP: a request error (parse, validation) is 400 with no `data` as
/// `application/graphql-response+json`, and 200 as `application/json`; the response's
/// media type follows `Accept`; a bare `application/graphql` body gets a clear error;
/// GET runs queries, never mutations; field errors keep 200 and their data.
#[tokio::test]
async fn graphql_over_http_status_codes_and_media_types() {
    let s = serve_with(demo::clean(), "", "", &[]).await;
    let graphql_response = "application/graphql-response+json";
    let media = |h: &reqwest::header::HeaderMap| {
        h.get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    for (query, code) in [
        ("{ searchPeople(", "GRAPHQL_PARSE_FAILED"),
        ("{ noSuchField }", "GRAPHQL_VALIDATION_FAILED"),
    ] {
        let body = json!({ "query": query });
        let (status, h, r) = s.post(body.clone(), &[("accept", graphql_response)]).await;
        assert_eq!((status, media(&h).as_str()), (400, graphql_response), "{r}");
        assert!(r.get("data").is_none(), "a request error has no data: {r}");
        assert!(r["errors"][0]["message"].is_string(), "{r}");
        let (status, h, r) = s.post(body, &[("accept", "application/json")]).await;
        assert_eq!(
            (status, media(&h).as_str()),
            (200, "application/json"),
            "{code}: {r}"
        );
        assert!(r["errors"][0]["message"].is_string(), "{r}");
    }
    // Preference by q-value; nothing acceptable is 406.
    let ok = json!({"query": SEARCH, "variables": {"n": "a"}});
    let (status, h, _) = s
        .post(
            ok.clone(),
            &[(
                "accept",
                "application/json;q=0.5, application/graphql-response+json",
            )],
        )
        .await;
    assert_eq!((status, media(&h).as_str()), (200, graphql_response));
    let (status, h, _) = s
        .post(
            ok.clone(),
            &[(
                "accept",
                "application/graphql-response+json;q=0.2, application/json",
            )],
        )
        .await;
    assert_eq!((status, media(&h).as_str()), (200, "application/json"));
    let (status, _, _) = s.post(ok.clone(), &[("accept", "text/html")]).await;
    assert_eq!(status, 406);
    // A field error is no request error: 200 with the data there is.
    let (status, _, r) = s
        .post(
            json!({"query": "{ a: searchPeople(name: \"a\", first: 1) { totalCount } b: searchPeople { totalCount } }"}),
            &[("accept", graphql_response)],
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert!(r.get("data").is_some(), "{r}");
    assert_eq!(r["errors"][0]["path"], json!(["b"]), "{r}");

    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/graphql", s.url))
        .bearer_auth(s.token("safeguarding_lead", "http"))
        .header("x-purpose-of-use", "safeguarding")
        .header("content-type", "application/graphql")
        .body("{ __typename }")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let v: Value = r.json().await.unwrap();
    let message = v["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("application/graphql") && message.contains("\"query\""),
        "{message}"
    );

    let get = |params: Vec<(&'static str, String)>| {
        client
            .get(format!("{}/graphql", s.url))
            .bearer_auth(s.token("safeguarding_lead", "get"))
            .header("x-purpose-of-use", "safeguarding")
            .query(&params)
            .send()
    };
    let r = get(vec![
        ("query", SEARCH.into()),
        ("variables", "{\"n\":\"a\"}".into()),
    ])
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["data"]["searchPeople"]["totalCount"].as_i64().unwrap() > 0,
        "{v}"
    );
    let mutation = "mutation { withdrawConsent(id: \"1\", reason: \"x\") { id } }";
    let r = get(vec![("query", mutation.into())]).await.unwrap();
    assert_eq!(r.status(), 405);
    // The operation GET would run decides, not the first in the document.
    let both = format!("query Q {{ __typename }} {mutation}").replace("mutation {", "mutation M {");
    let r = get(vec![("query", both.clone()), ("operationName", "M".into())])
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let r = get(vec![("query", both), ("operationName", "Q".into())])
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
