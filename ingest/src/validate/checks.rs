//! The scalar checks and times: text, whole numbers, required members, RFC 3339 times, and the
//! envelope's time fields corrected for the device's clock.

use std::borrow::Cow;
use std::fmt;

use chrono::DateTime;

use schemas::avro_write::write_long;

use super::avro::{put_opt_long, put_str};
use super::{Result, STALE_AFTER_MS, invalid, missing};
use crate::json::Tok;

/// Where a member is, for messages: `properties.price`, `properties.items[2].quantity`.
#[derive(Clone, Copy)]
pub(super) enum Scope {
    Properties,
    Context,
    Traits,
    Item(usize),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Properties => f.write_str("properties"),
            Scope::Context => f.write_str("context"),
            Scope::Traits => f.write_str("properties.traits"),
            Scope::Item(i) => write!(f, "properties.items[{i}]"),
        }
    }
}

/// Longest id a named member may hold (`product_id`, `cart_id`, `order_id`, …), in bytes.
pub const MAX_ID_BYTES: usize = 128;
/// Longest text a named member may hold where the processors keep it (names, categories, search
/// terms, context), in bytes of UTF-8: about 85 Vietnamese characters at the worst.
pub const MAX_TEXT_BYTES: usize = 256;
/// Longest free text (`reason`, `page_title`, `referrer`), in bytes.
pub const MAX_LONG_TEXT_BYTES: usize = 1024;
/// Largest amount of money, in VND: ten thousand billion dong.
pub const MAX_VND: i64 = 10_000_000_000_000;
/// Largest quantity, and largest value of any other whole number but money.
pub const MAX_QUANTITY: i64 = 1_000_000;
/// Largest value of the counts that are not quantities (`dwell_ms`, `results_count`, `points`).
pub const MAX_COUNT: i64 = 1_000_000_000_000;

/// The longest text a named member may hold. These bounds keep every piece of per-user state,
/// and so every changelog record, far below what Kafka accepts (docs/http-api.md, Limits).
#[inline]
fn max_text(key: &str) -> usize {
    match key {
        "reason" | "page_title" | "referrer" => MAX_LONG_TEXT_BYTES,
        "voucher_code" | "referral_code" | "status" | "payment_method" | "share_channel" | "policy_version" | "interaction" | "purpose"
        | "gender" | "birthday" => MAX_ID_BYTES,
        _ if key.ends_with("_id") => MAX_ID_BYTES,
        _ => MAX_TEXT_BYTES,
    }
}

#[cold]
fn too_long(scope: Scope, key: &str, len: usize) -> super::Rejection {
    invalid(format_args!("{scope}.{key}"), &format!("is {len} bytes; the limit is {} bytes", max_text(key)))
}

/// A text value: strings, or numbers and booleans written as text (product ids are often numbers).
#[inline]
pub(super) fn text<'a>(v: Tok<'a>, scope: Scope, key: &str) -> Result<Option<Cow<'a, str>>> {
    match v {
        Tok::Null => Ok(None),
        Tok::Object(_) | Tok::Array(_) => Err(invalid(format_args!("{scope}.{key}"), "must be a string")),
        scalar => {
            let s = scalar.into_text();
            // Most texts are short: the bound by name is looked up only past the shortest one.
            if s.len() > MAX_ID_BYTES && s.len() > max_text(key) {
                return Err(too_long(scope, key, s.len()));
            }
            Ok(Some(s))
        }
    }
}

/// A text value (as [`text`]) written straight into the record as a `["null", string]` union;
/// its length in bytes when it was there. It repeats `text`'s rule rather than calling it and
/// `put_opt_str`: the `Option<Cow>` in between cost ~1,200 instructions an event (callgrind).
#[inline(always)]
pub(super) fn put_text(out: &mut Vec<u8>, v: Tok<'_>, scope: Scope, key: &str) -> Result<Option<usize>> {
    match v {
        Tok::Null => {
            out.push(0);
            Ok(None)
        }
        Tok::Object(_) | Tok::Array(_) => Err(invalid(format_args!("{scope}.{key}"), "must be a string")),
        scalar => {
            let s = scalar.into_text();
            // Most texts are short: the bound by name is looked up only past the shortest one.
            if s.len() > MAX_ID_BYTES && s.len() > max_text(key) {
                return Err(too_long(scope, key, s.len()));
            }
            out.push(2);
            put_str(out, &s);
            Ok(Some(s.len()))
        }
    }
}

