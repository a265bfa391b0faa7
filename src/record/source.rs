//! A configured source: a connector plus the vendor profile that maps its rows.

use std::sync::Arc;
use std::time::Duration;

use escr_connector::mapping::{columns_read, map_rows, map_rows_reading, Fields, MappingError};
use escr_connector::{sql, Connector, ConnectorError, EntityKind, Mapped, Value, VendorProfile};

/// How records are looked up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lookup {
    /// By the records' own local ids.
    ByKey,
    /// By their person's local ids.
    ByPerson,
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{}", connector_message(.source_name, .profile, *.entity, .error))]
    Connector {
        source_name: String,
        /// The vendor profile's name, and the entity whose SQL ran.
        profile: String,
        entity: EntityKind,
        error: ConnectorError,
    },
    #[error("source `{source_name}` did not answer within {0} ms", .millis)]
    Timeout { source_name: String, millis: u128 },
    #[error(transparent)]
    Mapping(#[from] MappingError),
    #[error("source `{source_name}` is unavailable: its people could not be read into the identity index, so some may be missing")]
    NotIndexed { source_name: String },
}

/// What a client may read: the source, and for a statement the engine refused, which
/// profile's SQL for which entity (the operator's to fix); never the SQL or the values.
fn connector_message(
    source_name: &str,
    profile: &str,
    entity: EntityKind,
    error: &ConnectorError,
) -> String {
    match error.kind {
        escr_connector::ErrorKind::Query => format!(
            "source `{source_name}` is unavailable: the `{profile}` profile's SQL for `{}` failed on the engine",
            entity.name()
        ),
        kind => format!("source `{source_name}` is unavailable ({kind})"),
    }
}

impl SourceError {
    pub fn source_name(&self) -> &str {
        match self {
            SourceError::Connector { source_name, .. }
            | SourceError::Timeout { source_name, .. }
            | SourceError::NotIndexed { source_name } => source_name,
            SourceError::Mapping(m) => &m.profile,
        }
    }
}

/// Key lists are padded with NULLs (which match nothing) to the next power of two, so
/// that a few statement texts serve every batch: engines cache prepared statements
/// and plans by text, and a profile of the reports (a different key count on every
/// page) spent 5% of its time preparing the same SQL again.
fn padded_len(keys: usize, max_batch: usize) -> usize {
    if keys == 0 {
        return 0;
    }
    keys.next_power_of_two().min(max_batch).max(keys)
}

pub struct Source {
    pub name: String,
    /// The council whose records these are (reports are per authority).
    pub authority: String,
    pub profile: VendorProfile,
    pub connector: Arc<dyn Connector>,
    pub timeout: Duration,
    /// What the last calls found (for `/readyz`, metrics, and index-based answers).
    pub health: Arc<super::health::SourceHealth>,
}

impl Source {
    pub fn holds(&self, entity: EntityKind) -> bool {
        self.profile.entity(entity).is_some()
    }

    /// Records of `entity` for `keys`, chunked by the connector's max batch, each chunk one
    /// statement with the keys bound as parameters.
    pub async fn fetch(
        &self,
        entity: EntityKind,
        lookup: Lookup,
        keys: &[String],
    ) -> Result<Mapped, SourceError> {
        self.fetch_reading(entity, lookup, keys, Fields::All).await
    }

    /// [`Source::fetch`], mapping only `fields` of each record (reports that count).
    pub async fn fetch_reading(
        &self,
        entity: EntityKind,
        lookup: Lookup,
        keys: &[String],
        fields: Fields<'_>,
    ) -> Result<Mapped, SourceError> {
        let Some(spec) = self.profile.entity(entity) else {
            return Ok(Mapped::default());
        };
        let sql_text = match lookup {
            Lookup::ByKey => spec.by_key.as_ref(),
            Lookup::ByPerson => spec.by_person.as_ref(),
        };
        let Some(sql_text) = sql_text else {
            return Ok(Mapped::default());
        };
        self.fetch_chunked(entity, sql_text.get_ref(), keys, &[], self.timeout, fields)
            .await
    }

