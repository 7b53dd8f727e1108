//! Secret copies: created at admission (bounded by the request's deadline), retried in the
//! background when that fails, and kept equal to their source afterwards.
//!
//! Reads come from the per-name watch caches only. Writes are idempotent across replicas:
//! creates that race end in 409 AlreadyExists (success), updates carry the resourceVersion
//! they were computed from and are re-read and re-compared on 409 Conflict.
//!
//! - [`ensure`]: what an admission does (look in the cache, create a missing copy once).
//! - [`queue`]: copies that could not be made, retried with backoff; the background loop.
//! - [`repair`]: following the source (rotation, drift, type change, source namespace).
//! - [`writes`]: the API writes, behind [`SecretWrites`] so the above can be tested.

mod ensure;
#[cfg(test)]
mod fake;
mod queue;
mod repair;
mod writes;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::future::{BoxFuture as FutBox, Shared};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::copy;
use super::namespaces::NamespaceCache;
use super::secrets::SecretCaches;
use crate::metrics::Metrics;
use crate::state::PolicyStore;
use queue::Pending;
pub(crate) use writes::{KubeWrites, SecretWrites};

/// Bound on one background API call (admission calls are bounded by their own deadline).
const API_TIMEOUT: Duration = Duration::from_secs(10);
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Most copies waiting for a retry; beyond that new failures are only logged (the next Pod
/// in that namespace queues it again).
const MAX_PENDING: usize = 10_000;
/// Copies written in parallel by one reconcile (a rotation touches every namespace).
const PARALLEL_WRITES: usize = 16;
/// How long a copy we just created counts as present while the watch has not shown it yet.
const RECENT_TTL: Duration = Duration::from_secs(30);
/// How long a queued copy for a namespace the cache has never shown is kept anyway.
const NAMESPACE_GRACE: Duration = Duration::from_secs(10);
/// Wait between looks at the cache after a 409 AlreadyExists, inside the request deadline.
const CACHE_POLL: Duration = Duration::from_millis(20);

type Key = (String, String);

#[derive(Debug, Clone)]
enum CreateOutcome {
    Created,
    AlreadyExists,
    /// The namespace does not exist (404): nothing to do.
    NamespaceGone,
    Failed(String),
}

#[derive(Default)]
struct Inner {
    inflight: HashMap<Key, Shared<FutBox<'static, CreateOutcome>>>,
    recent: HashMap<Key, Instant>,
    pending: HashMap<Key, Pending>,
    /// (namespace, name, uid) of unmanaged Secrets already reported (metric and Event once).
    conflicts: HashSet<(String, String, String)>,
    /// Secret names whose source is missing or unusable (logged once per change).
    source_problems: HashMap<String, &'static str>,
    /// Names whose reconcile failed: retried after a delay.
    reconcile_retry: HashMap<String, (u32, Instant)>,
}

pub(crate) struct Copier {
    this: Weak<Copier>,
    writes: Arc<dyn SecretWrites>,
    policy: Arc<PolicyStore>,
    namespaces: Arc<NamespaceCache>,
    secrets: Arc<SecretCaches>,
    metrics: Arc<Metrics>,
    inner: Mutex<Inner>,
    wake: Notify,
}

impl Copier {
    pub(crate) fn new(
        client: kube::Client,
        instance: Option<String>,
        policy: Arc<PolicyStore>,
        namespaces: Arc<NamespaceCache>,
        secrets: Arc<SecretCaches>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let writes = Arc::new(KubeWrites::new(client, instance));
        Self::with_writes(writes, policy, namespaces, secrets, metrics)
    }

    pub(crate) fn with_writes(
        writes: Arc<dyn SecretWrites>,
        policy: Arc<PolicyStore>,
        namespaces: Arc<NamespaceCache>,
        secrets: Arc<SecretCaches>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|this| Self {
            this: this.clone(),
            writes,
            policy,
            namespaces,
            secrets,
            metrics,
            inner: Mutex::new(Inner::default()),
            wake: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}
