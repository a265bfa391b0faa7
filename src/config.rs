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
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub trusted_documents: TrustedDocumentsConfig,
    /// Demo data generated on first run (the embedded default).
    pub demo: Option<DemoConfig>,
    /// The consent and access policy (`policy.toml`); `serve` requires it.
    pub policy: Option<PathBuf>,
    /// Reports: authorities, populations, calendar, suppression (`reports.toml`).
    pub reports: Option<PathBuf>,
    /// Documents' content links (`/documents/{id}/content`).
    #[serde(default)]
    pub documents: DocumentsConfig,
    /// `[cursors]`: the key that seals paging cursors.
    #[serde(default)]
    pub cursors: CursorsConfig,
    /// Where the gateway's own state is kept: SQLite files (default) or a PostgreSQL
    /// database shared by replicas.
    #[serde(default)]
    pub state: crate::state::StateConfig,
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

impl GatewayConfig {
    /// Why this config cannot serve replicas: the keys they must share that it leaves
    /// to be made at startup (then a cursor or document link from one replica fails on
    /// another). Empty unless the state is shared (`[state] backend = "postgres"`).
    pub fn replica_keys_missing(&self) -> Vec<String> {
        if self.state.backend != crate::state::Backend::Postgres {
            return Vec::new();
        }
        let mut missing = Vec::new();
        if self.cursors.key_env.is_none() && self.cursors.key_file.is_none() {
            missing.push("[cursors] key_env or key_file");
        }
        if self.documents.id_key_env.is_none() && self.documents.id_key_file.is_none() {
            missing.push("[documents] id_key_env or id_key_file");
        }
        missing
            .into_iter()
            .map(|what| format!("[state] backend = \"postgres\" (replicas) needs {what}: a key made at startup works on one replica only"))
            .collect()
    }
}

/// `[cursors]`: the key cursors are sealed under. Without one, a key is made at startup
/// and a cursor works only on the process that gave it out, which replicas behind a
/// load balancer cannot live with (`[state] backend = "postgres"` requires one).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CursorsConfig {
    /// Environment variable holding the key (32 bytes or more); wins over the file.
    pub key_env: Option<String>,
    /// File holding the key.
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on (default 127.0.0.1:4000).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Largest request body accepted, in bytes (default 1 MiB); refused with 413
    /// before it is read, parsed or its token checked.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Largest total of request header names and values, in bytes (default 16 KiB);
    /// refused with 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Answer GraphQL introspection (`__schema`, `__type`) to any valid token (off by
    /// default; the demo turns it on for GraphiQL).
    #[serde(default)]
    pub introspection: bool,
    /// Serve GraphiQL (from assets inside the binary) on `GET /graphql`.
    #[serde(default = "yes")]
    pub graphiql: bool,
    /// Serve Prometheus metrics on `GET /metrics`.
    #[serde(default = "yes")]
    pub metrics: bool,
    /// Origins whose web pages may call the API (CORS); none by default.
    #[serde(default)]
    pub cors_origins: Vec<String>,
    #[serde(default)]
    pub limits: LimitsConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            max_body_bytes: default_max_body_bytes(),
            max_header_bytes: default_max_header_bytes(),
            introspection: false,
            graphiql: true,
            metrics: true,
            cors_origins: Vec::new(),
            limits: LimitsConfig::default(),
        }
    }
}

fn default_max_body_bytes() -> usize {
    1024 * 1024
}
fn default_max_header_bytes() -> usize {
    16 * 1024
}

fn default_listen() -> String {
    "127.0.0.1:4000".into()
}

/// Request limits of the HTTP API (the health, readiness and metrics routes are exempt).
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Requests per minute one caller (token subject) may make; 0 = no limit.
    #[serde(default = "default_per_caller")]
    pub per_caller_per_minute: u32,
    /// Requests per minute from one client address; 0 = no limit.
    #[serde(default = "default_per_address")]
    pub per_address_per_minute: u32,
    /// Requests a caller or address may make at once above its rate.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// The header holding the client's address, set by a reverse proxy in front (the
    /// peer address otherwise). Only for a proxy that overwrites it.
    pub client_address_header: Option<String>,
    /// Longest time to answer a request, in seconds (a streamed CSV's first byte).
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    /// Requests served at once; more wait (within the time limit).
    #[serde(default = "default_concurrency")]
    pub max_concurrent_requests: usize,
    /// Compress responses (gzip, brotli) for clients that accept it.
    #[serde(default = "yes")]
    pub compression: bool,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            per_caller_per_minute: default_per_caller(),
            per_address_per_minute: default_per_address(),
            burst: default_burst(),
            client_address_header: None,
            request_timeout_secs: default_request_timeout(),
            max_concurrent_requests: default_concurrency(),
            compression: true,
        }
    }
}

