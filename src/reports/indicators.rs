//! Performance indicators, per authority and period (definitions in issue 5 and in
//! `config/README.md`). Each person's records add to the tallies once; records that
//! cannot be placed are counted as excluded, with the reason, so a department can see
//! why its figure differs.

use std::collections::BTreeMap;

use chrono::{Months, NaiveDate};
use escr_connector::{EntityKind, Record};
use serde::Serialize;

use super::calendar::BankHolidays;
use super::extract::{Demographics, PersonData};
use super::{age_on, Period};

/// The definitions of [`INDICATORS`], as named in outputs: the local measures of
/// `config/README.md`. National methods are named for their own returns.
pub const LOCAL_DEFINITION: &str = "escr-local-v1";

/// (id, name, unit) of every indicator, in output order.
pub const INDICATORS: [(&str, &str, Unit); 8] = [
    ("1", "Children re-referred within 12 months", Unit::Percent),
    (
        "2",
        "Children's assessments completed within 45 working days",
        Unit::Percent,
    ),
    (
        "3",
        "Child protection plans lasting two years or more",
        Unit::Percent,
    ),
    (
        "4",
        "Second or subsequent child protection plans",
        Unit::Percent,
    ),
    (
        "5",
        "Adults in long-term community support receiving self-directed support",
        Unit::Percent,
    ),
    (
        "5b",
        "Adults in long-term community support receiving direct payments",
        Unit::Percent,
    ),
    (
        "6a",
        "Permanent admissions to residential and nursing care, aged 18-64",
        Unit::Per100k,
    ),
    (
        "6b",
        "Permanent admissions to residential and nursing care, aged 65 and over",
        Unit::Per100k,
    ),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, async_graphql::Enum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Unit {
    /// numerator / denominator x 100.
    Percent,
    /// numerator / population x 100,000.
    #[graphql(name = "PER_100K")]
    #[serde(rename = "PER_100K")]
    Per100k,
}

/// Raw counts for one indicator.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    pub numerator: u64,
    pub denominator: u64,
    /// Records (or people) left out for data quality, by reason.
    pub excluded: BTreeMap<&'static str, u64>,
}

/// Fold what a person awaiting a data steward would have added (`own`) into `into` as
/// exclusions only: their data-quality exclusions as they are, and where they would
/// have counted, the measure's denominator (its numerator for the measures in
/// `by_numerator`, whose denominator is the population) under [`UNDER_REVIEW`].
pub(super) fn exclude_under_review(
    into: &mut BTreeMap<&'static str, Tally>,
    own: BTreeMap<&'static str, Tally>,
    by_numerator: &[&str],
) {
    for (id, t) in own {
        let mine = into.entry(id).or_default();
        for (reason, n) in t.excluded {
            *mine.excluded.entry(reason).or_default() += n;
        }
        let would_count = match by_numerator.contains(&id) {
            true => t.numerator,
            false => t.denominator,
        };
        if would_count > 0 {
            *mine.excluded.entry(UNDER_REVIEW).or_default() += would_count;
        }
    }
}

const BIRTH_MISSING: &str = "birth date missing";
const AGE_UNCERTAIN: &str = "birth date estimated: age band uncertain";
pub const UNDER_REVIEW: &str = "identity awaiting a data steward (possible duplicate)";
const ASSESSMENT_TYPE_UNMAPPED: &str = "assessment type not recorded or not mappable";
const ASSESSMENT_START_MISSING: &str = "assessment start date missing";
const AUTHORISED_BEFORE_START: &str = "assessment authorised before it started";
const OUTSIDE_CALENDAR: &str = "date outside the bank-holiday calendar";
const PLAN_ENDS_BEFORE_START: &str = "plan ends before it starts";
const TYPE_UNMAPPED: &str = "service type not recorded or not mappable";
/// Also the national measures' reasons for a service that cannot be placed.
pub(super) const ENDS_BEFORE_START: &str = "service ends before it starts";
pub(super) const AFTER_DEATH: &str = "service starts after the person's death";
const MECHANISM_UNMAPPED: &str = "delivery mechanism not recorded or not mappable";

/// Every reason a record or person is excluded for, as published (each is listed in
/// `config/README.md`).
pub const EXCLUSION_REASONS: [&str; 12] = [
    BIRTH_MISSING,
    AGE_UNCERTAIN,
    UNDER_REVIEW,
    ASSESSMENT_TYPE_UNMAPPED,
    ASSESSMENT_START_MISSING,
    AUTHORISED_BEFORE_START,
    OUTSIDE_CALENDAR,
    PLAN_ENDS_BEFORE_START,
    TYPE_UNMAPPED,
    ENDS_BEFORE_START,
    AFTER_DEATH,
    MECHANISM_UNMAPPED,
];

/// The tallies of one authority for one period.
#[derive(Debug, Default)]
pub struct Tallies {
    pub by_id: BTreeMap<&'static str, Tally>,
    /// The national methods' measures (published where the authority's systems hold
    /// what they need).
    pub national: super::national::NationalTallies,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.numerator += other.numerator;
        self.denominator += other.denominator;
        for (reason, n) in other.excluded {
            *self.excluded.entry(reason).or_default() += n;
        }
    }
}

