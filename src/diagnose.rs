//! PURE: why the kubelet will (or did) pull an image with or without working credentials.
//!
//! Given the Secrets a Pod lists (in the Pod's order, as the kubelet reads them), the image,
//! the policy rules that cover it and what the kubelet reported, [`diagnose_container`] gives
//! one [`Verdict`] with the reason and a one-line fix. The kubelet's rules are not repeated
//! here: Secrets are read by [`dockerconfig`] (type, data key, decoding, lint wording), keys
//! are matched by [`Keyring`] (index keys, URLsMatch, the Docker Hub fallback), images are
//! normalized by [`ImageRef`]. A near miss is explained by asking the same keyring whether a
//! corrected key would match.
//!
//! [`SecretFacts`] is what a Secret holds as far as pulling goes, without any password: it is
//! computed once per Secret version, by `diagnose` from what it read and by the watch caches
//! at ingest, so the admission warning ([`admission_warnings`]) costs no API call.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use serde::Serialize;

use crate::dockerconfig::{
    self, Content, DecodeProblemKind, Document, SecretDoc, Severity, display_key,
};
use crate::expiry::{self, ANNOTATION_EXPIRES_AT, UnixTime};
use crate::keyring::{self, Keyring, RegistryPattern};
use crate::plan::{self, SecretNeed};
use crate::policy::Policy;
use crate::reference::ImageRef;

/// Docker Hub's lookup host.
const DOCKER_HUB: &str = "docker.io";
/// Longest kubelet message quoted back.
const MAX_QUOTE: usize = 400;

/// Why a container pulls the way it does. The names are stable (`-o json`, scripts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Verdict {
    /// A Secret the kubelet uses has a matching key with a well-formed, unexpired credential.
    Ok,
    /// Nothing matches, and the container has started: the image is public.
    AnonymousOk,
    /// Nothing the Pod lists matches the image: the pull is anonymous.
    NoPullSecret,
    /// A listed Secret does not exist in the namespace.
    SecretMissing,
    /// A listed Secret is not a registry Secret the kubelet reads (type, data key, content).
    WrongType,
    /// The Secrets have entries, and one nearly matches the image (port, path, scheme, Docker
    /// Hub alias, glob): it misses the way the kubelet looks it up.
    KeyMismatch,
    /// The matching entry's `auth` is not base64 of `user:password`, or it is empty.
    BadAuth,
    /// The matching credential is a token past its expiry.
    TokenExpired,
    /// The image is not a valid reference: the kubelet never gets to credentials.
    InvalidImage,
    /// `--verify`: the registry rejected the credential (or the anonymous pull).
    RegistryDenied,
    /// `--verify`: the registry could not be reached (TLS, connection, timeout).
    RegistryUnreachable,
    /// `--verify`: authenticated, but the repository or tag does not exist.
    ImageNotFound,
}

impl Verdict {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::AnonymousOk => "anonymous-ok",
            Verdict::NoPullSecret => "no-pull-secret",
            Verdict::SecretMissing => "secret-missing",
            Verdict::WrongType => "wrong-type",
            Verdict::KeyMismatch => "key-mismatch",
            Verdict::BadAuth => "bad-auth",
            Verdict::TokenExpired => "token-expired",
            Verdict::InvalidImage => "invalid-image",
            Verdict::RegistryDenied => "registry-denied",
            Verdict::RegistryUnreachable => "registry-unreachable",
            Verdict::ImageNotFound => "image-not-found",
        }
    }

    /// Nothing for the user to fix.
    pub(crate) fn is_ok(self) -> bool {
        matches!(self, Verdict::Ok | Verdict::AnonymousOk)
    }
}

// ---------------------------------------------------------------------------------------
// What a Secret holds

/// One registry entry, as far as a verdict needs it (never the password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyFacts {
    /// Neither username nor password: the kubelet offers an empty credential.
    pub(crate) empty: bool,
    /// From an ECR password envelope.
    pub(crate) expires_at: Option<UnixTime>,
}

/// How the kubelet treats a Secret's content.
#[derive(Debug, Clone)]
pub(crate) enum Shape {
    /// It reads these entries (its keyring for this Secret alone).
    Usable(Keyring<KeyFacts>),
    /// It ignores the Secret (type or data key); the lint's explanation.
    Ignored(String),
    /// It cannot decode it and fails every pull of a Pod listing it.
    Broken { bad_auth: bool, reason: String },
}

/// A Secret summarized for pull verdicts: keys, expiry, shape. Holds no credential.
#[derive(Debug, Clone)]
pub(crate) struct SecretFacts {
    pub(crate) name: String,
    pub(crate) shape: Shape,
    /// [`ANNOTATION_EXPIRES_AT`], when present and valid.
    pub(crate) expires_at: Option<UnixTime>,
}

