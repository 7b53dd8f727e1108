//! ACR: an Entra ID access token for the workload, exchanged at the registry's
//! `/oauth2/exchange` for an ACR refresh token, which the kubelet uses as the password of user
//! `00000000-0000-0000-0000-000000000000`. The lifetime is the refresh token's JWT `exp`.
//!
//! The Entra token comes from the Azure SDK (`azure_identity`): its `WorkloadIdentityCredential`
//! when `AZURE_FEDERATED_TOKEN_FILE` is set (`AZURE_CLIENT_ID`, `AZURE_TENANT_ID`,
//! `AZURE_AUTHORITY_HOST`, read by the SDK itself), else its `ManagedIdentityCredential`
//! (`AZURE_CLIENT_ID` picks a user-assigned identity; IMDS, or App Service's
//! `IDENTITY_ENDPOINT`). The SDK sends through our reqwest client, so it trusts what every
//! other cloud call trusts (`SSL_CERT_FILE` added to the system roots) and brings no TLS stack
//! of its own. The exchange has no SDK: it is the one small call below.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::http::{ClientOptions, RetryOptions, Transport};
use azure_identity::{
    ClientAssertionCredentialOptions, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId, WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use serde::Deserialize;

use super::http;
use super::{Credential, MintError, Minted};

/// The resource ACR tokens are issued for.
const ACR_SCOPE: &str = "https://containerregistry.azure.net/.default";
/// The user name ACR expects with a refresh token.
pub(crate) const ACR_USERNAME: &str = "00000000-0000-0000-0000-000000000000";

#[derive(Default)]
pub(crate) struct AzureMinter;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl AzureMinter {
    pub(crate) async fn mint(&self, registry: &str) -> Result<Minted, MintError> {
        let client = super::https_client()?;
        let minted_at = SystemTime::now();
        let tenant = env("AZURE_TENANT_ID");
        let entra = entra_token(&client).await?;
        let refresh = exchange(&client, registry, tenant.as_deref(), &entra).await?;
        let expires_at = super::jwt_expiry(&refresh).ok_or_else(|| MintError::BadResponse {
            service: format!("ACR {registry} /oauth2/exchange"),
            detail: "refresh_token is not a JWT with exp".into(),
        })?;
        Ok(Minted {
            credentials: vec![Credential {
                server: registry.to_string(),
                username: ACR_USERNAME.to_string(),
                password: refresh,
            }],
            minted_at,
            expires_at: expires_at.max(minted_at + Duration::from_secs(1)),
        })
    }
}

/// How the SDK talks: through `client`, and without retries of its own, so that a failed
/// mint is reported at once and retried with the refresher's backoff (one retry policy).
fn client_options(client: &reqwest::Client) -> ClientOptions {
    ClientOptions {
        transport: Some(Transport::new(Arc::new(client.clone()))),
        retry: RetryOptions::none(),
        ..ClientOptions::default()
    }
}

/// Which of the SDK's credentials the environment asks for. Built per mint, as the HTTPS
/// client is, so a rotated `SSL_CERT_FILE` or projected token is seen by the next mint.
enum Identity {
    Workload,
    Managed,
}

impl Identity {
    fn service(&self) -> &'static str {
        match self {
            Identity::Workload => "Entra ID workload identity",
            Identity::Managed => "Azure managed identity",
        }
    }
}

async fn entra_token(client: &reqwest::Client) -> Result<String, MintError> {
    let (identity, credential): (Identity, Arc<dyn TokenCredential>) =
        if env("AZURE_FEDERATED_TOKEN_FILE").is_some() {
            // Said here rather than in the SDK's words, which name no variable.
            for name in ["AZURE_CLIENT_ID", "AZURE_TENANT_ID"] {
                if env(name).is_none() {
                    return Err(MintError::NoIdentity(format!(
                        "AZURE_FEDERATED_TOKEN_FILE is set but {name} is not"
                    )));
                }
            }
            let options = WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions {
                    client_options: client_options(client),
                },
                ..WorkloadIdentityCredentialOptions::default()
            };
            let credential = WorkloadIdentityCredential::new(Some(options))
                .map_err(|e| setup_error(Identity::Workload, &e))?;
            (Identity::Workload, credential)
        } else {
            let options = ManagedIdentityCredentialOptions {
                user_assigned_id: env("AZURE_CLIENT_ID").map(UserAssignedId::ClientId),
                client_options: client_options(client),
            };
            let credential = ManagedIdentityCredential::new(Some(options))
                .map_err(|e| setup_error(Identity::Managed, &e))?;
            (Identity::Managed, credential)
        };
    let token = credential
        .get_token(&[ACR_SCOPE], None)
        .await
        .map_err(|e| token_error(&identity, &e))?;
    Ok(token.token.secret().to_string())
}

