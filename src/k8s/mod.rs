//! Everything that talks to the API server: watches (policy ConfigMap, namespaces, secrets)
//! and the Secret copies.
//!
//! The request path only reads caches fed by watches; the one API call an admission may make
//! is the create of a missing copy, bounded by the request's deadline. Everything else (retries,
//! following source rotations, repairing drift) runs in background tasks started by [`start`].

mod copier;
pub(crate) mod copy;
mod lean;
mod namespaces;
mod policy_source;
mod prune;
mod secrets;
mod service_accounts;
mod tokens;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::metrics::Metrics;
use crate::state::{Health, NamespaceLabels, PolicyStore, PullSecretFacts, SecretEnsurer};

pub(crate) use copy::is_managed;
pub use copy::{
    ANNOTATION_SOURCE, ANNOTATION_SOURCE_HASH, LABEL_MANAGED_BY, MANAGED_BY, content_hash,
};
pub(crate) use policy_source::POLICY_KEY;

/// On a token Secret: when its credential stops working (RFC 3339), written by the minter and
/// read by `diagnose`, the admission warnings and the refresher.
pub(crate) use crate::expiry::ANNOTATION_EXPIRES_AT;
/// On a token Secret: when its credential was minted (RFC 3339); with the expiry, the lifetime.
pub(crate) const ANNOTATION_MINTED_AT: &str = "pullsecret-injector.io/minted-at";
/// On a token Secret: which kind of token source fills it (`ecr`, `google`, `azure`).
pub(crate) const ANNOTATION_TOKEN_SOURCE: &str = "pullsecret-injector.io/token-source";
/// On a token Secret: what it was minted for (region, registries); another value is re-minted.
pub(crate) const ANNOTATION_TOKEN_CONFIG: &str = "pullsecret-injector.io/token-config";

/// How the cluster side is set up.
#[derive(Debug, Clone)]
pub(crate) struct ClusterConfig {
    /// The webhook's own namespace (where the policy ConfigMap lives).
    pub(crate) webhook_namespace: String,
    /// Watch this ConfigMap (key `policy.yaml`) for the policy; `None` when the policy comes
    /// from a file.
    pub(crate) policy_configmap: Option<String>,
    /// Names this replica in Events (the Pod name, from `POD_NAME`, when set).
    pub(crate) instance: Option<String>,
    /// How long a copy no rule gives its namespace waits before it is deleted; `None`: copies
    /// are never deleted.
    pub(crate) prune_grace: Option<Duration>,
}

impl ClusterConfig {
    pub(crate) fn new(webhook_namespace: &str, policy_configmap: Option<String>) -> Self {
        Self {
            webhook_namespace: webhook_namespace.to_string(),
            policy_configmap,
            instance: std::env::var("POD_NAME").ok().filter(|s| !s.is_empty()),
            prune_grace: Some(DEFAULT_PRUNE_GRACE),
        }
    }
}

/// `serve --prune-grace` default: long enough that a policy edit undone at once deletes nothing.
pub(crate) const DEFAULT_PRUNE_GRACE: Duration = Duration::from_secs(30);

/// The running cluster side: what `AppState` needs, and the tasks to stop on shutdown.
pub(crate) struct Cluster {
    pub(crate) namespaces: Arc<dyn NamespaceLabels>,
    pub(crate) ensurer: Arc<dyn SecretEnsurer>,
    pub(crate) pull_secrets: Arc<dyn PullSecretFacts>,
    tasks: Vec<JoinHandle<()>>,
    secrets: Arc<secrets::SecretCaches>,
}

impl Cluster {
    /// Stops every watch and background task. (Dropping a `Cluster` leaves them running: the
    /// request path holds the caches they feed.)
    pub(crate) fn shutdown(&self) {
        for task in &self.tasks {
            task.abort();
        }
        self.secrets.stop_all();
        tracing::info!(
            tasks = self.tasks.len(),
            "cluster side stopped: watches and retries ended"
        );
    }
}

