//! ECR: `GetAuthorizationToken` with the AWS SDK's default credential chain (environment keys,
//! web identity / IRSA, EKS Pod Identity, IMDS, profiles).
//!
//! Web identity is handled here when `AWS_WEB_IDENTITY_TOKEN_FILE` and `AWS_ROLE_ARN` are set
//! (and no static keys are): `AssumeRoleWithWebIdentity` then goes to `AWS_ENDPOINT_URL_STS`
//! when that is set, whichever SDK version is linked. ECR calls go to `AWS_ENDPOINT_URL_ECR`
//! when set. Every HTTPS call runs on rustls with ring and trusts the platform roots plus
//! `SSL_CERT_FILE`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;
use aws_credential_types::provider::{self, ProvideCredentials, error::CredentialsError, future};
use aws_sdk_ecr::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sts::config::SharedHttpClient;
use aws_smithy_http_client::Builder as HttpBuilder;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
use base64::Engine as _;
use tokio::sync::Mutex;

use super::{Credential, MintError, Minted};

const SERVICE: &str = "ECR GetAuthorizationToken";

/// One SDK client per region, built on first use and reused: the SDK caches the credentials
/// it resolved until shortly before they expire.
#[derive(Default)]
pub(crate) struct EcrMinter {
    clients: Mutex<HashMap<String, aws_sdk_ecr::Client>>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The endpoint for `service` when the environment overrides it (`AWS_ENDPOINT_URL_<SERVICE>`,
/// then `AWS_ENDPOINT_URL`), as the AWS SDKs define it.
fn endpoint_override(service: &str) -> Option<String> {
    env(&format!("AWS_ENDPOINT_URL_{service}")).or_else(|| env("AWS_ENDPOINT_URL"))
}

fn http_client() -> Result<SharedHttpClient, MintError> {
    let mut trust = TrustStore::default();
    if let Some(pem) = super::extra_trust_pem() {
        trust = trust.with_pem_certificate(pem);
    }
    let context = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|e| MintError::Unreachable {
            service: "AWS HTTPS client".into(),
            detail: e.to_string(),
        })?;
    Ok(HttpBuilder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .tls_context(context)
        .build_https())
}

impl EcrMinter {
    async fn client(&self, region: &str) -> Result<aws_sdk_ecr::Client, MintError> {
        let mut clients = self.clients.lock().await;
        if let Some(client) = clients.get(region) {
            return Ok(client.clone());
        }
        let http = http_client()?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .http_client(http.clone());
        if let Some(web_identity) = WebIdentity::from_env(region, http) {
            loader = loader.credentials_provider(web_identity);
        }
        let shared = loader.load().await;
        let mut config = aws_sdk_ecr::config::Builder::from(&shared);
        if let Some(url) = endpoint_override("ECR") {
            config = config.endpoint_url(url);
        }
        let client = aws_sdk_ecr::Client::from_conf(config.build());
        clients.insert(region.to_string(), client.clone());
        Ok(client)
    }

