//! Dates from legacy columns: typed values, text in one of several formats (two-digit
//! years resolved by a pivot), or seconds or milliseconds since 1970-01-01 UTC.
//!
//! Date-times in the catalog are wall-clock times in the vendor's time zone, as the
//! vendors' own datetime columns hold them; an epoch value, an instant, is turned into
//! that zone's wall-clock time, so both kinds order together on a timeline.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime};
use chrono_tz::Tz;

use crate::Value;

/// A `formats` entry meaning seconds since 1970-01-01 00:00 UTC (an integer, or text
/// of digits).
pub const EPOCH_SECONDS: &str = "epoch_seconds";
/// A `formats` entry meaning milliseconds since 1970-01-01 00:00 UTC.
pub const EPOCH_MILLIS: &str = "epoch_millis";

/// The zone vendors' wall-clock times are in unless their profile says otherwise.
pub const DEFAULT_TIME_ZONE: &str = "Europe/London";

/// How a vendor's dates are read: the two-digit-year pivot and the time zone that
/// epoch instants are shown in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateRules {
    pub pivot: u32,
    pub zone: Tz,
}

impl Default for DateRules {
    fn default() -> Self {
        DateRules {
            pivot: default_pivot(),
            zone: chrono_tz::Europe::London,
        }
    }
}

/// An IANA time-zone name ("Europe/London"), or why not.
pub fn parse_zone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>()
        .map_err(|_| format!("`{name}` is not an IANA time zone (e.g. \"Europe/London\", \"UTC\")"))
}

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
    if format == EPOCH_SECONDS || format == EPOCH_MILLIS {
        return Ok(());
    }
    if format.contains("%s") {
        return Err(format!(
            "`%s` is not read here: write `{EPOCH_SECONDS}` (or `{EPOCH_MILLIS}`) for epoch values"
        ));
    }
    if StrftimeItems::new(format).any(|i| matches!(i, Item::Error)) {
        return Err("not a valid chrono format".into());
    }
    if !format.contains("%d") && !format.contains("%e") && !format.contains("%F") {
        return Err("has no day (%d)".into());
    }
    Ok(())
}

