//! AdmissionReview v1 in and out: decode, call `plan`, ensure copies, encode.
//!
//! `respond` holds the whole decision and is shared by the `/mutate` handler and the
//! `review` command, so `review` prints byte for byte what `serve` answers. The response is
//! written with our own structs: kube-apiserver wants `patch` as a base64 string, and
//! requires `patchType` exactly when a patch is present.
//!
//! The request is read for the facts the decision needs and nothing more: strings are
//! borrowed from the body, the Pod is decoded into [`PodFacts`] (skipping status, env,
//! volumes, managedFields...) and only once the request is known to be about a Pod.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use thiserror::Error;
use tracing::{Instrument, Span, debug, field::Empty, info, warn};

use crate::facts::PodJson;
use crate::plan::{self, Namespace, Operation, PodFacts};
use crate::quote::short;
use crate::state::AppState;

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";

/// kube-apiserver keeps the `?timeout=` we are given; leave this much for the answer to travel.
const TIMEOUT_MARGIN: Duration = Duration::from_millis(500);
/// Longest wait for a brand-new namespace to reach the watch cache. A Namespace and a
/// Deployment applied together race it by milliseconds; a namespace that never shows up
/// (or a cache that is down) must not cost more than this.
const NAMESPACE_WAIT: Duration = Duration::from_millis(250);
/// Our share of the apiserver's 4096-rune warning budget per request.
const MAX_WARNINGS: usize = 10;
const MAX_WARNING_RUNES: usize = 256;
const WARNING_BUDGET_RUNES: usize = 2048;

#[derive(Debug, Error)]
pub enum AdmissionError {
    /// The body is not an AdmissionReview v1 we can read: HTTP 400.
    #[error("{0}")]
    BadRequest(String),
    /// Our own fault: HTTP 500 with a generic body; the detail goes to the log.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AdmissionError {
    /// Label for the `result` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            AdmissionError::BadRequest(_) => "invalid",
            AdmissionError::Internal(_) => "error",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AdmissionError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdmissionError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON body sent to the caller (no internals for a 500).
    pub fn body(&self) -> Vec<u8> {
        let message = match self {
            AdmissionError::BadRequest(m) => m.as_str(),
            AdmissionError::Internal(_) => "internal error",
        };
        serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap_or_default()
    }
}

/// What `respond` answered, with the facts the handler logs and counts.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    /// The AdmissionReview response JSON.
    pub body: Vec<u8>,
    /// The request's uid, echoed in the response (never empty in an `Ok`).
    pub uid: String,
    pub(crate) namespace: String,
    /// The Pod's name, or its `generateName` prefix on CREATE.
    pub(crate) pod: String,
    pub result: Outcome,
}

/// What an admitted request got: the label of the `result` metric and the log field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Outcome {
    /// A JSON patch was sent.
    Patched,
    /// Allowed as it is, no patch.
    #[default]
    Unchanged,
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Patched => "patched",
            Outcome::Unchanged => "unchanged",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------------------------
// Wire types. The request side is lenient: only what we read, everything optional, strings
// borrowed from the body (owned only when JSON escapes make them differ from it).

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "O: Deserialize<'de>"))]
struct ReviewIn<'a, O> {
    #[serde(borrow, default)]
    api_version: Cow<'a, str>,
    #[serde(borrow, default)]
    kind: Cow<'a, str>,
    #[serde(default)]
    request: Option<RequestIn<'a, O>>,
}

/// `O` is how `object` and `oldObject` are read: [`PodJson`] decodes them in the same pass as
/// the rest of the body; a [`RawValue`] keeps the span of the body they occupy, to be decoded
/// as a Pod once the request is known to be about one.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "O: Deserialize<'de>"))]
struct RequestIn<'a, O> {
    #[serde(borrow, default)]
    uid: Cow<'a, str>,
    #[serde(borrow)]
    kind: Option<GroupVersionKind<'a>>,
    #[serde(borrow, default)]
    sub_resource: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    namespace: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    operation: Cow<'a, str>,
    #[serde(default)]
    object: Option<O>,
    #[serde(default)]
    old_object: Option<O>,
    #[serde(default)]
    dry_run: Option<bool>,
}

/// A request's Pod object as [`RequestIn`] read it.
trait ObjectIn<'a> {
    /// The Pod's facts; `None` for JSON `null`.
    fn facts(self) -> Option<Result<PodFacts<'a>, serde_json::Error>>;
}

