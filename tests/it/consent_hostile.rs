//! The hostile-caller suite: every case of `tests/consent/hostile.toml`, each attack as
//! the independent review made it (issue 12), against real gateways over the demo data
//! (a copy with planted records where a case needs a shape the generator does not
//! make) and a vendor of its own (`tests/consent/privacy_flags.toml`). Each check says
//! in a comment how the code before the fix failed it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use escr_gateway::consent::access::{AccessContext, Purpose};
use escr_gateway::reports::{run, Period};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    choose, errors_at, opt_out_list, person_ids, secured, secured_config, serve, Caller, Chosen,
    Secured,
};
use crate::support::demo::{self, Demo};

#[derive(Deserialize)]
struct Suite {
    case: Vec<HostileCase>,
}

#[derive(Deserialize)]
struct HostileCase {
    item: u32,
    name: String,
    attack: String,
    #[serde(flatten)]
    params: toml::Table,
}

type Outcome = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            return Err(format!($($why)+));
        }
    };
}

/// Everything the attacks share: the clean demo behind the shipped policy, a copy with
/// planted records, and the people chosen from them.
struct World {
    demo: &'static Demo,
    s: Secured,
    people: BTreeMap<&'static str, Chosen>,
    planted: Secured,
    /// In the planted copy: a person with an OpenCare consent share_health DENY and
    /// nothing else, allocated (team); and one with an OpenCare national opt-out.
    refused: Planted,
    opted_out: Planted,
}

#[derive(Clone, Debug)]
struct Planted {
    id: String,
    team: Option<String>,
}

const PLANTED_CODES: [&str; 4] = [
    "=HYPERLINK(\"http://x.example\",\"y\")",
    "+SUM(1+1)",
    "@cmd",
    "-2+3",
];

fn planner() -> AccessContext {
    let mut c = AccessContext::for_role("planner", "analyst", Purpose::Planning);
    c.organisation = Some("council".into());
    c
}

fn worker_of(p: &Chosen) -> Caller {
    let mut c = Caller::new("social_worker", "direct_care");
    c.worker = p.worker.clone();
    c
}

fn code(r: &Value) -> Option<&str> {
    r["errors"][0]["extensions"]["code"].as_str()
}

/// A person of the clean demo with an OpenCare record and a CaseTrak allocation, no
/// consents, and unlabelled services or visits; and one with services in 2025-26.
async fn pick_for_planting(s: &Secured) -> (Planted, String, Planted, String) {
    let q = "query($id: ID!) { person(id: $id) { sourceRecords { source localId }
      allocations { workerId teamId end } consents { scope }
      services { start end security { labels } } visits { security { labels } } } }";
    let ids = person_ids(s);
    let mut refused = None;
    let mut opted = None;
    for id in ids {
        let r = s.plain.run(q, json!({"id": id})).await;
        let p = &r["data"]["person"];
        let Some(oc) = p["sourceRecords"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["source"] == "opencare")
            .and_then(|s| s["localId"].as_str().map(str::to_string))
        else {
            continue;
        };
        let alloc = p["allocations"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["end"].is_null())
            .cloned();
        let unlabelled = |f: &str| {
            p[f].as_array()
                .into_iter()
                .flatten()
                .any(|r| r["security"]["labels"] == json!([]))
        };
        let no_consents = p["consents"].as_array().is_some_and(|c| c.is_empty());
        let planted = |a: &Option<Value>| Planted {
            id: id.clone(),
            team: a
                .as_ref()
                .and_then(|a| a["teamId"].as_str().map(str::to_string)),
        };
        if refused.is_none()
            && alloc.is_some()
            && no_consents
            && (unlabelled("services") || unlabelled("visits"))
        {
            refused = Some((planted(&alloc), oc.clone()));
            continue;
        }
        let open_in_2025 = p["services"].as_array().into_iter().flatten().any(|s| {
            s["start"].as_str().is_some_and(|d| d <= "2026-03-31")
                && s["end"].as_str().is_none_or(|d| d >= "2025-04-01")
        });
        if opted.is_none() && no_consents && open_in_2025 {
            opted = Some((planted(&alloc), oc));
        }
        if refused.is_some() && opted.is_some() {
            break;
        }
    }
    let (refused, oc_a) = refused.expect("an allocated OpenCare person without consents");
    let (opted, oc_b) = opted.expect("an OpenCare person with a service in 2025-26");
    (refused, oc_a, opted, oc_b)
}

/// The demo's databases copied into `work`, with planted rows.
fn plant(demo: &Demo, work: &Path, refused_oc: &str, opted_oc: &str) {
    for v in ["casetrak", "opencare", "ssis"] {
        std::fs::copy(
            demo.dir.join(format!("{v}.db")),
            work.join(format!("{v}.db")),
        )
        .unwrap();
    }
    let oc = rusqlite::Connection::open(work.join("opencare.db")).unwrap();
    oc.execute(
        "INSERT INTO consents (id, person_id, kind, decision, recorded_on, withdrawn_on) VALUES (900001, ?1, 'share_health', 'deny', '2025-01-06', NULL), (900002, ?2, 'opt_out', 'deny', '2024-05-01', NULL)",
        [refused_oc, opted_oc],
    )
    .unwrap();
    let ct = rusqlite::Connection::open(work.join("casetrak.db")).unwrap();
    for (i, code) in PLANTED_CODES.iter().enumerate() {
        ct.execute(
            "UPDATE CLNT SET ETH_CD = ?1 WHERE CLNT_ID = (SELECT CLNT_ID FROM CLNT ORDER BY CLNT_ID LIMIT 1 OFFSET ?2)",
            rusqlite::params![code, i as i64],
        )
        .unwrap();
    }
}

