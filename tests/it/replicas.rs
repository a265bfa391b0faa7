//! Two `escr serve` replicas over the embedded demo, their state in one PostgreSQL (a
//! server of this test's own, so that it can stop and start it), behind haproxy
//! (issue 17): the schema migrated by the owner and served under a role that may only
//! insert and read the audit; consent recorded on A applies on B's next request;
//! answers through the balancer are one replica's; a steward's decision on A is served
//! by B without a restart; a replica killed with SIGKILL under load loses no audit
//! event of an answered request and every chain verifies; the database going away
//! fails `/readyz` and answers at once with no data, and the replicas recover when it
//! returns; a newer schema is refused.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::demo;
use crate::support::pg::TestPostgres;
use crate::support::shipped::{copy_dir, escr_bin, free_port, merge_toml, serve_with_env};

const SUPER_PW: &str = "super-7f3a";
const OWNER_PW: &str = "owner-91c2";
const APP_PW: &str = "app-4d5e";

/// What the gateway's own role is granted (config/README.md, "Shared state on
/// PostgreSQL"): no UPDATE or DELETE on the audit or the consent history.
const GRANTS: &str = include_str!("../../examples/replicas/grants.sql");

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Estate {
    pg: TestPostgres,
    dir: tempfile::TempDir,
    app_url: String,
    owner_url: String,
}

impl Estate {
    fn config(&self, replica: &str) -> PathBuf {
        self.dir.path().join(format!("config/escr-{replica}.toml"))
    }

    /// `escr --config <replica's> args` with the state URL of `url`.
    fn escr(&self, replica: &str, url: &str, args: &[&str]) -> std::process::Output {
        Command::new(escr_bin())
            .arg("--config")
            .arg(self.config(replica))
            .args(args)
            .current_dir(self.dir.path())
            .env("ESCR_STATE_URL", url)
            .env_remove("ESCR_JWT_KEY")
            .output()
            .unwrap()
    }

    fn token(&self, args: &[&str]) -> String {
        let mut all = vec!["token"];
        all.extend(args);
        let out = self.escr("a", &self.app_url, &all);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn serve(&self, replica: &str, addr: &str) -> Killed {
        Killed(serve_with_env(
            &self.config(replica),
            self.dir.path(),
            &["--listen", addr],
            addr,
            &[
                ("ESCR_STATE_URL", &self.app_url),
                ("ESCR_CURSOR_KEY", CURSOR_KEY),
                ("ESCR_DOCUMENT_KEY", DOCUMENT_KEY),
            ],
        ))
    }
}

/// The shipped config twice, as replicas `a` and `b`: the demo's source files shared,
/// each its own local index file, the state in PostgreSQL.
const CURSOR_KEY: &str = "replicas-test-cursor-key-of-32-bytes-or-more";
const DOCUMENT_KEY: &str = "replicas-test-document-key-of-32-bytes-or-more";

fn estate() -> Estate {
    let pg = TestPostgres::start(SUPER_PW);
    let admin = pg.url("postgres", SUPER_PW, "postgres");
    pg.psql(
        &admin,
        &format!("CREATE ROLE escr_owner LOGIN PASSWORD '{OWNER_PW}'; CREATE ROLE escr_app LOGIN PASSWORD '{APP_PW}';"),
    )
    .unwrap();
    pg.psql(&admin, "CREATE DATABASE escr OWNER escr_owner")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&demo::repo().join("config"), &dir.path().join("config"));
    let shipped = std::fs::read_to_string(dir.path().join("config/escr.toml")).unwrap();
    for replica in ["a", "b"] {
        let text = merge_toml(
            &shipped,
            &format!(
                r#"
[index]
path = "../data/index-{replica}.db"
[cursors]
key_env = "ESCR_CURSOR_KEY"
[documents]
id_key_env = "ESCR_DOCUMENT_KEY"
[state]
backend = "postgres"
replica = "{replica}"
index_poll_secs = 2
[state.postgres]
url_env = "ESCR_STATE_URL"
pool_size = 4
connect_timeout_ms = 1000
acquire_timeout_ms = 1000
statement_timeout_ms = 5000
"#
            ),
        );
        std::fs::write(dir.path().join(format!("config/escr-{replica}.toml")), text).unwrap();
    }
    Estate {
        app_url: pg.url("escr_app", APP_PW, "escr"),
        owner_url: pg.url("escr_owner", OWNER_PW, "escr"),
        pg,
        dir,
    }
}