fn default_per_caller() -> u32 {
    3000
}
fn default_per_address() -> u32 {
    6000
}
fn default_burst() -> u32 {
    100
}
fn default_request_timeout() -> u64 {
    60
}
fn default_concurrency() -> usize {
    256
}

/// Logs and traces.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `text` (default) or `json`: one JSON object a line.
    #[serde(default)]
    pub log_format: LogFormat,
    /// OpenTelemetry traces over OTLP/HTTP (protobuf) to this URL, e.g.
    /// `http://127.0.0.1:4318/v1/traces`; none when absent.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of the traces (default `escr-gateway`).
    pub service_name: Option<String>,
}

#[derive(Debug, Deserialize, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Trusted documents: persisted operations by hash.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct TrustedDocumentsConfig {
    /// The allowlist: a JSON file (`{"<sha256>": "<document>"}`, or an Apollo persisted
    /// query manifest) or a folder of `.graphql` files (each one document, its id the
    /// SHA-256 of its text).
    pub path: Option<PathBuf>,
    /// Production: run only documents of the allowlist.
    #[serde(default)]
    pub require: bool,
    /// Development: automatic persisted queries (clients register a document by hash).
    #[serde(default)]
    pub apq: bool,
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
    /// An extra wait, in milliseconds, after a request has stopped adding keys to a
    /// batch and before the batch loads (see `config/README.md`: it only adds latency).
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
    0
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
    /// Where the demo databases go; needed only to generate them.
    pub dir: Option<PathBuf>,
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
    /// People who moved here from another council's demo (the same seed): the first
    /// `movers` of this council are that council's first `movers`, at a new address.
    pub movers_from: Option<String>,
    #[serde(default)]
    pub movers: usize,
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

/// The line of `key` (`policy`, `demo.dir`, `server.limits.burst`), or of its table
/// (`demo`, `trusted_documents`): the first line that sets it inside its table; line 1
/// when it is not written (a default).
pub fn key_line(text: &str, key: &str) -> usize {
    let (table, name) = match key.rsplit_once('.') {
        Some((t, n)) => (t, n),
        None => ("", key),
    };
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if let Some(header) = l.strip_prefix('[') {
            current = header
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string();
            if current == key {
                return i + 1;
            }
            continue;
        }
        let sets = l
            .strip_prefix(name)
            .is_some_and(|rest| rest.trim_start().starts_with('='));
        if sets && current == table {
            return i + 1;
        }
    }
    1
}

