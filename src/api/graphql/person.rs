//! Person: the virtual record, assembled from every linked source record.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_graphql::{Context, ErrorExtensions, InputObject, Object, SimpleObject, ID};
use chrono::{NaiveDate, NaiveDateTime};
use escr_connector::{nhs, EntityKind, Record};

use super::codes::*;
use super::plain::Records;
use super::records::*;
use crate::api::error::GatewayError;
use crate::api::gateway::Gateway;
use crate::consent::access::{
    release_shared, AccessContext, FactsNeeded, PersonFacts, Released, RequestScope,
};
use crate::consent::context::codes;
use crate::identity::index::SourceRef;
use crate::record::loader::RequestLoaders;
use crate::record::source::Lookup;

#[derive(Clone)]
pub struct Person {
    pub id: String,
    pub refs: Vec<SourceRef>,
    /// What this request decided about the person so far (a `Person` lives for one
    /// request: decided once, asked for by many fields).
    memo: Arc<PersonMemo>,
}

impl Person {
    pub fn new(id: String, refs: Vec<SourceRef>) -> Person {
        Person {
            id,
            refs,
            memo: Arc::default(),
        }
    }
}

/// Per person and request: each entity's records released once (every field that
/// shows them shares the decisions), and the survivorship over the person records.
#[derive(Default)]
struct PersonMemo {
    entities: std::sync::Mutex<
        std::collections::HashMap<EntityKind, Arc<tokio::sync::OnceCell<Arc<Decided>>>>,
    >,
    golden: tokio::sync::OnceCell<Vec<crate::identity::linkage::golden::GoldenField>>,
}

/// One entity of one person, decided: the records loaded and passed through the
/// consent hook, and the sources that failed.
struct Decided {
    released: Released<Arc<Record>>,
    failures: Vec<(String, Arc<crate::record::source::SourceError>)>,
    /// The released records are noted in the audit once they are returned.
    audited: std::sync::atomic::AtomicBool,
}

/// A source person record linked into this person, and why.
#[derive(SimpleObject)]
#[graphql(shareable)]
pub struct SourceRecord {
    pub source: String,
    pub local_id: String,
    /// The linkage rule: "steward_link", "vendor_merge", "nhs_number+birth_date",
    /// "exact_trace" (a full demographic trace), "probabilistic", or "single".
    pub link_rule: String,
}

#[derive(SimpleObject)]
#[graphql(shareable)]
pub struct HumanName {
    pub family: Option<String>,
    pub given: Option<String>,
    /// Middle names, where the source keeps them apart from the given name.
    pub middle: Option<String>,
    /// The source this spelling comes from.
    pub source: String,
}

#[derive(SimpleObject)]
#[graphql(shareable)]
pub struct Identifier {
    /// "https://fhir.nhs.uk/Id/nhs-number", or "urn:escr:source:<name>" for local ids.
    pub system: String,
    pub value: String,
    /// Check digit verified (NHS numbers); local ids are always valid.
    pub valid: bool,
}

pub const NHS_SYSTEM: &str = "https://fhir.nhs.uk/Id/nhs-number";

/// Whether an identifier's value has its scheme's shape.
type ShapeCheck = fn(&str) -> bool;

/// Other identifiers a source may hold for a person: (catalog field, system, shape check).
const OTHER_IDENTIFIERS: [(&str, &str, ShapeCheck); 4] = [
    ("la_reference", "urn:escr:la-reference", |_| true),
    // Unique Pupil Number: a letter and twelve characters, the last a digit or letter.
    ("upn", "urn:escr:upn", |v| {
        v.len() == 13 && v.chars().all(|c| c.is_ascii_alphanumeric())
    }),
    // National Insurance number: two letters, six digits, a letter A-D.
    ("ni_number", "urn:escr:ni-number", |v| {
        let v: Vec<char> = v.chars().filter(|c| !c.is_whitespace()).collect();
        v.len() == 9
            && v[..2].iter().all(char::is_ascii_alphabetic)
            && v[2..8].iter().all(char::is_ascii_digit)
            && matches!(v[8].to_ascii_uppercase(), 'A'..='D')
    }),
    ("vendor_uuid", "urn:escr:vendor-uuid", |_| true),
];

