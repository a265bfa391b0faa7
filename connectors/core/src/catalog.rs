//! The unified ESCR entities, their fields and the canonical code systems.
//!
//! Vendor profiles map their columns onto these names; the gateway's GraphQL types read
//! them. One table, so a profile is validated against exactly what the schema exposes.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Every kind of record the gateway knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    Person,
    Address,
    Relationship,
    Referral,
    Assessment,
    CarePlan,
    Service,
    Episode,
    Visit,
    CaseNote,
    Document,
    Communication,
    Alert,
    Consent,
    Allocation,
    Worker,
    Team,
}

impl EntityKind {
    pub const ALL: [EntityKind; 17] = [
        EntityKind::Person,
        EntityKind::Address,
        EntityKind::Relationship,
        EntityKind::Referral,
        EntityKind::Assessment,
        EntityKind::CarePlan,
        EntityKind::Service,
        EntityKind::Episode,
        EntityKind::Visit,
        EntityKind::CaseNote,
        EntityKind::Document,
        EntityKind::Communication,
        EntityKind::Alert,
        EntityKind::Consent,
        EntityKind::Allocation,
        EntityKind::Worker,
        EntityKind::Team,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EntityKind::Person => "person",
            EntityKind::Address => "address",
            EntityKind::Relationship => "relationship",
            EntityKind::Referral => "referral",
            EntityKind::Assessment => "assessment",
            EntityKind::CarePlan => "care_plan",
            EntityKind::Service => "service",
            EntityKind::Episode => "episode",
            EntityKind::Visit => "visit",
            EntityKind::CaseNote => "case_note",
            EntityKind::Document => "document",
            EntityKind::Communication => "communication",
            EntityKind::Alert => "alert",
            EntityKind::Consent => "consent",
            EntityKind::Allocation => "allocation",
            EntityKind::Worker => "worker",
            EntityKind::Team => "team",
        }
    }

    pub fn from_name(name: &str) -> Option<EntityKind> {
        EntityKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Records of this kind belong to one person (and are loaded by person key).
    pub fn is_person_scoped(self) -> bool {
        !matches!(
            self,
            EntityKind::Person | EntityKind::Worker | EntityKind::Team
        )
    }

    /// The fields a profile may map for this entity.
    pub fn fields(self) -> &'static [FieldDef] {
        use FieldType::*;
        macro_rules! f {
            ($name:literal, $ty:expr) => {
                FieldDef {
                    name: $name,
                    ty: $ty,
                }
            };
        }
        match self {
            EntityKind::Person => &[
                f!("family_name", Text),
                f!("given_names", Text),
                f!("middle_names", Text),
                // "SMITH, John" in one column; split into family and given names.
                f!("full_name", Text),
                f!("birth_date", Date),
                f!("birth_date_estimated", Bool),
                f!("death_date", Date),
                f!("gender", Code(CodeSystem::Gender)),
                f!("ethnicity", Code(CodeSystem::Ethnicity)),
                f!("support_reason", Code(CodeSystem::SupportReason)),
                f!("nhs_number", NhsNumber),
                f!("postcode", Text),
                // The local id of the record this one was merged into by the vendor.
                f!("merged_into", Text),
                f!("restricted", Bool),
                // Other identifiers the person is known by (shown under `identifiers`).
                f!("la_reference", Text),
                f!("upn", Text),
                f!("ni_number", Text),
                f!("vendor_uuid", Text),
            ],
            EntityKind::Address => &[
                f!("use", Code(CodeSystem::AddressUse)),
                f!("line1", Text),
                f!("line2", Text),
                f!("line3", Text),
                f!("line4", Text),
                f!("postcode", Text),
                f!("start", Date),
                f!("end", Date),
            ],
            EntityKind::Relationship => &[
                f!("related_person_id", Text),
                f!("type", Code(CodeSystem::RelationshipType)),
                f!("parental_responsibility", Bool),
                f!("carer", Bool),
                f!("start", Date),
                f!("end", Date),
            ],
            EntityKind::Referral => &[
                f!("received_at", DateTime),
                f!("route", Code(CodeSystem::ReferralRoute)),
                f!("reason", Text),
                f!("outcome", Code(CodeSystem::ReferralOutcome)),
                f!("closed_at", DateTime),
                // Children's or adults' social care: the CIN census counts children's
                // referrals only, wherever a system records them.
                f!("service_area", Code(CodeSystem::ServiceArea)),
            ],
            EntityKind::Assessment => &[
                f!("type", Code(CodeSystem::AssessmentType)),
                f!("title", Text),
                // Date-times: vendors that keep the time of day keep the timeline in order.
                f!("started", DateTime),
                f!("completed", DateTime),
                f!("authorised", DateTime),
                f!("eligible", Bool),
                f!("outcome", Text),
                f!("worker_id", Text),
            ],
            EntityKind::CarePlan => &[
                f!("start", Date),
                f!("end", Date),
                f!("goals", TextList),
                f!("needs", Text),
                f!("personal_budget", Decimal),
            ],
            EntityKind::Service => &[
                f!("type", Code(CodeSystem::ServiceType)),
                f!("component", Text),
                f!("delivery_mechanism", Code(CodeSystem::DeliveryMechanism)),
                f!("provider", Text),
                f!("unit_cost", Decimal),
                f!("units_per_week", Decimal),
                f!("start", Date),
                f!("end", Date),
                // What national returns ask of a service (ASCOF from Client Level Data).
                f!("support_category", Code(CodeSystem::SupportCategory)),
                f!("permanence", Code(CodeSystem::Permanence)),
                f!("funding", Code(CodeSystem::Funding)),
            ],
            EntityKind::Episode => &[
                f!("kind", Code(CodeSystem::EpisodeKind)),
                f!("category", Code(CodeSystem::AbuseCategory)),
                f!("start", Date),
                f!("end", Date),
            ],
            EntityKind::Visit => &[
                f!("type", Text),
                f!("title", Text),
                f!("planned", DateTime),
                f!("actual", DateTime),
                // When the visit ended.
                f!("end", DateTime),
                f!("seen", Bool),
                f!("seen_alone", Bool),
                f!("worker_id", Text),
            ],
            EntityKind::CaseNote => &[
                f!("date", DateTime),
                f!("type", Text),
                f!("subject", Text),
                // With `concat`, rows sharing a local id are joined (notes split over lines).
                f!("text", Text),
                f!("worker_id", Text),
            ],
            EntityKind::Document => &[
                f!("type", Code(CodeSystem::DocumentType)),
                f!("direction", Code(CodeSystem::Direction)),
                f!("title", Text),
                f!("date", DateTime),
                f!("media_type", Text),
                f!("link", Text),
                // The email (communication local id) the document is attached to.
                f!("communication_id", Text),
            ],
            EntityKind::Communication => &[
                f!("direction", Code(CodeSystem::Direction)),
                f!("sender", Text),
                f!("recipients", TextList),
                f!("subject", Text),
                f!("sent_at", DateTime),
                f!("body", Text),
            ],
            EntityKind::Alert => &[
                f!("code", Text),
                f!("narrative", Text),
                f!("start", Date),
                f!("end", Date),
                f!("review_date", Date),
            ],
            EntityKind::Consent => &[
                f!("scope", Code(CodeSystem::ConsentScope)),
                f!("decision", Code(CodeSystem::ConsentDecision)),
                f!("given", Date),
                f!("withdrawn", Date),
            ],
            EntityKind::Allocation => &[
                f!("worker_id", Text),
                f!("team_id", Text),
                f!("start", Date),
                f!("end", Date),
            ],
            EntityKind::Worker => &[f!("name", Text), f!("role", Text), f!("team_id", Text)],
            EntityKind::Team => &[f!("name", Text)],
        }
    }

    pub fn field(self, name: &str) -> Option<&'static FieldDef> {
        self.fields().iter().find(|f| f.name == name)
    }
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The canonical value of a code that the system does not list (see
/// [`CodeSystem::has_other`]); the value itself is kept in the field named by
/// [`other_field`].
pub const OTHER: &str = "OTHER";

/// Where a code field's own value goes when its canonical value is `OTHER`: the
/// vendor's raw code, or the name of a value the deployment added (`extend`).
pub fn other_field(code_field: &str) -> Option<&'static str> {
    Some(match code_field {
        "gender" => "gender_other",
        "ethnicity" => "ethnicity_other",
        "support_reason" => "support_reason_other",
        "use" => "use_other",
        "type" => "type_other",
        "route" => "route_other",
        "outcome" => "outcome_other",
        "delivery_mechanism" => "delivery_mechanism_other",
        "kind" => "kind_other",
        "category" => "category_other",
        "direction" => "direction_other",
        "scope" => "scope_other",
        "decision" => "decision_other",
        "service_area" => "service_area_other",
        "support_category" => "support_category_other",
        "permanence" => "permanence_other",
        "funding" => "funding_other",
        _ => return None,
    })
}

