//! The three vendors' encodings of the population: their tables, codes and habits.

use chrono::{Datelike, Duration, NaiveDate};
use escr_connector::Value;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::model::{
    at_time, chance, day_between, moment, pick, rng_for, with_wrong_check_digit, TruePerson,
};
use super::truth_reports::{
    AssessmentKind, EpisodeKind, Mechanism, Recorded, ServiceKind, TrueEvent,
};
use super::{GenerateOptions, TableSink, Truth, TruthFault, TruthRecord};

#[derive(Clone, Copy)]
pub enum Vendor {
    CaseTrak,
    OpenCare,
    Ssis,
}

pub const ALL: [Vendor; 3] = [Vendor::CaseTrak, Vendor::OpenCare, Vendor::Ssis];

impl Vendor {
    pub fn name(self) -> &'static str {
        match self {
            Vendor::CaseTrak => "casetrak",
            Vendor::OpenCare => "opencare",
            Vendor::Ssis => "ssis",
        }
    }

    pub fn write(
        self,
        opts: &GenerateOptions,
        population: &[TruePerson],
        sink: &mut dyn TableSink,
        truth: &mut Truth,
    ) -> Result<u64, String> {
        let mut out = Out {
            sink,
            truth,
            source: self.name(),
            rows: 0,
        };
        let mut rng = rng_for(opts, self.name());
        match self {
            Vendor::CaseTrak => casetrak(opts, population, &mut out, &mut rng)?,
            Vendor::OpenCare => opencare(opts, population, &mut out, &mut rng)?,
            Vendor::Ssis => ssis(opts, population, &mut out, &mut rng)?,
        }
        Ok(out.rows)
    }
}

/// Rows out, truth kept in step.
struct Out<'a> {
    sink: &'a mut dyn TableSink,
    truth: &'a mut Truth,
    source: &'static str,
    rows: u64,
}

impl Out<'_> {
    fn table(&mut self, name: &str, columns: &[(&str, &str)]) -> Result<(), String> {
        self.sink.create_table(name, columns)
    }
    fn row(&mut self, table: &str, values: Vec<Value>) -> Result<(), String> {
        self.rows += 1;
        self.sink.insert(table, values)
    }
    fn person_record(&mut self, p: &TruePerson, local_id: &str) {
        self.truth.people[p.index].records.push(TruthRecord {
            source: self.source.into(),
            local_id: local_id.into(),
        });
    }
    fn count(&mut self, p: &TruePerson, entity: &str) {
        *self.truth.people[p.index]
            .counts
            .entry(self.source.into())
            .or_default()
            .entry(entity.into())
            .or_default() += 1;
    }
    /// A modelled event in its true values (before the vendor's codes and any fault).
    fn event(&mut self, p: &TruePerson, event: TrueEvent) {
        self.truth.events.push(Recorded {
            person: p.index,
            source: self.source,
            event,
        });
    }
    fn fault(&mut self, entity: &str, local_id: &str, kind: &str) {
        self.truth.faults.push(TruthFault {
            source: self.source.into(),
            entity: entity.into(),
            local_id: local_id.into(),
            kind: kind.into(),
        });
    }
}

fn t(s: impl Into<String>) -> Value {
    Value::Text(s.into())
}
fn i(n: i64) -> Value {
    Value::Int(n)
}
fn opt_t(s: Option<String>) -> Value {
    s.map(Value::Text).unwrap_or(Value::Null)
}
fn yn(b: bool) -> Value {
    t(if b { "Y" } else { "N" })
}
fn mssql_dt(d: chrono::NaiveDateTime) -> Value {
    t(d.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
}
fn mssql_d(d: NaiveDate) -> Value {
    t(format!("{d} 00:00:00.000"))
}

/// The window a person's history falls in.
fn window(opts: &GenerateOptions, p: &TruePerson) -> (NaiveDate, NaiveDate) {
    let from = (opts.reference_date - Duration::days(8 * 365)).max(p.dob + Duration::days(30));
    let to = p.death.unwrap_or(opts.reference_date);
    (from, to.max(from + Duration::days(2)))
}

/// Which NHS-number fault (if any) a source record gets.
enum NhsFault {
    None,
    Missing,
    Placeholder,
    WrongCheckDigit,
}

fn nhs_fault(opts: &GenerateOptions, rng: &mut ChaCha8Rng) -> NhsFault {
    let f = &opts.faults;
    if chance(rng, f.missing_nhs) {
        NhsFault::Missing
    } else if chance(rng, f.placeholder_nhs) {
        NhsFault::Placeholder
    } else if chance(rng, f.invalid_nhs_check_digit) {
        NhsFault::WrongCheckDigit
    } else {
        NhsFault::None
    }
}

fn record_nhs_fault(out: &mut Out<'_>, fault: &NhsFault, local_id: &str) {
    let kind = match fault {
        NhsFault::None => return,
        NhsFault::Missing => "missing_nhs",
        NhsFault::Placeholder => "placeholder_nhs",
        NhsFault::WrongCheckDigit => "invalid_nhs_check_digit",
    };
    out.fault("person", local_id, kind);
}

/// Birth date as a vendor records it: maybe day/month swapped, maybe estimated (01/01).
fn recorded_dob(
    opts: &GenerateOptions,
    rng: &mut ChaCha8Rng,
    p: &TruePerson,
) -> (NaiveDate, Option<&'static str>) {
    if chance(rng, opts.faults.estimated_birth_date) {
        return (
            NaiveDate::from_ymd_opt(p.dob.year(), 1, 1).expect("1 Jan"),
            Some("estimated_birth_date"),
        );
    }
    if p.dob.day() <= 12 && p.dob.day() != p.dob.month() && chance(rng, opts.faults.day_month_swap)
    {
        if let Some(swapped) = NaiveDate::from_ymd_opt(p.dob.year(), p.dob.day(), p.dob.month()) {
            return (swapped, Some("day_month_swap"));
        }
    }
    (p.dob, None)
}

fn recorded_postcode(
    opts: &GenerateOptions,
    rng: &mut ChaCha8Rng,
    p: &TruePerson,
) -> (String, bool) {
    if chance(rng, opts.faults.bad_postcode) {
        (
            pick(rng, &["NOT KNOWN", "NS", "N51 ABC", "00000"]).to_string(),
            true,
        )
    } else {
        (p.postcode.clone(), false)
    }
}

const CT_ETH: [(char, &str); 11] = [
    ('A', "WBRI"),
    ('B', "WIRI"),
    ('C', "WOTH"),
    ('D', "MWBC"),
    ('H', "AIND"),
    ('J', "APKN"),
    ('K', "ABAN"),
    ('M', "BCRB"),
    ('N', "BAFR"),
    ('R', "CHNE"),
    ('S', "OOTH"),
];

fn casetrak_eth(letter: char) -> &'static str {
    CT_ETH
        .iter()
        .find(|(l, _)| *l == letter)
        .map(|(_, c)| *c)
        .unwrap_or("NOBT")
}

/// An adult's primary support reason as CaseTrak codes it (children have none). Taken
/// from the person's index, not the random stream, so no other value moves.
fn casetrak_support_reason(p: &TruePerson) -> Option<String> {
    const CODES: [&str; 6] = ["PHYS", "PHYS", "MEMC", "LDIS", "MHLT", "SENS"];
    (!p.child).then(|| CODES[(p.index * 7 + 3) % CODES.len()].to_string())
}

