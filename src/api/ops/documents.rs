//! GraphQL requests as they arrive over HTTP, and trusted documents.
//!
//! A request is a JSON body (`POST`) or a query string (`GET`: queries, never a
//! mutation) with `query`, or `documentId` (a trusted document's id:
//! `sha256:<hex>` or `<hex>`), or Apollo's `extensions.persistedQuery.sha256Hash`.
//! The allowlist is a JSON file (`{"<id>": "<document>"}` or an Apollo persisted
//! query manifest) or a folder of `.graphql` files (id: the SHA-256 of the text). With
//! `require` only documents of the allowlist run (a full query runs only when its hash
//! is listed); with `apq` clients may register documents by hash (development).
//! Anything malformed gets a JSON error naming what is wrong.

use std::collections::HashMap;
use std::path::Path;

use async_graphql::parser::types::OperationType;
use axum::http::{HeaderMap, Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::TrustedDocumentsConfig;
use escr_connector::ConfigError;

/// A request refused before it ran: status, code and message for the JSON error.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

fn refuse(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        code,
        message: message.into(),
    }
}

struct Document {
    text: String,
    /// Operation names (None: the anonymous one) that are not queries.
    not_queries: Vec<Option<String>>,
}

#[derive(Default)]
pub struct TrustedDocuments {
    by_id: HashMap<String, Document>,
    require: bool,
    apq: bool,
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn normalise(id: &str) -> &str {
    id.strip_prefix("sha256:").unwrap_or(id)
}

fn is_sha256(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[derive(Deserialize)]
struct ApolloManifest {
    operations: Vec<ApolloOperation>,
}

#[derive(Deserialize)]
struct ApolloOperation {
    id: String,
    body: String,
}

impl TrustedDocuments {
    pub fn load(config: &TrustedDocumentsConfig) -> Result<TrustedDocuments, ConfigError> {
        let mut docs = TrustedDocuments {
            by_id: HashMap::new(),
            require: config.require,
            apq: config.apq,
        };
        let Some(path) = &config.path else {
            return Ok(docs);
        };
        let mut add = |file: &Path, id: String, text: String| -> Result<(), ConfigError> {
            let id = normalise(&id).to_ascii_lowercase();
            if is_sha256(&id) && sha256_hex(&text) != id {
                return Err(ConfigError::io(
                    file,
                    format!("document `{id}`: its id is not the SHA-256 of its text"),
                ));
            }
            let parsed = async_graphql::parser::parse_query(&text).map_err(|e| {
                ConfigError::io(file, format!("document `{id}` does not parse: {e}"))
            })?;
            let not_queries = parsed
                .operations
                .iter()
                .filter(|(_, op)| op.node.ty != OperationType::Query)
                .map(|(name, _)| name.map(|n| n.to_string()))
                .collect();
            docs.by_id.insert(id, Document { text, not_queries });
            Ok(())
        };
        if path.is_dir() {
            let entries = std::fs::read_dir(path)
                .map_err(|e| ConfigError::io(path, format!("cannot read the folder: {e}")))?;
            let mut files: Vec<_> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "graphql"))
                .collect();
            files.sort();
            for file in files {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| ConfigError::io(&file, format!("cannot read: {e}")))?;
                add(&file, sha256_hex(&text), text)?;
            }
        } else {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::io(path, format!("cannot read: {e}")))?;
            let json: Value = serde_json::from_str(&text)
                .map_err(|e| ConfigError::at(path, e.line(), format!("not JSON: {e}")))?;
            if json.get("format").and_then(Value::as_str) == Some("apollo-persisted-query-manifest")
            {
                let manifest: ApolloManifest = serde_json::from_value(json).map_err(|e| {
                    ConfigError::io(path, format!("not an Apollo persisted query manifest: {e}"))
                })?;
                for op in manifest.operations {
                    add(path, op.id, op.body)?;
                }
            } else {
                let map: HashMap<String, String> = serde_json::from_value(json).map_err(|_| {
                    ConfigError::io(path, "expected an object of document ids to documents")
                })?;
                for (id, text) in map {
                    add(path, id, text)?;
                }
            }
        }
        Ok(docs)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn apq(&self) -> bool {
        self.apq
    }

    fn get(&self, id: &str) -> Option<&Document> {
        self.by_id.get(&normalise(id).to_ascii_lowercase())
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Wire {
    query: Option<String>,
    document_id: Option<String>,
    operation_name: Option<String>,
    variables: Option<Value>,
    extensions: Option<serde_json::Map<String, Value>>,
}

impl Wire {
    /// A GET's query string: `variables` and `extensions` are JSON text.
    fn from_query_string(query: &str) -> Result<Wire, Refusal> {
        let bad = |m: String| refuse(StatusCode::BAD_REQUEST, "BAD_REQUEST", m);
        let pairs: HashMap<String, String> = serde_urlencoded_pairs(query);
        let json = |key: &str| -> Result<Option<Value>, Refusal> {
            pairs
                .get(key)
                .map(|v| {
                    serde_json::from_str(v).map_err(|e| bad(format!("`{key}` is not JSON: {e}")))
                })
                .transpose()
        };
        let extensions = match json("extensions")? {
            Some(Value::Object(m)) => Some(m),
            Some(_) => return Err(bad("`extensions` is not a JSON object".into())),
            None => None,
        };
        Ok(Wire {
            query: pairs.get("query").cloned(),
            document_id: pairs.get("documentId").cloned(),
            operation_name: pairs.get("operationName").cloned(),
            variables: json("variables")?,
            extensions,
        })
    }

    fn persisted_hash(&self) -> Option<String> {
        self.extensions
            .as_ref()?
            .get("persistedQuery")?
            .get("sha256Hash")?
            .as_str()
            .map(str::to_string)
    }
}

fn serde_urlencoded_pairs(query: &str) -> HashMap<String, String> {
    axum::extract::Query::<HashMap<String, String>>::try_from_uri(
        &format!("/?{query}").parse().unwrap_or_default(),
    )
    .map(|q| q.0)
    .unwrap_or_default()
}

/// Whether the operation a request selects is a query (a document that does not parse
/// is left to execution, which answers it as a parse error).
fn runs_a_query(text: &str, operation_name: Option<&str>) -> bool {
    let Ok(document) = async_graphql::parser::parse_query(text) else {
        return true;
    };
    let mut operations = document.operations.iter();
    let chosen = match operation_name {
        Some(name) => operations.find(|(n, _)| n.is_some_and(|n| n.as_str() == name)),
        None => operations.next(),
    };
    chosen.is_none_or(|(_, op)| op.node.ty == OperationType::Query)
}

/// The media types of a GraphQL response (GraphQL over HTTP).
pub const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";
pub const JSON: &str = "application/json";

/// The response's media type by the request's `Accept`: the GraphQL response type when
/// the client names it, JSON when it names JSON, anything or nothing (older clients);
/// `None` when it accepts neither.
pub fn response_media(headers: &HeaderMap) -> Option<&'static str> {
    let Some(accept) = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
    else {
        return Some(JSON);
    };
    let accepted: Vec<(String, f32)> = accept
        .split(',')
        .map(|part| {
            let mut pieces = part.split(';');
            let media = pieces
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            let q = pieces
                .filter_map(|p| p.trim().strip_prefix("q=").and_then(|q| q.parse().ok()))
                .next()
                .unwrap_or(1.0);
            (media, q)
        })
        .filter(|(_, q)| *q > 0.0)
        .collect();
    let q = |m: &str| {
        accepted
            .iter()
            .filter(|(a, _)| a == m)
            .map(|(_, q)| *q)
            .fold(None, |best: Option<f32>, q| {
                Some(best.map_or(q, |b| b.max(q)))
            })
    };
    let any = q("*/*").or(q("application/*"));
    match (q(GRAPHQL_RESPONSE), q(JSON).or(any)) {
        (Some(g), Some(j)) if j > g => Some(JSON),
        (Some(_), _) => Some(GRAPHQL_RESPONSE),
        (None, Some(_)) => Some(JSON),
        (None, None) => None,
    }
}

