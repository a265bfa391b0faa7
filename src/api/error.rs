//! The gateway's errors and their one mapping to GraphQL error codes.

use async_graphql::{ErrorExtensionValues, Pos, ServerError};

use crate::consent::access::Withheld;
use crate::record::source::SourceError;

/// GraphQL `extensions.code` values the gateway emits.
pub mod codes {
    pub const SOURCE_UNAVAILABLE: &str = "SOURCE_UNAVAILABLE";
    /// The audit log cannot be written: nothing is released.
    pub const AUDIT_UNAVAILABLE: &str = "AUDIT_UNAVAILABLE";
    pub const MAPPING_FAILED: &str = "MAPPING_FAILED";
    pub const NOT_FOUND: &str = "NOT_FOUND";
    pub const BAD_INPUT: &str = "BAD_USER_INPUT";
    /// The caller's role may not do this at all (whoever it is about).
    pub const FORBIDDEN: &str = "FORBIDDEN";
    pub const QUERY_TOO_COSTLY: &str = "QUERY_TOO_COSTLY";
    pub const INTROSPECTION_DISABLED: &str = "INTROSPECTION_DISABLED";
    /// Documents' content (`GET /documents/{id}/content`).
    pub const CONTENT_NOT_FOUND: &str = "CONTENT_NOT_FOUND";
    pub const CONTENT_TOO_LARGE: &str = "CONTENT_TOO_LARGE";
    pub const RANGE_NOT_SATISFIABLE: &str = "RANGE_NOT_SATISFIABLE";
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{0}")]
    BadInput(String),
    #[error("withheld: {}", .0.reason)]
    Withheld(Withheld),
    #[error(transparent)]
    Report(#[from] crate::reports::ReportError),
    #[error("{0}")]
    Forbidden(String),
    #[error("refused before running: {0}")]
    TooCostly(String),
    #[error("introspection is turned off on this gateway ([server] introspection)")]
    IntrospectionOff,
}

impl GatewayError {
    /// The code and the extensions a client sees. Messages carry the source's name and
    /// what went wrong in general terms: never SQL text, values or credentials.
    pub fn to_server_error(&self, pos: Option<Pos>) -> ServerError {
        let mut ext = ErrorExtensionValues::default();
        let message = match self {
            GatewayError::Source(SourceError::Mapping(m)) => {
                ext.set("code", codes::MAPPING_FAILED);
                ext.set("source", m.profile.clone());
                format!(
                    "source `{}` returned data its profile cannot map (entity `{}`)",
                    m.profile, m.entity
                )
            }
            GatewayError::Source(e) => {
                ext.set("code", codes::SOURCE_UNAVAILABLE);
                ext.set("source", e.source_name().to_string());
                if let SourceError::Connector { entity, .. } = e {
                    ext.set("entity", entity.name());
                }
                e.to_string()
            }
            GatewayError::BadInput(m) => {
                ext.set("code", codes::BAD_INPUT);
                m.clone()
            }
            GatewayError::Forbidden(m) => {
                ext.set("code", codes::FORBIDDEN);
                m.clone()
            }
            GatewayError::Withheld(w) => {
                ext.set("code", w.code);
                w.reason.clone()
            }
            GatewayError::Report(crate::reports::ReportError::Source(e)) => {
                return GatewayError::Source(e.clone()).to_server_error(pos);
            }
            GatewayError::Report(r) => {
                ext.set("code", r.code());
                r.to_string()
            }
            GatewayError::TooCostly(_) => {
                ext.set("code", codes::QUERY_TOO_COSTLY);
                self.to_string()
            }
            GatewayError::IntrospectionOff => {
                ext.set("code", codes::INTROSPECTION_DISABLED);
                self.to_string()
            }
        };
        let mut err = ServerError::new(message, pos);
        err.extensions = Some(ext);
        err
    }
}

impl async_graphql::ErrorExtensions for GatewayError {
    /// Resolvers return errors through this, so the code is never lost (a plain `?`
    /// would keep only the message).
    fn extend(&self) -> async_graphql::Error {
        let server = self.to_server_error(None);
        let mut err = async_graphql::Error::new(server.message);
        err.extensions = server.extensions;
        err
    }
}
