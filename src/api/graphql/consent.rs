//! The consent registry (mutations) and the audit views (`auditTrail`,
//! `myRecordAccess`, `breakGlassReview`).

use std::sync::Arc;

use async_graphql::{Context, Enum, ErrorExtensions, InputObject, Object, SimpleObject, ID};
use chrono::{NaiveDate, NaiveDateTime};

use super::person::Person;
use crate::api::error::GatewayError;
use crate::api::gateway::Gateway;
use crate::consent::access::{AccessContext, PersonFacts, RequestScope};
use crate::consent::audit::AuditEvent;
use crate::consent::engine::RegistryConsent;
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

#[Object(name = "RegistryConsent", shareable)]
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
    /// The reference of what the person signed or said, when one was given.
    async fn evidence(&self) -> Option<&str> {
        self.0.evidence.as_deref()
    }
    /// Every change, oldest first.
    async fn history(&self) -> async_graphql::Result<Vec<ConsentHistoryEntry>> {
        let access = self.1.access.as_ref().ok_or_else(no_policy)?;
        Ok(access
            .registry
            .history(self.0.id)
            .await
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
#[graphql(shareable)]
pub struct ConsentHistoryEntry {
    pub action: String,
    pub by: String,
    pub at: NaiveDateTime,
    pub detail: Option<String>,
}

/// One audit event (FHIR AuditEvent shaped).
#[derive(SimpleObject)]
#[graphql(shareable)]
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
#[graphql(shareable)]
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
    async_graphql::Error::new(why.to_string())
        .extend_with(|_, ext| ext.set("code", crate::api::error::codes::FORBIDDEN))
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

/// On whose authority a caller changes a person's registry consents.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Authority {
    /// The person themself (a `person` token for their own record).
    Person,
    /// A role made for the registry (`consent_registrar`).
    Registrar,
    /// A worker allocated (or whose team is) to the person, in a role that records
    /// consents.
    Allocated,
    /// Reads only: the Caldicott guardian (`may_read_audit`).
    Reader,
}

/// The caller's authority over a person's registry consents, or the refusal.
async fn authority(
    ctx: &Context<'_>,
    person: &Person,
    reading: bool,
) -> async_graphql::Result<(Authority, Arc<PersonFacts>)> {
    let (access, caller) = parts(ctx)?;
    let engine = &access.engine;
    let role = engine
        .role(&caller.role)
        .ok_or_else(|| forbidden("unknown role"))?;
    let facts = super::person::all_person_facts(ctx, person).await;
    let found = if role.own_record_only {
        engine
            .is_self(caller, &person.id)
            .then_some(Authority::Person)
    } else if role.consent_registrar {
        Some(Authority::Registrar)
    } else if role.may_record_consent && engine.has_relationship(caller, &facts) {
        Some(Authority::Allocated)
    } else if reading && role.may_read_audit {
        Some(Authority::Reader)
    } else {
        None
    };
    match found {
        Some(a) => Ok((a, facts)),
        None if role.may_record_consent => Err(forbidden(
            "you may change the consents only of people you or your team are allocated to",
        )),
        None => Err(forbidden(if reading {
            "your role may not read the consent registry"
        } else {
            "your role may not record or withdraw consents"
        })),
    }
}

/// Refuse a registry change the caller may not make: lifting the person's refusal
/// needs the person or an evidence reference; nobody but the person may widen their
/// own access to the person. `after` is what the person's facts would be.
fn may_change(
    ctx: &Context<'_>,
    who: Authority,
    before: &PersonFacts,
    after: &PersonFacts,
    lifts_refusal: bool,
    evidence: Option<&str>,
) -> async_graphql::Result<()> {
    let (access, caller) = parts(ctx)?;
    if who == Authority::Person {
        return Ok(());
    }
    if lifts_refusal && evidence.is_none() {
        return Err(forbidden(
            "this lifts the person's refusal: it needs the person themself, or an `evidence` reference to what they signed or said",
        ));
    }
    let engine = &access.engine;
    let widened = engine
        .consent_reach(caller, after)
        .difference(&engine.consent_reach(caller, before))
        .next()
        .is_some();
    if widened {
        return Err(forbidden(
            "this change would widen your own access to the person: someone it does not concern must make it",
        ));
    }
    Ok(())
}

fn evidence_of(evidence: Option<String>) -> async_graphql::Result<Option<String>> {
    let evidence = evidence
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty());
    if evidence.as_ref().is_some_and(|e| e.chars().count() > 200) {
        return Err(GatewayError::BadInput("evidence: at most 200 characters".into()).extend());
    }
    Ok(evidence)
}

