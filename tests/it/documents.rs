//! Documents' content through HTTP (`GET /documents/{id}/content`, `Document.contentUrl`):
//! the demo's CaseTrak letters on a folder store (the vendor's UNC paths rewritten onto
//! it) and SSIS/90's plain-text letters, PostRoom's email attachments (a vendor unlike
//! the generator's, `tests/fixtures/postroom.sql`) on a document service the test runs
//! on loopback (axum with tower-http's `ServeDir`, behind a bearer token). Ground truth
//! is what the vendor databases and the files hold.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::response::IntoResponse;
use escr_gateway::api::gateway::Gateway;
use escr_gateway::consent::auth::Claims;
use escr_gateway::consent::AccessControl;
use reqwest::header::HeaderMap;
use serde_json::{json, Value};

use crate::support::demo::{self, Demo};

const DAV_TOKEN: &str = "dav-token-for-the-tests";

/// A caller: role, purpose, and the allocation claims.
#[derive(Clone, Default)]
struct Who {
    role: &'static str,
    purpose: &'static str,
    worker: Option<String>,
    team: Option<String>,
}

fn who(role: &'static str, purpose: &'static str) -> Who {
    Who {
        role,
        purpose,
        ..Who::default()
    }
}

/// A document service on loopback: the files under `root` at `/dav/`, for requests
/// with the bearer token; every request path it was asked for is kept.
struct Dav {
    url: String,
    asked: Arc<Mutex<Vec<String>>>,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    task: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Dav {
    /// Stop answering: no new connections, the idle ones closed.
    async fn stop(&self) {
        if let Some(stop) = self.stop.lock().unwrap().take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.lock().await.take() {
            task.await.unwrap();
        }
    }
}

async fn start_dav(root: &Path) -> Dav {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = asked.clone();
    let files = tower_http::services::ServeDir::new(root);
    let app = axum::Router::new()
        .nest_service("/dav", files)
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let log = log.clone();
                async move {
                    log.lock().unwrap().push(request.uri().path().to_string());
                    let authorised = request
                        .headers()
                        .get("authorization")
                        .is_some_and(|v| v == format!("Bearer {DAV_TOKEN}").as_str());
                    if !authorised {
                        return axum::http::StatusCode::UNAUTHORIZED.into_response();
                    }
                    next.run(request).await
                }
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/dav/", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Dav {
        url,
        asked,
        stop: Mutex::new(Some(stop)),
        task: tokio::sync::Mutex::new(Some(task)),
    }
}

struct Estate {
    gateway: Arc<Gateway>,
    base: String,
    work: tempfile::TempDir,
    /// The CaseTrak person the tests read documents of, and an allocated caller.
    person: i64,
    allocated: Who,
    dav: Dav,
}

impl Estate {
    fn share(&self) -> PathBuf {
        self.work.path().join("share")
    }

    fn token(&self, w: &Who) -> String {
        let now = chrono::Utc::now().timestamp();
        self.gateway
            .access
            .as_ref()
            .unwrap()
            .auth
            .mint_hs256(&Claims {
                sub: format!("{}-user", w.role),
                role: w.role.into(),
                org: Some("council".into()),
                worker: w.worker.clone(),
                team: w.team.clone(),
                iat: now,
                exp: now + 600,
                ..Claims::default()
            })
            .unwrap()
    }

    async fn get(&self, w: &Who, path: &str, range: Option<&str>) -> reqwest::Response {
        let mut req = reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .bearer_auth(self.token(w))
            .header("x-purpose-of-use", w.purpose);
        if let Some(r) = range {
            req = req.header("range", r);
        }
        req.send().await.unwrap()
    }