/// Load records of `entity` for `person` from every linked source that holds it,
/// concurrently, and pass them through the consent hook. Sources that fail add a
/// SOURCE_UNAVAILABLE error to the response; the others' records are still returned.
/// Withheld records are left out, with one error per field and reason (never for
/// sealed records, whose existence is itself sensitive); every decision is audited.
pub async fn person_records(
    ctx: &Context<'_>,
    person: &Person,
    entity: EntityKind,
) -> Vec<Sourced> {
    let decided = decided(ctx, person, entity).await;
    report_decided(ctx, person, &decided).await;
    decided
        .released
        .records
        .iter()
        .map(|(source, record)| Sourced {
            source: source.clone(),
            record: record.clone(),
        })
        .collect()
}

/// Say at the current field what a decision left out or could not read, and audit its
/// releases (once per request).
async fn report_decided(ctx: &Context<'_>, person: &Person, decided: &Decided) {
    for (source, e) in &decided.failures {
        report_once(ctx, GatewayError::Source((**e).clone()), source);
    }
    if !decided
        .audited
        .swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        audit_released(ctx, person, &decided.released);
    }
    let mut told = BTreeSet::new();
    let mut facts = None;
    for (_, _, why) in &decided.released.withheld {
        if !told.insert(why.code) {
            continue;
        }
        report_once(ctx, GatewayError::Withheld(why.clone()), why.code);
        // Say what happened: the consents' source is down, not a refusal.
        if why.code == codes::CONSENT_UNKNOWN {
            if facts.is_none() {
                facts = Some(person_facts(ctx, person).await);
            }
            for e in facts.iter().flat_map(|f| &f.consent_failures) {
                report_once(ctx, GatewayError::Source(e.clone()), e.source_name());
            }
        }
    }
}

/// The person's records of `entity` as this request decides them, once per person
/// and entity (the withheld and hidden ones noted in the audit then).
async fn decided(ctx: &Context<'_>, person: &Person, entity: EntityKind) -> Arc<Decided> {
    let cell = {
        let mut entities = person
            .memo
            .entities
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        entities.entry(entity).or_default().clone()
    };
    cell.get_or_init(|| async {
        let gateway = ctx.data_unchecked::<Arc<Gateway>>();
        let access = ctx.data_unchecked::<AccessContext>();
        let (loaded, failures) = load_person_entity(ctx, person, entity).await;
        let facts = person_facts(ctx, person).await;
        let released = release_shared(gateway.policy.as_ref(), access, &facts, loaded);
        audit_left_out(ctx, person, &released);
        Arc::new(Decided {
            released,
            failures,
            audited: false.into(),
        })
    })
    .await
    .clone()
}

/// Note the request's released records of `person` in its audit (one entry per kind:
/// the audit keeps kinds per person and decision).
fn audit_released(ctx: &Context<'_>, person: &Person, released: &Released<Arc<Record>>) {
    let Some(scope) = ctx.data_opt::<Arc<RequestScope>>() else {
        return;
    };
    let mut kinds = BTreeSet::new();
    for (_, r) in &released.records {
        if kinds.insert(r.entity) {
            scope
                .audit
                .note(Some(&person.id), "released", None, None, r.entity.name());
        }
    }
}

/// Note the request's withheld and hidden records of `person` in its audit.
fn audit_left_out(ctx: &Context<'_>, person: &Person, released: &Released<Arc<Record>>) {
    let Some(scope) = ctx.data_opt::<Arc<RequestScope>>() else {
        return;
    };
    let mut noted = BTreeSet::new();
    for (decision, list) in [
        ("withheld", &released.withheld),
        ("hidden", &released.hidden),
    ] {
        for (_, r, why) in list {
            if noted.insert((decision, why.code, &why.reason, r.entity)) {
                scope.audit.note(
                    Some(&person.id),
                    decision,
                    Some(why.code),
                    Some(&why.reason),
                    r.entity.name(),
                );
            }
        }
    }
}

