//! A stateful fake kube-apiserver on 127.0.0.1 for integration tests: real HTTP, real
//! kubeconfig, the apiserver's status codes and `Status` bodies, resourceVersions, list and
//! watch with selectors, and knobs for latency, errors and dropped connections.
//!
//! ```ignore
//! let api = FakeApiServer::start().await;
//! api.put_namespace("team-a", &[("env", "prod")]);
//! let client = api.client().await;            // kube::Client through the kubeconfig
//! std::process::Command::new(bin).env("KUBECONFIG", api.kubeconfig_path());
//! api.fail(Match::any().method("POST").resource("secrets"), Fault::InternalError, Some(1));
//! assert_eq!(api.count(&Match::any().resource("secrets").watch(false)), 1);
//! ```
//!
//! Served: core/v1 namespaces, secrets, configmaps, pods, serviceaccounts, events and
//! events.k8s.io/v1 events (a view of the same storage), with get, list (selectors,
//! limit/continue), watch, create, update, patch (merge; strategic as merge except the lists
//! with a merge key, i.e. ServiceAccount `secrets`, so `imagePullSecrets` is replaced whole;
//! JSON patch, a failing one is 422 like the apiserver's; simplified server-side apply) and
//! delete; `/version`, `/api`, `/apis` and the two resource lists.
//! Not served: other resources (404), deletecollection (405), subresources (`/status`,
//! `/finalize`), Table output, protobuf, HTTP/2, authentication and RBAC (403 only when
//! injected), admission webhooks, managedFields of non-apply writes, graceful Pod deletion
//! (a Pod delete is immediate), Event TTL.
#![allow(dead_code)]

mod events;
mod faults;
mod http;
mod selectors;
mod status;
mod store;
mod validation;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{
    ConfigMap, Event as CoreEvent, Namespace, Pod, Secret, ServiceAccount,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tower::ServiceExt as _;

pub use faults::{Fault, LoggedRequest, Match};
pub use store::Kind;

use faults::{Faults, Rule};
use store::Store;

/// Tuning of a fake server.
#[derive(Debug, Clone)]
pub struct Options {
    /// How many change events are kept for watch resumption (etcd/watch-cache window).
    pub watch_window: usize,
    /// How often an idle watch with allowWatchBookmarks=true gets a BOOKMARK.
    pub bookmark_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            watch_window: 10_000,
            bookmark_interval: Duration::from_secs(1),
        }
    }
}

/// Closes one TCP connection without an answer when told to.
#[derive(Clone)]
pub(crate) struct ConnHandle(Arc<Notify>);

impl ConnHandle {
    fn kill(&self) {
        self.0.notify_one();
    }
}

pub(crate) struct Shared {
    addr: SocketAddr,
    store: Mutex<Store>,
    faults: Mutex<Faults>,
    log: Mutex<Vec<LoggedRequest>>,
    drop_watches: watch::Sender<u64>,
    close_watches: watch::Sender<u64>,
    active_watches: Mutex<std::collections::BTreeMap<Kind, usize>>,
    next_seq: std::sync::atomic::AtomicU64,
    bookmark_interval: Mutex<Duration>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding a lock leaves consistent data behind.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn lock_store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }
    fn lock_faults(&self) -> MutexGuard<'_, Faults> {
        lock(&self.faults)
    }
    fn lock_log(&self) -> MutexGuard<'_, Vec<LoggedRequest>> {
        lock(&self.log)
    }
}

/// The running fake. Dropping it stops the server.
pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
    shutdown: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.accept.abort();
    }
}

fn to_value<T: Serialize>(obj: &T) -> Value {
    serde_json::to_value(obj).expect("k8s-openapi objects serialize")
}

fn from_value<T: DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("stored object deserializes into its k8s-openapi type")
}

