//! examples/reporting as an analyst runs it: `indicators.py` (in the virtualenv of its
//! pinned requirements, `examples/reporting/.venv`, which `scripts/test-servers.sh`
//! makes) over two councils, each at a gateway of its own (the shipped config less the
//! other council's sources). Its CSV must hold what each gateway's JSON says, its data
//! sets what each gateway sends, and its chart must be a PNG that decodes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use crate::support::demo;
use crate::support::shipped::Shipped;

const PERIODS: [&str; 3] = ["2023-24", "2024-25", "2025-26"];

/// The shipped gateway serving one council's sources only.
fn gateway_of(council: &'static str) -> Shipped {
    Shipped::start_edited(move |text| {
        let mut config: toml::Table = text.parse().unwrap();
        let sources = config["sources"].as_array_mut().unwrap();
        sources.retain(|s| s["authority"].as_str() == Some(council));
        assert_eq!(sources.len(), 3);
        *text = toml::to_string(&config).unwrap();
    })
}

fn get(shipped: &Shipped, token: &str, path: &str) -> reqwest::blocking::Response {
    let r = reqwest::blocking::Client::new()
        .get(format!("{}{path}", shipped.base))
        .bearer_auth(token)
        .header("X-Purpose-Of-Use", "planning")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r
}

#[test]
fn the_analysts_script_pulls_what_the_gateways_publish() {
    let folder = demo::repo().join("examples/reporting");
    let python = folder.join(".venv/bin/python");
    assert!(
        python.exists(),
        "no virtualenv: `python3 -m venv .venv && .venv/bin/pip install -r requirements.txt` in examples/reporting (scripts/test-servers.sh does it)"
    );
    let councils = [
        ("Northshire", gateway_of("Northshire")),
        ("Southborough", gateway_of("Southborough")),
    ];
    let tokens: Vec<String> = councils
        .iter()
        .map(|(_, g)| g.token(&["--role", "analyst", "--purpose", "planning"]))
        .collect();
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("reporting");
    let _ = std::fs::remove_dir_all(&out);
    let mut cmd = std::process::Command::new(&python);
    cmd.arg(folder.join("indicators.py"))
        .arg("--periods")
        .args(PERIODS)
        .arg("--out")
        .arg(&out)
        .env_remove("ESCR_TOKEN");
    for ((council, gateway), token) in councils.iter().zip(&tokens) {
        cmd.arg("--council")
            .arg(format!("{council}={}", gateway.base))
            .env(format!("ESCR_TOKEN_{}", council.to_uppercase()), token);
    }
    let run = cmd.output().unwrap();
    assert!(
        run.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );

    // Every figure of the CSV is the gateway's, withheld ones left empty.
    let mut rows: BTreeMap<(String, String, String), BTreeMap<String, String>> = BTreeMap::new();
    let mut reader = csv::Reader::from_path(out.join("indicators.csv")).unwrap();
    for row in reader.deserialize::<BTreeMap<String, String>>() {
        let row = row.unwrap();
        let key = (
            row["council"].clone(),
            row["period"].clone(),
            row["indicator"].clone(),
        );
        assert!(rows.insert(key, row).is_none(), "one row per indicator");
    }
    let cell = |v: &Value| match v {
        Value::Null => String::new(),
        Value::Number(n) => n.to_string(),
        other => panic!("{other}"),
    };
    let mut expected = 0;
    for ((council, gateway), token) in councils.iter().zip(&tokens) {
        for period in PERIODS {
            let answer: Value = get(
                gateway,
                token,
                &format!("/reports/indicators.json?period={period}&authorities={council}"),
            )
            .json()
            .unwrap();
            for i in answer["indicators"].as_array().unwrap() {
                expected += 1;
                let id = i["id"].as_str().unwrap();
                let row = &rows[&(council.to_string(), period.to_string(), id.to_string())];
                for (column, field) in [
                    ("numerator", "numerator"),
                    ("denominator", "denominator"),
                    ("value", "value"),
                ] {
                    let csv_cell = row[column].trim_end_matches(".0");
                    assert_eq!(
                        csv_cell,
                        cell(&i[field]).trim_end_matches(".0"),
                        "{council} {period} {id} {column}"
                    );
                }
                assert_eq!(
                    row["suppressed"] == "yes",
                    i["suppressed"].as_bool().unwrap()
                );
            }
        }
        // The data set as the gateway sends it.
        let last = PERIODS[PERIODS.len() - 1];
        let sent = get(
            gateway,
            token,
            &format!("/reports/mds.csv?period={last}&authority={council}"),
        )
        .bytes()
        .unwrap();
        let written = std::fs::read(out.join(format!("mds-{council}-{last}.csv"))).unwrap();
        assert_eq!(written, sent.to_vec(), "{council}'s data set");
        assert!(
            String::from_utf8(written)
                .unwrap()
                .lines()
                .skip(1)
                .all(|l| l.starts_with(&format!("{council},"))),
            "only {council}'s rows"
        );
    }
    assert!(expected > PERIODS.len() * 2, "indicators were compared");
    assert_eq!(rows.len(), expected);
    // The two councils differ: the figures were not one gateway's twice.
    let of = |c: &str| -> Vec<&String> {
        rows.iter()
            .filter(|(k, _)| k.0 == c)
            .map(|(_, r)| &r["numerator"])
            .collect()
    };
    assert_ne!(of("Northshire"), of("Southborough"));

    // The chart: a PNG that decodes, of a size, not blank.
    let png = out.join("indicators.png");
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
    let check = std::process::Command::new(&python)
        .arg("-c")
        .arg("import sys\nfrom PIL import Image\nim = Image.open(sys.argv[1]); im.verify()\nim = Image.open(sys.argv[1]).convert('RGB')\nprint(im.size[0], im.size[1], len(im.getcolors(1 << 24)))")
        .arg(&png)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let numbers: Vec<usize> = String::from_utf8(check.stdout)
        .unwrap()
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    assert!(numbers[0] >= 800 && numbers[1] >= 600, "{numbers:?}");
    assert!(
        numbers[2] > 20,
        "a chart has more than a few colours: {numbers:?}"
    );
}
