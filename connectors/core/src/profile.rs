//! Vendor profiles: `config/vendors/<vendor>.toml`, the declarative connector.
//!
//! A profile says, for each ESCR entity the vendor holds, which SQL (in the vendor's
//! dialect) loads it and how columns become fields. SQL may use two markers, expanded
//! into bound-parameter placeholders, never into values:
//! - `{keys}`: a list of keys (`?, ?, ?` or `@P1, @P2, @P3`), chunked by the
//!   connector's max batch size;
//! - `{since}`: one timestamp (incremental indexing);
//! - `{from}`, `{to}`: a date range (`by_person_between`, for reports). The gateway
//!   widens the range by a day each side and filters exactly after mapping, so the SQL
//!   only has to return a superset: push down what the columns allow.
//!
//! ```toml
//! [vendor]
//! name = "casetrak"
//! description = "CaseTrak case management (SQL Server)"
//!
//! [codes.sex]
//! system = "gender"            # a catalog code system
//! case_insensitive = true
//! map = { M = "MALE", F = "FEMALE", U = "UNKNOWN", I = "INDETERMINATE" }
//!
//! [entities.person]
//! by_key = "SELECT ... FROM CLNT WHERE CLNT_ID IN ({keys})"
//! list = "SELECT ... FROM CLNT"
//! changed_since = "SELECT ... FROM CLNT WHERE UPD_DTTM > {since}"
//! deleted_since = "SELECT CLNT_ID FROM CLNT_DEL WHERE DEL_DTTM > {since}"  # optional
//! fields.local_id = { column = "CLNT_ID" }
//! fields.gender = { column = "SEX", codes = "sex" }
//! fields.birth_date = { column = "DOB", formats = ["%Y-%m-%d %H:%M:%S%.f"] }
//! fields.birth_date_estimated = { column = "DOB_EST", true_values = ["Y"] }
//! labels = [{ column = "RSTR_FLG", values = ["Y"], label = "restricted" }]
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::catalog::{EntityKind, FieldType, COMMON_FIELDS};
use crate::error_config::ConfigError;

/// Sensitivity labels a profile may attach (design section 5).
pub const KNOWN_LABELS: [&str; 7] = [
    "safeguarding",
    "mental_health",
    "sexual_health",
    "adoption",
    "third_party",
    "restricted",
    "sealed",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    pub vendor: VendorSection,
    #[serde(default)]
    pub codes: BTreeMap<String, Spanned<CodeList>>,
    #[serde(default)]
    pub entities: BTreeMap<Spanned<String>, Spanned<EntitySpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VendorSection {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Values of an NHS-number column that mean "not known" (compared after removing
    /// spaces, case-insensitively), besides blank.
    #[serde(default)]
    pub nhs_placeholders: Vec<String>,
    /// Two-digit years at or below this are 20yy, above it 19yy. Default: the current
    /// year's last two digits (no date in the future).
    #[serde(default)]
    pub two_digit_year_pivot: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeList {
    /// The catalog code system the canonical values belong to.
    pub system: Spanned<String>,
    #[serde(default)]
    pub case_insensitive: bool,
    pub map: BTreeMap<String, Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntitySpec {
    /// Records by their own local ids: `{keys}` required.
    pub by_key: Option<Spanned<String>>,
    /// Records by their person's local ids: `{keys}` required (person-scoped entities).
    pub by_person: Option<Spanned<String>>,
    /// Records of these people (`{keys}`) active at some time between `{from}` and
    /// `{to}`: events dated in the range, spans overlapping it. Optional: reports use
    /// `by_person` and filter when it is absent (a vendor storing dates as text in
    /// mixed formats cannot compare them in SQL).
    pub by_person_between: Option<Spanned<String>>,
    /// Every record (used by the identity index for `person`).
    pub list: Option<Spanned<String>>,
    /// Records changed after `{since}` (incremental index refresh).
    pub changed_since: Option<Spanned<String>>,
    /// Person records deleted or soft-deleted after `{since}`: the `local_id` column of
    /// each (incremental index refresh; they leave the index). Person only.
    pub deleted_since: Option<Spanned<String>>,
    pub fields: BTreeMap<Spanned<String>, Spanned<FieldSpec>>,
    #[serde(default)]
    pub labels: Vec<Spanned<LabelRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    pub column: String,
    /// Code list name (for code fields).
    pub codes: Option<String>,
    /// chrono formats tried in order (for date and date-time fields given as text).
    pub formats: Option<Vec<String>>,
    /// Values meaning true (for bool fields given as text); compared trimmed, any case.
    pub true_values: Option<Vec<String>>,
    /// Split text on this separator (for list fields not stored as a JSON array).
    pub separator: Option<String>,
    /// Multiply numbers by this (pence to pounds: 0.01).
    pub scale: Option<f64>,
    /// Rows sharing a local id are one record; this field's texts are joined with this
    /// separator, in row order (notes stored one line per row).
    pub concat: Option<String>,
}

/// Attach `label` when `column` holds one of `values` (or always, if `values` is empty
/// and `column` is absent).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelRule {
    pub column: Option<String>,
    #[serde(default)]
    pub values: Vec<String>,
    pub label: String,
}

/// A validated profile, ready for the mapping engine.
#[derive(Debug)]
pub struct VendorProfile {
    pub path: PathBuf,
    pub file: ProfileFile,
}

impl VendorProfile {
    pub fn name(&self) -> &str {
        &self.file.vendor.name
    }

    pub fn entity(&self, kind: EntityKind) -> Option<&EntitySpec> {
        self.file
            .entities
            .iter()
            .find(|(k, _)| k.get_ref() == kind.name())
            .map(|(_, v)| v.get_ref())
    }

    pub fn entities(&self) -> impl Iterator<Item = (EntityKind, &EntitySpec)> {
        self.file
            .entities
            .iter()
            .filter_map(|(k, v)| EntityKind::from_name(k.get_ref()).map(|kind| (kind, v.get_ref())))
    }

    pub fn code_list(&self, name: &str) -> Option<&CodeList> {
        self.file.codes.get(name).map(|c| c.get_ref())
    }

    pub fn load(path: &Path) -> Result<VendorProfile, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, e.to_string()))?;
        Self::parse(path, &text)
    }

    /// Parse and validate; every error names the file, the line and the reason.
    pub fn parse(path: &Path, text: &str) -> Result<VendorProfile, ConfigError> {
        let file: ProfileFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            ConfigError::at(path, line, e.message().to_string())
        })?;
        validate(path, text, &file)?;
        Ok(VendorProfile {
            path: path.to_path_buf(),
            file,
        })
    }
}

