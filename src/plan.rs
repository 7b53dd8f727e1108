//! PURE: (policy, namespace, pod facts) -> the patch, the secrets the namespace must hold,
//! warnings. No I/O, no async: `serve`, `review` and `explain` all call this.

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

pub use crate::facts::PodFacts;
use crate::facts::PodImage as FactsImage;
use crate::keyring::SchemelessUrl;
use crate::policy::{NamespaceVerdict, Policy};
use crate::reference;

/// Annotation naming what was injected: `rule=secret` pairs, comma-separated, rule order.
pub const INJECTED_ANNOTATION: &str = "pullsecret-injector.io/injected";

/// A secret the Pod is given and its namespace must hold (copied from the source namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretNeed {
    /// Secret name (the same in the source and the target namespace).
    pub name: String,
    pub source_namespace: String,
    /// Rules that asked for it, in rule order.
    pub rules: Vec<String>,
}

/// The decision for one Pod.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// RFC 6902 patch; empty when nothing changes.
    pub patch: json_patch::Patch,
    /// Secrets to ensure in the Pod's namespace (also those the Pod already referenced
    /// when a rule names them).
    pub secrets: Vec<SecretNeed>,
    pub warnings: Vec<String>,
}

/// The admission operation, as far as the plan cares.
#[derive(Debug, Clone, Copy)]
pub enum Operation<'a> {
    /// The only operation that may set `imagePullSecrets`.
    Create,
    /// No patch; warnings for secrets the Pod now needs but lacks. With the old Pod, only
    /// images it did not have yet are warned about.
    Update { old: Option<&'a PodFacts<'a>> },
}

/// The Pod's namespace as the plan sees it.
#[derive(Debug, Clone, Copy)]
pub struct Namespace<'a> {
    pub name: &'a str,
    /// `None` when the labels are not known (rules with a selector are then not applied).
    pub labels: Option<&'a BTreeMap<String, String>>,
}

/// One image of the Pod and where it came from.
pub(crate) struct PodImage<'p> {
    /// `container "web"`, `initContainer "init"`, `ephemeralContainer "debug"`.
    pub(crate) kind: &'static str,
    pub(crate) container: &'p str,
    pub(crate) image: &'p str,
}

/// The Pod's images in the kubelet's pull order (init, regular, ephemeral); empty ones left out.
pub(crate) fn pod_images(pod: &Pod) -> Vec<PodImage<'_>> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    let mut images = Vec::new();
    for c in spec.init_containers.iter().flatten() {
        images.push(("initContainer", c.name.as_str(), c.image.as_deref()));
    }
    for c in &spec.containers {
        images.push(("container", c.name.as_str(), c.image.as_deref()));
    }
    for c in spec.ephemeral_containers.iter().flatten() {
        images.push(("ephemeralContainer", c.name.as_str(), c.image.as_deref()));
    }
    images
        .into_iter()
        .filter_map(|(kind, container, image)| {
            // A missing image is the apiserver's to reject; nothing to pull, nothing to add.
            image.filter(|i| !i.is_empty()).map(|image| PodImage {
                kind,
                container,
                image,
            })
        })
        .collect()
}

