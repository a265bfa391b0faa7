//! The list queries `myCaseload` and `people` on the demo data: the caseload against
//! CaseTrak's ALLOC table read directly, paging that visits every item once, the role
//! option `may_list_people`, and people the caller may not see neither listed nor
//! counted.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::consent::{errors_at, person_ids, secured_config, secured_with, Caller, Secured};
use crate::support::demo;

const CASELOAD: &str =
    "query($first: Int, $after: String) { myCaseload(first: $first, after: $after) {
  totalCount pageInfo { hasNextPage endCursor }
  edges { cursor node { id sourceRecords { source localId } } } } }";

const PEOPLE: &str = "query($first: Int, $after: String) { people(first: $first, after: $after) {
  totalCount pageInfo { hasNextPage endCursor }
  edges { cursor node { id sourceRecords { source localId } } } } }";

/// Every page of `field`, `first` at a time: the nodes in order. Each page agrees on
/// the total, which equals the number of nodes; no node comes twice.
async fn all_pages(s: &Secured, caller: &Caller, query: &str, field: &str) -> Vec<Value> {
    let mut nodes = Vec::new();
    let mut after = Value::Null;
    let mut totals = BTreeSet::new();
    loop {
        let r = s
            .run(caller, query, json!({"first": 3, "after": after}))
            .await;
        // Errors inside a node (a field the caller may not read) are the node's own.
        assert!(errors_at(&r, &[field]).is_empty(), "{r}");
        let conn = &r["data"][field];
        totals.insert(conn["totalCount"].as_u64().unwrap());
        let edges = conn["edges"].as_array().unwrap();
        assert!(edges.len() <= 3, "{conn}");
        for e in edges {
            let cursor = e["cursor"].as_str().unwrap();
            let id = e["node"]["id"].as_str().unwrap();
            assert!(
                !cursor.contains(id),
                "a cursor carries no person id in clear"
            );
            nodes.push(e["node"].clone());
        }
        if !conn["pageInfo"]["hasNextPage"].as_bool().unwrap() {
            break;
        }
        after = conn["pageInfo"]["endCursor"].clone();
    }
    let ids: Vec<&str> = nodes.iter().map(|n| n["id"].as_str().unwrap()).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "every person once");
    assert_eq!(totals.len(), 1, "one total on every page: {totals:?}");
    assert_eq!(totals.first().copied(), Some(ids.len() as u64));
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, ids, "stable id order");
    nodes
}

fn casetrak_ids(node: &Value) -> BTreeSet<i64> {
    node["sourceRecords"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["source"] == "casetrak")
        .map(|r| r["localId"].as_str().unwrap().parse().unwrap())
        .collect()
}

fn worker(id: &str) -> Caller {
    Caller {
        worker: Some(id.into()),
        team: Some("3".into()),
        ..Caller::new("social_worker", "direct_care")
    }
}

/// The worker's caseload is exactly the clients ALLOC allocates to them today, read
/// from the SQLite file; with allocations the generator never writes (several per
/// client, not started yet, ended, ending today, with no start), in a copy of the
/// clean CaseTrak database.
#[tokio::test]
async fn my_caseload_is_the_alloc_table() {
    caseload_against_alloc(true).await;
}

/// The same caseload from a profile without `by_worker`: read from every person's
/// allocations instead.
#[tokio::test]
async fn my_caseload_without_by_worker_is_the_alloc_table() {
    caseload_against_alloc(false).await;
}

