//! Namespace cache: labels for rule selectors and whether a namespace is still there or
//! terminating, from one cluster-wide Namespace watch.
//!
//! The cache keeps its own compact entry per namespace rather than the Namespace object: a
//! cluster's size then costs its names and labels. (A `BTreeMap` of labels takes a 544-byte
//! node however few labels it holds; a Namespace object several hundred bytes more.)

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::WatchBackoff;
use crate::state::{BoxFuture, Health, NAME_LABEL, NamespaceLabels};

/// What a decision reads of one namespace.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    /// Its labels but [`NAME_LABEL`], sorted by key.
    labels: Box<[(Box<str>, Box<str>)]>,
    /// Whether [`NAME_LABEL`] is set to the namespace's name (the API server sets it on every
    /// namespace): kept as this flag, not as a copy of the name.
    name_label: bool,
    /// deletionTimestamp set, or status phase Terminating: writes into it are refused.
    terminating: bool,
}

impl Entry {
    fn of(ns: &Namespace) -> Option<(Box<str>, Entry)> {
        let name = ns.metadata.name.as_deref()?;
        let mut name_label = false;
        let mut labels = Vec::new();
        for (key, value) in ns.metadata.labels.iter().flatten() {
            if key == NAME_LABEL && value == name {
                name_label = true;
            } else {
                labels.push((key.as_str().into(), value.as_str().into()));
            }
        }
        let terminating = ns.metadata.deletion_timestamp.is_some()
            || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
        let entry = Entry {
            labels: labels.into_boxed_slice(),
            name_label,
            terminating,
        };
        Some((name.into(), entry))
    }

    /// The labels as the API server has them.
    fn labels(&self, name: &str) -> BTreeMap<String, String> {
        let mut labels: BTreeMap<String, String> = self
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if self.name_label {
            labels.insert(NAME_LABEL.to_string(), name.to_string());
        }
        labels
    }
}

#[derive(Default)]
struct Entries {
    /// What admissions and reconcilers read.
    live: HashMap<Box<str>, Entry>,
    /// A (re-)list in progress: it replaces `live` once complete, as kube-runtime's reflector
    /// does, so a re-list never shows a half-filled cache.
    listing: Option<HashMap<Box<str>, Entry>>,
}

pub(crate) struct NamespaceCache {
    entries: RwLock<Entries>,
    synced: AtomicBool,
    /// Bumped after every watch event has reached the cache; admissions waiting for a new
    /// namespace's labels look again then.
    changes: tokio::sync::watch::Sender<()>,
}

impl NamespaceCache {
    pub(super) fn new() -> Self {
        Self {
            entries: RwLock::new(Entries::default()),
            synced: AtomicBool::new(false),
            changes: tokio::sync::watch::Sender::new(()),
        }
    }

