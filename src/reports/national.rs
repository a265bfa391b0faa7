//! The national methods of `docs/national-definitions.md`: ASCOF 2B, 2C, 3D1, 3D2 from
//! Client Level Data (2024-25) and the Children in Need census re-referrals. They read
//! catalog fields the demo vendors do not hold (a service's support category,
//! permanence and funding; a referral's service area): a council's figures under
//! these definitions are only as complete as `escr data-requirements` says.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use escr_connector::{EntityKind, Record};

use super::extract::{Demographics, PersonData};
use super::indicators::{Tallies, Tally, Unit};
use super::Period;

/// (id, definition, name, unit) of every national measure, in output order.
pub const NATIONAL_MEASURES: [(&str, &str, &str, Unit); 5] = [
    (
        "2B",
        "ascof-cld-2024-25",
        "Long-term support needs of adults aged 18-64 met by permanent admission to residential and nursing care",
        Unit::Per100k,
    ),
    (
        "2C",
        "ascof-cld-2024-25",
        "Long-term support needs of adults aged 65 and over met by permanent admission to residential and nursing care",
        Unit::Per100k,
    ),
    (
        "3D1",
        "ascof-cld-2024-25",
        "Adults in community long-term support receiving self-directed support",
        Unit::Percent,
    ),
    (
        "3D2",
        "ascof-cld-2024-25",
        "Adults in community long-term support receiving direct payments",
        Unit::Percent,
    ),
    (
        "CIN-RR",
        "cin-census-2024-25",
        "Referrals to children's social care within 12 months of a previous referral",
        Unit::Percent,
    ),
];

const FUNDING_UNMAPPED: &str = "service funding not recorded or not mappable";
const PERMANENCE_UNMAPPED: &str = "placement permanence not recorded or not mappable";
const MECHANISM_UNMAPPED: &str = "delivery mechanism not recorded or not mappable";
const AREA_UNMAPPED: &str = "referral service area not recorded or not mappable";
use super::indicators::{AFTER_DEATH, ENDS_BEFORE_START};

/// Every reason the national measures exclude for, as published (each is listed in
/// `docs/national-definitions.md`; the identity reason is the local measures').
pub const EXCLUSION_REASONS: [&str; 6] = [
    FUNDING_UNMAPPED,
    PERMANENCE_UNMAPPED,
    MECHANISM_UNMAPPED,
    AREA_UNMAPPED,
    ENDS_BEFORE_START,
    AFTER_DEATH,
];

/// The national measures' tallies of one authority for one period.
#[derive(Debug, Default)]
pub struct NationalTallies {
    pub by_id: BTreeMap<&'static str, Tally>,
}

impl NationalTallies {
    fn tally(&mut self, id: &'static str) -> &mut Tally {
        self.by_id.entry(id).or_default()
    }
    fn exclude(&mut self, id: &'static str, reason: &'static str) {
        *self.tally(id).excluded.entry(reason).or_default() += 1;
    }

    /// Add one person (people awaiting a data steward are left out, as for the local
    /// measures, and counted in each measure's exclusions).
    pub fn add(&mut self, p: &PersonData, demo: &Demographics, period: Period) {
        for (id, ..) in NATIONAL_MEASURES {
            self.tally(id);
        }
        if !p.under_review {
            self.add_records(p, demo, period);
            return;
        }
        let mut own = NationalTallies::default();
        own.add_records(p, demo, period);
        super::indicators::exclude_under_review(&mut self.by_id, own.by_id, &["2B", "2C"]);
    }

    fn add_records(&mut self, p: &PersonData, demo: &Demographics, period: Period) {
        let of = |kind: EntityKind| -> Vec<&Record> {
            p.events
                .iter()
                .map(|(_, r)| r)
                .filter(|r| r.entity == kind)
                .collect()
        };
        let services = of(EntityKind::Service);
        self.admissions(&services, demo, period);
        self.community_support(&services, demo, period);
        self.re_referrals(
            &of(EntityKind::Referral),
            &of(EntityKind::Episode),
            demo,
            period,
        );
    }

