//! Rate limits (governor's GCRA): per client address before anything else runs, and
//! per caller once the token is verified. A request over its limit gets 429 with
//! `Retry-After` and a JSON error, and costs nothing further.

use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::config::LimitsConfig;

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>;

/// One keyed limiter; its state is pruned now and then so that keys seen once do not
/// stay for ever.
struct Limiter<K: Hash + Eq + Clone> {
    limiter: Keyed<K>,
    checks: AtomicU64,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    fn new(per_minute: u32, burst: u32) -> Option<Limiter<K>> {
        let rate = NonZeroU32::new(per_minute)?;
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        Some(Limiter {
            limiter: RateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst)),
            checks: AtomicU64::new(0),
        })
    }

    /// `Err(seconds to wait)` when `key` is over its limit.
    fn check(&self, key: &K) -> Result<(), u64> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }
}

pub struct Limits {
    per_address: Option<Limiter<IpAddr>>,
    per_caller: Option<Limiter<String>>,
    address_header: Option<HeaderName>,
}

impl Limits {
    pub fn new(config: &LimitsConfig) -> Limits {
        Limits {
            per_address: Limiter::new(config.per_address_per_minute, config.burst),
            per_caller: Limiter::new(config.per_caller_per_minute, config.burst),
            address_header: config
                .client_address_header
                .as_deref()
                .and_then(|h| h.parse().ok()),
        }
    }

    /// The caller (a verified token's subject) over its limit: `Err(seconds to wait)`
    /// (answer with [`too_many`]).
    pub fn check_caller(&self, user: &str) -> Result<(), u64> {
        match &self.per_caller {
            Some(l) => l.check(&user.to_string()),
            None => Ok(()),
        }
    }

    /// The client's address: the proxy's header when one is configured (its first
    /// address), else the peer's.
    fn client_address(&self, request: &Request) -> Option<IpAddr> {
        if let Some(header) = &self.address_header {
            let forwarded = request
                .headers()
                .get(header)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.trim().parse().ok());
            if forwarded.is_some() {
                return forwarded;
            }
        }
        request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
    }
}

/// Middleware: the per-address limit, before the request is parsed or authenticated.
pub async fn per_address(
    State(limits): State<Arc<Limits>>,
    request: Request,
    next: Next,
) -> Response {
    if let (Some(limiter), Some(address)) = (&limits.per_address, limits.client_address(&request)) {
        if let Err(wait) = limiter.check(&address) {
            return too_many("this address", wait);
        }
    }
    next.run(request).await
}

/// The 429 for `who` (`this caller`, `this address`), with `Retry-After`.
pub fn too_many(who: &str, wait_secs: u64) -> Response {
    let wait = wait_secs.max(1);
    metrics::counter!("escr_rate_limited_total", "key" => if who == "this caller" { "caller" } else { "address" })
        .increment(1);
    let body = serde_json::json!({
        "errors": [{
            "message": format!("too many requests from {who}: try again in {wait} s"),
            "extensions": {"code": "RATE_LIMITED", "retryAfterSeconds": wait}
        }]
    });
    let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(wait));
    response
}
