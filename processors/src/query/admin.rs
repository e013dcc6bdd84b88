//! The admin API: an app's campaigns and segments as data (`/v1/admin/campaigns…`,
//! `/v1/admin/segments…`), with its admin key only. Every write is a new version of the
//! definition in `zmp.campaigns.v1` ([`sinks::definitions`]), checked whole first; the sinks
//! (campaigns) and the processor members (segments) follow the topic and apply it within a
//! second or two. An app sees and changes only its own definitions and the seed (the config
//! files, app `*`); changing a seed definition makes the app its own copy.
//!
//! For each of the two kinds, under `/v1/admin/campaigns` and `/v1/admin/segments`:
//! - `GET …`: the definitions in force for the app;
//! - `POST …`: a new one (409 if the name is taken);
//! - `GET/PUT …/{name}`: one, read or replaced (created if absent);
//! - `DELETE …/{name}`: the app's own removed (the seed's applies again);
//! - `POST …/{name}/pause` and `/resume`;
//!
//! and `POST /v1/admin/campaigns/preview`: whom a campaign would reach now (`preview`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use schemas::derived::Definition;
use schemas::keys::Caller;
use sinks::campaigns::{Campaign, FieldError, from_json};
use sinks::definitions::{self, CAMPAIGN, SEGMENT};

use super::{AdminKey, Key, QueryApi, error};

/// The largest definition accepted, in bytes.
pub const MAX_DEFINITION_BYTES: usize = 32 * 1024;
/// Most definitions of each kind of an app's own (every reader keeps them all, and campaign
/// names are metric labels).
pub const MAX_PER_APP: usize = 100;

/// The kind of the routes: 0 campaigns, 1 segments.
const CAMPAIGNS: u8 = 0;
const SEGMENTS: u8 = 1;

fn kind(k: u8) -> &'static str {
    if k == SEGMENTS { SEGMENT } else { CAMPAIGN }
}

pub fn routes() -> Router<Arc<QueryApi>> {
    Router::new()
        .route("/v1/admin/campaigns", get(list::<CAMPAIGNS>).post(create::<CAMPAIGNS>))
        .route("/v1/admin/campaigns/preview", post(super::preview::preview))
        .route("/v1/admin/campaigns/{name}", get(read::<CAMPAIGNS>).put(replace::<CAMPAIGNS>).delete(revert::<CAMPAIGNS>))
        .route("/v1/admin/campaigns/{name}/pause", post(pause::<CAMPAIGNS>))
        .route("/v1/admin/campaigns/{name}/resume", post(resume::<CAMPAIGNS>))
        .route("/v1/admin/segments", get(list::<SEGMENTS>).post(create::<SEGMENTS>))
        .route("/v1/admin/segments/{name}", get(read::<SEGMENTS>).put(replace::<SEGMENTS>).delete(revert::<SEGMENTS>))
        .route("/v1/admin/segments/{name}/pause", post(pause::<SEGMENTS>))
        .route("/v1/admin/segments/{name}/resume", post(resume::<SEGMENTS>))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_DEFINITION_BYTES))
}

/// A definition as the API shows it.
fn shown(d: &Definition) -> Value {
    json!({
        "name": d.name,
        "version": d.version,
        "paused": d.paused,
        "source": if d.app_id == Definition::SEED_APP { "seed" } else { "app" },
        "updated_at": d.updated_at,
        "updated_by": d.updated_by,
        "definition": serde_json::from_str::<Value>(&d.definition).unwrap_or(Value::Null),
    })
}

fn not_ready() -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "the definitions are still being read; try again in a moment")
}

fn unknown(k: u8) -> Response {
    error(StatusCode::NOT_FOUND, &format!("unknown_{}", kind(k)), &format!("no {} of that name for this app", kind(k)))
}

fn too_many(k: u8) -> Response {
    error(StatusCode::CONFLICT, &format!("too_many_{}s", kind(k)), &format!("an app has at most {MAX_PER_APP} {}s of its own", kind(k)))
}

/// 422 naming the field.
pub(crate) fn invalid(e: &FieldError) -> Response {
    (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"error": "invalid_definition", "field": e.field, "message": e.to_string()})))
        .into_response()
}