    async fn graphql(&self, w: &Who, query: &str, variables: Value) -> Value {
        reqwest::Client::new()
            .post(format!("{}/graphql", self.base))
            .bearer_auth(self.token(w))
            .header("x-purpose-of-use", w.purpose)
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The content URL of a source's document, as the gateway seals it.
    fn url_of(&self, source: &str, local_id: &str) -> String {
        format!(
            "/documents/{}/content",
            self.gateway.document_ids.seal(source, local_id)
        )
    }

    async fn audit(&self) -> Vec<escr_gateway::consent::audit::AuditEvent> {
        let access = self.gateway.access.as_ref().unwrap();
        let mut all = Vec::new();
        for id in self.gateway.index.snapshot().people.keys() {
            all.extend(access.audit.for_person(id).await.unwrap());
        }
        all.sort_by_key(|e| e.seq);
        all
    }
}

/// Documents added to the chosen person's CaseTrak record, each a way out of the store
/// or a file that is not as it should be: (DOC_ID, FILE_PATH, what the test expects).
fn hostile_rows(work: &Path) -> Vec<(i64, String)> {
    let secret = work.join("secret.txt");
    vec![
        (900_001, r"\\docs\ct\..\secret.txt".into()),
        (900_002, r"\\docs\ct\%2e%2e\secret.txt".into()),
        (900_003, r"\\docs\ct\escape.pdf".into()),
        (900_004, r"\\docs\ct\outside\secret.txt".into()),
        (900_005, secret.display().to_string()),
        (900_006, r"\\fileserver2\private\secret.txt".into()),
        (900_007, r"C:\secret.txt".into()),
        (900_008, r"\\docs\ct\missing-letter.pdf".into()),
        (900_009, r"\\docs\ct\inside.pdf".into()),
        (900_010, r"\\docs\ct\big-scan.tif".into()),
        (900_011, r"\\docs\ct\%252e%252e\secret.txt".into()),
    ]
}

/// A CaseTrak person with a current allocation and letters (from the database itself),
/// and the worker and team allocated.
fn allocated_person(db: &Path) -> (i64, String, String) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(
        "SELECT a.CLNT_ID, a.WRKR_ID, a.TEAM_ID FROM ALLOC a
         WHERE a.END_DT IS NULL AND EXISTS (SELECT 1 FROM DOC d WHERE d.CLNT_ID = a.CLNT_ID AND d.DOC_TYP = 'LTR')
         AND EXISTS (SELECT 1 FROM CLNT c WHERE c.CLNT_ID = a.CLNT_ID AND c.MRG_TO_ID IS NULL)
         ORDER BY a.CLNT_ID LIMIT 1",
        [],
        |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?.to_string(),
                r.get::<_, i64>(2)?.to_string(),
            ))
        },
    )
    .unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// The demo's three vendors (CaseTrak's database copied, with the hostile rows, and its
