//! What the request path shares: the current policy, cached namespace labels, the secret
//! ensurer (when a cluster is there), metrics and readiness. Everything here is read without I/O.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;

use crate::metrics::Metrics;
use crate::plan::SecretNeed;
use crate::policy::Policy;

/// The running policy. A reload swaps it atomically; a failed reload leaves it in place.
#[derive(Default)]
pub(crate) struct PolicyStore {
    current: ArcSwapOption<Policy>,
    generation: AtomicU64,
}

impl PolicyStore {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn get(&self) -> Option<Arc<Policy>> {
        self.current.load_full()
    }

    /// Installs a new policy and returns its generation (1 for the first one).
    pub(crate) fn set(&self, policy: Policy) -> u64 {
        self.current.store(Some(Arc::new(policy)));
        self.generation.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// What every policy source (file, ConfigMap) does with a good policy: [`Self::set`], and
    /// the `policy_generation` gauge shows the new generation.
    pub(crate) fn install(&self, policy: Policy, metrics: &Metrics) -> u64 {
        let generation = self.set(policy);
        metrics
            .policy_generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
        generation
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }
}

/// The label kube-apiserver sets on every Namespace, to the namespace's name (immutable;
/// the NamespaceDefaultLabelName feature, on since Kubernetes 1.21).
pub(crate) const NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// `labels` as the API server shows them on `namespace`: with [`NAME_LABEL`] set.
pub(crate) fn with_name_label(
    mut labels: BTreeMap<String, String>,
    namespace: &str,
) -> BTreeMap<String, String> {
    labels
        .entry(NAME_LABEL.to_string())
        .or_insert_with(|| namespace.to_string());
    labels
}

/// Namespace labels from a watch cache (rule selectors need them).
pub(crate) trait NamespaceLabels: Send + Sync {
    /// `None` when the namespace is not (yet) known to the cache.
    fn labels(&self, namespace: &str) -> Option<BTreeMap<String, String>>;

    /// Like `labels`, but when the namespace is not known yet, waits up to `timeout` for the
    /// cache to learn it (a Namespace and its Pods applied together race the watch).
    /// The default answers at once: a static source never learns more.
    fn wait_for_labels<'a>(
        &'a self,
        namespace: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Option<BTreeMap<String, String>>> {
        let _ = timeout;
        Box::pin(std::future::ready(self.labels(namespace)))
    }
}

/// Used when there is no cluster: only the labels given on the command line, or none.
#[derive(Default)]
pub(crate) struct StaticNamespaces(pub(crate) BTreeMap<String, BTreeMap<String, String>>);

impl NamespaceLabels for StaticNamespaces {
    fn labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        self.0.get(namespace).cloned()
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Makes sure the Secrets a Pod is given exist in its namespace (the cluster side).
pub trait SecretEnsurer: Send + Sync {
    /// Ensures every secret in `needs` exists in `namespace`, taking at most `deadline`.
    /// Returns warnings for the admission response; failures are retried in the background.
    fn ensure<'a>(
        &'a self,
        namespace: &'a str,
        needs: &'a [SecretNeed],
        deadline: Duration,
    ) -> BoxFuture<'a, Vec<String>>;
}

/// What the watch caches know about the Secrets the policy names (no I/O): the summary
/// computed when the Secret arrived, for the admission warning.
pub(crate) trait PullSecretFacts: Send + Sync {
    /// The Secret `namespace/name`, if it is cached.
    fn facts(&self, namespace: &str, name: &str) -> Option<Arc<crate::diagnose::SecretFacts>>;
}

/// Readiness conditions by component, with a human-readable detail for /readyz.
#[derive(Default)]
pub(crate) struct Health {
    conditions: Mutex<BTreeMap<String, Result<String, String>>>,
}

impl Health {
    /// Registers a component that must become ready before /readyz says ok.
    pub(crate) fn pending(&self, component: &str, detail: &str) {
        self.lock()
            .insert(component.to_string(), Err(detail.to_string()));
    }

    pub(crate) fn ready(&self, component: &str, detail: impl Into<String>) {
        self.lock().insert(component.to_string(), Ok(detail.into()));
    }

    pub(crate) fn not_ready(&self, component: &str, detail: impl Into<String>) {
        self.lock()
            .insert(component.to_string(), Err(detail.into()));
    }

    /// (all ready, one line per component)
    pub(crate) fn report(&self) -> (bool, Vec<String>) {
        let conditions = self.lock();
        let ok = conditions.values().all(Result::is_ok);
        let lines = conditions
            .iter()
            .map(|(name, state)| match state {
                Ok(detail) => format!("[+] {name} ok: {detail}"),
                Err(detail) => format!("[-] {name} not ready: {detail}"),
            })
            .collect();
        (ok, lines)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Result<String, String>>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.conditions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Shared state of the webhook's request path.
#[derive(Clone)]
pub struct AppState {
    pub(crate) policy: Arc<PolicyStore>,
    pub(crate) namespaces: Arc<dyn NamespaceLabels>,
    pub ensurer: Option<Arc<dyn SecretEnsurer>>,
    /// Cached Secret summaries (cluster side), for warnings about Secrets the kubelet would
    /// not use.
    pub(crate) pull_secrets: Option<Arc<dyn PullSecretFacts>>,
    pub metrics: Arc<Metrics>,
    pub(crate) health: Arc<Health>,
    /// Always excluded from injection.
    pub(crate) webhook_namespace: Arc<str>,
    pub copy_deadline: Duration,
}

impl AppState {
    /// State for offline use and tests: no cluster, labels only from `namespaces`.
    pub fn offline(policy: Option<Policy>, webhook_namespace: &str) -> Self {
        let store = PolicyStore::new();
        if let Some(p) = policy {
            store.set(p);
        }
        Self {
            policy: Arc::new(store),
            namespaces: Arc::new(StaticNamespaces::default()),
            ensurer: None,
            pull_secrets: None,
            metrics: Arc::new(Metrics::new()),
            health: Arc::new(Health::default()),
            webhook_namespace: webhook_namespace.into(),
            copy_deadline: Duration::from_secs(1),
        }
    }
}
