use std::process::ExitCode;

use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;
use serde_json::json;

use crate::cli::{ExplainArgs, TextOrJson};
use crate::cmd::check::require_policy;
use crate::plan::{self, Namespace, Operation};
use crate::policy::Policy;
use crate::reference::ImageRef;

/// `explain -o json`: exactly these keys, `null` where a value is absent.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Explanation {
    image: String,
    valid: bool,
    error: Option<String>,
    registry: Option<String>,
    repository: Option<String>,
    tag: Option<String>,
    digest: Option<String>,
    lookup_target: Option<String>,
    rules: Vec<String>,
    secrets: Vec<String>,
    /// Matching rules in ServiceAccount mode: the ServiceAccounts of the namespace that list
    /// the secret, so Pods running as them get it even without the webhook.
    service_accounts: Vec<ServiceAccountCoverage>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ServiceAccountCoverage {
    rule: String,
    secret: String,
    /// As the policy writes them; `*` is every ServiceAccount of the namespace.
    service_accounts: Vec<String>,
}

/// `explain`: how one image is normalized and which rules and secrets a Pod using it gets.
/// An invalid image is an answer (exit 0); a bad policy exits 2.
pub async fn run(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let policy = match &args.policy {
        Some(path) => match require_policy(path)? {
            Ok(policy) => Some(policy),
            Err(code) => return Ok(code),
        },
        None => None,
    };
    let mut explanation = Explanation {
        image: args.image.clone(),
        valid: false,
        error: None,
        registry: None,
        repository: None,
        tag: None,
        digest: None,
        lookup_target: None,
        rules: Vec::new(),
        secrets: Vec::new(),
        service_accounts: Vec::new(),
    };
    let mut notes = Vec::new();
    match ImageRef::parse(&args.image) {
        Err(err) => explanation.error = Some(err.to_string()),
        Ok(reference) => {
            explanation.valid = true;
            explanation.lookup_target = Some(reference.lookup_target());
            explanation.registry = Some(reference.registry);
            explanation.repository = Some(reference.repository);
            explanation.tag = reference.tag;
            explanation.digest = reference.digest;
            match &policy {
                Some(policy) => notes.extend(apply_policy(policy, &args, &mut explanation)?),
                None => notes.push("no --policy given: no rules apply".to_string()),
            }
        }
    }

    match args.output {
        TextOrJson::Json => println!("{}", serde_json::to_string_pretty(&explanation)?),
        TextOrJson::Text => print_text(&explanation, &notes),
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the same plan `serve` would for a Pod with this one image; returns notes for humans.
fn apply_policy(
    policy: &Policy,
    args: &ExplainArgs,
    out: &mut Explanation,
) -> anyhow::Result<Vec<String>> {
    let mut notes = Vec::new();
    if policy.namespace_excluded(&args.namespace, &args.webhook_namespace) {
        notes.push(format!(
            "namespace {:?} is excluded from injection",
            args.namespace
        ));
    }
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "explain", "namespace": args.namespace},
        "spec": {"containers": [{"name": "explain", "image": args.image}]},
    }))?;
    let mut labels = args.namespace_labels.clone();
    labels
        .entry("kubernetes.io/metadata.name".to_string())
        .or_insert_with(|| args.namespace.clone());
    let namespace = Namespace {
        name: &args.namespace,
        labels: Some(&labels),
    };
    let decision = plan::plan(
        policy,
        &pod,
        &namespace,
        Operation::Create,
        &args.webhook_namespace,
    );
    for need in decision.secrets {
        for rule in need.rules {
            if !out.rules.contains(&rule) {
                out.rules.push(rule);
            }
        }
        out.secrets.push(need.name);
    }
    // Rules in policy order, whatever secret they share.
    out.rules
        .sort_by_key(|name| policy.rules.iter().position(|r| &r.name == name));
    out.service_accounts = policy
        .rules
        .iter()
        .filter(|r| out.rules.contains(&r.name) && !r.service_accounts.is_empty())
        .map(|r| ServiceAccountCoverage {
            rule: r.name.clone(),
            secret: r.secret.clone(),
            service_accounts: r.service_accounts.clone(),
        })
        .collect();
    notes.extend(decision.warnings);
    Ok(notes)
}

fn print_text(e: &Explanation, notes: &[String]) {
    let none = "-";
    println!("image:          {}", e.image);
    if let Some(error) = &e.error {
        println!("valid:          no ({error})");
        println!(
            "                the kubelet would fail this image; no pull secret is added for it"
        );
        return;
    }
    println!("registry:       {}", e.registry.as_deref().unwrap_or(none));
    println!(
        "repository:     {}",
        e.repository.as_deref().unwrap_or(none)
    );
    println!("tag:            {}", e.tag.as_deref().unwrap_or(none));
    println!("digest:         {}", e.digest.as_deref().unwrap_or(none));
    println!(
        "lookup target:  {}",
        e.lookup_target.as_deref().unwrap_or(none)
    );
    let list = |v: &[String]| {
        if v.is_empty() {
            "(none)".to_string()
        } else {
            v.join(", ")
        }
    };
    println!("rules:          {}", list(&e.rules));
    println!("secrets:        {}", list(&e.secrets));
    for sa in &e.service_accounts {
        let who = if sa.service_accounts.iter().any(|n| n == "*") {
            "every ServiceAccount".to_string()
        } else {
            format!("ServiceAccounts {}", sa.service_accounts.join(", "))
        };
        println!(
            "serviceAccounts: {} listed on {who} of the namespace (rule {}): Pods running as them get it even while the webhook is down",
            sa.secret, sa.rule
        );
    }
    for note in notes {
        println!("note:           {note}");
    }
}