impl<'a> ObjectIn<'a> for &'a RawValue {
    fn facts(self) -> Option<Result<PodFacts<'a>, serde_json::Error>> {
        (self.get() != "null").then(|| PodFacts::from_json(self.get().as_bytes()))
    }
}

impl<'a> ObjectIn<'a> for PodJson<'a> {
    fn facts(self) -> Option<Result<PodFacts<'a>, serde_json::Error>> {
        Some(self.into_facts())
    }
}

#[derive(Debug, Deserialize)]
struct GroupVersionKind<'a> {
    #[serde(borrow, default)]
    group: Cow<'a, str>,
    #[serde(borrow, default)]
    version: Cow<'a, str>,
    #[serde(borrow, default)]
    kind: Cow<'a, str>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    /// Standard padded base64 of the JSON Patch document.
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

// ---------------------------------------------------------------------------------------------

/// Decides and encodes the answer to one AdmissionReview body. `timeout` is the apiserver's
/// `?timeout=`; it bounds the time spent ensuring Secret copies.
pub async fn respond(
    state: &AppState,
    body: &[u8],
    timeout: Option<Duration>,
) -> Result<Answer, AdmissionError> {
    let mut answer = Answer::default();
    respond_into(state, body, timeout, &mut answer).await?;
    Ok(answer)
}

/// [`respond`], filling `answer` as the request is read: a request refused after its uid,
/// namespace or Pod name were read leaves them there for the log line.
async fn respond_into(
    state: &AppState,
    body: &[u8],
    timeout: Option<Duration>,
    answer: &mut Answer,
) -> Result<(), AdmissionError> {
    // One pass: the Pod objects are decoded where they are met. A body that does not decode so
    // (it is not an AdmissionReview, or its object is not a Pod as we read one) is read again
    // the two-pass way, which tells what is wrong with it and lets a non-Pod object through.
    if let Ok(review) = serde_json::from_slice::<ReviewIn<'_, PodJson<'_>>>(body) {
        return decide(state, review, timeout, answer).await;
    }
    let review: ReviewIn<'_, &RawValue> = serde_json::from_slice(body).map_err(|e| {
        AdmissionError::BadRequest(format!(
            "body is not an AdmissionReview: {}",
            json_problem(&e)
        ))
    })?;
    decide(state, review, timeout, answer).await
}

