//! Reading an event's JSON without building a tree: an object becomes its members as borrowed
//! raw JSON, and each member is read as the scalar it should be. Strings without escapes are
//! borrowed from the request body; nothing else is allocated until a field is kept.
//!
//! The gateway parses every event it receives; this is a few times faster than `serde_json::Value`
//! and lets every type error carry the field's name.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// An object's members, in order. Events have a dozen members at most: a list beats a map.
#[derive(Default)]
pub struct Fields<'a> {
    items: Vec<(Cow<'a, str>, &'a RawValue)>,
}

/// A JSON value as a field should see it.
pub enum Scalar<'a> {
    Null,
    Bool(bool),
    Str(Cow<'a, str>),
    /// A number, as written.
    Num(&'a str),
    Object(&'a RawValue),
    Array(&'a RawValue),
}

struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// A JSON value read in place: an object's members, or a note that it was something else.
/// Used for members that must be objects, so the event is scanned once.
pub enum MaybeObject<'a> {
    Object(Fields<'a>),
    Null,
    NotAnObject,
}

impl<'de: 'a, 'a> Deserialize<'de> for MaybeObject<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MaybeObject<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MaybeObject<'de>, A::Error> {
                let mut items = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
                    let v: &'de RawValue = map.next_value()?;
                    items.push((k, v));
                }
                Ok(MaybeObject::Object(Fields { items }))
            }
            fn visit_unit<E>(self) -> Result<MaybeObject<'de>, E> {
                Ok(MaybeObject::Null)
            }
            fn visit_none<E>(self) -> Result<MaybeObject<'de>, E> {
                Ok(MaybeObject::Null)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<MaybeObject<'de>, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(MaybeObject::NotAnObject)
            }
            fn visit_bool<E>(self, _: bool) -> Result<MaybeObject<'de>, E> {
                Ok(MaybeObject::NotAnObject)
            }
            fn visit_i64<E>(self, _: i64) -> Result<MaybeObject<'de>, E> {
                Ok(MaybeObject::NotAnObject)
            }
            fn visit_u64<E>(self, _: u64) -> Result<MaybeObject<'de>, E> {
                Ok(MaybeObject::NotAnObject)
            }
            fn visit_f64<E>(self, _: f64) -> Result<MaybeObject<'de>, E> {
                Ok(MaybeObject::NotAnObject)
            }
            fn visit_str<E>(self, _: &str) -> Result<MaybeObject<'de>, E> {
                Ok(MaybeObject::NotAnObject)
            }
        }
        d.deserialize_any(V)
    }
}

/// The top level of an event: scalars kept raw, the three objects read in the same pass.
#[derive(serde::Deserialize)]
pub struct EventJson<'a> {
    #[serde(borrow)]
    pub event_id: Option<&'a RawValue>,
    #[serde(borrow, rename = "type")]
    pub kind: Option<&'a RawValue>,
    #[serde(borrow)]
    pub event_time: Option<&'a RawValue>,
    #[serde(borrow)]
    pub sent_at: Option<&'a RawValue>,
    #[serde(borrow)]
    pub user: Option<MaybeObject<'a>>,
    #[serde(borrow)]
    pub context: Option<MaybeObject<'a>>,
    #[serde(borrow)]
    pub properties: Option<MaybeObject<'a>>,
}

impl<'a> EventJson<'a> {
    pub fn parse(text: &'a str) -> Result<EventJson<'a>, serde_json::Error> {
        serde_json::from_str(text)
    }
}

impl<'a> Fields<'a> {
    /// The members of a JSON object given as text; `None` when it is not an object.
    pub fn parse_str(text: &'a str) -> Option<Fields<'a>> {
        if !text.trim_start().starts_with('{') {
            return None;
        }
        match serde_json::from_str::<MaybeObject<'a>>(text).ok()? {
            MaybeObject::Object(f) => Some(f),
            MaybeObject::Null | MaybeObject::NotAnObject => None,
        }
    }

    pub fn parse(raw: &'a RawValue) -> Option<Fields<'a>> {
        Self::parse_str(raw.get())
    }

    /// Takes a member out (the last one, if the key is repeated, as JSON parsers do).
    pub fn take(&mut self, key: &str) -> Option<&'a RawValue> {
        let i = self.items.iter().rposition(|(k, _)| k == key)?;
        let v = self.items.swap_remove(i).1;
        while let Some(j) = self.items.iter().position(|(k, _)| k == key) {
            self.items.swap_remove(j);
        }
        Some(v)
    }

    /// Every member, in order.
    pub fn into_members(self) -> impl Iterator<Item = (Cow<'a, str>, &'a RawValue)> {
        self.items.into_iter()
    }

    /// Takes a member as a scalar; absent reads as null.
    pub fn take_scalar(&mut self, key: &str) -> Scalar<'a> {
        self.take(key).map_or(Scalar::Null, scalar)
    }

    /// What is left, each value as text: a string as itself, anything else as its JSON.
    pub fn into_rest(self) -> impl Iterator<Item = (String, String)> + 'a {
        self.items.into_iter().map(|(k, v)| {
            let text = match scalar(v) {
                Scalar::Str(s) => s.into_owned(),
                _ => v.get().to_string(),
            };
            (k.into_owned(), text)
        })
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Reads a raw JSON value as a scalar. Strings without escapes are borrowed.
pub fn scalar(raw: &RawValue) -> Scalar<'_> {
    let t = raw.get();
    match t.as_bytes().first() {
        Some(b'n') => Scalar::Null,
        Some(b't') => Scalar::Bool(true),
        Some(b'f') => Scalar::Bool(false),
        Some(b'"') => {
            let inner = &t[1..t.len() - 1];
            if inner.contains('\\') {
                Scalar::Str(Cow::Owned(serde_json::from_str::<String>(t).unwrap_or_default()))
            } else {
                Scalar::Str(Cow::Borrowed(inner))
            }
        }
        Some(b'{') => Scalar::Object(raw),
        Some(b'[') => Scalar::Array(raw),
        _ => Scalar::Num(t),
    }
}

/// The elements of a JSON array.
pub fn array(raw: &RawValue) -> Option<Vec<&RawValue>> {
    serde_json::from_str::<Vec<&RawValue>>(raw.get()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_borrowed_and_typed() {
        let text = r#"{"a": "x", "b": 12.5, "c": {"d": [1]}, "e": "line\nbreak", "f": null, "g": true, "a": "last"}"#;
        let mut f = Fields::parse_str(text).unwrap();
        assert!(matches!(f.take_scalar("a"), Scalar::Str(Cow::Borrowed("last"))));
        assert!(matches!(f.take_scalar("b"), Scalar::Num("12.5")));
        assert!(matches!(f.take_scalar("c"), Scalar::Object(_)));
        assert!(matches!(f.take_scalar("e"), Scalar::Str(Cow::Owned(ref s)) if s == "line\nbreak"));
        assert!(matches!(f.take_scalar("f"), Scalar::Null));
        assert!(matches!(f.take_scalar("missing"), Scalar::Null));
        let rest: Vec<(String, String)> = f.into_rest().collect();
        assert_eq!(rest, vec![("g".to_string(), "true".to_string())]);
        assert!(Fields::parse_str("[1]").is_none());
    }
}
