//! The true population, before any vendor encodes it.

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

use super::GenerateOptions;

pub const FAMILY: [&str; 40] = [
    "Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Robinson",
    "Wright", "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall", "Wood",
    "Jackson", "Clarke", "Patel", "Khan", "Ahmed", "Okafor", "Nowak", "Kowalski", "O'Brien",
    "Murphy", "Hughes", "Edwards", "Lewis", "Hill", "Moore", "Cooper", "Ward", "Morris", "King",
    "Baker", "Harris", "Begum",
];
pub const GIVEN_F: [&str; 20] = [
    "Mary", "Margaret", "Susan", "Patricia", "Jean", "Olivia", "Amelia", "Isla", "Ava", "Mia",
    "Fatima", "Aisha", "Zofia", "Chloe", "Emily", "Grace", "Ruby", "Sophie", "Ada", "Joan",
];
pub const GIVEN_M: [&str; 20] = [
    "John", "David", "Michael", "Peter", "James", "Oliver", "George", "Noah", "Arthur", "Leo",
    "Mohammed", "Ali", "Jakub", "Harry", "Jack", "Thomas", "William", "Samuel", "Joseph", "Daniel",
];
const STREETS: [&str; 10] = [
    "High Street",
    "Station Road",
    "Church Lane",
    "Mill Road",
    "Park Avenue",
    "Victoria Street",
    "Green Lane",
    "Manor Road",
    "Kings Road",
    "School Lane",
];

pub struct TruePerson {
    pub index: usize,
    pub truth_id: String,
    pub nhs: String,
    pub family: String,
    pub given: String,
    pub dob: NaiveDate,
    /// Canonical gender code.
    pub gender: &'static str,
    /// NHS ethnic category letter.
    pub ethnicity: char,
    pub street: String,
    pub postcode: String,
    pub death: Option<NaiveDate>,
    pub child: bool,
    /// Which vendors know this person: CaseTrak, OpenCare, SSIS/90.
    pub in_system: [bool; 3],
}

/// A random stream for one purpose, derived from the seed and a label, so adding a
/// table to one vendor does not shift another vendor's data.
pub fn rng_for(opts: &GenerateOptions, label: &str) -> ChaCha8Rng {
    let mut h = Sha256::new();
    h.update(opts.seed.to_be_bytes());
    h.update(opts.council.as_bytes());
    h.update(label.as_bytes());
    let digest = h.finalize();
    let mut seed = [0u8; 32];
    seed.copy_from_slice(&digest);
    ChaCha8Rng::from_seed(seed)
}

pub fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    &items[rng.gen_range(0..items.len())]
}

pub fn chance(rng: &mut ChaCha8Rng, p: f64) -> bool {
    p > 0.0 && rng.gen_bool(p.min(1.0))
}

pub fn day_between(rng: &mut ChaCha8Rng, from: NaiveDate, to: NaiveDate) -> NaiveDate {
    let span = (to - from).num_days().max(1);
    from + Duration::days(rng.gen_range(0..span))
}

/// A working-hours moment between two dates.
pub fn moment(rng: &mut ChaCha8Rng, from: NaiveDate, to: NaiveDate) -> NaiveDateTime {
    let day = day_between(rng, from, to);
    at_time(rng, day)
}

pub fn at_time(rng: &mut ChaCha8Rng, d: NaiveDate) -> NaiveDateTime {
    d.and_hms_opt(rng.gen_range(8..18), rng.gen_range(0..4) * 15, 0)
        .expect("valid time")
}

/// A valid NHS number unique to `index` (9 digits from the index, check digit computed;
/// numbers whose check would be 10 move to the next block).
pub fn nhs_number(opts: &GenerateOptions, index: usize) -> String {
    let council_offset: u64 = opts.council.bytes().map(u64::from).sum::<u64>() % 97;
    let mut n: u64 = 400_000_000 + council_offset * 1_000_000 + (index as u64) * 7;
    loop {
        let digits: Vec<u8> = format!("{n:09}").bytes().map(|b| b - b'0').collect();
        let nine: [u8; 9] = digits.clone().try_into().expect("nine digits");
        if let Some(check) = escr_connector::nhs::check_digit(&nine) {
            return format!("{n:09}{check}");
        }
        n += 1;
    }
}

