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

    /// Default m per level: the priors of estimation, and the fallback model's m
    /// (documented in `config/README.md`).
    pub fn default_m(self) -> &'static [f64] {
        match self {
            Field::NhsNumber => &[0.99, 0.01],
            Field::FamilyName => &[0.94, 0.02, 0.01, 0.03],
            Field::GivenName => &[0.93, 0.03, 0.01, 0.03],
            Field::BirthDate => &[0.92, 0.01, 0.03, 0.02, 0.02],
            Field::Sex => &[0.97, 0.03],
            Field::Postcode => &[0.85, 0.05, 0.10],
        }
    }

    /// Default u per level: how often two different people of a council's population
    /// reach each level (the fallback model's u, documented in `config/README.md`).
    /// Birth dates: one day in ~90 years; postcodes: a unit holds ~15 households.
    pub fn default_u(self) -> &'static [f64] {
        match self {
            Field::NhsNumber => &[0.000_001, 0.999_999],
            Field::FamilyName => &[0.003, 0.002, 0.01, 0.985],
            Field::GivenName => &[0.01, 0.005, 0.01, 0.975],
            Field::BirthDate => &[0.000_03, 0.000_01, 0.000_3, 0.012, 0.987_66],
            Field::Sex => &[0.5, 0.5],
            Field::Postcode => &[0.000_1, 0.05, 0.949_9],
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
    /// The record's authority (an index into the run's authorities), and its linkage
    /// group: authorities joined by `[authorities] link` pairs. Only records of one group
    /// are blocked together.
    pub authority: u16,
    pub group: u16,
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
            authority: 0,
            group: 0,
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

/// The model in use: m, u and the weight of every level of every field, how it was
/// estimated, and why a fitted model was rejected (then the defaults are in use).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Model {
    pub m: Vec<Vec<f64>>,
    pub u: Vec<Vec<f64>>,
    pub weights: Vec<Vec<f64>>,
    /// Estimated share of candidate pairs that are matches.
    pub match_share: f64,
    pub em_iterations: usize,
    /// How m was estimated: `anchor_pairs`, `em`, `priors`, or `defaults` (the fitted
    /// model failed its checks, or there was nothing to fit on).
    #[serde(default)]
    pub estimate: String,
    /// Candidate pairs sharing a valid NHS number (what `anchor_pairs` counts on).
    #[serde(default)]
    pub anchor_pairs: usize,
    /// Why the fitted model was not used; empty when it was.
    #[serde(default)]
    pub rejected: Vec<String>,
}

/// Fewer anchor pairs than this and m cannot be counted on them.
pub const ANCHOR_MIN: usize = 100;
/// Random pairs that compare a field (both records have it) needed to count its u.
const U_MIN: f64 = 100.0;
/// A fitted level weight must be at least this far from zero, agreeing above and
/// disagreeing below (a field that tells nothing either way is a broken fit), or half
/// as far as the default's where that is less.
const WEIGHT_MARGIN: f64 = 1.0;
/// Bounds of a plausible match share among candidate pairs: an estimate of (almost)
/// nothing or (almost) everything is EM run into a corner.
const SHARE_BOUNDS: (f64, f64) = (1e-5, 0.99);

