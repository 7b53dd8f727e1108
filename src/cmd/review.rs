use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::admission;
use crate::cli::{ReviewArgs, ReviewOutput};
use crate::cmd::check::require_policy;
use crate::cmd::output;
use crate::state::{AppState, StaticNamespaces};

/// `review`: answers an AdmissionReview (or a bare Pod, as a CREATE) exactly as `serve`
/// would, without a cluster. Exit 0 with the answer on stdout; 1 when the input cannot be
/// reviewed; 2 for usage or policy errors.
pub async fn run(args: ReviewArgs) -> anyhow::Result<ExitCode> {
    if args.policy.as_os_str() == "-" && args.input == "-" {
        anyhow::bail!(
            "--policy - and the input both read stdin; give the AdmissionReview or Pod as a file"
        );
    }
    let policy = match require_policy(&args.policy)? {
        Ok(policy) => policy,
        Err(code) => return Ok(code),
    };
    let input = read_input(&args.input)?;
    let body = match review_body(&input, args.namespace.as_deref()) {
        Ok(body) => body,
        Err(Refusal::Input(message)) => {
            eprintln!("error: {message}");
            return Ok(ExitCode::from(1));
        }
        Err(Refusal::Usage(message)) => anyhow::bail!(message),
    };

    // Offline, the namespace under review has exactly the labels given on the command line,
    // plus the one the apiserver puts on every namespace.
    let namespace = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| {
            v.pointer("/request/namespace")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    let labels = crate::state::with_name_label(args.namespace_labels.clone(), &namespace);
    if let Some(note) = service_account_note(&policy, &body, &namespace, &labels, &args) {
        eprintln!("note: {note}");
    }
    let mut state = AppState::offline(Some(policy), &args.webhook_namespace);
    state.namespaces = Arc::new(StaticNamespaces(BTreeMap::from([(namespace, labels)])));

    let answer = match admission::respond(&state, &body, None).await {
        Ok(answer) => answer,
        Err(err) => {
            eprintln!("error: {err}");
            return Ok(ExitCode::from(1));
        }
    };
    let patched = args.patched || args.output == ReviewOutput::Patched;
    let yaml = args.output == ReviewOutput::Yaml;
    let mut stdout = std::io::stdout().lock();
    if patched {
        let object = match patched_object(&body, &answer.body) {
            Ok(object) => object,
            Err(message) => {
                eprintln!("error: {message}");
                return Ok(ExitCode::from(1));
            }
        };
        if yaml {
            stdout.write_all(
                output::render(&object, true)
                    .map_err(anyhow::Error::msg)?
                    .as_bytes(),
            )?;
        } else {
            serde_json::to_writer_pretty(&mut stdout, &object)?;
            writeln!(stdout)?;
        }
    } else if yaml {
        let response: Value = serde_json::from_slice(&answer.body)?;
        stdout.write_all(
            output::render(&response, true)
                .map_err(anyhow::Error::msg)?
                .as_bytes(),
        )?;
    } else {
        // Exactly the bytes `serve` sends, without a trailing newline.
        stdout.write_all(&answer.body)?;
    }
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The request's object with the patch of `response` applied: what the apiserver would
/// store. Built here, not in `respond`, because serving never needs it.
fn patched_object(request: &[u8], response: &[u8]) -> Result<Value, String> {
    let mut request: Value =
        serde_json::from_slice(request).map_err(|e| format!("reading the request: {e}"))?;
    let object = match request.pointer_mut("/request/object") {
        Some(object) if !object.is_null() => object,
        _ => return Err("the request carries no object to patch".into()),
    };
    let response: Value =
        serde_json::from_slice(response).map_err(|e| format!("reading the response: {e}"))?;
    if let Some(encoded) = response.pointer("/response/patch").and_then(Value::as_str) {
        let bytes = STANDARD
            .decode(encoded)
            .map_err(|e| format!("the response's patch is not base64: {e}"))?;
        let patch: json_patch::Patch = serde_json::from_slice(&bytes)
            .map_err(|e| format!("the response's patch is not a JSON Patch: {e}"))?;
        json_patch::patch(object, &patch.0)
            .map_err(|e| format!("the patch does not apply to the Pod: {e}"))?;
    }
    Ok(object.take())
}

/// ServiceAccount coverage of the reviewed Pod: the secrets its ServiceAccount lists under
/// the policy. Offline the Pod is seen as written; in a cluster the ServiceAccount admission
/// plugin copies them into it before any webhook runs (and the webhook then adds no
/// duplicate).
fn service_account_note(
    policy: &crate::policy::Policy,
    body: &[u8],
    namespace: &str,
    labels: &BTreeMap<String, String>,
    args: &ReviewArgs,
) -> Option<String> {
    let review: Value = serde_json::from_slice(body).ok()?;
    let spec = review.pointer("/request/object/spec")?;
    let account = spec
        .get("serviceAccountName")
        .or_else(|| spec.get("serviceAccount"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    let wanted = crate::coverage::wanted(
        policy,
        namespace,
        Some(labels),
        account,
        &args.webhook_namespace,
    );
    (!wanted.names.is_empty()).then(|| {
        format!(
            "ServiceAccount {namespace}/{account} lists {} (ServiceAccount mode); in a cluster the ServiceAccount admission plugin adds them to this Pod before the webhook runs",
            wanted.names.join(", ")
        )
    })
}

fn read_input(input: &str) -> anyhow::Result<Vec<u8>> {
    if input == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading stdin")?;
        Ok(buf)
    } else {
        std::fs::read(input).with_context(|| format!("reading {input}"))
    }
}

/// The namespace of a bare Pod that names none and is given none, as kubectl.
const DEFAULT_NAMESPACE: &str = "default";

/// Why an input is not reviewed: bad input (exit 1) or contradicting flags (exit 2).
enum Refusal {
    Input(String),
    Usage(String),
}

impl From<String> for Refusal {
    fn from(message: String) -> Self {
        Refusal::Input(message)
    }
}

/// The AdmissionReview JSON to answer: the input itself when it is one, else the bare Pod
/// wrapped as a CREATE in its namespace (`metadata.namespace`, else `--namespace`, else
/// `default`) with a uid derived from the input. A `--namespace` that contradicts the
/// object's own is refused, as kubectl refuses it.
fn review_body(input: &[u8], flag_namespace: Option<&str>) -> Result<Vec<u8>, Refusal> {
    let text = std::str::from_utf8(input).map_err(|_| "input is not UTF-8".to_string())?;
    let (value, is_json) = match serde_json::from_str::<Value>(text) {
        Ok(v) => (v, true),
        Err(json_err) => match serde_saphyr::from_str::<Value>(text) {
            Ok(v) => (v, false),
            Err(_) => return Err(format!("input is neither JSON nor YAML: {json_err}").into()),
        },
    };
    let conflict = |own: &str, what: &str| match flag_namespace {
        Some(flag) if flag != own => Err(Refusal::Usage(format!(
            "the namespace of the {what} ({own:?}) does not match --namespace {flag:?}; drop --namespace or pass --namespace {own}"
        ))),
        _ => Ok(()),
    };
    match value.get("kind").and_then(Value::as_str) {
        Some("AdmissionReview") => {
            if let Some(own) = value.pointer("/request/namespace").and_then(Value::as_str) {
                conflict(own, "AdmissionReview request")?;
            }
            if is_json {
                Ok(input.to_vec())
            } else {
                Ok(serde_json::to_vec(&value).map_err(|e| e.to_string())?)
            }
        }
        Some("Pod") => {
            let own = value
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .filter(|ns| !ns.is_empty());
            if let Some(own) = own {
                conflict(own, "Pod")?;
            }
            let namespace = own.or(flag_namespace).unwrap_or(DEFAULT_NAMESPACE);
            let name = value
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let digest = Sha256::digest(input);
            let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
            let uid = format!(
                "{}-{}-{}-{}-{}",
                &hex[0..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..32]
            );
            let review = json!({
                "apiVersion": admission::API_VERSION,
                "kind": admission::KIND,
                "request": {
                    "uid": uid,
                    "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                    "requestResource": {"group": "", "version": "v1", "resource": "pods"},
                    "name": name,
                    "namespace": namespace,
                    "operation": "CREATE",
                    "object": value,
                    "oldObject": null,
                    "dryRun": false,
                }
            });
            Ok(serde_json::to_vec(&review).map_err(|e| e.to_string())?)
        }
        Some(other) => {
            Err(format!("input is a {other}, expected an AdmissionReview or a Pod").into())
        }
        None => Err("input has no kind; expected an AdmissionReview or a Pod"
            .to_string()
            .into()),
    }
}