fn summary(p: &Provision) -> &'static str {
    match (p.permits_anything(), p.denies_anything()) {
        (true, true) => "permit and deny",
        (true, false) => "permit",
        _ => "deny",
    }
}

#[derive(Default)]
pub struct ConsentMutation;

#[Object]
impl ConsentMutation {
    /// Record a consent given by a person: by the person themself, a registrar, or a
    /// worker allocated to them (roles with `may_record_consent`). Lifting the person's
    /// refusal needs the person or an `evidence` reference; nobody may widen their own
    /// access. It applies from the next request on; the change is audited with what it
    /// takes precedence over.
    async fn record_consent(
        &self,
        ctx: &Context<'_>,
        person_id: ID,
        provision: ProvisionInput,
        #[graphql(desc = "Where it was given: portal, paper form, phone, ...")] source: String,
        #[graphql(desc = "Reference of what the person signed or said (a form, a call)")]
        evidence: Option<String>,
    ) -> async_graphql::Result<RegistryConsentView> {
        let (access, caller) = parts(ctx)?;
        if !access
            .engine
            .role(&caller.role)
            .is_some_and(|r| r.may_record_consent || r.consent_registrar || r.own_record_only)
        {
            return Err(forbidden("your role may not record consents"));
        }
        let gateway = ctx.data_unchecked::<Arc<Gateway>>();
        let snapshot = gateway.index.snapshot();
        let id = snapshot
            .resolve(&person_id)
            .map(str::to_string)
            .ok_or_else(|| GatewayError::BadInput("no such person".into()).extend())?;
        let refs = snapshot.records(&id).to_vec();
        let person = Person::new(id, refs);
        let provision = provision.into_provision();
        validate_provision(&provision).map_err(|e| GatewayError::BadInput(e).extend())?;
        let evidence = evidence_of(evidence)?;
        let (who, before) = authority(ctx, &person, false).await?;
        let mut after = (*before).clone();
        after.registry_consents.push(RegistryConsent {
            id: i64::MAX,
            provision: provision.clone(),
            recorded_at: chrono::Utc::now().naive_utc(),
        });
        let lifts = provision.permits_anything() && access.engine.has_refusal(&before);
        may_change(ctx, who, &before, &after, lifts, evidence.as_deref())?;
        let replaces: Vec<i64> = before.registry_consents.iter().map(|c| c.id).collect();
        let stored = access
            .registry
            .record(
                &person.id,
                &provision,
                &source,
                &caller.user,
                evidence.as_deref(),
                &replaces,
            )
            .await
            .map_err(internal)?;
        let replaced = before
            .registry_consents
            .iter()
            .map(|c| format!("{} ({})", c.id, summary(&c.provision)))
            .collect::<Vec<_>>()
            .join(", ");
        note(
            ctx,
            &person.id,
            "consent_recorded",
            Some(&format!(
                "consent {} ({}) from {source}; over: [{replaced}]; evidence: {}",
                stored.id,
                summary(&provision),
                evidence.as_deref().unwrap_or("none")
            )),
        );
        Ok(RegistryConsentView(stored, gateway.clone()))
    }

