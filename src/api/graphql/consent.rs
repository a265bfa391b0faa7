//! The consent registry (mutations) and the audit views (`auditTrail`,
//! `myRecordAccess`, `breakGlassReview`).

use std::sync::Arc;

use async_graphql::{Context, Enum, ErrorExtensions, InputObject, Object, SimpleObject, ID};
use chrono::{NaiveDate, NaiveDateTime};

use crate::api::error::GatewayError;
use crate::api::gateway::Gateway;
use crate::consent::access::{AccessContext, RequestScope};
use crate::consent::audit::AuditEvent;
use crate::consent::policy::{validate_provision, ConsentDecision, Provision};
use crate::consent::registry::StoredConsent;
use crate::consent::AccessControl;

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(name = "ConsentProvisionDecision")]
pub enum DecisionInput {
    Permit,
    Deny,
}

/// A FHIR-Consent-shaped provision: a decision, criteria (empty lists match anything)
/// and nested exceptions; the deepest matching provision decides.
#[derive(InputObject)]
pub struct ProvisionInput {
    pub decision: DecisionInput,
    /// User ids.
    #[graphql(default)]
    pub actors: Vec<String>,
    #[graphql(default)]
    pub roles: Vec<String>,
    #[graphql(default)]
    pub organisations: Vec<String>,
    /// Organisation kinds (`health`, ...; `external` = any but the council).
    #[graphql(default)]
    pub organisation_kinds: Vec<String>,
    /// direct_care, care_management, safeguarding, planning, research.
    #[graphql(default)]
    pub purposes: Vec<String>,
    /// demographics, care, notes, alerts, consent.
    #[graphql(default)]
    pub data_classes: Vec<String>,
    #[graphql(default)]
    pub labels: Vec<String>,
    pub start: Option<NaiveDate>,
    pub end: Option<NaiveDate>,
    #[graphql(default)]
    pub provisions: Vec<ProvisionInput>,
}

impl ProvisionInput {
    fn into_provision(self) -> Provision {
        Provision {
            decision: match self.decision {
                DecisionInput::Permit => ConsentDecision::Permit,
                DecisionInput::Deny => ConsentDecision::Deny,
            },
            actors: self.actors,
            roles: self.roles,
            organisations: self.organisations,
            organisation_kinds: self.organisation_kinds,
            purposes: self.purposes,
            classes: self.data_classes,
            labels: self.labels,
            start: self.start,
            end: self.end,
            provisions: self
                .provisions
                .into_iter()
                .map(ProvisionInput::into_provision)
                .collect(),
        }
    }
}

/// A consent in the gateway's registry.
pub struct RegistryConsentView(StoredConsent, Arc<Gateway>);

#[Object(name = "RegistryConsent")]
impl RegistryConsentView {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn person_id(&self) -> ID {
        ID(self.0.person_id.clone())
    }
    /// The provision tree as JSON (FHIR-Consent shaped).
    async fn provision(&self) -> async_graphql::Json<Provision> {
        async_graphql::Json(self.0.provision.clone())
    }
    /// Where the consent was given (portal, paper form, phone call, ...).
    async fn source(&self) -> &str {
        &self.0.source
    }
    async fn recorded_by(&self) -> &str {
        &self.0.recorded_by
    }
    async fn recorded_at(&self) -> NaiveDateTime {
        self.0.recorded_at
    }
    async fn withdrawn_by(&self) -> Option<&str> {
        self.0.withdrawn_by.as_deref()
    }
    async fn withdrawn_at(&self) -> Option<NaiveDateTime> {
        self.0.withdrawn_at
    }
    async fn withdrawal_reason(&self) -> Option<&str> {
        self.0.withdrawal_reason.as_deref()
    }
    /// Every change, oldest first.
    async fn history(&self) -> async_graphql::Result<Vec<ConsentHistoryEntry>> {
        let access = self.1.access.as_ref().ok_or_else(no_policy)?;
        Ok(access
            .registry
            .history(self.0.id)
            .map_err(internal)?
            .into_iter()
            .map(|h| ConsentHistoryEntry {
                action: h.action,
                by: h.by,
                at: h.at,
                detail: h.detail,
            })
            .collect())
    }
}

