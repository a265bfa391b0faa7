//! The only code that knows HTTP and GraphQL: the axum server, the GraphQL schema and
//! its resolvers, the one mapping of errors to GraphQL codes, and the gateway state the
//! API serves (assembled from config out of every other subsystem).

pub mod documents;
pub mod error;
pub mod gateway;
pub mod graphql;
pub mod ops;
pub mod server;
