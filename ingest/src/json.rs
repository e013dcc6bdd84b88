//! Reading request JSON in one pass, without serde. The gateway walks a body with a [`Reader`]:
//! member names and values come one at a time, scalars as [`Tok`]s (strings without escapes
//! borrowed from the body), and whatever the caller does not want is checked and stepped over,
//! so nothing is built that is not used and each byte is looked at once. [`parse`] builds a
//! whole borrowed tree instead, every value with its raw text.
//!
//! It accepts exactly RFC 8259 JSON: the grammar of numbers, escapes (surrogate pairs joined,
//! lone surrogates refused), no control characters inside strings, nothing after the value.
//! Nesting deeper than [`MAX_DEPTH`] is refused so a hostile body cannot exhaust the stack.

use std::borrow::Cow;
use std::fmt;

/// Deepest nesting of arrays and objects accepted.
pub const MAX_DEPTH: u32 = 64;

/// A JSON value and the text it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct Value<'a> {
    pub raw: &'a str,
    pub kind: Kind<'a>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind<'a> {
    Null,
    Bool(bool),
    /// A number, as written (valid JSON number syntax).
    Num(&'a str),
    Str(Cow<'a, str>),
    Array(Vec<Value<'a>>),
    Object(Fields<'a>),
}

/// An object's members, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields<'a> {
    items: Vec<(Cow<'a, str>, Value<'a>)>,
}

/// Where and why the text is not JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub at: usize,
    pub what: &'static str,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.what, self.at)
    }
}

impl std::error::Error for Error {}

/// Parses a whole JSON text.
pub fn parse(text: &str) -> Result<Value<'_>, Error> {
    let mut p = Reader::new(text);
    let v = p.value()?;
    p.finish()?;
    Ok(v)
}

