//! Campaigns: a trigger ([`crate::triggers`]) → a channel → a template filled from the trigger
//! and the profile, with an optional fallback channel. Read from a TOML file (docs/messaging.md; `config/campaigns.toml`
//! is the shipped default) and checked whole at start: an unknown trigger, channel or template
//! variable is an error that names the campaign.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, bail};
use serde::Deserialize;
use serde_json::Value;

use schemas::event::Trust;

use crate::policy::Channel;
use crate::triggers::{PROFILE_VARIABLES, Trigger};
use crate::zalo::{Content, OaKind};
use crate::zalo_rules::OaPackage;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelName {
    OaConsultation,
    OaTransaction,
    OaPromotion,
    OaTemplate,
    Zns,
}

impl ChannelName {
    pub fn channel(self) -> Channel {
        match self {
            ChannelName::OaConsultation => Channel::OaConsultation,
            ChannelName::OaTransaction => Channel::OaTransaction,
            ChannelName::OaPromotion | ChannelName::OaTemplate => Channel::OaPromotion,
            ChannelName::Zns => Channel::Zns,
        }
    }

    pub fn oa_kind(self) -> Option<OaKind> {
        match self {
            ChannelName::OaConsultation => Some(OaKind::Consultation),
            ChannelName::OaTransaction => Some(OaKind::Transaction),
            ChannelName::OaPromotion => Some(OaKind::Promotion),
            ChannelName::OaTemplate => Some(OaKind::Template),
            ChannelName::Zns => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ChannelName::OaConsultation => "oa_consultation",
            ChannelName::OaTransaction => "oa_transaction",
            ChannelName::OaPromotion => "oa_promotion",
            ChannelName::OaTemplate => "oa_template",
            ChannelName::Zns => "zns",
        }
    }

    pub fn parse(s: &str) -> Option<ChannelName> {
        [ChannelName::OaConsultation, ChannelName::OaTransaction, ChannelName::OaPromotion, ChannelName::OaTemplate, ChannelName::Zns]
            .into_iter()
            .find(|c| c.name() == s)
    }

    fn needs_template_id(self) -> bool {
        matches!(self, ChannelName::OaTemplate | ChannelName::Zns)
    }
}

/// One way of sending: a channel and what to put in it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub channel: ChannelName,
    /// OA messages: the header (promotion, transaction).
    #[serde(default)]
    pub title: Option<String>,
    /// OA messages: the text, with `{variables}`.
    #[serde(default)]
    pub text: Option<String>,
    /// A button that opens a URL (OA promotion and transaction).
    #[serde(default)]
    pub button_title: Option<String>,
    #[serde(default)]
    pub button_url: Option<String>,
    /// ZNS and OA template messages: the approved template.
    #[serde(default)]
    pub template_id: Option<String>,
    /// Template parameters, each a string with `{variables}`.
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    /// ZNS and OA template messages: the template's price in VND, when known (else zalo_rules'
    /// default).
    #[serde(default)]
    pub price_vnd: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Campaign {
    pub name: String,
    pub trigger: Trigger,
    /// For `segment_entered`: the segment.
    #[serde(default)]
    pub segment: Option<String>,
    /// The consent purpose the message needs; none for messages the user's own action calls for.
    #[serde(default)]
    pub purpose: Option<String>,
    /// Promotional: the night ban, the quotas and the frequency cap apply. Default: true unless
    /// the trigger is order_status.
    #[serde(default)]
    pub promotional: Option<bool>,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(flatten)]
    pub primary: Step,
    /// Tried when the primary channel cannot reach the user (not a follower, outside the UID
    /// window, quota used up, or Zalo refuses the recipient).
    #[serde(default)]
    pub fallback: Option<Step>,
    /// Who may start it, by the trigger's `trust`: `server` (the shop's secret key), `zalo`,
    /// `session` (a Mini App user's own session), `unverified` (anyone with the write key).
    /// Default: `["server"]` for `order_status` — an order's status is the shop's word — and
    /// anyone for the rest.
    #[serde(default)]
    pub sources: Option<Vec<Trust>>,
    /// The share of entrants (0 – 90 %) held out: they get nothing, and a `held_out` record, so
    /// that their conversions measure what the campaign adds (docs/messaging.md, *Lift*).
    /// Deterministic by app, user and campaign. Not for `order_status` (owed to the customer).
    #[serde(default)]
    pub holdout_percent: Option<u32>,
    /// What counts as a conversion: `order_placed` (the only goal yet, and the default).
    #[serde(default)]
    pub goal: Option<String>,
    /// A journey: what follows the first message (which is step 1), numbered from 2 — sends,
    /// waits and branches (docs/messaging.md, *Journeys*).
    #[serde(default)]
    pub steps: Vec<JourneyStep>,
    /// Checked before every step after the first: the user reached it since entering — the
    /// journey ends there (`goal_reached`). `order_placed`: an order after the entry.
    #[serde(default)]
    pub exit_goal: Option<String>,
    /// Who may enter again: `every_trigger` (the default: each trigger occurrence is an entry),
    /// `once` (a user enters once, as far back as `zmp.messages.v1` keeps: 40 days), or
    /// `after:<duration>` (not again within that long of the last entry, e.g. `after:7d`).
    #[serde(default)]
    pub reentry: Option<String>,
}

