//! `audit`: read a cluster and report what the kubelet would make of its pull secrets.
//! This file gathers (lists, a page at a time; only registry-typed Secrets) and prints; the
//! decision is [`crate::audit`].
//!
//! Exit codes: 0 clean, 1 findings, 2 when the cluster or the policy cannot be read.

use std::process::ExitCode;

use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, ServiceAccount};
use kube::Api;
use kube::api::ListParams;
use thiserror::Error;

use crate::cli::{AuditArgs, DEFAULT_WEBHOOK_NAMESPACE, OutputFormat};
use crate::cmd::policy_input::{PolicyInputError, api_message, load_policy};
use crate::dockerconfig::{Severity, TYPE_DOCKERCFG, TYPE_DOCKERCONFIGJSON};
use crate::policy::Policy;

use crate::audit::{AuditReport, ClusterFacts, audit};

#[derive(Debug, Error)]
pub(crate) enum AuditError {
    #[error("{0}")]
    Connect(String),
    #[error("cannot {what}: {message}")]
    Api { what: String, message: String },
    #[error(transparent)]
    Policy(#[from] PolicyInputError),
}

pub async fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let client = crate::kubeconfig::connect(&args.cluster)
        .await
        .map_err(|e| AuditError::Connect(e.to_string()))?;
    let policy = load_policy(
        args.policy.as_deref(),
        args.policy_configmap.as_deref(),
        &client,
    )
    .await?;
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

fn api_error(what: String, err: kube::Error) -> AuditError {
    AuditError::Api {
        what,
        message: api_message(&err),
    }
}

/// Lists every object, a page at a time (large clusters hold many Pods).
async fn list_all<K>(api: &Api<K>, params: ListParams, what: &str) -> Result<Vec<K>, AuditError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    crate::cmd::list::list_all(api, params)
        .await
        .map_err(|e| api_error(format!("list {what}"), e))
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
    facts.service_accounts = list_all(
        &Api::<ServiceAccount>::all(client.clone()),
        ListParams::default(),
        "ServiceAccounts",
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
        let minted = s
            .token_source
            .as_ref()
            .map(|kind| format!(" (minted by serve: {kind})"))
            .unwrap_or_default();
        let expiry = match &s.expires_at {
            Some(at) if s.expired => format!(" EXPIRED at {at}"),
            Some(at) => format!(" expires {at}"),
            None => String::new(),
        };
        println!(
            "  {}/{} [{}] covers: {covers}{copy}{minted}{expiry}",
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
