//! ACR: an Entra ID access token for the workload, exchanged at the registry's
//! `/oauth2/exchange` for an ACR refresh token, which the kubelet uses as the password of user
//! `00000000-0000-0000-0000-000000000000`. The lifetime is the refresh token's JWT `exp`.
//!
//! The Entra token comes from workload identity when `AZURE_FEDERATED_TOKEN_FILE` is set
//! (`AZURE_CLIENT_ID`, `AZURE_TENANT_ID`, `AZURE_AUTHORITY_HOST`, as the Azure SDKs read them),
//! else from managed identity on the instance metadata service (`AZURE_CLIENT_ID` picks a
//! user-assigned identity; `AZURE_POD_IDENTITY_AUTHORITY_HOST` overrides the endpoint).

use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::http;
use super::{Credential, MintError, Minted};

/// The resource ACR tokens are issued for.
const ACR_SCOPE: &str = "https://containerregistry.azure.net/.default";
const ACR_RESOURCE: &str = "https://containerregistry.azure.net";
const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com/";
const IMDS: &str = "http://169.254.169.254";
const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The user name ACR expects with a refresh token.
pub(crate) const ACR_USERNAME: &str = "00000000-0000-0000-0000-000000000000";

#[derive(Default)]
pub(crate) struct AzureMinter;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

#[derive(Deserialize)]
struct EntraAnswer {
    access_token: String,
}

impl AzureMinter {
    pub(crate) async fn mint(&self, registry: &str) -> Result<Minted, MintError> {
        let client = super::https_client()?;
        let minted_at = SystemTime::now();
        let tenant = env("AZURE_TENANT_ID");
        let entra = match env("AZURE_FEDERATED_TOKEN_FILE") {
            Some(file) => workload_identity(&client, &file, tenant.as_deref()).await?,
            None => managed_identity(&client).await?,
        };
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

/// Client-credentials grant with the projected service-account token as the assertion.
async fn workload_identity(
    client: &reqwest::Client,
    token_file: &str,
    tenant: Option<&str>,
) -> Result<String, MintError> {
    let client_id = env("AZURE_CLIENT_ID").ok_or_else(|| {
        MintError::NoIdentity("AZURE_FEDERATED_TOKEN_FILE is set but AZURE_CLIENT_ID is not".into())
    })?;
    let tenant = tenant.ok_or_else(|| {
        MintError::NoIdentity("AZURE_FEDERATED_TOKEN_FILE is set but AZURE_TENANT_ID is not".into())
    })?;
    let assertion = tokio::fs::read_to_string(token_file).await.map_err(|e| {
        MintError::NoIdentity(format!(
            "cannot read AZURE_FEDERATED_TOKEN_FILE {token_file}: {e}"
        ))
    })?;
    let authority = env("AZURE_AUTHORITY_HOST").unwrap_or_else(|| DEFAULT_AUTHORITY.to_string());
    let url = format!(
        "{}/{tenant}/oauth2/v2.0/token",
        authority.trim_end_matches('/')
    );
    let answer: EntraAnswer = http::json(
        "Entra ID token endpoint",
        client
            .post(&url)
            .form(&[
                ("client_id", client_id.as_str()),
                ("client_assertion", assertion.trim()),
                ("client_assertion_type", CLIENT_ASSERTION_TYPE),
                ("grant_type", "client_credentials"),
                ("scope", ACR_SCOPE),
            ])
            .send()
            .await,
    )
    .await?;
    Ok(answer.access_token)
}

async fn managed_identity(client: &reqwest::Client) -> Result<String, MintError> {
    let base = env("AZURE_POD_IDENTITY_AUTHORITY_HOST").unwrap_or_else(|| IMDS.to_string());
    let mut query = vec![
        ("api-version", "2018-02-01".to_string()),
        ("resource", ACR_RESOURCE.to_string()),
    ];
    if let Some(id) = env("AZURE_CLIENT_ID") {
        query.push(("client_id", id));
    }
    let response = client
        .get(format!(
            "{}/metadata/identity/oauth2/token",
            base.trim_end_matches('/')
        ))
        .header("Metadata", "true")
        .query(&query)
        .send()
        .await;
    if let Err(e) = &response
        && (e.is_connect() || e.is_timeout())
    {
        return Err(MintError::NoIdentity(
            "no AZURE_FEDERATED_TOKEN_FILE and the managed identity endpoint did not answer".into(),
        ));
    }
    let answer: EntraAnswer = http::json("Azure managed identity endpoint", response).await?;
    Ok(answer.access_token)
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
