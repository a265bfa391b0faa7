//! The declarative mapping engine: rows from a vendor's SQL -> ESCR records, plus the
//! data-quality findings for whatever could not be mapped. Never panics on dirty data:
//! what maps is kept, the rest is reported.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{NaiveDate, NaiveDateTime};
use serde::Serialize;

use crate::catalog::{EntityKind, FieldType};
use crate::dates;
use crate::nhs::{self, NhsNumber};
use crate::profile::{EntitySpec, VendorProfile};
use crate::{RowSet, Value};

/// One canonical field value.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum FieldValue {
    Text(String),
    Int(i64),
    Decimal(f64),
    Bool(bool),
    Date(NaiveDate),
    DateTime(NaiveDateTime),
    List(Vec<String>),
}

impl FieldValue {
    pub fn weight(&self) -> usize {
        24 + match self {
            FieldValue::Text(s) => s.len(),
            FieldValue::List(l) => l.iter().map(|s| s.len() + 24).sum(),
            _ => 0,
        }
    }
}

/// A record of one entity from one source, mapped to canonical fields.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Record {
    pub entity: EntityKind,
    pub local_id: String,
    /// The person's local id in the same source (person-scoped entities).
    pub person_id: Option<String>,
    pub last_updated: Option<NaiveDateTime>,
    pub fields: BTreeMap<&'static str, FieldValue>,
    pub labels: BTreeSet<String>,
}

impl Record {
    pub fn text(&self, field: &str) -> Option<&str> {
        match self.fields.get(field) {
            Some(FieldValue::Text(s)) => Some(s),
            _ => None,
        }
    }
    pub fn date(&self, field: &str) -> Option<NaiveDate> {
        match self.fields.get(field) {
            Some(FieldValue::Date(d)) => Some(*d),
            Some(FieldValue::DateTime(t)) => Some(t.date()),
            _ => None,
        }
    }
    pub fn date_time(&self, field: &str) -> Option<NaiveDateTime> {
        match self.fields.get(field) {
            Some(FieldValue::DateTime(t)) => Some(*t),
            Some(FieldValue::Date(d)) => d.and_hms_opt(0, 0, 0),
            _ => None,
        }
    }
    pub fn bool(&self, field: &str) -> Option<bool> {
        match self.fields.get(field) {
            Some(FieldValue::Bool(b)) => Some(*b),
            _ => None,
        }
    }
    pub fn decimal(&self, field: &str) -> Option<f64> {
        match self.fields.get(field) {
            Some(FieldValue::Decimal(f)) => Some(*f),
            Some(FieldValue::Int(i)) => Some(*i as f64),
            _ => None,
        }
    }
    pub fn list(&self, field: &str) -> Option<&[String]> {
        match self.fields.get(field) {
            Some(FieldValue::List(l)) => Some(l),
            _ => None,
        }
    }

    /// Rough heap size, for the cache's weigher.
    pub fn weight(&self) -> usize {
        128 + self.local_id.len()
            + self.fields.values().map(FieldValue::weight).sum::<usize>()
            + self.labels.iter().map(|l| l.len() + 24).sum::<usize>()
    }
}

/// Something in the source data that could not be mapped as it stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FindingKind {
    MissingNhsNumber,
    PlaceholderNhsNumber,
    InvalidNhsNumber,
    MalformedNhsNumber,
    UnmappedCode,
    UnparseableDate,
    UnparseableNumber,
    EstimatedBirthDate,
    EndBeforeStart,
    MissingKey,
}

/// A data-quality finding. It names the record and field, and, for codes only, the raw
/// value (codes are not personal data; names, dates and NHS numbers never appear here).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub entity: EntityKind,
    pub local_id: String,
    pub field: &'static str,
    pub kind: FindingKind,
    pub code_value: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mapped {
    pub records: Vec<Record>,
    pub findings: Vec<Finding>,
}