    /// Withdraw a registry consent (the same authority as recording; withdrawing a
    /// refusal lifts it); the next request is decided without it.
    async fn withdraw_consent(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: String,
        #[graphql(desc = "Reference of what the person signed or said (a form, a call)")]
        evidence: Option<String>,
    ) -> async_graphql::Result<RegistryConsentView> {
        let (access, caller) = parts(ctx)?;
        if !access
            .engine
            .role(&caller.role)
            .is_some_and(|r| r.may_record_consent || r.consent_registrar || r.own_record_only)
        {
            return Err(forbidden("your role may not withdraw consents"));
        }
        let not_yours = || {
            GatewayError::BadInput(format!("no consent {} that you may withdraw", id.as_str()))
                .extend()
        };
        let consent_id: i64 = id.parse().map_err(|_| not_yours())?;
        let stored = access
            .registry
            .get(consent_id)
            .await
            .map_err(internal)?
            .ok_or_else(not_yours)?;
        let gateway = ctx.data_unchecked::<Arc<Gateway>>();
        let snapshot = gateway.index.snapshot();
        let person_id = snapshot
            .resolve(&stored.person_id)
            .unwrap_or(&stored.person_id)
            .to_string();
        let refs = snapshot.records(&person_id).to_vec();
        let person = Person::new(person_id, refs);
        // Someone without authority over the person learns nothing of their consents.
        let (who, before) = authority(ctx, &person, false)
            .await
            .map_err(|_| not_yours())?;
        let evidence = evidence_of(evidence)?;
        let mut after = (*before).clone();
        after.registry_consents.retain(|c| c.id != consent_id);
        let lifts = stored.provision.denies_anything();
        may_change(ctx, who, &before, &after, lifts, evidence.as_deref())?;
        let withdrawn = access
            .registry
            .withdraw(consent_id, &caller.user, &reason, evidence.as_deref())
            .await
            .map_err(|e| match e {
                crate::consent::registry::RegistryError::NotFound(_)
                | crate::consent::registry::RegistryError::AlreadyWithdrawn(_) => {
                    GatewayError::BadInput(e.to_string()).extend()
                }
                e => internal(e),
            })?;
        note(
            ctx,
            &person.id,
            "consent_withdrawn",
            Some(&format!(
                "consent {consent_id} ({}) withdrawn: {reason}; evidence: {}",
                summary(&stored.provision),
                evidence.as_deref().unwrap_or("none")
            )),
        );
        Ok(RegistryConsentView(withdrawn, gateway.clone()))
    }
}

/// `registryConsents(personId)`: the person, a registrar, a worker allocated to them,
/// or the Caldicott guardian.
pub async fn registry_consents(
    ctx: &Context<'_>,
    person_id: &str,
) -> async_graphql::Result<Vec<RegistryConsentView>> {
    let (access, _) = parts(ctx)?;
    let gateway = ctx.data_unchecked::<Arc<Gateway>>();
    let snapshot = gateway.index.snapshot();
    let Some(id) = snapshot.resolve(person_id).map(str::to_string) else {
        return Ok(Vec::new());
    };
    let refs = snapshot.records(&id).to_vec();
    let person = Person::new(id, refs);
    authority(ctx, &person, true).await?;
    note(ctx, &person.id, "registry_read", None);
    Ok(access
        .registry
        .for_person(&person.id)
        .await
        .map_err(internal)?
        .into_iter()
        .map(|c| RegistryConsentView(c, gateway.clone()))
        .collect())
}

/// `auditTrail(personId)`: for roles with `may_read_audit` (the Caldicott guardian).
pub async fn audit_trail(
    ctx: &Context<'_>,
    person_id: &str,
) -> async_graphql::Result<Vec<AuditEntry>> {
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
        .await
        .map_err(internal)?
        .into_iter()
        .map(AuditEntry::from)
        .collect())
}

/// `breakGlassReview`: every break-glass use, for the Caldicott guardian's review.
pub async fn break_glass_review(ctx: &Context<'_>) -> async_graphql::Result<Vec<AuditEntry>> {
    let (access, caller) = parts(ctx)?;
    if !access
        .engine
        .role(&caller.role)
        .is_some_and(|r| r.may_read_audit)
    {
        return Err(forbidden("your role may not review break-glass use"));
    }
    let events = access.audit.break_glass().await.map_err(internal)?;
    // Reading who saw a person's record is itself a read of that person's record:
    // audited per person, as `auditTrail` is.
    let people: std::collections::BTreeSet<&str> = events
        .iter()
        .filter_map(|e| e.person_id.as_deref())
        .collect();
    for person in people {
        note(ctx, person, "audit_read", Some("break-glass review"));
    }
    Ok(events.into_iter().map(AuditEntry::from).collect())
}

/// `myRecordAccess`: the caller's own record (a token with a `person` claim): who saw
/// which kinds of records, when and for what purpose.
pub async fn my_record_access(ctx: &Context<'_>) -> async_graphql::Result<Vec<RecordAccess>> {
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
        .await
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