impl SecretFacts {
    pub(crate) fn from_secret(secret: &Secret) -> Self {
        Self::from_doc(
            &SecretDoc::from_k8s(secret),
            secret.metadata.annotations.as_ref(),
        )
    }

    pub(crate) fn from_doc(
        doc: &SecretDoc,
        annotations: Option<&BTreeMap<String, String>>,
    ) -> Self {
        let expires_at = annotations
            .and_then(|a| a.get(ANNOTATION_EXPIRES_AT))
            .and_then(|v| expiry::parse_rfc3339(v));
        let shape = match doc.kubelet_config() {
            None => Shape::Ignored(lint_reason(doc).unwrap_or_else(|| {
                format!(
                    "type {} without a non-empty `.dockerconfigjson`/`.dockercfg`: the kubelet ignores it",
                    doc.secret_type
                )
            })),
            Some((format, bytes)) => {
                let config = dockerconfig::decode(bytes, format);
                if config.is_broken() {
                    let bad_auth = config
                        .problems
                        .iter()
                        .any(|p| p.kind == DecodeProblemKind::BadAuth);
                    let reason = config
                        .problems
                        .iter()
                        .map(|p| match &p.registry {
                            Some(r) => format!("key `{}`: {}", display_key(r), p.message),
                            None => p.message.clone(),
                        })
                        .collect::<Vec<_>>()
                        .join("; ");
                    Shape::Broken { bad_auth, reason }
                } else {
                    Shape::Usable(config.keyring(|_, entry| KeyFacts {
                        empty: entry.credential.is_empty(),
                        expires_at: expiry::ecr_password_expiry(&entry.credential.password),
                    }))
                }
            }
        };
        SecretFacts {
            name: doc.name.clone(),
            shape,
            expires_at,
        }
    }

    /// The index keys the kubelet derives, for messages.
    pub(crate) fn keys(&self) -> Vec<String> {
        match &self.shape {
            Shape::Usable(ring) => ring.entries().iter().map(|e| display_key(&e.key)).collect(),
            _ => Vec::new(),
        }
    }
}

/// The lint's first error for a lone Secret: why the kubelet ignores it.
fn lint_reason(doc: &SecretDoc) -> Option<String> {
    let document = Document {
        label: format!("Secret {}", doc.name),
        content: Content::Secret(doc.clone()),
    };
    dockerconfig::lint(&[document])
        .into_iter()
        .find(|f| f.severity == Severity::Error)
        .map(|f| f.message)
}

// ---------------------------------------------------------------------------------------
// One image against the Pod's Secrets

/// One `imagePullSecrets` entry as found in the namespace.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Listed<'a> {
    Missing(&'a str),
    Found(&'a SecretFacts),
}

/// A policy rule that covers an image, and the Secret it gives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct RuleRef {
    pub(crate) rule: String,
    pub(crate) secret: String,
}

/// The credential decision for one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    pub(crate) verdict: Verdict,
    /// The Secret the verdict is about.
    pub(crate) secret: Option<String>,
    /// The registry key concerned (userinfo redacted).
    pub(crate) key: Option<String>,
    pub(crate) detail: String,
    pub(crate) fix: String,
    /// For `key-mismatch`: why the closest key misses, in a few words.
    pub(crate) why_not: Option<String>,
    /// For `ok` and `token-expired`: when the matching token expires.
    pub(crate) expires_at: Option<UnixTime>,
}

impl Finding {
    fn new(verdict: Verdict, detail: String, fix: String) -> Self {
        Finding {
            verdict,
            secret: None,
            key: None,
            detail,
            fix,
            why_not: None,
            expires_at: None,
        }
    }
}

/// A credential the combined keyring holds: which Secret, and its facts.
#[derive(Debug, Clone)]
struct Held {
    secret: usize,
    facts: KeyFacts,
}

