//! The few T-SQL bits SQLite lacks, rewritten on a token stream (so nothing inside a
//! string literal or a comment is touched): `N'..'` literals, `TOP n`, `GETDATE()`,
//! `ISNULL`, `LEN`, `dbo.` prefixes, `[bracketed]` names and `@@VERSION`. `@P1`
//! parameters need no rewrite: SQLite binds `@name` parameters by name.

/// What a batch asks for.
#[derive(Debug, PartialEq)]
pub enum Translated {
    /// One statement for SQLite.
    Sql(String),
    /// Session settings (`SET ...`, `USE ...`): accepted, nothing to run.
    NoOp,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Space(String),
    Comment,
    Word(String),
    /// A string literal without its `N` prefix, quotes included.
    Str(String),
    /// `"name"` or `[name]`, already in SQLite's `"name"` form.
    Ident(String),
    Num(String),
    Punct(char),
}

fn tokenize(sql: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let at = |i: usize| chars.get(i).copied();
    while let Some(c) = at(i) {
        if c.is_whitespace() {
            let start = i;
            while at(i).is_some_and(char::is_whitespace) {
                i += 1;
            }
            out.push(Tok::Space(chars[start..i].iter().collect()));
        } else if c == '-' && at(i + 1) == Some('-') {
            while at(i).is_some_and(|c| c != '\n') {
                i += 1;
            }
            out.push(Tok::Comment);
        } else if c == '/' && at(i + 1) == Some('*') {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && at(i + 1) == Some('/')) {
                i += 1;
            }
            if i >= chars.len() {
                return Err("Missing end comment mark '*/'.".to_string());
            }
            i += 2;
            out.push(Tok::Comment);
        } else if c == '\'' || ((c == 'N' || c == 'n') && at(i + 1) == Some('\'')) {
            if c != '\'' {
                i += 1;
            }
            let start = i;
            i += 1;
            loop {
                match at(i) {
                    None => {
                        return Err(
                            "Unclosed quotation mark after the character string.".to_string()
                        )
                    }
                    Some('\'') if at(i + 1) == Some('\'') => i += 2,
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(_) => i += 1,
                }
            }
            out.push(Tok::Str(chars[start..i].iter().collect()));
        } else if c == '[' || c == '"' {
            let close = if c == '[' { ']' } else { '"' };
            let mut name = String::new();
            i += 1;
            loop {
                match at(i) {
                    None => return Err("Unclosed quoted identifier.".to_string()),
                    Some(x) if x == close && at(i + 1) == Some(close) => {
                        name.push(close);
                        i += 2;
                    }
                    Some(x) if x == close => {
                        i += 1;
                        break;
                    }
                    Some(x) => {
                        name.push(x);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Ident(format!("\"{}\"", name.replace('"', "\"\""))));
        } else if c.is_alphabetic() || c == '_' || c == '@' || c == '#' {
            let start = i;
            while at(i).is_some_and(|c| c.is_alphanumeric() || matches!(c, '_' | '@' | '#' | '$')) {
                i += 1;
            }
            out.push(Tok::Word(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit() {
            let start = i;
            while at(i).is_some_and(|c| c.is_ascii_alphanumeric() || c == '.') {
                i += 1;
            }
            out.push(Tok::Num(chars[start..i].iter().collect()));
        } else {
            out.push(Tok::Punct(c));
            i += 1;
        }
    }
    Ok(out)
}

fn significant(tokens: &[Tok]) -> impl Iterator<Item = (usize, &Tok)> {
    tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| !matches!(t, Tok::Space(_) | Tok::Comment))
}

fn is_word(t: &Tok, word: &str) -> bool {
    matches!(t, Tok::Word(w) if w.eq_ignore_ascii_case(word))
}

pub fn translate(tsql: &str) -> Result<Translated, String> {
    let mut tokens = tokenize(tsql)?;
    // One statement per batch: a trailing `;` is fine, a second statement is not.
    let sig: Vec<usize> = significant(&tokens).map(|(i, _)| i).collect();
    let mut end = tokens.len();
    if let Some(&last) = sig.last() {
        if tokens[last] == Tok::Punct(';') {
            end = last;
        }
    }
    if sig.iter().any(|&i| i < end && tokens[i] == Tok::Punct(';')) {
        return Err("The test server runs one statement per batch.".to_string());
    }
    tokens.truncate(end);
    let sig: Vec<usize> = significant(&tokens).map(|(i, _)| i).collect();
    match sig.first().map(|&i| &tokens[i]) {
        None => return Ok(Translated::NoOp),
        Some(t) if is_word(t, "SET") || is_word(t, "USE") => return Ok(Translated::NoOp),
        _ => {}
    }

    let limit = take_top(&mut tokens)?;
    let sig: Vec<usize> = significant(&tokens).map(|(i, _)| i).collect();
    let mut skip = vec![false; tokens.len()];
    let mut replace: Vec<Option<String>> = vec![None; tokens.len()];
    for (k, &i) in sig.iter().enumerate() {
        let next = sig.get(k + 1).map(|&j| &tokens[j]);
        let after = sig.get(k + 2).map(|&j| &tokens[j]);
        let token = &tokens[i];
        let is_call = next == Some(&Tok::Punct('('));
        if (is_word(token, "GETDATE") || is_word(token, "SYSDATETIME"))
            && is_call
            && after == Some(&Tok::Punct(')'))
        {
            replace[i] = Some("datetime('now', 'localtime')".to_string());
            skip[sig[k + 1]] = true;
            skip[sig[k + 2]] = true;
        } else if is_word(token, "ISNULL") && is_call {
            replace[i] = Some("IFNULL".to_string());
        } else if is_word(token, "LEN") && is_call {
            replace[i] = Some("LENGTH".to_string());
        } else if (is_word(token, "dbo") || *token == Tok::Ident("\"dbo\"".to_string()))
            && next == Some(&Tok::Punct('.'))
        {
            // SQLite would read `dbo.T` as table T of an attached database `dbo`.
            skip[i] = true;
            skip[sig[k + 1]] = true;
        } else if is_word(token, "@@VERSION") {
            replace[i] = Some("'escr TDS test server'".to_string());
        } else if is_word(token, "@@SPID") {
            replace[i] = Some("51".to_string());
        }
    }
    let mut out = String::with_capacity(tsql.len() + 16);
    for (i, token) in tokens.iter().enumerate() {
        if skip[i] {
            continue;
        }
        if let Some(r) = &replace[i] {
            out.push_str(r);
            continue;
        }
        match token {
            Tok::Space(s) | Tok::Word(s) | Tok::Str(s) | Tok::Ident(s) | Tok::Num(s) => {
                out.push_str(s)
            }
            Tok::Comment => out.push(' '),
            Tok::Punct(c) => out.push(*c),
        }
    }
    let mut out = out.trim_end().to_string();
    if let Some(n) = limit {
        out = format!("{out} LIMIT {n}");
    }
    Ok(Translated::Sql(out))
}

/// Removes `TOP n` / `TOP (n)` after the statement's first SELECT [DISTINCT|ALL] and
/// returns `n`, which becomes a `LIMIT` at the end.
fn take_top(tokens: &mut Vec<Tok>) -> Result<Option<String>, String> {
    let sig: Vec<usize> = significant(tokens).map(|(i, _)| i).collect();
    let Some(k_select) = sig.iter().position(|&i| is_word(&tokens[i], "SELECT")) else {
        return Ok(None);
    };
    let mut k = k_select + 1;
    if sig
        .get(k)
        .is_some_and(|&i| is_word(&tokens[i], "DISTINCT") || is_word(&tokens[i], "ALL"))
    {
        k += 1;
    }
    if !sig.get(k).is_some_and(|&i| is_word(&tokens[i], "TOP")) {
        return Ok(None);
    }
    let value_at = |k: usize| match sig.get(k).map(|&i| &tokens[i]) {
        Some(Tok::Num(n)) => Some(n.clone()),
        Some(Tok::Word(w)) if w.starts_with('@') => Some(w.clone()),
        _ => None,
    };
    let (n, last) = if let Some(n) = value_at(k + 1) {
        (n, k + 1)
    } else if sig.get(k + 1).map(|&i| &tokens[i]) == Some(&Tok::Punct('('))
        && sig.get(k + 3).map(|&i| &tokens[i]) == Some(&Tok::Punct(')'))
    {
        match value_at(k + 2) {
            Some(n) => (n, k + 3),
            None => return Err("Incorrect syntax near 'TOP'.".to_string()),
        }
    } else {
        return Err("Incorrect syntax near 'TOP'.".to_string());
    };
    if sig
        .get(last + 1)
        .is_some_and(|&i| is_word(&tokens[i], "PERCENT") || is_word(&tokens[i], "WITH"))
    {
        return Err("TOP ... PERCENT / WITH TIES is not supported by the test server.".into());
    }
    let (from, to) = (sig[k], sig[last]);
    tokens.drain(from..=to);
    if matches!(tokens.get(from), Some(Tok::Space(_))) {
        tokens.remove(from);
    }
    Ok(Some(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(t: &str) -> String {
        match translate(t).unwrap() {
            Translated::Sql(s) => s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rewrites_what_sqlite_lacks_and_leaves_literals_alone() {
        assert_eq!(
            sql("SELECT TOP 5 [Name], N'it''s' FROM dbo.[CLNT] WHERE A = @P1 ORDER BY 1;"),
            "SELECT \"Name\", 'it''s' FROM \"CLNT\" WHERE A = @P1 ORDER BY 1 LIMIT 5"
        );
        assert_eq!(
            sql("SELECT DISTINCT TOP (@P2) ISNULL(x, 'GETDATE()') FROM t"),
            "SELECT DISTINCT IFNULL(x, 'GETDATE()') FROM t LIMIT @P2"
        );
        assert_eq!(
            sql("select getdate() -- TOP 1\n"),
            "select datetime('now', 'localtime')"
        );
        assert_eq!(translate("SET TEXTSIZE 4096").unwrap(), Translated::NoOp);
        assert!(translate("SELECT 1; SELECT 2").is_err());
        assert!(translate("SELECT 'open").is_err());
    }
}
