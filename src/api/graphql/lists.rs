//! Lists of people a portal pages through: the calling worker's caseload and, for
//! roles that may list everyone, the whole identity index. Both leave out whoever the
//! caller may not see before counting, page by sealed cursors and audit each release.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use async_graphql::{Context, ErrorExtensions};
use chrono::Utc;
use escr_connector::{EntityKind, Record};

use super::person::{self, Person};
use super::{audit_id, PersonConnection, PersonEdge};
use crate::api::error::GatewayError;
use crate::api::gateway::Gateway;
use crate::consent::access::AccessContext;
use crate::consent::engine::allocation_is_current;
use crate::record::loader::RequestLoaders;
use crate::record::source::Lookup;

const CASELOAD_CURSOR: &str = "caseload";
const PEOPLE_CURSOR: &str = "people";

/// `myCaseload`: people with an allocation to the calling worker in force today.
pub async fn my_caseload(
    ctx: &Context<'_>,
    first: i32,
    after: Option<String>,
) -> async_graphql::Result<PersonConnection> {
    let gateway = ctx.data_unchecked::<Arc<Gateway>>();
    let access = ctx.data_unchecked::<AccessContext>();
    let worker = access.worker_id.as_deref().ok_or_else(|| {
        GatewayError::Forbidden("a caseload needs a token with a worker id (claim `worker`)".into())
            .extend()
    })?;
    gateway
        .policy
        .may_identify(access)
        .map_err(|w| GatewayError::Withheld(w).extend())?;
    super::unlisted_sources(ctx, gateway);
    let allocated = allocated_to(ctx, gateway, worker).await;
    let ids = visible(ctx, gateway, access, allocated.into_iter()).await;
    page(ctx, CASELOAD_CURSOR, &ids, first, after.as_deref())
}

/// `people`: everyone in the identity index, for roles with `may_list_people`.
pub async fn people(
    ctx: &Context<'_>,
    first: i32,
    after: Option<String>,
) -> async_graphql::Result<PersonConnection> {
    let gateway = ctx.data_unchecked::<Arc<Gateway>>();
    let access = ctx.data_unchecked::<AccessContext>();
    // Without a policy (tests, in-process use) everything is visible anyway.
    let may_list = gateway.access.as_ref().is_none_or(|a| {
        a.engine
            .role(&access.role)
            .is_some_and(|r| r.may_list_people)
    });
    if !may_list {
        return Err(GatewayError::Forbidden(
            "your role may not list people ([roles.*] may_list_people)".into(),
        )
        .extend());
    }
    gateway
        .policy
        .may_identify(access)
        .map_err(|w| GatewayError::Withheld(w).extend())?;
    super::unlisted_sources(ctx, gateway);
    let snapshot = gateway.index.snapshot();
    let ids = visible(ctx, gateway, access, snapshot.people.keys().cloned()).await;
    page(ctx, PEOPLE_CURSOR, &ids, first, after.as_deref())
}

