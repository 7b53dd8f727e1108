//! PURE: what a namespace and its ServiceAccounts are given under a policy, and how a
//! ServiceAccount's `imagePullSecrets` change to get there. No I/O: the ServiceAccount
//! controller, the prune of copies, `explain`, `review` and `audit` all call this.
//!
//! A ServiceAccount's `imagePullSecrets` is the user's list. We only ever append to it, never
//! reorder it, never repeat a name already there, and take back only the entries recorded in
//! [`ANNOTATION_ADDED`] as ours. `imagePullSecrets` has no merge key (a strategic merge patch
//! replaces it whole), so every write is a JSON patch conditional on the resourceVersion the
//! change was computed from.

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, TestOperation};
use k8s_openapi::api::core::v1::{LocalObjectReference, Pod, ServiceAccount};
use serde_json::{Value, json};

use crate::plan::SecretNeed;
use crate::policy::{Policy, Rule};

/// On a ServiceAccount: the `imagePullSecrets` names we added (comma-separated), the only
/// entries we ever take back.
pub(crate) const ANNOTATION_ADDED: &str = "pullsecret-injector.io/added-pull-secrets";

/// The secrets a rule keeps on one ServiceAccount.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Wanted {
    /// Must be listed, in rule order.
    pub(crate) names: Vec<String>,
    /// Rules that name this ServiceAccount but depend on namespace labels not known yet:
    /// neither added nor taken back until they are.
    pub(crate) undecided: Vec<String>,
}

/// Rules in ServiceAccount mode that name `service_account`, split by whether they apply to
/// `namespace`.
pub(crate) fn service_account_rules<'p>(
    policy: &'p Policy,
    namespace: &str,
    labels: Option<&BTreeMap<String, String>>,
    service_account: &str,
    webhook_namespace: &str,
) -> Vec<(&'p Rule, Option<bool>)> {
    policy
        .rules
        .iter()
        .filter(|r| r.names_service_account(service_account))
        .map(|r| {
            (
                r,
                policy.rule_applies(r, namespace, labels, webhook_namespace),
            )
        })
        .collect()
}

/// The secrets `service_account` in `namespace` must list.
pub(crate) fn wanted(
    policy: &Policy,
    namespace: &str,
    labels: Option<&BTreeMap<String, String>>,
    service_account: &str,
    webhook_namespace: &str,
) -> Wanted {
    let mut out = Wanted::default();
    for (rule, applies) in service_account_rules(
        policy,
        namespace,
        labels,
        service_account,
        webhook_namespace,
    ) {
        let list = match applies {
            Some(true) => &mut out.names,
            Some(false) => continue,
            None => &mut out.undecided,
        };
        if !list.contains(&rule.secret) {
            list.push(rule.secret.clone());
        }
    }
    out.undecided.retain(|n| !out.names.contains(n));
    out
}

/// The copies `namespace` must hold whether or not a Pod asked: the secrets of rules in
/// ServiceAccount mode that apply to it (a ServiceAccount lists them, so Pods get them
/// even while the webhook is down).
pub(crate) fn service_account_copies(
    policy: &Policy,
    namespace: &str,
    labels: Option<&BTreeMap<String, String>>,
    webhook_namespace: &str,
) -> Vec<SecretNeed> {
    let mut needs: Vec<SecretNeed> = Vec::new();
    for rule in policy
        .rules
        .iter()
        .filter(|r| !r.service_accounts.is_empty())
    {
        if policy.rule_applies(rule, namespace, labels, webhook_namespace) != Some(true) {
            continue;
        }
        match needs.iter_mut().find(|n| n.name == rule.secret) {
            Some(need) => need.rules.push(rule.name.clone()),
            None => needs.push(SecretNeed {
                name: rule.secret.clone(),
                source_namespace: policy.source_namespace.clone(),
                rules: vec![rule.name.clone()],
            }),
        }
    }
    needs
}

/// Whether some rule still gives `namespace` the secret `name` (then its copy stays).
/// `None` when that depends on labels that are not known.
pub(crate) fn copy_wanted(
    policy: &Policy,
    name: &str,
    namespace: &str,
    labels: Option<&BTreeMap<String, String>>,
    webhook_namespace: &str,
) -> Option<bool> {
    let mut unknown = false;
    for rule in policy.rules.iter().filter(|r| r.secret == name) {
        match policy.rule_applies(rule, namespace, labels, webhook_namespace) {
            Some(true) => return Some(true),
            Some(false) => {}
            None => unknown = true,
        }
    }
    (!unknown).then_some(false)
}

