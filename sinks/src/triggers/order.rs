//! `order_status`: an order placed, paid, changed, cancelled or refunded, from `zmp.orders.v1`.
//! Transactional: no night ban or promotion quota.

use schemas::event::{OrderEvent, OrderType};
use serde_json::json;

use super::{Occurrence, Trigger, vars, vnd};

/// What an order fills; also the rows of an OA transaction message's table, in this order.
pub const VARIABLES: &[&str] = &["order_id", "order_status", "order_total"];

pub fn occurrence(o: &OrderEvent) -> Occurrence {
    let status = match o.kind {
        OrderType::OrderPlaced => "đã đặt thành công".to_string(),
        OrderType::OrderPaid => "đã thanh toán".to_string(),
        OrderType::OrderStatusChanged => o.properties.status.clone().unwrap_or_else(|| "đã cập nhật".into()),
        OrderType::OrderCancelled => "đã huỷ".to_string(),
        OrderType::OrderRefunded => "đã hoàn tiền".to_string(),
    };
    let vars = vars(json!({"order_id": o.properties.order_id, "order_status": status,
        "order_total": o.properties.total.map(vnd).unwrap_or_default()}));
    Occurrence {
        app: o.app_id.clone(),
        user: o.user.key.clone(),
        trigger: Trigger::OrderStatus,
        id: o.event_id.clone(),
        at: o.event_time,
        vars,
        segment: None,
        trust: o.trust,
    }
}