/// An epoch value (seconds or milliseconds, by `format`) as wall-clock time in `zone`.
fn from_epoch(value: &Value, format: &str, zone: Tz) -> Option<NaiveDateTime> {
    let number: i64 = match value {
        Value::Int(i) => *i,
        Value::Float(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 => *f as i64,
        Value::Text(s) => s.trim().parse().ok()?,
        Value::Bytes(b) => std::str::from_utf8(b).ok()?.trim().parse().ok()?,
        _ => return None,
    };
    let instant = if format == EPOCH_MILLIS {
        DateTime::from_timestamp_millis(number)?
    } else {
        DateTime::from_timestamp(number, 0)?
    };
    Some(instant.with_timezone(&zone).naive_local())
}

/// Parse a date-time value; dates become midnight.
pub fn parse_date_time(
    value: &Value,
    formats: &[String],
    rules: DateRules,
) -> Result<Option<NaiveDateTime>, Unparseable> {
    let pivot = rules.pivot;
    if value.as_key_text().is_none() {
        return Ok(None);
    }
    for f in formats {
        if f == EPOCH_SECONDS || f == EPOCH_MILLIS {
            if let Some(t) = from_epoch(value, f, rules.zone) {
                return Ok(Some(t));
            }
        }
    }
    match value {
        Value::Null => Ok(None),
        Value::DateTime(t) => Ok(Some(*t)),
        Value::Date(d) => Ok(Some(d.and_time(NaiveTime::MIN))),
        Value::Text(s) => {
            let s = s.trim();
            if s.is_empty() {
                return Ok(None);
            }
            let text_formats = formats
                .iter()
                .map(String::as_str)
                .filter(|f| *f != EPOCH_SECONDS && *f != EPOCH_MILLIS);
            for f in text_formats.chain(ISO_DATE_TIMES) {
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
    rules: DateRules,
) -> Result<Option<NaiveDate>, Unparseable> {
    match value {
        Value::Date(d) => Ok(Some(*d)),
        Value::Text(s)
            if !formats
                .iter()
                .any(|f| f == EPOCH_SECONDS || f == EPOCH_MILLIS) =>
        {
            let s = s.trim();
            for f in formats {
                if let Ok(d) = NaiveDate::parse_from_str(s, f) {
                    return Ok(Some(apply_pivot(d, f, rules.pivot)));
                }
            }
            if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
                return Ok(Some(d));
            }
            parse_date_time(value, formats, rules).map(|t| t.map(|t| t.date()))
        }
        other => parse_date_time(other, formats, rules).map(|t| t.map(|t| t.date())),
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

    fn rules(pivot: u32) -> DateRules {
        DateRules {
            pivot,
            zone: chrono_tz::Europe::London,
        }
    }

    #[test]
    fn epoch_values_become_wall_clock_time_in_the_vendor_zone() {
        let secs = vec![EPOCH_SECONDS.to_string()];
        let millis = vec![EPOCH_MILLIS.to_string()];
        // 2025-01-15 09:30 UTC is 09:30 in London (GMT); 2025-07-15 09:30 UTC is 10:30 (BST).
        let winter = d(2025, 1, 15).and_hms_opt(9, 30, 0).unwrap();
        let summer_local = d(2025, 7, 15).and_hms_opt(10, 30, 0).unwrap();
        assert_eq!(
            parse_date_time(&Value::Int(1736933400), &secs, rules(26)),
            Ok(Some(winter))
        );
        assert_eq!(
            parse_date_time(&Value::Int(1752571800), &secs, rules(26)),
            Ok(Some(summer_local))
        );
        assert_eq!(
            parse_date_time(&"1752571800".into(), &secs, rules(26)),
            Ok(Some(summer_local))
        );
        assert_eq!(
            parse_date_time(&Value::Float(1736933400.0), &secs, rules(26)),
            Ok(Some(winter))
        );
        assert_eq!(
            parse_date_time(&Value::Int(1736933400123), &millis, rules(26)),
            Ok(Some(winter + chrono::Duration::milliseconds(123)))
        );
        let utc = DateRules {
            pivot: 26,
            zone: chrono_tz::UTC,
        };
        assert_eq!(
            parse_date_time(&Value::Int(1752571800), &secs, utc),
            Ok(Some(d(2025, 7, 15).and_hms_opt(9, 30, 0).unwrap()))
        );
        // 23:30 UTC on 31 May is 00:30 on 1 June in London: the date follows the zone.
        assert_eq!(
            parse_date(&Value::Int(1748734200), &secs, rules(26)),
            Ok(Some(d(2025, 6, 1)))
        );
        assert_eq!(
            parse_date_time(&"not a number".into(), &secs, rules(26)),
            Err(Unparseable)
        );
        assert_eq!(parse_date_time(&Value::Null, &secs, rules(26)), Ok(None));
        // Epoch and text formats together: whichever the value is.
        let both = vec![EPOCH_SECONDS.to_string(), "%d/%m/%Y".to_string()];
        assert_eq!(
            parse_date(&"15/01/2025".into(), &both, rules(26)),
            Ok(Some(d(2025, 1, 15)))
        );
        assert_eq!(
            parse_date(&Value::Int(1736933400), &both, rules(26)),
            Ok(Some(d(2025, 1, 15)))
        );
    }

    #[test]
    fn two_formats_in_one_column() {
        let formats = vec!["%Y%m%d".to_string(), "%d/%m/%y".to_string()];
        assert_eq!(
            parse_date(&"19450312".into(), &formats, rules(26)),
            Ok(Some(d(1945, 3, 12)))
        );
        assert_eq!(
            parse_date(&"12/03/45".into(), &formats, rules(26)),
            Ok(Some(d(1945, 3, 12)))
        );
        assert_eq!(
            parse_date(&"12/03/19".into(), &formats, rules(26)),
            Ok(Some(d(2019, 3, 12)))
        );
        assert_eq!(
            parse_date(&"31/02/19".into(), &formats, rules(26)),
            Err(Unparseable)
        );
        assert_eq!(parse_date(&"  ".into(), &formats, rules(26)), Ok(None));
    }

    #[test]
    fn typed_values_and_iso_text() {
        let t = d(2020, 1, 2).and_hms_opt(3, 4, 5).unwrap();
        assert_eq!(
            parse_date(&Value::DateTime(t), &[], rules(26)),
            Ok(Some(d(2020, 1, 2)))
        );
        assert_eq!(
            parse_date_time(&"2020-01-02 03:04:05.000".into(), &[], rules(26)),
            Ok(Some(t))
        );
        assert_eq!(
            parse_date_time(&Value::Int(3), &[], rules(26)),
            Err(Unparseable)
        );
    }

    #[test]
    fn formats_are_checked() {
        assert!(check_format("%d/%m/%y").is_ok());
        assert!(check_format("%Y-%m").is_err());
        assert!(check_format(EPOCH_SECONDS).is_ok());
        assert!(check_format(EPOCH_MILLIS).is_ok());
        assert!(check_format("%s").unwrap_err().contains("epoch_seconds"));
    }
}
