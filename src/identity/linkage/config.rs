//! `config/linkage.toml`: how records are compared, scored and split into match /
//! review / non-match, and which source wins each golden-record field. Unknown keys are
//! errors; every error names the file, the line and the reason. Every option is
//! documented in `config/README.md`.

use std::collections::BTreeMap;
use std::path::Path;

use escr_connector::profile::line_of;
use escr_connector::{ConfigError, EntityKind};
use serde::Deserialize;
use toml::Spanned;

use super::Field;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkageConfig {
    #[serde(default)]
    pub thresholds: Thresholds,
    #[serde(default)]
    pub estimate: Estimate,
    #[serde(default)]
    pub blocking: Blocking,
    #[serde(default)]
    pub protected: Protected,
    #[serde(default)]
    pub authorities: Authorities,
    /// Prior (or fixed, with `estimate.m = "priors"`) m and u per comparison level.
    #[serde(default)]
    pub fields: BTreeMap<String, Spanned<FieldParams>>,
    #[serde(default)]
    pub survivorship: Survivorship,
    /// The file this came from, and the line of each `authorities.link` entry (for
    /// errors found once the sources are known).
    #[serde(skip)]
    pub origin: Option<(std::path::PathBuf, Vec<usize>)>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Total weight (bits) at or above which a pair is linked automatically.
    #[serde(rename = "match", default = "default_match")]
    pub match_score: Spanned<f64>,
    /// Total weight at or above which a pair goes to the data steward's review queue.
    #[serde(default = "default_review")]
    pub review: Spanned<f64>,
    /// The population (records) the thresholds are set for: with more records both
    /// rise by log2(records / reference_records) bits (`linkage::Cut`); 0 keeps them.
    #[serde(default = "default_reference_records")]
    pub reference_records: usize,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            match_score: default_match(),
            review: default_review(),
            reference_records: default_reference_records(),
        }
    }
}

fn default_reference_records() -> usize {
    4096
}

