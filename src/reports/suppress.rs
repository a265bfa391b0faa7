//! Publication safety: small-number suppression of indicator outputs. A count below the
//! threshold (other than 0) is withheld with a marker, and so is every cell it could be
//! recovered from: the value (numerator = value x denominator), the numerator when the
//! complement (denominator - numerator) is small, and the total of excluded records
//! when any one reason is withheld.

use serde::Serialize;

use super::indicators::{Tally, Unit, INDICATORS};

/// Marker written in place of a suppressed cell in CSV.
pub const MARKER: &str = "[c]";

#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize, async_graphql::SimpleObject)]
#[serde(rename_all = "camelCase")]
pub struct Exclusion {
    pub reason: String,
    /// null when suppressed.
    pub count: Option<u64>,
}

/// One indicator for one authority and period, as published.
#[derive(Clone, Debug, PartialEq, Serialize, async_graphql::SimpleObject)]
#[serde(rename_all = "camelCase")]
pub struct IndicatorResult {
    pub authority: String,
    pub period: String,
    pub id: String,
    pub name: String,
    pub unit: Unit,
    /// null when suppressed.
    pub numerator: Option<u64>,
    /// The population for per-100,000 indicators. null when suppressed.
    pub denominator: Option<u64>,
    /// Percent, or per 100,000, to one decimal place; null when suppressed or
    /// undefined (denominator 0).
    pub value: Option<f64>,
    /// Some cell of this row is withheld for small numbers.
    pub suppressed: bool,
    /// Records or people left out for data quality; null when suppressed.
    pub excluded: Option<u64>,
    pub exclusions: Vec<Exclusion>,
}

fn one_decimal(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The published row for a tally. `population` is the denominator of per-100,000
/// indicators.
pub fn publish(
    authority: &str,
    period: &str,
    id: &str,
    tally: &Tally,
    population: u64,
    threshold: u64,
) -> IndicatorResult {
    let (name, unit) = INDICATORS
        .iter()
        .find(|i| i.0 == id)
        .map(|i| (i.1, i.2))
        .unwrap_or(("", Unit::Percent));
    let small = |n: u64| n > 0 && n < threshold;
    let (numerator, denominator) = match unit {
        Unit::Percent => (tally.numerator, tally.denominator),
        Unit::Per100k => (tally.numerator, population),
    };
    let value = match unit {
        _ if denominator == 0 => None,
        Unit::Percent => Some(one_decimal(numerator as f64 * 100.0 / denominator as f64)),
        Unit::Per100k => Some(one_decimal(
            numerator as f64 * 100_000.0 / denominator as f64,
        )),
    };
    // A population is public; only counts of people are suppressed.
    let hide_denominator = unit == Unit::Percent && small(denominator);
    let hide_numerator = small(numerator)
        || hide_denominator
        || (unit == Unit::Percent && small(denominator.saturating_sub(numerator)));
    let mut exclusions: Vec<Exclusion> = tally
        .excluded
        .iter()
        .map(|(reason, n)| Exclusion {
            reason: reason.to_string(),
            count: (!small(*n)).then_some(*n),
        })
        .collect();
    let any_hidden_reason = exclusions.iter().any(|e| e.count.is_none());
    let total: u64 = tally.excluded.values().sum();
    let excluded = (!any_hidden_reason && !small(total)).then_some(total);
    if excluded.is_none() {
        // With the total withheld, a lone visible reason is the total: withhold all.
        for e in &mut exclusions {
            e.count = None;
        }
    }
    IndicatorResult {
        authority: authority.to_string(),
        period: period.to_string(),
        id: id.to_string(),
        name: name.to_string(),
        unit,
        numerator: (!hide_numerator).then_some(numerator),
        denominator: (!hide_denominator).then_some(denominator),
        value: if hide_numerator { None } else { value },
        suppressed: hide_numerator || hide_denominator || excluded.is_none() && total > 0,
        excluded,
        exclusions,
    }
}

/// Without suppression: for tests against ground truth and for the operator's own
/// checks, never for a caller.
pub fn unsuppressed(
    authority: &str,
    period: &str,
    id: &str,
    tally: &Tally,
    population: u64,
) -> IndicatorResult {
    publish(authority, period, id, tally, population, 0)
}

/// CSV of published rows (suppressed cells as [`MARKER`]).
pub fn csv_header() -> &'static str {
    "authority,period,indicator,name,unit,numerator,denominator,value,excluded,exclusions\n"
}

