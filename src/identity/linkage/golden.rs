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

/// [`golden`] for some of the fields only.
pub fn golden_of(
    records: &[(String, &Record)],
    config: &Survivorship,
    fields: &[&'static str],
) -> Vec<GoldenField> {
    fields
        .iter()
        .map(|field| {
            let rule = config.rule_for(field);
            let records = records.iter().map(|(s, r)| (s.as_str(), *r));
            let (candidates, best) = ranked(records, rule, config, field);
            let chosen = best.map(|i| candidates[i].owned());
            let conflicts = match &chosen {
                Some(c) => candidates
                    .iter()
                    .filter(|v| !same(&v.value, &c.value))
                    .map(Candidate::owned)
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

/// The surviving value of one field, as [`golden_of`] chooses it, without the conflicts
/// (a report that needs two fields of many thousands of people: listing the conflicts
/// was most of its survivorship's work).
pub fn chosen_of<'a>(
    records: impl Iterator<Item = (&'a str, &'a Record)>,
    config: &Survivorship,
    field: &str,
) -> Option<SourcedValue> {
    let (mut candidates, best) = ranked(records, config.rule_for(field), config, field);
    best.map(|i| candidates.swap_remove(i).into_owned())
}

/// One record's value of a field, borrowing its provenance.
struct Candidate<'a> {
    value: String,
    estimated: bool,
    source: &'a str,
    local_id: &'a str,
    last_updated: Option<NaiveDateTime>,
}

impl Candidate<'_> {
    fn owned(&self) -> SourcedValue {
        SourcedValue {
            value: self.value.clone(),
            source: self.source.to_string(),
            local_id: self.local_id.to_string(),
            last_updated: self.last_updated,
        }
    }
    fn into_owned(self) -> SourcedValue {
        SourcedValue {
            value: self.value,
            source: self.source.to_string(),
            local_id: self.local_id.to_string(),
            last_updated: self.last_updated,
        }
    }
}

/// A field's values in tie-break order (source priority, then source name and local
/// id), and which of them survives under `rule`.
fn ranked<'a>(
    records: impl Iterator<Item = (&'a str, &'a Record)>,
    rule: Rule,
    config: &Survivorship,
    field: &str,
) -> (Vec<Candidate<'a>>, Option<usize>) {
    let priority = |source: &str| {
        config
            .sources
            .iter()
            .position(|s| s == source)
            .unwrap_or(config.sources.len())
    };
    let mut candidates: Vec<Candidate<'a>> = records
        .filter_map(|(source, record)| {
            value_of(record, field).map(|(value, estimated)| Candidate {
                value,
                estimated,
                source,
                local_id: &record.local_id,
                last_updated: record.last_updated,
            })
        })
        .collect();
    // Source priority (then source name and local id) breaks every tie.
    candidates.sort_by(|a, b| {
        (priority(a.source), a.source, a.local_id).cmp(&(priority(b.source), b.source, b.local_id))
    });
    let best = match rule {
        Rule::SourcePriority => (!candidates.is_empty()).then_some(0),
        Rule::MostRecent => candidates
            .iter()
            .enumerate()
            .max_by_key(|(i, v)| (v.last_updated, std::cmp::Reverse(*i)))
            .map(|(i, _)| i),
        Rule::MostComplete => candidates
            .iter()
            .enumerate()
            .max_by_key(|(i, v)| {
                (
                    !v.estimated,
                    v.value.chars().filter(|c| c.is_alphanumeric()).count(),
                    std::cmp::Reverse(*i),
                )
            })
            .map(|(i, _)| i),
    };
    (candidates, best)
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
        // A report's survivorship of one field chooses as the golden record does.
        for field in GOLDEN_FIELDS {
            let one = chosen_of(
                records.iter().map(|(s, r)| (s.as_str(), *r)),
                &config,
                field,
            );
            assert_eq!(one, get(field).chosen, "{field}");
        }
        let reversed = records.iter().rev().map(|(s, r)| (s.as_str(), *r));
        assert_eq!(
            chosen_of(reversed, &config, "given_names"),
            get("given_names").chosen,
            "whatever the records' order"
        );
    }
}
