//! Short-lived registry credentials minted with the workload's own identity: ECR
//! (`GetAuthorizationToken`), Artifact Registry / GCR (an OAuth access token) and ACR (a refresh
//! token from the registry's `/oauth2/exchange`).
//!
//! This module is the pure part and the cloud clients: what a token Secret looks like, when it
//! is due for a refresh, and how each cloud mints. Writing the Secret and the refresh loop live
//! in `k8s::tokens`; `secret create --from-*` calls the same minters offline.

#[cfg(feature = "azure")]
mod azure;
#[cfg(feature = "ecr")]
mod ecr;
#[cfg(feature = "google")]
mod google;
mod http;
#[cfg(any(feature = "azure", feature = "google"))]
mod jwt;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use thiserror::Error;

use crate::dockerconfig::{self, Format, NewEntry};
use crate::expiry;
use crate::k8s::copy::{annotation, managed_metadata};
use crate::k8s::{
    ANNOTATION_EXPIRES_AT, ANNOTATION_MINTED_AT, ANNOTATION_TOKEN_CONFIG, ANNOTATION_TOKEN_SOURCE,
    is_managed,
};
use crate::policy::TokenProvider;
use crate::state::BoxFuture;

/// One registry credential as the kubelet will get it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Credential {
    /// The docker config key (a registry host).
    pub(crate) server: String,
    pub(crate) username: String,
    pub(crate) password: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .finish()
    }
}

/// What one mint produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Minted {
    pub(crate) credentials: Vec<Credential>,
    pub(crate) minted_at: SystemTime,
    /// When the registry stops accepting the credential (as the provider says).
    pub(crate) expires_at: SystemTime,
}

/// Why a mint failed. The text names the service and the cause, never a token.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
// A build without any cloud feature mints nothing: only `NotBuilt` is ever made.
#[cfg_attr(
    not(any(feature = "ecr", feature = "google", feature = "azure")),
    allow(dead_code)
)]
pub(crate) enum MintError {
    /// No credentials were found for the workload (no IRSA / Workload Identity / key / metadata
    /// server).
    #[error("no cloud identity: {0}")]
    NoIdentity(String),
    /// The service said no: throttling, 4xx, 5xx.
    #[error("{service} refused: {detail}")]
    Refused { service: String, detail: String },
    /// The service could not be reached.
    #[error("{service} unreachable: {detail}")]
    Unreachable { service: String, detail: String },
    /// The answer was not what the service documents.
    #[error("{service} answered something unexpected: {detail}")]
    BadResponse { service: String, detail: String },
    /// This build has no support for the provider (only a build without a cloud's feature).
    #[cfg(not(all(feature = "ecr", feature = "google", feature = "azure")))]
    #[error("this build has no {0} support (cargo feature {0})")]
    NotBuilt(&'static str),
}

impl MintError {
    /// Short label for metrics.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            MintError::NoIdentity(_) => "no_identity",
            MintError::Refused { .. } => "refused",
            MintError::Unreachable { .. } => "unreachable",
            MintError::BadResponse { .. } => "bad_response",
            #[cfg(not(all(feature = "ecr", feature = "google", feature = "azure")))]
            MintError::NotBuilt(_) => "not_built",
        }
    }
}

/// Mints credentials for a token source. One instance per process: clients and the
/// identity they resolved are reused between mints.
pub(crate) trait Minter: Send + Sync {
    fn mint<'a>(&'a self, provider: &'a TokenProvider) -> BoxFuture<'a, Result<Minted, MintError>>;
}

/// The minter of this build: each cloud whose feature is on, with the identity the
/// environment gives the process.
#[derive(Default)]
pub(crate) struct CloudMinter {
    #[cfg(feature = "ecr")]
    ecr: ecr::EcrMinter,
    #[cfg(feature = "google")]
    google: google::GoogleMinter,
    #[cfg(feature = "azure")]
    azure: azure::AzureMinter,
}

impl CloudMinter {
    pub(crate) fn new() -> Self {
        Self::default()
    }
}

