//! End-to-end harness for the cluster side: the fake API server, the real `serve` binary
//! pointed at it through KUBECONFIG (started by `support::serve`), and AdmissionReviews sent over HTTPS by a client that
//! verifies the webhook's certificate against the CA `--self-signed` wrote.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ops::Deref;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

use crate::support::fake_apiserver::FakeApiServer;
use crate::support::serve::{Options, Serve};
use crate::support::tls::client;

pub const WEBHOOK_NS: &str = "pullsecret-injector";
pub const POLICY_CM: &str = "pullsecret-injector-policy";
pub const SOURCE_NS: &str = "registry-credentials";
pub const SECRET: &str = "gitlab-deploy-token";
pub const IMAGE: &str = "registry.gitlab.com/acme/app:1.0";
pub const MANAGED_LABEL: &str = "app.kubernetes.io/managed-by";
pub const SOURCE_ANNOTATION: &str = "pullsecret-injector.io/source";
pub const HASH_ANNOTATION: &str = "pullsecret-injector.io/source-hash";

/// Bound for conditions that normally hold within milliseconds (CI has 2 busy cores).
pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn policy_yaml(secret: &str) -> String {
    format!(
        "sourceNamespace: {SOURCE_NS}\nrules:\n  - name: gitlab\n    registries: [\"registry.gitlab.com/acme/\"]\n    secret: {secret}\n"
    )
}

pub fn dockerconfigjson(token: &str) -> Vec<u8> {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("deploy:{token}"));
    json!({"auths": {"registry.gitlab.com": {"auth": auth}}})
        .to_string()
        .into_bytes()
}

pub fn pull_secret(namespace: &str, name: &str, token: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
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

pub fn policy_configmap(text: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(POLICY_CM.into()),
            namespace: Some(WEBHOOK_NS.into()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            "policy.yaml".to_string(),
            text.to_string(),
        )])),
        ..ConfigMap::default()
    }
}

/// The fake cluster every test starts from: the webhook's namespace with the policy
/// ConfigMap, and the source namespace with a valid pull secret.
pub async fn cluster() -> FakeApiServer {
    let api = FakeApiServer::start().await;
    api.put_namespace(WEBHOOK_NS, &[]);
    api.put_namespace(SOURCE_NS, &[]);
    api.put_configmap(&policy_configmap(&policy_yaml(SECRET)));
    api.put_secret(&pull_secret(SOURCE_NS, SECRET, "token-v1"));
    api
}

/// Secret data as the source holds it, for comparisons.
pub fn data_of(secret: &Secret) -> BTreeMap<String, ByteString> {
    secret.data.clone().unwrap_or_default()
}

pub fn is_managed_copy(secret: &Secret) -> bool {
    let labels = secret.metadata.labels.clone().unwrap_or_default();
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    labels.get(MANAGED_LABEL).map(String::as_str) == Some("pullsecret-injector")
        && annotations.get(SOURCE_ANNOTATION).map(String::as_str)
            == Some(&format!("{SOURCE_NS}/{SECRET}") as &str)
}

#[allow(unused_imports)]
pub use crate::support::serve::eventually;

/// One running `pullsecret-injector serve` process with the cluster side, its certificate
/// made by `--self-signed`, and an HTTPS client that trusts that CA.
pub struct Webhook {
    serve: Serve,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Deref for Webhook {
    type Target = Serve;

    fn deref(&self) -> &Serve {
        &self.serve
    }
}

impl Webhook {
    /// Starts `serve --policy-configmap` against `api`, waits until /readyz says ready.
    pub async fn start(api: &FakeApiServer, extra: &[&str]) -> Self {
        let hook = Self::spawn(api.kubeconfig_path(), extra).await;
        hook.wait_ready().await;
        hook
    }

    /// Starts the process with `--policy-configmap` and waits only for its listeners.
    pub async fn spawn(kubeconfig: &Path, extra: &[&str]) -> Self {
        let mut args = vec!["--policy-configmap", POLICY_CM];
        args.extend_from_slice(extra);
        Self::spawn_raw(kubeconfig, &args).await
    }

    /// Starts `serve` with only the TLS, listener and namespace flags added to `args`.
    pub async fn spawn_raw(kubeconfig: &Path, args: &[&str]) -> Self {
        Self::spawn_with_env(kubeconfig, args, Vec::new(), &[]).await
    }

    /// [`Webhook::spawn_raw`] with extra environment for the process, and without the
    /// inherited variables `remove` names.
    pub async fn spawn_with_env(
        kubeconfig: &Path,
        args: &[&str],
        env: Vec<(String, String)>,
        remove: &[&str],
    ) -> Self {
        let options = Options {
            env,
            env_remove: remove.iter().map(|s| s.to_string()).collect(),
            ..Self::options(kubeconfig)
        };
        Self::launch(args, options).await
    }

