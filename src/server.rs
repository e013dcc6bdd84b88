//! The HTTP listener every role shares: its own routes plus `/metrics`, with CORS for Mini Apps
//! (they post from Zalo's web view, another origin), time-outs and a cap on connections, and
//! graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus::{Encoder, TextEncoder};
use tokio::sync::Semaphore;
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
    Ok(Some(tokio::spawn(serve(listener, Router::new().route("/metrics", get(metrics)), Limits::of(http), shutdown))))
}

/// Binds `addr`; the returned address has the real port when `addr` asked for port 0.
pub async fn bind(addr: &str) -> anyhow::Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}: is another zcdp (or anything) using it? choose another with --http"))?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// What one client may hold of the server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// To send a request's headers; also the longest a kept-alive connection waits idle.
    pub header_timeout: Duration,
    /// To send a request's whole body, from its headers.
    pub body_timeout: Duration,
    /// Connections open at once; past it, new ones wait in the kernel's backlog.
    pub max_connections: usize,
}

impl Default for Limits {
    /// The flags' defaults.
    fn default() -> Limits {
        Limits { header_timeout: Duration::from_secs(10), body_timeout: Duration::from_secs(30), max_connections: 1000 }
    }
}

impl Limits {
    pub fn of(http: &HttpArgs) -> Limits {
        Limits { header_timeout: http.header_timeout, body_timeout: http.body_timeout, max_connections: http.max_connections.max(1) }
    }
}

/// How long in-flight requests get to finish once shutdown begins.
const DRAIN: Duration = Duration::from_secs(30);

/// Serves until shutdown, then lets in-flight requests finish (for up to 30 s).
///
/// hyper's HTTP/1 connection, driven here rather than by `axum::serve` (which sets no time-out):
/// a client that sends its headers too slowly, or sits on a kept-alive connection, is cut after
/// `header_timeout`; one that sends its body too slowly gets an error after `body_timeout`; no
/// more than `max_connections` are served at once, so slow clients cannot take every socket.
pub async fn serve(listener: tokio::net::TcpListener, app: Router, limits: Limits, shutdown: Shutdown) -> anyhow::Result<()> {
    let app = app.layer(axum::middleware::from_fn(move |req: Request, next: Next| body_deadline(req, next, limits.body_timeout)));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
    loop {
        let permit = tokio::select! {
            _ = shutdown.wait() => break,
            p = permits.clone().acquire_owned() => p.context("connection permits")?,
        };
        let stream = tokio::select! {
            _ = shutdown.wait() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let conn = http.serve_connection(TokioIo::new(stream), service);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut conn = std::pin::pin!(conn);
            let ended = tokio::select! {
                r = conn.as_mut() => Some(r),
                _ = shutdown.wait() => None,
            };
            let result = match ended {
                Some(r) => r,
                None => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
    // Every permit back: every connection has finished.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN, permits.acquire_many(all)).await.is_err() {
        tracing::warn!("connections still open {DRAIN:?} after shutdown began; closing them");
    }
    Ok(())
}

/// Gives the request's body a deadline: the whole body must arrive within `within` of the
/// headers, however it trickles in.
async fn body_deadline(req: Request, next: Next, within: Duration) -> Response {
    let (parts, body) = req.into_parts();
    let body = DeadlineBody { inner: body, deadline: Box::pin(tokio::time::sleep(within)) };
    next.run(Request::from_parts(parts, Body::new(body))).await
}

struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(axum::Error::new("the request body did not arrive within the body time-out"))));
        }
        Pin::new(&mut this.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
