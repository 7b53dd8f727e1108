//! Namespace cache: labels for rule selectors and whether a namespace is still there or
//! terminating, from one cluster-wide Namespace watch.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::WatchBackoff;
use crate::state::{Health, NamespaceLabels};

pub(crate) struct NamespaceCache {
    store: Store<Namespace>,
    synced: AtomicBool,
}

impl NamespaceCache {
    pub(crate) fn start(client: kube::Client, health: Arc<Health>) -> (Arc<Self>, JoinHandle<()>) {
        let (store, writer) = reflector::store();
        let cache = Arc::new(Self {
            store,
            synced: AtomicBool::new(false),
        });
        let api: Api<Namespace> = Api::all(client);
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .backoff(WatchBackoff::new());
        let task_cache = cache.clone();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
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
}