    pub(crate) async fn mint(
        &self,
        region: &str,
        registry_ids: &[String],
    ) -> Result<Minted, MintError> {
        let client = self.client(region).await?;
        let mut request = client.get_authorization_token();
        // Deprecated in the model because the token works for every registry the principal
        // may read; still honoured, and the service's answer then names one proxyEndpoint per
        // account, which is exactly the docker config keys the kubelet needs.
        #[allow(deprecated)]
        for id in registry_ids {
            request = request.registry_ids(id);
        }
        let minted_at = SystemTime::now();
        let answer = request.send().await.map_err(sdk_error)?;
        let mut credentials = Vec::new();
        let mut expires_at: Option<SystemTime> = None;
        for data in answer.authorization_data() {
            let bad = |detail: &str| MintError::BadResponse {
                service: SERVICE.into(),
                detail: detail.to_string(),
            };
            let token = data
                .authorization_token()
                .ok_or_else(|| bad("authorizationToken missing"))?;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(token)
                .map_err(|_| bad("authorizationToken is not base64"))?;
            let decoded =
                String::from_utf8(decoded).map_err(|_| bad("authorizationToken is not text"))?;
            let (username, password) = decoded
                .split_once(':')
                .ok_or_else(|| bad("authorizationToken is not user:password"))?;
            let endpoint = data
                .proxy_endpoint()
                .ok_or_else(|| bad("proxyEndpoint missing"))?;
            let server = registry_host(endpoint).ok_or_else(|| bad("proxyEndpoint has no host"))?;
            let expiry = data
                .expires_at()
                .and_then(|t| u64::try_from(t.secs()).ok())
                .map(|s| UNIX_EPOCH + Duration::from_secs(s))
                .ok_or_else(|| bad("expiresAt missing"))?;
            expires_at = Some(expires_at.map_or(expiry, |e| e.min(expiry)));
            credentials.push(Credential {
                server,
                username: username.to_string(),
                password: password.to_string(),
            });
        }
        let expires_at = expires_at.ok_or_else(|| MintError::BadResponse {
            service: SERVICE.into(),
            detail: "no authorizationData".into(),
        })?;
        Ok(Minted {
            credentials,
            minted_at,
            expires_at,
        })
    }
}

/// `https://123456789012.dkr.ecr.eu-west-1.amazonaws.com` → the host (with a port if any):
/// the key the kubelet matches images against.
fn registry_host(endpoint: &str) -> Option<String> {
    let rest = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"))
        .unwrap_or(endpoint);
    let host = rest.split('/').next().unwrap_or_default();
    (!host.is_empty()).then(|| host.to_string())
}

fn sdk_error<R: std::fmt::Debug>(
    error: SdkError<aws_sdk_ecr::operation::get_authorization_token::GetAuthorizationTokenError, R>,
) -> MintError {
    // The SDK's messages name operations, endpoints and causes, never credentials.
    let detail = super::http_cut(&DisplayErrorContext(&error).to_string(), 300);
    match &error {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("unknown error");
            MintError::Refused {
                service: SERVICE.into(),
                detail: code.to_string(),
            }
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => MintError::Unreachable {
            service: SERVICE.into(),
            detail,
        },
        SdkError::ResponseError(_) => MintError::BadResponse {
            service: SERVICE.into(),
            detail,
        },
        _ if detail.contains("credentials") || detail.contains("identity") => {
            MintError::NoIdentity(detail)
        }
        _ => MintError::Refused {
            service: SERVICE.into(),
            detail,
        },
    }
}

/// `AssumeRoleWithWebIdentity` with the projected service-account token (IRSA), against
/// `AWS_ENDPOINT_URL_STS` when set.
#[derive(Debug)]
struct WebIdentity {
    sts: aws_sdk_sts::Client,
    token_file: PathBuf,
    role_arn: String,
    session_name: String,
}

impl WebIdentity {
    /// When the environment asks for web identity and gives no static keys (those come first
    /// in the SDK's chain, and stay its business).
    fn from_env(region: &str, http: SharedHttpClient) -> Option<Self> {
        if env("AWS_ACCESS_KEY_ID").is_some() {
            return None;
        }
        let token_file = PathBuf::from(env("AWS_WEB_IDENTITY_TOKEN_FILE")?);
        let role_arn = env("AWS_ROLE_ARN")?;
        let session_name = env("AWS_ROLE_SESSION_NAME").unwrap_or_else(|| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            format!("pullsecret-injector-{now}")
        });
        let mut config = aws_sdk_sts::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .http_client(http);
        if let Some(url) = endpoint_override("STS") {
            config = config.endpoint_url(url);
        }
        Some(Self {
            sts: aws_sdk_sts::Client::from_conf(config.build()),
            token_file,
            role_arn,
            session_name,
        })
    }

    async fn load(&self) -> provider::Result {
        let token = tokio::fs::read_to_string(&self.token_file)
            .await
            .map_err(|e| {
                CredentialsError::not_loaded(format!(
                    "cannot read AWS_WEB_IDENTITY_TOKEN_FILE {}: {e}",
                    self.token_file.display()
                ))
            })?;
        let answer = self
            .sts
            .assume_role_with_web_identity()
            .role_arn(&self.role_arn)
            .role_session_name(&self.session_name)
            .web_identity_token(token.trim())
            .send()
            .await
            .map_err(|e| {
                let detail = match &e {
                    SdkError::ServiceError(s) => {
                        s.err().code().unwrap_or("unknown error").to_string()
                    }
                    other => super::http_cut(&DisplayErrorContext(other).to_string(), 300),
                };
                CredentialsError::provider_error(format!(
                    "STS AssumeRoleWithWebIdentity for {}: {detail}",
                    self.role_arn
                ))
            })?;
        let creds = answer.credentials().ok_or_else(|| {
            CredentialsError::unhandled("STS AssumeRoleWithWebIdentity returned no credentials")
        })?;
        let expiry = u64::try_from(creds.expiration().secs())
            .ok()
            .map(|s| UNIX_EPOCH + Duration::from_secs(s));
        Ok(Credentials::new(
            creds.access_key_id(),
            creds.secret_access_key(),
            Some(creds.session_token().to_string()),
            expiry,
            "WebIdentityToken",
        ))
    }
}

impl ProvideCredentials for WebIdentity {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.load())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_the_proxy_endpoint_host() {
        assert_eq!(
            registry_host("https://123456789012.dkr.ecr.eu-west-1.amazonaws.com").as_deref(),
            Some("123456789012.dkr.ecr.eu-west-1.amazonaws.com")
        );
        assert_eq!(
            registry_host("https://127.0.0.1:5000/").as_deref(),
            Some("127.0.0.1:5000")
        );
        assert_eq!(registry_host("https://"), None);
    }
}
