//! ServiceAccount mode: rules with `serviceAccounts:` keep their Secret listed in the
//! `imagePullSecrets` of those ServiceAccounts (and the copy in the namespace), so Pods get
//! their credentials from the ServiceAccount admission plugin even while the webhook is down.
//!
//! Level-triggered: a ServiceAccount event reconciles its namespace; a namespace event, a
//! policy change, the first list and every re-list after a watch restart reconcile all of
//! them. What a ServiceAccount must become is decided by [`crate::coverage`] (pure); this
//! file reads the caches, writes conditional JSON patches, and on 422 (the `test` of the
//! resourceVersion failed: someone wrote in between) or 409 re-reads and recomputes.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::WatchBackoff;
use super::namespaces::NamespaceCache;
use crate::coverage;
use crate::state::{Health, PolicyStore, SecretEnsurer};

/// Bound on one API call.
const API_TIMEOUT: Duration = Duration::from_secs(10);
/// Budget for the copies one namespace needs (failures are retried by the copier).
const COPY_DEADLINE: Duration = Duration::from_secs(5);
/// Events arriving this close together are handled in one pass.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// Rounds of re-read and recompute after a refused conditional write.
const WRITE_ATTEMPTS: usize = 5;
/// A full pass now and then, whatever the watches said.
const RESYNC: Duration = Duration::from_secs(300);
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// What to look at again.
#[derive(Debug)]
enum Trigger {
    All,
    Namespace(String),
}

/// The ServiceAccount watch cache, also read by the prune of copies (references).
pub(crate) struct ServiceAccountCache {
    store: Store<ServiceAccount>,
    synced: AtomicBool,
}

impl ServiceAccountCache {
    pub(crate) fn synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
    }

    /// Whether a ServiceAccount of `namespace` lists `secret` in its `imagePullSecrets`.
    pub(crate) fn references(&self, namespace: &str, secret: &str) -> Option<String> {
        self.store
            .state()
            .iter()
            .filter(|sa| sa.metadata.namespace.as_deref() == Some(namespace))
            .find(|sa| coverage::listed(sa).iter().any(|n| n == secret))
            .and_then(|sa| sa.metadata.name.clone())
    }

    fn by_namespace(&self) -> HashMap<String, Vec<Arc<ServiceAccount>>> {
        let mut out: HashMap<String, Vec<Arc<ServiceAccount>>> = HashMap::new();
        for sa in self.store.state() {
            if let Some(ns) = sa.metadata.namespace.clone() {
                out.entry(ns).or_default().push(sa);
            }
        }
        out
    }
}

pub(crate) struct Controller {
    client: kube::Client,
    policy: Arc<PolicyStore>,
    namespaces: Arc<NamespaceCache>,
    accounts: Arc<ServiceAccountCache>,
    ensurer: Arc<dyn SecretEnsurer>,
    webhook_namespace: String,
}

/// Starts the ServiceAccount watch and the controller. Returns the cache (for prune) and
/// the two tasks.
pub(crate) fn start(
    client: kube::Client,
    policy: Arc<PolicyStore>,
    namespaces: Arc<NamespaceCache>,
    ensurer: Arc<dyn SecretEnsurer>,
    webhook_namespace: String,
    health: Arc<Health>,
) -> (Arc<ServiceAccountCache>, Vec<JoinHandle<()>>) {
    let (store, writer) = reflector::store();
    let accounts = Arc::new(ServiceAccountCache {
        store,
        synced: AtomicBool::new(false),
    });
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    health.pending("serviceaccounts", "ServiceAccount cache not synced yet");
    let watch = tokio::spawn(watch(client.clone(), writer, accounts.clone(), tx, health));
    let controller = Controller {
        client,
        policy,
        namespaces,
        accounts: accounts.clone(),
        ensurer,
        webhook_namespace,
    };
    (accounts, vec![watch, tokio::spawn(controller.run(rx))])
}

async fn watch(
    client: kube::Client,
    writer: reflector::store::Writer<ServiceAccount>,
    accounts: Arc<ServiceAccountCache>,
    triggers: UnboundedSender<Trigger>,
    health: Arc<Health>,
) {
    let api: Api<ServiceAccount> = Api::all(client);
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .backoff(WatchBackoff::new());
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::InitDone) => {
                if !accounts.synced.swap(true, Ordering::SeqCst) {
                    info!(count = accounts.store.len(), "ServiceAccount cache synced");
                }
                health.ready(
                    "serviceaccounts",
                    format!("{} ServiceAccounts cached", accounts.store.len()),
                );
                // A first list or a re-list after a watch restart: everything is worth a look.
                let _ = triggers.send(Trigger::All);
            }
            Ok(watcher::Event::Apply(sa) | watcher::Event::Delete(sa)) => {
                if let Some(ns) = sa.metadata.namespace {
                    let _ = triggers.send(Trigger::Namespace(ns));
                }
            }
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
            Err(error) => warn!(%error, "ServiceAccount watch failed; retrying"),
        }
    }
}

fn retry_delay(attempts: u32) -> Duration {
    RETRY_MIN
        .saturating_mul(1u32 << attempts.min(8))
        .min(RETRY_MAX)
}

