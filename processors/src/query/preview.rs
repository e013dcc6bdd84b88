//! `POST /v1/admin/campaigns/preview`: before a campaign is saved, whom it would reach now.
//!
//! The definition is checked as a write would check it; then every profile of the app in the
//! view (the segment's members, for `segment_entered`) is put through the policy as if the
//! trigger fired for it now: the primary channel, then the fallback where the primary cannot
//! reach the user, as the sink does, with the user's sends of the last 40 days (the view follows
//! `zmp.messages.v1`) and the sinks' `[limits]` (seeded in `zmp.campaigns.v1`), so the quotas and
//! the caps count. Held-out users (the holdout group) are counted apart. The per-recipient cap is
//! counted per user (the sinks count it per phone or OA id too, across users).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use schemas::derived::{AudienceChange, Profile};
use sinks::campaigns::{Campaign, held_out};
use sinks::policy::{self, Channel, Decision, Limits, Request, Sent};

/// The view's channel classes (`view::Send`), as the policy's channels.
const CHANNELS: [Channel; 4] = [Channel::OaConsultation, Channel::OaTransaction, Channel::OaPromotion, Channel::Zns];
use sinks::sink::recipient;
use sinks::triggers::Trigger;

use super::admin::checked;
use super::{AdminKey, Key, QueryApi};

/// Most users a preview looks at; past it the counts are scaled from those (`sampled`).
pub const MAX_SCANNED: usize = 200_000;

/// What a definition would do now, counted over users.
#[derive(Debug, Default, PartialEq, serde::Serialize)]
pub struct Preview {
    /// Users it would consider (the app's, or the segment's members), of which `scanned` were
    /// looked at.
    pub audience: u64,
    pub scanned: u64,
    pub sampled: bool,
    /// Would get a message now (or at 06:00, for the night ban: `deferred_night`).
    pub reach: u64,
    pub reach_by_channel: BTreeMap<String, u64>,
    pub deferred_night: u64,
    pub held_out: u64,
    /// Users no step reaches, by the reason of the last step tried.
    pub suppressed: BTreeMap<String, u64>,
    pub estimated_cost_vnd: i64,
    pub not_estimated: Vec<&'static str>,
}

/// Runs the campaign's steps for one user, as the sink does: the primary, then the fallback
/// where the primary cannot reach the user.
/// What the preview knows besides the profile: the user's recent sends, the sinks' limits.
pub struct Known<'a> {
    pub history: &'a [Sent],
    pub limits: &'a Limits,
}

fn one(c: &Campaign, app: &str, p: &Profile, known: &Known<'_>, now: i64, out: &mut Preview) {
    if c.holdout_percent.is_some_and(|pct| held_out(app, &p.user_key, &c.name, pct)) {
        out.held_out += 1;
        return;
    }
    let mut to = recipient(Some(p));
    to.sent_to_address_last_day = known.history.iter().filter(|s| now - s.at < schemas::time::DAY_MS).count() as u32;
    let (history, limits) = (known.history, known.limits);
    let steps = std::iter::once(&c.primary).chain(c.fallback.iter());
    let mut last = None;
    for step in steps {
        let req = Request {
            trigger_id: "preview",
            campaign: &c.name,
            channel: step.channel.channel(),
            purpose: c.purpose.as_deref(),
            promotional: c.promotional(),
            at: now,
            zns_price: step.price_vnd,
        };
        match policy::decide(&req, &to, history, limits) {
            Decision::Send { cost_vnd } => {
                out.reach += 1;
                *out.reach_by_channel.entry(step.channel.name().to_string()).or_default() += 1;
                out.estimated_cost_vnd = out.estimated_cost_vnd.saturating_add(cost_vnd);
                return;
            }
            Decision::Defer { .. } => {
                out.reach += 1;
                out.deferred_night += 1;
                *out.reach_by_channel.entry(step.channel.name().to_string()).or_default() += 1;
                // The price then is the price now (the window may close by 06:00: a lower bound).
                if let Decision::Send { cost_vnd } =
                    policy::decide(&Request { at: sinks::zalo_rules::night_ends(now), ..req }, &to, history, limits)
                {
                    out.estimated_cost_vnd = out.estimated_cost_vnd.saturating_add(cost_vnd);
                }
                return;
            }
            Decision::Suppress(reason) => {
                last = Some(reason);
                if !reason.worth_fallback() {
                    break;
                }
            }
        }
    }
    if let Some(r) = last {
        *out.suppressed.entry(r.code().to_string()).or_default() += 1;
    }
}

