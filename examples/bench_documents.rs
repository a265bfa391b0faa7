//! Documents benchmark: `cargo run --release --example bench_documents -- [MB]`
//! (default a 20 MB scan).
//!
//! A CaseTrak scan of that size is streamed through `GET /documents/{id}/content` from
//! a folder store and from an HTTP document service on loopback (tower-http's
//! `ServeDir`), five times one after another and four at once, the client reading and
//! dropping each chunk. Printed: time and throughput, and the process's peak resident
//! memory above what it held before (`VmHWM`, reset through `/proc/self/clear_refs`):
//! it must stay flat, far below the file's size, however large the file. The gateway
//! runs without a policy here (the consent decision and audit cost the same for any
//! size; `consent_bench` measures them).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use escr_gateway::api::gateway::Gateway;
use escr_gateway::config::LoadedConfig;
use escr_gateway::demo::{generate, GenerateOptions};
use futures::StreamExt;

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Bytes of the body, read a chunk at a time and dropped.
async fn stream(url: &str) -> anyhow::Result<u64> {
    let response = reqwest::get(url).await?.error_for_status()?;
    let mut body = response.bytes_stream();
    let mut n = 0u64;
    while let Some(chunk) = body.next().await {
        n += chunk?.len() as u64;
    }
    Ok(n)
}

async fn measure(label: &str, url: &str, size: u64) -> anyhow::Result<()> {
    // Warm: the first request builds the connection pools and caches the record.
    anyhow::ensure!(stream(url).await? == size, "{label}: a short body");
    let base = status_kib("VmRSS:");
    // "5" resets the peak (VmHWM) to the current resident size.
    std::fs::write("/proc/self/clear_refs", "5")?;
    let started = Instant::now();
    for _ in 0..5 {
        anyhow::ensure!(stream(url).await? == size, "{label}: a short body");
    }
    let sequential = started.elapsed();
    let started = Instant::now();
    let together = futures::future::join_all((0..4).map(|_| stream(url))).await;
    for n in together {
        anyhow::ensure!(n? == size, "{label}: a short body");
    }
    let concurrent = started.elapsed();
    let peak = status_kib("VmHWM:");
    let mb = size as f64 / 1e6;
    println!(
        "{label:<22} 5 x {mb:.1} MB one after another: {:.2} s ({:.0} MB/s); 4 at once: {:.2} s ({:.0} MB/s); peak RSS growth {:.1} MiB (file {:.1} MiB)",
        sequential.as_secs_f64(),
        5.0 * mb / sequential.as_secs_f64(),
        concurrent.as_secs_f64(),
        4.0 * mb / concurrent.as_secs_f64(),
        peak.saturating_sub(base) as f64 / 1024.0,
        size as f64 / 1024.0 / 1024.0,
    );
    Ok(())
}

fn write_scan(path: &Path, size: usize) -> std::io::Result<()> {
    use rand::{RngCore, SeedableRng};
    // A TIFF header, then noise (a scan compresses badly).
    let mut bytes = vec![0u8; size];
    rand_chacha::ChaCha8Rng::seed_from_u64(7).fill_bytes(&mut bytes);
    bytes[..4].copy_from_slice(b"II*\0");
    std::fs::write(path, bytes)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mb: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(20);
    let size = mb * 1_000_000;
    let work = tempfile::tempdir()?;
    let w = work.path();
    generate(
        &GenerateOptions {
            people: 200,
            ..GenerateOptions::default()
        },
        w,
    )?;
    let share = w.join("documents/casetrak");
    write_scan(&share.join("scan-0001.tif"), size)?;
    let person: i64 = {
        let conn = rusqlite::Connection::open(w.join("casetrak.db"))?;
        let person = conn.query_row("SELECT MIN(CLNT_ID) FROM CLNT", [], |r| r.get(0))?;
        conn.execute(
            "INSERT INTO DOC (DOC_ID, CLNT_ID, DOC_TYP, DIRN, TITLE, DOC_DT, FILE_PATH)
             VALUES (999999, ?1, 'SCN', 'I', 'Scanned file', '2025-06-01 00:00:00.000', '\\\\docs\\ct\\scan-0001.tif')",
            [person],
        )?;
        person
    };

    // The document service: the same folder over HTTP.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let dav = format!("http://{}/dav/", listener.local_addr()?);
    let app = axum::Router::new().nest_service("/dav", tower_http::services::ServeDir::new(&share));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let profile = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/vendors/casetrak.toml");
    let db = w.join("casetrak.db");
    let config = format!(
        "[index]\npath = {:?}\nrefresh_secs = 0\n\n[[sources]]\nname = \"casetrak\"\nprofile = {profile:?}\nsqlite = {{ path = {db:?} }}\ndocuments = {{ root = {share:?}, prefixes = {{ '\\\\docs\\ct\\' = \"\" }} }}\n\n[[sources]]\nname = \"casetrak-edrms\"\nprofile = {profile:?}\nsqlite = {{ path = {db:?} }}\ndocuments = {{ url = {dav:?}, prefixes = {{ '\\\\docs\\ct\\' = \"\" }} }}\n",
        w.join("index.db"),
    );
    let path = w.join("escr.toml");
    std::fs::write(&path, config)?;
    let gateway = Gateway::from_config(LoadedConfig::load(&path)?)?;
    gateway.refresh_index(false).await?;
    let gateway = Arc::new(gateway);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = escr_gateway::api::server::router(gateway.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    println!(
        "streaming a {mb} MB scan (person {person}), resident before: {:.1} MiB",
        status_kib("VmRSS:") as f64 / 1024.0
    );
    for (label, source) in [
        ("folder store:", "casetrak"),
        ("HTTP document service:", "casetrak-edrms"),
    ] {
        let url = format!(
            "{base}/documents/{}/content",
            gateway.document_ids.seal(source, "999999")
        );
        measure(label, &url, size as u64).await?;
    }
    Ok(())
}
