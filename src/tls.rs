//! PEM loading and reload on change; self-signed generation.
//!
//! The serving pair is read from two files that Kubernetes replaces through a `..data` symlink
//! swap, so changes are detected by content hash, never by the mtime of the link. A new pair is
//! only installed once rustls accepts it (certificate parses, key parses and matches the
//! certificate), is valid now (notBefore passed, notAfter not), and covers every name the API
//! server is configured to use (`--tls-server-name`); anything else keeps the pair already in use.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum_server::tls_rustls::RustlsConfig;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::metrics::Metrics;

/// Protocols offered in ALPN, preferred first.
pub(crate) const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// File names written by `certs` and `serve --self-signed` (the names of a
/// `kubernetes.io/tls` Secret plus the CA).
pub(crate) const CA_FILE: &str = "ca.crt";
pub(crate) const CERT_FILE: &str = "tls.crt";
pub(crate) const KEY_FILE: &str = "tls.key";

#[derive(Debug, Error)]
pub(crate) enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} changed while it was read; trying again at the next check")]
    Changing { path: PathBuf },
    #[error("{path}: no PEM CERTIFICATE block")]
    NoCertificate { path: PathBuf },
    #[error("{path}: bad PEM certificate: {detail}")]
    BadCertificate { path: PathBuf, detail: String },
    #[error("{path}: no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {detail}")]
    BadKey { path: PathBuf, detail: String },
    #[error("the private key does not belong to the certificate")]
    KeyMismatch,
    #[error("{path}: the certificate expired at {not_after} (notAfter); renew it")]
    Expired { path: PathBuf, not_after: String },
    #[error(
        "{path}: the certificate is not valid before {not_before} (notBefore); check the clocks"
    )]
    NotYetValid { path: PathBuf, not_before: String },
    #[error("{path}: the certificate does not cover {name}, a name the API server uses")]
    NameNotCovered { path: PathBuf, name: String },
    #[error("certificate and key rejected by rustls: {0}")]
    Rustls(rustls::Error),
    #[error("cannot generate certificates: {0}")]
    Generate(#[from] rcgen::Error),
}

impl TlsError {
    /// Short label for logs and metrics.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Self::Read { .. } | Self::Write { .. } => "io",
            Self::Changing { .. } => "changing",
            Self::NoCertificate { .. } | Self::BadCertificate { .. } => "certificate",
            Self::BadKey { .. } => "key",
            Self::KeyMismatch => "mismatch",
            Self::Expired { .. } => "expired",
            Self::NotYetValid { .. } => "not_yet_valid",
            Self::NameNotCovered { .. } => "name_not_covered",
            Self::Rustls(_) => "rustls",
            Self::Generate(_) => "generate",
        }
    }
}

/// The PEM bytes of a certificate chain and its key, as read from disk.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct PemPair {
    pub(crate) cert: Vec<u8>,
    pub(crate) key: Vec<u8>,
}

impl std::fmt::Debug for PemPair {
    // The key is secret: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PemPair")
            .field("cert_bytes", &self.cert.len())
            .finish_non_exhaustive()
    }
}

impl PemPair {
    /// Reads both files. The certificate is read again after the key: if it changed in between,
    /// a swap was in progress and the read is reported as `Changing` rather than as a bad pair.
    pub(crate) async fn read(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let cert = read(cert_path).await?;
        let key = read(key_path).await?;
        if read(cert_path).await? != cert {
            return Err(TlsError::Changing {
                path: cert_path.to_path_buf(),
            });
        }
        Ok(Self { cert, key })
    }

    /// Content hash of both files, to notice a change.
    pub(crate) fn digest(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update((self.cert.len() as u64).to_be_bytes());
        hasher.update(&self.cert);
        hasher.update(&self.key);
        hasher.finalize().into()
    }
}

async fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    tokio::fs::read(path)
        .await
        .map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// A validated serving configuration and what identifies its certificate.
pub(crate) struct Loaded {
    pub(crate) config: Arc<ServerConfig>,
    /// SHA-256 of the leaf certificate (DER), lowercase hex.
    pub(crate) fingerprint: String,
    /// The leaf's notAfter, in seconds since the Unix epoch.
    pub(crate) not_after: i64,
}

