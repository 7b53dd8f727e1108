//! The policy from the cluster: one ConfigMap watched by name. Readiness waits for it; a bad
//! edit keeps the last good policy and says so; a good edit applies within 2 s.

mod cluster_support;
mod support;

use std::time::{Duration, Instant};

use cluster_support::*;

/// What the issue promises for a valid ConfigMap edit.
const RELOAD_BUDGET: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_the_policy_configmap_exists() {
    let api = support::fake_apiserver::FakeApiServer::start().await;
    api.put_namespace(WEBHOOK_NS, &[]);
    api.put_namespace(SOURCE_NS, &[]);
    api.put_secret(&pull_secret(SOURCE_NS, SECRET, "token-v1"));
    let hook = Webhook::spawn(api.kubeconfig_path(), &[]).await;

    let (code, body) = eventually("readyz names the missing ConfigMap", DEADLINE, || async {
        let (code, body) = hook.readyz().await;
        body.contains(POLICY_CM).then_some((code, body))
    })
    .await;
    assert_ne!(code, 200, "{body}");

    api.put_configmap(&policy_configmap(&policy_yaml(SECRET)));
    hook.wait_ready().await;
    let (_, body) = hook.readyz().await;
    assert!(
        body.contains("policy") && body.contains("secrets") && body.contains("namespaces"),
        "{body}"
    );

    // Only that one ConfigMap is ever read, by name.
    let reads = api.requests();
    let cm_reads: Vec<_> = reads
        .iter()
        .filter(|r| r.resource.as_deref() == Some("configmaps"))
        .collect();
    assert!(!cm_reads.is_empty());
    for r in cm_reads {
        assert_eq!(r.namespace.as_deref(), Some(WEBHOOK_NS), "{r:?}");
        assert!(r.query.contains("fieldSelector=metadata.name"), "{r:?}");
    }
    // Secrets: never an unfiltered list or watch.
    for r in reads.iter().filter(|r| {
        r.resource.as_deref() == Some("secrets") && r.method == "GET" && r.name.is_none()
    }) {
        assert!(
            r.query.contains("fieldSelector=metadata.name"),
            "unrestricted Secret read: {r:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configmap_edit_keeps_the_old_policy_and_a_good_one_applies_within_2s() {
    let api = cluster().await;
    api.put_namespace("team-a", &[]);
    let hook = Webhook::start(&api, &[]).await;
    assert_eq!(
        hook.metric("pullsecret_injector_policy_generation").await,
        1.0
    );

    api.put_configmap(&policy_configmap("sourceNamespace: x\nrules:\n  - name: broken\n    registries: []\n    secret: s\n    surprise: true\n"));
    hook.wait_metric(
        "pullsecret_injector_policy_reload_errors_total",
        1.0,
        DEADLINE,
    )
    .await;
    let (code, body) = hook.readyz().await;
    assert_eq!(
        code, 200,
        "a bad edit must not take the webhook out of service: {body}"
    );
    assert!(body.contains("rejected"), "{body}");
    assert!(hook.logs().iter().any(|l| l.contains("policy rejected")));
    assert_eq!(
        hook.metric("pullsecret_injector_policy_generation").await,
        1.0
    );
    let (response, _) = hook.admit("team-a", IMAGE, false).await;
    assert_eq!(
        injected_names(&response),
        vec![SECRET.to_string()],
        "old policy still in use"
    );

    api.put_secret(&pull_secret(SOURCE_NS, "other-token", "x"));
    api.put_configmap(&policy_configmap(&policy_yaml("other-token")));
    let edited = Instant::now();
    eventually("new policy in use", RELOAD_BUDGET, || async {
        let (response, _) = hook.admit("team-a", IMAGE, false).await;
        (injected_names(&response) == vec!["other-token".to_string()]).then_some(())
    })
    .await;
    assert!(edited.elapsed() < RELOAD_BUDGET);
    assert_eq!(
        hook.metric("pullsecret_injector_policy_generation").await,
        2.0
    );
    let (code, body) = hook.readyz().await;
    assert_eq!(code, 200);
    assert!(!body.contains("rejected"), "{body}");

    // The new name is watched and copied.
    eventually("copy of the newly named secret", DEADLINE, || async {
        if api.get_secret("team-a", "other-token").is_none() {
            hook.admit("team-a", IMAGE, false).await;
        }
        api.get_secret("team-a", "other-token").filter(|s| {
            s.metadata
                .annotations
                .clone()
                .unwrap_or_default()
                .get(SOURCE_ANNOTATION)
                .map(String::as_str)
                == Some(&format!("{SOURCE_NS}/other-token") as &str)
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_file_with_a_cluster_also_copies_and_follows_file_edits() {
    let api = cluster().await;
    api.put_namespace("team-f", &[]);
    api.put_secret(&pull_secret(SOURCE_NS, "other-token", "x"));
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, policy_yaml(SECRET)).expect("write policy");
    let path = file.to_str().expect("utf-8 path");
    let hook = Webhook::spawn_raw(
        api.kubeconfig_path(),
        &["--policy", path, "--reload-interval", "100ms"],
    )
    .await;
    hook.wait_ready().await;

    let (response, _) = hook.admit("team-f", IMAGE, false).await;
    assert_eq!(injected_names(&response), vec![SECRET.to_string()]);
    assert!(
        api.get_secret("team-f", SECRET)
            .is_some_and(|s| is_managed_copy(&s))
    );

    // A new secret name in the file gets its own watch, then copies.
    std::fs::write(&file, policy_yaml("other-token")).expect("write policy");
    eventually(
        "copy of the secret the edited file names",
        DEADLINE,
        || async {
            let (response, _) = hook.admit("team-f", IMAGE, false).await;
            (injected_names(&response) == vec!["other-token".to_string()]
                && warnings(&response).is_empty())
            .then(|| api.get_secret("team-f", "other-token"))
            .flatten()
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_the_source_namespace_moves_the_copies_to_the_new_source() {
    let api = cluster().await;
    api.put_namespace("team-s", &[]);
    let hook = Webhook::start(&api, &[]).await;
    hook.admit("team-s", IMAGE, false).await;
    assert!(api.get_secret("team-s", SECRET).is_some());

    api.put_namespace("creds-b", &[]);
    let moved = api.put_secret(&pull_secret("creds-b", SECRET, "token-b"));
    let policy = policy_yaml(SECRET).replace(SOURCE_NS, "creds-b");
    api.put_configmap(&policy_configmap(&policy));
    eventually("copy follows the new source", DEADLINE, || async {
        api.get_secret("team-s", SECRET).filter(|copy| {
            let from = copy.metadata.annotations.clone().unwrap_or_default();
            data_of(copy) == data_of(&moved)
                && from.get(SOURCE_ANNOTATION).map(String::as_str)
                    == Some(&format!("creds-b/{SECRET}") as &str)
        })
    })
    .await;
}

/// The watch caches keep copies without their data: a namespace that holds a copy and becomes
/// the source namespace must be read again whole before anything is copied from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_holding_a_copy_can_become_the_source_namespace() {
    let api = cluster().await;
    api.put_namespace("team-s", &[]);
    api.put_namespace("team-t", &[]);
    let hook = Webhook::start(&api, &[]).await;
    hook.admit("team-s", IMAGE, false).await;
    hook.admit("team-t", IMAGE, false).await;
    let source = api.get_secret(SOURCE_NS, SECRET).expect("source");
    assert!(api.get_secret("team-t", SECRET).is_some());

    let policy = policy_yaml(SECRET).replace(SOURCE_NS, "team-t");
    api.put_configmap(&policy_configmap(&policy));
    eventually(
        "copy names its new source, with the data",
        DEADLINE,
        || async {
            api.get_secret("team-s", SECRET).filter(|copy| {
                let from = copy.metadata.annotations.clone().unwrap_or_default();
                from.get(SOURCE_ANNOTATION).map(String::as_str)
                    == Some(&format!("team-t/{SECRET}") as &str)
            })
        },
    )
    .await;
    let copy = api.get_secret("team-s", SECRET).expect("copy");
    assert!(!data_of(&source).is_empty());
    assert_eq!(
        data_of(&copy),
        data_of(&source),
        "never a copy without data"
    );
}
