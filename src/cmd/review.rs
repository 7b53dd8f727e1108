use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::admission;
use crate::cli::{ReviewArgs, ReviewOutput};
use crate::cmd::check::require_policy;
use crate::state::{AppState, StaticNamespaces};

/// `review`: answers an AdmissionReview (or a bare Pod, as a CREATE) exactly as `serve`
/// would, without a cluster. Exit 0 with the answer on stdout; 1 when the input cannot be
/// reviewed; 2 for usage or policy errors.
pub async fn run(args: ReviewArgs) -> anyhow::Result<ExitCode> {
    let policy = match require_policy(&args.policy)? {
        Ok(policy) => policy,
        Err(code) => return Ok(code),
    };
    let input = read_input(&args.input)?;
    let body = match review_body(&input, &args.namespace) {
        Ok(body) => body,
        Err(message) => {
            eprintln!("error: {message}");
            return Ok(ExitCode::from(1));
        }
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
        .unwrap_or_else(|| args.namespace.clone());
    let mut labels = args.namespace_labels.clone();
    labels
        .entry("kubernetes.io/metadata.name".to_string())
        .or_insert_with(|| namespace.clone());
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
    let mut stdout = std::io::stdout().lock();
    match args.output {
        // Exactly the bytes `serve` sends, without a trailing newline.
        ReviewOutput::Response => stdout.write_all(&answer.body)?,
        ReviewOutput::Patched => {
            let Some(object) = answer.patched else {
                eprintln!("error: the request carries no object to patch");
                return Ok(ExitCode::from(1));
            };
            serde_json::to_writer_pretty(&mut stdout, &object)?;
            writeln!(stdout)?;
        }
    }
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
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

/// The AdmissionReview JSON to answer: the input itself when it is one, else the bare Pod
/// wrapped as a CREATE in `namespace` with a uid derived from the input.
fn review_body(input: &[u8], namespace: &str) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(input).map_err(|_| "input is not UTF-8".to_string())?;
    let (value, is_json) = match serde_json::from_str::<Value>(text) {
        Ok(v) => (v, true),
        Err(json_err) => match serde_saphyr::from_str::<Value>(text) {
            Ok(v) => (v, false),
            Err(_) => return Err(format!("input is neither JSON nor YAML: {json_err}")),
        },
    };
    match value.get("kind").and_then(Value::as_str) {
        Some("AdmissionReview") if is_json => Ok(input.to_vec()),
        Some("AdmissionReview") => serde_json::to_vec(&value).map_err(|e| e.to_string()),
        Some("Pod") => {
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
            serde_json::to_vec(&review).map_err(|e| e.to_string())
        }
        Some(other) => Err(format!(
            "input is a {other}, expected an AdmissionReview or a Pod"
        )),
        None => Err("input has no kind; expected an AdmissionReview or a Pod".into()),
    }
}
