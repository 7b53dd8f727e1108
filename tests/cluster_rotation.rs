//! Copies follow their source: rotations, restarts, hand edits, type changes, and several
//! replicas at once. The real `serve` binary against the fake API server.

mod cluster_support;
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use cluster_support::*;
use futures::future::join_all;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use support::fake_apiserver::FakeApiServer;

/// The budget the issue gives a rotation to reach every copy.
const ROTATION_BUDGET: Duration = Duration::from_secs(5);

fn namespaces(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:02}")).collect()
}

fn put_namespaces(api: &FakeApiServer, namespaces: &[String]) {
    for ns in namespaces {
        api.put_namespace(ns, &[]);
    }
}

/// `n` new namespaces named after `prefix`, a webhook, and one Pod admitted in each namespace
/// (so each has its copy).
async fn copies_in_new_namespaces(
    api: &FakeApiServer,
    prefix: &str,
    n: usize,
) -> (Vec<String>, Webhook) {
    let spaces = namespaces(prefix, n);
    put_namespaces(api, &spaces);
    let hook = Webhook::start(api, &[]).await;
    admit_everywhere(&hook, &spaces).await;
    (spaces, hook)
}

async fn admit_everywhere(hook: &Webhook, namespaces: &[String]) {
    for chunk in namespaces.chunks(10) {
        let answers = join_all(chunk.iter().map(|ns| hook.admit(ns, IMAGE, false))).await;
        for (response, _) in answers {
            assert_eq!(injected_names(&response), vec![SECRET.to_string()]);
            assert!(warnings(&response).is_empty(), "{:?}", warnings(&response));
        }
    }
}

fn rotate(api: &FakeApiServer, token: &str) -> BTreeMap<String, ByteString> {
    let source = api.put_secret(&pull_secret(SOURCE_NS, SECRET, token));
    data_of(&source)
}

/// Namespaces whose copy does not (yet) hold `data`.
fn behind(
    api: &FakeApiServer,
    namespaces: &[String],
    data: &BTreeMap<String, ByteString>,
) -> Vec<String> {
    namespaces
        .iter()
        .filter(|ns| {
            api.get_secret(ns, SECRET)
                .is_none_or(|copy| !is_managed_copy(&copy) || &data_of(&copy) != data)
        })
        .cloned()
        .collect()
}