/// A scalar as read, or an object or array kept as its raw text (checked, not built).
#[derive(Debug, Clone, PartialEq)]
pub enum Tok<'a> {
    Null,
    Bool(bool),
    Num(&'a str),
    Str(Cow<'a, str>),
    Object(&'a str),
    Array(&'a str),
}

impl<'a> Tok<'a> {
    /// The value as text: a string as itself, anything else as its JSON.
    pub fn into_text(self) -> Cow<'a, str> {
        match self {
            Tok::Null => Cow::Borrowed("null"),
            Tok::Bool(true) => Cow::Borrowed("true"),
            Tok::Bool(false) => Cow::Borrowed("false"),
            Tok::Str(s) => s,
            Tok::Num(raw) | Tok::Object(raw) | Tok::Array(raw) => Cow::Borrowed(raw),
        }
    }
}

/// A JSON text read a piece at a time: the caller walks objects and arrays and takes each value
/// as a [`Tok`], a [`Value`] tree, or skips it. Every byte is still checked, so a text that is
/// not JSON is refused wherever the error is.
pub struct Reader<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
    depth: u32,
    /// Members of the objects being read, innermost last; each object takes its own off the
    /// top when it closes, into a list of exactly its size (a batch's tree stays small).
    members: Vec<(Cow<'a, str>, Value<'a>)>,
}

impl<'a> Reader<'a> {
    pub fn new(text: &'a str) -> Reader<'a> {
        let mut r = Reader { s: text, b: text.as_bytes(), i: 0, depth: 0, members: Vec::new() };
        r.ws();
        r
    }

    /// Where the reader is, as a byte offset into the text.
    pub fn pos(&self) -> usize {
        self.i
    }

    /// The text from `start` to where the reader is.
    pub fn since(&self, start: usize) -> &'a str {
        &self.s[start..self.i]
    }

    /// The next byte (whitespace is always skipped already).
    pub fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// The text must end here (whitespace aside).
    pub fn finish(&mut self) -> Result<(), Error> {
        self.ws();
        if self.i != self.b.len() {
            return Err(self.err("unexpected characters after the JSON value"));
        }
        Ok(())
    }

    /// Enters the object that is next; false when it is empty (and already left).
    pub fn open_object(&mut self) -> Result<bool, Error> {
        if self.peek() != Some(b'{') {
            return Err(self.err("expected an object"));
        }
        self.enter()?;
        Ok(!self.leave(b'}'))
    }

    /// A member's name and the `:` after it; the value is next.
    pub fn key(&mut self) -> Result<Cow<'a, str>, Error> {
        if self.peek() != Some(b'"') {
            return Err(self.err("expected a member name in double quotes"));
        }
        let key = self.string()?;
        // `"name":value`, as JSON is usually sent, in one step; whitespace around the `:` too.
        if self.peek() != Some(b':') {
            self.ws();
            if self.peek() != Some(b':') {
                return Err(self.err("expected ':' after a member name"));
            }
        }
        self.i += 1;
        self.ws();
        Ok(key)
    }

    /// After a member's value: true when another member follows, false at the object's end.
    pub fn next_member(&mut self) -> Result<bool, Error> {
        Ok(!self.next_or_close(b'}', "expected ',' or '}' in an object")?)
    }

    /// Enters the array that is next; false when it is empty (and already left).
    pub fn open_array(&mut self) -> Result<bool, Error> {
        if self.peek() != Some(b'[') {
            return Err(self.err("expected an array"));
        }
        self.enter()?;
        Ok(!self.leave(b']'))
    }

    /// After an element: true when another follows, false at the array's end.
    pub fn next_element(&mut self) -> Result<bool, Error> {
        Ok(!self.next_or_close(b']', "expected ',' or ']' in an array")?)
    }

    /// The next value as a [`Tok`]: objects and arrays are checked and kept as raw text.
    pub fn token(&mut self) -> Result<Tok<'a>, Error> {
        let start = self.i;
        Ok(match self.peek() {
            Some(b'"') => Tok::Str(self.string()?),
            Some(b'{') => {
                self.skip()?;
                Tok::Object(self.since(start))
            }
            Some(b'[') => {
                self.skip()?;
                Tok::Array(self.since(start))
            }
            Some(b'-' | b'0'..=b'9') => Tok::Num(self.number()?),
            Some(b't') => self.literal("true", Tok::Bool(true))?,
            Some(b'f') => self.literal("false", Tok::Bool(false))?,
            Some(b'n') => self.literal("null", Tok::Null)?,
            Some(_) => return Err(self.err("expected a JSON value")),
            None => return Err(self.err("unexpected end of the JSON text")),
        })
    }

    /// Checks the next value and steps over it, building nothing.
    pub fn skip(&mut self) -> Result<(), Error> {
        match self.peek() {
            Some(b'{') => {
                if self.open_object()? {
                    loop {
                        self.key()?;
                        self.skip()?;
                        if !self.next_member()? {
                            break;
                        }
                    }
                }
            }
            Some(b'[') => {
                if self.open_array()? {
                    loop {
                        self.skip()?;
                        if !self.next_element()? {
                            break;
                        }
                    }
                }
            }
            _ => {
                self.token()?;
            }
        }
        Ok(())
    }

    fn err(&self, what: &'static str) -> Error {
        Error { at: self.i, what }
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// The next value as a tree.
    pub fn value(&mut self) -> Result<Value<'a>, Error> {
        let start = self.i;
        let kind = match self.peek() {
            Some(b'{') => Kind::Object(self.object()?),
            Some(b'[') => Kind::Array(self.array()?),
            _ => match self.token()? {
                Tok::Null => Kind::Null,
                Tok::Bool(b) => Kind::Bool(b),
                Tok::Num(n) => Kind::Num(n),
                Tok::Str(s) => Kind::Str(s),
                Tok::Object(_) | Tok::Array(_) => unreachable!("objects and arrays are read above"),
            },
        };
        Ok(Value { raw: &self.s[start..self.i], kind })
    }

    fn literal(&mut self, word: &'static str, tok: Tok<'a>) -> Result<Tok<'a>, Error> {
        if self.b[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(tok)
        } else {
            Err(self.err("expected true, false or null"))
        }
    }

    fn enter(&mut self) -> Result<(), Error> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        self.i += 1;
        self.ws();
        Ok(())
    }

    /// Consumes `close` if it is next, leaving the object or array.
    fn leave(&mut self, close: u8) -> bool {
        if self.b.get(self.i) != Some(&close) {
            return false;
        }
        self.i += 1;
        self.depth -= 1;
        true
    }

    /// After an element: `,` (another follows) or `close` (true: the end).
    fn next_or_close(&mut self, close: u8, what: &'static str) -> Result<bool, Error> {
        self.ws();
        if self.leave(close) {
            return Ok(true);
        }
        if self.b.get(self.i) != Some(&b',') {
            return Err(self.err(what));
        }
        self.i += 1;
        self.ws();
        Ok(false)
    }

    fn object(&mut self) -> Result<Fields<'a>, Error> {
        let base = self.members.len();
        if self.open_object()? {
            loop {
                let key = self.key()?;
                let v = self.value()?;
                self.members.push((key, v));
                if !self.next_member()? {
                    break;
                }
            }
        }
        Ok(Fields { items: self.members.drain(base..).collect() })
    }

    fn array(&mut self) -> Result<Vec<Value<'a>>, Error> {
        let mut items = Vec::new();
        if self.open_array()? {
            loop {
                items.push(self.value()?);
                if !self.next_element()? {
                    break;
                }
            }
        }
        Ok(items)
    }

    /// A string, the opening quote at `self.i`. Borrowed from the text unless it has escapes.
    ///
    /// Nearly every string of a request is short and plain, so that case is a few instructions
    /// inlined where it is read; escapes, and the last bytes of the text, take the loop.
    #[inline]
    fn string(&mut self) -> Result<Cow<'a, str>, Error> {
        let start = self.i + 1;
        match scan(self.b, start) {
            Ok(end) if self.b[end] == b'"' => {
                self.i = end + 1;
                // SAFETY: `start` follows an ASCII `"` and `end` is on one: both are character
                // boundaries of the text (a `str`).
                Ok(Cow::Borrowed(unsafe { self.s.get_unchecked(start..end) }))
            }
            _ => {
                self.i = start;
                self.string_rest(start)
            }
        }
    }

    /// The rest of a string that [`Reader::string`] could not finish in one step: escapes,
    /// control characters, the end of the text.
    #[inline(never)]
    fn string_rest(&mut self, start: usize) -> Result<Cow<'a, str>, Error> {
        // Unescaped text since the last escape, and what came before it (once there was one).
        let (mut run, mut owned): (usize, Option<String>) = (start, None);
        loop {
            self.skip_plain();
            match self.b.get(self.i) {
                Some(b'"') => {
                    let tail = &self.s[run..self.i];
                    self.i += 1;
                    return Ok(match owned {
                        None => Cow::Borrowed(tail),
                        Some(mut out) => {
                            out.push_str(tail);
                            Cow::Owned(out)
                        }
                    });
                }
                Some(b'\\') => {
                    let out = owned.get_or_insert_with(|| String::with_capacity(self.i - run + 16));
                    out.push_str(&self.s[run..self.i]);
                    self.i += 1;
                    let c = match self.b.get(self.i) {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => self.unicode_escape()?,
                        _ => return Err(self.err("invalid escape in a string")),
                    };
                    out.push(c);
                    self.i += 1;
                    run = self.i;
                }
                Some(0..=0x1f) => return Err(self.err("control character inside a string")),
                Some(_) => self.i += 1,
                None => return Err(self.err("unterminated string")),
            }
        }
    }

    /// Steps over string bytes that need no attention, up to the first that does or to the
    /// last bytes of the text, which the caller looks at one by one.
    fn skip_plain(&mut self) {
        #[cfg(target_arch = "x86_64")]
        match scan16(self.b, self.i) {
            Ok(at) => {
                self.i = at;
                return;
            }
            Err(at) => self.i = at,
        }
        self.i = scan8(self.b, self.i).unwrap_or_else(|at| at);
    }

    /// `\uXXXX` (and the low half of a surrogate pair), `self.i` at the `u`; leaves `self.i` on
    /// the last hex digit.
    fn unicode_escape(&mut self) -> Result<char, Error> {
        let hex4 = |p: &Reader<'_>, at: usize| -> Result<u32, Error> {
            let digits = p.b.get(at..at + 4).ok_or_else(|| p.err("short \\u escape"))?;
            let text = std::str::from_utf8(digits).map_err(|_| p.err("invalid \\u escape"))?;
            if !text.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(p.err("invalid \\u escape"));
            }
            u32::from_str_radix(text, 16).map_err(|_| p.err("invalid \\u escape"))
        };
        let hi = hex4(self, self.i + 1)?;
        self.i += 4;
        match hi {
            0xD800..=0xDBFF => {
                if self.b.get(self.i + 1..self.i + 3) != Some(b"\\u") {
                    return Err(self.err("lone surrogate in a \\u escape"));
                }
                let lo = hex4(self, self.i + 3)?;
                if !(0xDC00..=0xDFFF).contains(&lo) {
                    return Err(self.err("lone surrogate in a \\u escape"));
                }
                self.i += 6;
                char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)).ok_or_else(|| self.err("invalid \\u escape"))
            }
            0xDC00..=0xDFFF => Err(self.err("lone surrogate in a \\u escape")),
            c => char::from_u32(c).ok_or_else(|| self.err("invalid \\u escape")),
        }
    }

    fn number(&mut self) -> Result<&'a str, Error> {
        let start = self.i;
        let digits = |p: &mut Reader<'_>| {
            let from = p.i;
            while let Some(b'0'..=b'9') = p.b.get(p.i) {
                p.i += 1;
            }
            p.i > from
        };
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        match self.b.get(self.i) {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return Err(self.err("invalid number")),
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            if !digits(self) {
                return Err(self.err("invalid number: digits must follow the decimal point"));
            }
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            if !digits(self) {
                return Err(self.err("invalid number: digits must follow the exponent"));
            }
        }
        Ok(&self.s[start..self.i])
    }
}

