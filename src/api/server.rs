//! HTTP: `POST /graphql` (and `GET` for queries), `/subgraph` (the regional subgraph
//! a federation router is given), GraphiQL on `GET /graphql`, `/healthz`, `/readyz`, `/metrics`, `/reports/*`, and documents'
//! content (`api::documents`). The operations concerns
//! around them (request ids, CORS, limits, metrics, traces, trusted documents) are in
//! `api/ops/`; this file wires them.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use crate::api::gateway::Gateway;
use crate::api::graphql::{EscrSchema, SubgraphSchema};
use crate::api::ops::request::RequestId;
use crate::api::ops::{self, documents, limits::Limits};
use crate::consent::access::{AccessContext, RequestScope};

#[derive(Clone)]
pub struct AppState {
    pub gateway: Arc<Gateway>,
    pub schema: Validating<EscrSchema>,
    /// The regional subgraph (`/subgraph`), for a federation router.
    pub subgraph: Validating<SubgraphSchema>,
    limits: Arc<Limits>,
}

/// A schema, and its twin with `ValidationMode::Fast` for requests it has validated
/// before (`ops::parsed`).
#[derive(Clone)]
pub struct Validating<S> {
    pub strict: S,
    pub validated: S,
}

impl<Q, M> Validating<async_graphql::Schema<Q, M, async_graphql::EmptySubscription>>
where
    Q: async_graphql::ObjectType + 'static,
    M: async_graphql::ObjectType + 'static,
{
    /// Both schemas from one builder function.
    fn build(
        make: impl Fn() -> async_graphql::SchemaBuilder<Q, M, async_graphql::EmptySubscription>,
    ) -> Self {
        Validating {
            strict: make().finish(),
            validated: make()
                .validation_mode(async_graphql::ValidationMode::Fast)
                .finish(),
        }
    }
}

/// The router's paths (metric labels and span names use only these).
pub const ROUTES: &[&str] = &[
    "/graphql",
    "/subgraph",
    "/healthz",
    "/readyz",
    "/metrics",
    "/reports/data-quality.csv",
    "/reports/mds.csv",
    "/reports/indicators.csv",
    "/reports/indicators.json",
];

pub fn router(gateway: Arc<Gateway>) -> Router {
    let server = gateway.server.clone();

    if server.metrics {
        // Installed before the first request so that every count is kept.
        let _ = ops::metrics::handle();
    }
    // No extensions: the request front (`ops::parsed`) does their work once per request.
    // Each with its twin for requests validated before (`ops::parsed`).
    let schema = Validating::build(|| crate::api::graphql::builder(Some(gateway.clone())));
    let limits = Arc::new(Limits::new(&server.limits));
    let subgraph =
        Validating::build(|| crate::api::graphql::subgraph_builder(Some(gateway.clone())));
    let state = AppState {
        gateway: gateway.clone(),
        schema,
        subgraph,
        limits: limits.clone(),
    };
    let api = Router::new()
        .route("/graphql", get(graphql_get).post(graphql))
        .route("/subgraph", get(subgraph_request).post(subgraph_request))
        .route("/reports/data-quality.csv", get(data_quality_csv))
        .route("/reports/mds.csv", get(mds_csv))
        .route("/reports/indicators.csv", get(indicators_csv))
        .route("/reports/indicators.json", get(indicators_json))
        .merge(crate::api::documents::routes())
        .with_state(state.clone())
        // Bodies past the limit are refused (413) before they are read: before parsing
        // and before the token is looked at.
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            server.max_body_bytes,
        ))
        .layer(axum::middleware::from_fn_with_state(
            server.max_header_bytes,
            header_limit,
        ));
    let mut open = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz));
    if server.metrics {
        open = open.route("/metrics", get(metrics));
    }
    if server.graphiql {
        open = open.route(
            &format!("{}/{{name}}", ops::graphiql::ASSETS),
            get(ops::graphiql::asset),
        );
    }
    let headers: Vec<String> = match &gateway.access {
        Some(a) => vec![
            a.config.auth.purpose_header.clone(),
            a.config.auth.break_glass_header.clone(),
        ],
        None => vec!["x-purpose-of-use".into()],
    };
    ops::layers(api, open.with_state(state), &server, limits, &headers)
}

