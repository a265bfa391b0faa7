//! The shared minimum data set: one row per event (request, assessment, review,
//! service) with the person's fields repeated, in the shape of the adult social care
//! Client Level Data return. Person ids are keyed pseudonyms; the NHS number and birth
//! date appear only for purposes that may identify people.

use chrono::NaiveDate;
use escr_connector::{EntityKind, Record};
use serde::Serialize;

use super::extract::Demographics;
use super::{age_on, Period};

#[derive(Clone, Debug, PartialEq, Serialize, async_graphql::SimpleObject)]
#[graphql(shareable)]
#[serde(rename_all = "camelCase")]
pub struct MdsRow {
    pub authority: String,
    /// Keyed pseudonym of the gateway person id (stable under one key).
    pub person: String,
    /// Only for purposes that may identify people (planning, not research).
    pub nhs_number: Option<String>,
    pub birth_date: Option<NaiveDate>,
    /// Age band on the event's start: 0-17, 18-64, 65-74, 75-84, 85+.
    pub age_band: Option<String>,
    pub gender: Option<String>,
    pub ethnicity: Option<String>,
    pub support_reason: Option<String>,
    /// The outward code of the postcode ("NS4").
    pub postcode_district: Option<String>,
    /// REQUEST, ASSESSMENT, REVIEW or SERVICE.
    pub event_type: String,
    /// Keyed pseudonym of the source record (for the council's own tracing).
    pub event_reference: String,
    pub event_start: Option<NaiveDate>,
    pub event_end: Option<NaiveDate>,
    pub event_outcome: Option<String>,
    /// LONG_TERM_SUPPORT or SHORT_TERM_SUPPORT (services).
    pub service_type: Option<String>,
    /// The service as the catalog names it (HOME_CARE, NURSING, ...).
    pub service_component: Option<String>,
    pub delivery_mechanism: Option<String>,
    pub unit_cost: Option<f64>,
    pub planned_units_per_week: Option<f64>,
}

/// The columns of `mds.csv`, named as in the adult social care Client Level Data
/// return where they correspond (documented in `docs/report-columns.md`, tested).
pub const CSV_COLUMNS: [&str; 21] = [
    "LA_Name",
    "Reporting_Period_Start_Date",
    "Reporting_Period_End_Date",
    "LA_Person_Unique_Identifier",
    "NHS_Number",
    "Date_of_Birth",
    "Age_Band",
    "Gender",
    "Ethnicity",
    "Primary_Support_Reason",
    "Postcode_District",
    "Event_Type",
    "Event_Reference",
    "Event_Start_Date",
    "Event_End_Date",
    "Event_Outcome",
    "Service_Type",
    "Service_Component",
    "Delivery_Mechanism",
    "Unit_Cost",
    "Planned_units_per_week",
];

impl MdsRow {
    /// Its CSV cells for `period`, in [`CSV_COLUMNS`] order (written by
    /// [`super::csv::CsvWriter`]).
    pub fn csv_cells(&self, period: Period) -> [String; 21] {
        let o = |v: &Option<String>| v.clone().unwrap_or_default();
        let d = |v: &Option<NaiveDate>| v.map(|d| d.to_string()).unwrap_or_default();
        let f = |v: &Option<f64>| v.map(|x| format!("{x:.2}")).unwrap_or_default();
        [
            self.authority.clone(),
            period.start.to_string(),
            period.end.to_string(),
            self.person.clone(),
            o(&self.nhs_number),
            d(&self.birth_date),
            o(&self.age_band),
            o(&self.gender),
            o(&self.ethnicity),
            o(&self.support_reason),
            o(&self.postcode_district),
            self.event_type.clone(),
            self.event_reference.clone(),
            d(&self.event_start),
            d(&self.event_end),
            o(&self.event_outcome),
            o(&self.service_type),
            o(&self.service_component),
            o(&self.delivery_mechanism),
            f(&self.unit_cost),
            f(&self.planned_units_per_week),
        ]
    }
}

/// The outward code of a full postcode ("NS4 5AB" -> "NS4"); `None` for anything that
/// is not a postcode.
pub fn postcode_district(postcode: &str) -> Option<String> {
    let mut parts = postcode.split_whitespace();
    let (outward, inward) = (parts.next()?, parts.next()?);
    let outward_ok = (2..=4).contains(&outward.len())
        && outward.starts_with(|c: char| c.is_ascii_alphabetic())
        && outward.chars().all(|c| c.is_ascii_alphanumeric())
        && outward.chars().any(|c| c.is_ascii_digit());
    let inward_ok = inward.len() == 3
        && inward.starts_with(|c: char| c.is_ascii_digit())
        && inward[1..].chars().all(|c| c.is_ascii_alphabetic());
    (outward_ok && inward_ok && parts.next().is_none()).then(|| outward.to_uppercase())
}

