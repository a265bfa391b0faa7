//! The audit log: every release, denial and break-glass, append-only and hash-chained in
//! SQLite (WAL, synchronous=FULL) or in the PostgreSQL that replicas share. A response
//! is sent only after its events are committed, so a crash (even SIGKILL) never loses
//! an event of an answered request.
//!
//! Both backends group-commit: one writer takes every batch waiting, commits them in
//! one transaction (one fsync) and then answers each request. On PostgreSQL each
//! process run appends to a hash chain of its own (`audit_chain`), so replicas never
//! wait on each other for the previous hash; `verify_postgres` checks every chain.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use rusqlite::{params, Connection};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::consent::access::AccessContext;
use crate::consent::context::purpose_name;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("audit log: the writer stopped")]
    Stopped,
    #[error("audit log: write failed: {0}")]
    Write(String),
    #[error("audit log: {0}")]
    State(#[from] crate::state::StateError),
}

impl From<tokio_postgres::Error> for AuditError {
    fn from(e: tokio_postgres::Error) -> Self {
        AuditError::State(e.into())
    }
}

type Reply = tokio::sync::oneshot::Sender<Result<(), String>>;

/// One audit event as stored.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AuditEvent {
    pub seq: i64,
    pub request_id: String,
    pub at: String,
    pub user: String,
    pub role: String,
    pub organisation: Option<String>,
    pub purpose: String,
    pub person_id: Option<String>,
    /// Record kinds (entity names) concerned, comma separated.
    pub kinds: String,
    /// released, withheld, hidden, denied.
    pub decision: String,
    pub code: Option<String>,
    pub reason: Option<String>,
    pub break_glass_reason: Option<String>,
    /// The HTTP request's `X-Request-Id` (a router's, or the gateway's own), joining
    /// this event to the router's and the gateway's logs.
    pub http_request_id: Option<String>,
}

impl AuditEvent {
    /// The text the chain hashes: every field but seq, in a fixed order.
    fn canonical(&self) -> String {
        let mut fields = serde_json::json!([
            self.request_id,
            self.at,
            self.user,
            self.role,
            self.organisation,
            self.purpose,
            self.person_id,
            self.kinds,
            self.decision,
            self.code,
            self.reason,
            self.break_glass_reason
        ]);
        // Added later: hashed only when present, so older chains still verify.
        if let (Some(id), Some(list)) = (&self.http_request_id, fields.as_array_mut()) {
            list.push(serde_json::Value::String(id.clone()));
        }
        fields.to_string()
    }
}

