//! The demo's letters as real files: what the vendors' document records point at.
//!
//! CaseTrak names its documents `\\docs\ct\<DOC_ID>.pdf` on a file share; they are
//! written as small PDF letters (forms and email printouts too) into
//! `documents/casetrak/`. SSIS/90 names its letters `H:\LETTERS\<DOCREF>.DOC`; they
//! are the plain text (CRLF, upper case) a 1990s system printed, in
//! `documents/ssis/`. The demo config maps those prefixes onto these folders.
//!
//! The files are made from the vendor databases once they are written (read back from
//! the SQLite files), and any choice of words comes from a random stream of their own,
//! so the vendor data is the same with or without them.

use std::path::Path;

use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::GenerateOptions;

/// The folder under the demo folder that holds each vendor's files.
pub const FOLDER: &str = "documents";

/// Write the files of every document record of the vendors in `out_dir` (those that
/// keep files); how many were written.
pub fn write(opts: &GenerateOptions, out_dir: &Path) -> Result<usize, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(stream_seed(opts.seed));
    let mut written = 0;
    let casetrak = out_dir.join("casetrak.db");
    if casetrak.exists() {
        written += casetrak_letters(
            opts,
            &casetrak,
            &out_dir.join(FOLDER).join("casetrak"),
            &mut rng,
        )?;
    }
    let ssis = out_dir.join("ssis.db");
    if ssis.exists() {
        written += ssis_letters(opts, &ssis, &out_dir.join(FOLDER).join("ssis"), &mut rng)?;
    }
    Ok(written)
}

/// Whether `out_dir` has its document files (an estate generated before they were).
pub fn present(out_dir: &Path) -> bool {
    out_dir.join(FOLDER).is_dir()
}

/// The files' own random stream: the seed mixed with a constant, never a draw from
/// the vendors' stream.
fn stream_seed(seed: u64) -> u64 {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(format!("{seed}:documents").as_bytes());
    u64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]])
}

fn fail(path: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

/// The rows of `sql` on the vendor database `db`, every column as text (NULL empty).
fn text_rows<const N: usize>(db: &Path, sql: &str) -> Result<Vec<[String; N]>, String> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| fail(db, e))?;
    let mut stmt = conn.prepare(sql).map_err(|e| fail(db, e))?;
    let rows = stmt
        .query_map([], |r| {
            let mut row: [String; N] = std::array::from_fn(|_| String::new());
            for (i, cell) in row.iter_mut().enumerate() {
                *cell = r.get::<_, Option<String>>(i)?.unwrap_or_default();
            }
            Ok(row)
        })
        .map_err(|e| fail(db, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| fail(db, e));
    rows
}

/// The last part of a vendor's path (`\\docs\ct\2.pdf` -> `2.pdf`).
fn file_name(path: &str) -> String {
    path.trim()
        .rsplit(['\\', '/'])
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A document row as the letter needs it.
struct Letter {
    file: String,
    kind: String,
    incoming: bool,
    title: String,
    date: String,
    reference: String,
    addressee: String,
}

fn casetrak_letters(
    opts: &GenerateOptions,
    db: &Path,
    dir: &Path,
    rng: &mut ChaCha8Rng,
) -> Result<usize, String> {
    let rows = text_rows::<8>(
        db,
        "SELECT CAST(d.DOC_ID AS TEXT), d.DOC_TYP, d.DIRN, d.TITLE, d.DOC_DT, d.FILE_PATH, c.FNAME, c.SNAME
         FROM DOC d LEFT JOIN CLNT c ON c.CLNT_ID = d.CLNT_ID ORDER BY d.DOC_ID",
    )?;
    let letters: Vec<Letter> = rows
        .into_iter()
        .map(
            |[id, kind, direction, title, date, path, given, family]| Letter {
                file: file_name(&path),
                kind,
                incoming: direction == "I",
                title,
                date: date.chars().take(10).collect(),
                reference: format!("CT/{id}"),
                addressee: format!("{given} {family}").trim().to_string(),
            },
        )
        .collect();
    std::fs::create_dir_all(dir).map_err(|e| fail(dir, e))?;
    for letter in &letters {
        if letter.file.is_empty() {
            continue;
        }
        let path = dir.join(&letter.file);
        std::fs::write(&path, pdf_letter(&opts.council, letter, rng))
            .map_err(|e| fail(&path, e))?;
    }
    Ok(letters.len())
}

const BODIES: [&[&str]; 4] = [
    &[
        "Thank you for meeting with us. This letter confirms what we agreed:",
        "your support will continue as set out in your plan, and we will",
        "review it with you in the coming months.",
    ],
    &[
        "We are writing to let you know that your assessment has been completed.",
        "A copy of the outcome is enclosed. Please contact the team if anything",
        "in it is not as you remember it.",
    ],
    &[
        "This is to confirm the arrangements for your next review. If the date",
        "does not suit you, please call the duty desk and we will arrange another.",
    ],
    &[
        "We have received the information you sent us and added it to your record.",
        "Your worker will be in touch about the next steps.",
    ],
];

/// What people write to the council.
const INCOMING: [&[&str]; 2] = [
    &[
        "I am writing about the support at home. The carers have not come on",
        "Tuesdays for three weeks now, and I would like someone to call me.",
    ],
    &[
        "Please find enclosed the form you asked for, signed. I have also put",
        "in a copy of the letter from the hospital.",
    ],
];

/// Helvetica's standard encoding covers ASCII: anything else is shown as `?`.
fn ascii(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c as u8
            } else {
                b'?'
            }
        })
        .collect()
}

