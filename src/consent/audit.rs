//! The audit log: every release, denial and break-glass, append-only and hash-chained in
//! SQLite (WAL, synchronous=FULL) or in the PostgreSQL that replicas share. A response
//! is sent only after its record is committed, so a crash (even SIGKILL) never loses
//! the audit of an answered request.
//!
//! One record per request (`AuditRecord`): who asked (user, role, organisation), why
//! (purpose, break-glass reason), when, and its decisions grouped as (decision, code,
//! reason, record kinds) -> the people they concern, their ids written once and without
//! the prefix they share. `audit_subject` indexes the people (on SQLite by a key into
//! `audit_people`, each id stored once) so that a person's trail is one lookup. Logs written before per-request
//! records (one row per person and decision) are read and verified as they were.
//!
//! Both backends group-commit: one writer takes every record waiting, commits them in
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
    #[error("audit log: record {0} cannot be read (run `escr verify-audit`)")]
    Unreadable(i64),
    #[error("audit log: {0}")]
    State(#[from] crate::state::StateError),
}

impl From<tokio_postgres::Error> for AuditError {
    fn from(e: tokio_postgres::Error) -> Self {
        AuditError::State(e.into())
    }
}

type Reply = tokio::sync::oneshot::Sender<Result<(), String>>;

/// One decision about one person (or about no person: a refusal, an aggregate
/// release), as readers see it: a stored record yields one per person it names.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AuditEvent {
    /// The stored record's sequence number (shared by the events of one request).
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

/// One group of a request's decisions: the same decision, code, reason and record
/// kinds for each person in `persons` (none: a decision about no person).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Decision {
    pub decision: String,
    pub code: Option<String>,
    pub reason: Option<String>,
    /// Record kinds (entity names), comma separated.
    pub kinds: String,
    pub persons: Vec<String>,
}

/// Stored as a JSON array of arrays (no field names: this is most of the record).
type DecisionTuple = (String, Option<String>, Option<String>, String, Vec<String>);

/// The stored form of a record's decisions: `[prefix, [tuple, ...]]`, each person id
/// written without the prefix all of them share (`escr:<namespace>:<authority>:`), so
/// that twenty people cost little more than their twenty short ids.
fn encode_decisions(decisions: &[Decision]) -> String {
    let prefix = shared_prefix(decisions.iter().flat_map(|d| d.persons.iter()));
    let tuples: Vec<DecisionTuple> = decisions
        .iter()
        .map(|d| {
            (
                d.decision.clone(),
                d.code.clone(),
                d.reason.clone(),
                d.kinds.clone(),
                d.persons
                    .iter()
                    .map(|p| p[prefix.len()..].to_string())
                    .collect(),
            )
        })
        .collect();
    serde_json::to_string(&(prefix, tuples)).unwrap_or_else(|_| "[\"\",[]]".into())
}

/// [`encode_decisions`] undone: none when the text is not in that form.
fn decode_decisions(json: &str) -> Option<Vec<Decision>> {
    let (prefix, tuples): (String, Vec<DecisionTuple>) = serde_json::from_str(json).ok()?;
    Some(
        tuples
            .into_iter()
            .map(|(decision, code, reason, kinds, persons)| Decision {
                decision,
                code,
                reason,
                kinds,
                persons: persons
                    .into_iter()
                    .map(|p| format!("{prefix}{p}"))
                    .collect(),
            })
            .collect(),
    )
}

/// The people a record's decisions name, each once (what its person index holds).
fn subjects(decisions: &[Decision]) -> BTreeSet<&str> {
    decisions
        .iter()
        .flat_map(|d| d.persons.iter().map(String::as_str))
        .collect()
}

/// The longest prefix every id shares, up to and including a `:` (ids are never cut
/// inside a segment, so the stored text stays readable).
fn shared_prefix<'a>(mut ids: impl Iterator<Item = &'a String>) -> String {
    let Some(first) = ids.next() else {
        return String::new();
    };
    let mut len = first.len();
    for id in ids {
        len = first
            .bytes()
            .zip(id.bytes())
            .take(len)
            .take_while(|(a, b)| a == b)
            .count();
    }
    match first[..len].rfind(':') {
        Some(colon) => first[..=colon].to_string(),
        None => String::new(),
    }
}

