//! The audit log: every release, denial and break-glass, append-only and hash-chained in
//! SQLite (WAL, synchronous=FULL). A response is sent only after its events are
//! committed, so a crash (even SIGKILL) never loses an event of an answered request.

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
    /// For reads (trail, review); the writer thread has its own connection.
    conn: Arc<Mutex<Connection>>,
    writer: std::sync::mpsc::Sender<(Vec<AuditEvent>, Reply)>,
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
        let (writer, batches) = std::sync::mpsc::channel::<(Vec<AuditEvent>, Reply)>();
        // Group commit: the writer takes every batch waiting, commits them in one
        // transaction (one fsync), then answers each request.
        std::thread::Builder::new()
            .name("escr-audit".into())
            .spawn(move || {
                while let Ok(first) = batches.recv() {
                    let mut group = vec![first];
                    while group.len() < 512 {
                        match batches.try_recv() {
                            Ok(next) => group.push(next),
                            Err(_) => break,
                        }
                    }
                    let events: Vec<AuditEvent> =
                        group.iter().flat_map(|(e, _)| e.iter().cloned()).collect();
                    let result = append_sync(&mut write_conn, events).map_err(|e| e.to_string());
                    for (_, reply) in group {
                        let _ = reply.send(result.clone());
                    }
                }
            })
            .map_err(|e| AuditError::Write(e.to_string()))?;
        Ok(AuditLog {
            conn: Arc::new(Mutex::new(conn)),
            writer,
        })
    }

    /// Append events and make them durable (committed and fsynced) before returning.
    pub async fn append(&self, events: Vec<AuditEvent>) -> Result<(), AuditError> {
        if events.is_empty() {
            return Ok(());
        }
        let (reply, done) = tokio::sync::oneshot::channel();
        self.writer
            .send((events, reply))
            .map_err(|_| AuditError::Stopped)?;
        done.await
            .map_err(|_| AuditError::Stopped)?
            .map_err(AuditError::Write)
    }

    /// Events about one person, oldest first.
    pub fn for_person(&self, person_id: &str) -> Result<Vec<AuditEvent>, AuditError> {
        self.query(
            &format!("SELECT {COLUMNS} FROM audit WHERE person_id = ?1 ORDER BY seq"),
            Some(person_id),
        )
    }

    /// Every break-glass use, for review.
    pub fn break_glass(&self) -> Result<Vec<AuditEvent>, AuditError> {
        self.query(
            &format!(
                "SELECT {COLUMNS} FROM audit WHERE break_glass_reason IS NOT NULL ORDER BY seq"
            ),
            None,
        )
    }

    pub fn for_request(&self, request_id: &str) -> Result<Vec<AuditEvent>, AuditError> {
        self.query(
            &format!("SELECT {COLUMNS} FROM audit WHERE request_id = ?1 ORDER BY seq"),
            Some(request_id),
        )
    }

    fn query(&self, sql: &str, arg: Option<&str>) -> Result<Vec<AuditEvent>, AuditError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn.prepare_cached(sql)?;
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

/// Recompute the chain from the start; report the first event that does not fit.
pub fn verify(path: &Path) -> Result<Verification, AuditError> {
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS}, prev_hash, hash FROM audit ORDER BY seq"
    ))?;
    let mut rows = stmt.query([])?;
    let mut prev = GENESIS.to_string();
    let mut expected_seq = 1;
    let mut events = 0;
    while let Some(r) = rows.next()? {
        let e = row_to_event(r)?;
        let stored_prev: String = r.get(14)?;
        let stored_hash: String = r.get(15)?;
        events += 1;
        let broken = if e.seq != expected_seq {
            Some(format!(
                "expected event {expected_seq}, found {} (events removed)",
                e.seq
            ))
        } else if stored_prev != prev {
            Some("its link to the previous event does not match".to_string())
        } else if chain(&prev, &e) != stored_hash {
            Some("its content does not match its hash (altered)".to_string())
        } else {
            None
        };
        if let Some(why) = broken {
            return Ok(Verification {
                events,
                first_break: Some((e.seq, why)),
            });
        }
        prev = stored_hash;
        expected_seq += 1;
    }
    Ok(Verification {
        events,
        first_break: None,
    })
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