fn json_error(status: StatusCode, code: &str, message: &str) -> axum::response::Response {
    let body = serde_json::json!({
        "data": null,
        "errors": [{"message": message, "extensions": {"code": code}}]
    });
    (status, Json(body)).into_response()
}

/// `GET /graphql`: a persisted document when the query string names one, else the
/// GraphiQL page (when it is on).
async fn graphql_get(
    state: State<AppState>,
    id: Extension<RequestId>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> axum::response::Response {
    if documents::is_graphql_get(uri.query()) {
        return graphql(state, id, method, uri, headers, Bytes::new()).await;
    }
    if state.gateway.server.graphiql {
        ops::graphiql::page()
    } else {
        json_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "GraphiQL is switched off here ([server] graphiql = false); POST GraphQL requests to /graphql",
        )
    }
}

/// Refuse requests whose headers (names and values) add up past the limit (431).
async fn header_limit(
    State(max): State<usize>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let size: usize = request
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if size > max {
        let body = serde_json::json!({
            "errors": [{"message": format!("request headers too large (at most {max} bytes)"), "extensions": {"code": "HEADERS_TOO_LARGE"}}]
        });
        return (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, Json(body)).into_response();
    }
    next.run(request).await
}

/// `/graphql`: the council's whole API.
async fn graphql(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let request = HttpGraphQL {
        id,
        method,
        uri,
        headers,
        body,
    };
    serve_graphql(&state, &state.schema, request).await
}

/// `/subgraph`: the regional subgraph a federation router plans over, with the same
/// caller checks as `/graphql`.
async fn subgraph_request(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let request = HttpGraphQL {
        id,
        method,
        uri,
        headers,
        body,
    };
    serve_graphql(&state, &state.subgraph, request).await
}

/// A GraphQL request as it came over HTTP.
struct HttpGraphQL {
    id: RequestId,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

/// The token is checked before the body is parsed: an anonymous caller costs no more
/// than reading its headers.
async fn serve_graphql<Q, M>(
    state: &AppState,
    schema: &Validating<async_graphql::Schema<Q, M, async_graphql::EmptySubscription>>,
    http: HttpGraphQL,
) -> axum::response::Response
where
    Q: async_graphql::ObjectType + 'static,
    M: async_graphql::ObjectType + 'static,
{
    let caller = match caller(state, &http.headers, &http.id).await {
        Ok(caller) => caller,
        Err(refused) => return refused,
    };
    let request = match documents::parse(
        &state.gateway.trusted_documents,
        &http.method,
        &http.headers,
        http.uri.query(),
        &http.body,
    ) {
        Ok(request) => request,
        Err(r) => return json_error(r.status, r.code, &r.message),
    };
    let response = execute_with(
        &state.gateway,
        &schema.strict,
        Some(&schema.validated),
        caller,
        request,
        Some(&http.id),
    )
    .await;
    documents::respond(&http.headers, response)
}

/// Who is asking, from the request's token, within their rate limit; a refusal
/// (already audited) otherwise.
pub(crate) async fn caller(
    state: &AppState,
    headers: &HeaderMap,
    id: &RequestId,
) -> Result<AccessContext, axum::response::Response> {
    let caller = match &state.gateway.access {
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
            demo
        }
        Some(access) => {
            match crate::consent::auth::access_context_from_headers(headers, &access.auth) {
                Ok(caller) => caller,
                Err(e) => return Err(refuse(access, e, id).await),
            }
        }
    };
    state
        .limits
        .check_caller(&caller.user)
        .map_err(|wait| ops::limits::too_many("this caller", wait))?;
    Ok(caller)
}

/// A request without an acceptable token: no data, an error with a code, audited.
async fn refuse(
    access: &crate::consent::AccessControl,
    e: crate::consent::auth::AuthError,
    id: &RequestId,
) -> axum::response::Response {
    let request_id = crate::consent::audit::RequestAudit::new().request_id;
    let mut record = crate::consent::audit::refusal(&request_id, "", e.code(), &e.to_string());
    record.http_request_id = Some(id.0.clone());
    if let Err(err) = access.audit.append(record).await {
        tracing::warn!(error = %err, "audit write failed");
    }
    use crate::consent::auth::AuthError;
    let status = match e {
        AuthError::PurposeNotPermitted { .. } | AuthError::BreakGlass(_) => StatusCode::FORBIDDEN,
        AuthError::UnknownPurpose { .. } => StatusCode::BAD_REQUEST,
        _ => StatusCode::UNAUTHORIZED,
    };
    json_error(status, e.code(), &e.to_string())
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
    execute_with(gateway, schema, None, caller, request, None).await
}

