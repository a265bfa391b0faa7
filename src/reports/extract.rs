//! Reading one authority's people a page at a time: their person records (for the
//! golden demographics) and their referrals, assessments, episodes and services in the
//! period's windows, attributed to gateway person ids through the identity index.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::NaiveDate;
use escr_connector::mapping::Fields;
use escr_connector::{EntityKind, Mapped, Record};

use super::{window_for, Estate, Period, ReportError};
use crate::identity::index::{Snapshot, SourceRef};
use crate::record::source::{Lookup, Source};

/// The event entities reports read.
pub const EVENT_ENTITIES: [EntityKind; 4] = [
    EntityKind::Referral,
    EntityKind::Assessment,
    EntityKind::Episode,
    EntityKind::Service,
];

/// Every field the indicators read of a person's records and events: the dates that
/// place an event in its window ([`crate::record::window`]), the fields the tallies
/// count by, and the person fields their survivorship and the policy's facts use.
/// Their reads map these only. A test reads the counting code and fails when it reads
/// a field missing here (it would read as absent).
pub const INDICATOR_FIELDS_READ: [&str; 19] = [
    "received_at",
    "started",
    "authorised",
    "completed",
    "start",
    "end",
    "type",
    "kind",
    "service_area",
    "support_category",
    "delivery_mechanism",
    "funding",
    "permanence",
    "birth_date",
    "birth_date_estimated",
    "death_date",
    "nhs_number",
    // Not a column: the mapping of `nhs_number` sets it.
    "nhs_number_valid",
    "support_reason",
];

/// A person's records' keys: (source index, local id).
type Keys = Vec<(usize, String)>;

/// People to read together, with their records' keys.
#[derive(Clone, Debug, Default)]
pub struct Page {
    pub ids: Vec<String>,
    /// (position in `ids`, source index, local id) of each of their records.
    records: Vec<(usize, usize, String)>,
}

impl Page {
    fn push(&mut self, id: String, keys: Keys) {
        let person = self.ids.len();
        self.ids.push(id);
        self.records.extend(
            keys.into_iter()
                .map(|(source, local)| (person, source, local)),
        );
    }

    /// The page without the people `drop` says to leave out (nothing of theirs is read).
    pub fn without(self, drop: impl Fn(&str) -> bool) -> Page {
        let mut kept = Page::default();
        let mut records = self.records.into_iter().peekable();
        for (person, id) in self.ids.into_iter().enumerate() {
            let keys = std::iter::from_fn(|| records.next_if(|r| r.0 == person))
                .map(|(_, source, local)| (source, local))
                .collect();
            if !drop(&id) {
                kept.push(id, keys);
            }
        }
        kept
    }
}

/// One person as a report sees them.
#[derive(Debug, Default)]
pub struct PersonData {
    pub person_id: String,
    /// Person records from every source the person is linked in.
    pub person_records: Vec<(String, Record)>,
    /// Events from the authority's sources, in their windows.
    pub events: Vec<(String, Record)>,
    /// Allocations and consents (only when the consent hook will be asked).
    pub allocations: Vec<Record>,
    pub consents: Vec<Record>,
    /// One of the person's records is in a pair awaiting a data steward.
    pub under_review: bool,
}

/// The person fields a report uses, by survivorship over the person's records.
#[derive(Clone, Debug, Default)]
pub struct Demographics {
    pub birth_date: Option<NaiveDate>,
    /// The surviving birth date is flagged as estimated by its vendor.
    pub birth_estimated: bool,
    pub death_date: Option<NaiveDate>,
    pub gender: Option<String>,
    pub ethnicity: Option<String>,
    pub nhs_number: Option<String>,
    pub postcode: Option<String>,
    pub support_reason: Option<String>,
}

/// The golden fields the indicators use (the data set uses all of [`Demographics`]).
const INDICATOR_FIELDS: [&str; 2] = ["birth_date", "death_date"];

impl Demographics {
    pub fn of(
        records: &[(String, Record)],
        survivorship: &crate::identity::linkage::config::Survivorship,
    ) -> Demographics {
        Self::of_fields(
            records,
            survivorship,
            &crate::identity::linkage::config::GOLDEN_FIELDS,
        )
    }