/// The first byte from `i` on that a string must look at: `"`, `\\` or a control character
/// (`Ok`), or where the whole chunks ran out before one (`Err`). The widest scanner this machine
/// has: most strings of a request end within its first chunk.
#[inline]
fn scan(b: &[u8], i: usize) -> Result<usize, usize> {
    #[cfg(target_arch = "x86_64")]
    return scan16(b, i);
    #[cfg(not(target_arch = "x86_64"))]
    return scan8(b, i);
}

/// [`scan`], sixteen bytes at a time with SSE2 (in every x86-64).
#[cfg(target_arch = "x86_64")]
#[inline]
fn scan16(b: &[u8], mut i: usize) -> Result<usize, usize> {
    use std::arch::x86_64::*;
    while let Some(chunk) = b.get(i..i + 16) {
        // SAFETY: the load reads the sixteen bytes of `chunk`; SSE2 is in the x86-64 baseline.
        let special = unsafe {
            let w = _mm_loadu_si128(chunk.as_ptr().cast());
            let quote = _mm_cmpeq_epi8(w, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(w, _mm_set1_epi8(b'\\' as i8));
            // Bytes up to 0x1f, unsigned: those the unsigned minimum with 0x1f leaves alone.
            let control = _mm_cmpeq_epi8(_mm_min_epu8(w, _mm_set1_epi8(0x1f)), w);
            _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) as u32
        };
        if special != 0 {
            return Ok(i + special.trailing_zeros() as usize);
        }
        i += 16;
    }
    Err(i)
}