impl Minter for CloudMinter {
    fn mint<'a>(&'a self, provider: &'a TokenProvider) -> BoxFuture<'a, Result<Minted, MintError>> {
        Box::pin(async move {
            match provider {
                #[cfg(feature = "ecr")]
                TokenProvider::Ecr {
                    region,
                    registry_ids,
                } => self.ecr.mint(region, registry_ids).await,
                #[cfg(not(feature = "ecr"))]
                TokenProvider::Ecr { .. } => Err(MintError::NotBuilt("ecr")),
                #[cfg(feature = "google")]
                TokenProvider::Google { registries } => self.google.mint(registries).await,
                #[cfg(not(feature = "google"))]
                TokenProvider::Google { .. } => Err(MintError::NotBuilt("google")),
                #[cfg(feature = "azure")]
                TokenProvider::Azure { registry } => self.azure.mint(registry).await,
                #[cfg(not(feature = "azure"))]
                TokenProvider::Azure { .. } => Err(MintError::NotBuilt("azure")),
            }
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Time

/// RFC 3339 in UTC, seconds precision (`2026-12-01T20:30:00Z`): [`expiry::format_rfc3339`],
/// the one writer of the instants our annotations carry.
pub(crate) fn rfc3339(at: SystemTime) -> String {
    let secs = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .min(i64::MAX as u64) as i64;
    expiry::format_rfc3339(secs)
}

/// Parses what [`rfc3339`] (or another RFC 3339 writer) wrote, through [`expiry::parse_rfc3339`].
pub(crate) fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let secs = u64::try_from(expiry::parse_rfc3339(text)?).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// `exp` of a JWT (seconds since the epoch), read without verifying it: the issuer verifies
/// its own tokens; we only need to know when to refresh.
#[cfg(feature = "azure")]
pub(crate) fn jwt_expiry(token: &str) -> Option<SystemTime> {
    jwt::expiry(token)
}

// ---------------------------------------------------------------------------------------------
// The Secret

/// The token Secret for `minted`: `kubernetes.io/dockerconfigjson`, our label, annotations
/// naming the source kind, its configuration, and when it was minted and expires.
pub(crate) fn build_secret(
    name: &str,
    namespace: &str,
    provider: &TokenProvider,
    minted: &Minted,
) -> Secret {
    let entries: Vec<NewEntry> = minted
        .credentials
        .iter()
        .map(|c| NewEntry {
            server: c.server.clone(),
            username: c.username.clone(),
            password: c.password.clone(),
            email: None,
        })
        .collect();
    let config = dockerconfig::render_config(&entries, Format::DockerConfigJson);
    Secret {
        metadata: managed_metadata(name, namespace, token_annotations(provider, minted)),
        type_: Some(Format::DockerConfigJson.secret_type().to_string()),
        data: Some(BTreeMap::from([(
            Format::DockerConfigJson.data_key().to_string(),
            ByteString(config.into_bytes()),
        )])),
        immutable: None,
        string_data: None,
    }
}

fn token_annotations(provider: &TokenProvider, minted: &Minted) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            ANNOTATION_TOKEN_SOURCE.to_string(),
            provider.kind().to_string(),
        ),
        (ANNOTATION_TOKEN_CONFIG.to_string(), provider.fingerprint()),
        (ANNOTATION_MINTED_AT.to_string(), rfc3339(minted.minted_at)),
        (
            ANNOTATION_EXPIRES_AT.to_string(),
            rfc3339(minted.expires_at),
        ),
    ])
}

/// `existing` with the freshly minted content, keeping its identity (uid, resourceVersion
/// for the conditional write) and whatever labels and annotations others added.
pub(crate) fn updated_secret(
    existing: &Secret,
    provider: &TokenProvider,
    minted: &Minted,
) -> Secret {
    let fresh = build_secret(
        existing.metadata.name.as_deref().unwrap_or_default(),
        existing.metadata.namespace.as_deref().unwrap_or_default(),
        provider,
        minted,
    );
    let mut out = existing.clone();
    out.metadata.managed_fields = None;
    out.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .extend(fresh.metadata.labels.unwrap_or_default());
    out.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .extend(fresh.metadata.annotations.unwrap_or_default());
    out.type_ = fresh.type_;
    out.data = fresh.data;
    out.string_data = None;
    out
}

/// When a token Secret stops working, if it says.
pub(crate) fn expires_at(secret: &Secret) -> Option<SystemTime> {
    annotation(secret, ANNOTATION_EXPIRES_AT).and_then(parse_rfc3339)
}

