//! What the watch caches keep of each object: only what a decision reads. Applied to every
//! watched object on its way into a reflector store (kube-runtime's stream `modify`), so a
//! cluster's size costs its names and labels, not the API server's bookkeeping.
//!
//! `managedFields` is the bulk: a real API server records one entry per field manager, often
//! larger than the object itself. Dropping it from a cached Secret is safe for our writes: a
//! replace that omits `managedFields` leaves the server's record as it was.

use k8s_openapi::api::core::v1::{Namespace, NamespaceStatus, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// A Namespace as the cache needs it: name, labels (rule selectors), and whether it is being
/// deleted (deletionTimestamp, status phase), with uid and resourceVersion for the store.
/// Annotations go too: we never write a Namespace, and kubectl's last-applied copy can be
/// large.
pub(crate) fn namespace(ns: &mut Namespace) {
    let meta = std::mem::take(&mut ns.metadata);
    ns.metadata = ObjectMeta {
        name: meta.name,
        labels: meta.labels,
        deletion_timestamp: meta.deletion_timestamp,
        resource_version: meta.resource_version,
        uid: meta.uid,
        ..ObjectMeta::default()
    };
    ns.spec = None;
    ns.status = ns.status.take().map(|status| NamespaceStatus {
        phase: status.phase,
        conditions: None,
    });
}

/// A Secret of a watched name: everything but `managedFields`. Labels and annotations stay
/// whole because the copier and the token refresher write a cached Secret back (a replace)
/// and keep what others added; type and data stay because the pull facts and whether a copy
/// is current are computed from them.
pub(crate) fn secret(secret: &mut Secret) {
    secret.metadata.managed_fields = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, Time};
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

    #[test]
    fn a_namespace_keeps_what_selectors_and_termination_read() {
        let deleted = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let mut ns = Namespace {
            metadata: ObjectMeta {
                name: Some("team-a".into()),
                labels: map(&[("team", "shop")]),
                annotations: map(&[("kubectl.kubernetes.io/last-applied-configuration", "{}")]),
                managed_fields: managed_fields(),
                deletion_timestamp: Some(deleted.clone()),
                resource_version: Some("42".into()),
                uid: Some("u-1".into()),
                ..ObjectMeta::default()
            },
            status: Some(NamespaceStatus {
                phase: Some("Terminating".into()),
                conditions: Some(vec![Default::default()]),
            }),
            ..Namespace::default()
        };
        namespace(&mut ns);
        assert_eq!(ns.metadata.name.as_deref(), Some("team-a"));
        assert_eq!(ns.metadata.labels, map(&[("team", "shop")]));
        assert_eq!(ns.metadata.deletion_timestamp, Some(deleted));
        assert_eq!(ns.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(ns.metadata.uid.as_deref(), Some("u-1"));
        assert_eq!(ns.metadata.annotations, None);
        assert_eq!(ns.metadata.managed_fields, None);
        let status = ns.status.expect("phase kept");
        assert_eq!(status.phase.as_deref(), Some("Terminating"));
        assert_eq!(status.conditions, None);
    }

    #[test]
    fn a_secret_loses_only_managed_fields() {
        let mut s = Secret {
            metadata: ObjectMeta {
                name: Some("regcred".into()),
                namespace: Some("team-a".into()),
                labels: map(&[("app.kubernetes.io/managed-by", "pullsecret-injector")]),
                annotations: map(&[
                    ("pullsecret-injector.io/source-hash", "sha256:00"),
                    ("pullsecret-injector.io/expires-at", "2026-12-01T00:00:00Z"),
                    ("someone.example/else", "kept: a replace must not drop it"),
                ]),
                managed_fields: managed_fields(),
                resource_version: Some("7".into()),
                uid: Some("u-2".into()),
                ..ObjectMeta::default()
            },
            type_: Some("kubernetes.io/dockerconfigjson".into()),
            data: Some(BTreeMap::from([(
                ".dockerconfigjson".to_string(),
                ByteString(b"{}".to_vec()),
            )])),
            ..Secret::default()
        };
        let mut expected = s.clone();
        expected.metadata.managed_fields = None;
        secret(&mut s);
        assert_eq!(s, expected);
    }
}
