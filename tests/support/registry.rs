//! A real CNCF distribution registry (`/usr/bin/docker-registry`, Debian package
//! `docker-registry`) on 127.0.0.1 for tests, with htpasswd or token auth, optional TLS, a
//! small token server that signs the JWTs the registry verifies, and `skopeo` to push a
//! minimal OCI image. `scripts/setup-apt.sh` installs the tools; tests that need them fail
//! with a message naming that script when they are missing.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

/// Path of a required tool, or a panic that says how to install it.
pub fn require_tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "`{name}` is not installed; these tests need the Debian packages docker-registry, \
             skopeo and apache2-utils: run `scripts/setup-apt.sh` (as root)"
        )
    })
}

/// The registry listens on port 0 and logs `listening on 127.0.0.1:PORT`; read the port
/// from its log (no race over a port picked beforehand). Polls with a bounded deadline.
fn wait_listening(child: &mut Child, log: &Path) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let addr = text.lines().find_map(|l| {
            let rest = l.split("listening on ").nth(1)?;
            rest.split(|c: char| c == '"' || c == ',' || c.is_whitespace())
                .next()?
                .parse::<SocketAddr>()
                .ok()
        });
        if let Some(addr) = addr
            && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        {
            return addr;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("docker-registry exited with {status}:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!(
        "docker-registry did not start listening within 20s:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// How the registry authenticates.
pub enum Auth<'a> {
    /// htpasswd (bcrypt) users: Basic challenge.
    Htpasswd(&'a [(&'a str, &'a str)]),
    /// Bearer tokens from `server`.
    Token(&'a TokenServer),
}

/// A running registry; killed on drop.
pub struct Registry {
    pub addr: SocketAddr,
    child: Child,
    pub dir: tempfile::TempDir,
}

impl Registry {
    /// `host:port` as images name it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn start(auth: Auth<'_>, tls: Option<&TlsFiles>) -> Registry {
        let binary = require_tool("docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let auth_yaml = match auth {
            Auth::Htpasswd(users) => {
                let htpasswd = require_tool("htpasswd");
                let mut lines = String::new();
                for (user, pass) in users {
                    let out = Command::new(&htpasswd)
                        .args(["-Bbn", user, pass])
                        .output()
                        .unwrap();
                    assert!(out.status.success(), "htpasswd failed");
                    lines.push_str(String::from_utf8(out.stdout).unwrap().trim());
                    lines.push('\n');
                }
                let path = dir.path().join("htpasswd");
                std::fs::write(&path, lines).unwrap();
                format!(
                    "  htpasswd:\n    realm: test-registry\n    path: {}\n",
                    path.display()
                )
            }
            Auth::Token(server) => {
                let bundle = dir.path().join("token-root.pem");
                std::fs::write(&bundle, &server.cert_pem).unwrap();
                format!(
                    "  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                    server.realm(),
                    server.service,
                    server.issuer,
                    bundle.display()
                )
            }
        };
        let tls_yaml = match tls {
            Some(t) => format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                t.cert.display(),
                t.key.display()
            ),
            None => String::new(),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:0\n  secret: test-secret\n{tls_yaml}auth:\n{auth_yaml}",
            dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = dir.path().join("registry.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let mut child = Command::new(binary)
            .arg("serve")
            .arg(&config_path)
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("start docker-registry");
        let addr = wait_listening(&mut child, &log);
        Registry { addr, child, dir }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// PEM files for a TLS listener, plus the CA that signed them.
pub struct TlsFiles {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A CA and a serving certificate for 127.0.0.1 / localhost.
pub fn tls_files() -> TlsFiles {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test registry CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let files = TlsFiles {
        ca: dir.path().join("ca.crt"),
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
        dir,
    };
    std::fs::write(&files.ca, ca_cert.pem()).unwrap();
    std::fs::write(&files.cert, cert.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    files
}

/// What `openssl req -x509 -subj /CN=... -addext subjectAltName=...` makes: one self-signed
/// certificate carrying `CA:TRUE`, served by the registry and given to clients as its own
/// CA (`ca` and `cert` are the same file). `expired` puts its validity in the past.
pub fn self_signed_ca_tls(names: &[&str], expired: bool) -> TlsFiles {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, names[0]);
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let cert = params.self_signed(&key).unwrap();
    let files = TlsFiles {
        ca: dir.path().join("tls.crt"),
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
        dir,
    };
    std::fs::write(&files.cert, cert.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    files
}

// ---------------------------------------------------------------------------------------
// Pushing an image

/// Writes a minimal OCI image layout (one config blob, one uncompressed layer) tagged `tag`.
pub fn write_oci_layout(dir: &Path, tag: &str, content: &[u8]) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let hex = format!("{:x}", Sha256::digest(bytes));
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let layer = tar_with_one_file("hello.txt", content);
    let (layer_digest, layer_size) = put(&layer);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]}
    })
    .to_string();
    let (config_digest, config_size) = put(config.as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer_size}]
    })
    .to_string();
    let (manifest_digest, manifest_size) = put(manifest.as_bytes());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": manifest_digest, "size": manifest_size,
                       "annotations": {"org.opencontainers.image.ref.name": tag}}]
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    manifest_digest
}

