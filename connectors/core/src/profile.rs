//! Vendor profiles: `config/vendors/<vendor>.toml`, the declarative connector. Every key
//! is in `docs/vendor-profile-reference.md`, generated from [`crate::reference`].
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
pub const KNOWN_LABELS: [&str; 8] = [
    "safeguarding",
    "mental_health",
    "sexual_health",
    "adoption",
    "third_party",
    "restricted",
    "sealed",
    // Visible to the record's own team only (a vendor's note visibility "team").
    "team_only",
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
    /// The IANA time zone of the vendor's wall-clock date-times; epoch values are shown
    /// in it. Default `Europe/London`.
    #[serde(default)]
    pub time_zone: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeList {
    /// The catalog code system the canonical values belong to.
    pub system: Spanned<String>,
    #[serde(default)]
    pub case_insensitive: bool,
    pub map: BTreeMap<String, Spanned<String>>,
    /// Vendor values the map does not name become the canonical `OTHER`, keeping the
    /// vendor's value (still reported as unmapped). The system must have `OTHER`.
    #[serde(default)]
    pub other: bool,
    /// Values this deployment adds to the code system (`MEALS`, `RESPITE`): the map may
    /// name them; a record then holds `OTHER` with the added value's name beside it.
    #[serde(default)]
    pub extend: Vec<Spanned<String>>,
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
    /// Allocations to these workers (`{keys}`: worker ids), for a worker's caseload
    /// (without it the caseload reads the allocations of every person). Allocation
    /// only.
    pub by_worker: Option<Spanned<String>>,
    /// One statement for the entity, without markers, to which the gateway adds the
    /// look-up: `by_key` and `by_person` (and `list` for people) that are not written
    /// out become `SELECT * FROM (<base>) escr_base WHERE escr_base.<column> IN ({keys})`,
    /// the column being `local_id`'s or `person_id`'s. No `ORDER BY` in it (SQL Server
    /// refuses one in a derived table): `concat` entities write their statements out.
    pub base: Option<Spanned<String>>,
    /// Rows of this entity whose person does not exist (a statement without markers,
    /// returning the entity's columns): counted in the data-quality report, never
    /// served.
    pub orphans: Option<Spanned<String>>,
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
    /// chrono formats tried in order (for date and date-time fields given as text), and
    /// `epoch_seconds` / `epoch_millis` for numbers since 1970-01-01 UTC.
    pub formats: Option<Vec<String>>,
    /// Values meaning true (for bool fields given as text); compared trimmed, any case.
    pub true_values: Option<Vec<String>>,
    /// The column says the opposite of the field (an opt-out flag mapped to an opt-in
    /// field, `N` meaning restricted): the bool read is negated, after `true_values`.
    #[serde(default)]
    pub invert: bool,
    /// Values meaning "not known" (a birth date of 1900-01-01, `UNKNOWN`): the field is
    /// left empty and a `PLACEHOLDER_VALUE` finding names it. Compared as dates for date
    /// fields (write them `YYYY-MM-DD`), else as trimmed text, any case.
    pub placeholders: Option<Vec<String>>,
    /// End-of-time sentinels meaning "still open" (4712-12-31): the end is left empty
    /// (open) and an `OPEN_END_SENTINEL` finding names it. Date and date-time fields;
    /// written `YYYY-MM-DD`.
    pub open_values: Option<Vec<String>>,
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
    /// The pivot and time zone its dates are read with.
    pub date_rules: crate::dates::DateRules,
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
        let mut file: ProfileFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            ConfigError::at(path, line, e.message().to_string())
        })?;
        derive_from_base(path, text, &mut file)?;
        validate(path, text, &file)?;
        let zone = match &file.vendor.time_zone {
            Some(name) => crate::dates::parse_zone(name.get_ref()).map_err(|reason| {
                ConfigError::at(path, line_of(text, name.span().start), reason)
            })?,
            None => crate::dates::DateRules::default().zone,
        };
        let date_rules = crate::dates::DateRules {
            pivot: file
                .vendor
                .two_digit_year_pivot
                .unwrap_or_else(crate::dates::default_pivot),
            zone,
        };
        Ok(VendorProfile {
            path: path.to_path_buf(),
            file,
            date_rules,
        })
    }
}

/// The alias of the derived table a `base` statement is wrapped in.
pub const BASE_ALIAS: &str = "escr_base";

