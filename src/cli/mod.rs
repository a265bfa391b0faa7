//! `escr`: the gateway's command line. It lives in the library so that a council's own
//! binary runs the same CLI with its own connectors (`escr_gateway::main_with`); the
//! `escr` binary (`src/main.rs`) is that call with the built-in ones. The only module
//! that uses `anyhow`: it turns every subsystem's error into one line for a person.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::api::gateway::Gateway;
use crate::config::LoadedConfig;
use crate::demo::{self, FaultRates, GenerateOptions};
use crate::record::registry::ConnectorRegistry;
use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};

/// The connectors this binary was built with (set once, by `run`).
static REGISTRY: std::sync::OnceLock<ConnectorRegistry> = std::sync::OnceLock::new();

fn load_config(path: &Path) -> Result<LoadedConfig, escr_connector::ConfigError> {
    LoadedConfig::load_with(path, REGISTRY.get_or_init(ConnectorRegistry::builtin))
}

mod check;

#[derive(Parser)]
#[command(
    name = "escr",
    version,
    about = "A virtual Electronic Social Care Record over legacy databases"
)]
struct Cli {
    /// The gateway config file.
    #[arg(
        long,
        global = true,
        env = "ESCR_CONFIG",
        default_value = "config/escr.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve GraphQL (GraphiQL on GET /graphql). Generates the demo data on first run.
    Serve {
        /// Listen address (overrides the config).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Write the three demo vendor databases and their ground truth.
    GenerateDemo {
        /// Output folder (default: the config's [demo] dir).
        #[arg(long)]
        out: Option<PathBuf>,
        /// How many people to generate.
        #[arg(long, default_value_t = 2000)]
        people: usize,
        /// Random seed (the same seed gives the same estate).
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Council name (a second council gets different people from the same seed).
        #[arg(long, default_value = "Northshire")]
        council: String,
        /// Generate clean data (no injected data-quality faults).
        #[arg(long)]
        no_faults: bool,
        /// Also load a vendor into a real database, replacing its tables:
        /// `--target opencare=mysql://user@127.0.0.1:3306/opencare` or
        /// `--target casetrak=mssql://user@host:1433/CASETRAK?encryption=required`
        /// (the password from the environment variable ESCR_TARGET_PASSWORD, not the
        /// command line). Repeatable.
        #[arg(long, value_name = "VENDOR=URL")]
        target: Vec<String>,
    },
    /// Build or refresh the identity index from the sources.
    Index {
        /// Only read what changed since the last run (where vendors have timestamps).
        #[arg(long)]
        incremental: bool,
    },
    /// Rebuild the identity index and measure linkage against the demo's ground truth:
    /// pairwise precision and recall, and the review queue's size.
    LinkageReport {
        /// The generator's truth file (default: truth.json in the config's [demo] dir).
        #[arg(long)]
        truth: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Validate the config, the policy, every vendor profile and the files and secrets
    /// they name; exit non-zero when anything would fail later. With profile files
    /// named, validate just those.
    CheckConfig {
        /// Vendor profiles to validate on their own (`config/vendors/casetrak.toml`).
        profiles: Vec<PathBuf>,
        /// Also connect to every source and run each profile statement once with no
        /// keys, reporting per source and entity.
        #[arg(long)]
        connect: bool,
    },
    /// Print the GraphQL schema (SDL, Federation v2).
    PrintSchema,
    /// Print the data-requirements report as CSV: per source, which catalog fields each
    /// named indicator definition needs (local and national methods) its vendor
    /// profile maps, and per authority whether its systems hold them all. Reads the
    /// config and profiles only, no data.
    DataRequirements,
    /// Mint a local HS256 token (demo and local use) with the policy's key.
    Token {
        /// A role from policy.toml (social_worker, team_manager, analyst, ...).
        #[arg(long)]
        role: String,
        /// User id (the `sub` claim).
        #[arg(long, default_value = "demo-user")]
        user: String,
        /// Display name (the `name` claim).
        #[arg(long)]
        name: Option<String>,
        /// Organisation (a key of [organisations] in policy.toml).
        #[arg(long, default_value = "council")]
        org: String,
        /// Team id in the allocation data (CaseTrak teams 1-5 in the demo).
        #[arg(long)]
        team: Option<String>,
        /// Worker id in the allocation data (CaseTrak workers 1-20 in the demo).
        #[arg(long)]
        worker: Option<String>,
        /// Purpose of use put in the token (a request header may still name one).
        #[arg(long)]
        purpose: Option<String>,
        /// Break-glass reason (the token then lives at most the policy's limit).
        #[arg(long)]
        break_glass: Option<String>,
        /// For the `person` role: the gateway person id of the caller (it must be in the
        /// identity index).
        #[arg(long)]
        person: Option<String>,
        /// Lifetime in minutes.
        #[arg(long, default_value_t = 480)]
        minutes: i64,
    },
    /// Bring the PostgreSQL state store's schema up to date (`[state] backend =
    /// "postgres"`), as the database's owner, so that replicas can serve under a role
    /// with fewer rights; refuses a schema newer than this binary knows.
    MigrateState,
    /// Check the audit log's hash chain (every replica's chain with the PostgreSQL
    /// state store); exit non-zero at the first break.
    VerifyAudit {
        /// The audit database (default: the policy's storage.audit).
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

/// The CLI, with the connectors `registry` names. An ordinary error is one line (with
/// its causes), whatever RUST_BACKTRACE says: the backtrace is for bugs, and a panic
/// still prints one.
pub fn main_with(registry: ConnectorRegistry) -> std::process::ExitCode {
    let _ = REGISTRY.set(registry);
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // `serve` sets up logs and traces from its config; the other commands log text.
    let _telemetry = if matches!(cli.command, Command::Serve { .. }) {
        let config = load_config(&cli.config)?;
        let (subscriber, telemetry) =
            crate::api::ops::telemetry::subscriber(&config.gateway.telemetry)
                .map_err(|e| anyhow::anyhow!(e))?;
        tracing::subscriber::set_global_default(subscriber)?;
        Some(telemetry)
    } else {
        let (subscriber, telemetry) = crate::api::ops::telemetry::subscriber(&Default::default())
            .map_err(|e| anyhow::anyhow!(e))?;
        tracing::subscriber::set_global_default(subscriber)?;
        Some(telemetry)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::PrintSchema => {
            print!("{}", crate::api::graphql::sdl());
            Ok(())
        }
        Command::DataRequirements => {
            let config = load_config(&cli.config)?;
            let authorities: Vec<String> = config
                .gateway
                .sources
                .iter()
                .map(|s| config.authority_of(s.get_ref()))
                .collect();
            let sources = config
                .gateway
                .sources
                .iter()
                .zip(&authorities)
                .zip(&config.profiles)
                .map(|((s, a), p)| (s.get_ref().name.as_str(), a.as_str(), p));
            let (rows, statuses) = crate::reports::definitions::requirements(sources);
            print!(
                "{}",
                crate::reports::definitions::requirements_csv(&rows, &statuses)
            );
            Ok(())
        }
        Command::CheckConfig { profiles, .. } if !profiles.is_empty() => {
            for path in profiles {
                let profile = escr_connector::VendorProfile::load(&path)?;
                println!(
                    "{}: ok (vendor `{}`, entities: {})",
                    path.display(),
                    profile.name(),
                    profile
                        .entities()
                        .map(|(e, _)| e.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            Ok(())
        }
        Command::CheckConfig { connect, .. } => {
            runtime.block_on(check::check_config(&cli.config, connect))
        }
        Command::GenerateDemo {
            out,
            people,
            seed,
            council,
            no_faults,
            target,
        } => {
            let out = match out {
                Some(o) => o,
                None => demo_dir(&cli.config)?,
            };
            let opts = GenerateOptions {
                seed,
                people,
                council,
                faults: if no_faults {
                    FaultRates::none()
                } else {
                    FaultRates::default()
                },
                ..GenerateOptions::default()
            };
            let summary = demo::generate(&opts, &out)?;
            println!(
                "generated {} people into {} in {:.1} s: {:?}",
                summary.people,
                out.display(),
                summary.elapsed.as_secs_f64(),
                summary.rows_per_source
            );
            for t in target {
                let (vendor, url) = t
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--target {t}: expected VENDOR=URL"))?;
                // The password from the environment: secrets stay out of command lines.
                let password = std::env::var("ESCR_TARGET_PASSWORD").ok();
                let db = out.join(format!("{vendor}.db"));
                anyhow::ensure!(db.exists(), "--target: no vendor `{vendor}` generated");
                let fail = |e: String| anyhow::anyhow!("--target {vendor}: {e}");
                let rows = if url.starts_with("mssql://") {
                    let (config, in_url) = escr_mssql::parse_url(url).map_err(fail)?;
                    let password = password.or(in_url).unwrap_or_default();
                    let connector = escr_mssql::MssqlConnector::with_password(&config, password)
                        .map_err(|e| fail(e.to_string()))?;
                    runtime
                        .block_on(demo::load::sqlite_to_mssql(&db, &connector))
                        .map_err(fail)?
                } else {
                    let opts = demo::load::target_opts(url, password).map_err(fail)?;
                    runtime
                        .block_on(demo::load::sqlite_to_mysql(&db, opts))
                        .map_err(fail)?
                };
                println!("loaded {vendor} into its target: {rows} rows");
            }
            Ok(())
        }
        Command::Index { incremental } => runtime.block_on(async {
            let config = load_config(&cli.config)?;
            ensure_demo(&config)?;
            let gateway = Gateway::from_config(config)?;
            let report = gateway.refresh_index(incremental).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            warn_if_defaults(&report.linkage);
            Ok(())
        }),
        Command::LinkageReport { truth, json } => runtime.block_on(async {
            let truth = match truth {
                Some(t) => t,
                None => demo_dir(&cli.config)?.join("truth.json"),
            };
            let config = load_config(&cli.config)?;
            ensure_demo(&config)?;
            let gateway = Gateway::from_config(config)?;
            let started = std::time::Instant::now();
            let report = gateway.refresh_index(false).await?;
            let elapsed = started.elapsed();
            let quality = crate::identity::linkage::evaluate::evaluate(&truth, &gateway.index.snapshot())?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "quality": quality, "linkage": report.linkage, "links_by_rule": report.links_by_rule,
                    }))?
                );
            } else {
                println!("records compared with the truth: {}", quality.records);
                println!("people: {} in the index, {} in the truth", quality.index_people, quality.true_people);
                println!(
                    "precision: {:.2}% ({} of {} linked pairs are one person)",
                    quality.precision * 100.0,
                    quality.correct_pairs,
                    quality.linked_pairs
                );
                println!(
                    "recall:    {:.2}% ({} of {} true pairs linked)",
                    quality.recall * 100.0,
                    quality.correct_pairs,
                    quality.true_pairs
                );
                println!(
                    "review queue: {} pairs ({} of them true matches, {} held back only because a record is protected)",
                    quality.review_pairs, quality.review_true_matches, quality.review_protected_true_matches
                );
                println!(
                    "candidate pairs: {}, probabilistic links: {}, refused links: {}, indexing took {:.2} s",
                    report.linkage.candidate_pairs,
                    report.linkage.probabilistic_links,
                    report.linkage.refused_links,
                    elapsed.as_secs_f64()
                );
                println!("records by link rule: {:?}", report.links_by_rule);
                println!("linkage model: {}", report.linkage.model);
            }
            warn_if_defaults(&report.linkage);
            Ok(())
        }),
        Command::Serve { listen } => runtime.block_on(serve(&cli.config, listen)),
        Command::Token {
            role,
            user,
            name,
            org,
            team,
            worker,
            purpose,
            break_glass,
            person,
            minutes,
        } => {
            let policy = policy_config(&cli.config)?;
            if let Some(id) = &person {
                let loaded = load_config(&cli.config)?;
                let index = &loaded.gateway.index.path;
                anyhow::ensure!(
                    index.exists(),
                    "--person {id}: no identity index at {} yet (run `escr index` or `escr serve` first)",
                    index.display()
                );
                let index = crate::identity::index::IdentityIndex::open_with(index, loaded.linkage)?;
                anyhow::ensure!(
                    index.snapshot().resolve(id).is_some(),
                    "--person {id}: no such person in the identity index"
                );
            }
            let mut minutes = minutes;
            if break_glass.is_some() {
                minutes = minutes.min(policy.break_glass.max_minutes);
            }
            if !policy.roles.contains_key(&role) {
                bail!(
                    "unknown role `{role}`; policy roles: {}",
                    policy.roles.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            }
            let auth =
                crate::consent::auth::Auth::new(Arc::new(policy)).map_err(|e| anyhow::anyhow!(e))?;
            let now = chrono::Utc::now().timestamp();
            let claims = crate::consent::auth::Claims {
                sub: user,
                name,
                role,
                org: Some(org),
                team,
                worker,
                purpose,
                break_glass,
                person,
                iat: now,
                exp: now + minutes * 60,
                ..Default::default()
            };
            println!(
                "{}",
                auth.mint_hs256(&claims).map_err(|e| anyhow::anyhow!(e))?
            );
            Ok(())
        }
        Command::MigrateState => {
            let loaded = load_config(&cli.config)?;
            let (crate::state::Backend::Postgres, Some(pg)) =
                (loaded.gateway.state.backend, &loaded.gateway.state.postgres)
            else {
                bail!(
                    "{}: [state] backend is sqlite: its files need no migration",
                    cli.config.display()
                );
            };
            let version = runtime.block_on(async {
                crate::state::PgStore::new(pg)?.migrate().await
            })?;
            println!("state store: schema version {version}");
            Ok(())
        }
        Command::VerifyAudit { file } => {
            if file.is_none() {
                let loaded = load_config(&cli.config)?;
                if let (crate::state::Backend::Postgres, Some(pg)) =
                    (loaded.gateway.state.backend, &loaded.gateway.state.postgres)
                {
                    return runtime.block_on(verify_shared_audit(pg));
                }
            }
            let path = match file {
                Some(f) => f,
                None => policy_config(&cli.config)?.storage.audit,
            };
            if !path.exists() {
                bail!("{}: no audit log", path.display());
            }
            let v = crate::consent::audit::verify(&path)?;
            match v.first_break {
                None => {
                    println!("{}: ok, {} records, chain intact", path.display(), v.records);
                    Ok(())
                }
                Some((seq, why)) => bail!(
                    "{}: chain broken at record {seq}: {why} ({} records checked)",
                    path.display(),
                    v.records
                ),
            }
        }
    }
}

/// Every chain of the shared audit log (one per replica run), checked together.
async fn verify_shared_audit(config: &crate::state::PostgresConfig) -> anyhow::Result<()> {
    let pg = crate::state::PgStore::new(config)?;
    let known = crate::state::postgres::known_version();
    let found = pg.schema_version().await?;
    if found > known {
        bail!(crate::state::StateError::SchemaTooNew { found, known });
    }
    let chains = crate::consent::audit::verify_postgres(&pg).await?;
    let mut records = 0;
    let mut broken = Vec::new();
    for c in &chains {
        records += c.verification.records;
        if let Some((seq, why)) = &c.verification.first_break {
            broken.push(format!(
                "chain {} ({}): broken at record {seq}: {why}",
                c.chain_id, c.replica
            ));
        }
    }
    if broken.is_empty() {
        println!(
            "shared audit log: ok, {records} records in {} chains, every chain intact",
            chains.len()
        );
        Ok(())
    } else {
        for b in &broken {
            println!("{b}");
        }
        bail!(
            "shared audit log: {} of {} chains broken ({records} records checked)",
            broken.len(),
            chains.len()
        )
    }
}

fn policy_config(config: &Path) -> anyhow::Result<crate::consent::policy::PolicyConfig> {
    let loaded = load_config(config)?;
    let Some(path) = loaded.gateway.policy else {
        bail!("{}: no `policy` file configured", config.display());
    };
    Ok(crate::consent::policy::PolicyConfig::load(&path)?)
}

fn demo_dir(config: &Path) -> anyhow::Result<PathBuf> {
    let loaded = load_config(config)?;
    match loaded.gateway.demo.and_then(|d| d.dir) {
        Some(dir) => Ok(dir),
        None => bail!("{}: no [demo] dir; pass --out", config.display()),
    }
}

/// The embedded default: generate the demo databases on first run.
fn ensure_demo(config: &LoadedConfig) -> anyhow::Result<()> {
    let Some(demo) = &config.gateway.demo else {
        return Ok(());
    };
    let (true, Some(demo_dir)) = (demo.generate_if_missing, &demo.dir) else {
        return Ok(());
    };
    let missing = config
        .gateway
        .sources
        .iter()
        .filter_map(|s| s.get_ref().local_file())
        .any(|path| !path.exists());
    if !missing {
        // An estate generated before the demo had document files gets them now.
        for (council, dir) in std::iter::once((&demo.council, demo_dir))
            .chain(demo.other_councils.iter().map(|c| (&c.name, &c.dir)))
        {
            if !demo::documents::present(dir) {
                let opts = GenerateOptions {
                    seed: demo.seed,
                    council: council.clone(),
                    ..GenerateOptions::default()
                };
                demo::documents::write(&opts, dir).map_err(|e| anyhow::anyhow!(e))?;
            }
        }
    }
    if missing {
        tracing::info!(people = demo.people, seed = demo.seed, dir = %demo_dir.display(), "generating demo data (first run)");
        let councils = std::iter::once((&demo.council, demo_dir, demo.people)).chain(
            demo.other_councils
                .iter()
                .map(|c| (&c.name, &c.dir, c.people)),
        );
        for (council, dir, people) in councils {
            let movers = demo
                .movers_from
                .clone()
                .filter(|_| council == &demo.council && demo.movers > 0)
                .map(|from| demo::Movers {
                    from,
                    people: demo.movers,
                });
            let opts = GenerateOptions {
                seed: demo.seed,
                people,
                council: council.clone(),
                movers,
                ..GenerateOptions::default()
            };
            demo::generate(&opts, dir)
                .with_context(|| format!("generating the demo data of {council}"))?;
        }
        // One national opt-out list, whichever council a person lives in.
        let list = demo_dir.join("national_opt_out.txt");
        let mut text = std::fs::read_to_string(&list)?;
        for other in &demo.other_councils {
            let more = std::fs::read_to_string(other.dir.join("national_opt_out.txt"))?;
            text.extend(
                more.lines()
                    .filter(|l| !l.starts_with('#'))
                    .map(|l| format!("{l}\n")),
            );
        }
        std::fs::write(&list, text)?;
        // A new demo estate means the old index describes other people.
        let _ = std::fs::remove_file(&config.gateway.index.path);
    }
    Ok(())
}

async fn serve(config_path: &Path, listen: Option<String>) -> anyhow::Result<()> {
    let config = load_config(config_path)?;
    let listen = listen.unwrap_or_else(|| config.gateway.server.listen.clone());
    let refresh_secs = config.gateway.index.refresh_secs;
    // What fails at once fails before the demo or the index is generated: the policy,
    // then the port.
    let Some(policy_path) = config.gateway.policy.clone() else {
        bail!(
            "{}: no `policy` file configured; the gateway serves personal data only under a policy (see config/README.md)",
            config_path.display()
        );
    };
    crate::consent::policy::PolicyConfig::load(&policy_path)?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    ensure_demo(&config)?;
    let state = config.gateway.state.clone();
    // The shared store is migrated (or refused as too new) before anything serves.
    let pg = match (&state.backend, &state.postgres) {
        (crate::state::Backend::Postgres, Some(pg)) => Some(Arc::new(
            crate::state::PgStore::connect(pg)
                .await
                .context("the PostgreSQL state store")?,
        )),
        _ => None,
    };
    let mut gateway = Gateway::from_config(config)?;
    let stores = match &pg {
        Some(pg) => crate::consent::Stores::Postgres {
            pg: pg.clone(),
            replica: state.replica_name(),
        },
        None => crate::consent::Stores::Sqlite,
    };
    let access =
        crate::consent::AccessControl::load_on(&policy_path, Some(gateway.index.clone()), stores)
            .await?;
    if let Some(pg) = &pg {
        gateway.shared_index = Some(Arc::new(crate::identity::shared::SharedIndex::new(
            pg.clone(),
            gateway.index.clone(),
            state.replica_name(),
        )));
    }
    gateway.state = pg;
    let gateway = Arc::new(gateway.with_access_control(access));
    let report = match &gateway.shared_index {
        Some(shared) => {
            let report = shared.start(&gateway.fetcher.sources).await?;
            let g = gateway.clone();
            shared
                .clone()
                .watch(Duration::from_secs(state.index_poll_secs()), move || {
                    g.fetcher.clear_cache()
                });
            report
        }
        None => {
            let empty = gateway.index.snapshot().person_count() == 0;
            gateway.refresh_index(!empty).await?
        }
    };
    tracing::info!(
        people = report.people,
        changed = report.changed,
        "identity index ready"
    );
    if let Some(status) = gateway.index.model_status().filter(|m| m.defaults_used) {
        tracing::warn!(reasons = %status.rejected.join("; "), "the fitted linkage model failed its checks: the default m and u values are in use");
    }

    if refresh_secs > 0 {
        let g = gateway.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(refresh_secs));
            tick.tick().await;
            loop {
                tick.tick().await;
                match g.refresh_shared_or_own(true).await {
                    Ok(None) => tracing::debug!("another replica is refreshing the index"),
                    Ok(Some(r)) if r.changed > 0 || r.deleted_records > 0 => {
                        g.fetcher.clear_cache();
                        tracing::info!(changed = r.changed, "identity index refreshed");
                    }
                    Ok(Some(_)) => {}
                    Err(e) => tracing::warn!(error = %e, "identity index refresh failed"),
                }
            }
        });
    }

    tracing::info!("serving GraphQL on http://{listen}/graphql (GraphiQL in the browser)");
    // The peer's address is the per-address rate limit's key.
    let app = crate::api::server::router(gateway)
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Says on stderr when the fitted linkage model failed its checks and the documented
/// defaults were used instead (the JSON report carries the same reasons).
fn warn_if_defaults(stats: &crate::identity::index::LinkStats) {
    if !stats.model_rejected.is_empty() {
        eprintln!(
            "warning: the fitted linkage model failed its checks, so the default m and u values (config/README.md) were used: {}",
            stats.model_rejected.join("; ")
        );
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every command and every flag says what it is for in `--help`.
    #[test]
    fn every_flag_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() {
                    missing.push(format!("{path} --{}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {}", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "escr", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }
}
