//! The running gateway's shared state, built once from config.

use std::sync::Arc;
use std::time::Duration;

use escr_connector::Connector;

use crate::access::{AllowAll, Policy};
use crate::config::{ConnectorConfig, LoadedConfig};
use crate::index::IdentityIndex;
use crate::loader::{Fetcher, RequestLoaders};
use crate::source::Source;

pub struct Gateway {
    pub fetcher: Arc<Fetcher>,
    pub index: Arc<IdentityIndex>,
    pub policy: Arc<dyn Policy>,
    pub batch_delay: Duration,
    /// Tokens, the policy engine, the consent registry and the audit log; `None` only
    /// for in-process tests (the `serve` command requires a policy).
    pub access: Option<Arc<crate::policy::AccessControl>>,
}

impl Gateway {
    /// Connectors are created without connecting: a source that is down at start shows
    /// in `/readyz` and in errors, and the others serve.
    pub fn from_config(config: LoadedConfig) -> Result<Gateway, crate::index::IndexError> {
        let g = &config.gateway;
        let timeout = Duration::from_millis(g.loader.source_timeout_ms);
        let sources = g
            .sources
            .iter()
            .zip(config.profiles)
            .map(|(s, profile)| {
                let s = s.get_ref();
                let connector: Arc<dyn Connector> = match s.connector() {
                    Some(ConnectorConfig::Sqlite(c)) => {
                        Arc::new(escr_sqlite::SqliteConnector::new(c))
                    }
                    None => unreachable!("config validation requires one connector section"),
                };
                Source {
                    name: s.name.clone(),
                    profile,
                    connector,
                    timeout,
                }
            })
            .collect();
        let fetcher = Arc::new(Fetcher::new(
            sources,
            g.cache.max_mib * 1024 * 1024,
            Duration::from_secs(g.cache.ttl_secs),
        ));
        Ok(Gateway {
            fetcher,
            index: Arc::new(IdentityIndex::open_with(
                &g.index.path,
                config.linkage.clone(),
            )?),
            policy: Arc::new(AllowAll),
            batch_delay: Duration::from_millis(g.loader.batch_delay_ms),
            access: None,
        })
    }

    pub fn with_policy(mut self, policy: Arc<dyn Policy>) -> Gateway {
        self.policy = policy;
        self
    }

    /// Turn on the consent path: its engine becomes the policy.
    pub fn with_access_control(mut self, access: crate::policy::AccessControl) -> Gateway {
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
    ) -> Result<crate::index::IndexReport, crate::index::IndexError> {
        let report = self
            .index
            .refresh(&self.fetcher.sources, incremental)
            .await?;
        Ok(report)
    }
}
