//! plan(): the matching cost of a typical Pod against policies of growing size, and the
//! same Pod after a long stream of other Pods (plan() keeps no state between calls).

mod common;

use std::hint::black_box;

use common::{WEBHOOK_NS, distinct_pod, policy_yaml, typical_pod};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pullsecret_injector::plan::{Namespace, Operation, PodFacts, plan};
use pullsecret_injector::policy::Policy;

const RULE_COUNTS: [usize; 4] = [1, 10, 100, 1000];

fn namespace() -> Namespace<'static> {
    Namespace {
        name: "team-a",
        labels: None,
    }
}

fn rules(c: &mut Criterion) {
    let pod = typical_pod();
    let pod = PodFacts::from_pod(&pod);
    let mut group = c.benchmark_group("plan/rules");
    for &count in &RULE_COUNTS {
        let policy = Policy::parse(&policy_yaml(count), "bench.yaml").expect("bench policy");
        // Same useful work at every size: the last rule matches, one secret is added.
        let decision = plan(&policy, &pod, &namespace(), Operation::Create, WEBHOOK_NS);
        assert_eq!(decision.secrets.len(), 1, "{count} rules");
        assert!(!decision.patch.0.is_empty(), "{count} rules");

        group.throughput(Throughput::Elements(count as u64));
        group.bench_with_input(BenchmarkId::from_parameter(count), &policy, |b, policy| {
            b.iter(|| {
                plan(
                    black_box(policy),
                    black_box(&pod),
                    &namespace(),
                    Operation::Create,
                    WEBHOOK_NS,
                )
            })
        });
    }
    group.finish();
}

fn history(c: &mut Criterion) {
    let pod = typical_pod();
    let pod = PodFacts::from_pod(&pod);
    let policy = Policy::parse(&policy_yaml(100), "bench.yaml").expect("bench policy");
    let mut group = c.benchmark_group("plan/after_pods");
    // `cargo test --all-targets` runs each benchmark once, unoptimized: keep that quick.
    let long = if std::env::args().any(|a| a == "--bench") {
        100_000
    } else {
        100
    };
    let mut planned = 0;
    for before in [0usize, long] {
        // Plan `before` distinct Pods (own names, namespaces, images) first.
        while planned < before {
            let other = distinct_pod(planned);
            let ns = other.metadata.namespace.clone().unwrap_or_default();
            let namespace = Namespace {
                name: &ns,
                labels: None,
            };
            black_box(plan(
                &policy,
                &PodFacts::from_pod(&other),
                &namespace,
                Operation::Create,
                WEBHOOK_NS,
            ));
            planned += 1;
        }
        group.bench_function(BenchmarkId::from_parameter(before), |b| {
            b.iter(|| {
                plan(
                    black_box(&policy),
                    black_box(&pod),
                    &namespace(),
                    Operation::Create,
                    WEBHOOK_NS,
                )
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion_config();
    targets = rules, history
}
criterion_main!(benches);
