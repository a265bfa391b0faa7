//! The identity index: which source records are the same person, and the gateway's
//! person ids. Persisted in the gateway's own SQLite file; served from an in-memory
//! snapshot that each refresh replaces whole.
//!
//! Linking runs in this order, every union through one guard (never two different valid
//! NHS numbers in one person, never against a data steward's "unlink"):
//! 1. data stewards' link decisions (`link_decision`, latest per pair wins);
//! 2. the vendors' own merge records;
//! 3. a valid NHS number with birth dates that agree;
//! 4. Fellegi-Sunter scores (`crate::identity::linkage`), best first: matches link, except records
//!    with a protected label, which go to review like the pairs between the thresholds.
//!
//! Every union is kept as an edge with its evidence (rule, or per-field weights and
//! score): that is the answer to "why are these records one person".
//!
//! Person ids are stable: a cluster keeps the id its records already had; a new cluster
//! takes a keyed hash of its first source record. When clusters merge, the losing ids
//! stay as aliases that resolve to the survivor.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::identity::linkage::{self, Class, FieldWeight, LinkageConfig, Subject};
use crate::record::source::{Lookup, Source, SourceError};
use chrono::{NaiveDate, NaiveDateTime};
use escr_connector::{FindingKind, Record};
use rusqlite::{params, Connection, OptionalExtension};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("identity index {path}: {reason}")]
    Store { path: PathBuf, reason: String },
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A data steward's decision that cannot be taken as given.
    #[error("{0}")]
    Decision(String),
}

/// One source person record as the index keeps it (demographics used for linkage and
/// search only; the record itself stays in the source).
#[derive(Clone, Debug, PartialEq)]
pub struct SourceRecord {
    pub source: String,
    pub local_id: String,
    pub nhs_number: Option<String>,
    pub birth_date: Option<NaiveDate>,
    pub family_name: Option<String>,
    pub given_names: Option<String>,
    pub postcode: Option<String>,
    pub gender: Option<String>,
    pub birth_date_estimated: bool,
    /// The record's sensitivity labels, comma-separated ("restricted").
    pub labels: String,
    pub merged_into: Option<String>,
    pub updated: Option<NaiveDateTime>,
    /// The council the record's source belongs to (`[[sources]] authority`).
    pub authority: String,
    /// Labels of the record's alerts and episodes, comma-separated, when looked at
    /// (`None`: not known yet, which counts as protected).
    pub related_labels: Option<String>,
    pub person_id: String,
    /// Why this record is in its person: "steward_link", "vendor_merge",
    /// "nhs_number+birth_date", "exact_trace" (a full demographic trace),
    /// "probabilistic" or "single" (the first link that joined it).
    pub link_rule: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceRef {
    pub source: String,
    pub local_id: String,
    pub link_rule: String,
}

/// (source, local id) of a source person record.
pub type RecordKey = (String, String);

/// Why two records are one person: the union that joined them.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LinkEdge {
    pub a: RecordKey,
    pub b: RecordKey,
    pub rule: String,
    /// The Fellegi-Sunter score (bits) for probabilistic links.
    pub score: Option<f64>,
    pub weights: Vec<FieldWeight>,
    /// For steward links: who decided, when, and why.
    pub note: Option<String>,
}

/// A pair waiting for a data steward.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Candidate {
    pub a: RecordKey,
    pub b: RecordKey,
    pub a_person: String,
    pub b_person: String,
    /// None for a deterministic link the guard refused.
    pub score: Option<f64>,
    pub reason: String,
    pub weights: Vec<FieldWeight>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecisionAction {
    Link,
    Unlink,
}

impl DecisionAction {
    fn as_str(self) -> &'static str {
        match self {
            DecisionAction::Link => "link",
            DecisionAction::Unlink => "unlink",
        }
    }
}

/// A data steward's decision on a pair of records, kept across re-indexing.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkDecision {
    pub id: i64,
    pub action: DecisionAction,
    pub a: RecordKey,
    pub b: RecordKey,
    pub reason: String,
    pub decided_by: String,
    pub decided_at: String,
}

#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub people: BTreeMap<String, Vec<SourceRef>>,
    by_source: HashMap<(String, String), String>,
    by_nhs: HashMap<String, String>,
    /// Every person holding a valid NHS number on any of their records, and each
    /// person's valid NHS numbers (the national data opt-out is matched through these).
    people_by_nhs: HashMap<String, Vec<String>>,
    nhs_of_person: HashMap<String, Vec<String>>,
    aliases: HashMap<String, String>,
    /// Current id -> the ids that resolve to it.
    former: HashMap<String, Vec<String>>,
    search: Vec<SearchRow>,
    edges: HashMap<String, Vec<LinkEdge>>,
    review: Vec<Candidate>,
    decisions: Vec<LinkDecision>,
}

#[derive(Clone, Debug)]
struct SearchRow {
    person_id: String,
    names: Vec<String>,
    birth_date: Option<NaiveDate>,
    postcode: Option<String>,
}

impl Snapshot {
    /// The current id for `id`, following aliases left by merges.
    pub fn resolve(&self, id: &str) -> Option<&str> {
        if self.people.contains_key(id) {
            return self.people.get_key_value(id).map(|(k, _)| k.as_str());
        }
        self.aliases.get(id).map(String::as_str)
    }

    /// The ids that resolve to `person_id` (retired by merges or the move to the
    /// current id format): what was recorded under them is the person's.
    pub fn former_ids(&self, person_id: &str) -> impl Iterator<Item = &str> {
        self.former
            .get(person_id)
            .into_iter()
            .flatten()
            .map(String::as_str)
    }