    /// 2B/2C: a council-supported permanent residential or nursing placement starting
    /// in the period, for a person not already in one the day before (a move between
    /// homes, or from residential to nursing care, is not an admission); by age at the
    /// period's end.
    fn admissions(&mut self, services: &[&Record], demo: &Demographics, period: Period) {
        let placed = |s: &Record| valid(s, demo) && permanent_placement(s) == Some(true);
        let mut admitted = false;
        for s in services.iter().filter(|s| valid(s, demo)) {
            let Some(start) = s.date("start").filter(|d| period.contains(*d)) else {
                continue;
            };
            let permanent = match permanent_placement(s) {
                Some(p) => p,
                None if residential_type(s) => {
                    self.exclude_both(PERMANENCE_UNMAPPED);
                    continue;
                }
                None => continue,
            };
            if !permanent {
                continue;
            }
            let Some(funded) = council_supported(s) else {
                self.exclude_both(FUNDING_UNMAPPED);
                continue;
            };
            let day_before = start.pred_opt().unwrap_or(start);
            let already = services.iter().any(|o| placed(o) && open_on(o, day_before));
            admitted |= funded && !already;
        }
        if !admitted {
            // A placement that cannot be placed (one of its dates is wrong), recorded
            // as starting in the period, may be this person's admission: counted as
            // excluded, not left out unseen. (With an admission counted it changes
            // nothing: a person is admitted once.)
            let unplaceable = services.iter().find_map(|s| {
                let start = s.date("start").filter(|d| period.contains(*d))?;
                let placement = permanent_placement(s).unwrap_or_else(|| residential_type(s));
                (placement && !valid(s, demo)).then(|| unplaceable_reason(s, start))
            });
            if let Some(reason) = unplaceable {
                self.exclude_both(reason);
            }
            return;
        }
        match (
            Tallies::under(demo, period.end, 18),
            Tallies::under(demo, period.end, 65),
        ) {
            (Ok(true), _) => {}
            (Ok(false), Ok(true)) => self.tally("2B").numerator += 1,
            (Ok(false), Ok(false)) => self.tally("2C").numerator += 1,
            (Err(reason), _) | (_, Err(reason)) => self.exclude_both(reason),
        }
    }

    fn exclude_both(&mut self, reason: &'static str) {
        self.exclude("2B", reason);
        self.exclude("2C", reason);
    }

    /// 3D1/3D2: adults (at the period's end) with community long-term support at any
    /// time in the period and no residential or nursing long-term support in it.
    fn community_support(&mut self, services: &[&Record], demo: &Demographics, period: Period) {
        let in_year: Vec<&Record> = services
            .iter()
            .copied()
            .filter(|s| valid(s, demo) && overlaps(s, period))
            .collect();
        let community: Vec<&Record> = in_year
            .iter()
            .copied()
            .filter(|s| s.text("support_category") == Some("LONG_TERM_COMMUNITY"))
            .collect();
        if in_year.iter().any(|s| permanent_placement(s) == Some(true)) {
            return;
        }
        if community.is_empty() {
            // Community support that cannot be placed, whose dates meet the year, may be
            // what puts this person in the measure.
            let unplaceable = services.iter().find_map(|s| {
                let start = s.date("start")?;
                let (first, last) = match s.date("end") {
                    Some(end) => (start.min(end), start.max(end)),
                    None => (start, NaiveDate::MAX),
                };
                let meets = first <= period.end && last >= period.start;
                (s.text("support_category") == Some("LONG_TERM_COMMUNITY")
                    && meets
                    && !valid(s, demo))
                .then(|| unplaceable_reason(s, start))
            });
            if let Some(reason) = unplaceable {
                if matches!(Tallies::under(demo, period.end, 18), Ok(false)) {
                    self.exclude("3D1", reason);
                    self.exclude("3D2", reason);
                }
            }
            return;
        }
        match Tallies::under(demo, period.end, 18) {
            Ok(true) => return,
            Ok(false) => {}
            Err(reason) => {
                self.exclude("3D1", reason);
                self.exclude("3D2", reason);
                return;
            }
        }
        let mechanisms: Vec<Option<&str>> = community
            .iter()
            .map(|s| s.text("delivery_mechanism"))
            .collect();
        let any = |wanted: &[&str]| mechanisms.iter().flatten().any(|m| wanted.contains(m));
        let dp = any(&["DIRECT_PAYMENT", "PART_DIRECT_PAYMENT"]);
        let sds = dp || any(&["MANAGED_PERSONAL_BUDGET"]);
        // An unknown mechanism decides only when no known one already counts.
        for (id, yes) in [("3D1", sds), ("3D2", dp)] {
            if !yes && mechanisms.iter().any(Option::is_none) {
                self.exclude(id, MECHANISM_UNMAPPED);
                continue;
            }
            let t = self.tally(id);
            t.denominator += 1;
            t.numerator += u64::from(yes);
        }
    }

