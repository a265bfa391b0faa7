//! Running reports for a caller: who may, which people count, auditing, paging and
//! streaming. Shared by GraphQL and the HTTP endpoints.

use std::collections::HashSet;
use std::ops::Bound;
use std::sync::Arc;

use escr_connector::mapping::Fields;
use futures::StreamExt;

use crate::consent::access::{release, AccessContext, PersonFacts, Purpose};
use crate::consent::audit::RequestAudit;
use crate::consent::context::purpose_name;
use crate::identity::index::Snapshot;

use super::extract::PersonData;
use super::extract::{Demographics, Extractor, Page, INDICATOR_FIELDS_READ};
use super::indicators::{Tallies, INDICATORS};
use super::mds::{self, MdsRow, RowInput};
use super::suppress::{self, IndicatorResult};
use super::{Estate, Period, ReportError, Reports};

/// Reports are for planning and research, by roles that may use that purpose.
pub fn authorise<'a>(gateway: &'a Estate, ctx: &AccessContext) -> Result<&'a Reports, ReportError> {
    let reports = gateway
        .reports
        .as_deref()
        .ok_or(ReportError::NotConfigured)?;
    if !matches!(ctx.purpose, Purpose::Planning | Purpose::Research) {
        return Err(ReportError::Purpose(purpose_name(ctx.purpose).into()));
    }
    if let Some(access) = &gateway.access {
        let allowed = access
            .engine
            .role(&ctx.role)
            .is_some_and(|r| r.purposes.iter().any(|p| p == purpose_name(ctx.purpose)));
        if !allowed {
            return Err(ReportError::Role(ctx.role.clone()));
        }
    }
    Ok(reports)
}

/// The authorities this gateway reports on: configured ones with a source here.
pub fn served(gateway: &Estate, reports: &Reports) -> Vec<String> {
    reports
        .authority_names()
        .into_iter()
        .filter(|a| gateway.fetcher.sources.iter().any(|s| &s.authority == a))
        .collect()
}

/// The named authorities (all served ones when none are named), each checked; with
/// `peers`, also the authorities of peer gateways (aggregates only).
pub fn authorities(
    gateway: &Estate,
    reports: &Reports,
    named: Option<&[String]>,
    peers: bool,
) -> Result<Vec<String>, ReportError> {
    let mut known = served(gateway, reports);
    if peers {
        known.extend(reports.config.peers.keys().cloned());
    }
    match named {
        Some(list) if !list.is_empty() => list
            .iter()
            .map(|a| {
                known.iter().find(|s| *s == a).cloned().ok_or_else(|| {
                    ReportError::UnknownAuthority(a.chars().take(60).collect(), known.join(", "))
                })
            })
            .collect(),
        _ => Ok(served(gateway, reports)),
    }
}

/// Raw tallies of one authority, leaving out `excluded` people. Unsuppressed: callers
/// get them only through [`indicators`].
pub async fn tallies(
    gateway: &Estate,
    reports: &Reports,
    authority: &str,
    period: Period,
    excluded: &HashSet<String>,
) -> Result<Tallies, ReportError> {
    Ok(tally(gateway, reports, authority, period, excluded, None)
        .await?
        .0)
}

/// What the policy knows of a person from a page read: their consents and allocations
/// and the NHS numbers on their records (the registry is read by the caller when it
/// decides records).
fn facts_of(p: &PersonData) -> PersonFacts {
    PersonFacts {
        person_id: p.person_id.clone(),
        allocations: p.allocations.clone(),
        source_consents: p.consents.clone(),
        nhs_numbers: p
            .person_records
            .iter()
            .filter(|(_, r)| r.bool("nhs_number_valid") == Some(true))
            .filter_map(|(_, r)| r.text("nhs_number").map(str::to_string))
            .collect(),
        ..PersonFacts::default()
    }
}

/// Pages of people a report reads at once (each page's records are held until counted).
/// Four keep both cores busy while a page waits for its statements (measured at
/// 100,000 people: 10-15% faster than two).
const PAGES_IN_FLIGHT: usize = 4;

