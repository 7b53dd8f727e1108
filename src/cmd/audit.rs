//! `audit`: read a cluster and report what the kubelet would make of its pull secrets.
//!
//! * every registry Secret (`kubernetes.io/dockerconfigjson` and `kubernetes.io/dockercfg`,
//!   listed with a `type=` field selector) and the registries (index keys) it covers;
//! * Pods with an image that matches a policy rule, or lives on a registry other than
//!   Docker Hub, but whose `imagePullSecrets` (resolved in the Pod's namespace, in order, as
//!   one keyring) offer no credential for it;
//! * managed copies (label `app.kubernetes.io/managed-by=pullsecret-injector`) that no longer
//!   match their source (annotation `pullsecret-injector.io/source`), told apart with the
//!   cluster side's content hash ([`crate::k8s::content_hash`], recorded in the annotation
//!   `pullsecret-injector.io/source-hash`): a copy whose type and data no longer match its own
//!   recorded hash was edited by hand; one whose recorded hash is not its source's hash is
//!   stale (the source was rotated or recreated since the copy was written);
//! * policy rules whose source Secret is missing, of the wrong type, broken, or does not
//!   cover the rule's own registries.
//!
//! Coverage of a rule's registry pattern (kubelet `matchImages` syntax) is decided on a
//! sample image made from the pattern: each `*` in a host label becomes `x`, a `[...]` class
//! becomes its first character, and `/x` is appended to the path. The pattern is covered
//! when the source Secret's keyring finds a credential for that sample exactly as the
//! kubelet would (so a `https://index.docker.io/v1/` key covers `docker.io` through the
//! Docker Hub fallback). A pattern covered for its sample can still be uncovered for some
//! concrete hosts when the Secret's keys are narrower globs than the pattern.
//!
//! Exit codes: 0 clean, 1 findings, 2 when the cluster or the policy cannot be read.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use kube::Api;
use kube::api::ListParams;
use serde::Serialize;
use thiserror::Error;

use crate::cli::{AuditArgs, OutputFormat};
use crate::dockerconfig::{
    self, DockerConfig, SecretDoc, Severity, TYPE_DOCKERCFG, TYPE_DOCKERCONFIGJSON, display_key,
};
use crate::k8s::{content_hash, is_managed};
use crate::keyring::Keyring;
use crate::policy::Policy;
use crate::reference::ImageRef;

pub use crate::k8s::{ANNOTATION_SOURCE, ANNOTATION_SOURCE_HASH, LABEL_MANAGED_BY, MANAGED_BY};
/// Key of the policy document in its ConfigMap.
const POLICY_KEY: &str = "policy.yaml";
/// The webhook's namespace when POD_NAMESPACE is not set (as `serve --namespace`).
const DEFAULT_WEBHOOK_NAMESPACE: &str = "pullsecret-injector";
/// Objects per list request.
const LIST_PAGE: u32 = 500;
/// Namespaces skipped for Pods when no policy says otherwise.
const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

