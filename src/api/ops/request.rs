//! Every HTTP request: its id (`X-Request-Id`, accepted from a router in front or
//! created, and returned), its span (with the W3C `traceparent` it came with as the
//! parent), and its count and latency by route and status. Nothing personal goes into
//! the span or the labels: the route template, the method and the status only.

use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::Extractor;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The request's id, for the handlers (audit) and the response.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

impl RequestId {
    /// A fresh id that cannot be guessed or collide across restarts.
    pub fn new() -> RequestId {
        let mut id = [0u8; 16];
        let _ = aws_lc_rs::rand::fill(&mut id);
        RequestId(id.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The id a router in front sent, when it is one we can log and store safely
    /// (letters, digits, `-_.:`, at most 128): anything else is replaced, never echoed.
    fn accept(headers: &HeaderMap) -> Option<RequestId> {
        let given = headers.get(REQUEST_ID_HEADER)?.to_str().ok()?;
        let ok = !given.is_empty()
            && given.len() <= 128
            && given
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
        ok.then(|| RequestId(given.to_string()))
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The route for labels and spans: one of the router's paths, never the client's own
/// text (which could be anything, personal data too).
fn route_label(path: &str) -> &'static str {
    if let Some(known) = crate::api::server::ROUTES.iter().find(|r| **r == path) {
        return known;
    }
    if path.starts_with(super::graphiql::ASSETS) {
        return super::graphiql::ASSETS;
    }
    if path.starts_with("/documents/") {
        // The id is sealed, but a label is a template, never a value.
        return crate::api::documents::CONTENT_ROUTE;
    }
    "other"
}

/// Middleware: id, span, metrics.
pub async fn observe(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = RequestId::accept(request.headers()).unwrap_or_default();
    let route = route_label(request.uri().path()).to_string();
    let method = request.method().as_str().to_string();
    let span = tracing::info_span!(
        "request",
        request_id = %id.0,
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        graphql.operation = tracing::field::Empty,
    );
    // A caller's trace continues here (W3C trace context); without one, a new trace.
    let parent =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(request.headers())));
    let _ = span.set_parent(parent);
    request.extensions_mut().insert(id.clone());
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    if let Ok(value) = HeaderValue::from_str(&id.0) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let labels = [
        ("route", route),
        ("method", method),
        ("status", status.to_string()),
    ];
    metrics::counter!("escr_http_requests_total", &labels).increment(1);
    metrics::histogram!("escr_http_request_seconds", &labels[..2])
        .record(started.elapsed().as_secs_f64());
    response
}
