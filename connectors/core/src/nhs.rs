//! NHS numbers: normalisation and the modulus 11 check digit.

/// What a raw NHS-number value turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NhsNumber {
    /// Ten digits with a correct check digit.
    Valid(String),
    /// Ten digits whose check digit is wrong (kept: it may still help a human).
    InvalidCheckDigit(String),
    /// Not ten digits once spaces and dashes are removed.
    Malformed,
    /// A known "not known" value ('N/K', all zeros, all nines...).
    Placeholder,
    /// NULL or blank.
    Missing,
}

/// The check digit for nine digits, or `None` when the number cannot be valid
/// (remainder 10). Weights 10..2; check = 11 - (sum mod 11); 11 means 0.
pub fn check_digit(first_nine: &[u8; 9]) -> Option<u8> {
    let sum: u32 = first_nine
        .iter()
        .zip((2..=10u32).rev())
        .map(|(d, w)| u32::from(*d) * w)
        .sum();
    match 11 - (sum % 11) {
        11 => Some(0),
        10 => None,
        c => Some(c as u8),
    }
}

pub fn is_valid(digits: &str) -> bool {
    matches!(classify(digits, &[]), NhsNumber::Valid(_))
}

/// Classify a raw value: spaces and dashes are removed first; `placeholders` are compared
/// after that, case-insensitively. Repeated-digit numbers (0000000000, 9999999999...)
/// are placeholders whatever their check digit.
pub fn classify(raw: &str, placeholders: &[String]) -> NhsNumber {
    let compact: String = raw
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect();
    if compact.is_empty() {
        return NhsNumber::Missing;
    }
    if placeholders
        .iter()
        .any(|p| p.replace([' ', '-'], "").eq_ignore_ascii_case(&compact))
    {
        return NhsNumber::Placeholder;
    }
    if compact.len() != 10 || !compact.bytes().all(|b| b.is_ascii_digit()) {
        return NhsNumber::Malformed;
    }
    let bytes = compact.as_bytes();
    if bytes.iter().all(|b| *b == bytes[0]) {
        return NhsNumber::Placeholder;
    }
    let mut nine = [0u8; 9];
    for (slot, b) in nine.iter_mut().zip(bytes) {
        *slot = b - b'0';
    }
    match check_digit(&nine) {
        Some(c) if c == bytes[9] - b'0' => NhsNumber::Valid(compact),
        _ => NhsNumber::InvalidCheckDigit(compact),
    }
}

/// Display form: 943 476 5919.
pub fn format_spaced(digits: &str) -> String {
    if digits.len() == 10 {
        format!("{} {} {}", &digits[..3], &digits[3..6], &digits[6..])
    } else {
        digits.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_number_is_valid_in_every_spelling() {
        for raw in ["9434765919", "943 476 5919", " 943-476-5919 "] {
            assert_eq!(classify(raw, &[]), NhsNumber::Valid("9434765919".into()));
        }
    }

    #[test]
    fn a_wrong_check_digit_is_caught() {
        assert_eq!(
            classify("9434765918", &[]),
            NhsNumber::InvalidCheckDigit("9434765918".into())
        );
    }

    #[test]
    fn placeholders_missing_and_malformed() {
        let ph = vec!["N/K".to_string()];
        assert_eq!(classify("n/k", &ph), NhsNumber::Placeholder);
        assert_eq!(classify("0000000000", &[]), NhsNumber::Placeholder);
        assert_eq!(classify("   ", &[]), NhsNumber::Missing);
        assert_eq!(classify("12345", &[]), NhsNumber::Malformed);
        assert_eq!(classify("94347659AB", &[]), NhsNumber::Malformed);
    }

    #[test]
    fn remainder_ten_is_never_valid() {
        // Find nine digits whose check would be 10 and make sure no tenth digit passes.
        let nine = [0, 0, 0, 0, 0, 0, 0, 0, 1]; // sum = 2 -> 11 - 2 = 9, not 10
        assert_eq!(check_digit(&nine), Some(9));
        let nine = [0, 0, 0, 0, 0, 0, 0, 1, 0]; // sum = 3 -> 8
        assert_eq!(check_digit(&nine), Some(8));
        let ten = [1, 0, 0, 0, 0, 0, 0, 0, 0]; // sum = 10 -> 1
        assert_eq!(check_digit(&ten), Some(1));
        let none = [0, 0, 0, 0, 0, 0, 0, 0, 5]; // sum = 10 -> 1; weight 2*5
        assert_eq!(check_digit(&none), Some(1));
        let ten_case = [0, 0, 0, 0, 0, 0, 0, 0, 6]; // sum = 12 -> 12 mod 11 = 1 -> 10
        assert_eq!(check_digit(&ten_case), None);
    }
}
