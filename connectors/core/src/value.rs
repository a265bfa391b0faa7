//! Values and row sets as every connector returns them.

use chrono::{NaiveDate, NaiveDateTime};

/// One cell from a legacy database, in the few shapes every engine can express.
///
/// Decimals arrive as `Float`: the figures in social care records (unit costs, hours)
/// are well inside f64's exact range for two decimal places.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Date(NaiveDate),
    DateTime(NaiveDateTime),
    Bytes(Vec<u8>),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// NULL or blank text: what [`Value::as_key_text`] gives `None` for, without
    /// building the text.
    pub fn is_blank(&self) -> bool {
        match self {
            Value::Null => true,
            Value::Text(s) => s.trim().is_empty(),
            Value::Bytes(b) => String::from_utf8_lossy(b).trim().is_empty(),
            _ => false,
        }
    }

    /// The value as text, the way a key or a code is compared: trimmed, `None` for NULL
    /// and for blank strings (legacy CHAR columns pad with spaces).
    pub fn as_key_text(&self) -> Option<String> {
        self.key_str().map(std::borrow::Cow::into_owned)
    }

    /// [`Value::as_key_text`] borrowed where the value is already text (most keys and
    /// codes are): mapping compares codes and reads keys of every row, and building
    /// each as a new string was a large share of a report's allocations.
    pub fn key_str(&self) -> Option<std::borrow::Cow<'_, str>> {
        use std::borrow::Cow;
        let text = match self {
            Value::Null => return None,
            Value::Text(s) => {
                let t = s.trim();
                return (!t.is_empty()).then_some(Cow::Borrowed(t));
            }
            Value::Bool(b) => (if *b { "1" } else { "0" }).to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
            Value::Float(f) => f.to_string(),
            Value::Date(d) => d.format("%Y-%m-%d").to_string(),
            Value::DateTime(t) => t.format("%Y-%m-%d %H:%M:%S").to_string(),
            Value::Bytes(b) => String::from_utf8_lossy(b).trim().to_string(),
        };
        (!text.is_empty()).then_some(Cow::Owned(text))
    }

    /// Rough heap size, for the cache's weigher.
    pub fn weight(&self) -> usize {
        16 + match self {
            Value::Text(s) => s.len(),
            Value::Bytes(b) => b.len(),
            _ => 0,
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_string())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

/// The result of one statement: column names (as the engine reported them) and rows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RowSet {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

impl RowSet {
    /// Column lookup is case-insensitive: engines disagree on the case of aliases.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.eq_ignore_ascii_case(name))
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}