/// What is withheld from a caller, as data: a federation router passes data through
/// where it drops or masks errors on fields that answered, so behind one a worker can
/// still tell "nothing recorded" from "withheld". Sealed records are not listed (their
/// existence is itself sensitive), nor are counts.
#[derive(SimpleObject, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[graphql(shareable, name = "Withheld")]
pub struct WithheldField {
    /// The Person field whose records are left out (`caseNotes`, `alerts`, ...);
    /// `demographics` for the person records behind `name`, `birthDate`,
    /// `identifiers` and the other person fields.
    pub field: String,
    /// The same code as the field's error (`CONSENT_DENIED`, `NO_RELATIONSHIP`, ...).
    pub code: String,
    pub reason: String,
}

/// The Person field that lists an entity's records.
fn person_field(entity: EntityKind) -> Option<&'static str> {
    Some(match entity {
        EntityKind::Person => "demographics",
        EntityKind::Address => "addresses",
        EntityKind::Relationship => "relationships",
        EntityKind::Referral => "referrals",
        EntityKind::Assessment => "assessments",
        EntityKind::CarePlan => "carePlans",
        EntityKind::Service => "services",
        EntityKind::Episode => "episodes",
        EntityKind::Visit => "visits",
        EntityKind::CaseNote => "caseNotes",
        EntityKind::Document => "documents",
        EntityKind::Communication => "communications",
        EntityKind::Alert => "alerts",
        EntityKind::Consent => "consents",
        EntityKind::Allocation => "allocations",
        EntityKind::Worker | EntityKind::Team => return None,
    })
}

/// The withheld entries of one entity of `person`, decided as its field decides them
/// (the same decisions, shared with the field).
async fn withheld_of(ctx: &Context<'_>, person: &Person, entity: EntityKind) -> Vec<WithheldField> {
    let Some(field) = person_field(entity) else {
        return Vec::new();
    };
    decided(ctx, person, entity)
        .await
        .released
        .withheld
        .iter()
        .map(|(_, _, why)| WithheldField {
            field: field.to_string(),
            code: why.code.to_string(),
            reason: why.reason.clone(),
        })
        .collect()
}

/// Add an error at the current field unless the same one (code and `what`) is already
/// there: a field that loads twice (name: family and given) reports once.
fn report_once(ctx: &Context<'_>, error: GatewayError, what: &str) {
    let err = ctx.set_error_path(error.to_server_error(Some(ctx.item.pos)));
    let code = err
        .extensions
        .as_ref()
        .and_then(|e| e.get("code"))
        .map(|c| c.to_string())
        .unwrap_or_default();
    let key = format!("{:?}|{code}|{what}", err.path);
    let fresh = ctx
        .data_opt::<Arc<RequestScope>>()
        .is_none_or(|s| s.reported.lock().map(|mut r| r.insert(key)).unwrap_or(true));
    if fresh {
        ctx.add_error(err);
    }
}

/// The person records this caller may see, decided without a word to the caller (a
/// lookup or search that does not find someone says nothing about why).
pub async fn visible_person_records(ctx: &Context<'_>, person: &Person) -> Vec<Arc<Record>> {
    decided(ctx, person, EntityKind::Person)
        .await
        .released
        .records
        .iter()
        .map(|(_, r)| r.clone())
        .collect()
}

/// Unfiltered records of one entity for a person (input to the hook, never returned),
/// and the sources that failed.
async fn load_person_entity(
    ctx: &Context<'_>,
    person: &Person,
    entity: EntityKind,
) -> (
    Vec<(String, Arc<Record>)>,
    Vec<(String, Arc<crate::record::source::SourceError>)>,
) {
    let loaders = ctx.data_unchecked::<RequestLoaders>();
    let fetcher = loaders.fetcher();
    let lookup = if entity == EntityKind::Person {
        Lookup::ByKey
    } else {
        Lookup::ByPerson
    };
    let loads = person.refs.iter().filter_map(|r| {
        let source = fetcher.source_index(&r.source)?;
        fetcher.sources[source].holds(entity).then_some(async move {
            (
                r.source.clone(),
                loaders.load(source, entity, lookup, &r.local_id).await,
            )
        })
    });
    let mut loaded = Vec::new();
    let mut failures = Vec::new();
    for (source, result) in futures::future::join_all(loads).await {
        match result {
            Ok(records) => loaded.extend(records.iter().map(|r| (source.clone(), r.clone()))),
            Err(e) => failures.push((source, e)),
        }
    }
    (loaded, failures)
}

