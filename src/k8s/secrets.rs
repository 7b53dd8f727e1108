//! One cluster-wide watch per secret name the policy uses, each with the field selector
//! `metadata.name=<name>`: RBAC `resourceNames` allows list/watch only in that form, and it
//! is all we need (the source in the source namespace and every copy share the name). No
//! Secret outside those names is ever listed or watched.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::WatchBackoff;
use crate::diagnose::SecretFacts;
use crate::state::{Health, PolicyStore, PullSecretFacts};

/// Something changed for this secret name (an event, a re-list, a new watch).
pub(crate) type Trigger = String;

/// Per namespace: the pull facts of this name's Secret, computed once when it arrives.
type FactsByNamespace = Arc<Mutex<HashMap<String, Arc<SecretFacts>>>>;

struct NameWatch {
    store: Store<Secret>,
    synced: Arc<AtomicBool>,
    facts: FactsByNamespace,
    task: JoinHandle<()>,
}

fn lock_facts(
    facts: &FactsByNamespace,
) -> std::sync::MutexGuard<'_, HashMap<String, Arc<SecretFacts>>> {
    facts.lock().unwrap_or_else(|e| e.into_inner())
}

fn namespace_of(secret: &Secret) -> String {
    secret.metadata.namespace.clone().unwrap_or_default()
}

pub(crate) struct SecretCaches {
    client: kube::Client,
    health: Arc<Health>,
    triggers: UnboundedSender<Trigger>,
    watches: Mutex<HashMap<String, NameWatch>>,
    /// Once every watch has synced, a watch added later (policy change) does not make the
    /// replica unready: admissions for the old names keep working meanwhile.
    was_ready: AtomicBool,
}

