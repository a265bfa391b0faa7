//! The consent and access decision engine (design section 5): per request, from the
//! caller, the record and the person's facts (allocations and consents from the sources
//! and the gateway's registry), configured by [`super::policy::PolicyConfig`].
//!
//! Decisions are made per request from unfiltered (cached) source records; nothing
//! decided here is kept beyond the request.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use chrono::{NaiveDate, Utc};
use escr_connector::{ConfigError, Record};
use toml::Spanned;

use super::access::{Decision, Policy};
use super::context::{codes, data_class, purpose_name, AccessContext, Purpose, Withheld};
use super::policy::*;
use crate::identity::index::IdentityIndex;

/// A consent from the gateway's own registry (active ones only reach the engine).
#[derive(Clone, Debug)]
pub struct RegistryConsent {
    pub id: i64,
    pub provision: Provision,
    pub recorded_at: chrono::NaiveDateTime,
}

/// What the engine needs to know about one person, loaded per request.
#[derive(Clone, Debug, Default)]
pub struct PersonFacts {
    pub person_id: String,
    /// Allocation records (worker_id, team_id, start, end) from the sources.
    pub allocations: Vec<Record>,
    /// Consent records from the sources.
    pub source_consents: Vec<Record>,
    /// Active consents from the registry.
    pub registry_consents: Vec<RegistryConsent>,
    /// Valid NHS numbers on the person's records as read now (the national data
    /// opt-out is matched through these and through the identity index).
    pub nhs_numbers: Vec<String>,
    /// A consent source (or the registry) could not be read: nothing that consent
    /// decides is released (CONSENT_UNKNOWN), but nobody is told it was refused.
    pub consent_unknown: bool,
    /// The sources whose consents could not be read (named to the caller as
    /// SOURCE_UNAVAILABLE next to CONSENT_UNKNOWN).
    pub consent_failures: Vec<crate::record::source::SourceError>,
}

pub struct PolicyEngine {
    pub config: Arc<PolicyConfig>,
    index: Option<Arc<IdentityIndex>>,
    opt_out: BTreeSet<String>,
    /// The opted-out people of the last index snapshot (kept with it: a new snapshot
    /// means new ids).
    opted_out_people: std::sync::Mutex<OptedOutCache>,
}

type OptedOutCache = Option<(Arc<crate::identity::index::Snapshot>, Arc<HashSet<String>>)>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConsentResult {
    Permit,
    Deny,
    NotApplicable,
}

/// The canonical scope of a source's national data opt-out record.
const NATIONAL_OPT_OUT: &str = "NATIONAL_OPT_OUT";

/// Whether the national data opt-out leaves a person out of a use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptOut {
    /// The opt-out does not apply to this purpose, or the person has none.
    Clear,
    /// The file lists one of the person's NHS numbers, or a source records the opt-out.
    OptedOut,
    /// The person has no valid NHS number on any record: the file cannot be checked,
    /// and the policy leaves such people out of this purpose.
    Unchecked,
}

