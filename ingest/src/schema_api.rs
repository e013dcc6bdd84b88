//! A read-only, Confluent-compatible schema registry API over the schemas built into zcdp, so a
//! subscriber's stock Avro deserializer (`schema.registry.url` pointed at the gateway) can
//! resolve the ids in our records.

use axum::Json;
use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use schemas::registry::{SchemaVersion, registry};

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/versions", get(versions_of_id))
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}/versions", get(subject_versions))
        .route("/subjects/{subject}/versions/{version}", get(subject_version))
}

fn reply(status: StatusCode, body: Value) -> Response {
    (status, [(header::CONTENT_TYPE, CONTENT_TYPE)], Json(body)).into_response()
}

fn not_found(code: u32, message: &str) -> Response {
    reply(StatusCode::NOT_FOUND, json!({"error_code": code, "message": message}))
}

async fn schema_by_id(Path(id): Path<String>) -> Response {
    match id.parse().ok().and_then(|id| registry().by_id(id)) {
        Some(v) => reply(StatusCode::OK, json!({"schema": v.schema_json()})),
        None => not_found(40403, "Schema not found"),
    }
}

async fn versions_of_id(Path(id): Path<String>) -> Response {
    match id.parse().ok().and_then(|id| registry().by_id(id)) {
        Some(v) => reply(StatusCode::OK, json!([{"subject": v.subject(), "version": v.version}])),
        None => not_found(40403, "Schema not found"),
    }
}

async fn subjects() -> Response {
    reply(StatusCode::OK, json!(registry().subjects()))
}

async fn subject_versions(Path(subject): Path<String>) -> Response {
    let Some(topic) = registry().topic_of_subject(&subject) else {
        return not_found(40401, "Subject not found");
    };
    let mut versions: Vec<u32> = registry().versions_of(topic).map(|v| v.version).collect();
    versions.sort();
    reply(StatusCode::OK, json!(versions))
}

async fn subject_version(Path((subject, version)): Path<(String, String)>) -> Response {
    let Some(topic) = registry().topic_of_subject(&subject) else {
        return not_found(40401, "Subject not found");
    };
    let found: Option<&SchemaVersion> = if version == "latest" || version == "-1" {
        registry().latest(topic)
    } else {
        version.parse::<u32>().ok().and_then(|n| registry().versions_of(topic).find(|v| v.version == n))
    };
    match found {
        Some(v) => reply(
            StatusCode::OK,
            json!({"subject": v.subject(), "version": v.version, "id": v.id, "schemaType": "AVRO", "schema": v.schema_json()}),
        ),
        None => not_found(40402, "Version not found"),
    }
}
