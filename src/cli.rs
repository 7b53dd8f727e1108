//! Command-line definitions. Parsing only: every subcommand is run by its module under `cmd/`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The webhook's namespace when neither `--namespace` nor `POD_NAMESPACE` says otherwise
/// (the manifests in deploy/ and the chart's default).
pub(crate) const DEFAULT_WEBHOOK_NAMESPACE: &str = "pullsecret-injector";

/// `--version`: the crate version and the commit it was built from (build.rs).
pub(crate) const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("PSI_GIT_COMMIT"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "pullsecret-injector",
    version = VERSION,
    about = "Gives every Pod the image pull secrets its images need",
    after_help = "Every command that reads a file takes `-` for stdin; `-o json|yaml` gives \
machine-readable output. Exit codes are listed in each command's --help (2 is always a usage \
error or unreadable input)."
)]
pub struct Cli {
    /// Log format (logs go to stderr).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "PSI_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

// Parsed once at start: the size of the largest variant (serve's flags) does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the admission webhook (HTTPS) with health and metrics on a plain port.
    #[command(
        after_help = "Exit codes: 0 after a clean shutdown (SIGTERM or Ctrl-C); 2 when it cannot start."
    )]
    Serve(ServeArgs),
    /// Offline: answer an AdmissionReview (or a bare Pod) the way `serve` would.
    #[command(
        after_help = "Exit codes: 0 answer printed; 1 the input cannot be reviewed; 2 usage error, unreadable file or invalid policy."
    )]
    Review(ReviewArgs),
    /// Show how one image is normalized and which rules and secrets it gets, and why the
    /// other rules do not apply.
    #[command(
        after_help = "Exit codes: 0 answered (an invalid image is an answer too); 2 usage error, unreadable file or invalid policy."
    )]
    Explain(ExplainArgs),
    /// Validate a policy file (or the policy in a Helm values file).
    #[command(
        after_help = "Exit codes: 0 valid (warnings do not fail); 1 problems found, one FILE:LINE:COL line each on stdout; 2 the file cannot be read."
    )]
    Check(CheckArgs),
    /// Write a CA and a serving certificate for `<service>.<namespace>.svc`.
    #[command(
        after_help = "Exit codes: 0 written; 2 usage error, files already present (without --force) or not writable."
    )]
    Certs(CertsArgs),
    /// Make, lint, match and verify registry pull secrets.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Audit a cluster: registry secrets, uncovered Pods, drifted copies, rules that cannot work.
    #[command(
        after_help = "Exit codes: 0 nothing found; 1 findings; 2 the cluster or the policy cannot be read."
    )]
    Audit(AuditArgs),
    /// Explain, per container, why the kubelet pulls with or without working credentials.
    #[command(subcommand)]
    Diagnose(DiagnoseCommand),
    /// Print a shell completion script: `source <(pullsecret-injector completion bash)`.
    #[command(after_help = "Exit codes: 0 printed; 2 unknown shell.")]
    Completion(CompletionArgs),
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// How a command that talks to a cluster finds it, as kubectl does.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct ClusterArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then the
    /// in-cluster ServiceAccount).
    #[arg(long, value_name = "FILE", global = true)]
    pub(crate) kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current-context).
    #[arg(long, value_name = "NAME", global = true)]
    pub(crate) context: Option<String>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Policy file (YAML); reloaded when it changes.
    #[arg(long, value_name = "FILE", conflicts_with = "policy_configmap")]
    pub(crate) policy: Option<PathBuf>,
    /// Name of the policy ConfigMap (key `policy.yaml`) in the webhook's namespace; watched live.
    #[arg(long, value_name = "NAME")]
    pub(crate) policy_configmap: Option<String>,
    /// The webhook's own namespace (always excluded from injection).
    #[arg(
        short = 'n',
        long,
        env = "POD_NAMESPACE",
        default_value = DEFAULT_WEBHOOK_NAMESPACE
    )]
    pub(crate) namespace: String,
    #[command(flatten)]
    pub(crate) cluster: ClusterArgs,
    /// PEM certificate chain served to the API server; reloaded when it changes on disk.
    #[arg(long, value_name = "FILE", required_unless_present = "self_signed")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE", required_unless_present = "self_signed")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Generate a CA and serving certificate for a local try (prints where the CA is).
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    pub(crate) self_signed: bool,
    /// Where --self-signed writes ca.crt, tls.crt and tls.key.
    #[arg(long, value_name = "DIR")]
    pub(crate) self_signed_dir: Option<PathBuf>,
    /// HTTPS address for /mutate.
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub(crate) listen: SocketAddr,
    /// Plain HTTP address for /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub(crate) admin_listen: SocketAddr,
    /// How often certificate and policy files are checked for changes.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub(crate) reload_interval: Duration,
    /// Time budget for all Secret copies of one admission request.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub(crate) copy_deadline: Duration,
    /// Time a client gets for the TLS handshake and for sending each request's headers.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub(crate) header_read_timeout: Duration,
    /// How long in-flight requests get to finish after SIGTERM.
    #[arg(long, value_parser = parse_duration, default_value = "20s")]
    pub(crate) shutdown_grace: Duration,
    /// How long a copy that no rule gives its namespace any more (and that nothing there
    /// references) is kept before it is deleted.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub(crate) prune_grace: Duration,
    /// Never delete copies (they stay when rules stop giving them; `audit` reports them).
    #[arg(long)]
    pub(crate) no_prune: bool,
    /// Do not talk to a cluster even if a kubeconfig is found: patch only, copy nothing.
    #[arg(long, conflicts_with = "policy_configmap")]
    pub(crate) no_cluster: bool,
    /// A DNS name or IP the API server uses to reach the webhook (repeatable), e.g.
    /// `pullsecret-injector.pullsecret-injector.svc`; a certificate that does not cover it is
    /// refused at start and never installed on reload.
    #[arg(long, value_name = "NAME")]
    pub(crate) tls_server_name: Vec<String>,
    /// Request body bytes held in memory at once, across all connections (e.g. 32Mi).
    #[arg(long, value_name = "SIZE", value_parser = crate::server::parse_size, default_value = "32Mi")]
    pub(crate) max_body_memory: usize,
    /// Time a client gets to send a request's body once its headers arrived (then 408).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub(crate) body_read_timeout: Duration,
    /// Connections open at once on the webhook port; more are closed at once.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub(crate) max_connections: usize,
    /// Concurrent h2 streams per connection.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub(crate) max_concurrent_streams: u32,
    /// A webhook connection without a request for this long is closed (h2 with GOAWAY).
    #[arg(long, value_parser = parse_duration, default_value = "90s")]
    pub(crate) idle_timeout: Duration,
    /// Admission reviews decided at once; more wait up to 2s, then get a 503.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub(crate) max_concurrent_reviews: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub(crate) enum ReviewOutput {
    /// JSON; the AdmissionReview response is byte for byte what `serve` answers.
    #[default]
    Json,
    /// The same document as YAML.
    Yaml,
    /// Old spelling of `-o json`.
    #[value(hide = true)]
    Response,
    /// Old spelling of `--patched`.
    #[value(hide = true)]
    Patched,
}

