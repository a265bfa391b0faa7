//! Shared by the benchmarks: a gateway config over demo databases generated into a
//! folder.

use std::path::{Path, PathBuf};

/// Write `escr.toml` into `work`: `head` (any top-level keys and sections), then the
/// three demo vendors' SQLite files in `work` as sources, each connector section with
/// `sqlite_options` added (`query_timeout_ms = 600000`, or nothing). Its path.
pub fn demo_config(work: &Path, head: &str, sqlite_options: &str) -> std::io::Result<PathBuf> {
    demo_config_in(work, work, head, sqlite_options)
}

/// As [`demo_config`], the file written into `dir` (a replica's folder) rather than
/// beside the databases.
pub fn demo_config_in(
    work: &Path,
    dir: &Path,
    head: &str,
    sqlite_options: &str,
) -> std::io::Result<PathBuf> {
    let vendors = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/vendors");
    let options = if sqlite_options.is_empty() {
        String::new()
    } else {
        format!(", {sqlite_options}")
    };
    let mut config = format!("{head}\n");
    for s in ["casetrak", "opencare", "ssis"] {
        config.push_str(&format!(
            "[[sources]]\nname = \"{s}\"\nprofile = {:?}\nsqlite = {{ path = {:?}{options} }}\n",
            vendors.join(format!("{s}.toml")),
            work.join(format!("{s}.db"))
        ));
    }
    let path = dir.join("escr.toml");
    std::fs::write(&path, config)?;
    Ok(path)
}
