//! The data-quality report for a data steward: per source, what the mapping engine and
//! the identity index found wrong with the legacy data. Counts and code values only;
//! never names, dates of birth or NHS numbers.
//!
//! Read on demand from the sources (every person, then every person-scoped entity by
//! person, in the connector's batch size), plus the index for duplicates.

use std::collections::{BTreeMap, HashMap};

use async_graphql::SimpleObject;
use chrono::{NaiveDate, Utc};
use escr_connector::{EntityKind, FindingKind};
use serde::Serialize;

use super::index::IdentityIndex;
use crate::record::source::{Lookup, Source};

/// A vendor code that maps to nothing, how often.
#[derive(Clone, Debug, Serialize, SimpleObject)]
#[graphql(shareable)]
pub struct UnmappedCode {
    pub entity: String,
    pub field: String,
    pub value: String,
    pub count: usize,
}

#[derive(Clone, Debug, Default, Serialize, SimpleObject)]
#[graphql(shareable)]
pub struct SourceQuality {
    pub source: String,
    /// False when the source could not be read (the counts are then incomplete).
    pub available: bool,
    pub people: usize,
    pub missing_nhs_numbers: usize,
    /// Wrong check digit or not ten digits.
    pub invalid_nhs_numbers: usize,
    /// "0000000000", "N/K" and the vendor's other "not known" values.
    pub placeholder_nhs_numbers: usize,
    /// Pairs of this source's records that are (or may be) one person: linked by the
    /// index, or in the review queue.
    pub probable_duplicates: usize,
    pub estimated_birth_dates: usize,
    /// Birth in the future or before 1890, death before birth or in the future, a
    /// record starting before the person was born.
    pub impossible_dates: usize,
    pub unparseable_dates: usize,
    /// Referrals, assessments, services and episodes without the date that places
    /// them in time: no report counts them.
    pub undated_events: usize,
    pub end_before_start: usize,
    /// Services starting after the person's recorded death.
    pub services_after_death: usize,
    pub bad_postcodes: usize,
    /// Values the vendor profile declares mean "not known" (a 1900-01-01 birth date).
    pub placeholder_values: usize,
    /// End-of-time sentinels (4712-12-31) read as "still open".
    pub open_end_sentinels: usize,
    /// Rows whose person does not exist, per entity (the profile's `orphans` statements).
    pub orphan_records: Vec<EntityCount>,
    pub unmapped_codes: Vec<UnmappedCode>,
}

/// How many records of an entity.
#[derive(Clone, Debug, Serialize, SimpleObject)]
#[graphql(shareable)]
pub struct EntityCount {
    pub entity: String,
    pub count: usize,
}

#[derive(Clone, Debug, Default, Serialize, SimpleObject)]
#[graphql(shareable)]
pub struct QualityReport {
    pub generated_at: String,
    pub sources: Vec<SourceQuality>,
}

struct Lifespan {
    birth: Option<NaiveDate>,
    death: Option<NaiveDate>,
}

