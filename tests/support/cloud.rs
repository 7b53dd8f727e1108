//! Fakes of the cloud endpoints the token sources call, on 127.0.0.1, answering as the real
//! services document it:
//!
//! - AWS STS `AssumeRoleWithWebIdentity` (query protocol: form body, XML answer and errors),
//! - AWS ECR `GetAuthorizationToken` (AWS JSON 1.1, `X-Amz-Target`), which checks the SigV4
//!   signature, its scope `<date>/<region>/ecr/aws4_request` and the session token STS issued,
//! - the EKS Pod Identity agent (`GET /v1/credentials`, plain HTTP, the projected token in
//!   `Authorization`; temporary keys in JSON, accepted by the fake ECR like STS's),
//! - the EC2 instance metadata service, IMDSv2 (`PUT /latest/api/token`, then the role's
//!   credentials with `x-aws-ec2-metadata-token`),
//! - the GCE metadata server's token endpoint (plain HTTP, requires `Metadata-Flavor: Google`),
//! - Google's OAuth token endpoint (RFC 7523 JWT bearer grant; the RS256 signature is checked),
//! - Google STS `POST /v1/token` (RFC 8693 token exchange, as sts.googleapis.com answers it) and
//!   IAM Credentials `generateAccessToken` (a federated Bearer token in, a service account's
//!   access token with an RFC 3339 `expireTime` out): workload identity federation,
//! - a URL subject-token source for `external_account` files (shaped like Azure IMDS, the URL
//!   source Google's docs show: `Metadata: true` required, the token in JSON `access_token`),
//! - the Entra ID token endpoint (client credentials with a federated client assertion),
//! - App Service's managed identity endpoint (plain HTTP, requires `X-IDENTITY-HEADER`),
//! - the ACR `/oauth2/exchange` (an Entra access token in, a refresh token JWT out).
//!
//! Everything but the metadata servers is HTTPS with a certificate from a test CA; point
//! `SSL_CERT_FILE` at [`FakeCloud::ca_file`]. Knobs: the lifetime of what is issued, the
//! password it carries, and a failure mode. Real clients (boto3, google-auth, azure-identity)
//! are run against it in `tests/token_fakes.rs` so it is not shaped by our own code.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tower::ServiceExt;

use super::tls::TestCa;

pub const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/pull-ecr";
pub const WEB_IDENTITY_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.projected-service-account-token.sig";
/// The projected token (audience `pods.eks.amazonaws.com`) the Pod Identity agent accepts.
/// The instance profile's role name, as IMDS lists it.
pub const EC2_ROLE: &str = "pull-ecr-node";
/// The IMDSv2 session token the fake hands out.
const IMDS_SESSION: &str = "AQAEAFakeImdsV2SessionToken==";
pub const POD_IDENTITY_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eks-pod-identity-token.sig";
pub const AZURE_CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
pub const AZURE_TENANT_ID: &str = "99999999-8888-7777-6666-555555555555";
pub const AZURE_ASSERTION: &str = "eyJhbGciOiJSUzI1NiJ9.azure-federated-token.sig";
pub const GOOGLE_SA_EMAIL: &str = "puller@acme-prod.iam.gserviceaccount.com";
/// The workload identity pool provider an `external_account` file names as its audience.
pub const GOOGLE_WIF_AUDIENCE: &str = "//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/k8s/providers/cluster";
/// The subject token (a projected ServiceAccount token) that Google STS accepts.
pub const GOOGLE_SUBJECT_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.google-federation-subject.sig";
/// The ACR user name that goes with a refresh token.
pub const ACR_USER: &str = "00000000-0000-0000-0000-000000000000";
/// The secret App Service puts in `IDENTITY_HEADER` for its managed identity endpoint.
pub const AZURE_IDENTITY_HEADER: &str = "fake-app-service-identity-header";

/// Where an `external_account` file takes its subject token from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubjectSource {
    File,
    Url,
}

/// How the fake answers mint calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    None,
    /// ECR: `ThrottlingException` (400); the others 429.
    Throttle,
    /// 500 from every minting endpoint.
    ServerError,
}

/// Counters of the calls that were answered with success.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Calls {
    pub sts: usize,
    /// Credentials from the EKS Pod Identity agent.
    pub pod_identity: usize,
    /// Role credentials from the EC2 instance metadata service.
    pub ec2_imds: usize,
    pub ecr: usize,
    pub metadata: usize,
    pub google_token: usize,
    /// Google STS token exchanges.
    pub google_sts: usize,
    /// IAM Credentials `generateAccessToken` calls.
    pub google_iam: usize,
    /// Subject tokens served from the URL source.
    pub subject_token: usize,
    pub entra: usize,
    pub acr_exchange: usize,
    /// Tokens from the App Service managed identity endpoint.
    pub managed_identity: usize,
    /// Requests refused because of a failure mode or bad input.
    pub refused: usize,
}

struct Settings {
    lifetime: Duration,
    password: String,
    failure: Failure,
    /// What ECR names as `proxyEndpoint` (host[:port]).
    ecr_registry: String,
    calls: Calls,
    /// Issued STS session credentials: access key id -> (secret, session token).
    sessions: HashMap<String, (String, String)>,
    /// Issued Entra access tokens.
    entra_tokens: Vec<String>,
    /// What Google STS answers as `expires_in` (default: `lifetime`).
    sts_lifetime: Option<Duration>,
    /// Federated access tokens Google STS issued (the Bearer tokens IAM accepts).
    federated_tokens: Vec<String>,
    serial: u64,
    /// Last refusal, for test messages.
    last_refusal: String,
}