    pub(crate) fn start(client: kube::Client, health: Arc<Health>) -> (Arc<Self>, JoinHandle<()>) {
        let cache = Arc::new(Self::new());
        let api: Api<Namespace> = Api::all(client);
        let stream = watcher(api, watcher::Config::default()).backoff(WatchBackoff::new());
        let task_cache = cache.clone();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(event) => {
                        task_cache.apply(&event);
                        if let watcher::Event::InitDone = event {
                            let count = task_cache.read().live.len();
                            if !task_cache.synced.swap(true, Ordering::SeqCst) {
                                info!(count, "namespace cache synced");
                            }
                            health.ready("namespaces", format!("{count} namespaces cached"));
                        }
                    }
                    Err(error) => warn!(%error, "namespace watch failed; retrying"),
                }
            }
        });
        (cache, task)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Entries> {
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies one watch event and tells the waiting admissions.
    pub(super) fn apply(&self, event: &watcher::Event<Namespace>) {
        {
            let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
            let entries = &mut *entries;
            match event {
                watcher::Event::Init => entries.listing = Some(HashMap::new()),
                watcher::Event::InitApply(ns) => {
                    if let Some((name, entry)) = Entry::of(ns) {
                        entries
                            .listing
                            .get_or_insert_with(HashMap::new)
                            .insert(name, entry);
                    }
                }
                watcher::Event::InitDone => {
                    if let Some(listed) = entries.listing.take() {
                        entries.live = listed;
                    }
                }
                watcher::Event::Apply(ns) => {
                    if let Some((name, entry)) = Entry::of(ns) {
                        entries.live.insert(name, entry);
                    }
                }
                watcher::Event::Delete(ns) => {
                    if let Some(name) = ns.metadata.name.as_deref() {
                        entries.live.remove(name);
                    }
                }
            }
        }
        self.changes.send_replace(());
    }

    /// `Some(false)` only when the cache is synced and does not know the namespace.
    pub(crate) fn exists(&self, namespace: &str) -> Option<bool> {
        if self.read().live.contains_key(namespace) {
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
        self.read().live.keys().map(|k| k.to_string()).collect()
    }

    /// Changes after every watch event (labels, new and deleted namespaces, re-lists).
    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<()> {
        self.changes.subscribe()
    }

    /// Whether the namespace is being deleted (writes into it are refused with 403).
    pub(crate) fn terminating(&self, namespace: &str) -> bool {
        self.read()
            .live
            .get(namespace)
            .is_some_and(|entry| entry.terminating)
    }
}

impl NamespaceLabels for NamespaceCache {
    fn labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        self.read()
            .live
            .get(namespace)
            .map(|entry| entry.labels(namespace))
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

    #[test]
    fn labels_and_termination_read_back_as_the_api_server_has_them() {
        let cache = NamespaceCache::new();
        let mut shop = namespace("shop", &[("team", "a"), (NAME_LABEL, "shop")]);
        shop.metadata.annotations = Some(BTreeMap::from([("big".into(), "x".repeat(4096))]));
        // A name label that does not say the name is kept as it is.
        let odd = namespace("odd", &[(NAME_LABEL, "other")]);
        let mut going = namespace("going", &[]);
        going.status = Some(k8s_openapi::api::core::v1::NamespaceStatus {
            phase: Some("Terminating".into()),
            conditions: None,
        });
        for ns in [&shop, &odd, &going] {
            cache.apply(&watcher::Event::Apply(ns.clone()));
        }
        for ns in [&shop, &odd, &going] {
            let name = ns.metadata.name.as_deref().unwrap();
            assert_eq!(cache.labels(name), ns.metadata.labels.clone(), "{name}");
        }
        assert!(cache.terminating("going"));
        assert!(!cache.terminating("shop"));
        assert_eq!(cache.exists("shop"), Some(true));
        // Not synced yet: an unknown namespace may still come.
        assert_eq!(cache.exists("ghost"), None);
        cache.apply(&watcher::Event::Delete(odd));
        assert_eq!(cache.labels("odd"), None);
    }

    #[test]
    fn a_relist_replaces_the_cache_only_when_complete() {
        let cache = NamespaceCache::new();
        cache.apply(&watcher::Event::Apply(namespace("old", &[])));
        cache.apply(&watcher::Event::Init);
        cache.apply(&watcher::Event::InitApply(namespace("new", &[("a", "b")])));
        // Mid-list, the previous state is still served.
        assert!(cache.labels("old").is_some());
        assert!(cache.labels("new").is_none());
        cache.apply(&watcher::Event::InitDone);
        assert!(cache.labels("old").is_none(), "gone from the new list");
        assert_eq!(
            cache.labels("new"),
            Some(BTreeMap::from([("a".to_string(), "b".to_string())]))
        );
        let mut names = cache.names();
        names.sort();
        assert_eq!(names, ["new"]);
    }

    #[tokio::test]
    async fn a_waiting_admission_sees_a_namespace_the_watch_delivers_later() {
        let cache = Arc::new(NamespaceCache::new());
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
            cache.apply(&watcher::Event::Apply(ns));
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
        let cache = NamespaceCache::new();
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