fn casetrak(
    opts: &GenerateOptions,
    pop: &[TruePerson],
    out: &mut Out<'_>,
    rng: &mut ChaCha8Rng,
) -> Result<(), String> {
    out.table(
        "CLNT",
        &[
            ("CLNT_ID", "INTEGER PRIMARY KEY"),
            ("CLNT_REF", "VARCHAR(12)"),
            ("SNAME", "VARCHAR(60)"),
            ("FNAME", "VARCHAR(60)"),
            ("DOB", "DATETIME"),
            ("DOB_EST", "CHAR(1)"),
            ("SEX", "CHAR(1)"),
            ("ETH_CD", "VARCHAR(4)"),
            ("NHS_NO", "CHAR(10)"),
            ("DOD", "DATETIME"),
            ("RSTR_FLG", "CHAR(1)"),
            ("MRG_TO_ID", "INTEGER"),
            ("UPD_DTTM", "DATETIME"),
            ("PSR_CD", "VARCHAR(4)"),
        ],
    )?;
    out.table(
        "CLNT_ADDR",
        &[
            ("ADDR_ID", "INTEGER PRIMARY KEY"),
            ("CLNT_ID", "INTEGER"),
            ("ADDR_TYP", "CHAR(3)"),
            ("LN1", "VARCHAR(60)"),
            ("LN2", "VARCHAR(60)"),
            ("PCODE", "VARCHAR(10)"),
            ("ST_DT", "DATETIME"),
            ("END_DT", "DATETIME"),
        ],
    )?;
    out.table(
        "CNTCT",
        &[
            ("CNTCT_ID", "INTEGER PRIMARY KEY"),
            ("CLNT_ID", "INTEGER"),
            ("RCVD_DTTM", "DATETIME"),
            ("SRC_CD", "VARCHAR(4)"),
            ("RSN_TXT", "VARCHAR(200)"),
            ("OUTC_CD", "VARCHAR(4)"),
            // The service the contact is for: children's (CSC) or adults' (ASC) social
            // care. Derived from the person, not drawn, so the random stream is as before.
            ("SVC_AREA", "CHAR(3)"),
        ],
    )?;
    out.table(
        "ASMT",
        &[
            ("ASMT_ID", "INTEGER PRIMARY KEY"),
            ("CLNT_ID", "INTEGER"),
            ("ASMT_TYP", "VARCHAR(4)"),
            ("ST_DT", "DATETIME"),
            ("CMP_DT", "DATETIME"),
            ("AUTH_DT", "DATETIME"),
            ("ELIG_FLG", "CHAR(1)"),
            ("OUTC_CD", "VARCHAR(10)"),
            ("WRKR_ID", "INTEGER"),
        ],
    )?;
    out.table(
        "SVC_PKG",
        &[
            ("PKG_ID", "INTEGER PRIMARY KEY"),
            ("CLNT_ID", "INTEGER"),
            ("SVC_CD", "CHAR(3)"),
            ("DLV_MECH", "VARCHAR(3)"),
            ("PRVDR", "VARCHAR(60)"),
            ("UNIT_CST", "DECIMAL(10,2)"),
            ("UNITS_WK", "DECIMAL(6,2)"),
            ("ST_DT", "DATETIME"),
            ("END_DT", "DATETIME"),
        ],
    )?;
    out.table(
        "EPSD",
        &[
            ("EPSD_ID", "INTEGER PRIMARY KEY"),
            ("CLNT_ID", "INTEGER"),
            ("EPSD_TYP", "CHAR(3)"),
            ("CAT_CD", "CHAR(1)"),
            ("ST_DT", "DATETIME"),
            ("END_DT", "DATETIME"),
        ],
    )?;
    out.table(
        "VST",
        &[
            ("VST_ID", "INTEGER PRIMARY KEY"),
            ("CLNT_ID", "INTEGER"),
            ("VST_TYP", "VARCHAR(10)"),
            ("PLN_DTTM", "DATETIME"),
            ("ACT_DTTM", "DATETIME"),
            ("SEEN_FLG", "CHAR(1)"),
            ("SEEN_ALN_FLG", "CHAR(1)"),
            ("WRKR_ID", "INTEGER"),
        ],
    )?;
    out.table(
        "CSNT",
        &[
            ("NOTE_ID", "INTEGER PRIMARY KEY"),
            ("CLNT_ID", "INTEGER"),
            ("NOTE_DTTM", "DATETIME"),
            ("NOTE_TYP", "VARCHAR(10)"),
            ("SUBJ", "VARCHAR(100)"),
            ("NOTE_TXT", "NVARCHAR(4000)"),
            ("SENS_LVL", "INTEGER"),
            ("WRKR_ID", "INTEGER"),
        ],
    )?;
    out.table(
        "DOC",
        &[
            ("DOC_ID", "INTEGER PRIMARY KEY"),
            ("CLNT_ID", "INTEGER"),
            ("DOC_TYP", "CHAR(3)"),
            ("DIRN", "CHAR(1)"),
            ("TITLE", "VARCHAR(100)"),
            ("DOC_DT", "DATETIME"),
            ("FILE_PATH", "VARCHAR(200)"),
        ],
    )?;
    out.table(
        "WARN",
        &[
            ("WARN_ID", "INTEGER PRIMARY KEY"),
            ("CLNT_ID", "INTEGER"),
            ("WARN_CD", "VARCHAR(6)"),
            ("NARR", "VARCHAR(200)"),
            ("ST_DT", "DATETIME"),
            ("END_DT", "DATETIME"),
            ("RVW_DT", "DATETIME"),
        ],
    )?;
    out.table(
        "CNSNT",
        &[
            ("CNSNT_ID", "INTEGER PRIMARY KEY"),
            ("CLNT_ID", "INTEGER"),
            ("CNSNT_TYP", "CHAR(4)"),
            ("GVN_DT", "DATETIME"),
            ("WDRN_DT", "DATETIME"),
        ],
    )?;
    out.table(
        "ALLOC",
        &[
            ("ALLOC_ID", "INTEGER PRIMARY KEY"),
            ("CLNT_ID", "INTEGER"),
            ("WRKR_ID", "INTEGER"),
            ("TEAM_ID", "INTEGER"),
            ("ST_DT", "DATETIME"),
            ("END_DT", "DATETIME"),
        ],
    )?;
    out.table(
        "CLNT_REL",
        &[
            ("REL_ID", "INTEGER PRIMARY KEY"),
            ("CLNT_ID", "INTEGER"),
            ("REL_CLNT_ID", "INTEGER"),
            ("REL_TYP", "CHAR(3)"),
            ("PR_FLG", "CHAR(1)"),
            ("CARER_FLG", "CHAR(1)"),
            ("ST_DT", "DATETIME"),
            ("END_DT", "DATETIME"),
        ],
    )?;
    out.table(
        "WRKR",
        &[
            ("WRKR_ID", "INTEGER PRIMARY KEY"),
            ("WRKR_NM", "VARCHAR(60)"),
            ("ROLE_CD", "VARCHAR(10)"),
            ("TEAM_ID", "INTEGER"),
        ],
    )?;
    out.table(
        "TEAM",
        &[
            ("TEAM_ID", "INTEGER PRIMARY KEY"),
            ("TEAM_NM", "VARCHAR(60)"),
        ],
    )?;
    for (id, name) in [
        (1, "Children North"),
        (2, "Children South"),
        (3, "Adults Community"),
        (4, "Hospital Discharge"),
        (5, "Mental Health"),
    ] {
        out.row("TEAM", vec![i(id), t(name)])?;
    }
    for w in 1..=20 {
        out.row(
            "WRKR",
            vec![
                i(w),
                t(format!("Worker {w}")),
                t(if w <= 8 { "SW" } else { "OT" }),
                i(1 + (w % 5)),
            ],
        )?;
    }

    let f = &opts.faults;
    let mut ids = Counter::default();
    let mut clients: Vec<(&TruePerson, i64)> = Vec::new();
    for p in pop.iter().filter(|p| p.in_system[0]) {
        let id = ids.next("CLNT", 1000);
        clients.push((p, id));
        let local = id.to_string();
        let nhs = nhs_fault(opts, rng);
        record_nhs_fault(out, &nhs, &local);
        let nhs_value = match nhs {
            NhsFault::None => Some(p.nhs.clone()),
            NhsFault::Missing => None,
            NhsFault::Placeholder => Some("0000000000".into()),
            NhsFault::WrongCheckDigit => Some(with_wrong_check_digit(&p.nhs)),
        };
        let (dob, dob_fault) = recorded_dob(opts, rng, p);
        if let Some(kind) = dob_fault {
            out.fault("person", &local, kind);
        }
        let mut sex = match p.gender {
            "MALE" => "M",
            "FEMALE" => "F",
            "INDETERMINATE" => "I",
            _ => "U",
        };
        if chance(rng, f.unmapped_code) {
            sex = "Q";
            out.fault("person", &local, "unmapped_code");
        }
        let restricted = rng.gen_bool(0.02);
        let updated = {
            let d = opts.reference_date - Duration::days(rng.gen_range(0..900));
            at_time(rng, d)
        };
        out.row(
            "CLNT",
            vec![
                i(id),
                t(format!("CT{id:07}")),
                t(p.family.to_uppercase()),
                t(p.given.clone()),
                mssql_d(dob),
                yn(dob_fault == Some("estimated_birth_date")),
                t(sex),
                t(casetrak_eth(p.ethnicity)),
                opt_t(nhs_value),
                p.death.map(mssql_d).unwrap_or(Value::Null),
                yn(restricted),
                Value::Null,
                mssql_dt(updated),
                opt_t(casetrak_support_reason(p)),
            ],
        )?;
        out.person_record(p, &local);
        if chance(rng, f.duplicate_within_source) {
            let dup = ids.next("CLNT", 1000);
            let merged = rng.gen_bool(0.5);
            out.row(
                "CLNT",
                vec![
                    i(dup),
                    t(format!("CT{dup:07}")),
                    t(p.family.to_uppercase()),
                    t(p.given.clone()),
                    mssql_d(p.dob),
                    yn(false),
                    t(sex),
                    t("NOBT"),
                    Value::Null,
                    Value::Null,
                    yn(false),
                    if merged { i(id) } else { Value::Null },
                    mssql_dt(updated),
                    Value::Null,
                ],
            )?;
            out.person_record(p, &dup.to_string());
            out.fault("person", &dup.to_string(), "duplicate_within_source");
        }

        let (from, to) = window(opts, p);
        let (postcode, bad) = recorded_postcode(opts, rng, p);
        if bad {
            out.fault("person", &local, "bad_postcode");
        }
        let aid = ids.next("ADDR", 1);
        out.row(
            "CLNT_ADDR",
            vec![
                i(aid),
                i(id),
                t("HOM"),
                t(p.street.clone()),
                t("Northtown"),
                t(postcode),
                mssql_d(from),
                Value::Null,
            ],
        )?;
        out.count(p, "address");

        let alloc = ids.next("ALLOC", 1);
        let worker = rng.gen_range(1..=20);
        out.row(
            "ALLOC",
            vec![
                i(alloc),
                i(id),
                i(worker),
                i(1 + (worker % 5)),
                mssql_d(from),
                Value::Null,
            ],
        )?;
        out.count(p, "allocation");

        // Referrals; children are sometimes re-referred within the year.
        let referrals = if p.child {
            rng.gen_range(1..=3)
        } else {
            rng.gen_range(0..=2)
        };
        let mut last_ref = from;
        for _ in 0..referrals {
            let received = if p.child && rng.gen_bool(0.3) {
                (last_ref + Duration::days(rng.gen_range(30..330))).min(to)
            } else {
                day_between(rng, from, to)
            };
            last_ref = received;
            let rid = ids.next("CNTCT", 1);
            let outcome = *pick(rng, &["ASMT", "ASMT", "NFA", "SIGN"]);
            out.row(
                "CNTCT",
                vec![
                    i(rid),
                    i(id),
                    mssql_dt(at_time(rng, received)),
                    t(*pick(rng, &["SELF", "FAM", "HLTH", "POL", "SCH", "LA"])),
                    t("Concerns raised"),
                    t(outcome),
                    t(if p.child { "CSC" } else { "ASC" }),
                ],
            )?;
            out.count(p, "referral");
            out.event(
                p,
                TrueEvent::Referral {
                    received,
                    has_outcome: true,
                    children: p.child,
                },
            );
            if outcome == "ASMT" {
                let start = received + Duration::days(rng.gen_range(0..5));
                let authorised = start + Duration::days(rng.gen_range(14..98));
                let asmt = ids.next("ASMT", 1);
                out.row(
                    "ASMT",
                    vec![
                        i(asmt),
                        i(id),
                        t(if p.child { "CFA" } else { "NEED" }),
                        mssql_d(start),
                        mssql_d(authorised - Duration::days(2)),
                        mssql_d(authorised),
                        yn(rng.gen_bool(0.7)),
                        t("COMPLETE"),
                        i(worker),
                    ],
                )?;
                out.count(p, "assessment");
                out.event(
                    p,
                    TrueEvent::Assessment {
                        kind: if p.child {
                            AssessmentKind::ChildAndFamily
                        } else {
                            AssessmentKind::AdultNeeds
                        },
                        start,
                        completed: authorised - Duration::days(2),
                        authorised: Some(authorised),
                    },
                );
            }
        }
        if !p.child && rng.gen_bool(0.4) {
            let start = day_between(rng, from, to);
            let asmt = ids.next("ASMT", 1);
            out.row(
                "ASMT",
                vec![
                    i(asmt),
                    i(id),
                    t("REV"),
                    mssql_d(start),
                    mssql_d(start + Duration::days(7)),
                    mssql_d(start + Duration::days(9)),
                    yn(true),
                    t("CONTINUE"),
                    i(worker),
                ],
            )?;
            out.count(p, "assessment");
            out.event(
                p,
                TrueEvent::Assessment {
                    kind: AssessmentKind::Review,
                    start,
                    completed: start + Duration::days(7),
                    authorised: Some(start + Duration::days(9)),
                },
            );
        }

        // Children's episodes.
        if p.child && referrals > 0 {
            let start = day_between(rng, from, to);
            let eid = ids.next("EPSD", 1);
            let end = (rng.gen_bool(0.6))
                .then(|| (start + Duration::days(rng.gen_range(60..500))).min(opts.reference_date));
            out.row(
                "EPSD",
                vec![
                    i(eid),
                    i(id),
                    t("CIN"),
                    Value::Null,
                    mssql_d(start),
                    end.map(mssql_d).unwrap_or(Value::Null),
                ],
            )?;
            out.count(p, "episode");
            out.event(
                p,
                TrueEvent::Episode {
                    kind: EpisodeKind::ChildInNeed,
                    start,
                    end,
                },
            );
            let plans = if rng.gen_bool(0.3) {
                if rng.gen_bool(0.2) {
                    2
                } else {
                    1
                }
            } else {
                0
            };
            let mut plan_start = start;
            for _ in 0..plans {
                let pid = ids.next("EPSD", 1);
                let length = if rng.gen_bool(0.15) {
                    rng.gen_range(730..900)
                } else {
                    rng.gen_range(90..700)
                };
                let end = plan_start + Duration::days(length);
                let end = (end <= opts.reference_date).then_some(end);
                out.row(
                    "EPSD",
                    vec![
                        i(pid),
                        i(id),
                        t("CPP"),
                        t(*pick(rng, &["N", "P", "E", "S", "M"])),
                        mssql_d(plan_start),
                        end.map(mssql_d).unwrap_or(Value::Null),
                    ],
                )?;
                out.count(p, "episode");
                out.event(
                    p,
                    TrueEvent::Episode {
                        kind: EpisodeKind::ChildProtectionPlan,
                        start: plan_start,
                        end,
                    },
                );
                plan_start =
                    end.unwrap_or(opts.reference_date) + Duration::days(rng.gen_range(30..300));
                if plan_start >= opts.reference_date {
                    break;
                }
            }
            if rng.gen_bool(0.1) {
                let lid = ids.next("EPSD", 1);
                let start = day_between(rng, from, to);
                out.row(
                    "EPSD",
                    vec![
                        i(lid),
                        i(id),
                        t("LAC"),
                        Value::Null,
                        mssql_d(start),
                        Value::Null,
                    ],
                )?;
                out.count(p, "episode");
                out.event(
                    p,
                    TrueEvent::Episode {
                        kind: EpisodeKind::LookedAfter,
                        start,
                        end: None,
                    },
                );
            }
        }

        // Adults' services.
        if !p.child {
            for _ in 0..rng.gen_range(0..=2) {
                let sid = ids.next("SVC_PKG", 1);
                let true_start = day_between(rng, from, to);
                let mut start = true_start;
                if let Some(death) = p.death {
                    if chance(rng, f.service_after_death) {
                        start = death + Duration::days(rng.gen_range(1..60));
                        out.fault("service", &sid.to_string(), "service_after_death");
                    }
                }
                // The length is drawn once: the recorded end follows a faulted start,
                // the true end the true start.
                let length = rng
                    .gen_bool(0.5)
                    .then(|| Duration::days(rng.gen_range(30..700)));
                let true_end = length.map(|l| true_start + l);
                let mut end = length.map(|l| start + l);
                if chance(rng, f.end_before_start) {
                    end = Some(start - Duration::days(rng.gen_range(1..60)));
                    out.fault("service", &sid.to_string(), "end_before_start");
                }
                let svc = *pick(rng, &["RES", "NUR", "HCA", "HCA", "DAY", "REA"]);
                let (cost, units) = match svc {
                    "RES" | "NUR" => (rng.gen_range(600..1200) as f64, 1.0),
                    _ => (
                        rng.gen_range(1800..2600) as f64 / 100.0,
                        rng.gen_range(2..28) as f64,
                    ),
                };
                // Drawn here, where the row drew it, so the stream does not move.
                let mech = *pick(rng, &["DP", "PDP", "MPB", "CCS", "CCS"]);
                out.row(
                    "SVC_PKG",
                    vec![
                        i(sid),
                        i(id),
                        t(svc),
                        t(mech),
                        t(*pick(rng, &["Northcare Ltd", "Homewell", "Council"])),
                        Value::Float(cost),
                        Value::Float(units),
                        mssql_d(start),
                        end.map(mssql_d).unwrap_or(Value::Null),
                    ],
                )?;
                out.count(p, "service");
                out.event(
                    p,
                    TrueEvent::Service {
                        kind: casetrak_service(svc),
                        mechanism: casetrak_mechanism(mech),
                        start: true_start,
                        end: true_end,
                    },
                );
            }
        }

        for _ in 0..rng.gen_range(0..=6) {
            let vid = ids.next("VST", 1);
            let planned = moment(rng, from, to);
            let happened = rng.gen_bool(0.85);
            let actual = happened.then(|| planned + Duration::minutes(rng.gen_range(-30..90)));
            out.row(
                "VST",
                vec![
                    i(vid),
                    i(id),
                    t(*pick(rng, &["HOME", "OFFICE", "SCHOOL"])),
                    mssql_dt(planned),
                    actual.map(mssql_dt).unwrap_or(Value::Null),
                    yn(happened),
                    yn(happened && rng.gen_bool(0.4)),
                    i(worker),
                ],
            )?;
            out.count(p, "visit");
        }
        for _ in 0..rng.gen_range(1..=5) {
            let nid = ids.next("CSNT", 1);
            let level = *pick(rng, &[0, 0, 0, 0, 1, 1, 2, 3]);
            out.row(
                "CSNT",
                vec![
                    i(nid),
                    i(id),
                    mssql_dt(moment(rng, from, to)),
                    t(*pick(rng, &["CASE", "PHONE", "VISIT"])),
                    t(*pick(
                        rng,
                        &["Home visit", "Phone call", "Strategy discussion", "Review"],
                    )),
                    t(format!(
                        "Note {nid}: spoke with {} about current support.",
                        p.given
                    )),
                    i(level),
                    i(worker),
                ],
            )?;
            out.count(p, "case_note");
        }
        for _ in 0..rng.gen_range(0..=2) {
            let did = ids.next("DOC", 1);
            let typ = *pick(rng, &["LTR", "LTR", "FRM", "EML"]);
            out.row(
                "DOC",
                vec![
                    i(did),
                    i(id),
                    t(typ),
                    t(*pick(rng, &["I", "O"])),
                    t(format!(
                        "{} {did}",
                        if typ == "FRM" { "Form" } else { "Letter" }
                    )),
                    mssql_d(day_between(rng, from, to)),
                    t(format!("\\\\docs\\ct\\{did}.pdf")),
                ],
            )?;
            out.count(p, "document");
        }
        if rng.gen_bool(0.15) {
            let wid = ids.next("WARN", 1);
            let start = day_between(rng, from, to);
            out.row(
                "WARN",
                vec![
                    i(wid),
                    i(id),
                    t(*pick(rng, &["RISK", "SAFE", "DOG"])),
                    t("See risk assessment"),
                    mssql_d(start),
                    Value::Null,
                    mssql_d(start + Duration::days(180)),
                ],
            )?;
            out.count(p, "alert");
        }
        if rng.gen_bool(0.5) {
            let cid = ids.next("CNSNT", 1);
            let given = day_between(rng, from, to);
            let withdrawn = rng
                .gen_bool(0.1)
                .then(|| given + Duration::days(rng.gen_range(10..300)));
            out.row(
                "CNSNT",
                vec![
                    i(cid),
                    i(id),
                    t(*pick(rng, &["SHRH", "SHRA", "SHRA", "NOSH"])),
                    mssql_d(given),
                    withdrawn.map(mssql_d).unwrap_or(Value::Null),
                ],
            )?;
            out.count(p, "consent");
        }
    }
    casetrak_relationships(opts, &clients, out)?;
    person_key_indexes(
        out,
        "CLNT_ID",
        &[
            "CLNT_ADDR",
            "CNTCT",
            "ASMT",
            "SVC_PKG",
            "EPSD",
            "VST",
            "CSNT",
            "DOC",
            "WARN",
            "CNSNT",
            "ALLOC",
            "CLNT_REL",
        ],
    )
}

