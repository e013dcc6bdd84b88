//! The members the contract names, and the slots an event is read into: a constant per member
//! name (its slot), and the objects (`Members`, `Nested`, `EventIn`) whose slots hold the values
//! as tokens borrowed from the body until the checks take them.

use std::borrow::Cow;

use crate::json::{self, Reader, Tok};

use super::{Result, invalid, not_json};

/// Declares the member names of one kind of object: a constant per name (its slot), `NAMES`,
/// `COUNT` and `index`, a `match` on the name.
macro_rules! member_names {
    ($m:ident { $($c:ident = $s:literal),* $(,)? }) => {
        #[allow(non_upper_case_globals, dead_code)]
        pub(super) mod $m {
            pub const NAMES: &[&str] = &[$($s),*];
            pub const COUNT: usize = NAMES.len();
            member_names!(@slot 0usize; $($c)*);
            pub fn index(member_name: &str) -> Option<usize> {
                match member_name { $($s => Some($c),)* _ => None }
            }
        }
    };
    (@slot $n:expr; $c:ident $($rest:ident)*) => {
        pub const $c: usize = $n;
        member_names!(@slot $n + 1; $($rest)*);
    };
    (@slot $n:expr;) => {};
}

member_names!(ev { event_id = "event_id", type_ = "type", user = "user", event_time = "event_time", sent_at = "sent_at",
    context = "context", properties = "properties" });
member_names!(us { zalo_id = "zalo_id", anonymous_id = "anonymous_id", oa_user_id = "oa_user_id" });
// In the schema's order: the record is written slot by slot.
member_names!(cx { screen = "screen", utm_source = "utm_source", utm_medium = "utm_medium", utm_campaign = "utm_campaign",
    utm_content = "utm_content", affiliate_id = "affiliate_id", referrer = "referrer", app_version = "app_version",
    zalo_version = "zalo_version", platform = "platform", os_version = "os_version", device_model = "device_model",
    locale = "locale", library = "library" });
// Every property any type names; what a type does not name goes to its `custom` map.
member_names!(pr { page_title = "page_title", product_id = "product_id", product_name = "product_name", category = "category",
    price = "price", dwell_ms = "dwell_ms", query = "query", results_count = "results_count", share_channel = "share_channel",
    list_id = "list_id", cart_id = "cart_id", quantity = "quantity", cart_value = "cart_value", items = "items",
    order_id = "order_id", total = "total", shipping_fee = "shipping_fee", discount = "discount",
    payment_method = "payment_method", voucher_code = "voucher_code", points_used = "points_used", status = "status",
    refund_amount = "refund_amount", reason = "reason", traits = "traits", phone = "phone", purpose = "purpose",
    granted = "granted", policy_version = "policy_version", oa_id = "oa_id", interaction = "interaction",
    game_id = "game_id", result = "result", reward = "reward", points = "points", rating = "rating",
    referral_code = "referral_code" });
member_names!(tr { name = "name", gender = "gender", birthday = "birthday", email = "email", city = "city", phone = "phone" });
member_names!(it { product_id = "product_id", product_name = "product_name", category = "category", quantity = "quantity",
    price = "price" });

/// An object's members by slot; members it does not name are dropped, or kept in `rest` when the
/// object has a `custom` map. A repeated name keeps its last value, as JSON parsers do.
#[derive(Debug)]
pub(super) struct Members<'a, const N: usize> {
    pub(super) slots: [Option<Tok<'a>>; N],
    pub(super) rest: Vec<(Cow<'a, str>, Tok<'a>)>,
}

impl<'a, const N: usize> Members<'a, N> {
    pub(super) fn new() -> Self {
        Members { slots: [const { None }; N], rest: Vec::new() }
    }

