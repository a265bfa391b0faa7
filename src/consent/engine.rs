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
    /// A consent source (or the registry) could not be read: decide as if it denied.
    pub consent_unknown: bool,
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

enum ConsentResult {
    Permit,
    Deny,
    NotApplicable,
}

impl PolicyEngine {
    /// Reads the national opt-out list (a missing file is an error: failing open would
    /// release opted-out people's data for research).
    pub fn new(
        config: Arc<PolicyConfig>,
        index: Option<Arc<IdentityIndex>>,
    ) -> Result<PolicyEngine, ConfigError> {
        let mut opt_out = BTreeSet::new();
        if let Some(o) = &config.national_opt_out {
            let text = std::fs::read_to_string(&o.file)
                .map_err(|e| ConfigError::io(&o.file, format!("national opt-out list: {e}")))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.split('#').next().unwrap_or("").trim();
                if line.is_empty() {
                    continue;
                }
                match escr_connector::nhs::classify(line, &[]) {
                    escr_connector::nhs::NhsNumber::Valid(d) => {
                        opt_out.insert(d);
                    }
                    _ => return Err(ConfigError::at(&o.file, n + 1, "not a valid NHS number")),
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

    fn is_self(&self, ctx: &AccessContext, person_id: &str) -> bool {
        let Some(me) = ctx.person_id.as_deref() else {
            return false;
        };
        match &self.index {
            Some(index) => index.snapshot().resolve(me) == Some(person_id),
            None => me == person_id,
        }
    }

    fn opted_out(&self, ctx: &AccessContext, person_id: &str) -> bool {
        self.opt_out_applies(ctx) && self.opted_out_people().contains(person_id)
    }

    fn opt_out_applies(&self, ctx: &AccessContext) -> bool {
        self.config
            .national_opt_out
            .as_ref()
            .is_some_and(|o| o.purposes.iter().any(|p| p == purpose_name(ctx.purpose)))
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
                .filter_map(|nhs| snapshot.by_nhs_number(nhs).map(str::to_string))
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

    fn consent(
        &self,
        ctx: &AccessContext,
        facts: &PersonFacts,
        class: &str,
        labels: &BTreeSet<String>,
    ) -> ConsentResult {
        let today = Utc::now().date_naive();
        // The registry is the person's latest word: the most recent applicable consent
        // recorded there decides over the source systems.
        let mut registry: Vec<&RegistryConsent> = facts.registry_consents.iter().collect();
        registry.sort_by(|a, b| b.recorded_at.cmp(&a.recorded_at).then(b.id.cmp(&a.id)));
        for c in registry {
            if let Some((_, d)) = self.deepest(&c.provision, 0, ctx, class, labels, today) {
                return match d {
                    ConsentDecision::Permit => ConsentResult::Permit,
                    ConsentDecision::Deny => ConsentResult::Deny,
                };
            }
        }
        let mut result = ConsentResult::NotApplicable;
        for r in &facts.source_consents {
            let active = r.date("given").is_none_or(|g| g <= today)
                && r.date("withdrawn").is_none_or(|w| w > today);
            if !active {
                continue;
            }
            let Some(p) = r
                .text("scope")
                .and_then(|s| self.config.source_consents.get(s))
            else {
                continue;
            };
            match self.deepest(p.get_ref(), 0, ctx, class, labels, today) {
                Some((_, ConsentDecision::Deny)) => return ConsentResult::Deny,
                Some((_, ConsentDecision::Permit)) => result = ConsentResult::Permit,
                None => {}
            }
        }
        result
    }

    fn has_relationship(&self, ctx: &AccessContext, facts: &PersonFacts) -> bool {
        let today = Utc::now().date_naive();
        facts.allocations.iter().any(|a| {
            let current = a.date("start").is_none_or(|s| s <= today)
                && a.date("end").is_none_or(|e| e >= today);
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
        !self.opted_out(ctx, person_id)
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
        if self.opted_out(ctx, &facts.person_id) {
            return withheld(codes::OPTED_OUT, "the person has opted out of this use");
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
                    codes::CONSENT_DENIED,
                    "the person's consents cannot be read just now",
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
