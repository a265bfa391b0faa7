//! Generated demo estates (once per test binary) and gateways over them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use escr_gateway::api::gateway::Gateway;
use escr_gateway::config::LoadedConfig;
use escr_gateway::consent::access::{AccessContext, Policy};
use escr_gateway::demo::{generate, FaultRates, GenerateOptions};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct Truth {
    pub people: Vec<TruthPerson>,
    #[serde(default)]
    pub faults: Vec<TruthFault>,
}

#[derive(Debug, Deserialize)]
pub struct TruthPerson {
    pub truth_id: String,
    pub nhs_number: Option<String>,
    pub records: Vec<TruthRecord>,
    #[serde(default)]
    pub counts: BTreeMap<String, BTreeMap<String, usize>>,
}

#[derive(Debug, Deserialize, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TruthRecord {
    pub source: String,
    pub local_id: String,
}

#[derive(Debug, Deserialize)]
pub struct TruthFault {
    pub source: String,
    pub entity: String,
    pub local_id: String,
    pub kind: String,
}

impl TruthPerson {
    /// Records of `entity` across all sources.
    pub fn count(&self, entity: &str) -> usize {
        self.counts
            .values()
            .map(|c| c.get(entity).copied().unwrap_or(0))
            .sum()
    }
}

pub struct Demo {
    pub dir: PathBuf,
    pub truth: Truth,
}

pub const SEED: u64 = 7;

fn make(name: &str, people: usize, faults: FaultRates) -> Demo {
    let dir = std::env::temp_dir().join(format!("escr-it-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let opts = GenerateOptions {
        seed: SEED,
        people,
        faults,
        ..GenerateOptions::default()
    };
    generate(&opts, &dir).expect("demo data generates");
    let truth: Truth =
        serde_json::from_slice(&std::fs::read(dir.join("truth.json")).expect("truth.json written"))
            .expect("truth parses");
    Demo { dir, truth }
}

/// A demo of its own (not shared with other tests): `people` with these fault rates.
pub fn with_faults(name: &str, people: usize, faults: FaultRates) -> Demo {
    make(name, people, faults)
}

/// 600 people, no injected faults: linkage and counts must equal the truth exactly.
pub fn clean() -> &'static Demo {
    static DEMO: OnceLock<Demo> = OnceLock::new();
    DEMO.get_or_init(|| make("clean", 600, FaultRates::none()))
}

/// 600 people with the default fault rates.
pub fn dirty() -> &'static Demo {
    static DEMO: OnceLock<Demo> = OnceLock::new();
    DEMO.get_or_init(|| make("dirty", 600, FaultRates::default()))
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A gateway config over the demo's databases, its own index file in `work`.
/// `replace` swaps a source's database path (e.g. to a missing file).
pub fn config_text(demo: &Demo, work: &Path, replace: &[(&str, &str)]) -> String {
    config_text_with(demo, work, replace, &[])
}

/// As [`config_text`]; `sections` gives a source another connector section (a TOML
/// line such as `mysql = { host = "127.0.0.1", ... }`) in place of its SQLite file.
pub fn config_text_with(
    demo: &Demo,
    work: &Path,
    replace: &[(&str, &str)],
    sections: &[(&str, String)],
) -> String {
    let vendors = repo().join("config/vendors");
    let reports = write_reports_config(work, 1000);
    let mut text = format!(
        "reports = {reports:?}\n\n[index]\npath = {:?}\nrefresh_secs = 0\nlinkage = {:?}\n\n[loader]\nsource_timeout_ms = 5000\n",
        work.join("index.db"),
        repo().join("config/linkage.toml")
    );
    for source in ["casetrak", "opencare", "ssis"] {
        let db = replace
            .iter()
            .find(|(s, _)| *s == source)
            .map(|(_, p)| PathBuf::from(p))
            .unwrap_or_else(|| demo.dir.join(format!("{source}.db")));
        let section = sections
            .iter()
            .find(|(s, _)| *s == source)
            .map(|(_, section)| section.clone())
            .unwrap_or_else(|| format!("sqlite = {{ path = {db:?} }}"));
        text.push_str(&format!(
            "\n[[sources]]\nname = \"{source}\"\nprofile = {:?}\n{section}\n",
            vendors.join(format!("{source}.toml")),
        ));
    }
    text
}

/// A `reports.toml` in `work` (the repo's calendar, a key file of its own, one
/// authority: Northshire); its path.
pub fn write_reports_config(work: &Path, page_people: usize) -> PathBuf {
    let path = work.join("reports.toml");
    let text = format!(
        "bank_holidays = {:?}\ndefault_authority = \"Northshire\"\npage_people = {page_people}\npseudonym_key_file = {:?}\ngenerate_key_if_missing = true\n\n[authorities.Northshire]\npopulation_18_64 = 181000\npopulation_65_plus = 62000\n",
        repo().join("config/bank-holidays.toml"),
        work.join("pseudonym.key"),
    );
    std::fs::write(&path, text).expect("reports config written");
    path
}

