//! The shared PostgreSQL state store against the SQLite files, and two replicas against
//! one, as ratios in one run:
//! `cargo run --release --example bench_replicas -- [people] [requests] [clients]`.
//!
//! - Audit write latency: one request's record appended and committed, one request at
//!   a time (median and 99th percentile), and the records per second that `clients`
//!   concurrent writers reach (group commit), SQLite (WAL, synchronous=FULL) against
//!   PostgreSQL (synchronous_commit on).
//! - Cached throughput over HTTP with the consent path and its audit: `requests` person
//!   records from a warm cache by `clients` concurrent clients, one replica on SQLite,
//!   one on PostgreSQL, and two on PostgreSQL (in this process, the clients alternating
//!   between them as a balancer would). On one machine the replicas share its cores.
//!
//! PostgreSQL: `ESCR_BENCH_PG_URL` (a database the benchmark may create tables in), or
//! a server of its own started with Debian's `pg_ctl` in a temp folder.

#[path = "support/mod.rs"]
mod support;

// The test's server: this benchmark neither stops it nor runs psql.
#[allow(dead_code)]
#[path = "../tests/support/pg.rs"]
mod pg;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use escr_gateway::api::gateway::Gateway;
use escr_gateway::config::LoadedConfig;
use escr_gateway::consent::audit::{AuditLog, AuditRecord, Decision};
use escr_gateway::consent::{AccessControl, Stores};
use escr_gateway::state::{PgStore, PostgresConfig};

const QUERY: &str = r#"query($id: ID!) { person(id: $id) {
  id nhsNumber name { family given } birthDate sourceRecords { source localId }
  timeline(first: 20) { totalCount edges { node { kind at summary } } } } }"#;

/// A request's record releasing `people` people's person and case-note records.
fn record(i: usize, people: usize) -> AuditRecord {
    let mut r = escr_gateway::consent::audit::refusal(&format!("bench-{i}"), "bench", "BENCH", "x");
    r.decisions = vec![Decision {
        decision: "released".into(),
        code: None,
        reason: None,
        kinds: "person,case_note".into(),
        persons: (0..people)
            .map(|p| format!("escr:bench:P{:08x}", i + p))
            .collect(),
    }];
    r
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p) as usize]
}