/// The index a vendor keeps on each table's person key (made after the rows are in:
/// faster). Without them every read by person scans the table, and a report's pages
/// grow with the population.
fn person_key_indexes(out: &mut Out<'_>, column: &str, tables: &[&str]) -> Result<(), String> {
    for table in tables {
        out.sink.create_index(table, column)?;
    }
    Ok(())
}

/// CLNT_REL: each child's parents (and sometimes a sibling), some adults' carers, all
/// pointing at other CaseTrak clients. Its own random stream, so the rest of CaseTrak's
/// data does not move when this changes.
fn casetrak_relationships(
    opts: &GenerateOptions,
    clients: &[(&TruePerson, i64)],
    out: &mut Out<'_>,
) -> Result<(), String> {
    let mut rng = rng_for(opts, "casetrak-relationships");
    let adults = |gender: &str| -> Vec<i64> {
        clients
            .iter()
            .filter(|(p, _)| {
                !p.child && p.death.is_none() && (gender.is_empty() || p.gender == gender)
            })
            .map(|(_, id)| *id)
            .collect()
    };
    let (mothers, fathers, carers) = (adults("FEMALE"), adults("MALE"), adults(""));
    let children: Vec<i64> = clients
        .iter()
        .filter(|(p, _)| p.child)
        .map(|(_, id)| *id)
        .collect();
    let mut rel_id = 0;
    for (p, id) in clients {
        // (type, related client, parental responsibility, carer)
        let mut related: Vec<(&str, i64, bool, bool)> = Vec::new();
        if p.child {
            if let Some(m) = mothers.get(rng.gen_range(0..mothers.len().max(1))) {
                related.push(("MOT", *m, true, true));
            }
            if rng.gen_bool(0.6) {
                if let Some(f) = fathers.get(rng.gen_range(0..fathers.len().max(1))) {
                    related.push(("FAT", *f, rng.gen_bool(0.7), false));
                }
            }
            if rng.gen_bool(0.3) {
                if let Some(s) = children.get(rng.gen_range(0..children.len().max(1))) {
                    if s != id {
                        related.push(("SIB", *s, false, false));
                    }
                }
            }
        } else if rng.gen_bool(0.15) {
            if let Some(c) = carers.get(rng.gen_range(0..carers.len().max(1))) {
                if c != id {
                    related.push(("CAR", *c, false, true));
                }
            }
        }
        for (kind, other, pr, carer) in related {
            rel_id += 1;
            let start = if p.child { p.dob } else { window(opts, p).0 };
            out.row(
                "CLNT_REL",
                vec![
                    i(rel_id),
                    i(*id),
                    i(other),
                    t(kind),
                    yn(pr),
                    yn(carer),
                    mssql_d(start),
                    Value::Null,
                ],
            )?;
            out.count(p, "relationship");
        }
    }
    Ok(())
}

