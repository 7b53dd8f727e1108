//! The webhook port's connections: accept under a cap, TLS handshake under a deadline (failures
//! counted by reason, logged at a bounded rate), HTTP/1.1 or h2 with bounded windows and
//! streams, keep-alive pings, an idle timeout, and a graceful drain on shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum_server::tls_rustls::RustlsConfig;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::ServeOptions;
use crate::metrics::Metrics;

/// How often an h2 connection is pinged, and how long the answer may take before the peer is
/// taken for dead.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);
/// Flow-control windows: what one stream, and one connection, may have sent but the server not
/// yet read. Small enough that connections × window stays far below the memory limit, large
/// enough that a 3 MiB body takes a handful of round trips.
const H2_STREAM_WINDOW: u32 = 256 * 1024;
const H2_CONNECTION_WINDOW: u32 = 512 * 1024;
/// Header block limit (h2 SETTINGS_MAX_HEADER_LIST_SIZE); the API server sends a few hundred
/// bytes.
const MAX_HEADER_BYTES: u32 = 64 * 1024;
/// A connection told to go away (idle) gets this long to finish before it is dropped.
const GOAWAY_GRACE: Duration = Duration::from_secs(10);
/// At most one log line per reason in this period; the lines say how many were not logged.
const LOG_PERIOD: Duration = Duration::from_secs(10);

/// Logs an event at most once per `period` per key, counting what it left out.
pub(crate) struct RateLimitedLog {
    period: Duration,
    last: Mutex<HashMap<&'static str, (Instant, u64)>>,
}

