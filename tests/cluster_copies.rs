//! Copies at admission, end to end: the real `serve` binary against the fake API server,
//! AdmissionReviews over verified HTTPS.

mod cluster_support;
mod support;

use cluster_support::*;
use futures::future::join_all;
use k8s_openapi::api::core::v1::Secret;
use serde_json::Value;
use support::fake_apiserver::{Kind, Match};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_pod_in_new_namespace_gets_copy_before_response_and_next_100_pods_cost_no_api_call() {
    let api = cluster().await;
    let hook = Webhook::start(&api, &[]).await;
    api.put_namespace("team-a", &[]);

    let (response, _) = hook.admit("team-a", IMAGE, false).await;
    assert_eq!(response["allowed"], true);
    assert_eq!(injected_names(&response), vec![SECRET.to_string()]);
    assert!(warnings(&response).is_empty(), "{:?}", warnings(&response));

    // No polling: the copy must exist when the answer arrives.
    let copy = api
        .get_secret("team-a", SECRET)
        .expect("copy exists before the response");
    let source = api.get_secret(SOURCE_NS, SECRET).expect("source");
    assert!(is_managed_copy(&copy), "{:?}", copy.metadata);
    assert_eq!(copy.type_, source.type_);
    assert_eq!(data_of(&copy), data_of(&source));
    let hash = copy.metadata.annotations.clone().unwrap_or_default()[HASH_ANNOTATION].clone();
    assert!(hash.starts_with("sha256:") && hash.len() == 71, "{hash}");
    assert!(copy.metadata.owner_references.is_none());
    assert_eq!(
        hook.metric("pullsecret_injector_secret_copies_total{operation=\"created\"}")
            .await,
        1.0
    );

    // Further Pods in that namespace need no API call at all.
    api.clear_requests();
    for batch in 0..10 {
        let answers = join_all((0..10).map(|_| hook.admit("team-a", IMAGE, false))).await;
        for (response, _) in answers {
            assert_eq!(
                injected_names(&response),
                vec![SECRET.to_string()],
                "batch {batch}"
            );
            assert!(warnings(&response).is_empty(), "{:?}", warnings(&response));
        }
    }
    let calls: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.is_api_call())
        .collect();
    assert!(
        calls.is_empty(),
        "API calls during 100 admissions: {calls:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_gets_the_reference_and_writes_nothing() {
    let api = cluster().await;
    let hook = Webhook::start(&api, &[]).await;
    api.put_namespace("team-dry", &[]);
    api.put_namespace("team-wet", &[]);

    let (response, _) = hook.admit("team-dry", IMAGE, true).await;
    assert_eq!(injected_names(&response), vec![SECRET.to_string()]);
    // A real admission afterwards is a barrier: its copy exists, the dry run's does not.
    let (response, _) = hook.admit("team-wet", IMAGE, false).await;
    assert_eq!(injected_names(&response), vec![SECRET.to_string()]);
    assert!(api.get_secret("team-wet", SECRET).is_some());
    assert!(
        api.get_secret("team-dry", SECRET).is_none(),
        "dry run created a copy"
    );
    assert_eq!(
        api.count(&Match::any().method("POST").namespace("team-dry")),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmanaged_secret_of_the_same_name_is_untouched_with_warning_and_event() {
    let api = cluster().await;
    api.put_namespace("team-u", &[]);
    let theirs = api.put_secret(&pull_secret("team-u", SECRET, "their-own-token"));
    let before = serde_json::to_value(&theirs).expect("json");
    let hook = Webhook::start(&api, &[]).await;

    for _ in 0..2 {
        let (response, _) = hook.admit("team-u", IMAGE, false).await;
        assert_eq!(response["allowed"], true);
        assert_eq!(
            injected_names(&response),
            vec![SECRET.to_string()],
            "still referenced"
        );
        let warns = warnings(&response);
        assert!(
            warns
                .iter()
                .any(|w| w.contains(SECRET) && w.contains("not managed")),
            "{warns:?}"
        );
    }
    let after =
        serde_json::to_value(api.get_secret("team-u", SECRET).expect("still there")).expect("json");
    assert_eq!(before, after, "unmanaged Secret was modified");
    assert_eq!(
        api.count(
            &Match::any()
                .resource("secrets")
                .namespace("team-u")
                .method("PUT")
        ) + api.count(
            &Match::any()
                .resource("secrets")
                .namespace("team-u")
                .method("PATCH")
        ) + api.count(
            &Match::any()
                .resource("secrets")
                .namespace("team-u")
                .method("DELETE")
        ),
        0
    );

    let event = eventually("UnmanagedSecretExists event", DEADLINE, || async {
        api.list(Kind::EventsV1, Some("team-u"))
            .into_iter()
            .chain(api.list(Kind::Events, Some("team-u")))
            .find(|e| e["reason"] == "UnmanagedSecretExists")
    })
    .await;
    let regarding = event
        .get("regarding")
        .or_else(|| event.get("involvedObject"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(regarding["kind"], "Secret");
    assert_eq!(regarding["name"], SECRET);
    assert_eq!(event["type"], "Warning");
    assert_eq!(
        hook.metric("pullsecret_injector_unmanaged_conflicts_total")
            .await,
        1.0,
        "counted once per Secret"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_non_pull_secret_source_copies_nothing_and_says_so() {
    let api = cluster().await;
    let policy = format!(
        "{}  - name: ghcr\n    registries: [\"ghcr.io/acme/\"]\n    secret: ghcr-pull\n  - name: quay\n    registries: [\"quay.io/acme/\"]\n    secret: quay-opaque\n",
        policy_yaml(SECRET)
    );
    api.put_configmap(&policy_configmap(&policy));
    let mut opaque = pull_secret(SOURCE_NS, "quay-opaque", "x");
    opaque.type_ = Some("Opaque".into());
    api.put_secret(&opaque);
    api.put_namespace("team-m", &[]);
    let hook = Webhook::start(&api, &[]).await;

    let (response, _) = hook.admit("team-m", "ghcr.io/acme/tool:1", false).await;
    assert_eq!(injected_names(&response), vec!["ghcr-pull".to_string()]);
    let warns = warnings(&response);
    assert!(
        warns
            .iter()
            .any(|w| w.contains("ghcr-pull") && w.contains("not found")),
        "{warns:?}"
    );

    let (response, _) = hook.admit("team-m", "quay.io/acme/tool:1", false).await;
    let warns = warnings(&response);
    assert!(
        warns
            .iter()
            .any(|w| w.contains("quay-opaque") && w.contains("Opaque")),
        "{warns:?}"
    );

    let secrets: Vec<Secret> = api
        .list(Kind::Secrets, Some("team-m"))
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect();
    assert!(
        secrets.is_empty(),
        "nothing may be copied: {:?}",
        secrets.iter().map(|s| &s.metadata.name).collect::<Vec<_>>()
    );
    assert_eq!(
        api.count(&Match::any().method("POST").resource("secrets")),
        0
    );

    eventually(
        "a log line names the unusable sources",
        DEADLINE,
        || async {
            let logs = hook.logs();
            let said = |name: &str| {
                logs.iter()
                    .any(|l| l.contains("source secret unusable") && l.contains(name))
            };
            (said("ghcr-pull") && said("quay-opaque")).then_some(())
        },
    )
    .await;

    // The namespace holding the sources needs no copy of its own.
    let (response, _) = hook.admit(SOURCE_NS, IMAGE, false).await;
    assert!(warnings(&response).is_empty(), "{:?}", warnings(&response));
    assert_eq!(
        api.count(&Match::any().method("POST").resource("secrets")),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_selectors_see_namespace_labels_from_the_watch_cache() {
    let api = cluster().await;
    let policy = format!(
        "{}    namespaces:\n      selector: {{matchLabels: {{registry-access: gitlab}}}}\n",
        policy_yaml(SECRET)
    );
    api.put_configmap(&policy_configmap(&policy));
    api.put_namespace("team-in", &[("registry-access", "gitlab")]);
    api.put_namespace("team-out", &[]);
    let hook = Webhook::start(&api, &[]).await;
    api.clear_requests();

    let (response, _) = hook.admit("team-in", IMAGE, false).await;
    assert_eq!(injected_names(&response), vec![SECRET.to_string()]);
    let (response, _) = hook.admit("team-out", IMAGE, false).await;
    assert!(injected_names(&response).is_empty());
    assert!(api.get_secret("team-out", SECRET).is_none());
    // Labels came from the cache: no namespace was read during admission.
    assert_eq!(
        api.count(&Match::any().resource("namespaces").watch(false)),
        0
    );

    // A label added later is seen through the watch.
    api.put_namespace("team-out", &[("registry-access", "gitlab")]);
    eventually("label change reaches the cache", DEADLINE, || async {
        let (response, _) = hook.admit("team-out", IMAGE, false).await;
        (injected_names(&response) == vec![SECRET.to_string()]).then_some(())
    })
    .await;
    assert!(
        api.get_secret("team-out", SECRET)
            .is_some_and(|s| is_managed_copy(&s))
    );
}