/// Parses and checks a pair, and builds the rustls configuration that serves it (ring provider,
/// TLS 1.2 and 1.3, ALPN h2 and http/1.1); the leaf must cover each of `names` (DNS names or
/// IPs) and be valid at `now`.
pub(crate) fn server_config_for(
    pair: &PemPair,
    cert_path: &Path,
    key_path: &Path,
    names: &[String],
    now: SystemTime,
) -> Result<Loaded, TlsError> {
    let certs = CertificateDer::pem_slice_iter(&pair.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate {
            path: cert_path.to_path_buf(),
            detail: e.to_string(),
        })?;
    let Some(leaf) = certs.first() else {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_path_buf(),
        });
    };
    let fingerprint = hex(&Sha256::digest(leaf.as_ref()));
    let not_after = check_leaf(leaf, cert_path, names, now)?;
    let key = PrivateKeyDer::from_pem_slice(&pair.key).map_err(|e| TlsError::BadKey {
        path: key_path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Rustls)?
        .with_no_client_auth()
        // Checks that the key's public half is the certificate's.
        .with_single_cert(certs, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch,
            rustls::Error::InvalidCertificate(_) => TlsError::BadCertificate {
                path: cert_path.to_path_buf(),
                detail: e.to_string(),
            },
            other => TlsError::Rustls(other),
        })?;
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    Ok(Loaded {
        config: Arc::new(config),
        fingerprint,
        not_after,
    })
}

/// Checks that `leaf` is valid at `now` and covers `names`; returns its notAfter (Unix seconds).
/// The API server would refuse it otherwise, and every admission would fail its handshake.
fn check_leaf(
    leaf: &CertificateDer<'_>,
    path: &Path,
    names: &[String],
    now: SystemTime,
) -> Result<i64, TlsError> {
    let bad = |detail: String| TlsError::BadCertificate {
        path: path.to_path_buf(),
        detail,
    };
    let (_, cert) =
        x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| bad(e.to_string()))?;
    let validity = cert.validity();
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    if now < validity.not_before.timestamp() {
        return Err(TlsError::NotYetValid {
            path: path.to_path_buf(),
            not_before: validity.not_before.to_string(),
        });
    }
    if now > validity.not_after.timestamp() {
        return Err(TlsError::Expired {
            path: path.to_path_buf(),
            not_after: validity.not_after.to_string(),
        });
    }
    if !names.is_empty() {
        // webpki applies the same name rules (SANs only, RFC 6125 wildcards) as the client.
        let end_entity =
            webpki::EndEntityCert::try_from(leaf).map_err(|e| bad(format!("{e:?}")))?;
        for name in names {
            let covered = rustls::pki_types::ServerName::try_from(name.as_str())
                .ok()
                .is_some_and(|server_name| {
                    end_entity
                        .verify_is_valid_for_subject_name(&server_name)
                        .is_ok()
                });
            if !covered {
                return Err(TlsError::NameNotCovered {
                    path: path.to_path_buf(),
                    name: name.clone(),
                });
            }
        }
    }
    Ok(validity.not_after.timestamp())
}

/// What one check of the certificate files did.
#[derive(Debug)]
pub(crate) enum ReloadOutcome {
    Unchanged,
    Reloaded {
        fingerprint: String,
        not_after: i64,
    },
    /// The files changed but the new pair was rejected; the previous one stays in use.
    Rejected(TlsError),
    /// The files are being replaced right now; checked again next time.
    InProgress,
}

/// Watches a certificate and key file and swaps the served configuration when they change.
pub(crate) struct CertReloader {
    cert_path: PathBuf,
    key_path: PathBuf,
    served: RustlsConfig,
    /// Digest of the pair last tried, good or bad: a bad pair is reported once, not on every poll.
    last_seen: [u8; 32],
    /// Names the certificate must cover (`--tls-server-name`).
    names: Vec<String>,
    pub(crate) fingerprint: String,
    /// notAfter of the pair in use (Unix seconds).
    pub(crate) not_after: i64,
}