#[derive(Debug, Error)]
pub enum AuditError {
    #[error("{0}")]
    Connect(String),
    #[error("cannot {what}: {message}")]
    Api { what: String, message: String },
    #[error("cannot read {path}: {message}")]
    ReadPolicy { path: String, message: String },
    #[error("--policy-configmap must be NAMESPACE/NAME, got {0:?}")]
    ConfigMapRef(String),
    #[error("ConfigMap {0} has no key `policy.yaml`")]
    NoPolicyKey(String),
    #[error("{0}")]
    Policy(#[from] crate::policy::PolicyError),
}

/// Everything the audit reads, so the decision is a pure function of it.
#[derive(Debug, Default, Clone)]
pub struct ClusterFacts {
    /// Registry-typed Secrets, every namespace.
    pub secrets: Vec<Secret>,
    pub pods: Vec<Pod>,
    pub namespaces: Vec<Namespace>,
    /// Each policy rule's source Secret as fetched by name (any type), keyed by name.
    pub rule_sources: BTreeMap<String, Option<Secret>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretSummary {
    pub namespace: String,
    pub name: String,
    #[serde(rename = "type")]
    pub secret_type: String,
    /// Index keys the kubelet derives, in document order.
    pub registries: Vec<String>,
    /// `namespace/name` of the source when this is a managed copy.
    #[serde(rename = "copyOf", skip_serializing_if = "Option::is_none")]
    pub copy_of: Option<String>,
    /// The kubelet cannot decode it.
    pub broken: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditFinding {
    pub severity: Severity,
    pub code: &'static str,
    /// `Secret ns/name`, `Pod ns/name`, `rule NAME`.
    pub object: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditReport {
    pub secrets: Vec<SecretSummary>,
    pub findings: Vec<AuditFinding>,
}

pub async fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let client = crate::kubeconfig::connect(&args.cluster)
        .await
        .map_err(|e| AuditError::Connect(e.to_string()))?;
    let policy = load_policy(&args, &client).await?;
    let facts = gather(&client, policy.as_ref()).await?;
    let webhook_ns =
        std::env::var("POD_NAMESPACE").unwrap_or_else(|_| DEFAULT_WEBHOOK_NAMESPACE.to_string());
    let report = audit(&facts, policy.as_ref(), &webhook_ns);
    match args.output {
        OutputFormat::Json | OutputFormat::Yaml => {
            match crate::cmd::output::render(&report, args.output == OutputFormat::Yaml) {
                Ok(s) => print!("{s}"),
                Err(e) => anyhow::bail!("cannot encode the report: {e}"),
            }
        }
        OutputFormat::Text => print_text(&report),
    }
    Ok(if report.findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn load_policy(
    args: &AuditArgs,
    client: &kube::Client,
) -> Result<Option<Policy>, AuditError> {
    if let Some(path) = &args.policy {
        let text = std::fs::read_to_string(path).map_err(|e| AuditError::ReadPolicy {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        return Ok(Some(Policy::parse(&text, &path.display().to_string())?));
    }
    let Some(reference) = &args.policy_configmap else {
        return Ok(None);
    };
    let (ns, name) = reference
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
        .ok_or_else(|| AuditError::ConfigMapRef(reference.clone()))?;
    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .map_err(|e| api_error(format!("read ConfigMap {reference}"), e))?;
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(POLICY_KEY))
        .ok_or_else(|| AuditError::NoPolicyKey(reference.clone()))?;
    Ok(Some(Policy::parse(
        text,
        &format!("configmap {reference}"),
    )?))
}

fn api_error(what: String, err: kube::Error) -> AuditError {
    let message = match &err {
        kube::Error::Api(status) => format!("{} ({})", status.message, status.code),
        other => other.to_string(),
    };
    AuditError::Api { what, message }
}

/// Lists every object, a page at a time (large clusters hold many Pods).
async fn list_all<K>(api: &Api<K>, params: ListParams, what: &str) -> Result<Vec<K>, AuditError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut items = Vec::new();
    let mut params = params.limit(LIST_PAGE);
    loop {
        let page = api
            .list(&params)
            .await
            .map_err(|e| api_error(format!("list {what}"), e))?;
        items.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(items),
        }
    }
}

async fn gather(
    client: &kube::Client,
    policy: Option<&Policy>,
) -> Result<ClusterFacts, AuditError> {
    let mut facts = ClusterFacts::default();
    let secrets = Api::<Secret>::all(client.clone());
    for t in [TYPE_DOCKERCONFIGJSON, TYPE_DOCKERCFG] {
        // Only registry Secrets: never read every Secret of the cluster.
        let params = ListParams::default().fields(&format!("type={t}"));
        let items = list_all(&secrets, params, &format!("Secrets of type {t}")).await?;
        facts.secrets.extend(items);
    }
    facts.pods = list_all(
        &Api::<Pod>::all(client.clone()),
        ListParams::default(),
        "Pods",
    )
    .await?;
    facts.namespaces = list_all(
        &Api::<Namespace>::all(client.clone()),
        ListParams::default(),
        "Namespaces",
    )
    .await?;
    if let Some(policy) = policy {
        let api = Api::<Secret>::namespaced(client.clone(), &policy.source_namespace);
        for name in policy.secret_names() {
            let secret = api.get_opt(&name).await.map_err(|e| {
                api_error(format!("read Secret {}/{name}", policy.source_namespace), e)
            })?;
            facts.rule_sources.insert(name, secret);
        }
    }
    Ok(facts)
}

fn ns_name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

fn decode_secret(secret: &Secret) -> Option<DockerConfig> {
    let doc = SecretDoc::from_k8s(secret);
    doc.kubelet_config()
        .map(|(format, bytes)| dockerconfig::decode(bytes, format))
}

/// The decision: pure over what was read.
pub fn audit(
    facts: &ClusterFacts,
    policy: Option<&Policy>,
    webhook_namespace: &str,
) -> AuditReport {
    let mut report = AuditReport::default();
    let mut by_key: HashMap<(String, String), &Secret> = HashMap::new();
    let mut decoded: HashMap<(String, String), Option<DockerConfig>> = HashMap::new();
    for secret in &facts.secrets {
        let key = ns_name(&secret.metadata);
        by_key.insert(key.clone(), secret);
        decoded.insert(key, decode_secret(secret));
    }
    let mut keys: Vec<&(String, String)> = by_key.keys().collect();
    keys.sort();
    for key in keys {
        summarize_secret(
            key,
            by_key[key],
            decoded.get(key).and_then(Option::as_ref),
            &mut report,
        );
    }
    audit_copies(facts, &by_key, &mut report);
    audit_pods(
        facts,
        policy,
        webhook_namespace,
        &by_key,
        &decoded,
        &mut report,
    );
    if let Some(policy) = policy {
        audit_rules(facts, policy, &mut report);
    }
    report
}

fn summarize_secret(
    (ns, name): &(String, String),
    secret: &Secret,
    config: Option<&DockerConfig>,
    report: &mut AuditReport,
) {
    let object = format!("Secret {ns}/{name}");
    let mut registries = Vec::new();
    let broken = config.is_some_and(DockerConfig::is_broken);
    match config {
        None => report.findings.push(AuditFinding {
            severity: Severity::Error,
            code: "secret-unusable",
            object: object.clone(),
            message: "its data key is missing or empty for its type: the kubelet ignores it".into(),
        }),
        Some(c) if c.is_broken() => report.findings.push(AuditFinding {
            severity: Severity::Error,
            code: "secret-broken",
            object: object.clone(),
            message: format!(
                "the kubelet cannot decode it ({}): every Pod listing it fails every image pull",
                c.problems
                    .iter()
                    .map(|p| p.message.clone())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        }),
        Some(c) => {
            for entry in &c.entries {
                match crate::keyring::index_key(&entry.key) {
                    Some(index) => registries.push(index),
                    None => report.findings.push(AuditFinding {
                        severity: Severity::Warning,
                        code: "secret-key-skipped",
                        object: object.clone(),
                        message: format!(
                            "key {} is not a URL the kubelet can parse; it is skipped",
                            display_key(&entry.key)
                        ),
                    }),
                }
            }
            if registries.is_empty() {
                report.findings.push(AuditFinding {
                    severity: Severity::Warning,
                    code: "secret-covers-nothing",
                    object: object.clone(),
                    message: "no registry entry the kubelet can use".into(),
                });
            }
        }
    }
    report.secrets.push(SecretSummary {
        namespace: ns.clone(),
        name: name.clone(),
        secret_type: secret.type_.clone().unwrap_or_else(|| "Opaque".into()),
        registries,
        copy_of: managed_source(secret),
        broken,
    });
}

fn managed_source(secret: &Secret) -> Option<String> {
    if !is_managed(secret) {
        return None;
    }
    secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_SOURCE))
        .cloned()
}

fn audit_copies(
    facts: &ClusterFacts,
    by_key: &HashMap<(String, String), &Secret>,
    report: &mut AuditReport,
) {
    let mut copies: Vec<&Secret> = facts.secrets.iter().filter(|s| is_managed(s)).collect();
    copies.sort_by_key(|s| ns_name(&s.metadata));
    for copy in copies {
        let (ns, name) = ns_name(&copy.metadata);
        let object = format!("Secret {ns}/{name}");
        let Some(source_ref) = managed_source(copy) else {
            report.findings.push(AuditFinding {
                severity: Severity::Warning,
                code: "copy-without-source",
                object,
                message: format!("managed copy without the {ANNOTATION_SOURCE} annotation"),
            });
            continue;
        };
        let source = source_ref
            .split_once('/')
            .and_then(|(sns, sname)| by_key.get(&(sns.to_string(), sname.to_string())));
        let Some(source) = source else {
            report.findings.push(AuditFinding {
                severity: Severity::Warning,
                code: "copy-source-missing",
                object,
                message: format!(
                    "managed copy of {source_ref}, which does not exist (or is no longer a registry Secret)"
                ),
            });
            continue;
        };
        let own_hash = content_hash(copy);
        let recorded = copy
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_SOURCE_HASH));
        match recorded {
            Some(recorded) if *recorded == own_hash => {
                if *recorded != content_hash(source) {
                    let what = if copy.type_ == source.type_ {
                        "data"
                    } else {
                        "type"
                    };
                    report.findings.push(AuditFinding {
                        severity: Severity::Error,
                        code: "copy-stale",
                        object,
                        message: format!(
                            "managed copy of {source_ref} was written from an older version of it (its {what} differs): Pods here pull with stale credentials"
                        ),
                    });
                }
            }
            _ => {
                let why = if recorded.is_some() {
                    format!(
                        "its type or data no longer match its {ANNOTATION_SOURCE_HASH} annotation"
                    )
                } else {
                    format!("it carries no {ANNOTATION_SOURCE_HASH} annotation")
                };
                report.findings.push(AuditFinding {
                    severity: Severity::Error,
                    code: "copy-edited",
                    object,
                    message: format!("managed copy of {source_ref} was edited by hand: {why}"),
                });
            }
        }
    }
}

fn pod_images(pod: &Pod) -> Vec<String> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    let mut images: Vec<String> = Vec::new();
    let all = spec
        .init_containers
        .iter()
        .flatten()
        .filter_map(|c| c.image.clone())
        .chain(spec.containers.iter().filter_map(|c| c.image.clone()))
        .chain(
            spec.ephemeral_containers
                .iter()
                .flatten()
                .filter_map(|c| c.image.clone()),
        );
    for image in all {
        if !images.contains(&image) {
            images.push(image);
        }
    }
    images
}

