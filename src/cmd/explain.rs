use std::process::ExitCode;

use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;
use serde_json::json;

use crate::cli::{ExplainArgs, OutputFormat};
use crate::cmd::check::require_policy;
use crate::cmd::output;
use crate::plan::{self, Namespace, Operation, PodFacts};
use crate::policy::{Policy, TokenProvider};
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
    /// Every other rule of the policy, with why it gives this image nothing here.
    not_applied: Vec<NotApplied>,
    /// Matching rules in ServiceAccount mode: the ServiceAccounts of the namespace that list
    /// the secret, so Pods running as them get it even without the webhook.
    service_accounts: Vec<ServiceAccountCoverage>,
    /// The secrets given that `serve` mints itself (`tokenSources`), with how.
    token_sources: Vec<MintedSecret>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct MintedSecret {
    secret: String,
    /// `ecr`, `google` or `azure`.
    kind: String,
    /// What is minted, in words: region and registry ids, or the registries.
    minted_for: String,
    /// When serve mints it again. The current token's expiry is only known in the cluster
    /// (`audit`, or the Secret's `pullsecret-injector.io/expires-at`).
    refresh: &'static str,
}

/// What `serve` mints for `provider`, in words.
fn minted_for(provider: &TokenProvider) -> String {
    match provider {
        TokenProvider::Ecr {
            region,
            registry_ids,
        } if registry_ids.is_empty() => format!("region {region}, the caller's account"),
        TokenProvider::Ecr {
            region,
            registry_ids,
        } => format!("region {region}, registries {}", registry_ids.join(", ")),
        TokenProvider::Google { registries } => format!("registries {}", registries.join(", ")),
        TokenProvider::Azure { registry } => format!("registry {registry}"),
    }
}

/// The refresh rule of `tokens::refresh_point`, for people.
const REFRESH: &str = "at half-life";

#[derive(Debug, Serialize)]
struct NotApplied {
    rule: String,
    reason: String,
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
        not_applied: Vec::new(),
        token_sources: Vec::new(),
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
        OutputFormat::Json | OutputFormat::Yaml => print!(
            "{}",
            output::render(&explanation, args.output == OutputFormat::Yaml)
                .map_err(anyhow::Error::msg)?
        ),
        OutputFormat::Text => print_text(&explanation, &notes),
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
        &PodFacts::from_pod(&pod),
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
        if let Some(source) = policy.token_source(&need.name) {
            out.token_sources.push(MintedSecret {
                secret: need.name.clone(),
                kind: source.provider.kind().to_string(),
                minted_for: minted_for(&source.provider),
                refresh: REFRESH,
            });
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
    // Why each other rule gives nothing: the namespace as a whole, the registries, then the
    // rule's own namespace filters (the order in which they would have to be fixed).
    let target = out.lookup_target.clone().unwrap_or_default();
    let excluded = policy.why_excluded(&args.namespace, &args.webhook_namespace);
    for rule in policy.rules.iter().filter(|r| !out.rules.contains(&r.name)) {
        let reason = if let Some(why) = &excluded {
            why.clone()
        } else if !rule.matches_target(&target) {
            format!(
                "none of its registries ({}) matches {target}",
                rule.registries.join(", ")
            )
        } else if let Some(why) = rule.why_not_in(&args.namespace, Some(&labels)) {
            why
        } else {
            // Matching and admitted, yet not in the plan: say so rather than guess.
            "not applied by the plan".to_string()
        };
        out.not_applied.push(NotApplied {
            rule: rule.name.clone(),
            reason,
        });
    }
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
    for skipped in &e.not_applied {
        println!("not applied:    {}: {}", skipped.rule, skipped.reason);
    }
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
    for t in &e.token_sources {
        println!(
            "token source:   {} minted by serve ({}, {}), refreshed {}; its expiry is on the Secret (`pullsecret-injector audit`, or its {} annotation)",
            t.secret,
            t.kind,
            t.minted_for,
            t.refresh,
            crate::expiry::ANNOTATION_EXPIRES_AT
        );
    }
    for note in notes {
        println!("note:           {note}");
    }
}
