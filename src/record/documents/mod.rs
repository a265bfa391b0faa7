//! Document stores: where a source's letters, forms and scans live, and reading them.
//!
//! A vendor's document record names its file as the vendor wrote it: a UNC path
//! (`\\docs\ct\2.pdf`), a drive path (`H:\LETTERS\D1.DOC`), an EDRMS key. A store maps
//! configured prefixes of those names onto a folder ([`files`], a mounted share) or an
//! HTTP(S)/WebDAV document service ([`http`], an EDRMS), and refuses every name that
//! would leave it: `..` and `.` segments (also percent-encoded, and the dots-and-spaces
//! forms Windows reads as `..`), absolute, drive and UNC paths that no prefix maps,
//! `:` (drives, alternate data streams, URL schemes), and control characters. The
//! file store opens beneath its root only (no symlink leads out). Nothing here decides
//! who may read a document: the API asks the consent hook first.

pub mod files;
pub mod http;
pub mod media;

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::stream::BoxStream;
use serde::Deserialize;

/// A source's `documents` section: one store, a folder (`root`) or a service (`url`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentStoreConfig {
    /// The folder the vendor's paths map onto (a mounted share); nothing outside it is
    /// ever read.
    pub root: Option<PathBuf>,
    /// An HTTP(S)/WebDAV document service's base URL (https, or http on loopback).
    pub url: Option<String>,
    /// Vendor path prefix -> the path under `root` or `url` it stands for (`""` for the
    /// top). Matched without regard to ASCII case and with `/` and `\` alike; the
    /// longest match wins. Without prefixes the vendor's paths are relative paths.
    #[serde(default)]
    pub prefixes: BTreeMap<String, String>,
    /// Largest file served, in bytes.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Service: time limit to connect and between two reads, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Service: a bearer token, from this environment variable (wins) or file.
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    /// Service: basic authentication (WebDAV), the password from the environment
    /// variable (wins) or the file.
    pub user: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
}

fn default_max_bytes() -> u64 {
    100 * 1024 * 1024
}
fn default_timeout_ms() -> u64 {
    10_000
}

impl DocumentStoreConfig {
    /// Whether the section makes sense; the reason otherwise (the config adds the file
    /// and line).
    pub fn validate(&self) -> Result<(), String> {
        match (&self.root, &self.url) {
            (Some(_), Some(_)) => return Err("give `root` or `url`, not both".into()),
            (None, None) => return Err("give `root` (a folder) or `url` (a service)".into()),
            (Some(_), None) => {
                let service_only = [
                    ("token_env", self.token_env.is_some()),
                    ("token_file", self.token_file.is_some()),
                    ("user", self.user.is_some()),
                    ("password_env", self.password_env.is_some()),
                    ("password_file", self.password_file.is_some()),
                ];
                if let Some((key, _)) = service_only.iter().find(|(_, set)| *set) {
                    return Err(format!("`{key}` is for a `url` store"));
                }
            }
            (None, Some(url)) => http::check_url(url)?,
        }
        if self.max_bytes == 0 {
            return Err("`max_bytes` must be above 0".into());
        }
        if self.timeout_ms == 0 {
            return Err("`timeout_ms` must be above 0".into());
        }
        if (self.token_env.is_some() || self.token_file.is_some()) && self.user.is_some() {
            return Err("give a bearer token or a `user`, not both".into());
        }
        if (self.password_env.is_some() || self.password_file.is_some()) && self.user.is_none() {
            return Err("a password needs a `user`".into());
        }
        for (prefix, under) in &self.prefixes {
            if prefix.trim().is_empty() {
                return Err("a prefix may not be empty".into());
            }
            if !under.is_empty() {
                segments(under).map_err(|why| format!("prefix `{prefix}`: `{under}` {why}"))?;
            }
        }
        Ok(())
    }

    /// Make relative paths relative to the config file's folder.
    pub fn resolve_paths(&mut self, base: &Path) {
        for p in [
            &mut self.root,
            &mut self.token_file,
            &mut self.password_file,
        ]
        .into_iter()
        .flatten()
        {
            *p = base.join(&*p);
        }
    }
}

