//! The end of a copy's life: a managed copy that no rule gives its namespace any more, and
//! that no Pod or ServiceAccount there references, is deleted after a grace period.
//!
//! Safety, in order, before every delete: the copy is a candidate for the whole grace period
//! (a policy edit undone at once deletes nothing); it carries our label, a source annotation
//! of its own name and content unchanged since we wrote it ([`copy::deletable_copy`]); no
//! ServiceAccount of the namespace lists it (watch cache) and no Pod there names it (one
//! paginated list of that namespace's Pods, made only now); and the delete carries the uid and
//! resourceVersion of exactly the object checked, so any write in between makes it fail.
//! A Secret we do not manage is never a candidate.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::copy;
use super::namespaces::NamespaceCache;
use super::secrets::SecretCaches;
use super::service_accounts::ServiceAccountCache;
use crate::coverage;
use crate::metrics::Metrics;
use crate::state::{NamespaceLabels, PolicyStore};

const API_TIMEOUT: Duration = Duration::from_secs(10);
/// Pods per list request at prune time.
const POD_PAGE: u32 = 500;
/// A copy kept because something references it is looked at again after at most this long.
const RECHECK_MAX: Duration = Duration::from_secs(300);

type Key = (String, String);

struct Candidate {
    /// When it is next looked at (the first time: when the grace period ends).
    due: Instant,
    looks: u32,
    /// Why it was last kept (said once per reason).
    kept_for: Option<String>,
}

pub(crate) struct Pruner {
    pub(crate) client: kube::Client,
    pub(crate) instance: Option<String>,
    pub(crate) policy: Arc<PolicyStore>,
    pub(crate) namespaces: Arc<NamespaceCache>,
    pub(crate) secrets: Arc<SecretCaches>,
    pub(crate) accounts: Arc<ServiceAccountCache>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) webhook_namespace: String,
    pub(crate) grace: Duration,
}

enum Verdict {
    Deleted,
    Gone,
    Kept(String),
    /// Try again soon (a failed call, a write in between).
    Retry,
}