impl PolicyEngine {
    /// Reads the national opt-out list (a missing file is an error: failing open would
    /// release opted-out people's data for research).
    pub fn new(
        config: Arc<PolicyConfig>,
        index: Option<Arc<IdentityIndex>>,
    ) -> Result<PolicyEngine, ConfigError> {
        let mut opt_out = BTreeSet::new();
        if let Some(file) = config
            .national_opt_out
            .as_ref()
            .and_then(|o| o.file.as_ref())
        {
            let text = std::fs::read_to_string(file)
                .map_err(|e| ConfigError::io(file, format!("national opt-out list: {e}")))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.split('#').next().unwrap_or("").trim();
                if line.is_empty() {
                    continue;
                }
                match escr_connector::nhs::classify(line, &[]) {
                    escr_connector::nhs::NhsNumber::Valid(d) => {
                        opt_out.insert(d);
                    }
                    _ => return Err(ConfigError::at(file, n + 1, "not a valid NHS number")),
                }
            }
        }
        Ok(PolicyEngine {
            config,
            index,
            opt_out,
            opted_out_people: std::sync::Mutex::new(None),
        })
    }

    pub fn role(&self, name: &str) -> Option<&RoleConfig> {
        self.config.roles.get(name).map(Spanned::get_ref)
    }

    fn purpose(&self, p: Purpose) -> &PurposeConfig {
        self.config.purposes[purpose_name(p)].get_ref()
    }

    fn organisation_kind(&self, org: Option<&str>) -> Option<&str> {
        org.and_then(|o| self.config.organisations.get(o))
            .map(|o| o.get_ref().kind.as_str())
    }

    fn is_external(&self, ctx: &AccessContext) -> bool {
        ctx.organisation.as_deref() != Some(self.config.home_organisation.as_str())
    }

    /// Break-glass is in force for this request (validated at authentication).
    fn break_glass(&self, ctx: &AccessContext) -> bool {
        ctx.break_glass_reason.is_some()
            && self.role(&ctx.role).is_some_and(|r| r.may_break_glass)
            && self
                .config
                .break_glass
                .purposes
                .iter()
                .any(|p| p == purpose_name(ctx.purpose))
    }

    /// The caller is this person (a token with a `person` claim).
    pub fn is_self(&self, ctx: &AccessContext, person_id: &str) -> bool {
        let Some(me) = ctx.person_id.as_deref() else {
            return false;
        };
        match &self.index {
            Some(index) => index.snapshot().resolve(me) == Some(person_id),
            None => me == person_id,
        }
    }

    /// Listed in the opt-out file, as far as the identity index knows (no facts read).
    fn listed(&self, ctx: &AccessContext, person_id: &str) -> bool {
        self.opt_out_applies(ctx) && self.opted_out_people().contains(person_id)
    }

    /// Planning and research (or the purposes `[national_opt_out]` names).
    fn opt_out_applies(&self, ctx: &AccessContext) -> bool {
        let purpose = purpose_name(ctx.purpose);
        match &self.config.national_opt_out {
            Some(o) => o.purposes.iter().any(|p| p == purpose),
            None => matches!(ctx.purpose, Purpose::Planning | Purpose::Research),
        }
    }

    /// Does the national data opt-out leave this person out of the caller's use? Any
    /// of the person's records (the index's and those read now) may carry the listed
    /// NHS number; any source may record the opt-out (scope NATIONAL_OPT_OUT: its
    /// latest active record decides, DENY meaning opted out).
    pub fn opt_out(&self, ctx: &AccessContext, facts: &PersonFacts) -> OptOut {
        if !self.opt_out_applies(ctx) {
            return OptOut::Clear;
        }
        let today = Utc::now().date_naive();
        let snapshot = self.index.as_ref().map(|i| i.snapshot());
        let indexed = snapshot
            .as_ref()
            .map(|s| s.nhs_numbers_of(&facts.person_id))
            .unwrap_or(&[]);
        let numbers = || facts.nhs_numbers.iter().chain(indexed);
        let by_source = deciding_source_consents(&facts.source_consents, today)
            .into_iter()
            .any(|(scope, d)| scope == NATIONAL_OPT_OUT && d == ConsentDecision::Deny);
        if by_source
            || self.opted_out_people().contains(&facts.person_id)
            || numbers().any(|n| self.opt_out.contains(n))
        {
            return OptOut::OptedOut;
        }
        if numbers().next().is_none() && self.unchecked_left_out(ctx) {
            return OptOut::Unchecked;
        }
        OptOut::Clear
    }

    /// Are people whose opt-out cannot be checked (no NHS number) left out of this use?
    fn unchecked_left_out(&self, ctx: &AccessContext) -> bool {
        let purpose = purpose_name(ctx.purpose);
        match &self.config.national_opt_out {
            Some(o) => o
                .without_nhs_number_left_out_for
                .iter()
                .any(|p| p == purpose),
            None => ctx.purpose == Purpose::Research,
        }
    }

    /// What the caller is told about the opt-out for a set of people (reports): how
    /// many listed NHS numbers match nobody the index knows, and how many of these
    /// people have no valid NHS number (their opt-out cannot be checked).
    pub fn opt_out_counts<'a>(
        &self,
        ctx: &AccessContext,
        people: impl Iterator<Item = &'a str>,
    ) -> Option<super::access::OptOutCounts> {
        if !self.opt_out_applies(ctx) {
            return None;
        }
        let snapshot = self.index.as_ref()?.snapshot();
        let listed_unmatched = self
            .opt_out
            .iter()
            .filter(|n| snapshot.people_with_nhs_number(n).is_empty())
            .count() as u64;
        let without_nhs_number = people
            .filter(|p| snapshot.nhs_numbers_of(p).is_empty())
            .count() as u64;
        Some(super::access::OptOutCounts {
            listed_unmatched,
            without_nhs_number,
            without_nhs_number_left_out: self.unchecked_left_out(ctx),
        })
    }

    /// Gateway ids of the people on the opt-out list, once per index snapshot.
    fn opted_out_people(&self) -> Arc<HashSet<String>> {
        let Some(index) = &self.index else {
            return Arc::default();
        };
        let snapshot = index.snapshot();
        let mut cached = self
            .opted_out_people
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((at, people)) = cached.as_ref() {
            if Arc::ptr_eq(at, &snapshot) {
                return people.clone();
            }
        }
        let people: Arc<HashSet<String>> = Arc::new(
            self.opt_out
                .iter()
                .flat_map(|nhs| snapshot.people_with_nhs_number(nhs).iter().cloned())
                .collect(),
        );
        *cached = Some((snapshot, people.clone()));
        people
    }

    fn provision_matches(
        &self,
        p: &Provision,
        ctx: &AccessContext,
        class: &str,
        labels: &BTreeSet<String>,
        today: NaiveDate,
    ) -> bool {
        let any = |list: &[String], v: Option<&str>| {
            list.is_empty() || v.is_some_and(|v| list.iter().any(|x| x == v))
        };
        let org_kind_ok = p.organisation_kinds.is_empty()
            || p.organisation_kinds.iter().any(|k| {
                (k == "external" && self.is_external(ctx))
                    || Some(k.as_str()) == self.organisation_kind(ctx.organisation.as_deref())
            });
        any(&p.actors, Some(&ctx.user))
            && any(&p.roles, Some(&ctx.role))
            && any(&p.organisations, ctx.organisation.as_deref())
            && org_kind_ok
            && any(&p.purposes, Some(purpose_name(ctx.purpose)))
            && any(&p.classes, Some(class))
            && (p.labels.is_empty() || p.labels.iter().any(|l| labels.contains(l)))
            && p.start.is_none_or(|s| s <= today)
            && p.end.is_none_or(|e| today <= e)
    }

    /// The deepest matching provision's decision, with its depth.
    fn deepest(
        &self,
        p: &Provision,
        depth: usize,
        ctx: &AccessContext,
        class: &str,
        labels: &BTreeSet<String>,
        today: NaiveDate,
    ) -> Option<(usize, ConsentDecision)> {
        if !self.provision_matches(p, ctx, class, labels, today) {
            return None;
        }
        let mut best = (depth, p.decision);
        for child in &p.provisions {
            if let Some(found) = self.deepest(child, depth + 1, ctx, class, labels, today) {
                if found.0 > best.0 {
                    best = found;
                }
            }
        }
        Some(best)
    }

    /// The consent stage for one data class and label set. The registry is the
    /// person's latest word: its most recent applicable consent decides over the
    /// sources (two recorded at the same instant that disagree: deny). Then the
    /// sources, per consent scope, by their latest active record: a DENY denies
    /// whatever the scope's provision covers (a refusal never grants more than no
    /// consent); any deny decides, else any permit.
    fn consent(
        &self,
        ctx: &AccessContext,
        facts: &PersonFacts,
        class: &str,
        labels: &BTreeSet<String>,
    ) -> ConsentResult {
        let today = Utc::now().date_naive();
        let mut registry: Vec<&RegistryConsent> = facts.registry_consents.iter().collect();
        registry.sort_by(|a, b| b.recorded_at.cmp(&a.recorded_at).then(b.id.cmp(&a.id)));
        let mut decided: Option<(chrono::NaiveDateTime, ConsentResult)> = None;
        for c in registry {
            if let Some((at, _)) = decided {
                if c.recorded_at < at {
                    break;
                }
            }
            if let Some((_, d)) = self.deepest(&c.provision, 0, ctx, class, labels, today) {
                let d = match d {
                    ConsentDecision::Permit => ConsentResult::Permit,
                    ConsentDecision::Deny => ConsentResult::Deny,
                };
                decided = Some(match decided {
                    Some((at, prev)) if prev != d => (at, ConsentResult::Deny),
                    Some(prev) => prev,
                    None => (c.recorded_at, d),
                });
            }
        }
        if let Some((_, d)) = decided {
            return d;
        }
        let mut result = ConsentResult::NotApplicable;
        for (scope, decision) in deciding_source_consents(&facts.source_consents, today) {
            let Some(p) = self.config.source_consents.get(scope) else {
                continue;
            };
            match (
                decision,
                self.deepest(p.get_ref(), 0, ctx, class, labels, today),
            ) {
                (_, None) => {}
                (ConsentDecision::Deny, Some(_)) | (_, Some((_, ConsentDecision::Deny))) => {
                    return ConsentResult::Deny
                }
                (ConsentDecision::Permit, Some((_, ConsentDecision::Permit))) => {
                    result = ConsentResult::Permit
                }
            }
        }
        result
    }

    /// Is a refusal of the person's in force: an active registry consent or a deciding
    /// source consent that denies anything? (Lifting one needs the person's authority.)
    pub fn has_refusal(&self, facts: &PersonFacts) -> bool {
        let today = Utc::now().date_naive();
        let registry = facts
            .registry_consents
            .iter()
            .any(|c| c.provision.denies_anything());
        let sources = deciding_source_consents(&facts.source_consents, today)
            .into_iter()
            .any(|(scope, d)| {
                d == ConsentDecision::Deny
                    || self
                        .config
                        .source_consents
                        .get(scope)
                        .is_some_and(|p| p.get_ref().denies_anything())
            });
        registry || sources
    }

    /// Does the consent stage let this record class through for the caller (no
    /// break-glass considered)?
    fn consent_passes(
        &self,
        ctx: &AccessContext,
        facts: &PersonFacts,
        class: &str,
        labels: &BTreeSet<String>,
    ) -> bool {
        match self.consent(ctx, facts, class, labels) {
            ConsentResult::Permit => true,
            ConsentResult::Deny => false,
            ConsentResult::NotApplicable => !self.is_external(ctx),
        }
    }

    /// Every (purpose, data class, label) the caller's role could reach that the
    /// consents let through: what a registry write may not widen for its writer. Labels
    /// are tried one at a time and none at all.
    pub fn consent_reach(&self, ctx: &AccessContext, facts: &PersonFacts) -> BTreeSet<String> {
        let mut reach = BTreeSet::new();
        let Some(role) = self.role(&ctx.role) else {
            return reach;
        };
        let label_sets: Vec<BTreeSet<String>> = std::iter::once(BTreeSet::new())
            .chain(
                escr_connector::profile::KNOWN_LABELS
                    .iter()
                    .map(|l| BTreeSet::from([l.to_string()])),
            )
            .collect();
        for purpose_key in &role.purposes {
            let Some(purpose) = super::context::purpose_from_name(purpose_key) else {
                continue;
            };
            let config = self.purpose(purpose);
            if config.consent_exempt {
                continue;
            }
            let as_purpose = AccessContext {
                purpose,
                break_glass_reason: None,
                ..ctx.clone()
            };
            for class in &config.classes {
                for labels in &label_sets {
                    if self.consent_passes(&as_purpose, facts, class, labels) {
                        let label = labels.iter().next().map(String::as_str).unwrap_or("");
                        reach.insert(format!("{purpose_key}/{class}/{label}"));
                    }
                }
            }
        }
        reach
    }

    /// A current allocation of the caller (worker) or their team to the person.
    pub fn has_relationship(&self, ctx: &AccessContext, facts: &PersonFacts) -> bool {
        let today = Utc::now().date_naive();
        facts.allocations.iter().any(|a| {
            let current = allocation_is_current(a, today);
            let worker = ctx
                .worker_id
                .as_deref()
                .is_some_and(|w| a.text("worker_id") == Some(w));
            let team = ctx
                .team
                .as_deref()
                .is_some_and(|t| a.text("team_id") == Some(t));
            current && (worker || team)
        })
    }
}