/// The names we recorded as added on `sa`.
pub(crate) fn recorded(sa: &ServiceAccount) -> Vec<String> {
    sa.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_ADDED))
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The names in `sa`'s `imagePullSecrets`, in order.
pub(crate) fn listed(sa: &ServiceAccount) -> Vec<String> {
    sa.image_pull_secrets
        .iter()
        .flatten()
        .map(|r| r.name.clone())
        .collect()
}

/// A change to one ServiceAccount.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Change {
    /// The whole new `imagePullSecrets`, the user's entries untouched and in place.
    pub(crate) list: Vec<LocalObjectReference>,
    /// The new value of [`ANNOTATION_ADDED`] (empty: the annotation goes).
    pub(crate) added: Vec<String>,
    /// Names appended by this change.
    pub(crate) appended: Vec<String>,
    /// Names taken back by this change.
    pub(crate) removed: Vec<String>,
}

/// What `sa` must become to list `wanted`, or `None` when it already does.
///
/// Ours are only the names in [`ANNOTATION_ADDED`]: one of them no longer wanted is taken
/// back (its last occurrence: we append, so ours is the later one); a wanted name the list
/// lacks is appended and recorded; a wanted name the user listed themselves stays theirs.
pub(crate) fn change(sa: &ServiceAccount, wanted: &Wanted) -> Option<Change> {
    let current: Vec<LocalObjectReference> = sa.image_pull_secrets.clone().unwrap_or_default();
    let ours = recorded(sa);
    let still_ours = |n: &String| wanted.names.contains(n) || wanted.undecided.contains(n);
    let mut list = current.clone();
    let mut removed = Vec::new();
    for name in ours.iter().filter(|n| !still_ours(n)) {
        if let Some(at) = list.iter().rposition(|r| &r.name == name) {
            list.remove(at);
            removed.push(name.clone());
        }
    }
    let mut added: Vec<String> = ours
        .iter()
        .filter(|n| still_ours(n) && list.iter().any(|r| &r.name == *n))
        .cloned()
        .collect();
    let mut appended = Vec::new();
    for name in &wanted.names {
        if !list.iter().any(|r| &r.name == name) {
            list.push(LocalObjectReference { name: name.clone() });
            appended.push(name.clone());
            if !added.contains(name) {
                added.push(name.clone());
            }
        }
    }
    if list == current && added == ours {
        return None;
    }
    Some(Change {
        list,
        added,
        appended,
        removed,
    })
}

/// The JSON patch that makes `sa` what `change` says, conditional on `sa`'s resourceVersion
/// (a `test` operation: any write in between, the user's included, makes the apiserver
/// refuse it with 422 and nothing is lost; the caller re-reads and recomputes).
pub(crate) fn patch(sa: &ServiceAccount, change: &Change) -> Patch {
    let mut ops = Vec::new();
    if let Some(rv) = &sa.metadata.resource_version {
        ops.push(PatchOperation::Test(TestOperation {
            path: pointer(&["metadata", "resourceVersion"]),
            value: json!(rv),
        }));
    }
    let had_list = sa.image_pull_secrets.is_some();
    if change.list.is_empty() && had_list {
        ops.push(PatchOperation::Remove(RemoveOperation {
            path: pointer(&["imagePullSecrets"]),
        }));
    } else if !change.list.is_empty() {
        ops.push(PatchOperation::Add(AddOperation {
            path: pointer(&["imagePullSecrets"]),
            value: serde_json::to_value(&change.list).unwrap_or(Value::Null),
        }));
    }
    let has_annotation = sa
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ANNOTATION_ADDED));
    let value = change.added.join(",");
    match (change.added.is_empty(), &sa.metadata.annotations) {
        (true, _) if has_annotation => ops.push(PatchOperation::Remove(RemoveOperation {
            path: pointer(&["metadata", "annotations", ANNOTATION_ADDED]),
        })),
        (true, _) => {}
        (false, Some(_)) => ops.push(PatchOperation::Add(AddOperation {
            path: pointer(&["metadata", "annotations", ANNOTATION_ADDED]),
            value: json!(value),
        })),
        (false, None) => ops.push(PatchOperation::Add(AddOperation {
            path: pointer(&["metadata", "annotations"]),
            value: json!({ ANNOTATION_ADDED: value }),
        })),
    }
    Patch(ops)
}

