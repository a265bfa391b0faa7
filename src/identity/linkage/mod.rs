//! Probabilistic record linkage (Fellegi-Sunter) for the identity index.
//!
//! Each source person record becomes a [`Subject`] (normalised once). Candidate pairs
//! come from blocking keys, so the work grows with the records, not their square. Each
//! pair is compared field by field into a level ("exact", "close", "swapped", ...); a
//! level weighs log2(m/u) bits, where m = P(level | same person) and u = P(level |
//! different people). u is counted on random pairs; m is estimated by EM over the
//! candidate pairs (or configured). The sum of the weights is the pair's score, split by
//! the configured thresholds into match / review / non-match. The index (`src/identity/index.rs`)
//! applies the deterministic rules first and owns the clustering and its guards.

pub mod compare;
pub mod config;
pub mod evaluate;
pub mod golden;

use std::collections::HashMap;

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

pub use config::LinkageConfig;

/// A compared field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    NhsNumber,
    FamilyName,
    GivenName,
    BirthDate,
    Sex,
    Postcode,
}

pub const FIELDS: usize = 6;
/// The level of a field one of the records has no usable value for (weight 0).
pub const MISSING: u8 = u8::MAX;

/// One pair's comparison: a level per field, in [`Field::ALL`] order.
pub type Levels = [u8; FIELDS];

impl Field {
    pub const ALL: [Field; FIELDS] = [
        Field::NhsNumber,
        Field::FamilyName,
        Field::GivenName,
        Field::BirthDate,
        Field::Sex,
        Field::Postcode,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::NhsNumber => "nhs_number",
            Field::FamilyName => "family_name",
            Field::GivenName => "given_name",
            Field::BirthDate => "birth_date",
            Field::Sex => "sex",
            Field::Postcode => "postcode",
        }
    }

    pub fn by_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Levels, most to least similar.
    pub fn levels(self) -> &'static [&'static str] {
        match self {
            Field::NhsNumber => &["agree", "disagree"],
            Field::FamilyName | Field::GivenName => &["exact", "close", "phonetic", "different"],
            Field::BirthDate => &["exact", "swapped", "estimated", "same_year", "different"],
            Field::Sex => &["agree", "disagree"],
            Field::Postcode => &["exact", "district", "different"],
        }
    }

    /// Prior m per level (the starting point of EM).
    fn default_m(self) -> &'static [f64] {
        match self {
            Field::NhsNumber => &[0.99, 0.01],
            Field::FamilyName => &[0.94, 0.02, 0.01, 0.03],
            Field::GivenName => &[0.93, 0.03, 0.01, 0.03],
            Field::BirthDate => &[0.92, 0.01, 0.03, 0.02, 0.02],
            Field::Sex => &[0.97, 0.03],
            Field::Postcode => &[0.85, 0.05, 0.10],
        }
    }
}

/// What linkage uses of one record, normalised once.
#[derive(Clone, Debug, Default)]
pub struct Subject {
    /// A valid NHS number (10 digits); invalid and placeholder numbers are `None`.
    pub nhs: Option<String>,
    pub family: String,
    pub family_sx: String,
    pub given: String,
    pub given_sx: String,
    pub birth_date: Option<NaiveDate>,
    /// The source says the birth date is estimated (or it is 1 January, the usual guess).
    pub birth_estimated: bool,
    /// 'M' or 'F'; unknown and indeterminate are not compared.
    pub sex: Option<char>,
    /// A well-formed postcode, upper case without spaces.
    pub postcode: Option<String>,
    /// Carries a protected label: never linked on a score alone.
    pub protected: bool,
}

impl Subject {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        nhs: Option<&str>,
        family: Option<&str>,
        given: Option<&str>,
        birth_date: Option<NaiveDate>,
        birth_estimated: bool,
        gender: Option<&str>,
        postcode: Option<&str>,
        protected: bool,
    ) -> Subject {
        let family = family.map(compare::name_key).unwrap_or_default();
        let given = given.map(compare::first_given).unwrap_or_default();
        Subject {
            nhs: nhs.map(str::to_string),
            family_sx: compare::soundex(&family),
            given_sx: compare::soundex(&given),
            family,
            given,
            birth_estimated: birth_estimated
                || birth_date.is_some_and(|d| d.month() == 1 && d.day() == 1),
            birth_date,
            sex: match gender {
                Some("MALE") => Some('M'),
                Some("FEMALE") => Some('F'),
                _ => None,
            },
            postcode: postcode.and_then(compare::postcode_key),
            protected,
        }
    }
}

