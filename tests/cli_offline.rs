//! The offline commands, run as a user would: review, explain, check.

mod support;

use serde_json::{Value, json};
use support::{POLICY, SAMPLES_POLICY, cli, samples_dir};

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn check_accepts_a_valid_policy_with_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(&dir, "policy.yaml", POLICY);
    let out = cli::run(&["check", "--policy", &policy], b"");
    cli::assert_exit(&out, 0);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1);
    assert!(stdout.contains("ok: 5 rules, 4 secrets"), "{stdout}");
}

#[test]
fn check_lists_every_problem_as_file_line_col() {
    let dir = tempfile::tempdir().unwrap();
    let text = "sourceNamespace: creds\nrules:\n  - name: a\n    registries: []\n    secret: s\n  - name: a\n    registries: [\"q[.io\"]\n    secret: s\n";
    let policy = write(&dir, "bad.yaml", text);
    let out = cli::run(&["check", "--policy", &policy], b"");
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[0].starts_with(&format!("{policy}:4:17: ")),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with(&format!("{policy}:6:11: duplicate rule name")),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with(&format!("{policy}:7:18: ")),
        "{stdout}"
    );

    let unknown = write(
        &dir,
        "unknown.yaml",
        "sourceNamespace: creds\nexcludeNamespace: [a]\n",
    );
    let out = cli::run(&["check", "--policy", &unknown], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .starts_with(&format!("{unknown}:2:1: unknown field `excludeNamespace`"))
    );
}

#[test]
fn check_of_a_missing_file_is_a_usage_error() {
    let out = cli::run(&["check", "--policy", "/nonexistent/policy.yaml"], b"");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn explain_json_has_exactly_the_documented_keys() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(&dir, "policy.yaml", POLICY);
    let out = cli::run(
        &[
            "explain",
            "--policy",
            &policy,
            "--image",
            "registry.gitlab.com/acme/mirror/app:1",
            "-o",
            "json",
        ],
        b"",
    );
    cli::assert_exit(&out, 0);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v,
        json!({
            "image": "registry.gitlab.com/acme/mirror/app:1",
            "valid": true,
            "error": null,
            "registry": "registry.gitlab.com",
            "repository": "acme/mirror/app",
            "tag": "1",
            "digest": null,
            "lookupTarget": "registry.gitlab.com/acme/mirror/app",
            "rules": ["gitlab", "gitlab-mirror"],
            "secrets": ["gitlab-deploy-token"],
            "notApplied": [
                {"rule": "ecr", "reason": "none of its registries (*.dkr.ecr.*.amazonaws.com) matches registry.gitlab.com/acme/mirror/app"},
                {"rule": "ghcr", "reason": "none of its registries (ghcr.io/acme) matches registry.gitlab.com/acme/mirror/app"},
                {"rule": "quay", "reason": "none of its registries (quay.io) matches registry.gitlab.com/acme/mirror/app"},
            ],
            "serviceAccounts": [],
            "tokenSources": [],
        })
    );
}

#[test]
fn explain_says_a_token_source_secret_is_minted_by_serve_and_how() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(
        &dir,
        "policy.yaml",
        "sourceNamespace: registry-credentials
tokenSources:
  - secret: ecr-pull
    ecr:
      region: eu-west-1
      registryIds: [\"123456789012\"]
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
  - name: gitlab
    registries: [registry.gitlab.com]
    secret: gitlab-pull
",
    );
    let explain = |image: &str, json: bool| {
        let mut args = vec!["explain", "--policy", &policy, "--image", image];
        if json {
            args.extend(["-o", "json"]);
        }
        let out = cli::run(&args, b"");
        cli::assert_exit(&out, 0);
        String::from_utf8(out.stdout).unwrap()
    };
    let ecr = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app:1";
    let v: Value = serde_json::from_str(&explain(ecr, true)).unwrap();
    assert_eq!(
        v["tokenSources"],
        json!([{"secret": "ecr-pull", "kind": "ecr",
                "mintedFor": "region eu-west-1, registries 123456789012",
                "refresh": "at half-life"}])
    );
    let text = explain(ecr, false);
    assert!(
        text.contains(
            "token source:   ecr-pull minted by serve (ecr, region eu-west-1, registries 123456789012), refreshed at half-life"
        ),
        "{text}"
    );
    assert!(text.contains("pullsecret-injector.io/expires-at"), "{text}");
    let gar = explain("europe-docker.pkg.dev/p/r/app:1", false);
    assert!(
        gar.contains("gar-pull minted by serve (google, registries europe-docker.pkg.dev)"),
        "{gar}"
    );
    // A Secret the user keeps is not said to be minted.
    let gitlab = explain("registry.gitlab.com/acme/app:1", false);
    assert!(!gitlab.contains("token source:"), "{gitlab}");
    let v: Value = serde_json::from_str(&explain("registry.gitlab.com/acme/app:1", true)).unwrap();
    assert_eq!(v["tokenSources"], json!([]));
}

