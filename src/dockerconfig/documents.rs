//! Reading input: Secret manifests (YAML or JSON, several documents, `List`s), API objects
//! and bare docker configs, as [`Document`]s.

use std::collections::BTreeMap;

use thiserror::Error;

use super::go::{decode_secret_data, field_is};
use super::{Format, TYPE_DOCKERCFG, TYPE_DOCKERCONFIGJSON};

/// A Secret as read from a manifest or the API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SecretDoc {
    pub(crate) name: String,
    pub(crate) namespace: Option<String>,
    /// `type`, `Opaque` when absent (the API server's default).
    pub(crate) secret_type: String,
    /// `data` decoded, with `stringData` merged over it.
    pub(crate) data: BTreeMap<String, Vec<u8>>,
    /// `data` keys whose value is not base64 (the API server rejects the manifest).
    pub(crate) undecodable: Vec<String>,
}

impl SecretDoc {
    /// From an API object.
    pub(crate) fn from_k8s(secret: &k8s_openapi::api::core::v1::Secret) -> Self {
        let mut data: BTreeMap<String, Vec<u8>> = secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect();
        for (k, v) in secret.string_data.iter().flatten() {
            data.insert(k.clone(), v.clone().into_bytes());
        }
        SecretDoc {
            name: secret.metadata.name.clone().unwrap_or_default(),
            namespace: secret.metadata.namespace.clone(),
            secret_type: secret.type_.clone().unwrap_or_else(|| "Opaque".to_string()),
            data,
            undecodable: Vec::new(),
        }
    }

    /// What the kubelet reads from this Secret: `(format, bytes)` or nothing.
    pub(crate) fn kubelet_config(&self) -> Option<(Format, &[u8])> {
        let pick = |format: Format| {
            self.data
                .get(format.data_key())
                .filter(|v| !v.is_empty())
                .map(|v| (format, v.as_slice()))
        };
        match self.secret_type.as_str() {
            TYPE_DOCKERCONFIGJSON => pick(Format::DockerConfigJson),
            TYPE_DOCKERCFG => pick(Format::DockerCfg),
            _ => None,
        }
    }
}

/// One input document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Document {
    /// How findings name it: `Secret ns/name`, `docker config`, `document 3`.
    pub(crate) label: String,
    pub(crate) content: Content,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Content {
    Secret(SecretDoc),
    /// A bare docker config (`config.json` or `.dockercfg` map).
    DockerConfig {
        format: Format,
        bytes: Vec<u8>,
    },
    /// Something else (a Pod, a ConfigMap): skipped.
    Other {
        kind: String,
    },
}

impl Document {
    /// What the kubelet would read: `(format, bytes)` or nothing.
    pub(crate) fn kubelet_config(&self) -> Option<(Format, &[u8])> {
        match &self.content {
            Content::Secret(secret) => secret.kubelet_config(),
            Content::DockerConfig { format, bytes } => Some((*format, bytes.as_slice())),
            Content::Other { .. } => None,
        }
    }
}

/// The input cannot be used at all.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum InputError {
    #[error("the input is empty")]
    Empty,
    #[error("the input is neither JSON nor YAML{0}")]
    Syntax(String),
    #[error("the input holds no Secret and no docker config (found: {0})")]
    NothingUsable(String),
}