#[derive(Debug, Args)]
pub struct ReviewArgs {
    /// Policy file (YAML); `-` reads it from stdin.
    #[arg(long, value_name = "FILE")]
    pub(crate) policy: PathBuf,
    /// Namespace of a bare Pod. Default: the Pod's own metadata.namespace, else `default`. A
    /// value that contradicts the Pod's (or the AdmissionReview's) namespace is an error.
    #[arg(short = 'n', long)]
    pub(crate) namespace: Option<String>,
    /// Labels of that namespace, for rule selectors: k=v,k2=v2.
    #[arg(long, value_name = "K=V,...", value_parser = parse_labels, default_value = "")]
    pub(crate) namespace_labels: Labels,
    /// The webhook's own namespace (always excluded), as `serve --namespace`.
    #[arg(long, env = "POD_NAMESPACE", default_value = DEFAULT_WEBHOOK_NAMESPACE)]
    pub(crate) webhook_namespace: String,
    /// Print the Pod after the patch instead of the AdmissionReview response.
    #[arg(long)]
    pub(crate) patched: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = ReviewOutput::Json)]
    pub(crate) output: ReviewOutput,
    /// AdmissionReview (JSON or YAML) or bare Pod (JSON or YAML); `-` is stdin.
    #[arg(default_value = "-")]
    pub(crate) input: String,
}

/// Kept for commands whose output is text or JSON only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub(crate) enum TextOrJson {
    #[default]
    Text,
    Json,
}

