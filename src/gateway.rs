//! The running gateway's shared state, built once from config.

use std::sync::Arc;
use std::time::Duration;

use escr_connector::{Connector, ConnectorError};

use crate::access::{AllowAll, Policy};
use crate::config::{ConnectorConfig, LoadedConfig};
use crate::index::IdentityIndex;
use crate::loader::{Fetcher, RequestLoaders};
use crate::source::Source;

/// Why a gateway could not be built from its config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
    #[error(transparent)]
    Config(#[from] escr_connector::ConfigError),
}

pub struct Gateway {
    pub fetcher: Arc<Fetcher>,
    pub index: Arc<IdentityIndex>,
    pub policy: Arc<dyn Policy>,
    pub batch_delay: Duration,
    /// Tokens, the policy engine, the consent registry and the audit log; `None` only
    /// for in-process tests (the `serve` command requires a policy).
    pub access: Option<Arc<crate::policy::AccessControl>>,
    /// Minimum data set and indicators; `None` when not configured.
    pub reports: Option<Arc<crate::reports::Reports>>,
}

/// The connector for a source's config section. Connectors connect lazily; one that
/// cannot even be built (a secret file missing, say) stands in as a source that is down
/// with that reason, so the gateway still starts and the other sources serve.
fn connect(name: &str, config: Option<ConnectorConfig<'_>>) -> Arc<dyn Connector> {
    let built: Result<Arc<dyn Connector>, ConnectorError> = match config {
        Some(ConnectorConfig::Sqlite(c)) => Ok(Arc::new(escr_sqlite::SqliteConnector::new(c))),
        Some(ConnectorConfig::Mysql(c)) => {
            escr_mysql::MysqlConnector::new(c).map(|c| Arc::new(c) as Arc<dyn Connector>)
        }
        Some(ConnectorConfig::Mssql(c)) => {
            escr_mssql::MssqlConnector::new(c).map(|c| Arc::new(c) as Arc<dyn Connector>)
        }
        Some(ConnectorConfig::Odbc(c)) => {
            escr_odbc::OdbcConnector::new(c).map(|c| Arc::new(c) as Arc<dyn Connector>)
        }
        None => unreachable!("config validation requires one connector section"),
    };
    built.unwrap_or_else(|error| {
        tracing::warn!(source = name, error = %error, "source connector not available");
        Arc::new(Unavailable(error))
    })
}

/// A source whose connector could not be built: every call reports why.
struct Unavailable(ConnectorError);

#[async_trait::async_trait]
impl Connector for Unavailable {
    fn engine(&self) -> &'static str {
        "unavailable"
    }
    fn capabilities(&self) -> escr_connector::Capabilities {
        escr_connector::Capabilities {
            max_batch: 1000,
            placeholder: escr_connector::Placeholder::Question,
        }
    }
    async fn query(
        &self,
        _sql: &str,
        _params: &[escr_connector::Value],
    ) -> Result<escr_connector::RowSet, ConnectorError> {
        Err(self.0.clone())
    }
    async fn ping(&self) -> Result<(), ConnectorError> {
        Err(self.0.clone())
    }
    fn statements_executed(&self) -> u64 {
        0
    }
}

impl Gateway {
    /// Connectors are created without connecting: a source that is down at start shows
    /// in `/readyz` and in errors, and the others serve.
    pub fn from_config(config: LoadedConfig) -> Result<Gateway, BuildError> {
        let g = &config.gateway;
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
                let connector = connect(&s.name, s.connector());
                Source {
                    name: s.name.clone(),
                    authority,
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
        let reports = match config.reports {
            Some((reports, calendar)) => {
                let path = g.reports.clone().unwrap_or_else(|| config.path.clone());
                Some(Arc::new(crate::reports::Reports::open(
                    &path, reports, calendar,
                )?))
            }
            None => None,
        };
        Ok(Gateway {
            fetcher,
            index: Arc::new(IdentityIndex::open_with(
                &g.index.path,
                config.linkage.clone(),
            )?),
            policy: Arc::new(AllowAll),
            batch_delay: Duration::from_millis(g.loader.batch_delay_ms),
            access: None,
            reports,
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