impl RateLimitedLog {
    pub(crate) fn new(period: Duration) -> Self {
        Self {
            period,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(suppressed since the last line)` when this event may be logged now.
    pub(crate) fn allow(&self, key: &'static str) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match last.get_mut(key) {
            Some((at, suppressed)) if now.duration_since(*at) < self.period => {
                *suppressed += 1;
                None
            }
            Some((at, suppressed)) => {
                let left_out = *suppressed;
                *at = now;
                *suppressed = 0;
                Some(left_out)
            }
            None => {
                last.insert(key, (now, 0));
                Some(0)
            }
        }
    }
}

/// What a connection task shares with the accept loop.
struct Shared {
    tls: RustlsConfig,
    app: Router,
    builder: Builder<TokioExecutor>,
    metrics: Arc<Metrics>,
    handshake_timeout: Duration,
    first_request_timeout: Duration,
    idle_timeout: Duration,
    log: RateLimitedLog,
}

/// The HTTPS listener and the connections it accepted.
pub(crate) struct Https {
    listener: TcpListener,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    max_connections: usize,
    /// `true`: stop taking requests, finish the ones in flight (h2 GOAWAY, h1 no keep-alive).
    drain: watch::Sender<bool>,
    /// `true`: drop every connection now.
    close: watch::Sender<bool>,
}

impl Https {
    pub(crate) fn new(
        listener: std::net::TcpListener,
        tls: RustlsConfig,
        app: Router,
        options: &ServeOptions,
        metrics: Arc<Metrics>,
    ) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let limits = &options.limits;
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            // Also bounds the wait for the next request on a keep-alive connection.
            .header_read_timeout(options.header_read_timeout)
            .max_buf_size(MAX_HEADER_BYTES as usize * 2);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.max_concurrent_streams)
            .initial_stream_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_CONNECTION_WINDOW)
            .max_header_list_size(MAX_HEADER_BYTES)
            .keep_alive_interval(H2_PING_INTERVAL)
            .keep_alive_timeout(H2_PING_TIMEOUT);
        let max_connections = limits.max_connections.max(1);
        Ok(Self {
            listener,
            shared: Arc::new(Shared {
                tls,
                app,
                builder,
                metrics,
                handshake_timeout: options.header_read_timeout,
                first_request_timeout: options.header_read_timeout,
                idle_timeout: limits.idle_timeout,
                log: RateLimitedLog::new(LOG_PERIOD),
            }),
            slots: Arc::new(Semaphore::new(max_connections)),
            max_connections,
            drain: watch::channel(false).0,
            close: watch::channel(false).0,
        })
    }

    /// Connections open now.
    pub(crate) fn open(&self) -> usize {
        self.max_connections - self.slots.available_permits()
    }

    /// Accepts connections until `shutdown` resolves.
    pub(crate) async fn accept_until(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => return,
                accepted = self.listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    if let Some(suppressed) = self.shared.log.allow("accept") {
                        tracing::warn!(error = %e, suppressed, "cannot accept a connection");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                // Closed at once rather than left in the kernel's backlog: the client learns
                // now, and the refusal is counted.
                self.shared.metrics.connections_refused.inc();
                if let Some(suppressed) = self.shared.log.allow("refused") {
                    tracing::warn!(%peer, limit = self.max_connections, suppressed, "connection limit reached; closing a new connection");
                }
                drop(tcp);
                continue;
            };
            // Without it Nagle's algorithm meets delayed ACKs and small h2 responses wait
            // ~40 ms (docs/performance.md).
            let _ = tcp.set_nodelay(true);
            let shared = self.shared.clone();
            let drain = self.drain.subscribe();
            let close = self.close.subscribe();
            tokio::spawn(async move {
                let _slot = slot;
                shared.metrics.connections_open.inc();
                connection(&shared, tcp, peer, drain, close).await;
                shared.metrics.connections_open.dec();
            });
        }
    }

    /// Stops accepting (the listener is closed), lets requests in flight finish within `grace`,
    /// then drops what is left. `false` when the grace ran out.
    pub(crate) async fn drain(self, grace: Duration) -> bool {
        drop(self.listener);
        let _ = self.drain.send(true);
        let all = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        let in_time = tokio::time::timeout(grace, self.slots.acquire_many(all))
            .await
            .is_ok();
        if !in_time {
            let _ = self.close.send(true);
            let _ =
                tokio::time::timeout(Duration::from_secs(1), self.slots.acquire_many(all)).await;
        }
        in_time
    }
}

/// One connection, from the TLS handshake to its close.
async fn connection(
    shared: &Shared,
    tcp: TcpStream,
    peer: SocketAddr,
    mut drain: watch::Receiver<bool>,
    mut close: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(shared.tls.get_inner());
    let handshake = tokio::select! {
        result = tokio::time::timeout(shared.handshake_timeout, acceptor.accept(tcp)) => result,
        _ = drain.wait_for(|d| *d) => return,
        _ = close.wait_for(|c| *c) => return,
    };
    let tls = match handshake {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return handshake_failed(shared, peer, handshake_failure_reason(&e), &e),
        Err(_) => {
            let e = io::Error::from(io::ErrorKind::TimedOut);
            return handshake_failed(shared, peer, "timeout", &e);
        }
    };

    let activity = Arc::new(Activity::new());
    let service = {
        let app = shared.app.clone();
        let activity = activity.clone();
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let busy = activity.begin();
            let call = app.clone().oneshot(req);
            async move {
                let response = call.await;
                drop(busy);
                response
            }
        })
    };
    let conn = shared.builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);

    let started = tokio::time::Instant::now();
    // Set once the connection was told to finish (idle or drain); it is dropped at this time.
    let mut going_away: Option<tokio::time::Instant> = None;
    loop {
        let idle_at = match activity.idle_since() {
            // No request yet: the first one's headers must come within the header timeout.
            None if activity.requests() == 0 => started + shared.first_request_timeout,
            None => tokio::time::Instant::now() + shared.idle_timeout,
            Some(since) => tokio::time::Instant::from_std(since) + shared.idle_timeout,
        };
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = drain.wait_for(|d| *d), if going_away.is_none() => {
                conn.as_mut().graceful_shutdown();
                // Bounded by the shutdown grace (the `close` signal), not here.
                going_away = Some(tokio::time::Instant::now() + Duration::from_secs(86_400));
            }
            _ = close.wait_for(|c| *c) => return,
            () = tokio::time::sleep_until(idle_at), if going_away.is_none() => {
                if activity.requests() == 0 {
                    tracing::debug!(%peer, "no request within the header timeout; closing");
                    return;
                }
                if activity.idle_since().is_some_and(|since| since.elapsed() >= shared.idle_timeout) {
                    shared.metrics.connections_idle_closed.inc();
                    tracing::debug!(%peer, idle = ?shared.idle_timeout, "idle connection; closing");
                    conn.as_mut().graceful_shutdown();
                    going_away = Some(tokio::time::Instant::now() + GOAWAY_GRACE);
                }
            }
            () = async { tokio::time::sleep_until(going_away.unwrap_or_else(tokio::time::Instant::now)).await }, if going_away.is_some() => return,
        }
    }
}

fn handshake_failed(shared: &Shared, peer: SocketAddr, reason: &'static str, e: &io::Error) {
    shared.metrics.tls_handshake_failed(reason);
    if let Some(suppressed) = shared.log.allow(reason) {
        tracing::warn!(%peer, reason, error = %e, suppressed, "TLS handshake failed");
    }
}

/// A short, bounded label for why a handshake failed. An alert from the client names what it
/// disliked about our certificate: after a rotation, `unknown_ca` or `bad_certificate` usually
/// means the webhook configuration's caBundle does not match.
pub(crate) fn handshake_failure_reason(e: &io::Error) -> &'static str {
    use rustls::AlertDescription as A;
    if let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return match tls {
            rustls::Error::AlertReceived(alert) => match alert {
                A::UnknownCA => "unknown_ca",
                A::BadCertificate => "bad_certificate",
                A::CertificateExpired => "certificate_expired",
                A::CertificateUnknown => "certificate_unknown",
                A::UnsupportedCertificate => "unsupported_certificate",
                // Signature check failed: a CA with the same name but another key.
                A::DecryptError => "decrypt_error",
                _ => "other_alert",
            },
            rustls::Error::InvalidMessage(_) => "not_tls",
            rustls::Error::PeerIncompatible(_) | rustls::Error::NoApplicationProtocol => {
                "incompatible"
            }
            rustls::Error::PeerMisbehaved(_) => "protocol_violation",
            _ => "other",
        };
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => "eof",
        io::ErrorKind::TimedOut => "timeout",
        _ => "io",
    }
}

/// Requests in flight on one connection, and since when there has been none.
struct Activity {
    in_flight: AtomicUsize,
    requests: AtomicU64,
    last_done: Mutex<Instant>,
}

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            last_done: Mutex::new(Instant::now()),
        }
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// `None` while a request is in flight.
    fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        Some(*self.last_done.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Held while one request is handled.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.last_done.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limited_log_counts_what_it_leaves_out() {
        let log = RateLimitedLog::new(Duration::from_secs(3600));
        assert_eq!(log.allow("timeout"), Some(0));
        assert_eq!(log.allow("timeout"), None);
        assert_eq!(log.allow("timeout"), None);
        assert_eq!(
            log.allow("unknown_ca"),
            Some(0),
            "each reason has its own budget"
        );
        let log = RateLimitedLog::new(Duration::ZERO);
        assert_eq!(log.allow("eof"), Some(0));
        assert_eq!(log.allow("eof"), Some(0));
    }

    #[test]
    fn handshake_failures_are_named_by_alert_and_io_kind() {
        let alert = |a| io::Error::new(io::ErrorKind::InvalidData, rustls::Error::AlertReceived(a));
        assert_eq!(
            handshake_failure_reason(&alert(rustls::AlertDescription::UnknownCA)),
            "unknown_ca"
        );
        assert_eq!(
            handshake_failure_reason(&alert(rustls::AlertDescription::BadCertificate)),
            "bad_certificate"
        );
        assert_eq!(
            handshake_failure_reason(&alert(rustls::AlertDescription::DecodeError)),
            "other_alert"
        );
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(handshake_failure_reason(&eof), "eof");
    }
}