impl CertReloader {
    /// Loads the pair once (failing here is a start-up error); this pair and every later one
    /// must cover `names`.
    pub(crate) async fn load_for(
        cert_path: PathBuf,
        key_path: PathBuf,
        names: Vec<String>,
    ) -> Result<Self, TlsError> {
        let pair = PemPair::read(&cert_path, &key_path).await?;
        let loaded = server_config_for(&pair, &cert_path, &key_path, &names, SystemTime::now())?;
        Ok(Self {
            cert_path,
            key_path,
            served: RustlsConfig::from_config(loaded.config),
            last_seen: pair.digest(),
            names,
            fingerprint: loaded.fingerprint,
            not_after: loaded.not_after,
        })
    }

    /// The configuration the listener serves; it follows every successful reload.
    pub(crate) fn rustls_config(&self) -> RustlsConfig {
        self.served.clone()
    }

    /// Reads the files and, if their content changed, installs the new pair when it is valid.
    pub(crate) async fn check(&mut self) -> ReloadOutcome {
        let pair = match PemPair::read(&self.cert_path, &self.key_path).await {
            Ok(pair) => pair,
            Err(TlsError::Changing { .. }) => return ReloadOutcome::InProgress,
            // Unreadable files keep the served pair too; `run` reports each distinct error once.
            Err(e) => return ReloadOutcome::Rejected(e),
        };
        let digest = pair.digest();
        if digest == self.last_seen {
            return ReloadOutcome::Unchanged;
        }
        self.last_seen = digest;
        match server_config_for(
            &pair,
            &self.cert_path,
            &self.key_path,
            &self.names,
            SystemTime::now(),
        ) {
            Ok(loaded) => {
                self.served.reload_from_config(loaded.config);
                self.fingerprint = loaded.fingerprint.clone();
                self.not_after = loaded.not_after;
                ReloadOutcome::Reloaded {
                    fingerprint: loaded.fingerprint,
                    not_after: loaded.not_after,
                }
            }
            Err(e) => ReloadOutcome::Rejected(e),
        }
    }

    /// Runs `check` every `interval` forever, logging and counting the outcome.
    pub(crate) async fn run(
        mut self,
        interval: Duration,
        metrics: Arc<Metrics>,
        health: Arc<crate::state::Health>,
    ) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        // An unreadable file is reported once per distinct error, not on every tick.
        let mut last_error: Option<String> = None;
        loop {
            ticker.tick().await;
            match self.check().await {
                ReloadOutcome::Unchanged | ReloadOutcome::InProgress => {}
                ReloadOutcome::Reloaded {
                    fingerprint,
                    not_after,
                } => {
                    last_error = None;
                    metrics.tls_reload("ok");
                    metrics.tls_certificate_expiry.set(not_after);
                    health.ready("tls", format!("serving certificate sha256:{fingerprint}"));
                    tracing::info!(cert = %self.cert_path.display(), sha256 = %fingerprint, "serving certificate reloaded");
                }
                ReloadOutcome::Rejected(err) => {
                    let text = err.to_string();
                    if last_error.as_deref() != Some(text.as_str()) {
                        metrics.tls_reload("error");
                        metrics.tls_reload_rejected(err.label());
                        tracing::warn!(
                            cert = %self.cert_path.display(),
                            key = %self.key_path.display(),
                            reason = err.label(),
                            error = %text,
                            still_serving = %self.fingerprint,
                            "new certificate rejected; keeping the one in use"
                        );
                        // Still ready: the certificate in use is valid; the detail says why the
                        // files on disk are not what is served.
                        health.ready(
                            "tls",
                            format!(
                                "serving certificate sha256:{}; files on disk rejected: {text}",
                                self.fingerprint
                            ),
                        );
                        last_error = Some(text);
                    }
                }
            }
        }
    }
}

/// The DNS names under which the API server reaches `service` in `namespace`.
pub(crate) fn service_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// A freshly made CA and a serving certificate it signed, in PEM.
pub(crate) struct GeneratedCerts {
    pub(crate) ca_cert: String,
    pub(crate) cert: String,
    pub(crate) key: String,
}

impl std::fmt::Debug for GeneratedCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedCerts").finish_non_exhaustive()
    }
}