    pub fn records(&self, person_id: &str) -> &[SourceRef] {
        self.people.get(person_id).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn by_source(&self, source: &str, local_id: &str) -> Option<&str> {
        self.by_source
            .get(&(source.to_string(), local_id.to_string()))
            .map(String::as_str)
    }

    pub fn by_nhs_number(&self, digits: &str) -> Option<&str> {
        self.by_nhs.get(digits).map(String::as_str)
    }

    /// Every person any of whose records holds this valid NHS number (two people may,
    /// when linkage kept them apart).
    pub fn people_with_nhs_number(&self, digits: &str) -> &[String] {
        self.people_by_nhs
            .get(digits)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The valid NHS numbers on any of this person's records.
    pub fn nhs_numbers_of(&self, person_id: &str) -> &[String] {
        self.nhs_of_person
            .get(person_id)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    pub fn person_count(&self) -> usize {
        self.people.len()
    }

    /// The links that join this person's records, with their evidence.
    pub fn link_evidence(&self, person_id: &str) -> &[LinkEdge] {
        self.edges.get(person_id).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Candidate pairs for a data steward, best score first.
    pub fn review_queue(&self) -> &[Candidate] {
        &self.review
    }

    /// Data stewards' decisions, oldest first.
    pub fn decisions(&self) -> &[LinkDecision] {
        &self.decisions
    }

    /// People whose names start with every word of `name`, born on `birth_date`, living
    /// in `postcode` (prefix, spaces ignored), in id order, after `after`.
    pub fn search(
        &self,
        name: Option<&str>,
        birth_date: Option<NaiveDate>,
        postcode: Option<&str>,
        mut visible: impl FnMut(&str) -> bool,
    ) -> Vec<String> {
        let words: Vec<String> = name
            .map(|n| {
                n.split_whitespace()
                    .map(normalise_name)
                    .filter(|w| !w.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let postcode = postcode.map(normalise_postcode).filter(|p| !p.is_empty());
        let mut hits = BTreeSet::new();
        for row in &self.search {
            if !words
                .iter()
                .all(|w| row.names.iter().any(|n| n.starts_with(w.as_str())))
            {
                continue;
            }
            if birth_date.is_some() && row.birth_date != birth_date {
                continue;
            }
            if let Some(p) = &postcode {
                if !row
                    .postcode
                    .as_deref()
                    .is_some_and(|rp| rp.starts_with(p.as_str()))
                {
                    continue;
                }
            }
            hits.insert(row.person_id.clone());
        }
        hits.into_iter().filter(|id| visible(id)).collect()
    }
}

pub(crate) fn normalise_name(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

pub(crate) fn normalise_postcode(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_uppercase)
        .collect()
}

/// What one build or refresh did.
#[derive(Debug, Default, serde::Serialize)]
pub struct IndexReport {
    pub records_read: BTreeMap<String, usize>,
    pub people: usize,
    pub links_by_rule: BTreeMap<String, usize>,
    pub findings: BTreeMap<String, usize>,
    pub changed: usize,
    pub linkage: LinkStats,
    /// Records whose linkage fields changed (new, edited or gone) in this refresh.
    pub linkage_changed_records: usize,
    /// Rows of `source_record` inserted, replaced or deleted.
    pub rows_written: usize,
    /// Records that left the index because their source no longer lists them or
    /// reported them deleted.
    pub deleted_records: usize,
    /// Records that left the index because their source is no longer configured.
    pub removed_source_records: usize,
    /// Milliseconds per phase of the run, in order.
    pub phase_ms: Vec<(&'static str, u64)>,
    /// The process's peak resident memory (MiB) at the end of each phase, where the
    /// system tells it (Linux): which phase set the peak.
    pub phase_peak_mib: Vec<(&'static str, u64)>,
    /// The process's own resident memory (anonymous: without mapped files) at the end
    /// of each phase, in MiB.
    pub phase_private_mib: Vec<(&'static str, u64)>,
}

/// A figure of this process's /proc status in MiB: `VmHWM:` (peak resident memory,
/// including the pages of files it maps, such as SQLite vendor databases) or
/// `RssAnon:` (its own memory now, without them); None off Linux.
fn status_mib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// What the probabilistic stage did.
#[derive(Debug, Default, serde::Serialize)]
pub struct LinkStats {
    /// True when only pairs with a changed record were compared (the model and the
    /// other pairs' comparisons were kept from the last full build).
    pub incremental: bool,
    /// Pairs compared field by field in this run.
    pub compared_pairs: usize,
    /// Records linked again in an incremental refresh: the changed ones and all that
    /// linkage joins to them (0: all were).
    pub relinked_records: usize,
    pub candidate_pairs: usize,
    /// Blocks too large to pair (see `blocking.max_block`).
    pub skipped_blocks: usize,
    pub probabilistic_links: usize,
    pub review_pairs: usize,
    pub refused_links: usize,
    /// Per field, per level: the weight in bits (log2 m/u).
    pub weights: BTreeMap<String, BTreeMap<String, f64>>,
    pub estimated_match_share: f64,
    pub em_iterations: usize,
    /// How the model in use was estimated: `anchor_pairs`, `em`, `priors`, or
    /// `defaults` (the fitted model failed its checks; see `model_rejected`).
    pub model: String,
    /// Why the fitted model was not used (empty when it was).
    pub model_rejected: Vec<String>,
    /// Candidate pairs sharing a valid NHS number.
    pub anchor_pairs: usize,
    /// Records whose alerts and episodes were looked at for protected labels.
    pub related_checked: usize,
    /// The thresholds in force (bits), raised with the population beyond
    /// `thresholds.reference_records` (for the largest linkage group).
    pub match_threshold: f64,
    pub review_threshold: f64,
}

pub struct IdentityIndex {
    path: PathBuf,
    linkage: LinkageConfig,
    /// The installation namespace of new person ids (`index.namespace`).
    namespace: String,
    model: RwLock<Option<ModelStatus>>,
    /// The last run's state (None until a run, or after one failed): see [`State`].
    state: std::sync::Mutex<Option<State>>,
    snapshot: RwLock<Arc<Snapshot>>,
    write: tokio::sync::Mutex<()>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS source_record (
  source TEXT NOT NULL, local_id TEXT NOT NULL,
  nhs_number TEXT, birth_date TEXT, family_name TEXT, given_names TEXT, postcode TEXT,
  merged_into TEXT, updated TEXT,
  person_id TEXT NOT NULL, link_rule TEXT NOT NULL,
  PRIMARY KEY (source, local_id));
CREATE TABLE IF NOT EXISTS person_alias (old_id TEXT PRIMARY KEY, person_id TEXT NOT NULL, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS source_state (source TEXT PRIMARY KEY, last_updated TEXT, refreshed_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS link_edge (
  person_id TEXT NOT NULL, a_source TEXT NOT NULL, a_local TEXT NOT NULL, b_source TEXT NOT NULL,
  b_local TEXT NOT NULL, rule TEXT NOT NULL, score REAL, evidence TEXT NOT NULL, note TEXT);
CREATE INDEX IF NOT EXISTS link_edge_person ON link_edge (person_id);
CREATE TABLE IF NOT EXISTS review_pair (
  a_source TEXT NOT NULL, a_local TEXT NOT NULL, b_source TEXT NOT NULL, b_local TEXT NOT NULL,
  a_person TEXT NOT NULL, b_person TEXT NOT NULL, score REAL, reason TEXT NOT NULL, evidence TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS scored_pair (
  a_source TEXT NOT NULL, a_local TEXT NOT NULL, b_source TEXT NOT NULL, b_local TEXT NOT NULL,
  levels BLOB NOT NULL, PRIMARY KEY (a_source, a_local, b_source, b_local));
CREATE TABLE IF NOT EXISTS linkage_model (id INTEGER PRIMARY KEY CHECK (id = 1), model TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS link_decision (
  id INTEGER PRIMARY KEY AUTOINCREMENT, action TEXT NOT NULL CHECK (action IN ('link', 'unlink')),
  a_source TEXT NOT NULL, a_local TEXT NOT NULL, b_source TEXT NOT NULL, b_local TEXT NOT NULL,
  reason TEXT NOT NULL, decided_by TEXT NOT NULL, decided_at TEXT NOT NULL);
";

/// Columns added to `source_record` after v1; an older index file gains them on open.
const ADDED_COLUMNS: [(&str, &str); 5] = [
    ("gender", "TEXT"),
    ("birth_date_estimated", "INTEGER NOT NULL DEFAULT 0"),
    ("labels", "TEXT NOT NULL DEFAULT ''"),
    ("authority", "TEXT NOT NULL DEFAULT ''"),
    ("related_labels", "TEXT"),
];

/// The namespace of person ids when the config names none.
pub const DEFAULT_NAMESPACE: &str = "local";

impl IdentityIndex {
    pub fn open(path: &Path) -> Result<IdentityIndex, IndexError> {
        Self::open_with(path, LinkageConfig::default())
    }

    pub fn open_with(path: &Path, linkage: LinkageConfig) -> Result<IdentityIndex, IndexError> {
        let index = IdentityIndex {
            path: path.to_path_buf(),
            linkage,
            namespace: DEFAULT_NAMESPACE.into(),
            model: RwLock::new(None),
            state: std::sync::Mutex::new(None),
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            write: tokio::sync::Mutex::new(()),
        };
        let conn = index.connect()?;
        let snapshot = load_snapshot(&conn).map_err(|e| index.store_err(e))?;
        *index.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(snapshot);
        if let Some(model) = load_model(&conn).map_err(|e| index.store_err(e))? {
            index.set_model_status(&model);
        }
        Ok(index)
    }

    /// New person ids are minted in this namespace (see [`person_id`]).
    pub fn with_namespace(mut self, namespace: &str) -> IdentityIndex {
        self.namespace = namespace.to_string();
        self
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn store_err(&self, e: impl std::fmt::Display) -> IndexError {
        IndexError::Store {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    fn connect(&self) -> Result<Connection, IndexError> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| self.store_err(e))?;
        }
        let conn = Connection::open(&self.path).map_err(|e| self.store_err(e))?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
            .and_then(|_| conn.execute_batch(SCHEMA))
            .and_then(|_| add_missing_columns(&conn))
            .map_err(|e| self.store_err(e))?;
        Ok(conn)
    }

    /// The index's SQLite file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn linkage_config(&self) -> &LinkageConfig {
        &self.linkage
    }

    /// Record a data steward's decision on two indexed records and relink at once.
    /// The decision is kept across re-indexing; the latest decision on a pair wins.
    pub async fn decide(
        &self,
        action: DecisionAction,
        a: RecordKey,
        b: RecordKey,
        reason: &str,
        decided_by: &str,
    ) -> Result<LinkDecision, IndexError> {
        let bad = |reason: String| IndexError::Decision(reason);
        if reason.trim().is_empty() {
            return Err(bad("a decision needs a reason".into()));
        }
        if a == b {
            return Err(bad("the two records are the same record".into()));
        }
        if action == DecisionAction::Link {
            let conn = self.connect()?;
            let mut authorities = Vec::new();
            for k in [&a, &b] {
                let authority: Option<String> = conn
                    .query_row(
                        "SELECT authority FROM source_record WHERE source = ?1 AND local_id = ?2",
                        params![k.0, k.1],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(|e| self.store_err(e))?;
                match authority {
                    Some(x) => authorities.push(x),
                    None => return Err(bad(format!("no record {}/{} in the index", k.0, k.1))),
                }
            }
            if !self
                .linkage
                .authorities
                .allowed(&authorities[0], &authorities[1])
            {
                return Err(bad(format!(
                    "the records belong to {} and {}: linkage between them is not enabled (linkage.toml [authorities] link)",
                    authorities[0], authorities[1]
                )));
            }
        } else {
            let snap = self.snapshot();
            for k in [&a, &b] {
                if snap.by_source(&k.0, &k.1).is_none() {
                    return Err(bad(format!("no record {}/{} in the index", k.0, k.1)));
                }
            }
        }
        let decided_at = chrono::Utc::now()
            .naive_utc()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let id = {
            let _guard = self.write.lock().await;
            let conn = self.connect()?;
            conn.execute(
                "INSERT INTO link_decision (action, a_source, a_local, b_source, b_local, reason, decided_by, decided_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![action.as_str(), a.0, a.1, b.0, b.1, reason, decided_by, decided_at],
            )
            .map_err(|e| self.store_err(e))?;
            conn.last_insert_rowid()
        };
        // Audit hook: the decision row (id, who, when, reason) is the audit record; the
        // audit log (src/audit.rs) can append it here.
        self.relink().await?;
        Ok(LinkDecision {
            id,
            action,
            a,
            b,
            reason: reason.to_string(),
            decided_by: decided_by.to_string(),
            decided_at,
        })
    }

    /// A consistent copy of the index's database written to `to` (which must not
    /// exist): what a replica publishes to the others (`identity::shared`).
    pub async fn export(&self, to: &Path) -> Result<(), IndexError> {
        let _guard = self.write.lock().await;
        let conn = self.connect()?;
        conn.execute("VACUUM INTO ?1", [to.to_string_lossy()])
            .map_err(|e| self.store_err(e))?;
        Ok(())
    }

    /// Put the database at `from` (another replica's published build) in place of this
    /// one and serve it: the snapshot and the model are reloaded from it, and the next
    /// run starts from it.
    pub async fn install(&self, from: &Path) -> Result<(), IndexError> {
        let _guard = self.write.lock().await;
        // A write-ahead log left beside the old file would be applied to the new one.
        for suffix in ["-wal", "-shm"] {
            let mut side = self.path.clone().into_os_string();
            side.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(side));
        }
        std::fs::rename(from, &self.path).map_err(|e| self.store_err(e))?;
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let conn = self.connect()?;
        let snapshot = load_snapshot(&conn).map_err(|e| self.store_err(e))?;
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(snapshot);
        if let Some(model) = load_model(&conn).map_err(|e| self.store_err(e))? {
            self.set_model_status(&model);
        }
        Ok(())
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Read people from every source (all of them, or since the last refresh where the
    /// vendor has update timestamps, with the deletions it reports), relink, and
    /// persist. Sources that fail keep their previous records; records of a source no
    /// longer configured leave the index.
    pub async fn refresh(
        &self,
        sources: &[Source],
        incremental: bool,
    ) -> Result<IndexReport, IndexError> {
        self.run(Some(sources), incremental).await
    }

    /// Relink what is stored (after a steward's decision), reading no source.
    async fn relink(&self) -> Result<IndexReport, IndexError> {
        self.run(None, true).await
    }

    async fn run(
        &self,
        sources: Option<&[Source]>,
        incremental: bool,
    ) -> Result<IndexReport, IndexError> {
        let _guard = self.write.lock().await;
        let mut conn = self.connect()?;
        let mut report = IndexReport::default();
        let mut clock = std::time::Instant::now();
        let mut phase = |report: &mut IndexReport, name: &'static str| {
            report
                .phase_ms
                .push((name, clock.elapsed().as_millis() as u64));
            if let Some(mib) = status_mib("VmHWM:") {
                report.phase_peak_mib.push((name, mib));
            }
            if let Some(mib) = status_mib("RssAnon:") {
                report.phase_private_mib.push((name, mib));
            }
            clock = std::time::Instant::now();
        };
        // What the last run left, from memory (or, after a start or a failed run, from
        // the file). Taken: a run that fails leaves nothing half-changed behind.
        let taken = self.state.lock().unwrap_or_else(|p| p.into_inner()).take();
        let state = match taken {
            Some(state) => state,
            None => State::load(&conn).map_err(|e| self.store_err(e))?,
        };
        let State {
            mut records,
            pairs: kept_pairs,
            model: kept_model,
            mut aliases,
            mut blocks,
            mut spare,
        } = state;
        if incremental && sources.is_some() && blocks.is_some() && matches!(spare, Spare::None) {
            // The copy of the snapshot this refresh may patch, made while the sources
            // are read (not at the full build, whose peak memory it would raise).
            let live = self.snapshot();
            spare = Spare::Copying(std::thread::spawn(move || (*live).clone()));
        }
        // The records as they were before this run, for those that changed (None: new).
        // A fresh index has no before: every record is new, and all are written.
        let fresh = records.is_empty();
        let mut before: HashMap<RecordKey, Option<SourceRecord>> = HashMap::new();
        phase(&mut report, "load");

        let mut source_marks = Vec::new();
        for source in sources.unwrap_or_default() {
            let mut since = None;
            if incremental
                && source
                    .profile
                    .entity(escr_connector::EntityKind::Person)
                    .is_some_and(|p| p.changed_since.is_some())
            {
                since = last_updated(&conn, &source.name).map_err(|e| self.store_err(e))?;
            }
            // The config says which council a source's records belong to.
            for (k, r) in source_records(&mut records, &source.name) {
                if r.authority != source.authority {
                    before.entry(k.clone()).or_insert_with(|| Some(r.clone()));
                    r.authority = source.authority.clone();
                }
            }
            let mapped = match source.list_people(since).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(source = %source.name, error = %e, "index refresh: source skipped");
                    // Answers from the index say so until a listing succeeds.
                    source.health.listing(false);
                    continue;
                }
            };
            source.health.listing(true);
            for f in &mapped.findings {
                *report.findings.entry(finding_name(f.kind)).or_default() += 1;
            }
            report
                .records_read
                .insert(source.name.clone(), mapped.records.len());
            let gone: Vec<String> = match since {
                // A full listing is the truth: records gone from the source leave.
                None => {
                    let seen: HashSet<&str> =
                        mapped.records.iter().map(|r| r.local_id.as_str()).collect();
                    source_records(&mut records, &source.name)
                        .filter(|(k, _)| !seen.contains(k.1.as_str()))
                        .map(|(k, _)| k.1.clone())
                        .collect()
                }
                Some(since) => match source.deleted_people(since).await {
                    Ok(gone) => gone,
                    Err(e) => {
                        tracing::warn!(source = %source.name, error = %e, "index refresh: deletions not read");
                        continue;
                    }
                },
            };
            for id in gone {
                let key = (source.name.clone(), id);
                if let Some(old) = records.remove(&key) {
                    report.deleted_records += 1;
                    before.entry(key).or_insert(Some(old));
                }
            }
            let mut newest = since;
            // Each mapped record is dropped once its row is taken: a source's listing
            // and the index's rows are not held whole at once.
            for record in mapped.records {
                let mut row = from_record(&source.name, &record);
                drop(record);
                row.authority = source.authority.clone();
                newest = newest.max(row.updated);
                let key = (row.source.clone(), row.local_id.clone());
                match records.get_mut(&key) {
                    Some(old) if same_source_fields(old, &row) => {}
                    Some(old) => {
                        before.entry(key).or_insert_with(|| Some(old.clone()));
                        row.person_id = std::mem::take(&mut old.person_id);
                        row.link_rule = std::mem::take(&mut old.link_rule);
                        *old = row;
                    }
                    None => {
                        if !fresh {
                            before.entry(key.clone()).or_insert(None);
                        }
                        records.insert(key, row);
                    }
                }
            }
            source_marks.push((source.name.clone(), newest));
        }
        if let Some(sources) = sources {
            // A source taken out of the config: its records leave the index.
            let configured: BTreeSet<&str> = sources.iter().map(|s| s.name.as_str()).collect();
            let removed: Vec<RecordKey> = records
                .keys()
                .filter(|(s, _)| !configured.contains(s.as_str()))
                .cloned()
                .collect();
            report.removed_source_records = removed.len();
            for key in removed {
                let old = records.remove(&key);
                before.entry(key).or_insert(old);
            }
        }

        phase(&mut report, "read_sources");
        let changed_keys: HashSet<RecordKey> = before
            .iter()
            .filter(|(k, old)| match (old, records.get(*k)) {
                (Some(old), Some(new)) => !same_linkage_fields(old, new),
                _ => true,
            })
            .map(|(k, _)| k.clone())
            .collect();
        report.linkage_changed_records = changed_keys.len();
        if incremental && sources.is_some() && changed_keys.is_empty() && kept_model.is_some() {
            // Nothing linkage sees has changed: the people stand as they are. Only the
            // rows read (new update times) and the sources' marks are written.
            let dirty: BTreeSet<&RecordKey> = before.keys().collect();
            let tx = conn.transaction().map_err(|e| self.store_err(e))?;
            report.rows_written = persist(&tx, Some(&dirty), &records, &[], &source_marks)
                .map_err(|e| self.store_err(e))?;
            tx.commit().map_err(|e| self.store_err(e))?;
            report.linkage.incremental = true;
            report.people = self.snapshot().person_count();
            *self.state.lock().unwrap_or_else(|p| p.into_inner()) = Some(State {
                records,
                pairs: kept_pairs,
                model: kept_model,
                aliases,
                blocks,
                spare,
            });
            phase(&mut report, "persist");
            return Ok(report);
        }
        let decisions = load_decisions(&conn).map_err(|e| self.store_err(e))?;
        let few_changes = incremental && changed_keys.len() * 5 < records.len().max(1);
        let old_snapshot = self.snapshot();
        // A refresh with few changes links again only the records they can reach (see
        // `affected`), when the blocks of the last full build are at hand.
        let area = match (&blocks, &kept_model, sources) {
            (Some(b), Some(_), Some(_)) if few_changes => affected(
                &records,
                &changed_keys,
                &before,
                &kept_pairs,
                &decisions,
                &old_snapshot,
                b,
                &self.linkage,
            ),
            _ => None,
        };
        if let Some(area) = area {
            let (Some(model), Some(mut blocks), Some(sources)) =
                (kept_model.as_ref(), blocks.take(), sources)
            else {
                return Err(self.store_err("incremental linkage without its blocks"));
            };
            phase(&mut report, "changes");
            let mut sub: BTreeMap<RecordKey, SourceRecord> = area
                .iter()
                .filter_map(|k| records.get(k).map(|r| (k.clone(), r.clone())))
                .collect();
            // What the new snapshot differs in: the people the area's records were in
            // (all of whose records are in the area), those records and the ones that
            // left, and their NHS numbers.
            let mut touched = Touched::default();
            for (k, old) in &before {
                touched.records.insert(k.clone());
                if let Some(old) = old {
                    touched
                        .people
                        .extend(Some(old.person_id.clone()).filter(|p| !p.is_empty()));
                    touched.nhs.extend(old.nhs_number.clone());
                }
            }
            for (k, r) in &sub {
                touched.records.insert(k.clone());
                touched
                    .people
                    .extend(Some(r.person_id.clone()).filter(|p| !p.is_empty()));
                touched.nhs.extend(r.nhs_number.clone());
            }
            for p in &touched.people {
                touched
                    .nhs
                    .extend(old_snapshot.nhs_numbers_of(p).iter().cloned());
            }
            let (dropped, kept) = drop_changed_pairs(kept_pairs, &changed_keys);
            let area_kept = kept
                .iter()
                .filter(|(a, b, _)| sub.contains_key(a) && sub.contains_key(b))
                .cloned()
                .collect();
            let mut population: HashMap<String, usize> = HashMap::new();
            for r in records.values() {
                match population.get_mut(r.authority.as_str()) {
                    Some(n) => *n += 1,
                    None => {
                        population.insert(r.authority.clone(), 1);
                    }
                }
            }
            let old_people = touched.people.clone();
            let reserved =
                |id: &str| old_snapshot.people.contains_key(id) && !old_people.contains(id);
            let input = LinkInput {
                config: &self.linkage,
                decisions: &decisions,
                plan: PairPlan::Incremental {
                    model: model.clone(),
                    kept: area_kept,
                    changed: &changed_keys,
                    index_all: false,
                },
                namespace: &self.namespace,
                population: Some(&population),
                reserved: Some(&reserved),
            };
            let scored = score(&sub, &input);
            phase(&mut report, "score");
            let wanted = scored.would_link();
            let entities = self.linkage.protected.entity_kinds();
            let (checked, relabelled) = if entities.is_empty() {
                (0, Vec::new())
            } else {
                read_related_labels(&entities, sources, &mut sub, &wanted, false).await
            };
            phase(&mut report, "related_labels");
            let mut outcome = cluster(&mut sub, &input, scored);
            drop(input);
            phase(&mut report, "cluster");
            for (k, r) in &sub {
                touched.people.insert(r.person_id.clone());
                if let Some(main) = records.get_mut(k) {
                    main.person_id.clone_from(&r.person_id);
                    main.link_rule.clone_from(&r.link_rule);
                    main.related_labels.clone_from(&r.related_labels);
                }
            }
            for k in &changed_keys {
                if let Some(r) = records.get(k) {
                    blocks.note_changed(k, r, &self.linkage);
                }
            }
            report.linkage = std::mem::take(&mut outcome.stats);
            report.linkage.related_checked = checked;
            report.linkage.relinked_records = sub.len();
            report.links_by_rule = links_by_rule(&records);
            report.changed = outcome.moved.len();
            let mut review: Vec<Candidate> = old_snapshot
                .review
                .iter()
                .filter(|c| !touched.records.contains(&c.a) && !touched.records.contains(&c.b))
                .cloned()
                .collect();
            review.append(&mut outcome.review);
            review.sort_by(review_order);
            report.linkage.review_pairs = review.len();
            phase(&mut report, "report");
            let edges = group_edges(&sub, std::mem::take(&mut outcome.edges));
            let dirty: BTreeSet<&RecordKey> = before
                .keys()
                .chain(&outcome.moved)
                .chain(&relabelled)
                .collect();
            let tx = conn.transaction().map_err(|e| self.store_err(e))?;
            report.rows_written =
                persist(&tx, Some(&dirty), &records, &outcome.aliases, &source_marks)
                    .map_err(|e| self.store_err(e))?;
            persist_people_links(&tx, &touched.people, &edges, &review)
                .map_err(|e| self.store_err(e))?;
            persist_pairs(&tx, false, &dropped, &outcome.new_pairs, model)
                .map_err(|e| self.store_err(e))?;
            tx.commit().map_err(|e| self.store_err(e))?;
            for (old, new) in &outcome.aliases {
                aliases.insert(old.clone(), new.clone());
            }
            follow_aliases(&mut aliases);
            phase(&mut report, "persist");
            let part = Snapshot::build(sub.values(), &aliases, edges, review, decisions);
            let mut next = spare.into_copy(&old_snapshot);
            next.merge(&part, &touched);
            report.people = next.person_count();
            report.linkage.probabilistic_links = next
                .edges
                .values()
                .flatten()
                .filter(|e| e.rule == "probabilistic")
                .count();
            *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
            let mut pairs = kept;
            pairs.append(&mut outcome.new_pairs);
            *self.state.lock().unwrap_or_else(|p| p.into_inner()) = Some(State {
                records,
                pairs,
                model: kept_model,
                aliases,
                blocks: Some(blocks),
                // The snapshot just replaced becomes the next refresh's copy to patch.
                spare: Spare::Behind {
                    snapshot: old_snapshot,
                    pending: Box::new((part, touched)),
                },
            });
            phase(&mut report, "snapshot");
            return Ok(report);
        }
        drop(spare);
        // Incremental linkage when few records changed and a model was fitted before:
        // only pairs with a changed record are compared; the rest come from the last run.
        let mut dropped = Vec::new();
        let plan = match kept_model {
            Some(model) if few_changes => {
                let kept;
                (dropped, kept) = drop_changed_pairs(kept_pairs, &changed_keys);
                PairPlan::Incremental {
                    model,
                    kept,
                    changed: &changed_keys,
                    index_all: blocks.is_none(),
                }
            }
            _ => PairPlan::Full,
        };
        let full = matches!(plan, PairPlan::Full);
        let input = LinkInput {
            config: &self.linkage,
            decisions: &decisions,
            plan,
            namespace: &self.namespace,
            population: None,
            reserved: None,
        };
        phase(&mut report, "changes");
        let mut scored = score(&records, &input);
        phase(&mut report, "score");
        let (mut checked, mut relabelled) = (0, Vec::new());
        if let Some(sources) = sources {
            let wanted = scored.would_link();
            let entities = self.linkage.protected.entity_kinds();
            if !entities.is_empty() {
                (checked, relabelled) =
                    read_related_labels(&entities, sources, &mut records, &wanted, full).await;
            }
        }
        phase(&mut report, "related_labels");
        let built_blocks = scored.blocks.take().map(|index| Blocks {
            index,
            slots: Vec::new(),
            built: 0,
            added: HashMap::new(),
            authorities: scored.rules.names.clone(),
            group: scored.rules.group.clone(),
        });
        let mut outcome = cluster(&mut records, &input, scored);
        phase(&mut report, "cluster");
        report.linkage = std::mem::take(&mut outcome.stats);
        report.linkage.related_checked = checked;
        report.links_by_rule = links_by_rule(&records);
        report.changed = outcome.moved.len();
        // The blocks: a full build's, with its records as positions; after an
        // incremental one, the last blocks with the changed records added.
        match built_blocks {
            Some(mut b) => {
                b.slots = std::mem::take(&mut outcome.keys);
                b.built = b.slots.len();
                blocks = Some(b);
            }
            None => {
                if let Some(b) = blocks.as_mut() {
                    for k in &changed_keys {
                        if let Some(r) = records.get(k) {
                            b.note_changed(k, r, &self.linkage);
                        }
                    }
                }
            }
        }

        // Rows to write: records read or removed, records whose person or rule moved,
        // records whose related labels were looked at.
        let dirty: Option<BTreeSet<&RecordKey>> = (!fresh).then(|| {
            before
                .keys()
                .chain(&outcome.moved)
                .chain(&relabelled)
                .collect()
        });
        phase(&mut report, "report");
        let edges_by_person = group_edges(&records, std::mem::take(&mut outcome.edges));
        let tx = conn.transaction().map_err(|e| self.store_err(e))?;
        report.rows_written = persist(
            &tx,
            dirty.as_ref(),
            &records,
            &outcome.aliases,
            &source_marks,
        )
        .map_err(|e| self.store_err(e))?;
        persist_links(&tx, &old_snapshot, &edges_by_person, &outcome.review)
            .map_err(|e| self.store_err(e))?;
        persist_pairs(&tx, full, &dropped, &outcome.new_pairs, &outcome.model)
            .map_err(|e| self.store_err(e))?;
        tx.commit().map_err(|e| self.store_err(e))?;
        let pairs = match input.plan {
            PairPlan::Full => outcome.new_pairs,
            PairPlan::Incremental { mut kept, .. } => {
                kept.append(&mut outcome.new_pairs);
                kept
            }
        };
        drop(old_snapshot);
        if full {
            self.set_model_status(&outcome.model);
        }
        for (old, new) in &outcome.aliases {
            aliases.insert(old.clone(), new.clone());
        }
        follow_aliases(&mut aliases);

        phase(&mut report, "persist");
        let snapshot = Arc::new(Snapshot::build(
            records.values(),
            &aliases,
            edges_by_person,
            outcome.review,
            decisions,
        ));
        report.people = snapshot.person_count();
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = snapshot;
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = Some(State {
            records,
            pairs,
            model: Some(outcome.model),
            aliases,
            blocks,
            spare: Spare::None,
        });
        phase(&mut report, "snapshot");
        Ok(report)
    }

    fn set_model_status(&self, model: &linkage::Model) {
        *self.model.write().unwrap_or_else(|p| p.into_inner()) = Some(ModelStatus::of(model));
    }

    /// The linkage model of the last full build: how it was estimated, and why a
    /// fitted model was rejected (the defaults are then in use). None before any build.
    pub fn model_status(&self) -> Option<ModelStatus> {
        self.model.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The records of one source.
fn source_records<'a>(
    records: &'a mut BTreeMap<RecordKey, SourceRecord>,
    source: &'a str,
) -> impl Iterator<Item = (&'a RecordKey, &'a mut SourceRecord)> {
    let from = (source.to_string(), String::new());
    records
        .range_mut(from..)
        .take_while(move |((s, _), _)| s == source)
}

/// What the last run left: the records as `source_record` holds them, the comparisons
/// that can matter (`scored_pair`), the model (`linkage_model`) and the aliases
/// (`person_alias`). Kept in memory between runs, so a refresh reads back nothing.
struct State {
    records: BTreeMap<RecordKey, SourceRecord>,
    pairs: Vec<(RecordKey, RecordKey, linkage::Levels)>,
    model: Option<linkage::Model>,
    aliases: HashMap<String, String>,
    /// The blocks of the last full build (not kept in the file).
    blocks: Option<Blocks>,
    spare: Spare,
}

/// The blocks of the last full build, with the records changed since added: where an
/// incremental refresh finds the records a changed one may pair with.
struct Blocks {
    index: linkage::BlockIndex,
    /// The record at each position: the full build's in order, then those added since.
    slots: Vec<RecordKey>,
    built: usize,
    added: HashMap<RecordKey, u32>,
    /// The full build's authorities and their linkage groups (blocking keys hold the
    /// group).
    authorities: Vec<String>,
    group: Vec<u16>,
}

impl Blocks {
    fn subject(&self, r: &SourceRecord, config: &LinkageConfig) -> Option<Subject> {
        let a = self.authorities.binary_search(&r.authority).ok()?;
        Some(Subject {
            authority: a as u16,
            group: self.group[a],
            ..subject(r, &config.protected.labels)
        })
    }

    /// Adds the blocks of a new or changed record (its old entries stay: a superset).
    fn note_changed(&mut self, key: &RecordKey, r: &SourceRecord, config: &LinkageConfig) {
        let Some(s) = self.subject(r, config) else {
            return;
        };
        let slot = match self.slots[..self.built].binary_search(key) {
            Ok(i) => i as u32,
            Err(_) => match self.added.get(key) {
                Some(&i) => i,
                None => {
                    let i = self.slots.len() as u32;
                    self.slots.push(key.clone());
                    self.added.insert(key.clone(), i);
                    i
                }
            },
        };
        self.index.add(&s, slot);
    }
}

/// A copy of the snapshot for an incremental refresh to patch (rather than build a new
/// one from every record): made after a full build, then the snapshot each refresh
/// replaced, with that refresh's patch still to apply.
#[derive(Default)]
enum Spare {
    #[default]
    None,
    Copying(std::thread::JoinHandle<Snapshot>),
    Behind {
        snapshot: Arc<Snapshot>,
        pending: Box<(Snapshot, Touched)>,
    },
}

impl Spare {
    /// A snapshot equal to `live`, owned.
    fn into_copy(self, live: &Snapshot) -> Snapshot {
        match self {
            Spare::Copying(copy) => copy.join().unwrap_or_else(|_| live.clone()),
            Spare::Behind { snapshot, pending } => match Arc::try_unwrap(snapshot) {
                Ok(mut copy) => {
                    copy.merge(&pending.0, &pending.1);
                    copy
                }
                // Still read somewhere: copy the live one.
                Err(_) => live.clone(),
            },
            Spare::None => live.clone(),
        }
    }
}

/// What a patch of the snapshot replaces: these people, records and NHS numbers.
#[derive(Debug, Default)]
struct Touched {
    people: BTreeSet<String>,
    records: BTreeSet<RecordKey>,
    nhs: BTreeSet<String>,
}

/// The kept comparisons with a changed record (to be compared again), and the others.
#[allow(clippy::type_complexity)]
fn drop_changed_pairs(
    kept: Vec<(RecordKey, RecordKey, linkage::Levels)>,
    changed: &HashSet<RecordKey>,
) -> (
    Vec<(RecordKey, RecordKey)>,
    Vec<(RecordKey, RecordKey, linkage::Levels)>,
) {
    let (gone, kept): (Vec<_>, Vec<_>) = kept
        .into_iter()
        .partition(|(a, b, _)| changed.contains(a) || changed.contains(b));
    (gone.into_iter().map(|(a, b, _)| (a, b)).collect(), kept)
}

fn links_by_rule(records: &BTreeMap<RecordKey, SourceRecord>) -> BTreeMap<String, usize> {
    let mut by_rule: HashMap<&str, usize> = HashMap::new();
    for r in records.values() {
        *by_rule.entry(r.link_rule.as_str()).or_default() += 1;
    }
    by_rule
        .into_iter()
        .map(|(rule, n)| (rule.to_string(), n))
        .collect()
}

/// The records an incremental refresh links again: the changed ones, the records they
/// may pair with (their blocks), and all that linkage joins to those, transitively:
/// the records of their people, pairs that can matter, shared NHS numbers, vendor
/// merges and stewards' decisions. Nothing outside can change person, so linking these
/// alone gives the people linking all would. None when that is a large part of the
/// index (linking all costs no more) or a record's authority is new.
#[allow(clippy::too_many_arguments)]
fn affected(
    records: &BTreeMap<RecordKey, SourceRecord>,
    changed: &HashSet<RecordKey>,
    before: &HashMap<RecordKey, Option<SourceRecord>>,
    kept: &[(RecordKey, RecordKey, linkage::Levels)],
    decisions: &[LinkDecision],
    snap: &Snapshot,
    blocks: &Blocks,
    config: &LinkageConfig,
) -> Option<BTreeSet<RecordKey>> {
    let limit = (records.len() / 10).max(1000);
    let mut queue: Vec<RecordKey> = Vec::new();
    for k in changed {
        queue.push(k.clone());
        if let Some(r) = records.get(k) {
            let s = blocks.subject(r, config)?;
            for slot in blocks.index.partners(&s, config.blocking.max_block) {
                queue.extend(blocks.slots.get(slot as usize).cloned());
            }
        }
    }
    let mut joined: HashMap<&RecordKey, Vec<RecordKey>> = HashMap::new();
    for (a, b, _) in kept {
        joined.entry(a).or_default().push(b.clone());
        joined.entry(b).or_default().push(a.clone());
    }
    for d in decisions {
        joined.entry(&d.a).or_default().push(d.b.clone());
        joined.entry(&d.b).or_default().push(d.a.clone());
    }
    let mut merged_from: HashMap<RecordKey, Vec<RecordKey>> = HashMap::new();
    for (k, r) in records {
        if let Some(target) = &r.merged_into {
            merged_from
                .entry((r.source.clone(), target.clone()))
                .or_default()
                .push(k.clone());
        }
    }
    let mut area = BTreeSet::new();
    let mut seen: HashSet<RecordKey> = HashSet::new();
    let mut people: HashSet<&str> = HashSet::new();
    fn person<'s>(
        snap: &'s Snapshot,
        p: &str,
        people: &mut HashSet<&'s str>,
        queue: &mut Vec<RecordKey>,
    ) {
        if let Some((id, refs)) = snap.people.get_key_value(p) {
            if people.insert(id.as_str()) {
                queue.extend(refs.iter().map(|r| (r.source.clone(), r.local_id.clone())));
            }
        }
    }
    while let Some(k) = queue.pop() {
        if seen.contains(&k) {
            continue;
        }
        let now = records.get(&k);
        let was = before.get(&k).and_then(Option::as_ref);
        for r in now.into_iter().chain(was) {
            person(snap, &r.person_id, &mut people, &mut queue);
            if let Some(n) = &r.nhs_number {
                for p in snap.people_with_nhs_number(n) {
                    person(snap, p, &mut people, &mut queue);
                }
            }
            if let Some(target) = &r.merged_into {
                queue.push((r.source.clone(), target.clone()));
            }
        }
        queue.extend(joined.get(&k).into_iter().flatten().cloned());
        queue.extend(merged_from.get(&k).into_iter().flatten().cloned());
        if now.is_some() {
            area.insert(k.clone());
            if area.len() > limit {
                return None;
            }
        }
        seen.insert(k);
    }
    Some(area)
}

impl State {
    fn load(conn: &Connection) -> rusqlite::Result<State> {
        Ok(State {
            records: load_records(conn)?
                .into_iter()
                .map(|r| ((r.source.clone(), r.local_id.clone()), r))
                .collect(),
            pairs: load_scored_pairs(conn)?,
            model: load_model(conn)?,
            aliases: load_aliases(conn)?,
            blocks: None,
            spare: Spare::None,
        })
    }
}

/// An alias pointing at an id that itself became an alias follows it.
fn follow_aliases(aliases: &mut HashMap<String, String>) {
    let moved: Vec<(String, String)> = aliases
        .iter()
        .filter_map(|(old, new)| aliases.get(new).map(|next| (old.clone(), next.clone())))
        .collect();
    for (old, next) in moved {
        aliases.insert(old, next);
    }
}

/// Edges by the person they join.
fn group_edges(
    records: &BTreeMap<RecordKey, SourceRecord>,
    edges: Vec<LinkEdge>,
) -> HashMap<String, Vec<LinkEdge>> {
    let mut out: HashMap<String, Vec<LinkEdge>> = HashMap::new();
    for e in edges {
        if let Some(r) = records.get(&e.a) {
            out.entry(r.person_id.clone()).or_default().push(e);
        }
    }
    out
}

/// Reads the labels of the related records (`protected.entities`: alerts and episodes)
/// of `wanted` records into their `related_labels`: on a full build all of them, else
/// those not known yet (new or changed records). A source that does not answer leaves
/// them unknown, which counts as protected. Returns how many records were looked at,
/// and those whose labels changed.
async fn read_related_labels(
    entities: &[escr_connector::EntityKind],
    sources: &[Source],
    records: &mut BTreeMap<RecordKey, SourceRecord>,
    wanted: &BTreeSet<RecordKey>,
    full: bool,
) -> (usize, Vec<RecordKey>) {
    let mut checked = 0;
    let mut changed = Vec::new();
    for source in sources {
        let keys: Vec<String> = wanted
            .iter()
            .filter(|k| k.0 == source.name)
            .filter(|k| full || records.get(*k).is_some_and(|r| r.related_labels.is_none()))
            .map(|k| k.1.clone())
            .collect();
        if keys.is_empty() {
            continue;
        }
        let mut labels: HashMap<String, BTreeSet<String>> = HashMap::new();
        let mut answered = true;
        for &entity in entities {
            match source.fetch(entity, Lookup::ByPerson, &keys).await {
                Ok(mapped) => {
                    for r in mapped.records {
                        if let Some(person) = r.person_id {
                            labels.entry(person).or_default().extend(r.labels);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(source = %source.name, entity = entity.name(), error = %e, "index: related labels not read; the records count as protected");
                    answered = false;
                }
            }
        }
        for key in keys {
            let key = (source.name.clone(), key);
            if let Some(r) = records.get_mut(&key) {
                let now = answered.then(|| {
                    labels
                        .get(&key.1)
                        .map(|l| l.iter().cloned().collect::<Vec<_>>().join(","))
                        .unwrap_or_default()
                });
                checked += 1;
                if r.related_labels != now {
                    r.related_labels = now;
                    changed.push(key);
                }
            }
        }
    }
    (checked, changed)
}

/// How the linkage model in use came about (for `/readyz` and the CLI).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ModelStatus {
    /// `anchor_pairs`, `em`, `priors`, or `defaults` when a fitted model failed its
    /// checks (or nothing could be fitted).
    pub estimate: String,
    /// True when the fitted model failed its checks and the documented default m and u
    /// values are in use.
    pub defaults_used: bool,
    /// Why the fitted model was not used.
    pub rejected: Vec<String>,
}

impl ModelStatus {
    fn of(model: &linkage::Model) -> ModelStatus {
        ModelStatus {
            estimate: model.estimate.clone(),
            defaults_used: !model.rejected.is_empty(),
            rejected: model.rejected.clone(),
        }
    }
}

fn finding_name(kind: FindingKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn from_record(source: &str, r: &Record) -> SourceRecord {
    let valid_nhs = (r.bool("nhs_number_valid") == Some(true))
        .then(|| r.text("nhs_number").map(str::to_string))
        .flatten();
    SourceRecord {
        source: source.to_string(),
        local_id: r.local_id.clone(),
        nhs_number: valid_nhs,
        birth_date: r.date("birth_date"),
        family_name: r.text("family_name").map(str::to_string),
        given_names: r.text("given_names").map(str::to_string),
        postcode: r.text("postcode").map(str::to_string),
        gender: r.text("gender").map(str::to_string),
        birth_date_estimated: r.bool("birth_date_estimated") == Some(true),
        labels: r.labels.iter().cloned().collect::<Vec<_>>().join(","),
        merged_into: r.text("merged_into").map(str::to_string),
        updated: r.last_updated,
        authority: String::new(),
        related_labels: None,
        person_id: String::new(),
        link_rule: String::new(),
    }
}

pub struct LinkInput<'a> {
    pub config: &'a LinkageConfig,
    pub decisions: &'a [LinkDecision],
    pub plan: PairPlan<'a>,
    /// The installation namespace new person ids are minted in (`index.namespace`).
    pub namespace: &'a str,
    /// When only some records are linked (an incremental refresh): the records per
    /// authority of the whole index (the thresholds rise with it), and the person ids
    /// the other records hold (not to be minted again).
    pub population: Option<&'a HashMap<String, usize>>,
    pub reserved: Option<&'a (dyn Fn(&str) -> bool + Sync)>,
}

/// Which pairs the probabilistic stage compares.
pub enum PairPlan<'a> {
    /// All blocked pairs; the model is fitted afresh.
    Full,
    /// Only pairs with a changed record; the other pairs' comparisons and the model are
    /// the last run's.
    Incremental {
        model: linkage::Model,
        kept: Vec<(RecordKey, RecordKey, linkage::Levels)>,
        changed: &'a HashSet<RecordKey>,
        /// Build the blocks of every record too (the process has none: it restarted
        /// since the last full build), so that the next refresh links only what its
        /// changes reach.
        index_all: bool,
    },
}

pub struct LinkOutcome {
    /// Old id -> surviving id, for ids that merges (or the move to the current id
    /// format) retired.
    pub aliases: Vec<(String, String)>,
    pub edges: Vec<LinkEdge>,
    pub review: Vec<Candidate>,
    pub stats: LinkStats,
    /// Pairs compared in this run that can matter (scored at least `review`, or
    /// conflicting only on NHS numbers), kept for the next incremental run.
    pub new_pairs: Vec<(RecordKey, RecordKey, linkage::Levels)>,
    pub model: linkage::Model,
    /// Records whose person id or link rule this run changed.
    pub moved: Vec<RecordKey>,
    /// The records linked, in order (positions of the blocks kept from a full build).
    pub keys: Vec<RecordKey>,
}

/// A pair for review before ids exist: positions, score, reason, evidence.
type PendingReview = (usize, usize, Option<f64>, String, Vec<FieldWeight>);

/// Why the guard refused a union.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    NhsNumbers,
    StewardUnlink,
    /// Linkage between the two people's authorities is not enabled: not a question for
    /// a data steward, so never queued.
    Authorities,
}

impl Refusal {
    fn reason(self) -> &'static str {
        match self {
            Refusal::NhsNumbers => "the records' people have different NHS numbers",
            Refusal::StewardUnlink => "a data steward unlinked these people",
            Refusal::Authorities => "linkage between these authorities is not enabled",
        }
    }
}

/// The authorities of a run's records and which of them may be linked to each other
/// (`[authorities] link` in `linkage.toml`; an authority with itself always).
struct AuthorityRules {
    names: Vec<String>,
    /// Per record position, its authority.
    of: Vec<u16>,
    allowed: Vec<Vec<bool>>,
    /// Per authority, its linkage group (authorities joined by allowed pairs).
    group: Vec<u16>,
}

impl AuthorityRules {
    fn new(rows: &[&SourceRecord], config: &linkage::config::Authorities) -> AuthorityRules {
        let mut names: Vec<String> = rows.iter().map(|r| r.authority.clone()).collect();
        names.sort_unstable();
        names.dedup();
        let of = rows
            .iter()
            .map(|r| names.binary_search(&r.authority).unwrap_or(0) as u16)
            .collect();
        let allowed: Vec<Vec<bool>> = names
            .iter()
            .map(|a| names.iter().map(|b| config.allowed(a, b)).collect())
            .collect();
        let mut group: Vec<u16> = (0..names.len() as u16).collect();
        // Few authorities: relabel until stable.
        let mut moved = true;
        while moved {
            moved = false;
            for a in 0..names.len() {
                for b in 0..names.len() {
                    if allowed[a][b] && group[b] > group[a] {
                        group[b] = group[a];
                        moved = true;
                    }
                }
            }
        }
        AuthorityRules {
            names,
            of,
            allowed,
            group,
        }
    }

    fn allowed(&self, a: u16, b: u16) -> bool {
        self.allowed[a as usize][b as usize]
    }
}

/// Union-find over record positions, with what the guard needs per cluster: its valid
/// NHS numbers, its authorities and the members a steward separated from someone.
struct Clusters<'a> {
    parent: Vec<usize>,
    nhs: Vec<Vec<String>>,
    /// Per cluster root, its authorities as bits (at most 128 per gateway).
    authorities: Vec<u128>,
    rules: &'a AuthorityRules,
    guarded: Vec<Vec<usize>>,
    forbid: HashMap<usize, Vec<usize>>,
}

impl<'a> Clusters<'a> {
    fn new(rows: &[&SourceRecord], rules: &'a AuthorityRules) -> Clusters<'a> {
        Clusters {
            parent: (0..rows.len()).collect(),
            nhs: rows
                .iter()
                .map(|r| r.nhs_number.iter().cloned().collect())
                .collect(),
            // The config allows at most 128 authorities (`config.rs`).
            authorities: rules.of.iter().map(|a| 1u128 << (a % 128)).collect(),
            rules,
            guarded: vec![Vec::new(); rows.len()],
            forbid: HashMap::new(),
        }
    }

    fn find(&mut self, mut i: usize) -> usize {
        while self.parent[i] != i {
            self.parent[i] = self.parent[self.parent[i]];
            i = self.parent[i];
        }
        i
    }

    fn forbid(&mut self, a: usize, b: usize) {
        for (x, y) in [(a, b), (b, a)] {
            self.forbid.entry(x).or_default().push(y);
            let root = self.find(x);
            self.guarded[root].push(x);
        }
    }

    /// Join the clusters of `a` and `b` unless that would put two different valid NHS
    /// numbers in one person (`strong_ids`), join authorities whose linkage is not
    /// enabled, or undo a steward's unlink. Ok(false): they were one person already.
    fn union(&mut self, a: usize, b: usize, strong_ids: bool) -> Result<bool, Refusal> {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return Ok(false);
        }
        if strong_ids
            && !self.nhs[ra].is_empty()
            && !self.nhs[rb].is_empty()
            && self.nhs[ra].iter().any(|n| !self.nhs[rb].contains(n))
        {
            return Err(Refusal::NhsNumbers);
        }
        let bits = |set: u128| (0..128u16).filter(move |b| set & (1 << b) != 0);
        if !bits(self.authorities[ra])
            .all(|x| bits(self.authorities[rb]).all(|y| self.rules.allowed(x, y)))
        {
            return Err(Refusal::Authorities);
        }
        let guarded: Vec<usize> = self.guarded[ra]
            .iter()
            .chain(&self.guarded[rb])
            .copied()
            .collect();
        for x in guarded {
            let rx = self.find(x);
            let other = if rx == ra { rb } else { ra };
            let forbidden = self.forbid.get(&x).cloned().unwrap_or_default();
            for y in forbidden {
                if self.find(y) == other {
                    return Err(Refusal::StewardUnlink);
                }
            }
        }
        let (lo, hi) = (ra.min(rb), ra.max(rb));
        self.parent[hi] = lo;
        let nhs = std::mem::take(&mut self.nhs[hi]);
        for n in nhs {
            if !self.nhs[lo].contains(&n) {
                self.nhs[lo].push(n);
            }
        }
        self.authorities[lo] |= self.authorities[hi];
        let guarded = std::mem::take(&mut self.guarded[hi]);
        self.guarded[lo].extend(guarded);
        Ok(true)
    }
}

fn has_protected_label(labels: &str, protected: &[String]) -> bool {
    labels.split(',').any(|l| protected.iter().any(|p| p == l))
}

fn subject(r: &SourceRecord, protected: &[String]) -> Subject {
    Subject::new(
        r.nhs_number.as_deref(),
        r.family_name.as_deref(),
        r.given_names.as_deref(),
        r.birth_date,
        r.birth_date_estimated,
        r.gender.as_deref(),
        r.postcode.as_deref(),
        has_protected_label(&r.labels, protected),
    )
}

/// The probabilistic stage's comparisons, before any union: what [`cluster`] links.
pub struct Scored {
    keys: Vec<RecordKey>,
    subjects: Vec<Subject>,
    /// Per record, what its common names take off a score ([`linkage::common_name_bits`]).
    name_bits: Vec<[f32; 2]>,
    rules: AuthorityRules,
    pairs: Vec<(u32, u32)>,
    levels: Vec<linkage::Levels>,
    /// (score, pair) of the pairs that can matter, best first.
    ranked: Vec<(f64, usize)>,
    /// The thresholds in force per linkage group (by its number of records).
    cuts: Vec<linkage::Cut>,
    model: linkage::Model,
    new_pairs: Vec<(RecordKey, RecordKey, linkage::Levels)>,
    stats: LinkStats,
    /// A full build's blocks, kept for incremental refreshes.
    blocks: Option<linkage::BlockIndex>,
}

impl Scored {
    /// Records in a pair that would link on its score, unless its records are
    /// protected: whose alerts and episodes must be looked at first.
    fn would_link(&self) -> BTreeSet<RecordKey> {
        let mut out = BTreeSet::new();
        for (score, k) in &self.ranked {
            let (i, j) = (self.pairs[*k].0 as usize, self.pairs[*k].1 as usize);
            let l = &self.levels[*k];
            if l[0] != 1
                && linkage::bar(l) == linkage::Bar::Clear
                && self.cuts[self.subjects[i].group as usize].classify(*score) == Class::Match
                && !self.subjects[i].protected
                && !self.subjects[j].protected
            {
                out.insert(self.keys[i].clone());
                out.insert(self.keys[j].clone());
            }
        }
        out
    }
}

/// Blocks, compares and fits (or takes the kept model and comparisons).
fn score(records: &BTreeMap<RecordKey, SourceRecord>, input: &LinkInput<'_>) -> Scored {
    let config = input.config;
    let keys: Vec<RecordKey> = records.keys().cloned().collect();
    let rows: Vec<&SourceRecord> = records.values().collect();
    let rules = AuthorityRules::new(&rows, &config.authorities);
    let mut stats = LinkStats::default();
    let subjects: Vec<Subject> = rows
        .iter()
        .zip(&rules.of)
        .map(|(r, a)| Subject {
            authority: *a,
            group: rules.group[*a as usize],
            ..subject(r, &config.protected.labels)
        })
        .collect();
    let allowed = |a: u16, b: u16| rules.allowed(a, b);
    let mut per_group = vec![0usize; rules.names.len().max(1)];
    match input.population {
        Some(population) => {
            for (a, name) in rules.names.iter().enumerate() {
                per_group[rules.group[a] as usize] += population.get(name).copied().unwrap_or(0);
            }
        }
        None => {
            for s in &subjects {
                per_group[s.group as usize] += 1;
            }
        }
    }
    let cuts: Vec<linkage::Cut> = per_group
        .iter()
        .map(|n| linkage::Cut::for_population(config, *n))
        .collect();
    let mut blocks = None;
    let (pairs, levels, model, new_from) = match &input.plan {
        PairPlan::Full => {
            let (pairs, skipped, index) =
                linkage::candidate_pairs_indexed(&subjects, config.blocking.max_block, allowed);
            blocks = Some(index);
            stats.candidate_pairs = pairs.len();
            stats.skipped_blocks = skipped;
            let levels: Vec<linkage::Levels> = pairs
                .iter()
                .map(|(a, b)| linkage::compare(&subjects[*a as usize], &subjects[*b as usize]))
                .collect();
            let model = linkage::fit(config, &subjects, &levels, allowed);
            (pairs, levels, model, 0)
        }
        PairPlan::Incremental {
            model,
            kept,
            changed,
            index_all,
        } => {
            stats.incremental = true;
            if *index_all {
                blocks = Some(linkage::block_index(&subjects));
            }
            let position: HashMap<&RecordKey, usize> =
                keys.iter().enumerate().map(|(i, k)| (k, i)).collect();
            let marks: Vec<bool> = keys.iter().map(|k| changed.contains(k)).collect();
            let (fresh, skipped) = linkage::candidate_pairs(
                &subjects,
                config.blocking.max_block,
                Some(&marks),
                allowed,
            );
            stats.skipped_blocks = skipped;
            let mut pairs = Vec::with_capacity(kept.len() + fresh.len());
            let mut levels = Vec::with_capacity(kept.len() + fresh.len());
            for (a, b, l) in kept {
                if let (Some(&i), Some(&j)) = (position.get(a), position.get(b)) {
                    if rules.allowed(rules.of[i], rules.of[j]) {
                        pairs.push((i.min(j) as u32, i.max(j) as u32));
                        levels.push(*l);
                    }
                }
            }
            let new_from = pairs.len();
            for (a, b) in fresh {
                pairs.push((a, b));
                levels.push(linkage::compare(
                    &subjects[a as usize],
                    &subjects[b as usize],
                ));
            }
            stats.candidate_pairs = pairs.len();
            (pairs, levels, model.clone(), new_from)
        }
    };
    stats.compared_pairs = pairs.len() - new_from;
    let name_bits = linkage::common_name_bits(&subjects);
    let common = |pair: &(u32, u32), l: &linkage::Levels| -> f64 {
        linkage::name_adjustment(name_bits[pair.0 as usize], l)
            .iter()
            .sum()
    };
    let matters = |pair: &(u32, u32), l: &linkage::Levels| {
        let cut = &cuts[subjects[pair.0 as usize].group as usize];
        let common = common(pair, l);
        let (a, b) = (&subjects[pair.0 as usize], &subjects[pair.1 as usize]);
        linkage::full_trace(l, a, b)
            || (linkage::bar(l) != linkage::Bar::Never
                && (model.score(l) + common >= cut.review
                    || (l[0] == 1
                        && cut.classify(model.score_without_nhs(l) + common) == Class::Match)))
    };
    let new_pairs: Vec<(RecordKey, RecordKey, linkage::Levels)> = pairs[new_from..]
        .iter()
        .zip(&levels[new_from..])
        .filter(|(p, l)| matters(p, l))
        .map(|((a, b), l)| (keys[*a as usize].clone(), keys[*b as usize].clone(), *l))
        .collect();
    let mut ranked: Vec<(f64, usize)> = levels
        .iter()
        .enumerate()
        .filter(|(k, l)| matters(&pairs[*k], l))
        .map(|(k, l)| (model.score(l) + common(&pairs[k], l), k))
        .collect();
    ranked.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
    stats.weights = linkage::Field::ALL
        .iter()
        .enumerate()
        .map(|(f, field)| {
            (
                field.name().to_string(),
                field
                    .levels()
                    .iter()
                    .zip(&model.weights[f])
                    .map(|(l, w)| (l.to_string(), round2(*w)))
                    .collect(),
            )
        })
        .collect();
    stats.estimated_match_share = model.match_share;
    stats.em_iterations = model.em_iterations;
    stats.model = model.estimate.clone();
    stats.model_rejected = model.rejected.clone();
    stats.anchor_pairs = model.anchor_pairs;
    if let Some(largest) = per_group.iter().zip(&cuts).max_by_key(|(n, _)| **n) {
        stats.match_threshold = round2(largest.1.match_score);
        stats.review_threshold = round2(largest.1.review);
    }
    Scored {
        keys,
        subjects,
        name_bits,
        rules,
        pairs,
        levels,
        ranked,
        cuts,
        model,
        new_pairs,
        stats,
        blocks,
    }
}

/// Links records into people; assigns `person_id` and `link_rule` in place. A pair
/// that would link on its score is reviewed instead when either record, or one of its
/// alerts or episodes (`related_labels`, unknown counting as protected), carries a
/// protected label.
fn cluster(
    records: &mut BTreeMap<RecordKey, SourceRecord>,
    input: &LinkInput<'_>,
    scored: Scored,
) -> LinkOutcome {
    let config = input.config;
    let Scored {
        keys,
        subjects,
        name_bits,
        rules,
        pairs,
        levels,
        ranked,
        cuts,
        model,
        new_pairs,
        mut stats,
        blocks: _,
    } = scored;
    let position: HashMap<&RecordKey, usize> =
        keys.iter().enumerate().map(|(i, k)| (k, i)).collect();
    let rows: Vec<&SourceRecord> = keys.iter().map(|k| &records[k]).collect();
    let related = !config.protected.entities.is_empty();
    let protected: Vec<bool> = rows
        .iter()
        .zip(&subjects)
        .map(|(r, s)| {
            s.protected
                || (related
                    && r.related_labels
                        .as_deref()
                        .is_none_or(|l| has_protected_label(l, &config.protected.labels)))
        })
        .collect();
    let mut clusters = Clusters::new(&rows, &rules);
    let mut rule: Vec<&'static str> = vec!["single"; rows.len()];
    let mut edges: Vec<(usize, usize, LinkEdge)> = Vec::new();
    let mut review: Vec<PendingReview> = Vec::new();
    let edge = |i: usize,
                j: usize,
                rule: &str,
                score: Option<f64>,
                weights: Vec<FieldWeight>,
                note: Option<String>| LinkEdge {
        a: keys[i].clone(),
        b: keys[j].clone(),
        rule: rule.to_string(),
        score,
        weights,
        note,
    };

    // 1. Stewards' decisions: the latest on each pair stands.
    let mut decided: BTreeMap<(usize, usize), &LinkDecision> = BTreeMap::new();
    for d in input.decisions {
        if let (Some(&i), Some(&j)) = (position.get(&d.a), position.get(&d.b)) {
            decided.insert((i.min(j), i.max(j)), d);
        }
    }
    for (&(i, j), d) in &decided {
        if d.action == DecisionAction::Unlink {
            clusters.forbid(i, j);
        }
    }
    for (&(i, j), d) in &decided {
        if d.action == DecisionAction::Link {
            let note = format!(
                "{} by {} at {}: {}",
                d.action.as_str(),
                d.decided_by,
                d.decided_at,
                d.reason
            );
            match clusters.union(i, j, false) {
                Ok(true) => {
                    edges.push((
                        i,
                        j,
                        edge(i, j, "steward_link", None, Vec::new(), Some(note)),
                    ));
                    set_rule(&mut rule, i, j, "steward_link");
                }
                Ok(false) => {}
                Err(why) => {
                    stats.refused_links += 1;
                    review.push((
                        i,
                        j,
                        None,
                        format!("steward link refused: {}", why.reason()),
                        Vec::new(),
                    ));
                }
            }
        }
    }

    let mut deterministic = |clusters: &mut Clusters,
                             rule: &mut [&'static str],
                             i: usize,
                             j: usize,
                             name: &'static str| {
        match clusters.union(i, j, true) {
            Ok(true) => {
                edges.push((i, j, edge(i, j, name, None, Vec::new(), None)));
                set_rule(rule, i, j, name);
            }
            Ok(false) | Err(Refusal::Authorities) => {}
            Err(why) => {
                stats.refused_links += 1;
                review.push((
                    i,
                    j,
                    None,
                    format!("{name} refused: {}", why.reason()),
                    Vec::new(),
                ));
            }
        }
    };

    // 2. The vendors' own merge decisions.
    for (i, r) in rows.iter().enumerate() {
        if let Some(target) = &r.merged_into {
            if let Some(&j) = position.get(&(r.source.clone(), target.clone())) {
                deterministic(&mut clusters, &mut rule, i, j, "vendor_merge");
            }
        }
    }
    // 3. Valid NHS number with agreeing birth dates, within each linkage group of
    //    authorities. Records without a birth date join the number's largest
    //    birth-date group; conflicting birth dates are left to the probabilistic stage
    //    (a swapped or estimated date).
    let mut by_nhs: Vec<(&str, u16, Option<NaiveDate>, usize)> = rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let group = rules.group[rules.of[i] as usize];
            r.nhs_number.as_deref().map(|n| (n, group, r.birth_date, i))
        })
        .collect();
    by_nhs.sort_unstable();
    for number in by_nhs.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
        // Per birth date (no date first), the records' positions.
        let groups: Vec<(Option<NaiveDate>, Vec<usize>)> = number
            .chunk_by(|a, b| a.2 == b.2)
            .map(|g| (g[0].2, g.iter().map(|e| e.3).collect()))
            .collect();
        let dated: Vec<&Vec<usize>> = groups
            .iter()
            .filter(|(d, _)| d.is_some())
            .map(|(_, g)| g)
            .collect();
        let largest = dated.iter().max_by_key(|g| g.len()).copied();
        let mut all_groups: Vec<Vec<usize>> = dated.iter().map(|g| g.to_vec()).collect();
        if let Some((None, undated)) = groups.first() {
            let mut all = undated.clone();
            if let Some(largest) = largest {
                all.push(largest[0]);
            }
            all_groups.push(all);
        }
        for group in all_groups {
            for pair in group.windows(2) {
                deterministic(
                    &mut clusters,
                    &mut rule,
                    pair[0],
                    pair[1],
                    "nhs_number+birth_date",
                );
            }
        }
    }

    // 4. Full demographic traces (five fields exactly equal, a real birth date), on
    //    every candidate pair: a rule, not a score, so protected records link too. The
    //    evidence keeps the fields' weights, to show what agreed.
    for (k, &(i, j)) in pairs.iter().enumerate() {
        let (i, j) = (i as usize, j as usize);
        let l = &levels[k];
        if decided.contains_key(&(i, j))
            || !linkage::full_trace(l, &subjects[i], &subjects[j])
            || clusters.find(i) == clusters.find(j)
        {
            continue;
        }
        let weights = model.evidence(l, &linkage::name_adjustment(name_bits[i], l));
        match clusters.union(i, j, true) {
            Ok(_) => {
                edges.push((i, j, edge(i, j, "exact_trace", None, weights, None)));
                set_rule(&mut rule, i, j, "exact_trace");
            }
            Err(Refusal::Authorities) => {}
            Err(why) => {
                stats.refused_links += 1;
                review.push((
                    i,
                    j,
                    None,
                    format!("exact_trace refused: {}", why.reason()),
                    weights,
                ));
            }
        }
    }

    // 5. Fellegi-Sunter scores, best first.
    for (score, k) in ranked {
        let (i, j) = (pairs[k].0 as usize, pairs[k].1 as usize);
        let l = &levels[k];
        if decided.contains_key(&(i, j)) || clusters.find(i) == clusters.find(j) {
            continue;
        }
        let adjust = linkage::name_adjustment(name_bits[i], l);
        let weights = || model.evidence(l, &adjust);
        if l[0] == 1 {
            // Two valid NHS numbers that differ: never linked on a score; a steward looks
            // if everything else says "same person".
            let rest = model.score_without_nhs(l) + adjust.iter().sum::<f64>();
            if cuts[subjects[i].group as usize].classify(rest) == Class::Match {
                review.push((
                    i,
                    j,
                    Some(score),
                    "different NHS numbers, other fields agree".into(),
                    weights(),
                ));
            }
            continue;
        }
        let class = cuts[subjects[i].group as usize].classify(score);
        let reason = match (class, linkage::bar(l)) {
            (Class::NonMatch, _) | (_, linkage::Bar::Never) => continue,
            (Class::Review, linkage::Bar::Review(_)) => continue,
            (Class::Review, linkage::Bar::Clear) => "score between the review and match thresholds",
            (Class::Match, linkage::Bar::Review(why)) => why,
            (Class::Match, linkage::Bar::Clear) if protected[i] || protected[j] => {
                "protected record: not linked on a score"
            }
            (Class::Match, linkage::Bar::Clear) => match clusters.union(i, j, true) {
                Ok(_) => {
                    stats.probabilistic_links += 1;
                    edges.push((
                        i,
                        j,
                        edge(i, j, "probabilistic", Some(round2(score)), weights(), None),
                    ));
                    set_rule(&mut rule, i, j, "probabilistic");
                    continue;
                }
                Err(Refusal::Authorities) => continue,
                Err(why) => {
                    stats.refused_links += 1;
                    review.push((
                        i,
                        j,
                        Some(score),
                        format!("match refused: {}", why.reason()),
                        weights(),
                    ));
                    continue;
                }
            },
        };
        review.push((i, j, Some(score), reason.into(), weights()));
    }

    // What scoring left is not needed any more: free it before the ids are made.
    drop((subjects, name_bits, levels, pairs, protected, decided));
    // 6. Ids: keep what the cluster's records already had (the most common; ties to the
    //    smallest), in the current format; otherwise derive one from the cluster's
    //    first record. An id in the old format ("P" + 12 hex digits) moves into the
    //    current one and stays as an alias.
    // Members by cluster, clusters in the order of their first record (the root).
    let mut members: Vec<(usize, usize)> = (0..rows.len()).map(|i| (clusters.find(i), i)).collect();
    members.sort_unstable();
    let mut taken: HashSet<String> = HashSet::new();
    let mut ids: Vec<String> = Vec::new();
    let mut group_of: Vec<u32> = vec![0; rows.len()];
    let mut aliases = Vec::new();
    for cluster in members.chunk_by(|a, b| a.0 == b.0) {
        let group: Vec<usize> = cluster.iter().map(|(_, i)| *i).collect();
        let first = rows[group[0]];
        let authority = &rules.names[rules.of[group[0]] as usize];
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for &i in &group {
            if !rows[i].person_id.is_empty() {
                *counts.entry(rows[i].person_id.as_str()).or_default() += 1;
            }
        }
        let mut existing: Vec<(&str, usize)> = counts.into_iter().collect();
        existing.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let reserved = |id: &str| input.reserved.is_some_and(|r| r(id));
        let keep = existing
            .iter()
            .map(|(id, _)| person_id::current(id, input.namespace, authority))
            .find(|id| !taken.contains(id) && !reserved(id));
        let id = match keep {
            Some(id) => id,
            None => {
                let mut salt = 0;
                let mut id;
                loop {
                    id = person_id::mint(
                        input.namespace,
                        authority,
                        &first.source,
                        &first.local_id,
                        salt,
                    );
                    if !taken.contains(&id) && !reserved(&id) {
                        break;
                    }
                    salt += 1;
                }
                id
            }
        };
        for (old, _) in &existing {
            if *old != id && !taken.contains(*old) {
                aliases.push((old.to_string(), id.clone()));
            }
        }
        taken.insert(id.clone());
        for &i in &group {
            group_of[i] = ids.len() as u32;
        }
        ids.push(id);
    }
    let assigned = |i: usize| ids[group_of[i] as usize].as_str();
    // Pairs that ended up in one person anyway (through other links) need no review;
    // each pair is listed once.
    let mut seen = BTreeSet::new();
    let mut queue: Vec<Candidate> = review
        .into_iter()
        .filter(|(i, j, ..)| group_of[*i] != group_of[*j] && seen.insert((*i.min(j), *i.max(j))))
        .map(|(i, j, score, reason, weights)| Candidate {
            a: keys[i].clone(),
            b: keys[j].clone(),
            a_person: assigned(i).to_string(),
            b_person: assigned(j).to_string(),
            score: score.map(round2),
            reason,
            weights,
        })
        .collect();
    queue.sort_by(review_order);
    stats.review_pairs = queue.len();
    drop(clusters);
    drop(rows);
    // `keys` is the map's order: walk both together.
    let mut moved = Vec::new();
    for ((i, r), key) in records.values_mut().enumerate().zip(&keys) {
        if r.person_id != assigned(i) || r.link_rule != rule[i] {
            r.person_id = assigned(i).to_string();
            r.link_rule = rule[i].to_string();
            moved.push(key.clone());
        }
    }
    LinkOutcome {
        aliases,
        edges: edges.into_iter().map(|(_, _, e)| e).collect(),
        review: queue,
        stats,
        new_pairs,
        model,
        moved,
        keys,
    }
}

/// Links records into people in one go (no look at related records: what they do not
/// say counts as unprotected). For tests of the linking rules.
#[cfg(test)]
fn link(records: &mut BTreeMap<RecordKey, SourceRecord>, input: &LinkInput<'_>) -> LinkOutcome {
    for r in records.values_mut() {
        r.related_labels.get_or_insert_with(String::new);
    }
    let scored = score(records, input);
    cluster(records, input, scored)
}

/// The review queue's order: refused deterministic links first, then best score.
fn review_order(x: &Candidate, y: &Candidate) -> std::cmp::Ordering {
    y.score
        .unwrap_or(f64::INFINITY)
        .total_cmp(&x.score.unwrap_or(f64::INFINITY))
        .then_with(|| x.a.cmp(&y.a))
        .then_with(|| x.b.cmp(&y.b))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn set_rule(rule: &mut [&'static str], i: usize, j: usize, name: &'static str) {
    for k in [i, j] {
        if rule[k] == "single" {
            rule[k] = name;
        }
    }
}

/// Person ids: `escr:<namespace>:<authority>:P<12 hex digits>`, e.g.
/// `escr:northshire.gov.uk:northshire:P31e9db5d5ed6`. The namespace is the
/// installation's (`index.namespace`), the authority the council of the person's first
/// record (lower case, other characters as `-`), and the hex digits the start of
/// SHA-256 over that record's source and local id (and a salt, were two to meet in
/// this installation). Globally unique as long as namespaces are (a council's domain);
/// stable, because a person keeps the id it has. Ids of the old format ("P" + 12 hex
/// digits, unique within one installation only) move into this one with the same
/// digits and keep resolving as aliases.
pub mod person_id {
    use sha2::{Digest, Sha256};

    pub const SCHEME: &str = "escr";

    /// The authority's part of an id: lower-case letters and digits, `-` between words.
    pub fn authority_part(authority: &str) -> String {
        let mut out = String::new();
        for c in authority.chars() {
            if c.is_ascii_alphanumeric() {
                out.push(c.to_ascii_lowercase());
            } else if !out.is_empty() && !out.ends_with('-') {
                out.push('-');
            }
        }
        let out = out.trim_end_matches('-').to_string();
        if out.is_empty() {
            "local".into()
        } else {
            out
        }
    }

    /// The id a record anchors (salt 0 unless an id was already taken).
    pub fn mint(
        namespace: &str,
        authority: &str,
        source: &str,
        local_id: &str,
        salt: u32,
    ) -> String {
        let mut h = Sha256::new();
        h.update(source.as_bytes());
        h.update([0]);
        h.update(local_id.as_bytes());
        h.update(salt.to_be_bytes());
        let digest = h.finalize();
        let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        format!("{SCHEME}:{namespace}:{}:P{hex}", authority_part(authority))
    }

    /// Is this an id of the old format ("P" + 12 hex digits, no namespace)?
    pub fn is_legacy(id: &str) -> bool {
        id.len() == 13 && id.starts_with('P') && id[1..].bytes().all(|b| b.is_ascii_hexdigit())
    }

    /// The id a person keeps: its own, or an old-format id moved into this format.
    pub fn current(id: &str, namespace: &str, authority: &str) -> String {
        if is_legacy(id) {
            format!("{SCHEME}:{namespace}:{}:{id}", authority_part(authority))
        } else {
            id.to_string()
        }
    }

    /// Is `namespace` usable in ids: lower-case letters, digits, `.` and `-`, starting
    /// and ending with a letter or digit, at most 100 characters.
    pub fn valid_namespace(namespace: &str) -> bool {
        let ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let bytes = namespace.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= 100
            && bytes.iter().all(|b| ok(*b) || *b == b'.' || *b == b'-')
            && ok(bytes[0])
            && ok(bytes[bytes.len() - 1])
    }
}

/// The source says the same as before (linkage fields and the update time).
fn same_source_fields(a: &SourceRecord, b: &SourceRecord) -> bool {
    same_linkage_fields(a, b) && a.updated == b.updated
}

/// Linkage sees the same record (the person id and rule are outputs, not inputs).
fn same_linkage_fields(a: &SourceRecord, b: &SourceRecord) -> bool {
    a.nhs_number == b.nhs_number
        && a.birth_date == b.birth_date
        && a.family_name == b.family_name
        && a.given_names == b.given_names
        && a.postcode == b.postcode
        && a.gender == b.gender
        && a.birth_date_estimated == b.birth_date_estimated
        && a.labels == b.labels
        && a.merged_into == b.merged_into
        && a.authority == b.authority
}

/// Writes only the rows that differ from what is stored; returns how many.
/// Writes the `dirty` rows (deleting those no longer in `records`), or all of them;
/// returns how many.
fn persist(
    tx: &rusqlite::Transaction<'_>,
    dirty: Option<&BTreeSet<&RecordKey>>,
    records: &BTreeMap<RecordKey, SourceRecord>,
    aliases: &[(String, String)],
    marks: &[(String, Option<NaiveDateTime>)],
) -> rusqlite::Result<usize> {
    let mut written = 0;
    {
        let mut delete =
            tx.prepare("DELETE FROM source_record WHERE source = ?1 AND local_id = ?2")?;
        for (source, local) in dirty
            .into_iter()
            .flatten()
            .filter(|k| !records.contains_key(**k))
        {
            written += delete.execute(params![source, local])?;
        }
        let mut insert = tx.prepare(
            "INSERT OR REPLACE INTO source_record (source, local_id, nhs_number, birth_date, family_name, given_names,
             postcode, merged_into, updated, person_id, link_rule, gender, birth_date_estimated, labels,
             authority, related_labels)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        )?;
        let rows: Box<dyn Iterator<Item = &SourceRecord>> = match dirty {
            Some(dirty) => Box::new(dirty.iter().filter_map(|k| records.get(*k))),
            None => Box::new(records.values()),
        };
        for r in rows {
            written += 1;
            insert.execute(params![
                r.source,
                r.local_id,
                r.nhs_number,
                r.birth_date.map(|d| d.to_string()),
                r.family_name,
                r.given_names,
                r.postcode,
                r.merged_into,
                r.updated
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S%.f").to_string()),
                r.person_id,
                r.link_rule,
                r.gender,
                r.birth_date_estimated,
                r.labels,
                r.authority,
                r.related_labels
            ])?;
        }
    }
    let now = chrono::Utc::now().naive_utc().to_string();
    for (old, new) in aliases {
        tx.execute(
            "INSERT INTO person_alias (old_id, person_id, at) VALUES (?1, ?2, ?3)
             ON CONFLICT(old_id) DO UPDATE SET person_id = excluded.person_id, at = excluded.at",
            params![old, new, now],
        )?;
    }
    // Aliases that point at an id which itself became an alias follow it.
    tx.execute(
        "UPDATE person_alias SET person_id = (SELECT a2.person_id FROM person_alias a2 WHERE a2.old_id = person_alias.person_id)
         WHERE person_id IN (SELECT old_id FROM person_alias)",
        [],
    )?;
    for (source, newest) in marks {
        tx.execute(
            "INSERT INTO source_state (source, last_updated, refreshed_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(source) DO UPDATE SET last_updated = COALESCE(excluded.last_updated, source_state.last_updated),
             refreshed_at = excluded.refreshed_at",
            params![source, newest.map(|t| t.format("%Y-%m-%d %H:%M:%S%.f").to_string()), now],
        )?;
    }
    Ok(written)
}

/// Keeps the comparisons that matter for the next incremental run: all of them after a
/// full run, else replaces those of the changed records.
fn persist_pairs(
    tx: &rusqlite::Transaction<'_>,
    full: bool,
    dropped: &[(RecordKey, RecordKey)],
    pairs: &[(RecordKey, RecordKey, linkage::Levels)],
    model: &linkage::Model,
) -> rusqlite::Result<()> {
    if full {
        tx.execute("DELETE FROM scored_pair", [])?;
        tx.execute(
            "INSERT OR REPLACE INTO linkage_model (id, model) VALUES (1, ?1)",
            [serde_json::to_string(model).unwrap_or_default()],
        )?;
    } else {
        // By key, the pairs known to hold a changed record (a condition on either
        // side would scan the table).
        let mut delete = tx.prepare(
            "DELETE FROM scored_pair WHERE a_source = ?1 AND a_local = ?2 AND b_source = ?3 AND b_local = ?4",
        )?;
        for (a, b) in dropped {
            delete.execute(params![a.0, a.1, b.0, b.1])?;
        }
    }
    let mut insert = tx.prepare(
        "INSERT OR REPLACE INTO scored_pair (a_source, a_local, b_source, b_local, levels) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for (a, b, l) in pairs {
        insert.execute(params![a.0, a.1, b.0, b.1, &l[..]])?;
    }
    Ok(())
}

fn load_model(conn: &Connection) -> rusqlite::Result<Option<linkage::Model>> {
    let text: Option<String> = conn
        .query_row("SELECT model FROM linkage_model WHERE id = 1", [], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
}

/// Stored comparisons that involve none of the changed records.
fn load_scored_pairs(
    conn: &Connection,
) -> rusqlite::Result<Vec<(RecordKey, RecordKey, linkage::Levels)>> {
    let mut stmt =
        conn.prepare("SELECT a_source, a_local, b_source, b_local, levels FROM scored_pair")?;
    let rows = stmt.query_map([], |r| {
        let blob: Vec<u8> = r.get(4)?;
        let mut levels = [linkage::MISSING; linkage::FIELDS];
        for (slot, v) in levels.iter_mut().zip(blob) {
            *slot = v;
        }
        Ok(((r.get(0)?, r.get(1)?), (r.get(2)?, r.get(3)?), levels))
    })?;
    rows.collect()
}

fn load_aliases(conn: &Connection) -> rusqlite::Result<HashMap<String, String>> {
    let mut stmt = conn.prepare("SELECT old_id, person_id FROM person_alias")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    rows.collect()
}

fn last_updated(conn: &Connection, source: &str) -> rusqlite::Result<Option<NaiveDateTime>> {
    let text: Option<Option<String>> = conn
        .query_row(
            "SELECT last_updated FROM source_state WHERE source = ?1",
            [source],
            |r| r.get(0),
        )
        .optional()?;
    Ok(text
        .flatten()
        .and_then(|t| NaiveDateTime::parse_from_str(&t, "%Y-%m-%d %H:%M:%S%.f").ok()))
}

fn load_records(conn: &Connection) -> rusqlite::Result<Vec<SourceRecord>> {
    let mut stmt = conn.prepare(
        "SELECT source, local_id, nhs_number, birth_date, family_name, given_names, postcode, merged_into,
                updated, person_id, link_rule, gender, birth_date_estimated, labels, authority,
                related_labels
         FROM source_record ORDER BY source, local_id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(SourceRecord {
            source: r.get(0)?,
            local_id: r.get(1)?,
            nhs_number: r.get(2)?,
            birth_date: r.get::<_, Option<String>>(3)?.and_then(|d| d.parse().ok()),
            family_name: r.get(4)?,
            given_names: r.get(5)?,
            postcode: r.get(6)?,
            merged_into: r.get(7)?,
            updated: r
                .get::<_, Option<String>>(8)?
                .and_then(|t| NaiveDateTime::parse_from_str(&t, "%Y-%m-%d %H:%M:%S%.f").ok()),
            person_id: r.get(9)?,
            link_rule: r.get(10)?,
            gender: r.get(11)?,
            birth_date_estimated: r.get(12)?,
            labels: r.get(13)?,
            authority: r.get(14)?,
            related_labels: r.get(15)?,
        })
    })?;
    rows.collect()
}

fn add_missing_columns(conn: &Connection) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('source_record')")?;
    let have: BTreeSet<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<_>>()?;
    for (name, ty) in ADDED_COLUMNS {
        if !have.contains(name) {
            conn.execute_batch(&format!("ALTER TABLE source_record ADD COLUMN {name} {ty}"))?;
        }
    }
    Ok(())
}

fn load_decisions(conn: &Connection) -> rusqlite::Result<Vec<LinkDecision>> {
    let mut stmt = conn.prepare(
        "SELECT id, action, a_source, a_local, b_source, b_local, reason, decided_by, decided_at
         FROM link_decision ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(LinkDecision {
            id: r.get(0)?,
            action: if r.get::<_, String>(1)? == "link" {
                DecisionAction::Link
            } else {
                DecisionAction::Unlink
            },
            a: (r.get(2)?, r.get(3)?),
            b: (r.get(4)?, r.get(5)?),
            reason: r.get(6)?,
            decided_by: r.get(7)?,
            decided_at: r.get(8)?,
        })
    })?;
    rows.collect()
}

/// Writes the edges of the people whose edges differ from `old` (the snapshot the
/// file holds), and the review queue.
fn persist_links(
    tx: &rusqlite::Transaction<'_>,
    old: &Snapshot,
    edges: &HashMap<String, Vec<LinkEdge>>,
    review: &[Candidate],
) -> rusqlite::Result<()> {
    let json = |w: &[FieldWeight]| serde_json::to_string(w).unwrap_or_else(|_| "[]".into());
    let mut delete = tx.prepare("DELETE FROM link_edge WHERE person_id = ?1")?;
    for person in old.edges.keys().filter(|p| !edges.contains_key(*p)) {
        delete.execute([person])?;
    }
    let mut insert = tx.prepare(
        "INSERT INTO link_edge (person_id, a_source, a_local, b_source, b_local, rule, score, evidence, note)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for (person, list) in edges {
        if old.edges.get(person) == Some(list) {
            continue;
        }
        delete.execute([person])?;
        for e in list {
            insert.execute(params![
                person,
                e.a.0,
                e.a.1,
                e.b.0,
                e.b.1,
                e.rule,
                e.score,
                json(&e.weights),
                e.note
            ])?;
        }
    }
    tx.execute("DELETE FROM review_pair", [])?;
    let mut insert = tx.prepare(
        "INSERT INTO review_pair (a_source, a_local, b_source, b_local, a_person, b_person, score, reason, evidence)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for c in review {
        insert.execute(params![
            c.a.0,
            c.a.1,
            c.b.0,
            c.b.1,
            c.a_person,
            c.b_person,
            c.score,
            c.reason,
            json(&c.weights)
        ])?;
    }
    Ok(())
}

/// Replaces the edges of these people (with those in `edges`), and the review queue.
fn persist_people_links(
    tx: &rusqlite::Transaction<'_>,
    people: &BTreeSet<String>,
    edges: &HashMap<String, Vec<LinkEdge>>,
    review: &[Candidate],
) -> rusqlite::Result<()> {
    let mut delete = tx.prepare("DELETE FROM link_edge WHERE person_id = ?1")?;
    for person in people {
        delete.execute([person])?;
    }
    let only: HashMap<String, Vec<LinkEdge>> = edges
        .iter()
        .filter(|(p, _)| people.contains(*p))
        .map(|(p, e)| (p.clone(), e.clone()))
        .collect();
    persist_links(tx, &Snapshot::default(), &only, review)
}

/// The link edges by person, and the review queue.
type StoredLinks = (HashMap<String, Vec<LinkEdge>>, Vec<Candidate>);

fn load_links(conn: &Connection) -> rusqlite::Result<StoredLinks> {
    let weights =
        |text: String| -> Vec<FieldWeight> { serde_json::from_str(&text).unwrap_or_default() };
    let mut stmt = conn.prepare(
        "SELECT person_id, a_source, a_local, b_source, b_local, rule, score, evidence, note
         FROM link_edge ORDER BY rowid",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            LinkEdge {
                a: (r.get(1)?, r.get(2)?),
                b: (r.get(3)?, r.get(4)?),
                rule: r.get(5)?,
                score: r.get(6)?,
                weights: weights(r.get(7)?),
                note: r.get(8)?,
            },
        ))
    })?;
    let mut edges: HashMap<String, Vec<LinkEdge>> = HashMap::new();
    for row in rows {
        let (person, edge) = row?;
        edges.entry(person).or_default().push(edge);
    }
    let mut stmt = conn.prepare(
        "SELECT a_source, a_local, b_source, b_local, a_person, b_person, score, reason, evidence
         FROM review_pair ORDER BY rowid",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(Candidate {
            a: (r.get(0)?, r.get(1)?),
            b: (r.get(2)?, r.get(3)?),
            a_person: r.get(4)?,
            b_person: r.get(5)?,
            score: r.get(6)?,
            reason: r.get(7)?,
            weights: weights(r.get(8)?),
        })
    })?;
    let review = rows.collect::<rusqlite::Result<_>>()?;
    Ok((edges, review))
}