/// files on a share of the test's own) and PostRoom on the document service;
/// `ssis_root` replaces SSIS/90's folder (one that is not there: a store that is down).
async fn estate(demo: &'static Demo, ssis_root: Option<&Path>) -> Estate {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    // CaseTrak: its database with hostile document rows for the chosen person.
    let casetrak = w.join("casetrak.db");
    std::fs::copy(demo.dir.join("casetrak.db"), &casetrak).unwrap();
    let (person, worker, team) = allocated_person(&casetrak);
    {
        let conn = rusqlite::Connection::open(&casetrak).unwrap();
        for (id, path) in hostile_rows(w) {
            conn.execute(
                "INSERT INTO DOC (DOC_ID, CLNT_ID, DOC_TYP, DIRN, TITLE, DOC_DT, FILE_PATH)
                 VALUES (?1, ?2, 'SCN', 'I', ?3, '2025-06-01 00:00:00.000', ?4)",
                rusqlite::params![id, person, format!("Scan {id}"), path],
            )
            .unwrap();
        }
    }
    // Its share: the demo's files, a secret beside it, and links in and out.
    let share = w.join("share");
    copy_dir(&demo.dir.join("documents/casetrak"), &share);
    std::fs::write(w.join("secret.txt"), "SECRET outside the share").unwrap();
    std::os::unix::fs::symlink(w.join("secret.txt"), share.join("escape.pdf")).unwrap();
    std::os::unix::fs::symlink(w, share.join("outside")).unwrap();
    let first_letter = first_letter_file(&casetrak, person);
    // Relative: a link that stays beneath the share (an absolute one is refused).
    std::os::unix::fs::symlink(&first_letter, share.join("inside.pdf")).unwrap();
    // 3 MB, over the store's 2 MB limit.
    std::fs::write(share.join("big-scan.tif"), vec![0x49u8; 3 * 1024 * 1024]).unwrap();

    // PostRoom and its document service.
    let postroom = w.join("postroom.db");
    let sql = std::fs::read_to_string(demo::repo().join("tests/fixtures/postroom.sql")).unwrap();
    rusqlite::Connection::open(&postroom)
        .unwrap()
        .execute_batch(&sql)
        .unwrap();
    let objects = w.join("edrms/objects/2025/03");
    std::fs::create_dir_all(&objects).unwrap();
    std::fs::write(objects.join("discharge.pdf"), pdf_bytes("discharge")).unwrap();
    std::fs::write(
        objects.join("Care plan – signed.pdf"),
        pdf_bytes("signed plan"),
    )
    .unwrap();
    std::fs::write(objects.join("ramp.png"), png_bytes()).unwrap();
    std::fs::write(w.join("edrms/secret.txt"), "SECRET beside the objects").unwrap();
    let dav = start_dav(&w.join("edrms/objects")).await;
    std::fs::write(w.join("dav.token"), DAV_TOKEN).unwrap();

    let ssis_root = ssis_root
        .map(Path::to_path_buf)
        .unwrap_or_else(|| demo.dir.join("documents/ssis"));
    let sections = [
        (
            "casetrak",
            format!(
                "sqlite = {{ path = {casetrak:?} }}\ndocuments = {{ root = {share:?}, prefixes = {{ '\\\\docs\\ct\\' = \"\" }}, max_bytes = 2000000 }}"
            ),
        ),
        (
            "ssis",
            format!(
                "sqlite = {{ path = {:?} }}\ndocuments = {{ root = {ssis_root:?}, prefixes = {{ 'H:\\LETTERS\\' = \"\" }} }}",
                demo.dir.join("ssis.db")
            ),
        ),
    ];
    let mut text = demo::config_text_with(demo, w, &[], &sections);
    text.push_str(&format!(
        "\n[[sources]]\nname = \"postroom\"\nprofile = {:?}\nsqlite = {{ path = {postroom:?} }}\ndocuments = {{ url = {:?}, prefixes = {{ 'edrms://northshire/objects/' = \"\" }}, token_file = {:?} }}\n\n[documents]\nid_key_file = {:?}\ngenerate_key_if_missing = true\n",
        demo::repo().join("tests/fixtures/vendors/postroom.toml"),
        dav.url,
        w.join("dav.token"),
        w.join("document-id.key"),
    ));
    let path = w.join("escr.toml");
    std::fs::write(&path, text).unwrap();
    let config = escr_gateway::config::LoadedConfig::load(&path).unwrap();
    let gateway = Gateway::from_config(config).unwrap();
    gateway.refresh_index(false).await.unwrap();
    let access = AccessControl::from_config(
        crate::consent::test_policy_with(demo, w, ""),
        Some(gateway.index.clone()),
    )
    .unwrap();
    let gateway = Arc::new(gateway.with_access_control(access));
    let base = demo::serve_http(gateway.clone()).await;
    let mut allocated = who("social_worker", "direct_care");
    allocated.worker = Some(worker);
    allocated.team = Some(team);
    Estate {
        gateway,
        base,
        work,
        person,
        allocated,
        dav,
    }
}

/// The file name of the person's first letter (as CaseTrak names it).
fn first_letter_file(db: &Path, person: i64) -> String {
    let (_, path) = letters(db, person).into_iter().next().unwrap();
    path.rsplit('\\').next().unwrap().to_string()
}

/// (DOC_ID, FILE_PATH) of the person's letters in CaseTrak.
fn letters(db: &Path, person: i64) -> Vec<(i64, String)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT DOC_ID, FILE_PATH FROM DOC WHERE CLNT_ID = ?1 AND DOC_TYP = 'LTR' ORDER BY DOC_ID")
        .unwrap();
    stmt.query_map([person], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn pdf_bytes(words: &str) -> Vec<u8> {
    format!("%PDF-1.4\n% {words}\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")
        .into_bytes()
}

fn png_bytes() -> Vec<u8> {
    let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0".to_vec();
    b.extend_from_slice(&[0x1f, 0x15, 0xc4, 0x89, 0, 0, 0, 0, b'I', b'E', b'N', b'D']);
    b
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).map(|v| v.to_str().unwrap().to_string())
}