    /// Only what the indicators use (birth and death): survivorship over the other
    /// fields is most of a report's work per person, for nothing.
    pub fn for_indicators(
        records: &[(String, Record)],
        survivorship: &crate::identity::linkage::config::Survivorship,
    ) -> Demographics {
        Self::of_fields(records, survivorship, &INDICATOR_FIELDS)
    }

    fn of_fields(
        records: &[(String, Record)],
        survivorship: &crate::identity::linkage::config::Survivorship,
        fields: &[&'static str],
    ) -> Demographics {
        use crate::identity::linkage::golden::chosen_of;
        let chosen = |field: &str| {
            fields.contains(&field).then(|| {
                let records = records.iter().map(|(s, r)| (s.as_str(), r));
                chosen_of(records, survivorship, field)
            })?
        };
        let birth = chosen("birth_date");
        let birth_date = birth
            .as_ref()
            .and_then(|b| NaiveDate::parse_from_str(&b.value, "%Y-%m-%d").ok());
        // Estimated only when the vendor flags it: plenty of people are born on
        // 1 January, and a vendor without a flag gives no way to tell.
        let birth_estimated = birth.as_ref().is_some_and(|b| {
            records.iter().any(|(s, r)| {
                *s == b.source
                    && r.local_id == b.local_id
                    && r.bool("birth_date_estimated") == Some(true)
            })
        });
        Demographics {
            birth_date,
            birth_estimated,
            death_date: chosen("death_date")
                .and_then(|d| NaiveDate::parse_from_str(&d.value, "%Y-%m-%d").ok()),
            gender: chosen("gender").map(|v| v.value),
            ethnicity: chosen("ethnicity").map(|v| v.value),
            nhs_number: chosen("nhs_number").map(|v| v.value),
            postcode: chosen("postcode").map(|v| v.value),
            support_reason: records
                .iter()
                .find_map(|(_, r)| r.text("support_reason").map(str::to_string)),
        }
    }
}

/// Every source of `authority` answers now. A source that is down, or was down when
/// the index was built, has people the index may not know: a report without them would
/// be wrong, not partial.
pub async fn check_sources(gateway: &Estate, authority: &str) -> Result<(), ReportError> {
    let checks = gateway
        .fetcher
        .sources
        .iter()
        .filter(|s| s.authority == authority)
        .map(Source::check);
    for result in futures::future::join_all(checks).await {
        result?;
    }
    Ok(())
}

/// The people of one authority and how to read them.
pub struct Extractor {
    /// Owned (a few `Arc`s) so that pages can be read on separate tasks.
    pub gateway: Estate,
    pub period: Period,
    /// Indexes (into the fetcher's sources) of the authority's sources.
    pub sources: Vec<usize>,
    pub with_facts: bool,
    /// What is mapped of person records and events (allocations and consents are
    /// mapped in full: the policy decides from them).
    pub fields: Fields<'static>,
    /// People with a record in the linkage review queue.
    under_review: std::collections::HashSet<String>,
}

impl Extractor {
    pub fn new(gateway: &Estate, authority: &str, period: Period, with_facts: bool) -> Extractor {
        let sources = gateway
            .fetcher
            .sources
            .iter()
            .enumerate()
            .filter(|(_, s)| s.authority == authority)
            .map(|(i, _)| i)
            .collect();
        let snapshot = gateway.index.snapshot();
        let under_review = snapshot
            .review_queue()
            .iter()
            .flat_map(|c| [&c.a, &c.b])
            .filter_map(|(source, local)| snapshot.by_source(source, local).map(str::to_string))
            .collect();
        Extractor {
            gateway: gateway.clone(),
            period,
            sources,
            with_facts,
            fields: Fields::All,
            under_review,
        }
    }

    /// Map only `fields` of person records and events.
    pub fn reading(mut self, fields: Fields<'static>) -> Extractor {
        self.fields = fields;
        self
    }

    fn source_names(&self) -> BTreeSet<&str> {
        self.sources
            .iter()
            .map(|i| self.gateway.fetcher.sources[*i].name.as_str())
            .collect()
    }

    /// The authority's people (a record in one of its sources), in id order, from
    /// `from`, at most `limit`.
    pub fn people(
        &self,
        snapshot: &Snapshot,
        from: std::ops::Bound<&str>,
        limit: usize,
    ) -> Vec<String> {
        let names = self.source_names();
        snapshot
            .people
            .range::<str, _>((from, std::ops::Bound::Unbounded))
            .filter(|(_, refs)| refs.iter().any(|r| names.contains(r.source.as_str())))
            .map(|(id, _)| id.clone())
            .take(limit)
            .collect()
    }

