//! GraphiQL from pinned assets compiled into the binary (`assets/graphiql/`, versions
//! and licences noted there): no network at run time. The page's Content-Security-Policy
//! lets it load nothing but this gateway, so a pasted token only ever goes here.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// Where the assets are served.
pub const ASSETS: &str = "/graphiql/assets";

const FILES: &[(&str, &str, &[u8])] = &[
    (
        "graphiql-3.8.3.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../../assets/graphiql/graphiql-3.8.3.min.js"),
    ),
    (
        "graphiql-3.8.3.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../../assets/graphiql/graphiql-3.8.3.min.css"),
    ),
    (
        "react-18.3.1.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../../assets/graphiql/react-18.3.1.production.min.js"),
    ),
    (
        "react-dom-18.3.1.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../../assets/graphiql/react-dom-18.3.1.production.min.js"),
    ),
    (
        "escr-graphiql.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../../assets/graphiql/escr-graphiql.js"),
    ),
];

pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const EXAMPLE_QUERY: &str = r#"# escr-gateway demo. Every request needs a token and a purpose of use:
#   cargo run -- token --role team_manager --team 3 --worker 7 --purpose care_management
# then paste the token into the Headers pane below (the schema loads once it is there).
# Try:
query Demo {
  searchPeople(name: "smi", first: 3) {
    totalCount
    edges { node { id name { family given } birthDate sourceRecords { source localId linkRule } } }
  }
}

# Reports (a token from `cargo run -- token --role analyst --purpose planning`, and
# "X-Purpose-Of-Use": "planning"): both demo councils side by side.
query Indicators {
  indicators(period: "2025-26") { authority id name numerator denominator value suppressed }
}
"#;

const EXAMPLE_HEADERS: &str = r#"{
  "Authorization": "Bearer <paste the token here>",
  "X-Purpose-Of-Use": "care_management"
}"#;

/// A JSON string safe inside a `<script type="application/json">` block.
fn json_in_html(text: &str) -> String {
    serde_json::to_string(text)
        .unwrap_or_default()
        .replace('<', "\\u003c")
}

/// The page.
pub fn page() -> Response {
    let asset = |name: &str| format!("{ASSETS}/{name}");
    let html = format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>escr-gateway</title>
<link rel="stylesheet" href="{css}">
<style>html, body, #graphiql {{ height: 100%; margin: 0; }}</style>
</head>
<body>
<div id="graphiql">Loading GraphiQL…</div>
<script type="application/json" id="example-query">{query}</script>
<script type="application/json" id="example-headers">{headers}</script>
<script src="{react}"></script>
<script src="{react_dom}"></script>
<script src="{graphiql}"></script>
<script src="{app}"></script>
</body>
</html>
"#,
        css = asset("graphiql-3.8.3.min.css"),
        react = asset("react-18.3.1.production.min.js"),
        react_dom = asset("react-dom-18.3.1.production.min.js"),
        graphiql = asset("graphiql-3.8.3.min.js"),
        app = asset("escr-graphiql.js"),
        query = json_in_html(EXAMPLE_QUERY),
        headers = json_in_html(EXAMPLE_HEADERS),
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        html,
    )
        .into_response()
}

/// One asset (immutable: its name carries its version).
pub async fn asset(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "public, max-age=86400"),
            ],
            *bytes,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
