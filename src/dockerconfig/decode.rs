//! Decoding a config into the credentials the kubelet keeps, with every problem and oddity
//! it noticed on the way (`dockerConfigEntryWithAuth`, `decodeDockerConfigFieldAuth`).

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;
use thiserror::Error;

use super::go::{GO_RAW_STD, GO_STD, Json, field_is, go_decode, go_fold};
use super::{KEY_DOCKERCFG, KEY_DOCKERCONFIGJSON, TYPE_DOCKERCFG, TYPE_DOCKERCONFIGJSON};

/// Which of the two formats a config is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Format {
    /// `{"auths": {...}}` (`.dockerconfigjson`, `~/.docker/config.json`).
    DockerConfigJson,
    /// The bare registry map (`.dockercfg`).
    DockerCfg,
}

impl Format {
    pub(crate) fn data_key(self) -> &'static str {
        match self {
            Format::DockerConfigJson => KEY_DOCKERCONFIGJSON,
            Format::DockerCfg => KEY_DOCKERCFG,
        }
    }
    pub(crate) fn secret_type(self) -> &'static str {
        match self {
            Format::DockerConfigJson => TYPE_DOCKERCONFIGJSON,
            Format::DockerCfg => TYPE_DOCKERCFG,
        }
    }
}

/// The credential the kubelet keeps for one `auths` entry.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Credential {
    pub(crate) username: String,
    pub(crate) password: String,
    pub(crate) email: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("email", &self.email)
            .finish()
    }
}

impl Credential {
    pub(crate) fn is_empty(&self) -> bool {
        self.username.is_empty() && self.password.is_empty()
    }
}

/// What the decoder noticed about one entry, beyond the credential.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EntryFacts {
    /// A non-empty `auth` was present and used.
    pub(crate) used_auth: bool,
    /// `auth` decodes to a username different from a non-empty `username` field.
    pub(crate) auth_overrides_username: bool,
    /// `auth` decodes to a password different from a non-empty `password` field.
    pub(crate) auth_overrides_password: bool,
    /// Token fields the kubelet does not read (`identitytoken`, `registrytoken`).
    pub(crate) token_fields: Vec<String>,
    /// Field names the kubelet accepted only case-insensitively, as written.
    pub(crate) folded_fields: Vec<String>,
    /// Fields given more than once (the last one wins).
    pub(crate) duplicate_fields: Vec<String>,
}

/// One `auths` entry as decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuthEntry {
    pub(crate) key: String,
    pub(crate) credential: Credential,
    pub(crate) facts: EntryFacts,
}

/// A decode failure: the kubelet would refuse the whole keyring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodeProblem {
    /// The `auths` key concerned, if any.
    pub(crate) registry: Option<String>,
    pub(crate) kind: DecodeProblemKind,
    pub(crate) message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum DecodeProblemKind {
    /// Not JSON at all.
    InvalidJson,
    /// A field has the wrong JSON type.
    WrongType,
    /// The document is JSON but not an object (nor `null`).
    NotAnObject,
    /// `auth` is not base64 of `user:password`.
    BadAuth,
}

/// A config as the kubelet decodes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DockerConfig {
    /// Entries the kubelet adds to its keyring, in document order (a repeated key keeps its
    /// first position and its last value).
    pub(crate) entries: Vec<AuthEntry>,
    /// How the `auths` field was written, when present (`.dockerconfigjson` only).
    pub(crate) auths_field: Vec<String>,
    /// The top level is JSON `null` (accepted, contributes nothing).
    pub(crate) top_level_null: bool,
    /// Top-level keys of a `.dockerconfigjson` other than `auths` and `HttpHeaders`.
    pub(crate) other_fields: Vec<String>,
    /// `credsStore` helper name, if the config has one.
    pub(crate) creds_store: Option<String>,
    /// `credHelpers`: registry -> helper name.
    pub(crate) cred_helpers: Vec<(String, String)>,
    /// In a `.dockercfg`: a top-level `auths` key holding an object (a config.json in the
    /// wrong format).
    pub(crate) auths_key_in_dockercfg: bool,
    /// Problems that make the kubelet reject the config.
    pub(crate) problems: Vec<DecodeProblem>,
}

impl DockerConfig {
    /// The kubelet would fail every pull of a Pod that lists this config.
    pub(crate) fn is_broken(&self) -> bool {
        !self.problems.is_empty()
    }
}