/// Gateway ids (in id order) of the people whose source records carry an allocation
/// to `worker` in force today. One load per source holding allocations, for every
/// person of the index it knows; a source that fails adds SOURCE_UNAVAILABLE, so a
/// short caseload is never silent.
async fn allocated_to(ctx: &Context<'_>, gateway: &Gateway, worker: &str) -> BTreeSet<String> {
    let snapshot = gateway.index.snapshot();
    let fetcher = ctx.data_unchecked::<RequestLoaders>().fetcher();
    let mut owners: Vec<HashMap<&str, &str>> = vec![HashMap::new(); fetcher.sources.len()];
    for (person_id, refs) in &snapshot.people {
        for r in refs {
            if let Some(i) = fetcher.source_index(&r.source) {
                owners[i].insert(r.local_id.as_str(), person_id.as_str());
            }
        }
    }
    let loads = owners.iter().enumerate().map(|(i, owned)| async move {
        let source = &fetcher.sources[i];
        if owned.is_empty() || !source.holds(EntityKind::Allocation) {
            return Ok(HashMap::new());
        }
        // The worker's allocations by the profile's `by_worker`: one statement,
        // whatever the size of the index. Without it, every person's allocations.
        match source.allocations_of_workers(&[worker.to_string()]).await {
            Ok(Some(mapped)) => {
                let mut by_person: HashMap<String, Vec<Arc<Record>>> = HashMap::new();
                for r in mapped.records {
                    if let Some(p) = r.person_id.clone() {
                        by_person.entry(p).or_default().push(Arc::new(r));
                    }
                }
                return Ok(by_person
                    .into_iter()
                    .map(|(p, records)| (p, Arc::new(records)))
                    .collect());
            }
            Ok(None) => {}
            Err(e) => return Err(Arc::new(e)),
        }
        let keys: Vec<String> = owned.keys().map(|k| k.to_string()).collect();
        fetcher
            .load(i, EntityKind::Allocation, Lookup::ByPerson, &keys)
            .await
    });
    let today = Utc::now().date_naive();
    let mut allocated = BTreeSet::new();
    for (i, result) in futures::future::join_all(loads)
        .await
        .into_iter()
        .enumerate()
    {
        match result {
            Ok(by_person) => {
                for (local_id, records) in by_person {
                    let mine = records.iter().any(|a| {
                        allocation_is_current(a, today) && a.text("worker_id") == Some(worker)
                    });
                    if let (true, Some(owner)) = (mine, owners[i].get(local_id.as_str())) {
                        allocated.insert(owner.to_string());
                    }
                }
            }
            Err(e) => ctx
                .add_error(GatewayError::Source((*e).clone()).to_server_error(Some(ctx.item.pos))),
        }
    }
    allocated
}

/// The people of `ids` this caller may see (as a lookup by id decides), in order.
async fn visible(
    ctx: &Context<'_>,
    gateway: &Gateway,
    access: &AccessContext,
    ids: impl Iterator<Item = String>,
) -> Vec<String> {
    let mut ids: Vec<String> = ids
        .filter(|id| gateway.policy.may_see_person(access, id))
        .collect();
    // Only where the opt-out can leave someone out for this caller: otherwise no
    // facts are read for the whole list.
    if gateway.policy.needs_facts() && gateway.policy.facts_needed(access).left_out {
        // Left out altogether (the opt-out as the sources record it): not listed, not
        // counted. Facts load in one batch per source for the whole list.
        let snapshot = gateway.index.snapshot();
        let checks = ids.iter().map(|id| {
            let person = Person::new(id.clone(), snapshot.records(id).to_vec());
            async move {
                let facts = person::person_facts(ctx, &person).await;
                !gateway.policy.left_out(access, &facts)
            }
        });
        let keep = futures::future::join_all(checks).await;
        let mut keep = keep.into_iter();
        ids.retain(|_| keep.next().unwrap_or(false));
    }
    ids
}

/// A page of `ids` (sorted, all visible) after a sealed cursor of this list and
/// caller; each person released is audited.
pub(super) fn page(
    ctx: &Context<'_>,
    kind: &'static str,
    ids: &[String],
    first: i32,
    after: Option<&str>,
) -> async_graphql::Result<PersonConnection> {
    let gateway = ctx.data_unchecked::<Arc<Gateway>>();
    let access = ctx.data_unchecked::<AccessContext>();
    let start = match after {
        None => 0,
        Some(cursor) => {
            let after_id = crate::consent::cursor::open(kind, access, cursor)
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    GatewayError::BadInput(format!("`after` is not a cursor of this {kind} list"))
                        .extend()
                })?;
            ids.partition_point(|id| id.as_str() <= after_id.as_str())
        }
    };
    let first = first.max(0) as usize;
    let snapshot = gateway.index.snapshot();
    let edges: Vec<PersonEdge> = ids
        .iter()
        .skip(start)
        .take(first)
        .map(|id| {
            audit_id(ctx, id, "released");
            PersonEdge {
                list: kind,
                node: Person::new(id.clone(), snapshot.records(id).to_vec()),
            }
        })
        .collect();
    Ok(PersonConnection {
        page_info: person::PageInfo {
            has_next_page: ids.len() > start + first,
            end_cursor: (edges.last())
                .map(|e| crate::consent::cursor::seal(kind, access, e.node.id.as_bytes())),
        },
        edges,
        total_count: ids.len(),
    })
}