/// What counting a page needs, shared by the pages' tasks.
struct PageCount {
    ex: Extractor,
    caller: Option<AccessContext>,
    survivorship: crate::identity::linkage::config::Survivorship,
    calendar: super::calendar::BankHolidays,
}

impl PageCount {
    async fn count(&self, page: &Page) -> Result<Tallies, ReportError> {
        let (gateway, period) = (&self.ex.gateway, self.ex.period);
        let mut tallies = Tallies::default();
        for p in self.ex.page(page).await? {
            if (self.caller.as_ref()).is_some_and(|c| gateway.policy.left_out(c, &facts_of(&p))) {
                continue;
            }
            let demo = Demographics::for_indicators(&p.person_records, &self.survivorship);
            tallies.add(&p, &demo, period, &self.calendar);
        }
        Ok(tallies)
    }
}

/// The tallies, and every person of the authority (before anyone is left out). With a
/// `caller`, the policy leaves people out from what their records say too (the
/// national data opt-out recorded in a source, NHS numbers the index lacks).
async fn tally(
    gateway: &Estate,
    reports: &Reports,
    authority: &str,
    period: Period,
    excluded: &HashSet<String>,
    caller: Option<&AccessContext>,
) -> Result<(Tallies, Vec<String>), ReportError> {
    let snapshot = gateway.index.snapshot();
    let with_facts = caller.is_some() && gateway.policy.needs_facts();
    let ex = Extractor::new(gateway, authority, period, with_facts)
        .reading(Fields::Only(&INDICATOR_FIELDS_READ));
    super::extract::check_sources(gateway, authority).await?;
    let survivorship = &gateway.index.linkage_config().survivorship;
    let mut tallies = Tallies::default();
    let mut everyone = Vec::new();
    let mut pages = Vec::new();
    for page in ex.pages_in_source_order(&snapshot, reports.config.page_people) {
        everyone.extend(page.ids.iter().cloned());
        pages.push(page.without(|id| excluded.contains(id)));
    }
    // `PAGES_IN_FLIGHT` pages at once, each read, mapped and counted on its own task: with the
    // counting on one task behind them, the 100k-person indicators used 1.6 of the
    // two cores. Tallies are sums, so a page's merge into the whole in any order
    // gives the same answer.
    let work = Arc::new(PageCount {
        ex,
        caller: caller.cloned(),
        survivorship: survivorship.clone(),
        calendar: reports.calendar.clone(),
    });
    let mut counted = futures::stream::iter(pages)
        .map(|page| {
            let work = work.clone();
            tokio::spawn(async move { work.count(&page).await })
        })
        .buffered(PAGES_IN_FLIGHT);
    while let Some(page) = counted.next().await {
        let page = match page {
            Ok(page) => page,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => return Err(ReportError::Interrupted),
        };
        tallies.merge(page?);
    }
    Ok((tallies, everyone))
}

/// Indicators for the caller, for standard periods only (`indicator_periods`): people
/// the policy leaves out of this purpose (the national data opt-out, from the file or
/// a source) are not counted; outputs are suppressed; each authority's answer says how
/// many listed people could not be matched and how many cannot be checked; the
/// release is audited (aggregates: no person in the event).
pub async fn indicators(
    gateway: &Estate,
    ctx: &AccessContext,
    period: Period,
    named: Option<&[String]>,
) -> Result<Vec<IndicatorResult>, ReportError> {
    let reports = authorise(gateway, ctx)?;
    let period = period.standard(&reports.config.indicator_periods)?;
    let names = authorities(gateway, reports, named, true)?;
    let excluded = gateway.policy.excluded_people(ctx);
    let threshold = reports.config.suppression_threshold;
    let mut out = Vec::new();
    for name in &names {
        if let Some(peer) = reports.peer(name) {
            out.extend(super::peers::indicators(name, peer, ctx, period).await?);
            continue;
        }
        let (t, people) = tally(gateway, reports, name, period, &excluded, Some(ctx)).await?;
        let note = suppress::opt_out_note(gateway.policy.opt_out_counts(ctx, &people), threshold);
        let national = complete_definitions(gateway, name);
        out.extend(
            published(reports, name, period, &t, threshold)
                .into_iter()
                .chain(published_national(
                    reports, name, period, &t, threshold, &national,
                ))
                .map(|mut r| {
                    r.opt_out = note.clone();
                    r
                }),
        );
    }
    let audit = RequestAudit::new();
    audit.note(
        None,
        "released",
        None,
        Some(&format!(
            "indicators {} for {}",
            period.label(),
            names.join(", ")
        )),
        "indicators",
    );
    append_audit(gateway, ctx, &audit).await?;
    Ok(out)
}

