//! `serve`: the webhook. Loads the serving certificate and the policy, keeps both current by
//! polling their files, connects the cluster side when there is a cluster, and serves until
//! SIGTERM or SIGINT.
//!
//! Once both listeners are bound it logs one line with their addresses (message `listening`,
//! fields `https` and `admin`), so `--listen 127.0.0.1:0` can be used and the port read back:
//!
//! ```text
//! 2026-11-22T17:40:00.123456Z  INFO pullsecret_injector::cmd::serve: listening https=127.0.0.1:43121 admin=127.0.0.1:43122
//! {"timestamp":"…","level":"INFO","message":"listening","https":"127.0.0.1:43121","admin":"127.0.0.1:43122","target":"pullsecret_injector::cmd::serve"}
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use sha2::{Digest, Sha256};

use crate::cli::ServeArgs;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::server::{self, Listeners, ServeOptions};
use crate::state::{
    AppState, Health, NamespaceLabels, PolicyStore, SecretEnsurer, StaticNamespaces,
};
use crate::tls::{self, CertReloader};

/// Service name used in the names of a `--self-signed` certificate.
const SELF_SIGNED_SERVICE: &str = "pullsecret-injector";

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    if args.policy.is_none() && args.policy_configmap.is_none() {
        anyhow::bail!("serve needs a policy: --policy FILE or --policy-configmap NAME");
    }

    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let policy = Arc::new(PolicyStore::new());
    health.pending("policy", "no policy loaded yet");

    let wiring = ClusterWiring {
        policy: policy.clone(),
        health: health.clone(),
        metrics: metrics.clone(),
        webhook_namespace: args.namespace.clone(),
        policy_configmap: args.policy_configmap.clone(),
        prune_grace: (!args.no_prune).then_some(args.prune_grace),
    };
    let cluster = connect_cluster(args.no_cluster, &args.cluster, wiring).await?;
    let cluster: Option<ClusterParts> = match cluster {
        Ok(parts) => {
            tracing::info!(
                "cluster side running: Secrets are copied into the namespaces of admitted Pods"
            );
            Some(parts)
        }
        Err(reason) => {
            if let Some(name) = &args.policy_configmap {
                anyhow::bail!(
                    "--policy-configmap {name} needs the cluster side, which is not available: {reason}"
                );
            }
            tracing::warn!(
                %reason,
                "running without a cluster: Pods are patched, but no Secret is copied and namespace selectors see no labels"
            );
            None
        }
    };
    let namespaces: Arc<dyn NamespaceLabels> = match &cluster {
        Some(parts) => parts.namespaces.clone(),
        None => Arc::new(StaticNamespaces::default()),
    };
    let ensurer: Option<Arc<dyn SecretEnsurer>> = cluster.as_ref().map(|p| p.ensurer.clone());

    // Certificates after the cluster check: a refused start leaves no generated files behind.
    let (cert_path, key_path, self_signed_ca) = certificate_files(&args)?;
    let certs = CertReloader::load_for(
        cert_path.clone(),
        key_path.clone(),
        args.tls_server_name.clone(),
    )
    .await
    .with_context(|| {
        format!(
            "cannot serve {} with {}",
            cert_path.display(),
            key_path.display()
        )
    })?;

    health.ready(
        "tls",
        format!("serving certificate sha256:{}", certs.fingerprint),
    );
    metrics.tls_certificate_expiry.set(certs.not_after);

    let state = AppState {
        policy: policy.clone(),
        namespaces,
        ensurer,
        pull_secrets: cluster.as_ref().map(|p| p.cluster.pull_secrets.clone()),
        metrics: metrics.clone(),
        health: health.clone(),
        webhook_namespace: args.namespace.as_str().into(),
        copy_deadline: args.copy_deadline,
    };

    if let Some(path) = &args.policy {
        // The first check runs at once; its outcome shows in /readyz and the logs.
        let watcher = PolicyFile::new(path.clone(), policy, metrics.clone(), health.clone());
        tokio::spawn(watcher.run(args.reload_interval));
    }

    let options = ServeOptions {
        listen: args.listen,
        admin_listen: args.admin_listen,
        header_read_timeout: args.header_read_timeout,
        shutdown_grace: args.shutdown_grace,
        limits: server::Limits {
            body_memory: args.max_body_memory,
            body_read_timeout: args.body_read_timeout,
            max_connections: args.max_connections,
            max_concurrent_streams: args.max_concurrent_streams,
            idle_timeout: args.idle_timeout,
            max_concurrent_reviews: args.max_concurrent_reviews,
        },
    };
    let listeners = Listeners::bind(&options)?;
    tracing::info!(https = %listeners.https_addr, admin = %listeners.admin_addr, "listening");
    if let Some(ca) = &self_signed_ca {
        let port = listeners.https_addr.port();
        tracing::info!(
            ca = %ca.display(),
            curl = %format!(
                "curl --cacert {} -H 'Content-Type: application/json' --data @review.json https://localhost:{port}/mutate",
                ca.display()
            ),
            "self-signed certificate in use; trust this CA to call the webhook"
        );
    }

    let tls_config = certs.rustls_config();
    tokio::spawn(certs.run(args.reload_interval, metrics, health));

    let served = server::serve(
        listeners,
        &options,
        state,
        tls_config,
        server::shutdown_signal(),
    )
    .await;
    // After the drain: requests still in flight may have needed the caches and the copier.
    if let Some(parts) = &cluster {
        parts.cluster.shutdown();
    }
    served?;
    Ok(ExitCode::SUCCESS)
}

