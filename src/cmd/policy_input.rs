//! The policy a one-shot command (`audit`, `diagnose`) reads once: `--policy FILE`, or
//! `--policy-configmap NAMESPACE/NAME` from the cluster (the key `serve` watches).

use std::path::Path;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use thiserror::Error;

use crate::k8s::POLICY_KEY;
use crate::policy::Policy;

#[derive(Debug, Error)]
pub(crate) enum PolicyInputError {
    #[error("cannot read {path}: {message}")]
    ReadPolicy { path: String, message: String },
    #[error("--policy-configmap must be NAMESPACE/NAME, got {0:?}")]
    ConfigMapRef(String),
    #[error("ConfigMap {0} has no key `{key}`", key = POLICY_KEY)]
    NoPolicyKey(String),
    #[error("cannot read ConfigMap {reference}: {message}")]
    Api { reference: String, message: String },
    #[error("{0}")]
    Policy(#[from] crate::policy::PolicyError),
}

/// The API server's own message and code, or the client's error.
pub(crate) fn api_message(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => format!("{} ({})", status.message, status.code),
        other => other.to_string(),
    }
}

/// The policy from `file` or `configmap`; `None` when neither is given.
pub(crate) async fn load_policy(
    file: Option<&Path>,
    configmap: Option<&str>,
    client: &kube::Client,
) -> Result<Option<Policy>, PolicyInputError> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyInputError::ReadPolicy {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        return Ok(Some(Policy::parse(&text, &path.display().to_string())?));
    }
    let Some(reference) = configmap else {
        return Ok(None);
    };
    let (ns, name) = reference
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
        .ok_or_else(|| PolicyInputError::ConfigMapRef(reference.to_string()))?;
    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .map_err(|e| PolicyInputError::Api {
            reference: reference.to_string(),
            message: api_message(&e),
        })?;
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(POLICY_KEY))
        .ok_or_else(|| PolicyInputError::NoPolicyKey(reference.to_string()))?;
    Ok(Some(Policy::parse(
        text,
        &format!("configmap {reference}"),
    )?))
}