/// Every indicator of one authority as published with `threshold` (0: unsuppressed,
/// for checks against ground truth only).
pub fn published(
    reports: &Reports,
    authority: &str,
    period: Period,
    t: &Tallies,
    threshold: u64,
) -> Vec<IndicatorResult> {
    let population = reports.authority(authority);
    INDICATORS
        .iter()
        .map(|(id, ..)| {
            let pop = match (*id, population) {
                ("6a", Some(a)) => a.population_18_64,
                ("6b", Some(a)) => a.population_65_plus,
                _ => 0,
            };
            let tally = t.by_id.get(id).cloned().unwrap_or_default();
            suppress::publish(authority, &period.label(), id, &tally, pop, threshold)
        })
        .collect()
}

/// The national definitions whose every need the authority's sources meet
/// (`escr data-requirements` says what the others lack).
pub fn complete_definitions(gateway: &Estate, authority: &str) -> Vec<&'static str> {
    let sources = gateway
        .fetcher
        .sources
        .iter()
        .filter(|s| s.authority == authority)
        .map(|s| (s.name.as_str(), s.authority.as_str(), &s.profile));
    let (_, statuses) = super::definitions::requirements(sources);
    statuses
        .into_iter()
        .filter(|s| s.complete && s.definition != super::indicators::LOCAL_DEFINITION)
        .map(|s| s.definition)
        .collect()
}

/// The national measures of the `complete` definitions, as published.
pub fn published_national(
    reports: &Reports,
    authority: &str,
    period: Period,
    t: &Tallies,
    threshold: u64,
    complete: &[&str],
) -> Vec<IndicatorResult> {
    let population = reports.authority(authority);
    super::national::NATIONAL_MEASURES
        .iter()
        .filter(|(_, definition, ..)| complete.contains(definition))
        .map(|&(id, definition, name, unit)| {
            let pop = match (id, population) {
                ("2B", Some(a)) => a.population_18_64,
                ("2C", Some(a)) => a.population_65_plus,
                _ => 0,
            };
            let tally = t.national.by_id.get(id).cloned().unwrap_or_default();
            let measure = suppress::Measure {
                id,
                definition,
                name,
                unit,
            };
            suppress::publish_measure(authority, &period.label(), measure, &tally, pop, threshold)
        })
        .collect()
}

async fn append_audit(
    gateway: &Estate,
    ctx: &AccessContext,
    audit: &RequestAudit,
) -> Result<(), ReportError> {
    if let Some(access) = &gateway.access {
        access.audit.append_request(audit, ctx).await.map_err(|e| {
            tracing::error!(error = %e, "audit write failed: report withheld");
            ReportError::Audit
        })?;
    }
    Ok(())
}

/// One caller's data set for one authority and period.
struct MdsJob<'a> {
    gateway: &'a Estate,
    reports: &'a Reports,
    ctx: &'a AccessContext,
    authority: &'a str,
    ex: Extractor,
    snapshot: Arc<Snapshot>,
    excluded: Arc<HashSet<String>>,
}