fn chain(prev: &str, event: &AuditEvent) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(event.seq.to_string().as_bytes());
    h.update(b"\n");
    h.update(event.canonical().as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit (
  seq INTEGER PRIMARY KEY,
  request_id TEXT NOT NULL,
  at TEXT NOT NULL,
  user TEXT NOT NULL,
  role TEXT NOT NULL,
  organisation TEXT,
  purpose TEXT NOT NULL,
  person_id TEXT,
  kinds TEXT NOT NULL,
  decision TEXT NOT NULL,
  code TEXT,
  reason TEXT,
  break_glass_reason TEXT,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_person ON audit(person_id);
-- (http_request_id is added by `add_columns` to logs made before it existed.)
CREATE INDEX IF NOT EXISTS audit_request ON audit(request_id);
CREATE TRIGGER IF NOT EXISTS audit_append_only_u BEFORE UPDATE ON audit
  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_append_only_d BEFORE DELETE ON audit
  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
";

const COLUMNS: &str = "seq, request_id, at, user, role, organisation, purpose, person_id, kinds, decision, code, reason, break_glass_reason, http_request_id";

/// Columns added after the first schema, for logs written before them.
fn add_columns(conn: &Connection) -> Result<(), AuditError> {
    let has: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('audit') WHERE name = 'http_request_id'")?
        .exists([])?;
    if !has {
        conn.execute_batch("ALTER TABLE audit ADD COLUMN http_request_id TEXT")?;
    }
    Ok(())
}

fn row_to_event(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEvent> {
    Ok(AuditEvent {
        seq: r.get(0)?,
        request_id: r.get(1)?,
        at: r.get(2)?,
        user: r.get(3)?,
        role: r.get(4)?,
        organisation: r.get(5)?,
        purpose: r.get(6)?,
        person_id: r.get(7)?,
        kinds: r.get(8)?,
        decision: r.get(9)?,
        code: r.get(10)?,
        reason: r.get(11)?,
        break_glass_reason: r.get(12)?,
        http_request_id: r.get(13)?,
    })
}

pub struct AuditLog {
    store: Store,
    writer: Writer,
}

enum Store {
    /// For reads (trail, review); the writer thread has its own connection.
    Sqlite(Arc<Mutex<Connection>>),
    Postgres {
        pg: Arc<crate::state::PgStore>,
        chain_id: String,
    },
}

type Batch = (Vec<AuditEvent>, Reply);

enum Writer {
    Thread(std::sync::mpsc::Sender<Batch>),
    Task(tokio::sync::mpsc::UnboundedSender<Batch>),
}

/// The most batches one commit takes (a bound on one transaction's size).
const GROUP_MAX: usize = 512;

/// One group commit's work: the first batch and those already waiting (`next`), up to
/// `GROUP_MAX`, as one list of events and the requests to answer after the commit.
fn group(first: Batch, mut next: impl FnMut() -> Option<Batch>) -> (Vec<AuditEvent>, Vec<Reply>) {
    let (mut events, reply) = first;
    let mut replies = vec![reply];
    while replies.len() < GROUP_MAX {
        let Some((more, reply)) = next() else { break };
        events.extend(more);
        replies.push(reply);
    }
    (events, replies)
}

fn open_conn(path: &Path) -> Result<Connection, AuditError> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: the WAL is fsynced at every commit, before the response goes out.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

impl AuditLog {
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        let conn = open_conn(path)?;
        conn.execute_batch(SCHEMA)?;
        add_columns(&conn)?;
        let mut write_conn = open_conn(path)?;
        let (writer, batches) = std::sync::mpsc::channel::<Batch>();
        // Group commit: the writer takes every batch waiting, commits them in one
        // transaction (one fsync), then answers each request.
        std::thread::Builder::new()
            .name("escr-audit".into())
            .spawn(move || {
                while let Ok(first) = batches.recv() {
                    let (events, replies) = group(first, || batches.try_recv().ok());
                    let result = append_sync(&mut write_conn, events).map_err(|e| e.to_string());
                    for reply in replies {
                        let _ = reply.send(result.clone());
                    }
                }
            })
            .map_err(|e| AuditError::Write(e.to_string()))?;
        Ok(AuditLog {
            store: Store::Sqlite(Arc::new(Mutex::new(conn))),
            writer: Writer::Thread(writer),
        })
    }

    /// The log in the shared PostgreSQL: this process starts a chain of its own
    /// (`<replica>-<time>-<random>`), registered before its first event, and a writer
    /// task group-commits into it. Needs a Tokio runtime.
    pub async fn postgres(
        pg: Arc<crate::state::PgStore>,
        replica: &str,
    ) -> Result<AuditLog, AuditError> {
        let mut random = [0u8; 4];
        let _ = aws_lc_rs::rand::fill(&mut random);
        let chain_id = format!(
            "{replica}-{}-{}",
            Utc::now().format("%Y%m%dT%H%M%S"),
            random
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        pg.client()
            .await?
            .execute(
                "INSERT INTO audit_chain (chain_id, replica) VALUES ($1, $2)",
                &[&chain_id, &replica],
            )
            .await?;
        let (writer, mut batches) = tokio::sync::mpsc::unbounded_channel::<Batch>();
        let mut chain = PgChain {
            pg: pg.clone(),
            chain_id: chain_id.clone(),
            seq: 0,
            prev: GENESIS.to_string(),
            uncertain: false,
        };
        tokio::spawn(async move {
            while let Some(first) = batches.recv().await {
                let (events, replies) = group(first, || batches.try_recv().ok());
                let result = chain.append(events).await.map_err(|e| e.to_string());
                for reply in replies {
                    let _ = reply.send(result.clone());
                }
            }
        });
        tracing::info!(chain = %chain_id, "audit chain started");
        Ok(AuditLog {
            store: Store::Postgres { pg, chain_id },
            writer: Writer::Task(writer),
        })
    }

    /// This process's chain on PostgreSQL (none on SQLite, which has one chain).
    pub fn chain_id(&self) -> Option<&str> {
        match &self.store {
            Store::Sqlite(_) => None,
            Store::Postgres { chain_id, .. } => Some(chain_id),
        }
    }

    /// Append events and make them durable (committed and fsynced) before returning.
    pub async fn append(&self, events: Vec<AuditEvent>) -> Result<(), AuditError> {
        if events.is_empty() {
            return Ok(());
        }
        let (reply, done) = tokio::sync::oneshot::channel();
        match &self.writer {
            Writer::Thread(w) => w.send((events, reply)).map_err(|_| AuditError::Stopped)?,
            Writer::Task(w) => w.send((events, reply)).map_err(|_| AuditError::Stopped)?,
        }
        done.await
            .map_err(|_| AuditError::Stopped)?
            .map_err(AuditError::Write)
    }

    /// Events about one person, oldest first.
    pub async fn for_person(&self, person_id: &str) -> Result<Vec<AuditEvent>, AuditError> {
        self.query("person_id = ?1", Some(person_id)).await
    }

    /// Every break-glass use, for review.
    pub async fn break_glass(&self) -> Result<Vec<AuditEvent>, AuditError> {
        self.query("break_glass_reason IS NOT NULL", None).await
    }

    pub async fn for_request(&self, request_id: &str) -> Result<Vec<AuditEvent>, AuditError> {
        self.query("request_id = ?1", Some(request_id)).await
    }

    /// Events matching `filter` (SQLite's `?1` placeholder, PostgreSQL's `$1`).
    async fn query(&self, filter: &str, arg: Option<&str>) -> Result<Vec<AuditEvent>, AuditError> {
        match &self.store {
            Store::Sqlite(conn) => {
                let sql = format!("SELECT {COLUMNS} FROM audit WHERE {filter} ORDER BY seq");
                let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = match arg {
                    Some(a) => stmt
                        .query_map([a], row_to_event)?
                        .collect::<Result<Vec<_>, _>>()?,
                    None => stmt
                        .query_map([], row_to_event)?
                        .collect::<Result<Vec<_>, _>>()?,
                };
                Ok(rows)
            }
            Store::Postgres { pg, .. } => {
                // `seq` as read is the global order of commits (`id`), one sequence over
                // every replica's chain.
                let sql = format!(
                    "SELECT {PG_COLUMNS} FROM audit WHERE {} ORDER BY id",
                    filter.replace("?1", "$1")
                );
                let client = pg.client().await?;
                let rows = match arg {
                    Some(a) => client.query(&sql, &[&a]).await?,
                    None => client.query(&sql, &[]).await?,
                };
                Ok(rows.iter().map(pg_row_to_event).collect())
            }
        }
    }
}

/// The columns as PostgreSQL names them (`user` and `at` are keywords there).
const PG_COLUMNS: &str = "id, request_id, \"at\", \"user\", role, organisation, purpose, person_id, kinds, decision, code, reason, break_glass_reason, http_request_id";

fn pg_row_to_event(r: &tokio_postgres::Row) -> AuditEvent {
    AuditEvent {
        seq: r.get(0),
        request_id: r.get(1),
        at: r.get(2),
        user: r.get(3),
        role: r.get(4),
        organisation: r.get(5),
        purpose: r.get(6),
        person_id: r.get(7),
        kinds: r.get(8),
        decision: r.get(9),
        code: r.get(10),
        reason: r.get(11),
        break_glass_reason: r.get(12),
        http_request_id: r.get(13),
    }
}

/// This process's chain on PostgreSQL: the last committed (seq, hash), kept by its one
/// writer task.
struct PgChain {
    pg: Arc<crate::state::PgStore>,
    chain_id: String,
    seq: i64,
    prev: String,
    /// A commit failed: it may have happened all the same (the connection was lost
    /// after COMMIT was sent), so the chain's end is read back before the next one.
    uncertain: bool,
}

impl PgChain {
    async fn append(&mut self, events: Vec<AuditEvent>) -> Result<(), AuditError> {
        let result = self.try_append(events).await;
        self.uncertain = result.is_err();
        result
    }

    async fn try_append(&mut self, events: Vec<AuditEvent>) -> Result<(), AuditError> {
        let mut client = self.pg.client().await?;
        if self.uncertain {
            if let Some(row) = client
                .query_opt(
                    "SELECT seq, hash FROM audit WHERE chain_id = $1 ORDER BY seq DESC LIMIT 1",
                    &[&self.chain_id],
                )
                .await?
            {
                self.seq = row.get(0);
                self.prev = row.get(1);
            }
        }
        let tx = client.transaction().await?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO audit (chain_id, seq, request_id, \"at\", \"user\", role, organisation, purpose, person_id, kinds, decision, code, reason, break_glass_reason, http_request_id, prev_hash, hash)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
            )
            .await?;
        let (mut seq, mut prev) = (self.seq, self.prev.clone());
        for mut e in events {
            seq += 1;
            e.seq = seq;
            let hash = chain(&prev, &e);
            tx.execute(
                &insert,
                &[
                    &self.chain_id,
                    &e.seq,
                    &e.request_id,
                    &e.at,
                    &e.user,
                    &e.role,
                    &e.organisation,
                    &e.purpose,
                    &e.person_id,
                    &e.kinds,
                    &e.decision,
                    &e.code,
                    &e.reason,
                    &e.break_glass_reason,
                    &e.http_request_id,
                    &prev,
                    &hash,
                ],
            )
            .await?;
            prev = hash;
        }
        tx.commit().await?;
        self.seq = seq;
        self.prev = prev;
        Ok(())
    }
}

/// One chain's check on PostgreSQL.
#[derive(Debug)]
pub struct ChainVerification {
    pub chain_id: String,
    pub replica: String,
    pub verification: Verification,
}

/// Audit rows `verify_postgres` reads per statement.
const VERIFY_PAGE: i64 = 10_000;

/// Recompute every chain of the shared log from its start, oldest chain first.
pub async fn verify_postgres(
    pg: &crate::state::PgStore,
) -> Result<Vec<ChainVerification>, AuditError> {
    verify_postgres_in_pages(pg, VERIFY_PAGE).await
}

/// [`verify_postgres`], reading `page` rows per statement (tests use small pages).
pub async fn verify_postgres_in_pages(
    pg: &crate::state::PgStore,
    page: i64,
) -> Result<Vec<ChainVerification>, AuditError> {
    let client = pg.client().await?;
    let chains = client
        .query(
            "SELECT chain_id, replica FROM audit_chain ORDER BY started_at, chain_id",
            &[],
        )
        .await?;
    let mut out = Vec::new();
    for c in chains {
        let chain_id: String = c.get(0);
        // A page of the chain at a time (keyset on its own sequence): a chain holds
        // every release since its replica started, far more than memory should.
        let mut check = ChainCheck::default();
        let mut after = i64::MIN;
        'pages: loop {
            let rows = client
                .query(
                    "SELECT seq, request_id, \"at\", \"user\", role, organisation, purpose, person_id, kinds, decision, code, reason, break_glass_reason, http_request_id, prev_hash, hash FROM audit WHERE chain_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                    &[&chain_id, &after, &page],
                )
                .await?;
            for r in &rows {
                let e = pg_row_to_event(r);
                if !check.next(&e, r.get(14), r.get(15)) {
                    break 'pages;
                }
                after = r.get(0);
            }
            if (rows.len() as i64) < page {
                break;
            }
        }
        out.push(ChainVerification {
            chain_id,
            replica: c.get(1),
            verification: check.result(),
        });
    }
    // Events of a chain nobody registered (the foreign key makes this impossible unless
    // someone altered the schema) would escape the loop above: count them as a break.
    let stray: i64 = client
        .query_one(
            "SELECT count(*) FROM audit WHERE chain_id NOT IN (SELECT chain_id FROM audit_chain)",
            &[],
        )
        .await?
        .get(0);
    if stray > 0 {
        out.push(ChainVerification {
            chain_id: "(unregistered)".into(),
            replica: String::new(),
            verification: Verification {
                events: stray as u64,
                first_break: Some((0, "events of a chain that is not registered".into())),
            },
        });
    }
    Ok(out)
}

fn append_sync(conn: &mut Connection, events: Vec<AuditEvent>) -> Result<(), AuditError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let (mut seq, mut prev): (i64, String) = tx
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap_or((0, GENESIS.to_string()));
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO audit (seq, request_id, at, user, role, organisation, purpose, person_id, kinds, decision, code, reason, break_glass_reason, prev_hash, hash, http_request_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        )?;
        for mut e in events {
            seq += 1;
            e.seq = seq;
            let hash = chain(&prev, &e);
            insert.execute(params![
                e.seq,
                e.request_id,
                e.at,
                e.user,
                e.role,
                e.organisation,
                e.purpose,
                e.person_id,
                e.kinds,
                e.decision,
                e.code,
                e.reason,
                e.break_glass_reason,
                prev,
                hash,
                e.http_request_id
            ])?;
            prev = hash;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The result of checking the chain.
#[derive(Debug, PartialEq, Eq)]
pub struct Verification {
    pub events: u64,
    /// The first broken event and why.
    pub first_break: Option<(i64, String)>,
}

/// Walks one chain in order: the first event that does not fit stops it.
struct ChainCheck {
    prev: String,
    expected_seq: i64,
    events: u64,
    first_break: Option<(i64, String)>,
}

impl Default for ChainCheck {
    fn default() -> Self {
        ChainCheck {
            prev: GENESIS.to_string(),
            expected_seq: 1,
            events: 0,
            first_break: None,
        }
    }
}

impl ChainCheck {
    /// False once the chain is broken.
    fn next(&mut self, e: &AuditEvent, stored_prev: String, stored_hash: String) -> bool {
        self.events += 1;
        let broken = if e.seq != self.expected_seq {
            Some(format!(
                "expected event {}, found {} (events removed)",
                self.expected_seq, e.seq
            ))
        } else if stored_prev != self.prev {
            Some("its link to the previous event does not match".to_string())
        } else if chain(&self.prev, e) != stored_hash {
            Some("its content does not match its hash (altered)".to_string())
        } else {
            None
        };
        if let Some(why) = broken {
            self.first_break = Some((e.seq, why));
            return false;
        }
        self.prev = stored_hash;
        self.expected_seq += 1;
        true
    }

    fn result(self) -> Verification {
        Verification {
            events: self.events,
            first_break: self.first_break,
        }
    }
}

/// Recompute the chain from the start; report the first event that does not fit.
pub fn verify(path: &Path) -> Result<Verification, AuditError> {
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS}, prev_hash, hash FROM audit ORDER BY seq"
    ))?;
    let mut rows = stmt.query([])?;
    let mut check = ChainCheck::default();
    while let Some(r) = rows.next()? {
        let e = row_to_event(r)?;
        if !check.next(&e, r.get(14)?, r.get(15)?) {
            break;
        }
    }
    Ok(check.result())
}