fn audit_pods(
    facts: &ClusterFacts,
    policy: Option<&Policy>,
    webhook_namespace: &str,
    by_key: &HashMap<(String, String), &Secret>,
    decoded: &HashMap<(String, String), Option<DockerConfig>>,
    report: &mut AuditReport,
) {
    let labels: HashMap<String, BTreeMap<String, String>> = facts
        .namespaces
        .iter()
        .map(|n| {
            (
                n.metadata.name.clone().unwrap_or_default(),
                n.metadata.labels.clone().unwrap_or_default(),
            )
        })
        .collect();
    let mut pods: Vec<&Pod> = facts.pods.iter().collect();
    pods.sort_by_key(|p| ns_name(&p.metadata));
    for pod in pods {
        let (ns, name) = ns_name(&pod.metadata);
        let skipped = match policy {
            Some(p) => p.namespace_excluded(&ns, webhook_namespace),
            None => SYSTEM_NAMESPACES.contains(&ns.as_str()) || ns == webhook_namespace,
        };
        if skipped {
            continue;
        }
        let object = format!("Pod {ns}/{name}");
        // The Pod's keyring: its imagePullSecrets in order, as the kubelet builds it.
        let mut ring: Keyring<()> = Keyring::new();
        let mut broken = Vec::new();
        let mut missing = Vec::new();
        let refs = pod
            .spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.clone())
            .unwrap_or_default();
        for r in refs.iter().filter(|r| !r.name.is_empty()) {
            let key = (ns.clone(), r.name.clone());
            match (by_key.get(&key), decoded.get(&key).and_then(Option::as_ref)) {
                (None, _) => missing.push(r.name.clone()),
                (Some(_), None) => {}
                (Some(_), Some(c)) if c.is_broken() => broken.push(r.name.clone()),
                (Some(_), Some(c)) => {
                    for e in &c.entries {
                        ring.add(&e.key, ());
                    }
                }
            }
        }
        if !broken.is_empty() {
            report.findings.push(AuditFinding {
                severity: Severity::Error,
                code: "pod-secret-broken",
                object: object.clone(),
                message: format!(
                    "imagePullSecrets {} cannot be decoded: the kubelet fails every image pull of this Pod",
                    broken.join(", ")
                ),
            });
            continue;
        }
        if !missing.is_empty() {
            report.findings.push(AuditFinding {
                severity: Severity::Warning,
                code: "pod-secret-missing",
                object: object.clone(),
                message: format!(
                    "imagePullSecrets {} do not exist in {ns} as registry Secrets; the kubelet skips them",
                    missing.join(", ")
                ),
            });
        }
        for image in pod_images(pod) {
            let Ok(parsed) = ImageRef::parse(&image) else {
                continue; // the kubelet fails such a pull before any credential lookup
            };
            let target = parsed.lookup_target();
            let rules: Vec<String> = policy
                .map(|p| {
                    p.matching_rules(&target, &ns, labels.get(&ns))
                        .iter()
                        .map(|r| format!("rule {} (secret {})", r.name, r.secret))
                        .collect()
                })
                .unwrap_or_default();
            let private = parsed.registry != "docker.io";
            if rules.is_empty() && !private {
                continue;
            }
            if ring.lookup(&target).matches.is_empty() {
                let (severity, why) = if rules.is_empty() {
                    (
                        Severity::Warning,
                        format!(
                            "{} is not Docker Hub; fine only if the image is public",
                            parsed.registry
                        ),
                    )
                } else {
                    (
                        Severity::Error,
                        format!("the policy gives it {}", rules.join(", ")),
                    )
                };
                report.findings.push(AuditFinding {
                    severity,
                    code: "pod-uncovered",
                    object: object.clone(),
                    message: format!(
                        "no imagePullSecret offers a credential for {image} (lookup {target}); {why}"
                    ),
                });
            }
        }
    }
}

