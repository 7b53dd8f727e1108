//! `certs`: the files it writes are what a manual install needs, and the serving certificate is
//! accepted for the names the API server uses (checked with webpki, as a TLS client would).

mod support {
    pub mod cli;
}

use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use support::cli;

/// Runs `certs --service SERVICE --namespace NAMESPACE EXTRA... --out OUT`.
fn certs(service: &str, namespace: &str, extra: &[&str], out: &Path) -> Output {
    cli::run_command(
        cli::command()
            .args(["certs", "--service", service, "--namespace", namespace])
            .args(extra)
            .arg("--out")
            .arg(out),
        b"",
    )
}

fn verifier(ca_pem: &[u8]) -> Arc<WebPkiServerVerifier> {
    pullsecret_injector::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    WebPkiServerVerifier::builder(Arc::new(roots))
        .build()
        .unwrap()
}

#[test]
fn certs_writes_a_ca_and_a_serving_certificate_for_the_service_names() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let run = certs("psi", "infra", &["--days", "30"], &out);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains(out.join("ca.crt").to_str().unwrap()),
        "{stdout}"
    );

    let ca = std::fs::read(out.join("ca.crt")).unwrap();
    let cert = std::fs::read(out.join("tls.crt")).unwrap();
    let key = std::fs::read(out.join("tls.key")).unwrap();
    assert!(
        !stdout.contains(&String::from_utf8_lossy(&key).into_owned()),
        "the key is never printed"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.join("tls.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }

    // webpki checks the chain to a CA:true issuer, the serverAuth EKU and the SAN.
    let leaf = CertificateDer::from_pem_slice(&cert).unwrap();
    let verifier = verifier(&ca);
    for name in [
        "psi",
        "psi.infra",
        "psi.infra.svc",
        "psi.infra.svc.cluster.local",
    ] {
        let server_name = ServerName::try_from(name).unwrap();
        verifier
            .verify_server_cert(&leaf, &[], &server_name, &[], UnixTime::now())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let other = ServerName::try_from("psi.other.svc").unwrap();
    assert!(
        verifier
            .verify_server_cert(&leaf, &[], &other, &[], UnixTime::now())
            .is_err()
    );

    // And the key is the certificate's: rustls builds a server with the pair.
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&key).unwrap();
    rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![leaf], key)
        .unwrap();
}

#[test]
fn certs_for_another_service_are_not_trusted_by_this_ca() {
    let dir = tempfile::tempdir().unwrap();
    for (service, sub) in [("a", "one"), ("b", "two")] {
        let status = certs(service, "ns", &[], &dir.path().join(sub)).status;
        assert!(status.success());
    }
    // Each run makes its own CA: the second certificate does not chain to the first CA.
    let ca_one = std::fs::read(dir.path().join("one/ca.crt")).unwrap();
    let cert_two = std::fs::read(dir.path().join("two/tls.crt")).unwrap();
    let leaf = CertificateDer::from_pem_slice(&cert_two).unwrap();
    let name = ServerName::try_from("b.ns.svc").unwrap();
    assert!(
        verifier(&ca_one)
            .verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())
            .is_err()
    );
}

#[test]
fn certs_rejects_a_zero_validity() {
    let dir = tempfile::tempdir().unwrap();
    let run = certs("a", "ns", &["--days", "0"], dir.path());
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("--days"));
}

#[test]
fn certs_rejects_names_that_are_not_dns_labels() {
    let dir = tempfile::tempdir().unwrap();
    let run = certs("My_Webhook", "ns", &[], &dir.path().join("out"));
    assert_eq!(run.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&run.stderr)
            .contains("--service \"My_Webhook\" is not a DNS label")
    );
    assert!(!dir.path().join("out").exists());
}

#[test]
fn certs_never_replaces_an_existing_ca_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    assert!(certs("psi", "infra", &[], &out).status.success());
    let ca = std::fs::read(out.join("ca.crt")).unwrap();
    let key = std::fs::read(out.join("tls.key")).unwrap();

    let again = certs("psi", "infra", &[], &out);
    assert_eq!(again.status.code(), Some(2));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains(out.join("ca.crt").to_str().unwrap()) && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(out.join("ca.crt")).unwrap(),
        ca,
        "CA untouched"
    );
    assert_eq!(
        std::fs::read(out.join("tls.key")).unwrap(),
        key,
        "key untouched"
    );

    let forced = certs("psi", "infra", &["--force"], &out);
    assert!(forced.status.success());
    assert_ne!(std::fs::read(out.join("ca.crt")).unwrap(), ca);
}

#[test]
fn certs_takes_the_cluster_domain_and_prints_a_portable_ca_bundle_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let run = certs("psi", "infra", &["--cluster-domain", "corp.example"], &out);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    // GNU and BSD/macOS base64 both read stdin and both take no -w0 in common.
    assert!(
        stdout.contains(&format!(
            "base64 < {} | tr -d '\\n'",
            out.join("ca.crt").display()
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("-w0"), "{stdout}");

    let ca = std::fs::read(out.join("ca.crt")).unwrap();
    let leaf =
        CertificateDer::from_pem_slice(&std::fs::read(out.join("tls.crt")).unwrap()).unwrap();
    let verifier = verifier(&ca);
    let verify = |name: &str| {
        verifier
            .verify_server_cert(
                &leaf,
                &[],
                &ServerName::try_from(name).unwrap(),
                &[],
                UnixTime::now(),
            )
            .is_ok()
    };
    assert!(verify("psi.infra.svc.corp.example"));
    assert!(verify("psi.infra.svc"));
    assert!(!verify("psi.infra.svc.cluster.local"));

    let bad = certs(
        "psi",
        "infra",
        &["--cluster-domain", "Not A Domain"],
        &dir.path().join("x"),
    );
    assert_eq!(bad.status.code(), Some(2));
}
