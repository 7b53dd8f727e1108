//! The TLS material and clients the socket-level tests need: a test CA and its serving
//! certificates, a kubelet-style Secret volume, and clients that verify against a CA.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::serve::{DEADLINE, Serve};

// ---------------------------------------------------------------------------------------------
// Certificates

/// A test CA that can sign any number of serving certificates.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

/// A serving certificate and its key, in PEM.
#[derive(Clone)]
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

impl Leaf {
    /// SHA-256 of the certificate (DER), as served in the handshake.
    pub fn fingerprint(&self) -> String {
        let der = CertificateDer::from_pem_slice(self.cert.as_bytes()).unwrap();
        hex(&Sha256::digest(der.as_ref()))
    }
}

impl TestCa {
    pub fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `names`, valid from `not_before` to `not_after`.
    pub fn leaf_with(
        &self,
        names: &[&str],
        not_before: std::time::SystemTime,
        not_after: std::time::SystemTime,
    ) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A certificate for 127.0.0.1, localhost and the in-cluster service name.
    pub fn leaf(&self) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
            "pullsecret-injector.psi.svc".to_string(),
        ])
        .unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// A directory laid out as the kubelet lays out a Secret volume: the visible files are links
/// into `..data`, a link to a timestamped directory, swapped atomically on every update.
pub struct SecretVolume {
    pub dir: PathBuf,
    version: usize,
}

impl SecretVolume {
    pub fn new(dir: &Path, files: &[(&str, &[u8])]) -> Self {
        let mut volume = Self {
            dir: dir.to_path_buf(),
            version: 0,
        };
        volume.swap(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(Path::new("..data").join(name), dir.join(name)).unwrap();
        }
        volume
    }

    /// Writes all files into a new directory, then renames a new `..data` link over the old one.
    pub fn swap(&mut self, files: &[(&str, &[u8])]) {
        self.version += 1;
        let target = format!("..2026_11_22_00_00_00.{:04}", self.version);
        std::fs::create_dir(self.dir.join(&target)).unwrap();
        for (name, content) in files {
            std::fs::write(self.dir.join(&target).join(name), content).unwrap();
        }
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&target, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Serve {
    /// GET `path` on the HTTPS port by a client that trusts only `ca_pem`; `http1` forces
    /// HTTP/1.1, otherwise ALPN picks.
    pub async fn https_get(
        &self,
        ca_pem: &str,
        http1: bool,
        path: &str,
    ) -> reqwest::Result<reqwest::Response> {
        client(ca_pem, http1, false)
            .get(self.https_url(path))
            .send()
            .await
    }

    /// POST `body` as JSON to `path` on the HTTPS port, like [`Serve::https_get`].
    pub async fn https_post(
        &self,
        ca_pem: &str,
        http1: bool,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Result<reqwest::Response> {
        client(ca_pem, http1, false)
            .post(self.https_url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
    }

    /// The fingerprint of the certificate a fresh handshake gets.
    pub async fn served_fingerprint(&self, ca_pem: &str) -> String {
        let tls = tls_connect(self.https, ca_pem, b"http/1.1").await.unwrap();
        let der = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        hex(&Sha256::digest(der.as_ref()))
    }
}

// ---------------------------------------------------------------------------------------------
// Clients

/// A reqwest client that trusts only `ca_pem`. `http1` forces HTTP/1.1; otherwise ALPN picks.
/// `fresh_connections` makes every request do its own TLS handshake.
pub fn client(ca_pem: &str, http1: bool, fresh_connections: bool) -> reqwest::Client {
    pullsecret_injector::install_crypto_provider();
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap();
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([ca])
        .tls_info(true)
        .timeout(DEADLINE);
    if http1 {
        builder = builder.http1_only();
    }
    if fresh_connections {
        builder = builder.pool_max_idle_per_host(0);
    }
    builder.build().unwrap()
}

/// The fingerprint of the certificate a response came over.
pub fn response_fingerprint(res: &reqwest::Response) -> String {
    let info = res.extensions().get::<reqwest::tls::TlsInfo>().unwrap();
    hex(&Sha256::digest(info.peer_certificate().unwrap()))
}

/// A raw TLS connection to 127.0.0.1 that verifies the server against `ca_pem`.
pub async fn tls_connect(
    addr: SocketAddr,
    ca_pem: &str,
    alpn: &[u8],
) -> std::io::Result<TlsStream<TcpStream>> {
    pullsecret_injector::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::IpAddress(addr.ip().into());
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// Reads an HTTP/1.1 response head (up to the blank line) and returns its status code, or None
/// if the connection ended first.
pub async fn read_status<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Option<u16> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let text = String::from_utf8_lossy(&head);
    text.split_whitespace().nth(1)?.parse().ok()
}

/// Writes `data` as one HTTP/1.1 chunk.
pub async fn write_chunk<S: tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    data: &[u8],
) -> std::io::Result<()> {
    stream
        .write_all(format!("{:x}\r\n", data.len()).as_bytes())
        .await?;
    stream.write_all(data).await?;
    stream.write_all(b"\r\n").await?;
    stream.flush().await
}
