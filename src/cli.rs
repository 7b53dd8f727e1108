//! Command-line definitions. Parsing only: every subcommand is run by its module under `cmd/`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "pullsecret-injector",
    version,
    about = "Gives every Pod the image pull secrets its images need"
)]
pub struct Cli {
    /// Log format.
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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the admission webhook (HTTPS) with health and metrics on a plain port.
    Serve(ServeArgs),
    /// Offline: answer an AdmissionReview (or a bare Pod) the way `serve` would.
    Review(ReviewArgs),
    /// Show how one image is normalized and which rules and secrets it gets.
    Explain(ExplainArgs),
    /// Validate a policy file.
    Check(CheckArgs),
    /// Write a CA and a serving certificate for `<service>.<namespace>.svc`.
    Certs(CertsArgs),
    /// Make, lint, match and verify registry pull secrets.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Audit a cluster: registry secrets, uncovered Pods, drifted copies, rules that cannot work.
    Audit(AuditArgs),
    /// Explain, per container, why the kubelet pulls with or without working credentials.
    #[command(subcommand)]
    Diagnose(DiagnoseCommand),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Policy file (YAML); reloaded when it changes.
    #[arg(long, value_name = "FILE", conflicts_with = "policy_configmap")]
    pub policy: Option<PathBuf>,
    /// Name of the policy ConfigMap (key `policy.yaml`) in the webhook's namespace; watched live.
    #[arg(long, value_name = "NAME")]
    pub policy_configmap: Option<String>,
    /// The webhook's own namespace (always excluded from injection).
    #[arg(long, env = "POD_NAMESPACE", default_value = "pullsecret-injector")]
    pub namespace: String,
    /// PEM certificate chain served to the API server; reloaded when it changes on disk.
    #[arg(long, value_name = "FILE", required_unless_present = "self_signed")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE", required_unless_present = "self_signed")]
    pub tls_key: Option<PathBuf>,
    /// Generate a CA and serving certificate for a local try (prints where the CA is).
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    pub self_signed: bool,
    /// Where --self-signed writes ca.crt, tls.crt and tls.key.
    #[arg(long, value_name = "DIR")]
    pub self_signed_dir: Option<PathBuf>,
    /// HTTPS address for /mutate.
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Plain HTTP address for /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub admin_listen: SocketAddr,
    /// How often certificate and policy files are checked for changes.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub reload_interval: Duration,
    /// Time budget for all Secret copies of one admission request.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub copy_deadline: Duration,
    /// Time a client gets for the TLS handshake and for sending each request's headers.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub header_read_timeout: Duration,
    /// How long in-flight requests get to finish after SIGTERM.
    #[arg(long, value_parser = parse_duration, default_value = "20s")]
    pub shutdown_grace: Duration,
    /// How long a copy that no rule gives its namespace any more (and that nothing there
    /// references) is kept before it is deleted.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub prune_grace: Duration,
    /// Never delete copies (they stay when rules stop giving them; `audit` reports them).
    #[arg(long)]
    pub no_prune: bool,
    /// Do not talk to a cluster even if a kubeconfig is found: patch only, copy nothing.
    #[arg(long, conflicts_with = "policy_configmap")]
    pub no_cluster: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum ReviewOutput {
    /// The AdmissionReview response, as `serve` answers it.
    #[default]
    Response,
    /// The Pod after the patch is applied.
    Patched,
}

#[derive(Debug, Args)]
pub struct ReviewArgs {
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
    /// Namespace of a bare Pod (an AdmissionReview carries its own).
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Labels of that namespace, for rule selectors: k=v,k2=v2.
    #[arg(long, value_name = "K=V,...", value_parser = parse_labels, default_value = "")]
    pub namespace_labels: Labels,
    /// The webhook's own namespace (always excluded), as `serve --namespace`.
    #[arg(long, env = "POD_NAMESPACE", default_value = "pullsecret-injector")]
    pub webhook_namespace: String,
    #[arg(long, value_enum, default_value_t = ReviewOutput::Response)]
    pub output: ReviewOutput,
    /// AdmissionReview (JSON) or bare Pod (JSON or YAML); `-` is stdin.
    #[arg(default_value = "-")]
    pub input: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum TextOrJson {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    #[arg(long)]
    pub image: String,
    #[arg(long, default_value = "default")]
    pub namespace: String,
    #[arg(long, value_name = "K=V,...", value_parser = parse_labels, default_value = "")]
    pub namespace_labels: Labels,
    #[arg(long, env = "POD_NAMESPACE", default_value = "pullsecret-injector")]
    pub webhook_namespace: String,
    #[arg(short = 'o', long, value_enum, default_value_t = TextOrJson::Text)]
    pub output: TextOrJson,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
}

#[derive(Debug, Args)]
pub struct CertsArgs {
    #[arg(long)]
    pub service: String,
    #[arg(long)]
    pub namespace: String,
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Validity of the serving certificate in days (the CA gets ten times as long).
    #[arg(long, default_value_t = 365)]
    pub days: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SecretType {
    /// kubernetes.io/dockerconfigjson, data key .dockerconfigjson
    Dockerconfigjson,
    /// kubernetes.io/dockercfg, data key .dockercfg (legacy)
    Dockercfg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum YamlOrJson {
    Yaml,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Print a pull Secret manifest that the kubelet will use.
    Create(SecretCreateArgs),
    /// Report problems the kubelet would have with a Secret or docker config.
    Lint(SecretLintArgs),
    /// Which credentials the kubelet would offer for an image, in its order.
    Match(SecretMatchArgs),
    /// Authenticate to the registry with the matched credentials, as a runtime would.
    Verify(SecretVerifyArgs),
}

#[derive(Debug, Args)]
pub struct SecretCreateArgs {
    pub name: String,
    /// Registry key, e.g. registry.gitlab.com or https://index.docker.io/v1/.
    #[arg(long)]
    pub server: Option<String>,
    #[arg(long, requires = "password_stdin")]
    pub username: Option<String>,
    /// Read the password or token from stdin.
    #[arg(long)]
    pub password_stdin: bool,
    #[arg(long)]
    pub email: Option<String>,
    /// Build from a `docker login` config.json (only `auths` is kept).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["username", "password_stdin", "email"])]
    pub from_docker_config: Option<PathBuf>,
    /// Mint an ECR credential in REGION with the caller's AWS identity (default chain).
    #[arg(long, value_name = "REGION", group = "minted", conflicts_with_all = ["server", "username", "password_stdin", "email", "from_docker_config", "secret_type"])]
    pub from_ecr: Option<String>,
    /// With --from-ecr: the registry (AWS account) ids; default the caller's account.
    #[arg(long = "registry-id", value_name = "ACCOUNT", requires = "from_ecr")]
    pub registry_ids: Vec<String>,
    /// Mint a Google access token (Application Default Credentials) for these registries.
    #[arg(long, value_name = "REGISTRY,...", value_delimiter = ',', group = "minted", conflicts_with_all = ["server", "username", "password_stdin", "email", "from_docker_config", "secret_type"])]
    pub from_gar: Vec<String>,
    /// Mint an ACR refresh token for REGISTRY with the caller's Entra identity.
    #[arg(long, value_name = "REGISTRY", group = "minted", conflicts_with_all = ["server", "username", "password_stdin", "email", "from_docker_config", "secret_type"])]
    pub from_acr: Option<String>,
    #[arg(long)]
    pub namespace: Option<String>,
    #[arg(long = "type", value_enum, default_value_t = SecretType::Dockerconfigjson)]
    pub secret_type: SecretType,
    #[arg(short = 'o', long, value_enum, default_value_t = YamlOrJson::Yaml)]
    pub output: YamlOrJson,
}

#[derive(Debug, Args)]
pub struct SecretLintArgs {
    /// Secret manifest(s) (YAML or JSON) or a docker config; `-` is stdin.
    #[arg(default_value = "-")]
    pub input: String,
    #[arg(short = 'o', long, value_enum, default_value_t = TextOrJson::Text)]
    pub output: TextOrJson,
}

#[derive(Debug, Args)]
pub struct SecretMatchArgs {
    #[arg(long)]
    pub image: String,
    /// Take --image as the kubelet's lookup string (`registry/repository`) without parsing
    /// or normalizing it.
    #[arg(long)]
    pub raw_target: bool,
    #[arg(default_value = "-")]
    pub input: String,
    #[arg(short = 'o', long, value_enum, default_value_t = TextOrJson::Text)]
    pub output: TextOrJson,
}

#[derive(Debug, Args)]
pub struct SecretVerifyArgs {
    #[arg(long)]
    pub image: String,
    #[arg(default_value = "-")]
    pub input: String,
    /// PEM CA bundle for a private registry.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    #[arg(long)]
    pub insecure_skip_tls_verify: bool,
    /// Use plain HTTP (for a registry on localhost without TLS).
    #[arg(long)]
    pub plain_http: bool,
    #[arg(long, value_parser = parse_duration, default_value = "15s")]
    pub timeout: Duration,
    #[arg(short = 'o', long, value_enum, default_value_t = TextOrJson::Text)]
    pub output: TextOrJson,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[arg(long, value_name = "FILE", conflicts_with = "policy_configmap")]
    pub policy: Option<PathBuf>,
    /// NAMESPACE/NAME of the policy ConfigMap.
    #[arg(long, value_name = "NS/NAME")]
    pub policy_configmap: Option<String>,
    #[arg(short = 'o', long, value_enum, default_value_t = TextOrJson::Text)]
    pub output: TextOrJson,
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
    pub name: String,
    /// The Pod's namespace (default: the kubeconfig context's namespace).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub options: DiagnoseOptions,
}

#[derive(Debug, Args)]
pub struct DiagnoseNamespaceArgs {
    pub namespace: String,
    /// Every Pod of the namespace, not only those waiting on an image pull.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub options: DiagnoseOptions,
}

#[derive(Debug, Args)]
pub struct DiagnoseOptions {
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the current context).
    #[arg(long)]
    pub context: Option<String>,
    /// Policy file, to say which rule covers each image.
    #[arg(long, value_name = "FILE", conflicts_with = "policy_configmap")]
    pub policy: Option<PathBuf>,
    /// NAMESPACE/NAME of the policy ConfigMap (key `policy.yaml`), read from the cluster.
    #[arg(long, value_name = "NS/NAME")]
    pub policy_configmap: Option<String>,
    /// Also authenticate to each registry with the credential the kubelet would send.
    #[arg(long)]
    pub verify: bool,
    /// With --verify: PEM CA bundle for a private registry.
    #[arg(long, value_name = "FILE", requires = "verify")]
    pub ca_file: Option<PathBuf>,
    #[arg(long, requires = "verify")]
    pub insecure_skip_tls_verify: bool,
    /// With --verify: plain HTTP (a registry on localhost without TLS).
    #[arg(long, requires = "verify")]
    pub plain_http: bool,
    /// With --verify: time limit per registry request.
    #[arg(long, value_parser = parse_duration, default_value = "15s")]
    pub timeout: Duration,
    #[arg(short = 'o', long, value_enum, default_value_t = TextOrJson::Text)]
    pub output: TextOrJson,
}

/// Namespace labels given on the command line.
pub type Labels = std::collections::BTreeMap<String, String>;

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

/// Durations as `500ms`, `2s`, `1m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 2s or 1m"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" | "" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?} is not a valid duration"));
    }
    Ok(Duration::from_secs_f64(secs))
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
}
