//! Data-driven profile cases: every file in `tests/fixtures/vendors/cases/` starts with
//! `# expect: ok` or `# expect: <line>: <part of the reason>`; a bad profile must fail on
//! that line, naming the file, with that reason. The good profile's options are then
//! exercised on rows shaped as its vendor keeps them.

use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use escr_connector::mapping::map_rows;
use escr_connector::{EntityKind, FindingKind, RowSet, Value, VendorProfile};

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/vendors/cases")
}

#[test]
fn every_case_fails_or_passes_as_it_says() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 15, "{} cases", cases.len());
    let mut good = 0;
    for case in &cases {
        let text = std::fs::read_to_string(case).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{}: no `# expect:` line", case.display()));
        let result = VendorProfile::parse(case, &text);
        if expect == "ok" {
            result.unwrap_or_else(|e| panic!("{e}"));
            good += 1;
            continue;
        }
        let (line, reason) = expect.split_once(": ").expect("`<line>: <reason>`");
        let err = match result {
            Ok(_) => panic!("{}: accepted, expected {expect}", case.display()),
            Err(e) => e,
        };
        assert_eq!(err.path, *case);
        assert_eq!(
            err.line,
            line.parse::<usize>().unwrap(),
            "{}: {err}",
            case.display()
        );
        assert!(err.reason.contains(reason), "{}: {err}", case.display());
        assert!(err
            .to_string()
            .starts_with(&format!("{}:{line}: ", case.display())));
    }
    assert!(good >= 1);
}

fn good_profile() -> VendorProfile {
    VendorProfile::load(&cases_dir().join("good-every-new-option.toml")).unwrap()
}

fn rows(columns: &[&str], rows: Vec<Vec<Value>>) -> RowSet {
    RowSet {
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows,
    }
}

fn t(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn d(y: i32, m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, day).unwrap()
}

#[test]
fn epoch_placeholder_invert_and_identifiers_on_people() {
    let p = good_profile();
    let rs = rows(
        &[
            "ID", "MID", "DOB", "SHARE_OK", "LAREF", "UPN", "NINO", "UUID", "UPD",
        ],
        vec![
            vec![
                Value::Float(1001.0),
                t("Jane"),
                Value::Int(-1_230_768_000), // 1931-01-01 in UTC
                t("N"),
                t("LA-77"),
                t("A123456789012"),
                t("QQ123456C"),
                t("0b7e1b9c-4a5e-4c39-8f4e-0d1c4a0f9a11"),
                Value::Int(1_736_933_400_000),
            ],
            vec![
                t("1002"),
                Value::Null,
                Value::Int(-2_208_988_800), // 1900-01-01: the vendor's "not known"
                t("y"),
                t("unknown"),
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
            ],
        ],
    );
    let m = map_rows(&p, EntityKind::Person, rs.clone()).unwrap();
    let (a, b) = (&m.records[0], &m.records[1]);
    assert_eq!(a.local_id, "1001", "a DECIMAL key reads as its digits");
    assert_eq!(a.text("middle_names"), Some("Jane"));
    assert_eq!(a.date("birth_date"), Some(d(1931, 1, 1)));
    assert_eq!(a.bool("restricted"), Some(true), "SHARE_OK = N: restricted");
    assert_eq!(b.bool("restricted"), Some(false));
    assert_eq!(a.text("la_reference"), Some("LA-77"));
    assert_eq!(a.text("upn"), Some("A123456789012"));
    assert_eq!(a.text("ni_number"), Some("QQ123456C"));
    assert!(a.text("vendor_uuid").is_some());
    assert_eq!(
        a.last_updated,
        Some(d(2025, 1, 15).and_hms_opt(9, 30, 0).unwrap()),
        "epoch milliseconds in UTC, as the profile's time zone says"
    );
    assert_eq!(
        b.date("birth_date"),
        None,
        "the placeholder date is not a birth date"
    );
    assert_eq!(b.text("la_reference"), None);
    let placeholders: Vec<_> = m
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::PlaceholderValue)
        .map(|f| (f.local_id.as_str(), f.field))
        .collect();
    assert_eq!(
        placeholders,
        [("1002", "birth_date"), ("1002", "la_reference")]
    );
}

#[test]
fn sentinels_open_ends_and_other_codes_on_services() {
    let p = good_profile();
    let rs = rows(
        &["ID", "PID", "KIND", "ST", "EN"],
        vec![
            // An open package: the end-of-time sentinel, as epoch seconds.
            vec![
                t("S1"),
                t("1001"),
                t("HC"),
                t("01/04/2024"),
                Value::Int(86_560_617_600),
            ],
            vec![
                t("S2"),
                t("1001"),
                t("ML"),
                Value::Int(1_711_929_600),
                Value::Int(1_743_379_200),
            ],
            vec![
                t("S3"),
                t("1001"),
                t("CHC"),
                Value::Int(1_711_929_600),
                Value::Null,
            ],
            vec![
                t("S4"),
                t("1001"),
                t("RS"),
                Value::Int(1_743_379_200),
                Value::Int(1_711_929_600),
            ],
        ],
    );
    let m = map_rows(&p, EntityKind::Service, rs.clone()).unwrap();
    let by = |id: &str| m.records.iter().find(|r| r.local_id == id).unwrap();
    assert_eq!(by("S1").text("type"), Some("HOME_CARE"));
    assert_eq!(by("S1").date("start"), Some(d(2024, 4, 1)));
    assert_eq!(by("S1").date("end"), None, "4712-12-31 means open");
    assert_eq!(by("S2").text("type"), Some("OTHER"));
    assert_eq!(
        by("S2").text("type_other"),
        Some("MEALS"),
        "the deployment's value"
    );
    assert_eq!(by("S2").date("end"), Some(d(2025, 3, 31)));
    assert_eq!(by("S3").text("type"), Some("OTHER"));
    assert_eq!(
        by("S3").text("type_other"),
        Some("CHC"),
        "the vendor's own code"
    );
    let kinds: Vec<_> = m
        .findings
        .iter()
        .map(|f| (f.local_id.as_str(), f.kind))
        .collect();
    assert!(
        kinds.contains(&("S1", FindingKind::OpenEndSentinel)),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("S3", FindingKind::UnmappedCode)),
        "OTHER stays reported"
    );
    assert!(
        !kinds.contains(&("S2", FindingKind::UnmappedCode)),
        "an added value maps"
    );
    assert!(kinds.contains(&("S4", FindingKind::EndBeforeStart)));
    let unmapped = m
        .findings
        .iter()
        .find(|f| f.kind == FindingKind::UnmappedCode)
        .unwrap();
    assert_eq!(unmapped.code_value.as_deref(), Some("CHC"));
}

