//! Named, versioned indicator definitions, the catalog fields each needs, and the
//! data-requirements report: per source, which of those fields its vendor profile maps
//! and which the council's systems lack (`escr data-requirements`).
//!
//! `escr-local-v1` is the set the gateway publishes today (`config/README.md`). The
//! national methods are named for their returns and the year of their guidance; what
//! each counts is written in `docs/national-definitions.md`.

use escr_connector::{EntityKind, VendorProfile};
use serde::Serialize;

/// A catalog field a definition reads, or one of several that can stand for it.
#[derive(Clone, Copy, Debug)]
pub struct Need {
    pub entity: EntityKind,
    /// Any one of these fields meets the need.
    pub any_of: &'static [&'static str],
    /// What the definition uses it for.
    pub purpose: &'static str,
}

#[derive(Clone, Copy, Debug)]
pub struct Definition {
    /// `name-version`: what outputs carry in their `definition` column.
    pub name: &'static str,
    pub title: &'static str,
    /// The measures it defines, by their ids in the return.
    pub measures: &'static [&'static str],
    pub needs: &'static [Need],
}

const fn need(entity: EntityKind, any_of: &'static [&'static str], purpose: &'static str) -> Need {
    Need {
        entity,
        any_of,
        purpose,
    }
}

use EntityKind::{Assessment, Episode, Person, Referral, Service};

pub const DEFINITIONS: [Definition; 3] = [
    Definition {
        name: super::indicators::LOCAL_DEFINITION,
        title: "Local measures (config/README.md)",
        measures: &["1", "2", "3", "4", "5", "5b", "6a", "6b"],
        needs: &[
            need(Person, &["birth_date"], "ages"),
            need(Person, &["death_date"], "alive on the last day; services after death"),
            need(Referral, &["received_at"], "1: referrals"),
            need(Assessment, &["type"], "2: children's assessments"),
            need(Assessment, &["started"], "2: working days"),
            need(Assessment, &["authorised"], "2: authorisation"),
            need(Episode, &["kind"], "3, 4: child protection plans"),
            need(Episode, &["start"], "3, 4: plan dates"),
            need(Episode, &["end"], "3: plan length"),
            need(Service, &["type"], "5, 6: home, day, residential, nursing care"),
            need(Service, &["delivery_mechanism"], "5: self-directed support"),
            need(Service, &["start"], "5, 6: service dates"),
            need(Service, &["end"], "5: open on the last day"),
        ],
    },
    Definition {
        name: "ascof-cld-2024-25",
        title: "ASCOF from Client Level Data, 2024-25: 2B, 2C (permanent admissions to residential and nursing care per 100,000, 18-64 and 65+), 3D (self-directed support, direct payments)",
        measures: &["2B", "2C", "3D1", "3D2"],
        needs: &[
            need(Person, &["birth_date"], "age at the period's end"),
            need(Person, &["death_date"], "services after death"),
            need(
                Service,
                &["support_category"],
                "long-term support and its setting (community, residential, nursing)",
            ),
            need(
                Service,
                &["permanence", "support_category"],
                "2B, 2C: permanent placements, not respite or short stays",
            ),
            need(Service, &["funding"], "2B, 2C: council-supported admissions only"),
            need(Service, &["delivery_mechanism"], "3D: self-directed support"),
            need(Service, &["start"], "service dates"),
            need(Service, &["end"], "service dates"),
        ],
    },
    Definition {
        name: "cin-census-2024-25",
        title: "Children in Need census 2024-25: re-referrals within 12 months",
        measures: &["CIN-RR"],
        needs: &[
            need(Person, &["birth_date"], "under 18 on the referral"),
            need(Referral, &["received_at"], "referral dates"),
            need(
                Referral,
                &["service_area"],
                "children's social care referrals only, wherever recorded",
            ),
            need(Episode, &["kind"], "a referral while a case is open is not a new one"),
            need(Episode, &["start"], "open cases"),
            need(Episode, &["end"], "open cases"),
        ],
    },
];

pub fn definition(name: &str) -> Option<&'static Definition> {
    DEFINITIONS.iter().find(|d| d.name == name)
}