fn compare_names(a: &str, a_sx: &str, b: &str, b_sx: &str) -> u8 {
    if a.is_empty() || b.is_empty() {
        MISSING
    } else if a == b {
        0
    } else if compare::jaro_winkler(a, b) >= 0.92 {
        1
    } else if a_sx == b_sx {
        2
    } else {
        3
    }
}

/// Compare two records field by field.
pub fn compare(a: &Subject, b: &Subject) -> Levels {
    let nhs = match (&a.nhs, &b.nhs) {
        (Some(x), Some(y)) => u8::from(x != y),
        _ => MISSING,
    };
    let dob = match (a.birth_date, b.birth_date) {
        (Some(x), Some(y)) if x == y => 0,
        (Some(x), Some(y))
            if x.year() == y.year() && x.day() == y.month() && x.month() == y.day() =>
        {
            1
        }
        (Some(x), Some(y)) if x.year() == y.year() && (a.birth_estimated || b.birth_estimated) => 2,
        (Some(x), Some(y)) if x.year() == y.year() => 3,
        (Some(_), Some(_)) => 4,
        _ => MISSING,
    };
    let sex = match (a.sex, b.sex) {
        (Some(x), Some(y)) => u8::from(x != y),
        _ => MISSING,
    };
    let postcode = match (&a.postcode, &b.postcode) {
        (Some(x), Some(y)) if x == y => 0,
        (Some(x), Some(y)) if compare::postcode_district(x) == compare::postcode_district(y) => 1,
        (Some(_), Some(_)) => 2,
        _ => MISSING,
    };
    [
        nhs,
        compare_names(&a.family, &a.family_sx, &b.family, &b.family_sx),
        compare_names(&a.given, &a.given_sx, &b.given, &b.given_sx),
        dob,
        sex,
        postcode,
    ]
}

/// Why a pair scored as it did: one weight per compared field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldWeight {
    pub field: String,
    pub level: String,
    pub weight: f64,
}

/// The fitted model: m, u and the weight of every level of every field.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Model {
    pub m: Vec<Vec<f64>>,
    pub u: Vec<Vec<f64>>,
    pub weights: Vec<Vec<f64>>,
    /// Estimated share of candidate pairs that are matches.
    pub match_share: f64,
    pub em_iterations: usize,
}

impl Model {
    fn from_mu(
        m: Vec<Vec<f64>>,
        u: Vec<Vec<f64>>,
        match_share: f64,
        em_iterations: usize,
    ) -> Model {
        let weights = m
            .iter()
            .zip(&u)
            .map(|(ms, us)| {
                ms.iter()
                    .zip(us)
                    .map(|(m, u)| (m.max(1e-6) / u.max(1e-7)).log2())
                    .collect()
            })
            .collect();
        Model {
            m,
            u,
            weights,
            match_share,
            em_iterations,
        }
    }

    pub fn score(&self, levels: &Levels) -> f64 {
        levels
            .iter()
            .enumerate()
            .filter(|(_, l)| **l != MISSING)
            .map(|(f, l)| self.weights[f][*l as usize])
            .sum()
    }

    /// The score without the NHS-number field (for pairs that conflict on it).
    pub fn score_without_nhs(&self, levels: &Levels) -> f64 {
        let mut l = *levels;
        l[0] = MISSING;
        self.score(&l)
    }

    pub fn evidence(&self, levels: &Levels) -> Vec<FieldWeight> {
        Field::ALL
            .iter()
            .zip(levels)
            .map(|(f, l)| {
                if *l == MISSING {
                    FieldWeight {
                        field: f.name().into(),
                        level: "missing".into(),
                        weight: 0.0,
                    }
                } else {
                    FieldWeight {
                        field: f.name().into(),
                        level: f.levels()[*l as usize].into(),
                        weight: self.weight(*f, *l),
                    }
                }
            })
            .collect()
    }

