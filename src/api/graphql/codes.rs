//! GraphQL enums for the catalog's code systems. Variant names are the canonical codes,
//! so a mapped value converts by name; a test checks each enum against the catalog.

#![allow(non_camel_case_types, clippy::upper_case_acronyms)]

use async_graphql::Enum;

pub trait FromCode: Sized {
    fn from_code(code: &str) -> Option<Self>;
}

macro_rules! code_enum {
    ($(#[$doc:meta])* $name:ident, $system:expr, [$($variant:ident),* $(,)?]) => {
        $(#[$doc])*
        #[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
        #[graphql(rename_items = "SCREAMING_SNAKE_CASE")]
        pub enum $name { $($variant),* }

        impl FromCode for $name {
            fn from_code(code: &str) -> Option<Self> {
                match code {
                    $(stringify!($variant) => Some($name::$variant),)*
                    _ => None,
                }
            }
        }

        impl $name {
            pub const SYSTEM: escr_connector::CodeSystem = $system;
        }
    };
}

use escr_connector::CodeSystem as S;

code_enum!(Gender, S::Gender, [MALE, FEMALE, INDETERMINATE, UNKNOWN]);
code_enum!(
    /// NHS ethnic category (Data Dictionary letters A-S, Z = not stated, NOT_KNOWN =
    /// code 99).
    EthnicCategory, S::Ethnicity, [A, B, C, D, E, F, G, H, J, K, L, M, N, P, R, S, Z, NOT_KNOWN]
);
code_enum!(
    SupportReason,
    S::SupportReason,
    [
        PHYSICAL_SUPPORT,
        SENSORY_SUPPORT,
        MEMORY_AND_COGNITION,
        LEARNING_DISABILITY,
        MENTAL_HEALTH,
        SOCIAL_SUPPORT,
        OTHER
    ]
);
code_enum!(
    AddressUse,
    S::AddressUse,
    [HOME, TEMPORARY, CORRESPONDENCE, PREVIOUS, OTHER]
);
code_enum!(
    RelationshipType,
    S::RelationshipType,
    [MOTHER, FATHER, CARER, SIBLING, OTHER]
);
code_enum!(
    ReferralRoute,
    S::ReferralRoute,
    [SELF, FAMILY, HEALTH, POLICE, SCHOOL, HOUSING, OTHER_LA, OTHER]
);
code_enum!(
    ReferralOutcome,
    S::ReferralOutcome,
    [
        ASSESSMENT,
        SIGNPOSTED,
        NO_FURTHER_ACTION,
        SERVICE_PROVIDED,
        OPEN,
        OTHER
    ]
);
code_enum!(
    AssessmentType,
    S::AssessmentType,
    [
        CHILD_AND_FAMILY,
        ADULT_NEEDS,
        CARER,
        REVIEW,
        MENTAL_HEALTH,
        OTHER
    ]
);
code_enum!(
    ServiceType,
    S::ServiceType,
    [
        RESIDENTIAL,
        NURSING,
        HOME_CARE,
        DAY_CARE,
        REABLEMENT,
        EQUIPMENT,
        OTHER
    ]
);
code_enum!(
    DeliveryMechanism,
    S::DeliveryMechanism,
    [
        DIRECT_PAYMENT,
        PART_DIRECT_PAYMENT,
        MANAGED_PERSONAL_BUDGET,
        COUNCIL_COMMISSIONED,
        OTHER
    ]
);
code_enum!(
    EpisodeKind,
    S::EpisodeKind,
    [
        CHILD_IN_NEED,
        CHILD_PROTECTION_PLAN,
        LOOKED_AFTER,
        ADULT_CASE,
        MENTAL_HEALTH,
        OTHER
    ]
);
code_enum!(
    AbuseCategory,
    S::AbuseCategory,
    [NEGLECT, PHYSICAL, EMOTIONAL, SEXUAL, MULTIPLE, OTHER]
);
code_enum!(
    DocumentType,
    S::DocumentType,
    [LETTER, EMAIL, FORM, SCAN, OTHER]
);
code_enum!(Direction, S::Direction, [INCOMING, OUTGOING]);
code_enum!(
    ConsentScope,
    S::ConsentScope,
    [SHARE_HEALTH, SHARE_ALL, NO_SHARING, NATIONAL_OPT_OUT, OTHER]
);
code_enum!(ConsentDecision, S::ConsentDecision, [PERMIT, DENY]);

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::EnumType;

    fn check<E: EnumType + FromCode>(system: S) {
        let items: Vec<&str> = E::items().iter().map(|i| i.name).collect();
        assert_eq!(items, system.values(), "{}", system.name());
        for v in system.values() {
            assert!(E::from_code(v).is_some(), "{} {}", system.name(), v);
        }
    }

    #[test]
    fn every_enum_matches_its_catalog_code_system() {
        check::<Gender>(Gender::SYSTEM);
        check::<EthnicCategory>(EthnicCategory::SYSTEM);
        check::<SupportReason>(SupportReason::SYSTEM);
        check::<AddressUse>(AddressUse::SYSTEM);
        check::<RelationshipType>(RelationshipType::SYSTEM);
        check::<ReferralRoute>(ReferralRoute::SYSTEM);
        check::<ReferralOutcome>(ReferralOutcome::SYSTEM);
        check::<AssessmentType>(AssessmentType::SYSTEM);
        check::<ServiceType>(ServiceType::SYSTEM);
        check::<DeliveryMechanism>(DeliveryMechanism::SYSTEM);
        check::<EpisodeKind>(EpisodeKind::SYSTEM);
        check::<AbuseCategory>(AbuseCategory::SYSTEM);
        check::<DocumentType>(DocumentType::SYSTEM);
        check::<Direction>(Direction::SYSTEM);
        check::<ConsentScope>(ConsentScope::SYSTEM);
        check::<ConsentDecision>(ConsentDecision::SYSTEM);
        assert_eq!(S::ALL.len(), 16);
    }
}