/// What the kubelet will do for `target` (`registry/repository`) with the Secrets the Pod
/// lists, in order. `rules` are the policy rules covering the image (for the fixes).
pub(crate) fn evaluate(
    target: &str,
    listed: &[Listed<'_>],
    rules: &[RuleRef],
    now: UnixTime,
) -> Finding {
    let found: Vec<&SecretFacts> = listed
        .iter()
        .filter_map(|l| match l {
            Listed::Found(f) => Some(*f),
            Listed::Missing(_) => None,
        })
        .collect();
    // A Secret the kubelet cannot decode fails the whole keyring, whatever the image.
    for facts in &found {
        if let Shape::Broken { bad_auth, reason } = &facts.shape {
            let verdict = if *bad_auth {
                Verdict::BadAuth
            } else {
                Verdict::WrongType
            };
            let fix = if *bad_auth {
                format!(
                    "recreate Secret {:?} with `pullsecret-injector secret create` (it writes `auth` as base64 of user:password)",
                    facts.name
                )
            } else {
                format!(
                    "recreate Secret {:?} from a valid docker config (`pullsecret-injector secret lint` shows the problem)",
                    facts.name
                )
            };
            return Finding {
                secret: Some(facts.name.clone()),
                ..Finding::new(
                    verdict,
                    format!(
                        "the kubelet cannot decode Secret {:?} ({reason}) and fails every image pull of this Pod",
                        facts.name
                    ),
                    fix,
                )
            };
        }
    }

    // The Pod's keyring: every usable Secret's entries, in Pod order then key order.
    let mut ring: Keyring<Held> = Keyring::new();
    for (i, facts) in found.iter().enumerate() {
        if let Shape::Usable(own) = &facts.shape {
            for entry in own.entries() {
                ring.add(
                    &entry.key,
                    Held {
                        secret: i,
                        facts: entry.credential.clone(),
                    },
                );
            }
        }
    }
    let lookup = ring.lookup(target);
    if lookup.found() {
        return matched(target, &found, &lookup, now);
    }

    let missing: Vec<&str> = listed
        .iter()
        .filter_map(|l| match l {
            Listed::Missing(name) => Some(*name),
            Listed::Found(_) => None,
        })
        .collect();
    let ignored: Vec<(&str, &str)> = found
        .iter()
        .filter_map(|f| match &f.shape {
            Shape::Ignored(why) => Some((f.name.as_str(), why.as_str())),
            _ => None,
        })
        .collect();
    if let Some(name) = missing.first() {
        let given_by_rule = rules.iter().find(|r| r.secret == *name);
        let fix = match given_by_rule {
            Some(r) => format!(
                "the webhook copies {name:?} (rule {}) from its source namespace: check that the source exists and the webhook's logs for the failed copy, then recreate the Pod",
                r.rule
            ),
            None => format!(
                "create Secret {name:?} in this namespace (`pullsecret-injector secret create {name} --server HOST ...`), then recreate the Pod"
            ),
        };
        return Finding {
            secret: Some((*name).to_string()),
            ..Finding::new(
                Verdict::SecretMissing,
                format!(
                    "imagePullSecrets names {}, which do{} not exist in the namespace: the kubelet skips {} and pulls {target} without {}",
                    quoted(&missing),
                    if missing.len() == 1 { "es" } else { "" },
                    if missing.len() == 1 { "it" } else { "them" },
                    if missing.len() == 1 { "it" } else { "them" },
                ),
                fix,
            )
        };
    }
    if let Some((name, why)) = ignored.first() {
        return Finding {
            secret: Some((*name).to_string()),
            ..Finding::new(
                Verdict::WrongType,
                format!("Secret {name:?}: {why}"),
                format!(
                    "recreate {name:?} as type kubernetes.io/dockerconfigjson with key .dockerconfigjson (`pullsecret-injector secret create {name} --server HOST ...`)"
                ),
            )
        };
    }
    if ring.entries().is_empty() {
        let detail = if listed.is_empty() {
            format!("the Pod lists no imagePullSecrets: the kubelet pulls {target} anonymously")
        } else {
            format!(
                "the Pod's Secrets ({}) hold no registry entry: the kubelet pulls {target} anonymously",
                quoted(&found.iter().map(|f| f.name.as_str()).collect::<Vec<_>>())
            )
        };
        return Finding::new(Verdict::NoPullSecret, detail, no_secret_fix(target, rules));
    }
    mismatch(target, &found, &ring, rules)
}

fn no_secret_fix(target: &str, rules: &[RuleRef]) -> String {
    match rules.first() {
        Some(r) => format!(
            "policy rule {} gives this image Secret {:?}, but the Pod does not list it (created before the rule, or while the webhook was down): recreate the Pod",
            r.rule, r.secret
        ),
        None => {
            let host = target.split('/').next().unwrap_or(target);
            format!(
                "if the image is private: add a policy rule for {host}, or create a pull Secret (`pullsecret-injector secret create NAME --server {host} ...`) and list it in imagePullSecrets"
            )
        }
    }
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Some key matches: is any credential it offers usable?
fn matched(
    target: &str,
    found: &[&SecretFacts],
    lookup: &keyring::Lookup<'_, Held>,
    now: UnixTime,
) -> Finding {
    let expiry_of = |h: &Held| match (h.facts.expires_at, found[h.secret].expires_at) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let via = if lookup.via_docker_hub_fallback {
        " (through the kubelet's Docker Hub fallback)"
    } else {
        ""
    };
    let about = |e: &keyring::Entry<Held>| {
        (
            Some(found[e.credential.secret].name.clone()),
            Some(display_key(&e.key)),
        )
    };
    // The runtime tries the credentials in order: one good one is enough.
    if let Some(e) = lookup
        .matches
        .iter()
        .find(|e| !e.credential.facts.empty && expiry_of(&e.credential).is_none_or(|t| t > now))
    {
        let (secret, key) = about(e);
        let mut detail = format!(
            "Secret {:?} key `{}` matches {target}{via}; its credential is well-formed",
            found[e.credential.secret].name,
            display_key(&e.key)
        );
        if let Some(t) = expiry_of(&e.credential) {
            detail.push_str(&format!(
                " and valid until {} ({})",
                expiry::format_rfc3339(t),
                expiry::relative(t, now)
            ));
        }
        return Finding {
            secret,
            key,
            expires_at: expiry_of(&e.credential),
            ..Finding::new(Verdict::Ok, detail, "nothing to fix".into())
        };
    }
    if let Some(e) = lookup.matches.iter().find(|e| !e.credential.facts.empty) {
        let (secret, key) = about(e);
        let at = expiry_of(&e.credential).unwrap_or(now);
        return Finding {
            secret: secret.clone(),
            key,
            expires_at: Some(at),
            ..Finding::new(
                Verdict::TokenExpired,
                format!(
                    "Secret {:?} key `{}` matches {target}{via}, but its token expired at {} ({}): the registry answers 401",
                    found[e.credential.secret].name,
                    display_key(&e.key),
                    expiry::format_rfc3339(at),
                    expiry::relative(at, now)
                ),
                format!(
                    "refresh Secret {:?} with a new token (ECR: `aws ecr get-login-password`; tokens last 12 h), or let `serve` keep it fresh with a tokenSources entry",
                    secret.unwrap_or_default()
                ),
            )
        };
    }
    let e = lookup.matches[0];
    let (secret, key) = about(e);
    Finding {
        secret: secret.clone(),
        key: key.clone(),
        ..Finding::new(
            Verdict::BadAuth,
            format!(
                "Secret {:?} key `{}` matches {target}{via}, but the entry has no credentials (no `auth`, `username` or `password`, or only an identitytoken): the kubelet sends an empty username and password",
                secret.clone().unwrap_or_default(),
                key.unwrap_or_default()
            ),
            format!(
                "recreate Secret {:?} with `pullsecret-injector secret create` so that `auth` holds base64 of user:password",
                secret.unwrap_or_default()
            ),
        )
    }
}

/// No key matches: name the closest one and why it misses.
fn mismatch(
    target: &str,
    found: &[&SecretFacts],
    ring: &Keyring<Held>,
    rules: &[RuleRef],
) -> Finding {
    let mut best: Option<(u8, &keyring::Entry<Held>, NearMiss)> = None;
    // Walk in the kubelet's order so that ties go to the key it would have tried first.
    let mut entries: Vec<&keyring::Entry<Held>> = ring.entries().iter().collect();
    entries.sort_by(|a, b| b.index_key.cmp(&a.index_key));
    for e in entries {
        if let Some(miss) = near_miss(&e.key, &e.index_key, target)
            && best
                .as_ref()
                .is_none_or(|(score, _, _)| miss.score > *score)
        {
            best = Some((miss.score, e, miss));
        }
    }
    let keys: Vec<String> = ring
        .entries()
        .iter()
        .map(|e| format!("`{}`", display_key(&e.key)))
        .collect();
    let names: Vec<&str> = found.iter().map(|f| f.name.as_str()).collect();
    let host = target.split('/').next().unwrap_or(target);
    match best {
        Some((_, e, miss)) => Finding {
            secret: Some(found[e.credential.secret].name.clone()),
            key: Some(display_key(&e.key)),
            why_not: Some(miss.short.clone()),
            ..Finding::new(
                Verdict::KeyMismatch,
                format!(
                    "no key of {} matches {target} the way the kubelet looks it up, so the pull is anonymous; closest: `{}` in Secret {:?}: {}",
                    quoted(&names),
                    display_key(&e.key),
                    found[e.credential.secret].name,
                    miss.why
                ),
                miss.fix,
            )
        },
        // No key is even close: the Secrets are for other registries.
        None => Finding::new(
            Verdict::NoPullSecret,
            format!(
                "the Pod's Secrets ({}) hold keys {}, none for {host}: the kubelet pulls {target} anonymously",
                quoted(&names),
                keys.join(", ")
            ),
            no_secret_fix(target, rules),
        ),
    }
}

struct NearMiss {
    score: u8,
    /// A few words, for the admission warning (which has 256 characters in all).
    short: String,
    why: String,
    fix: String,
}

/// `host[:port]` split into host and `:port` (empty when none).
fn split_port(host: &str) -> (&str, &str) {
    match host.rfind(':') {
        Some(i)
            if !host[i + 1..].contains(']')
                && host[i + 1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            host.split_at(i)
        }
        _ => (host, ""),
    }
}

fn split_path(s: &str) -> (&str, &str) {
    match s.find('/') {
        Some(i) => s.split_at(i),
        None => (s, ""),
    }
}

/// Why key `raw` (index key `index`) misses `target`, found by asking the kubelet's matcher
/// whether the corrected key would match.
fn near_miss(raw: &str, index: &str, target: &str) -> Option<NearMiss> {
    let (t_host, t_path) = split_path(target);
    let (t_name, t_port) = split_port(t_host);
    let (k_host, k_path) = split_path(index);
    let (k_name, k_port) = split_port(k_host);
    let matches =
        |candidate: &str| RegistryPattern::parse(candidate).is_some_and(|p| p.matches(target));

    // An upper-case scheme is not stripped: the "host" becomes `HTTPS:`.
    if let Some(i) = raw.find("://") {
        let lowered = format!("{}{}", raw[..i].to_ascii_lowercase(), &raw[i..]);
        if lowered != raw && matches(&lowered) {
            return Some(NearMiss {
                score: 4,
                short: "its scheme is not lower case, so the kubelet reads it as a host".into(),
                why: format!(
                    "the scheme `{}` is not lower case: the kubelet strips only `https://` and `http://`, so it reads this key as a host named `{}`",
                    &raw[..i + 3],
                    k_host
                ),
                fix: format!(
                    "write the key as `{lowered}` (lower-case scheme), or just `{t_host}`"
                ),
            });
        }
    }
    if t_name == DOCKER_HUB
        && let Some(why) = dockerconfig::hub_pitfall(index)
    {
        return Some(NearMiss {
            score: 4,
            short: format!(
                "Docker Hub images need the key {}",
                dockerconfig::DOCKER_HUB_KEY
            ),
            why,
            fix: format!(
                "use the key `{}` (what `kubectl create secret docker-registry` writes by default) or `docker.io`",
                dockerconfig::DOCKER_HUB_KEY
            ),
        });
    }
    if k_port != t_port {
        let candidate = format!("{k_name}{t_port}{k_path}");
        if matches(&candidate) {
            let why = match (k_port.is_empty(), t_port.is_empty()) {
                (true, false) => format!(
                    "the image names port {} (`{t_host}`) and the key names none: the kubelet requires the same port on both",
                    &t_port[1..]
                ),
                (false, true) => format!(
                    "the key names port {} and the image none: the kubelet requires the same port on both",
                    &k_port[1..]
                ),
                _ => format!(
                    "the key's port {} is not the image's port {}",
                    &k_port[1..],
                    &t_port[1..]
                ),
            };
            return Some(NearMiss {
                score: 3,
                short: match (k_port.is_empty(), t_port.is_empty()) {
                    (true, false) => {
                        format!("the key has no port, the image port {}", &t_port[1..])
                    }
                    (false, true) => format!("the key has port {}, the image none", &k_port[1..]),
                    _ => format!(
                        "the key has port {}, the image port {}",
                        &k_port[1..],
                        &t_port[1..]
                    ),
                },
                why,
                fix: format!(
                    "add an entry for `{t_host}` (`pullsecret-injector secret create NAME --server {t_host} ...`)"
                ),
            });
        }
    }
    if !k_path.is_empty() && matches(k_host) {
        return Some(NearMiss {
            score: 3,
            short: format!("the key only covers `{k_path}`"),
            why: format!(
                "the key is limited to the path `{k_path}`, the image's repository is `{t_path}`: the kubelet requires the key's path to be a prefix of the image's"
            ),
            fix: format!(
                "use the key `{k_host}` (the whole registry) or one whose path starts `{t_path}`"
            ),
        });
    }
    if k_name.contains('*') && k_name.split('.').count() != t_name.split('.').count() {
        return Some(NearMiss {
            score: 2,
            short: "`*` stands for one DNS label".into(),
            why: format!(
                "`*` stands for exactly one DNS label: `{k_name}` has {} labels, `{t_name}` has {}",
                k_name.split('.').count(),
                t_name.split('.').count()
            ),
            fix: format!("add an entry for `{t_host}`"),
        });
    }
    let same_domain = k_name.rsplit('.').take(2).eq(t_name.rsplit('.').take(2));
    if k_name != t_name && same_domain && t_name.contains('.') {
        return Some(NearMiss {
            score: 1,
            short: format!("a different host (image `{t_host}`)"),
            why: format!("it is for host `{k_host}`, the image is on `{t_host}`"),
            fix: format!("add an entry for `{t_host}`"),
        });
    }
    None
}

// ---------------------------------------------------------------------------------------
// What the kubelet said

/// What the kubelet reported for one container.
#[derive(Debug, Clone, Default)]
pub(crate) struct PullHistory {
    /// `status.containerStatuses[].state.waiting.reason` (`ErrImagePull`, `ImagePullBackOff`).
    pub(crate) waiting_reason: Option<String>,
    pub(crate) waiting_message: Option<String>,
    /// The container ran (running or terminated state, or an imageID): the pull worked.
    pub(crate) started: bool,
    /// Messages of the kubelet's `Failed` events for this container, newest last.
    pub(crate) failures: Vec<String>,
}

impl PullHistory {
    /// The kubelet's most telling words: the newest `Failed to pull image` event, else the
    /// waiting message.
    pub(crate) fn kubelet_message(&self) -> Option<&str> {
        self.failures
            .iter()
            .rev()
            .find(|m| m.starts_with("Failed to pull image"))
            .or(self.failures.last())
            .map(String::as_str)
            .or(self.waiting_message.as_deref())
    }

    /// The image pull is what keeps the container waiting.
    pub(crate) fn pull_failing(&self) -> bool {
        self.waiting_reason.as_deref().is_some_and(is_pull_failure)
    }
}

/// Waiting reasons the kubelet gives a container whose image it could not pull.
pub(crate) fn is_pull_failure(waiting_reason: &str) -> bool {
    matches!(
        waiting_reason,
        "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull"
    )
}

/// The kubelet's (runtime's) pull errors in plain words. Order matters: the anonymous-token
/// 403 also says "403".
pub(crate) fn translate(message: &str) -> Option<&'static str> {
    let m = message.to_ascii_lowercase();
    let has = |s: &str| m.contains(s);
    Some(if has("failed to fetch anonymous token") {
        "the pull was anonymous (no credential matched, or none was listed) and the registry refuses anonymous pulls: this 403/401 means \"who are you?\", not \"wrong password\""
    } else if has("failed to fetch oauth token")
        || has("unauthorized: incorrect username or password")
    {
        "the kubelet sent a credential and the registry's token server rejected it: wrong or expired password/token"
    } else if has("unauthorized: authentication required") || has("401 unauthorized") {
        "the registry wants credentials: none were sent (no key matched) or the ones sent were rejected"
    } else if has("repository does not exist or may require authorization")
        || has("pull access denied")
        || has("repository not found")
        || has("insufficient_scope")
    {
        "the repository is private and the pull had no credential with access to it, or its name is wrong (registries hide private repositories behind \"not found\")"
    } else if has("tls handshake timeout") {
        "network trouble between the node and the registry (proxy, firewall, MTU): the TLS handshake did not finish; credentials are not the issue"
    } else if has("x509:") || has("certificate signed by unknown authority") {
        "the node does not trust the registry's certificate: install its CA on the nodes (containerd's hosts.toml)"
    } else if has("no such host") {
        "the registry's host name does not resolve from the node (DNS, or a typo in the image)"
    } else if has("i/o timeout") || has("connection refused") || has("dial tcp") {
        "the node cannot reach the registry (network, firewall, registry down)"
    } else if has("toomanyrequests") || has("rate limit") {
        "the registry's pull rate limit: anonymous Docker Hub pulls are limited per IP, authenticated ones per account"
    } else if has("manifest unknown") || has(": not found") {
        "the tag or digest does not exist in the repository"
    } else if has("invalid reference format") {
        "the image reference is not valid"
    } else {
        return None;
    })
}

fn cut(text: &str) -> String {
    if text.chars().count() <= MAX_QUOTE {
        return text.to_string();
    }
    let mut out: String = text.chars().take(MAX_QUOTE - 1).collect();
    out.push('…');
    out
}

// ---------------------------------------------------------------------------------------
// One container

/// Registry check of `--verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct RegistryCheck {
    /// [`crate::registry::Outcome::code`].
    pub(crate) result: String,
    pub(crate) message: String,
}

