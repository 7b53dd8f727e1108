//! The audit's decision, pure over what `audit` read from a cluster (`cmd/audit.rs` gathers
//! and prints): what the kubelet would make of its pull secrets.
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
//!   cover the rule's own registries;
//! * ServiceAccount mode: ServiceAccounts a rule keeps its secret on (`serviceAccounts`) whose
//!   `imagePullSecrets` do not list it, and managed copies no rule gives their namespace any
//!   more: kept while a Pod or ServiceAccount there names them (`copy-kept-referenced`), else
//!   due for `serve`'s prune (`copy-unneeded`);
//! * token Secrets (those carrying `pullsecret-injector.io/expires-at`: the ones `serve` mints
//!   and their copies) are listed with their expiry, and an expired one is `token-expired`:
//!   the kubelet still sends it and the registry refuses it.
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
//!
//! What a Pod is given comes from [`plan()`](crate::plan::plan) and whether a copy is current
//! from [`copy::compare`]: the same two decisions admission and the copier make.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Container, Namespace, Pod, PodSpec, Secret, ServiceAccount};
use serde::Serialize;

use crate::dockerconfig::{
    self, Content, DockerConfig, Document, SecretDoc, Severity, TYPE_DOCKERCFG,
    TYPE_DOCKERCONFIGJSON, display_key,
};
use crate::expiry::{self, ANNOTATION_EXPIRES_AT, UnixTime};
use crate::k8s::copy::{self, CopyState};
use crate::k8s::{ANNOTATION_SOURCE, ANNOTATION_SOURCE_HASH, ANNOTATION_TOKEN_SOURCE, is_managed};
use crate::plan::{self, Namespace as PlanNamespace, Operation};
use crate::policy::Policy;
use crate::reference::ImageRef;

/// Namespaces skipped for Pods when no policy says otherwise.
const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// Everything the audit reads, so the decision is a pure function of it.
#[derive(Debug, Default, Clone)]
pub struct ClusterFacts {
    /// Registry-typed Secrets, every namespace.
    pub secrets: Vec<Secret>,
    pub pods: Vec<Pod>,
    pub namespaces: Vec<Namespace>,
    pub service_accounts: Vec<ServiceAccount>,
    /// Each policy rule's source Secret as fetched by name (any type), keyed by name.
    pub rule_sources: BTreeMap<String, Option<Secret>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretSummary {
    pub namespace: String,
    pub name: String,
    #[serde(rename = "type")]
    pub(crate) secret_type: String,
    /// Index keys the kubelet derives, in document order.
    pub registries: Vec<String>,
    /// `namespace/name` of the source when this is a managed copy.
    #[serde(rename = "copyOf", skip_serializing_if = "Option::is_none")]
    pub copy_of: Option<String>,
    /// The kubelet cannot decode it.
    pub broken: bool,
    /// For a token Secret `serve` mints: its source kind (`ecr`, `google`, `azure`).
    #[serde(rename = "tokenSource", skip_serializing_if = "Option::is_none")]
    pub(crate) token_source: Option<String>,
    /// When its token stops working (RFC 3339, UTC), for token Secrets and their copies.
    #[serde(rename = "expiresAt", skip_serializing_if = "Option::is_none")]
    pub(crate) expires_at: Option<String>,
    /// Its token is past `expiresAt` at the time of the audit.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) expired: bool,
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

/// The decision over what was read, judged now.
pub fn audit(
    facts: &ClusterFacts,
    policy: Option<&Policy>,
    webhook_namespace: &str,
) -> AuditReport {
    audit_at(facts, policy, webhook_namespace, expiry::now())
}

/// The decision: pure over what was read and the instant token expiries are judged at.
pub(crate) fn audit_at(
    facts: &ClusterFacts,
    policy: Option<&Policy>,
    webhook_namespace: &str,
    now: UnixTime,
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
            now,
            &mut report,
        );
    }
    audit_copies(facts, policy, &by_key, &mut report);
    audit_pods(facts, policy, webhook_namespace, &by_key, &mut report);
    if let Some(policy) = policy {
        audit_rules(facts, policy, &mut report);
        audit_service_accounts(facts, policy, webhook_namespace, &mut report);
    }
    report
}