/// [`scan`], eight bytes at a time in a `u64`.
#[inline]
fn scan8(b: &[u8], mut i: usize) -> Result<usize, usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // A byte of `x` is zero: the classic has-zero-byte test.
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    while let Some(chunk) = b.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let quote = has_zero(w ^ (ONES * u64::from(b'"')));
        let backslash = has_zero(w ^ (ONES * u64::from(b'\\')));
        // Bytes below 0x20: subtracting 0x20 borrows into the high bit (bytes >= 0x80 are
        // masked out by `!w`).
        let control = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
        let special = quote | backslash | control;
        if special != 0 {
            // The lowest flagged byte is exact (borrows only run upwards).
            return Ok(i + (special.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    Err(i)
}

impl Value<'_> {
    pub fn is_null(&self) -> bool {
        self.kind == Kind::Null
    }
}

impl<'a> Fields<'a> {
    /// Takes a member out (the last one, if the key is repeated, as JSON parsers do).
    pub fn take(&mut self, key: &str) -> Option<Value<'a>> {
        let i = self.items.iter().rposition(|(k, _)| k == key)?;
        // Earlier copies of the key (rare) go too; only the members before `i` can be one.
        let repeated = self.items[..i].iter().any(|(k, _)| k == key);
        let v = self.items.swap_remove(i).1;
        if repeated {
            self.items.retain(|(k, _)| k != key);
        }
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_come_one_at_a_time_borrowed_and_typed() {
        let text = r#"{"a": "x", "b": 12.5, "c": {"d": [1]}, "e": "line\nbreak", "f": null, "g": true, "h": [2, {}]}"#;
        let mut r = Reader::new(text);
        let mut got = Vec::new();
        assert!(r.open_object().unwrap());
        loop {
            let key = r.key().unwrap();
            got.push((key.into_owned(), r.token().unwrap()));
            if !r.next_member().unwrap() {
                break;
            }
        }
        r.finish().unwrap();
        assert!(matches!(got[0].1, Tok::Str(Cow::Borrowed("x"))));
        assert_eq!(got[1].1, Tok::Num("12.5"));
        assert_eq!(got[2].1, Tok::Object(r#"{"d": [1]}"#));
        assert!(matches!(got[3].1, Tok::Str(Cow::Owned(ref s)) if s == "line\nbreak"));
        assert_eq!(got[4].1, Tok::Null);
        assert_eq!(got[5].1, Tok::Bool(true));
        assert_eq!(got[6].1, Tok::Array("[2, {}]"));
        assert_eq!(got.iter().map(|(k, _)| k.as_str()).collect::<String>(), "abcefgh");
        assert_eq!(got[2].1.clone().into_text(), r#"{"d": [1]}"#);
        assert!(matches!(parse("[1]").unwrap().kind, Kind::Array(_)));
    }

    /// The same texts through serde_json: both accept or both refuse, and agree on the values.
    #[test]
    fn agrees_with_serde_json() {
        fn to_serde(v: &Value<'_>) -> serde_json::Value {
            match &v.kind {
                Kind::Null => serde_json::Value::Null,
                Kind::Bool(b) => serde_json::Value::Bool(*b),
                Kind::Num(n) => serde_json::from_str(n).unwrap(),
                Kind::Str(s) => serde_json::Value::String(s.to_string()),
                Kind::Array(a) => serde_json::Value::Array(a.iter().map(to_serde).collect()),
                Kind::Object(f) => {
                    let mut m = serde_json::Map::new();
                    for (k, v) in &f.items {
                        m.insert(k.to_string(), to_serde(v));
                    }
                    serde_json::Value::Object(m)
                }
            }
        }
        let texts = [
            r#"{"event_id":"5b0b2c1e-0000-4000-8000-000000000001","type":"page_viewed","user":{"zalo_id":"z1"},"properties":{"price":-12.5e+3,"n":0,"items":[{"q":1},[],{}]}}"#,
            r#" [1, 2.0, -0.5, 1E9, true, false, null, "a\"b\\c\/d\b\f\n\r\t", "\u00e9\u1ea1 \ud83d\ude00", "Trang chủ"] "#,
            r#"{}"#,
            r#"[]"#,
            r#""plain""#,
            r#"{"a":1,}"#,
            r#"[1,]"#,
            r#"{"a" 1}"#,
            r#"{a:1}"#,
            r#"01"#,
            r#"1."#,
            r#"-"#,
            r#"1e"#,
            r#"+1"#,
            r#""\x""#,
            r#""\ud800""#,
            r#""\udc00x""#,
            "\"tab\tinside\"",
            "\"a longer plain string, then\u{1}a control character\"",
            r#""a longer plain string with an escaped \" quote and a \\ backslash after 30 bytes""#,
            r#"{"k": "Tiếng Việt có dấu, đủ dài để qua vài khối tám byte", "n": "0123456789abcdef"}"#,
            "\"sixteen bytes ok\"",
            "\"unterminated after a long run of plain bytes",
            r#"{"a":1} x"#,
            r#"nul"#,
            r#"[1 2]"#,
            r#""unterminated"#,
            "",
            "   ",
        ];
        for t in texts {
            let ours = parse(t);
            let theirs = serde_json::from_str::<serde_json::Value>(t);
            // Stepping over the text accepts and refuses exactly what building the tree does.
            let mut r = Reader::new(t);
            assert_eq!(r.skip().and_then(|()| r.finish()).is_ok(), ours.is_ok(), "{t}");
            match (&ours, &theirs) {
                (Ok(a), Ok(b)) => assert_eq!(&to_serde(a), b, "{t}"),
                (Err(_), Err(_)) => {}
                _ => panic!("{t:?}: ours {ours:?}, serde_json {theirs:?}"),
            }
        }
    }

    /// The sixteen- and eight-bytes-at-a-time scans must stop exactly on a quote, backslash or
    /// control character wherever it falls in a chunk, and on multi-byte UTF-8 around it.
    #[test]
    fn special_bytes_at_every_position_agree_with_serde_json() {
        for len in 0..40 {
            for at in 0..=len {
                for special in ["\\\"", "\\\\", "\\n", "\\u00e9", "\u{1}", "\u{1f}", "\"", "ệ", " ", "\u{7f}", "\u{80}"] {
                    let mut text = String::from("\"");
                    text.push_str(&"a".repeat(at));
                    text.push_str(special);
                    text.push_str(&"b".repeat(len - at));
                    text.push_str("\",1]");
                    let text = format!("[{text}");
                    let ours = parse(&text).map(|v| match v.kind {
                        Kind::Array(a) => match &a[0].kind {
                            Kind::Str(s) => s.to_string(),
                            _ => panic!("a string"),
                        },
                        _ => panic!("an array"),
                    });
                    let theirs = serde_json::from_str::<(String, i32)>(&text).map(|(s, _)| s);
                    match (ours, theirs) {
                        (Ok(a), Ok(b)) => assert_eq!(a, b, "{text:?}"),
                        (Err(_), Err(_)) => {}
                        (a, b) => panic!("{text:?}: ours {a:?}, serde_json {b:?}"),
                    }
                }
            }
        }
    }

    #[test]
    fn raw_text_is_kept_for_every_value() {
        let v = parse(r#"{"events": [ {"a": 1} , {"b": "x"} ]}"#).unwrap();
        let Kind::Object(mut f) = v.kind else { panic!() };
        let events = f.take("events").unwrap();
        assert_eq!(events.raw, r#"[ {"a": 1} , {"b": "x"} ]"#);
        let Kind::Array(events) = events.kind else { panic!("an array") };
        assert_eq!(events.iter().map(|e| e.raw).collect::<Vec<_>>(), vec![r#"{"a": 1}"#, r#"{"b": "x"}"#]);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = "[".repeat(MAX_DEPTH as usize + 1) + &"]".repeat(MAX_DEPTH as usize + 1);
        assert_eq!(parse(&deep).unwrap_err().what, "nested too deeply");
        let ok = "[".repeat(MAX_DEPTH as usize) + &"]".repeat(MAX_DEPTH as usize);
        assert!(parse(&ok).is_ok());
    }
}
