//! `explain --cluster`: the token Secrets an image gets, as the cluster holds them now (their
//! expiry and whether it has passed), read from the fake API server by the real binary. Without
//! the flag, explain stays offline.

mod support;

use base64::Engine;
use serde_json::{Value, json};
use support::cli;
use support::fake_apiserver::{FakeApiServer, Kind};

const POLICY: &str = "\
sourceNamespace: registry-credentials
tokenSources:
  - secret: ecr-pull
    ecr:
      region: eu-west-1
  - secret: gar-pull
    google:
      registries: [europe-docker.pkg.dev]
rules:
  - name: ecr
    registries: [\"*.dkr.ecr.*.amazonaws.com\"]
    secret: ecr-pull
  - name: gar
    registries: [europe-docker.pkg.dev]
    secret: gar-pull
";
const ECR_IMAGE: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app:1";
const GAR_IMAGE: &str = "europe-docker.pkg.dev/acme/team/app:1";
const PASSWORD: &str = "token-password-never-shown";

fn token_secret(ns: &str, name: &str, expires_at: &str, managed: bool) -> Value {
    let config = json!({"auths": {"123456789012.dkr.ecr.eu-west-1.amazonaws.com":
        {"username": "AWS", "password": PASSWORD}}});
    let mut s = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": ns,
            "annotations": {"pullsecret-injector.io/expires-at": expires_at}},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode(config.to_string())}});
    if managed {
        s["metadata"]["labels"] = json!({"app.kubernetes.io/managed-by": "pullsecret-injector"});
    }
    s
}

async fn cluster() -> FakeApiServer {
    let api = FakeApiServer::start().await;
    for ns in ["registry-credentials", "team-a"] {
        api.put_namespace(ns, &[]);
    }
    api
}

async fn explain(api: &FakeApiServer, args: &[&str]) -> (std::process::Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let kubeconfig = api.kubeconfig_path().to_path_buf();
    let mut all: Vec<String> = vec![
        "explain".into(),
        "--policy".into(),
        policy.display().to_string(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let out = tokio::task::spawn_blocking(move || {
        cli::run_command(cli::command().args(&all).env("KUBECONFIG", kubeconfig), b"")
    })
    .await
    .unwrap();
    (out, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_cluster_shows_each_token_secrets_expiry_and_whether_it_passed() {
    let api = cluster().await;
    api.put(
        Kind::Secrets,
        token_secret(
            "registry-credentials",
            "ecr-pull",
            "2999-01-01T00:00:00Z",
            true,
        ),
    );
    // The copy in the Pod's namespace still holds an older, expired token.
    api.put(
        Kind::Secrets,
        token_secret("team-a", "ecr-pull", "2025-01-01T00:00:00Z", true),
    );

    let (out, _dir) = explain(
        &api,
        &[
            "--image",
            ECR_IMAGE,
            "-n",
            "team-a",
            "--cluster",
            "-o",
            "json",
        ],
    )
    .await;
    cli::assert_exit(&out, 0);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let live = &v["tokenSources"][0]["cluster"];
    assert_eq!(
        live,
        &json!([
            {"namespace": "registry-credentials", "name": "ecr-pull", "role": "source",
             "exists": true, "managed": true, "expiresAt": "2999-01-01T00:00:00Z",
             "expired": false, "note": null},
            {"namespace": "team-a", "name": "ecr-pull", "role": "copy",
             "exists": true, "managed": true, "expiresAt": "2025-01-01T00:00:00Z",
             "expired": true, "note": live[1]["note"]},
        ]),
        "{v}"
    );
    assert!(
        live[1]["note"].as_str().unwrap().starts_with("expired "),
        "{live}"
    );

    let (out, _dir) = explain(&api, &["--image", ECR_IMAGE, "-n", "team-a", "--cluster"]).await;
    cli::assert_exit(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("token secret:   registry-credentials/ecr-pull (source) expires 2999-01-01T00:00:00Z (in "),
        "{text}"
    );
    assert!(
        text.contains(
            "token secret:   team-a/ecr-pull (copy) EXPIRED at 2025-01-01T00:00:00Z; expired "
        ),
        "{text}"
    );
    assert!(
        !text.contains(PASSWORD) && !text.contains("dockerconfigjson"),
        "{text}"
    );

    // YAML carries the same fields.
    let (out, _dir) = explain(
        &api,
        &[
            "--image",
            ECR_IMAGE,
            "-n",
            "team-a",
            "--cluster",
            "-o",
            "yaml",
        ],
    )
    .await;
    cli::assert_exit(&out, 0);
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(
        yaml.contains("expired: true") && yaml.contains("expired: false"),
        "{yaml}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_cluster_says_when_a_token_secret_is_missing_or_not_ours() {
    let api = cluster().await;
    // A user's own Secret where serve would mint gar-pull: never ours to refresh.
    api.put(
        Kind::Secrets,
        token_secret(
            "registry-credentials",
            "gar-pull",
            "2999-01-01T00:00:00Z",
            false,
        ),
    );
    let (out, _dir) = explain(
        &api,
        &[
            "--image",
            GAR_IMAGE,
            "-n",
            "team-a",
            "--cluster",
            "-o",
            "json",
        ],
    )
    .await;
    cli::assert_exit(&out, 0);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let live = &v["tokenSources"][0]["cluster"];
    assert_eq!(live[0]["managed"], false, "{live}");
    assert!(
        live[0]["note"]
            .as_str()
            .unwrap()
            .contains("not managed by pullsecret-injector"),
        "{live}"
    );
    assert_eq!(live[1]["exists"], false, "{live}");
    assert_eq!(live[1]["expired"], Value::Null, "{live}");
    assert!(
        live[1]["note"]
            .as_str()
            .unwrap()
            .contains("first admission"),
        "{live}"
    );
    // The source namespace itself: one Secret, no copy to look at.
    let (out, _dir) = explain(
        &api,
        &[
            "--image",
            ECR_IMAGE,
            "-n",
            "registry-credentials",
            "--cluster",
            "-o",
            "json",
        ],
    )
    .await;
    cli::assert_exit(&out, 0);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let live = v["tokenSources"][0]["cluster"].as_array().unwrap().clone();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0]["exists"], false);
    assert!(
        live[0]["note"]
            .as_str()
            .unwrap()
            .contains("not minted it yet")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_reads_the_cluster_only_when_asked() {
    let api = cluster().await;
    api.put(
        Kind::Secrets,
        token_secret(
            "registry-credentials",
            "ecr-pull",
            "2999-01-01T00:00:00Z",
            true,
        ),
    );
    // KUBECONFIG names a reachable cluster, yet without --cluster nothing is read.
    let (out, _dir) = explain(&api, &["--image", ECR_IMAGE, "-o", "json"]).await;
    cli::assert_exit(&out, 0);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["tokenSources"][0].get("cluster").is_none(), "{v}");
    assert!(
        !api.requests().iter().any(|r| r.is_api_call()),
        "{:?}",
        api.requests()
    );
    // With it, an unreachable cluster is a clear error, exit 2.
    let (out, _dir) = explain(
        &api,
        &[
            "--image",
            ECR_IMAGE,
            "--kubeconfig",
            "/nonexistent/kubeconfig",
        ],
    )
    .await;
    cli::assert_exit(&out, 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/kubeconfig"), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