/// (median ms, p99 ms, records/s with `clients` concurrent writers).
async fn audit_costs(log: Arc<AuditLog>, clients: usize) -> anyhow::Result<(f64, f64, f64)> {
    let mut one = Vec::new();
    for i in 0..500 {
        let started = Instant::now();
        log.append(record(i, 2)).await?;
        one.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let per_client = 200;
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let log = log.clone();
            tokio::spawn(async move {
                for i in 0..per_client {
                    log.append(record(c * per_client + i, 1)).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let rate = (clients * per_client) as f64 / started.elapsed().as_secs_f64();
    Ok((
        percentile(&mut one.clone(), 0.5),
        percentile(&mut one, 0.99),
        rate,
    ))
}

fn pg_config(url_env: &str) -> PostgresConfig {
    toml::from_str(&format!("url_env = {url_env:?}\npool_size = 16")).expect("settings")
}

/// A gateway over the demo in `work` with the consent path, its state on `pg` or in
/// SQLite files of its own (`name`), served on a free port: its URL.
async fn replica(
    work: &Path,
    name: &str,
    pg: Option<Arc<PgStore>>,
) -> anyhow::Result<(String, Arc<Gateway>)> {
    let dir = work.join(name);
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(work.join("index.db"), dir.join("index.db"))?;
    let policy =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policy.toml"))?
            .replace("../data/consent.db", "consent.db")
            .replace("../data/audit.db", "audit.db")
            .replace("../data/jwt-hs256.key", "../jwt.key")
            .replace(
                "../data/demo/national_opt_out.txt",
                "../national_opt_out.txt",
            );
    std::fs::write(dir.join("policy.toml"), policy)?;
    let head = format!(
        "policy = \"policy.toml\"\n[index]\npath = {:?}\nrefresh_secs = 0\n[server.limits]\nper_caller_per_minute = 0\nper_address_per_minute = 0\nmax_concurrent_requests = 1024\n",
        dir.join("index.db")
    );
    let config = support::demo_config_in(work, &dir, &head, "")?;
    let loaded = LoadedConfig::load(&config)?;
    let policy = loaded.gateway.policy.clone().expect("a policy");
    let mut gateway = Gateway::from_config(loaded)?;
    let stores = match &pg {
        Some(pg) => Stores::Postgres {
            pg: pg.clone(),
            replica: name,
        },
        None => Stores::Sqlite,
    };
    let access = AccessControl::load_on(&policy, Some(gateway.index.clone()), stores).await?;
    gateway.state = pg;
    let gateway = Arc::new(gateway.with_access_control(access));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/graphql", listener.local_addr()?);
    let app = escr_gateway::api::server::router(gateway.clone())
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, gateway))
}

/// Requests per second of `clients` clients over `urls` in turn (all answered, with
/// data), after one warming pass over `ids`.
async fn throughput(
    urls: &[String],
    token: &str,
    ids: &[String],
    requests: usize,
    clients: usize,
) -> anyhow::Result<f64> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()?;
    let send = |url: &str, id: &str| {
        client
            .post(url)
            .bearer_auth(token)
            .header("X-Purpose-Of-Use", "safeguarding")
            .json(&serde_json::json!({"query": QUERY, "variables": {"id": id}}))
            .send()
    };
    for url in urls {
        for id in ids {
            let r: serde_json::Value = send(url, id).await?.json().await?;
            anyhow::ensure!(r["data"]["person"]["id"].is_string(), "{r}");
        }
    }
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (next, client, urls, ids, token) = (
                next.clone(),
                client.clone(),
                urls.to_vec(),
                ids.to_vec(),
                token.to_string(),
            );
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= requests {
                        return anyhow::Ok(());
                    }
                    let r = client
                        .post(&urls[i % urls.len()])
                        .bearer_auth(&token)
                        .header("X-Purpose-Of-Use", "safeguarding")
                        .json(&serde_json::json!({"query": QUERY, "variables": {"id": ids[i % ids.len()]}}))
                        .send()
                        .await?;
                    anyhow::ensure!(r.status().is_success());
                    let body = r.bytes().await?;
                    anyhow::ensure!(!body.starts_with(b"{\"errors\""), "an error answer");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(requests as f64 / started.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let people: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let requests: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(4000);
    let clients: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(16);

    let url_env = "ESCR_BENCH_STATE_URL";
    // Kept until the end: dropping it stops the server.
    let _own_server = match std::env::var("ESCR_BENCH_PG_URL") {
        Ok(url) => {
            std::env::set_var(url_env, url);
            None
        }
        Err(_) => {
            let server = pg::TestPostgres::start("bench-pw");
            std::env::set_var(url_env, server.url("postgres", "bench-pw", "postgres"));
            Some(server)
        }
    };
    let store = Arc::new(PgStore::connect(&pg_config(url_env)).await?);

    let work = tempfile::tempdir()?;
    let t = Instant::now();
    escr_gateway::demo::generate(
        &escr_gateway::demo::GenerateOptions {
            people,
            ..Default::default()
        },
        work.path(),
    )?;
    std::fs::write(
        work.path().join("jwt.key"),
        "bench-key-0123456789abcdef0123456789abcdef",
    )?;
    let head = format!(
        "[index]\npath = {:?}\nrefresh_secs = 0",
        work.path().join("index.db")
    );
    let config = support::demo_config(work.path(), &head, "")?;
    Gateway::from_config(LoadedConfig::load(&config)?)?
        .refresh_index(false)
        .await?;
    println!(
        "{people} people, index built in {:.1} s; {requests} cached requests by {clients} clients",
        t.elapsed().as_secs_f64()
    );

    // Audit writes.
    let sqlite = Arc::new(AuditLog::open(&work.path().join("bench-audit.db"))?);
    let (s_med, s_p99, s_rate) = audit_costs(sqlite, clients).await?;
    let postgres = Arc::new(AuditLog::postgres(store.clone(), "bench").await?);
    let (p_med, p_p99, p_rate) = audit_costs(postgres, clients).await?;
    println!("audit append+commit, one request at a time: SQLite median {s_med:.2} ms p99 {s_p99:.2} ms; PostgreSQL median {p_med:.2} ms p99 {p_p99:.2} ms; PostgreSQL/SQLite latency {:.2}", p_med / s_med);
    println!("audit records/s with {clients} concurrent writers (group commit): SQLite {s_rate:.0}, PostgreSQL {p_rate:.0}; PostgreSQL/SQLite {:.2}", p_rate / s_rate);

    // Cached throughput over HTTP.
    let (one_sqlite, g) = replica(work.path(), "sqlite", None).await?;
    let ids: Vec<String> = g
        .index
        .snapshot()
        .people
        .iter()
        .filter(|(_, refs)| refs.len() >= 2)
        .map(|(id, _)| id.clone())
        .take(200)
        .collect();
    let auth = &g.access.as_ref().expect("access").auth;
    let now = chrono::Utc::now().timestamp();
    let token = auth
        .mint_hs256(&escr_gateway::consent::auth::Claims {
            sub: "bench".into(),
            role: "safeguarding_lead".into(),
            org: Some("council".into()),
            purpose: Some("safeguarding".into()),
            iat: now,
            exp: now + 3600,
            ..Default::default()
        })
        .map_err(|e| anyhow::anyhow!(e))?;
    let (a, _ga) = replica(work.path(), "a", Some(store.clone())).await?;
    let (b, _gb) = replica(work.path(), "b", Some(store.clone())).await?;
    let r_sqlite = throughput(&[one_sqlite], &token, &ids, requests, clients).await?;
    let r_one = throughput(std::slice::from_ref(&a), &token, &ids, requests, clients).await?;
    let r_two = throughput(&[a, b], &token, &ids, requests, clients).await?;
    println!("cached req/s: one replica on SQLite {r_sqlite:.0}, one on PostgreSQL {r_one:.0}, two on PostgreSQL {r_two:.0}");
    println!(
        "ratios: PostgreSQL/SQLite (one replica) {:.2}; two replicas/one (PostgreSQL) {:.2}; cores here: {}",
        r_one / r_sqlite,
        r_two / r_one,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}
