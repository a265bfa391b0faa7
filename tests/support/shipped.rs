//! The shipped `config/` run as a reader runs it: copied into a temp folder (the demo
//! data goes to `data/` beside it, as its `../data` paths say) and served by the real
//! `escr serve` on a free loopback port; tokens minted by `escr token`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct Shipped {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    /// `http://127.0.0.1:port`
    pub base: String,
    server: Child,
}

impl Drop for Shipped {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

pub fn escr_bin() -> &'static str {
    env!("CARGO_BIN_EXE_escr")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The shipped config with a fragment's keys put in (a table the config has gets the
/// fragment's keys in place of its own; other keys are added).
pub fn merge_toml(config: &str, fragment: &str) -> String {
    let mut config: toml::Table = config.parse().unwrap();
    let fragment: toml::Table = fragment.parse().expect("the fragment is TOML");
    for (key, value) in fragment {
        match (config.get_mut(&key), value) {
            (Some(toml::Value::Table(have)), toml::Value::Table(new)) => have.extend(new),
            (_, value) => {
                config.insert(key, value);
            }
        }
    }
    toml::to_string(&config).unwrap()
}

/// `escr serve` over `config` (more `args`); waits until `/healthz` answers at `addr`.
pub fn serve(config: &Path, cwd: &Path, args: &[&str], addr: &str) -> Child {
    serve_with_env(config, cwd, args, addr, &[])
}

/// As [`serve`], with more environment variables.
pub fn serve_with_env(
    config: &Path,
    cwd: &Path,
    args: &[&str],
    addr: &str,
    env: &[(&str, &str)],
) -> Child {
    let mut child = Command::new(escr_bin())
        .arg("--config")
        .arg(config)
        .arg("serve")
        .args(args)
        .current_dir(cwd)
        .env_remove("ESCR_JWT_KEY")
        .env_remove("ESCR_CONFIG")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        if reqwest::blocking::get(format!("http://{addr}/healthz")).is_ok_and(|r| r.status() == 200)
        {
            return child;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "escr serve {args:?} exited"
        );
        assert!(started.elapsed().as_secs() < 180, "serve did not start");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

impl Shipped {
    /// The shipped config, with `extra` TOML merged into it (`""` for none), served.
    pub fn start(extra: &str) -> Shipped {
        Shipped::start_edited(|config| {
            if !extra.is_empty() {
                *config = merge_toml(config, extra);
            }
        })
    }

    /// The shipped config, its text edited by `edit`, served.
    pub fn start_edited(edit: impl FnOnce(&mut String)) -> Shipped {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(
            &super::demo::repo().join("config"),
            &dir.path().join("config"),
        );
        let config = dir.path().join("config/escr.toml");
        let mut text = std::fs::read_to_string(&config).unwrap();
        edit(&mut text);
        std::fs::write(&config, text).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let server = serve(&config, dir.path(), &["--listen", &addr], &addr);
        Shipped {
            config,
            base: format!("http://{addr}"),
            server,
            dir,
        }
    }

    /// `escr --config <the copy> args...` in the folder.
    pub fn escr(&self, args: &[String]) -> std::process::Output {
        Command::new(escr_bin())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("ESCR_JWT_KEY")
            .output()
            .unwrap()
    }

    /// A token minted as a reader mints it: `escr token args...`.
    pub fn token(&self, args: &[&str]) -> String {
        let mut all = vec!["token".to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        let out = self.escr(&all);
        assert!(
            out.status.success(),
            "escr {all:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// POST a GraphQL query with a token and purpose; the response's JSON.
    pub fn graphql(
        &self,
        token: &str,
        purpose: &str,
        query: &str,
        variables: serde_json::Value,
    ) -> serde_json::Value {
        let response = reqwest::blocking::Client::new()
            .post(format!("{}/graphql", self.base))
            .bearer_auth(token)
            .header("X-Purpose-Of-Use", purpose)
            .json(&serde_json::json!({"query": query, "variables": variables}))
            .send()
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().unwrap()
    }
}