struct Shared {
    settings: Mutex<Settings>,
    google_public_key: Vec<u8>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Settings> {
        self.settings.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct FakeCloud {
    /// HTTPS: STS, ECR, Google OAuth, Entra and ACR exchange.
    pub https: SocketAddr,
    /// Plain HTTP: the GCE metadata server.
    pub metadata: SocketAddr,
    shared: Arc<Shared>,
    pub dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tokens")
        .join(name)
}

impl FakeCloud {
    /// Starts the fakes; what they issue lives `lifetime` and carries `password`.
    pub fn start(lifetime: Duration, password: &str) -> FakeCloud {
        let ca = TestCa::new();
        let leaf = ca.leaf();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
        std::fs::write(dir.path().join("web-identity-token"), WEB_IDENTITY_TOKEN).unwrap();
        std::fs::write(dir.path().join("azure-token"), AZURE_ASSERTION).unwrap();
        std::fs::write(
            dir.path().join("eks-pod-identity-token"),
            POD_IDENTITY_TOKEN,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("google-subject-token"),
            GOOGLE_SUBJECT_TOKEN,
        )
        .unwrap();

        let https = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        https.set_nonblocking(true).unwrap();
        let metadata = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        metadata.set_nonblocking(true).unwrap();
        let https_addr = https.local_addr().unwrap();
        let metadata_addr = metadata.local_addr().unwrap();

        let shared = Arc::new(Shared {
            settings: Mutex::new(Settings {
                lifetime,
                password: password.to_string(),
                failure: Failure::None,
                ecr_registry: "123456789012.dkr.ecr.eu-west-1.amazonaws.com".into(),
                calls: Calls::default(),
                sessions: HashMap::new(),
                entra_tokens: Vec::new(),
                sts_lifetime: None,
                federated_tokens: Vec::new(),
                serial: 0,
                last_refusal: String::new(),
            }),
            google_public_key: std::fs::read(fixture("google-sa-key.rsapub.der")).unwrap(),
        });
        std::fs::write(
            dir.path().join("google-sa.json"),
            serde_json::json!({
                "type": "service_account",
                "project_id": "acme-prod",
                "private_key_id": "0123456789abcdef",
                "private_key": std::fs::read_to_string(fixture("google-sa-key.pem")).unwrap(),
                "client_email": GOOGLE_SA_EMAIL,
                "client_id": "100000000000000000001",
                "token_uri": format!("https://127.0.0.1:{}/token", https_addr.port()),
            })
            .to_string(),
        )
        .unwrap();

        let cloud = Router::new()
            .route("/", axum::routing::post(aws))
            .route("/token", axum::routing::post(google_token))
            .route("/v1/token", axum::routing::post(google_sts))
            .route(
                "/v1/projects/-/serviceAccounts/{name}",
                axum::routing::post(google_generate_access_token),
            )
            .route("/{tenant}/oauth2/v2.0/token", axum::routing::post(entra))
            .route(
                "/{tenant}/v2.0/.well-known/openid-configuration",
                axum::routing::get(entra_discovery),
            )
            .route("/oauth2/exchange", axum::routing::post(acr_exchange))
            .with_state(shared.clone());
        let mds = Router::new()
            .route("/msi/token", axum::routing::get(app_service_identity))
            .route("/v1/credentials", axum::routing::get(pod_identity_agent))
            .route("/latest/api/token", axum::routing::put(imds_token))
            .route(
                "/latest/meta-data/iam/security-credentials/",
                axum::routing::get(imds_role_name),
            )
            .route(
                "/latest/meta-data/iam/security-credentials/{role}",
                axum::routing::get(imds_role_credentials),
            )
            .route(
                "/metadata/identity/oauth2/token",
                axum::routing::get(subject_token_source),
            )
            .fallback(metadata_server)
            .with_state(shared.clone());

        let config = server_config(&leaf.cert, &leaf.key);
        let (tx, rx) = tokio::sync::watch::channel(false);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let https = tokio::net::TcpListener::from_std(https).unwrap();
                let metadata = tokio::net::TcpListener::from_std(metadata).unwrap();
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
                let mut stop = rx.clone();
                let mds_stop = rx;
                let plain = tokio::spawn(async move {
                    let _ = axum::serve(metadata, mds)
                        .with_graceful_shutdown(async move {
                            let mut s = mds_stop;
                            let _ = s.changed().await;
                        })
                        .await;
                });
                loop {
                    tokio::select! {
                        accepted = https.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let acceptor = acceptor.clone();
                            let router = cloud.clone();
                            tokio::spawn(async move {
                                let Ok(tls) = acceptor.accept(stream).await else { return };
                                let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                                    router.clone().oneshot(req)
                                });
                                let _ = hyper_util::server::conn::auto::Builder::new(
                                    hyper_util::rt::TokioExecutor::new(),
                                )
                                .serve_connection(TokioIo::new(tls), service)
                                .await;
                            });
                        }
                        _ = stop.changed() => break,
                    }
                }
                let _ = plain.await;
            });
        });
        FakeCloud {
            https: https_addr,
            metadata: metadata_addr,
            shared,
            dir,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn https_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.https.port())
    }

    /// `host:port` of the HTTPS listener: also the ACR "registry" the exchange is at.
    pub fn https_host(&self) -> String {
        format!("127.0.0.1:{}", self.https.port())
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn web_identity_token_file(&self) -> PathBuf {
        self.dir.path().join("web-identity-token")
    }

    pub fn azure_token_file(&self) -> PathBuf {
        self.dir.path().join("azure-token")
    }

    pub fn google_key_file(&self) -> PathBuf {
        self.dir.path().join("google-sa.json")
    }

    pub fn set_failure(&self, failure: Failure) {
        self.shared.lock().failure = failure;
    }

    pub fn set_password(&self, password: &str) {
        self.shared.lock().password = password.to_string();
    }

    pub fn set_lifetime(&self, lifetime: Duration) {
        self.shared.lock().lifetime = lifetime;
    }

    /// What Google STS answers as `expires_in`, apart from what IAM Credentials issues (which
    /// keeps `lifetime`): tells the two expiries apart.
    pub fn set_sts_lifetime(&self, lifetime: Duration) {
        self.shared.lock().sts_lifetime = Some(lifetime);
    }

    /// What ECR's `proxyEndpoint` names (default `123456789012.dkr.ecr.eu-west-1.amazonaws.com`).
    pub fn set_ecr_registry(&self, host: &str) {
        self.shared.lock().ecr_registry = host.to_string();
    }

    pub fn calls(&self) -> Calls {
        self.shared.lock().calls
    }

    pub fn last_refusal(&self) -> String {
        self.shared.lock().last_refusal.clone()
    }

    /// Environment for an ECR mint through web identity: STS and ECR both at this fake.
    pub fn aws_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("AWS_ROLE_ARN".to_string(), ROLE_ARN.to_string()),
            (
                "AWS_WEB_IDENTITY_TOKEN_FILE".to_string(),
                self.web_identity_token_file().display().to_string(),
            ),
            ("AWS_ENDPOINT_URL_STS".to_string(), self.https_url()),
            ("AWS_ENDPOINT_URL_ECR".to_string(), self.https_url()),
            ("AWS_REGION".to_string(), "eu-west-1".to_string()),
            ("AWS_EC2_METADATA_DISABLED".to_string(), "true".to_string()),
        ];
        env.extend(self.common_env());
        env
    }

    /// Environment for an ECR mint through EKS Pod Identity: the agent on the plain listener
    /// (loopback HTTP, which the SDKs allow for the container provider), ECR at this fake.
    pub fn aws_pod_identity_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI".to_string(),
                format!("http://{}/v1/credentials", self.metadata),
            ),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE".to_string(),
                self.pod_identity_token_file().display().to_string(),
            ),
            ("AWS_ENDPOINT_URL_ECR".to_string(), self.https_url()),
            ("AWS_REGION".to_string(), "eu-west-1".to_string()),
            ("AWS_EC2_METADATA_DISABLED".to_string(), "true".to_string()),
        ];
        env.extend(self.common_env());
        env
    }

    /// Environment for an ECR mint with the EC2 instance profile: IMDSv2 at the plain
    /// listener (`AWS_EC2_METADATA_SERVICE_ENDPOINT`), ECR at this fake.
    pub fn aws_imds_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "AWS_EC2_METADATA_SERVICE_ENDPOINT".to_string(),
                format!("http://{}/", self.metadata),
            ),
            ("AWS_ENDPOINT_URL_ECR".to_string(), self.https_url()),
            ("AWS_REGION".to_string(), "eu-west-1".to_string()),
        ];
        env.extend(self.common_env());
        env
    }

    pub fn pod_identity_token_file(&self) -> PathBuf {
        self.dir.path().join("eks-pod-identity-token")
    }

    /// Environment for a Google mint with the service-account key.
    pub fn google_key_env(&self) -> Vec<(String, String)> {
        let mut env = vec![(
            "GOOGLE_APPLICATION_CREDENTIALS".to_string(),
            self.google_key_file().display().to_string(),
        )];
        env.extend(self.common_env());
        env
    }

    /// Writes an `external_account` (workload identity federation) credentials file: the
    /// subject token from a file or from the URL source, exchanged at this fake's STS, and with
    /// `impersonate` a service account's token from its IAM Credentials. Returns its path.
    pub fn google_external_account_file(
        &self,
        source: SubjectSource,
        impersonate: bool,
    ) -> PathBuf {
        let credential_source = match source {
            SubjectSource::File => serde_json::json!({
                "file": self.dir.path().join("google-subject-token"),
            }),
            SubjectSource::Url => serde_json::json!({
                "url": format!(
                    "http://{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=api://google-federation",
                    self.metadata
                ),
                "headers": {"Metadata": "True"},
                "format": {"type": "json", "subject_token_field_name": "access_token"},
            }),
        };
        let mut file = serde_json::json!({
            "type": "external_account",
            "audience": GOOGLE_WIF_AUDIENCE,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": format!("{}/v1/token", self.https_url()),
            "credential_source": credential_source,
        });
        if impersonate {
            file["service_account_impersonation_url"] = format!(
                "{}/v1/projects/-/serviceAccounts/{GOOGLE_SA_EMAIL}:generateAccessToken",
                self.https_url()
            )
            .into();
        }
        let path = self.dir.path().join(format!(
            "google-external-{}-{}.json",
            match source {
                SubjectSource::File => "file",
                SubjectSource::Url => "url",
            },
            if impersonate { "sa" } else { "federated" }
        ));
        std::fs::write(&path, file.to_string()).unwrap();
        path
    }

    /// Environment for a Google mint through an `external_account` file.
    pub fn google_external_env(
        &self,
        source: SubjectSource,
        impersonate: bool,
    ) -> Vec<(String, String)> {
        let mut env = vec![(
            "GOOGLE_APPLICATION_CREDENTIALS".to_string(),
            self.google_external_account_file(source, impersonate)
                .display()
                .to_string(),
        )];
        env.extend(self.common_env());
        env
    }

    /// Environment for a Google mint from the metadata server.
    pub fn google_metadata_env(&self) -> Vec<(String, String)> {
        let mut env = vec![("GCE_METADATA_HOST".to_string(), self.metadata.to_string())];
        env.extend(self.common_env());
        env
    }

    /// Environment for an Azure managed identity mint through App Service's endpoint
    /// (`IDENTITY_ENDPOINT`, `IDENTITY_HEADER`), on the plain HTTP listener as on App Service.
    pub fn azure_managed_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "IDENTITY_ENDPOINT".to_string(),
                format!("http://{}/msi/token", self.metadata),
            ),
            (
                "IDENTITY_HEADER".to_string(),
                AZURE_IDENTITY_HEADER.to_string(),
            ),
        ];
        env.extend(self.common_env());
        env
    }

    /// Environment for an Azure workload identity mint.
    pub fn azure_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("AZURE_CLIENT_ID".to_string(), AZURE_CLIENT_ID.to_string()),
            ("AZURE_TENANT_ID".to_string(), AZURE_TENANT_ID.to_string()),
            (
                "AZURE_FEDERATED_TOKEN_FILE".to_string(),
                self.azure_token_file().display().to_string(),
            ),
            (
                "AZURE_AUTHORITY_HOST".to_string(),
                format!("{}/", self.https_url()),
            ),
        ];
        env.extend(self.common_env());
        env
    }

    fn common_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "SSL_CERT_FILE".to_string(),
                self.ca_file().display().to_string(),
            ),
            // Nothing of the developer's own cloud setup may leak in.
            ("AWS_CONFIG_FILE".to_string(), "/nonexistent".to_string()),
            (
                "AWS_SHARED_CREDENTIALS_FILE".to_string(),
                "/nonexistent".to_string(),
            ),
            ("CLOUDSDK_CONFIG".to_string(), "/nonexistent".to_string()),
        ]
    }
}

