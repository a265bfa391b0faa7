//! The gateway against a direct-SQL program doing the same reads on the same MariaDB,
//! under a standard load tool (wrk). Started by `scripts/bench-peers.sh`, which starts
//! MariaDB, installs wrk and builds this in release mode; by hand:
//!
//! ```sh
//! source scripts/test-servers.sh && start_test_servers
//! cargo build --release --bin escr --example bench_peers
//! target/release/examples/bench_peers [people] [connections,...] [seconds]
//! stop_test_servers
//! ```
//!
//! One request reads 20 (or `BENCH_PEOPLE_PER_REQUEST`) consecutive OpenCare people (50 such windows in turn, so that
//! concurrent requests ask for different people) with all their visits, case notes
//! and services: 20 aliases of `personBySourceRecord` for the gateway (as
//! `safeguarding_lead` with a break-glass reason, so that every row is released), one
//! POST of the 20 ids for the direct program, which runs the profile's own four
//! statements (people by key, then visits, notes and services by person, `IN` over
//! the 20) with mysql_async and writes the rows as JSON. Before measuring, both answers
//! are checked to hold the same rows.
//!
//! Targets: the direct program (the physical limit), the gateway with its record cache
//! off, and the gateway with a warm cache (the gateway serves no personal data without
//! a policy, so what consent and audit cost is `consent_bench`'s to measure). For each
//! and each connection count: wrk for `seconds` after a 5 s warm-up; printed are
//! requests/s, p50 and p99, statements per request (MariaDB's own `Com_select`
//! counter), CPU seconds of the target and of MariaDB, the target's peak RSS, and the
//! ratios to the direct program; then the audit log's records and bytes per request.

#[path = "support/mariadb.rs"]
mod mariadb;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use escr_connector::{sql, EntityKind, Placeholder, Value, VendorProfile};
use mysql_async::prelude::Queryable;

/// The four reads, as the profile writes them.
const ENTITIES: [EntityKind; 4] = [
    EntityKind::Person,
    EntityKind::Visit,
    EntityKind::CaseNote,
    EntityKind::Service,
];
/// People per request: 20, or `BENCH_PEOPLE_PER_REQUEST` (for example 200).
fn people_per_request() -> usize {
    std::env::var("BENCH_PEOPLE_PER_REQUEST")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(20)
}
/// Requests cycle through this many windows of 20 consecutive people, so that
/// concurrent requests ask for different people (identical ones would share one
/// in-flight load in the gateway, which the direct program cannot).
const WINDOWS: usize = 50;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("direct") {
        let listen = args.get(2).cloned().unwrap_or("127.0.0.1:4100".into());
        return tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(direct::serve(&listen));
    }
    let people: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let connections: Vec<usize> = args
        .get(2)
        .map(|a| a.split(',').filter_map(|c| c.parse().ok()).collect())
        .unwrap_or(vec![16, 64, 500]);
    let seconds: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(20);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(people, &connections, seconds))
}

fn mysql_opts() -> anyhow::Result<mysql_async::Opts> {
    let url = std::env::var("ESCR_TEST_MYSQL_URL")
        .map_err(|_| anyhow::anyhow!("set ESCR_TEST_MYSQL_URL (scripts/bench-peers.sh does it)"))?;
    Ok(
        mysql_async::OptsBuilder::from_opts(mysql_async::Opts::from_url(&url)?)
            .db_name(Some("escr_opencare"))
            .into(),
    )
}

