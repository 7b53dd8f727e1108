//! `diagnose pod NAME` / `diagnose namespace NS`: read a Pod, its ServiceAccount, the Secrets
//! they name, the container statuses and the kubelet's Events, and say per container why the
//! pull has (or lacks) working credentials. The verdicts come from [`crate::diagnose`];
//! `--verify` asks the registry as `secret verify` does.
//!
//! Reads: the Pod (get, or list in a namespace), its ServiceAccount (get), each named Secret
//! (get by name), Events of the Pod (list with an `involvedObject` field selector), the
//! Namespace (labels, for rule selectors) and the policy ConfigMap when asked. Never writes.
//!
//! Exit codes: 0 every container `ok` (or public and pulled), 1 otherwise, 2 for usage or API
//! errors. Secret data is never printed: only names, registry keys (userinfo redacted) and
//! expiry times.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;

use k8s_openapi::api::core::v1::{ContainerStatus, Event, Namespace, Pod, Secret, ServiceAccount};
use kube::Api;
use kube::api::ListParams;
use serde::Serialize;
use thiserror::Error;

use crate::cli::{
    ClusterArgs, DiagnoseCommand, DiagnoseNamespaceArgs, DiagnoseOptions, DiagnosePodArgs,
    TextOrJson,
};
use crate::cmd::policy_input;
use crate::diagnose::{
    self, ContainerReport, Listed, PullHistory, RegistryCheck, RuleRef, SecretFacts, Verdict,
};
use crate::dockerconfig::{self, Content, Document, SecretDoc};
use crate::expiry;
use crate::plan;
use crate::policy::Policy;
use crate::reference::ImageRef;
use crate::registry::{BasicAuth, ClientOptions, Outcome, RegistryClient, Target};

#[derive(Debug, Error)]
pub(crate) enum DiagnoseError {
    #[error("cannot connect to the cluster: {0}")]
    Connect(String),
    #[error("cannot {what}: {message}")]
    Api { what: String, message: String },
    #[error("Pod {0} not found")]
    PodNotFound(String),
    #[error("cannot read {path}: {message}")]
    ReadPolicy { path: String, message: String },
    #[error(transparent)]
    Policy(#[from] policy_input::PolicyInputError),
    #[error("{0}")]
    Registry(#[from] crate::registry::ClientError),
}

fn api_error(what: String, err: kube::Error) -> DiagnoseError {
    DiagnoseError::Api {
        what,
        message: policy_input::api_message(&err),
    }
}

pub async fn run(command: DiagnoseCommand) -> anyhow::Result<ExitCode> {
    Ok(match command {
        DiagnoseCommand::Pod(args) => pod(args).await?,
        DiagnoseCommand::Namespace(args) => namespace(args).await?,
    })
}

/// A client as kubectl would build it from `--kubeconfig` and `--context`, and the
/// context's namespace.
async fn connect(options: &DiagnoseOptions) -> Result<(kube::Client, String), DiagnoseError> {
    let cluster = ClusterArgs {
        kubeconfig: options.kubeconfig.clone(),
        context: options.context.clone(),
    };
    crate::kubeconfig::connect_in_context(&cluster)
        .await
        .map_err(|e| DiagnoseError::Connect(e.to_string()))
}

async fn load_policy(
    options: &DiagnoseOptions,
    client: &kube::Client,
) -> Result<Option<Policy>, DiagnoseError> {
    Ok(policy_input::load_policy(
        options.policy.as_deref(),
        options.policy_configmap.as_deref(),
        client,
    )
    .await?)
}

/// Secrets of one namespace read by name, each once.
struct SecretReader {
    api: Api<Secret>,
    namespace: String,
    read: HashMap<String, Option<(Secret, SecretFacts)>>,
}

impl SecretReader {
    fn new(client: &kube::Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client.clone(), namespace),
            namespace: namespace.to_string(),
            read: HashMap::new(),
        }
    }

    async fn load(&mut self, name: &str) -> Result<(), DiagnoseError> {
        if self.read.contains_key(name) {
            return Ok(());
        }
        let secret = self
            .api
            .get_opt(name)
            .await
            .map_err(|e| api_error(format!("read Secret {}/{name}", self.namespace), e))?;
        let entry = secret.map(|s| {
            let facts = SecretFacts::from_secret(&s);
            (s, facts)
        });
        self.read.insert(name.to_string(), entry);
        Ok(())
    }