impl FakeApiServer {
    /// Starts a fake with the default namespaces (default, kube-system, kube-public,
    /// kube-node-lease) on a free port of 127.0.0.1, and writes its kubeconfig.
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let mut store = Store::new(options.watch_window);
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            store
                .put(Kind::Namespaces, json!({"metadata": {"name": ns}}))
                .expect("seed namespace");
        }
        let shared = Arc::new(Shared {
            addr,
            store: Mutex::new(store),
            faults: Mutex::new(Faults::default()),
            log: Mutex::new(Vec::new()),
            drop_watches: watch::channel(0).0,
            close_watches: watch::channel(0).0,
            active_watches: Mutex::new(Default::default()),
            next_seq: std::sync::atomic::AtomicU64::new(0),
            bookmark_interval: Mutex::new(options.bookmark_interval),
        });
        let router = Router::new()
            .fallback(http::handle)
            .with_state(shared.clone());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let accept = tokio::spawn(accept_loop(listener, router, shutdown_rx));

        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_yaml(addr)).expect("write kubeconfig");
        Self {
            addr,
            shared,
            kubeconfig,
            _dir: dir,
            shutdown,
            accept,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig (context `fake`, namespace `default`) for `KUBECONFIG=`.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The kube Config read from the kubeconfig file, for callers that want to tune it
    /// (e.g. `default_retry = false`).
    pub async fn config(&self) -> kube::Config {
        pullsecret_injector::install_crypto_provider();
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("read kubeconfig");
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .expect("kube config from kubeconfig")
    }

    /// A kube Client built from the kubeconfig file, as the binary would build it.
    pub async fn client(&self) -> kube::Client {
        kube::Client::try_from(self.config().await).expect("kube client")
    }

    // ---- seeding and reading back (no admission, faults or request log) ----

    /// Creates or replaces any object of `kind` (namespace of a namespaced object defaults
    /// to "default" and is created when missing). Emits the watch event a write would.
    pub fn put(&self, kind: Kind, obj: Value) -> Value {
        if kind == Kind::EventsV1 {
            return events::to_v1(&self.put(Kind::Events, events::to_core(&obj)));
        }
        self.shared
            .lock_store()
            .put(kind, obj)
            .unwrap_or_else(|e| panic!("put {kind:?} rejected: {}", e.body))
    }

    pub fn put_namespace(&self, name: &str, labels: &[(&str, &str)]) -> Namespace {
        let labels: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        from_value(self.put(
            Kind::Namespaces,
            json!({"metadata": {"name": name, "labels": labels}}),
        ))
    }

    pub fn put_secret(&self, secret: &Secret) -> Secret {
        from_value(self.put(Kind::Secrets, to_value(secret)))
    }

    pub fn put_configmap(&self, cm: &ConfigMap) -> ConfigMap {
        from_value(self.put(Kind::ConfigMaps, to_value(cm)))
    }

    pub fn put_pod(&self, pod: &Pod) -> Pod {
        from_value(self.put(Kind::Pods, to_value(pod)))
    }

    pub fn put_service_account(&self, sa: &ServiceAccount) -> ServiceAccount {
        from_value(self.put(Kind::ServiceAccounts, to_value(sa)))
    }

    pub fn get_service_account(&self, namespace: &str, name: &str) -> Option<ServiceAccount> {
        self.get(Kind::ServiceAccounts, namespace, name)
            .map(from_value)
    }

    /// The stored object (namespace "" for cluster-scoped kinds).
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        if kind == Kind::EventsV1 {
            return self
                .get(Kind::Events, namespace, name)
                .map(|e| events::to_v1(&e));
        }
        let ns = if kind.namespaced() { namespace } else { "" };
        self.shared
            .lock_store()
            .object(kind, ns, name)
            .map(|o| (*o).clone())
    }

    pub fn get_secret(&self, namespace: &str, name: &str) -> Option<Secret> {
        self.get(Kind::Secrets, namespace, name).map(from_value)
    }

    pub fn get_configmap(&self, namespace: &str, name: &str) -> Option<ConfigMap> {
        self.get(Kind::ConfigMaps, namespace, name).map(from_value)
    }

    pub fn get_namespace(&self, name: &str) -> Option<Namespace> {
        self.get(Kind::Namespaces, "", name).map(from_value)
    }

    pub fn list_secrets(&self, namespace: Option<&str>) -> Vec<Secret> {
        self.list(Kind::Secrets, namespace)
            .into_iter()
            .map(from_value)
            .collect()
    }

    /// core/v1 Events (those created through events.k8s.io/v1 included).
    pub fn list_events(&self, namespace: Option<&str>) -> Vec<CoreEvent> {
        self.list(Kind::Events, namespace)
            .into_iter()
            .map(from_value)
            .collect()
    }

    /// Every stored object of `kind` (in `namespace` if given), in storage order.
    pub fn list(&self, kind: Kind, namespace: Option<&str>) -> Vec<Value> {
        if kind == Kind::EventsV1 {
            return self
                .list(Kind::Events, namespace)
                .iter()
                .map(events::to_v1)
                .collect();
        }
        self.shared
            .lock_store()
            .list_objects(kind, namespace)
            .into_iter()
            .map(|o| (*o).clone())
            .collect()
    }

    /// Removes an object without any check (a DELETED event is emitted).
    pub fn remove(&self, kind: Kind, namespace: &str, name: &str) -> bool {
        let kind = if kind == Kind::EventsV1 {
            Kind::Events
        } else {
            kind
        };
        self.shared.lock_store().remove(kind, namespace, name)
    }

    /// Marks a namespace Terminating (deletionTimestamp, status.phase) as a DELETE does.
    /// It stays so until [`finalize_namespace`](Self::finalize_namespace).
    pub fn terminate_namespace(&self, name: &str) -> Option<Namespace> {
        self.shared
            .lock_store()
            .terminate_namespace(name)
            .map(from_value)
    }

    /// Ends a namespace: deletes everything in it, then the namespace itself.
    pub fn finalize_namespace(&self, name: &str) -> bool {
        self.shared.lock_store().finalize_namespace(name)
    }

    /// The current (global) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock_store().resource_version()
    }

    // ---- watch knobs ----

    /// Forgets the retained events: any watch or continue token from an earlier
    /// resourceVersion gets 410 Gone from now on.
    pub fn compact(&self) {
        self.shared.lock_store().compact();
    }

    /// Keeps at most `events` change events for watch resumption.
    pub fn set_watch_window(&self, events: usize) {
        self.shared.lock_store().set_window(events);
    }

    pub fn set_bookmark_interval(&self, every: Duration) {
        *lock(&self.shared.bookmark_interval) = every;
    }

    /// Closes the TCP connection of every open watch without ending the chunked stream.
    pub fn drop_watches(&self) {
        self.shared.drop_watches.send_modify(|g| *g += 1);
    }

    /// Ends every open watch cleanly (as when timeoutSeconds expires).
    pub fn close_watches(&self) {
        self.shared.close_watches.send_modify(|g| *g += 1);
    }

    /// Watches currently streaming (all resources).
    pub fn active_watches(&self) -> usize {
        lock(&self.shared.active_watches).values().sum()
    }

    /// Watches currently streaming on one resource (`Kind::EventsV1` counts apart).
    pub fn active_watches_of(&self, kind: Kind) -> usize {
        lock(&self.shared.active_watches)
            .get(&kind)
            .copied()
            .unwrap_or(0)
    }

    /// Polls `cond` until it holds, panicking after `deadline` (tests must not sleep).
    pub async fn wait_until(
        &self,
        what: &str,
        deadline: Duration,
        mut cond: impl FnMut(&Self) -> bool,
    ) {
        let start = std::time::Instant::now();
        while !cond(self) {
            assert!(
                start.elapsed() < deadline,
                "timed out after {deadline:?} waiting for: {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // ---- fault knobs ----

    /// Applies `fault` to the next `times` matching requests (None: until cleared).
    /// Returns an id for [`clear_fault`](Self::clear_fault).
    pub fn fail(&self, when: Match, fault: Fault, times: Option<u32>) -> u64 {
        let mut faults = self.shared.lock_faults();
        faults.next_id += 1;
        let id = faults.next_id;
        faults.rules.push(Rule {
            id,
            when,
            fault,
            remaining: times,
        });
        id
    }

    /// Delays matching requests by `delay` (None: until cleared).
    pub fn delay(&self, when: Match, delay: Duration, times: Option<u32>) -> u64 {
        self.fail(when, Fault::Latency(delay), times)
    }

    pub fn clear_fault(&self, id: u64) {
        self.shared.lock_faults().rules.retain(|r| r.id != id);
    }

    pub fn clear_faults(&self) {
        self.shared.lock_faults().rules.clear();
    }

    // ---- request log ----

    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.shared.lock_log().clone()
    }

    pub fn clear_requests(&self) {
        self.shared.lock_log().clear();
    }

    /// How many logged requests match.
    pub fn count(&self, when: &Match) -> usize {
        self.shared
            .lock_log()
            .iter()
            .filter(|r| when.matches(r))
            .count()
    }

    /// Resource requests that are not watches (get/list/create/update/patch/delete).
    pub fn api_calls(&self) -> usize {
        self.shared
            .lock_log()
            .iter()
            .filter(|r| r.is_api_call())
            .count()
    }
}

fn kubeconfig_yaml(addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: http://{addr}
users:
- name: fake
  user:
    token: fake-token
contexts:
- name: fake
  context:
    cluster: fake
    user: fake
    namespace: default
current-context: fake
"
    )
}

async fn accept_loop(listener: TcpListener, router: Router, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                tokio::spawn(serve_connection(stream, router.clone(), shutdown.clone()));
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// One connection, HTTP/1.1, which a fault can close at any point without an answer.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let kill = Arc::new(Notify::new());
    let handle = ConnHandle(kill.clone());
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(handle.clone());
        router.clone().oneshot(req)
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = conn => {}
        _ = kill.notified() => {}
        _ = shutdown.changed() => {}
    }
}