/// What one request did, as stored: one record per request.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditRecord {
    pub request_id: String,
    pub at: String,
    pub user: String,
    pub role: String,
    pub organisation: Option<String>,
    pub purpose: String,
    pub break_glass_reason: Option<String>,
    pub http_request_id: Option<String>,
    pub decisions: Vec<Decision>,
}

impl AuditRecord {
    /// The stored row: the per-event columns hold a marker, the decisions their JSON.
    fn row(&self) -> Row {
        let event = AuditEvent {
            seq: 0,
            request_id: self.request_id.clone(),
            at: self.at.clone(),
            user: self.user.clone(),
            role: self.role.clone(),
            organisation: self.organisation.clone(),
            purpose: self.purpose.clone(),
            person_id: None,
            kinds: String::new(),
            decision: REQUEST_ROW.into(),
            code: None,
            reason: None,
            break_glass_reason: self.break_glass_reason.clone(),
            http_request_id: self.http_request_id.clone(),
        };
        Row {
            event,
            decisions: Some(encode_decisions(&self.decisions)),
        }
    }

    /// The people this record names, each once.
    fn subjects(&self) -> BTreeSet<&str> {
        subjects(&self.decisions)
    }

    /// Events per person and decision (what `escr_decisions_total` counts).
    pub fn event_count(decision: &Decision) -> u64 {
        decision.persons.len().max(1) as u64
    }
}

/// The `decision` column of a per-request row.
const REQUEST_ROW: &str = "request";

/// One stored row, either form: a per-person event (older logs: `decisions` is None)
/// or a per-request record.
#[derive(Clone, Debug)]
struct Row {
    /// The columns an event has (a per-request row: `person_id` none, `kinds` empty,
    /// `decision` "request").
    event: AuditEvent,
    /// A per-request row's decisions ([`encode_decisions`]).
    decisions: Option<String>,
}

impl Row {
    /// The text the chain hashes: every column but seq, in a fixed order.
    fn canonical(&self) -> String {
        let e = &self.event;
        let mut fields = serde_json::json!([
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
            e.break_glass_reason
        ]);
        if let Some(list) = fields.as_array_mut() {
            match &self.decisions {
                // Older per-person rows: http_request_id was added later and is hashed
                // only when present (12 or 13 elements), so their chains still verify.
                None => {
                    if let Some(id) = &e.http_request_id {
                        list.push(serde_json::Value::String(id.clone()));
                    }
                }
                // Per-request rows: always 14 elements, so neither column can pass
                // for the other.
                Some(decisions) => {
                    list.push(serde_json::json!(e.http_request_id));
                    list.push(serde_json::Value::String(decisions.clone()));
                }
            }
        }
        fields.to_string()
    }

    /// The events this row stands for; with `only`, those about that person.
    fn events(self, only: Option<&str>) -> Result<Vec<AuditEvent>, AuditError> {
        let Some(json) = &self.decisions else {
            if only.is_some_and(|p| self.event.person_id.as_deref() != Some(p)) {
                return Ok(Vec::new());
            }
            return Ok(vec![self.event]);
        };
        let event = |person_id: Option<String>, d: Decision| AuditEvent {
            person_id,
            kinds: d.kinds,
            decision: d.decision,
            code: d.code,
            reason: d.reason,
            ..self.event.clone()
        };
        let decisions = decode_decisions(json).ok_or(AuditError::Unreadable(self.event.seq))?;
        let mut out = Vec::new();
        for mut d in decisions {
            let persons = std::mem::take(&mut d.persons);
            if persons.is_empty() {
                if only.is_none() {
                    out.push(event(None, d));
                }
                continue;
            }
            for p in persons {
                if only.is_none_or(|o| o == p) {
                    out.push(event(Some(p), d.clone()));
                }
            }
        }
        Ok(out)
    }
}

fn chain(prev: &str, row: &Row) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(row.event.seq.to_string().as_bytes());
    h.update(b"\n");
    h.update(row.canonical().as_bytes());
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
-- (http_request_id and decisions are added by `add_columns` to logs made before them.)
CREATE INDEX IF NOT EXISTS audit_request ON audit(request_id);
CREATE TRIGGER IF NOT EXISTS audit_append_only_u BEFORE UPDATE ON audit
  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_append_only_d BEFORE DELETE ON audit
  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