/// Reads Secret manifests (YAML or JSON, several documents, `List`s) or a bare docker
/// config.
pub(crate) fn parse_documents(text: &str) -> Result<Vec<Document>, InputError> {
    if text.trim().is_empty() {
        return Err(InputError::Empty);
    }
    let values: Vec<serde_json::Value> = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value) => {
            if is_bare_config(&value) {
                let format = bare_format(&value);
                return Ok(vec![Document {
                    label: "docker config".to_string(),
                    content: Content::DockerConfig {
                        format,
                        bytes: text.as_bytes().to_vec(),
                    },
                }]);
            }
            vec![value]
        }
        Err(_) => serde_saphyr::from_multiple::<serde_json::Value>(text).map_err(|err| {
            // Only the position: YAML error snippets could quote secret data.
            InputError::Syntax(match err.location() {
                Some(loc) => format!(
                    " (YAML error at line {}, column {})",
                    loc.line(),
                    loc.column()
                ),
                None => String::new(),
            })
        })?,
    };
    let mut docs = Vec::new();
    for (i, value) in values.into_iter().enumerate() {
        collect(value, &format!("document {}", i + 1), &mut docs);
    }
    if !docs
        .iter()
        .any(|d| !matches!(d.content, Content::Other { .. }))
    {
        let kinds: Vec<String> = docs
            .iter()
            .filter_map(|d| match &d.content {
                Content::Other { kind } => Some(kind.clone()),
                _ => None,
            })
            .collect();
        let found = if kinds.is_empty() {
            "nothing".to_string()
        } else {
            kinds.join(", ")
        };
        return Err(InputError::NothingUsable(found));
    }
    Ok(docs)
}

fn is_bare_config(value: &serde_json::Value) -> bool {
    value
        .as_object()
        .is_some_and(|o| !o.contains_key("kind") && !o.contains_key("apiVersion"))
}

fn bare_format(value: &serde_json::Value) -> Format {
    let has_auths = value
        .as_object()
        .is_some_and(|o| o.keys().any(|k| field_is(k, "auths")));
    if has_auths {
        Format::DockerConfigJson
    } else {
        Format::DockerCfg
    }
}

fn collect(value: serde_json::Value, label: &str, docs: &mut Vec<Document>) {
    if value.is_null() {
        return; // an empty YAML document
    }
    if is_bare_config(&value) {
        let format = bare_format(&value);
        docs.push(Document {
            label: format!("{label} (docker config)"),
            content: Content::DockerConfig {
                format,
                bytes: value.to_string().into_bytes(),
            },
        });
        return;
    }
    let kind = value
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or("")
        .to_string();
    if kind == "Secret" {
        let secret = secret_from_value(&value);
        let label = match &secret.namespace {
            Some(ns) => format!("Secret {ns}/{}", secret.name),
            None => format!("Secret {}", secret.name),
        };
        docs.push(Document {
            label,
            content: Content::Secret(secret),
        });
    } else if let Some(items) = value.get("items").and_then(|i| i.as_array())
        && kind.ends_with("List")
    {
        for (i, item) in items.iter().enumerate() {
            collect(item.clone(), &format!("{label} item {}", i + 1), docs);
        }
    } else {
        let kind = if kind.is_empty() {
            "an object without kind".to_string()
        } else {
            kind
        };
        docs.push(Document {
            label: label.to_string(),
            content: Content::Other { kind },
        });
    }
}

fn secret_from_value(value: &serde_json::Value) -> SecretDoc {
    let meta = value.get("metadata");
    let text = |v: Option<&serde_json::Value>| v.and_then(|s| s.as_str()).map(str::to_string);
    let mut secret = SecretDoc {
        name: text(meta.and_then(|m| m.get("name"))).unwrap_or_default(),
        namespace: text(meta.and_then(|m| m.get("namespace"))),
        secret_type: text(value.get("type")).unwrap_or_else(|| "Opaque".to_string()),
        ..SecretDoc::default()
    };
    if let Some(data) = value.get("data").and_then(|d| d.as_object()) {
        for (k, v) in data {
            match v {
                serde_json::Value::Null => {
                    secret.data.insert(k.clone(), Vec::new());
                }
                serde_json::Value::String(s) => match decode_secret_data(s) {
                    Some(bytes) => {
                        secret.data.insert(k.clone(), bytes);
                    }
                    None => secret.undecodable.push(k.clone()),
                },
                _ => secret.undecodable.push(k.clone()),
            }
        }
    }
    if let Some(data) = value.get("stringData").and_then(|d| d.as_object()) {
        for (k, v) in data {
            if let Some(s) = v.as_str() {
                secret.data.insert(k.clone(), s.as_bytes().to_vec());
                secret.undecodable.retain(|u| u != k);
            }
        }
    }
    secret
}