#[test]
fn explain_honours_namespace_labels_and_works_without_a_policy() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(&dir, "policy.yaml", POLICY);
    let explain = |extra: &[&str]| -> Value {
        let out = cli::run_command(
            cli::command()
                .args(["explain", "--image", "quay.io/acme/x", "-o", "json"])
                .args(extra),
            b"",
        );
        assert_eq!(out.status.code(), Some(0));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(explain(&["--policy", &policy])["secrets"], json!([]));
    assert_eq!(
        explain(&[
            "--policy",
            &policy,
            "--namespace-labels",
            "registry-access=quay"
        ])["secrets"],
        json!(["quay-pull"])
    );
    let bare = explain(&[]);
    assert_eq!(bare["rules"], json!([]));
    assert_eq!(bare["lookupTarget"], "quay.io/acme/x");
}

#[test]
fn explain_of_an_invalid_image_is_an_answer_not_an_error() {
    let out = cli::run(&["explain", "--image", "Not/Valid", "-o", "json"], b"");
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(v["registry"], Value::Null);
    assert_eq!(v.as_object().unwrap().len(), 13);

    let text = cli::run(&["explain", "--image", "nginx"], b"");
    assert_eq!(text.status.code(), Some(0));
    assert!(
        String::from_utf8(text.stdout)
            .unwrap()
            .contains("docker.io/library/nginx")
    );
}

#[test]
fn explain_with_a_broken_policy_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(&dir, "bad.yaml", "sourceNamespace: creds\nrules: 5\n");
    let out = cli::run(&["explain", "--policy", &policy, "--image", "nginx"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains(&format!("{policy}:2:"))
    );
}

#[test]
fn review_answers_an_admission_review_like_serve() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(&dir, "policy.yaml", SAMPLES_POLICY);
    let sample = samples_dir().join("02_pod_create_dryrun.json");
    let out = cli::run(
        &["review", "--policy", &policy, sample.to_str().unwrap()],
        b"",
    );
    cli::assert_exit(&out, 0);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kind"], "AdmissionReview");
    assert_eq!(v["response"]["uid"], "0c9d8e7f-6a5b-4c3d-2e1f-a0b9c8d7e6f5");
    assert_eq!(v["response"]["patchType"], "JSONPatch");
    assert!(v["response"]["patch"].is_string());
}

#[test]
fn review_of_a_bare_yaml_pod_on_stdin_prints_the_patched_pod() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(&dir, "policy.yaml", POLICY);
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: api\nspec:\n  imagePullSecrets: [{name: mine}]\n  containers:\n    - name: api\n      image: registry.gitlab.com/acme/api:1\n";
    let out = cli::run(
        &[
            "review",
            "--policy",
            &policy,
            "--namespace",
            "team-a",
            "--output",
            "patched",
            "-",
        ],
        pod.as_bytes(),
    );
    cli::assert_exit(&out, 0);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["spec"]["imagePullSecrets"],
        json!([{"name": "mine"}, {"name": "gitlab-deploy-token"}])
    );
    assert_eq!(
        v["metadata"]["annotations"]["pullsecret-injector.io/injected"],
        "gitlab=gitlab-deploy-token"
    );

    // The same Pod in the webhook's own namespace is left alone.
    let out = cli::run(
        &[
            "review",
            "--policy",
            &policy,
            "--namespace",
            "psi",
            "--webhook-namespace",
            "psi",
            "-",
        ],
        pod.as_bytes(),
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["response"].get("patch").is_none(), "{v}");
    assert_eq!(v["response"]["allowed"], true);
}

#[test]
fn review_rejects_input_that_is_neither_review_nor_pod() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(&dir, "policy.yaml", POLICY);
    let out = cli::run(&["review", "--policy", &policy], b"kind: ConfigMap\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let out = cli::run(
        &["review", "--policy", &policy],
        b"{\"kind\":\"AdmissionReview\"}",
    );
    assert_eq!(out.status.code(), Some(1));
}