/// One step of a journey after its first message: exactly one of the four.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JourneyStep {
    /// A message, like the campaign's first (with its own fallback).
    #[serde(default)]
    pub send: Option<Box<SendStep>>,
    /// A wait, e.g. `23h`, `2d` (1 minute to 30 days).
    #[serde(default)]
    pub wait: Option<String>,
    /// A wait until the next time of day in Vietnam, `HH:MM`.
    #[serde(default)]
    pub wait_until: Option<String>,
    /// A branch on what is true of the user now.
    #[serde(default)]
    pub branch: Option<Branch>,
}

/// A journey's message: a step (channel, template…) and its fallback.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendStep {
    #[serde(flatten)]
    pub step: Step,
    #[serde(default)]
    pub fallback: Option<Step>,
}

/// `if` holds: go to `then` (default: the next step); else to `else` (default: the next step).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Branch {
    #[serde(rename = "if")]
    pub condition: Condition,
    #[serde(default)]
    pub then: Option<Goto>,
    #[serde(default, rename = "else")]
    pub otherwise: Option<Goto>,
}

/// What a branch asks of the user, now: `converted`, `follows_oa`, `has_phone` or
/// `in_segment:<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Condition {
    /// Placed an order since entering the journey.
    Converted,
    /// Follows the shop's OA.
    FollowsOa,
    /// Has a verified phone.
    HasPhone,
    /// Is in the segment now (`zmp.audiences.v1`).
    InSegment(String),
}

impl TryFrom<String> for Condition {
    type Error = String;

    fn try_from(s: String) -> Result<Condition, String> {
        match s.as_str() {
            "converted" => Ok(Condition::Converted),
            "follows_oa" => Ok(Condition::FollowsOa),
            "has_phone" => Ok(Condition::HasPhone),
            _ => match s.strip_prefix("in_segment:") {
                Some(seg)
                    if !seg.is_empty() && seg.len() <= 64 && seg.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
                {
                    Ok(Condition::InSegment(seg.to_string()))
                }
                _ => Err(format!("{s:?}: converted, follows_oa, has_phone or in_segment:<segment>")),
            },
        }
    }
}

/// Where a branch goes: a later step's number, `next` or `exit`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Goto {
    Step(usize),
    Word(String),
}

/// What a journey step is, checked.
#[derive(Debug, Clone, Copy)]
pub enum StepKind<'a> {
    Send(&'a SendStep),
    Wait(i64),
    WaitUntil { hour: i64, minute: i64 },
    Branch(&'a Branch),
}

/// Who may enter again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reentry {
    EveryTrigger,
    Once,
    After(i64),
}

/// The highest price a template may say it costs, in VND (ZNS templates cost a few hundred).
pub const MAX_PRICE_VND: i64 = 100_000;

/// Most steps a journey has after its first message.
pub const MAX_STEPS: usize = 10;

