//! Artifact Registry / GCR: an OAuth access token from Application Default Credentials, given
//! to the kubelet as user `oauth2accesstoken`.
//!
//! ADC in Google's documented order: the file `GOOGLE_APPLICATION_CREDENTIALS` names
//! (`service_account` key, `external_account` workload identity federation with a file- or
//! URL-sourced subject token and optional service-account impersonation, or `authorized_user`),
//! then gcloud's well-known file, then the metadata server (`GCE_METADATA_HOST` honoured; GKE
//! Workload Identity answers there). The lifetime is the token endpoint's `expires_in`.
//!
//! Why not a crate (checked against each crate's source, December 2026): the refresh schedule
//! and the Secret's expires-at need the token's expiry, `external_account` is required, and
//! every cloud call shares one trust (`SSL_CERT_FILE` added to the system roots) on ring.
//! - `google-cloud-auth` 1.19.0 (googleapis, the official one): `AccessToken` carries only
//!   `token`; the expiry lives in its `pub(crate) mod token`, and `headers()` returns none
//!   either. It also needs Rust 1.91 (we support 1.89) and builds its own reqwest clients.
//! - `gcp_auth` 0.12.7: no `external_account` at all, and the metadata server is fixed at
//!   `metadata.google.internal` (no `GCE_METADATA_HOST`).
//! - `gcloud-auth` 1.4.0 (community): has the expiry and `external_account`, but signs JWTs only
//!   through jsonwebtoken 11's aws-lc-rs or RustCrypto `rsa` backends (RUSTSEC-2023-0071, no
//!   fixed release), builds its own clients (so `SSL_CERT_FILE` replaces the system roots
//!   instead of adding to them, and every call has a fixed 3 s timeout), refuses URL-sourced
//!   subject tokens without `headers` and `format` (both optional in Google's format), puts
//!   response bodies into its error texts, and falls back to the metadata server when the file
//!   `GOOGLE_APPLICATION_CREDENTIALS` names cannot be read.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use super::http::{self, cut};
use super::{Credential, MintError, Minted, jwt};

const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const METADATA_HOST: &str = "metadata.google.internal";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// Artifact Registry takes OAuth access tokens with this user name.
const USERNAME: &str = "oauth2accesstoken";

#[derive(Default)]
pub(crate) struct GoogleMinter;

/// An access token and when it expires.
struct AccessToken {
    token: String,
    expires_at: SystemTime,
}

/// The OAuth token endpoints' answer (`expires_in` in seconds).
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: Option<u64>,
}

impl TokenAnswer {
    fn into_token(self, service: &str, now: SystemTime) -> Result<AccessToken, MintError> {
        let Some(expires_in) = self.expires_in else {
            return Err(MintError::BadResponse {
                service: service.to_string(),
                detail: "no expires_in".into(),
            });
        };
        if self.access_token.is_empty() {
            return Err(MintError::BadResponse {
                service: service.to_string(),
                detail: "empty access_token".into(),
            });
        }
        Ok(AccessToken {
            token: self.access_token,
            expires_at: now + Duration::from_secs(expires_in),
        })
    }
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum CredentialsFile {
    ServiceAccount(ServiceAccountKey),
    ExternalAccount(ExternalAccount),
    AuthorizedUser(AuthorizedUser),
}

#[derive(Deserialize)]
struct ServiceAccountKey {
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default)]
    token_uri: Option<String>,
}

#[derive(Deserialize)]
struct ExternalAccount {
    audience: String,
    subject_token_type: String,
    token_url: String,
    credential_source: CredentialSource,
    #[serde(default)]
    service_account_impersonation_url: Option<String>,
}

#[derive(Deserialize)]
struct CredentialSource {
    #[serde(default)]
    file: Option<PathBuf>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    format: Option<SourceFormat>,
}

#[derive(Deserialize)]
struct SourceFormat {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    subject_token_field_name: Option<String>,
}

#[derive(Deserialize)]
struct AuthorizedUser {
    client_id: String,
    client_secret: String,
    refresh_token: String,
    #[serde(default)]
    token_uri: Option<String>,
}

fn no_identity(detail: impl Into<String>) -> MintError {
    MintError::NoIdentity(detail.into())
}

/// The file ADC reads, if any: `GOOGLE_APPLICATION_CREDENTIALS`, else gcloud's well-known file
/// when it exists.
fn credentials_file() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").filter(|p| !p.is_empty())
    {
        return Some(PathBuf::from(path));
    }
    let config = std::env::var_os("CLOUDSDK_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/gcloud")))?;
    let well_known = config.join("application_default_credentials.json");
    well_known.is_file().then_some(well_known)
}