/// Starts the watches (policy ConfigMap if configured, namespaces, one per policy secret
/// name) and the copy reconciler. Returns at once; readiness is reported through `health`
/// (components `policy`, `namespaces`, `secrets`).
pub(crate) async fn start(
    client: kube::Client,
    config: ClusterConfig,
    policy: Arc<PolicyStore>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Cluster> {
    let mut tasks = Vec::new();
    if let Some(name) = &config.policy_configmap {
        health.pending(
            "policy",
            &format!("waiting for ConfigMap {}/{name}", config.webhook_namespace),
        );
        let source = policy_source::ConfigMapPolicy {
            client: client.clone(),
            namespace: config.webhook_namespace.clone(),
            name: name.clone(),
            policy: policy.clone(),
            health: health.clone(),
            metrics: metrics.clone(),
        };
        tasks.push(tokio::spawn(source.run()));
    }

    health.pending("namespaces", "namespace cache not synced yet");
    let (namespaces, ns_task) = namespaces::NamespaceCache::start(client.clone(), health.clone());
    tasks.push(ns_task);

    let (trigger_tx, trigger_rx) = tokio::sync::mpsc::unbounded_channel();
    let secrets = Arc::new(secrets::SecretCaches::new(
        client.clone(),
        health.clone(),
        trigger_tx,
    ));

    let refresher = tokens::TokenRefresher::new(
        client.clone(),
        config.instance.clone(),
        policy.clone(),
        secrets.clone(),
        metrics.clone(),
        Arc::new(crate::tokens::CloudMinter::new()),
    );
    tasks.push(tokio::spawn(refresher.run()));

    let copier = copier::Copier::new(
        client.clone(),
        config.instance.clone(),
        policy.clone(),
        namespaces.clone(),
        secrets.clone(),
        metrics.clone(),
    );
    tasks.push(tokio::spawn(copier.clone().run(trigger_rx)));
    tasks.push(tokio::spawn(secrets::follow_policy(
        secrets.clone(),
        policy.clone(),
    )));

    let (accounts, account_tasks) = service_accounts::start(
        client.clone(),
        policy.clone(),
        namespaces.clone(),
        copier.clone(),
        config.webhook_namespace.clone(),
        health,
    );
    tasks.extend(account_tasks);
    if let Some(grace) = config.prune_grace {
        let pruner = prune::Pruner {
            client,
            instance: config.instance.clone(),
            policy,
            namespaces: namespaces.clone(),
            secrets: secrets.clone(),
            accounts,
            metrics,
            webhook_namespace: config.webhook_namespace.clone(),
            grace,
        };
        tasks.push(tokio::spawn(pruner.run()));
    }

    Ok(Cluster {
        namespaces,
        ensurer: copier,
        pull_secrets: secrets.clone(),
        tasks,
        secrets,
    })
}

/// Retry delays for watches: short enough that a recovered API server is seen within seconds,
/// growing so that a failing one is not hammered.
pub(crate) struct WatchBackoff {
    next: Duration,
}

const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(200);
const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(5);

impl WatchBackoff {
    pub(crate) fn new() -> Self {
        Self {
            next: WATCH_BACKOFF_MIN,
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let current = self.next;
        self.next = (current * 2).min(WATCH_BACKOFF_MAX);
        Some(current)
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = WATCH_BACKOFF_MIN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::utils::Backoff;

    #[test]
    fn watch_backoff_grows_to_a_bound_and_resets() {
        let mut b = WatchBackoff::new();
        let delays: Vec<_> = b.by_ref().take(8).collect();
        assert_eq!(delays[0], WATCH_BACKOFF_MIN);
        assert!(delays.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*delays.last().unwrap_or(&Duration::ZERO), WATCH_BACKOFF_MAX);
        b.reset();
        assert_eq!(b.next(), Some(WATCH_BACKOFF_MIN));
    }
}
