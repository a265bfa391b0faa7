//! `_entities` as the federation spec has it: per representation a value or `null`,
//! each error at its own index (`["_entities", 2, "caseNotes"]`), and a representation
//! that cannot be resolved (an unknown type, a key of the wrong shape) fails only
//! itself. async-graphql answers `_entities` in its query root, which joins the
//! representations with `try_join_all` (one failure is `data: null` for the batch) and
//! resolves each at the list's path; it asks the root's `find_entity` once per
//! representation, so this wrapper of the root is where each is given its index.

use std::borrow::Cow;
use std::sync::Mutex;

use async_graphql::registry::Registry;
use async_graphql::{
    ContainerType, Context, ContextSelectionSet, ErrorExtensionValues, ObjectType, OutputType,
    Positioned, ServerError, ServerResult, Value,
};

use crate::api::error::codes;

/// Entity types and their key fields (as the `#[graphql(entity)]` resolvers have them).
const ENTITY_KEYS: &[(&str, &[&str])] =
    &[("Person", &["id", "nhsNumber"]), ("Authority", &["name"])];

/// A query root whose `_entities` answers per representation.
pub struct FederatedRoot<T>(pub T);

/// Per request: which representations of `_entities` have been given their index.
/// The root is asked in list order (the futures are first polled in order), so equal
/// representations take the indexes of their places one after the other.
#[derive(Default)]
pub struct EntityIndexes(Mutex<Option<Vec<(Value, bool)>>>);

impl EntityIndexes {
    fn claim(&self, ctx: &Context<'_>, representation: &Value) -> usize {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let list = guard.get_or_insert_with(|| {
            representations(ctx)
                .into_iter()
                .map(|v| (v, false))
                .collect()
        });
        match list
            .iter_mut()
            .enumerate()
            .find(|(_, (v, claimed))| !claimed && v == representation)
        {
            Some((i, entry)) => {
                entry.1 = true;
                i
            }
            None => first_equal(&representations(ctx), representation),
        }
    }
}

fn representations(ctx: &Context<'_>) -> Vec<Value> {
    ctx.param_value::<Vec<async_graphql::Any>>("representations", None)
        .map(|(_, list)| list.into_iter().map(|a| a.0).collect())
        .unwrap_or_default()
}

fn first_equal(list: &[Value], representation: &Value) -> usize {
    list.iter().position(|v| v == representation).unwrap_or(0)
}

fn bad_representation(message: String) -> ServerError {
    let mut err = ServerError::new(message, None);
    let mut ext = ErrorExtensionValues::default();
    ext.set("code", codes::BAD_INPUT);
    err.extensions = Some(ext);
    err
}

/// Why a representation matched no entity resolver; `None` when its key is null (a
/// router sends `nhsNumber: null` for a person without one: nothing has that key, and
/// that is no error).
fn unresolvable(representation: &Value) -> Option<String> {
    let Value::Object(fields) = representation else {
        return Some("a representation is an object with `__typename` and a key".into());
    };
    let Some(Value::String(typename)) = fields.get("__typename") else {
        return Some("a representation names its type in `__typename`".into());
    };
    let Some((_, keys)) = ENTITY_KEYS.iter().find(|(name, _)| name == typename) else {
        return Some(format!("no entity type `{typename}` here"));
    };
    let given: Vec<&Value> = keys.iter().filter_map(|k| fields.get(*k)).collect();
    if !given.is_empty() && given.iter().all(|v| matches!(v, Value::Null)) {
        return None;
    }
    Some(format!(
        "a `{typename}` representation needs one of its keys as a string: {}",
        keys.join(", ")
    ))
}

impl<T: ObjectType> ContainerType for FederatedRoot<T> {
    async fn resolve_field(&self, ctx: &Context<'_>) -> ServerResult<Option<Value>> {
        self.0.resolve_field(ctx).await
    }

    async fn find_entity(&self, ctx: &Context<'_>, params: &Value) -> ServerResult<Option<Value>> {
        let index = match ctx.data_opt::<EntityIndexes>() {
            Some(indexes) => indexes.claim(ctx, params),
            None => first_equal(&representations(ctx), params),
        };
        let at = ctx.with_index(index);
        match self.0.find_entity(&at, params).await {
            Ok(Some(value)) => Ok(Some(value)),
            Ok(None) => {
                if let Some(why) = unresolvable(params) {
                    at.add_error(at.set_error_path(bad_representation(why)));
                }
                Ok(Some(Value::Null))
            }
            Err(err) => {
                at.add_error(at.set_error_path(err));
                Ok(Some(Value::Null))
            }
        }
    }
}

impl<T: ObjectType> OutputType for FederatedRoot<T> {
    fn type_name() -> Cow<'static, str> {
        T::type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        T::create_type_info(registry)
    }

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        _field: &Positioned<async_graphql::parser::types::Field>,
    ) -> ServerResult<Value> {
        async_graphql::resolver_utils::resolve_container(ctx, self).await
    }
}

impl<T: ObjectType> ObjectType for FederatedRoot<T> {}