/// A one-page A4 PDF letter (Helvetica, no fonts embedded).
fn pdf_letter(council: &str, letter: &Letter, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let (catalog, tree, page, content_id, regular, bold) = (
        Ref::new(1),
        Ref::new(2),
        Ref::new(3),
        Ref::new(4),
        Ref::new(5),
        Ref::new(6),
    );
    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree).kids([page]).count(1);
    let mut p = pdf.page(page);
    p.media_box(Rect::new(0.0, 0.0, 595.0, 842.0))
        .parent(tree)
        .contents(content_id);
    p.resources()
        .fonts()
        .pair(Name(b"F1"), regular)
        .pair(Name(b"F2"), bold);
    p.finish();
    pdf.type1_font(regular).base_font(Name(b"Helvetica"));
    pdf.type1_font(bold).base_font(Name(b"Helvetica-Bold"));

    let heading = match letter.kind.as_str() {
        "EML" => "Email (printed for the record)",
        "FRM" => "Form",
        _ if letter.incoming => "Letter received",
        _ => "Letter",
    };
    let mut lines: Vec<(bool, String)> = vec![
        (true, format!("{council} Council")),
        (false, "Children's and Adult Social Care".into()),
        (false, String::new()),
        (
            false,
            format!("Date: {}    Our ref: {}", letter.date, letter.reference),
        ),
        (false, String::new()),
        (true, format!("{heading}: {}", letter.title)),
        (false, String::new()),
    ];
    let team = format!(
        "The {} Team",
        ["Duty", "Assessment", "Review"][rng.gen_range(0..3)]
    );
    let (opening, body, signature) = match (letter.kind.as_str(), letter.incoming) {
        ("EML", true) => (
            format!(
                "From: {}    To: duty.team@council.example",
                letter.addressee
            ),
            INCOMING[rng.gen_range(0..INCOMING.len())],
            letter.addressee.clone(),
        ),
        ("EML", false) => (
            format!(
                "From: duty.team@council.example    To: {}",
                letter.addressee
            ),
            BODIES[rng.gen_range(0..BODIES.len())],
            team,
        ),
        (_, true) => (
            format!("From: {}. Dear {team},", letter.addressee),
            INCOMING[rng.gen_range(0..INCOMING.len())],
            letter.addressee.clone(),
        ),
        (_, false) => (
            format!("Dear {},", letter.addressee),
            BODIES[rng.gen_range(0..BODIES.len())],
            team,
        ),
    };
    lines.push((false, opening));
    lines.push((false, String::new()));
    lines.extend(body.iter().map(|l| (false, l.to_string())));
    lines.push((false, String::new()));
    lines.push((false, "Yours sincerely,".into()));
    lines.push((false, signature));

    let mut content = Content::new();
    let mut y = 780.0;
    for (strong, text) in &lines {
        if !text.is_empty() {
            content.begin_text();
            content.set_font(Name(if *strong { b"F2" } else { b"F1" }), 11.0);
            content.next_line(72.0, y);
            content.show(Str(&ascii(text)));
            content.end_text();
        }
        y -= 16.0;
    }
    pdf.stream(content_id, &content.finish());
    pdf.finish()
}