/// One need of one definition, in one source.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SourceNeed {
    pub authority: String,
    pub source: String,
    pub definition: &'static str,
    /// `entity.field` (alternatives joined by `|`).
    pub field: String,
    /// `mapped` (the profile maps one of the fields), `lacking` (it holds the entity
    /// but not the field) or `entity not held`.
    pub status: &'static str,
    pub purpose: &'static str,
}

/// Whether an authority's systems hold what a definition needs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuthorityStatus {
    pub authority: String,
    pub definition: &'static str,
    /// Every source holding each entity the definition reads maps what it needs,
    /// and some source holds each entity.
    pub complete: bool,
    /// `entity.field` needs not met, with the sources lacking them.
    pub lacking: Vec<String>,
}

fn maps(profile: &VendorProfile, entity: EntityKind, any_of: &[&str]) -> Option<bool> {
    let spec = profile.entity(entity)?;
    Some(
        spec.fields
            .keys()
            .any(|k| any_of.contains(&k.get_ref().as_str())),
    )
}

/// The data-requirements report for these sources (name, authority, profile).
pub fn requirements<'a>(
    sources: impl IntoIterator<Item = (&'a str, &'a str, &'a VendorProfile)>,
) -> (Vec<SourceNeed>, Vec<AuthorityStatus>) {
    let sources: Vec<(&str, &str, &VendorProfile)> = sources.into_iter().collect();
    let mut rows = Vec::new();
    let mut authorities: Vec<&str> = sources.iter().map(|s| s.1).collect();
    authorities.sort();
    authorities.dedup();
    let mut statuses = Vec::new();
    for def in &DEFINITIONS {
        for authority in &authorities {
            let mut lacking = Vec::new();
            for n in def.needs {
                let field = format!("{}.{}", n.entity.name(), n.any_of.join("|"));
                let mut held = false;
                let mut without = Vec::new();
                for (source, a, profile) in sources.iter().filter(|s| s.1 == *authority) {
                    let status = match maps(profile, n.entity, n.any_of) {
                        None => "entity not held",
                        Some(true) => "mapped",
                        Some(false) => "lacking",
                    };
                    held |= status != "entity not held";
                    if status == "lacking" {
                        without.push(*source);
                    }
                    rows.push(SourceNeed {
                        authority: a.to_string(),
                        source: source.to_string(),
                        definition: def.name,
                        field: field.clone(),
                        status,
                        purpose: n.purpose,
                    });
                }
                if !held {
                    lacking.push(format!("{field} (no source holds {})", n.entity.name()));
                } else if !without.is_empty() {
                    lacking.push(format!("{field} ({})", without.join(", ")));
                }
            }
            statuses.push(AuthorityStatus {
                authority: authority.to_string(),
                definition: def.name,
                complete: lacking.is_empty(),
                lacking,
            });
        }
    }
    (rows, statuses)
}

