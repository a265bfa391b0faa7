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

/// What one heap allocation of `bytes` costs: the allocator's header and its rounding
/// to 16 bytes (glibc's malloc; others are alike). Nothing for nothing.
fn allocation(bytes: usize) -> usize {
    if bytes == 0 {
        0
    } else {
        (bytes + 8).next_multiple_of(16).max(32)
    }
}

/// Heap bytes of a B-tree map or set of `len` entries of `entry` bytes each: its nodes
/// hold 11 entries (room for all, used or not) and are at least half full; inner
/// nodes also hold 12 child pointers.
fn btree(len: usize, entry: usize) -> usize {
    const CAPACITY: usize = 11;
    if len == 0 {
        return 0;
    }
    let leaf = allocation(CAPACITY * entry + 16);
    if len <= CAPACITY {
        return leaf;
    }
    let nodes = len.div_ceil(CAPACITY.div_ceil(2));
    nodes * (leaf + 12 * std::mem::size_of::<usize>())
}

impl FieldValue {
    /// Heap bytes this value holds beyond its place in the record's map.
    pub fn weight(&self) -> usize {
        match self {
            FieldValue::Text(s) => allocation(s.len()),
            FieldValue::List(l) => {
                allocation(l.len() * std::mem::size_of::<String>())
                    + l.iter().map(|s| allocation(s.len())).sum::<usize>()
            }
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
    /// One field's value. A record maps a few dozen fields at most: a scan comparing
    /// names for equality (lengths first, so most names are passed over without reading
    /// them) beats the B-tree's ordered search, whose every step calls `memcmp`; a
    /// profile of the 100,000-person indicators put those lookups at 15% of their CPU.
    pub fn field(&self, field: &str) -> Option<&FieldValue> {
        self.fields
            .iter()
            .find(|(name, _)| **name == field)
            .map(|(_, value)| value)
    }
    pub fn text(&self, field: &str) -> Option<&str> {
        match self.field(field) {
            Some(FieldValue::Text(s)) => Some(s),
            _ => None,
        }
    }
    pub fn date(&self, field: &str) -> Option<NaiveDate> {
        match self.field(field) {
            Some(FieldValue::Date(d)) => Some(*d),
            Some(FieldValue::DateTime(t)) => Some(t.date()),
            _ => None,
        }
    }
    pub fn date_time(&self, field: &str) -> Option<NaiveDateTime> {
        match self.field(field) {
            Some(FieldValue::DateTime(t)) => Some(*t),
            Some(FieldValue::Date(d)) => d.and_hms_opt(0, 0, 0),
            _ => None,
        }
    }
    pub fn bool(&self, field: &str) -> Option<bool> {
        match self.field(field) {
            Some(FieldValue::Bool(b)) => Some(*b),
            _ => None,
        }
    }
    pub fn decimal(&self, field: &str) -> Option<f64> {
        match self.field(field) {
            Some(FieldValue::Decimal(f)) => Some(*f),
            Some(FieldValue::Int(i)) => Some(*i as f64),
            _ => None,
        }
    }
    pub fn list(&self, field: &str) -> Option<&[String]> {
        match self.field(field) {
            Some(FieldValue::List(l)) => Some(l),
            _ => None,
        }
    }

    /// Heap bytes of this record as a shared (`Arc`) allocation, counted as the
    /// allocator counts them (headers, rounding, B-tree nodes' unused room), for the
    /// cache's weigher: a bound on the cache is a bound on memory only if this is true.
    pub fn weight(&self) -> usize {
        let entry = std::mem::size_of::<&str>() + std::mem::size_of::<FieldValue>();
        allocation(std::mem::size_of::<Record>() + 16)
            + allocation(self.local_id.len())
            + self.person_id.as_ref().map_or(0, |p| allocation(p.len()))
            + btree(self.fields.len(), entry)
            + self.fields.values().map(FieldValue::weight).sum::<usize>()
            + btree(self.labels.len(), std::mem::size_of::<String>())
            + self
                .labels
                .iter()
                .map(|l| allocation(l.len()))
                .sum::<usize>()
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
    InvalidPostcode,
    MissingKey,
    /// A value the profile declares means "not known" (`placeholders`).
    PlaceholderValue,
    /// An end-of-time sentinel read as "still open" (`open_values`).
    OpenEndSentinel,
    /// A row whose person does not exist in the source (`orphans`).
    OrphanRecord,
    /// An event without the date that places it in time (a referral's received_at, an
    /// assessment's started, a service's or an episode's start): no report counts it.
    MissingDate,
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

/// The profile's SQL and the engine's result disagree (a column the mapping names is not
/// in the result). A configuration fault, found by the conformance suite.
#[derive(Clone, Debug, thiserror::Error)]
#[error("vendor profile `{profile}`, entity `{entity}`: {reason}")]
pub struct MappingError {
    pub profile: String,
    pub entity: EntityKind,
    pub reason: String,
}

struct Column<'a> {
    name: &'static str,
    ty: FieldType,
    index: usize,
    spec: &'a crate::profile::FieldSpec,
    /// No other field or label reads this cell: its text can be moved out of the row
    /// instead of copied.
    sole_reader: bool,
}

/// Map the rows one of `entity`'s statements returned. The rows are consumed: text a
/// single field reads is moved into its record, not copied (reports map hundreds of
/// thousands of rows, and the copies were a large share of their allocations).
pub fn map_rows(
    profile: &VendorProfile,
    entity: EntityKind,
    rows: RowSet,
) -> Result<Mapped, MappingError> {
    map_rows_reading(profile, entity, rows, Fields::All)
}

/// The fields a reader maps of each record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fields<'a> {
    All,
    /// These fields only, besides the keys (`local_id`, `person_id`) and
    /// `last_updated`, which every record has. Labels are applied as always. For
    /// counting, not release: a report that counts by two dates and a code need not
    /// parse a record's other twenty cells (at 100,000 people, a third of its work).
    Only(&'a [&'a str]),
}

/// Does a read of `only` map the field `name`?
fn maps(name: &str, only: &[&str]) -> bool {
    matches!(name, "local_id" | "person_id" | "last_updated") || only.contains(&name)
}

/// The result columns [`map_rows_reading`] reads for `fields` (the fields' and the
/// label rules'), for [`crate::Connector::query_columns`]; `None`: every column.
pub fn columns_read<'a>(spec: &'a EntitySpec, fields: Fields<'_>) -> Option<Vec<&'a str>> {
    let Fields::Only(only) = fields else {
        return None;
    };
    let fields = spec
        .fields
        .iter()
        .filter(|(name, _)| maps(name.get_ref(), only))
        .map(|(_, f)| f.get_ref().column.as_str());
    let labels = spec
        .labels
        .iter()
        .filter_map(|r| r.get_ref().column.as_deref());
    Some(fields.chain(labels).collect())
}

/// [`map_rows`], mapping only `fields` of each record. Every column the profile maps
/// must still be in the result: a profile fault is found whoever reads.
pub fn map_rows_reading(
    profile: &VendorProfile,
    entity: EntityKind,
    rows: RowSet,
    fields: Fields<'_>,
) -> Result<Mapped, MappingError> {
    let fail = |reason: String| MappingError {
        profile: profile.name().to_string(),
        entity,
        reason,
    };
    let Some(spec) = profile.entity(entity) else {
        return Err(fail("the profile does not map this entity".into()));
    };
    let (mut columns, label_columns) = resolve_columns(spec, entity, &rows).map_err(fail)?;
    if let Fields::Only(only) = fields {
        columns.retain(|c| maps(c.name, only));
    }
    let rules = profile.date_rules;
    let placeholders = &profile.file.vendor.nhs_placeholders;
    let local_id_col = columns
        .iter()
        .find(|c| c.name == "local_id")
        .map(|c| c.index);
    let concat = columns.iter().any(|c| c.spec.concat.is_some());

    let mut out = Mapped {
        records: Vec::with_capacity(rows.rows.len()),
        findings: Vec::new(),
    };
    // With `concat`, rows sharing a local id are one record: remember where each went.
    let mut position: BTreeMap<String, usize> = BTreeMap::new();

    for mut row in rows.rows {
        let Some(local_id) = local_id_col.and_then(|i| row[i].as_key_text()) else {
            out.findings.push(Finding {
                entity,
                local_id: String::new(),
                field: "local_id",
                kind: FindingKind::MissingKey,
                code_value: None,
            });
            continue;
        };
        if concat {
            if let Some(&at) = position.get(&local_id) {
                append_concat(&mut out.records[at], &columns, &row);
                continue;
            }
            position.insert(local_id.clone(), out.records.len());
        }
        let mut record = Record {
            entity,
            local_id,
            person_id: None,
            last_updated: None,
            fields: BTreeMap::new(),
            labels: BTreeSet::new(),
        };
        // Labels first: fields may move their cells' text out of the row.
        for (rule, column) in spec.labels.iter().zip(&label_columns) {
            let rule = rule.get_ref();
            let applies = match column {
                None => true,
                Some(i) => row[*i]
                    .key_str()
                    .is_some_and(|v| rule.values.iter().any(|want| want.eq_ignore_ascii_case(&v))),
            };
            if applies {
                record.labels.insert(rule.label.clone());
            }
        }
        for col in &columns {
            let value = &mut row[col.index];
            match col.name {
                "local_id" => continue,
                "person_id" => {
                    record.person_id = value.as_key_text();
                    if record.person_id.is_none() {
                        out.findings.push(finding(
                            entity,
                            &record.local_id,
                            "person_id",
                            FindingKind::MissingKey,
                            None,
                        ));
                    }
                    continue;
                }
                "last_updated" => {
                    let formats = col.spec.formats.as_deref().unwrap_or_default();
                    record.last_updated =
                        dates::parse_date_time(value, formats, rules).ok().flatten();
                    continue;
                }
                _ => {}
            }
            map_field(
                profile,
                col,
                value,
                rules,
                placeholders,
                &mut record,
                &mut out.findings,
            );
        }
        finish(&mut record, &mut out.findings);
        out.records.push(record);
    }
    Ok(out)
}

/// The fields' columns, and each label rule's column (`None`: the rule has none and
/// always applies).
type Resolved<'a> = (Vec<Column<'a>>, Vec<Option<usize>>);

