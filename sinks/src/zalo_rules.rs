//! Zalo's rules as zcdp understands them, each in one place, with how sure we are (the tags of
//! `docs/zalo-api.md`). The policy and the simulator both read this
//! table, so correcting a fact here corrects both. Days and months are Vietnam's
//! ([`schemas::time`]).

use schemas::time::{DAY_MS, HOUR_MS, VN_OFFSET_MS};

/// Consultation messages are free within this long after the user's last interaction. [2nd]
pub const FREE_REPLY_WINDOW_MS: i64 = 48 * HOUR_MS;
/// Nothing may be sent by UID (OA user id) after this long without an interaction (-230). [2nd]
pub const UID_WINDOW_MS: i64 = 7 * DAY_MS;
/// Promotions are blocked from 22:00 to 06:00 Vietnam time (-234 for OA, -133 for ZNS). [2nd]
pub const NIGHT_START_HOUR: i64 = 22;
pub const NIGHT_END_HOUR: i64 = 6;
/// Promotions a follower may receive a day, whatever the package. [2nd]
pub const PROMOTIONS_PER_DAY: u32 = 1;

/// An OA's package, which sets the monthly promotion quota per follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OaPackage {
    Basic,
    Advanced,
    Premium,
}

impl OaPackage {
    /// Promotions a follower may receive a calendar month. [2nd: Basic 1, Trial/Advanced 4, Premium 6]
    pub fn monthly_promotions(self) -> u32 {
        match self {
            OaPackage::Basic => 1,
            OaPackage::Advanced => 4,
            OaPackage::Premium => 6,
        }
    }

    pub fn parse(s: &str) -> Option<OaPackage> {
        match s.to_ascii_lowercase().as_str() {
            "basic" => Some(OaPackage::Basic),
            "advanced" | "trial" => Some(OaPackage::Advanced),
            "premium" => Some(OaPackage::Premium),
            _ => None,
        }
    }
}

/// What a message costs, in VND. [2nd: 55 VND a consultation message outside the free window;
/// transaction 165 VND; ZNS priced per template (a default until the template's price is known)]
pub const COST_CONSULTATION_OUTSIDE_WINDOW: i64 = 55;
pub const COST_TRANSACTION: i64 = 165;
/// Promotions by UID are counted against the quota, not charged per message. UNCONFIRMED.
pub const COST_PROMOTION: i64 = 0;
pub const COST_ZNS_DEFAULT: i64 = 300;

