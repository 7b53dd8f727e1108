//! Conformance of the fake API server: driven with the real kube-rs client (typed Api,
//! watcher, reflector), it answers as kube-apiserver does. These tests are what lets the
//! other integration tests trust the fake.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    ConfigMap, LocalObjectReference, Namespace, ObjectReference, Pod, Secret, ServiceAccount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::Status;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::{Value, json};

use support::fake_apiserver::{FakeApiServer, Fault, Kind, Match, Options};

const DEADLINE: Duration = Duration::from_secs(10);

/// Polls `cond` until it holds or the deadline passes.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn secret(ns: &str, name: &str, labels: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "k".to_string(),
            ByteString(b"v".to_vec()),
        )])),
        ..Default::default()
    }
}

fn pull_secret(ns: &str, name: &str, config: &[u8]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        data: Some(BTreeMap::from([(
            ".dockerconfigjson".to_string(),
            ByteString(config.to_vec()),
        )])),
        ..Default::default()
    }
}

fn api_error(err: kube::Error) -> Box<Status> {
    match err {
        kube::Error::Api(s) => s,
        other => panic!("expected an API Status error, got {other:?}"),
    }
}

fn names<K: kube::Resource>(items: &[K]) -> Vec<String> {
    items
        .iter()
        .map(|o| o.meta().name.clone().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn create_returns_201_with_server_set_fields_and_get_reads_it_back() {
    let api = FakeApiServer::start().await;
    api.put_namespace("team-a", &[]);
    let secrets: Api<Secret> = Api::namespaced(api.client().await, "team-a");
    let created = secrets
        .create(&PostParams::default(), &secret("team-a", "s1", &[]))
        .await
        .expect("create");
    let meta = &created.metadata;
    assert!(
        meta.uid.as_deref().is_some_and(|u| u.len() == 36),
        "{meta:?}"
    );
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(meta.namespace.as_deref(), Some("team-a"));
    assert_eq!(
        created.type_.as_deref(),
        Some("Opaque"),
        "type defaults to Opaque"
    );
    let rv: u64 = meta
        .resource_version
        .as_deref()
        .unwrap_or("")
        .parse()
        .expect("numeric rv");
    assert_eq!(rv, api.resource_version());

    let got = secrets.get("s1").await.expect("get");
    assert_eq!(got.metadata.uid, created.metadata.uid);
    assert_eq!(got.data, created.data);
    assert_eq!(
        api.get_secret("team-a", "s1").map(|s| s.data),
        Some(created.data)
    );
}

#[tokio::test]
async fn generate_name_creates_a_unique_name() {
    let api = FakeApiServer::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(api.client().await, "default");
    let cm = ConfigMap {
        metadata: ObjectMeta {
            generate_name: Some("copy-".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let a = cms
        .create(&PostParams::default(), &cm)
        .await
        .expect("create a");
    let b = cms
        .create(&PostParams::default(), &cm)
        .await
        .expect("create b");
    let (a, b) = (
        a.metadata.name.unwrap_or_default(),
        b.metadata.name.unwrap_or_default(),
    );
    assert!(
        a.starts_with("copy-") && a.len() == "copy-".len() + 5,
        "{a}"
    );
    assert_ne!(a, b);
}

#[tokio::test]
async fn creating_an_existing_secret_is_409_already_exists() {
    let api = FakeApiServer::start().await;
    let secrets: Api<Secret> = Api::namespaced(api.client().await, "default");
    secrets
        .create(&PostParams::default(), &secret("default", "dup", &[]))
        .await
        .expect("first create");
    let err = api_error(
        secrets
            .create(&PostParams::default(), &secret("default", "dup", &[]))
            .await
            .expect_err("second create"),
    );
    assert_eq!(err.code, 409);
    assert_eq!(err.reason, "AlreadyExists");
    assert_eq!(err.message, r#"secrets "dup" already exists"#);
    let details = err.details.expect("details");
    assert_eq!(
        (details.name.as_str(), details.kind.as_str()),
        ("dup", "secrets")
    );
}

#[tokio::test]
async fn get_of_a_missing_object_is_404_not_found() {
    let api = FakeApiServer::start().await;
    let secrets: Api<Secret> = Api::namespaced(api.client().await, "default");
    let err = api_error(secrets.get("nope").await.expect_err("missing"));
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
    assert_eq!(err.message, r#"secrets "nope" not found"#);
    assert!(secrets.get_opt("nope").await.expect("get_opt").is_none());
}

#[tokio::test]
async fn create_in_a_missing_namespace_is_404_namespace_not_found() {
    let api = FakeApiServer::start().await;
    let secrets: Api<Secret> = Api::namespaced(api.client().await, "ghost");
    let err = api_error(
        secrets
            .create(&PostParams::default(), &secret("ghost", "s", &[]))
            .await
            .expect_err("no namespace"),
    );
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
    assert_eq!(err.message, r#"namespaces "ghost" not found"#);
    assert_eq!(err.details.map(|d| d.kind), Some("namespaces".to_string()));
}

#[tokio::test]
async fn create_in_a_terminating_namespace_is_403_with_namespace_terminating_cause() {
    let api = FakeApiServer::start().await;
    let client = api.client().await;
    api.put_namespace("doomed", &[]);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let deleted = namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .expect("delete namespace");
    let ns = deleted
        .left()
        .expect("a namespace with finalizers comes back as the object");
    assert_eq!(
        ns.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    assert!(ns.metadata.deletion_timestamp.is_some());

    let secrets: Api<Secret> = Api::namespaced(client.clone(), "doomed");
    let err = api_error(
        secrets
            .create(&PostParams::default(), &secret("doomed", "late", &[]))
            .await
            .expect_err("terminating"),
    );
    assert_eq!((err.code, err.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        err.message,
        r#"secrets "late" is forbidden: unable to create new content in namespace doomed because it is being terminated"#
    );
    let cause = &err.details.expect("details").causes[0];
    assert_eq!(cause.reason, "NamespaceTerminating");
    assert_eq!(cause.message, "namespace doomed is being terminated");
    assert_eq!(cause.field, "metadata.namespace");

    // A second delete while terminating is a Conflict; finalizing removes it.
    let again = api_error(
        namespaces
            .delete("doomed", &DeleteParams::default())
            .await
            .expect_err("again"),
    );
    assert_eq!(again.code, 409);
    assert!(api.finalize_namespace("doomed"));
    assert!(namespaces.get_opt("doomed").await.expect("get").is_none());
}

#[tokio::test]
async fn stale_update_is_409_conflict_and_empty_resource_version_is_unconditional() {
    let api = FakeApiServer::start().await;
    let secrets: Api<Secret> = Api::namespaced(api.client().await, "default");
    let v1 = secrets
        .create(&PostParams::default(), &secret("default", "s", &[]))
        .await
        .expect("create");
    let mut v2 = v1.clone();
    v2.data = Some(BTreeMap::from([("k".into(), ByteString(b"two".to_vec()))]));
    let v2 = secrets
        .replace("s", &PostParams::default(), &v2)
        .await
        .expect("update");
    assert_ne!(v2.metadata.resource_version, v1.metadata.resource_version);

    let mut stale = v1.clone();
    stale.data = Some(BTreeMap::from([(
        "k".into(),
        ByteString(b"three".to_vec()),
    )]));
    let err = api_error(
        secrets
            .replace("s", &PostParams::default(), &stale)
            .await
            .expect_err("stale"),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        err.message,
        r#"Operation cannot be fulfilled on secrets "s": the object has been modified; please apply your changes to the latest version and try again"#
    );

    stale.metadata.resource_version = None;
    let v3 = secrets
        .replace("s", &PostParams::default(), &stale)
        .await
        .expect("unconditional");
    assert_eq!(v3.data, stale.data);
    assert_eq!(v3.metadata.uid, v1.metadata.uid, "uid survives updates");

    // An update that changes nothing writes nothing: same resourceVersion.
    let same = secrets
        .replace("s", &PostParams::default(), &v3)
        .await
        .expect("no-op");
    assert_eq!(same.metadata.resource_version, v3.metadata.resource_version);
}

#[tokio::test]
async fn patches_merge_strategic_and_json_and_a_stale_resource_version_conflicts() {
    let api = FakeApiServer::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(api.client().await, "default");
    let pp = PatchParams::default();
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("c".into()),
            labels: Some(BTreeMap::from([("keep".into(), "yes".into())])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            ("a".into(), "1".into()),
            ("b".into(), "2".into()),
        ])),
        ..Default::default()
    };
    let v1 = cms
        .create(&PostParams::default(), &cm)
        .await
        .expect("create");

    let merged = cms
        .patch(
            "c",
            &pp,
            &Patch::Merge(json!({"data": {"a": "10", "b": null}})),
        )
        .await
        .expect("merge patch");
    assert_eq!(
        merged.data,
        Some(BTreeMap::from([("a".into(), "10".into())]))
    );
    assert_eq!(merged.metadata.labels, cm.metadata.labels);

    let strategic = cms
        .patch(
            "c",
            &pp,
            &Patch::Strategic(json!({"metadata": {"labels": {"new": "x"}}})),
        )
        .await
        .expect("strategic patch");
    assert_eq!(strategic.metadata.labels.as_ref().map(|l| l.len()), Some(2));

    let ops: json_patch::Patch =
        serde_json::from_value(json!([{"op": "add", "path": "/data/z", "value": "26"}]))
            .expect("ops");
    let jsonp = cms
        .patch("c", &pp, &Patch::<()>::Json(ops))
        .await
        .expect("json patch");
    assert_eq!(
        jsonp
            .data
            .as_ref()
            .and_then(|d| d.get("z"))
            .map(String::as_str),
        Some("26")
    );

    let stale =
        json!({"metadata": {"resourceVersion": v1.metadata.resource_version}, "data": {"a": "x"}});
    let err = api_error(
        cms.patch("c", &pp, &Patch::Merge(stale))
            .await
            .expect_err("stale"),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));

    let err = api_error(
        cms.patch("missing", &pp, &Patch::Merge(json!({})))
            .await
            .expect_err("missing"),
    );
    assert_eq!(err.code, 404);
}

#[tokio::test]
async fn delete_answers_with_a_success_status_then_404() {
    let api = FakeApiServer::start().await;
    let secrets: Api<Secret> = Api::namespaced(api.client().await, "default");
    let created = secrets
        .create(&PostParams::default(), &secret("default", "gone", &[]))
        .await
        .expect("create");
    let status = secrets
        .delete("gone", &DeleteParams::default())
        .await
        .expect("delete")
        .right()
        .expect("a Secret delete answers with a Status");
    assert!(status.is_success());
    let details = status.details.expect("details");
    assert_eq!(
        (details.name.as_str(), details.kind.as_str()),
        ("gone", "secrets")
    );
    assert_eq!(Some(details.uid), created.metadata.uid);
    let err = api_error(
        secrets
            .delete("gone", &DeleteParams::default())
            .await
            .expect_err("twice"),
    );
    assert_eq!(err.code, 404);
}

#[tokio::test]
async fn delete_with_a_stale_precondition_is_409() {
    let api = FakeApiServer::start().await;
    let secrets: Api<Secret> = Api::namespaced(api.client().await, "default");
    let v1 = secrets
        .create(&PostParams::default(), &secret("default", "p", &[]))
        .await
        .expect("create");
    secrets
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .expect("patch");
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            resource_version: v1.metadata.resource_version.clone(),
            uid: None,
        }),
        ..Default::default()
    };
    let err = api_error(
        secrets
            .delete("p", &dp)
            .await
            .expect_err("stale precondition"),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(
        err.message
            .contains("Precondition failed: ResourceVersion in precondition"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn secret_validation_matches_the_apiserver() {
    let api = FakeApiServer::start().await;
    let client = api.client().await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();

    let ok = secrets
        .create(&pp, &pull_secret("default", "pull", br#"{"auths":{}}"#))
        .await
        .expect("valid dockerconfigjson");

    let mut missing = pull_secret("default", "nokey", b"{}");
    missing.data = Some(BTreeMap::new());
    let err = api_error(
        secrets
            .create(&pp, &missing)
            .await
            .expect_err("missing key"),
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        err.message,
        r#"Secret "nokey" is invalid: data[.dockerconfigjson]: Required value"#
    );

    let err = api_error(
        secrets
            .create(&pp, &pull_secret("default", "notobj", b"[1]"))
            .await
            .expect_err("not an object"),
    );
    assert_eq!(err.code, 422);
    assert!(
        err.message.contains("<secret contents redacted>"),
        "{}",
        err.message
    );
    assert!(!err.message.contains("[1]"), "secret data never in errors");
    let cause = &err.details.expect("details").causes[0];
    assert_eq!(
        (cause.reason.as_str(), cause.field.as_str()),
        ("FieldValueInvalid", "data[.dockerconfigjson]")
    );

    let mut retyped = ok.clone();
    retyped.type_ = Some("kubernetes.io/dockercfg".into());
    retyped.data = Some(BTreeMap::from([(
        ".dockercfg".into(),
        ByteString(b"{}".to_vec()),
    )]));
    let err = api_error(
        secrets
            .replace("pull", &pp, &retyped)
            .await
            .expect_err("type change"),
    );
    assert_eq!(err.code, 422);
    assert_eq!(
        err.message,
        r#"Secret "pull" is invalid: type: Invalid value: "kubernetes.io/dockercfg": field is immutable"#
    );

    // Bad base64 in `data` fails decoding: 400 BadRequest.
    let req = http::Request::post("/api/v1/namespaces/default/secrets")
        .header("content-type", "application/json")
        .body(
            serde_json::to_vec(&json!({"metadata": {"name": "b64"}, "data": {"k": "%%%"}}))
                .expect("json"),
        )
        .expect("request");
    let err = api_error(client.request::<Secret>(req).await.expect_err("bad base64"));
    assert_eq!((err.code, err.reason.as_str()), (400, "BadRequest"));
    assert!(
        err.message.contains("illegal base64 data at input byte 0"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn list_filters_by_label_and_field_selectors_in_one_or_all_namespaces() {
    let api = FakeApiServer::start().await;
    let client = api.client().await;
    api.put_secret(&secret("a", "web", &[("app", "web"), ("tier", "front")]));
    api.put_secret(&secret("a", "api", &[("app", "api"), ("tier", "back")]));
    api.put_secret(&secret("a", "plain", &[]));
    api.put_secret(&secret("b", "web", &[("app", "web")]));
    api.put_secret(&pull_secret("b", "pull", b"{}"));

    let in_a: Api<Secret> = Api::namespaced(client.clone(), "a");
    let all: Api<Secret> = Api::all(client.clone());
    let list = |api: Api<Secret>, lp: ListParams| async move {
        names(&api.list(&lp).await.expect("list").items)
    };
    let lp = ListParams::default;
    assert_eq!(list(in_a.clone(), lp()).await, ["api", "plain", "web"]);
    assert_eq!(list(in_a.clone(), lp().labels("app=web")).await, ["web"]);
    assert_eq!(list(in_a.clone(), lp().labels("app==web")).await, ["web"]);
    assert_eq!(
        list(in_a.clone(), lp().labels("app!=web")).await,
        ["api", "plain"]
    );
    assert_eq!(
        list(in_a.clone(), lp().labels("app in (web,api)")).await,
        ["api", "web"]
    );
    assert_eq!(
        list(in_a.clone(), lp().labels("app notin (web)")).await,
        ["api", "plain"]
    );
    assert_eq!(
        list(in_a.clone(), lp().labels("tier")).await,
        ["api", "web"]
    );
    assert_eq!(list(in_a.clone(), lp().labels("!tier")).await, ["plain"]);
    assert_eq!(
        list(in_a.clone(), lp().labels("app=web,tier=back")).await,
        Vec::<String>::new()
    );
    assert_eq!(
        list(all.clone(), lp().labels("app=web")).await,
        ["web", "web"]
    );
    assert_eq!(
        list(all.clone(), lp().fields("metadata.name=web")).await,
        ["web", "web"]
    );
    assert_eq!(
        list(all.clone(), lp().fields("metadata.namespace==b")).await,
        ["pull", "web"]
    );
    assert_eq!(
        list(in_a.clone(), lp().fields("metadata.name!=web")).await,
        ["api", "plain"]
    );
    assert_eq!(
        list(
            all.clone(),
            lp().fields("type=kubernetes.io/dockerconfigjson")
        )
        .await,
        ["pull"]
    );

    let err = api_error(
        all.list(&lp().fields("data.k=v"))
            .await
            .expect_err("bad field"),
    );
    assert_eq!((err.code, err.reason.as_str()), (400, "BadRequest"));
    assert_eq!(err.message, "field label not supported: data.k");

    let listed = all.list(&lp()).await.expect("list");
    assert_eq!(
        listed.metadata.resource_version.as_deref(),
        Some(api.resource_version().to_string().as_str())
    );
}

#[tokio::test]
async fn list_pages_with_limit_and_continue_from_a_consistent_snapshot() {
    let api = FakeApiServer::start().await;
    for i in 0..7 {
        api.put_configmap(&ConfigMap {
            metadata: ObjectMeta {
                name: Some(format!("cm-{i}")),
                namespace: Some("default".into()),
                ..Default::default()
            },
            ..Default::default()
        });
    }
    let cms: Api<ConfigMap> = Api::namespaced(api.client().await, "default");
    let first = cms
        .list(&ListParams::default().limit(3))
        .await
        .expect("page 1");
    assert_eq!(names(&first.items), ["cm-0", "cm-1", "cm-2"]);
    assert_eq!(first.metadata.remaining_item_count, Some(4));
    let token = first.metadata.continue_.clone().expect("continue token");
    // A write between pages does not show up: pages come from the first page's snapshot.
    api.put_configmap(&ConfigMap {
        metadata: ObjectMeta {
            name: Some("cm-9".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        ..Default::default()
    });
    let second = cms
        .list(&ListParams::default().limit(3).continue_token(&token))
        .await
        .expect("page 2");
    assert_eq!(names(&second.items), ["cm-3", "cm-4", "cm-5"]);
    assert_eq!(
        second.metadata.resource_version,
        first.metadata.resource_version
    );
    let third = cms
        .list(
            &ListParams::default()
                .limit(3)
                .continue_token(second.metadata.continue_.as_deref().expect("token")),
        )
        .await
        .expect("page 3");
    assert_eq!(names(&third.items), ["cm-6"]);
    assert!(third.metadata.continue_.is_none());

    // After a compaction the token is too old: 410 Expired.
    api.compact();
    let err = api_error(
        cms.list(&ListParams::default().limit(3).continue_token(&token))
            .await
            .expect_err("expired continue"),
    );
    assert_eq!((err.code, err.reason.as_str()), (410, "Expired"));
}

#[tokio::test]
async fn watch_resumes_after_a_resource_version() {
    let api = FakeApiServer::start().await;
    let secrets: Api<Secret> = Api::namespaced(api.client().await, "default");
    let s = secrets
        .create(&PostParams::default(), &secret("default", "w", &[]))
        .await
        .expect("create");
    let from = s.metadata.resource_version.clone().expect("rv");
    secrets
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"n": "1"}}})),
        )
        .await
        .expect("patch");
    secrets
        .delete("w", &DeleteParams::default())
        .await
        .expect("delete");

    let wp = WatchParams::default().disable_bookmarks().timeout(5);
    let mut stream = secrets.watch(&wp, &from).await.expect("watch").boxed();
    match stream.try_next().await.expect("event") {
        Some(WatchEvent::Modified(s)) => assert_eq!(
            s.metadata
                .labels
                .and_then(|l| l.get("n").cloned())
                .as_deref(),
            Some("1")
        ),
        other => panic!("expected MODIFIED, got {other:?}"),
    }
    match stream.try_next().await.expect("event") {
        Some(WatchEvent::Deleted(s)) => {
            assert_eq!(
                s.metadata.resource_version,
                Some(api.resource_version().to_string())
            );
        }
        other => panic!("expected DELETED, got {other:?}"),
    }
    // Then live events.
    api.put_secret(&secret("default", "live", &[]));
    match stream.try_next().await.expect("event") {
        Some(WatchEvent::Added(s)) => assert_eq!(s.metadata.name.as_deref(), Some("live")),
        other => panic!("expected ADDED, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_from_zero_lists_the_current_state_as_added_and_sends_bookmarks() {
    let api = FakeApiServer::start_with(Options {
        bookmark_interval: Duration::from_millis(50),
        ..Options::default()
    })
    .await;
    api.put_secret(&secret("default", "one", &[]));
    let secrets: Api<Secret> = Api::namespaced(api.client().await, "default");
    let mut stream = secrets
        .watch(&WatchParams::default().timeout(5), "0")
        .await
        .expect("watch")
        .boxed();
    match stream.try_next().await.expect("event") {
        Some(WatchEvent::Added(s)) => assert_eq!(s.metadata.name.as_deref(), Some("one")),
        other => panic!("expected synthetic ADDED, got {other:?}"),
    }
    match stream.try_next().await.expect("event") {
        Some(WatchEvent::Bookmark(b)) => {
            assert_eq!(
                b.metadata.resource_version,
                api.resource_version().to_string()
            );
        }
        other => panic!("expected BOOKMARK, got {other:?}"),
    }
}

#[tokio::test]
async fn a_watched_object_that_stops_matching_the_selector_is_deleted_for_that_watch() {
    let api = FakeApiServer::start().await;
    api.put_secret(&secret("default", "sel", &[("app", "web")]));
    let secrets: Api<Secret> = Api::namespaced(api.client().await, "default");
    let from = api.resource_version().to_string();
    let wp = WatchParams::default()
        .labels("app=web")
        .disable_bookmarks()
        .timeout(5);
    let mut stream = secrets.watch(&wp, &from).await.expect("watch").boxed();
    eventually("watch open", || api.active_watches() == 1).await;
    api.put_secret(&secret("default", "sel", &[("app", "api")]));
    match stream.try_next().await.expect("event") {
        Some(WatchEvent::Deleted(s)) => assert_eq!(s.metadata.name.as_deref(), Some("sel")),
        other => panic!("expected DELETED, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_from_a_compacted_resource_version_gets_410_expired() {
    let api = FakeApiServer::start().await;
    let secrets: Api<Secret> = Api::namespaced(api.client().await, "default");
    let old = api.resource_version();
    api.put_secret(&secret("default", "x", &[]));
    api.compact();
    let mut stream = secrets
        .watch(&WatchParams::default().timeout(5), &old.to_string())
        .await
        .expect("a watch that cannot start is still a 200 stream")
        .boxed();
    match stream.try_next().await.expect("event") {
        Some(WatchEvent::Error(e)) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
            assert_eq!(
                e.message,
                format!(
                    "too old resource version: {old} ({})",
                    api.resource_version()
                )
            );
        }
        other => panic!("expected ERROR 410, got {other:?}"),
    }
    assert!(
        stream.try_next().await.expect("end").is_none(),
        "the stream ends after the error"
    );
}

#[tokio::test]
async fn the_watch_window_is_a_knob() {
    let api = FakeApiServer::start().await;
    api.set_watch_window(2);
    let secrets: Api<Secret> = Api::namespaced(api.client().await, "default");
    let old = api.resource_version();
    for i in 0..3 {
        api.put_secret(&secret("default", &format!("s{i}"), &[]));
    }
    let mut stream = secrets
        .watch(&WatchParams::default().timeout(5), &old.to_string())
        .await
        .expect("watch")
        .boxed();
    assert!(matches!(stream.try_next().await, Ok(Some(WatchEvent::Error(e))) if e.code == 410));
    // Within the window it resumes.
    let mut ok = secrets
        .watch(
            &WatchParams::default().timeout(5).disable_bookmarks(),
            &(api.resource_version() - 1).to_string(),
        )
        .await
        .expect("watch")
        .boxed();
    assert!(matches!(
        ok.try_next().await,
        Ok(Some(WatchEvent::Added(_)))
    ));
}

/// Collects a kube watcher's events in the background.
fn spawn_watcher(api: Api<Secret>, config: watcher::Config) -> Arc<Mutex<Vec<String>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    tokio::spawn(async move {
        let mut stream = watcher(api, config).boxed();
        while let Some(ev) = stream.next().await {
            let line = match ev {
                Ok(watcher::Event::Init) => "Init".to_string(),
                Ok(watcher::Event::InitApply(s)) => {
                    format!("InitApply {}", s.metadata.name.unwrap_or_default())
                }
                Ok(watcher::Event::InitDone) => "InitDone".to_string(),
                Ok(watcher::Event::Apply(s)) => {
                    format!("Apply {}", s.metadata.name.unwrap_or_default())
                }
                Ok(watcher::Event::Delete(s)) => {
                    format!("Delete {}", s.metadata.name.unwrap_or_default())
                }
                Err(e) => format!("Err {e}"),
            };
            sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
    });
    seen
}

fn snapshot(seen: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

#[tokio::test]
async fn kube_watcher_relists_after_410_expired() {
    let api = FakeApiServer::start().await;
    api.put_secret(&secret("default", "before", &[]));
    let secrets: Api<Secret> = Api::namespaced(api.client().await, "default");
    let seen = spawn_watcher(secrets, watcher::Config::default().disable_bookmarks());
    eventually("initial list done", || {
        snapshot(&seen).contains(&"InitDone".to_string())
    })
    .await;
    eventually("watch open", || api.active_watches() == 1).await;
    assert_eq!(snapshot(&seen), ["Init", "InitApply before", "InitDone"]);
    let lists = Match::any().method("GET").resource("secrets").watch(false);
    assert_eq!(
        api.count(&lists),
        1,
        "ListWatch: one paged list (limit=500)"
    );
    assert!(
        api.requests()
            .iter()
            .any(|r| !r.watch && r.query.contains("limit=500"))
    );

    // The watch breaks; while the watcher reconnects, a change is missed and compacted away.
    api.delay(
        Match::any().resource("secrets").watch(true),
        Duration::from_millis(300),
        Some(1),
    );
    api.drop_watches();
    api.put_secret(&secret("default", "missed", &[]));
    api.compact();

    eventually("relisted after 410", || {
        snapshot(&seen).iter().filter(|l| *l == "InitDone").count() == 2
    })
    .await;
    let events = snapshot(&seen);
    assert!(
        events
            .iter()
            .any(|l| l.contains("410") || l.contains("too old resource version")),
        "{events:?}"
    );
    assert!(
        events.contains(&"InitApply missed".to_string()),
        "{events:?}"
    );
    assert_eq!(api.count(&lists), 2);
}

#[tokio::test]
async fn kube_watcher_streaming_list_gets_initial_events_and_the_end_bookmark() {
    let api = FakeApiServer::start().await;
    api.put_secret(&secret("default", "a", &[]));
    let secrets: Api<Secret> = Api::namespaced(api.client().await, "default");
    let seen = spawn_watcher(secrets, watcher::Config::default().streaming_lists());
    eventually("initial events done", || {
        snapshot(&seen).contains(&"InitDone".to_string())
    })
    .await;
    assert_eq!(snapshot(&seen), ["Init", "InitApply a", "InitDone"]);
    assert!(
        api.requests()
            .iter()
            .all(|r| r.resource.as_deref() != Some("secrets") || r.watch)
    );
    api.put_secret(&secret("default", "b", &[]));
    eventually("live event", || {
        snapshot(&seen).contains(&"Apply b".to_string())
    })
    .await;
}

#[tokio::test]
async fn reflector_store_follows_the_fake_and_reads_make_no_api_calls() {
    let api = FakeApiServer::start().await;
    api.put_namespace("team-a", &[("env", "prod")]);
    let namespaces: Api<Namespace> = Api::all(api.client().await);
    let (reader, writer) = reflector::store::<Namespace>();
    let stream =
        reflector(writer, watcher(namespaces, watcher::Config::default())).applied_objects();
    tokio::spawn(async move {
        let _ = stream.try_for_each(|_| async { Ok(()) }).await;
    });
    reader.wait_until_ready().await.expect("reflector ready");
    let find = |name: &str| -> Option<Namespace> {
        reader
            .state()
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(name))
            .map(|n| Namespace::clone(n))
    };
    let team = find("team-a").expect("seeded namespace in the cache");
    let labels = team.metadata.labels.unwrap_or_default();
    assert_eq!(labels.get("env").map(String::as_str), Some("prod"));
    assert_eq!(
        labels
            .get("kubernetes.io/metadata.name")
            .map(String::as_str),
        Some("team-a")
    );

    api.wait_until("namespace watch open", DEADLINE, |a| {
        a.active_watches_of(Kind::Namespaces) == 1
    })
    .await;
    let calls = api.api_calls();
    for _ in 0..100 {
        assert!(find("team-a").is_some());
    }
    assert_eq!(api.api_calls(), calls, "cache reads make no API calls");
    assert_eq!(
        api.count(&Match::any().resource("namespaces").watch(true)),
        1
    );

    api.put_namespace("team-b", &[]);
    eventually("new namespace cached", || find("team-b").is_some()).await;
    api.terminate_namespace("team-b");
    eventually("terminating seen", || {
        find("team-b")
            .and_then(|n| n.status)
            .and_then(|s| s.phase)
            .as_deref()
            == Some("Terminating")
    })
    .await;
    api.finalize_namespace("team-b");
    eventually("namespace gone", || find("team-b").is_none()).await;
}

#[tokio::test]
async fn injected_500_is_an_error_for_the_next_matching_call_only() {
    let api = FakeApiServer::start().await;
    let secrets: Api<Secret> = Api::namespaced(api.client().await, "default");
    api.fail(
        Match::any().method("POST").resource("secrets"),
        Fault::InternalError,
        Some(1),
    );
    let err = api_error(
        secrets
            .create(&PostParams::default(), &secret("default", "s", &[]))
            .await
            .expect_err("injected"),
    );
    assert_eq!((err.code, err.reason.as_str()), (500, "InternalError"));
    assert!(
        api.get_secret("default", "s").is_none(),
        "the failed create stored nothing"
    );
    secrets
        .create(&PostParams::default(), &secret("default", "s", &[]))
        .await
        .expect("the fault was for one call");
    let answered: Vec<Option<u16>> = api
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.status)
        .collect();
    assert_eq!(answered, [Some(500), Some(201)]);
}

#[tokio::test]
async fn injected_429_is_retried_by_the_kube_client_and_visible_without_retries() {
    let api = FakeApiServer::start().await;
    api.put_secret(&secret("default", "s", &[]));
    let secrets: Api<Secret> = Api::namespaced(api.client().await, "default");
    let gets = Match::any().method("GET").resource("secrets").name("s");
    api.fail(
        gets.clone(),
        Fault::TooManyRequests {
            retry_after_secs: 0,
        },
        Some(2),
    );
    secrets.get("s").await.expect("kube retries 429");
    assert_eq!(api.count(&gets), 3, "two 429s, then the answer");

    let mut config = api.config().await;
    config.default_retry = false;
    let client = kube::Client::try_from(config).expect("client");
    api.fail(
        gets.clone(),
        Fault::TooManyRequests {
            retry_after_secs: 7,
        },
        None,
    );
    let resp = client
        .send(
            http::Request::get("/api/v1/namespaces/default/secrets/s")
                .body(Vec::new().into())
                .expect("req"),
        )
        .await
        .expect("response");
    assert_eq!(resp.status(), 429);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("7")
    );
    let err = api_error(
        Api::<Secret>::namespaced(client, "default")
            .get("s")
            .await
            .expect_err("429"),
    );
    assert_eq!((err.code, err.reason.as_str()), (429, "TooManyRequests"));
    api.clear_faults();
    secrets.get("s").await.expect("cleared");
}

#[tokio::test]
async fn injected_403_reads_like_rbac() {
    let api = FakeApiServer::start().await;
    let secrets: Api<Secret> = Api::all(api.client().await);
    api.fail(Match::any().resource("secrets"), Fault::forbidden(), None);
    let err = api_error(
        secrets
            .list(&ListParams::default())
            .await
            .expect_err("forbidden"),
    );
    assert_eq!((err.code, err.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        err.message,
        r#"secrets is forbidden: User "system:serviceaccount:pullsecret-injector:pullsecret-injector" cannot list resource "secrets" in API group "" at the cluster scope"#
    );
}

#[tokio::test]
async fn a_dropped_connection_is_a_transport_error() {
    let api = FakeApiServer::start().await;
    api.put_secret(&secret("default", "s", &[]));
    let secrets: Api<Secret> = Api::namespaced(api.client().await, "default");
    api.fail(
        Match::any().method("GET").resource("secrets"),
        Fault::Drop,
        Some(1),
    );
    let err = secrets.get("s").await.expect_err("dropped");
    assert!(
        !matches!(err, kube::Error::Api(_)),
        "no answer, so no Status: {err:?}"
    );
    assert_eq!(
        api.requests().last().map(|r| r.status),
        Some(None),
        "never answered"
    );
    secrets.get("s").await.expect("next call answered");
}

/// Reads a watch stream to its end: (events, whether it ended with a transport error).
async fn drain<S, T>(mut stream: S) -> (usize, bool)
where
    S: futures::Stream<Item = Result<T, kube::Error>> + Unpin,
{
    let mut events = 0;
    let read = async {
        while let Some(item) = stream.next().await {
            match item {
                Ok(_) => events += 1,
                Err(_) => return true,
            }
        }
        false
    };
    let errored = tokio::time::timeout(DEADLINE, read)
        .await
        .expect("the watch ended");
    (events, errored)
}

/// Reads a raw watch response to its end: Ok(()) for a clean end of the chunked body,
/// Err for a connection cut mid-body.
async fn read_raw_watch(url: String) -> Result<(), reqwest::Error> {
    pullsecret_injector::install_crypto_provider();
    let mut resp = reqwest::Client::new().get(url).send().await?;
    assert_eq!(resp.status(), 200);
    while resp.chunk().await?.is_some() {}
    Ok(())
}

#[tokio::test]
async fn dropping_watches_cuts_the_connection_and_closing_them_ends_cleanly() {
    let api = FakeApiServer::start().await;
    let url = format!("{}/api/v1/namespaces/default/secrets?watch=true", api.url());

    let dropped = tokio::spawn(read_raw_watch(url.clone()));
    eventually("watch open", || api.active_watches() == 1).await;
    api.drop_watches();
    let outcome = tokio::time::timeout(DEADLINE, dropped)
        .await
        .expect("ended")
        .expect("task");
    assert!(outcome.is_err(), "the chunked body is cut, not ended");

    let closed = tokio::spawn(read_raw_watch(url));
    eventually("watch open", || api.active_watches() == 1).await;
    api.close_watches();
    let outcome = tokio::time::timeout(DEADLINE, closed)
        .await
        .expect("ended")
        .expect("task");
    assert!(
        outcome.is_ok(),
        "a closed watch ends like a timeout: {outcome:?}"
    );

    // kube's client treats both as a resumable end of the watch (no error item).
    let secrets: Api<Secret> = Api::namespaced(api.client().await, "default");
    let stream = secrets
        .watch(&WatchParams::default().disable_bookmarks(), "0")
        .await
        .expect("watch")
        .boxed();
    eventually("watch open", || api.active_watches() == 1).await;
    api.drop_watches();
    assert_eq!(drain(stream).await, (0, false));
    eventually("no watch left", || api.active_watches() == 0).await;
}

#[tokio::test]
async fn watch_timeout_seconds_ends_the_stream() {
    let api = FakeApiServer::start().await;
    let secrets: Api<Secret> = Api::namespaced(api.client().await, "default");
    let stream = secrets
        .watch(&WatchParams::default().disable_bookmarks().timeout(1), "0")
        .await
        .expect("watch")
        .boxed();
    let (events, errored) = drain(stream).await;
    assert_eq!((events, errored), (0, false));
}

#[tokio::test]
async fn an_expired_continue_token_answers_410_with_a_token_to_go_on_inconsistently() {
    let api = FakeApiServer::start().await;
    for i in 0..4 {
        api.put_secret(&secret("default", &format!("s{i}"), &[]));
    }
    let client = api.client().await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let first = secrets
        .list(&ListParams::default().limit(2))
        .await
        .expect("page 1");
    let token = first.metadata.continue_.expect("token");
    api.put_secret(&secret("default", "s9", &[]));
    api.compact();
    let req = http::Request::get(format!(
        "/api/v1/namespaces/default/secrets?limit=2&continue={token}"
    ))
    .body(Vec::new())
    .expect("request");
    let err = api_error(client.request::<Value>(req).await.expect_err("expired"));
    assert_eq!((err.code, err.reason.as_str()), (410, "Expired"));
    assert!(
        err.message
            .starts_with("The provided continue parameter is too old"),
        "{}",
        err.message
    );
    let go_on = err
        .metadata
        .and_then(|m| m.continue_)
        .expect("inconsistent continue token");
    let rest = secrets
        .list(&ListParams::default().limit(2).continue_token(&go_on))
        .await
        .expect("remainder");
    assert_eq!(names(&rest.items), ["s2", "s3"]);
}

#[tokio::test]
async fn namespaces_are_created_and_the_immortal_ones_cannot_be_deleted() {
    let api = FakeApiServer::start().await;
    let namespaces: Api<Namespace> = Api::all(api.client().await);
    let created = namespaces
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some("team-z".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("create namespace");
    assert_eq!(
        created.status.and_then(|s| s.phase).as_deref(),
        Some("Active")
    );
    assert_eq!(
        created.spec.and_then(|s| s.finalizers),
        Some(vec!["kubernetes".to_string()])
    );
    let err = api_error(
        namespaces
            .delete("default", &DeleteParams::default())
            .await
            .expect_err("immortal"),
    );
    assert_eq!((err.code, err.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        err.message,
        r#"namespaces "default" is forbidden: this namespace may not be deleted"#
    );
    let err = api_error(
        namespaces
            .create(
                &PostParams::default(),
                &Namespace {
                    metadata: ObjectMeta {
                        name: Some("Bad_Name".into()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .await
            .expect_err("invalid name"),
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
}

#[tokio::test]
async fn latency_knob_delays_matching_requests() {
    let api = FakeApiServer::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(api.client().await, "default");
    api.delay(
        Match::any().resource("configmaps"),
        Duration::from_millis(200),
        Some(1),
    );
    let started = Instant::now();
    cms.list(&ListParams::default()).await.expect("list");
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn request_log_separates_watches_from_api_calls() {
    let api = FakeApiServer::start().await;
    let client = api.client().await;
    let pods: Api<Pod> = Api::all(client.clone());
    api.put_pod(&Pod {
        metadata: ObjectMeta {
            name: Some("p".into()),
            namespace: Some("apps".into()),
            ..Default::default()
        },
        ..Default::default()
    });
    assert_eq!(
        names(&pods.list(&ListParams::default()).await.expect("pods").items),
        ["p"]
    );
    let _watch = pods
        .watch(&WatchParams::default(), &api.resource_version().to_string())
        .await
        .expect("watch");
    eventually("watch open", || api.active_watches() == 1).await;
    let log = api.requests();
    let watch = log
        .iter()
        .find(|r| r.watch)
        .expect("watch logged when it starts");
    assert_eq!(
        (watch.method.as_str(), watch.resource.as_deref()),
        ("GET", Some("pods"))
    );
    assert!(watch.query.contains("allowWatchBookmarks=true"));
    assert_eq!(api.api_calls(), 1, "only the list counts as an API call");
    assert_eq!(api.count(&Match::any().resource("pods")), 2);
}

#[tokio::test]
async fn events_k8s_io_v1_and_core_v1_are_two_views_of_one_event_storage() {
    use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference};
    use k8s_openapi::api::events::v1::Event;
    use kube::runtime::events::{Event as RecordedEvent, EventType, Recorder, Reporter};
    let api = FakeApiServer::start().await;
    let client = api.client().await;
    let pod = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some("web-1".into()),
        namespace: Some("default".into()),
        ..Default::default()
    };
    let recorder = Recorder::new(client.clone(), Reporter::from("pullsecret-injector"));
    let ev = RecordedEvent {
        type_: EventType::Warning,
        reason: "SecretNotManaged".into(),
        note: Some("kept the existing Secret".into()),
        action: "Inject".into(),
        secondary: None,
    };
    recorder
        .publish(&ev, &pod)
        .await
        .expect("create through events.k8s.io/v1");
    recorder
        .publish(&ev, &pod)
        .await
        .expect("series patch through events.k8s.io/v1");

    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    let seen = core
        .list(&ListParams::default().fields("involvedObject.name=web-1,reason=SecretNotManaged"))
        .await
        .expect("core list");
    assert_eq!(seen.items.len(), 1);
    let e = &seen.items[0];
    assert_eq!(e.message.as_deref(), Some("kept the existing Secret"));
    assert_eq!(
        e.reporting_component.as_deref(),
        Some("pullsecret-injector")
    );
    assert_eq!(e.series.as_ref().map(|s| s.count), Some(Some(2)));

    let v1: Api<Event> = Api::namespaced(client.clone(), "default");
    let listed = v1
        .list(
            &ListParams::default()
                .fields("regarding.kind=Pod,reportingController=pullsecret-injector"),
        )
        .await
        .expect("v1 list");
    assert_eq!(listed.items.len(), 1);
    assert_eq!(
        listed.items[0].note.as_deref(),
        Some("kept the existing Secret")
    );

    // events.k8s.io/v1 validates strictly; its errors name the resource of the request.
    let err = api_error(
        v1.create(
            &PostParams::default(),
            &Event {
                metadata: ObjectMeta {
                    name: Some("bare".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect_err("missing required fields"),
    );
    assert_eq!(err.code, 422);
    assert!(
        err.message.contains("eventTime: Required value"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("type: Invalid value"),
        "{}",
        err.message
    );
    let err = api_error(
        v1.create(
            &PostParams::default(),
            &Event {
                metadata: ObjectMeta {
                    name: Some("no-reporter".into()),
                    ..Default::default()
                },
                event_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                    k8s_openapi::jiff::Timestamp::now(),
                )),
                type_: Some("Normal".into()),
                regarding: Some(pod.clone()),
                ..Default::default()
            },
        )
        .await
        .expect_err("no reporting fields"),
    );
    assert!(
        err.message.contains("reportingController: Required value"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("action: Required value"),
        "{}",
        err.message
    );
    let err = api_error(v1.get("nope").await.expect_err("missing"));
    assert_eq!(err.message, r#"events.events.k8s.io "nope" not found"#);
    assert_eq!(
        err.details.map(|d| d.group),
        Some("events.k8s.io".to_string())
    );
    // The legacy API does not have those rules.
    core.create(
        &PostParams::default(),
        &CoreEvent {
            metadata: ObjectMeta {
                name: Some("legacy".into()),
                ..Default::default()
            },
            involved_object: pod.clone(),
            ..Default::default()
        },
    )
    .await
    .expect("core/v1 create is lenient");
    // ... but every Event lives in the namespace of the object it is about.
    let elsewhere = ObjectReference {
        namespace: Some("team-a".into()),
        ..pod.clone()
    };
    let err = api_error(
        core.create(
            &PostParams::default(),
            &CoreEvent {
                metadata: ObjectMeta {
                    name: Some("misplaced".into()),
                    ..Default::default()
                },
                involved_object: elsewhere,
                ..Default::default()
            },
        )
        .await
        .expect_err("namespace mismatch"),
    );
    assert_eq!(
        err.message,
        r#"Event "misplaced" is invalid: involvedObject.namespace: Invalid value: "team-a": does not match event.namespace"#
    );
    assert_eq!(api.list(Kind::EventsV1, Some("default")).len(), 2);
    assert_eq!(api.list_events(Some("default")).len(), 2);
}

#[tokio::test]
async fn discovery_and_the_kubeconfig_work_for_the_binary() {
    let api = FakeApiServer::start().await;
    let client = api.client().await;
    let version = client.apiserver_version().await.expect("/version");
    assert_eq!(version.major, "1");
    let text = std::fs::read_to_string(api.kubeconfig_path()).expect("kubeconfig");
    assert!(text.contains(&api.url()));
    let groups = client.list_api_groups().await.expect("/apis");
    assert!(groups.groups.iter().any(|g| g.name == "events.k8s.io"));
    let core = client.list_core_api_versions().await.expect("/api");
    assert_eq!(core.versions, ["v1"]);
}

#[tokio::test]
async fn metadata_only_calls_get_partial_object_metadata() {
    let api = FakeApiServer::start().await;
    api.put_secret(&secret("default", "m", &[("app", "web")]));
    let secrets: Api<Secret> = Api::namespaced(api.client().await, "default");
    let one = secrets.get_metadata("m").await.expect("get_metadata");
    assert_eq!(
        one.types.map(|t| t.kind).as_deref(),
        Some("PartialObjectMetadata")
    );
    assert_eq!(
        one.metadata
            .labels
            .and_then(|l| l.get("app").cloned())
            .as_deref(),
        Some("web")
    );
    let list = secrets
        .list_metadata(&ListParams::default())
        .await
        .expect("list_metadata");
    assert_eq!(names(&list.items), ["m"]);

    let metas: Api<kube::core::PartialObjectMeta<Secret>> =
        Api::namespaced(api.client().await, "default");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    tokio::spawn(async move {
        let mut stream = watcher(metas, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Some(Ok(obj)) = stream.next().await {
            sink.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(obj.metadata.name.unwrap_or_default());
        }
    });
    eventually("initial object", || snapshot(&seen) == ["m"]).await;
    api.put_secret(&secret("default", "n", &[]));
    eventually("watched object", || snapshot(&seen) == ["m", "n"]).await;
}

#[tokio::test]
async fn invalid_labels_and_annotations_are_422() {
    let api = FakeApiServer::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(api.client().await, "default");
    let with_meta = |labels: &[(&str, &str)], annotations: &[(&str, &str)]| ConfigMap {
        metadata: ObjectMeta {
            name: Some("c".into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        ..Default::default()
    };
    let pp = PostParams::default();
    let err = api_error(
        cms.create(&pp, &with_meta(&[("app", "bad value")], &[]))
            .await
            .expect_err("value"),
    );
    assert_eq!(err.code, 422);
    assert!(err.message.starts_with(r#"ConfigMap "c" is invalid: metadata.labels: Invalid value: "bad value": a valid label must be"#), "{}", err.message);
    let err = api_error(
        cms.create(&pp, &with_meta(&[], &[("bad key/x", "v")]))
            .await
            .expect_err("key"),
    );
    assert!(
        err.message.contains("metadata.annotations"),
        "{}",
        err.message
    );
    cms.create(
        &pp,
        &with_meta(
            &[("app.kubernetes.io/managed-by", "pullsecret-injector")],
            &[(
                "pullsecret-injector.io/source",
                "registry-credentials/gitlab",
            )],
        ),
    )
    .await
    .expect("valid keys and values");
}

#[tokio::test]
async fn server_side_apply_upserts_and_drops_fields_the_manager_stopped_applying() {
    let api = FakeApiServer::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(api.client().await, "default");
    let ssa = PatchParams::apply("pullsecret-injector").force();
    let applied = |data: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data});
    let created = cms
        .patch(
            "c",
            &ssa,
            &Patch::Apply(applied(json!({"a": "1", "b": "2"}))),
        )
        .await
        .expect("apply creates");
    let managers: Vec<String> = created
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert_eq!(managers, ["pullsecret-injector"]);

    // Another writer's key survives; the manager's dropped key goes; a no-op keeps the rv.
    cms.patch(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"other": "x"}})),
    )
    .await
    .expect("merge patch");
    let v2 = cms
        .patch("c", &ssa, &Patch::Apply(applied(json!({"a": "1"}))))
        .await
        .expect("re-apply");
    assert_eq!(
        v2.data,
        Some(BTreeMap::from([
            ("a".into(), "1".into()),
            ("other".into(), "x".into())
        ]))
    );
    let v3 = cms
        .patch("c", &ssa, &Patch::Apply(applied(json!({"a": "1"}))))
        .await
        .expect("same apply");
    assert_eq!(v3.metadata.resource_version, v2.metadata.resource_version);

    // Apply of a missing object in a terminating namespace goes through the create checks.
    api.put_namespace("doomed", &[]);
    api.terminate_namespace("doomed");
    let in_doomed: Api<ConfigMap> = Api::namespaced(api.client().await, "doomed");
    let err = api_error(
        in_doomed
            .patch("c", &ssa, &Patch::Apply(applied(json!({}))))
            .await
            .expect_err("terminating"),
    );
    assert_eq!(err.code, 403);
}

fn service_account(ns: &str, name: &str, pull_secrets: &[&str]) -> ServiceAccount {
    ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        image_pull_secrets: Some(
            pull_secrets
                .iter()
                .map(|n| LocalObjectReference {
                    name: n.to_string(),
                })
                .collect(),
        ),
        ..Default::default()
    }
}

fn pull_secret_names(sa: &ServiceAccount) -> Vec<String> {
    sa.image_pull_secrets
        .iter()
        .flatten()
        .map(|r| r.name.clone())
        .collect()
}

/// k8s.io/api core/v1 ServiceAccount: `secrets` has `patchStrategy:"merge"
/// patchMergeKey:"name"`, `imagePullSecrets` has neither (the API reference says "Atomic: will
/// be replaced during a merge"). A strategic merge patch that means to add one pull secret
/// therefore drops every other one: the trap peers fall into.
#[tokio::test]
async fn service_account_strategic_merge_replaces_image_pull_secrets_and_merges_secrets_by_name() {
    let api = FakeApiServer::start().await;
    let sas: Api<ServiceAccount> = Api::namespaced(api.client().await, "default");
    let mut sa = service_account("default", "builder", &["theirs", "also-theirs"]);
    sa.secrets = Some(vec![ObjectReference {
        name: Some("token-a".into()),
        ..Default::default()
    }]);
    sas.create(&PostParams::default(), &sa)
        .await
        .expect("create");

    let patched = sas
        .patch(
            "builder",
            &PatchParams::default(),
            &Patch::Strategic(json!({
                "imagePullSecrets": [{"name": "ours"}],
                "secrets": [{"name": "token-b"}],
            })),
        )
        .await
        .expect("strategic patch");
    assert_eq!(pull_secret_names(&patched), vec!["ours"], "list replaced");
    let secrets: Vec<String> = patched
        .secrets
        .iter()
        .flatten()
        .filter_map(|r| r.name.clone())
        .collect();
    assert_eq!(secrets, vec!["token-a", "token-b"], "merged by name");

    // `$patch: delete` takes one keyed item out.
    let patched = sas
        .patch(
            "builder",
            &PatchParams::default(),
            &Patch::Strategic(json!({"secrets": [{"name": "token-a", "$patch": "delete"}]})),
        )
        .await
        .expect("strategic delete");
    let secrets: Vec<String> = patched
        .secrets
        .iter()
        .flatten()
        .filter_map(|r| r.name.clone())
        .collect();
    assert_eq!(secrets, vec!["token-b"]);
}

/// The apiserver's patch handler answers a JSON patch that does not apply with
/// `NewGenericServerResponse(422, ...)`: reason Invalid, the generic message, empty details,
/// and nothing written.
#[tokio::test]
async fn a_json_patch_whose_test_fails_is_422_invalid_and_changes_nothing() {
    let api = FakeApiServer::start().await;
    let sas: Api<ServiceAccount> = Api::namespaced(api.client().await, "default");
    let created = sas
        .create(
            &PostParams::default(),
            &service_account("default", "app", &["theirs"]),
        )
        .await
        .expect("create");
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/imagePullSecrets", "value": [{"name": "something-else"}]},
        {"op": "add", "path": "/imagePullSecrets/-", "value": {"name": "ours"}},
    ]))
    .expect("ops");
    let err = api_error(
        sas.patch("app", &PatchParams::default(), &Patch::<()>::Json(ops))
            .await
            .expect_err("test fails"),
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        err.message,
        "the server rejected our request due to an error in our request"
    );
    let raw = api
        .get(Kind::ServiceAccounts, "default", "app")
        .expect("still there");
    assert_eq!(
        raw["metadata"]["resourceVersion"],
        json!(created.metadata.resource_version),
        "nothing was written"
    );

    // The same test against the current list passes and the append lands after it.
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": created.metadata.resource_version},
        {"op": "test", "path": "/imagePullSecrets", "value": [{"name": "theirs"}]},
        {"op": "add", "path": "/imagePullSecrets/-", "value": {"name": "ours"}},
    ]))
    .expect("ops");
    let patched = sas
        .patch("app", &PatchParams::default(), &Patch::<()>::Json(ops))
        .await
        .expect("test passes");
    assert_eq!(pull_secret_names(&patched), vec!["theirs", "ours"]);
}

#[tokio::test]
async fn service_account_writes_with_a_stale_resource_version_are_409_conflict() {
    let api = FakeApiServer::start().await;
    let sas: Api<ServiceAccount> = Api::namespaced(api.client().await, "default");
    let v1 = sas
        .create(
            &PostParams::default(),
            &service_account("default", "app", &[]),
        )
        .await
        .expect("create");
    let mut edit = v1.clone();
    edit.image_pull_secrets = Some(vec![LocalObjectReference {
        name: "theirs".into(),
    }]);
    sas.replace("app", &PostParams::default(), &edit)
        .await
        .expect("update with the current resourceVersion");

    // v1's resourceVersion is stale now.
    let err = api_error(
        sas.replace("app", &PostParams::default(), &v1)
            .await
            .expect_err("stale update"),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    let stale = json!({
        "metadata": {"resourceVersion": v1.metadata.resource_version},
        "imagePullSecrets": [{"name": "ours"}],
    });
    let err = api_error(
        sas.patch("app", &PatchParams::default(), &Patch::Merge(stale))
            .await
            .expect_err("stale patch"),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    let now = sas.get("app").await.expect("get");
    assert_eq!(
        pull_secret_names(&now),
        vec!["theirs"],
        "the user's edit stands"
    );
}
