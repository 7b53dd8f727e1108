//! The HTTP face: URL routing like kube-apiserver's (`/api/v1/...`, `/apis/GROUP/VERSION/...`),
//! the verbs, chunked watch streams, discovery, and the fault knobs applied per request.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::events;
use super::faults::{Fault, LoggedRequest};
use super::selectors::{FieldSelector, LabelSelector};
use super::status::{self, ApiError};
use super::store;
use super::store::{EventType, Kind, ListOpts, WatchFilter, WatchStart};
use super::{ConnHandle, Shared};

/// A parsed resource URL.
#[derive(Debug, Clone)]
struct Target {
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
}

enum Route {
    Version,
    Api,
    Apis,
    Resources(&'static str),
    Resource(Target),
    NotFound,
}

fn route(
    path: &str,
) -> (
    Route,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
) {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, rest): (&str, &[&str]) = match segs.as_slice() {
        ["version"] => return (Route::Version, None, None, None, None),
        ["api"] => return (Route::Api, None, None, None, None),
        ["apis"] => return (Route::Apis, None, None, None, None),
        ["api", "v1"] => return (Route::Resources(""), None, None, None, None),
        ["apis", "events.k8s.io", "v1"] => {
            return (Route::Resources("events.k8s.io"), None, None, None, None);
        }
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", g, "v1", rest @ ..] => (*g, rest),
        _ => return (Route::NotFound, None, None, None, None),
    };
    let (resource, namespace, name) = match rest {
        [res] => (*res, None, None),
        ["namespaces", ns, res] => (*res, Some(ns.to_string()), None),
        ["namespaces", ns, res, name] => (*res, Some(ns.to_string()), Some(name.to_string())),
        [res, name] => (*res, None, Some(name.to_string())),
        _ => return (Route::NotFound, Some(group.to_string()), None, None, None),
    };
    let logged = (
        Some(group.to_string()),
        Some(resource.to_string()),
        namespace.clone(),
        name.clone(),
    );
    let Some(kind) = Kind::from_path(group, resource) else {
        return (Route::NotFound, logged.0, logged.1, logged.2, logged.3);
    };
    // `/api/v1/namespaces/x` is the Namespace x; `/api/v1/secrets/x` does not exist.
    let target = match (kind.namespaced(), &namespace, &name) {
        (false, None, _) => Target {
            kind,
            namespace: None,
            name,
        },
        (true, _, None) | (true, Some(_), Some(_)) => Target {
            kind,
            namespace,
            name,
        },
        _ => return (Route::NotFound, logged.0, logged.1, logged.2, logged.3),
    };
    (
        Route::Resource(target),
        logged.0,
        logged.1,
        logged.2,
        logged.3,
    )
}