    /// CIN-RR: children's social care referrals received in the period, of a child
    /// under 18 that day, not while the child's case is open; of them, those within 12
    /// months after an earlier children's referral.
    fn re_referrals(
        &mut self,
        referrals: &[&Record],
        episodes: &[&Record],
        demo: &Demographics,
        period: Period,
    ) {
        let mut children: Vec<NaiveDate> = Vec::new();
        for r in referrals {
            let Some(received) = r.date("received_at") else {
                continue;
            };
            match r.text("service_area") {
                Some("CHILDREN") => children.push(received),
                Some(_) => {}
                None if period.contains(received) => self.exclude("CIN-RR", AREA_UNMAPPED),
                None => {}
            }
        }
        for &received in children.iter().filter(|d| period.contains(**d)) {
            let open_case = episodes.iter().any(|e| {
                matches!(
                    e.text("kind"),
                    Some("CHILD_IN_NEED" | "CHILD_PROTECTION_PLAN" | "LOOKED_AFTER")
                ) && e.date("start").is_some_and(|s| s < received)
                    && e.date("end").is_none_or(|end| end >= received)
            });
            if open_case {
                continue;
            }
            match Tallies::under(demo, received, 18) {
                Err(reason) => self.exclude("CIN-RR", reason),
                Ok(false) => {}
                Ok(true) => {
                    let again = super::indicators::referred_in_year_before(&children, received);
                    let t = self.tally("CIN-RR");
                    t.denominator += 1;
                    t.numerator += u64::from(again);
                }
            }
        }
    }
}

/// A service that can be placed: a start, no end before it, not after the death.
fn valid(s: &Record, demo: &Demographics) -> bool {
    let Some(start) = s.date("start") else {
        return false;
    };
    s.date("end").is_none_or(|e| e >= start) && demo.death_date.is_none_or(|d| start <= d)
}

/// Why a service with a start date cannot be placed (see [`valid`]).
fn unplaceable_reason(s: &Record, start: NaiveDate) -> &'static str {
    if s.date("end").is_some_and(|e| e < start) {
        ENDS_BEFORE_START
    } else {
        AFTER_DEATH
    }
}

fn residential_type(s: &Record) -> bool {
    matches!(s.text("type"), Some("RESIDENTIAL" | "NURSING"))
}

/// Long-term residential or nursing support: by the support category, else by the
/// type with the permanence. `None` when neither says.
fn permanent_placement(s: &Record) -> Option<bool> {
    match s.text("support_category") {
        Some("LONG_TERM_RESIDENTIAL" | "LONG_TERM_NURSING") => return Some(true),
        Some(_) => return Some(false),
        None => {}
    }
    match s.text("permanence") {
        Some("PERMANENT") => Some(residential_type(s)),
        Some(_) => Some(false),
        None => None,
    }
}

fn council_supported(s: &Record) -> Option<bool> {
    match s.text("funding")? {
        "LOCAL_AUTHORITY" | "JOINT_CLIENT_AND_LOCAL_AUTHORITY" => Some(true),
        _ => Some(false),
    }
}

fn open_on(s: &Record, day: NaiveDate) -> bool {
    s.date("start").is_some_and(|st| st <= day) && s.date("end").is_none_or(|e| e >= day)
}

