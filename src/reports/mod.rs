//! Reports for planning and research: the shared minimum data set (event level, in the
//! shape of the adult social care Client Level Data return) and the performance
//! indicators departments are compared on (design section 7, issue 5).
//!
//! Both read the sources page by page (a page is `page_people` people of one
//! authority, in person-id order): per page, per source, one statement per entity, with
//! the date range pushed into the vendor SQL where the profile allows
//! (`by_person_between`). Nothing holds more than a page, so an export's memory does not
//! grow with its size. Indicators are aggregates: they count every record the gateway
//! holds for the authority, less people with a national data opt-out, and are
//! published only after small-number suppression. The data set is person level: every
//! record in it passes the consent hook (`access::release`) for the caller.

pub use crate::record::window::{active_in, record_span, Window};

pub mod calendar;
pub mod config;
pub mod csv;
pub mod definitions;
pub mod extract;
pub mod indicators;
pub mod mds;
pub mod national;
pub mod peers;
pub mod run;
pub mod suppress;

use std::sync::Arc;

use chrono::{Datelike, Months, NaiveDate};
use escr_connector::EntityKind;

use crate::consent::access::Policy;
use crate::consent::AccessControl;
use crate::identity::index::IdentityIndex;
use crate::record::loader::Fetcher;

pub use config::{Reports, ReportsConfig};

/// What reports read and answer to, from the running gateway: its sources, identity
/// index, policy and consent path, and the reports config. Reports sit below the API
/// (which owns the gateway), so they take its parts; cloning is a few `Arc`s.
#[derive(Clone)]
pub struct Estate {
    pub fetcher: Arc<Fetcher>,
    pub index: Arc<IdentityIndex>,
    pub policy: Arc<dyn Policy>,
    pub access: Option<Arc<AccessControl>>,
    pub reports: Option<Arc<Reports>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(
        "period `{0}`: use a financial year (`2025-26`), a quarter of one (`2025-26-Q1`, April to June), a month (`2025-04`) or two dates (`2025-04-01..2026-03-31`)"
    )]
    Period(String),
    #[error("indicators are published for standard periods only ({1}), not `{0}`: two overlapping periods could be subtracted to give back a suppressed count")]
    NonStandardPeriod(String, String),
    #[error("no authority `{0}` here (configured: {1})")]
    UnknownAuthority(String, String),
    #[error("reports need the purpose of use `planning` or `research` (this request: `{0}`)")]
    Purpose(String),
    #[error("role `{0}` may not use reports")]
    Role(String),
    #[error("reports are not configured (`reports = \"reports.toml\"` in the gateway config)")]
    NotConfigured,
    #[error(transparent)]
    Source(#[from] crate::record::source::SourceError),
    #[error("the bank-holiday calendar does not cover {0}")]
    Calendar(NaiveDate),
    #[error("the audit log cannot be written: nothing is released")]
    Audit,
    #[error("bad cursor")]
    Cursor,
    #[error("the gateway reporting on `{0}` could not be asked: {1}")]
    Peer(String, String),
    /// A page's task ended without an answer (the runtime shutting down).
    #[error("the report was interrupted: nothing is released")]
    Interrupted,
}

impl ReportError {
    /// The GraphQL error code and HTTP status for this error.
    pub fn code(&self) -> &'static str {
        match self {
            ReportError::Period(_)
            | ReportError::NonStandardPeriod(..)
            | ReportError::UnknownAuthority(..)
            | ReportError::Cursor => "BAD_USER_INPUT",
            ReportError::Purpose(_) | ReportError::Role(_) => "PURPOSE_NOT_PERMITTED",
            ReportError::NotConfigured | ReportError::Calendar(_) => "NOT_CONFIGURED",
            ReportError::Source(_) => "SOURCE_UNAVAILABLE",
            ReportError::Peer(..) => "PEER_UNAVAILABLE",
            ReportError::Audit => "AUDIT_UNAVAILABLE",
            ReportError::Interrupted => "UNAVAILABLE",
        }
    }

    pub fn status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self.code() {
            "BAD_USER_INPUT" => StatusCode::BAD_REQUEST,
            "PURPOSE_NOT_PERMITTED" => StatusCode::FORBIDDEN,
            "SOURCE_UNAVAILABLE" | "PEER_UNAVAILABLE" => StatusCode::BAD_GATEWAY,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// A reporting period: both dates inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Period {
    pub start: NaiveDate,
    pub end: NaiveDate,
}

