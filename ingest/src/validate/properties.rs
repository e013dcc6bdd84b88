//! The properties of each family of event types — views, carts, orders, identities,
//! engagement — checked and written in schema order, as docs/http-api.md lists them; and the
//! cart and order lines (`items`).

use std::borrow::Cow;

use schemas::avro_write::write_long;
use schemas::event::*;
use schemas::phone::normalize_vn_phone;

use super::avro::{close_block, put_custom, put_opt_long, put_opt_str, put_str};
use super::checks::{Scope, integer, put_text, required, text, trim};
use super::slots::{Members, it, pr, tr};
use super::{Needs, Result, invalid, missing, not_json};
use crate::json::{Reader, Tok};

/// Property helpers: each takes its member out of the slots; what is left goes to `custom`.
pub(super) type Props<'a> = Members<'a, { pr::COUNT }>;

pub(super) fn prop_text<'a>(m: &mut Props<'a>, slot: usize) -> Result<Option<Cow<'a, str>>> {
    text(m.take(slot), Scope::Properties, pr::NAMES[slot])
}

/// A text property written straight into the record; its length when it was there.
pub(super) fn put_prop(m: &mut Props<'_>, slot: usize, out: &mut Vec<u8>) -> Result<Option<usize>> {
    put_text(out, m.take(slot), Scope::Properties, pr::NAMES[slot])
}

pub(super) fn required_text<'a>(m: &mut Props<'a>, slot: usize) -> Result<Cow<'a, str>> {
    prop_text(m, slot)?.filter(|s| !trim(s).is_empty()).ok_or_else(|| missing(format_args!("properties.{}", pr::NAMES[slot]), ""))
}

pub(super) fn prop_integer(m: &mut Props<'_>, slot: usize, min: i64) -> Result<Option<i64>> {
    integer(m.take(slot), Scope::Properties, pr::NAMES[slot], min, false)
}

pub(super) fn money(m: &mut Props<'_>, slot: usize) -> Result<Option<i64>> {
    integer(m.take(slot), Scope::Properties, pr::NAMES[slot], 0, true)
}

pub(super) fn custom(m: &mut Props<'_>, out: &mut Vec<u8>) {
    put_custom(out, m.rest(pr::NAMES));
}

/// `properties.items`: each line checked and written; the number of lines.
pub(super) fn items(m: &mut Props<'_>, out: &mut Vec<u8>) -> Result<usize> {
    let at = out.len();
    let raw = match m.take(pr::items) {
        Tok::Null => {
            out.push(0);
            return Ok(0);
        }
        Tok::Array(raw) => raw,
        _ => return Err(invalid("properties.items", "must be an array")),
    };
    let mut r = Reader::new(raw);
    let mut n = 0;
    if r.open_array().map_err(not_json)? {
        loop {
            let scope = Scope::Item(n);
            let Tok::Object(obj) = r.token().map_err(not_json)? else { return Err(invalid(scope, "must be an object")) };
            let mut item = Members::<{ it::COUNT }>::parse(obj, it::index, false)?;
            let product_id = text(item.take(it::product_id), scope, "product_id")?;
            let product_id = product_id.ok_or_else(|| missing(format_args!("{scope}.product_id"), ""))?;
            let product_name = text(item.take(it::product_name), scope, "product_name")?;
            let category = text(item.take(it::category), scope, "category")?;
            let quantity = integer(item.take(it::quantity), scope, "quantity", 1, false)?;
            let quantity = quantity.ok_or_else(|| missing(format_args!("{scope}.quantity"), ""))?;
            let price = integer(item.take(it::price), scope, "price", 0, true)?;
            let price = price.ok_or_else(|| missing(format_args!("{scope}.price"), ""))?;
            put_str(out, &product_id);
            put_opt_str(out, product_name.as_deref());
            put_opt_str(out, category.as_deref());
            write_long(quantity, out);
            write_long(price, out);
            n += 1;
            if !r.next_element().map_err(not_json)? {
                break;
            }
        }
    }
    close_block(out, at, n);
    Ok(n)
}

pub(super) fn view_properties(kind: ViewType, m: &mut Props<'_>, out: &mut Vec<u8>) -> Result<()> {
    // Written as they are checked (a rejected event's bytes are cut off), in schema order.
    put_prop(m, pr::page_title, out)?;
    let product_id = put_prop(m, pr::product_id, out)?;
    put_prop(m, pr::product_name, out)?;
    put_prop(m, pr::category, out)?;
    put_opt_long(out, money(m, pr::price)?);
    put_opt_long(out, prop_integer(m, pr::dwell_ms, 0)?);
    let query = put_prop(m, pr::query, out)?;
    put_opt_long(out, prop_integer(m, pr::results_count, 0)?);
    put_prop(m, pr::share_channel, out)?;
    put_prop(m, pr::list_id, out)?;
    match kind {
        ViewType::ProductViewed | ViewType::ProductClicked | ViewType::ProductShared => {
            required(product_id.filter(|len| *len > 0), "product_id")?;
        }
        ViewType::Search => {
            required(query, "query")?;
        }
        ViewType::PageViewed => {}
    }
    custom(m, out);
    Ok(())
}

