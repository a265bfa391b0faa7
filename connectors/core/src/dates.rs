//! Dates from legacy columns: typed values, or text in one of several formats,
//! with two-digit years resolved by a pivot.

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime};

use crate::Value;

/// Formats tried after a field's own, so ISO text always parses.
const ISO_DATE_TIMES: [&str; 4] = [
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.fZ",
    "%Y-%m-%d %H:%M",
];

/// A value that is not a date in any of the formats tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unparseable;

/// Reject a chrono format that cannot parse anything (checked at config load).
pub fn check_format(format: &str) -> Result<(), String> {
    use chrono::format::{Item, StrftimeItems};
    if StrftimeItems::new(format).any(|i| matches!(i, Item::Error)) {
        return Err("not a valid chrono format".into());
    }
    if !format.contains("%d") && !format.contains("%e") && !format.contains("%F") {
        return Err("has no day (%d)".into());
    }
    Ok(())
}

/// Parse a date-time value; dates become midnight.
pub fn parse_date_time(
    value: &Value,
    formats: &[String],
    pivot: u32,
) -> Result<Option<NaiveDateTime>, Unparseable> {
    match value {
        Value::Null => Ok(None),
        Value::DateTime(t) => Ok(Some(*t)),
        Value::Date(d) => Ok(Some(d.and_time(NaiveTime::MIN))),
        Value::Text(s) => {
            let s = s.trim();
            if s.is_empty() {
                return Ok(None);
            }
            for f in formats.iter().map(String::as_str).chain(ISO_DATE_TIMES) {
                if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
                    return Ok(Some(apply_pivot_dt(t, f, pivot)));
                }
                if let Ok(d) = NaiveDate::parse_from_str(s, f) {
                    return Ok(Some(apply_pivot(d, f, pivot).and_time(NaiveTime::MIN)));
                }
            }
            if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
                return Ok(Some(d.and_time(NaiveTime::MIN)));
            }
            Err(Unparseable)
        }
        _ => Err(Unparseable),
    }
}

/// Parse a date value; date-times lose their time.
pub fn parse_date(
    value: &Value,
    formats: &[String],
    pivot: u32,
) -> Result<Option<NaiveDate>, Unparseable> {
    match value {
        Value::Date(d) => Ok(Some(*d)),
        Value::Text(s) => {
            let s = s.trim();
            for f in formats {
                if let Ok(d) = NaiveDate::parse_from_str(s, f) {
                    return Ok(Some(apply_pivot(d, f, pivot)));
                }
            }
            if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
                return Ok(Some(d));
            }
            parse_date_time(value, formats, pivot).map(|t| t.map(|t| t.date()))
        }
        other => parse_date_time(other, formats, pivot).map(|t| t.map(|t| t.date())),
    }
}

/// chrono reads `%y` as 1970-2069; social care records hold birth dates back to the
/// 1920s, so years past the pivot go to the 1900s instead.
fn apply_pivot(d: NaiveDate, format: &str, pivot: u32) -> NaiveDate {
    if !format.contains("%y") {
        return d;
    }
    let two = (d.year().rem_euclid(100)) as u32;
    let year = if two <= pivot {
        2000 + two as i32
    } else {
        1900 + two as i32
    };
    d.with_year(year).unwrap_or(d)
}

fn apply_pivot_dt(t: NaiveDateTime, format: &str, pivot: u32) -> NaiveDateTime {
    apply_pivot(t.date(), format, pivot).and_time(t.time())
}

/// The default pivot: this year's last two digits (no two-digit year lands in the future).
pub fn default_pivot() -> u32 {
    (chrono::Local::now().year().rem_euclid(100)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn two_formats_in_one_column() {
        let formats = vec!["%Y%m%d".to_string(), "%d/%m/%y".to_string()];
        assert_eq!(
            parse_date(&"19450312".into(), &formats, 26),
            Ok(Some(d(1945, 3, 12)))
        );
        assert_eq!(
            parse_date(&"12/03/45".into(), &formats, 26),
            Ok(Some(d(1945, 3, 12)))
        );
        assert_eq!(
            parse_date(&"12/03/19".into(), &formats, 26),
            Ok(Some(d(2019, 3, 12)))
        );
        assert_eq!(
            parse_date(&"31/02/19".into(), &formats, 26),
            Err(Unparseable)
        );
        assert_eq!(parse_date(&"  ".into(), &formats, 26), Ok(None));
    }

    #[test]
    fn typed_values_and_iso_text() {
        let t = d(2020, 1, 2).and_hms_opt(3, 4, 5).unwrap();
        assert_eq!(
            parse_date(&Value::DateTime(t), &[], 26),
            Ok(Some(d(2020, 1, 2)))
        );
        assert_eq!(
            parse_date_time(&"2020-01-02 03:04:05.000".into(), &[], 26),
            Ok(Some(t))
        );
        assert_eq!(parse_date_time(&Value::Int(3), &[], 26), Err(Unparseable));
    }

    #[test]
    fn formats_are_checked() {
        assert!(check_format("%d/%m/%y").is_ok());
        assert!(check_format("%Y-%m").is_err());
    }
}