impl Snapshot {
    /// The snapshot of these records, aliases, edges (by person), review queue and
    /// decisions.
    fn build<'r>(
        records: impl Iterator<Item = &'r SourceRecord>,
        aliases: &HashMap<String, String>,
        edges: HashMap<String, Vec<LinkEdge>>,
        review: Vec<Candidate>,
        decisions: Vec<LinkDecision>,
    ) -> Snapshot {
        let mut snap = Snapshot::default();
        let records: Vec<&SourceRecord> = records.collect();
        // NHS numbers in the records' order: the first person holding one answers for it.
        for r in &records {
            if let Some(nhs) = &r.nhs_number {
                snap.by_nhs
                    .entry(nhs.clone())
                    .or_insert_with(|| r.person_id.clone());
                let people = snap.people_by_nhs.entry(nhs.clone()).or_default();
                if !people.contains(&r.person_id) {
                    people.push(r.person_id.clone());
                }
                let numbers = snap.nhs_of_person.entry(r.person_id.clone()).or_default();
                if !numbers.contains(nhs) {
                    numbers.push(nhs.clone());
                }
            }
        }
        // People in id order (a stable sort keeps each one's records in order): the
        // person map is then built in bulk and the search rows come out sorted.
        let mut by_person = records;
        by_person.sort_by(|a, b| a.person_id.cmp(&b.person_id));
        snap.by_source.reserve(by_person.len());
        let mut people = Vec::new();
        let mut search = Vec::new();
        for group in by_person.chunk_by(|a, b| a.person_id == b.person_id) {
            let person_id = &group[0].person_id;
            let mut names: BTreeSet<String> = BTreeSet::new();
            let (mut birth_date, mut postcode) = (None, None);
            let mut refs = Vec::with_capacity(group.len());
            for r in group {
                refs.push(SourceRef {
                    source: r.source.clone(),
                    local_id: r.local_id.clone(),
                    link_rule: r.link_rule.clone(),
                });
                snap.by_source
                    .insert((r.source.clone(), r.local_id.clone()), person_id.clone());
                for part in [&r.family_name, &r.given_names].into_iter().flatten() {
                    names.extend(part.split_whitespace().map(normalise_name));
                }
                birth_date = birth_date.or(r.birth_date);
                if postcode.is_none() {
                    postcode = r.postcode.as_deref().map(normalise_postcode);
                }
            }
            people.push((person_id.clone(), refs));
            search.push(SearchRow {
                person_id: person_id.clone(),
                names: names.into_iter().collect(),
                birth_date,
                postcode,
            });
        }
        snap.people = people.into_iter().collect();
        for (old, new) in aliases {
            snap.former
                .entry(new.clone())
                .or_default()
                .push(old.clone());
            snap.aliases.insert(old.clone(), new.clone());
        }
        snap.search = search;
        snap.edges = edges;
        snap.review = review;
        snap.decisions = decisions;
        snap
    }
}

