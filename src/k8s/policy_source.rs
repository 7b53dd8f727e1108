//! The policy from a ConfigMap in the webhook's namespace, watched by name (field selector
//! `metadata.name`, so RBAC can restrict it with `resourceNames`). A bad edit keeps the last
//! good policy and shows in the log, `policy_reload_errors` and /readyz detail.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tracing::{error, info, warn};

use super::WatchBackoff;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::state::{Health, PolicyStore};

/// Key of the policy document in its ConfigMap: `serve` watches it, `audit` and `diagnose`
/// read it once.
pub(crate) const POLICY_KEY: &str = "policy.yaml";

pub(crate) struct ConfigMapPolicy {
    pub(crate) client: kube::Client,
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) policy: Arc<PolicyStore>,
    pub(crate) health: Arc<Health>,
    pub(crate) metrics: Arc<Metrics>,
}

impl ConfigMapPolicy {
    pub(crate) async fn run(self) {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={}", self.name));
        let mut stream = std::pin::pin!(watcher(api, config).backoff(WatchBackoff::new()));
        // The last text we acted on: a re-list or an unrelated metadata change does not reload.
        let mut last_text: Option<Option<String>> = None;
        let mut seen_in_list = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init) => seen_in_list = false,
                Ok(watcher::Event::InitApply(cm)) => {
                    seen_in_list = true;
                    self.apply(&cm, &mut last_text);
                }
                Ok(watcher::Event::Apply(cm)) => self.apply(&cm, &mut last_text),
                Ok(watcher::Event::InitDone) => {
                    if !seen_in_list {
                        self.missing("not found");
                    }
                }
                Ok(watcher::Event::Delete(_)) => {
                    last_text = None;
                    self.missing("deleted");
                }
                Err(err) => {
                    warn!(configmap = %self.origin(), error = %err, "policy ConfigMap watch failed; retrying")
                }
            }
        }
    }

    fn origin(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn missing(&self, what: &str) {
        let origin = self.origin();
        match self.policy.get() {
            Some(_) => {
                warn!(configmap = %origin, "policy ConfigMap {what}; keeping the last good policy");
                self.health.ready(
                    "policy",
                    format!(
                        "generation {} in use; ConfigMap {origin} {what}",
                        self.policy.generation()
                    ),
                );
            }
            None => {
                warn!(configmap = %origin, "policy ConfigMap {what}; no policy loaded");
                self.health
                    .not_ready("policy", format!("ConfigMap {origin} {what}"));
            }
        }
    }

    fn apply(&self, cm: &ConfigMap, last_text: &mut Option<Option<String>>) {
        let origin = self.origin();
        let text = cm.data.as_ref().and_then(|d| d.get(POLICY_KEY));
        if last_text.as_ref().is_some_and(|last| last.as_ref() == text) {
            return;
        }
        *last_text = Some(text.cloned());
        let resource_version = cm.metadata.resource_version.clone().unwrap_or_default();
        let result = match text {
            Some(text) => Policy::parse(text, &format!("configmap {origin} {POLICY_KEY}"))
                .map_err(|e| e.to_string()),
            None => Err(format!("ConfigMap {origin} has no key {POLICY_KEY}")),
        };
        match result {
            Ok(policy) => {
                let rules = policy.rules.len();
                let generation = self.policy.install(policy, &self.metrics);
                info!(configmap = %origin, %resource_version, generation, rules, "policy loaded");
                self.health.ready(
                    "policy",
                    format!("generation {generation} from ConfigMap {origin} (resourceVersion {resource_version})"),
                );
            }
            Err(problems) => {
                self.metrics.policy_reload_errors.inc();
                error!(
                    configmap = %origin,
                    %resource_version,
                    error = %problems,
                    "policy rejected; keeping the last good policy"
                );
                let first = problems.lines().next().unwrap_or_default().to_string();
                match self.policy.get() {
                    Some(_) => self.health.ready(
                        "policy",
                        format!(
                            "generation {} in use; resourceVersion {resource_version} rejected: {first}",
                            self.policy.generation()
                        ),
                    ),
                    None => self.health.not_ready("policy", format!("rejected: {first}")),
                }
            }
        }
    }
}