/// The certificate and key to serve, generating them first for `--self-signed`
/// (then the CA file is returned too).
fn certificate_files(args: &ServeArgs) -> anyhow::Result<(PathBuf, PathBuf, Option<PathBuf>)> {
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        return Ok((cert.clone(), key.clone(), None));
    }
    if !args.self_signed {
        anyhow::bail!("serve needs --tls-cert and --tls-key, or --self-signed");
    }
    let dir = match &args.self_signed_dir {
        Some(dir) => dir.clone(),
        None => fresh_temp_dir()?,
    };
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    names.extend(tls::service_names(SELF_SIGNED_SERVICE, &args.namespace));
    let generated = tls::generate(&names, 365)?;
    let paths = tls::write(&dir, &generated)?;
    tracing::info!(dir = %dir.display(), ca = %paths.ca.display(), names = ?names, "generated a self-signed CA and serving certificate");
    Ok((paths.cert, paths.key, Some(paths.ca)))
}

fn fresh_temp_dir() -> anyhow::Result<PathBuf> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "pullsecret-injector-{}-{nanos}",
        std::process::id()
    ));
    // `create_dir`, not `create_dir_all`: the directory must be new, not someone else's.
    std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

// ---------------------------------------------------------------------------------------------
// CLUSTER SIDE PLUG-IN POINT
//
// `connect_cluster` decides whether there is a cluster; `start_cluster_side` is where the cluster
// side (src/k8s/) starts its watches (policy ConfigMap when `policy_configmap` is set, namespaces,
// source Secrets) and returns the namespace cache and the Secret ensurer for the request path.
// ---------------------------------------------------------------------------------------------

/// What the cluster side gets from `serve`.
pub(crate) struct ClusterWiring {
    /// Where a ConfigMap policy is installed (`PolicyStore::install`).
    pub(crate) policy: Arc<PolicyStore>,
    /// Readiness: the cluster side registers its components (`pending`, then `ready`).
    pub(crate) health: Arc<Health>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) webhook_namespace: String,
    /// `--policy-configmap`: the ConfigMap (key `policy.yaml`) in `webhook_namespace` to watch.
    pub(crate) policy_configmap: Option<String>,
    /// `--prune-grace`, or `None` with `--no-prune`.
    pub(crate) prune_grace: Option<Duration>,
}

/// What the cluster side gives the request path.
pub(crate) struct ClusterParts {
    pub(crate) namespaces: Arc<dyn NamespaceLabels>,
    pub(crate) ensurer: Arc<dyn SecretEnsurer>,
    /// Its watches and retry queue, stopped on shutdown.
    pub(crate) cluster: crate::k8s::Cluster,
}

/// `Ok(parts)` when the cluster side runs, `Err(reason)` when the server runs without a cluster.
/// An `Err` of the outer result is a start-up failure.
async fn connect_cluster(
    no_cluster: bool,
    cluster_args: &crate::cli::ClusterArgs,
    wiring: ClusterWiring,
) -> anyhow::Result<Result<ClusterParts, String>> {
    if no_cluster {
        return Ok(Err("--no-cluster was given".to_string()));
    }
    let config = match crate::kubeconfig::config(cluster_args).await {
        Ok(config) => config,
        // Asked for by name: a broken choice is a start-up failure, not a quiet fallback.
        Err(e) if cluster_args.kubeconfig.is_some() || cluster_args.context.is_some() => {
            return Err(e.into());
        }
        Err(e) => return Ok(Err(e.to_string())),
    };
    let client = kube::Client::try_from(config).context("cannot build a Kubernetes client")?;
    Ok(Ok(start_cluster_side(client, wiring).await?))
}

/// Starts the cluster side: watches (policy ConfigMap, namespaces, the policy's Secrets) and
/// the copy reconciler. Its tasks run until `Cluster::shutdown`.
async fn start_cluster_side(
    client: kube::Client,
    wiring: ClusterWiring,
) -> anyhow::Result<ClusterParts> {
    let mut config =
        crate::k8s::ClusterConfig::new(&wiring.webhook_namespace, wiring.policy_configmap);
    config.prune_grace = wiring.prune_grace;
    let cluster =
        crate::k8s::start(client, config, wiring.policy, wiring.health, wiring.metrics).await?;
    Ok(ClusterParts {
        namespaces: cluster.namespaces.clone(),
        ensurer: cluster.ensurer.clone(),
        cluster,
    })
}