/// Generates a CA (valid ten times `days`) and a serving certificate for `names` (DNS names or
/// IP addresses as SANs, serverAuth) valid `days` days. The CA key is not kept.
pub(crate) fn generate(names: &[String], days: u32) -> Result<GeneratedCerts, TlsError> {
    let now = SystemTime::now();
    // Tolerate clocks of other machines that run a little behind.
    let not_before = now.checked_sub(Duration::from_secs(3600)).unwrap_or(now);
    let day = Duration::from_secs(86_400);

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "pullsecret-injector CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = not_before.into();
    ca.not_after = (now + day * days.saturating_mul(10)).into();
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(names.to_vec())?;
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(first) = names.first() {
        leaf.distinguished_name
            .push(DnType::CommonName, first.as_str());
    }
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = not_before.into();
    leaf.not_after = (now + day * days).into();
    let cert = leaf.signed_by(&key, &issuer)?;

    Ok(GeneratedCerts {
        ca_cert: ca_cert.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// Where `write` put the files.
#[derive(Debug, Clone)]
pub(crate) struct CertPaths {
    pub(crate) ca: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

/// Writes ca.crt, tls.crt and tls.key into `dir` (created if needed); the key gets mode 0600.
pub(crate) fn write(dir: &Path, certs: &GeneratedCerts) -> Result<CertPaths, TlsError> {
    fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let paths = CertPaths {
        ca: dir.join(CA_FILE),
        cert: dir.join(CERT_FILE),
        key: dir.join(KEY_FILE),
    };
    write_file(&paths.ca, certs.ca_cert.as_bytes(), 0o644)?;
    write_file(&paths.cert, certs.cert.as_bytes(), 0o644)?;
    write_file(&paths.key, certs.key.as_bytes(), 0o600)?;
    Ok(paths)
}

fn write_file(path: &Path, content: &[u8], mode: u32) -> Result<(), TlsError> {
    let err = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(mode);
        let mut file = options.open(path).map_err(err)?;
        // `mode` only applies to new files; an existing key file is tightened too.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(err)?;
        file.write_all(content).map_err(err)?;
    }
    #[cfg(not(unix))]
    {
        let _ = mode;
        let mut file = options.open(path).map_err(err)?;
        file.write_all(content).map_err(err)?;
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(certs: &GeneratedCerts) -> PemPair {
        PemPair {
            cert: certs.cert.clone().into_bytes(),
            key: certs.key.clone().into_bytes(),
        }
    }

    fn config(p: &PemPair) -> Result<Loaded, TlsError> {
        server_config_for(
            p,
            Path::new("tls.crt"),
            Path::new("tls.key"),
            &[],
            SystemTime::now(),
        )
    }

    #[test]
    fn generated_pair_is_accepted_with_both_alpn_protocols() {
        let certs = generate(&service_names("psi", "ns"), 30).unwrap();
        let loaded = config(&pair(&certs)).unwrap();
        assert_eq!(
            loaded.config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert_eq!(loaded.fingerprint.len(), 64);
    }

    #[test]
    fn key_of_another_certificate_is_a_mismatch() {
        let a = generate(&service_names("a", "ns"), 30).unwrap();
        let b = generate(&service_names("b", "ns"), 30).unwrap();
        let mixed = PemPair {
            cert: a.cert.into_bytes(),
            key: b.key.into_bytes(),
        };
        assert!(
            matches!(config(&mixed), Err(TlsError::KeyMismatch)),
            "{:?}",
            config(&mixed).err()
        );
    }

    #[test]
    fn truncated_or_empty_files_are_rejected() {
        let certs = generate(&service_names("a", "ns"), 30).unwrap();
        let half = PemPair {
            cert: certs.cert.as_bytes()[..certs.cert.len() / 2].to_vec(),
            key: certs.key.clone().into_bytes(),
        };
        assert!(config(&half).is_err());
        let no_key = PemPair {
            cert: certs.cert.clone().into_bytes(),
            key: Vec::new(),
        };
        assert!(matches!(config(&no_key), Err(TlsError::BadKey { .. })));
        let no_cert = PemPair {
            cert: Vec::new(),
            key: certs.key.into_bytes(),
        };
        assert!(matches!(
            config(&no_cert),
            Err(TlsError::NoCertificate { .. })
        ));
    }

    #[test]
    fn written_key_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let certs = generate(&service_names("a", "ns"), 1).unwrap();
        let paths = write(dir.path(), &certs).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&paths.key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert_eq!(fs::read_to_string(&paths.ca).unwrap(), certs.ca_cert);
    }
}
