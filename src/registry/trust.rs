//! Which registry certificates `secret verify` trusts: what chains to the system roots or a
//! `--ca-file` certificate, and a `--ca-file` certificate presented as the server's own.
//!
//! The second is the common private-registry setup: `openssl req -x509` makes a self-signed
//! certificate with `CA:TRUE`, the registry serves it, and containerd and Docker accept it
//! from `certs.d`. Go's `x509.Verify` succeeds when the leaf itself is in the root pool and
//! curl (OpenSSL with a partial chain allowed) accepts it from `--cacert`, but webpki refuses
//! a CA certificate as an end entity (`CaUsedAsEndEntity`). So the exact certificate from
//! the file is trusted as pinned: its validity period and its names are still checked, as
//! Go does for a leaf found in the pool.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{
    CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};

/// The system roots (as `rustls-native-certs` finds them: `SSL_CERT_FILE`, `SSL_CERT_DIR`,
/// then the distribution's bundle) plus `extra`.
fn roots(extra: &[CertificateDer<'static>]) -> RootCertStore {
    let mut store = RootCertStore::empty();
    // Unreadable system certificates are skipped, as the runtimes skip them; the failure a
    // user then sees is "unknown CA" for a registry they did not pass with --ca-file.
    let system = rustls_native_certs::load_native_certs();
    store.add_parsable_certificates(system.certs);
    store.add_parsable_certificates(extra.iter().cloned());
    store
}

/// Verifies registry certificates the way container runtimes do (see the module doc).
#[derive(Debug)]
pub(crate) struct RegistryTrust {
    /// `None` with `--insecure-skip-tls-verify`: any certificate is accepted, but the
    /// handshake signatures are still checked, so the peer holds the presented key.
    chain: Option<Arc<WebPkiServerVerifier>>,
    /// The certificates of `--ca-file`, accepted as the server's own certificate.
    pinned: Vec<CertificateDer<'static>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl RegistryTrust {
    pub(crate) fn new(
        extra: Vec<CertificateDer<'static>>,
        insecure: bool,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, Error> {
        let algorithms = provider.signature_verification_algorithms;
        let chain = if insecure {
            None
        } else {
            Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots(&extra)), provider)
                    .build()
                    .map_err(|e| Error::General(e.to_string()))?,
            )
        };
        Ok(RegistryTrust {
            chain,
            pinned: extra,
            algorithms,
        })
    }

    /// The checks Go makes of a leaf found in the root pool: its validity period at `now`
    /// and that it names the server. Errors are the ones webpki gives, so they read alike.
    fn verify_pinned(
        end_entity: &CertificateDer<'_>,
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<(), Error> {
        let (_, cert) = x509_parser::parse_x509_certificate(end_entity)
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let validity = cert.validity();
        let at =
            |t: i64| UnixTime::since_unix_epoch(std::time::Duration::from_secs(t.max(0) as u64));
        let time = now.as_secs() as i64;
        if time < validity.not_before.timestamp() {
            return Err(Error::InvalidCertificate(
                CertificateError::NotValidYetContext {
                    time: now,
                    not_before: at(validity.not_before.timestamp()),
                },
            ));
        }
        if time > validity.not_after.timestamp() {
            return Err(Error::InvalidCertificate(
                CertificateError::ExpiredContext {
                    time: now,
                    not_after: at(validity.not_after.timestamp()),
                },
            ));
        }
        let ee = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
        ee.verify_is_valid_for_subject_name(server_name)
            .map_err(|e| match e {
                webpki::Error::CertNotValidForName(context) => {
                    Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                        expected: server_name.to_owned(),
                        presented: context.presented,
                    })
                }
                _ => Error::InvalidCertificate(CertificateError::NotValidForName),
            })
    }
}

impl ServerCertVerifier for RegistryTrust {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Ok(verified) => Ok(verified),
            Err(_)
                if self
                    .pinned
                    .iter()
                    .any(|p| p.as_ref() == end_entity.as_ref()) =>
            {
                Self::verify_pinned(end_entity, server_name, now)?;
                Ok(ServerCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The TLS settings for a registry client: HTTP/2 or 1.1 by ALPN, as reqwest offers them.
pub(crate) fn client_config(
    ca_pem: Option<&[u8]>,
    insecure: bool,
) -> Result<rustls::ClientConfig, super::ClientError> {
    let provider = CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let extra = match ca_pem {
        Some(pem) => {
            let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &pem[..])
                .collect::<Result<_, _>>()
                .map_err(|_| super::ClientError::BadCaFile)?;
            if certs.is_empty() {
                return Err(super::ClientError::BadCaFile);
            }
            certs
        }
        None => Vec::new(),
    };
    let verifier = Arc::new(
        RegistryTrust::new(extra, insecure, provider.clone())
            .map_err(|e| super::ClientError::Build(e.to_string()))?,
    );
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| super::ClientError::Build(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