fn resolve_columns<'a>(
    spec: &'a EntitySpec,
    entity: EntityKind,
    rows: &RowSet,
) -> Result<Resolved<'a>, String> {
    let mut columns = Vec::with_capacity(spec.fields.len());
    for (name, field) in &spec.fields {
        let field = field.get_ref();
        let name: &'static str = match crate::catalog::COMMON_FIELDS
            .iter()
            .find(|c| **c == name.get_ref())
        {
            Some(common) => common,
            None => match entity.field(name.get_ref()) {
                Some(def) => def.name,
                None => return Err(format!("unknown field `{}`", name.get_ref())),
            },
        };
        let ty = entity.field(name).map(|d| d.ty).unwrap_or(FieldType::Text);
        let index = rows.column_index(&field.column).ok_or_else(|| {
            format!(
                "column `{}` (for field `{name}`) is not in the result",
                field.column
            )
        })?;
        columns.push(Column {
            name,
            ty,
            index,
            spec: field,
            sole_reader: false,
        });
    }
    let mut label_columns = Vec::with_capacity(spec.labels.len());
    for rule in &spec.labels {
        let index = match &rule.get_ref().column {
            None => None,
            Some(column) => Some(rows.column_index(column).ok_or_else(|| {
                format!("column `{column}` (for a label rule) is not in the result")
            })?),
        };
        label_columns.push(index);
    }
    let readers = |index: usize| {
        columns.iter().filter(|c| c.index == index).count()
            + label_columns.iter().filter(|i| **i == Some(index)).count()
    };
    let sole: Vec<bool> = columns.iter().map(|c| readers(c.index) == 1).collect();
    for (col, sole) in columns.iter_mut().zip(sole) {
        col.sole_reader = sole;
    }
    Ok((columns, label_columns))
}

