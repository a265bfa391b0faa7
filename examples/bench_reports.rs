//! Reports benchmark: `cargo run --release --example bench_reports -- [people...]`
//! (default 20,000 and 100,000 people, the three demo vendors in SQLite;
//! `BENCH_PAGE_PEOPLE` sets the reports' `page_people`, else its default).
//!
//! For each size: the indicators for a financial year (time, statements), the same
//! rows read by direct SQL (the physical limit), and the full minimum data set as CSV
//! streamed over HTTP (time, rows, bytes), with the process's resident memory sampled
//! during each: the export's growth must not follow its size.

#[path = "support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use escr_gateway::api::gateway::Gateway;
use escr_gateway::config::LoadedConfig;
use escr_gateway::consent::access::{AccessContext, Purpose};
use escr_gateway::demo::{generate, GenerateOptions};
use escr_gateway::reports::{run, Period};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds this process has used (user and system, all threads): with other work
/// sharing the cores, wall time alone says little.
fn cpu_secs() -> f64 {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1.to_string();
            let f: Vec<&str> = after.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    ticks as f64 / 100.0
}

/// Peak resident memory while `f` runs, sampled every 5 ms: (result, peak KiB).
async fn with_peak<T>(f: impl std::future::Future<Output = T>) -> (T, u64) {
    let peak = Arc::new(AtomicU64::new(rss_kib()));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let out = f.await;
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    (out, peak.load(Ordering::Relaxed))
}

/// Every event row the reports read, by direct SQL on the SQLite files.
fn direct_rows(dir: &std::path::Path) -> anyhow::Result<u64> {
    let mut rows = 0u64;
    for (db, tables) in [
        (
            "casetrak",
            &["CLNT", "CNTCT", "ASMT", "EPSD", "SVC_PKG"][..],
        ),
        (
            "opencare",
            &["people", "referrals", "assessments", "service_agreements"][..],
        ),
        ("ssis", &["CLIENT", "REFRL", "CAREPKG"][..]),
    ] {
        let conn = rusqlite::Connection::open(dir.join(format!("{db}.db")))?;
        for t in tables {
            let mut stmt = conn.prepare(&format!("SELECT * FROM {t}"))?;
            let columns = stmt.column_count();
            let mut q = stmt.query([])?;
            while let Some(row) = q.next()? {
                for c in 0..columns {
                    let _ = row.get_ref(c)?;
                }
                rows += 1;
            }
        }
    }
    Ok(rows)
}

/// The indicators' work split into its phases, timed apart: reading a page of people
/// (SQL and mapping to records), survivorship of their demographics, and the tallies.
async fn phases(gateway: &Gateway, period: Period) -> anyhow::Result<(f64, f64, f64, u64)> {
    use escr_gateway::reports::extract::{Demographics, Extractor};
    use escr_gateway::reports::indicators::Tallies;
    let estate = gateway.estate();
    let reports = gateway.reports.as_deref().expect("reports configured");
    let survivorship = &gateway.index.linkage_config().survivorship;
    let snapshot = gateway.index.snapshot();
    let ex = Extractor::new(&estate, "Northshire", period, false).reading(
        escr_connector::mapping::Fields::Only(
            &escr_gateway::reports::extract::INDICATOR_FIELDS_READ,
        ),
    );
    let (mut read, mut survive, mut count, mut records) = (0.0, 0.0, 0.0, 0u64);
    let mut tallies = Tallies::default();
    for page in ex.pages_in_source_order(&snapshot, reports.config.page_people) {
        let t = Instant::now();
        let page = ex.page(&page).await?;
        read += t.elapsed().as_secs_f64();
        for p in &page {
            records += (p.events.len() + p.person_records.len()) as u64;
            let t = Instant::now();
            let demo = Demographics::for_indicators(&p.person_records, survivorship);
            survive += t.elapsed().as_secs_f64();
            let t = Instant::now();
            tallies.add(p, &demo, period, &reports.calendar);
            count += t.elapsed().as_secs_f64();
        }
    }
    Ok((read, survive, count, records))
}

