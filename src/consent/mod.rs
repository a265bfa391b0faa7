//! Who is asking, what they may see, and what they saw: tokens and purposes
//! ([`auth`]), the shared vocabulary ([`context`]), the policy file ([`policy`]) and its
//! decision engine ([`engine`]), the one release hook ([`access`]), the consent registry
//! ([`registry`]), the hash-chained audit log ([`audit`]) and opaque cursors
//! ([`cursor`]).

use std::path::Path;
use std::sync::Arc;

use escr_connector::ConfigError;

use crate::identity::index::IdentityIndex;

pub mod access;
pub mod audit;
pub mod auth;
pub mod context;
pub mod cursor;
pub mod engine;
pub mod policy;
pub mod registry;

pub use access::{AccessContext, Purpose, Withheld};
pub use engine::PolicyEngine;
pub use policy::PolicyConfig;

/// Everything the consent path needs, built from `policy.toml`.
pub struct AccessControl {
    pub config: Arc<PolicyConfig>,
    pub auth: auth::Auth,
    pub engine: Arc<PolicyEngine>,
    pub registry: registry::Registry,
    pub audit: audit::AuditLog,
}

#[derive(Debug, thiserror::Error)]
pub enum AccessControlError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("auth: {0}")]
    Auth(String),
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    #[error(transparent)]
    Audit(#[from] audit::AuditError),
}

/// Where the registry and the audit log are kept.
pub enum Stores<'a> {
    /// The files `policy.toml`'s `[storage]` names.
    Sqlite,
    /// The shared PostgreSQL; `replica` names this process's audit chains.
    Postgres {
        pg: Arc<crate::state::PgStore>,
        replica: &'a str,
    },
}

impl AccessControl {
    pub fn load(
        path: &Path,
        index: Option<Arc<IdentityIndex>>,
    ) -> Result<AccessControl, AccessControlError> {
        Self::from_config(PolicyConfig::load(path)?, index)
    }

    pub fn from_config(
        config: PolicyConfig,
        index: Option<Arc<IdentityIndex>>,
    ) -> Result<AccessControl, AccessControlError> {
        let registry = registry::Registry::open(&config.storage.registry)?;
        let audit = audit::AuditLog::open(&config.storage.audit)?;
        Self::assemble(config, index, registry, audit)
    }

    /// As [`AccessControl::load`], with the registry and audit in `stores`.
    pub async fn load_on(
        path: &Path,
        index: Option<Arc<IdentityIndex>>,
        stores: Stores<'_>,
    ) -> Result<AccessControl, AccessControlError> {
        let config = PolicyConfig::load(path)?;
        match stores {
            Stores::Sqlite => Self::from_config(config, index),
            Stores::Postgres { pg, replica } => {
                let registry = registry::Registry::postgres(pg.clone());
                let audit = audit::AuditLog::postgres(pg, replica).await?;
                Self::assemble(config, index, registry, audit)
            }
        }
    }

    fn assemble(
        config: PolicyConfig,
        index: Option<Arc<IdentityIndex>>,
        registry: registry::Registry,
        audit: audit::AuditLog,
    ) -> Result<AccessControl, AccessControlError> {
        let config = Arc::new(config);
        let auth = auth::Auth::new(config.clone()).map_err(AccessControlError::Auth)?;
        let engine = Arc::new(PolicyEngine::new(config.clone(), index)?);
        Ok(AccessControl {
            config,
            auth,
            engine,
            registry,
            audit,
        })
    }
}
