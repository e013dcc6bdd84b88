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

use crate::shutdown::Shutdown;

async fn metrics() -> impl IntoResponse {
    let mut buf = Vec::new();
    let families = prometheus::gather();
    if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
        return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    ([(header::CONTENT_TYPE, TextEncoder::new().format_type().to_string())], buf).into_response()
}

/// Adds `/metrics` and CORS to a role's routes.
pub fn with_ops(routes: Router, cors_origins: &[String]) -> Router {
    let origins = if cors_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(cors_origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    let cors = CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, "x-write-key".parse().unwrap()])
        .expose_headers([header::RETRY_AFTER]);
    routes.route("/metrics", get(metrics)).layer(cors)
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
