//! Keeps every `tokenSources` Secret in the source namespace filled with a fresh credential.
//!
//! Reads come from the per-name Secret watches (the same caches the copies use); copies follow
//! a refresh through the normal copy path, because a refresh is just a change of the source.
//! Several replicas mint once between them: each decides from the Secret alone (its minted-at
//! and expires-at), writes carry the resourceVersion they were computed from, and a 409 means
//! another replica got there first. A failed mint leaves the Secret as it is and is retried
//! with backoff; a Secret of that name that we do not manage is never written.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::Api;
use kube::api::PostParams;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::secrets::{self, SecretCaches};
use crate::metrics::Metrics;
use crate::policy::TokenSource;
use crate::state::PolicyStore;
use crate::tokens::{self, Freshness, MintError, Minter};

/// How often the token Secrets are looked at (in the caches; no API call unless one is due).
const TICK: Duration = Duration::from_millis(500);
/// Bound on one mint (a few calls to the cloud) and on one write.
const MINT_TIMEOUT: Duration = Duration::from_secs(30);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How long a Secret we just wrote is waited for in the cache before it is looked at anew.
const WRITE_SETTLE: Duration = Duration::from_secs(10);

#[derive(Default)]
struct SourceState {
    /// This replica's draw in `[0, 1)` for the refresh jitter, fixed for the process.
    jitter: f64,
    failures: u32,
    retry_at: Option<Instant>,
    /// The resourceVersion we wrote last and when: until the cache shows it, no new decision.
    written: Option<(String, Instant)>,
    /// uid of an unmanaged Secret already reported.
    unmanaged: Option<String>,
}

pub(crate) struct TokenRefresher {
    client: kube::Client,
    recorder: Recorder,
    policy: Arc<PolicyStore>,
    secrets: Arc<SecretCaches>,
    metrics: Arc<Metrics>,
    minter: Arc<dyn Minter>,
    states: Mutex<HashMap<String, SourceState>>,
}

fn jitter_draw(name: &str) -> f64 {
    // A per-process random hash: replicas draw differently, and a replica keeps its draw.
    let h = std::collections::hash_map::RandomState::new().hash_one(name);
    (h % 10_000) as f64 / 10_000.0
}

