//! `escr check-config [--connect]`: everything that would fail later, found now. Each
//! finding names the file, the line of the key that led to it, and the reason; the
//! exit status is non-zero when there is any.

use std::path::{Path, PathBuf};

use crate::config::{key_line, LoadedConfig};
use crate::consent::policy::PolicyConfig;
use anyhow::bail;

struct Findings {
    lines: Vec<String>,
}

impl Findings {
    fn add(&mut self, file: &Path, line: usize, reason: impl AsRef<str>) {
        self.lines
            .push(format!("{}:{line}: {}", file.display(), reason.as_ref()));
    }
}

fn text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A file a key names must be there (`generated`: it will be made on first run).
fn file_exists(f: &mut Findings, config: &Path, line: usize, key: &str, file: &Path) {
    if !file.exists() {
        f.add(
            config,
            line,
            format!("`{key}` names {}, which does not exist", file.display()),
        );
    }
}

fn env_set(f: &mut Findings, config: &Path, line: usize, key: &str, var: &str) {
    if std::env::var_os(var).is_none() {
        f.add(
            config,
            line,
            format!("`{key}` names the environment variable {var}, which is not set"),
        );
    }
}

pub async fn check_config(path: &Path, connect: bool) -> anyhow::Result<()> {
    // Errors that stop reading (syntax, unknown keys, bad profiles) come first, alone.
    let config = super::load_config(path)?;
    let mut f = Findings { lines: Vec::new() };
    let main_text = text(path);
    // Folders `serve` generates on first run (the demo): what is to be made there is
    // not missing.
    let generated_dirs: Vec<PathBuf> = match &config.gateway.demo {
        Some(d) if d.generate_if_missing => d
            .dir
            .iter()
            .cloned()
            .chain(d.other_councils.iter().map(|c| c.dir.clone()))
            .collect(),
        _ => Vec::new(),
    };

    match &config.gateway.policy {
        None => f.add(
            path,
            1,
            "no `policy`: `escr serve` refuses to start without one (see config/README.md)",
        ),
        Some(policy_path) => match PolicyConfig::load(policy_path) {
            Err(e) => f.lines.push(e.to_string()),
            Ok(policy) => check_policy(&mut f, policy_path, &policy, &generated_dirs),
        },
    }

    let generated = config
        .gateway
        .demo
        .as_ref()
        .is_some_and(|d| d.generate_if_missing && d.dir.is_some());
    for source in &config.gateway.sources {
        let line = escr_connector::profile::line_of(&main_text, source.span().start);
        let s = source.get_ref();
        let key = |k: &str| format!("sources[{}].{k}", s.name);
        let engine = s.engine().unwrap_or("connector");
        if let Some(file) = s.local_file() {
            if !file.exists() && !generated {
                f.add(
                    path,
                    line,
                    format!(
                        "`{}` names {}, which does not exist",
                        key(&format!("{engine}.path")),
                        file.display()
                    ),
                );
            }
        }
        let secrets = s
            .connector
            .as_ref()
            .map(|c| c.settings.secrets())
            .unwrap_or_default();
        for secret in secrets {
            if let Some(var) = secret.env {
                env_set(
                    &mut f,
                    path,
                    line,
                    &key(&format!("{engine}.{}_env", secret.key)),
                    var,
                );
            }
            if let Some(file) = secret.file {
                file_exists(
                    &mut f,
                    path,
                    line,
                    &key(&format!("{engine}.{}_file", secret.key)),
                    file,
                );
            }
        }
    }

    if let Some(pg) = config
        .gateway
        .state
        .postgres
        .as_ref()
        .filter(|_| config.gateway.state.backend == crate::state::Backend::Postgres)
    {
        let from_env = pg
            .url_env
            .as_ref()
            .is_some_and(|v| std::env::var_os(v).is_some());
        match (&pg.url_env, &pg.url_file) {
            (Some(var), None) => env_set(
                &mut f,
                path,
                key_line(&main_text, "state.postgres.url_env"),
                "state.postgres.url_env",
                var,
            ),
            (_, Some(file)) if !from_env => file_exists(
                &mut f,
                path,
                key_line(&main_text, "state.postgres.url_file"),
                "state.postgres.url_file",
                file,
            ),
            _ => {}
        }
        for reason in config.gateway.replica_keys_missing() {
            f.add(path, key_line(&main_text, "state.backend"), reason);
        }
    }

    if let Some(reports_path) = &config.gateway.reports {
        if let Some((reports, _)) = &config.reports {
            let rtext = text(reports_path);
            let from_env = reports
                .pseudonym_key_env
                .as_ref()
                .is_some_and(|v| std::env::var_os(v).is_some());
            if let (false, Some(file)) = (from_env, &reports.pseudonym_key_file) {
                if !file.exists() && !reports.generate_key_if_missing {
                    file_exists(
                        &mut f,
                        reports_path,
                        key_line(&rtext, "pseudonym_key_file"),
                        "pseudonym_key_file",
                        file,
                    );
                }
            }
        }
    }
    let names: Vec<String> = config
        .gateway
        .sources
        .iter()
        .map(|s| s.get_ref().name.clone())
        .collect();
    if connect {
        if let (crate::state::Backend::Postgres, Some(pg)) =
            (config.gateway.state.backend, &config.gateway.state.postgres)
        {
            check_state(&mut f, path, key_line(&main_text, "state.postgres"), pg).await;
        }
        check_sources(&mut f, config).await;
    }
    if f.lines.is_empty() {
        println!(
            "{}: ok ({} sources: {}){}",
            path.display(),
            names.len(),
            names.join(", "),
            if connect {
                ", every source answered every statement"
            } else {
                ""
            }
        );
        Ok(())
    } else {
        for line in &f.lines {
            println!("{line}");
        }
        bail!(
            "{}: {} problem{} ({} sources: {})",
            path.display(),
            f.lines.len(),
            if f.lines.len() == 1 { "" } else { "s" },
            names.len(),
            names.join(", ")
        )
    }
}

