//! One cluster-wide watch per secret name the policy uses, each with the field selector
//! `metadata.name=<name>`: RBAC `resourceNames` allows list/watch only in that form, and it
//! is all we need (the source in the source namespace and every copy share the name). No
//! Secret outside those names is ever listed or watched.
//!
//! Each event is summarized (pull facts) and then made lean ([`super::lean::secret`]) before
//! it reaches the store: a copy's data is kept only as its content hash, so 10,000 copies cost
//! their metadata, and their facts are shared by content. What is lean depends on the source
//! namespace, so a new source namespace re-lists every watch.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
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
    /// The source namespace this watch's lean step keeps whole.
    source_namespace: String,
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

    /// Starts watches for new names and stops those for names the policy dropped; every watch
    /// is started anew when the source namespace changes (what its lean step keeps whole).
    pub(crate) fn set_names(self: &Arc<Self>, names: &BTreeSet<String>, source_namespace: &str) {
        {
            let mut watches = self.lock();
            watches.retain(|name, watch| {
                let keep = names.contains(name);
                if !keep {
                    info!(secret = %name, "policy no longer names this secret; stopping its watch");
                    watch.task.abort();
                } else if watch.source_namespace != source_namespace {
                    info!(secret = %name, source_namespace, "source namespace changed; listing this secret name again");
                    watch.task.abort();
                    return false;
                }
                keep
            });
            for name in names {
                if !watches.contains_key(name) {
                    info!(secret = %name, "watching secret name");
                    watches.insert(name.clone(), self.spawn_watch(name, source_namespace));
                }
            }
        }
        self.report_health();
    }

    fn spawn_watch(self: &Arc<Self>, name: &str, source_namespace: &str) -> NameWatch {
        let (store, writer) = reflector::store();
        let synced = Arc::new(AtomicBool::new(false));
        let api: Api<Secret> = Api::all(self.client.clone());
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let facts: FactsByNamespace = Arc::default();
        // Facts from the whole Secret, then lean before the store.
        let mut ingest = Ingest::new(facts.clone(), source_namespace);
        let events = watcher(api, config).map_ok(move |event| ingest.event(event));
        let stream = reflector::reflector(writer, events).backoff(WatchBackoff::new());
        let caches = Arc::downgrade(self);
        let name = name.to_string();
        let task_synced = synced.clone();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let Some(caches) = caches.upgrade() else {
                    return;
                };
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
            source_namespace: source_namespace.to_string(),
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

    /// The cache for `name`, if it is watched, synced, and holds the Secrets of
    /// `source_namespace` whole (a cache made lean for another source namespace holds copies
    /// there without their data: none of them may be the source of a copy).
    pub(crate) fn store(&self, name: &str, source_namespace: &str) -> Option<Store<Secret>> {
        let watches = self.lock();
        let watch = watches.get(name)?;
        (watch.synced.load(Ordering::SeqCst) && watch.source_namespace == source_namespace)
            .then(|| watch.store.clone())
    }

    /// Serves `store` for `name` as a synced watch would (the copier's unit tests).
    #[cfg(test)]
    pub(crate) fn insert_synced(&self, name: &str, source_namespace: &str, store: Store<Secret>) {
        let watch = NameWatch {
            store,
            source_namespace: source_namespace.to_string(),
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

/// Between the watch and the store: each Secret's pull facts are computed while it still has
/// its data, then it is made lean. Copies of one content share one summary.
struct Ingest {
    facts: FactsByNamespace,
    source_namespace: String,
    /// A re-list is summarized aside and swapped in whole, like the reflector's store.
    relisted: HashMap<String, Arc<SecretFacts>>,
    /// Summaries by (content hash, expiry annotation): all a summary depends on besides the
    /// name, which is the watch's.
    shared: HashMap<(String, Option<String>), Weak<SecretFacts>>,
    /// Dead entries of `shared` are dropped when it grows to this size (twice what was live
    /// at the last sweep), so a sweep costs O(1) per insert on average.
    sweep_at: usize,
}

const SHARED_SWEEP_MIN: usize = 64;

impl Ingest {
    fn new(facts: FactsByNamespace, source_namespace: &str) -> Self {
        Self {
            facts,
            source_namespace: source_namespace.to_string(),
            relisted: HashMap::new(),
            shared: HashMap::new(),
            sweep_at: SHARED_SWEEP_MIN,
        }
    }

    fn event(&mut self, mut event: watcher::Event<Secret>) -> watcher::Event<Secret> {
        match &mut event {
            watcher::Event::Init => self.relisted.clear(),
            watcher::Event::InitApply(s) => {
                let summary = self.summary(s);
                self.relisted.insert(namespace_of(s), summary);
                super::lean::secret(s, &self.source_namespace);
            }
            watcher::Event::InitDone => {
                *lock_facts(&self.facts) = std::mem::take(&mut self.relisted);
            }
            watcher::Event::Apply(s) => {
                let summary = self.summary(s);
                lock_facts(&self.facts).insert(namespace_of(s), summary);
                super::lean::secret(s, &self.source_namespace);
            }
            watcher::Event::Delete(s) => {
                lock_facts(&self.facts).remove(&namespace_of(s));
                super::lean::secret(s, &self.source_namespace);
            }
        }
        event
    }

    fn summary(&mut self, secret: &Secret) -> Arc<SecretFacts> {
        let key = (
            super::copy::content_hash(secret),
            super::copy::annotation(secret, crate::expiry::ANNOTATION_EXPIRES_AT)
                .map(str::to_string),
        );
        if let Some(shared) = self.shared.get(&key).and_then(Weak::upgrade) {
            return shared;
        }
        let summary = Arc::new(SecretFacts::from_secret(secret));
        if self.shared.len() >= self.sweep_at {
            self.shared.retain(|_, weak| weak.strong_count() > 0);
            self.sweep_at = (self.shared.len() * 2).max(SHARED_SWEEP_MIN);
        }
        self.shared.insert(key, Arc::downgrade(&summary));
        summary
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

/// The source Secret `namespace/name` in `store`, never one whose data a cache dropped (a
/// copy made from it would have none); [`SecretCaches::store`] already keeps that so.
pub(crate) fn source(store: &Store<Secret>, namespace: &str, name: &str) -> Option<Arc<Secret>> {
    get(store, namespace, name).filter(|s| !super::copy::is_stripped(s))
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
            caches.set_names(&current.secret_names(), &current.source_namespace);
            // The source namespace may have changed: every name is worth a look.
            for name in caches.names() {
                let _ = caches.triggers.send(name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::copy;
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn pull_secret(namespace: &str, host: &str) -> Secret {
        let body = format!(r#"{{"auths":{{"{host}":{{"auth":"dXNlcjpwYXNz"}}}}}}"#);
        Secret {
            metadata: ObjectMeta {
                name: Some("regcred".into()),
                namespace: Some(namespace.into()),
                ..ObjectMeta::default()
            },
            type_: Some(copy::TYPE_DOCKERCONFIGJSON.into()),
            data: Some(BTreeMap::from([(
                ".dockerconfigjson".into(),
                ByteString(body.into_bytes()),
            )])),
            ..Secret::default()
        }
    }

    fn object(event: &watcher::Event<Secret>) -> &Secret {
        match event {
            watcher::Event::InitApply(s) | watcher::Event::Apply(s) | watcher::Event::Delete(s) => {
                s
            }
            _ => panic!("an event with an object"),
        }
    }

    #[test]
    fn facts_come_from_the_whole_secret_and_copies_of_one_content_share_them() {
        let facts = FactsByNamespace::default();
        let mut ingest = Ingest::new(facts.clone(), "creds");
        let source = pull_secret("creds", "registry.example.com");
        let copy_in = |ns: &str| copy::build_copy(&source, "creds", "regcred", ns);
        assert!(matches!(
            ingest.event(watcher::Event::Init),
            watcher::Event::Init
        ));
        let listed = [source.clone(), copy_in("team-a"), copy_in("team-b")];
        let out: Vec<_> = listed
            .iter()
            .map(|s| ingest.event(watcher::Event::InitApply(s.clone())))
            .collect();
        assert_eq!(object(&out[0]), &source, "the source is kept whole");
        assert!(out[1..].iter().all(|e| copy::is_stripped(object(e))));
        assert!(lock_facts(&facts).is_empty(), "swapped in at InitDone");
        ingest.event(watcher::Event::InitDone);

        let get = |ns: &str| lock_facts(&facts).get(ns).cloned().expect("facts");
        assert_eq!(get("team-a").keys(), vec!["registry.example.com"]);
        assert!(Arc::ptr_eq(&get("team-a"), &get("team-b")));
        assert_eq!(get("creds").keys(), get("team-a").keys());

        // Someone edits the copy in team-b: its facts are its own again.
        let mut edited = copy_in("team-b");
        edited.data = pull_secret("team-b", "other.example.com").data;
        let out = ingest.event(watcher::Event::Apply(edited));
        assert!(copy::is_stripped(object(&out)));
        assert_eq!(get("team-b").keys(), vec!["other.example.com"]);
        assert_eq!(get("team-a").keys(), vec!["registry.example.com"]);

        ingest.event(watcher::Event::Delete(copy_in("team-a")));
        assert!(lock_facts(&facts).get("team-a").is_none());
    }
}
