//! Linkage quality against the generator's ground truth (`truth.json`): pairwise
//! precision and recall of "these two records are the same person".

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::identity::index::Snapshot;

#[derive(Deserialize)]
struct TruthFile {
    people: Vec<TruthPerson>,
}

#[derive(Deserialize)]
struct TruthPerson {
    truth_id: String,
    records: Vec<TruthRecord>,
}

#[derive(Deserialize)]
struct TruthRecord {
    source: String,
    local_id: String,
}

#[derive(Debug, Serialize)]
pub struct LinkageQuality {
    pub records: usize,
    pub true_people: usize,
    pub index_people: usize,
    /// Record pairs that are one person in the truth.
    pub true_pairs: u64,
    /// Record pairs the index put in one person.
    pub linked_pairs: u64,
    /// Of those, pairs that are one person in the truth.
    pub correct_pairs: u64,
    pub precision: f64,
    pub recall: f64,
    /// Candidate pairs waiting for a data steward, and how many are true matches.
    pub review_pairs: usize,
    pub review_true_matches: usize,
    /// Of those true matches, how many wait only because a record carries a protected
    /// label (on itself, an alert or an episode): they would have linked on their score.
    pub review_protected_true_matches: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("ground truth {path}: {reason}")]
pub struct TruthError {
    pub path: String,
    pub reason: String,
}

fn pairs(n: u64) -> u64 {
    n * n.saturating_sub(1) / 2
}

pub fn evaluate(truth_path: &Path, snapshot: &Snapshot) -> Result<LinkageQuality, TruthError> {
    let err = |reason: String| TruthError {
        path: truth_path.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(truth_path).map_err(|e| err(e.to_string()))?;
    let truth: TruthFile = serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))?;
    let mut truth_of: HashMap<(&str, &str), &str> = HashMap::new();
    for p in &truth.people {
        for r in &p.records {
            truth_of.insert(
                (r.source.as_str(), r.local_id.as_str()),
                p.truth_id.as_str(),
            );
        }
    }
    // Only records both sides know are counted.
    let mut truth_sizes: HashMap<&str, u64> = HashMap::new();
    let mut index_sizes: HashMap<&str, u64> = HashMap::new();
    let mut both: HashMap<(&str, &str), u64> = HashMap::new();
    let mut records = 0;
    for (person, refs) in &snapshot.people {
        for r in refs {
            let Some(t) = truth_of.get(&(r.source.as_str(), r.local_id.as_str())) else {
                continue;
            };
            records += 1;
            *truth_sizes.entry(t).or_default() += 1;
            *index_sizes.entry(person.as_str()).or_default() += 1;
            *both.entry((person.as_str(), t)).or_default() += 1;
        }
    }
    let true_pairs: u64 = truth_sizes.values().map(|n| pairs(*n)).sum();
    let linked_pairs: u64 = index_sizes.values().map(|n| pairs(*n)).sum();
    let correct_pairs: u64 = both.values().map(|n| pairs(*n)).sum();
    let mut review: HashSet<(&str, &str, &str, &str)> = HashSet::new();
    let (mut review_true_matches, mut review_protected_true_matches) = (0, 0);
    for c in snapshot.review_queue() {
        if !review.insert((&c.a.0, &c.a.1, &c.b.0, &c.b.1)) {
            continue;
        }
        let ta = truth_of.get(&(c.a.0.as_str(), c.a.1.as_str()));
        if ta.is_some() && ta == truth_of.get(&(c.b.0.as_str(), c.b.1.as_str())) {
            review_true_matches += 1;
            review_protected_true_matches += usize::from(c.reason.starts_with("protected"));
        }
    }
    let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    Ok(LinkageQuality {
        records,
        true_people: truth_sizes.len(),
        index_people: index_sizes.len(),
        true_pairs,
        linked_pairs,
        correct_pairs,
        precision: ratio(correct_pairs, linked_pairs),
        recall: ratio(correct_pairs, true_pairs),
        review_pairs: review.len(),
        review_true_matches,
        review_protected_true_matches,
    })
}