/// Whether a Secret is a token Secret we minted whose credential has expired at `now`.
pub(crate) fn expired(secret: &Secret, now: SystemTime) -> bool {
    is_managed(secret)
        && annotation(secret, ANNOTATION_TOKEN_SOURCE).is_some()
        && expires_at(secret).is_some_and(|at| at <= now)
}

/// Refreshes never come sooner than this after a mint, whatever the token's lifetime.
pub(crate) const MIN_REFRESH: Duration = Duration::from_secs(2);
/// Up to this share of the lifetime is taken off the half-life, so replicas spread out.
pub(crate) const JITTER_SHARE: f64 = 0.1;

/// What the refresher should do with the Secret it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// Nothing there: create it.
    Missing,
    /// A Secret of that name we do not manage: never touched.
    Unmanaged,
    /// Ours, and fresh until `refresh_at`.
    Fresh { refresh_at: SystemTime },
    /// Ours, but due (half its lifetime passed, expired, minted for another configuration,
    /// or not telling when it was minted).
    Due,
}

/// Decides from the Secret alone, so that every replica comes to the same answer: a Secret
/// another replica refreshed a moment ago is fresh here too. `jitter` in `[0, 1)` is this
/// replica's draw, taking up to [`JITTER_SHARE`] of the lifetime off the half-life.
pub(crate) fn freshness(
    existing: Option<&Secret>,
    provider: &TokenProvider,
    now: SystemTime,
    jitter: f64,
) -> Freshness {
    let Some(secret) = existing else {
        return Freshness::Missing;
    };
    if !is_managed(secret) {
        return Freshness::Unmanaged;
    }
    if annotation(secret, ANNOTATION_TOKEN_CONFIG) != Some(provider.fingerprint().as_str())
        || secret.type_.as_deref() != Some(Format::DockerConfigJson.secret_type())
        || !secret
            .data
            .as_ref()
            .is_some_and(|d| d.contains_key(Format::DockerConfigJson.data_key()))
    {
        return Freshness::Due;
    }
    let minted = annotation(secret, ANNOTATION_MINTED_AT).and_then(parse_rfc3339);
    let (Some(minted), Some(expires)) = (minted, expires_at(secret)) else {
        return Freshness::Due;
    };
    let refresh_at = refresh_point(minted, expires, jitter);
    if now >= refresh_at {
        Freshness::Due
    } else {
        Freshness::Fresh { refresh_at }
    }
}

/// Half the lifetime, less this replica's jitter, and not sooner than [`MIN_REFRESH`] (nor
/// later than the expiry).
pub(crate) fn refresh_point(minted: SystemTime, expires: SystemTime, jitter: f64) -> SystemTime {
    let lifetime = expires.duration_since(minted).unwrap_or_default();
    let jitter = jitter.clamp(0.0, 1.0) * JITTER_SHARE;
    let wait = lifetime
        .mul_f64(0.5 - jitter)
        .max(MIN_REFRESH.min(lifetime));
    minted + wait
}

/// The HTTPS client the Google and Azure minters use, with the project's trust: the
/// platform roots plus `SSL_CERT_FILE`.
#[cfg(any(feature = "azure", feature = "google"))]
pub(crate) fn https_client() -> Result<reqwest::Client, MintError> {
    http::client()
}

#[cfg(feature = "ecr")]
pub(crate) use http::cut as http_cut;