impl Snapshot {
    /// Replaces what this snapshot says of the touched people, records and NHS numbers
    /// by what `part` (the snapshot of those people's records) says; the review queue,
    /// decisions and aliases are `part`'s.
    fn merge(&mut self, part: &Snapshot, t: &Touched) {
        for p in &t.people {
            self.people.remove(p);
            self.edges.remove(p);
            self.nhs_of_person.remove(p);
        }
        for k in &t.records {
            self.by_source.remove(k);
        }
        for n in &t.nhs {
            if let Some(v) = self.people_by_nhs.get_mut(n) {
                v.retain(|p| !t.people.contains(p));
                if v.is_empty() {
                    self.people_by_nhs.remove(n);
                }
            }
            if self.by_nhs.get(n).is_some_and(|p| t.people.contains(p)) {
                self.by_nhs.remove(n);
            }
        }
        for (p, refs) in &part.people {
            self.people.insert(p.clone(), refs.clone());
        }
        for (k, p) in &part.by_source {
            self.by_source.insert(k.clone(), p.clone());
        }
        for (p, e) in &part.edges {
            self.edges.insert(p.clone(), e.clone());
        }
        for (p, n) in &part.nhs_of_person {
            self.nhs_of_person.insert(p.clone(), n.clone());
        }
        for (n, people) in &part.people_by_nhs {
            let v = self.people_by_nhs.entry(n.clone()).or_default();
            for p in people {
                if !v.contains(p) {
                    v.push(p.clone());
                }
            }
        }
        for (n, p) in &part.by_nhs {
            self.by_nhs.entry(n.clone()).or_insert_with(|| p.clone());
        }
        for n in &t.nhs {
            if !self.by_nhs.contains_key(n) {
                if let Some(p) = self.people_by_nhs.get(n).and_then(|v| v.first()) {
                    self.by_nhs.insert(n.clone(), p.clone());
                }
            }
        }
        // Search rows stay in id order: the others', merged with the part's.
        let old = std::mem::take(&mut self.search);
        let mut added = part.search.iter().cloned().peekable();
        let mut search = Vec::with_capacity(old.len() + part.search.len());
        for row in old.into_iter().filter(|r| !t.people.contains(&r.person_id)) {
            while let Some(a) = added.next_if(|a| a.person_id < row.person_id) {
                search.push(a);
            }
            search.push(row);
        }
        search.extend(added);
        self.search = search;
        self.aliases.clone_from(&part.aliases);
        self.former.clone_from(&part.former);
        self.review.clone_from(&part.review);
        self.decisions.clone_from(&part.decisions);
    }
}

