//! The vendor profile format's reference, generated from the code: every key with its
//! type, default and meaning (next to the types that read them, in [`crate::profile`]),
//! the catalog's entities and fields, the code systems and the findings. Rendered into
//! `docs/vendor-profile-reference.md`; a test fails when that file, or this table and
//! the keys serde actually reads, drift apart (`ESCR_BLESS=1` rewrites the file).

use crate::catalog::{CodeSystem, EntityKind, FieldType, COMMON_FIELDS};

/// One key of the format.
#[derive(Clone, Copy, Debug)]
pub struct KeyDoc {
    pub key: &'static str,
    pub ty: &'static str,
    pub default: &'static str,
    pub meaning: &'static str,
}

macro_rules! keys {
    ($($key:literal : $ty:literal = $default:literal, $meaning:literal;)*) => {
        &[$(KeyDoc { key: $key, ty: $ty, default: $default, meaning: $meaning }),*]
    };
}

/// The top level of a profile file.
pub const TOP: &[KeyDoc] = keys! {
    "vendor": "table" = "required", "the vendor: `[vendor]` below";
    "codes": "table of tables" = "none", "code lists, `[codes.<list>]`, named by fields' `codes`";
    "entities": "table of tables" = "none", "what the vendor holds, `[entities.<entity>]`: one per catalog entity";
};

/// `[vendor]`.
pub const VENDOR: &[KeyDoc] = keys! {
    "name": "string" = "required", "the vendor's name in errors and provenance";
    "description": "string" = "\"\"", "free text for operators";
    "nhs_placeholders": "array of strings" = "[]", "values of an NHS-number column meaning \"not known\" besides blank (compared without spaces or dashes, any case); repeated-digit numbers always are";
    "two_digit_year_pivot": "integer" = "this year's last two digits", "two-digit years at or below it are 20yy, above it 19yy";
    "time_zone": "string (IANA zone)" = "\"Europe/London\"", "the zone of the vendor's wall-clock date-times; epoch values are shown in it, so both order together";
};

/// `[codes.<list>]`.
pub const CODE_LIST: &[KeyDoc] = keys! {
    "system": "string" = "required", "the catalog code system the canonical values belong to (below)";
    "map": "table of strings" = "required", "the vendor's code -> a canonical value (or a value of `extend`)";
    "case_insensitive": "bool" = "false", "match the vendor's codes in any case";
    "other": "bool" = "false", "vendor codes the map does not name become `OTHER`, keeping the vendor's code (GraphQL `<field>Other`); still reported as unmapped. The system must have `OTHER`";
    "extend": "array of strings" = "[]", "values this deployment adds to the system (`MEALS`, `RESPITE`), written LIKE_THIS; the map may name them; a record holds `OTHER` with the added value beside it";
};

/// `[entities.<entity>]`.
pub const ENTITY: &[KeyDoc] = keys! {
    "by_key": "SQL with `{keys}`" = "from `base`", "records by their own local ids; required for `person` (or `base`)";
    "by_person": "SQL with `{keys}`" = "from `base`", "records by their person's local ids; required for person-scoped entities (or `base`)";
    "by_person_between": "SQL with `{keys}`, `{from}`, `{to}`" = "none", "the people's records active between the dates, for reports (a record ending before it starts spans both its dates, the earlier first); may return more, never less (the gateway widens the range by a day and filters exactly); leave it out where dates cannot be compared in SQL";
    "list": "SQL" = "`base` (person)", "every record (the identity index reads people with it); required for `person`";
    "changed_since": "SQL with `{since}`" = "none", "records changed after a time (incremental index refresh)";
    "deleted_since": "SQL with `{since}`" = "none", "local ids of person records deleted or soft-deleted after a time (incremental index refresh takes them out); person only";
    "by_worker": "SQL with `{keys}`" = "none", "allocations to these workers (`{keys}` are worker ids), for a worker's caseload (`myCaseload`); without it the caseload reads the allocations of every person in the index; allocation only";
    "base": "SQL" = "none", "one statement for the entity, no markers and no ORDER BY: `by_key`, `by_person` and `list` left out become `SELECT * FROM (<base>) escr_base WHERE escr_base.<local_id or person_id column> IN ({keys})`";
    "orphans": "SQL" = "none", "rows whose person does not exist (no markers; the entity's columns): counted in the data-quality report, never served; person-scoped entities";
    "fields": "table of field specs" = "required", "`fields.<field> = { ... }`: how columns become the catalog's fields (below); `local_id` always, `person_id` for person-scoped entities";
    "labels": "array of label rules" = "[]", "sensitivity labels a record carries (below)";
};