impl ClusterFacts {
    /// Each namespace's labels, by name, for rule selectors.
    fn namespace_labels(&self) -> HashMap<String, BTreeMap<String, String>> {
        self.namespaces
            .iter()
            .map(|n| {
                (
                    n.metadata.name.clone().unwrap_or_default(),
                    n.metadata.labels.clone().unwrap_or_default(),
                )
            })
            .collect()
    }
}

/// ServiceAccount mode and the life of copies: ServiceAccounts a rule names that do not list
/// its secret, and managed copies no rule gives their namespace any more (kept while a Pod or
/// ServiceAccount there names them, else due for the prune).
fn audit_service_accounts(
    facts: &ClusterFacts,
    policy: &Policy,
    webhook_namespace: &str,
    report: &mut AuditReport,
) {
    let labels = facts.namespace_labels();
    let mut accounts: Vec<&ServiceAccount> = facts.service_accounts.iter().collect();
    accounts.sort_by_key(|sa| ns_name(&sa.metadata));
    for sa in accounts {
        let (ns, name) = ns_name(&sa.metadata);
        let wanted =
            crate::coverage::wanted(policy, &ns, labels.get(&ns), &name, webhook_namespace);
        let listed = crate::coverage::listed(sa);
        let missing: Vec<&str> = wanted
            .names
            .iter()
            .filter(|n| !listed.contains(n))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            report.findings.push(AuditFinding {
                severity: Severity::Warning,
                code: "serviceaccount-missing-secret",
                object: format!("ServiceAccount {ns}/{name}"),
                message: format!(
                    "the policy keeps {} on it (serviceAccounts), but its imagePullSecrets do not list it: Pods running as it get it only through the webhook",
                    missing.join(", ")
                ),
            });
        }
    }
    let names = policy.secret_names();
    let mut copies: Vec<&Secret> = facts.secrets.iter().filter(|s| is_managed(s)).collect();
    copies.sort_by_key(|s| ns_name(&s.metadata));
    for copy in copies {
        let (ns, name) = ns_name(&copy.metadata);
        // Copies of names the policy no longer uses are `copy-source-missing` or stale
        // above; serve watches (and prunes) only the names the policy uses.
        if ns == policy.source_namespace
            || !names.contains(&name)
            || crate::coverage::copy_wanted(policy, &name, &ns, labels.get(&ns), webhook_namespace)
                != Some(false)
        {
            continue;
        }
        let refs = crate::coverage::references(&name, &ns, &facts.pods, &facts.service_accounts);
        let (code, message) = if refs.is_empty() {
            (
                "copy-unneeded",
                "no policy rule gives this namespace the Secret any more and nothing here references it: serve deletes it after --prune-grace".to_string(),
            )
        } else {
            (
                "copy-kept-referenced",
                format!(
                    "no policy rule gives this namespace the Secret any more; kept because {} still reference(s) it, deleted once nothing does",
                    refs.join(", ")
                ),
            )
        };
        report.findings.push(AuditFinding {
            severity: Severity::Warning,
            code,
            object: format!("Secret {ns}/{name}"),
            message,
        });
    }
}

fn summarize_secret(
    (ns, name): &(String, String),
    secret: &Secret,
    config: Option<&DockerConfig>,
    now: UnixTime,
    report: &mut AuditReport,
) {
    let object = format!("Secret {ns}/{name}");
    let token_source = token_source(secret);
    let expires_at = copy::annotation(secret, ANNOTATION_EXPIRES_AT)
        .map(|text| (text, expiry::parse_rfc3339(text)));
    let expired = matches!(expires_at, Some((_, Some(at))) if at <= now);
    match expires_at {
        Some((_, Some(at))) if at <= now => {
            let whose = match (&token_source, managed_source(secret)) {
                (Some(kind), _) => format!(
                    "serve mints it ({kind}) and has not refreshed it: see the TokenMintFailed Events on it and serve's log"
                ),
                (None, Some(source)) => format!(
                    "a copy of {source}: once the source is refreshed, serve brings the copy along"
                ),
                (None, None) => "renew it".to_string(),
            };
            report.findings.push(AuditFinding {
                severity: Severity::Error,
                code: "token-expired",
                object: object.clone(),
                message: format!(
                    "its token expired at {} ({}): the registry refuses every pull with it; {whose}",
                    expiry::format_rfc3339(at),
                    expiry::relative(at, now)
                ),
            });
        }
        Some((text, None)) => report.findings.push(AuditFinding {
            severity: Severity::Warning,
            code: "token-expiry-unreadable",
            object: object.clone(),
            message: format!(
                "its {ANNOTATION_EXPIRES_AT} annotation {:?} is not an RFC 3339 time",
                crate::quote::short(text)
            ),
        }),
        _ => {}
    }
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
        token_source,
        expires_at: expires_at
            .map(|(text, at)| at.map_or_else(|| text.to_string(), expiry::format_rfc3339)),
        expired,
    });
}

