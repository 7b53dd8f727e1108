//! Registry credential configs exactly as the kubelet reads them.
//!
//! `.dockerconfigjson` (`{"auths": {...}}`) and legacy `.dockercfg` (the bare registry map)
//! are decoded the way Go's `encoding/json` decodes them into the kubelet's structs: field
//! names match case-insensitively, the last duplicate wins, wrong JSON types are errors, and
//! `auth` (base64 of `user:password`) overrides `username`/`password`. Secret manifests
//! (YAML or JSON, several documents, a `v1` List) and bare docker configs are read into
//! [`Document`]s; [`lint`] says what the kubelet would do with them, [`build_keyring`] gives
//! the keyring a Pod listing all of them would get.
//!
//! Nothing here keeps or prints a password, token or `auth` value outside [`Credential`],
//! whose `Debug` redacts them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::Serialize;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use thiserror::Error;

use crate::keyring::{self, Keyring};

pub const TYPE_DOCKERCONFIGJSON: &str = "kubernetes.io/dockerconfigjson";
pub const TYPE_DOCKERCFG: &str = "kubernetes.io/dockercfg";
pub const KEY_DOCKERCONFIGJSON: &str = ".dockerconfigjson";
pub const KEY_DOCKERCFG: &str = ".dockercfg";
/// kubectl's default server key for Docker Hub.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";
/// `MaxSecretSize`: the sum of all decoded data values.
const MAX_SECRET_SIZE: usize = 1024 * 1024;
/// The only index key the kubelet's Docker Hub fallback looks at.
pub const DOCKER_HUB_FALLBACK_INDEX_KEY: &str = "index.docker.io";
/// A Docker Hub lookup target used to test what a key does for Hub images.
const HUB_SAMPLE_TARGET: &str = "docker.io/library/nginx";

/// Go's `base64.StdEncoding` (padded, lenient about trailing bits).
const GO_STD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);
/// Go's `base64.RawStdEncoding` (no padding allowed).
const GO_RAW_STD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone),
);

