//! Batched, cached loading of source records.
//!
//! Per request, one batch per (source, entity, lookup) gathers the keys resolvers ask
//! for (see [`RequestLoaders`]). A batch first reads the shared cache of **unfiltered** mapped
//! records, keyed (source, entity, lookup, key); the misses go to the source as one
//! statement per chunk of the connector's max batch. Concurrent requests missing the
//! same key share one load (moka's single flight). Consent filtering happens after this,
//! per request (see `access`), so the cache never holds a filtered view.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use escr_connector::{EntityKind, Record};
use futures::FutureExt;
use moka::future::Cache;

use crate::record::source::{Lookup, Source, SourceError};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct CacheKey {
    source: usize,
    entity: EntityKind,
    lookup: Lookup,
    key: String,
}

/// One key's records, shared (the cache, the request and every field that shows them).
pub type Records = Arc<Vec<Arc<Record>>>;

/// Bytes a cache entry costs beyond its key and records (moka's entry and its nodes).
const ENTRY_OVERHEAD: usize = 256;

/// Shared by all requests: the sources and the cache of their mapped records.
pub struct Fetcher {
    pub sources: Vec<Source>,
    cache: Cache<CacheKey, Records>,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: u64,
    /// Weighed size of the cached records.
    pub bytes: u64,
}

impl Fetcher {
    pub fn new(sources: Vec<Source>, max_bytes: u64, ttl: Duration) -> Fetcher {
        let cache = Cache::builder()
            .weigher(|k: &CacheKey, v: &Records| -> u32 {
                // The entry's own keeping (moka's entry, key hash, deque and timer
                // nodes: an estimate from their types), its key, list and records.
                let bytes = ENTRY_OVERHEAD
                    + k.key.len().next_multiple_of(16)
                    + (v.len() * std::mem::size_of::<Arc<Record>>() + 48).next_multiple_of(16)
                    + v.iter().map(|r| r.weight()).sum::<usize>();
                bytes.min(u32::MAX as usize) as u32
            })
            .max_capacity(max_bytes)
            .time_to_live(ttl)
            .build();
        Fetcher {
            sources,
            cache,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn cache_stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.cache.entry_count(),
            bytes: self.cache.weighted_size(),
        }
    }

    /// Gauges read when metrics are scraped (cache size, each source's state as the
    /// last calls found it).
    pub fn record_gauges(&self) {
        let stats = self.cache_stats();
        metrics::gauge!("escr_cache_bytes").set(stats.bytes as f64);
        metrics::gauge!("escr_cache_entries").set(stats.entries as f64);
        for s in &self.sources {
            let (state, _) = s.health.state(true);
            let up = matches!(state, crate::record::health::SourceState::Up);
            metrics::gauge!("escr_source_up", "source" => s.name.clone()).set(if up {
                1.0
            } else {
                0.0
            });
        }
    }

    /// Drop every cached record (tests, and after re-indexing).
    pub fn clear_cache(&self) {
        self.cache.invalidate_all();
    }

    pub fn source_index(&self, name: &str) -> Option<usize> {
        self.sources.iter().position(|s| s.name == name)
    }

    /// One key's records if the shared cache holds them (a hit, counted as one).
    pub async fn cached(
        &self,
        source: usize,
        entity: EntityKind,
        lookup: Lookup,
        key: &str,
    ) -> Option<Records> {
        let cache_key = CacheKey {
            source,
            entity,
            lookup,
            key: key.to_string(),
        };
        let records = self.cache.get(&cache_key).await?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("escr_cache_hits_total", "source" => self.sources[source].name.clone())
            .increment(1);
        Some(records)
    }

    /// Statements the sources' connectors have run since start.
    pub fn statements_executed(&self) -> u64 {
        self.sources
            .iter()
            .map(|s| s.connector.statements_executed())
            .sum()
    }

    pub async fn load(
        &self,
        source: usize,
        entity: EntityKind,
        lookup: Lookup,
        keys: &[String],
    ) -> Result<HashMap<String, Records>, Arc<SourceError>> {
        let mut out = HashMap::with_capacity(keys.len());
        let mut missing = Vec::new();
        for key in keys {
            match self.cached(source, entity, lookup, key).await {
                Some(records) => {
                    out.insert(key.clone(), records);
                }
                None => missing.push(key.clone()),
            }
        }
        let source_name = &self.sources[source].name;
        if missing.is_empty() {
            return Ok(out);
        }
        metrics::counter!("escr_cache_misses_total", "source" => source_name.clone())
            .increment(missing.len() as u64);
        self.misses
            .fetch_add(missing.len() as u64, Ordering::Relaxed);

        // One statement (per chunk) for all the misses, run only if at least one key's
        // single-flight slot is ours; keys already loading elsewhere wait for that load.
        let src = &self.sources[source];
        let batch_keys = missing.clone();
        let batch = async move {
            let mapped = src
                .fetch(entity, lookup, &batch_keys)
                .await
                .map_err(Arc::new)?;
            let mut grouped: HashMap<String, Vec<Arc<Record>>> = HashMap::new();
            for record in mapped.records {
                let key = match lookup {
                    Lookup::ByKey => Some(record.local_id.clone()),
                    Lookup::ByPerson => record.person_id.clone(),
                };
                if let Some(key) = key {
                    grouped.entry(key).or_default().push(Arc::new(record));
                }
            }
            Ok::<_, Arc<SourceError>>(Arc::new(grouped))
        }
        .boxed()
        .shared();

        let loads = missing.iter().map(|key| {
            let batch = batch.clone();
            let cache_key = CacheKey {
                source,
                entity,
                lookup,
                key: key.clone(),
            };
            async move {
                let records = self
                    .cache
                    .try_get_with(cache_key, async move {
                        let grouped = batch.await?;
                        Ok::<_, Arc<SourceError>>(Arc::new(
                            grouped.get(key).cloned().unwrap_or_default(),
                        ))
                    })
                    .await
                    .map_err(|e: Arc<Arc<SourceError>>| (*e).clone())?;
                Ok::<_, Arc<SourceError>>((key.clone(), records))
            }
        });
        for result in futures::future::join_all(loads).await {
            let (key, records) = result?;
            out.insert(key, records);
        }
        Ok(out)
    }
}

