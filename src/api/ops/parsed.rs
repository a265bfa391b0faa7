//! Parsed GraphQL documents kept by their text. A portal sends the same few query texts
//! over and over, and parsing one (20 aliases of `personBySourceRecord`) was 15% of a
//! cached request's CPU (perf, `scripts/bench-peers.sh`, warm cache). A document does
//! not depend on the variables, so its text is the whole key; documents that fail to
//! parse are not kept (each such request gets its own error).

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{ServerResult, Variables};

/// Query texts longer than this are parsed every time (and never kept).
const LONGEST_KEPT: usize = 64 * 1024;

/// The extension factory: one cache, shared by every request of a schema. Install it
/// last, so that it stands innermost, where the parsing is: the other extensions'
/// checks of the document (the guard's limits, the metrics' operation name) still
/// run on every request.
#[derive(Clone)]
pub struct ParsedDocuments {
    cache: moka::sync::Cache<Arc<str>, Arc<ExecutableDocument>>,
}

impl ParsedDocuments {
    /// Kept while the texts together stay under `max_bytes` (a parsed document takes
    /// some ten times its text).
    pub fn new(max_bytes: u64) -> ParsedDocuments {
        ParsedDocuments {
            cache: moka::sync::Cache::builder()
                .weigher(|text: &Arc<str>, _| u32::try_from(text.len()).unwrap_or(u32::MAX))
                .max_capacity(max_bytes)
                .build(),
        }
    }

    /// How many documents are kept now.
    pub fn kept(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}

impl ExtensionFactory for ParsedDocuments {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Extension for ParsedDocuments {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        if let Some(doc) = self.cache.get(query) {
            return Ok((*doc).clone());
        }
        let doc = next.run(ctx, query, variables).await?;
        if query.len() <= LONGEST_KEPT {
            self.cache.insert(Arc::from(query), Arc::new(doc.clone()));
        }
        Ok(doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema};

    struct Query;
    #[Object]
    impl Query {
        async fn twice(&self, n: i32) -> i32 {
            n * 2
        }
    }

    #[tokio::test]
    async fn a_kept_document_answers_as_a_parsed_one_and_failures_are_not_kept() {
        let parsed = ParsedDocuments::new(1024 * 1024);
        let schema = Schema::build(Query, EmptyMutation, EmptySubscription)
            .extension(parsed.clone())
            .finish();
        let text = "query($n: Int!) { a: twice(n: $n) b: twice(n: 5) }";
        for n in [1, 2, 3] {
            let request = async_graphql::Request::new(text)
                .variables(Variables::from_json(serde_json::json!({ "n": n })));
            let r = schema.execute(request).await;
            assert!(r.errors.is_empty(), "{:?}", r.errors);
            assert_eq!(
                r.data.into_json().unwrap(),
                serde_json::json!({"a": n * 2, "b": 10})
            );
        }
        assert_eq!(parsed.kept(), 1);
        for _ in 0..2 {
            let r = schema.execute("{ twice(n: ").await;
            assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
        }
        assert_eq!(parsed.kept(), 1, "a text that does not parse is not kept");
        let long = format!("{{ twice(n: 1) }}{}", " ".repeat(LONGEST_KEPT));
        assert!(schema.execute(long.as_str()).await.errors.is_empty());
        assert_eq!(parsed.kept(), 1, "a text over the limit is not kept");
    }
}
