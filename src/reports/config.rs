//! `reports.toml`: the authorities reported on (with their populations), the
//! bank-holiday calendar, small-number suppression, and where the pseudonym key comes
//! from. Unknown keys are errors; every error names the file and line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use escr_connector::profile::line_of;
use escr_connector::ConfigError;
use serde::Deserialize;

use super::calendar::BankHolidays;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportsConfig {
    /// The England and Wales bank-holiday calendar (`bank-holidays.toml`).
    pub bank_holidays: PathBuf,
    /// The authority of sources that do not name one (`authority` in `[[sources]]`).
    pub default_authority: String,
    /// Counts below this are suppressed in outputs (numerators and denominators too).
    #[serde(default = "default_threshold")]
    pub suppression_threshold: u64,
    /// The standard periods indicators are published for (financial_year, quarter,
    /// month). Any other range is refused: two overlapping periods could be
    /// subtracted to give back a suppressed count. Nested kinds can still be
    /// subtracted from each other (a year less three quarters is the fourth), so
    /// the default is financial years alone.
    #[serde(default = "default_indicator_periods")]
    pub indicator_periods: Vec<super::PeriodKind>,
    /// People read per page (per source, one statement per entity per page).
    #[serde(default = "default_page_people")]
    pub page_people: usize,
    /// Pseudonyms are HMAC-SHA256 of the person id under this key: the environment
    /// variable wins; else the file (created with a random key when allowed: demo only).
    pub pseudonym_key_env: Option<String>,
    pub pseudonym_key_file: Option<PathBuf>,
    #[serde(default)]
    pub generate_key_if_missing: bool,
    /// One table per authority: `[authorities.Northshire]`.
    pub authorities: BTreeMap<String, toml::Spanned<AuthorityConfig>>,
    /// Other councils' gateways, for comparing indicators across gateways:
    /// `[peers.Southborough]`. Only aggregates cross: the peer's own `Authority`
    /// federation entity, asked for with the peer's token and the caller's purpose.
    #[serde(default)]
    pub peers: BTreeMap<String, toml::Spanned<PeerConfig>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer gateway's GraphQL endpoint (https, or http on loopback).
    pub url: String,
    /// Environment variable holding a bearer token the peer accepts (a role there
    /// that may use planning or research); no token is sent when unset.
    pub token_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorityConfig {
    /// Population aged 18-64 (mid-year estimate), for indicator 6a.
    pub population_18_64: u64,
    /// Population aged 65 and over, for indicator 6b.
    pub population_65_plus: u64,
}

fn default_threshold() -> u64 {
    5
}
fn default_indicator_periods() -> Vec<super::PeriodKind> {
    vec![super::PeriodKind::FinancialYear]
}
/// On SQLite at 100,000 people the indicators ran faster with pages of 500 than of
/// 1,000 in each of six alternated pairs of runs (by 3-36%), and no faster with 250 or
/// 125, which need two and four times the statements (round trips, on a networked engine).
fn default_page_people() -> usize {
    500
}

/// Reports as configured, ready to run.
pub struct Reports {
    pub config: ReportsConfig,
    pub calendar: BankHolidays,
    pseudonym_key: aws_lc_rs::hmac::Key,
}

impl ReportsConfig {
    pub fn load(path: &Path) -> Result<ReportsConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::io(path, format!("cannot read: {e}")))?;
        let mut c: ReportsConfig = toml::from_str(&text).map_err(|e| {
            let line = e.span().map(|s| line_of(&text, s.start)).unwrap_or(0);
            ConfigError::at(path, line, e.message().to_string())
        })?;
        let at = |needle: &str, reason: String| {
            ConfigError::at(
                path,
                text.find(needle).map(|o| line_of(&text, o)).unwrap_or(1),
                reason,
            )
        };
        let base = path.parent().unwrap_or(Path::new("."));
        c.bank_holidays = base.join(&c.bank_holidays);
        if let Some(f) = &mut c.pseudonym_key_file {
            *f = base.join(&*f);
        }
        if c.authorities.is_empty() {
            return Err(at(
                "authorities",
                "no `[authorities.<name>]`: name at least one".into(),
            ));
        }
        if !c.authorities.contains_key(&c.default_authority) {
            return Err(at(
                "default_authority",
                format!(
                    "default_authority `{}` has no `[authorities.{0}]` table",
                    c.default_authority
                ),
            ));
        }
        if c.suppression_threshold == 0 {
            return Err(at(
                "suppression_threshold",
                "suppression_threshold must be at least 1".into(),
            ));
        }
        if c.indicator_periods.is_empty() {
            return Err(at(
                "indicator_periods",
                "indicator_periods is empty: name at least one of financial_year, quarter, month"
                    .into(),
            ));
        }
        if c.page_people == 0 {
            return Err(at("page_people", "page_people must be at least 1".into()));
        }
        for (name, a) in &c.authorities {
            let r = a.get_ref();
            if r.population_18_64 == 0 || r.population_65_plus == 0 {
                return Err(ConfigError::at(
                    path,
                    line_of(&text, a.span().start),
                    format!(
                        "authority `{name}`: populations must be above 0 (they divide indicator 6)"
                    ),
                ));
            }
        }
        for (name, peer) in &c.peers {
            let line = line_of(&text, peer.span().start);
            if c.authorities.contains_key(name) {
                return Err(ConfigError::at(
                    path,
                    line,
                    format!("peer `{name}` is also one of this gateway's [authorities]"),
                ));
            }
            if !crate::consent::policy::https_or_loopback(&peer.get_ref().url) {
                return Err(ConfigError::at(
                    path,
                    line,
                    format!("peer `{name}`: url must be https (plain http only on loopback)"),
                ));
            }
        }
        if c.pseudonym_key_env.is_none() && c.pseudonym_key_file.is_none() {
            return Err(at(
                "[",
                "set pseudonym_key_env or pseudonym_key_file".into(),
            ));
        }
        Ok(c)
    }
}