async fn bench(people: usize) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    generate(
        &GenerateOptions {
            people,
            ..GenerateOptions::default()
        },
        work.path(),
    )?;
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::write(
        work.path().join("reports.toml"),
        format!(
            "bank_holidays = {:?}\ndefault_authority = \"Northshire\"\npseudonym_key_file = {:?}\ngenerate_key_if_missing = true\n{}[authorities.Northshire]\npopulation_18_64 = 181000\npopulation_65_plus = 62000\n",
            repo.join("config/bank-holidays.toml"),
            work.path().join("pseudonym.key"),
            std::env::var("BENCH_PAGE_PEOPLE").map_or(String::new(), |n| format!("page_people = {n}\n"))
        ),
    )?;
    let head = format!(
        "reports = {:?}\n[index]\npath = {:?}\nrefresh_secs = 0\nlinkage = {:?}",
        work.path().join("reports.toml"),
        work.path().join("index.db"),
        repo.join("config/linkage.toml")
    );
    let config_path = support::demo_config(work.path(), &head, "query_timeout_ms = 600000")?;
    let gateway = Gateway::from_config(LoadedConfig::load(&config_path)?)?;
    gateway.refresh_index(false).await?;
    let gateway = Arc::new(gateway);
    let period = Period::parse("2025-26")?;
    let ctx = AccessContext::for_role("bench", "analyst", Purpose::Planning);
    println!(
        "\n{people} people ({} in the index)",
        gateway.index.snapshot().person_count()
    );

    let base = rss_kib();
    let statements = gateway.fetcher.statements_executed();
    let started = Instant::now();
    let cpu = cpu_secs();
    let (result, peak) = with_peak(run::indicators(&gateway.estate(), &ctx, period, None)).await;
    let indicators_secs = started.elapsed().as_secs_f64();
    let indicators_cpu = cpu_secs() - cpu;
    let rows = result?;
    println!(
        "  indicators: {} rows in {indicators_secs:.2} s ({indicators_cpu:.2} s of CPU), {} statements, memory +{} MiB over {} MiB",
        rows.len(),
        gateway.fetcher.statements_executed() - statements,
        peak.saturating_sub(base) / 1024,
        base / 1024
    );

    let started = Instant::now();
    let cpu = cpu_secs();
    let direct = direct_rows(work.path())?;
    let direct_secs = started.elapsed().as_secs_f64();
    let direct_cpu = cpu_secs() - cpu;
    println!(
        "  direct SQL reading every row of the tables the reports read ({direct} rows, a superset of their windows): {direct_secs:.2} s ({direct_cpu:.2} s of CPU); indicators / direct = {:.1}x in time, {:.1}x in CPU",
        indicators_secs / direct_secs,
        indicators_cpu / direct_cpu.max(0.01)
    );
    let (read, survive, count, records) = phases(&gateway, period).await?;
    println!(
        "  where the time goes (the same work in phases, one page at a time): reading and mapping {records} records {read:.2} s, survivorship {survive:.2} s, tallies {count:.2} s"
    );

    // The data set over HTTP, as a reporting tool would pull it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = escr_gateway::api::server::router(gateway.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let base = rss_kib();
    let started = Instant::now();
    let (counted, peak) = with_peak(async {
        let mut r = reqwest::Client::new()
            .get(format!("http://{addr}/reports/mds.csv?period=2025-26"))
            .header("X-Purpose-Of-Use", "planning")
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "{}", r.status());
        let (mut bytes, mut lines) = (0u64, 0u64);
        while let Some(chunk) = r.chunk().await? {
            bytes += chunk.len() as u64;
            lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        }
        anyhow::Ok((bytes, lines))
    })
    .await;
    let (bytes, lines) = counted?;
    println!(
        "  data set CSV: {} rows, {:.1} MiB in {:.2} s, memory +{} MiB over {} MiB",
        lines.saturating_sub(1),
        bytes as f64 / 1048576.0,
        started.elapsed().as_secs_f64(),
        peak.saturating_sub(base) / 1024,
        base / 1024
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![20_000, 100_000]
    } else {
        sizes
    };
    for people in sizes {
        bench(people).await?;
    }
    Ok(())
}
