//! Parsing: image references (a typical mix and the whole reference table), a 100-rule
//! policy document, and one registry pattern against one lookup target (the unit of work
//! plan() repeats for every rule and image).

mod common;

use std::hint::black_box;

use common::{policy_yaml, reference_table_images};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pullsecret_injector::keyring::{self, RegistryPattern};
use pullsecret_injector::policy::Policy;
use pullsecret_injector::reference::ImageRef;

/// What Pods commonly carry: familiar names, registries with ports, digests, ECR hosts.
const TYPICAL_IMAGES: [&str; 10] = [
    "nginx",
    "nginx:1.27",
    "library/redis:7-alpine",
    "docker.io/bitnami/postgresql:16.3.0",
    "ghcr.io/acme/shop/api:v3.2.1",
    "registry.example.com:5000/team-a/exporter@sha256:9f1a2c3b4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8",
    "123456789012.dkr.ecr.eu-west-1.amazonaws.com/batch/migrate:2026.07",
    "quay.io/prometheus/node-exporter:v1.8.2",
    "localhost:5000/dev/config-fetcher",
    "registry.k8s.io/pause:3.10",
];

fn image_refs(c: &mut Criterion) {
    let mut group = c.benchmark_group("imageref/parse");
    group.throughput(Throughput::Elements(TYPICAL_IMAGES.len() as u64));
    group.bench_function("typical_10", |b| {
        b.iter(|| {
            for image in TYPICAL_IMAGES {
                let _ = black_box(ImageRef::parse(black_box(image)));
            }
        })
    });
    let table = reference_table_images();
    group.throughput(Throughput::Elements(table.len() as u64));
    group.bench_function(format!("reference_table_{}", table.len()), |b| {
        b.iter(|| {
            for image in &table {
                let _ = black_box(ImageRef::parse(black_box(image)));
            }
        })
    });
    group.finish();
}

fn policy(c: &mut Criterion) {
    let mut group = c.benchmark_group("policy/parse");
    for rules in [10usize, 100] {
        let text = policy_yaml(rules);
        Policy::parse(&text, "bench.yaml").expect("bench policy is valid");
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(format!("{rules}_rules"), |b| {
            b.iter(|| Policy::parse(black_box(&text), "bench.yaml"))
        });
    }
    group.finish();
}

fn registry_match(c: &mut Criterion) {
    let mut group = c.benchmark_group("keyring/match");
    let target = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/batch/migrate";
    for pattern in ["*.dkr.ecr.*.amazonaws.com", "registry.gitlab.com/acme/"] {
        // What Rule::matches_target does per pattern: both strings parsed on every call.
        group.bench_function(format!("urls_match/{pattern}"), |b| {
            b.iter(|| keyring::urls_match(black_box(pattern), black_box(target)))
        });
        // The pattern parsed once; only the target is parsed per call.
        let compiled = RegistryPattern::parse(pattern).expect("pattern parses");
        group.bench_function(format!("compiled/{pattern}"), |b| {
            b.iter(|| black_box(&compiled).matches(black_box(target)))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion_config();
    targets = image_refs, policy, registry_match
}
criterion_main!(benches);
