//! Lists of records answered without async-graphql's per-field machinery.
//!
//! Why: a person page asks for hundreds of records with a few fields each, and
//! async-graphql resolves every field of every object as a boxed future polled under a
//! `FuturesUnordered` of its own (issue 14: with every record in the cache this was most
//! of a request's CPU). A record's plain fields are pure functions of the record, so a
//! list whose selection holds nothing else is answered here, from a plan made once per
//! list. Anything the plan does not cover goes the generic way, unchanged: a field that
//! needs the context (`worker`, `relatedPerson`, ...), arguments, a directive other than
//! `@skip`/`@include` (async-graphql applies those before execution), a fragment on
//! another type, or one object key selected twice (which the generic path merges).
//!
//! The schema does not change: [`Records`] registers as the list it wraps.
//! `tests/it/gateway.rs` (`plain_lists_answer_as_the_generic_path`) compares both ways
//! over every record type.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};

use async_graphql::indexmap::IndexMap;
use async_graphql::parser::types::{Field, Selection, SelectionSet};
use async_graphql::registry::Registry;
use async_graphql::{
    ContextSelectionSet, Name, OutputType, Positioned, ScalarType, ServerResult, Value,
};
use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};

use super::records::Sourced;

/// How a plain field is read from its record.
pub type Getter = fn(&Sourced) -> Value;

/// A field a plan can answer: a value, or a small object of values (`provenance`).
#[derive(Clone, Copy)]
pub enum PlainField {
    Leaf(Getter),
    Object {
        type_name: &'static str,
        fields: &'static [(&'static str, Getter)],
    },
}

/// A record type with plain fields.
pub trait PlainRecord: OutputType + Sized + 'static {
    /// The GraphQL type name (what `__typename` answers).
    const TYPE: &'static str;
    fn sourced(&self) -> &Sourced;
    /// The plain fields by GraphQL name; fields not here need the generic path.
    fn plain_fields() -> &'static [(String, PlainField)];
    /// The fields that need the context (kept here so a test can check that every
    /// field of the type is one or the other).
    const CONTEXTUAL: &'static [&'static str];
}

/// A list of records that registers as `[T!]!` and answers plain selections itself.
pub struct Records<T>(pub Vec<T>);

static ANSWERED: AtomicU64 = AtomicU64::new(0);

/// How many lists the plain path has answered in this process (for tests).
pub fn lists_answered() -> u64 {
    ANSWERED.load(Ordering::Relaxed)
}

impl<T: PlainRecord> OutputType for Records<T> {
    fn type_name() -> Cow<'static, str> {
        <Vec<T> as OutputType>::type_name()
    }

    fn qualified_type_name() -> String {
        <Vec<T> as OutputType>::qualified_type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        <Vec<T> as OutputType>::create_type_info(registry)
    }

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        field: &Positioned<Field>,
    ) -> ServerResult<Value> {
        let mut steps = Vec::new();
        let planned = plan(
            ctx,
            &field.node.selection_set.node,
            T::TYPE,
            &|name| {
                T::plain_fields()
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, f)| *f)
            },
            &mut steps,
        );
        if !planned {
            return <Vec<T> as OutputType>::resolve(&self.0, ctx, field).await;
        }
        ANSWERED.fetch_add(1, Ordering::Relaxed);
        Ok(Value::List(
            self.0.iter().map(|r| answer(&steps, r.sourced())).collect(),
        ))
    }
}

