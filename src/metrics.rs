//! Prometheus metrics. One `Metrics` is shared by the request path, the reloaders and the
//! cluster side; `/metrics` encodes its registry as Prometheus text.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabel {
    /// Every result is one of a fixed set: no allocation per request for its key.
    pub(crate) result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OperationLabel {
    pub(crate) operation: String,
}

/// A token Secret and its provider (`ecr`, `google`, `azure`) and what happened.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TokenLabels {
    pub(crate) secret: String,
    pub(crate) provider: String,
    pub(crate) result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SecretLabel {
    pub(crate) secret: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub(crate) reason: String,
}

pub struct Metrics {
    registry: Registry,
    /// Admission requests by result: patched, unchanged, invalid, error, and the refusals of the
    /// request guard: too_large (413), timeout (408), overloaded (503).
    pub(crate) requests: Family<ResultLabel, Counter>,
    /// Responses that carried a patch.
    pub(crate) patches: Counter,
    /// Time to answer one admission request.
    pub(crate) latency: Histogram,
    /// Policy loads that failed (the last good policy stayed).
    pub(crate) policy_reload_errors: Counter,
    /// Generation of the policy in use (increments on every successful load).
    pub(crate) policy_generation: Gauge,
    /// Certificate reloads by result: ok, error.
    pub(crate) tls_reloads: Family<ResultLabel, Counter>,
    /// Secret copy writes by operation: created, updated, failed.
    pub(crate) copies: Family<OperationLabel, Counter>,
    /// Target names held by a Secret we do not manage.
    pub(crate) unmanaged_conflicts: Counter,
    /// Copies whose content differed from their source and were repaired.
    pub(crate) drift_repaired: Counter,
    /// Token mints by secret, provider and result (minted, lost_race, write_failed).
    pub(crate) token_mints: Family<TokenLabels, Counter>,
    /// Failed token mints by secret, provider and reason (the last good Secret stayed).
    pub(crate) token_mint_failures: Family<TokenLabels, Counter>,
    /// Expiry of each token Secret's credential, Unix seconds.
    pub(crate) token_expiry: Family<SecretLabel, Gauge>,
    /// Admission warnings about a Secret the kubelet would not use, by verdict.
    pub(crate) secret_warnings: Family<ReasonLabel, Counter>,
    /// notAfter of the serving certificate in use (Unix seconds), so an alert can fire first.
    pub(crate) tls_certificate_expiry: Gauge,
    /// Certificate pairs on disk that were refused, by reason (expired, not_yet_valid, ...).
    pub(crate) tls_reload_rejections: Family<ReasonLabel, Counter>,
    /// TLS handshakes that failed, by reason (unknown_ca, timeout, not_tls, ...).
    pub(crate) tls_handshake_failures: Family<ReasonLabel, Counter>,
    /// HTTPS connections open now.
    pub(crate) connections_open: Gauge,
    /// HTTPS connections closed at once because `--max-connections` were open.
    pub(crate) connections_refused: Counter,
    /// HTTPS connections closed after `--idle-timeout` without a request.
    pub(crate) connections_idle_closed: Counter,
    /// Request body bytes held in memory now (bounded by `--max-body-memory`).
    pub(crate) body_bytes_in_memory: Gauge,
    /// Log lines dropped because the log writer's queue was full (see telemetry.rs).
    log_lines_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("pullsecret_injector");
        let requests = Family::<ResultLabel, Counter>::default();
        registry.register(
            "admission_requests",
            "Admission requests by result",
            requests.clone(),
        );
        let patches = Counter::default();
        registry.register(
            "admission_patches",
            "Admission responses that carried a patch",
            patches.clone(),
        );
        let latency = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "admission_duration_seconds",
            "Time to answer an admission request",
            latency.clone(),
        );
        let policy_reload_errors = Counter::default();
        registry.register(
            "policy_reload_errors",
            "Policy loads that failed; the last good policy stayed in use",
            policy_reload_errors.clone(),
        );
        let policy_generation = Gauge::default();
        registry.register(
            "policy_generation",
            "Generation of the policy in use",
            policy_generation.clone(),
        );
        let tls_reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "tls_reloads",
            "Certificate reloads by result",
            tls_reloads.clone(),
        );
        let copies = Family::<OperationLabel, Counter>::default();
        registry.register(
            "secret_copies",
            "Secret copy writes by operation",
            copies.clone(),
        );
        let unmanaged_conflicts = Counter::default();
        registry.register(
            "unmanaged_conflicts",
            "Target Secrets that exist but are not managed by us (left untouched)",
            unmanaged_conflicts.clone(),
        );
        let drift_repaired = Counter::default();
        registry.register(
            "drift_repaired",
            "Copies that differed from their source and were repaired",
            drift_repaired.clone(),
        );
        let token_mints = Family::<TokenLabels, Counter>::default();
        registry.register(
            "token_mints",
            "Registry credential mints by token Secret, provider and result",
            token_mints.clone(),
        );
        let token_mint_failures = Family::<TokenLabels, Counter>::default();
        registry.register(
            "token_mint_failures",
            "Failed registry credential mints by token Secret, provider and reason; the last good Secret stayed",
            token_mint_failures.clone(),
        );
        let token_expiry = Family::<SecretLabel, Gauge>::default();
        registry.register(
            "token_expiry_timestamp_seconds",
            "When each token Secret's credential expires (Unix time)",
            token_expiry.clone(),
        );
        let secret_warnings = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "admission_secret_warnings",
            "Admission warnings about a Secret the kubelet would not use for the Pod's image, by reason",
            secret_warnings.clone(),
        );
        let tls_certificate_expiry = Gauge::default();
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "notAfter of the serving certificate in use, in seconds since the Unix epoch",
            tls_certificate_expiry.clone(),
        );
        let tls_reload_rejections = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "tls_reload_rejections",
            "Certificate pairs on disk that were not installed, by reason; the pair in use stayed",
            tls_reload_rejections.clone(),
        );
        let tls_handshake_failures = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes on the webhook port that failed, by reason",
            tls_handshake_failures.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "https_connections",
            "Connections open on the webhook port",
            connections_open.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "https_connections_refused",
            "Connections closed at once because the connection limit was reached",
            connections_refused.clone(),
        );
        let connections_idle_closed = Counter::default();
        registry.register(
            "https_connections_idle_closed",
            "Connections closed after the idle timeout",
            connections_idle_closed.clone(),
        );
        let body_bytes_in_memory = Gauge::default();
        registry.register(
            "request_body_bytes_in_memory",
            "Request body bytes held in memory now (bounded by the body memory budget)",
            body_bytes_in_memory.clone(),
        );
        let log_lines_dropped = Counter::default();
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because the log writer could not keep up (stderr stalled)",
            log_lines_dropped.clone(),
        );
        Self {
            registry,
            token_mints,
            token_mint_failures,
            token_expiry,
            requests,
            patches,
            latency,
            policy_reload_errors,
            policy_generation,
            tls_reloads,
            copies,
            unmanaged_conflicts,
            drift_repaired,
            secret_warnings,
            tls_certificate_expiry,
            tls_reload_rejections,
            tls_handshake_failures,
            connections_open,
            connections_refused,
            connections_idle_closed,
            body_bytes_in_memory,
            log_lines_dropped,
        }
    }

    pub(crate) fn tls_reload_rejected(&self, reason: &str) {
        self.tls_reload_rejections
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub(crate) fn tls_handshake_failed(&self, reason: &str) {
        self.tls_handshake_failures
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub(crate) fn request(&self, result: &'static str) {
        self.requests.get_or_create(&ResultLabel { result }).inc();
    }

    pub(crate) fn copy(&self, operation: &str) {
        self.copies
            .get_or_create(&OperationLabel {
                operation: operation.to_string(),
            })
            .inc();
    }

    pub(crate) fn tls_reload(&self, result: &'static str) {
        self.tls_reloads
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    pub(crate) fn token_mint(&self, secret: &str, provider: &str, result: &str) {
        self.token_mints
            .get_or_create(&TokenLabels {
                secret: secret.to_string(),
                provider: provider.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    pub(crate) fn secret_warning(&self, reason: &str) {
        self.secret_warnings
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub(crate) fn token_mint_failure(&self, secret: &str, provider: &str, reason: &str) {
        self.token_mint_failures
            .get_or_create(&TokenLabels {
                secret: secret.to_string(),
                provider: provider.to_string(),
                result: reason.to_string(),
            })
            .inc();
    }

    /// Records a token Secret's expiry (`None`: unknown, the sample is dropped).
    pub(crate) fn token_expiry(&self, secret: &str, at: Option<std::time::SystemTime>) {
        let label = SecretLabel {
            secret: secret.to_string(),
        };
        match at.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()) {
            Some(since) => {
                self.token_expiry
                    .get_or_create(&label)
                    .set(i64::try_from(since.as_secs()).unwrap_or(i64::MAX));
            }
            None => {
                self.token_expiry.remove(&label);
            }
        }
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        // The writer thread counts its drops; the counter follows it at each scrape.
        self.log_lines_dropped.inner().fetch_max(
            crate::telemetry::dropped_log_lines(),
            std::sync::atomic::Ordering::Relaxed,
        );
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
