//! Deterministic demo data: three legacy vendor databases (CaseTrak, OpenCare, SSIS/90)
//! for one overlapping population, with injected data-quality faults and a ground-truth
//! file saying who is who, how many records of each kind each person has, and the true
//! performance indicators and minimum data set counts (`truth_reports`).
//!
//! The population is modelled first (true people and their care history), then each
//! vendor encodes its share in its own naming, types and code lists. Faults are applied
//! during encoding and every one is listed in the truth file.

pub mod documents;
pub mod families;
pub mod load;
mod model;
mod sink;
mod truth_reports;
mod vendors;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use serde::Serialize;

pub use sink::{SqliteSink, TableSink};
pub use truth_reports::{england_and_wales_bank_holidays, Ratio, ReportNumbers, TruthReport};

/// Injected fault rates (fractions of eligible records).
#[derive(Clone, Debug)]
pub struct FaultRates {
    pub missing_nhs: f64,
    pub invalid_nhs_check_digit: f64,
    pub placeholder_nhs: f64,
    pub duplicate_within_source: f64,
    pub day_month_swap: f64,
    pub estimated_birth_date: f64,
    pub end_before_start: f64,
    pub service_after_death: f64,
    pub bad_postcode: f64,
    pub unmapped_code: f64,
}

impl FaultRates {
    pub fn none() -> FaultRates {
        FaultRates {
            missing_nhs: 0.0,
            invalid_nhs_check_digit: 0.0,
            placeholder_nhs: 0.0,
            duplicate_within_source: 0.0,
            day_month_swap: 0.0,
            estimated_birth_date: 0.0,
            end_before_start: 0.0,
            service_after_death: 0.0,
            bad_postcode: 0.0,
            unmapped_code: 0.0,
        }
    }
}

impl Default for FaultRates {
    fn default() -> FaultRates {
        FaultRates {
            missing_nhs: 0.30,
            invalid_nhs_check_digit: 0.01,
            placeholder_nhs: 0.02,
            duplicate_within_source: 0.03,
            day_month_swap: 0.01,
            estimated_birth_date: 0.03,
            end_before_start: 0.01,
            service_after_death: 0.01,
            bad_postcode: 0.02,
            unmapped_code: 0.005,
        }
    }
}

#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub seed: u64,
    pub people: usize,
    pub faults: FaultRates,
    /// All dates are relative to this, never to today, so output is reproducible.
    pub reference_date: NaiveDate,
    /// A second council gets different people from the same seed.
    pub council: String,
    /// People who moved here from another council (the same seed): known to both.
    pub movers: Option<Movers>,
}

/// The first `people` of this council are the first `people` of council `from` (same
/// seed), moved here: the same NHS number, given names, birth date, gender and
/// ethnicity, a new address (every fourth a new family name), and their own care
/// history in this council's systems.
#[derive(Clone, Debug)]
pub struct Movers {
    pub from: String,
    pub people: usize,
}

impl Default for GenerateOptions {
    fn default() -> GenerateOptions {
        GenerateOptions {
            seed: 42,
            people: 2000,
            faults: FaultRates::default(),
            reference_date: NaiveDate::from_ymd_opt(2026, 3, 31).expect("valid date"),
            council: "Northshire".into(),
            movers: None,
        }
    }
}

#[derive(Debug)]
pub struct GenerateSummary {
    pub people: usize,
    pub rows_per_source: BTreeMap<String, u64>,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("cannot write {path}: {reason}")]
    Write { path: String, reason: String },
}

/// Ground truth, written as `truth.json`.
#[derive(Debug, Default, Serialize)]
pub struct Truth {
    pub seed: u64,
    pub council: String,
    pub reference_date: NaiveDate,
    pub people: Vec<TruthPerson>,
    pub faults: Vec<TruthFault>,
    /// True indicator values and minimum data set counts per financial year.
    pub reports: Vec<TruthReport>,
    /// Every modelled event as the vendors' encoders met it, for `reports`.
    #[serde(skip)]
    events: Vec<truth_reports::Recorded>,
}

