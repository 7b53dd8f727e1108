//! What the kubelet (and the API server) would do with a set of documents, as findings.

use serde::Serialize;

use super::{
    AuthEntry, Content, DOCKER_HUB_FALLBACK_INDEX_KEY, DecodeProblemKind, DockerConfig, Document,
    Format, KEY_DOCKERCFG, KEY_DOCKERCONFIGJSON, SecretDoc, TYPE_DOCKERCFG, TYPE_DOCKERCONFIGJSON,
    decode, display_key,
};
use crate::keyring;
use crate::reference::DOCKER_HUB_HOSTS;

/// `MaxSecretSize`: the sum of all decoded data values.
const MAX_SECRET_SIZE: usize = 1024 * 1024;
/// A Docker Hub lookup target used to test what a key does for Hub images.
const HUB_SAMPLE_TARGET: &str = "docker.io/library/nginx";

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
pub(crate) struct Finding {
    pub(crate) severity: Severity,
    /// Stable short name for scripts.
    pub(crate) code: &'static str,
    /// The document (`Secret ns/name`, `docker config`).
    pub(crate) source: String,
    /// The `auths` key concerned, userinfo redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) registry: Option<String>,
    pub(crate) message: String,
}

/// Lints every document and the keyring they form together.
pub(crate) fn lint(docs: &[Document]) -> Vec<Finding> {
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
    if let Some(message) = port_pitfall(&index) {
        push(Severity::Warning, "key-with-port", key, message);
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

/// The kubelet compares ports exactly: a key with a port is used only for images that spell
/// the same port. Only the default ports are a pitfall: an image without a port is pulled
/// from 443 (or 80), so `host:443` looks right and never matches it, while a key on any other
/// port serves the only images that can reach that registry (`127.0.0.1:5000/app`).
fn port_pitfall(index: &str) -> Option<String> {
    let host = index.split('/').next().unwrap_or(index);
    let (name, port) = match host.strip_prefix('[') {
        Some(rest) => {
            let (address, after) = rest.split_once(']')?;
            (format!("[{address}]"), after.strip_prefix(':')?)
        }
        None => {
            let (name, port) = host.rsplit_once(':')?;
            (name.to_string(), port)
        }
    };
    if port != "443" && port != "80" {
        return None;
    }
    let path = index[host.len()..].trim_end_matches('/');
    Some(format!(
        "index key `{index}` has port {port}: the kubelet uses it only for images that name that port ({host}{path}/app), never for {name}{path}/app"
    ))
}

/// Keys that look like Docker Hub but never match its images (also `diagnose`'s near miss).
pub(crate) fn hub_pitfall(index: &str) -> Option<String> {
    let host = index.split('/').next().unwrap_or(index);
    let hub_like = DOCKER_HUB_HOSTS
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
