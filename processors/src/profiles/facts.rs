//! A profile's facts as the segments' rules read them ([`crate::segments::Facts`]): times since
//! things happened, numbers, stages and flags, all at the profile's evaluation time.

use schemas::time::VN_OFFSET_MS;

use super::state::{ProfileState, frequency_score, funnel_stage, granted, lifecycle, monetary_score, recency_score};
use crate::segments::{Facts, Since};

/// A profile's facts for the segments' rules.
pub(super) struct ProfileFacts<'a> {
    pub(super) s: &'a ProfileState,
    pub(super) cart_timeout_ms: i64,
}

impl Facts for ProfileFacts<'_> {
    fn since(&self, what: &Since) -> Option<i64> {
        let s = self.s;
        match what {
            Since::FirstSeen => Some(s.first_seen),
            Since::LastSeen => Some(s.last_seen),
            Since::LastOrder => s.last_order_at,
            Since::ProductView => s.last_product_view,
            Since::CategoryView(c) => s.category_views.iter().find(|(k, _)| k == c).map(|(_, t)| *t),
            // A cart is abandoned when its timeout passes after the last cart activity with no
            // order since.
            Since::CartAbandoned => {
                s.last_cart_activity.filter(|c| s.last_order_at.is_none_or(|o| o < *c)).map(|c| c + self.cart_timeout_ms)
            }
        }
    }

    fn number(&self, name: &str) -> f64 {
        let s = self.s;
        (match name {
            "orders" => s.orders,
            "revenue" => s.revenue,
            "average_order_value" => {
                if s.orders > 0 {
                    s.revenue / s.orders
                } else {
                    0
                }
            }
            "sessions" => s.sessions,
            "active_days" => s.active_days,
            "points_balance" => s.points_earned - s.points_redeemed,
            "vouchers_used" => s.vouchers_used,
            "vouchers_claimed" => s.vouchers_claimed,
            "recency_score" => i64::from(recency_score(s.last_order_at, s.as_of)),
            "frequency_score" => i64::from(frequency_score(s.orders)),
            "monetary_score" => i64::from(monetary_score(s.revenue)),
            "cart_adds" => s.cart_adds,
            _ => 0,
        }) as f64
    }

    fn text(&self, name: &str) -> &str {
        match name {
            "lifecycle" => lifecycle(self.s, self.s.as_of),
            "funnel_stage" => funnel_stage(self.s),
            _ => "",
        }
    }

    fn flag(&self, name: &str, at: i64) -> bool {
        let s = self.s;
        match name {
            "oa_following" => s.oa_following,
            "has_phone" => s.phone.is_some(),
            "birthday_this_month" => s.birthday.as_deref().and_then(birthday_month).is_some_and(|m| {
                use chrono::Datelike;
                chrono::DateTime::from_timestamp_millis(at + VN_OFFSET_MS).is_some_and(|d| d.month() == m)
            }),
            _ => false,
        }
    }

    fn granted(&self, purpose: &str) -> bool {
        granted(self.s, purpose)
    }
}

/// The month of a birthday given as YYYY-MM-DD or --MM-DD.
fn birthday_month(b: &str) -> Option<u32> {
    let parts: Vec<&str> = b.trim_start_matches('-').split('-').collect();
    let m = if parts.len() == 3 { parts[1] } else { parts.first()? };
    m.parse().ok().filter(|m| (1..=12).contains(m))
}