impl GoogleMinter {
    pub(crate) async fn mint(&self, registries: &[String]) -> Result<Minted, MintError> {
        let client = super::https_client()?;
        let minted_at = SystemTime::now();
        let token = match credentials_file() {
            Some(path) => from_file(&client, &path, minted_at).await?,
            None => from_metadata_server(&client, minted_at).await?,
        };
        Ok(Minted {
            credentials: registries
                .iter()
                .map(|registry| Credential {
                    server: registry.clone(),
                    username: USERNAME.to_string(),
                    password: token.token.clone(),
                })
                .collect(),
            minted_at,
            expires_at: token.expires_at,
        })
    }
}

async fn from_file(
    client: &reqwest::Client,
    path: &std::path::Path,
    now: SystemTime,
) -> Result<AccessToken, MintError> {
    let text = tokio::fs::read(path).await.map_err(|e| {
        no_identity(format!(
            "cannot read Google credentials {}: {e}",
            path.display()
        ))
    })?;
    let file: CredentialsFile = serde_json::from_slice(&text).map_err(|_| {
        no_identity(format!(
            "{} is not a Google credentials file of type service_account, external_account or authorized_user",
            path.display()
        ))
    })?;
    match file {
        CredentialsFile::ServiceAccount(key) => service_account(client, &key, now).await,
        CredentialsFile::ExternalAccount(account) => external_account(client, &account, now).await,
        CredentialsFile::AuthorizedUser(user) => authorized_user(client, &user, now).await,
    }
}

