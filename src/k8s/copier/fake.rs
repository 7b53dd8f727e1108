//! An in-memory [`SecretWrites`] and a copier wired to hand-fed caches, for the queue and
//! repair tests. Errors are the apiserver's `Status` bodies (500 InternalError, 409 Conflict),
//! so the copier classifies them exactly as it does real ones.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::DeleteParams;
use kube::runtime::events::Event;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

use super::{Copier, SecretWrites, copy};
use crate::k8s::namespaces::NamespaceCache;
use crate::k8s::secrets::{SecretCaches, Trigger};
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::state::{BoxFuture, Health, PolicyStore};

pub(super) const NAME: &str = "regcred";
pub(super) const SOURCE_NS: &str = "creds";
pub(super) const TARGET_NS: &str = "team-a";

/// What one call should answer.
#[derive(Debug, Clone, Copy)]
pub(super) enum Answer {
    Ok,
    Status(u16, &'static str),
    /// Never answers (the copier's own deadline must end it).
    Hang,
}

#[derive(Debug, Clone)]
pub(super) struct Call {
    pub(super) at: Instant,
    pub(super) verb: &'static str,
    pub(super) namespace: String,
    pub(super) body: Option<Secret>,
    pub(super) params: Option<DeleteParams>,
}

#[derive(Default)]
pub(super) struct FakeWrites {
    /// Scripted answers per verb, used in order; once used up, every call succeeds.
    script: Mutex<BTreeMap<&'static str, VecDeque<Answer>>>,
    calls: Mutex<Vec<Call>>,
    /// What `get` returns.
    pub(super) latest: Mutex<Option<Secret>>,
}

impl FakeWrites {
    pub(super) fn script(&self, verb: &'static str, answers: &[Answer]) {
        self.script
            .lock()
            .unwrap()
            .entry(verb)
            .or_default()
            .extend(answers.iter().cloned());
    }

    pub(super) fn calls(&self, verb: &str) -> Vec<Call> {
        let calls = self.calls.lock().unwrap();
        calls.iter().filter(|c| c.verb == verb).cloned().collect()
    }

    fn answer(
        &self,
        verb: &'static str,
        namespace: &str,
        body: Option<&Secret>,
        params: Option<&DeleteParams>,
    ) -> BoxFuture<'static, Result<(), kube::Error>> {
        self.calls.lock().unwrap().push(Call {
            at: Instant::now(),
            verb,
            namespace: namespace.to_string(),
            body: body.cloned(),
            params: params.cloned(),
        });
        let next = self
            .script
            .lock()
            .unwrap()
            .get_mut(verb)
            .and_then(VecDeque::pop_front)
            .unwrap_or(Answer::Ok);
        Box::pin(async move {
            match next {
                Answer::Ok => Ok(()),
                Answer::Status(code, reason) => Err(kube::Error::Api(
                    kube::core::Status::failure("scripted", reason)
                        .with_code(code)
                        .boxed(),
                )),
                Answer::Hang => std::future::pending().await,
            }
        })
    }
}

impl SecretWrites for FakeWrites {
    fn create<'a>(
        &'a self,
        namespace: &'a str,
        secret: &'a Secret,
    ) -> BoxFuture<'a, Result<(), kube::Error>> {
        self.answer("create", namespace, Some(secret), None)
    }

    fn replace<'a>(
        &'a self,
        namespace: &'a str,
        _name: &'a str,
        secret: &'a Secret,
    ) -> BoxFuture<'a, Result<(), kube::Error>> {
        self.answer("replace", namespace, Some(secret), None)
    }

    fn get<'a>(
        &'a self,
        namespace: &'a str,
        _name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Secret>, kube::Error>> {
        let answer = self.answer("get", namespace, None, None);
        let latest = self.latest.lock().unwrap().clone();
        Box::pin(async move { answer.await.map(|()| latest) })
    }

    fn delete<'a>(
        &'a self,
        namespace: &'a str,
        _name: &'a str,
        params: &'a DeleteParams,
    ) -> BoxFuture<'a, Result<(), kube::Error>> {
        self.answer("delete", namespace, None, Some(params))
    }

    fn publish<'a>(
        &'a self,
        _event: &'a Event,
        reference: &'a ObjectReference,
    ) -> BoxFuture<'a, Result<(), kube::Error>> {
        let namespace = reference.namespace.clone().unwrap_or_default();
        self.answer("event", &namespace, None, None)
    }
}