type Waiter = (
    String,
    tokio::sync::oneshot::Sender<Result<Records, Arc<SourceError>>>,
);

/// The loaders of one request: one batch per (source, entity, lookup) at a time.
///
/// The first key of a batch makes its caller the leader: it yields until the request
/// stops adding keys (every sibling resolver of this request has run as far as it can
/// without records), then sends one load for all of them. All resolvers of a request
/// run in the request's task, so "stopped adding keys" is decided by the executor, not
/// by a timer: statements per request do not depend on list sizes or machine load.
/// (async-graphql's DataLoader dispatches after a fixed delay, which split a 500-person
/// request into 136 statements on this machine.)
pub struct RequestLoaders {
    fetcher: Arc<Fetcher>,
    delay: Duration,
    pending: Mutex<HashMap<Slot, Vec<Waiter>>>,
    /// What this request has loaded: a key asked for again (by another field, or the
    /// policy's facts) is answered from here, not by another statement when the
    /// shared cache is off or has evicted it. Unfiltered, and dropped with the request.
    loaded: Mutex<HashMap<Slot, HashMap<String, Records>>>,
}

type Slot = (usize, EntityKind, Lookup);

impl RequestLoaders {
    pub fn new(fetcher: Arc<Fetcher>, delay: Duration) -> RequestLoaders {
        RequestLoaders {
            fetcher,
            delay,
            pending: Mutex::new(HashMap::new()),
            loaded: Mutex::new(HashMap::new()),
        }
    }

    pub fn fetcher(&self) -> &Arc<Fetcher> {
        &self.fetcher
    }

    fn waiting(&self, slot: Slot) -> usize {
        let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.get(&slot).map_or(0, Vec::len)
    }

    pub async fn load(
        &self,
        source: usize,
        entity: EntityKind,
        lookup: Lookup,
        key: &str,
    ) -> Result<Records, Arc<SourceError>> {
        let slot = (source, entity, lookup);
        let known = {
            let loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
            loaded.get(&slot).and_then(|keys| keys.get(key)).cloned()
        };
        if let Some(records) = known {
            return Ok(records);
        }
        // A key the shared cache holds needs no batch: answered at once, without the
        // leader's yields and the waiters' channels (perf: most of a warm load's CPU).
        if let Some(records) = self.fetcher.cached(source, entity, lookup, key).await {
            let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
            loaded
                .entry(slot)
                .or_default()
                .insert(key.to_string(), records.clone());
            return Ok(records);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let leader = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let waiters = pending.entry(slot).or_default();
            waiters.push((key.to_string(), tx));
            waiters.len() == 1
        };
        if leader {
            let mut seen = 0;
            loop {
                tokio::task::yield_now().await;
                let now = self.waiting(slot);
                if now == seen {
                    break;
                }
                seen = now;
            }
            if !self.delay.is_zero() {
                // `loader.batch_delay_ms`: off by default (it joins no keys, see
                // config/README.md).
                tokio::time::sleep(self.delay).await;
            }
            let waiters = {
                let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                pending.remove(&slot).unwrap_or_default()
            };
            let mut keys: Vec<String> = waiters.iter().map(|(k, _)| k.clone()).collect();
            keys.sort();
            keys.dedup();
            let result = self.fetcher.load(source, entity, lookup, &keys).await;
            if let Ok(found) = &result {
                let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
                let slot_keys = loaded.entry(slot).or_default();
                for key in keys {
                    let records = found.get(&key).cloned().unwrap_or_default();
                    slot_keys.insert(key, records);
                }
            }
            for (key, tx) in waiters {
                let answer = match &result {
                    Ok(found) => Ok(found.get(&key).cloned().unwrap_or_default()),
                    Err(e) => Err(e.clone()),
                };
                let _ = tx.send(answer);
            }
        }
        rx.await.unwrap_or_else(|_| {
            Err(Arc::new(SourceError::Timeout {
                source_name: self.fetcher.sources[source].name.clone(),
                millis: 0,
            }))
        })
    }
}