async fn caseload_against_alloc(by_worker: bool) {
    let demo = demo::clean();
    let db = std::sync::Mutex::new(None);
    let s = secured_config(demo, "", |text, work| {
        let copy = work.join("casetrak.db");
        std::fs::copy(demo.dir.join("casetrak.db"), &copy).unwrap();
        *db.lock().unwrap() = Some(copy.clone());
        let mut text = text.replace(
            &format!("{:?}", demo.dir.join("casetrak.db")),
            &format!("{copy:?}"),
        );
        if !by_worker {
            let shipped = demo::repo().join("config/vendors/casetrak.toml");
            let profile = std::fs::read_to_string(&shipped).unwrap();
            let without: String = profile
                .lines()
                .filter(|l| !l.starts_with("by_worker ="))
                .map(|l| format!("{l}\n"))
                .collect();
            assert_ne!(without, profile, "the shipped profile has by_worker");
            let own = work.join("casetrak.toml");
            std::fs::write(&own, without).unwrap();
            text = text.replace(&format!("{shipped:?}"), &format!("{own:?}"));
        }
        text
    })
    .await;
    let db = db.into_inner().unwrap().unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (w, others): (i64, Vec<i64>) = {
        let w: i64 = conn
            .query_row(
                "SELECT WRKR_ID FROM ALLOC GROUP BY WRKR_ID ORDER BY COUNT(*) DESC, WRKR_ID LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let mut stmt = conn
            .prepare("SELECT DISTINCT CLNT_ID FROM ALLOC WHERE CLNT_ID NOT IN (SELECT CLNT_ID FROM ALLOC WHERE WRKR_ID = ?1) ORDER BY CLNT_ID LIMIT 5")
            .unwrap();
        let others = stmt
            .query_map([w], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        (w, others)
    };
    let today = chrono::Utc::now().date_naive();
    let day = |d: i64| format!("{} 00:00:00.000", today + chrono::Duration::days(d));
    let rows: [(i64, Option<String>, Option<String>); 5] = [
        (others[0], Some(day(1)), None), // starts tomorrow: not yet
        (others[1], Some(day(-30)), Some(day(-1))), // ended yesterday
        (others[2], Some(day(-30)), Some(day(0))), // ends today: still current
        (others[3], None, None),         // no start recorded: current
        (others[4], Some(day(0)), Some(day(400))), // starts today
    ];
    for (client, start, end) in &rows {
        conn.execute(
            "INSERT INTO ALLOC (CLNT_ID, WRKR_ID, TEAM_ID, ST_DT, END_DT) VALUES (?1, ?2, 9, ?3, ?4)",
            rusqlite::params![client, w, start, end],
        )
        .unwrap();
    }
    // End one of the generator's allocations of this worker (the client keeps none).
    conn.execute(
        "UPDATE ALLOC SET END_DT = ?1 WHERE ALLOC_ID = (SELECT MIN(ALLOC_ID) FROM ALLOC WHERE WRKR_ID = ?2)",
        rusqlite::params![day(-2), w],
    )
    .unwrap();
    let truth: BTreeSet<i64> = {
        let mut stmt = conn
            .prepare(
                "SELECT DISTINCT CLNT_ID FROM ALLOC WHERE WRKR_ID = ?1
                 AND (ST_DT IS NULL OR date(ST_DT) <= date('now'))
                 AND (END_DT IS NULL OR date(END_DT) >= date('now'))",
            )
            .unwrap();
        stmt.query_map([w], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert!(truth.len() > 5, "a caseload worth paging: {truth:?}");
    for (i, expected) in [(0, false), (1, false), (2, true), (3, true), (4, true)] {
        assert_eq!(truth.contains(&others[i]), expected, "row {i}");
    }
    s.gateway.fetcher.clear_cache();

    let nodes = all_pages(&s, &worker(&w.to_string()), CASELOAD, "myCaseload").await;
    let listed: BTreeSet<i64> = nodes.iter().flat_map(casetrak_ids).collect();
    assert!(
        truth.is_subset(&listed),
        "missing: {:?}",
        truth.difference(&listed)
    );
    for n in &nodes {
        assert!(
            !casetrak_ids(n).is_disjoint(&truth),
            "listed without a current allocation: {n}"
        );
    }

    // Another worker's caseload shares no one with this one's new rows; a token
    // without a worker id has no caseload.
    let none = s
        .run(
            &Caller::new("safeguarding_lead", "safeguarding"),
            CASELOAD,
            json!({"first": 3}),
        )
        .await;
    assert_eq!(
        none["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{none}"
    );
    assert!(none["data"].is_null(), "{none}");
}

/// `people` visits the whole index once, in pages, for a role with `may_list_people`;
/// a role without it is refused; a cursor of one caller is no cursor for another;
/// every person listed is audited as released.
#[tokio::test]
async fn people_pages_the_index_for_roles_that_may_list() {
    let demo = demo::clean();
    let s = secured_with(demo, "").await;
    let lead = Caller::new("safeguarding_lead", "safeguarding");
    let nodes = all_pages(&s, &lead, PEOPLE, "people").await;
    let listed: Vec<String> = nodes
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        listed,
        person_ids(&s),
        "every person of the index, in id order"
    );
    let audited = s.access().audit.for_person(&listed[0]).await.unwrap();
    assert!(
        audited.iter().any(|e| e.decision == "released"),
        "{audited:?}"
    );

    for refused in [
        worker("7"),
        Caller::new("analyst", "planning"),
        Caller::new("caldicott_guardian", "care_management"),
    ] {
        let r = s.run(&refused, PEOPLE, json!({"first": 5})).await;
        assert_eq!(r["errors"][0]["extensions"]["code"], "FORBIDDEN", "{r}");
        assert!(r["data"].is_null(), "nothing listed or counted: {r}");
    }

    let page = s.run(&lead, PEOPLE, json!({"first": 2})).await;
    let cursor = page["data"]["people"]["pageInfo"]["endCursor"].clone();
    let steward = Caller::new("data_steward", "care_management");
    let other = s
        .run(&steward, PEOPLE, json!({"first": 2, "after": cursor}))
        .await;
    assert_eq!(
        other["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{other}"
    );
}

/// People the caller may not see are not listed and not counted: the national data
/// opt-out for a planning role that may list, and everyone but themself for a role
/// that sees only its own record.
#[tokio::test]
async fn people_the_caller_may_not_see_are_neither_listed_nor_counted() {
    let demo = demo::clean();
    let s = secured_with(
        demo,
        "\n[roles.list_planner]\npurposes = [\"planning\"]\nmay_list_people = true\n\
         \n[roles.own_lister]\npurposes = [\"direct_care\"]\nown_record_only = true\nmay_list_people = true\n",
    )
    .await;
    let everyone = person_ids(&s);
    let snapshot = s.plain.gateway.index.snapshot();
    let opted_out_by_file: BTreeSet<&String> = {
        let listed = crate::consent::opt_out_list(demo);
        everyone
            .iter()
            .filter(|id| {
                snapshot
                    .nhs_numbers_of(id)
                    .iter()
                    .any(|n| listed.contains(n))
            })
            .collect()
    };
    assert!(
        !opted_out_by_file.is_empty(),
        "the demo has opted-out people"
    );

    let planner = Caller::new("list_planner", "planning");
    let nodes = all_pages(&s, &planner, PEOPLE, "people").await;
    let listed: BTreeSet<String> = nodes
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect();
    for id in &opted_out_by_file {
        assert!(!listed.contains(*id), "opted out, yet listed: {id}");
    }
    assert!(listed.len() + opted_out_by_file.len() <= everyone.len());
    assert!(!listed.is_empty());
    // A lookup by id as the same caller agrees on everyone.
    for id in &everyone {
        let r = s
            .run(
                &planner,
                "query($id: ID!) { person(id: $id) { id } }",
                json!({"id": id}),
            )
            .await;
        assert_eq!(
            !r["data"]["person"].is_null(),
            listed.contains(id),
            "{id}: {r}"
        );
    }

    let me = &everyone[everyone.len() / 2];
    let own = Caller {
        person: Some(me.clone()),
        ..Caller::new("own_lister", "direct_care")
    };
    let r = s.run(&own, PEOPLE, json!({"first": 50})).await;
    assert!(r["errors"].is_null(), "{r}");
    assert_eq!(r["data"]["people"]["totalCount"], 1, "{r}");
    assert_eq!(r["data"]["people"]["edges"][0]["node"]["id"], me.as_str());
}

/// Every cursor the API gives resumes right after its own item: a person's timeline
/// paged three at a time by `endCursor` is the whole timeline in order, each item once,
/// and any edge's cursor resumes right after that edge, in the timeline and in the
/// people list. (Cursors are sealed when asked for, the page's apart from its last
/// edge's: the two texts differ and both resume at the same place.)
#[tokio::test]
async fn every_cursor_given_resumes_right_after_its_item() {
    const TIMELINE: &str = "query($id: ID!, $first: Int!, $after: String) { person(id: $id) {
      timeline(first: $first, after: $after) { totalCount pageInfo { hasNextPage endCursor }
        edges { cursor node { kind at provenance { source localId } } } } } }";
    let demo = demo::clean();
    let s = secured_with(demo, "").await;
    let lead = Caller::new("safeguarding_lead", "safeguarding");
    let who = s
        .run(
            &lead,
            r#"{ personBySourceRecord(source: "casetrak", localId: "1014") { id } }"#,
            json!({}),
        )
        .await;
    let id = who["data"]["personBySourceRecord"]["id"].clone();
    assert!(id.is_string(), "{who}");
    let timeline = |first: usize, after: Value| {
        let (s, lead, id) = (&s, &lead, id.clone());
        async move {
            let r = s
                .run(
                    lead,
                    TIMELINE,
                    json!({"id": id, "first": first, "after": after}),
                )
                .await;
            assert!(r.get("errors").is_none(), "{r}");
            r["data"]["person"]["timeline"].clone()
        }
    };
    let whole = timeline(500, Value::Null).await;
    let items: Vec<Value> = (whole["edges"].as_array().unwrap().iter())
        .map(|e| e["node"].clone())
        .collect();
    assert!(items.len() > 7, "a timeline long enough to page: {whole}");
    assert_eq!(whole["totalCount"], json!(items.len()));

    let (mut paged, mut after) = (Vec::new(), Value::Null);
    loop {
        let page = timeline(3, after).await;
        let edges = page["edges"].as_array().unwrap().clone();
        if let Some(last) = edges.last() {
            assert_ne!(
                last["cursor"], page["pageInfo"]["endCursor"],
                "sealed apart"
            );
        }
        // The middle edge's own cursor resumes after it.
        if edges.len() == 3 {
            let next = timeline(1, edges[1]["cursor"].clone()).await;
            assert_eq!(next["edges"][0]["node"], edges[2]["node"], "{next}");
        }
        paged.extend(edges.iter().map(|e| e["node"].clone()));
        if !page["pageInfo"]["hasNextPage"].as_bool().unwrap() {
            break;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(
        paged, items,
        "the pages are the timeline, in order, each item once"
    );

    let people = s.run(&lead, PEOPLE, json!({"first": 4})).await;
    let edges = people["data"]["people"]["edges"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(edges.len(), 4, "{people}");
    for (i, edge) in edges.iter().enumerate().take(3) {
        let next = s
            .run(&lead, PEOPLE, json!({"first": 1, "after": edge["cursor"]}))
            .await;
        assert_eq!(
            next["data"]["people"]["edges"][0]["node"]["id"],
            edges[i + 1]["node"]["id"],
            "{next}"
        );
    }
}
