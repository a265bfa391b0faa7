//! The unified ESCR schema: an Apollo Federation v2 subgraph in which Person is an
//! entity keyed by `id` and by `nhsNumber`.

pub mod codes;
pub mod consent;
pub mod linkage;
pub mod person;
pub mod records;
pub mod reports;

use std::sync::Arc;

use async_graphql::{
    Context, EmptySubscription, ErrorExtensions, MergedObject, Object, Schema, SimpleObject, ID,
};
use base64::Engine;
use chrono::NaiveDate;
use escr_connector::nhs::{self, NhsNumber};

use crate::api::error::GatewayError;
use crate::api::gateway::Gateway;
use crate::consent::access::AccessContext;
use person::Person;

pub type EscrSchema = Schema<Query, Mutation, EmptySubscription>;

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
) -> async_graphql::SchemaBuilder<Query, Mutation, EmptySubscription> {
    let mut builder = Schema::build(Query, Mutation::default(), EmptySubscription)
        .enable_federation()
        .limit_depth(16)
        .limit_complexity(20_000);
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

pub struct Query;

fn person_by_id(ctx: &Context<'_>, id: &str) -> Option<Person> {
    let gateway = ctx.data_unchecked::<Arc<Gateway>>();
    let access = ctx.data_unchecked::<AccessContext>();
    let snapshot = gateway.index.snapshot();
    let id = snapshot.resolve(id)?.to_string();
    if !gateway.policy.may_see_person(access, &id) {
        if let Some(scope) = ctx.data_opt::<Arc<crate::consent::access::RequestScope>>() {
            scope.audit.note(Some(&id), "denied", None, None, "person");
        }
        return None;
    }
    Some(Person {
        refs: snapshot.records(&id).to_vec(),
        id,
    })
}

fn person_by_nhs(ctx: &Context<'_>, raw: &str) -> Result<Option<Person>, GatewayError> {
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
    let id = gateway
        .index
        .snapshot()
        .by_nhs_number(&digits)
        .map(str::to_string);
    Ok(id.and_then(|id| person_by_id(ctx, &id)))
}

#[derive(SimpleObject)]
pub struct PersonEdge {
    pub cursor: String,
    pub node: Person,
}

#[derive(SimpleObject)]
pub struct PersonConnection {
    pub edges: Vec<PersonEdge>,
    pub page_info: person::PageInfo,
    /// People matching (among those the caller may see).
    pub total_count: usize,
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

fn unb64(s: &str) -> Option<String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
}

#[Object]
impl Query {
    /// A person by gateway id (ids merged away still resolve to the survivor).
    async fn person(&self, ctx: &Context<'_>, id: ID) -> Option<Person> {
        person_by_id(ctx, &id)
    }

    /// A person by NHS number (spaces allowed; the check digit is verified).
    async fn person_by_nhs_number(
        &self,
        ctx: &Context<'_>,
        nhs_number: String,
    ) -> async_graphql::Result<Option<Person>> {
        unlisted_sources(ctx, ctx.data_unchecked::<Arc<Gateway>>());
        person_by_nhs(ctx, &nhs_number).map_err(|e| e.extend())
    }

    /// The person a source record belongs to.
    async fn person_by_source_record(
        &self,
        ctx: &Context<'_>,
        source: String,
        local_id: String,
    ) -> Option<Person> {
        let gateway = ctx.data_unchecked::<Arc<Gateway>>();
        let id = gateway
            .index
            .snapshot()
            .by_source(&source, &local_id)?
            .to_string();
        person_by_id(ctx, &id)
    }

    /// Find people by name (every word a prefix of a name), birth date and postcode
    /// (prefix). At least one criterion is required.
    async fn search_people(
        &self,
        ctx: &Context<'_>,
        name: Option<String>,
        birth_date: Option<NaiveDate>,
        postcode: Option<String>,
        #[graphql(default = 20, validator(minimum = 0, maximum = 200))] first: i32,
        after: Option<String>,
    ) -> async_graphql::Result<PersonConnection> {
        let blank = |s: &Option<String>| s.as_deref().is_none_or(|s| s.trim().is_empty());
        if blank(&name) && birth_date.is_none() && blank(&postcode) {
            return Err(
                GatewayError::BadInput("give a name, a birth date or a postcode".into()).extend(),
            );
        }
        let gateway = ctx.data_unchecked::<Arc<Gateway>>();
        let access = ctx.data_unchecked::<AccessContext>();
        gateway
            .policy
            .may_identify(access)
            .map_err(|w| GatewayError::Withheld(w).extend())?;
        unlisted_sources(ctx, gateway);
        let snapshot = gateway.index.snapshot();
        let ids = snapshot.search(name.as_deref(), birth_date, postcode.as_deref(), |id| {
            gateway.policy.may_see_person(access, id)
        });
        let start = match after.as_deref() {
            None => 0,
            Some(cursor) => {
                let after_id = unb64(cursor).ok_or_else(|| {
                    GatewayError::BadInput("`after` is not a cursor".into()).extend()
                })?;
                ids.partition_point(|id| id.as_str() <= after_id.as_str())
            }
        };
        let first = first as usize;
        let edges: Vec<PersonEdge> = ids
            .iter()
            .skip(start)
            .take(first)
            .map(|id| PersonEdge {
                cursor: b64(id),
                node: Person {
                    id: id.clone(),
                    refs: snapshot.records(id).to_vec(),
                },
            })
            .collect();
        Ok(PersonConnection {
            page_info: person::PageInfo {
                has_next_page: ids.len() > start + first,
                end_cursor: edges.last().map(|e| e.cursor.clone()),
            },
            edges,
            total_count: ids.len(),
        })
    }

    /// Every access decision about a person (Caldicott guardian).
    async fn audit_trail(
        &self,
        ctx: &Context<'_>,
        person_id: ID,
    ) -> async_graphql::Result<Vec<consent::AuditEntry>> {
        consent::audit_trail(ctx, &person_id)
    }

    /// Every break-glass use, for review (Caldicott guardian).
    async fn break_glass_review(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<consent::AuditEntry>> {
        consent::break_glass_review(ctx)
    }

    /// Who has seen my record (a token with a `person` claim).
    async fn my_record_access(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<consent::RecordAccess>> {
        consent::my_record_access(ctx)
    }

    /// Consents recorded in the gateway's registry for a person, withdrawn ones too.
    async fn registry_consents(
        &self,
        ctx: &Context<'_>,
        person_id: ID,
    ) -> async_graphql::Result<Vec<consent::RegistryConsentView>> {
        consent::registry_consents(ctx, &person_id)
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
        person_by_id(ctx, &id)
    }

    #[graphql(entity)]
    async fn find_person_by_nhs_number(
        &self,
        ctx: &Context<'_>,
        nhs_number: String,
    ) -> Option<Person> {
        person_by_nhs(ctx, &nhs_number).ok().flatten()
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
