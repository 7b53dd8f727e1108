//! plan(): what a Pod gets, as a pure function of policy, namespace, Pod and operation.

mod support;

use std::collections::BTreeMap;

use pullsecret_injector::plan::{INJECTED_ANNOTATION, Namespace, Operation, Plan, PodFacts, plan};
use serde_json::{Value, json};
use support::{pod, pod_json, policy, to_pod};

const WEBHOOK_NS: &str = "pullsecret-injector";

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn create(pod_value: &Value, ns: &str, ns_labels: Option<&BTreeMap<String, String>>) -> Plan {
    let namespace = Namespace {
        name: ns,
        labels: ns_labels,
    };
    plan(
        &policy(),
        &PodFacts::from_pod(&to_pod(pod_value.clone())),
        &namespace,
        Operation::Create,
        WEBHOOK_NS,
    )
}

fn patch_json(plan: &Plan) -> Value {
    serde_json::to_value(&plan.patch).unwrap()
}

fn apply(pod_value: &Value, plan: &Plan) -> Value {
    let mut doc = pod_value.clone();
    json_patch::patch(&mut doc, &plan.patch.0).expect("patch applies");
    doc
}

fn pull_secret_names(doc: &Value) -> Vec<String> {
    doc.pointer("/spec/imagePullSecrets")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| e["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn secret_names(plan: &Plan) -> Vec<&str> {
    plan.secrets.iter().map(|s| s.name.as_str()).collect()
}

#[test]
fn pod_without_pull_secrets_gets_the_whole_array_and_an_annotation() {
    let p = pod_json(&["registry.gitlab.com/acme/api:1"], &[], &[], None);
    let plan = create(&p, "team-a", Some(&labels(&[])));
    assert_eq!(
        patch_json(&plan),
        json!([
            {"op": "add", "path": "/spec/imagePullSecrets", "value": [{"name": "gitlab-deploy-token"}]},
            {"op": "add", "path": "/metadata/annotations", "value": {INJECTED_ANNOTATION: "gitlab=gitlab-deploy-token"}},
        ])
    );
    assert_eq!(secret_names(&plan), ["gitlab-deploy-token"]);
    assert_eq!(plan.secrets[0].source_namespace, "registry-credentials");
    assert_eq!(plan.secrets[0].rules, ["gitlab"]);
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
}

#[test]
fn existing_array_is_appended_to_and_foreign_entries_are_kept() {
    let p = pod_json(
        &["registry.gitlab.com/acme/api:1"],
        &[],
        &[],
        Some(&["from-service-account"]),
    );
    let plan = create(&p, "team-a", Some(&labels(&[])));
    assert_eq!(
        patch_json(&plan)[0],
        json!({"op": "add", "path": "/spec/imagePullSecrets/-", "value": {"name": "gitlab-deploy-token"}})
    );
    assert_eq!(
        pull_secret_names(&apply(&p, &plan)),
        ["from-service-account", "gitlab-deploy-token"]
    );
}

#[test]
fn a_secret_already_listed_is_not_repeated_but_still_ensured() {
    let p = pod_json(
        &["registry.gitlab.com/acme/api:1"],
        &[],
        &[],
        Some(&["gitlab-deploy-token"]),
    );
    let plan = create(&p, "team-a", Some(&labels(&[])));
    assert!(plan.patch.0.is_empty(), "{:?}", plan.patch);
    assert_eq!(secret_names(&plan), ["gitlab-deploy-token"]);
}

#[test]
fn init_and_ephemeral_container_images_count() {
    let p = pod_json(
        &["docker.io/library/nginx:1"],
        &["registry.gitlab.com/acme/init:1"],
        &["123456789012.dkr.ecr.eu-west-1.amazonaws.com/debug:1"],
        None,
    );
    let plan = create(&p, "team-a", Some(&labels(&[])));
    assert_eq!(secret_names(&plan), ["gitlab-deploy-token", "ecr-pull"]);
    let patched = apply(&p, &plan);
    assert_eq!(
        pull_secret_names(&patched),
        ["gitlab-deploy-token", "ecr-pull"]
    );
    assert_eq!(
        patched["metadata"]["annotations"][INJECTED_ANNOTATION],
        "gitlab=gitlab-deploy-token,ecr=ecr-pull"
    );
}

#[test]
fn several_rules_union_in_rule_order_without_duplicates() {
    // Listed "out of order": ecr image first, gitlab second; secrets follow rule order.
    let p = pod_json(
        &[
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/app:1",
            "registry.gitlab.com/acme/mirror/nginx:1",
            "registry.gitlab.com/acme/api:2",
        ],
        &[],
        &[],
        None,
    );
    let plan = create(&p, "team-a", Some(&labels(&[])));
    assert_eq!(secret_names(&plan), ["gitlab-deploy-token", "ecr-pull"]);
    assert_eq!(plan.secrets[0].rules, ["gitlab", "gitlab-mirror"]);
    let patched = apply(&p, &plan);
    assert_eq!(
        pull_secret_names(&patched),
        ["gitlab-deploy-token", "ecr-pull"]
    );
    assert_eq!(
        patched["metadata"]["annotations"][INJECTED_ANNOTATION],
        "gitlab=gitlab-deploy-token,gitlab-mirror=gitlab-deploy-token,ecr=ecr-pull"
    );
}

#[test]
fn existing_annotations_get_one_escaped_key_added() {
    let mut p = pod_json(&["registry.gitlab.com/acme/api:1"], &[], &[], None);
    p["metadata"]["annotations"] = json!({"team": "a"});
    let plan = create(&p, "team-a", Some(&labels(&[])));
    assert_eq!(
        patch_json(&plan)[1],
        json!({"op": "add", "path": "/metadata/annotations/pullsecret-injector.io~1injected", "value": "gitlab=gitlab-deploy-token"})
    );
    let patched = apply(&p, &plan);
    assert_eq!(patched["metadata"]["annotations"]["team"], "a");
}

#[test]
fn excluded_namespaces_get_nothing_including_the_webhooks_own() {
    let p = pod_json(&["registry.gitlab.com/acme/api:1"], &[], &[], None);
    for ns in ["kube-system", WEBHOOK_NS] {
        let plan = create(&p, ns, Some(&labels(&[])));
        assert!(
            plan.patch.0.is_empty() && plan.secrets.is_empty() && plan.warnings.is_empty(),
            "{ns}"
        );
    }
}

#[test]
fn include_and_exclude_globs_limit_a_rule() {
    let p = pod_json(&["ghcr.io/acme/tool:1"], &[], &[], None);
    assert_eq!(
        secret_names(&create(&p, "team-a", Some(&labels(&[])))),
        ["ghcr-pull"]
    );
    assert!(
        create(&p, "team-sandbox", Some(&labels(&[])))
            .secrets
            .is_empty()
    );
    assert!(create(&p, "default", Some(&labels(&[]))).secrets.is_empty());
}

#[test]
fn selector_rules_need_matching_known_labels() {
    let p = pod_json(&["quay.io/acme/app:1"], &[], &[], None);
    let yes = labels(&[("registry-access", "quay")]);
    assert_eq!(
        secret_names(&create(&p, "team-a", Some(&yes))),
        ["quay-pull"]
    );
    let no = create(&p, "team-a", Some(&labels(&[("registry-access", "other")])));
    assert!(no.secrets.is_empty() && no.warnings.is_empty());

    let unknown = create(&p, "team-a", None);
    assert!(unknown.patch.0.is_empty() && unknown.secrets.is_empty());
    assert_eq!(unknown.warnings.len(), 1);
    assert!(
        unknown.warnings[0].contains("rule \"quay\" not applied"),
        "{:?}",
        unknown.warnings
    );
}

#[test]
fn unknown_labels_do_not_block_rules_without_selector() {
    let p = pod_json(&["registry.gitlab.com/acme/api:1"], &[], &[], None);
    let plan = create(&p, "team-a", None);
    assert_eq!(secret_names(&plan), ["gitlab-deploy-token"]);
    assert!(plan.warnings.is_empty());
}

#[test]
fn update_never_patches_but_warns_about_a_missing_secret() {
    let p = pod_json(
        &["registry.gitlab.com/acme/api:1", "ghcr.io/acme/x:1"],
        &[],
        &[],
        Some(&["ghcr-pull"]),
    );
    let namespace = Namespace {
        name: "team-a",
        labels: Some(&BTreeMap::new()),
    };
    let plan = plan(
        &policy(),
        &PodFacts::from_pod(&to_pod(p)),
        &namespace,
        Operation::Update { old: None },
        WEBHOOK_NS,
    );
    assert!(plan.patch.0.is_empty());
    // Only what the Pod already lists is worth ensuring.
    assert_eq!(secret_names(&plan), ["ghcr-pull"]);
    assert_eq!(plan.warnings.len(), 1, "{:?}", plan.warnings);
    assert!(
        plan.warnings[0].contains("\"gitlab-deploy-token\""),
        "{:?}",
        plan.warnings
    );
    assert!(
        plan.warnings[0].contains("registry.gitlab.com/acme/api:1"),
        "{:?}",
        plan.warnings
    );
}

#[test]
fn generate_name_pods_without_a_name_are_planned() {
    let p = pod_json(&["registry.gitlab.com/acme/api:1"], &[], &[], None);
    assert!(p["metadata"].get("name").is_none());
    assert_eq!(create(&p, "team-a", Some(&labels(&[]))).patch.0.len(), 2);
}

#[test]
fn reinvocation_round_two_sees_its_own_secrets_and_adds_nothing() {
    let p = pod_json(
        &[
            "registry.gitlab.com/acme/api:1",
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/a:1",
        ],
        &[],
        &[],
        Some(&["sa-secret"]),
    );
    let round1 = create(&p, "team-a", Some(&labels(&[])));
    let after = apply(&p, &round1);
    let round2 = create(&after, "team-a", Some(&labels(&[])));
    assert!(round2.patch.0.is_empty(), "{:?}", round2.patch);
    assert_eq!(secret_names(&round2), secret_names(&round1));
    assert_eq!(
        pull_secret_names(&after),
        ["sa-secret", "gitlab-deploy-token", "ecr-pull"]
    );
}

#[test]
fn round_two_with_a_new_image_extends_the_annotation() {
    let p = pod_json(&["registry.gitlab.com/acme/api:1"], &[], &[], None);
    let after = apply(&p, &create(&p, "team-a", Some(&labels(&[]))));
    // Another webhook adds an ECR image before round 2.
    let mut changed = after.clone();
    changed["spec"]["containers"][0]["image"] =
        json!("123456789012.dkr.ecr.eu-west-1.amazonaws.com/a:1");
    changed["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "c9", "image": "registry.gitlab.com/acme/api:1"}));
    let round2 = create(&changed, "team-a", Some(&labels(&[])));
    let final_pod = apply(&changed, &round2);
    assert_eq!(
        pull_secret_names(&final_pod),
        ["gitlab-deploy-token", "ecr-pull"]
    );
    assert_eq!(
        final_pod["metadata"]["annotations"][INJECTED_ANNOTATION],
        "gitlab=gitlab-deploy-token,ecr=ecr-pull"
    );
}

#[test]
fn invalid_image_gets_no_secret_and_a_warning() {
    let p = pod_json(
        &[
            "Registry.GitLab.com/Acme/API",
            "registry.gitlab.com/acme/api:1",
        ],
        &[],
        &[],
        None,
    );
    let plan = create(&p, "team-a", Some(&labels(&[])));
    assert_eq!(secret_names(&plan), ["gitlab-deploy-token"]);
    assert_eq!(plan.warnings.len(), 1);
    assert!(
        plan.warnings[0].contains("Registry.GitLab.com/Acme/API"),
        "{:?}",
        plan.warnings
    );
}

#[test]
fn images_no_rule_covers_change_nothing() {
    let plan = plan(
        &policy(),
        &PodFacts::from_pod(&pod(&["nginx:1.27"])),
        &Namespace {
            name: "team-a",
            labels: None,
        },
        Operation::Create,
        WEBHOOK_NS,
    );
    assert!(plan.patch.0.is_empty() && plan.secrets.is_empty() && plan.warnings.is_empty());
}

#[test]
fn update_warns_only_about_images_the_old_pod_did_not_have() {
    let old = to_pod(pod_json(
        &["registry.gitlab.com/acme/api:1"],
        &[],
        &[],
        None,
    ));
    let new = to_pod(pod_json(
        &["registry.gitlab.com/acme/api:1"],
        &[],
        &["123456789012.dkr.ecr.eu-west-1.amazonaws.com/debug:1"],
        None,
    ));
    let namespace = Namespace {
        name: "team-a",
        labels: Some(&BTreeMap::new()),
    };
    let plan = plan(
        &policy(),
        &PodFacts::from_pod(&new),
        &namespace,
        Operation::Update {
            old: Some(&PodFacts::from_pod(&old)),
        },
        WEBHOOK_NS,
    );
    assert!(plan.patch.0.is_empty());
    assert_eq!(plan.warnings.len(), 1, "{:?}", plan.warnings);
    assert!(
        plan.warnings[0].contains("\"ecr-pull\"") && plan.warnings[0].contains("debug:1"),
        "{:?}",
        plan.warnings
    );
}

#[test]
fn update_warns_when_a_new_image_needs_a_secret_an_old_image_also_needed() {
    // Two rules share one secret; the old image matched the first, the new one the second.
    let shared = pullsecret_injector::policy::Policy::parse(
        "sourceNamespace: creds\nrules:\n  - name: a\n    registries: [a.example.com]\n    secret: s\n  - name: b\n    registries: [b.example.com]\n    secret: s\n",
        "shared.yaml",
    )
    .unwrap();
    let old = to_pod(pod_json(&["a.example.com/x:1"], &[], &[], None));
    let new = to_pod(pod_json(
        &["a.example.com/x:1", "b.example.com/y:1", "Bad Image"],
        &[],
        &[],
        None,
    ));
    let namespace = Namespace {
        name: "team-a",
        labels: Some(&BTreeMap::new()),
    };
    let plan = plan(
        &shared,
        &PodFacts::from_pod(&new),
        &namespace,
        Operation::Update {
            old: Some(&PodFacts::from_pod(&old)),
        },
        WEBHOOK_NS,
    );
    assert_eq!(plan.warnings.len(), 2, "{:?}", plan.warnings);
    assert!(
        plan.warnings.iter().any(|w| w.contains("Bad Image")),
        "{:?}",
        plan.warnings
    );
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("\"s\" (rule a, b)") && w.contains("b.example.com/y:1")),
        "{:?}",
        plan.warnings
    );

    // An invalid image the old Pod already had is not warned about again.
    let old_bad = to_pod(pod_json(&["Bad Image"], &[], &[], None));
    let same = plan_update(&old_bad, &old_bad);
    assert!(same.warnings.is_empty(), "{:?}", same.warnings);
}

fn plan_update(
    old: &k8s_openapi::api::core::v1::Pod,
    new: &k8s_openapi::api::core::v1::Pod,
) -> Plan {
    let namespace = Namespace {
        name: "team-a",
        labels: Some(&BTreeMap::new()),
    };
    plan(
        &policy(),
        &PodFacts::from_pod(new),
        &namespace,
        Operation::Update {
            old: Some(&PodFacts::from_pod(old)),
        },
        WEBHOOK_NS,
    )
}
