//! Gateway configuration: one TOML file (`config/escr.toml` by default). Every option is
//! documented here and in `config/README.md`; unknown keys are errors; every error names
//! the file, the line and the reason. Relative paths are resolved against the folder of
//! the config file, so the gateway runs the same from any working directory.

use std::path::{Path, PathBuf};

use escr_connector::profile::line_of;
use escr_connector::{ConfigError, VendorProfile};
use serde::Deserialize;
use toml::Spanned;

use crate::record::build::ConnectorConfig;

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
    pub sources: Vec<Spanned<SourceConfig>>,
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
    /// The installation's namespace in person ids (`escr:<namespace>:<authority>:P...`):
    /// unique to this gateway, such as the council's domain. Ids already given keep it.
    #[serde(default = "default_namespace")]
    pub namespace: Spanned<String>,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            path: default_index_path(),
            refresh_secs: default_refresh_secs(),
            linkage: None,
            namespace: default_namespace(),
        }
    }
}

fn default_index_path() -> PathBuf {
    PathBuf::from("index.db")
}
fn default_refresh_secs() -> u64 {
    60
}
fn default_namespace() -> Spanned<String> {
    Spanned::new(0..0, crate::identity::index::DEFAULT_NAMESPACE.to_string())
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The source's name in provenance, errors and status ("casetrak").
    pub name: String,
    /// The vendor profile (`vendors/casetrak.toml`).
    pub profile: PathBuf,
    /// The council whose records these are (default: `default_authority` in
    /// `reports.toml`); must be one of its `[authorities]`.
    pub authority: Option<String>,
    /// Exactly one connector section: `sqlite`, `mysql`, `mssql` or `odbc`.
    pub sqlite: Option<escr_sqlite::SqliteConfig>,
    pub mysql: Option<escr_mysql::MysqlConfig>,
    pub mssql: Option<escr_mssql::MssqlConfig>,
    pub odbc: Option<escr_odbc::OdbcConfig>,
}

impl SourceConfig {
    pub fn connector(&self) -> Option<ConnectorConfig<'_>> {
        let sections = [
            self.sqlite.as_ref().map(ConnectorConfig::Sqlite),
            self.mysql.as_ref().map(ConnectorConfig::Mysql),
            self.mssql.as_ref().map(ConnectorConfig::Mssql),
            self.odbc.as_ref().map(ConnectorConfig::Odbc),
        ];
        sections.into_iter().flatten().next()
    }

    fn sections(&self) -> usize {
        usize::from(self.sqlite.is_some())
            + usize::from(self.mysql.is_some())
            + usize::from(self.mssql.is_some())
            + usize::from(self.odbc.is_some())
    }

    /// Files named in connector sections are relative to the config file.
    fn resolve_paths(&mut self, base: &Path) {
        let join = |p: &mut Option<PathBuf>| {
            if let Some(p) = p {
                *p = base.join(&*p);
            }
        };
        if let Some(c) = &mut self.sqlite {
            c.path = base.join(&c.path);
        }
        if let Some(c) = &mut self.mysql {
            join(&mut c.password_file);
            join(&mut c.tls_ca_file);
        }
        if let Some(c) = &mut self.mssql {
            join(&mut c.password_file);
            join(&mut c.ca_file);
        }
        if let Some(c) = &mut self.odbc {
            join(&mut c.connection_string_file);
            join(&mut c.password_file);
        }
    }
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
        authority_of(source, self.reports.as_ref().map(|(r, _)| r))
    }
}

fn authority_of(source: &SourceConfig, reports: Option<&crate::reports::ReportsConfig>) -> String {
    source
        .authority
        .clone()
        .or_else(|| reports.map(|r| r.default_authority.clone()))
        .unwrap_or_else(|| "local".into())
}

impl LoadedConfig {
    pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::io(path, format!("cannot read: {e}")))?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<LoadedConfig, ConfigError> {
        let mut gateway: GatewayConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            ConfigError::at(path, line, e.message().to_string())
        })?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let err =
            |offset: usize, reason: String| ConfigError::at(path, line_of(text, offset), reason);

        gateway.index.path = base.join(&gateway.index.path);
        let namespace = &gateway.index.namespace;
        if !crate::identity::index::person_id::valid_namespace(namespace.get_ref()) {
            return Err(err(
                namespace.span().start,
                format!(
                    "index.namespace `{}`: use lower-case letters, digits, `.` and `-` (such as the council's domain)",
                    namespace.get_ref()
                ),
            ));
        }
        if let Some(policy) = &mut gateway.policy {
            *policy = base.join(&*policy);
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
            let at = source.span().start;
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
            if s.sections() != 1 {
                return Err(err(
                    at,
                    format!(
                        "source `{}`: needs exactly one connector section (`sqlite`, `mysql`, `mssql` or `odbc`)",
                        s.name
                    ),
                ));
            }
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
            s.resolve_paths(&base);
            s.profile = base.join(&s.profile);
            profiles.push(VendorProfile::load(&s.profile)?);
        }
        let authorities: std::collections::BTreeSet<String> = gateway
            .sources
            .iter()
            .map(|s| authority_of(s.get_ref(), reports.as_ref().map(|(r, _)| r)))
            .collect();
        if authorities.len() > 128 {
            return Err(ConfigError::at(
                path,
                1,
                format!(
                    "{} authorities: one gateway serves at most 128",
                    authorities.len()
                ),
            ));
        }
        if let Some(unknown) = linkage.unknown_authority(&authorities) {
            return Err(unknown);
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
