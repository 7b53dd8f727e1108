//! ServiceAccount mode and the life of a copy, end to end: the real `serve` binary against the
//! fake API server (whose ServiceAccounts behave like the apiserver's: a strategic merge
//! replaces `imagePullSecrets`, a failed JSON patch `test` is 422, stale writes are 409).
//! Each contract case of the feature is one test, named after it.

mod cluster_support;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use cluster_support::*;
use k8s_openapi::api::core::v1::{LocalObjectReference, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};
use support::fake_apiserver::{FakeApiServer, Fault, Kind, Match};

const ADDED: &str = "pullsecret-injector.io/added-pull-secrets";
/// Grace period for the prune in these tests: short, but long enough to be seen waiting.
const GRACE: &str = "1s";

/// The example rule, also kept on `service_accounts`, for the namespaces `namespaces` says
/// (YAML under the rule, already indented).
fn sa_policy(service_accounts: &str, namespaces: &str) -> String {
    format!(
        "{}    serviceAccounts: {service_accounts}\n{namespaces}",
        policy_yaml(SECRET)
    )
}

const TEAMS: &str = "    namespaces:\n      include: [\"team-*\"]\n";

fn service_account(namespace: &str, name: &str, pull_secrets: &[&str]) -> ServiceAccount {
    ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..ObjectMeta::default()
        },
        image_pull_secrets: (!pull_secrets.is_empty()).then(|| {
            pull_secrets
                .iter()
                .map(|n| LocalObjectReference {
                    name: n.to_string(),
                })
                .collect()
        }),
        ..ServiceAccount::default()
    }
}

/// The `imagePullSecrets` names of a ServiceAccount (empty when it is missing).
fn listed(api: &FakeApiServer, namespace: &str, name: &str) -> Vec<String> {
    api.get_service_account(namespace, name)
        .and_then(|sa| sa.image_pull_secrets)
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.name)
        .collect()
}

fn added_annotation(api: &FakeApiServer, namespace: &str, name: &str) -> Option<String> {
    api.get_service_account(namespace, name)
        .and_then(|sa| sa.metadata.annotations)
        .and_then(|a| a.get(ADDED).cloned())
}

async fn wait_listed(api: &FakeApiServer, namespace: &str, name: &str, want: &[&str]) {
    eventually(
        &format!("ServiceAccount {namespace}/{name} lists {want:?}"),
        DEADLINE,
        || async { (listed(api, namespace, name) == want).then_some(()) },
    )
    .await;
}

async fn wait_copy(api: &FakeApiServer, namespace: &str) {
    eventually(
        &format!("managed copy in {namespace}"),
        DEADLINE,
        || async {
            api.get_secret(namespace, SECRET)
                .filter(is_managed_copy)
                .map(|_| ())
        },
    )
    .await;
}

async fn wait_no_copy(api: &FakeApiServer, namespace: &str) {
    eventually(
        &format!("copy in {namespace} deleted"),
        DEADLINE,
        || async { api.get_secret(namespace, SECRET).is_none().then_some(()) },
    )
    .await;
}

/// A cluster with the ServiceAccount-mode policy `policy`.
async fn cluster_with(policy: &str) -> FakeApiServer {
    let api = cluster().await;
    api.put_configmap(&policy_configmap(policy));
    api
}

/// How many full ServiceAccount passes `serve` has logged.
fn full_passes(hook: &Webhook) -> usize {
    hook.logs()
        .iter()
        .filter(|l| l.contains("ServiceAccount pass done") && l.contains("\"full\":true"))
        .count()
}

