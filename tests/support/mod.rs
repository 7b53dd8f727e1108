//! Builders shared by the integration tests.
#![allow(dead_code)]

use k8s_openapi::api::core::v1::Pod;
use pullsecret_injector::policy::Policy;
use serde_json::{Value, json};

pub mod cli;
pub mod cloud;
pub mod fake_apiserver;
pub mod registry;
pub mod serve;
pub mod shared;
pub mod tls;

#[allow(unused_imports)]
pub use shared::{reference_dir, sample, samples_dir};

/// The policy most tests use: two rules on two registries plus a selector rule.
pub const POLICY: &str = "\
sourceNamespace: registry-credentials
excludeNamespaces: [kube-system]
rules:
  - name: gitlab
    registries: [\"registry.gitlab.com/acme/\"]
    secret: gitlab-deploy-token
  - name: ecr
    registries: [\"*.dkr.ecr.*.amazonaws.com\"]
    secret: ecr-pull
  - name: ghcr
    registries: [\"ghcr.io/acme\"]
    secret: ghcr-pull
    namespaces:
      include: [\"team-*\"]
      exclude: [team-sandbox]
  - name: quay
    registries: [quay.io]
    secret: quay-pull
    namespaces:
      selector:
        matchLabels: {registry-access: quay}
  - name: gitlab-mirror
    registries: [\"registry.gitlab.com/acme/mirror\"]
    secret: gitlab-deploy-token
";

pub fn policy() -> Policy {
    Policy::parse(POLICY, "test-policy.yaml").expect("test policy is valid")
}

/// A Pod with these container images (and optionally init/ephemeral ones and pull secrets).
pub fn pod_json(
    containers: &[&str],
    init: &[&str],
    ephemeral: &[&str],
    pull_secrets: Option<&[&str]>,
) -> Value {
    let list = |images: &[&str], prefix: &str| -> Value {
        images
            .iter()
            .enumerate()
            .map(|(i, image)| json!({"name": format!("{prefix}{i}"), "image": image}))
            .collect()
    };
    let mut spec = json!({"containers": list(containers, "c")});
    if !init.is_empty() {
        spec["initContainers"] = list(init, "init");
    }
    if !ephemeral.is_empty() {
        spec["ephemeralContainers"] = list(ephemeral, "debug");
    }
    if let Some(names) = pull_secrets {
        spec["imagePullSecrets"] = names.iter().map(|n| json!({"name": n})).collect();
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "web-", "namespace": "team-a"},
        "spec": spec,
    })
}

pub fn pod(containers: &[&str]) -> Pod {
    to_pod(pod_json(containers, &[], &[], None))
}

pub fn to_pod(value: Value) -> Pod {
    serde_json::from_value(value).expect("test pod decodes")
}

/// A policy covering every registry used by the shared AdmissionReview samples.
pub const SAMPLES_POLICY: &str = include_str!("../fixtures/samples-policy.yaml");