/// A whole number from `min` to its bound: [`MAX_VND`] for money (whose message says so),
/// [`MAX_QUANTITY`] for quantities, [`MAX_COUNT`] for the rest.
pub(super) fn integer(v: Tok<'_>, scope: Scope, key: &str, min: i64, money: bool) -> Result<Option<i64>> {
    let field = format_args!("{scope}.{key}");
    let what = if money { "must be a whole number of VND (dong), without decimals" } else { "must be a whole number" };
    let v = match v {
        Tok::Null => return Ok(None),
        // Whole numbers first; 1.5e3 or 2000.0 only when that fails.
        Tok::Num(n) => match n.parse::<i64>() {
            Ok(i) => i,
            Err(_) => match n.parse::<f64>() {
                Ok(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => f as i64,
                _ => return Err(invalid(field, what)),
            },
        },
        _ => return Err(invalid(field, what)),
    };
    if v < min {
        return Err(invalid(field, &format!("must be at least {min}, got {v}")));
    }
    let max = if money {
        MAX_VND
    } else if key == "quantity" {
        MAX_QUANTITY
    } else {
        MAX_COUNT
    };
    if v > max {
        return Err(invalid(field, &format!("must be at most {max}, got {v}")));
    }
    Ok(Some(v))
}

pub(super) fn required<T>(v: Option<T>, key: &str) -> Result<T> {
    v.ok_or_else(|| missing(format_args!("properties.{key}"), ""))
}

/// Parses an RFC 3339 timestamp, or epoch milliseconds, into epoch ms.
pub fn parse_timestamp(field: &str, v: Tok<'_>) -> Result<i64> {
    match v {
        Tok::Str(s) => rfc3339_millis(trim(&s))
            .map(Ok)
            .unwrap_or_else(|| DateTime::parse_from_rfc3339(trim(&s)).map(|t| t.timestamp_millis()))
            .map_err(|_| invalid(field, &format!("{s:?} is not an RFC 3339 time such as 2026-11-23T09:30:00+07:00"))),
        Tok::Num(n) => n.parse::<i64>().ok().filter(|ms| *ms > 0).ok_or_else(|| invalid(field, "as a number must be epoch milliseconds")),
        _ => Err(invalid(field, "must be an RFC 3339 string")),
    }
}

/// `str::trim`, without its Unicode decoding when both ends are visible ASCII (nearly always;
/// no whitespace is ASCII-graphic).
#[inline]
pub(super) fn trim(s: &str) -> &str {
    match (s.as_bytes().first(), s.as_bytes().last()) {
        (Some(a), Some(z)) if a.is_ascii_graphic() && z.is_ascii_graphic() => s,
        _ => s.trim(),
    }
}

/// Epoch milliseconds of an RFC 3339 time in the shape SDKs send —
/// `YYYY-MM-DDTHH:MM:SS`, up to nine fraction digits, `Z` or `±HH:MM` — with every field in
/// range; `None` for anything else, which chrono then reads (or refuses). The same value chrono
/// gives, a test checks; about a tenth of its cost, and every event has a time.
pub(super) fn rfc3339_millis(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = b.get(from..from + len)?;
        digits.iter().try_fold(0i64, |n, d| d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0')))
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&month) || day < 1 || day > month_days[month as usize - 1] || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if b[i] == b'.' {
        let digits = b[i + 1..].iter().take_while(|d| d.is_ascii_digit()).count();
        if !(1..=9).contains(&digits) {
            return None;
        }
        millis = b[i + 1..i + 1 + digits.min(3)].iter().fold(0, |n, d| n * 10 + i64::from(d - b'0'));
        millis *= [100, 10, 1][digits.min(3) - 1];
        i += 1 + digits;
    }
    let offset_secs = match &b[i..] {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            if *sign == b'-' { -(h * 3600 + m * 60) } else { h * 3600 + m * 60 }
        }
        _ => return None,
    };
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some(secs * 1000 + millis)
}

/// A time that may be absent or null.
pub fn optional_time(field: &str, v: Tok<'_>) -> Result<Option<i64>> {
    match v {
        Tok::Null => Ok(None),
        v => parse_timestamp(field, v).map(Some),
    }
}

/// The envelope's time fields, in schema order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times {
    pub event_time: i64,
    pub sent_at: Option<i64>,
    pub received_at: i64,
    pub corrected: i64,
    pub skew: i64,
    pub future_clamped: bool,
    pub stale: bool,
}

impl Times {
    #[inline]
    pub(super) fn new(event_time: Option<i64>, sent_at: Option<i64>, received_at: i64) -> Times {
        let (event_time, corrected, skew) = match (event_time, sent_at) {
            // The device clock may be off; what it measured between event and send is not.
            (Some(et), Some(sa)) => (et, received_at - (sa - et), received_at - sa),
            (Some(et), None) => (et, et, 0),
            (None, Some(sa)) => (received_at, received_at, received_at - sa),
            (None, None) => (received_at, received_at, 0),
        };
        Times {
            event_time,
            sent_at,
            received_at,
            corrected: corrected.min(received_at),
            skew,
            future_clamped: corrected > received_at,
            stale: received_at - corrected > STALE_AFTER_MS,
        }
    }

    #[inline]
    pub(super) fn write(&self, out: &mut Vec<u8>) {
        write_long(self.event_time, out);
        put_opt_long(out, self.sent_at);
        write_long(self.received_at, out);
        write_long(self.corrected, out);
        write_long(self.skew, out);
        out.push(u8::from(self.future_clamped));
        out.push(u8::from(self.stale));
    }
}
