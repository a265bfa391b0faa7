//! Working days: Monday to Friday, less England and Wales bank holidays from a calendar
//! file (`config/bank-holidays.toml`). Dates outside the years the file covers are an
//! error: a missing holiday would silently shorten every count.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::{Datelike, NaiveDate, Weekday};
use escr_connector::profile::line_of;
use escr_connector::ConfigError;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CalendarFile {
    first_year: i32,
    last_year: i32,
    dates: toml::Spanned<Vec<toml::Spanned<String>>>,
}

#[derive(Debug, Clone)]
pub struct BankHolidays {
    pub first_year: i32,
    pub last_year: i32,
    pub dates: BTreeSet<NaiveDate>,
}

impl BankHolidays {
    pub fn load(path: &Path) -> Result<BankHolidays, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::io(path, format!("cannot read: {e}")))?;
        let file: CalendarFile = toml::from_str(&text).map_err(|e| {
            let line = e.span().map(|s| line_of(&text, s.start)).unwrap_or(0);
            ConfigError::at(path, line, e.message().to_string())
        })?;
        let at =
            |offset: usize, reason: String| ConfigError::at(path, line_of(&text, offset), reason);
        if file.first_year > file.last_year {
            return Err(at(0, "first_year is after last_year".into()));
        }
        let mut dates = BTreeSet::new();
        for d in file.dates.get_ref() {
            let date = NaiveDate::parse_from_str(d.get_ref(), "%Y-%m-%d").map_err(|_| {
                at(
                    d.span().start,
                    format!("`{}` is not a date (YYYY-MM-DD)", d.get_ref()),
                )
            })?;
            if !(file.first_year..=file.last_year).contains(&date.year()) {
                return Err(at(
                    d.span().start,
                    format!("{date} is outside first_year..last_year"),
                ));
            }
            if matches!(date.weekday(), Weekday::Sat | Weekday::Sun) {
                return Err(at(
                    d.span().start,
                    format!("{date} is a weekend day: give the substitute day"),
                ));
            }
            if !dates.insert(date) {
                return Err(at(d.span().start, format!("{date} is listed twice")));
            }
        }
        for year in file.first_year..=file.last_year {
            let n = dates.iter().filter(|d| d.year() == year).count();
            if n < 8 {
                return Err(at(
                    file.dates.span().start,
                    format!(
                        "{year} has {n} bank holidays: England and Wales have at least 8 a year"
                    ),
                ));
            }
        }
        Ok(BankHolidays {
            first_year: file.first_year,
            last_year: file.last_year,
            dates,
        })
    }

    pub fn is_working_day(&self, d: NaiveDate) -> bool {
        !matches!(d.weekday(), Weekday::Sat | Weekday::Sun) && !self.dates.contains(&d)
    }

    /// Working days after `start` up to and including `end` (0 when `end <= start`); the
    /// first date the calendar does not cover, as an error.
    pub fn working_days_after(&self, start: NaiveDate, end: NaiveDate) -> Result<u32, NaiveDate> {
        let mut n = 0;
        let mut d = start;
        while d < end {
            d = d.succ_opt().ok_or(d)?;
            if !(self.first_year..=self.last_year).contains(&d.year()) {
                return Err(d);
            }
            if self.is_working_day(d) {
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn calendar() -> BankHolidays {
        BankHolidays::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/bank-holidays.toml"))
            .unwrap()
    }

    #[test]
    fn working_days_skip_weekends_and_bank_holidays() {
        let c = calendar();
        // Thu 17 Apr 2025 -> Tue 22 Apr 2025: Good Friday, the weekend and Easter Monday
        // leave one working day (the Tuesday).
        assert_eq!(
            c.working_days_after(d("2025-04-17"), d("2025-04-22")),
            Ok(1)
        );
        assert_eq!(
            c.working_days_after(d("2025-06-02"), d("2025-06-09")),
            Ok(5)
        );
        assert_eq!(
            c.working_days_after(d("2025-06-09"), d("2025-06-02")),
            Ok(0)
        );
        assert_eq!(
            c.working_days_after(d("2027-12-30"), d("2028-01-04")),
            Err(d("2028-01-01"))
        );
    }

    #[test]
    fn the_shipped_calendar_agrees_with_the_rules() {
        // The generator derives bank holidays from the rules (Easter, first and last
        // Mondays, substitute days, the announced one-offs): an independent check of
        // the dates typed into config/bank-holidays.toml.
        let c = calendar();
        for year in c.first_year..=c.last_year {
            let file: Vec<NaiveDate> = c
                .dates
                .iter()
                .copied()
                .filter(|d| d.year() == year)
                .collect();
            assert_eq!(
                file,
                crate::demo::england_and_wales_bank_holidays(year),
                "{year}"
            );
        }
    }

    #[test]
    fn a_bad_calendar_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bh.toml");
        std::fs::write(
            &p,
            "first_year = 2025\nlast_year = 2025\ndates = [\n\"2025-01-01\",\n\"2025-04-19\",\n]\n",
        )
        .unwrap();
        let e = BankHolidays::load(&p).unwrap_err().to_string();
        assert!(e.contains(":5") && e.contains("weekend"), "{e}");
    }
}