pub(super) fn cart_properties(kind: CartType, m: &mut Props<'_>, out: &mut Vec<u8>) -> Result<()> {
    let cart_id = required_text(m, pr::cart_id)?;
    put_str(out, &cart_id);
    let product_id = put_prop(m, pr::product_id, out)?;
    put_prop(m, pr::product_name, out)?;
    put_prop(m, pr::category, out)?;
    let min_quantity = if kind == CartType::CartItemUpdated { 0 } else { 1 };
    let quantity = prop_integer(m, pr::quantity, min_quantity)?;
    put_opt_long(out, quantity);
    let price = money(m, pr::price)?;
    put_opt_long(out, price);
    put_opt_long(out, money(m, pr::cart_value)?);
    items(m, out)?;
    match kind {
        CartType::CartItemAdded | CartType::CartItemRemoved => {
            required(product_id, "product_id")?;
            required(quantity, "quantity")?;
            required(price, "price")?;
        }
        CartType::CartItemUpdated => {
            required(product_id, "product_id")?;
            required(quantity, "quantity")?;
        }
        CartType::CartViewed | CartType::CheckoutStarted => {}
    }
    custom(m, out);
    Ok(())
}

pub(super) fn order_properties(kind: OrderType, m: &mut Props<'_>, out: &mut Vec<u8>) -> Result<()> {
    let order_id = required_text(m, pr::order_id)?;
    let cart_id = prop_text(m, pr::cart_id)?;
    put_str(out, &order_id);
    put_opt_str(out, cart_id.as_deref());
    let lines = items(m, out)?;
    let total = money(m, pr::total)?;
    put_opt_long(out, total);
    put_opt_long(out, money(m, pr::shipping_fee)?);
    put_opt_long(out, money(m, pr::discount)?);
    put_prop(m, pr::payment_method, out)?;
    put_prop(m, pr::voucher_code, out)?;
    put_opt_long(out, prop_integer(m, pr::points_used, 0)?);
    let status = prop_text(m, pr::status)?;
    put_opt_str(out, status.as_deref());
    put_opt_long(out, money(m, pr::refund_amount)?);
    put_prop(m, pr::reason, out)?;
    match kind {
        OrderType::OrderPlaced => {
            required(total, "total")?;
            if lines == 0 {
                return Err(missing("properties.items", " (at least one line) for order_placed"));
            }
        }
        OrderType::OrderPaid => {
            required(total, "total")?;
        }
        OrderType::OrderStatusChanged => {
            required(status.as_ref(), "status")?;
        }
        OrderType::OrderCancelled | OrderType::OrderRefunded => {}
    }
    custom(m, out);
    Ok(())
}