    /// Records of `entity` for these people (local ids) active at some time between
    /// `from` and `to`, for reports. With the profile's `by_person_between` the range
    /// goes to the vendor SQL, widened by a day each side (whatever the column's type,
    /// the SQL returns a superset); without it, all their records. Either way only
    /// records active in the range are kept, so both give the same answer.
    pub async fn fetch_between(
        &self,
        entity: EntityKind,
        person_keys: &[String],
        window: super::window::Window,
        fields: Fields<'_>,
    ) -> Result<Mapped, SourceError> {
        let Some(spec) = self.profile.entity(entity) else {
            return Ok(Mapped::default());
        };
        // Reports are batch work, not a request: give them longer.
        let limit = self.timeout * 12;
        let mut mapped = match (&spec.by_person_between, &spec.by_person) {
            (Some(between), _) => {
                let from = Value::DateTime(
                    window
                        .from
                        .pred_opt()
                        .unwrap_or(window.from)
                        .and_time(chrono::NaiveTime::MIN),
                );
                let to = Value::DateTime(
                    window
                        .to
                        .succ_opt()
                        .unwrap_or(window.to)
                        .and_hms_opt(23, 59, 59)
                        .unwrap_or_default(),
                );
                self.fetch_chunked(
                    entity,
                    between.get_ref(),
                    person_keys,
                    &[("from", &from), ("to", &to)],
                    limit,
                    fields,
                )
                .await?
            }
            (None, Some(all)) => {
                self.fetch_chunked(entity, all.get_ref(), person_keys, &[], limit, fields)
                    .await?
            }
            (None, None) => return Ok(Mapped::default()),
        };
        mapped
            .records
            .retain(|r| super::window::active_in(r, window));
        Ok(mapped)
    }

    async fn fetch_chunked(
        &self,
        entity: EntityKind,
        sql_text: &str,
        keys: &[String],
        named: &[(&str, &Value)],
        limit: Duration,
        fields: Fields<'_>,
    ) -> Result<Mapped, SourceError> {
        let caps = self.connector.capabilities();
        let mut out: Option<Mapped> = None;
        let max_batch = caps.max_batch.max(1);
        let columns = self
            .profile
            .entity(entity)
            .and_then(|spec| columns_read(spec, fields));
        for chunk in keys.chunks(max_batch) {
            let mut key_values: Vec<Value> = chunk.iter().map(|k| Value::Text(k.clone())).collect();
            key_values.resize(padded_len(chunk.len(), max_batch), Value::Null);
            let bound = sql::bind_named(sql_text, &key_values, named, caps.placeholder);
            let rows = match &columns {
                None => {
                    self.run_with(entity, &bound.sql, &bound.params, limit)
                        .await?
                }
                Some(columns) => {
                    let call = self
                        .connector
                        .query_columns(&bound.sql, &bound.params, columns);
                    self.limited(entity, limit, call).await?
                }
            };
            let mapped = map_rows_reading(&self.profile, entity, rows, fields)?;
            // Most lookups are one chunk: its records are the answer, not copied.
            match &mut out {
                None => out = Some(mapped),
                Some(out) => {
                    out.records.extend(mapped.records);
                    out.findings.extend(mapped.findings);
                }
            }
        }
        Ok(out.unwrap_or_default())
    }

    /// Allocations to these workers by the profile's `by_worker` (`None` without one:
    /// the caller reads every person's allocations instead).
    pub async fn allocations_of_workers(
        &self,
        workers: &[String],
    ) -> Result<Option<Mapped>, SourceError> {
        let Some(sql_text) = self
            .profile
            .entity(EntityKind::Allocation)
            .and_then(|s| s.by_worker.as_ref())
        else {
            return Ok(None);
        };
        let mapped = self
            .fetch_chunked(
                EntityKind::Allocation,
                sql_text.get_ref(),
                workers,
                &[],
                self.timeout,
                Fields::All,
            )
            .await?;
        Ok(Some(mapped))
    }