fn finding(
    entity: EntityKind,
    local_id: &str,
    field: &'static str,
    kind: FindingKind,
    code_value: Option<String>,
) -> Finding {
    Finding {
        entity,
        local_id: local_id.to_string(),
        field,
        kind,
        code_value,
    }
}

/// A declared "not known" value or end-of-time sentinel: the finding it gives, if any.
fn sentinel(col: &Column<'_>, value: &Value, parsed: Option<NaiveDate>) -> Option<FindingKind> {
    let is = |list: &Option<Vec<String>>| {
        list.as_ref().is_some_and(|list| {
            list.iter().any(|want| match parsed {
                Some(date) => NaiveDate::parse_from_str(want, "%Y-%m-%d").ok() == Some(date),
                None => value
                    .as_key_text()
                    .is_some_and(|v| v.eq_ignore_ascii_case(want.trim())),
            })
        })
    };
    if is(&col.spec.placeholders) {
        Some(FindingKind::PlaceholderValue)
    } else if is(&col.spec.open_values) {
        Some(FindingKind::OpenEndSentinel)
    } else {
        None
    }
}

fn map_field(
    profile: &VendorProfile,
    col: &Column<'_>,
    value: &mut Value,
    rules: dates::DateRules,
    placeholders: &[String],
    record: &mut Record,
    findings: &mut Vec<Finding>,
) {
    let entity = record.entity;
    let local_id = record.local_id.as_str();
    let no_formats = Vec::new();
    let formats = col.spec.formats.as_ref().unwrap_or(&no_formats);
    if !matches!(col.ty, FieldType::Date | FieldType::DateTime) {
        if let Some(kind) = sentinel(col, value, None) {
            findings.push(finding(entity, local_id, col.name, kind, None));
            return;
        }
    }
    let mapped = match col.ty {
        FieldType::Text => {
            let text = cell_text(value, col.sole_reader);
            if col.name == "postcode" {
                if let Some(p) = &text {
                    if !is_uk_postcode(p) {
                        findings.push(finding(
                            entity,
                            local_id,
                            col.name,
                            FindingKind::InvalidPostcode,
                            None,
                        ));
                    }
                }
            }
            text.map(FieldValue::Text)
        }
        FieldType::Int => match number_of(value) {
            Ok(n) => n.map(|n| FieldValue::Int(n as i64)),
            Err(()) => {
                findings.push(finding(
                    entity,
                    local_id,
                    col.name,
                    FindingKind::UnparseableNumber,
                    None,
                ));
                None
            }
        },
        FieldType::Decimal => match number_of(value) {
            Ok(n) => n.map(|n| FieldValue::Decimal(round_cents(n * col.spec.scale.unwrap_or(1.0)))),
            Err(()) => {
                findings.push(finding(
                    entity,
                    local_id,
                    col.name,
                    FindingKind::UnparseableNumber,
                    None,
                ));
                None
            }
        },
        FieldType::Bool => bool_of(value, col.spec.true_values.as_deref())
            .map(|b| FieldValue::Bool(b != col.spec.invert)),
        FieldType::Date => match dates::parse_date(value, formats, rules) {
            Ok(Some(d)) if sentinel(col, value, Some(d)).is_some() => {
                let kind = sentinel(col, value, Some(d)).unwrap_or(FindingKind::PlaceholderValue);
                findings.push(finding(entity, local_id, col.name, kind, None));
                None
            }
            Ok(d) => d.map(FieldValue::Date),
            Err(_) => {
                findings.push(finding(
                    entity,
                    local_id,
                    col.name,
                    FindingKind::UnparseableDate,
                    None,
                ));
                None
            }
        },
        FieldType::DateTime => match dates::parse_date_time(value, formats, rules) {
            Ok(Some(t)) if sentinel(col, value, Some(t.date())).is_some() => {
                let kind =
                    sentinel(col, value, Some(t.date())).unwrap_or(FindingKind::PlaceholderValue);
                findings.push(finding(entity, local_id, col.name, kind, None));
                None
            }
            Ok(t) => t.map(FieldValue::DateTime),
            Err(_) => {
                findings.push(finding(
                    entity,
                    local_id,
                    col.name,
                    FindingKind::UnparseableDate,
                    None,
                ));
                None
            }
        },
        FieldType::TextList => cell_text(value, col.sole_reader)
            .map(|t| FieldValue::List(list_of(&t, col.spec.separator.as_deref()))),
        FieldType::NhsNumber => {
            let raw = cell_text(value, col.sole_reader).unwrap_or_default();
            let (kind, digits, valid) = match nhs::classify(&raw, placeholders) {
                NhsNumber::Valid(d) => (None, Some(d), true),
                NhsNumber::InvalidCheckDigit(d) => {
                    (Some(FindingKind::InvalidNhsNumber), Some(d), false)
                }
                NhsNumber::Malformed => (Some(FindingKind::MalformedNhsNumber), None, false),
                NhsNumber::Placeholder => (Some(FindingKind::PlaceholderNhsNumber), None, false),
                NhsNumber::Missing => (Some(FindingKind::MissingNhsNumber), None, false),
            };
            if let Some(kind) = kind {
                findings.push(finding(entity, local_id, col.name, kind, None));
            }
            if digits.is_some() {
                record
                    .fields
                    .insert("nhs_number_valid", FieldValue::Bool(valid));
            }
            digits.map(FieldValue::Text)
        }
        FieldType::Code(_) => {
            let list = col
                .spec
                .codes
                .as_deref()
                .and_then(|name| profile.code_list(name));
            let raw = value.key_str();
            let hit = match (&raw, list) {
                (Some(raw), Some(list)) => {
                    if list.case_insensitive {
                        list.map.iter().find(|(k, _)| k.eq_ignore_ascii_case(raw))
                    } else {
                        list.map.get_key_value(&**raw)
                    }
                }
                _ => None,
            };
            match (raw, hit, list) {
                (None, _, _) => None,
                (Some(_), Some((_, canonical)), Some(list)) => {
                    let canonical = canonical.get_ref();
                    if list.extend.iter().any(|a| a.get_ref() == canonical) {
                        // A value the deployment added: OTHER, and the added value's name.
                        keep_other(record, col.name, canonical.clone());
                        Some(FieldValue::Text(crate::catalog::OTHER.to_string()))
                    } else {
                        Some(FieldValue::Text(canonical.clone()))
                    }
                }
                (Some(raw), _, list) => {
                    findings.push(finding(
                        entity,
                        local_id,
                        col.name,
                        FindingKind::UnmappedCode,
                        Some(raw.to_string()),
                    ));
                    if list.is_some_and(|l| l.other) {
                        keep_other(record, col.name, raw.into_owned());
                        Some(FieldValue::Text(crate::catalog::OTHER.to_string()))
                    } else {
                        None
                    }
                }
            }
        }
    };
    if let Some(v) = mapped {
        record.fields.insert(col.name, v);
    }
}

