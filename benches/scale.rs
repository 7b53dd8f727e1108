//! Scale with the cluster: `serve` against the fake API server holding N namespaces, each
//! with a managed copy of the policy's secret. Per point: time to ready (watches listed and
//! synced, copies compared), RSS once settled, then a rotation of the source and the time
//! until every copy carries the new content, and RSS after it. `serve`'s own CPU time is
//! reported next to wall time because the fake API server (in this process) is itself slow.
//!
//! `cargo bench --bench scale` runs 1k/3k/10k (override: `SCALE_POINTS=1000,3000`);
//! `cargo test --benches` runs one small point.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "../tests/cluster_support/mod.rs"]
mod cluster_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cluster_support::{
    POLICY_CM, SECRET, SOURCE_NS, WEBHOOK_NS, Webhook, policy_configmap, policy_yaml,
};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use pullsecret_injector::k8s::{
    ANNOTATION_SOURCE, ANNOTATION_SOURCE_HASH, LABEL_MANAGED_BY, MANAGED_BY, content_hash,
};
use serde_json::{Value, json};
use support::fake_apiserver::{FakeApiServer, Kind};
use support::serve::Options;
/// Every point must settle within this (the goal is 60 s for 10,000 namespaces).
const PHASE_DEADLINE: Duration = Duration::from_secs(300);

fn dockerconfigjson(token: &str) -> Vec<u8> {
    json!({"auths": {"registry.gitlab.com": {"username": "deploy", "password": token,
        "auth": base64_auth(token)}}})
    .to_string()
    .into_bytes()
}

fn base64_auth(token: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("deploy:{token}"))
}

fn source(token: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(SECRET.into()),
            namespace: Some(SOURCE_NS.into()),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        data: Some(BTreeMap::from([(
            ".dockerconfigjson".to_string(),
            ByteString(dockerconfigjson(token)),
        )])),
        ..Secret::default()
    }
}

/// What a real apiserver records for a write by `manager` (the fake does so only for apply):
/// the bulk the watch caches should not keep.
fn managed_fields(manager: &str, fields: Value) -> Value {
    json!([{"manager": manager, "operation": "Update", "apiVersion": "v1",
            "time": "2026-11-30T10:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": fields}])
}

fn copy_of(source: &Secret, namespace: &str) -> Value {
    let mut copy = serde_json::to_value(source).expect("secret encodes");
    copy["metadata"] = json!({
        "name": SECRET,
        "namespace": namespace,
        "labels": {LABEL_MANAGED_BY: MANAGED_BY},
        "annotations": {
            ANNOTATION_SOURCE: format!("{SOURCE_NS}/{SECRET}"),
            ANNOTATION_SOURCE_HASH: content_hash(source),
        },
        "managedFields": managed_fields("pullsecret-injector", json!({
            "f:data": {".": {}, "f:.dockerconfigjson": {}},
            "f:metadata": {"f:annotations": {".": {}, format!("f:{ANNOTATION_SOURCE}"): {},
                                             format!("f:{ANNOTATION_SOURCE_HASH}"): {}},
                           "f:labels": {".": {}, format!("f:{LABEL_MANAGED_BY}"): {}}},
            "f:type": {}
        })),
    });
    copy
}

fn namespace(name: &str) -> Value {
    json!({"metadata": {
        "name": name,
        "labels": {"kubernetes.io/metadata.name": name, "team": "shop"},
        "managedFields": managed_fields("kubectl-create", json!({
            "f:metadata": {"f:labels": {".": {}, "f:kubernetes.io/metadata.name": {}, "f:team": {}}}
        })),
    }})
}

/// (RSS in MiB, CPU seconds) of a process, from /proc.
fn usage(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status_kib(&status, "VmRSS:");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at the state, field 3.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after the state; USER_HZ is 100
    // on Linux.
    (rss_kib / 1024.0, (ticks(11) + ticks(12)) / 100.0)
}

/// A `kB` field of /proc/PID/status.
fn status_kib(status: &str, field: &str) -> f64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Anonymous RSS in MiB (the heap and stacks, without the mapped binary and libraries).
fn anon_rss(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status_kib(&status, "RssAnon:") / 1024.0
}

/// Waits until RSS stops moving (three looks 500 ms apart within 1 %), bounded.
async fn settled_rss(pid: u32) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = usage(pid).0;
    let mut steady = 0;
    while steady < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = usage(pid).0;
        steady = if (now - last).abs() <= last * 0.01 {
            steady + 1
        } else {
            0
        };
        last = now;
    }
    last
}

