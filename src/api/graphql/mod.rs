//! The unified ESCR schema: an Apollo Federation v2 subgraph in which Person is an
//! entity keyed by `id` and by `nhsNumber`.

pub mod codes;
pub mod consent;
pub mod entities;
pub mod guard;
pub mod linkage;
pub mod lists;
pub mod person;
pub mod plain;
pub mod records;
pub mod region;
pub mod reports;

use std::sync::Arc;

use async_graphql::{
    Context, EmptyMutation, EmptySubscription, ErrorExtensions, MergedObject, Object, Schema,
    SimpleObject, ID,
};
use chrono::NaiveDate;
use escr_connector::nhs::{self, NhsNumber};

use crate::api::error::GatewayError;
use crate::api::gateway::Gateway;
use crate::consent::access::{AccessContext, RequestScope};
use crate::identity::search::SearchCriteria;
pub use entities::FederatedRoot;
use person::Person;

/// The council's whole API (`/graphql`).
pub type EscrSchema = Schema<FederatedRoot<Query>, Mutation, EmptySubscription>;

/// The regional subgraph (`/subgraph`): no council-internal query, no mutation.
pub type SubgraphSchema = Schema<FederatedRoot<SubgraphQuery>, EmptyMutation, EmptySubscription>;

/// The query root of `/subgraph`: the regional fields only, and the council-named
/// entry (`region.rs`).
#[derive(MergedObject, Default)]
#[graphql(name = "Query")]
pub struct SubgraphQuery(RegionalQuery, region::CouncilEntry);

/// The query root of `/graphql`: the regional fields and the council's own.
#[derive(MergedObject, Default)]
#[graphql(name = "Query")]
pub struct Query(RegionalQuery, CouncilQuery);

/// Mutation roots, one object per area (merged).
#[derive(MergedObject, Default)]
pub struct Mutation(consent::ConsentMutation, linkage::LinkageMutation);

/// Build the schema. Per request, the server adds a `RequestLoaders` and an
/// `AccessContext` to the request data.
pub fn build(gateway: Option<Arc<Gateway>>) -> EscrSchema {
    builder(gateway).finish()
}

/// The schema's builder, for the server to add its extensions (metrics, APQ).
pub fn builder(
    gateway: Option<Arc<Gateway>>,
) -> async_graphql::SchemaBuilder<FederatedRoot<Query>, Mutation, EmptySubscription> {
    configure(
        Schema::build(
            FederatedRoot(Query::default()),
            Mutation::default(),
            EmptySubscription,
        ),
        gateway,
    )
}

/// The regional subgraph's builder.
pub fn subgraph_builder(
    gateway: Option<Arc<Gateway>>,
) -> async_graphql::SchemaBuilder<FederatedRoot<SubgraphQuery>, EmptyMutation, EmptySubscription> {
    let field = gateway.as_deref().and_then(region::council_field);
    let builder = region::with_council_field(field, || {
        Schema::build(
            FederatedRoot(SubgraphQuery::default()),
            EmptyMutation,
            EmptySubscription,
        )
    });
    configure(builder, gateway)
}

/// The regional subgraph's SDL, as `_service { sdl }` gives it to a router.
pub fn subgraph_sdl() -> String {
    subgraph_builder(None)
        .finish()
        .sdl_with_options(async_graphql::SDLExportOptions::new().federation())
}

fn configure<Q, M>(
    builder: async_graphql::SchemaBuilder<Q, M, EmptySubscription>,
    gateway: Option<Arc<Gateway>>,
) -> async_graphql::SchemaBuilder<Q, M, EmptySubscription>
where
    Q: async_graphql::ObjectType + 'static,
    M: async_graphql::ObjectType + 'static,
{
    let introspection = gateway.as_ref().is_none_or(|g| g.server.introspection);
    let mut builder = builder
        .enable_federation()
        .limit_depth(guard::MAX_DEPTH)
        .limit_complexity(guard::MAX_COMPLEXITY);
    if !introspection {
        builder = builder.disable_introspection();
    }
    if let Some(g) = gateway {
        builder = builder.data(g);
    }
    builder
}

/// The SDL written to `schema.graphql` (sorted, federation directives included).
pub fn sdl() -> String {
    let options = async_graphql::SDLExportOptions::new()
        .federation()
        .sorted_fields()
        .sorted_enum_items()
        .sorted_arguments();
    build(None).sdl_with_options(options)
}

/// Note in the audit that an answer names this person (an id alone says they are
/// known here).
fn audit_id(ctx: &Context<'_>, person_id: &str, decision: &str) {
    if let Some(scope) = ctx.data_opt::<Arc<RequestScope>>() {
        scope
            .audit
            .note(Some(person_id), decision, None, None, "person_id");
    }
}