    fn listed<'a>(&'a self, names: &'a [String]) -> Vec<Listed<'a>> {
        names
            .iter()
            .map(|n| match self.read.get(n).and_then(Option::as_ref) {
                Some((_, facts)) => Listed::Found(facts),
                None => Listed::Missing(n),
            })
            .collect()
    }

    /// The listed Secrets as documents, in Pod order, for the full-credential keyring.
    fn documents(&self, names: &[String]) -> Vec<Document> {
        names
            .iter()
            .filter_map(|n| self.read.get(n).and_then(Option::as_ref))
            .map(|(s, _)| Document {
                label: format!("Secret {}", s.metadata.name.clone().unwrap_or_default()),
                content: Content::Secret(SecretDoc::from_k8s(s)),
            })
            .collect()
    }
}

/// What the command knows beyond the Pod.
struct Context<'a> {
    policy: Option<&'a Policy>,
    labels: Option<&'a BTreeMap<String, String>>,
    webhook_namespace: String,
    verify: Option<RegistryClient>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PodReport {
    pod: String,
    namespace: String,
    service_account: String,
    image_pull_secrets: Vec<String>,
    images: Vec<ContainerReport>,
    notes: Vec<String>,
    ok: bool,
}

fn pull_secret_names(pod: &Pod) -> Vec<String> {
    pod.spec
        .iter()
        .flat_map(|s| s.image_pull_secrets.iter().flatten())
        .map(|r| r.name.clone())
        .filter(|n| !n.is_empty())
        .collect()
}

fn service_account_name(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_string())
}

fn statuses<'p>(pod: &'p Pod, kind: &str) -> &'p [ContainerStatus] {
    let status = pod.status.as_ref();
    let list = match kind {
        "initContainer" => status.and_then(|s| s.init_container_statuses.as_ref()),
        "ephemeralContainer" => status.and_then(|s| s.ephemeral_container_statuses.as_ref()),
        _ => status.and_then(|s| s.container_statuses.as_ref()),
    };
    list.map(Vec::as_slice).unwrap_or_default()
}

/// The kubelet's `fieldPath` for a container (`spec.containers{web}`).
fn field_path(kind: &str, container: &str) -> String {
    let list = match kind {
        "initContainer" => "initContainers",
        "ephemeralContainer" => "ephemeralContainers",
        _ => "containers",
    };
    format!("spec.{list}{{{container}}}")
}

fn event_time(e: &Event) -> i64 {
    e.last_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .or(e.event_time.as_ref().map(|t| t.0.as_second()))
        .or(e
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second()))
        .unwrap_or(0)
}

fn history(pod: &Pod, kind: &str, container: &str, image: &str, events: &[&Event]) -> PullHistory {
    let mut h = PullHistory::default();
    if let Some(status) = statuses(pod, kind).iter().find(|s| s.name == container) {
        let state = status.state.as_ref();
        if let Some(waiting) = state.and_then(|s| s.waiting.as_ref()) {
            h.waiting_reason = waiting.reason.clone();
            h.waiting_message = waiting.message.clone();
        }
        h.started = state.is_some_and(|s| s.running.is_some() || s.terminated.is_some())
            || !status.image_id.is_empty();
    }
    let path = field_path(kind, container);
    let pull_of_image = format!("Failed to pull image {image:?}");
    let mut mine: Vec<&&Event> = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("Failed"))
        .filter(|e| {
            let message = e.message.as_deref().unwrap_or("");
            match e.involved_object.field_path.as_deref() {
                Some(p) if !p.is_empty() => p == path,
                _ => message.starts_with(&pull_of_image),
            }
        })
        .collect();
    mine.sort_by_key(|e| event_time(e));
    h.failures = mine.iter().filter_map(|e| e.message.clone()).collect();
    h
}