/// What the policy needs to know about the person for this caller's decisions:
/// allocations and consents from the sources (through the shared cache: they are
/// unfiltered inputs) and active consents from the registry (read fresh), as far as
/// `Policy::facts_needed` says the decisions read them. Kept for this request only.
pub async fn person_facts(ctx: &Context<'_>, person: &Person) -> Arc<PersonFacts> {
    let gateway = ctx.data_unchecked::<Arc<Gateway>>();
    let access = ctx.data_unchecked::<AccessContext>();
    person_facts_of(ctx, person, gateway.policy.facts_needed(access)).await
}

/// All of the person's facts, whatever this caller's decisions read (what a consent
/// write may not widen is decided over every purpose of the writer).
pub async fn all_person_facts(ctx: &Context<'_>, person: &Person) -> Arc<PersonFacts> {
    person_facts_of(ctx, person, FactsNeeded::ALL).await
}

async fn person_facts_of(
    ctx: &Context<'_>,
    person: &Person,
    needed: FactsNeeded,
) -> Arc<PersonFacts> {
    let gateway = ctx.data_unchecked::<Arc<Gateway>>();
    if !gateway.policy.needs_facts() {
        return Arc::new(PersonFacts {
            person_id: person.id.clone(),
            ..PersonFacts::default()
        });
    }
    let scope = ctx.data_opt::<Arc<RequestScope>>();
    let known = scope.and_then(|s| s.facts.lock().ok()?.get(&person.id).cloned());
    if let Some((held, f)) = known {
        if held.covers(needed) {
            return f;
        }
    }
    let loaders = ctx.data_unchecked::<RequestLoaders>();
    let facts =
        Arc::new(load_person_facts(gateway, loaders, &person.id, &person.refs, needed).await);
    if let Some(s) = scope {
        if let Ok(mut m) = s.facts.lock() {
            m.insert(person.id.clone(), (needed, facts.clone()));
        }
    }
    facts
}

/// The person's facts, read for one decision (GraphQL keeps them for its request;
/// the document content route reads them for its one record): the parts `needed`.
pub async fn load_person_facts(
    gateway: &Gateway,
    loaders: &RequestLoaders,
    person_id: &str,
    refs: &[SourceRef],
    needed: FactsNeeded,
) -> PersonFacts {
    let fetcher = loaders.fetcher();
    let mut facts = PersonFacts {
        person_id: person_id.to_string(),
        ..PersonFacts::default()
    };
    if !gateway.policy.needs_facts() {
        return facts;
    }
    let entities = [
        (EntityKind::Allocation, needed.allocations),
        (EntityKind::Consent, needed.source_consents),
        (EntityKind::Person, needed.nhs_numbers),
    ];
    for (entity, _) in entities.into_iter().filter(|(_, read)| *read) {
        let lookup = if entity == EntityKind::Person {
            Lookup::ByKey
        } else {
            Lookup::ByPerson
        };
        let loads = refs.iter().filter_map(|r| {
            let source = fetcher.source_index(&r.source)?;
            fetcher.sources[source]
                .holds(entity)
                .then_some(loaders.load(source, entity, lookup, &r.local_id))
        });
        for result in futures::future::join_all(loads).await {
            match (entity, result) {
                (EntityKind::Allocation, Ok(records)) => facts
                    .allocations
                    .extend(records.iter().map(|r| Record::clone(r))),
                (EntityKind::Consent, Ok(records)) => facts
                    .source_consents
                    .extend(records.iter().map(|r| Record::clone(r))),
                (_, Ok(records)) => facts.nhs_numbers.extend(
                    records
                        .iter()
                        .filter(|r| r.bool("nhs_number_valid") == Some(true))
                        .filter_map(|r| r.text("nhs_number").map(str::to_string)),
                ),
                // Fail closed: an unread consent might have been a refusal.
                (EntityKind::Consent, Err(e)) => {
                    facts.consent_unknown = true;
                    facts.consent_failures.push((*e).clone());
                }
                // Unread allocations grant nothing; unread NHS numbers leave the
                // index's for the opt-out.
                (_, Err(_)) => {}
            }
        }
    }
    if let Some(access) = gateway.access.as_ref().filter(|_| needed.registry_consents) {
        // Consents recorded under an id the person had before (a merge, the earlier id
        // format) are the person's too.
        let snapshot = gateway.index.snapshot();
        for id in std::iter::once(person_id).chain(snapshot.former_ids(person_id)) {
            match access.registry.active(id).await {
                Ok(c) => facts.registry_consents.extend(c),
                Err(e) => {
                    tracing::warn!(error = %e, "consent registry unreadable");
                    facts.consent_unknown = true;
                }
            }
        }
    }
    facts
}

