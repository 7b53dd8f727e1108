//! The Pod facts a decision reads (DESIGN.md's "request facts"), decoded straight from the
//! request JSON: names, the annotation we own, the images of every container kind and the
//! `imagePullSecrets` already listed. Strings are borrowed from the body where JSON escapes
//! allow it; every other field (status, env, volumes, managedFields, ...) is skipped without
//! building a tree.

use std::borrow::Cow;

use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;

use crate::plan::INJECTED_ANNOTATION;

/// Where a container sits in the Pod spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContainerKind {
    Init,
    Regular,
    Ephemeral,
}

impl ContainerKind {
    /// How warnings name it: `initContainer "init"`, `container "web"`, ...
    pub(crate) fn label(self) -> &'static str {
        match self {
            ContainerKind::Init => "initContainer",
            ContainerKind::Regular => "container",
            ContainerKind::Ephemeral => "ephemeralContainer",
        }
    }
}

/// One container as far as pulling goes.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ContainerFacts<'a> {
    #[serde(borrow, default)]
    pub(crate) name: Cow<'a, str>,
    #[serde(borrow, default)]
    pub(crate) image: Option<Cow<'a, str>>,
}

/// What plan() needs of a Pod.
#[derive(Debug, Clone, Default)]
pub struct PodFacts<'a> {
    pub(crate) name: Option<Cow<'a, str>>,
    pub(crate) generate_name: Option<Cow<'a, str>>,
    pub(crate) namespace: Option<Cow<'a, str>>,
    /// Whether `metadata.annotations` exists (the patch then adds a key instead of the map).
    pub(crate) has_annotations: bool,
    /// The value of [`INJECTED_ANNOTATION`], when set.
    pub(crate) injected: Option<Cow<'a, str>>,
    pub(crate) init_containers: Vec<ContainerFacts<'a>>,
    pub(crate) containers: Vec<ContainerFacts<'a>>,
    pub(crate) ephemeral_containers: Vec<ContainerFacts<'a>>,
    /// Names in `spec.imagePullSecrets`; `None` when the array is absent (the patch then
    /// adds the array instead of appending to it).
    pub(crate) pull_secrets: Option<Vec<Cow<'a, str>>>,
}

/// A Pod image and the container it belongs to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PodImage<'p> {
    pub(crate) kind: ContainerKind,
    pub(crate) container: &'p str,
    pub(crate) image: &'p str,
}

impl<'a> PodFacts<'a> {
    /// Decodes a Pod object (JSON). A field we read with the wrong type is an error, as is an
    /// `apiVersion`/`kind` other than `v1`/`Pod`; everything else is skipped unread.
    pub fn from_json(json: &'a [u8]) -> Result<Self, serde_json::Error> {
        let raw: PodJson<'a> = serde_json::from_slice(json)?;
        raw.into_facts()
    }

    /// The facts of a decoded Pod (offline commands and tests), borrowing from it.
    pub fn from_pod(pod: &'a Pod) -> Self {
        let containers = |list: Option<Vec<ContainerFacts<'a>>>| list.unwrap_or_default();
        let spec = pod.spec.as_ref();
        let annotations = pod.metadata.annotations.as_ref();
        PodFacts {
            name: pod.metadata.name.as_deref().map(Cow::Borrowed),
            generate_name: pod.metadata.generate_name.as_deref().map(Cow::Borrowed),
            namespace: pod.metadata.namespace.as_deref().map(Cow::Borrowed),
            has_annotations: annotations.is_some(),
            injected: annotations
                .and_then(|a| a.get(INJECTED_ANNOTATION))
                .map(|v| Cow::Borrowed(v.as_str())),
            init_containers: containers(spec.and_then(|s| s.init_containers.as_ref()).map(
                |list| {
                    list.iter()
                        .map(|c| borrowed(&c.name, c.image.as_deref()))
                        .collect()
                },
            )),
            containers: containers(spec.map(|s| {
                s.containers
                    .iter()
                    .map(|c| borrowed(&c.name, c.image.as_deref()))
                    .collect()
            })),
            ephemeral_containers: containers(
                spec.and_then(|s| s.ephemeral_containers.as_ref())
                    .map(|list| {
                        list.iter()
                            .map(|c| borrowed(&c.name, c.image.as_deref()))
                            .collect()
                    }),
            ),
            pull_secrets: spec
                .and_then(|s| s.image_pull_secrets.as_ref())
                .map(|list| {
                    list.iter()
                        .map(|r| Cow::Borrowed(r.name.as_str()))
                        .collect()
                }),
        }
    }