/// The report as CSV: one row per source, definition and need, then one summary row
/// per authority and definition (`source` empty).
pub fn requirements_csv(rows: &[SourceNeed], statuses: &[AuthorityStatus]) -> String {
    let mut cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.authority.clone(),
                r.source.clone(),
                r.definition.to_string(),
                r.field.clone(),
                r.status.to_string(),
                r.purpose.to_string(),
            ]
        })
        .collect();
    for s in statuses {
        cells.push([
            s.authority.clone(),
            String::new(),
            s.definition.to_string(),
            String::new(),
            if s.complete { "complete" } else { "incomplete" }.to_string(),
            s.lacking.join("; "),
        ]);
    }
    super::csv::file(
        &[
            "authority",
            "source",
            "definition",
            "field",
            "status",
            "purpose",
        ],
        cells.iter().map(|c| c.iter().map(String::as_str)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn shipped(vendor: &str) -> VendorProfile {
        VendorProfile::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("config/vendors/{vendor}.toml")),
        )
        .unwrap()
    }

    #[test]
    fn every_need_names_catalog_fields() {
        for d in &DEFINITIONS {
            for n in d.needs {
                for f in n.any_of {
                    assert!(n.entity.field(f).is_some(), "{} {}.{f}", d.name, n.entity);
                }
            }
        }
    }

    #[test]
    fn the_demo_vendors_lack_the_ascof_fields_and_hold_the_cin_census_ones() {
        let profiles: Vec<(String, VendorProfile)> = ["casetrak", "opencare", "ssis"]
            .iter()
            .map(|v| (v.to_string(), shipped(v)))
            .collect();
        let (rows, statuses) =
            requirements(profiles.iter().map(|(n, p)| (n.as_str(), "Northshire", p)));
        let status = |d: &str| statuses.iter().find(|s| s.definition == d).unwrap();
        // Even the local set: only CaseTrak records deaths, and OpenCare's assessments
        // have no authorisation date.
        assert_eq!(
            status("escr-local-v1").lacking,
            [
                "person.death_date (opencare, ssis)",
                "assessment.authorised (opencare)"
            ]
        );
        let ascof = status("ascof-cld-2024-25");
        assert!(!ascof.complete);
        assert!(
            ascof
                .lacking
                .iter()
                .any(|l| l.starts_with("service.funding (casetrak, opencare, ssis)")),
            "{ascof:?}"
        );

        // Per source: SSIS/90 holds no episodes at all.
        let row = |source: &str, def: &str, field: &str| {
            rows.iter()
                .find(|r| r.source == source && r.definition == def && r.field == field)
                .map(|r| r.status)
        };
        assert_eq!(
            row("ssis", "cin-census-2024-25", "episode.kind"),
            Some("entity not held")
        );
        // Each says which service a referral is for (CaseTrak in a column, the two
        // adults' systems as a constant): the CIN census is met.
        let cin = status("cin-census-2024-25");
        assert!(cin.complete, "{cin:?}");
        for source in ["casetrak", "opencare", "ssis"] {
            assert_eq!(
                row(source, "cin-census-2024-25", "referral.service_area"),
                Some("mapped"),
                "{source}"
            );
        }
        assert_eq!(
            row(
                "casetrak",
                "ascof-cld-2024-25",
                "service.delivery_mechanism"
            ),
            Some("mapped")
        );
        let csv = requirements_csv(&rows, &statuses);
        assert!(csv.starts_with("authority,source,definition,field,status,purpose\n"));
        assert!(csv.contains("Northshire,,ascof-cld-2024-25,,incomplete,"));
    }

    #[test]
    fn a_profile_that_maps_the_national_fields_meets_them() {
        // Shaped unlike the demo vendors: one system holding adults' services with
        // the national fields and nothing else.
        let text = r#"
[vendor]
name = "carefirst-like"
[codes.cat]
system = "support_category"
map = { LTR = "LONG_TERM_RESIDENTIAL", LTN = "LONG_TERM_NURSING", LTC = "LONG_TERM_COMMUNITY" }
[codes.fund]
system = "funding"
map = { LA = "LOCAL_AUTHORITY", SF = "CLIENT" }
[codes.mech]
system = "delivery_mechanism"
map = { DP = "DIRECT_PAYMENT" }
[entities.person]
by_key = "SELECT id, dob, dod FROM people WHERE id IN ({keys})"
list = "SELECT id, dob, dod FROM people"
fields.local_id = { column = "id" }
fields.birth_date = { column = "dob" }
fields.death_date = { column = "dod" }
[entities.service]
by_key = "SELECT id, pid, cat, fund, mech, s, e FROM svc WHERE id IN ({keys})"
by_person = "SELECT id, pid, cat, fund, mech, s, e FROM svc WHERE pid IN ({keys})"
fields.local_id = { column = "id" }
fields.person_id = { column = "pid" }
fields.support_category = { column = "cat", codes = "cat" }
fields.funding = { column = "fund", codes = "fund" }
fields.delivery_mechanism = { column = "mech", codes = "mech" }
fields.start = { column = "s" }
fields.end = { column = "e" }
"#;
        let profile = VendorProfile::parse(Path::new("carefirst.toml"), text).unwrap();
        let (_, statuses) = requirements([("carefirst", "Westshire", &profile)]);
        let status = |d: &str| statuses.iter().find(|s| s.definition == d).unwrap();
        assert!(
            status("ascof-cld-2024-25").complete,
            "{:?}",
            status("ascof-cld-2024-25")
        );
        // It holds no referrals, assessments or episodes: the local set is not met.
        let local = status("escr-local-v1");
        assert!(!local.complete);
        assert!(local
            .lacking
            .contains(&"referral.received_at (no source holds referral)".to_string()));
    }
}