/// `-o`: text for people, JSON or YAML (the same document) for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub(crate) enum OutputFormat {
    #[default]
    Text,
    Json,
    Yaml,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Policy file (YAML); `-` reads it from stdin. Without it, only the image is explained.
    #[arg(long, value_name = "FILE")]
    pub(crate) policy: Option<PathBuf>,
    /// The image as written in a Pod, e.g. `nginx`, `ghcr.io/acme/tool:1.2`.
    #[arg(long)]
    pub(crate) image: String,
    /// Namespace of the Pod.
    #[arg(short = 'n', long, default_value = "default")]
    pub(crate) namespace: String,
    /// Labels of that namespace, for rule selectors: k=v,k2=v2.
    #[arg(long, value_name = "K=V,...", value_parser = parse_labels, default_value = "")]
    pub(crate) namespace_labels: Labels,
    /// The webhook's own namespace (always excluded), as `serve --namespace`.
    #[arg(long, env = "POD_NAMESPACE", default_value = DEFAULT_WEBHOOK_NAMESPACE)]
    pub(crate) webhook_namespace: String,
    /// Read the token Secrets the image gets from the cluster (their metadata only, never
    /// their data) and show each one's expiry: in the source namespace and the copy in
    /// `--namespace`. Implied by `--kubeconfig` or `--context`.
    #[arg(long)]
    pub(crate) cluster: bool,
    #[command(flatten)]
    pub(crate) cluster_args: ClusterArgs,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    pub(crate) output: OutputFormat,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["policy", "helm_values"])))]
pub struct CheckArgs {
    /// Policy file (YAML); `-` reads it from stdin.
    #[arg(long, value_name = "FILE")]
    pub(crate) policy: Option<PathBuf>,
    /// A Helm values file for charts/pullsecret-injector: checks its `policy.spec`, the policy
    /// the chart deploys. `-` reads it from stdin.
    #[arg(long, value_name = "FILE")]
    pub(crate) helm_values: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    pub(crate) output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Name of the webhook's Service.
    #[arg(long)]
    pub(crate) service: String,
    /// Namespace of that Service.
    #[arg(short = 'n', long)]
    pub(crate) namespace: String,
    /// Directory for ca.crt, ca.key, tls.crt and tls.key (created if missing).
    #[arg(long, value_name = "DIR")]
    pub(crate) out: PathBuf,
    /// Validity of the serving certificate in days (the CA gets ten times as long).
    #[arg(long, default_value_t = 365)]
    pub(crate) days: u32,
    /// DNS suffix of the cluster: the certificate is also valid for
    /// `<service>.<namespace>.svc.<cluster-domain>`.
    #[arg(long, value_name = "DOMAIN", default_value = "cluster.local")]
    pub(crate) cluster_domain: String,
    /// Replace certificate and key files already in --out (a new CA means a new caBundle).
    #[arg(long)]
    pub(crate) force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SecretType {
    /// kubernetes.io/dockerconfigjson, data key .dockerconfigjson
    #[value(alias = "kubernetes.io/dockerconfigjson")]
    Dockerconfigjson,
    /// kubernetes.io/dockercfg, data key .dockercfg (legacy)
    #[value(alias = "kubernetes.io/dockercfg")]
    Dockercfg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum YamlOrJson {
    Yaml,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Print a pull Secret manifest that the kubelet will use.
    #[command(
        after_help = "Exit codes: 0 printed; 2 usage error or unusable input (nothing is printed)."
    )]
    Create(SecretCreateArgs),
    /// Report problems the kubelet would have with a Secret or docker config.
    #[command(
        after_help = "Exit codes: 0 no problems; 1 findings (warnings or errors); 2 unreadable input."
    )]
    Lint(SecretLintArgs),
    /// Which credentials the kubelet would offer for an image, in its order.
    #[command(
        after_help = "Exit codes: 0 a credential matches; 1 none matches (anonymous pull); 2 bad input or image."
    )]
    Match(SecretMatchArgs),
    /// Authenticate to the registry with the matched credentials, as a runtime would.
    #[command(
        after_help = "Exit codes: 0 a credential authenticated and the manifest exists; 1 otherwise; 2 bad input or image."
    )]
    Verify(SecretVerifyArgs),
}