#[derive(SimpleObject)]
pub struct ConsentHistoryEntry {
    pub action: String,
    pub by: String,
    pub at: NaiveDateTime,
    pub detail: Option<String>,
}

/// One audit event (FHIR AuditEvent shaped).
#[derive(SimpleObject)]
pub struct AuditEntry {
    pub seq: i64,
    pub at: String,
    pub user: String,
    pub role: String,
    pub organisation: Option<String>,
    pub purpose: String,
    pub person_id: Option<String>,
    /// Record kinds concerned.
    pub kinds: Vec<String>,
    /// released, withheld, hidden, denied, consent_recorded, consent_withdrawn.
    pub decision: String,
    pub code: Option<String>,
    pub reason: Option<String>,
    pub break_glass_reason: Option<String>,
}

impl From<AuditEvent> for AuditEntry {
    fn from(e: AuditEvent) -> Self {
        AuditEntry {
            seq: e.seq,
            at: e.at,
            user: e.user,
            role: e.role,
            organisation: e.organisation,
            purpose: e.purpose,
            person_id: e.person_id,
            kinds: e
                .kinds
                .split(',')
                .filter(|k| !k.is_empty())
                .map(str::to_string)
                .collect(),
            decision: e.decision,
            code: e.code,
            reason: e.reason,
            break_glass_reason: e.break_glass_reason,
        }
    }
}

/// Who saw a person's record (the person's own view: no denials, no reasons).
#[derive(SimpleObject)]
pub struct RecordAccess {
    pub at: String,
    pub user: String,
    pub role: String,
    pub organisation: Option<String>,
    pub purpose: String,
    pub kinds: Vec<String>,
    pub break_glass: bool,
}

fn no_policy() -> async_graphql::Error {
    GatewayError::BadInput("the gateway runs without a consent policy".into()).extend()
}

fn internal(e: impl std::fmt::Display) -> async_graphql::Error {
    tracing::warn!(error = %e, "consent registry or audit failure");
    async_graphql::Error::new("the consent registry or audit log is unavailable")
        .extend_with(|_, ext| ext.set("code", "INTERNAL"))
}

fn forbidden(why: &str) -> async_graphql::Error {
    async_graphql::Error::new(why.to_string()).extend_with(|_, ext| ext.set("code", "FORBIDDEN"))
}

fn parts<'a>(
    ctx: &'a Context<'_>,
) -> async_graphql::Result<(&'a AccessControl, &'a AccessContext)> {
    let gateway = ctx.data_unchecked::<Arc<Gateway>>();
    let access = gateway.access.as_deref().ok_or_else(no_policy)?;
    Ok((access, ctx.data_unchecked::<AccessContext>()))
}

fn note(ctx: &Context<'_>, person: &str, decision: &str, reason: Option<&str>) {
    if let Some(scope) = ctx.data_opt::<Arc<RequestScope>>() {
        scope
            .audit
            .note(Some(person), decision, None, reason, "consent");
    }
}

#[derive(Default)]
pub struct ConsentMutation;

#[Object]
impl ConsentMutation {
    /// Record a consent given by a person (roles with `may_record_consent`). It applies
    /// from the next request on.
    async fn record_consent(
        &self,
        ctx: &Context<'_>,
        person_id: ID,
        provision: ProvisionInput,
        #[graphql(desc = "Where it was given: portal, paper form, phone, ...")] source: String,
    ) -> async_graphql::Result<RegistryConsentView> {
        let (access, caller) = parts(ctx)?;
        if !access
            .engine
            .role(&caller.role)
            .is_some_and(|r| r.may_record_consent)
        {
            return Err(forbidden("your role may not record consents"));
        }
        let gateway = ctx.data_unchecked::<Arc<Gateway>>();
        let person = gateway
            .index
            .snapshot()
            .resolve(&person_id)
            .map(str::to_string)
            .ok_or_else(|| GatewayError::BadInput("no such person".into()).extend())?;
        let provision = provision.into_provision();
        validate_provision(&provision).map_err(|e| GatewayError::BadInput(e).extend())?;
        let stored = access
            .registry
            .record(&person, &provision, &source, &caller.user)
            .map_err(internal)?;
        note(ctx, &person, "consent_recorded", Some(&source));
        Ok(RegistryConsentView(stored, gateway.clone()))
    }