fn load_snapshot(conn: &Connection) -> rusqlite::Result<Snapshot> {
    let records = load_records(conn)?;
    let aliases = load_aliases(conn)?;
    let (edges, review) = load_links(conn)?;
    let decisions = load_decisions(conn)?;
    Ok(Snapshot::build(
        records.iter(),
        &aliases,
        edges,
        review,
        decisions,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(
        source: &str,
        id: &str,
        nhs: Option<&str>,
        dob: Option<&str>,
        merged: Option<&str>,
    ) -> SourceRecord {
        SourceRecord {
            source: source.into(),
            local_id: id.into(),
            nhs_number: nhs.map(Into::into),
            birth_date: dob.map(|d| d.parse().unwrap()),
            family_name: None,
            given_names: None,
            postcode: None,
            gender: None,
            birth_date_estimated: false,
            labels: String::new(),
            merged_into: merged.map(Into::into),
            updated: None,
            authority: "Northshire".into(),
            related_labels: None,
            person_id: String::new(),
            link_rule: String::new(),
        }
    }

    fn input() -> LinkInput<'static> {
        static CONFIG: std::sync::OnceLock<LinkageConfig> = std::sync::OnceLock::new();
        LinkInput {
            config: CONFIG.get_or_init(LinkageConfig::default),
            decisions: &[],
            plan: PairPlan::Full,
            namespace: "test.example",
            population: None,
            reserved: None,
        }
    }

    fn map(rows: Vec<SourceRecord>) -> BTreeMap<(String, String), SourceRecord> {
        rows.into_iter()
            .map(|r| ((r.source.clone(), r.local_id.clone()), r))
            .collect()
    }

    fn pid(m: &BTreeMap<(String, String), SourceRecord>, s: &str, id: &str) -> String {
        m[&(s.to_string(), id.to_string())].person_id.clone()
    }

    #[test]
    fn links_on_nhs_with_agreeing_birth_dates_and_vendor_merges() {
        let mut m = map(vec![
            rec("a", "1", Some("9434765919"), Some("1950-01-31"), None),
            rec("b", "x", Some("9434765919"), Some("1950-01-31"), None),
            rec("c", "q", Some("9434765919"), Some("1950-03-01"), None), // conflicting DOB
            rec("a", "2", None, Some("1960-01-01"), Some("3")),
            rec("a", "3", None, Some("1960-01-01"), None),
            rec("b", "y", Some("9434765919"), None, None), // no DOB: joins the larger group
        ]);
        link(&mut m, &input());
        assert_eq!(pid(&m, "a", "1"), pid(&m, "b", "x"));
        assert_eq!(pid(&m, "a", "1"), pid(&m, "b", "y"));
        assert_ne!(pid(&m, "a", "1"), pid(&m, "c", "q"));
        assert_eq!(pid(&m, "a", "2"), pid(&m, "a", "3"));
        assert_eq!(
            m[&("a".to_string(), "2".to_string())].link_rule,
            "vendor_merge"
        );
        assert_eq!(
            m[&("b".to_string(), "x".to_string())].link_rule,
            "nhs_number+birth_date"
        );
    }

    #[test]
    fn ids_are_stable_and_merges_leave_aliases() {
        let mut m = map(vec![
            rec("a", "1", Some("9434765919"), Some("1950-01-31"), None),
            rec("b", "x", None, Some("1950-01-31"), None),
        ]);
        link(&mut m, &input());
        let (p1, px) = (pid(&m, "a", "1"), pid(&m, "b", "x"));
        assert_ne!(p1, px);
        // Relinking unchanged data keeps the ids.
        link(&mut m, &input());
        assert_eq!(pid(&m, "a", "1"), p1);
        // The second record gains the NHS number: one person, one alias.
        m.get_mut(&("b".to_string(), "x".to_string()))
            .unwrap()
            .nhs_number = Some("9434765919".into());
        let aliases = link(&mut m, &input()).aliases;
        let survivor = pid(&m, "a", "1");
        assert_eq!(survivor, pid(&m, "b", "x"));
        assert!(survivor == p1 || survivor == px);
        assert_eq!(aliases.len(), 1);
        // A fresh index over the same data gives the same ids as an incremental one would.
        let mut fresh = map(vec![rec(
            "a",
            "1",
            Some("9434765919"),
            Some("1950-01-31"),
            None,
        )]);
        link(&mut fresh, &input());
        assert_eq!(pid(&fresh, "a", "1"), p1);
    }

    fn person(
        source: &str,
        id: &str,
        nhs: Option<&str>,
        dob: &str,
        postcode: &str,
        labels: &str,
    ) -> SourceRecord {
        SourceRecord {
            family_name: Some("Okafor".into()),
            given_names: Some("Ada".into()),
            gender: Some("FEMALE".into()),
            postcode: Some(postcode.into()),
            labels: labels.into(),
            ..rec(source, id, nhs, Some(dob), None)
        }
    }

    /// Background population so that u is counted on realistic random pairs.
    fn crowd() -> Vec<SourceRecord> {
        let families = [
            "Smith", "Jones", "Patel", "Khan", "Wood", "Hall", "King", "Ward",
        ];
        let givens = ["Mary", "John", "Leo", "Ali", "Joan", "Mia", "Jack", "Ava"];
        (0..400)
            .map(|i| SourceRecord {
                family_name: Some(families[i % 8].into()),
                given_names: Some(givens[(i / 8) % 8].into()),
                gender: Some(if i % 2 == 0 { "MALE" } else { "FEMALE" }.into()),
                postcode: Some(format!("NS{} {}AB", i % 19 + 1, i % 9 + 1)),
                ..rec(
                    "crowd",
                    &i.to_string(),
                    None,
                    Some(&format!(
                        "19{:02}-{:02}-{:02}",
                        20 + i % 70,
                        1 + i % 12,
                        1 + i % 28
                    )),
                    None,
                )
            })
            .collect()
    }

    #[test]
    fn scores_link_swapped_dates_but_never_protected_records_or_two_nhs_numbers() {
        let mut rows = crowd();
        rows.extend([
            // Same person, day and month swapped, no NHS number on one side: linked.
            person("a", "1", Some("9434765919"), "1961-03-07", "NS4 1AB", ""),
            person("b", "1", None, "1961-07-03", "NS4 1AB", ""),
            // Same details but a neighbouring postcode, and restricted: review, not a
            // link.
            person("a", "2", None, "1970-05-20", "NS5 2AB", "restricted"),
            person("b", "2", None, "1970-05-20", "NS5 2AD", ""),
            // All five fields the same, restricted: a full trace links (a rule).
            person("a", "4", None, "1972-05-21", "NS7 4AB", "restricted"),
            person("b", "4", None, "1972-05-21", "NS7 4AB", ""),
            // Everything agrees except two different valid NHS numbers: review.
            person("a", "3", Some("4010232137"), "1980-02-14", "NS6 3AB", ""),
            person("b", "3", Some("9434765919"), "1980-02-14", "NS6 3AB", ""),
        ]);
        let mut m = map(rows);
        let out = link(&mut m, &input());
        assert_eq!(pid(&m, "a", "1"), pid(&m, "b", "1"));
        assert_eq!(
            m[&("b".to_string(), "1".to_string())].link_rule,
            "probabilistic"
        );
        assert_ne!(pid(&m, "a", "2"), pid(&m, "b", "2"));
        assert_ne!(pid(&m, "a", "3"), pid(&m, "b", "3"));
        assert_eq!(pid(&m, "a", "4"), pid(&m, "b", "4"));
        assert_eq!(
            m[&("b".to_string(), "4".to_string())].link_rule,
            "exact_trace"
        );
        let reasons: Vec<&str> = out.review.iter().map(|c| c.reason.as_str()).collect();
        assert!(
            reasons.iter().any(|r| r.starts_with("protected")),
            "{reasons:?}"
        );
        assert!(
            reasons.iter().any(|r| r.starts_with("different NHS")),
            "{reasons:?}"
        );
        let edge = out
            .edges
            .iter()
            .find(|e| e.rule == "probabilistic")
            .unwrap();
        assert!(edge
            .weights
            .iter()
            .any(|w| w.field == "birth_date" && w.level == "swapped"));

        // A steward's unlink beats the score; a steward's link beats the guard.
        let decisions = vec![
            LinkDecision {
                id: 1,
                action: DecisionAction::Unlink,
                a: ("a".into(), "1".into()),
                b: ("b".into(), "1".into()),
                reason: "checked".into(),
                decided_by: "s".into(),
                decided_at: "t".into(),
            },
            LinkDecision {
                id: 2,
                action: DecisionAction::Link,
                a: ("a".into(), "2".into()),
                b: ("b".into(), "2".into()),
                reason: "checked".into(),
                decided_by: "s".into(),
                decided_at: "t".into(),
            },
        ];
        let config = LinkageConfig::default();
        link(
            &mut m,
            &LinkInput {
                config: &config,
                decisions: &decisions,
                plan: PairPlan::Full,
                namespace: "test.example",
                population: None,
                reserved: None,
            },
        );
        assert_ne!(pid(&m, "a", "1"), pid(&m, "b", "1"));
        assert_eq!(pid(&m, "a", "2"), pid(&m, "b", "2"));
    }
}
