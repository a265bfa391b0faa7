//! The README's examples, run as a reader runs them: every fenced block of `README.md`
//! and `config/README.md` is taken from the Markdown and run against a real `escr serve`
//! over the shipped `config/` (copied into a temp folder, so the demo is generated
//! there), so the documentation cannot drift from what the gateway answers.
//!
//! A fence's info string says how to run it (GitHub renders by its first word only):
//!
//! - ```` ```graphql [role=R purpose=P worker=W team=T person=$v] [save=name=path]... [expect=CODE] ````:
//!   each operation of the block is posted to `/graphql` with a token minted by
//!   `escr token --role R ...` (default `team_manager`, `care_management`: the README's
//!   first token) and `X-Purpose-Of-Use: P`. The operation's `$variables` come from
//!   earlier `save=` values (`save=id=personBySourceRecord.id` keeps that field of
//!   `data` as `$id`), since person ids are never written into the README. Without
//!   `expect`, an answer must have no error and no null root field; with it, it must
//!   carry an error with that code.
//! - ```` ```sh ````: run by bash (`set -euo pipefail`), `cargo run [-q] --` and `escr`
//!   being the built binary with the copied config, `curl` failing on an HTTP error,
//!   saved values exported (`$ID` for `save=id=...`). The lines that start the gateway
//!   itself (`cargo run -- serve`, which this test runs) or run this test
//!   (`scripts/test-all.sh`), the replicas (`examples/replicas/run.sh`, which `replicas::`
//!   tests) and the region (`examples/region/run.sh`, which
//!   `federation::` tests) are not run again; `cargo run -- serve --listen ADDR` is run
//!   on a free port and must answer `/healthz` there.
//! - ```` ```json headers ````: GraphiQL's headers; `<the token>` becomes a token of the
//!   preceding `sh` fence's `token` command, and the headers must open a record.
//! - ```` ```toml config ````: a fragment of `escr.toml`; added to the copied config, it
//!   must pass `escr check-config`.
//!
//! Commands the prose names in inline code (`escr index`, `cargo run --release --example
//! bench_reports`, `scripts/bench-peers.sh`) are checked to exist as written: the
//! subcommand and flags in `escr`'s help, the example, package or script in the tree
//! (`every_command_the_prose_names_exists`).
//!
//! Literal stand-ins the README uses for what differs on a reader's machine are
//! replaced: `127.0.0.1:4000` (the served address), the MariaDB of `generate-demo
//! --target` (the test server of `scripts/test-servers.sh`) and its password.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::support::demo;
use crate::support::shipped::{escr_bin, free_port, merge_toml, serve, Shipped};

#[derive(Debug)]
struct Fence {
    file: String,
    line: usize,
    lang: String,
    attrs: Vec<(String, String)>,
    body: String,
}

impl Fence {
    fn at(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    fn has(&self, word: &str) -> bool {
        self.attrs.iter().any(|(k, v)| k == word && v.is_empty())
    }
}

/// The fenced code blocks of a Markdown file, in order.
fn fences(path: &Path, name: &str) -> Vec<Fence> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    let mut open: Option<Fence> = None;
    for (i, line) in text.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                let mut words = info.split_whitespace();
                let lang = words.next().unwrap_or("").to_string();
                let attrs = words
                    .map(|w| match w.split_once('=') {
                        Some((k, v)) => (k.to_string(), v.to_string()),
                        None => (w.to_string(), String::new()),
                    })
                    .collect();
                open = Some(Fence {
                    file: name.to_string(),
                    line: i + 1,
                    lang,
                    attrs,
                    body: String::new(),
                });
            }
            (Some(_), Some("")) => out.push(open.take().unwrap()),
            (Some(f), _) => {
                f.body.push_str(line);
                f.body.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "{name}: an unclosed fence");
    out
}

/// The operations of a GraphQL block: a block may list several, one after another.
/// Splits at the end of each top-level selection set (strings and comments aware).
fn operations(body: &str) -> Vec<String> {
    let mut ops = Vec::new();
    let (mut depth, mut in_string, mut in_comment) = (0usize, false, false);
    let mut current = String::new();
    let mut prev = '\0';
    for c in body.chars() {
        current.push(c);
        if in_comment {
            in_comment = c != '\n';
        } else if in_string {
            in_string = !(c == '"' && prev != '\\');
        } else {
            match c {
                '#' => in_comment = true,
                '"' => in_string = true,
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        ops.push(current.trim().to_string());
                        current.clear();
                    }
                }
                _ => {}
            }
        }
        prev = c;
    }
    assert!(current.trim().is_empty(), "trailing text: {current}");
    ops
}