async fn all_follow(
    api: &FakeApiServer,
    namespaces: &[String],
    data: &BTreeMap<String, ByteString>,
    budget: Duration,
) {
    let started = Instant::now();
    let mut last = Vec::new();
    while started.elapsed() < budget {
        last = behind(api, namespaces, data);
        if last.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "after {budget:?}, {} copies still behind their source: {last:?}",
        last.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_rotation_reaches_copies_in_50_namespaces_within_5s_also_across_a_restart() {
    let api = cluster().await;
    let (spaces, hook) = copies_in_new_namespaces(&api, "rot", 50).await;
    assert!(
        behind(
            &api,
            &spaces,
            &data_of(&api.get_secret(SOURCE_NS, SECRET).expect("source"))
        )
        .is_empty()
    );

    let v2 = rotate(&api, "token-v2");
    all_follow(&api, &spaces, &v2, ROTATION_BUDGET).await;
    assert!(
        hook.metric("pullsecret_injector_secret_copies_total{operation=\"updated\"}")
            .await
            >= 50.0
    );

    // Rotate while the webhook is down: the restarted one catches up on its own.
    let mut logs = hook.logs();
    hook.stop();
    let v3 = rotate(&api, "token-v3");
    let hook = Webhook::spawn(api.kubeconfig_path(), &[]).await;
    all_follow(&api, &spaces, &v3, ROTATION_BUDGET).await;
    hook.wait_ready().await;
    // Every copy still says where it comes from and which content it holds.
    for ns in &spaces {
        let copy = api.get_secret(ns, SECRET).expect("copy");
        let annotations = copy.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations[SOURCE_ANNOTATION],
            format!("{SOURCE_NS}/{SECRET}")
        );
    }
    // Secret data never reaches the log, in any encoding it travels in.
    logs.extend(hook.logs());
    let logs = logs.join("\n");
    for token in ["token-v1", "token-v2", "token-v3"] {
        let json = dockerconfigjson(token);
        let as_data = base64::engine::general_purpose::STANDARD.encode(&json);
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("deploy:{token}"));
        for needle in [token.to_string(), as_data, auth] {
            assert!(!logs.contains(&needle), "secret data in the log");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_edited_copy_is_restored_and_counted_as_drift() {
    let api = cluster().await;
    api.put_namespace("team-d", &[]);
    let hook = Webhook::start(&api, &[]).await;
    hook.admit("team-d", IMAGE, false).await;
    let source = data_of(&api.get_secret(SOURCE_NS, SECRET).expect("source"));

    let mut edited: Secret = api.get_secret("team-d", SECRET).expect("copy");
    edited.data = Some(BTreeMap::from([(
        ".dockerconfigjson".to_string(),
        ByteString(dockerconfigjson("hand-made")),
    )]));
    edited.metadata.resource_version = None;
    api.put_secret(&edited);

    all_follow(&api, &["team-d".to_string()], &source, DEADLINE).await;
    hook.wait_metric("pullsecret_injector_drift_repaired_total", 1.0, DEADLINE)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_type_change_recreates_the_copies() {
    let api = cluster().await;
    let (spaces, hook) = copies_in_new_namespaces(&api, "typ", 3).await;

    // type is immutable: the source is replaced by a legacy .dockercfg Secret of the same name.
    api.remove(support::fake_apiserver::Kind::Secrets, SOURCE_NS, SECRET);
    let mut legacy = pull_secret(SOURCE_NS, SECRET, "legacy");
    legacy.type_ = Some("kubernetes.io/dockercfg".into());
    legacy.data = Some(BTreeMap::from([(
        ".dockercfg".to_string(),
        ByteString(br#"{"registry.gitlab.com":{"auth":"ZGVwbG95OmxlZ2FjeQ=="}}"#.to_vec()),
    )]));
    let legacy = api.put_secret(&legacy);

    all_follow(&api, &spaces, &data_of(&legacy), DEADLINE).await;
    for ns in &spaces {
        let copy = api.get_secret(ns, SECRET).expect("copy");
        assert_eq!(
            copy.type_.as_deref(),
            Some("kubernetes.io/dockercfg"),
            "{ns}"
        );
    }
    drop(hook);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_admitting_in_the_same_new_namespaces_end_with_one_copy_each() {
    let api = cluster().await;
    let spaces = namespaces("race", 10);
    let hooks = join_all((0..3).map(|_| Webhook::start(&api, &[]))).await;
    put_namespaces(&api, &spaces);
    // Every namespace gets Pods through all three replicas at the same moment.
    let admissions = spaces
        .iter()
        .flat_map(|ns| hooks.iter().map(move |hook| hook.admit(ns, IMAGE, false)));
    for (response, _) in join_all(admissions).await {
        assert_eq!(response["allowed"], true);
        assert_eq!(injected_names(&response), vec![SECRET.to_string()]);
        assert!(
            warnings(&response).is_empty(),
            "no admission may fail: {:?}",
            warnings(&response)
        );
    }
    let source = data_of(&api.get_secret(SOURCE_NS, SECRET).expect("source"));
    assert!(behind(&api, &spaces, &source).is_empty());
    let mut created = 0.0;
    for hook in &hooks {
        created += hook
            .metric("pullsecret_injector_secret_copies_total{operation=\"created\"}")
            .await;
    }
    assert_eq!(
        created,
        spaces.len() as f64,
        "exactly one create succeeded per namespace"
    );

    // A rotation with three replicas: every copy follows, nobody fails on the races.
    let v2 = rotate(&api, "token-v2");
    all_follow(&api, &spaces, &v2, ROTATION_BUDGET).await;
    for hook in &hooks {
        assert_eq!(
            hook.metric("pullsecret_injector_secret_copies_total{operation=\"failed\"}")
                .await,
            0.0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_follow_after_watches_are_cut_and_their_history_expires() {
    let api = cluster().await;
    let (spaces, hook) = copies_in_new_namespaces(&api, "cut", 5).await;

    // Connections dropped mid-stream: the watches resume.
    api.drop_watches();
    let v2 = rotate(&api, "token-v2");
    all_follow(&api, &spaces, &v2, DEADLINE).await;

    // The resourceVersion they would resume from is gone (410): they list again.
    api.compact();
    api.drop_watches();
    let v3 = rotate(&api, "token-v3");
    all_follow(&api, &spaces, &v3, DEADLINE).await;
    hook.wait_ready().await;
}
