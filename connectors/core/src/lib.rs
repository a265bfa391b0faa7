//! The connector trait crate of escr-gateway.
//!
//! Connectors (one crate per engine) implement [`Connector`]: run the operator's SQL
//! with bound values, return [`RowSet`]s. Everything vendor-specific is declarative, in a
//! [`VendorProfile`]; the [`mapping`] engine turns rows into ESCR [`Record`]s and
//! data-quality [`Finding`]s. [`conformance`] holds the checks every connector and every
//! profile must pass.

pub mod catalog;
pub mod conformance;
mod connector;
pub mod dates;
mod error;
mod error_config;
pub mod mapping;
pub mod nhs;
pub mod profile;
pub mod reference;
pub mod sql;
mod value;

pub use catalog::{CodeSystem, EntityKind, FieldType};
pub use connector::{
    resolve_files, Capabilities, Connector, ConnectorSettings, Placeholder, SecretRef,
    StatementCounter,
};
pub use error::{ConnectorError, ErrorKind};
pub use error_config::ConfigError;
pub use mapping::{FieldValue, Finding, FindingKind, Mapped, MappingError, Record};
pub use profile::VendorProfile;
pub use value::{RowSet, Value};