/// The standard periods indicators may be published for (`reports.toml`
/// `indicator_periods`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeriodKind {
    /// 1 April to 31 March.
    FinancialYear,
    /// A quarter of a financial year (Q1 April to June ... Q4 January to March).
    Quarter,
    /// A calendar month.
    Month,
}

impl PeriodKind {
    pub fn describe(self) -> &'static str {
        match self {
            PeriodKind::FinancialYear => "financial years",
            PeriodKind::Quarter => "quarters",
            PeriodKind::Month => "months",
        }
    }
}

fn date(y: i32, m: u32, d: u32) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(y, m, d)
}

/// The last day of the month `months` after the first of (y, m).
fn month_end(y: i32, m: u32, months: u32) -> Option<NaiveDate> {
    date(y, m, 1)?
        .checked_add_months(Months::new(months + 1))?
        .pred_opt()
}

impl Period {
    /// `2025-26` (the financial year 1 April 2025 - 31 March 2026), `2025-26-Q1` (its
    /// first quarter), `2025-04` (a month) or `2025-04-01..2026-03-31`.
    pub fn parse(text: &str) -> Result<Period, ReportError> {
        let bad = || ReportError::Period(text.chars().take(40).collect());
        let text = text.trim();
        if let Some((a, b)) = text.split_once("..") {
            let start = NaiveDate::parse_from_str(a.trim(), "%Y-%m-%d").map_err(|_| bad())?;
            let end = NaiveDate::parse_from_str(b.trim(), "%Y-%m-%d").map_err(|_| bad())?;
            return (start <= end && (end - start).num_days() <= 366 * 5)
                .then_some(Period { start, end })
                .ok_or_else(bad);
        }
        let (year_text, quarter) = match text.split_once("-Q") {
            Some((y, q)) => (y, Some(q.parse::<u32>().map_err(|_| bad())?)),
            None => (text, None),
        };
        let (year, next) = year_text.split_once('-').ok_or_else(bad)?;
        let year: i32 = year.parse().map_err(|_| bad())?;
        if !(1990..=2100).contains(&year) || year_text.len() != 7 {
            return Err(bad());
        }
        let next: u32 = next.parse().map_err(|_| bad())?;
        if quarter.is_none() && (1..=12).contains(&next) && next != ((year + 1) % 100) as u32 {
            // A month: 2025-04.
            let start = date(year, next, 1).ok_or_else(bad)?;
            let end = month_end(year, next, 0).ok_or_else(bad)?;
            return Ok(Period { start, end });
        }
        if next != ((year + 1) % 100) as u32 {
            return Err(bad());
        }
        match quarter {
            None => Ok(Period {
                start: date(year, 4, 1).ok_or_else(bad)?,
                end: date(year + 1, 3, 31).ok_or_else(bad)?,
            }),
            Some(q @ 1..=4) => {
                let start = date(year, 4, 1)
                    .and_then(|d| d.checked_add_months(Months::new(3 * (q - 1))))
                    .ok_or_else(bad)?;
                let end = month_end(start.year(), start.month(), 2).ok_or_else(bad)?;
                Ok(Period { start, end })
            }
            Some(_) => Err(bad()),
        }
    }

    pub fn contains(&self, d: NaiveDate) -> bool {
        self.start <= d && d <= self.end
    }

    /// Which standard period this is, if it is one.
    pub fn kind(&self) -> Option<PeriodKind> {
        let (y, m) = (self.start.year(), self.start.month());
        if self.start.day() != 1 {
            return None;
        }
        if m == 4 && Some(self.end) == date(y + 1, 3, 31) {
            Some(PeriodKind::FinancialYear)
        } else if matches!(m, 1 | 4 | 7 | 10) && Some(self.end) == month_end(y, m, 2) {
            Some(PeriodKind::Quarter)
        } else if Some(self.end) == month_end(y, m, 0) {
            Some(PeriodKind::Month)
        } else {
            None
        }
    }

    /// The label used in outputs: `2025-26`, `2025-26-Q1`, `2025-04`, else the two dates.
    pub fn label(&self) -> String {
        let (y, m) = (self.start.year(), self.start.month());
        let financial_year = if m >= 4 { y } else { y - 1 };
        let fy = format!("{financial_year}-{:02}", (financial_year + 1) % 100);
        match self.kind() {
            Some(PeriodKind::FinancialYear) => fy,
            Some(PeriodKind::Quarter) => format!("{fy}-Q{}", (m + 8) % 12 / 3 + 1),
            Some(PeriodKind::Month) => format!("{y}-{m:02}"),
            None => format!("{}..{}", self.start, self.end),
        }
    }

