//! `GET /documents/{id}/content`: a document's file, streamed from its source's document
//! store (`record::documents`), for a caller who may see the document record.
//!
//! The id is opaque: the source and the record's local id sealed with AES-256-GCM-SIV
//! under the gateway's document-id key, so a link names no source, record or person
//! and cannot be made up. The content passes the same decision as its record
//! (`access::release` with the person's facts) and is audited as a release before the
//! first byte; a caller who may not see it gets exactly what a caller asking for a
//! document that does not exist gets.

use std::sync::Arc;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM_SIV};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use base64::Engine;
use escr_connector::EntityKind;

use crate::api::error::codes;
use crate::api::gateway::Gateway;
use crate::api::graphql::records::Sourced;
use crate::api::server::AppState;
use crate::consent::access::{release_shared, AccessContext};
use crate::consent::audit::RequestAudit;
use crate::record::documents::ContentError;
use crate::record::source::Lookup;

/// The record kind content releases are audited under (the record itself is `document`).
const AUDITED_KIND: &str = "document_content";

/// Additional data bound into every id (a key used elsewhere opens nothing here).
const ID_CONTEXT: &[u8] = b"escr document id v1";

/// Seals and opens document ids.
pub struct DocumentIds {
    key: LessSafeKey,
}

impl DocumentIds {
    /// Ids under a key derived from `secret` (at least 32 bytes).
    pub fn new(secret: &[u8]) -> DocumentIds {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret);
        let key = UnboundKey::new(&AES_256_GCM_SIV, digest.as_ref())
            .expect("a SHA-256 digest is an AES-256 key");
        DocumentIds {
            key: LessSafeKey::new(key),
        }
    }

    /// Ids under a random key: links last until the process stops.
    pub fn random() -> DocumentIds {
        let mut secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut secret).expect("system randomness");
        DocumentIds::new(&secret)
    }

    /// From `[documents]`: the key from the environment or the file; a random one when
    /// neither is configured (a key configured but not there is an error).
    pub fn from_config(config: &crate::config::DocumentsConfig) -> Result<DocumentIds, String> {
        let secret = crate::consent::auth::secret_key(
            config.id_key_env.as_deref(),
            config.id_key_file.as_deref(),
            config.generate_key_if_missing,
            "the document-id key",
        )?;
        match secret {
            Some(s) => Ok(DocumentIds::new(&s)),
            None if config.id_key_env.is_some() => Err(format!(
                "[documents] id_key_env: {} is not set (and no id_key_file)",
                config.id_key_env.as_deref().unwrap_or_default()
            )),
            None => Ok(DocumentIds::random()),
        }
    }

    /// The opaque id of a source's document. The same document always gets the same id
    /// under one key (GCM-SIV: a fixed nonce reveals only that two ids are equal).
    pub fn seal(&self, source: &str, local_id: &str) -> String {
        let mut data = format!("{source}\0{local_id}").into_bytes();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::from(ID_CONTEXT),
                &mut data,
            )
            .expect("sealing a short id does not fail");
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
    }

    /// (source, local id) of an id this gateway sealed; `None` for anything else.
    pub fn open(&self, id: &str) -> Option<(String, String)> {
        let mut data = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(id)
            .ok()?;
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::from(ID_CONTEXT),
                &mut data,
            )
            .ok()?;
        let text = std::str::from_utf8(plain).ok()?;
        let (source, local_id) = text.split_once('\0')?;
        Some((source.to_string(), local_id.to_string()))
    }
}

/// Where a released document's content can be fetched: `None` when its source has no
/// document store or its record names no file that the store could hold.
pub fn content_url(gateway: &Gateway, document: &Sourced) -> Option<String> {
    let store = gateway.documents.of(&document.source)?;
    store.locate(document.record.text("link")?).ok()?;
    Some(format!(
        "/documents/{}/content",
        gateway
            .document_ids
            .seal(&document.source, &document.record.local_id)
    ))
}

fn error(status: StatusCode, code: &str, message: String, extra: &[(&str, &str)]) -> Response {
    let mut extensions = serde_json::json!({ "code": code });
    for (k, v) in extra {
        extensions[*k] = serde_json::Value::String(v.to_string());
    }
    let body = serde_json::json!({ "errors": [{ "message": message, "extensions": extensions }] });
    let mut response = (status, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// What a caller gets for an id that names nothing, and for a document they may not
/// see: the same status, headers and body, whatever the id.
fn no_document() -> Response {
    error(
        StatusCode::NOT_FOUND,
        codes::NOT_FOUND,
        "no such document".into(),
        &[],
    )
}

/// The audit events of this request made durable; `false` when they could not be.
async fn audited(gateway: &Gateway, audit: &RequestAudit, caller: &AccessContext) -> bool {
    let Some(access) = &gateway.access else {
        return true;
    };
    match access.audit.append_request(audit, caller).await {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "audit write failed: document withheld");
            false
        }
    }
}