/// Standard padded base64, as kubectl writes `auth` and Secret `data`.
pub fn encode_std(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes base64 the way Go's decoders do: `\r` and `\n` anywhere are skipped.
fn go_decode(engine: &GeneralPurpose, value: &str) -> Option<Vec<u8>> {
    let cleaned: String = value.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    engine.decode(cleaned).ok()
}

/// Secret `data` values: standard padded base64 (Go `[]byte` JSON decoding).
pub fn decode_secret_data(value: &str) -> Option<Vec<u8>> {
    go_decode(&GO_STD, value)
}

// ---------------------------------------------------------------------------------------
// Ordered JSON

/// A JSON value that keeps object members in document order, duplicates included, since
/// Go's decoder sees every member in order and lets the last one win.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number,
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// The JSON type name, for messages.
    fn type_name(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct JsonVisitor;
        impl<'de> Visitor<'de> for JsonVisitor {
            type Value = Json;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Json, E> {
                Ok(Json::Bool(true))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Json, E> {
                Ok(Json::Number)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Json, E> {
                Ok(Json::Number)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Json, E> {
                Ok(Json::Number)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
                Ok(Json::String(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
                Ok(Json::String(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Json::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
                let mut members = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Json>()? {
                    members.push((k, v));
                }
                Ok(Json::Object(members))
            }
        }
        deserializer.deserialize_any(JsonVisitor)
    }
}

/// Go's JSON field-name folding: ASCII case-insensitive, plus the two non-ASCII runes whose
/// fold set contains an ASCII letter (`ſ` ~ `s`, Kelvin sign ~ `k`).
fn go_fold(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\u{017F}' => 'S',
            '\u{212A}' => 'K',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

/// Does JSON key `written` select the Go struct field tagged `field`?
fn field_is(written: &str, field: &str) -> bool {
    written == field || go_fold(written) == go_fold(field)
}

// ---------------------------------------------------------------------------------------
// Decoding

/// Which of the two formats a config is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `{"auths": {...}}` (`.dockerconfigjson`, `~/.docker/config.json`).
    DockerConfigJson,
    /// The bare registry map (`.dockercfg`).
    DockerCfg,
}

impl Format {
    pub fn data_key(self) -> &'static str {
        match self {
            Format::DockerConfigJson => KEY_DOCKERCONFIGJSON,
            Format::DockerCfg => KEY_DOCKERCFG,
        }
    }
    pub fn secret_type(self) -> &'static str {
        match self {
            Format::DockerConfigJson => TYPE_DOCKERCONFIGJSON,
            Format::DockerCfg => TYPE_DOCKERCFG,
        }
    }
}

/// The credential the kubelet keeps for one `auths` entry.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
    pub email: String,
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
    pub fn is_empty(&self) -> bool {
        self.username.is_empty() && self.password.is_empty()
    }
}

/// What the decoder noticed about one entry, beyond the credential.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryFacts {
    /// A non-empty `auth` was present and used.
    pub used_auth: bool,
    /// `auth` decodes to a username different from a non-empty `username` field.
    pub auth_overrides_username: bool,
    /// `auth` decodes to a password different from a non-empty `password` field.
    pub auth_overrides_password: bool,
    /// Token fields the kubelet does not read (`identitytoken`, `registrytoken`).
    pub token_fields: Vec<String>,
    /// Field names the kubelet accepted only case-insensitively, as written.
    pub folded_fields: Vec<String>,
    /// Fields given more than once (the last one wins).
    pub duplicate_fields: Vec<String>,
}

/// One `auths` entry as decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthEntry {
    pub key: String,
    pub credential: Credential,
    pub facts: EntryFacts,
}

/// A decode failure: the kubelet would refuse the whole keyring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeProblem {
    /// The `auths` key concerned, if any.
    pub registry: Option<String>,
    pub kind: DecodeProblemKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecodeProblemKind {
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
pub struct DockerConfig {
    /// Entries the kubelet adds to its keyring, in document order (a repeated key keeps its
    /// first position and its last value).
    pub entries: Vec<AuthEntry>,
    /// How the `auths` field was written, when present (`.dockerconfigjson` only).
    pub auths_field: Vec<String>,
    /// The top level is JSON `null` (accepted, contributes nothing).
    pub top_level_null: bool,
    /// Top-level keys of a `.dockerconfigjson` other than `auths` and `HttpHeaders`.
    pub other_fields: Vec<String>,
    /// `credsStore` helper name, if the config has one.
    pub creds_store: Option<String>,
    /// `credHelpers`: registry -> helper name.
    pub cred_helpers: Vec<(String, String)>,
    /// In a `.dockercfg`: a top-level `auths` key holding an object (a config.json in the
    /// wrong format).
    pub auths_key_in_dockercfg: bool,
    /// Problems that make the kubelet reject the config.
    pub problems: Vec<DecodeProblem>,
}

impl DockerConfig {
    /// The kubelet would fail every pull of a Pod that lists this config.
    pub fn is_broken(&self) -> bool {
        !self.problems.is_empty()
    }
}

/// Decodes `bytes` in `format` as the kubelet does, collecting every problem rather than
/// stopping at the first.
pub fn decode(bytes: &[u8], format: Format) -> DockerConfig {
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
pub enum AuthError {
    #[error("`auth` is not valid base64 (standard alphabet; padded if it ends with `=`)")]
    NotBase64,
    #[error("`auth` decodes to text without `:`, so it is not user:password")]
    NoColon,
}

/// `decodeDockerConfigFieldAuth`: padded standard base64 if the trimmed value ends with `=`,
/// unpadded otherwise; then split at the first `:`.
pub fn decode_auth(value: &str) -> Result<(String, String), AuthError> {
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

/// kubectl's `auth`: padded standard base64 of `user:password`.
pub fn encode_auth(username: &str, password: &str) -> String {
    encode_std(format!("{username}:{password}").as_bytes())
}

// ---------------------------------------------------------------------------------------
// Writing

/// One registry entry in kubectl's shape.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub server: String,
    pub username: String,
    pub password: String,
    pub email: Option<String>,
}

/// Serializes entries in kubectl's shape (`username`, `password`, `email` if given, `auth`,
/// in that order), wrapped in `auths` for `.dockerconfigjson`.
pub fn render_config(entries: &[NewEntry], format: Format) -> String {
    #[derive(Serialize)]
    struct EntryOut<'a> {
        username: &'a str,
        password: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        email: Option<&'a str>,
        auth: String,
    }
    struct Registries<'a>(&'a [NewEntry]);
    impl Serialize for Registries<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut map = serializer.serialize_map(Some(self.0.len()))?;
            for e in self.0 {
                let out = EntryOut {
                    username: &e.username,
                    password: &e.password,
                    email: e.email.as_deref().filter(|m| !m.is_empty()),
                    auth: encode_auth(&e.username, &e.password),
                };
                map.serialize_entry(&e.server, &out)?;
            }
            map.end()
        }
    }
    #[derive(Serialize)]
    struct ConfigJson<'a> {
        auths: Registries<'a>,
    }
    let registries = Registries(entries);
    let text = match format {
        Format::DockerConfigJson => serde_json::to_string(&ConfigJson { auths: registries }),
        Format::DockerCfg => serde_json::to_string(&registries),
    };
    // Serializing strings into JSON cannot fail.
    text.unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Input documents