    /// Reads the object the reader is at into these slots (empty ones, but for a repeated
    /// member). Objects and arrays inside stay raw text.
    pub(super) fn read_into(
        &mut self,
        r: &mut Reader<'a>,
        index: fn(&str) -> Option<usize>,
        keep_rest: bool,
    ) -> std::result::Result<(), json::Error> {
        if r.open_object()? {
            loop {
                let key = r.key()?;
                match index(&key) {
                    Some(i) => self.slots[i] = Some(r.token()?),
                    None if keep_rest => {
                        let v = r.token()?;
                        self.rest.retain(|(k, _)| *k != key);
                        self.rest.push((key, v));
                    }
                    None => r.skip()?,
                }
                if !r.next_member()? {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Reads an object kept as raw text by [`Reader::token`] (already checked once).
    pub(super) fn parse(raw: &'a str, index: fn(&str) -> Option<usize>, keep_rest: bool) -> Result<Self> {
        let mut m = Members::new();
        m.read_into(&mut Reader::new(raw), index, keep_rest).map_err(not_json)?;
        Ok(m)
    }

    pub(super) fn take(&mut self, slot: usize) -> Tok<'a> {
        self.slots[slot].take().unwrap_or(Tok::Null)
    }

    /// Takes what no field took, for the `custom` map: name → the value as text. The slots are
    /// empty afterwards.
    pub(super) fn rest(&mut self, names: &[&'static str]) -> Vec<(Cow<'a, str>, Cow<'a, str>)> {
        let mut out: Vec<(Cow<'a, str>, Cow<'a, str>)> = Vec::new();
        for (i, v) in self.slots.iter_mut().enumerate() {
            if let Some(v) = v.take() {
                out.push((Cow::Borrowed(names[i]), v.into_text()));
            }
        }
        out.extend(self.rest.drain(..).map(|(k, v)| (k, v.into_text())));
        out
    }

    pub(super) fn clear(&mut self) {
        self.slots.fill(None);
        self.rest.clear();
    }
}

/// What a member that should be an object was.
#[derive(Debug, Default)]
pub(super) enum Shape<'a> {
    #[default]
    Absent,
    /// An object, read into its slots.
    Object,
    Other(Tok<'a>),
}

/// A member that should be an object: its shape and, when it is one, its members.
#[derive(Debug)]
pub(super) struct Nested<'a, const N: usize> {
    pub(super) shape: Shape<'a>,
    pub(super) members: Members<'a, N>,
}

impl<'a, const N: usize> Nested<'a, N> {
    pub(super) fn new() -> Self {
        Nested { shape: Shape::Absent, members: Members::new() }
    }

    pub(super) fn read(
        &mut self,
        r: &mut Reader<'a>,
        index: fn(&str) -> Option<usize>,
        keep_rest: bool,
    ) -> std::result::Result<(), json::Error> {
        if matches!(self.shape, Shape::Object) {
            self.members.clear();
        }
        if r.peek() == Some(b'{') {
            self.shape = Shape::Object;
            self.members.read_into(r, index, keep_rest)
        } else {
            self.shape = Shape::Other(r.token()?);
            Ok(())
        }
    }

    /// The members; `None` when absent or null; a rejection naming `field` when not an object.
    pub(super) fn object(&mut self, field: &str) -> Result<Option<&mut Members<'a, N>>> {
        match std::mem::take(&mut self.shape) {
            Shape::Absent | Shape::Other(Tok::Null) => Ok(None),
            Shape::Object => Ok(Some(&mut self.members)),
            Shape::Other(_) => Err(invalid(field, "must be an object")),
        }
    }

    pub(super) fn clear(&mut self) {
        self.shape = Shape::Absent;
        self.members.clear();
    }
}

/// One event as read: scalars in slots, user, context and properties read into theirs. Kept
/// from one event to the next (its slots are about 2 KB): every slot is taken by the checks, and
/// all of them are cleared when an event is rejected.
#[derive(Debug)]
pub(super) struct EventIn<'a> {
    pub(super) top: Members<'a, { ev::COUNT }>,
    pub(super) user: Nested<'a, { us::COUNT }>,
    pub(super) context: Nested<'a, { cx::COUNT }>,
    pub(super) properties: Nested<'a, { pr::COUNT }>,
}

impl<'a> EventIn<'a> {
    pub(super) fn new() -> Box<Self> {
        Box::new(EventIn { top: Members::new(), user: Nested::new(), context: Nested::new(), properties: Nested::new() })
    }

    /// Reads the event object the reader is at.
    #[inline]
    pub(super) fn read(&mut self, r: &mut Reader<'a>) -> std::result::Result<(), json::Error> {
        if r.open_object()? {
            loop {
                let key = r.key()?;
                match ev::index(&key) {
                    Some(ev::user) => self.user.read(r, us::index, false)?,
                    Some(ev::context) => self.context.read(r, cx::index, false)?,
                    Some(ev::properties) => self.properties.read(r, pr::index, true)?,
                    Some(i) => self.top.slots[i] = Some(r.token()?),
                    None => r.skip()?,
                }
                if !r.next_member()? {
                    break;
                }
            }
        }
        Ok(())
    }

    pub(super) fn clear(&mut self) {
        self.top.clear();
        self.user.clear();
        self.context.clear();
        self.properties.clear();
    }

    pub(super) fn is_clear(&self) -> bool {
        let empty = |slots: &[Option<Tok<'_>>], rest: usize| slots.iter().all(Option::is_none) && rest == 0;
        empty(&self.top.slots, self.top.rest.len())
            && empty(&self.user.members.slots, 0)
            && empty(&self.context.members.slots, 0)
            && empty(&self.properties.members.slots, self.properties.members.rest.len())
            && [&self.user.shape, &self.context.shape, &self.properties.shape].iter().all(|s| matches!(s, Shape::Absent))
    }
}