    /// This period if indicators may be published for it (`allowed` kinds only): any
    /// other range could be differenced against a standard one.
    pub fn standard(self, allowed: &[PeriodKind]) -> Result<Period, ReportError> {
        if self.kind().is_some_and(|k| allowed.contains(&k)) {
            return Ok(self);
        }
        let kinds: Vec<&str> = allowed.iter().map(|k| k.describe()).collect();
        Err(ReportError::NonStandardPeriod(
            self.label(),
            kinds.join(", "),
        ))
    }
}

/// The earliest date any report looks back to (first-ever services, earlier plans).
pub fn beginning() -> NaiveDate {
    NaiveDate::from_ymd_opt(1900, 1, 1).expect("valid date")
}

/// What each entity is read for, for a period: referrals from 12 months before it (for
/// re-referrals), plans and services from the beginning (earlier plans, first-ever
/// admissions), assessments for the period.
pub fn window_for(entity: EntityKind, period: Period) -> Window {
    let from = match entity {
        EntityKind::Referral => period
            .start
            .checked_sub_months(Months::new(12))
            .unwrap_or(period.start),
        EntityKind::Assessment => period.start,
        _ => beginning(),
    };
    Window {
        from,
        to: period.end,
    }
}

/// Whole years from `birth` to `on`.
pub fn age_on(birth: NaiveDate, on: NaiveDate) -> i32 {
    let mut age = on.year() - birth.year();
    if (on.month(), on.day()) < (birth.month(), birth.day()) {
        age -= 1;
    }
    age
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse_and_bad_ones_say_how() {
        let p = Period::parse("2025-26").unwrap();
        assert_eq!(p.start.to_string(), "2025-04-01");
        assert_eq!(p.end.to_string(), "2026-03-31");
        assert_eq!(p.label(), "2025-26");
        let q = Period::parse("2025-01-01..2025-12-31").unwrap();
        assert_eq!(q.label(), "2025-01-01..2025-12-31");
        assert_eq!(q.kind(), None);
        for (text, start, end, kind) in [
            (
                "2025-26-Q1",
                "2025-04-01",
                "2025-06-30",
                PeriodKind::Quarter,
            ),
            (
                "2025-26-Q4",
                "2026-01-01",
                "2026-03-31",
                PeriodKind::Quarter,
            ),
            ("2025-04", "2025-04-01", "2025-04-30", PeriodKind::Month),
            ("2024-02", "2024-02-01", "2024-02-29", PeriodKind::Month),
            (
                "2025-04-01..2026-03-31",
                "2025-04-01",
                "2026-03-31",
                PeriodKind::FinancialYear,
            ),
        ] {
            let p = Period::parse(text).unwrap();
            assert_eq!(
                (p.start.to_string(), p.end.to_string()),
                (start.into(), end.into())
            );
            assert_eq!(p.kind(), Some(kind), "{text}");
            assert_eq!(Period::parse(&p.label()).unwrap(), p, "{text}");
        }
        for bad in [
            "2025-27",
            "2025",
            "x",
            "2026-01-01..2025-01-01",
            "1899-00",
            "2025-26-Q5",
            "2025-13",
        ] {
            assert!(Period::parse(bad).is_err(), "{bad}");
        }
        // The reviewer's differencing pair: neither is a standard period.
        for custom in ["2025-04-01..2026-03-09", "2025-04-01..2026-03-10"] {
            let p = Period::parse(custom).unwrap();
            assert!(p
                .standard(&[
                    PeriodKind::FinancialYear,
                    PeriodKind::Quarter,
                    PeriodKind::Month
                ])
                .is_err());
        }
        assert!(Period::parse("2025-26-Q2")
            .unwrap()
            .standard(&[PeriodKind::FinancialYear])
            .is_err());
    }

    #[test]
    fn ages_count_birthdays() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert_eq!(age_on(d("2008-03-31"), d("2026-03-30")), 17);
        assert_eq!(age_on(d("2008-03-31"), d("2026-03-31")), 18);
        assert_eq!(age_on(d("2008-02-29"), d("2026-02-28")), 17);
    }
}
