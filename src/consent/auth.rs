//! Who is asking: JWT bearer tokens, verified by `jsonwebtoken`. HS256 with a local key
//! (the demo, `escr token`); RS256 and ES256 against the identity provider's JWKS
//! (`jsonwebtoken`'s JWK types; a file or URL, cached and re-read when a token names a
//! key id it does not hold: key rotation).
//!
//! The purpose of use comes from a header (or the `purpose` claim) and must be one the
//! caller's role may use. Break-glass comes from a header (or the `break_glass` claim),
//! is allowed only for roles and purposes the policy names, and only with a token whose
//! lifetime is within the policy's break-glass limit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use serde::{Deserialize, Serialize};

use crate::consent::access::AccessContext;
use crate::consent::context::{purpose_from_name, purpose_name};
use crate::consent::policy::PolicyConfig;

/// GraphQL/HTTP error codes of authentication failures.
pub mod codes {
    pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
    pub const PURPOSE_NOT_PERMITTED: &str = "PURPOSE_NOT_PERMITTED";
    pub const BREAK_GLASS_REFUSED: &str = "BREAK_GLASS_REFUSED";
    pub const UNKNOWN_PURPOSE: &str = "UNKNOWN_PURPOSE";
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    #[error("no bearer token: send `Authorization: Bearer <token>`")]
    Missing,
    #[error("the token is malformed: {0}")]
    Malformed(&'static str),
    #[error("the token's algorithm `{0}` is not accepted")]
    Algorithm(String),
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("no key to verify the token (key id {0:?})")]
    UnknownKey(Option<String>),
    #[error("the token has expired or is not yet valid")]
    Expired,
    #[error("the token's issuer or audience is not accepted")]
    WrongIssuer,
    #[error("unknown role `{0}`")]
    UnknownRole(String),
    #[error("no purpose of use: send the purpose header or a `purpose` claim")]
    NoPurpose,
    #[error("unknown purpose of use `{given}`; this role may use: {}", .valid.join(", "))]
    UnknownPurpose { given: String, valid: Vec<String> },
    #[error("role `{role}` may not use purpose `{purpose}`")]
    PurposeNotPermitted { role: String, purpose: String },
    #[error("break-glass refused: {0}")]
    BreakGlass(String),
}

impl AuthError {
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::PurposeNotPermitted { .. } => codes::PURPOSE_NOT_PERMITTED,
            AuthError::BreakGlass(_) => codes::BREAK_GLASS_REFUSED,
            AuthError::UnknownPurpose { .. } => codes::UNKNOWN_PURPOSE,
            _ => codes::UNAUTHENTICATED,
        }
    }
}

/// The claims the gateway reads.
#[derive(Debug, Serialize, Deserialize, Clone, Default)]
pub struct Claims {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// The caller's worker id in the allocation data (defaults to none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<String>,
    /// For the `person` role: who the caller is (gateway person id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<String>,
    pub iat: i64,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// Where the identity provider's keys are published.
enum JwksSource {
    File(PathBuf),
    Url { url: String, refetch: Duration },
}

impl JwksSource {
    fn text(&self) -> Result<String, String> {
        match self {
            JwksSource::File(path) => {
                std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))
            }
            JwksSource::Url { url, .. } => fetch(url),
        }
    }

    /// Least time between two reads: a flood of unknown kids is not a flood of reads.
    fn min_interval(&self) -> Duration {
        match self {
            JwksSource::File(_) => Duration::from_secs(1),
            JwksSource::Url { refetch, .. } => *refetch,
        }
    }

    fn describe(&self) -> String {
        match self {
            JwksSource::File(path) => path.display().to_string(),
            JwksSource::Url { url, .. } => url.clone(),
        }
    }
}

/// GET a JWKS over HTTP(S) with a short timeout. It runs on a thread of its own so it
/// can be called from inside the async runtime (the blocking client may not be).
fn fetch(url: &str) -> Result<String, String> {
    let url = url.to_string();
    std::thread::spawn(move || {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let response = client
            .get(&url)
            .send()
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("cannot fetch: {}", e.without_url()))?;
        response
            .text()
            .map_err(|e| format!("cannot read the response: {}", e.without_url()))
    })
    .join()
    .unwrap_or_else(|_| Err("the fetch failed".into()))
}

/// JWKS keys by key id, read again when an unknown kid arrives (rate-limited).
struct Jwks {
    source: JwksSource,
    keys: RwLock<(HashMap<String, DecodingKey>, Option<Instant>)>,
}

fn b64(s: &str) -> Result<Vec<u8>, AuthError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| AuthError::Malformed("not base64url"))
}