    /// The Pod's name, or its `generateName` prefix (names are given after admission).
    pub(crate) fn display_name(&self) -> &str {
        self.name
            .as_deref()
            .filter(|n| !n.is_empty())
            .or(self.generate_name.as_deref())
            .unwrap_or_default()
    }

    /// Every image to pull, init containers first, then containers, then ephemeral ones.
    /// A container without an image is the apiserver's to reject: nothing to pull for it.
    pub(crate) fn images(&self) -> impl Iterator<Item = PodImage<'_>> {
        self.init_containers
            .iter()
            .map(|c| (ContainerKind::Init, c))
            .chain(self.containers.iter().map(|c| (ContainerKind::Regular, c)))
            .chain(
                self.ephemeral_containers
                    .iter()
                    .map(|c| (ContainerKind::Ephemeral, c)),
            )
            .filter_map(|(kind, c)| {
                c.image
                    .as_deref()
                    .filter(|i| !i.is_empty())
                    .map(|image| PodImage {
                        kind,
                        container: &c.name,
                        image,
                    })
            })
    }

    /// Whether `name` is already in `spec.imagePullSecrets`.
    pub(crate) fn lists_pull_secret(&self, name: &str) -> bool {
        self.pull_secrets
            .iter()
            .flatten()
            .any(|listed| listed.as_ref() == name)
    }
}

fn borrowed<'a>(name: &'a str, image: Option<&'a str>) -> ContainerFacts<'a> {
    ContainerFacts {
        name: Cow::Borrowed(name),
        image: image.map(Cow::Borrowed),
    }
}

// ---------------------------------------------------------------------------------------------
// The wire shape: only what we read; serde skips the rest (unknown fields are ignored).

/// A Pod object as it is decoded, before [`into_facts`](Self::into_facts) checks its type
/// header. A field of a larger document can be decoded as this, in the same pass as the rest.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PodJson<'a> {
    #[serde(borrow, default)]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    metadata: Option<RawMeta<'a>>,
    #[serde(borrow, default)]
    spec: Option<RawSpec<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMeta<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    generate_name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    namespace: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    annotations: Option<Annotations<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSpec<'a> {
    #[serde(borrow, default)]
    init_containers: Option<Vec<ContainerFacts<'a>>>,
    #[serde(borrow, default)]
    containers: Option<Vec<ContainerFacts<'a>>>,
    #[serde(borrow, default)]
    ephemeral_containers: Option<Vec<ContainerFacts<'a>>>,
    #[serde(borrow, default)]
    image_pull_secrets: Option<Vec<PullSecretRef<'a>>>,
}

#[derive(Deserialize)]
struct PullSecretRef<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
}

/// `metadata.annotations`, keeping only our own key's value.
struct Annotations<'a> {
    injected: Option<Cow<'a, str>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Annotations<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{MapAccess, Visitor};
        struct Map<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Map<'a> {
            type Value = Annotations<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut injected = None;
                while let Some(key) = map.next_key::<Str<'de>>()? {
                    let value = map.next_value::<Str<'de>>()?;
                    if key.0 == INJECTED_ANNOTATION {
                        injected = Some(value.0);
                    }
                }
                Ok(Annotations { injected })
            }
        }
        d.deserialize_map(Map(std::marker::PhantomData))
    }
}