    /// Every person record (for the identity index), or those changed after `since`.
    pub async fn list_people(
        &self,
        since: Option<chrono::NaiveDateTime>,
    ) -> Result<Mapped, SourceError> {
        let Some(spec) = self.profile.entity(EntityKind::Person) else {
            return Ok(Mapped::default());
        };
        let sql_text = match (since, &spec.changed_since, &spec.list) {
            (Some(_), Some(changed), _) => changed.get_ref(),
            (_, _, Some(list)) => list.get_ref(),
            _ => return Ok(Mapped::default()),
        };
        let since = since.filter(|_| spec.changed_since.is_some());
        let rows = self.list(sql_text, since).await?;
        Ok(map_rows(&self.profile, EntityKind::Person, rows)?)
    }

    /// A person listing: all of them, or with `{since}` bound. Listing a whole source
    /// is index work, not a request: it gets longer.
    async fn list(
        &self,
        sql_text: &str,
        since: Option<chrono::NaiveDateTime>,
    ) -> Result<escr_connector::RowSet, SourceError> {
        let since = since.map(Value::DateTime);
        let bound = sql::bind(
            sql_text,
            &[],
            since.as_ref(),
            self.connector.capabilities().placeholder,
        );
        self.run_with(
            EntityKind::Person,
            &bound.sql,
            &bound.params,
            self.timeout * 60,
        )
        .await
    }