fn pod_listing(namespace: &str, name: &str, secret: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "containers": [{"name": "app", "image": IMAGE}],
            "imagePullSecrets": [{"name": secret}],
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_service_accounts_list_the_secret_after_the_users_entries_and_the_copy_exists() {
    let api = cluster_with(&sa_policy("[default, builder]", TEAMS)).await;
    api.put_namespace("team-a", &[]);
    api.put_namespace("elsewhere", &[]);
    api.put_service_account(&service_account(
        "team-a",
        "default",
        &["theirs", "also-theirs"],
    ));
    api.put_service_account(&service_account("team-a", "builder", &[]));
    api.put_service_account(&service_account("team-a", "deployer", &["theirs"]));
    api.put_service_account(&service_account("elsewhere", "default", &["theirs"]));
    let hook = Webhook::start(&api, &[]).await;

    wait_listed(
        &api,
        "team-a",
        "default",
        &["theirs", "also-theirs", SECRET],
    )
    .await;
    wait_listed(&api, "team-a", "builder", &[SECRET]).await;
    wait_copy(&api, "team-a").await;
    assert_eq!(
        added_annotation(&api, "team-a", "default").as_deref(),
        Some(SECRET)
    );
    // Not named by the rule, or not in a namespace it applies to: untouched.
    assert_eq!(listed(&api, "team-a", "deployer"), vec!["theirs"]);
    assert_eq!(listed(&api, "elsewhere", "default"), vec!["theirs"]);
    assert!(api.get_secret("elsewhere", SECRET).is_none());

    // Level-triggered, and never duplicated: a later full pass (a namespace event) writes
    // nothing.
    api.clear_requests();
    let passes = full_passes(&hook);
    api.put_namespace("team-a", &[("touched", "yes")]);
    eventually(
        "a full pass after the namespace event",
        DEADLINE,
        || async { (full_passes(&hook) > passes).then_some(()) },
    )
    .await;
    assert_eq!(
        api.count(&Match::any().method("PATCH").resource("serviceaccounts")),
        0,
        "nothing to change, nothing written"
    );
    assert_eq!(
        listed(&api, "team-a", "default"),
        vec!["theirs", "also-theirs", SECRET]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_covers_every_service_account_and_new_namespaces_and_service_accounts_get_it() {
    let api = cluster_with(&sa_policy("[\"*\"]", TEAMS)).await;
    api.put_namespace("team-a", &[]);
    api.put_service_account(&service_account("team-a", "default", &[]));
    let _hook = Webhook::start(&api, &[]).await;
    wait_listed(&api, "team-a", "default", &[SECRET]).await;

    // A ServiceAccount created later in an existing namespace, and a new namespace.
    api.put_service_account(&service_account("team-a", "late", &["theirs"]));
    api.put_namespace("team-new", &[]);
    api.put_service_account(&service_account("team-new", "default", &[]));
    wait_listed(&api, "team-a", "late", &["theirs", SECRET]).await;
    wait_listed(&api, "team-new", "default", &[SECRET]).await;
    wait_copy(&api, "team-new").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_user_edit_during_reconcile_is_kept() {
    let api = cluster_with(&sa_policy("[default]", TEAMS)).await;
    api.put_namespace("team-a", &[]);
    api.put_service_account(&service_account("team-a", "default", &["theirs"]));
    // Hold the webhook's first ServiceAccount write long enough for a user edit to land first.
    let patches = Match::any().method("PATCH").resource("serviceaccounts");
    api.delay(patches.clone(), Duration::from_millis(1500), Some(1));
    let hook = Webhook::start(&api, &[]).await;
    eventually("the webhook's write is in flight", DEADLINE, || async {
        (api.count(&patches) >= 1).then_some(())
    })
    .await;
    let mut edited = api
        .get_service_account("team-a", "default")
        .expect("ServiceAccount");
    edited.image_pull_secrets = Some(vec![
        LocalObjectReference {
            name: "theirs".into(),
        },
        LocalObjectReference {
            name: "theirs-too".into(),
        },
    ]);
    edited.metadata.resource_version = None;
    api.put_service_account(&edited);

    wait_listed(&api, "team-a", "default", &["theirs", "theirs-too", SECRET]).await;
    // The first write was refused (its `test` of the resourceVersion failed), re-read, redone.
    assert!(api.count(&patches) >= 2, "a second, recomputed write");
    hook.wait_log("the refused write was re-read", DEADLINE, |l| {
        l.contains("ServiceAccount changed meanwhile") && l.contains("422")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_rule_stops_applying_only_our_entries_are_taken_back_and_the_copy_is_pruned() {
    let api = cluster_with(&sa_policy("[default]", TEAMS)).await;
    api.put_namespace("team-a", &[]);
    api.put_service_account(&service_account("team-a", "default", &["theirs"]));
    // A user listed the name on another ServiceAccount by hand: theirs, never taken back.
    api.put_service_account(&service_account("team-a", "builder", &[SECRET]));
    let hook = Webhook::start(&api, &["--prune-grace", GRACE]).await;
    wait_listed(&api, "team-a", "default", &["theirs", SECRET]).await;
    wait_copy(&api, "team-a").await;

    // The policy edit: the rule now applies to no namespace we have.
    api.put_configmap(&policy_configmap(&sa_policy(
        "[default]",
        "    namespaces:\n      include: [\"prod-*\"]\n",
    )));
    wait_listed(&api, "team-a", "default", &["theirs"]).await;
    assert_eq!(added_annotation(&api, "team-a", "default"), None);
    assert_eq!(listed(&api, "team-a", "builder"), vec![SECRET]);
    // builder still lists it: the copy stays, and the reason is logged.
    hook.wait_log("copy kept for builder", DEADLINE, |l| {
        l.contains("is kept") && l.contains("ServiceAccount builder lists it")
    })
    .await;
    assert!(api.get_secret("team-a", SECRET).is_some());

    // Once the user drops it, nothing references the copy: it goes, with an Event.
    api.put_service_account(&service_account("team-a", "builder", &[]));
    wait_no_copy(&api, "team-a").await;
    eventually("CopyPruned event", DEADLINE, || async {
        api.list(Kind::EventsV1, Some("team-a"))
            .iter()
            .any(|e| e["reason"] == "CopyPruned")
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_relabelled_out_of_a_selector_loses_our_entries_and_its_copy_but_never_a_secret_we_do_not_manage()
 {
    let selector = "    namespaces:\n      selector: {matchLabels: {registry-access: gitlab}}\n";
    let api = cluster_with(&sa_policy("[default]", selector)).await;
    api.put_namespace("team-a", &[("registry-access", "gitlab")]);
    api.put_service_account(&service_account("team-a", "default", &["theirs"]));
    // Never selected, holding a Secret of the rule's name that we do not manage.
    api.put_namespace("team-own", &[]);
    api.put_secret(&pull_secret("team-own", SECRET, "their-own"));
    // Selected, then its copy is edited by hand: no longer ours to delete.
    api.put_namespace("team-edit", &[("registry-access", "gitlab")]);
    let hook = Webhook::start(&api, &["--prune-grace", GRACE]).await;
    wait_listed(&api, "team-a", "default", &["theirs", SECRET]).await;
    wait_copy(&api, "team-a").await;
    wait_copy(&api, "team-edit").await;
    // The copier would restore a hand edit from the source; here its writes fail, so the
    // edit stays and the prune sees it.
    api.fail(
        Match::any()
            .method("PUT")
            .resource("secrets")
            .namespace("team-edit"),
        Fault::forbidden(),
        None,
    );
    let mut edited = api.get_secret("team-edit", SECRET).expect("copy");
    edited.data = Some(BTreeMap::from([(
        ".dockerconfigjson".to_string(),
        k8s_openapi::ByteString(dockerconfigjson("hand-edited")),
    )]));
    edited.metadata.resource_version = None;
    api.put_secret(&edited);

    api.put_namespace("team-a", &[("registry-access", "none")]);
    api.put_namespace("team-edit", &[]);
    wait_listed(&api, "team-a", "default", &["theirs"]).await;
    wait_no_copy(&api, "team-a").await;
    hook.wait_log("the edited copy is kept", DEADLINE, |l| {
        l.contains("is kept") && l.contains("edited since it was written")
    })
    .await;
    assert!(
        api.get_secret("team-edit", SECRET).is_some(),
        "an edited copy is kept"
    );
    let theirs = api.get_secret("team-own", SECRET).expect("never deleted");
    assert!(!is_managed_copy(&theirs));
    assert_eq!(
        api.count(
            &Match::any()
                .method("DELETE")
                .resource("secrets")
                .namespace("team-own")
        ),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prune_does_not_happen_while_a_pod_still_references_the_copy() {
    let api = cluster().await;
    api.put_namespace("team-a", &[]);
    let hook = Webhook::start(&api, &["--prune-grace", GRACE]).await;
    // A Pod admitted while the rule applies gets the copy and names it.
    let (response, _) = hook.admit("team-a", IMAGE, false).await;
    assert_eq!(injected_names(&response), vec![SECRET.to_string()]);
    wait_copy(&api, "team-a").await;
    let pod = pod_listing("team-a", "web-1", SECRET);
    api.put(Kind::Pods, pod);

    api.put_configmap(&policy_configmap(&format!(
        "{}    namespaces:\n      exclude: [\"team-a\"]\n",
        policy_yaml(SECRET)
    )));
    hook.wait_log("copy kept for the Pod", DEADLINE, |l| {
        l.contains("is kept") && l.contains("Pod web-1 references it")
    })
    .await;
    assert!(
        api.get_secret("team-a", SECRET).is_some(),
        "kept while the Pod names it"
    );
    assert!(
        api.count(
            &Match::any()
                .method("GET")
                .resource("pods")
                .namespace("team-a")
        ) >= 1,
        "the Pods of that one namespace were read"
    );

    api.remove(Kind::Pods, "team-a", "web-1");
    wait_no_copy(&api, "team-a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_edit_undone_within_the_grace_period_deletes_nothing() {
    let api = cluster().await;
    api.put_namespace("team-a", &[]);
    let hook = Webhook::start(&api, &["--prune-grace", "5s"]).await;
    hook.admit("team-a", IMAGE, false).await;
    wait_copy(&api, "team-a").await;
    let excluded = format!(
        "{}    namespaces:\n      exclude: [\"team-a\"]\n",
        policy_yaml(SECRET)
    );
    api.put_configmap(&policy_configmap(&excluded));
    hook.wait_log("the copy became a candidate", DEADLINE, |l| {
        l.contains("deleting after the grace period") && l.contains("team-a")
    })
    .await;
    api.put_configmap(&policy_configmap(&policy_yaml(SECRET)));
    hook.wait_log("the candidacy ended", DEADLINE, |l| {
        l.contains("no longer a candidate for deletion") && l.contains("team-a")
    })
    .await;
    assert!(api.get_secret("team-a", SECRET).is_some());
    assert_eq!(
        api.count(&Match::any().method("DELETE").resource("secrets")),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_a_changed_policy_converges() {
    let api = cluster_with(&sa_policy("[default]", TEAMS)).await;
    api.put_namespace("team-a", &[]);
    api.put_service_account(&service_account("team-a", "default", &["theirs"]));
    api.put_service_account(&service_account("team-a", "builder", &[]));
    let hook = Webhook::start(&api, &[]).await;
    wait_listed(&api, "team-a", "default", &["theirs", SECRET]).await;
    hook.stop();

    // While no webhook runs, the policy moves the secret from default to builder.
    api.put_configmap(&policy_configmap(&sa_policy("[builder]", TEAMS)));
    let _hook = Webhook::start(&api, &[]).await;
    wait_listed(&api, "team-a", "builder", &[SECRET]).await;
    wait_listed(&api, "team-a", "default", &["theirs"]).await;
    assert_eq!(added_annotation(&api, "team-a", "default"), None);
    assert!(api.get_secret("team-a", SECRET).is_some(), "still given");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_watch_restart_changes_missed_meanwhile_are_reconciled() {
    let api = cluster_with(&sa_policy("[default]", TEAMS)).await;
    api.put_namespace("team-a", &[]);
    let _hook = Webhook::start(&api, &[]).await;
    api.put_service_account(&service_account("team-a", "default", &[]));
    wait_listed(&api, "team-a", "default", &[SECRET]).await;
    // The watch history is gone (410 on resume): the re-list must bring the new account in.
    api.compact();
    api.drop_watches();
    api.put_service_account(&service_account("team-a", "default", &["theirs"]));
    wait_listed(&api, "team-a", "default", &["theirs", SECRET]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_whose_image_pull_secrets_already_name_the_secret_gets_no_duplicate() {
    let api = cluster_with(&sa_policy("[default]", TEAMS)).await;
    api.put_namespace("team-a", &[]);
    let hook = Webhook::start(&api, &[]).await;
    // As the ServiceAccount admission plugin leaves it before webhooks run.
    let (response, _) = hook
        .admit_pod("team-a", pod_listing("team-a", "web-1", SECRET), false)
        .await;
    assert_eq!(response["allowed"], true);
    assert!(
        response.get("patch").is_none()
            || !String::from_utf8_lossy(
                &base64::Engine::decode(
                    &base64::engine::general_purpose::STANDARD,
                    response["patch"].as_str().unwrap_or_default()
                )
                .unwrap_or_default()
            )
            .contains("imagePullSecrets"),
        "no imagePullSecrets change: {response}"
    );
    wait_copy(&api, "team-a").await;
}
