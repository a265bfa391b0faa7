//! Reports (issue 5): indicators and the minimum data set against the generator's
//! ground truth, date ranges pushed down without changing an answer, and the HTTP
//! surface for reporting tools (purpose, opt-out, suppression, streaming, audit).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use escr_gateway::api::gateway::Gateway;
use escr_gateway::config::LoadedConfig;
use escr_gateway::consent::access::{AccessContext, Purpose};
use escr_gateway::reports::{run, Period};
use serde_json::Value;

use super::consent::{secured, Caller};
use crate::support::demo::{self, Demo};

fn truth_reports(demo: &Demo) -> Vec<Value> {
    let truth: Value =
        serde_json::from_slice(&std::fs::read(demo.dir.join("truth.json")).unwrap()).unwrap();
    let reports = truth["reports"]
        .as_array()
        .expect("truth.json has reports")
        .clone();
    assert!(!reports.is_empty());
    reports
}

/// Gateway ids of the people on the demo's national opt-out list.
fn opted_out(demo: &Demo, gateway: &Gateway) -> HashSet<String> {
    let snapshot = gateway.index.snapshot();
    std::fs::read_to_string(demo.dir.join("national_opt_out.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|nhs| snapshot.by_nhs_number(nhs.trim()).map(str::to_string))
        .collect()
}

fn planner() -> AccessContext {
    AccessContext::for_role("planner", "analyst", Purpose::Planning)
}

/// Every row of the data set, page by page through the cursors.
async fn all_rows(
    gateway: &Gateway,
    ctx: &AccessContext,
    period: Period,
) -> Vec<escr_gateway::reports::mds::MdsRow> {
    let mut rows = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (page, next) = run::mds_page(
            &gateway.estate(),
            ctx,
            period,
            "Northshire",
            97,
            after.as_deref(),
        )
        .await
        .unwrap();
        assert!(page.len() <= 97);
        rows.extend(page);
        match next {
            Some(c) => after = Some(c),
            None => return rows,
        }
    }
}

#[tokio::test]
async fn indicators_and_the_data_set_equal_the_generators_truth() {
    let demo = demo::clean();
    let gw = demo::gateway(demo).await;
    let gateway = &gw.gateway;
    let reports = gateway.reports.as_deref().expect("reports configured");
    let opted = opted_out(demo, gateway);
    assert!(!opted.is_empty());
    for truth in truth_reports(demo) {
        let label = truth["period"].as_str().unwrap();
        let period = Period::parse(label).unwrap();
        for (variant, excluded) in [("all", HashSet::new()), ("without_opt_out", opted.clone())] {
            let t = run::tallies(&gateway.estate(), reports, "Northshire", period, &excluded)
                .await
                .unwrap();
            let want = truth[variant]["indicators"].as_object().unwrap();
            assert_eq!(want.len(), 8);
            for (id, w) in want {
                let got = &t.by_id[id.as_str()];
                let per_population = id.starts_with('6');
                assert_eq!(
                    got.numerator,
                    w["numerator"].as_u64().unwrap(),
                    "{label} {variant} indicator {id} numerator"
                );
                if !per_population {
                    assert_eq!(
                        got.denominator,
                        w["denominator"].as_u64().unwrap(),
                        "{label} {variant} indicator {id} denominator"
                    );
                }
                assert!(
                    got.excluded.is_empty(),
                    "{label} {id}: no faults, no exclusions: {:?}",
                    got.excluded
                );
            }
            // The CIN census re-referrals (CaseTrak says which service each contact is
            // for; the other two are adults' systems).
            let w = &truth[variant]["national"]["CIN-RR"];
            let got = &t.national.by_id["CIN-RR"];
            assert_eq!(
                (got.numerator, got.denominator),
                (
                    w["numerator"].as_u64().unwrap(),
                    w["denominator"].as_u64().unwrap()
                ),
                "{label} {variant} CIN-RR"
            );
            assert!(
                got.excluded.is_empty(),
                "{label} CIN-RR: {:?}",
                got.excluded
            );
            if label == "2025-26" {
                // Real figures, not empty ones.
                for id in ["1", "2", "3", "4", "5"] {
                    assert!(t.by_id[id].denominator > 0, "{id}");
                }
                assert!(got.numerator > 0 && got.numerator < got.denominator);
            }
        }
        // The data set: one row per completed request, assessment, review and open
        // service (the policy here lets everything through and excludes nobody).
        let rows = all_rows(gateway, &planner(), period).await;
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for r in &rows {
            *counts.entry(r.event_type.to_lowercase()).or_default() += 1;
        }
        let want: BTreeMap<String, u64> = truth["all"]["mds_events"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
            .filter(|(_, v)| *v > 0)
            .collect();
        assert_eq!(counts, want, "{label}: data set events by type");
        // No row twice (the cursor neither skips nor repeats).
        let refs: HashSet<&str> = rows.iter().map(|r| r.event_reference.as_str()).collect();
        assert_eq!(refs.len(), rows.len());
    }
}

#[tokio::test]
async fn with_faults_the_difference_is_explained_by_the_exclusions() {
    let demo = demo::dirty();
    let gw = demo::gateway(demo).await;
    let gateway = &gw.gateway;
    let reports = gateway.reports.as_deref().unwrap();
    let mut excluded_anything = false;
    for truth in truth_reports(demo) {
        let label = truth["period"].as_str().unwrap();
        let t = run::tallies(
            &gateway.estate(),
            reports,
            "Northshire",
            Period::parse(label).unwrap(),
            &HashSet::new(),
        )
        .await
        .unwrap();
        for (id, w) in truth["all"]["indicators"].as_object().unwrap() {
            let got = &t.by_id[id.as_str()];
            let excluded: u64 = got.excluded.values().sum();
            excluded_anything |= excluded > 0;
            let diff = |a: u64, b: u64| a.abs_diff(b);
            let n = diff(got.numerator, w["numerator"].as_u64().unwrap());
            assert!(
                n <= excluded,
                "{label} indicator {id}: numerator off by {n}, {excluded} excluded ({:?})",
                got.excluded
            );
            if !id.starts_with('6') {
                let d = diff(got.denominator, w["denominator"].as_u64().unwrap());
                assert!(
                    d <= excluded,
                    "{label} indicator {id}: denominator off by {d}, {excluded} excluded ({:?})",
                    got.excluded
                );
            }
        }
        let w = &truth["all"]["national"]["CIN-RR"];
        let got = &t.national.by_id["CIN-RR"];
        let excluded: u64 = got.excluded.values().sum();
        for (what, g, w) in [
            ("numerator", got.numerator, &w["numerator"]),
            ("denominator", got.denominator, &w["denominator"]),
        ] {
            let off = g.abs_diff(w.as_u64().unwrap());
            assert!(
                off <= excluded,
                "{label} CIN-RR: {what} off by {off}, {excluded} excluded ({:?})",
                got.excluded
            );
        }
    }
    assert!(excluded_anything, "the injected faults show as exclusions");
}

/// The same reports from profiles without `by_person_between` (everything read, then
/// filtered): identical answers, and the statement count is per page, not per record.
#[tokio::test]
async fn date_ranges_pushed_into_the_vendor_sql_change_no_answer() {
    let demo = demo::clean();
    let pushed = demo::gateway(demo).await;
    let work = tempfile::tempdir().unwrap();
    let vendors = work.path().join("vendors");
    std::fs::create_dir_all(&vendors).unwrap();
    for v in ["casetrak", "opencare", "ssis"] {
        let text =
            std::fs::read_to_string(demo::repo().join(format!("config/vendors/{v}.toml"))).unwrap();
        let mut out = String::new();
        let mut skipping = false;
        for line in text.lines() {
            if line.starts_with("by_person_between") {
                skipping =
                    !line.trim_end().ends_with("\"\"\"") || line.matches("\"\"\"").count() < 2;
                continue;
            }
            if skipping {
                skipping = !line.trim_end().ends_with("\"\"\"");
                continue;
            }
            out.push_str(line);
            out.push('\n');
        }
        assert!(!out.contains("{from}"));
        std::fs::write(vendors.join(format!("{v}.toml")), out).unwrap();
    }
    let text = demo::config_text(demo, work.path(), &[]).replace(
        demo::repo().join("config/vendors").to_str().unwrap(),
        vendors.to_str().unwrap(),
    );
    let path = work.path().join("escr.toml");
    std::fs::write(&path, text).unwrap();
    let plain = Gateway::from_config(LoadedConfig::load(&path).unwrap()).unwrap();
    plain.refresh_index(false).await.unwrap();
    let plain = Arc::new(plain);

    let period = Period::parse("2025-26").unwrap();
    let none = HashSet::new();
    let before = pushed.gateway.fetcher.statements_executed();
    let a = run::tallies(
        &pushed.gateway.estate(),
        pushed.gateway.reports.as_deref().unwrap(),
        "Northshire",
        period,
        &none,
    )
    .await
    .unwrap();
    let statements = pushed.gateway.fetcher.statements_executed() - before;
    let b = run::tallies(
        &plain.estate(),
        plain.reports.as_deref().unwrap(),
        "Northshire",
        period,
        &none,
    )
    .await
    .unwrap();
    assert_eq!(a.by_id, b.by_id);
    // A check that each source answers, then one page of 600 people: per source one
    // statement per entity it holds (CaseTrak: person + 4, OpenCare: person + 3,
    // SSIS/90: person + 2).
    assert_eq!(statements, 3 + 12);
    let rows_a = all_rows(&pushed.gateway, &planner(), period).await;
    let rows_b = all_rows(&plain, &planner(), period).await;
    assert_eq!(rows_a.len(), rows_b.len());
    let set = |rows: &[escr_gateway::reports::mds::MdsRow]| -> HashSet<String> {
        rows.iter()
            .map(|r| format!("{r:?}"))
            .filter(|_| true)
            .collect::<HashSet<_>>()
    };
    // Pseudonyms differ by key (each gateway has its own): compare without them.
    let strip = |rows: &[escr_gateway::reports::mds::MdsRow]| -> Vec<String> {
        let mut v: Vec<String> = rows
            .iter()
            .map(|r| {
                format!(
                    "{:?}{:?}{:?}{:?}{}",
                    r.event_start, r.event_end, r.service_component, r.nhs_number, r.event_type
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(strip(&rows_a), strip(&rows_b));
    assert_eq!(set(&rows_a).len(), rows_a.len());
}

/// The indicators map only the fields they read, and count each page on its own task.
/// On the dirty demo (every exclusion kind), for every period: the tallies in one page,
/// in pages of 37 counted concurrently and merged, and a plain sequential fold over
/// records mapped in full must be equal.
#[tokio::test]
async fn counting_a_few_fields_page_by_page_equals_mapping_everything_in_one_pass() {
    use escr_gateway::reports::extract::{Demographics, Extractor};
    use escr_gateway::reports::indicators::Tallies;
    let demo = demo::dirty();
    let one_page = demo::gateway(demo).await;
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("escr.toml");
    std::fs::write(&path, demo::config_text(demo, work.path(), &[])).unwrap();
    demo::write_reports_config(work.path(), 37);
    let paged = Gateway::from_config(LoadedConfig::load(&path).unwrap()).unwrap();
    paged.refresh_index(false).await.unwrap();
    assert_eq!(paged.reports.as_deref().unwrap().config.page_people, 37);

    let none = HashSet::new();
    let mut people_counted = 0;
    for truth in truth_reports(demo) {
        let period = Period::parse(truth["period"].as_str().unwrap()).unwrap();
        let mut both = Vec::new();
        for g in [&one_page.gateway, &paged] {
            let reports = g.reports.as_deref().unwrap();
            both.push(
                run::tallies(&g.estate(), reports, "Northshire", period, &none)
                    .await
                    .unwrap(),
            );
        }

        let estate = one_page.gateway.estate();
        let reports = estate.reports.clone().unwrap();
        let survivorship = &one_page.gateway.index.linkage_config().survivorship;
        let snapshot = one_page.gateway.index.snapshot();
        let ex = Extractor::new(&estate, "Northshire", period, false);
        let mut fold = Tallies::default();
        for page in ex.pages_in_source_order(&snapshot, 1000) {
            for p in ex.page(&page).await.unwrap() {
                people_counted += 1;
                let demo = Demographics::for_indicators(&p.person_records, survivorship);
                fold.add(&p, &demo, period, &reports.calendar);
            }
        }
        assert!(fold.by_id.values().any(|t| t.numerator > 0));
        assert!(fold.by_id.values().any(|t| !t.excluded.is_empty()));
        for (name, t) in ["one page", "pages of 37"].iter().zip(&both) {
            assert_eq!(t.by_id, fold.by_id, "{period:?} {name}");
            assert_eq!(t.national.by_id, fold.national.by_id, "{period:?} {name}");
        }
    }
    assert!(people_counted > 1000);
}

#[tokio::test]
async fn reporting_tools_get_suppressed_indicators_and_a_streamed_data_set_over_http() {
    let demo = demo::clean();
    let s = secured(demo).await;
    let base = demo::serve_http(s.gateway.clone()).await;
    let client = reqwest::Client::new();
    let get = |path: String, caller: Caller| {
        let headers = s.headers(&caller);
        let req = client.get(format!("{base}{path}")).headers(headers);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let analyst = Caller::new("analyst", "planning");

    // Indicators: the analyst's are the truth without opted-out people, suppressed.
    let (status, body) = get(
        "/reports/indicators.json?period=2025-26".into(),
        analyst.clone(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut got: Value = serde_json::from_str(&body).unwrap();
    // Each row says what the opt-out left out (checked in the hostile-caller suite);
    // the figures are compared here.
    for row in got["indicators"].as_array_mut().unwrap() {
        assert!(row["optOut"]["withoutNhsNumber"].is_u64(), "{row}");
        row["optOut"] = Value::Null;
    }
    let reports = s.gateway.reports.as_deref().unwrap();
    let period = Period::parse("2025-26").unwrap();
    let tallies = run::tallies(
        &s.gateway.estate(),
        reports,
        "Northshire",
        period,
        &opted_out(demo, &s.gateway),
    )
    .await
    .unwrap();
    let mut want = run::published(reports, "Northshire", period, &tallies, 5);
    // Beside them the CIN census, which Northshire's systems can give.
    let complete = run::complete_definitions(&s.gateway.estate(), "Northshire");
    assert_eq!(complete, ["cin-census-2024-25"]);
    want.extend(run::published_national(
        reports,
        "Northshire",
        period,
        &tallies,
        5,
        &complete,
    ));
    assert_eq!(got["indicators"], serde_json::to_value(&want).unwrap());
    assert!(want
        .iter()
        .all(|r| r.numerator.is_none_or(|n| n == 0 || n >= 5)));
    let (status, csv) = get(
        "/reports/indicators.csv?period=2025-26".into(),
        analyst.clone(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(csv.lines().count(), 1 + want.len());
    let doc = std::fs::read_to_string(demo::repo().join("docs/report-columns.md")).unwrap();
    assert_eq!(
        csv.lines().next().map(str::to_string),
        Some(escr_gateway::reports::csv::documented_columns(&doc, "indicators.csv").join(","))
    );
    if want.iter().any(|r| r.numerator.is_none()) {
        assert!(csv.contains("[c]"));
    }

    // The data set as CSV: every row of the GraphQL pages, streamed.
    let (status, csv) = get("/reports/mds.csv?period=2025-26".into(), analyst.clone()).await;
    assert_eq!(status, 200, "{csv}");
    let ctx = s.context(&analyst).unwrap();
    let rows = all_rows(&s.gateway, &ctx, period).await;
    assert_eq!(csv.lines().count(), 1 + rows.len());
    // Headers as documented for reporting tools (docs/report-columns.md).
    let doc = std::fs::read_to_string(demo::repo().join("docs/report-columns.md")).unwrap();
    let documented =
        |file: &str| escr_gateway::reports::csv::documented_columns(&doc, file).join(",");
    assert_eq!(csv.lines().next(), Some(documented("mds.csv").as_str()));
    assert!(csv.starts_with("LA_Name,Reporting_Period_Start_Date,"));
    // Opted-out people are not in it.
    let opted: HashSet<String> = opted_out(demo, &s.gateway)
        .iter()
        .map(|id| reports.pseudonym(id))
        .collect();
    assert!(rows.iter().all(|r| !opted.contains(&r.person)));
    // Every released person is in the audit log, with the planning purpose.
    let first = &rows[0];
    let snapshot = s.gateway.index.snapshot();
    let person = snapshot
        .people
        .keys()
        .find(|id| reports.pseudonym(id) == first.person)
        .unwrap();
    let trail = s
        .gateway
        .access
        .as_ref()
        .unwrap()
        .audit
        .for_person(person)
        .await
        .unwrap();
    assert!(trail.iter().any(|e| e.purpose == "planning"
        && e.decision == "released"
        && e.reason.as_deref() == Some("minimum data set")));
    // The indicators' release too: one event, no person in it.
    let access = s.gateway.access.as_ref().unwrap();
    let indicator_events =
        escr_gateway::consent::audit::events_in(&access.engine.config.storage.audit)
            .unwrap()
            .into_iter()
            .filter(|e| {
                e.kinds == "indicators"
                    && e.purpose == "planning"
                    && e.person_id.is_none()
                    && e.decision == "released"
            })
            .count();
    assert!(indicator_events >= 2, "{indicator_events}");

    // Research: no NHS numbers or birth dates (the purpose uses no demographics).
    let researcher = Caller::new("researcher", "research");
    let (status, csv) = get("/reports/mds.csv?period=2025-26".into(), researcher).await;
    assert_eq!(status, 200);
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (nhs, birth) = (column("NHS_Number"), column("Date_of_Birth"));
    assert!(csv.lines().skip(1).all(|l| {
        let cells: Vec<&str> = l.split(',').collect();
        cells[nhs].is_empty() && cells[birth].is_empty()
    }));
    assert!(!csv.contains(demo.truth.people[0].nhs_number.as_deref().unwrap()));

    // Direct care may not use reports; bad periods and authorities are named.
    let (status, body) = get(
        "/reports/mds.csv?period=2025-26".into(),
        Caller::new("social_worker", "direct_care"),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("PURPOSE_NOT_PERMITTED"));
    let (status, body) = get(
        "/reports/indicators.json?period=2025-27".into(),
        analyst.clone(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("financial year"), "{body}");
    let (status, body) = get(
        "/reports/indicators.json?period=2025-26&authorities=Atlantis".into(),
        analyst,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body.contains("Atlantis") && body.contains("Northshire"),
        "{body}"
    );
}

/// A second council's own sources beside the first's: each authority's indicators
/// come from its own sources only (Southborough's equal its own truth, Northshire's are
/// unchanged by its neighbour); and across gateways, each council's gateway answers the
/// `Authority` entity for its own council only, with aggregates and nothing personal.
#[tokio::test]
async fn councils_side_by_side_and_across_gateways() {
    let north = demo::clean();
    let south_dir = tempfile::tempdir().unwrap();
    escr_gateway::demo::generate(
        &escr_gateway::demo::GenerateOptions {
            seed: demo::SEED,
            people: 400,
            faults: escr_gateway::demo::FaultRates::none(),
            council: "Southborough".into(),
            ..Default::default()
        },
        south_dir.path(),
    )
    .unwrap();
    let south = Demo {
        dir: south_dir.path().to_path_buf(),
        truth: serde_json::from_slice(&std::fs::read(south_dir.path().join("truth.json")).unwrap())
            .unwrap(),
    };
    let vendors = demo::repo().join("config/vendors");
    let build = |with_north: bool, with_south: bool| {
        let work = tempfile::tempdir().unwrap();
        let mut text = demo::config_text(north, work.path(), &[]);
        if !with_north {
            text = text[..text.find("[[sources]]").unwrap()].to_string();
        }
        if with_south {
            for v in ["casetrak", "opencare", "ssis"] {
                text.push_str(&format!(
                    "\n[[sources]]\nname = \"sb-{v}\"\nauthority = \"Southborough\"\nprofile = {:?}\nsqlite = {{ path = {:?} }}\n",
                    vendors.join(format!("{v}.toml")),
                    south.dir.join(format!("{v}.db"))
                ));
            }
        }
        let reports = std::fs::read_to_string(work.path().join("reports.toml")).unwrap();
        std::fs::write(
            work.path().join("reports.toml"),
            format!("{reports}\n[authorities.Southborough]\npopulation_18_64 = 97000\npopulation_65_plus = 41000\n"),
        )
        .unwrap();
        let path = work.path().join("escr.toml");
        std::fs::write(&path, text).unwrap();
        (work, path)
    };
    let open = |path: &std::path::Path| {
        let path = path.to_path_buf();
        async move {
            let g = Gateway::from_config(LoadedConfig::load(&path).unwrap()).unwrap();
            g.refresh_index(false).await.unwrap();
            Arc::new(g)
        }
    };
    let (_w1, both_path) = build(true, true);
    let both = open(&both_path).await;
    let alone = demo::gateway(north).await;
    let period = Period::parse("2025-26").unwrap();
    let none = HashSet::new();
    let reports = both.reports.as_deref().unwrap();
    let north_both = run::tallies(&both.estate(), reports, "Northshire", period, &none)
        .await
        .unwrap();
    let north_alone = run::tallies(
        &alone.gateway.estate(),
        alone.gateway.reports.as_deref().unwrap(),
        "Northshire",
        period,
        &none,
    )
    .await
    .unwrap();
    assert_eq!(north_both.by_id, north_alone.by_id);
    let south_tallies = run::tallies(&both.estate(), reports, "Southborough", period, &none)
        .await
        .unwrap();
    let truth = truth_reports(&south)
        .into_iter()
        .find(|t| t["period"] == "2025-26")
        .unwrap();
    for (id, w) in truth["all"]["indicators"].as_object().unwrap() {
        assert_eq!(
            south_tallies.by_id[id.as_str()].numerator,
            w["numerator"].as_u64().unwrap(),
            "Southborough {id}"
        );
    }
    let w = &truth["all"]["national"]["CIN-RR"];
    assert_eq!(
        south_tallies.national.by_id["CIN-RR"].numerator,
        w["numerator"].as_u64().unwrap(),
        "Southborough CIN-RR"
    );
    assert_ne!(south_tallies.by_id, north_both.by_id);
    let side_by_side = run::indicators(&both.estate(), &planner(), period, None)
        .await
        .unwrap();
    // The eight local measures and the CIN census re-referrals, for each.
    for authority in ["Northshire", "Southborough"] {
        let ids: Vec<&str> = side_by_side
            .iter()
            .filter(|r| r.authority == authority)
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(
            ids,
            ["1", "2", "3", "4", "5", "5b", "6a", "6b", "CIN-RR"],
            "{authority}"
        );
    }

    // Across gateways: what a supergraph router asks each council's subgraph.
    let (_w2, south_path) = build(false, true);
    let south_only = open(&south_path).await;
    let query = r#"{ _entities(representations: [{__typename: "Authority", name: "Northshire"}, {__typename: "Authority", name: "Southborough"}]) { ... on Authority { name indicators(period: "2025-26") { id numerator denominator value } } } }"#;
    let ask = |g: Arc<Gateway>| async move {
        let schema = escr_gateway::api::graphql::build(Some(g.clone()));
        let request = async_graphql::Request::new(query);
        let response = escr_gateway::api::server::execute(&g, &schema, planner(), request).await;
        serde_json::to_value(response).unwrap()
    };
    let from_north = ask(alone.gateway.clone()).await;
    let from_south = ask(south_only.clone()).await;
    assert!(from_north["errors"].is_null(), "{from_north}");
    assert_eq!(from_north["data"]["_entities"][0]["name"], "Northshire");
    assert!(from_north["data"]["_entities"][1].is_null());
    assert!(from_south["data"]["_entities"][0].is_null());
    assert_eq!(from_south["data"]["_entities"][1]["name"], "Southborough");
    assert_eq!(
        from_south["data"]["_entities"][1]["indicators"]
            .as_array()
            .unwrap()
            .len(),
        9
    );
    for text in [from_north.to_string(), from_south.to_string()] {
        // Aggregates only: no person id, no NHS number.
        assert!(!text.contains("\"P"), "{text}");
        assert!(
            !text
                .chars()
                .collect::<Vec<_>>()
                .windows(10)
                .any(|w| w.iter().all(|c| c.is_ascii_digit())),
            "{text}"
        );
    }

    // Compared across gateways: Northshire's gateway, with Southborough's as a peer,
    // puts both side by side; Southborough's figures are what its own gateway publishes.
    let south_url = demo::serve_http(south_only.clone()).await;
    let peer_work = tempfile::tempdir().unwrap();
    let text = demo::config_text(north, peer_work.path(), &[]);
    let reports_toml = peer_work.path().join("reports.toml");
    let mut reports_text = std::fs::read_to_string(&reports_toml).unwrap();
    reports_text.push_str(&format!(
        "\n[peers.Southborough]\nurl = \"{south_url}/graphql\"\n"
    ));
    std::fs::write(&reports_toml, reports_text).unwrap();
    let peer_path = peer_work.path().join("escr.toml");
    std::fs::write(&peer_path, text).unwrap();
    let north_with_peer = open(&peer_path).await;
    let compared = run::indicators(
        &north_with_peer.estate(),
        &planner(),
        period,
        Some(&["Northshire".to_string(), "Southborough".to_string()]),
    )
    .await
    .unwrap();
    let south_own = run::indicators(&south_only.estate(), &planner(), period, None)
        .await
        .unwrap();
    assert_eq!(compared.len(), 18);
    assert_eq!(compared[9..], south_own[..]);
    assert_eq!(
        compared[..9],
        run::indicators(&alone.gateway.estate(), &planner(), period, None)
            .await
            .unwrap()[..]
    );
    // A peer that does not answer is named, never left out.
    let down_work = tempfile::tempdir().unwrap();
    let text = demo::config_text(north, down_work.path(), &[]);
    let reports_toml = down_work.path().join("reports.toml");
    let mut reports_text = std::fs::read_to_string(&reports_toml).unwrap();
    reports_text.push_str("\n[peers.Southborough]\nurl = \"http://127.0.0.1:9/graphql\"\n");
    std::fs::write(&reports_toml, reports_text).unwrap();
    std::fs::write(down_work.path().join("escr.toml"), text).unwrap();
    let north_peer_down = open(&down_work.path().join("escr.toml")).await;
    let err = run::indicators(&north_peer_down.estate(), &planner(), period, None).await;
    assert!(
        err.is_ok(),
        "without naming it, only this gateway's own authorities"
    );
    let err = run::indicators(
        &north_peer_down.estate(),
        &planner(),
        period,
        Some(&["Southborough".to_string()]),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), "PEER_UNAVAILABLE");
    assert!(err.to_string().contains("Southborough"), "{err}");
    // The data set is person level: it never crosses to a peer.
    let refused = run::mds_page(
        &north_with_peer.estate(),
        &planner(),
        period,
        "Southborough",
        10,
        None,
    )
    .await;
    assert!(matches!(
        refused,
        Err(escr_gateway::reports::ReportError::UnknownAuthority(..))
    ));
}

/// A source that is down makes a report fail with its name, never a short answer (its
/// people may be missing from the index too): a status and a code before any data.
#[tokio::test]
async fn a_failing_source_fails_the_report_and_names_itself() {
    let demo = demo::clean();
    let missing = demo.dir.join("absent.db");
    let gw = demo::gateway_with(demo, &[("opencare", missing.to_str().unwrap())], None).await;
    let base = demo::serve_http(gw.gateway.clone()).await;
    let client = reqwest::Client::new();
    let get = |path: &str| {
        client
            .get(format!("{base}{path}"))
            .header("X-Purpose-Of-Use", "planning")
            .send()
    };
    let r = get("/reports/indicators.json?period=2025-26")
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 502);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "SOURCE_UNAVAILABLE"
    );
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("opencare"),
        "{body}"
    );
    let r = get("/reports/mds.csv?period=2025-26").await.unwrap();
    assert_eq!(r.status().as_u16(), 502);
    assert!(r.text().await.unwrap().contains("opencare"));
}

/// The truth report of `label` in a demo's truth file: (numerator, denominator) of `id`.
fn truth_ratio(demo: &Demo, label: &str, id: &str) -> (u64, u64) {
    let report = truth_reports(demo)
        .into_iter()
        .find(|r| r["period"] == label)
        .unwrap();
    let r = &report["all"]["indicators"][id];
    (
        r["numerator"].as_u64().unwrap(),
        r["denominator"].as_u64().unwrap(),
    )
}

async fn tallies_of(
    gw: &crate::support::demo::TestGateway,
    label: &str,
) -> escr_gateway::reports::indicators::Tallies {
    run::tallies(
        &gw.gateway.estate(),
        gw.gateway.reports.as_deref().unwrap(),
        "Northshire",
        Period::parse(label).unwrap(),
        &HashSet::new(),
    )
    .await
    .unwrap()
}

/// Invalid rows shaped unlike the generator's, written into a copy of the clean
/// CaseTrak database: each is left out of what it would decide, and said so, in the
/// period it decides; through the profile's date-range SQL (`by_person_between`).
#[tokio::test]
async fn rows_that_cannot_be_placed_are_counted_where_they_decide() {
    let demo = demo::clean();
    let work = tempfile::tempdir().unwrap();
    let db = work.path().join("casetrak.db");
    std::fs::copy(demo.dir.join("casetrak.db"), &db).unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    let one = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    // People only CaseTrak knows: changing their rows changes no linkage.
    let casetrak_only: HashSet<String> = demo
        .truth
        .people
        .iter()
        .filter(|p| p.records.iter().all(|r| r.source == "casetrak") && p.records.len() == 1)
        .map(|p| p.records[0].local_id.clone())
        .collect();
    let only = |sql: &str| -> i64 {
        let mut stmt = conn.prepare(sql).unwrap();
        let ids: Vec<i64> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        *ids.iter()
            .find(|id| casetrak_only.contains(&id.to_string()))
            .expect("a CaseTrak-only client")
    };
    // 1. A child's assessment authorised in 2025-26 but "started" after it.
    let asmt = one(
        "SELECT ASMT_ID FROM ASMT WHERE ASMT_TYP = 'CFA' AND AUTH_DT >= '2025-04-01' AND AUTH_DT < '2026-04-01' ORDER BY ASMT_ID LIMIT 1",
    );
    conn.execute(
        "UPDATE ASMT SET ST_DT = '2026-05-04 00:00:00.000' WHERE ASMT_ID = ?1",
        [asmt],
    )
    .unwrap();
    // 2. A plan ending in 2025-26 that "starts" after it.
    let plan = one(
        "SELECT EPSD_ID FROM EPSD WHERE EPSD_TYP = 'CPP' AND END_DT >= '2025-04-01' AND END_DT < '2026-04-01' ORDER BY EPSD_ID LIMIT 1",
    );
    conn.execute(
        "UPDATE EPSD SET ST_DT = '2026-06-01 00:00:00.000' WHERE EPSD_ID = ?1",
        [plan],
    )
    .unwrap();
    // 3. Before a first admission in 2025-26, a residential package ending before it
    // starts (the shape of CaseTrak package 618), in 2023-24.
    let admitted = only(
        "SELECT s.CLNT_ID FROM SVC_PKG s JOIN CLNT p ON p.CLNT_ID = s.CLNT_ID WHERE s.SVC_CD IN ('RES', 'NUR') AND p.DOB < '1990-01-01' GROUP BY s.CLNT_ID HAVING MIN(s.ST_DT) >= '2025-04-01' AND MIN(s.ST_DT) < '2026-04-01' ORDER BY s.CLNT_ID",
    );
    conn.execute(
        "INSERT INTO SVC_PKG (PKG_ID, CLNT_ID, SVC_CD, DLV_MECH, PRVDR, UNIT_CST, UNITS_WK, ST_DT, END_DT)
         VALUES ((SELECT MAX(PKG_ID) + 1 FROM SVC_PKG), ?1, 'RES', 'CCS', 'Council', 700, 1, '2023-06-06 00:00:00.000', '2023-04-15 00:00:00.000')",
        [admitted],
    )
    .unwrap();
    // 4. Two children referred in 2025-26 now born on 1 January eighteen years before:
    // adults that day. Only the one the vendor flags as estimated is uncertain.
    let referred = |not: i64| {
        only(&format!(
            "SELECT c.CLNT_ID FROM CNTCT c JOIN CLNT p ON p.CLNT_ID = c.CLNT_ID WHERE c.RCVD_DTTM >= '2026-01-01' AND c.RCVD_DTTM < '2026-04-01' AND p.DOB > '2009-01-01' AND c.CLNT_ID <> {not} GROUP BY c.CLNT_ID HAVING MIN(c.RCVD_DTTM) >= '2025-04-01' ORDER BY c.CLNT_ID"
        ))
    };
    let plain = referred(0);
    let flagged = referred(plain);
    // Referrals of the flagged child on or after 1 January 2026: 18 if born on 1
    // January 2008, 17 if born later that year.
    let uncertain = one(&format!(
        "SELECT COUNT(*) FROM CNTCT WHERE CLNT_ID = {flagged} AND RCVD_DTTM >= '2026-01-01' AND RCVD_DTTM < '2026-04-01'"
    ));
    for (client, flag) in [(plain, "N"), (flagged, "Y")] {
        conn.execute(
            "UPDATE CLNT SET DOB = '2008-01-01 00:00:00.000', DOB_EST = ?2 WHERE CLNT_ID = ?1",
            rusqlite::params![client, flag],
        )
        .unwrap();
    }
    drop(conn);

    let gw = demo::gateway_with(demo, &[("casetrak", db.to_str().unwrap())], None).await;
    let t = tallies_of(&gw, "2025-26").await;
    let get = |id: &str| &t.by_id[id];
    assert_eq!(
        get("2").denominator + 1,
        truth_ratio(demo, "2025-26", "2").1
    );
    assert_eq!(
        get("2").excluded,
        BTreeMap::from([("assessment authorised before it started", 1)])
    );
    assert_eq!(
        get("3").denominator + 1,
        truth_ratio(demo, "2025-26", "3").1
    );
    assert_eq!(
        get("3").excluded,
        BTreeMap::from([("plan ends before it starts", 1)])
    );
    // The real first admission still counts; the invalid one is said to matter.
    let admissions = |t: &escr_gateway::reports::indicators::Tallies, reason: &str| {
        let n = t.by_id["6a"].numerator + t.by_id["6b"].numerator;
        let excluded: u64 = ["6a", "6b"]
            .iter()
            .filter_map(|id| t.by_id[*id].excluded.get(reason))
            .sum();
        (n, excluded)
    };
    let truth6 = |label: &str| truth_ratio(demo, label, "6a").0 + truth_ratio(demo, label, "6b").0;
    assert_eq!(
        admissions(&t, "service ends before it starts"),
        (truth6("2025-26"), 1)
    );
    let earlier = tallies_of(&gw, "2023-24").await;
    assert_eq!(
        admissions(&earlier, "service ends before it starts"),
        (truth6("2023-24"), 1)
    );
    let between = tallies_of(&gw, "2024-25").await;
    assert_eq!(
        admissions(&between, "service ends before it starts"),
        (truth6("2024-25"), 0)
    );
    // The unflagged 1 January birth date is taken as given; the flagged one is not.
    assert_eq!(
        get("1").excluded,
        BTreeMap::from([("birth date estimated: age band uncertain", uncertain as u64)])
    );
}

/// The generator's own faults at high rates (services ending before they start or
/// starting after a death): against its truth, every difference in indicator 6 is
/// explained by exclusions named for them.
#[tokio::test]
async fn admissions_with_invalid_services_are_explained_against_the_truth() {
    let demo = demo::with_faults(
        "invalid-services",
        1200,
        escr_gateway::demo::FaultRates {
            end_before_start: 0.3,
            service_after_death: 0.6,
            ..escr_gateway::demo::FaultRates::none()
        },
    );
    let gw = demo::gateway(&demo).await;
    let mut named = BTreeMap::<&str, u64>::new();
    for truth in truth_reports(&demo) {
        let label = truth["period"].as_str().unwrap();
        let t = tallies_of(&gw, label).await;
        for id in ["6a", "6b"] {
            let got = &t.by_id[id];
            let want = truth["all"]["indicators"][id]["numerator"]
                .as_u64()
                .unwrap();
            let excluded: u64 = got.excluded.values().sum();
            assert!(
                got.numerator.abs_diff(want) <= excluded,
                "{label} {id}: {} against {want}, {:?}",
                got.numerator,
                got.excluded
            );
            for (reason, n) in &got.excluded {
                *named.entry(reason).or_default() += n;
            }
        }
    }
    for reason in [
        "service ends before it starts",
        "service starts after the person's death",
    ] {
        assert!(named.get(reason).is_some_and(|n| *n > 0), "{named:?}");
    }
    let _ = std::fs::remove_dir_all(&demo.dir);
}

/// A council whose system records what ASCOF from Client Level Data needs (a source
/// shaped unlike the demo vendors: one table of people, one of services with support
/// category, funding and delivery): its national measures are published beside the
/// local ones, named for their definition; a council whose systems lack the fields
/// gets none.
#[tokio::test]
async fn national_measures_are_published_where_the_systems_hold_their_fields() {
    let north = demo::clean();
    let work = tempfile::tempdir().unwrap();
    let db = work.path().join("westshire.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE TABLE people (id TEXT PRIMARY KEY, dob TEXT, dod TEXT);
         CREATE TABLE svc (id INTEGER PRIMARY KEY, pid TEXT, cat TEXT, fund TEXT, mech TEXT, s TEXT, e TEXT);",
    )
    .unwrap();
    let people = [
        ("W1", "1970-05-01"),
        ("W2", "1950-01-01"),
        ("W3", "1945-03-03"),
        ("W4", "1940-02-02"),
        ("W5", "1960-06-06"),
        ("W6", "1961-07-07"),
        ("W7", "1962-08-08"),
        ("W8", "1944-09-09"),
        ("W9", "1963-10-10"),
        ("W10", "1964-11-11"),
    ];
    for (id, dob) in people {
        conn.execute("INSERT INTO people VALUES (?1, ?2, NULL)", [id, dob])
            .unwrap();
    }
    // (person, category, funding, delivery ("": none), start, end ("": open)).
    let services = [
        // An admission aged 18-64 (2B).
        ("W1", "LTR", "LA", "", "2025-06-01", ""),
        // A move from residential to nursing care: not an admission.
        ("W2", "LTR", "LA", "", "2023-01-01", "2025-07-31"),
        ("W2", "LTN", "LA", "", "2025-08-01", ""),
        // Self-funded: not counted.
        ("W3", "LTN", "SF", "", "2025-05-01", ""),
        // Jointly funded, 65 and over (2C).
        ("W4", "LTN", "JT", "", "2025-09-09", ""),
        // Community support over the year: direct payment (ended in June), managed
        // budget, council-commissioned, part direct payment, unknown delivery.
        ("W5", "LTC", "LA", "DP", "2024-01-01", "2025-06-30"),
        ("W6", "LTC", "LA", "MPB", "2025-01-01", ""),
        ("W7", "LTC", "LA", "CCS", "2025-01-01", ""),
        ("W9", "LTC", "LA", "PDP", "2025-01-01", ""),
        ("W10", "LTC", "LA", "", "2025-01-01", ""),
        // Community support, then a care home in the year: that setting (2C).
        ("W8", "LTC", "LA", "DP", "2025-01-01", "2025-09-01"),
        ("W8", "LTR", "LA", "", "2025-09-02", ""),
    ];
    let opt = |v: &'static str| (!v.is_empty()).then_some(v);
    for (pid, cat, fund, mech, s, e) in services {
        conn.execute(
            "INSERT INTO svc (pid, cat, fund, mech, s, e) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![pid, cat, fund, opt(mech), s, opt(e)],
        )
        .unwrap();
    }
    drop(conn);
    let profile = work.path().join("westcare.toml");
    std::fs::write(
        &profile,
        r#"[vendor]
name = "westcare"
[codes.cat]
system = "support_category"
map = { LTR = "LONG_TERM_RESIDENTIAL", LTN = "LONG_TERM_NURSING", LTC = "LONG_TERM_COMMUNITY" }
[codes.fund]
system = "funding"
map = { LA = "LOCAL_AUTHORITY", JT = "JOINT_CLIENT_AND_LOCAL_AUTHORITY", SF = "CLIENT" }
[codes.mech]
system = "delivery_mechanism"
map = { DP = "DIRECT_PAYMENT", PDP = "PART_DIRECT_PAYMENT", MPB = "MANAGED_PERSONAL_BUDGET", CCS = "COUNCIL_COMMISSIONED" }
[entities.person]
by_key = "SELECT id, dob, dod FROM people WHERE id IN ({keys})"
list = "SELECT id, dob, dod FROM people"
fields.local_id = { column = "id" }
fields.birth_date = { column = "dob" }
fields.death_date = { column = "dod" }
[entities.service]
by_key = "SELECT id, pid, cat, fund, mech, s, e FROM svc WHERE id IN ({keys})"
by_person = "SELECT id, pid, cat, fund, mech, s, e FROM svc WHERE pid IN ({keys})"
fields.local_id = { column = "id" }
fields.person_id = { column = "pid" }
fields.support_category = { column = "cat", codes = "cat" }
fields.funding = { column = "fund", codes = "fund" }
fields.delivery_mechanism = { column = "mech", codes = "mech" }
fields.start = { column = "s" }
fields.end = { column = "e" }
"#,
    )
    .unwrap();
    let mut text = demo::config_text(north, work.path(), &[]);
    text.push_str(&format!(
        "\n[[sources]]\nname = \"westcare\"\nauthority = \"Westshire\"\nprofile = {profile:?}\nsqlite = {{ path = {db:?} }}\n"
    ));
    let reports_toml = work.path().join("reports.toml");
    let reports_text = std::fs::read_to_string(&reports_toml).unwrap();
    std::fs::write(
        &reports_toml,
        format!("{reports_text}\n[authorities.Westshire]\npopulation_18_64 = 50000\npopulation_65_plus = 20000\n"),
    )
    .unwrap();
    let path = work.path().join("escr.toml");
    std::fs::write(&path, text).unwrap();
    let gateway = Gateway::from_config(LoadedConfig::load(&path).unwrap()).unwrap();
    gateway.refresh_index(false).await.unwrap();
    let estate = gateway.estate();
    let reports = gateway.reports.as_deref().unwrap();
    let period = Period::parse("2025-26").unwrap();

    assert_eq!(
        run::complete_definitions(&estate, "Westshire"),
        ["ascof-cld-2024-25"]
    );
    assert_eq!(
        run::complete_definitions(&estate, "Northshire"),
        ["cin-census-2024-25"]
    );
    let t = run::tallies(&estate, reports, "Westshire", period, &HashSet::new())
        .await
        .unwrap();
    let rows = run::published_national(
        reports,
        "Westshire",
        period,
        &t,
        0,
        &run::complete_definitions(&estate, "Westshire"),
    );
    let got: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{} {} {:?} {:?} {:?}",
                r.id, r.definition, r.numerator, r.denominator, r.value
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            "2B ascof-cld-2024-25 Some(1) Some(50000) Some(2.0)",
            "2C ascof-cld-2024-25 Some(2) Some(20000) Some(10.0)",
            "3D1 ascof-cld-2024-25 Some(3) Some(4) Some(75.0)",
            "3D2 ascof-cld-2024-25 Some(2) Some(4) Some(50.0)",
        ]
    );
    assert_eq!(
        rows[2]
            .exclusions
            .iter()
            .map(|e| e.reason.as_str())
            .collect::<Vec<_>>(),
        ["delivery mechanism not recorded or not mappable"]
    );
    // Published to callers, suppressed, beside the local measures; Northshire's
    // systems lack ASCOF's fields, so it has only the CIN census.
    let published = run::indicators(&estate, &planner(), period, None)
        .await
        .unwrap();
    let of = |authority: &str, definition: &str| {
        published
            .iter()
            .filter(|r| r.authority == authority && r.definition == definition)
            .count()
    };
    assert_eq!(of("Westshire", "ascof-cld-2024-25"), 4);
    assert_eq!(of("Westshire", "escr-local-v1"), 8);
    assert_eq!(of("Northshire", "ascof-cld-2024-25"), 0);
    assert_eq!(of("Northshire", "cin-census-2024-25"), 1);
    assert_eq!(of("Northshire", "escr-local-v1"), 8);
}

/// ASCOF from Client Level Data over the demo: the demo's vendors record no support
/// category or funding, so this council's profiles say what it knows of its systems
/// (in the modelled world every care home placement is permanent and council-funded;
/// home and day care are community long-term support, reablement is short term). Its
/// figures then equal the truth computed from the modelled events.
#[tokio::test]
async fn ascof_measures_over_the_demo_equal_the_generators_truth() {
    let demo = demo::clean();
    let work = tempfile::tempdir().unwrap();
    let vendors = demo::repo().join("config/vendors");
    let mut text = demo::config_text(demo, work.path(), &[]);
    // (profile, SQL table, its type line, its service-type codes to support categories).
    let overlays = [
        (
            "casetrak",
            "FROM SVC_PKG",
            r#"fields.type = { column = "SVC_CD", codes = "svc" }"#,
            "SVC_CD",
            r#"{ RES = "LONG_TERM_RESIDENTIAL", NUR = "LONG_TERM_NURSING", HCA = "LONG_TERM_COMMUNITY", DAY = "LONG_TERM_COMMUNITY", REA = "SHORT_TERM_TO_MAXIMISE_INDEPENDENCE", EQP = "OTHER" }"#,
        ),
        (
            "opencare",
            "FROM service_agreements",
            r#"fields.type = { column = "service_type", codes = "service" }"#,
            "service_type",
            r#"{ residential = "LONG_TERM_RESIDENTIAL", nursing = "LONG_TERM_NURSING", home_care = "LONG_TERM_COMMUNITY", day_care = "LONG_TERM_COMMUNITY", reablement = "SHORT_TERM_TO_MAXIMISE_INDEPENDENCE", equipment = "OTHER" }"#,
        ),
        (
            "ssis",
            "FROM CAREPKG",
            r#"fields.type = { column = "SVCCODE", codes = "svc" }"#,
            "SVCCODE",
            r#"{ RC = "LONG_TERM_RESIDENTIAL", NC = "LONG_TERM_NURSING", HC = "LONG_TERM_COMMUNITY", DC = "LONG_TERM_COMMUNITY" }"#,
        ),
    ];
    for (vendor, from, type_line, column, categories) in overlays {
        let shipped = vendors.join(format!("{vendor}.toml"));
        let profile = std::fs::read_to_string(&shipped).unwrap();
        assert!(
            profile.contains(type_line) && profile.contains(from),
            "{vendor}"
        );
        let profile = format!(
            "[codes.ltsc]\nsystem = \"support_category\"\nmap = {categories}\n\n[codes.fund]\nsystem = \"funding\"\nmap = {{ LA = \"LOCAL_AUTHORITY\" }}\n\n{}",
            profile
                .replace(from, &format!(", 'LA' AS FUNDING {from}"))
                .replace(
                    type_line,
                    &format!("{type_line}\nfields.support_category = {{ column = \"{column}\", codes = \"ltsc\" }}\nfields.funding = {{ column = \"FUNDING\", codes = \"fund\" }}"),
                )
        );
        let own = work.path().join(format!("{vendor}.toml"));
        std::fs::write(&own, profile).unwrap();
        text = text.replace(&format!("{shipped:?}"), &format!("{own:?}"));
    }
    let path = work.path().join("escr.toml");
    std::fs::write(&path, text).unwrap();
    let gateway = Gateway::from_config(LoadedConfig::load(&path).unwrap()).unwrap();
    gateway.refresh_index(false).await.unwrap();
    let estate = gateway.estate();
    let reports = gateway.reports.as_deref().unwrap();
    // Still not published: OpenCare and SSIS/90 record no deaths (which a service
    // starting after one needs); the tallies are computed all the same.
    assert_eq!(
        run::complete_definitions(&estate, "Northshire"),
        ["cin-census-2024-25"]
    );
    for truth in truth_reports(demo) {
        let label = truth["period"].as_str().unwrap();
        let t = run::tallies(
            &estate,
            reports,
            "Northshire",
            Period::parse(label).unwrap(),
            &HashSet::new(),
        )
        .await
        .unwrap();
        for (id, w) in truth["all"]["national"].as_object().unwrap() {
            let got = &t.national.by_id[id.as_str()];
            let want = (
                w["numerator"].as_u64().unwrap(),
                w["denominator"].as_u64().unwrap(),
            );
            // 2B and 2C are per 100,000 of the population: numerators only.
            let got_pair = (
                got.numerator,
                if id.starts_with('2') {
                    0
                } else {
                    got.denominator
                },
            );
            assert_eq!(got_pair, want, "{label} {id}");
            assert!(got.excluded.is_empty(), "{label} {id}: {:?}", got.excluded);
            assert!(want.0 > 0, "{label} {id}: a real figure");
        }
    }
}
