//! `segment_entered`: a user entering a segment, from `zmp.audiences.v1`.

use schemas::derived::{AudienceChange, stable_id};
use serde_json::json;

use super::{Occurrence, Trigger, vars};

/// What a segment entry fills: the segment's name.
pub const VARIABLES: &[&str] = &["segment"];

/// The occurrence of an audience change; `None` for a user leaving a segment.
pub fn occurrence(a: &AudienceChange) -> Option<Occurrence> {
    if !a.member {
        return None;
    }
    Some(Occurrence {
        app: a.app_id.clone(),
        user: a.user_key.clone(),
        trigger: Trigger::SegmentEntered,
        id: stable_id(&[&a.app_id, &a.user_key, "segment", &a.segment, &a.at.to_string()]),
        at: a.at,
        vars: vars(json!({"segment": a.segment})),
        segment: Some(a.segment.clone()),
        trust: schemas::event::Trust::Server,
    })
}