/// Add `other`'s tallies into `mine`, measure by measure.
fn merge_tallies(mine: &mut BTreeMap<&'static str, Tally>, other: BTreeMap<&'static str, Tally>) {
    for (id, t) in other {
        mine.entry(id).or_default().merge(t);
    }
}

impl Tallies {
    /// Add another group of people's tallies (people are counted independently).
    pub fn merge(&mut self, other: Tallies) {
        merge_tallies(&mut self.by_id, other.by_id);
        merge_tallies(&mut self.national.by_id, other.national.by_id);
    }

    fn tally(&mut self, id: &'static str) -> &mut Tally {
        self.by_id.entry(id).or_default()
    }
    fn exclude(&mut self, id: &'static str, reason: &'static str) {
        *self.tally(id).excluded.entry(reason).or_default() += 1;
    }

    /// Add one person's records. A person with a record in the linkage review queue
    /// may be one person split in two, or two joined: until a data steward decides,
    /// they add nothing to any indicator, and what they would have added (each
    /// indicator's denominator; 6a/6b's numerator) is counted as excluded under
    /// [`UNDER_REVIEW`]. Their data-quality exclusions are counted as for anyone.
    pub fn add(
        &mut self,
        p: &PersonData,
        demo: &Demographics,
        period: Period,
        calendar: &BankHolidays,
    ) {
        for id in INDICATORS.map(|i| i.0) {
            self.tally(id);
        }
        self.national.add(p, demo, period);
        if !p.under_review {
            self.add_records(p, demo, period, calendar);
            return;
        }
        let mut own = Tallies::default();
        own.add_records(p, demo, period, calendar);
        exclude_under_review(&mut self.by_id, own.by_id, &["6a", "6b"]);
    }

    fn add_records(
        &mut self,
        p: &PersonData,
        demo: &Demographics,
        period: Period,
        calendar: &BankHolidays,
    ) {
        let of = |kind: EntityKind| {
            p.events
                .iter()
                .map(|(_, r)| r)
                .filter(move |r| r.entity == kind)
        };
        self.re_referrals(of(EntityKind::Referral).collect(), demo, period);
        self.assessments(of(EntityKind::Assessment).collect(), period, calendar);
        let plans: Vec<&Record> = of(EntityKind::Episode)
            .filter(|r| r.text("kind") == Some("CHILD_PROTECTION_PLAN"))
            .collect();
        self.long_plans(&plans, period);
        self.repeat_plans(&plans, period);
        let services: Vec<&Record> = of(EntityKind::Service).collect();
        self.self_directed_support(&services, demo, period);
        self.admissions(&services, demo, period);
    }