/// The body as a JSON object, with `name` filled from the path (or checked against it).
pub(crate) fn body_definition(body: &Bytes, name: Option<&str>) -> Result<Value, FieldError> {
    let whole = |why: String| FieldError { field: String::new(), why };
    let mut v: Value = serde_json::from_slice(body).map_err(|e| whole(format!("the body is not JSON: {e}")))?;
    let Some(obj) = v.as_object_mut() else {
        return Err(whole("the body must be a JSON object: the definition".into()));
    };
    if let Some(name) = name {
        match obj.get("name") {
            None => {
                obj.insert("name".into(), Value::String(name.to_string()));
            }
            Some(Value::String(n)) if n == name => {}
            Some(_) => return Err(FieldError { field: "name".into(), why: format!("must be the name in the path, {name:?}") }),
        }
    }
    Ok(v)
}

/// The body's campaign, checked whole: the definition as JSON and the campaign, or the 422.
pub(crate) fn checked(body: &Bytes, name: Option<&str>) -> Result<(Value, Campaign), Box<Response>> {
    let v = body_definition(body, name).map_err(|e| Box::new(invalid(&e)))?;
    let c = from_json(&v).and_then(|c| admin_may_define(&c).map(|()| c)).map_err(|e| Box::new(invalid(&e)))?;
    Ok((v, c))
}

/// A definition of kind `k` checked whole: its name, or what is wrong.
fn check_definition(k: u8, v: &Value) -> Result<String, FieldError> {
    if k == SEGMENTS {
        Ok(crate::segments::from_json(v)?.name)
    } else {
        let c = from_json(v)?;
        admin_may_define(&c)?;
        Ok(c.name)
    }
}

/// The body's definition of kind `k`, checked whole: the JSON and its name, or the 422.
fn checked_kind(k: u8, body: &Bytes, name: Option<&str>) -> Result<(Value, String), Box<Response>> {
    if k == CAMPAIGNS {
        return checked(body, name).map(|(v, c)| (v, c.name));
    }
    let v = body_definition(body, name).map_err(|e| Box::new(invalid(&e)))?;
    let name = check_definition(k, &v).map_err(|e| Box::new(invalid(&e)))?;
    Ok((v, name))
}

/// What a definition from the API may not do that the operator's file may: open a campaign to
/// the public write key's word (`sources` with `unverified`: anyone could make the shop message
/// anyone), or send marketing without a consent purpose.
fn admin_may_define(c: &Campaign) -> Result<(), FieldError> {
    if c.sources.as_ref().is_some_and(|s| s.contains(&schemas::event::Trust::Unverified)) {
        return Err(FieldError {
            field: "sources".into(),
            why: "\"unverified\" (anyone with the public write key) may not start a campaign defined through the API".into(),
        });
    }
    if c.trigger != sinks::triggers::Trigger::OrderStatus && c.purpose.as_deref().is_none_or(str::is_empty) {
        return Err(FieldError {
            field: "purpose".into(),
            why: "a campaign on this trigger needs the consent purpose its users must have granted (e.g. marketing)".into(),
        });
    }
    Ok(())
}

async fn list<const K: u8>(State(api): State<Arc<QueryApi>>, Key(Caller { app, .. }): AdminKey) -> Response {
    if !api.catalog.caught_up() {
        return not_ready();
    }
    let list: Vec<Value> = api.catalog.effective(&app, kind(K)).iter().map(shown).collect();
    Json(json!({ format!("{}s", kind(K)): list })).into_response()
}

async fn read<const K: u8>(State(api): State<Arc<QueryApi>>, Key(Caller { app, .. }): AdminKey, Path(name): Path<String>) -> Response {
    if !api.catalog.caught_up() {
        return not_ready();
    }
    match api.catalog.get(&app, kind(K), &name) {
        Some(d) => Json(shown(&d)).into_response(),
        None => unknown(K),
    }
}

async fn create<const K: u8>(State(api): State<Arc<QueryApi>>, Key(caller): AdminKey, body: Bytes) -> Response {
    let (v, name) = match checked_kind(K, &body, None) {
        Ok(ok) => ok,
        Err(r) => return *r,
    };
    if !api.catalog.caught_up() {
        return not_ready();
    }
    if api.catalog.own_count(&caller.app, kind(K)) >= MAX_PER_APP {
        return too_many(K);
    }
    if api.catalog.get(&caller.app, kind(K), &name).is_some() {
        return error(
            StatusCode::CONFLICT,
            &format!("{}_exists", kind(K)),
            &format!("a {} named {name:?} exists; PUT /v1/admin/{}s/{name} changes it", kind(K), kind(K)),
        );
    }
    save(&api, &caller, K, &name, v.to_string(), None).await.map_or_else(|r| r, |d| (StatusCode::CREATED, Json(shown(&d))).into_response())
}