fn haproxy(dir: &Path, port: u16, backends: &[&str]) -> Killed {
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, b)| format!("  server r{i} {b} check\n"))
        .collect();
    let config = format!(
        "global\n  maxconn 512\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n  retries 3\n  option redispatch\nfrontend fe\n  bind 127.0.0.1:{port}\n  default_backend replicas\nbackend replicas\n  balance roundrobin\n  http-response set-header X-Replica %[srv_name]\n  option httpchk GET /readyz\n  timeout check 5s\n  default-server inter 500ms fall 3 rise 2\n{servers}"
    );
    let file = dir.join("haproxy.cfg");
    std::fs::write(&file, config).unwrap();
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("haproxy (scripts/test-servers.sh installs it)");
    // Ready when every backend has answered through it: a test that counts what each
    // replica served must not start while a slow first health check has one out of rotation.
    // (A check's timeout defaults to `inter`; on a loaded 2-core machine `/readyz` can take
    // longer than that, so `timeout check` is set apart.)
    let child = Killed(child);
    let mut seen = std::collections::BTreeSet::new();
    let started = Instant::now();
    while seen.len() < backends.len() {
        if let Ok(r) = reqwest::blocking::get(format!("http://127.0.0.1:{port}/healthz")) {
            if r.status() == 200 {
                if let Some(name) = r.headers().get("x-replica") {
                    seen.insert(name.to_str().unwrap_or_default().to_string());
                }
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "haproxy did not put every replica in rotation (saw {seen:?})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn post(base: &str, token: &str, purpose: &str, query: &str, variables: Value) -> Value {
    let r = reqwest::blocking::Client::new()
        .post(format!("{base}/graphql"))
        .bearer_auth(token)
        .header("X-Purpose-Of-Use", purpose)
        .json(&json!({"query": query, "variables": variables}))
        .timeout(Duration::from_secs(30))
        .send()
        .unwrap();
    r.json().unwrap()
}

/// The answer without what differs per request (the audit request id).
fn answer(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("extensions");
    }
    v
}

fn ids_of(base: &str, token: &str) -> (String, String) {
    let q = r#"{ a: personBySourceRecord(source: "casetrak", localId: "1000") { id }
                b: personBySourceRecord(source: "opencare", localId: "1") { id } }"#;
    let r = post(base, token, "safeguarding", q, json!({}));
    let id = |k: &str| {
        r["data"][k]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{r}"))
            .to_string()
    };
    (id("a"), id("b"))
}