/// The `[server]` options that can be wrong on their own.
fn validate_server(
    server: &ServerConfig,
    err: &dyn Fn(&str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    for origin in &server.cors_origins {
        let (scheme, rest) = origin.split_once("://").unwrap_or(("", ""));
        let host_ok = !rest.is_empty() && !rest.contains('/') && !rest.contains(' ');
        if !(matches!(scheme, "http" | "https") && host_ok)
            || origin.parse::<axum::http::HeaderValue>().is_err()
        {
            return Err(err(
                "server.cors_origins",
                format!(
                    "cors_origins: `{origin}` is not an origin (scheme://host[:port], no path)"
                ),
            ));
        }
    }
    let limits = &server.limits;
    if limits.request_timeout_secs == 0 {
        return Err(err(
            "server.limits.request_timeout_secs",
            "request_timeout_secs: at least 1".into(),
        ));
    }
    if limits.max_concurrent_requests == 0 {
        return Err(err(
            "server.limits.max_concurrent_requests",
            "max_concurrent_requests: at least 1".into(),
        ));
    }
    if limits.burst == 0 {
        return Err(err("server.limits.burst", "burst: at least 1".into()));
    }
    if let Some(h) = &limits.client_address_header {
        if h.parse::<axum::http::HeaderName>().is_err() {
            return Err(err(
                "server.limits.client_address_header",
                format!("client_address_header: `{h}` is not a header name"),
            ));
        }
    }
    Ok(())
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

        for (key, value) in [
            ("max_body_bytes", gateway.server.max_body_bytes),
            ("max_header_bytes", gateway.server.max_header_bytes),
        ] {
            if value < 1024 {
                return Err(err(
                    text.find(key).unwrap_or(0),
                    format!("[server] {key}: at least 1024 (a request needs room for its token)"),
                ));
            }
        }
        // The line of a key or table header, for errors about what it names.
        let line_of_key = |key: &str| key_line(text, key);
        // A file named by `key` that is not there: the error names the key and its line,
        // not the missing file alone.
        let must_exist = |key: &str, file: &Path| {
            if file.exists() {
                Ok(())
            } else {
                Err(ConfigError::at(
                    path,
                    line_of_key(key),
                    format!("`{key}` names {}, which does not exist", file.display()),
                ))
            }
        };

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
            must_exist("policy", policy)?;
        }
        if let Some(key) = &mut gateway.documents.id_key_file {
            *key = base.join(&*key);
        }
        if let Some(key) = &mut gateway.cursors.key_file {
            *key = base.join(&*key);
        }
        if let Some(file) = gateway
            .state
            .postgres
            .as_mut()
            .and_then(|p| p.url_file.as_mut())
        {
            *file = base.join(&*file);
        }
        if let Err((key, reason)) = gateway.state.validate() {
            let line = match key {
                "backend" | "replica" => line_of_key(&format!("state.{key}")),
                "state.postgres" => line_of_key(key),
                k => line_of_key(&format!("state.postgres.{k}")),
            };
            return Err(ConfigError::at(path, line, reason));
        }
        let linkage = match &mut gateway.index.linkage {
            Some(p) => {
                *p = base.join(&*p);
                must_exist("index.linkage", p)?;
                crate::identity::linkage::LinkageConfig::load(p)?
            }
            None => crate::identity::linkage::LinkageConfig::default(),
        };
        let reports = match &mut gateway.reports {
            Some(p) => {
                *p = base.join(&*p);
                must_exist("reports", p)?;
                let config = crate::reports::ReportsConfig::load(p)?;
                let calendar = crate::reports::calendar::BankHolidays::load(&config.bank_holidays)?;
                Some((config, calendar))
            }
            None => None,
        };
        if let Some(demo) = &mut gateway.demo {
            match &mut demo.dir {
                Some(dir) => *dir = base.join(&*dir),
                None if demo.generate_if_missing => {
                    return Err(ConfigError::at(
                        path,
                        line_of_key("demo"),
                        "[demo]: `dir` is needed to generate the demo data (or set generate_if_missing = false)",
                    ))
                }
                None => {}
            }
            for other in &mut demo.other_councils {
                other.dir = base.join(&other.dir);
            }
        }
        validate_server(&gateway.server, &|key, reason| {
            ConfigError::at(path, line_of_key(key), reason)
        })?;
        if let Some(endpoint) = &gateway.telemetry.otlp_endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(ConfigError::at(
                    path,
                    line_of_key("telemetry.otlp_endpoint"),
                    format!("otlp_endpoint `{endpoint}`: an http:// or https:// URL (OTLP/HTTP)"),
                ));
            }
        }
        let docs = &mut gateway.trusted_documents;
        if let Some(p) = &mut docs.path {
            *p = base.join(&*p);
            must_exist("trusted_documents.path", p)?;
        }
        let docs_line = line_of_key("trusted_documents");
        if docs.require && docs.apq {
            return Err(ConfigError::at(
                path,
                docs_line,
                "[trusted_documents]: `apq` lets any client register a document, so it cannot go with `require`",
            ));
        }
        if docs.require && docs.path.is_none() {
            return Err(ConfigError::at(
                path,
                docs_line,
                "[trusted_documents]: `require` needs the allowlist's `path`",
            ));
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
            if !s.profile.exists() {
                return Err(err(
                    at,
                    format!(
                        "source `{}`: `profile` names {}, which does not exist",
                        s.name,
                        s.profile.display()
                    ),
                ));
            }
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