/// Decodes `bytes` in `format` as the kubelet does, collecting every problem rather than
/// stopping at the first.
pub(crate) fn decode(bytes: &[u8], format: Format) -> DockerConfig {
    let mut config = DockerConfig::default();
    let value: Json = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(err) => {
            // serde_json's message names the position and the syntax class, never content.
            config.problems.push(DecodeProblem {
                registry: None,
                kind: DecodeProblemKind::InvalidJson,
                message: format!("not valid JSON ({err})"),
            });
            return config;
        }
    };
    let members = match value {
        Json::Null => {
            config.top_level_null = true;
            return config;
        }
        Json::Object(members) => members,
        other => {
            config.problems.push(DecodeProblem {
                registry: None,
                kind: DecodeProblemKind::NotAnObject,
                message: format!("the top level is {}, not an object", other.type_name()),
            });
            return config;
        }
    };
    match format {
        Format::DockerConfigJson => decode_config_json(members, &mut config),
        Format::DockerCfg => {
            for (key, value) in members {
                if field_is(&key, "auths") && matches!(value, Json::Object(_)) {
                    config.auths_key_in_dockercfg = true;
                }
                note_helpers(&key, &value, &mut config);
                add_entry(&mut config, key, &value);
            }
        }
    }
    config
}

fn decode_config_json(members: Vec<(String, Json)>, config: &mut DockerConfig) {
    for (key, value) in members {
        if field_is(&key, "auths") {
            config.auths_field.push(key.clone());
            match value {
                // Go sets the map to nil; earlier `auths` members are forgotten.
                Json::Null => config.entries.clear(),
                // Go decodes into the existing map, so repeated `auths` objects merge.
                Json::Object(registries) => {
                    for (registry, entry) in registries {
                        add_entry(config, registry, &entry);
                    }
                }
                other => config.problems.push(DecodeProblem {
                    registry: None,
                    kind: DecodeProblemKind::WrongType,
                    message: format!("`{key}` is {}, not an object", other.type_name()),
                }),
            }
        } else if field_is(&key, "HttpHeaders") {
            let ok = match &value {
                Json::Null => true,
                Json::Object(headers) => headers
                    .iter()
                    .all(|(_, v)| matches!(v, Json::String(_) | Json::Null)),
                _ => false,
            };
            if !ok {
                config.problems.push(DecodeProblem {
                    registry: None,
                    kind: DecodeProblemKind::WrongType,
                    message: format!("`{key}` must be an object of strings"),
                });
            }
        } else {
            note_helpers(&key, &value, config);
            config.other_fields.push(key);
        }
    }
}

/// Records `credsStore` / `credHelpers` (ignored by the kubelet, reported by lint).
fn note_helpers(key: &str, value: &Json, config: &mut DockerConfig) {
    if key.eq_ignore_ascii_case("credsStore") {
        if let Json::String(helper) = value {
            config.creds_store = Some(helper.clone());
        }
    } else if key.eq_ignore_ascii_case("credHelpers")
        && let Json::Object(helpers) = value
    {
        for (registry, helper) in helpers {
            if let Json::String(helper) = helper {
                config.cred_helpers.push((registry.clone(), helper.clone()));
            }
        }
    }
}

fn add_entry(config: &mut DockerConfig, key: String, value: &Json) {
    match decode_entry(&key, value) {
        Ok((credential, facts)) => {
            let entry = AuthEntry {
                key,
                credential,
                facts,
            };
            match config.entries.iter_mut().find(|e| e.key == entry.key) {
                Some(existing) => *existing = entry,
                None => config.entries.push(entry),
            }
        }
        Err(mut problems) => config.problems.append(&mut problems),
    }
}

/// `dockerConfigEntryWithAuth` decoding plus `decodeDockerConfigFieldAuth`.
fn decode_entry(key: &str, value: &Json) -> Result<(Credential, EntryFacts), Vec<DecodeProblem>> {
    let mut credential = Credential::default();
    let mut facts = EntryFacts::default();
    let members = match value {
        Json::Null => return Ok((credential, facts)),
        Json::Object(members) => members,
        other => {
            return Err(vec![DecodeProblem {
                registry: Some(key.to_string()),
                kind: DecodeProblemKind::WrongType,
                message: format!("the entry is {}, not an object", other.type_name()),
            }]);
        }
    };
    let mut problems = Vec::new();
    let mut auth = String::new();
    let mut seen = BTreeSet::new();
    for (field, v) in members {
        let canonical = ["username", "password", "email", "auth"]
            .into_iter()
            .find(|c| field_is(field, c));
        let Some(canonical) = canonical else {
            let folded = go_fold(field);
            if folded == "IDENTITYTOKEN" || folded == "REGISTRYTOKEN" {
                facts.token_fields.push(field.clone());
            }
            continue;
        };
        if field != canonical {
            facts.folded_fields.push(field.clone());
        }
        if !seen.insert(canonical) {
            facts.duplicate_fields.push(canonical.to_string());
        }
        let target = match canonical {
            "username" => &mut credential.username,
            "password" => &mut credential.password,
            "email" => &mut credential.email,
            _ => &mut auth,
        };
        match v {
            Json::String(s) => *target = s.clone(),
            // Go leaves the field as it was.
            Json::Null => {}
            other => problems.push(DecodeProblem {
                registry: Some(key.to_string()),
                kind: DecodeProblemKind::WrongType,
                message: format!("`{field}` is {}, not a string", other.type_name()),
            }),
        }
    }
    if !auth.is_empty() {
        match decode_auth(&auth) {
            Ok((user, password)) => {
                facts.used_auth = true;
                facts.auth_overrides_username =
                    !credential.username.is_empty() && credential.username != user;
                facts.auth_overrides_password =
                    !credential.password.is_empty() && credential.password != password;
                credential.username = user;
                credential.password = password;
            }
            Err(err) => problems.push(DecodeProblem {
                registry: Some(key.to_string()),
                kind: DecodeProblemKind::BadAuth,
                message: err.to_string(),
            }),
        }
    }
    if problems.is_empty() {
        Ok((credential, facts))
    } else {
        Err(problems)
    }
}

