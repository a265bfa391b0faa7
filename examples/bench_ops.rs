//! What metrics and tracing cost: cached person-record throughput over HTTP with
//! metrics and OTLP tracing switched off and on, as a ratio in one run:
//! `cargo run --release --example bench_ops -- [people] [requests] [rounds]`.
//!
//! Each measurement is a child process of its own (the `metrics` recorder and the
//! tracing subscriber are per process): "off" serves with `[server] metrics = false`
//! and logs only; "on" with `/metrics` recorded and every request and source call
//! exported as spans over OTLP/HTTP to a receiver in the child that reads and drops
//! them. Rounds alternate off and on; the medians are compared. The budget is 3%.

#[path = "support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Instant;

use escr_gateway::api::gateway::Gateway;
use escr_gateway::config::LoadedConfig;

const QUERY: &str = r#"query($id: ID!) { person(id: $id) {
  id nhsNumber name { family given } birthDate gender sourceRecords { source localId }
  timeline(first: 50) { totalCount edges { node { kind at summary provenance { source localId } } } } } }"#;

/// Reads OTLP requests and answers 200; what it is sent is dropped.
fn sink() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let url = format!("http://{}/v1/traces", listener.local_addr().expect("bound"));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 16];
                let mut data = Vec::new();
                loop {
                    let Ok(n) = stream.read(&mut buf) else { return };
                    if n == 0 {
                        return;
                    }
                    data.extend_from_slice(&buf[..n]);
                    let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while data.len() < end + 4 + length {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => data.extend_from_slice(&buf[..n]),
                        }
                    }
                    data.drain(..end + 4 + length);
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
                }
            });
        }
    });
    url
}

async fn child(dir: &std::path::Path, on: bool, requests: usize) -> anyhow::Result<()> {
    let mut head = format!(
        "[index]\npath = {:?}\nrefresh_secs = 0\n[loader]\nbatch_delay_ms = 0\n[server]\nmetrics = {on}\n[server.limits]\nper_caller_per_minute = 0\nper_address_per_minute = 0\n",
        dir.join("index.db")
    );
    if on {
        head.push_str(&format!("[telemetry]\notlp_endpoint = {:?}\n", sink()));
    }
    let work = tempfile::tempdir()?;
    for f in ["casetrak.db", "opencare.db", "ssis.db"] {
        std::fs::copy(dir.join(f), work.path().join(f))?;
    }
    let path = support::demo_config(work.path(), &head, "")?;
    let config = LoadedConfig::load(&path)?;
    let (subscriber, telemetry) =
        escr_gateway::api::ops::telemetry::subscriber(&config.gateway.telemetry)
            .map_err(|e| anyhow::anyhow!(e))?;
    tracing::subscriber::set_global_default(subscriber)?;
    let gw = Arc::new(Gateway::from_config(config)?);
    let ids: Vec<String> = gw
        .index
        .snapshot()
        .people
        .iter()
        .filter(|(_, refs)| refs.len() >= 3)
        .map(|(id, _)| id.clone())
        .take(200)
        .collect();
    anyhow::ensure!(!ids.is_empty(), "no one with three records");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/graphql", listener.local_addr()?);
    let app = escr_gateway::api::server::router(gw.clone())
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::new();
    let send = |id: &String| {
        client
            .post(&url)
            .json(&serde_json::json!({"query": QUERY, "variables": {"id": id}}))
            .send()
    };
    for id in &ids {
        let r: serde_json::Value = send(id).await?.json().await?;
        anyhow::ensure!(r["errors"].is_null(), "{r}");
    }
    let started = Instant::now();
    for i in 0..requests {
        let r = send(&ids[i % ids.len()]).await?;
        anyhow::ensure!(r.status().is_success());
        r.bytes().await?;
    }
    let rate = requests as f64 / started.elapsed().as_secs_f64();
    telemetry.flush();
    println!("RESULT {rate}");
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        let dir = std::path::PathBuf::from(&args[2]);
        return child(&dir, args[3] == "on", args[4].parse()?).await;
    }
    let people: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let requests: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3000);
    let rounds: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(5);
    let work = tempfile::tempdir()?;
    escr_gateway::demo::generate(
        &escr_gateway::demo::GenerateOptions {
            people,
            ..Default::default()
        },
        work.path(),
    )?;
    let head = format!(
        "[index]\npath = {:?}\nrefresh_secs = 0",
        work.path().join("index.db")
    );
    let path = support::demo_config(work.path(), &head, "")?;
    Gateway::from_config(LoadedConfig::load(&path)?)?
        .refresh_index(false)
        .await?;
    println!("{people} people, {requests} cached requests over HTTP per run, {rounds} rounds each");
    let me = std::env::current_exe()?;
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for mode in ["off", "on"] {
            let out = std::process::Command::new(&me)
                .args([
                    "--child",
                    work.path().to_str().unwrap_or_default(),
                    mode,
                    &requests.to_string(),
                ])
                .env("RUST_LOG", "warn")
                .output()?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            let rate: f64 = stdout
                .lines()
                .find_map(|l| l.strip_prefix("RESULT "))
                .ok_or_else(|| {
                    anyhow::anyhow!("{mode}: {stdout}{}", String::from_utf8_lossy(&out.stderr))
                })?
                .parse()?;
            println!("round {round}: {mode:<3} {rate:>8.0} req/s");
            if mode == "off" {
                off.push(rate)
            } else {
                on.push(rate)
            }
        }
    }
    let (off, on) = (median(off), median(on));
    let ratio = on / off;
    println!(
        "median req/s: off {off:.0}, on {on:.0}; on/off = {ratio:.3} (cost {:.1}%; budget 3%: {})",
        (1.0 - ratio) * 100.0,
        if ratio >= 0.97 { "within" } else { "OVER" }
    );
    Ok(())
}