impl Reports {
    /// Load the calendar and the pseudonym key (a startup error names the file).
    pub fn open(
        path: &Path,
        config: ReportsConfig,
        calendar: BankHolidays,
    ) -> Result<Reports, ConfigError> {
        let key = crate::consent::auth::secret_key(
            config.pseudonym_key_env.as_deref(),
            config.pseudonym_key_file.as_deref(),
            config.generate_key_if_missing,
            "the pseudonym key",
        )
        .map_err(|e| ConfigError::at(path, 0, e))?
        .ok_or_else(|| {
            ConfigError::at(
                path,
                0,
                "no pseudonym key: set the environment variable or the key file",
            )
        })?;
        Ok(Reports {
            config,
            calendar,
            pseudonym_key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key),
        })
    }

    /// The keyed pseudonym of a person id: HMAC-SHA256, hex, 32 characters. Stable under
    /// one key; without the key it cannot be reversed or recomputed from the id.
    pub fn pseudonym(&self, person_id: &str) -> String {
        let tag = aws_lc_rs::hmac::sign(&self.pseudonym_key, person_id.as_bytes());
        tag.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    pub fn authority(&self, name: &str) -> Option<&AuthorityConfig> {
        self.config.authorities.get(name).map(|a| a.get_ref())
    }

    pub fn peer(&self, name: &str) -> Option<&PeerConfig> {
        self.config.peers.get(name).map(|p| p.get_ref())
    }

    pub fn authority_names(&self) -> Vec<String> {
        self.config.authorities.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reports_with_key(key: &str) -> Reports {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("k");
        std::fs::write(&key_file, key).unwrap();
        let path = dir.path().join("reports.toml");
        let calendar = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/bank-holidays.toml");
        std::fs::write(
            &path,
            format!(
                "bank_holidays = {calendar:?}\ndefault_authority = \"A\"\npseudonym_key_file = {key_file:?}\n[authorities.A]\npopulation_18_64 = 1\npopulation_65_plus = 1\n"
            ),
        )
        .unwrap();
        let config = ReportsConfig::load(&path).unwrap();
        let calendar = BankHolidays::load(&config.bank_holidays).unwrap();
        Reports::open(&path, config, calendar).unwrap()
    }

    #[test]
    fn pseudonyms_are_stable_under_a_key_and_differ_between_keys() {
        let a = reports_with_key("a key of at least thirty-two bytes, for tests");
        let b = reports_with_key("another key of at least thirty-two bytes here");
        assert_eq!(a.pseudonym("P0001"), a.pseudonym("P0001"));
        assert_ne!(a.pseudonym("P0001"), a.pseudonym("P0002"));
        assert_ne!(a.pseudonym("P0001"), b.pseudonym("P0001"));
        assert_eq!(a.pseudonym("P0001").len(), 32);
        assert!(!a.pseudonym("P0001").contains("0001"));
    }

    #[test]
    fn a_bad_reports_config_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reports.toml");
        let cases = [
            ("bank_holidays = \"b.toml\"\ndefault_authority = \"A\"\npseudonym_key_env = \"K\"\n[authorities.B]\npopulation_18_64 = 1\npopulation_65_plus = 1\n", 2, "default_authority"),
            ("bank_holidays = \"b.toml\"\ndefault_authority = \"A\"\npseudonym_key_env = \"K\"\n[authorities.A]\npopulation_18_64 = 0\npopulation_65_plus = 1\n", 4, "above 0"),
            ("bank_holidays = \"b.toml\"\ndefault_authority = \"A\"\nthreshold = 3\n", 3, "unknown field"),
            ("bank_holidays = \"b.toml\"\ndefault_authority = \"A\"\npseudonym_key_env = \"K\"\n[authorities.A]\npopulation_18_64 = 1\npopulation_65_plus = 1\n[peers.B]\nurl = \"http://peer.example/graphql\"\n", 7, "https"),
            ("bank_holidays = \"b.toml\"\ndefault_authority = \"A\"\npseudonym_key_env = \"K\"\n[authorities.A]\npopulation_18_64 = 1\npopulation_65_plus = 1\n[peers.A]\nurl = \"https://peer.example/graphql\"\n", 7, "also one of"),
        ];
        for (text, line, reason) in cases {
            std::fs::write(&path, text).unwrap();
            let e = ReportsConfig::load(&path).unwrap_err();
            assert_eq!(e.line, line, "{e}");
            assert!(e.reason.contains(reason), "{e}");
        }
        // A key file that is missing and may not be created is refused at startup.
        assert!(crate::consent::auth::secret_key(
            None,
            Some(&dir.path().join("none")),
            false,
            "the pseudonym key"
        )
        .is_err());
    }
}
