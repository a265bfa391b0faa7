//! An HTTP(S) or WebDAV document service (an EDRMS): the document is a `GET` of the
//! base URL with the vendor's path under it, each segment percent-encoded (so a `%2e`
//! in a vendor's path reaches the service as `%252e`, never as a dot), with the
//! caller's range passed on. Redirects are not followed (they could lead anywhere);
//! the body is streamed through as it arrives.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use reqwest::StatusCode;

use super::{media, Ask, Content, ContentError, DocumentStoreConfig};

pub struct HttpStore {
    client: reqwest::Client,
    base: reqwest::Url,
    authorization: Option<String>,
}

/// A URL the gateway may send credentials to and read documents from: https, or
/// plain http to a loopback address (tests, a sidecar).
pub fn check_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("`url`: {e}"))?;
    let loopback = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    match parsed.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => return Err("`url` must be https (plain http only on loopback)".into()),
    }
    if parsed.cannot_be_a_base() || !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(
            "`url` must be a base URL without credentials (use `user`, `token_env`)".into(),
        );
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("`url` may not have a query or fragment".into());
    }
    Ok(())
}

/// A secret from an environment variable (wins) or a file, trimmed.
fn secret(
    env: Option<&str>,
    file: Option<&std::path::Path>,
    what: &str,
) -> Result<Option<String>, String> {
    if let Some(v) = env.and_then(|var| std::env::var(var).ok()) {
        return Ok(Some(v.trim().to_string()));
    }
    match file {
        Some(f) => std::fs::read_to_string(f)
            .map(|s| Some(s.trim().to_string()))
            .map_err(|e| format!("{what}: cannot read {}: {}", f.display(), e.kind())),
        None if env.is_some() => Err(format!("{what}: the environment variable is not set")),
        None => Ok(None),
    }
}

impl HttpStore {
    /// Set up the client and read the credentials; why not, otherwise.
    pub fn new(config: &DocumentStoreConfig) -> Result<HttpStore, String> {
        let url = config.url.as_deref().unwrap_or_default();
        check_url(url)?;
        let mut base = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let token = secret(
            config.token_env.as_deref(),
            config.token_file.as_deref(),
            "the store's token",
        )?;
        let authorization = match (&config.user, token) {
            (Some(user), _) => {
                let password = secret(
                    config.password_env.as_deref(),
                    config.password_file.as_deref(),
                    "the store's password",
                )?
                .unwrap_or_default();
                use base64::Engine;
                let pair =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                Some(format!("Basic {pair}"))
            }
            (None, Some(token)) => Some(format!("Bearer {token}")),
            (None, None) => None,
        };
        let timeout = Duration::from_millis(config.timeout_ms);
        let client = reqwest::Client::builder()
            .connect_timeout(timeout)
            .read_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("the HTTP client: {e}"))?;
        Ok(HttpStore {
            client,
            base,
            authorization,
        })
    }

    pub async fn open(&self, ask: &Ask<'_>) -> Result<Content, ContentError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|_| ContentError::Unavailable("its URL cannot take a path".into()))?
            .pop_if_empty()
            .extend(ask.path);
        let mut request = self.client.get(url);
        if let Some(auth) = &self.authorization {
            request = request.header(AUTHORIZATION, auth);
        }
        // Only a single, well-formed range goes on (what the file store would honour).
        let forwarded = ask
            .range
            .filter(|r| http_range_header::parse_range_header(r).is_ok_and(|p| p.len() == 1));
        if let Some(r) = forwarded {
            request = request.header(RANGE, r);
        }
        let response = request.send().await.map_err(|e| {
            ContentError::Unavailable(if e.is_timeout() {
                "no answer in time".into()
            } else if e.is_connect() {
                "cannot connect".into()
            } else {
                "the request failed".into()
            })
        })?;
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(str::to_string)
        };
        let content_range = header(CONTENT_RANGE);
        let declared = header(CONTENT_TYPE);
        let (size, range) = match response.status() {
            StatusCode::OK => (
                header(CONTENT_LENGTH).and_then(|l| l.parse::<u64>().ok()),
                None,
            ),
            StatusCode::PARTIAL_CONTENT if forwarded.is_some() => {
                let (r, total) = content_range
                    .as_deref()
                    .and_then(parse_content_range)
                    .ok_or_else(|| {
                        ContentError::Unavailable(
                            "it answered a range without Content-Range".into(),
                        )
                    })?;
                (total, Some(r))
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                let size = content_range
                    .as_deref()
                    .and_then(|c| c.strip_prefix("bytes */")?.parse().ok())
                    .unwrap_or(0);
                return Err(ContentError::RangeNotSatisfiable { size });
            }
            StatusCode::NOT_FOUND | StatusCode::GONE => return Err(ContentError::Missing),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(ContentError::Unavailable(
                    "it refused the gateway's credentials".into(),
                ))
            }
            other => {
                return Err(ContentError::Unavailable(format!(
                    "it answered {}",
                    other.as_u16()
                )))
            }
        };
        if let Some(size) = size.filter(|s| *s > ask.max_bytes) {
            return Err(ContentError::TooLarge {
                size,
                limit: ask.max_bytes,
            });
        }
        let mut stream = response
            .bytes_stream()
            .map_err(|e| std::io::Error::other(e.to_string()))
            .boxed();
        // The whole file: its first bytes decide its type (read before any is sent).
        let mut head = Vec::new();
        if range.is_none() {
            while head.len() < media::HEAD_BYTES {
                match stream.next().await {
                    Some(Ok(chunk)) => head.extend_from_slice(&chunk),
                    Some(Err(_)) => {
                        return Err(ContentError::Unavailable("the transfer broke off".into()))
                    }
                    None => break,
                }
            }
        }
        let (media_type, extension) = media::detect(
            range.is_none().then_some(&head[..]),
            &[declared.as_deref(), ask.media_hint],
            ask.name,
        );
        let first = futures::stream::iter((!head.is_empty()).then(|| Ok(bytes::Bytes::from(head))));
        let body = first.chain(within_limit(stream, ask.max_bytes)).boxed();
        Ok(Content {
            size,
            range,
            media_type,
            extension,
            body,
        })
    }
}