/// `SSL_CERT_FILE`'s certificates (PEM), if it names a readable file: extra trust for every
/// cloud call.
#[cfg(feature = "ecr")]
pub(crate) fn extra_trust_pem() -> Option<Vec<u8>> {
    http::extra_trust_pem()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ecr() -> TokenProvider {
        TokenProvider::Ecr {
            region: "eu-west-1".into(),
            registry_ids: vec![],
        }
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn minted(from: u64, to: u64) -> Minted {
        Minted {
            credentials: vec![Credential {
                server: "123456789012.dkr.ecr.eu-west-1.amazonaws.com".into(),
                username: "AWS".into(),
                password: "pw".into(),
            }],
            minted_at: at(from),
            expires_at: at(to),
        }
    }

    #[test]
    fn rfc3339_round_trips() {
        let t = at(1_764_620_000);
        let text = rfc3339(t);
        assert_eq!(text, "2025-12-01T20:13:20Z");
        assert_eq!(parse_rfc3339(&text), Some(t));
        assert_eq!(parse_rfc3339("2025-12-01T21:13:20+01:00"), Some(t));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn the_secret_is_what_the_kubelet_needs() {
        let s = build_secret("ecr-pull", "creds", &ecr(), &minted(1000, 2000));
        assert_eq!(s.type_.as_deref(), Some("kubernetes.io/dockerconfigjson"));
        assert!(is_managed(&s));
        let data = &s.data.as_ref().unwrap()[".dockerconfigjson"].0;
        let config: serde_json::Value = serde_json::from_slice(data).unwrap();
        let entry = &config["auths"]["123456789012.dkr.ecr.eu-west-1.amazonaws.com"];
        assert_eq!(entry["username"], "AWS");
        assert_eq!(entry["password"], "pw");
        assert_eq!(entry["auth"], dockerconfig::encode_auth("AWS", "pw"));
        let annotations = s.metadata.annotations.clone().unwrap();
        assert_eq!(annotations[ANNOTATION_TOKEN_SOURCE], "ecr");
        assert_eq!(annotations[ANNOTATION_EXPIRES_AT], "1970-01-01T00:33:20Z");
        assert_eq!(expires_at(&s), Some(at(2000)));
        assert!(!expired(&s, at(1999)));
        assert!(expired(&s, at(2000)));
    }

    #[test]
    fn credentials_never_show_in_debug_output() {
        let text = format!("{:?}", minted(0, 1));
        assert!(!text.contains("pw"), "{text}");
    }

    #[test]
    fn refresh_at_half_life_with_jitter_and_a_small_floor() {
        assert_eq!(refresh_point(at(0), at(30), 0.0), at(15));
        // Full jitter takes 10% of the lifetime off the half-life.
        assert_eq!(refresh_point(at(0), at(100), 1.0), at(40));
        // A 12-hour ECR token: six hours, at most 72 minutes sooner.
        let r = refresh_point(at(0), at(43_200), 0.5);
        assert_eq!(r, at(21_600 - 2_160));
        // Tiny lifetimes: not sooner than two seconds, never past the expiry.
        assert_eq!(refresh_point(at(0), at(3), 0.0), at(2));
        assert_eq!(refresh_point(at(0), at(1), 0.0), at(1));
        assert_eq!(refresh_point(at(10), at(5), 0.0), at(10));
    }

    #[test]
    fn freshness_comes_from_the_secret_alone() {
        let p = ecr();
        let s = build_secret("ecr-pull", "creds", &p, &minted(1000, 1030));
        assert_eq!(freshness(None, &p, at(1000), 0.0), Freshness::Missing);
        assert_eq!(
            freshness(Some(&s), &p, at(1010), 0.0),
            Freshness::Fresh {
                refresh_at: at(1015)
            }
        );
        assert_eq!(freshness(Some(&s), &p, at(1015), 0.0), Freshness::Due);
        // Minted for another region: due at once.
        let other = TokenProvider::Ecr {
            region: "us-east-1".into(),
            registry_ids: vec![],
        };
        assert_eq!(freshness(Some(&s), &other, at(1001), 0.0), Freshness::Due);
        // A user's Secret of that name.
        let mut theirs = s.clone();
        theirs.metadata.labels = None;
        assert_eq!(
            freshness(Some(&theirs), &p, at(1001), 0.0),
            Freshness::Unmanaged
        );
        // Ours but without a readable expiry: due.
        let mut broken = s.clone();
        broken
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(ANNOTATION_EXPIRES_AT.into(), "soon".into());
        assert_eq!(freshness(Some(&broken), &p, at(1001), 0.0), Freshness::Due);
    }

    #[test]
    fn an_update_keeps_identity_and_foreign_metadata() {
        let p = ecr();
        let mut old = build_secret("ecr-pull", "creds", &p, &minted(1000, 1030));
        old.metadata.uid = Some("u-1".into());
        old.metadata.resource_version = Some("7".into());
        old.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("team".into(), "platform".into());
        let new = updated_secret(&old, &p, &minted(1015, 1045));
        assert_eq!(new.metadata.uid.as_deref(), Some("u-1"));
        assert_eq!(new.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(new.metadata.labels.as_ref().unwrap()["team"], "platform");
        assert_eq!(expires_at(&new), Some(at(1045)));
    }
}
