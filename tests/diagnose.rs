//! `diagnose pod|namespace` end to end: the real binary, through a kubeconfig, against the fake
//! API server holding Pods stuck in ErrImagePull/ImagePullBackOff with the kubelet's Events,
//! and Secrets made with the mistakes users make. One test per verdict; every password is a
//! marker that must never appear in the output.

mod support;

use std::process::Output;

use base64::Engine as _;
use serde_json::{Value, json};
use support::cli;
use support::fake_apiserver::{FakeApiServer, Kind};
use support::registry::{Auth, Registry, push_image};

const NS: &str = "team-a";
/// Every password in these tests; printing it (or the `auth` made from it) is a failure.
const MARKER: &str = "MARKER-pw-7f3a91";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn auth(user: &str, password: &str) -> String {
    b64(format!("{user}:{password}").as_bytes())
}

/// A Secret as `kubectl apply` would store it.
fn secret(name: &str, secret_type: &str, data_key: &str, body: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": NS},
        "type": secret_type,
        "data": {data_key: b64(body.as_bytes())},
    })
}

/// A `kubernetes.io/dockerconfigjson` Secret with one registry key.
fn registry_secret(name: &str, key: &str, user: &str, password: &str) -> Value {
    let body = json!({"auths": {key: {"username": user, "password": password, "auth": auth(user, password)}}});
    secret(
        name,
        "kubernetes.io/dockerconfigjson",
        ".dockerconfigjson",
        &body.to_string(),
    )
}

/// A container status as the kubelet reports it.
enum State<'a> {
    /// `waiting` with this reason and message.
    Waiting(&'a str, &'a str),
    Running,
}

fn status(name: &str, image: &str, state: &State<'_>) -> Value {
    match state {
        State::Waiting(reason, message) => json!({
            "name": name, "image": image, "imageID": "", "ready": false, "restartCount": 0,
            "started": false, "state": {"waiting": {"reason": reason, "message": message}},
        }),
        State::Running => json!({
            "name": name, "image": image, "ready": true, "restartCount": 0, "started": true,
            "imageID": format!("{image}@sha256:{}", "a".repeat(64)),
            "containerID": format!("containerd://{}", "b".repeat(64)),
            "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
        }),
    }
}