pub async fn build(index: &IdentityIndex, sources: &[Source]) -> QualityReport {
    let today = Utc::now().date_naive();
    let earliest = NaiveDate::from_ymd_opt(1890, 1, 1).expect("valid date");
    let snapshot = index.snapshot();
    let mut duplicates: HashMap<&str, usize> = HashMap::new();
    for refs in snapshot.people.values() {
        let mut per_source: HashMap<&str, usize> = HashMap::new();
        for r in refs {
            *per_source.entry(r.source.as_str()).or_default() += 1;
        }
        for (s, n) in per_source {
            *duplicates.entry(s).or_default() += n * (n - 1) / 2;
        }
    }
    for c in snapshot.review_queue() {
        if c.a.0 == c.b.0 {
            *duplicates.entry(c.a.0.as_str()).or_default() += 1;
        }
    }

    let mut out = Vec::new();
    for source in sources {
        let mut q = SourceQuality {
            source: source.name.clone(),
            available: true,
            probable_duplicates: duplicates.get(source.name.as_str()).copied().unwrap_or(0),
            ..SourceQuality::default()
        };
        let mut unmapped: BTreeMap<(String, String, String), usize> = BTreeMap::new();
        let people = match source.list_people(None).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(source = %source.name, error = %e, "data-quality report: source skipped");
                q.available = false;
                out.push(q);
                continue;
            }
        };
        let person_postcodes = people.records.iter().any(|p| p.text("postcode").is_some())
            || people
                .findings
                .iter()
                .any(|f| f.kind == FindingKind::InvalidPostcode);
        let mut count = |q: &mut SourceQuality, f: &escr_connector::Finding| match f.kind {
            FindingKind::MissingNhsNumber => q.missing_nhs_numbers += 1,
            FindingKind::InvalidNhsNumber | FindingKind::MalformedNhsNumber => {
                q.invalid_nhs_numbers += 1
            }
            FindingKind::PlaceholderNhsNumber => q.placeholder_nhs_numbers += 1,
            FindingKind::EstimatedBirthDate => q.estimated_birth_dates += 1,
            FindingKind::UnparseableDate => q.unparseable_dates += 1,
            FindingKind::MissingDate => q.undated_events += 1,
            FindingKind::EndBeforeStart => q.end_before_start += 1,
            // Person postcodes, unless the vendor keeps them only on addresses (else
            // the home address would count twice).
            FindingKind::InvalidPostcode if f.entity == EntityKind::Person || !person_postcodes => {
                q.bad_postcodes += 1
            }
            FindingKind::InvalidPostcode => {}
            FindingKind::UnmappedCode => {
                *unmapped
                    .entry((
                        f.entity.name().to_string(),
                        f.field.to_string(),
                        f.code_value.clone().unwrap_or_default(),
                    ))
                    .or_default() += 1
            }
            FindingKind::PlaceholderValue => q.placeholder_values += 1,
            FindingKind::OpenEndSentinel => q.open_end_sentinels += 1,
            FindingKind::UnparseableNumber
            | FindingKind::MissingKey
            | FindingKind::OrphanRecord => {}
        };
        q.people = people.records.len();
        for f in &people.findings {
            count(&mut q, f);
        }
        let mut lives: HashMap<String, Lifespan> = HashMap::new();
        for p in &people.records {
            let (birth, death) = (p.date("birth_date"), p.date("death_date"));
            let impossible = birth.is_some_and(|b| b > today || b < earliest)
                || death.is_some_and(|d| d > today || birth.is_some_and(|b| d < b));
            q.impossible_dates += usize::from(impossible);
            lives.insert(p.local_id.clone(), Lifespan { birth, death });
        }
        let keys: Vec<String> = people.records.iter().map(|p| p.local_id.clone()).collect();
        for entity in EntityKind::ALL {
            if !entity.is_person_scoped() || !source.holds(entity) {
                continue;
            }
            match source.orphans(entity).await {
                Ok(Some(orphans)) => q.orphan_records.push(EntityCount {
                    entity: entity.name().to_string(),
                    count: orphans.records.len(),
                }),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(source = %source.name, entity = %entity.name(), error = %e, "data-quality report: orphans skipped");
                    q.available = false;
                }
            }
            let mapped = match source.fetch(entity, Lookup::ByPerson, &keys).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(source = %source.name, entity = %entity.name(), error = %e, "data-quality report: entity skipped");
                    q.available = false;
                    continue;
                }
            };
            for f in &mapped.findings {
                count(&mut q, f);
            }
            for r in &mapped.records {
                let Some(life) = r.person_id.as_ref().and_then(|p| lives.get(p)) else {
                    continue;
                };
                let start = r.date("start");
                if entity == EntityKind::Service
                    && start.zip(life.death).is_some_and(|(s, d)| s > d)
                {
                    q.services_after_death += 1;
                }
                if start.zip(life.birth).is_some_and(|(s, b)| s < b) {
                    q.impossible_dates += 1;
                }
            }
        }
        q.unmapped_codes = unmapped
            .into_iter()
            .map(|((entity, field, value), count)| UnmappedCode {
                entity,
                field,
                value,
                count,
            })
            .collect();
        out.push(q);
    }
    QualityReport {
        generated_at: Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        sources: out,
    }
}