impl JourneyStep {
    /// The step's kind; Err names what is wrong (checked whole by [`check`] first).
    pub fn kind(&self) -> Result<StepKind<'_>, String> {
        let given = usize::from(self.send.is_some())
            + usize::from(self.wait.is_some())
            + usize::from(self.wait_until.is_some())
            + usize::from(self.branch.is_some());
        if given != 1 {
            return Err("a step is exactly one of send, wait, wait_until, branch".into());
        }
        if let Some(s) = &self.send {
            return Ok(StepKind::Send(s));
        }
        if let Some(w) = &self.wait {
            let d = schemas::duration::parse_duration(w)?;
            let ms = d.as_millis() as i64;
            if !(60_000..=30 * 86_400_000).contains(&ms) {
                return Err(format!("{w:?}: between 1m and 30d"));
            }
            return Ok(StepKind::Wait(ms));
        }
        if let Some(t) = &self.wait_until {
            let parsed = t.split_once(':').and_then(|(h, m)| {
                let (h, m) = (h.parse::<i64>().ok()?, m.parse::<i64>().ok()?);
                ((0..24).contains(&h) && (0..60).contains(&m) && t.len() == 5).then_some((h, m))
            });
            let (hour, minute) = parsed.ok_or_else(|| format!("{t:?}: a time of day in Vietnam, HH:MM"))?;
            return Ok(StepKind::WaitUntil { hour, minute });
        }
        Ok(StepKind::Branch(self.branch.as_ref().expect("one is given")))
    }
}

impl Goto {
    /// The step number it goes to from step `at` (`next`: at + 1); None: the journey ends.
    pub fn target(&self, at: usize) -> Option<usize> {
        match self {
            Goto::Step(n) => Some(*n),
            Goto::Word(w) if w == "next" => Some(at + 1),
            Goto::Word(_) => None,
        }
    }
}

/// The goals a campaign may have.
pub const GOALS: [&str; 1] = ["order_placed"];

/// Whether `user` of `app` is in `campaign`'s holdout group of `percent` %: the first 32 bits of
/// a hash of the three, modulo 10,000, below `percent` × 100. The same user stays in the same
/// group of a campaign at every entry, on every member, after every restart.
pub fn held_out(app: &str, user: &str, campaign: &str, percent: u32) -> bool {
    if percent == 0 {
        return false;
    }
    let id = schemas::derived::stable_id(&["holdout", app, user, campaign]);
    let bucket = u32::from_str_radix(&id[..8], 16).expect("hex") % 10_000;
    bucket < percent * 100
}

fn yes() -> bool {
    true
}

impl Campaign {
    /// The journey's step `n` (2 and on; step 1 is the campaign's first message).
    pub fn step(&self, n: usize) -> Option<&JourneyStep> {
        n.checked_sub(2).and_then(|i| self.steps.get(i))
    }

    /// Who may enter again (checked by [`check`]).
    pub fn reentry(&self) -> Reentry {
        match self.reentry.as_deref() {
            Some("once") => Reentry::Once,
            Some(r) => r
                .strip_prefix("after:")
                .and_then(|d| schemas::duration::parse_duration(d).ok())
                .map_or(Reentry::EveryTrigger, |d| Reentry::After(d.as_millis() as i64)),
            None => Reentry::EveryTrigger,
        }
    }

    pub fn promotional(&self) -> bool {
        self.promotional.unwrap_or(self.trigger != Trigger::OrderStatus)
    }