-- The people each per-request record names (an index: the record's hashed
-- `decisions` is what counts; `verify` checks the two agree). Each person id is
-- stored once, in `audit_people`; an entry is two integers.
CREATE TABLE IF NOT EXISTS audit_people (
  key INTEGER PRIMARY KEY,
  person_id TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS audit_subject (
  person_key INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  PRIMARY KEY (person_key, seq)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS audit_person_append_only_u BEFORE UPDATE ON audit_people
  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_person_append_only_d BEFORE DELETE ON audit_people
  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_subject_append_only_u BEFORE UPDATE ON audit_subject
  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_subject_append_only_d BEFORE DELETE ON audit_subject
  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
";

const COLUMNS: &str = "seq, request_id, at, user, role, organisation, purpose, person_id, kinds, decision, code, reason, break_glass_reason, http_request_id, decisions";

/// Columns added after the first schema, for logs written before them.
fn add_columns(conn: &Connection) -> Result<(), AuditError> {
    for column in ["http_request_id", "decisions"] {
        let has: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('audit') WHERE name = ?1")?
            .exists([column])?;
        if !has {
            conn.execute_batch(&format!("ALTER TABLE audit ADD COLUMN {column} TEXT"))?;
        }
    }
    Ok(())
}

fn sqlite_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        event: AuditEvent {
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
        },
        decisions: r.get(14)?,
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

type Batch = (AuditRecord, Reply);

enum Writer {
    Thread(std::sync::mpsc::Sender<Batch>),
    Task(tokio::sync::mpsc::UnboundedSender<Batch>),
}

/// How often the SQLite log's WAL is checkpointed (off the commit path).
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// The most records one commit takes (a bound on one transaction's size).
const GROUP_MAX: usize = 512;

/// One group commit's work: the first record and those already waiting (`next`), up
/// to `GROUP_MAX`, and the requests to answer after the commit.
fn group(first: Batch, mut next: impl FnMut() -> Option<Batch>) -> (Vec<AuditRecord>, Vec<Reply>) {
    let (record, reply) = first;
    let (mut records, mut replies) = (vec![record], vec![reply]);
    while replies.len() < GROUP_MAX {
        let Some((more, reply)) = next() else { break };
        records.push(more);
        replies.push(reply);
    }
    (records, replies)
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
        // Checkpoints (copying the WAL into the database file, with fsyncs of their own)
        // run on a thread of their own, not inside a commit that requests wait on. The
        // checkpointer stops when the writer does (its channel closes).
        write_conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let (writer_alive, writer_gone) = std::sync::mpsc::channel::<()>();
        let checkpoint_conn = open_conn(path)?;
        std::thread::Builder::new()
            .name("escr-audit-checkpoint".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    writer_gone.recv_timeout(CHECKPOINT_EVERY)
                {
                    if let Err(e) =
                        checkpoint_conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %e, "audit checkpoint failed (retried)");
                    }
                }
            })
            .map_err(|e| AuditError::Write(e.to_string()))?;
        // Group commit: the writer takes every record waiting, commits them in one
        // transaction (one fsync), then answers each request.
        std::thread::Builder::new()
            .name("escr-audit".into())
            .spawn(move || {
                let _writer_alive = writer_alive;
                while let Ok(first) = batches.recv() {
                    let (records, replies) = group(first, || batches.try_recv().ok());
                    let result = append_sync(&mut write_conn, &records).map_err(|e| e.to_string());
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
    /// (`<replica>-<time>-<random>`), registered before its first record, and a writer
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
                let (records, replies) = group(first, || batches.try_recv().ok());
                let result = chain.append(&records).await.map_err(|e| e.to_string());
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

    /// Append a request's record and make it durable (committed and fsynced) before
    /// returning.
    pub async fn append(&self, record: AuditRecord) -> Result<(), AuditError> {
        let (reply, done) = tokio::sync::oneshot::channel();
        match &self.writer {
            Writer::Thread(w) => w.send((record, reply)).map_err(|_| AuditError::Stopped)?,
            Writer::Task(w) => w.send((record, reply)).map_err(|_| AuditError::Stopped)?,
        }
        done.await
            .map_err(|_| AuditError::Stopped)?
            .map_err(AuditError::Write)
    }

    /// [`AuditLog::append`] of a request's record, if the request decided anything.
    pub async fn append_request(
        &self,
        audit: &RequestAudit,
        ctx: &AccessContext,
    ) -> Result<(), AuditError> {
        match audit.record(ctx) {
            Some(record) => self.append(record).await,
            None => Ok(()),
        }
    }

    /// Events about one person, oldest first.
    pub async fn for_person(&self, person_id: &str) -> Result<Vec<AuditEvent>, AuditError> {
        let filter = match self.store {
            Store::Sqlite(_) => {
                "person_id = ?1 OR seq IN (SELECT s.seq FROM audit_subject s JOIN audit_people p ON p.key = s.person_key WHERE p.person_id = ?1)"
            }
            Store::Postgres { .. } => {
                "person_id = ?1 OR id IN (SELECT audit_id FROM audit_subject WHERE person_id = ?1)"
            }
        };
        self.query(filter, Some(person_id), Some(person_id)).await
    }

    /// Every break-glass use, for review.
    pub async fn break_glass(&self) -> Result<Vec<AuditEvent>, AuditError> {
        self.query("break_glass_reason IS NOT NULL", None, None)
            .await
    }

    pub async fn for_request(&self, request_id: &str) -> Result<Vec<AuditEvent>, AuditError> {
        self.query("request_id = ?1", Some(request_id), None).await
    }

    /// Events of the rows matching `filter` (SQLite's `?1` placeholder, PostgreSQL's
    /// `$1`), those about `only` when given.
    async fn query(
        &self,
        filter: &str,
        arg: Option<&str>,
        only: Option<&str>,
    ) -> Result<Vec<AuditEvent>, AuditError> {
        let rows = match &self.store {
            Store::Sqlite(conn) => {
                let sql = format!("SELECT {COLUMNS} FROM audit WHERE {filter} ORDER BY seq");
                let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
                let mut stmt = conn.prepare_cached(&sql)?;
                match arg {
                    Some(a) => stmt
                        .query_map([a], sqlite_row)?
                        .collect::<Result<Vec<_>, _>>()?,
                    None => stmt
                        .query_map([], sqlite_row)?
                        .collect::<Result<Vec<_>, _>>()?,
                }
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
                rows.iter().map(pg_row).collect()
            }
        };
        expand(rows, only)
    }
}

/// Every event of a SQLite log, oldest first (tests and tools read a log another
/// process writes).
pub fn events_in(path: &Path) -> Result<Vec<AuditEvent>, AuditError> {
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM audit ORDER BY seq"))?;
    let rows = stmt
        .query_map([], sqlite_row)?
        .collect::<Result<Vec<_>, _>>()?;
    expand(rows, None)
}

/// The events of stored rows, in order; with `only`, those about that person.
fn expand(rows: Vec<Row>, only: Option<&str>) -> Result<Vec<AuditEvent>, AuditError> {
    let mut events = Vec::new();
    for row in rows {
        events.extend(row.events(only)?);
    }
    Ok(events)
}

/// The columns as PostgreSQL names them (`user` and `at` are keywords there).
const PG_COLUMNS: &str = "id, request_id, \"at\", \"user\", role, organisation, purpose, person_id, kinds, decision, code, reason, break_glass_reason, http_request_id, decisions";

fn pg_row(r: &tokio_postgres::Row) -> Row {
    Row {
        event: AuditEvent {
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
        },
        decisions: r.get(14),
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
    async fn append(&mut self, records: &[AuditRecord]) -> Result<(), AuditError> {
        let result = self.try_append(records).await;
        self.uncertain = result.is_err();
        result
    }

    async fn try_append(&mut self, records: &[AuditRecord]) -> Result<(), AuditError> {
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
                "INSERT INTO audit (chain_id, seq, request_id, \"at\", \"user\", role, organisation, purpose, person_id, kinds, decision, code, reason, break_glass_reason, http_request_id, decisions, prev_hash, hash)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) RETURNING id",
            )
            .await?;
        let subjects = tx
            .prepare_cached(
                "INSERT INTO audit_subject (person_id, audit_id) SELECT unnest($1::text[]), $2",
            )
            .await?;
        let (mut seq, mut prev) = (self.seq, self.prev.clone());
        for record in records {
            let mut e = record.row();
            seq += 1;
            e.event.seq = seq;
            let hash = chain(&prev, &e);
            let id: i64 = tx
                .query_one(
                    &insert,
                    &[
                        &self.chain_id,
                        &e.event.seq,
                        &e.event.request_id,
                        &e.event.at,
                        &e.event.user,
                        &e.event.role,
                        &e.event.organisation,
                        &e.event.purpose,
                        &e.event.person_id,
                        &e.event.kinds,
                        &e.event.decision,
                        &e.event.code,
                        &e.event.reason,
                        &e.event.break_glass_reason,
                        &e.event.http_request_id,
                        &e.decisions,
                        &prev,
                        &hash,
                    ],
                )
                .await?
                .get(0);
            let people: Vec<&str> = record.subjects().into_iter().collect();
            if !people.is_empty() {
                tx.execute(&subjects, &[&people, &id]).await?;
            }
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
                    "SELECT seq, request_id, \"at\", \"user\", role, organisation, purpose, person_id, kinds, decision, code, reason, break_glass_reason, http_request_id, decisions, prev_hash, hash FROM audit WHERE chain_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                    &[&chain_id, &after, &page],
                )
                .await?;
            for r in &rows {
                let e = pg_row(r);
                if !check.next(&e, r.get(15), r.get(16)) {
                    break 'pages;
                }
                after = r.get(0);
            }
            if (rows.len() as i64) < page {
                break;
            }
        }
        // The person index agrees with the chained records (a missing entry would
        // hide a release from that person's trail).
        if check.first_break.is_none() {
            let r = client
                .query_one(
                    "SELECT count(*), count(*) FILTER (WHERE NOT EXISTS (
                        SELECT 1 FROM jsonb_array_elements(COALESCE(a.decisions, '[\"\",[]]')::jsonb -> 1) d,
                                      jsonb_array_elements_text(d->4) p
                        WHERE (a.decisions::jsonb ->> 0) || p = s.person_id))
                     FROM audit_subject s JOIN audit a ON a.id = s.audit_id WHERE a.chain_id = $1",
                    &[&chain_id],
                )
                .await?;
            let (indexed, foreign): (i64, i64) = (r.get(0), r.get(1));
            check.check_subjects(indexed as u64, foreign as u64);
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
                records: stray as u64,
                first_break: Some((0, "records of a chain that is not registered".into())),
            },
        });
    }
    Ok(out)
}