/// Status, the headers that could tell anything, and the body.
async fn seen(r: reqwest::Response) -> (u16, Vec<(String, Option<String>)>, Vec<u8>) {
    let status = r.status().as_u16();
    let names = [
        "content-type",
        "content-length",
        "content-range",
        "content-disposition",
        "accept-ranges",
        "x-audit-request-id",
    ];
    let headers = names
        .iter()
        .map(|n| (n.to_string(), header(r.headers(), n)))
        .collect();
    (status, headers, r.bytes().await.unwrap().to_vec())
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|_| json!(String::from_utf8_lossy(body)))
}

#[tokio::test]
async fn allowed_and_denied_callers_over_http() {
    let demo = demo::clean();
    let e = estate(demo, None).await;
    let casetrak = e.work.path().join("casetrak.db");
    let (doc, path) = letters(&casetrak, e.person).into_iter().next().unwrap();
    let file = e.share().join(path.rsplit('\\').next().unwrap());
    let bytes = std::fs::read(&file).unwrap();
    assert!(
        bytes.starts_with(b"%PDF-") && bytes.trim_ascii_end().ends_with(b"%%EOF"),
        "a real PDF: {}",
        file.display()
    );

    // The allocated worker finds the letter's content URL in the record, never its path.
    let q = "query($s: String!, $l: String!) { personBySourceRecord(source: $s, localId: $l) { documents { id title contentUrl provenance { source localId } } } }";
    let vars = json!({"s": "casetrak", "l": e.person.to_string()});
    let r = e.graphql(&e.allocated, q, vars.clone()).await;
    let text = r.to_string();
    assert!(
        !text.contains(r"\\docs") && !text.contains("docs\\\\ct"),
        "{text}"
    );
    let listed = r["data"]["personBySourceRecord"]["documents"]
        .as_array()
        .unwrap_or_else(|| panic!("{text}"))
        .iter()
        .find(|d| d["provenance"]["localId"].as_str() == Some(doc.to_string().as_str()))
        .unwrap_or_else(|| panic!("letter {doc} listed: {text}"))
        .clone();
    let url = listed["contentUrl"].as_str().unwrap().to_string();
    assert_eq!(url, e.url_of("casetrak", &doc.to_string()));
    let id = url.split('/').nth(2).unwrap().to_string();
    // Sealed: neither the text nor its bytes carry the source or the record's id.
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&id)
        .unwrap();
    let plain = format!("casetrak\0{doc}").into_bytes();
    assert!(!raw.windows(plain.len()).any(|w| w == plain.as_slice()));
    assert!(!id.contains("casetrak") && raw.len() >= plain.len() + 16);

    let (status, headers, body) = seen(e.get(&e.allocated, &url, None).await).await;
    assert_eq!(status, 200);
    assert_eq!(body, bytes, "the file's bytes");
    let h = |n: &str| headers.iter().find(|(k, _)| k == n).unwrap().1.clone();
    assert_eq!(h("content-type").as_deref(), Some("application/pdf"));
    assert_eq!(h("content-length"), Some(bytes.len().to_string()));
    let title = listed["title"].as_str().unwrap();
    assert_eq!(
        h("content-disposition"),
        Some(format!("attachment; filename=\"{title}.pdf\""))
    );
    assert_eq!(h("accept-ranges").as_deref(), Some("bytes"));
    let r = e.get(&e.allocated, &url, None).await;
    assert_eq!(
        header(r.headers(), "x-content-type-options").as_deref(),
        Some("nosniff")
    );
    assert_eq!(
        header(r.headers(), "cache-control").as_deref(),
        Some("private, no-store")
    );

    // Audited as a release before the first byte: who, which document, purpose.
    let person_id = e
        .gateway
        .index
        .snapshot()
        .by_source("casetrak", &e.person.to_string())
        .unwrap()
        .to_string();
    let request_id = h("x-audit-request-id").unwrap();
    let events = e
        .gateway
        .access
        .as_ref()
        .unwrap()
        .audit
        .for_request(&request_id)
        .await
        .unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    let ev = &events[0];
    assert_eq!(
        (
            ev.decision.as_str(),
            ev.kinds.as_str(),
            ev.user.as_str(),
            ev.role.as_str(),
            ev.purpose.as_str(),
            ev.person_id.as_deref(),
            ev.reason.clone(),
        ),
        (
            "released",
            "document_content",
            "social_worker-user",
            "social_worker",
            "direct_care",
            Some(person_id.as_str()),
            Some(format!("casetrak document {doc}")),
        )
    );

    // Ranges: a part, a suffix, one past the end, several (served whole).
    let len = bytes.len();
    let r = e.get(&e.allocated, &url, Some("bytes=0-99")).await;
    assert_eq!(r.status().as_u16(), 206);
    assert_eq!(
        header(r.headers(), "content-range"),
        Some(format!("bytes 0-99/{len}"))
    );
    assert_eq!(
        header(r.headers(), "content-length").as_deref(),
        Some("100")
    );
    let audit_id = header(r.headers(), "x-audit-request-id").unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[..100]);
    let ranged = e
        .gateway
        .access
        .as_ref()
        .unwrap()
        .audit
        .for_request(&audit_id)
        .await
        .unwrap();
    assert_eq!(
        ranged[0].reason,
        Some(format!("casetrak document {doc}, bytes 0-99"))
    );
    let r = e.get(&e.allocated, &url, Some("bytes=-50")).await;
    assert_eq!(r.status().as_u16(), 206);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[len - 50..]);
    let r = e
        .get(&e.allocated, &url, Some(&format!("bytes={len}-")))
        .await;
    assert_eq!(r.status().as_u16(), 416);
    assert_eq!(
        header(r.headers(), "content-range"),
        Some(format!("bytes */{len}"))
    );
    let r = e.get(&e.allocated, &url, Some("bytes=0-1,5-9")).await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), len);

    // Denied callers get what a caller asking for nothing gets: the same status, headers
    // and body, with or without a range; no size, no type, no name.
    let nothing = seen(
        e.get(&e.allocated, &e.url_of("casetrak", "99999999"), None)
            .await,
    )
    .await;
    assert_eq!(nothing.0, 404);
    assert_eq!(
        json_of(&nothing.2)["errors"][0]["extensions"]["code"],
        "NOT_FOUND"
    );
    let garbage = seen(
        e.get(&e.allocated, "/documents/bm90LWFuLWlk/content", None)
            .await,
    )
    .await;
    assert_eq!(garbage, nothing);
    let mut unallocated = who("social_worker", "direct_care");
    unallocated.worker = Some("999".into());
    unallocated.team = Some("999".into());
    let denied = [
        unallocated,
        who("team_manager", "care_management"),
        who("analyst", "planning"),
        who("researcher", "research"),
    ];
    for caller in &denied {
        for range in [None, Some("bytes=0-9"), Some("bytes=999999999-")] {
            let got = seen(e.get(caller, &url, range).await).await;
            assert_eq!(
                got, nothing,
                "{} {}: {range:?}",
                caller.role, caller.purpose
            );
        }
    }
    // ... and each refusal is audited, with its reason where the policy gave one.
    let withheld: Vec<_> = e
        .audit()
        .await
        .into_iter()
        .filter(|ev| ev.kinds == "document_content" && ev.decision != "released")
        .collect();
    assert_eq!(withheld.len(), denied.len() * 3, "{withheld:?}");
    assert!(withheld
        .iter()
        .all(|ev| ev.person_id.as_deref() == Some(person_id.as_str())));
    assert!(
        withheld
            .iter()
            .any(|ev| ev.code.as_deref() == Some("NO_RELATIONSHIP")
                && ev.user == "social_worker-user"),
        "{withheld:?}"
    );

    // No token: 401, nothing else.
    let r = reqwest::get(format!("{}{url}", e.base)).await.unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // An SSIS/90 letter: plain text named .DOC, served as text.
    let ssis = rusqlite::Connection::open(demo.dir.join("ssis.db")).unwrap();
    let (docref, ssis_path): (String, String) = ssis
        .query_row(
            "SELECT DOCREF, PATH FROM CORRESP ORDER BY DOCREF LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let ssis_file = demo
        .dir
        .join("documents/ssis")
        .join(ssis_path.trim().rsplit('\\').next().unwrap());
    let r = e
        .get(
            &who("safeguarding_lead", "safeguarding"),
            &e.url_of("ssis", docref.trim()),
            None,
        )
        .await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        header(r.headers(), "content-type").as_deref(),
        Some("text/plain; charset=utf-8")
    );
    assert!(header(r.headers(), "content-disposition")
        .unwrap()
        .ends_with(".txt\""));
    assert_eq!(
        r.bytes().await.unwrap().to_vec(),
        std::fs::read(ssis_file).unwrap()
    );
}

