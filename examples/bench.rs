//! Person-record benchmark on the embedded default:
//! `cargo run --release --example bench -- [people] [requests]`.
//!
//! One request = a person with 50 timeline items from three sources (person fields,
//! source records, timeline with provenance). Reports p50/p99 latency and throughput,
//! cold (cache cleared before each request) and cached, and SQL statements per request.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use escr_gateway::api::gateway::Gateway;
use escr_gateway::config::LoadedConfig;
use escr_gateway::consent::access::AccessContext;
use escr_gateway::demo::{generate, GenerateOptions};

const QUERY: &str = r#"query($id: ID!) { person(id: $id) {
  id nhsNumber name { family given } birthDate gender sourceRecords { source localId }
  timeline(first: 50) { totalCount edges { node { kind at summary provenance { source localId } } } } } }"#;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let people: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let requests: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(500);
    let work = tempfile::tempdir()?;
    let started = Instant::now();
    generate(
        &GenerateOptions {
            people,
            ..GenerateOptions::default()
        },
        work.path(),
    )?;
    println!(
        "generated {people} people in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let head = format!(
        "[index]\npath = {:?}\nrefresh_secs = 0\n[loader]\nbatch_delay_ms = 0",
        work.path().join("index.db")
    );
    let path = support::demo_config(work.path(), &head, "")?;
    let gw = Arc::new(Gateway::from_config(LoadedConfig::load(&path)?)?);
    let started = Instant::now();
    let report = gw.refresh_index(false).await?;
    println!(
        "indexed {} gateway people in {:.1} s",
        report.people,
        started.elapsed().as_secs_f64()
    );
    let schema = escr_gateway::api::graphql::build(Some(gw.clone()));

    // People known to all three systems: the widest record.
    let snapshot = gw.index.snapshot();
    let ids: Vec<String> = snapshot
        .people
        .iter()
        .filter(|(_, refs)| {
            refs.iter()
                .map(|r| r.source.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                == 3
        })
        .map(|(id, _)| id.clone())
        .collect();
    anyhow::ensure!(!ids.is_empty(), "no one in all three systems");
    println!(
        "{} people are in all three systems; {requests} requests per run\n",
        ids.len()
    );
    println!(
        "{:<8} {:>10} {:>10} {:>12} {:>14}",
        "run", "p50 ms", "p99 ms", "req/s", "statements/req"
    );
    for cached in [false, true] {
        let mut latencies = Vec::with_capacity(requests);
        if cached {
            for id in &ids {
                run(&gw, &schema, id).await;
            }
        }
        let before = gw.fetcher.statements_executed();
        let started = Instant::now();
        for i in 0..requests {
            if !cached {
                gw.fetcher.clear_cache();
            }
            let id = &ids[i % ids.len()];
            let t = Instant::now();
            run(&gw, &schema, id).await;
            latencies.push(t.elapsed());
        }
        let elapsed = started.elapsed();
        let statements = (gw.fetcher.statements_executed() - before) as f64 / requests as f64;
        latencies.sort();
        println!(
            "{:<8} {:>10.2} {:>10.2} {:>12.0} {:>14.1}",
            if cached { "cached" } else { "cold" },
            percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
            percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
            requests as f64 / elapsed.as_secs_f64(),
            statements
        );
    }
    Ok(())
}
