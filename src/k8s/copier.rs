//! Secret copies: created at admission (bounded by the request's deadline), retried in the
//! background when that fails, and kept equal to their source afterwards.
//!
//! Reads come from the per-name watch caches only. Writes are idempotent across replicas:
//! creates that race end in 409 AlreadyExists (success), updates carry the resourceVersion
//! they were computed from and are re-read and re-compared on 409 Conflict.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::future::{BoxFuture as FutBox, FutureExt, Shared};
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::Api;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use thiserror::Error;
use tokio::sync::Notify;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::copy::{self, CopyState};
use super::namespaces::NamespaceCache;
use super::secrets::{self, SecretCaches, Trigger};
use crate::metrics::Metrics;
use crate::plan::SecretNeed;
use crate::state::{BoxFuture, PolicyStore, SecretEnsurer};

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

#[derive(Debug, Error)]
pub(crate) enum CopyError {
    #[error("API error {code} ({reason})")]
    Api { code: u16, reason: String },
    #[error("API request failed: {0}")]
    Transport(String),
    #[error("timed out")]
    Timeout,
}

impl CopyError {
    fn from_kube(err: kube::Error) -> Self {
        match err {
            kube::Error::Api(status) => Self::Api {
                code: status.code,
                reason: status.reason.clone(),
            },
            // The transport error text names hosts and causes, never Secret data.
            other => Self::Transport(other.to_string()),
        }
    }

    /// Short, stable label for logs and the admission warning.
    fn label(&self) -> String {
        match self {
            Self::Api { code, reason } if reason.is_empty() => format!("API error {code}"),
            Self::Api { code, reason } => format!("API error {code} {reason}"),
            Self::Transport(_) => "API unreachable".to_string(),
            Self::Timeout => "API timeout".to_string(),
        }
    }
}

fn api_status(err: &kube::Error) -> Option<&kube::core::Status> {
    match err {
        kube::Error::Api(status) => Some(status),
        _ => None,
    }
}

#[derive(Debug, Clone)]
enum CreateOutcome {
    Created,
    AlreadyExists,
    /// The namespace does not exist (404): nothing to do.
    NamespaceGone,
    Failed(String),
}

struct Pending {
    source_namespace: String,
    attempts: u32,
    due: Instant,
    /// The namespace was seen in the cache once: its absence later means it was deleted.
    namespace_seen: bool,
    queued: Instant,
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
    client: kube::Client,
    recorder: Recorder,
    policy: Arc<PolicyStore>,
    namespaces: Arc<NamespaceCache>,
    secrets: Arc<SecretCaches>,
    metrics: Arc<Metrics>,
    inner: Mutex<Inner>,
    wake: Notify,
}