/// A GraphQL response over HTTP, as GraphQL over HTTP has it: a request error (the
/// document did not parse or validate, or was refused before it ran: no data, no error
/// with a path) has no `data` entry and, as `application/graphql-response+json`, a 4xx
/// status (5xx when the gateway could not answer); `application/json` keeps 200.
pub fn respond(headers: &HeaderMap, response: async_graphql::Response) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Some(media) = response_media(headers) else {
        let body = serde_json::json!({"errors": [{"message": format!("this endpoint answers {GRAPHQL_RESPONSE} or {JSON}: name one in Accept"), "extensions": {"code": "NOT_ACCEPTABLE"}}]});
        return (StatusCode::NOT_ACCEPTABLE, axum::Json(body)).into_response();
    };
    let request_error = response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty());
    let unavailable = response.errors.iter().any(|e| {
        e.extensions
            .as_ref()
            .and_then(|x| x.get("code"))
            .is_some_and(|c| {
                *c == async_graphql::Value::from(crate::api::error::codes::AUDIT_UNAVAILABLE)
            })
    });
    let status = match (media, request_error) {
        (GRAPHQL_RESPONSE, true) if unavailable => StatusCode::SERVICE_UNAVAILABLE,
        (GRAPHQL_RESPONSE, true) => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    };
    // Written straight to bytes (in the query's field order): going through a
    // `serde_json::Value` first built the answer twice (about 7% of a warm request's CPU).
    let body = if request_error {
        // A request error has no `data` entry at all (GraphQL over HTTP).
        #[derive(serde::Serialize)]
        struct ErrorsOnly<'a> {
            #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
            extensions: &'a std::collections::BTreeMap<String, async_graphql::Value>,
            errors: &'a [async_graphql::ServerError],
        }
        serde_json::to_vec(&ErrorsOnly {
            extensions: &response.extensions,
            errors: &response.errors,
        })
    } else {
        serde_json::to_vec(&response)
    }
    .unwrap_or_else(|_| br#"{"errors":[{"message":"the answer could not be written"}]}"#.to_vec());
    let mut http = (status, [(axum::http::header::CONTENT_TYPE, media)], body).into_response();
    http.headers_mut().extend(response.http_headers);
    http
}