/// Person fields by survivorship v1: sources in configured order, first value wins.
fn first<T>(records: &[Sourced], get: impl Fn(&Record) -> Option<T>) -> Option<T> {
    records.iter().find_map(|r| get(&r.record))
}

impl Person {
    async fn demographics(&self, ctx: &Context<'_>) -> Vec<Sourced> {
        let mut records = person_records(ctx, self, EntityKind::Person).await;
        let fetcher = ctx.data_unchecked::<RequestLoaders>().fetcher();
        records.sort_by_key(|r| fetcher.source_index(&r.source));
        records
    }

    /// The surviving value of a golden-record field, from the records this caller may
    /// see.
    async fn surviving(
        &self,
        ctx: &Context<'_>,
        field: &str,
    ) -> Option<crate::identity::linkage::golden::SourcedValue> {
        // Survivorship runs once per person and request; the demographics' errors belong
        // at every field that uses them.
        let golden = match self.memo.golden.get() {
            Some(golden) => {
                let decided = decided(ctx, self, EntityKind::Person).await;
                report_decided(ctx, self, &decided).await;
                golden
            }
            None => {
                let records = self.demographics(ctx).await;
                self.memo
                    .golden
                    .get_or_init(|| async { super::linkage::survivorship(ctx, &records) })
                    .await
            }
        };
        golden.iter().find(|g| g.field == field)?.chosen.clone()
    }

    async fn list<T>(
        &self,
        ctx: &Context<'_>,
        entity: EntityKind,
        wrap: fn(Sourced) -> T,
    ) -> Records<T> {
        let mut records = person_records(ctx, self, entity).await;
        records.sort_by(|a, b| b.at().cmp(&a.at()).then_with(|| a.id().0.cmp(&b.id().0)));
        Records(records.into_iter().map(wrap).collect())
    }
}

/// Filters for a person's timeline.
#[derive(InputObject, Default)]
pub struct TimelineFilter {
    /// Only these kinds of record.
    pub kinds: Option<Vec<RecordKind>>,
    /// Only records from these sources.
    pub sources: Option<Vec<String>>,
    /// Only records on or after this time.
    pub from: Option<NaiveDateTime>,
    /// Only records before this time.
    pub to: Option<NaiveDateTime>,
}

pub struct TimelineItem {
    kind: RecordKind,
    at: Option<NaiveDateTime>,
    record: Sourced,
}

#[Object(shareable)]
impl TimelineItem {
    async fn kind(&self) -> RecordKind {
        self.kind
    }
    /// When it happened (the record's main date; null when the source has none).
    async fn at(&self) -> Option<NaiveDateTime> {
        self.at
    }
    async fn summary(&self) -> String {
        summary(&self.record)
    }
    async fn provenance(&self) -> Provenance {
        Provenance {
            source: self.record.source.clone(),
            local_id: self.record.record.local_id.clone(),
            last_updated: self.record.record.last_updated,
        }
    }
    async fn record(&self) -> Option<AnyRecord> {
        AnyRecord::from_sourced(self.record.clone())
    }
}

pub struct TimelineEdge {
    pub node: TimelineItem,
}

// The cursor is sealed only when it is asked for: a portal that pages by `endCursor`
// asks for none of the edges' (sealing is an AES-GCM seal and a fresh nonce; at 50 edges
// a request, with the position's text, about a tenth of a warm timeline request's CPU).
#[Object(shareable)]
impl TimelineEdge {
    async fn cursor(&self, ctx: &Context<'_>) -> String {
        timeline_cursor(ctx.data_unchecked::<AccessContext>(), &self.node)
    }
    async fn node(&self) -> &TimelineItem {
        &self.node
    }
}

