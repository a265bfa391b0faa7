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
#[graphql(shareable)]
#[serde(rename_all = "camelCase")]
pub struct Exclusion {
    pub reason: String,
    /// null when suppressed.
    pub count: Option<u64>,
    /// This count is withheld for small numbers.
    #[serde(default)]
    pub suppressed: bool,
}

/// What an answer says about the national data opt-out (small numbers withheld).
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize, async_graphql::SimpleObject)]
#[graphql(shareable)]
#[serde(rename_all = "camelCase")]
pub struct OptOutNote {
    /// Listed NHS numbers that no person known here holds: if their people are here,
    /// they could not be left out. null when suppressed.
    pub listed_unmatched: Option<u64>,
    /// People in the answer's population with no valid NHS number on any record: their
    /// opt-out cannot be checked. null when suppressed.
    pub without_nhs_number: Option<u64>,
    /// Whether those people are left out of the answer (the policy's choice per purpose).
    pub without_nhs_number_left_out: bool,
}

/// The opt-out counts as published.
pub fn opt_out_note(
    counts: Option<crate::consent::access::OptOutCounts>,
    threshold: u64,
) -> Option<OptOutNote> {
    let c = counts?;
    let shown = |n: u64| (n == 0 || n >= threshold).then_some(n);
    Some(OptOutNote {
        listed_unmatched: shown(c.listed_unmatched),
        without_nhs_number: shown(c.without_nhs_number),
        without_nhs_number_left_out: c.without_nhs_number_left_out,
    })
}

/// One indicator for one authority and period, as published.
#[derive(Clone, Debug, PartialEq, Serialize, async_graphql::SimpleObject)]
#[graphql(shareable)]
#[serde(rename_all = "camelCase")]
pub struct IndicatorResult {
    pub authority: String,
    pub period: String,
    pub id: String,
    /// The named, versioned definition the figure follows (`escr-local-v1`: the
    /// definitions in `config/README.md`).
    pub definition: String,
    pub name: String,
    pub unit: Unit,
    /// null when suppressed.
    pub numerator: Option<u64>,
    /// The population for per-100,000 indicators. null when suppressed.
    pub denominator: Option<u64>,
    /// Percent, or per 100,000, to one decimal place; null when suppressed or
    /// undefined (denominator 0).
    pub value: Option<f64>,
    /// The indicator's own figures are withheld for small numbers: its numerator,
    /// denominator or value (each cell says which; exclusion counts have their own).
    pub suppressed: bool,
    pub numerator_suppressed: bool,
    pub denominator_suppressed: bool,
    pub value_suppressed: bool,
    /// Records or people left out for data quality; null when suppressed.
    pub excluded: Option<u64>,
    pub excluded_suppressed: bool,
    pub exclusions: Vec<Exclusion>,
    /// The national data opt-out in this authority's answer.
    pub opt_out: Option<OptOutNote>,
}

fn one_decimal(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// What is published: a measure of a named definition.
#[derive(Clone, Copy, Debug)]
pub struct Measure<'a> {
    pub id: &'a str,
    pub definition: &'a str,
    pub name: &'a str,
    pub unit: Unit,
}

/// The published row for a tally of a local indicator. `population` is the
/// denominator of per-100,000 indicators.
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
    let measure = Measure {
        id,
        definition: super::indicators::LOCAL_DEFINITION,
        name,
        unit,
    };
    publish_measure(authority, period, measure, tally, population, threshold)
}

/// The published row for a tally of any measure.
pub fn publish_measure(
    authority: &str,
    period: &str,
    measure: Measure<'_>,
    tally: &Tally,
    population: u64,
    threshold: u64,
) -> IndicatorResult {
    let Measure {
        id,
        definition,
        name,
        unit,
    } = measure;
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
            suppressed: small(*n),
        })
        .collect();
    let any_hidden_reason = exclusions.iter().any(|e| e.count.is_none());
    let total: u64 = tally.excluded.values().sum();
    let excluded = (!any_hidden_reason && !small(total)).then_some(total);
    if excluded.is_none() {
        // With the total withheld, a lone visible reason is the total: withhold all.
        for e in &mut exclusions {
            e.count = None;
            e.suppressed = true;
        }
    }
    let value_shown = !hide_numerator && value.is_some();
    IndicatorResult {
        authority: authority.to_string(),
        period: period.to_string(),
        id: id.to_string(),
        definition: definition.to_string(),
        name: name.to_string(),
        unit,
        numerator: (!hide_numerator).then_some(numerator),
        denominator: (!hide_denominator).then_some(denominator),
        value: if hide_numerator { None } else { value },
        suppressed: hide_numerator || hide_denominator,
        numerator_suppressed: hide_numerator,
        denominator_suppressed: hide_denominator,
        value_suppressed: !value_shown && value.is_some(),
        excluded_suppressed: excluded.is_none(),
        excluded,
        exclusions,
        opt_out: None,
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

/// The columns of `indicators.csv` (suppressed cells as [`MARKER`]), documented in
/// `docs/report-columns.md` (tested).
pub const CSV_COLUMNS: [&str; 14] = [
    "authority",
    "period",
    "indicator",
    "definition",
    "name",
    "unit",
    "numerator",
    "denominator",
    "value",
    "excluded",
    "exclusions",
    "opt_out_listed_unmatched",
    "without_nhs_number",
    "without_nhs_number_left_out",
];

/// A row's CSV cells, in [`CSV_COLUMNS`] order.
pub fn csv_cells(r: &IndicatorResult) -> [String; 14] {
    let cell = |v: Option<u64>| v.map_or_else(|| MARKER.to_string(), |n| n.to_string());
    let exclusions = r
        .exclusions
        .iter()
        .map(|e| format!("{}: {}", e.reason, cell(e.count)))
        .collect::<Vec<_>>()
        .join("; ");
    let unit = match r.unit {
        Unit::Percent => "percent",
        Unit::Per100k => "per 100,000",
    };
    let (unmatched, without, left_out) = match &r.opt_out {
        Some(o) => (
            cell(o.listed_unmatched),
            cell(o.without_nhs_number),
            if o.without_nhs_number_left_out {
                "yes"
            } else {
                "no"
            }
            .to_string(),
        ),
        None => Default::default(),
    };
    [
        r.authority.clone(),
        r.period.clone(),
        r.id.clone(),
        r.definition.clone(),
        r.name.clone(),
        unit.to_string(),
        cell(r.numerator),
        cell(r.denominator),
        match (r.value, r.value_suppressed) {
            (Some(v), _) => format!("{v:.1}"),
            (None, false) => String::new(),
            (None, true) => MARKER.to_string(),
        },
        cell(r.excluded),
        exclusions,
        unmatched,
        without,
        left_out,
    ]
}

/// The indicators as a CSV file.
pub fn csv(rows: &[IndicatorResult]) -> String {
    let cells: Vec<[String; 14]> = rows.iter().map(csv_cells).collect();
    super::csv::file(
        &CSV_COLUMNS,
        cells.iter().map(|c| c.iter().map(String::as_str)),
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
        assert!(r
            .exclusions
            .iter()
            .all(|e| e.count.is_none() && e.suppressed));
        // Only exclusion counts are withheld: the indicator itself is published.
        assert!(!r.suppressed && !r.numerator_suppressed && !r.value_suppressed);
        assert!(r.excluded_suppressed);
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