    /// Withdraw a registry consent; the next request is decided without it.
    async fn withdraw_consent(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: String,
    ) -> async_graphql::Result<RegistryConsentView> {
        let (access, caller) = parts(ctx)?;
        if !access
            .engine
            .role(&caller.role)
            .is_some_and(|r| r.may_record_consent)
        {
            return Err(forbidden("your role may not withdraw consents"));
        }
        let id: i64 = id
            .parse()
            .map_err(|_| GatewayError::BadInput("not a consent id".into()).extend())?;
        let stored = access
            .registry
            .withdraw(id, &caller.user, &reason)
            .map_err(|e| match e {
                crate::consent::registry::RegistryError::NotFound(_)
                | crate::consent::registry::RegistryError::AlreadyWithdrawn(_) => {
                    GatewayError::BadInput(e.to_string()).extend()
                }
                e => internal(e),
            })?;
        note(ctx, &stored.person_id, "consent_withdrawn", Some(&reason));
        Ok(RegistryConsentView(
            stored,
            ctx.data_unchecked::<Arc<Gateway>>().clone(),
        ))
    }
}

/// `registryConsents(personId)`: roles that record consents see them all, with history.
pub fn registry_consents(
    ctx: &Context<'_>,
    person_id: &str,
) -> async_graphql::Result<Vec<RegistryConsentView>> {
    let (access, caller) = parts(ctx)?;
    let role = access.engine.role(&caller.role);
    if !role.is_some_and(|r| r.may_record_consent || r.may_read_audit) {
        return Err(forbidden("your role may not read the consent registry"));
    }
    let gateway = ctx.data_unchecked::<Arc<Gateway>>();
    note(ctx, person_id, "registry_read", None);
    Ok(access
        .registry
        .for_person(person_id)
        .map_err(internal)?
        .into_iter()
        .map(|c| RegistryConsentView(c, gateway.clone()))
        .collect())
}

/// `auditTrail(personId)`: for roles with `may_read_audit` (the Caldicott guardian).
pub fn audit_trail(ctx: &Context<'_>, person_id: &str) -> async_graphql::Result<Vec<AuditEntry>> {
    let (access, caller) = parts(ctx)?;
    if !access
        .engine
        .role(&caller.role)
        .is_some_and(|r| r.may_read_audit)
    {
        return Err(forbidden("your role may not read the audit trail"));
    }
    note(ctx, person_id, "audit_read", None);
    Ok(access
        .audit
        .for_person(person_id)
        .map_err(internal)?
        .into_iter()
        .map(AuditEntry::from)
        .collect())
}

/// `breakGlassReview`: every break-glass use, for the Caldicott guardian's review.
pub fn break_glass_review(ctx: &Context<'_>) -> async_graphql::Result<Vec<AuditEntry>> {
    let (access, caller) = parts(ctx)?;
    if !access
        .engine
        .role(&caller.role)
        .is_some_and(|r| r.may_read_audit)
    {
        return Err(forbidden("your role may not review break-glass use"));
    }
    Ok(access
        .audit
        .break_glass()
        .map_err(internal)?
        .into_iter()
        .map(AuditEntry::from)
        .collect())
}

/// `myRecordAccess`: the caller's own record (a token with a `person` claim): who saw
/// which kinds of records, when and for what purpose.
pub fn my_record_access(ctx: &Context<'_>) -> async_graphql::Result<Vec<RecordAccess>> {
    let (access, caller) = parts(ctx)?;
    let person = caller
        .person_id
        .as_deref()
        .ok_or_else(|| forbidden("your token does not name you as a person"))?;
    let snapshot = ctx.data_unchecked::<Arc<Gateway>>().index.snapshot();
    let person = snapshot.resolve(person).unwrap_or(person).to_string();
    Ok(access
        .audit
        .for_person(&person)
        .map_err(internal)?
        .into_iter()
        .filter(|e| e.decision == "released")
        .map(|e| RecordAccess {
            break_glass: e.break_glass_reason.is_some(),
            kinds: e
                .kinds
                .split(',')
                .filter(|k| !k.is_empty())
                .map(str::to_string)
                .collect(),
            at: e.at,
            user: e.user,
            role: e.role,
            organisation: e.organisation,
            purpose: e.purpose,
        })
        .collect())
}