    /// How the cluster tests start `serve`: against `kubeconfig`, in [`WEBHOOK_NS`], logging
    /// at debug, listeners within [`DEADLINE`].
    pub fn options(kubeconfig: &Path) -> Options<'_> {
        Options {
            kubeconfig: Some(kubeconfig),
            namespace: WEBHOOK_NS,
            rust_log: "info,pullsecret_injector=debug",
            startup: DEADLINE,
            env: Vec::new(),
            env_remove: Vec::new(),
            ..Options::default()
        }
    }

    /// Starts `serve` with `options`, its certificate made by `--self-signed` in a directory
    /// of its own, and `args`; waits only for its listeners. The one start-up of the cluster
    /// tests and the scale benchmark.
    pub async fn launch(args: &[&str], options: Options<'_>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let self_signed = dir.path().to_str().expect("UTF-8 temp dir");
        let mut all = vec!["--self-signed", "--self-signed-dir", self_signed];
        all.extend_from_slice(args);
        let serve = Serve::start_async(&options, &all).await;
        let ca = std::fs::read_to_string(dir.path().join("ca.crt"))
            .expect("ca.crt written by --self-signed");
        Self {
            serve,
            client: client(&ca, false, false),
            _dir: dir,
        }
    }

    pub fn stop(self) {
        self.serve.stop();
    }

    /// A fresh uid for a hand-made AdmissionReview.
    pub fn next_uid() -> String {
        format!(
            "uid-{}",
            NEXT_UID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        )
    }

    /// GET /readyz?verbose: (status, body), or (0, the error) when nothing answered.
    pub async fn readyz(&self) -> (u16, String) {
        self.try_admin_get("/readyz?verbose")
            .await
            .unwrap_or_else(|e| (0, e.to_string()))
    }

    pub async fn wait_ready(&self) {
        self.serve.wait_ready_within(DEADLINE).await;
    }

    /// Sends an AdmissionReview for a Pod running `image` in `namespace`; returns the
    /// `response` object and how long the answer took.
    pub async fn admit(&self, namespace: &str, image: &str, dry_run: bool) -> (Value, Duration) {
        self.admit_pod(namespace, pod_object(namespace, image), dry_run)
            .await
    }

    /// Like [`Webhook::admit`] for any Pod object.
    pub async fn admit_pod(&self, namespace: &str, pod: Value, dry_run: bool) -> (Value, Duration) {
        let uid = format!(
            "uid-{}",
            NEXT_UID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut review = admission_review(&uid, namespace, IMAGE, dry_run);
        review["request"]["object"] = pod;
        self.post_review(review).await
    }

    /// Sends `review` (an AdmissionReview with a unique uid); returns the `response` object
    /// and how long the answer took.
    pub async fn post_review(&self, review: Value) -> (Value, Duration) {
        let uid = review["request"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let url = format!("https://localhost:{}/mutate", self.https.port());
        let started = Instant::now();
        let resp = self
            .client
            .post(&url)
            .header("content-type", "application/json")
            .body(review.to_string())
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!("POST /mutate: {e}\nserve log:\n{}", self.logs().join("\n"))
            });
        let elapsed = started.elapsed();
        assert_eq!(resp.status().as_u16(), 200, "POST /mutate status");
        let body: Value = resp.json().await.expect("AdmissionReview JSON");
        let response = body.get("response").cloned().expect("response");
        assert_eq!(response["uid"], uid, "uid echoed");
        (response, elapsed)
    }
}

static NEXT_UID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

pub fn admission_review(uid: &str, namespace: &str, image: &str, dry_run: bool) -> Value {
    let gvk = json!({"group": "", "version": "v1", "kind": "Pod"});
    let gvr = json!({"group": "", "version": "v1", "resource": "pods"});
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod_object(namespace, image),
            "oldObject": null,
            "dryRun": dry_run,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}

pub fn pod_object(namespace: &str, image: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "web-", "namespace": namespace},
        "spec": {"containers": [{"name": "app", "image": image}]}
    })
}

/// The imagePullSecrets names the response's patch gives the Pod.
pub fn injected_names(response: &Value) -> Vec<String> {
    let Some(patch) = response.get("patch").and_then(Value::as_str) else {
        return Vec::new();
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .expect("patch base64");
    let ops: Value = serde_json::from_slice(&bytes).expect("patch JSON");
    let mut pod = pod_object("any", IMAGE);
    json_patch::patch(
        &mut pod,
        &serde_json::from_value::<json_patch::Patch>(ops)
            .expect("patch ops")
            .0,
    )
    .expect("patch applies");
    pod["spec"]["imagePullSecrets"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

pub fn warnings(response: &Value) -> Vec<String> {
    response
        .get("warnings")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|w| w.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}