async fn person_by_id(ctx: &Context<'_>, id: &str) -> Option<Person> {
    let gateway = ctx.data_unchecked::<Arc<Gateway>>();
    let access = ctx.data_unchecked::<AccessContext>();
    let snapshot = gateway.index.snapshot();
    let id = snapshot.resolve(id)?.to_string();
    let refs = snapshot.records(&id).to_vec();
    let person = Person::new(id, refs);
    let mut visible = gateway.policy.may_see_person(access, &person.id);
    if visible && gateway.policy.needs_facts() && gateway.policy.facts_needed(access).left_out {
        // Left out altogether (the opt-out as the sources record it): not there.
        let facts = person::person_facts(ctx, &person).await;
        visible = !gateway.policy.left_out(access, &facts);
    }
    if !visible {
        audit_id(ctx, &person.id, "denied");
        return None;
    }
    audit_id(ctx, &person.id, "released");
    Some(person)
}

/// A person found by an identifier the caller gave, only where a person record the
/// caller may see carries it: a withheld match answers as no match does (null, no
/// error), so a lookup never confirms an identifier it would not show.
async fn identified(
    ctx: &Context<'_>,
    candidates: &[String],
    carries: impl Fn(&escr_connector::Record) -> bool,
) -> Option<Person> {
    let gateway = ctx.data_unchecked::<Arc<Gateway>>();
    let access = ctx.data_unchecked::<AccessContext>();
    let snapshot = gateway.index.snapshot();
    for id in candidates {
        if !gateway.policy.may_see_person(access, id) {
            audit_id(ctx, id, "denied");
            continue;
        }
        let person = Person::new(id.clone(), snapshot.records(id).to_vec());
        // Without a policy that decides per record, everything is visible.
        if !gateway.policy.needs_facts() {
            audit_id(ctx, id, "released");
            return Some(person);
        }
        let shown = person::visible_person_records(ctx, &person).await;
        if shown.iter().any(|r| carries(r)) {
            audit_id(ctx, id, "released");
            return Some(person);
        }
        audit_id(ctx, id, "denied");
    }
    None
}

async fn person_by_nhs(ctx: &Context<'_>, raw: &str) -> Result<Option<Person>, GatewayError> {
    let digits = match nhs::classify(raw, &[]) {
        NhsNumber::Valid(d) => d,
        NhsNumber::InvalidCheckDigit(_) => {
            return Err(GatewayError::BadInput(
                "not a valid NHS number: the check digit is wrong".into(),
            ))
        }
        _ => return Err(GatewayError::BadInput("an NHS number has 10 digits".into())),
    };
    let gateway = ctx.data_unchecked::<Arc<Gateway>>();
    gateway
        .policy
        .may_identify(ctx.data_unchecked::<AccessContext>())
        .map_err(GatewayError::Withheld)?;
    let candidates = gateway
        .index
        .snapshot()
        .people_with_nhs_number(&digits)
        .to_vec();
    Ok(identified(ctx, &candidates, |r| {
        r.bool("nhs_number_valid") == Some(true) && r.text("nhs_number") == Some(digits.as_str())
    })
    .await)
}

/// `searchPeople` (on `Query` and on a council's `Council`).
async fn search_people(
    ctx: &Context<'_>,
    name: Option<String>,
    birth_date: Option<NaiveDate>,
    postcode: Option<String>,
    first: i32,
    after: Option<String>,
) -> async_graphql::Result<PersonConnection> {
    let criteria = SearchCriteria::new(name.as_deref(), birth_date, postcode.as_deref())
        .ok_or_else(|| {
            GatewayError::BadInput(
                "give a name, a birth date or a postcode (with letters or digits: `%` or `_` alone is no name)".into(),
            )
            .extend()
        })?;
    let gateway = ctx.data_unchecked::<Arc<Gateway>>();
    let access = ctx.data_unchecked::<AccessContext>();
    gateway
        .policy
        .may_identify(access)
        .map_err(|w| GatewayError::Withheld(w).extend())?;
    unlisted_sources(ctx, gateway);
    let snapshot = gateway.index.snapshot();
    let mut ids = snapshot.search(name.as_deref(), birth_date, postcode.as_deref(), |id| {
        gateway.policy.may_see_person(access, id)
    });
    if gateway.policy.needs_facts() {
        // A hit counts only on the person records this caller may see: a match on
        // a withheld name or birth date would give it away.
        let checks = ids.iter().map(|id| {
            let person = Person::new(id.clone(), snapshot.records(id).to_vec());
            let criteria = &criteria;
            async move {
                let shown = person::visible_person_records(ctx, &person).await;
                criteria.matches(shown.iter().map(|r| &**r))
            }
        });
        let keep = futures::future::join_all(checks).await;
        let mut keep = keep.into_iter();
        ids.retain(|_| keep.next().unwrap_or(false));
    }
    lists::page(ctx, SEARCH_CURSOR, &ids, first, after.as_deref())
}