pub fn csv_row(r: &IndicatorResult) -> String {
    let cell = |v: Option<String>| v.unwrap_or_else(|| MARKER.to_string());
    let exclusions = r
        .exclusions
        .iter()
        .map(|e| format!("{}: {}", e.reason, cell(e.count.map(|c| c.to_string()))))
        .collect::<Vec<_>>()
        .join("; ");
    let unit = match r.unit {
        Unit::Percent => "percent",
        Unit::Per100k => "per 100,000",
    };
    format!(
        "{},{},{},{},{},{},{},{},{},{}\n",
        super::mds::csv_field(&r.authority),
        r.period,
        r.id,
        super::mds::csv_field(&r.name),
        super::mds::csv_field(unit),
        cell(r.numerator.map(|n| n.to_string())),
        cell(r.denominator.map(|n| n.to_string())),
        match (r.value, r.numerator) {
            (Some(v), _) => format!("{v:.1}"),
            (None, Some(_)) => String::new(),
            (None, None) => MARKER.to_string(),
        },
        cell(r.excluded.map(|n| n.to_string())),
        super::mds::csv_field(&exclusions),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(numerator: u64, denominator: u64, excluded: &[(&'static str, u64)]) -> Tally {
        Tally {
            numerator,
            denominator,
            excluded: excluded.iter().copied().collect(),
        }
    }

    #[test]
    fn small_counts_and_what_would_reveal_them_are_withheld() {
        let r = publish("A", "2025-26", "1", &tally(12, 80, &[]), 0, 5);
        assert_eq!(
            (r.numerator, r.denominator, r.value, r.suppressed),
            (Some(12), Some(80), Some(15.0), false)
        );
        // A small numerator: the value would give it back.
        let r = publish("A", "2025-26", "1", &tally(3, 80, &[]), 0, 5);
        assert_eq!(
            (r.numerator, r.denominator, r.value, r.suppressed),
            (None, Some(80), None, true)
        );
        // A small complement: 78 of 80 says 2 were not.
        let r = publish("A", "2025-26", "1", &tally(78, 80, &[]), 0, 5);
        assert_eq!((r.numerator, r.value), (None, None));
        // A small denominator hides everything.
        let r = publish("A", "2025-26", "1", &tally(0, 4, &[]), 0, 5);
        assert_eq!((r.numerator, r.denominator, r.value), (None, None, None));
        // Zero is not small.
        let r = publish("A", "2025-26", "3", &tally(0, 20, &[]), 0, 5);
        assert_eq!((r.numerator, r.value), (Some(0), Some(0.0)));
        // One small reason hides the total and the other reasons.
        let r = publish(
            "A",
            "2025-26",
            "5",
            &tally(50, 100, &[("x", 2), ("y", 9)]),
            0,
            5,
        );
        assert_eq!(r.excluded, None);
        assert!(r.exclusions.iter().all(|e| e.count.is_none()));
        let r = publish(
            "A",
            "2025-26",
            "5",
            &tally(50, 100, &[("x", 6), ("y", 9)]),
            0,
            5,
        );
        assert_eq!(r.excluded, Some(15));
    }

    #[test]
    fn admissions_are_per_hundred_thousand_of_the_population() {
        let r = publish("A", "2025-26", "6b", &tally(30, 0, &[]), 40_000, 5);
        assert_eq!(
            (r.numerator, r.denominator, r.value),
            (Some(30), Some(40_000), Some(75.0))
        );
        let r = publish("A", "2025-26", "6a", &tally(2, 0, &[]), 40_000, 5);
        assert_eq!(
            (r.numerator, r.denominator, r.value),
            (None, Some(40_000), None)
        );
    }
}
