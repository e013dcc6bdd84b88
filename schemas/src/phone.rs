//! Vietnamese mobile numbers: one normal form, `84` + 9 digits, as Zalo's ZNS API takes them.
//!
//! Accepts `0987654321`, `+84 987 654 321`, `84-987-654-321`, `(+84) 987.654.321`, and the
//! 11-digit numbers from before the 2018 renumbering (`0168 xxx xxxx` → `038 xxx xxxx`).

/// The 2018 renumbering of 11-digit mobile prefixes (Ministry of Information and
/// Communications): old prefix (without the leading 0) → new prefix.
const OLD_PREFIXES: &[(&str, &str)] = &[
    // MobiFone
    ("120", "70"),
    ("121", "79"),
    ("122", "77"),
    ("126", "76"),
    ("128", "78"),
    // VinaPhone
    ("123", "83"),
    ("124", "84"),
    ("125", "85"),
    ("127", "81"),
    ("129", "82"),
    // Viettel
    ("162", "32"),
    ("163", "33"),
    ("164", "34"),
    ("165", "35"),
    ("166", "36"),
    ("167", "37"),
    ("168", "38"),
    ("169", "39"),
    // Vietnamobile
    ("186", "56"),
    ("188", "58"),
    // Gmobile
    ("199", "59"),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("phone has characters other than digits, spaces, '+', '-', '.', '(' and ')'")]
    BadCharacters,
    #[error("phone is not a Vietnamese mobile number (expected 0xxxxxxxxx, 84xxxxxxxxx or +84xxxxxxxxx)")]
    NotVietnameseMobile,
}

/// Normalises a Vietnamese mobile number to `84xxxxxxxxx`.
pub fn normalize_vn_phone(input: &str) -> Result<String, PhoneError> {
    let mut digits = String::with_capacity(input.len());
    for c in input.trim().chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' | '+' => {}
            _ => return Err(PhoneError::BadCharacters),
        }
    }
    // The national significant number, without 0 or 84.
    let national = if let Some(rest) = digits.strip_prefix("84").filter(|r| r.len() >= 9) {
        // "+84 0987…" happens: drop the trunk 0 after the country code too.
        rest.strip_prefix('0').filter(|r| r.len() >= 9).unwrap_or(rest)
    } else if let Some(rest) = digits.strip_prefix('0') {
        rest
    } else if digits.len() == 9 {
        digits.as_str()
    } else {
        return Err(PhoneError::NotVietnameseMobile);
    };
    let national = match national.len() {
        9 => national.to_string(),
        10 => {
            let (old, rest) = national.split_at(3);
            let new = OLD_PREFIXES.iter().find(|(o, _)| *o == old).map(|(_, n)| *n).ok_or(PhoneError::NotVietnameseMobile)?;
            format!("{new}{rest}")
        }
        _ => return Err(PhoneError::NotVietnameseMobile),
    };
    // Mobile numbers start with 3, 5, 7, 8 or 9 after the country code.
    if !matches!(national.as_bytes()[0], b'3' | b'5' | b'7' | b'8' | b'9') {
        return Err(PhoneError::NotVietnameseMobile);
    }
    Ok(format!("84{national}"))
}

/// The E.164 form, `+84…`, from a normalised number.
pub fn e164(normalized: &str) -> String {
    format!("+{normalized}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_spellings_normalise_to_84() {
        for input in ["0987654321", "+84987654321", "84987654321", "+84 987 654 321", "(+84) 987.654.321", "098-765-4321", "987654321"] {
            assert_eq!(normalize_vn_phone(input).as_deref(), Ok("84987654321"), "{input}");
        }
    }

    #[test]
    fn old_eleven_digit_prefixes_are_remapped() {
        assert_eq!(normalize_vn_phone("01681234567").as_deref(), Ok("84381234567"));
        assert_eq!(normalize_vn_phone("+84 1281234567").as_deref(), Ok("84781234567"));
        assert_eq!(normalize_vn_phone("01991234567").as_deref(), Ok("84591234567"));
        assert_eq!(normalize_vn_phone("01231234567").as_deref(), Ok("84831234567"));
    }

    #[test]
    fn non_mobile_and_garbage_are_refused() {
        assert_eq!(normalize_vn_phone("02838123456"), Err(PhoneError::NotVietnameseMobile)); // HCMC landline
        assert_eq!(normalize_vn_phone("12345"), Err(PhoneError::NotVietnameseMobile));
        assert_eq!(normalize_vn_phone("01001234567"), Err(PhoneError::NotVietnameseMobile));
        assert_eq!(normalize_vn_phone("0987abc321"), Err(PhoneError::BadCharacters));
        assert_eq!(normalize_vn_phone(""), Err(PhoneError::NotVietnameseMobile));
    }

    #[test]
    fn e164_adds_the_plus() {
        assert_eq!(e164("84987654321"), "+84987654321");
    }
}