/// An allocation in force on `today` (no start or started, no end or not yet ended).
pub fn allocation_is_current(allocation: &Record, today: NaiveDate) -> bool {
    allocation.date("start").is_none_or(|s| s <= today)
        && allocation.date("end").is_none_or(|e| e >= today)
}

/// Per consent scope, the decision of the person's latest active source consent
/// (given on or before today, not withdrawn by today; latest by the date given, a
/// record without one the oldest). Records given on the same date that disagree deny;
/// a record whose decision does not map counts as a refusal.
fn deciding_source_consents(records: &[Record], today: NaiveDate) -> Vec<(&str, ConsentDecision)> {
    let mut latest: std::collections::BTreeMap<&str, (Option<NaiveDate>, ConsentDecision)> =
        std::collections::BTreeMap::new();
    for r in records {
        let active = r.date("given").is_none_or(|g| g <= today)
            && r.date("withdrawn").is_none_or(|w| w > today);
        let Some(scope) = r.text("scope").filter(|_| active) else {
            continue;
        };
        let decision = match r.text("decision") {
            Some("PERMIT") => ConsentDecision::Permit,
            _ => ConsentDecision::Deny,
        };
        let given = r.date("given");
        latest
            .entry(scope)
            .and_modify(|(at, d)| {
                if given > *at {
                    (*at, *d) = (given, decision);
                } else if given == *at && decision == ConsentDecision::Deny {
                    *d = ConsentDecision::Deny;
                }
            })
            .or_insert((given, decision));
    }
    latest.into_iter().map(|(s, (_, d))| (s, d)).collect()
}

