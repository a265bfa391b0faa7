//! HTTP: `POST /graphql`, GraphiQL on `GET /graphql`, `/healthz`, `/readyz`.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::http::GraphiQLSource;
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Json};
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use crate::access::AccessContext;
use crate::gateway::Gateway;
use crate::graphql::EscrSchema;

#[derive(Clone)]
pub struct AppState {
    pub gateway: Arc<Gateway>,
    pub schema: EscrSchema,
}

pub fn router(gateway: Arc<Gateway>) -> Router {
    let schema = crate::graphql::build(Some(gateway.clone()));
    Router::new()
        .route("/graphql", get(graphiql).post(graphql))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/reports/data-quality.csv", get(data_quality_csv))
        .with_state(AppState { gateway, schema })
}

async fn graphql(State(state): State<AppState>, request: GraphQLRequest) -> GraphQLResponse {
    let request = request
        .into_inner()
        .data(state.gateway.request_loaders())
        .data(AccessContext::demo());
    state.schema.execute(request).await.into()
}

/// The data-quality report as CSV (counts and vendor code values only).
async fn data_quality_csv(State(state): State<AppState>) -> impl IntoResponse {
    let report = crate::quality::build(&state.gateway).await;
    (
        [(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        crate::quality::to_csv(&report),
    )
}

const EXAMPLE_QUERY: &str = r#"# escr-gateway demo. Try:
query Demo {
  searchPeople(name: "smi", first: 3) {
    totalCount
    edges { node { id name { family given } birthDate sourceRecords { source localId linkRule } } }
  }
}
"#;

async fn graphiql() -> impl IntoResponse {
    let page = GraphiQLSource::build()
        .endpoint("/graphql")
        .title("escr-gateway")
        .finish();
    // Pre-fill the editor with a query that works on the demo data.
    let page = page.replacen(
        "</head>",
        &format!(
            "<script>if (!localStorage.getItem('graphiql:query')) localStorage.setItem('graphiql:query', {});</script></head>",
            serde_json::to_string(EXAMPLE_QUERY).unwrap_or_default()
        ),
        1,
    );
    Html(page)
}

#[derive(Serialize)]
struct SourceStatus {
    name: String,
    engine: &'static str,
    up: bool,
    /// Why it is down (kind and a general reason; never SQL or credentials).
    reason: Option<String>,
    latency_ms: u128,
}

#[derive(Serialize)]
struct Ready {
    ready: bool,
    people: usize,
    sources: Vec<SourceStatus>,
    cache: crate::loader::CacheStats,
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let fetcher = &state.gateway.fetcher;
    let checks = fetcher.sources.iter().map(|s| async move {
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(Duration::from_secs(2), s.connector.ping()).await;
        let reason = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("no answer within 2 s".to_string()),
        };
        SourceStatus {
            name: s.name.clone(),
            engine: s.connector.engine(),
            up: reason.is_none(),
            reason,
            latency_ms: started.elapsed().as_millis(),
        }
    });
    let sources = futures::future::join_all(checks).await;
    // Ready while any source serves: partial results are the design, not a failure.
    let ready = sources.iter().any(|s| s.up);
    let body = Ready {
        ready,
        people: state.gateway.index.snapshot().person_count(),
        sources,
        cache: fetcher.cache_stats(),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