/// True kinds behind each vendor's codes (as config/vendors/*.toml map them).
fn casetrak_service(code: &str) -> ServiceKind {
    match code {
        "RES" => ServiceKind::Residential,
        "NUR" => ServiceKind::Nursing,
        "HCA" => ServiceKind::HomeCare,
        "DAY" => ServiceKind::DayCare,
        "REA" => ServiceKind::Reablement,
        other => unreachable!("CaseTrak service code {other}"),
    }
}

fn casetrak_mechanism(code: &str) -> Mechanism {
    match code {
        "DP" => Mechanism::DirectPayment,
        "PDP" => Mechanism::PartDirectPayment,
        "MPB" => Mechanism::ManagedPersonalBudget,
        "CCS" => Mechanism::CouncilCommissioned,
        other => unreachable!("CaseTrak delivery mechanism {other}"),
    }
}

fn opencare_service(code: &str) -> ServiceKind {
    match code {
        "home_care" => ServiceKind::HomeCare,
        "day_care" => ServiceKind::DayCare,
        "reablement" => ServiceKind::Reablement,
        "equipment" => ServiceKind::Equipment,
        "residential" => ServiceKind::Residential,
        "nursing" => ServiceKind::Nursing,
        other => unreachable!("OpenCare service type {other}"),
    }
}

