//! events.k8s.io/v1 is another version of the same stored Event as core/v1 (one storage,
//! pkg/apis/events/v1 conversion): `regarding` is `involvedObject`, `note` is `message`,
//! `reportingController` is `reportingComponent`, the `deprecated*` fields are the old
//! core ones. Creates through events.k8s.io/v1 get its strict validation
//! (pkg/apis/core/validation/events.go ValidateEventCreate).

use serde_json::{Map, Value, json};

use super::status::{ApiError, FieldError};

/// (core/v1 field, events.k8s.io/v1 field)
const RENAMES: [(&str, &str); 7] = [
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

fn rename(obj: &Value, to_v1: bool) -> Value {
    let Some(map) = obj.as_object() else {
        return obj.clone();
    };
    let mut out = Map::new();
    for (k, v) in map {
        let key = RENAMES
            .iter()
            .find_map(|(core, v1)| {
                if to_v1 && k == core {
                    Some(*v1)
                } else if !to_v1 && k == v1 {
                    Some(*core)
                } else {
                    None
                }
            })
            .unwrap_or(k.as_str());
        out.insert(key.to_string(), v.clone());
    }
    Value::Object(out)
}

/// A stored (core/v1) Event as events.k8s.io/v1 shows it.
pub fn to_v1(core: &Value) -> Value {
    let mut v = rename(core, true);
    if v.get("apiVersion").is_some() {
        v["apiVersion"] = json!("events.k8s.io/v1");
    }
    v
}

/// An events.k8s.io/v1 Event in its stored (core/v1) form.
pub fn to_core(v1: &Value) -> Value {
    let mut v = rename(v1, false);
    if v.get("apiVersion").is_some() {
        v["apiVersion"] = json!("v1");
    }
    v
}

/// An events.k8s.io/v1 field selector in core terms.
pub fn field_selector_to_core(selector: &str) -> String {
    selector
        .split(',')
        .map(|req| {
            let mut req = req.to_string();
            for (core, v1) in RENAMES {
                if req.starts_with(&format!("{v1}."))
                    || req.starts_with(&format!("{v1}="))
                    || req.starts_with(&format!("{v1}!="))
                {
                    req = format!("{core}{}", &req[v1.len()..]);
                    break;
                }
            }
            req
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Error texts name the resource of the request (endpoints/handlers SyncStatusError).
pub fn sync_status(mut err: ApiError) -> ApiError {
    let is_events = err.body.pointer("/details/kind").and_then(Value::as_str) == Some("events");
    if is_events {
        if let Some(msg) = err.body.get("message").and_then(Value::as_str) {
            let msg = msg.replacen("events", "events.events.k8s.io", 1);
            err.body["message"] = json!(msg);
        }
        err.body["details"]["group"] = json!("events.k8s.io");
    }
    err
}

fn str_len(core: &Value, field: &str) -> usize {
    core.get(field).and_then(Value::as_str).map_or(0, str::len)
}

fn present(core: &Value, field: &str) -> bool {
    core.get(field).is_some_and(|v| !v.is_null())
}

/// legacyValidateEvent, which every Event create passes (both APIs): the namespace rules,
/// and for "new" Events (eventTime set) the reporting fields. `v1_request` names the
/// reporting field as the request's version does.
pub fn validate_legacy(core: &Value, v1_request: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let event_ns = core
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let involved_ns = core
        .pointer("/involvedObject/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mismatch = || {
        FieldError::invalid(
            "involvedObject.namespace",
            involved_ns,
            "does not match event.namespace",
        )
    };
    if !present(core, "eventTime") {
        if involved_ns.is_empty() {
            if !event_ns.is_empty() && event_ns != "default" {
                errs.push(mismatch());
            }
        } else if event_ns != involved_ns {
            errs.push(mismatch());
        }
    } else {
        if involved_ns.is_empty() && event_ns != "default" && event_ns != "kube-system" {
            errs.push(mismatch());
        }
        let reporting = if v1_request {
            "reportingController"
        } else {
            "reportingComponent"
        };
        if str_len(core, "reportingComponent") == 0 {
            errs.push(FieldError::required(reporting));
        }
        for (field, limit) in [("reportingInstance", 128), ("action", 128)] {
            let n = str_len(core, field);
            if n == 0 {
                errs.push(FieldError::required(field));
            } else if n > limit {
                errs.push(FieldError::too_long(field, limit));
            }
        }
    }
    if str_len(core, "reason") > 128 {
        errs.push(FieldError::too_long("reason", 128));
    }
    if str_len(core, "message") > 1024 {
        errs.push(FieldError::too_long("message", 1024));
    }
    errs
}

/// ValidateEventCreate for events.k8s.io/v1 requests: the legacy rules plus the strict ones
/// (given the stored form, errors in v1 field names).
pub fn validate_v1_create(core: &Value) -> Vec<FieldError> {
    let mut errs = validate_legacy(core, true);
    if let Some(series) = core.get("series").filter(|s| !s.is_null()) {
        if series.get("count").and_then(Value::as_i64).unwrap_or(0) < 2 {
            errs.push(FieldError::invalid(
                "series.count",
                "",
                "should be at least 2",
            ));
        }
        if !present(series, "lastObservedTime") {
            errs.push(FieldError::required("series.lastObservedTime"));
        }
    }
    if !present(core, "eventTime") {
        errs.push(FieldError::required("eventTime"));
    }
    let ty = core.get("type").and_then(Value::as_str).unwrap_or("");
    if ty != "Normal" && ty != "Warning" {
        errs.push(FieldError::invalid(
            "type",
            "",
            &format!("has invalid value: {ty}"),
        ));
    }
    for (core_field, v1_field) in [
        ("firstTimestamp", "deprecatedFirstTimestamp"),
        ("lastTimestamp", "deprecatedLastTimestamp"),
    ] {
        if present(core, core_field) {
            errs.push(FieldError::invalid(v1_field, "", "needs to be unset"));
        }
    }
    if core
        .get("count")
        .and_then(Value::as_i64)
        .is_some_and(|c| c != 0)
    {
        errs.push(FieldError::invalid(
            "deprecatedCount",
            "",
            "needs to be unset",
        ));
    }
    if core
        .get("source")
        .and_then(Value::as_object)
        .is_some_and(|s| {
            s.values()
                .any(|v| v.as_str().is_some_and(|s| !s.is_empty()))
        })
    {
        errs.push(FieldError::invalid(
            "deprecatedSource",
            "",
            "needs to be unset",
        ));
    }
    errs
}

/// ValidateEventCreate for core/v1 requests: the legacy rules only.
pub fn validate_core_create(core: &Value) -> Vec<FieldError> {
    validate_legacy(core, false)
}