/// (person, decision, code, reason): one audit event each, listing the record kinds.
type EntryKey = (Option<String>, String, Option<String>, Option<String>);

/// Decisions of one request, gathered by the resolvers and written before the
/// response is sent.
pub struct RequestAudit {
    pub request_id: String,
    /// The HTTP request's `X-Request-Id`, when it came over HTTP.
    pub http_request_id: Option<String>,
    /// (person, decision, code, reason) -> kinds
    entries: Mutex<BTreeMap<EntryKey, BTreeSet<String>>>,
}

impl RequestAudit {
    pub fn new() -> RequestAudit {
        let mut id = [0u8; 16];
        // An id that cannot be guessed or collide across restarts.
        let _ = aws_lc_rs::rand::fill(&mut id);
        RequestAudit {
            request_id: id.iter().map(|b| format!("{b:02x}")).collect(),
            http_request_id: None,
            entries: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn note(
        &self,
        person_id: Option<&str>,
        decision: &str,
        code: Option<&str>,
        reason: Option<&str>,
        kind: &str,
    ) {
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        e.entry((
            person_id.map(str::to_string),
            decision.to_string(),
            code.map(str::to_string),
            reason.map(str::to_string),
        ))
        .or_default()
        .insert(kind.to_string());
    }

    pub fn is_empty(&self) -> bool {
        self.entries.lock().map(|e| e.is_empty()).unwrap_or(false)
    }

    /// The events to store for this request.
    pub fn events(&self, ctx: &AccessContext) -> Vec<AuditEvent> {
        let at = Utc::now()
            .naive_utc()
            .format("%Y-%m-%dT%H:%M:%S%.6f")
            .to_string();
        let e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        e.iter()
            .map(|((person, decision, code, reason), kinds)| AuditEvent {
                seq: 0,
                request_id: self.request_id.clone(),
                at: at.clone(),
                user: ctx.user.clone(),
                role: ctx.role.clone(),
                organisation: ctx.organisation.clone(),
                purpose: purpose_name(ctx.purpose).to_string(),
                person_id: person.clone(),
                kinds: kinds.iter().cloned().collect::<Vec<_>>().join(","),
                decision: decision.clone(),
                code: code.clone(),
                reason: reason.clone(),
                break_glass_reason: ctx.break_glass_reason.clone(),
                http_request_id: self.http_request_id.clone(),
            })
            .collect()
    }
}

impl Default for RequestAudit {
    fn default() -> Self {
        Self::new()
    }
}

/// An event for a request refused before any data was looked at.
pub fn refusal(request_id: &str, user: &str, code: &str, reason: &str) -> AuditEvent {
    AuditEvent {
        seq: 0,
        request_id: request_id.to_string(),
        at: Utc::now()
            .naive_utc()
            .format("%Y-%m-%dT%H:%M:%S%.6f")
            .to_string(),
        user: user.to_string(),
        role: String::new(),
        organisation: None,
        purpose: String::new(),
        person_id: None,
        kinds: String::new(),
        decision: "denied".into(),
        code: Some(code.to_string()),
        reason: Some(reason.to_string()),
        break_glass_reason: None,
        http_request_id: None,
    }
}
