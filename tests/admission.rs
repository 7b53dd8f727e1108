//! The /mutate handler answers AdmissionReview v1 exactly as kube-apiserver requires.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use pullsecret_injector::plan::SecretNeed;
use pullsecret_injector::policy::Policy;
use pullsecret_injector::state::{AppState, BoxFuture, SecretEnsurer};
use serde_json::{Value, json};
use support::{SAMPLES_POLICY, sample};
use tower::ServiceExt;

/// Records every ensure call and answers with one warning naming what it was asked for.
#[derive(Default)]
struct RecordingEnsurer {
    calls: Mutex<Vec<(String, Vec<String>, Duration)>>,
}

impl SecretEnsurer for RecordingEnsurer {
    fn ensure<'a>(
        &'a self,
        namespace: &'a str,
        needs: &'a [SecretNeed],
        deadline: Duration,
    ) -> BoxFuture<'a, Vec<String>> {
        let names: Vec<String> = needs.iter().map(|n| n.name.clone()).collect();
        let warning = format!("ensured {} in {namespace}", names.join("+"));
        self.calls
            .lock()
            .unwrap()
            .push((namespace.to_string(), names, deadline));
        Box::pin(async move { vec![warning] })
    }
}

fn state(ensurer: Option<Arc<RecordingEnsurer>>) -> AppState {
    let policy = Policy::parse(SAMPLES_POLICY, "samples-policy.yaml").unwrap();
    let mut state = AppState::offline(Some(policy), "pullsecret-injector");
    state.copy_deadline = Duration::from_secs(3);
    if let Some(e) = ensurer {
        state.ensurer = Some(e);
    }
    state
}

async fn post_body(state: AppState, uri: &str, body: Vec<u8>) -> (StatusCode, Value) {
    // The production router: the body limit and every layer `serve` runs.
    let response = pullsecret_injector::router(state)
        .oneshot(
            Request::post(uri)
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).expect("every answer is JSON"),
    )
}

fn decoded_patch(review: &Value) -> Value {
    let b64 = review["response"]["patch"]
        .as_str()
        .expect("patch is a base64 string");
    serde_json::from_slice(&STANDARD.decode(b64).expect("standard padded base64")).unwrap()
}

fn review(operation: &str, kind: Value, object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "u-1", "kind": kind, "namespace": "team-a", "operation": operation, "object": object, "dryRun": false}
    }))
    .unwrap()
}

fn assert_unchanged(body: &Value, uid: &str) {
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(body["kind"], "AdmissionReview");
    assert_eq!(body["response"]["uid"], uid);
    assert_eq!(body["response"]["allowed"], true);
    assert!(body["response"].get("patch").is_none(), "{body}");
    assert!(body["response"].get("patchType").is_none(), "{body}");
}

#[tokio::test]
async fn garbage_body_is_a_400_with_a_short_json_error() {
    for garbage in [
        &b"not json"[..],
        b"{}",
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
        b"[1,2]",
    ] {
        let (status, body) = post_body(state(None), "/mutate", garbage.to_vec()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            body["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }
}

#[tokio::test]
async fn create_gets_a_base64_json_patch_with_its_type_and_the_uid_echoed() {
    let raw = sample("01_pod_create_replicaset.json");
    let request: Value = serde_json::from_slice(&raw).unwrap();
    let (status, body) = post_body(state(None), "/mutate?timeout=10s", raw).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(body["kind"], "AdmissionReview");
    assert_eq!(body["response"]["uid"], request["request"]["uid"]);
    assert_eq!(body["response"]["allowed"], true);
    assert_eq!(body["response"]["patchType"], "JSONPatch");
    let patch = decoded_patch(&body);
    assert_eq!(
        patch[0],
        json!({"op": "add", "path": "/spec/imagePullSecrets", "value": [{"name": "example-pull"}, {"name": "hub-pull"}]})
    );
    let mut pod = request["request"]["object"].clone();
    json_patch::patch(
        &mut pod,
        &serde_json::from_value::<json_patch::Patch>(patch).unwrap(),
    )
    .unwrap();
    assert_eq!(
        pod["metadata"]["annotations"]["pullsecret-injector.io/injected"],
        "example=example-pull,hub=hub-pull"
    );
}

#[tokio::test]
async fn non_pod_and_delete_requests_are_allowed_unchanged() {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "ghcr.io/acme/x:1"}]}});
    let deployment = review(
        "CREATE",
        json!({"group": "apps", "version": "v1", "kind": "Deployment"}),
        json!({"kind": "Deployment"}),
    );
    let (status, body) = post_body(state(None), "/mutate", deployment).await;
    assert_eq!(status, StatusCode::OK);
    assert_unchanged(&body, "u-1");

    let delete = review(
        "DELETE",
        json!({"group": "", "version": "v1", "kind": "Pod"}),
        Value::Null,
    );
    let (status, body) = post_body(state(None), "/mutate", delete).await;
    assert_eq!(status, StatusCode::OK);
    assert_unchanged(&body, "u-1");

    // The same Pod on CREATE is patched, so the two above were not missed by accident.
    let create = review(
        "CREATE",
        json!({"group": "", "version": "v1", "kind": "Pod"}),
        pod,
    );
    let (_, body) = post_body(state(None), "/mutate", create).await;
    assert_eq!(body["response"]["patchType"], "JSONPatch");
}