impl Model {
    fn from_mu(
        m: Vec<Vec<f64>>,
        u: Vec<Vec<f64>>,
        match_share: f64,
        em_iterations: usize,
        estimate: &str,
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
            estimate: estimate.to_string(),
            anchor_pairs: 0,
            rejected: Vec::new(),
        }
    }

    /// The documented default m and u (`config/README.md`): what linkage uses when a
    /// fitted model fails its checks.
    pub fn defaults(rejected: Vec<String>) -> Model {
        let m = Field::ALL.iter().map(|f| f.default_m().to_vec()).collect();
        let u = Field::ALL.iter().map(|f| f.default_u().to_vec()).collect();
        let mut model = Model::from_mu(m, u, 0.0, 0, "defaults");
        model.rejected = rejected;
        model
    }

    /// What is wrong with a fitted model, if anything: per field, the agreeing level
    /// must weigh for a match and the disagreeing level against it, each by at least
    /// [`WEIGHT_MARGIN`] bits (or half the default's weight, for a field that never
    /// tells much: sex agrees for half of all pairs); the match share must be plausible.
    pub fn problems(&self) -> Vec<String> {
        let defaults = Model::default_weights();
        let mut out = Vec::new();
        for (f, field) in Field::ALL.iter().enumerate() {
            let levels = field.levels();
            let last = levels.len() - 1;
            let (agree, disagree) = (self.weights[f][0], self.weights[f][last]);
            let at_least = WEIGHT_MARGIN.min(defaults[f][0] / 2.0);
            let at_most = (-WEIGHT_MARGIN).max(defaults[f][last] / 2.0);
            if agree.is_nan() || agree < at_least {
                out.push(format!(
                    "{} `{}` weighs {agree:.2} bits (agreement must weigh at least +{at_least:.2})",
                    field.name(),
                    levels[0]
                ));
            }
            if disagree.is_nan() || disagree > at_most {
                out.push(format!(
                    "{} `{}` weighs {disagree:.2} bits (disagreement must weigh at most {at_most:.2})",
                    field.name(),
                    levels[last]
                ));
            }
        }
        let (lo, hi) = SHARE_BOUNDS;
        if !(self.match_share > lo && self.match_share <= hi) {
            out.push(format!(
                "estimated match share {:.6} is outside ({lo}, {hi}]",
                self.match_share
            ));
        }
        out
    }

    fn default_weights() -> Vec<Vec<f64>> {
        Model::defaults(Vec::new()).weights
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

    /// The per-field weights of a score (with a pair's [`name_adjustment`] added, so
    /// that they still add up to it).
    pub fn evidence(&self, levels: &Levels, adjust: &[f64; FIELDS]) -> Vec<FieldWeight> {
        Field::ALL
            .iter()
            .zip(levels)
            .zip(adjust)
            .map(|((f, l), adjust)| {
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
                        weight: self.weight(*f, *l) + adjust,
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

/// Blocking: records sharing a key become candidate pairs. Each key keeps two fields
/// whole, so that any one fault leaves a key intact, while pairs that share only a
/// birth date (hundreds per day in a large council) are never formed:
/// the birth date with the family sound (given name spelt apart) and with the given
/// sound (family name changed or spelt apart); both name sounds with the year and the
/// day and month in either order (day and month swapped); the NHS number (birth dates
/// that disagree); the postcode with the family sound (birth date missing or wrong).
/// Both name sounds with the birth year pair a record only with one whose birth date
/// is estimated (a real date against a 1 January guess, never two real dates that
/// merely share a year).
fn blocking_keys(s: &Subject, out: &mut Vec<u64>, estimated_year: &mut Option<u64>) {
    use std::hash::{Hash, Hasher};
    let key = |tag: u8, parts: &[&dyn HashPart]| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        tag.hash(&mut h);
        s.group.hash(&mut h);
        for p in parts {
            p.feed(&mut h);
        }
        h.finish()
    };
    let (family, given) = (s.family_sx.as_str(), s.given_sx.as_str());
    if let Some(d) = s.birth_date {
        let day = d.num_days_from_ce();
        if !family.is_empty() {
            out.push(key(1, &[&day, &family]));
        }
        if !given.is_empty() {
            out.push(key(2, &[&day, &given]));
        }
        if !family.is_empty() && !given.is_empty() {
            let (lo, hi) = (d.day().min(d.month()), d.day().max(d.month()));
            out.push(key(5, &[&family, &given, &d.year(), &lo, &hi]));
            *estimated_year = Some(key(6, &[&family, &given, &d.year()]));
        }
    }
    if let Some(n) = &s.nhs {
        out.push(key(3, &[&n.as_str()]));
    }
    if let Some(p) = &s.postcode {
        if !family.is_empty() {
            out.push(key(4, &[&p.as_str(), &family]));
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

/// The blocks of a full build, as sorted runs of (key, record position): where an
/// incremental refresh looks up the records a changed record may pair with, instead of
/// blocking every record again. Records added later are appended to `added` (kept
/// sorted); entries of changed records stay as they were (a superset is harmless: the
/// pairs themselves are formed afresh among the records looked up).
#[derive(Debug, Default)]
pub struct BlockIndex {
    entries: Vec<(u64, u32)>,
    years: Vec<(u64, bool, u32)>,
    added: Vec<(u64, u32)>,
    added_years: Vec<(u64, bool, u32)>,
}

impl BlockIndex {
    /// Adds the blocks of `subject`, at position `at` (a position past the build's).
    pub fn add(&mut self, subject: &Subject, at: u32) {
        let (mut keys, mut year) = (Vec::new(), None);
        blocking_keys(subject, &mut keys, &mut year);
        for k in keys {
            let i = self.added.partition_point(|e| *e < (k, at));
            self.added.insert(i, (k, at));
        }
        if let Some(k) = year {
            let e = (k, subject.birth_estimated, at);
            let i = self.added_years.partition_point(|x| *x < e);
            self.added_years.insert(i, e);
        }
    }

    /// Positions of the records that share a block with `subject` (blocks larger than
    /// `max_block` give none, as in [`candidate_pairs`]); may include `subject`'s own.
    pub fn partners(&self, subject: &Subject, max_block: usize) -> Vec<u32> {
        let (mut keys, mut year) = (Vec::new(), None);
        blocking_keys(subject, &mut keys, &mut year);
        let run = |list: &[(u64, u32)], k: u64| -> std::ops::Range<usize> {
            list.partition_point(|e| e.0 < k)..list.partition_point(|e| e.0 <= k)
        };
        let mut out = Vec::new();
        for k in keys {
            let (a, b) = (run(&self.entries, k), run(&self.added, k));
            if a.len() + b.len() > max_block {
                continue;
            }
            out.extend(self.entries[a].iter().chain(&self.added[b]).map(|e| e.1));
        }
        if let Some(k) = year {
            let run = |list: &[(u64, bool, u32)]| -> std::ops::Range<usize> {
                list.partition_point(|e| e.0 < k)..list.partition_point(|e| e.0 <= k)
            };
            let block: Vec<(bool, u32)> = self.years[run(&self.years)]
                .iter()
                .chain(&self.added_years[run(&self.added_years)])
                .map(|e| (e.1, e.2))
                .collect();
            let e = block.iter().filter(|x| x.0).count();
            let r = block.len() - e;
            if e * e.saturating_sub(1) / 2 + e * r <= max_block * max_block.saturating_sub(1) / 2 {
                // An estimated date pairs with every date of its year; a real one only
                // with the estimated ones.
                out.extend(
                    block
                        .iter()
                        .filter(|x| subject.birth_estimated || x.0)
                        .map(|x| x.1),
                );
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// Candidate pairs (i < j), each once, and how many blocks were too big to pair. With
/// `only`, just the pairs that include a marked record (incremental linkage). Pairs of
/// records whose authorities may not be linked (`allowed`) are never formed.
pub fn candidate_pairs(
    subjects: &[Subject],
    max_block: usize,
    only: Option<&[bool]>,
    allowed: impl Fn(u16, u16) -> bool,
) -> (Vec<(u32, u32)>, usize) {
    let (pairs, skipped, _) = blocked_pairs(subjects, max_block, only, allowed);
    (pairs, skipped)
}

/// The blocks of every record, as a full build keeps them for incremental runs: for a
/// process that restarted (the blocks are not kept in the file), built again without
/// pairing anyone.
pub fn block_index(subjects: &[Subject]) -> BlockIndex {
    let (entries, years) = block_entries(subjects, |_| true);
    BlockIndex {
        entries,
        years,
        ..BlockIndex::default()
    }
}

/// Blocking keys with their record's position, and birth-year keys with whether the
/// date is estimated: sorted, so that a block is a run.
type BlockEntries = (Vec<(u64, u32)>, Vec<(u64, bool, u32)>);

/// Each record's blocking keys (and birth-year key) that `wanted` keeps.
fn block_entries(subjects: &[Subject], wanted: impl Fn(&u64) -> bool) -> BlockEntries {
    let mut keys = Vec::new();
    // Blocks as runs of a sorted list of (key, record): far less memory than a map of
    // vectors when a million records give five keys each.
    let mut entries: Vec<(u64, u32)> = Vec::with_capacity(subjects.len() * 5);
    let mut years: Vec<(u64, bool, u32)> = Vec::new();
    for (i, s) in subjects.iter().enumerate() {
        keys.clear();
        let mut year = None;
        blocking_keys(s, &mut keys, &mut year);
        entries.extend(keys.iter().filter(|k| wanted(k)).map(|k| (*k, i as u32)));
        if let Some(k) = year.filter(|k| wanted(k)) {
            years.push((k, s.birth_estimated, i as u32));
        }
    }
    entries.sort_unstable();
    years.sort_unstable();
    (entries, years)
}

/// [`candidate_pairs`] over all records, and the blocks, kept for incremental runs.
pub fn candidate_pairs_indexed(
    subjects: &[Subject],
    max_block: usize,
    allowed: impl Fn(u16, u16) -> bool,
) -> (Vec<(u32, u32)>, usize, BlockIndex) {
    blocked_pairs(subjects, max_block, None, allowed)
}

fn blocked_pairs(
    subjects: &[Subject],
    max_block: usize,
    only: Option<&[bool]>,
    allowed: impl Fn(u16, u16) -> bool,
) -> (Vec<(u32, u32)>, usize, BlockIndex) {
    let mut keys = Vec::new();
    let mut year = None;
    let wanted: Option<std::collections::HashSet<u64>> = only.map(|marks| {
        let mut set = std::collections::HashSet::new();
        for (s, _) in subjects.iter().zip(marks).filter(|(_, m)| **m) {
            keys.clear();
            year = None;
            blocking_keys(s, &mut keys, &mut year);
            set.extend(keys.iter().copied().chain(year));
        }
        set
    });
    let (entries, years) =
        block_entries(subjects, |k| wanted.as_ref().is_none_or(|w| w.contains(k)));
    let mut skipped = 0;
    let mut pairs: Vec<(u32, u32)> = Vec::new();
    let mut push = |a: u32, b: u32| {
        if only.is_none_or(|m| m[a as usize] || m[b as usize])
            && allowed(
                subjects[a as usize].authority,
                subjects[b as usize].authority,
            )
        {
            pairs.push((a.min(b), a.max(b)));
        }
    };
    for block in entries.chunk_by(|x, y| x.0 == y.0) {
        if block.len() > max_block {
            skipped += 1;
            continue;
        }
        for (x, &(_, a)) in block.iter().enumerate() {
            for &(_, b) in &block[x + 1..] {
                push(a, b);
            }
        }
    }
    for block in years.chunk_by(|x, y| x.0 == y.0) {
        // Real dates first (false sorts first), then the estimated ones.
        let split = block.partition_point(|e| !e.1);
        let (real, estimated) = block.split_at(split);
        // As many pairs as a full block of `max_block` records would give, at most.
        let (e, r) = (estimated.len(), real.len());
        if e * e.saturating_sub(1) / 2 + e * r > max_block * max_block.saturating_sub(1) / 2 {
            skipped += 1;
            continue;
        }
        for (x, &(_, _, a)) in estimated.iter().enumerate() {
            for &(_, _, b) in estimated[x + 1..].iter().chain(real) {
                push(a, b);
            }
        }
    }
    pairs.sort_unstable();
    pairs.dedup();
    let index = BlockIndex {
        entries,
        years,
        ..BlockIndex::default()
    };
    (pairs, skipped, index)
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

/// Fit m and u, then check the result: u from random pairs (or configured), m counted
/// on anchor pairs, by EM over the candidate pairs' comparison patterns, or as
/// configured. A model that fails [`Model::problems`] is not used: the documented
/// defaults are ([`Model::defaults`]), with the reasons in `rejected`.
pub fn fit(
    config: &LinkageConfig,
    subjects: &[Subject],
    candidates: &[Levels],
    allowed: impl Fn(u16, u16) -> bool,
) -> Model {
    let configured = |f: Field| config.fields.get(f.name()).map(|p| p.get_ref().clone());
    // u: level frequencies among random pairs (of records that may be linked at all),
    // smoothed so a level never seen still has a small probability.
    let mut u_counts: Vec<Vec<f64>> = Field::ALL
        .iter()
        .map(|f| vec![0.0; f.levels().len()])
        .collect();
    if subjects.len() > 1 {
        let mut rng = Sampler(0x5EED);
        for _ in 0..config.estimate.random_pairs {
            let (a, b) = (rng.next(subjects.len()), rng.next(subjects.len()));
            if a == b || !allowed(subjects[a].authority, subjects[b].authority) {
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
        .map(|(f, field)| {
            let total: f64 = u_counts[f].iter().sum();
            match configured(*field).and_then(|p| p.u) {
                Some(u) => u,
                // A field (almost) no record has: nothing to count, so the default.
                None if total < U_MIN => field.default_u().to_vec(),
                None => {
                    let n = u_counts[f].len() as f64;
                    u_counts[f]
                        .iter()
                        .map(|c| (c + 0.5) / (total + 0.5 * n))
                        .collect()
                }
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
    // Pairs sharing a valid NHS number are matches with near certainty.
    let anchors: Vec<&Levels> = candidates.iter().filter(|l| l[0] == 0).collect();
    let mut share = 0.1;
    let mut iterations = 0;
    let mut rejected = Vec::new();
    match config.estimate.m {
        config::MEstimate::Priors => {}
        config::MEstimate::AnchorPairs if anchors.len() < ANCHOR_MIN => {
            rejected.push(format!(
                "only {} candidate pairs share a valid NHS number: m is counted on at least {ANCHOR_MIN}",
                anchors.len()
            ));
        }
        config::MEstimate::AnchorPairs => {
            // Count the other fields' levels on the anchor pairs. (EM over blocked pairs
            // drifts towards "shares a birth date" as the match class when most
            // candidates are non-matches.)
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
        }
        config::MEstimate::Em => {
            (share, iterations) = em(config, candidates, &mut m, &u, &m_fixed);
        }
    }
    let estimate = match config.estimate.m {
        config::MEstimate::AnchorPairs => "anchor_pairs",
        config::MEstimate::Em => "em",
        config::MEstimate::Priors => "priors",
    };
    let mut model = Model::from_mu(m, u, share, iterations, estimate);
    model.anchor_pairs = anchors.len();
    if rejected.is_empty() {
        rejected = model.problems();
    }
    if rejected.is_empty() {
        return model;
    }
    let mut defaults = Model::defaults(rejected);
    defaults.anchor_pairs = anchors.len();
    defaults
}

/// Expectation-maximisation of m and the match share over the candidate pairs'
/// comparison patterns, from the priors in `m`; returns (share, iterations). u is
/// re-estimated inside EM as well: blocked non-matches agree far more often than random
/// pairs (siblings share a name and an address), and with u held at the random pairs'
/// EM would call every candidate a match. Scores still use the random pairs' u.
fn em(
    config: &LinkageConfig,
    candidates: &[Levels],
    m: &mut [Vec<f64>],
    u: &[Vec<f64>],
    m_fixed: &[bool],
) -> (f64, usize) {
    let mut share = 0.1;
    let mut iterations = 0;
    if candidates.is_empty() {
        return (share, iterations);
    }
    let mut u: Vec<Vec<f64>> = u.to_vec();
    let mut patterns: HashMap<Levels, f64> = HashMap::new();
    for l in candidates {
        *patterns.entry(*l).or_default() += 1.0;
    }
    let total: f64 = patterns.values().sum();
    let smooth = |acc: &[f64], out: &mut [f64]| -> f64 {
        let sum: f64 = acc.iter().sum();
        if sum <= 0.0 {
            return 0.0;
        }
        let n = acc.len() as f64;
        let mut moved: f64 = 0.0;
        for (l, a) in acc.iter().enumerate() {
            let new = ((a + 0.01) / (sum + 0.01 * n)).max(1e-5);
            moved = moved.max((new - out[l]).abs());
            out[l] = new;
        }
        moved
    };
    for _ in 0..config.estimate.iterations {
        iterations += 1;
        let mut acc_m: Vec<Vec<f64>> = m.iter().map(|ms| vec![0.0; ms.len()]).collect();
        let mut acc_u = acc_m.clone();
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
                    acc_m[f][*l as usize] += g * count;
                    acc_u[f][*l as usize] += (1.0 - g) * count;
                }
            }
        }
        let new_share = (matched / total).clamp(1e-6, 1.0 - 1e-6);
        let mut moved: f64 = (new_share - share).abs();
        share = new_share;
        for f in 0..FIELDS {
            if !m_fixed[f] {
                moved = moved.max(smooth(&acc_m[f], &mut m[f]));
            }
            moved = moved.max(smooth(&acc_u[f], &mut u[f]));
        }
        if moved < 1e-6 {
            break;
        }
    }
    (share, iterations)
}

/// The outcome class of a score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Match,
    Review,
    NonMatch,
}

/// The thresholds in force for a population of records. Scores weigh the evidence of
/// one pair; whether it is enough depends on how many people it could otherwise be:
/// the odds that two records drawn from a population are one person fall as the
/// population grows (common names and birth dates meet more often), so beyond
/// `thresholds.reference_records` both thresholds rise by log2(records / reference)
/// bits, keeping the share of wrong links from growing with the council.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Cut {
    pub match_score: f64,
    pub review: f64,
}

impl Cut {
    pub fn for_population(config: &LinkageConfig, records: usize) -> Cut {
        let reference = config.thresholds.reference_records;
        let shift = if reference == 0 || records <= reference {
            0.0
        } else {
            (records as f64 / reference as f64).log2()
        };
        Cut {
            match_score: config.thresholds.match_score.get_ref() + shift,
            review: config.thresholds.review.get_ref() + shift,
        }
    }

    pub fn classify(&self, score: f64) -> Class {
        if score >= self.match_score {
            Class::Match
        } else if score >= self.review {
            Class::Review
        } else {
            Class::NonMatch
        }
    }
}

/// What a pair's comparison allows, whatever its score. A score adds up evidence that
/// is not independent: a family name, a birth date and an address are what twins share,
/// and what a father shares with his namesake son. So without an agreeing NHS number a
/// score links only records that both have names and a birth date, whose given and
/// family names agree (exactly or nearly), whose birth dates agree (exactly, swapped,
/// or one of them estimated) and whose recorded sexes do not differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bar {
    /// The score decides.
    Clear,
    /// A score that would link queues the pair for review instead, with this reason
    /// (a score between the thresholds does not: two doubts make no candidate).
    Review(&'static str),
    /// Not a candidate at all: given names that differ (twins, siblings) or birth years
    /// that differ (a parent and a child of one name).
    Never,
}

pub fn bar(levels: &Levels) -> Bar {
    const CLOSE_NAME: u8 = 1;
    const PHONETIC_NAME: u8 = 2;
    const DIFFERENT_NAME: u8 = 3;
    const SEX_DISAGREES: u8 = 1;
    const EXACT_POSTCODE: u8 = 0;
    const ESTIMATED: u8 = 2;
    const SAME_YEAR: u8 = 3;
    const DIFFERENT_BIRTH_YEAR: u8 = 4;
    let field = |f: Field| levels[f as usize];
    let (given, dob) = (field(Field::GivenName), field(Field::BirthDate));
    if field(Field::NhsNumber) == 0 {
        // The identifier decides, unless it is all that agrees: a parent's number
        // copied onto a child's record agrees with neither birth date nor given name.
        return if dob <= ESTIMATED || given <= CLOSE_NAME {
            Bar::Clear
        } else {
            Bar::Review("NHS numbers agree, but neither birth dates nor given names do")
        };
    }
    if given == DIFFERENT_NAME || dob == DIFFERENT_BIRTH_YEAR {
        return Bar::Never;
    }
    if given == MISSING || field(Field::FamilyName) == MISSING {
        return Bar::Review("a name is missing: not linked on a score");
    }
    if given == PHONETIC_NAME {
        return Bar::Review("given names agree only in sound (twins are named alike)");
    }
    if field(Field::FamilyName) >= PHONETIC_NAME {
        return Bar::Review("family names differ: a change of name is for a steward to confirm");
    }
    if field(Field::Sex) == SEX_DISAGREES {
        return Bar::Review("recorded sexes differ: a link needs an identifier");
    }
    // A guessed birth date (or 1 January) agrees with a whole year of births: with
    // names alone beside it, namesakes of one year link. In the families estate at
    // 100,000 people this pattern made 14 of the 36 false links; an agreeing postcode
    // is the corroboration a steward would look for.
    if dob == ESTIMATED && field(Field::Postcode) != EXACT_POSTCODE {
        return Bar::Review(
            "a birth date is estimated and the postcodes do not agree: a steward confirms",
        );
    }
    match dob {
        MISSING => Bar::Review("a birth date is missing: not linked on a score"),
        SAME_YEAR => Bar::Review("birth dates differ in day and month: not linked on a score"),
        _ => Bar::Clear,
    }
}

/// Per record, the bits its family and given names lose when they agree exactly: a
/// common name is weaker evidence than the average name the model's u stands for.
/// Agreeing on a value held by a share f of the records is worth log2(avg / f) bits
/// less, where avg is the chance that two random records agree on the field (the sum
/// of the shares squared); rare names are not counted stronger than the average, so
/// the adjustment only ever lowers a score (a term-frequency adjustment, one-sided).
pub fn common_name_bits(subjects: &[Subject]) -> Vec<[f32; 2]> {
    fn bits<'a>(values: impl Iterator<Item = &'a str>) -> HashMap<&'a str, f32> {
        let mut counts: HashMap<&str, u32> = HashMap::new();
        for v in values.filter(|v| !v.is_empty()) {
            *counts.entry(v).or_default() += 1;
        }
        let n: f64 = counts.values().map(|c| f64::from(*c)).sum();
        let avg: f64 = counts.values().map(|c| (f64::from(*c) / n).powi(2)).sum();
        counts
            .into_iter()
            .map(|(v, c)| (v, (avg / (f64::from(c) / n)).log2().min(0.0) as f32))
            .collect()
    }
    let family = bits(subjects.iter().map(|s| s.family.as_str()));
    let given = bits(subjects.iter().map(|s| s.given.as_str()));
    subjects
        .iter()
        .map(|s| {
            [
                family.get(s.family.as_str()).copied().unwrap_or(0.0),
                given.get(s.given.as_str()).copied().unwrap_or(0.0),
            ]
        })
        .collect()
}

/// The common-name adjustment of a pair (record `a`'s bits from [`common_name_bits`]),
/// per field in [`Field::ALL`] order: non-zero only for names that agree exactly.
pub fn name_adjustment(bits: [f32; 2], levels: &Levels) -> [f64; FIELDS] {
    let mut out = [0.0; FIELDS];
    for (k, field) in [Field::FamilyName, Field::GivenName]
        .into_iter()
        .enumerate()
    {
        if levels[field as usize] == 0 {
            out[field as usize] = f64::from(bits[k]);
        }
    }
    out
}

/// A full demographic trace, in the manner of NHS PDS's alphanumeric trace: family
/// name, given name, birth date, sex and postcode present and exactly equal on both
/// records, neither birth date estimated (nor 1 January), and no NHS numbers that
/// differ. A deterministic rule, applied before any score and to protected records too:
/// twins and namesakes differ in the given name or the birth date, and a protected
/// person re-registered under another name or at another address (adoption, flight
/// from abuse) differs in one of the five and is left to the score's stage, where
/// protection sends the pair to a steward.
pub fn full_trace(levels: &Levels, a: &Subject, b: &Subject) -> bool {
    const EXACT: u8 = 0;
    const NHS_DIFFERS: u8 = 1;
    levels[Field::NhsNumber as usize] != NHS_DIFFERS
        && [
            Field::FamilyName,
            Field::GivenName,
            Field::BirthDate,
            Field::Sex,
            Field::Postcode,
        ]
        .iter()
        .all(|f| levels[*f as usize] == EXACT)
        && !a.birth_estimated
        && !b.birth_estimated
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

    /// A common name's exact agreement weighs less; a rare one's no more than the
    /// average; names that do not agree exactly are not adjusted.
    #[test]
    fn common_names_weigh_less() {
        let mut people: Vec<Subject> = (0..60)
            .map(|_| s("Smith", "Mary", "1950-03-07", None))
            .collect();
        for k in 0..40 {
            let family = format!("Rare{}", char::from(b'a' + (k % 26) as u8)).repeat(1 + k / 26);
            people.push(s(&family, &format!("Given{k}"), "1950-03-07", None));
        }
        let bits = common_name_bits(&people);
        // Smith: 60 of 100 records; avg = 0.36 + 40 * 0.0001 = 0.364: log2(0.364 / 0.6).
        let expected = (0.364f64 / 0.6).log2();
        assert!(
            (f64::from(bits[0][0]) - expected).abs() < 1e-3,
            "{:?}",
            bits[0]
        );
        assert!(bits[0][1] < 0.0, "{:?}", bits[0]);
        assert_eq!(bits[60], [0.0, 0.0], "rare names are not boosted");
        let exact = compare(&people[0], &people[1]);
        let adjust = name_adjustment(bits[0], &exact);
        assert_eq!(adjust[Field::FamilyName as usize], f64::from(bits[0][0]));
        let close = compare(&people[0], &s("Smiht", "Mary", "1950-03-07", None));
        let adjust = name_adjustment(bits[0], &close);
        assert_eq!(adjust[Field::FamilyName as usize], 0.0);
        assert_eq!(adjust[Field::GivenName as usize], f64::from(bits[0][1]));
    }

    /// A full trace needs all five fields exactly equal and a real birth date: one
    /// field short, a guessed date or NHS numbers that differ, and it is no trace.
    #[test]
    fn a_full_trace_needs_five_exact_fields_and_a_real_date() {
        let a = s("Smith", "Mary", "1950-03-07", Some("NS1 2AB"));
        let trace = |b: &Subject| full_trace(&compare(&a, b), &a, b);
        assert!(trace(&s("SMITH", "mary", "1950-03-07", Some("ns12ab"))));
        for other in [
            s("Smith", "Mary", "1950-03-07", None),
            s("Smith", "Mary", "1950-03-07", Some("NS1 2AC")),
            s("Smith", "Mari", "1950-03-07", Some("NS1 2AB")),
            s("Smith", "Mary", "1950-07-03", Some("NS1 2AB")),
        ] {
            assert!(!trace(&other), "{other:?}");
        }
        let mut male = s("Smith", "Mary", "1950-03-07", Some("NS1 2AB"));
        male.sex = Some('M');
        assert!(!trace(&male));
        let guessed = s("Smith", "Mary", "1950-01-01", Some("NS1 2AB"));
        assert!(!full_trace(
            &compare(&guessed, &guessed),
            &guessed,
            &guessed
        ));
        let mut flagged = a.clone();
        flagged.birth_estimated = true;
        assert!(!full_trace(&compare(&a, &flagged), &a, &flagged));
        let (mut x, mut y) = (a.clone(), a.clone());
        x.nhs = Some("9434765919".into());
        y.nhs = Some("9434765927".into());
        assert!(!full_trace(&compare(&x, &y), &x, &y));
    }

    /// The degenerate fit: a birth date worth 14.5 bits, a different given name
    /// nearly free, disagreeing sexes slightly for a match, everything a match.
    #[test]
    fn a_degenerate_model_fails_its_checks_and_the_defaults_pass() {
        let mut m: Vec<Vec<f64>> = Field::ALL.iter().map(|f| f.default_m().to_vec()).collect();
        let u: Vec<Vec<f64>> = Field::ALL.iter().map(|f| f.default_u().to_vec()).collect();
        m[Field::GivenName as usize][3] = 0.85;
        m[Field::Sex as usize] = vec![0.48, 0.52];
        let model = Model::from_mu(m, u, 0.999_999, 25, "em");
        let problems = model.problems();
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("given_name `different`")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.starts_with("sex `disagree`")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("match share")),
            "{problems:?}"
        );
        assert!(Model::defaults(Vec::new())
            .problems()
            .iter()
            .all(|p| p.contains("match share")));

        // Fitting with nothing to anchor on gives the defaults, with the reason.
        let subjects = vec![s("SMITH", "Mary", "1950-03-07", None); 3];
        let fitted = fit(&LinkageConfig::default(), &subjects, &[], |_, _| true);
        assert_eq!(fitted.estimate, "defaults");
        assert!(
            fitted.rejected[0].contains("share a valid NHS number"),
            "{:?}",
            fitted.rejected
        );
        assert_eq!(fitted.weights, Model::defaults(Vec::new()).weights);
    }

    #[test]
    fn bars_keep_twins_siblings_and_namesakes_apart() {
        let base = s("SMITH", "Mary", "1950-03-07", Some("NS1 2AB"));
        let bar_of = |other: &Subject| bar(&compare(&base, other));
        assert_eq!(bar_of(&base), Bar::Clear);
        // A twin: another given name, everything else the same.
        assert_eq!(
            bar_of(&s("SMITH", "Joan", "1950-03-07", Some("NS1 2AB"))),
            Bar::Never
        );
        // A mother and daughter of one name.
        assert_eq!(
            bar_of(&s("SMITH", "Mary", "1975-03-07", Some("NS1 2AB"))),
            Bar::Never
        );
        // Named alike, a birth date a few days apart, a changed family name: review.
        for other in [
            s("SMITH", "Marie", "1950-03-07", Some("NS1 2AB")),
            s("SMITH", "Mary", "1950-03-09", Some("NS1 2AB")),
            s("JONES", "Mary", "1950-03-07", Some("NS1 2AB")),
        ] {
            assert!(
                matches!(bar_of(&other), Bar::Review(_)),
                "{:?}",
                compare(&base, &other)
            );
        }
        // A guessed birth date (1 January of the year) with names alone: a namesake of
        // that year as likely as the person; with the postcode agreeing, the score decides.
        for postcode in [Some("NS9 9ZZ"), None] {
            let guessed = s("SMITH", "Mary", "1950-01-01", postcode);
            assert!(matches!(bar_of(&guessed), Bar::Review(_)), "{postcode:?}");
        }
        assert_eq!(
            bar_of(&s("SMITH", "Mary", "1950-01-01", Some("NS1 2AB"))),
            Bar::Clear
        );
        // Recorded sexes that differ need an identifier.
        let mut male = base.clone();
        male.sex = Some('M');
        assert!(matches!(bar_of(&male), Bar::Review(_)));
        male.nhs = Some("9434765919".into());
        let mut with_nhs = base.clone();
        with_nhs.nhs = Some("9434765919".into());
        assert_eq!(bar(&compare(&with_nhs, &male)), Bar::Clear);
        // A parent's NHS number on a child's record agrees with nothing else.
        let child = Subject {
            nhs: Some("9434765919".into()),
            ..s("SMITH", "Leo", "1980-06-01", Some("NS1 2AB"))
        };
        assert!(matches!(bar(&compare(&with_nhs, &child)), Bar::Review(_)));
    }

    #[test]
    fn thresholds_rise_with_the_population() {
        let config = LinkageConfig::default();
        let small = Cut::for_population(&config, 2_000);
        assert_eq!((small.match_score, small.review), (14.0, 11.0));
        let large = Cut::for_population(&config, 4096 * 256);
        assert_eq!((large.match_score, large.review), (22.0, 19.0));
        assert_eq!(large.classify(21.9), Class::Review);
    }

    #[test]
    fn em_separates_matches_from_non_matches() {
        // 200 people, each with a second record that sometimes has a swapped date, and
        // every third with a sibling at the same address (a candidate, not a match).
        let families = [
            "SMITH", "JONES", "PATEL", "KHAN", "WOOD", "HALL", "KING", "WARD",
        ];
        let givens = [
            "MARY", "JOHN", "ADA", "LEO", "ALI", "JOAN", "MIA", "JACK", "AVA", "TOM",
        ];
        let mut subjects = Vec::new();
        let mut who = Vec::new();
        for i in 0..200usize {
            let d = NaiveDate::from_ymd_opt(
                1930 + (i % 60) as i32,
                1 + (i % 12) as u32,
                1 + (i % 27) as u32,
            )
            .unwrap();
            let pc = format!("NS{} {}AB", i % 19 + 1, i % 9 + 1);
            let mk = |given: &str, d: NaiveDate| {
                Subject::new(
                    None,
                    Some(families[i % 8]),
                    Some(given),
                    Some(d),
                    false,
                    Some(if i % 2 == 0 { "MALE" } else { "FEMALE" }),
                    Some(&pc),
                    false,
                )
            };
            let given = givens[(i / 8) % 10];
            subjects.push(mk(given, d));
            let second = if i % 10 == 0 {
                NaiveDate::from_ymd_opt(d.year(), d.day().min(12), d.month()).unwrap()
            } else {
                d
            };
            subjects.push(mk(given, second));
            who.extend([i, i]);
            if i % 3 == 0 {
                let sibling = NaiveDate::from_ymd_opt(d.year() + 3, d.month(), 2).unwrap();
                subjects.push(mk(givens[((i / 8) + 1) % 10], sibling));
                who.push(1000 + i);
            }
        }
        let mut config = LinkageConfig::default();
        config.estimate.m = config::MEstimate::Em;
        let (pairs, _) = candidate_pairs(&subjects, 400, None, |_, _| true);
        let levels: Vec<Levels> = pairs
            .iter()
            .map(|(a, b)| compare(&subjects[*a as usize], &subjects[*b as usize]))
            .collect();
        let model = fit(&config, &subjects, &levels, |_, _| true);
        assert_eq!(model.estimate, "em", "{:?}", model.rejected);
        let mut true_matches = 0;
        for ((a, b), l) in pairs.iter().zip(&levels) {
            let same = who[*a as usize] == who[*b as usize];
            let class = Cut::for_population(&config, 0).classify(model.score(l));
            if same {
                assert_ne!(class, Class::NonMatch, "{l:?} {}", model.score(l));
                true_matches += usize::from(class == Class::Match);
            } else {
                assert_ne!(class, Class::Match, "{l:?} {}", model.score(l));
            }
        }
        assert!(
            pairs.len() > 250,
            "siblings are candidates: {}",
            pairs.len()
        );
        assert!(true_matches >= 190, "{true_matches}");
        assert!(model.weight(Field::BirthDate, 0) > 5.0);
        assert!(model.weight(Field::BirthDate, 4) < 0.0);
    }
}