fn withheld(code: &'static str, reason: impl Into<String>) -> Decision {
    Decision::Withhold(Withheld {
        code,
        reason: reason.into(),
    })
}

impl Policy for PolicyEngine {
    fn needs_facts(&self) -> bool {
        true
    }

    /// What `decide` and `left_out` below read of the facts for this caller: the
    /// allocations where a relationship is required and no break-glass is in force;
    /// the consents unless the purpose is exempt from them (the sources' consents also
    /// where the opt-out applies: they may record it); NHS numbers for the opt-out.
    fn facts_needed(&self, ctx: &AccessContext) -> super::access::FactsNeeded {
        let purpose = self.purpose(ctx.purpose);
        let opt_out = self.opt_out_applies(ctx);
        let consent = !purpose.consent_exempt;
        super::access::FactsNeeded {
            left_out: opt_out,
            allocations: purpose.requires_relationship && !self.break_glass(ctx),
            source_consents: consent || opt_out,
            registry_consents: consent,
            nhs_numbers: opt_out,
        }
    }

    fn implied_labels(&self, record: &Record) -> Vec<String> {
        self.config
            .record_labels
            .iter()
            .filter(|r| r.get_ref().applies(record))
            .flat_map(|r| r.get_ref().labels.iter().cloned())
            .collect()
    }

