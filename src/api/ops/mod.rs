//! What a platform team needs to run the gateway, around the API: request ids, spans
//! and metrics per request ([`request`]), CORS, compression, time and concurrency
//! limits (tower-http, tower), rate limits ([`limits`]), Prometheus metrics
//! ([`metrics`]), parsed documents kept by their text ([`parsed`]), logs and traces
//! ([`telemetry`]), GraphQL requests over HTTP and trusted documents ([`documents`]),
//! and GraphiQL from pinned assets ([`graphiql`]).
//! `server.rs` wires these around its routes.

pub mod documents;
pub mod graphiql;
pub mod limits;
pub mod metrics;
pub mod parsed;
pub mod request;
pub mod telemetry;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::ServerConfig;

/// `api` (the routes that serve data, limited) and `open` (health, readiness, metrics:
/// never limited, so probes and scrapes see an overloaded gateway as it is), with the
/// layers around them. Outermost first: request id, span and metrics; CORS;
/// compression; then, for `api` only, the time limit, the per-address rate limit and
/// the concurrency limit.
pub fn layers(
    api: Router,
    open: Router,
    server: &ServerConfig,
    limits: Arc<limits::Limits>,
    request_headers: &[String],
) -> Router {
    let l = &server.limits;
    let api = api
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            l.max_concurrent_requests,
        ))
        .layer(axum::middleware::from_fn_with_state(
            limits,
            limits::per_address,
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            Duration::from_secs(l.request_timeout_secs),
        ));
    let mut app = api.merge(open);
    if l.compression {
        app = app.layer(tower_http::compression::CompressionLayer::new());
    }
    app.layer(cors(server, request_headers))
        .layer(axum::middleware::from_fn(request::observe))
}

/// Web pages of the configured origins may call the API; others get no CORS headers
/// (so browsers refuse them). Preflights are answered either way.
fn cors(server: &ServerConfig, request_headers: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = server
        .cors_origins
        .iter()
        .filter_map(|o| o.parse().ok())
        .collect();
    let mut allowed_headers = vec![
        header::AUTHORIZATION,
        header::CONTENT_TYPE,
        HeaderName::from_static(request::REQUEST_ID_HEADER),
        HeaderName::from_static("traceparent"),
        HeaderName::from_static("tracestate"),
    ];
    // The policy's purpose and break-glass headers.
    allowed_headers.extend(
        request_headers
            .iter()
            .filter_map(|h| HeaderName::try_from(h.to_ascii_lowercase()).ok()),
    );
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers(allowed_headers)
        .expose_headers([
            HeaderName::from_static(request::REQUEST_ID_HEADER),
            header::RETRY_AFTER,
        ])
        .max_age(Duration::from_secs(600))
}