fn timeline_cursor(access: &AccessContext, item: &TimelineItem) -> String {
    crate::consent::cursor::seal(TIMELINE_CURSOR, access, cursor_position(item).as_bytes())
}

#[derive(SimpleObject)]
#[graphql(shareable)]
pub struct PageInfo {
    pub has_next_page: bool,
    pub end_cursor: Option<String>,
}

#[derive(SimpleObject)]
#[graphql(shareable)]
pub struct TimelineConnection {
    pub edges: Vec<TimelineEdge>,
    pub page_info: PageInfo,
    /// Items matching the filter (after consent filtering).
    pub total_count: usize,
}

/// Timeline order: newest first; undated last; ties by kind, source, local id.
fn sort_key(
    item: &TimelineItem,
) -> (
    std::cmp::Reverse<Option<NaiveDateTime>>,
    RecordKind,
    String,
    String,
) {
    (
        std::cmp::Reverse(item.at),
        item.kind,
        item.record.source.clone(),
        item.record.record.local_id.clone(),
    )
}

/// What a timeline cursor resumes after: the item's place in the order (sealed: it
/// names a record).
fn cursor_position(item: &TimelineItem) -> String {
    let at = item
        .at
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.f").to_string())
        .unwrap_or_default();
    // A tuple serialises as the JSON array it always was, without building a value tree.
    let position = (
        at,
        format!("{:?}", item.kind),
        &item.record.source,
        &item.record.record.local_id,
    );
    serde_json::to_string(&position).unwrap_or_default()
}

const TIMELINE_CURSOR: &str = "timeline";

#[Object(shareable)]
impl Person {
    /// The gateway's person id (stable across restarts and re-indexing).
    async fn id(&self) -> ID {
        ID(self.id.clone())
    }

    /// The NHS number (10 digits) if a linked record holds a valid one (survivorship
    /// rule `nhs_number`).
    async fn nhs_number(&self, ctx: &Context<'_>) -> Option<String> {
        self.surviving(ctx, "nhs_number").await.map(|v| v.value)
    }

    /// The source person records linked into this person. Local ids identify the
    /// person: only for callers who may see the demographics.
    async fn source_records(&self, ctx: &Context<'_>) -> Vec<SourceRecord> {
        if self.demographics(ctx).await.is_empty() {
            return Vec::new();
        }
        self.refs
            .iter()
            .map(|r| SourceRecord {
                source: r.source.clone(),
                local_id: r.local_id.clone(),
                link_rule: r.link_rule.clone(),
            })
            .collect()
    }

    /// Person fields by the configured survivorship rules (`linkage.toml`), each with its
    /// provenance and the values other linked records disagree with.
    async fn golden_record(&self, ctx: &Context<'_>) -> Vec<super::linkage::GoldenField> {
        let records = self.demographics(ctx).await;
        super::linkage::golden_fields(ctx, &records)
    }

    /// Why these records are one person: each link with its rule, or its score and
    /// per-field weights.
    async fn link_evidence(&self, ctx: &Context<'_>) -> Vec<super::linkage::LinkEvidence> {
        // It names the linked records' local ids: like sourceRecords.
        if self.demographics(ctx).await.is_empty() {
            return Vec::new();
        }
        super::linkage::person_evidence(ctx, &self.id)
    }

    /// The preferred name: family and given names by their survivorship rules
    /// (`linkage.toml`); `source` is where the family name comes from.
    async fn name(&self, ctx: &Context<'_>) -> Option<HumanName> {
        let family = self.surviving(ctx, "family_name").await;
        let given = self.surviving(ctx, "given_names").await;
        let source = family.as_ref().or(given.as_ref())?.source.clone();
        // Middle names from the record the given names come from.
        let middle = match &given {
            Some(g) => self
                .demographics(ctx)
                .await
                .iter()
                .find(|r| r.source == g.source && r.record.local_id == g.local_id)
                .and_then(|r| r.record.text("middle_names").map(str::to_string)),
            None => None,
        };
        Some(HumanName {
            family: family.map(|v| v.value),
            given: given.map(|v| v.value),
            middle,
            source,
        })
    }

