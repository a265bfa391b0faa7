//! Checks on a parsed request before async-graphql validates it: its cost and depth,
//! and whether it asks for introspection where that is turned off.
//!
//! Why a pass of our own: async-graphql 7 computes complexity and depth with visitors
//! in `VisitMode::Inline`, which walk a named fragment's selection set again at every
//! spread, and compares the totals with `limit_complexity` / `limit_depth` only after
//! the walk. Fragments that each spread the next twice (`F1 { ...F0 ...F0 }` up to
//! `F25`) cost 2^25 visits before the limit says no: seconds of CPU for any token.
//! Here every fragment is costed once (memoised) and counts saturate, so the pass is
//! linear in the document; the same counts (1 per field plus its children; nesting of
//! fields) are then refused before any expansion.

use std::collections::{HashMap, HashSet};

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};

use crate::api::error::GatewayError;

/// Fields a request may select, counting every fragment at every spread (as
/// async-graphql's complexity does).
pub const MAX_COMPLEXITY: usize = 20_000;
/// Nesting of fields.
pub const MAX_DEPTH: usize = 16;

#[derive(Clone, Copy, Default)]
struct Cost {
    fields: usize,
    depth: usize,
}

struct Costing<'a> {
    doc: &'a ExecutableDocument,
    memo: HashMap<&'a str, Cost>,
    visiting: HashSet<&'a str>,
}

impl<'a> Costing<'a> {
    fn selection_set(&mut self, set: &'a SelectionSet) -> Cost {
        let mut total = Cost::default();
        for item in &set.items {
            let cost = match &item.node {
                Selection::Field(f) => {
                    let inner = self.selection_set(&f.node.selection_set.node);
                    Cost {
                        fields: inner.fields.saturating_add(1),
                        depth: inner.depth + 1,
                    }
                }
                Selection::InlineFragment(f) => self.selection_set(&f.node.selection_set.node),
                Selection::FragmentSpread(s) => self.fragment(s.node.fragment_name.node.as_str()),
            };
            total.fields = total.fields.saturating_add(cost.fields);
            total.depth = total.depth.max(cost.depth);
        }
        total
    }

    fn fragment(&mut self, name: &'a str) -> Cost {
        if let Some(cost) = self.memo.get(name) {
            return *cost;
        }
        // A cycle costs nothing here; validation refuses it by name.
        let Some((key, fragment)) = self.doc.fragments.get_key_value(name) else {
            return Cost::default();
        };
        if !self.visiting.insert(key.as_str()) {
            return Cost::default();
        }
        let cost = self.selection_set(&fragment.node.selection_set.node);
        self.visiting.remove(key.as_str());
        self.memo.insert(key.as_str(), cost);
        cost
    }
}

/// The root fields of an operation, through fragments (each fragment once).
fn root_fields<'a>(
    doc: &'a ExecutableDocument,
    set: &'a SelectionSet,
    seen: &mut HashSet<&'a str>,
    out: &mut Vec<&'a str>,
) {
    for item in &set.items {
        match &item.node {
            Selection::Field(f) => out.push(f.node.name.node.as_str()),
            Selection::InlineFragment(f) => root_fields(doc, &f.node.selection_set.node, seen, out),
            Selection::FragmentSpread(s) => {
                let name = s.node.fragment_name.node.as_str();
                if let Some((key, fragment)) = doc.fragments.get_key_value(name) {
                    if seen.insert(key.as_str()) {
                        root_fields(doc, &fragment.node.selection_set.node, seen, out);
                    }
                }
            }
        }
    }
}

/// Refuse a document that is too costly or too deep, or that asks for introspection
/// where it is turned off.
pub fn check(doc: &ExecutableDocument, introspection: bool) -> Result<(), GatewayError> {
    let mut costing = Costing {
        doc,
        memo: HashMap::new(),
        visiting: HashSet::new(),
    };
    for (_, operation) in doc.operations.iter() {
        let cost = costing.selection_set(&operation.node.selection_set.node);
        if cost.fields > MAX_COMPLEXITY {
            return Err(GatewayError::TooCostly(format!(
                "the query selects {} fields counting every fragment at every spread (at most {MAX_COMPLEXITY})",
                if cost.fields == usize::MAX { "too many".to_string() } else { cost.fields.to_string() }
            )));
        }
        if cost.depth > MAX_DEPTH {
            return Err(GatewayError::TooCostly(format!(
                "the query nests fields {} deep (at most {MAX_DEPTH})",
                cost.depth
            )));
        }
        if !introspection {
            let mut fields = Vec::new();
            root_fields(
                doc,
                &operation.node.selection_set.node,
                &mut HashSet::new(),
                &mut fields,
            );
            if fields.iter().any(|f| *f == "__schema" || *f == "__type") {
                return Err(GatewayError::IntrospectionOff);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doubling(n: usize) -> String {
        let mut q = String::from("query { person(id: \"x\") { ...F");
        q.push_str(&n.to_string());
        q.push_str(" } }\nfragment F0 on Person { id }\n");
        for i in 1..=n {
            q.push_str(&format!(
                "fragment F{i} on Person {{ ...F{} ...F{} }}\n",
                i - 1,
                i - 1
            ));
        }
        q
    }

    #[test]
    fn exponential_fragments_are_refused_without_expanding_them() {
        // 2^60 spreads: only a pass that costs each fragment once ever returns.
        let doc = async_graphql::parser::parse_query(doubling(60)).unwrap();
        let err = check(&doc, true).unwrap_err();
        assert!(
            err.to_string().contains("every fragment at every spread"),
            "{err}"
        );
        // A few doublings are fine: 2^5 ids and the person.
        let doc = async_graphql::parser::parse_query(doubling(5)).unwrap();
        assert!(check(&doc, true).is_ok());
    }

    #[test]
    fn introspection_through_a_fragment_is_seen() {
        let q =
            "query { ...Q } fragment Q on Query { ... on Query { __schema { types { name } } } }";
        let doc = async_graphql::parser::parse_query(q).unwrap();
        assert!(matches!(
            check(&doc, false),
            Err(GatewayError::IntrospectionOff)
        ));
        assert!(check(&doc, true).is_ok());
        let doc = async_graphql::parser::parse_query("{ __typename }").unwrap();
        assert!(check(&doc, false).is_ok());
    }
}
