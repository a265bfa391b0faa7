//! Gateway configuration: one TOML file (`config/escr.toml` by default). Every option is
//! documented here and in `config/README.md`; unknown keys are errors; every error names
//! the file, the line and the reason. Relative paths are resolved against the folder of
//! the config file, so the gateway runs the same from any working directory.

use std::path::{Path, PathBuf};

use escr_connector::profile::line_of;
use escr_connector::{ConfigError, VendorProfile};
use serde::Deserialize;
use toml::Spanned;

use crate::record::registry::ConnectorRegistry;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub index: IndexConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub loader: LoaderConfig,
    /// Demo data generated on first run (the embedded default).
    pub demo: Option<DemoConfig>,
    /// The consent and access policy (`policy.toml`); `serve` requires it.
    pub policy: Option<PathBuf>,
    /// Reports: authorities, populations, calendar, suppression (`reports.toml`).
    pub reports: Option<PathBuf>,
    /// Documents' content links (`/documents/{id}/content`).
    #[serde(default)]
    pub documents: DocumentsConfig,
    pub sources: Vec<Spanned<SourceConfig>>,
}

/// `[documents]`: the key that makes document ids in content links opaque (they are
/// sealed with AES-256-GCM-SIV: a link names no source, record or person).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentsConfig {
    /// Environment variable holding the key (32 bytes or more); wins over the file.
    pub id_key_env: Option<String>,
    /// File holding the key.
    pub id_key_file: Option<PathBuf>,
    /// Create the key file with a random key (demo only).
    #[serde(default)]
    pub generate_key_if_missing: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on (default 127.0.0.1:4000).
    #[serde(default = "default_listen")]
    pub listen: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:4000".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexConfig {
    /// The gateway's own state (identity index): an SQLite file.
    #[serde(default = "default_index_path")]
    pub path: PathBuf,
    /// Seconds between incremental refreshes while serving (0: never).
    #[serde(default = "default_refresh_secs")]
    pub refresh_secs: u64,
    /// Record-linkage settings (`linkage.toml`); built-in defaults when absent.
    pub linkage: Option<PathBuf>,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            path: default_index_path(),
            refresh_secs: default_refresh_secs(),
            linkage: None,
        }
    }
}

fn default_index_path() -> PathBuf {
    PathBuf::from("index.db")
}
fn default_refresh_secs() -> u64 {
    60
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Upper bound of cached source rows, in MiB (weighed by their size).
    #[serde(default = "default_cache_mib")]
    pub max_mib: u64,
    /// Seconds a cached row set lives.
    #[serde(default = "default_cache_ttl")]
    pub ttl_secs: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_mib: default_cache_mib(),
            ttl_secs: default_cache_ttl(),
        }
    }
}

fn default_cache_mib() -> u64 {
    256
}
fn default_cache_ttl() -> u64 {
    300
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoaderConfig {
    /// How long a loader waits to gather keys into one batch, in milliseconds.
    #[serde(default = "default_batch_delay")]
    pub batch_delay_ms: u64,
    /// Time limit of one batched call to a source, in milliseconds.
    #[serde(default = "default_source_timeout")]
    pub source_timeout_ms: u64,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            batch_delay_ms: default_batch_delay(),
            source_timeout_ms: default_source_timeout(),
        }
    }
}

