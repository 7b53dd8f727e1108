//! What a copy looks like and how it is compared with its source. Pure: no I/O.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sha2::{Digest, Sha256};

pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "pullsecret-injector";
/// `namespace/name` of the source Secret.
pub const ANNOTATION_SOURCE: &str = "pullsecret-injector.io/source";
/// `sha256:<hex>` of the source's type and data when the copy was written.
pub const ANNOTATION_SOURCE_HASH: &str = "pullsecret-injector.io/source-hash";

/// On a copy in a watch cache only, never on the cluster: the content hash of the data the
/// cache dropped ([`strip_data`]). Believed only on a Secret without data; [`updated_copy`]
/// removes it, so no write carries it.
pub(crate) const ANNOTATION_CACHED_HASH: &str = "pullsecret-injector.io/cached-content-hash";

pub(crate) use crate::dockerconfig::{TYPE_DOCKERCFG, TYPE_DOCKERCONFIGJSON};
use crate::expiry::ANNOTATION_EXPIRES_AT;

/// Whether a Secret can be handed to the kubelet as a pull secret (and so may be copied).
pub(crate) fn is_pull_secret_type(secret: &Secret) -> bool {
    matches!(
        secret.type_.as_deref(),
        Some(TYPE_DOCKERCONFIGJSON | TYPE_DOCKERCFG)
    )
}

pub(crate) fn secret_type(secret: &Secret) -> &str {
    secret.type_.as_deref().unwrap_or("Opaque")
}

/// Hash of a Secret's type and data: what a copy must carry to be current. Keys are hashed in
/// order with their lengths, so no two different contents share an input.
pub fn content_hash(secret: &Secret) -> String {
    let mut hasher = Sha256::new();
    let kind = secret_type(secret).as_bytes();
    hasher.update((kind.len() as u64).to_be_bytes());
    hasher.update(kind);
    let empty = BTreeMap::new();
    for (key, value) in secret.data.as_ref().unwrap_or(&empty) {
        hasher.update((key.len() as u64).to_be_bytes());
        hasher.update(key.as_bytes());
        hasher.update((value.0.len() as u64).to_be_bytes());
        hasher.update(&value.0);
    }
    let digest = hasher.finalize();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// The content hash of a copy as it is on the cluster: [`content_hash`] of its type and data,
/// or, when a watch cache dropped the data ([`strip_data`]), the hash recorded then.
pub(crate) fn copy_hash(copy: &Secret) -> Cow<'_, str> {
    match annotation(copy, ANNOTATION_CACHED_HASH) {
        Some(recorded) if copy.data.is_none() => Cow::Borrowed(recorded),
        _ => Cow::Owned(content_hash(copy)),
    }
}

/// Drops a copy's data, recording its content hash ([`ANNOTATION_CACHED_HASH`]) so that
/// [`compare`], [`unchanged_since_written`] and [`deletable_copy`] answer as they would with
/// the data. The type stays (a type change is told apart by it).
pub(crate) fn strip_data(copy: &mut Secret) {
    let hash = content_hash(copy);
    copy.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(ANNOTATION_CACHED_HASH.to_string(), hash);
    copy.data = None;
    copy.string_data = None;
}

/// Whether a watch cache dropped this Secret's data: it must not be the source of a copy.
pub(crate) fn is_stripped(secret: &Secret) -> bool {
    secret.data.is_none() && annotation(secret, ANNOTATION_CACHED_HASH).is_some()
}

pub(crate) fn source_ref(source_namespace: &str, name: &str) -> String {
    format!("{source_namespace}/{name}")
}