/// The vendor's (or the deployment's) own value of a code that is canonically OTHER.
fn keep_other(record: &mut Record, field: &'static str, value: String) {
    if let Some(other) = crate::catalog::other_field(field) {
        record.fields.insert(other, FieldValue::Text(value));
    }
}

fn append_concat(record: &mut Record, columns: &[Column<'_>], row: &[Value]) {
    for col in columns {
        let Some(separator) = &col.spec.concat else {
            continue;
        };
        let Some(more) = text_of(&row[col.index]) else {
            continue;
        };
        match record.fields.get_mut(col.name) {
            Some(FieldValue::Text(text)) => {
                text.push_str(separator);
                text.push_str(&more);
            }
            _ => {
                record.fields.insert(col.name, FieldValue::Text(more));
            }
        }
    }
}

/// Cross-field rules: split one-field names, flag estimated dates and reversed periods.
fn finish(record: &mut Record, findings: &mut Vec<Finding>) {
    if record.entity == EntityKind::Person {
        if let Some(FieldValue::Text(full)) = record.fields.get("full_name").cloned() {
            let (family, given) = split_full_name(&full);
            record
                .fields
                .entry("family_name")
                .or_insert(FieldValue::Text(family));
            if let Some(given) = given {
                record
                    .fields
                    .entry("given_names")
                    .or_insert(FieldValue::Text(given));
            }
        }
        if record.bool("birth_date_estimated") == Some(true) {
            findings.push(finding(
                record.entity,
                &record.local_id,
                "birth_date",
                FindingKind::EstimatedBirthDate,
                None,
            ));
        }
    }
    if let Some(field) = placing_date(record.entity) {
        // A date that did not parse, or a "not known" value, was reported already.
        let reported = findings
            .iter()
            .rev()
            .take_while(|f| f.local_id == record.local_id && f.entity == record.entity)
            .any(|f| f.field == field);
        if record.date(field).is_none() && !reported {
            findings.push(finding(
                record.entity,
                &record.local_id,
                field,
                FindingKind::MissingDate,
                None,
            ));
        }
    }
    for (start, end) in [
        ("start", "end"),
        ("started", "completed"),
        ("started", "authorised"),
        ("received_at", "closed_at"),
        ("actual", "end"),
    ] {
        if let (Some(s), Some(e)) = (record.date(start), record.date(end)) {
            if e < s {
                let field = if end == "end" { "end" } else { end_field(end) };
                findings.push(finding(
                    record.entity,
                    &record.local_id,
                    field,
                    FindingKind::EndBeforeStart,
                    None,
                ));
            }
        }
    }
}

/// The field that places an event in time for reports (the gateway's `record::window`
/// reads it): without it the event is in no period.
pub fn placing_date(entity: EntityKind) -> Option<&'static str> {
    match entity {
        EntityKind::Referral => Some("received_at"),
        EntityKind::Assessment => Some("started"),
        EntityKind::Service | EntityKind::Episode => Some("start"),
        _ => None,
    }
}

