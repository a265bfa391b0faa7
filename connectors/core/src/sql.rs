//! Expanding `{keys}` / `{since}` markers into bound-parameter placeholders.

use crate::{Placeholder, Value};

/// The markers profile SQL may use.
pub const MARKERS: [&str; 4] = ["keys", "since", "from", "to"];

/// Check that `sql` uses exactly the markers `expected` (each at least once) and no others.
pub fn check_markers(sql: &str, expected: &[&str]) -> Result<(), String> {
    let found = markers(sql)?;
    for want in expected {
        if !found.iter().any(|f| f == want) {
            return Err(format!("the SQL must use `{{{want}}}`"));
        }
    }
    if let Some(other) = found.iter().find(|f| !expected.contains(&f.as_str())) {
        return Err(format!("unexpected marker `{{{other}}}` here"));
    }
    Ok(())
}

fn markers(sql: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = sql;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| "unclosed `{` in SQL".to_string())?;
        let name = &after[..close];
        if !MARKERS.contains(&name) {
            return Err(format!(
                "unknown marker `{{{name}}}` (only {{keys}}, {{since}}, {{from}} and {{to}})"
            ));
        }
        out.push(name.to_string());
        rest = &after[close + 1..];
    }
    Ok(out)
}

/// SQL text and its parameters, ready for [`crate::Connector::query`].
#[derive(Clone, Debug, PartialEq)]
pub struct BoundSql {
    pub sql: String,
    pub params: Vec<Value>,
}

/// Expand markers: every `{keys}` becomes one placeholder per key, `{since}` one
/// placeholder. Values go to `params` only, in placeholder order.
pub fn bind(sql: &str, keys: &[Value], since: Option<&Value>, style: Placeholder) -> BoundSql {
    match since {
        Some(since) => bind_named(sql, keys, &[("since", since)], style),
        None => bind_named(sql, keys, &[], style),
    }
}

/// [`bind`] with any single-value markers (`{since}`, `{from}`, `{to}`) given by name;
/// a marker without a value binds NULL.
pub fn bind_named(
    sql: &str,
    keys: &[Value],
    named: &[(&str, &Value)],
    style: Placeholder,
) -> BoundSql {
    let mut out = String::with_capacity(sql.len() + keys.len() * 8);
    let mut params = Vec::new();
    let mut rest = sql;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}').unwrap_or(after.len());
        match &after[..close] {
            "keys" => {
                if keys.is_empty() {
                    // `IN ()` is invalid SQL everywhere; NULL matches nothing.
                    out.push_str("NULL");
                }
                for (i, key) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(&style.render(params.len()));
                    params.push(key.clone());
                }
            }
            name @ ("since" | "from" | "to") => {
                out.push_str(&style.render(params.len()));
                let value = named.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
                params.push(value.cloned().unwrap_or(Value::Null));
            }
            other => {
                out.push('{');
                out.push_str(other);
                out.push('}');
            }
        }
        rest = after.get(close + 1..).unwrap_or("");
    }
    out.push_str(rest);
    BoundSql { sql: out, params }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_placeholders_and_values_stay_out_of_the_text() {
        let keys = vec![Value::from("1'; DROP TABLE CLNT; --"), Value::from("2")];
        let b = bind(
            "SELECT * FROM T WHERE ID IN ({keys})",
            &keys,
            None,
            Placeholder::AtP,
        );
        assert_eq!(b.sql, "SELECT * FROM T WHERE ID IN (@P1, @P2)");
        assert_eq!(b.params, keys);
        assert!(!b.sql.contains("DROP"));
    }

    #[test]
    fn range_markers_bind_in_placeholder_order() {
        let (from, to) = (Value::from("2025-04-01"), Value::from("2026-03-31"));
        let b = bind_named(
            "SELECT * FROM T WHERE ID IN ({keys}) AND D <= {to} AND E >= {from}",
            &[Value::from("7")],
            &[("from", &from), ("to", &to)],
            Placeholder::AtP,
        );
        assert_eq!(
            b.sql,
            "SELECT * FROM T WHERE ID IN (@P1) AND D <= @P2 AND E >= @P3"
        );
        assert_eq!(b.params, vec![Value::from("7"), to, from]);
    }

    #[test]
    fn markers_are_checked() {
        assert!(check_markers("SELECT 1 WHERE A IN ({keys})", &["keys"]).is_ok());
        assert!(check_markers("SELECT 1", &["keys"]).is_err());
        assert!(check_markers("SELECT {since}", &["keys"]).is_err());
        assert!(check_markers("SELECT {nope}", &[]).is_err());
    }

    #[test]
    fn empty_key_list_matches_nothing_but_is_valid_sql() {
        let b = bind(
            "SELECT * FROM T WHERE ID IN ({keys})",
            &[],
            None,
            Placeholder::Question,
        );
        assert_eq!(b.sql, "SELECT * FROM T WHERE ID IN (NULL)");
    }
}