/// Verdicts for every container of `pod`.
async fn diagnose_pod(
    pod: &Pod,
    secrets: &SecretReader,
    events: &[&Event],
    ctx: &Context<'_>,
) -> Vec<ContainerReport> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let names = pull_secret_names(pod);
    let listed = secrets.listed(&names);
    let now = expiry::now();
    let mut reports = Vec::new();
    for image in plan::pod_images(pod) {
        let rules: Vec<RuleRef> = match (ctx.policy, ImageRef::parse(image.image)) {
            (Some(policy), Ok(reference))
                if !policy.namespace_excluded(&namespace, &ctx.webhook_namespace) =>
            {
                policy
                    .matching_rules(&reference.lookup_target(), &namespace, ctx.labels)
                    .iter()
                    .map(|r| RuleRef {
                        rule: r.name.clone(),
                        secret: r.secret.clone(),
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
        let history = history(pod, image.kind, image.container, image.image, events);
        let mut report = diagnose::diagnose_container(
            image.kind,
            image.container,
            image.image,
            &listed,
            rules,
            &history,
            now,
        );
        if let Some(client) = &ctx.verify {
            verify(client, &mut report, secrets, &names).await;
        }
        reports.push(report);
    }
    reports
}

/// `--verify`: authenticate as the runtime would with the credentials the kubelet offers, in
/// its order, stopping at the first that works (as `secret verify` does).
async fn verify(
    client: &RegistryClient,
    report: &mut ContainerReport,
    secrets: &SecretReader,
    names: &[String],
) {
    if !matches!(
        report.verdict,
        Verdict::Ok | Verdict::AnonymousOk | Verdict::NoPullSecret
    ) {
        return;
    }
    let (Some(lookup), Ok(image)) = (&report.lookup_target, ImageRef::parse(&report.image)) else {
        return;
    };
    let Ok(ring) = dockerconfig::build_keyring(&secrets.documents(names)) else {
        return;
    };
    let target = Target::from_image(&image);
    let found = ring.lookup(lookup);
    let mut outcome = None;
    if found.matches.is_empty() {
        outcome = Some(client.check(&target, None).await);
    }
    for entry in &found.matches {
        let credential = &entry.credential.credential;
        let result = if credential.is_empty() {
            client.check(&target, None).await
        } else {
            let auth = BasicAuth {
                username: credential.username.clone(),
                password: credential.password.clone(),
            };
            client.check(&target, Some(&auth)).await
        };
        let done = matches!(result, Outcome::Found { .. });
        outcome = Some(result);
        if done {
            break;
        }
    }
    let Some(outcome) = outcome else {
        return;
    };
    let message = outcome.explain(&target);
    let anonymous = found.matches.is_empty();
    match &outcome {
        Outcome::Found { .. } => {
            if anonymous {
                report.verdict = Verdict::AnonymousOk;
                report
                    .detail
                    .push_str("; the registry serves it without credentials");
                report.fix = "nothing to fix".into();
            }
        }
        Outcome::ManifestNotFound { .. } => {
            report.verdict = Verdict::ImageNotFound;
            report.fix = format!(
                "check the repository and tag of {}: the registry has no such manifest",
                report.image
            );
        }
        Outcome::BadCredentials { .. }
        | Outcome::NoAccess { .. }
        | Outcome::AuthRequired { .. } => {
            if anonymous {
                report
                    .detail
                    .push_str("; the registry confirms: it refuses anonymous pulls");
            } else {
                report.verdict = Verdict::RegistryDenied;
                report.fix = format!(
                    "replace the credential in Secret {:?} with one the registry accepts (try it with `pullsecret-injector secret verify --image {}`)",
                    report.secret.clone().unwrap_or_default(),
                    report.image
                );
            }
        }
        Outcome::Tls { .. }
        | Outcome::ConnectionRefused { .. }
        | Outcome::Timeout { .. }
        | Outcome::Other { .. } => {
            report.verdict = Verdict::RegistryUnreachable;
            report.fix = format!(
                "check that {} is reachable and trusted from here and from the nodes (DNS, firewall, proxy, CA)",
                target.host
            );
        }
    }
    report.registry = Some(RegistryCheck {
        result: outcome.code().to_string(),
        message,
    });
}

fn registry_client(options: &DiagnoseOptions) -> Result<Option<RegistryClient>, DiagnoseError> {
    if !options.verify {
        return Ok(None);
    }
    let ca_pem = match &options.ca_file {
        Some(path) => Some(std::fs::read(path).map_err(|e| DiagnoseError::ReadPolicy {
            path: path.display().to_string(),
            message: e.to_string(),
        })?),
        None => None,
    };
    Ok(Some(RegistryClient::new(&ClientOptions {
        ca_pem,
        insecure_skip_tls_verify: options.insecure_skip_tls_verify,
        plain_http: options.plain_http,
        timeout: Some(options.timeout),
    })?))
}

fn webhook_namespace() -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "pullsecret-injector".to_string())
}

async fn namespace_labels(
    client: &kube::Client,
    namespace: &str,
) -> Option<BTreeMap<String, String>> {
    // Labels only refine which selector rules apply; without them those rules are not shown.
    Api::<Namespace>::all(client.clone())
        .get_opt(namespace)
        .await
        .ok()
        .flatten()
        .map(|n| n.metadata.labels.unwrap_or_default())
}

/// Events about Pods in `namespace` (`involvedObject.kind=Pod`, and the name when given).
async fn pod_events(
    client: &kube::Client,
    namespace: &str,
    pod: Option<&str>,
) -> Result<Vec<Event>, DiagnoseError> {
    let mut selector = "involvedObject.kind=Pod".to_string();
    if let Some(name) = pod {
        selector.push_str(&format!(",involvedObject.name={name}"));
    }
    Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().fields(&selector))
        .await
        .map(|l| l.items)
        .map_err(|e| api_error(format!("list Events in {namespace}"), e))
}