fn append_sync(conn: &mut Connection, records: &[AuditRecord]) -> Result<(), AuditError> {
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
            "INSERT INTO audit (seq, request_id, at, user, role, organisation, purpose, person_id, kinds, decision, code, reason, break_glass_reason, prev_hash, hash, http_request_id, decisions)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
        )?;
        let mut person =
            tx.prepare_cached("INSERT OR IGNORE INTO audit_people (person_id) VALUES (?1)")?;
        let mut subject = tx.prepare_cached(
            "INSERT INTO audit_subject (person_key, seq) SELECT key, ?2 FROM audit_people WHERE person_id = ?1",
        )?;
        for record in records {
            let mut e = record.row();
            seq += 1;
            e.event.seq = seq;
            let hash = chain(&prev, &e);
            insert.execute(params![
                e.event.seq,
                e.event.request_id,
                e.event.at,
                e.event.user,
                e.event.role,
                e.event.organisation,
                e.event.purpose,
                e.event.person_id,
                e.event.kinds,
                e.event.decision,
                e.event.code,
                e.event.reason,
                e.event.break_glass_reason,
                prev,
                hash,
                e.event.http_request_id,
                e.decisions
            ])?;
            for id in record.subjects() {
                person.execute([id])?;
                subject.execute(params![id, seq])?;
            }
            prev = hash;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The result of checking the chain.
#[derive(Debug, PartialEq, Eq)]
pub struct Verification {
    /// Rows checked (per-request records, and per-person events of older logs).
    pub records: u64,
    /// The first broken row and why.
    pub first_break: Option<(i64, String)>,
}

/// Walks one chain in order: the first row that does not fit stops it.
struct ChainCheck {
    prev: String,
    expected_seq: i64,
    records: u64,
    /// Person index entries the records call for.
    subjects: u64,
    first_break: Option<(i64, String)>,
}

impl Default for ChainCheck {
    fn default() -> Self {
        ChainCheck {
            prev: GENESIS.to_string(),
            expected_seq: 1,
            records: 0,
            subjects: 0,
            first_break: None,
        }
    }
}

impl ChainCheck {
    /// False once the chain is broken.
    fn next(&mut self, e: &Row, stored_prev: String, stored_hash: String) -> bool {
        self.records += 1;
        let broken = if e.event.seq != self.expected_seq {
            Some(format!(
                "expected record {}, found {} (records removed)",
                self.expected_seq, e.event.seq
            ))
        } else if stored_prev != self.prev {
            Some("its link to the previous record does not match".to_string())
        } else if chain(&self.prev, e) != stored_hash {
            Some("its content does not match its hash (altered)".to_string())
        } else {
            None
        };
        let broken = broken.or_else(|| match &e.decisions {
            None => None,
            Some(json) => match decode_decisions(json) {
                Some(decisions) => {
                    self.subjects += subjects(&decisions).len() as u64;
                    None
                }
                None => Some("its decisions cannot be read".to_string()),
            },
        });
        if let Some(why) = broken {
            self.first_break = Some((e.event.seq, why));
            return false;
        }
        self.prev = stored_hash;
        self.expected_seq += 1;
        true
    }

    /// The person index holds `indexed` entries, `foreign` of them naming a person
    /// their record does not: with none foreign and the count equal (entries are
    /// unique), the index is exactly the people the records name.
    fn check_subjects(&mut self, indexed: u64, foreign: u64) {
        if self.first_break.is_none() && foreign > 0 {
            self.first_break = Some((
                0,
                format!("{foreign} person index entries name a person their record does not"),
            ));
        }
        if self.first_break.is_none() && indexed != self.subjects {
            self.first_break = Some((
                0,
                format!(
                    "the person index holds {indexed} entries, the records name {} (a trail would be incomplete)",
                    self.subjects
                ),
            ));
        }
    }

    fn result(self) -> Verification {
        Verification {
            records: self.records,
            first_break: self.first_break,
        }
    }
}

/// Recompute the chain from the start; report the first row that does not fit.
pub fn verify(path: &Path) -> Result<Verification, AuditError> {
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    // A log no gateway of this version has opened yet lacks the added columns.
    let mut columns = COLUMNS.to_string();
    for added in ["http_request_id", "decisions"] {
        let has: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('audit') WHERE name = ?1")?
            .exists([added])?;
        if !has {
            columns = columns.replace(&format!(", {added}"), ", NULL");
        }
    }
    let mut stmt = conn.prepare(&format!(
        "SELECT {columns}, prev_hash, hash FROM audit ORDER BY seq"
    ))?;
    let mut rows = stmt.query([])?;
    let mut check = ChainCheck::default();
    while let Some(r) = rows.next()? {
        let e = sqlite_row(r)?;
        if !check.next(&e, r.get(15)?, r.get(16)?) {
            break;
        }
    }
    let has_subjects: bool = conn
        .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_people'")?
        .exists([])?;
    let (indexed, foreign): (i64, i64) = if has_subjects {
        conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(NOT EXISTS (
                SELECT 1 FROM json_each(COALESCE(a.decisions, '[\"\",[]]'), '$[1]') d, json_each(d.value, '$[4]') p
                WHERE json_extract(a.decisions, '$[0]') || p.value = who.person_id)), 0)
             FROM audit_subject s LEFT JOIN audit_people who ON who.key = s.person_key
                  LEFT JOIN audit a ON a.seq = s.seq",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?
    } else {
        (0, 0)
    };
    check.check_subjects(indexed as u64, foreign as u64);
    Ok(check.result())
}

