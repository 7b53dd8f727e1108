//! Finding the cluster the way kubectl does (`--kubeconfig`, `$KUBECONFIG`, `~/.kube/config`,
//! then the in-cluster ServiceAccount; `--context`), with errors a person can act on.

use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig};
use thiserror::Error;

use crate::cli::ClusterArgs;

#[derive(Debug, Error)]
pub(crate) enum ConnectError {
    #[error(
        "no kubeconfig found (looked in {looked}) and not running in a cluster (KUBERNETES_SERVICE_HOST is not set); pass --kubeconfig FILE or set KUBECONFIG"
    )]
    NoConfig { looked: String },
    #[error("cannot use kubeconfig {path}: {message}")]
    BadConfig { path: String, message: String },
    #[error("cannot use the in-cluster ServiceAccount: {0}")]
    InCluster(String),
    #[error("cannot build a Kubernetes client for {server}: {message}")]
    Client { server: String, message: String },
    #[error("cannot reach the API server at {server}{context}: {message}")]
    Unreachable {
        server: String,
        context: String,
        message: String,
    },
}

/// The kubeconfig files kubectl would read, in order, and whether any exists.
fn candidates(args: &ClusterArgs) -> Vec<PathBuf> {
    if let Some(path) = &args.kubeconfig {
        return vec![path.clone()];
    }
    match std::env::var_os("KUBECONFIG") {
        Some(value) if !value.is_empty() => std::env::split_paths(&value)
            .filter(|p| !p.as_os_str().is_empty())
            .collect(),
        _ => std::env::home_dir()
            .map(|home| vec![home.join(".kube").join("config")])
            .unwrap_or_default(),
    }
}

fn looked_in(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "no home directory, KUBECONFIG unset".to_string();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The client configuration for `args`.
pub(crate) async fn config(args: &ClusterArgs) -> Result<kube::Config, ConnectError> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..KubeConfigOptions::default()
    };
    let paths = candidates(args);
    let bad = |message: String| ConnectError::BadConfig {
        path: looked_in(&paths),
        message,
    };
    if let Some(path) = &args.kubeconfig {
        let kubeconfig = Kubeconfig::read_from(path).map_err(|e| bad(root_cause(&e)))?;
        return kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| bad(root_cause(&e)));
    }
    if paths.iter().any(|p| p.exists()) || args.context.is_some() {
        return kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| bad(root_cause(&e)));
    }
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
        return Err(ConnectError::NoConfig {
            looked: looked_in(&paths),
        });
    }
    kube::Config::incluster().map_err(|e| ConnectError::InCluster(root_cause(&e)))
}

/// A client for `args` that has reached the API server once, so that a wrong address or a
/// server that is down is reported here, naming it, and not as the failure of some request.
pub(crate) async fn connect(args: &ClusterArgs) -> Result<kube::Client, ConnectError> {
    Ok(connect_in_context(args).await?.0)
}

/// [`connect`], and the namespace of the context (kubectl's default for `-n`).
pub(crate) async fn connect_in_context(
    args: &ClusterArgs,
) -> Result<(kube::Client, String), ConnectError> {
    let config = config(args).await?;
    let namespace = config.default_namespace.clone();
    let server = config.cluster_url.to_string();
    let server = server.trim_end_matches('/').to_string();
    let client = kube::Client::try_from(config).map_err(|e| ConnectError::Client {
        server: server.clone(),
        message: root_cause(&e),
    })?;
    if let Err(e) = client.apiserver_version().await {
        return Err(ConnectError::Unreachable {
            server,
            context: args
                .context
                .as_deref()
                .map(|c| format!(" (context {c})"))
                .unwrap_or_default(),
            message: root_cause(&e),
        });
    }
    Ok((client, namespace))
}

/// The innermost cause of an error: for a refused connection "Connection refused (os error
/// 111)" rather than the wrappers' "client error (Connect)".
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
