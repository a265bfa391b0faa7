//! The conformance suite every connector and every vendor profile must pass.
//!
//! Engines differ; these checks pin down what the gateway relies on, whatever the
//! engine: bound parameters come back verbatim (so nothing is spliced into SQL), errors
//! have kinds, statements are counted, key lists are chunked without changing results,
//! and a profile's SQL runs and maps on the engine it targets.
//!
//! Each function returns the failed checks (empty = conformant), so a test can print
//! them all at once: `assert!(failures.is_empty(), "{failures:#?}")`.

use std::collections::BTreeSet;

use crate::catalog::EntityKind;
use crate::mapping::map_rows;
use crate::{sql, Connector, ErrorKind, Value, VendorProfile};

/// A failed check: what was checked and what happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub check: String,
    pub detail: String,
}

fn fail(out: &mut Vec<Failure>, check: &str, detail: impl Into<String>) {
    out.push(Failure {
        check: check.to_string(),
        detail: detail.into(),
    });
}

/// Strings that would change a statement if they were ever spliced into it.
pub const HOSTILE_TEXTS: [&str; 6] = [
    "O'Brien",
    "x'); DROP TABLE CLNT; --",
    "\" OR 1=1 --",
    "Zoë Łukasz 王芳 🙂",
    "back\\slash",
    "",
];

/// Engine-level checks that need no tables.
pub async fn check_connector(conn: &dyn Connector) -> Vec<Failure> {
    let mut out = Vec::new();
    let caps = conn.capabilities();
    if caps.max_batch == 0 {
        fail(&mut out, "capabilities", "max_batch is 0");
    }

    let before = conn.statements_executed();
    for text in HOSTILE_TEXTS {
        let bound = sql::bind(
            "SELECT {keys} AS V",
            &[Value::from(text)],
            None,
            caps.placeholder,
        );
        match conn.query(&bound.sql, &bound.params).await {
            Ok(rows) => {
                let got = rows.rows.first().and_then(|r| r.first()).cloned();
                let ok = match &got {
                    Some(Value::Text(t)) => t == text,
                    // Some engines return '' as NULL (Oracle-style drivers); accept only for ''.
                    Some(Value::Null) => text.is_empty(),
                    _ => false,
                };
                if !ok {
                    fail(
                        &mut out,
                        "bound text round trip",
                        format!("sent {text:?}, got {got:?}"),
                    );
                }
                if rows.columns.len() != 1 || !rows.columns[0].eq_ignore_ascii_case("V") {
                    fail(
                        &mut out,
                        "column names",
                        format!("expected [V], got {:?}", rows.columns),
                    );
                }
            }
            Err(e) => fail(&mut out, "bound text round trip", format!("{text:?}: {e}")),
        }
    }
    let bound = sql::bind(
        "SELECT {keys} AS V",
        &[Value::Int(42)],
        None,
        caps.placeholder,
    );
    match conn.query(&bound.sql, &bound.params).await {
        Ok(rows) => match rows.rows.first().and_then(|r| r.first()) {
            Some(Value::Int(42)) => {}
            Some(Value::Float(f)) if *f == 42.0 => {}
            Some(Value::Text(t)) if t == "42" => {}
            other => fail(
                &mut out,
                "bound integer round trip",
                format!("got {other:?}"),
            ),
        },
        Err(e) => fail(&mut out, "bound integer round trip", e.to_string()),
    }
    // A reader naming its columns gets their cells as `query` gives them.
    let bound = sql::bind(
        "SELECT {keys} AS V",
        &[Value::from("O'Brien")],
        None,
        caps.placeholder,
    );
    match (
        conn.query(&bound.sql, &bound.params).await,
        conn.query_columns(&bound.sql, &bound.params, &["v"]).await,
    ) {
        (Ok(all), Ok(some)) if all == some => {}
        (all, some) => fail(
            &mut out,
            "query_columns gives the named columns as query does",
            format!("query: {all:?}, query_columns: {some:?}"),
        ),
    }
    let counted = conn.statements_executed().saturating_sub(before);
    if counted != HOSTILE_TEXTS.len() as u64 + 3 {
        fail(
            &mut out,
            "statement counter",
            format!(
                "ran {} statements, counter moved by {counted}",
                HOSTILE_TEXTS.len() + 3
            ),
        );
    }

    match conn.query("SELECT FROM WHERE nonsense((", &[]).await {
        Ok(_) => fail(&mut out, "bad SQL is an error", "the engine accepted it"),
        Err(e) => {
            if e.kind != ErrorKind::Query {
                fail(
                    &mut out,
                    "bad SQL is a Query error",
                    format!("kind {:?}", e.kind),
                );
            }
            if e.message.contains("nonsense") {
                fail(&mut out, "errors carry no SQL text", e.message.clone());
            }
        }
    }
    if let Err(e) = conn.ping().await {
        fail(&mut out, "ping after an error", e.to_string());
    }
    out
}

