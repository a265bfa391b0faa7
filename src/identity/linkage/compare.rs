//! Field normalisation and comparators for linkage: Soundex, Jaro-Winkler (the strsim
//! crate's) and a UK postcode shape check. Soundex and the postcode check are written
//! here: they are a few lines each, and their behaviour on the dirty shapes legacy
//! systems produce (apostrophes, placeholders, "N51 ABC") is ours to test.

/// Upper-case ASCII letters only: "O'Brien" -> "OBRIEN", "smith " -> "SMITH".
pub fn name_key(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphabetic())
        .flat_map(char::to_uppercase)
        .collect()
}

/// The first word of a given-names field, normalised ("Mary Ann" -> "MARY").
pub fn first_given(s: &str) -> String {
    s.split(|c: char| c.is_whitespace() || c == '-')
        .map(name_key)
        .find(|w| !w.is_empty())
        .unwrap_or_default()
}

/// American Soundex (letter + three digits), with the H/W rule. Empty for no letters.
pub fn soundex(s: &str) -> String {
    let letters: Vec<char> = s
        .chars()
        .filter(|c| c.is_ascii_alphabetic())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let Some(&first) = letters.first() else {
        return String::new();
    };
    let code = |c: char| match c {
        'B' | 'F' | 'P' | 'V' => '1',
        'C' | 'G' | 'J' | 'K' | 'Q' | 'S' | 'X' | 'Z' => '2',
        'D' | 'T' => '3',
        'L' => '4',
        'M' | 'N' => '5',
        'R' => '6',
        'H' | 'W' => 'h',
        _ => '0',
    };
    let mut out = String::with_capacity(4);
    out.push(first);
    let mut last = code(first);
    for &c in &letters[1..] {
        let d = code(c);
        if d == 'h' {
            // H and W do not separate letters with the same code.
            continue;
        }
        if d != '0' && d != last {
            out.push(d);
            if out.len() == 4 {
                break;
            }
        }
        last = d;
    }
    while out.len() < 4 {
        out.push('0');
    }
    out
}

/// Jaro-Winkler similarity in [0, 1] (strsim's: prefix scale 0.1, up to 4 characters).
pub fn jaro_winkler(a: &str, b: &str) -> f64 {
    strsim::jaro_winkler(a, b)
}

/// A UK postcode in a plausible shape, upper case without spaces ("NS11 2AB" ->
/// "NS112AB"); `None` for placeholders and junk ("NOT KNOWN", "00000", "N51 ABC").
pub fn postcode_key(s: &str) -> Option<String> {
    let p: String = s
        .chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_uppercase)
        .collect();
    if !(5..=7).contains(&p.len()) || !p.is_ascii() {
        return None;
    }
    let (outward, inward) = p.split_at(p.len() - 3);
    let inward: Vec<char> = inward.chars().collect();
    let inward_ok = inward[0].is_ascii_digit()
        && inward[1].is_ascii_alphabetic()
        && inward[2].is_ascii_alphabetic();
    let outward_ok = outward
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && outward.chars().all(|c| c.is_ascii_alphanumeric())
        && outward.chars().any(|c| c.is_ascii_digit());
    (inward_ok && outward_ok).then_some(p)
}

/// The outward code (district) of a normalised postcode.
pub fn postcode_district(key: &str) -> &str {
    &key[..key.len().saturating_sub(3)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soundex_classic_examples() {
        assert_eq!(soundex("Robert"), "R163");
        assert_eq!(soundex("Rupert"), "R163");
        assert_eq!(soundex("Ashcraft"), "A261");
        assert_eq!(soundex("Tymczak"), "T522");
        assert_eq!(soundex("Pfister"), "P236");
        assert_eq!(soundex("O'Brien"), "O165");
        assert_eq!(soundex(""), "");
    }

    #[test]
    fn jaro_winkler_reference_values() {
        let close = |a: f64, b: f64| (a - b).abs() < 0.001;
        assert!(close(jaro_winkler("MARTHA", "MARHTA"), 0.961));
        assert!(close(jaro_winkler("DWAYNE", "DUANE"), 0.840));
        assert!(close(jaro_winkler("DIXON", "DICKSONX"), 0.813));
        assert_eq!(jaro_winkler("SMITH", "SMITH"), 1.0);
        assert_eq!(jaro_winkler("ABC", "XYZ"), 0.0);
    }

    #[test]
    fn postcodes_shapes() {
        assert_eq!(postcode_key("ns11 2ab").as_deref(), Some("NS112AB"));
        assert_eq!(postcode_key("SW1A 1AA").as_deref(), Some("SW1A1AA"));
        for bad in ["NOT KNOWN", "NS", "N51 ABC", "00000", ""] {
            assert_eq!(postcode_key(bad), None, "{bad}");
        }
        assert_eq!(postcode_district("NS112AB"), "NS11");
    }

    #[test]
    fn names_normalise() {
        assert_eq!(name_key("O'Brien"), "OBRIEN");
        assert_eq!(first_given(" Mary-Ann Jo"), "MARY");
    }
}
