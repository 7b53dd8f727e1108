//! Keeps every `tokenSources` Secret in the source namespace filled with a fresh credential.
//!
//! Reads come from the per-name Secret watches (the same caches the copies use); copies follow
//! a refresh through the normal copy path, because a refresh is just a change of the source.
//! Several replicas mint once between them: each decides from the Secret alone (its minted-at
//! and expires-at), and before minting claims the refresh on the Secret itself with a
//! conditional write of [`ANNOTATION_MINTING`] (the resourceVersion it decided on): replicas
//! that decided on the same version race there, one write wins and the others get 409, which
//! means another replica won; they then see the claim, and next the fresh Secret, and do not
//! mint. No leader election: the Secret is the lock, held no longer than one mint and write.
//! A failed mint releases the claim, leaves the data as it is and is retried with backoff; a
//! Secret of that name that we do not manage is never written.

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
/// `<replica> <RFC 3339 instant>`: this replica is minting the Secret's next credential and
/// the others leave it alone until then. Never copied (copies carry type, data and expiry).
pub(crate) const ANNOTATION_MINTING: &str = "pullsecret-injector.io/minting";
/// How long a claim holds: one mint and one write. A replica that dies while minting blocks
/// the others no longer than this.
const CLAIM_TTL: Duration = MINT_TIMEOUT.saturating_add(WRITE_TIMEOUT);
/// After losing a claim race, how long before this replica looks again (its cache shows the
/// winner's claim within milliseconds).
const CLAIM_LOST_PAUSE: Duration = Duration::from_secs(1);

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
    /// Who this replica is in its claims: the instance name and a per-process draw, so that
    /// a restarted Pod of the same name does not take its predecessor's claim for its own.
    replica: String,
}

/// The claim on `secret`, if one holds at `now`: `(replica, until)`.
fn claim(secret: &Secret, now: SystemTime) -> Option<(&str, SystemTime)> {
    let value = secret
        .metadata
        .annotations
        .as_ref()?
        .get(ANNOTATION_MINTING)?;
    let (replica, until) = value.split_once(' ')?;
    let until = tokens::parse_rfc3339(until)?;
    (until > now).then_some((replica, until))
}

/// `secret` without a claim.
fn unclaimed(mut secret: Secret) -> Secret {
    if let Some(annotations) = secret.metadata.annotations.as_mut() {
        annotations.remove(ANNOTATION_MINTING);
    }
    secret.metadata.managed_fields = None;
    secret
}