async fn decide<'a, O: ObjectIn<'a>>(
    state: &AppState,
    review: ReviewIn<'a, O>,
    timeout: Option<Duration>,
    answer: &mut Answer,
) -> Result<(), AdmissionError> {
    if review.kind != KIND || review.api_version != API_VERSION {
        return Err(AdmissionError::BadRequest(format!(
            "expected kind {KIND} apiVersion {API_VERSION}, got kind {:?} apiVersion {:?}",
            short(&review.kind),
            short(&review.api_version)
        )));
    }
    let request = review
        .request
        .ok_or_else(|| AdmissionError::BadRequest("AdmissionReview has no request".into()))?;
    if request.uid.is_empty() {
        return Err(AdmissionError::BadRequest(
            "AdmissionReview request has no uid".into(),
        ));
    }
    // Recorded as soon as known, so that everything logged for this request carries them.
    let span = Span::current();
    span.record("uid", short(&request.uid).as_ref());
    answer.uid = request.uid.to_string();
    answer.namespace = request.namespace.as_deref().unwrap_or_default().to_string();
    answer.pod = request.name.as_deref().unwrap_or_default().to_string();

    let is_pod = request
        .kind
        .as_ref()
        .is_some_and(|k| k.group.is_empty() && k.version == "v1" && k.kind == "Pod");
    let is_update = match request.operation.as_ref() {
        "CREATE" => false,
        "UPDATE" => true,
        _ => {
            answer.body = encode(&request.uid, None, Vec::new())?;
            return Ok(());
        }
    };
    if !is_pod {
        span.record("namespace", short(&answer.namespace).as_ref());
        span.record("pod", short(&answer.pod).as_ref());
        answer.body = encode(&request.uid, None, Vec::new())?;
        return Ok(());
    }
    // The old Pod only sharpens UPDATE warnings; one that does not decode is left out.
    let old_pod: Option<PodFacts<'_>> = request
        .old_object
        .filter(|_| is_update)
        .and_then(ObjectIn::facts)
        .and_then(Result::ok);
    let operation = if is_update {
        Operation::Update {
            old: old_pod.as_ref(),
        }
    } else {
        Operation::Create
    };

    let pod = request
        .object
        .and_then(ObjectIn::facts)
        .ok_or_else(|| AdmissionError::BadRequest("Pod request has no object".into()))?
        .map_err(|e| {
            AdmissionError::BadRequest(format!("request object is not a Pod: {}", json_problem(&e)))
        })?;
    if answer.namespace.is_empty() {
        answer.namespace = pod.namespace.as_deref().unwrap_or_default().to_string();
    }
    if answer.pod.is_empty() {
        answer.pod = pod.display_name().to_string();
    }
    if answer.namespace.is_empty() {
        return Err(AdmissionError::BadRequest(
            "Pod request has no namespace".into(),
        ));
    }
    span.record("namespace", short(&answer.namespace).as_ref());
    span.record("pod", short(&answer.pod).as_ref());
    debug!(
        subresource = request.sub_resource.as_deref().unwrap_or(""),
        "deciding"
    );

    let Some(policy) = state.policy.get() else {
        // Not ready: let the Pod through untouched rather than block the cluster.
        answer.body = encode(
            &request.uid,
            None,
            vec!["pullsecret-injector has no policy loaded yet; no pull secrets were added".into()],
        )?;
        return Ok(());
    };
    let mut deadline = match timeout {
        Some(t) => state.copy_deadline.min(t.saturating_sub(TIMEOUT_MARGIN)),
        None => state.copy_deadline,
    };
    let mut labels: Option<BTreeMap<String, String>> = state.namespaces.labels(&answer.namespace);
    if labels.is_none() && policy.needs_labels(&answer.namespace, &state.webhook_namespace) {
        let budget = NAMESPACE_WAIT.min(deadline);
        debug!(
            budget_ms = budget.as_millis(),
            "waiting for namespace labels"
        );
        let started = Instant::now();
        labels = state
            .namespaces
            .wait_for_labels(&answer.namespace, budget)
            .await;
        let waited = started.elapsed();
        debug!(
            waited_ms = waited.as_millis(),
            found = labels.is_some(),
            "waited for namespace labels"
        );
        deadline = deadline.saturating_sub(waited);
    }
    let namespace = Namespace {
        name: &answer.namespace,
        labels: labels.as_ref(),
    };
    let mut decision = plan::plan(
        &policy,
        &pod,
        &namespace,
        operation,
        &state.webhook_namespace,
    );

    if let Some(cache) = &state.pull_secrets {
        // Before the copy: a copy equals its source, so the source's facts stand in for it.
        let lookup = |name: &str| {
            cache
                .facts(&answer.namespace, name)
                .or_else(|| cache.facts(&policy.source_namespace, name))
        };
        let warned = crate::diagnose::admission_warnings(
            &policy,
            &pod,
            &decision.secrets,
            &lookup,
            crate::expiry::now(),
        );
        for w in warned {
            state.metrics.secret_warning(w.reason);
            decision.warnings.push(w.message);
        }
    }

    let dry_run = request.dry_run.unwrap_or(false);
    if let Some(ensurer) = &state.ensurer
        && !dry_run
        && !decision.secrets.is_empty()
    {
        // Copies made for this Pod are logged with the request they were made for.
        let copying = tracing::info_span!(
            "copying",
            uid = %short(&answer.uid),
            pod = %short(&answer.pod)
        );
        let warnings = ensurer
            .ensure(&answer.namespace, &decision.secrets, deadline)
            .instrument(copying)
            .await;
        decision.warnings.extend(warnings);
    }

    let patch = if decision.patch.0.is_empty() {
        None
    } else {
        let bytes = serde_json::to_vec(&decision.patch)
            .map_err(|e| AdmissionError::Internal(format!("encoding the patch: {e}")))?;
        answer.result = Outcome::Patched;
        Some(bytes)
    };
    answer.body = encode(&request.uid, patch.as_deref(), decision.warnings)?;
    Ok(())
}

/// What is wrong with a JSON document, without quoting it: serde's message repeats the
/// offending value, and a Pod's env values can be credentials. This text reaches the log and
/// the caller.
fn json_problem(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Syntax => "invalid JSON",
        Category::Eof => "truncated JSON",
        Category::Data => "a field has the wrong type or a required one is missing",
        Category::Io => "unreadable body",
    };
    if e.line() == 0 {
        what.to_string()
    } else {
        format!("{what} at line {} column {}", e.line(), e.column())
    }
}