pub fn with_wrong_check_digit(nhs: &str) -> String {
    let last = nhs.as_bytes()[9] - b'0';
    format!("{}{}", &nhs[..9], (last + 1) % 10)
}

pub fn population(opts: &GenerateOptions) -> Vec<TruePerson> {
    let mut people = own_population(opts);
    if let Some(movers) = &opts.movers {
        let from = GenerateOptions {
            council: movers.from.clone(),
            people: movers.people.min(opts.people),
            movers: None,
            ..opts.clone()
        };
        for (here, there) in people.iter_mut().zip(own_population(&from)) {
            // The person is the other council's; the address is the new one, and every
            // fourth changed their family name on the way (marriage): the NHS number,
            // not the name, makes them one regional person.
            let family = if here.index % 4 == 3 {
                let at = FAMILY.iter().position(|f| *f == there.family).unwrap_or(0);
                FAMILY[(at + 7) % FAMILY.len()].to_string()
            } else {
                there.family.clone()
            };
            *here = TruePerson {
                index: here.index,
                truth_id: here.truth_id.clone(),
                street: std::mem::take(&mut here.street),
                postcode: std::mem::take(&mut here.postcode),
                family,
                ..there
            };
        }
    }
    people
}

fn own_population(opts: &GenerateOptions) -> Vec<TruePerson> {
    let mut rng = rng_for(opts, "population");
    let today = opts.reference_date;
    (0..opts.people)
        .map(|index| {
            let child = rng.gen_bool(0.35);
            let age_days = if child {
                rng.gen_range(0..(17 * 365))
            } else {
                rng.gen_range((18 * 365)..(98 * 365))
            };
            let dob = today - Duration::days(age_days);
            let female = rng.gen_bool(0.52);
            let gender = if rng.gen_bool(0.005) {
                "INDETERMINATE"
            } else if female {
                "FEMALE"
            } else {
                "MALE"
            };
            let given = if female {
                *pick(&mut rng, &GIVEN_F)
            } else {
                *pick(&mut rng, &GIVEN_M)
            };
            let family = *pick(&mut rng, &FAMILY);
            let ethnicity = *pick(
                &mut rng,
                &[
                    'A', 'A', 'A', 'A', 'B', 'C', 'D', 'H', 'J', 'K', 'M', 'N', 'R', 'S', 'Z',
                ],
            );
            let letters = b"ABDEFGHJLNPQRSTUWXYZ";
            let postcode = format!(
                "NS{} {}{}{}",
                rng.gen_range(1..20),
                rng.gen_range(1..10),
                letters[rng.gen_range(0..letters.len())] as char,
                letters[rng.gen_range(0..letters.len())] as char
            );
            let street = format!("{} {}", rng.gen_range(1..200), pick(&mut rng, &STREETS));
            let old = !child && (today - dob).num_days() > 75 * 365;
            let death = (old && rng.gen_bool(0.08))
                .then(|| day_between(&mut rng, today - Duration::days(900), today));
            // Children live in CaseTrak; adults in any mix, SSIS/90 only for people known
            // before its replacement (born before 2000).
            let mut in_system = if child {
                [true, false, false]
            } else {
                [
                    rng.gen_bool(0.6),
                    rng.gen_bool(0.55),
                    dob.year() < 2000 && rng.gen_bool(0.4),
                ]
            };
            if !in_system.iter().any(|b| *b) {
                in_system[rng.gen_range(0..2)] = true;
            }
            TruePerson {
                index,
                truth_id: format!("T{:07}", index + 1),
                nhs: nhs_number(opts, index),
                family: family.to_string(),
                given: given.to_string(),
                dob,
                gender,
                ethnicity,
                street,
                postcode,
                death,
                child,
                in_system,
            }
        })
        .collect()
}
