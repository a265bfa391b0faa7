//! Who is asking, and the one place where released records are decided.
//!
//! Every record that leaves the gateway passes [`release`], after the shared cache and
//! per request. The full consent and access model is a policy implementing [`Policy`];
//! the default allows everything so the path can be exercised end to end.

use escr_connector::Record;

/// Purposes of use (design section 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, async_graphql::Enum)]
pub enum Purpose {
    DirectCare,
    CareManagement,
    Safeguarding,
    Planning,
    Research,
}

/// The caller of one request.
#[derive(Clone, Debug)]
pub struct AccessContext {
    pub user: String,
    pub role: String,
    pub organisation: Option<String>,
    pub team: Option<String>,
    pub purpose: Purpose,
    pub break_glass_reason: Option<String>,
}

impl AccessContext {
    /// The caller of the embedded demo before authentication exists.
    pub fn demo() -> AccessContext {
        AccessContext {
            user: "demo".into(),
            role: "practitioner".into(),
            organisation: None,
            team: None,
            purpose: Purpose::DirectCare,
            break_glass_reason: None,
        }
    }
}

/// Why a record was withheld; shown to the caller as a GraphQL error code and reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Withheld {
    pub code: &'static str,
    pub reason: String,
}

pub enum Decision {
    Release,
    Withhold(Withheld),
}

pub trait Policy: Send + Sync + 'static {
    /// May this caller learn that the person exists at all (lookups, search)?
    fn may_see_person(&self, ctx: &AccessContext, person_id: &str) -> bool;
    /// May this caller see this record of this person, from this source?
    fn decide(
        &self,
        ctx: &AccessContext,
        person_id: &str,
        source: &str,
        record: &Record,
    ) -> Decision;
}

/// v1 policy: everything is released (the consent model replaces it).
pub struct AllowAll;

impl Policy for AllowAll {
    fn may_see_person(&self, _: &AccessContext, _: &str) -> bool {
        true
    }
    fn decide(&self, _: &AccessContext, _: &str, _: &str, _: &Record) -> Decision {
        Decision::Release
    }
}

/// What passes the policy, and what was withheld (the caller is told only where the
/// policy says so).
#[derive(Default)]
pub struct Released {
    pub records: Vec<(String, Record)>,
    pub withheld: Vec<Withheld>,
}

/// The consent hook: the only way records reach a resolver's result.
pub fn release(
    policy: &dyn Policy,
    ctx: &AccessContext,
    person_id: &str,
    records: impl IntoIterator<Item = (String, Record)>,
) -> Released {
    let mut out = Released::default();
    for (source, record) in records {
        match policy.decide(ctx, person_id, &source, &record) {
            Decision::Release => out.records.push((source, record)),
            Decision::Withhold(why) => out.withheld.push(why),
        }
    }
    out
}