/// Variables a test child process must not inherit (they would pick another identity).
pub const CLOUD_VARIABLES: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ENDPOINT_URL_STS",
    "AWS_ENDPOINT_URL_ECR",
    "AWS_EC2_METADATA_DISABLED",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GCE_METADATA_HOST",
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
];

impl Drop for FakeCloud {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn server_config(cert_pem: &str, key_pem: &str) -> rustls::ServerConfig {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    pullsecret_injector::install_crypto_provider();
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn rfc3339(secs: u64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(secs as i64)
        .unwrap()
        .to_string()
}

/// The authority a request was sent to: `Host` on HTTP/1.1, `:authority` (the URI) on h2.
fn request_host(headers: &HeaderMap, uri: &Uri) -> String {
    headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| uri.authority().map(|a| a.to_string()))
        .unwrap_or_default()
}

fn form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn refuse(shared: &Shared, status: StatusCode, why: &str, body: Response) -> Response {
    let mut settings = shared.lock();
    settings.calls.refused += 1;
    settings.last_refusal = why.to_string();
    let mut response = body;
    *response.status_mut() = status;
    response
}

fn json_response(value: serde_json::Value, content_type: &str) -> Response {
    (
        [("content-type", content_type.to_string())],
        value.to_string(),
    )
        .into_response()
}

fn oauth_error(shared: &Shared, status: StatusCode, code: &str, why: &str) -> Response {
    refuse(
        shared,
        status,
        why,
        json_response(
            serde_json::json!({"error": code, "error_description": why}),
            "application/json",
        ),
    )
}

/// Entra ID's error body: besides the OAuth `error` and `error_description`, the numeric
/// `error_codes` (the AADSTS numbers) that the Azure SDKs report, as the real endpoint sends.
fn entra_error(shared: &Shared, status: StatusCode, code: &str, why: &str) -> Response {
    let numbers: Vec<u64> = why
        .strip_prefix("AADSTS")
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .into_iter()
        .collect();
    refuse(
        shared,
        status,
        why,
        json_response(
            serde_json::json!({
                "error": code,
                "error_description": why,
                "error_codes": numbers,
                "timestamp": rfc3339(now_secs()).replace('T', " "),
                "trace_id": "00000000-0000-0000-0000-000000000001",
                "correlation_id": "00000000-0000-0000-0000-000000000002",
            }),
            "application/json; charset=utf-8",
        ),
    )
}

/// A JWT-shaped token with `exp` (unsigned: only its issuer would check the signature).
fn jwt_with_exp(exp: u64, serial: u64) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD
        .encode(serde_json::json!({"exp": exp, "iat": now_secs(), "jti": serial}).to_string());
    format!("{header}.{payload}.c2lnbmF0dXJl")
}