    fn may_identify(&self, ctx: &AccessContext) -> Result<(), Withheld> {
        let purpose = self.purpose(ctx.purpose);
        if purpose.classes.iter().any(|c| c == "demographics") {
            Ok(())
        } else {
            Err(Withheld {
                code: codes::PURPOSE_NOT_PERMITTED,
                reason: format!(
                    "purpose `{}` does not use demographics: no search or lookup by identifiers",
                    purpose_name(ctx.purpose)
                ),
            })
        }
    }

    fn excluded_people(&self, ctx: &AccessContext) -> Arc<HashSet<String>> {
        if self.opt_out_applies(ctx) {
            self.opted_out_people()
        } else {
            Arc::default()
        }
    }

    fn may_see_person(&self, ctx: &AccessContext, person_id: &str) -> bool {
        let Some(role) = self.role(&ctx.role) else {
            return false;
        };
        if role.own_record_only && !self.is_self(ctx, person_id) {
            return false;
        }
        !self.listed(ctx, person_id)
    }

    fn left_out(&self, ctx: &AccessContext, facts: &PersonFacts) -> bool {
        self.opt_out(ctx, facts) != OptOut::Clear
    }

    fn opt_out_counts(
        &self,
        ctx: &AccessContext,
        people: &[String],
    ) -> Option<super::access::OptOutCounts> {
        PolicyEngine::opt_out_counts(self, ctx, people.iter().map(String::as_str))
    }

