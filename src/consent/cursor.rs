//! Opaque cursors. A page resumes from a position (a person id, a record's key); sent
//! as is, a cursor would tell the caller what it names (a data set's pseudonyms would
//! map back to gateway ids). So every cursor the API gives out is sealed: encrypted and
//! authenticated (AES-256-GCM, random nonce) under a key made at startup, bound to the
//! kind of list and to the caller. A caller cannot read one, forge one, or use one of
//! another list or caller. The key comes from `[cursors]` (so that replicas open each
//! other's cursors) or is made at startup (cursors then last as long as the process).

use std::sync::OnceLock;

use aws_lc_rs::aead::{Aad, Nonce, RandomizedNonceKey, AES_256_GCM, NONCE_LEN};
use base64::Engine;

use super::context::{purpose_name, AccessContext};

// One key per process: cursors are sealed deep in resolvers and reports, and a process
// serves one gateway (tests that build several in one process share the first key).
static KEY: OnceLock<Option<RandomizedNonceKey>> = OnceLock::new();

fn key() -> Option<&'static RandomizedNonceKey> {
    KEY.get_or_init(|| {
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut bytes).ok()?;
        RandomizedNonceKey::new(&AES_256_GCM, &bytes).ok()
    })
    .as_ref()
}

/// Seal cursors under a key derived from `secret` (the configured `[cursors]` key),
/// if no cursor has been sealed yet in this process. False when a key was already in
/// use (then that key stays: changing it would break the cursors already given out).
pub fn use_key(secret: &[u8]) -> bool {
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        &[b"escr cursor key\0".as_slice(), secret].concat(),
    );
    let mut installed = false;
    KEY.get_or_init(|| {
        installed = true;
        RandomizedNonceKey::new(&AES_256_GCM, digest.as_ref()).ok()
    });
    installed
}

fn aad(kind: &str, ctx: &AccessContext) -> Vec<u8> {
    [kind, &ctx.user, &ctx.role, purpose_name(ctx.purpose)]
        .join("\u{0}")
        .into_bytes()
}

/// A cursor for `payload` in a list of `kind`, for this caller. Empty when the system
/// has no randomness (then no page resumes: safe, not silent, since `open` fails).
pub fn seal(kind: &str, ctx: &AccessContext, payload: &[u8]) -> String {
    let Some(key) = key() else {
        return String::new();
    };
    let mut sealed = payload.to_vec();
    let Ok(nonce) = key.seal_in_place_append_tag(Aad::from(aad(kind, ctx)), &mut sealed) else {
        return String::new();
    };
    let mut out = nonce.as_ref().to_vec();
    out.extend(sealed);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)
}

/// The payload of a cursor sealed by [`seal`] for the same list and caller.
pub fn open(kind: &str, ctx: &AccessContext, cursor: &str) -> Option<Vec<u8>> {
    let key = key()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    if bytes.len() < NONCE_LEN {
        return None;
    }
    let (nonce, sealed) = bytes.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut sealed = sealed.to_vec();
    let plain = key
        .open_in_place(nonce, Aad::from(aad(kind, ctx)), &mut sealed)
        .ok()?;
    Some(plain.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consent::context::Purpose;

    #[test]
    fn cursors_hide_their_payload_and_bind_list_and_caller() {
        let me = AccessContext::for_role("u1", "analyst", Purpose::Planning);
        let c = seal("mds", &me, b"3:P0001");
        assert!(!c.contains("P0001"));
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&c)
            .unwrap();
        assert!(!raw.windows(5).any(|w| w == b"P0001"));
        assert_eq!(open("mds", &me, &c).as_deref(), Some(&b"3:P0001"[..]));
        // Sealed twice, two different cursors (a cursor says nothing by equality).
        assert_ne!(seal("mds", &me, b"3:P0001"), c);
        let other = AccessContext::for_role("u2", "analyst", Purpose::Planning);
        assert_eq!(open("mds", &other, &c), None);
        assert_eq!(open("search", &me, &c), None);
        let mut forged = c.clone().into_bytes();
        let last = forged.len() - 1;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(open("mds", &me, &String::from_utf8(forged).unwrap()), None);
        assert_eq!(open("mds", &me, "not a cursor"), None);
    }
}