/// `personByNhsNumber` (on `Query` and on a council's `Council`).
async fn person_by_nhs_number(
    ctx: &Context<'_>,
    nhs_number: &str,
) -> async_graphql::Result<Option<Person>> {
    unlisted_sources(ctx, ctx.data_unchecked::<Arc<Gateway>>());
    person_by_nhs(ctx, nhs_number).await.map_err(|e| e.extend())
}

pub struct PersonEdge {
    /// The list the cursor resumes (its seal binds it to the list and the caller).
    pub list: &'static str,
    pub node: Person,
}

// The cursor is sealed only when it is asked for (see `TimelineEdge`).
#[Object(shareable)]
impl PersonEdge {
    async fn cursor(&self, ctx: &Context<'_>) -> String {
        let access = ctx.data_unchecked::<AccessContext>();
        crate::consent::cursor::seal(self.list, access, self.node.id.as_bytes())
    }
    async fn node(&self) -> &Person {
        &self.node
    }
}

#[derive(SimpleObject)]
#[graphql(shareable)]
pub struct PersonConnection {
    pub edges: Vec<PersonEdge>,
    pub page_info: person::PageInfo,
    /// People matching (among those the caller may see).
    pub total_count: usize,
}

const SEARCH_CURSOR: &str = "search";

/// What a regional router may plan over (`POST /subgraph`): finding people and the
/// federation entities. Every field is `@shareable`, as each council's gateway has
/// them; a router sends each to one council (it routes by type and field, never by key
/// value), so the same answer must mean the same person anywhere (ids are
/// council-qualified, NHS numbers national).
#[derive(Default)]
pub struct RegionalQuery;

/// The council's own operations (audit trail, break-glass review, consent registry,
/// linkage queue and decisions, data quality, reports, local ids): on `/graphql` only,
/// never in the regional subgraph.
#[derive(Default)]
pub struct CouncilQuery;

#[Object]
impl RegionalQuery {
    /// A person by gateway id (ids merged away still resolve to the survivor).
    #[graphql(shareable)]
    async fn person(&self, ctx: &Context<'_>, id: ID) -> Option<Person> {
        person_by_id(ctx, &id).await
    }

    /// A person by NHS number (spaces allowed; the check digit is verified).
    #[graphql(shareable)]
    async fn person_by_nhs_number(
        &self,
        ctx: &Context<'_>,
        nhs_number: String,
    ) -> async_graphql::Result<Option<Person>> {
        person_by_nhs_number(ctx, &nhs_number).await
    }

    /// Find people by name (every word a prefix of a name), birth date and postcode
    /// (prefix). At least one criterion is required.
    #[graphql(shareable)]
    async fn search_people(
        &self,
        ctx: &Context<'_>,
        name: Option<String>,
        birth_date: Option<NaiveDate>,
        postcode: Option<String>,
        #[graphql(default = 20, validator(minimum = 0, maximum = 200))] first: i32,
        after: Option<String>,
    ) -> async_graphql::Result<PersonConnection> {
        search_people(ctx, name, birth_date, postcode, first, after).await
    }

    /// An authority's indicators as a federation entity: a regional supergraph asks
    /// each council's gateway for its own (aggregates only; no person data moves).
    #[graphql(entity)]
    async fn find_authority_by_name(
        &self,
        ctx: &Context<'_>,
        name: String,
    ) -> Option<reports::Authority> {
        reports::authority(ctx, name)
    }

    #[graphql(entity)]
    async fn find_person_by_id(&self, ctx: &Context<'_>, id: ID) -> Option<Person> {
        person_by_id(ctx, &id).await
    }

    #[graphql(entity)]
    async fn find_person_by_nhs_number(
        &self,
        ctx: &Context<'_>,
        nhs_number: String,
    ) -> async_graphql::Result<Option<Person>> {
        person_by_nhs(ctx, &nhs_number)
            .await
            .map_err(|e| e.extend())
    }
}

#[Object]
impl CouncilQuery {
    /// The person a source record belongs to (null unless the caller may see that
    /// record; purposes without demographics may not look people up by local ids).
    async fn person_by_source_record(
        &self,
        ctx: &Context<'_>,
        source: String,
        local_id: String,
    ) -> async_graphql::Result<Option<Person>> {
        let gateway = ctx.data_unchecked::<Arc<Gateway>>();
        gateway
            .policy
            .may_identify(ctx.data_unchecked::<AccessContext>())
            .map_err(|w| GatewayError::Withheld(w).extend())?;
        let Some(id) = gateway
            .index
            .snapshot()
            .by_source(&source, &local_id)
            .map(str::to_string)
        else {
            return Ok(None);
        };
        Ok(identified(ctx, &[id], |r| r.local_id == local_id).await)
    }