/// What reading a document's content can end in, besides its bytes. Messages name no
/// path: the caller learns what went wrong, the operator's log says which record.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ContentError {
    #[error("its file path is outside the document store ({0})")]
    Outside(&'static str),
    #[error("its file is missing from the document store")]
    Missing,
    #[error("it is {size} bytes, over the store's limit of {limit}")]
    TooLarge { size: u64, limit: u64 },
    #[error("the range asked for is outside its {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    #[error("the document store is not answering: {0}")]
    Unavailable(String),
}

/// An opened document: its bytes as a stream (read as they are sent), and what the
/// response headers say about them.
pub struct Content {
    /// The whole file's size, where the store knows it.
    pub size: Option<u64>,
    /// The part served, when a satisfiable single range was asked for.
    pub range: Option<RangeInclusive<u64>>,
    pub media_type: String,
    /// The file-name extension a download should carry (for the media type).
    pub extension: String,
    pub body: BoxStream<'static, std::io::Result<Bytes>>,
}

impl Content {
    /// Bytes in the body, where known.
    pub fn length(&self) -> Option<u64> {
        match &self.range {
            Some(r) => Some(r.end() - r.start() + 1),
            None => self.size,
        }
    }
}

/// What is asked of a store: which file, and how much of it.
pub struct Ask<'a> {
    /// The path under the store (checked segments).
    pub path: &'a [String],
    /// Its last segment, for the media type and the download's extension.
    pub name: &'a str,
    /// The media type the vendor's record declares.
    pub media_hint: Option<&'a str>,
    /// The caller's `Range` header value.
    pub range: Option<&'a str>,
    pub max_bytes: u64,
}

/// One configured store with its prefix rewriting and size limit.
pub struct DocumentStore {
    kind: Kind,
    /// (normalised vendor prefix, the path segments it stands for), longest first.
    prefixes: Vec<(String, Vec<String>)>,
    max_bytes: u64,
}

enum Kind {
    Files(files::FileStore),
    Http(http::HttpStore),
    /// A store that could not be set up (a missing credential): every document of it is
    /// unavailable, the rest of the gateway serves.
    Down(String),
}

impl DocumentStore {
    /// Never fails: a store that cannot be set up stands in as one that is down.
    pub fn build(config: &DocumentStoreConfig) -> DocumentStore {
        let kind = match (&config.root, &config.url) {
            (Some(root), _) => Kind::Files(files::FileStore::new(root.clone())),
            (None, Some(_)) => match http::HttpStore::new(config) {
                Ok(store) => Kind::Http(store),
                Err(why) => Kind::Down(why),
            },
            (None, None) => Kind::Down("no `root` or `url` configured".into()),
        };
        let mut prefixes: Vec<(String, Vec<String>)> = config
            .prefixes
            .iter()
            .map(|(prefix, under)| {
                let under = if under.is_empty() {
                    Vec::new()
                } else {
                    segments(under).unwrap_or_default()
                };
                (normalise(prefix.trim()), under)
            })
            .collect();
        prefixes.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        DocumentStore {
            kind,
            prefixes,
            max_bytes: config.max_bytes,
        }
    }

    /// Why the store is down from the start, if it is.
    pub fn down(&self) -> Option<&str> {
        match &self.kind {
            Kind::Down(why) => Some(why),
            _ => None,
        }
    }

    /// The path segments under the store that a vendor's link names, or why it names
    /// none the store may read.
    pub fn locate(&self, link: &str) -> Result<Vec<String>, ContentError> {
        // Fixed-width vendor columns pad with spaces; Windows ignores them too.
        let link = link.trim();
        if link.is_empty() {
            return Err(ContentError::Outside("an empty path"));
        }
        if self.prefixes.is_empty() {
            return segments(link).map_err(ContentError::Outside);
        }
        let norm = normalise(link);
        for (prefix, under) in &self.prefixes {
            let Some(head) = norm.as_bytes().get(..prefix.len()) else {
                continue;
            };
            if !head.eq_ignore_ascii_case(prefix.as_bytes()) {
                continue;
            }
            let rest = &link[prefix.len()..];
            // `\\docs\ct` must not match `\\docs\ctx\...`: a prefix ends at a separator.
            let rest = if prefix.ends_with('\\') {
                rest
            } else if let Some(r) = rest.strip_prefix(['\\', '/']) {
                r
            } else {
                continue;
            };
            let mut path = under.clone();
            path.extend(segments(rest).map_err(ContentError::Outside)?);
            return Ok(path);
        }
        Err(ContentError::Outside("no configured prefix matches"))
    }