/// What in `namespace` names the Secret `name`: `Pod p` and `ServiceAccount s` entries, in
/// the order given. A copy named by anything is kept even when no rule gives it any more.
pub(crate) fn references(
    name: &str,
    namespace: &str,
    pods: &[Pod],
    accounts: &[ServiceAccount],
) -> Vec<String> {
    let in_ns = |ns: &Option<String>| ns.as_deref() == Some(namespace);
    let pods = pods
        .iter()
        .filter(|p| in_ns(&p.metadata.namespace))
        .filter(|p| {
            p.spec
                .iter()
                .flat_map(|s| s.image_pull_secrets.iter().flatten())
                .any(|r| r.name == name)
        })
        .map(|p| format!("Pod {}", p.metadata.name.as_deref().unwrap_or_default()));
    let accounts = accounts
        .iter()
        .filter(|sa| in_ns(&sa.metadata.namespace))
        .filter(|sa| listed(sa).iter().any(|n| n == name))
        .map(|sa| {
            format!(
                "ServiceAccount {}",
                sa.metadata.name.as_deref().unwrap_or_default()
            )
        });
    pods.chain(accounts).collect()
}

fn pointer(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const POLICY: &str = "\
sourceNamespace: creds
rules:
  - name: gitlab
    registries: [\"registry.gitlab.com/acme/\"]
    secret: gitlab-pull
    serviceAccounts: [default, builder]
    namespaces:
      include: [\"team-*\"]
  - name: all
    registries: [\"registry.example.com\"]
    secret: example-pull
    serviceAccounts: [\"*\"]
    namespaces:
      selector: {matchLabels: {example: \"yes\"}}
  - name: pods
    registries: [\"registry.example.org\"]
    secret: org-pull
";

    fn policy() -> Policy {
        Policy::parse(POLICY, "policy.yaml").unwrap()
    }

    fn sa(list: &[&str], added: Option<&str>) -> ServiceAccount {
        ServiceAccount {
            metadata: ObjectMeta {
                name: Some("default".into()),
                namespace: Some("team-a".into()),
                resource_version: Some("7".into()),
                annotations: added.map(|a| BTreeMap::from([(ANNOTATION_ADDED.into(), a.into())])),
                ..ObjectMeta::default()
            },
            image_pull_secrets: (!list.is_empty()).then(|| {
                list.iter()
                    .map(|n| LocalObjectReference {
                        name: n.to_string(),
                    })
                    .collect()
            }),
            ..ServiceAccount::default()
        }
    }

    fn names(change: &Change) -> Vec<&str> {
        change.list.iter().map(|r| r.name.as_str()).collect()
    }

    fn wanted_names(names: &[&str]) -> Wanted {
        Wanted {
            names: names.iter().map(|n| n.to_string()).collect(),
            undecided: Vec::new(),
        }
    }

    #[test]
    fn named_service_accounts_of_namespaces_the_rule_applies_to() {
        let p = policy();
        let labels = BTreeMap::from([("example".to_string(), "yes".to_string())]);
        let w = wanted(&p, "team-a", Some(&labels), "default", "psi");
        assert_eq!(w.names, vec!["gitlab-pull", "example-pull"]);
        let w = wanted(&p, "team-a", Some(&BTreeMap::new()), "deployer", "psi");
        assert_eq!(w, Wanted::default());
        let w = wanted(&p, "other", None, "builder", "psi");
        assert_eq!(
            (w.names.len(), w.undecided),
            (0, vec!["example-pull".into()])
        );
        let copies = service_account_copies(&p, "team-a", Some(&labels), "psi");
        let copy_names: Vec<&str> = copies.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(copy_names, vec!["gitlab-pull", "example-pull"]);
        assert_eq!(copies[0].source_namespace, "creds");
    }

    #[test]
    fn a_copy_is_wanted_while_any_rule_of_its_name_applies() {
        let p = policy();
        let none = BTreeMap::new();
        assert_eq!(
            copy_wanted(&p, "gitlab-pull", "team-a", Some(&none), "psi"),
            Some(true)
        );
        assert_eq!(
            copy_wanted(&p, "gitlab-pull", "other", Some(&none), "psi"),
            Some(false)
        );
        assert_eq!(copy_wanted(&p, "example-pull", "other", None, "psi"), None);
        // Pod-only rules keep their copies too.
        assert_eq!(
            copy_wanted(&p, "org-pull", "other", Some(&none), "psi"),
            Some(true)
        );
        assert_eq!(
            copy_wanted(&p, "org-pull", "kube-system", None, "psi"),
            Some(true)
        );
        assert_eq!(
            copy_wanted(&p, "unknown", "team-a", None, "psi"),
            Some(false)
        );
    }

    #[test]
    fn appends_after_the_users_entries_and_records_it() {
        let c = change(
            &sa(&["theirs", "also-theirs"], None),
            &wanted_names(&["ours"]),
        )
        .unwrap();
        assert_eq!(names(&c), vec!["theirs", "also-theirs", "ours"]);
        assert_eq!(
            (c.added.clone(), c.appended.clone()),
            (vec!["ours".to_string()], vec!["ours".to_string()])
        );
    }

    #[test]
    fn a_name_the_user_listed_is_neither_repeated_nor_recorded() {
        assert_eq!(
            change(&sa(&["ours", "theirs"], None), &wanted_names(&["ours"])),
            None
        );
    }

    #[test]
    fn takes_back_only_what_it_recorded() {
        let c = change(
            &sa(&["theirs", "ours", "mine"], Some("ours")),
            &Wanted::default(),
        )
        .unwrap();
        assert_eq!(names(&c), vec!["theirs", "mine"]);
        assert!(c.added.is_empty());
        assert_eq!(c.removed, vec!["ours"]);
        // A name the user added by hand is never ours to remove.
        assert_eq!(change(&sa(&["theirs"], None), &Wanted::default()), None);
    }

    #[test]
    fn undecided_names_are_neither_added_nor_taken_back() {
        let undecided = Wanted {
            names: Vec::new(),
            undecided: vec!["ours".into()],
        };
        assert_eq!(change(&sa(&["ours"], Some("ours")), &undecided), None);
        assert_eq!(change(&sa(&[], None), &undecided), None);
    }

    #[test]
    fn an_entry_the_user_removed_is_listed_again_while_the_rule_applies() {
        let c = change(&sa(&["theirs"], Some("ours")), &wanted_names(&["ours"])).unwrap();
        assert_eq!(names(&c), vec!["theirs", "ours"]);
        assert_eq!(c.added, vec!["ours"]);
    }

    #[test]
    fn the_patch_is_conditional_and_keeps_other_annotations() {
        let mut account = sa(&["theirs"], None);
        let c = change(&account, &wanted_names(&["ours"])).unwrap();
        let mut doc = serde_json::to_value(&account).unwrap();
        json_patch::patch(&mut doc, &patch(&account, &c)).unwrap();
        assert_eq!(
            doc["imagePullSecrets"],
            json!([{"name": "theirs"}, {"name": "ours"}])
        );
        assert_eq!(doc["metadata"]["annotations"][ANNOTATION_ADDED], "ours");

        account.metadata.annotations = Some(BTreeMap::from([("team".into(), "a".into())]));
        let mut doc = serde_json::to_value(&account).unwrap();
        json_patch::patch(&mut doc, &patch(&account, &c)).unwrap();
        assert_eq!(doc["metadata"]["annotations"]["team"], "a");
        assert_eq!(doc["metadata"]["annotations"][ANNOTATION_ADDED], "ours");

        // Someone wrote in between: the test fails and nothing is applied.
        let mut moved = doc.clone();
        moved["metadata"]["resourceVersion"] = json!("8");
        assert!(json_patch::patch(&mut moved, &patch(&account, &c)).is_err());
    }

    #[test]
    fn taking_back_the_last_entry_removes_list_and_annotation() {
        let account = sa(&["ours"], Some("ours"));
        let c = change(&account, &Wanted::default()).unwrap();
        let mut doc = serde_json::to_value(&account).unwrap();
        json_patch::patch(&mut doc, &patch(&account, &c)).unwrap();
        assert!(doc.get("imagePullSecrets").is_none(), "{doc}");
        assert!(
            doc["metadata"]["annotations"]
                .get(ANNOTATION_ADDED)
                .is_none(),
            "{doc}"
        );
    }
}
