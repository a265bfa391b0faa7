//! Reading the legacy systems: a source (a vendor profile over a connector), the
//! request loaders and the shared cache in front of the sources, and building them from
//! the config's source sections; the document stores their letters and scans live in.

pub mod build;
pub mod documents;
pub mod health;
pub mod loader;
pub mod registry;
pub mod source;
pub mod window;
