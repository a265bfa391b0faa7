//! The identity index shared by replicas over the PostgreSQL state store. The index
//! keeps building in its SQLite form (`index.rs`, unchanged logic); what is shared is
//! the result: under an advisory lock, the replica that builds, refreshes or applies a
//! steward's decision publishes the database (a `VACUUM INTO` copy) as the next version
//! of `index_snapshot` and NOTIFYs `escr_index`. The others LISTEN (and check the
//! version every `poll` as a fallback for a lost notification or connection), install
//! the new version without a restart, and drop their record caches.
//!
//! One replica refreshes at a time: the others skip their periodic refresh while the
//! lock is held. A steward's decision on any replica waits for the lock, starts from
//! the latest published version, and publishes its result.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Object;

use crate::identity::index::{
    DecisionAction, IdentityIndex, IndexError, IndexReport, LinkDecision, RecordKey,
};
use crate::record::source::Source;
use crate::state::postgres::INDEX_LOCK;
use crate::state::{PgStore, StateError};

/// The NOTIFY channel of new versions (the payload is the version).
const CHANNEL: &str = "escr_index";
/// Versions kept besides the newest (a replica installing one while the next is
/// published still finds it).
const KEPT_VERSIONS: i64 = 2;

pub struct SharedIndex {
    pg: Arc<PgStore>,
    index: Arc<IdentityIndex>,
    replica: String,
    /// The version this replica serves (0: none installed or published yet).
    version: AtomicI64,
    /// One install at a time (the listener and a refresh may both find a new version).
    syncing: tokio::sync::Mutex<()>,
}

impl SharedIndex {
    pub fn new(pg: Arc<PgStore>, index: Arc<IdentityIndex>, replica: &str) -> SharedIndex {
        SharedIndex {
            pg,
            index,
            replica: replica.to_string(),
            version: AtomicI64::new(0),
            syncing: tokio::sync::Mutex::new(()),
        }
    }

    pub fn version(&self) -> i64 {
        self.version.load(Ordering::SeqCst)
    }

    fn err(&self, e: impl std::fmt::Display) -> IndexError {
        IndexError::Store {
            path: self.index.path().to_path_buf(),
            reason: format!("shared index: {e}"),
        }
    }

    /// A file beside the index's own (same file system: the install is a rename).
    fn side_file(&self, what: &str) -> PathBuf {
        let mut name = self.index.path().as_os_str().to_owned();
        name.push(format!(".{what}"));
        PathBuf::from(name)
    }

    /// Install the newest published version when it is newer than the one served.
    /// True when one was installed.
    pub async fn sync(&self) -> Result<bool, IndexError> {
        let _one = self.syncing.lock().await;
        let client = self.pg.client().await.map_err(|e| self.err(e))?;
        let row = client
            .query_opt(
                "SELECT version, bytes FROM index_snapshot WHERE version > $1 ORDER BY version DESC LIMIT 1",
                &[&self.version()],
            )
            .await
            .map_err(|e| self.err(StateError::from(e)))?;
        drop(client);
        let Some(row) = row else {
            return Ok(false);
        };
        let version: i64 = row.get(0);
        let bytes: &[u8] = row.get(1);
        let file = self.side_file("install");
        std::fs::write(&file, bytes).map_err(|e| self.err(e))?;
        self.index.install(&file).await?;
        self.version.store(version, Ordering::SeqCst);
        tracing::info!(version, "identity index installed from the shared store");
        Ok(true)
    }

    /// Publish the index as it is now as the next version, and tell the others.
    async fn publish(&self) -> Result<i64, IndexError> {
        let file = self.side_file("publish");
        let _ = std::fs::remove_file(&file);
        self.index.export(&file).await?;
        let bytes = std::fs::read(&file).map_err(|e| self.err(e));
        let _ = std::fs::remove_file(&file);
        let bytes = bytes?;
        let client = self.pg.client().await.map_err(|e| self.err(e))?;
        let pg = |e: tokio_postgres::Error| self.err(StateError::from(e));
        let version: i64 = client
            .query_one(
                "INSERT INTO index_snapshot (version, published_by, bytes)
                 SELECT coalesce(max(version), 0) + 1, $1, $2 FROM index_snapshot
                 RETURNING version",
                &[&self.replica, &bytes],
            )
            .await
            .map_err(pg)?
            .get(0);
        client
            .execute(
                "SELECT pg_notify($1, $2)",
                &[&CHANNEL, &version.to_string()],
            )
            .await
            .map_err(pg)?;
        client
            .execute(
                "DELETE FROM index_snapshot WHERE version < $1",
                &[&(version - KEPT_VERSIONS)],
            )
            .await
            .map_err(pg)?;
        self.version.store(version, Ordering::SeqCst);
        tracing::info!(version, "identity index published");
        Ok(version)
    }