#[derive(Debug, Default, Serialize)]
pub struct TruthPerson {
    pub truth_id: String,
    pub nhs_number: String,
    pub family_name: String,
    pub given_names: String,
    pub birth_date: NaiveDate,
    pub gender: String,
    pub records: Vec<TruthRecord>,
    pub counts: BTreeMap<String, BTreeMap<String, usize>>,
}

#[derive(Debug, Serialize)]
pub struct TruthRecord {
    pub source: String,
    pub local_id: String,
}

#[derive(Debug, Serialize)]
pub struct TruthFault {
    pub source: String,
    pub entity: String,
    pub local_id: String,
    pub kind: String,
}

/// Write `casetrak.db`, `opencare.db`, `ssis.db`, `truth.json` and the documents'
/// files (`documents/`) into `out_dir`.
pub fn generate(opts: &GenerateOptions, out_dir: &Path) -> Result<GenerateSummary, GenerateError> {
    let started = Instant::now();
    let werr = |path: &Path, e: &dyn std::fmt::Display| GenerateError::Write {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(out_dir).map_err(|e| werr(out_dir, &e))?;
    let population = model::population(opts);
    let mut truth = Truth {
        seed: opts.seed,
        council: opts.council.clone(),
        reference_date: opts.reference_date,
        people: population
            .iter()
            .map(|p| TruthPerson {
                truth_id: p.truth_id.clone(),
                nhs_number: p.nhs.clone(),
                family_name: p.family.clone(),
                given_names: p.given.clone(),
                birth_date: p.dob,
                gender: p.gender.to_string(),
                ..TruthPerson::default()
            })
            .collect(),
        faults: Vec::new(),
        reports: Vec::new(),
        events: Vec::new(),
    };
    let mut rows_per_source = BTreeMap::new();
    for vendor in vendors::ALL {
        let path = out_dir.join(format!("{}.db", vendor.name()));
        let mut sink = SqliteSink::create(&path).map_err(|e| werr(&path, &e))?;
        let rows = vendor
            .write(opts, &population, &mut sink, &mut truth)
            .map_err(|e| werr(&path, &e))?;
        sink.finish().map_err(|e| werr(&path, &e))?;
        rows_per_source.insert(vendor.name().to_string(), rows);
    }
    let subjects: Vec<truth_reports::Subject> = population
        .iter()
        .map(|p| truth_reports::Subject {
            dob: p.dob,
            // Only CaseTrak has a field for a death (OpenCare and SSIS/90 have none): the
            // council knows of a death only when the person is in CaseTrak, and the
            // indicators speak of what the council knows.
            death: p.death.filter(|_| p.in_system[0]),
            opted_out: national_opt_out(opts, p),
        })
        .collect();
    truth.reports = truth_reports::reports(opts.reference_date, &subjects, &truth.events);
    // The files the document records point at (read back from the databases).
    documents::write(opts, out_dir).map_err(|reason| GenerateError::Write {
        path: out_dir.join(documents::FOLDER).display().to_string(),
        reason,
    })?;
    let truth_path = out_dir.join("truth.json");
    let file = std::fs::File::create(&truth_path).map_err(|e| werr(&truth_path, &e))?;
    serde_json::to_writer(std::io::BufWriter::new(file), &truth)
        .map_err(|e| werr(&truth_path, &e))?;
    write_national_opt_out(opts, &population, out_dir).map_err(|e| werr(out_dir, &e))?;
    Ok(GenerateSummary {
        people: population.len(),
        rows_per_source,
        elapsed: started.elapsed(),
    })
}

/// About 3% of people registered a national data opt-out: their NHS numbers, one a
/// line, in `national_opt_out.txt`. Chosen by a hash of seed and person (no draw from
/// the generator's random stream, so the vendor data stays the same).
fn write_national_opt_out(
    opts: &GenerateOptions,
    population: &[model::TruePerson],
    out_dir: &Path,
) -> std::io::Result<()> {
    let mut text = String::from("# National data opt-out (demo): NHS numbers, one a line\n");
    for p in population.iter().filter(|p| national_opt_out(opts, p)) {
        text.push_str(&p.nhs);
        text.push('\n');
    }
    std::fs::write(out_dir.join("national_opt_out.txt"), text)
}

/// Whether a person registered a national data opt-out (the file and the truth reports
/// must agree, so both ask here).
fn national_opt_out(opts: &GenerateOptions, p: &model::TruePerson) -> bool {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(format!("{}:{}", opts.seed, p.truth_id).as_bytes());
    u16::from_be_bytes([h[0], h[1]]) % 100 < 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes_and_every_person_somewhere() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let opts = GenerateOptions {
            people: 150,
            ..GenerateOptions::default()
        };
        let summary = generate(&opts, a.path()).unwrap();
        generate(&opts, b.path()).unwrap();
        assert_eq!(summary.people, 150);
        for f in ["casetrak.db", "opencare.db", "ssis.db", "truth.json"] {
            assert_eq!(
                std::fs::read(a.path().join(f)).unwrap(),
                std::fs::read(b.path().join(f)).unwrap(),
                "{f}"
            );
        }
        let truth: serde_json::Value =
            serde_json::from_slice(&std::fs::read(a.path().join("truth.json")).unwrap()).unwrap();
        let people = truth["people"].as_array().unwrap();
        assert!(people
            .iter()
            .all(|p| !p["records"].as_array().unwrap().is_empty()));
        assert!(!truth["faults"].as_array().unwrap().is_empty());
        // A second council is a different population.
        let c = tempfile::tempdir().unwrap();
        generate(
            &GenerateOptions {
                council: "Southborough".into(),
                ..opts
            },
            c.path(),
        )
        .unwrap();
        assert_ne!(
            std::fs::read(a.path().join("truth.json")).unwrap(),
            std::fs::read(c.path().join("truth.json")).unwrap()
        );
    }

    #[test]
    fn movers_are_the_other_councils_people_at_a_new_address() {
        let opts = GenerateOptions {
            people: 60,
            ..GenerateOptions::default()
        };
        let north = model::population(&opts);
        let south = model::population(&GenerateOptions {
            council: "Southborough".into(),
            movers: Some(Movers {
                from: "Northshire".into(),
                people: 20,
            }),
            ..opts.clone()
        });
        for (i, (n, s)) in north.iter().zip(&south).take(20).enumerate() {
            assert_eq!((&n.nhs, &n.given, n.dob), (&s.nhs, &s.given, s.dob));
            assert_eq!(n.family == s.family, i % 4 != 3, "every fourth a new name");
            assert_ne!((&n.street, &n.postcode), (&s.street, &s.postcode));
        }
        let shared = south
            .iter()
            .filter(|s| north.iter().any(|n| n.nhs == s.nhs))
            .count();
        assert_eq!(shared, 20, "only the movers are known to both");
    }

    #[test]
    fn truth_reports_have_cases_for_every_ratio_indicator() {
        let dir = tempfile::tempdir().unwrap();
        let opts = GenerateOptions {
            faults: FaultRates::none(),
            ..GenerateOptions::default()
        };
        generate(&opts, dir.path()).unwrap();
        let truth: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("truth.json")).unwrap()).unwrap();
        let reports = truth["reports"].as_array().unwrap();
        let periods: Vec<&str> = reports
            .iter()
            .map(|r| r["period"].as_str().unwrap())
            .collect();
        assert_eq!(periods, ["2023-24", "2024-25", "2025-26"]);
        let last = &reports[2];
        assert_eq!(
            (last["start"].as_str(), last["end"].as_str()),
            (Some("2025-04-01"), Some("2026-03-31"))
        );
        for set in ["all", "without_opt_out"] {
            for key in ["1", "2", "3", "4", "5", "5b"] {
                let denominator = last[set]["indicators"][key]["denominator"]
                    .as_u64()
                    .unwrap();
                assert!(denominator > 0, "{set} {key}");
            }
            assert_eq!(last[set]["indicators"]["6a"]["denominator"], 0);
            assert!(last[set]["mds_events"]["service"].as_u64().unwrap() > 0);
        }
        // The opt-out leaves some people out.
        assert!(
            last["without_opt_out"]["mds_events"]["service"].as_u64()
                < last["all"]["mds_events"]["service"].as_u64()
        );
    }
}