/// (person, decision, code, reason): the kinds of one person's decision.
type EntryKey = (Option<String>, String, Option<String>, Option<String>);

/// Decisions of one request, gathered by the resolvers and written as one record
/// before the response is sent.
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

    /// The record to store for this request (none when it decided nothing): people
    /// with the same decision, code, reason and kinds share one group.
    pub fn record(&self, ctx: &AccessContext) -> Option<AuditRecord> {
        let e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if e.is_empty() {
            return None;
        }
        // (decision, code, reason, kinds) -> the people decided so.
        type Group<'a> = (&'a str, Option<&'a str>, Option<&'a str>, String);
        let mut groups: BTreeMap<Group, Vec<String>> = BTreeMap::new();
        for ((person, decision, code, reason), kinds) in e.iter() {
            let kinds = kinds
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(",");
            let persons = groups
                .entry((decision, code.as_deref(), reason.as_deref(), kinds))
                .or_default();
            if let Some(p) = person {
                persons.push(p.clone());
            }
        }
        let decisions = groups
            .into_iter()
            .map(|((decision, code, reason, kinds), persons)| Decision {
                decision: decision.to_string(),
                code: code.map(str::to_string),
                reason: reason.map(str::to_string),
                kinds,
                persons,
            })
            .collect();
        Some(AuditRecord {
            request_id: self.request_id.clone(),
            at: now(),
            user: ctx.user.clone(),
            role: ctx.role.clone(),
            organisation: ctx.organisation.clone(),
            purpose: purpose_name(ctx.purpose).to_string(),
            break_glass_reason: ctx.break_glass_reason.clone(),
            http_request_id: self.http_request_id.clone(),
            decisions,
        })
    }
}

