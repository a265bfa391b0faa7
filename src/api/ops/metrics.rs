//! Prometheus metrics on `GET /metrics` (metrics-exporter-prometheus behind the
//! `metrics` facade, so `record/` counts its source calls and cache without knowing
//! HTTP). Labels are routes, statuses, operations (root field names of a valid
//! document), outcomes, source and entity names, decision codes: never a value a
//! client sent or a person's data.

use std::sync::OnceLock;

use async_graphql::parser::types::{ExecutableDocument, Selection};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// The process's recorder (one per process: the `metrics` facade is global).
pub fn handle() -> &'static Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let seconds = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0,
        ];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
            .ok()?
            .build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).ok()?;
        Some(handle)
    })
}

/// `/metrics`: the gauges read now, then everything in the text format.
pub fn render(fetcher: &crate::record::loader::Fetcher) -> String {
    fetcher.record_gauges();
    match handle() {
        Some(h) => h.render(),
        None => String::new(),
    }
}

/// Decisions of one request by decision and code (`released`, `withheld`
/// `CONSENT_DENIED`, ...).
pub fn record_decisions(record: &crate::consent::audit::AuditRecord) {
    for d in &record.decisions {
        metrics::counter!(
            "escr_decisions_total",
            "decision" => d.decision.clone(),
            "code" => d.code.clone().unwrap_or_else(|| "none".into())
        )
        .increment(crate::consent::audit::AuditRecord::event_count(d));
    }
}

/// The root fields of a document (sorted, at most four, joined by `+`).
pub(crate) fn root_fields(doc: &ExecutableDocument) -> String {
    let mut names: Vec<&str> = doc
        .operations
        .iter()
        .flat_map(|(_, op)| op.node.selection_set.node.items.iter())
        .filter_map(|s| match &s.node {
            Selection::Field(f) => Some(f.node.name.node.as_str()),
            _ => None,
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    names.truncate(4);
    if names.is_empty() {
        "fragments".into()
    } else {
        names.join("+")
    }
}

/// One GraphQL request's operation and outcome, counted and timed (`operation` from
/// `parsed::ParsedDocuments::execute`: names of the schema only).
pub fn record_request(
    operation: String,
    response: &async_graphql::Response,
    elapsed: std::time::Duration,
) {
    let outcome = match (
        response.errors.is_empty(),
        response.data == async_graphql::Value::Null,
    ) {
        (true, _) => "ok",
        (false, false) => "partial",
        (false, true) => "error",
    };
    tracing::Span::current().record("graphql.operation", operation.as_str());
    let labels = [("operation", operation), ("outcome", outcome.to_string())];
    metrics::counter!("escr_graphql_requests_total", &labels).increment(1);
    metrics::histogram!("escr_graphql_request_seconds", &labels[..1]).record(elapsed.as_secs_f64());
}
