//! What an admission does: look in the watch cache, create a missing copy once (shared by
//! concurrent admissions), within the request's deadline. Failures go to the retry queue.

use std::sync::Arc;
use std::time::Duration;

use futures::future::{BoxFuture as FutBox, FutureExt, Shared};
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::runtime::events::{Event, EventType};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::writes::{CopyError, api_status};
use super::{API_TIMEOUT, CACHE_POLL, Copier, CreateOutcome, Key, RECENT_TTL, copy};
use crate::k8s::secrets;
use crate::plan::SecretNeed;
use crate::state::{BoxFuture, SecretEnsurer};

impl Copier {
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
        let Some(store) = self.secrets.store(name, source_ns) else {
            self.enqueue(namespace, name, source_ns, 0);
            return Some(format!(
                "secret {name} is not cached yet; its copy in {namespace} will be made in the background"
            ));
        };
        let Some(source) = secrets::source(&store, source_ns, name) else {
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
        let store = self.secrets.store(&need.name, &need.source_namespace)?;
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

    pub(super) fn recently_created(&self, key: &Key) -> bool {
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
            let writes = self.writes.clone();
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
                match tokio::time::timeout(API_TIMEOUT, writes.publish(&event, &reference)).await {
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
    pub(super) fn create_shared(
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
        let result = tokio::time::timeout(API_TIMEOUT, self.writes.create(namespace, &copy)).await;
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
