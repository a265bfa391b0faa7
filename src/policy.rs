//! The consent and access policy engine (design section 5), configured by
//! `config/policy.toml`: roles, purposes of use and the data classes each may use,
//! labels each role may see, sealed envelopes, break-glass, consents (source systems
//! and the gateway's registry, FHIR-Consent shaped) and the national data opt-out.
//!
//! Decisions are made per request from unfiltered (cached) source records; nothing
//! decided here is kept beyond the request.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{NaiveDate, Utc};
use escr_connector::profile::line_of;
use escr_connector::{ConfigError, EntityKind, Record};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::access::{AccessContext, Decision, Policy, Purpose, Withheld};
use crate::index::IdentityIndex;

/// GraphQL error codes of withheld data.
pub mod codes {
    pub const CONSENT_DENIED: &str = "CONSENT_DENIED";
    pub const NO_RELATIONSHIP: &str = "NO_RELATIONSHIP";
    pub const SEALED: &str = "SEALED";
    pub const PURPOSE_NOT_PERMITTED: &str = "PURPOSE_NOT_PERMITTED";
    pub const LABEL_RESTRICTED: &str = "LABEL_RESTRICTED";
    pub const OPTED_OUT: &str = "NATIONAL_OPT_OUT";
}

/// Data classes a purpose may use; every entity belongs to one.
pub const DATA_CLASSES: [&str; 5] = ["demographics", "care", "notes", "alerts", "consent"];

pub fn data_class(entity: EntityKind) -> &'static str {
    match entity {
        EntityKind::Person | EntityKind::Address | EntityKind::Relationship => "demographics",
        EntityKind::CaseNote | EntityKind::Document | EntityKind::Communication => "notes",
        EntityKind::Alert => "alerts",
        EntityKind::Consent => "consent",
        _ => "care",
    }
}

pub fn purpose_name(p: Purpose) -> &'static str {
    match p {
        Purpose::DirectCare => "direct_care",
        Purpose::CareManagement => "care_management",
        Purpose::Safeguarding => "safeguarding",
        Purpose::Planning => "planning",
        Purpose::Research => "research",
    }
}

pub fn purpose_from_name(s: &str) -> Option<Purpose> {
    let s = s.trim().to_ascii_lowercase().replace('-', "_");
    [
        Purpose::DirectCare,
        Purpose::CareManagement,
        Purpose::Safeguarding,
        Purpose::Planning,
        Purpose::Research,
    ]
    .into_iter()
    .find(|p| purpose_name(*p) == s)
}

const PURPOSE_NAMES: [&str; 5] = [
    "direct_care",
    "care_management",
    "safeguarding",
    "planning",
    "research",
];

// ---------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The organisation that controls the records (its staff need no consent to share
    /// within it; everyone else does, unless the purpose is consent-exempt).
    pub home_organisation: String,
    #[serde(default)]
    pub auth: AuthConfig,
    pub storage: StorageConfig,
    #[serde(default)]
    pub national_opt_out: Option<OptOutConfig>,
    #[serde(default)]
    pub organisations: BTreeMap<String, Spanned<OrganisationConfig>>,
    pub purposes: BTreeMap<String, Spanned<PurposeConfig>>,
    pub roles: BTreeMap<String, Spanned<RoleConfig>>,
    pub break_glass: BreakGlassConfig,
    /// Source consent scope (canonical code) -> what it means.
    #[serde(default)]
    pub source_consents: BTreeMap<String, Spanned<Provision>>,
    /// Labels implied by what a record is, whichever source it comes from (on top of
    /// the labels the vendor profiles derive from source fields).
    #[serde(default)]
    pub record_labels: Vec<Spanned<RecordLabelRule>>,
}

/// `[[record_labels]]`: records of `entity` (whose canonical `field` is one of
/// `values`, when given) carry `labels`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RecordLabelRule {
    pub entity: String,
    pub field: Option<String>,
    #[serde(default)]
    pub values: Vec<String>,
    pub labels: Vec<String>,
}