    /// Is the person's age at `on` below `threshold`? `Err` with the reason when it
    /// cannot be known.
    pub(super) fn under(
        demo: &Demographics,
        on: NaiveDate,
        threshold: i32,
    ) -> Result<bool, &'static str> {
        let birth = demo.birth_date.ok_or(BIRTH_MISSING)?;
        if demo.birth_estimated {
            // Recorded as 1 January of the right year at best: the true birthday is
            // somewhere in that year.
            let first =
                NaiveDate::from_ymd_opt(chrono::Datelike::year(&birth), 1, 1).unwrap_or(birth);
            let last =
                NaiveDate::from_ymd_opt(chrono::Datelike::year(&birth), 12, 31).unwrap_or(birth);
            if (age_on(first, on) < threshold) != (age_on(last, on) < threshold) {
                return Err(AGE_UNCERTAIN);
            }
        }
        Ok(age_on(birth, on) < threshold)
    }

    /// 1: referrals received in the period of a child (under 18 that day) who had
    /// another referral received on an earlier date within the 12 months before.
    fn re_referrals(&mut self, referrals: Vec<&Record>, demo: &Demographics, period: Period) {
        let dates: Vec<NaiveDate> = referrals
            .iter()
            .filter_map(|r| r.date("received_at"))
            .collect();
        for &received in dates.iter().filter(|d| period.contains(**d)) {
            match Self::under(demo, received, 18) {
                Err(reason) => self.exclude("1", reason),
                Ok(false) => {}
                Ok(true) => {
                    let again = referred_in_year_before(&dates, received);
                    let t = self.tally("1");
                    t.denominator += 1;
                    t.numerator += u64::from(again);
                }
            }
        }
    }

    /// 2: children's (CHILD_AND_FAMILY) assessments authorised in the period, done in at
    /// most 45 working days from start to authorisation.
    fn assessments(&mut self, assessments: Vec<&Record>, period: Period, calendar: &BankHolidays) {
        for a in assessments {
            let Some(authorised) = a.date("authorised").filter(|d| period.contains(*d)) else {
                continue;
            };
            match a.text("type") {
                Some("CHILD_AND_FAMILY") => {}
                Some(_) => continue,
                None => {
                    self.exclude("2", ASSESSMENT_TYPE_UNMAPPED);
                    continue;
                }
            }
            let Some(started) = a.date("started") else {
                self.exclude("2", ASSESSMENT_START_MISSING);
                continue;
            };
            if authorised < started {
                self.exclude("2", AUTHORISED_BEFORE_START);
                continue;
            }
            match calendar.working_days_after(started, authorised) {
                Err(_) => self.exclude("2", OUTSIDE_CALENDAR),
                Ok(days) => {
                    let t = self.tally("2");
                    t.denominator += 1;
                    t.numerator += u64::from(days <= 45);
                }
            }
        }
    }

    /// 3: child protection plans ending in the period that lasted two years or more.
    fn long_plans(&mut self, plans: &[&Record], period: Period) {
        for plan in plans {
            let Some(end) = plan.date("end").filter(|d| period.contains(*d)) else {
                continue;
            };
            let Some(start) = plan.date("start") else {
                continue;
            };
            if end < start {
                self.exclude("3", PLAN_ENDS_BEFORE_START);
                continue;
            }
            let two_years = start
                .checked_add_months(Months::new(24))
                .is_some_and(|d| d <= end);
            let t = self.tally("3");
            t.denominator += 1;
            t.numerator += u64::from(two_years);
        }
    }

    /// 4: children starting a plan in the period who had a plan starting earlier.
    ///
    /// A plan ending before it starts cannot be placed (one of its dates is wrong): it
    /// is neither a plan starting in the period nor an earlier plan, and is counted as
    /// excluded where counting it, with its start date, would change the person's
    /// figure (add or remove them, or make them a repeat).
    fn repeat_plans(&mut self, plans: &[&Record], period: Period) {
        let mut valid: Vec<NaiveDate> = Vec::new();
        let mut invalid: Vec<NaiveDate> = Vec::new();
        for plan in plans {
            let Some(start) = plan.date("start") else {
                continue;
            };
            if plan.date("end").is_some_and(|end| end < start) {
                invalid.push(start);
            } else {
                valid.push(start);
            }
        }
        let figure = Self::repeat_figure(&valid, period);
        for &start in &invalid {
            let mut with = valid.clone();
            with.push(start);
            if Self::repeat_figure(&with, period) != figure {
                self.exclude("4", PLAN_ENDS_BEFORE_START);
            }
        }
        if let Some(repeat) = figure {
            let t = self.tally("4");
            t.denominator += 1;
            t.numerator += u64::from(repeat);
        }
    }

    /// Whether a person with plans starting on `starts` starts one in the period
    /// (`Some`), and whether it is a repeat.
    fn repeat_figure(starts: &[NaiveDate], period: Period) -> Option<bool> {
        let mut in_period = starts.iter().filter(|d| period.contains(**d)).peekable();
        in_period.peek()?;
        Some(in_period.any(|s| starts.iter().any(|e| e < s)))
    }

    /// 5 and 5b: adults alive and in long-term community support (home or day care) on
    /// the last day of the period; of them, those with a personal budget or direct
    /// payment (5), direct payment only (5b).
    fn self_directed_support(&mut self, services: &[&Record], demo: &Demographics, period: Period) {
        let day = period.end;
        if demo.death_date.is_some_and(|d| d <= day) {
            return;
        }
        let mut candidates = Vec::new();
        for s in services {
            let Some(start) = s.date("start").filter(|d| *d <= day) else {
                continue;
            };
            let ends_before_start = s.date("end").is_some_and(|e| e < start);
            let open = !ends_before_start && s.date("end").is_none_or(|e| e >= day);
            match s.text("type") {
                Some("HOME_CARE" | "DAY_CARE") => {}
                Some(_) => continue,
                // Only a service that may be open on the day (open, or with a wrong
                // date) can change the figure, whatever its type.
                None if open || ends_before_start => {
                    for id in ["5", "5b"] {
                        self.exclude(id, TYPE_UNMAPPED);
                    }
                    continue;
                }
                None => continue,
            }
            if ends_before_start {
                for id in ["5", "5b"] {
                    self.exclude(id, ENDS_BEFORE_START);
                }
                continue;
            }
            if open {
                candidates.push(*s);
            }
        }
        if candidates.is_empty() {
            return;
        }
        match Self::under(demo, day, 18) {
            Err(reason) => {
                for id in ["5", "5b"] {
                    self.exclude(id, reason);
                }
                return;
            }
            Ok(true) => return,
            Ok(false) => {}
        }
        let mechanisms: Vec<Option<&str>> = candidates
            .iter()
            .map(|s| s.text("delivery_mechanism"))
            .collect();
        if mechanisms.iter().any(Option::is_none) {
            for id in ["5", "5b"] {
                self.exclude(id, MECHANISM_UNMAPPED);
            }
            return;
        }
        let any = |wanted: &[&str]| mechanisms.iter().flatten().any(|m| wanted.contains(m));
        let sds = any(&[
            "DIRECT_PAYMENT",
            "PART_DIRECT_PAYMENT",
            "MANAGED_PERSONAL_BUDGET",
        ]);
        let dp = any(&["DIRECT_PAYMENT", "PART_DIRECT_PAYMENT"]);
        for (id, yes) in [("5", sds), ("5b", dp)] {
            let t = self.tally(id);
            t.denominator += 1;
            t.numerator += u64::from(yes);
        }
    }

    /// 6a/6b: people whose first-ever residential or nursing service starts in the
    /// period, by age then (18-64, 65+). The denominator is the population (config).
    ///
    /// Records that cannot be placed (ending before they start, starting after the
    /// person's death, a type that does not map) are left out, and counted as excluded
    /// in each period where they could change the person's figure: with their start
    /// date, or, for a start after the death (one of the two dates is wrong, so the
    /// true start is no later than the one recorded), in each period up to the one it
    /// is recorded in where the person has no earlier admission.
    fn admissions(&mut self, services: &[&Record], demo: &Demographics, period: Period) {
        let mut first: Option<NaiveDate> = None;
        let mut doubtful: Vec<(NaiveDate, &'static str)> = Vec::new();
        for s in services {
            let Some(start) = s.date("start") else {
                continue;
            };
            match s.text("type") {
                Some("RESIDENTIAL" | "NURSING") => {}
                Some(_) => continue,
                None => {
                    doubtful.push((start, TYPE_UNMAPPED));
                    continue;
                }
            }
            if s.date("end").is_some_and(|e| e < start) {
                doubtful.push((start, ENDS_BEFORE_START));
            } else if demo.death_date.is_some_and(|d| start > d) {
                doubtful.push((start, AFTER_DEATH));
            } else {
                first = Some(first.map_or(start, |f| f.min(start)));
            }
        }
        let counted = Self::admission_band(demo, first, period);
        for (start, reason) in doubtful {
            let decides = if reason == AFTER_DEATH {
                period.start <= start && first.is_none_or(|f| f >= period.start)
            } else {
                Self::admission_band(demo, Some(first.map_or(start, |f| f.min(start))), period)
                    != counted
            };
            if !decides {
                continue;
            }
            let on = start.min(period.end);
            let band = match counted {
                Ok(Some(band)) => band,
                _ => match Self::under(demo, on, 65) {
                    Ok(false) => "6b",
                    _ => "6a",
                },
            };
            self.exclude(band, reason);
        }
        match counted {
            Ok(Some(band)) => self.tally(band).numerator += 1,
            Ok(None) => {}
            Err(reason) => {
                self.exclude("6a", reason);
                self.exclude("6b", reason);
            }
        }
    }

    /// The band a first admission on `first` counts in for the period, if any; `Err`
    /// when the age cannot be known.
    fn admission_band(
        demo: &Demographics,
        first: Option<NaiveDate>,
        period: Period,
    ) -> Result<Option<&'static str>, &'static str> {
        let Some(first) = first.filter(|d| period.contains(*d)) else {
            return Ok(None);
        };
        match (Self::under(demo, first, 18)?, Self::under(demo, first, 65)?) {
            (true, _) => Ok(None),
            (false, true) => Ok(Some("6a")),
            (false, false) => Ok(Some("6b")),
        }
    }
}