/// A string borrowed from the input when it has no escapes (serde's `Cow` always copies).
struct Str<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'a> PodJson<'a> {
    pub(crate) fn into_facts(self) -> Result<PodFacts<'a>, serde_json::Error> {
        use serde::de::Error;
        // As k8s-openapi's Pod: a type header, when present, must say Pod.
        if self.api_version.as_deref().is_some_and(|v| v != "v1") {
            return Err(serde_json::Error::custom("apiVersion is not v1"));
        }
        if self.kind.as_deref().is_some_and(|k| k != "Pod") {
            return Err(serde_json::Error::custom("kind is not Pod"));
        }
        let meta = self.metadata;
        let (name, generate_name, namespace, annotations) = match meta {
            Some(m) => (m.name, m.generate_name, m.namespace, m.annotations),
            None => (None, None, None, None),
        };
        let spec = self.spec;
        let (init, containers, ephemeral, pull_secrets) = match spec {
            Some(s) => (
                s.init_containers,
                s.containers,
                s.ephemeral_containers,
                s.image_pull_secrets,
            ),
            None => (None, None, None, None),
        };
        Ok(PodFacts {
            name,
            generate_name,
            namespace,
            has_annotations: annotations.is_some(),
            injected: annotations.and_then(|a| a.injected),
            init_containers: init.unwrap_or_default(),
            containers: containers.unwrap_or_default(),
            ephemeral_containers: ephemeral.unwrap_or_default(),
            pull_secrets: pull_secrets.map(|list| {
                list.into_iter()
                    .map(|r| r.name.unwrap_or_default())
                    .collect()
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = r#"{
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "web-", "namespace": "team-a",
                     "annotations": {"a": "b", "pullsecret-injector.io\/injected": "r=s"},
                     "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]},
        "spec": {
            "containers": [{"name": "web", "image": "nginx", "env": [{"name": "X", "value": "y"}]},
                           {"name": "noimage"}],
            "initContainers": [{"name": "init", "image": "busybox"}],
            "ephemeralContainers": [{"name": "debug", "image": "alpine"}],
            "imagePullSecrets": [{"name": "mine"}, {}]
        },
        "status": {"phase": "Pending", "conditions": [{"type": "x"}]}
    }"#;

    #[test]
    fn reads_only_what_plan_needs_in_pull_order() {
        let facts = PodFacts::from_json(POD.as_bytes()).unwrap();
        assert_eq!(facts.display_name(), "web-");
        assert_eq!(facts.namespace.as_deref(), Some("team-a"));
        assert!(facts.has_annotations);
        // The escaped key is still our annotation.
        assert_eq!(facts.injected.as_deref(), Some("r=s"));
        let images: Vec<(&str, &str, &str)> = facts
            .images()
            .map(|i| (i.kind.label(), i.container, i.image))
            .collect();
        assert_eq!(
            images,
            [
                ("initContainer", "init", "busybox"),
                ("container", "web", "nginx"),
                ("ephemeralContainer", "debug", "alpine"),
            ]
        );
        assert!(facts.lists_pull_secret("mine"));
        assert!(!facts.lists_pull_secret("other"));
        assert_eq!(facts.pull_secrets.as_ref().map(Vec::len), Some(2));
    }

    #[test]
    fn the_same_facts_as_from_a_decoded_pod() {
        let pod: Pod = serde_json::from_str(POD).unwrap();
        let (a, b) = (
            PodFacts::from_pod(&pod),
            PodFacts::from_json(POD.as_bytes()).unwrap(),
        );
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }

    #[test]
    fn absent_and_null_arrays_stay_absent() {
        let facts = PodFacts::from_json(
            br#"{"metadata": {"annotations": null}, "spec": {"imagePullSecrets": null}}"#,
        )
        .unwrap();
        assert!(!facts.has_annotations);
        assert!(facts.pull_secrets.is_none());
        let facts = PodFacts::from_json(br#"{"spec": {"imagePullSecrets": []}}"#).unwrap();
        assert_eq!(facts.pull_secrets.map(|p| p.len()), Some(0));
    }

    #[test]
    fn another_kind_or_a_wrong_type_where_we_read_is_an_error() {
        assert!(PodFacts::from_json(br#"{"kind": "Deployment"}"#).is_err());
        assert!(PodFacts::from_json(br#"{"apiVersion": "apps/v1", "kind": "Pod"}"#).is_err());
        assert!(PodFacts::from_json(br#"{"spec": {"containers": [{"image": 42}]}}"#).is_err());
        assert!(PodFacts::from_json(br#"{"metadata": {"annotations": {"a": 1}}}"#).is_err());
        // What we do not read is not checked: the apiserver decoded the Pod before us.
        assert!(PodFacts::from_json(br#"{"spec": {"containers": [{"ports": "x"}]}}"#).is_ok());
    }
}
