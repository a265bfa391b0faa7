//! The true value of every performance indicator and the minimum data set's event
//! counts, from the events the generator modelled (before vendor encoding and before
//! fault injection). The gateway computes the same numbers from the vendors' data; these
//! are what it should get.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Datelike, Duration, Months, NaiveDate, Weekday};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssessmentKind {
    ChildAndFamily,
    AdultNeeds,
    Carer,
    Review,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpisodeKind {
    ChildInNeed,
    ChildProtectionPlan,
    LookedAfter,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceKind {
    Residential,
    Nursing,
    HomeCare,
    DayCare,
    Reablement,
    Equipment,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    DirectPayment,
    PartDirectPayment,
    ManagedPersonalBudget,
    CouncilCommissioned,
}

/// One modelled event, in true values.
#[derive(Clone, Copy, Debug)]
pub enum TrueEvent {
    Referral {
        received: NaiveDate,
        has_outcome: bool,
        /// To children's social care (CaseTrak's children's referrals); adults'
        /// otherwise.
        children: bool,
    },
    Assessment {
        kind: AssessmentKind,
        start: NaiveDate,
        completed: NaiveDate,
        authorised: Option<NaiveDate>,
    },
    Episode {
        kind: EpisodeKind,
        start: NaiveDate,
        end: Option<NaiveDate>,
    },
    Service {
        kind: ServiceKind,
        mechanism: Mechanism,
        start: NaiveDate,
        end: Option<NaiveDate>,
    },
}

/// An event as recorded by a vendor's encoder: whose it is and which source holds it.
#[derive(Clone, Copy, Debug)]
pub struct Recorded {
    pub person: usize,
    // No definition counts by source yet; kept so a check can say which vendor held it.
    #[allow(dead_code)]
    pub source: &'static str,
    pub event: TrueEvent,
}

/// What the definitions need to know about a true person.
pub struct Subject {
    pub dob: NaiveDate,
    pub death: Option<NaiveDate>,
    pub opted_out: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Ratio {
    pub numerator: u64,
    pub denominator: u64,
}

#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReportNumbers {
    pub indicators: BTreeMap<String, Ratio>,
    pub mds_events: BTreeMap<String, u64>,
    /// The national methods (docs/national-definitions.md) by measure id: 2B, 2C
    /// (numerators only), 3D1, 3D2, CIN-RR.
    pub national: BTreeMap<String, Ratio>,
}

#[derive(Debug, Serialize)]
pub struct TruthReport {
    pub period: String,
    pub start: NaiveDate,
    pub end: NaiveDate,
    pub all: ReportNumbers,
    pub without_opt_out: ReportNumbers,
}

/// The three financial years (1 April - 31 March) ending on or before `reference`,
/// oldest first, as (label "YYYY-YY", first day, last day).
pub fn financial_years(reference: NaiveDate) -> Vec<(String, NaiveDate, NaiveDate)> {
    let last_end_year = if (reference.month(), reference.day()) >= (3, 31) {
        reference.year()
    } else {
        reference.year() - 1
    };
    (last_end_year - 2..=last_end_year)
        .map(|end_year| {
            let start = ymd(end_year - 1, 4, 1);
            let end = ymd(end_year, 3, 31);
            let label = format!("{}-{:02}", end_year - 1, end_year % 100);
            (label, start, end)
        })
        .collect()
}

/// Every period's report, for everyone and without people who opted out.
pub fn reports(
    reference: NaiveDate,
    subjects: &[Subject],
    events: &[Recorded],
) -> Vec<TruthReport> {
    let kept: Vec<Recorded> = events
        .iter()
        .filter(|r| !subjects[r.person].opted_out)
        .copied()
        .collect();
    financial_years(reference)
        .into_iter()
        .map(|(period, start, end)| TruthReport {
            all: numbers(start, end, subjects, events),
            without_opt_out: numbers(start, end, subjects, &kept),
            period,
            start,
            end,
        })
        .collect()
}

/// The numbers for one period (`start` and `end` inclusive) over `events`.
pub fn numbers(
    start: NaiveDate,
    end: NaiveDate,
    subjects: &[Subject],
    events: &[Recorded],
) -> ReportNumbers {
    let in_period = |d: NaiveDate| start <= d && d <= end;
    let age = |person: usize, d: NaiveDate| age_on(subjects[person].dob, d);
    let mut referrals: BTreeMap<usize, Vec<NaiveDate>> = BTreeMap::new();
    let mut plans: BTreeMap<usize, Vec<NaiveDate>> = BTreeMap::new();
    for r in events {
        match r.event {
            TrueEvent::Referral { received, .. } => {
                referrals.entry(r.person).or_default().push(received)
            }
            TrueEvent::Episode {
                kind: EpisodeKind::ChildProtectionPlan,
                start,
                ..
            } => plans.entry(r.person).or_default().push(start),
            _ => {}
        }
    }

    let mut ind: BTreeMap<&str, Ratio> = BTreeMap::new();
    for key in ["1", "2", "3", "4", "5", "5b", "6a", "6b"] {
        ind.insert(key, Ratio::default());
    }
    let mut mds: BTreeMap<&str, u64> = BTreeMap::new();
    for key in ["request", "assessment", "review", "service"] {
        mds.insert(key, 0);
    }
    let bump = |m: &mut BTreeMap<&str, Ratio>, key: &str, hit: bool| {
        let r = m.get_mut(key).expect("indicator key");
        r.denominator += 1;
        r.numerator += u64::from(hit);
    };

    for r in events {
        match r.event {
            TrueEvent::Referral {
                received,
                has_outcome,
                ..
            } if in_period(received) => {
                // 1: a child's referral, re-referred if the same person had another
                // referral in the 12 months before (same day excluded).
                if age(r.person, received) < 18 {
                    let year_before = received
                        .checked_sub_months(Months::new(12))
                        .expect("date in range");
                    let again = referrals[&r.person]
                        .iter()
                        .any(|&e| e < received && e >= year_before);
                    bump(&mut ind, "1", again);
                }
                // MDS requests: referrals whose outcome was recorded.
                if has_outcome {
                    *mds.get_mut("request").expect("key") += 1;
                }
            }
            TrueEvent::Assessment {
                kind,
                start,
                completed,
                authorised,
            } => {
                // 2: children's assessments authorised in the period, within 45 working days.
                if let Some(auth) = authorised.filter(|a| in_period(*a)) {
                    if kind == AssessmentKind::ChildAndFamily {
                        bump(&mut ind, "2", working_days(start, auth) <= 45);
                    }
                }
                // MDS assessments and reviews, by completion.
                if in_period(completed) {
                    let key = if kind == AssessmentKind::Review {
                        "review"
                    } else {
                        "assessment"
                    };
                    *mds.get_mut(key).expect("key") += 1;
                }
            }
            TrueEvent::Episode {
                kind: EpisodeKind::ChildProtectionPlan,
                start,
                end: Some(plan_end),
            } if in_period(plan_end) => {
                // 3: plans ended in the period that lasted two years or more.
                let two_years = start
                    .checked_add_months(Months::new(24))
                    .expect("date in range");
                bump(&mut ind, "3", plan_end >= two_years);
            }
            // MDS services: those overlapping the period.
            TrueEvent::Service {
                start: s, end: e, ..
            } if s <= end && e.is_none_or(|e| e >= start) => {
                *mds.get_mut("service").expect("key") += 1;
            }
            _ => {}
        }
    }

    // 4: people with a plan starting in the period; second or later if one of those
    // plans had an earlier plan of the same person before it.
    for starts in plans.values() {
        let in_this: Vec<&NaiveDate> = starts.iter().filter(|s| in_period(**s)).collect();
        if !in_this.is_empty() {
            let later = in_this.iter().any(|s| starts.iter().any(|o| o < s));
            bump(&mut ind, "4", later);
        }
    }

    // 5 and 5b: adults alive on the last day with home or day care open that day;
    // self-directed if any of those is a personal budget (5) or direct payment (5b).
    let day = end;
    let mut open: BTreeMap<usize, Vec<Mechanism>> = BTreeMap::new();
    for r in events {
        if let TrueEvent::Service {
            kind: ServiceKind::HomeCare | ServiceKind::DayCare,
            mechanism,
            start: s,
            end: e,
        } = r.event
        {
            if s <= day && e.is_none_or(|e| e >= day) {
                open.entry(r.person).or_default().push(mechanism);
            }
        }
    }
    for (person, mechanisms) in &open {
        let subject = &subjects[*person];
        if age(*person, day) < 18 || subject.death.is_some_and(|d| d <= day) {
            continue;
        }
        let direct =
            |m: &Mechanism| matches!(m, Mechanism::DirectPayment | Mechanism::PartDirectPayment);
        let self_directed = |m: &Mechanism| direct(m) || *m == Mechanism::ManagedPersonalBudget;
        bump(&mut ind, "5", mechanisms.iter().any(self_directed));
        bump(&mut ind, "5b", mechanisms.iter().any(direct));
    }

    // 6a and 6b: a person's first residential or nursing service starting in the period,
    // by age on that day (numerators only; the population denominator is not ours).
    let mut first: BTreeMap<usize, NaiveDate> = BTreeMap::new();
    for r in events {
        if let TrueEvent::Service {
            kind: ServiceKind::Residential | ServiceKind::Nursing,
            start: s,
            ..
        } = r.event
        {
            let f = first.entry(r.person).or_insert(s);
            *f = (*f).min(s);
        }
    }
    for (person, s) in first {
        if in_period(s) {
            match age(person, s) {
                18..=64 => ind.get_mut("6a").expect("key").numerator += 1,
                a if a >= 65 => ind.get_mut("6b").expect("key").numerator += 1,
                _ => {}
            }
        }
    }

    ReportNumbers {
        indicators: ind.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        mds_events: mds.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        national: national(start, end, subjects, events),
    }
}

/// The national methods over the modelled events. In the modelled world every
/// residential and nursing service is a permanent placement the council arranges and
/// funds, home care and day care are community long-term support, reablement is short
/// term and equipment no long-term support at all.
fn national(
    start: NaiveDate,
    end: NaiveDate,
    subjects: &[Subject],
    events: &[Recorded],
) -> BTreeMap<String, Ratio> {
    let in_period = |d: NaiveDate| start <= d && d <= end;
    let adult_at_end = |person: usize| age_on(subjects[person].dob, end) >= 18;
    let mut out: BTreeMap<String, Ratio> = ["2B", "2C", "3D1", "3D2", "CIN-RR"]
        .into_iter()
        .map(|k| (k.to_string(), Ratio::default()))
        .collect();
    let bump = |out: &mut BTreeMap<String, Ratio>, key: &str, hit: bool| {
        let r = out.get_mut(key).expect("measure key");
        r.denominator += 1;
        r.numerator += u64::from(hit);
    };
    struct Person {
        childrens_referrals: Vec<NaiveDate>,
        cases: Vec<(NaiveDate, Option<NaiveDate>)>,
        care_homes: Vec<(NaiveDate, Option<NaiveDate>)>,
        community: Vec<(Mechanism, NaiveDate, Option<NaiveDate>)>,
    }
    let mut people: BTreeMap<usize, Person> = BTreeMap::new();
    for r in events {
        let p = people.entry(r.person).or_insert_with(|| Person {
            childrens_referrals: Vec::new(),
            cases: Vec::new(),
            care_homes: Vec::new(),
            community: Vec::new(),
        });
        match r.event {
            TrueEvent::Referral {
                received,
                children: true,
                ..
            } => p.childrens_referrals.push(received),
            TrueEvent::Episode { start, end, .. } => p.cases.push((start, end)),
            TrueEvent::Service {
                kind: ServiceKind::Residential | ServiceKind::Nursing,
                start,
                end,
                ..
            } => p.care_homes.push((start, end)),
            TrueEvent::Service {
                kind: ServiceKind::HomeCare | ServiceKind::DayCare,
                mechanism,
                start,
                end,
            } => p.community.push((mechanism, start, end)),
            _ => {}
        }
    }
    let overlaps = |s: NaiveDate, e: Option<NaiveDate>| s <= end && e.is_none_or(|e| e >= start);
    for (&person, p) in &people {
        // CIN-RR: children's referrals in the period, under 18 that day, not while a
        // case opened earlier is still open; re-referred if another children's
        // referral came in the 12 months before.
        for &received in p.childrens_referrals.iter().filter(|d| in_period(**d)) {
            let open = p
                .cases
                .iter()
                .any(|&(s, e)| s < received && e.is_none_or(|e| e >= received));
            if open || age_on(subjects[person].dob, received) >= 18 {
                continue;
            }
            let year_before = received
                .checked_sub_months(Months::new(12))
                .expect("date in range");
            let again = p
                .childrens_referrals
                .iter()
                .any(|&e| e < received && e >= year_before);
            bump(&mut out, "CIN-RR", again);
        }
        if !adult_at_end(person) {
            continue;
        }
        // 2B/2C: a placement starting in the period without one open the day before
        // (not a move between homes), by age at the period's end.
        let admitted = p.care_homes.iter().any(|&(s, _)| {
            in_period(s)
                && !p.care_homes.iter().any(|&(os, oe)| {
                    let day_before = s - Duration::days(1);
                    os <= day_before && oe.is_none_or(|oe| oe >= day_before)
                })
        });
        if admitted {
            let key = if age_on(subjects[person].dob, end) >= 65 {
                "2C"
            } else {
                "2B"
            };
            out.get_mut(key).expect("measure key").numerator += 1;
        }
        // 3D1/3D2: community long-term support at any time in the year, and no care
        // home in it.
        let community: Vec<Mechanism> = p
            .community
            .iter()
            .filter(|(_, s, e)| overlaps(*s, *e))
            .map(|(m, ..)| *m)
            .collect();
        if community.is_empty() || p.care_homes.iter().any(|&(s, e)| overlaps(s, e)) {
            continue;
        }
        let direct = community
            .iter()
            .any(|m| matches!(m, Mechanism::DirectPayment | Mechanism::PartDirectPayment));
        let budget = community.contains(&Mechanism::ManagedPersonalBudget);
        bump(&mut out, "3D1", direct || budget);
        bump(&mut out, "3D2", direct);
    }
    out
}

/// Whole years from `dob` to `d` (a birthday counts on the day itself).
pub fn age_on(dob: NaiveDate, d: NaiveDate) -> i32 {
    let before_birthday = (d.month(), d.day()) < (dob.month(), dob.day());
    d.year() - dob.year() - i32::from(before_birthday)
}

/// Days `d` with `from < d <= to` that are Monday to Friday and not bank holidays.
pub fn working_days(from: NaiveDate, to: NaiveDate) -> i64 {
    let holidays: BTreeSet<NaiveDate> = (from.year()..=to.year())
        .flat_map(england_and_wales_bank_holidays)
        .collect();
    from.iter_days()
        .skip(1)
        .take_while(|d| *d <= to)
        .filter(|d| !matches!(d.weekday(), Weekday::Sat | Weekday::Sun))
        .filter(|d| !holidays.contains(d))
        .count() as i64
}

/// England-and-Wales bank holidays in `year`, in date order, computed from the rules
/// (not read from a file, so it can check the calendar file the gateway reads). The
/// one-off changes are those since 2013.
pub fn england_and_wales_bank_holidays(year: i32) -> Vec<NaiveDate> {
    let mut days = Vec::new();
    // New Year's Day, or the next weekday when it falls at a weekend.
    days.push(first_weekday_from(ymd(year, 1, 1)));
    let easter = easter_sunday(year);
    days.push(easter - Duration::days(2));
    days.push(easter + Duration::days(1));
    // Early May: first Monday, except 2020 (moved to Friday 8 May for VE Day).
    days.push(match year {
        2020 => ymd(2020, 5, 8),
        _ => nth_monday(year, 5, 1),
    });
    // Spring: last Monday in May, except 2022 (Thursday 2 June, then the Jubilee).
    match year {
        2022 => days.extend([ymd(2022, 6, 2), ymd(2022, 6, 3)]),
        _ => days.push(last_monday(year, 5)),
    }
    days.push(last_monday(year, 8));
    // Christmas and Boxing Day: the first two weekdays from 25 December.
    let christmas = first_weekday_from(ymd(year, 12, 25));
    days.push(christmas);
    days.push(first_weekday_from(christmas + Duration::days(1)));
    // One-offs: the Queen's state funeral and the Coronation.
    days.extend(
        [ymd(2022, 9, 19), ymd(2023, 5, 8)]
            .into_iter()
            .filter(|d| d.year() == year),
    );
    days.sort();
    days
}

/// Easter Sunday by the anonymous Gregorian algorithm (Meeus/Jones/Butcher).
fn easter_sunday(year: i32) -> NaiveDate {
    let a = year % 19;
    let b = year / 100;
    let c = year % 100;
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    ymd(year, month as u32, day as u32)
}

fn first_weekday_from(d: NaiveDate) -> NaiveDate {
    d.iter_days()
        .find(|d| !matches!(d.weekday(), Weekday::Sat | Weekday::Sun))
        .expect("a weekday within three days")
}

fn nth_monday(year: i32, month: u32, n: u8) -> NaiveDate {
    NaiveDate::from_weekday_of_month_opt(year, month, Weekday::Mon, n).expect("a Monday")
}

fn last_monday(year: i32, month: u32) -> NaiveDate {
    let last_day = match month {
        12 => ymd(year, 12, 31),
        _ => ymd(year, month + 1, 1) - Duration::days(1),
    };
    last_day - Duration::days(i64::from(last_day.weekday().num_days_from_monday()))
}

fn ymd(year: i32, month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, day).expect("valid date")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn subject(dob: &str) -> Subject {
        Subject {
            dob: d(dob),
            death: None,
            opted_out: false,
        }
    }

    fn at(person: usize, event: TrueEvent) -> Recorded {
        Recorded {
            person,
            source: "test",
            event,
        }
    }

    fn referral(person: usize, received: &str) -> Recorded {
        at(
            person,
            TrueEvent::Referral {
                received: d(received),
                has_outcome: true,
                children: true,
            },
        )
    }

    fn plan(person: usize, start: &str, end: Option<&str>) -> Recorded {
        at(
            person,
            TrueEvent::Episode {
                kind: EpisodeKind::ChildProtectionPlan,
                start: d(start),
                end: end.map(d),
            },
        )
    }

    fn service(
        person: usize,
        kind: ServiceKind,
        m: Mechanism,
        start: &str,
        end: Option<&str>,
    ) -> Recorded {
        at(
            person,
            TrueEvent::Service {
                kind,
                mechanism: m,
                start: d(start),
                end: end.map(d),
            },
        )
    }

    /// The 2025-26 numbers.
    fn fy2526(subjects: &[Subject], events: &[Recorded]) -> ReportNumbers {
        numbers(d("2025-04-01"), d("2026-03-31"), subjects, events)
    }

    fn ratio(n: &ReportNumbers, key: &str) -> (u64, u64) {
        let r = n.indicators[key];
        (r.numerator, r.denominator)
    }

    #[test]
    fn bank_holidays_match_the_published_lists() {
        let list = |days: &[&str]| days.iter().map(|s| d(s)).collect::<Vec<_>>();
        assert_eq!(
            england_and_wales_bank_holidays(2025),
            list(&[
                "2025-01-01",
                "2025-04-18",
                "2025-04-21",
                "2025-05-05",
                "2025-05-26",
                "2025-08-25",
                "2025-12-25",
                "2025-12-26"
            ])
        );
        assert_eq!(
            england_and_wales_bank_holidays(2024),
            list(&[
                "2024-01-01",
                "2024-03-29",
                "2024-04-01",
                "2024-05-06",
                "2024-05-27",
                "2024-08-26",
                "2024-12-25",
                "2024-12-26"
            ])
        );
        assert_eq!(
            england_and_wales_bank_holidays(2023),
            list(&[
                "2023-01-02",
                "2023-04-07",
                "2023-04-10",
                "2023-05-01",
                "2023-05-08",
                "2023-05-29",
                "2023-08-28",
                "2023-12-25",
                "2023-12-26"
            ])
        );
        // The moved and extra days, and both Christmas substitutes.
        assert_eq!(
            england_and_wales_bank_holidays(2022),
            list(&[
                "2022-01-03",
                "2022-04-15",
                "2022-04-18",
                "2022-05-02",
                "2022-06-02",
                "2022-06-03",
                "2022-08-29",
                "2022-09-19",
                "2022-12-26",
                "2022-12-27"
            ])
        );
        assert_eq!(
            england_and_wales_bank_holidays(2020),
            list(&[
                "2020-01-01",
                "2020-04-10",
                "2020-04-13",
                "2020-05-08",
                "2020-05-25",
                "2020-08-31",
                "2020-12-25",
                "2020-12-28"
            ])
        );
    }

    #[test]
    fn periods_are_the_three_financial_years_ending_by_the_reference_date() {
        let labels =
            |r: &str| -> Vec<String> { financial_years(d(r)).into_iter().map(|p| p.0).collect() };
        assert_eq!(labels("2026-03-31"), ["2023-24", "2024-25", "2025-26"]);
        assert_eq!(labels("2026-03-30"), ["2022-23", "2023-24", "2024-25"]);
        let (_, start, end) = financial_years(d("2026-03-31")).pop().unwrap();
        assert_eq!((start, end), (d("2025-04-01"), d("2026-03-31")));
    }

    #[test]
    fn age_counts_the_birthday_itself() {
        assert_eq!(age_on(d("2008-06-15"), d("2026-06-14")), 17);
        assert_eq!(age_on(d("2008-06-15"), d("2026-06-15")), 18);
    }

    #[test]
    fn indicator_1_re_referral_within_twelve_months() {
        let subjects = [
            subject("2015-01-01"),
            subject("2015-01-01"),
            subject("2015-01-01"),
            subject("1980-01-01"),
        ];
        let events = [
            // Exactly 12 months earlier: a re-referral.
            referral(0, "2024-06-15"),
            referral(0, "2025-06-15"),
            // 12 months and a day earlier: not.
            referral(1, "2024-06-14"),
            referral(1, "2025-06-15"),
            // The same day is not earlier.
            referral(2, "2025-07-01"),
            referral(2, "2025-07-01"),
            // Adults are not counted.
            referral(3, "2025-05-01"),
            referral(3, "2025-06-01"),
        ];
        // Person 0's and 1's 2025 referrals, both of person 2's.
        assert_eq!(ratio(&fy2526(&subjects, &events), "1"), (1, 4));
    }

    #[test]
    fn indicator_2_forty_five_working_days_across_a_bank_holiday() {
        // From Friday 25 July 2025, with the August bank holiday (25 August) between.
        assert_eq!(working_days(d("2025-07-25"), d("2025-09-29")), 45);
        assert_eq!(working_days(d("2025-07-25"), d("2025-09-30")), 46);
        let assessment = |kind, authorised: &str| {
            at(
                0,
                TrueEvent::Assessment {
                    kind,
                    start: d("2025-07-25"),
                    completed: d("2025-07-26"),
                    authorised: Some(d(authorised)),
                },
            )
        };
        let events = [
            assessment(AssessmentKind::ChildAndFamily, "2025-09-29"),
            assessment(AssessmentKind::ChildAndFamily, "2025-09-30"),
            assessment(AssessmentKind::AdultNeeds, "2025-09-29"),
        ];
        assert_eq!(
            ratio(&fy2526(&[subject("2015-01-01")], &events), "2"),
            (1, 2)
        );
    }

    #[test]
    fn indicator_3_plans_of_two_years_or_more() {
        let events = [
            plan(0, "2023-05-10", Some("2025-05-10")),
            plan(0, "2023-05-10", Some("2025-05-09")),
            plan(0, "2025-05-10", None),
            plan(0, "2020-01-01", Some("2025-03-31")),
        ];
        assert_eq!(
            ratio(&fy2526(&[subject("2015-01-01")], &events), "3"),
            (1, 2)
        );
    }

    #[test]
    fn indicator_4_second_or_subsequent_plans() {
        let subjects: Vec<Subject> = (0..4).map(|_| subject("2015-01-01")).collect();
        let events = [
            // An earlier plan years before.
            plan(0, "2020-01-01", Some("2021-01-01")),
            plan(0, "2025-06-01", None),
            // Two plans in the period: the second is subsequent.
            plan(1, "2025-05-01", Some("2025-08-01")),
            plan(1, "2025-09-01", None),
            // A first plan.
            plan(2, "2025-07-01", None),
            // No plan starting in the period.
            plan(3, "2024-07-01", None),
        ];
        assert_eq!(ratio(&fy2526(&subjects, &events), "4"), (2, 3));
    }

    #[test]
    fn indicator_5_self_directed_support_on_the_last_day() {
        use Mechanism::*;
        use ServiceKind::*;
        let mut subjects: Vec<Subject> = (0..7).map(|_| subject("1950-01-01")).collect();
        subjects[3].death = Some(d("2026-03-31"));
        subjects[6] = subject("2008-06-01");
        let events = [
            service(0, HomeCare, DirectPayment, "2025-01-01", None),
            // Ends on the day: still open.
            service(
                1,
                DayCare,
                ManagedPersonalBudget,
                "2025-01-01",
                Some("2026-03-31"),
            ),
            service(2, HomeCare, CouncilCommissioned, "2026-03-31", None),
            // Dead on the day.
            service(3, HomeCare, DirectPayment, "2025-01-01", None),
            // Ended the day before.
            service(4, HomeCare, DirectPayment, "2025-01-01", Some("2026-03-30")),
            // Not home or day care.
            service(5, Reablement, DirectPayment, "2025-01-01", None),
            // Aged 17.
            service(6, HomeCare, DirectPayment, "2025-01-01", None),
        ];
        let n = fy2526(&subjects, &events);
        assert_eq!(ratio(&n, "5"), (2, 3));
        assert_eq!(ratio(&n, "5b"), (1, 3));
    }

    #[test]
    fn indicator_6_first_permanent_admissions_by_age() {
        use Mechanism::*;
        use ServiceKind::*;
        let subjects = [
            subject("1985-01-01"),
            subject("1950-01-01"),
            subject("1940-01-01"),
            subject("2010-01-01"),
        ];
        let events = [
            service(0, Residential, CouncilCommissioned, "2025-05-01", None),
            // Admitted before the period: not a first admission in it.
            service(
                1,
                Residential,
                CouncilCommissioned,
                "2024-01-01",
                Some("2024-02-01"),
            ),
            service(1, Nursing, CouncilCommissioned, "2025-06-01", None),
            service(2, Nursing, CouncilCommissioned, "2025-06-01", None),
            // Under 18: neither.
            service(3, Residential, CouncilCommissioned, "2025-06-01", None),
        ];
        let n = fy2526(&subjects, &events);
        assert_eq!(ratio(&n, "6a"), (1, 0));
        assert_eq!(ratio(&n, "6b"), (1, 0));
    }

    fn national_ratio(n: &ReportNumbers, key: &str) -> (u64, u64) {
        let r = n.national[key];
        (r.numerator, r.denominator)
    }

    fn episode(person: usize, kind: EpisodeKind, start: &str, end: Option<&str>) -> Recorded {
        at(
            person,
            TrueEvent::Episode {
                kind,
                start: d(start),
                end: end.map(d),
            },
        )
    }

    #[test]
    fn cin_re_referrals_are_childrens_referrals_not_while_a_case_is_open() {
        let subjects: Vec<Subject> = (0..4).map(|_| subject("2015-01-01")).collect();
        let adults = |person: usize, received: &str| {
            at(
                person,
                TrueEvent::Referral {
                    received: d(received),
                    has_outcome: true,
                    children: false,
                },
            )
        };
        let events = [
            // Re-referred after the case closed.
            referral(0, "2024-09-01"),
            episode(
                0,
                EpisodeKind::ChildInNeed,
                "2024-09-05",
                Some("2025-04-30"),
            ),
            referral(0, "2025-06-01"),
            // Received while a child protection plan is open: not a new referral.
            referral(1, "2025-01-01"),
            episode(1, EpisodeKind::ChildProtectionPlan, "2025-02-01", None),
            referral(1, "2025-07-01"),
            // The earlier one was to adults' services: a first referral.
            adults(2, "2025-01-01"),
            referral(2, "2025-07-01"),
            // A case opened on the day of the referral is its own, not an open one.
            episode(3, EpisodeKind::LookedAfter, "2025-08-01", None),
            referral(3, "2025-08-01"),
        ];
        assert_eq!(
            national_ratio(&fy2526(&subjects, &events), "CIN-RR"),
            (1, 3)
        );
    }

    #[test]
    fn ascof_admissions_at_the_period_end_and_community_support_over_the_year() {
        use Mechanism::*;
        use ServiceKind::*;
        let subjects = [
            // 64 when admitted, 65 by 31 March: 2C.
            subject("1961-01-15"),
            // A move from residential to nursing care: no admission.
            subject("1970-01-01"),
            // Admitted again after a gap: an admission (2B).
            subject("1970-01-01"),
            // Home care with a direct payment that ended in June, then nothing.
            subject("1950-01-01"),
            // Day care with a managed budget, then a care home: that setting.
            subject("1950-01-01"),
            // Council-commissioned home care, and reablement that counts for nothing.
            subject("1950-01-01"),
        ];
        let events = [
            service(0, Residential, CouncilCommissioned, "2025-06-01", None),
            service(
                1,
                Residential,
                CouncilCommissioned,
                "2023-01-01",
                Some("2025-06-30"),
            ),
            service(1, Nursing, CouncilCommissioned, "2025-07-01", None),
            service(
                2,
                Residential,
                CouncilCommissioned,
                "2020-01-01",
                Some("2021-01-01"),
            ),
            service(2, Nursing, CouncilCommissioned, "2025-07-01", None),
            service(3, HomeCare, DirectPayment, "2024-01-01", Some("2025-06-30")),
            service(
                4,
                DayCare,
                ManagedPersonalBudget,
                "2025-01-01",
                Some("2025-09-01"),
            ),
            service(4, Nursing, CouncilCommissioned, "2025-09-02", None),
            service(5, HomeCare, CouncilCommissioned, "2025-01-01", None),
            service(5, Reablement, DirectPayment, "2025-01-01", None),
        ];
        let n = fy2526(&subjects, &events);
        assert_eq!(national_ratio(&n, "2B").0, 1);
        // Person 0's, and person 4's (from the community into a home: an admission).
        assert_eq!(national_ratio(&n, "2C").0, 2);
        assert_eq!(national_ratio(&n, "3D1"), (1, 2));
        assert_eq!(national_ratio(&n, "3D2"), (1, 2));
    }

    #[test]
    fn minimum_data_set_events() {
        use Mechanism::*;
        use ServiceKind::*;
        let assessment = |kind, completed: &str| {
            at(
                0,
                TrueEvent::Assessment {
                    kind,
                    start: d("2025-03-01"),
                    completed: d(completed),
                    authorised: None,
                },
            )
        };
        let events = [
            referral(0, "2025-04-01"),
            at(
                0,
                TrueEvent::Referral {
                    received: d("2025-05-01"),
                    has_outcome: false,
                    children: true,
                },
            ),
            referral(0, "2026-04-01"),
            assessment(AssessmentKind::AdultNeeds, "2025-04-01"),
            assessment(AssessmentKind::Carer, "2026-03-31"),
            assessment(AssessmentKind::Review, "2025-12-01"),
            assessment(AssessmentKind::Review, "2025-03-31"),
            // Ends on the first day, starts on the last, open: all overlap.
            service(0, HomeCare, DirectPayment, "2024-01-01", Some("2025-04-01")),
            service(0, HomeCare, DirectPayment, "2026-03-31", None),
            service(0, HomeCare, DirectPayment, "2020-01-01", None),
            // Ended the day before, starts the day after: not.
            service(0, HomeCare, DirectPayment, "2024-01-01", Some("2025-03-31")),
            service(0, HomeCare, DirectPayment, "2026-04-01", None),
        ];
        let n = fy2526(&[subject("1950-01-01")], &events);
        let mds: Vec<(&str, u64)> = n.mds_events.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(
            mds,
            [
                ("assessment", 2),
                ("request", 1),
                ("review", 1),
                ("service", 3)
            ]
        );
    }

    #[test]
    fn opted_out_people_are_left_out_of_the_second_set() {
        let mut subjects = vec![subject("2015-01-01"), subject("2015-01-01")];
        subjects[1].opted_out = true;
        let events = [
            referral(0, "2025-06-01"),
            referral(1, "2025-01-01"),
            referral(1, "2025-06-01"),
        ];
        let reports = reports(d("2026-03-31"), &subjects, &events);
        let last = reports.last().unwrap();
        assert_eq!(last.period, "2025-26");
        assert_eq!(ratio(&last.all, "1"), (1, 2));
        assert_eq!(ratio(&last.without_opt_out, "1"), (0, 1));
    }
}