    /// Local ids of person records the source deleted (or soft-deleted) after `since`,
    /// from the profile's `deleted_since`; none when the profile has no such SQL.
    pub async fn deleted_people(
        &self,
        since: chrono::NaiveDateTime,
    ) -> Result<Vec<String>, SourceError> {
        let Some(spec) = self.profile.entity(EntityKind::Person) else {
            return Ok(Vec::new());
        };
        let Some(deleted) = &spec.deleted_since else {
            return Ok(Vec::new());
        };
        let rows = self.list(deleted.get_ref(), Some(since)).await?;
        let column = spec
            .fields
            .iter()
            .find(|(k, _)| k.get_ref() == "local_id")
            .and_then(|(_, f)| rows.column_index(&f.get_ref().column));
        Ok(column
            .map(|c| {
                rows.rows
                    .iter()
                    .filter_map(|row| row[c].as_key_text())
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Rows of `entity` whose person does not exist, by the profile's `orphans`
    /// statement (`None` without one); for the data-quality report, never served.
    pub async fn orphans(&self, entity: EntityKind) -> Result<Option<Mapped>, SourceError> {
        let Some(sql_text) = self.profile.entity(entity).and_then(|s| s.orphans.as_ref()) else {
            return Ok(None);
        };
        let rows = self
            .run_with(entity, sql_text.get_ref(), &[], self.timeout * 12)
            .await?;
        Ok(Some(map_rows(&self.profile, entity, rows)?))
    }

    /// Run every statement of the profile once with no keys (`{keys}` binds NULL, so
    /// nothing matches) and the widest dates: what the engine thinks of each, per
    /// entity (`escr check-config --connect`). The engine's words are in the error's
    /// detail.
    pub async fn check_statements(
        &self,
    ) -> Vec<(EntityKind, &'static str, Result<(), ConnectorError>)> {
        let caps = self.connector.capabilities();
        let day = |y| {
            chrono::NaiveDate::from_ymd_opt(y, 1, 1)
                .unwrap_or_default()
                .and_time(chrono::NaiveTime::MIN)
        };
        let (from, to) = (Value::DateTime(day(1900)), Value::DateTime(day(2100)));
        let mut out = Vec::new();
        for entity in EntityKind::ALL {
            let Some(spec) = self.profile.entity(entity) else {
                continue;
            };
            let statements = [
                ("by_key", &spec.by_key),
                ("by_person", &spec.by_person),
                ("by_person_between", &spec.by_person_between),
                ("list", &spec.list),
                ("changed_since", &spec.changed_since),
                ("orphans", &spec.orphans),
                ("deleted_since", &spec.deleted_since),
                ("by_worker", &spec.by_worker),
            ];
            for (name, sql_text) in statements {
                let Some(sql_text) = sql_text else { continue };
                let bound = sql::bind_named(
                    sql_text.get_ref(),
                    &[],
                    &[("from", &from), ("to", &to), ("since", &to)],
                    caps.placeholder,
                );
                let result = match tokio::time::timeout(
                    self.timeout,
                    self.connector.query(&bound.sql, &bound.params),
                )
                .await
                {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(ConnectorError::timeout(format!(
                        "no answer within {} ms",
                        self.timeout.as_millis()
                    ))),
                };
                out.push((entity, name, result));
            }
        }
        out
    }

    /// Does the source answer now (within its time limit)? Errors as a query's would be.
    pub async fn check(&self) -> Result<(), SourceError> {
        self.limited(EntityKind::Person, self.timeout, self.connector.ping())
            .await
    }

    async fn run_with(
        &self,
        entity: EntityKind,
        sql_text: &str,
        params: &[Value],
        limit: Duration,
    ) -> Result<escr_connector::RowSet, SourceError> {
        self.limited(entity, limit, self.connector.query(sql_text, params))
            .await
    }

    /// A connector call within `limit`, its failure as a [`SourceError`]. Each call is
    /// a span (for traces), counted and timed per source and entity (metrics: source
    /// and entity names only, never keys).
    async fn limited<T>(
        &self,
        entity: EntityKind,
        limit: Duration,
        call: impl std::future::Future<Output = Result<T, ConnectorError>>,
    ) -> Result<T, SourceError> {
        use tracing::Instrument;
        let span = tracing::info_span!(
            "source call",
            source = %self.name,
            entity = entity.name(),
            engine = self.connector.engine(),
            outcome = tracing::field::Empty,
        );
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(limit, call)
            .instrument(span.clone())
            .await;
        let labels = [
            ("source", self.name.clone()),
            ("entity", entity.name().to_string()),
        ];
        metrics::counter!("escr_source_statements_total", &labels).increment(1);
        metrics::histogram!("escr_source_call_seconds", &labels)
            .record(started.elapsed().as_secs_f64());
        let failure = match result {
            Ok(Ok(value)) => {
                span.record("outcome", "ok");
                self.health.succeeded();
                return Ok(value);
            }
            Ok(Err(error)) => {
                // For the operator: the engine's own words (no values: they are bound).
                tracing::warn!(
                    parent: &span,
                    source = %self.name,
                    entity = entity.name(),
                    error = %error,
                    engine_reason = error.detail.as_deref().unwrap_or("none given"),
                    "source call failed"
                );
                SourceError::Connector {
                    source_name: self.name.clone(),
                    profile: self.profile.name().to_string(),
                    entity,
                    error,
                }
            }
            Err(_) => SourceError::Timeout {
                source_name: self.name.clone(),
                millis: limit.as_millis(),
            },
        };
        let kind = match &failure {
            SourceError::Connector { error, .. } => error.kind.to_string(),
            _ => "timeout".to_string(),
        };
        span.record("outcome", kind.as_str());
        metrics::counter!("escr_source_errors_total", "source" => self.name.clone(), "kind" => kind)
            .increment(1);
        self.health.failed(failure.to_string());
        Err(failure)
    }
}

#[cfg(test)]
mod tests {
    use super::padded_len;

    #[test]
    fn key_lists_pad_to_few_lengths_within_the_batch() {
        assert_eq!(padded_len(0, 1000), 0);
        assert_eq!(padded_len(1, 1000), 1);
        assert_eq!(padded_len(3, 1000), 4);
        assert_eq!(padded_len(513, 1000), 1000);
        assert_eq!(padded_len(1000, 1000), 1000);
        assert_eq!(padded_len(20, 2000), 32);
    }
}
