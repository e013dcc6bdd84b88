//! The OpenAPI document of the whole HTTP API (`docs/openapi.json`, issue 19): it names exactly
//! the routes the code serves, `zcdp up` serves it at `GET /openapi.json`, and Schemathesis
//! (PyPI), fuzzing `zcdp up` from it, finds no 5xx and no answer the document does not describe.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use support::Zcdp;

/// The files that define the served routes: the gateway's, the query API's, the listener's.
const ROUTE_FILES: &[&str] = &[
    "ingest/src/http.rs",
    "ingest/src/session.rs",
    "ingest/src/zalo_hooks.rs",
    "ingest/src/schema_api.rs",
    "processors/src/query/mod.rs",
    "processors/src/query/admin.rs",
    "src/server.rs",
];

fn document() -> Value {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json")).unwrap();
    serde_json::from_str(&text).expect("docs/openapi.json is JSON")
}

/// (METHOD, path) of every operation in the document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// (METHOD, path) of every `.route("…", …)` in the route files: the path literal, and each
/// `get(`, `post(`, `put(`, `patch(`, `delete(` inside the call.
fn served() -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for file in ROUTE_FILES {
        let src = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap();
        // Unit tests build their own routers.
        let src = src.split("#[cfg(test)]").next().unwrap();
        let mut rest = src;
        while let Some(at) = rest.find(".route(") {
            rest = &rest[at + ".route(".len()..];
            let Some(open) = rest.find('"') else { break };
            let close = open + 1 + rest[open + 1..].find('"').unwrap();
            let path = rest[open + 1..close].to_string();
            // The call's arguments, up to its closing bracket.
            let (mut depth, mut end) = (1, close);
            for (i, c) in rest[close..].char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    end = close + i;
                    break;
                }
            }
            let call = &rest[close..end];
            for method in ["get", "post", "put", "patch", "delete"] {
                let found = call.match_indices(&format!("{method}(")).any(|(i, _)| {
                    let before = call[..i].chars().next_back();
                    !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                });
                if found {
                    out.insert((method.to_uppercase(), path.clone()));
                }
            }
            rest = &rest[end..];
        }
    }
    out
}

/// Every served route is in the document and every documented one is served: a route added
/// without its documentation, or documented and gone, fails here.
#[test]
fn the_document_names_exactly_the_served_routes() {
    let doc = document();
    assert_eq!(doc["openapi"].as_str().map(|v| v.starts_with("3.1")), Some(true), "an OpenAPI 3.1 document");
    let (documented, served) = (documented(&doc), served());
    assert!(served.len() > 25, "the route scan found only {served:?}");
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let gone: Vec<_> = documented.difference(&served).collect();
    assert!(undocumented.is_empty() && gone.is_empty(), "served but not documented: {undocumented:?}; documented but not served: {gone:?}");
}

/// A Python virtualenv with Schemathesis, made once under the target dir.
fn schemathesis() -> std::path::PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("schemathesis-venv");
    let st = venv.join("bin/schemathesis");
    let marker = venv.join("ready");
    if !marker.exists() {
        let ok = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().expect("python3 -m venv");
        assert!(ok.success(), "python3 -m venv failed");
        let ok = Command::new(venv.join("bin/pip")).args(["install", "-q", "schemathesis==4.32.5"]).status().expect("pip");
        assert!(ok.success(), "pip install schemathesis failed");
        std::fs::write(&marker, b"").unwrap();
    }
    st
}

/// `zcdp up` serves the document, and Schemathesis, generating requests from it (bounded in
/// examples and time) with each kind of key, gets no 5xx and no answer the document does not
/// describe; the gateway still answers `/healthz` afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_undocumented_answer() {
    let data = tempfile::tempdir().unwrap();
    let z = Zcdp::start(&["up", "--http", "127.0.0.1:0", "--data-dir", data.path().to_str().unwrap()]);
    let base = format!("http://{}", z.http);
    let served: Value = reqwest::get(format!("{base}/openapi.json")).await.unwrap().json().await.unwrap();
    assert_eq!(served, document(), "GET /openapi.json is docs/openapi.json");

    let st = schemathesis();
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
    for key in [z.key("write"), z.key("secret"), z.key("admin")] {
        let out = Command::new(&st)
            .args([
                "run",
                doc.to_str().unwrap(),
                "--url",
                &base,
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            ])
            .args(["--header", &format!("Authorization: Bearer {key}")])
            .args(["--phases", "examples,fuzzing", "--max-examples", "15", "--max-time", "60", "--seed", "19"])
            .args(["--request-timeout", "10", "--generation-database", "none", "--workers", "2", "--no-color"])
            .current_dir(data.path())
            .output()
            .expect("run schemathesis");
        let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "schemathesis found problems:\n{report}");
    }
    let r = reqwest::Client::new().get(format!("{base}/healthz")).timeout(Duration::from_secs(5)).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
