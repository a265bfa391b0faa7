//! A GraphQL request made ready before the schema executes it: its persisted-query hash
//! resolved (APQ), its text parsed (or taken from the documents kept by their text), its
//! cost and depth checked (`graphql::guard`), and the operation label for metrics taken.
//!
//! Why here and not as async-graphql extensions: with any extension installed, async-graphql
//! 7 builds a `ResolveInfo` (two registry lookups by name) and runs the whole extension
//! chain, one boxed future per extension, for every field and every list item it
//! resolves. Ours were all request-level, yet the per-field path was a large share of a
//! cached request's CPU (perf, `scripts/bench-peers.sh`, warm cache). The schemas now carry
//! no extension, and this runs once per request in `server::execute_with`.
//!
//! Why validated requests are remembered: async-graphql runs its validation rules on every
//! request, and for a kept 20-alias document that was 14% of a warm request's CPU (perf).
//! Validation is a function of the schema, the document, the operation name and the
//! variables alone, so a request equal in all four to one that passed needs no second
//! run: it executes on the schema's twin built with `ValidationMode::Fast` (which still
//! checks depth and complexity). Anything else, and every first time, is validated in
//! full.
//!
//! Why documents are kept: a portal sends the same few query texts over and over, and
//! parsing one (20 aliases of `personBySourceRecord`) was 15% of a cached request's CPU. A
//! document does not depend on the variables, so its text is the whole key; documents
//! that fail to parse are not kept (each such request gets its own error).

use std::sync::Arc;

use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Request, ServerError};
use sha2::{Digest, Sha256};

/// Query texts longer than this are parsed every time (and never kept).
const LONGEST_KEPT: usize = 64 * 1024;

/// Requests remembered as validated (32-byte keys).
const VALIDATED_KEPT: u64 = 50_000;

/// Texts registered by APQ clients, at most this many bytes together.
const APQ_BYTES: u64 = 4 * 1024 * 1024;

/// One per gateway, shared by its schemas (`/graphql` and `/subgraph`).
pub struct ParsedDocuments {
    cache: moka::sync::Cache<Arc<str>, Arc<ExecutableDocument>>,
    /// Automatic persisted queries (`[trusted_documents] apq`): hash -> text; `None` when
    /// off, and then a `persistedQuery` extension is ignored (the HTTP layer has already
    /// resolved or refused it against the allowlist).
    apq: Option<moka::sync::Cache<String, Arc<str>>>,
    introspection: bool,
    /// Requests (schema, operation, text, variables) that passed full validation.
    validated: moka::sync::Cache<[u8; 32], ()>,
}

impl ParsedDocuments {
    /// Kept while the texts together stay under `max_bytes` (a parsed document takes
    /// some ten times its text).
    pub fn new(max_bytes: u64, apq: bool, introspection: bool) -> ParsedDocuments {
        ParsedDocuments {
            cache: moka::sync::Cache::builder()
                .weigher(|text: &Arc<str>, _| weight(text))
                .max_capacity(max_bytes)
                .build(),
            apq: apq.then(|| {
                moka::sync::Cache::builder()
                    .weigher(|hash: &String, text: &Arc<str>| {
                        weight(text).saturating_add(weight(hash))
                    })
                    .max_capacity(APQ_BYTES)
                    .build()
            }),
            introspection,
            validated: moka::sync::Cache::new(VALIDATED_KEPT),
        }
    }

