//! HTTPS listener for /mutate, plain listener for health and metrics, graceful shutdown.

mod body;
mod conn;

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use thiserror::Error;

use crate::admission;
use crate::state::AppState;

/// The API server never sends more: its own request bodies are capped at 3 MiB.
pub(crate) const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// What prometheus-client's text encoder produces.
pub(crate) const METRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The webhook routes (served over HTTPS), with the default limits.
pub fn router(state: AppState) -> Router {
    router_with(state, &Limits::default())
}

/// The webhook routes behind the request guard: bodies are read by the guard (size limit,
/// read timeout, memory budget) before a handler sees them, and reviews run with bounded
/// concurrency.
pub(crate) fn router_with(state: AppState, limits: &Limits) -> Router {
    let guard = Arc::new(body::Guard::new(limits, state.metrics.clone()));
    Router::new()
        .route("/mutate", post(admission::mutate))
        // The guard has read the body already; axum's own default (2 MB) must not apply
        // below our limit.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(guard, body::guard))
        .with_state(state)
}

/// Health and metrics (served over plain HTTP on the admin port).
pub(crate) fn admin_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<AppState>) -> Response {
    let (ready, lines) = state.health.report();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = lines.join("\n");
    body.push('\n');
    body.push_str(if ready { "ready\n" } else { "not ready\n" });
    (status, body).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        state.metrics.encode(),
    )
        .into_response()
}

#[derive(Debug, Error)]
pub(crate) enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{listener} listener failed: {source}")]
    Serve {
        listener: &'static str,
        source: std::io::Error,
    },
    #[error("{listener} listener stopped: {detail}")]
    Task {
        listener: &'static str,
        detail: String,
    },
}

/// How the listeners behave.
#[derive(Debug, Clone)]
pub(crate) struct ServeOptions {
    pub(crate) listen: SocketAddr,
    pub(crate) admin_listen: SocketAddr,
    /// Bounds the TLS handshake, the first request's headers and every later request's headers.
    pub(crate) header_read_timeout: Duration,
    /// How long in-flight requests get after the shutdown signal.
    pub(crate) shutdown_grace: Duration,
    /// What one client, or all of them together, may hold on the webhook port.
    pub(crate) limits: Limits,
}

/// The bounds that keep memory and connections in check whatever clients do
/// (docs/security.md lists the attack each one answers).
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// Request body bytes held in memory at once, across all connections.
    pub(crate) body_memory: usize,
    /// Time from a request's headers to the last byte of its body.
    pub(crate) body_read_timeout: Duration,
    /// Connections open at once on the webhook port; more are closed at once.
    pub(crate) max_connections: usize,
    /// Concurrent h2 streams one connection may open (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub(crate) max_concurrent_streams: u32,
    /// A connection without a request in flight for this long is closed (h2 with GOAWAY).
    pub(crate) idle_timeout: Duration,
    /// Admission reviews decided at once; more wait briefly, then get a 503.
    pub(crate) max_concurrent_reviews: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_memory: 32 * 1024 * 1024,
            body_read_timeout: Duration::from_secs(5),
            max_connections: 256,
            max_concurrent_streams: 100,
            idle_timeout: Duration::from_secs(90),
            max_concurrent_reviews: 8,
        }
    }
}

/// Parses a byte size: a number with an optional binary (`Ki`, `Mi`, `Gi`) or decimal (`k`,
/// `M`, `G`) suffix, as Kubernetes quantities are written.
pub(crate) fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let scale: usize = match unit {
        "" => 1,
        "k" => 1000,
        "M" => 1000 * 1000,
        "G" => 1000 * 1000 * 1000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => return Err(format!("{s:?}: expected a size like 32Mi, 64M or 33554432")),
    };
    number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("{s:?}: expected a size like 32Mi, 64M or 33554432"))
}

/// Both listeners, bound and ready to serve.
pub(crate) struct Listeners {
    https: TcpListener,
    admin: TcpListener,
    pub(crate) https_addr: SocketAddr,
    pub(crate) admin_addr: SocketAddr,
}