/// A golden case: `tests/golden/<name>.graphql`, its variables (a `# variables: {...}`
/// comment line) and its caller (`# caller: <role> <purpose>`; the demo caller without).
pub struct GoldenCase {
    pub query: String,
    pub variables: serde_json::Value,
    pub caller: AccessContext,
}

pub fn golden_case(path: &Path) -> GoldenCase {
    let query = std::fs::read_to_string(path).expect("golden case readable");
    let mut variables = serde_json::json!({});
    let mut caller = AccessContext::demo();
    for line in query.lines().take_while(|l| l.starts_with('#')) {
        if let Some(v) = line.strip_prefix("# variables:") {
            variables = serde_json::from_str(v.trim()).expect("variables are JSON");
        }
        if let Some(c) = line.strip_prefix("# caller:") {
            let mut words = c.split_whitespace();
            let (role, purpose) = (
                words.next().expect("a role"),
                words.next().expect("a purpose"),
            );
            let purpose = escr_gateway::consent::context::purpose_from_name(purpose)
                .expect("a purpose of use");
            caller = AccessContext::for_role("golden", role, purpose);
        }
    }
    GoldenCase {
        query,
        variables,
        caller,
    }
}

/// Serve the gateway's HTTP surface on a free loopback port; its base URL.
pub async fn serve_http(gateway: Arc<Gateway>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let addr = listener.local_addr().expect("bound");
    let app = escr_gateway::api::server::router(gateway);
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

pub struct TestGateway {
    pub gateway: Arc<Gateway>,
    pub schema: escr_gateway::api::graphql::EscrSchema,
    _work: tempfile::TempDir,
}

pub async fn gateway_with(
    demo: &Demo,
    replace: &[(&str, &str)],
    policy: Option<Arc<dyn Policy>>,
) -> TestGateway {
    let work = tempfile::tempdir().expect("temp dir");
    let text = config_text(demo, work.path(), replace);
    gateway_from(work, &text, policy).await
}

/// A gateway over the demo whose `sections` sources use other connectors; its config
/// and index in `work`, which the caller keeps (a second gateway there finds the index
/// the first one built).
pub async fn gateway_on_engines(
    demo: &Demo,
    work: &Path,
    sections: &[(&str, String)],
) -> TestGateway {
    let text = config_text_with(demo, work, &[], sections);
    let path = work.join("escr.toml");
    std::fs::write(&path, text).expect("config written");
    let config = LoadedConfig::load(&path).expect("config loads");
    let gateway = Gateway::from_config(config).expect("gateway builds");
    gateway.refresh_index(false).await.expect("index builds");
    let gateway = Arc::new(gateway);
    let schema = escr_gateway::api::graphql::build(Some(gateway.clone()));
    TestGateway {
        gateway,
        schema,
        _work: tempfile::tempdir().expect("temp dir"),
    }
}

/// A gateway from a config text written into `work` (which it keeps), its index built.
pub async fn gateway_from(
    work: tempfile::TempDir,
    text: &str,
    policy: Option<Arc<dyn Policy>>,
) -> TestGateway {
    let path = work.path().join("escr.toml");
    std::fs::write(&path, text).expect("config written");
    let config = LoadedConfig::load(&path).expect("config loads");
    let mut gateway = Gateway::from_config(config).expect("gateway builds");
    if let Some(p) = policy {
        gateway = gateway.with_policy(p);
    }
    gateway.refresh_index(false).await.expect("index builds");
    let gateway = Arc::new(gateway);
    let schema = escr_gateway::api::graphql::build(Some(gateway.clone()));
    TestGateway {
        gateway,
        schema,
        _work: work,
    }
}

pub async fn gateway(demo: &Demo) -> TestGateway {
    gateway_with(demo, &[], None).await
}

impl TestGateway {
    /// Run a query as the demo caller; the whole response (data and errors) as JSON.
    pub async fn run(&self, query: &str, variables: serde_json::Value) -> serde_json::Value {
        self.run_as(AccessContext::demo(), query, variables).await
    }

    pub async fn run_as(
        &self,
        access: AccessContext,
        query: &str,
        variables: serde_json::Value,
    ) -> serde_json::Value {
        let request = async_graphql::Request::new(query)
            .variables(async_graphql::Variables::from_json(variables))
            .data(self.gateway.request_loaders())
            .data(access);
        let response = self.schema.execute(request).await;
        serde_json::to_value(&response).expect("response serialises")
    }

    pub fn statements(&self) -> u64 {
        self.gateway.fetcher.statements_executed()
    }
}