/// One server under test: its process and address.
struct Target {
    label: &'static str,
    /// The server's process (none for a second query mix on a server already there).
    child: Option<Child>,
    url: String,
    headers: Vec<(String, String)>,
    /// The first window's body (checked against the direct program's rows).
    body: String,
    /// One body per window of people: wrk sends them in turn.
    bodies: Vec<String>,
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Measured {
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    statements: f64,
    cpu_s: f64,
    db_cpu_s: f64,
    /// Answers that carried GraphQL errors (partial answers under overload, say): they
    /// count in req/s, so a row with any is not a clean measurement.
    errors: u64,
}

async fn run(people: usize, connections: &[usize], seconds: u64) -> anyhow::Result<()> {
    let per_request = people_per_request();
    let opts = mysql_opts()?;
    let (work, rows) = mariadb::opencare_loaded(people, &opts).await?;
    let pool = mysql_async::Pool::new(opts.clone());
    let mut conn = pool.get_conn().await?;
    let ids: Vec<String> = conn
        .query(format!(
            "SELECT CAST(id AS CHAR) FROM people WHERE deleted_at IS NULL ORDER BY id LIMIT {} OFFSET 100",
            per_request * WINDOWS
        ))
        .await?;
    // As many whole windows as the estate has, up to WINDOWS.
    let windows: Vec<&[String]> = ids.chunks_exact(per_request).collect();
    anyhow::ensure!(!windows.is_empty(), "too few OpenCare people");
    let shape: (u64, u64, u64) = conn
        .query_first(
            "SELECT (SELECT COUNT(*) FROM appointments), (SELECT COUNT(*) FROM notes), \
             (SELECT COUNT(*) FROM service_agreements)",
        )
        .await?
        .unwrap_or_default();
    println!(
        "{people} people generated; OpenCare in MariaDB: {rows} rows ({} appointments, {} notes, {} service agreements); {} windows of {per_request} people",
        shape.0, shape.1, shape.2, windows.len()
    );

    let escr = repo().join("target/release/escr");
    anyhow::ensure!(
        escr.exists(),
        "build first: cargo build --release --bin escr --example bench_peers"
    );
    let gateway_bodies: Vec<String> = windows.iter().map(|w| gateway_query(w)).collect();
    let direct_bodies: Vec<String> = windows
        .iter()
        .map(|w| serde_json::json!({ "ids": w }).to_string())
        .collect();

    let mut results: Vec<(&'static str, usize, Measured, u64)> = Vec::new();
    // (target, (audit records, bytes on disk)) for each gateway.
    let mut audits: Vec<(&'static str, (u64, u64))> = Vec::new();
    for label in [
        "direct SQL (mysql_async)",
        "gateway, cache off",
        "gateway, warm cache",
    ] {
        let port = free_port()?;
        let mut audit_log = None;
        let target = if label.starts_with("direct") {
            let me = std::env::current_exe()?;
            let child = Command::new(me)
                .args(["direct", &format!("127.0.0.1:{port}")])
                .env("ESCR_TEST_MYSQL_URL", std::env::var("ESCR_TEST_MYSQL_URL")?)
                .stdout(Stdio::null())
                .spawn()?;
            Target {
                label,
                child: Some(child),
                url: format!("http://127.0.0.1:{port}/people"),
                headers: vec![],
                body: direct_bodies[0].clone(),
                bodies: direct_bodies.clone(),
            }
        } else {
            let cache_mib = if label.contains("off") {
                0
            } else {
                cache_bound_mib()
            };
            let config = gateway_config(work.path(), &opts, cache_mib)?;
            audit_log = Some(config.with_file_name("audit.db"));
            let status = Command::new(&escr)
                .args(["--config", config.to_str().unwrap_or_default(), "index"])
                .stdout(Stdio::null())
                .status()?;
            anyhow::ensure!(status.success(), "escr index failed");
            let token = Command::new(&escr)
                .args([
                    "--config",
                    config.to_str().unwrap_or_default(),
                    "token",
                    "--role",
                    "safeguarding_lead",
                    "--purpose",
                    "safeguarding",
                    "--break-glass",
                    "benchmark: every row released",
                    "--minutes",
                    "60",
                ])
                .output()?;
            anyhow::ensure!(token.status.success(), "escr token failed");
            let token = String::from_utf8(token.stdout)?.trim().to_string();
            let child = Command::new(&escr)
                .args([
                    "--config",
                    config.to_str().unwrap_or_default(),
                    "serve",
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                ])
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()?;
            Target {
                label,
                child: Some(child),
                url: format!("http://127.0.0.1:{port}/graphql"),
                headers: vec![
                    ("Authorization".into(), format!("Bearer {token}")),
                    ("Content-Type".into(), "application/json".into()),
                ],
                body: gateway_bodies[0].clone(),
                bodies: gateway_bodies.clone(),
            }
        };
        let pid = target.child.as_ref().map_or(0, Child::id);
        wait_ready(&target).await?;
        let rows = answer_rows(&target).await?;
        match results.first() {
            None => println!("the direct answer holds {rows:?} (people, visits, notes, services)"),
            Some(_) => println!("{label}: the same rows ({rows:?})"),
        }
        check_same_rows(&target, rows, windows[0]).await?;
        let script = wrk_script(work.path(), &target)?;
        for &c in connections {
            // Warm-up (and, for the warm cache, filling it); not measured.
            wrk(&target.url, &script, c, 5)?;
            let db_before = (com_select(&mut conn).await?, mariadb_cpu());
            let cpu_before = cpu_seconds(pid);
            let (per_sec, p50_ms, p99_ms, requests, errors) =
                wrk(&target.url, &script, c, seconds)?;
            let statements =
                (com_select(&mut conn).await? - db_before.0) as f64 / requests.max(1) as f64;
            let m = Measured {
                per_sec,
                p50_ms,
                p99_ms,
                statements,
                cpu_s: cpu_seconds(pid) - cpu_before,
                db_cpu_s: mariadb_cpu() - db_before.1,
                errors,
            };
            results.push((target.label, c, m, peak_rss_mib(pid)));
        }
        if label == "gateway, warm cache" {
            // The list a portal pages through: `people(first, after)` over the index,
            // a page of as many people as the aliases ask for (each page its own
            // cursor, taken from the page before).
            let mut list = Target {
                label: "gateway, warm, people()",
                child: None,
                url: target.url.clone(),
                headers: target.headers.clone(),
                body: String::new(),
                bodies: list_bodies(&target, per_request, windows.len()).await?,
            };
            list.body = list.bodies[0].clone();
            let script = wrk_script(work.path(), &list)?;
            for &c in connections {
                wrk(&list.url, &script, c, 5)?;
                let db_before = (com_select(&mut conn).await?, mariadb_cpu());
                let cpu_before = cpu_seconds(pid);
                let (per_sec, p50_ms, p99_ms, requests, errors) =
                    wrk(&list.url, &script, c, seconds)?;
                let statements =
                    (com_select(&mut conn).await? - db_before.0) as f64 / requests.max(1) as f64;
                let m = Measured {
                    per_sec,
                    p50_ms,
                    p99_ms,
                    statements,
                    cpu_s: cpu_seconds(pid) - cpu_before,
                    db_cpu_s: mariadb_cpu() - db_before.1,
                    errors,
                };
                results.push((list.label, c, m, peak_rss_mib(pid)));
            }
        }
        if let Some(path) = audit_log {
            drop(target);
            audits.push((label, audit_size(&path)?));
        }
    }
    drop(conn);
    pool.disconnect().await?;

    println!(
        "\n{:<26} {:>5} {:>9} {:>8} {:>8} {:>10} {:>8} {:>8} {:>9} {:>10} {:>10} {:>7}",
        "target",
        "conns",
        "req/s",
        "p50 ms",
        "p99 ms",
        "stmts/req",
        "cpu s",
        "db cpu",
        "RSS MiB",
        "x direct",
        "p99/direct",
        "errors"
    );
    for (label, c, m, rss) in &results {
        let base = results
            .iter()
            .find(|(l, bc, _, _)| l.starts_with("direct") && bc == c)
            .map(|(_, _, b, _)| b);
        let (ratio, p99_ratio) = base.map_or((1.0, 1.0), |b| {
            (m.per_sec / b.per_sec, m.p99_ms / b.p99_ms.max(1e-9))
        });
        println!(
            "{label:<26} {c:>5} {:>9.0} {:>8.2} {:>8.2} {:>10.2} {:>8.1} {:>8.1} {rss:>9} {ratio:>10.2} {p99_ratio:>10.2} {:>7}",
            m.per_sec, m.p50_ms, m.p99_ms, m.statements, m.cpu_s, m.db_cpu_s, m.errors
        );
    }
    if results.iter().any(|(_, _, m, _)| m.errors > 0) {
        println!(
            "\nRows with errors counted partial answers (a source out of connections, say) in req/s: not clean measurements."
        );
    }
    for (label, (records, bytes)) in &audits {
        println!(
            "{label}: {records} audit records (one per request), {} bytes each on disk (indexes included)",
            bytes / (*records).max(1)
        );
    }
    println!(
        "\nThe warm gateway's cache bound: {} MiB (RSS target: at most {} MiB).",
        cache_bound_mib(),
        cache_bound_mib() + 64
    );
    println!(
        "\nTargets (issue 14): warm cache >= 2x direct req/s, p99 <= 0.5x; cache off >= 0.8x, p99 <= 1.25x, the same statements per request; RSS <= cache bound + 64 MiB.\nWhat consent, policy and the audit cost on the warm path: cargo run --release --example consent_bench."
    );
    Ok(())
}

/// The warm gateway's cache bound: 256 MiB, or `BENCH_CACHE_MIB` (below the estate's
/// size, the weigher's bound is what holds memory down).
fn cache_bound_mib() -> u64 {
    std::env::var("BENCH_CACHE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// The fields read of each person (the same for the aliases and the list).
const PERSON_FIELDS: &str = "id name { family given } birthDate visits { id planned actual seen } caseNotes { id date text } services { id type start end }";

/// `people(first, after)` pages of the index, one body per page, from the first.
async fn list_bodies(
    target: &Target,
    per_page: usize,
    pages: usize,
) -> anyhow::Result<Vec<String>> {
    let mut bodies = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..pages {
        let args = match &after {
            None => format!("first: {per_page}"),
            Some(c) => format!("first: {per_page}, after: {c:?}"),
        };
        let body = serde_json::json!({
            "query": format!("{{ people({args}) {{ pageInfo {{ endCursor hasNextPage }} edges {{ node {{ {PERSON_FIELDS} }} }} }} }}")
        })
        .to_string();
        let answer = post(target, &body).await?;
        anyhow::ensure!(answer.get("errors").is_none(), "people: {answer}");
        bodies.push(body);
        let info = &answer["data"]["people"]["pageInfo"];
        match info["endCursor"].as_str() {
            Some(c) if info["hasNextPage"] == true => after = Some(c.to_string()),
            _ => break,
        }
    }
    Ok(bodies)
}

fn gateway_query(ids: &[String]) -> String {
    let mut q = String::from("{");
    for (i, id) in ids.iter().enumerate() {
        q.push_str(&format!(
            " p{i}: personBySourceRecord(source: \"opencare\", localId: \"{id}\") {{ {PERSON_FIELDS} }}"
        ));
    }
    q.push_str(" }");
    serde_json::json!({ "query": q }).to_string()
}

fn gateway_config(
    work: &Path,
    opts: &mysql_async::Opts,
    cache_mib: u64,
) -> anyhow::Result<PathBuf> {
    let dir = work.join(format!("gateway-cache-{cache_mib}"));
    std::fs::create_dir_all(&dir)?;
    // The demo's policy, with its opt-out list and token key here.
    let policy = std::fs::read_to_string(repo().join("config/policy.toml"))?
        .replace("../data/demo/national_opt_out.txt", "national_opt_out.txt")
        .replace("../data/jwt-hs256.key", "jwt-hs256.key")
        .replace("../data/", "");
    std::fs::write(dir.join("policy.toml"), policy)?;
    std::fs::write(dir.join("national_opt_out.txt"), "")?;
    std::fs::write(dir.join("pw"), opts.pass().unwrap_or_default())?;
    let config = format!(
        "policy = \"policy.toml\"\n\n[server]\n[server.limits]\nper_caller_per_minute = 0\nper_address_per_minute = 0\n\n[index]\npath = \"index.db\"\nrefresh_secs = 0\n\n[cache]\nmax_mib = {cache_mib}\n\n[[sources]]\nname = \"opencare\"\nprofile = {:?}\nmysql = {{ host = {:?}, port = {}, database = \"escr_opencare\", user = {:?}, password_file = \"pw\", pool_max = 32 }}\n",
        repo().join("config/vendors/opencare.toml"),
        opts.ip_or_hostname(),
        opts.tcp_port(),
        opts.user().unwrap_or_default(),
    );
    let path = dir.join("escr.toml");
    std::fs::write(&path, config)?;
    Ok(path)
}

/// Records in a stopped gateway's audit log and the log's size once checkpointed.
fn audit_size(path: &Path) -> anyhow::Result<(u64, u64)> {
    let conn = rusqlite::Connection::open(path)?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    let records: u64 = conn.query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))?;
    drop(conn);
    Ok((records, std::fs::metadata(path)?.len()))
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn post(target: &Target, body: &str) -> anyhow::Result<serde_json::Value> {
    let client = reqwest::Client::new();
    let mut request = client.post(&target.url).body(body.to_string());
    for (k, v) in &target.headers {
        request = request.header(k, v);
    }
    if target.headers.is_empty() {
        request = request.header("Content-Type", "application/json");
    }
    Ok(request.send().await?.error_for_status()?.json().await?)
}

async fn wait_ready(target: &Target) -> anyhow::Result<()> {
    for _ in 0..600 {
        if post(target, &target.body).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("{} did not answer within 60 s", target.label)
}

/// People, visits, notes and services in the answer.
async fn answer_rows(target: &Target) -> anyhow::Result<[usize; 4]> {
    let answer = post(target, &target.body).await?;
    if let Some(errors) = answer.get("errors") {
        anyhow::bail!("{}: errors in the answer: {errors}", target.label);
    }
    if let Some(data) = answer.get("data") {
        let people: Vec<&serde_json::Value> = data
            .as_object()
            .into_iter()
            .flat_map(|m| m.values())
            .filter(|p| !p.is_null())
            .collect();
        let count = |field: &str| {
            people
                .iter()
                .map(|p| p[field].as_array().map_or(0, Vec::len))
                .sum()
        };
        return Ok([
            people.len(),
            count("visits"),
            count("caseNotes"),
            count("services"),
        ]);
    }
    let count = |k: &str| answer[k].as_array().map_or(0, Vec::len);
    Ok([
        count("person"),
        count("visit"),
        count("case_note"),
        count("service"),
    ])
}

/// The gateway's rows are the direct program's: the same counts of each kind.
async fn check_same_rows(target: &Target, rows: [usize; 4], ids: &[String]) -> anyhow::Result<()> {
    if target.headers.is_empty() {
        return Ok(());
    }
    let opts = mysql_opts()?;
    let truth = direct::read(&mysql_async::Pool::new(opts), &direct::statements()?, ids).await?;
    let count = |k: &str| truth[k].as_array().map_or(0, Vec::len);
    let direct = [
        count("person"),
        count("visit"),
        count("case_note"),
        count("service"),
    ];
    anyhow::ensure!(
        rows == direct,
        "{}: {rows:?} rows against the direct program's {direct:?}",
        target.label
    );
    Ok(())
}

fn wrk_script(work: &Path, target: &Target) -> anyhow::Result<PathBuf> {
    let mut lua = String::from("wrk.method = \"POST\"\n");
    let bodies: Vec<String> = target.bodies.iter().map(|b| lua_string(b)).collect();
    lua.push_str(&format!("local bodies = {{{}}}\n", bodies.join(",\n")));
    lua.push_str("local i = 0\n");
    lua.push_str(
        "request = function()\n  i = i % #bodies + 1\n  return wrk.format(nil, nil, nil, bodies[i])\nend\n",
    );
    lua.push_str("wrk.headers[\"Content-Type\"] = \"application/json\"\n");
    // Each wrk thread counts the answers that carry errors; `done` adds them up.
    lua.push_str(concat!(
        "errors = 0\n",
        "local threads = {}\n",
        "setup = function(thread) table.insert(threads, thread) end\n",
        "response = function(status, headers, body)\n",
        "  if string.find(body, '\"errors\"', 1, true) then errors = errors + 1 end\n",
        "end\n",
        "done = function(summary, latency, requests)\n",
        "  local n = 0\n",
        "  for _, t in ipairs(threads) do n = n + t:get(\"errors\") end\n",
        "  io.write(string.format(\"answers with errors: %d\\n\", n))\n",
        "end\n"
    ));
    for (k, v) in &target.headers {
        lua.push_str(&format!(
            "wrk.headers[{}] = {}\n",
            lua_string(k),
            lua_string(v)
        ));
    }
    let path = work.join(format!(
        "{}.lua",
        target.label.replace([' ', ',', '(', ')'], "_")
    ));
    std::fs::write(&path, lua)?;
    Ok(path)
}

fn lua_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Requests/s, p50 and p99 in ms, requests.
/// (req/s, p50 ms, p99 ms, requests, answers with errors).
fn wrk(
    url: &str,
    script: &Path,
    connections: usize,
    seconds: u64,
) -> anyhow::Result<(f64, f64, f64, u64, u64)> {
    let out = Command::new("wrk")
        .args([
            // Two threads, but never more than connections (wrk refuses that: one
            // connection measures a request alone).
            &format!("-t{}", connections.clamp(1, 2)),
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--timeout",
            "30s",
            "--latency",
            "-s",
            script.to_str().unwrap_or_default(),
            url,
        ])
        .output()
        .map_err(|e| anyhow::anyhow!("wrk: {e} (scripts/bench-peers.sh installs it)"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(out.status.success(), "wrk failed: {text}");
    if text.contains("Non-2xx") {
        anyhow::bail!("wrk saw error answers: {text}");
    }
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|r| r.trim().to_string()))
    };
    let per_sec: f64 = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no Requests/sec in wrk's output: {text}"))?;
    let p = |q: &str| field(q).and_then(|v| duration_ms(&v)).unwrap_or(f64::NAN);
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let errors = field("answers with errors:")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no error count in wrk's output: {text}"))?;
    Ok((per_sec, p("50%"), p("99%"), requests, errors))
}

fn duration_ms(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_alphabetic())?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

async fn com_select(conn: &mut mysql_async::Conn) -> anyhow::Result<u64> {
    let row: Option<(String, u64)> = conn
        .query_first("SHOW GLOBAL STATUS LIKE 'Com_select'")
        .await?;
    // Our own SHOW counts as no select; the two reads of the counter are not selects.
    Ok(row.map_or(0, |r| r.1))
}

/// User and system CPU seconds of a process.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the command name (which may hold spaces) start at the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after ')'.
    (ticks(11) + ticks(12)) / 100.0
}

fn mariadb_cpu() -> f64 {
    let out = Command::new("pgrep").args(["-x", "mariadbd"]).output();
    out.ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| {
            s.lines()
                .filter_map(|l| l.trim().parse::<u32>().ok())
                .map(cpu_seconds)
                .sum()
        })
        .unwrap_or(f64::NAN)
}

fn peak_rss_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

/// The direct program: what a developer would write by hand for this one read.
mod direct {
    use super::*;
    use axum::{extract::State, routing::post, Json, Router};
    use std::sync::Arc;

    pub fn statements() -> anyhow::Result<Vec<(&'static str, String)>> {
        let profile = VendorProfile::load(&repo().join("config/vendors/opencare.toml"))?;
        ENTITIES
            .iter()
            .map(|e| {
                let spec = profile
                    .entity(*e)
                    .ok_or_else(|| anyhow::anyhow!("OpenCare maps {e:?}"))?;
                let text = if *e == EntityKind::Person {
                    spec.by_key.as_ref()
                } else {
                    spec.by_person.as_ref()
                };
                let name = match e {
                    EntityKind::Person => "person",
                    EntityKind::Visit => "visit",
                    EntityKind::CaseNote => "case_note",
                    _ => "service",
                };
                Ok((
                    name,
                    text.ok_or_else(|| anyhow::anyhow!("profile SQL for {e:?}"))?
                        .get_ref()
                        .clone(),
                ))
            })
            .collect()
    }

    pub async fn read(
        pool: &mysql_async::Pool,
        statements: &[(&'static str, String)],
        ids: &[String],
    ) -> anyhow::Result<serde_json::Value> {
        let keys: Vec<Value> = ids.iter().map(|i| Value::Text(i.clone())).collect();
        let mut conn = pool.get_conn().await?;
        let mut out = serde_json::Map::new();
        for (name, text) in statements {
            let bound = sql::bind(text, &keys, None, Placeholder::Question);
            let params: Vec<mysql_async::Value> = bound
                .params
                .iter()
                .map(|v| match v {
                    Value::Text(s) => mysql_async::Value::from(s.as_str()),
                    _ => mysql_async::Value::NULL,
                })
                .collect();
            let rows: Vec<mysql_async::Row> = conn.exec(bound.sql, params).await?;
            let rows: Vec<serde_json::Value> = rows.into_iter().map(row_json).collect();
            out.insert(name.to_string(), serde_json::Value::Array(rows));
        }
        Ok(serde_json::Value::Object(out))
    }

    fn row_json(row: mysql_async::Row) -> serde_json::Value {
        let columns = row.columns();
        let values = row.unwrap();
        let mut object = serde_json::Map::with_capacity(values.len());
        for (column, value) in columns.iter().zip(values) {
            let json = match value {
                mysql_async::Value::NULL => serde_json::Value::Null,
                mysql_async::Value::Int(i) => i.into(),
                mysql_async::Value::UInt(u) => u.into(),
                mysql_async::Value::Float(f) => f64::from(f).into(),
                mysql_async::Value::Double(f) => f.into(),
                mysql_async::Value::Bytes(b) => String::from_utf8_lossy(&b).into_owned().into(),
                mysql_async::Value::Date(y, mo, d, h, mi, s, _) => {
                    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}").into()
                }
                mysql_async::Value::Time(neg, d, h, mi, s, _) => format!(
                    "{}{}:{mi:02}:{s:02}",
                    if neg { "-" } else { "" },
                    d * 24 + u32::from(h)
                )
                .into(),
            };
            object.insert(column.name_str().into_owned(), json);
        }
        serde_json::Value::Object(object)
    }

    #[derive(serde::Deserialize)]
    struct Ask {
        ids: Vec<String>,
    }

    struct App {
        pool: mysql_async::Pool,
        statements: Vec<(&'static str, String)>,
    }

    pub async fn serve(listen: &str) -> anyhow::Result<()> {
        let app = Arc::new(App {
            pool: mysql_async::Pool::new(
                mysql_async::OptsBuilder::from_opts(mysql_opts()?).pool_opts(
                    mysql_async::PoolOpts::default().with_constraints(
                        mysql_async::PoolConstraints::new(4, 32).unwrap_or_default(),
                    ),
                ),
            ),
            statements: statements()?,
        });
        let router = Router::new().route("/people", post(people)).with_state(app);
        let listener = tokio::net::TcpListener::bind(listen).await?;
        axum::serve(listener, router).await?;
        Ok(())
    }

    async fn people(
        State(app): State<Arc<App>>,
        Json(ask): Json<Ask>,
    ) -> Result<Json<serde_json::Value>, (axum::http::StatusCode, String)> {
        read(&app.pool, &app.statements, &ask.ids)
            .await
            .map(Json)
            .map_err(|e| (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    }
}
