//! A document's media type, from the file: its first bytes first (magic numbers by
//! `infer`; text by the rule below), then what the store or the vendor's record
//! declares, then the name's extension (`mime_guess`). Legacy systems name files
//! loosely (SSIS/90 calls its plain-text letters `.DOC`), so the bytes win.

/// Bytes read from a file's start to decide its type.
pub const HEAD_BYTES: usize = 1024;

const OCTET_STREAM: &str = "application/octet-stream";

/// (media type, file-name extension for a download) of a file whose first bytes are
/// `head` (when known), declared as `declared` (store first, then the record), named
/// `name`.
pub fn detect(head: Option<&[u8]>, declared: &[Option<&str>], name: &str) -> (String, String) {
    let own_ext = std::path::Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let by_name = mime_guess::from_path(name).first();
    if let Some(head) = head {
        if let Some(kind) = infer::get(head) {
            let ext = match (&own_ext, &by_name) {
                (Some(e), Some(m)) if m.essence_str() == kind.mime_type() => e.clone(),
                _ => kind.extension().to_string(),
            };
            return (kind.mime_type().to_string(), ext);
        }
        if looks_like_text(head) {
            // A text format the name says (CSV, RTF...), else plain text.
            let media = match &by_name {
                Some(m) if m.type_() == mime_guess::mime::TEXT => m.essence_str().to_string(),
                _ => "text/plain".to_string(),
            };
            let ext = match (&own_ext, &by_name) {
                (Some(e), Some(m)) if m.essence_str() == media => e.clone(),
                _ => "txt".to_string(),
            };
            return (format!("{media}; charset=utf-8"), ext);
        }
    }
    let declared = declared
        .iter()
        .flatten()
        .map(|d| d.trim())
        .find(|d| is_media_type(d) && !d.starts_with(OCTET_STREAM));
    let media = declared
        .map(str::to_string)
        .or_else(|| by_name.as_ref().map(|m| m.essence_str().to_string()))
        .unwrap_or_else(|| OCTET_STREAM.to_string());
    (media, own_ext.unwrap_or_else(|| "bin".to_string()))
}

/// A `type/subtype` with token characters only (a declared value is passed on as a
/// header, so nothing else gets through).
fn is_media_type(s: &str) -> bool {
    let essence = s.split(';').next().unwrap_or("").trim();
    let mut parts = essence.split('/');
    let token = |t: &str| {
        !t.is_empty()
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$&-^_.+".contains(c))
    };
    matches!((parts.next(), parts.next(), parts.next()), (Some(a), Some(b), None) if token(a) && token(b))
        && s.chars().all(|c| c.is_ascii() && !c.is_ascii_control())
}

/// UTF-8 (a character cut at the end of `head` allowed) without NULs or other control
/// characters than tab, line feed, form feed and carriage return. No crate decides
/// "is this plain text" for a byte prefix (infer knows formats with magic numbers only),
/// and this rule is short.
fn looks_like_text(head: &[u8]) -> bool {
    if head.is_empty() {
        return false;
    }
    let valid = match std::str::from_utf8(head) {
        Ok(s) => s,
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return false,
    };
    valid
        .chars()
        .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r' | '\u{c}'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bytes_decide_then_the_declaration_then_the_name() {
        let pdf = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj";
        assert_eq!(
            detect(Some(pdf), &[], "2.pdf"),
            ("application/pdf".into(), "pdf".into())
        );
        // A PDF named like something else is still a PDF.
        assert_eq!(detect(Some(pdf), &[], "D1.DOC").0, "application/pdf");
        assert_eq!(detect(Some(pdf), &[], "D1.DOC").1, "pdf");
        // SSIS/90's plain-text letters named .DOC.
        assert_eq!(
            detect(
                Some(b"Dear Mrs Smith,\r\n\tWe write..."),
                &[],
                "D000000001.DOC"
            ),
            ("text/plain; charset=utf-8".into(), "txt".into())
        );
        assert_eq!(
            detect(Some("a,b\nc,\u{e9}".as_bytes()), &[], "x.csv").0,
            "text/csv; charset=utf-8"
        );
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        assert_eq!(detect(Some(png), &[], "scan").0, "image/png");
        // Unknown bytes: the declaration, then the name.
        let binary = b"\x00\x01\x02\x03\xff\xfe";
        assert_eq!(
            detect(Some(binary), &[None, Some("image/tiff")], "s.bin").0,
            "image/tiff"
        );
        assert_eq!(detect(Some(binary), &[], "s.tif").0, "image/tiff");
        assert_eq!(
            detect(None, &[Some("bad type\r\nX: y")], "s").0,
            OCTET_STREAM
        );
        assert_eq!(detect(None, &[], "noname").1, "bin");
    }
}