/// `fields.<field> = { ... }`.
pub const FIELD: &[KeyDoc] = keys! {
    "column": "string" = "required", "the result column (any case)";
    "codes": "string" = "none", "the code list of a code field (required for code fields, refused elsewhere)";
    "formats": "array of strings" = "ISO 8601 only", "date and date-time fields: chrono formats tried in order, and `epoch_seconds` / `epoch_millis` for numbers since 1970-01-01 UTC (integers or digits); every format needs a day";
    "true_values": "array of strings" = "1, Y, YES, TRUE, T", "bool fields given as text: the values meaning true (trimmed, any case); numbers are true when not 0";
    "invert": "bool" = "false", "bool fields: the column says the opposite (an opt-out flag for an opt-in field): the value read is negated, after `true_values`";
    "placeholders": "array of strings" = "none", "values meaning \"not known\" (a 1900-01-01 birth date, `UNKNOWN`): the field stays empty and a PLACEHOLDER_VALUE finding names it; dates written YYYY-MM-DD and compared as dates, other values as trimmed text in any case";
    "open_values": "array of strings" = "none", "date fields: end-of-time sentinels (4712-12-31) meaning still open: the field stays empty and an OPEN_END_SENTINEL finding names it; written YYYY-MM-DD";
    "separator": "string" = "none", "text-list fields not stored as a JSON array: split on this";
    "scale": "number" = "1", "decimal fields: multiply by this (pence to pounds: 0.01)";
    "concat": "string" = "none", "text fields: rows sharing a local id are one record, this field's texts joined with it in row order (notes one line per row)";
};

/// `labels = [{ ... }]`.
pub const LABEL: &[KeyDoc] = keys! {
    "label": "string" = "required", "the label (below)";
    "column": "string" = "none (always)", "attach the label when this column holds one of `values`; without it every record carries the label";
    "values": "array of strings" = "[]", "the column's values (trimmed, any case)";
};

/// What each data-quality finding means.
pub const FINDINGS: &[(&str, &str)] = &[
    ("MISSING_NHS_NUMBER", "no NHS number"),
    ("PLACEHOLDER_NHS_NUMBER", "an NHS number meaning \"not known\""),
    ("INVALID_NHS_NUMBER", "ten digits, wrong check digit (kept, marked not valid)"),
    ("MALFORMED_NHS_NUMBER", "not ten digits"),
    ("UNMAPPED_CODE", "a vendor code the code list does not map (with the code); `other` keeps it as OTHER"),
    ("UNPARSEABLE_DATE", "a date in none of the formats"),
    ("MISSING_DATE", "an event without the date that places it in time (a referral's `received_at`, an assessment's `started`, a service's or an episode's `start`): no report counts it"),
    ("UNPARSEABLE_NUMBER", "a number that is not one"),
    ("ESTIMATED_BIRTH_DATE", "the vendor flags the birth date as estimated"),
    ("END_BEFORE_START", "an end (end, completed, authorised, closed_at) before its start (start, started, received_at, a visit's actual)"),
    ("INVALID_POSTCODE", "not the shape of a UK postcode"),
    ("MISSING_KEY", "no local id, or no person id"),
    ("PLACEHOLDER_VALUE", "a value the profile's `placeholders` say means \"not known\""),
    ("OPEN_END_SENTINEL", "an end-of-time sentinel from `open_values`, read as open"),
    ("ORPHAN_RECORD", "a row the entity's `orphans` statement returned: its person does not exist"),
];

fn type_name(ty: FieldType) -> String {
    match ty {
        FieldType::Text => "text".into(),
        FieldType::Int => "integer".into(),
        FieldType::Decimal => "decimal".into(),
        FieldType::Bool => "bool".into(),
        FieldType::Date => "date".into(),
        FieldType::DateTime => "date-time".into(),
        FieldType::TextList => "text list".into(),
        FieldType::NhsNumber => "NHS number".into(),
        FieldType::Code(system) => format!("code (`{}`)", system.name()),
    }
}

fn table(out: &mut String, keys: &[KeyDoc]) {
    out.push_str("| key | type | default | meaning |\n|---|---|---|---|\n");
    for k in keys {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            k.key, k.ty, k.default, k.meaning
        ));
    }
    out.push('\n');
}