fn encode(
    uid: &str,
    patch: Option<&[u8]>,
    warnings: Vec<String>,
) -> Result<Vec<u8>, AdmissionError> {
    let review = ReviewOut {
        api_version: API_VERSION,
        kind: KIND,
        response: ResponseOut {
            uid,
            allowed: true,
            patch_type: patch.map(|_| "JSONPatch"),
            patch: patch.map(|p| STANDARD.encode(p)),
            warnings: limit_warnings(warnings),
        },
    };
    serde_json::to_vec(&review)
        .map_err(|e| AdmissionError::Internal(format!("encoding the response: {e}")))
}

/// Keeps warnings within what kube-apiserver passes on: no control characters (it drops
/// such a warning whole), no duplicates, at most 256 runes each and a bounded total.
pub(crate) fn limit_warnings(warnings: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut total = 0;
    for warning in warnings {
        let cleaned: String = warning
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let cleaned = cleaned.trim();
        if cleaned.is_empty() {
            continue;
        }
        let text = if cleaned.chars().count() > MAX_WARNING_RUNES {
            let mut t: String = cleaned.chars().take(MAX_WARNING_RUNES - 1).collect();
            t.push('…');
            t
        } else {
            cleaned.to_string()
        };
        if out.contains(&text) {
            continue;
        }
        let runes = text.chars().count();
        if out.len() == MAX_WARNINGS || total + runes > WARNING_BUDGET_RUNES {
            break;
        }
        total += runes;
        out.push(text);
    }
    out
}

/// Parses a Go duration (`10s`, `1m30s`, `1.5s`, `300ms`, `2h45m`).
pub(crate) fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0.0f64;
    while !rest.is_empty() {
        let split = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (number, tail) = rest.split_at(split);
        let value: f64 = number.parse().ok()?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * scale;
        rest = tail;
    }
    Duration::try_from_secs_f64(total).ok()
}

fn query_timeout(uri: &Uri) -> Option<Duration> {
    uri.query()?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "timeout")
        .and_then(|(_, v)| parse_go_duration(v))
}

/// POST /mutate. `uri` carries the apiserver's `?timeout=<Go duration>`.
///
/// One log line per request, written once it is answered, carries the request's uid,
/// namespace and Pod (each cut short, left out while unknown) and the result. The `admission`
/// span exists only at debug level, so that what is logged while deciding carries them too.
pub(crate) async fn mutate(State(state): State<AppState>, uri: Uri, body: Bytes) -> Response {
    let span = tracing::debug_span!("admission", uid = Empty, namespace = Empty, pod = Empty);
    let started = Instant::now();
    let mut answer = Answer::default();
    // Boxed once here: the decision's future is about 3.6 KiB, and axum moves the handler's
    // future by value through its layers before it boxes it (4.2 KiB each move, unboxed).
    let outcome = Box::pin(respond_into(
        &state,
        &body,
        query_timeout(&uri),
        &mut answer,
    ))
    .instrument(span)
    .await;
    state
        .metrics
        .latency
        .observe(started.elapsed().as_secs_f64());
    let (uid, namespace, pod) = (
        known(&answer.uid),
        known(&answer.namespace),
        known(&answer.pod),
    );
    let (uid, namespace, pod) = (uid.as_deref(), namespace.as_deref(), pod.as_deref());
    match outcome {
        Ok(()) => {
            let result = answer.result.as_str();
            state.metrics.request(result);
            if answer.result == Outcome::Patched {
                state.metrics.patches.inc();
            }
            info!(uid, namespace, pod, result, "admitted");
            ([(header::CONTENT_TYPE, "application/json")], answer.body).into_response()
        }
        Err(err) => {
            let result = err.metric_label();
            state.metrics.request(result);
            match &err {
                AdmissionError::BadRequest(detail) => {
                    warn!(uid, namespace, pod, result, %detail, "rejected a request body")
                }
                AdmissionError::Internal(detail) => {
                    tracing::error!(uid, namespace, pod, result, %detail, "internal error")
                }
            }
            (
                err.status(),
                [(header::CONTENT_TYPE, "application/json")],
                err.body(),
            )
                .into_response()
        }
    }
}