/// One of Zalo's messaging services as zcdp's channels use them, with since or until when it
/// exists as far as we know, and how sure that is (`docs/zalo-api.md`'s tags).
#[derive(Debug, Clone, Copy)]
pub struct Service {
    /// The channel name a campaign uses.
    pub channel: &'static str,
    pub what: &'static str,
    /// Available from (epoch ms, 00:00 Vietnam time), and its date.
    pub since: Option<(i64, &'static str)>,
    /// Stopped on (epoch ms, 00:00 Vietnam time), and its date.
    pub until: Option<(i64, &'static str)>,
    pub confidence: &'static str,
    /// What to use instead, once it stopped.
    pub instead: &'static str,
}

/// 2026-01-01T00:00+07:00.
const JAN_1_2026: (i64, &str) = (1_767_200_400_000, "2026-01-01");
/// 2026-03-01T00:00+07:00.
const MAR_1_2026: (i64, &str) = (1_772_298_000_000, "2026-03-01");

/// Zalo's messaging services, 2026. The two UID services stopped on 2026-03-01 [2nd]; ZNS was
/// merged into "ZBS Template Message" on 2026-01-01 [2nd/3rd], which sends templates by UID
/// (oa_template, the request's shape UNCONFIRMED) or by phone (zns, the same endpoint as before).
pub const SERVICES: [Service; 5] = [
    Service {
        channel: "oa_consultation",
        what: "OA consultation (customer-service) message by UID, free within 48 h of the user's last interaction",
        since: None,
        until: None,
        confidence: "[SDK] [2nd]",
        instead: "",
    },
    Service {
        channel: "oa_transaction",
        what: "OA transaction message by UID",
        since: None,
        until: Some(MAR_1_2026),
        confidence: "[2nd]",
        instead: "oa_template (a ZBS transactional template by UID) or zns",
    },
    Service {
        channel: "oa_promotion",
        what: "OA personal promotion message by UID",
        since: None,
        until: Some(MAR_1_2026),
        confidence: "[2nd]",
        instead: "oa_template (a ZBS post-sale template by UID) or zns",
    },
    Service {
        channel: "oa_template",
        what: "ZBS Template Message by UID (transactional or post-sale templates)",
        since: Some(JAN_1_2026),
        until: None,
        confidence: "[3rd], request shape UNCONFIRMED",
        instead: "",
    },
    Service {
        channel: "zns",
        what: "ZNS template message by phone (ZBS Template Message since 2026-01-01)",
        since: None,
        until: None,
        confidence: "[SDK] [2nd]",
        instead: "",
    },
];

/// Whether a campaign may use `channel` at `now`: Err says why not (the service stopped, or is
/// not there yet), with the confidence of the fact.
pub fn service_available(channel: &str, now: i64) -> Result<(), String> {
    let Some(s) = SERVICES.iter().find(|s| s.channel == channel) else {
        return Err(format!("no Zalo service behind channel {channel:?}"));
    };
    if let Some((until, date)) = s.until
        && now >= until
    {
        return Err(format!("{channel}: Zalo stopped the {} on {date} {}; use {}", s.what, s.confidence, s.instead));
    }
    if let Some((since, date)) = s.since
        && now < since
    {
        return Err(format!("{channel}: the {} exists from {date} {}", s.what, s.confidence));
    }
    Ok(())
}

/// Zalo's OA (and Graph) error codes that the senders, the policy and the simulator compare
/// against or answer with. [SDK/2nd]
pub mod oa_error {
    pub const RATE_LIMIT: i64 = -32;
    /// Invalid parameter (also the Graph API's answer to an unknown phone token).
    pub const INVALID_PARAM: i64 = -201;
    pub const OUT_OF_QUOTA: i64 = -211;
    pub const NOT_FOLLOWER: i64 = -213;
    pub const TOKEN_INVALID: i64 = -216;
    pub const TOKEN_EXPIRED: i64 = -220;
    /// The user is banned, or has not used Zalo for more than 45 days.
    pub const USER_INACTIVE: i64 = -227;
    pub const NO_INTERACTION_7_DAYS: i64 = -230;
    /// The user's last interaction has expired for this kind of message.
    pub const INTERACTION_EXPIRED: i64 = -232;
    pub const NIGHT: i64 = -234;
    /// The user's account type cannot receive this message.
    pub const USER_RESTRICTED: i64 = -244;
}

/// Zalo's ZNS (and Graph) error codes that the senders and the simulator compare against or
/// answer with. [SDK/2nd]
pub mod zns_error {
    pub const PHONE_INVALID: i64 = -108;
    pub const TEMPLATE_INVALID: i64 = -109;
    /// An access token (or the app secret) refused, on ZNS and on the Graph API.
    pub const TOKEN_INVALID: i64 = -124;
    pub const NIGHT: i64 = -133;
}

/// Zalo's OAuth (token refresh) error codes the simulator answers with. UNCONFIRMED: the
/// client treats any refusal of a refresh the same way.
pub mod oauth_error {
    pub const INVALID_APP: i64 = -14002;
    pub const INVALID_REFRESH_TOKEN: i64 = -14014;
}

/// The hour of the day (0-23) in Vietnam at `t` (epoch ms).
pub fn vn_hour(t: i64) -> i64 {
    (t + VN_OFFSET_MS).rem_euclid(DAY_MS) / HOUR_MS
}

/// Whether `t` falls in the night ban.
pub fn is_night(t: i64) -> bool {
    let h = vn_hour(t);
    !(NIGHT_END_HOUR..NIGHT_START_HOUR).contains(&h)
}

/// The end of the night ban that `t` falls in: the next 06:00 Vietnam time.
pub fn night_ends(t: i64) -> i64 {
    let local = t + VN_OFFSET_MS;
    let day_start = local - local.rem_euclid(DAY_MS);
    let six = day_start + NIGHT_END_HOUR * HOUR_MS;
    (if local < six { six } else { six + DAY_MS }) - VN_OFFSET_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-23T23:00:00+07:00.
    const ELEVEN_PM: i64 = 1_795_449_600_000;

    #[test]
    fn night_and_its_end_in_vietnam_time() {
        assert_eq!(vn_hour(ELEVEN_PM), 23);
        assert!(is_night(ELEVEN_PM));
        // 06:00 the next morning is 7 hours later.
        assert_eq!(night_ends(ELEVEN_PM), ELEVEN_PM + 7 * HOUR_MS);
        // 02:00 is still night; it ends at 06:00 the same day.
        let two_am = ELEVEN_PM + 3 * HOUR_MS;
        assert!(is_night(two_am));
        assert_eq!(night_ends(two_am), ELEVEN_PM + 7 * HOUR_MS);
        assert!(!is_night(ELEVEN_PM + 7 * HOUR_MS));
        assert!(!is_night(ELEVEN_PM - HOUR_MS - 1), "21:59:59 is day");
    }

    #[test]
    fn the_uid_services_zalo_stopped_are_refused_with_the_date_and_the_source() {
        let e = service_available("oa_promotion", MAR_1_2026.0).unwrap_err();
        assert!(e.contains("stopped") && e.contains("2026-03-01") && e.contains("[2nd]") && e.contains("oa_template"), "{e}");
        assert!(service_available("oa_transaction", ELEVEN_PM).is_err());
        assert!(service_available("oa_promotion", MAR_1_2026.0 - 1).is_ok(), "the day before it stopped");
        for ok in ["oa_consultation", "oa_template", "zns"] {
            assert!(service_available(ok, ELEVEN_PM).is_ok(), "{ok}");
        }
        assert!(service_available("oa_template", JAN_1_2026.0 - 1).is_err(), "ZBS by UID from 2026-01-01");
        assert!(service_available("sms", ELEVEN_PM).is_err());
    }

    #[test]
    fn months_and_packages() {
        let nov30 = ELEVEN_PM + 7 * DAY_MS;
        assert_eq!(schemas::time::vn_month(nov30), (2026, 11));
        assert_eq!(schemas::time::vn_month(nov30 + HOUR_MS), (2026, 12));
        assert_eq!(OaPackage::parse("Trial").unwrap().monthly_promotions(), 4);
        assert_eq!(OaPackage::Basic.monthly_promotions(), 1);
        assert_eq!(OaPackage::Premium.monthly_promotions(), 6);
    }
}