/// True when a GET carries a GraphQL request (else it asks for GraphiQL).
pub fn is_graphql_get(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        let pairs = serde_urlencoded_pairs(q);
        ["query", "documentId", "extensions"]
            .iter()
            .any(|k| pairs.contains_key(*k))
    })
}

/// The GraphQL request in an HTTP request, its document resolved against the
/// allowlist.
pub fn parse(
    docs: &TrustedDocuments,
    method: &Method,
    headers: &HeaderMap,
    query_string: Option<&str>,
    body: &[u8],
) -> Result<async_graphql::Request, Refusal> {
    let wire = if method == Method::GET {
        Wire::from_query_string(query_string.unwrap_or_default())?
    } else {
        let json_type = headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|t| {
                let t = t.to_ascii_lowercase();
                t.starts_with("application/json")
                    || t.starts_with("application/graphql-response+json")
            });
        if !json_type {
            let graphql_body = headers
                .get(axum::http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.to_ascii_lowercase().starts_with("application/graphql"));
            return Err(refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "BAD_REQUEST",
                if graphql_body {
                    "a bare GraphQL document (Content-Type: application/graphql) is not accepted: send JSON (Content-Type: application/json) as {\"query\": \"...\", \"variables\": {...}}"
                } else {
                    "send the request as JSON (Content-Type: application/json)"
                },
            ));
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(_)) => serde_json::from_slice::<Wire>(body).map_err(|e| {
                refuse(
                    StatusCode::BAD_REQUEST,
                    "BAD_REQUEST",
                    format!("not a GraphQL request: {e}"),
                )
            })?,
            Ok(Value::Array(_)) => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "BAD_REQUEST",
                    "batched requests are not accepted: send one request per POST",
                ))
            }
            Ok(_) => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "BAD_REQUEST",
                    "the body must be a JSON object with `query` or `documentId`",
                ))
            }
            Err(e) => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "BAD_REQUEST",
                    format!("the body is not JSON: {e}"),
                ))
            }
        }
    };
    let hash = wire.persisted_hash();
    let id = wire.document_id.clone().or_else(|| {
        // A persisted-query hash without the query names a document.
        if wire.query.as_deref().is_none_or(str::is_empty) {
            hash.clone()
        } else {
            None
        }
    });
    let mut extensions = wire.extensions.clone().unwrap_or_default();
    let text = match (&id, &wire.query) {
        (Some(id), _) => match docs.get(id) {
            Some(doc) => {
                if method == Method::GET {
                    let op = wire.operation_name.clone();
                    let refused = doc.not_queries.iter().any(|n| op.is_none() || n == &op);
                    if refused {
                        return Err(refuse(
                            StatusCode::METHOD_NOT_ALLOWED,
                            "BAD_REQUEST",
                            "a mutation cannot be sent with GET: use POST",
                        ));
                    }
                }
                // Resolved here: the APQ extension has nothing to do.
                extensions.remove("persistedQuery");
                doc.text.clone()
            }
            None if wire.document_id.is_none() && docs.apq && method != Method::GET => {
                // Development: the APQ extension answers from its cache, or asks the
                // client to send the document.
                String::new()
            }
            None => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "PERSISTED_QUERY_NOT_FOUND",
                    "no trusted document with this id",
                ))
            }
        },
        (None, Some(query)) => {
            if method == Method::GET && !runs_a_query(query, wire.operation_name.as_deref()) {
                return Err(refuse(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "BAD_REQUEST",
                    "a mutation cannot be sent with GET: use POST",
                ));
            }
            if docs.require && docs.get(&sha256_hex(query)).is_none() {
                return Err(refuse(
                    StatusCode::FORBIDDEN,
                    "TRUSTED_DOCUMENT_REQUIRED",
                    "this gateway runs trusted documents only: send the `documentId` of one",
                ));
            }
            if let Some(h) = &hash {
                if !docs.apq {
                    if normalise(h) != sha256_hex(query) {
                        return Err(refuse(
                            StatusCode::BAD_REQUEST,
                            "BAD_REQUEST",
                            "the persisted query's hash is not the SHA-256 of the query",
                        ));
                    }
                    extensions.remove("persistedQuery");
                }
            }
            query.clone()
        }
        (None, None) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                "no `query` or `documentId` in the request",
            ))
        }
    };
    let mut request = serde_json::json!({ "query": text });
    if let Some(op) = wire.operation_name {
        request["operationName"] = Value::String(op);
    }
    if let Some(v) = wire.variables {
        if !(v.is_object() || v.is_null()) {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                "`variables` must be a JSON object",
            ));
        }
        request["variables"] = v;
    }
    request["extensions"] = Value::Object(extensions);
    serde_json::from_value(request).map_err(|e| {
        refuse(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            format!("not a GraphQL request: {e}"),
        )
    })
}