// ---------------------------------------------------------------------------------------------
// AWS

fn sts_error(shared: &Shared, status: StatusCode, code: &str, why: &str) -> Response {
    let body = format!(
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{why}</Message></Error><RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
    );
    refuse(
        shared,
        status,
        why,
        ([("content-type", "text/xml")], body).into_response(),
    )
}

fn ecr_error(shared: &Shared, status: StatusCode, kind: &str, why: &str) -> Response {
    refuse(
        shared,
        status,
        why,
        json_response(
            serde_json::json!({"__type": kind, "message": why}),
            "application/x-amz-json-1.1",
        ),
    )
}

async fn aws(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        Some("AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken") => {
            ecr(&shared, &method, &uri, &headers, &body)
        }
        Some(other) => ecr_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            &format!("unknown operation {other}"),
        ),
        None => sts(&shared, &headers, &body),
    }
}

fn sts(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return sts_error(
            shared,
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            "not a query-protocol request",
        );
    }
    let params = form(body);
    let get = |k: &str| params.get(k).map(String::as_str).unwrap_or_default();
    if get("Action") != "AssumeRoleWithWebIdentity" || get("Version") != "2011-06-15" {
        return sts_error(
            shared,
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            "unknown Action or Version",
        );
    }
    if headers.contains_key("authorization") {
        // AssumeRoleWithWebIdentity is called unsigned: the web identity token is the proof.
        return sts_error(
            shared,
            StatusCode::BAD_REQUEST,
            "InvalidParameterValue",
            "request is signed",
        );
    }
    if get("RoleArn") != ROLE_ARN {
        return sts_error(
            shared,
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "not authorized to assume that role",
        );
    }
    if get("WebIdentityToken") != WEB_IDENTITY_TOKEN {
        return sts_error(
            shared,
            StatusCode::BAD_REQUEST,
            "InvalidIdentityToken",
            "the web identity token is not valid",
        );
    }
    let session = get("RoleSessionName").to_string();
    if session.is_empty() || session.len() > 64 {
        return sts_error(
            shared,
            StatusCode::BAD_REQUEST,
            "ValidationError",
            "RoleSessionName must be 2-64 characters",
        );
    }
    let failure = shared.lock().failure;
    match failure {
        Failure::Throttle => {
            return sts_error(
                shared,
                StatusCode::BAD_REQUEST,
                "Throttling",
                "Rate exceeded",
            );
        }
        Failure::ServerError => {
            return sts_error(
                shared,
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalFailure",
                "internal failure",
            );
        }
        Failure::None => {}
    }
    let mut settings = shared.lock();
    settings.serial += 1;
    settings.calls.sts += 1;
    let key = format!("ASIAFAKE{:012}", settings.serial);
    let secret = format!("fake-secret-{}", settings.serial);
    let token = format!("fake-session-token-{}", settings.serial);
    settings
        .sessions
        .insert(key.clone(), (secret.clone(), token.clone()));
    let expiration = rfc3339(now_secs() + 3600);
    let body = format!(
        "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n\
  <AssumeRoleWithWebIdentityResult>\n\
    <SubjectFromWebIdentityToken>system:serviceaccount:pullsecret-injector:pullsecret-injector</SubjectFromWebIdentityToken>\n\
    <Audience>sts.amazonaws.com</Audience>\n\
    <AssumedRoleUser>\n\
      <Arn>arn:aws:sts::123456789012:assumed-role/pull-ecr/{session}</Arn>\n\
      <AssumedRoleId>AROAFAKE0000000000000:{session}</AssumedRoleId>\n\
    </AssumedRoleUser>\n\
    <Credentials>\n\
      <SessionToken>{token}</SessionToken>\n\
      <SecretAccessKey>{secret}</SecretAccessKey>\n\
      <Expiration>{expiration}</Expiration>\n\
      <AccessKeyId>{key}</AccessKeyId>\n\
    </Credentials>\n\
    <Provider>arn:aws:iam::123456789012:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/FAKE</Provider>\n\
  </AssumeRoleWithWebIdentityResult>\n\
  <ResponseMetadata>\n\
    <RequestId>11111111-2222-3333-4444-555555555555</RequestId>\n\
  </ResponseMetadata>\n\
</AssumeRoleWithWebIdentityResponse>\n"
    );
    ([("content-type", "text/xml")], body).into_response()
}

