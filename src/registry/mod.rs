//! A small Registry HTTP API v2 client that authenticates the way container runtimes do:
//! ping `/v2/`, follow the `WWW-Authenticate` challenge (Basic, or Bearer through the token
//! realm with `scope=repository:<repo>:pull`), then `HEAD` the manifest.
//!
//! Used by `secret verify` to tell apart bad credentials, missing access to a repository,
//! a missing manifest, and TLS or connection trouble. Credentials and tokens are sent, never
//! logged or returned.

use std::time::Duration;

use reqwest::{StatusCode, Url, header};
use serde::Serialize;
use thiserror::Error;

mod trust;

/// Manifest media types a runtime accepts (OCI index/manifest, Docker list/manifest).
pub(crate) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Docker Hub's API endpoint for images normalized to `docker.io`.
pub(crate) const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";

/// Where to connect and what to ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// `host[:port]` of the registry API (Docker Hub mapped to `registry-1.docker.io`).
    pub(crate) host: String,
    pub(crate) repository: String,
    /// Tag or digest; `latest` when the image names neither.
    pub(crate) reference: String,
}

impl Target {
    pub(crate) fn from_image(image: &crate::reference::ImageRef) -> Self {
        let host = if image.registry == crate::reference::DEFAULT_DOMAIN {
            DOCKER_HUB_API_HOST.to_string()
        } else {
            image.registry.clone()
        };
        let reference = image
            .digest
            .clone()
            .or_else(|| image.tag.clone())
            .unwrap_or_else(|| "latest".to_string());
        Target {
            host,
            repository: image.repository.clone(),
            reference,
        }
    }
}

/// Client settings.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientOptions {
    /// Extra PEM roots (`--ca-file`).
    pub(crate) ca_pem: Option<Vec<u8>>,
    pub(crate) insecure_skip_tls_verify: bool,
    pub(crate) plain_http: bool,
    pub(crate) timeout: Option<Duration>,
}

#[derive(Debug, Error)]
pub(crate) enum ClientError {
    #[error("the CA file holds no usable PEM certificate")]
    BadCaFile,
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// Basic credentials for the registry or its token realm.
#[derive(Clone)]
pub(crate) struct BasicAuth {
    pub(crate) username: String,
    pub(crate) password: String,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BasicAuth({}, <redacted>)", self.username)
    }
}

/// How the registry asked to be authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum AuthScheme {
    /// `/v2/` answered 200 without credentials.
    None,
    Basic,
    Bearer,
}

/// The result of one attempt, in the terms a user acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Authenticated (or no authentication needed) and the manifest exists.
    Found {
        scheme: AuthScheme,
        media_type: Option<String>,
        digest: Option<String>,
    },
    /// Authenticated, but no such repository or tag/digest.
    ManifestNotFound {
        scheme: AuthScheme,
    },
    /// The registry or its token server rejected the credentials (401).
    BadCredentials {
        scheme: AuthScheme,
        detail: String,
    },
    /// The credentials work but give no pull access to this repository.
    NoAccess {
        scheme: AuthScheme,
        detail: String,
    },
    /// No credentials were sent and the registry wants some.
    AuthRequired {
        scheme: AuthScheme,
    },
    Tls {
        /// The reason in plain words, with what to do about it.
        detail: String,
        /// Nothing the client trusts vouches for the certificate: `--ca-file` would help.
        unknown_ca: bool,
    },
    ConnectionRefused {
        detail: String,
    },
    Timeout {
        detail: String,
    },
    Other {
        detail: String,
    },
}

