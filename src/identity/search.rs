//! A person search's criteria as the index compares them. The index finds candidates
//! over every record it holds; a caller may see only some of a person's records, so a
//! hit is checked again against those alone ([`SearchCriteria::matches`]): a hit on a
//! withheld name or birth date would tell the caller that name or date.

use chrono::NaiveDate;
use escr_connector::Record;

use super::index::{normalise_name, normalise_postcode};

#[derive(Clone, Debug)]
pub struct SearchCriteria {
    words: Vec<String>,
    birth_date: Option<NaiveDate>,
    postcode: Option<String>,
}

impl SearchCriteria {
    /// The criteria left after normalisation; `None` when nothing is left to search by
    /// (`%`, `_` or `\` alone are no name: they would match everyone).
    pub fn new(
        name: Option<&str>,
        birth_date: Option<NaiveDate>,
        postcode: Option<&str>,
    ) -> Option<SearchCriteria> {
        let words: Vec<String> = name
            .unwrap_or_default()
            .split_whitespace()
            .map(normalise_name)
            .filter(|w| !w.is_empty())
            .collect();
        let postcode = postcode.map(normalise_postcode).filter(|p| !p.is_empty());
        (!words.is_empty() || birth_date.is_some() || postcode.is_some()).then_some(
            SearchCriteria {
                words,
                birth_date,
                postcode,
            },
        )
    }

    /// Do these person records (the ones a caller may see) match, on their own?
    pub fn matches<'a>(&self, records: impl IntoIterator<Item = &'a Record> + Clone) -> bool {
        let names: Vec<String> = records
            .clone()
            .into_iter()
            .flat_map(|r| [r.text("family_name"), r.text("given_names")])
            .flatten()
            .flat_map(|n| n.split_whitespace().map(normalise_name))
            .collect();
        let words = self
            .words
            .iter()
            .all(|w| names.iter().any(|n| n.starts_with(w.as_str())));
        let birth = self.birth_date.is_none_or(|b| {
            records
                .clone()
                .into_iter()
                .any(|r| r.date("birth_date") == Some(b))
        });
        let postcode = self.postcode.as_deref().is_none_or(|p| {
            records.into_iter().any(|r| {
                r.text("postcode")
                    .is_some_and(|rp| normalise_postcode(rp).starts_with(p))
            })
        });
        words && birth && postcode
    }
}
