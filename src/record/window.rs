//! A date range records are read for, and whether a record falls in it. Reports ask
//! for ranges; sources push them into vendor SQL where the profile can and filter
//! exactly here, so both give the same answer.

use chrono::NaiveDate;
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
    match r.entity {
        EntityKind::Referral => {
            let d = r.date("received_at");
            (d, d)
        }
        EntityKind::Assessment => (
            r.date("started"),
            r.date("authorised").or_else(|| r.date("completed")),
        ),
        _ => (r.date("start"), r.date("end")),
    }
}

/// Is the record active at some time in the window? Exactly what `by_person_between`
/// SQL approximates from above: the start on or before its end, and no end before its
/// start. A record without a start date is not placed in time and is left out (the
/// mapping reported why).
pub fn active_in(r: &Record, w: Window) -> bool {
    let (start, end) = record_span(r);
    start.is_some_and(|s| s <= w.to) && end.is_none_or(|e| e >= w.from)
}