/// The preview of `c` over `profiles` (each user once) out of an audience of `audience`, as
/// [`over_audience`] counts the view's (the tests' way in).
#[cfg(test)]
fn count<'a>(c: &Campaign, app: &str, profiles: impl Iterator<Item = (&'a Profile, &'a [Sent])>, audience: u64, now: i64) -> Preview {
    let mut out = Preview::default();
    let limits = Limits::default();
    for (p, history) in profiles {
        out.scanned += 1;
        one(c, app, p, &Known { history, limits: &limits }, now, &mut out);
    }
    finish(&mut out, audience);
    out
}

/// Scales the counts of a sample to the audience; says what is not estimated.
fn finish(out: &mut Preview, audience: u64) {
    out.audience = audience;
    out.sampled = out.scanned < audience;
    if out.sampled && out.scanned > 0 {
        let f = audience as f64 / out.scanned as f64;
        let scale = |n: &mut u64| *n = (*n as f64 * f).round() as u64;
        for n in [&mut out.reach, &mut out.deferred_night, &mut out.held_out] {
            scale(n);
        }
        out.reach_by_channel.values_mut().for_each(scale);
        out.suppressed.values_mut().for_each(scale);
        out.estimated_cost_vnd = (out.estimated_cost_vnd as f64 * f).round() as i64;
    }
    out.not_estimated = Vec::new();
}

/// One preview at a time per replica: each reads up to [`MAX_SCANNED`] profiles.
static RUNNING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

pub(crate) async fn preview(State(api): State<Arc<QueryApi>>, Key(caller): AdminKey, body: Bytes) -> Response {
    let (v, c) = match checked(&body, None) {
        Ok(ok) => ok,
        Err(r) => return *r,
    };
    let view = api.view().clone();
    let app = caller.app.clone();
    let now = schemas::time::now_ms();
    let _one = RUNNING.acquire().await.expect("never closed");
    let limits = api
        .catalog
        .get(&app, sinks::definitions::LIMITS, "limits")
        .and_then(|d| serde_json::from_str::<serde_json::Value>(&d.definition).ok())
        .map_or_else(Limits::default, |v| sinks::campaigns::LimitsConfig::policy_limits(&v));
    let answer = tokio::task::spawn_blocking(move || over_audience(&view, &app, &c, &limits, now)).await;
    match answer {
        Ok(p) => Json(json!({"campaign": v.get("name"), "preview": p})).into_response(),
        Err(e) => super::error(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "preview_failed", &e.to_string()),
    }
}

