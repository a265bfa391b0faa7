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

/// Digits `s[range]` as a number, or `None` if any is not an ASCII digit.
fn digits(s: &[u8]) -> Option<u32> {
    s.iter().try_fold(0u32, |n, b| {
        b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0'))
    })
}

/// The fixed-width shapes nearly every vendor date is in, read without chrono's
/// format interpreter (a profile of the 100k-person reports spent 9% of its time
/// there). `None` means "not this shape": the caller then asks chrono, so an answer
/// given here is always the one chrono would give for `format`.
fn fast_date(s: &str, format: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    let (y, m, d) = match (format, b.len()) {
        ("%Y-%m-%d", 10) if b[4] == b'-' && b[7] == b'-' => (&b[0..4], &b[5..7], &b[8..10]),
        ("%Y%m%d", 8) => (&b[0..4], &b[4..6], &b[6..8]),
        _ => return None,
    };
    NaiveDate::from_ymd_opt(digits(y)? as i32, digits(m)?, digits(d)?)
}

/// `YYYY-MM-DD HH:MM:SS` (or with `T`), with an optional fraction of up to 9 digits,
/// for the formats `%Y-%m-%d %H:%M:%S%.f` and `%Y-%m-%dT%H:%M:%S%.f`.
fn fast_date_time(s: &str, format: &str) -> Option<NaiveDateTime> {
    let separator = match format {
        "%Y-%m-%d %H:%M:%S%.f" => b' ',
        "%Y-%m-%dT%H:%M:%S%.f" => b'T',
        _ => return None,
    };
    let b = s.as_bytes();
    if b.len() < 19 || b[10] != separator || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let date = fast_date(s.get(..10)?, "%Y-%m-%d")?;
    let nanos = match &b[19..] {
        [] => 0,
        [b'.', fraction @ ..] if (1..=9).contains(&fraction.len()) => {
            digits(fraction)? * 10u32.pow(9 - fraction.len() as u32)
        }
        _ => return None,
    };
    let time = NaiveTime::from_hms_nano_opt(
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
        nanos,
    )?;
    Some(date.and_time(time))
}

fn date_in(s: &str, format: &str) -> Option<NaiveDate> {
    if format == "%Y-%m-%d"
        && (fast_date_time(s, "%Y-%m-%d %H:%M:%S%.f").is_some()
            || fast_date_time(s, "%Y-%m-%dT%H:%M:%S%.f").is_some())
    {
        // A date with a time after it: chrono refuses it as a date (trailing input),
        // after interpreting its format (2% of the 100k-person indicators' CPU, where
        // date columns hold midnight date-times); the caller reads it as a date-time.
        return None;
    }
    fast_date(s, format).or_else(|| NaiveDate::parse_from_str(s, format).ok())
}

fn date_time_in(s: &str, format: &str) -> Option<NaiveDateTime> {
    if matches!(format, "%Y-%m-%d" | "%Y%m%d") {
        return None; // no time in the format: chrono refuses these as date-times
    }
    fast_date_time(s, format).or_else(|| NaiveDateTime::parse_from_str(s, format).ok())
}

/// Parse a date-time value; dates become midnight.
pub fn parse_date_time(
    value: &Value,
    formats: &[String],
    rules: DateRules,
) -> Result<Option<NaiveDateTime>, Unparseable> {
    let pivot = rules.pivot;
    if value.is_blank() {
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
                if let Some(t) = date_time_in(s, f) {
                    return Ok(Some(apply_pivot_dt(t, f, pivot)));
                }
                if let Some(d) = date_in(s, f) {
                    return Ok(Some(apply_pivot(d, f, pivot).and_time(NaiveTime::MIN)));
                }
            }
            if let Some(d) = date_in(s, "%Y-%m-%d") {
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
                if let Some(d) = date_in(s, f) {
                    return Ok(Some(apply_pivot(d, f, rules.pivot)));
                }
            }
            if let Some(d) = date_in(s, "%Y-%m-%d") {
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
mod fast_path {
    use super::*;
    use proptest::prelude::*;

    const FORMATS: [&str; 4] = [
        "%Y-%m-%d",
        "%Y%m%d",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
    ];

    fn agree(s: &str) {
        for f in FORMATS {
            assert_eq!(
                date_in(s, f),
                NaiveDate::parse_from_str(s, f).ok(),
                "{s:?} as {f}"
            );
            let chrono_dt = NaiveDateTime::parse_from_str(s, f).ok();
            assert_eq!(date_time_in(s, f), chrono_dt, "{s:?} as {f}");
        }
    }

    proptest! {
        // Whatever the text, the fast path answers as chrono would.
        #[test]
        fn any_text_reads_as_chrono_reads_it(s in "[0-9 T:.-]{0,32}") {
            agree(&s);
        }

        #[test]
        fn well_formed_dates_and_times(
            y in 0i32..10000, m in 0u32..14, d in 0u32..33,
            h in 0u32..25, mi in 0u32..61, sec in 0u32..61,
            frac in "(\\.[0-9]{1,10})?", t in any::<bool>(),
        ) {
            agree(&format!("{y:04}-{m:02}-{d:02}"));
            agree(&format!("{y:04}{m:02}{d:02}"));
            let sep = if t { 'T' } else { ' ' };
            agree(&format!("{y:04}-{m:02}-{d:02}{sep}{h:02}:{mi:02}:{sec:02}{frac}"));
        }
    }
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