/// The reference as Markdown.
pub fn render() -> String {
    let mut out = String::from(
        "# Vendor profile reference\n\n\
         Generated from `connectors/core/src/reference.rs` and the catalog \
         (`connectors/core/src/catalog.rs`); a test fails when this file drifts from them \
         (`ESCR_BLESS=1 cargo test -p escr-connector reference` rewrites it). \
         `escr check-config <profile.toml>` validates one profile; errors name the file, \
         the line and the reason. Unknown keys are errors.\n\n\
         SQL may use markers, expanded into bound-parameter placeholders, never into \
         values: `{keys}` (a list of keys, chunked by the connector's batch size), \
         `{since}` (one date-time), `{from}` and `{to}` (a date range).\n\n",
    );
    for (title, keys) in [
        ("Top level", TOP),
        ("`[vendor]`", VENDOR),
        ("`[codes.<list>]`", CODE_LIST),
        ("`[entities.<entity>]`", ENTITY),
        ("`fields.<field> = { ... }`", FIELD),
        ("`labels = [{ ... }]`", LABEL),
    ] {
        out.push_str(&format!("## {title}\n\n"));
        table(&mut out, keys);
    }
    out.push_str(&format!(
        "Labels: {}.\n\n",
        crate::profile::KNOWN_LABELS
            .iter()
            .map(|l| format!("`{l}`"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    out.push_str(
        "## Entities and their fields\n\n\
         Every entity has `local_id` (text) and `last_updated` (date-time); person-scoped \
         entities (all but `person`, `worker`, `team`) have `person_id` (text), the \
         person's local id in the same source. A code field whose value is `OTHER` keeps \
         the vendor's or the deployment's own value in `<field>_other`.\n\n\
         | entity | person-scoped | fields |\n|---|---|---|\n",
    );
    debug_assert_eq!(COMMON_FIELDS.len(), 3);
    for entity in EntityKind::ALL {
        let fields = entity
            .fields()
            .iter()
            .map(|f| format!("`{}` {}", f.name, type_name(f.ty)))
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!(
            "| `{}` | {} | {fields} |\n",
            entity.name(),
            if entity.is_person_scoped() {
                "yes"
            } else {
                "no"
            }
        ));
    }
    out.push_str("\n## Code systems\n\n| system | canonical values |\n|---|---|\n");
    for system in CodeSystem::ALL {
        out.push_str(&format!(
            "| `{}` | {} |\n",
            system.name(),
            system
                .values()
                .iter()
                .map(|v| format!("`{v}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out.push_str(
        "\nEthnicity uses the NHS ethnic category letters; `NOT_KNOWN` is NHS code 99 (`Z` is \"not stated\").\n\n\
         ## Data-quality findings\n\n\
         Values that do not map are kept out of the record and reported; they never fail a \
         request. Findings carry the record's key, the field and, for codes only, the \
         vendor's code: never names, dates or NHS numbers.\n\n\
         | finding | meaning |\n|---|---|\n",
    );
    for (kind, meaning) in FINDINGS {
        out.push_str(&format!("| `{kind}` | {meaning} |\n"));
    }
    out
}

/// The field names serde reads for a struct (its derive passes them to
/// `deserialize_struct`): the drift test compares them with the tables above.
pub fn serde_keys<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{Error as _, Visitor};
    use serde::forward_to_deserialize_any;

    struct Capture<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Capture<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(Self::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(Self::Error::custom("captured"))
        }
        forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Capture(&mut fields));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{CodeList, EntitySpec, FieldSpec, LabelRule, ProfileFile, VendorSection};

    fn documented(keys: &[KeyDoc]) -> Vec<&'static str> {
        let mut v: Vec<_> = keys.iter().map(|k| k.key).collect();
        v.sort();
        v
    }

    fn read(fields: &[&'static str]) -> Vec<&'static str> {
        let mut v = fields.to_vec();
        v.sort();
        v
    }

    #[test]
    fn every_key_serde_reads_is_documented_and_nothing_else() {
        assert_eq!(documented(TOP), read(serde_keys::<ProfileFile>()));
        assert_eq!(documented(VENDOR), read(serde_keys::<VendorSection>()));
        assert_eq!(documented(CODE_LIST), read(serde_keys::<CodeList>()));
        assert_eq!(documented(ENTITY), read(serde_keys::<EntitySpec>()));
        assert_eq!(documented(FIELD), read(serde_keys::<FieldSpec>()));
        assert_eq!(documented(LABEL), read(serde_keys::<LabelRule>()));
    }

    #[test]
    fn every_finding_is_documented() {
        let kinds: Vec<String> = [
            crate::FindingKind::MissingNhsNumber,
            crate::FindingKind::PlaceholderNhsNumber,
            crate::FindingKind::InvalidNhsNumber,
            crate::FindingKind::MalformedNhsNumber,
            crate::FindingKind::UnmappedCode,
            crate::FindingKind::UnparseableDate,
            crate::FindingKind::MissingDate,
            crate::FindingKind::UnparseableNumber,
            crate::FindingKind::EstimatedBirthDate,
            crate::FindingKind::EndBeforeStart,
            crate::FindingKind::InvalidPostcode,
            crate::FindingKind::MissingKey,
            crate::FindingKind::PlaceholderValue,
            crate::FindingKind::OpenEndSentinel,
            crate::FindingKind::OrphanRecord,
        ]
        .iter()
        .map(|k| {
            serde_json::to_value(k)
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
        let documented: Vec<String> = FINDINGS.iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(kinds, documented);
    }

    #[test]
    fn the_reference_in_the_docs_is_generated_from_the_code() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs/vendor-profile-reference.md");
        let want = render();
        if std::env::var_os("ESCR_BLESS").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{} drifted from the code: ESCR_BLESS=1 cargo test -p escr-connector reference",
            path.display()
        );
    }
}