/// A JWT signed with the key, exchanged at the key's `token_uri` (RFC 7523).
async fn service_account(
    client: &reqwest::Client,
    key: &ServiceAccountKey,
    now: SystemTime,
) -> Result<AccessToken, MintError> {
    let token_uri = key.token_uri.as_deref().unwrap_or(DEFAULT_TOKEN_URI);
    let assertion = signed_assertion(key, token_uri, now)?;
    let service = "Google OAuth token endpoint";
    let answer: TokenAnswer = http::json(
        service,
        client
            .post(token_uri)
            .form(&[
                ("grant_type", JWT_BEARER),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await,
    )
    .await?;
    answer.into_token(service, now)
}

fn signed_assertion(
    key: &ServiceAccountKey,
    audience: &str,
    now: SystemTime,
) -> Result<String, MintError> {
    use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
    let bad_key = || {
        no_identity(format!(
            "the private key of {} is not an RSA PKCS#8 PEM key",
            key.client_email
        ))
    };
    let der = rustls_pemfile::private_key(&mut key.private_key.as_bytes())
        .ok()
        .flatten()
        .ok_or_else(bad_key)?;
    let pair = RsaKeyPair::from_pkcs8(der.secret_der()).map_err(|_| bad_key())?;
    let iat = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = &key.private_key_id {
        header["kid"] = kid.clone().into();
    }
    let claims = serde_json::json!({
        "iss": key.client_email,
        "scope": SCOPE,
        "aud": audience,
        "iat": iat,
        "exp": iat + 3600,
    });
    let signing_input = format!(
        "{}.{}",
        jwt::segment(header.to_string().as_bytes()),
        jwt::segment(claims.to_string().as_bytes())
    );
    let mut signature = vec![0; pair.public().modulus_len()];
    pair.sign(
        &RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut signature,
    )
    .map_err(|_| bad_key())?;
    Ok(format!("{signing_input}.{}", jwt::segment(&signature)))
}

/// Workload identity federation: the subject token from the configured source, exchanged at
/// Google STS, then (optionally) for a service account's token.
async fn external_account(
    client: &reqwest::Client,
    account: &ExternalAccount,
    now: SystemTime,
) -> Result<AccessToken, MintError> {
    let subject = subject_token(client, &account.credential_source).await?;
    let service = "Google STS";
    let answer: TokenAnswer = http::json(
        service,
        client
            .post(&account.token_url)
            .form(&[
                ("grant_type", TOKEN_EXCHANGE),
                ("audience", account.audience.as_str()),
                ("scope", SCOPE),
                ("requested_token_type", ACCESS_TOKEN_TYPE),
                ("subject_token", subject.as_str()),
                ("subject_token_type", account.subject_token_type.as_str()),
            ])
            .send()
            .await,
    )
    .await?;
    let federated = answer.into_token(service, now)?;
    let Some(url) = &account.service_account_impersonation_url else {
        return Ok(federated);
    };
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Impersonated {
        access_token: String,
        expire_time: String,
    }
    let service = "Google IAM Credentials generateAccessToken";
    let answer: Impersonated = http::json(
        service,
        client
            .post(url)
            .bearer_auth(&federated.token)
            .json(&serde_json::json!({"scope": [SCOPE], "lifetime": "3600s"}))
            .send()
            .await,
    )
    .await?;
    let expires_at =
        super::parse_rfc3339(&answer.expire_time).ok_or_else(|| MintError::BadResponse {
            service: service.into(),
            detail: format!(
                "expireTime {:?} is not RFC 3339",
                cut(&answer.expire_time, 40)
            ),
        })?;
    Ok(AccessToken {
        token: answer.access_token,
        expires_at,
    })
}

async fn subject_token(
    client: &reqwest::Client,
    source: &CredentialSource,
) -> Result<String, MintError> {
    let raw = if let Some(file) = &source.file {
        let bytes = tokio::fs::read(file).await.map_err(|e| {
            no_identity(format!(
                "cannot read the subject token {}: {e}",
                file.display()
            ))
        })?;
        String::from_utf8(bytes).map_err(|_| no_identity("the subject token is not text"))?
    } else if let Some(url) = &source.url {
        let mut request = client.get(url);
        for (name, value) in &source.headers {
            request = request.header(name, value);
        }
        let response = request
            .send()
            .await
            .map_err(|e| http::transport("subject token source", &e))?;
        if !response.status().is_success() {
            return Err(MintError::Refused {
                service: "subject token source".into(),
                detail: format!("HTTP {}", response.status().as_u16()),
            });
        }
        response
            .text()
            .await
            .map_err(|e| http::transport("subject token source", &e))?
    } else {
        return Err(no_identity(
            "external_account credential_source has neither file nor url (executable and AWS sources are not supported)",
        ));
    };
    match &source.format {
        Some(format) if format.kind == "json" => {
            let field = format
                .subject_token_field_name
                .as_deref()
                .unwrap_or("access_token");
            let value: serde_json::Value = serde_json::from_str(&raw)
                .map_err(|_| no_identity("the subject token source is not JSON"))?;
            value
                .get(field)
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or_else(|| no_identity(format!("the subject token JSON has no {field:?}")))
        }
        _ => Ok(raw.trim().to_string()),
    }
}

async fn authorized_user(
    client: &reqwest::Client,
    user: &AuthorizedUser,
    now: SystemTime,
) -> Result<AccessToken, MintError> {
    let service = "Google OAuth token endpoint";
    let answer: TokenAnswer = http::json(
        service,
        client
            .post(user.token_uri.as_deref().unwrap_or(DEFAULT_TOKEN_URI))
            .form(&[
                ("grant_type", "refresh_token"),
                ("client_id", user.client_id.as_str()),
                ("client_secret", user.client_secret.as_str()),
                ("refresh_token", user.refresh_token.as_str()),
            ])
            .send()
            .await,
    )
    .await?;
    answer.into_token(service, now)
}

/// The default service account's token from the metadata server (GCE, GKE Workload Identity).
async fn from_metadata_server(
    client: &reqwest::Client,
    now: SystemTime,
) -> Result<AccessToken, MintError> {
    let host = std::env::var("GCE_METADATA_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| METADATA_HOST.to_string());
    let url = format!(
        "http://{host}/computeMetadata/v1/instance/service-accounts/default/token?scopes={SCOPE}"
    );
    let service = "GCE metadata server";
    let response = client
        .get(&url)
        .header("Metadata-Flavor", "Google")
        .send()
        .await;
    if let Err(e) = &response
        && (e.is_connect() || e.is_timeout())
    {
        return Err(no_identity(format!(
            "no GOOGLE_APPLICATION_CREDENTIALS and the metadata server {host} did not answer"
        )));
    }
    let answer: TokenAnswer = http::json(service, response).await?;
    answer.into_token(service, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_files_are_told_apart_by_type() {
        let sa = r#"{"type":"service_account","client_email":"a@p.iam.gserviceaccount.com","private_key":"k","token_uri":"https://t"}"#;
        assert!(matches!(
            serde_json::from_str::<CredentialsFile>(sa),
            Ok(CredentialsFile::ServiceAccount(_))
        ));
        let ext = r#"{"type":"external_account","audience":"//iam.googleapis.com/x","subject_token_type":"urn:ietf:params:oauth:token-type:jwt","token_url":"https://sts.googleapis.com/v1/token","credential_source":{"file":"/var/run/token"}}"#;
        assert!(matches!(
            serde_json::from_str::<CredentialsFile>(ext),
            Ok(CredentialsFile::ExternalAccount(_))
        ));
        assert!(serde_json::from_str::<CredentialsFile>(r#"{"type":"other"}"#).is_err());
    }

    #[test]
    fn a_token_answer_without_lifetime_is_refused() {
        let now = UNIX_EPOCH;
        let ok = TokenAnswer {
            access_token: "ya29.x".into(),
            expires_in: Some(3599),
        }
        .into_token("t", now)
        .ok()
        .map(|t| t.expires_at);
        assert_eq!(ok, Some(UNIX_EPOCH + Duration::from_secs(3599)));
        let missing = TokenAnswer {
            access_token: "ya29.x".into(),
            expires_in: None,
        };
        assert!(missing.into_token("t", now).is_err());
    }
}