fn opencare_mechanism(code: &str) -> Mechanism {
    match code {
        "direct_payment" => Mechanism::DirectPayment,
        "part_direct_payment" => Mechanism::PartDirectPayment,
        "managed_budget" => Mechanism::ManagedPersonalBudget,
        "commissioned" => Mechanism::CouncilCommissioned,
        other => unreachable!("OpenCare delivery mechanism {other}"),
    }
}

fn ssis_service(code: &str) -> ServiceKind {
    match code {
        "HC" => ServiceKind::HomeCare,
        "DC" => ServiceKind::DayCare,
        "RC" => ServiceKind::Residential,
        "NC" => ServiceKind::Nursing,
        other => unreachable!("SSIS/90 service code {other}"),
    }
}

#[derive(Default)]
struct Counter(std::collections::BTreeMap<&'static str, i64>);

impl Counter {
    fn next(&mut self, table: &'static str, first: i64) -> i64 {
        let n = self.0.entry(table).or_insert(first - 1);
        *n += 1;
        *n
    }
}

/// OpenCare's tables (also the schema of the independent families estate).
pub(super) fn opencare_tables(sink: &mut dyn TableSink) -> Result<(), String> {
    sink.create_table(
        "people",
        &[
            ("id", "INTEGER PRIMARY KEY"),
            ("uuid", "CHAR(36)"),
            ("given_name", "VARCHAR(80)"),
            ("family_name", "VARCHAR(80)"),
            ("birth_date", "DATE"),
            ("gender", "TINYINT"),
            ("ethnicity", "CHAR(1)"),
            ("postcode", "VARCHAR(10)"),
            ("deleted_at", "DATETIME"),
            ("updated_at", "DATETIME"),
        ],
    )?;
    sink.create_table(
        "person_identifiers",
        &[
            ("id", "INTEGER PRIMARY KEY"),
            ("person_id", "INTEGER"),
            ("scheme", "VARCHAR(10)"),
            ("value", "VARCHAR(20)"),
        ],
    )?;
    // OpenCare looks NHS numbers up by person for every person it lists.
    sink.create_index("person_identifiers", "person_id")?;
    sink.create_table(
        "referrals",
        &[
            ("id", "INTEGER PRIMARY KEY"),
            ("person_id", "INTEGER"),
            ("received_at", "DATETIME"),
            ("route_of_access", "VARCHAR(20)"),
            ("reason", "TEXT"),
            ("outcome", "VARCHAR(20)"),
        ],
    )?;
    sink.create_table(
        "assessments",
        &[
            ("id", "INTEGER PRIMARY KEY"),
            ("person_id", "INTEGER"),
            ("kind", "VARCHAR(20)"),
            ("started_on", "DATE"),
            ("completed_on", "DATE"),
            ("eligible", "TINYINT"),
        ],
    )?;
    sink.create_table(
        "care_plans",
        &[
            ("id", "INTEGER PRIMARY KEY"),
            ("person_id", "INTEGER"),
            ("start_on", "DATE"),
            ("end_on", "DATE"),
            ("goals", "JSON"),
            ("budget_pence", "INT"),
        ],
    )?;
    sink.create_table(
        "service_agreements",
        &[
            ("id", "INTEGER PRIMARY KEY"),
            ("person_id", "INTEGER"),
            ("service_type", "VARCHAR(20)"),
            ("delivery_mechanism", "VARCHAR(20)"),
            ("provider", "VARCHAR(80)"),
            ("unit_cost_pence", "INT"),
            ("weekly_units", "DECIMAL(6,2)"),
            ("start_on", "DATE"),
            ("end_on", "DATE"),
            ("deleted_at", "DATETIME"),
        ],
    )?;
    sink.create_table(
        "appointments",
        &[
            ("id", "INTEGER PRIMARY KEY"),
            ("person_id", "INTEGER"),
            ("scheduled_start", "DATETIME"),
            ("actual_start", "DATETIME"),
            ("attended", "TINYINT"),
            ("alone", "TINYINT"),
            ("carer_id", "INTEGER"),
        ],
    )?;
    sink.create_table(
        "notes",
        &[
            ("id", "INTEGER PRIMARY KEY"),
            ("person_id", "INTEGER"),
            ("created_at", "DATETIME"),
            ("category", "VARCHAR(20)"),
            ("body", "TEXT"),
            ("visibility", "VARCHAR(10)"),
            ("deleted_at", "DATETIME"),
        ],
    )?;
    sink.create_table(
        "messages",
        &[
            ("id", "INTEGER PRIMARY KEY"),
            ("person_id", "INTEGER"),
            ("from_addr", "VARCHAR(120)"),
            ("to_addrs", "JSON"),
            ("subject", "VARCHAR(200)"),
            ("body", "TEXT"),
            ("sent_at", "DATETIME"),
        ],
    )?;
    sink.create_table(
        "flags",
        &[
            ("id", "INTEGER PRIMARY KEY"),
            ("person_id", "INTEGER"),
            ("code", "VARCHAR(20)"),
            ("description", "TEXT"),
            ("raised_on", "DATE"),
            ("cleared_on", "DATE"),
        ],
    )?;
    sink.create_table(
        "consents",
        &[
            ("id", "INTEGER PRIMARY KEY"),
            ("person_id", "INTEGER"),
            ("kind", "VARCHAR(20)"),
            ("decision", "VARCHAR(10)"),
            ("recorded_on", "DATE"),
            ("withdrawn_on", "DATE"),
        ],
    )?;
    Ok(())
}

fn opencare(
    opts: &GenerateOptions,
    pop: &[TruePerson],
    out: &mut Out<'_>,
    rng: &mut ChaCha8Rng,
) -> Result<(), String> {
    opencare_tables(out.sink)?;

    let f = &opts.faults;
    let mut ids = Counter::default();
    for p in pop.iter().filter(|p| p.in_system[1]) {
        let id = ids.next("people", 1);
        let local = id.to_string();
        let (dob, dob_fault) = recorded_dob(opts, rng, p);
        if let Some(kind) = dob_fault.filter(|k| *k == "day_month_swap") {
            out.fault("person", &local, kind);
        }
        let dob = if dob_fault == Some("estimated_birth_date") {
            p.dob
        } else {
            dob
        };
        let mut gender = match p.gender {
            "MALE" => 1,
            "FEMALE" => 2,
            "INDETERMINATE" => 9,
            _ => 0,
        };
        if chance(rng, f.unmapped_code) {
            gender = 5;
            out.fault("person", &local, "unmapped_code");
        }
        let (postcode, bad) = recorded_postcode(opts, rng, p);
        if bad {
            out.fault("person", &local, "bad_postcode");
        }
        let updated = {
            let d = opts.reference_date - Duration::days(rng.gen_range(0..600));
            at_time(rng, d)
        };
        out.row(
            "people",
            vec![
                i(id),
                t(format!("{:08x}-0000-4000-8000-{:012x}", p.index, id)),
                t(p.given.clone()),
                t(p.family.clone()),
                t(dob.to_string()),
                i(gender),
                t(p.ethnicity.to_string()),
                t(postcode),
                Value::Null,
                mssql_dt(updated),
            ],
        )?;
        out.person_record(p, &local);
        let nhs = nhs_fault(opts, rng);
        record_nhs_fault(out, &nhs, &local);
        let spaced = |n: &str| format!("{} {} {}", &n[..3], &n[3..6], &n[6..]);
        let value = match nhs {
            NhsFault::None => Some(spaced(&p.nhs)),
            NhsFault::Missing => None,
            NhsFault::Placeholder => Some("000 000 0000".into()),
            NhsFault::WrongCheckDigit => Some(spaced(&with_wrong_check_digit(&p.nhs))),
        };
        if let Some(v) = value {
            let iid = ids.next("ident", 1);
            out.row("person_identifiers", vec![i(iid), i(id), t("nhs"), t(v)])?;
        }
        let iid = ids.next("ident", 1);
        out.row(
            "person_identifiers",
            vec![i(iid), i(id), t("la"), t(format!("LA{id:06}"))],
        )?;
        // A soft-deleted duplicate that the profile must not see.
        if rng.gen_bool(0.02) {
            let gone = ids.next("people", 1);
            out.row(
                "people",
                vec![
                    i(gone),
                    t(format!("{:08x}-dead-4000-8000-{:012x}", p.index, gone)),
                    t(p.given.clone()),
                    t(p.family.clone()),
                    t(dob.to_string()),
                    i(gender),
                    t("Z"),
                    t(p.postcode.clone()),
                    mssql_dt(updated),
                    mssql_dt(updated),
                ],
            )?;
        }

        let (from, to) = window(opts, p);
        for _ in 0..rng.gen_range(0..=2) {
            let rid = ids.next("ref", 1);
            let received = moment(rng, from, to);
            out.row(
                "referrals",
                vec![
                    i(rid),
                    i(id),
                    mssql_dt(received),
                    t(*pick(rng, &["self", "family", "gp", "hospital"])),
                    t("Needs help at home"),
                    t(*pick(rng, &["assessment", "signposted", "nfa"])),
                ],
            )?;
            out.count(p, "referral");
            out.event(
                p,
                TrueEvent::Referral {
                    received: received.date(),
                    has_outcome: true,
                    children: false,
                },
            );
        }
        if rng.gen_bool(0.5) {
            let aid = ids.next("asmt", 1);
            let start = day_between(rng, from, to);
            // Drawn in the order the row drew them, so the stream does not move.
            let kind = *pick(rng, &["needs", "carer", "review"]);
            let completed = start + Duration::days(rng.gen_range(5..40));
            out.row(
                "assessments",
                vec![
                    i(aid),
                    i(id),
                    t(kind),
                    t(start.to_string()),
                    t(completed.to_string()),
                    i(1),
                ],
            )?;
            out.count(p, "assessment");
            out.event(
                p,
                TrueEvent::Assessment {
                    kind: match kind {
                        "needs" => AssessmentKind::AdultNeeds,
                        "carer" => AssessmentKind::Carer,
                        _ => AssessmentKind::Review,
                    },
                    start,
                    completed,
                    authorised: None,
                },
            );
        }
        if rng.gen_bool(0.6) {
            let cid = ids.next("plan", 1);
            let start = day_between(rng, from, to);
            let goals =
                serde_json::json!(["Stay safe at home", "Keep in touch with family"]).to_string();
            out.row(
                "care_plans",
                vec![
                    i(cid),
                    i(id),
                    t(start.to_string()),
                    Value::Null,
                    t(goals),
                    i(rng.gen_range(5000..40000)),
                ],
            )?;
            out.count(p, "care_plan");
        }
        for _ in 0..rng.gen_range(0..=2) {
            let sid = ids.next("svc", 1);
            let start = day_between(rng, from, to);
            let true_end = rng
                .gen_bool(0.4)
                .then(|| start + Duration::days(rng.gen_range(30..400)));
            let mut end = true_end;
            if chance(rng, f.end_before_start) {
                end = Some(start - Duration::days(rng.gen_range(1..60)));
                out.fault("service", &sid.to_string(), "end_before_start");
            }
            let deleted = rng.gen_bool(0.03);
            // Drawn in the order the row drew them, so the stream does not move.
            let service_type = *pick(
                rng,
                &[
                    "home_care",
                    "home_care",
                    "day_care",
                    "reablement",
                    "equipment",
                ],
            );
            let mechanism = *pick(
                rng,
                &[
                    "direct_payment",
                    "part_direct_payment",
                    "managed_budget",
                    "commissioned",
                ],
            );
            out.row(
                "service_agreements",
                vec![
                    i(sid),
                    i(id),
                    t(service_type),
                    t(mechanism),
                    t("Homewell"),
                    i(rng.gen_range(1800..2600)),
                    Value::Float(rng.gen_range(2..28) as f64),
                    t(start.to_string()),
                    end.map(|e| t(e.to_string())).unwrap_or(Value::Null),
                    if deleted {
                        mssql_dt(updated)
                    } else {
                        Value::Null
                    },
                ],
            )?;
            // A soft-deleted agreement was never a service.
            if !deleted {
                out.count(p, "service");
                out.event(
                    p,
                    TrueEvent::Service {
                        kind: opencare_service(service_type),
                        mechanism: opencare_mechanism(mechanism),
                        start,
                        end: true_end,
                    },
                );
            }
        }
        for _ in 0..rng.gen_range(0..=10) {
            let vid = ids.next("appt", 1);
            let planned = moment(rng, from, to);
            let attended = rng.gen_bool(0.9);
            out.row(
                "appointments",
                vec![
                    i(vid),
                    i(id),
                    mssql_dt(planned),
                    if attended {
                        mssql_dt(planned + Duration::minutes(rng.gen_range(-10..40)))
                    } else {
                        Value::Null
                    },
                    i(i64::from(attended)),
                    i(i64::from(rng.gen_bool(0.7))),
                    i(rng.gen_range(1..40)),
                ],
            )?;
            out.count(p, "visit");
        }
        for _ in 0..rng.gen_range(0..=4) {
            let nid = ids.next("note", 1);
            let deleted = rng.gen_bool(0.03);
            out.row(
                "notes",
                vec![
                    i(nid),
                    i(id),
                    mssql_dt(moment(rng, from, to)),
                    t(*pick(rng, &["visit", "call", "incident"])),
                    t(format!("Carer note {nid}.")),
                    t(*pick(
                        rng,
                        &["all", "all", "all", "team", "restricted", "sealed"],
                    )),
                    if deleted {
                        mssql_dt(updated)
                    } else {
                        Value::Null
                    },
                ],
            )?;
            if !deleted {
                out.count(p, "case_note");
            }
        }
        for _ in 0..rng.gen_range(0..=2) {
            let mid = ids.next("msg", 1);
            out.row(
                "messages",
                vec![
                    i(mid),
                    i(id),
                    t("rota@opencare.example"),
                    t(serde_json::json!(["family@example.org", "gp@example.nhs.uk"]).to_string()),
                    t("Visit times"),
                    t("Visits move to mornings."),
                    mssql_dt(moment(rng, from, to)),
                ],
            )?;
            out.count(p, "communication");
        }
        if rng.gen_bool(0.1) {
            let fid = ids.next("flag", 1);
            out.row(
                "flags",
                vec![
                    i(fid),
                    i(id),
                    t(*pick(rng, &["falls_risk", "key_safe", "safeguarding"])),
                    t("Take care"),
                    t(day_between(rng, from, to).to_string()),
                    Value::Null,
                ],
            )?;
            out.count(p, "alert");
        }
        if rng.gen_bool(0.3) {
            let cid = ids.next("consent", 1);
            out.row(
                "consents",
                vec![
                    i(cid),
                    i(id),
                    t(*pick(rng, &["share_health", "share_all", "no_sharing"])),
                    t(*pick(rng, &["permit", "permit", "deny"])),
                    t(day_between(rng, from, to).to_string()),
                    Value::Null,
                ],
            )?;
            out.count(p, "consent");
        }
    }
    person_key_indexes(
        out,
        "person_id",
        &[
            "referrals",
            "assessments",
            "care_plans",
            "service_agreements",
            "appointments",
            "notes",
            "messages",
            "flags",
            "consents",
        ],
    )
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = vec![String::new()];
    for word in text.split_whitespace() {
        let last = lines.last_mut().expect("one line");
        if !last.is_empty() && last.len() + 1 + word.len() > width {
            lines.push(word.to_string());
        } else {
            if !last.is_empty() {
                last.push(' ');
            }
            last.push_str(word);
        }
    }
    lines
}

/// SSIS/90 client numbers: seven digits and a check letter.
fn clno(n: i64) -> String {
    let digits = format!("{n:07}");
    let sum: u32 = digits
        .bytes()
        .enumerate()
        .map(|(k, b)| u32::from(b - b'0') * (8 - k as u32))
        .sum();
    format!("{digits}{}", (b'A' + (sum % 23) as u8) as char)
}

fn ssis(
    opts: &GenerateOptions,
    pop: &[TruePerson],
    out: &mut Out<'_>,
    rng: &mut ChaCha8Rng,
) -> Result<(), String> {
    let c = |n: usize| -> String { format!("CHAR({n})") };
    let (c8, c20, c40, c72) = (c(8), c(20), c(40), c(72));
    out.table(
        "CLIENT",
        &[
            ("CLNO", &c8),
            ("CLNAME", &c40),
            ("DOB", &c8),
            ("SEX", "CHAR(1)"),
            ("ETHN", "CHAR(2)"),
            ("NHSNO", &c20),
            ("ADDR1", &c40),
            ("ADDR2", &c40),
            ("ADDR3", &c40),
            ("ADDR4", &c40),
            ("PCODE", &c8),
            ("CONSFLG", "CHAR(1)"),
            ("CONSDT", &c8),
        ],
    )?;
    out.table(
        "CLXREF",
        &[("OLDCLNO", &c8), ("NEWCLNO", &c8), ("MRGDATE", &c8)],
    )?;
    out.table(
        "REFRL",
        &[
            ("REFNO", &c8),
            ("CLNO", &c8),
            ("REFDATE", &c8),
            ("REFSRC", "CHAR(2)"),
            ("REFRSN", &c40),
        ],
    )?;
    out.table(
        "CAREPKG",
        &[
            ("PKGNO", &c8),
            ("CLNO", &c8),
            ("SVCCODE", "CHAR(3)"),
            ("HRSPW", "CHAR(6)"),
            ("COSTPW", "CHAR(9)"),
            ("STDATE", &c8),
            ("ENDDATE", &c8),
        ],
    )?;
    out.table(
        "CHRONO",
        &[
            ("CLNO", &c8),
            ("ENTDATE", &c8),
            ("ENTTIME", "CHAR(4)"),
            ("SEQ", "CHAR(3)"),
            ("WORKER", "CHAR(6)"),
            ("TEXT", &c72),
        ],
    )?;
    out.table(
        "CORRESP",
        &[
            ("CLNO", &c8),
            ("DOCREF", "CHAR(10)"),
            ("LTRDATE", &c8),
            ("LTRTYPE", "CHAR(3)"),
            ("PATH", "CHAR(60)"),
        ],
    )?;
    out.table(
        "WARNING",
        &[
            ("WRNNO", &c8),
            ("CLNO", &c8),
            ("WRNCODE", "CHAR(4)"),
            ("WRNTEXT", &c40),
            ("WRNDATE", &c8),
        ],
    )?;
    out.table("STAFF", &[("STAFFID", "CHAR(6)"), ("STNAME", &c40)])?;
    for s in 1..=10 {
        out.row(
            "STAFF",
            vec![t(format!("S{s:05}")), t(format!("STAFF MEMBER {s}"))],
        )?;
    }
    let ymd = |d: NaiveDate| d.format("%Y%m%d").to_string();
    let f = &opts.faults;
    let mut ids = Counter::default();
    for p in pop.iter().filter(|p| p.in_system[2]) {
        let no = clno(ids.next("CLIENT", 1));
        let (dob, dob_fault) = recorded_dob(opts, rng, p);
        if let Some(kind) = dob_fault.filter(|k| *k == "day_month_swap") {
            out.fault("person", &no, kind);
        }
        let dob = if dob_fault == Some("estimated_birth_date") {
            p.dob
        } else {
            dob
        };
        // Two date styles from two eras of data entry.
        let dob_text = if rng.gen_bool(0.5) {
            ymd(dob)
        } else {
            dob.format("%d/%m/%y").to_string()
        };
        let mut sex = match (p.gender, rng.gen_bool(0.5)) {
            ("MALE", true) => "M",
            ("MALE", false) => "1",
            ("FEMALE", true) => "F",
            ("FEMALE", false) => "2",
            _ => "X",
        };
        let mut ethn = format!(
            "{:02}",
            "ABCDHJKMNRS"
                .find(p.ethnicity)
                .map(|k| k + 1)
                .unwrap_or(99)
                .min(99)
        );
        if ethn == "99" || p.ethnicity == 'Z' {
            ethn = "99".into();
        }
        if chance(rng, f.unmapped_code) {
            if rng.gen_bool(0.5) {
                sex = "Q";
            } else {
                ethn = "77".into();
            }
            out.fault("person", &no, "unmapped_code");
        }
        let nhs = nhs_fault(opts, rng);
        record_nhs_fault(out, &nhs, &no);
        let nhs_text = match nhs {
            NhsFault::None => {
                if rng.gen_bool(0.5) {
                    p.nhs.clone()
                } else {
                    format!("{} {} {}", &p.nhs[..3], &p.nhs[3..6], &p.nhs[6..])
                }
            }
            NhsFault::Missing => String::new(),
            NhsFault::Placeholder => "N/K".into(),
            NhsFault::WrongCheckDigit => with_wrong_check_digit(&p.nhs),
        };
        let (postcode, bad) = recorded_postcode(opts, rng, p);
        if bad {
            out.fault("person", &no, "bad_postcode");
        }
        let consent = rng.gen_bool(0.6);
        out.row(
            "CLIENT",
            vec![
                t(no.clone()),
                t(format!("{}, {}", p.family.to_uppercase(), p.given)),
                t(dob_text),
                t(sex),
                t(ethn),
                t(nhs_text),
                t(p.street.to_uppercase()),
                t("NORTHTOWN"),
                t(""),
                t(""),
                t(postcode),
                t(if consent { "Y" } else { "N" }),
                t(if consent { "20080401" } else { "" }),
            ],
        )?;
        out.person_record(p, &no);
        out.count(p, "address");
        // CONSFLG, Y or N, is the client's consent record (ssis.toml).
        out.count(p, "consent");
        if chance(rng, f.duplicate_within_source) {
            let dup = clno(ids.next("CLIENT", 1));
            out.row(
                "CLIENT",
                vec![
                    t(dup.clone()),
                    t(format!("{}, {}", p.family.to_uppercase(), p.given)),
                    t(ymd(p.dob)),
                    t(sex),
                    t("99"),
                    t(""),
                    t(""),
                    t(""),
                    t(""),
                    t(""),
                    t(""),
                    t("N"),
                    t(""),
                ],
            )?;
            out.row("CLXREF", vec![t(dup.clone()), t(no.clone()), t("20110301")])?;
            out.person_record(p, &dup);
            out.count(p, "address");
            out.count(p, "consent");
            out.fault("person", &dup, "duplicate_within_source");
        }
        // SSIS/90 was replaced in 2012: its history is old.
        let from =
            (p.dob + Duration::days(30)).max(NaiveDate::from_ymd_opt(1995, 1, 1).expect("date"));
        let to = NaiveDate::from_ymd_opt(2012, 6, 30)
            .expect("date")
            .max(from + Duration::days(2));
        for _ in 0..rng.gen_range(0..=2) {
            let rno = format!("R{:07}", ids.next("REFRL", 1));
            let received = day_between(rng, from, to);
            out.row(
                "REFRL",
                vec![
                    t(rno),
                    t(no.clone()),
                    t(ymd(received)),
                    t(*pick(rng, &["01", "02", "03", "04"])),
                    t("REFERRED FOR ASSESSMENT"),
                ],
            )?;
            out.count(p, "referral");
            // SSIS/90 kept no referral outcome.
            out.event(
                p,
                TrueEvent::Referral {
                    received,
                    has_outcome: false,
                    children: false,
                },
            );
        }
        for _ in 0..rng.gen_range(0..=2) {
            let pno = format!("P{:07}", ids.next("CAREPKG", 1));
            let start = day_between(rng, from, to);
            // Drawn in the order the row drew them, so the stream does not move.
            let code = *pick(rng, &["HC", "DC", "RC", "NC"]);
            let hours = rng.gen_range(2..30) as f64;
            let cost = rng.gen_range(40..900) as f64;
            let end = start + Duration::days(rng.gen_range(30..900));
            out.row(
                "CAREPKG",
                vec![
                    t(pno),
                    t(no.clone()),
                    t(code),
                    t(format!("{hours:.1}")),
                    t(format!("{cost:.2}")),
                    t(ymd(start)),
                    t(ymd(end)),
                ],
            )?;
            out.count(p, "service");
            // SSIS/90 predates personal budgets: the council commissioned everything.
            out.event(
                p,
                TrueEvent::Service {
                    kind: ssis_service(code),
                    mechanism: Mechanism::CouncilCommissioned,
                    start,
                    end: Some(end),
                },
            );
        }
        let mut entries = std::collections::BTreeSet::new();
        for _ in 0..rng.gen_range(0..=4) {
            let date = day_between(rng, from, to);
            let time = format!("{:02}{:02}", rng.gen_range(8..18), rng.gen_range(0..4) * 15);
            // An entry is keyed by client, date and time: a second one at the same
            // minute would be a continuation of the first, so the generator avoids it.
            if !entries.insert((date, time.clone())) {
                continue;
            }
            let text = format!(
                "VISITED {} AT HOME. DISCUSSED SUPPORT NEEDS AND AGREED TO REVIEW THE CARE PACKAGE IN SIX WEEKS. NO CONCERNS RAISED BY FAMILY.",
                p.given.to_uppercase()
            );
            // CHRONO holds the text as lines of at most 72 characters; the profile joins them.
            let lines = wrap(&text, 72);
            for (seq, line) in lines.iter().enumerate() {
                out.row(
                    "CHRONO",
                    vec![
                        t(no.clone()),
                        t(ymd(date)),
                        t(time.clone()),
                        t(format!("{:03}", seq + 1)),
                        t(format!("S{:05}", rng.gen_range(1..=10))),
                        t(line.clone()),
                    ],
                )?;
            }
            out.count(p, "case_note");
        }
        for _ in 0..rng.gen_range(0..=2) {
            let dref = format!("D{:09}", ids.next("CORRESP", 1));
            out.row(
                "CORRESP",
                vec![
                    t(no.clone()),
                    t(dref.clone()),
                    t(ymd(day_between(rng, from, to))),
                    t(*pick(rng, &["APP", "REV", "GEN"])),
                    t(format!("H:\\LETTERS\\{dref}.DOC")),
                ],
            )?;
            out.count(p, "document");
        }
        if rng.gen_bool(0.1) {
            let wno = format!("W{:07}", ids.next("WARNING", 1));
            out.row(
                "WARNING",
                vec![
                    t(wno),
                    t(no.clone()),
                    t(*pick(rng, &["VIOL", "DOG", "RISK"])),
                    t("SEE FILE"),
                    t(ymd(day_between(rng, from, to))),
                ],
            )?;
            out.count(p, "alert");
        }
    }
    person_key_indexes(out, "OLDCLNO", &["CLXREF"])?;
    person_key_indexes(
        out,
        "CLNO",
        &["CLIENT", "REFRL", "CAREPKG", "CHRONO", "CORRESP", "WARNING"],
    )
}