#[derive(Debug, Args)]
pub struct SecretCreateArgs {
    /// Name of the Secret (a DNS subdomain).
    pub(crate) name: String,
    /// Registry key, e.g. registry.gitlab.com or https://index.docker.io/v1/ (the default).
    #[arg(long)]
    pub(crate) server: Option<String>,
    /// User name for the registry (with --password-stdin).
    #[arg(long, requires = "password_stdin")]
    pub(crate) username: Option<String>,
    /// Read the password or token from stdin (one trailing newline is dropped).
    #[arg(long)]
    pub(crate) password_stdin: bool,
    /// E-mail address stored with the entry (the kubelet ignores it).
    #[arg(long)]
    pub(crate) email: Option<String>,
    /// Build from a `docker login` config.json (only `auths` is kept); `-` reads it from stdin.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["username", "password_stdin", "email"])]
    pub(crate) from_docker_config: Option<PathBuf>,
    /// Mint an ECR credential in REGION with the caller's AWS identity (default chain).
    #[arg(long, value_name = "REGION", group = "minted", conflicts_with_all = ["server", "username", "password_stdin", "email", "from_docker_config", "secret_type"])]
    pub(crate) from_ecr: Option<String>,
    /// With --from-ecr: the registry (AWS account) ids; default the caller's account.
    #[arg(long = "registry-id", value_name = "ACCOUNT", requires = "from_ecr")]
    pub(crate) registry_ids: Vec<String>,
    /// Mint a Google access token (Application Default Credentials) for these registries.
    #[arg(long, value_name = "REGISTRY,...", value_delimiter = ',', group = "minted", conflicts_with_all = ["server", "username", "password_stdin", "email", "from_docker_config", "secret_type"])]
    pub(crate) from_gar: Vec<String>,
    /// Mint an ACR refresh token for REGISTRY with the caller's Entra identity.
    #[arg(long, value_name = "REGISTRY", group = "minted", conflicts_with_all = ["server", "username", "password_stdin", "email", "from_docker_config", "secret_type"])]
    pub(crate) from_acr: Option<String>,
    /// metadata.namespace of the Secret (omitted when not given).
    #[arg(short = 'n', long)]
    pub(crate) namespace: Option<String>,
    /// Secret type; the full names (kubernetes.io/dockerconfigjson) work too.
    #[arg(long = "type", value_enum, default_value_t = SecretType::Dockerconfigjson)]
    pub(crate) secret_type: SecretType,
    /// Output format of the manifest.
    #[arg(short = 'o', long, value_enum, default_value_t = YamlOrJson::Yaml)]
    pub(crate) output: YamlOrJson,
}