/// The preview over the users the campaign would consider (the app's, or the segment's
/// members with a profile), each put through the policy as it is read; past [`MAX_SCANNED`],
/// only counted.
fn over_audience(view: &super::View, app: &str, c: &Campaign, limits: &Limits, now: i64) -> Preview {
    let mut out = Preview::default();
    let mut audience = 0u64;
    let mut take = |p: &Profile, out: &mut Preview| {
        audience += 1;
        if out.scanned < MAX_SCANNED as u64 {
            out.scanned += 1;
            let history: Vec<Sent> = view
                .sends(app, &p.user_key)
                .into_iter()
                .map(|s| Sent {
                    at: s.at,
                    channel: CHANNELS[usize::from(s.channel & 3)],
                    promotional: s.promotional,
                    trigger_id: String::new(),
                })
                .collect();
            one(c, app, p, &Known { history: &history, limits }, now, out);
        }
    };
    if c.trigger == Trigger::SegmentEntered {
        let segment = c.segment.as_deref().unwrap_or_default();
        let mut after: Option<String> = None;
        loop {
            let (page, more) = view.members(app, segment, after.as_deref(), 1000);
            for m in page.iter().filter(|m: &&Arc<AudienceChange>| m.member) {
                if let Some(p) = view.profile(app, &m.user_key) {
                    take(&p, &mut out);
                }
            }
            after = page.last().map(|m| m.user_key.clone());
            if !more || after.is_none() {
                break;
            }
        }
    } else {
        view.each_profile(app, |p| take(&p, &mut out));
    }
    finish(&mut out, audience);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// 2026-11-24T10:00:00+07:00 (day) and 23:00 (night).
    const DAY: i64 = 1_795_489_200_000;
    const NIGHT: i64 = DAY + 13 * 3_600_000;

    fn user(key: &str, marketing: bool, oa: bool, phone: bool) -> Profile {
        Profile {
            app_id: "shop".into(),
            user_key: key.into(),
            consents: if marketing {
                vec![schemas::derived::Consent { purpose: "marketing".into(), granted: true, ..Default::default() }]
            } else {
                vec![]
            },
            oa_user_id: oa.then(|| format!("oa-{key}")),
            oa_user_id_verified: oa,
            oa_following: oa,
            oa_last_interaction: oa.then_some(DAY - 3_600_000),
            phone: phone.then(|| "84901234567".into()),
            phone_verified: phone,
            ..Default::default()
        }
    }

    fn campaign(holdout: Option<u32>) -> Campaign {
        let mut v = json!({
            "name": "c", "trigger": "segment_entered", "segment": "vip", "purpose": "marketing",
            "channel": "oa_consultation", "text": "hi {name}",
            "fallback": {"channel": "zns", "template_id": "t1", "price_vnd": 300}
        });
        if let Some(h) = holdout {
            v["holdout_percent"] = json!(h);
        }
        sinks::campaigns::from_json(&v).unwrap()
    }

    #[test]
    fn a_preview_counts_reach_by_channel_suppressions_by_reason_and_cost() {
        let users = [
            user("a", true, true, false),  // OA: free within 48 h
            user("b", true, false, true),  // not a follower: ZNS, 300
            user("c", true, false, false), // neither: no phone (the fallback's reason)
            user("d", false, true, true),  // no consent
        ];
        let p = count(&campaign(None), "shop", users.iter().map(|u| (u, &[][..])), 4, DAY);
        assert_eq!((p.scanned, p.reach, p.held_out, p.estimated_cost_vnd), (4, 2, 0, 300));
        assert_eq!(p.reach_by_channel, BTreeMap::from([("oa_consultation".into(), 1), ("zns".into(), 1)]));
        assert_eq!(p.suppressed, BTreeMap::from([("no_consent".into(), 1), ("no_phone".into(), 1)]));
        // At night promotions (both of these) wait for 06:00: reach, deferred.
        let p = count(&campaign(None), "shop", users.iter().map(|u| (u, &[][..])), 4, NIGHT);
        assert_eq!((p.reach, p.deferred_night), (2, 2));
        // Half of a sample of 4 scaled to an audience of 40.
        let p = count(&campaign(None), "shop", users.iter().map(|u| (u, &[][..])), 40, DAY);
        assert!(p.sampled);
        assert_eq!((p.reach, p.estimated_cost_vnd), (20, 3000));
    }

    #[test]
    fn held_out_users_are_counted_apart() {
        let users: Vec<Profile> = (0..200).map(|i| user(&format!("u{i}"), true, true, false)).collect();
        let p = count(&campaign(Some(50)), "shop", users.iter().map(|u| (u, &[][..])), 200, DAY);
        assert_eq!(p.reach + p.held_out, 200);
        assert!(p.held_out > 60 && p.held_out < 140, "about half: {}", p.held_out);
    }

    #[test]
    fn recent_sends_count_against_the_caps() {
        // Two promotions today already: the frequency cap (2) refuses the OA step, and it is no
        // reason to try ZNS.
        let user = user("a", true, true, true);
        let sent =
            |h: i64| Sent { at: DAY - h * 3_600_000, channel: Channel::OaConsultation, promotional: true, trigger_id: String::new() };
        let history = [sent(1), sent(2)];
        let p = count(&campaign(None), "shop", [(&user, &history[..])].into_iter(), 1, DAY);
        assert_eq!((p.reach, p.suppressed.get("frequency_cap").copied()), (0, Some(1)));
        assert!(p.not_estimated.is_empty());
    }
}
