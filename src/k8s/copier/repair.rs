//! Following the source: every managed copy of a name is brought to its source's content
//! after a rotation, an edit of the copy (drift), a type change (delete and recreate) or a
//! change of `sourceNamespace`. Whether a copy is current is [`copy::compare`]'s answer.

use std::sync::Arc;

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Preconditions};
use tracing::{debug, info, warn};

use super::writes::{CopyError, Failure, timed};
use super::{Copier, PARALLEL_WRITES, copy};
use crate::k8s::copy::CopyState;
use crate::k8s::secrets;

impl Copier {
    /// Brings every managed copy of `name` to its source's content. False when a write
    /// failed (the name is reconciled again after a delay).
    pub(super) async fn reconcile(&self, name: &str) -> bool {
        let Some(policy) = self.policy.get() else {
            return true;
        };
        if !policy.secret_names().contains(name) {
            return true;
        }
        let source_ns = policy.source_namespace.clone();
        let Some(store) = self.secrets.store(name, &source_ns) else {
            return true;
        };
        let source = secrets::source(&store, &source_ns, name);
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
        let mut current: Secret = (*copy).clone();
        // A few rounds: each 409 means someone else wrote in between; re-read and re-compare.
        for _ in 0..4 {
            let state = copy::compare(&current, source, source_ns);
            let result = match state {
                CopyState::Current => return true,
                CopyState::TypeChanged => {
                    self.recreate(&namespace, &current, source, source_ns, name)
                        .await
                }
                CopyState::Stale | CopyState::Drifted => {
                    let updated = copy::updated_copy(&current, source, source_ns, name);
                    timed(self.writes.replace(&namespace, name, &updated)).await
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
                Err(Failure::Conflict) => match timed(self.writes.get(&namespace, name)).await {
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
        namespace: &str,
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
        match timed(self.writes.delete(namespace, name, &params)).await {
            Ok(_) | Err(Failure::NotFound) => {}
            Err(other) => return Err(other),
        }
        let fresh = copy::build_copy(source, source_ns, name, namespace);
        match timed(self.writes.create(namespace, &fresh)).await {
            // Another replica recreated it first.
            Ok(_) | Err(Failure::AlreadyExists) => Ok(()),
            Err(other) => Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::fake::{Answer, Harness, NAME, SOURCE_NS, TARGET_NS, pull_secret};
    use super::super::{RETRY_MAX, RETRY_MIN};
    use super::*;

    /// A managed copy of `source` as it was written for `source_ns`, as the watch shows it.
    fn written_copy(source: &Secret, source_ns: &str, resource_version: &str) -> Secret {
        let mut copy = copy::build_copy(source, source_ns, NAME, TARGET_NS);
        copy.metadata.uid = Some("copy-uid".into());
        copy.metadata.resource_version = Some(resource_version.into());
        copy
    }

    fn data(secret: &Secret) -> Vec<u8> {
        secret.data.as_ref().unwrap()[".dockerconfigjson"].0.clone()
    }

    #[tokio::test(start_paused = true)]
    async fn a_rotated_source_updates_the_copy_and_a_conflict_is_re_read() {
        let mut h = Harness::start();
        let v1 = pull_secret(SOURCE_NS, b"v1");
        h.cache(written_copy(&v1, SOURCE_NS, "7"));
        // Someone wrote in between: the first replace is refused, the re-read shows rv 8.
        h.writes
            .script("replace", &[Answer::Status(409, "Conflict")]);
        *h.writes.latest.lock().unwrap() = Some(written_copy(&v1, SOURCE_NS, "8"));
        h.cache(pull_secret(SOURCE_NS, b"v2"));
        h.triggers.send(NAME.into()).unwrap();
        let replaces = h.until_calls("replace", 2).await;
        assert_eq!(h.writes.calls("get").len(), 1);
        let last = replaces[1].body.as_ref().unwrap();
        assert_eq!(last.metadata.resource_version.as_deref(), Some("8"));
        assert_eq!(data(last), b"v2");
        assert_eq!(replaces[1].namespace, TARGET_NS);
    }

    #[tokio::test(start_paused = true)]
    async fn a_copy_of_the_old_source_namespace_is_rewritten() {
        let mut h = Harness::start();
        let v1 = pull_secret(SOURCE_NS, b"v1");
        // Same content, written when the policy took it from another namespace.
        h.cache(written_copy(&v1, "old-creds", "7"));
        h.triggers.send(NAME.into()).unwrap();
        let replaces = h.until_calls("replace", 1).await;
        let body = replaces[0].body.as_ref().unwrap();
        assert_eq!(
            copy::compare(body, &v1, SOURCE_NS),
            CopyState::Current,
            "the rewrite names the new source"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_whose_expiry_moved_rewrites_the_copy_with_it() {
        let mut h = Harness::start();
        let expiring = |at: &str| {
            let mut s = pull_secret(SOURCE_NS, b"v1");
            s.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(crate::expiry::ANNOTATION_EXPIRES_AT.into(), at.into());
            s
        };
        h.cache(written_copy(
            &expiring("2026-01-01T00:00:00Z"),
            SOURCE_NS,
            "7",
        ));
        // Same data, a later expiry (a token source re-minted the same password).
        let later = expiring("2026-01-01T12:00:00Z");
        h.cache(later.clone());
        h.triggers.send(NAME.into()).unwrap();
        let replaces = h.until_calls("replace", 1).await;
        let body = replaces[0].body.as_ref().unwrap();
        assert_eq!(
            body.metadata.annotations.as_ref().unwrap()[crate::expiry::ANNOTATION_EXPIRES_AT],
            "2026-01-01T12:00:00Z"
        );
        assert_eq!(copy::compare(body, &later, SOURCE_NS), CopyState::Current);
    }

    #[tokio::test(start_paused = true)]
    async fn a_type_change_deletes_exactly_the_compared_copy_and_recreates_it() {
        let mut h = Harness::start();
        let mut old = pull_secret(SOURCE_NS, b"v1");
        old.type_ = Some(copy::TYPE_DOCKERCFG.into());
        h.cache(written_copy(&old, SOURCE_NS, "7"));
        h.triggers.send(NAME.into()).unwrap();
        let creates = h.until_calls("create", 1).await;
        let deletes = h.writes.calls("delete");
        assert_eq!(deletes.len(), 1);
        let preconditions = deletes[0].params.as_ref().unwrap().preconditions.as_ref();
        assert_eq!(
            preconditions.and_then(|p| p.uid.as_deref()),
            Some("copy-uid")
        );
        assert_eq!(
            preconditions.and_then(|p| p.resource_version.as_deref()),
            Some("7")
        );
        let fresh = creates[0].body.as_ref().unwrap();
        assert_eq!(fresh.type_.as_deref(), Some(copy::TYPE_DOCKERCONFIGJSON));
        assert!(deletes[0].at <= creates[0].at);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_update_is_retried_later_with_backoff() {
        let mut h = Harness::start();
        let v1 = pull_secret(SOURCE_NS, b"v1");
        h.cache(written_copy(&v1, SOURCE_NS, "7"));
        h.writes.script(
            "replace",
            &[
                Answer::Status(500, "InternalError"),
                Answer::Status(500, "InternalError"),
            ],
        );
        h.cache(pull_secret(SOURCE_NS, b"v2"));
        h.triggers.send(NAME.into()).unwrap();
        let calls = h.until_calls("replace", 3).await;
        for (i, pair) in calls.windows(2).enumerate() {
            let gap = pair[1].at - pair[0].at;
            let attempts = i as u32 + 1;
            let base = RETRY_MIN.saturating_mul(1 << attempts).min(RETRY_MAX);
            assert!(gap >= base && gap <= base + base / 4, "retry {i}: {gap:?}");
        }
        // Done: the name is not retried again.
        tokio::time::sleep(RETRY_MAX * 4).await;
        assert_eq!(h.writes.calls("replace").len(), 3);
        assert!(h.copier.lock().reconcile_retry.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn copies_we_do_not_manage_and_the_source_are_never_written() {
        let mut h = Harness::start();
        let mut theirs = pull_secret(TARGET_NS, b"mine");
        theirs.metadata.labels = None;
        h.cache(theirs);
        h.cache(pull_secret(SOURCE_NS, b"v2"));
        h.triggers.send(NAME.into()).unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        for verb in ["create", "replace", "delete"] {
            assert!(h.writes.calls(verb).is_empty(), "{verb}");
        }
    }
}