    fn decide(
        &self,
        ctx: &AccessContext,
        facts: &PersonFacts,
        _source: &str,
        record: &Record,
    ) -> Decision {
        let Some(role) = self.role(&ctx.role) else {
            return withheld(codes::PURPOSE_NOT_PERMITTED, "unknown role");
        };
        if role.own_record_only && !self.is_self(ctx, &facts.person_id) {
            return withheld(codes::NO_RELATIONSHIP, "only your own record");
        }
        let purpose_key = purpose_name(ctx.purpose);
        if !role.purposes.iter().any(|p| p == purpose_key) {
            return withheld(
                codes::PURPOSE_NOT_PERMITTED,
                format!("role `{}` may not use purpose `{purpose_key}`", ctx.role),
            );
        }
        if self.opt_out(ctx, facts) != OptOut::Clear {
            // One reason for both: which of the two it is would say whether the
            // person has an NHS number.
            return withheld(
                codes::OPTED_OUT,
                "left out of this use: a national data opt-out, or no NHS number to check one against",
            );
        }
        let purpose = self.purpose(ctx.purpose);
        let class = data_class(record.entity);
        if !purpose.classes.iter().any(|c| c == class) {
            return withheld(
                codes::PURPOSE_NOT_PERMITTED,
                format!("purpose `{purpose_key}` does not use {class} data"),
            );
        }
        let labels = &record.labels;
        if labels.contains("sealed") {
            // Only named roles, always with a recorded justification.
            if !(role.may_open_sealed && ctx.break_glass_reason.is_some()) {
                return Decision::Hidden(Withheld {
                    code: codes::SEALED,
                    reason: "sealed envelope".into(),
                });
            }
        }
        if let Some(label) = labels
            .iter()
            .find(|l| *l != "sealed" && !role.labels.contains(l))
        {
            return withheld(
                codes::LABEL_RESTRICTED,
                format!("role `{}` may not see `{label}` information", ctx.role),
            );
        }
        let break_glass = self.break_glass(ctx);
        if purpose.requires_relationship
            && !purpose
                .relationship_exempt_classes
                .iter()
                .any(|c| c == class)
            && !self.has_relationship(ctx, facts)
            && !break_glass
        {
            return withheld(
                codes::NO_RELATIONSHIP,
                "no allocation of you or your team to this person (break-glass needs a reason)",
            );
        }
        if !purpose.consent_exempt {
            if facts.consent_unknown && !break_glass {
                return withheld(
                    codes::CONSENT_UNKNOWN,
                    "the person's consents cannot be read just now (a source is unavailable): withheld until they can, not refused by the person",
                );
            }
            match self.consent(ctx, facts, class, labels) {
                ConsentResult::Deny if !break_glass => {
                    return withheld(
                        codes::CONSENT_DENIED,
                        "the person's consent does not permit this",
                    )
                }
                ConsentResult::NotApplicable if self.is_external(ctx) && !break_glass => {
                    return withheld(
                        codes::CONSENT_DENIED,
                        "no consent to share with your organisation",
                    )
                }
                _ => {}
            }
        }
        Decision::Release
    }
}

#[cfg(test)]
mod tests {
    //! Properties of the decision, over generated callers, records and consents (the
    //! shipped policy): nothing a deny covers is released, and adding a deny never
    //! releases more.

    use std::collections::BTreeMap;

    use chrono::NaiveDateTime;
    use escr_connector::mapping::FieldValue;
    use escr_connector::EntityKind;
    use proptest::prelude::*;

    use super::*;

    fn engine() -> PolicyEngine {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policy.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut config = PolicyConfig::parse(&path, &text).unwrap();
        if let Some(o) = &mut config.national_opt_out {
            o.file = None;
        }
        PolicyEngine::new(Arc::new(config), None).unwrap()
    }

    fn date(days: i64) -> NaiveDate {
        NaiveDate::from_ymd_opt(2020, 1, 1).unwrap() + chrono::Duration::days(days)
    }

