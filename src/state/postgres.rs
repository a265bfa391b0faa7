//! The PostgreSQL state store: a pool with limits and time limits, and the versioned
//! migrations every replica applies at start (under an advisory lock, so that replicas
//! starting together apply each once). A replica refuses a database whose schema is
//! newer than it knows: an older binary must not write into tables it does not
//! understand.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod};
use tokio_postgres::NoTls;

use super::{PostgresConfig, StateError};

/// The schema, one step per version, never edited once released: a change is a new
/// step. Applied in order inside one transaction each with its `schema_version` row.
pub const MIGRATIONS: &[(i32, &str)] = &[(1, MIGRATION_1), (2, MIGRATION_2), (3, MIGRATION_3)];

/// The newest schema this binary knows.
pub fn known_version() -> i32 {
    MIGRATIONS.last().map(|(v, _)| *v).unwrap_or(0)
}

/// The consent registry and the audit log. Append-only is enforced by the database:
/// triggers raise on UPDATE, DELETE and TRUNCATE of the audit and the consent history
/// (even for the owner), and the gateway's own role is meant to be granted only
/// SELECT and INSERT on them (config/README.md, "Shared state on PostgreSQL").
const MIGRATION_1: &str = r#"
CREATE TABLE consent (
  id BIGSERIAL PRIMARY KEY,
  person_id TEXT NOT NULL,
  provision TEXT NOT NULL,
  source TEXT NOT NULL,
  recorded_by TEXT NOT NULL,
  recorded_at TEXT NOT NULL,
  withdrawn_by TEXT,
  withdrawn_at TEXT,
  withdrawal_reason TEXT,
  evidence TEXT
);
CREATE INDEX consent_person ON consent(person_id);
CREATE TABLE consent_history (
  seq BIGSERIAL PRIMARY KEY,
  consent_id BIGINT NOT NULL,
  action TEXT NOT NULL,
  "by" TEXT NOT NULL,
  "at" TEXT NOT NULL,
  detail TEXT
);
CREATE FUNCTION escr_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END
$$;
CREATE TRIGGER consent_history_append_only BEFORE UPDATE OR DELETE ON consent_history
  FOR EACH ROW EXECUTE FUNCTION escr_append_only();
CREATE TRIGGER consent_history_no_truncate BEFORE TRUNCATE ON consent_history
  FOR EACH STATEMENT EXECUTE FUNCTION escr_append_only();