    /// The index lock, if free now. The connection holding it is closed afterwards
    /// ([`release`]), which ends the lock whatever happened meanwhile.
    async fn try_lock(&self) -> Result<Option<Object>, IndexError> {
        let client = self.pg.client().await.map_err(|e| self.err(e))?;
        let got: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&INDEX_LOCK])
            .await
            .map_err(|e| self.err(StateError::from(e)))?
            .get(0);
        Ok(got.then_some(client))
    }

    /// The lock, waiting up to `within` for the replica holding it.
    async fn lock_within(&self, within: Duration) -> Result<Object, IndexError> {
        let started = std::time::Instant::now();
        loop {
            if let Some(lock) = self.try_lock().await? {
                return Ok(lock);
            }
            if started.elapsed() >= within {
                return Err(self.err("another replica is rebuilding the index: try again"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Periodic refresh: `None` when another replica holds the lock (it publishes).
    pub async fn refresh(
        &self,
        sources: &[Source],
        incremental: bool,
    ) -> Result<Option<IndexReport>, IndexError> {
        let Some(lock) = self.try_lock().await? else {
            return Ok(None);
        };
        let result = self.refresh_locked(sources, incremental).await;
        release(lock);
        result.map(Some)
    }

    async fn refresh_locked(
        &self,
        sources: &[Source],
        incremental: bool,
    ) -> Result<IndexReport, IndexError> {
        self.sync().await?;
        let report = self.index.refresh(sources, incremental).await?;
        if report.changed > 0 || report.deleted_records > 0 || self.version() == 0 {
            self.publish().await?;
        }
        Ok(report)
    }

    /// At start: the latest published version, refreshed from the sources by whichever
    /// replica gets the lock first; a replica that finds a version published while it
    /// waited serves that one.
    pub async fn start(&self, sources: &[Source]) -> Result<IndexReport, IndexError> {
        loop {
            if let Some(lock) = self.try_lock().await? {
                let result = async {
                    self.sync().await?;
                    let incremental = self.index.snapshot().person_count() > 0;
                    self.refresh_locked(sources, incremental).await
                }
                .await;
                release(lock);
                return result;
            }
            if self.sync().await? {
                return Ok(IndexReport {
                    people: self.index.snapshot().person_count(),
                    ..IndexReport::default()
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// A steward's decision, on the latest version, published for every replica.
    pub async fn decide(
        &self,
        action: DecisionAction,
        a: RecordKey,
        b: RecordKey,
        reason: &str,
        decided_by: &str,
    ) -> Result<LinkDecision, IndexError> {
        let lock = self.lock_within(Duration::from_secs(30)).await?;
        let result = async {
            self.sync().await?;
            let decision = self.index.decide(action, a, b, reason, decided_by).await?;
            self.publish().await?;
            Ok(decision)
        }
        .await;
        release(lock);
        result
    }

    /// Install each new version as it is published: on its notification, or found by
    /// the check every `poll`; `installed` runs after each (the caller drops its
    /// record caches).
    pub fn watch(self: Arc<Self>, poll: Duration, installed: impl Fn() + Send + 'static) {
        tokio::spawn(async move {
            loop {
                let (client, mut notes) = match self.pg.listen(CHANNEL).await {
                    Ok((client, notes)) => (Some(client), Some(notes)),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot LISTEN for index versions: polling");
                        (None, None)
                    }
                };
                loop {
                    let lost = match notes.as_mut() {
                        Some(n) => matches!(tokio::time::timeout(poll, n.recv()).await, Ok(None)),
                        None => {
                            tokio::time::sleep(poll).await;
                            true
                        }
                    };
                    match self.sync().await {
                        Ok(true) => installed(),
                        Ok(false) => {}
                        Err(e) => tracing::warn!(error = %e, "index version check failed"),
                    }
                    if lost {
                        break;
                    }
                }
                drop(client);
            }
        });
    }
}

/// Close the connection holding the lock: its session, and so the lock, ends.
fn release(lock: Object) {
    drop(Object::take(lock));
}