/// `bytes a-b/total` (total may be `*`): the range and the total where given.
fn parse_content_range(value: &str) -> Option<(std::ops::RangeInclusive<u64>, Option<u64>)> {
    let (span, total) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (a, b) = span.split_once('-')?;
    let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a <= b).then_some((a..=b, total.trim().parse().ok()))
}

/// A body of unknown length ends with an error past `max` bytes (the size limit holds
/// when the service does not say the size first).
fn within_limit(
    stream: futures::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>,
    max: u64,
) -> futures::stream::BoxStream<'static, std::io::Result<bytes::Bytes>> {
    stream
        .scan(Some(0u64), move |sent, chunk| {
            // After an error the stream ends.
            let item = match (*sent, chunk) {
                (None, _) => None,
                (Some(n), Ok(c)) if n + c.len() as u64 <= max => {
                    *sent = Some(n + c.len() as u64);
                    Some(Ok(c))
                }
                (Some(_), Ok(_)) => {
                    *sent = None;
                    Some(Err(std::io::Error::other(
                        "over the document store's size limit",
                    )))
                }
                (Some(_), Err(e)) => {
                    *sent = None;
                    Some(Err(e))
                }
            };
            futures::future::ready(item)
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http() {
        assert!(check_url("https://edrms.council.example/dav/").is_ok());
        assert!(check_url("http://127.0.0.1:8080/dav/").is_ok());
        assert!(check_url("http://[::1]:8080/").is_ok());
        assert!(check_url("http://localhost/").is_ok());
        for bad in [
            "http://edrms.council.example/",
            "http://localhost.attacker.example/",
            "http://127.0.0.1.nip.io/",
            "ftp://127.0.0.1/",
            "https://user:pw@edrms.example/",
            "https://edrms.example/?a=1",
            "not a url",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("bytes 0-9/100"),
            Some((0..=9, Some(100)))
        );
        assert_eq!(parse_content_range("bytes 5-5/*"), Some((5..=5, None)));
        assert_eq!(parse_content_range("bytes 9-0/100"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }
}