/// A Secret as read from a manifest or the API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretDoc {
    pub name: String,
    pub namespace: Option<String>,
    /// `type`, `Opaque` when absent (the API server's default).
    pub secret_type: String,
    /// `data` decoded, with `stringData` merged over it.
    pub data: BTreeMap<String, Vec<u8>>,
    /// `data` keys whose value is not base64 (the API server rejects the manifest).
    pub undecodable: Vec<String>,
}

impl SecretDoc {
    /// From an API object.
    pub fn from_k8s(secret: &k8s_openapi::api::core::v1::Secret) -> Self {
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
    pub fn kubelet_config(&self) -> Option<(Format, &[u8])> {
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
pub struct Document {
    /// How findings name it: `Secret ns/name`, `docker config`, `document 3`.
    pub label: String,
    pub content: Content,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
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
    pub fn kubelet_config(&self) -> Option<(Format, &[u8])> {
        match &self.content {
            Content::Secret(secret) => secret.kubelet_config(),
            Content::DockerConfig { format, bytes } => Some((*format, bytes.as_slice())),
            Content::Other { .. } => None,
        }
    }
}

/// The input cannot be used at all.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InputError {
    #[error("the input is empty")]
    Empty,
    #[error("the input is neither JSON nor YAML{0}")]
    Syntax(String),
    #[error("the input holds no Secret and no docker config (found: {0})")]
    NothingUsable(String),
}

/// Reads Secret manifests (YAML or JSON, several documents, `List`s) or a bare docker
/// config.
pub fn parse_documents(text: &str) -> Result<Vec<Document>, InputError> {
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

// ---------------------------------------------------------------------------------------
// Keyring

/// A credential in a keyring, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcedCredential {
    /// The document label (`Secret ns/name`).
    pub source: String,
    pub credential: Credential,
}

/// A config the kubelet would reject; a Pod listing it fails every pull.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{source_label}: {}", .problems.iter().map(describe_problem).collect::<Vec<_>>().join("; "))]
pub struct BrokenConfig {
    pub source_label: String,
    pub problems: Vec<DecodeProblem>,
}

fn describe_problem(p: &DecodeProblem) -> String {
    match &p.registry {
        Some(r) => format!("registry {}: {}", display_key(r), p.message),
        None => p.message.clone(),
    }
}

/// The keyring a Pod listing every document (in order) as `imagePullSecrets` would get.
pub fn build_keyring(docs: &[Document]) -> Result<Keyring<SourcedCredential>, Vec<BrokenConfig>> {
    let mut ring = Keyring::new();
    let mut broken = Vec::new();
    for doc in docs {
        let Some((format, bytes)) = doc.kubelet_config() else {
            continue;
        };
        let config = decode(bytes, format);
        if config.is_broken() {
            broken.push(BrokenConfig {
                source_label: doc.label.clone(),
                problems: config.problems,
            });
            continue;
        }
        for entry in config.entries {
            ring.add(
                &entry.key,
                SourcedCredential {
                    source: doc.label.clone(),
                    credential: entry.credential,
                },
            );
        }
    }
    if broken.is_empty() {
        Ok(ring)
    } else {
        Err(broken)
    }
}

/// A registry key for display: userinfo (`https://user:pass@host`) is removed.
pub fn display_key(key: &str) -> String {
    let (scheme, rest) = match key.find("://") {
        Some(i) => key.split_at(i + 3),
        None => ("", key),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}<redacted>@{}", &rest[at + 1..]),
        None => key.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// Lint

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The kubelet will not use the credential, or pulls fail.
    Error,
    /// Works for the kubelet, but surprising or fragile.
    Warning,
}

/// One problem, phrased as what the kubelet would do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// Stable short name for scripts.
    pub code: &'static str,
    /// The document (`Secret ns/name`, `docker config`).
    pub source: String,
    /// The `auths` key concerned, userinfo redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    pub message: String,
}

/// Lints every document and the keyring they form together.
pub fn lint(docs: &[Document]) -> Vec<Finding> {
    let mut out = Vec::new();
    // (source, key, index key) of every entry the kubelet would add, for cross-document checks.
    let mut added: Vec<(String, String, String)> = Vec::new();
    for doc in docs {
        let mut push = |severity, code, registry: Option<&str>, message: String| {
            out.push(Finding {
                severity,
                code,
                source: doc.label.clone(),
                registry: registry.map(display_key),
                message,
            })
        };
        let (format, bytes, used) = match &doc.content {
            Content::Other { .. } => continue,
            Content::DockerConfig { format, bytes } => (*format, bytes.as_slice(), true),
            Content::Secret(secret) => {
                for key in &secret.undecodable {
                    push(
                        Severity::Error,
                        "data-not-base64",
                        None,
                        format!(
                            "data key `{key}` is not valid base64; the API server rejects this Secret (put plain text under `stringData`)"
                        ),
                    );
                }
                if !secret.undecodable.is_empty() {
                    continue;
                }
                lint_api_validation(secret, &mut push);
                match lint_secret_shape(secret, &mut push) {
                    Some((format, bytes, used)) => (format, bytes, used),
                    None => continue,
                }
            }
        };
        let config = decode(bytes, format);
        let in_secret = matches!(doc.content, Content::Secret(_));
        lint_config(&config, format, used, in_secret, &mut push);
        if used && !config.is_broken() {
            for entry in &config.entries {
                if let Some(index) = keyring::index_key(&entry.key) {
                    added.push((doc.label.clone(), entry.key.clone(), index));
                }
            }
        }
    }
    lint_hub_shadowing(&added, &mut out);
    out
}

/// What `ValidateSecret` rejects beyond the type checks: bad data key names, over 1 MiB.
fn lint_api_validation(
    secret: &SecretDoc,
    push: &mut impl FnMut(Severity, &'static str, Option<&str>, String),
) {
    for key in secret.data.keys() {
        let valid = !key.is_empty()
            && key.len() <= 253
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && key != "."
            && !key.starts_with("..");
        if !valid {
            push(
                Severity::Error,
                "data-key-invalid",
                None,
                format!(
                    "data key {key:?} is not a valid Secret key ([-._a-zA-Z0-9]+, not `.`, not starting with `..`); the API server rejects this Secret"
                ),
            );
        }
    }
    let size: usize = secret.data.values().map(Vec::len).sum();
    if size > MAX_SECRET_SIZE {
        push(
            Severity::Error,
            "secret-too-large",
            None,
            format!(
                "the data adds up to {size} bytes, over the 1 MiB limit; the API server rejects this Secret"
            ),
        );
    }
}

/// Type and data-key checks. Returns the content to analyse and whether the kubelet uses it.
fn lint_secret_shape<'a>(
    secret: &'a SecretDoc,
    push: &mut impl FnMut(Severity, &'static str, Option<&str>, String),
) -> Option<(Format, &'a [u8], bool)> {
    let json = secret.data.get(KEY_DOCKERCONFIGJSON);
    let cfg = secret.data.get(KEY_DOCKERCFG);
    let t = secret.secret_type.as_str();
    if let Some((format, bytes)) = secret.kubelet_config() {
        return Some((format, bytes, true));
    }
    let (wanted, present) = match t {
        TYPE_DOCKERCONFIGJSON => (Some(Format::DockerConfigJson), json),
        TYPE_DOCKERCFG => (Some(Format::DockerCfg), cfg),
        _ => (None, None),
    };
    if let Some(wanted) = wanted {
        let other = match wanted {
            Format::DockerConfigJson => cfg.map(|b| (Format::DockerCfg, b)),
            Format::DockerCfg => json.map(|b| (Format::DockerConfigJson, b)),
        };
        let what = if present.is_some() {
            "is empty"
        } else {
            "is missing"
        };
        let mut message = format!(
            "type {t} but data key `{}` {what}: the API server rejects it and the kubelet would ignore it",
            wanted.data_key()
        );
        if let Some((found, _)) = other {
            message.push_str(&format!(
                "; the content is under `{}`: use type {} (or move it to `{}`)",
                found.data_key(),
                found.secret_type(),
                wanted.data_key()
            ));
        }
        push(Severity::Error, "type-key-mismatch", None, message);
        return other
            .filter(|(_, b)| !b.is_empty())
            .map(|(f, b)| (f, b.as_slice(), false));
    }
    let content = json
        .map(|b| (Format::DockerConfigJson, b))
        .or(cfg.map(|b| (Format::DockerCfg, b)));
    match content {
        Some((format, bytes)) => {
            push(
                Severity::Error,
                "type-key-mismatch",
                None,
                format!(
                    "type {t}: the kubelet ignores this Secret even though it holds `{}`; use type {}",
                    format.data_key(),
                    format.secret_type()
                ),
            );
            (!bytes.is_empty()).then_some((format, bytes.as_slice(), false))
        }
        None => {
            push(
                Severity::Error,
                "not-a-registry-secret",
                None,
                format!(
                    "type {t} without `.dockerconfigjson` or `.dockercfg`: not a registry Secret, the kubelet ignores it"
                ),
            );
            None
        }
    }
}

fn lint_config(
    config: &DockerConfig,
    format: Format,
    used: bool,
    in_secret: bool,
    push: &mut impl FnMut(Severity, &'static str, Option<&str>, String),
) {
    let consequence = if used {
        "the kubelet fails every image pull of a Pod that lists this Secret, for every registry"
    } else {
        "the kubelet would fail every pull once the type is fixed"
    };
    for p in &config.problems {
        let (code, not_an_object) = match p.kind {
            DecodeProblemKind::InvalidJson => ("invalid-json", true),
            DecodeProblemKind::NotAnObject => ("wrong-json-type", true),
            DecodeProblemKind::WrongType => ("wrong-json-type", false),
            DecodeProblemKind::BadAuth => ("bad-auth", false),
        };
        // The API server checks that a registry Secret's data is a JSON object (nothing
        // more), so these never reach the kubelet through a correctly typed Secret.
        let message = if not_an_object && used && in_secret {
            format!(
                "{}: the API server rejects this Secret (its {} must be a JSON object); stored some other way, {consequence}",
                p.message,
                format.data_key()
            )
        } else {
            format!("{}: {consequence}", p.message)
        };
        push(Severity::Error, code, p.registry.as_deref(), message);
    }
    if config
        .problems
        .iter()
        .any(|p| p.kind == DecodeProblemKind::InvalidJson)
    {
        return;
    }
    match format {
        Format::DockerConfigJson => {
            if config.top_level_null {
                push(
                    Severity::Error,
                    "no-auths",
                    None,
                    "the config is `null`: the API server accepts it, the kubelet finds no credentials".into(),
                );
            } else if config.auths_field.is_empty() {
                if !config.other_fields.is_empty()
                    && config
                        .other_fields
                        .iter()
                        .all(|k| !matches!(k.as_str(), "credsStore" | "credHelpers"))
                {
                    push(
                        Severity::Error,
                        "dockercfg-as-dockerconfigjson",
                        None,
                        "no `auths`: this is a legacy .dockercfg registry map, and the kubelet finds no credentials in it; wrap it as {\"auths\": ...} or use type kubernetes.io/dockercfg with key .dockercfg".into(),
                    );
                } else {
                    push(
                        Severity::Error,
                        "no-auths",
                        None,
                        "no `auths`: the kubelet finds no credentials".into(),
                    );
                }
            } else if config.entries.is_empty() && !config.is_broken() {
                push(
                    Severity::Error,
                    "no-auths",
                    None,
                    "`auths` is empty: the kubelet finds no credentials".into(),
                );
            }
            for written in config.auths_field.iter().filter(|w| *w != "auths") {
                push(
                    Severity::Warning,
                    "case-insensitive-field",
                    None,
                    format!(
                        "`{written}`: the kubelet reads it as `auths` (Go matches JSON field names case-insensitively), docker, containerd and most other tools do not; write `auths`"
                    ),
                );
            }
            if config.auths_field.len() > 1 {
                push(
                    Severity::Warning,
                    "duplicate-field",
                    None,
                    "`auths` appears more than once: the kubelet merges them (later keys win), other tools keep only one".into(),
                );
            }
        }
        Format::DockerCfg => {
            if config.auths_key_in_dockercfg {
                push(
                    Severity::Error,
                    "dockerconfigjson-as-dockercfg",
                    Some("auths"),
                    "a config.json ({\"auths\": ...}) stored as .dockercfg: the kubelet reads one registry literally named `auths` with no credentials, which matches no image; use type kubernetes.io/dockerconfigjson with key .dockerconfigjson".into(),
                );
            }
            if config.top_level_null {
                push(
                    Severity::Error,
                    "no-auths",
                    None,
                    "the config is `null`: the kubelet finds no credentials".into(),
                );
            }
        }
    }
    if let Some(helper) = &config.creds_store {
        push(
            Severity::Warning,
            "creds-store",
            None,
            format!(
                "`credsStore` (docker-credential-{helper}) is ignored by the kubelet: credentials kept in the helper are not in this Secret"
            ),
        );
    }
    for (registry, helper) in &config.cred_helpers {
        push(
            Severity::Warning,
            "cred-helpers",
            Some(registry),
            format!(
                "`credHelpers` sends this registry to docker-credential-{helper}, which the kubelet ignores: no credential for it comes from this Secret"
            ),
        );
    }
    for entry in &config.entries {
        lint_entry(entry, config, push);
    }
}

fn lint_entry(
    entry: &AuthEntry,
    config: &DockerConfig,
    push: &mut impl FnMut(Severity, &'static str, Option<&str>, String),
) {
    let key = Some(entry.key.as_str());
    if config.auths_key_in_dockercfg && entry.key == "auths" {
        return; // already reported
    }
    let Some(index) = keyring::index_key(&entry.key) else {
        push(
            Severity::Error,
            "skipped-key",
            key,
            "the kubelet cannot parse this key as a URL (e.g. a non-numeric port) and skips the entry".into(),
        );
        return;
    };
    if let Some(message) = hub_pitfall(&index) {
        push(Severity::Warning, "docker-hub-key", key, message);
    }
    let facts = &entry.facts;
    if entry.credential.is_empty() {
        if !facts.token_fields.is_empty() {
            push(
                Severity::Warning,
                "identitytoken-only",
                key,
                format!(
                    "only `{}`, which the kubelet does not read: it offers an empty username and password for this registry, before any later match",
                    facts.token_fields.join("`, `")
                ),
            );
        } else {
            let helper = config
                .cred_helpers
                .iter()
                .find(|(r, _)| keyring::index_key(r).as_deref() == Some(index.as_str()))
                .map(|(_, h)| h.clone())
                .or_else(|| config.creds_store.clone());
            let mut message = "no credentials (no `auth`, `username` or `password`): the kubelet offers an empty username and password for this registry".to_string();
            if let Some(helper) = helper {
                message.push_str(&format!(
                    "; docker keeps them in docker-credential-{helper}, which the kubelet cannot use"
                ));
            }
            push(Severity::Warning, "empty-credential", key, message);
        }
    }
    if facts.auth_overrides_username || facts.auth_overrides_password {
        let what = match (facts.auth_overrides_username, facts.auth_overrides_password) {
            (true, true) => "username and password",
            (true, false) => "username",
            _ => "password",
        };
        push(
            Severity::Warning,
            "auth-mismatch",
            key,
            format!(
                "`auth` decodes to a different {what} than the `username`/`password` fields; the kubelet uses `auth`"
            ),
        );
    }
    for field in &facts.folded_fields {
        push(
            Severity::Warning,
            "case-insensitive-field",
            key,
            format!(
                "`{field}`: the kubelet accepts it (Go matches JSON field names case-insensitively), other tools may not; write it in lower case"
            ),
        );
    }
    for field in &facts.duplicate_fields {
        push(
            Severity::Warning,
            "duplicate-field",
            key,
            format!("`{field}` is given more than once: the kubelet uses the last one"),
        );
    }
}

/// Keys that look like Docker Hub but never match its images.
fn hub_pitfall(index: &str) -> Option<String> {
    let host = index.split('/').next().unwrap_or(index);
    let hub_like = [
        "registry-1.docker.io",
        "registry.hub.docker.com",
        "hub.docker.com",
        "index.docker.io",
    ]
    .iter()
    .any(|h| *h == host || keyring::urls_match(host, h));
    if !hub_like
        || index == DOCKER_HUB_FALLBACK_INDEX_KEY
        || keyring::urls_match(index, HUB_SAMPLE_TARGET)
    {
        return None;
    }
    Some(if host == DOCKER_HUB_FALLBACK_INDEX_KEY {
        format!(
            "index key `{index}` has a path: the Docker Hub fallback needs exactly `index.docker.io`, so this never matches Docker Hub images; use https://index.docker.io/v1/"
        )
    } else {
        format!(
            "index key `{index}` never matches Docker Hub images (the kubelet looks them up as docker.io/<repo>); use https://index.docker.io/v1/ or docker.io"
        )
    })
}

/// A key that matches Docker Hub images directly suppresses the fallback to `index.docker.io`.
fn lint_hub_shadowing(added: &[(String, String, String)], out: &mut Vec<Finding>) {
    let fallback: Vec<&(String, String, String)> = added
        .iter()
        .filter(|(_, _, index)| index == DOCKER_HUB_FALLBACK_INDEX_KEY)
        .collect();
    let Some((fallback_source, fallback_key, _)) = fallback.first() else {
        return;
    };
    for (source, key, index) in added {
        let host = index.split('/').next().unwrap_or(index);
        if index != DOCKER_HUB_FALLBACK_INDEX_KEY && keyring::urls_match(host, HUB_SAMPLE_TARGET) {
            let scope = if host == index.as_str() {
                "Docker Hub images".to_string()
            } else {
                format!("Docker Hub images under `{index}`")
            };
            out.push(Finding {
                severity: Severity::Warning,
                code: "docker-hub-shadowed",
                source: source.clone(),
                registry: Some(display_key(key)),
                message: format!(
                    "matches {scope} directly, so the kubelet never falls back to `{}` ({fallback_source}) for them",
                    display_key(fallback_key)
                ),
            });
        }
    }
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
    fn display_key_hides_userinfo() {
        assert_eq!(
            display_key("https://u:p@reg.io/v1/"),
            "https://<redacted>@reg.io/v1/"
        );
        assert_eq!(display_key("reg.io/a@b"), "reg.io/a@b");
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
