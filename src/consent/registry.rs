//! The gateway's own consent registry (SQLite, or the PostgreSQL that replicas share):
//! consents recorded and withdrawn through the API, with their history. Read fresh on
//! every request that needs it, so a withdrawal applies to the very next request, on
//! whichever replica it lands.

use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{NaiveDateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use crate::consent::engine::RegistryConsent;
use crate::consent::policy::Provision;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("consent registry: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("consent registry: stored provision unreadable: {0}")]
    Stored(String),
    #[error("no consent {0}")]
    NotFound(i64),
    #[error("consent {0} is already withdrawn")]
    AlreadyWithdrawn(i64),
    #[error("consent registry: {0}")]
    State(#[from] crate::state::StateError),
}

impl From<tokio_postgres::Error> for RegistryError {
    fn from(e: tokio_postgres::Error) -> Self {
        RegistryError::State(e.into())
    }
}

/// One consent as stored, with who recorded and withdrew it.
#[derive(Clone, Debug)]
pub struct StoredConsent {
    pub id: i64,
    pub person_id: String,
    pub provision: Provision,
    pub source: String,
    pub recorded_by: String,
    pub recorded_at: NaiveDateTime,
    pub withdrawn_by: Option<String>,
    pub withdrawn_at: Option<NaiveDateTime>,
    pub withdrawal_reason: Option<String>,
    /// The reference of what the person signed or said (a form, a call), required when
    /// a change lifts the person's refusal and they did not make it themself.
    pub evidence: Option<String>,
}

#[derive(Clone, Debug)]
pub struct HistoryEntry {
    pub consent_id: i64,
    pub action: String,
    pub by: String,
    pub at: NaiveDateTime,
    pub detail: Option<String>,
}

pub struct Registry {
    store: Store,
}

enum Store {
    Sqlite(Mutex<Connection>),
    Postgres(Arc<crate::state::PgStore>),
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS consent (
  id INTEGER PRIMARY KEY,
  person_id TEXT NOT NULL,
  provision TEXT NOT NULL,
  source TEXT NOT NULL,
  recorded_by TEXT NOT NULL,
  recorded_at TEXT NOT NULL,
  withdrawn_by TEXT,
  withdrawn_at TEXT,
  withdrawal_reason TEXT
);
CREATE INDEX IF NOT EXISTS consent_person ON consent(person_id);
CREATE TABLE IF NOT EXISTS consent_history (
  seq INTEGER PRIMARY KEY,
  consent_id INTEGER NOT NULL,
  action TEXT NOT NULL,
  by TEXT NOT NULL,
  at TEXT NOT NULL,
  detail TEXT
);
CREATE TRIGGER IF NOT EXISTS consent_history_append_only_u BEFORE UPDATE ON consent_history
  BEGIN SELECT RAISE(ABORT, 'consent history is append-only'); END;
CREATE TRIGGER IF NOT EXISTS consent_history_append_only_d BEFORE DELETE ON consent_history
  BEGIN SELECT RAISE(ABORT, 'consent history is append-only'); END;
";

fn now() -> String {
    Utc::now().naive_utc().format(TIME_FORMAT).to_string()
}

const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6f";

fn time(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<NaiveDateTime> {
    let s: String = r.get(i)?;
    NaiveDateTime::parse_from_str(&s, TIME_FORMAT).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn opt_time(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<NaiveDateTime>> {
    match r.get::<_, Option<String>>(i)? {
        None => Ok(None),
        Some(_) => time(r, i).map(Some),
    }
}

fn row_to_consent(r: &rusqlite::Row<'_>) -> rusqlite::Result<(StoredConsent, String)> {
    Ok((
        StoredConsent {
            id: r.get(0)?,
            person_id: r.get(1)?,
            provision: Provision::default(),
            source: r.get(3)?,
            recorded_by: r.get(4)?,
            recorded_at: time(r, 5)?,
            withdrawn_by: r.get(6)?,
            withdrawn_at: opt_time(r, 7)?,
            withdrawal_reason: r.get(8)?,
            evidence: r.get(9)?,
        },
        r.get::<_, String>(2)?,
    ))
}

const COLUMNS: &str = "id, person_id, provision, source, recorded_by, recorded_at, withdrawn_by, withdrawn_at, withdrawal_reason, evidence";

impl Registry {
    pub fn open(path: &Path) -> Result<Registry, RegistryError> {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        // Registries made before evidence was kept gain the column.
        let has_evidence = conn
            .prepare("SELECT name FROM pragma_table_info('consent') WHERE name = 'evidence'")?
            .exists([])?;
        if !has_evidence {
            conn.execute_batch("ALTER TABLE consent ADD COLUMN evidence TEXT")?;
        }
        Ok(Registry {
            store: Store::Sqlite(Mutex::new(conn)),
        })
    }

    /// The registry in the shared PostgreSQL (its tables come from the migrations).
    pub fn postgres(store: Arc<crate::state::PgStore>) -> Registry {
        Registry {
            store: Store::Postgres(store),
        }
    }

    /// Record a consent; `replaces` are the person's active consents it takes
    /// precedence over (kept in its history, with the evidence).
    pub async fn record(
        &self,
        person_id: &str,
        provision: &Provision,
        source: &str,
        by: &str,
        evidence: Option<&str>,
        replaces: &[i64],
    ) -> Result<StoredConsent, RegistryError> {
        let json =
            serde_json::to_string(provision).map_err(|e| RegistryError::Stored(e.to_string()))?;
        let detail = serde_json::json!({
            "provision": provision,
            "evidence": evidence,
            "replaces": replaces,
        })
        .to_string();
        let at = now();
        let id = match &self.store {
            Store::Sqlite(conn) => {
                let mut conn = lock(conn);
                let tx = conn.transaction()?;
                tx.execute(
                    "INSERT INTO consent (person_id, provision, source, recorded_by, recorded_at, evidence) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![person_id, json, source, by, at, evidence],
                )?;
                let id = tx.last_insert_rowid();
                tx.execute(
                    "INSERT INTO consent_history (consent_id, action, by, at, detail) VALUES (?1, 'recorded', ?2, ?3, ?4)",
                    params![id, by, at, detail],
                )?;
                tx.commit()?;
                id
            }
            Store::Postgres(pg) => {
                let mut client = pg.client().await?;
                let tx = client.transaction().await?;
                let id: i64 = tx
                    .query_one(
                        "INSERT INTO consent (person_id, provision, source, recorded_by, recorded_at, evidence) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                        &[&person_id, &json, &source, &by, &at, &evidence],
                    )
                    .await?
                    .get(0);
                tx.execute(
                    "INSERT INTO consent_history (consent_id, action, \"by\", \"at\", detail) VALUES ($1, 'recorded', $2, $3, $4)",
                    &[&id, &by, &at, &detail],
                )
                .await?;
                tx.commit().await?;
                id
            }
        };
        self.get(id).await?.ok_or(RegistryError::NotFound(id))
    }

    /// Withdraw a consent; the history keeps the reason, the evidence and the
    /// provision it withdrew.
    pub async fn withdraw(
        &self,
        id: i64,
        by: &str,
        reason: &str,
        evidence: Option<&str>,
    ) -> Result<StoredConsent, RegistryError> {
        let at = now();
        let detail = |provision: &str| {
            serde_json::json!({
                "reason": reason,
                "evidence": evidence,
                "withdrew": serde_json::from_str::<serde_json::Value>(provision).unwrap_or_default(),
            })
            .to_string()
        };
        let check = |withdrawn: Option<(Option<String>, String)>| match withdrawn {
            None => Err(RegistryError::NotFound(id)),
            Some((Some(_), _)) => Err(RegistryError::AlreadyWithdrawn(id)),
            Some((None, provision)) => Ok(provision),
        };
        match &self.store {
            Store::Sqlite(conn) => {
                let mut conn = lock(conn);
                let tx = conn.transaction()?;
                let withdrawn: Option<(Option<String>, String)> = tx
                    .query_row(
                        "SELECT withdrawn_at, provision FROM consent WHERE id = ?1",
                        [id],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                let detail = detail(&check(withdrawn)?);
                tx.execute(
                    "UPDATE consent SET withdrawn_by = ?2, withdrawn_at = ?3, withdrawal_reason = ?4 WHERE id = ?1",
                    params![id, by, at, reason],
                )?;
                tx.execute(
                    "INSERT INTO consent_history (consent_id, action, by, at, detail) VALUES (?1, 'withdrawn', ?2, ?3, ?4)",
                    params![id, by, at, detail],
                )?;
                tx.commit()?;
            }
            Store::Postgres(pg) => {
                let mut client = pg.client().await?;
                let tx = client.transaction().await?;
                // FOR UPDATE: two replicas withdrawing the same consent at once, one wins.
                let withdrawn = tx
                    .query_opt(
                        "SELECT withdrawn_at, provision FROM consent WHERE id = $1 FOR UPDATE",
                        &[&id],
                    )
                    .await?
                    .map(|r| (r.get::<_, Option<String>>(0), r.get::<_, String>(1)));
                let detail = detail(&check(withdrawn)?);
                tx.execute(
                    "UPDATE consent SET withdrawn_by = $2, withdrawn_at = $3, withdrawal_reason = $4 WHERE id = $1",
                    &[&id, &by, &at, &reason],
                )
                .await?;
                tx.execute(
                    "INSERT INTO consent_history (consent_id, action, \"by\", \"at\", detail) VALUES ($1, 'withdrawn', $2, $3, $4)",
                    &[&id, &by, &at, &detail],
                )
                .await?;
                tx.commit().await?;
            }
        }
        self.get(id).await?.ok_or(RegistryError::NotFound(id))
    }

    pub async fn get(&self, id: i64) -> Result<Option<StoredConsent>, RegistryError> {
        let row = match &self.store {
            Store::Sqlite(conn) => lock(conn)
                .query_row(
                    &format!("SELECT {COLUMNS} FROM consent WHERE id = ?1"),
                    [id],
                    row_to_consent,
                )
                .optional()?,
            Store::Postgres(pg) => {
                let client = pg.client().await?;
                client
                    .query_opt(
                        &format!("SELECT {COLUMNS} FROM consent WHERE id = $1"),
                        &[&id],
                    )
                    .await?
                    .map(|r| pg_row_to_consent(&r))
                    .transpose()?
            }
        };
        row.map(parse).transpose()
    }

    /// Every consent of a person (withdrawn ones too), oldest first.
    pub async fn for_person(&self, person_id: &str) -> Result<Vec<StoredConsent>, RegistryError> {
        let rows = match &self.store {
            Store::Sqlite(conn) => {
                let conn = lock(conn);
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM consent WHERE person_id = ?1 ORDER BY id"
                ))?;
                let rows = stmt
                    .query_map([person_id], row_to_consent)?
                    .collect::<Result<Vec<_>, _>>()?;
                rows
            }
            Store::Postgres(pg) => {
                let client = pg.client().await?;
                let stmt = client
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM consent WHERE person_id = $1 ORDER BY id"
                    ))
                    .await?;
                client
                    .query(&stmt, &[&person_id])
                    .await?
                    .iter()
                    .map(pg_row_to_consent)
                    .collect::<Result<Vec<_>, _>>()?
            }
        };
        rows.into_iter().map(parse).collect()
    }

    /// Active consents of a person, for the policy engine.
    pub async fn active(&self, person_id: &str) -> Result<Vec<RegistryConsent>, RegistryError> {
        Ok(self
            .for_person(person_id)
            .await?
            .into_iter()
            .filter(|c| c.withdrawn_at.is_none())
            .map(|c| RegistryConsent {
                id: c.id,
                provision: c.provision,
                recorded_at: c.recorded_at,
            })
            .collect())
    }

    pub async fn history(&self, consent_id: i64) -> Result<Vec<HistoryEntry>, RegistryError> {
        match &self.store {
            Store::Sqlite(conn) => {
                let conn = lock(conn);
                let mut stmt = conn.prepare_cached(
                    "SELECT consent_id, action, by, at, detail FROM consent_history WHERE consent_id = ?1 ORDER BY seq",
                )?;
                let rows = stmt
                    .query_map([consent_id], |r| {
                        Ok(HistoryEntry {
                            consent_id: r.get(0)?,
                            action: r.get(1)?,
                            by: r.get(2)?,
                            at: time(r, 3)?,
                            detail: r.get(4)?,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            }
            Store::Postgres(pg) => {
                let client = pg.client().await?;
                client
                    .query(
                        "SELECT consent_id, action, \"by\", \"at\", detail FROM consent_history WHERE consent_id = $1 ORDER BY seq",
                        &[&consent_id],
                    )
                    .await?
                    .iter()
                    .map(|r| {
                        Ok(HistoryEntry {
                            consent_id: r.get(0),
                            action: r.get(1),
                            by: r.get(2),
                            at: parse_time(r.get(3))?,
                            detail: r.get(4),
                        })
                    })
                    .collect()
            }
        }
    }
}

/// A panic while holding the lock leaves SQLite consistent (transactions).
fn lock(conn: &Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
    conn.lock().unwrap_or_else(|p| p.into_inner())
}

fn parse_time(s: &str) -> Result<NaiveDateTime, RegistryError> {
    NaiveDateTime::parse_from_str(s, TIME_FORMAT)
        .map_err(|e| RegistryError::Stored(format!("a stored time: {e}")))
}

fn pg_row_to_consent(r: &tokio_postgres::Row) -> Result<(StoredConsent, String), RegistryError> {
    Ok((
        StoredConsent {
            id: r.get(0),
            person_id: r.get(1),
            provision: Provision::default(),
            source: r.get(3),
            recorded_by: r.get(4),
            recorded_at: parse_time(r.get(5))?,
            withdrawn_by: r.get(6),
            withdrawn_at: r.get::<_, Option<&str>>(7).map(parse_time).transpose()?,
            withdrawal_reason: r.get(8),
            evidence: r.get(9),
        },
        r.get::<_, String>(2),
    ))
}

fn parse((mut c, json): (StoredConsent, String)) -> Result<StoredConsent, RegistryError> {
    c.provision = serde_json::from_str(&json).map_err(|e| RegistryError::Stored(e.to_string()))?;
    Ok(c)
}
