//! HTTPS listener for /mutate, plain listener for health and metrics, graceful shutdown.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_server::Handle;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use thiserror::Error;
use tower_http::limit::RequestBodyLimitLayer;

use crate::admission;
use crate::state::AppState;

/// The API server never sends more: its own request bodies are capped at 3 MiB.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// What prometheus-client's text encoder produces.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The webhook routes (served over HTTPS).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/mutate", post(admission::mutate))
        // Rejects a declared Content-Length over the limit before reading, and caps chunked
        // bodies while they stream in; both answer 413.
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        // axum's own default (2 MB) would otherwise apply below ours.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Health and metrics (served over plain HTTP on the admin port).
pub fn admin_router(state: AppState) -> Router {
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
pub enum ServerError {
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
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Bounds the TLS handshake, the first request's headers and every later request's headers.
    pub header_read_timeout: Duration,
    /// How long in-flight requests get after the shutdown signal.
    pub shutdown_grace: Duration,
}

/// Both listeners, bound and ready to serve.
pub struct Listeners {
    https: TcpListener,
    admin: TcpListener,
    pub https_addr: SocketAddr,
    pub admin_addr: SocketAddr,
}

impl Listeners {
    /// Binds both addresses (port 0 picks a free port; the bound addresses are in the fields).
    pub fn bind(options: &ServeOptions) -> Result<Self, ServerError> {
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
pub async fn serve(
    listeners: Listeners,
    options: &ServeOptions,
    state: AppState,
    tls: RustlsConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let https_handle: Handle<SocketAddr> = Handle::new();
    let admin_handle: Handle<SocketAddr> = Handle::new();

    let acceptor = RustlsAcceptor::new(tls).handshake_timeout(options.header_read_timeout);
    let mut https = axum_server::from_tcp(listeners.https)
        .map_err(|source| ServerError::Serve {
            listener: "https",
            source,
        })?
        .acceptor(acceptor)
        .handle(https_handle.clone())
        // The auto (h1/h2) builder reads the first bytes to detect the protocol without a timer;
        // this bounds the time until the first request's headers are complete.
        .first_request_timeout(options.header_read_timeout);
    https
        .http_builder()
        .http1()
        .header_read_timeout(options.header_read_timeout);
    let https_app = router(state.clone());
    let mut https_task =
        tokio::spawn(async move { https.serve(https_app.into_make_service()).await });

    let mut admin = axum_server::from_tcp(listeners.admin)
        .map_err(|source| ServerError::Serve {
            listener: "admin",
            source,
        })?
        .handle(admin_handle.clone())
        .first_request_timeout(options.header_read_timeout);
    admin
        .http_builder()
        .http1()
        .header_read_timeout(options.header_read_timeout);
    let admin_app = admin_router(state.clone());
    let mut admin_task =
        tokio::spawn(async move { admin.serve(admin_app.into_make_service()).await });

    tokio::select! {
        () = shutdown => {}
        result = &mut https_task => return finished("https", result),
        result = &mut admin_task => return finished("admin", result),
    }

    state
        .health
        .not_ready("shutdown", "draining in-flight requests");
    let in_flight = https_handle.connection_count();
    tracing::info!(connections = in_flight, grace = ?options.shutdown_grace, "shutting down: no new connections, draining");
    let started = std::time::Instant::now();
    https_handle.graceful_shutdown(Some(options.shutdown_grace));
    let https_result = finished("https", https_task.await);
    if started.elapsed() >= options.shutdown_grace {
        tracing::warn!(grace = ?options.shutdown_grace, "shutdown grace expired; connections still open were closed");
    }
    // Health and metrics stay up until the webhook listener is drained.
    admin_handle.graceful_shutdown(Some(Duration::from_secs(1)));
    let admin_result = finished("admin", admin_task.await);
    tracing::info!("shutdown complete");
    https_result.and(admin_result)
}

fn finished(
    listener: &'static str,
    result: Result<std::io::Result<()>, tokio::task::JoinError>,
) -> Result<(), ServerError> {
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(source)) => Err(ServerError::Serve { listener, source }),
        Err(e) => Err(ServerError::Task {
            listener,
            detail: e.to_string(),
        }),
    }
}

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
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
