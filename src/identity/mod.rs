//! Which source records are one person: the identity index (the gateway's own state),
//! record linkage and survivorship, person search criteria, and the per-source
//! data-quality report.

pub mod index;
pub mod linkage;
pub mod quality;
pub mod search;
pub mod shared;
