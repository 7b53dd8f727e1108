//! The RBAC in deploy/RBAC.md is enough: every API request `serve` makes while it creates,
//! updates, repairs, recreates and prunes copies, keeps Secrets listed on ServiceAccounts,
//! records Events and reads its policy is one those
//! rules allow, as kube-apiserver's RBAC authorizer decides it (resourceNames apply to list
//! and watch only through a `metadata.name` field selector, never to create).

mod cluster_support;
mod support;

use std::collections::BTreeMap;

use cluster_support::*;
use futures::future::join_all;
use k8s_openapi::ByteString;
use serde::Deserialize;
use std::time::Duration;

use k8s_openapi::api::core::v1::{LocalObjectReference, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use support::fake_apiserver::{FakeApiServer, Kind, LoggedRequest, Match};

fn service_account(namespace: &str, name: &str, pull_secrets: &[&str]) -> ServiceAccount {
    ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..ObjectMeta::default()
        },
        image_pull_secrets: Some(
            pull_secrets
                .iter()
                .map(|n| LocalObjectReference {
                    name: n.to_string(),
                })
                .collect(),
        ),
        ..ServiceAccount::default()
    }
}

fn listed(api: &FakeApiServer, namespace: &str, name: &str) -> Vec<String> {
    api.get_service_account(namespace, name)
        .and_then(|sa| sa.image_pull_secrets)
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.name)
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RbacObject {
    kind: String,
    metadata: Meta,
    #[serde(default)]
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
struct Meta {
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    api_groups: Vec<String>,
    resources: Vec<String>,
    #[serde(default)]
    resource_names: Vec<String>,
    verbs: Vec<String>,
}

type Rbac = Vec<(Option<String>, Vec<Rule>)>;

/// (namespace the rules are limited to, rules) of every ClusterRole and Role in `yaml`. A Role
/// without a namespace (kustomize sets it) is the webhook's.
fn parse_rbac(yaml: &str) -> Rbac {
    let objects: Vec<RbacObject> = serde_saphyr::from_multiple(yaml).expect("RBAC YAML parses");
    objects
        .into_iter()
        .filter_map(|o| match o.kind.as_str() {
            "ClusterRole" => Some((None, o.rules)),
            "Role" => Some((
                Some(o.metadata.namespace.unwrap_or_else(|| WEBHOOK_NS.into())),
                o.rules,
            )),
            _ => None,
        })
        .collect()
}

fn read(relative: &str) -> Option<String> {
    std::fs::read_to_string(format!("{}/{relative}", env!("CARGO_MANIFEST_DIR"))).ok()
}

/// The YAML of deploy/RBAC.md, and the kustomize base's rbac.yaml when there is one.
fn documented_rbac() -> Vec<(&'static str, Rbac)> {
    let doc = read("deploy/RBAC.md").expect("deploy/RBAC.md");
    let yaml = doc
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a yaml block in RBAC.md");
    let mut out = vec![("deploy/RBAC.md", parse_rbac(yaml))];
    if let Some(base) = read("deploy/base/rbac.yaml") {
        out.push(("deploy/base/rbac.yaml", parse_rbac(&base)));
    }
    out
}

/// The RBAC verb kube-apiserver derives from a request.
fn verb(r: &LoggedRequest) -> &'static str {
    match (r.method.as_str(), r.name.is_some(), r.watch) {
        ("GET", _, true) => "watch",
        ("GET", true, false) => "get",
        ("GET", false, false) => "list",
        ("POST", _, _) => "create",
        ("PUT", _, _) => "update",
        ("PATCH", _, _) => "patch",
        ("DELETE", true, _) => "delete",
        ("DELETE", false, _) => "deletecollection",
        _ => "unknown",
    }
}

/// The object name RBAC sees: the path's, or a list/watch's `metadata.name` field selector.
fn authorized_name(r: &LoggedRequest) -> Option<String> {
    if let Some(name) = &r.name {
        return Some(name.clone());
    }
    r.query.split('&').find_map(|kv| {
        let value = kv.strip_prefix("fieldSelector=")?;
        let decoded = value.replace("%3D", "=").replace("%3d", "=");
        let name = decoded.strip_prefix("metadata.name=")?;
        (!name.contains(',')).then(|| name.to_string())
    })
}