    /// Whether an occurrence vouched for by `trust` may start this campaign.
    pub fn accepts(&self, trust: Trust) -> bool {
        match &self.sources {
            Some(list) => list.contains(&trust),
            None if self.trigger == Trigger::OrderStatus => trust == Trust::Server,
            None => true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// The OA's package: basic, advanced (or trial), premium.
    #[serde(default = "basic")]
    pub package: String,
    /// Promotional messages a user may get in any 24 hours, across campaigns.
    #[serde(default = "two")]
    pub frequency_cap: u32,
    /// Triggers older than this (hours) are not acted on: a replay of old data sends nothing.
    #[serde(default = "day")]
    pub max_trigger_age_hours: i64,
    /// Messages of any kind (transactional too) one recipient — user, phone or OA id — may get
    /// in any 24 hours, across campaigns.
    #[serde(default = "five")]
    pub recipient_daily_cap: u32,
}

fn five() -> u32 {
    5
}

fn basic() -> String {
    "basic".into()
}
fn two() -> u32 {
    2
}
fn day() -> i64 {
    24
}

impl LimitsConfig {
    /// The policy's limits from a seeded `[limits]` (JSON); the defaults where it cannot be read.
    pub fn policy_limits(v: &Value) -> crate::policy::Limits {
        let c: LimitsConfig = serde_json::from_value(v.clone()).unwrap_or_default();
        crate::policy::Limits {
            package: OaPackage::parse(&c.package).unwrap_or(OaPackage::Basic),
            frequency_cap: c.frequency_cap,
            recipient_daily_cap: c.recipient_daily_cap,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig { package: basic(), frequency_cap: two(), max_trigger_age_hours: day(), recipient_daily_cap: five() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    limits: LimitsConfig,
    #[serde(default)]
    campaign: Vec<Campaign>,
}

/// The loaded, checked campaigns.
#[derive(Debug, Clone)]
pub struct Campaigns {
    pub campaigns: Vec<Campaign>,
    pub limits: crate::policy::Limits,
    pub max_trigger_age_ms: i64,
    /// The enabled campaigns as JSON definitions (name, definition), in the file's order: the
    /// seed written to `zmp.campaigns.v1` ([`crate::definitions`]).
    pub seeds: Vec<(String, Value)>,
    /// The `[limits]` table as JSON (`{}` without one): seeded too, for the campaign preview.
    pub limits_seed: Value,
}

/// The shipped default (`config/campaigns.toml`).
pub const DEFAULT: &str = include_str!("../../config/campaigns.toml");

impl Campaigns {
    pub fn load(path: Option<&Path>) -> anyhow::Result<Campaigns> {
        match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("reading the campaigns file {}", p.display()))?;
                Campaigns::parse(&text).with_context(|| format!("in the campaigns file {}", p.display()))
            }
            None => Campaigns::parse(DEFAULT).context("in the shipped config/campaigns.toml"),
        }
    }

    pub fn parse(text: &str) -> anyhow::Result<Campaigns> {
        let f: File = toml::from_str(text)?;
        let package = OaPackage::parse(&f.limits.package)
            .with_context(|| format!("limits.package {:?}: use basic, advanced, trial or premium", f.limits.package))?;
        let mut names = std::collections::HashSet::new();
        for c in &f.campaign {
            if !names.insert(c.name.as_str()) {
                bail!("two campaigns are named {:?}", c.name);
            }
            check(c).map_err(anyhow::Error::new).with_context(|| format!("campaign {:?}", c.name))?;
        }
        // The same campaigns as written, for the seed: each table as JSON.
        let table: toml::Table = toml::from_str(text)?;
        let mut seeds = Vec::new();
        if let Some(toml::Value::Array(list)) = table.get("campaign") {
            for (t, c) in list.iter().zip(&f.campaign) {
                if c.enabled {
                    seeds.push((c.name.clone(), serde_json::to_value(t)?));
                }
            }
        }
        let limits_seed = table.get("limits").map(serde_json::to_value).transpose()?.unwrap_or_else(|| serde_json::json!({}));
        Ok(Campaigns {
            campaigns: f.campaign.into_iter().filter(|c| c.enabled).collect(),
            seeds,
            limits_seed,
            limits: crate::policy::Limits {
                package,
                frequency_cap: f.limits.frequency_cap,
                recipient_daily_cap: f.limits.recipient_daily_cap,
            },
            max_trigger_age_ms: f.limits.max_trigger_age_hours * 3600 * 1000,
        })
    }

    pub fn for_trigger(&self, t: Trigger) -> impl Iterator<Item = &Campaign> {
        self.campaigns.iter().filter(move |c| c.trigger == t)
    }

    pub fn by_name(&self, name: &str) -> Option<&Campaign> {
        self.campaigns.iter().find(|c| c.name == name)
    }
}

/// What is wrong with a definition, and in which field (a dotted path: `fallback.template_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub why: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() { f.write_str(&self.why) } else { write!(f, "{}: {}", self.field, self.why) }
    }
}