/// As [`execute`], for a request that came over HTTP with its `X-Request-Id`, which
/// goes into its audit events.
pub async fn execute_with<Q, M>(
    gateway: &Arc<Gateway>,
    schema: &async_graphql::Schema<Q, M, async_graphql::EmptySubscription>,
    validated: Option<&async_graphql::Schema<Q, M, async_graphql::EmptySubscription>>,
    caller: AccessContext,
    request: async_graphql::Request,
    http_request_id: Option<&RequestId>,
) -> async_graphql::Response
where
    Q: async_graphql::ObjectType + 'static,
    M: async_graphql::ObjectType + 'static,
{
    let mut scope = RequestScope::default();
    scope.audit.http_request_id = http_request_id.map(|id| id.0.clone());
    let scope = Arc::new(scope);
    let request = request
        .data(gateway.request_loaders())
        .data(caller.clone())
        .data(scope.clone())
        .data(crate::api::graphql::entities::EntityIndexes::default());
    let started = std::time::Instant::now();
    let (operation, mut response) = gateway.parsed.execute(schema, validated, request).await;
    ops::metrics::record_request(operation, &response, started.elapsed());
    if let Some(access) = &gateway.access {
        let record = scope.audit.record(&caller);
        let started = std::time::Instant::now();
        let written = match record {
            Some(record) => {
                ops::metrics::record_decisions(&record);
                access.audit.append(record).await
            }
            None => Ok(()),
        };
        metrics::histogram!("escr_audit_write_seconds").record(started.elapsed().as_secs_f64());
        if let Err(e) = written {
            tracing::error!(error = %e, "audit write failed: response withheld");
            let mut err = async_graphql::ServerError::new(
                "the audit log cannot be written: nothing is released",
                None,
            );
            let mut ext = async_graphql::ErrorExtensionValues::default();
            ext.set("code", crate::api::error::codes::AUDIT_UNAVAILABLE);
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

async fn metrics(State(state): State<AppState>) -> axum::response::Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        ops::metrics::render(&state.gateway.fetcher),
    )
        .into_response()
}

/// The data-quality report as CSV (counts and vendor code values only).
/// For data stewards only, like `dataQualityReport`.
async fn data_quality_csv(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
) -> axum::response::Response {
    let caller = match caller(&state, &headers, &id).await {
        Ok(caller) => caller,
        Err(refused) => return refused,
    };
    if caller.role != crate::api::graphql::linkage::STEWARD_ROLE {
        let body = serde_json::json!({
            "errors": [{"message": "the data-quality report is for data stewards", "extensions": {"code": crate::api::error::codes::FORBIDDEN}}]
        });
        return (StatusCode::FORBIDDEN, Json(body)).into_response();
    }
    let report =
        crate::identity::quality::build(&state.gateway.index, &state.gateway.fetcher.sources).await;
    (
        [(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        crate::reports::csv::quality(&report),
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
            let record =
                crate::consent::audit::refusal(&request_id, &caller.user, e.code(), &e.to_string());
            if let Err(err) = access.audit.append(record).await {
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
    id: &RequestId,
    headers: &HeaderMap,
    query: &ReportQuery,
    peers: bool,
) -> Result<(AccessContext, crate::reports::Period, Vec<String>), axum::response::Response> {
    let caller = caller(state, headers, id).await?;
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
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<ReportQuery>,
) -> axum::response::Response {
    let (caller, period, authorities) =
        match report_request(&state, &id, &headers, &query, false).await {
            Ok(r) => r,
            Err(refused) => return refused,
        };
    if let Err(e) = crate::reports::run::check_sources(&state.gateway.estate(), &authorities).await
    {
        return report_error(&state.gateway, &caller, e).await;
    }
    // The national data opt-out (the rows cannot say it): people without an NHS number
    // summed over the authorities; unmatched listed numbers are the gateway's, once.
    let mut notes = Vec::new();
    for a in &authorities {
        match crate::reports::run::mds_opt_out(&state.gateway.estate(), &caller, period, a) {
            Ok(note) => notes.extend(note),
            Err(e) => return report_error(&state.gateway, &caller, e).await,
        }
    }
    let count = |f: fn(&crate::reports::suppress::OptOutNote) -> Option<u64>| {
        notes
            .iter()
            .try_fold(0, |sum, n| Some(sum + f(n)?))
            .map_or_else(
                || crate::reports::suppress::MARKER.to_string(),
                |n: u64| n.to_string(),
            )
    };
    let opt_out = [
        (
            "x-opt-out-listed-unmatched",
            notes.first().and_then(|n| n.listed_unmatched).map_or_else(
                || crate::reports::suppress::MARKER.to_string(),
                |n| n.to_string(),
            ),
        ),
        ("x-without-nhs-number", count(|n| n.without_nhs_number)),
        (
            "x-without-nhs-number-left-out",
            notes
                .iter()
                .any(|n| n.without_nhs_number_left_out)
                .to_string(),
        ),
    ];
    let stream = crate::reports::run::mds_csv(state.gateway.estate(), caller, period, authorities);
    let mut response = (
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
        .into_response();
    for (name, value) in opt_out {
        if let Ok(v) = axum::http::HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, v);
        }
    }
    response
}

async fn indicators_for(
    state: &AppState,
    id: &RequestId,
    headers: &HeaderMap,
    query: &ReportQuery,
) -> Result<Vec<crate::reports::suppress::IndicatorResult>, axum::response::Response> {
    let (caller, period, authorities) = report_request(state, id, headers, query, true).await?;
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
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<ReportQuery>,
) -> axum::response::Response {
    match indicators_for(&state, &id, &headers, &query).await {
        Ok(rows) => Json(serde_json::json!({ "indicators": rows })).into_response(),
        Err(response) => response,
    }
}

async fn indicators_csv(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<ReportQuery>,
) -> axum::response::Response {
    match indicators_for(&state, &id, &headers, &query).await {
        Ok(rows) => {
            let text = crate::reports::suppress::csv(&rows);
            (
                [(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")],
                text,
            )
                .into_response()
        }
        Err(response) => response,
    }
}

#[derive(Serialize)]
struct SourceStatus {
    name: String,
    engine: &'static str,
    /// It answers a ping.
    up: bool,
    state: crate::record::health::SourceState,
    /// Why it is down or degraded (kind and a general reason; never SQL or credentials).
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
    /// The shared state store, when there is one (absent with SQLite).
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<StateStatus>,
}

#[derive(Serialize)]
struct StateStatus {
    backend: &'static str,
    up: bool,
    reason: Option<String>,
    latency_ms: u128,
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let fetcher = &state.gateway.fetcher;
    let checks = fetcher.sources.iter().map(|s| async move {
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(Duration::from_secs(2), s.connector.ping()).await;
        let down = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("no answer within 2 s".to_string()),
        };
        // Answering a ping is not the whole story: a failing statement, or people the
        // index could not list, make it degraded (with why).
        let (state, degraded) = s.health.state(down.is_none());
        SourceStatus {
            name: s.name.clone(),
            engine: s.connector.engine(),
            up: down.is_none(),
            state,
            reason: down.or(degraded),
            latency_ms: started.elapsed().as_millis(),
        }
    });
    let sources = futures::future::join_all(checks).await;
    // The shared state store: without it nothing can be audited, so nothing is served.
    let store = match &state.gateway.state {
        None => None,
        Some(pg) => {
            let started = std::time::Instant::now();
            let result = tokio::time::timeout(Duration::from_secs(2), pg.ping()).await;
            let reason = match result {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("no answer within 2 s".to_string()),
            };
            Some(StateStatus {
                backend: "postgres",
                up: reason.is_none(),
                reason,
                latency_ms: started.elapsed().as_millis(),
            })
        }
    };
    // Ready while any source serves: partial results are the design, not a failure.
    let ready = sources.iter().any(|s| s.up) && store.as_ref().is_none_or(|s| s.up);
    let body = Ready {
        ready,
        state: store,
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