/// IMDSv2 session: `PUT /latest/api/token` with a TTL of 1-21600 seconds; the token comes back
/// with the TTL echoed in `x-aws-ec2-metadata-token-ttl-seconds`.
async fn imds_token(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let ttl = headers
        .get("x-aws-ec2-metadata-token-ttl-seconds")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|t| (1..=21_600).contains(t));
    let Some(ttl) = ttl else {
        return refuse(
            &shared,
            StatusCode::BAD_REQUEST,
            "IMDS token request without a valid TTL",
            ().into_response(),
        );
    };
    (
        [
            ("content-type", "text/plain".to_string()),
            ("x-aws-ec2-metadata-token-ttl-seconds", ttl.to_string()),
        ],
        IMDS_SESSION,
    )
        .into_response()
}

/// IMDSv2 only: a metadata read without the session token is 401, as on an instance that
/// requires tokens.
fn imds_refusal(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let token = headers
        .get("x-aws-ec2-metadata-token")
        .and_then(|v| v.to_str().ok());
    (token != Some(IMDS_SESSION)).then(|| {
        refuse(
            shared,
            StatusCode::UNAUTHORIZED,
            "IMDS read without the IMDSv2 session token",
            ().into_response(),
        )
    })
}

async fn imds_role_name(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(refused) = imds_refusal(&shared, &headers) {
        return refused;
    }
    ([("content-type", "text/plain")], EC2_ROLE).into_response()
}

/// The role's temporary keys (`Code: Success`, `Type: AWS-HMAC`), which the fake ECR accepts.
async fn imds_role_credentials(
    State(shared): State<Arc<Shared>>,
    UrlPath(role): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = imds_refusal(&shared, &headers) {
        return refused;
    }
    if role != EC2_ROLE {
        return refuse(
            &shared,
            StatusCode::NOT_FOUND,
            "IMDS: no such role",
            ().into_response(),
        );
    }
    let failure = shared.lock().failure;
    if failure != Failure::None {
        return refuse(
            &shared,
            StatusCode::INTERNAL_SERVER_ERROR,
            "IMDS failure mode",
            ().into_response(),
        );
    }
    let mut settings = shared.lock();
    settings.serial += 1;
    settings.calls.ec2_imds += 1;
    let key = format!("ASIAEC2{:013}", settings.serial);
    let secret = format!("fake-instance-secret-{}", settings.serial);
    let session = format!("fake-instance-session-{}", settings.serial);
    settings
        .sessions
        .insert(key.clone(), (secret.clone(), session.clone()));
    let now = now_secs();
    json_response(
        serde_json::json!({
            "Code": "Success",
            "LastUpdated": rfc3339(now),
            "Type": "AWS-HMAC",
            "AccessKeyId": key,
            "SecretAccessKey": secret,
            "Token": session,
            "Expiration": rfc3339(now + 6 * 3600),
        }),
        "text/plain",
    )
}

/// The EKS Pod Identity agent: `GET /v1/credentials` with the projected token as the whole
/// `Authorization` value; temporary keys as JSON (`AccessKeyId`, `SecretAccessKey`, `Token`,
/// `AccountId`, `Expiration`), which the fake ECR accepts like STS's session keys.
async fn pod_identity_agent(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let error = |status: StatusCode, why: &str| {
        refuse(
            &shared,
            status,
            why,
            (
                [("content-type", "text/plain; charset=utf-8")],
                why.to_string(),
            )
                .into_response(),
        )
    };
    if token.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "Service account token cannot be empty",
        );
    }
    if token != POD_IDENTITY_TOKEN {
        return error(
            StatusCode::FORBIDDEN,
            "the service account token is not valid",
        );
    }
    let failure = shared.lock().failure;
    if failure != Failure::None {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
    }
    let mut settings = shared.lock();
    settings.serial += 1;
    settings.calls.pod_identity += 1;
    let key = format!("ASIAPODID{:011}", settings.serial);
    let secret = format!("fake-pod-identity-secret-{}", settings.serial);
    let session = format!("fake-pod-identity-session-{}", settings.serial);
    settings
        .sessions
        .insert(key.clone(), (secret.clone(), session.clone()));
    json_response(
        serde_json::json!({
            "AccessKeyId": key,
            "SecretAccessKey": secret,
            "Token": session,
            "AccountId": "123456789012",
            "Expiration": rfc3339(now_secs() + 3600),
        }),
        "application/json",
    )
}

