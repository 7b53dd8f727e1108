//! Namespace cache: labels for rule selectors and whether a namespace is still there or
//! terminating, from one cluster-wide Namespace watch.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::WatchBackoff;
use crate::state::{BoxFuture, Health, NamespaceLabels};

pub(crate) struct NamespaceCache {
    store: Store<Namespace>,
    synced: AtomicBool,
    /// Bumped after every watch event has reached `store`; admissions waiting for a new
    /// namespace's labels look again then.
    changes: tokio::sync::watch::Sender<()>,
}

impl NamespaceCache {
    pub(super) fn new(store: Store<Namespace>) -> Self {
        Self {
            store,
            synced: AtomicBool::new(false),
            changes: tokio::sync::watch::Sender::new(()),
        }
    }

    pub(crate) fn start(client: kube::Client, health: Arc<Health>) -> (Arc<Self>, JoinHandle<()>) {
        let (store, writer) = reflector::store();
        let cache = Arc::new(Self::new(store));
        let api: Api<Namespace> = Api::all(client);
        // Lean before the store: name, labels and termination are all a decision reads.
        let events = watcher(api, watcher::Config::default()).modify(super::lean::namespace);
        let stream = reflector::reflector(writer, events).backoff(WatchBackoff::new());
        let task_cache = cache.clone();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                // The reflector has applied the event to the store before yielding it.
                task_cache.changes.send_replace(());
                match event {
                    Ok(watcher::Event::InitDone) => {
                        let count = task_cache.store.len();
                        if !task_cache.synced.swap(true, Ordering::SeqCst) {
                            info!(count, "namespace cache synced");
                        }
                        health.ready("namespaces", format!("{count} namespaces cached"));
                    }
                    Ok(_) => {}
                    Err(error) => warn!(%error, "namespace watch failed; retrying"),
                }
            }
        });
        (cache, task)
    }

    /// `Some(false)` only when the cache is synced and does not know the namespace.
    pub(crate) fn exists(&self, namespace: &str) -> Option<bool> {
        if self.store.get(&ObjectRef::new(namespace)).is_some() {
            Some(true)
        } else if self.synced.load(Ordering::SeqCst) {
            Some(false)
        } else {
            None
        }
    }

    /// Whether the first list has reached the cache.
    pub(crate) fn synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
    }

    /// Every namespace the cache holds.
    pub(crate) fn names(&self) -> Vec<String> {
        self.store
            .state()
            .iter()
            .filter_map(|ns| ns.metadata.name.clone())
            .collect()
    }

    /// Changes after every watch event (labels, new and deleted namespaces, re-lists).
    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<()> {
        self.changes.subscribe()
    }

    /// Whether the namespace is being deleted (writes into it are refused with 403).
    pub(crate) fn terminating(&self, namespace: &str) -> bool {
        self.store
            .get(&ObjectRef::new(namespace))
            .is_some_and(|ns| {
                ns.metadata.deletion_timestamp.is_some()
                    || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
            })
    }
}

impl NamespaceLabels for NamespaceCache {
    fn labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        self.store
            .get(&ObjectRef::new(namespace))
            .map(|ns| ns.metadata.labels.clone().unwrap_or_default())
    }

    fn wait_for_labels<'a>(
        &'a self,
        namespace: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Option<BTreeMap<String, String>>> {
        Box::pin(async move {
            // Subscribe before the first look, so an event between the two is not missed.
            let mut changes = self.changes.subscribe();
            let appeared = async {
                loop {
                    if let Some(labels) = self.labels(namespace) {
                        return Some(labels);
                    }
                    if changes.changed().await.is_err() {
                        return None;
                    }
                }
            };
            tokio::time::timeout(timeout, appeared)
                .await
                .unwrap_or_else(|_| self.labels(namespace))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn namespace(name: &str, labels: &[(&str, &str)]) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        }
    }

    #[tokio::test]
    async fn a_waiting_admission_sees_a_namespace_the_watch_delivers_later() {
        let (store, mut writer) = reflector::store();
        let cache = Arc::new(NamespaceCache::new(store));
        let waiter = tokio::spawn({
            let cache = cache.clone();
            async move {
                cache
                    .wait_for_labels("team-new", Duration::from_secs(3600))
                    .await
            }
        });
        // Other namespaces' events wake the waiter without answering it.
        for ns in [
            namespace("other", &[]),
            namespace("team-new", &[("a", "b")]),
        ] {
            tokio::task::yield_now().await;
            writer.apply_watcher_event(&watcher::Event::Apply(ns));
            cache.changes.send_replace(());
        }
        // Far below the wait's own timeout: the change notification ended it.
        let labels = tokio::time::timeout(Duration::from_secs(20), waiter)
            .await
            .expect("woken by the watch event")
            .unwrap();
        assert_eq!(
            labels,
            Some(BTreeMap::from([("a".to_string(), "b".to_string())]))
        );
    }

    #[tokio::test]
    async fn a_namespace_that_never_arrives_ends_the_wait_at_the_timeout() {
        let (store, _writer) = reflector::store();
        let cache = NamespaceCache::new(store);
        let started = std::time::Instant::now();
        let labels = cache
            .wait_for_labels("team-ghost", Duration::from_millis(20))
            .await;
        assert_eq!(labels, None);
        assert!(
            started.elapsed() >= Duration::from_millis(20),
            "it did wait"
        );
    }
}