impl std::error::Error for FieldError {}

fn field_error(field: impl Into<String>, why: impl Into<String>) -> FieldError {
    FieldError { field: field.into(), why: why.into() }
}

/// Checks a campaign whole; the first problem found, with its field.
pub fn check(c: &Campaign) -> Result<(), FieldError> {
    if c.name.is_empty() || c.name.len() > 64 || !c.name.chars().all(|ch| ch.is_ascii_alphanumeric() || "_-.".contains(ch)) {
        return Err(field_error("name", "1 to 64 characters of a-z, A-Z, 0-9, _ - ."));
    }
    if c.name == "preview" {
        return Err(field_error("name", "\"preview\" is the admin API's preview route, not a name"));
    }
    if (c.trigger == Trigger::SegmentEntered) != c.segment.is_some() {
        return Err(field_error("segment", "required for trigger segment_entered, and only for it"));
    }
    check_send(c, "", &c.primary, c.fallback.as_ref())?;
    if c.steps.len() > MAX_STEPS {
        return Err(field_error("steps", format!("at most {MAX_STEPS} steps after the first message")));
    }
    for (i, step) in c.steps.iter().enumerate() {
        let n = i + 2;
        let at = format!("steps[{i}]");
        let kind = step.kind().map_err(|why| field_error(at.clone(), why))?;
        match kind {
            StepKind::Send(s) => check_send(c, &format!("{at}.send."), &s.step, s.fallback.as_ref())?,
            StepKind::Branch(b) => {
                for (f, g) in [("then", &b.then), ("else", &b.otherwise)] {
                    let Some(g) = g else { continue };
                    let ok = match g {
                        // Forward only: a journey always ends.
                        Goto::Step(t) => *t > n && *t <= c.steps.len() + 1,
                        Goto::Word(w) => w == "next" || w == "exit",
                    };
                    if !ok {
                        return Err(field_error(
                            format!("{at}.branch.{f}"),
                            format!("\"next\", \"exit\", or a later step's number ({} to {})", n + 1, c.steps.len() + 1),
                        ));
                    }
                }
            }
            StepKind::Wait(_) | StepKind::WaitUntil { .. } => {
                if n == c.steps.len() + 1 {
                    return Err(field_error(at, "a journey does not end with a wait"));
                }
            }
        }
    }
    if let Some(g) = &c.exit_goal
        && !GOALS.contains(&g.as_str())
    {
        return Err(field_error("exit_goal", format!("{g:?}: use one of {}", GOALS.join(", "))));
    }
    if let Some(r) = &c.reentry {
        let ok = r == "every_trigger"
            || r == "once"
            || r.strip_prefix("after:").is_some_and(|d| schemas::duration::parse_duration(d).is_ok_and(|d| d.as_secs() >= 60));
        if !ok {
            return Err(field_error("reentry", format!("{r:?}: every_trigger, once, or after:<duration> (e.g. after:7d)")));
        }
    }
    if let Some(p) = c.holdout_percent {
        if p > 90 {
            return Err(field_error("holdout_percent", format!("{p}: at most 90 (a share of the entrants, in per cent)")));
        }
        if p > 0 && c.trigger == Trigger::OrderStatus {
            return Err(field_error("holdout_percent", "an order's status is owed to the customer: nobody is held out of it"));
        }
    }
    if let Some(g) = &c.goal
        && !GOALS.contains(&g.as_str())
    {
        return Err(field_error("goal", format!("{g:?}: use one of {}", GOALS.join(", "))));
    }
    Ok(())
}