/// The sample lookup target for a registry pattern (see the module doc).
pub fn sample_target(pattern: &str) -> Option<String> {
    let index = crate::keyring::index_key(pattern)?;
    let (host, path) = match index.find('/') {
        Some(i) => index.split_at(i),
        None => (index.as_str(), ""),
    };
    let mut sample_host = String::new();
    let mut chars = host.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' | '?' => sample_host.push('x'),
            '[' => {
                let mut first = None;
                for d in chars.by_ref() {
                    if d == ']' {
                        break;
                    }
                    if first.is_none() && d != '^' && d != '!' {
                        first = Some(d);
                    }
                }
                sample_host.push(first.unwrap_or('x'));
            }
            c => sample_host.push(c),
        }
    }
    let path = if path.is_empty() {
        "/x".to_string()
    } else if path.ends_with('/') {
        format!("{path}x")
    } else {
        format!("{path}/x")
    };
    Some(format!("{sample_host}{path}"))
}

fn audit_rules(facts: &ClusterFacts, policy: &Policy, report: &mut AuditReport) {
    let sns = &policy.source_namespace;
    for rule in &policy.rules {
        let object = format!("rule {}", rule.name);
        let source = facts
            .rule_sources
            .get(&rule.secret)
            .and_then(Option::as_ref);
        let Some(secret) = source else {
            report.findings.push(AuditFinding {
                severity: Severity::Error,
                code: "rule-secret-missing",
                object,
                message: format!("its Secret {sns}/{} does not exist", rule.secret),
            });
            continue;
        };
        let t = secret.type_.as_deref().unwrap_or("Opaque");
        if t != TYPE_DOCKERCONFIGJSON && t != TYPE_DOCKERCFG {
            report.findings.push(AuditFinding {
                severity: Severity::Error,
                code: "rule-secret-wrong-type",
                object,
                message: format!(
                    "its Secret {sns}/{} has type {t}; the kubelet only reads kubernetes.io/dockerconfigjson or kubernetes.io/dockercfg",
                    rule.secret
                ),
            });
            continue;
        }
        let config = match decode_secret(secret) {
            Some(c) if !c.is_broken() => c,
            _ => {
                report.findings.push(AuditFinding {
                    severity: Severity::Error,
                    code: "rule-secret-broken",
                    object,
                    message: format!(
                        "its Secret {sns}/{} is empty or cannot be decoded by the kubelet",
                        rule.secret
                    ),
                });
                continue;
            }
        };
        let mut ring: Keyring<()> = Keyring::new();
        for e in &config.entries {
            ring.add(&e.key, ());
        }
        for pattern in &rule.registries {
            let Some(sample) = sample_target(pattern) else {
                continue; // the policy validator rejects such patterns
            };
            if ring.lookup(&sample).matches.is_empty() {
                let keys: Vec<String> = ring.index_keys().iter().map(|k| k.to_string()).collect();
                report.findings.push(AuditFinding {
                    severity: Severity::Error,
                    code: "rule-not-covered",
                    object: object.clone(),
                    message: format!(
                        "its Secret {sns}/{} has no key the kubelet would use for `{pattern}` (sample {sample}; keys: {})",
                        rule.secret,
                        if keys.is_empty() { "none".to_string() } else { keys.join(", ") }
                    ),
                });
            }
        }
    }
}

