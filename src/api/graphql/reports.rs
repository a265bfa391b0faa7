//! GraphQL for reporting tools: `indicators`, `minimumDataSet`, and the `Authority`
//! federation entity. The work is in `crate::reports`; this maps it to the schema.

use std::sync::Arc;

use async_graphql::{ComplexObject, Context, ErrorExtensions, SimpleObject};

use crate::api::error::GatewayError;
use crate::api::gateway::Gateway;
use crate::consent::access::AccessContext;
use crate::reports::mds::MdsRow;
use crate::reports::suppress::IndicatorResult;
use crate::reports::{run, Period};

#[derive(SimpleObject)]
#[graphql(shareable)]
pub struct MdsPage {
    pub rows: Vec<MdsRow>,
    pub page_info: super::person::PageInfo,
    /// The national data opt-out in this authority's data set.
    pub opt_out: Option<crate::reports::suppress::OptOutNote>,
}

/// A council this gateway reports on.
#[derive(SimpleObject)]
#[graphql(shareable)]
#[graphql(complex)]
pub struct Authority {
    pub name: String,
}

#[ComplexObject]
impl Authority {
    /// This authority's indicators for a period (as `Query.indicators`).
    async fn indicators(
        &self,
        ctx: &Context<'_>,
        period: String,
    ) -> async_graphql::Result<Vec<IndicatorResult>> {
        indicators(ctx, &period, Some(vec![self.name.clone()])).await
    }
}

fn err(e: impl Into<GatewayError>) -> async_graphql::Error {
    e.into().extend()
}

pub async fn indicators(
    ctx: &Context<'_>,
    period: &str,
    authorities: Option<Vec<String>>,
) -> async_graphql::Result<Vec<IndicatorResult>> {
    let gateway = ctx.data_unchecked::<Arc<Gateway>>();
    let caller = ctx.data_unchecked::<AccessContext>();
    let period = Period::parse(period).map_err(err)?;
    run::indicators(&gateway.estate(), caller, period, authorities.as_deref())
        .await
        .map_err(err)
}

pub async fn minimum_data_set(
    ctx: &Context<'_>,
    period: &str,
    authority: &str,
    first: i32,
    after: Option<String>,
) -> async_graphql::Result<MdsPage> {
    let gateway = ctx.data_unchecked::<Arc<Gateway>>();
    let caller = ctx.data_unchecked::<AccessContext>();
    let period = Period::parse(period).map_err(err)?;
    let estate = gateway.estate();
    let (rows, next) = run::mds_page(
        &estate,
        caller,
        period,
        authority,
        usize::try_from(first).unwrap_or(1),
        after.as_deref(),
    )
    .await
    .map_err(err)?;
    Ok(MdsPage {
        opt_out: run::mds_opt_out(&estate, caller, period, authority).map_err(err)?,
        rows,
        page_info: super::person::PageInfo {
            has_next_page: next.is_some(),
            end_cursor: next,
        },
    })
}

/// The entity for an authority this gateway reports on; `None` for any other.
pub fn authority(ctx: &Context<'_>, name: String) -> Option<Authority> {
    let gateway = ctx.data_unchecked::<Arc<Gateway>>();
    let reports = gateway.reports.as_deref()?;
    run::served(&gateway.estate(), reports)
        .contains(&name)
        .then_some(Authority { name })
}

/// The authorities this gateway reports on (none without reports).
pub fn served_authorities(ctx: &Context<'_>) -> Vec<Authority> {
    let gateway = ctx.data_unchecked::<Arc<Gateway>>();
    let Some(reports) = gateway.reports.as_deref() else {
        return Vec::new();
    };
    run::served(&gateway.estate(), reports)
        .into_iter()
        .map(|name| Authority { name })
        .collect()
}