/// A log field's value: cut short, and absent rather than empty.
fn known(value: &str) -> Option<Cow<'_, str>> {
    (!value.is_empty()).then(|| short(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration("s"), None);
        assert_eq!(parse_go_duration("5x"), None);
    }

    #[test]
    fn warnings_stay_within_apiserver_limits() {
        let long = "x".repeat(1000);
        let out = limit_warnings(vec![
            "a\nb".into(),
            "".into(),
            "same".into(),
            "same".into(),
            long,
        ]);
        assert_eq!(out[0], "a b");
        assert_eq!(out[1], "same");
        assert_eq!(out.len(), 3);
        assert_eq!(out[2].chars().count(), 256);
        let many = limit_warnings((0..50).map(|i| format!("warning {i}")).collect());
        assert_eq!(many.len(), MAX_WARNINGS);
        let big = limit_warnings((0..50).map(|i| format!("{i}{}", "y".repeat(250))).collect());
        assert!(big.iter().map(|w| w.chars().count()).sum::<usize>() <= WARNING_BUDGET_RUNES);
    }

    #[test]
    fn internal_errors_keep_their_detail_out_of_the_body() {
        let err = AdmissionError::Internal("patch failed at /spec/x for token abc".into());
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(err.body(), br#"{"error":"internal error"}"#);
        assert_eq!(err.metric_label(), "error");
        let bad = AdmissionError::BadRequest("body is not an AdmissionReview".into());
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        assert_eq!(bad.body(), br#"{"error":"body is not an AdmissionReview"}"#);
    }

    #[test]
    fn decode_errors_do_not_quote_the_request() {
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"namespace":"ns","operation":"CREATE","object":{"spec":{"containers":[{"name":"a","image":"nginx"}],"imagePullSecrets":"hunter2-secret"}}}}"#;
        let state = AppState::offline(None, "pullsecret-injector");
        let err = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(respond(&state, body, None))
            .unwrap_err();
        let text = String::from_utf8(err.body()).unwrap();
        assert!(text.contains("not a Pod"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        let Err(err) = serde_json::from_slice::<ReviewIn<&RawValue>>(br#"{"kind": 42}"#) else {
            panic!("decoded a body whose kind is a number");
        };
        assert_eq!(
            json_problem(&err),
            "a field has the wrong type or a required one is missing at line 1 column 11"
        );
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// The one-pass decode answers every AdmissionReview sample exactly as the two-pass one.
    #[test]
    fn one_pass_and_two_pass_answer_alike() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let policy_text = std::fs::read_to_string(root.join("samples-policy.yaml")).unwrap();
        let policy = crate::policy::Policy::parse(&policy_text, "samples-policy.yaml").unwrap();
        let state = AppState::offline(Some(policy), "pullsecret-injector");
        let mut samples = 0;
        let dir = root.join("reference/admission_review_samples");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let body = std::fs::read(&path).unwrap();
            let one: ReviewIn<PodJson> = serde_json::from_slice(&body).expect("one pass decodes");
            let two: ReviewIn<&RawValue> = serde_json::from_slice(&body).unwrap();
            let (mut a, mut b) = (Answer::default(), Answer::default());
            block_on(decide(&state, one, None, &mut a)).unwrap();
            block_on(decide(&state, two, None, &mut b)).unwrap();
            let (one, two) = (a, b);
            assert_eq!(one.body, two.body, "{}", path.display());
            assert_eq!(one.result, two.result, "{}", path.display());
            samples += 1;
        }
        assert!(samples >= 5, "only {samples} samples found");
    }

    /// An object of another kind that does not read as a Pod is let through, as before the
    /// one-pass decode; a Pod request with the same object is refused.
    #[test]
    fn another_kind_whose_object_is_no_pod_shape_is_allowed() {
        let body = |kind: &str| {
            format!(
                r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u-1","kind":{kind},"namespace":"ns","operation":"CREATE","object":{{"spec":{{"containers":5}}}}}}}}"#
            )
        };
        let state = AppState::offline(None, "pullsecret-injector");
        let deployment = body(r#"{"group":"apps","version":"v1","kind":"Deployment"}"#);
        let answer = block_on(respond(&state, deployment.as_bytes(), None)).unwrap();
        assert_eq!(answer.result, Outcome::Unchanged);
        let text = String::from_utf8(answer.body).unwrap();
        assert!(text.contains(r#""uid":"u-1","allowed":true"#), "{text}");
        let pod = body(r#"{"group":"","version":"v1","kind":"Pod"}"#);
        let err = block_on(respond(&state, pod.as_bytes(), None)).unwrap_err();
        assert!(err.to_string().contains("not a Pod"), "{err}");
    }

    #[test]
    fn timeout_from_query() {
        let uri: Uri = "/mutate?timeout=10s".parse().unwrap();
        assert_eq!(query_timeout(&uri), Some(Duration::from_secs(10)));
        let uri: Uri = "/mutate".parse().unwrap();
        assert_eq!(query_timeout(&uri), None);
    }
}