    /// Open the document a vendor's link names: the whole of it, or the one range a
    /// `Range` header value asks for (ignored when it is not a single valid range).
    /// `media_hint` is the media type the vendor's record declares, if any.
    pub async fn open(
        &self,
        link: &str,
        media_hint: Option<&str>,
        range: Option<&str>,
    ) -> Result<Content, ContentError> {
        let path = self.locate(link)?;
        let ask = Ask {
            name: path.last().map_or("", String::as_str),
            path: &path,
            media_hint,
            range,
            max_bytes: self.max_bytes,
        };
        match &self.kind {
            Kind::Files(store) => store.open(&ask).await,
            Kind::Http(store) => store.open(&ask).await,
            Kind::Down(why) => Err(ContentError::Unavailable(why.clone())),
        }
    }
}

/// `/` and `\` alike, for matching prefixes.
fn normalise(path: &str) -> String {
    path.replace('/', "\\")
}

/// A relative path's segments, split at `/` and `\`, each one a plain name; or why the
/// path is refused.
fn segments(path: &str) -> Result<Vec<String>, &'static str> {
    if path.starts_with(['/', '\\']) {
        return Err("an absolute or UNC path");
    }
    path.split(['/', '\\']).map(segment).collect()
}

fn segment(raw: &str) -> Result<String, &'static str> {
    if raw.is_empty() {
        return Err("an empty path segment");
    }
    // Decode repeatedly: a service that decodes once more must not see `..` either.
    let mut forms = vec![raw.to_string()];
    for _ in 0..3 {
        let last = forms.last().expect("one form at least");
        let decoded = percent_encoding::percent_decode_str(last)
            .decode_utf8_lossy()
            .into_owned();
        if &decoded == last {
            break;
        }
        forms.push(decoded);
    }
    for form in &forms {
        // `.`, `..`, and `... ` (Windows drops trailing dots and spaces).
        if form.trim_end_matches([' ', '.']).is_empty() {
            return Err("a `.` or `..` segment");
        }
        if form.contains(['/', '\\']) && form != raw {
            return Err("an encoded separator");
        }
        if form.contains(':') {
            return Err("a drive, stream or scheme (`:`)");
        }
        if form.chars().any(char::is_control) {
            return Err("a control character");
        }
    }
    Ok(raw.to_string())
}

/// The one range a `Range` header value asks for within `size` bytes: `None` to serve
/// the whole (no header, one that does not parse, or several ranges: a server may
/// ignore a Range header, and multipart answers are not worth their complexity here).
pub fn wanted_range(
    range: Option<&str>,
    size: u64,
) -> Result<Option<RangeInclusive<u64>>, ContentError> {
    let Some(parsed) = range.and_then(|r| http_range_header::parse_range_header(r).ok()) else {
        return Ok(None);
    };
    if parsed.len() != 1 {
        return Ok(None);
    }
    match parsed.validate(size) {
        Ok(ranges) => Ok(ranges.into_iter().next()),
        Err(http_range_header::RangeUnsatisfiableError::Unsatisfiable) => {
            Err(ContentError::RangeNotSatisfiable { size })
        }
        Err(_) => Ok(None),
    }
}

/// The configured stores by source name.
#[derive(Default)]
pub struct DocumentStores {
    stores: BTreeMap<String, DocumentStore>,
}

impl DocumentStores {
    pub fn new(stores: impl IntoIterator<Item = (String, DocumentStore)>) -> DocumentStores {
        DocumentStores {
            stores: stores.into_iter().collect(),
        }
    }