impl<'a> MdsJob<'a> {
    fn new(
        gateway: &'a Estate,
        reports: &'a Reports,
        ctx: &'a AccessContext,
        authority: &'a str,
        period: Period,
    ) -> MdsJob<'a> {
        MdsJob {
            gateway,
            reports,
            ctx,
            authority,
            ex: Extractor::new(gateway, authority, period, gateway.policy.needs_facts()),
            snapshot: gateway.index.snapshot(),
            excluded: gateway.policy.excluded_people(ctx),
        }
    }

    fn people(&self, from: Bound<&str>, limit: usize) -> Vec<String> {
        self.ex.people(&self.snapshot, from, limit)
    }

    /// The data set's rows for some people of one authority: each record passes the
    /// consent hook for the caller; the page's releases are audited before it is returned.
    async fn rows(&self, ids: &[String]) -> Result<Vec<(String, Vec<MdsRow>)>, ReportError> {
        let (gateway, reports, ctx, authority) =
            (self.gateway, self.reports, self.ctx, self.authority);
        let (ex, snapshot, excluded) = (&self.ex, &self.snapshot, &self.excluded);
        let ids: Vec<String> = ids
            .iter()
            .filter(|id| !excluded.contains(*id))
            .cloned()
            .collect();
        let policy = &gateway.policy;
        let identify = policy.may_identify(ctx).is_ok()
            && gateway.access.as_ref().is_none_or(|a| {
                a.engine
                    .config
                    .purposes
                    .get(purpose_name(ctx.purpose))
                    .is_some_and(|p| p.get_ref().classes.iter().any(|c| c == "demographics"))
            });
        let survivorship = &gateway.index.linkage_config().survivorship;
        let audit = RequestAudit::new();
        let mut out = Vec::new();
        for p in ex.page(&ex.page_of(snapshot, &ids)).await? {
            let mut facts = facts_of(&p);
            if let Some(access) = &gateway.access {
                match access.registry.active(&p.person_id).await {
                    Ok(c) => facts.registry_consents = c,
                    Err(_) => facts.consent_unknown = true,
                }
            }
            let people = release(policy.as_ref(), ctx, &facts, p.person_records.clone());
            let demographics = Demographics::of(&people.records, survivorship);
            let events = p
                .events
                .iter()
                .filter(|(_, r)| mds::event_type(r, ex.period).is_some())
                .cloned();
            let released = release(policy.as_ref(), ctx, &facts, events);
            let withheld = [&people, &released]
                .into_iter()
                .flat_map(|r| r.withheld.iter().chain(&r.hidden));
            for (_, r, why) in withheld {
                audit.note(
                    Some(&p.person_id),
                    "withheld",
                    Some(why.code),
                    Some("minimum data set"),
                    r.entity.name(),
                );
            }
            let mut rows: Vec<MdsRow> = released
                .records
                .iter()
                .filter_map(|(source, r)| {
                    let event = mds::event_type(r, ex.period)?;
                    let input = RowInput {
                        authority,
                        person: reports.pseudonym(&p.person_id),
                        event_reference: reports.pseudonym(&format!(
                            "{source}/{}/{}",
                            r.entity.name(),
                            r.local_id
                        )),
                        demographics: &demographics,
                        identify,
                    };
                    Some(mds::row(input, r, event))
                })
                .collect();
            if rows.is_empty() {
                continue;
            }
            rows.sort_by(|a, b| {
                (a.event_start, &a.event_type, &a.event_reference).cmp(&(
                    b.event_start,
                    &b.event_type,
                    &b.event_reference,
                ))
            });
            for kind in rows
                .iter()
                .map(|r| r.event_type.to_lowercase())
                .collect::<std::collections::BTreeSet<_>>()
            {
                audit.note(
                    Some(&p.person_id),
                    "released",
                    None,
                    Some("minimum data set"),
                    &kind,
                );
            }
            out.push((p.person_id.clone(), rows));
        }
        append_audit(gateway, ctx, &audit).await?;
        Ok(out)
    }
}

/// The data set's cursors name a list: one authority and period.
fn cursor_kind(authority: &str, period: Period) -> String {
    format!("mds|{authority}|{}", period.label())
}

/// An opaque cursor: the person to resume at and how many of their rows were given,
/// sealed (it would otherwise map pseudonyms back to gateway ids).
fn cursor(ctx: &AccessContext, kind: &str, person: &str, skip: usize) -> String {
    crate::consent::cursor::seal(kind, ctx, format!("{skip}:{person}").as_bytes())
}

fn parse_cursor(ctx: &AccessContext, kind: &str, c: &str) -> Result<(String, usize), ReportError> {
    let text = crate::consent::cursor::open(kind, ctx, c)
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or(ReportError::Cursor)?;
    let (skip, person) = text.split_once(':').ok_or(ReportError::Cursor)?;
    Ok((
        person.to_string(),
        skip.parse().map_err(|_| ReportError::Cursor)?,
    ))
}