    fn record(entity: EntityKind, fields: Vec<(&'static str, FieldValue)>) -> Record {
        Record {
            entity,
            local_id: "1".into(),
            person_id: Some("1".into()),
            last_updated: None,
            fields: fields.into_iter().collect::<BTreeMap<_, _>>(),
            labels: Default::default(),
        }
    }

    fn caller() -> impl Strategy<Value = AccessContext> {
        let roles: Vec<String> = engine().config.roles.keys().cloned().collect();
        (
            proptest::sample::select(roles),
            0usize..5,
            proptest::option::of(proptest::sample::select(vec![
                "council",
                "nhs_trust",
                "university",
            ])),
            proptest::option::of(proptest::sample::select(vec!["1", "2"])),
            proptest::option::of(proptest::sample::select(vec!["1", "2"])),
            any::<bool>(),
        )
            .prop_map(|(role, p, org, worker, team, glass)| {
                let e = engine();
                let purposes = &e.role(&role).unwrap().purposes;
                let purpose =
                    super::super::context::purpose_from_name(&purposes[p % purposes.len()])
                        .unwrap();
                let mut ctx = AccessContext::for_role("u1", &role, purpose);
                ctx.organisation = org.map(str::to_string);
                ctx.worker_id = worker.map(str::to_string);
                ctx.team = team.map(str::to_string);
                ctx.break_glass_reason = glass.then(|| "an emergency, justified".to_string());
                ctx
            })
    }

    fn target() -> impl Strategy<Value = Record> {
        (
            proptest::sample::select(vec![
                EntityKind::Person,
                EntityKind::Service,
                EntityKind::CaseNote,
                EntityKind::Alert,
                EntityKind::Consent,
                EntityKind::Episode,
            ]),
            proptest::sample::subsequence(escr_connector::profile::KNOWN_LABELS.to_vec(), 0..2),
        )
            .prop_map(|(entity, labels)| {
                let mut r = record(entity, vec![]);
                r.labels = labels.into_iter().map(str::to_string).collect();
                r
            })
    }

    fn source_consent() -> impl Strategy<Value = Record> {
        (
            proptest::sample::select(vec![
                "SHARE_ALL",
                "SHARE_HEALTH",
                "NO_SHARING",
                "NATIONAL_OPT_OUT",
            ]),
            proptest::option::of(proptest::sample::select(vec!["PERMIT", "DENY"])),
            proptest::option::of(0i64..2000),
            proptest::option::of(0i64..4000),
        )
            .prop_map(|(scope, decision, given, withdrawn)| {
                let mut f = vec![("scope", FieldValue::Text(scope.into()))];
                if let Some(d) = decision {
                    f.push(("decision", FieldValue::Text(d.into())));
                }
                if let Some(g) = given {
                    f.push(("given", FieldValue::Date(date(g))));
                }
                if let Some(w) = withdrawn {
                    f.push(("withdrawn", FieldValue::Date(date(w))));
                }
                record(EntityKind::Consent, f)
            })
    }

    /// A provision tree; `deny_only` trees hold no permit anywhere.
    fn provision(deny_only: bool) -> impl Strategy<Value = Provision> {
        let leaf = (
            any::<bool>(),
            proptest::sample::subsequence(DATA_CLASS_NAMES.to_vec(), 0..2),
            proptest::sample::subsequence(
                vec!["direct_care", "planning", "research", "care_management"],
                0..2,
            ),
            proptest::sample::subsequence(vec!["external", "health", "local_authority"], 0..2),
            proptest::sample::subsequence(vec!["u1", "u2"], 0..2),
        )
            .prop_map(
                move |(permit, classes, purposes, kinds, actors)| Provision {
                    decision: if permit && !deny_only {
                        ConsentDecision::Permit
                    } else {
                        ConsentDecision::Deny
                    },
                    classes: classes.into_iter().map(str::to_string).collect(),
                    purposes: purposes.into_iter().map(str::to_string).collect(),
                    organisation_kinds: kinds.into_iter().map(str::to_string).collect(),
                    actors: actors.into_iter().map(str::to_string).collect(),
                    ..Provision::default()
                },
            );
        leaf.prop_recursive(2, 4, 2, |inner| {
            (inner.clone(), proptest::collection::vec(inner, 0..2)).prop_map(|(mut p, kids)| {
                p.provisions = kids;
                p
            })
        })
    }

    const DATA_CLASS_NAMES: [&str; 5] = super::super::context::DATA_CLASSES;

    fn facts() -> impl Strategy<Value = PersonFacts> {
        (
            proptest::collection::vec(
                (
                    proptest::option::of(proptest::sample::select(vec!["1", "2"])),
                    proptest::option::of(proptest::sample::select(vec!["1", "2"])),
                ),
                0..2,
            ),
            proptest::collection::vec(source_consent(), 0..4),
            proptest::collection::vec((provision(false), 0i64..1000), 0..3),
            any::<bool>(),
        )
            .prop_map(
                |(allocations, source_consents, registry, nhs)| PersonFacts {
                    person_id: "P1".into(),
                    allocations: allocations
                        .into_iter()
                        .map(|(w, t)| {
                            let mut f = vec![];
                            if let Some(w) = w {
                                f.push(("worker_id", FieldValue::Text(w.into())));
                            }
                            if let Some(t) = t {
                                f.push(("team_id", FieldValue::Text(t.into())));
                            }
                            record(EntityKind::Allocation, f)
                        })
                        .collect(),
                    source_consents,
                    registry_consents: registry
                        .into_iter()
                        .enumerate()
                        .map(|(i, (provision, at))| RegistryConsent {
                            id: i as i64,
                            provision,
                            recorded_at: at_minutes(at),
                        })
                        .collect(),
                    nhs_numbers: if nhs {
                        vec!["9434765919".into()]
                    } else {
                        vec![]
                    },
                    ..PersonFacts::default()
                },
            )
    }

    fn at_minutes(m: i64) -> NaiveDateTime {
        date(0).and_hms_opt(0, 0, 0).unwrap() + chrono::Duration::minutes(m)
    }

    fn released(e: &PolicyEngine, ctx: &AccessContext, facts: &PersonFacts, r: &Record) -> bool {
        let mut r = r.clone();
        r.labels.extend(e.implied_labels(&r));
        matches!(e.decide(ctx, facts, "s", &r), Decision::Release)
    }

    /// The consent stage is in play: not a consent-exempt purpose, no break-glass.
    fn consent_binds(e: &PolicyEngine, ctx: &AccessContext) -> bool {
        !e.purpose(ctx.purpose).consent_exempt && !e.break_glass(ctx)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// A refusal of everything (the person's latest registry word, or a source
        /// record refusing a scope that covers the caller) releases nothing.
        #[test]
        fn nothing_denied_is_released(ctx in caller(), mut facts in facts(), r in target(), scope_refusal in any::<bool>()) {
            let e = engine();
            if scope_refusal {
                // SHARE_ALL covers every external caller; refused, later than any other record.
                facts.source_consents.push(record(EntityKind::Consent, vec![
                    ("scope", FieldValue::Text("SHARE_ALL".into())),
                    ("decision", FieldValue::Text("DENY".into())),
                    ("given", FieldValue::Date(date(2001))),
                ]));
                facts.registry_consents.clear();
                if e.is_external(&ctx) && consent_binds(&e, &ctx) {
                    prop_assert!(!released(&e, &ctx, &facts, &r));
                }
            } else {
                facts.registry_consents.push(RegistryConsent {
                    id: 99,
                    provision: Provision { decision: ConsentDecision::Deny, ..Provision::default() },
                    recorded_at: at_minutes(5000),
                });
                if consent_binds(&e, &ctx) {
                    prop_assert!(!released(&e, &ctx, &facts, &r));
                }
            }
        }

        /// Adding a deny (a registry consent of denials only, newest; or a source
        /// record refusing a scope, newest or tied) never releases what was withheld.
        #[test]
        fn adding_a_deny_never_releases_more(
            ctx in caller(),
            facts in facts(),
            r in target(),
            deny in provision(true),
            source in source_consent(),
            at in 0i64..6000,
            into_registry in any::<bool>(),
        ) {
            let e = engine();
            let before = released(&e, &ctx, &facts, &r);
            let mut after = facts.clone();
            if into_registry {
                after.registry_consents.push(RegistryConsent { id: 99, provision: deny, recorded_at: at_minutes(at) });
            } else {
                let mut refusal = source;
                refusal.fields.insert("decision", FieldValue::Text("DENY".into()));
                refusal.fields.remove("withdrawn");
                let latest = facts.source_consents.iter().filter_map(|c| c.date("given")).max().unwrap_or(date(0));
                refusal.fields.insert("given", FieldValue::Date(latest.min(Utc::now().date_naive())));
                after.source_consents.push(refusal);
            }
            if released(&e, &ctx, &after, &r) {
                prop_assert!(before, "a deny released more");
            }
        }

        /// Reading only the facts `facts_needed` names decides exactly as reading them
        /// all (the decision and its code and reason, and the opt-out), so the
        /// statements left out change nothing; a consent source that could not be read
        /// counts only where the consents are needed.
        #[test]
        fn only_the_needed_facts_decide(
            ctx in caller(),
            mut facts in facts(),
            r in target(),
            unknown in any::<bool>(),
            purpose in 0usize..5,
        ) {
            let e = engine();
            let mut ctx = ctx;
            // Any purpose too, not only the role's: those are withheld, but alike.
            if purpose == 4 {
                ctx.purpose = Purpose::Research;
            }
            facts.consent_unknown = unknown;
            let needed = e.facts_needed(&ctx);
            let partial = PersonFacts {
                person_id: facts.person_id.clone(),
                allocations: if needed.allocations { facts.allocations.clone() } else { vec![] },
                source_consents: if needed.source_consents { facts.source_consents.clone() } else { vec![] },
                registry_consents: if needed.registry_consents { facts.registry_consents.clone() } else { vec![] },
                nhs_numbers: if needed.nhs_numbers { facts.nhs_numbers.clone() } else { vec![] },
                consent_unknown: unknown && (needed.source_consents || needed.registry_consents),
                consent_failures: vec![],
            };
            let mut r = r;
            r.labels.extend(e.implied_labels(&r));
            let said = |d: Decision| match d {
                Decision::Release => "release".to_string(),
                Decision::Withhold(w) => format!("withhold {} {}", w.code, w.reason),
                Decision::Hidden(w) => format!("hidden {} {}", w.code, w.reason),
            };
            prop_assert_eq!(said(e.decide(&ctx, &facts, "s", &r)), said(e.decide(&ctx, &partial, "s", &r)));
            prop_assert_eq!(e.left_out(&ctx, &facts), e.left_out(&ctx, &partial));
            if !needed.left_out {
                prop_assert!(!e.left_out(&ctx, &facts));
            }
        }
    }
}