/// The copy of `source` for `namespace`: same type and data, our label, annotations naming the
/// source and its content hash, and the source's token expiry ([`ANNOTATION_EXPIRES_AT`]) when
/// it has one, so that what the kubelet gets in the namespace says when it stops working (the
/// admission warning and `diagnose` read it there). Nothing else of the source's metadata is carried over: server
/// fields (uid, resourceVersion, ...) and ownerReferences are namespace-bound, and the source's
/// own labels and annotations may hold data (kubectl's last-applied-configuration does).
/// `immutable` is not copied so that a rotation can update the copy in place.
pub(crate) fn build_copy(
    source: &Secret,
    source_namespace: &str,
    name: &str,
    namespace: &str,
) -> Secret {
    let mut annotations = BTreeMap::from([
        (
            ANNOTATION_SOURCE.to_string(),
            source_ref(source_namespace, name),
        ),
        (ANNOTATION_SOURCE_HASH.to_string(), content_hash(source)),
    ]);
    if let Some(at) = annotation(source, ANNOTATION_EXPIRES_AT) {
        annotations.insert(ANNOTATION_EXPIRES_AT.to_string(), at.to_string());
    }
    Secret {
        metadata: managed_metadata(name, namespace, annotations),
        type_: source.type_.clone(),
        data: source.data.clone(),
        immutable: None,
        string_data: None,
    }
}

/// The metadata of a Secret we create (a copy or a minted token): its name, our managed-by
/// label, and `annotations`.
pub(crate) fn managed_metadata(
    name: &str,
    namespace: &str,
    annotations: BTreeMap<String, String>,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        labels: Some(BTreeMap::from([(
            LABEL_MANAGED_BY.to_string(),
            MANAGED_BY.to_string(),
        )])),
        annotations: Some(annotations),
        ..ObjectMeta::default()
    }
}

/// Whether we manage this Secret (only then may we write it).
pub(crate) fn is_managed(secret: &Secret) -> bool {
    secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_MANAGED_BY))
        .is_some_and(|v| v == MANAGED_BY)
}

/// The value of annotation `key` on `secret`, if any.
pub(crate) fn annotation<'a>(secret: &'a Secret, key: &str) -> Option<&'a str> {
    secret
        .metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// Whether a copy's type and data are still what it recorded when we wrote it (no one has
/// edited it since).
pub(crate) fn unchanged_since_written(copy: &Secret) -> bool {
    annotation(copy, ANNOTATION_SOURCE_HASH) == Some(copy_hash(copy).as_ref())
}

/// Whether `secret` is a copy we may delete: our label, a source annotation naming a Secret
/// of its own name, and content unchanged since we wrote it. Checked before every delete
/// (the delete then carries the resourceVersion of exactly this object).
pub(crate) fn deletable_copy(secret: &Secret) -> bool {
    let name = secret.metadata.name.as_deref().unwrap_or_default();
    let names_itself = annotation(secret, ANNOTATION_SOURCE)
        .and_then(|s| s.split_once('/'))
        .is_some_and(|(ns, source)| !ns.is_empty() && source == name);
    is_managed(secret) && names_itself && unchanged_since_written(secret)
}

/// What a managed copy needs to match its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CopyState {
    Current,
    /// The source changed since the copy was written (a rotation), the copy does not carry
    /// the source's expiry, or the policy now takes it from another source namespace.
    Stale,
    /// The copy's content no longer matches the hash it carries: someone edited it.
    Drifted,
    /// Type differs from the source; `type` is immutable, so delete and recreate.
    TypeChanged,
}

/// Compares a managed copy with `source`, the Secret of the same name in `source_namespace`.
pub(crate) fn compare(copy: &Secret, source: &Secret, source_namespace: &str) -> CopyState {
    let wanted = content_hash(source);
    let actual = copy_hash(copy);
    let name = copy.metadata.name.as_deref().unwrap_or_default();
    let from = annotation(copy, ANNOTATION_SOURCE);
    if secret_type(copy) != secret_type(source) {
        CopyState::TypeChanged
    } else if !unchanged_since_written(copy) {
        CopyState::Drifted
    } else if actual != wanted.as_str()
        || from != Some(source_ref(source_namespace, name).as_str())
        || expiry_differs(copy, source)
    {
        CopyState::Stale
    } else {
        CopyState::Current
    }
}

/// Whether the copy says another expiry than its source (or none while the source has one):
/// a copy that holds the source's data but not its expiry would hide an expired token from
/// the admission warning, so it is not current.
pub(crate) fn expiry_differs(copy: &Secret, source: &Secret) -> bool {
    annotation(copy, ANNOTATION_EXPIRES_AT) != annotation(source, ANNOTATION_EXPIRES_AT)
}

