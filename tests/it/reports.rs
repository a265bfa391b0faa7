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
            if label == "2025-26" {
                // Real figures, not empty ones.
                for id in ["1", "2", "3", "4", "5"] {
                    assert!(t.by_id[id].denominator > 0, "{id}");
                }
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
    let want = run::published(reports, "Northshire", period, &tallies, 5);
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
    if want.iter().any(|r| r.numerator.is_none()) {
        assert!(csv.contains("[c]"));
    }

    // The data set as CSV: every row of the GraphQL pages, streamed.
    let (status, csv) = get("/reports/mds.csv?period=2025-26".into(), analyst.clone()).await;
    assert_eq!(status, 200, "{csv}");
    let ctx = s.context(&analyst).unwrap();
    let rows = all_rows(&s.gateway, &ctx, period).await;
    assert_eq!(csv.lines().count(), 1 + rows.len());
    assert!(csv.starts_with("authority,person,nhs_number"));
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
        .unwrap();
    assert!(trail.iter().any(|e| e.purpose == "planning"
        && e.decision == "released"
        && e.reason.as_deref() == Some("minimum data set")));
    // The indicators' release too: one event, no person in it.
    let access = s.gateway.access.as_ref().unwrap();
    let log = rusqlite::Connection::open(&access.engine.config.storage.audit).unwrap();
    let indicator_events: i64 = log
        .query_row(
            "SELECT COUNT(*) FROM audit WHERE kinds = 'indicators' AND purpose = 'planning' AND person_id IS NULL AND decision = 'released'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(indicator_events >= 2, "{indicator_events}");

    // Research: no NHS numbers or birth dates (the purpose uses no demographics).
    let researcher = Caller::new("researcher", "research");
    let (status, csv) = get("/reports/mds.csv?period=2025-26".into(), researcher).await;
    assert_eq!(status, 200);
    assert!(csv
        .lines()
        .skip(1)
        .all(|l| l.split(',').nth(2) == Some("") && l.split(',').nth(3) == Some("")));
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
    assert_ne!(south_tallies.by_id, north_both.by_id);
    let side_by_side = run::indicators(&both.estate(), &planner(), period, None)
        .await
        .unwrap();
    let authorities: Vec<&str> = side_by_side.iter().map(|r| r.authority.as_str()).collect();
    assert_eq!(
        authorities.iter().filter(|a| **a == "Northshire").count(),
        8
    );
    assert_eq!(
        authorities.iter().filter(|a| **a == "Southborough").count(),
        8
    );

    // Across gateways: what a supergraph router asks each council's subgraph.
    let (_w2, south_path) = build(false, true);
    let south_only = open(&south_path).await;
    let query = r#"{ _entities(representations: [{__typename: "Authority", name: "Northshire"}, {__typename: "Authority", name: "Southborough"}]) { ... on Authority { name indicators(period: "2025-26") { id numerator denominator value } } } }"#;
    let ask = |g: Arc<Gateway>| async move {
        let schema = escr_gateway::api::graphql::build(Some(g.clone()));
        let request = async_graphql::Request::new(query)
            .data(g.request_loaders())
            .data(planner());
        serde_json::to_value(schema.execute(request).await).unwrap()
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
        8
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
    assert_eq!(compared.len(), 16);
    assert_eq!(compared[8..], south_own[..]);
    assert_eq!(
        compared[..8],
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
