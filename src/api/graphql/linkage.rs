//! Identity linkage in the schema: why records are one person (`Person.linkEvidence`),
//! and the data steward's review queue with link / unlink decisions.
//!
//! Steward operations need the caller's role to be `data_steward` (the one check here;
//! a policy can take it over). They show record keys, scores and per-field levels, never
//! field values.

use std::sync::Arc;

use async_graphql::{Context, Enum, ErrorExtensions, InputObject, Object, SimpleObject};

use crate::api::error::GatewayError;
use crate::api::gateway::Gateway;
use crate::consent::access::AccessContext;
use crate::identity::index::{self, DecisionAction};

/// The role allowed to see the review queue and decide links.
pub const STEWARD_ROLE: &str = "data_steward";

fn require_steward(ctx: &Context<'_>) -> async_graphql::Result<()> {
    let access = ctx.data_unchecked::<AccessContext>();
    if access.role == STEWARD_ROLE {
        Ok(())
    } else {
        let mut err = async_graphql::Error::new("only a data steward may do this");
        err = err.extend_with(|_, e| e.set("code", crate::api::error::codes::FORBIDDEN));
        Err(err)
    }
}

/// A source person record.
#[derive(SimpleObject, Clone)]
#[graphql(shareable)]
pub struct RecordRef {
    pub source: String,
    pub local_id: String,
}

impl From<&index::RecordKey> for RecordRef {
    fn from(k: &index::RecordKey) -> Self {
        RecordRef {
            source: k.0.clone(),
            local_id: k.1.clone(),
        }
    }
}

#[derive(InputObject)]
pub struct RecordRefInput {
    pub source: String,
    pub local_id: String,
}

impl RecordRefInput {
    fn key(&self) -> index::RecordKey {
        (self.source.clone(), self.local_id.clone())
    }
}

/// One compared field's contribution to a score: log2(m/u) bits for its level.
#[derive(SimpleObject, Clone)]
#[graphql(shareable)]
pub struct FieldWeight {
    /// nhs_number, family_name, given_name, birth_date, sex, postcode.
    pub field: String,
    /// exact, close, phonetic, swapped, estimated, same_year, district, different,
    /// agree, disagree, missing.
    pub level: String,
    pub weight: f64,
}

fn weights(w: &[crate::identity::linkage::FieldWeight]) -> Vec<FieldWeight> {
    w.iter()
        .map(|w| FieldWeight {
            field: w.field.clone(),
            level: w.level.clone(),
            weight: (w.weight * 100.0).round() / 100.0,
        })
        .collect()
}

/// A link between two of a person's records: the rule or score that made it.
#[derive(SimpleObject)]
#[graphql(shareable)]
pub struct LinkEvidence {
    pub a: RecordRef,
    pub b: RecordRef,
    /// steward_link, vendor_merge, nhs_number+birth_date, exact_trace (a full
    /// demographic trace) or probabilistic.
    pub rule: String,
    /// Total weight in bits (probabilistic links).
    pub score: Option<f64>,
    pub weights: Vec<FieldWeight>,
    /// Steward links: who decided, when and why.
    pub note: Option<String>,
}

impl From<&index::LinkEdge> for LinkEvidence {
    fn from(e: &index::LinkEdge) -> Self {
        LinkEvidence {
            a: (&e.a).into(),
            b: (&e.b).into(),
            rule: e.rule.clone(),
            score: e.score,
            weights: weights(&e.weights),
            note: e.note.clone(),
        }
    }
}

/// The links that join a person's records (for `Person.linkEvidence`).
pub fn person_evidence(ctx: &Context<'_>, person_id: &str) -> Vec<LinkEvidence> {
    let gateway = ctx.data_unchecked::<Arc<Gateway>>();
    gateway
        .index
        .snapshot()
        .link_evidence(person_id)
        .iter()
        .map(Into::into)
        .collect()
}

/// A pair of records that may be one person, waiting for a data steward.
#[derive(SimpleObject)]
#[graphql(shareable)]
pub struct ReviewCandidate {
    pub a: RecordRef,
    pub b: RecordRef,
    pub a_person_id: String,
    pub b_person_id: String,
    /// Null when a deterministic link was refused (see `reason`).
    pub score: Option<f64>,
    pub reason: String,
    pub weights: Vec<FieldWeight>,
}