/// Checks one message of a campaign (its first, or a journey's send step) and its fallback;
/// `prefix` is where it is in the definition (`steps.2.send.`).
fn check_send(c: &Campaign, prefix: &str, primary: &Step, fallback: Option<&Step>) -> Result<(), FieldError> {
    let fallback_at = format!("{prefix}fallback.");
    for (which, step) in std::iter::once((prefix, primary)).chain(fallback.map(|f| (fallback_at.as_str(), f))) {
        let at = |f: &str| format!("{which}{f}");
        if step.channel.needs_template_id() && step.template_id.as_deref().is_none_or(str::is_empty) {
            return Err(field_error(at("template_id"), format!("channel {} needs a template_id", step.channel.name())));
        }
        if !step.channel.needs_template_id() && step.text.as_deref().is_none_or(str::is_empty) {
            return Err(field_error(at("text"), format!("channel {} needs a text", step.channel.name())));
        }
        if step.button_title.is_some() != step.button_url.is_some() {
            return Err(field_error(at("button_url"), "button_title and button_url go together"));
        }
        if step.price_vnd.is_some_and(|p| !(0..=MAX_PRICE_VND).contains(&p)) {
            return Err(field_error(at("price_vnd"), format!("0 to {MAX_PRICE_VND} VND a message")));
        }
        if let Err(why) = crate::zalo_rules::service_available(step.channel.name(), schemas::time::now_ms()) {
            return Err(field_error(at("channel"), why));
        }
        let known = |v: &str| PROFILE_VARIABLES.contains(&v) || c.trigger.variables().contains(&v);
        let texts = [("title", step.title.as_ref()), ("text", step.text.as_ref()), ("button_url", step.button_url.as_ref())];
        let texts =
            texts.into_iter().filter_map(|(f, t)| Some((f.to_string(), t?))).chain(step.data.iter().map(|(k, v)| (format!("data.{k}"), v)));
        for (f, t) in texts {
            for v in variables(t).map_err(|e| field_error(at(&f), e.to_string()))? {
                if !known(v) {
                    return Err(field_error(
                        at(&f),
                        format!(
                            "unknown variable {{{v}}}; this trigger has {}",
                            PROFILE_VARIABLES
                                .iter()
                                .chain(c.trigger.variables())
                                .map(|v| format!("{{{v}}}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
            }
        }
    }
    if fallback.is_some_and(|f| f.channel.channel().by_uid()) {
        return Err(field_error(format!("{prefix}fallback.channel"), "the fallback must be zns: it is for users OA messages cannot reach"));
    }
    Ok(())
}

/// A campaign from its JSON definition (the admin API's, `zmp.campaigns.v1`'s), checked whole.
/// A field of the wrong type or value, an unknown or missing one, is named.
pub fn from_json(value: &Value) -> Result<Campaign, FieldError> {
    let c: Campaign = deserialize_named(value)?;
    check(&c)?;
    Ok(c)
}

/// Reads a definition from JSON; a member of the wrong type or value, an unknown or a missing
/// one, is named in the error's field (a dotted path).
pub fn deserialize_named<T: serde::de::DeserializeOwned>(value: &Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde names a missing or unknown member in its message, not in the path.
        let named = ["missing field `", "unknown field `"].iter().find_map(|p| inner.split_once(p)).and_then(|(_, r)| r.split_once('`'));
        let field = match (named, path.as_str()) {
            (Some((f, _)), "." | "") => f.to_string(),
            // Already the path's last member (an unknown one, outside a flattened struct).
            (Some((f, _)), p) if p == f || p.ends_with(&format!(".{f}")) => p.to_string(),
            (Some((f, _)), p) => format!("{p}.{f}"),
            (None, ".") => String::new(),
            (None, p) => p.to_string(),
        };
        field_error(field, inner)
    })
}

/// The `{variable}` names in a template (`{{` and `}}` are literal braces).
fn variables(t: &str) -> anyhow::Result<Vec<&str>> {
    let mut out = Vec::new();
    let mut rest = t;
    while let Some(i) = rest.find(['{', '}']) {
        let (c, after) = (rest.as_bytes()[i], &rest[i + 1..]);
        if after.as_bytes().first() == Some(&c) {
            rest = &after[1..];
            continue;
        }
        if c == b'}' {
            bail!("unmatched }} in {t:?}");
        }
        let end = after.find('}').with_context(|| format!("unclosed {{ in {t:?}"))?;
        out.push(&after[..end]);
        rest = &after[end + 1..];
    }
    Ok(out)
}

/// Fills `{variables}` from `vars`; a missing one becomes empty.
pub fn render(t: &str, vars: &serde_json::Map<String, Value>) -> String {
    let mut out = String::with_capacity(t.len());
    let mut rest = t;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let (c, after) = (rest.as_bytes()[i], &rest[i + 1..]);
        if after.as_bytes().first() == Some(&c) {
            out.push(c as char);
            rest = &after[1..];
            continue;
        }
        let Some(end) = after.find('}') else {
            out.push_str(&rest[i..]);
            return out;
        };
        match vars.get(&after[..end]) {
            Some(Value::String(s)) => out.push_str(s),
            Some(Value::Null) | None => {}
            Some(v) => out.push_str(&v.to_string()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// What a step sends, filled in.
pub fn content(step: &Step, vars: &serde_json::Map<String, Value>) -> Content {
    Content {
        title: step.title.as_deref().map(|t| render(t, vars)),
        text: step.text.as_deref().map(|t| render(t, vars)).unwrap_or_default(),
        button: step.button_title.as_ref().zip(step.button_url.as_ref()).map(|(t, u)| (render(t, vars), render(u, vars))),
        template_id: step.template_id.clone(),
        template_data: step.data.iter().map(|(k, v)| (k.clone(), Value::String(render(v, vars)))).collect(),
        table: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_shipped_campaigns_load_and_cover_every_trigger() {
        let c = Campaigns::load(None).unwrap();
        for t in Trigger::ALL {
            assert!(c.for_trigger(t).next().is_some(), "no shipped campaign for {}", t.name());
        }
        let cart = c.for_trigger(Trigger::CartAbandoned).next().unwrap();
        assert_eq!(cart.fallback.as_ref().unwrap().channel, ChannelName::Zns, "OA first, ZNS when OA cannot reach");
        assert!(!c.for_trigger(Trigger::OrderStatus).next().unwrap().promotional());
    }

    #[test]
    fn bad_campaigns_are_refused_with_the_campaign_named() {
        let err = |t: &str| format!("{:#}", Campaigns::parse(t).unwrap_err());
        let e = err("[[campaign]]\nname = \"c\"\ntrigger = \"cart_abandoned\"\nchannel = \"oa_consultation\"\ntext = \"hi {order_id}\"\n");
        assert!(e.contains("campaign \"c\"") && e.contains("unknown variable {order_id}"), "{e}");
        let e = err("[[campaign]]\nname = \"c\"\ntrigger = \"birthday\"\nchannel = \"zns\"\n");
        assert!(e.contains("needs a template_id"), "{e}");
        let e = err("[[campaign]]\nname = \"c\"\ntrigger = \"lunch\"\nchannel = \"zns\"\n");
        assert!(e.contains("lunch"), "{e}");
        let e = err("[limits]\npackage = \"gold\"\n");
        assert!(e.contains("gold"), "{e}");
        let e = err("[[campaign]]\nname = \"c\"\ntrigger = \"segment_entered\"\nchannel = \"oa_consultation\"\ntext = \"x\"\n");
        assert!(e.contains("segment"), "{e}");
    }

    #[test]
    fn templates_fill_variables_and_keep_literal_braces() {
        let vars = json!({"name": "Lan", "cart_value": "350.000"}).as_object().unwrap().clone();
        assert_eq!(render("Chào {name}, giỏ {cart_value} đ {{ok}} {missing}.", &vars), "Chào Lan, giỏ 350.000 đ {ok} .");
        assert_eq!(variables("a {x} {{y}} {z}").unwrap(), vec!["x", "z"]);
        assert!(variables("a {x").is_err());
    }

    #[test]
    fn journeys_are_checked_step_by_step_with_the_field_named() {
        let base = json!({"name": "j", "trigger": "cart_abandoned", "purpose": "marketing", "channel": "oa_consultation", "text": "hi"});
        let with = |steps: Value, extra: Value| {
            let mut v = base.clone();
            v["steps"] = steps;
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            from_json(&v)
        };
        let ok = with(
            json!([{"wait": "23h"}, {"wait_until": "09:30"}, {"branch": {"if": "has_phone", "else": "exit"}},
                   {"send": {"channel": "zns", "template_id": "t", "data": {"v": "{cart_value}"}}}]),
            json!({"exit_goal": "order_placed", "reentry": "after:7d"}),
        )
        .unwrap();
        assert_eq!(ok.steps.len(), 4);
        assert!(matches!(ok.step(2).unwrap().kind(), Ok(StepKind::Wait(82_800_000))));
        assert!(matches!(ok.step(3).unwrap().kind(), Ok(StepKind::WaitUntil { hour: 9, minute: 30 })));
        assert_eq!(ok.reentry(), Reentry::After(7 * 86_400_000));
        let field = |steps: Value, extra: Value| with(steps, extra).unwrap_err().field;
        assert_eq!(
            field(json!([{"wait": "1h", "wait_until": "09:00"}, {"send": {"channel": "zns", "template_id": "t"}}]), json!({})),
            "steps[0]"
        );
        assert_eq!(field(json!([{"wait": "40d"}, {"send": {"channel": "zns", "template_id": "t"}}]), json!({})), "steps[0]");
        assert_eq!(field(json!([{"wait_until": "25:00"}, {"send": {"channel": "zns", "template_id": "t"}}]), json!({})), "steps[0]");
        assert_eq!(field(json!([{"send": {"channel": "zns"}}]), json!({})), "steps[0].send.template_id");
        assert_eq!(
            field(json!([{"send": {"channel": "zns", "template_id": "t", "data": {"x": "{order_id}"}}}]), json!({})),
            "steps[0].send.data.x"
        );
        assert_eq!(field(json!([{"send": {"channel": "oa_promotion", "text": "x"}}]), json!({})), "steps[0].send.channel");
        // Branches go forward only, to a step that exists.
        assert_eq!(
            field(
                json!([{"branch": {"if": "follows_oa", "then": 2}}, {"wait": "1h"}, {"send": {"channel": "zns", "template_id": "t"}}]),
                json!({})
            ),
            "steps[0].branch.then"
        );
        assert_eq!(field(json!([{"branch": {"if": "follows_oa", "else": 9}}]), json!({})), "steps[0].branch.else");
        assert_eq!(field(json!([{"send": {"channel": "zns", "template_id": "t"}}, {"wait": "1h"}]), json!({})), "steps[1]");
        assert_eq!(field(json!([{"branch": {"if": "rich"}}]), json!({})), "steps[0].branch.if");
        assert_eq!(field(json!([{"branch": {"if": "in_segment:"}}]), json!({})), "steps[0].branch.if");
        let seg = with(
            json!([{"branch": {"if": "in_segment:vip", "else": "exit"}}, {"send": {"channel": "zns", "template_id": "t"}}]),
            json!({}),
        );
        assert!(
            matches!(seg.unwrap().step(2).unwrap().kind(), Ok(StepKind::Branch(b)) if b.condition == Condition::InSegment("vip".into()))
        );
        assert_eq!(field(json!([]), json!({"exit_goal": "happiness"})), "exit_goal");
        assert_eq!(field(json!([]), json!({"reentry": "sometimes"})), "reentry");
    }

    #[test]
    fn the_shipped_journeys_load() {
        let c = Campaigns::load(None).unwrap();
        let cart = c.by_name("cart_reminder").unwrap();
        assert_eq!((cart.steps.len(), cart.holdout_percent, cart.exit_goal.as_deref()), (2, Some(10), Some("order_placed")));
        let welcome = c.by_name("welcome").unwrap();
        assert_eq!((welcome.steps.len(), welcome.reentry()), (6, Reentry::Once));
        // Every shipped campaign uses only services Zalo still runs.
        for camp in &c.campaigns {
            for ch in std::iter::once(camp.primary.channel).chain(camp.fallback.iter().map(|f| f.channel)) {
                assert!(crate::zalo_rules::service_available(ch.name(), schemas::time::now_ms()).is_ok(), "{}", camp.name);
            }
        }
    }
}