/// A ustar archive holding one regular file.
fn tar_with_one_file(name: &str, content: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    header[100..108].copy_from_slice(b"0000644\0");
    header[108..116].copy_from_slice(b"0000000\0");
    header[116..124].copy_from_slice(b"0000000\0");
    header[124..136].copy_from_slice(format!("{:011o}\0", content.len()).as_bytes());
    header[136..148].copy_from_slice(b"00000000000\0");
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = header.to_vec();
    out.extend_from_slice(content);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// Pushes a fresh image to `reference` (`host:port/repo:tag`) with `skopeo copy`.
pub fn push_image(reference: &str, creds: (&str, &str)) -> String {
    let skopeo = require_tool("skopeo");
    let dir = tempfile::tempdir().unwrap();
    let tag = reference.rsplit(':').next().unwrap();
    let digest = write_oci_layout(dir.path(), tag, reference.as_bytes());
    let out = Command::new(skopeo)
        .args([
            "--insecure-policy",
            "copy",
            "--preserve-digests",
            "--dest-tls-verify=false",
            "--dest-creds",
        ])
        .arg(format!("{}:{}", creds.0, creds.1))
        .arg(format!("oci:{}:{tag}", dir.path().display()))
        .arg(format!("docker://{reference}"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo copy to {reference} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    digest
}

// ---------------------------------------------------------------------------------------
// Token server

/// What the token server grants one user.
#[derive(Clone, Debug)]
pub enum Grant {
    /// These actions on these repositories; anything else requested is left out of the token.
    Repos(Vec<(String, Vec<String>)>),
    /// Every action requested.
    Everything,
    /// The token endpoint answers 403.
    Forbidden,
}

struct TokenState {
    issuer: String,
    service: String,
    key: rcgen::KeyPair,
    cert_der_b64: String,
    users: HashMap<String, (String, Grant)>,
}

/// A Docker token server (the `realm` of a Bearer challenge) on 127.0.0.1 that signs ES256
/// JWTs with a self-signed certificate the registry trusts (its `rootcertbundle`), carried
/// in the `x5c` header, the way distribution 2.8 verifies them.
pub struct TokenServer {
    pub addr: SocketAddr,
    pub issuer: String,
    pub service: String,
    pub cert_pem: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TokenServer {
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    pub fn start(users: &[(&str, &str, Grant)]) -> TokenServer {
        use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test token signer");
        let cert = params.self_signed(&key).unwrap();
        let state = Arc::new(TokenState {
            issuer: "test-token-issuer".into(),
            service: "test-registry".into(),
            cert_der_b64: STANDARD.encode(cert.der()),
            key,
            users: users
                .iter()
                .map(|(u, p, g)| (u.to_string(), (p.to_string(), g.clone())))
                .collect(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app_state = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new()
                    .route("/token", axum::routing::get(token_handler))
                    .with_state(app_state);
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await;
            });
        });
        TokenServer {
            addr,
            issuer: state.issuer.clone(),
            service: state.service.clone(),
            cert_pem: cert.pem(),
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn token_handler(
    axum::extract::State(state): axum::extract::State<Arc<TokenState>>,
    headers: axum::http::HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let url = reqwest::Url::parse(&format!("http://x/?{}", query.unwrap_or_default())).unwrap();
    let params: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let service = params
        .iter()
        .find(|(k, _)| k == "service")
        .map(|(_, v)| v.clone());
    if service.as_deref() != Some(state.service.as_str()) {
        return (StatusCode::BAD_REQUEST, "unknown service").into_response();
    }
    let scopes: Vec<&str> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' '))
        .collect();
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let (subject, grant) = match basic {
        None => (String::new(), Grant::Repos(Vec::new())),
        Some(userpass) => {
            let (user, pass) = userpass.split_once(':').unwrap_or((&userpass, ""));
            match state.users.get(user) {
                Some((p, g)) if p == pass => (user.to_string(), g.clone()),
                _ => {
                    let body = serde_json::json!({"errors": [{"code": "UNAUTHORIZED",
                        "message": "invalid username or password"}]});
                    return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
                }
            }
        }
    };
    if matches!(grant, Grant::Forbidden) {
        let body = serde_json::json!({"errors": [{"code": "DENIED", "message": "access denied"}]});
        return (StatusCode::FORBIDDEN, axum::Json(body)).into_response();
    }
    let mut access = Vec::new();
    for scope in scopes {
        // repository:<name>:<actions>; the name itself may hold no ':' here.
        let mut parts = scope.splitn(3, ':');
        let (Some(kind), Some(name), Some(actions)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let asked: Vec<&str> = actions.split(',').collect();
        let allowed: Vec<String> = match &grant {
            Grant::Everything => asked.iter().map(|a| a.to_string()).collect(),
            Grant::Repos(repos) => repos
                .iter()
                .filter(|(r, _)| r == name)
                .flat_map(|(_, acts)| acts.iter())
                .filter(|a| asked.contains(&a.as_str()))
                .cloned()
                .collect(),
            Grant::Forbidden => Vec::new(),
        };
        if !allowed.is_empty() {
            access.push(serde_json::json!({"type": kind, "name": name, "actions": allowed}));
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [state.cert_der_b64]});
    let claims = serde_json::json!({
        "iss": state.issuer, "sub": subject, "aud": state.service,
        "exp": now + 300, "nbf": now - 10, "iat": now,
        "jti": format!("{now}-{}", rand_suffix()), "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let der = rcgen::SigningKey::sign(&state.key, signing_input.as_bytes()).unwrap();
    let jwt = format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(der_to_fixed(&der))
    );
    axum::Json(serde_json::json!({"token": jwt, "access_token": jwt, "expires_in": 300}))
        .into_response()
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// ECDSA signature: ASN.1 `SEQUENCE { r INTEGER, s INTEGER }` -> JWS `r || s` (32 bytes each).
fn der_to_fixed(der: &[u8]) -> Vec<u8> {
    fn int(bytes: &[u8]) -> (&[u8], &[u8]) {
        assert_eq!(bytes[0], 0x02, "INTEGER");
        let len = bytes[1] as usize;
        (&bytes[2..2 + len], &bytes[2 + len..])
    }
    assert_eq!(der[0], 0x30, "SEQUENCE");
    let body = if der[1] & 0x80 != 0 {
        &der[3..]
    } else {
        &der[2..]
    };
    let (r, rest) = int(body);
    let (s, _) = int(rest);
    let mut out = Vec::with_capacity(64);
    for n in [r, s] {
        let n = &n[n.len().saturating_sub(32)..];
        out.extend(std::iter::repeat_n(0u8, 32 - n.len()));
        out.extend_from_slice(n);
    }
    out
}
