use std::process::ExitCode;

use k8s_openapi::api::core::v1::{Pod, Secret};
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
    /// (`--cluster`, `audit`, or the Secret's `pullsecret-injector.io/expires-at`).
    refresh: &'static str,
    /// With `--cluster`: the Secret in the source namespace, then the copy in the Pod's
    /// namespace (when that is another one), as the cluster holds them now.
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<Vec<LiveSecret>>,
}

/// A token Secret as read from the cluster: metadata only, its data is never fetched.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LiveSecret {
    namespace: String,
    name: String,
    /// `source` (what serve mints) or `copy` (what the Pod's namespace holds).
    role: &'static str,
    exists: bool,
    /// Labelled as ours: serve writes it. A user's Secret of that name is left alone.
    managed: bool,
    /// The `pullsecret-injector.io/expires-at` annotation as written.
    expires_at: Option<String>,
    /// `null` when there is no readable expiry.
    expired: Option<bool>,
    /// Why it needs attention, for people; `null` when the token is current.
    note: Option<String>,
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
    let live = args.cluster
        || args.cluster_args.kubeconfig.is_some()
        || args.cluster_args.context.is_some();
    if live {
        let client = crate::kubeconfig::connect(&args.cluster_args)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(policy) = &policy {
            read_token_secrets(&client, policy, &args.namespace, &mut explanation).await;
        }
        if explanation.token_sources.is_empty() {
            notes.push("--cluster: the image gets no token Secret, nothing to read".to_string());
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

/// Reads, for each token Secret the image gets, its metadata in the source namespace and in
/// the Pod's namespace. A read that fails (e.g. forbidden there) is reported on that Secret,
/// not as a failure of the command.
async fn read_token_secrets(
    client: &kube::Client,
    policy: &Policy,
    pod_namespace: &str,
    out: &mut Explanation,
) {
    let now = crate::expiry::now();
    for token in &mut out.token_sources {
        let mut places = vec![(policy.source_namespace.clone(), "source")];
        if pod_namespace != policy.source_namespace {
            places.push((pod_namespace.to_string(), "copy"));
        }
        let mut read = Vec::new();
        for (namespace, role) in places {
            let api: kube::Api<Secret> = kube::Api::namespaced(client.clone(), &namespace);
            let answer = api.get_metadata_opt(&token.secret).await;
            read.push(live_secret(namespace, &token.secret, role, answer, now));
        }
        token.cluster = Some(read);
    }
}

fn live_secret(
    namespace: String,
    name: &str,
    role: &'static str,
    answer: Result<Option<kube::core::PartialObjectMeta<Secret>>, kube::Error>,
    now: crate::expiry::UnixTime,
) -> LiveSecret {
    use crate::expiry::{self, ANNOTATION_EXPIRES_AT};
    let mut live = LiveSecret {
        namespace,
        name: name.to_string(),
        role,
        exists: false,
        managed: false,
        expires_at: None,
        expired: None,
        note: None,
    };
    let meta = match answer {
        Err(e) => {
            live.note = Some(format!(
                "cannot read it: {}",
                crate::cmd::policy_input::api_message(&e)
            ));
            return live;
        }
        Ok(None) => {
            live.note = Some(match role {
                "source" => "not there: serve has not minted it yet (see serve's log and the TokenMintFailed Events)".to_string(),
                _ => "not there: serve copies it at the first admission of a Pod that needs it".to_string(),
            });
            return live;
        }
        Ok(Some(meta)) => meta,
    };
    // Only the metadata was fetched; this Secret carries no data.
    let secret = Secret {
        metadata: meta.metadata,
        ..Secret::default()
    };
    live.exists = true;
    live.managed = crate::k8s::copy::is_managed(&secret);
    live.expires_at =
        crate::k8s::copy::annotation(&secret, ANNOTATION_EXPIRES_AT).map(str::to_string);
    let at = live.expires_at.as_deref().and_then(expiry::parse_rfc3339);
    live.expired = at.map(|at| at <= now);
    live.note = match (live.managed, &live.expires_at, at) {
        (false, _, _) => Some(
            "not managed by pullsecret-injector: serve leaves it alone and does not refresh it"
                .to_string(),
        ),
        (true, None, _) => Some(format!("no {ANNOTATION_EXPIRES_AT} annotation")),
        (true, Some(text), None) => Some(format!(
            "its {ANNOTATION_EXPIRES_AT} {:?} is not an RFC 3339 time",
            crate::quote::short(text)
        )),
        (true, Some(_), Some(at)) if at <= now => Some(format!(
            "expired {}: the registry refuses pulls with it",
            expiry::relative(at, now)
        )),
        (true, Some(_), Some(_)) => None,
    };
    live
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
    let labels = crate::state::with_name_label(args.namespace_labels.clone(), &args.namespace);
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
                cluster: None,
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
        for live in t.cluster.iter().flatten() {
            let place = format!("{}/{} ({})", live.namespace, live.name, live.role);
            let state = match (live.expires_at.as_deref(), live.expired) {
                (Some(at), Some(true)) => format!("EXPIRED at {at}"),
                (Some(at), Some(false)) => {
                    let left = crate::expiry::parse_rfc3339(at)
                        .map(|a| format!(" ({})", crate::expiry::relative(a, crate::expiry::now())))
                        .unwrap_or_default();
                    format!("expires {at}{left}")
                }
                _ => String::new(),
            };
            let note = live.note.as_deref().unwrap_or_default();
            let sep = if !state.is_empty() && !note.is_empty() {
                "; "
            } else {
                ""
            };
            println!("token secret:   {place} {state}{sep}{note}");
        }
    }
    for note in notes {
        println!("note:           {note}");
    }
}