#[derive(SimpleObject)]
#[graphql(shareable)]
pub struct ReviewQueue {
    pub total_count: usize,
    pub items: Vec<ReviewCandidate>,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum LinkAction {
    Link,
    Unlink,
}

/// A data steward's decision, kept across re-indexing.
#[derive(SimpleObject)]
#[graphql(shareable)]
pub struct LinkDecision {
    pub id: i64,
    pub action: LinkAction,
    pub a: RecordRef,
    pub b: RecordRef,
    pub reason: String,
    pub decided_by: String,
    pub decided_at: String,
}

impl From<&index::LinkDecision> for LinkDecision {
    fn from(d: &index::LinkDecision) -> Self {
        LinkDecision {
            id: d.id,
            action: match d.action {
                DecisionAction::Link => LinkAction::Link,
                DecisionAction::Unlink => LinkAction::Unlink,
            },
            a: (&d.a).into(),
            b: (&d.b).into(),
            reason: d.reason.clone(),
            decided_by: d.decided_by.clone(),
            decided_at: d.decided_at.clone(),
        }
    }
}

/// What a decision did: the decision and the two records' people afterwards.
#[derive(SimpleObject)]
#[graphql(shareable)]
pub struct LinkDecisionResult {
    pub decision: LinkDecision,
    pub a_person_id: Option<String>,
    pub b_person_id: Option<String>,
}

#[derive(Default)]
pub struct LinkageQuery;

/// Resolvers behind `Query.linkageReviewQueue` / `Query.linkDecisions`.
impl LinkageQuery {
    pub async fn linkage_review_queue(
        &self,
        ctx: &Context<'_>,
        first: i32,
        offset: i32,
    ) -> async_graphql::Result<ReviewQueue> {
        require_steward(ctx)?;
        let gateway = ctx.data_unchecked::<Arc<Gateway>>();
        let snap = gateway.index.snapshot();
        let queue = snap.review_queue();
        Ok(ReviewQueue {
            total_count: queue.len(),
            items: queue
                .iter()
                .skip(offset as usize)
                .take(first as usize)
                .map(|c| ReviewCandidate {
                    a: (&c.a).into(),
                    b: (&c.b).into(),
                    a_person_id: c.a_person.clone(),
                    b_person_id: c.b_person.clone(),
                    score: c.score,
                    reason: c.reason.clone(),
                    weights: weights(&c.weights),
                })
                .collect(),
        })
    }

    pub async fn link_decisions(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<LinkDecision>> {
        require_steward(ctx)?;
        let gateway = ctx.data_unchecked::<Arc<Gateway>>();
        Ok(gateway
            .index
            .snapshot()
            .decisions()
            .iter()
            .map(Into::into)
            .collect())
    }
}

#[derive(Default)]
pub struct LinkageMutation;

async fn decide(
    ctx: &Context<'_>,
    action: DecisionAction,
    a: RecordRefInput,
    b: RecordRefInput,
    reason: String,
) -> async_graphql::Result<LinkDecisionResult> {
    require_steward(ctx)?;
    let gateway = ctx.data_unchecked::<Arc<Gateway>>();
    let access = ctx.data_unchecked::<AccessContext>();
    let decision = gateway
        .decide(action, a.key(), b.key(), &reason, &access.user)
        .await
        .map_err(|e| match e {
            index::IndexError::Decision(m) => GatewayError::BadInput(m).extend(),
            other => {
                tracing::warn!(error = %other, "link decision failed");
                async_graphql::Error::new("the identity index could not record the decision")
            }
        })?;
    // The people changed: cached records are keyed by source record, so they stay valid.
    let snap = gateway.index.snapshot();
    let a_person_id = snap.by_source(&a.source, &a.local_id).map(str::to_string);
    let b_person_id = snap.by_source(&b.source, &b.local_id).map(str::to_string);
    // Steward decisions are audited with the request, like releases.
    if let Some(scope) = ctx.data_opt::<Arc<crate::consent::access::RequestScope>>() {
        let verdict = match action {
            DecisionAction::Link => "linked",
            DecisionAction::Unlink => "unlinked",
        };
        let people: std::collections::BTreeSet<_> =
            [&a_person_id, &b_person_id].into_iter().flatten().collect();
        for person in people {
            scope
                .audit
                .note(Some(person), verdict, None, Some(&reason), "identity");
        }
    }
    Ok(LinkDecisionResult {
        a_person_id,
        b_person_id,
        decision: (&decision).into(),
    })
}

#[Object]
impl LinkageMutation {
    /// Link two records into one person (a steward's decision; overrides scores).
    async fn link_records(
        &self,
        ctx: &Context<'_>,
        a: RecordRefInput,
        b: RecordRefInput,
        reason: String,
    ) -> async_graphql::Result<LinkDecisionResult> {
        decide(ctx, DecisionAction::Link, a, b, reason).await
    }