impl Controller {
    async fn run(self, mut triggers: UnboundedReceiver<Trigger>) {
        let mut namespace_changes = self.namespaces.subscribe();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut generation = 0;
        let mut all = false;
        let mut dirty: BTreeSet<String> = BTreeSet::new();
        let mut retry: HashMap<String, (u32, Instant)> = HashMap::new();
        let mut last_full = Instant::now();
        loop {
            tokio::select! {
                msg = triggers.recv() => match msg {
                    Some(Trigger::All) => all = true,
                    Some(Trigger::Namespace(ns)) => { dirty.insert(ns); }
                    None => return,
                },
                changed = namespace_changes.changed() => {
                    if changed.is_err() { return; }
                    all = true;
                }
                _ = tick.tick() => {}
            }
            tokio::time::sleep(DEBOUNCE).await;
            while let Ok(msg) = triggers.try_recv() {
                match msg {
                    Trigger::All => all = true,
                    Trigger::Namespace(ns) => {
                        dirty.insert(ns);
                    }
                }
            }
            if namespace_changes.has_changed().unwrap_or(false) {
                namespace_changes.borrow_and_update();
                all = true;
            }
            if self.policy.generation() != generation {
                all = true;
            }
            if last_full.elapsed() >= RESYNC {
                all = true;
            }
            let now = Instant::now();
            dirty.extend(
                retry
                    .iter()
                    .filter(|(_, (_, at))| *at <= now)
                    .map(|(ns, _)| ns.clone()),
            );
            if !all && dirty.is_empty() {
                continue;
            }
            // Decide only on complete caches: a namespace not listed yet is not "gone".
            if !self.accounts.synced() || !self.namespaces.synced() {
                continue;
            }
            let Some(policy) = self.policy.get() else {
                continue;
            };
            generation = self.policy.generation();
            let mut accounts = self.accounts.by_namespace();
            let full = std::mem::take(&mut all);
            let work: BTreeSet<String> = if full {
                last_full = Instant::now();
                let mut every: BTreeSet<String> = self.namespaces.names().into_iter().collect();
                every.extend(accounts.keys().cloned());
                dirty.clear();
                every
            } else {
                std::mem::take(&mut dirty)
            };
            let namespaces = work.len();
            for ns in work {
                let sas = accounts.remove(&ns).unwrap_or_default();
                if self.reconcile_namespace(&policy, &ns, sas).await {
                    retry.remove(&ns);
                } else {
                    let attempts = retry.get(&ns).map_or(0, |(a, _)| a + 1);
                    retry.insert(ns, (attempts, Instant::now() + retry_delay(attempts)));
                }
            }
            debug!(
                full,
                namespaces,
                retrying = retry.len(),
                "ServiceAccount pass done"
            );
        }
    }

    /// Brings the copies and every ServiceAccount of `namespace` in line. False when a write
    /// failed (the namespace is looked at again after a delay).
    async fn reconcile_namespace(
        &self,
        policy: &crate::policy::Policy,
        namespace: &str,
        accounts: Vec<Arc<ServiceAccount>>,
    ) -> bool {
        if self.namespaces.exists(namespace) != Some(true) || self.namespaces.terminating(namespace)
        {
            return true;
        }
        let labels = crate::state::NamespaceLabels::labels(&*self.namespaces, namespace);
        let needs = coverage::service_account_copies(
            policy,
            namespace,
            labels.as_ref(),
            &self.webhook_namespace,
        );
        if !needs.is_empty() {
            // The copier reports unmanaged Secrets (once) and retries failures itself.
            for note in self.ensurer.ensure(namespace, &needs, COPY_DEADLINE).await {
                debug!(%namespace, %note, "copy for ServiceAccount mode");
            }
        }
        let mut ok = true;
        for sa in accounts {
            let name = sa.metadata.name.clone().unwrap_or_default();
            let wanted = coverage::wanted(
                policy,
                namespace,
                labels.as_ref(),
                &name,
                &self.webhook_namespace,
            );
            if coverage::change(&sa, &wanted).is_some() {
                ok &= self.write(namespace, &name, (*sa).clone(), &wanted).await;
            }
        }
        ok
    }

    /// Writes the change `wanted` makes to one ServiceAccount, conditionally; re-reads and
    /// recomputes when someone wrote first.
    async fn write(
        &self,
        namespace: &str,
        name: &str,
        mut current: ServiceAccount,
        wanted: &coverage::Wanted,
    ) -> bool {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        for _ in 0..WRITE_ATTEMPTS {
            let Some(change) = coverage::change(&current, wanted) else {
                return true;
            };
            let patch = coverage::patch(&current, &change);
            let sent = tokio::time::timeout(
                API_TIMEOUT,
                api.patch(name, &PatchParams::default(), &Patch::Json::<()>(patch)),
            )
            .await;
            let refused = match sent {
                Ok(Ok(_)) => {
                    info!(
                        %namespace,
                        service_account = name,
                        appended = ?change.appended,
                        removed = ?change.removed,
                        "ServiceAccount imagePullSecrets updated"
                    );
                    return true;
                }
                Ok(Err(kube::Error::Api(status))) if status.code == 404 => return true,
                // 422: our `test` of the resourceVersion failed; 409: a conflict.
                Ok(Err(kube::Error::Api(status))) if status.code == 422 || status.code == 409 => {
                    status.code
                }
                Ok(Err(error)) => {
                    warn!(%namespace, service_account = name, %error, "ServiceAccount not updated; will retry");
                    return false;
                }
                Err(_) => {
                    warn!(%namespace, service_account = name, "ServiceAccount update timed out; will retry");
                    return false;
                }
            };
            debug!(%namespace, service_account = name, code = refused, "ServiceAccount changed meanwhile; re-reading");
            match tokio::time::timeout(API_TIMEOUT, api.get_opt(name)).await {
                Ok(Ok(Some(latest))) => current = latest,
                Ok(Ok(None)) => return true,
                Ok(Err(error)) => {
                    warn!(%namespace, service_account = name, %error, "ServiceAccount re-read failed; will retry");
                    return false;
                }
                Err(_) => return false,
            }
        }
        warn!(%namespace, service_account = name, "ServiceAccount kept changing; will retry");
        false
    }
}
