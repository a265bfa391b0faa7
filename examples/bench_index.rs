//! Identity-index benchmark: `cargo run --release --example bench_index -- [people]`
//! (default 100,000 people across the three demo vendors).
//!
//! Reports: a full index build (read, link, persist) and its linkage quality against the
//! generator's truth; then, after a change to a few records in one source, an
//! incremental refresh with what it touched (records read, pairs compared, rows written).

use std::time::Instant;

#[path = "support/mod.rs"]
mod support;

use escr_gateway::api::gateway::Gateway;
use escr_gateway::config::LoadedConfig;
use escr_gateway::demo::{generate, GenerateOptions};
use escr_gateway::identity::linkage::evaluate::evaluate;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let people: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
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
        "generated {people} people in {:.1} s (not part of the figures below)",
        started.elapsed().as_secs_f64()
    );

    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let head = format!(
        "[index]\npath = {:?}\nrefresh_secs = 0\nlinkage = {:?}",
        work.path().join("index.db"),
        repo.join("config/linkage.toml")
    );
    let config_path = support::demo_config(work.path(), &head, "query_timeout_ms = 600000")?;
    let gateway = Gateway::from_config(LoadedConfig::load(&config_path)?)?;

    let started = Instant::now();
    let full = gateway.refresh_index(false).await?;
    let full_secs = started.elapsed().as_secs_f64();
    let records: usize = full.records_read.values().sum();
    let q = evaluate(&work.path().join("truth.json"), &gateway.index.snapshot())?;
    println!(
        "full index: {records} records -> {} people in {full_secs:.1} s ({:.0} records/s); {} candidate pairs, {} probabilistic links, {} for review",
        full.people,
        records as f64 / full_secs,
        full.linkage.candidate_pairs,
        full.linkage.probabilistic_links,
        full.linkage.review_pairs
    );
    println!(
        "quality: precision {:.3}%, recall {:.3}% ({} true pairs)",
        q.precision * 100.0,
        q.recall * 100.0,
        q.true_pairs
    );

    // Change ten OpenCare people (a new postcode, a newer timestamp).
    {
        let conn = rusqlite::Connection::open(work.path().join("opencare.db"))?;
        conn.execute(
            "UPDATE people SET postcode = 'NS1 1AA', updated_at = '2026-04-01 09:00:00.000' WHERE id IN (SELECT id FROM people ORDER BY id LIMIT 10)",
            [],
        )?;
    }
    let started = Instant::now();
    let inc = gateway.refresh_index(true).await?;
    let inc_secs = started.elapsed().as_secs_f64();
    println!(
        "incremental refresh after 10 changed records: {inc_secs:.2} s ({:.1}x faster); read {:?}; {} records changed, {} pairs compared, {} index rows written",
        full_secs / inc_secs,
        inc.records_read,
        inc.linkage_changed_records,
        inc.linkage.compared_pairs,
        inc.rows_written
    );
    Ok(())
}