    pub fn weight(&self, field: Field, level: u8) -> f64 {
        let f = Field::ALL.iter().position(|x| *x == field).unwrap_or(0);
        self.weights[f][level as usize]
    }
}

/// Blocking: records sharing any key become candidate pairs. Keys are chosen so that
/// each injected fault leaves at least one key intact: the birth date (names spelt
/// apart), family sound + given initial + birth year (day/month swapped, estimated
/// dates), the NHS number (birth dates that disagree), and the postcode with the family
/// sound (birth date missing or wrong).
fn blocking_keys(s: &Subject, out: &mut Vec<u64>) {
    use std::hash::{Hash, Hasher};
    let mut key = |tag: u8, parts: &[&dyn HashPart]| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        tag.hash(&mut h);
        for p in parts {
            p.feed(&mut h);
        }
        out.push(h.finish());
    };
    if let Some(d) = s.birth_date {
        key(1, &[&d.num_days_from_ce()]);
        if !s.family_sx.is_empty() {
            key(
                2,
                &[
                    &s.family_sx.as_str(),
                    &s.given.chars().next().unwrap_or(' '),
                    &d.year(),
                ],
            );
        }
    }
    if let Some(n) = &s.nhs {
        key(3, &[&n.as_str()]);
    }
    if let Some(p) = &s.postcode {
        if !s.family_sx.is_empty() {
            key(4, &[&p.as_str(), &s.family_sx.as_str()]);
        }
    }
}

trait HashPart {
    fn feed(&self, h: &mut std::collections::hash_map::DefaultHasher);
}
impl<T: std::hash::Hash> HashPart for T {
    fn feed(&self, h: &mut std::collections::hash_map::DefaultHasher) {
        self.hash(h);
    }
}

/// Candidate pairs (i < j), each once, and how many blocks were too big to pair. With
/// `only`, just the pairs that include a marked record (incremental linkage).
pub fn candidate_pairs(
    subjects: &[Subject],
    max_block: usize,
    only: Option<&[bool]>,
) -> (Vec<(u32, u32)>, usize) {
    let mut keys = Vec::new();
    let wanted: Option<std::collections::HashSet<u64>> = only.map(|marks| {
        let mut set = std::collections::HashSet::new();
        for (s, _) in subjects.iter().zip(marks).filter(|(_, m)| **m) {
            keys.clear();
            blocking_keys(s, &mut keys);
            set.extend(keys.iter().copied());
        }
        set
    });
    let mut blocks: HashMap<u64, Vec<u32>> = HashMap::new();
    for (i, s) in subjects.iter().enumerate() {
        keys.clear();
        blocking_keys(s, &mut keys);
        for k in &keys {
            if wanted.as_ref().is_none_or(|w| w.contains(k)) {
                blocks.entry(*k).or_default().push(i as u32);
            }
        }
    }
    let mut skipped = 0;
    let mut pairs: Vec<(u32, u32)> = Vec::new();
    for members in blocks.values() {
        if members.len() > max_block {
            skipped += 1;
            continue;
        }
        for (x, &a) in members.iter().enumerate() {
            for &b in &members[x + 1..] {
                if only.is_none_or(|m| m[a as usize] || m[b as usize]) {
                    pairs.push((a.min(b), a.max(b)));
                }
            }
        }
    }
    pairs.sort_unstable();
    pairs.dedup();
    (pairs, skipped)
}

/// A deterministic stream for sampling random pairs (splitmix64).
struct Sampler(u64);
impl Sampler {
    fn next(&mut self, below: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z % below.max(1) as u64) as usize
    }
}

/// Fewer anchor pairs than this and m is estimated by EM instead.
const ANCHOR_MIN: usize = 50;