fn json_response(code: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

fn error_response(err: ApiError) -> Response {
    let mut resp = json_response(err.code, &err.body);
    if let Some(secs) = err.retry_after
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

fn respond(result: Result<(u16, Value), ApiError>) -> Response {
    match result {
        Ok((code, body)) => json_response(code, &body),
        Err(e) => error_response(e),
    }
}

fn truthy(v: Option<&String>) -> bool {
    matches!(v.map(String::as_str), Some("true" | "1"))
}

fn verb(method: &Method, t: &Target, watch: bool) -> &'static str {
    match (method.as_str(), t.name.is_some()) {
        ("GET", true) => "get",
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    Extension(conn): Extension<ConnHandle>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query: HashMap<String, String> = Query::try_from_uri(&uri)
        .map(|Query(q)| q)
        .unwrap_or_default();
    let (route, group, resource, namespace, name) = route(uri.path());
    let watch = truthy(query.get("watch"));
    let logged = LoggedRequest {
        method: method.as_str().to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or("").to_string(),
        group,
        resource,
        namespace,
        name,
        watch,
        at: SystemTime::now(),
        seq: shared
            .next_seq
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst),
        status: None,
    };
    let (delay, fault) = shared.lock_faults().take(&logged);
    let seq = logged.seq;
    shared.lock_log().push(logged);
    let resp = answer(
        shared.clone(),
        conn,
        method,
        route,
        query,
        headers,
        body,
        watch,
        delay,
        fault,
    )
    .await;
    // Recorded when the answer (for a watch: the start of the stream) is ready.
    if let Some(r) = shared.lock_log().iter_mut().rev().find(|r| r.seq == seq) {
        r.status = Some(resp.status().as_u16());
    }
    resp
}

#[allow(clippy::too_many_arguments)]
async fn answer(
    shared: Arc<Shared>,
    conn: ConnHandle,
    method: Method,
    route: Route,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
    watch: bool,
    delay: Duration,
    fault: Option<Fault>,
) -> Response {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(fault) = fault {
        let target = match &route {
            Route::Resource(t) => Some(t.clone()),
            _ => None,
        };
        let kind = target.as_ref().map_or(Kind::Secrets, |t| t.kind);
        let name = target
            .as_ref()
            .and_then(|t| t.name.clone())
            .unwrap_or_default();
        let ns = target
            .as_ref()
            .and_then(|t| t.namespace.clone())
            .unwrap_or_default();
        match fault {
            Fault::Drop => {
                conn.kill();
                std::future::pending::<()>().await;
            }
            Fault::InternalError => {
                return error_response(status::internal_error("injected fault"));
            }
            Fault::TooManyRequests { retry_after_secs } => {
                return error_response(status::too_many_requests(retry_after_secs));
            }
            Fault::ServiceUnavailable => {
                let mut e = status::internal_error("injected fault");
                e.code = 503;
                e.body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "the server is currently unable to handle the request", "reason": "ServiceUnavailable", "code": 503});
                return error_response(e);
            }
            Fault::Forbidden { user } => {
                let verb = target.as_ref().map_or("get", |t| verb(&method, t, watch));
                return error_response(status::rbac_forbidden(kind, &name, &ns, verb, &user));
            }
            Fault::Latency(_) => {}
        }
    }
    match route {
        Route::Version => json_response(
            200,
            &json!({
                "major": "1", "minor": "33", "gitVersion": "v1.33.0-fake",
                "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
                "buildDate": "2025-04-23T00:00:00Z", "goVersion": "go1.24.2", "compiler": "gc",
                "platform": "linux/amd64"
            }),
        ),
        Route::Api => json_response(
            200,
            &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": shared.addr.to_string()}]}),
        ),
        Route::Apis => json_response(
            200,
            &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [{
                "name": "events.k8s.io",
                "versions": [{"groupVersion": "events.k8s.io/v1", "version": "v1"}],
                "preferredVersion": {"groupVersion": "events.k8s.io/v1", "version": "v1"}
            }]}),
        ),
        Route::Resources(group) => json_response(200, &resource_list(group)),
        Route::NotFound => error_response(status::page_not_found()),
        Route::Resource(t) => serve_resource(shared, conn, method, t, query, headers, body).await,
    }
}

fn resource_list(group: &str) -> Value {
    let verbs = [
        "create", "delete", "get", "list", "patch", "update", "watch",
    ];
    let resources: Vec<Value> = Kind::ALL
        .into_iter()
        .filter(|k| k.group() == group)
        .map(|k| {
            json!({"name": k.plural(), "singularName": k.kind_name().to_ascii_lowercase(),
                "namespaced": k.namespaced(), "kind": k.kind_name(), "verbs": verbs})
        })
        .collect();
    let gv = if group.is_empty() {
        "v1".to_string()
    } else {
        format!("{group}/v1")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

fn list_opts(kind: Kind, q: &HashMap<String, String>) -> Result<ListOpts, ApiError> {
    let labels = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))
        .map_err(status::bad_request)?;
    let fields = FieldSelector::parse(
        q.get("fieldSelector").map_or("", String::as_str),
        kind.field_labels(),
    )
    .map_err(status::bad_request)?;
    let limit = match q.get("limit").filter(|l| !l.is_empty()) {
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| status::bad_request(format!("invalid limit: {l}")))?,
        ),
        None => None,
    };
    Ok(ListOpts {
        labels,
        fields,
        limit,
        continue_token: q.get("continue").cloned(),
        resource_version: q.get("resourceVersion").cloned(),
        resource_version_match: q.get("resourceVersionMatch").cloned(),
    })
}