/// How a claim write ended.
enum Claimed {
    /// This replica mints; the Secret as written with the claim.
    Won(Box<Secret>),
    /// 409: another replica (or a user) wrote since the version we decided on.
    Lost,
    Failed(String),
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
        let replica = format!(
            "{}-{:08x}",
            instance.as_deref().unwrap_or("serve"),
            std::collections::hash_map::RandomState::new().hash_one(std::process::id()) as u32
        );
        let reporter = Reporter {
            controller: super::MANAGED_BY.to_string(),
            instance,
        };
        Arc::new(Self {
            replica,
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
        let store = self.secrets.store(name, namespace)?;
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
                if let Some((replica, until)) = existing
                    .as_deref()
                    .and_then(|s| claim(s, SystemTime::now()))
                    .filter(|(replica, _)| *replica != self.replica)
                {
                    debug!(secret = name, replica, until = %tokens::rfc3339(until), "another replica is minting");
                    return None;
                }
                Some(existing)
            }
        }
    }

    async fn refresh(&self, source: TokenSource, existing: Option<Arc<Secret>>, namespace: &str) {
        let name = source.secret.as_str();
        let kind = source.provider.kind();
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        // An existing Secret is claimed first, so that only one replica mints. A missing one
        // cannot be (creating it empty would hand Pods a Secret without a credential): two
        // replicas starting together may both mint it once, and the second create is a 409.
        let existing = match existing {
            None => None,
            Some(current) => match self.claim(&api, name, &current).await {
                Claimed::Won(claimed) => Some(*claimed),
                Claimed::Lost => {
                    self.metrics.token_mint(name, kind, "lost_race");
                    debug!(
                        secret = name,
                        "another replica claimed this refresh first; not minting"
                    );
                    if let Some(state) = self.lock().get_mut(name) {
                        state.retry_at = Some(Instant::now() + CLAIM_LOST_PAUSE);
                    }
                    return;
                }
                Claimed::Failed(error) => {
                    self.metrics.token_mint(name, kind, "write_failed");
                    warn!(secret = name, %error, "could not claim the token Secret's refresh; retrying");
                    self.backoff(name);
                    return;
                }
            },
        };
        debug!(
            secret = name,
            provider = kind,
            "minting registry credential"
        );
        let failed =
            match tokio::time::timeout(MINT_TIMEOUT, self.minter.mint(&source.provider)).await {
                Ok(Ok(minted)) => Ok(minted),
                Ok(Err(error)) => Err(error),
                Err(_) => Err(MintError::Unreachable {
                    service: kind.to_string(),
                    detail: format!("no answer within {MINT_TIMEOUT:?}"),
                }),
            };
        let minted = match failed {
            Ok(minted) => minted,
            Err(error) => {
                let kept = match existing {
                    Some(claimed) => Some(self.release(&api, name, claimed).await),
                    None => None,
                };
                return self.mint_failed(&source, namespace, kept.as_ref(), error);
            }
        };
        let result = match &existing {
            None => {
                let secret = tokens::build_secret(name, namespace, &source.provider, &minted);
                tokio::time::timeout(WRITE_TIMEOUT, api.create(&PostParams::default(), &secret))
                    .await
            }
            Some(current) => {
                // Carries the resourceVersion of our claim: a concurrent write wins.
                let secret = unclaimed(tokens::updated_secret(current, &source.provider, &minted));
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

    /// Marks `current` as being minted by this replica, conditional on its resourceVersion.
    async fn claim(&self, api: &Api<Secret>, name: &str, current: &Secret) -> Claimed {
        let until = SystemTime::now() + CLAIM_TTL;
        let mut claimed = unclaimed(current.clone());
        claimed
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(
                ANNOTATION_MINTING.to_string(),
                format!("{} {}", self.replica, tokens::rfc3339(until)),
            );
        match tokio::time::timeout(
            WRITE_TIMEOUT,
            api.replace(name, &PostParams::default(), &claimed),
        )
        .await
        {
            Ok(Ok(written)) => Claimed::Won(Box::new(written)),
            Ok(Err(kube::Error::Api(status))) if status.code == 409 => Claimed::Lost,
            Ok(Err(error)) => Claimed::Failed(error.to_string()),
            Err(_) => Claimed::Failed(format!("no answer within {WRITE_TIMEOUT:?}")),
        }
    }

    /// Takes our claim back after a failed mint, so that another replica (whose identity
    /// may work) can try; the data stays as it is. Best effort: a claim left behind expires.
    /// Returns the Secret as it now is, as far as this replica knows.
    async fn release(&self, api: &Api<Secret>, name: &str, claimed: Secret) -> Secret {
        let released = unclaimed(claimed.clone());
        match tokio::time::timeout(
            WRITE_TIMEOUT,
            api.replace(name, &PostParams::default(), &released),
        )
        .await
        {
            Ok(Ok(written)) => written,
            Ok(Err(error)) => {
                debug!(secret = name, %error, "claim not released; it expires by itself");
                claimed
            }
            Err(_) => claimed,
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::time::UNIX_EPOCH;

    fn claimed(value: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                annotations: Some([(ANNOTATION_MINTING.to_string(), value.to_string())].into()),
                ..ObjectMeta::default()
            },
            ..Secret::default()
        }
    }

    #[test]
    fn a_claim_holds_until_its_instant_and_a_malformed_one_is_none() {
        let until = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let secret = claimed(&format!("serve-0-1a2b3c4d {}", tokens::rfc3339(until)));
        let before = until - Duration::from_secs(1);
        assert_eq!(claim(&secret, before), Some(("serve-0-1a2b3c4d", until)));
        assert_eq!(claim(&secret, until), None, "expired at its instant");
        assert_eq!(claim(&claimed("serve-0"), before), None);
        assert_eq!(claim(&claimed("serve-0 tomorrow"), before), None);
        assert_eq!(claim(&Secret::default(), before), None);
    }

    #[test]
    fn the_written_credential_carries_no_claim() {
        let mut secret = claimed("serve-0 2030-01-01T00:00:00Z");
        secret
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert("team".into(), "kept".into());
        let out = unclaimed(secret);
        let annotations = out.metadata.annotations.unwrap();
        assert!(!annotations.contains_key(ANNOTATION_MINTING));
        assert_eq!(annotations["team"], "kept");
    }
}