fn ecr(shared: &Shared, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    if !header("content-type").starts_with("application/x-amz-json-1.1") {
        return ecr_error(
            shared,
            StatusCode::BAD_REQUEST,
            "SerializationException",
            "Content-Type must be application/x-amz-json-1.1",
        );
    }
    let session = match check_sigv4(shared, method, uri, headers, body, "ecr") {
        Ok(session) => session,
        Err(why) => {
            return ecr_error(
                shared,
                StatusCode::FORBIDDEN,
                "UnrecognizedClientException",
                &why,
            );
        }
    };
    let Ok(input) = serde_json::from_slice::<serde_json::Value>(body) else {
        return ecr_error(
            shared,
            StatusCode::BAD_REQUEST,
            "SerializationException",
            "body is not JSON",
        );
    };
    let failure = shared.lock().failure;
    match failure {
        Failure::Throttle => {
            return ecr_error(
                shared,
                StatusCode::BAD_REQUEST,
                "ThrottlingException",
                "Rate exceeded",
            );
        }
        Failure::ServerError => {
            return ecr_error(
                shared,
                StatusCode::INTERNAL_SERVER_ERROR,
                "ServerException",
                "internal error",
            );
        }
        Failure::None => {}
    }
    let mut settings = shared.lock();
    settings.calls.ecr += 1;
    let _ = session;
    let expires = now_secs() + settings.lifetime.as_secs();
    let token = STANDARD.encode(format!("AWS:{}", settings.password));
    let registries: Vec<String> = match input.get("registryIds").and_then(|v| v.as_array()) {
        Some(ids) if !ids.is_empty() => ids
            .iter()
            .filter_map(|v| v.as_str())
            .map(|id| {
                let default = &settings.ecr_registry;
                match default.split_once('.') {
                    Some((_, rest)) if default.contains(".dkr.ecr.") => format!("{id}.{rest}"),
                    _ => default.clone(),
                }
            })
            .collect(),
        _ => vec![settings.ecr_registry.clone()],
    };
    let data: Vec<serde_json::Value> = registries
        .iter()
        .map(|r| {
            serde_json::json!({
                "authorizationToken": token,
                "expiresAt": expires as f64,
                "proxyEndpoint": format!("https://{r}"),
            })
        })
        .collect();
    json_response(
        serde_json::json!({"authorizationData": data}),
        "application/x-amz-json-1.1",
    )
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).unwrap();
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Verifies an `AWS4-HMAC-SHA256` Authorization header as AWS does: the access key must be
/// one STS issued, the scope `<date>/<region>/<service>/aws4_request`, the session token sent,
/// and the signature must match the canonical request. Returns the access key id.
fn check_sigv4(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    service: &str,
) -> Result<String, String> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or("missing Authorization (the request is not signed)")?;
    let rest = auth
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("not an AWS4-HMAC-SHA256 signature")?;
    let mut fields = HashMap::new();
    for part in rest.split(',') {
        if let Some((k, v)) = part.trim().split_once('=') {
            fields.insert(k.to_string(), v.to_string());
        }
    }
    let credential = fields.get("Credential").ok_or("no Credential")?;
    let signed_headers = fields.get("SignedHeaders").ok_or("no SignedHeaders")?;
    let signature = fields.get("Signature").ok_or("no Signature")?;
    let mut scope = credential.splitn(5, '/');
    let key_id = scope.next().unwrap_or_default().to_string();
    let date = scope.next().unwrap_or_default().to_string();
    let region = scope.next().unwrap_or_default().to_string();
    let scope_service = scope.next().unwrap_or_default().to_string();
    let terminator = scope.next().unwrap_or_default().to_string();
    if scope_service != service || terminator != "aws4_request" || region.is_empty() {
        return Err(format!(
            "credential scope {date}/{region}/{scope_service}/{terminator} is not <date>/<region>/{service}/aws4_request"
        ));
    }
    if region != "eu-west-1" {
        return Err(format!(
            "signed for region {region}, this endpoint is eu-west-1"
        ));
    }
    let (secret, token) = shared
        .lock()
        .sessions
        .get(&key_id)
        .cloned()
        .ok_or("the access key id was not issued by STS")?;
    let sent_token = headers
        .get("x-amz-security-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if sent_token != token {
        return Err("X-Amz-Security-Token missing or not the session's".into());
    }
    if !signed_headers
        .split(';')
        .any(|h| h == "x-amz-security-token")
    {
        return Err("X-Amz-Security-Token is not signed".into());
    }
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or("no X-Amz-Date")?;
    if !amz_date.starts_with(&date) {
        return Err("X-Amz-Date does not match the scope's date".into());
    }
    let mut canonical_headers = String::new();
    for name in signed_headers.split(';') {
        let value = if name == "host" {
            headers
                .get("host")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .or_else(|| uri.authority().map(|a| a.to_string()))
                .unwrap_or_default()
        } else {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>()
                .join(",")
        };
        canonical_headers.push_str(&format!("{name}:{value}\n"));
    }
    let mut query: Vec<(String, String)> = uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    query.sort();
    let canonical_query = query
        .iter()
        .map(|(k, v)| format!("{}={}", aws_encode(k), aws_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let payload_hash = hex(&Sha256::digest(body));
    let canonical = format!(
        "{}\n{}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{payload_hash}",
        method.as_str(),
        if uri.path().is_empty() {
            "/"
        } else {
            uri.path()
        },
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{date}/{region}/{service}/aws4_request\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), &date);
    let k_region = hmac(&k_date, &region);
    let k_service = hmac(&k_region, service);
    let k_signing = hmac(&k_service, "aws4_request");
    let expected = hex(&hmac(&k_signing, &string_to_sign));
    if &expected != signature {
        return Err("the request signature does not match".into());
    }
    Ok(key_id)
}

fn aws_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Google

async fn metadata_server(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let flavor = headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) == Some("Google");
    let with_flavor = |status: StatusCode, content_type: &str, body: String| {
        (
            status,
            [
                ("metadata-flavor", "Google".to_string()),
                ("content-type", content_type.to_string()),
            ],
            body,
        )
            .into_response()
    };
    if method != Method::GET {
        return with_flavor(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/html",
            "Method not allowed".into(),
        );
    }
    if !flavor {
        let mut settings = shared.lock();
        settings.calls.refused += 1;
        settings.last_refusal = "metadata request without Metadata-Flavor: Google".into();
        return with_flavor(
            StatusCode::FORBIDDEN,
            "text/html",
            "Missing required header \"Metadata-Flavor\": \"Google\"".into(),
        );
    }
    let path = uri.path().trim_end_matches('/');
    match path {
        "" | "/computeMetadata/v1" => with_flavor(
            StatusCode::OK,
            "application/text",
            "instance/\nproject/\n".into(),
        ),
        "/computeMetadata/v1/project/project-id" => {
            with_flavor(StatusCode::OK, "application/text", "acme-prod".into())
        }
        "/computeMetadata/v1/instance/service-accounts/default/email" => {
            with_flavor(StatusCode::OK, "application/text", GOOGLE_SA_EMAIL.into())
        }
        "/computeMetadata/v1/instance/service-accounts/default"
            if uri.query().is_some_and(|q| q.contains("recursive=true")) =>
        {
            let body = serde_json::json!({"aliases": ["default"], "email": GOOGLE_SA_EMAIL, "scopes": ["https://www.googleapis.com/auth/cloud-platform"]});
            with_flavor(StatusCode::OK, "application/json", body.to_string())
        }
        "/computeMetadata/v1/instance/service-accounts/default/token" => {
            let failure = shared.lock().failure;
            if failure != Failure::None {
                let mut settings = shared.lock();
                settings.calls.refused += 1;
                settings.last_refusal = "metadata token failure mode".into();
                return with_flavor(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/html",
                    "internal error".into(),
                );
            }
            let mut settings = shared.lock();
            settings.calls.metadata += 1;
            let body = serde_json::json!({
                "access_token": format!("ya29.{}", settings.password),
                "expires_in": settings.lifetime.as_secs(),
                "token_type": "Bearer",
            });
            with_flavor(StatusCode::OK, "application/json", body.to_string())
        }
        _ => with_flavor(StatusCode::NOT_FOUND, "text/html", "not found".into()),
    }
}