/// The verdict for one container, as printed and as `-o json` `images[]`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ContainerReport {
    pub(crate) container: String,
    /// `container`, `initContainer`, `ephemeralContainer`.
    pub(crate) kind: &'static str,
    pub(crate) image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) lookup_target: Option<String>,
    pub(crate) verdict: Verdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) key: Option<String>,
    pub(crate) detail: String,
    pub(crate) fix: String,
    /// The waiting reason, when the container is waiting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) kubelet_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) kubelet_meaning: Option<&'static str>,
    /// Policy rules that cover the image.
    pub(crate) rules: Vec<RuleRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) registry: Option<RegistryCheck>,
}

/// Everything about one container: the credential verdict, and the kubelet's own words.
pub(crate) fn diagnose_container(
    kind: &'static str,
    container: &str,
    image: &str,
    listed: &[Listed<'_>],
    rules: Vec<RuleRef>,
    history: &PullHistory,
    now: UnixTime,
) -> ContainerReport {
    let (lookup_target, finding) = match ImageRef::parse(image) {
        Ok(reference) => {
            let target = reference.lookup_target();
            let mut finding = evaluate(&target, listed, &rules, now);
            if finding.verdict == Verdict::NoPullSecret && history.started {
                finding.verdict = Verdict::AnonymousOk;
                finding
                    .detail
                    .push_str(", and the container has started: the image is public");
                finding.fix = "nothing to fix".into();
            }
            (Some(target), finding)
        }
        Err(err) => (
            None,
            Finding::new(
                Verdict::InvalidImage,
                format!(
                    "{image:?} is not a valid image reference ({err}): the kubelet fails before looking for credentials"
                ),
                "fix the image reference in the Pod's spec".into(),
            ),
        ),
    };
    let mut detail = finding.detail;
    let kubelet_message = history.kubelet_message().map(cut);
    if finding.verdict == Verdict::Ok && history.pull_failing() {
        detail.push_str(
            "; the kubelet still failed to pull: the registry refused the credential or the image; run with --verify to ask it",
        );
    }
    ContainerReport {
        container: container.to_string(),
        kind,
        image: image.to_string(),
        lookup_target,
        verdict: finding.verdict,
        secret: finding.secret,
        key: finding.key,
        detail,
        fix: finding.fix,
        state: history.waiting_reason.clone(),
        kubelet_meaning: kubelet_message.as_deref().and_then(translate),
        kubelet_message,
        rules,
        registry: None,
    }
}

// ---------------------------------------------------------------------------------------
// Admission warnings

/// A warning for the AdmissionReview response, with its metric reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AdmissionWarning {
    /// The verdict name: `key-mismatch`, `token-expired`, `wrong-type`, `bad-auth`.
    pub(crate) reason: &'static str,
    pub(crate) message: String,
}