// ---------------------------------------------------------------------------------------------

/// Keeps the policy in `store` in step with a file. A bad edit keeps the last good policy.
struct PolicyFile {
    path: PathBuf,
    store: Arc<PolicyStore>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    /// Digest of the content last tried (good or bad), or of the last read error.
    last_seen: Option<[u8; 32]>,
}

impl PolicyFile {
    fn new(
        path: PathBuf,
        store: Arc<PolicyStore>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Self {
        Self {
            path,
            store,
            metrics,
            health,
            last_seen: None,
        }
    }

    async fn run(mut self, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.check().await;
        }
    }

    /// Reads the file; when its content changed, parses it and installs it if it is valid.
    async fn check(&mut self) {
        let origin = self.path.display().to_string();
        let text = match read_text(&self.path).await {
            Ok(text) => text,
            Err(problem) => {
                let digest = digest(problem.as_bytes());
                if self.last_seen != Some(digest) {
                    self.last_seen = Some(digest);
                    self.rejected(&origin, std::slice::from_ref(&problem));
                }
                return;
            }
        };
        let digest = digest(text.as_bytes());
        if self.last_seen == Some(digest) {
            return;
        }
        self.last_seen = Some(digest);
        match Policy::parse(&text, &origin) {
            Ok(policy) => {
                let rules = policy.rules.len();
                let generation = self.store.install(policy, &self.metrics);
                self.health
                    .ready("policy", format!("generation {generation} from {origin}"));
                tracing::info!(file = %origin, generation, rules, "policy loaded");
            }
            Err(err) => {
                let problems: Vec<String> = err.0.iter().map(ToString::to_string).collect();
                self.rejected(&origin, &problems);
            }
        }
    }

    fn rejected(&self, origin: &str, problems: &[String]) {
        self.metrics.policy_reload_errors.inc();
        for problem in problems {
            tracing::error!(file = %origin, %problem, "policy problem");
        }
        let summary = problems.join("; ");
        if self.store.get().is_some() {
            let generation = self.store.generation();
            tracing::warn!(file = %origin, generation, "policy change rejected; the last good policy stays in use");
            // Still ready: the last good policy serves; the detail tells why it is not the file's.
            self.health.ready(
                "policy",
                format!("generation {generation} in use; {origin} rejected: {summary}"),
            );
        } else {
            tracing::warn!(file = %origin, "no valid policy yet; not ready");
            self.health
                .not_ready("policy", format!("{origin} rejected: {summary}"));
        }
    }
}

async fn read_text(path: &Path) -> Result<String, String> {
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8 text", path.display()))
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "sourceNamespace: creds\nrules:\n  - name: a\n    registries: [\"registry.example.com\"]\n    secret: a-pull\n";
    const BAD: &str =
        "sourceNamespace: creds\nrules:\n  - name: a\n    registries: []\n    secret: a-pull\n";

    fn watcher(path: &Path) -> PolicyFile {
        PolicyFile::new(
            path.to_path_buf(),
            Arc::new(PolicyStore::new()),
            Arc::new(Metrics::new()),
            Arc::new(Health::default()),
        )
    }

    #[tokio::test]
    async fn missing_then_good_then_bad_policy_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        let mut w = watcher(&path);

        w.check().await;
        assert!(w.store.get().is_none());
        assert!(!w.health.report().0, "not ready without a policy");
        assert_eq!(w.metrics.policy_reload_errors.get(), 1);
        w.check().await;
        assert_eq!(
            w.metrics.policy_reload_errors.get(),
            1,
            "the same problem counts once"
        );

        std::fs::write(&path, GOOD).unwrap();
        w.check().await;
        assert_eq!(w.store.generation(), 1);
        assert_eq!(w.metrics.policy_generation.get(), 1);
        assert!(w.health.report().0);
        w.check().await;
        assert_eq!(w.store.generation(), 1, "an unchanged file is not reloaded");

        std::fs::write(&path, BAD).unwrap();
        w.check().await;
        assert_eq!(w.store.generation(), 1, "the last good policy stays");
        assert_eq!(w.metrics.policy_reload_errors.get(), 2);
        let (ready, lines) = w.health.report();
        assert!(ready, "still serving the last good policy: {lines:?}");
        let origin = format!("{}:4:", path.display());
        assert!(
            lines
                .iter()
                .any(|l| l.contains("generation 1 in use") && l.contains(&origin)),
            "{lines:?}"
        );
    }
}
