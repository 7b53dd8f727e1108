//! `audit` finds, in what a cluster holds: registry Secrets the kubelet cannot decode, Pods
//! whose images no imagePullSecret covers, managed copies that drifted from their source,
//! and policy rules whose source Secret is missing, of the wrong type, or does not cover
//! the rule's registries.

mod support;

use std::collections::BTreeSet;

use base64::Engine;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use pullsecret_injector::audit::{ClusterFacts, audit};
use pullsecret_injector::k8s::content_hash;
use pullsecret_injector::policy::Policy;
use serde_json::{Value, json};
use support::cli;
use support::fake_apiserver::{FakeApiServer, Kind, Match};

const POLICY: &str = "\
sourceNamespace: registry-credentials
excludeNamespaces: [kube-system]
rules:
  - name: gitlab
    registries: [\"registry.gitlab.com/acme/\"]
    secret: gitlab-pull
  - name: ecr
    registries: [\"*.dkr.ecr.*.amazonaws.com\"]
    secret: ecr-pull
  - name: hub-org
    registries: [\"docker.io/acme/\"]
    secret: hub-pull
  - name: example
    registries: [\"registry.example.com\"]
    secret: absent-pull
  - name: ghcr
    registries: [\"ghcr.io/acme\"]
    secret: opaque-pull
";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn config(keys: &[&str]) -> String {
    let auths: serde_json::Map<String, Value> = keys
        .iter()
        .map(|k| {
            (
                k.to_string(),
                json!({"username": "u", "password": "p", "auth": b64("u:p")}),
            )
        })
        .collect();
    json!({"auths": auths}).to_string()
}

fn secret(ns: &str, name: &str, type_: &str, config: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "type": type_, "data": {".dockerconfigjson": b64(config)}})
}

/// A managed copy as the copier writes it: its source-hash annotation is the hash of the
/// content it was written with (`config`).
fn copy_of(ns: &str, name: &str, source: &str, config: &str) -> Value {
    let mut s = secret(ns, name, JSON_TYPE, config);
    let hash = hash_of(&s);
    s["metadata"]["labels"] = json!({"app.kubernetes.io/managed-by": "pullsecret-injector"});
    s["metadata"]["annotations"] = json!({"pullsecret-injector.io/source": source,
        "pullsecret-injector.io/source-hash": hash});
    s
}

/// A managed copy written with `written` whose data someone then replaced with `edited`.
fn edited_copy(ns: &str, name: &str, source: &str, written: &str, edited: &str) -> Value {
    let mut s = copy_of(ns, name, source, written);
    s["data"] = secret(ns, name, JSON_TYPE, edited)["data"].clone();
    s
}

/// The cluster side's content hash of a Secret given as JSON.
fn hash_of(secret: &Value) -> String {
    content_hash(&serde_json::from_value::<Secret>(secret.clone()).unwrap())
}

fn pod(ns: &str, name: &str, images: &[&str], pull: &[&str]) -> Value {
    let containers: Vec<Value> = images
        .iter()
        .enumerate()
        .map(|(i, image)| json!({"name": format!("c{i}"), "image": image}))
        .collect();
    let mut spec = json!({"containers": containers});
    if !pull.is_empty() {
        spec["imagePullSecrets"] = pull.iter().map(|n| json!({"name": n})).collect();
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

const JSON_TYPE: &str = "kubernetes.io/dockerconfigjson";

const NAMESPACES: [&str; 5] = [
    "team-a",
    "team-b",
    "team-c",
    "kube-system",
    "registry-credentials",
];

/// One instance of every problem, and healthy objects beside them: (Secrets of any type, Pods).
fn objects() -> (Vec<Value>, Vec<Value>) {
    let gitlab = config(&["registry.gitlab.com"]);
    let secrets = vec![
        secret("registry-credentials", "gitlab-pull", JSON_TYPE, &gitlab),
        secret(
            "registry-credentials",
            "ecr-pull",
            JSON_TYPE,
            &config(&["123456789012.dkr.ecr.eu-west-1.amazonaws.com"]),
        ),
        secret(
            "registry-credentials",
            "hub-pull",
            JSON_TYPE,
            &config(&["https://index.docker.io/v1/"]),
        ),
        secret("registry-credentials", "opaque-pull", "Opaque", &gitlab),
        copy_of(
            "team-a",
            "gitlab-pull",
            "registry-credentials/gitlab-pull",
            &gitlab,
        ),
        copy_of(
            "team-b",
            "gitlab-pull",
            "registry-credentials/gitlab-pull",
            &config(&["registry.gitlab.com", "old.example.com"]),
        ),
        copy_of("team-b", "gone", "registry-credentials/deleted", &gitlab),
        edited_copy(
            "team-c",
            "gitlab-pull",
            "registry-credentials/gitlab-pull",
            &gitlab,
            &config(&["registry.gitlab.com", "edited.example.com"]),
        ),
        secret(
            "team-c",
            "broken",
            JSON_TYPE,
            r#"{"auths":{"registry.gitlab.com":{"auth":"not base64!"}}}"#,
        ),
    ];
    let pods = vec![
        pod(
            "team-a",
            "covered",
            &["registry.gitlab.com/acme/app:1", "nginx:1.27"],
            &["gitlab-pull"],
        ),
        pod(
            "team-a",
            "uncovered",
            &["registry.gitlab.com/acme/app:1"],
            &[],
        ),
        pod(
            "team-a",
            "private-registry",
            &["quay.io/someone/tool:2"],
            &[],
        ),
        pod("team-a", "dangling-ref", &["nginx"], &["does-not-exist"]),
        pod("team-c", "uses-broken", &["nginx"], &["broken"]),
        pod(
            "kube-system",
            "coredns",
            &["registry.k8s.io/coredns/coredns:v1.11.1"],
            &[],
        ),
    ];
    (secrets, pods)
}

/// What `audit` would read from that cluster.
fn cluster() -> (ClusterFacts, Policy) {
    let (secrets, pods) = objects();
    let secrets: Vec<Secret> = secrets
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
    let policy = Policy::parse(POLICY, "policy.yaml").unwrap();
    let rule_sources = policy
        .secret_names()
        .into_iter()
        .map(|name| {
            let found = secrets.iter().find(|s| {
                s.metadata.namespace.as_deref() == Some("registry-credentials")
                    && s.metadata.name.as_deref() == Some(name.as_str())
            });
            (name, found.cloned())
        })
        .collect();
    let facts = ClusterFacts {
        // Only registry types: the audit lists with a `type=` field selector.
        secrets: secrets
            .into_iter()
            .filter(|s| s.type_.as_deref() != Some("Opaque"))
            .collect(),
        pods: pods
            .into_iter()
            .map(|p| serde_json::from_value::<Pod>(p).unwrap())
            .collect(),
        namespaces: NAMESPACES
            .iter()
            .map(|n| serde_json::from_value::<Namespace>(json!({"metadata": {"name": n}})).unwrap())
            .collect(),
        service_accounts: Vec::new(),
        rule_sources,
    };
    (facts, policy)
}

fn codes(report: &pullsecret_injector::audit::AuditReport) -> BTreeSet<(String, String)> {
    report
        .findings
        .iter()
        .map(|f| (f.code.to_string(), f.object.clone()))
        .collect()
}

#[test]
fn every_problem_is_found_once_and_healthy_objects_are_quiet() {
    let (facts, policy) = cluster();
    let report = audit(&facts, Some(&policy), "pullsecret-injector");
    let want: BTreeSet<(String, String)> = [
        ("secret-broken", "Secret team-c/broken"),
        ("copy-stale", "Secret team-b/gitlab-pull"),
        ("copy-edited", "Secret team-c/gitlab-pull"),
        ("copy-source-missing", "Secret team-b/gone"),
        ("pod-uncovered", "Pod team-a/uncovered"),
        ("pod-uncovered", "Pod team-a/private-registry"),
        ("pod-secret-missing", "Pod team-a/dangling-ref"),
        ("pod-secret-broken", "Pod team-c/uses-broken"),
        ("rule-not-covered", "rule ecr"),
        ("rule-secret-missing", "rule example"),
        ("rule-secret-wrong-type", "rule ghcr"),
    ]
    .iter()
    .map(|(c, o)| (c.to_string(), o.to_string()))
    .collect();
    assert_eq!(codes(&report), want, "{:#?}", report.findings);
    assert_eq!(report.findings.len(), want.len(), "no duplicates");
}

#[test]
fn policy_rule_gaps_are_errors_other_private_registries_warnings() {
    let (facts, policy) = cluster();
    let report = audit(&facts, Some(&policy), "pullsecret-injector");
    let find = |object: &str| report.findings.iter().find(|f| f.object == object).unwrap();
    let gitlab = find("Pod team-a/uncovered");
    assert_eq!(serde_json::to_value(gitlab.severity).unwrap(), "error");
    assert!(gitlab.message.contains("rule gitlab"), "{}", gitlab.message);
    let quay = find("Pod team-a/private-registry");
    assert_eq!(serde_json::to_value(quay.severity).unwrap(), "warning");
    assert!(quay.message.contains("quay.io"), "{}", quay.message);
    let ecr = find("rule ecr");
    assert!(
        ecr.message.contains("x.dkr.ecr.x.amazonaws.com"),
        "{}",
        ecr.message
    );
}

#[test]
fn secrets_are_listed_with_the_registries_they_cover() {
    let (facts, policy) = cluster();
    let report = audit(&facts, Some(&policy), "pullsecret-injector");
    let hub = report
        .secrets
        .iter()
        .find(|s| s.name == "hub-pull")
        .unwrap();
    assert_eq!(hub.registries, ["index.docker.io"]);
    let copy = report
        .secrets
        .iter()
        .find(|s| s.namespace == "team-a" && s.name == "gitlab-pull")
        .unwrap();
    assert_eq!(
        copy.copy_of.as_deref(),
        Some("registry-credentials/gitlab-pull")
    );
    assert_eq!(copy.registries, ["registry.gitlab.com"]);
    let broken = report.secrets.iter().find(|s| s.name == "broken").unwrap();
    assert!(broken.broken);
    assert!(
        !serde_json::to_string(&report)
            .unwrap()
            .contains("not base64!"),
        "never echoes secret data"
    );
}

#[test]
fn without_a_policy_only_private_registries_need_secrets() {
    let (facts, _) = cluster();
    let report = audit(&facts, None, "pullsecret-injector");
    let pods: BTreeSet<String> = report
        .findings
        .iter()
        .filter(|f| f.code == "pod-uncovered")
        .map(|f| f.object.clone())
        .collect();
    // kube-system is skipped; the gitlab image is on a private registry either way.
    assert_eq!(
        pods,
        ["Pod team-a/private-registry", "Pod team-a/uncovered"]
            .map(String::from)
            .into()
    );
    assert!(report.findings.iter().all(|f| !f.code.starts_with("rule-")));
}

/// Audits only these Secrets (no Pods, no policy); returns the `copy-*` findings as
/// (code, object, message), in the audit's order.
fn copy_findings(secrets: &[Value]) -> Vec<(String, String, String)> {
    let facts = ClusterFacts {
        secrets: secrets
            .iter()
            .map(|v| serde_json::from_value(v.clone()).unwrap())
            .collect(),
        pods: Vec::new(),
        namespaces: Vec::new(),
        service_accounts: Vec::new(),
        rule_sources: Default::default(),
    };
    let report = audit(&facts, None, "pullsecret-injector");
    report
        .findings
        .into_iter()
        .filter(|f| f.code.starts_with("copy-"))
        .map(|f| {
            assert_eq!(serde_json::to_value(f.severity).unwrap(), "error", "{f:?}");
            (f.code.to_string(), f.object, f.message)
        })
        .collect()
}

#[test]
fn stale_and_hand_edited_copies_are_told_apart_by_the_source_hash() {
    let v1 = config(&["registry.gitlab.com"]);
    let v2 = config(&["registry.gitlab.com", "mirror.example.com"]);
    let source = "registry-credentials/gitlab-pull";
    let mut unannotated = copy_of("team-e", "gitlab-pull", source, &v2);
    unannotated["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("pullsecret-injector.io/source-hash");
    let secrets = [
        // The source, rotated from v1 to v2.
        secret("registry-credentials", "gitlab-pull", JSON_TYPE, &v2),
        // Written after the rotation: current, not reported.
        copy_of("team-a", "gitlab-pull", source, &v2),
        // Written before the rotation and left alone since: stale.
        copy_of("team-b", "gitlab-pull", source, &v1),
        // Written after the rotation, then its data replaced by hand.
        edited_copy("team-c", "gitlab-pull", source, &v2, &v1),
        // Written before the rotation, then set by hand to what the source now holds: the
        // credentials work, but the copy is not what the injector wrote.
        edited_copy("team-d", "gitlab-pull", source, &v1, &v2),
        unannotated,
        // A source recreated with another type: the copy's type is stale.
        secret(
            "registry-credentials",
            "cfg-pull",
            "kubernetes.io/dockercfg",
            &v1,
        ),
        copy_of("team-f", "cfg-pull", "registry-credentials/cfg-pull", &v1),
    ];
    let findings = copy_findings(&secrets);
    let got: Vec<(&str, &str)> = findings
        .iter()
        .map(|(code, object, _)| (code.as_str(), object.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("copy-stale", "Secret team-b/gitlab-pull"),
            ("copy-edited", "Secret team-c/gitlab-pull"),
            ("copy-edited", "Secret team-d/gitlab-pull"),
            ("copy-edited", "Secret team-e/gitlab-pull"),
            ("copy-stale", "Secret team-f/cfg-pull"),
        ],
        "{findings:#?}"
    );
    let message = |object: &str| {
        findings
            .iter()
            .find(|(_, o, _)| o == object)
            .map(|(_, _, m)| m.as_str())
            .unwrap()
    };
    let stale = message("Secret team-b/gitlab-pull");
    assert!(
        stale.contains(source) && stale.contains("older version") && stale.contains("data"),
        "{stale}"
    );
    assert!(
        message("Secret team-f/cfg-pull").contains("type"),
        "{findings:#?}"
    );
    for object in ["Secret team-c/gitlab-pull", "Secret team-d/gitlab-pull"] {
        let edited = message(object);
        assert!(
            edited.contains("edited by hand")
                && edited.contains("no longer match its pullsecret-injector.io/source-hash"),
            "{edited}"
        );
    }
    let unannotated = message("Secret team-e/gitlab-pull");
    assert!(
        unannotated.contains("edited by hand")
            && unannotated.contains("carries no pullsecret-injector.io/source-hash"),
        "{unannotated}"
    );
    for (_, _, message) in &findings {
        assert!(
            !message.contains(&b64(&v1)) && !message.contains(&b64(&v2)),
            "never echoes secret data: {message}"
        );
    }
}

#[test]
fn a_copy_written_from_an_earlier_source_namespace_is_stale_as_the_copier_sees_it() {
    let gitlab = config(&["registry.gitlab.com"]);
    let policy = Policy::parse(
        "sourceNamespace: new-creds\nrules:\n  - name: gitlab\n    registries: [\"registry.gitlab.com/acme/\"]\n    secret: gitlab-pull\n",
        "policy.yaml",
    )
    .unwrap();
    let secrets: Vec<Secret> = [
        // The same credentials in the old and the new source namespace.
        secret("old-creds", "gitlab-pull", JSON_TYPE, &gitlab),
        secret("new-creds", "gitlab-pull", JSON_TYPE, &gitlab),
        // Written while the policy said `sourceNamespace: old-creds`.
        copy_of("team-a", "gitlab-pull", "old-creds/gitlab-pull", &gitlab),
        // Written since the change: current.
        copy_of("team-b", "gitlab-pull", "new-creds/gitlab-pull", &gitlab),
    ]
    .into_iter()
    .map(|v| serde_json::from_value(v).unwrap())
    .collect();
    let facts = ClusterFacts {
        rule_sources: [("gitlab-pull".to_string(), Some(secrets[1].clone()))].into(),
        secrets,
        pods: Vec::new(),
        namespaces: Vec::new(),
        service_accounts: Vec::new(),
    };
    let report = audit(&facts, Some(&policy), "pullsecret-injector");
    let copies: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.code.starts_with("copy-"))
        .collect();
    assert_eq!(copies.len(), 1, "{copies:#?}");
    assert_eq!(copies[0].code, "copy-stale");
    assert_eq!(copies[0].object, "Secret team-a/gitlab-pull");
    assert!(
        copies[0].message.contains("old-creds/gitlab-pull")
            && copies[0].message.contains("new-creds/gitlab-pull"),
        "{}",
        copies[0].message
    );
    // Without the policy only the copy's own record counts, and it matches its source.
    let report = audit(&facts, None, "pullsecret-injector");
    assert!(report.findings.iter().all(|f| !f.code.starts_with("copy-")));
}

// ---------------------------------------------------------------------------------------
// The command against a (fake) API server, through a kubeconfig.

/// Runs the binary off the runtime's threads (the fake answers on them).
async fn run_audit(api: &FakeApiServer, args: &[&str]) -> std::process::Output {
    let kubeconfig = api.kubeconfig_path().to_path_buf();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        cli::run_command(
            cli::command()
                .arg("audit")
                .args(&args)
                .env("KUBECONFIG", kubeconfig),
            b"",
        )
    })
    .await
    .unwrap()
}

async fn fake_cluster() -> FakeApiServer {
    let api = FakeApiServer::start().await;
    for ns in NAMESPACES.iter().chain(&["pullsecret-injector"]) {
        if api.get_namespace(ns).is_none() {
            api.put_namespace(ns, &[]);
        }
    }
    let (secrets, pods) = objects();
    for s in secrets {
        api.put(Kind::Secrets, s);
    }
    for p in pods {
        api.put(Kind::Pods, p);
    }
    api.put(
        Kind::ConfigMaps,
        json!({"metadata": {"name": "policy", "namespace": "pullsecret-injector"},
               "data": {"policy.yaml": POLICY}}),
    );
    api
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_command_reports_the_cluster_and_exits_1() {
    let api = fake_cluster().await;
    let out = run_audit(
        &api,
        &[
            "--policy-configmap",
            "pullsecret-injector/policy",
            "-o",
            "json",
        ],
    )
    .await;
    cli::assert_exit(&out, 1);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let got: BTreeSet<(String, String)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["code"].as_str().unwrap().to_string(),
                f["object"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let (facts, policy) = cluster();
    let want = codes(&audit(&facts, Some(&policy), "pullsecret-injector"));
    assert_eq!(
        got, want,
        "the command reads the cluster the way the table test builds it"
    );
    assert!(want.len() >= 10);
    let listed: BTreeSet<String> = report["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{}/{}",
                s["namespace"].as_str().unwrap(),
                s["name"].as_str().unwrap()
            )
        })
        .collect();
    assert!(listed.contains("registry-credentials/hub-pull"));
    assert!(
        !listed.contains("registry-credentials/opaque-pull"),
        "only registry types are listed"
    );

    // Secrets are listed by type, never all at once.
    let secret_lists: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|r| Match::any().method("GET").resource("secrets").matches(r) && r.name.is_none())
        .map(|r| r.query)
        .collect();
    assert_eq!(secret_lists.len(), 2, "{secret_lists:?}");
    assert!(
        secret_lists
            .iter()
            .all(|q| q.contains("fieldSelector=type")),
        "{secret_lists:?}"
    );

    let text = run_audit(&api, &["--policy-configmap", "pullsecret-injector/policy"]).await;
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(
            "registry-credentials/hub-pull [kubernetes.io/dockerconfigjson] covers: index.docker.io"
        ),
        "{text}"
    );
    assert!(text.contains("[copy-stale]"), "{text}");
    assert!(text.contains("[copy-edited]"), "{text}");
    assert!(
        !text.contains("not base64!"),
        "no secret data in the output"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_cluster_exits_0_and_bad_policy_reference_exits_2() {
    let api = FakeApiServer::start().await;
    api.put_namespace("registry-credentials", &[]);
    api.put_namespace("team-a", &[]);
    let gitlab = config(&["registry.gitlab.com"]);
    api.put(
        Kind::Secrets,
        secret("registry-credentials", "gitlab-pull", JSON_TYPE, &gitlab),
    );
    api.put(
        Kind::Secrets,
        copy_of(
            "team-a",
            "gitlab-pull",
            "registry-credentials/gitlab-pull",
            &gitlab,
        ),
    );
    api.put(
        Kind::Pods,
        pod(
            "team-a",
            "web",
            &["registry.gitlab.com/acme/app:1", "nginx"],
            &["gitlab-pull"],
        ),
    );
    let policy = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        policy.path(),
        "sourceNamespace: registry-credentials\nrules:\n  - name: gitlab\n    registries: [\"registry.gitlab.com/acme/\"]\n    secret: gitlab-pull\n",
    )
    .unwrap();
    let out = run_audit(&api, &["--policy", policy.path().to_str().unwrap()]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("No findings."));

    let out = run_audit(&api, &["--policy-configmap", "pullsecret-injector/missing"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ConfigMap"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_clusters_are_read_page_by_page() {
    let api = FakeApiServer::start().await;
    api.put_namespace("team-a", &[]);
    for i in 0..520 {
        api.put(
            Kind::Pods,
            pod("team-a", &format!("p{i}"), &["quay.io/acme/app:1"], &[]),
        );
    }
    let out = run_audit(&api, &["-o", "json"]).await;
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let uncovered = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == "pod-uncovered")
        .count();
    assert_eq!(uncovered, 520, "every Pod is read");
    let pod_lists = api
        .requests()
        .into_iter()
        .filter(|r| Match::any().method("GET").resource("pods").matches(r))
        .count();
    assert!(pod_lists >= 2, "read in pages ({pod_lists} requests)");
}

/// A token Secret as `serve` mints it (managed, kind and expiry annotated).
fn token_secret(name: &str, kind: &str, expires_at: &str, registry: &str) -> Value {
    let mut s = secret(
        "registry-credentials",
        name,
        JSON_TYPE,
        &config(&[registry]),
    );
    s["metadata"]["labels"] = json!({"app.kubernetes.io/managed-by": "pullsecret-injector"});
    s["metadata"]["annotations"] = json!({
        "pullsecret-injector.io/token-source": kind,
        "pullsecret-injector.io/expires-at": expires_at,
    });
    s
}

/// A copy of `source` as the copier writes it: same content, the source's expiry.
fn token_copy(ns: &str, source: &Value) -> Value {
    let name = source["metadata"]["name"].as_str().unwrap();
    let mut c = source.clone();
    c["metadata"] = json!({"name": name, "namespace": ns,
    "labels": {"app.kubernetes.io/managed-by": "pullsecret-injector"},
    "annotations": {
        "pullsecret-injector.io/source": format!("registry-credentials/{name}"),
        "pullsecret-injector.io/source-hash": hash_of(source),
        "pullsecret-injector.io/expires-at": source["metadata"]["annotations"]["pullsecret-injector.io/expires-at"],
    }});
    c
}

const TOKEN_POLICY: &str = "\
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
    registries: [\"123456789012.dkr.ecr.eu-west-1.amazonaws.com\"]
    secret: ecr-pull
  - name: gar
    registries: [\"europe-docker.pkg.dev\"]
    secret: gar-pull
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_secrets_are_listed_with_their_expiry_and_expired_ones_flagged() {
    let expired = token_secret(
        "ecr-pull",
        "ecr",
        "2025-01-01T00:00:00Z",
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
    );
    let fresh = token_secret(
        "gar-pull",
        "google",
        "2999-01-01T00:00:00Z",
        "europe-docker.pkg.dev",
    );
    let api = FakeApiServer::start().await;
    for ns in ["registry-credentials", "team-a"] {
        api.put_namespace(ns, &[]);
    }
    for s in [
        expired.clone(),
        fresh.clone(),
        token_copy("team-a", &expired),
        token_copy("team-a", &fresh),
    ] {
        api.put(Kind::Secrets, s);
    }
    let policy = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(policy.path(), TOKEN_POLICY).unwrap();
    let policy_arg = policy.path().to_str().unwrap();

    let out = run_audit(&api, &["--policy", policy_arg, "-o", "json"]).await;
    cli::assert_exit(&out, 1);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let summary = |ns: &str, name: &str| {
        report["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["namespace"] == ns && s["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{ns}/{name} listed: {report}"))
    };
    let source = summary("registry-credentials", "ecr-pull");
    assert_eq!(source["tokenSource"], "ecr");
    assert_eq!(source["expiresAt"], "2025-01-01T00:00:00Z");
    assert_eq!(source["expired"], true);
    let copy = summary("team-a", "ecr-pull");
    assert_eq!(copy["expiresAt"], "2025-01-01T00:00:00Z");
    assert_eq!(copy["expired"], true);
    assert_eq!(copy["copyOf"], "registry-credentials/ecr-pull");
    let gar = summary("registry-credentials", "gar-pull");
    assert_eq!(gar["tokenSource"], "google");
    assert_eq!(gar["expiresAt"], "2999-01-01T00:00:00Z");
    assert!(gar.get("expired").is_none(), "{gar}");

    let flagged: BTreeSet<String> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == "token-expired")
        .map(|f| f["object"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        flagged,
        BTreeSet::from([
            "Secret registry-credentials/ecr-pull".to_string(),
            "Secret team-a/ecr-pull".to_string(),
        ]),
        "{report}"
    );
    // The copies carry their sources' expiry: current, nothing else to say.
    let codes: BTreeSet<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, BTreeSet::from(["token-expired"]), "{report}");

    let text = run_audit(&api, &["--policy", policy_arg]).await;
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("registry-credentials/ecr-pull [kubernetes.io/dockerconfigjson] covers: 123456789012.dkr.ecr.eu-west-1.amazonaws.com (minted by serve: ecr) EXPIRED at 2025-01-01T00:00:00Z"),
        "{text}"
    );
    assert!(
        text.contains("(minted by serve: google) expires 2999-01-01T00:00:00Z"),
        "{text}"
    );
    assert!(
        text.contains(
            "error: Secret registry-credentials/ecr-pull: its token expired at 2025-01-01T00:00:00Z"
        ),
        "{text}"
    );
}

#[test]
fn a_copy_without_its_sources_expiry_is_stale() {
    let source = token_secret(
        "ecr-pull",
        "ecr",
        "2999-01-01T00:00:00Z",
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
    );
    // Written before copies carried the expiry: same content, no annotation.
    let mut old = token_copy("team-a", &source);
    old["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("pullsecret-injector.io/expires-at");
    let policy = Policy::parse(TOKEN_POLICY, "policy.yaml").unwrap();
    let secrets: Vec<Secret> = [source, old]
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
    let facts = ClusterFacts {
        secrets,
        ..ClusterFacts::default()
    };
    let report = audit(&facts, Some(&policy), "pullsecret-injector");
    let stale: Vec<&str> = report
        .findings
        .iter()
        .filter(|f| f.code == "copy-stale" && f.object == "Secret team-a/ecr-pull")
        .map(|f| f.message.as_str())
        .collect();
    assert_eq!(stale.len(), 1, "{:?}", report.findings);
    assert!(stale[0].contains("expires-at"), "{}", stale[0]);
}