/// Whether any of `earlier` falls in the 12 months before `received` (a re-referral,
/// in the local measure and the CIN census alike).
pub(crate) fn referred_in_year_before(earlier: &[NaiveDate], received: NaiveDate) -> bool {
    let since = received
        .checked_sub_months(Months::new(12))
        .unwrap_or(received);
    earlier.iter().any(|&d| d < received && d >= since)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use escr_connector::mapping::FieldValue;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    /// A record of `entity` with these fields (dates where they parse, else text).
    pub(in crate::reports) fn record(
        entity: EntityKind,
        fields: &[(&'static str, &str)],
    ) -> (String, Record) {
        let mut r = Record {
            entity,
            local_id: "1".into(),
            person_id: Some("1".into()),
            last_updated: None,
            fields: BTreeMap::new(),
            labels: Default::default(),
        };
        for (k, v) in fields {
            let value = NaiveDate::parse_from_str(v, "%Y-%m-%d")
                .map(FieldValue::Date)
                .unwrap_or_else(|_| FieldValue::Text(v.to_string()));
            r.fields.insert(k, value);
        }
        ("casetrak".into(), r)
    }

    fn calendar() -> BankHolidays {
        BankHolidays::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/bank-holidays.toml"),
        )
        .unwrap()
    }

    fn run(events: Vec<(String, Record)>, birth: &str) -> Tallies {
        let p = PersonData {
            person_id: "P1".into(),
            events,
            ..PersonData::default()
        };
        let demo = Demographics {
            birth_date: Some(d(birth)),
            ..Demographics::default()
        };
        let mut t = Tallies::default();
        t.add(&p, &demo, Period::parse("2025-26").unwrap(), &calendar());
        t
    }

    /// One person in `period`: born `birth`, maybe dead, maybe awaiting a steward.
    fn run_in(
        events: Vec<(String, Record)>,
        demo: Demographics,
        under_review: bool,
        period: &str,
    ) -> Tallies {
        let p = PersonData {
            person_id: "P1".into(),
            events,
            under_review,
            ..PersonData::default()
        };
        let mut t = Tallies::default();
        t.add(&p, &demo, Period::parse(period).unwrap(), &calendar());
        t
    }

    fn born(birth: &str, death: Option<&str>) -> Demographics {
        Demographics {
            birth_date: Some(d(birth)),
            death_date: death.map(d),
            ..Demographics::default()
        }
    }

    fn service(ty: Option<&str>, start: &str, end: Option<&str>) -> (String, Record) {
        let mut f = vec![
            ("delivery_mechanism", "COUNCIL_COMMISSIONED"),
            ("start", start),
        ];
        f.extend(ty.map(|t| ("type", t)));
        f.extend(end.map(|e| ("end", e)));
        record(EntityKind::Service, &f)
    }

    type Reasons<'a> = Vec<(&'a str, u64)>;

    /// (6a numerator, 6b numerator, 6a exclusions, 6b exclusions) for one period.
    fn admissions(t: &Tallies) -> (u64, u64, Reasons<'_>, Reasons<'_>) {
        let ex = |id: &str| {
            t.by_id[id]
                .excluded
                .iter()
                .map(|(k, v)| (*k, *v))
                .collect::<Vec<_>>()
        };
        (
            t.by_id["6a"].numerator,
            t.by_id["6b"].numerator,
            ex("6a"),
            ex("6b"),
        )
    }

    fn counts(t: &Tallies, id: &str) -> (u64, u64) {
        let x = &t.by_id[id];
        (x.numerator, x.denominator)
    }

    #[test]
    fn a_re_referral_is_within_twelve_calendar_months() {
        let r = |at: &str| record(EntityKind::Referral, &[("received_at", at)]);
        // Exactly 12 months before counts; a day more does not.
        let t = run(vec![r("2024-06-10"), r("2025-06-10")], "2015-01-01");
        assert_eq!(counts(&t, "1"), (1, 1));
        let t = run(vec![r("2024-06-09"), r("2025-06-10")], "2015-01-01");
        assert_eq!(counts(&t, "1"), (0, 1));
        // An adult's referral is not a child's.
        let t = run(vec![r("2025-06-10")], "2000-01-01");
        assert_eq!(counts(&t, "1"), (0, 0));
    }

    #[test]
    fn working_days_across_a_bank_holiday_decide_indicator_two() {
        let a = |start: &str, auth: &str| {
            record(
                EntityKind::Assessment,
                &[
                    ("type", "CHILD_AND_FAMILY"),
                    ("started", start),
                    ("authorised", auth),
                ],
            )
        };
        // From Wed 2 Apr 2025 the 45th working day is Tue 10 Jun 2025 (Good Friday,
        // Easter Monday, the early May and spring bank holidays skipped); without them
        // it would be Tue 3 Jun.
        let t = run(vec![a("2025-04-02", "2025-06-10")], "2015-01-01");
        assert_eq!(counts(&t, "2"), (1, 1));
        let t = run(vec![a("2025-04-02", "2025-06-11")], "2015-01-01");
        assert_eq!(counts(&t, "2"), (0, 1));
        let t = run(vec![a("2025-06-09", "2025-06-02")], "2015-01-01");
        assert_eq!(counts(&t, "2"), (0, 0));
        assert_eq!(
            t.by_id["2"].excluded["assessment authorised before it started"],
            1
        );
    }

    #[test]
    fn plans_of_exactly_two_years_count_and_repeats_are_per_child() {
        let plan = |start: &str, end: Option<&str>| {
            let mut f = vec![("kind", "CHILD_PROTECTION_PLAN"), ("start", start)];
            if let Some(e) = end {
                f.push(("end", e));
            }
            record(EntityKind::Episode, &f)
        };
        let t = run(vec![plan("2023-05-01", Some("2025-05-01"))], "2015-01-01");
        assert_eq!(counts(&t, "3"), (1, 1));
        let t = run(vec![plan("2023-05-02", Some("2025-05-01"))], "2015-01-01");
        assert_eq!(counts(&t, "3"), (0, 1));
        let t = run(
            vec![
                plan("2023-05-02", Some("2024-01-01")),
                plan("2025-05-01", None),
                plan("2025-12-01", None),
            ],
            "2015-01-01",
        );
        assert_eq!(counts(&t, "4"), (1, 1));
    }

    #[test]
    fn support_on_the_last_day_and_first_admissions() {
        let s = |ty: &str, mech: &str, start: &str| {
            record(
                EntityKind::Service,
                &[("type", ty), ("delivery_mechanism", mech), ("start", start)],
            )
        };
        let t = run(
            vec![s("HOME_CARE", "PART_DIRECT_PAYMENT", "2025-01-01")],
            "1950-06-01",
        );
        assert_eq!(counts(&t, "5"), (1, 1));
        assert_eq!(counts(&t, "5b"), (1, 1));
        let t = run(
            vec![s("DAY_CARE", "MANAGED_PERSONAL_BUDGET", "2025-01-01")],
            "1950-06-01",
        );
        assert_eq!(counts(&t, "5b"), (0, 1));
        // First-ever residential care in the period, aged 75: 6b; one earlier: neither.
        let t = run(
            vec![s("NURSING", "COUNCIL_COMMISSIONED", "2025-07-01")],
            "1950-06-01",
        );
        assert_eq!((counts(&t, "6a").0, counts(&t, "6b").0), (0, 1));
        let t = run(
            vec![
                s("NURSING", "COUNCIL_COMMISSIONED", "2025-07-01"),
                s("RESIDENTIAL", "DIRECT_PAYMENT", "2020-01-01"),
            ],
            "1950-06-01",
        );
        assert_eq!((counts(&t, "6a").0, counts(&t, "6b").0), (0, 0));
    }

    #[test]
    fn a_plan_ending_before_it_starts_is_no_plan_for_indicator_four() {
        let plan = |start: &str, end: Option<&str>| {
            let mut f = vec![("kind", "CHILD_PROTECTION_PLAN"), ("start", start)];
            f.extend(end.map(|e| ("end", e)));
            record(EntityKind::Episode, &f)
        };
        let child = || born("2015-01-01", None);
        let excluded = |t: &Tallies| t.by_id["4"].excluded.get(PLAN_ENDS_BEFORE_START).copied();
        // Recorded as starting in 2023 and ending in 2022, before a plan in the period:
        // not an earlier plan, so the child is not a repeat; it would have made them
        // one, so it is counted.
        let t = run_in(
            vec![
                plan("2023-05-01", Some("2022-01-01")),
                plan("2025-06-01", None),
            ],
            child(),
            false,
            "2025-26",
        );
        assert_eq!((counts(&t, "4"), excluded(&t)), ((0, 1), Some(1)));
        // Alone in the period it starts no plan: the child is not in the figure.
        let t = run_in(
            vec![plan("2025-09-01", Some("2025-06-01"))],
            child(),
            false,
            "2025-26",
        );
        assert_eq!((counts(&t, "4"), excluded(&t)), ((0, 0), Some(1)));
        // Where a valid earlier plan already decides, it changes nothing and is not
        // counted.
        let t = run_in(
            vec![
                plan("2020-01-01", Some("2021-01-01")),
                plan("2023-05-01", Some("2022-01-01")),
                plan("2025-06-01", None),
            ],
            child(),
            false,
            "2025-26",
        );
        assert_eq!((counts(&t, "4"), excluded(&t)), ((1, 1), None));
    }

    #[test]
    fn a_service_type_that_does_not_map_is_excluded_from_five_only_if_it_may_be_open() {
        let untyped = |start: &str, end: Option<&str>| {
            let mut f = vec![("delivery_mechanism", "DIRECT_PAYMENT"), ("start", start)];
            f.extend(end.map(|e| ("end", e)));
            record(EntityKind::Service, &f)
        };
        let home_care = || {
            record(
                EntityKind::Service,
                &[
                    ("type", "HOME_CARE"),
                    ("delivery_mechanism", "COUNCIL_COMMISSIONED"),
                    ("start", "2024-01-01"),
                ],
            )
        };
        let excluded = |t: &Tallies| t.by_id["5"].excluded.get(TYPE_UNMAPPED).copied();
        let adult = || born("1960-05-05", None);
        // Ended a year before the last day: whatever it was, it was not open then.
        let t = run_in(
            vec![untyped("2023-01-01", Some("2025-03-01")), home_care()],
            adult(),
            false,
            "2025-26",
        );
        assert_eq!((counts(&t, "5"), excluded(&t)), ((0, 1), None));
        // Open on the day, or with dates that cannot both be right: it may decide.
        for end in [None, Some("2026-03-31"), Some("2024-01-01")] {
            let t = run_in(
                vec![untyped("2025-01-01", end), home_care()],
                adult(),
                false,
                "2025-26",
            );
            assert_eq!(
                (counts(&t, "5"), excluded(&t)),
                ((0, 1), Some(1)),
                "{end:?}"
            );
        }
    }

    #[test]
    fn a_residential_record_ending_before_it_starts_is_not_the_first_admission() {
        // The shape of CaseTrak package 618 (start 2020-06-06, end 2020-04-15) before
        // the person's real first admission (2022-11-10), aged 52.
        let events = || {
            vec![
                service(Some("RESIDENTIAL"), "2020-06-06", Some("2020-04-15")),
                service(Some("RESIDENTIAL"), "2022-11-10", None),
            ]
        };
        let person = || born("1970-03-15", None);
        let t = run_in(events(), person(), false, "2022-23");
        assert_eq!(admissions(&t), (1, 0, vec![(ENDS_BEFORE_START, 1)], vec![]));
        // Where it would have been the first admission, it is counted as excluded.
        let t = run_in(events(), person(), false, "2020-21");
        assert_eq!(admissions(&t), (0, 0, vec![(ENDS_BEFORE_START, 1)], vec![]));
        // Where it could change nothing, nothing is said.
        let t = run_in(events(), person(), false, "2024-25");
        assert_eq!(admissions(&t), (0, 0, vec![], vec![]));
    }

    #[test]
    fn a_service_whose_type_does_not_map_is_excluded_where_it_decides() {
        let events = vec![
            service(None, "2021-01-05", None),
            service(Some("NURSING"), "2022-11-10", None),
        ];
        let t = run_in(events, born("1950-07-01", None), false, "2022-23");
        assert_eq!(admissions(&t), (0, 1, vec![], vec![(TYPE_UNMAPPED, 1)]));
        // A home care service that maps decides nothing.
        let events = vec![
            service(Some("HOME_CARE"), "2021-01-05", None),
            service(Some("NURSING"), "2022-11-10", None),
        ];
        let t = run_in(events, born("1950-07-01", None), false, "2022-23");
        assert_eq!(admissions(&t), (0, 1, vec![], vec![]));
    }

    #[test]
    fn a_start_after_death_is_counted_up_to_the_period_it_is_recorded_in() {
        // Died 10 January 2024; nursing care recorded from 1 February 2024.
        let events = || vec![service(Some("NURSING"), "2024-02-01", None)];
        let person = || born("1940-02-01", Some("2024-01-10"));
        for period in ["2022-23", "2023-24"] {
            let t = run_in(events(), person(), false, period);
            assert_eq!(
                admissions(&t),
                (0, 0, vec![], vec![(AFTER_DEATH, 1)]),
                "{period}"
            );
        }
        // Not in the periods after the one it is recorded in.
        let t = run_in(events(), person(), false, "2024-25");
        assert_eq!(admissions(&t), (0, 0, vec![], vec![]));
        // Nor where an earlier admission already decided.
        let mut with_earlier = events();
        with_earlier.push(service(Some("RESIDENTIAL"), "2021-05-01", None));
        let t = run_in(with_earlier, person(), false, "2023-24");
        assert_eq!(admissions(&t), (0, 0, vec![], vec![]));
    }

    #[test]
    fn a_person_awaiting_a_data_steward_is_left_out_of_every_indicator() {
        let events = vec![
            record(EntityKind::Referral, &[("received_at", "2025-06-10")]),
            record(
                EntityKind::Assessment,
                &[
                    ("type", "CHILD_AND_FAMILY"),
                    ("started", "2025-05-01"),
                    ("authorised", "2025-06-01"),
                ],
            ),
            record(
                EntityKind::Assessment,
                &[
                    ("type", "CHILD_AND_FAMILY"),
                    ("started", "2025-07-01"),
                    ("authorised", "2025-08-01"),
                ],
            ),
            record(
                EntityKind::Episode,
                &[
                    ("kind", "CHILD_PROTECTION_PLAN"),
                    ("start", "2024-01-01"),
                    ("end", "2025-09-01"),
                ],
            ),
        ];
        let child = || born("2015-05-05", None);
        let counted = run_in(events.clone(), child(), false, "2025-26");
        let left_out = run_in(events, child(), true, "2025-26");
        for (id, n) in [("1", 1), ("2", 2), ("3", 1), ("4", 0)] {
            assert_eq!(counted.by_id[id].denominator, n, "{id}");
            assert_eq!(counts(&left_out, id), (0, 0), "{id}");
            let excluded = left_out.by_id[id].excluded.get(UNDER_REVIEW).copied();
            assert_eq!(excluded, (n > 0).then_some(n), "{id}");
        }
        let adult = vec![
            service(Some("RESIDENTIAL"), "2025-06-01", None),
            record(
                EntityKind::Service,
                &[
                    ("type", "HOME_CARE"),
                    ("delivery_mechanism", "DIRECT_PAYMENT"),
                    ("start", "2025-01-01"),
                ],
            ),
        ];
        let t = run_in(adult, born("1980-05-05", None), true, "2025-26");
        for id in ["5", "5b", "6a"] {
            assert_eq!(counts(&t, id), (0, 0), "{id}");
            assert_eq!(t.by_id[id].excluded[UNDER_REVIEW], 1, "{id}");
        }
        // The national measures likewise: what the person would have counted (the
        // numerator of the per-population 2B/2C, else the denominator) is excluded.
        let with = |fields: &[(&'static str, &str)]| {
            let (source, mut r) = service(Some("RESIDENTIAL"), "2025-06-01", None);
            for (field, value) in fields {
                r.fields.insert(field, FieldValue::Text(value.to_string()));
            }
            (source, r)
        };
        let admitted = with(&[("permanence", "PERMANENT"), ("funding", "LOCAL_AUTHORITY")]);
        let community = with(&[
            ("type", "HOME_CARE"),
            ("support_category", "LONG_TERM_COMMUNITY"),
        ]);
        let mut counted_any = std::collections::BTreeSet::new();
        for (events, born_on) in [(admitted, "1940-05-05"), (community, "1980-05-05")] {
            let counted = run_in(vec![events.clone()], born(born_on, None), false, "2025-26");
            let left_out = run_in(vec![events], born(born_on, None), true, "2025-26");
            for (id, c) in &counted.national.by_id {
                let would = match *id {
                    "2B" | "2C" => c.numerator,
                    _ => c.denominator,
                };
                let l = &left_out.national.by_id[id];
                assert_eq!((l.numerator, l.denominator), (0, 0), "{id}");
                let excluded = l.excluded.get(UNDER_REVIEW).copied();
                assert_eq!(excluded, (would > 0).then_some(would), "{id}");
                if would > 0 {
                    counted_any.insert(*id);
                }
            }
        }
        assert!(
            counted_any.contains("2C") && counted_any.contains("3D1"),
            "{counted_any:?}"
        );
    }

    #[test]
    fn only_a_birth_date_the_vendor_flags_is_estimated() {
        let person = |flag: Option<&str>| {
            let mut fields = vec![("birth_date", "2008-01-01")];
            fields.extend(flag.map(|f| ("birth_date_estimated", f)));
            let (source, mut r) = record(EntityKind::Person, &fields);
            if let Some(f) = flag {
                r.fields
                    .insert("birth_date_estimated", FieldValue::Bool(f == "Y"));
            }
            (source, r)
        };
        let survivorship = crate::identity::linkage::config::Survivorship::default();
        // Born on 1 January 2008 (not flagged): 18 on 1 January 2026, not a child.
        let referral = || {
            vec![record(
                EntityKind::Referral,
                &[("received_at", "2026-01-01")],
            )]
        };
        let plain = Demographics::of(&[person(None)], &survivorship);
        assert!(!plain.birth_estimated);
        let t = run_in(referral(), plain, false, "2025-26");
        assert_eq!(counts(&t, "1"), (0, 0));
        assert!(t.by_id["1"].excluded.is_empty());
        let unflagged = Demographics::of(&[person(Some("N"))], &survivorship);
        assert!(!unflagged.birth_estimated);
        // Flagged: any day of 2008, so the age band is uncertain.
        let flagged = Demographics::of(&[person(Some("Y"))], &survivorship);
        assert!(flagged.birth_estimated);
        let t = run_in(referral(), flagged, false, "2025-26");
        assert_eq!(t.by_id["1"].excluded[AGE_UNCERTAIN], 1);
    }

    #[test]
    fn every_exclusion_reason_is_produced_and_documented() {
        let readme = include_str!("../../config/README.md");
        let mut seen = std::collections::BTreeSet::new();
        let mut note = |t: &Tallies| {
            for x in t.by_id.values() {
                seen.extend(x.excluded.keys().copied());
            }
        };
        let adult = || born("1960-05-05", None);
        let assessment = |fields: &[(&'static str, &str)]| record(EntityKind::Assessment, fields);
        // Birth date missing, estimated across the age limit, awaiting a steward.
        note(&run_in(
            vec![record(
                EntityKind::Referral,
                &[("received_at", "2025-06-10")],
            )],
            Demographics::default(),
            false,
            "2025-26",
        ));
        note(&run_in(
            vec![record(
                EntityKind::Referral,
                &[("received_at", "2026-01-01")],
            )],
            Demographics {
                birth_estimated: true,
                ..born("2008-01-01", None)
            },
            false,
            "2025-26",
        ));
        note(&run_in(
            vec![record(
                EntityKind::Referral,
                &[("received_at", "2025-06-10")],
            )],
            born("2015-01-01", None),
            true,
            "2025-26",
        ));
        // Assessments: no type, no start, authorised first, beyond the calendar.
        note(&run_in(
            vec![
                assessment(&[("started", "2025-05-01"), ("authorised", "2025-06-01")]),
                assessment(&[("type", "CHILD_AND_FAMILY"), ("authorised", "2025-06-01")]),
                assessment(&[
                    ("type", "CHILD_AND_FAMILY"),
                    ("started", "2025-07-01"),
                    ("authorised", "2025-06-01"),
                ]),
                assessment(&[
                    ("type", "CHILD_AND_FAMILY"),
                    ("started", "1990-07-01"),
                    ("authorised", "2025-06-01"),
                ]),
            ],
            born("2015-01-01", None),
            false,
            "2025-26",
        ));
        // A plan ending before it starts.
        note(&run_in(
            vec![record(
                EntityKind::Episode,
                &[
                    ("kind", "CHILD_PROTECTION_PLAN"),
                    ("start", "2025-09-01"),
                    ("end", "2025-06-01"),
                ],
            )],
            born("2015-01-01", None),
            false,
            "2025-26",
        ));
        // Services: no type, ending first, after death, no delivery mechanism.
        note(&run_in(
            vec![
                service(None, "2025-06-01", None),
                service(Some("HOME_CARE"), "2025-06-01", Some("2025-05-01")),
            ],
            adult(),
            false,
            "2025-26",
        ));
        note(&run_in(
            vec![service(Some("NURSING"), "2025-06-01", None)],
            born("1940-01-01", Some("2025-05-01")),
            false,
            "2025-26",
        ));
        note(&run_in(
            vec![record(
                EntityKind::Service,
                &[("type", "DAY_CARE"), ("start", "2025-06-01")],
            )],
            adult(),
            false,
            "2025-26",
        ));
        assert_eq!(
            seen,
            EXCLUSION_REASONS.into_iter().collect(),
            "every reason is produced"
        );
        for reason in EXCLUSION_REASONS {
            assert!(
                readme.contains(&format!("`{reason}`")),
                "{reason} in config/README.md"
            );
        }
    }
}
