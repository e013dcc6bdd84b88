//! The messaging policy: before every send, the rules of Zalo and of the shop, each with its own
//! reason code. A pure function of the request, what is known of the recipient and what was sent
//! to them before, so it can be tested rule by rule and replayed.

use schemas::time::{DAY_MS, vn_day, vn_month};

use crate::zalo_rules::*;

/// How a message reaches the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// OA consultation (customer-service) message by UID.
    OaConsultation,
    /// OA transaction message by UID (order status and the like).
    OaTransaction,
    /// OA promotion (or template) message by UID: quota'd and banned at night.
    OaPromotion,
    /// ZNS / ZBS template message by phone.
    Zns,
}

impl Channel {
    pub fn by_uid(self) -> bool {
        self != Channel::Zns
    }

    pub fn name(self) -> &'static str {
        match self {
            Channel::OaConsultation => "oa_consultation",
            Channel::OaTransaction => "oa_transaction",
            Channel::OaPromotion => "oa_promotion",
            Channel::Zns => "zns",
        }
    }
}

/// One message a campaign wants to send.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The trigger's id (a cart trigger's `trigger_id`, …): one send per trigger, ever.
    pub trigger_id: &'a str,
    pub campaign: &'a str,
    pub channel: Channel,
    /// The consent purpose the message needs (`marketing` for promotions); None for messages the
    /// user's own action calls for (an order's status).
    pub purpose: Option<&'a str>,
    /// Promotional (night ban, quotas, frequency cap) or not (transactional, a reply).
    pub promotional: bool,
    /// When it would be sent, epoch ms.
    pub at: i64,
    /// ZNS: the template's price (VND), when known.
    pub zns_price: Option<i64>,
}

/// What is known of the recipient, from their profile.
#[derive(Debug, Clone, Default)]
pub struct Recipient {
    pub granted: Vec<String>,
    pub oa_user_id: Option<String>,
    pub follows_oa: bool,
    /// The user's last interaction with the OA (follow, message, …), epoch ms.
    pub last_interaction: Option<i64>,
    /// A phone from a trusted source (Zalo's exchange, the shop's server): the only kind sent to.
    pub phone: Option<String>,
    /// The profile holds a phone that no trusted source gave: never sent to.
    pub phone_unverified: bool,
    /// The profile holds an OA user id that no trusted source gave: never sent to.
    pub oa_user_id_unverified: bool,
    /// Messages sent to this recipient's phone or OA id in the last 24 hours, whoever's profile
    /// it was on (the sink counts them per address).
    pub sent_to_address_last_day: u32,
}

/// A message already sent to the recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub at: i64,
    pub channel: Channel,
    pub promotional: bool,
    pub trigger_id: String,
}

/// The shop's own limits.
#[derive(Debug, Clone)]
pub struct Limits {
    pub package: OaPackage,
    /// Promotional messages a user may get in any 24 hours, across campaigns.
    pub frequency_cap: u32,
    /// Messages of any kind — transactional too — a recipient (user, phone, OA id) may get in
    /// any 24 hours, across campaigns: a flood stops here even from trusted sources.
    pub recipient_daily_cap: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { package: OaPackage::Basic, frequency_cap: 2, recipient_daily_cap: 5 }
    }
}

/// Why a message is not sent (now).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The same trigger was already acted on.
    Duplicate,
    /// The user has not granted the purpose.
    NoConsent,
    /// No OA user id, or the user does not follow the OA (OA channels).
    NotFollower,
    /// No phone held under consent (ZNS).
    NoPhone,
    /// Last interaction more than 7 days ago (or none): Zalo refuses sends by UID (-230).
    OutsideUidWindow,
    /// The follower's promotions this month are used up for the OA's package.
    MonthlyPromotionQuota,
    /// The follower already had a promotion today.
    DailyPromotionQuota,
    /// The shop's cap on promotional messages per user per 24 hours.
    FrequencyCap,
    /// 22:00-06:00 Vietnam time: promotions wait until 06:00.
    NightBan,
    /// The profile's phone came from no trusted source (a client typed it in): ZNS never goes
    /// to it.
    UnverifiedPhone,
    /// The profile's OA user id came from no trusted source: no OA message goes to it.
    UnverifiedOaUser,
    /// The recipient had `recipient_daily_cap` messages in the last 24 hours.
    RecipientCap,
}