/// The source kind of a token Secret `serve` mints (ours, with the token-source annotation).
fn token_source(secret: &Secret) -> Option<String> {
    is_managed(secret)
        .then(|| copy::annotation(secret, ANNOTATION_TOKEN_SOURCE))
        .flatten()
        .map(str::to_string)
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

/// Managed copies, judged by the copier's own comparison ([`copy::compare`]) against the
/// source the copier would copy from: with a policy that names the Secret, the one of the
/// same name in its `sourceNamespace` (so a copy written from an earlier source namespace is
/// stale, as the copier sees it); otherwise the source the copy's annotation names.
fn audit_copies(
    facts: &ClusterFacts,
    policy: Option<&Policy>,
    by_key: &HashMap<(String, String), &Secret>,
    report: &mut AuditReport,
) {
    // Token Secrets `serve` mints are managed too, but they are sources, not copies.
    let mut copies: Vec<&Secret> = facts
        .secrets
        .iter()
        .filter(|s| is_managed(s) && token_source(s).is_none())
        .collect();
    copies.sort_by_key(|s| ns_name(&s.metadata));
    let policy_names = policy.map(Policy::secret_names).unwrap_or_default();
    for copy in copies {
        let (ns, name) = ns_name(&copy.metadata);
        let object = format!("Secret {ns}/{name}");
        let Some(written_from) = managed_source(copy) else {
            report.findings.push(AuditFinding {
                severity: Severity::Warning,
                code: "copy-without-source",
                object,
                message: format!("managed copy without the {ANNOTATION_SOURCE} annotation"),
            });
            continue;
        };
        let source_key = match policy {
            Some(p) if policy_names.contains(&name) => {
                Some((p.source_namespace.clone(), name.clone()))
            }
            _ => written_from
                .split_once('/')
                .map(|(sns, sname)| (sns.to_string(), sname.to_string())),
        };
        if source_key.as_ref().is_some_and(|(sns, _)| *sns == ns) {
            continue; // the copier never writes into the source namespace
        }
        let source_ref = source_key.as_ref().map_or_else(
            || written_from.clone(),
            |(sns, sname)| format!("{sns}/{sname}"),
        );
        let Some(source) = source_key.as_ref().and_then(|key| by_key.get(key)) else {
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
        let source_ns = source_key.as_ref().map_or("", |(sns, _)| sns.as_str());
        let message = match copy::compare(copy, source, source_ns) {
            CopyState::Current => continue,
            CopyState::Drifted => {
                let recorded = copy
                    .metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key(ANNOTATION_SOURCE_HASH));
                let why = if recorded {
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
                    message: format!("managed copy of {written_from} was edited by hand: {why}"),
                });
                continue;
            }
            CopyState::Stale
                if copy::expiry_differs(copy, source)
                    && copy::content_hash(copy) == copy::content_hash(source)
                    && written_from == source_ref =>
            {
                format!(
                    "managed copy of {source_ref} does not carry its source's {ANNOTATION_EXPIRES_AT} ({}): Pods here are not warned when the token expires until serve rewrites it",
                    copy::annotation(source, ANNOTATION_EXPIRES_AT).unwrap_or("none")
                )
            }
            CopyState::Stale if written_from != source_ref => format!(
                "managed copy of {written_from}, but the policy now takes {name} from {source_ref}: Pods here pull with the old source's credentials until it is rewritten"
            ),
            CopyState::Stale => format!(
                "managed copy of {source_ref} was written from an older version of it (its data differs): Pods here pull with stale credentials"
            ),
            CopyState::TypeChanged => format!(
                "managed copy of {source_ref} was written from an older version of it (its type differs): Pods here pull with stale credentials"
            ),
        };
        report.findings.push(AuditFinding {
            severity: Severity::Error,
            code: "copy-stale",
            object,
            message,
        });
    }
}

