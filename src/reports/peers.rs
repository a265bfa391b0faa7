//! Other councils' indicators, from their own gateways: each council's gateway is a
//! subgraph answering the `Authority` federation entity for its councils, so asking it
//! `_entities` for one moves aggregates only, already suppressed by the peer, under the
//! peer's token and policy and with the caller's purpose.

use std::time::Duration;

use serde::Deserialize;

use super::config::PeerConfig;
use super::indicators::{Unit, INDICATORS};
use super::suppress::{Exclusion, IndicatorResult, OptOutNote};
use super::{Period, ReportError};
use crate::consent::access::AccessContext;
use crate::consent::context::purpose_name;

const QUERY: &str = "query($r: [_Any!]!, $p: String!) { _entities(representations: $r) { ... on Authority { indicators(period: $p) { authority period id name numerator denominator value suppressed numeratorSuppressed denominatorSuppressed valueSuppressed excluded excludedSuppressed exclusions { reason count suppressed } optOut { listedUnmatched withoutNhsNumber withoutNhsNumberLeftOut } } } } }";

/// An indicator as a peer publishes it (the unit is known from the id).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PeerIndicator {
    authority: String,
    period: String,
    id: String,
    name: String,
    numerator: Option<u64>,
    denominator: Option<u64>,
    value: Option<f64>,
    suppressed: bool,
    numerator_suppressed: bool,
    denominator_suppressed: bool,
    value_suppressed: bool,
    excluded: Option<u64>,
    excluded_suppressed: bool,
    exclusions: Vec<Exclusion>,
    opt_out: Option<OptOutNote>,
}

/// The current span's W3C trace context as headers, so that the peer's spans join the
/// caller's trace (empty when traces are off).
fn trace_context() -> reqwest::header::HeaderMap {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    struct Headers(reqwest::header::HeaderMap);
    impl opentelemetry::propagation::Injector for Headers {
        fn set(&mut self, key: &str, value: String) {
            if let (Ok(k), Ok(v)) = (
                reqwest::header::HeaderName::try_from(key),
                reqwest::header::HeaderValue::try_from(value),
            ) {
                self.0.insert(k, v);
            }
        }
    }
    let context = tracing::Span::current().context();
    let mut headers = Headers(reqwest::header::HeaderMap::new());
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut headers));
    headers.0
}

/// The peer's published indicators for `authority` and `period`.
pub async fn indicators(
    authority: &str,
    peer: &PeerConfig,
    ctx: &AccessContext,
    period: Period,
) -> Result<Vec<IndicatorResult>, ReportError> {
    let fail = |reason: String| ReportError::Peer(authority.to_string(), reason);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let body = serde_json::json!({
        "query": QUERY,
        "variables": {"r": [{"__typename": "Authority", "name": authority}], "p": period.label()},
    });
    let mut request = client
        .post(&peer.url)
        .header("X-Purpose-Of-Use", purpose_name(ctx.purpose))
        .json(&body);
    if let Some(token) = peer.token_env.as_ref().and_then(|v| std::env::var(v).ok()) {
        request = request.bearer_auth(token);
    }
    request = request.headers(trace_context());
    let response = request
        .send()
        .await
        .map_err(|e| fail(format!("no answer ({})", e.without_url())))?;
    let status = response.status();
    let answer: serde_json::Value = response
        .json()
        .await
        .map_err(|_| fail(format!("answered {status} without JSON")))?;
    if let Some(error) = answer["errors"].get(0) {
        return Err(fail(format!(
            "{} ({})",
            error["message"].as_str().unwrap_or("an error"),
            error["extensions"]["code"].as_str().unwrap_or("no code")
        )));
    }
    let entity = &answer["data"]["_entities"][0];
    if entity.is_null() {
        return Err(fail("it does not report on this authority".into()));
    }
    let rows: Vec<PeerIndicator> = serde_json::from_value(entity["indicators"].clone())
        .map_err(|e| fail(format!("an unexpected answer ({e})")))?;
    Ok(rows
        .into_iter()
        .map(|r| IndicatorResult {
            unit: INDICATORS
                .iter()
                .find(|i| i.0 == r.id)
                .map_or(Unit::Percent, |i| i.2),
            authority: r.authority,
            period: r.period,
            id: r.id,
            name: r.name,
            numerator: r.numerator,
            denominator: r.denominator,
            value: r.value,
            suppressed: r.suppressed,
            numerator_suppressed: r.numerator_suppressed,
            denominator_suppressed: r.denominator_suppressed,
            value_suppressed: r.value_suppressed,
            excluded: r.excluded,
            excluded_suppressed: r.excluded_suppressed,
            exclusions: r.exclusions,
            opt_out: r.opt_out,
        })
        .collect())
}