/// Write out the statements an entity's `base` implies and the profile leaves out.
fn derive_from_base(path: &Path, text: &str, file: &mut ProfileFile) -> Result<(), ConfigError> {
    for (entity_name, spec) in file.entities.iter_mut() {
        let spec = spec.get_mut();
        let Some(base) = spec.base.clone() else {
            continue;
        };
        let at = |reason: String| ConfigError::at(path, line_of(text, base.span().start), reason);
        let entity = entity_name.get_ref();
        if let Err(reason) = crate::sql::check_markers(base.get_ref(), &[]) {
            return Err(at(format!("entity `{entity}`, `base`: {reason}")));
        }
        if base.get_ref().to_ascii_uppercase().contains("ORDER BY") {
            return Err(at(format!(
                "entity `{entity}`, `base`: no ORDER BY in a base statement (it becomes a derived table)"
            )));
        }
        let column_of = |field: &str| {
            spec.fields
                .iter()
                .find(|(k, _)| k.get_ref() == field)
                .map(|(_, f)| f.get_ref().column.clone())
        };
        let wrap = |column: &str| {
            format!(
                "SELECT * FROM ({}) {BASE_ALIAS} WHERE {BASE_ALIAS}.{column} IN ({{keys}})",
                base.get_ref()
            )
        };
        let derived = |sql: String| Spanned::new(base.span(), sql);
        let concat = spec.fields.values().any(|f| f.get_ref().concat.is_some());
        let local_id = column_of("local_id");
        let person_id = column_of("person_id");
        if concat && (spec.by_key.is_none() || (person_id.is_some() && spec.by_person.is_none())) {
            return Err(at(format!(
                "entity `{entity}`: `concat` joins rows in order; write `by_key` and `by_person` out with ORDER BY"
            )));
        }
        if spec.by_key.is_none() {
            if let Some(c) = &local_id {
                spec.by_key = Some(derived(wrap(c)));
            }
        }
        if spec.by_person.is_none() {
            if let Some(c) = &person_id {
                spec.by_person = Some(derived(wrap(c)));
            }
        }
        if entity == "person" && spec.list.is_none() {
            spec.list = Some(derived(base.get_ref().clone()));
        }
    }
    Ok(())
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
        let list_ref = list.get_ref();
        if list_ref.other && !system.has_other() {
            return Err(err(
                list.span().start,
                format!(
                    "code list `{name}`: `other` needs an OTHER value, and `{}` has none",
                    system.name()
                ),
            ));
        }
        for added in &list_ref.extend {
            let v = added.get_ref();
            if system.values().contains(&v.as_str()) {
                return Err(err(
                    added.span().start,
                    format!(
                        "code list `{name}`: `{v}` is already a `{}` code",
                        system.name()
                    ),
                ));
            }
            if !system.has_other() {
                return Err(err(
                    added.span().start,
                    format!(
                        "code list `{name}`: `{}` has no OTHER value to extend",
                        system.name()
                    ),
                ));
            }
            let shape = !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                && v.starts_with(|c: char| c.is_ascii_uppercase());
            if !shape {
                return Err(err(
                    added.span().start,
                    format!("code list `{name}`: `{v}`: added values are written LIKE_THIS"),
                ));
            }
        }
        for (from, to) in &list_ref.map {
            let added = list_ref.extend.iter().any(|a| a.get_ref() == to.get_ref());
            if !added && !system.values().contains(&to.get_ref().as_str()) {
                return Err(err(
                    to.span().start,
                    format!(
                        "code list `{name}`: `{from}` maps to `{}`, which is not a `{}` code (expected one of {}, or a value of `extend`)",
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
        // Statements only one entity has.
        for (label, sql, owner) in [
            ("deleted_since", &spec_ref.deleted_since, EntityKind::Person),
            ("by_worker", &spec_ref.by_worker, EntityKind::Allocation),
        ] {
            if let Some(sql) = sql.as_ref().filter(|_| kind != owner) {
                return Err(err(
                    sql.span().start,
                    format!("entity `{kind}`: `{label}` is for `{owner}` only"),
                ));
            }
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
            ("by_worker", &spec_ref.by_worker),
            ("orphans", &spec_ref.orphans),
        ] {
            let Some(sql) = sql else { continue };
            if label == "orphans" && !kind.is_person_scoped() {
                return Err(err(
                    sql.span().start,
                    format!("entity `{kind}` is not person-scoped: no `orphans`"),
                ));
            }
            let expected: &[&str] = match label {
                "by_key" | "by_person" | "by_worker" => &["keys"],
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
            if field_ref.invert && ty != FieldType::Bool {
                return Err(err(
                    at,
                    format!("field `{kind}.{name}` is not a bool: drop `invert`"),
                ));
            }
            let is_date = matches!(ty, FieldType::Date | FieldType::DateTime);
            for (option, values) in [
                ("placeholders", &field_ref.placeholders),
                ("open_values", &field_ref.open_values),
            ] {
                let Some(values) = values else { continue };
                if option == "open_values" && !is_date {
                    return Err(err(
                        at,
                        format!("field `{kind}.{name}` is not a date: drop `open_values`"),
                    ));
                }
                if values.is_empty() {
                    return Err(err(
                        at,
                        format!("field `{kind}.{name}`: `{option}` is empty"),
                    ));
                }
                for v in values {
                    if is_date && chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").is_err() {
                        return Err(err(
                            at,
                            format!(
                                "field `{kind}.{name}`: `{option}` value `{v}` is not a date (write YYYY-MM-DD)"
                            ),
                        ));
                    }
                }
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