fn copies_with_hash(api: &FakeApiServer, hash: &str) -> usize {
    api.list(Kind::Secrets, None)
        .iter()
        .filter(|s| s.pointer("/metadata/namespace").and_then(Value::as_str) != Some(SOURCE_NS))
        .filter(|s| {
            s.pointer("/metadata/annotations")
                .and_then(|a| a.get(ANNOTATION_SOURCE_HASH))
                .and_then(Value::as_str)
                == Some(hash)
        })
        .count()
}

struct Point {
    namespaces: usize,
    ready: Duration,
    ready_cpu: f64,
    rss_settled: f64,
    anon_settled: f64,
    rotation: Duration,
    rotation_cpu: f64,
    rss_after: f64,
}

async fn point(namespaces: usize) -> Point {
    let api = FakeApiServer::start().await;
    api.put_namespace(WEBHOOK_NS, &[]);
    api.put_namespace(SOURCE_NS, &[]);
    api.put_configmap(&policy_configmap(&policy_yaml(SECRET)));
    let v1 = source("token-v1");
    api.put_secret(&v1);
    for i in 0..namespaces {
        let ns = format!("team-{i:05}");
        api.put(Kind::Namespaces, namespace(&ns));
        api.put(Kind::Secrets, copy_of(&v1, &ns));
    }

    let options = Options {
        // The harness finds the listeners in serve's INFO `listening` line; everything else
        // at WARN, so 10,000 `copy created` lines do not cost the measured CPU.
        rust_log: "warn,pullsecret_injector::cmd::serve=info",
        startup: PHASE_DEADLINE,
        // As deployed: a backtrace captured (and resolved) per logged error costs memory.
        env_remove: vec!["RUST_BACKTRACE".into(), "RUST_LIB_BACKTRACE".into()],
        ..Webhook::options(api.kubeconfig_path())
    };
    let started = Instant::now();
    let serve = Webhook::launch(&["--policy-configmap", POLICY_CM], options).await;
    serve.wait_ready_within(PHASE_DEADLINE).await;
    let ready = started.elapsed();
    let (_, ready_cpu) = usage(serve.pid());
    let rss_settled = settled_rss(serve.pid()).await;
    let anon_settled = anon_rss(serve.pid());

    // Rotation: the source changes once; every copy must follow.
    let v2 = source("token-v2");
    let wanted = content_hash(&v2);
    let (_, cpu_before) = usage(serve.pid());
    let started = Instant::now();
    api.put_secret(&v2);
    let rv_goal = api.resource_version() + namespaces as u64;
    loop {
        // The resourceVersion moves once per copy written: a cheap look while waiting.
        if api.resource_version() >= rv_goal && copies_with_hash(&api, &wanted) == namespaces {
            break;
        }
        assert!(
            started.elapsed() < PHASE_DEADLINE,
            "{namespaces} namespaces: rotation not done within {PHASE_DEADLINE:?} ({} of {namespaces} copies)",
            copies_with_hash(&api, &wanted)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rotation = started.elapsed();
    let (_, cpu_after) = usage(serve.pid());
    let rss_after = settled_rss(serve.pid()).await;
    serve.stop();
    Point {
        namespaces,
        ready,
        ready_cpu,
        rss_settled,
        anon_settled,
        rotation,
        rotation_cpu: cpu_after - cpu_before,
        rss_after,
    }
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let points: Vec<usize> = match std::env::var("SCALE_POINTS") {
        Ok(list) => list
            .split(',')
            .filter_map(|n| n.trim().parse().ok())
            .collect(),
        Err(_) if bench => vec![1_000, 3_000, 10_000],
        Err(_) => vec![20],
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!(
        "{:>10} {:>9} {:>10} {:>9} {:>10} {:>11} {:>13} {:>10}",
        "namespaces",
        "ready s",
        "serve cpu",
        "RSS MiB",
        "anon MiB",
        "rotation s",
        "rotation cpu",
        "RSS after"
    );
    for n in points {
        let p = runtime.block_on(point(n));
        println!(
            "{:>10} {:>9.1} {:>10.1} {:>9.1} {:>10.1} {:>11.1} {:>13.1} {:>10.1}",
            p.namespaces,
            p.ready.as_secs_f64(),
            p.ready_cpu,
            p.rss_settled,
            p.anon_settled,
            p.rotation.as_secs_f64(),
            p.rotation_cpu,
            p.rss_after
        );
    }
}
