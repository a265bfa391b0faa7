//! escr-gateway: a virtual Electronic Social Care Record over legacy databases.

pub mod generate;