    /// Every name the sources hold.
    async fn names(&self, ctx: &Context<'_>) -> Vec<HumanName> {
        self.demographics(ctx)
            .await
            .into_iter()
            .map(|r| HumanName {
                family: r.record.text("family_name").map(str::to_string),
                given: r.record.text("given_names").map(str::to_string),
                middle: r.record.text("middle_names").map(str::to_string),
                source: r.source,
            })
            .collect()
    }

    /// Birth date by its survivorship rule (a real date beats an estimate under
    /// `most_complete`).
    async fn birth_date(&self, ctx: &Context<'_>) -> Option<NaiveDate> {
        self.surviving(ctx, "birth_date").await?.value.parse().ok()
    }

    /// True when the surviving birth date's record says it is estimated.
    async fn birth_date_estimated(&self, ctx: &Context<'_>) -> bool {
        let Some(chosen) = self.surviving(ctx, "birth_date").await else {
            return false;
        };
        self.demographics(ctx)
            .await
            .iter()
            .find(|r| r.source == chosen.source && r.record.local_id == chosen.local_id)
            .and_then(|r| r.record.bool("birth_date_estimated"))
            .unwrap_or(false)
    }

    async fn death_date(&self, ctx: &Context<'_>) -> Option<NaiveDate> {
        self.surviving(ctx, "death_date").await?.value.parse().ok()
    }

    async fn gender(&self, ctx: &Context<'_>) -> Option<Gender> {
        Gender::from_code(&self.surviving(ctx, "gender").await?.value)
    }

    async fn ethnicity(&self, ctx: &Context<'_>) -> Option<EthnicCategory> {
        EthnicCategory::from_code(&self.surviving(ctx, "ethnicity").await?.value)
    }

    async fn primary_support_reason(&self, ctx: &Context<'_>) -> Option<SupportReason> {
        first(&self.demographics(ctx).await, |r| {
            r.text("support_reason").and_then(SupportReason::from_code)
        })
    }

    /// NHS numbers (valid or not, as recorded), every source's local id, and the other
    /// identifiers sources hold: local authority reference, UPN, NI number, vendor uuid
    /// (`valid` checks their shape).
    async fn identifiers(&self, ctx: &Context<'_>) -> Vec<Identifier> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        let demographics = self.demographics(ctx).await;
        // Local ids identify the person as much as an NHS number: only with demographics.
        if demographics.is_empty() {
            return out;
        }
        for r in &demographics {
            if let Some(n) = r.record.text("nhs_number") {
                if seen.insert(n.to_string()) {
                    out.push(Identifier {
                        system: NHS_SYSTEM.into(),
                        value: n.to_string(),
                        valid: nhs::is_valid(n),
                    });
                }
            }
        }
        for (field, system, valid) in OTHER_IDENTIFIERS {
            for r in &demographics {
                let Some(v) = r.record.text(field) else {
                    continue;
                };
                if seen.insert(format!("{system}|{v}")) {
                    out.push(Identifier {
                        system: system.into(),
                        value: v.to_string(),
                        valid: valid(v),
                    });
                }
            }
        }
        for r in &self.refs {
            out.push(Identifier {
                system: format!("urn:escr:source:{}", r.source),
                value: r.local_id.clone(),
                valid: true,
            });
        }
        out
    }