fn with_copies(text: String, work: &Path) -> String {
    let mut text = text;
    for v in ["casetrak", "opencare", "ssis"] {
        let from = format!("{:?}", demo::clean().dir.join(format!("{v}.db")));
        let to = format!("{:?}", work.join(format!("{v}.db")));
        text = text.replace(&from, &to);
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_callers() {
    let demo = demo::clean();
    let s = secured(demo).await;
    let people = choose(&s, demo).await;
    let (refused, oc_a, opted_out, oc_b) = pick_for_planting(&s).await;
    let planted = secured_config(demo, "", |text, work| {
        plant(demo, work, &oc_a, &oc_b);
        with_copies(text, work)
    })
    .await;
    let world = World {
        demo,
        s,
        people,
        planted,
        refused,
        opted_out,
    };
    let text = std::fs::read_to_string(demo::repo().join("tests/consent/hostile.toml")).unwrap();
    let suite: Suite = toml::from_str(&text).expect("hostile.toml parses");
    let items: BTreeSet<u32> = suite.case.iter().map(|c| c.item).collect();
    assert_eq!(
        items,
        (1..=12).collect(),
        "every item of the issue has a case"
    );
    let mut failures = Vec::new();
    for case in &suite.case {
        let p = &case.params;
        let outcome = match case.attack.as_str() {
            "source_refusal" => source_refusal(&world, p).await,
            "refusal_no_more_than_none" => refusal_no_more_than_none(&world).await,
            "inverted_flag" => inverted_flag(&world, p).await,
            "source_opt_out_in_reports" => source_opt_out_in_reports(&world).await,
            "opt_out_counts" => opt_out_counts().await,
            "research_without_nhs_number" => research_without_nhs_number().await,
            "search_oracle" => search_oracle(&world).await,
            "search_ids_audited" => search_ids_audited(&world).await,
            "nhs_lookup_indistinguishable" => nhs_lookup_indistinguishable(&world).await,
            "research_source_record" => research_source_record(&world).await,
            "cursors_opaque" => cursors_opaque(&world).await,
            "registry_read_unrelated" => registry_read_unrelated(&world).await,
            "registry_withdraw_own_deny" => registry_withdraw_own_deny(&world).await,
            "registry_permit_over_refusal" => registry_permit_over_refusal(&world).await,
            "registry_change_audited" => registry_change_audited(&world).await,
            "outage_is_not_refusal" => outage_is_not_refusal(&world).await,
            "csv_formulas" => csv_formulas(&world).await,
            "exponential_fragments" => exponential_fragments(&world, p).await,
            "body_limit" => body_limit(&world, p).await,
            "header_limits" => header_limits(&world).await,
            "search_wildcards" => search_wildcards(&world, p).await,
            "differencing_periods" => differencing_periods(&world, p).await,
            "cell_flags" => cell_flags(&world).await,
            "introspection_off" => introspection_off(&world).await,
            other => Err(format!("unknown attack `{other}`")),
        };
        if let Err(why) = outcome {
            failures.push(format!("item {} — {}: {why}", case.item, case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} hostile cases failed:\n{}",
        failures.len(),
        suite.case.len(),
        failures.join("\n")
    );
}

fn health_practitioner(p: &Planted) -> Caller {
    let mut c = Caller::new("health_practitioner", "direct_care");
    c.org = "nhs_trust".into();
    c.team = p.team.clone();
    c
}

/// Before: the consent was applied by its scope alone, as SHARE_HEALTH's permit: the
/// practitioner saw the records.
async fn source_refusal(w: &World, p: &toml::Table) -> Outcome {
    let fields: Vec<&str> = p["fields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f.as_str())
        .collect();
    let q = format!(
        "query($id: ID!) {{ person(id: $id) {{ {} }} }}",
        fields
            .iter()
            .map(|f| format!("{f} {{ id security {{ labels }} }}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let plain = w.planted.plain.run(&q, json!({"id": w.refused.id})).await;
    let got = w
        .planted
        .run(
            &health_practitioner(&w.refused),
            &q,
            json!({"id": w.refused.id}),
        )
        .await;
    let mut withheld_something = false;
    for f in fields {
        let had = plain["data"]["person"][f]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["security"]["labels"] == json!([]));
        let released = got["data"]["person"][f].as_array().map_or(0, Vec::len);
        ensure!(
            released == 0,
            "{f}: {released} released to the practitioner: {got}"
        );
        if had {
            withheld_something = true;
            ensure!(
                errors_at(&got, &["person", f]).contains(&"CONSENT_DENIED".to_string()),
                "{f}: no CONSENT_DENIED: {got}"
            );
        }
    }
    ensure!(
        withheld_something,
        "the planted person has records to withhold"
    );
    Ok(())
}

/// Before: the refused person's services were released while a person with no consent
/// got CONSENT_DENIED.
async fn refusal_no_more_than_none(w: &World) -> Outcome {
    let q = "query($id: ID!) { person(id: $id) { services { id } visits { id } } }";
    let caller = health_practitioner(&w.refused);
    let refused = w.planted.run(&caller, q, json!({"id": w.refused.id})).await;
    let plain = &w.people["plain"];
    let mut none_caller = caller.clone();
    none_caller.team = plain.team.clone();
    let none = w
        .planted
        .run(&none_caller, q, json!({"id": plain.id}))
        .await;
    for r in [&refused, &none] {
        for f in ["services", "visits"] {
            ensure!(
                r["data"]["person"][f]
                    .as_array()
                    .is_some_and(|a| a.is_empty()),
                "{f} released: {r}"
            );
        }
    }
    Ok(())
}

/// The privacy-flag vendor: a gateway over it alone, its database made here.
async fn privacy_flags_gateway(w: &World) -> Secured {
    secured_config(w.demo, "", |text, work| {
        let db = work.join("privacy.db");
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "CREATE TABLE tblClient (clientRef TEXT PRIMARY KEY, surname TEXT, forenames TEXT, dateOfBirth TEXT, lastEdit TEXT);
             CREATE TABLE tblVisit (visitRef TEXT PRIMARY KEY, clientRef TEXT, visitWhen TEXT);
             CREATE TABLE tblPrivacy (privRef TEXT PRIMARY KEY, clientRef TEXT, optedOut TEXT, flagDate TEXT, clearedDate TEXT);
             INSERT INTO tblClient VALUES ('C-001','ADEYEMI','Ola','02.06.1941',NULL), ('C-002','BRANDT','Ilse','15.01.1950',NULL),
               ('C-003','CHAUHAN','Dev','03.03.1960',NULL), ('C-004','DOYLE','Ann','04.04.1970',NULL),
               ('C-005','EVANS','Bryn','05.05.1980',NULL), ('C-006','FINCH','Cal','06.06.1990',NULL);
             INSERT INTO tblVisit SELECT 'V-' || clientRef, clientRef, '06.01.2025 09:00' FROM tblClient;
             INSERT INTO tblPrivacy VALUES ('1','C-001','Y','01.02.2021',NULL), ('2','C-002','N','01.02.2021',NULL),
               ('3','C-003','Y','01.02.2020',NULL), ('4','C-003','N','01.02.2024',NULL),
               ('5','C-004','N','01.02.2020',NULL), ('6','C-004','Y','01.02.2024',NULL),
               ('7','C-005','Y','01.02.2024',NULL), ('8','C-005','N','01.02.2024',NULL),
               ('9','C-006','Y','01.02.2020','01.02.2023');",
        )
        .unwrap();
        let profile = demo::repo().join("tests/consent/privacy_flags.toml");
        let head = text.split("\n[[sources]]").next().unwrap().to_string();
        format!(
            "{head}\n[[sources]]\nname = \"privacy\"\nprofile = {profile:?}\nsqlite = {{ path = {db:?} }}\n"
        )
    })
    .await
}

/// Before: NATIONAL_OPT_OUT records had no effect (no rule in the policy, and a rule
/// would have read the scope alone): every person's visits were released for planning.
async fn inverted_flag(w: &World, p: &toml::Table) -> Outcome {
    let g = privacy_flags_gateway(w).await;
    let snapshot = g.gateway.index.snapshot();
    let analyst = Caller::new("analyst", "planning");
    let q = "query($id: ID!) { person(id: $id) { visits { id } } }";
    for (local, opted) in p["expect"].as_table().unwrap() {
        let id = snapshot
            .by_source("privacy", local)
            .ok_or_else(|| format!("{local} not indexed"))?
            .to_string();
        let r = g.run(&analyst, q, json!({"id": id})).await;
        let visits = r["data"]["person"]["visits"].as_array().map_or(0, Vec::len);
        if opted.as_bool() == Some(true) {
            ensure!(r["data"]["person"].is_null(), "{local} opted out, yet: {r}");
        } else {
            ensure!(visits == 1, "{local} not opted out, yet: {r}");
        }
    }
    // Direct care ignores the opt-out.
    let mut lead = Caller::new("safeguarding_lead", "safeguarding");
    lead.break_glass = None;
    let id = snapshot.by_source("privacy", "C-001").unwrap().to_string();
    let r = g.run(&lead, q, json!({"id": id})).await;
    ensure!(
        r["data"]["person"]["visits"].as_array().map_or(0, Vec::len) == 1,
        "safeguarding: {r}"
    );
    Ok(())
}

/// Before: indicators used only the file, and the data set had no rule for the
/// source's opt-out: the person's rows were there and counted.
async fn source_opt_out_in_reports(w: &World) -> Outcome {
    let g = &w.planted.gateway;
    let estate = g.estate();
    let reports = g.reports.as_deref().unwrap();
    let period = Period::parse("2025-26").unwrap();
    let pseudonym = reports.pseudonym(&w.opted_out.id);
    let mut after = None;
    let mut rows = 0;
    loop {
        let (page, next) = run::mds_page(
            &estate,
            &planner(),
            period,
            "Northshire",
            500,
            after.as_deref(),
        )
        .await
        .map_err(|e| e.to_string())?;
        rows += page.len();
        ensure!(
            page.iter().all(|r| r.person != pseudonym),
            "the opted-out person has rows in the data set"
        );
        match next {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    ensure!(rows > 0, "the data set has rows");
    let mut excluded = g.policy.excluded_people(&planner()).as_ref().clone();
    excluded.insert(w.opted_out.id.clone());
    let t = run::tallies(&estate, reports, "Northshire", period, &excluded)
        .await
        .map_err(|e| e.to_string())?;
    let want = run::published(
        reports,
        "Northshire",
        period,
        &t,
        reports.config.suppression_threshold,
    );
    let got = run::indicators(&estate, &planner(), period, None)
        .await
        .map_err(|e| e.to_string())?;
    for (g, w) in got.iter().zip(&want) {
        ensure!(
            (g.numerator, g.denominator) == (w.numerator, w.denominator),
            "indicator {}: {:?}/{:?}, want {:?}/{:?}",
            g.id,
            g.numerator,
            g.denominator,
            w.numerator,
            w.denominator
        );
    }
    // The same person's records for planning: withheld as opted out.
    let r = w
        .planted
        .run(
            &Caller::new("analyst", "planning"),
            "query($id: ID!) { person(id: $id) { services { id } } }",
            json!({"id": w.opted_out.id}),
        )
        .await;
    ensure!(
        r["data"]["person"].is_null(),
        "planning sees the person: {r}"
    );
    Ok(())
}

/// Listed people none of whose records carries their NHS number (ground truth: every
/// record has an NHS-number fault).
fn truly_unmatched(demo: &Demo) -> usize {
    let faulty: BTreeSet<(String, String)> = demo
        .truth
        .faults
        .iter()
        .filter(|f| f.entity == "person" && f.kind.contains("nhs"))
        .map(|f| (f.source.clone(), f.local_id.clone()))
        .collect();
    let listed = opt_out_list(demo);
    demo.truth
        .people
        .iter()
        .filter(|p| p.nhs_number.as_ref().is_some_and(|n| listed.contains(n)))
        .filter(|p| {
            p.records
                .iter()
                .all(|r| faulty.contains(&(r.source.clone(), r.local_id.clone())))
        })
        .count()
}

/// Before: no answer said anything about the opt-out (the fields did not exist).
async fn opt_out_counts() -> Outcome {
    let dirty = demo::dirty();
    let s = secured(dirty).await;
    let want = truly_unmatched(dirty) as u64;
    ensure!(want > 0, "the dirty demo has unmatched listed people");
    let analyst = Caller::new("analyst", "planning");
    let r = s
        .run(
            &analyst,
            r#"{ indicators(period: "2025-26") { id optOut { listedUnmatched withoutNhsNumber withoutNhsNumberLeftOut } }
                 minimumDataSet(period: "2025-26", authority: "Northshire", first: 1) { optOut { listedUnmatched withoutNhsNumber withoutNhsNumberLeftOut } } }"#,
            json!({}),
        )
        .await;
    let rows = r["data"]["indicators"].as_array().ok_or(format!("{r}"))?;
    ensure!(!rows.is_empty(), "{r}");
    let mds = &r["data"]["minimumDataSet"]["optOut"];
    for note in rows.iter().map(|r| &r["optOut"]).chain([mds]) {
        let unmatched = note["listedUnmatched"].as_u64();
        // Below the suppression threshold the count is withheld.
        ensure!(
            unmatched == Some(want) || (want < 5 && unmatched.is_none()),
            "listedUnmatched {note}, truth {want}"
        );
        ensure!(
            note["withoutNhsNumber"].as_u64().is_some_and(|n| n > 0),
            "{note}"
        );
        ensure!(
            note["withoutNhsNumberLeftOut"] == false,
            "planning keeps them: {note}"
        );
    }
    Ok(())
}

/// Before: research got rows of people whose opt-out could not be checked.
async fn research_without_nhs_number() -> Outcome {
    let dirty = demo::dirty();
    let s = secured(dirty).await;
    let g = &s.gateway;
    let reports = g.reports.as_deref().unwrap();
    let snapshot = g.index.snapshot();
    let unchecked: BTreeSet<String> = snapshot
        .people
        .keys()
        .filter(|id| snapshot.nhs_numbers_of(id).is_empty())
        .map(|id| reports.pseudonym(id))
        .collect();
    ensure!(!unchecked.is_empty(), "people without an NHS number");
    let period = Period::parse("2025-26").unwrap();
    let mut researcher = AccessContext::for_role("r", "researcher", Purpose::Research);
    researcher.organisation = Some("council".into());
    let mut seen = [0usize, 0usize];
    for (i, ctx) in [planner(), researcher].iter().enumerate() {
        let mut after = None;
        loop {
            let (page, next) = run::mds_page(
                &g.estate(),
                ctx,
                period,
                "Northshire",
                1000,
                after.as_deref(),
            )
            .await
            .map_err(|e| e.to_string())?;
            seen[i] += page
                .iter()
                .filter(|r| unchecked.contains(&r.person))
                .count();
            match next {
                Some(c) => after = Some(c),
                None => break,
            }
        }
    }
    ensure!(seen[0] > 0, "planning keeps people without an NHS number");
    ensure!(
        seen[1] == 0,
        "research got {} rows of people it cannot check",
        seen[1]
    );
    Ok(())
}

/// A registry consent for the test, withdrawn by the guard when it goes out of scope.
struct PlantedConsent<'a> {
    s: &'a Secured,
    id: i64,
}

impl Drop for PlantedConsent<'_> {
    fn drop(&mut self) {
        // The SQLite registry answers without waiting on anything.
        let _ = futures::executor::block_on(self.s.access().registry.withdraw(
            self.id,
            "test",
            "end of case",
            None,
        ));
    }
}

async fn registry<'a>(s: &'a Secured, person: &str, provision: &str) -> PlantedConsent<'a> {
    let provision = serde_json::from_str(provision).unwrap();
    let id = s
        .access()
        .registry
        .record(person, &provision, "hostile", "test", None, &[])
        .await
        .unwrap()
        .id;
    PlantedConsent { s, id }
}

/// Before: `totalCount 1` for the full name and birth date, 0 for a wrong letter.
async fn search_oracle(w: &World) -> Outcome {
    let p = &w.people["plain"];
    let me = worker_of(p);
    let plain =
        w.s.plain
            .run(
                "query($id: ID!) { person(id: $id) { name { family given } birthDate } }",
                json!({"id": p.id}),
            )
            .await;
    let name = format!(
        "{} {}",
        plain["data"]["person"]["name"]["given"]
            .as_str()
            .unwrap_or(""),
        plain["data"]["person"]["name"]["family"]
            .as_str()
            .unwrap_or("")
    );
    let birth = plain["data"]["person"]["birthDate"].clone();
    let _deny = registry(
        &w.s,
        &p.id,
        r#"{"decision":"deny","classes":["demographics"]}"#,
    )
    .await;
    let r =
        w.s.run(
            &me,
            "query($id: ID!) { person(id: $id) { name { family } } }",
            json!({"id": p.id}),
        )
        .await;
    ensure!(
        errors_at(&r, &["person", "name"]) == ["CONSENT_DENIED"],
        "{r}"
    );
    let r = w
        .s
        .run(
            &me,
            "query($n: String!, $b: NaiveDate) { searchPeople(name: $n, birthDate: $b) { totalCount edges { node { id } } } }",
            json!({"n": name, "b": birth}),
        )
        .await;
    ensure!(
        r["data"]["searchPeople"]["totalCount"] == 0,
        "found by withheld details: {r}"
    );
    ensure!(!r.to_string().contains(&p.id), "{r}");
    Ok(())
}

/// Before: a search selecting only ids wrote no audit event.
async fn search_ids_audited(w: &World) -> Outcome {
    let me = worker_of(&w.people["plain"]);
    let r =
        w.s.run(
            &me,
            r#"{ searchPeople(name: "a", first: 3) { edges { node { id } } } }"#,
            json!({}),
        )
        .await;
    let ids: Vec<&str> = r["data"]["searchPeople"]["edges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["node"]["id"].as_str())
        .collect();
    ensure!(!ids.is_empty(), "{r}");
    let events =
        w.s.access()
            .audit
            .for_request(r["extensions"]["auditRequestId"].as_str().unwrap_or(""))
            .await
            .map_err(|e| e.to_string())?;
    for id in ids {
        ensure!(
            events.iter().any(|e| e.person_id.as_deref() == Some(id)
                && e.decision == "released"
                && e.kinds.contains("person_id")),
            "{id} not audited: {events:?}"
        );
    }
    Ok(())
}

/// A valid NHS number nobody here holds.
fn unknown_nhs(s: &Secured) -> String {
    let snapshot = s.gateway.index.snapshot();
    (100_000_000u64..)
        .map(|n| format!("{n:09}"))
        .filter_map(|d| {
            let sum: u32 = d
                .chars()
                .zip((2..=10).rev())
                .map(|(c, w)| c.to_digit(10).unwrap() * w)
                .sum();
            let check = (11 - sum % 11) % 11;
            (check != 10).then(|| format!("{d}{check}"))
        })
        .find(|n| snapshot.people_with_nhs_number(n).is_empty())
        .unwrap()
}

/// Before: the withheld person answered `{id, nhsNumber: null}`, the unknown number
/// `null`.
async fn nhs_lookup_indistinguishable(w: &World) -> Outcome {
    let p = &w.people["plain"];
    let nhs =
        w.s.gateway
            .index
            .snapshot()
            .nhs_numbers_of(&p.id)
            .first()
            .cloned();
    let nhs = nhs.ok_or("the plain person has an NHS number")?;
    let _deny = registry(
        &w.s,
        &p.id,
        r#"{"decision":"deny","classes":["demographics"]}"#,
    )
    .await;
    let me = worker_of(p);
    let q = "query($n: String!) { personByNhsNumber(nhsNumber: $n) { id nhsNumber } }";
    let withheld = w.s.run(&me, q, json!({"n": nhs})).await;
    let unknown = w.s.run(&me, q, json!({"n": unknown_nhs(&w.s)})).await;
    let strip = |mut v: Value| {
        v.as_object_mut().map(|o| o.remove("extensions"));
        v
    };
    ensure!(
        strip(withheld.clone()) == strip(unknown.clone()),
        "withheld {withheld} vs unknown {unknown}"
    );
    Ok(())
}

/// Before: the researcher got the person (and their id) from a legacy id.
async fn research_source_record(w: &World) -> Outcome {
    let p = &w.people["plain"];
    let refs = w.s.gateway.index.snapshot().records(&p.id).to_vec();
    let r = w
        .s
        .run(
            &Caller::new("researcher", "research"),
            "query($s: String!, $l: String!) { personBySourceRecord(source: $s, localId: $l) { id } }",
            json!({"s": refs[0].source, "l": refs[0].local_id}),
        )
        .await;
    ensure!(r["data"]["personBySourceRecord"].is_null(), "{r}");
    ensure!(code(&r) == Some("PURPOSE_NOT_PERMITTED"), "{r}");
    Ok(())
}

/// Every reading of a cursor a caller might try: as is, hex, base64.
fn readings(cursor: &str) -> Vec<String> {
    use base64::Engine;
    let mut out = vec![cursor.to_string()];
    let hex: Option<Vec<u8>> = (0..cursor.len())
        .step_by(2)
        .map(|i| {
            cursor
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    out.extend(hex.map(|b| String::from_utf8_lossy(&b).into_owned()));
    for engine in [
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
    ] {
        if let Ok(b) = engine.decode(cursor.trim_end_matches('=')) {
            out.push(String::from_utf8_lossy(&b).into_owned());
        }
    }
    out
}

/// Before: the data set's endCursor was hex of `k:P<gateway id>`; search cursors were
/// base64 of the id; timeline cursors base64 of the record's key.
async fn cursors_opaque(w: &World) -> Outcome {
    let snapshot = w.s.gateway.index.snapshot();
    let analyst = Caller::new("analyst", "planning");
    let mds = w
        .s
        .run(&analyst, r#"{ minimumDataSet(period: "2025-26", authority: "Northshire", first: 1) { pageInfo { endCursor } } }"#, json!({}))
        .await;
    let p = &w.people["plain"];
    let me = worker_of(p);
    let search =
        w.s.run(
            &me,
            r#"{ searchPeople(name: "a", first: 1) { pageInfo { endCursor } } }"#,
            json!({}),
        )
        .await;
    let timeline = w
        .s
        .run(
            &me,
            "query($id: ID!) { person(id: $id) { timeline(first: 1) { pageInfo { endCursor } edges { node { provenance { localId } } } } } }",
            json!({"id": p.id}),
        )
        .await;
    let local = timeline["data"]["person"]["timeline"]["edges"][0]["node"]["provenance"]["localId"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let cursors = [
        &mds["data"]["minimumDataSet"]["pageInfo"]["endCursor"],
        &search["data"]["searchPeople"]["pageInfo"]["endCursor"],
        &timeline["data"]["person"]["timeline"]["pageInfo"]["endCursor"],
    ];
    for c in cursors {
        let c = c
            .as_str()
            .ok_or(format!("a cursor: {mds} {search} {timeline}"))?;
        for text in readings(c) {
            ensure!(
                !snapshot.people.keys().any(|id| text.contains(id.as_str())),
                "cursor {c} reads as {text:?}, naming a person"
            );
            ensure!(
                local.len() < 3 || !text.contains(&format!("\"{local}\"")),
                "cursor names a record: {text:?}"
            );
        }
    }
    // A cursor still pages, and only for its own caller.
    let c = mds["data"]["minimumDataSet"]["pageInfo"]["endCursor"]
        .as_str()
        .unwrap();
    let q = r#"query($c: String) { minimumDataSet(period: "2025-26", authority: "Northshire", first: 1, after: $c) { rows { person } } }"#;
    let next = w.s.run(&analyst, q, json!({"c": c})).await;
    ensure!(
        next["data"]["minimumDataSet"]["rows"]
            .as_array()
            .is_some_and(|r| r.len() == 1),
        "{next}"
    );
    let mut other = analyst.clone();
    other.user = "someone-else".into();
    let stolen = w.s.run(&other, q, json!({"c": c})).await;
    ensure!(code(&stolen) == Some("BAD_USER_INPUT"), "{stolen}");
    Ok(())
}

/// Before: any role with may_record_consent read any person's registry consents.
async fn registry_read_unrelated(w: &World) -> Outcome {
    let p = &w.people["plain"];
    let _c = registry(&w.s, &p.id, r#"{"decision":"deny","classes":["notes"]}"#).await;
    let mut stranger = Caller::new("social_worker", "direct_care");
    stranger.worker = Some("999".into());
    stranger.team = Some("999".into());
    let r =
        w.s.run(
            &stranger,
            "query($id: ID!) { registryConsents(personId: $id) { id } }",
            json!({"id": p.id}),
        )
        .await;
    ensure!(code(&r) == Some("FORBIDDEN") && r["data"].is_null(), "{r}");
    let mine =
        w.s.run(
            &worker_of(p),
            "query($id: ID!) { registryConsents(personId: $id) { id } }",
            json!({"id": p.id}),
        )
        .await;
    ensure!(
        mine["data"]["registryConsents"]
            .as_array()
            .is_some_and(|a| !a.is_empty()),
        "{mine}"
    );
    Ok(())
}

const SERVICES: &str = "query($id: ID!) { person(id: $id) { services { id } } }";

/// Before: the worker withdrew it and had access again on the next request.
async fn registry_withdraw_own_deny(w: &World) -> Outcome {
    let p = &w.people["plain"];
    let me = worker_of(p);
    let c = registry(
        &w.s,
        &p.id,
        r#"{"decision":"permit","provisions":[{"decision":"deny","actors":["matrix-user"]}]}"#,
    )
    .await;
    for evidence in [None, Some("form 2026/1")] {
        let r = w
            .s
            .run(
                &me,
                "mutation($c: ID!, $e: String) { withdrawConsent(id: $c, reason: \"no longer\", evidence: $e) { id } }",
                json!({"c": c.id.to_string(), "e": evidence}),
            )
            .await;
        ensure!(
            r["errors"].is_array() && r["data"].is_null(),
            "withdrawn by its subject: {r}"
        );
    }
    let r = w.s.run(&me, SERVICES, json!({"id": p.id})).await;
    ensure!(
        errors_at(&r, &["person", "services"]) == ["CONSENT_DENIED"],
        "{r}"
    );
    Ok(())
}

/// Before: a newer PERMIT recorded by the worker lifted the refusal at once.
async fn registry_permit_over_refusal(w: &World) -> Outcome {
    let p = &w.people["plain"];
    let me = worker_of(p);
    let refusal = registry(&w.s, &p.id, r#"{"decision":"deny"}"#).await;
    let record = "mutation($id: ID!, $e: String) { recordConsent(personId: $id, source: \"phone\", evidence: $e, provision: { decision: PERMIT }) { id } }";
    for evidence in [None, Some("call of 3 March")] {
        let r =
            w.s.run(&me, record, json!({"id": p.id, "e": evidence}))
                .await;
        ensure!(code(&r) == Some("FORBIDDEN"), "evidence {evidence:?}: {r}");
    }
    let r = w.s.run(&me, SERVICES, json!({"id": p.id})).await;
    ensure!(
        errors_at(&r, &["person", "services"]) == ["CONSENT_DENIED"],
        "{r}"
    );
    // The person themself may.
    let mut person = Caller::new("person", "direct_care");
    person.person = Some(p.id.clone());
    let r =
        w.s.run(&person, record, json!({"id": p.id, "e": null}))
            .await;
    let id = r["data"]["recordConsent"]["id"]
        .as_str()
        .ok_or(format!("the person: {r}"))?;
    let _own = PlantedConsent {
        s: &w.s,
        id: id.parse().unwrap(),
    };
    let r = w.s.run(&me, SERVICES, json!({"id": p.id})).await;
    ensure!(
        errors_at(&r, &["person", "services"]).is_empty(),
        "after the person's permit: {r}"
    );
    drop(refusal);
    Ok(())
}

/// Before: the audit said only where the consent came from.
async fn registry_change_audited(w: &World) -> Outcome {
    let p = &w.people["plain"];
    let me = worker_of(p);
    let first = registry(&w.s, &p.id, r#"{"decision":"deny","classes":["notes"]}"#).await;
    let r = w
        .s
        .run(&me, "mutation($id: ID!) { recordConsent(personId: $id, source: \"paper form\", provision: { decision: DENY, dataClasses: [\"alerts\"] }) { id history { detail } } }", json!({"id": p.id}))
        .await;
    let id = r["data"]["recordConsent"]["id"]
        .as_str()
        .ok_or(format!("{r}"))?;
    let _second = PlantedConsent {
        s: &w.s,
        id: id.parse().unwrap(),
    };
    let events =
        w.s.access()
            .audit
            .for_request(r["extensions"]["auditRequestId"].as_str().unwrap())
            .await
            .map_err(|e| e.to_string())?;
    let event = events
        .iter()
        .find(|e| e.decision == "consent_recorded")
        .ok_or(format!("{events:?}"))?;
    let reason = event.reason.clone().unwrap_or_default();
    ensure!(
        reason.contains(&format!("over: [{} (deny)", first.id)),
        "{reason}"
    );
    let detail = r["data"]["recordConsent"]["history"][0]["detail"]
        .as_str()
        .unwrap_or("");
    ensure!(
        detail.contains(&format!("\"replaces\":[{}", first.id)),
        "{detail}"
    );
    Ok(())
}

/// Before: CONSENT_DENIED, "cannot be read just now", and SOURCE_UNAVAILABLE twice at
/// one field.
async fn outage_is_not_refusal(w: &World) -> Outcome {
    let p = w.refused.clone();
    let g = secured_config(w.demo, "", |text, work| {
        for v in ["casetrak", "opencare", "ssis"] {
            std::fs::copy(
                w.demo.dir.join(format!("{v}.db")),
                work.join(format!("{v}.db")),
            )
            .unwrap();
        }
        with_copies(text, work)
    })
    .await;
    // The copies sit beside the gateway's index, in its work folder.
    let path = g
        .gateway
        .index
        .path()
        .parent()
        .ok_or("work folder")?
        .join("casetrak.db");
    let size = std::fs::metadata(&path).map_err(|e| e.to_string())?.len() as usize;
    std::fs::write(&path, vec![0x5a; size]).map_err(|e| e.to_string())?;
    g.gateway.fetcher.clear_cache();
    let mut manager = Caller::new("team_manager", "care_management");
    manager.team = p.team.clone();
    let r = g
        .run(
            &manager,
            "query($id: ID!) { person(id: $id) { name { family given } services { id } } }",
            json!({"id": p.id}),
        )
        .await;
    for field in ["name", "services"] {
        let errs = errors_at(&r, &["person", field]);
        ensure!(
            !errs.contains(&"CONSENT_DENIED".to_string()),
            "{field} reads as a refusal: {r}"
        );
        let unavailable = errs.iter().filter(|c| *c == "SOURCE_UNAVAILABLE").count();
        ensure!(
            unavailable == 1,
            "{field}: SOURCE_UNAVAILABLE {unavailable} times: {r}"
        );
    }
    ensure!(
        errors_at(&r, &["person", "services"]).contains(&"CONSENT_UNKNOWN".to_string()),
        "{r}"
    );
    Ok(())
}

/// Before: the codes were written raw (`=HYPERLINK(...)` as a cell).
async fn csv_formulas(w: &World) -> Outcome {
    let url = serve(&w.planted)
        .await
        .replace("/graphql", "/reports/data-quality.csv");
    let steward = Caller::new("data_steward", "care_management");
    let response = reqwest::Client::new()
        .get(&url)
        .headers(w.planted.headers(&steward))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    ensure!(response.status() == 200, "{}", response.status());
    let text = response.text().await.map_err(|e| e.to_string())?;
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let mut found = BTreeSet::new();
    for row in reader.records() {
        let row = row.map_err(|e| e.to_string())?;
        for cell in row.iter() {
            let risky = cell.starts_with(['=', '+', '@'])
                || (cell.starts_with('-') && cell.parse::<f64>().is_err());
            ensure!(!risky, "a formula cell: {cell:?}");
            if let Some(code) = cell.strip_prefix('\'') {
                found.insert(code.to_string());
            }
        }
    }
    for code in PLANTED_CODES {
        ensure!(
            found.contains(code),
            "{code} not in the report (neutralised): {text}"
        );
    }
    Ok(())
}

fn doubling_query(levels: usize) -> String {
    let mut q = format!("query($id: ID!) {{ person(id: $id) {{ ...F{levels} }} }}\nfragment F0 on Person {{ id }}\n");
    for i in 1..=levels {
        q.push_str(&format!(
            "fragment F{i} on Person {{ ...F{} ...F{} }}\n",
            i - 1,
            i - 1
        ));
    }
    q
}

/// Before: ~10 s of CPU expanding 2^25 spreads, then "Query is too complex." without a
/// code.
async fn exponential_fragments(w: &World, p: &toml::Table) -> Outcome {
    let levels = p["levels"].as_integer().unwrap() as usize;
    let who = &w.people["plain"];
    let mut person = Caller::new("person", "direct_care");
    person.person = Some(who.id.clone());
    let r =
        w.s.run(&person, &doubling_query(levels), json!({"id": who.id}))
            .await;
    ensure!(
        code(&r) == Some("QUERY_TOO_COSTLY") && r["data"].is_null(),
        "{r}"
    );
    Ok(())
}

/// Before: the body was read and parsed before the token was looked at (401 or 400
/// after reading it all).
async fn body_limit(w: &World, p: &toml::Table) -> Outcome {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = serve(&w.s).await;
    let bytes = p["bytes"].as_integer().unwrap() as usize;
    // A raw socket that declares the body and never sends it: the answer can only come
    // before the body is read. (An HTTP client that streams the body races the server's
    // early close and reports "error sending request" instead of the 413.)
    let address = url
        .trim_start_matches("http://")
        .trim_end_matches("/graphql")
        .to_string();
    let mut socket = tokio::net::TcpStream::connect(&address)
        .await
        .map_err(|e| e.to_string())?;
    let head = format!(
        "POST /graphql HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\n\
         content-length: {bytes}\r\n\r\n"
    );
    socket
        .write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = vec![0u8; 1024];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), socket.read(&mut answer))
        .await
        .map_err(|_| "no answer within 10 s: the gateway waits for the body".to_string())?
        .map_err(|e| e.to_string())?;
    let status_line = String::from_utf8_lossy(&answer[..read])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    ensure!(
        status_line.starts_with("HTTP/1.1 413"),
        "answer `{status_line}`"
    );
    // The gateway still answers.
    let ok = reqwest::Client::new()
        .get(url.replace("/graphql", "/healthz"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    ensure!(ok.status() == 200, "healthz {}", ok.status());
    Ok(())
}

/// Before: a 64 KiB break-glass reason was accepted and stored.
async fn header_limits(w: &World) -> Outcome {
    let url = serve(&w.s).await;
    let worker = worker_of(&w.people["plain"]);
    let token = w.s.token(&worker, 30 * 60);
    let post = |reason: String| {
        reqwest::Client::new()
            .post(&url)
            .bearer_auth(&token)
            .header("x-purpose-of-use", "direct_care")
            .header("x-break-glass-reason", reason)
            .json(&json!({"query": "{ __typename }"}))
            .send()
    };
    let r = post("x".repeat(64 * 1024))
        .await
        .map_err(|e| e.to_string())?;
    ensure!(r.status() == 431, "64 KiB: {}", r.status());
    let r = post(format!("Emergency: {}", "y".repeat(600)))
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let body: Value = r.json().await.unwrap_or_default();
    ensure!(
        status == 403 && code(&body) == Some("BREAK_GLASS_REFUSED"),
        "600 chars: {status} {body}"
    );
    Ok(())
}

/// Before: `%` normalised to no word and matched all 3,206 people.
async fn search_wildcards(w: &World, p: &toml::Table) -> Outcome {
    let me = worker_of(&w.people["plain"]);
    for name in p["names"].as_array().unwrap() {
        let r =
            w.s.run(
                &me,
                "query($n: String!) { searchPeople(name: $n) { totalCount } }",
                json!({"n": name.as_str()}),
            )
            .await;
        ensure!(code(&r) == Some("BAD_USER_INPUT"), "{name}: {r}");
    }
    Ok(())
}

/// Before: both ranges were answered, and their denominators differed by one.
async fn differencing_periods(w: &World, p: &toml::Table) -> Outcome {
    let analyst = Caller::new("analyst", "planning");
    for period in p["periods"].as_array().unwrap() {
        let r =
            w.s.run(
                &analyst,
                "query($p: String!) { indicators(period: $p) { id denominator } }",
                json!({"p": period.as_str()}),
            )
            .await;
        ensure!(
            code(&r) == Some("BAD_USER_INPUT") && r["data"].is_null(),
            "{period}: {r}"
        );
    }
    Ok(())
}

/// Before: only `suppressed`, true where just exclusion counts were withheld.
async fn cell_flags(w: &World) -> Outcome {
    let r = w
        .s
        .run(
            &Caller::new("analyst", "planning"),
            r#"{ indicators(period: "2025-26") { id numerator denominator value suppressed numeratorSuppressed denominatorSuppressed valueSuppressed excluded excludedSuppressed exclusions { count suppressed } } }"#,
            json!({}),
        )
        .await;
    let rows = r["data"]["indicators"].as_array().ok_or(format!("{r}"))?;
    ensure!(!rows.is_empty(), "{r}");
    for row in rows {
        let flag = |k: &str| row[k].as_bool().unwrap_or(false);
        ensure!(
            flag("numeratorSuppressed") == row["numerator"].is_null(),
            "{row}"
        );
        ensure!(
            flag("denominatorSuppressed") == row["denominator"].is_null(),
            "{row}"
        );
        ensure!(
            flag("excludedSuppressed") == row["excluded"].is_null(),
            "{row}"
        );
        ensure!(
            flag("suppressed") == (flag("numeratorSuppressed") || flag("denominatorSuppressed")),
            "{row}"
        );
        ensure!(!flag("valueSuppressed") || row["value"].is_null(), "{row}");
        for e in row["exclusions"].as_array().into_iter().flatten() {
            ensure!(
                e["suppressed"].as_bool() == Some(e["count"].is_null()),
                "{row}"
            );
        }
    }
    Ok(())
}

/// Before: `__schema` answered any valid token.
async fn introspection_off(w: &World) -> Outcome {
    let me = worker_of(&w.people["plain"]);
    for q in [
        "{ __schema { queryType { name } } }",
        "query { ...Q } fragment Q on Query { __type(name: \"Person\") { name } }",
    ] {
        let r = w.s.run(&me, q, json!({})).await;
        ensure!(
            code(&r) == Some("INTROSPECTION_DISABLED") && r["data"].is_null(),
            "{r}"
        );
    }
    let demo_config =
        escr_gateway::config::LoadedConfig::load(&demo::repo().join("config/escr.toml"))
            .map_err(|e| e.to_string())?;
    ensure!(
        demo_config.gateway.server.introspection,
        "the demo turns it on"
    );
    Ok(())
}