/// A Pod with `containers` (name, image, state), optional init containers, and pull secrets.
fn pod(
    name: &str,
    containers: &[(&str, &str, State<'_>)],
    init: &[(&str, &str, State<'_>)],
    pull_secrets: &[&str],
) -> Value {
    let specs = |list: &[(&str, &str, State<'_>)]| -> Vec<Value> {
        list.iter()
            .map(|(n, i, _)| json!({"name": n, "image": i}))
            .collect()
    };
    let statuses = |list: &[(&str, &str, State<'_>)]| -> Vec<Value> {
        list.iter().map(|(n, i, s)| status(n, i, s)).collect()
    };
    let running = containers
        .iter()
        .chain(init)
        .all(|(_, _, s)| matches!(s, State::Running));
    let mut spec = json!({
        "containers": specs(containers),
        "serviceAccountName": "default",
        "nodeName": "node-1",
    });
    if !init.is_empty() {
        spec["initContainers"] = json!(specs(init));
    }
    if !pull_secrets.is_empty() {
        spec["imagePullSecrets"] = pull_secrets.iter().map(|n| json!({"name": n})).collect();
    }
    let mut status = json!({
        "phase": if running { "Running" } else { "Pending" },
        "containerStatuses": statuses(containers),
    });
    if !init.is_empty() {
        status["initContainerStatuses"] = json!(statuses(init));
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
        "status": status,
    })
}

/// The Events the kubelet records for a failing pull (pkg/kubelet/images, kuberuntime):
/// Pulling, `Failed to pull image "X": <runtime error>`, `Error: ErrImagePull`, BackOff,
/// `Error: ImagePullBackOff`.
fn pull_failure_events(
    api: &FakeApiServer,
    pod: &Value,
    container: &str,
    image: &str,
    error: &str,
) {
    let name = pod["metadata"]["name"].as_str().unwrap();
    let uid = pod["metadata"]["uid"].as_str().unwrap();
    let sequence = [
        ("Normal", "Pulling", format!("Pulling image {image:?}"), 3),
        (
            "Warning",
            "Failed",
            format!("Failed to pull image {image:?}: {error}"),
            3,
        ),
        ("Warning", "Failed", "Error: ErrImagePull".to_string(), 3),
        (
            "Normal",
            "BackOff",
            format!("Back-off pulling image {image:?}"),
            5,
        ),
        (
            "Warning",
            "Failed",
            "Error: ImagePullBackOff".to_string(),
            5,
        ),
    ];
    for (i, (kind, reason, message, count)) in sequence.into_iter().enumerate() {
        api.put(
            Kind::Events,
            json!({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": format!("{name}.18a{i}{container}"), "namespace": NS},
                "involvedObject": {
                    "apiVersion": "v1", "kind": "Pod", "name": name, "namespace": NS, "uid": uid,
                    "fieldPath": format!("spec.containers{{{container}}}"),
                },
                "reason": reason, "message": message, "type": kind, "count": count,
                "source": {"component": "kubelet", "host": "node-1"},
                "reportingComponent": "kubelet", "reportingInstance": "node-1",
                "firstTimestamp": format!("2026-01-01T00:00:0{i}Z"),
                "lastTimestamp": format!("2026-01-01T00:01:0{i}Z"),
            }),
        );
    }
}

/// Runs the binary off the runtime's threads (the fake answers on them).
async fn run(args: Vec<String>) -> Output {
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli::run(&args, b"")
    })
    .await
    .unwrap();
    for stream in [&out.stdout, &out.stderr] {
        let text = String::from_utf8_lossy(stream);
        assert!(!text.contains(MARKER), "a password was printed:\n{text}");
        assert!(
            !text.contains(&b64(MARKER.as_bytes())[..12]),
            "base64 of a password was printed:\n{text}"
        );
    }
    out
}

fn base_args(api: &FakeApiServer, what: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec!["diagnose".into()];
    args.extend(what.iter().map(|s| s.to_string()));
    args.extend([
        "--kubeconfig".to_string(),
        api.kubeconfig_path().display().to_string(),
    ]);
    args
}

/// `diagnose pod NAME -n team-a -o json [extra]`: (exit code, report).
async fn diagnose_pod(api: &FakeApiServer, name: &str, extra: &[&str]) -> (i32, Value) {
    let mut args = base_args(api, &["pod", name, "-n", NS, "-o", "json"]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = run(args).await;
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), report)
}

fn image_report<'a>(report: &'a Value, container: &str) -> &'a Value {
    report["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["container"] == container)
        .unwrap_or_else(|| panic!("no container {container} in {report}"))
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

async fn cluster() -> FakeApiServer {
    let api = FakeApiServer::start().await;
    api.put_namespace(NS, &[]);
    api
}

const GITLAB_IMAGE: &str = "registry.gitlab.com/acme/app:1.0";
const ANONYMOUS_403: &str = "rpc error: code = Unknown desc = failed to pull and unpack image \"registry.gitlab.com/acme/app:1.0\": failed to resolve reference \"registry.gitlab.com/acme/app:1.0\": failed to authorize: failed to fetch anonymous token: unexpected status from GET request to https://gitlab.com/jwt/auth?scope=repository%3Aacme%2Fapp%3Apull&service=container_registry: 403 Forbidden";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_when_a_listed_secret_matches_and_public_images_pull_anonymously() {
    let api = cluster().await;
    api.put(
        Kind::Secrets,
        registry_secret("gitlab-pull", "registry.gitlab.com", "deploy", MARKER),
    );
    api.put(
        Kind::Pods,
        pod(
            "web",
            &[
                ("app", GITLAB_IMAGE, State::Running),
                ("proxy", "nginx:1.27", State::Running),
            ],
            &[(
                "migrate",
                "registry.gitlab.com/acme/migrate:1",
                State::Running,
            )],
            &["gitlab-pull"],
        ),
    );
    let (code, report) = diagnose_pod(&api, "web", &[]).await;
    assert_eq!(code, 0, "{report}");
    let app = image_report(&report, "app");
    assert_eq!(app["verdict"], "ok", "{app}");
    assert_eq!(app["secret"], "gitlab-pull");
    assert_eq!(app["key"], "registry.gitlab.com");
    assert_eq!(app["lookupTarget"], "registry.gitlab.com/acme/app");
    let init = image_report(&report, "migrate");
    assert_eq!(
        (init["kind"].as_str(), init["verdict"].as_str()),
        (Some("initContainer"), Some("ok"))
    );
    let proxy = image_report(&report, "proxy");
    assert_eq!(proxy["verdict"], "anonymous-ok", "{proxy}");

    // The text form says the same, without secret data.
    let out = run(base_args(&api, &["pod", "web", "-n", NS])).await;
    cli::assert_exit(&out, 0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("verdict:  ok") && stdout.contains("gitlab-pull"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_pull_secret_quotes_and_translates_the_kubelet_and_names_the_rule() {
    let api = cluster().await;
    let stored = api.put(
        Kind::Pods,
        pod(
            "web",
            &[(
                "app",
                GITLAB_IMAGE,
                State::Waiting(
                    "ImagePullBackOff",
                    "Back-off pulling image \"registry.gitlab.com/acme/app:1.0\"",
                ),
            )],
            &[],
            &[],
        ),
    );
    pull_failure_events(&api, &stored, "app", GITLAB_IMAGE, ANONYMOUS_403);
    let policy = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(policy.path(), support::POLICY).unwrap();
    let policy_path = policy.path().display().to_string();
    let (code, report) = diagnose_pod(&api, "web", &["--policy", &policy_path]).await;
    assert_eq!(code, 1, "{report}");
    let app = image_report(&report, "app");
    assert_eq!(app["verdict"], "no-pull-secret", "{app}");
    assert_eq!(app["state"], "ImagePullBackOff");
    assert!(
        text(&app["kubeletMessage"]).starts_with("Failed to pull image"),
        "{app}"
    );
    assert!(text(&app["kubeletMeaning"]).contains("anonymous"), "{app}");
    assert_eq!(app["rules"][0]["rule"], "gitlab", "{app}");
    assert!(text(&app["fix"]).contains("gitlab-deploy-token"), "{app}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_missing_when_a_listed_secret_does_not_exist() {
    let api = cluster().await;
    let stored = api.put(
        Kind::Pods,
        pod(
            "web",
            &[(
                "app",
                "quay.io/acme/app:2",
                State::Waiting("ErrImagePull", "failed to resolve reference"),
            )],
            &[],
            &["quay-pull"],
        ),
    );
    pull_failure_events(
        &api,
        &stored,
        "app",
        "quay.io/acme/app:2",
        "rpc error: code = Unknown desc = failed to pull and unpack image \"quay.io/acme/app:2\": failed to resolve reference \"quay.io/acme/app:2\": unexpected status from HEAD request to https://quay.io/v2/acme/app/manifests/2: 401 UNAUTHORIZED",
    );
    let (code, report) = diagnose_pod(&api, "web", &[]).await;
    assert_eq!(code, 1);
    let app = image_report(&report, "app");
    assert_eq!(app["verdict"], "secret-missing", "{app}");
    assert_eq!(app["secret"], "quay-pull");
    assert!(text(&app["detail"]).contains("does not exist"), "{app}");
    assert!(
        text(&app["kubeletMeaning"]).contains("wants credentials"),
        "{app}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_type_for_a_dockercfg_body_in_an_opaque_secret() {
    let api = cluster().await;
    let body = json!({"registry.gitlab.com": {"auth": auth("deploy", MARKER)}}).to_string();
    api.put(
        Kind::Secrets,
        secret("gitlab-pull", "Opaque", ".dockercfg", &body),
    );
    let stored = api.put(
        Kind::Pods,
        pod(
            "web",
            &[(
                "app",
                GITLAB_IMAGE,
                State::Waiting("ErrImagePull", ANONYMOUS_403),
            )],
            &[],
            &["gitlab-pull"],
        ),
    );
    pull_failure_events(&api, &stored, "app", GITLAB_IMAGE, ANONYMOUS_403);
    let (code, report) = diagnose_pod(&api, "web", &[]).await;
    assert_eq!(code, 1);
    let app = image_report(&report, "app");
    assert_eq!(app["verdict"], "wrong-type", "{app}");
    assert!(text(&app["detail"]).contains("Opaque"), "{app}");
    assert!(
        text(&app["fix"]).contains("kubernetes.io/dockerconfigjson"),
        "{app}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_mismatch_for_a_key_without_the_port_names_the_closest_key() {
    let api = cluster().await;
    let image = "registry.example.com:5000/team/app:v1";
    api.put(
        Kind::Secrets,
        registry_secret("regcred", "https://registry.example.com", "ci", MARKER),
    );
    let error = "rpc error: code = Unknown desc = failed to pull and unpack image \"registry.example.com:5000/team/app:v1\": failed to resolve reference \"registry.example.com:5000/team/app:v1\": failed to authorize: failed to fetch anonymous token: unexpected status from GET request to https://registry.example.com:5000/token?scope=repository%3Ateam%2Fapp%3Apull&service=registry.example.com%3A5000: 403 Forbidden";
    let stored = api.put(
        Kind::Pods,
        pod(
            "web",
            &[("app", image, State::Waiting("ErrImagePull", error))],
            &[],
            &["regcred"],
        ),
    );
    pull_failure_events(&api, &stored, "app", image, error);
    let (code, report) = diagnose_pod(&api, "web", &[]).await;
    assert_eq!(code, 1);
    let app = image_report(&report, "app");
    assert_eq!(app["verdict"], "key-mismatch", "{app}");
    assert_eq!(app["key"], "https://registry.example.com");
    assert!(text(&app["detail"]).contains("port 5000"), "{app}");
    assert!(
        text(&app["fix"]).contains("registry.example.com:5000"),
        "{app}"
    );
    assert!(text(&app["kubeletMeaning"]).contains("anonymous"), "{app}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_auth_for_auth_without_the_colon() {
    let api = cluster().await;
    // `auth` is base64 of "deploy" + password with no `:` between them.
    let body = json!({"auths": {"registry.gitlab.com": {"auth": b64(format!("deploy{MARKER}").as_bytes())}}});
    api.put(
        Kind::Secrets,
        secret(
            "gitlab-pull",
            "kubernetes.io/dockerconfigjson",
            ".dockerconfigjson",
            &body.to_string(),
        ),
    );
    let error = "unable to parse auth field, must be formatted as base64(username:password)";
    let stored = api.put(
        Kind::Pods,
        pod(
            "web",
            &[("app", GITLAB_IMAGE, State::Waiting("ErrImagePull", error))],
            &[],
            &["gitlab-pull"],
        ),
    );
    pull_failure_events(&api, &stored, "app", GITLAB_IMAGE, error);
    let (code, report) = diagnose_pod(&api, "web", &[]).await;
    assert_eq!(code, 1);
    let app = image_report(&report, "app");
    assert_eq!(app["verdict"], "bad-auth", "{app}");
    assert!(text(&app["detail"]).contains("without `:`"), "{app}");
    assert!(text(&app["fix"]).contains("secret create"), "{app}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expired_for_an_expired_ecr_token_and_an_expired_minted_secret() {
    let api = cluster().await;
    let ecr_host = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
    // An ECR password: base64 of the JSON envelope; this one expired in 2024.
    let envelope = b64(json!({
        "payload": MARKER, "datakey": "opaque", "version": "2", "type": "DATA_KEY",
        "expiration": 1_704_067_200,
    })
    .to_string()
    .as_bytes());
    api.put(
        Kind::Secrets,
        registry_secret("ecr-pull", &format!("https://{ecr_host}"), "AWS", &envelope),
    );
    // A Secret our token minter fills carries its expiry as an annotation.
    let mut minted = registry_secret(
        "gar-pull",
        "europe-docker.pkg.dev",
        "oauth2accesstoken",
        MARKER,
    );
    minted["metadata"]["annotations"] =
        json!({"pullsecret-injector.io/expires-at": "2025-06-01T12:00:00Z"});
    api.put(Kind::Secrets, minted);
    let ecr_image = format!("{ecr_host}/app:1");
    let gar_image = "europe-docker.pkg.dev/acme/images/app:1";
    let error = format!(
        "rpc error: code = Unknown desc = failed to pull and unpack image \"{ecr_image}\": failed to resolve reference \"{ecr_image}\": unexpected status from HEAD request to https://{ecr_host}/v2/app/manifests/1: 403 Forbidden"
    );
    let stored = api.put(
        Kind::Pods,
        pod(
            "web",
            &[
                (
                    "app",
                    &ecr_image,
                    State::Waiting("ImagePullBackOff", "Back-off pulling image"),
                ),
                ("tool", gar_image, State::Waiting("ErrImagePull", "401")),
            ],
            &[],
            &["ecr-pull", "gar-pull"],
        ),
    );
    pull_failure_events(&api, &stored, "app", &ecr_image, &error);
    let (code, report) = diagnose_pod(&api, "web", &[]).await;
    assert_eq!(code, 1);
    let app = image_report(&report, "app");
    assert_eq!(app["verdict"], "token-expired", "{app}");
    assert_eq!(app["secret"], "ecr-pull");
    assert!(
        text(&app["detail"]).contains("2024-01-01T00:00:00Z"),
        "{app}"
    );
    let tool = image_report(&report, "tool");
    assert_eq!(tool["verdict"], "token-expired", "{tool}");
    assert_eq!(tool["secret"], "gar-pull");
    assert!(
        text(&tool["detail"]).contains("2025-06-01T12:00:00Z"),
        "{tool}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_asks_the_registry_ok_denied_and_unreachable() {
    let registry = Registry::start(Auth::Htpasswd(&[("alice", MARKER)]), None);
    let host = registry.host();
    push_image(&format!("{host}/team/app:v1"), ("alice", MARKER));
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let api = cluster().await;
    api.put(
        Kind::Secrets,
        registry_secret("good", &host, "alice", MARKER),
    );
    api.put(
        Kind::Secrets,
        registry_secret("stale", &host, "alice", "MARKER-pw-7f3a91-old"),
    );
    api.put(
        Kind::Secrets,
        registry_secret("nowhere", &closed, "alice", MARKER),
    );
    let image = format!("{host}/team/app:v1");
    let missing_tag = format!("{host}/team/app:v2");
    let unreachable = format!("{closed}/team/app:v1");
    let waiting = State::Waiting("ErrImagePull", "401 Unauthorized");
    api.put(
        Kind::Pods,
        pod(
            "good",
            &[
                ("app", &image, State::Running),
                (
                    "next",
                    &missing_tag,
                    State::Waiting("ErrImagePull", "not found"),
                ),
            ],
            &[],
            &["good"],
        ),
    );
    api.put(
        Kind::Pods,
        pod("stale", &[("app", &image, waiting)], &[], &["stale"]),
    );
    api.put(
        Kind::Pods,
        pod(
            "down",
            &[(
                "app",
                &unreachable,
                State::Waiting("ErrImagePull", "connection refused"),
            )],
            &[],
            &["nowhere"],
        ),
    );
    let verify = ["--verify", "--plain-http", "--timeout", "10s"];

    let (code, report) = diagnose_pod(&api, "good", &verify).await;
    assert_eq!(code, 1, "one container's tag is missing: {report}");
    let app = image_report(&report, "app");
    assert_eq!(
        (app["verdict"].as_str(), app["registry"]["result"].as_str()),
        (Some("ok"), Some("authenticated")),
        "{app}"
    );
    let next = image_report(&report, "next");
    assert_eq!(next["verdict"], "image-not-found", "{next}");

    let (code, report) = diagnose_pod(&api, "stale", &verify).await;
    assert_eq!(code, 1);
    let app = image_report(&report, "app");
    assert_eq!(app["verdict"], "registry-denied", "{app}");
    assert!(
        text(&app["registry"]["message"]).contains("401"),
        "the registry's words: {app}"
    );

    let (code, report) = diagnose_pod(&api, "down", &verify).await;
    assert_eq!(code, 1);
    let app = image_report(&report, "app");
    assert_eq!(app["verdict"], "registry-unreachable", "{app}");
    assert!(
        text(&app["registry"]["message"]).contains("connection refused"),
        "{app}"
    );

    // Without --verify the stale password looks fine: only the registry can tell.
    let (code, report) = diagnose_pod(&api, "stale", &[]).await;
    assert_eq!(
        (code, image_report(&report, "app")["verdict"].as_str()),
        (1, Some("ok")),
        "{report}"
    );
    assert!(
        text(&image_report(&report, "app")["detail"]).contains("--verify"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_lists_the_pods_waiting_on_pulls_one_line_each() {
    let api = cluster().await;
    api.put(
        Kind::Secrets,
        registry_secret("regcred", "registry.example.com", "ci", MARKER),
    );
    api.put(
        Kind::Pods,
        pod(
            "healthy",
            &[("app", "registry.example.com/team/app:1", State::Running)],
            &[],
            &["regcred"],
        ),
    );
    api.put(
        Kind::Pods,
        pod(
            "ported",
            &[(
                "app",
                "registry.example.com:5000/team/app:1",
                State::Waiting("ErrImagePull", "403"),
            )],
            &[],
            &["regcred"],
        ),
    );
    api.put(
        Kind::Pods,
        pod(
            "orphan",
            &[(
                "app",
                "ghcr.io/acme/tool:1",
                State::Waiting("ImagePullBackOff", "Back-off"),
            )],
            &[],
            &[],
        ),
    );

    let out = run(base_args(&api, &["namespace", NS])).await;
    cli::assert_exit(&out, 1);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("orphan/app no-pull-secret"),
        "{stdout}"
    );
    assert!(lines[1].starts_with("ported/app key-mismatch"), "{stdout}");

    let mut args = base_args(&api, &["namespace", NS, "--all", "-o", "json"]);
    args.push("--context".into());
    args.push("fake".into());
    let out = run(args).await;
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let pods: Vec<&str> = cli::strings_in(&report, "pods", "pod");
    assert_eq!(pods, ["healthy", "orphan", "ported"], "{report}");
    assert_eq!(report["pods"][0]["images"][0]["verdict"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_and_api_errors_exit_2() {
    let api = cluster().await;
    let out = run(base_args(&api, &["pod", "nope", "-n", NS])).await;
    cli::assert_exit(&out, 2);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{out:?}"
    );
    let mut args = base_args(&api, &["pod", "nope", "-n", NS]);
    args.extend(["--context".into(), "no-such-context".into()]);
    let out = run(args).await;
    cli::assert_exit(&out, 2);
    let out = run(base_args(&api, &["pod"])).await;
    cli::assert_exit(&out, 2);
}
