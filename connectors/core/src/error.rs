//! Connector errors. Messages name what failed but never carry SQL text, parameter
//! values or credentials: they may reach a GraphQL client (through the source name and
//! kind) and the logs.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Cannot connect, connection lost, pool exhausted.
    Unavailable,
    /// The statement or the acquire ran past its time limit and was abandoned.
    Timeout,
    /// The engine refused the credentials.
    Auth,
    /// The engine rejected the statement (bad SQL for this engine, missing table).
    Query,
    /// The connector's own configuration is wrong.
    Config,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Auth => "authentication failed",
            ErrorKind::Query => "query failed",
            ErrorKind::Config => "configuration error",
        })
    }
}

#[derive(Clone, Debug, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct ConnectorError {
    pub kind: ErrorKind,
    pub message: String,
    /// The engine's own words (e.g. "no such table: CLIENT"), for the operator's log
    /// only, never a client: they may name tables and columns of the profile's SQL, but
    /// never values (values are bound parameters).
    pub detail: Option<String>,
}

impl ConnectorError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ConnectorError {
            kind,
            message: message.into(),
            detail: None,
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }
    pub fn query(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Query, message)
    }
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Timeout, message)
    }
}