fn end_field(name: &str) -> &'static str {
    match name {
        "completed" => "completed",
        "authorised" => "authorised",
        "closed_at" => "closed_at",
        _ => "end",
    }
}

/// "SMITH, John Paul" -> ("Smith", "John Paul"); "John SMITH" -> ("Smith", "John").
fn split_full_name(full: &str) -> (String, Option<String>) {
    let tidy = |s: &str| -> String {
        s.split_whitespace()
            .map(|w| {
                let mut c = w.chars();
                match c.next() {
                    Some(first) => first
                        .to_uppercase()
                        .chain(c.flat_map(|ch| ch.to_lowercase()))
                        .collect(),
                    None => String::new(),
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    if let Some((family, given)) = full.split_once(',') {
        let given = tidy(given);
        return (tidy(family), (!given.is_empty()).then_some(given));
    }
    let mut words: Vec<&str> = full.split_whitespace().collect();
    match words.pop() {
        Some(last) if !words.is_empty() => (tidy(last), Some(tidy(&words.join(" ")))),
        Some(last) => (tidy(last), None),
        None => (String::new(), None),
    }
}

/// UK postcode shape: outward code (letter, letter?, digit, letter-or-digit?), then
/// inward code (digit, letter, letter); space optional, any case.
pub fn is_uk_postcode(raw: &str) -> bool {
    let compact: Vec<char> = raw
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if !(5..=7).contains(&compact.len()) {
        return false;
    }
    let (outward, inward) = compact.split_at(compact.len() - 3);
    let inward_ok = inward[0].is_ascii_digit()
        && inward[1].is_ascii_uppercase()
        && inward[2].is_ascii_uppercase();
    let outward_ok = outward[0].is_ascii_uppercase()
        && outward.iter().all(|c| c.is_ascii_alphanumeric())
        && outward.iter().any(|c| c.is_ascii_digit())
        && (outward[1].is_ascii_digit() || outward.get(2).is_some_and(|c| c.is_ascii_digit()));
    inward_ok && outward_ok
}

/// The cell's text, trimmed; moved out of the row when this field is its only reader
/// and it needs no trimming.
fn cell_text(value: &mut Value, sole_reader: bool) -> Option<String> {
    match value {
        Value::Text(s) if sole_reader && !s.is_empty() && s.trim().len() == s.len() => {
            Some(std::mem::take(s))
        }
        other => text_of(other),
    }
}

fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::Text(s) => {
            let t = s.trim();
            (!t.is_empty()).then(|| t.to_string())
        }
        other => other.as_key_text(),
    }
}

fn number_of(value: &Value) -> Result<Option<f64>, ()> {
    match value {
        Value::Null => Ok(None),
        Value::Int(i) => Ok(Some(*i as f64)),
        Value::Float(f) if f.is_finite() => Ok(Some(*f)),
        Value::Bool(b) => Ok(Some(if *b { 1.0 } else { 0.0 })),
        Value::Text(s) => {
            let t = s.trim().trim_start_matches('£').replace(',', "");
            if t.is_empty() {
                Ok(None)
            } else {
                t.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .map(Some)
                    .ok_or(())
            }
        }
        _ => Err(()),
    }
}

fn round_cents(n: f64) -> f64 {
    (n * 100.0).round() / 100.0
}

fn bool_of(value: &Value, true_values: Option<&[String]>) -> Option<bool> {
    match value {
        Value::Null => None,
        Value::Bool(b) => Some(*b),
        Value::Int(i) => Some(*i != 0),
        Value::Float(f) => Some(*f != 0.0),
        other => {
            let text = other.as_key_text()?;
            Some(match true_values {
                Some(list) => list.iter().any(|t| t.eq_ignore_ascii_case(&text)),
                None => matches!(
                    text.to_ascii_uppercase().as_str(),
                    "1" | "Y" | "YES" | "TRUE" | "T"
                ),
            })
        }
    }
}

/// Text lists: a JSON array of strings, or text split on `separator`.
fn list_of(text: &str, separator: Option<&str>) -> Vec<String> {
    if text.starts_with('[') {
        if let Ok(items) = serde_json::from_str::<Vec<serde_json::Value>>(text) {
            return items
                .into_iter()
                .map(|v| match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                })
                .collect();
        }
    }
    match separator {
        Some(sep) => text
            .split(sep)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        None => vec![text.to_string()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const PROFILE: &str = r#"
[vendor]
name = "tiny"
nhs_placeholders = ["N/K"]
two_digit_year_pivot = 26

[codes.sex]
system = "gender"
case_insensitive = true
map = { M = "MALE", F = "FEMALE", "1" = "MALE", "2" = "FEMALE" }

[entities.person]
by_key = "SELECT * FROM P WHERE ID IN ({keys})"
list = "SELECT * FROM P"
fields.local_id = { column = "ID" }
fields.full_name = { column = "NAME" }
fields.gender = { column = "SEX", codes = "sex" }
fields.birth_date = { column = "DOB", formats = ["%Y%m%d", "%d/%m/%y"] }
fields.nhs_number = { column = "NHS" }
labels = [{ column = "RSTR", values = ["Y"], label = "restricted" }]

[entities.case_note]
by_person = "SELECT * FROM N WHERE PID IN ({keys}) ORDER BY ID, SEQ"
fields.local_id = { column = "ID" }
fields.person_id = { column = "PID" }
fields.text = { column = "TXT", concat = " " }
"#;

    fn rows(columns: &[&str], rows: Vec<Vec<Value>>) -> RowSet {
        RowSet {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows,
        }
    }

    #[test]
    fn dirty_person_rows_map_what_they_can_and_report_the_rest() {
        let profile = VendorProfile::parse(Path::new("tiny.toml"), PROFILE).unwrap();
        let t = |s: &str| Value::Text(s.to_string());
        let rs = rows(
            &["id", "name", "sex", "dob", "nhs", "rstr"],
            vec![
                vec![
                    t("A1"),
                    t("SMITH, John"),
                    t("m"),
                    t("12/03/45"),
                    t("943 476 5919"),
                    t("Y"),
                ],
                vec![
                    t("A2"),
                    t("jones, mary ann"),
                    t("Q"),
                    t("31/02/45"),
                    t("N/K"),
                    Value::Null,
                ],
                vec![
                    Value::Null,
                    t("NO KEY"),
                    t("F"),
                    t("19990101"),
                    Value::Null,
                    Value::Null,
                ],
                vec![
                    t("A3"),
                    t("Bob Brown"),
                    t("2"),
                    t("19990101"),
                    t("9434765918"),
                    t("N"),
                ],
            ],
        );
        let m = map_rows(&profile, EntityKind::Person, rs.clone()).unwrap();
        assert_eq!(m.records.len(), 3);
        let a1 = &m.records[0];
        assert_eq!(a1.text("family_name"), Some("Smith"));
        assert_eq!(a1.text("given_names"), Some("John"));
        assert_eq!(a1.text("gender"), Some("MALE"));
        assert_eq!(a1.date("birth_date"), NaiveDate::from_ymd_opt(1945, 3, 12));
        assert_eq!(a1.text("nhs_number"), Some("9434765919"));
        assert_eq!(a1.bool("nhs_number_valid"), Some(true));
        assert!(a1.labels.contains("restricted"));
        let a2 = &m.records[1];
        assert_eq!(a2.text("family_name"), Some("Jones"));
        assert_eq!(a2.text("given_names"), Some("Mary Ann"));
        assert_eq!(a2.text("gender"), None);
        assert_eq!(a2.date("birth_date"), None);
        let a3 = &m.records[2];
        assert_eq!(a3.text("family_name"), Some("Brown"));
        assert_eq!(a3.text("gender"), Some("FEMALE"));
        assert_eq!(a3.bool("nhs_number_valid"), Some(false));
        let kinds: Vec<_> = m
            .findings
            .iter()
            .map(|f| (f.local_id.as_str(), f.kind))
            .collect();
        assert!(kinds.contains(&("A2", FindingKind::UnmappedCode)));
        assert!(kinds.contains(&("A2", FindingKind::UnparseableDate)));
        assert!(kinds.contains(&("A2", FindingKind::PlaceholderNhsNumber)));
        assert!(kinds.contains(&("", FindingKind::MissingKey)));
        assert!(kinds.contains(&("A3", FindingKind::InvalidNhsNumber)));
        let unmapped = m
            .findings
            .iter()
            .find(|f| f.kind == FindingKind::UnmappedCode)
            .unwrap();
        assert_eq!(unmapped.code_value.as_deref(), Some("Q"));
    }

    /// Fields move their cell's text out of the row only when nothing else reads the
    /// cell: one column feeding two fields and a label gives all three.
    #[test]
    fn a_cell_read_by_two_fields_and_a_label_reaches_all_of_them() {
        let profile = VendorProfile::parse(
            Path::new("shared.toml"),
            r#"
[vendor]
name = "shared"

[codes.svc]
system = "service_type"
map = { SELF = "HOME_CARE" }

[entities.service]
by_person = "SELECT * FROM S WHERE PID IN ({keys})"
fields.local_id = { column = "ID" }
fields.person_id = { column = "ID" }
fields.provider = { column = "WHY" }
fields.component = { column = "WHY" }
fields.type = { column = "HOW", codes = "svc" }
labels = [{ column = "WHY", values = ["SECRET"], label = "restricted" }]
"#,
        )
        .unwrap();
        let t = |s: &str| Value::Text(s.to_string());
        let rs = rows(
            &["ID", "WHY", "HOW"],
            vec![
                vec![t("7"), t("SECRET"), t("SELF")],
                vec![t(" 8 "), t("  padded "), t("FAMILY")],
            ],
        );
        let m = map_rows(&profile, EntityKind::Service, rs).unwrap();
        let first = &m.records[0];
        assert_eq!(first.local_id, "7");
        assert_eq!(first.person_id.as_deref(), Some("7"));
        assert_eq!(first.text("provider"), Some("SECRET"));
        assert_eq!(first.text("component"), Some("SECRET"));
        assert_eq!(first.text("type"), Some("HOME_CARE"));
        assert!(first.labels.contains("restricted"));
        let second = &m.records[1];
        assert_eq!(second.local_id, "8");
        assert_eq!(second.text("provider"), Some("padded"));
        assert_eq!(second.text("component"), Some("padded"));
        assert!(second.labels.is_empty());
        assert_eq!(second.text("type"), None);
        let unmapped = m
            .findings
            .iter()
            .find(|f| f.kind == FindingKind::UnmappedCode);
        assert_eq!(
            unmapped.and_then(|f| f.code_value.as_deref()),
            Some("FAMILY")
        );
    }

    #[test]
    fn postcodes() {
        for ok in [
            "NS1 4AB", "ns14ab", "SW1A 1AA", "M1 1AE", "B33 8TH", "CR2 6XH",
        ] {
            assert!(is_uk_postcode(ok), "{ok}");
        }
        for bad in ["NS1", "12345", "NS1 4A", "ZZ ZZZ", "N S 1 4 A B C"] {
            assert!(!is_uk_postcode(bad), "{bad}");
        }
    }

    #[test]
    fn notes_split_over_rows_are_joined_in_order() {
        let profile = VendorProfile::parse(Path::new("tiny.toml"), PROFILE).unwrap();
        let t = |s: &str| Value::Text(s.to_string());
        let rs = rows(
            &["ID", "PID", "TXT"],
            vec![
                vec![t("N1"), t("A1"), t("Visited at home.")],
                vec![t("N1"), t("A1"), t("All well.  ")],
                vec![t("N2"), t("A1"), t("Phone call.")],
            ],
        );
        let m = map_rows(&profile, EntityKind::CaseNote, rs.clone()).unwrap();
        assert_eq!(m.records.len(), 2);
        assert_eq!(
            m.records[0].text("text"),
            Some("Visited at home. All well.")
        );
        assert_eq!(m.records[0].person_id.as_deref(), Some("A1"));
    }

    #[test]
    fn a_column_missing_from_the_result_names_profile_and_entity() {
        let profile = VendorProfile::parse(Path::new("tiny.toml"), PROFILE).unwrap();
        let rs = rows(&["ID", "PID"], vec![]);
        let err = map_rows(&profile, EntityKind::CaseNote, rs.clone()).unwrap_err();
        assert!(err.to_string().contains("tiny"));
        assert!(err.to_string().contains("case_note"));
        assert!(err.to_string().contains("TXT"));
    }

    #[test]
    fn config_errors_name_file_line_and_reason() {
        let bad = PROFILE.replace(
            "fields.text = { column = \"TXT\"",
            "fields.texte = { column = \"TXT\"",
        );
        let err = VendorProfile::parse(Path::new("tiny.toml"), &bad).unwrap_err();
        assert_eq!(err.path, Path::new("tiny.toml"));
        assert_eq!(err.line, 26);
        assert!(
            err.reason.contains("unknown field `texte`"),
            "{}",
            err.reason
        );

        let bad = PROFILE.replace("\"2\" = \"FEMALE\"", "\"2\" = \"WOMAN\"");
        let err = VendorProfile::parse(Path::new("tiny.toml"), &bad).unwrap_err();
        assert_eq!(err.line, 10);
        assert!(err.reason.contains("WOMAN"), "{}", err.reason);

        let bad = PROFILE.replace("[entities.case_note]", "[entities.case_notes]");
        let err = VendorProfile::parse(Path::new("tiny.toml"), &bad).unwrap_err();
        assert_eq!(err.line, 22);
        assert!(err.reason.contains("unknown entity"), "{}", err.reason);

        let bad = PROFILE.replace("nhs_placeholders", "nhs_placeholder");
        let err = VendorProfile::parse(Path::new("tiny.toml"), &bad).unwrap_err();
        assert_eq!(err.line, 4);
        assert!(err.reason.contains("nhs_placeholder"), "{}", err.reason);
    }
}
