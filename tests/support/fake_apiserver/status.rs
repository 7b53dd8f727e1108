//! `Status` bodies exactly as kube-apiserver builds them (k8s.io/apimachinery
//! `pkg/api/errors`): `NewNotFound`, `NewAlreadyExists`, `NewConflict`, `NewInvalid`,
//! `NewForbidden`, `NewBadRequest`, `NewResourceExpired`, `NewInternalError`,
//! `NewTooManyRequests`. `details.kind` carries the plural resource for most of them
//! ("Yes we set Kind field to resource") and the Kind for `Invalid`.

use serde_json::{Map, Value, json};

use super::store::Kind;

/// An error answer: HTTP code, the `Status` body, and a `Retry-After` header if any.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub body: Value,
    pub retry_after: Option<u64>,
}

fn failure(code: u16, reason: &str, message: String, details: Option<Value>) -> ApiError {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if let Some(details) = details {
        body["details"] = details;
    }
    ApiError {
        code,
        body,
        retry_after: None,
    }
}

/// `{"name":..,"group":..,"kind":<plural resource>}` with empty fields left out, as Go's
/// `omitempty` does.
fn resource_details(kind: Kind, name: &str) -> Value {
    let mut d = Map::new();
    if !name.is_empty() {
        d.insert("name".into(), json!(name));
    }
    if !kind.group().is_empty() {
        d.insert("group".into(), json!(kind.group()));
    }
    d.insert("kind".into(), json!(kind.plural()));
    Value::Object(d)
}

/// `secrets "x"` or `secrets` when there is no name (qualifiedResource.String()).
fn subject(kind: Kind, name: &str) -> String {
    if name.is_empty() {
        kind.qualified()
    } else {
        format!("{} {:?}", kind.qualified(), name)
    }
}

pub fn not_found(kind: Kind, name: &str) -> ApiError {
    failure(
        404,
        "NotFound",
        format!("{} {:?} not found", kind.qualified(), name),
        Some(resource_details(kind, name)),
    )
}

pub fn already_exists(kind: Kind, name: &str) -> ApiError {
    failure(
        409,
        "AlreadyExists",
        format!("{} {:?} already exists", kind.qualified(), name),
        Some(resource_details(kind, name)),
    )
}

/// `apierrors.OptimisticLockErrorMsg`.
pub const OPTIMISTIC_LOCK: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

pub fn conflict(kind: Kind, name: &str, why: &str) -> ApiError {
    failure(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {} {:?}: {why}",
            kind.qualified(),
            name
        ),
        Some(resource_details(kind, name)),
    )
}

pub fn forbidden(kind: Kind, name: &str, why: &str) -> ApiError {
    failure(
        403,
        "Forbidden",
        format!("{} is forbidden: {why}", subject(kind, name)),
        Some(resource_details(kind, name)),
    )
}

/// The NamespaceLifecycle admission plugin's answer for a create in a terminating
/// namespace (plugin/pkg/admission/namespace/lifecycle/admission.go).
pub fn namespace_terminating(kind: Kind, name: &str, namespace: &str) -> ApiError {
    let mut err = forbidden(
        kind,
        name,
        &format!(
            "unable to create new content in namespace {namespace} because it is being terminated"
        ),
    );
    err.body["details"]["causes"] = json!([{
        "reason": "NamespaceTerminating",
        "message": format!("namespace {namespace} is being terminated"),
        "field": "metadata.namespace",
    }]);
    err
}

/// RBAC's denial text (plugin/pkg/auth/authorizer/rbac + endpoints/handlers/responsewriters).
pub fn rbac_forbidden(kind: Kind, name: &str, namespace: &str, verb: &str, user: &str) -> ApiError {
    let scope = if namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace {namespace:?}")
    };
    forbidden(
        kind,
        name,
        &format!(
            "User {user:?} cannot {verb} resource {:?} in API group {:?} {scope}",
            kind.plural(),
            kind.group()
        ),
    )
}

pub fn bad_request(message: impl Into<String>) -> ApiError {
    failure(400, "BadRequest", message.into(), None)
}

/// A JSON patch that does not apply (a failed `test`, a path that is not there): the
/// apiserver's patch handler answers `NewGenericServerResponse(422, "", GroupResource{}, "",
/// err, 0, false)`, which keeps only its generic message (the patch library's error is
/// dropped) and an empty `details`.
pub fn json_patch_failed() -> ApiError {
    failure(
        422,
        "Invalid",
        "the server rejected our request due to an error in our request".into(),
        Some(json!({})),
    )
}

