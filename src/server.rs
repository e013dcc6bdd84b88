//! The HTTP listener every role shares: its own routes plus `/metrics`, with CORS for Mini Apps
//! (they post from Zalo's web view, another origin) and graceful shutdown.

use std::net::SocketAddr;

use anyhow::Context as _;
use axum::Router;
use axum::http::{HeaderValue, Method, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, TextEncoder};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::HttpArgs;
use crate::shutdown::Shutdown;

async fn metrics() -> impl IntoResponse {
    let mut buf = Vec::new();
    let families = prometheus::gather();
    if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
        return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    ([(header::CONTENT_TYPE, TextEncoder::new().format_type().to_string())], buf).into_response()
}

/// Adds CORS to a role's routes, and `/metrics` unless `--metrics-http` serves it apart
/// ([`serve_metrics_apart`]).
pub fn with_ops(routes: Router, http: &HttpArgs) -> Router {
    let cors_origins = &http.cors_origins;
    let origins = if cors_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(cors_origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    let cors = CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, "x-write-key".parse().unwrap(), "x-zcdp-session".parse().unwrap()])
        .expose_headers([header::RETRY_AFTER]);
    let routes = if http.metrics_http.is_some() { routes } else { routes.route("/metrics", get(metrics)) };
    routes.layer(cors)
}

/// With `--metrics-http`: `/metrics` on that address alone, until shutdown.
pub async fn serve_metrics_apart(
    http: &HttpArgs,
    shutdown: Shutdown,
) -> anyhow::Result<Option<tokio::task::JoinHandle<anyhow::Result<()>>>> {
    let Some(addr) = &http.metrics_http else { return Ok(None) };
    let (listener, local) = bind(addr).await?;
    tracing::info!(%local, "metrics served apart");
    Ok(Some(tokio::spawn(serve(listener, Router::new().route("/metrics", get(metrics)), shutdown))))
}

/// Binds `addr`; the returned address has the real port when `addr` asked for port 0.
pub async fn bind(addr: &str) -> anyhow::Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}: is another zcdp (or anything) using it? choose another with --http"))?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Serves until shutdown, then lets in-flight requests finish.
pub async fn serve(listener: tokio::net::TcpListener, app: Router, shutdown: Shutdown) -> anyhow::Result<()> {
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.wait().await }).await.context("HTTP server")
}
