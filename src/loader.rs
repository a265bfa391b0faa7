//! Batched, cached loading of source records.
//!
//! Per request, one async-graphql `DataLoader` per (source, entity, lookup) gathers the
//! keys resolvers ask for. A batch first reads the shared cache of **unfiltered** mapped
//! records, keyed (source, entity, lookup, key); the misses go to the source as one
//! statement per chunk of the connector's max batch. Concurrent requests missing the
//! same key share one load (moka's single flight). Consent filtering happens after this,
//! per request (see `access`), so the cache never holds a filtered view.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::dataloader::{DataLoader, Loader};
use escr_connector::{EntityKind, Record};
use futures::FutureExt;
use moka::future::Cache;

use crate::source::{Lookup, Source, SourceError};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct CacheKey {
    source: usize,
    entity: EntityKind,
    lookup: Lookup,
    key: String,
}

pub type Records = Arc<Vec<Record>>;

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
}

impl Fetcher {
    pub fn new(sources: Vec<Source>, max_bytes: u64, ttl: Duration) -> Fetcher {
        let cache = Cache::builder()
            .weigher(|_k: &CacheKey, v: &Records| -> u32 {
                let bytes: usize = 64 + v.iter().map(Record::weight).sum::<usize>();
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
        }
    }

    /// Drop every cached record (tests, and after re-indexing).
    pub fn clear_cache(&self) {
        self.cache.invalidate_all();
    }

    pub fn source_index(&self, name: &str) -> Option<usize> {
        self.sources.iter().position(|s| s.name == name)
    }

    /// Statements the sources' connectors have run since start.
    pub fn statements_executed(&self) -> u64 {
        self.sources.iter().map(|s| s.connector.statements_executed()).sum()
    }

    async fn load(
        &self,
        source: usize,
        entity: EntityKind,
        lookup: Lookup,
        keys: &[String],
    ) -> Result<HashMap<String, Records>, Arc<SourceError>> {
        let mut out = HashMap::with_capacity(keys.len());
        let mut missing = Vec::new();
        for key in keys {
            let cache_key = CacheKey {
                source,
                entity,
                lookup,
                key: key.clone(),
            };
            match self.cache.get(&cache_key).await {
                Some(records) => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    out.insert(key.clone(), records);
                }
                None => missing.push(key.clone()),
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        self.misses.fetch_add(missing.len() as u64, Ordering::Relaxed);

        // One statement (per chunk) for all the misses, run only if at least one key's
        // single-flight slot is ours; keys already loading elsewhere wait for that load.
        let src = &self.sources[source];
        let batch_keys = missing.clone();
        let batch = async move {
            let mapped = src.fetch(entity, lookup, &batch_keys).await.map_err(Arc::new)?;
            let mut grouped: HashMap<String, Vec<Record>> = HashMap::new();
            for record in mapped.records {
                let key = match lookup {
                    Lookup::ByKey => Some(record.local_id.clone()),
                    Lookup::ByPerson => record.person_id.clone(),
                };
                if let Some(key) = key {
                    grouped.entry(key).or_default().push(record);
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
                        Ok::<_, Arc<SourceError>>(Arc::new(grouped.get(key).cloned().unwrap_or_default()))
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

/// The DataLoader's view of one (source, entity, lookup).
pub struct SourceLoader {
    fetcher: Arc<Fetcher>,
    source: usize,
    entity: EntityKind,
    lookup: Lookup,
}

impl Loader<String> for SourceLoader {
    type Value = Records;
    type Error = Arc<SourceError>;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Records>, Self::Error> {
        self.fetcher.load(self.source, self.entity, self.lookup, keys).await
    }
}

/// The loaders of one request, made on first use.
pub struct RequestLoaders {
    fetcher: Arc<Fetcher>,
    delay: Duration,
    loaders: Mutex<HashMap<(usize, EntityKind, Lookup), Arc<DataLoader<SourceLoader>>>>,
}

impl RequestLoaders {
    pub fn new(fetcher: Arc<Fetcher>, delay: Duration) -> RequestLoaders {
        RequestLoaders {
            fetcher,
            delay,
            loaders: Mutex::new(HashMap::new()),
        }
    }

    pub fn fetcher(&self) -> &Arc<Fetcher> {
        &self.fetcher
    }

    fn loader(&self, source: usize, entity: EntityKind, lookup: Lookup) -> Arc<DataLoader<SourceLoader>> {
        let mut loaders = self.loaders.lock().unwrap_or_else(|p| p.into_inner());
        loaders
            .entry((source, entity, lookup))
            .or_insert_with(|| {
                let max_batch = self.fetcher.sources[source].connector.capabilities().max_batch;
                Arc::new(
                    DataLoader::new(
                        SourceLoader {
                            fetcher: self.fetcher.clone(),
                            source,
                            entity,
                            lookup,
                        },
                        tokio::spawn,
                    )
                    .delay(self.delay)
                    // Larger batches are chunked by the source itself; one DataLoader
                    // batch per request keeps the statement count flat.
                    .max_batch_size(max_batch.max(1) * 1000),
                )
            })
            .clone()
    }

    pub async fn load(
        &self,
        source: usize,
        entity: EntityKind,
        lookup: Lookup,
        key: &str,
    ) -> Result<Records, Arc<SourceError>> {
        let loader = self.loader(source, entity, lookup);
        Ok(loader.load_one(key.to_string()).await?.unwrap_or_default())
    }
}
