//! What the gateway has seen of each source: the last call's outcome, and whether the
//! identity index holds a complete listing of its people. `/readyz`, metrics and the
//! errors of index-based answers read it; it knows no HTTP.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A source as the last calls found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceState {
    Up,
    /// It answers, but a recent statement failed or the index lacks its people.
    Degraded,
    Down,
}

#[derive(Default)]
struct Seen {
    /// The last failure (kind and the general reason; never SQL or values) and when.
    last_error: Option<(String, Instant)>,
    last_ok: Option<Instant>,
    /// The last index refresh could not list its people.
    listing_failed: bool,
}

#[derive(Default)]
pub struct SourceHealth {
    seen: Mutex<Seen>,
}

/// A failure counts against a source for this long after a later success.
const DEGRADED_FOR: Duration = Duration::from_secs(60);

impl SourceHealth {
    pub fn succeeded(&self) {
        self.lock().last_ok = Some(Instant::now());
    }

    pub fn failed(&self, reason: String) {
        self.lock().last_error = Some((reason, Instant::now()));
    }

    pub fn listing(&self, ok: bool) {
        self.lock().listing_failed = !ok;
    }

    /// True when the identity index may lack some of its people.
    pub fn listing_failed(&self) -> bool {
        self.lock().listing_failed
    }

    /// The state given whether it answers a ping now, and why not if it is not up.
    pub fn state(&self, answers: bool) -> (SourceState, Option<String>) {
        let seen = self.lock();
        if !answers {
            return (SourceState::Down, None);
        }
        if seen.listing_failed {
            return (
                SourceState::Degraded,
                Some("the identity index could not list its people at the last refresh: searches may miss them".into()),
            );
        }
        match &seen.last_error {
            Some((reason, at))
                if at.elapsed() < DEGRADED_FOR || seen.last_ok.is_none_or(|ok| ok < *at) =>
            {
                (
                    SourceState::Degraded,
                    Some(format!(
                        "a statement failed {} s ago: {reason}",
                        at.elapsed().as_secs()
                    )),
                )
            }
            _ => (SourceState::Up, None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}