impl Outcome {
    /// Short stable name for `-o json`.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Outcome::Found { .. } => "authenticated",
            Outcome::ManifestNotFound { .. } => "manifest-not-found",
            Outcome::BadCredentials { .. } => "bad-credentials",
            Outcome::NoAccess { .. } => "no-access",
            Outcome::AuthRequired { .. } => "auth-required",
            Outcome::Tls { .. } => "tls-error",
            Outcome::ConnectionRefused { .. } => "connection-refused",
            Outcome::Timeout { .. } => "timeout",
            Outcome::Other { .. } => "error",
        }
    }

    /// A sentence or two in plain words.
    pub(crate) fn explain(&self, target: &Target) -> String {
        let repo = &target.repository;
        let via = |s: &AuthScheme| match s {
            AuthScheme::None => "no authentication required",
            AuthScheme::Basic => "Basic auth",
            AuthScheme::Bearer => "Bearer token from the registry's token server",
        };
        match self {
            Outcome::Found {
                scheme,
                media_type,
                digest,
            } => {
                let mut s = format!(
                    "authenticated ({}); manifest {repo}:{} found",
                    via(scheme),
                    target.reference
                );
                if let Some(m) = media_type {
                    s.push_str(&format!(", {m}"));
                }
                if let Some(d) = digest {
                    s.push_str(&format!(", {d}"));
                }
                s
            }
            Outcome::ManifestNotFound { scheme } => format!(
                "authenticated ({}), but the registry has no manifest {repo}:{} (wrong repository name, tag or digest)",
                via(scheme),
                target.reference
            ),
            Outcome::BadCredentials { detail, .. } => format!(
                "401 Unauthorized: the registry rejected the username or password/token ({detail})"
            ),
            Outcome::NoAccess { detail, .. } => format!(
                "no pull access to {repo} ({detail}): the credentials are valid but not for this repository. Usual causes: the repository name is wrong or private to another account or project, the token lacks the read/pull scope, or the robot/deploy account is not a member of this project"
            ),
            Outcome::AuthRequired { scheme } => format!(
                "the registry requires authentication ({}) and no credential was sent",
                via(scheme)
            ),
            Outcome::Tls { detail, .. } => format!("TLS error: {detail}"),
            Outcome::ConnectionRefused { detail } => {
                format!(
                    "connection refused: nothing listens at {} ({detail})",
                    target.host
                )
            }
            Outcome::Timeout { detail } => format!("timed out ({detail})"),
            Outcome::Other { detail } => detail.clone(),
        }
    }
}

/// One `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    /// Lower-cased scheme (`basic`, `bearer`).
    pub(crate) scheme: String,
    /// Parameter names lower-cased, values unquoted.
    pub(crate) params: Vec<(String, String)>,
}

impl Challenge {
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Every challenge of a response: each `WWW-Authenticate` header may carry several.
fn challenges(headers: &header::HeaderMap) -> Vec<Challenge> {
    headers
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_challenges)
        .collect()
}

/// Parses a `WWW-Authenticate` value (RFC 7235): one or more challenges, each a scheme and
/// comma-separated `name=value` parameters whose values may be quoted strings with escapes
/// and commas inside.
pub(crate) fn parse_challenges(value: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let chars: Vec<char> = value.chars().collect();
    let mut i = 0;
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~/".contains(c);
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && (chars[*i] == ' ' || chars[*i] == '\t' || chars[*i] == ',') {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= chars.len() {
            break;
        }
        let start = i;
        while i < chars.len() && is_tchar(chars[i]) {
            i += 1;
        }
        if start == i {
            i += 1; // garbage: skip one character
            continue;
        }
        let token: String = chars[start..i].iter().collect();
        // Is this `name=value` (a parameter of the current challenge) or a new scheme?
        let mut j = i;
        while j < chars.len() && (chars[j] == ' ' || chars[j] == '\t') {
            j += 1;
        }
        let is_param = j < chars.len() && chars[j] == '=' && !out.is_empty() && {
            // token68 ends in '=' padding; a parameter has a value after '='.
            let mut k = j;
            while k < chars.len() && chars[k] == '=' {
                k += 1;
            }
            k == j + 1
        };
        if !is_param {
            out.push(Challenge {
                scheme: token.to_ascii_lowercase(),
                params: Vec::new(),
            });
            continue;
        }
        i = j + 1;
        while i < chars.len() && (chars[i] == ' ' || chars[i] == '\t') {
            i += 1;
        }
        let mut val = String::new();
        if i < chars.len() && chars[i] == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    i += 1;
                }
                val.push(chars[i]);
                i += 1;
            }
            i += 1; // closing quote
        } else {
            while i < chars.len() && chars[i] != ',' && chars[i] != ' ' && chars[i] != '\t' {
                val.push(chars[i]);
                i += 1;
            }
        }
        if let Some(current) = out.last_mut() {
            current.params.push((token.to_ascii_lowercase(), val));
        }
    }
    out
}