/// Whether a `zmp.messages.v1` decision lets its step's fallback be tried: suppressed for a
/// reason the fallback answers ([`Reason::worth_fallback`]), or refused by Zalo for the recipient
/// on an OA channel.
pub fn falls_through(status: &str, reason: Option<&str>, zalo_error: Option<i64>) -> bool {
    match status {
        "suppressed" => reason.is_some_and(|r| Reason::FALLBACK.iter().any(|f| f.code() == r)),
        "failed" => zalo_error.is_some_and(unreachable_by_oa),
        _ => false,
    }
}

/// Zalo refused the recipient on an OA channel: worth the fallback.
pub fn unreachable_by_oa(code: i64) -> bool {
    use crate::zalo_rules::oa_error;
    matches!(
        code,
        oa_error::NOT_FOLLOWER
            | oa_error::NO_INTERACTION_7_DAYS
            | oa_error::OUT_OF_QUOTA
            | oa_error::USER_INACTIVE
            | oa_error::INTERACTION_EXPIRED
            | oa_error::USER_RESTRICTED
    )
}

impl Reason {
    /// The reasons the fallback answers.
    pub const FALLBACK: [Reason; 5] = [
        Reason::NotFollower,
        Reason::UnverifiedOaUser,
        Reason::OutsideUidWindow,
        Reason::MonthlyPromotionQuota,
        Reason::DailyPromotionQuota,
    ];

    /// The OA channel cannot reach the user (or may not now): the fallback (ZNS by phone) is
    /// tried.
    pub fn worth_fallback(self) -> bool {
        Reason::FALLBACK.contains(&self)
    }