async fn serve_resource(
    shared: Arc<Shared>,
    conn: ConnHandle,
    method: Method,
    t: Target,
    mut q: HashMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let watch = truthy(q.get("watch"));
    let mut dry_run = q.get("dryRun").is_some_and(|d| d == "All");
    let ns = t.namespace.clone().unwrap_or_default();
    // events.k8s.io/v1 is a view of the core Events storage.
    let v1_events = t.kind == Kind::EventsV1;
    let kind = if v1_events { Kind::Events } else { t.kind };
    if v1_events && let Some(fs) = q.get_mut("fieldSelector") {
        *fs = events::field_selector_to_core(fs);
    }
    let to_client = |v: Value| if v1_events { events::to_v1(&v) } else { v };
    let from_client = |v: Value| if v1_events { events::to_core(&v) } else { v };
    let fix_err = |e: ApiError| if v1_events { events::sync_status(e) } else { e };
    let parse_body = |body: &Bytes| -> Result<Value, ApiError> {
        serde_json::from_slice::<Value>(body)
            .map(from_client)
            .map_err(|e| {
                status::bad_request(format!(
                    "{} in version \"v1\" cannot be handled as a {}: {e}",
                    t.kind.kind_name(),
                    t.kind.kind_name()
                ))
            })
    };
    let result: Result<(u16, Value), ApiError> = match (method.as_str(), &t.name) {
        ("GET", Some(name)) => shared
            .lock_store()
            .get(kind, &ns, name)
            .map(|o| (200, to_client(o))),
        ("GET", None) if watch => {
            return match list_opts(kind, &q) {
                Ok(opts) => {
                    serve_watch(shared, conn, t, opts, &q, wants_partial_metadata(&headers))
                }
                Err(e) => error_response(fix_err(e)),
            };
        }
        ("GET", None) => list_opts(kind, &q).and_then(|opts| {
            let mut list = shared
                .lock_store()
                .list(kind, t.namespace.as_deref(), &opts)?;
            if v1_events {
                list["apiVersion"] = json!(t.kind.api_version());
                if let Some(items) = list.get_mut("items").and_then(Value::as_array_mut) {
                    for item in items.iter_mut() {
                        *item = events::to_v1(item);
                    }
                }
            }
            Ok((200, list))
        }),
        ("POST", None) => parse_body(&body).and_then(|obj| {
            let mut store = shared.lock_store();
            let created = if v1_events {
                store.create_with(kind, &ns, obj, dry_run, &events::validate_v1_create)?
            } else if kind == Kind::Events {
                store.create_with(kind, &ns, obj, dry_run, &events::validate_core_create)?
            } else {
                store.create(kind, &ns, obj, dry_run)?
            };
            Ok((201, to_client(created)))
        }),
        ("PUT", Some(name)) => parse_body(&body).and_then(|obj| {
            let updated = shared.lock_store().update(kind, &ns, name, obj, dry_run)?;
            Ok((200, to_client(updated)))
        }),
        ("PATCH", Some(name)) => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let mut store = shared.lock_store();
            let media = ct.split(';').next().unwrap_or("").trim();
            if media == "application/apply-patch+yaml" && !v1_events {
                let manager = q.get("fieldManager").map_or("", String::as_str);
                store
                    .apply(kind, &ns, name, &body, manager, dry_run)
                    .map(|(code, o)| (code, to_client(o)))
            } else if v1_events {
                // Patch the v1 form, store the core form (with the resourceVersion check).
                store::patch_is_merge(&ct).and_then(|_| {
                    let mut doc = events::to_v1(&store.get(kind, &ns, name)?);
                    store::apply_patch(&mut doc, &ct, &body)?;
                    let updated = store.update(kind, &ns, name, events::to_core(&doc), dry_run)?;
                    Ok((200, to_client(updated)))
                })
            } else {
                store
                    .patch(kind, &ns, name, &ct, &body, dry_run)
                    .map(|o| (200, o))
            }
        }
        ("DELETE", Some(name)) => {
            let opts: Option<Value> = if body.is_empty() {
                None
            } else {
                match serde_json::from_slice(&body) {
                    Ok(v) => Some(v),
                    Err(e) => return error_response(status::bad_request(e.to_string())),
                }
            };
            // DeleteOptions may carry dryRun in the body (kube's DeleteParams does).
            if opts
                .as_ref()
                .and_then(|o| o.get("dryRun"))
                .and_then(Value::as_array)
                .is_some_and(|d| d.iter().any(|x| x == "All"))
            {
                dry_run = true;
            }
            shared
                .lock_store()
                .delete(kind, &ns, name, opts.as_ref(), dry_run)
                .map(|mut o| {
                    if v1_events && o.get("kind").and_then(Value::as_str) == Some("Status") {
                        o["details"]["group"] = json!("events.k8s.io");
                    }
                    (200, o)
                })
        }
        _ => Err(status::method_not_allowed()),
    };
    let partial = wants_partial_metadata(&headers);
    respond(
        result
            .map(|(code, body)| {
                if partial {
                    (code, as_partial(&body))
                } else {
                    (code, body)
                }
            })
            .map_err(fix_err),
    )
}