impl Default for RequestAudit {
    fn default() -> Self {
        Self::new()
    }
}

fn now() -> String {
    Utc::now()
        .naive_utc()
        .format("%Y-%m-%dT%H:%M:%S%.6f")
        .to_string()
}

/// The record of a request refused before any data was looked at.
pub fn refusal(request_id: &str, user: &str, code: &str, reason: &str) -> AuditRecord {
    AuditRecord {
        request_id: request_id.to_string(),
        at: now(),
        user: user.to_string(),
        role: String::new(),
        organisation: None,
        purpose: String::new(),
        break_glass_reason: None,
        http_request_id: None,
        decisions: vec![Decision {
            decision: "denied".into(),
            code: Some(code.to_string()),
            reason: Some(reason.to_string()),
            kinds: String::new(),
            persons: Vec::new(),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> AccessContext {
        AccessContext::for_role("u1", "social_worker", crate::consent::Purpose::DirectCare)
    }

    fn person(i: usize) -> String {
        format!("escr:test:P{i:012x}")
    }

    /// A log as the first schema wrote it: per-person rows, no added columns.
    fn old_log(path: &Path) {
        let conn = Connection::open(path).unwrap();
        let first_schema = SCHEMA.split("-- The people each").next().unwrap();
        conn.execute_batch(first_schema).unwrap();
        let mut prev = GENESIS.to_string();
        for seq in 1..=2 {
            let row = Row {
                event: AuditEvent {
                    seq,
                    request_id: format!("old{seq}"),
                    at: "2025-01-01T00:00:00Z".into(),
                    user: "u0".into(),
                    role: "social_worker".into(),
                    organisation: None,
                    purpose: "direct_care".into(),
                    person_id: Some(person(seq as usize)),
                    kinds: "case_note".into(),
                    decision: "released".into(),
                    code: None,
                    reason: None,
                    break_glass_reason: None,
                    http_request_id: None,
                },
                decisions: None,
            };
            let hash = chain(&prev, &row);
            conn.execute(
                "INSERT INTO audit (seq, request_id, at, user, role, organisation, purpose, person_id, kinds, decision, code, reason, break_glass_reason, prev_hash, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6, ?7, ?8, ?9, NULL, NULL, NULL, ?10, ?11)",
                params![row.event.seq, row.event.request_id, row.event.at, row.event.user, row.event.role, row.event.purpose, row.event.person_id, row.event.kinds, row.event.decision, prev, hash],
            )
            .unwrap();
            prev = hash;
        }
    }

    /// Twenty people released alike and one withheld: one record of two groups.
    fn request() -> RequestAudit {
        let audit = RequestAudit::new();
        for i in 0..20 {
            audit.note(Some(&person(i)), "released", None, None, "person");
            audit.note(Some(&person(i)), "released", None, None, "visit");
        }
        audit.note(
            Some(&person(99)),
            "withheld",
            Some("consent-refused"),
            Some("the person refused"),
            "case_note",
        );
        audit
    }

    #[test]
    fn a_request_is_one_record_of_grouped_decisions() {
        let record = request().record(&caller()).unwrap();
        assert_eq!(record.decisions.len(), 2, "{record:?}");
        let released = record
            .decisions
            .iter()
            .find(|d| d.decision == "released")
            .unwrap();
        assert_eq!(released.kinds, "person,visit");
        assert_eq!(released.persons.len(), 20);
        assert_eq!(record.subjects().len(), 21);
        // The stored row stays small: the shared fields once, each person once.
        let row = record.row();
        // The shared prefix is written once.
        let prefix = "escr:test:".len();
        let ids: usize = (0..20).map(|i| person(i).len() - prefix).sum::<usize>() + 13;
        let size = row.canonical().len();
        assert!(size < ids + 400, "{size} bytes for {ids} bytes of ids");
        assert_eq!(
            decode_decisions(row.decisions.as_deref().unwrap()).unwrap(),
            record.decisions
        );
        assert!(RequestAudit::new().record(&caller()).is_none());
    }

    #[test]
    fn shared_prefixes_end_at_a_segment() {
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cases = [
            (
                ids(&["escr:a:north:P1", "escr:a:north:P2"]),
                "escr:a:north:",
            ),
            (ids(&["escr:a:north:P1", "escr:a:south:P1"]), "escr:a:"),
            (ids(&["escr:a:north:P1"]), "escr:a:north:"),
            (ids(&["x1", "x2"]), ""),
            (ids(&["é:1", "é:2"]), "é:"),
            (ids(&[]), ""),
        ];
        for (v, want) in cases {
            assert_eq!(shared_prefix(v.iter()), want, "{v:?}");
            let d = vec![Decision {
                decision: "released".into(),
                code: None,
                reason: None,
                kinds: "person".into(),
                persons: v.clone(),
            }];
            assert_eq!(decode_decisions(&encode_decisions(&d)).unwrap(), d);
        }
    }

    #[tokio::test]
    async fn old_logs_keep_verifying_and_trails_read_both_forms() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        old_log(&path);
        assert_eq!(verify(&path).unwrap().first_break, None);
        let log = AuditLog::open(&path).unwrap();
        log.append_request(&request(), &caller()).await.unwrap();
        let v = verify(&path).unwrap();
        assert_eq!((v.records, v.first_break), (3, None));

        // Person 1 appears in an old row and in the new record.
        let trail = log.for_person(&person(1)).await.unwrap();
        assert_eq!(trail.len(), 2, "{trail:?}");
        assert!(trail
            .iter()
            .all(|e| e.person_id.as_deref() == Some(&person(1))));
        let new = &trail[1];
        assert_eq!((new.seq, new.kinds.as_str()), (3, "person,visit"));
        let withheld = log.for_person(&person(99)).await.unwrap();
        assert_eq!(withheld.len(), 1);
        assert_eq!(withheld[0].code.as_deref(), Some("consent-refused"));
        assert!(log.for_person(&person(50)).await.unwrap().is_empty());

        let all = events_in(&path).unwrap();
        assert_eq!(all.len(), 2 + 21);
        assert_eq!(log.for_request(&all[2].request_id).await.unwrap().len(), 21);
    }

    #[tokio::test]
    async fn the_wal_is_checkpointed_off_the_commit_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let log = AuditLog::open(&path).unwrap();
        let empty = std::fs::metadata(&path).unwrap().len();
        for _ in 0..100 {
            log.append_request(&request(), &caller()).await.unwrap();
        }
        // Commits do not checkpoint (autocheckpoint is off for the writer): the records
        // reach the database file through the checkpointer, within a few of its rounds.
        let mut size = empty;
        for _ in 0..50 {
            size = std::fs::metadata(&path).unwrap().len();
            if size > empty + 50 * 1024 {
                break;
            }
            tokio::time::sleep(CHECKPOINT_EVERY / 5).await;
        }
        assert!(size > empty + 50 * 1024, "{empty} -> {size} bytes");
        assert_eq!(verify(&path).unwrap().records, 100);
    }

    #[tokio::test]
    async fn a_tampered_person_index_breaks_verification() {
        for tamper in [
            "DELETE FROM audit_subject WHERE person_key = (SELECT MIN(person_key) FROM audit_subject)",
            "UPDATE audit_people SET person_id = 'escr:test:Psomeone' WHERE key = 1",
            "DELETE FROM audit_people WHERE key = 1",
            "INSERT INTO audit_people (person_id) VALUES ('escr:test:Pforeign');
             INSERT INTO audit_subject SELECT key, 1 FROM audit_people WHERE person_id = 'escr:test:Pforeign'",
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("audit.db");
            let log = AuditLog::open(&path).unwrap();
            log.append_request(&request(), &caller()).await.unwrap();
            assert_eq!(verify(&path).unwrap().first_break, None);
            let conn = Connection::open(&path).unwrap();
            if !tamper.starts_with("INSERT") {
                assert!(conn.execute_batch(tamper).is_err(), "refused: {tamper}");
            }
            conn.execute_batch(
                "DROP TRIGGER audit_subject_append_only_u; DROP TRIGGER audit_subject_append_only_d;
                 DROP TRIGGER audit_person_append_only_u; DROP TRIGGER audit_person_append_only_d;",
            )
            .unwrap();
            conn.execute_batch(tamper).unwrap();
            let v = verify(&path).unwrap();
            assert!(v.first_break.is_some(), "{tamper}: {v:?}");
        }
    }
}