fn check_policy(f: &mut Findings, path: &Path, policy: &PolicyConfig, generated: &[PathBuf]) {
    let ptext = text(path);
    let to_be_made = |file: &Path| generated.iter().any(|d| file.starts_with(d));
    let opt_out_file = policy
        .national_opt_out
        .as_ref()
        .and_then(|o| o.file.as_deref())
        .filter(|file| !to_be_made(file));
    if let Some(file) = opt_out_file {
        file_exists(
            f,
            path,
            key_line(&ptext, "national_opt_out.file"),
            "national_opt_out.file",
            file,
        );
    }
    let a = &policy.auth;
    if let Some(file) = &a.jwks_file {
        file_exists(
            f,
            path,
            key_line(&ptext, "auth.jwks_file"),
            "auth.jwks_file",
            file,
        );
    }
    let env_key = a
        .hs256_key_env
        .as_ref()
        .is_some_and(|v| std::env::var_os(v).is_some());
    if let (false, Some(file)) = (env_key, &a.hs256_key_file) {
        if !file.exists() && !a.generate_key_if_missing {
            file_exists(
                f,
                path,
                key_line(&ptext, "auth.hs256_key_file"),
                "auth.hs256_key_file",
                file,
            );
        }
    }
    if a.hs256_key_file.is_none() && a.jwks_file.is_none() && a.jwks_url.is_none() {
        if let Some(var) = &a.hs256_key_env {
            env_set(
                f,
                path,
                key_line(&ptext, "auth.hs256_key_env"),
                "auth.hs256_key_env",
                var,
            );
        }
    }
}

/// Connect to every source and run each profile statement with no keys.
/// The PostgreSQL state store answers, and its schema is one this binary knows.
async fn check_state(
    f: &mut Findings,
    config: &Path,
    line: usize,
    pg: &crate::state::PostgresConfig,
) {
    let found = async {
        let store = crate::state::PgStore::new(pg)?;
        store.ping().await?;
        store.schema_version().await
    }
    .await;
    let known = crate::state::postgres::known_version();
    match found {
        Ok(found) if found > known => f.add(
            config,
            line,
            format!(
                "[state.postgres]: {}",
                crate::state::StateError::SchemaTooNew { found, known }
            ),
        ),
        Ok(_) => {}
        Err(e) => f.add(config, line, format!("[state.postgres]: {e}")),
    }
}

async fn check_sources(f: &mut Findings, config: LoadedConfig) {
    let main_text = text(&config.path);
    for (source, profile) in config.gateway.sources.iter().zip(config.profiles) {
        let line = escr_connector::profile::line_of(&main_text, source.span().start);
        let s = source.get_ref();
        let Some(section) = s.connector.as_ref() else {
            continue;
        };
        let connector = crate::record::build::connect(&s.name, section.settings.as_ref());
        let source_obj = crate::record::source::Source {
            name: s.name.clone(),
            authority: String::new(),
            profile,
            connector,
            timeout: std::time::Duration::from_millis(config.gateway.loader.source_timeout_ms),
            health: Default::default(),
        };
        if let Err(e) = source_obj.check().await {
            f.add(&config.path, line, format!("source `{}`: {e}", s.name));
            continue;
        }
        let mut ok = 0;
        for (entity, statement, result) in source_obj.check_statements().await {
            match result {
                Ok(()) => ok += 1,
                Err(e) => {
                    let profile_text = text(&s.profile);
                    let at = source_obj
                        .profile
                        .entity(entity)
                        .and_then(|spec| match statement {
                            "by_key" => spec.by_key.as_ref(),
                            "by_person" => spec.by_person.as_ref(),
                            "by_person_between" => spec.by_person_between.as_ref(),
                            "list" => spec.list.as_ref(),
                            _ => spec.changed_since.as_ref(),
                        })
                        .map(|sql| {
                            escr_connector::profile::line_of(&profile_text, sql.span().start)
                        })
                        .unwrap_or(1);
                    f.add(
                        &s.profile,
                        at,
                        format!(
                            "source `{}`, entity `{}`, `{statement}`: {e}{}",
                            s.name,
                            entity.name(),
                            e.detail
                                .as_deref()
                                .map(|d| format!(" ({d})"))
                                .unwrap_or_default()
                        ),
                    );
                }
            }
        }
        println!("source `{}`: connected, {ok} statements ran", s.name);
    }
}