    pub fn of(&self, source: &str) -> Option<&DocumentStore> {
        self.stores.get(source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(prefixes: &[(&str, &str)]) -> DocumentStore {
        DocumentStore::build(&DocumentStoreConfig {
            root: Some(PathBuf::from("/nonexistent")),
            url: None,
            prefixes: prefixes
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            max_bytes: 10,
            timeout_ms: 10,
            token_env: None,
            token_file: None,
            user: None,
            password_env: None,
            password_file: None,
        })
    }

    #[test]
    fn vendor_paths_map_onto_the_store_and_nothing_leaves_it() {
        let s = store(&[
            (r"\\docs\ct\", ""),
            (r"\\docs\ct\scans", "scans/2024"),
            ("H:", "h"),
        ]);
        let ok = |link: &str| s.locate(link).map(|p| p.join("/"));
        assert_eq!(ok(r"\\docs\ct\2.pdf").unwrap(), "2.pdf");
        assert_eq!(ok(r"\\DOCS\CT\sub\2.pdf").unwrap(), "sub/2.pdf");
        assert_eq!(ok("//docs/ct/sub/2.pdf").unwrap(), "sub/2.pdf");
        assert_eq!(
            ok(r"\\docs\ct\scans\a b.tif  ").unwrap(),
            "scans/2024/a b.tif"
        );
        assert_eq!(ok(r"H:\LETTERS\D1.DOC").unwrap(), "h/LETTERS/D1.DOC");
        for bad in [
            r"\\docs\ct\..\..\etc\passwd",
            r"\\docs\ct\sub\..\2.pdf",
            r"\\docs\ct\%2e%2e\secret.txt",
            r"\\docs\ct\%2E%2e%2fsecret.txt",
            r"\\docs\ct\%252e%252e\secret.txt",
            r"\\docs\ct\.. \secret.txt",
            r"\\docs\ct\...\secret.txt",
            r"\\docs\ct\\\evil\share\x.pdf",
            r"\\docs\ct\C:\Windows\win.ini",
            r"\\docs\ct\2.pdf:hidden",
            r"\\docs\ctx\2.pdf",
            r"\\other\share\2.pdf",
            "/etc/passwd",
            r"C:\Windows\win.ini",
            "",
            "   ",
            "\\\\docs\\ct\\a\u{0}b",
        ] {
            assert!(s.locate(bad).is_err(), "{bad:?} -> {:?}", s.locate(bad));
        }
        let plain = store(&[]);
        assert_eq!(
            plain.locate("2024/letter 1.pdf").unwrap(),
            ["2024", "letter 1.pdf"]
        );
        for bad in [
            "/etc/passwd",
            r"\\docs\ct\1.pdf",
            "../x",
            "C:x",
            "https://evil/x",
        ] {
            assert!(plain.locate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn one_range_or_the_whole() {
        assert_eq!(wanted_range(None, 100), Ok(None));
        assert_eq!(wanted_range(Some("bytes=0-9"), 100), Ok(Some(0..=9)));
        assert_eq!(wanted_range(Some("bytes=90-"), 100), Ok(Some(90..=99)));
        assert_eq!(wanted_range(Some("bytes=-10"), 100), Ok(Some(90..=99)));
        assert_eq!(wanted_range(Some("bytes=50-500"), 100), Ok(Some(50..=99)));
        assert_eq!(wanted_range(Some("bytes=0-1,5-6"), 100), Ok(None));
        assert_eq!(wanted_range(Some("items=0-1"), 100), Ok(None));
        assert_eq!(
            wanted_range(Some("bytes=200-300"), 100),
            Err(ContentError::RangeNotSatisfiable { size: 100 })
        );
    }

    #[test]
    fn a_section_needs_one_store_and_sound_keys() {
        let base = DocumentStoreConfig {
            root: None,
            url: None,
            prefixes: BTreeMap::new(),
            max_bytes: 1,
            timeout_ms: 1,
            token_env: None,
            token_file: None,
            user: None,
            password_env: None,
            password_file: None,
        };
        let check = |edit: &dyn Fn(&mut DocumentStoreConfig)| {
            let mut c = base.clone();
            edit(&mut c);
            c.validate()
        };
        assert!(check(&|_| {}).unwrap_err().contains("root"));
        assert!(check(&|c| c.root = Some("d".into())).is_ok());
        assert!(check(&|c| {
            c.root = Some("d".into());
            c.url = Some("https://x/".into());
        })
        .unwrap_err()
        .contains("not both"));
        assert!(check(&|c| c.url = Some("http://edrms.example/".into()))
            .unwrap_err()
            .contains("https"));
        assert!(check(&|c| c.url = Some("http://127.0.0.1:9/dav/".into())).is_ok());
        assert!(check(&|c| {
            c.root = Some("d".into());
            c.token_env = Some("T".into());
        })
        .unwrap_err()
        .contains("`url` store"));
        assert!(check(&|c| {
            c.root = Some("d".into());
            c.prefixes.insert(r"\\a\".into(), "../up".into());
        })
        .unwrap_err()
        .contains("`..`"));
        assert!(check(&|c| {
            c.root = Some("d".into());
            c.max_bytes = 0;
        })
        .is_err());
    }
}