/// Writes the identity properties; what consent their data needs, and the consent decision.
pub(super) fn identity_properties(
    kind: IdentityType,
    m: &mut Props<'_>,
    out: &mut Vec<u8>,
) -> Result<(Needs, Option<(&'static str, bool)>)> {
    let mut traits = match m.take(pr::traits) {
        Tok::Null => None,
        Tok::Object(raw) => Some(Members::<{ tr::COUNT }>::parse(raw, tr::index, true)?),
        _ => return Err(invalid("properties.traits", "must be an object")),
    };
    // Segment-style SDKs put the phone among the traits.
    let phone_value = match m.take(pr::phone) {
        Tok::Null => traits.as_mut().map_or(Tok::Null, |t| t.take(tr::phone)),
        other => other,
    };
    let phone = match phone_value {
        Tok::Null => None,
        Tok::Str(s) => Some(normalize_vn_phone(&s).map_err(|e| invalid("properties.phone", &format!("is invalid: {e}")))?),
        _ => return Err(invalid("properties.phone", "must be a string")),
    };
    let mut needs = Needs::default();
    match traits {
        None => out.push(0),
        Some(mut t) => {
            let gender = text(t.take(tr::gender), Scope::Traits, "gender")?.map(|g| g.to_ascii_lowercase());
            if let Some(g) = &gender
                && !matches!(g.as_str(), "male" | "female" | "other")
            {
                return Err(invalid("properties.traits.gender", "must be male, female or other"));
            }
            let birthday = text(t.take(tr::birthday), Scope::Traits, "birthday")?;
            if let Some(b) = &birthday
                && !valid_birthday(b)
            {
                return Err(invalid("properties.traits.birthday", "must be YYYY-MM-DD, or --MM-DD without the year"));
            }
            let email = text(t.take(tr::email), Scope::Traits, "email")?;
            if let Some(e) = &email
                && !e.contains('@')
            {
                return Err(invalid("properties.traits.email", "is not an email address"));
            }
            let name = text(t.take(tr::name), Scope::Traits, "name")?;
            let city = text(t.take(tr::city), Scope::Traits, "city")?;
            let rest = t.rest(tr::NAMES);
            // Traits with nothing in them are no traits.
            if name.is_none() && gender.is_none() && birthday.is_none() && email.is_none() && city.is_none() && rest.is_empty() {
                out.push(0);
            } else {
                needs.0 |= Needs::PROFILE;
                out.push(2);
                put_opt_str(out, name.as_deref());
                put_opt_str(out, gender.as_deref());
                put_opt_str(out, birthday.as_deref());
                put_opt_str(out, email.as_deref());
                put_opt_str(out, city.as_deref());
                put_custom(out, rest);
            }
        }
    }
    if phone.is_some() {
        needs.0 |= Needs::PHONE;
    }
    put_opt_str(out, phone.as_deref());
    let purpose = prop_text(m, pr::purpose)?;
    put_opt_str(out, purpose.as_deref());
    let granted = match m.take(pr::granted) {
        Tok::Null => None,
        Tok::Bool(b) => Some(b),
        _ => return Err(invalid("properties.granted", "must be true or false")),
    };
    match granted {
        None => out.push(0),
        Some(b) => out.extend_from_slice(&[2, u8::from(b)]),
    }
    put_prop(m, pr::policy_version, out)?;
    put_prop(m, pr::oa_id, out)?;
    put_prop(m, pr::interaction, out)?;
    let mut consent = None;
    match kind {
        IdentityType::Identify => {
            if needs.is_empty() {
                return Err(missing("properties.traits or properties.phone", " for identify"));
            }
        }
        IdentityType::ConsentChanged => {
            let purpose = required(purpose.as_deref(), "purpose")?;
            let Some(known) = CONSENT_PURPOSES.iter().find(|p| **p == purpose) else {
                return Err(invalid("properties.purpose", &format!("{purpose:?} is not one of {}", CONSENT_PURPOSES.join(", "))));
            };
            consent = Some((*known, required(granted, "granted")?));
        }
        IdentityType::OaFollowed | IdentityType::OaUnfollowed | IdentityType::OaInteracted => {}
        // Not in the HTTP API's table of types: never reaches here from a request.
        IdentityType::UserForgotten => unreachable!("internal event types are refused before validation"),
    }
    custom(m, out);
    Ok((needs, consent))
}

pub(super) fn valid_birthday(b: &str) -> bool {
    if let Some(md) = b.strip_prefix("--") {
        return chrono::NaiveDate::parse_from_str(&format!("2000-{md}"), "%Y-%m-%d").is_ok();
    }
    chrono::NaiveDate::parse_from_str(b, "%Y-%m-%d").is_ok()
}

pub(super) fn engagement_properties(kind: EngagementType, m: &mut Props<'_>, out: &mut Vec<u8>) -> Result<()> {
    let game_id = prop_text(m, pr::game_id)?;
    put_opt_str(out, game_id.as_deref());
    put_prop(m, pr::result, out)?;
    put_prop(m, pr::reward, out)?;
    let voucher_code = prop_text(m, pr::voucher_code)?;
    put_opt_str(out, voucher_code.as_deref());
    let points = prop_integer(m, pr::points, 1)?;
    put_opt_long(out, points);
    put_prop(m, pr::reason, out)?;
    put_prop(m, pr::order_id, out)?;
    let product_id = prop_text(m, pr::product_id)?;
    put_opt_str(out, product_id.as_deref());
    let rating = prop_integer(m, pr::rating, 1)?;
    put_opt_long(out, rating);
    let referral_code = prop_text(m, pr::referral_code)?;
    put_opt_str(out, referral_code.as_deref());
    match kind {
        EngagementType::MinigamePlayed => {
            required(game_id.as_ref(), "game_id")?;
        }
        EngagementType::VoucherClaimed => {
            required(voucher_code.as_ref(), "voucher_code")?;
        }
        EngagementType::PointsEarned | EngagementType::PointsRedeemed => {
            required(points, "points")?;
        }
        EngagementType::ReviewSubmitted => {
            required(product_id.as_ref(), "product_id")?;
            if !(1..=5).contains(&required(rating, "rating")?) {
                return Err(invalid("properties.rating", "must be 1 to 5"));
            }
        }
        EngagementType::ReferralCompleted => {
            required(referral_code.as_ref(), "referral_code")?;
        }
    }
    custom(m, out);
    Ok(())
}
