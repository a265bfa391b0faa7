//! escr-gateway: a virtual Electronic Social Care Record over legacy databases.

pub mod access;
pub mod audit;
pub mod auth;
pub mod config;
pub mod error;
pub mod gateway;
pub mod generate;
pub mod graphql;
pub mod index;
pub mod linkage;
pub mod loader;
pub mod policy;
pub mod quality;
pub mod registry;
pub mod reports;
pub mod server;
pub mod source;