impl SecretCaches {
    pub(crate) fn new(
        client: kube::Client,
        health: Arc<Health>,
        triggers: UnboundedSender<Trigger>,
    ) -> Self {
        health.pending("secrets", "waiting for a policy to name secrets");
        Self {
            client,
            health,
            triggers,
            watches: Mutex::new(HashMap::new()),
            was_ready: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, NameWatch>> {
        self.watches.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts watches for new names and stops those for names the policy dropped.
    pub(crate) fn set_names(self: &Arc<Self>, names: &BTreeSet<String>) {
        {
            let mut watches = self.lock();
            watches.retain(|name, watch| {
                let keep = names.contains(name);
                if !keep {
                    info!(secret = %name, "policy no longer names this secret; stopping its watch");
                    watch.task.abort();
                }
                keep
            });
            for name in names {
                if !watches.contains_key(name) {
                    info!(secret = %name, "watching secret name");
                    watches.insert(name.clone(), self.spawn_watch(name));
                }
            }
        }
        self.report_health();
    }

    fn spawn_watch(self: &Arc<Self>, name: &str) -> NameWatch {
        let (store, writer) = reflector::store();
        let synced = Arc::new(AtomicBool::new(false));
        let api: Api<Secret> = Api::all(self.client.clone());
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        // Lean before the store: no managedFields in 10,000 cached copies.
        let events = watcher(api, config).modify(super::lean::secret);
        let stream = reflector::reflector(writer, events).backoff(WatchBackoff::new());
        let caches = Arc::downgrade(self);
        let name = name.to_string();
        let task_synced = synced.clone();
        let facts: FactsByNamespace = Arc::default();
        let task_facts = facts.clone();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            // A re-list is summarized aside and swapped in whole, like the reflector's store.
            let mut relisted: HashMap<String, Arc<SecretFacts>> = HashMap::new();
            while let Some(event) = stream.next().await {
                let Some(caches) = caches.upgrade() else {
                    return;
                };
                match &event {
                    Ok(watcher::Event::Init) => relisted.clear(),
                    Ok(watcher::Event::InitApply(s)) => {
                        relisted.insert(namespace_of(s), Arc::new(SecretFacts::from_secret(s)));
                    }
                    Ok(watcher::Event::InitDone) => {
                        *lock_facts(&task_facts) = std::mem::take(&mut relisted);
                    }
                    Ok(watcher::Event::Apply(s)) => {
                        let summary = Arc::new(SecretFacts::from_secret(s));
                        lock_facts(&task_facts).insert(namespace_of(s), summary);
                    }
                    Ok(watcher::Event::Delete(s)) => {
                        lock_facts(&task_facts).remove(&namespace_of(s));
                    }
                    Err(_) => {}
                }
                match event {
                    Ok(watcher::Event::InitDone) => {
                        if !task_synced.swap(true, Ordering::SeqCst) {
                            debug!(secret = %name, "secret cache synced");
                            caches.report_health();
                        }
                        let _ = caches.triggers.send(name.clone());
                    }
                    Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {
                        let _ = caches.triggers.send(name.clone());
                    }
                    Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                    Err(error) => warn!(secret = %name, %error, "secret watch failed; retrying"),
                }
            }
        });
        NameWatch {
            store,
            synced,
            facts,
            task,
        }
    }

    fn report_health(&self) {
        let watches = self.lock();
        let waiting: Vec<&str> = watches
            .iter()
            .filter(|(_, w)| !w.synced.load(Ordering::SeqCst))
            .map(|(n, _)| n.as_str())
            .collect();
        if waiting.is_empty() {
            self.was_ready.store(true, Ordering::SeqCst);
            self.health
                .ready("secrets", format!("{} secret names watched", watches.len()));
        } else {
            let mut waiting = waiting;
            waiting.sort_unstable();
            let detail = format!("waiting for secret watches: {}", waiting.join(", "));
            if self.was_ready.load(Ordering::SeqCst) {
                self.health.ready("secrets", detail);
            } else {
                self.health.not_ready("secrets", detail);
            }
        }
    }

    /// The cache for `name`, if it is watched and synced.
    pub(crate) fn store(&self, name: &str) -> Option<Store<Secret>> {
        let watches = self.lock();
        let watch = watches.get(name)?;
        watch
            .synced
            .load(Ordering::SeqCst)
            .then(|| watch.store.clone())
    }

    /// Serves `store` for `name` as a synced watch would (the copier's unit tests).
    #[cfg(test)]
    pub(crate) fn insert_synced(&self, name: &str, store: Store<Secret>) {
        let watch = NameWatch {
            store,
            synced: Arc::new(AtomicBool::new(true)),
            facts: FactsByNamespace::default(),
            task: tokio::spawn(async {}),
        };
        self.lock().insert(name.to_string(), watch);
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    pub(crate) fn stop_all(&self) {
        for (_, watch) in self.lock().drain() {
            watch.task.abort();
        }
    }
}

impl PullSecretFacts for SecretCaches {
    fn facts(&self, namespace: &str, name: &str) -> Option<Arc<SecretFacts>> {
        let watches = self.lock();
        let watch = watches.get(name)?;
        if !watch.synced.load(Ordering::SeqCst) {
            return None;
        }
        lock_facts(&watch.facts).get(namespace).cloned()
    }
}

pub(crate) fn get(store: &Store<Secret>, namespace: &str, name: &str) -> Option<Arc<Secret>> {
    store.get(&ObjectRef::new(name).within(namespace))
}

/// Keeps the set of watched names equal to the policy's secret names, whichever way the
/// policy is loaded (ConfigMap or file): follows the store's generation.
pub(crate) async fn follow_policy(caches: Arc<SecretCaches>, policy: Arc<PolicyStore>) {
    let mut seen = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let generation = policy.generation();
        if generation == seen {
            continue;
        }
        seen = generation;
        if let Some(current) = policy.get() {
            caches.set_names(&current.secret_names());
            // The source namespace may have changed: every name is worth a look.
            for name in caches.names() {
                let _ = caches.triggers.send(name);
            }
        }
    }
}
