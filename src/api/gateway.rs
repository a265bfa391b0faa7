//! The running gateway's shared state, built once from config.

use std::sync::Arc;
use std::time::Duration;

use crate::config::LoadedConfig;
use crate::consent::access::{AllowAll, Policy};
use crate::identity::index::IdentityIndex;
use crate::record::build::connect;
use crate::record::loader::{Fetcher, RequestLoaders};
use crate::record::source::Source;

/// Why a gateway could not be built from its config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Index(#[from] crate::identity::index::IndexError),
    #[error(transparent)]
    Config(#[from] escr_connector::ConfigError),
}

/// Query texts whose parsed documents are kept (together, about ten times as much).
const PARSED_DOCUMENT_BYTES: u64 = 1024 * 1024;

pub struct Gateway {
    pub fetcher: Arc<Fetcher>,
    pub index: Arc<IdentityIndex>,
    pub policy: Arc<dyn Policy>,
    pub batch_delay: Duration,
    /// Tokens, the policy engine, the consent registry and the audit log; `None` only
    /// for in-process tests (the `serve` command requires a policy).
    pub access: Option<Arc<crate::consent::AccessControl>>,
    /// Minimum data set and indicators; `None` when not configured.
    pub reports: Option<Arc<crate::reports::Reports>>,
    /// The HTTP server's settings (GraphiQL, CORS, limits, metrics).
    pub server: crate::config::ServerConfig,
    /// The allowlist of persisted operations and how it is used.
    pub trusted_documents: Arc<crate::api::ops::documents::TrustedDocuments>,
    /// Every GraphQL request is resolved (APQ), parsed (or taken from the documents kept
    /// by their text) and checked here before a schema runs it.
    pub parsed: Arc<crate::api::ops::parsed::ParsedDocuments>,
    /// The sources' document stores (letters' and scans' content).
    pub documents: Arc<crate::record::documents::DocumentStores>,
    /// Seals and opens the opaque ids of content links.
    pub document_ids: Arc<crate::api::documents::DocumentIds>,
    /// The shared PostgreSQL state store (`[state] backend = "postgres"`): `/readyz`
    /// asks it; `None` with SQLite.
    pub state: Option<Arc<crate::state::PgStore>>,
    /// The index as replicas share it through that store (`None` with SQLite).
    pub shared_index: Option<Arc<crate::identity::shared::SharedIndex>>,
}