fn ssis_letters(
    opts: &GenerateOptions,
    db: &Path,
    dir: &Path,
    rng: &mut ChaCha8Rng,
) -> Result<usize, String> {
    let rows = text_rows::<5>(
        db,
        "SELECT l.DOCREF, l.LTRDATE, l.LTRTYPE, l.PATH, c.CLNAME
         FROM CORRESP l LEFT JOIN CLIENT c ON c.CLNO = l.CLNO ORDER BY l.DOCREF",
    )?;
    std::fs::create_dir_all(dir).map_err(|e| fail(dir, e))?;
    for [docref, date, kind, path, name] in &rows {
        let file = file_name(path);
        if file.is_empty() {
            continue;
        }
        let about = match kind.trim() {
            "APP" => "APPOINTMENT",
            "REV" => "REVIEW OF YOUR CARE PACKAGE",
            _ => "YOUR CARE AND SUPPORT",
        };
        let body = BODIES[rng.gen_range(0..BODIES.len())];
        let mut text = format!(
            "{} COUNCIL - SOCIAL SERVICES DEPARTMENT\r\n\r\nREF: {}    DATE: {}\r\nTO: {}\r\n\r\nRE: {about}\r\n\r\n",
            opts.council.to_uppercase(),
            docref.trim(),
            date.trim(),
            name.trim().to_uppercase(),
        );
        for line in body {
            text.push_str(&line.to_uppercase());
            text.push_str("\r\n");
        }
        text.push_str("\r\nYOURS FAITHFULLY\r\n\r\nAREA OFFICE\r\n");
        let path = dir.join(file);
        std::fs::write(&path, text).map_err(|e| fail(&path, e))?;
    }
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every document record has its file; the files are the same every time; making
    /// them leaves the vendor databases as they were.
    #[test]
    fn a_file_for_every_document_record_and_the_databases_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let opts = GenerateOptions {
            people: 120,
            ..GenerateOptions::default()
        };
        crate::demo::generate(&opts, dir.path()).unwrap();
        let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
        let databases: Vec<Vec<u8>> = ["casetrak.db", "opencare.db", "ssis.db"]
            .iter()
            .map(|n| read(n))
            .collect();
        let files = |vendor: &str| -> Vec<(String, Vec<u8>)> {
            let mut all: Vec<(String, Vec<u8>)> =
                std::fs::read_dir(dir.path().join(FOLDER).join(vendor))
                    .unwrap()
                    .map(|e| {
                        let e = e.unwrap();
                        (
                            e.file_name().to_string_lossy().into_owned(),
                            std::fs::read(e.path()).unwrap(),
                        )
                    })
                    .collect();
            all.sort();
            all
        };
        let first = (files("casetrak"), files("ssis"));
        let column = |db: &str, sql: &str| -> Vec<String> {
            let conn = rusqlite::Connection::open(dir.path().join(db)).unwrap();
            let mut stmt = conn.prepare(sql).unwrap();
            let mut names: Vec<String> = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .unwrap()
                .map(|p| p.unwrap().trim().rsplit('\\').next().unwrap().to_string())
                .collect();
            names.sort();
            names
        };
        let names =
            |list: &[(String, Vec<u8>)]| list.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(&first.0),
            column("casetrak.db", "SELECT FILE_PATH FROM DOC")
        );
        assert_eq!(
            names(&first.1),
            column("ssis.db", "SELECT PATH FROM CORRESP")
        );
        assert!(!first.0.is_empty() && !first.1.is_empty());
        for (name, bytes) in &first.0 {
            assert!(
                bytes.starts_with(b"%PDF-") && bytes.ends_with(b"%%EOF"),
                "{name}"
            );
        }
        for (name, bytes) in &first.1 {
            let text = std::str::from_utf8(bytes).unwrap();
            assert!(
                text.contains("\r\nTO: ") && text.contains("REF: D"),
                "{name}"
            );
        }
        // Again, into the same estate: the same files, the databases byte for byte.
        std::fs::remove_dir_all(dir.path().join(FOLDER)).unwrap();
        assert!(!present(dir.path()));
        write(&opts, dir.path()).unwrap();
        assert_eq!((files("casetrak"), files("ssis")), first);
        for (n, bytes) in ["casetrak.db", "opencare.db", "ssis.db"]
            .iter()
            .zip(&databases)
        {
            assert_eq!(&read(n), bytes, "{n}");
        }
    }
}