fn retry_delay(attempts: u32, key: &impl std::hash::Hash) -> Duration {
    let base = RETRY_MIN
        .saturating_mul(1u32 << attempts.min(10))
        .min(RETRY_MAX);
    // Up to 25% jitter so that replicas and namespaces do not retry in lockstep.
    let jitter_ms = std::collections::hash_map::RandomState::new().hash_one(key)
        % (base.as_millis() as u64 / 4 + 1);
    base + Duration::from_millis(jitter_ms)
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
        let reporter = Reporter {
            controller: copy::MANAGED_BY.to_string(),
            instance,
        };
        Arc::new_cyclic(|this| Self {
            this: this.clone(),
            recorder: Recorder::new(client.clone(), reporter),
            client,
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

    fn api(&self, namespace: &str) -> Api<Secret> {
        Api::namespaced(self.client.clone(), namespace)
    }

    // ---- admission ----------------------------------------------------------------------

    async fn ensure_one(
        &self,
        namespace: &str,
        need: &SecretNeed,
        until: Instant,
    ) -> Option<String> {
        let name = need.name.as_str();
        let source_ns = need.source_namespace.as_str();
        if namespace == source_ns {
            return None;
        }
        let Some(store) = self.secrets.store(name) else {
            self.enqueue(namespace, name, source_ns, 0);
            return Some(format!(
                "secret {name} is not cached yet; its copy in {namespace} will be made in the background"
            ));
        };
        let Some(source) = secrets::get(&store, source_ns, name) else {
            debug!(%namespace, secret = name, "source secret not found; nothing copied");
            return Some(format!(
                "source Secret {source_ns}/{name} not found; nothing copied into {namespace}"
            ));
        };
        if !copy::is_pull_secret_type(&source) {
            debug!(%namespace, secret = name, source_type = copy::secret_type(&source), "source secret is not a pull secret; nothing copied");
            return Some(format!(
                "source Secret {source_ns}/{name} has type {}, not kubernetes.io/dockerconfigjson or kubernetes.io/dockercfg; nothing copied",
                copy::secret_type(&source)
            ));
        }
        let key = (namespace.to_string(), name.to_string());
        if let Some(target) = secrets::get(&store, namespace, name) {
            self.lock().recent.remove(&key);
            return if copy::is_managed(&target) {
                None
            } else {
                Some(self.unmanaged(namespace, name, &target))
            };
        }
        if self.recently_created(&key) {
            return None;
        }
        if self.namespaces.terminating(namespace) {
            self.enqueue(namespace, name, source_ns, 0);
            return Some(format!(
                "namespace {namespace} is terminating; Secret {name} not copied"
            ));
        }
        let outcome = self.create_shared(namespace, name, source_ns, source);
        match tokio::time::timeout_at(until, outcome).await {
            Ok(CreateOutcome::Created | CreateOutcome::NamespaceGone) => None,
            Ok(CreateOutcome::AlreadyExists) => {
                self.after_already_exists(&store, namespace, name, until)
                    .await
            }
            Ok(CreateOutcome::Failed(reason)) => Some(format!(
                "copy of Secret {name} into {namespace} failed ({reason}); retrying in the background"
            )),
            Err(_) => Some(format!(
                "copy of Secret {name} into {namespace} not confirmed in time; retrying in the background"
            )),
        }
    }

    /// A warning when the Pod is given a token Secret whose credential has already expired
    /// (its refreshes are failing): the pull will be refused.
    fn expired_token(&self, need: &SecretNeed) -> Option<String> {
        let store = self.secrets.store(&need.name)?;
        let source = secrets::get(&store, &need.source_namespace, &need.name)?;
        if !crate::tokens::expired(&source, std::time::SystemTime::now()) {
            return None;
        }
        let at = crate::tokens::expires_at(&source).map(crate::tokens::rfc3339)?;
        Some(format!(
            "token Secret {}/{} expired at {at} and has not been refreshed (see its Events); pulls with it will be refused",
            need.source_namespace, need.name
        ))
    }

    fn recently_created(&self, key: &Key) -> bool {
        let mut inner = self.lock();
        match inner.recent.get(key) {
            Some(at) if at.elapsed() < RECENT_TTL => true,
            Some(_) => {
                inner.recent.remove(key);
                false
            }
            None => false,
        }
    }

    /// Another replica (or a user) created it first: success if it is ours. The watch shows
    /// it shortly; look until the deadline, and say nothing if it has not shown up by then.
    async fn after_already_exists(
        &self,
        store: &kube::runtime::reflector::Store<Secret>,
        namespace: &str,
        name: &str,
        until: Instant,
    ) -> Option<String> {
        loop {
            if let Some(target) = secrets::get(store, namespace, name) {
                return (!copy::is_managed(&target))
                    .then(|| self.unmanaged(namespace, name, &target));
            }
            if Instant::now() + CACHE_POLL >= until {
                return None;
            }
            tokio::time::sleep(CACHE_POLL).await;
        }
    }

    /// A Secret we do not manage holds the name: never touched. Reported once per object.
    fn unmanaged(&self, namespace: &str, name: &str, target: &Secret) -> String {
        let uid = target.metadata.uid.clone().unwrap_or_default();
        let first =
            self.lock()
                .conflicts
                .insert((namespace.to_string(), name.to_string(), uid.clone()));
        if first {
            self.metrics.unmanaged_conflicts.inc();
            warn!(%namespace, secret = name, "secret exists and is not managed by us; left unchanged");
            let recorder = self.recorder.clone();
            let reference = ObjectReference {
                api_version: Some("v1".to_string()),
                kind: Some("Secret".to_string()),
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                uid: Some(uid).filter(|u| !u.is_empty()),
                resource_version: target.metadata.resource_version.clone(),
                ..ObjectReference::default()
            };
            let note = format!(
                "Secret {namespace}/{name} is not managed by pullsecret-injector; it was left unchanged and Pods reference it as it is"
            );
            let (ns, secret) = (namespace.to_string(), name.to_string());
            tokio::spawn(async move {
                let event = Event {
                    type_: EventType::Warning,
                    reason: "UnmanagedSecretExists".to_string(),
                    note: Some(note),
                    action: "CopySecret".to_string(),
                    secondary: None,
                };
                match tokio::time::timeout(API_TIMEOUT, recorder.publish(&event, &reference)).await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        warn!(namespace = %ns, %secret, %error, "could not record event")
                    }
                    Err(_) => warn!(namespace = %ns, %secret, "recording event timed out"),
                }
            });
        }
        format!(
            "Secret {namespace}/{name} exists and is not managed by pullsecret-injector; left unchanged"
        )
    }

    /// One create per (namespace, name) at a time in this replica; concurrent admissions
    /// wait for the same outcome. The create runs in its own task, so a request that gives up
    /// at its deadline does not cancel it.
    fn create_shared(
        &self,
        namespace: &str,
        name: &str,
        source_ns: &str,
        source: Arc<Secret>,
    ) -> Shared<FutBox<'static, CreateOutcome>> {
        let key = (namespace.to_string(), name.to_string());
        let mut inner = self.lock();
        if let Some(existing) = inner.inflight.get(&key) {
            return existing.clone();
        }
        let Some(this) = self.this.upgrade() else {
            return futures::future::ready(CreateOutcome::Failed("shutting down".to_string()))
                .boxed()
                .shared();
        };
        let (ns, secret, src) = (
            namespace.to_string(),
            name.to_string(),
            source_ns.to_string(),
        );
        let task = tokio::spawn(async move {
            let outcome = this.create(&ns, &secret, &src, &source).await;
            let key = (ns.clone(), secret.clone());
            {
                let mut inner = this.lock();
                inner.inflight.remove(&key);
                if matches!(outcome, CreateOutcome::Created) {
                    inner.recent.insert(key, Instant::now());
                }
            }
            if matches!(outcome, CreateOutcome::Failed(_)) {
                this.enqueue(&ns, &secret, &src, 1);
            }
            outcome
        });
        let shared = async move {
            task.await
                .unwrap_or_else(|_| CreateOutcome::Failed("copy task stopped".to_string()))
        }
        .boxed()
        .shared();
        inner.inflight.insert(key, shared.clone());
        shared
    }

    async fn create(
        &self,
        namespace: &str,
        name: &str,
        source_ns: &str,
        source: &Secret,
    ) -> CreateOutcome {
        let copy = copy::build_copy(source, source_ns, name, namespace);
        let result = tokio::time::timeout(
            API_TIMEOUT,
            self.api(namespace).create(&PostParams::default(), &copy),
        )
        .await;
        match result {
            Ok(Ok(_)) => {
                self.metrics.copy("created");
                info!(%namespace, secret = name, source = %copy::source_ref(source_ns, name), "copy created");
                CreateOutcome::Created
            }
            Ok(Err(err)) if api_status(&err).is_some_and(|s| s.is_already_exists()) => {
                debug!(%namespace, secret = name, "copy already exists");
                CreateOutcome::AlreadyExists
            }
            Ok(Err(err)) if api_status(&err).is_some_and(|s| s.is_not_found()) => {
                debug!(%namespace, secret = name, "namespace not found; no copy needed");
                CreateOutcome::NamespaceGone
            }
            Ok(Err(err)) => self.create_failed(namespace, name, CopyError::from_kube(err)),
            Err(_) => self.create_failed(namespace, name, CopyError::Timeout),
        }
    }

    fn create_failed(&self, namespace: &str, name: &str, error: CopyError) -> CreateOutcome {
        self.metrics.copy("failed");
        warn!(%namespace, secret = name, %error, "copy not created; will retry");
        CreateOutcome::Failed(error.label())
    }

    // ---- background retries ------------------------------------------------------------

    fn enqueue(&self, namespace: &str, name: &str, source_ns: &str, attempts: u32) {
        let key = (namespace.to_string(), name.to_string());
        {
            let mut inner = self.lock();
            if inner.pending.contains_key(&key) {
                return;
            }
            if inner.pending.len() >= MAX_PENDING {
                warn!(%namespace, secret = name, "retry queue full; copy not queued");
                return;
            }
            let now = Instant::now();
            let due = now
                + if attempts == 0 {
                    Duration::ZERO
                } else {
                    retry_delay(attempts, &key)
                };
            inner.pending.insert(
                key,
                Pending {
                    source_namespace: source_ns.to_string(),
                    attempts,
                    due,
                    namespace_seen: self.namespaces.exists(namespace) == Some(true),
                    queued: now,
                },
            );
        }
        self.wake.notify_one();
    }

    /// Runs the background work: reconciles names whose watch reported a change, retries
    /// pending copies when due.
    pub(crate) async fn run(self: Arc<Self>, mut triggers: UnboundedReceiver<Trigger>) {
        let mut dirty: BTreeSet<String> = BTreeSet::new();
        loop {
            let next_due = self.next_due();
            tokio::select! {
                msg = triggers.recv() => match msg {
                    Some(name) => { dirty.insert(name); }
                    None => return,
                },
                () = self.wake.notified() => {}
                () = sleep_until_opt(next_due) => {}
            }
            while let Ok(name) = triggers.try_recv() {
                dirty.insert(name);
            }
            let now = Instant::now();
            {
                let inner = self.lock();
                let due: Vec<String> = inner
                    .reconcile_retry
                    .iter()
                    .filter(|(_, (_, at))| *at <= now)
                    .map(|(n, _)| n.clone())
                    .collect();
                dirty.extend(due);
            }
            for name in std::mem::take(&mut dirty) {
                let ok = self.reconcile(&name).await;
                let mut inner = self.lock();
                if ok {
                    inner.reconcile_retry.remove(&name);
                } else {
                    let attempts = inner.reconcile_retry.get(&name).map_or(1, |(a, _)| a + 1);
                    let due = Instant::now() + retry_delay(attempts, &name);
                    inner.reconcile_retry.insert(name, (attempts, due));
                }
            }
            self.retry_pending().await;
            self.lock().recent.retain(|_, at| at.elapsed() < RECENT_TTL);
        }
    }

    fn next_due(&self) -> Option<Instant> {
        let inner = self.lock();
        let pending = inner.pending.values().map(|p| p.due);
        let names = inner.reconcile_retry.values().map(|(_, at)| *at);
        pending.chain(names).min()
    }

    async fn retry_pending(&self) {
        let now = Instant::now();
        let due: Vec<(Key, Pending)> = {
            let mut inner = self.lock();
            let keys: Vec<Key> = inner
                .pending
                .iter()
                .filter(|(_, p)| p.due <= now)
                .map(|(k, _)| k.clone())
                .collect();
            keys.into_iter()
                .filter_map(|k| inner.pending.remove(&k).map(|p| (k, p)))
                .collect()
        };
        if due.is_empty() {
            return;
        }
        stream::iter(due)
            .for_each_concurrent(PARALLEL_WRITES, |(key, pending)| {
                self.retry_one(key, pending)
            })
            .await;
    }

    async fn retry_one(&self, key: Key, mut pending: Pending) {
        let (namespace, name) = (key.0.as_str(), key.1.as_str());
        let Some(policy) = self.policy.get() else {
            return;
        };
        if !policy.secret_names().contains(name)
            || policy.source_namespace != pending.source_namespace
        {
            debug!(%namespace, secret = name, "policy no longer names this copy; dropped");
            return;
        }
        if namespace == pending.source_namespace {
            return;
        }
        match self.namespaces.exists(namespace) {
            Some(true) => pending.namespace_seen = true,
            // Never seen: allow the cache a moment to learn of a brand-new namespace.
            Some(false) if pending.namespace_seen || pending.queued.elapsed() > NAMESPACE_GRACE => {
                debug!(%namespace, secret = name, "namespace gone; copy dropped");
                return;
            }
            _ => {}
        }
        let reschedule = |mut pending: Pending| {
            pending.attempts += 1;
            pending.due = Instant::now() + retry_delay(pending.attempts, &key);
            let mut inner = self.lock();
            if !inner.pending.contains_key(&key) {
                inner.pending.insert(key.clone(), pending);
            }
        };
        let Some(store) = self.secrets.store(name) else {
            reschedule(pending);
            return;
        };
        if secrets::get(&store, namespace, name).is_some() || self.recently_created(&key) {
            return;
        }
        let Some(source) = secrets::get(&store, &pending.source_namespace, name)
            .filter(|s| copy::is_pull_secret_type(s))
        else {
            debug!(%namespace, secret = name, "source missing or not a pull secret; copy dropped");
            return;
        };
        if self.namespaces.terminating(namespace) {
            reschedule(pending);
            return;
        }
        let outcome = self
            .create_shared(namespace, name, &pending.source_namespace, source)
            .await;
        if let CreateOutcome::Failed(_) = outcome {
            // The create task queued it afresh; keep this entry's attempt count instead.
            self.lock().pending.remove(&key);
            reschedule(pending);
        }
    }

    // ---- following the source ----------------------------------------------------------

    /// Brings every managed copy of `name` to its source's content. False when a write
    /// failed (the name is reconciled again after a delay).
    async fn reconcile(&self, name: &str) -> bool {
        let Some(policy) = self.policy.get() else {
            return true;
        };
        if !policy.secret_names().contains(name) {
            return true;
        }
        let source_ns = policy.source_namespace.clone();
        let Some(store) = self.secrets.store(name) else {
            return true;
        };
        let source = secrets::get(&store, &source_ns, name);
        let problem = match &source {
            None => Some("not found"),
            Some(s) if !copy::is_pull_secret_type(s) => Some("not of a pull secret type"),
            Some(_) => None,
        };
        // Said once per change of state, not on every event.
        let reported = self.lock().source_problems.get(name).copied();
        if problem != reported {
            let mut inner = self.lock();
            match problem {
                Some(problem) => {
                    warn!(secret = name, source = %copy::source_ref(&source_ns, name), problem, "source secret unusable; nothing is copied, copies are left as they are");
                    inner.source_problems.insert(name.to_string(), problem);
                }
                None => {
                    inner.source_problems.remove(name);
                }
            }
        }
        let Some(source) = source.filter(|_| problem.is_none()) else {
            return true;
        };
        let work: Vec<Arc<Secret>> = store
            .state()
            .into_iter()
            .filter(|s| {
                s.metadata
                    .namespace
                    .as_deref()
                    .is_some_and(|ns| ns != source_ns)
            })
            .filter(|s| copy::is_managed(s))
            .filter(|s| copy::compare(s, &source, &source_ns) != CopyState::Current)
            .filter(|s| {
                !self
                    .namespaces
                    .terminating(s.metadata.namespace.as_deref().unwrap_or_default())
            })
            .collect();
        if work.is_empty() {
            return true;
        }
        debug!(
            secret = name,
            copies = work.len(),
            "bringing copies up to date"
        );
        let results: Vec<bool> = stream::iter(work)
            .map(|copy| self.repair(copy, &source, &source_ns, name))
            .buffer_unordered(PARALLEL_WRITES)
            .collect()
            .await;
        results.into_iter().all(|ok| ok)
    }

    async fn repair(
        &self,
        copy: Arc<Secret>,
        source: &Secret,
        source_ns: &str,
        name: &str,
    ) -> bool {
        let namespace = copy.metadata.namespace.clone().unwrap_or_default();
        let api = self.api(&namespace);
        let mut current: Secret = (*copy).clone();
        // A few rounds: each 409 means someone else wrote in between; re-read and re-compare.
        for _ in 0..4 {
            let state = copy::compare(&current, source, source_ns);
            let result = match state {
                CopyState::Current => return true,
                CopyState::TypeChanged => {
                    self.recreate(&api, &current, source, source_ns, name).await
                }
                CopyState::Stale | CopyState::Drifted => {
                    let updated = copy::updated_copy(&current, source, source_ns, name);
                    timed(api.replace(name, &PostParams::default(), &updated))
                        .await
                        .map(|_| ())
                }
            };
            match result {
                Ok(()) => {
                    self.metrics.copy("updated");
                    if state == CopyState::Drifted {
                        self.metrics.drift_repaired.inc();
                        info!(%namespace, secret = name, "copy had been edited; restored from its source");
                    } else {
                        info!(%namespace, secret = name, ?state, "copy updated from its source");
                    }
                    return true;
                }
                Err(Failure::Conflict) => match timed(api.get_opt(name)).await {
                    Ok(Some(latest)) if copy::is_managed(&latest) => current = latest,
                    Ok(_) => return true,
                    Err(err) => return self.repair_failed(&namespace, name, err),
                },
                Err(Failure::NotFound) => return true,
                Err(err) => return self.repair_failed(&namespace, name, err),
            }
        }
        self.repair_failed(
            &namespace,
            name,
            Failure::Other(CopyError::Transport("too many conflicts".into())),
        )
    }

    fn repair_failed(&self, namespace: &str, name: &str, failure: Failure) -> bool {
        self.metrics.copy("failed");
        warn!(%namespace, secret = name, error = %failure, "copy update failed; will retry");
        false
    }

    /// `type` is immutable: delete the old copy (only the exact object we compared) and
    /// create a fresh one.
    async fn recreate(
        &self,
        api: &Api<Secret>,
        current: &Secret,
        source: &Secret,
        source_ns: &str,
        name: &str,
    ) -> Result<(), Failure> {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: current.metadata.uid.clone(),
                resource_version: current.metadata.resource_version.clone(),
            }),
            ..DeleteParams::default()
        };
        match timed(api.delete(name, &params)).await {
            Ok(_) | Err(Failure::NotFound) => {}
            Err(other) => return Err(other),
        }
        let namespace = current.metadata.namespace.clone().unwrap_or_default();
        let fresh = copy::build_copy(source, source_ns, name, &namespace);
        match timed(api.create(&PostParams::default(), &fresh)).await {
            // Another replica recreated it first.
            Ok(_) | Err(Failure::AlreadyExists) => Ok(()),
            Err(other) => Err(other),
        }
    }
}

