//! The API calls the copier makes, behind a small trait: the kube client in production, an
//! in-memory fake in the queue and repair tests. Deadlines and error classification stay in
//! the copier, so a fake that answers like the API server exercises the same paths.

use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::events::{Event, Recorder, Reporter};
use thiserror::Error;

use super::{API_TIMEOUT, copy};
use crate::state::BoxFuture;

/// Writes (and the one re-read after a 409 Conflict) on Secrets and Events.
pub(crate) trait SecretWrites: Send + Sync + 'static {
    fn create<'a>(
        &'a self,
        namespace: &'a str,
        secret: &'a Secret,
    ) -> BoxFuture<'a, Result<(), kube::Error>>;
    fn replace<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        secret: &'a Secret,
    ) -> BoxFuture<'a, Result<(), kube::Error>>;
    fn get<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Secret>, kube::Error>>;
    fn delete<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        params: &'a DeleteParams,
    ) -> BoxFuture<'a, Result<(), kube::Error>>;
    fn publish<'a>(
        &'a self,
        event: &'a Event,
        reference: &'a ObjectReference,
    ) -> BoxFuture<'a, Result<(), kube::Error>>;
}

/// The real thing: the kube client, and an Event recorder naming this replica.
pub(crate) struct KubeWrites {
    client: kube::Client,
    recorder: Recorder,
}

impl KubeWrites {
    pub(crate) fn new(client: kube::Client, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: copy::MANAGED_BY.to_string(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
        }
    }

    fn api(&self, namespace: &str) -> Api<Secret> {
        Api::namespaced(self.client.clone(), namespace)
    }
}

impl SecretWrites for KubeWrites {
    fn create<'a>(
        &'a self,
        namespace: &'a str,
        secret: &'a Secret,
    ) -> BoxFuture<'a, Result<(), kube::Error>> {
        Box::pin(async move {
            self.api(namespace)
                .create(&PostParams::default(), secret)
                .await
                .map(|_| ())
        })
    }

    fn replace<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        secret: &'a Secret,
    ) -> BoxFuture<'a, Result<(), kube::Error>> {
        Box::pin(async move {
            self.api(namespace)
                .replace(name, &PostParams::default(), secret)
                .await
                .map(|_| ())
        })
    }

    fn get<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Secret>, kube::Error>> {
        Box::pin(async move { self.api(namespace).get_opt(name).await })
    }

    fn delete<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        params: &'a DeleteParams,
    ) -> BoxFuture<'a, Result<(), kube::Error>> {
        Box::pin(async move { self.api(namespace).delete(name, params).await.map(|_| ()) })
    }

    fn publish<'a>(
        &'a self,
        event: &'a Event,
        reference: &'a ObjectReference,
    ) -> BoxFuture<'a, Result<(), kube::Error>> {
        Box::pin(self.recorder.publish(event, reference))
    }
}

#[derive(Debug, Error)]
pub(crate) enum CopyError {
    #[error("API error {code} ({reason})")]
    Api { code: u16, reason: String },
    #[error("API request failed: {0}")]
    Transport(String),
    #[error("timed out")]
    Timeout,
}

impl CopyError {
    pub(super) fn from_kube(err: kube::Error) -> Self {
        match err {
            kube::Error::Api(status) => Self::Api {
                code: status.code,
                reason: status.reason.clone(),
            },
            // The transport error text names hosts and causes, never Secret data.
            other => Self::Transport(other.to_string()),
        }
    }

    /// Short, stable label for logs and the admission warning.
    pub(super) fn label(&self) -> String {
        match self {
            Self::Api { code, reason } if reason.is_empty() => format!("API error {code}"),
            Self::Api { code, reason } => format!("API error {code} {reason}"),
            Self::Transport(_) => "API unreachable".to_string(),
            Self::Timeout => "API timeout".to_string(),
        }
    }
}

pub(super) fn api_status(err: &kube::Error) -> Option<&kube::core::Status> {
    match err {
        kube::Error::Api(status) => Some(status),
        _ => None,
    }
}

#[derive(Debug, Error)]
pub(super) enum Failure {
    #[error("conflict")]
    Conflict,
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    AlreadyExists,
    #[error(transparent)]
    Other(CopyError),
}

pub(super) async fn timed<T>(
    call: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(API_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(match api_status(&err) {
            Some(s) if s.is_conflict() => Failure::Conflict,
            Some(s) if s.is_not_found() => Failure::NotFound,
            Some(s) if s.is_already_exists() => Failure::AlreadyExists,
            _ => Failure::Other(CopyError::from_kube(err)),
        }),
        Err(_) => Err(Failure::Other(CopyError::Timeout)),
    }
}
