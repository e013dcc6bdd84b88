//! What a profile implies, from `zmp.profiles.v1`: `welcome` (a first session) and
//! `oa_followed` (a new OA follower) at once; `birthday` (09:00 Vietnam time on the day) and
//! `next_purchase` (the expected next purchase reached without an order) as timers the sink
//! keeps per user. Each only while it is younger than the campaigns' `max_trigger_age`, so a
//! replay of old profiles starts nothing.

use chrono::{Datelike, NaiveDate};
use schemas::derived::{Profile, stable_id};
use schemas::event::Trust;
use schemas::time::{DAY_MS, VN_OFFSET_MS};
use serde_json::{Map, json};

use super::{Occurrence, Trigger, vars};

pub const WELCOME_VARIABLES: &[&str] = &[];
pub const OA_FOLLOWED_VARIABLES: &[&str] = &[];
pub const BIRTHDAY_VARIABLES: &[&str] = &[];
/// The date the next purchase was expected, `dd/mm/yyyy` in Vietnam time.
pub const NEXT_PURCHASE_VARIABLES: &[&str] = &["expected_date"];

/// A profile-derived check due at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProfileTimer {
    Birthday,
    NextPurchase,
}

/// The triggers a profile implies at once, at `now`: a welcome after the first session, and a
/// new OA follower.
pub fn immediate(p: &Profile, user: &str, now: i64, max_age: i64) -> Vec<Occurrence> {
    let mut found = Vec::new();
    let occurrence = |trigger, id, at| Occurrence {
        app: p.app_id.clone(),
        user: user.to_string(),
        trigger,
        id,
        at,
        vars: Map::new(),
        segment: None,
        trust: Trust::Server,
    };
    if p.sessions >= 1 && now - p.first_seen <= max_age {
        found.push(occurrence(Trigger::Welcome, stable_id(&[&p.app_id, user, "welcome"]), p.first_seen));
    }
    if p.oa_following
        && let Some(at) = p.oa_followed_at
        && now - at <= max_age
    {
        found.push(occurrence(Trigger::OaFollowed, stable_id(&[&p.app_id, user, "oa_followed", &at.to_string()]), at));
    }
    found
}

/// The timers a profile implies at `now`: the next birthday, and the expected next purchase
/// while no order came after it.
pub fn timers(p: &Profile, now: i64, max_age: i64) -> Vec<(i64, ProfileTimer)> {
    let mut out = Vec::new();
    if let Some(at) = next_birthday(p.birthday.as_deref(), now - max_age) {
        out.push((at, ProfileTimer::Birthday));
    }
    if let Some(at) = p.next_purchase_expected
        && p.last_order_at.is_none_or(|o| at > o)
        && now - at <= max_age
    {
        out.push((at, ProfileTimer::NextPurchase));
    }
    out
}

/// The occurrence of a timer that came due at `at`, if the profile still calls for it.
pub fn on_timer(timer: ProfileTimer, at: i64, p: &Profile, user: &str) -> Option<Occurrence> {
    let (trigger, id, vars) = match timer {
        ProfileTimer::Birthday => {
            let year = (at + VN_OFFSET_MS).div_euclid(DAY_MS * 365).to_string();
            (Trigger::Birthday, stable_id(&[&p.app_id, user, "birthday", &year]), Map::new())
        }
        ProfileTimer::NextPurchase => {
            if p.next_purchase_expected != Some(at) || p.last_order_at.is_some_and(|o| o >= at) {
                return None;
            }
            let date = chrono::DateTime::from_timestamp_millis(at + VN_OFFSET_MS).map(|d| d.format("%d/%m/%Y").to_string());
            (
                Trigger::NextPurchase,
                stable_id(&[&p.app_id, user, "next_purchase", &at.to_string()]),
                vars(json!({"expected_date": date.unwrap_or_default()})),
            )
        }
    };
    Some(Occurrence { app: p.app_id.clone(), user: user.to_string(), trigger, id, at, vars, segment: None, trust: Trust::Server })
}

/// 09:00 Vietnam time on the user's next birthday at or after `from` (birthday `YYYY-MM-DD`
/// or `MM-DD`).
fn next_birthday(birthday: Option<&str>, from: i64) -> Option<i64> {
    let b = birthday?;
    let md = b.rsplitn(3, '-').take(2).collect::<Vec<_>>();
    let (day, month): (u32, u32) = (md.first()?.parse().ok()?, md.get(1)?.parse().ok()?);
    let local = chrono::DateTime::from_timestamp_millis(from + VN_OFFSET_MS)?.date_naive();
    for year in [local.year(), local.year() + 1] {
        // 29 February: celebrated on 1 March in other years.
        let date = NaiveDate::from_ymd_opt(year, month, day).or_else(|| NaiveDate::from_ymd_opt(year, 3, 1))?;
        let at = date.and_hms_opt(9, 0, 0)?.and_utc().timestamp_millis() - VN_OFFSET_MS;
        if at >= from {
            return Some(at);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::time::HOUR_MS;

    #[test]
    fn birthdays_are_at_nine_in_vietnam() {
        // 2026-11-23T10:00+07:00.
        let now = 1_795_402_800_000;
        let at = next_birthday(Some("1990-12-01"), now).unwrap();
        assert_eq!(at, now - HOUR_MS + 8 * DAY_MS, "2026-12-01 09:00+07:00");
        let next_year = next_birthday(Some("11-20"), now).unwrap();
        assert!(next_year > now + 300 * DAY_MS);
        assert_eq!(next_birthday(Some("garbage"), now), None);
    }
}