/// The `$names` an operation declares (before its selection set).
fn declared_variables(op: &str) -> Vec<String> {
    let head = &op[..op.find('{').unwrap_or(0)];
    head.split('$')
        .skip(1)
        .map(|s| {
            s.chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

struct Estate {
    shipped: Shipped,
    saved: BTreeMap<String, Value>,
    last_token_args: Vec<String>,
}

impl Estate {
    fn start() -> Estate {
        Estate {
            shipped: Shipped::start(""),
            saved: BTreeMap::new(),
            last_token_args: Vec::new(),
        }
    }

    fn token(&self, args: &[String]) -> String {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.shipped.token(&args)
    }

    /// A saved value by its `$name` (for person ids in token commands).
    fn substitute(&self, value: &str) -> String {
        match value.strip_prefix('$') {
            Some(name) => self.saved[name].as_str().unwrap().to_string(),
            None => value.to_string(),
        }
    }

    fn run_graphql(&mut self, fence: &Fence) {
        let mut token_args = Vec::new();
        let mut purpose = "care_management".to_string();
        let mut role = "team_manager".to_string();
        for (k, v) in &fence.attrs {
            match k.as_str() {
                "role" => role = v.clone(),
                "purpose" => purpose = v.clone(),
                "worker" | "team" | "person" => {
                    token_args.push(format!("--{k}"));
                    token_args.push(self.substitute(v));
                }
                "save" | "expect" => {}
                other => panic!("{}: unknown fence attribute `{other}`", fence.at()),
            }
        }
        token_args.extend(["--role".into(), role, "--purpose".into(), purpose.clone()]);
        let token = self.token(&token_args);
        for op in operations(&fence.body) {
            let variables: serde_json::Map<String, Value> = declared_variables(&op)
                .into_iter()
                .map(|name| {
                    let value = self.saved.get(&name).cloned().unwrap_or_else(|| {
                        panic!("{}: ${name} was not saved by a fence before", fence.at())
                    });
                    (name, value)
                })
                .collect();
            let response = reqwest::blocking::Client::new()
                .post(format!("{}/graphql", self.shipped.base))
                .bearer_auth(&token)
                .header("X-Purpose-Of-Use", &purpose)
                .json(&json!({"query": op, "variables": variables}))
                .send()
                .unwrap();
            let status = response.status();
            let r: Value = response.json().unwrap();
            assert_eq!(status, 200, "{}: {op}\n{r}", fence.at());
            let codes: Vec<&str> = r["errors"]
                .as_array()
                .map(|e| {
                    e.iter()
                        .filter_map(|e| e["extensions"]["code"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            match fence.attr("expect") {
                Some(code) => assert!(codes.contains(&code), "{}: {op}\n{r}", fence.at()),
                None => {
                    assert!(r.get("errors").is_none(), "{}: {op}\n{r}", fence.at());
                    let data = r["data"].as_object().expect("data");
                    for (field, value) in data {
                        assert!(!value.is_null(), "{}: {field} is null\n{r}", fence.at());
                    }
                }
            }
            for (k, v) in &fence.attrs {
                if k != "save" {
                    continue;
                }
                let (name, path) = v.split_once('=').expect("save=name=path");
                let mut value = &r["data"];
                for step in path.split('.') {
                    value = match step.parse::<usize>() {
                        Ok(i) => &value[i],
                        Err(_) => &value[step],
                    };
                }
                if !value.is_null() {
                    self.saved.insert(name.to_string(), value.clone());
                }
            }
            for (k, v) in &fence.attrs {
                if k == "save" {
                    let name = v.split_once('=').unwrap().0;
                    assert!(
                        self.saved.contains_key(name),
                        "{}: nothing to save as ${name}\n{r}",
                        fence.at()
                    );
                }
            }
        }
    }

    fn run_sh(&mut self, fence: &Fence) {
        let addr = self.shipped.base.trim_start_matches("http://").to_string();
        let mut script = String::from(
            "set -euo pipefail\n\
             cargo() { [ \"$1\" = run ] || { echo \"cargo $*: only cargo run\" >&2; return 1; }; shift; [ \"$1\" = -q ] && shift; [ \"$1\" = -- ] && shift; \"$ESCR\" --config \"$ESCR_README_CONFIG\" \"$@\"; }\n\
             escr() { \"$ESCR\" --config \"$ESCR_README_CONFIG\" \"$@\"; }\n\
             curl() { command curl --fail-with-body -sS \"$@\"; }\n",
        );
        // Join continued lines: a command is one logical line.
        let body = fence.body.replace("\\\n", " ");
        for line in body.lines() {
            let command = line.split(" #").next().unwrap().trim();
            if command == "cargo run -- serve" || command == "scripts/test-all.sh" {
                // This test serves the gateway and is run by the test command.
                assert!(demo::repo().join("scripts/test-all.sh").exists());
                continue;
            }
            if command == "examples/replicas/run.sh" {
                // Runs until stopped, on fixed ports; `replicas::` starts the same
                // database, replicas and balancer on free ones.
                assert!(demo::repo().join(command).exists());
                continue;
            }
            if command == "examples/region/run.sh" {
                // Runs until stopped, on fixed ports; `federation::hive_gateway_over_two_councils`
                // starts the same councils and router on free ones.
                assert!(demo::repo().join(command).exists());
                continue;
            }
            if let Some(args) = command.strip_prefix("cargo run -- serve ") {
                self.check_serve_args(fence, args);
                continue;
            }
            if let Some(args) = command.strip_prefix("cargo run -- token ") {
                self.last_token_args = args.split_whitespace().map(String::from).collect();
            }
            script.push_str(line);
            script.push('\n');
        }
        let script = self.stand_ins(&script, &addr);
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(&script)
            .current_dir(self.shipped.dir.path())
            .env("ESCR", escr_bin())
            .env("ESCR_README_CONFIG", &self.shipped.config)
            .env_remove("ESCR_JWT_KEY");
        for (name, value) in &self.saved {
            if let Some(s) = value.as_str() {
                cmd.env(name.to_uppercase(), s);
            }
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}: {script}\nstdout: {}\nstderr: {}",
            fence.at(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// What differs on a reader's machine: the served address, the test MariaDB.
    fn stand_ins(&self, script: &str, addr: &str) -> String {
        let mut script = script.replace("127.0.0.1:4000", addr);
        if script.contains("mysql://") {
            let url = crate::mysql::required_env("ESCR_TEST_MYSQL_URL");
            let opts = mysql_async::Opts::from_url(&url).unwrap();
            script = script
                .replace(
                    "ESCR_TARGET_PASSWORD=...",
                    &format!("ESCR_TARGET_PASSWORD={}", opts.pass().unwrap()),
                )
                .replace("127.0.0.1:3306", &format!("127.0.0.1:{}", opts.tcp_port()));
        }
        script
    }

    /// `cargo run -- serve --listen ADDR`: serves there (a free port stands in).
    fn check_serve_args(&self, fence: &Fence, args: &str) {
        let words: Vec<&str> = args.split_whitespace().collect();
        assert!(
            words.len() == 2 && words[0] == "--listen",
            "{}: serve {args}: only --listen ADDR is run",
            fence.at()
        );
        let addr = format!("127.0.0.1:{}", free_port());
        let mut child = serve(
            &self.shipped.config,
            self.shipped.dir.path(),
            &["--listen", &addr],
            &addr,
        );
        let _ = child.kill();
        let _ = child.wait();
    }

    fn run_headers(&self, fence: &Fence) {
        assert!(
            !self.last_token_args.is_empty(),
            "{}: no token command before the headers",
            fence.at()
        );
        let token = self.token(&self.last_token_args);
        let headers: BTreeMap<String, String> =
            serde_json::from_str(&fence.body.replace("<the token>", &token))
                .unwrap_or_else(|e| panic!("{}: {e}", fence.at()));
        let mut request = reqwest::blocking::Client::new()
            .post(format!("{}/graphql", self.shipped.base))
            .json(&json!({"query": "{ searchPeople(name: \"a\", first: 1) { totalCount } }"}));
        for (k, v) in &headers {
            request = request.header(k, v);
        }
        let r: Value = request.send().unwrap().json().unwrap();
        assert!(r.get("errors").is_none(), "{}: {r}", fence.at());
        assert!(r["data"]["searchPeople"]["totalCount"].as_u64().unwrap() > 0);
    }

    fn check_config_fragment(&self, fence: &Fence) {
        let text = std::fs::read_to_string(&self.shipped.config).unwrap();
        let path = self.shipped.config.with_file_name("fragment.toml");
        std::fs::write(&path, merge_toml(&text, &fence.body)).unwrap();
        let out = Command::new(escr_bin())
            .arg("--config")
            .arg(&path)
            .arg("check-config")
            .current_dir(self.shipped.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            fence.at(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_readme_example_runs_on_the_demo() {
    let mut estate = Estate::start();
    let mut ran = BTreeMap::<String, usize>::new();
    for (file, name) in [
        ("README.md", "README.md"),
        ("config/README.md", "config/README.md"),
    ] {
        for fence in fences(&demo::repo().join(file), name) {
            match (fence.lang.as_str(), fence.attrs.first()) {
                ("graphql", _) => estate.run_graphql(&fence),
                ("sh", None) => estate.run_sh(&fence),
                ("json", _) if fence.has("headers") => estate.run_headers(&fence),
                ("toml", _) if fence.has("config") => estate.check_config_fragment(&fence),
                _ => panic!(
                    "{}: a ```{} fence this test does not know how to run",
                    fence.at(),
                    fence.lang
                ),
            }
            *ran.entry(fence.lang.clone()).or_default() += 1;
        }
    }
    // Every kind the README has, so a parser that found nothing cannot pass.
    for lang in ["graphql", "sh", "json"] {
        assert!(ran.get(lang).copied().unwrap_or(0) > 0, "{ran:?}");
    }
}

#[test]
fn fences_and_operations_are_read_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.md");
    std::fs::write(
        &path,
        "text\n```graphql role=analyst save=id=a.b\n{ a(x: \"}\") { b } }\n# }\nquery($id: ID!, $n: Int) { c }\n```\n```sh\necho\n```\n",
    )
    .unwrap();
    let f = fences(&path, "x.md");
    assert_eq!(f.len(), 2);
    assert_eq!(f[0].line, 2);
    assert_eq!(f[0].attr("role"), Some("analyst"));
    assert_eq!(f[0].attr("save"), Some("id=a.b"));
    let ops = operations(&f[0].body);
    assert_eq!(ops.len(), 2, "{ops:?}");
    assert_eq!(ops[0], "{ a(x: \"}\") { b } }");
    assert_eq!(declared_variables(&ops[1]), ["id", "n"]);
    assert_eq!(f[1].lang, "sh");
}

/// The commands the prose names in inline code (`` `escr index` ``, `` `cargo run
/// --release --example bench_reports` ``, `` `scripts/bench-peers.sh` ``), outside the
/// fences, with their file and line. Fences run above; these are references a reader
/// copies, so each must name a command, flag, example, package or script that exists.
fn prose_commands(path: &Path, name: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    let mut in_fence = false;
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        // Odd pieces between backticks are inline code.
        for span in line.split('`').skip(1).step_by(2) {
            let span = span.trim();
            if ["escr ", "cargo run", "scripts/", "examples/"]
                .iter()
                .any(|p| span.starts_with(p))
                && span.contains([' ', '.'])
            {
                out.push((format!("{name}:{}", i + 1), span.to_string()));
            }
        }
    }
    out
}

/// `escr ARGS`: the words before the first flag (the subcommand and its positional
/// values; placeholders such as `...` and `<file>` dropped) must parse with `--help`,
/// and every `--flag` named must be in that help, so a renamed subcommand or flag
/// fails here. (Flags are checked by name: the prose often names one without a value.)
fn check_escr_args(at: &str, args: &[&str]) {
    let words: Vec<&str> = args
        .iter()
        .copied()
        .filter(|a| *a != "..." && !a.starts_with('<') && !a.starts_with('['))
        .collect();
    // The global `--config FILE` may come first.
    let words = match words.as_slice() {
        ["--config", _, rest @ ..] => rest.to_vec(),
        _ => words,
    };
    let path: Vec<&str> = words
        .iter()
        .copied()
        .take_while(|w| !w.starts_with('-'))
        .collect();
    let out = Command::new(escr_bin())
        .args(&path)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{at}: `escr {}` is not a command escr knows: {}",
        path.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    for flag in words.iter().filter(|w| w.starts_with("--")) {
        let flag = flag.split('=').next().unwrap_or(flag);
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
            "{at}: `escr {}`: no flag {flag} in its help",
            words.join(" ")
        );
    }
}

fn workspace_has_package(name: &str) -> bool {
    let root = demo::repo();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let members: toml::Value = toml::from_str(&manifest).unwrap();
    members["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m.as_str())
        .any(|m| {
            let text = std::fs::read_to_string(root.join(m).join("Cargo.toml")).unwrap();
            let t: toml::Value = toml::from_str(&text).unwrap();
            t["package"]["name"].as_str() == Some(name)
        })
}

fn check_prose_command(at: &str, span: &str) {
    let root = demo::repo();
    let words: Vec<&str> = span.split_whitespace().collect();
    match words.as_slice() {
        ["escr", rest @ ..] => check_escr_args(at, rest),
        ["cargo", "run", rest @ ..] => {
            let (cargo, escr) = match rest.iter().position(|w| *w == "--") {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &[][..]),
            };
            let mut package = None;
            let mut example = None;
            let mut it = cargo.iter();
            while let Some(w) = it.next() {
                match *w {
                    "-p" | "--package" => package = it.next(),
                    "--example" => example = it.next(),
                    "--release" | "-q" | "--quiet" => {}
                    other => panic!("{at}: `{span}`: cargo flag {other} not checked here"),
                }
            }
            if let Some(example) = example {
                let file = root.join("examples").join(format!("{example}.rs"));
                let dir = root.join("examples").join(example).join("main.rs");
                assert!(
                    file.exists() || dir.exists(),
                    "{at}: `{span}`: no example {example}"
                );
            } else if let Some(package) = package {
                assert!(
                    workspace_has_package(package),
                    "{at}: `{span}`: no package {package} in the workspace"
                );
            } else {
                check_escr_args(at, escr);
            }
        }
        [script, ..] => {
            let path = root.join(script);
            assert!(path.is_file(), "{at}: `{span}`: no file {script}");
            if script.ends_with(".sh") {
                let ok = Command::new("bash")
                    .arg("-n")
                    .arg(&path)
                    .status()
                    .unwrap()
                    .success();
                assert!(ok, "{at}: `{span}`: {script} does not parse");
            }
        }
        [] => unreachable!(),
    }
}

#[test]
fn every_command_the_prose_names_exists() {
    let mut checked = 0;
    for file in [
        "README.md",
        "config/README.md",
        "DEPLOYMENT.md",
        "ARCHITECTURE.md",
    ] {
        let path = demo::repo().join(file);
        if !path.exists() {
            continue;
        }
        for (at, span) in prose_commands(&path, file) {
            check_prose_command(&at, &span);
            checked += 1;
        }
    }
    // The README names several; a reader that found none would pass anything.
    assert!(checked > 10, "only {checked} inline commands found");
}

#[test]
fn prose_commands_are_read_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.md");
    std::fs::write(
        &path,
        "Run `escr index` or `cargo run --release --example bench` and `x y`.\n```sh\nescr nothing\n```\n`scripts/a.sh`\n",
    )
    .unwrap();
    let c: Vec<String> = prose_commands(&path, "x.md")
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    assert_eq!(
        c,
        [
            "escr index",
            "cargo run --release --example bench",
            "scripts/a.sh"
        ]
    );
}

#[test]
#[should_panic(expected = "is not a command escr knows")]
fn a_prose_command_escr_does_not_know_fails() {
    check_prose_command("x.md:1", "escr review");
}

#[test]
#[should_panic(expected = "no flag --minuets")]
fn a_prose_flag_escr_does_not_know_fails() {
    check_prose_command("x.md:1", "escr token ... --minuets 30");
}
