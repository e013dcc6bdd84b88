//! `cart_abandoned`: a cart the processors found abandoned, from `zmp.cart-triggers.v1`.

use schemas::derived::CartTrigger;
use serde_json::json;

use super::{Occurrence, Trigger, vars, vnd};

/// What a cart trigger fills: the cart, its value (in VND, with Vietnamese separators), how many
/// items, and the product to name (the first line's, else the last one viewed).
pub const VARIABLES: &[&str] = &["cart_id", "cart_value", "item_count", "product_name", "product_id"];

pub fn occurrence(c: &CartTrigger) -> Occurrence {
    let product = c.last_viewed_product.as_ref();
    let first = c.items.first();
    let vars = vars(json!({
        "cart_id": c.cart_id,
        "cart_value": vnd(c.value),
        "item_count": c.items.iter().map(|i| i.quantity).sum::<i64>().to_string(),
        "product_name": first.and_then(|i| i.product_name.clone()).or(product.and_then(|p| p.product_name.clone()))
            .or(first.map(|i| i.product_id.clone())).unwrap_or_default(),
        "product_id": first.map(|i| i.product_id.clone()).unwrap_or_default(),
    }));
    Occurrence {
        app: c.app_id.clone(),
        user: c.user.key.clone(),
        trigger: Trigger::CartAbandoned,
        id: c.trigger_id.clone(),
        at: c.last_activity,
        vars,
        segment: None,
        trust: schemas::event::Trust::Server,
    }
}
