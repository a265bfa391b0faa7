//! examples/portal in a real browser (Debian's chromium, driven by playwright-core from
//! `tests/browser`): a social worker searches and opens a person allocated to them and
//! one who is not, on the shipped demo served by `escr serve`, the page on another
//! origin (CORS from `server.cors_origins`). Who is allocated to whom comes from
//! CaseTrak's own table, not from the gateway. Screenshots: `target/tmp/portal/`.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::support::demo;
use crate::support::shipped::{free_port, Shipped};

const WORKER: i64 = 7;
const TEAM: i64 = 3;

/// Serves `examples/portal`'s files on `port` (on a thread of its own).
fn serve_portal(port: u16) {
    use axum::extract::Path as UrlPath;
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    async fn file(name: Option<UrlPath<String>>) -> axum::response::Response {
        let name = name.map_or("index.html".to_string(), |n| n.0);
        let kind = match name.rsplit('.').next() {
            Some("html") => "text/html; charset=utf-8",
            Some("js") => "text/javascript",
            Some("css") => "text/css",
            _ => return StatusCode::NOT_FOUND.into_response(),
        };
        // Only the folder's own files: a name, no path.
        if name.contains('/') || name.starts_with('.') {
            return StatusCode::NOT_FOUND.into_response();
        }
        match std::fs::read(demo::repo().join("examples/portal").join(&name)) {
            Ok(bytes) => ([(header::CONTENT_TYPE, kind)], bytes).into_response(),
            Err(_) => StatusCode::NOT_FOUND.into_response(),
        }
    }
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let app = axum::Router::new()
                .route("/", axum::routing::get(|| file(None)))
                .route(
                    "/{name}",
                    axum::routing::get(|n: UrlPath<String>| file(Some(n))),
                );
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
}

/// CaseTrak clients with visits, unrestricted and not merged: one allocated to the
/// worker (now) with a letter on file, one allocated neither to the worker nor to the team.
fn pick_clients(casetrak: &std::path::Path) -> (String, String) {
    let db = rusqlite::Connection::open(casetrak).unwrap();
    let pick = |condition: &str, params: &[i64]| -> String {
        db.query_row(
            &format!(
                "SELECT CAST(c.CLNT_ID AS TEXT) FROM CLNT c WHERE c.RSTR_FLG = 'N' \
                 AND (c.MRG_TO_ID IS NULL OR c.MRG_TO_ID = '') \
                 AND EXISTS (SELECT 1 FROM VST v WHERE v.CLNT_ID = c.CLNT_ID) AND {condition} \
                 ORDER BY c.CLNT_ID LIMIT 1"
            ),
            rusqlite::params_from_iter(params),
            |r| r.get(0),
        )
        .unwrap()
    };
    (
        pick("EXISTS (SELECT 1 FROM ALLOC a WHERE a.CLNT_ID = c.CLNT_ID AND a.WRKR_ID = ?1 AND (a.END_DT IS NULL OR a.END_DT = '')) \
              AND EXISTS (SELECT 1 FROM DOC d WHERE d.CLNT_ID = c.CLNT_ID AND d.FILE_PATH <> '')", &[WORKER]),
        pick("NOT EXISTS (SELECT 1 FROM ALLOC a WHERE a.CLNT_ID = c.CLNT_ID AND (a.WRKR_ID = ?1 OR a.TEAM_ID = ?2))", &[WORKER, TEAM]),
    )
}

fn spaced(nhs: &str) -> String {
    format!("{} {} {}", &nhs[..3], &nhs[3..6], &nhs[6..])
}