pub fn method_not_allowed() -> ApiError {
    failure(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource".into(),
        None,
    )
}

pub fn unsupported_media_type(content_type: &str) -> ApiError {
    failure(
        415,
        "UnsupportedMediaType",
        format!(
            "the body of the request was in an unknown format - accepted media types include: \
             application/json-patch+json, application/merge-patch+json, \
             application/strategic-merge-patch+json (got {content_type:?})"
        ),
        None,
    )
}

pub fn page_not_found() -> ApiError {
    failure(
        404,
        "NotFound",
        "the server could not find the requested resource".into(),
        None,
    )
}

/// 410 Gone, reason Expired: a watch from a compacted resourceVersion, or an old
/// continue token.
pub fn expired(message: String) -> ApiError {
    failure(410, "Expired", message, None)
}

pub fn internal_error(why: &str) -> ApiError {
    failure(
        500,
        "InternalError",
        format!("Internal error occurred: {why}"),
        Some(json!({"causes": [{"message": why}]})),
    )
}

/// The max-in-flight filter's 429: "Too many requests, please try again later." with
/// `Retry-After` and `details.retryAfterSeconds`.
pub fn too_many_requests(retry_after: u64) -> ApiError {
    let mut err = failure(
        429,
        "TooManyRequests",
        "Too many requests, please try again later.".into(),
        Some(json!({"retryAfterSeconds": retry_after})),
    );
    err.retry_after = Some(retry_after);
    err
}

/// One `field.Error`: (field path, reason type, body without the field prefix).
#[derive(Debug, Clone)]
pub struct FieldError {
    pub field: String,
    pub reason: &'static str,
    pub body: String,
}

impl FieldError {
    pub fn required(field: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: "FieldValueRequired",
            body: "Required value".into(),
        }
    }

    pub fn required_detail(field: impl Into<String>, detail: &str) -> Self {
        Self {
            field: field.into(),
            reason: "FieldValueRequired",
            body: format!("Required value: {detail}"),
        }
    }

    /// `Invalid value: "<value>": detail` (string values are quoted like Go's %q).
    pub fn invalid(field: impl Into<String>, value: &str, detail: &str) -> Self {
        Self {
            field: field.into(),
            reason: "FieldValueInvalid",
            body: format!("Invalid value: {value:?}: {detail}"),
        }
    }

    pub fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        Self {
            field: field.into(),
            reason: "FieldValueForbidden",
            body: format!("Forbidden: {detail}"),
        }
    }

    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        Self {
            field: field.into(),
            reason: "FieldValueTooLong",
            body: format!("Too long: may not be more than {max} bytes"),
        }
    }
}

/// 422 `<Kind> "<name>" is invalid: <errors>` (errors joined as `[a, b]` when several).
pub fn invalid(kind: Kind, name: &str, errs: &[FieldError]) -> ApiError {
    let rendered: Vec<String> = errs
        .iter()
        .map(|e| format!("{}: {}", e.field, e.body))
        .collect();
    let joined = if rendered.len() == 1 {
        rendered[0].clone()
    } else {
        format!("[{}]", rendered.join(", "))
    };
    let causes: Vec<Value> = errs
        .iter()
        .map(|e| json!({"reason": e.reason, "message": e.body, "field": e.field}))
        .collect();
    let mut details = Map::new();
    details.insert("name".into(), json!(name));
    if !kind.group().is_empty() {
        details.insert("group".into(), json!(kind.group()));
    }
    details.insert("kind".into(), json!(kind.kind_name()));
    details.insert("causes".into(), Value::Array(causes));
    let qualified_kind = if kind.group().is_empty() {
        kind.kind_name().to_string()
    } else {
        format!("{}.{}", kind.kind_name(), kind.group())
    };
    failure(
        422,
        "Invalid",
        format!("{qualified_kind} {name:?} is invalid: {joined}"),
        Some(Value::Object(details)),
    )
}

/// A `Status` of success for a delete that removed the object (store.finalizeDelete).
pub fn delete_success(kind: Kind, name: &str, uid: &str) -> Value {
    let mut details = resource_details(kind, name);
    details["uid"] = json!(uid);
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}
