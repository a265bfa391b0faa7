//! HTTP: `POST /graphql`, GraphiQL on `GET /graphql`, `/healthz`, `/readyz`.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::http::GraphiQLSource;
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Json};
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use crate::api::gateway::Gateway;
use crate::api::graphql::EscrSchema;
use crate::consent::access::{AccessContext, RequestScope};

#[derive(Clone)]
pub struct AppState {
    pub gateway: Arc<Gateway>,
    pub schema: EscrSchema,
}

pub fn router(gateway: Arc<Gateway>) -> Router {
    let schema = crate::api::graphql::build(Some(gateway.clone()));
    Router::new()
        .route("/graphql", get(graphiql).post(graphql))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/reports/data-quality.csv", get(data_quality_csv))
        .route("/reports/mds.csv", get(mds_csv))
        .route("/reports/indicators.csv", get(indicators_csv))
        .route("/reports/indicators.json", get(indicators_json))
        .with_state(AppState { gateway, schema })
}

async fn graphql(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: GraphQLRequest,
) -> axum::response::Response {
    let caller = match caller(&state.gateway, &headers).await {
        Ok(caller) => caller,
        Err(refused) => return refused,
    };
    let response = execute(&state.gateway, &state.schema, caller, request.into_inner()).await;
    GraphQLResponse::from(response).into_response()
}

/// Who is asking, from the request's token; a refusal (already audited) otherwise.
async fn caller(
    gateway: &Gateway,
    headers: &HeaderMap,
) -> Result<AccessContext, axum::response::Response> {
    match &gateway.access {
        // In-process tests and benches without a policy (`serve` always has one): the
        // demo caller, with the purpose the request names.
        None => {
            let mut demo = AccessContext::demo();
            if let Some(p) = headers
                .get("x-purpose-of-use")
                .and_then(|v| v.to_str().ok())
                .and_then(crate::consent::context::purpose_from_name)
            {
                demo.purpose = p;
            }
            Ok(demo)
        }
        Some(access) => {
            match crate::consent::auth::access_context_from_headers(headers, &access.auth) {
                Ok(caller) => Ok(caller),
                Err(e) => Err(refuse(access, e).await),
            }
        }
    }
}

/// A request without an acceptable token: no data, an error with a code, audited.
async fn refuse(
    access: &crate::consent::AccessControl,
    e: crate::consent::auth::AuthError,
) -> axum::response::Response {
    let request_id = crate::consent::audit::RequestAudit::new().request_id;
    let event = crate::consent::audit::refusal(&request_id, "", e.code(), &e.to_string());
    if let Err(err) = access.audit.append(vec![event]).await {
        tracing::warn!(error = %err, "audit write failed");
    }
    let status = match e {
        crate::consent::auth::AuthError::PurposeNotPermitted { .. }
        | crate::consent::auth::AuthError::BreakGlass(_) => StatusCode::FORBIDDEN,
        _ => StatusCode::UNAUTHORIZED,
    };
    let body = serde_json::json!({
        "data": null,
        "errors": [{"message": e.to_string(), "extensions": {"code": e.code()}}]
    });
    (status, Json(body)).into_response()
}

/// Run one GraphQL request for `caller` with fresh loaders and a fresh request scope,
/// and make its audit events durable before the response is returned. When the audit
/// cannot be written, the response carries no data.
pub async fn execute(
    gateway: &Arc<Gateway>,
    schema: &EscrSchema,
    caller: AccessContext,
    request: async_graphql::Request,
) -> async_graphql::Response {
    let scope = Arc::new(RequestScope::default());
    let request = request
        .data(gateway.request_loaders())
        .data(caller.clone())
        .data(scope.clone());
    let mut response = schema.execute(request).await;
    if let Some(access) = &gateway.access {
        if let Err(e) = access.audit.append(scope.audit.events(&caller)).await {
            tracing::error!(error = %e, "audit write failed: response withheld");
            let mut err = async_graphql::ServerError::new(
                "the audit log cannot be written: nothing is released",
                None,
            );
            let mut ext = async_graphql::ErrorExtensionValues::default();
            ext.set("code", "AUDIT_UNAVAILABLE");
            err.extensions = Some(ext);
            return async_graphql::Response::from_errors(vec![err]);
        }
        response.extensions.insert(
            "auditRequestId".into(),
            async_graphql::Value::String(scope.audit.request_id.clone()),
        );
    }
    response
}

