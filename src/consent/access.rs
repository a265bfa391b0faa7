//! Who is asking, and the one place where released records are decided.
//!
//! Every record that leaves the gateway passes [`release`], after the shared cache and
//! per request. The consent and access model is [`crate::consent::engine::PolicyEngine`]; the
//! default [`AllowAll`] lets tests exercise the path without a policy.

use escr_connector::Record;

pub use super::context::{AccessContext, Purpose, Withheld};
pub use super::engine::PersonFacts;

pub enum Decision {
    Release,
    /// Left out and the caller told why (error with code and reason).
    Withhold(Withheld),
    /// Left out silently: its existence is itself sensitive (sealed). Audited.
    Hidden(Withheld),
}

pub trait Policy: Send + Sync + 'static {
    /// Whether [`release`] needs [`PersonFacts`] (allocations, consents) loaded.
    fn needs_facts(&self) -> bool {
        false
    }
    /// Which of the [`PersonFacts`] this caller's decisions ([`Policy::decide`],
    /// [`Policy::left_out`]) can depend on: the others are not read (each is a
    /// statement per source, and the registry a read per person). All by default.
    fn facts_needed(&self, _ctx: &AccessContext) -> FactsNeeded {
        FactsNeeded::ALL
    }
    /// May this caller find people by identifying details (search, NHS number)? A
    /// purpose that may not use demographics may not: a hit would reveal that someone
    /// with that name or number is known.
    fn may_identify(&self, _ctx: &AccessContext) -> Result<(), Withheld> {
        Ok(())
    }
    /// People left out of this caller's use altogether (the national data opt-out, for
    /// planning and research): reports skip them before reading anything.
    fn excluded_people(
        &self,
        _ctx: &AccessContext,
    ) -> std::sync::Arc<std::collections::HashSet<String>> {
        std::sync::Arc::default()
    }
    /// Is the person left out of this caller's use altogether, from what is known of
    /// them (the national data opt-out from the file or a source, or no NHS number to
    /// check it against where the policy says so)? Reports ask per person.
    fn left_out(&self, _ctx: &AccessContext, _facts: &PersonFacts) -> bool {
        false
    }
    /// What a report tells its caller about the opt-out among `people` (None where the
    /// opt-out does not apply to the caller's purpose).
    fn opt_out_counts(&self, _ctx: &AccessContext, _people: &[String]) -> Option<OptOutCounts> {
        None
    }
    /// May this caller learn that the person exists at all (lookups, search)?
    fn may_see_person(&self, ctx: &AccessContext, person_id: &str) -> bool;
    /// Labels a record carries because of what it is (policy config), added to the
    /// labels its source implies before [`Policy::decide`] and shown to the caller.
    fn implied_labels(&self, _record: &Record) -> Vec<String> {
        Vec::new()
    }
    /// May this caller see this record of this person, from this source?
    fn decide(
        &self,
        ctx: &AccessContext,
        facts: &PersonFacts,
        source: &str,
        record: &Record,
    ) -> Decision;
}

/// Which parts of [`PersonFacts`] to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FactsNeeded {
    /// [`Policy::left_out`] may leave the person out for this caller (else it never
    /// does, whatever the facts: lists and lookups need read none for it).
    pub left_out: bool,
    pub allocations: bool,
    pub source_consents: bool,
    pub registry_consents: bool,
    pub nhs_numbers: bool,
}

impl FactsNeeded {
    pub const ALL: FactsNeeded = FactsNeeded {
        left_out: true,
        allocations: true,
        source_consents: true,
        registry_consents: true,
        nhs_numbers: true,
    };

    /// Everything `self` reads, `other` reads too.
    pub fn covers(self, other: FactsNeeded) -> bool {
        (self.left_out || !other.left_out)
            && (self.allocations || !other.allocations)
            && (self.source_consents || !other.source_consents)
            && (self.registry_consents || !other.registry_consents)
            && (self.nhs_numbers || !other.nhs_numbers)
    }
}

/// The national data opt-out as a report states it (counts only, suppressed by the
/// report like its other small numbers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OptOutCounts {
    /// Listed NHS numbers that no person known to the index holds: their people, if
    /// any are here, could not be left out.
    pub listed_unmatched: u64,
    /// People of the report with no valid NHS number on any record: their opt-out
    /// cannot be checked.
    pub without_nhs_number: u64,
    /// Whether those people are left out of this report (the policy's choice).
    pub without_nhs_number_left_out: bool,
}

/// Everything is released (tests of other parts; no config).
pub struct AllowAll;

impl Policy for AllowAll {
    fn may_see_person(&self, _: &AccessContext, _: &str) -> bool {
        true
    }
    fn decide(&self, _: &AccessContext, _: &PersonFacts, _: &str, _: &Record) -> Decision {
        Decision::Release
    }
}

/// What passes the policy, and what was withheld (`R`: the record, owned or shared).
pub struct Released<R = Record> {
    pub records: Vec<(String, R)>,
    /// Withheld records the caller is told about.
    pub withheld: Vec<(String, R, Withheld)>,
    /// Withheld records the caller is not told about (audited only).
    pub hidden: Vec<(String, R, Withheld)>,
}

impl<R> Default for Released<R> {
    fn default() -> Self {
        Released {
            records: Vec::new(),
            withheld: Vec::new(),
            hidden: Vec::new(),
        }
    }
}

impl<R> Released<R> {
    fn sort(&mut self, source: String, record: R, decision: Decision) {
        match decision {
            Decision::Release => self.records.push((source, record)),
            Decision::Withhold(why) => self.withheld.push((source, record, why)),
            Decision::Hidden(why) => self.hidden.push((source, record, why)),
        }
    }
}

/// The consent hook: the only way records reach a resolver's result.
pub fn release(
    policy: &dyn Policy,
    ctx: &AccessContext,
    facts: &PersonFacts,
    records: impl IntoIterator<Item = (String, Record)>,
) -> Released {
    let mut out = Released::default();
    for (source, mut record) in records {
        record.labels.extend(policy.implied_labels(&record));
        let decision = policy.decide(ctx, facts, &source, &record);
        out.sort(source, record, decision);
    }
    out
}

/// [`release`] over shared records (the loaders' `Arc`s): the same decisions; a
/// record is copied only where the policy adds a label it does not carry yet.
pub fn release_shared(
    policy: &dyn Policy,
    ctx: &AccessContext,
    facts: &PersonFacts,
    records: impl IntoIterator<Item = (String, std::sync::Arc<Record>)>,
) -> Released<std::sync::Arc<Record>> {
    let mut out = Released::default();
    for (source, mut record) in records {
        let implied = policy.implied_labels(&record);
        if implied.iter().any(|l| !record.labels.contains(l)) {
            std::sync::Arc::make_mut(&mut record).labels.extend(implied);
        }
        let decision = policy.decide(ctx, facts, &source, &record);
        out.sort(source, record, decision);
    }
    out
}

/// Per-request state of the consent path: the audit of this request's decisions, the
/// facts loaded for each person (never shared with another request), and which
/// errors were already reported at which path (path, code and what they name).
#[derive(Default)]
pub struct RequestScope {
    pub audit: crate::consent::audit::RequestAudit,
    /// Per person: the facts read so far and which parts they hold.
    pub facts: std::sync::Mutex<
        std::collections::HashMap<String, (FactsNeeded, std::sync::Arc<PersonFacts>)>,
    >,
    pub reported: std::sync::Mutex<std::collections::HashSet<String>>,
}
