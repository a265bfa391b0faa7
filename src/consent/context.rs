//! The vocabulary every subsystem shares about who is asking: the caller, purposes of
//! use, data classes and the codes of withheld data. It imports nothing of the crate, so
//! any subsystem may use it without a cycle.

use escr_connector::EntityKind;

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
    /// Display name from the token (audit only).
    pub name: Option<String>,
    pub role: String,
    pub organisation: Option<String>,
    pub team: Option<String>,
    /// The caller's worker id in the source systems' allocation data.
    pub worker_id: Option<String>,
    pub purpose: Purpose,
    /// Break-glass or sealed-envelope justification, validated at authentication.
    pub break_glass_reason: Option<String>,
    /// For the `person` role: the gateway person id the caller is.
    pub person_id: Option<String>,
}

impl AccessContext {
    /// A test and demo caller (the default policy lets it see everything).
    pub fn demo() -> AccessContext {
        AccessContext::for_role("demo", "practitioner", Purpose::DirectCare)
    }

    /// A caller built without a token (tests and in-process use).
    pub fn for_role(user: &str, role: &str, purpose: Purpose) -> AccessContext {
        AccessContext {
            user: user.into(),
            name: None,
            role: role.into(),
            organisation: None,
            team: None,
            worker_id: None,
            purpose,
            break_glass_reason: None,
            person_id: None,
        }
    }
}

/// Why a record was withheld; shown to the caller as a GraphQL error code and reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Withheld {
    pub code: &'static str,
    pub reason: String,
}

/// GraphQL error codes of withheld data.
pub mod codes {
    pub const CONSENT_DENIED: &str = "CONSENT_DENIED";
    /// The person's consents could not be read (a source is down): withheld, not refused.
    pub const CONSENT_UNKNOWN: &str = "CONSENT_UNKNOWN";
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

pub(crate) const PURPOSE_NAMES: [&str; 5] = [
    "direct_care",
    "care_management",
    "safeguarding",
    "planning",
    "research",
];
