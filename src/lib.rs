//! escr-gateway: a virtual Electronic Social Care Record over legacy databases.

pub mod access;
pub mod config;
pub mod generate;
pub mod index;
pub mod loader;
pub mod source;