    /// How many documents are kept now.
    pub fn kept(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    /// Resolve, parse and check `request`, then run it on `schema` (or on `validated`, its
    /// twin with `ValidationMode::Fast`, when the same request has passed `schema`'s
    /// validation before); with the answer, the operation label for metrics: the root
    /// fields when the request ran (so validated against the schema: every part is a name
    /// the schema defines), else `invalid`.
    pub async fn execute<Q, M>(
        &self,
        schema: &async_graphql::Schema<Q, M, async_graphql::EmptySubscription>,
        validated: Option<&async_graphql::Schema<Q, M, async_graphql::EmptySubscription>>,
        mut request: Request,
    ) -> (String, async_graphql::Response)
    where
        Q: async_graphql::ObjectType + 'static,
        M: async_graphql::ObjectType + 'static,
    {
        let root_fields = match self.prepare(&mut request) {
            Ok(root_fields) => root_fields,
            Err(e) => {
                return (
                    "invalid".into(),
                    async_graphql::Response::from_errors(vec![e]),
                )
            }
        };
        let key = validated
            .filter(|_| request.query.len() <= LONGEST_KEPT)
            .map(|_| validation_key::<Q>(&request));
        let seen = key.is_some_and(|k| self.validated.contains_key(&k));
        let response = match validated {
            Some(twin) if seen => twin.execute(request).await,
            _ => schema.execute(request).await,
        };
        // A request that failed before execution (validation) has no data and errors
        // with no path; execution errors carry the path of their field.
        let ran = response.data != async_graphql::Value::Null
            || response.errors.iter().any(|e| !e.path.is_empty());
        if ran && !seen {
            if let Some(k) = key {
                self.validated.insert(k, ());
            }
        }
        let label = if ran { root_fields } else { "invalid".into() };
        (label, response)
    }

    /// Resolve, parse and check `request`, leaving its parsed document in it; its root
    /// fields. An error is the request's answer (nothing has run).
    fn prepare(&self, request: &mut Request) -> Result<String, ServerError> {
        self.persisted_query(request)?;
        let doc = self.parse(&request.query)?;
        super::super::graphql::guard::check(&doc, self.introspection)
            .map_err(|e| e.to_server_error(None))?;
        let root_fields = super::metrics::root_fields(&doc);
        request.set_parsed_query(doc);
        Ok(root_fields)
    }

    fn parse(&self, query: &str) -> Result<ExecutableDocument, ServerError> {
        if let Some(doc) = self.cache.get(query) {
            return Ok((*doc).clone());
        }
        let doc = async_graphql::parser::parse_query(query)?;
        if query.len() <= LONGEST_KEPT {
            self.cache.insert(Arc::from(query), Arc::new(doc.clone()));
        }
        Ok(doc)
    }

    /// Apollo's automatic persisted queries (version 1): a hash with its text registers
    /// the text; a hash alone runs the text registered, or asks the client for it with
    /// `PersistedQueryNotFound` (the message Apollo clients look for).
    fn persisted_query(&self, request: &mut Request) -> Result<(), ServerError> {
        let Some(store) = &self.apq else {
            return Ok(());
        };
        let Some(value) = request.extensions.remove("persistedQuery") else {
            return Ok(());
        };
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct PersistedQuery {
            version: i64,
            sha256_hash: String,
        }
        let persisted: PersistedQuery = value
            .into_json()
            .ok()
            .and_then(|v| serde_json::from_value(v).ok())
            .ok_or_else(|| {
                ServerError::new("Invalid \"PersistedQuery\" extension configuration.", None)
            })?;
        if persisted.version != 1 {
            return Err(ServerError::new(
                format!(
                    "only version 1 of the \"PersistedQuery\" extension is supported, not {}",
                    persisted.version
                ),
                None,
            ));
        }
        if request.query.is_empty() {
            match store.get(&persisted.sha256_hash) {
                Some(text) => request.query = text.to_string(),
                None => return Err(ServerError::new("PersistedQueryNotFound", None)),
            }
        } else {
            let hash = format!("{:x}", Sha256::digest(request.query.as_bytes()));
            if persisted.sha256_hash != hash {
                return Err(ServerError::new("provided sha does not match query", None));
            }
            if request.query.len() <= LONGEST_KEPT {
                store.insert(hash, Arc::from(request.query.as_str()));
            }
        }
        Ok(())
    }
}

/// What validation depends on: the schema (its root type), the operation, the text and
/// the variables.
fn validation_key<Q: 'static>(request: &Request) -> [u8; 32] {
    let mut hash = Sha256::new();
    for part in [
        std::any::type_name::<Q>().as_bytes(),
        request.operation_name.as_deref().unwrap_or("").as_bytes(),
        request.query.as_bytes(),
    ] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    hash.update(serde_json::to_vec(&request.variables).unwrap_or_default());
    hash.finalize().into()
}