/// The data-quality report as CSV (counts and vendor code values only).
/// For data stewards only, like `dataQualityReport`.
async fn data_quality_csv(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> axum::response::Response {
    let caller = match caller(&state.gateway, &headers).await {
        Ok(caller) => caller,
        Err(refused) => return refused,
    };
    if caller.role != crate::api::graphql::linkage::STEWARD_ROLE {
        let body = serde_json::json!({
            "errors": [{"message": "the data-quality report is for data stewards", "extensions": {"code": "FORBIDDEN"}}]
        });
        return (StatusCode::FORBIDDEN, Json(body)).into_response();
    }
    let report =
        crate::identity::quality::build(&state.gateway.index, &state.gateway.fetcher.sources).await;
    (
        [(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        crate::identity::quality::to_csv(&report),
    )
        .into_response()
}

/// Query string of the report endpoints.
#[derive(serde::Deserialize)]
struct ReportQuery {
    period: Option<String>,
    /// One authority (`mds.csv`) or several, comma-separated (`indicators.*`); all when
    /// absent.
    authority: Option<String>,
    authorities: Option<String>,
}

impl ReportQuery {
    fn authorities(&self) -> Option<Vec<String>> {
        let list = self.authorities.as_deref().or(self.authority.as_deref())?;
        Some(
            list.split(',')
                .map(|a| a.trim().to_string())
                .filter(|a| !a.is_empty())
                .collect(),
        )
    }
}

/// A report refused or failed before any data left: the error with its code, the
/// refusal audited.
async fn report_error(
    gateway: &Gateway,
    caller: &AccessContext,
    e: crate::reports::ReportError,
) -> axum::response::Response {
    if matches!(e.code(), "PURPOSE_NOT_PERMITTED") {
        if let Some(access) = &gateway.access {
            let request_id = crate::consent::audit::RequestAudit::new().request_id;
            let event =
                crate::consent::audit::refusal(&request_id, &caller.user, e.code(), &e.to_string());
            if let Err(err) = access.audit.append(vec![event]).await {
                tracing::warn!(error = %err, "audit write failed");
            }
        }
    }
    let body = serde_json::json!({
        "errors": [{"message": e.to_string(), "extensions": {"code": e.code()}}]
    });
    (e.status(), Json(body)).into_response()
}

/// Who may run a report, for which period and authorities (`peers`: other gateways'
/// authorities too, for aggregates): checked before the first byte, so refusals and
/// bad input get a status and a JSON error.
async fn report_request(
    state: &AppState,
    headers: &HeaderMap,
    query: &ReportQuery,
    peers: bool,
) -> Result<(AccessContext, crate::reports::Period, Vec<String>), axum::response::Response> {
    let caller = caller(&state.gateway, headers).await?;
    let estate = state.gateway.estate();
    let checked = (|| {
        let reports = crate::reports::run::authorise(&estate, &caller)?;
        let period = crate::reports::Period::parse(query.period.as_deref().unwrap_or_default())?;
        let authorities = crate::reports::run::authorities(
            &estate,
            reports,
            query.authorities().as_deref(),
            peers,
        )?;
        Ok((period, authorities))
    })();
    match checked {
        Ok((period, authorities)) => Ok((caller, period, authorities)),
        Err(e) => Err(report_error(&state.gateway, &caller, e).await),
    }
}

/// The minimum data set as CSV, streamed page by page.
async fn mds_csv(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<ReportQuery>,
) -> axum::response::Response {
    let (caller, period, authorities) = match report_request(&state, &headers, &query, false).await
    {
        Ok(r) => r,
        Err(refused) => return refused,
    };
    if let Err(e) = crate::reports::run::check_sources(&state.gateway.estate(), &authorities).await
    {
        return report_error(&state.gateway, &caller, e).await;
    }
    let stream = crate::reports::run::mds_csv(state.gateway.estate(), caller, period, authorities);
    (
        [
            (
                axum::http::header::CONTENT_TYPE,
                "text/csv; charset=utf-8".to_string(),
            ),
            (
                axum::http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"mds-{}.csv\"", period.label()),
            ),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

async fn indicators_for(
    state: &AppState,
    headers: &HeaderMap,
    query: &ReportQuery,
) -> Result<Vec<crate::reports::suppress::IndicatorResult>, axum::response::Response> {
    let (caller, period, authorities) = report_request(state, headers, query, true).await?;
    match crate::reports::run::indicators(
        &state.gateway.estate(),
        &caller,
        period,
        Some(&authorities),
    )
    .await
    {
        Ok(rows) => Ok(rows),
        Err(e) => Err(report_error(&state.gateway, &caller, e).await),
    }
}

async fn indicators_json(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<ReportQuery>,
) -> axum::response::Response {
    match indicators_for(&state, &headers, &query).await {
        Ok(rows) => Json(serde_json::json!({ "indicators": rows })).into_response(),
        Err(response) => response,
    }
}

async fn indicators_csv(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<ReportQuery>,
) -> axum::response::Response {
    match indicators_for(&state, &headers, &query).await {
        Ok(rows) => {
            let mut text = crate::reports::suppress::csv_header().to_string();
            text.extend(rows.iter().map(crate::reports::suppress::csv_row));
            (
                [(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")],
                text,
            )
                .into_response()
        }
        Err(response) => response,
    }
}

const EXAMPLE_QUERY: &str = r#"# escr-gateway demo. Every request needs a token and a purpose of use:
#   cargo run -- token --role team_manager --team 3 --worker 7 --purpose care_management
# then open the Headers pane below and paste
#   { "Authorization": "Bearer <the token>", "X-Purpose-Of-Use": "care_management" }
# Try:
query Demo {
  searchPeople(name: "smi", first: 3) {
    totalCount
    edges { node { id name { family given } birthDate sourceRecords { source localId linkRule } } }
  }
}

# Reports (a token from `cargo run -- token --role analyst --purpose planning`, and
# "X-Purpose-Of-Use": "planning"): both demo councils side by side.
query Indicators {
  indicators(period: "2025-26") { authority id name numerator denominator value suppressed }
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
    /// The identity index's linkage model: how it was estimated, and whether a fitted
    /// model failed its checks so that the default m and u values are in use.
    linkage: Option<crate::identity::index::ModelStatus>,
    sources: Vec<SourceStatus>,
    cache: crate::record::loader::CacheStats,
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
        linkage: state.gateway.index.model_status(),
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
