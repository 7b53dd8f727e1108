//! ServiceAccount coverage in the offline commands: `explain` names the ServiceAccounts that
//! list a matching rule's secret, `review` says what the ServiceAccount admission plugin would
//! have added to the Pod, `check` locates bad `serviceAccounts` entries.

mod support;

use serde_json::{Value, json};
use support::cli;

const POLICY: &str = "\
sourceNamespace: registry-credentials
rules:
  - name: gitlab
    registries: [\"registry.gitlab.com/acme/\"]
    secret: gitlab-deploy-token
    serviceAccounts: [default, builder]
    namespaces:
      include: [\"team-*\"]
  - name: quay
    registries: [\"quay.io/acme/\"]
    secret: quay-pull
";

fn policy_file(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn explain_names_the_service_accounts_that_list_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_file(&dir, POLICY);
    let explain = |image: &str, namespace: &str| -> Value {
        let out = cli::run(
            &[
                "explain",
                "--policy",
                &policy,
                "--image",
                image,
                "--namespace",
                namespace,
                "-o",
                "json",
            ],
            b"",
        );
        cli::assert_exit(&out, 0);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(
        explain("registry.gitlab.com/acme/app:1", "team-a")["serviceAccounts"],
        json!([{
            "rule": "gitlab",
            "secret": "gitlab-deploy-token",
            "serviceAccounts": ["default", "builder"],
        }])
    );
    // The rule does not apply there, or works on Pods only.
    assert_eq!(
        explain("registry.gitlab.com/acme/app:1", "prod")["serviceAccounts"],
        json!([])
    );
    assert_eq!(
        explain("quay.io/acme/app:1", "team-a")["serviceAccounts"],
        json!([])
    );

    let text = cli::run(
        &[
            "explain",
            "--policy",
            &policy,
            "--image",
            "registry.gitlab.com/acme/app:1",
            "--namespace",
            "team-a",
        ],
        b"",
    );
    let stdout = String::from_utf8(text.stdout).unwrap();
    assert!(
        stdout.contains("gitlab-deploy-token listed on ServiceAccounts default, builder"),
        "{stdout}"
    );
}

#[test]
fn review_says_what_the_service_account_gives_the_pod() {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_file(&dir, POLICY);
    let pod = |account: Option<&str>| {
        let mut spec =
            json!({"containers": [{"name": "app", "image": "registry.gitlab.com/acme/app:1"}]});
        if let Some(account) = account {
            spec["serviceAccountName"] = json!(account);
        }
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"}, "spec": spec})
            .to_string()
    };
    let review = |namespace: &str, body: &str| {
        cli::run(
            &["review", "--policy", &policy, "--namespace", namespace, "-"],
            body.as_bytes(),
        )
    };

    let out = review("team-a", &pod(None));
    cli::assert_exit(&out, 0);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("ServiceAccount team-a/default lists gitlab-deploy-token"),
        "{stderr}"
    );
    // stdout stays exactly what `serve` answers.
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["response"]["allowed"], true);

    let out = review("team-a", &pod(Some("deployer")));
    cli::assert_exit(&out, 0);
    assert!(String::from_utf8(out.stderr).unwrap().is_empty());
    let out = review("prod", &pod(Some("builder")));
    assert!(String::from_utf8(out.stderr).unwrap().is_empty());
}

#[test]
fn check_locates_a_bad_service_account_name() {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_file(
        &dir,
        &POLICY.replace("[default, builder]", "[default, Builder_1]"),
    );
    let out = cli::run(&["check", "--policy", &policy], b"");
    assert_eq!(out.status.code(), Some(1), "an invalid policy");
    let stderr = String::from_utf8([out.stdout, out.stderr].concat()).unwrap();
    assert!(
        stderr.contains("policy.yaml:6:")
            && stderr.contains("\"Builder_1\" is not a valid ServiceAccount name"),
        "{stderr}"
    );
}