/// A configured client.
#[derive(Debug, Clone)]
pub(crate) struct RegistryClient {
    http: reqwest::Client,
    scheme: &'static str,
}

impl RegistryClient {
    pub(crate) fn new(options: &ClientOptions) -> Result<Self, ClientError> {
        let tls =
            trust::client_config(options.ca_pem.as_deref(), options.insecure_skip_tls_verify)?;
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("pullsecret-injector/", env!("CARGO_PKG_VERSION")))
            .tls_backend_preconfigured(tls);
        if let Some(timeout) = options.timeout {
            builder = builder.timeout(timeout);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Build(e.to_string()))?;
        Ok(RegistryClient {
            http,
            scheme: if options.plain_http { "http" } else { "https" },
        })
    }

    /// Authenticates as a runtime would and checks that the manifest exists.
    pub(crate) async fn check(&self, target: &Target, auth: Option<&BasicAuth>) -> Outcome {
        let base = format!("{}://{}", self.scheme, target.host);
        let mut ping = match self.http.get(format!("{base}/v2/")).send().await {
            Ok(r) => r,
            Err(e) => return transport_outcome(&e),
        };
        let manifest_url = format!(
            "{base}/v2/{}/manifests/{}",
            target.repository, target.reference
        );
        match ping.status() {
            StatusCode::OK => {
                let resp = self.head_manifest(&manifest_url, None).await;
                return manifest_outcome(resp, AuthScheme::None, auth.is_some());
            }
            StatusCode::UNAUTHORIZED => {}
            other => {
                // Go's HTTPS servers answer plain HTTP with a 400 that says so; the first
                // chunk is enough to recognise it.
                let start = ping.chunk().await.ok().flatten().unwrap_or_default();
                let detail = if self.scheme == "http"
                    && String::from_utf8_lossy(&start).contains("HTTP request to an HTTPS server")
                {
                    format!(
                        "the registry speaks HTTPS on this port (GET /v2/ over plain HTTP answered {other}); drop --plain-http"
                    )
                } else {
                    format!("GET /v2/ answered {other}; this does not look like a registry API")
                };
                return Outcome::Other { detail };
            }
        }
        let challenges = challenges(ping.headers());
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            self.bearer_flow(bearer, target, &manifest_url, auth).await
        } else if challenges.iter().any(|c| c.scheme == "basic") {
            let Some(auth) = auth else {
                return Outcome::AuthRequired {
                    scheme: AuthScheme::Basic,
                };
            };
            let resp = self
                .head_manifest(&manifest_url, Some(Authorization::Basic(auth)))
                .await;
            let realm = challenges
                .iter()
                .find(|c| c.scheme == "basic")
                .and_then(|c| c.param("realm"));
            match manifest_outcome(resp, AuthScheme::Basic, true) {
                // The realm names which user database refused, when a host fronts several.
                Outcome::BadCredentials { scheme, detail } if realm.is_some() => {
                    Outcome::BadCredentials {
                        scheme,
                        detail: format!("{detail}, realm {:?}", realm.unwrap_or_default()),
                    }
                }
                other => other,
            }
        } else {
            Outcome::Other {
                detail: "GET /v2/ answered 401 without a Basic or Bearer challenge".to_string(),
            }
        }
    }

    async fn bearer_flow(
        &self,
        challenge: &Challenge,
        target: &Target,
        manifest_url: &str,
        auth: Option<&BasicAuth>,
    ) -> Outcome {
        let Some(realm) = challenge.param("realm") else {
            return Outcome::Other {
                detail: "Bearer challenge without a realm".to_string(),
            };
        };
        let Ok(mut url) = Url::parse(realm) else {
            return Outcome::Other {
                detail: format!("Bearer realm {realm:?} is not a URL"),
            };
        };
        {
            let mut q = url.query_pairs_mut();
            if let Some(service) = challenge.param("service") {
                q.append_pair("service", service);
            }
            q.append_pair("scope", &format!("repository:{}:pull", target.repository));
        }
        let mut req = self.http.get(url);
        if let Some(a) = auth {
            req = req.basic_auth(&a.username, Some(&a.password));
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return transport_outcome(&e),
        };
        match resp.status() {
            s if s.is_success() => {}
            StatusCode::UNAUTHORIZED => {
                return if auth.is_some() {
                    Outcome::BadCredentials {
                        scheme: AuthScheme::Bearer,
                        detail: format!("the token server {realm} answered 401"),
                    }
                } else {
                    Outcome::AuthRequired {
                        scheme: AuthScheme::Bearer,
                    }
                };
            }
            StatusCode::FORBIDDEN => {
                return Outcome::NoAccess {
                    scheme: AuthScheme::Bearer,
                    detail: "the token server answered 403".to_string(),
                };
            }
            other => {
                return Outcome::Other {
                    detail: format!("the token server answered {other}"),
                };
            }
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let token = match resp.json::<TokenResponse>().await {
            Ok(t) => t.token.or(t.access_token).filter(|t| !t.is_empty()),
            Err(_) => None,
        };
        let Some(token) = token else {
            return Outcome::Other {
                detail: "the token server's answer holds no token".to_string(),
            };
        };
        let resp = self
            .head_manifest(manifest_url, Some(Authorization::Bearer(&token)))
            .await;
        manifest_outcome(resp, AuthScheme::Bearer, auth.is_some())
    }

    async fn head_manifest(
        &self,
        url: &str,
        auth: Option<Authorization<'_>>,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let mut req = self.http.head(url).header(header::ACCEPT, MANIFEST_ACCEPT);
        match auth {
            Some(Authorization::Basic(a)) => req = req.basic_auth(&a.username, Some(&a.password)),
            Some(Authorization::Bearer(t)) => req = req.bearer_auth(t),
            None => {}
        }
        req.send().await
    }
}