impl RecordLabelRule {
    fn applies(&self, record: &Record) -> bool {
        if record.entity.name() != self.entity {
            return false;
        }
        match &self.field {
            None => true,
            Some(f) => record
                .text(f)
                .is_some_and(|v| self.values.iter().any(|x| x == v)),
        }
    }
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Environment variable holding the HS256 key (wins over the file).
    pub hs256_key_env: Option<String>,
    /// File holding the HS256 key (local use and the demo).
    pub hs256_key_file: Option<PathBuf>,
    /// Create a random key file when it is missing (demo only).
    #[serde(default)]
    pub generate_key_if_missing: bool,
    /// A JWKS (JSON) file with the RS256/ES256 public keys of the identity provider.
    pub jwks_file: Option<PathBuf>,
    /// The identity provider's JWKS URL (https, or http on loopback); fetched at
    /// startup and again when a token names an unknown key id (at most every
    /// `jwks_refetch_secs`). Give this or `jwks_file`, not both.
    pub jwks_url: Option<String>,
    /// Least seconds between two fetches of `jwks_url` (default 10).
    #[serde(default = "default_jwks_refetch_secs")]
    pub jwks_refetch_secs: u64,
    /// Required `iss` when set.
    pub issuer: Option<String>,
    /// Required `aud` when set.
    pub audience: Option<String>,
    /// The request header naming the purpose of use.
    #[serde(default = "default_purpose_header")]
    pub purpose_header: String,
    /// The request header carrying a break-glass or sealed-envelope justification.
    #[serde(default = "default_break_glass_header")]
    pub break_glass_header: String,
    /// Seconds of clock skew tolerated on `exp`/`nbf`.
    #[serde(default = "default_leeway")]
    pub leeway_secs: i64,
}

fn default_jwks_refetch_secs() -> u64 {
    10
}