pub fn age_band(birth: Option<NaiveDate>, on: Option<NaiveDate>) -> Option<String> {
    let age = age_on(birth?, on?);
    Some(
        match age {
            i32::MIN..=17 => "0-17",
            18..=64 => "18-64",
            65..=74 => "65-74",
            75..=84 => "75-84",
            _ => "85+",
        }
        .to_string(),
    )
}

/// Which event of the data set a record is in the period, if any: completed requests
/// (an outcome recorded) received in it, assessments and reviews completed in it (not
/// those completed before they start), services open at some time in it (not those
/// ending before they start).
pub fn event_type(r: &Record, period: Period) -> Option<&'static str> {
    match r.entity {
        EntityKind::Referral => (r.date("received_at").is_some_and(|d| period.contains(d))
            && r.text("outcome").is_some())
        .then_some("REQUEST"),
        EntityKind::Assessment => {
            let completed = r.date("completed").filter(|d| period.contains(*d))?;
            // Completed before it started: not an event that can be placed.
            if r.date("started").is_some_and(|s| completed < s) {
                return None;
            }
            match r.text("type") {
                Some("REVIEW") => Some("REVIEW"),
                _ => Some("ASSESSMENT"),
            }
        }
        EntityKind::Service => {
            let start = r.date("start")?;
            let end = r.date("end");
            let sane = end.is_none_or(|e| e >= start);
            (sane && start <= period.end && end.is_none_or(|e| e >= period.start))
                .then_some("SERVICE")
        }
        _ => None,
    }
}

/// The row for one event. `identify`: the purpose may see NHS number and birth date.
pub struct RowInput<'a> {
    pub authority: &'a str,
    pub person: String,
    pub event_reference: String,
    pub demographics: &'a Demographics,
    pub identify: bool,
}

pub fn row(input: RowInput<'_>, r: &Record, event: &'static str) -> MdsRow {
    let demo = input.demographics;
    let (start, end, outcome) = match r.entity {
        EntityKind::Referral => {
            let d = r.date("received_at");
            (d, d, r.text("outcome").map(str::to_string))
        }
        EntityKind::Assessment => (
            r.date("started"),
            r.date("completed"),
            r.text("outcome").map(str::to_string).or_else(|| {
                r.bool("eligible")
                    .map(|e| if e { "ELIGIBLE" } else { "NOT_ELIGIBLE" }.to_string())
            }),
        ),
        _ => (r.date("start"), r.date("end"), None),
    };
    let component = (r.entity == EntityKind::Service)
        .then(|| r.text("type").map(str::to_string))
        .flatten();
    let service_type = component.as_deref().map(|c| {
        if matches!(c, "REABLEMENT" | "EQUIPMENT") {
            "SHORT_TERM_SUPPORT"
        } else {
            "LONG_TERM_SUPPORT"
        }
        .to_string()
    });
    MdsRow {
        authority: input.authority.to_string(),
        person: input.person,
        nhs_number: demo.nhs_number.clone().filter(|_| input.identify),
        birth_date: demo.birth_date.filter(|_| input.identify),
        age_band: age_band(demo.birth_date, start),
        gender: demo.gender.clone(),
        ethnicity: demo.ethnicity.clone(),
        support_reason: demo.support_reason.clone(),
        postcode_district: demo.postcode.as_deref().and_then(postcode_district),
        event_type: event.to_string(),
        event_reference: input.event_reference,
        event_start: start,
        event_end: end,
        event_outcome: outcome,
        service_type,
        service_component: component,
        delivery_mechanism: r.text("delivery_mechanism").map(str::to_string),
        unit_cost: r.decimal("unit_cost"),
        planned_units_per_week: r.decimal("units_per_week"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postcode_districts_only_from_postcodes() {
        assert_eq!(postcode_district("NS4 5AB").as_deref(), Some("NS4"));
        assert_eq!(postcode_district("NS14 5AB").as_deref(), Some("NS14"));
        for bad in ["NOT KNOWN", "NS", "N51 ABC", "00000", ""] {
            assert_eq!(postcode_district(bad), None, "{bad}");
        }
    }

    #[test]
    fn age_bands() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok();
        assert_eq!(
            age_band(d("2000-05-01"), d("2025-05-01")).as_deref(),
            Some("18-64")
        );
        assert_eq!(
            age_band(d("1940-05-01"), d("2025-04-30")).as_deref(),
            Some("75-84")
        );
        assert_eq!(age_band(None, d("2025-04-30")), None);
    }
}