fn print_text(report: &AuditReport) {
    println!("Registry secrets:");
    if report.secrets.is_empty() {
        println!("  (none)");
    }
    for s in &report.secrets {
        let covers = if s.broken {
            "BROKEN".to_string()
        } else if s.registries.is_empty() {
            "nothing".to_string()
        } else {
            s.registries.join(", ")
        };
        let copy = s
            .copy_of
            .as_ref()
            .map(|c| format!(" (managed copy of {c})"))
            .unwrap_or_default();
        println!(
            "  {}/{} [{}] covers: {covers}{copy}",
            s.namespace, s.name, s.secret_type
        );
    }
    if report.findings.is_empty() {
        println!("No findings.");
        return;
    }
    println!("Findings:");
    for f in &report.findings {
        let sev = match f.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        println!("  {sev}: {}: {} [{}]", f.object, f.message, f.code);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_targets_replace_globs() {
        for (pattern, sample) in [
            ("*.dkr.ecr.*.amazonaws.com", "x.dkr.ecr.x.amazonaws.com/x"),
            ("registry.gitlab.com/acme/", "registry.gitlab.com/acme/x"),
            ("quay.io/org", "quay.io/org/x"),
            ("reg[0-9].io:5000", "reg0.io:5000/x"),
            ("docker.io", "docker.io/x"),
        ] {
            assert_eq!(sample_target(pattern).as_deref(), Some(sample), "{pattern}");
        }
    }
}