/// `Accept: application/json;as=PartialObjectMetadata[List];g=meta.k8s.io;v=v1` (kube's
/// `*_metadata` calls and metadata_watcher).
fn wants_partial_metadata(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"))
}

/// An object (or a list of them) as meta.k8s.io/v1 PartialObjectMetadata; a Status stays.
fn as_partial(body: &Value) -> Value {
    let one = |o: &Value| json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o.get("metadata").cloned().unwrap_or(json!({}))});
    match body.get("kind").and_then(Value::as_str) {
        Some("Status") => body.clone(),
        Some(k) if k.ends_with("List") => json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": body.get("metadata").cloned().unwrap_or(json!({})),
            "items": body.get("items").and_then(Value::as_array).map(|items| items.iter().map(one).collect::<Vec<_>>()).unwrap_or_default(),
        }),
        _ => one(body),
    }
}

fn event_line(etype: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": etype, "object": object})
        .to_string()
        .into_bytes();
    line.push(b'\n');
    Bytes::from(line)
}

fn bookmark(kind: Kind, rv: u64, initial_events_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
    if initial_events_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event_line(
        "BOOKMARK",
        &json!({"kind": kind.kind_name(), "apiVersion": kind.api_version(), "metadata": meta}),
    )
}

/// Counts open watches (per resource) for `FakeApiServer::active_watches`.
struct ActiveWatch(Arc<Shared>, Kind);

impl ActiveWatch {
    fn new(shared: Arc<Shared>, kind: Kind) -> Self {
        *lock_counts(&shared).entry(kind).or_default() += 1;
        Self(shared, kind)
    }
}

impl Drop for ActiveWatch {
    fn drop(&mut self) {
        if let Some(n) = lock_counts(&self.0).get_mut(&self.1) {
            *n = n.saturating_sub(1);
        }
    }
}