fn allowed(rbac: &Rbac, r: &LoggedRequest) -> bool {
    let verb = verb(r);
    let group = r.group.clone().unwrap_or_default();
    let Some(resource) = &r.resource else {
        return false;
    };
    let name = authorized_name(r);
    rbac.iter().any(|(scope, rules)| {
        let in_scope = scope.is_none() || scope.as_deref() == r.namespace.as_deref();
        in_scope
            && rules.iter().any(|rule| {
                rule.verbs.iter().any(|v| v == verb)
                    && rule.api_groups.contains(&group)
                    && rule.resources.contains(resource)
                    && (rule.resource_names.is_empty()
                        || (verb != "create"
                            && name
                                .as_ref()
                                .is_some_and(|n| rule.resource_names.contains(n))))
            })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_serve_makes_is_allowed_by_the_documented_rbac() {
    let documents = documented_rbac();
    for (file, rbac) in &documents {
        let names_secret = rbac.iter().any(|(_, rules)| {
            rules
                .iter()
                .any(|r| r.resource_names.iter().any(|n| n == SECRET))
        });
        assert!(
            names_secret,
            "{file}: the example policy's secret name is in resourceNames"
        );
    }

    let api = cluster().await;
    // ServiceAccount mode too: the ServiceAccount cache, patches, re-reads, and a prune.
    let sa_policy = format!("{}    serviceAccounts: [default]\n", policy_yaml(SECRET));
    api.put_configmap(&policy_configmap(&sa_policy));
    for ns in ["rbac-a", "rbac-b", "rbac-u"] {
        api.put_namespace(ns, &[]);
        api.put_service_account(&service_account(ns, "default", &["theirs"]));
    }
    api.put_secret(&pull_secret("rbac-u", SECRET, "theirs"));
    let hooks = join_all((0..2).map(|_| Webhook::start(&api, &["--prune-grace", "1s"]))).await;

    // Copies created by racing replicas, an unmanaged Secret (Event), a rotation (updates,
    // conflicts between the replicas), a hand edit (drift), a type change (delete, create).
    for ns in ["rbac-a", "rbac-b", "rbac-u"] {
        join_all(hooks.iter().map(|h| h.admit(ns, IMAGE, false))).await;
    }
    let v2 = data_of(&api.put_secret(&pull_secret(SOURCE_NS, SECRET, "token-v2")));
    eventually("rotation reached the copies", DEADLINE, || async {
        ["rbac-a", "rbac-b"]
            .iter()
            .all(|ns| {
                api.get_secret(ns, SECRET)
                    .is_some_and(|c| data_of(&c) == v2)
            })
            .then_some(())
    })
    .await;
    let mut edited = api.get_secret("rbac-a", SECRET).expect("copy");
    edited.data = Some(BTreeMap::from([(
        ".dockerconfigjson".into(),
        ByteString(b"{}".to_vec()),
    )]));
    edited.metadata.resource_version = None;
    api.put_secret(&edited);
    api.remove(Kind::Secrets, SOURCE_NS, SECRET);
    let mut legacy = pull_secret(SOURCE_NS, SECRET, "legacy");
    legacy.type_ = Some("kubernetes.io/dockercfg".into());
    legacy.data = Some(BTreeMap::from([(
        ".dockercfg".into(),
        ByteString(b"{\"registry.gitlab.com\":{}}".to_vec()),
    )]));
    api.put_secret(&legacy);
    eventually("type change reached the copies", DEADLINE, || async {
        ["rbac-a", "rbac-b"]
            .iter()
            .all(|ns| {
                api.get_secret(ns, SECRET)
                    .is_some_and(|c| c.type_.as_deref() == Some("kubernetes.io/dockercfg"))
            })
            .then_some(())
    })
    .await;
    eventually("event recorded", DEADLINE, || async {
        (!api.list(Kind::EventsV1, Some("rbac-u")).is_empty()).then_some(())
    })
    .await;

    // A user edit lands while a ServiceAccount patch is in flight: refused, re-read (get).
    // Only rbac-c's patch is held: a late patch of another namespace must not take the delay.
    let patches = Match::any()
        .method("PATCH")
        .resource("serviceaccounts")
        .namespace("rbac-c")
        .name("default");
    let before = api.count(&patches);
    api.delay(patches.clone(), Duration::from_millis(1500), Some(1));
    api.put_namespace("rbac-c", &[]);
    api.put_service_account(&service_account("rbac-c", "default", &[]));
    eventually("a ServiceAccount patch in flight", DEADLINE, || async {
        (api.count(&patches) > before).then_some(())
    })
    .await;
    api.put_service_account(&service_account("rbac-c", "default", &["theirs"]));
    // The rule stops applying to rbac-b: our entry is taken back and the copy pruned.
    api.put_configmap(&policy_configmap(&format!(
        "{sa_policy}    namespaces:\n      exclude: [rbac-b]\n"
    )));
    eventually("rbac-b's copy pruned", DEADLINE, || async {
        (api.get_secret("rbac-b", SECRET).is_none()
            && listed(&api, "rbac-b", "default") == ["theirs"])
        .then_some(())
    })
    .await;
    for ns in ["rbac-a", "rbac-c"] {
        eventually(
            "the secret listed after the user's entries",
            DEADLINE,
            || async { (listed(&api, ns, "default") == ["theirs", SECRET]).then_some(()) },
        )
        .await;
    }

    // The held patch is answered only after its delay, which may outlast the waits above:
    // wait for its refusal (422, the resourceVersion test) and the re-read that follows.
    let rereads = Match::any()
        .method("GET")
        .resource("serviceaccounts")
        .namespace("rbac-c")
        .name("default");
    eventually("the held patch refused and re-read", DEADLINE, || async {
        let log = api.requests();
        let refused = log
            .iter()
            .any(|r| patches.matches(r) && r.status == Some(422));
        (refused && api.count(&rereads) > 0).then_some(())
    })
    .await;

    let requests: Vec<LoggedRequest> = api
        .requests()
        .into_iter()
        .filter(|r| r.resource.is_some())
        .collect();
    for (file, rbac) in &documents {
        let denied: Vec<String> = requests
            .iter()
            .filter(|r| !allowed(rbac, r))
            .map(|r| {
                let resource = r.resource.clone().unwrap_or_default();
                format!(
                    "{} {} ({resource}) {}?{}",
                    r.method,
                    verb(r),
                    r.path,
                    r.query
                )
            })
            .collect();
        assert!(
            denied.is_empty(),
            "requests {file} would refuse:\n{}",
            denied.join("\n")
        );
    }
    // The scenario did exercise the write verbs the rules grant.
    for needed in ["create", "update", "delete", "watch", "list"] {
        assert!(
            requests.iter().any(|r| verb(r) == needed),
            "no {needed} request seen"
        );
    }
    for (resource, needed) in [
        ("serviceaccounts", "patch"),
        ("serviceaccounts", "get"),
        ("serviceaccounts", "watch"),
        ("pods", "list"),
    ] {
        assert!(
            requests
                .iter()
                .any(|r| verb(r) == needed && r.resource.as_deref() == Some(resource)),
            "no {needed} {resource} request seen"
        );
    }
}