/// Fields every entity has besides its own.
pub const COMMON_FIELDS: [&str; 3] = ["local_id", "person_id", "last_updated"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldDef {
    pub name: &'static str,
    pub ty: FieldType,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    Text,
    Int,
    Decimal,
    Bool,
    Date,
    DateTime,
    /// A JSON array, or text split on a separator.
    TextList,
    /// Normalised to 10 digits, check digit verified.
    NhsNumber,
    /// Translated through a profile code list into a canonical code.
    Code(CodeSystem),
}

/// Canonical code systems. Their values are the GraphQL enum values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CodeSystem {
    Gender,
    Ethnicity,
    SupportReason,
    AddressUse,
    RelationshipType,
    ReferralRoute,
    ReferralOutcome,
    AssessmentType,
    ServiceType,
    DeliveryMechanism,
    EpisodeKind,
    AbuseCategory,
    DocumentType,
    Direction,
    ConsentScope,
    ConsentDecision,
    ServiceArea,
    SupportCategory,
    Permanence,
    Funding,
}

impl CodeSystem {
    pub fn name(self) -> &'static str {
        match self {
            CodeSystem::Gender => "gender",
            CodeSystem::Ethnicity => "ethnicity",
            CodeSystem::SupportReason => "support_reason",
            CodeSystem::AddressUse => "address_use",
            CodeSystem::RelationshipType => "relationship_type",
            CodeSystem::ReferralRoute => "referral_route",
            CodeSystem::ReferralOutcome => "referral_outcome",
            CodeSystem::AssessmentType => "assessment_type",
            CodeSystem::ServiceType => "service_type",
            CodeSystem::DeliveryMechanism => "delivery_mechanism",
            CodeSystem::EpisodeKind => "episode_kind",
            CodeSystem::AbuseCategory => "abuse_category",
            CodeSystem::DocumentType => "document_type",
            CodeSystem::Direction => "direction",
            CodeSystem::ConsentScope => "consent_scope",
            CodeSystem::ConsentDecision => "consent_decision",
            CodeSystem::ServiceArea => "service_area",
            CodeSystem::SupportCategory => "support_category",
            CodeSystem::Permanence => "permanence",
            CodeSystem::Funding => "funding",
        }
    }

    pub const ALL: [CodeSystem; 20] = [
        CodeSystem::Gender,
        CodeSystem::Ethnicity,
        CodeSystem::SupportReason,
        CodeSystem::AddressUse,
        CodeSystem::RelationshipType,
        CodeSystem::ReferralRoute,
        CodeSystem::ReferralOutcome,
        CodeSystem::AssessmentType,
        CodeSystem::ServiceType,
        CodeSystem::DeliveryMechanism,
        CodeSystem::EpisodeKind,
        CodeSystem::AbuseCategory,
        CodeSystem::DocumentType,
        CodeSystem::Direction,
        CodeSystem::ConsentScope,
        CodeSystem::ConsentDecision,
        CodeSystem::ServiceArea,
        CodeSystem::SupportCategory,
        CodeSystem::Permanence,
        CodeSystem::Funding,
    ];

    pub fn from_name(name: &str) -> Option<CodeSystem> {
        CodeSystem::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Does the system have an `OTHER` value (a vendor value with no canonical match,
    /// kept as the vendor wrote it, or a value a deployment adds)?
    pub fn has_other(self) -> bool {
        self.values().contains(&OTHER)
    }

    /// The canonical values. Ethnicity uses the NHS ethnic category letters.
    pub fn values(self) -> &'static [&'static str] {
        match self {
            CodeSystem::Gender => &["MALE", "FEMALE", "INDETERMINATE", "UNKNOWN"],
            CodeSystem::Ethnicity => &[
                "A",
                "B",
                "C",
                "D",
                "E",
                "F",
                "G",
                "H",
                "J",
                "K",
                "L",
                "M",
                "N",
                "P",
                "R",
                "S",
                "Z",
                // NHS code 99: not known (Z is "not stated": asked, and declined).
                "NOT_KNOWN",
            ],
            CodeSystem::SupportReason => &[
                "PHYSICAL_SUPPORT",
                "SENSORY_SUPPORT",
                "MEMORY_AND_COGNITION",
                "LEARNING_DISABILITY",
                "MENTAL_HEALTH",
                "SOCIAL_SUPPORT",
                "OTHER",
            ],
            CodeSystem::AddressUse => &["HOME", "TEMPORARY", "CORRESPONDENCE", "PREVIOUS", "OTHER"],
            CodeSystem::RelationshipType => &["MOTHER", "FATHER", "CARER", "SIBLING", "OTHER"],
            CodeSystem::ReferralRoute => &[
                "SELF", "FAMILY", "HEALTH", "POLICE", "SCHOOL", "HOUSING", "OTHER_LA", "OTHER",
            ],
            CodeSystem::ReferralOutcome => &[
                "ASSESSMENT",
                "SIGNPOSTED",
                "NO_FURTHER_ACTION",
                "SERVICE_PROVIDED",
                "OPEN",
                "OTHER",
            ],
            CodeSystem::AssessmentType => &[
                "CHILD_AND_FAMILY",
                "ADULT_NEEDS",
                "CARER",
                "REVIEW",
                "MENTAL_HEALTH",
                "OTHER",
            ],
            CodeSystem::ServiceType => &[
                "RESIDENTIAL",
                "NURSING",
                "HOME_CARE",
                "DAY_CARE",
                "REABLEMENT",
                "EQUIPMENT",
                "OTHER",
            ],
            CodeSystem::DeliveryMechanism => &[
                "DIRECT_PAYMENT",
                "PART_DIRECT_PAYMENT",
                "MANAGED_PERSONAL_BUDGET",
                "COUNCIL_COMMISSIONED",
                "OTHER",
            ],
            CodeSystem::EpisodeKind => &[
                "CHILD_IN_NEED",
                "CHILD_PROTECTION_PLAN",
                "LOOKED_AFTER",
                "ADULT_CASE",
                "MENTAL_HEALTH",
                "OTHER",
            ],
            CodeSystem::AbuseCategory => &[
                "NEGLECT",
                "PHYSICAL",
                "EMOTIONAL",
                "SEXUAL",
                "MULTIPLE",
                "OTHER",
            ],
            CodeSystem::DocumentType => &["LETTER", "EMAIL", "FORM", "SCAN", "OTHER"],
            CodeSystem::Direction => &["INCOMING", "OUTGOING"],
            CodeSystem::ConsentScope => &[
                "SHARE_HEALTH",
                "SHARE_ALL",
                "NO_SHARING",
                "NATIONAL_OPT_OUT",
                "OTHER",
            ],
            CodeSystem::ConsentDecision => &["PERMIT", "DENY"],
            CodeSystem::ServiceArea => &["CHILDREN", "ADULTS", "OTHER"],
            // The Client Level Data service types: long-term support by setting, and
            // short-term support.
            CodeSystem::SupportCategory => &[
                "LONG_TERM_NURSING",
                "LONG_TERM_RESIDENTIAL",
                "LONG_TERM_COMMUNITY",
                "LONG_TERM_PRISON",
                "SHORT_TERM_TO_MAXIMISE_INDEPENDENCE",
                "SHORT_TERM_ONGOING_LOW_LEVEL",
                "SHORT_TERM_OTHER",
                "OTHER",
            ],
            // A placement meant to last (permanent) or for a time (respite, a short stay).
            CodeSystem::Permanence => &["PERMANENT", "TEMPORARY", "OTHER"],
            // Who pays (Client Level Data's client funding status).
            CodeSystem::Funding => &[
                "LOCAL_AUTHORITY",
                "JOINT_CLIENT_AND_LOCAL_AUTHORITY",
                "CLIENT",
                "NHS",
                "OTHER",
            ],
        }
    }
}