-- One hash chain per replica run: each process appends to its own chain, so replicas
-- never wait on each other for the previous hash; `escr verify-audit` checks them all.
CREATE TABLE audit_chain (
  chain_id TEXT PRIMARY KEY,
  replica TEXT NOT NULL,
  started_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE audit (
  id BIGSERIAL PRIMARY KEY,
  chain_id TEXT NOT NULL REFERENCES audit_chain(chain_id),
  seq BIGINT NOT NULL,
  request_id TEXT NOT NULL,
  "at" TEXT NOT NULL,
  "user" TEXT NOT NULL,
  role TEXT NOT NULL,
  organisation TEXT,
  purpose TEXT NOT NULL,
  person_id TEXT,
  kinds TEXT NOT NULL,
  decision TEXT NOT NULL,
  code TEXT,
  reason TEXT,
  break_glass_reason TEXT,
  http_request_id TEXT,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL,
  UNIQUE (chain_id, seq)
);
CREATE INDEX audit_person ON audit(person_id);
CREATE INDEX audit_request ON audit(request_id);
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
  FOR EACH ROW EXECUTE FUNCTION escr_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
  FOR EACH STATEMENT EXECUTE FUNCTION escr_append_only();
CREATE TRIGGER audit_chain_append_only BEFORE UPDATE OR DELETE ON audit_chain
  FOR EACH ROW EXECUTE FUNCTION escr_append_only();
"#;

/// The published identity index: each version the SQLite database's bytes, written by
/// the replica that built it under the index's advisory lock.
const MIGRATION_2: &str = r#"
CREATE TABLE index_snapshot (
  version BIGINT PRIMARY KEY,
  published_by TEXT NOT NULL,
  published_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  bytes BYTEA NOT NULL
);
"#;

/// One audit record per request: its decisions grouped by person (`decisions`, hashed
/// into the chain) and the people it names indexed in `audit_subject`, append-only.
const MIGRATION_3: &str = r#"
ALTER TABLE audit ADD COLUMN decisions TEXT;
CREATE TABLE audit_subject (
  person_id TEXT NOT NULL,
  audit_id BIGINT NOT NULL REFERENCES audit(id),
  PRIMARY KEY (person_id, audit_id)
);
CREATE TRIGGER audit_subject_append_only BEFORE UPDATE OR DELETE ON audit_subject
  FOR EACH ROW EXECUTE FUNCTION escr_append_only();
CREATE TRIGGER audit_subject_no_truncate BEFORE TRUNCATE ON audit_subject
  FOR EACH STATEMENT EXECUTE FUNCTION escr_append_only();
"#;

/// Advisory lock keys (one namespace of 64-bit keys per database).
pub const MIGRATION_LOCK: i64 = 0x6573_6372_0001;
pub const INDEX_LOCK: i64 = 0x6573_6372_0002;

pub struct PgStore {
    pool: Pool,
    acquire_timeout: Duration,
    /// For connections of their own (LISTEN), outside the pool.
    config: tokio_postgres::Config,
}

impl PgStore {
    /// Builds the pool without connecting (see [`PgStore::migrate`]).
    pub fn new(config: &PostgresConfig) -> Result<PgStore, StateError> {
        let url = config.url()?;
        let mut pg = tokio_postgres::Config::from_str(&url).map_err(|_| {
            // The parser's message can quote the URL, which holds the password.
            StateError::Config("[state.postgres]: the URL is not a PostgreSQL URL".into())
        })?;
        pg.application_name("escr-gateway")
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .options(format!(
                "-c statement_timeout={} -c lock_timeout={}",
                config.statement_timeout_ms, config.statement_timeout_ms
            ))
            // A dead peer is noticed without waiting for the operating system's hours.
            .keepalives_idle(Duration::from_secs(10));
        let manager = Manager::from_config(
            pg.clone(),
            NoTls,
            ManagerConfig {
                // A closed connection (the server restarted) is replaced on checkout.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let acquire_timeout = Duration::from_millis(config.acquire_timeout_ms);
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(acquire_timeout))
            .create_timeout(Some(Duration::from_millis(config.connect_timeout_ms)))
            .recycle_timeout(Some(Duration::from_millis(config.connect_timeout_ms)))
            .build()
            .map_err(|e| StateError::Config(format!("cannot build the pool: {e}")))?;
        Ok(PgStore {
            pool,
            acquire_timeout,
            config: pg,
        })
    }

    /// Connect to the store and bring its schema up to date.
    pub async fn connect(config: &PostgresConfig) -> Result<PgStore, StateError> {
        let store = PgStore::new(config)?;
        store.migrate().await?;
        Ok(store)
    }

    /// A connection, or `Unavailable` within the time limits (never a hang).
    pub async fn client(&self) -> Result<Object, StateError> {
        // The pool's own limits cover waiting and connecting; this bounds the sum.
        match tokio::time::timeout(self.acquire_timeout * 3, self.pool.get()).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(PoolError::Backend(e))) => Err(StateError::from_pg(&e)),
            Ok(Err(PoolError::Timeout(_))) | Err(_) => Err(StateError::Unavailable(
                "no connection within the time limit".into(),
            )),
            Ok(Err(e)) => Err(StateError::Unavailable(format!("pool: {e}"))),
        }
    }

    /// A connection of its own that LISTENs on `channel`: its notifications' payloads
    /// arrive on the receiver, which ends when the connection is lost. The client must
    /// be kept while listening.
    pub async fn listen(
        &self,
        channel: &str,
    ) -> Result<
        (
            tokio_postgres::Client,
            tokio::sync::mpsc::UnboundedReceiver<String>,
        ),
        StateError,
    > {
        let (client, mut connection) = self.config.connect(NoTls).await?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            use futures::StreamExt;
            while let Some(Ok(message)) = messages.next().await {
                if let tokio_postgres::AsyncMessage::Notification(n) = message {
                    if tx.send(n.payload().to_string()).is_err() {
                        break;
                    }
                }
            }
        });
        // The channel is one of ours (a constant), never a value from a client.
        client.batch_execute(&format!("LISTEN {channel}")).await?;
        Ok((client, rx))
    }

    /// One round trip: `/readyz`.
    pub async fn ping(&self) -> Result<(), StateError> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await?;
        Ok(())
    }

    /// The schema's version now (0 for an empty database).
    pub async fn schema_version(&self) -> Result<i32, StateError> {
        let client = self.client().await?;
        let exists: bool = client
            .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
            .await?
            .get(0);
        if !exists {
            return Ok(0);
        }
        Ok(client
            .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
            .await?
            .get(0))
    }

    /// Apply the migrations this database lacks, in order; refuse a newer schema. A
    /// database already current needs no DDL right (the gateway's restricted role).
    pub async fn migrate(&self) -> Result<i32, StateError> {
        let known = known_version();
        let current = self.schema_version().await?;
        if current > known {
            return Err(StateError::SchemaTooNew {
                found: current,
                known,
            });
        }
        if current == known {
            return Ok(current);
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_version (
               version INTEGER PRIMARY KEY,
               applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await?;
        // Read again under the lock: another replica may have migrated meanwhile.
        let current: i32 = tx
            .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
            .await?
            .get(0);
        if current > known {
            return Err(StateError::SchemaTooNew {
                found: current,
                known,
            });
        }
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES ($1)",
                &[version],
            )
            .await?;
            tracing::info!(version, "state store migrated");
        }
        tx.commit().await?;
        Ok(known)
    }
}