    /// Keep two records apart (splits a person when they were linked); no rule or score
    /// links them again until a steward links them.
    async fn unlink_records(
        &self,
        ctx: &Context<'_>,
        a: RecordRefInput,
        b: RecordRefInput,
        reason: String,
    ) -> async_graphql::Result<LinkDecisionResult> {
        decide(ctx, DecisionAction::Unlink, a, b, reason).await
    }
}

/// One source's value of a person field.
#[derive(SimpleObject)]
#[graphql(shareable)]
pub struct SourcedValue {
    pub value: String,
    pub source: String,
    pub local_id: String,
    pub last_updated: Option<chrono::NaiveDateTime>,
}

impl From<&crate::identity::linkage::golden::SourcedValue> for SourcedValue {
    fn from(v: &crate::identity::linkage::golden::SourcedValue) -> Self {
        SourcedValue {
            value: v.value.clone(),
            source: v.source.clone(),
            local_id: v.local_id.clone(),
            last_updated: v.last_updated,
        }
    }
}

/// A golden-record field: the surviving value, where it came from, and the values other
/// records hold.
#[derive(SimpleObject)]
#[graphql(shareable)]
pub struct GoldenField {
    /// family_name, given_names, birth_date, death_date, gender, ethnicity, nhs_number,
    /// postcode.
    pub field: String,
    /// The survivorship rule applied: source_priority, most_recent or most_complete.
    pub rule: String,
    pub value: Option<String>,
    pub provenance: Option<SourcedValue>,
    /// Values from other linked records that disagree with `value`.
    pub conflicts: Vec<SourcedValue>,
}

/// Golden fields from a person's released person records (for `Person.goldenRecord`).
/// The golden record of one person's released demographics, by the configured
/// survivorship rules.
pub fn survivorship(
    ctx: &Context<'_>,
    records: &[crate::api::graphql::records::Sourced],
) -> Vec<crate::identity::linkage::golden::GoldenField> {
    let gateway = ctx.data_unchecked::<Arc<Gateway>>();
    let input: Vec<(String, &escr_connector::Record)> = records
        .iter()
        .map(|r| (r.source.clone(), &*r.record))
        .collect();
    crate::identity::linkage::golden::golden(&input, &gateway.index.linkage_config().survivorship)
}

pub fn golden_fields(
    ctx: &Context<'_>,
    records: &[crate::api::graphql::records::Sourced],
) -> Vec<GoldenField> {
    survivorship(ctx, records)
        .iter()
        .map(|g| GoldenField {
            field: g.field.to_string(),
            rule: match g.rule {
                crate::identity::linkage::config::Rule::SourcePriority => "source_priority",
                crate::identity::linkage::config::Rule::MostRecent => "most_recent",
                crate::identity::linkage::config::Rule::MostComplete => "most_complete",
            }
            .to_string(),
            value: g.chosen.as_ref().map(|c| c.value.clone()),
            provenance: g.chosen.as_ref().map(Into::into),
            conflicts: g.conflicts.iter().map(Into::into).collect(),
        })
        .collect()
}

/// The data-quality report (for `Query.dataQualityReport`).
pub async fn data_quality(
    ctx: &Context<'_>,
) -> async_graphql::Result<crate::identity::quality::QualityReport> {
    require_steward(ctx)?;
    let gateway = ctx.data_unchecked::<Arc<Gateway>>();
    Ok(crate::identity::quality::build(&gateway.index, &gateway.fetcher.sources).await)
}