fn audit_pods(
    facts: &ClusterFacts,
    policy: Option<&Policy>,
    webhook_namespace: &str,
    by_key: &HashMap<(String, String), &Secret>,
    report: &mut AuditReport,
) {
    let labels = facts.namespace_labels();
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
        let mut docs = Vec::new();
        let mut missing = Vec::new();
        let refs = pod
            .spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.clone())
            .unwrap_or_default();
        for r in refs.iter().filter(|r| !r.name.is_empty()) {
            match by_key.get(&(ns.clone(), r.name.clone())) {
                None => missing.push(r.name.clone()),
                Some(secret) => docs.push(Document {
                    label: r.name.clone(),
                    content: Content::Secret(SecretDoc::from_k8s(secret)),
                }),
            }
        }
        let ring = match dockerconfig::build_keyring(&docs) {
            Ok(ring) => ring,
            Err(broken) => {
                let names: Vec<&str> = broken.iter().map(|b| b.source_label.as_str()).collect();
                report.findings.push(AuditFinding {
                    severity: Severity::Error,
                    code: "pod-secret-broken",
                    object: object.clone(),
                    message: format!(
                        "imagePullSecrets {} cannot be decoded: the kubelet fails every image pull of this Pod",
                        names.join(", ")
                    ),
                });
                continue;
            }
        };
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
        let namespace = PlanNamespace {
            name: &ns,
            labels: labels.get(&ns),
        };
        let mut images: Vec<&str> = Vec::new();
        for image in plan::pod_images(pod) {
            if !images.contains(&image.image) {
                images.push(image.image);
            }
        }
        for image in images {
            let Ok(parsed) = ImageRef::parse(image) else {
                continue; // the kubelet fails such a pull before any credential lookup
            };
            let target = parsed.lookup_target();
            let rules = policy
                .map(|p| rules_for_image(p, &namespace, image, webhook_namespace))
                .unwrap_or_default();
            let private = parsed.registry != crate::reference::DEFAULT_DOMAIN;
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

/// What `plan()` gives a Pod with this one image in `namespace`, as `rule R (secret S)` in
/// rule order. Asked image by image so that a finding names the image that needs the secret;
/// the decision is plan()'s, exactly as at admission.
fn rules_for_image(
    policy: &Policy,
    namespace: &PlanNamespace<'_>,
    image: &str,
    webhook_namespace: &str,
) -> Vec<String> {
    let pod = Pod {
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "audit".to_string(),
                image: Some(image.to_string()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    };
    let decision = plan::plan(
        policy,
        &plan::PodFacts::from_pod(&pod),
        namespace,
        Operation::Create,
        webhook_namespace,
    );
    let position = |rule: &str| policy.rules.iter().position(|r| r.name == rule);
    let mut rules: Vec<(Option<usize>, String)> = decision
        .secrets
        .iter()
        .flat_map(|need| {
            need.rules.iter().map(move |rule| {
                (
                    position(rule),
                    format!("rule {rule} (secret {})", need.name),
                )
            })
        })
        .collect();
    rules.sort();
    rules.into_iter().map(|(_, text)| text).collect()
}

/// The sample lookup target for a registry pattern (see the module doc).
pub(crate) fn sample_target(pattern: &str) -> Option<String> {
    let index = crate::keyring::index_key(pattern)?;
    let (host, path) = match index.find('/') {
        Some(i) => index.split_at(i),
        None => (index.as_str(), ""),
    };
    let sample_host = crate::glob::sample(host);
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
        let doc = Document {
            label: format!("Secret {sns}/{}", rule.secret),
            content: Content::Secret(SecretDoc::from_k8s(secret)),
        };
        let ring = match dockerconfig::build_keyring(std::slice::from_ref(&doc)) {
            Ok(ring) if doc.kubelet_config().is_some() => ring,
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
