//! A date range records are read for, and whether a record falls in it. Reports ask
//! for ranges; sources push them into vendor SQL where the profile can and filter
//! exactly here, so both give the same answer.

use chrono::NaiveDate;
use escr_connector::mapping::placing_date;
use escr_connector::{EntityKind, Record};

/// The dates a report reads records for (inclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

/// The dates that place a record in time: (start, end) for spans, (date, date) for
/// events. For assessments the end is authorisation, else completion.
pub fn record_span(r: &Record) -> (Option<NaiveDate>, Option<NaiveDate>) {
    // The same field whose absence the mapping reports as MISSING_DATE.
    let start = r.date(placing_date(r.entity).unwrap_or("start"));
    let end = match r.entity {
        EntityKind::Referral => start,
        EntityKind::Assessment => r.date("authorised").or_else(|| r.date("completed")),
        _ => r.date("end"),
    };
    (start, end)
}

/// Is the record active at some time in the window? Exactly what `by_person_between`
/// SQL approximates from above: the start on or before its end, and no end before its
/// start. A record ending before it starts spans both its dates, the earlier first: a
/// report must see it to count it as excluded (an assessment authorised in the period
/// but "started" after it). A record without a start date is not placed in time and is
/// left out; the mapping reported why (`UNPARSEABLE_DATE` or `MISSING_DATE`, counted in
/// the data-quality report).
pub fn active_in(r: &Record, w: Window) -> bool {
    let (start, end) = record_span(r);
    let Some(start) = start else {
        return false;
    };
    let (first, last) = match end {
        Some(e) if e < start => (e, Some(start)),
        _ => (start, end),
    };
    first <= w.to && last.is_none_or(|e| e >= w.from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use escr_connector::mapping::FieldValue;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn assessment(started: &str, authorised: &str) -> Record {
        let mut r = Record {
            entity: EntityKind::Assessment,
            local_id: "1".into(),
            person_id: Some("1".into()),
            last_updated: None,
            fields: Default::default(),
            labels: Default::default(),
        };
        r.fields.insert("started", FieldValue::Date(d(started)));
        r.fields
            .insert("authorised", FieldValue::Date(d(authorised)));
        r
    }

    #[test]
    fn a_record_ending_before_it_starts_spans_both_dates() {
        let year = Window {
            from: d("2025-04-01"),
            to: d("2026-03-31"),
        };
        // Authorised in the year, "started" after it: the report must see it.
        assert!(active_in(&assessment("2026-05-01", "2026-03-01"), year));
        // Authorised before the year, started in it.
        assert!(active_in(&assessment("2025-05-01", "2025-03-01"), year));
        // Both dates after, both before.
        assert!(!active_in(&assessment("2026-06-01", "2026-05-01"), year));
        assert!(!active_in(&assessment("2025-03-01", "2025-02-01"), year));
        // The ordinary case is unchanged.
        assert!(active_in(&assessment("2026-03-01", "2026-05-01"), year));
        assert!(!active_in(&assessment("2026-04-01", "2026-05-01"), year));
    }
}