enum Authorization<'a> {
    Basic(&'a BasicAuth),
    Bearer(&'a str),
}

fn manifest_outcome(
    resp: Result<reqwest::Response, reqwest::Error>,
    scheme: AuthScheme,
    sent_credentials: bool,
) -> Outcome {
    let resp = match resp {
        Ok(r) => r,
        Err(e) => return transport_outcome(&e),
    };
    let header_text = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    match resp.status() {
        s if s.is_success() => Outcome::Found {
            scheme,
            media_type: header_text("content-type"),
            digest: header_text("docker-content-digest"),
        },
        StatusCode::NOT_FOUND => Outcome::ManifestNotFound { scheme },
        StatusCode::UNAUTHORIZED => {
            let insufficient = challenges(resp.headers())
                .iter()
                .any(|c| c.param("error") == Some("insufficient_scope"));
            if insufficient {
                Outcome::NoAccess {
                    scheme,
                    detail: "the registry answered 401 insufficient_scope: the token grants no pull on this repository".to_string(),
                }
            } else if !sent_credentials {
                Outcome::AuthRequired { scheme }
            } else {
                Outcome::BadCredentials {
                    scheme,
                    detail: "the registry answered 401 to the manifest request".to_string(),
                }
            }
        }
        StatusCode::FORBIDDEN => Outcome::NoAccess {
            scheme,
            detail: "the registry answered 403 Forbidden".to_string(),
        },
        other => Outcome::Other {
            detail: format!("the manifest request answered {other}"),
        },
    }
}

/// Classifies a transport failure by walking the error chain (rustls and io errors are
/// wrapped several layers deep).
fn transport_outcome(err: &reqwest::Error) -> Outcome {
    let mut tls: Option<&rustls::Error> = None;
    let mut refused = false;
    // io::Error hides what it wraps from `source()` (it returns the wrapped error's source),
    // so descend through `get_ref()` as well; hyper-util nests io errors two deep.
    let mut stack: Vec<&(dyn std::error::Error + 'static)> = vec![err];
    let mut budget = 32;
    while let Some(e) = stack.pop() {
        budget -= 1;
        if budget == 0 {
            break;
        }
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            tls = Some(r);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                refused = true;
            }
            if let Some(inner) = io.get_ref() {
                stack.push(inner);
            }
        }
        if let Some(next) = e.source() {
            stack.push(next);
        }
    }
    let detail = chain_text(err);
    if let Some(t) = tls {
        let (detail, unknown_ca) = tls_reason(t);
        return Outcome::Tls { detail, unknown_ca };
    }
    if refused {
        return Outcome::ConnectionRefused { detail };
    }
    if err.is_timeout() {
        return Outcome::Timeout { detail };
    }
    Outcome::Other { detail }
}