/// Profile checks on a database holding the vendor's data: every entity's SQL runs and
/// maps, key lists larger than the connector's batch give the same records as one key
/// at a time, and records come back under the keys they were asked for.
pub async fn check_profile(
    conn: &dyn Connector,
    profile: &VendorProfile,
    person_keys: &[String],
) -> Vec<Failure> {
    let mut out = Vec::new();
    let caps = conn.capabilities();
    let name = profile.name().to_string();
    let asked: BTreeSet<&str> = person_keys.iter().map(String::as_str).collect();

    for (entity, spec) in profile.entities() {
        let check = |what: &str| format!("{name}.{entity}: {what}");
        let (sql_text, by_person) = match (&spec.by_person, &spec.by_key) {
            (Some(s), _) => (s.get_ref(), true),
            (None, Some(s)) if entity == EntityKind::Person => (s.get_ref(), false),
            _ => continue,
        };
        let keys: Vec<Value> = person_keys
            .iter()
            .map(|k| Value::from(k.as_str()))
            .collect();

        // All keys at once (chunked as the gateway does).
        let mut all = Vec::new();
        let mut failed = false;
        for chunk in keys.chunks(caps.max_batch.max(1)) {
            let bound = sql::bind(sql_text, chunk, None, caps.placeholder);
            match conn.query(&bound.sql, &bound.params).await {
                Ok(rows) => match map_rows(profile, entity, rows) {
                    Ok(m) => all.extend(m.records),
                    Err(e) => {
                        fail(&mut out, &check("maps"), e.to_string());
                        failed = true;
                    }
                },
                Err(e) => {
                    fail(&mut out, &check("SQL runs"), e.to_string());
                    failed = true;
                }
            }
        }
        if failed {
            continue;
        }
        for r in &all {
            let key = if by_person {
                r.person_id.as_deref()
            } else {
                Some(r.local_id.as_str())
            };
            if !key.is_some_and(|k| asked.contains(k)) {
                fail(
                    &mut out,
                    &check("records belong to the keys asked"),
                    format!("record {} under {key:?}", r.local_id),
                );
                break;
            }
        }

        // The same keys in chunks of three must give the same records.
        let mut chunked = Vec::new();
        for chunk in keys.chunks(3) {
            let bound = sql::bind(sql_text, chunk, None, caps.placeholder);
            if let Ok(rows) = conn.query(&bound.sql, &bound.params).await {
                if let Ok(m) = map_rows(profile, entity, rows) {
                    chunked.extend(m.records);
                }
            }
        }
        let ids = |v: &[crate::Record]| {
            v.iter()
                .map(|r| r.local_id.clone())
                .collect::<BTreeSet<_>>()
        };
        if ids(&all) != ids(&chunked) {
            fail(
                &mut out,
                &check("chunking does not change results"),
                format!("{} vs {} records", all.len(), chunked.len()),
            );
        }

        // By key: each record found again by its own id.
        if let Some(by_key) = &spec.by_key {
            let sample: Vec<Value> = all
                .iter()
                .take(50)
                .map(|r| Value::from(r.local_id.as_str()))
                .collect();
            let bound = sql::bind(by_key.get_ref(), &sample, None, caps.placeholder);
            match conn.query(&bound.sql, &bound.params).await {
                Ok(rows) => match map_rows(profile, entity, rows) {
                    Ok(m) => {
                        let want: BTreeSet<String> =
                            all.iter().take(50).map(|r| r.local_id.clone()).collect();
                        if ids(&m.records) != want {
                            fail(
                                &mut out,
                                &check("by_key finds the records by_person found"),
                                format!("{} of {}", m.records.len(), want.len()),
                            );
                        }
                    }
                    Err(e) => fail(&mut out, &check("by_key maps"), e.to_string()),
                },
                Err(e) => fail(&mut out, &check("by_key SQL runs"), e.to_string()),
            }
        }

        // By worker: the allocations by_person found for some workers, and no other
        // worker's (the worker ids are asked for as keys).
        if let Some(by_worker) = &spec.by_worker {
            let workers: BTreeSet<String> = all
                .iter()
                .filter_map(|r| r.text("worker_id").map(str::to_string))
                .take(5)
                .collect();
            let keys: Vec<Value> = workers.iter().map(|w| Value::from(w.as_str())).collect();
            let bound = sql::bind(by_worker.get_ref(), &keys, None, caps.placeholder);
            match conn.query(&bound.sql, &bound.params).await {
                Ok(rows) => match map_rows(profile, entity, rows) {
                    Ok(m) => {
                        let theirs = |r: &&crate::Record| {
                            r.text("worker_id").is_some_and(|w| workers.contains(w))
                        };
                        if let Some(r) = m.records.iter().find(|r| !theirs(r)) {
                            fail(
                                &mut out,
                                &check("by_worker finds only the workers' allocations"),
                                format!("record {} of another worker", r.local_id),
                            );
                        }
                        let found = ids(&m.records);
                        let missed = all
                            .iter()
                            .filter(theirs)
                            .filter(|r| !found.contains(&r.local_id))
                            .count();
                        if missed > 0 {
                            fail(
                                &mut out,
                                &check("by_worker finds the allocations by_person found"),
                                format!("{missed} missed"),
                            );
                        }
                    }
                    Err(e) => fail(&mut out, &check("by_worker maps"), e.to_string()),
                },
                Err(e) => fail(&mut out, &check("by_worker SQL runs"), e.to_string()),
            }
        }

        // An empty key list is valid SQL and finds nothing.
        let bound = sql::bind(sql_text, &[], None, caps.placeholder);
        match conn.query(&bound.sql, &bound.params).await {
            Ok(rows) if rows.is_empty() => {}
            Ok(rows) => fail(
                &mut out,
                &check("empty key list finds nothing"),
                format!("{} rows", rows.len()),
            ),
            Err(e) => fail(
                &mut out,
                &check("empty key list is valid SQL"),
                e.to_string(),
            ),
        }
    }

    if let Some(list) = profile
        .entity(EntityKind::Person)
        .and_then(|p| p.list.as_ref())
    {
        match conn.query(list.get_ref(), &[]).await {
            Ok(rows) => match map_rows(profile, EntityKind::Person, rows) {
                Ok(m) if m.records.is_empty() => {
                    fail(&mut out, &format!("{name}.person: list"), "no people")
                }
                Ok(_) => {}
                Err(e) => fail(
                    &mut out,
                    &format!("{name}.person: list maps"),
                    e.to_string(),
                ),
            },
            Err(e) => fail(
                &mut out,
                &format!("{name}.person: list SQL runs"),
                e.to_string(),
            ),
        }
    }
    out
}