impl Gateway {
    /// Connectors are created without connecting: a source that is down at start shows
    /// in `/readyz` and in errors, and the others serve.
    pub fn from_config(config: LoadedConfig) -> Result<Gateway, BuildError> {
        let g = &config.gateway;
        let documents = crate::api::documents::build_stores(g);
        let document_ids = crate::api::documents::DocumentIds::from_config(&g.documents)
            .map_err(|reason| escr_connector::ConfigError::io(&config.path, reason))?;
        let cursor_key = crate::consent::auth::secret_key(
            g.cursors.key_env.as_deref(),
            g.cursors.key_file.as_deref(),
            false,
            "the cursor key",
        )
        .map_err(|reason| escr_connector::ConfigError::io(&config.path, reason))?;
        match (&cursor_key, &g.cursors.key_env) {
            (Some(key), _) => {
                crate::consent::cursor::use_key(key);
            }
            (None, Some(var)) => {
                return Err(escr_connector::ConfigError::io(
                    &config.path,
                    format!("[cursors] key_env: {var} is not set (and no key_file)"),
                )
                .into())
            }
            (None, None) => {}
        }
        // Replicas share the state; a cursor or a document link one gives out must open
        // on the other, so both keys must be configured, not made at startup.
        if let Some(reason) = g.replica_keys_missing().into_iter().next() {
            return Err(escr_connector::ConfigError::io(&config.path, reason).into());
        }
        let authorities: Vec<String> = g
            .sources
            .iter()
            .map(|s| config.authority_of(s.get_ref()))
            .collect();
        let timeout = Duration::from_millis(g.loader.source_timeout_ms);
        let sources = g
            .sources
            .iter()
            .zip(config.profiles)
            .zip(authorities)
            .map(|((s, profile), authority)| {
                let s = s.get_ref();
                let section = s
                    .connector
                    .as_ref()
                    .expect("a loaded config has one connector section per source");
                let connector = connect(&s.name, section.settings.as_ref());
                Source {
                    name: s.name.clone(),
                    authority,
                    profile,
                    connector,
                    timeout,
                    health: Default::default(),
                }
            })
            .collect();
        let fetcher = Arc::new(Fetcher::new(
            sources,
            g.cache.max_mib * 1024 * 1024,
            Duration::from_secs(g.cache.ttl_secs),
        ));
        let reports = match config.reports {
            Some((reports, calendar)) => {
                let path = g.reports.clone().unwrap_or_else(|| config.path.clone());
                Some(Arc::new(crate::reports::Reports::open(
                    &path, reports, calendar,
                )?))
            }
            None => None,
        };
        let trusted_documents = Arc::new(crate::api::ops::documents::TrustedDocuments::load(
            &g.trusted_documents,
        )?);
        let parsed = Arc::new(crate::api::ops::parsed::ParsedDocuments::new(
            PARSED_DOCUMENT_BYTES,
            trusted_documents.apq(),
            g.server.introspection,
        ));
        Ok(Gateway {
            server: g.server.clone(),
            trusted_documents,
            parsed,
            fetcher,
            index: Arc::new(
                IdentityIndex::open_with(&g.index.path, config.linkage.clone())?
                    .with_namespace(g.index.namespace.get_ref()),
            ),
            policy: Arc::new(AllowAll),
            batch_delay: Duration::from_millis(g.loader.batch_delay_ms),
            access: None,
            reports,
            documents,
            document_ids: Arc::new(document_ids),
            state: None,
            shared_index: None,
        })
    }

    pub fn with_policy(mut self, policy: Arc<dyn Policy>) -> Gateway {
        self.policy = policy;
        self
    }

    /// Turn on the consent path: its engine becomes the policy.
    pub fn with_access_control(mut self, access: crate::consent::AccessControl) -> Gateway {
        self.policy = access.engine.clone();
        self.access = Some(Arc::new(access));
        self
    }

    pub fn request_loaders(&self) -> RequestLoaders {
        RequestLoaders::new(self.fetcher.clone(), self.batch_delay)
    }

    /// Re-read people from the sources and relink.
    pub async fn refresh_index(
        &self,
        incremental: bool,
    ) -> Result<crate::identity::index::IndexReport, crate::identity::index::IndexError> {
        let report = self
            .index
            .refresh(&self.fetcher.sources, incremental)
            .await?;
        Ok(report)
    }
}

impl Gateway {
    /// A data steward's link or unlink: on the shared index when replicas share one
    /// (published to the others), else on this process's.
    pub async fn decide(
        &self,
        action: crate::identity::index::DecisionAction,
        a: crate::identity::index::RecordKey,
        b: crate::identity::index::RecordKey,
        reason: &str,
        decided_by: &str,
    ) -> Result<crate::identity::index::LinkDecision, crate::identity::index::IndexError> {
        match &self.shared_index {
            Some(shared) => shared.decide(action, a, b, reason, decided_by).await,
            None => self.index.decide(action, a, b, reason, decided_by).await,
        }
    }

    /// The periodic refresh: `None` when another replica holds the shared index's
    /// lock (its result is published and installed here).
    pub async fn refresh_shared_or_own(
        &self,
        incremental: bool,
    ) -> Result<Option<crate::identity::index::IndexReport>, crate::identity::index::IndexError>
    {
        match &self.shared_index {
            Some(shared) => shared.refresh(&self.fetcher.sources, incremental).await,
            None => self.refresh_index(incremental).await.map(Some),
        }
    }
}

impl Gateway {
    /// The parts reports read (they sit below the API and do not know the gateway).
    pub fn estate(&self) -> crate::reports::Estate {
        crate::reports::Estate {
            fetcher: self.fetcher.clone(),
            index: self.index.clone(),
            policy: self.policy.clone(),
            access: self.access.clone(),
            reports: self.reports.clone(),
        }
    }
}