/// The credential could not be built from the environment (a token file that cannot be read,
/// an invalid tenant id, an authority host that is not HTTPS). The SDK's messages name the
/// file or setting, never a token.
fn setup_error(identity: Identity, error: &azure_core::Error) -> MintError {
    MintError::NoIdentity(format!(
        "{}: {}",
        identity.service(),
        http::cut(&error.to_string(), 200)
    ))
}

/// The innermost SDK error of a failed `get_token` (the SDK wraps the cause in credential
/// errors), mapped to what users see: the status and Entra's numeric error codes, or the
/// transport cause, never a message body (Entra's `error_description` may quote input).
fn token_error(identity: &Identity, error: &azure_core::Error) -> MintError {
    let service = identity.service();
    let mut innermost = error;
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(sdk) = cause.downcast_ref::<azure_core::Error>() {
            innermost = sdk;
        }
        if let Some(transport) = cause.downcast_ref::<reqwest::Error>() {
            if matches!(identity, Identity::Managed)
                && (transport.is_connect() || transport.is_timeout())
            {
                return MintError::NoIdentity(
                    "no AZURE_FEDERATED_TOKEN_FILE and the managed identity endpoint did not answer"
                        .into(),
                );
            }
            return http::transport(service, transport);
        }
        source = cause.source();
    }
    match innermost.kind() {
        ErrorKind::HttpResponse {
            status, error_code, ..
        } => {
            let mut detail = format!("HTTP {}", u16::from(*status));
            if let Some(code) = error_code {
                detail.push_str(&format!(" ({})", http::cut(code, 60)));
            }
            MintError::Refused {
                service: service.into(),
                detail,
            }
        }
        ErrorKind::Connection | ErrorKind::Io => MintError::Unreachable {
            service: service.into(),
            detail: "request failed".into(),
        },
        ErrorKind::DataConversion => MintError::BadResponse {
            service: service.into(),
            detail: "not the expected JSON".into(),
        },
        // The SDK's own words (a token file it cannot read, a missing setting): crate-authored
        // text, as the HTTP cases above are the only ones carrying a service's body.
        _ => MintError::NoIdentity(format!(
            "{service}: {}",
            http::cut(&innermost.to_string(), 200)
        )),
    }
}

/// The registry's token exchange: an Entra access token in, an ACR refresh token out.
async fn exchange(
    client: &reqwest::Client,
    registry: &str,
    tenant: Option<&str>,
    entra: &str,
) -> Result<String, MintError> {
    #[derive(Deserialize)]
    struct Exchanged {
        refresh_token: String,
    }
    let mut form = vec![
        ("grant_type", "access_token"),
        ("service", registry),
        ("access_token", entra),
    ];
    if let Some(tenant) = tenant {
        form.push(("tenant", tenant));
    }
    let service = format!("ACR {registry} /oauth2/exchange");
    let answer: Exchanged = http::json(
        &service,
        client
            .post(format!("https://{registry}/oauth2/exchange"))
            .form(&form)
            .send()
            .await,
    )
    .await?;
    Ok(answer.refresh_token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::http::StatusCode;

    /// As the SDK reports a refusal: Entra's answer as an `HttpResponse` error (its message
    /// is `error_description`), wrapped in a credential error whose message repeats it.
    fn sdk_refusal(description: &str) -> azure_core::Error {
        let inner = azure_core::Error::with_message(
            ErrorKind::HttpResponse {
                status: StatusCode::Unauthorized,
                error_code: Some("700211".into()),
                raw_response: None,
            },
            description.to_string(),
        );
        let message = format!("WorkloadIdentityCredential authentication failed. {inner}");
        azure_core::Error::with_error(ErrorKind::Credential, inner, message)
    }

    #[test]
    fn a_refusal_names_status_and_code_but_not_the_description() {
        let error = token_error(
            &Identity::Workload,
            &sdk_refusal("AADSTS700211: assertion eyJ-secret-looking was not accepted"),
        );
        assert_eq!(
            error,
            MintError::Refused {
                service: "Entra ID workload identity".into(),
                detail: "HTTP 401 (700211)".into(),
            }
        );
        assert!(!error.to_string().contains("eyJ"), "{error}");
    }

    #[test]
    fn the_sdks_own_setup_words_are_kept() {
        let error = token_error(
            &Identity::Managed,
            &azure_core::Error::with_message(ErrorKind::Credential, "no scopes specified"),
        );
        assert_eq!(
            error,
            MintError::NoIdentity("Azure managed identity: no scopes specified".into())
        );
    }
}