#[test]
fn a_practitioner_sees_their_people_and_what_is_withheld_from_others() {
    let browser_dir = demo::repo().join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: `npm ci` in tests/browser (scripts/test-servers.sh does it)"
    );
    let portal_port = free_port();
    let origin = format!("http://127.0.0.1:{portal_port}");
    let shipped = Shipped::start(&format!("[server]\ncors_origins = [{origin:?}]\n"));
    serve_portal(portal_port);
    let token = shipped.token(&[
        "--role",
        "social_worker",
        "--worker",
        &WORKER.to_string(),
        "--team",
        &TEAM.to_string(),
        "--purpose",
        "direct_care",
    ]);
    let (allocated, unallocated) = pick_clients(&shipped.dir.path().join("data/demo/casetrak.db"));
    let lookup = |client: &str| -> Value {
        let r = shipped.graphql(
            &token,
            "direct_care",
            "query($l: String!) { personBySourceRecord(source: \"casetrak\", localId: $l) { id nhsNumber name { family given } timeline(first: 50) { totalCount } documents { contentUrl } } }",
            json!({"l": client}),
        );
        r["data"]["personBySourceRecord"].clone()
    };
    let (mine, other) = (lookup(&allocated), lookup(&unallocated));
    let family = mine["name"]["family"].as_str().unwrap().to_string();
    let search = shipped.graphql(
        &token,
        "direct_care",
        "query($n: String!) { searchPeople(name: $n, first: 20) { totalCount } }",
        json!({"n": family.to_lowercase()}),
    );
    let found_by_name = search["data"]["searchPeople"]["totalCount"]
        .as_u64()
        .unwrap();

    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("portal");
    std::fs::create_dir_all(&shots).unwrap();
    let case = |search: String, person: &Value, shot: &str| {
        json!({"token": token, "purpose": "direct_care", "search": search,
               "person": person["id"], "shot": shots.join(shot)})
    };
    let spec = json!({
        "portal": format!("{origin}/"),
        "gateway": shipped.base,
        "cases": [
            case(spaced(mine["nhsNumber"].as_str().unwrap()), &mine, "allocated.png"),
            case(spaced(other["nhsNumber"].as_str().unwrap()), &other, "unallocated.png"),
            case(family.to_lowercase(), &Value::Null, "search.png"),
        ],
    });
    let out = std::process::Command::new("node")
        .arg(browser_dir.join("portal.mjs"))
        .arg(spec.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    let seen = page["seen"].as_array().unwrap();

    // The allocated person: the whole record, nothing withheld.
    let a = &seen[0]["person"];
    assert!(
        a["heading"].as_str().unwrap().contains(&family),
        "{}",
        seen[0]
    );
    assert!(a["ids"]
        .as_str()
        .unwrap()
        .contains(&format!("casetrak {allocated}")));
    let timeline = mine["timeline"]["totalCount"].as_u64().unwrap();
    assert!(timeline > 0, "the client has visits: {mine}");
    let rows = |person: &Value, field: &str| {
        person["sections"][field]["rows"]
            .as_array()
            .unwrap()
            .clone()
    };
    assert_eq!(rows(a, "timeline").len() as u64, timeline.min(50));
    assert!(
        rows(a, "timeline").iter().any(|r| r[1] == "VISIT"),
        "{}",
        seen[0]
    );
    for (field, section) in a["sections"].as_object().unwrap() {
        assert_eq!(section["withheld"], json!([]), "{field}: {}", seen[0]);
    }
    // Their letters, as many as the gateway gives, and the first one opens: the file's
    // bytes fetched with the page's token, a PDF or text letter of the demo.
    let letters = mine["documents"].as_array().unwrap().len();
    assert!(letters > 0, "the client has a letter on file: {mine}");
    assert_eq!(rows(a, "documents").len(), letters, "{}", seen[0]);
    let opened = &a["opened"];
    assert!(
        opened["text"].as_str().unwrap().starts_with("Opened"),
        "{opened}"
    );
    assert!(opened["bytes"].as_u64().unwrap() > 0, "{opened}");
    assert!(
        ["application/pdf", "text/plain"]
            .iter()
            .any(|t| opened["type"].as_str().unwrap().starts_with(t)),
        "{opened}"
    );

    // The other person: demographics, the record withheld with its reason.
    let b = &seen[1]["person"];
    let other_family = other["name"]["family"].as_str().unwrap();
    assert!(
        b["heading"].as_str().unwrap().contains(other_family),
        "{}",
        seen[1]
    );
    let withheld = &b["sections"]["timeline"]["withheld"];
    assert_eq!(withheld[0]["code"], "NO_RELATIONSHIP", "{}", seen[1]);
    assert!(
        withheld[0]["text"]
            .as_str()
            .unwrap()
            .contains("no allocation of you or your team"),
        "{withheld}"
    );
    // The client's visits are in CaseTrak; none is shown, nor anything but the
    // demographics (addresses, relationships) the purpose releases without allocation.
    for row in rows(b, "timeline") {
        assert!(
            ["ADDRESS", "RELATIONSHIP"].contains(&row[1].as_str().unwrap()),
            "{row}: {}",
            seen[1]
        );
    }
    for field in ["services", "episodes", "alerts", "allocations", "documents"] {
        assert_eq!(
            rows(b, field).len(),
            0,
            "{field} of an unallocated person: {}",
            seen[1]
        );
    }

    // A search by name lists what the gateway counts.
    assert!(
        seen[2]["status"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{found_by_name} found")),
        "{}",
        seen[2]
    );
    assert!(
        seen[2]["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == mine["id"]),
        "{}",
        seen[2]
    );

    // Only the portal and the gateway were called; no script failed.
    for url in page["requests"].as_array().unwrap() {
        let url = url.as_str().unwrap();
        assert!(
            url.starts_with(&origin) || url.starts_with(&shipped.base),
            "{url}"
        );
    }
    assert!(
        !page["console"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m.as_str().unwrap().starts_with("pageerror")),
        "{}",
        page["console"]
    );
    for shot in ["allocated.png", "unallocated.png", "search.png"] {
        let bytes = std::fs::read(shots.join(shot)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{shot}");
    }
}

/// GraphiQL as a platform team meets it on a network without internet: every request
/// off the gateway's origin is refused, the page renders from the binary's assets, and
/// after a token is pasted the schema loads without a manual re-fetch.
#[test]
fn graphiql_works_offline_and_loads_the_schema_after_a_token() {
    let browser_dir = demo::repo().join("tests/browser");
    let shipped = Shipped::start("");
    let token = shipped.token(&["--role", "team_manager", "--purpose", "care_management"]);
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("portal");
    std::fs::create_dir_all(&shots).unwrap();
    let out = std::process::Command::new("node")
        .arg(browser_dir.join("graphiql.mjs"))
        .arg(format!("{}/graphql", shipped.base))
        .arg(&token)
        .arg(shots.join("graphiql.png"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page["rendered"], true, "{page}");
    assert_eq!(page["refused"], json!([]), "the page asked outside: {page}");
    assert_eq!(page["headers"], "set", "{page}");
    let docs = page["docs"].as_str().unwrap();
    assert!(
        docs.contains("Query") && docs.contains("Mutation"),
        "the schema did not load after the token: {page}"
    );
    let errors: Vec<&Value> = page["console"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m.as_str().unwrap_or("").starts_with("pageerror"))
        .collect();
    assert!(errors.is_empty(), "{page}");
}
