//! An independent test estate for identity linkage, shaped unlike the demo: one source
//! in OpenCare's schema and no NHS numbers, people living in households (couples,
//! children with twins and siblings, fathers and sons sharing a given name), surnames at
//! realistic UK frequencies with a long tail, and the source's own double registrations
//! (re-registered after a move, with a typo, a swapped or guessed birth date, or no
//! postcode). Nothing can be learned from identifiers here: the linkage model has to
//! fall back to its defaults, and a link it makes must still be the same person.
//!
//! `truth.json` has the same `people[].records[]` shape as the demo's, plus the pairs
//! that make the estate hard (twins, namesakes) so a test can see they are there.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::{Datelike, Duration, NaiveDate};
use escr_connector::Value;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::model::{at_time, chance, day_between, moment, pick};
use super::{GenerateError, SqliteSink, TableSink, TruthRecord};

#[derive(Clone, Debug)]
pub struct FamilyOptions {
    pub seed: u64,
    /// People (before double registrations).
    pub people: usize,
    /// The source's name in the truth file.
    pub source: String,
    /// People registered twice.
    pub duplicate_rate: f64,
    /// Families with children whose next birth is twins (triplets now and then).
    pub twin_rate: f64,
    pub reference_date: NaiveDate,
}

impl Default for FamilyOptions {
    fn default() -> FamilyOptions {
        FamilyOptions {
            seed: 11,
            people: 10_000,
            source: "opencare".into(),
            duplicate_rate: 0.05,
            twin_rate: 0.12,
            reference_date: NaiveDate::from_ymd_opt(2026, 3, 31).expect("valid date"),
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct FamilyTruth {
    pub people: Vec<FamilyPerson>,
    /// Truth ids of twins (and triplets) born together, per birth.
    pub twins: Vec<Vec<String>>,
    /// Truth ids of a father and a son with the same names in one household.
    pub namesakes: Vec<[String; 2]>,
    pub duplicates: usize,
    pub households: usize,
}

#[derive(Debug, Serialize)]
pub struct FamilyPerson {
    pub truth_id: String,
    pub family_name: String,
    pub given_names: String,
    pub birth_date: NaiveDate,
    pub gender: &'static str,
    pub records: Vec<TruthRecord>,
}

/// UK surnames by share of the population (per 10,000 people), the most common first;
/// a long tail of rarer names follows them ([`surnames`]).
const COMMON_SURNAMES: [(&str, f64); 50] = [
    ("Smith", 115.0),
    ("Jones", 90.0),
    ("Williams", 60.0),
    ("Taylor", 50.0),
    ("Brown", 48.0),
    ("Davies", 45.0),
    ("Evans", 35.0),
    ("Wilson", 33.0),
    ("Thomas", 32.0),
    ("Johnson", 30.0),
    ("Roberts", 30.0),
    ("Robinson", 27.0),
    ("Thompson", 27.0),
    ("Wright", 26.0),
    ("Walker", 26.0),
    ("White", 25.0),
    ("Edwards", 24.0),
    ("Hughes", 24.0),
    ("Green", 23.0),
    ("Hall", 23.0),
    ("Lewis", 22.0),
    ("Harris", 22.0),
    ("Clarke", 22.0),
    ("Patel", 21.0),
    ("Jackson", 21.0),
    ("Wood", 20.0),
    ("Turner", 19.0),
    ("Martin", 19.0),
    ("Cooper", 19.0),
    ("Hill", 19.0),
    ("Ward", 18.0),
    ("Morris", 18.0),
    ("Moore", 18.0),
    ("Clark", 18.0),
    ("Lee", 17.0),
    ("King", 17.0),
    ("Baker", 17.0),
    ("Harrison", 17.0),
    ("Morgan", 16.0),
    ("Allen", 16.0),
    ("James", 16.0),
    ("Scott", 15.0),
    ("Phillips", 15.0),
    ("Watson", 15.0),
    ("Davis", 15.0),
    ("Parker", 14.0),
    ("Price", 14.0),
    ("Bennett", 14.0),
    ("Young", 14.0),
    ("Khan", 14.0),
];

const TAIL_FIRST: [&str; 32] = [
    "Ash", "Brad", "Black", "Brook", "Chad", "Clay", "Dal", "Fair", "Gold", "Hart", "Hol", "Kings",
    "Lang", "Mar", "New", "Oak", "Pen", "Rad", "Stan", "Thorn", "Wain", "West", "Whit", "Ald",
    "Bar", "Cress", "Dun", "Elm", "Fen", "Grim", "Hay", "Lock",
];
const TAIL_MIDDLE: [&str; 8] = ["", "er", "in", "ing", "en", "el", "e", "ow"];
const TAIL_LAST: [&str; 24] = [
    "ford", "ley", "ton", "well", "by", "worth", "ham", "wood", "field", "more", "son", "stone",
    "bridge", "croft", "hurst", "combe", "den", "wick", "shaw", "brook", "dale", "cott", "land",
    "ridge",
];

/// Surnames with weights: the common ones at their UK shares, then a tail of rarer
/// names whose shares fall off as a power of their rank (as surname counts do).
fn surnames() -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = COMMON_SURNAMES
        .iter()
        .map(|(n, w)| (n.to_string(), *w))
        .collect();
    let mut seen: BTreeSet<String> = out.iter().map(|(n, _)| n.clone()).collect();
    let last_common = COMMON_SURNAMES[COMMON_SURNAMES.len() - 1].1;
    let mut rank = COMMON_SURNAMES.len();
    for last in TAIL_LAST {
        for middle in TAIL_MIDDLE {
            for first in TAIL_FIRST {
                let name = format!("{first}{middle}{last}");
                if seen.insert(name.clone()) {
                    rank += 1;
                    let weight =
                        last_common * (COMMON_SURNAMES.len() as f64 / rank as f64).powf(0.85);
                    out.push((name, weight));
                }
            }
        }
    }
    out
}

const GIVEN_FEMALE: [&str; 40] = [
    "Olivia",
    "Amelia",
    "Isla",
    "Ava",
    "Mia",
    "Ivy",
    "Lily",
    "Isabella",
    "Rosie",
    "Sophia",
    "Grace",
    "Freya",
    "Evie",
    "Poppy",
    "Ella",
    "Charlotte",
    "Emily",
    "Ruby",
    "Sophie",
    "Chloe",
    "Margaret",
    "Susan",
    "Patricia",
    "Jean",
    "Mary",
    "Elizabeth",
    "Sarah",
    "Karen",
    "Helen",
    "Julie",
    "Fatima",
    "Aisha",
    "Zofia",
    "Hannah",
    "Lucy",
    "Jessica",
    "Rebecca",
    "Laura",
    "Amy",
    "Emma",
];
const GIVEN_MALE: [&str; 40] = [
    "Oliver", "George", "Noah", "Arthur", "Leo", "Harry", "Oscar", "Archie", "Henry", "Jack",
    "Theo", "Charlie", "Freddie", "Alfie", "Thomas", "William", "James", "Joshua", "Samuel",
    "Daniel", "John", "David", "Michael", "Peter", "Paul", "Mark", "Richard", "Robert", "Stephen",
    "Andrew", "Mohammed", "Ali", "Jakub", "Adam", "Ryan", "Luke", "Matthew", "Joseph", "Ben",
    "Liam",
];
const AREAS: [&str; 12] = [
    "LS", "M", "B", "NE", "CF", "BS", "NG", "S", "L", "SK", "HD", "WF",
];
const UNIT_LETTERS: &[u8] = b"ABDEFGHJLNPQRSTUWXYZ";

struct Member {
    family: String,
    given: String,
    dob: NaiveDate,
    gender: &'static str,
}

/// A given name drawn by weight: the first in the list most often (about 6% of one
/// sex), the last about 1.3%, as the most common names of a cohort are.
fn zipf<'a>(rng: &mut ChaCha8Rng, names: &'a [&'a str]) -> &'a str {
    let weight = |rank: usize| 1.0 / (rank + 10) as f64;
    let total: f64 = (1..=names.len()).map(weight).sum();
    let mut x = rng.gen_range(0.0..total);
    for (r, name) in names.iter().enumerate() {
        x -= weight(r + 1);
        if x <= 0.0 {
            return name;
        }
    }
    names[names.len() - 1]
}

struct Draw {
    surnames: Vec<(String, f64)>,
    total: f64,
}

impl Draw {
    fn surname(&self, rng: &mut ChaCha8Rng) -> String {
        let mut x = rng.gen_range(0.0..self.total);
        for (name, w) in &self.surnames {
            x -= w;
            if x <= 0.0 {
                return name.clone();
            }
        }
        self.surnames[0].0.clone()
    }
}

fn given(rng: &mut ChaCha8Rng, gender: &str, not: &[&str]) -> String {
    let names: &[&str] = if gender == "FEMALE" {
        &GIVEN_FEMALE
    } else {
        &GIVEN_MALE
    };
    loop {
        let name = zipf(rng, names);
        if !not.contains(&name) {
            return name.to_string();
        }
    }
}

fn gender(rng: &mut ChaCha8Rng) -> &'static str {
    if rng.gen_bool(0.5) {
        "FEMALE"
    } else {
        "MALE"
    }
}

/// A household: its members and a postcode unit shared with a few neighbours.
fn household(
    rng: &mut ChaCha8Rng,
    draw: &Draw,
    opts: &FamilyOptions,
    truth: &mut FamilyTruth,
    first_index: usize,
) -> Vec<Member> {
    let today = opts.reference_date;
    let adult_dob = |rng: &mut ChaCha8Rng, min_age: i64, max_age: i64| {
        day_between(
            rng,
            today - Duration::days(max_age * 365),
            today - Duration::days(min_age * 365),
        )
    };
    let family = draw.surname(rng);
    let kind = rng.gen_range(0..100);
    let mut members = Vec::new();
    if kind < 30 {
        let g = gender(rng);
        members.push(Member {
            family,
            given: given(rng, g, &[]),
            dob: adult_dob(rng, 18, 95),
            gender: g,
        });
        return members;
    }
    // A couple: the second partner shares the surname four times in five.
    let older = kind >= 85;
    let (min, max) = if older { (65, 95) } else { (22, 60) };
    let first = adult_dob(rng, min, max);
    let second = first + Duration::days(rng.gen_range(-2000..2000));
    let partner_family = if rng.gen_bool(0.8) {
        family.clone()
    } else {
        draw.surname(rng)
    };
    let father = given(rng, "MALE", &[]);
    members.push(Member {
        family: family.clone(),
        given: father.clone(),
        dob: first,
        gender: "MALE",
    });
    members.push(Member {
        family: partner_family,
        given: given(rng, "FEMALE", &[]),
        dob: second,
        gender: "FEMALE",
    });
    if kind < 55 || older {
        return members;
    }
    // Children: born to the mother between 20 and 42, a year or more apart, sometimes
    // twins (or triplets) with different given names; now and then a son named after
    // his father.
    let mother_dob = first.max(second);
    let mut birth = mother_dob + Duration::days(rng.gen_range(20 * 365..30 * 365));
    let latest = (mother_dob + Duration::days(42 * 365)).min(today - Duration::days(30));
    let children = rng.gen_range(1..=4);
    let mut used: Vec<String> = Vec::new();
    for _ in 0..children {
        if birth > latest {
            break;
        }
        let together = if chance(rng, opts.twin_rate) {
            if rng.gen_bool(0.08) {
                3
            } else {
                2
            }
        } else {
            1
        };
        let mut born_together = Vec::new();
        for _ in 0..together {
            let g = gender(rng);
            let name =
                if g == "MALE" && used.is_empty() && born_together.is_empty() && rng.gen_bool(0.15)
                {
                    truth.namesakes.push([
                        format!("F{:07}", first_index + 1),
                        format!("F{:07}", first_index + members.len() + 1),
                    ]);
                    father.clone()
                } else {
                    let not: Vec<&str> = used.iter().map(String::as_str).collect();
                    given(rng, g, &not)
                };
            used.push(name.clone());
            born_together.push(format!("F{:07}", first_index + members.len() + 1));
            members.push(Member {
                family: family.clone(),
                given: name,
                dob: birth,
                gender: g,
            });
        }
        if born_together.len() > 1 {
            truth.twins.push(born_together);
        }
        birth += Duration::days(rng.gen_range(330..6 * 365));
    }
    members
}

fn postcode(rng: &mut ChaCha8Rng) -> String {
    format!(
        "{}{} {}{}{}",
        pick(rng, &AREAS),
        rng.gen_range(1..30),
        rng.gen_range(0..10),
        UNIT_LETTERS[rng.gen_range(0..UNIT_LETTERS.len())] as char,
        UNIT_LETTERS[rng.gen_range(0..UNIT_LETTERS.len())] as char
    )
}

/// A second registration of the same person, as a busy front desk makes one: after a
/// move, with a typo in a name, with day and month swapped, with 1 January for a
/// birth date nobody had to hand, or without a postcode. One or two of these at once.
fn double_registration(
    rng: &mut ChaCha8Rng,
    m: &Member,
    home: &str,
) -> (String, String, NaiveDate, Option<String>) {
    let (mut family, mut given, mut dob, mut postcode_now) = (
        m.family.clone(),
        m.given.clone(),
        m.dob,
        Some(home.to_string()),
    );
    for _ in 0..rng.gen_range(1..=2) {
        match rng.gen_range(0..6) {
            0 => postcode_now = Some(postcode(rng)),
            1 => family = typo(rng, &family),
            2 => given = typo(rng, &given),
            3 if dob.day() <= 12 && dob.day() != dob.month() => {
                dob = NaiveDate::from_ymd_opt(dob.year(), dob.day(), dob.month()).unwrap_or(dob)
            }
            4 => dob = NaiveDate::from_ymd_opt(dob.year(), 1, 1).unwrap_or(dob),
            _ => postcode_now = None,
        }
    }
    (family, given, dob, postcode_now)
}

/// Two neighbouring letters swapped (after the first, which people rarely get wrong).
fn typo(rng: &mut ChaCha8Rng, name: &str) -> String {
    let mut chars: Vec<char> = name.chars().collect();
    if chars.len() < 4 {
        return name.to_string();
    }
    let at = rng.gen_range(1..chars.len() - 1);
    chars.swap(at, at + 1);
    chars.into_iter().collect()
}

pub struct FamilySummary {
    pub people: usize,
    pub records: usize,
    pub twins: usize,
    pub namesakes: usize,
}

/// Write `opencare.db` (OpenCare's schema) and `truth.json` into `out_dir`.
pub fn generate_families(
    opts: &FamilyOptions,
    out_dir: &Path,
) -> Result<FamilySummary, GenerateError> {
    let werr = |path: &Path, e: &dyn std::fmt::Display| GenerateError::Write {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(out_dir).map_err(|e| werr(out_dir, &e))?;
    let mut rng = {
        use rand::SeedableRng;
        ChaCha8Rng::seed_from_u64(opts.seed)
    };
    let surnames = surnames();
    let draw = Draw {
        total: surnames.iter().map(|(_, w)| w).sum(),
        surnames,
    };
    let mut truth = FamilyTruth::default();
    // Postcode units hold about a dozen households each.
    let units: Vec<String> = (0..(opts.people / 30).max(1))
        .map(|_| postcode(&mut rng))
        .collect();
    let mut homes: Vec<(Vec<Member>, String)> = Vec::new();
    let mut count = 0;
    while count < opts.people {
        let members = household(&mut rng, &draw, opts, &mut truth, count);
        count += members.len();
        homes.push((members, pick(&mut rng, &units).clone()));
    }
    truth.households = homes.len();

    let path = out_dir.join("opencare.db");
    let mut sink = SqliteSink::create(&path).map_err(|e| werr(&path, &e))?;
    super::vendors::opencare_tables(&mut sink).map_err(|e| werr(&path, &e))?;
    let mut ids = 0i64;
    let mut rows = RowIds::default();
    for (members, home) in &homes {
        for m in members {
            let truth_id = format!("F{:07}", truth.people.len() + 1);
            let mut records = Vec::new();
            ids += 1;
            write_person(
                &mut sink,
                &mut rng,
                opts,
                &mut rows,
                ids,
                m,
                &m.family,
                &m.given,
                m.dob,
                Some(home),
            )
            .map_err(|e| werr(&path, &e))?;
            records.push(TruthRecord {
                source: opts.source.clone(),
                local_id: ids.to_string(),
            });
            if chance(&mut rng, opts.duplicate_rate) {
                let (family, given, dob, postcode) = double_registration(&mut rng, m, home);
                ids += 1;
                write_person(
                    &mut sink,
                    &mut rng,
                    opts,
                    &mut rows,
                    ids,
                    m,
                    &family,
                    &given,
                    dob,
                    postcode.as_deref(),
                )
                .map_err(|e| werr(&path, &e))?;
                records.push(TruthRecord {
                    source: opts.source.clone(),
                    local_id: ids.to_string(),
                });
                truth.duplicates += 1;
            }
            truth.people.push(FamilyPerson {
                truth_id,
                family_name: m.family.clone(),
                given_names: m.given.clone(),
                birth_date: m.dob,
                gender: m.gender,
                records,
            });
        }
    }
    for table in ["appointments", "notes", "service_agreements", "flags"] {
        sink.create_index(table, "person_id")
            .map_err(|e| werr(&path, &e))?;
    }
    sink.finish().map_err(|e| werr(&path, &e))?;
    let truth_path = out_dir.join("truth.json");
    let file = std::fs::File::create(&truth_path).map_err(|e| werr(&truth_path, &e))?;
    serde_json::to_writer(std::io::BufWriter::new(file), &truth)
        .map_err(|e| werr(&truth_path, &e))?;
    Ok(FamilySummary {
        people: truth.people.len(),
        records: ids as usize,
        twins: truth.twins.len(),
        namesakes: truth.namesakes.len(),
    })
}

#[derive(Default)]
struct RowIds {
    identifier: i64,
    appointment: i64,
    note: i64,
    agreement: i64,
    flag: i64,
}

/// One `people` row with its local identifier and a little history (appointments,
/// notes, a service agreement, now and then a safeguarding flag).
#[allow(clippy::too_many_arguments)]
fn write_person(
    sink: &mut dyn TableSink,
    rng: &mut ChaCha8Rng,
    opts: &FamilyOptions,
    rows: &mut RowIds,
    id: i64,
    m: &Member,
    family: &str,
    given: &str,
    dob: NaiveDate,
    postcode: Option<&str>,
) -> Result<(), String> {
    let t = |s: &str| Value::Text(s.to_string());
    let today = opts.reference_date;
    let days = rng.gen_range(0..900);
    let updated = at_time(rng, today - Duration::days(days));
    let code = if m.gender == "FEMALE" { 2 } else { 1 };
    sink.insert(
        "people",
        vec![
            Value::Int(id),
            t(&format!("{id:08x}-0000-4000-8000-f4a1e5{id:06x}")),
            t(given),
            t(family),
            t(&dob.to_string()),
            Value::Int(code),
            t("Z"),
            postcode.map(t).unwrap_or(Value::Null),
            Value::Null,
            t(&updated.format("%Y-%m-%d %H:%M:%S%.3f").to_string()),
        ],
    )?;
    rows.identifier += 1;
    sink.insert(
        "person_identifiers",
        vec![
            Value::Int(rows.identifier),
            Value::Int(id),
            t("la"),
            t(&format!("LA{id:06}")),
        ],
    )?;
    let from = (today - Duration::days(3 * 365)).max(dob + Duration::days(30));
    let to = today.max(from + Duration::days(2));
    for _ in 0..rng.gen_range(0..=3) {
        rows.appointment += 1;
        let planned = moment(rng, from, to);
        sink.insert(
            "appointments",
            vec![
                Value::Int(rows.appointment),
                Value::Int(id),
                t(&planned.format("%Y-%m-%d %H:%M:%S").to_string()),
                t(&planned.format("%Y-%m-%d %H:%M:%S").to_string()),
                Value::Int(1),
                Value::Int(i64::from(rng.gen_bool(0.3))),
                Value::Int(rng.gen_range(1..40)),
            ],
        )?;
    }
    for _ in 0..rng.gen_range(0..=2) {
        rows.note += 1;
        let at = moment(rng, from, to);
        sink.insert(
            "notes",
            vec![
                Value::Int(rows.note),
                Value::Int(id),
                t(&at.format("%Y-%m-%d %H:%M:%S").to_string()),
                t("visit"),
                t(&format!("Visit note for {given} {family}.")),
                t("all"),
                Value::Null,
            ],
        )?;
    }
    if rng.gen_bool(0.3) {
        rows.agreement += 1;
        let start = day_between(rng, from, to);
        sink.insert(
            "service_agreements",
            vec![
                Value::Int(rows.agreement),
                Value::Int(id),
                t("home_care"),
                t("commissioned"),
                t("Northtown Care"),
                Value::Int(2150),
                Value::Float(7.0),
                t(&start.to_string()),
                Value::Null,
                Value::Null,
            ],
        )?;
    }
    if rng.gen_bool(0.02) {
        rows.flag += 1;
        sink.insert(
            "flags",
            vec![
                Value::Int(rows.flag),
                Value::Int(id),
                t("safeguarding"),
                t("Safeguarding concern"),
                t(&from.to_string()),
                Value::Null,
            ],
        )?;
    }
    Ok(())
}