impl TokenRefresher {
    pub(crate) fn new(
        client: kube::Client,
        instance: Option<String>,
        policy: Arc<PolicyStore>,
        secrets: Arc<SecretCaches>,
        metrics: Arc<Metrics>,
        minter: Arc<dyn Minter>,
    ) -> Arc<Self> {
        let reporter = Reporter {
            controller: super::MANAGED_BY.to_string(),
            instance,
        };
        Arc::new(Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            policy,
            secrets,
            metrics,
            minter,
            states: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SourceState>> {
        self.states.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(policy) = self.policy.get() else {
                continue;
            };
            {
                // Forget sources the policy dropped (their Secrets stay as they are).
                let mut states = self.lock();
                states.retain(|name, _| policy.token_source(name).is_some());
            }
            let due: Vec<(TokenSource, Option<Arc<Secret>>)> = policy
                .token_sources
                .iter()
                .filter_map(|source| {
                    self.due(source, &policy.source_namespace)
                        .map(|existing| (source.clone(), existing))
                })
                .collect();
            let namespace = policy.source_namespace.clone();
            futures::future::join_all(
                due.into_iter()
                    .map(|(source, existing)| self.refresh(source, existing, &namespace)),
            )
            .await;
        }
    }

    /// `Some(existing)` when `source` must be minted now.
    fn due(&self, source: &TokenSource, namespace: &str) -> Option<Option<Arc<Secret>>> {
        let name = source.secret.as_str();
        // Not decided before the watch has listed: a Secret that exists must not look missing.
        let store = self.secrets.store(name)?;
        let existing = secrets::get(&store, namespace, name);
        let now = Instant::now();
        let mut states = self.lock();
        let state = states
            .entry(name.to_string())
            .or_insert_with(|| SourceState {
                jitter: jitter_draw(name),
                ..SourceState::default()
            });
        if let Some((version, at)) = &state.written {
            let seen = existing
                .as_ref()
                .and_then(|s| s.metadata.resource_version.as_deref())
                == Some(version.as_str());
            if seen || at.elapsed() > WRITE_SETTLE {
                state.written = None;
            } else {
                return None;
            }
        }
        if let Some(secret) = &existing {
            self.metrics.token_expiry(name, tokens::expires_at(secret));
        }
        match tokens::freshness(
            existing.as_deref(),
            &source.provider,
            SystemTime::now(),
            state.jitter,
        ) {
            Freshness::Unmanaged => {
                let uid = existing
                    .as_ref()
                    .and_then(|s| s.metadata.uid.clone())
                    .unwrap_or_default();
                if state.unmanaged.as_deref() != Some(uid.as_str()) {
                    state.unmanaged = Some(uid);
                    drop(states);
                    self.report_unmanaged(namespace, name, existing.as_deref());
                }
                None
            }
            Freshness::Fresh { .. } => {
                state.unmanaged = None;
                None
            }
            Freshness::Missing | Freshness::Due => {
                state.unmanaged = None;
                if state.retry_at.is_some_and(|at| at > now) {
                    return None;
                }
                Some(existing)
            }
        }
    }

    async fn refresh(&self, source: TokenSource, existing: Option<Arc<Secret>>, namespace: &str) {
        let name = source.secret.as_str();
        let kind = source.provider.kind();
        debug!(
            secret = name,
            provider = kind,
            "minting registry credential"
        );
        let minted =
            match tokio::time::timeout(MINT_TIMEOUT, self.minter.mint(&source.provider)).await {
                Ok(Ok(minted)) => minted,
                Ok(Err(error)) => {
                    return self.mint_failed(&source, namespace, existing.as_deref(), error);
                }
                Err(_) => {
                    let error = MintError::Unreachable {
                        service: kind.to_string(),
                        detail: format!("no answer within {MINT_TIMEOUT:?}"),
                    };
                    return self.mint_failed(&source, namespace, existing.as_deref(), error);
                }
            };
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let result = match &existing {
            None => {
                let secret = tokens::build_secret(name, namespace, &source.provider, &minted);
                tokio::time::timeout(WRITE_TIMEOUT, api.create(&PostParams::default(), &secret))
                    .await
            }
            Some(current) => {
                // Carries the resourceVersion of what we decided on: a concurrent write wins.
                let secret = tokens::updated_secret(current, &source.provider, &minted);
                tokio::time::timeout(
                    WRITE_TIMEOUT,
                    api.replace(name, &PostParams::default(), &secret),
                )
                .await
            }
        };
        let expires = tokens::rfc3339(minted.expires_at);
        match result {
            Ok(Ok(written)) => {
                self.metrics.token_mint(name, kind, "minted");
                self.metrics.token_expiry(name, Some(minted.expires_at));
                info!(secret = name, provider = kind, expires_at = %expires, created = existing.is_none(), "registry credential minted");
                let mut states = self.lock();
                if let Some(state) = states.get_mut(name) {
                    state.failures = 0;
                    state.retry_at = None;
                    state.written = written
                        .metadata
                        .resource_version
                        .map(|v| (v, Instant::now()));
                }
            }
            Ok(Err(kube::Error::Api(status))) if status.code == 409 => {
                // AlreadyExists on create, Conflict on update: another replica (or a user) wrote
                // first. The watch shows what it wrote; the next look decides again.
                self.metrics.token_mint(name, kind, "lost_race");
                debug!(secret = name, reason = %status.reason, "another writer was first; minted credential discarded");
            }
            Ok(Err(error)) => {
                self.metrics.token_mint(name, kind, "write_failed");
                warn!(secret = name, %error, "token Secret not written; retrying");
                self.backoff(name);
            }
            Err(_) => {
                self.metrics.token_mint(name, kind, "write_failed");
                warn!(
                    secret = name,
                    "writing the token Secret timed out; retrying"
                );
                self.backoff(name);
            }
        }
    }

    /// Schedules the next attempt; returns how many failures in a row this is.
    fn backoff(&self, name: &str) -> u32 {
        let mut states = self.lock();
        let Some(state) = states.get_mut(name) else {
            return 0;
        };
        state.failures = state.failures.saturating_add(1);
        let base = BACKOFF_MIN
            .saturating_mul(1u32 << (state.failures - 1).min(10))
            .min(BACKOFF_MAX);
        let delay = base + base.mul_f64(state.jitter / 4.0);
        state.retry_at = Some(Instant::now() + delay);
        state.failures
    }

    fn mint_failed(
        &self,
        source: &TokenSource,
        namespace: &str,
        existing: Option<&Secret>,
        error: MintError,
    ) {
        let name = source.secret.as_str();
        let kind = source.provider.kind();
        self.metrics.token_mint_failure(name, kind, error.label());
        let failures = self.backoff(name);
        let kept = match existing.and_then(tokens::expires_at) {
            Some(at) => format!(
                "the last good credential (expires {}) stays",
                tokens::rfc3339(at)
            ),
            None => "no credential was written".to_string(),
        };
        warn!(secret = name, provider = kind, %error, failures, "minting failed; {kept}; retrying with backoff");
        // One Event at the start of a failure streak, then every tenth attempt.
        if failures == 1 || failures.is_multiple_of(10) {
            let note = format!("minting the {kind} credential failed ({error}); {kept}");
            self.publish(namespace, name, existing, "TokenMintFailed", note);
        }
    }

    fn report_unmanaged(&self, namespace: &str, name: &str, existing: Option<&Secret>) {
        self.metrics.unmanaged_conflicts.inc();
        warn!(%namespace, secret = name, "a Secret of this token source's name exists and is not managed by pullsecret-injector; it is left unchanged and not refreshed");
        let note = format!(
            "Secret {namespace}/{name} is not managed by pullsecret-injector; the token source does not write it"
        );
        self.publish(namespace, name, existing, "UnmanagedSecretExists", note);
    }

    fn publish(
        &self,
        namespace: &str,
        name: &str,
        existing: Option<&Secret>,
        reason: &str,
        note: String,
    ) {
        let reference = ObjectReference {
            api_version: Some("v1".to_string()),
            kind: Some("Secret".to_string()),
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            uid: existing.and_then(|s| s.metadata.uid.clone()),
            resource_version: existing.and_then(|s| s.metadata.resource_version.clone()),
            ..ObjectReference::default()
        };
        let event = Event {
            type_: EventType::Warning,
            reason: reason.to_string(),
            note: Some(note),
            action: "MintToken".to_string(),
            secondary: None,
        };
        let recorder = self.recorder.clone();
        let secret = name.to_string();
        tokio::spawn(async move {
            match tokio::time::timeout(WRITE_TIMEOUT, recorder.publish(&event, &reference)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => warn!(%secret, %error, "could not record event"),
                Err(_) => warn!(%secret, "recording event timed out"),
            }
        });
    }
}