fn default_purpose_header() -> String {
    "x-purpose-of-use".into()
}
fn default_break_glass_header() -> String {
    "x-break-glass-reason".into()
}
fn default_leeway() -> i64 {
    30
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// The consent registry (SQLite).
    pub registry: PathBuf,
    /// The audit log (SQLite, hash-chained).
    pub audit: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptOutConfig {
    /// One NHS number a line (spaces allowed; `#` comments).
    pub file: PathBuf,
    /// Purposes it applies to (never direct care).
    pub purposes: Vec<String>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct OrganisationConfig {
    /// local_authority, health, research, ... (matched by consent provisions).
    pub kind: String,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct PurposeConfig {
    /// Data classes this purpose may use.
    pub classes: Vec<String>,
    /// A worker needs an allocation (self or team) to the person.
    #[serde(default)]
    pub requires_relationship: bool,
    /// Classes readable without a relationship (to identify a person).
    #[serde(default)]
    pub relationship_exempt_classes: Vec<String>,
    /// A legal basis other than consent (e.g. safeguarding duty): consents do not bind.
    #[serde(default)]
    pub consent_exempt: bool,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    pub purposes: Vec<String>,
    /// Sensitivity labels this role may see (besides `sealed`, see may_open_sealed).
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub may_open_sealed: bool,
    #[serde(default)]
    pub may_break_glass: bool,
    #[serde(default)]
    pub may_record_consent: bool,
    #[serde(default)]
    pub may_read_audit: bool,
    /// The caller is a person (token claim `person`): only their own record.
    #[serde(default)]
    pub own_record_only: bool,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct BreakGlassConfig {
    /// Purposes for which break-glass may be used.
    pub purposes: Vec<String>,
    /// Longest lifetime of a break-glass token (its exp - iat), minutes.
    pub max_minutes: i64,
    /// Shortest acceptable reason.
    pub min_reason_chars: usize,
}

/// A FHIR-Consent-shaped provision: a decision, criteria (empty = any) and nested
/// exceptions; the deepest matching provision decides.
#[derive(Debug, Deserialize, Serialize, Clone, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Provision {
    pub decision: ConsentDecision,
    /// User ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actors: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub organisations: Vec<String>,
    /// Organisation kinds; `external` means any organisation but the home one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub organisation_kinds: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub purposes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provisions: Vec<Provision>,
}

#[derive(Debug, Deserialize, Serialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ConsentDecision {
    #[default]
    Permit,
    Deny,
}

impl PolicyConfig {
    pub fn load(path: &Path) -> Result<PolicyConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::io(path, format!("cannot read: {e}")))?;
        Self::parse(path, &text)
    }

    /// Parse and validate; relative paths become relative to the file's folder.
    pub fn parse(path: &Path, text: &str) -> Result<PolicyConfig, ConfigError> {
        let mut c: PolicyConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            ConfigError::at(path, line, e.message().to_string())
        })?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let err =
            |offset: usize, reason: String| ConfigError::at(path, line_of(text, offset), reason);
        for p in [&mut c.storage.registry, &mut c.storage.audit] {
            *p = base.join(&*p);
        }
        if let Some(f) = &mut c.auth.hs256_key_file {
            *f = base.join(&*f);
        }
        if let Some(f) = &mut c.auth.jwks_file {
            *f = base.join(&*f);
        }
        c.auth.purpose_header = c.auth.purpose_header.to_ascii_lowercase();
        c.auth.break_glass_header = c.auth.break_glass_header.to_ascii_lowercase();
        if c.auth.hs256_key_env.is_none()
            && c.auth.hs256_key_file.is_none()
            && c.auth.jwks_file.is_none()
            && c.auth.jwks_url.is_none()
        {
            return Err(ConfigError::at(
                path,
                1,
                "[auth]: give hs256_key_env, hs256_key_file, jwks_file or jwks_url (no way to verify tokens)",
            ));
        }
        if let Some(url) = &c.auth.jwks_url {
            let at = line_of(text, text.find("jwks_url").unwrap_or(0));
            if c.auth.jwks_file.is_some() {
                return Err(ConfigError::at(
                    path,
                    at,
                    "[auth]: jwks_url and jwks_file both given; choose one",
                ));
            }
            if !https_or_loopback(url) {
                return Err(ConfigError::at(
                    path,
                    at,
                    "[auth] jwks_url: must be https (plain http only on loopback)",
                ));
            }
        }
        let check_purposes = |at: usize, what: &str, list: &[String]| {
            for p in list {
                if purpose_from_name(p).is_none() {
                    return Err(err(
                        at,
                        format!(
                            "{what}: unknown purpose `{p}` (expected one of {PURPOSE_NAMES:?})"
                        ),
                    ));
                }
            }
            Ok(())
        };
        let check_classes = |at: usize, what: &str, list: &[String]| {
            for k in list {
                if !DATA_CLASSES.contains(&k.as_str()) {
                    return Err(err(
                        at,
                        format!(
                            "{what}: unknown data class `{k}` (expected one of {DATA_CLASSES:?})"
                        ),
                    ));
                }
            }
            Ok(())
        };
        let check_labels = |at: usize, what: &str, list: &[String]| {
            for l in list {
                if !escr_connector::profile::KNOWN_LABELS.contains(&l.as_str()) {
                    return Err(err(at, format!("{what}: unknown label `{l}`")));
                }
            }
            Ok(())
        };
        for name in c.purposes.keys() {
            if purpose_from_name(name).is_none() {
                let at = c.purposes[name].span().start;
                return Err(err(
                    at,
                    format!(
                        "[purposes.{name}]: unknown purpose (expected one of {PURPOSE_NAMES:?})"
                    ),
                ));
            }
        }
        for name in PURPOSE_NAMES {
            if !c.purposes.contains_key(name) {
                return Err(ConfigError::at(
                    path,
                    1,
                    format!("[purposes.{name}] is missing"),
                ));
            }
        }
        for (name, p) in &c.purposes {
            let at = p.span().start;
            check_classes(
                at,
                &format!("[purposes.{name}] classes"),
                &p.get_ref().classes,
            )?;
            check_classes(
                at,
                &format!("[purposes.{name}] relationship_exempt_classes"),
                &p.get_ref().relationship_exempt_classes,
            )?;
        }
        if c.roles.is_empty() {
            return Err(ConfigError::at(path, 1, "no [roles.*]"));
        }
        for (name, r) in &c.roles {
            let at = r.span().start;
            check_purposes(
                at,
                &format!("[roles.{name}] purposes"),
                &r.get_ref().purposes,
            )?;
            check_labels(at, &format!("[roles.{name}] labels"), &r.get_ref().labels)?;
            if r.get_ref().labels.iter().any(|l| l == "sealed") {
                return Err(err(
                    at,
                    format!(
                        "[roles.{name}] labels: `sealed` is opened only through may_open_sealed"
                    ),
                ));
            }
        }
        for (name, o) in &c.organisations {
            if o.get_ref().kind == "external" {
                return Err(err(
                    o.span().start,
                    format!("[organisations.{name}]: `external` is reserved"),
                ));
            }
        }
        if !c.organisations.contains_key(&c.home_organisation) {
            return Err(ConfigError::at(
                path,
                1,
                format!(
                    "home_organisation `{}` is not in [organisations]",
                    c.home_organisation
                ),
            ));
        }
        check_purposes(0, "[break_glass] purposes", &c.break_glass.purposes).map_err(|e| {
            ConfigError::at(
                path,
                line_of(text, text.find("[break_glass]").unwrap_or(0)),
                e.reason,
            )
        })?;
        if c.break_glass.max_minutes <= 0 {
            return Err(ConfigError::at(
                path,
                line_of(text, text.find("max_minutes").unwrap_or(0)),
                "[break_glass] max_minutes must be positive",
            ));
        }
        if let Some(o) = &mut c.national_opt_out {
            o.file = base.join(&o.file);
            let at = text.find("[national_opt_out]").unwrap_or(0);
            check_purposes(at, "[national_opt_out] purposes", &o.purposes)?;
            if o.purposes.iter().any(|p| p == "direct_care") {
                return Err(err(
                    at,
                    "[national_opt_out] purposes: the opt-out never applies to direct care".into(),
                ));
            }
        }
        for (scope, p) in &c.source_consents {
            let at = p.span().start;
            if escr_connector::catalog::CodeSystem::ConsentScope
                .values()
                .iter()
                .all(|c| c != scope)
            {
                return Err(err(
                    at,
                    format!("[source_consents] unknown consent scope `{scope}`"),
                ));
            }
            validate_provision(p.get_ref())
                .map_err(|r| err(at, format!("[source_consents.{scope}]: {r}")))?;
        }
        for rule in &c.record_labels {
            let at = rule.span().start;
            let r = rule.get_ref();
            let Some(entity) = escr_connector::EntityKind::from_name(&r.entity) else {
                return Err(err(
                    at,
                    format!("[[record_labels]]: unknown entity `{}`", r.entity),
                ));
            };
            match &r.field {
                Some(f) if entity.field(f).is_none() => {
                    return Err(err(
                        at,
                        format!("[[record_labels]]: `{}` has no field `{f}`", r.entity),
                    ))
                }
                Some(_) if r.values.is_empty() => {
                    return Err(err(at, "[[record_labels]]: a field needs values".into()))
                }
                None if !r.values.is_empty() => {
                    return Err(err(at, "[[record_labels]]: values need a field".into()))
                }
                _ => {}
            }
            if r.labels.is_empty() {
                return Err(err(at, "[[record_labels]]: no labels".into()));
            }
            check_labels(at, "[[record_labels]] labels", &r.labels)?;
        }
        Ok(c)
    }
}