fn lock_counts(
    shared: &Shared,
) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<Kind, usize>> {
    shared
        .active_watches
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

fn serve_watch(
    shared: Arc<Shared>,
    conn: ConnHandle,
    t: Target,
    opts: ListOpts,
    q: &HashMap<String, String>,
    partial: bool,
) -> Response {
    let bookmarks = truthy(q.get("allowWatchBookmarks"));
    let initial_events = truthy(q.get("sendInitialEvents"));
    // Without timeoutSeconds the apiserver picks a random 30-60 min; 30 min here.
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let filter = WatchFilter {
        kind: if t.kind == Kind::EventsV1 {
            Kind::Events
        } else {
            t.kind
        },
        namespace: t.namespace.clone(),
        labels: opts.labels,
        fields: opts.fields,
    };
    let (start, rx) = {
        let store = shared.lock_store();
        let rx = store.subscribe();
        (
            store.watch_start(
                filter.kind,
                opts.resource_version.as_deref(),
                initial_events,
            ),
            rx,
        )
    };
    let (tx, body_rx) = mpsc::channel::<Bytes>(1024);
    let interval = *shared
        .bookmark_interval
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let guard = ActiveWatch::new(shared.clone(), t.kind);
    tokio::spawn(async move {
        let _guard = guard;
        let view = t.kind;
        watch_task(
            shared,
            conn,
            view,
            partial,
            filter,
            start,
            rx,
            tx,
            timeout,
            bookmarks,
            initial_events,
            interval,
        )
        .await;
    });
    let stream = futures::stream::unfold(body_rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        Body::from_stream(stream),
    )
        .into_response()
}

#[allow(clippy::too_many_arguments)]
async fn watch_task(
    shared: Arc<Shared>,
    conn: ConnHandle,
    view: Kind,
    partial: bool,
    filter: WatchFilter,
    start: Result<WatchStart, ApiError>,
    mut rx: broadcast::Receiver<Arc<super::store::StoredEvent>>,
    tx: mpsc::Sender<Bytes>,
    timeout: Duration,
    bookmarks: bool,
    initial_events: bool,
    bookmark_interval: Duration,
) {
    // The resource the client watches (events.k8s.io/v1 converts from the core storage).
    let kind = view;
    let line = |t: EventType, o: &Value| {
        if partial {
            event_line(t.as_str(), &as_partial(o))
        } else if view == Kind::EventsV1 {
            event_line(t.as_str(), &events::to_v1(o))
        } else {
            event_line(t.as_str(), o)
        }
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut drop_rx = shared.drop_watches.subscribe();
    let mut close_rx = shared.close_watches.subscribe();
    let mut last_rv = match start {
        // Like the watch cache: a watch that cannot start is a 200 with one ERROR event.
        Err(e) => {
            let _ = tx.send(event_line("ERROR", &e.body)).await;
            return;
        }
        Ok(WatchStart::Initial { objects, rv }) => {
            for o in objects.iter().filter(|o| filter.passes(o)) {
                if tx
                    .send(event_line(EventType::Added.as_str(), o))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if initial_events && tx.send(bookmark(kind, rv, true)).await.is_err() {
                return;
            }
            rv
        }
        Ok(WatchStart::Replay { events, rv }) => {
            let mut last = rv;
            for e in events {
                last = e.rv;
                if let Some((t, o)) = filter.convert(&e)
                    && tx.send(line(t, &o)).await.is_err()
                {
                    return;
                }
            }
            last
        }
    };
    let period = bookmark_interval.max(Duration::from_millis(10));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            biased;
            _ = drop_rx.changed() => {
                // Keep the body open until the connection is gone, so that it is cut
                // rather than ended.
                conn.kill();
                tx.closed().await;
                return;
            }
            _ = close_rx.changed() => return,
            _ = tokio::time::sleep_until(deadline) => return,
            _ = tx.closed() => return,
            ev = rx.recv() => match ev {
                Ok(ev) => {
                    if ev.rv <= last_rv {
                        continue;
                    }
                    last_rv = ev.rv;
                    if let Some((t, o)) = filter.convert(&ev)
                        && tx.send(line(t, &o)).await.is_err()
                    {
                        return;
                    }
                }
                // A watcher too slow to keep up is closed, as the apiserver does.
                Err(_) => return,
            },
            _ = tick.tick(), if bookmarks => {
                if tx.send(bookmark(kind, last_rv, false)).await.is_err() {
                    return;
                }
            }
        }
    }
}
