//! The council-named entry of the regional subgraph: `Query.<council>: Council`
//! (`northshire`, `southborough`), a root field only this council's gateway has, so
//! that a router sends it here and nowhere else. One router query can then ask every
//! council in the region for the same person or its indicators side by side, each
//! council deciding consent for its own records and auditing the end user:
//! `{ northshire { personByNhsNumber(nhsNumber: $n) { ... } } southborough { ... } }`.
//! `Council` and everything below it are `@shareable` (every council has them), and a
//! router keeps a selection in the subgraph it entered while that subgraph can resolve
//! it, so each council answers all of its own part.
//!
//! The field's name comes from the gateway's config (its sources' authority), but
//! async-graphql's derived types have field names fixed at compile time. So this one
//! part of the query root is written by hand: [`CouncilEntry`] registers the field
//! under the name given to [`with_council_field`] while the schema is being built
//! (registration is a static function with no access to the schema's data, and one
//! process may build the schemas of several councils, as the tests do), and resolves
//! it by comparing the field asked for with its gateway's name at run time.

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::Arc;

use async_graphql::indexmap::IndexMap;
use async_graphql::registry::{MetaField, MetaType, MetaTypeId, Registry};
use async_graphql::{
    ContainerType, Context, ContextSelectionSet, Object, ObjectType, OutputType, Positioned,
    ServerResult, Value, ID,
};
use chrono::NaiveDate;

use super::person::Person;
use super::reports::Authority;
use super::PersonConnection;
use crate::api::gateway::Gateway;

thread_local! {
    /// The council field's name while a subgraph schema is being built on this thread.
    static REGISTERING: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Build a schema (`build`) with the council field named `field` (none: no field).
pub fn with_council_field<R>(field: Option<String>, build: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            REGISTERING.with(|r| *r.borrow_mut() = None);
        }
    }
    REGISTERING.with(|r| *r.borrow_mut() = field);
    let _reset = Reset;
    build()
}

/// The council this gateway is: the authority of its first source.
pub fn home_authority(gateway: &Gateway) -> Option<&str> {
    gateway
        .fetcher
        .sources
        .first()
        .map(|s| s.authority.as_str())
}

/// The council field's name for an authority: its words in lower camel case
/// (`Northshire` -> `northshire`, `East Riding` -> `eastRiding`), a GraphQL name.
pub fn field_name(authority: &str) -> Option<String> {
    let mut name = String::new();
    for (i, word) in authority
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .enumerate()
    {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            if i == 0 {
                name.push(first.to_ascii_lowercase());
                name.extend(chars);
            } else {
                name.push(first.to_ascii_uppercase());
                name.extend(chars);
            }
        }
    }
    match name.chars().next() {
        None => None,
        Some(c) if c.is_ascii_digit() => Some(format!("_{name}")),
        Some(_) => Some(name),
    }
}

/// The council field of a gateway's regional subgraph.
pub fn council_field(gateway: &Gateway) -> Option<String> {
    home_authority(gateway).and_then(field_name)
}

/// The hand-written part of the regional query root: the one council-named field.
#[derive(Default)]
pub struct CouncilEntry;

impl OutputType for CouncilEntry {
    fn type_name() -> Cow<'static, str> {
        Cow::Borrowed("CouncilEntry")
    }

    fn create_type_info(registry: &mut Registry) -> String {
        let field = REGISTERING.with(|r| r.borrow().clone());
        registry.create_output_type::<Self, _>(MetaTypeId::Object, |registry| {
            let mut fields = IndexMap::new();
            if let Some(name) = field.clone() {
                let ty = <Option<Council> as OutputType>::create_type_info(registry);
                fields.insert(
                    name.clone(),
                    MetaField {
                        name,
                        description: Some(
                            "This council's part of the regional record (a router sends this field to this council only).".into(),
                        ),
                        args: Default::default(),
                        ty,
                        deprecation: Default::default(),
                        cache_control: Default::default(),
                        external: false,
                        requires: None,
                        provides: None,
                        visible: None,
                        shareable: false,
                        inaccessible: false,
                        tags: vec![],
                        override_from: None,
                        compute_complexity: None,
                        directive_invocations: vec![],
                        requires_scopes: vec![],
                    },
                );
            }
            MetaType::Object {
                name: Self::type_name().into_owned(),
                description: None,
                fields,
                cache_control: Default::default(),
                extends: false,
                shareable: false,
                resolvable: true,
                inaccessible: false,
                interface_object: false,
                tags: vec![],
                keys: None,
                visible: None,
                is_subscription: false,
                rust_typename: Some(std::any::type_name::<Self>()),
                directive_invocations: vec![],
                requires_scopes: vec![],
            }
        })
    }

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        _field: &Positioned<async_graphql::parser::types::Field>,
    ) -> ServerResult<Value> {
        async_graphql::resolver_utils::resolve_container(ctx, self).await
    }
}

impl ContainerType for CouncilEntry {
    async fn resolve_field(&self, ctx: &Context<'_>) -> ServerResult<Option<Value>> {
        let Some(gateway) = ctx.data_opt::<Arc<Gateway>>() else {
            return Ok(None);
        };
        if council_field(gateway).as_deref() != Some(ctx.item.node.name.node.as_str()) {
            return Ok(None);
        }
        let inner = ctx.with_selection_set(&ctx.item.node.selection_set);
        OutputType::resolve(&Some(Council), &inner, ctx.item)
            .await
            .map(Some)
    }
}

impl ObjectType for CouncilEntry {}

/// One council's part of the regional record: what its regional query offers, and
/// the authorities it reports on (their indicators).
pub struct Council;

#[Object(shareable)]
impl Council {
    /// The council (the authority of this gateway's sources).
    async fn name(&self, ctx: &Context<'_>) -> String {
        home_authority(ctx.data_unchecked::<Arc<Gateway>>())
            .unwrap_or_default()
            .to_string()
    }

    /// A person by this council's gateway id.
    async fn person(&self, ctx: &Context<'_>, id: ID) -> Option<Person> {
        super::person_by_id(ctx, &id).await
    }

    /// This council's record of a person by NHS number (spaces allowed; the check
    /// digit is verified): the same number in every council is one regional person.
    async fn person_by_nhs_number(
        &self,
        ctx: &Context<'_>,
        nhs_number: String,
    ) -> async_graphql::Result<Option<Person>> {
        super::person_by_nhs_number(ctx, &nhs_number).await
    }

    /// This council's people by name, birth date and postcode (as `Query.searchPeople`).
    async fn search_people(
        &self,
        ctx: &Context<'_>,
        name: Option<String>,
        birth_date: Option<NaiveDate>,
        postcode: Option<String>,
        #[graphql(default = 20, validator(minimum = 0, maximum = 200))] first: i32,
        after: Option<String>,
    ) -> async_graphql::Result<PersonConnection> {
        super::search_people(ctx, name, birth_date, postcode, first, after).await
    }

    /// The authorities this council's gateway reports on (their indicators).
    async fn authorities(&self, ctx: &Context<'_>) -> Vec<Authority> {
        super::reports::served_authorities(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::field_name;

    #[test]
    fn council_field_names_are_graphql_names() {
        assert_eq!(field_name("Northshire").as_deref(), Some("northshire"));
        assert_eq!(field_name("East Riding").as_deref(), Some("eastRiding"));
        assert_eq!(
            field_name("Brighton & Hove").as_deref(),
            Some("brightonHove")
        );
        assert_eq!(field_name("3 Rivers").as_deref(), Some("_3Rivers"));
        assert_eq!(field_name("--").as_deref(), None);
    }
}