async fn pod(args: DiagnosePodArgs) -> Result<ExitCode, DiagnoseError> {
    let options = &args.options;
    let verify_client = registry_client(options)?;
    let (client, default_ns) = connect(options).await?;
    let namespace = args.namespace.clone().unwrap_or(default_ns);
    let policy = load_policy(options, &client).await?;
    let pod = Api::<Pod>::namespaced(client.clone(), &namespace)
        .get_opt(&args.name)
        .await
        .map_err(|e| api_error(format!("read Pod {namespace}/{}", args.name), e))?
        .ok_or_else(|| DiagnoseError::PodNotFound(format!("{namespace}/{}", args.name)))?;

    let mut notes = Vec::new();
    let names = pull_secret_names(&pod);
    let sa_name = service_account_name(&pod);
    let sa = Api::<ServiceAccount>::namespaced(client.clone(), &namespace)
        .get_opt(&sa_name)
        .await;
    let mut secrets = SecretReader::new(&client, &namespace);
    for name in &names {
        secrets.load(name).await?;
    }
    match sa {
        Ok(Some(sa)) => {
            let sa_names: Vec<String> = sa
                .image_pull_secrets
                .iter()
                .flatten()
                .map(|r| r.name.clone())
                .filter(|n| !n.is_empty())
                .collect();
            let unused: Vec<&String> = sa_names.iter().filter(|n| !names.contains(n)).collect();
            if !unused.is_empty() {
                // The ServiceAccount admission plugin copies them only into a Pod created
                // without imagePullSecrets of its own; the kubelet reads the Pod alone.
                notes.push(format!(
                    "ServiceAccount {sa_name} lists {} that the Pod does not: the kubelet uses only the Pod's imagePullSecrets (the ServiceAccount's are copied in at creation, and only when the Pod lists none)",
                    unused.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
                ));
            }
        }
        Ok(None) => notes.push(format!("ServiceAccount {sa_name} does not exist")),
        Err(e) => notes.push(format!(
            "cannot read ServiceAccount {sa_name}: {}",
            match &e {
                kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
                other => other.to_string(),
            }
        )),
    }
    let events = match pod_events(&client, &namespace, Some(&args.name)).await {
        Ok(events) => events,
        Err(e) => {
            notes.push(format!("{e}; the kubelet's messages are not shown"));
            Vec::new()
        }
    };
    let uid = pod.metadata.uid.clone();
    let events: Vec<&Event> = events
        .iter()
        .filter(|e| {
            uid.is_none() || e.involved_object.uid.is_none() || e.involved_object.uid == uid
        })
        .collect();
    let labels = match &policy {
        Some(_) => namespace_labels(&client, &namespace).await,
        None => None,
    };
    if policy.is_none() {
        notes.push("no policy given (--policy or --policy-configmap): rules are not shown".into());
    }
    let ctx = Context {
        policy: policy.as_ref(),
        labels: labels.as_ref(),
        webhook_namespace: webhook_namespace(),
        verify: verify_client,
    };
    let images = diagnose_pod(&pod, &secrets, &events, &ctx).await;
    let ok = images.iter().all(settled);
    let report = PodReport {
        pod: args.name.clone(),
        namespace,
        service_account: sa_name,
        image_pull_secrets: names,
        images,
        notes,
        ok,
    };
    match options.output {
        TextOrJson::Json => print_json(&report),
        TextOrJson::Text => print_pod(&report, policy.is_some()),
    }
    Ok(exit(ok))
}

/// Nothing left to fix: the verdict is ok and the kubelet is not failing to pull (an `ok`
/// credential the registry still refuses is not settled).
fn settled(report: &ContainerReport) -> bool {
    report.verdict.is_ok()
        && !report
            .state
            .as_deref()
            .is_some_and(diagnose::is_pull_failure)
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn print_json(value: &impl Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot encode the report: {e}"),
    }
}

