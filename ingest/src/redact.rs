//! What a dead letter may keep of a body: the bytes as sent, less anything personal. It works on
//! the raw bytes, not on a parse: a body that no JSON library takes (a cut body, `1e400`, a
//! key spelled with escapes) must lose its phone as surely as a clean one.
//!
//! - The value of every member named like personal data (`phone`, `traits`, `email`, `name`,
//!   tokens), wherever it is, keys compared after their escapes are decoded, becomes
//!   `"[redacted]"`; a value cut off by the end of the body is redacted to the end.
//! - Every run of nine or more digits, counting spaces, dots, dashes, brackets and a plus between
//!   them (`0987 654 321`, `+84 (987) 654-321`), becomes `[digits]`.

/// Members whose values never reach a dead letter.
const PERSONAL: &[&str] =
    &["phone", "traits", "email", "name", "birthday", "access_token", "phone_token", "token", "code", "session", "refresh_token"];

/// The body with personal values and long digit runs replaced.
pub fn redact(raw: &[u8]) -> Vec<u8> {
    mask_digit_runs(&redact_members(raw))
}

/// The string value of the first member named `key` in a raw body, escapes left as sent: the
/// `event_id` and `type` of a dead letter, found without parsing the event (a rejected event may
/// not parse at all, and parsing every rejected event cost more than the rest of its handling).
pub fn string_member(raw: &[u8], key: &str) -> Option<String> {
    // Members of the top-level object only: depth 1.
    let (mut i, mut depth) = (0, 0usize);
    while i < raw.len() {
        match raw[i] {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if raw[i] != b'"' {
            i += 1;
            continue;
        }
        let end = string_end(raw, i);
        let is_key = depth == 1 && decoded_equals(contents(raw, i, end), key);
        i = end;
        let Some(j) = is_key.then(|| member_value(raw, i)).flatten() else { continue };
        if raw.get(j) != Some(&b'"') {
            return None;
        }
        return std::str::from_utf8(contents(raw, j, string_end(raw, j))).ok().map(str::to_string);
    }
    None
}

/// The inside of the string from `start` (its quote) to `end` ([`string_end`]).
fn contents(raw: &[u8], start: usize, end: usize) -> &[u8] {
    &raw[start + 1..end.saturating_sub(1).max(start + 1)]
}

/// After a string ending at `after`: when a colon follows (the string was a member's name),
/// where the member's value starts.
fn member_value(raw: &[u8], after: usize) -> Option<usize> {
    let skip = |mut j: usize| {
        while j < raw.len() && raw[j].is_ascii_whitespace() {
            j += 1;
        }
        j
    };
    let colon = skip(after);
    (raw.get(colon) == Some(&b':')).then(|| skip(colon + 1))
}

/// Replaces the values of [`PERSONAL`] members.
fn redact_members(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] != b'"' {
            out.push(raw[i]);
            i += 1;
            continue;
        }
        let end = string_end(raw, i);
        out.extend_from_slice(&raw[i..end]);
        let personal = PERSONAL.iter().any(|k| decoded_equals(contents(raw, i, end), k));
        i = end;
        // A member's name only when a colon follows.
        let Some(value) = personal.then(|| member_value(raw, i)).flatten() else { continue };
        out.extend_from_slice(&raw[i..value]);
        out.extend_from_slice(b"\"[redacted]\"");
        i = value_end(raw, value);
    }
    out
}