fn weight(text: &str) -> u32 {
    u32::try_from(text.len()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema, Variables};

    struct Query;
    #[Object]
    impl Query {
        async fn twice(&self, n: i32) -> i32 {
            n * 2
        }
    }

    async fn run(
        front: &ParsedDocuments,
        schema: &Schema<Query, EmptyMutation, EmptySubscription>,
        request: Request,
    ) -> (String, async_graphql::Response) {
        front.execute(schema, None, request).await
    }

    #[tokio::test]
    async fn a_kept_document_answers_as_a_parsed_one_and_failures_are_not_kept() {
        let front = ParsedDocuments::new(1024 * 1024, false, true);
        let schema = Schema::build(Query, EmptyMutation, EmptySubscription).finish();
        let text = "query($n: Int!) { a: twice(n: $n) b: twice(n: 5) }";
        for n in [1, 2, 3] {
            let request =
                Request::new(text).variables(Variables::from_json(serde_json::json!({ "n": n })));
            let (label, r) = run(&front, &schema, request).await;
            assert!(r.errors.is_empty(), "{:?}", r.errors);
            assert_eq!(
                r.data.into_json().unwrap(),
                serde_json::json!({"a": n * 2, "b": 10})
            );
            assert_eq!(label, "twice");
        }
        assert_eq!(front.kept(), 1);
        for _ in 0..2 {
            let (label, r) = run(&front, &schema, Request::new("{ twice(n: ")).await;
            assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
            assert_eq!(label, "invalid");
        }
        assert_eq!(front.kept(), 1, "a text that does not parse is not kept");
        // Parsed, but not valid against the schema: its names are the client's.
        let (label, r) = run(&front, &schema, Request::new("{ nhs9434765919 }")).await;
        assert_eq!((label.as_str(), r.errors.len()), ("invalid", 1));
        let long = format!("{{ twice(n: 1) }}{}", " ".repeat(LONGEST_KEPT));
        let (_, r) = run(&front, &schema, Request::new(long)).await;
        assert!(r.errors.is_empty());
        assert_eq!(front.kept(), 2, "a text over the limit is not kept");
    }

    #[tokio::test]
    async fn persisted_queries_register_by_hash_and_run_by_hash_alone() {
        let schema = Schema::build(Query, EmptyMutation, EmptySubscription).finish();
        let text = "{ twice(n: 4) }";
        let hash = format!("{:x}", Sha256::digest(text.as_bytes()));
        let with = |query: &str, hash: &str| {
            let mut r = Request::new(query);
            r.extensions.insert(
                "persistedQuery".into(),
                async_graphql::Value::from_json(
                    serde_json::json!({"version": 1, "sha256Hash": hash}),
                )
                .unwrap(),
            );
            r
        };
        let front = ParsedDocuments::new(1024 * 1024, true, true);
        let message = |r: &async_graphql::Response| r.errors[0].message.clone();
        let (_, r) = run(&front, &schema, with("", &hash)).await;
        assert_eq!(message(&r), "PersistedQueryNotFound");
        let (_, r) = run(&front, &schema, with("{ twice(n: 5) }", &hash)).await;
        assert_eq!(message(&r), "provided sha does not match query");
        let (_, r) = run(&front, &schema, with(text, &hash)).await;
        assert_eq!(r.data.into_json().unwrap(), serde_json::json!({"twice": 8}));
        let (label, r) = run(&front, &schema, with("", &hash)).await;
        assert_eq!(r.data.into_json().unwrap(), serde_json::json!({"twice": 8}));
        assert_eq!(label, "twice");
        // With APQ off the extension is not this layer's business.
        let off = ParsedDocuments::new(1024 * 1024, false, true);
        let (_, r) = run(&off, &schema, with(text, "not-the-hash")).await;
        assert!(r.errors.is_empty(), "{:?}", r.errors);
    }

    struct Factor(i32);

    struct Scaled;
    #[Object]
    impl Scaled {
        async fn times(&self, ctx: &async_graphql::Context<'_>, n: i32) -> i32 {
            n * ctx.data_unchecked::<Factor>().0
        }
    }

    /// A request runs on the twin only when the same request (text, operation, variables)
    /// has passed full validation before; the twin here multiplies by 3 to show which ran.
    #[tokio::test]
    async fn only_a_request_validated_before_skips_validation() {
        let build = |factor, mode| {
            Schema::build(Scaled, EmptyMutation, EmptySubscription)
                .data(Factor(factor))
                .validation_mode(mode)
                .finish()
        };
        let strict = build(2, async_graphql::ValidationMode::Strict);
        let twin = build(3, async_graphql::ValidationMode::Fast);
        let front = ParsedDocuments::new(1024 * 1024, false, true);
        let answer = |r: &async_graphql::Response| r.data.clone().into_json().unwrap();
        let with = |text: &str, n: serde_json::Value| {
            Request::new(text).variables(Variables::from_json(serde_json::json!({ "n": n })))
        };
        let text = "query($n: Int!) { times(n: $n) }";
        let (_, r) = front
            .execute(&strict, Some(&twin), with(text, 4.into()))
            .await;
        assert_eq!(
            answer(&r),
            serde_json::json!({"times": 8}),
            "first: validated"
        );
        let (_, r) = front
            .execute(&strict, Some(&twin), with(text, 4.into()))
            .await;
        assert_eq!(
            answer(&r),
            serde_json::json!({"times": 12}),
            "again: the twin"
        );
        let (_, r) = front
            .execute(&strict, Some(&twin), with(text, 5.into()))
            .await;
        assert_eq!(
            answer(&r),
            serde_json::json!({"times": 10}),
            "other variables"
        );
        // Invalid requests are validated every time and never reach the twin.
        for _ in 0..2 {
            let (label, r) = front
                .execute(&strict, Some(&twin), with(text, "five".into()))
                .await;
            assert_eq!(
                (label.as_str(), r.data),
                ("invalid", async_graphql::Value::Null)
            );
            let conflict = "{ times(n: 1) times: times(n: 2) }";
            let (label, r) = front
                .execute(&strict, Some(&twin), Request::new(conflict))
                .await;
            assert_eq!(label, "invalid", "{:?}", r.errors);
        }
        // The operation is part of the request.
        let two = "query A { times(n: 1) } query B { times(n: 1) }";
        let run = |op: &'static str| Request::new(two).operation_name(op);
        let (_, r) = front.execute(&strict, Some(&twin), run("A")).await;
        assert_eq!(answer(&r), serde_json::json!({"times": 2}));
        let (_, r) = front.execute(&strict, Some(&twin), run("B")).await;
        assert_eq!(answer(&r), serde_json::json!({"times": 2}));
        let (_, r) = front.execute(&strict, Some(&twin), run("A")).await;
        assert_eq!(answer(&r), serde_json::json!({"times": 3}));
    }

    #[tokio::test]
    async fn the_guard_refuses_before_anything_runs() {
        let schema = Schema::build(Query, EmptyMutation, EmptySubscription).finish();
        let front = ParsedDocuments::new(1024 * 1024, false, false);
        let (label, r) = run(
            &front,
            &schema,
            Request::new("{ __schema { types { name } } }"),
        )
        .await;
        assert_eq!(label, "invalid");
        assert_eq!(
            r.errors[0].extensions.as_ref().and_then(|e| e.get("code")),
            Some(&async_graphql::Value::from("INTROSPECTION_DISABLED"))
        );
    }
}