#[test]
fn replicas_share_consent_audit_and_index_through_postgres() {
    let e = estate();

    // A replica with fewer rights than the owner serves a database the owner migrated.
    let out = e.escr("a", &e.owner_url, &["migrate-state"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!(
        "schema version {}",
        escr_gateway::state::postgres::known_version()
    )));
    e.pg.psql(&e.owner_url, GRANTS).unwrap();
    let out = e.escr("a", &e.app_url, &["check-config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let (port_a, port_b, port_lb) = (free_port(), free_port(), free_port());
    let (addr_a, addr_b) = (format!("127.0.0.1:{port_a}"), format!("127.0.0.1:{port_b}"));
    // A first: it generates the demo the two share and publishes the index B installs.
    let a = e.serve("a", &addr_a);
    let mut b = Some(e.serve("b", &addr_b));
    let _lb = haproxy(e.dir.path(), port_lb, &[&addr_a, &addr_b]);
    let (base_a, base_b, lb) = (
        format!("http://{addr_a}"),
        format!("http://{addr_b}"),
        format!("http://127.0.0.1:{port_lb}"),
    );
    let lead = e.token(&["--role", "safeguarding_lead", "--purpose", "safeguarding"]);

    // Answers through the balancer are the one replica's.
    let q = r#"query($s: String!, $l: String!) { personBySourceRecord(source: $s, localId: $l) {
        id name { family given } sourceRecords { source localId } episodes { kind start end } } }"#;
    for (source, local) in [
        ("casetrak", "1014"),
        ("opencare", "82"),
        ("ssis", "0000001C"),
    ] {
        let vars = json!({"s": source, "l": local});
        let one = answer(post(&base_a, &lead, "safeguarding", q, vars.clone()));
        assert!(
            one["data"]["personBySourceRecord"]["id"].is_string(),
            "{one}"
        );
        for _ in 0..4 {
            assert_eq!(
                answer(post(&lb, &lead, "safeguarding", q, vars.clone())),
                one
            );
        }
    }
    let chains =
        e.pg.psql(&e.app_url, "SELECT count(DISTINCT chain_id) FROM audit")
            .unwrap();
    assert_eq!(chains, "2", "both replicas answered and audited");

    // A page's cursor from A resumes on B: the replicas share the cursor key.
    let page = r#"query($after: String) { searchPeople(name: "a", first: 3, after: $after) {
        edges { node { id } } pageInfo { endCursor hasNextPage } } }"#;
    let first = post(&base_a, &lead, "safeguarding", page, json!({}));
    let cursor = first["data"]["searchPeople"]["pageInfo"]["endCursor"].clone();
    assert!(cursor.is_string(), "{first}");
    let on_a = answer(post(
        &base_a,
        &lead,
        "safeguarding",
        page,
        json!({"after": cursor}),
    ));
    let on_b = answer(post(
        &base_b,
        &lead,
        "safeguarding",
        page,
        json!({"after": cursor}),
    ));
    assert!(on_b.get("errors").is_none(), "{on_b}");
    // (Cursors differ per sealing: a random nonce.)
    let edges = |v: &Value| v["data"]["searchPeople"]["edges"].clone();
    assert_eq!(
        edges(&on_a),
        edges(&on_b),
        "the next page is the same on either replica"
    );
    assert_ne!(edges(&on_a), edges(&first), "it is the next page");

    // Consent recorded on A applies to B's next request; withdrawn on A, likewise.
    let worker = e.token(&[
        "--role",
        "social_worker",
        "--worker",
        "7",
        "--team",
        "3",
        "--purpose",
        "direct_care",
    ]);
    let who = post(
        &base_a,
        &worker,
        "direct_care",
        r#"{ personBySourceRecord(source: "casetrak", localId: "1014") { id } }"#,
        json!({}),
    )["data"]["personBySourceRecord"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let notes = "query($id: ID!) { person(id: $id) { caseNotes { id } } }";
    let before = post(&base_b, &worker, "direct_care", notes, json!({"id": who}));
    assert!(
        !before["data"]["person"]["caseNotes"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{before}"
    );
    let r = post(
        &base_a,
        &worker,
        "direct_care",
        r#"mutation($id: ID!) { recordConsent(personId: $id, source: "paper form",
             provision: { decision: DENY, dataClasses: ["notes"] }) { id } }"#,
        json!({"id": who}),
    );
    let consent = r["data"]["recordConsent"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_string();
    let denied = post(&base_b, &worker, "direct_care", notes, json!({"id": who}));
    assert_eq!(denied["data"]["person"]["caseNotes"], json!([]), "{denied}");
    assert_eq!(
        denied["errors"][0]["extensions"]["code"], "CONSENT_DENIED",
        "{denied}"
    );
    let person = e.token(&[
        "--role",
        "person",
        "--person",
        &who,
        "--purpose",
        "direct_care",
    ]);
    let r = post(
        &base_a,
        &person,
        "direct_care",
        r#"mutation($c: ID!) { withdrawConsent(id: $c, reason: "changed their mind") { withdrawnAt } }"#,
        json!({"c": consent}),
    );
    assert!(
        r["data"]["withdrawConsent"]["withdrawnAt"].is_string(),
        "{r}"
    );
    let after = post(&base_b, &worker, "direct_care", notes, json!({"id": who}));
    assert_eq!(answer(after), answer(before));

    // A steward's unlink on A is served by B, without a restart.
    let (x, y) = ids_of(&base_b, &lead);
    assert_eq!(x, y, "the demo links these two records");
    let steward = e.token(&["--role", "data_steward", "--purpose", "care_management"]);
    let r = post(
        &base_a,
        &steward,
        "care_management",
        r#"mutation { unlinkRecords(a: {source: "casetrak", localId: "1000"}, b: {source: "opencare", localId: "1"}, reason: "different mothers") { aPersonId bPersonId } }"#,
        json!({}),
    );
    assert!(r["data"]["unlinkRecords"]["bPersonId"].is_string(), "{r}");
    let started = Instant::now();
    loop {
        let (x, y) = ids_of(&base_b, &lead);
        if x != y {
            assert_eq!(
                ids_of(&base_a, &lead),
                (x, y),
                "both replicas serve one index"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "B never served A's decision"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // SIGKILL of B under load through the balancer: every answered request is audited.
    let answered = Arc::new(Mutex::new(Vec::<String>::new()));
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (answered, sent, lb, lead) = (answered.clone(), sent.clone(), lb.clone(), lead.clone());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                while sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 300 {
                    let r = client
                        .post(format!("{lb}/graphql"))
                        .bearer_auth(&lead)
                        .header("X-Purpose-Of-Use", "safeguarding")
                        .json(&json!({"query": r#"{ personBySourceRecord(source: "casetrak", localId: "1014") { id name { family } } }"#}))
                        .timeout(Duration::from_secs(30))
                        .send()
                        .and_then(|r| r.json::<Value>());
                    if let Ok(v) = r {
                        if v["data"]["personBySourceRecord"]["id"].is_string() {
                            let id = v["extensions"]["auditRequestId"].as_str().unwrap();
                            answered.lock().unwrap().push(id.to_string());
                        }
                    }
                }
            })
        })
        .collect();
    while sent.load(std::sync::atomic::Ordering::SeqCst) < 100 {
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(b.take()); // SIGKILL
    for c in clients {
        c.join().unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert!(
        answered.len() > 150,
        "the balancer kept answering: {}",
        answered.len()
    );
    let stored: std::collections::HashSet<String> =
        e.pg.psql(&e.app_url, "SELECT DISTINCT request_id FROM audit")
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
    let missing: Vec<_> = answered.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(missing.is_empty(), "answered but not audited: {missing:?}");
    let out = e.escr("a", &e.app_url, &["verify-audit"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("in 2 chains, every chain intact"), "{text}");
    // The check reads each chain a page at a time: in pages of 7 rows it finds the
    // same chains, events and verdicts as in one page.
    let url_file = e.dir.path().join("state-url-for-verify");
    std::fs::write(&url_file, &e.app_url).unwrap();
    let pg = escr_gateway::state::PgStore::new(&escr_gateway::state::PostgresConfig {
        url_env: None,
        url_file: Some(url_file),
        pool_size: 2,
        connect_timeout_ms: 3000,
        acquire_timeout_ms: 2000,
        statement_timeout_ms: 30_000,
    })
    .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let verdicts = |page: i64| -> Vec<(String, u64, bool)> {
        runtime
            .block_on(escr_gateway::consent::audit::verify_postgres_in_pages(
                &pg, page,
            ))
            .unwrap()
            .into_iter()
            .map(|c| {
                (
                    c.chain_id,
                    c.verification.records,
                    c.verification.first_break.is_none(),
                )
            })
            .collect()
    };
    let whole = verdicts(1_000_000);
    assert_eq!(verdicts(7), whole);
    assert!(whole.iter().map(|c| c.1).sum::<u64>() > 150, "{whole:?}");
    assert!(whole.iter().all(|c| c.2), "{whole:?}");

    // The database enforces append-only: the gateway's role may not change the audit,
    // and not even the owner may.
    let no =
        e.pg.psql(&e.app_url, "UPDATE audit SET role = 'x'")
            .unwrap_err();
    assert!(no.contains("permission denied"), "{no}");
    let no = e.pg.psql(&e.app_url, "DELETE FROM audit").unwrap_err();
    assert!(no.contains("permission denied"), "{no}");
    for sql in [
        "UPDATE audit SET role = 'x'",
        "DELETE FROM audit",
        "TRUNCATE audit CASCADE",
        "DELETE FROM consent_history",
    ] {
        let no = e.pg.psql(&e.owner_url, sql).unwrap_err();
        assert!(no.contains("is append-only"), "{sql}: {no}");
    }

    // The database goes away: not ready, and a request answers at once with a code
    // and no data; back, and A serves again without a restart.
    e.pg.down();
    let started = Instant::now();
    let ready = reqwest::blocking::get(format!("{base_a}/readyz")).unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().unwrap();
    assert_eq!(ready["state"]["up"], false, "{ready}");
    let r = post(
        &base_a,
        &lead,
        "safeguarding",
        q,
        json!({"s": "casetrak", "l": "1014"}),
    );
    assert!(r.get("data").is_none_or(Value::is_null), "{r}");
    assert_eq!(
        r["errors"][0]["extensions"]["code"], "AUDIT_UNAVAILABLE",
        "{r}"
    );
    // Not a hang: the pool's time limits answer long before a client gives up.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let out = e.escr("a", &e.app_url, &["check-config", "--connect"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        text.contains("[state.postgres]: state store unavailable"),
        "{text}"
    );
    e.pg.up();
    let started = Instant::now();
    while reqwest::blocking::get(format!("{base_a}/readyz"))
        .unwrap()
        .status()
        != 200
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "A did not recover"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let r = post(
        &base_a,
        &lead,
        "safeguarding",
        q,
        json!({"s": "casetrak", "l": "1014"}),
    );
    assert!(r["data"]["personBySourceRecord"]["id"].is_string(), "{r}");
    let out = e.escr("a", &e.app_url, &["verify-audit"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // A schema newer than the binary knows is refused.
    e.pg.psql(
        &e.owner_url,
        "INSERT INTO schema_version (version) VALUES (999)",
    )
    .unwrap();
    let out = e.escr("a", &e.owner_url, &["migrate-state"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!(
            "schema version 999 is newer than this gateway knows ({})",
            escr_gateway::state::postgres::known_version()
        )),
        "{err}"
    );
    drop(a);
}

#[test]
fn state_config_errors_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&demo::repo().join("config"), &dir.path().join("config"));
    let config = dir.path().join("config/escr.toml");
    let shipped = std::fs::read_to_string(&config).unwrap();
    let check = |fragment: &str| {
        std::fs::write(&config, format!("{shipped}\n{fragment}")).unwrap();
        let out = Command::new(escr_bin())
            .arg("--config")
            .arg(&config)
            .arg("check-config")
            .env_remove("ESCR_STATE_URL_UNSET")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{fragment}");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let line = shipped.lines().count() + 2;
    let text = check("[state]\nbackend = \"postgres\"\n");
    assert!(
        text.contains(&format!("escr.toml:{}", line + 1))
            && text.contains("needs a [state.postgres] section"),
        "{text}"
    );
    let text =
        check("[state]\nbackend = \"postgres\"\n[state.postgres]\nurl = \"postgres://u:p@h/d\"\n");
    assert!(text.contains("unknown field `url`"), "{text}");
    let text = check("[state]\nbackend = \"postgres\"\n[state.postgres]\nurl_env = \"ESCR_STATE_URL_UNSET\"\npool_size = 0\n");
    assert!(
        text.contains(&format!("escr.toml:{}", line + 4)) && text.contains("pool_size"),
        "{text}"
    );
    let text = check(
        "[state]\nbackend = \"postgres\"\n[state.postgres]\nurl_env = \"ESCR_STATE_URL_UNSET\"\n",
    );
    assert!(
        text.contains(&format!("escr.toml:{}", line + 3))
            && text.contains("ESCR_STATE_URL_UNSET, which is not set"),
        "{text}"
    );
    // Replicas must share the cursor key: one made at startup opens on one replica only.
    assert!(
        text.contains(&format!(
            "escr.toml:{}: [state] backend = \"postgres\" (replicas) needs [cursors] key_env or key_file",
            line + 1
        )),
        "{text}"
    );
    let text = check("[state]\nbackend = \"mongodb\"\n");
    assert!(text.contains("unknown variant `mongodb`"), "{text}");
}