/// 1-based line of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn validate(path: &Path, text: &str, file: &ProfileFile) -> Result<(), ConfigError> {
    let err = |offset: usize, msg: String| ConfigError::at(path, line_of(text, offset), msg);

    for (name, list) in &file.codes {
        let system_name = list.get_ref().system.get_ref();
        let Some(system) = crate::catalog::CodeSystem::from_name(system_name) else {
            return Err(err(
                list.get_ref().system.span().start,
                format!("code list `{name}`: unknown code system `{system_name}`"),
            ));
        };
        for (from, to) in &list.get_ref().map {
            if !system.values().contains(&to.get_ref().as_str()) {
                return Err(err(
                    to.span().start,
                    format!(
                        "code list `{name}`: `{from}` maps to `{}`, which is not a `{}` code (expected one of {})",
                        to.get_ref(),
                        system.name(),
                        system.values().join(", ")
                    ),
                ));
            }
        }
    }

    for (entity_name, spec) in &file.entities {
        let Some(kind) = EntityKind::from_name(entity_name.get_ref()) else {
            return Err(err(
                entity_name.span().start,
                format!(
                    "unknown entity `{}` (expected one of {})",
                    entity_name.get_ref(),
                    EntityKind::ALL.map(|k| k.name()).join(", ")
                ),
            ));
        };
        let spec_ref = spec.get_ref();
        let at_entity = spec.span().start;

        let has_local_id = spec_ref.fields.keys().any(|k| k.get_ref() == "local_id");
        if !has_local_id {
            return Err(err(
                at_entity,
                format!("entity `{kind}`: missing key field `local_id`"),
            ));
        }
        if kind.is_person_scoped() {
            if !spec_ref.fields.keys().any(|k| k.get_ref() == "person_id") {
                return Err(err(
                    at_entity,
                    format!("entity `{kind}`: missing key field `person_id`"),
                ));
            }
            if spec_ref.by_person.is_none() {
                return Err(err(
                    at_entity,
                    format!("entity `{kind}`: needs `by_person` SQL"),
                ));
            }
        }
        if let Some(sql) = spec_ref
            .deleted_since
            .as_ref()
            .filter(|_| kind != EntityKind::Person)
        {
            return Err(err(
                sql.span().start,
                format!("entity `{kind}`: `deleted_since` is for `person` only"),
            ));
        }
        if kind == EntityKind::Person && (spec_ref.by_key.is_none() || spec_ref.list.is_none()) {
            return Err(err(
                at_entity,
                "entity `person`: needs `by_key` and `list` SQL".into(),
            ));
        }

        for (label, sql) in [
            ("by_key", &spec_ref.by_key),
            ("by_person", &spec_ref.by_person),
            ("by_person_between", &spec_ref.by_person_between),
            ("list", &spec_ref.list),
            ("changed_since", &spec_ref.changed_since),
            ("deleted_since", &spec_ref.deleted_since),
        ] {
            let Some(sql) = sql else { continue };
            let expected: &[&str] = match label {
                "by_key" | "by_person" => &["keys"],
                "changed_since" | "deleted_since" => &["since"],
                "by_person_between" => &["keys", "from", "to"],
                _ => &[],
            };
            if let Err(reason) = crate::sql::check_markers(sql.get_ref(), expected) {
                return Err(err(
                    sql.span().start,
                    format!("entity `{kind}`, `{label}`: {reason}"),
                ));
            }
        }

        for (field_name, field) in &spec_ref.fields {
            let name = field_name.get_ref().as_str();
            let field_ref = field.get_ref();
            let at = field_name.span().start;
            let ty = if COMMON_FIELDS.contains(&name) {
                if name == "last_updated" {
                    FieldType::DateTime
                } else {
                    FieldType::Text
                }
            } else if let Some(def) = kind.field(name) {
                def.ty
            } else {
                return Err(err(
                    at,
                    format!(
                        "entity `{kind}`: unknown field `{name}` (expected one of {}, {})",
                        COMMON_FIELDS.join(", "),
                        kind.fields()
                            .iter()
                            .map(|f| f.name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            };
            if name == "person_id" && !kind.is_person_scoped() {
                return Err(err(
                    at,
                    format!("entity `{kind}` is not person-scoped: no `person_id`"),
                ));
            }
            match (ty, &field_ref.codes) {
                (FieldType::Code(system), Some(list)) => {
                    let Some(code_list) = file.codes.get(list) else {
                        return Err(err(
                            at,
                            format!("field `{kind}.{name}`: unknown code list `{list}`"),
                        ));
                    };
                    if code_list.get_ref().system.get_ref() != system.name() {
                        return Err(err(
                            at,
                            format!(
                                "field `{kind}.{name}`: code list `{list}` is for `{}`, the field needs `{}`",
                                code_list.get_ref().system.get_ref(),
                                system.name()
                            ),
                        ));
                    }
                }
                (FieldType::Code(system), None) => {
                    return Err(err(
                        at,
                        format!(
                            "field `{kind}.{name}`: needs `codes`, a code list for `{}`",
                            system.name()
                        ),
                    ))
                }
                (_, Some(_)) => {
                    return Err(err(
                        at,
                        format!("field `{kind}.{name}` is not a code field: drop `codes`"),
                    ))
                }
                _ => {}
            }
            if field_ref.formats.is_some() && !matches!(ty, FieldType::Date | FieldType::DateTime) {
                return Err(err(
                    at,
                    format!("field `{kind}.{name}` is not a date: drop `formats`"),
                ));
            }
            if let Some(formats) = &field_ref.formats {
                for f in formats {
                    if let Err(reason) = crate::dates::check_format(f) {
                        return Err(err(
                            at,
                            format!("field `{kind}.{name}`: format `{f}`: {reason}"),
                        ));
                    }
                }
            }
            if field_ref.true_values.is_some() && ty != FieldType::Bool {
                return Err(err(
                    at,
                    format!("field `{kind}.{name}` is not a bool: drop `true_values`"),
                ));
            }
            if field_ref.concat.is_some() && ty != FieldType::Text {
                return Err(err(
                    at,
                    format!("field `{kind}.{name}`: `concat` applies to text fields"),
                ));
            }
        }

        for rule in &spec_ref.labels {
            let label = &rule.get_ref().label;
            if !KNOWN_LABELS.contains(&label.as_str()) {
                return Err(err(
                    rule.span().start,
                    format!(
                        "entity `{kind}`: unknown label `{label}` (expected one of {})",
                        KNOWN_LABELS.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(())
}