fn default_batch_delay() -> u64 {
    1
}
fn default_source_timeout() -> u64 {
    5000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoConfig {
    /// Generate the demo databases into `dir` when they are missing.
    #[serde(default = "yes")]
    pub generate_if_missing: bool,
    pub dir: PathBuf,
    #[serde(default = "default_demo_people")]
    pub people: usize,
    #[serde(default = "default_demo_seed")]
    pub seed: u64,
    /// The council the demo people live in (default Northshire).
    #[serde(default = "default_council")]
    pub council: String,
    /// More councils, each generated into its own folder (its own people and sources).
    #[serde(default)]
    pub other_councils: Vec<DemoCouncil>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoCouncil {
    pub name: String,
    pub dir: PathBuf,
    #[serde(default = "default_demo_people")]
    pub people: usize,
}

fn default_council() -> String {
    "Northshire".into()
}

fn yes() -> bool {
    true
}
fn default_demo_people() -> usize {
    2000
}
fn default_demo_seed() -> u64 {
    42
}

/// A `[[sources]]` entry. Besides its own keys it has exactly one connector section,
/// named by its engine (`sqlite`, `mysql`, `mssql`, `odbc`, or an engine a council's
/// binary registers), read by that engine's settings type when the config is loaded.
#[derive(Debug, Deserialize)]
pub struct SourceConfig {
    /// The source's name in provenance, errors and status ("casetrak").
    pub name: String,
    /// The vendor profile (`vendors/casetrak.toml`).
    pub profile: PathBuf,
    /// The council whose records these are (default: `default_authority` in
    /// `reports.toml`); must be one of its `[authorities]`.
    pub authority: Option<String>,
    /// Where the source's documents live (a folder or an HTTP/WebDAV service).
    pub documents: Option<Spanned<crate::record::documents::DocumentStoreConfig>>,
    /// Every other key: connector sections by engine name, as written.
    #[serde(flatten)]
    sections: std::collections::BTreeMap<String, toml::Value>,
    /// The connector section, read by its engine's settings type (set at load).
    #[serde(skip)]
    pub connector: Option<ConnectorSection>,
}

/// A source's connector section: the engine's name and its settings.
#[derive(Debug)]
pub struct ConnectorSection {
    pub engine: String,
    pub settings: Box<dyn escr_connector::ConnectorSettings>,
}

impl SourceConfig {
    /// The engine's name (`sqlite`, `mysql`, ...).
    pub fn engine(&self) -> Option<&str> {
        self.connector.as_ref().map(|c| c.engine.as_str())
    }

    /// The local database file, for engines that read one.
    pub fn local_file(&self) -> Option<&Path> {
        self.connector.as_ref()?.settings.local_file()
    }
}

/// Where the key `key` of the `[[sources]]` entry starting at `entry` is written (its
/// line): `key = ...` or a `[sources.key]` header, before the next `[[` header.
fn key_offset(text: &str, entry: std::ops::Range<usize>, key: &str) -> usize {
    let start = entry.start.min(text.len());
    let rest = &text[start..];
    let end = rest[1.min(rest.len())..]
        .find("\n[[")
        .map_or(rest.len(), |i| i + 1);
    let mut at = 0;
    for line in rest[..end].split_inclusive('\n') {
        let trimmed = line.trim_start();
        let bare = trimmed
            .strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='));
        if bare || trimmed.starts_with(&format!("[sources.{key}]")) {
            return start + at + (line.len() - trimmed.len());
        }
        at += line.len();
    }
    start
}

/// A loaded, validated config with its vendor profiles.
#[derive(Debug)]
pub struct LoadedConfig {
    pub path: PathBuf,
    pub gateway: GatewayConfig,
    pub profiles: Vec<VendorProfile>,
    pub linkage: crate::identity::linkage::LinkageConfig,
    /// Reports config and its bank-holiday calendar, when configured.
    pub reports: Option<(
        crate::reports::ReportsConfig,
        crate::reports::calendar::BankHolidays,
    )>,
}

impl LoadedConfig {
    /// A source's authority: its own, else the reports' default, else "local".
    pub fn authority_of(&self, source: &SourceConfig) -> String {
        source
            .authority
            .clone()
            .or_else(|| {
                self.reports
                    .as_ref()
                    .map(|(r, _)| r.default_authority.clone())
            })
            .unwrap_or_else(|| "local".into())
    }
}

impl LoadedConfig {
    /// Load with the built-in connectors.
    pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
        Self::load_with(path, &ConnectorRegistry::builtin())
    }

    /// Load with the connectors a binary was built with.
    pub fn load_with(
        path: &Path,
        registry: &ConnectorRegistry,
    ) -> Result<LoadedConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::io(path, format!("cannot read: {e}")))?;
        Self::parse_with(path, &text, registry)
    }

    pub fn parse(path: &Path, text: &str) -> Result<LoadedConfig, ConfigError> {
        Self::parse_with(path, text, &ConnectorRegistry::builtin())
    }

    pub fn parse_with(
        path: &Path,
        text: &str,
        registry: &ConnectorRegistry,
    ) -> Result<LoadedConfig, ConfigError> {
        let mut gateway: GatewayConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            ConfigError::at(path, line, e.message().to_string())
        })?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let err =
            |offset: usize, reason: String| ConfigError::at(path, line_of(text, offset), reason);

        gateway.index.path = base.join(&gateway.index.path);
        if let Some(policy) = &mut gateway.policy {
            *policy = base.join(&*policy);
        }
        if let Some(key) = &mut gateway.documents.id_key_file {
            *key = base.join(&*key);
        }
        let linkage = match &mut gateway.index.linkage {
            Some(p) => {
                *p = base.join(&*p);
                crate::identity::linkage::LinkageConfig::load(p)?
            }
            None => crate::identity::linkage::LinkageConfig::default(),
        };
        let reports = match &mut gateway.reports {
            Some(p) => {
                *p = base.join(&*p);
                let config = crate::reports::ReportsConfig::load(p)?;
                let calendar = crate::reports::calendar::BankHolidays::load(&config.bank_holidays)?;
                Some((config, calendar))
            }
            None => None,
        };
        if let Some(demo) = &mut gateway.demo {
            demo.dir = base.join(&demo.dir);
            for other in &mut demo.other_councils {
                other.dir = base.join(&other.dir);
            }
        }
        if gateway.sources.is_empty() {
            return Err(ConfigError::at(
                path,
                1,
                "no `[[sources]]`: the gateway needs at least one",
            ));
        }
        let mut profiles = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        for source in &mut gateway.sources {
            let span = source.span();
            let at = span.start;
            let s = source.get_mut();
            if !names.insert(s.name.clone()) {
                return Err(err(at, format!("source `{}` is configured twice", s.name)));
            }
            if s.name.is_empty()
                || !s
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(err(
                    at,
                    format!("source name `{}`: use letters, digits, `-` and `_`", s.name),
                ));
            }
            let engines = registry.names().join("`, `");
            if let Some(unknown) = s.sections.keys().find(|k| !registry.knows(k)) {
                let offset = key_offset(text, span.clone(), unknown);
                return Err(err(
                    offset,
                    format!(
                        "source `{}`: unknown field `{unknown}` (expected `name`, `profile`, `authority`, `documents` or a connector section: `{engines}`)",
                        s.name
                    ),
                ));
            }
            if s.sections.len() != 1 {
                return Err(err(
                    at,
                    format!(
                        "source `{}`: needs exactly one connector section (`{engines}`)",
                        s.name
                    ),
                ));
            }
            let (engine, section) = s.sections.pop_first().expect("one section");
            let settings = match registry.read(&engine, section) {
                Some(Ok(settings)) => settings,
                Some(Err(reason)) => {
                    return Err(err(
                        key_offset(text, span.clone(), &engine),
                        format!("source `{}`, `{engine}`: {reason}", s.name),
                    ))
                }
                None => unreachable!("the registry knows `{engine}`: checked above"),
            };
            s.connector = Some(ConnectorSection { engine, settings });
            if let (Some(authority), Some((r, _))) = (&s.authority, &reports) {
                if !r.authorities.contains_key(authority) {
                    return Err(err(
                        at,
                        format!(
                            "source `{}`: authority `{authority}` is not in the reports config's [authorities]",
                            s.name
                        ),
                    ));
                }
            }
            if let Some(c) = &mut s.connector {
                c.settings.resolve_paths(&base);
            }
            if let Some(documents) = &mut s.documents {
                let at = documents.span().start;
                documents.get_ref().validate().map_err(|reason| {
                    err(at, format!("source `{}`, `documents`: {reason}", s.name))
                })?;
                documents.get_mut().resolve_paths(&base);
            }
            s.profile = base.join(&s.profile);
            profiles.push(VendorProfile::load(&s.profile)?);
        }
        Ok(LoadedConfig {
            path: path.to_path_buf(),
            gateway,
            profiles,
            linkage,
            reports,
        })
    }
}