/// One line on why the handshake failed, in the terms of the registry's certificate, and
/// whether `--ca-file` is the fix.
fn tls_reason(err: &rustls::Error) -> (String, bool) {
    use rustls::CertificateError as C;
    let when = |t: &rustls::pki_types::UnixTime| {
        crate::expiry::format_rfc3339(i64::try_from(t.as_secs()).unwrap_or(i64::MAX))
    };
    let rustls::Error::InvalidCertificate(cert) = err else {
        return match err {
            // A TLS client reading an HTTP answer sees a record that is not TLS.
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => (
                "the registry does not speak TLS on this port; if it serves plain HTTP, use --plain-http".to_string(),
                false,
            ),
            other => (other.to_string(), false),
        };
    };
    let webpki_error = match cert {
        C::Other(other) => other.0.downcast_ref::<webpki::Error>(),
        _ => None,
    };
    match (cert, webpki_error) {
        (C::UnknownIssuer, _) => (
            "the registry's certificate is signed by an unknown CA; pass that CA with --ca-file".to_string(),
            true,
        ),
        (_, Some(webpki::Error::CaUsedAsEndEntity)) => (
            "the registry presents a CA certificate (self-signed, CA:TRUE) that nothing trusted vouches for; pass that certificate with --ca-file".to_string(),
            true,
        ),
        (C::NotValidForNameContext { expected, presented }, _) => (
            format!(
                "the registry's certificate is not valid for {} (it names {})",
                expected.to_str(),
                if presented.is_empty() {
                    "no host".to_string()
                } else {
                    presented.join(", ")
                }
            ),
            false,
        ),
        (C::NotValidForName, _) => (
            "the registry's certificate does not name this host".to_string(),
            false,
        ),
        (C::ExpiredContext { not_after, .. }, _) => (
            format!("the registry's certificate expired at {}", when(not_after)),
            false,
        ),
        (C::Expired, _) => ("the registry's certificate has expired".to_string(), false),
        (C::NotValidYetContext { not_before, .. }, _) => (
            format!(
                "the registry's certificate is not valid before {} (check the clocks)",
                when(not_before)
            ),
            false,
        ),
        (C::NotValidYet, _) => (
            "the registry's certificate is not valid yet (check the clocks)".to_string(),
            false,
        ),
        _ => (format!("the registry's certificate was refused: {err}"), false),
    }
}

fn chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_with_quotes_and_commas() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.example.com/token"));
        assert_eq!(c[0].param("service"), Some("registry.example.com"));
        assert_eq!(c[0].param("scope"), Some("repository:a/b:pull,push"));
    }

    #[test]
    fn several_challenges_and_escapes() {
        let c = parse_challenges(
            r#"Basic realm="Registry \"x\"", Bearer realm=https://t/token, error="insufficient_scope""#,
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some(r#"Registry "x""#));
        assert_eq!(c[1].param("realm"), Some("https://t/token"));
        assert_eq!(c[1].param("error"), Some("insufficient_scope"));
    }

    #[test]
    fn docker_hub_images_go_to_registry_1() {
        let image = crate::reference::ImageRef::parse("nginx").unwrap();
        let t = Target::from_image(&image);
        assert_eq!(t.host, "registry-1.docker.io");
        assert_eq!(t.repository, "library/nginx");
        assert_eq!(t.reference, "latest");
        let image = crate::reference::ImageRef::parse("localhost:5000/a/b:1@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855").unwrap();
        let t = Target::from_image(&image);
        assert_eq!(t.host, "localhost:5000");
        assert!(t.reference.starts_with("sha256:"), "digest wins over tag");
    }

    #[test]
    fn token68_is_not_a_parameter() {
        let c = parse_challenges("Negotiate abc==, Basic realm=r");
        assert_eq!(c[0].scheme, "negotiate");
        assert!(c[0].params.is_empty());
        let basic = c.iter().find(|c| c.scheme == "basic").unwrap();
        assert_eq!(basic.param("realm"), Some("r"));
    }
}
