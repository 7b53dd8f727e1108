//! What the apiserver checks and defaults before it stores an object: names, labels and
//! annotations (apimachinery validation), Secrets (pkg/apis/core/validation ValidateSecret,
//! ValidateSecretUpdate), ConfigMap keys, Namespace and Pod defaults.

use base64::Engine as _;
use serde_json::{Value, json};

use super::status::{self, ApiError, FieldError};
use super::store::{Kind, meta_mut, meta_str};

/// A body whose apiVersion/kind do not fit the URL is a 400.
pub fn check_type(kind: Kind, obj: &Value) -> Result<(), ApiError> {
    if let Some(av) = obj.get("apiVersion").and_then(Value::as_str)
        && av != kind.api_version()
    {
        return Err(status::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            kind.api_version()
        )));
    }
    if let Some(k) = obj.get("kind").and_then(Value::as_str)
        && k != kind.kind_name()
    {
        return Err(status::bad_request(format!(
            "{} in version \"v1\" cannot be handled as a {}: the kind in the data ({k}) does not match",
            kind.kind_name(),
            kind.kind_name()
        )));
    }
    Ok(())
}

/// Defaulting and decoding the apiserver does before validation.
pub fn prepare(kind: Kind, obj: &mut Value, _existing: Option<&Value>) -> Result<(), ApiError> {
    match kind {
        Kind::Secrets => prepare_secret(obj),
        Kind::Namespaces => {
            let name = meta_str(obj, "name").to_string();
            // The apiserver always sets this label (since 1.21).
            let m = meta_mut(obj);
            if !m.get("labels").is_some_and(Value::is_object) {
                m.insert("labels".into(), json!({}));
            }
            if let Some(Value::Object(labels)) = m.get_mut("labels") {
                labels.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
            if obj.pointer("/spec/finalizers").is_none() {
                obj["spec"] = json!({"finalizers": ["kubernetes"]});
            }
            if obj.pointer("/status/phase").is_none() {
                obj["status"] = json!({"phase": "Active"});
            }
            Ok(())
        }
        Kind::Pods => {
            if obj.pointer("/status/phase").is_none() {
                obj["status"] = json!({"phase": "Pending"});
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn base64_error(kind: &str, value: &str) -> ApiError {
    let at = match base64::engine::general_purpose::STANDARD.decode(value) {
        Err(base64::DecodeError::InvalidByte(i, _)) => i,
        Err(base64::DecodeError::InvalidLastSymbol(i, _)) => i,
        _ => value.len(),
    };
    status::bad_request(format!(
        "{kind} in version \"v1\" cannot be handled as a {kind}: illegal base64 data at input byte {at}"
    ))
}

/// `stringData` folds into `data`; `data` values must be base64; `type` defaults to Opaque.
fn prepare_secret(obj: &mut Value) -> Result<(), ApiError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    if let Some(data) = obj.get("data") {
        if !data.is_object() && !data.is_null() {
            return Err(status::bad_request(
                "Secret in version \"v1\" cannot be handled as a Secret: data must be an object",
            ));
        }
        if let Some(map) = data.as_object() {
            for v in map.values() {
                let s = v.as_str().unwrap_or("");
                if !v.is_string() || b64.decode(s).is_err() {
                    return Err(base64_error("Secret", s));
                }
            }
        }
    }
    if let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|m| m.remove("stringData")) {
        if !obj.get("data").is_some_and(Value::is_object) {
            obj["data"] = json!({});
        }
        for (k, v) in sd {
            obj["data"][&k] = json!(b64.encode(v.as_str().unwrap_or("").as_bytes()));
        }
    }
    if obj
        .get("type")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        obj["type"] = json!("Opaque");
    }
    Ok(())
}

const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn is_config_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s != "."
        && s != ".."
}

pub fn validate(kind: Kind, name: &str, obj: &Value, existing: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    validate_labels_and_annotations(obj, &mut errs);
    match kind {
        Kind::Namespaces => {
            if !is_dns_label(name) {
                errs.push(FieldError::invalid(
                    "metadata.name",
                    name,
                    DNS1123_LABEL_MSG,
                ));
            }
        }
        Kind::Secrets | Kind::ConfigMaps | Kind::Pods | Kind::ServiceAccounts => {
            if !is_dns_subdomain(name) {
                errs.push(FieldError::invalid(
                    "metadata.name",
                    name,
                    DNS1123_SUBDOMAIN_MSG,
                ));
            }
        }
        Kind::Events | Kind::EventsV1 => {}
    }
    match kind {
        Kind::Secrets => validate_secret(obj, existing, &mut errs),
        Kind::ConfigMaps => {
            if let Some(data) = obj.get("data").and_then(Value::as_object) {
                for k in data.keys() {
                    if !is_config_key(k) {
                        errs.push(FieldError::invalid(format!("data[{k}]"), k, CONFIG_KEY_MSG));
                    }
                }
            }
        }
        _ => {}
    }
    errs
}

const NAME_PART_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, empty allowed when `allow_empty`.
fn is_name_part(s: &str, allow_empty: bool) -> bool {
    if s.is_empty() {
        return allow_empty;
    }
    let b = s.as_bytes();
    b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// validation.IsQualifiedName: `[prefix/]name`, the reason when it is not one.
fn qualified_name_error(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            return Some("prefix part must be non-empty".into());
        }
        if !is_dns_subdomain(p) {
            return Some(format!("prefix part {DNS1123_SUBDOMAIN_MSG}"));
        }
    }
    if name.is_empty() {
        return Some("name part must be non-empty".into());
    }
    if name.len() > 63 {
        return Some("name part must be no more than 63 characters".into());
    }
    if !is_name_part(name, false) {
        return Some(NAME_PART_MSG.into());
    }
    None
}

