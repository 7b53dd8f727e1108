//! TLS trust and HTTP plumbing shared by the cloud clients.

#[cfg(any(feature = "azure", feature = "google"))]
use super::MintError;

/// Bound on one call to a cloud endpoint; a mint makes two or three.
#[cfg(any(feature = "azure", feature = "google"))]
pub(crate) const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// `SSL_CERT_FILE`'s content when it names a readable file. Read per client build, so a
/// rotated bundle is seen by the next client.
#[cfg(any(feature = "azure", feature = "google", feature = "ecr"))]
pub(crate) fn extra_trust_pem() -> Option<Vec<u8>> {
    let path = std::env::var_os("SSL_CERT_FILE").filter(|p| !p.is_empty())?;
    match std::fs::read(&path) {
        Ok(pem) => Some(pem),
        Err(error) => {
            tracing::warn!(path = %std::path::Path::new(&path).display(), %error, "SSL_CERT_FILE unreadable; using the system roots only");
            None
        }
    }
}

/// A reqwest client with the platform roots plus `SSL_CERT_FILE`.
#[cfg(any(feature = "azure", feature = "google"))]
pub(crate) fn client() -> Result<reqwest::Client, MintError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("pullsecret-injector/", env!("CARGO_PKG_VERSION")))
        .timeout(CALL_TIMEOUT);
    if let Some(pem) = extra_trust_pem() {
        match reqwest::Certificate::from_pem_bundle(&pem) {
            Ok(certs) => builder = builder.tls_certs_merge(certs),
            Err(error) => {
                tracing::warn!(%error, "SSL_CERT_FILE holds no PEM certificates; ignored")
            }
        }
    }
    builder.build().map_err(|e| MintError::Unreachable {
        service: "HTTPS client".into(),
        detail: e.to_string(),
    })
}

/// Maps a failed call to the mint error users see: the service name and HTTP status or
/// transport cause, never the body (it may echo credentials).
#[cfg(any(feature = "azure", feature = "google"))]
pub(crate) fn transport(service: &str, error: &reqwest::Error) -> MintError {
    let mut detail = if error.is_timeout() {
        "timed out".to_string()
    } else if error.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    };
    if let Some(url) = error.url() {
        detail.push_str(&format!(" ({})", url.host_str().unwrap_or_default()));
    }
    MintError::Unreachable {
        service: service.to_string(),
        detail,
    }
}

/// Reads a JSON answer, turning non-2xx into [`MintError::Refused`] with the status and, for
/// OAuth-style errors, the `error` code (never `error_description`, which may quote input).
#[cfg(any(feature = "azure", feature = "google"))]
pub(crate) async fn json<T: serde::de::DeserializeOwned>(
    service: &str,
    response: Result<reqwest::Response, reqwest::Error>,
) -> Result<T, MintError> {
    let response = response.map_err(|e| transport(service, &e))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| transport(service, &e))?;
    if !status.is_success() {
        let code = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").cloned())
            .and_then(|e| match e {
                serde_json::Value::String(s) => Some(s),
                serde_json::Value::Object(o) => o
                    .get("status")
                    .or_else(|| o.get("code"))
                    .map(|c| c.as_str().map_or_else(|| c.to_string(), str::to_string)),
                _ => None,
            });
        let mut detail = format!("HTTP {}", status.as_u16());
        if let Some(code) = code {
            detail.push_str(&format!(" ({})", cut(&code, 60)));
        }
        return Err(MintError::Refused {
            service: service.to_string(),
            detail,
        });
    }
    serde_json::from_slice(&body).map_err(|e| MintError::BadResponse {
        service: service.to_string(),
        detail: format!("not the expected JSON ({})", e.classify_name()),
    })
}

#[cfg(any(feature = "azure", feature = "google"))]
trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

#[cfg(any(feature = "azure", feature = "google"))]
impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "missing or mistyped field",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

/// At most `max` characters of `text`, for quoting what a service said.
#[cfg(any(feature = "azure", feature = "google", feature = "ecr"))]
pub(crate) fn cut(text: &str, max: usize) -> String {
    let mut out: String = text.chars().take(max).collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out
}