    async fn addresses(&self, ctx: &Context<'_>) -> Records<Address> {
        self.list(ctx, EntityKind::Address, Address).await
    }
    async fn relationships(&self, ctx: &Context<'_>) -> Records<Relationship> {
        self.list(ctx, EntityKind::Relationship, Relationship).await
    }
    async fn referrals(&self, ctx: &Context<'_>) -> Records<Referral> {
        self.list(ctx, EntityKind::Referral, Referral).await
    }
    async fn assessments(&self, ctx: &Context<'_>) -> Records<Assessment> {
        self.list(ctx, EntityKind::Assessment, Assessment).await
    }
    async fn care_plans(&self, ctx: &Context<'_>) -> Records<CarePlan> {
        self.list(ctx, EntityKind::CarePlan, CarePlan).await
    }
    async fn services(&self, ctx: &Context<'_>) -> Records<Service> {
        self.list(ctx, EntityKind::Service, Service).await
    }
    async fn episodes(&self, ctx: &Context<'_>) -> Records<Episode> {
        self.list(ctx, EntityKind::Episode, Episode).await
    }
    async fn visits(&self, ctx: &Context<'_>) -> Records<Visit> {
        self.list(ctx, EntityKind::Visit, Visit).await
    }
    async fn case_notes(&self, ctx: &Context<'_>) -> Records<CaseNote> {
        self.list(ctx, EntityKind::CaseNote, CaseNote).await
    }
    async fn documents(&self, ctx: &Context<'_>) -> Records<Document> {
        self.list(ctx, EntityKind::Document, Document).await
    }
    async fn communications(&self, ctx: &Context<'_>) -> Records<Communication> {
        self.list(ctx, EntityKind::Communication, Communication)
            .await
    }
    async fn alerts(&self, ctx: &Context<'_>) -> Records<Alert> {
        self.list(ctx, EntityKind::Alert, Alert).await
    }
    async fn consents(&self, ctx: &Context<'_>) -> Records<Consent> {
        self.list(ctx, EntityKind::Consent, Consent).await
    }
    async fn allocations(&self, ctx: &Context<'_>) -> Records<Allocation> {
        self.list(ctx, EntityKind::Allocation, Allocation).await
    }

    /// What this caller is not shown of this person's record, per field and reason
    /// (the errors on those fields say the same; this survives a federation router).
    /// Empty when nothing is withheld.
    async fn withheld(&self, ctx: &Context<'_>) -> Vec<WithheldField> {
        let loads = EntityKind::ALL.iter().map(|e| withheld_of(ctx, self, *e));
        let mut all: Vec<WithheldField> = futures::future::join_all(loads)
            .await
            .into_iter()
            .flatten()
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// Every record of the person, newest first, cursor-paginated.
    async fn timeline(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50, validator(minimum = 0, maximum = 500))] first: i32,
        after: Option<String>,
        filter: Option<TimelineFilter>,
    ) -> async_graphql::Result<TimelineConnection> {
        let filter = filter.unwrap_or_default();
        let kinds: Vec<RecordKind> = filter
            .kinds
            .clone()
            .unwrap_or_else(|| RecordKind::ALL.to_vec());
        let loads = kinds.iter().map(|k| person_records(ctx, self, k.entity()));
        let mut items: Vec<TimelineItem> = futures::future::join_all(loads)
            .await
            .into_iter()
            .flatten()
            .filter(|r| {
                filter
                    .sources
                    .as_ref()
                    .is_none_or(|s| s.contains(&r.source))
            })
            .filter_map(|r| {
                let kind = RecordKind::of(r.record.entity)?;
                Some(TimelineItem {
                    kind,
                    at: r.at(),
                    record: r,
                })
            })
            .filter(|i| {
                filter
                    .from
                    .is_none_or(|from| i.at.is_some_and(|at| at >= from))
            })
            .filter(|i| filter.to.is_none_or(|to| i.at.is_some_and(|at| at < to)))
            .collect();
        items.sort_by_key(sort_key);
        let total_count = items.len();
        let access = ctx.data_unchecked::<AccessContext>();
        let not_ours =
            || GatewayError::BadInput("`after` is not a cursor of this timeline".into()).extend();
        let start = match &after {
            None => 0,
            Some(cursor) => {
                let position = crate::consent::cursor::open(TIMELINE_CURSOR, access, cursor)
                    .and_then(|p| String::from_utf8(p).ok())
                    .ok_or_else(not_ours)?;
                let found = items.iter().position(|i| cursor_position(i) == position);
                found.ok_or_else(not_ours)? + 1
            }
        };
        let first = first as usize;
        let has_next_page = items.len() > start + first;
        let edges: Vec<TimelineEdge> = items
            .into_iter()
            .skip(start)
            .take(first)
            .map(|node| TimelineEdge { node })
            .collect();
        Ok(TimelineConnection {
            page_info: PageInfo {
                has_next_page,
                end_cursor: edges.last().map(|e| timeline_cursor(access, &e.node)),
            },
            edges,
            total_count,
        })
    }
}
