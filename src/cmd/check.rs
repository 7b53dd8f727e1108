use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use crate::cli::{CheckArgs, OutputFormat};
use crate::cmd::output;
use crate::policy::{Policy, PolicyError, PolicyProblem};

/// Reads and compiles a policy file (`-` is stdin); the outer error is an unreadable file.
pub(crate) fn read_policy(path: &Path) -> anyhow::Result<Result<Policy, PolicyError>> {
    let origin = output::origin(path);
    let bytes = output::read_bytes(path).with_context(|| format!("reading {origin}"))?;
    let text = String::from_utf8(bytes).with_context(|| format!("{origin} is not UTF-8"))?;
    Ok(Policy::parse(&text, &origin))
}

/// Reads a policy for a command that needs a valid one: problems go to stderr, exit code 2.
pub(crate) fn require_policy(path: &Path) -> anyhow::Result<Result<Policy, ExitCode>> {
    Ok(read_policy(path)?.map_err(|PolicyError(problems)| {
        for problem in problems {
            eprintln!("{problem}");
        }
        ExitCode::from(2)
    }))
}

/// `check -o json|yaml`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    file: String,
    valid: bool,
    source_namespace: Option<String>,
    rules: Vec<String>,
    secrets: Vec<String>,
    problems: Vec<Located>,
    warnings: Vec<Located>,
}

#[derive(Debug, Serialize)]
struct Located {
    line: usize,
    column: usize,
    message: String,
}

impl From<&PolicyProblem> for Located {
    fn from(p: &PolicyProblem) -> Self {
        Self {
            line: p.line,
            column: p.column,
            message: p.message.clone(),
        }
    }
}

/// `check`: exit 0 and a one-line summary on stdout when the policy is valid (warnings, one
/// `FILE:LINE:COL: warning: message` line each, do not fail it); otherwise exit 1 and one
/// `FILE:LINE:COL: message` line per problem on stdout. 2 when the file cannot be read.
pub async fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let (origin, result) = match (&args.policy, &args.helm_values) {
        (Some(path), _) => (output::origin(path), read_policy(path)?),
        (None, Some(path)) => {
            let origin = output::origin(path);
            let bytes = output::read_bytes(path).with_context(|| format!("reading {origin}"))?;
            let text =
                String::from_utf8(bytes).with_context(|| format!("{origin} is not UTF-8"))?;
            (origin.clone(), policy_in_helm_values(&text, &origin)?)
        }
        (None, None) => anyhow::bail!("give --policy FILE or --helm-values FILE"),
    };
    let code = if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    if args.output != OutputFormat::Text {
        let report = match &result {
            Ok(policy) => Report {
                file: origin,
                valid: true,
                source_namespace: Some(policy.source_namespace.clone()),
                rules: policy.rules.iter().map(|r| r.name.clone()).collect(),
                secrets: policy.secret_names().into_iter().collect(),
                problems: Vec::new(),
                warnings: policy.warnings.iter().map(Located::from).collect(),
            },
            Err(PolicyError(problems)) => Report {
                file: origin,
                valid: false,
                source_namespace: None,
                rules: Vec::new(),
                secrets: Vec::new(),
                problems: problems.iter().map(Located::from).collect(),
                warnings: Vec::new(),
            },
        };
        print!(
            "{}",
            output::render(&report, args.output == OutputFormat::Yaml)
                .map_err(anyhow::Error::msg)?
        );
        return Ok(code);
    }
    match result {
        Ok(policy) => {
            for warning in &policy.warnings {
                println!(
                    "{}:{}:{}: warning: {}",
                    warning.origin, warning.line, warning.column, warning.message
                );
            }
            let secrets = policy.secret_names();
            println!(
                "{origin}: ok: {} rule{}, {} secret{} from namespace {}{}",
                policy.rules.len(),
                if policy.rules.len() == 1 { "" } else { "s" },
                secrets.len(),
                if secrets.len() == 1 { "" } else { "s" },
                policy.source_namespace,
                if policy.rules.is_empty() {
                    " (no rules: nothing is injected)"
                } else {
                    ""
                }
            );
            for source in &policy.token_sources {
                let used = policy.rules.iter().any(|r| r.secret == source.secret);
                println!(
                    "token source {}: {} ({}){}",
                    source.secret,
                    source.provider.kind(),
                    source.provider.fingerprint(),
                    if used {
                        ""
                    } else {
                        "; no rule hands it out yet"
                    }
                );
            }
        }
        Err(PolicyError(problems)) => {
            for problem in problems {
                println!("{problem}");
            }
        }
    }
    Ok(code)
}

/// The part of a Helm values file `check --helm-values` reads.
#[derive(Deserialize)]
struct Values {
    #[serde(default)]
    policy: Option<ValuesPolicy>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ValuesPolicy {
    #[serde(default)]
    create: Option<bool>,
    #[serde(default)]
    config_map_name: Option<String>,
    #[serde(default)]
    spec: Option<Spanned<serde_json::Value>>,
}

/// The chart renders `policy.spec` into its ConfigMap: check exactly that. Problems are
/// located in the values file itself: everything before the `spec` node is blanked out (the
/// lines kept, empty), the block under it kept as it stands, so the policy parser's lines
/// and columns are the file's.
fn policy_in_helm_values(text: &str, origin: &str) -> anyhow::Result<Result<Policy, PolicyError>> {
    let at_top = |message: String| {
        Ok(Err(PolicyError(vec![PolicyProblem {
            origin: origin.to_string(),
            line: 1,
            column: 1,
            message,
        }])))
    };
    let values: Values = match serde_saphyr::from_str(text) {
        Ok(values) => values,
        Err(e) => return at_top(format!("not a Helm values file: {}", e.without_snippet())),
    };
    let policy = values.policy.unwrap_or(ValuesPolicy {
        create: None,
        config_map_name: None,
        spec: None,
    });
    if policy.create == Some(false) {
        anyhow::bail!(
            "{origin}: policy.create is false, so the chart deploys no policy of its own and the webhook reads the existing ConfigMap {}; check that policy with --policy",
            policy
                .config_map_name
                .as_deref()
                .unwrap_or("<release>-pullsecret-injector-policy")
        );
    }
    let Some(spec) = policy.spec else {
        return at_top(
            "no policy.spec: the chart would deploy its default policy, which has no rules (nothing is injected)".to_string(),
        );
    };
    let line = spec.referenced.line() as usize;
    let column = spec.referenced.column() as usize;
    let indent = column.saturating_sub(1);
    let mut block = String::with_capacity(text.len());
    for (i, source) in text.lines().enumerate() {
        let number = i + 1;
        if number < line {
            block.push('\n');
            continue;
        }
        if number == line {
            block.extend(std::iter::repeat_n(' ', indent));
            block.extend(source.chars().skip(indent));
            block.push('\n');
            continue;
        }
        let trimmed = source.trim_start();
        let own_indent = source.chars().count() - trimmed.chars().count();
        if !trimmed.is_empty() && !trimmed.starts_with('#') && own_indent < indent {
            break;
        }
        block.push_str(source);
        block.push('\n');
    }
    Ok(Policy::parse(&block, origin))
}