/// Fit m and u: u from random pairs (or configured), m by EM over the candidate pairs'
/// comparison patterns (or configured).
pub fn fit(config: &LinkageConfig, subjects: &[Subject], candidates: &[Levels]) -> Model {
    let configured = |f: Field| config.fields.get(f.name()).map(|p| p.get_ref().clone());
    // u: level frequencies among random pairs, smoothed so a level never seen still
    // has a small probability.
    let mut u_counts: Vec<Vec<f64>> = Field::ALL
        .iter()
        .map(|f| vec![0.0; f.levels().len()])
        .collect();
    if subjects.len() > 1 {
        let mut rng = Sampler(0x5EED);
        for _ in 0..config.estimate.random_pairs {
            let (a, b) = (rng.next(subjects.len()), rng.next(subjects.len()));
            if a == b {
                continue;
            }
            for (f, l) in compare(&subjects[a], &subjects[b]).iter().enumerate() {
                if *l != MISSING {
                    u_counts[f][*l as usize] += 1.0;
                }
            }
        }
    }
    let u: Vec<Vec<f64>> = Field::ALL
        .iter()
        .enumerate()
        .map(|(f, field)| match configured(*field).and_then(|p| p.u) {
            Some(u) => u,
            None => {
                let total: f64 = u_counts[f].iter().sum();
                let n = u_counts[f].len() as f64;
                u_counts[f]
                    .iter()
                    .map(|c| (c + 0.5) / (total + 0.5 * n))
                    .collect()
            }
        })
        .collect();
    let mut m: Vec<Vec<f64>> = Field::ALL
        .iter()
        .map(|f| {
            configured(*f)
                .and_then(|p| p.m)
                .unwrap_or_else(|| f.default_m().to_vec())
        })
        .collect();
    let m_fixed: Vec<bool> = Field::ALL
        .iter()
        .map(|f| configured(*f).is_some_and(|p| p.m.is_some()))
        .collect();
    let mut share = 0.1;
    let mut iterations = 0;
    let mut use_em = config.estimate.m == config::MEstimate::Em;
    if config.estimate.m == config::MEstimate::AnchorPairs {
        // Pairs sharing a valid NHS number are matches with near certainty: count the
        // other fields' levels on them. (EM over blocked pairs drifts towards "shares a
        // birth date" as the match class when most candidates are non-matches.)
        let anchors: Vec<&Levels> = candidates.iter().filter(|l| l[0] == 0).collect();
        if anchors.len() >= ANCHOR_MIN {
            const PRIOR_WEIGHT: f64 = 20.0;
            for f in 1..FIELDS {
                if m_fixed[f] {
                    continue;
                }
                let mut counts: Vec<f64> = m[f].iter().map(|p| p * PRIOR_WEIGHT).collect();
                for l in &anchors {
                    if l[f] != MISSING {
                        counts[l[f] as usize] += 1.0;
                    }
                }
                let total: f64 = counts.iter().sum();
                m[f] = counts.iter().map(|c| (c / total).max(1e-5)).collect();
            }
            share = anchors.len() as f64 / candidates.len() as f64;
        } else {
            use_em = true;
        }
    }
    if use_em && !candidates.is_empty() {
        let mut patterns: HashMap<Levels, f64> = HashMap::new();
        for l in candidates {
            *patterns.entry(*l).or_default() += 1.0;
        }
        let total: f64 = patterns.values().sum();
        for _ in 0..config.estimate.iterations {
            iterations += 1;
            let mut acc: Vec<Vec<f64>> = m.iter().map(|ms| vec![0.0; ms.len()]).collect();
            let mut matched = 0.0;
            for (levels, count) in &patterns {
                let (mut pm, mut pu) = (share, 1.0 - share);
                for (f, l) in levels.iter().enumerate() {
                    if *l != MISSING {
                        pm *= m[f][*l as usize];
                        pu *= u[f][*l as usize];
                    }
                }
                let g = if pm + pu > 0.0 { pm / (pm + pu) } else { 0.0 };
                matched += g * count;
                for (f, l) in levels.iter().enumerate() {
                    if *l != MISSING {
                        acc[f][*l as usize] += g * count;
                    }
                }
            }
            let new_share = (matched / total).clamp(1e-6, 1.0 - 1e-6);
            let mut moved: f64 = (new_share - share).abs();
            share = new_share;
            for f in 0..FIELDS {
                if m_fixed[f] {
                    continue;
                }
                let sum: f64 = acc[f].iter().sum();
                if sum <= 0.0 {
                    continue;
                }
                let n = acc[f].len() as f64;
                for (l, a) in acc[f].iter().enumerate() {
                    let new = ((a + 0.01) / (sum + 0.01 * n)).max(1e-5);
                    moved = moved.max((new - m[f][l]).abs());
                    m[f][l] = new;
                }
            }
            if moved < 1e-6 {
                break;
            }
        }
    }
    Model::from_mu(m, u, share, iterations)
}