/// One response key of a plan.
enum Step {
    Leaf(Name, Getter),
    Typename(Name, &'static str),
    Object(Name, Vec<Step>),
}

impl Step {
    fn key(&self) -> &Name {
        match self {
            Step::Leaf(k, _) | Step::Typename(k, _) | Step::Object(k, _) => k,
        }
    }
}

/// Plan `set` on `type_name` into `steps`; false when the plain path cannot answer it.
fn plan(
    ctx: &ContextSelectionSet<'_>,
    set: &SelectionSet,
    type_name: &'static str,
    find: &dyn Fn(&str) -> Option<PlainField>,
    steps: &mut Vec<Step>,
) -> bool {
    for selection in &set.items {
        match &selection.node {
            Selection::Field(f) => {
                let f = &f.node;
                if !f.directives.is_empty() || !f.arguments.is_empty() {
                    return false;
                }
                let key = f.response_key().node.clone();
                let name = f.name.node.as_str();
                let step = if name == "__typename" {
                    Step::Typename(key, type_name)
                } else {
                    match find(name) {
                        Some(PlainField::Leaf(get)) => Step::Leaf(key, get),
                        Some(PlainField::Object {
                            type_name: inner,
                            fields,
                        }) => {
                            let mut sub = Vec::new();
                            let find_inner = |n: &str| {
                                fields
                                    .iter()
                                    .find(|(name, _)| *name == n)
                                    .map(|(_, get)| PlainField::Leaf(*get))
                            };
                            if !plan(ctx, &f.selection_set.node, inner, &find_inner, &mut sub) {
                                return false;
                            }
                            Step::Object(key, sub)
                        }
                        None => return false,
                    }
                };
                match steps.iter().find(|s| s.key() == step.key()) {
                    None => steps.push(step),
                    // The same value under the same key (a fragment repeating `id`).
                    Some(Step::Leaf(_, a)) if matches!(step, Step::Leaf(_, b) if std::ptr::fn_addr_eq(*a, b)) =>
                        {}
                    Some(Step::Typename(..)) if matches!(step, Step::Typename(..)) => {}
                    // An object selected twice is merged by the generic path.
                    Some(_) => return false,
                }
            }
            Selection::FragmentSpread(spread) => {
                let Some(fragment) = ctx.query_env.fragments.get(&spread.node.fragment_name.node)
                else {
                    return false;
                };
                if !spread.node.directives.is_empty()
                    || !fragment.node.directives.is_empty()
                    || fragment.node.type_condition.node.on.node != type_name
                    || !plan(
                        ctx,
                        &fragment.node.selection_set.node,
                        type_name,
                        find,
                        steps,
                    )
                {
                    return false;
                }
            }
            Selection::InlineFragment(inline) => {
                let inline = &inline.node;
                let applies = inline
                    .type_condition
                    .as_ref()
                    .is_none_or(|c| c.node.on.node == type_name);
                if !inline.directives.is_empty()
                    || !applies
                    || !plan(ctx, &inline.selection_set.node, type_name, find, steps)
                {
                    return false;
                }
            }
        }
    }
    true
}

fn answer(steps: &[Step], record: &Sourced) -> Value {
    let mut object = IndexMap::with_capacity(steps.len());
    for step in steps {
        let (key, value) = match step {
            Step::Leaf(key, get) => (key, get(record)),
            Step::Typename(key, type_name) => (key, Value::String(type_name.to_string())),
            Step::Object(key, sub) => (key, answer(sub, record)),
        };
        object.insert(key.clone(), value);
    }
    Value::Object(object)
}

/// A date as async-graphql writes `NaiveDate` (`%Y-%m-%d`). Why not chrono's `format`:
/// it parses its format string for every value, 5% of a warm request's CPU (perf).
pub fn date_value(date: NaiveDate) -> Value {
    if !(0..=9999).contains(&date.year()) {
        return ScalarType::to_value(&date);
    }
    let mut out = String::with_capacity(10);
    push_date(&mut out, date);
    Value::String(out)
}

/// A date and time as async-graphql writes `NaiveDateTime` (`%Y-%m-%dT%H:%M:%S%.f`: the
/// fraction in 3, 6 or 9 digits as needed, none when zero).
pub fn date_time_value(at: NaiveDateTime) -> Value {
    let nanos = at.nanosecond();
    if !(0..=9999).contains(&at.year()) || nanos >= 1_000_000_000 {
        return ScalarType::to_value(&at);
    }
    let mut out = String::with_capacity(29);
    push_date(&mut out, at.date());
    out.push('T');
    push_digits(&mut out, at.hour(), 2);
    out.push(':');
    push_digits(&mut out, at.minute(), 2);
    out.push(':');
    push_digits(&mut out, at.second(), 2);
    if nanos != 0 {
        out.push('.');
        if nanos.is_multiple_of(1_000_000) {
            push_digits(&mut out, nanos / 1_000_000, 3);
        } else if nanos.is_multiple_of(1_000) {
            push_digits(&mut out, nanos / 1_000, 6);
        } else {
            push_digits(&mut out, nanos, 9);
        }
    }
    Value::String(out)
}

fn push_date(out: &mut String, date: NaiveDate) {
    push_digits(out, date.year() as u32, 4);
    out.push('-');
    push_digits(out, date.month(), 2);
    out.push('-');
    push_digits(out, date.day(), 2);
}

/// `value` in exactly `width` decimal digits (it has at most that many).
fn push_digits(out: &mut String, value: u32, width: u32) {
    let mut divisor = 10u32.pow(width - 1);
    while divisor > 0 {
        out.push(char::from(b'0' + (value / divisor % 10) as u8));
        divisor /= 10;
    }
}

/// A Rust field name as async-graphql names it by default (`seen_alone` -> `seenAlone`).
pub fn camel(rust: &str) -> String {
    let mut out = String::with_capacity(rust.len());
    let mut upper = false;
    for c in rust.chars() {
        if c == '_' {
            upper = !out.is_empty();
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{camel, date_time_value, date_value};
    use async_graphql::ScalarType;
    use chrono::{Datelike, NaiveDate, NaiveDateTime};
    use proptest::prelude::*;

    proptest! {
        // Every representable date and time, leap seconds and out-of-range years too.
        #[test]
        fn dates_are_written_as_async_graphql_writes_them(
            days in (NaiveDate::MIN.num_days_from_ce())..=(NaiveDate::MAX.num_days_from_ce()),
            seconds in 0u32..86_400,
            nanos in prop_oneof![
                Just(0u32),
                (0u32..1_000).prop_map(|m| m * 1_000_000),
                (0u32..1_000_000).prop_map(|u| u * 1_000),
                0u32..2_000_000_000,
            ],
        ) {
            let date = NaiveDate::from_num_days_from_ce_opt(days).unwrap();
            prop_assert_eq!(date_value(date), ScalarType::to_value(&date));
            if let Some(time) = chrono::NaiveTime::from_num_seconds_from_midnight_opt(seconds, nanos) {
                let at = NaiveDateTime::new(date, time);
                prop_assert_eq!(date_time_value(at), ScalarType::to_value(&at));
            }
        }
    }

    #[test]
    fn camel_case_is_async_graphqls() {
        for (rust, graphql) in [
            ("seen_alone", "seenAlone"),
            ("line1", "line1"),
            ("date_time", "dateTime"),
            ("use_other", "useOther"),
            ("id", "id"),
        ] {
            assert_eq!(camel(rust), graphql);
        }
    }
}