/// Looks up what the watch caches know about a Secret by name.
pub(crate) type FactsLookup<'a> = dyn Fn(&str) -> Option<Arc<SecretFacts>> + 'a;

/// Warnings for Secrets the Pod is given (injected, or listed and named by a rule) that the
/// kubelet would not use for the images their rules matched: no matching key, an expired
/// token, a wrong type or undecodable content. `facts` reads the watch caches (no I/O); a
/// Secret they do not know is not warned about.
pub(crate) fn admission_warnings(
    policy: &Policy,
    pod: &plan::PodFacts<'_>,
    given: &[SecretNeed],
    facts: &FactsLookup<'_>,
    now: UnixTime,
) -> Vec<AdmissionWarning> {
    let images: Vec<(String, String)> = pod
        .images()
        .filter_map(|i| {
            crate::reference::lookup_target(i.image)
                .ok()
                .map(|target| (i.image.to_string(), target))
        })
        .collect();
    let mut out = Vec::new();
    for need in given {
        let Some(secret) = facts(&need.name) else {
            continue;
        };
        let rules: Vec<&crate::policy::Rule> = policy
            .rules
            .iter()
            .filter(|r| need.rules.contains(&r.name))
            .collect();
        let mut seen: Vec<&str> = Vec::new();
        for (image, target) in &images {
            if seen.contains(&image.as_str()) {
                continue;
            }
            let Some(rule) = rules.iter().find(|r| r.matches_target(target)) else {
                continue;
            };
            seen.push(image);
            let finding = evaluate(target, &[Listed::Found(&secret)], &[], now);
            let reason = match finding.verdict {
                Verdict::Ok => continue,
                v => v.name(),
            };
            // Short: the apiserver shows at most 256 characters of each warning.
            let head = format!("pull secret {:?} (rule {})", need.name, rule.name);
            let message = match finding.verdict {
                Verdict::KeyMismatch | Verdict::NoPullSecret => {
                    let closest = match (&finding.key, &finding.why_not) {
                        (Some(k), Some(why)) => format!("closest `{k}`: {why}"),
                        _ if secret.keys().is_empty() => "it has no registry entry".to_string(),
                        _ => format!("its keys: {}", secret.keys().join(", ")),
                    };
                    format!(
                        "{head} has no key the kubelet would use for image {image:?} [{reason}]; {closest}"
                    )
                }
                Verdict::TokenExpired => format!(
                    "{head} holds a token that expired at {} [{reason}]; pulls of {image:?} will fail",
                    finding
                        .expires_at
                        .map(expiry::format_rfc3339)
                        .unwrap_or_default()
                ),
                _ => format!(
                    "{head} is unusable for image {image:?} [{reason}]: {}",
                    finding.detail
                ),
            };
            out.push(AdmissionWarning { reason, message });
            // An expired or unreadable Secret is the same for every image: say it once.
            if finding.verdict != Verdict::KeyMismatch {
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerconfig::encode_std;

    fn secret(name: &str, secret_type: &str, key: &str, body: &str) -> SecretFacts {
        let doc = SecretDoc {
            name: name.into(),
            namespace: Some("team-a".into()),
            secret_type: secret_type.into(),
            data: BTreeMap::from([(key.to_string(), body.as_bytes().to_vec())]),
            undecodable: Vec::new(),
        };
        SecretFacts::from_doc(&doc, None)
    }

    fn config(key: &str, user: &str, password: &str) -> SecretFacts {
        let auth = encode_std(format!("{user}:{password}").as_bytes());
        secret(
            "regcred",
            dockerconfig::TYPE_DOCKERCONFIGJSON,
            dockerconfig::KEY_DOCKERCONFIGJSON,
            &format!(r#"{{"auths":{{"{key}":{{"auth":"{auth}"}}}}}}"#),
        )
    }

    fn verdict(target: &str, facts: &SecretFacts) -> Finding {
        evaluate(target, &[Listed::Found(facts)], &[], 1_000)
    }

    #[test]
    fn port_path_scheme_and_hub_near_misses() {
        let f = verdict(
            "registry.example.com:5000/team/app",
            &config("https://registry.example.com", "u", "p"),
        );
        assert_eq!(f.verdict, Verdict::KeyMismatch);
        assert!(f.detail.contains("port 5000"), "{}", f.detail);
        let f = verdict("reg.io/other/app", &config("reg.io/team", "u", "p"));
        assert!(
            f.detail.contains("limited to the path `/team`"),
            "{}",
            f.detail
        );
        let f = verdict("reg.io/team/app", &config("HTTPS://reg.io", "u", "p"));
        assert!(f.detail.contains("not lower case"), "{}", f.detail);
        let f = verdict(
            "docker.io/library/nginx",
            &config("registry-1.docker.io", "u", "p"),
        );
        assert!(f.detail.contains("Docker Hub"), "{}", f.detail);
        let f = verdict("a.b.example.com/app", &config("*.example.com", "u", "p"));
        assert!(f.detail.contains("exactly one DNS label"), "{}", f.detail);
        let f = verdict(
            "docker.io/library/nginx",
            &config("https://index.docker.io/v1/", "u", "p"),
        );
        assert_eq!(f.verdict, Verdict::Ok, "{}", f.detail);
        assert!(f.detail.contains("fallback"), "{}", f.detail);
    }

    #[test]
    fn expiry_empty_and_broken() {
        let envelope = encode_std(
            br#"{"payload":"x","datakey":"y","version":"2","type":"DATA_KEY","expiration":500}"#,
        );
        let f = verdict(
            "1.dkr.ecr.eu-west-1.amazonaws.com/app",
            &config("1.dkr.ecr.eu-west-1.amazonaws.com", "AWS", &envelope),
        );
        assert_eq!(f.verdict, Verdict::TokenExpired, "{}", f.detail);
        assert!(!f.detail.contains(&envelope));
        let f = evaluate(
            "1.dkr.ecr.eu-west-1.amazonaws.com/app",
            &[Listed::Found(&config(
                "1.dkr.ecr.eu-west-1.amazonaws.com",
                "AWS",
                &envelope,
            ))],
            &[],
            100,
        );
        assert_eq!(f.verdict, Verdict::Ok, "{}", f.detail);
        let empty = secret(
            "e",
            dockerconfig::TYPE_DOCKERCONFIGJSON,
            ".dockerconfigjson",
            r#"{"auths":{"reg.io":{}}}"#,
        );
        assert_eq!(verdict("reg.io/a", &empty).verdict, Verdict::BadAuth);
        let no_colon = secret(
            "c",
            dockerconfig::TYPE_DOCKERCONFIGJSON,
            ".dockerconfigjson",
            &format!(
                r#"{{"auths":{{"reg.io":{{"auth":"{}"}}}}}}"#,
                encode_std(b"userpass")
            ),
        );
        let f = verdict("other.io/a", &no_colon);
        assert_eq!(
            f.verdict,
            Verdict::BadAuth,
            "a broken Secret fails every image"
        );
        let opaque = secret("o", "Opaque", ".dockercfg", r#"{"reg.io":{"auth":"dTpw"}}"#);
        let f = verdict("reg.io/a", &opaque);
        assert_eq!(f.verdict, Verdict::WrongType);
        assert!(f.detail.contains("kubelet ignores"), "{}", f.detail);
    }

    #[test]
    fn missing_and_none() {
        let f = evaluate("reg.io/a", &[Listed::Missing("gone")], &[], 0);
        assert_eq!(f.verdict, Verdict::SecretMissing);
        assert_eq!(
            evaluate("reg.io/a", &[], &[], 0).verdict,
            Verdict::NoPullSecret
        );
        let ok = config("reg.io", "u", "p");
        let f = evaluate(
            "reg.io/a",
            &[Listed::Missing("gone"), Listed::Found(&ok)],
            &[],
            0,
        );
        assert_eq!(f.verdict, Verdict::Ok, "a match wins over a missing extra");
    }

    #[test]
    fn kubelet_messages_translate() {
        let m = "Failed to pull image \"reg.io/a:1\": failed to authorize: failed to fetch anonymous token: unexpected status from GET request to https://reg.io/token: 403 Forbidden";
        assert!(translate(m).unwrap().contains("anonymous"));
        assert!(
            translate("net/http: TLS handshake timeout")
                .unwrap()
                .contains("network")
        );
        assert!(
            translate("unauthorized: authentication required")
                .unwrap()
                .contains("wants credentials")
        );
        assert!(
            translate("repository not found")
                .unwrap()
                .contains("private")
        );
        assert_eq!(translate("something else"), None);
    }
}
