//! Inputs shared by the benchmarks: generated policies, a typical Pod, the reference AdmissionReview samples.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

pub const WEBHOOK_NS: &str = "pullsecret-injector";

/// Covers the samples' registries, so the CREATE samples are patched (the costlier path);
/// the same policy the tests use.
pub const SAMPLES_POLICY: &str = include_str!("../../tests/fixtures/samples-policy.yaml");

// The same fixture lookup as the tests.
#[path = "../../tests/support/shared.rs"]
mod shared;
pub use shared::{reference_dir, samples_dir};

/// The measurement settings every benchmark uses: short enough for 2 cores.
pub fn criterion_config() -> criterion::Criterion {
    criterion::Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

pub fn reference_file(name: &str) -> Vec<u8> {
    let path = reference_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The AdmissionReview samples, by file name, in name order.
pub fn admission_samples() -> Vec<(String, Vec<u8>)> {
    let dir = samples_dir();
    let mut samples: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .map(|path| {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let body = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            (name, body)
        })
        .collect();
    samples.sort();
    samples
}

/// Every `input` of `image_refs.json` (valid and invalid references alike).
pub fn reference_table_images() -> Vec<String> {
    let table: Value = serde_json::from_slice(&reference_file("image_refs.json"))
        .expect("image_refs.json is JSON");
    table["cases"]
        .as_array()
        .expect("image_refs.json has cases")
        .iter()
        .filter_map(|case| case["input"].as_str().map(str::to_string))
        .collect()
}

/// A policy of `rules` rules in which only the LAST rule matches the typical Pod (so every
/// size does the same useful work and scans the whole list). The fillers mix the shapes
/// people write: host with a path prefix, host globs, host:port, namespace filters, and
/// label selectors.
pub fn policy_yaml(rules: usize) -> String {
    let mut out = String::from(
        "sourceNamespace: registry-credentials\n\
         excludeNamespaces: [kube-system, kube-public, kube-node-lease]\n\
         rules:\n",
    );
    for i in 0..rules.saturating_sub(1) {
        let _ = writeln!(out, "  - name: filler-{i}");
        match i % 4 {
            0 => {
                let _ = writeln!(
                    out,
                    "    registries: [\"registry-{i}.example.com/team-{i}/\"]"
                );
            }
            1 => {
                let _ = writeln!(
                    out,
                    "    registries: [\"*.dkr.ecr.region-{i}.amazonaws.com\", \"mirror-{i}.example.net\"]"
                );
            }
            2 => {
                let _ = writeln!(out, "    registries: [\"registry-{i}.corp:5000/apps\"]");
                let _ = writeln!(
                    out,
                    "    namespaces:\n      include: [\"team-*\"]\n      exclude: [\"team-sandbox-{i}\"]"
                );
            }
            _ => {
                let _ = writeln!(out, "    registries: [\"*.registry-{i}.example.org\"]");
                let _ = writeln!(
                    out,
                    "    namespaces:\n      selector:\n        matchLabels: {{registry-access: r{i}}}"
                );
            }
        }
        let _ = writeln!(out, "    secret: pull-{i}");
    }
    out.push_str(
        "  - name: ghcr\n    registries: [\"ghcr.io/acme/\"]\n    secret: ghcr-pull\n    namespaces:\n      include: [\"team-*\"]\n",
    );
    out
}

/// The typical Pod: one init container and three containers, one of them from ghcr.io/acme.
pub fn typical_pod_json() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "web-7d9f8c-", "namespace": "team-a",
                     "labels": {"app": "web"}},
        "spec": {
            "initContainers": [
                {"name": "migrate", "image": "docker.io/library/busybox:1.36"}
            ],
            "containers": [
                {"name": "web", "image": "nginx:1.27"},
                {"name": "app", "image": "ghcr.io/acme/shop/api:v3.2.1"},
                {"name": "exporter",
                 "image": "quay.io/prometheus/nginx-exporter@sha256:9f1a2c3b4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8"}
            ]
        }
    })
}

pub fn typical_pod() -> Pod {
    serde_json::from_value(typical_pod_json()).expect("typical Pod decodes")
}

/// The `index`-th of a stream of distinct Pods (own name, namespace and images).
pub fn distinct_pod(index: usize) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": format!("pod-{index}"), "namespace": format!("team-{}", index % 977)},
        "spec": {
            "initContainers": [{"name": "init", "image": format!("registry-{}.example.com/team-{}/init:{index}", index % 100, index % 100)}],
            "containers": [
                {"name": "a", "image": format!("ghcr.io/acme/svc-{index}:v1")},
                {"name": "b", "image": format!("app-{}.dkr.ecr.region-{}.amazonaws.com/x/y:{index}", index % 13, index % 100)},
                {"name": "c", "image": format!("library/tool-{index}")}
            ]
        }
    }))
    .expect("distinct Pod decodes")
}