/// The document record `id` names, if this caller may see it: (source, local id,
/// person id, record), with the decision noted in `audit`; otherwise the response to
/// send (the same one for "no such document" and "not for you"), the decision audited.
async fn released_document(
    gateway: &Gateway,
    caller: &AccessContext,
    id: &str,
    audit: &RequestAudit,
) -> Result<(String, String, String, escr_connector::Record), Response> {
    let (source, local_id) = gateway.document_ids.open(id).ok_or_else(no_document)?;
    let loaders = gateway.request_loaders();
    let fetcher = loaders.fetcher().clone();
    let index = fetcher
        .source_index(&source)
        .filter(|i| fetcher.sources[*i].holds(EntityKind::Document))
        .ok_or_else(no_document)?;
    let record = match loaders
        .load(index, EntityKind::Document, Lookup::ByKey, &local_id)
        .await
    {
        Ok(records) => records.first().cloned(),
        Err(e) => {
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                codes::SOURCE_UNAVAILABLE,
                format!("document `{id}` cannot be looked up: {e}"),
                &[("source", &source), ("document", id)],
            ))
        }
    };
    let snapshot = gateway.index.snapshot();
    let person = record.as_ref().and_then(|r| {
        let id = snapshot.by_source(&source, r.person_id.as_deref()?)?;
        Some((id.to_string(), snapshot.records(id).to_vec()))
    });
    let (Some(record), Some((person_id, refs))) = (record, person) else {
        return Err(no_document());
    };
    if !gateway.policy.may_see_person(caller, &person_id) {
        audit.note(Some(&person_id), "denied", None, None, AUDITED_KIND);
        audited(gateway, audit, caller).await;
        return Err(no_document());
    }
    let facts = crate::api::graphql::person::load_person_facts(
        gateway,
        &loaders,
        &person_id,
        &refs,
        gateway.policy.facts_needed(caller),
    )
    .await;
    let released = release_shared(
        gateway.policy.as_ref(),
        caller,
        &facts,
        [(source.clone(), record)],
    );
    for (decision, list) in [
        ("withheld", &released.withheld),
        ("hidden", &released.hidden),
    ] {
        for (_, _, why) in list {
            audit.note(
                Some(&person_id),
                decision,
                Some(why.code),
                Some(&why.reason),
                AUDITED_KIND,
            );
        }
    }
    match released.records.into_iter().next() {
        Some((_, record)) => Ok((source, local_id, person_id, Arc::unwrap_or_clone(record))),
        None => {
            audited(gateway, audit, caller).await;
            Err(no_document())
        }
    }
}

/// What an allowed caller is told when the store cannot give the file. The
/// operator's log names the record, never the path (it may name people).
fn store_error(e: ContentError, id: &str, source: &str, local_id: &str) -> Response {
    tracing::warn!(source = %source, document = %local_id, error = %e, "document content not served");
    let detail = [("document", id)];
    match e {
        ContentError::Outside(_) | ContentError::Missing => unreadable(id, &e.to_string()),
        ContentError::TooLarge { .. } => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            codes::CONTENT_TOO_LARGE,
            format!("document `{id}`: {e}"),
            &detail,
        ),
        ContentError::RangeNotSatisfiable { size } => {
            let mut r = error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                codes::RANGE_NOT_SATISFIABLE,
                format!("document `{id}`: {e}"),
                &detail,
            );
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            r
        }
        ContentError::Unavailable(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::SOURCE_UNAVAILABLE,
            format!("the document store of source `{source}` cannot give document `{id}`: {e}"),
            &[("source", source), ("document", id)],
        ),
    }
}

fn unreadable(id: &str, why: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        codes::CONTENT_NOT_FOUND,
        format!("document `{id}` has no content the gateway can read: {why}"),
        &[("document", id)],
    )
}

pub async fn content(
    State(state): State<AppState>,
    Path(id): Path<String>,
    axum::Extension(request_id): axum::Extension<crate::api::ops::request::RequestId>,
    headers: HeaderMap,
) -> Response {
    let gateway = &state.gateway;
    let caller = match crate::api::server::caller(&state, &headers, &request_id).await {
        Ok(caller) => caller,
        Err(refused) => return refused,
    };
    let audit = RequestAudit::new();
    let (source, local_id, person_id, record) =
        match released_document(gateway, &caller, &id, &audit).await {
            Ok(released) => released,
            Err(response) => return response,
        };
    let Some(store) = gateway.documents.of(&source) else {
        return unreadable(&id, "its source has no document store");
    };
    let Some(link) = record.text("link") else {
        return unreadable(&id, "its record names no file");
    };
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let content = match store.open(link, record.text("media_type"), range).await {
        Ok(content) => content,
        Err(e) => return store_error(e, &id, &source, &local_id),
    };
    let what = match &content.range {
        Some(r) => format!(
            "{source} document {local_id}, bytes {}-{}",
            r.start(),
            r.end()
        ),
        None => format!("{source} document {local_id}"),
    };
    audit.note(
        Some(&person_id),
        "released",
        None,
        Some(&what),
        AUDITED_KIND,
    );
    if !audited(gateway, &audit, &caller).await {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "AUDIT_UNAVAILABLE",
            "the audit log cannot be written: nothing is released".into(),
            &[],
        );
    }
    respond(content, record.text("title"), &audit.request_id)
}