async fn google_token(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let params = form(&body);
    if params.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return oauth_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Invalid grant_type",
        );
    }
    let assertion = params.get("assertion").cloned().unwrap_or_default();
    let parts: Vec<&str> = assertion.split('.').collect();
    if parts.len() != 3 {
        return oauth_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid JWT",
        );
    }
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        shared.google_public_key.clone(),
    );
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap_or_default();
    if key
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
        .is_err()
    {
        return oauth_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid JWT Signature.",
        );
    }
    let claims: serde_json::Value = URL_SAFE_NO_PAD
        .decode(parts[1])
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let now = now_secs();
    let iat = claims["iat"].as_u64().unwrap_or(0);
    let exp = claims["exp"].as_u64().unwrap_or(0);
    if claims["iss"] != GOOGLE_SA_EMAIL
        || !claims["aud"]
            .as_str()
            .is_some_and(|a| a.ends_with("/token"))
        || claims["scope"].as_str().unwrap_or_default().is_empty()
        || iat > now + 60
        || exp <= now
        || exp > iat + 3600
    {
        return oauth_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid JWT: claims",
        );
    }
    let failure = shared.lock().failure;
    if failure != Failure::None {
        return oauth_error(
            &shared,
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "backend error",
        );
    }
    let mut settings = shared.lock();
    settings.calls.google_token += 1;
    json_response(
        serde_json::json!({
            "access_token": format!("ya29.{}", settings.password),
            "expires_in": settings.lifetime.as_secs(),
            "token_type": "Bearer",
        }),
        "application/json; charset=utf-8",
    )
}

/// Google STS `POST /v1/token`: an RFC 8693 token exchange of the workload's subject token for a
/// federated access token, answered as sts.googleapis.com does (`access_token`,
/// `issued_token_type`, `token_type`, `expires_in`; OAuth `error` bodies on refusal).
async fn google_sts(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return oauth_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Request must be form-encoded",
        );
    }
    let params = form(&body);
    let get = |k: &str| params.get(k).map(String::as_str).unwrap_or_default();
    if get("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange" {
        return oauth_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Invalid value for \"grant_type\"",
        );
    }
    if get("requested_token_type") != "urn:ietf:params:oauth:token-type:access_token" {
        return oauth_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Invalid value for \"requested_token_type\"",
        );
    }
    if get("audience") != GOOGLE_WIF_AUDIENCE {
        return oauth_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "invalid_target",
            "The target service indicated by the \"audience\" parameters is invalid",
        );
    }
    const SUBJECT_TYPES: &[&str] = &[
        "urn:ietf:params:oauth:token-type:jwt",
        "urn:ietf:params:oauth:token-type:id_token",
        "urn:ietf:params:oauth:token-type:saml2",
        "urn:ietf:params:aws:token-type:aws4_request",
    ];
    if !SUBJECT_TYPES.contains(&get("subject_token_type")) {
        return oauth_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Invalid value for \"subject_token_type\"",
        );
    }
    if get("subject_token") != GOOGLE_SUBJECT_TOKEN {
        return oauth_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "The given subject token is not valid",
        );
    }
    if get("scope").split(' ').all(str::is_empty) {
        return oauth_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "Scope is required",
        );
    }
    let failure = shared.lock().failure;
    match failure {
        Failure::None => {}
        Failure::Throttle => {
            return oauth_error(
                &shared,
                StatusCode::TOO_MANY_REQUESTS,
                "temporarily_unavailable",
                "Quota exceeded",
            );
        }
        Failure::ServerError => {
            return oauth_error(
                &shared,
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "backend error",
            );
        }
    }
    let mut settings = shared.lock();
    settings.calls.google_sts += 1;
    let token = format!("ya29.d.{}", settings.password);
    settings.federated_tokens.push(token.clone());
    let lifetime = settings.sts_lifetime.unwrap_or(settings.lifetime);
    json_response(
        serde_json::json!({
            "access_token": token,
            "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "token_type": "Bearer",
            "expires_in": lifetime.as_secs(),
        }),
        "application/json; charset=utf-8",
    )
}

/// A Google API error body (`{"error": {"code", "message", "status"}}`).
fn google_api_error(shared: &Shared, status: StatusCode, code: &str, why: &str) -> Response {
    refuse(
        shared,
        status,
        why,
        json_response(
            serde_json::json!({"error": {"code": status.as_u16(), "message": why, "status": code}}),
            "application/json; charset=UTF-8",
        ),
    )
}

/// IAM Credentials `POST /v1/projects/-/serviceAccounts/{email}:generateAccessToken`: a Bearer
/// token STS issued, a JSON body with `scope` (required) and `lifetime` (`"<n>s"`, at most
/// 3600), answered with `accessToken` and an RFC 3339 `expireTime` (whole seconds, as the real
/// service writes it and google-auth parses it).
async fn google_generate_access_token(
    State(shared): State<Arc<Shared>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(email) = name.strip_suffix(":generateAccessToken") else {
        return google_api_error(
            &shared,
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "unknown method",
        );
    };
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string();
    if !shared.lock().federated_tokens.contains(&bearer) {
        return google_api_error(
            &shared,
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
        );
    }
    if email != GOOGLE_SA_EMAIL {
        return google_api_error(
            &shared,
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).",
        );
    }
    let Ok(request) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return google_api_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Invalid JSON payload received.",
        );
    };
    let scopes_given = request["scope"].as_array().is_some_and(|s| {
        !s.is_empty() && s.iter().all(|v| v.as_str().is_some_and(|v| !v.is_empty()))
    });
    if !scopes_given {
        return google_api_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Scope required.",
        );
    }
    let requested = match request.get("lifetime") {
        None | Some(serde_json::Value::Null) => Some(3600),
        Some(v) => v
            .as_str()
            .and_then(|s| s.strip_suffix('s'))
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|n| (1..=3600).contains(n)),
    };
    let Some(requested) = requested else {
        return google_api_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "The lifetime must be a duration of at most 3600s.",
        );
    };
    let failure = shared.lock().failure;
    match failure {
        Failure::None => {}
        Failure::Throttle => {
            return google_api_error(
                &shared,
                StatusCode::TOO_MANY_REQUESTS,
                "RESOURCE_EXHAUSTED",
                "Quota exceeded.",
            );
        }
        Failure::ServerError => {
            return google_api_error(
                &shared,
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "The service is currently unavailable.",
            );
        }
    }
    let mut settings = shared.lock();
    settings.calls.google_iam += 1;
    let lifetime = requested.min(settings.lifetime.as_secs());
    json_response(
        serde_json::json!({
            "accessToken": format!("ya29.c.{}", settings.password),
            "expireTime": rfc3339(now_secs() + lifetime),
        }),
        "application/json; charset=UTF-8",
    )
}