/// A URL the gateway may send a token to or trust keys from: https, or plain http only
/// on the loopback interface (tests, a sidecar).
pub fn https_or_loopback(url: &str) -> bool {
    let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"];
    url.starts_with("https://") || loopback.iter().any(|l| url.starts_with(l))
}

/// Checks a provision's names (also used for consents recorded through the API).
pub fn validate_provision(p: &Provision) -> Result<(), String> {
    for x in &p.purposes {
        if purpose_from_name(x).is_none() {
            return Err(format!("unknown purpose `{x}`"));
        }
    }
    for x in &p.classes {
        if !DATA_CLASSES.contains(&x.as_str()) {
            return Err(format!("unknown data class `{x}`"));
        }
    }
    for x in &p.labels {
        if !escr_connector::profile::KNOWN_LABELS.contains(&x.as_str()) {
            return Err(format!("unknown label `{x}`"));
        }
    }
    if let (Some(s), Some(e)) = (p.start, p.end) {
        if e < s {
            return Err("period ends before it starts".into());
        }
    }
    p.provisions.iter().try_for_each(validate_provision)
}

// ---------------------------------------------------------------------------------
// Per-person facts and the engine
// ---------------------------------------------------------------------------------

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

type OptedOutCache = Option<(Arc<crate::index::Snapshot>, Arc<HashSet<String>>)>;

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

/// Everything the consent path needs, built from `policy.toml`.
pub struct AccessControl {
    pub config: Arc<PolicyConfig>,
    pub auth: crate::auth::Auth,
    pub engine: Arc<PolicyEngine>,
    pub registry: crate::registry::Registry,
    pub audit: crate::audit::AuditLog,
}

#[derive(Debug, thiserror::Error)]
pub enum AccessControlError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("auth: {0}")]
    Auth(String),
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
}

impl AccessControl {
    pub fn load(
        path: &Path,
        index: Option<Arc<IdentityIndex>>,
    ) -> Result<AccessControl, AccessControlError> {
        Self::from_config(PolicyConfig::load(path)?, index)
    }

    pub fn from_config(
        config: PolicyConfig,
        index: Option<Arc<IdentityIndex>>,
    ) -> Result<AccessControl, AccessControlError> {
        let config = Arc::new(config);
        let auth = crate::auth::Auth::new(config.clone()).map_err(AccessControlError::Auth)?;
        let engine = Arc::new(PolicyEngine::new(config.clone(), index)?);
        let registry = crate::registry::Registry::open(&config.storage.registry)?;
        let audit = crate::audit::AuditLog::open(&config.storage.audit)?;
        Ok(AccessControl {
            config,
            auth,
            engine,
            registry,
            audit,
        })
    }
}