fn validate_labels_and_annotations(obj: &Value, errs: &mut Vec<FieldError>) {
    if let Some(labels) = obj.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(why) = qualified_name_error(k) {
                errs.push(FieldError::invalid("metadata.labels", k, &why));
            }
            let v = v.as_str().unwrap_or("");
            if v.len() > 63 {
                errs.push(FieldError::invalid(
                    "metadata.labels",
                    v,
                    "must be no more than 63 characters",
                ));
            } else if !is_name_part(v, true) {
                errs.push(FieldError::invalid("metadata.labels", v, LABEL_VALUE_MSG));
            }
        }
    }
    if let Some(annotations) = obj
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        let mut total = 0;
        for (k, v) in annotations {
            if let Some(why) = qualified_name_error(&k.to_ascii_lowercase()) {
                errs.push(FieldError::invalid("metadata.annotations", k, &why));
            }
            total += k.len() + v.as_str().map_or(0, str::len);
        }
        if total > 256 * 1024 {
            errs.push(FieldError::too_long("metadata.annotations", 256 * 1024));
        }
    }
}

const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

/// pkg/apis/core/validation ValidateSecret / ValidateSecretUpdate, the parts that matter to
/// pull secrets.
fn validate_secret(obj: &Value, existing: Option<&Value>, errs: &mut Vec<FieldError>) {
    let b64 = base64::engine::general_purpose::STANDARD;
    let data = obj.get("data").and_then(Value::as_object);
    let decoded = |key: &str| -> Option<Vec<u8>> {
        data.and_then(|d| d.get(key))
            .and_then(Value::as_str)
            .and_then(|s| b64.decode(s).ok())
    };
    let mut total = 0usize;
    if let Some(d) = data {
        for (k, v) in d {
            if !is_config_key(k) {
                errs.push(FieldError::invalid(format!("data[{k}]"), k, CONFIG_KEY_MSG));
            }
            total += v
                .as_str()
                .and_then(|s| b64.decode(s).ok())
                .map_or(0, |b| b.len());
        }
    }
    if total > 1024 * 1024 {
        errs.push(FieldError::too_long("data", 1024 * 1024));
    }
    let ty = obj.get("type").and_then(Value::as_str).unwrap_or("Opaque");
    let docker_key = match ty {
        "kubernetes.io/dockercfg" => Some(".dockercfg"),
        "kubernetes.io/dockerconfigjson" => Some(".dockerconfigjson"),
        _ => None,
    };
    if let Some(key) = docker_key {
        match decoded(key) {
            None => errs.push(FieldError::required(format!("data[{key}]"))),
            Some(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(_)) => {}
                Ok(other) => errs.push(FieldError::invalid(
                    format!("data[{key}]"),
                    "<secret contents redacted>",
                    &format!(
                        "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
                        json_type_name(&other)
                    ),
                )),
                Err(e) => errs.push(FieldError::invalid(
                    format!("data[{key}]"),
                    "<secret contents redacted>",
                    &e.to_string(),
                )),
            },
        }
    }
    if ty == "kubernetes.io/tls" {
        for key in ["tls.crt", "tls.key"] {
            if decoded(key).is_none() {
                errs.push(FieldError::required(format!("data[{key}]")));
            }
        }
    }
    if let Some(old) = existing {
        let old_ty = old.get("type").and_then(Value::as_str).unwrap_or("Opaque");
        if old_ty != ty {
            errs.push(FieldError::invalid("type", ty, "field is immutable"));
        }
        if old.get("immutable").and_then(Value::as_bool) == Some(true) {
            if obj.get("immutable").and_then(Value::as_bool) != Some(true) {
                errs.push(FieldError::forbidden(
                    "immutable",
                    "field is immutable when `immutable` is set",
                ));
            }
            if old.get("data") != obj.get("data") {
                errs.push(FieldError::forbidden(
                    "data",
                    "field is immutable when `immutable` is set",
                ));
            }
        }
    }
}

fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Array(_) => "array",
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "bool",
        Value::Null => "null",
        Value::Object(_) => "object",
    }
}