    pub fn code(self) -> &'static str {
        match self {
            Reason::Duplicate => "duplicate_trigger",
            Reason::NoConsent => "no_consent",
            Reason::NotFollower => "not_follower",
            Reason::NoPhone => "no_phone",
            Reason::OutsideUidWindow => "outside_uid_window",
            Reason::MonthlyPromotionQuota => "monthly_promotion_quota",
            Reason::DailyPromotionQuota => "daily_promotion_quota",
            Reason::FrequencyCap => "frequency_cap",
            Reason::NightBan => "night_ban",
            Reason::UnverifiedPhone => "unverified_phone",
            Reason::UnverifiedOaUser => "unverified_oa_user",
            Reason::RecipientCap => "recipient_cap",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send now; it costs this much (VND).
    Send { cost_vnd: i64 },
    /// Not now: ask again at `until` (the night ban ends). Deferred, not dropped.
    Defer { until: i64, reason: Reason },
    /// Not at all, for this reason.
    Suppress(Reason),
}

/// Decides one request. The rules in order: dedup, consent, identity for the channel (a
/// verified phone or OA id only), the UID window, the recipient's daily cap (every kind of
/// message), then for promotions the quotas and the frequency cap (each a refusal), and last
/// the night ban (a deferral: the other rules are asked again at 06:00).
pub fn decide(req: &Request<'_>, to: &Recipient, history: &[Sent], limits: &Limits) -> Decision {
    if history.iter().any(|s| s.trigger_id == req.trigger_id) {
        return Decision::Suppress(Reason::Duplicate);
    }
    if let Some(p) = req.purpose
        && !to.granted.iter().any(|g| g == p)
    {
        return Decision::Suppress(Reason::NoConsent);
    }
    if req.channel.by_uid() {
        if to.oa_user_id.is_none() && to.oa_user_id_unverified {
            return Decision::Suppress(Reason::UnverifiedOaUser);
        }
        if to.oa_user_id.is_none() || !to.follows_oa {
            return Decision::Suppress(Reason::NotFollower);
        }
        if to.last_interaction.is_none_or(|t| req.at - t > UID_WINDOW_MS) {
            return Decision::Suppress(Reason::OutsideUidWindow);
        }
    } else if to.phone.is_none() {
        return Decision::Suppress(if to.phone_unverified { Reason::UnverifiedPhone } else { Reason::NoPhone });
    }
    // Every kind of message counts here, transactional included.
    let to_user = history.iter().filter(|s| req.at - s.at < DAY_MS).count() as u32;
    if to_user.max(to.sent_to_address_last_day) >= limits.recipient_daily_cap {
        return Decision::Suppress(Reason::RecipientCap);
    }
    if req.promotional {
        let promos = || history.iter().filter(|s| s.promotional);
        if req.channel == Channel::OaPromotion {
            let month = vn_month(req.at);
            if promos().filter(|s| s.channel == Channel::OaPromotion && vn_month(s.at) == month).count() as u32
                >= limits.package.monthly_promotions()
            {
                return Decision::Suppress(Reason::MonthlyPromotionQuota);
            }
            let day = vn_day(req.at);
            if promos().filter(|s| s.channel == Channel::OaPromotion && vn_day(s.at) == day).count() as u32 >= PROMOTIONS_PER_DAY {
                return Decision::Suppress(Reason::DailyPromotionQuota);
            }
        }
        if promos().filter(|s| req.at - s.at < DAY_MS).count() as u32 >= limits.frequency_cap {
            return Decision::Suppress(Reason::FrequencyCap);
        }
        if is_night(req.at) {
            return Decision::Defer { until: night_ends(req.at), reason: Reason::NightBan };
        }
    }
    let cost_vnd = match req.channel {
        Channel::OaConsultation if to.last_interaction.is_some_and(|t| req.at - t <= FREE_REPLY_WINDOW_MS) => 0,
        Channel::OaConsultation => COST_CONSULTATION_OUTSIDE_WINDOW,
        Channel::OaTransaction => COST_TRANSACTION,
        // A ZBS template by UID is priced per template, like ZNS, when its price is given.
        Channel::OaPromotion => req.zns_price.unwrap_or(COST_PROMOTION),
        Channel::Zns => req.zns_price.unwrap_or(COST_ZNS_DEFAULT),
    };
    Decision::Send { cost_vnd }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::time::HOUR_MS;

    /// 2026-11-23T10:00:00+07:00.
    const TEN_AM: i64 = 1_795_402_800_000;

    fn follower() -> Recipient {
        Recipient {
            granted: vec!["marketing".into()],
            oa_user_id: Some("oa-1".into()),
            follows_oa: true,
            last_interaction: Some(TEN_AM - HOUR_MS),
            phone: Some("84901234567".into()),
            ..Recipient::default()
        }
    }

    fn promo(at: i64, trigger: &'static str) -> Request<'static> {
        Request {
            trigger_id: trigger,
            campaign: "cart",
            channel: Channel::OaPromotion,
            purpose: Some("marketing"),
            promotional: true,
            at,
            zns_price: None,
        }
    }

    fn sent(at: i64, channel: Channel, trigger: &str) -> Sent {
        Sent { at, channel, promotional: channel == Channel::OaPromotion, trigger_id: trigger.into() }
    }

    fn premium() -> Limits {
        Limits { package: OaPackage::Premium, frequency_cap: 5, recipient_daily_cap: 100 }
    }

    #[test]
    fn a_trigger_is_acted_on_once() {
        let h = [sent(TEN_AM - DAY_MS * 3, Channel::OaPromotion, "t1")];
        assert_eq!(decide(&promo(TEN_AM, "t1"), &follower(), &h, &premium()), Decision::Suppress(Reason::Duplicate));
        assert_eq!(decide(&promo(TEN_AM, "t2"), &follower(), &h, &premium()), Decision::Send { cost_vnd: COST_PROMOTION });
    }

    #[test]
    fn consent_is_needed_for_the_purpose_only() {
        let mut r = follower();
        r.granted.clear();
        assert_eq!(decide(&promo(TEN_AM, "t"), &r, &[], &premium()), Decision::Suppress(Reason::NoConsent));
        let order_status = Request { channel: Channel::OaTransaction, purpose: None, promotional: false, ..promo(TEN_AM, "t") };
        assert_eq!(decide(&order_status, &r, &[], &premium()), Decision::Send { cost_vnd: COST_TRANSACTION });
    }

    #[test]
    fn each_channel_needs_its_identity() {
        let mut r = follower();
        r.follows_oa = false;
        assert_eq!(decide(&promo(TEN_AM, "t"), &r, &[], &premium()), Decision::Suppress(Reason::NotFollower));
        let zns = Request { channel: Channel::Zns, zns_price: Some(440), ..promo(TEN_AM, "t") };
        assert_eq!(decide(&zns, &r, &[], &premium()), Decision::Send { cost_vnd: 440 }, "ZNS goes by phone, following or not");
        r.phone = None;
        assert_eq!(decide(&zns, &r, &[], &premium()), Decision::Suppress(Reason::NoPhone));
    }

    #[test]
    fn consultation_is_free_for_48_hours_and_impossible_after_7_days() {
        let mut r = follower();
        let reply = Request { channel: Channel::OaConsultation, purpose: None, promotional: false, ..promo(TEN_AM, "t") };
        r.last_interaction = Some(TEN_AM - 47 * HOUR_MS);
        assert_eq!(decide(&reply, &r, &[], &premium()), Decision::Send { cost_vnd: 0 });
        r.last_interaction = Some(TEN_AM - 3 * DAY_MS);
        assert_eq!(decide(&reply, &r, &[], &premium()), Decision::Send { cost_vnd: COST_CONSULTATION_OUTSIDE_WINDOW });
        r.last_interaction = Some(TEN_AM - 7 * DAY_MS - 1);
        assert_eq!(decide(&reply, &r, &[], &premium()), Decision::Suppress(Reason::OutsideUidWindow));
        r.last_interaction = None;
        assert_eq!(decide(&reply, &r, &[], &premium()), Decision::Suppress(Reason::OutsideUidWindow));
    }

    #[test]
    fn promotions_follow_the_package_quota_and_one_a_day() {
        let r = follower();
        let basic = Limits { package: OaPackage::Basic, frequency_cap: 5, recipient_daily_cap: 100 };
        // Basic: one a month. Earlier this month (Nov 2) uses it; last month's does not count.
        let nov2 = TEN_AM - 21 * DAY_MS;
        let oct30 = TEN_AM - 24 * DAY_MS;
        assert_eq!(decide(&promo(TEN_AM, "t"), &r, &[sent(oct30, Channel::OaPromotion, "a")], &basic), Decision::Send { cost_vnd: 0 });
        assert_eq!(
            decide(&promo(TEN_AM, "t"), &r, &[sent(nov2, Channel::OaPromotion, "a")], &basic),
            Decision::Suppress(Reason::MonthlyPromotionQuota)
        );
        // Premium has room this month, but not twice in a day.
        let h = [sent(nov2, Channel::OaPromotion, "a"), sent(TEN_AM - 2 * HOUR_MS, Channel::OaPromotion, "b")];
        assert_eq!(decide(&promo(TEN_AM, "t"), &r, &h, &premium()), Decision::Suppress(Reason::DailyPromotionQuota));
        assert_eq!(decide(&promo(TEN_AM + DAY_MS, "t"), &r, &h, &premium()), Decision::Send { cost_vnd: 0 });
    }

    #[test]
    fn the_frequency_cap_counts_promotional_messages_across_channels() {
        let r = follower();
        let cap1 = Limits { package: OaPackage::Premium, frequency_cap: 1, recipient_daily_cap: 100 };
        let zns = Request { channel: Channel::Zns, ..promo(TEN_AM, "t") };
        let h = [Sent { at: TEN_AM - HOUR_MS, channel: Channel::Zns, promotional: true, trigger_id: "z".into() }];
        assert_eq!(decide(&zns, &r, &h, &cap1), Decision::Suppress(Reason::FrequencyCap));
        assert_eq!(decide(&Request { at: TEN_AM + DAY_MS, ..zns.clone() }, &r, &h, &cap1), Decision::Send { cost_vnd: COST_ZNS_DEFAULT });
        // A transactional message is not capped.
        let status = Request { channel: Channel::Zns, purpose: None, promotional: false, ..zns };
        assert_eq!(decide(&status, &r, &h, &cap1), Decision::Send { cost_vnd: COST_ZNS_DEFAULT });
    }

    #[test]
    fn a_promotion_at_night_is_deferred_to_six_not_dropped() {
        let r = Recipient { last_interaction: Some(TEN_AM + 12 * HOUR_MS), ..follower() };
        let eleven_pm = TEN_AM + 13 * HOUR_MS;
        let six_am = TEN_AM + 20 * HOUR_MS;
        assert_eq!(decide(&promo(eleven_pm, "t"), &r, &[], &premium()), Decision::Defer { until: six_am, reason: Reason::NightBan });
        assert_eq!(decide(&promo(six_am, "t"), &r, &[], &premium()), Decision::Send { cost_vnd: 0 });
        // Transactional messages go at night.
        let status = Request { channel: Channel::OaTransaction, purpose: None, promotional: false, ..promo(eleven_pm, "t") };
        assert_eq!(decide(&status, &r, &[], &premium()), Decision::Send { cost_vnd: COST_TRANSACTION });
    }

    /// Only a phone or OA id a trusted source gave is sent to; and however trusted, one
    /// recipient gets at most `recipient_daily_cap` messages a day, transactional ones too.
    #[test]
    fn unverified_recipients_and_the_daily_cap_of_any_recipient() {
        let order = |at: i64, channel: Channel, id: &'static str| Request {
            trigger_id: id,
            campaign: "order_status",
            channel,
            purpose: None,
            promotional: false,
            at,
            zns_price: None,
        };
        let typed_in = Recipient { phone: None, phone_unverified: true, ..Recipient::default() };
        assert_eq!(decide(&order(TEN_AM, Channel::Zns, "a"), &typed_in, &[], &premium()), Decision::Suppress(Reason::UnverifiedPhone));
        let forged_oa = Recipient { oa_user_id: None, oa_user_id_unverified: true, follows_oa: true, ..Recipient::default() };
        assert_eq!(
            decide(&order(TEN_AM, Channel::OaTransaction, "a"), &forged_oa, &[], &premium()),
            Decision::Suppress(Reason::UnverifiedOaUser)
        );
        let verified = Recipient { phone: Some("84912345678".into()), ..Recipient::default() };
        let capped = Limits { recipient_daily_cap: 3, ..premium() };
        let h: Vec<Sent> = (0..3).map(|i| sent(TEN_AM - HOUR_MS * i, Channel::Zns, &format!("t{i}"))).collect();
        assert_eq!(decide(&order(TEN_AM, Channel::Zns, "new"), &verified, &h, &capped), Decision::Suppress(Reason::RecipientCap));
        assert!(matches!(decide(&order(TEN_AM, Channel::Zns, "new"), &verified, &h[..2], &capped), Decision::Send { .. }));
        // The same phone on other profiles counts too.
        let shared = Recipient { sent_to_address_last_day: 3, ..verified.clone() };
        assert_eq!(decide(&order(TEN_AM, Channel::Zns, "new"), &shared, &[], &capped), Decision::Suppress(Reason::RecipientCap));
        // A day later the recipient may be sent to again.
        assert!(matches!(decide(&order(TEN_AM + DAY_MS, Channel::Zns, "new"), &verified, &h, &capped), Decision::Send { .. }));
    }
}