#[test]
fn base_statements_become_lookups_by_key_and_by_person() {
    let p = good_profile();
    let person = p.entity(EntityKind::Person).unwrap();
    assert_eq!(
        person.by_key.as_ref().unwrap().get_ref(),
        "SELECT * FROM (SELECT * FROM P WHERE DELETED = 0) escr_base WHERE escr_base.ID IN ({keys})"
    );
    assert_eq!(
        person.list.as_ref().unwrap().get_ref(),
        "SELECT * FROM P WHERE DELETED = 0"
    );
    assert!(person.by_person.is_none());
    let visit = p.entity(EntityKind::Visit).unwrap();
    assert_eq!(
        visit.by_person.as_ref().unwrap().get_ref(),
        "SELECT * FROM (SELECT * FROM V) escr_base WHERE escr_base.PID IN ({keys})"
    );
}

#[test]
fn visits_keep_their_end_and_title_and_report_an_end_before_the_start() {
    let p = good_profile();
    let rs = rows(
        &["ID", "PID", "TTL", "ST", "EN"],
        vec![
            vec![
                t("V1"),
                t("1001"),
                t("Review at home"),
                Value::Int(1_736_933_400),
                Value::Int(1_736_937_000),
            ],
            vec![
                t("V2"),
                t("1001"),
                Value::Null,
                Value::Int(1_736_933_400),
                Value::Int(1_736_847_000),
            ],
        ],
    );
    let m = map_rows(&p, EntityKind::Visit, rs.clone()).unwrap();
    assert_eq!(m.records[0].text("title"), Some("Review at home"));
    assert_eq!(
        m.records[0].date_time("end"),
        Some(d(2025, 1, 15).and_hms_opt(10, 30, 0).unwrap())
    );
    let kinds: Vec<_> = m
        .findings
        .iter()
        .map(|f| (f.local_id.as_str(), f.kind))
        .collect();
    assert_eq!(kinds, [("V2", FindingKind::EndBeforeStart)]);
}

/// A reader of a few fields, given only the columns `columns_read` names (the others
/// `Null`, as `query_columns` may leave them), maps those fields, the keys and the labels
/// exactly as a full read does.
#[test]
fn a_read_of_some_fields_maps_them_as_a_full_read_does() {
    let p = good_profile();
    let notes = rows(
        &["ID", "PID", "VIS", "BODY"],
        vec![
            vec![t("1"), t("7"), t("T"), t("seen at home")],
            vec![t("2"), t("7"), t("F"), t("phoned")],
            vec![t("3"), t("8"), t("t"), t("letter")],
        ],
    );
    let labelled = same_as_a_full_read(&p, EntityKind::CaseNote, notes, &[]);
    assert!(labelled.iter().any(|r| !r.labels.is_empty()));
    let visits = rows(
        &["ID", "PID", "TTL", "ST", "EN"],
        vec![
            vec![
                t("1"),
                t("7"),
                t("Review"),
                Value::Int(1_700_000_000),
                Value::Int(1_700_003_600),
            ],
            vec![
                t("2"),
                t("8"),
                t("Visit"),
                Value::Null,
                Value::Int(1_700_003_600),
            ],
        ],
    );
    let mapped = same_as_a_full_read(&p, EntityKind::Visit, visits, &["actual"]);
    assert!(mapped[0].date_time("actual").is_some());
}

fn same_as_a_full_read(
    p: &VendorProfile,
    entity: EntityKind,
    all: RowSet,
    only: &[&str],
) -> Vec<escr_connector::Record> {
    use escr_connector::mapping::{columns_read, map_rows_reading, Fields};
    let read = columns_read(p.entity(entity).unwrap(), Fields::Only(only)).unwrap();
    let mut partial = all.clone();
    for row in &mut partial.rows {
        for (cell, column) in row.iter_mut().zip(&all.columns) {
            if !read.iter().any(|r| r.eq_ignore_ascii_case(column)) {
                *cell = Value::Null;
            }
        }
    }
    assert_ne!(partial, all, "{entity:?}: some columns go unread");
    let full = map_rows(p, entity, all).unwrap();
    let some = map_rows_reading(p, entity, partial, Fields::Only(only)).unwrap();
    assert_eq!(full.records.len(), some.records.len());
    for (f, s) in full.records.iter().zip(&some.records) {
        assert_eq!(
            (&f.local_id, &f.person_id, f.last_updated, &f.labels),
            (&s.local_id, &s.person_id, s.last_updated, &s.labels)
        );
        let wanted: Vec<_> = f.fields.iter().filter(|(k, _)| only.contains(k)).collect();
        assert_eq!(wanted, s.fields.iter().collect::<Vec<_>>());
    }
    some.records
}
