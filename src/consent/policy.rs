//! The consent and access policy (design section 5) as configured by
//! `config/policy.toml`: roles, purposes of use and the data classes each may use,
//! labels each role may see, sealed envelopes, break-glass, consents and the national
//! data opt-out. This file reads and validates it; [`super::engine`] decides with it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use escr_connector::profile::line_of;
use escr_connector::{ConfigError, Record};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::context::{purpose_from_name, DATA_CLASSES, PURPOSE_NAMES};

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
    pub(crate) fn applies(&self, record: &Record) -> bool {
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
    /// One NHS number a line (spaces allowed; `#` comments). Without it only the
    /// sources' opt-out records apply.
    pub file: Option<PathBuf>,
    /// Purposes it applies to: planning and research (both must be listed; never
    /// direct care).
    #[serde(default = "opt_out_purposes")]
    pub purposes: Vec<String>,
    /// Purposes for which people with no valid NHS number on any record (whose
    /// opt-out cannot be checked) are left out too.
    #[serde(default = "unchecked_left_out_for")]
    pub without_nhs_number_left_out_for: Vec<String>,
}

fn opt_out_purposes() -> Vec<String> {
    vec!["planning".into(), "research".into()]
}

fn unchecked_left_out_for() -> Vec<String> {
    vec!["research".into()]
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
    /// May record, withdraw and read registry consents of people the caller (or
    /// their team) is allocated to.
    #[serde(default)]
    pub may_record_consent: bool,
    /// A role made for the registry: records, withdraws and reads registry consents
    /// of anyone (still never widening its own access, and lifting a refusal only with
    /// an evidence reference).
    #[serde(default)]
    pub consent_registrar: bool,
    #[serde(default)]
    pub may_read_audit: bool,
    /// May list every person of the identity index (`people`), each still only if
    /// the caller may see them.
    #[serde(default)]
    pub may_list_people: bool,
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
    /// Longest acceptable reason (it is stored with every audit event of the request).
    #[serde(default = "default_max_reason_chars")]
    pub max_reason_chars: usize,
}

fn default_max_reason_chars() -> usize {
    500
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

impl Provision {
    /// This provision or one nested in it denies.
    pub fn denies_anything(&self) -> bool {
        self.decision == ConsentDecision::Deny || self.provisions.iter().any(Self::denies_anything)
    }

    /// This provision or one nested in it permits.
    pub fn permits_anything(&self) -> bool {
        self.decision == ConsentDecision::Permit
            || self.provisions.iter().any(Self::permits_anything)
    }
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
        if c.break_glass.max_reason_chars < c.break_glass.min_reason_chars.max(1) {
            return Err(ConfigError::at(
                path,
                line_of(text, text.find("max_reason_chars").unwrap_or(0)),
                "[break_glass] max_reason_chars must be at least min_reason_chars",
            ));
        }
        if c.break_glass.max_minutes <= 0 {
            return Err(ConfigError::at(
                path,
                line_of(text, text.find("max_minutes").unwrap_or(0)),
                "[break_glass] max_minutes must be positive",
            ));
        }
        if let Some(o) = &mut c.national_opt_out {
            if let Some(f) = &mut o.file {
                *f = base.join(&*f);
            }
            let at = text.find("[national_opt_out]").unwrap_or(0);
            check_purposes(at, "[national_opt_out] purposes", &o.purposes)?;
            check_purposes(
                at,
                "[national_opt_out] without_nhs_number_left_out_for",
                &o.without_nhs_number_left_out_for,
            )?;
            if o.purposes.iter().any(|p| p == "direct_care") {
                return Err(err(
                    at,
                    "[national_opt_out] purposes: the opt-out never applies to direct care".into(),
                ));
            }
            if let Some(missing) = ["planning", "research"]
                .iter()
                .find(|p| !o.purposes.iter().any(|x| x == *p))
            {
                return Err(err(
                    at,
                    format!("[national_opt_out] purposes: the national data opt-out covers planning and research; `{missing}` is missing"),
                ));
            }
        }
        for (scope, p) in &c.source_consents {
            let at = p.span().start;
            if scope == "NATIONAL_OPT_OUT" {
                return Err(err(
                    at,
                    "[source_consents] NATIONAL_OPT_OUT takes no provision: a source's opt-out record (DENY = opted out) applies as the national data opt-out, to the purposes of [national_opt_out]".into(),
                ));
            }
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