impl Pruner {
    pub(crate) async fn run(self) {
        let recorder = Recorder::new(
            self.client.clone(),
            Reporter {
                controller: copy::MANAGED_BY.to_string(),
                instance: self.instance.clone(),
            },
        );
        let every = (self.grace / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut candidates: HashMap<Key, Candidate> = HashMap::new();
        loop {
            tick.tick().await;
            self.scan(&recorder, &mut candidates).await;
        }
    }

    /// Managed copies of the policy's names that no rule gives their namespace any more.
    fn candidates_now(&self) -> Vec<Arc<Secret>> {
        let Some(policy) = self.policy.get() else {
            return Vec::new();
        };
        // Decide only on complete caches.
        if !self.namespaces.synced() || !self.accounts.synced() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for name in policy.secret_names() {
            let Some(store) = self.secrets.store(&name, &policy.source_namespace) else {
                continue;
            };
            for secret in store.state() {
                let Some(ns) = secret.metadata.namespace.as_deref() else {
                    continue;
                };
                if ns == policy.source_namespace
                    || !copy::is_managed(&secret)
                    || self.namespaces.exists(ns) != Some(true)
                    || self.namespaces.terminating(ns)
                {
                    continue;
                }
                let labels = self.namespaces.labels(ns);
                if coverage::copy_wanted(
                    &policy,
                    &name,
                    ns,
                    labels.as_ref(),
                    &self.webhook_namespace,
                ) == Some(false)
                {
                    out.push(secret);
                }
            }
        }
        out
    }

    async fn scan(&self, recorder: &Recorder, candidates: &mut HashMap<Key, Candidate>) {
        let now = Instant::now();
        let found = self.candidates_now();
        let keys: HashSet<Key> = found.iter().map(|s| key_of(s)).collect();
        // No longer a candidate (the rule applies again, the copy went): forgotten, so a
        // later candidacy gets a full grace period again.
        candidates.retain(|(namespace, secret), _| {
            let still = keys.contains(&(namespace.clone(), secret.clone()));
            if !still {
                debug!(%namespace, %secret, "copy is no longer a candidate for deletion");
            }
            still
        });
        for secret in found {
            let key = key_of(&secret);
            let candidate = candidates.entry(key.clone()).or_insert_with(|| {
                debug!(namespace = %key.0, secret = %key.1, grace = ?self.grace, "copy no longer given to its namespace; deleting after the grace period");
                Candidate {
                    due: now + self.grace,
                    looks: 0,
                    kept_for: None,
                }
            });
            if candidate.due > now {
                continue;
            }
            match self.decide(recorder, &secret).await {
                Verdict::Deleted | Verdict::Gone => {
                    candidates.remove(&key);
                }
                Verdict::Kept(why) => {
                    if candidate.kept_for.as_deref() != Some(why.as_str()) {
                        info!(namespace = %key.0, secret = %key.1, reason = %why, "copy that no rule gives this namespace any more is kept");
                        candidate.kept_for = Some(why);
                    }
                    candidate.looks += 1;
                    candidate.due = Instant::now() + self.recheck(candidate.looks);
                }
                Verdict::Retry => {
                    candidate.looks += 1;
                    candidate.due = Instant::now() + self.recheck(candidate.looks).min(self.grace);
                }
            }
        }
    }

    /// The grace period, doubling per look, bounded.
    fn recheck(&self, looks: u32) -> Duration {
        let base = self.grace.max(Duration::from_secs(1));
        base.saturating_mul(1u32 << looks.min(10))
            .min(RECHECK_MAX.max(base))
    }

    async fn decide(&self, recorder: &Recorder, secret: &Secret) -> Verdict {
        let (namespace, name) = key_of(secret);
        if !copy::deletable_copy(secret) {
            return Verdict::Kept(
                "it was edited since it was written, or its source annotation does not name it"
                    .to_string(),
            );
        }
        if let Some(sa) = self.accounts.references(&namespace, &name) {
            return Verdict::Kept(format!("ServiceAccount {sa} lists it"));
        }
        match self.pod_referencing(&namespace, &name).await {
            Ok(Some(pod)) => return Verdict::Kept(format!("Pod {pod} references it")),
            Ok(None) => {}
            Err(error) => {
                warn!(%namespace, secret = %name, %error, "cannot list Pods; copy not deleted");
                return Verdict::Retry;
            }
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: secret.metadata.uid.clone(),
                resource_version: secret.metadata.resource_version.clone(),
            }),
            ..DeleteParams::default()
        };
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
        match tokio::time::timeout(API_TIMEOUT, api.delete(&name, &params)).await {
            Ok(Ok(_)) => {
                self.metrics.copy("pruned");
                info!(%namespace, secret = %name, "copy deleted: no rule gives this namespace the secret and nothing references it");
                self.record(recorder, secret).await;
                Verdict::Deleted
            }
            Ok(Err(kube::Error::Api(status))) if status.code == 404 => Verdict::Gone,
            Ok(Err(kube::Error::Api(status))) if status.code == 409 => {
                debug!(%namespace, secret = %name, "copy changed since it was checked; not deleted");
                Verdict::Retry
            }
            Ok(Err(error)) => {
                warn!(%namespace, secret = %name, %error, "copy not deleted; will retry");
                Verdict::Retry
            }
            Err(_) => {
                warn!(%namespace, secret = %name, "copy delete timed out; will retry");
                Verdict::Retry
            }
        }
    }

    /// The first Pod of `namespace` whose `imagePullSecrets` name `secret`.
    async fn pod_referencing(
        &self,
        namespace: &str,
        secret: &str,
    ) -> Result<Option<String>, String> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let mut params = ListParams::default().limit(POD_PAGE);
        loop {
            let page = match tokio::time::timeout(API_TIMEOUT, api.list(&params)).await {
                Ok(Ok(page)) => page,
                Ok(Err(error)) => return Err(error.to_string()),
                Err(_) => return Err("timed out".to_string()),
            };
            for pod in &page.items {
                let names = pod
                    .spec
                    .iter()
                    .flat_map(|s| s.image_pull_secrets.iter().flatten());
                if names.into_iter().any(|r| r.name == secret) {
                    return Ok(Some(pod.metadata.name.clone().unwrap_or_default()));
                }
            }
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => params = params.continue_token(&token),
                _ => return Ok(None),
            }
        }
    }

    async fn record(&self, recorder: &Recorder, secret: &Secret) {
        let (namespace, name) = key_of(secret);
        let reference = ObjectReference {
            api_version: Some("v1".to_string()),
            kind: Some("Secret".to_string()),
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            uid: secret.metadata.uid.clone(),
            resource_version: secret.metadata.resource_version.clone(),
            ..ObjectReference::default()
        };
        let event = Event {
            type_: EventType::Normal,
            reason: "CopyPruned".to_string(),
            note: Some(format!(
                "Deleted copy {namespace}/{name}: no policy rule gives this namespace the Secret any more and no Pod or ServiceAccount here references it"
            )),
            action: "PruneCopy".to_string(),
            secondary: None,
        };
        match tokio::time::timeout(API_TIMEOUT, recorder.publish(&event, &reference)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => warn!(%namespace, secret = %name, %error, "could not record event"),
            Err(_) => warn!(%namespace, secret = %name, "recording event timed out"),
        }
    }
}

fn key_of(secret: &Secret) -> Key {
    (
        secret.metadata.namespace.clone().unwrap_or_default(),
        secret.metadata.name.clone().unwrap_or_default(),
    )
}
