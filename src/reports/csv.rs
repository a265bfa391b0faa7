//! The one CSV writer of every export: the minimum data set, the indicators and the
//! data-quality report. The `csv` crate quotes; [`neutralise`] is the one place that
//! keeps a spreadsheet from running a cell as a formula. Vendor code values reach
//! these files unmapped (`=HYPERLINK(...)`, `@cmd`), so every cell passes it.

use std::borrow::Cow;

/// A cell a spreadsheet would read as a formula (starting `=`, `+`, `-`, `@`, a tab or
/// a carriage return) gets a leading `'`, which spreadsheets show as text. Plain
/// numbers (`-2.50`) are left as they are: a number is not a formula.
pub fn neutralise(cell: &str) -> Cow<'_, str> {
    let risky = cell.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if risky && cell.parse::<f64>().is_err() {
        Cow::Owned(format!("'{cell}"))
    } else {
        Cow::Borrowed(cell)
    }
}

/// Rows written into a buffer, taken a page at a time (exports stream).
pub struct CsvWriter {
    inner: csv::Writer<Vec<u8>>,
}

fn writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .flexible(true)
        .from_writer(Vec::new())
}

impl Default for CsvWriter {
    fn default() -> Self {
        CsvWriter { inner: writer() }
    }
}

impl CsvWriter {
    pub fn new() -> CsvWriter {
        CsvWriter::default()
    }

    /// One row; every cell neutralised.
    pub fn row<'a>(&mut self, cells: impl IntoIterator<Item = &'a str>) {
        // Writing into memory does not fail; a failure would only lose this row's
        // bytes, which the caller's count of rows would not show, so keep it loud.
        let written = cells
            .into_iter()
            .try_for_each(|c| self.inner.write_field(neutralise(c).as_bytes()))
            .and_then(|()| self.inner.write_record(None::<&[u8]>));
        if let Err(e) = written {
            tracing::error!(error = %e, "CSV row not written");
        }
    }

    /// Everything written since the last take.
    pub fn take(&mut self) -> String {
        let bytes = std::mem::replace(&mut self.inner, writer())
            .into_inner()
            .unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// A whole file: a header and rows.
pub fn file<'a, R>(header: &[&str], rows: impl IntoIterator<Item = R>) -> String
where
    R: IntoIterator<Item = &'a str>,
{
    let mut w = CsvWriter::new();
    w.row(header.iter().copied());
    for r in rows {
        w.row(r);
    }
    w.take()
}

/// The data-quality report (`GET /reports/data-quality.csv`): one row per measure and
/// source; unmapped codes one row per value.
pub fn quality(report: &crate::identity::quality::QualityReport) -> String {
    let mut rows: Vec<[String; 6]> = Vec::new();
    for q in &report.sources {
        let measures = [
            ("available", usize::from(q.available)),
            ("people", q.people),
            ("missing_nhs_numbers", q.missing_nhs_numbers),
            ("invalid_nhs_numbers", q.invalid_nhs_numbers),
            ("placeholder_nhs_numbers", q.placeholder_nhs_numbers),
            ("probable_duplicates", q.probable_duplicates),
            ("estimated_birth_dates", q.estimated_birth_dates),
            ("impossible_dates", q.impossible_dates),
            ("unparseable_dates", q.unparseable_dates),
            ("undated_events", q.undated_events),
            ("end_before_start", q.end_before_start),
            ("services_after_death", q.services_after_death),
            ("bad_postcodes", q.bad_postcodes),
            ("placeholder_values", q.placeholder_values),
            ("open_end_sentinels", q.open_end_sentinels),
        ];
        for (m, n) in measures {
            rows.push([
                q.source.clone(),
                m.into(),
                String::new(),
                String::new(),
                String::new(),
                n.to_string(),
            ]);
        }
        for o in &q.orphan_records {
            rows.push([
                q.source.clone(),
                "orphan_records".into(),
                o.entity.clone(),
                String::new(),
                String::new(),
                o.count.to_string(),
            ]);
        }
        for u in &q.unmapped_codes {
            rows.push([
                q.source.clone(),
                "unmapped_code".into(),
                u.entity.clone(),
                u.field.clone(),
                u.value.clone(),
                u.count.to_string(),
            ]);
        }
    }
    file(
        &["source", "measure", "entity", "field", "value", "count"],
        rows.iter().map(|r| r.iter().map(String::as_str)),
    )
}

/// The columns `docs/report-columns.md` documents for `file` (`mds.csv`,
/// `indicators.csv`): the first cell of each table row of its section, in order.
pub fn documented_columns(doc: &str, file: &str) -> Vec<String> {
    doc.split("\n## ")
        .find(|section| section.starts_with(file))
        .map(|section| {
            section
                .lines()
                .filter_map(|l| l.strip_prefix("| `"))
                .filter_map(|l| l.split_once('`'))
                .map(|(name, _)| name.to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_have_the_documented_columns() {
        let doc = include_str!("../../docs/report-columns.md");
        assert_eq!(
            documented_columns(doc, "mds.csv"),
            crate::reports::mds::CSV_COLUMNS
        );
        assert_eq!(
            documented_columns(doc, "indicators.csv"),
            crate::reports::suppress::CSV_COLUMNS
        );
    }

    #[test]
    fn formulas_are_neutralised_and_fields_quoted() {
        let text = file(
            &["a", "b"],
            [
                ["=HYPERLINK(\"http://x\",\"y\")", "+SUM(1+1)"],
                ["@cmd", "-2+3"],
                ["a,b", "say \"hi\""],
                ["-2.50", "plain"],
                ["\tx", "line\nbreak"],
            ],
        );
        assert_eq!(
            text,
            "a,b\n\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\",'+SUM(1+1)\n'@cmd,'-2+3\n\"a,b\",\"say \"\"hi\"\"\"\n-2.50,plain\n'\tx,\"line\nbreak\"\n"
        );
    }
}