    /// Every person of the authority, in pages of `size` in the order of their
    /// records in the authority's sources (its first source holding them, numeric ids
    /// numerically), not in gateway-id order. A page's keys are then neighbours in the
    /// vendor's tables and its statements walk neighbouring index and table pages:
    /// measured on SQLite at 100,000 people, half the SQL time of pages in gateway-id
    /// order, which scatter every statement over the whole table. Tallies do not
    /// depend on the order.
    pub fn pages_in_source_order(&self, snapshot: &Snapshot, size: usize) -> Vec<Page> {
        let numeric = |local: &str| local.trim().parse::<u64>().unwrap_or(u64::MAX);
        // Per person: the id and its records' keys, the first of them in the
        // authority's sources put first (the order of a person's keys means nothing
        // else), with that key's local id as a number.
        let mut people: Vec<(u64, &String, Keys)> = snapshot
            .people
            .iter()
            .filter_map(|(id, refs)| {
                let mut keys = self.keys_of(refs);
                let first = (0..keys.len())
                    .filter(|&i| self.sources.contains(&keys[i].0))
                    .min_by_key(|&i| (keys[i].0, numeric(&keys[i].1), keys[i].1.as_str()))?;
                keys.swap(0, first);
                Some((numeric(&keys[0].1), id, keys))
            })
            .collect();
        people.sort_unstable_by(|(a, _, ak), (b, _, bk)| {
            (ak[0].0, a, &ak[0].1).cmp(&(bk[0].0, b, &bk[0].1))
        });
        let mut pages = Vec::new();
        let mut rest = people.into_iter().peekable();
        while rest.peek().is_some() {
            let mut page = Page::default();
            for (_, id, keys) in rest.by_ref().take(size.max(1)) {
                page.push(id.clone(), keys);
            }
            pages.push(page);
        }
        pages
    }

    /// A page of these people, their records found in the index.
    pub fn page_of(&self, snapshot: &Snapshot, ids: &[String]) -> Page {
        let mut page = Page::default();
        for id in ids {
            page.push(id.clone(), self.keys_of(snapshot.records(id)));
        }
        page
    }

    /// (source index, local id) of each of these records in a configured source.
    fn keys_of(&self, refs: &[SourceRef]) -> Keys {
        let fetcher = &self.gateway.fetcher;
        refs.iter()
            .filter_map(|r| Some((fetcher.source_index(&r.source)?, r.local_id.clone())))
            .collect()
    }

    /// Read one page of people: per source, one statement per entity (chunked by the
    /// connector's batch size). A source that fails fails the page: a report computed
    /// without it would be wrong, not partial.
    pub async fn page(&self, page: &Page) -> Result<Vec<PersonData>, ReportError> {
        let fetcher = &self.gateway.fetcher;
        let mut people: Vec<PersonData> = page
            .ids
            .iter()
            .map(|id| PersonData {
                person_id: id.clone(),
                under_review: self.under_review.contains(id),
                ..PersonData::default()
            })
            .collect();
        // Local person ids per source, and whose each is: the page carries them, so
        // reading a page looks nothing up in the index.
        let mut keys: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        let mut position: HashMap<(usize, &str), usize> = HashMap::new();
        for (person, source, local) in &page.records {
            keys.entry(*source).or_default().push(local.clone());
            position.insert((*source, local.as_str()), *person);
        }
        let loads = keys.iter().map(|(&s, local_ids)| {
            let source = &fetcher.sources[s];
            let ours = self.sources.contains(&s);
            async move { (s, self.read_source(source, local_ids, ours).await) }
        });
        // In source order (`keys` is ordered, `join_all` keeps it): each person's
        // records are pushed in configured order, the order survivorship takes them
        // in, as the Person type does.
        for (s, result) in futures::future::join_all(loads).await {
            let name = &fetcher.sources[s].name;
            for (entity, mapped) in result? {
                for record in mapped.records {
                    let local_person = if entity == EntityKind::Person {
                        Some(record.local_id.as_str())
                    } else {
                        record.person_id.as_deref()
                    };
                    let Some(&person) = local_person.and_then(|p| position.get(&(s, p))) else {
                        continue;
                    };
                    let data = &mut people[person];
                    match entity {
                        EntityKind::Person => data.person_records.push((name.clone(), record)),
                        EntityKind::Allocation => data.allocations.push(record),
                        EntityKind::Consent => data.consents.push(record),
                        _ => data.events.push((name.clone(), record)),
                    }
                }
            }
        }
        Ok(people)
    }

