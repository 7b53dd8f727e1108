//! What the Secret watch caches keep of each object: only what a decision reads. Applied to
//! every watched Secret on its way into a reflector store (kube-runtime's stream `modify`), so
//! a cluster's size costs its names and labels, not the API server's bookkeeping. (The
//! Namespace cache keeps its own compact entries: `k8s::namespaces`.)
//!
//! `managedFields` is the bulk: a real API server records one entry per field manager, often
//! larger than the object itself. Dropping it from a cached Secret is safe for our writes: a
//! replace that omits `managedFields` leaves the server's record as it was.

use k8s_openapi::api::core::v1::Secret;

use super::copy;

/// A Secret of a watched name, for a cache whose policy takes sources from
/// `source_namespace`: everything but `managedFields`, and for one of our copies everywhere
/// else, its data replaced by its content hash ([`copy::strip_data`]). Whether a copy is
/// current needs only that hash; its pull facts are computed before this step, and a write
/// of a copy takes its data from the source. Labels and annotations stay whole because the
/// copier and the token refresher write a cached Secret back (a replace) and keep what others
/// added. Sources, token Secrets and a user's Secret of the name keep their data: copies are
/// made from them, and a Secret we do not manage is never rewritten from the cache.
pub(crate) fn secret(secret: &mut Secret, source_namespace: &str) {
    secret.metadata.managed_fields = None;
    if is_copy(secret, source_namespace) {
        copy::strip_data(secret);
    } else if let Some(annotations) = secret.metadata.annotations.as_mut() {
        // Only this step writes that note: one that came from the cluster is not believed.
        annotations.remove(copy::ANNOTATION_CACHED_HASH);
    }
}

/// One of our copies: our label and a source annotation, outside the source namespace.
fn is_copy(secret: &Secret, source_namespace: &str) -> bool {
    secret.metadata.namespace.as_deref() != Some(source_namespace)
        && copy::is_managed(secret)
        && copy::annotation(secret, copy::ANNOTATION_SOURCE).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};
    use std::collections::BTreeMap;

    fn managed_fields() -> Option<Vec<ManagedFieldsEntry>> {
        Some(vec![ManagedFieldsEntry {
            manager: Some("kubectl".into()),
            operation: Some("Update".into()),
            ..ManagedFieldsEntry::default()
        }])
    }

    fn map(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn dockerconfigjson(body: &[u8]) -> Option<BTreeMap<String, ByteString>> {
        Some(BTreeMap::from([(
            ".dockerconfigjson".to_string(),
            ByteString(body.to_vec()),
        )]))
    }

    /// A Secret named `regcred` in `namespace` as the API server lists it.
    fn listed(namespace: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some("regcred".into()),
                namespace: Some(namespace.into()),
                labels: map(labels),
                annotations: map(annotations),
                managed_fields: managed_fields(),
                resource_version: Some("7".into()),
                uid: Some("u-2".into()),
                ..ObjectMeta::default()
            },
            type_: Some("kubernetes.io/dockerconfigjson".into()),
            data: dockerconfigjson(b"{}"),
            ..Secret::default()
        }
    }

    const MANAGED: (&str, &str) = ("app.kubernetes.io/managed-by", "pullsecret-injector");

    #[test]
    fn a_copy_keeps_its_metadata_and_type_and_trades_its_data_for_its_hash() {
        let mut s = listed(
            "team-a",
            &[MANAGED],
            &[
                ("pullsecret-injector.io/source", "creds/regcred"),
                ("pullsecret-injector.io/source-hash", "sha256:00"),
                ("pullsecret-injector.io/expires-at", "2026-12-01T00:00:00Z"),
                ("someone.example/else", "kept: a replace must not drop it"),
            ],
        );
        let hash = copy::content_hash(&s);
        let mut expected = s.clone();
        expected.metadata.managed_fields = None;
        expected.data = None;
        expected
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(copy::ANNOTATION_CACHED_HASH.into(), hash.clone());
        secret(&mut s, "creds");
        assert_eq!(s, expected);
        assert_eq!(copy::copy_hash(&s), hash);
    }

    #[test]
    fn sources_tokens_and_users_secrets_keep_their_data() {
        let source = listed("creds", &[], &[]);
        let token = listed(
            "creds",
            &[MANAGED],
            &[("pullsecret-injector.io/token-source", "ecr")],
        );
        // The source namespace's own Secret, even if it was once a copy.
        let copy_in_source_ns = listed(
            "creds",
            &[MANAGED],
            &[("pullsecret-injector.io/source", "old-creds/regcred")],
        );
        let users = listed(
            "team-a",
            &[],
            &[("pullsecret-injector.io/source", "creds/regcred")],
        );
        let unannotated = listed("team-a", &[MANAGED], &[]);
        for original in [source, token, copy_in_source_ns, users, unannotated] {
            let mut s = original.clone();
            secret(&mut s, "creds");
            let mut expected = original;
            expected.metadata.managed_fields = None;
            assert_eq!(s, expected);
            assert!(!copy::is_stripped(&s));
        }
    }

    #[test]
    fn a_cached_hash_note_from_the_cluster_is_dropped() {
        let note = (copy::ANNOTATION_CACHED_HASH, "sha256:forged");
        let mut users = listed("team-a", &[], &[note]);
        users.data = None;
        secret(&mut users, "creds");
        assert_eq!(users.metadata.annotations, Some(BTreeMap::new()));
        let mut copy = listed(
            "team-a",
            &[MANAGED],
            &[("pullsecret-injector.io/source", "creds/regcred"), note],
        );
        let hash = copy::content_hash(&copy);
        secret(&mut copy, "creds");
        assert_eq!(copy::copy_hash(&copy), hash);
    }
}
