//! Expanding `{keys}` / `{since}` markers into bound-parameter placeholders.

use crate::{Placeholder, Value};

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
        if name != "keys" && name != "since" {
            return Err(format!(
                "unknown marker `{{{name}}}` (only {{keys}} and {{since}})"
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
    let mut out = String::with_capacity(sql.len() + keys.len() * 4);
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
            "since" => {
                out.push_str(&style.render(params.len()));
                params.push(since.cloned().unwrap_or(Value::Null));
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