/// Why an `auth` value does not decode. Never carries the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub(crate) enum AuthError {
    #[error("`auth` is not valid base64 (standard alphabet; padded if it ends with `=`)")]
    NotBase64,
    #[error("`auth` decodes to text without `:`, so it is not user:password")]
    NoColon,
}

/// `decodeDockerConfigFieldAuth`: padded standard base64 if the trimmed value ends with `=`,
/// unpadded otherwise; then split at the first `:`.
pub(crate) fn decode_auth(value: &str) -> Result<(String, String), AuthError> {
    let engine = if value.trim().ends_with('=') {
        &GO_STD
    } else {
        &GO_RAW_STD
    };
    let bytes = go_decode(engine, value).ok_or(AuthError::NotBase64)?;
    let text = String::from_utf8_lossy(&bytes);
    let (user, password) = text.split_once(':').ok_or(AuthError::NoColon)?;
    Ok((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_decoding_follows_the_upstream_table() {
        let ok = |s: &str| decode_auth(s).map(|(u, p)| format!("{u}/{p}"));
        assert_eq!(ok("Zm9vOmJhcg=="), Ok("foo/bar".into()));
        assert_eq!(ok("Zm9vOmJhcg"), Ok("foo/bar".into()));
        assert_eq!(ok("Zm9vOm\nJhcg==\n"), Ok("foo/bar".into()));
        assert_eq!(ok("Zm9vOmJhcg== "), Err(AuthError::NotBase64));
        assert_eq!(ok("cGFudHM="), Err(AuthError::NoColon));
        assert_eq!(ok("pants"), Err(AuthError::NotBase64));
        assert_eq!(ok("Zm9vOmJhcg-_"), Err(AuthError::NotBase64));
    }

    #[test]
    fn auth_overrides_fields_and_wrong_types_break() {
        let c = decode(
            br#"{"auths":{"r":{"username":"foo","password":"bar","auth":"cGluZzpwb25n"}}}"#,
            Format::DockerConfigJson,
        );
        assert_eq!(c.entries[0].credential.username, "ping");
        assert_eq!(c.entries[0].credential.password, "pong");
        assert!(c.entries[0].facts.auth_overrides_username);
        let c = decode(
            br#"{"auths":{"r":{"email":false}}}"#,
            Format::DockerConfigJson,
        );
        assert_eq!(c.problems[0].kind, DecodeProblemKind::WrongType);
    }

    #[test]
    fn go_field_matching_is_case_insensitive_and_last_wins() {
        let c = decode(
            br#"{"Auths":{"r":{"USERNAME":"a","username":"b","Password":"p"}}}"#,
            Format::DockerConfigJson,
        );
        assert_eq!(c.auths_field, vec!["Auths".to_string()]);
        let e = &c.entries[0];
        assert_eq!(e.credential.username, "b");
        assert_eq!(e.credential.password, "p");
        assert_eq!(e.facts.duplicate_fields, vec!["username".to_string()]);
        assert!(field_is("u\u{017F}ername", "username"));
    }

    #[test]
    fn repeated_auths_merge_and_null_resets() {
        let c = decode(
            br#"{"auths":{"a":{}},"auths":{"b":{}}}"#,
            Format::DockerConfigJson,
        );
        assert_eq!(c.entries.len(), 2);
        let c = decode(
            br#"{"auths":{"a":{}},"auths":null}"#,
            Format::DockerConfigJson,
        );
        assert!(c.entries.is_empty());
    }

    #[test]
    fn config_json_under_dockercfg_is_a_registry_named_auths() {
        let c = decode(
            br#"{"auths":{"r":{"auth":"Zm9vOmJhcg=="}}}"#,
            Format::DockerCfg,
        );
        assert!(c.auths_key_in_dockercfg);
        assert_eq!(c.entries[0].key, "auths");
        assert!(c.entries[0].credential.is_empty());
        // credsStore is a string where the kubelet expects an entry object: broken.
        let c = decode(br#"{"credsStore":"desktop"}"#, Format::DockerCfg);
        assert!(c.is_broken());
    }

    #[test]
    fn credential_debug_redacts_password() {
        let c = Credential {
            username: "u".into(),
            password: "hunter2".into(),
            email: String::new(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