/// The URL subject-token source of the `external_account` files: Azure IMDS's token endpoint
/// shape (`Metadata: true` required, JSON with `access_token`), the URL source Google documents.
async fn subject_token_source(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params = form(query.unwrap_or_default().as_bytes());
    let metadata = headers
        .get("metadata")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if !metadata {
        return refuse(
            &shared,
            StatusCode::BAD_REQUEST,
            "subject token request without Metadata: true",
            json_response(
                serde_json::json!({"error": "invalid_request", "error_description": "Required metadata header not specified"}),
                "application/json; charset=utf-8",
            ),
        );
    }
    if !params.contains_key("api-version") || !params.contains_key("resource") {
        return refuse(
            &shared,
            StatusCode::BAD_REQUEST,
            "subject token request without api-version or resource",
            json_response(
                serde_json::json!({"error": "invalid_request", "error_description": "Required query variable 'api-version' or 'resource' is missing"}),
                "application/json; charset=utf-8",
            ),
        );
    }
    let mut settings = shared.lock();
    settings.calls.subject_token += 1;
    let exp = now_secs() + 3600;
    json_response(
        serde_json::json!({
            "access_token": GOOGLE_SUBJECT_TOKEN,
            "expires_in": "3600",
            "expires_on": exp.to_string(),
            "resource": params.get("resource"),
            "token_type": "Bearer",
        }),
        "application/json; charset=utf-8",
    )
}

// ---------------------------------------------------------------------------------------------
// Azure

async fn entra(
    State(shared): State<Arc<Shared>>,
    UrlPath(tenant): UrlPath<String>,
    body: Bytes,
) -> Response {
    let params = form(&body);
    let get = |k: &str| params.get(k).map(String::as_str).unwrap_or_default();
    if tenant != AZURE_TENANT_ID {
        return entra_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "invalid_tenant",
            "AADSTS90002: Tenant not found.",
        );
    }
    if get("grant_type") != "client_credentials" {
        return entra_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "AADSTS70003",
        );
    }
    if get("client_id") != AZURE_CLIENT_ID {
        return entra_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "AADSTS700016: Application not found.",
        );
    }
    if get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        || get("client_assertion") != AZURE_ASSERTION
    {
        return entra_error(
            &shared,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "AADSTS700211: No matching federated identity record found.",
        );
    }
    if get("scope") != "https://containerregistry.azure.net/.default" {
        return entra_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "AADSTS70011: scope is not valid.",
        );
    }
    let failure = shared.lock().failure;
    if failure != Failure::None {
        return entra_error(
            &shared,
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "AADSTS90033",
        );
    }
    let mut settings = shared.lock();
    settings.serial += 1;
    settings.calls.entra += 1;
    let token = jwt_with_exp(now_secs() + 3600, settings.serial);
    settings.entra_tokens.push(token.clone());
    json_response(
        serde_json::json!({
            "token_type": "Bearer",
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": token,
        }),
        "application/json; charset=utf-8",
    )
}

/// OpenID discovery for the tenant, which MSAL-based clients read before asking for a token.
async fn entra_discovery(
    headers: HeaderMap,
    uri: Uri,
    UrlPath(tenant): UrlPath<String>,
) -> Response {
    let host = request_host(&headers, &uri);
    let base = format!("https://{host}/{tenant}");
    json_response(
        serde_json::json!({
            "token_endpoint": format!("{base}/oauth2/v2.0/token"),
            "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
            "device_authorization_endpoint": format!("{base}/oauth2/v2.0/devicecode"),
            "issuer": format!("https://{host}/{tenant}/v2.0"),
            "jwks_uri": format!("https://{host}/{tenant}/discovery/v2.0/keys"),
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "tenant_region_scope": "EU",
        }),
        "application/json; charset=utf-8",
    )
}

/// App Service's managed identity endpoint (REST protocol 2019-08-01): `GET` with
/// `api-version`, `resource` and optionally `client_id`, the `X-IDENTITY-HEADER` secret; the
/// answer's `expires_on` is a string of Unix seconds.
async fn app_service_identity(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params = form(query.unwrap_or_default().as_bytes());
    let get = |k: &str| params.get(k).map(String::as_str).unwrap_or_default();
    let error = |status: StatusCode, why: &str| {
        refuse(
            &shared,
            status,
            why,
            json_response(
                serde_json::json!({"statusCode": status.as_u16(), "message": why}),
                "application/json; charset=utf-8",
            ),
        )
    };
    if headers
        .get("x-identity-header")
        .and_then(|v| v.to_str().ok())
        != Some(AZURE_IDENTITY_HEADER)
    {
        return error(
            StatusCode::UNAUTHORIZED,
            "X-IDENTITY-HEADER missing or wrong",
        );
    }
    if get("api-version") != "2019-08-01" {
        return error(StatusCode::BAD_REQUEST, "unsupported api-version");
    }
    if get("resource") != "https://containerregistry.azure.net" {
        return error(StatusCode::BAD_REQUEST, "unexpected resource");
    }
    if params
        .get("client_id")
        .is_some_and(|id| id != AZURE_CLIENT_ID)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "the requested identity is not assigned",
        );
    }
    if shared.lock().failure != Failure::None {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
    }
    let mut settings = shared.lock();
    settings.serial += 1;
    settings.calls.managed_identity += 1;
    let exp = now_secs() + 3600;
    let token = jwt_with_exp(exp, settings.serial);
    settings.entra_tokens.push(token.clone());
    json_response(
        serde_json::json!({
            "access_token": token,
            "expires_on": exp.to_string(),
            "resource": "https://containerregistry.azure.net",
            "token_type": "Bearer",
            "client_id": AZURE_CLIENT_ID,
        }),
        "application/json; charset=utf-8",
    )
}

async fn acr_exchange(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(_query): RawQuery,
    body: Bytes,
) -> Response {
    let params = form(&body);
    let get = |k: &str| params.get(k).map(String::as_str).unwrap_or_default();
    let host = request_host(&headers, &uri);
    if get("grant_type") != "access_token" {
        return oauth_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be access_token",
        );
    }
    if get("service") != host {
        return oauth_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "service is not this registry",
        );
    }
    let known = shared
        .lock()
        .entra_tokens
        .iter()
        .any(|t| t == get("access_token"));
    if !known {
        return oauth_error(
            &shared,
            StatusCode::UNAUTHORIZED,
            "invalid_grant",
            "the access token is not valid",
        );
    }
    let failure = shared.lock().failure;
    if failure != Failure::None {
        return oauth_error(
            &shared,
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal error",
        );
    }
    let mut settings = shared.lock();
    settings.serial += 1;
    settings.calls.acr_exchange += 1;
    let exp = now_secs() + settings.lifetime.as_secs();
    json_response(
        serde_json::json!({"refresh_token": jwt_with_exp(exp, settings.serial)}),
        "application/json; charset=utf-8",
    )
}