/// `copy` rewritten to match `source`, keeping the copy's identity (resourceVersion for
/// optimistic concurrency) and any labels or annotations others added to it.
pub(crate) fn updated_copy(
    copy: &Secret,
    source: &Secret,
    source_namespace: &str,
    name: &str,
) -> Secret {
    let mut out = copy.clone();
    let fresh = build_copy(
        source,
        source_namespace,
        name,
        copy.metadata.namespace.as_deref().unwrap_or_default(),
    );
    let labels = out.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.extend(fresh.metadata.labels.unwrap_or_default());
    let annotations = out.metadata.annotations.get_or_insert_with(BTreeMap::new);
    // The expiry is the source's: gone from the copy when the source no longer says one.
    annotations.remove(ANNOTATION_EXPIRES_AT);
    // The cache's note of data it dropped is not the cluster's business.
    annotations.remove(ANNOTATION_CACHED_HASH);
    annotations.extend(fresh.metadata.annotations.unwrap_or_default());
    out.metadata.managed_fields = None;
    out.data = fresh.data;
    out.string_data = None;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn source(data: &[u8]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some("regcred".into()),
                namespace: Some("creds".into()),
                uid: Some("u-1".into()),
                resource_version: Some("42".into()),
                owner_references: Some(vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "ConfigMap".into(),
                    name: "owner".into(),
                    uid: "o-1".into(),
                    ..OwnerReference::default()
                }]),
                labels: Some(BTreeMap::from([("team".into(), "platform".into())])),
                annotations: Some(BTreeMap::from([(
                    "kubectl.kubernetes.io/last-applied-configuration".into(),
                    "{\"data\":\"secret\"}".into(),
                )])),
                ..ObjectMeta::default()
            },
            type_: Some(TYPE_DOCKERCONFIGJSON.into()),
            data: Some(BTreeMap::from([(
                ".dockerconfigjson".into(),
                ByteString(data.to_vec()),
            )])),
            immutable: Some(true),
            string_data: None,
        }
    }

    #[test]
    fn copy_keeps_type_and_data_and_drops_namespace_bound_metadata() {
        let src = source(b"{\"auths\":{}}");
        let copy = build_copy(&src, "creds", "regcred", "team-a");
        assert_eq!(copy.type_, src.type_);
        assert_eq!(copy.data, src.data);
        assert_eq!(copy.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(copy.metadata.name.as_deref(), Some("regcred"));
        assert!(copy.metadata.uid.is_none());
        assert!(copy.metadata.resource_version.is_none());
        assert!(copy.metadata.owner_references.is_none());
        assert!(copy.immutable.is_none());
        let annotations = copy.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations.get(ANNOTATION_SOURCE).map(String::as_str),
            Some("creds/regcred")
        );
        assert!(
            annotations
                .get(ANNOTATION_SOURCE_HASH)
                .is_some_and(|h| h.starts_with("sha256:") && h.len() == 71)
        );
        assert!(!annotations.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
        assert!(is_managed(&copy));
        assert!(!is_managed(&src));
    }

    #[test]
    fn hash_depends_on_type_and_data_only() {
        let a = source(b"one");
        let mut b = source(b"one");
        b.metadata.resource_version = Some("43".into());
        assert_eq!(content_hash(&a), content_hash(&b));
        assert_ne!(content_hash(&a), content_hash(&source(b"two")));
        let mut c = source(b"one");
        c.type_ = Some(TYPE_DOCKERCFG.into());
        assert_ne!(content_hash(&a), content_hash(&c));
        // Key/value boundaries matter.
        let mut d = source(b"");
        d.data = Some(BTreeMap::from([(
            ".dockerconfigjsonone".into(),
            ByteString(Vec::new()),
        )]));
        assert_ne!(content_hash(&a), content_hash(&d));
    }

    #[test]
    fn compare_tells_current_stale_drifted_and_type_changed_apart() {
        let v1 = source(b"v1");
        let v2 = source(b"v2");
        let copy = build_copy(&v1, "creds", "regcred", "team-a");
        assert_eq!(compare(&copy, &v1, "creds"), CopyState::Current);
        assert_eq!(compare(&copy, &v2, "creds"), CopyState::Stale);
        let mut edited = copy.clone();
        edited.data = Some(BTreeMap::from([(
            ".dockerconfigjson".into(),
            ByteString(b"mine".to_vec()),
        )]));
        assert_eq!(compare(&edited, &v1, "creds"), CopyState::Drifted);
        let mut cfg = v1.clone();
        cfg.type_ = Some(TYPE_DOCKERCFG.into());
        assert_eq!(compare(&copy, &cfg, "creds"), CopyState::TypeChanged);
    }

    #[test]
    fn copy_of_another_source_namespace_is_stale_until_rewritten() {
        let v1 = source(b"v1");
        let copy = build_copy(&v1, "old-creds", "regcred", "team-a");
        assert_eq!(compare(&copy, &v1, "old-creds"), CopyState::Current);
        assert_eq!(compare(&copy, &v1, "creds"), CopyState::Stale);
        let updated = updated_copy(&copy, &v1, "creds", "regcred");
        assert_eq!(compare(&updated, &v1, "creds"), CopyState::Current);
    }

    #[test]
    fn update_keeps_identity_and_brings_content_current() {
        let v1 = source(b"v1");
        let v2 = source(b"v2");
        let mut copy = build_copy(&v1, "creds", "regcred", "team-a");
        copy.metadata.resource_version = Some("7".into());
        copy.metadata.uid = Some("c-1".into());
        let updated = updated_copy(&copy, &v2, "creds", "regcred");
        assert_eq!(updated.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(updated.data, v2.data);
        assert_eq!(compare(&updated, &v2, "creds"), CopyState::Current);
    }

    fn with_expiry(mut secret: Secret, at: &str) -> Secret {
        secret
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(ANNOTATION_EXPIRES_AT.into(), at.into());
        secret
    }

    fn expiry_of(secret: &Secret) -> Option<&str> {
        annotation(secret, ANNOTATION_EXPIRES_AT)
    }

    #[test]
    fn a_copy_carries_its_sources_expiry_and_follows_it() {
        let v1 = with_expiry(source(b"v1"), "2026-01-01T00:00:00Z");
        let copy = build_copy(&v1, "creds", "regcred", "team-a");
        assert_eq!(expiry_of(&copy), Some("2026-01-01T00:00:00Z"));
        assert_eq!(compare(&copy, &v1, "creds"), CopyState::Current);
        assert!(deletable_copy(&copy), "the expiry is not content");

        // The source's expiry moved (same data): the copy is stale until rewritten.
        let later = with_expiry(source(b"v1"), "2026-01-01T12:00:00Z");
        assert_eq!(compare(&copy, &later, "creds"), CopyState::Stale);
        let updated = updated_copy(&copy, &later, "creds", "regcred");
        assert_eq!(expiry_of(&updated), Some("2026-01-01T12:00:00Z"));
        assert_eq!(compare(&updated, &later, "creds"), CopyState::Current);

        // A copy written before copies carried the expiry is stale too.
        let mut old = copy.clone();
        old.metadata
            .annotations
            .as_mut()
            .unwrap()
            .remove(ANNOTATION_EXPIRES_AT);
        assert_eq!(compare(&old, &v1, "creds"), CopyState::Stale);

        // The source stopped saying when it expires: so does the copy.
        let plain = source(b"v1");
        assert_eq!(compare(&copy, &plain, "creds"), CopyState::Stale);
        let updated = updated_copy(&copy, &plain, "creds", "regcred");
        assert_eq!(expiry_of(&updated), None);
        assert_eq!(compare(&updated, &plain, "creds"), CopyState::Current);
        assert_eq!(
            expiry_of(&build_copy(&plain, "creds", "regcred", "team-a")),
            None
        );
    }

    #[test]
    fn only_our_unchanged_copies_are_deletable() {
        let copy = build_copy(&source(b"v1"), "creds", "regcred", "team-a");
        assert!(deletable_copy(&copy));
        let mut edited = copy.clone();
        edited.data = Some(BTreeMap::from([(
            ".dockerconfigjson".into(),
            ByteString(b"mine".to_vec()),
        )]));
        assert!(!deletable_copy(&edited), "edited by hand");
        let mut unlabelled = copy.clone();
        unlabelled.metadata.labels = None;
        assert!(!deletable_copy(&unlabelled), "not managed");
        let mut elsewhere = copy.clone();
        elsewhere
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(ANNOTATION_SOURCE.into(), "creds/other".into());
        assert!(!deletable_copy(&elsewhere), "source of another name");
        let mut anonymous = copy;
        anonymous
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .remove(ANNOTATION_SOURCE);
        assert!(!deletable_copy(&anonymous), "no source annotation");
        assert!(!deletable_copy(&source(b"v1")), "a source");
    }

    fn stripped(copy: &Secret) -> Secret {
        let mut out = copy.clone();
        strip_data(&mut out);
        assert!(out.data.is_none() && is_stripped(&out));
        out
    }

    #[test]
    fn a_stripped_copy_compares_as_the_copy_with_its_data() {
        let v1 = with_expiry(source(b"v1"), "2026-01-01T00:00:00Z");
        let v2 = source(b"v2");
        let copy = build_copy(&v1, "creds", "regcred", "team-a");
        let lean = stripped(&copy);
        assert_eq!(copy_hash(&lean), content_hash(&copy));
        assert_eq!(compare(&lean, &v1, "creds"), CopyState::Current);
        assert_eq!(compare(&lean, &v2, "creds"), CopyState::Stale);
        assert_eq!(compare(&lean, &v1, "old-creds"), CopyState::Stale);
        let mut cfg = v1.clone();
        cfg.type_ = Some(TYPE_DOCKERCFG.into());
        assert_eq!(compare(&lean, &cfg, "creds"), CopyState::TypeChanged);
        assert!(unchanged_since_written(&lean));
        assert!(deletable_copy(&lean));

        // Edited on the cluster before the cache saw it: drifted, not deletable.
        let mut edited = copy.clone();
        edited.data = Some(BTreeMap::from([(
            ".dockerconfigjson".into(),
            ByteString(b"mine".to_vec()),
        )]));
        let edited = stripped(&edited);
        assert_eq!(compare(&edited, &v1, "creds"), CopyState::Drifted);
        assert!(!unchanged_since_written(&edited));
        assert!(!deletable_copy(&edited));
    }

    #[test]
    fn a_recorded_hash_is_believed_only_without_data() {
        let v1 = source(b"v1");
        let mut edited = build_copy(&v1, "creds", "regcred", "team-a");
        edited.data = Some(BTreeMap::from([(
            ".dockerconfigjson".into(),
            ByteString(b"mine".to_vec()),
        )]));
        // Someone wrote the annotation on the cluster to make an edit look unchanged.
        let claimed = annotation(&edited, ANNOTATION_SOURCE_HASH)
            .unwrap()
            .to_string();
        edited
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(ANNOTATION_CACHED_HASH.into(), claimed);
        assert!(!is_stripped(&edited));
        assert_eq!(compare(&edited, &v1, "creds"), CopyState::Drifted);
    }

    #[test]
    fn an_update_of_a_stripped_copy_carries_the_sources_data_and_no_cache_note() {
        let v1 = source(b"v1");
        let v2 = source(b"v2");
        let mut copy = build_copy(&v1, "creds", "regcred", "team-a");
        copy.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert("someone.example/else".into(), "kept".into());
        let lean = stripped(&copy);
        let updated = updated_copy(&lean, &v2, "creds", "regcred");
        assert_eq!(updated.data, v2.data, "a write never lacks the data");
        let annotations = updated.metadata.annotations.as_ref().unwrap();
        assert!(!annotations.contains_key(ANNOTATION_CACHED_HASH));
        assert_eq!(annotations["someone.example/else"], "kept");
        assert!(!is_stripped(&updated));
        assert_eq!(compare(&updated, &v2, "creds"), CopyState::Current);
    }

    #[test]
    fn only_docker_types_are_pull_secrets() {
        let mut s = source(b"x");
        assert!(is_pull_secret_type(&s));
        s.type_ = Some(TYPE_DOCKERCFG.into());
        assert!(is_pull_secret_type(&s));
        s.type_ = Some("Opaque".into());
        assert!(!is_pull_secret_type(&s));
        s.type_ = None;
        assert!(!is_pull_secret_type(&s));
    }
}