#[tokio::test]
async fn no_path_leaves_the_store() {
    let demo = demo::clean();
    let e = estate(demo, None).await;
    let lead = who("safeguarding_lead", "safeguarding");
    let q = "query($l: String!) { personBySourceRecord(source: \"casetrak\", localId: $l) { documents { contentUrl provenance { localId } } } }";
    let r = e
        .graphql(&lead, q, json!({"l": e.person.to_string()}))
        .await;
    let listed = r["data"]["personBySourceRecord"]["documents"]
        .as_array()
        .unwrap()
        .clone();
    let url_in_record = |id: i64| {
        listed
            .iter()
            .find(|d| d["provenance"]["localId"].as_str() == Some(id.to_string().as_str()))
            .unwrap_or_else(|| panic!("{id} listed: {r}"))["contentUrl"]
            .clone()
    };
    let get = |id: i64| {
        let url = e.url_of("casetrak", &id.to_string());
        let lead = lead.clone();
        let e = &e;
        async move { seen(e.get(&lead, &url, None).await).await }
    };
    let secret = e.work.path().join("secret.txt");
    for (id, path) in hostile_rows(e.work.path()) {
        let (status, _, body) = get(id).await;
        let text = String::from_utf8_lossy(&body).to_string();
        assert!(!text.contains("SECRET"), "{id}: {text}");
        assert!(
            !text.contains(&path) && !text.contains("secret.txt"),
            "{id}: {text}"
        );
        let code = json_of(&body)["errors"][0]["extensions"]["code"].clone();
        match id {
            // `..`, encoded dots, absolute, drive and UNC paths: no link at all.
            900_001 | 900_002 | 900_005 | 900_006 | 900_007 | 900_011 => {
                assert_eq!(url_in_record(id), Value::Null, "{id}");
                assert_eq!(
                    (status, code.as_str()),
                    (404, Some("CONTENT_NOT_FOUND")),
                    "{id}: {text}"
                );
                assert!(text.contains("outside the document store"), "{id}: {text}");
            }
            // Symlinks out of the share (a file, a folder): refused at the open.
            900_003 | 900_004 => {
                assert!(url_in_record(id).is_string(), "{id}");
                assert_eq!(
                    (status, code.as_str()),
                    (404, Some("CONTENT_NOT_FOUND")),
                    "{id}: {text}"
                );
            }
            // A missing file: a clear 404 naming the document, not the path.
            900_008 => {
                assert_eq!((status, code.as_str()), (404, Some("CONTENT_NOT_FOUND")));
                let url = e.url_of("casetrak", "900008");
                let doc_id = url.split('/').nth(2).unwrap();
                assert!(text.contains(doc_id) && text.contains("missing"), "{text}");
                assert!(!text.contains("missing-letter"), "{text}");
            }
            // A symlink to another file of the share is inside it.
            900_009 => {
                assert_eq!(status, 200, "{text}");
                let target = std::fs::read(e.share().join("inside.pdf")).unwrap();
                assert_eq!(body, target);
            }
            // Over the store's limit: refused, the size named, nothing sent.
            900_010 => {
                assert_eq!(
                    (status, code.as_str()),
                    (413, Some("CONTENT_TOO_LARGE")),
                    "{text}"
                );
                assert!(body.len() < 1000);
            }
            other => panic!("unexpected row {other}"),
        }
    }
    assert!(std::fs::read_to_string(&secret).unwrap().contains("SECRET"));
    // `..` and encoded dots in the URL itself name no document.
    let nothing = seen(e.get(&lead, &e.url_of("casetrak", "99999999"), None).await).await;
    for raw in [
        "/documents/..%2f..%2fetc%2fpasswd/content",
        "/documents/%2e%2e/content",
        "/documents/%2e%2e%2f%2e%2e%2fsecret.txt/content",
        "/documents/casetrak:document:1/content",
    ] {
        let r = e.get(&lead, raw, None).await;
        let status = r.status().as_u16();
        let body = r.bytes().await.unwrap().to_vec();
        assert!(status == 404, "{raw}: {status}");
        assert!(!String::from_utf8_lossy(&body).contains("SECRET"));
        if status == 404 && !body.is_empty() {
            assert_eq!(body, nothing.2, "{raw}");
        }
    }
}

