//! A direct Avro binary writer for zcdp's own record types: the gateway encodes every event, so
//! this is on the hot path. Each record writes its fields in schema order; the tests in
//! `codec.rs` check that the bytes equal what apache-avro writes from the `.avsc` files, for
//! every record type.
//!
//! Encoding rules (Avro 1.11 spec): long/int as zig-zag varint; string and bytes as a length then
//! the bytes; boolean one byte; double 8 bytes little-endian; a union as the branch index then
//! the value (every union here is `["null", T]`); an enum as its symbol index; arrays and maps as
//! one block (count, items) then a zero count.

use std::collections::HashMap;

pub trait AvroWrite {
    fn write_avro(&self, out: &mut Vec<u8>);
}

#[inline]
pub fn write_long(v: i64, out: &mut Vec<u8>) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

#[inline]
fn write_bytes(b: &[u8], out: &mut Vec<u8>) {
    write_long(b.len() as i64, out);
    out.extend_from_slice(b);
}

impl AvroWrite for i64 {
    #[inline]
    fn write_avro(&self, out: &mut Vec<u8>) {
        write_long(*self, out);
    }
}

/// Avro `int`: the same zig-zag varint as `long`.
impl AvroWrite for i32 {
    #[inline]
    fn write_avro(&self, out: &mut Vec<u8>) {
        write_long(i64::from(*self), out);
    }
}

impl AvroWrite for bool {
    #[inline]
    fn write_avro(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
}

impl AvroWrite for f64 {
    #[inline]
    fn write_avro(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

impl AvroWrite for String {
    #[inline]
    fn write_avro(&self, out: &mut Vec<u8>) {
        write_bytes(self.as_bytes(), out);
    }
}

/// `bytes` fields are `Vec<u8>`.
impl AvroWrite for Vec<u8> {
    fn write_avro(&self, out: &mut Vec<u8>) {
        write_bytes(self, out);
    }
}

impl<T: AvroWrite> AvroWrite for Option<T> {
    #[inline]
    fn write_avro(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(v) => {
                out.push(2); // zig-zag 1: the second branch
                v.write_avro(out);
            }
        }
    }
}

/// An Avro array; `Vec<u8>` is `bytes` (above), so arrays go through this wrapper impl.
pub fn write_array<T: AvroWrite>(items: &[T], out: &mut Vec<u8>) {
    if !items.is_empty() {
        write_long(items.len() as i64, out);
        for i in items {
            i.write_avro(out);
        }
    }
    out.push(0);
}

impl AvroWrite for HashMap<String, String> {
    fn write_avro(&self, out: &mut Vec<u8>) {
        if !self.is_empty() {
            // Keys in order, so the same map always gives the same bytes.
            let mut entries: Vec<(&String, &String)> = self.iter().collect();
            entries.sort_unstable();
            write_long(entries.len() as i64, out);
            for (k, v) in entries {
                k.write_avro(out);
                v.write_avro(out);
            }
        }
        out.push(0);
    }
}

/// Implements [`AvroWrite`] for a struct whose fields are listed in schema order. Fields marked
/// `[array]` are Avro arrays.
#[macro_export]
macro_rules! avro_record {
    ($t:ty { $($f:ident $([$array:ident])?),* $(,)? }) => {
        impl $crate::avro_write::AvroWrite for $t {
            fn write_avro(&self, out: &mut Vec<u8>) {
                $( $crate::avro_record!(@field self, out, $f $([$array])?); )*
            }
        }
    };
    (@field $s:ident, $out:ident, $f:ident [array]) => { $crate::avro_write::write_array(&$s.$f, $out) };
    (@field $s:ident, $out:ident, $f:ident) => { $crate::avro_write::AvroWrite::write_avro(&$s.$f, $out) };
}

/// Implements [`AvroWrite`] for a fieldless enum whose variants are in symbol order.
#[macro_export]
macro_rules! avro_enum {
    ($($t:ty),*) => {$(
        impl $crate::avro_write::AvroWrite for $t {
            #[inline]
            fn write_avro(&self, out: &mut Vec<u8>) {
                $crate::avro_write::write_long(*self as i64, out)
            }
        }
    )*};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longs_are_zigzag_varints() {
        let enc = |v: i64| {
            let mut b = Vec::new();
            write_long(v, &mut b);
            b
        };
        assert_eq!(enc(0), vec![0]);
        assert_eq!(enc(-1), vec![1]);
        assert_eq!(enc(1), vec![2]);
        assert_eq!(enc(-64), vec![0x7f]);
        assert_eq!(enc(64), vec![0x80, 0x01]);
        assert_eq!(enc(i64::MIN).len(), 10);
    }
}