/// What the data set for one authority says about the national data opt-out.
pub fn mds_opt_out(
    gateway: &Estate,
    ctx: &AccessContext,
    period: Period,
    authority: &str,
) -> Result<Option<suppress::OptOutNote>, ReportError> {
    let reports = authorise(gateway, ctx)?;
    let ex = Extractor::new(gateway, authority, period, false);
    let people = ex.people(&gateway.index.snapshot(), Bound::Unbounded, usize::MAX);
    Ok(suppress::opt_out_note(
        gateway.policy.opt_out_counts(ctx, &people),
        reports.config.suppression_threshold,
    ))
}

/// One page of the data set: up to `first` rows after `after`, and the cursor of the
/// next row when there is one.
pub async fn mds_page(
    gateway: &Estate,
    ctx: &AccessContext,
    period: Period,
    authority: &str,
    first: usize,
    after: Option<&str>,
) -> Result<(Vec<MdsRow>, Option<String>), ReportError> {
    let reports = authorise(gateway, ctx)?;
    let authority = authorities(gateway, reports, Some(&[authority.to_string()]), false)?.remove(0);
    let kind = cursor_kind(&authority, period);
    let (mut from, mut skip) = match after {
        Some(c) => {
            let (person, skip) = parse_cursor(ctx, &kind, c)?;
            (Bound::Included(person), skip)
        }
        None => (Bound::Unbounded, 0),
    };
    let job = MdsJob::new(gateway, reports, ctx, &authority, period);
    super::extract::check_sources(gateway, &authority).await?;
    let page = reports.config.page_people.min(first.max(100));
    let mut rows = Vec::new();
    loop {
        let ids = job.people(from.as_ref().map(String::as_str), page);
        let Some(last) = ids.last().cloned() else {
            return Ok((rows, None));
        };
        for (person, person_rows) in job.rows(&ids).await? {
            for (i, row) in person_rows.into_iter().enumerate().skip(skip) {
                if rows.len() == first {
                    return Ok((rows, Some(cursor(ctx, &kind, &person, i))));
                }
                rows.push(row);
            }
            skip = 0;
        }
        from = Bound::Excluded(last);
    }
}

/// Every source of these authorities answers (before a stream's first byte).
pub async fn check_sources(gateway: &Estate, authorities: &[String]) -> Result<(), ReportError> {
    for authority in authorities {
        super::extract::check_sources(gateway, authority).await?;
    }
    Ok(())
}

/// The data set as CSV, streamed: a page of people at a time, each page's releases
/// audited before its rows are sent, so memory stays flat whatever the size. A
/// failure after the first byte ends the stream with an error (the client sees a
/// broken transfer, never a silently short file).
pub fn mds_csv(
    gateway: Estate,
    ctx: AccessContext,
    period: Period,
    authorities: Vec<String>,
) -> impl futures::Stream<Item = Result<axum::body::Bytes, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        let send = |text: String| {
            let tx = tx.clone();
            async move { tx.send(Ok(axum::body::Bytes::from(text))).await.is_ok() }
        };
        let mut csv = super::csv::CsvWriter::new();
        csv.row(mds::CSV_COLUMNS);
        if !send(csv.take()).await {
            return;
        }
        let Some(reports) = gateway.reports.clone() else {
            return;
        };
        for authority in &authorities {
            let job = MdsJob::new(&gateway, &reports, &ctx, authority, period);
            let mut from: Bound<String> = Bound::Unbounded;
            loop {
                let ids = job.people(
                    from.as_ref().map(String::as_str),
                    reports.config.page_people,
                );
                let Some(last) = ids.last().cloned() else {
                    break;
                };
                match job.rows(&ids).await {
                    Ok(people) => {
                        for (_, rows) in &people {
                            for row in rows {
                                csv.row(row.csv_cells(period).iter().map(String::as_str));
                            }
                        }
                        let text = csv.take();
                        if !text.is_empty() && !send(text).await {
                            return; // the client went away
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "minimum data set export failed");
                        let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                        return;
                    }
                }
                from = Bound::Excluded(last);
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}