#[tokio::test]
async fn email_attachments_from_a_document_service_on_loopback() {
    let demo = demo::clean();
    let missing = tempfile::tempdir().unwrap();
    let not_mounted = missing.path().join("not-mounted");
    let e = estate(demo, Some(&not_mounted)).await;
    let lead = who("safeguarding_lead", "safeguarding");
    let q = "{ personBySourceRecord(source: \"postroom\", localId: \"P-7\") { communications { subject attachments { title mediaType contentUrl provenance { localId } } } } }";
    let r = e.graphql(&lead, q, json!({})).await;
    let text = r.to_string();
    assert!(
        !text.contains("edrms://"),
        "the EDRMS key is never given out: {text}"
    );
    let mails = r["data"]["personBySourceRecord"]["communications"]
        .as_array()
        .unwrap_or_else(|| panic!("{text}"));
    let attached = |subject: &str| -> Vec<(String, Value)> {
        mails
            .iter()
            .find(|m| m["subject"] == subject)
            .unwrap_or_else(|| panic!("{subject}: {text}"))["attachments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["provenance"]["localId"].as_str().unwrap().to_string(),
                    a["contentUrl"].clone(),
                )
            })
            .collect()
    };
    // As the fixture holds: which attachments belong to which email.
    let summary = attached("Discharge summary");
    assert_eq!(
        summary
            .iter()
            .map(|(id, _)| id.as_str())
            .collect::<Vec<_>>(),
        ["A-1"]
    );
    let plan = attached("Signed care plan");
    assert_eq!(
        plan.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        ["A-2", "A-3", "A-4", "A-5"]
    );
    // The encoded `..` gets no link.
    assert_eq!(plan[2].1, Value::Null);

    let fetch = |url: String, range: Option<&'static str>| {
        let lead = lead.clone();
        let e = &e;
        async move { e.get(&lead, &url, range).await }
    };
    // A PDF the vendor calls octet-stream, under a name with a space and a dash.
    let r = fetch(plan[0].1.as_str().unwrap().to_string(), None).await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        header(r.headers(), "content-type").as_deref(),
        Some("application/pdf")
    );
    assert_eq!(
        header(r.headers(), "content-disposition").as_deref(),
        Some("attachment; filename=\"Care plan signed.pdf\"")
    );
    assert_eq!(r.bytes().await.unwrap().to_vec(), pdf_bytes("signed plan"));
    let r = fetch(plan[1].1.as_str().unwrap().to_string(), None).await;
    assert_eq!(
        header(r.headers(), "content-type").as_deref(),
        Some("image/png")
    );
    assert_eq!(r.bytes().await.unwrap().to_vec(), png_bytes());
    // A range passes through to the service and back.
    let summary_url = summary[0].1.as_str().unwrap().to_string();
    let whole = pdf_bytes("discharge");
    let r = fetch(summary_url.clone(), Some("bytes=5-14")).await;
    assert_eq!(r.status().as_u16(), 206);
    assert_eq!(
        header(r.headers(), "content-range"),
        Some(format!("bytes 5-14/{}", whole.len()))
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), &whole[5..15]);
    // Missing at the service: 404 naming the document.
    let r = fetch(plan[3].1.as_str().unwrap().to_string(), None).await;
    assert_eq!(r.status().as_u16(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "CONTENT_NOT_FOUND");
    // The refused key never reached the service; the others arrived encoded.
    let asked = e.dav.asked.lock().unwrap().clone();
    assert!(
        asked
            .iter()
            .all(|p| !p.contains("secret") && !p.contains("..")),
        "{asked:?}"
    );
    assert!(
        asked
            .iter()
            .any(|p| p == "/dav/2025/03/Care%20plan%20%E2%80%93%20signed.pdf"),
        "{asked:?}"
    );
    // A caller without a relationship gets nothing.
    let nothing = seen(e.get(&lead, &e.url_of("postroom", "A-99"), None).await).await;
    let got = seen(
        e.get(&who("social_worker", "direct_care"), &summary_url, None)
            .await,
    )
    .await;
    assert_eq!(got, nothing);

    // SSIS/90's folder is not there (not mounted): its documents are unavailable, named
    // by source and document, while CaseTrak's and the service's still serve.
    let ssis = rusqlite::Connection::open(demo.dir.join("ssis.db")).unwrap();
    let docref: String = ssis
        .query_row(
            "SELECT DOCREF FROM CORRESP ORDER BY DOCREF LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let r = fetch(e.url_of("ssis", docref.trim()), None).await;
    assert_eq!(r.status().as_u16(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "SOURCE_UNAVAILABLE"
    );
    assert_eq!(body["errors"][0]["extensions"]["source"], "ssis");
    assert!(!body.to_string().contains("not-mounted"), "{body}");
    let (letter, _) = letters(&e.work.path().join("casetrak.db"), e.person)[0].clone();
    let r = fetch(e.url_of("casetrak", &letter.to_string()), None).await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        fetch(summary_url.clone(), None).await.status().as_u16(),
        200
    );

    // The service goes down: its document is unavailable; the record still reads.
    e.dav.stop().await;
    let r = fetch(summary_url, None).await;
    assert_eq!(r.status().as_u16(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "SOURCE_UNAVAILABLE"
    );
    assert_eq!(body["errors"][0]["extensions"]["source"], "postroom");
    let r = e.graphql(&lead, q, json!({})).await;
    assert!(r["errors"].is_null(), "{r}");
    let r = fetch(e.url_of("casetrak", &letter.to_string()), None).await;
    assert_eq!(r.status().as_u16(), 200);
}

/// A `documents` section is checked when the config loads: errors name the file, the
/// line and the reason.
#[test]
fn bad_document_store_sections_name_file_line_and_reason() {
    let work = tempfile::tempdir().unwrap();
    let profile = demo::repo().join("config/vendors/casetrak.toml");
    let cases = [
        (
            "documents = { root = \"d\", url = \"https://e.example/\" }",
            "not both",
        ),
        ("documents = { }", "give `root`"),
        (
            "documents = { url = \"http://edrms.example/dav/\" }",
            "https",
        ),
        (
            "documents = { root = \"d\", colour = \"blue\" }",
            "unknown field `colour`",
        ),
        (
            "documents = { root = \"d\", prefixes = { 'X:\\' = \"../up\" } }",
            "`..`",
        ),
        (
            "documents = { root = \"d\", token_env = \"T\" }",
            "`url` store",
        ),
        (
            "documents = { url = \"https://e.example/\", user = \"u\", token_env = \"T\" }",
            "not both",
        ),
    ];
    for (line, reason) in cases {
        let text = format!(
            "[index]\npath = \"i.db\"\n\n[[sources]]\nname = \"casetrak\"\nprofile = {profile:?}\nsqlite = {{ path = \"c.db\" }}\n{line}\n"
        );
        let path = work.path().join("escr.toml");
        let err = escr_gateway::config::LoadedConfig::parse(&path, &text)
            .err()
            .unwrap_or_else(|| panic!("{line}: accepted"))
            .to_string();
        assert!(err.contains("escr.toml:"), "{line}: {err}");
        assert!(err.contains(reason), "{line}: {err}");
        assert!(
            err.contains(":8:") || err.contains(":4:"),
            "{line}: the line of the source or its section: {err}"
        );
    }
    let text = "[index]\npath = \"i.db\"\n\n[documents]\nid_key_env = \"K\"\nsalt = 1\n\n[[sources]]\nname = \"a\"\nprofile = \"p.toml\"\nsqlite = { path = \"c.db\" }\n";
    let err = escr_gateway::config::LoadedConfig::parse(&work.path().join("escr.toml"), text)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains(":6:") && err.contains("unknown field `salt`"),
        "{err}"
    );
    // A key named but not there stops the gateway at startup (no silent random key).
    let text = format!(
        "[index]\npath = {:?}\n\n[documents]\nid_key_env = \"ESCR_TEST_DOCUMENT_KEY_NOT_SET\"\n\n[[sources]]\nname = \"casetrak\"\nprofile = {profile:?}\nsqlite = {{ path = \"c.db\" }}\n",
        work.path().join("index.db")
    );
    let path = work.path().join("escr.toml");
    let config = escr_gateway::config::LoadedConfig::parse(&path, &text).unwrap();
    let err = Gateway::from_config(config).err().unwrap().to_string();
    assert!(
        err.contains("ESCR_TEST_DOCUMENT_KEY_NOT_SET is not set"),
        "{err}"
    );
}