    /// The calling worker's caseload: people with an allocation to them (token claim
    /// `worker`) in force today, in id order; only those the caller may see are listed
    /// or counted.
    async fn my_caseload(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20, validator(minimum = 0, maximum = 200))] first: i32,
        after: Option<String>,
    ) -> async_graphql::Result<PersonConnection> {
        lists::my_caseload(ctx, first, after).await
    }

    /// Everyone in the identity index, in id order, for roles that may list people
    /// (`may_list_people`; others get FORBIDDEN); only those the caller may see are
    /// listed or counted.
    async fn people(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20, validator(minimum = 0, maximum = 200))] first: i32,
        after: Option<String>,
    ) -> async_graphql::Result<PersonConnection> {
        lists::people(ctx, first, after).await
    }

    /// Every access decision about a person (Caldicott guardian).
    async fn audit_trail(
        &self,
        ctx: &Context<'_>,
        person_id: ID,
    ) -> async_graphql::Result<Vec<consent::AuditEntry>> {
        consent::audit_trail(ctx, &person_id).await
    }

    /// Every break-glass use, for review (Caldicott guardian).
    async fn break_glass_review(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<consent::AuditEntry>> {
        consent::break_glass_review(ctx).await
    }

    /// Who has seen my record (a token with a `person` claim).
    async fn my_record_access(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<consent::RecordAccess>> {
        consent::my_record_access(ctx).await
    }

    /// Consents recorded in the gateway's registry for a person, withdrawn ones too.
    async fn registry_consents(
        &self,
        ctx: &Context<'_>,
        person_id: ID,
    ) -> async_graphql::Result<Vec<consent::RegistryConsentView>> {
        consent::registry_consents(ctx, &person_id).await
    }

    /// Candidate pairs of records that may be one person (data stewards).
    async fn linkage_review_queue(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50, validator(minimum = 0, maximum = 500))] first: i32,
        #[graphql(default = 0, validator(minimum = 0))] offset: i32,
    ) -> async_graphql::Result<linkage::ReviewQueue> {
        linkage::LinkageQuery
            .linkage_review_queue(ctx, first, offset)
            .await
    }

    /// Data stewards' link / unlink decisions, oldest first (data stewards).
    async fn link_decisions(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<linkage::LinkDecision>> {
        linkage::LinkageQuery.link_decisions(ctx).await
    }

    /// Per source: missing / invalid / placeholder NHS numbers, probable duplicates,
    /// unmapped codes, impossible and estimated dates, end before start, services after
    /// death, bad postcodes (data stewards). Also as CSV: GET /reports/data-quality.csv.
    async fn data_quality_report(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<crate::identity::quality::QualityReport> {
        linkage::data_quality(ctx).await
    }

    /// Performance indicators for a period (`2025-26`, or `2025-04-01..2026-03-31`), per
    /// authority (all this gateway reports on when none are named). Purpose `planning`
    /// or `research`; people with a national data opt-out are not counted; counts below
    /// the configured threshold are withheld (null, `suppressed: true`). Also over HTTP:
    /// GET /reports/indicators.json or .csv?period=...
    async fn indicators(
        &self,
        ctx: &Context<'_>,
        period: String,
        authorities: Option<Vec<String>>,
    ) -> async_graphql::Result<Vec<crate::reports::suppress::IndicatorResult>> {
        reports::indicators(ctx, &period, authorities).await
    }

    /// The shared minimum data set for a period and authority, a page of event rows
    /// (person fields repeated on each). Purpose `planning` or `research`; every record
    /// passes the consent policy; every release is audited. Also streamed as CSV:
    /// GET /reports/mds.csv?period=...
    async fn minimum_data_set(
        &self,
        ctx: &Context<'_>,
        period: String,
        authority: String,
        #[graphql(default = 100, validator(minimum = 1, maximum = 1000))] first: i32,
        after: Option<String>,
    ) -> async_graphql::Result<reports::MdsPage> {
        reports::minimum_data_set(ctx, &period, &authority, first, after).await
    }
}

/// Answers read from the identity index lack the people of a source whose listing
/// failed at the last refresh: each such source adds a `SOURCE_UNAVAILABLE` error, so
/// a short answer is never silent.
fn unlisted_sources(ctx: &Context<'_>, gateway: &Gateway) {
    for source in gateway.fetcher.sources.iter() {
        if source.health.listing_failed() {
            let e = crate::record::source::SourceError::NotIndexed {
                source_name: source.name.clone(),
            };
            ctx.add_error(GatewayError::Source(e).to_server_error(Some(ctx.item.pos)));
        }
    }
}