#[tokio::test]
async fn update_gets_no_patch_but_a_warning_for_the_new_registry() {
    let (status, body) =
        post_body(state(None), "/mutate", sample("04_pod_update_image.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert_unchanged(&body, "e1d2c3b4-a5f6-4e7d-8c9b-a0b1c2d3e4f5");
    let warnings = body["response"]["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let w = warnings[0].as_str().unwrap();
    assert!(
        w.contains("ghcr-pull") && w.contains("ghcr.io/acme/toolbox:v2"),
        "{w}"
    );
    assert!(!w.chars().any(char::is_control) && w.chars().count() <= 256);
}

#[tokio::test]
async fn ephemeral_container_update_is_not_patched() {
    let (status, body) = post_body(
        state(None),
        "/mutate",
        sample("05_pod_ephemeralcontainers_update.json"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_unchanged(&body, "9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d");
    // The debug image is on Docker Hub, which the Pod has no secret for.
    let warnings = body["response"]["warnings"].to_string();
    assert!(
        warnings.contains("nicolaka/netshoot:v0.13") && warnings.contains("hub-pull"),
        "{warnings}"
    );
}

#[tokio::test]
async fn dry_run_gets_the_same_patch_and_copies_nothing() {
    let raw = sample("02_pod_create_dryrun.json");
    let ensurer = Arc::new(RecordingEnsurer::default());
    let (status, dry) = post_body(
        state(Some(ensurer.clone())),
        "/mutate?timeout=10s",
        raw.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        ensurer.calls.lock().unwrap().is_empty(),
        "dry run must not copy"
    );
    assert_eq!(
        decoded_patch(&dry)[0],
        json!({"op": "add", "path": "/spec/imagePullSecrets/-", "value": {"name": "ghcr-pull"}})
    );

    let mut wet: Value = serde_json::from_slice(&raw).unwrap();
    wet["request"]["dryRun"] = json!(false);
    let (_, body) = post_body(
        state(Some(ensurer.clone())),
        "/mutate?timeout=10s",
        serde_json::to_vec(&wet).unwrap(),
    )
    .await;
    assert_eq!(decoded_patch(&body), decoded_patch(&dry));
    let calls = ensurer.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].0, "team-a");
    assert_eq!(calls[0].1, ["ghcr-pull"]);
    // copy_deadline (3s) is below the apiserver's 10s minus the margin.
    assert_eq!(calls[0].2, Duration::from_secs(3));
    assert_eq!(
        body["response"]["warnings"],
        json!(["ensured ghcr-pull in team-a"])
    );
}

#[tokio::test]
async fn apiserver_timeout_caps_the_copy_deadline() {
    let ensurer = Arc::new(RecordingEnsurer::default());
    let (_, _) = post_body(
        state(Some(ensurer.clone())),
        "/mutate?timeout=2s",
        sample("03_pod_create_init_sidecar.json"),
    )
    .await;
    let calls = ensurer.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    assert!(calls[0].2 < Duration::from_secs(2), "{:?}", calls[0].2);
    assert_eq!(
        calls[0].1,
        ["quay-pull", "ecr-pull", "local-pull", "hub-pull"]
    );
}

#[tokio::test]
async fn metrics_count_results_and_patches() {
    let state = state(None);
    post_body(
        state.clone(),
        "/mutate",
        sample("01_pod_create_replicaset.json"),
    )
    .await;
    post_body(state.clone(), "/mutate", sample("04_pod_update_image.json")).await;
    post_body(state.clone(), "/mutate", b"nope".to_vec()).await;
    let text = state.metrics.encode();
    assert!(
        text.contains("pullsecret_injector_admission_requests_total{result=\"patched\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("pullsecret_injector_admission_requests_total{result=\"unchanged\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("pullsecret_injector_admission_requests_total{result=\"invalid\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("pullsecret_injector_admission_patches_total 1"),
        "{text}"
    );
}

#[tokio::test]
async fn without_a_policy_pods_pass_unchanged_with_a_warning() {
    let state = AppState::offline(None, "pullsecret-injector");
    let (status, body) = post_body(state, "/mutate", sample("01_pod_create_replicaset.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert_unchanged(&body, "b6f4a0c2-3d1e-4f5a-8b9c-0d1e2f3a4b5c");
    assert_eq!(
        body["response"]["warnings"].as_array().map(Vec::len),
        Some(1)
    );
}