/// Decides what `pod` gets in `namespace` under `policy`.
pub fn plan(
    policy: &Policy,
    pod: &PodFacts<'_>,
    namespace: &Namespace<'_>,
    operation: Operation<'_>,
    webhook_namespace: &str,
) -> Plan {
    let mut out = Plan::default();
    if policy.namespace_excluded(namespace.name, webhook_namespace) {
        return out;
    }
    let view = policy.namespace_view(namespace.name, namespace.labels);

    // A Pod has a handful of images: plain lists beat sets here.
    let old_images: Option<Vec<&str>> = match operation {
        Operation::Update { old: Some(old) } => Some(old.images().map(|i| i.image).collect()),
        _ => None,
    };
    let is_old = |image: &str| old_images.as_ref().is_some_and(|old| old.contains(&image));
    // For every rule that matched, the first image that made it match; new images first,
    // so an UPDATE warning names the image that brought the need. Kept in rule order.
    let mut matched: Vec<(usize, &str)> = Vec::new();
    let mut images: Vec<FactsImage<'_>> = pod.images().collect();
    images.sort_by_key(|i| is_old(i.image));
    let mut unknown_labels: Vec<usize> = Vec::new();
    let mut rules: Vec<usize> = Vec::new();
    for image in images {
        let target = match reference::lookup_target(image.image) {
            Ok(target) => target,
            // Already warned about when it was new.
            Err(_) if is_old(image.image) => continue,
            Err(err) => {
                out.warnings.push(format!(
                    "{} {:?}: image {:?} is not a valid reference ({err}); no pull secret added for it",
                    image.kind.label(),
                    image.container,
                    image.image
                ));
                continue;
            }
        };
        policy.rules_matching(&SchemelessUrl::parse(&target), &mut rules);
        for &index in &rules {
            match view.verdict(index) {
                NamespaceVerdict::Excluded => {}
                NamespaceVerdict::LabelsUnknown => insert_sorted(&mut unknown_labels, index),
                NamespaceVerdict::Applies => {
                    if let Err(at) = matched.binary_search_by_key(&index, |(i, _)| *i) {
                        matched.insert(at, (index, image.image));
                    }
                }
            }
        }
    }
    for index in unknown_labels {
        out.warnings.push(format!(
            "rule {:?} not applied: labels of namespace {:?} are not known yet and the rule has a selector",
            policy.rules[index].name, namespace.name
        ));
    }

    // Union of secrets in rule order; each lists the rules that asked for it.
    let mut needs: Vec<(SecretNeed, &str)> = Vec::new();
    for &(index, image) in &matched {
        let rule = &policy.rules[index];
        match needs.iter_mut().find(|(n, _)| n.name == rule.secret) {
            Some((need, first)) => {
                need.rules.push(rule.name.clone());
                // Keep a new image as the example, so an UPDATE warning is not lost.
                if is_old(first) && !is_old(image) {
                    *first = image;
                }
            }
            None => needs.push((
                SecretNeed {
                    name: rule.secret.clone(),
                    source_namespace: policy.source_namespace.clone(),
                    rules: vec![rule.name.clone()],
                },
                image,
            )),
        }
    }

    match operation {
        Operation::Create => {
            let missing: Vec<&SecretNeed> = needs
                .iter()
                .map(|(n, _)| n)
                .filter(|n| !pod.lists_pull_secret(&n.name))
                .collect();
            out.patch = create_patch(pod, &missing);
            out.secrets = needs.into_iter().map(|(n, _)| n).collect();
        }
        Operation::Update { .. } => {
            for (need, image) in &needs {
                // Listed already, or not new: the Pod has been running without it already.
                if pod.lists_pull_secret(&need.name) || is_old(image) {
                    continue;
                }
                out.warnings.push(format!(
                    "pull secret {:?} (rule {}) is missing; imagePullSecrets are fixed after creation, \
                     recreate the Pod to add it. Needed by image {image:?}",
                    need.name,
                    need.rules.join(", ")
                ));
            }
            // Only what the Pod can use: the secrets it already lists.
            out.secrets = needs
                .into_iter()
                .map(|(n, _)| n)
                .filter(|n| pod.lists_pull_secret(&n.name))
                .collect();
        }
    }
    out
}

fn insert_sorted(list: &mut Vec<usize>, value: usize) {
    if let Err(at) = list.binary_search(&value) {
        list.insert(at, value);
    }
}

/// `add` operations for the secrets the Pod lacks, plus the annotation naming them.
fn create_patch(pod: &PodFacts<'_>, missing: &[&SecretNeed]) -> Patch {
    if missing.is_empty() {
        return Patch(Vec::new());
    }
    let mut ops = Vec::new();
    if pod.pull_secrets.is_some() {
        for need in missing {
            ops.push(add(
                &["spec", "imagePullSecrets", "-"],
                json!({ "name": need.name }),
            ));
        }
    } else {
        let entries: Vec<Value> = missing.iter().map(|n| json!({ "name": n.name })).collect();
        ops.push(add(&["spec", "imagePullSecrets"], Value::Array(entries)));
    }

    let mut pairs: Vec<String> = pod
        .injected
        .as_deref()
        .map(|v| {
            v.split(',')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    for need in missing {
        for rule in &need.rules {
            let pair = format!("{rule}={}", need.name);
            if !pairs.contains(&pair) {
                pairs.push(pair);
            }
        }
    }
    let value = Value::String(pairs.join(","));
    if pod.has_annotations {
        ops.push(add(
            &["metadata", "annotations", INJECTED_ANNOTATION],
            value,
        ));
    } else {
        ops.push(add(
            &["metadata", "annotations"],
            json!({ INJECTED_ANNOTATION: value }),
        ));
    }
    Patch(ops)
}

fn add(tokens: &[&str], value: Value) -> PatchOperation {
    // from_tokens escapes `/` as `~1` and `~` as `~0`.
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(tokens.iter().copied()),
        value,
    })
}