impl Jwks {
    /// The set's signing keys by kid. A key this library cannot use (another key type,
    /// an encryption key) is left out, not fatal: providers publish such keys too.
    fn read(source: &JwksSource) -> Result<HashMap<String, DecodingKey>, String> {
        let text = source.text()?;
        let set: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("not a JWKS: {e}"))?;
        let list = set["keys"].as_array().ok_or("not a JWKS: no `keys` list")?;
        let mut keys = HashMap::new();
        for k in list {
            if k["use"].as_str() == Some("enc") {
                continue;
            }
            let Ok(jwk) = serde_json::from_value::<jsonwebtoken::jwk::Jwk>(k.clone()) else {
                continue;
            };
            let kid = jwk.common.key_id.clone().unwrap_or_default();
            match DecodingKey::from_jwk(&jwk) {
                Ok(key) => {
                    keys.insert(kid, key);
                }
                Err(e) => tracing::warn!(kid = %kid, error = %e, "JWKS key left out"),
            }
        }
        Ok(keys)
    }

    fn get(&self, kid: &str) -> Option<DecodingKey> {
        if let Some(k) = self.keys.read().ok()?.0.get(kid) {
            return Some(k.clone());
        }
        let mut guard = self.keys.write().ok()?;
        let recent = guard
            .1
            .is_some_and(|t| t.elapsed() < self.source.min_interval());
        if !recent {
            guard.1 = Some(Instant::now());
            match Self::read(&self.source) {
                Ok(keys) => guard.0 = keys,
                Err(e) => {
                    tracing::warn!(jwks = %self.source.describe(), error = %e, "JWKS not refreshed")
                }
            }
        }
        guard.0.get(kid).cloned()
    }
}

/// The header fields read before verification: which key, which algorithm (only
/// HS256, RS256 and ES256 are ever accepted; `none` never is).
#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
}

/// Verifies tokens and turns them into [`AccessContext`]s.
pub struct Auth {
    hs256: Option<(DecodingKey, EncodingKey)>,
    jwks: Option<Jwks>,
    policy: Arc<PolicyConfig>,
}

impl Auth {
    pub fn new(policy: Arc<PolicyConfig>) -> Result<Auth, String> {
        let a = &policy.auth;
        let hs256 = hs256_key(&policy)?
            .map(|k| (DecodingKey::from_secret(&k), EncodingKey::from_secret(&k)));
        let source = match (&a.jwks_file, &a.jwks_url) {
            (Some(path), _) => Some(JwksSource::File(path.clone())),
            (None, Some(url)) => Some(JwksSource::Url {
                url: url.clone(),
                refetch: Duration::from_secs(a.jwks_refetch_secs),
            }),
            (None, None) => None,
        };
        let jwks = match source {
            Some(source) => {
                let keys =
                    Jwks::read(&source).map_err(|e| format!("{}: {e}", source.describe()))?;
                Some(Jwks {
                    source,
                    keys: RwLock::new((keys, Some(Instant::now()))),
                })
            }
            None => None,
        };
        Ok(Auth {
            hs256,
            jwks,
            policy,
        })
    }

