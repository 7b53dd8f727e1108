//! admission::respond end to end (decode, plan, patch, encode) on the shared AdmissionReview
//! samples, without a cluster (no Secret copies).

mod common;

use std::hint::black_box;

use common::{SAMPLES_POLICY, WEBHOOK_NS, admission_samples};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pullsecret_injector::admission::respond;
use pullsecret_injector::policy::Policy;
use pullsecret_injector::state::AppState;

fn samples(c: &mut Criterion) {
    let policy = Policy::parse(SAMPLES_POLICY, "bench.yaml").expect("bench policy");
    let state = AppState::offline(Some(policy), WEBHOOK_NS);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    let mut group = c.benchmark_group("admission/respond");
    for (name, body) in admission_samples() {
        let answer = runtime
            .block_on(respond(&state, &body, None))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        println!("{name}: {} ({} bytes in)", answer.result, body.len());
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(&name), &body, |b, body| {
            b.iter(|| {
                runtime
                    .block_on(respond(&state, black_box(body), None))
                    .map(|a| a.body)
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion_config();
    targets = samples
}
criterion_main!(benches);
