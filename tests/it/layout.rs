//! The layering of `src/` (ARCHITECTURE.md, "Subsystems"): each subsystem uses only
//! those below it, so no import cycle can form between them. Read from the sources as
//! text: a `crate::<subsystem>` path outside test code is a use.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Subsystem -> the subsystems (and top-level modules) it may use, outside tests.
const ALLOWED: &[(&str, &[&str])] = &[
    ("demo", &[]),
    ("state", &[]),
    ("record", &[]),
    ("identity", &["record", "state"]),
    ("consent", &["identity", "record", "state"]),
    ("reports", &["consent", "identity", "record", "state"]),
    (
        "api",
        &[
            "config", "reports", "consent", "identity", "record", "state", "demo",
        ],
    ),
    (
        "config",
        &["reports", "consent", "identity", "record", "state"],
    ),
    (
        "cli",
        &[
            "config", "api", "reports", "consent", "identity", "record", "state", "demo",
        ],
    ),
    ("main", &[]),
    ("lib", &[]),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The file's code before its test module, without comments.
fn code_outside_tests(text: &str) -> String {
    let end = text.find("#[cfg(test)]").unwrap_or(text.len());
    text[..end]
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn subsystem_uses() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut uses: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).expect("under src");
        let mut parts = rel.components();
        let first = parts.next().expect("a component");
        let me = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        let text = std::fs::read_to_string(&file).expect("readable source");
        let code = code_outside_tests(&text);
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name != me {
                uses.entry(me.clone())
                    .or_default()
                    .entry(name)
                    .or_default()
                    .insert(rel.display().to_string());
            }
        }
    }
    uses
}

#[test]
fn no_subsystem_uses_one_above_it() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = Vec::new();
    for (me, used) in subsystem_uses() {
        let Some(may) = allowed.get(me.as_str()) else {
            wrong.push(format!(
                "`src/{me}` is not a known subsystem: add it to ALLOWED"
            ));
            continue;
        };
        for (other, files) in used {
            if !may.contains(&other.as_str()) {
                wrong.push(format!("{me} uses {other} in {files:?}"));
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn the_shared_vocabulary_imports_nothing_of_the_crate() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/consent/context.rs");
    let code = code_outside_tests(&std::fs::read_to_string(path).expect("readable"));
    assert!(
        !code.contains("crate::") && !code.contains("super::"),
        "consent/context.rs must import nothing of the crate"
    );
}

/// The test itself can fail: a use from below to above is reported.
#[test]
fn a_use_from_below_is_found() {
    let code =
        code_outside_tests("use crate::api::Gateway; // crate::demo\n#[cfg(test)]\nuse crate::x;");
    assert!(code.contains("crate::api"));
    assert!(!code.contains("crate::demo"));
    assert!(!code.contains("crate::x"));
}