#[derive(Debug, Args)]
pub struct SecretLintArgs {
    /// Secret manifest(s) (YAML or JSON) or a docker config; `-` is stdin.
    #[arg(default_value = "-")]
    pub(crate) input: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    pub(crate) output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct SecretMatchArgs {
    /// The image as written in a Pod.
    #[arg(long)]
    pub(crate) image: String,
    /// Take --image as the kubelet's lookup string (`registry/repository`) without parsing
    /// or normalizing it.
    #[arg(long)]
    pub(crate) raw_target: bool,
    /// Secret manifest(s) (YAML or JSON, in the Pod's imagePullSecrets order) or a docker
    /// config; `-` is stdin.
    #[arg(default_value = "-")]
    pub(crate) input: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    pub(crate) output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct SecretVerifyArgs {
    /// The image to check the manifest of.
    #[arg(long)]
    pub(crate) image: String,
    /// Secret manifest(s) (YAML or JSON) or a docker config; `-` is stdin.
    #[arg(default_value = "-")]
    pub(crate) input: String,
    /// PEM CA bundle for a private registry.
    #[arg(long, value_name = "FILE")]
    pub(crate) ca_file: Option<PathBuf>,
    /// Do not verify the registry's certificate.
    #[arg(long)]
    pub(crate) insecure_skip_tls_verify: bool,
    /// Use plain HTTP (for a registry on localhost without TLS).
    #[arg(long)]
    pub(crate) plain_http: bool,
    /// Time allowed for each request to the registry.
    #[arg(long, value_parser = parse_duration, default_value = "15s")]
    pub(crate) timeout: Duration,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    pub(crate) output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Policy file (YAML) to audit the cluster against.
    #[arg(long, value_name = "FILE", conflicts_with = "policy_configmap")]
    pub(crate) policy: Option<PathBuf>,
    /// NAMESPACE/NAME of the policy ConfigMap.
    #[arg(long, value_name = "NS/NAME")]
    pub(crate) policy_configmap: Option<String>,
    #[command(flatten)]
    pub(crate) cluster: ClusterArgs,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    pub(crate) output: OutputFormat,
}

#[derive(Debug, Subcommand)]
pub enum DiagnoseCommand {
    /// One Pod: a verdict per container (init, regular, ephemeral), the kubelet's own words.
    Pod(DiagnosePodArgs),
    /// Every Pod of a namespace not running because of image pulls, one line per container.
    Namespace(DiagnoseNamespaceArgs),
}

#[derive(Debug, Args)]
pub struct DiagnosePodArgs {
    /// Name of the Pod.
    pub(crate) name: String,
    /// The Pod's namespace (default: the kubeconfig context's namespace).
    #[arg(short = 'n', long)]
    pub(crate) namespace: Option<String>,
    #[command(flatten)]
    pub(crate) options: DiagnoseOptions,
}

#[derive(Debug, Args)]
pub struct DiagnoseNamespaceArgs {
    /// The namespace whose Pods to diagnose.
    pub(crate) namespace: String,
    /// Every Pod of the namespace, not only those waiting on an image pull.
    #[arg(long)]
    pub(crate) all: bool,
    #[command(flatten)]
    pub(crate) options: DiagnoseOptions,
}

#[derive(Debug, Args)]
pub(crate) struct DiagnoseOptions {
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster).
    #[arg(long, value_name = "FILE")]
    pub(crate) kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the current context).
    #[arg(long)]
    pub(crate) context: Option<String>,
    /// Policy file, to say which rule covers each image.
    #[arg(long, value_name = "FILE", conflicts_with = "policy_configmap")]
    pub(crate) policy: Option<PathBuf>,
    /// NAMESPACE/NAME of the policy ConfigMap (key `policy.yaml`), read from the cluster.
    #[arg(long, value_name = "NS/NAME")]
    pub(crate) policy_configmap: Option<String>,
    /// Also authenticate to each registry with the credential the kubelet would send.
    #[arg(long)]
    pub(crate) verify: bool,
    /// With --verify: PEM CA bundle for a private registry.
    #[arg(long, value_name = "FILE", requires = "verify")]
    pub(crate) ca_file: Option<PathBuf>,
    /// With --verify: do not verify the registry's certificate.
    #[arg(long, requires = "verify")]
    pub(crate) insecure_skip_tls_verify: bool,
    /// With --verify: plain HTTP (a registry on localhost without TLS).
    #[arg(long, requires = "verify")]
    pub(crate) plain_http: bool,
    /// With --verify: time limit per registry request.
    #[arg(long, value_parser = parse_duration, default_value = "15s")]
    pub(crate) timeout: Duration,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = TextOrJson::Text)]
    pub(crate) output: TextOrJson,
}

/// Namespace labels given on the command line.
pub(crate) type Labels = std::collections::BTreeMap<String, String>;

fn parse_labels(s: &str) -> Result<Labels, String> {
    let mut labels = Labels::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("label {pair:?} is not key=value"))?;
        if k.is_empty() {
            return Err(format!("label {pair:?} has an empty key"));
        }
        labels.insert(k.to_string(), v.to_string());
    }
    Ok(labels)
}

/// Durations in Go syntax (`500ms`, `2s`, `1m30s`), the one parser the webhook also reads
/// the apiserver's `?timeout=` with; a bare number means seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let parsed = match s.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Some(Duration::from_secs_f64(secs)),
        Ok(_) => None,
        Err(_) => crate::admission::parse_go_duration(s),
    };
    parsed.ok_or_else(|| format!("{s:?} is not a duration like 500ms, 2s or 1m"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_and_reject_garbage() {
        let l = parse_labels("a=b, c=d").unwrap();
        assert_eq!(l.get("c").map(String::as_str), Some("d"));
        assert!(parse_labels("nope").is_err());
        assert!(parse_labels("").unwrap().is_empty());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("2x").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    /// Every flag and argument of every command says what it is for in `--help`.
    #[test]
    fn every_argument_has_help() {
        use clap::CommandFactory;
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && !arg.is_hide_set() && arg.get_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {} (no about)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "pullsecret-injector", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:#?}");
    }
}