    async fn read_source(
        &self,
        source: &Source,
        local_ids: &[String],
        ours: bool,
    ) -> Result<Vec<(EntityKind, Mapped)>, ReportError> {
        let mut out = vec![(
            EntityKind::Person,
            source
                .fetch_reading(EntityKind::Person, Lookup::ByKey, local_ids, self.fields)
                .await?,
        )];
        if !ours {
            return Ok(out);
        }
        for entity in EVENT_ENTITIES {
            if source.holds(entity) {
                let mapped = source
                    .fetch_between(
                        entity,
                        local_ids,
                        window_for(entity, self.period),
                        self.fields,
                    )
                    .await?;
                out.push((entity, mapped));
            }
        }
        if self.with_facts {
            for entity in [EntityKind::Allocation, EntityKind::Consent] {
                if source.holds(entity) {
                    out.push((
                        entity,
                        source.fetch(entity, Lookup::ByPerson, local_ids).await?,
                    ));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Leaving people out of a page leaves out their records' keys, and only theirs,
    /// whoever has no records and wherever in the page they stand.
    #[test]
    fn a_page_without_some_people_keeps_the_others_keys() {
        let people: [(&str, &[(usize, &str)]); 5] = [
            ("a", &[(0, "1"), (2, "9")]),
            ("b", &[]),
            ("c", &[(1, "7")]),
            ("d", &[(0, "2"), (1, "8"), (2, "3")]),
            ("e", &[(0, "5")]),
        ];
        let mut page = Page::default();
        for (id, keys) in people {
            page.push(
                id.into(),
                keys.iter().map(|(s, l)| (*s, l.to_string())).collect(),
            );
        }
        for dropped in [
            &["a", "d"][..],
            &["b"],
            &["e"],
            &[],
            &["a", "b", "c", "d", "e"],
        ] {
            let kept = page.clone().without(|id| dropped.contains(&id));
            let want: Vec<(&str, Vec<(usize, String)>)> = people
                .iter()
                .filter(|(id, _)| !dropped.contains(id))
                .map(|(id, keys)| (*id, keys.iter().map(|(s, l)| (*s, l.to_string())).collect()))
                .collect();
            let got: Vec<(&str, Vec<(usize, String)>)> = (kept.ids.iter().enumerate())
                .map(|(i, id)| {
                    let keys = (kept.records.iter().filter(|r| r.0 == i))
                        .map(|(_, s, l)| (*s, l.clone()))
                        .collect();
                    (id.as_str(), keys)
                })
                .collect();
            assert_eq!(got, want, "without {dropped:?}");
        }
    }

    /// Every field the counting code reads by name, found in its source text: a field
    /// read there but not mapped would read as absent and change a count silently.
    #[test]
    fn the_indicators_map_every_field_they_read() {
        let sources = [
            ("indicators.rs", include_str!("indicators.rs")),
            ("national.rs", include_str!("national.rs")),
            ("extract.rs", include_str!("extract.rs")),
            ("run.rs", include_str!("run.rs")),
            ("window.rs", include_str!("../record/window.rs")),
            ("golden.rs", include_str!("../identity/linkage/golden.rs")),
        ];
        let mut read = BTreeSet::new();
        for (file, text) in sources {
            for accessor in [
                ".text(\"",
                ".date(\"",
                ".date_time(\"",
                ".bool(\"",
                ".number(\"",
                ".fields.get(\"",
            ] {
                for (at, _) in text.match_indices(accessor) {
                    let rest = &text[at + accessor.len()..];
                    let name = &rest[..rest.find('"').expect("a closing quote")];
                    read.insert((name.to_string(), file));
                }
            }
        }
        for entity in EVENT_ENTITIES {
            let field = escr_connector::mapping::placing_date(entity).unwrap_or("start");
            read.insert((field.to_string(), "placing_date"));
        }
        assert!(read.len() > 15, "the scan found the reads: {read:?}");
        let missing: Vec<_> = read
            .iter()
            .filter(|(name, _)| !INDICATOR_FIELDS_READ.contains(&name.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "read but not in INDICATOR_FIELDS_READ: {missing:?}"
        );
    }
}
