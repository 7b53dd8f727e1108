//! The admission warning, through the real `serve` against the fake API server: a Pod given a
//! Secret (injected, or already listed) that has no key the kubelet would use for its image, or
//! whose token has expired, gets a warning naming the Secret, the image and the reason, from
//! the watch caches alone, counted in a metric.

mod cluster_support;
mod support;

use base64::Engine as _;
use cluster_support::*;
use k8s_openapi::api::core::v1::Secret;
use serde_json::{Value, json};

const EXAMPLE_IMAGE: &str = "registry.example.com:5000/team/app:v1";
const ECR_IMAGE: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app:1";

fn policy() -> String {
    format!(
        "sourceNamespace: {SOURCE_NS}
rules:
  - name: gitlab
    registries: [\"registry.gitlab.com/acme/\"]
    secret: {SECRET}
  - name: example
    registries: [\"registry.example.com:5000\"]
    secret: example-pull
  - name: ecr
    registries: [\"*.dkr.ecr.*.amazonaws.com\"]
    secret: ecr-pull
"
    )
}

/// A registry Secret in the source namespace with one key.
fn source_secret(name: &str, key: &str, expires_at: Option<&str>) -> Secret {
    let auth = base64::engine::general_purpose::STANDARD.encode("robot:MARKER-pw-7f3a91");
    let body = json!({"auths": {key: {"auth": auth}}}).to_string();
    let mut value = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": SOURCE_NS},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode(body)},
    });
    if let Some(at) = expires_at {
        value["metadata"]["annotations"] = json!({"pullsecret-injector.io/expires-at": at});
    }
    serde_json::from_value(value).unwrap()
}

async fn cluster_with_mistakes() -> support::fake_apiserver::FakeApiServer {
    let api = cluster().await;
    api.put_configmap(&policy_configmap(&policy()));
    // The classic: the key has no port, the image has :5000.
    api.put_secret(&source_secret(
        "example-pull",
        "https://registry.example.com",
        None,
    ));
    // A minted token whose expiry has passed.
    api.put_secret(&source_secret(
        "ecr-pull",
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
        Some("2025-01-01T00:00:00Z"),
    ));
    api.put_namespace("team-a", &[]);
    api
}

/// A Pod running `image` that already lists `listed` as imagePullSecrets.
fn pod_listing(namespace: &str, image: &str, listed: &[&str]) -> Value {
    let mut pod = pod_object(namespace, image);
    pod["spec"]["imagePullSecrets"] = listed.iter().map(|n| json!({"name": n})).collect();
    pod
}

const KEY_MISMATCH: &str =
    "pullsecret_injector_admission_secret_warnings_total{reason=\"key-mismatch\"}";
const TOKEN_EXPIRED: &str =
    "pullsecret_injector_admission_secret_warnings_total{reason=\"token-expired\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_secret_without_a_matching_key_is_warned_about_from_the_caches() {
    let api = cluster_with_mistakes().await;
    let hook = Webhook::start(&api, &[]).await;

    let (response, _) = hook.admit("team-a", EXAMPLE_IMAGE, false).await;
    assert_eq!(response["allowed"], true);
    assert_eq!(injected_names(&response), vec!["example-pull".to_string()]);
    let warned = warnings(&response);
    assert_eq!(warned.len(), 1, "{warned:?}");
    let w = &warned[0];
    assert!(
        w.contains("\"example-pull\"") && w.contains(EXAMPLE_IMAGE) && w.contains("key-mismatch"),
        "names the Secret, the image and the reason: {w}"
    );
    assert!(w.contains("port 5000"), "{w}");
    assert!(!w.contains("MARKER"), "{w}");
    assert_eq!(hook.metric(KEY_MISMATCH).await, 1.0);

    // A Secret that works draws no warning.
    let (response, _) = hook.admit("team-a", IMAGE, false).await;
    assert!(warnings(&response).is_empty(), "{:?}", warnings(&response));

    // The copy exists now: the next admission reads nothing from the API, and still warns.
    api.clear_requests();
    let (response, _) = hook.admit("team-a", EXAMPLE_IMAGE, false).await;
    assert_eq!(warnings(&response).len(), 1, "{:?}", warnings(&response));
    let calls: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.is_api_call())
        .collect();
    assert!(
        calls.is_empty(),
        "API calls during the admission: {calls:?}"
    );
    assert_eq!(hook.metric(KEY_MISMATCH).await, 2.0);

    // Fixing the Secret (a new version arrives through the watch) ends the warning.
    api.put_secret(&source_secret(
        "example-pull",
        "registry.example.com:5000",
        None,
    ));
    let copy_fixed = source_secret("example-pull", "registry.example.com:5000", None);
    let mut copy = api.get_secret("team-a", "example-pull").expect("copy");
    copy.data = copy_fixed.data;
    api.put_secret(&copy);
    eventually("the warning to stop after the fix", DEADLINE, || async {
        let (response, _) = hook.admit("team-a", EXAMPLE_IMAGE, true).await;
        warnings(&response).is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_secret_with_an_expired_token_is_warned_about() {
    let api = cluster_with_mistakes().await;
    let hook = Webhook::start(&api, &[]).await;

    // Already listed by the Pod (no patch needed), and still checked.
    let (response, _) = hook
        .admit_pod(
            "team-a",
            pod_listing("team-a", ECR_IMAGE, &["ecr-pull"]),
            false,
        )
        .await;
    assert_eq!(
        injected_names(&response),
        Vec::<String>::new(),
        "{response}"
    );
    let warned = warnings(&response);
    assert_eq!(warned.len(), 1, "{warned:?}");
    let w = &warned[0];
    assert!(
        w.contains("\"ecr-pull\"") && w.contains(ECR_IMAGE) && w.contains("token-expired"),
        "{w}"
    );
    assert!(w.contains("2025-01-01T00:00:00Z"), "{w}");
    assert_eq!(hook.metric(TOKEN_EXPIRED).await, 1.0);
    assert_eq!(hook.metric(KEY_MISMATCH).await, 0.0);
}

/// A token Secret as `serve` mints it: managed, naming its source kind and its expiry.
fn managed_token_secret(name: &str, expires_at: &str) -> Secret {
    let mut secret = source_secret(
        name,
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
        Some(expires_at),
    );
    secret.metadata.labels = Some(
        [(
            "app.kubernetes.io/managed-by".to_string(),
            "pullsecret-injector".to_string(),
        )]
        .into(),
    );
    secret
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert("pullsecret-injector.io/token-source".into(), "ecr".into());
    secret
}

fn expiry_annotation(secret: &Secret) -> Option<&str> {
    secret
        .metadata
        .annotations
        .as_ref()?
        .get("pullsecret-injector.io/expires-at")
        .map(String::as_str)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_warned_about_through_its_copy_and_a_fresh_one_is_not() {
    const EXPIRED: &str = "2025-01-01T00:00:00Z";
    let api = cluster_with_mistakes().await;
    api.put_secret(&managed_token_secret("ecr-pull", EXPIRED));
    api.put_namespace("team-b", &[]);
    let hook = Webhook::start(&api, &[]).await;

    // Injected: the Pod's namespace gets a copy, and the copy says when the token dies.
    let (response, _) = hook.admit("team-a", ECR_IMAGE, false).await;
    assert_eq!(injected_names(&response), vec!["ecr-pull".to_string()]);
    let warned = warnings(&response);
    assert!(
        warned
            .iter()
            .any(|w| w.contains("\"ecr-pull\"") && w.contains(EXPIRED)),
        "{warned:?}"
    );
    let copy = api.get_secret("team-a", "ecr-pull").expect("copy");
    assert_eq!(
        expiry_annotation(&copy),
        Some(EXPIRED),
        "the copy carries it"
    );

    // Without the source, only the copy can tell. Once the caches have seen the source go
    // (a namespace without a copy no longer hears of the expiry), team-a still does.
    api.remove(
        support::fake_apiserver::Kind::Secrets,
        SOURCE_NS,
        "ecr-pull",
    );
    eventually("the caches to see the source gone", DEADLINE, || async {
        let (response, _) = hook.admit("team-b", ECR_IMAGE, true).await;
        (!warnings(&response).iter().any(|w| w.contains(EXPIRED))).then_some(())
    })
    .await;
    let (response, _) = hook
        .admit_pod(
            "team-a",
            pod_listing("team-a", ECR_IMAGE, &["ecr-pull"]),
            true,
        )
        .await;
    let warned = warnings(&response);
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].contains("\"ecr-pull\"")
            && warned[0].contains(EXPIRED)
            && warned[0].contains("token-expired"),
        "{warned:?}"
    );

    // A fresh token draws nothing, from its source or its copy.
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let fresh = k8s_openapi::jiff::Timestamp::from_second(now + 6 * 3600)
        .unwrap()
        .to_string();
    api.put_secret(&managed_token_secret("ecr-pull", &fresh));
    eventually("the copy to follow the fresh token", DEADLINE, || async {
        let copy = api.get_secret("team-a", "ecr-pull")?;
        (expiry_annotation(&copy) == Some(fresh.as_str())).then_some(())
    })
    .await;
    eventually("the warning to stop", DEADLINE, || async {
        let (response, _) = hook.admit("team-a", ECR_IMAGE, true).await;
        warnings(&response).is_empty().then_some(())
    })
    .await;
    let (response, _) = hook.admit("team-b", ECR_IMAGE, false).await;
    assert!(warnings(&response).is_empty(), "{:?}", warnings(&response));
}