pub(super) fn pull_secret(namespace: &str, data: &[u8]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(NAME.into()),
            namespace: Some(namespace.into()),
            uid: Some(format!("uid-{namespace}")),
            resource_version: Some("1".into()),
            ..ObjectMeta::default()
        },
        type_: Some(copy::TYPE_DOCKERCONFIGJSON.into()),
        data: Some(BTreeMap::from([(
            ".dockerconfigjson".into(),
            ByteString(data.to_vec()),
        )])),
        ..Secret::default()
    }
}

pub(super) fn policy(secret: &str, source_namespace: &str) -> Policy {
    let text = format!(
        "sourceNamespace: {source_namespace}\nrules:\n  - name: r\n    registries: [\"registry.example.com\"]\n    secret: {secret}\n"
    );
    Policy::parse(&text, "test").expect("valid policy")
}

/// A copier over a fake API with caches the test fills by hand.
pub(super) struct Harness {
    pub(super) copier: Arc<Copier>,
    pub(super) writes: Arc<FakeWrites>,
    pub(super) policy: Arc<PolicyStore>,
    pub(super) triggers: UnboundedSender<Trigger>,
    secrets: Writer<Secret>,
}

impl Harness {
    /// Source `creds/regcred` in the cache, namespace `team-a` known, the copier's
    /// background loop running.
    pub(super) fn start() -> Self {
        crate::install_crypto_provider();
        let namespaces = Arc::new(NamespaceCache::new());
        namespaces.apply(&watcher::Event::Apply(Namespace {
            metadata: ObjectMeta {
                name: Some(TARGET_NS.into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        }));
        // Never called: no watch is started, the store below is handed in directly.
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("a URL"));
        let client = kube::Client::try_from(config).expect("a client");
        let (trigger_tx, trigger_rx) = tokio::sync::mpsc::unbounded_channel();
        let secrets = Arc::new(SecretCaches::new(
            client,
            Arc::new(Health::default()),
            trigger_tx.clone(),
        ));
        let (store, mut writer) = reflector::store();
        writer.apply_watcher_event(&watcher::Event::Apply(pull_secret(SOURCE_NS, b"v1")));
        secrets.insert_synced(NAME, SOURCE_NS, store);
        let policy = Arc::new(PolicyStore::new());
        policy.set(self::policy(NAME, SOURCE_NS));
        let writes = Arc::new(FakeWrites::default());
        let copier = Copier::with_writes(
            writes.clone(),
            policy.clone(),
            namespaces,
            secrets,
            Arc::new(Metrics::new()),
        );
        tokio::spawn(copier.clone().run(trigger_rx));
        Self {
            copier,
            writes,
            policy,
            triggers: trigger_tx,
            secrets: writer,
        }
    }

    /// As the watch would: the Secret appears (or changes) in the cache, made lean (a copy
    /// without its data).
    pub(super) fn cache(&mut self, mut secret: Secret) {
        crate::k8s::lean::secret(&mut secret, SOURCE_NS);
        self.secrets
            .apply_watcher_event(&watcher::Event::Apply(secret));
    }

    /// Waits (in virtual time) until `verb` has been called `n` times.
    pub(super) async fn until_calls(&self, verb: &str, n: usize) -> Vec<Call> {
        let deadline = Instant::now() + std::time::Duration::from_secs(600);
        loop {
            let calls = self.writes.calls(verb);
            if calls.len() >= n {
                return calls;
            }
            assert!(
                Instant::now() < deadline,
                "{verb} called {} times, wanted {n}",
                calls.len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}