async fn replace<const K: u8>(State(api): State<Arc<QueryApi>>, Key(caller): AdminKey, Path(name): Path<String>, body: Bytes) -> Response {
    let v = match checked_kind(K, &body, Some(&name)) {
        Ok((v, _)) => v,
        Err(r) => return *r,
    };
    if !api.catalog.caught_up() {
        return not_ready();
    }
    if api.catalog.own(&caller.app, kind(K), &name).is_none() && api.catalog.own_count(&caller.app, kind(K)) >= MAX_PER_APP {
        return too_many(K);
    }
    save(&api, &caller, K, &name, v.to_string(), None).await.map_or_else(|r| r, |d| Json(shown(&d)).into_response())
}

/// Removes the app's own definition: the seed's of the same name, if any, applies again.
async fn revert<const K: u8>(State(api): State<Arc<QueryApi>>, Key(caller): AdminKey, Path(name): Path<String>) -> Response {
    if !api.catalog.caught_up() {
        return not_ready();
    }
    match api.catalog.remove_own(&api.producer, &caller.app, kind(K), &name).await {
        Ok(true) => {
            tracing::info!(app = %caller.app, kind = kind(K), name = %name, key_id = %caller.key_id, "definition removed");
            let in_force = api.catalog.get(&caller.app, kind(K), &name).map_or(Value::Null, |d| shown(&d));
            Json(json!({"removed": true, "in_force": in_force})).into_response()
        }
        Ok(false) => {
            error(StatusCode::NOT_FOUND, &format!("unknown_{}", kind(K)), &format!("this app has no {} of its own of that name", kind(K)))
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "kafka_unavailable", &format!("{e:#}")),
    }
}

async fn pause<const K: u8>(State(api): State<Arc<QueryApi>>, Key(caller): AdminKey, Path(name): Path<String>) -> Response {
    set_paused(&api, &caller, K, &name, true).await
}

async fn resume<const K: u8>(State(api): State<Arc<QueryApi>>, Key(caller): AdminKey, Path(name): Path<String>) -> Response {
    set_paused(&api, &caller, K, &name, false).await
}

async fn set_paused(api: &QueryApi, caller: &Caller, k: u8, name: &str, paused: bool) -> Response {
    if !api.catalog.caught_up() {
        return not_ready();
    }
    let Some(d) = api.catalog.get(&caller.app, kind(k), name) else {
        return unknown(k);
    };
    if d.paused == paused {
        return Json(shown(&d)).into_response();
    }
    // Resumed, it runs again: it must still check (a Zalo service may have stopped since).
    if !paused {
        let parsed = serde_json::from_str::<Value>(&d.definition).map_err(|e| FieldError { field: String::new(), why: e.to_string() });
        if let Err(e) = parsed.and_then(|v| check_definition(k, &v)) {
            return invalid(&e);
        }
    }
    save(api, caller, k, name, d.definition, Some(paused)).await.map_or_else(|r| r, |d| Json(shown(&d)).into_response())
}

/// Writes the app's next version of `name`: after its own last one, and after the seed's when
/// it takes the seed's place (so a decision's version names one definition). `paused`: None
/// keeps what it was.
async fn save(
    api: &QueryApi,
    caller: &Caller,
    k: u8,
    name: &str,
    definition: String,
    paused: Option<bool>,
) -> Result<Definition, Response> {
    let own = api.catalog.own(&caller.app, kind(k), name);
    let seed = api.catalog.own(Definition::SEED_APP, kind(k), name);
    let version = api.catalog.highest(&caller.app, kind(k), name).max(seed.as_ref().map_or(0, |d| d.version)) + 1;
    let d = Definition {
        app_id: caller.app.clone(),
        kind: kind(k).into(),
        name: name.to_string(),
        version,
        paused: paused.unwrap_or_else(|| own.or(seed).is_some_and(|d| d.paused)),
        definition,
        updated_at: schemas::time::now_ms(),
        updated_by: caller.key_id.clone(),
    };
    match definitions::write(&api.producer, &api.catalog, d).await {
        Ok(d) => {
            tracing::info!(app = %d.app_id, kind = %d.kind, name = %d.name, version = d.version, paused = d.paused, key_id = %d.updated_by, "definition written");
            Ok(d)
        }
        Err(e) => Err(error(StatusCode::SERVICE_UNAVAILABLE, "kafka_unavailable", &format!("{e:#}"))),
    }
}
