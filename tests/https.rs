//! The webhook over real sockets: the `serve` binary, a client that verifies the certificate
//! against its CA (as the API server does), h2 and http/1.1, certificate rotation through a
//! kubelet-style `..data` swap, body limits, readiness and policy reloads, graceful shutdown.

mod support {
    pub mod serve;
    pub mod shared;
    pub mod tls;
}

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use support::serve::{BIN, DEADLINE, Serve, eventually};
use support::shared::sample;
use support::tls::{
    Leaf, SecretVolume, TestCa, client, read_status, response_fingerprint, tls_connect, write_chunk,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const POLICY: &str = "\
sourceNamespace: registry-credentials
rules:
  - name: example
    registries: [\"registry.example.com:5000\"]
    secret: example-pull
";

const OTHER_POLICY: &str = "\
sourceNamespace: registry-credentials
rules:
  - name: example
    registries: [\"registry.example.com:5000\"]
    secret: example-pull-v2
";

/// A policy with an unknown field on line 5.
const BAD_POLICY: &str = "\
sourceNamespace: registry-credentials
rules:
  - name: example
    registries: [\"registry.example.com:5000\"]
    secrett: example-pull
";

/// The pull secrets `/mutate` adds to the Pod of the first reference sample (namespace team-a,
/// one image on registry.example.com:5000).
async fn injected_secrets(serve: &Serve, ca_pem: &str) -> Vec<String> {
    use base64::Engine as _;
    let review = sample("01_pod_create_replicaset.json");
    let res = serve
        .https_post(ca_pem, false, "/mutate?timeout=10s", review)
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    let answer: serde_json::Value = res.json().await.unwrap();
    let Some(patch) = answer["response"]["patch"].as_str() else {
        return Vec::new();
    };
    let patch = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .unwrap();
    let ops: Vec<serde_json::Value> = serde_json::from_slice(&patch).unwrap();
    let mut names = Vec::new();
    for op in ops.iter().filter(|op| {
        op["path"]
            .as_str()
            .is_some_and(|p| p.starts_with("/spec/imagePullSecrets"))
    }) {
        match &op["value"] {
            serde_json::Value::Array(items) => names.extend(
                items
                    .iter()
                    .filter_map(|i| i["name"].as_str().map(String::from)),
            ),
            one => names.extend(one["name"].as_str().map(String::from)),
        }
    }
    names
}

struct Fixture {
    _dir: tempfile::TempDir,
    ca: TestCa,
    /// The pair the volume starts with.
    first: Leaf,
    volume: SecretVolume,
    policy: std::path::PathBuf,
}

/// A CA, a kubelet-style volume with tls.crt/tls.key, and a policy file with `policy` (if any).
fn fixture(policy: Option<&str>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let leaf = ca.leaf();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let volume = SecretVolume::new(
        &certs,
        &[
            ("tls.crt", leaf.cert.as_bytes()),
            ("tls.key", leaf.key.as_bytes()),
        ],
    );
    let policy_path = dir.path().join("policy.yaml");
    if let Some(text) = policy {
        std::fs::write(&policy_path, text).unwrap();
    }
    Fixture {
        _dir: dir,
        ca,
        first: leaf,
        volume,
        policy: policy_path,
    }
}

fn start(f: &Fixture, extra: &[&str]) -> Serve {
    let cert = f.volume.path("tls.crt");
    let key = f.volume.path("tls.key");
    let policy = f.policy.to_str().unwrap().to_string();
    let mut args = vec![
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--policy",
        &policy,
        "--reload-interval",
        "100ms",
    ];
    args.extend_from_slice(extra);
    Serve::start(&args)
}

#[tokio::test]
async fn serves_h2_and_http1_with_a_certificate_the_ca_verifies() {
    let f = fixture(Some(POLICY));
    let serve = start(&f, &[]);

    let h2 = serve.https_get(&f.ca.pem, false, "/mutate").await.unwrap();
    assert_eq!(h2.version(), reqwest::Version::HTTP_2);
    assert_eq!(h2.status(), reqwest::StatusCode::METHOD_NOT_ALLOWED);

    let h1 = serve.https_get(&f.ca.pem, true, "/mutate").await.unwrap();
    assert_eq!(h1.version(), reqwest::Version::HTTP_11);
    assert_eq!(h1.status(), reqwest::StatusCode::METHOD_NOT_ALLOWED);

    // The name the API server verifies for a service webhook.
    let by_service_name = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(f.ca.pem.as_bytes()).unwrap()])
        .resolve("pullsecret-injector.psi.svc", serve.https)
        .build()
        .unwrap()
        .get(format!(
            "https://pullsecret-injector.psi.svc:{}/mutate",
            serve.https.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        by_service_name.status(),
        reqwest::StatusCode::METHOD_NOT_ALLOWED
    );

    // A client that does not trust this CA is refused the handshake.
    let stranger = TestCa::new();
    assert!(
        serve
            .https_get(&stranger.pem, false, "/mutate")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn rotated_certificate_is_served_without_a_failed_request() {
    let mut f = fixture(Some(POLICY));
    let serve = start(&f, &[]);
    let old = f.first.fingerprint();
    assert_eq!(serve.served_fingerprint(&f.ca.pem).await, old);

    // Every request makes its own handshake, so some of them straddle the swap.
    #[derive(Default)]
    struct Seen {
        certificates: Vec<String>,
        failures: Vec<String>,
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let looping = {
        let (seen, stop) = (seen.clone(), stop.clone());
        let url = serve.https_url("/mutate");
        let http = client(&f.ca.pem, true, true);
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let outcome = http.get(&url).send().await;
                let mut seen = seen.lock().unwrap();
                match outcome {
                    Ok(res) if res.status() == reqwest::StatusCode::METHOD_NOT_ALLOWED => {
                        let fp = response_fingerprint(&res);
                        if seen.certificates.last() != Some(&fp) {
                            seen.certificates.push(fp);
                        }
                    }
                    Ok(res) => seen.failures.push(format!("status {}", res.status())),
                    Err(e) => seen.failures.push(format!("{e:?}")),
                }
            }
        })
    };
    eventually(
        "the loop to run on the old certificate",
        DEADLINE,
        || async { (!seen.lock().unwrap().certificates.is_empty()).then_some(()) },
    )
    .await;

    let new = f.ca.leaf();
    f.volume.swap(&[
        ("tls.crt", new.cert.as_bytes()),
        ("tls.key", new.key.as_bytes()),
    ]);
    let expected = new.fingerprint();
    eventually("the loop to get the new certificate", DEADLINE, || async {
        (seen.lock().unwrap().certificates.last() == Some(&expected)).then_some(())
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    looping.await.unwrap();

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(
        seen.failures.is_empty(),
        "requests failed during rotation: {:?}",
        seen.failures
    );
    assert_eq!(
        seen.certificates,
        vec![old, expected.clone()],
        "old, then new, never back"
    );
    assert_eq!(serve.served_fingerprint(&f.ca.pem).await, expected);
    assert_eq!(
        serve
            .metric("pullsecret_injector_tls_reloads_total{result=\"ok\"}")
            .await,
        1.0
    );
    assert_eq!(
        serve
            .metric("pullsecret_injector_tls_reloads_total{result=\"error\"}")
            .await,
        0.0
    );
}

#[tokio::test]
async fn bad_or_half_written_pair_keeps_the_old_certificate() {
    let mut f = fixture(Some(POLICY));
    let serve = start(&f, &[]);
    let old = f.first.fingerprint();

    // A new certificate with the key of another one.
    let (a, b) = (f.ca.leaf(), f.ca.leaf());
    f.volume.swap(&[
        ("tls.crt", a.cert.as_bytes()),
        ("tls.key", b.key.as_bytes()),
    ]);
    serve
        .wait_metric(
            "pullsecret_injector_tls_reloads_total{result=\"error\"}",
            1.0,
            DEADLINE,
        )
        .await;
    assert_eq!(serve.served_fingerprint(&f.ca.pem).await, old);
    let (_, readyz) = serve.admin_get("/readyz").await;
    assert!(
        readyz
            .contains("files on disk rejected: the private key does not belong to the certificate"),
        "{readyz}"
    );

    // A certificate cut off half-way.
    let half = &a.cert.as_bytes()[..a.cert.len() / 2];
    f.volume
        .swap(&[("tls.crt", half), ("tls.key", a.key.as_bytes())]);
    eventually(
        "the truncated certificate to be rejected",
        DEADLINE,
        || async {
            (serve
                .metric("pullsecret_injector_tls_reloads_total{result=\"error\"}")
                .await
                == 2.0)
                .then_some(())
        },
    )
    .await;
    assert_eq!(serve.served_fingerprint(&f.ca.pem).await, old);
    assert!(
        serve
            .logs()
            .iter()
            .any(|l| l.contains("keeping the one in use"))
    );

    // The watcher still takes the next good pair.
    f.volume.swap(&[
        ("tls.crt", a.cert.as_bytes()),
        ("tls.key", a.key.as_bytes()),
    ]);
    let expected = a.fingerprint();
    eventually("the good pair to be served", DEADLINE, || {
        let serve = &serve;
        let pem = f.ca.pem.clone();
        let expected = expected.clone();
        async move { (serve.served_fingerprint(&pem).await == expected).then_some(()) }
    })
    .await;
    assert_eq!(
        serve
            .metric("pullsecret_injector_tls_reloads_total{result=\"ok\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn body_over_3_mib_is_413_also_when_chunked() {
    let f = fixture(Some(POLICY));
    let serve = start(&f, &[]);
    let body = vec![b' '; 4 * 1024 * 1024];

    let h2 = serve
        .https_post(&f.ca.pem, false, "/mutate", body.clone())
        .await
        .unwrap();
    assert_eq!(h2.version(), reqwest::Version::HTTP_2);
    assert_eq!(h2.status(), reqwest::StatusCode::PAYLOAD_TOO_LARGE);

    // HTTP/1.1 chunked, no Content-Length: the limit has to be enforced while reading.
    let tls = tls_connect(serve.https, &f.ca.pem, b"http/1.1")
        .await
        .unwrap();
    let (mut reader, mut writer) = tokio::io::split(tls);
    let upload = tokio::spawn(async move {
        writer
            .write_all(b"POST /mutate HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
            .await?;
        for chunk in body.chunks(64 * 1024) {
            write_chunk(&mut writer, chunk).await?;
        }
        writer.write_all(b"0\r\n\r\n").await?;
        writer.flush().await
    });
    let status = tokio::time::timeout(DEADLINE, read_status(&mut reader))
        .await
        .unwrap();
    assert_eq!(status, Some(413));
    // The upload itself may be cut by the server closing; only the answer matters.
    let _ = upload.await;
}

#[tokio::test]
async fn readyz_is_503_until_a_policy_loads() {
    let f = fixture(None);
    let serve = start(&f, &[]);
    let (status, body) = serve.admin_get("/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("[-] policy not ready"), "{body}");
    assert_eq!(serve.admin_get("/healthz").await, (200, "ok\n".to_string()));

    std::fs::write(&f.policy, POLICY).unwrap();
    let body = eventually("/readyz to turn 200", DEADLINE, || async {
        let (status, body) = serve.admin_get("/readyz").await;
        (status == 200).then_some(body)
    })
    .await;
    assert!(body.contains("[+] policy ok: generation 1"), "{body}");
    assert_eq!(
        serve.metric("pullsecret_injector_policy_generation").await,
        1.0
    );
}

#[tokio::test]
async fn policy_edit_applies_and_a_bad_edit_keeps_the_last_good_policy() {
    let f = fixture(Some(POLICY));
    let serve = start(&f, &[]);
    serve
        .wait_metric("pullsecret_injector_policy_generation", 1.0, DEADLINE)
        .await;

    assert_eq!(injected_secrets(&serve, &f.ca.pem).await, ["example-pull"]);

    std::fs::write(&f.policy, OTHER_POLICY).unwrap();
    serve
        .wait_metric("pullsecret_injector_policy_generation", 2.0, DEADLINE)
        .await;
    assert_eq!(
        injected_secrets(&serve, &f.ca.pem).await,
        ["example-pull-v2"]
    );

    std::fs::write(&f.policy, BAD_POLICY).unwrap();
    serve
        .wait_metric(
            "pullsecret_injector_policy_reload_errors_total",
            1.0,
            DEADLINE,
        )
        .await;
    assert_eq!(
        serve.metric("pullsecret_injector_policy_generation").await,
        2.0
    );
    let (status, body) = serve.admin_get("/readyz").await;
    assert_eq!(status, 200, "the last good policy still serves: {body}");
    let location = format!("{}:5:", f.policy.display());
    assert!(
        body.contains("generation 2 in use") && body.contains(&location),
        "{body}"
    );
    serve
        .wait_log("the problem logged with FILE:LINE:COL", DEADLINE, |l| {
            l.contains(&location)
        })
        .await;
    assert_eq!(
        injected_secrets(&serve, &f.ca.pem).await,
        ["example-pull-v2"],
        "the last good policy still decides"
    );
}

#[tokio::test]
async fn not_an_admission_review_is_400() {
    let f = fixture(Some(POLICY));
    let serve = start(&f, &[]);
    for http1 in [false, true] {
        let res = serve
            .https_post(
                &f.ca.pem,
                http1,
                "/mutate",
                r#"{"kind":"Pod","apiVersion":"v1"}"#,
            )
            .await
            .unwrap();
        assert_eq!(res.status(), reqwest::StatusCode::BAD_REQUEST);
    }
}

#[tokio::test]
async fn admission_review_is_answered_over_https() {
    let f = fixture(Some(POLICY));
    let serve = start(&f, &[]);
    serve.wait_ready_within(DEADLINE).await;
    let review = sample("01_pod_create_replicaset.json");
    let res = serve
        .https_post(&f.ca.pem, false, "/mutate?timeout=10s", review.clone())
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    let answer: serde_json::Value = res.json().await.unwrap();
    let request: serde_json::Value = serde_json::from_slice(&review).unwrap();
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["response"]["uid"], request["request"]["uid"]);
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(injected_secrets(&serve, &f.ca.pem).await, ["example-pull"]);
}

/// Starts `POST /mutate` over HTTP/1.1 with `expect: 100-continue` for a body of
/// `content_length` bytes and returns the connection once the server has answered 100: hyper
/// answers 100 Continue when the handler reads the body, so the request is in flight.
async fn request_in_flight(
    serve: &Serve,
    ca_pem: &str,
    content_length: usize,
) -> TlsStream<TcpStream> {
    let mut tls = tls_connect(serve.https, ca_pem, b"http/1.1").await.unwrap();
    let head = format!(
        "POST /mutate HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {content_length}\r\nexpect: 100-continue\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    assert_eq!(
        tokio::time::timeout(DEADLINE, read_status(&mut tls))
            .await
            .unwrap(),
        Some(100)
    );
    tls
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_upload_finish_then_exits_0() {
    let f = fixture(Some(POLICY));
    let mut serve = start(&f, &["--shutdown-grace", "30s"]);
    let body = br#"{"kind":"Pod","apiVersion":"v1"}"#;

    let mut tls = request_in_flight(&serve, &f.ca.pem, body.len()).await;
    tls.write_all(&body[..10]).await.unwrap();
    tls.flush().await.unwrap();

    serve.sigterm();
    let https = serve.https;
    eventually("the listener to stop accepting", DEADLINE, || async move {
        tokio::net::TcpStream::connect(https)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    let (status, _) = serve.admin_get("/readyz").await;
    assert_eq!(status, 503, "draining is not ready");

    tls.write_all(&body[10..]).await.unwrap();
    tls.flush().await.unwrap();
    let status = tokio::time::timeout(DEADLINE, read_status(&mut tls))
        .await
        .unwrap();
    assert_eq!(status, Some(400), "the in-flight request got its answer");
    drop(tls);

    let exit = serve.exit_status(DEADLINE).await;
    assert_eq!(exit.code(), Some(0), "logs:\n{}", serve.logs().join("\n"));
}

#[tokio::test]
async fn sigint_drain_is_bounded_by_the_shutdown_grace() {
    let f = fixture(Some(POLICY));
    let mut serve = start(&f, &["--shutdown-grace", "1s"]);

    // A request whose body never completes.
    let tls = request_in_flight(&serve, &f.ca.pem, 100).await;

    serve.signal("-INT");
    let exit = serve.exit_status(DEADLINE).await;
    assert_eq!(exit.code(), Some(0));
    serve
        .wait_log("the grace expiry to be logged", DEADLINE, |l| {
            l.contains("shutdown grace expired")
        })
        .await;
    drop(tls);
}

#[tokio::test]
async fn client_that_never_finishes_its_headers_is_cut() {
    let f = fixture(Some(POLICY));
    let serve = start(&f, &["--header-read-timeout", "1s"]);

    let mut slow = tls_connect(serve.https, &f.ca.pem, b"http/1.1")
        .await
        .unwrap();
    slow.write_all(b"POST /mutate HTTP/1.1\r\nhost: 127.0.0.1\r\n")
        .await
        .unwrap();
    slow.flush().await.unwrap();
    let answer = tokio::time::timeout(DEADLINE, read_status(&mut slow)).await;
    assert_eq!(
        answer.expect("the server closed the connection"),
        None,
        "no response, just closed"
    );

    // A TCP connection that never starts TLS is cut too.
    let mut silent = tokio::net::TcpStream::connect(serve.https).await.unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(
        DEADLINE,
        tokio::io::AsyncReadExt::read(&mut silent, &mut buf),
    )
    .await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");

    // The server is fine afterwards.
    let ok = serve.https_get(&f.ca.pem, true, "/mutate").await.unwrap();
    assert_eq!(ok.status(), reqwest::StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn self_signed_serve_tells_where_its_ca_is() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let out = dir.path().join("self-signed");
    let serve = Serve::start(&[
        "--self-signed",
        "--self-signed-dir",
        out.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
    ]);
    let ca_path = out.join("ca.crt");
    serve
        .wait_log(
            "the CA path and a curl command in the logs",
            DEADLINE,
            |l| l.contains(ca_path.to_str().unwrap()) && l.contains("curl --cacert"),
        )
        .await;
    let ca = std::fs::read_to_string(&ca_path).unwrap();
    for host in ["127.0.0.1", "localhost"] {
        let res = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes()).unwrap()])
            .resolve("localhost", serve.https)
            .build()
            .unwrap()
            .get(format!("https://{host}:{}/mutate", serve.https.port()))
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            reqwest::StatusCode::METHOD_NOT_ALLOWED,
            "{host}"
        );
    }
}

#[test]
fn policy_configmap_without_a_cluster_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let run = std::process::Command::new(BIN)
        .args(["serve", "--self-signed", "--policy-configmap", "psi-policy"])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .arg("--self-signed-dir")
        .arg(dir.path().join("certs"))
        // No in-cluster environment and a kubeconfig that does not exist.
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env("KUBECONFIG", dir.path().join("no-such-kubeconfig"))
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("--policy-configmap psi-policy needs the cluster side"),
        "{stderr}"
    );
    assert!(!dir.path().join("certs").exists(), "nothing generated");
}
