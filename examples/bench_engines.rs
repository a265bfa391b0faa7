//! Person-record latency through the gateway against the same reads done directly with
//! the driver (the physical limit), with OpenCare on a real MariaDB.
//!
//! ```sh
//! source scripts/test-servers.sh && start_test_servers   # or any MariaDB: ESCR_TEST_MYSQL_URL
//! cargo run --release --example bench_engines -- [people] [requests]
//! stop_test_servers
//! ```
//!
//! ESCR_TEST_MYSQL_URL names a server and a user that may create tables in the database
//! `escr_opencare` (test-servers.sh makes it). One request = one person with their
//! referrals, visits, case notes and services. Direct reads run the profile's own SQL
//! for those five entities with mysql_async, one statement each, rows read fully.

#[path = "support/mariadb.rs"]
mod mariadb;

use std::sync::Arc;
use std::time::{Duration, Instant};

use escr_connector::{sql, EntityKind, Placeholder, Value, VendorProfile};
use escr_gateway::api::gateway::Gateway;
use escr_gateway::config::LoadedConfig;
use escr_gateway::consent::access::AccessContext;
use mysql_async::prelude::Queryable;

const QUERY: &str = r#"query($id: ID!) { person(id: $id) {
  id name { family given } birthDate gender
  referrals { id receivedAt } visits { id planned actual seen }
  caseNotes { id date text } services { id type start end } } }"#;

const ENTITIES: [EntityKind; 5] = [
    EntityKind::Person,
    EntityKind::Referral,
    EntityKind::Visit,
    EntityKind::CaseNote,
    EntityKind::Service,
];

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Run {
    p50: Duration,
    p99: Duration,
    per_sec: f64,
    statements: f64,
}

fn report(label: &str, r: &Run, base: Option<&Run>) {
    let ratio = base.map_or(String::from("1.00"), |b| {
        format!("{:.2}", r.per_sec / b.per_sec)
    });
    println!(
        "{label:<22} {:>9.2} {:>9.2} {:>9.0} {:>14.1} {:>18}",
        r.p50.as_secs_f64() * 1e3,
        r.p99.as_secs_f64() * 1e3,
        r.per_sec,
        r.statements,
        ratio
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let people: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let requests: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(500);
    let url = std::env::var("ESCR_TEST_MYSQL_URL")
        .map_err(|_| anyhow::anyhow!("set ESCR_TEST_MYSQL_URL (see the header of this file)"))?;
    let opts: mysql_async::Opts =
        mysql_async::OptsBuilder::from_opts(mysql_async::Opts::from_url(&url)?)
            .db_name(Some("escr_opencare"))
            .into();

    let (work, rows) = mariadb::opencare_loaded(people, &opts).await?;
    println!("{people} people generated; OpenCare loaded into MariaDB ({rows} rows)");

    let profile_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/vendors/opencare.toml");
    let pw = work.path().join("pw");
    std::fs::write(&pw, opts.pass().unwrap_or_default())?;
    let config = format!(
        "[index]\npath = {:?}\nrefresh_secs = 0\n[loader]\nbatch_delay_ms = 0\n\n[[sources]]\nname = \"opencare\"\nprofile = {profile_path:?}\nmysql = {{ host = {:?}, port = {}, database = \"escr_opencare\", user = {:?}, password_file = {pw:?} }}\n",
        work.path().join("index.db"),
        opts.ip_or_hostname(),
        opts.tcp_port(),
        opts.user().unwrap_or_default(),
    );
    let path = work.path().join("escr.toml");
    std::fs::write(&path, config)?;
    let gw = Arc::new(Gateway::from_config(LoadedConfig::load(&path)?)?);
    gw.refresh_index(false).await?;
    let schema = escr_gateway::api::graphql::build(Some(gw.clone()));
    let people: Vec<(String, String)> = gw
        .index
        .snapshot()
        .people
        .iter()
        .filter_map(|(id, refs)| Some((id.clone(), refs.first()?.local_id.clone())))
        .collect();
    anyhow::ensure!(!people.is_empty(), "no OpenCare people indexed");

    let profile = VendorProfile::load(&profile_path)?;
    let statements: Vec<String> = ENTITIES
        .iter()
        .map(|e| {
            let spec = profile.entity(*e).expect("OpenCare maps the entity");
            let text = if *e == EntityKind::Person {
                spec.by_key.as_ref()
            } else {
                spec.by_person.as_ref()
            };
            text.expect("profile SQL").get_ref().clone()
        })
        .collect();
    let pool = mysql_async::Pool::new(opts);

    println!(
        "{requests} requests per run, one at a time\n\n{:<22} {:>9} {:>9} {:>9} {:>14} {:>18}",
        "run", "p50 ms", "p99 ms", "req/s", "statements/req", "vs direct (req/s)"
    );

    // Direct: the five profile statements with the driver, rows read fully.
    let mut latencies = Vec::with_capacity(requests);
    let started = Instant::now();
    let mut conn = pool.get_conn().await?;
    for i in 0..requests {
        let (_, local) = &people[i % people.len()];
        let t = Instant::now();
        for text in &statements {
            let bound = sql::bind(
                text,
                &[Value::Text(local.clone())],
                None,
                Placeholder::Question,
            );
            let params: Vec<mysql_async::Value> = bound
                .params
                .iter()
                .map(|v| match v {
                    Value::Text(s) => mysql_async::Value::from(s.as_str()),
                    _ => mysql_async::Value::NULL,
                })
                .collect();
            let rows: Vec<mysql_async::Row> = conn.exec(bound.sql, params).await?;
            std::hint::black_box(rows);
        }
        latencies.push(t.elapsed());
    }
    drop(conn);
    latencies.sort();
    let direct = Run {
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        per_sec: requests as f64 / started.elapsed().as_secs_f64(),
        statements: ENTITIES.len() as f64,
    };
    report("direct mysql_async", &direct, None);

    for cached in [false, true] {
        if cached {
            for (id, _) in &people {
                run(&gw, &schema, id).await;
            }
        }
        let before = gw.fetcher.statements_executed();
        let mut latencies = Vec::with_capacity(requests);
        let started = Instant::now();
        for i in 0..requests {
            if !cached {
                gw.fetcher.clear_cache();
            }
            let t = Instant::now();
            run(&gw, &schema, &people[i % people.len()].0).await;
            latencies.push(t.elapsed());
        }
        let elapsed = started.elapsed();
        latencies.sort();
        let r = Run {
            p50: percentile(&latencies, 0.5),
            p99: percentile(&latencies, 0.99),
            per_sec: requests as f64 / elapsed.as_secs_f64(),
            statements: (gw.fetcher.statements_executed() - before) as f64 / requests as f64,
        };
        report(
            if cached {
                "gateway, cached"
            } else {
                "gateway, cold"
            },
            &r,
            Some(&direct),
        );
    }
    pool.disconnect().await?;
    Ok(())
}

async fn run(gw: &Arc<Gateway>, schema: &escr_gateway::api::graphql::EscrSchema, id: &str) {
    let request = async_graphql::Request::new(QUERY)
        .variables(async_graphql::Variables::from_json(
            serde_json::json!({ "id": id }),
        ))
        .data(gw.request_loaders())
        .data(AccessContext::demo());
    let response = schema.execute(request).await;
    assert!(response.errors.is_empty(), "{:?}", response.errors);
}