fn print_pod(report: &PodReport, with_policy: bool) {
    let secrets = if report.image_pull_secrets.is_empty() {
        "none".to_string()
    } else {
        report.image_pull_secrets.join(", ")
    };
    println!(
        "Pod {}/{} (ServiceAccount {}; imagePullSecrets: {secrets})",
        report.namespace, report.pod, report.service_account
    );
    for i in &report.images {
        println!();
        println!("{} {:?}: {}", i.kind, i.container, i.image);
        println!("  verdict:  {}", i.verdict.name());
        println!("  why:      {}", i.detail);
        println!("  fix:      {}", i.fix);
        if let Some(state) = &i.state {
            println!("  state:    {state}");
        }
        if let Some(message) = &i.kubelet_message {
            println!("  kubelet:  {message}");
        }
        if let Some(meaning) = i.kubelet_meaning {
            println!("  meaning:  {meaning}");
        }
        if with_policy {
            if i.rules.is_empty() {
                println!("  policy:   no rule covers this image");
            } else {
                let rules: Vec<String> = i
                    .rules
                    .iter()
                    .map(|r| format!("rule {} (secret {})", r.rule, r.secret))
                    .collect();
                println!("  policy:   {}", rules.join(", "));
            }
        }
        if let Some(check) = &i.registry {
            println!("  registry: {}: {}", check.result, check.message);
        }
    }
    for note in &report.notes {
        println!("note: {note}");
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NamespaceReport {
    namespace: String,
    pods: Vec<NamespacePod>,
    ok: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NamespacePod {
    pod: String,
    images: Vec<ContainerReport>,
}

fn pull_failing(pod: &Pod) -> bool {
    ["initContainer", "container", "ephemeralContainer"]
        .iter()
        .flat_map(|k| statuses(pod, k))
        .any(|s| {
            s.state
                .as_ref()
                .and_then(|st| st.waiting.as_ref())
                .and_then(|w| w.reason.as_deref())
                .is_some_and(diagnose::is_pull_failure)
        })
}

async fn namespace(args: DiagnoseNamespaceArgs) -> Result<ExitCode, DiagnoseError> {
    let options = &args.options;
    let verify_client = registry_client(options)?;
    let (client, _) = connect(options).await?;
    let namespace = args.namespace.clone();
    let policy = load_policy(options, &client).await?;
    let api = Api::<Pod>::namespaced(client.clone(), &namespace);
    let mut pods = crate::cmd::list::list_all(&api, ListParams::default())
        .await
        .map_err(|e| api_error(format!("list Pods in {namespace}"), e))?;
    pods.retain(|p| args.all || pull_failing(p));
    pods.sort_by_key(|p| p.metadata.name.clone());
    let events = if pods.is_empty() {
        Vec::new()
    } else {
        pod_events(&client, &namespace, None)
            .await
            .unwrap_or_default()
    };
    let mut secrets = SecretReader::new(&client, &namespace);
    for pod in &pods {
        for name in pull_secret_names(pod) {
            secrets.load(&name).await?;
        }
    }
    let labels = match &policy {
        Some(_) => namespace_labels(&client, &namespace).await,
        None => None,
    };
    let ctx = Context {
        policy: policy.as_ref(),
        labels: labels.as_ref(),
        webhook_namespace: webhook_namespace(),
        verify: verify_client,
    };
    let mut report = NamespaceReport {
        namespace: namespace.clone(),
        pods: Vec::new(),
        ok: true,
    };
    for pod in &pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let mine: Vec<&Event> = events
            .iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name.as_str()))
            .filter(|e| {
                pod.metadata.uid.is_none()
                    || e.involved_object.uid.is_none()
                    || e.involved_object.uid == pod.metadata.uid
            })
            .collect();
        let images = diagnose_pod(pod, &secrets, &mine, &ctx).await;
        report.ok &= images.iter().all(settled);
        report.pods.push(NamespacePod { pod: name, images });
    }
    match options.output {
        TextOrJson::Json => print_json(&report),
        TextOrJson::Text => {
            if report.pods.is_empty() {
                println!("no Pod in {namespace} is waiting on an image pull");
            }
            for p in &report.pods {
                for i in &p.images {
                    if !args.all && i.verdict.is_ok() && i.state.is_none() {
                        continue;
                    }
                    println!(
                        "{}/{} {} {}: {}; fix: {}",
                        p.pod,
                        i.container,
                        i.verdict.name(),
                        i.image,
                        i.detail,
                        i.fix
                    );
                }
            }
        }
    }
    Ok(exit(report.ok))
}