impl Listeners {
    /// Binds both addresses (port 0 picks a free port; the bound addresses are in the fields).
    pub(crate) fn bind(options: &ServeOptions) -> Result<Self, ServerError> {
        let bind = |addr: SocketAddr| {
            let listener =
                TcpListener::bind(addr).map_err(|source| ServerError::Bind { addr, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| ServerError::Bind { addr, source })?;
            listener
                .set_nonblocking(true)
                .map_err(|source| ServerError::Bind { addr, source })?;
            Ok::<_, ServerError>((listener, bound))
        };
        let (https, https_addr) = bind(options.listen)?;
        let (admin, admin_addr) = bind(options.admin_listen)?;
        Ok(Self {
            https,
            admin,
            https_addr,
            admin_addr,
        })
    }
}

/// Serves until `shutdown` resolves, then stops accepting, gives in-flight requests up to
/// `shutdown_grace`, and returns. Readiness turns false as soon as the drain starts.
///
/// The admin port runs on a thread and runtime of its own: however busy the webhook's workers
/// are, the kubelet's probes are answered.
pub(crate) async fn serve(
    listeners: Listeners,
    options: &ServeOptions,
    state: AppState,
    tls: RustlsConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let admin = AdminThread::start(listeners.admin, options, state.clone())?;

    let https_app = router_with(state.clone(), &options.limits);
    let https = conn::Https::new(
        listeners.https,
        tls,
        https_app,
        options,
        state.metrics.clone(),
    )
    .map_err(|source| ServerError::Serve {
        listener: "https",
        source,
    })?;
    let mut admin_done = admin.done.clone();
    let admin_failed = async move {
        let _ = admin_done.wait_for(Option::is_some).await;
    };
    let stopped_early = tokio::select! {
        () = https.accept_until(shutdown) => None,
        () = admin_failed => Some(admin.result()),
    };
    if let Some(result) = stopped_early {
        return Err(result.err().unwrap_or(ServerError::Task {
            listener: "admin",
            detail: "stopped".into(),
        }));
    }

    state
        .health
        .not_ready("shutdown", "draining in-flight requests");
    tracing::info!(connections = https.open(), grace = ?options.shutdown_grace, "shutting down: no new connections, draining");
    if !https.drain(options.shutdown_grace).await {
        tracing::warn!(grace = ?options.shutdown_grace, "shutdown grace expired; connections still open were closed");
    }
    // Health and metrics stay up until the webhook listener is drained.
    let admin_result = admin.stop().await;
    tracing::info!("shutdown complete");
    admin_result
}

/// The admin listener on its own OS thread with a single-threaded runtime.
struct AdminThread {
    handle: Handle<SocketAddr>,
    /// Set once the thread's server returned: its result.
    done: tokio::sync::watch::Receiver<Option<Result<(), String>>>,
}

impl AdminThread {
    fn start(
        listener: TcpListener,
        options: &ServeOptions,
        state: AppState,
    ) -> Result<Self, ServerError> {
        let handle: Handle<SocketAddr> = Handle::new();
        let (tx, done) = tokio::sync::watch::channel(None);
        let server_handle = handle.clone();
        let header_read_timeout = options.header_read_timeout;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("admin")
            .build()
            .map_err(|source| ServerError::Serve {
                listener: "admin",
                source,
            })?;
        std::thread::Builder::new()
            .name("admin".into())
            .spawn(move || {
                let result = runtime.block_on(async move {
                    let mut admin = axum_server::from_tcp(listener)?
                        .handle(server_handle)
                        .first_request_timeout(header_read_timeout);
                    admin
                        .http_builder()
                        .http1()
                        .header_read_timeout(header_read_timeout);
                    admin.serve(admin_router(state).into_make_service()).await
                });
                let _ = tx.send(Some(result.map_err(|e| e.to_string())));
            })
            .map_err(|source| ServerError::Serve {
                listener: "admin",
                source,
            })?;
        Ok(Self { handle, done })
    }

    fn result(&self) -> Result<(), ServerError> {
        match &*self.done.borrow() {
            Some(Ok(())) | None => Ok(()),
            Some(Err(detail)) => Err(ServerError::Task {
                listener: "admin",
                detail: detail.clone(),
            }),
        }
    }

