//! Heap allocations per admission: a counting global allocator around `respond` (the whole
//! decision: decode, plan, encode) on every AdmissionReview sample, and around `plan` alone on
//! the typical Pod against growing policies. Counts, not times: they do not depend on the
//! machine's load, so they can be compared across commits directly.
//!
//! `cargo bench --bench alloc` prints one line per case; `cargo test --benches` runs it with
//! few iterations.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{SAMPLES_POLICY, WEBHOOK_NS, admission_samples, policy_yaml, typical_pod_json};
use pullsecret_injector::admission::respond;
use pullsecret_injector::plan::{Namespace, Operation, PodFacts, plan};
use pullsecret_injector::policy::Policy;
use pullsecret_injector::state::AppState;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the counters are plain
// atomics and never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: same layout as given to us.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A growth is an allocation for our purpose: it costs a call into the allocator.
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// (allocations, bytes) per call of `f`, averaged over `iterations` after one warm-up call.
fn per_call(iterations: u64, mut f: impl FnMut()) -> (f64, f64) {
    f();
    let (a0, b0) = (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    for _ in 0..iterations {
        f();
    }
    let (a1, b1) = (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    (
        (a1 - a0) as f64 / iterations as f64,
        (b1 - b0) as f64 / iterations as f64,
    )
}

fn main() {
    let iterations = if std::env::args().any(|a| a == "--bench") {
        2_000
    } else {
        5
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    let policy = Policy::parse(SAMPLES_POLICY, "bench.yaml").expect("bench policy");
    let state = AppState::offline(Some(policy), WEBHOOK_NS);
    println!("{:<44} {:>12} {:>12}", "case", "allocs/call", "bytes/call");
    for (name, body) in admission_samples() {
        let (allocs, bytes) = per_call(iterations, || {
            let answer = runtime
                .block_on(respond(&state, black_box(&body), None))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            black_box(answer);
        });
        println!(
            "{:<44} {allocs:>12.1} {bytes:>12.0}",
            format!("alloc/respond/{name}")
        );
    }

    let pod = serde_json::to_vec(&typical_pod_json()).expect("typical Pod encodes");
    let facts = PodFacts::from_json(&pod).expect("typical Pod decodes");
    let namespace = Namespace {
        name: "team-a",
        labels: None,
    };
    for count in [1usize, 10, 100, 1000] {
        let policy = Policy::parse(&policy_yaml(count), "bench.yaml").expect("bench policy");
        let (allocs, bytes) = per_call(iterations, || {
            black_box(plan(
                &policy,
                black_box(&facts),
                &namespace,
                Operation::Create,
                WEBHOOK_NS,
            ));
        });
        println!(
            "{:<44} {allocs:>12.1} {bytes:>12.0}",
            format!("alloc/plan/rules/{count}")
        );
    }
}
