//! Copies that could not be made at admission, retried with growing, jittered delays until
//! they succeed or are no longer needed; and the background loop that also runs repairs.

use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, stream};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::{
    Copier, CreateOutcome, Key, MAX_PENDING, NAMESPACE_GRACE, PARALLEL_WRITES, RECENT_TTL,
    RETRY_MAX, RETRY_MIN, copy,
};
use crate::k8s::secrets::{self, Trigger};

pub(super) struct Pending {
    source_namespace: String,
    attempts: u32,
    due: Instant,
    /// The namespace was seen in the cache once: its absence later means it was deleted.
    namespace_seen: bool,
    queued: Instant,
}

pub(super) fn retry_delay(attempts: u32, key: &impl std::hash::Hash) -> Duration {
    let base = RETRY_MIN
        .saturating_mul(1u32 << attempts.min(10))
        .min(RETRY_MAX);
    // Up to 25% jitter so that replicas and namespaces do not retry in lockstep.
    let jitter_ms = std::collections::hash_map::RandomState::new().hash_one(key)
        % (base.as_millis() as u64 / 4 + 1);
    base + Duration::from_millis(jitter_ms)
}

impl Copier {
    pub(super) fn enqueue(&self, namespace: &str, name: &str, source_ns: &str, attempts: u32) {
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
        let Some(store) = self.secrets.store(name, &pending.source_namespace) else {
            reschedule(pending);
            return;
        };
        if secrets::get(&store, namespace, name).is_some() || self.recently_created(&key) {
            return;
        }
        let Some(source) = secrets::source(&store, &pending.source_namespace, name)
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
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::super::API_TIMEOUT;
    use super::super::fake::{Answer, Harness, NAME, SOURCE_NS, TARGET_NS, policy};
    use super::*;
    use crate::plan::SecretNeed;
    use crate::state::SecretEnsurer;

    fn need() -> SecretNeed {
        SecretNeed {
            name: NAME.into(),
            source_namespace: SOURCE_NS.into(),
            rules: vec!["r".into()],
        }
    }

    /// The delay for `attempts` without jitter, and the most jitter can add.
    fn bounds(attempts: u32) -> (Duration, Duration) {
        let base = RETRY_MIN
            .saturating_mul(1 << attempts.min(10))
            .min(RETRY_MAX);
        (base, base + base / 4)
    }

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

    #[tokio::test(start_paused = true)]
    async fn a_failed_copy_is_retried_with_growing_delays_until_it_succeeds() {
        let h = Harness::start();
        h.writes.script(
            "create",
            &[
                Answer::Status(500, "InternalError"),
                Answer::Status(500, "InternalError"),
                Answer::Status(503, "ServiceUnavailable"),
            ],
        );
        let warnings = h
            .copier
            .ensure(TARGET_NS, &[need()], Duration::from_secs(1))
            .await;
        assert_eq!(
            warnings,
            vec![format!(
                "copy of Secret {NAME} into {TARGET_NS} failed (API error 500 InternalError); retrying in the background"
            )]
        );
        let calls = h.until_calls("create", 4).await;
        // Each retry waits longer than the one before: 400 ms, 800 ms, 1.6 s (+ jitter).
        for (i, pair) in calls.windows(2).enumerate() {
            let gap = pair[1].at - pair[0].at;
            let (low, high) = bounds(i as u32 + 1);
            assert!(
                gap >= low && gap <= high,
                "retry {i}: {gap:?} not in {low:?}..{high:?}"
            );
        }
        assert!(calls.iter().all(|c| c.namespace == TARGET_NS));
        // The fourth succeeded: nothing is queued any more, and no fifth create comes.
        tokio::time::sleep(RETRY_MAX * 4).await;
        assert_eq!(h.writes.calls("create").len(), 4);
        assert!(h.copier.lock().pending.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_copy_is_dropped_once_the_policy_no_longer_names_it() {
        let h = Harness::start();
        h.writes
            .script("create", &[Answer::Status(500, "InternalError"); 100]);
        h.copier
            .ensure(TARGET_NS, &[need()], Duration::from_secs(1))
            .await;
        h.until_calls("create", 2).await;
        h.policy.set(policy("other-secret", SOURCE_NS));
        // At most the retry already in flight; then nothing, however long we wait.
        tokio::time::sleep(RETRY_MAX * 2).await;
        let after_change = h.writes.calls("create").len();
        tokio::time::sleep(RETRY_MAX * 10).await;
        assert_eq!(h.writes.calls("create").len(), after_change);
        assert!(h.copier.lock().pending.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_copy_is_dropped_when_the_source_namespace_changes() {
        let h = Harness::start();
        h.writes
            .script("create", &[Answer::Status(500, "InternalError"); 100]);
        h.copier
            .ensure(TARGET_NS, &[need()], Duration::from_secs(1))
            .await;
        h.until_calls("create", 2).await;
        h.policy.set(policy(NAME, "elsewhere"));
        tokio::time::sleep(RETRY_MAX * 2).await;
        let after_change = h.writes.calls("create").len();
        tokio::time::sleep(RETRY_MAX * 10).await;
        assert_eq!(h.writes.calls("create").len(), after_change);
    }

    #[tokio::test(start_paused = true)]
    async fn a_create_that_never_answers_ends_at_the_api_timeout_and_is_retried() {
        let h = Harness::start();
        h.writes.script("create", &[Answer::Hang]);
        let warnings = h
            .copier
            .ensure(TARGET_NS, &[need()], Duration::from_secs(1))
            .await;
        assert_eq!(
            warnings,
            vec![format!(
                "copy of Secret {NAME} into {TARGET_NS} not confirmed in time; retrying in the background"
            )]
        );
        let calls = h.until_calls("create", 2).await;
        let gap = calls[1].at - calls[0].at;
        let (low, high) = bounds(1);
        assert!(
            gap >= API_TIMEOUT + low && gap <= API_TIMEOUT + high,
            "{gap:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_admissions_share_one_create() {
        let h = Harness::start();
        let needs = [need()];
        let each = (0..5).map(|_| h.copier.ensure(TARGET_NS, &needs, Duration::from_secs(1)));
        let warnings: Vec<Vec<String>> = futures::future::join_all(each).await;
        assert!(warnings.iter().all(Vec::is_empty), "{warnings:?}");
        assert_eq!(h.writes.calls("create").len(), 1);
        // And a Pod right after, before the watch shows the copy, does not create it again.
        let outcome = h
            .copier
            .ensure(TARGET_NS, &needs, Duration::from_secs(1))
            .await;
        assert!(outcome.is_empty());
        assert_eq!(h.writes.calls("create").len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_queue_is_bounded() {
        let h = Harness::start();
        for i in 0..MAX_PENDING + 10 {
            h.copier.enqueue(&format!("ns-{i}"), NAME, SOURCE_NS, 5);
        }
        assert_eq!(h.copier.lock().pending.len(), MAX_PENDING);
    }
}