    async fn stop(mut self) -> Result<(), ServerError> {
        self.handle.graceful_shutdown(Some(Duration::from_secs(1)));
        let _ = self.done.wait_for(Option::is_some).await;
        self.result()
    }
}

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C).
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!(signal = "SIGTERM", "signal received"),
                    _ = int.recv() => tracing::info!(signal = "SIGINT", "signal received"),
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot install signal handlers; only Ctrl-C stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn call(app: Router, req: Request<Body>) -> (StatusCode, Option<String>, String) {
        let res = app.oneshot(req).await.unwrap();
        let status = res.status();
        let ctype = res
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = to_bytes(res.into_body(), usize::MAX).await.unwrap();
        (status, ctype, String::from_utf8_lossy(&body).into_owned())
    }

    fn get_req(path: &str) -> Request<Body> {
        Request::get(path).body(Body::empty()).unwrap()
    }

    #[test]
    fn sizes_parse_like_kubernetes_quantities() {
        assert_eq!(parse_size("32Mi"), Ok(32 << 20));
        assert_eq!(parse_size("64M"), Ok(64_000_000));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("2Ki"), Ok(2048));
        assert!(parse_size("32MB").is_err());
        assert!(parse_size("Mi").is_err());
        assert!(parse_size("-1").is_err());
    }

    #[tokio::test]
    async fn healthz_is_ok() {
        let (status, _, body) = call(
            admin_router(AppState::offline(None, "psi")),
            get_req("/healthz"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.trim(), "ok");
    }

    #[tokio::test]
    async fn readyz_lists_components_and_follows_health() {
        let state = AppState::offline(None, "psi");
        state.health.pending("policy", "no policy loaded yet");
        state.health.ready("tls", "serving");
        let (status, _, body) = call(admin_router(state.clone()), get_req("/readyz")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body.contains("[-] policy not ready: no policy loaded yet"),
            "{body}"
        );
        assert!(body.contains("[+] tls ok: serving"), "{body}");

        state.health.ready("policy", "generation 1");
        let (status, _, body) = call(admin_router(state), get_req("/readyz")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("[+] policy ok: generation 1"), "{body}");
    }

    #[tokio::test]
    async fn metrics_are_openmetrics_text() {
        let state = AppState::offline(None, "psi");
        state.metrics.tls_reload("ok");
        let (status, ctype, body) = call(admin_router(state), get_req("/metrics")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ctype.as_deref(), Some(METRICS_CONTENT_TYPE));
        assert!(
            body.contains("pullsecret_injector_tls_reloads_total{result=\"ok\"} 1"),
            "{body}"
        );
        assert!(body.trim_end().ends_with("# EOF"), "{body}");
    }

    #[tokio::test]
    async fn declared_oversized_body_is_413() {
        let req = Request::post("/mutate")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, MAX_BODY_BYTES + 1)
            .body(Body::from(vec![b' '; MAX_BODY_BYTES + 1]))
            .unwrap();
        let (status, _, _) = call(router(AppState::offline(None, "psi")), req).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn streamed_oversized_body_without_length_is_413() {
        // 4 chunks of 1 MiB and no Content-Length, like a chunked upload.
        let chunks = (0..4)
            .map(|_| Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b' '; 1024 * 1024])));
        let req = Request::post("/mutate")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(futures::stream::iter(chunks)))
            .unwrap();
        let (status, _, _) = call(router(AppState::offline(None, "psi")), req).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn body_at_the_limit_reaches_the_handler() {
        let req = Request::post("/mutate")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(vec![b' '; MAX_BODY_BYTES]))
            .unwrap();
        let (status, _, _) = call(router(AppState::offline(None, "psi")), req).await;
        assert_ne!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_ne!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn only_post_mutate_is_routed() {
        let (status, _, _) = call(router(AppState::offline(None, "psi")), get_req("/mutate")).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        let (status, _, _) = call(router(AppState::offline(None, "psi")), get_req("/other")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