/// Status and headers for the content, and its body as it streams.
fn respond(
    content: crate::record::documents::Content,
    title: Option<&str>,
    request_id: &str,
) -> Response {
    let status = if content.range.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let mut headers = HeaderMap::new();
    let set = |headers: &mut HeaderMap, name, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    set(
        &mut headers,
        header::CONTENT_TYPE,
        content.media_type.clone(),
    );
    set(
        &mut headers,
        header::CONTENT_DISPOSITION,
        format!(
            "attachment; filename=\"{}\"",
            file_name(title, &content.extension)
        ),
    );
    if let Some(length) = content.length() {
        set(&mut headers, header::CONTENT_LENGTH, length.to_string());
    }
    if let Some(r) = &content.range {
        let total = content.size.map_or("*".to_string(), |s| s.to_string());
        set(
            &mut headers,
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{total}", r.start(), r.end()),
        );
    }
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Personal data: never kept by a shared cache; never run if a browser shows it.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    set(
        &mut headers,
        header::HeaderName::from_static("x-audit-request-id"),
        request_id.to_string(),
    );
    (status, headers, axum::body::Body::from_stream(content.body)).into_response()
}

/// A download's name from the document's title and the content's extension: letters,
/// digits, spaces and `-_.,()` only (a header value, and a name every file system
/// takes), at most 80 characters before the extension.
fn file_name(title: Option<&str>, extension: &str) -> String {
    let cleaned: String = title
        .unwrap_or("")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || " -_.,()".contains(c) {
                c
            } else {
                ' '
            }
        })
        .collect();
    let words: Vec<&str> = cleaned.split_whitespace().collect();
    let mut name = words.join(" ");
    // A title that is a file name already keeps its own extension once.
    let dotted = format!(".{extension}");
    if name.len() > dotted.len() && name.to_ascii_lowercase().ends_with(&dotted) {
        name.truncate(name.len() - dotted.len());
    }
    let name: String = name.chars().take(80).collect();
    let name = name.trim_matches(['.', ' ']);
    let name = if name.is_empty() { "document" } else { name };
    format!("{name}.{extension}")
}

/// The router's part: `GET /documents/{id}/content` (HEAD too).
/// The content route, also its label in metrics and spans.
pub const CONTENT_ROUTE: &str = "/documents/{id}/content";

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new().route(CONTENT_ROUTE, axum::routing::get(content))
}

/// The stores of the sources that have one, built from their config sections (a store
/// that cannot be set up is down, and said so in the log).
pub fn build_stores(
    config: &crate::config::GatewayConfig,
) -> Arc<crate::record::documents::DocumentStores> {
    Arc::new(crate::record::documents::DocumentStores::new(
        config.sources.iter().filter_map(|s| {
            let s = s.get_ref();
            let store =
                crate::record::documents::DocumentStore::build(s.documents.as_ref()?.get_ref());
            if let Some(why) = store.down() {
                tracing::warn!(source = %s.name, reason = %why, "document store is down");
            }
            Some((s.name.clone(), store))
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_opaque_stable_and_only_this_keys() {
        let ids = DocumentIds::new(b"a key of at least thirty-two bytes, for tests");
        let id = ids.seal("casetrak", "1042");
        assert_eq!(id, ids.seal("casetrak", "1042"));
        assert_ne!(id, ids.seal("casetrak", "1043"));
        assert!(!id.contains("casetrak") && !id.contains("1042"));
        assert_eq!(ids.open(&id), Some(("casetrak".into(), "1042".into())));
        let other = DocumentIds::new(b"another key of at least thirty-two bytes here");
        assert_eq!(other.open(&id), None);
        // Tampered, truncated, or not an id at all.
        let mut bytes = id.clone().into_bytes();
        bytes[3] = if bytes[3] == b'A' { b'B' } else { b'A' };
        assert_eq!(ids.open(std::str::from_utf8(&bytes).unwrap()), None);
        assert_eq!(ids.open(&id[..id.len() - 2]), None);
        for junk in [
            "",
            "..",
            "%2e%2e",
            "../../etc/passwd",
            "casetrak:document:1",
        ] {
            assert_eq!(ids.open(junk), None, "{junk}");
        }
    }

    #[test]
    fn download_names_are_plain() {
        assert_eq!(file_name(Some("Letter 12"), "pdf"), "Letter 12.pdf");
        assert_eq!(
            file_name(Some("Care plan – signed.PDF"), "pdf"),
            "Care plan signed.pdf"
        );
        assert_eq!(file_name(Some("../../etc/passwd"), "txt"), "etc passwd.txt");
        assert_eq!(
            file_name(Some("a\"b\r\nX-Evil: 1"), "pdf"),
            "a b X-Evil 1.pdf"
        );
        assert_eq!(file_name(Some("..."), "bin"), "document.bin");
        assert_eq!(file_name(None, "pdf"), "document.pdf");
        assert_eq!(file_name(Some(&"x".repeat(200)), "pdf").len(), 84);
    }
}