/// The index after the string starting at `start` (a quote), or the end of the body.
fn string_end(raw: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < raw.len() {
        match raw[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    raw.len()
}

/// The index after the JSON value starting at `start`, strings and nesting respected; the end of
/// the body when it is cut.
fn value_end(raw: &[u8], start: usize) -> usize {
    let mut depth = 0usize;
    let mut i = start;
    while i < raw.len() {
        match raw[i] {
            b'"' => {
                i = string_end(raw, i);
                if depth == 0 {
                    return i;
                }
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                if depth == 0 {
                    return i;
                }
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            b',' if depth == 0 => return i,
            _ => {}
        }
        i += 1;
    }
    raw.len()
}

/// Whether a string's contents, its escapes decoded, equal `key` (ASCII, any case). Decoded as
/// compared, without allocating: it runs for every string of every rejected event.
fn decoded_equals(s: &[u8], key: &str) -> bool {
    if !s.contains(&b'\\') {
        return s.eq_ignore_ascii_case(key.as_bytes());
    }
    let key = key.as_bytes();
    let (mut i, mut k) = (0, 0);
    while i < s.len() {
        let c = if s[i] == b'\\' && i + 1 < s.len() {
            if s[i + 1] == b'u' && i + 6 <= s.len() {
                let hex = std::str::from_utf8(&s[i + 2..i + 6]).ok().and_then(|h| u32::from_str_radix(h, 16).ok());
                i += 6;
                match hex.and_then(char::from_u32) {
                    Some(c) if c.is_ascii() => c as u8,
                    _ => return false,
                }
            } else {
                i += 2;
                s[i - 1]
            }
        } else {
            i += 1;
            s[i - 1]
        };
        if k >= key.len() || !c.eq_ignore_ascii_case(&key[k]) {
            return false;
        }
        k += 1;
    }
    k == key.len()
}

/// Replaces runs of nine or more digits, with separators (space, `.`, `-`, `(`, `)`, `+`)
/// between them, by `[digits]`: a run that stands alone, not one inside a longer word or id (a
/// UUID's digits are preceded by a hex letter or a dash).
fn mask_digit_runs(bytes: &[u8]) -> Vec<u8> {
    let sep = |b: u8| matches!(b, b' ' | b'.' | b'-' | b'(' | b')' | b'+');
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let starts = bytes[i].is_ascii_digit() || bytes[i] == b'+' || bytes[i] == b'(';
        if !starts || (i > 0 && (word(bytes[i - 1]) || bytes[i - 1] == b'-')) {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        // The longest stretch of digits and separators from here, ending on a digit.
        let (mut j, mut digits, mut end) = (i, 0, i);
        while j < bytes.len() && (bytes[j].is_ascii_digit() || sep(bytes[j])) {
            if bytes[j].is_ascii_digit() {
                digits += 1;
                end = j + 1;
            }
            j += 1;
        }
        if digits >= 9 && bytes.get(end).is_none_or(|b| !word(*b)) {
            out.extend_from_slice(b"[digits]");
            i = end;
        } else {
            // Not a phone: the whole stretch is copied (no part of it holds nine digits), so
            // every byte is looked at once.
            let stop = j.max(i + 1);
            out.extend_from_slice(&bytes[i..stop]);
            i = stop;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> String {
        String::from_utf8(redact(s.as_bytes())).unwrap()
    }

    #[test]
    fn personal_members_go_even_where_serde_json_cannot_parse_the_body() {
        // serde_json refuses 1e400; the gateway's own reader does not.
        let body = r#"{"type":"identify","properties":{"phone":"0987654321","traits":{"name":"Lan"},"x":1e400}}"#;
        assert!(serde_json::from_str::<serde_json::Value>(body).is_err());
        let out = r(body);
        assert!(!out.contains("0987654321") && !out.contains("Lan"), "{out}");
        assert!(out.contains(r#""phone":"[redacted]""#) && out.contains(r#""traits":"[redacted]""#) && out.contains("1e400"), "{out}");
    }

    #[test]
    fn spaced_and_bracketed_phones_are_masked() {
        for phone in ["0987 654 321", "+84 987-654-321", "(+84) 987.654.321", "84987654321"] {
            let out = r(&format!(r#"{{"note":"call {phone} now"}}"#));
            assert!(!out.chars().filter(char::is_ascii_digit).collect::<String>().contains("987"), "{phone} → {out}");
            assert!(out.contains("[digits]"), "{out}");
        }
        // Short numbers stay, and so do the digits of ids.
        assert_eq!(r(r#"{"quantity":2,"price":150000}"#), r#"{"quantity":2,"price":150000}"#);
        let id = r#"{"event_id":"3f2a9c1e-4b7d-4e21-9a3c-123456789012","order_id":"A1234567890"}"#;
        assert_eq!(r(id), id);
        // Separators without digits cost one pass, not one pass per byte.
        let brackets = format!(r#"{{"x":"{}"}}"#, "(".repeat(200_000));
        let started = std::time::Instant::now();
        assert_eq!(r(&brackets), brackets);
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "{:?}", started.elapsed());
    }

    #[test]
    fn keys_spelled_with_escapes_and_cut_bodies_are_redacted_too() {
        let out = r(r#"{"properties":{"ph\u006fne":"0912 000 111"}}"#);
        assert!(out.contains(r#""[redacted]""#) && !out.contains("0912"), "{out}");
        let out = r(r#"{"properties":{"traits":{"name":"Nguyễn Văn A","city":"Hà Nội""#);
        assert!(!out.contains("Nguyễn") && !out.contains("Hà Nội"), "{out}");
        let out = r(r#"{"access_token" : "tok-abc\"def", "x": 1}"#);
        assert_eq!(out, r#"{"access_token" : "[redacted]", "x": 1}"#);
        assert_eq!(string_member(br#"{"type" : "identify", "event_id":"e-1"}"#, "event_id").as_deref(), Some("e-1"));
        assert_eq!(string_member(br#"{"type":"identify"}"#, "type").as_deref(), Some("identify"));
        assert_eq!(string_member(br#"{"event_id":7}"#, "event_id"), None);
        assert_eq!(
            string_member(br#"{"properties":{"type":"gift"},"type":"voucher_claimed"}"#, "type").as_deref(),
            Some("voucher_claimed")
        );
        // A value that merely says "phone" is not a key.
        assert_eq!(r(r#"{"share_channel":"phone"}"#), r#"{"share_channel":"phone"}"#);
    }
}