#[derive(Debug, Error)]
enum Failure {
    #[error("conflict")]
    Conflict,
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    AlreadyExists,
    #[error(transparent)]
    Other(CopyError),
}

async fn timed<T>(
    call: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(API_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(match api_status(&err) {
            Some(s) if s.is_conflict() => Failure::Conflict,
            Some(s) if s.is_not_found() => Failure::NotFound,
            Some(s) if s.is_already_exists() => Failure::AlreadyExists,
            _ => Failure::Other(CopyError::from_kube(err)),
        }),
        Err(_) => Err(Failure::Other(CopyError::Timeout)),
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl SecretEnsurer for Copier {
    fn ensure<'a>(
        &'a self,
        namespace: &'a str,
        needs: &'a [SecretNeed],
        deadline: Duration,
    ) -> BoxFuture<'a, Vec<String>> {
        Box::pin(async move {
            let until = Instant::now() + deadline;
            let each = needs
                .iter()
                .map(|need| self.ensure_one(namespace, need, until));
            let mut warnings: Vec<String> = futures::future::join_all(each)
                .await
                .into_iter()
                .flatten()
                .collect();
            warnings.extend(needs.iter().filter_map(|need| self.expired_token(need)));
            warnings
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_grows_and_is_bounded() {
        let key = ("ns".to_string(), "s".to_string());
        let first = retry_delay(0, &key);
        assert!(first >= RETRY_MIN && first <= RETRY_MIN + RETRY_MIN / 4);
        let later = retry_delay(3, &key);
        assert!(later >= RETRY_MIN * 8);
        for attempts in [10, 20, 40, u32::MAX] {
            let d = retry_delay(attempts, &key);
            assert!(d >= RETRY_MAX && d <= RETRY_MAX + RETRY_MAX / 4, "{d:?}");
        }
    }
}
