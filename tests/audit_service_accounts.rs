//! `audit` on ServiceAccount mode and the life of copies (the pure decision over what was
//! read): ServiceAccounts a rule keeps its secret on but that do not list it, copies no rule
//! gives their namespace any more, kept while something references them.

use pullsecret_injector::audit::{ClusterFacts, audit};
use pullsecret_injector::policy::Policy;
use serde_json::{Value, json};

const POLICY: &str = "\
sourceNamespace: registry-credentials
rules:
  - name: gitlab
    registries: [\"registry.gitlab.com/acme/\"]
    secret: gitlab-pull
    serviceAccounts: [default, builder]
    namespaces:
      include: [\"team-*\"]
";

fn copy(ns: &str) -> Value {
    json!({
        "metadata": {
            "name": "gitlab-pull", "namespace": ns,
            "labels": {"app.kubernetes.io/managed-by": "pullsecret-injector"},
            "annotations": {"pullsecret-injector.io/source": "registry-credentials/gitlab-pull"},
        },
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": "eyJhdXRocyI6e319"},
    })
}

fn account(ns: &str, name: &str, pull: &[&str]) -> Value {
    let list: Vec<Value> = pull.iter().map(|n| json!({"name": n})).collect();
    json!({"metadata": {"name": name, "namespace": ns}, "imagePullSecrets": list})
}

fn from<T: serde::de::DeserializeOwned>(values: Vec<Value>) -> Vec<T> {
    values
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect()
}

#[test]
fn service_account_gaps_and_copies_no_rule_gives_are_reported() {
    let policy = Policy::parse(POLICY, "policy.yaml").unwrap();
    let facts = ClusterFacts {
        secrets: from(vec![copy("team-a"), copy("prod"), copy("dev")]),
        pods: from(vec![json!({
            "metadata": {"name": "web", "namespace": "prod"},
            "spec": {"containers": [{"name": "c", "image": "nginx"}],
                     "imagePullSecrets": [{"name": "gitlab-pull"}]},
        })]),
        namespaces: from(
            ["team-a", "prod", "dev", "registry-credentials"]
                .iter()
                .map(|n| json!({"metadata": {"name": n}}))
                .collect(),
        ),
        service_accounts: from(vec![
            account("team-a", "default", &["theirs"]),
            account("team-a", "builder", &["gitlab-pull"]),
            account("team-a", "deployer", &[]),
            account("prod", "default", &[]),
            account("dev", "default", &["gitlab-pull"]),
        ]),
        rule_sources: Default::default(),
    };
    let report = audit(&facts, Some(&policy), "pullsecret-injector");
    let mine: Vec<(&str, &str)> = report
        .findings
        .iter()
        .filter(|f| f.code.starts_with("serviceaccount-") || f.code.starts_with("copy-"))
        .filter(|f| f.code != "copy-edited" && f.code != "copy-source-missing")
        .map(|f| (f.code, f.object.as_str()))
        .collect();
    assert_eq!(
        mine,
        vec![
            (
                "serviceaccount-missing-secret",
                "ServiceAccount team-a/default"
            ),
            // dev/default lists it by hand: that alone keeps the copy.
            ("copy-kept-referenced", "Secret dev/gitlab-pull"),
            ("copy-kept-referenced", "Secret prod/gitlab-pull"),
        ]
    );
    let kept = |object: &str| {
        report
            .findings
            .iter()
            .find(|f| f.object == object && f.code == "copy-kept-referenced")
            .map(|f| f.message.clone())
            .unwrap_or_default()
    };
    assert!(kept("Secret prod/gitlab-pull").contains("Pod web"));
    assert!(kept("Secret dev/gitlab-pull").contains("ServiceAccount default"));

    // Once nothing references it, the copy is due for the prune.
    let mut facts = facts;
    facts.pods.clear();
    let report = audit(&facts, Some(&policy), "pullsecret-injector");
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.code == "copy-unneeded" && f.object == "Secret prod/gitlab-pull")
    );
}
