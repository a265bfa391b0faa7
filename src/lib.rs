//! escr-gateway: a virtual Electronic Social Care Record over legacy databases.

pub mod access;
pub mod config;
pub mod error;
pub mod gateway;
pub mod generate;
pub mod graphql;
pub mod index;
pub mod linkage;
pub mod loader;
pub mod quality;
pub mod server;
pub mod source;