/// The outcome class of a score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Match,
    Review,
    NonMatch,
}

pub fn classify(config: &LinkageConfig, score: f64) -> Class {
    if score >= *config.thresholds.match_score.get_ref() {
        Class::Match
    } else if score >= *config.thresholds.review.get_ref() {
        Class::Review
    } else {
        Class::NonMatch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(family: &str, given: &str, dob: &str, pc: Option<&str>) -> Subject {
        Subject::new(
            None,
            Some(family),
            Some(given),
            Some(dob.parse().unwrap()),
            false,
            Some("FEMALE"),
            pc,
            false,
        )
    }

    #[test]
    fn levels_cover_the_injected_faults() {
        let a = s("SMITH", "Mary", "1950-03-07", Some("NS1 2AB"));
        assert_eq!(compare(&a, &a), [MISSING, 0, 0, 0, 0, 0]);
        let swapped = s("Smith", "Mary Ann", "1950-07-03", Some("ns12ab"));
        assert_eq!(compare(&a, &swapped), [MISSING, 0, 0, 1, 0, 0]);
        let estimated = s("Smith", "Mary", "1950-01-01", Some("NOT KNOWN"));
        assert_eq!(compare(&a, &estimated), [MISSING, 0, 0, 2, 0, MISSING]);
        let other = s("Smyth", "Marie", "1951-03-07", Some("NS1 9ZZ"));
        let l = compare(&a, &other);
        assert_eq!((l[1], l[2], l[3], l[5]), (2, 2, 4, 1));
        let typo = s("Smiht", "Jean", "1950-03-07", None);
        let l = compare(&a, &typo);
        assert_eq!((l[1], l[2], l[5]), (1, 3, MISSING));
    }

    #[test]
    fn em_separates_matches_from_non_matches() {
        // 200 people, each with a second record that sometimes has a swapped date.
        let families = [
            "SMITH", "JONES", "PATEL", "KHAN", "WOOD", "HALL", "KING", "WARD",
        ];
        let givens = [
            "MARY", "JOHN", "ADA", "LEO", "ALI", "JOAN", "MIA", "JACK", "AVA", "TOM",
        ];
        let mut subjects = Vec::new();
        for i in 0..200usize {
            let d = NaiveDate::from_ymd_opt(
                1930 + (i % 60) as i32,
                1 + (i % 12) as u32,
                1 + (i % 27) as u32,
            )
            .unwrap();
            let pc = format!("NS{} {}AB", i % 19 + 1, i % 9 + 1);
            let mk = |d: NaiveDate| {
                Subject::new(
                    None,
                    Some(families[i % 8]),
                    Some(givens[(i / 8) % 10]),
                    Some(d),
                    false,
                    Some(if i % 2 == 0 { "MALE" } else { "FEMALE" }),
                    Some(&pc),
                    false,
                )
            };
            subjects.push(mk(d));
            let second = if i % 10 == 0 {
                NaiveDate::from_ymd_opt(d.year(), d.day().min(12), d.month()).unwrap()
            } else {
                d
            };
            subjects.push(mk(second));
        }
        let config = LinkageConfig::default();
        let (pairs, _) = candidate_pairs(&subjects, 400, None);
        let levels: Vec<Levels> = pairs
            .iter()
            .map(|(a, b)| compare(&subjects[*a as usize], &subjects[*b as usize]))
            .collect();
        let model = fit(&config, &subjects, &levels);
        let mut true_matches = 0;
        for ((a, b), l) in pairs.iter().zip(&levels) {
            let same = a / 2 == b / 2;
            let class = classify(&config, model.score(l));
            if same {
                assert_ne!(class, Class::NonMatch, "{l:?} {}", model.score(l));
                true_matches += usize::from(class == Class::Match);
            } else {
                assert_ne!(class, Class::Match, "{l:?} {}", model.score(l));
            }
        }
        assert!(true_matches >= 190, "{true_matches}");
        assert!(model.weight(Field::BirthDate, 0) > 5.0);
        assert!(model.weight(Field::BirthDate, 4) < 0.0);
    }
}
