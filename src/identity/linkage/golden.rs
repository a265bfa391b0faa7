//! The golden record: one value per person field from the linked source records, chosen
//! by the configured survivorship rule, with its provenance and the values that
//! disagree with it.

use chrono::{Datelike, NaiveDateTime};
use escr_connector::Record;

use super::config::{Rule, Survivorship, GOLDEN_FIELDS};

/// One source's value of a field.
#[derive(Clone, Debug, PartialEq)]
pub struct SourcedValue {
    pub value: String,
    pub source: String,
    pub local_id: String,
    pub last_updated: Option<NaiveDateTime>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct GoldenField {
    pub field: &'static str,
    pub rule: Rule,
    /// The surviving value (None when no linked record has one).
    pub chosen: Option<SourcedValue>,
    /// Values from other records that differ from the chosen one (case, spaces and
    /// punctuation aside).
    pub conflicts: Vec<SourcedValue>,
}

fn value_of(record: &Record, field: &str) -> Option<(String, bool)> {
    match field {
        "birth_date" => record.date("birth_date").map(|d| {
            let estimated = record.bool("birth_date_estimated") == Some(true)
                || (d.month() == 1 && d.day() == 1);
            (d.to_string(), estimated)
        }),
        "death_date" => record.date("death_date").map(|d| (d.to_string(), false)),
        "nhs_number" => (record.bool("nhs_number_valid") == Some(true))
            .then(|| record.text("nhs_number"))
            .flatten()
            .map(|n| (n.to_string(), false)),
        other => record
            .text(other)
            .filter(|v| !v.trim().is_empty())
            .map(|v| (v.trim().to_string(), false)),
    }
}

fn same(a: &str, b: &str) -> bool {
    let key = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_uppercase)
            .collect()
    };
    key(a) == key(b)
}

/// Golden fields for the records of one person (`(source, record)` as released to the
/// caller: withheld records never contribute).
pub fn golden(records: &[(String, &Record)], config: &Survivorship) -> Vec<GoldenField> {
    golden_of(records, config, &GOLDEN_FIELDS)
}

/// [`golden`] for some of the fields only (a report that needs two fields of many
/// thousands of people need not choose the other six).
pub fn golden_of(
    records: &[(String, &Record)],
    config: &Survivorship,
    fields: &[&'static str],
) -> Vec<GoldenField> {
    let priority = |source: &str| {
        config
            .sources
            .iter()
            .position(|s| s == source)
            .unwrap_or(config.sources.len())
    };
    fields
        .iter()
        .map(|field| {
            let rule = config.rule_for(field);
            let mut candidates: Vec<(SourcedValue, bool)> = records
                .iter()
                .filter_map(|(source, record)| {
                    value_of(record, field).map(|(value, estimated)| {
                        (
                            SourcedValue {
                                value,
                                source: source.clone(),
                                local_id: record.local_id.clone(),
                                last_updated: record.last_updated,
                            },
                            estimated,
                        )
                    })
                })
                .collect();
            // Source priority (then source name and local id) breaks every tie.
            candidates.sort_by(|(a, _), (b, _)| {
                (priority(&a.source), &a.source, &a.local_id).cmp(&(
                    priority(&b.source),
                    &b.source,
                    &b.local_id,
                ))
            });
            let best = match rule {
                Rule::SourcePriority => candidates.first(),
                Rule::MostRecent => candidates
                    .iter()
                    .enumerate()
                    .max_by_key(|(i, (v, _))| (v.last_updated, std::cmp::Reverse(*i)))
                    .map(|(_, c)| c),
                Rule::MostComplete => candidates
                    .iter()
                    .enumerate()
                    .max_by_key(|(i, (v, estimated))| {
                        (
                            !*estimated,
                            v.value.chars().filter(|c| c.is_alphanumeric()).count(),
                            std::cmp::Reverse(*i),
                        )
                    })
                    .map(|(_, c)| c),
            };
            let chosen = best.map(|(v, _)| v.clone());
            let conflicts = match &chosen {
                Some(c) => candidates
                    .iter()
                    .filter(|(v, _)| !same(&v.value, &c.value))
                    .map(|(v, _)| v.clone())
                    .collect(),
                None => Vec::new(),
            };
            GoldenField {
                field,
                rule,
                chosen,
                conflicts,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use escr_connector::{EntityKind, FieldValue};

    fn rec(id: &str, updated: &str, fields: &[(&'static str, FieldValue)]) -> Record {
        Record {
            entity: EntityKind::Person,
            local_id: id.into(),
            person_id: None,
            last_updated: Some(
                NaiveDateTime::parse_from_str(&format!("{updated} 00:00:00"), "%Y-%m-%d %H:%M:%S")
                    .unwrap(),
            ),
            fields: fields.iter().cloned().collect(),
            labels: Default::default(),
        }
    }

    #[test]
    fn each_rule_picks_its_value_and_lists_conflicts() {
        let t = |s: &str| FieldValue::Text(s.into());
        let d = |s: &str| FieldValue::Date(s.parse().unwrap());
        let ct = rec(
            "1",
            "2020-01-01",
            &[
                ("given_names", t("Ada")),
                ("postcode", t("NS1 1AB")),
                ("birth_date", d("1950-01-01")),
                ("family_name", t("OKAFOR")),
            ],
        );
        let oc = rec(
            "9",
            "2024-06-01",
            &[
                ("given_names", t("Ada Grace")),
                ("postcode", t("NS2 2AB")),
                ("birth_date", d("1950-03-07")),
                ("family_name", t("Okafor")),
            ],
        );
        let records = vec![("casetrak".to_string(), &ct), ("opencare".to_string(), &oc)];
        let config: Survivorship = toml::from_str(
            "sources = [\"casetrak\", \"opencare\"]\nfields.given_names = \"most_complete\"\nfields.postcode = \"most_recent\"\nfields.birth_date = \"most_complete\"",
        )
        .unwrap();
        let g = golden(&records, &config);
        let get = |f: &str| g.iter().find(|x| x.field == f).unwrap();
        assert_eq!(
            get("given_names").chosen.as_ref().unwrap().value,
            "Ada Grace"
        );
        assert_eq!(get("postcode").chosen.as_ref().unwrap().source, "opencare");
        // 1 January is an estimate: the real date wins.
        assert_eq!(
            get("birth_date").chosen.as_ref().unwrap().value,
            "1950-03-07"
        );
        assert_eq!(get("birth_date").conflicts[0].value, "1950-01-01");
        // Source priority; case differences are not conflicts.
        let family = get("family_name");
        assert_eq!(family.chosen.as_ref().unwrap().value, "OKAFOR");
        assert!(family.conflicts.is_empty());
        assert_eq!(get("death_date").chosen, None);
    }
}