fn overlaps(s: &Record, period: Period) -> bool {
    s.date("start").is_some_and(|st| st <= period.end)
        && s.date("end").is_none_or(|e| e >= period.start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reports::indicators::tests::record;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn service(fields: &[(&'static str, &str)]) -> (String, Record) {
        record(EntityKind::Service, fields)
    }

    fn run(events: Vec<(String, Record)>, birth: &str, period: &str) -> NationalTallies {
        let p = PersonData {
            person_id: "P1".into(),
            events,
            ..PersonData::default()
        };
        let demo = Demographics {
            birth_date: Some(d(birth)),
            ..Demographics::default()
        };
        let mut t = NationalTallies::default();
        t.add(&p, &demo, Period::parse(period).unwrap());
        t
    }

    fn counts(t: &NationalTallies, id: &str) -> (u64, u64) {
        (t.by_id[id].numerator, t.by_id[id].denominator)
    }

    #[test]
    fn permanent_council_supported_admissions_by_age_at_the_period_end() {
        let placement = |cat: &str, funding: &str, start: &str, end: Option<&str>| {
            let mut f = vec![
                ("type", "RESIDENTIAL"),
                ("support_category", cat),
                ("funding", funding),
                ("start", start),
            ];
            f.extend(end.map(|e| ("end", e)));
            service(&f)
        };
        // 64 on admission, 65 by 31 March: 2C, not 2B.
        let t = run(
            vec![placement(
                "LONG_TERM_RESIDENTIAL",
                "LOCAL_AUTHORITY",
                "2024-06-01",
                None,
            )],
            "1960-01-15",
            "2024-25",
        );
        assert_eq!((counts(&t, "2B").0, counts(&t, "2C").0), (0, 1));
        // Self-funded, or a respite stay: not counted.
        for (cat, funding) in [
            ("LONG_TERM_RESIDENTIAL", "CLIENT"),
            ("SHORT_TERM_OTHER", "LOCAL_AUTHORITY"),
        ] {
            let t = run(
                vec![placement(cat, funding, "2024-06-01", None)],
                "1980-01-15",
                "2024-25",
            );
            assert_eq!(counts(&t, "2B").0, 0, "{cat} {funding}");
        }
        // A move from residential to nursing care is not an admission.
        let t = run(
            vec![
                placement(
                    "LONG_TERM_RESIDENTIAL",
                    "LOCAL_AUTHORITY",
                    "2022-01-01",
                    Some("2024-06-30"),
                ),
                placement("LONG_TERM_NURSING", "LOCAL_AUTHORITY", "2024-07-01", None),
            ],
            "1980-01-15",
            "2024-25",
        );
        assert_eq!(counts(&t, "2B").0, 0);
        // After a gap it is (not the local measure's "first ever").
        let t = run(
            vec![
                placement(
                    "LONG_TERM_RESIDENTIAL",
                    "LOCAL_AUTHORITY",
                    "2020-01-01",
                    Some("2021-06-30"),
                ),
                placement("LONG_TERM_NURSING", "LOCAL_AUTHORITY", "2024-07-01", None),
            ],
            "1980-01-15",
            "2024-25",
        );
        assert_eq!(counts(&t, "2B").0, 1);
        // Permanence from its own field; funding unknown is excluded, not guessed.
        let t = run(
            vec![service(&[
                ("type", "NURSING"),
                ("permanence", "PERMANENT"),
                ("start", "2024-06-01"),
            ])],
            "1980-01-15",
            "2024-25",
        );
        assert_eq!(counts(&t, "2B").0, 0);
        assert_eq!(t.by_id["2B"].excluded[FUNDING_UNMAPPED], 1);
        let t = run(
            vec![service(&[
                ("type", "NURSING"),
                ("funding", "LOCAL_AUTHORITY"),
                ("start", "2024-06-01"),
            ])],
            "1980-01-15",
            "2024-25",
        );
        assert_eq!(t.by_id["2B"].excluded[PERMANENCE_UNMAPPED], 1);
    }

    #[test]
    fn community_support_over_the_whole_year_and_residential_care_first() {
        let community = |ty: &str, mech: &str, start: &str, end: Option<&str>| {
            let mut f = vec![
                ("type", ty),
                ("support_category", "LONG_TERM_COMMUNITY"),
                ("delivery_mechanism", mech),
                ("start", start),
            ];
            f.extend(end.map(|e| ("end", e)));
            service(&f)
        };
        // Supported living (OTHER in the local service types), ended in June: counted
        // over the year, where the local measure's 31 March snapshot would not.
        let t = run(
            vec![community(
                "OTHER",
                "DIRECT_PAYMENT",
                "2023-01-01",
                Some("2024-06-30"),
            )],
            "1950-01-01",
            "2024-25",
        );
        assert_eq!(counts(&t, "3D1"), (1, 1));
        assert_eq!(counts(&t, "3D2"), (1, 1));
        let t = run(
            vec![community(
                "HOME_CARE",
                "MANAGED_PERSONAL_BUDGET",
                "2024-05-01",
                None,
            )],
            "1950-01-01",
            "2024-25",
        );
        assert_eq!((counts(&t, "3D1"), counts(&t, "3D2")), ((1, 1), (0, 1)));
        // Also in a care home in the year: that setting, not the community.
        let t = run(
            vec![
                community(
                    "HOME_CARE",
                    "DIRECT_PAYMENT",
                    "2023-05-01",
                    Some("2024-08-01"),
                ),
                service(&[
                    ("type", "NURSING"),
                    ("support_category", "LONG_TERM_NURSING"),
                    ("funding", "LOCAL_AUTHORITY"),
                    ("start", "2024-08-02"),
                ]),
            ],
            "1950-01-01",
            "2024-25",
        );
        assert_eq!(counts(&t, "3D1"), (0, 0));
    }

    #[test]
    fn cin_re_referrals_count_childrens_referrals_not_while_a_case_is_open() {
        let referral = |at: &str, area: &str| {
            record(
                EntityKind::Referral,
                &[("received_at", at), ("service_area", area)],
            )
        };
        let t = run(
            vec![
                referral("2024-01-10", "CHILDREN"),
                referral("2024-09-10", "CHILDREN"),
            ],
            "2012-05-05",
            "2024-25",
        );
        assert_eq!(counts(&t, "CIN-RR"), (1, 1));
        // The earlier one in an adults' system does not count.
        let t = run(
            vec![
                referral("2024-01-10", "ADULTS"),
                referral("2024-09-10", "CHILDREN"),
            ],
            "2012-05-05",
            "2024-25",
        );
        assert_eq!(counts(&t, "CIN-RR"), (0, 1));
        // Received while a child in need episode is open: not a new referral.
        let mut events = vec![
            referral("2024-01-10", "CHILDREN"),
            referral("2024-09-10", "CHILDREN"),
        ];
        events.push(record(
            EntityKind::Episode,
            &[("kind", "CHILD_IN_NEED"), ("start", "2024-01-20")],
        ));
        let t = run(events, "2012-05-05", "2024-25");
        assert_eq!(counts(&t, "CIN-RR"), (0, 0));
        // A referral that does not say its service is excluded.
        let t = run(
            vec![record(
                EntityKind::Referral,
                &[("received_at", "2024-09-10")],
            )],
            "2012-05-05",
            "2024-25",
        );
        assert_eq!(t.by_id["CIN-RR"].excluded[AREA_UNMAPPED], 1);
    }

    #[test]
    fn services_that_cannot_be_placed_are_counted_as_excluded_where_they_could_count() {
        let placement = |start: &str, end: Option<&str>| {
            let mut f = vec![
                ("type", "RESIDENTIAL"),
                ("support_category", "LONG_TERM_RESIDENTIAL"),
                ("funding", "LOCAL_AUTHORITY"),
                ("start", start),
            ];
            f.extend(end.map(|e| ("end", e)));
            service(&f)
        };
        // Ends before it starts, starting in the period: maybe the admission.
        let t = run(
            vec![placement("2024-06-01", Some("2024-05-01"))],
            "1980-01-15",
            "2024-25",
        );
        assert_eq!(counts(&t, "2B").0, 0);
        assert_eq!(t.by_id["2B"].excluded[ENDS_BEFORE_START], 1);
        assert_eq!(t.by_id["2C"].excluded[ENDS_BEFORE_START], 1);
        // The same beside a valid admission changes nothing: no exclusion.
        let t = run(
            vec![
                placement("2024-06-01", Some("2024-05-01")),
                placement("2024-09-01", None),
            ],
            "1980-01-15",
            "2024-25",
        );
        assert_eq!(counts(&t, "2B").0, 1);
        assert!(t.by_id["2B"].excluded.is_empty());
        // Starting in another period: not this period's to count.
        let t = run(
            vec![placement("2023-06-01", Some("2023-05-01"))],
            "1980-01-15",
            "2024-25",
        );
        assert!(t.by_id["2B"].excluded.is_empty());
        // Starts after the death.
        let p = PersonData {
            person_id: "P1".into(),
            events: vec![placement("2024-06-01", None)],
            ..PersonData::default()
        };
        let demo = Demographics {
            birth_date: Some(d("1980-01-15")),
            death_date: Some(d("2024-05-01")),
            ..Demographics::default()
        };
        let mut t = NationalTallies::default();
        t.add(&p, &demo, Period::parse("2024-25").unwrap());
        assert_eq!(t.by_id["2B"].excluded[AFTER_DEATH], 1);
        // Community support ending before it starts, its dates meeting the year.
        let community = service(&[
            ("type", "HOME_CARE"),
            ("support_category", "LONG_TERM_COMMUNITY"),
            ("delivery_mechanism", "DIRECT_PAYMENT"),
            ("start", "2025-02-01"),
            ("end", "2024-03-01"),
        ]);
        let t = run(vec![community.clone()], "1980-01-15", "2024-25");
        assert_eq!(counts(&t, "3D1"), (0, 0));
        assert_eq!(t.by_id["3D1"].excluded[ENDS_BEFORE_START], 1);
        assert_eq!(t.by_id["3D2"].excluded[ENDS_BEFORE_START], 1);
        // A child is in neither measure: nothing to exclude.
        let t = run(vec![community], "2015-01-15", "2024-25");
        assert!(t.by_id["3D1"].excluded.is_empty());
    }

    #[test]
    fn every_exclusion_reason_is_documented() {
        let doc = include_str!("../../docs/national-definitions.md");
        for reason in EXCLUSION_REASONS {
            assert!(
                doc.contains(&format!("`{reason}`")),
                "{reason} in docs/national-definitions.md"
            );
        }
    }
}