fn default_match() -> Spanned<f64> {
    Spanned::new(0..0, 14.0)
}
fn default_review() -> Spanned<f64> {
    Spanned::new(0..0, 11.0)
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Estimate {
    /// How m is estimated (u always comes from random pairs unless configured).
    #[serde(default)]
    pub m: MEstimate,
    #[serde(default = "default_iterations")]
    pub iterations: usize,
    /// Random record pairs sampled to estimate u.
    #[serde(default = "default_random_pairs")]
    pub random_pairs: usize,
}

impl Default for Estimate {
    fn default() -> Self {
        Estimate {
            m: MEstimate::default(),
            iterations: default_iterations(),
            random_pairs: default_random_pairs(),
        }
    }
}

/// Where m (P(level | same person)) comes from.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MEstimate {
    /// Counted on candidate pairs that share a valid NHS number (near-certain matches),
    /// smoothed towards the priors; EM when there are too few such pairs.
    #[default]
    AnchorPairs,
    /// Expectation-maximisation over all candidate pairs, from the priors.
    Em,
    /// The configured priors as they are.
    Priors,
}
fn default_iterations() -> usize {
    25
}
fn default_random_pairs() -> usize {
    200_000
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Blocking {
    /// Blocks with more records than this are not paired (a blocking key too common to
    /// tell anything); how many were skipped is reported.
    #[serde(default = "default_max_block")]
    pub max_block: usize,
}

impl Default for Blocking {
    fn default() -> Self {
        Blocking {
            max_block: default_max_block(),
        }
    }
}

fn default_max_block() -> usize {
    400
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Protected {
    /// Records carrying any of these labels are never linked on a probabilistic score:
    /// their candidate pairs go to review.
    #[serde(default = "default_labels")]
    pub labels: Vec<String>,
    /// Person-scoped entities whose records' labels protect their person record too
    /// (a safeguarding alert, a child protection episode).
    #[serde(default = "default_protecting_entities")]
    pub entities: Vec<Spanned<String>>,
}

impl Default for Protected {
    fn default() -> Self {
        Protected {
            labels: default_labels(),
            entities: default_protecting_entities(),
        }
    }
}

impl Protected {
    pub fn entity_kinds(&self) -> Vec<EntityKind> {
        self.entities
            .iter()
            .filter_map(|e| EntityKind::from_name(e.get_ref()))
            .collect()
    }
}

fn default_protecting_entities() -> Vec<Spanned<String>> {
    ["alert", "episode"]
        .map(|e| Spanned::new(0..0, e.to_string()))
        .to_vec()
}

fn default_labels() -> Vec<String> {
    ["safeguarding", "sealed", "restricted"]
        .map(String::from)
        .to_vec()
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authorities {
    /// Pairs of authorities whose records may be linked to each other (a regional
    /// record). Without one, records of different authorities are never compared,
    /// linked or queued for review together.
    #[serde(default)]
    pub link: Vec<Spanned<Vec<String>>>,
}

impl Authorities {
    /// May records of these two authorities be linked?
    pub fn allowed(&self, a: &str, b: &str) -> bool {
        a == b
            || self.link.iter().any(|pair| {
                let p = pair.get_ref();
                (p[0] == a && p[1] == b) || (p[0] == b && p[1] == a)
            })
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldParams {
    /// P(level | same person), one per level, in the field's level order.
    pub m: Option<Vec<f64>>,
    /// P(level | different people); estimated from random pairs when absent.
    pub u: Option<Vec<f64>>,
}

/// Which value of a person field the golden record takes.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The first source in `sources` that has a value.
    SourcePriority,
    /// The value from the most recently updated record.
    MostRecent,
    /// The value with the most information (longest text; a real date over an
    /// estimated one).
    MostComplete,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Survivorship {
    /// Source priority, best first; sources not listed come after, by name.
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default = "default_rule")]
    pub default: Rule,
    /// Per-field rule: family_name, given_names, birth_date, death_date, gender,
    /// ethnicity, nhs_number, postcode.
    #[serde(default)]
    pub fields: BTreeMap<String, Spanned<Rule>>,
}

impl Default for Survivorship {
    fn default() -> Self {
        Survivorship {
            sources: Vec::new(),
            default: default_rule(),
            fields: BTreeMap::new(),
        }
    }
}

fn default_rule() -> Rule {
    Rule::SourcePriority
}

pub const GOLDEN_FIELDS: [&str; 8] = [
    "family_name",
    "given_names",
    "birth_date",
    "death_date",
    "gender",
    "ethnicity",
    "nhs_number",
    "postcode",
];

impl Survivorship {
    pub fn rule_for(&self, field: &str) -> Rule {
        self.fields
            .get(field)
            .map(|r| *r.get_ref())
            .unwrap_or(self.default)
    }
}

impl LinkageConfig {
    /// An `authorities.link` entry naming an authority no source belongs to.
    pub fn unknown_authority(
        &self,
        known: &std::collections::BTreeSet<String>,
    ) -> Option<ConfigError> {
        for (n, pair) in self.authorities.link.iter().enumerate() {
            if let Some(name) = pair.get_ref().iter().find(|a| !known.contains(*a)) {
                let (path, line) = match &self.origin {
                    Some((path, lines)) => (path.clone(), lines.get(n).copied().unwrap_or(0)),
                    None => (std::path::PathBuf::from("linkage.toml"), 0),
                };
                return Some(ConfigError::at(
                    &path,
                    line,
                    format!(
                        "authorities.link: `{name}` is not the authority of any source (sources belong to {})",
                        known.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        None
    }

    pub fn load(path: &Path) -> Result<LinkageConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::io(path, format!("cannot read: {e}")))?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<LinkageConfig, ConfigError> {
        let config: LinkageConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            ConfigError::at(path, line, e.message().to_string())
        })?;
        let at =
            |offset: usize, reason: String| ConfigError::at(path, line_of(text, offset), reason);
        let mut config = config;
        let lines = config
            .authorities
            .link
            .iter()
            .map(|p| line_of(text, p.span().start))
            .collect();
        config.origin = Some((path.to_path_buf(), lines));
        let t = &config.thresholds;
        if !t.match_score.get_ref().is_finite() || !t.review.get_ref().is_finite() {
            return Err(at(
                t.match_score.span().start,
                "thresholds must be numbers".into(),
            ));
        }
        if t.review.get_ref() > t.match_score.get_ref() {
            return Err(at(
                t.review.span().start,
                format!(
                    "thresholds: review ({}) is above match ({})",
                    t.review.get_ref(),
                    t.match_score.get_ref()
                ),
            ));
        }
        for (name, params) in &config.fields {
            let start = params.span().start;
            let Some(field) = Field::by_name(name) else {
                return Err(at(
                    start,
                    format!(
                        "fields.{name}: not a compared field (one of {})",
                        Field::ALL.map(Field::name).join(", ")
                    ),
                ));
            };
            for (kind, values) in [("m", &params.get_ref().m), ("u", &params.get_ref().u)] {
                let Some(values) = values else { continue };
                if values.len() != field.levels().len() {
                    return Err(at(
                        start,
                        format!(
                            "fields.{name}.{kind}: {} values for {} levels ({})",
                            values.len(),
                            field.levels().len(),
                            field.levels().join(", ")
                        ),
                    ));
                }
                if values.iter().any(|p| !(*p > 0.0 && *p <= 1.0)) {
                    return Err(at(
                        start,
                        format!("fields.{name}.{kind}: probabilities must be in (0, 1]"),
                    ));
                }
            }
        }
        for (name, rule) in &config.survivorship.fields {
            if !GOLDEN_FIELDS.contains(&name.as_str()) {
                return Err(at(
                    rule.span().start,
                    format!(
                        "survivorship.fields.{name}: not a person field (one of {})",
                        GOLDEN_FIELDS.join(", ")
                    ),
                ));
            }
        }
        for entity in &config.protected.entities {
            if !EntityKind::from_name(entity.get_ref()).is_some_and(|k| k.is_person_scoped()) {
                return Err(at(
                    entity.span().start,
                    format!(
                        "protected.entities: `{}` is not a person-scoped entity",
                        entity.get_ref()
                    ),
                ));
            }
        }
        for pair in &config.authorities.link {
            let p = pair.get_ref();
            if p.len() != 2 || p[0] == p[1] {
                return Err(at(
                    pair.span().start,
                    "authorities.link: each entry is two different authorities, [\"A\", \"B\"]"
                        .into(),
                ));
            }
        }
        if config.estimate.iterations == 0 && config.estimate.m != MEstimate::Priors {
            return Err(ConfigError::at(
                path,
                0,
                "estimate.iterations must be at least 1 unless estimate.m = \"priors\"",
            ));
        }
        Ok(config)
    }
}