    /// Verify a compact JWS and return its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let token = token.trim();
        let mut parts = token.split('.');
        let (Some(h), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed("expected three parts"));
        };
        let header: Header = serde_json::from_slice(&b64(h)?)
            .map_err(|_| AuthError::Malformed("header is not JSON"))?;
        let (alg, key) = match header.alg.as_str() {
            "HS256" => {
                let (key, _) = self.hs256.as_ref().ok_or(AuthError::UnknownKey(None))?;
                (Algorithm::HS256, key.clone())
            }
            "RS256" | "ES256" => {
                let jwks = self
                    .jwks
                    .as_ref()
                    .ok_or(AuthError::UnknownKey(header.kid.clone()))?;
                let key = jwks
                    .get(header.kid.as_deref().unwrap_or_default())
                    .ok_or(AuthError::UnknownKey(header.kid.clone()))?;
                let alg = if header.alg == "RS256" {
                    Algorithm::RS256
                } else {
                    Algorithm::ES256
                };
                (alg, key)
            }
            other => return Err(AuthError::Algorithm(other.to_string())),
        };
        let a = &self.policy.auth;
        let mut validation = Validation::new(alg);
        validation.leeway = u64::try_from(a.leeway_secs).unwrap_or(0);
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        match &a.issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &a.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        use jsonwebtoken::errors::ErrorKind as K;
        jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                K::ExpiredSignature | K::ImmatureSignature => AuthError::Expired,
                K::InvalidIssuer | K::InvalidAudience => AuthError::WrongIssuer,
                K::MissingRequiredClaim(c) if c == "iss" || c == "aud" => AuthError::WrongIssuer,
                K::Json(_) | K::MissingRequiredClaim(_) | K::InvalidClaimFormat(_) => {
                    AuthError::Malformed("claims lack sub, role, iat or exp")
                }
                K::Base64(_) | K::Utf8(_) | K::InvalidToken => AuthError::Malformed("not a JWT"),
                // A signature that does not verify, or a key of another kind than the
                // algorithm (a forged header), alike.
                _ => AuthError::BadSignature,
            })
    }

    /// The caller of a request, from its headers. The same for `/graphql` and any other
    /// route that serves personal data.
    pub fn context(&self, headers: &HeaderMap) -> Result<AccessContext, AuthError> {
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or(AuthError::Missing)?;
        let claims = self.verify(bearer)?;
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let role = self
            .policy
            .roles
            .get(&claims.role)
            .ok_or_else(|| AuthError::UnknownRole(claims.role.clone()))?
            .get_ref();
        let purpose_text = header(&self.policy.auth.purpose_header)
            .or(claims.purpose.clone())
            .ok_or(AuthError::NoPurpose)?;
        let purpose =
            purpose_from_name(&purpose_text).ok_or_else(|| AuthError::UnknownPurpose {
                // Echoed to the caller and the audit: bounded.
                given: purpose_text.chars().take(40).collect(),
                valid: role.purposes.clone(),
            })?;
        if !role.purposes.iter().any(|p| p == purpose_name(purpose)) {
            return Err(AuthError::PurposeNotPermitted {
                role: claims.role.clone(),
                purpose: purpose_name(purpose).into(),
            });
        }
        let break_glass =
            header(&self.policy.auth.break_glass_header).or(claims.break_glass.clone());
        if let Some(reason) = &break_glass {
            let bg = &self.policy.break_glass;
            if !(role.may_break_glass || role.may_open_sealed) {
                return Err(AuthError::BreakGlass(format!(
                    "role `{}` may not break glass",
                    claims.role
                )));
            }
            let chars = reason.chars().count();
            if chars < bg.min_reason_chars || chars > bg.max_reason_chars {
                return Err(AuthError::BreakGlass(format!(
                    "give a reason of {} to {} characters",
                    bg.min_reason_chars, bg.max_reason_chars
                )));
            }
            if role.may_break_glass
                && !bg.purposes.iter().any(|p| p == purpose_name(purpose))
                && !role.may_open_sealed
            {
                return Err(AuthError::BreakGlass(format!(
                    "not for purpose `{}`",
                    purpose_name(purpose)
                )));
            }
            // Time-limited: a break-glass session lives no longer than its token, and
            // such tokens may live at most max_minutes.
            if claims.exp - claims.iat > bg.max_minutes * 60 {
                return Err(AuthError::BreakGlass(format!(
                    "needs a token that lives at most {} minutes",
                    bg.max_minutes
                )));
            }
        }
        Ok(AccessContext {
            user: claims.sub,
            name: claims.name,
            role: claims.role,
            organisation: claims.org,
            team: claims.team,
            worker_id: claims.worker,
            purpose,
            break_glass_reason: break_glass,
            person_id: claims.person,
        })
    }

    /// Sign claims with the local HS256 key (`escr token`, tests).
    pub fn mint_hs256(&self, claims: &Claims) -> Result<String, String> {
        let (_, key) = self
            .hs256
            .as_ref()
            .ok_or("no HS256 key configured ([auth] hs256_key_env or hs256_key_file)")?;
        jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::HS256), claims, key)
            .map_err(|e| e.to_string())
    }
}

/// The function other routes (e.g. `/reports`) use to learn the caller.
pub fn access_context_from_headers(
    headers: &HeaderMap,
    auth: &Auth,
) -> Result<AccessContext, AuthError> {
    auth.context(headers)
}

fn enc(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Sign with an asymmetric key for tests and tools: `alg` is RS256 or ES256.
pub fn sign_with(alg: &str, kid: &str, claims: &Claims, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let header = enc(serde_json::json!({"alg": alg, "typ": "JWT", "kid": kid})
        .to_string()
        .as_bytes());
    let body = enc(&serde_json::to_vec(claims).unwrap_or_default());
    let signed = format!("{header}.{body}");
    let sig = sign(signed.as_bytes());
    format!("{signed}.{}", enc(&sig))
}

/// The HS256 key: from the environment variable, else the file (created with a random
/// key when the policy allows it, for the demo).
fn hs256_key(policy: &PolicyConfig) -> Result<Option<Vec<u8>>, String> {
    let a = &policy.auth;
    secret_key(
        a.hs256_key_env.as_deref(),
        a.hs256_key_file.as_deref(),
        a.generate_key_if_missing,
        "an HS256 key",
    )
}

/// A secret of at least 32 bytes: from the environment variable `env`, else `file`
/// (created with a random key when `generate` allows it, for the demo); `None` when
/// neither is configured.
pub(crate) fn secret_key(
    env: Option<&str>,
    file: Option<&Path>,
    generate: bool,
    what: &str,
) -> Result<Option<Vec<u8>>, String> {
    if let Some(var) = env {
        if let Ok(v) = std::env::var(var) {
            if v.len() < 32 {
                return Err(format!("{var}: {what} needs at least 32 bytes"));
            }
            return Ok(Some(v.into_bytes()));
        }
    }
    let Some(path) = file else {
        return Ok(None);
    };
    if !path.exists() && generate {
        let mut key = [0u8; 32];
        aws_lc_rs::rand::fill(&mut key).map_err(|_| "no system randomness".to_string())?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        write_private(path, enc(&key).as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let key =
        std::fs::read(path).map_err(|e| format!("{}: cannot read {what}: {e}", path.display()))?;
    let key: Vec<u8> = String::from_utf8_lossy(&key).trim().as_bytes().to_vec();
    if key.len() < 32 {
        return Err(format!(
            "{}: {what} needs at least 32 bytes",
            path.display()
        ));
    }
    Ok(Some(key))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(bytes)
}
